/*
 * Test helper that runs the real daemon (see daemon.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "pgtest.h"

#define MAX_LINES 20000

struct Daemon {
	pid_t pid;
	int status; /* -1 while running */
	int log_fd;
	int sock;
	char dir[256];
	char ini[300];
	char sockpath[300];
	char buf[65536];
	size_t blen;
	char **lines;
	bool *used;
	size_t nlines;
	char **notes;
	size_t nnotes;
};

const char *dmn_binary(void)
{
	static char path[1024];
	const char *b = getenv("PGQD_TEST_BUILDDIR");

	snprintf(path, sizeof(path), "%s/src/ticker/pgqd-ev", b ? b : ".");
	return path;
}

const char *dmn_base_ini(void)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf),
		 "[pgqd]\nbase_connstr = host=%s port=%d user=postgres\nsyslog = 0\n",
		 pgt_socket_dir(), pgt_port());
	return buf;
}

void dmn_write_ini(Daemon *d, const char *ini)
{
	char tmp[320];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", d->ini);
	f = fopen(tmp, "w");
	ck_assert_ptr_nonnull(f);
	fputs(ini, f);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(rename(tmp, d->ini), 0);
}

const char *dmn_ini_path(const Daemon *d)
{
	return d->ini;
}

const char *dmn_dir(const Daemon *d)
{
	return d->dir;
}

pid_t dmn_pid(const Daemon *d)
{
	return d->pid;
}

static Daemon *start(const char *ini, const char *extra_arg, unsigned long nofile)
{
	char lim[64], logpath[320];

	Daemon *d = calloc(1, sizeof(*d));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int logfd;

	ck_assert_ptr_nonnull(d);
	d->status = -1;
	d->lines = calloc(MAX_LINES, sizeof(char *));
	d->used = calloc(MAX_LINES, sizeof(bool));
	d->notes = calloc(1000, sizeof(char *));
	snprintf(d->dir, sizeof(d->dir), "%s/dmnXXXXXX", pgt_tmp_dir());
	ck_assert_ptr_nonnull(mkdtemp(d->dir));
	snprintf(d->ini, sizeof(d->ini), "%s/pgqd-ev.ini", d->dir);
	snprintf(d->sockpath, sizeof(d->sockpath), "%s/notify.sock", d->dir);
	dmn_write_ini(d, ini);
	d->sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	ck_assert_int_ge(d->sock, 0);
	ck_assert_uint_lt(strlen(d->sockpath), sizeof(sa.sun_path));
	memcpy(sa.sun_path, d->sockpath, strlen(d->sockpath) + 1);
	ck_assert_int_eq(bind(d->sock, (struct sockaddr *)&sa, sizeof(sa)), 0);
	/* The daemon writes its log into a file the test reads as it grows: a failed
	   assertion ends the test process with _exit (Check's fork mode), and the
	   file is still there for pgt_main to print. */
	snprintf(logpath, sizeof(logpath), "%s/" PGT_DAEMON_LOG, d->dir);
	logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	ck_assert_int_ge(logfd, 0);
	d->pid = fork();
	ck_assert_int_ge(d->pid, 0);
	if (d->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(logfd, STDERR_FILENO);
		setenv("NOTIFY_SOCKET", d->sockpath, 1);
		unsetenv("JOURNAL_STREAM");
		/* prlimit sets the limit and execs the daemon (same pid): a setrlimit
		   here would run under valgrind in a valgrind run, which refuses it */
		snprintf(lim, sizeof(lim), "--nofile=%lu:%lu", nofile, nofile);
		if (nofile)
			execlp("prlimit", "prlimit", lim, "--", dmn_binary(), "-v", d->ini,
			       (char *)NULL);
		else if (extra_arg)
			execl(dmn_binary(), "pgqd-ev", "-v", extra_arg, d->ini, (char *)NULL);
		else
			execl(dmn_binary(), "pgqd-ev", "-v", d->ini, (char *)NULL);
		_exit(127);
	}
	close(logfd);
	d->log_fd = open(logpath, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(d->log_fd, 0);
	return d;
}

Daemon *dmn_start(const char *ini, const char *extra_arg)
{
	return start(ini, extra_arg, 0);
}

Daemon *dmn_start_nofile(const char *ini, unsigned long nofile)
{
	return start(ini, NULL, nofile);
}

/* Read what the log file gained into lines; true if something was read. */
static bool pump_log(Daemon *d)
{
	bool got = false;

	for (;;) {
		ssize_t n;
		char *nl;

		if (d->blen >= sizeof(d->buf) - 1)
			d->blen = 0; /* an absurd line: drop it */
		n = read(d->log_fd, d->buf + d->blen, sizeof(d->buf) - 1 - d->blen);
		if (n <= 0)
			break;
		got = true;
		d->blen += (size_t)n;
		d->buf[d->blen] = '\0';
		while ((nl = memchr(d->buf, '\n', d->blen)) != NULL) {
			size_t len = (size_t)(nl - d->buf);

			if (d->nlines < MAX_LINES)
				d->lines[d->nlines++] = strndup(d->buf, len);
			memmove(d->buf, nl + 1, d->blen - len - 1);
			d->blen -= len + 1;
		}
	}
	return got;
}

static void pump_notes(Daemon *d)
{
	char buf[4096];
	ssize_t n;

	while ((n = recv(d->sock, buf, sizeof(buf) - 1, 0)) > 0) {
		buf[n] = '\0';
		if (d->nnotes < 1000)
			d->notes[d->nnotes++] = strdup(buf);
	}
}

static bool find_line(Daemon *d, const char *needle, bool consume)
{
	for (size_t i = 0; i < d->nlines; i++) {
		if (!d->used[i] && strstr(d->lines[i], needle)) {
			if (consume)
				d->used[i] = true;
			return true;
		}
	}
	return false;
}

/* A regular file is always "readable": wait on the notify socket, at most ms. */
static void wait_io(Daemon *d, int ms)
{
	struct pollfd p = {.fd = d->sock, .events = POLLIN};

	poll(&p, 1, ms);
}

bool dmn_wait_log(Daemon *d, const char *needle, int timeout_ms)
{
	int64_t end = pgt_now_ms() + timeout_ms;

	for (;;) {
		pump_log(d);
		if (find_line(d, needle, true))
			return true;
		if (pgt_now_ms() >= end)
			return false;
		wait_io(d, 20);
	}
}

bool dmn_wait_log_more(Daemon *d, const char *needle, int n, int timeout_ms)
{
	int64_t end = pgt_now_ms() + timeout_ms;

	pump_log(d);
	while (find_line(d, needle, true))
		;
	for (int i = 0; i < n; i++) {
		int64_t left = end - pgt_now_ms();

		if (!dmn_wait_log(d, needle, left > 0 ? (int)left : 0))
			return false;
	}
	return true;
}

bool dmn_log_contains(Daemon *d, const char *needle)
{
	pump_log(d);
	return find_line(d, needle, false);
}

size_t dmn_log_nlines(Daemon *d)
{
	pump_log(d);
	return d->nlines;
}

const char *dmn_log_line(Daemon *d, size_t i)
{
	return i < d->nlines ? d->lines[i] : NULL;
}

long dmn_log_line_no(Daemon *d, const char *needle)
{
	pump_log(d);
	for (size_t i = 0; i < d->nlines; i++)
		if (strstr(d->lines[i], needle))
			return (long)i;
	return -1;
}

bool dmn_wait_notify(Daemon *d, const char *needle, int timeout_ms)
{
	int64_t end = pgt_now_ms() + timeout_ms;
	size_t seen = 0;

	for (;;) {
		pump_notes(d);
		pump_log(d);
		for (; seen < d->nnotes; seen++) {
			if (d->notes[seen] && strstr(d->notes[seen], needle)) {
				free(d->notes[seen]);
				d->notes[seen] = NULL;
				return true;
			}
		}
		seen = 0;
		if (pgt_now_ms() >= end)
			return false;
		wait_io(d, 20);
	}
}

void dmn_signal(Daemon *d, int signo)
{
	if (d->status == -1)
		ck_assert_int_eq(kill(d->pid, signo), 0);
}

int dmn_wait_exit(Daemon *d, int timeout_ms)
{
	int64_t end = pgt_now_ms() + timeout_ms;
	int st;

	if (d->status != -1)
		return d->status;
	for (;;) {
		pid_t r = waitpid(d->pid, &st, WNOHANG);

		pump_log(d);
		if (r == d->pid) {
			d->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			pump_log(d);
			return d->status;
		}
		if (pgt_now_ms() >= end)
			return -1;
		wait_io(d, 20);
	}
}

void dmn_stop(Daemon *d)
{
	int st;

	dmn_signal(d, SIGTERM);
	st = dmn_wait_exit(d, 10000);
	ck_assert_msg(st == 0,
		      "daemon pid %d: exit status %d after SIGTERM (-1: still running after 10 s)",
		      (int)d->pid, st);
	dmn_free(d, false);
}

void dmn_free(Daemon *d, bool dump)
{
	char cmd[600];

	if (!d)
		return;
	if (d->status == -1) {
		kill(d->pid, SIGKILL);
		dmn_wait_exit(d, 5000);
	}
	pump_log(d);
	if (dump || getenv("PGQD_TEST_DAEMON_LOG")) {
		for (size_t i = 0; i < d->nlines; i++)
			fprintf(stderr, "daemon: %s\n", d->lines[i]);
	}
	for (size_t i = 0; i < d->nlines; i++)
		free(d->lines[i]);
	for (size_t i = 0; i < d->nnotes; i++)
		free(d->notes[i]);
	close(d->log_fd);
	close(d->sock);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", d->dir);
	free(d->lines);
	free(d->used);
	free(d->notes);
	free(d);
}

int dmn_run_sync(char **out, ...)
{
	const char *argv[32];
	int n = 0, pipefd[2], st;
	va_list ap;
	pid_t pid;
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);

	argv[n++] = "pgqd-ev";
	va_start(ap, out);
	while (n < 31 && (argv[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	argv[n] = NULL;
	ck_assert_int_eq(pipe2(pipefd, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(pipefd[1], STDOUT_FILENO);
		dup2(pipefd[1], STDERR_FILENO);
		execv(dmn_binary(), (char *const *)argv);
		_exit(127);
	}
	close(pipefd[1]);
	for (;;) {
		ssize_t r;

		if (len + 1024 > cap) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
		r = read(pipefd[0], buf + len, cap - len - 1);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	buf[len] = '\0';
	close(pipefd[0]);
	waitpid(pid, &st, 0);
	*out = buf;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
