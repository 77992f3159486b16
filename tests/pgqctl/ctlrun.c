/* Running pgqctl from tests; see ctlrun.h. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include "ctlrun.h"
#include "pgtest.h"

/* Exit status valgrind gives pgqctl when memcheck found an error (tests/valgrind-wrap.sh
   uses the same for the test programs). */
#define CTR_VALGRIND_ERROR 99
#define CTR_STR(x)         CTR_STR_(x)
#define CTR_STR_(x)        #x

static const char *binary(void)
{
	static char path[1024];
	const char *b = getenv("PGQD_TEST_BUILDDIR");

	snprintf(path, sizeof(path), "%s/src/pgqctl/pgqctl", b ? b : ".");
	return path;
}

typedef struct Buf {
	char *s;
	size_t len, cap;
} Buf;

static void buf_read(Buf *b, int fd, bool *eof)
{
	for (;;) {
		ssize_t n;

		if (b->len + 4096 > b->cap) {
			b->cap = (b->len + 4096) * 2;
			b->s = realloc(b->s, b->cap);
		}
		n = read(fd, b->s + b->len, b->cap - b->len - 1);
		if (n > 0) {
			b->len += (size_t)n;
			b->s[b->len] = '\0';
			continue;
		}
		if (n == 0)
			*eof = true;
		else if (errno == EINTR)
			continue;
		break;
	}
	if (b->s)
		b->s[b->len] = '\0';
}

static void child_env(void)
{
	char sqldir[1024];
	const char *b = getenv("PGQD_TEST_BUILDDIR");

	snprintf(sqldir, sizeof(sqldir), "%s/sql", b ? b : ".");
	setenv("PGQCTL_SQLDIR", sqldir, 1);
	unsetenv("PGQCTL_DB");
	unsetenv("PGDATABASE");
	setenv("NO_COLOR", "1", 1);
}

struct CtlProc {
	pid_t pid;
	int out_fd, err_fd;
	Buf out, err;
	bool out_eof, err_eof;
	int status;
	bool exited;
};

/* PGQD_TEST_VALGRIND_PGQCTL=1 (with the valgrind setup) runs pgqctl under memcheck too,
   with the test programs' settings; -q keeps its stderr as pgqctl wrote it unless
   memcheck has something to report. Not by default: each run costs seconds. */
static bool under_valgrind(void)
{
	const char *v = getenv("PGQD_TEST_VALGRIND_PGQCTL");

	return v && strcmp(v, "1") == 0;
}

static CtlProc *spawn(const char *const *argv, int in_fd)
{
	static char supp[1100];
	CtlProc *p = calloc(1, sizeof(*p));
	int po[2], pe[2];
	const char *args[80];
	int n = 0;

	if (under_valgrind()) {
		const char *src = getenv("PGQD_TEST_SRCDIR");

		snprintf(supp, sizeof(supp), "--suppressions=%s/tests/valgrind.supp",
			 src ? src : ".");
		args[n++] = "valgrind";
		args[n++] = "-q";
		args[n++] = "--error-exitcode=" CTR_STR(CTR_VALGRIND_ERROR);
		args[n++] = "--leak-check=full";
		args[n++] = "--errors-for-leak-kinds=definite";
		args[n++] = supp;
		args[n++] = binary();
	} else {
		args[n++] = "pgqctl";
	}
	for (int i = 0; argv[i] && n < 79; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	ck_assert_int_eq(pipe2(po, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(pe, O_CLOEXEC), 0);
	p->pid = fork();
	ck_assert_int_ge(p->pid, 0);
	if (p->pid == 0) {
		dup2(in_fd, STDIN_FILENO);
		dup2(po[1], STDOUT_FILENO);
		dup2(pe[1], STDERR_FILENO);
		child_env();
		if (under_valgrind())
			execvp(args[0], (char *const *)args);
		else
			execv(binary(), (char *const *)args);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	p->out_fd = po[0];
	p->err_fd = pe[0];
	fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
	fcntl(p->err_fd, F_SETFL, O_NONBLOCK);
	p->out.s = strdup("");
	p->err.s = strdup("");
	return p;
}

/* Read what is there, waiting at most ms. */
static void pump(CtlProc *p, int ms)
{
	struct pollfd f[2] = {{.fd = p->out_eof ? -1 : p->out_fd, .events = POLLIN},
			      {.fd = p->err_eof ? -1 : p->err_fd, .events = POLLIN}};

	if (p->out_eof && p->err_eof)
		return;
	if (poll(f, 2, ms) <= 0)
		return;
	if (!p->out_eof)
		buf_read(&p->out, p->out_fd, &p->out_eof);
	if (!p->err_eof)
		buf_read(&p->err, p->err_fd, &p->err_eof);
}

int ctr_wait_exit(CtlProc *p, int timeout_ms)
{
	int64_t end = pgt_now_ms() + (int64_t)(timeout_ms * pgt_time_factor());

	while (!p->exited) {
		int st;
		pid_t r;

		pump(p, 20);
		r = waitpid(p->pid, &st, WNOHANG);
		if (r == p->pid) {
			p->exited = true;
			p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			break;
		}
		if (pgt_now_ms() > end)
			return -1;
	}
	while (!p->out_eof || !p->err_eof) {
		if (pgt_now_ms() > end + 5000)
			break;
		pump(p, 50);
	}
	/* whatever exit status the test expects, a memory error in pgqctl fails it */
	ck_assert_msg(!under_valgrind() || p->status != CTR_VALGRIND_ERROR,
		      "memcheck found an error in pgqctl:\n%s", p->err.s);
	return p->status;
}

CtlRun ctr_runv(const char *in, const char *const *argv)
{
	CtlRun r = {0};
	char tmpl[] = "/tmp/pgqctl-in-XXXXXX";
	int fd;
	CtlProc *p;

	fd = mkstemp(tmpl);
	ck_assert_int_ge(fd, 0);
	unlink(tmpl);
	if (in)
		ck_assert_int_eq(write(fd, in, strlen(in)), (ssize_t)strlen(in));
	lseek(fd, 0, SEEK_SET);
	p = spawn(argv, fd);
	close(fd);
	r.rc = ctr_wait_exit(p, 60000);
	ck_assert_msg(r.rc >= 0, "pgqctl did not exit within %.0f s", 60 * pgt_time_factor());
	r.out = strdup(p->out.s);
	r.err = strdup(p->err.s);
	ctr_free_proc(p);
	return r;
}

CtlRun ctr_run(const char *in, ...)
{
	const char *argv[64];
	int n = 0;
	va_list ap;

	va_start(ap, in);
	while (n < 63 && (argv[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	argv[n] = NULL;
	return ctr_runv(in, argv);
}

void ctr_free(CtlRun *r)
{
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
}

CtlProc *ctr_spawn(const char *const *argv)
{
	int fd = open("/dev/null", O_RDONLY);
	CtlProc *p = spawn(argv, fd);

	close(fd);
	return p;
}

bool ctr_wait_out(CtlProc *p, const char *needle, int timeout_ms)
{
	int64_t end = pgt_now_ms() + (int64_t)(timeout_ms * pgt_time_factor());

	while (!strstr(p->out.s, needle)) {
		if (pgt_now_ms() > end || (p->out_eof && p->err_eof))
			return false;
		pump(p, 50);
	}
	return true;
}

void ctr_signal(CtlProc *p, int sig)
{
	kill(p->pid, sig);
}

const char *ctr_out(CtlProc *p)
{
	return p->out.s;
}

const char *ctr_err(CtlProc *p)
{
	return p->err.s;
}

void ctr_free_proc(CtlProc *p)
{
	if (!p)
		return;
	if (!p->exited) {
		kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, 0);
	}
	close(p->out_fd);
	close(p->err_fd);
	free(p->out.s);
	free(p->err.s);
	free(p);
}

char *ctr_json(PGconn *c, const char *json, const char *path)
{
	const char *p[2] = {json, path};
	PGresult *r = PQexecParams(c, "select $1::jsonb #>> $2::text[]", 2, NULL, p, NULL, NULL, 0);
	char *v;

	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "bad JSON (%s): %s", PQerrorMessage(c),
		      json);
	v = PQgetisnull(r, 0, 0) ? NULL : strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

/* A time cell: digits with '.', then s; or NmNNs, NhNNm, NdNNh. */
static size_t time_len(const char *s)
{
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return 0;
	while (isdigit((unsigned char)*p))
		p++;
	if (*p == '.') {
		p++;
		while (isdigit((unsigned char)*p))
			p++;
		return *p == 's' ? (size_t)(p - s + 1) : 0;
	}
	if (*p == 'm' || *p == 'h' || *p == 'd') {
		p++;
		if (!isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1]))
			return 0;
		p += 2;
		return (*p == 's' || *p == 'm' || *p == 'h') ? (size_t)(p - s + 1) : 0;
	}
	return 0;
}

char *ctr_mask(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(n * 2 + 1), *o = out;

	for (const char *p = s; *p;) {
		size_t tl = (p == s || !isalnum((unsigned char)p[-1])) ? time_len(p) : 0;

		if (tl) {
			memcpy(o, "<T>", 3);
			o += 3;
			p += tl;
			continue;
		}
		*o++ = *p++;
	}
	*o = '\0';
	return out;
}

/* ---- shared assertions ---- */

static _Thread_local char dsn_buf[1024]; /* see pgt_connstr() */

/* -d value for a database (as postgres, or `user`). */
const char *ctr_dsn(const char *db, const char *user)
{
	snprintf(dsn_buf, sizeof(dsn_buf), "%s%s%s", pgt_connstr(db, false), user ? " user=" : "",
		 user ? user : "");
	return dsn_buf;
}

void ctr_expect(CtlRun *r, int rc, const char *out_has, const char *err_has)
{
	ck_assert_msg(r->rc == rc, "exit %d, expected %d\nstdout: %s\nstderr: %s", r->rc, rc,
		      r->out, r->err);
	if (out_has)
		ck_assert_msg(strstr(r->out, out_has), "stdout lacks \"%s\":\n%s", out_has, r->out);
	if (err_has)
		ck_assert_msg(strstr(r->err, err_has), "stderr lacks \"%s\":\n%s", err_has, r->err);
}

/* A tick now, whatever the queue's thresholds say. */
void ctr_tick(PGconn *c, const char *queue)
{
	char sql[256];

	snprintf(sql, sizeof(sql), "select pgq.force_tick('%s'), pgq.ticker('%s')", queue, queue);
	pgt_exec(c, sql);
}

void ctr_json_eq(PGconn *c, const char *json, const char *path, const char *want)
{
	char *v = ctr_json(c, json, path);

	if (!want)
		ck_assert_msg(v == NULL, "%s: expected null, got %s in %s", path, v, json);
	else
		ck_assert_msg(v && strcmp(v, want) == 0, "%s: expected %s, got %s in %s", path,
			      want, v ? v : "null", json);
	free(v);
}

/* Masked, with runs of spaces collapsed (column widths depend on the times). */
char *ctr_golden(const char *s)
{
	char *m = ctr_mask(s), *o = m;

	for (char *p = m; *p; p++) {
		if (*p == ' ' && p[1] == ' ')
			continue;
		*o++ = *p;
	}
	*o = '\0';
	return m;
}

CtlRun ctr_node(const char *dsn, const char *const *args)
{
	const char *argv[48] = {"--connect-timeout", "60", "-d", dsn, "node"};
	int n = 5;

	for (int i = 0; args[i]; i++) {
		ck_assert_int_lt(n, 47);
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	return ctr_runv(NULL, argv);
}

void ctr_dump(const CtlRun *r)
{
	const char *p = r->out;

	while (p && *p) {
		const char *e = strchr(p, '\n');
		int len = e ? (int)(e - p) : (int)strlen(p);
		fprintf(stderr, "# %.*s\n", len, p);
		p = e ? e + 1 : NULL;
	}
}

double ctr_number_after(const char *out, const char *key)
{
	const char *p = strstr(out, key);

	ck_assert_msg(p, "no \"%s\" in:\n%s", key, out);
	return strtod(p + strlen(key), NULL);
}

char *ctr_dsn_dup(const char *db)
{
	char *s = strdup(ctr_dsn(db, NULL));

	ck_assert_ptr_nonnull(s);
	return s;
}
