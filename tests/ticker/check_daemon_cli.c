/*
 * Command-line defects of issue 13, with the real binary: -d with relative paths
 * (reload, log file and pidfile after the move to "/"), --check printing the
 * effective configuration and checking the log file, and a missing config file
 * reported once.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "pgtest.h"

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	size_t n;

	if (!f)
		return NULL;
	buf = malloc(1 << 20);
	ck_assert_ptr_nonnull(buf);
	n = fread(buf, 1, (1 << 20) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

static int count(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* This process's scratch directory (no server here, so no pgt_tmp_dir). */
static char scratch[256];

static char *tmp_dir(const char *name)
{
	char *d = malloc(512);

	ck_assert_ptr_nonnull(d);
	snprintf(d, 512, "%s/%s", scratch, name);
	ck_assert(mkdir(d, 0700) == 0 || errno == EEXIST);
	return d;
}

START_TEST(test_missing_config_reported_once)
{
	char *out = NULL, path[512];

	snprintf(path, sizeof(path), "%s/no-such.ini", scratch);
	ck_assert_int_eq(dmn_run_sync(&out, path, NULL), 1);
	ck_assert_msg(count(out, "No such file") == 1, "%s", out);
	free(out);
	ck_assert_int_eq(dmn_run_sync(&out, "--check", path, NULL), 1);
	ck_assert_msg(count(out, "No such file") == 1, "%s", out);
	free(out);
}
END_TEST

START_TEST(test_check_prints_effective_config_and_checks_logfile)
{
	char *dir = tmp_dir("check"), ini[512], text[1024], *out = NULL;

	snprintf(ini, sizeof(ini), "%s/c.ini", dir);
	snprintf(text, sizeof(text),
		 "[pgqd]\nbase_connstr = host=x password=sekrit\nlogfile = %s/c.log\n"
		 "ticker_period = 0.5\n",
		 dir);
	write_file(ini, text);
	ck_assert_int_eq(dmn_run_sync(&out, "--check", ini, NULL), 0);
	/* every key, defaults included, no secret */
	ck_assert_msg(strstr(out, "ticker_period = 0.5\n") && strstr(out, "maint_period = 120\n") &&
			      strstr(out, "tick_stale_timeout = 60\n"),
		      "%s", out);
	ck_assert_ptr_null(strstr(out, "sekrit"));
	ck_assert_msg(strstr(out, "base_connstr = (hidden)\n") != NULL, "%s", out);
	ck_assert_ptr_nonnull(strstr(out, "configuration OK"));
	free(out);
	/* an empty base_connstr (libpq's defaults) has nothing to hide */
	snprintf(text, sizeof(text), "[pgqd]\nbase_connstr =\nlogfile = %s/c.log\n", dir);
	write_file(ini, text);
	ck_assert_int_eq(dmn_run_sync(&out, "--check", ini, NULL), 0);
	ck_assert_msg(strstr(out, "\nbase_connstr = \n") != NULL && !strstr(out, "(hidden)"), "%s",
		      out);
	free(out);
	/* --check creates nothing */
	snprintf(text, sizeof(text), "%s/c.log", dir);
	ck_assert_int_eq(access(text, F_OK), -1);

	/* a log file start would fail to open makes the check fail */
	snprintf(text, sizeof(text), "[pgqd]\nlogfile = %s/missing-dir/c.log\n", dir);
	write_file(ini, text);
	ck_assert_int_eq(dmn_run_sync(&out, "--check", ini, NULL), 1);
	ck_assert_msg(strstr(out, "logfile: cannot create") != NULL, "%s", out);
	ck_assert_ptr_nonnull(strstr(out, "NOT valid"));
	free(out);
	free(dir);
}
END_TEST

typedef struct FileWait {
	const char *path;
	const char *text; /* NULL: the file exists; "": it is gone */
	int times;        /* text found at least this often (0: once) */
} FileWait;

static bool file_state(void *arg)
{
	FileWait *w = arg;
	char *s;
	bool ok;

	if (w->text && !*w->text)
		return access(w->path, F_OK) < 0;
	s = slurp(w->path);
	ok = s && !w->text;
	if (s && w->text) {
		int n = 0;
		for (const char *p = strstr(s, w->text); p; p = strstr(p + 1, w->text))
			n++;
		ok = n >= (w->times > 0 ? w->times : 1);
	}
	free(s);
	return ok;
}

static bool wait_file(const char *path, const char *text)
{
	FileWait w = {path, text, 1};

	return pgt_wait_until(file_state, &w, 10000, 20);
}

/* The detached daemon of the test below, killed however the test ends. */
static pid_t detached;

static void kill_detached(void)
{
	if (detached > 1 && kill(detached, 0) == 0)
		kill(detached, SIGKILL);
	detached = 0;
}

/* -d from a directory with relative paths: reload, log file and pidfile keep working. */
START_TEST(test_daemon_relative_paths)
{
	char *dir = tmp_dir("rel"), path[512], logp[512], pidp[512], *pidtxt;
	pid_t child, daemon_pid;
	int st;

	snprintf(path, sizeof(path), "%s/rel.ini", dir);
	write_file(path, "[pgqd]\nsyslog = 0\nlogfile = d.log\npidfile = d.pid\n"
			 "base_connstr = host=127.0.0.1 port=1\ndatabase_list = nowhere\n");
	snprintf(logp, sizeof(logp), "%s/d.log", dir);
	snprintf(pidp, sizeof(pidp), "%s/d.pid", dir);
	child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		if (chdir(dir) < 0)
			_exit(126);
		execl(dmn_binary(), "pgqd-ev", "-d", "rel.ini", (char *)NULL);
		_exit(127);
	}
	ck_assert_int_eq(waitpid(child, &st, 0), child);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* the pidfile holds the detached pid before the loop starts */
	ck_assert(wait_file(logp, "Starting pgqd-ev"));
	pidtxt = slurp(pidp);
	ck_assert_ptr_nonnull(pidtxt);
	daemon_pid = (pid_t)atoi(pidtxt);
	free(pidtxt);
	ck_assert_int_gt(daemon_pid, 1);
	detached = daemon_pid;
	kill(daemon_pid, SIGHUP);
	ck_assert_msg(wait_file(logp, "configuration reloaded"), "%s", slurp(logp));
	/* the log was reopened at the same place, not in "/" */
	write_file(path, "[pgqd]\nsyslog = 0\nlogfile = d.log\npidfile = d.pid\n"
			 "base_connstr = host=127.0.0.1 port=1\ndatabase_list = nowhere, other\n");
	kill(daemon_pid, SIGHUP);
	/* the second reload applied (connection failures to a refused port are one
	   server line now, not a line per database) */
	FileWait twice = {logp, "configuration reloaded", 2};
	ck_assert_msg(pgt_wait_until(file_state, &twice, 10000, 20), "%s", slurp(logp));
	/* the relative pidfile reads the same as at start, so no restart warning */
	pidtxt = slurp(logp);
	ck_assert_msg(!strstr(pidtxt, "without a restart"), "%s", pidtxt);
	free(pidtxt);
	kill(daemon_pid, SIGTERM);
	ck_assert_msg(wait_file(pidp, ""), "pidfile left behind");
	detached = 0;
	free(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("daemon-cli");
	TCase *tc = pgt_tcase("cli", 60);
	PgtOptions opts = {.need_server = false};
	const char *tmp = getenv("TMPDIR");
	char cmd[300];
	int rc;

	snprintf(scratch, sizeof(scratch), "%s/pgqd-ev-cli.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(scratch)) {
		printf("Bail out! mkdtemp %s: %s\n", scratch, strerror(errno));
		return 1;
	}

	tcase_add_checked_fixture(tc, NULL, kill_detached);
	tcase_add_test(tc, test_missing_config_reported_once);
	tcase_add_test(tc, test_check_prints_effective_config_and_checks_logfile);
	tcase_add_test(tc, test_daemon_relative_paths);
	suite_add_tcase(s, tc);
	rc = pgt_main(s, &opts);
	{
		/* a failed run may leave the detached daemon behind */
		char pidp[300], *txt;

		snprintf(pidp, sizeof(pidp), "%s/rel/d.pid", scratch);
		txt = slurp(pidp);
		if (txt && atoi(txt) > 1)
			kill((pid_t)atoi(txt), SIGKILL);
		free(txt);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", scratch);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", scratch);
	return rc;
}
