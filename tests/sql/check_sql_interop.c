/*
 * Real clients nobody here wrote, against our schema: Debian's pgqd 3.5 ticks it,
 * moves retries and rotates tables; python3-pgq's pgq.Consumer consumes from it,
 * retrying one event. Skipped when those packages are missing.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sqltest.h"

#define PYTHON "/usr/bin/python3"

static const char consumer_py[] =
	"import sys, pgq\n"
	"class C(pgq.Consumer):\n"
	"    def process_event(self, db, ev):\n"
	"        with open(self.cf.get('outfile'), 'a') as f:\n"
	"            f.write('%s %s %s %s\\n' % (ev.id, ev.type, ev.data, ev.retry))\n"
	"        if ev.data == 'retryme' and not ev.retry:\n"
	"            ev.tag_retry(0)\n"
	"        else:\n"
	"            ev.tag_done()\n"
	"C('interop_consumer', 'db', sys.argv[1:]).start()\n";

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	ck_assert_msg(f != NULL, "cannot write %s", path);
	fputs(text, f);
	fclose(f);
}

static pid_t spawn(const char *const argv[])
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		setpgid(0, 0);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

static void stop(pid_t pid)
{
	int st;
	kill(pid, SIGTERM);
	waitpid(pid, &st, 0);
}

static int run(const char *const argv[])
{
	int st;
	pid_t pid = spawn(argv);
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static const char *g_out;
static bool out_has_7_lines(void *arg)
{
	FILE *f = fopen(g_out, "r");
	int n = 0, c;
	(void)arg;
	if (!f)
		return false;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n >= 7;
}

static const char *g_db;
static bool rotated(void *arg)
{
	(void)arg;
	return pgt_int_db(g_db, "select queue_cur_table from pgq.queue") != 0;
}

START_TEST(test_pgqd_and_python_consumer)
{
	char dir[512], path[640], ini[2048], out[640], pgqd_ini[640], cons_ini[640], py[640];
	const char *db = pgt_db_new();
	PGconn *c;
	pid_t pgqd, cons;
	char *text;
	FILE *f;
	size_t n;

	if (pgt_missing(access("/usr/bin/pgqd", X_OK) != 0 ||
				system(PYTHON " -c 'import pgq' >/dev/null 2>&1") != 0,
			"Debian's pgqd and python3-pgq (scripts/packages.txt)"))
		return;
	snprintf(dir, sizeof(dir), "%s/interop", pgt_tmp_dir());
	mkdir(dir, 0777);
	c = pgt_connect(db);
	pgt_exec(
		c,
		"select pgq.create_queue('iq'), pgq.set_queue_config('iq', 'ticker_max_lag', '0.1s'),"
		" pgq.set_queue_config('iq', 'ticker_idle_period', '1s')");

	/* pgqd 3.5: ticker, retry mover and maintenance every second */
	snprintf(pgqd_ini, sizeof(pgqd_ini), "%s/pgqd.ini", dir);
	snprintf(
		ini, sizeof(ini),
		"[pgqd]\nbase_connstr = host=%s port=%d user=postgres\ninitial_database = postgres\n"
		"database_list = %s\nlogfile = %s/pgqd.log\npidfile = %s/pgqd.pid\nsyslog = 0\n"
		"ticker_period = 0.1\nretry_period = 0.5\nmaint_period = 0.5\ncheck_period = 60\n",
		pgt_socket_dir(), pgt_port(), db, dir, dir);
	write_file(pgqd_ini, ini);
	{
		const char *argv[] = {"/usr/bin/pgqd", pgqd_ini, NULL};
		pgqd = spawn(argv);
	}

	/* python3-pgq consumer */
	snprintf(py, sizeof(py), "%s/consumer.py", dir);
	write_file(py, consumer_py);
	snprintf(cons_ini, sizeof(cons_ini), "%s/consumer.ini", dir);
	snprintf(out, sizeof(out), "%s/out.txt", dir);
	snprintf(
		ini, sizeof(ini),
		"[interop_consumer]\njob_name = interop\ndb = host=%s port=%d user=postgres dbname=%s\n"
		"queue_name = iq\nlogfile = %s/consumer.log\npidfile = %s/consumer.pid\noutfile = %s\n"
		"loop_delay = 0.1\n",
		pgt_socket_dir(), pgt_port(), db, dir, dir, out);
	write_file(cons_ini, ini);
	{
		const char *argv[] = {PYTHON, py, cons_ini, "--register", NULL};
		ck_assert_int_eq(run(argv), 0);
	}
	pgt_exec(c, "select pgq.insert_event('iq', 'ty', 'ev' || i) from generate_series(1, 5) i");
	pgt_exec(c, "select pgq.insert_event('iq', 'ty', 'retryme')");
	{
		const char *argv[] = {PYTHON, py, cons_ini, NULL};
		cons = spawn(argv);
	}
	g_out = out;
	ck_assert_msg(pgt_wait_until(out_has_7_lines, NULL, 60000, 100),
		      "consumer did not get 7 events");
	stop(cons);

	f = fopen(out, "r");
	text = calloc(1, 4096);
	n = fread(text, 1, 4095, f);
	fclose(f);
	text[n] = '\0';
	ck_assert_str_eq(
		text, "1 ty ev1 None\n2 ty ev2 None\n3 ty ev3 None\n4 ty ev4 None\n5 ty ev5 None\n"
		      "6 ty retryme None\n6 ty retryme 1\n");
	free(text);
	sqlt_eq(c, "select count(*) from pgq.retry_queue", "0");

	/* pgqd's maintenance rotates our tables when due */
	pgt_exec(c, "update pgq.queue set queue_rotation_period = '0'");
	g_db = db;
	ck_assert_msg(pgt_wait_until(rotated, NULL, 30000, 100), "pgqd did not rotate");
	stop(pgqd);
	snprintf(path, sizeof(path), "grep -q 'pgq version ok' %s/pgqd.log", dir);
	ck_assert_int_eq(system(path), 0);
	PQfinish(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sql-interop");
	TCase *tc = pgt_tcase("interop", 120);
	tcase_add_test(tc, test_pgqd_and_python_consumer);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
