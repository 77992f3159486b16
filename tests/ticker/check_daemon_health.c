/*
 * The daemon's health and metrics tell the truth (issue 13): /health is 503 for a
 * daemon that never connected and for a database whose ticks stopped; counters
 * carry no state label; connection failures are counted by kind; odd names
 * (quotes, backslashes, newlines, bytes that are not UTF-8) leave /metrics and
 * /health valid, checked with real parsers (promtool, python's json); numbers
 * are short decimals.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "daemon.h"
#include "pgtest.h"

static int port_seq;

/* A port for this test process; the tests of one binary run one after another. */
static int next_port(void)
{
	return 21000 + (getpid() % 15000) + 7 * port_seq++;
}

/* GET path; the status code, the body in out (NUL-terminated), or -1. */
static int http_get(int port, const char *path, char *out, size_t outlen)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	char req[256], *body;
	size_t n = 0;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), code = -1;

	if (fd < 0)
		return -1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", path);
	if (write(fd, req, strlen(req)) < 0) {
		close(fd);
		return -1;
	}
	for (;;) {
		ssize_t r = read(fd, out + n, outlen - 1 - n);

		if (r <= 0)
			break;
		n += (size_t)r;
		if (n >= outlen - 1)
			break;
	}
	out[n] = '\0';
	close(fd);
	if (sscanf(out, "HTTP/1.%*d %d", &code) != 1)
		return -1;
	body = strstr(out, "\r\n\r\n");
	if (!body)
		return -1;
	memmove(out, body + 4, strlen(body + 4) + 1);
	return code;
}

typedef struct Get {
	int port;
	const char *path;
	int want_code;
	const char *want_text;
	char *buf;
	size_t len;
} Get;

static bool got(void *arg)
{
	Get *g = arg;
	int code = http_get(g->port, g->path, g->buf, g->len);

	return code == g->want_code && (!g->want_text || strstr(g->buf, g->want_text));
}

/* Poll `path` until it answers want_code with a body containing want_text. */
static bool wait_http(int port, const char *path, int code, const char *text, char *buf, size_t len,
		      int timeout_ms)
{
	Get g = {port, path, code, text, buf, len};

	return pgt_wait_until(got, &g, timeout_ms, 50);
}

/* Run a checker over `text` on stdin; its exit status (output to our stderr). */
static int check_with(const char *cmd, const char *text)
{
	char path[512], line[1200];
	FILE *f;
	int st;

	snprintf(path, sizeof(path), "%s/doc-%d.txt", pgt_tmp_dir(), port_seq);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	snprintf(line, sizeof(line), "%s < '%s' >/dev/null", cmd, path);
	st = system(line);
	if (st != 0)
		fprintf(stderr, "%s rejected:\n%s\n", cmd, text);
	unlink(path);
	return st;
}

static int promtool(const char *metrics)
{
	return check_with("promtool check metrics", metrics);
}

static int json_check(const char *doc)
{
	/* strict: the bytes must be UTF-8 (json.tool would let stray bytes through) */
	return check_with("/usr/bin/python3 -c 'import json, sys; "
			  "json.loads(sys.stdin.buffer.read().decode(\"utf-8\"))'",
			  doc);
}

/* Value of the first metric line starting with `prefix` (name and labels); -1: none. */
static double metric(const char *text, const char *prefix)
{
	const char *p = text;
	size_t n = strlen(prefix);

	while (p && *p) {
		if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
			return strtod(p + n + 1, NULL);
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return -1;
}

/* No sample value has more than 15 significant digits (0.58077, not 0.58077000000000001). */
static bool numbers_short(const char *text)
{
	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		const char *sp, *eol = strchr(p, '\n');
		size_t digits = 0;

		if (*p == '#')
			continue;
		sp = eol ? eol : p + strlen(p);
		while (sp > p && sp[-1] != ' ')
			sp--;
		for (const char *c = sp; c < (eol ? eol : p + strlen(p)); c++)
			if (*c >= '0' && *c <= '9')
				digits++;
		if (digits > 15) {
			fprintf(stderr, "long number: %.*s\n",
				(int)((eol ? eol : p + strlen(p)) - p), p);
			return false;
		}
	}
	return true;
}

typedef struct MetricWait {
	int port;
	const char *prefix;
	double above;
	char *buf;
} MetricWait;

static bool metric_above(void *arg)
{
	MetricWait *w = arg;

	return http_get(w->port, "/metrics", w->buf, 1 << 16) == 200 &&
	       metric(w->buf, w->prefix) > w->above;
}

/* Wait until the sample `prefix` (name{labels}) exceeds `above`; buf holds /metrics. */
static bool wait_metric_above(int port, const char *prefix, double above, char *buf)
{
	MetricWait w = {port, prefix, above, buf};

	return pgt_wait_until(metric_above, &w, 10000, 50);
}

/* No counter sample carries a state label. */
static bool counters_without_state(const char *text)
{
	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		size_t len = strcspn(p, "\n");
		bool counter = strncmp(p, "pgqd_ev_db_ticks_total{", 23) == 0 ||
			       strncmp(p, "pgqd_ev_db_ticks_created_total{", 31) == 0 ||
			       strncmp(p, "pgqd_ev_db_errors_total{", 24) == 0 ||
			       strncmp(p, "pgqd_ev_errors_total", 20) == 0;

		if (counter && memmem(p, len, "state=", 6)) {
			fprintf(stderr, "state label on a counter: %.*s\n", (int)len, p);
			return false;
		}
	}
	return true;
}

/* A daemon that never connects (nothing listens on the port) is not healthy. */
START_TEST(test_never_connected_is_unhealthy)
{
	char ini[1024], *buf = malloc(1 << 16);
	int port = next_port();
	Daemon *d;

	ck_assert_ptr_nonnull(buf);
	snprintf(
		ini, sizeof(ini),
		"[pgqd]\nsyslog = 0\nbase_connstr = host=127.0.0.1 port=1 user=nobody\n"
		"database_list = nowhere\nstartup_grace = 1\nbackoff_base = 0.05\nbackoff_cap = 0.2\n"
		"metrics_listen = 127.0.0.1:%d\n",
		port);
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(wait_http(port, "/health", 503, "never ticked", buf, 1 << 16, 10000));
	ck_assert_ptr_nonnull(strstr(buf, "\"healthy\":false"));
	ck_assert_int_eq(json_check(buf), 0);
	/* every failed connect is an error, by kind */
	ck_assert_int_eq(http_get(port, "/metrics", buf, 1 << 16), 200);
	ck_assert_double_gt(metric(buf, "pgqd_ev_errors_total{kind=\"connect\"}"), 0);
	ck_assert_double_gt(
		metric(buf,
		       "pgqd_ev_db_errors_total{cluster=\"\",database=\"nowhere\",kind=\"connect\"}"),
		0);
	ck_assert_double_eq(metric(buf, "pgqd_ev_healthy"), 0);
	ck_assert_int_eq(promtool(buf), 0);
	dmn_stop(d);
	free(buf);
}
END_TEST

/*
 * Many databases turning unhealthy in one health check make one warning line
 * (count and the first names), not one line each: at 10,000 slow-starting
 * databases the per-database lines were 9,717.
 */
START_TEST(test_unhealthy_logged_once_for_many)
{
	char ini[1024], *buf = malloc(1 << 16);
	int port = next_port();
	size_t lines = 0;
	bool combined = false;
	Daemon *d;

	ck_assert_ptr_nonnull(buf);
	snprintf(ini, sizeof(ini),
		 "[pgqd]\nsyslog = 0\nbase_connstr = host=127.0.0.1 port=1 user=nobody\n"
		 "database_list = nw1,nw2,nw3,nw4,nw5,nw6,nw7,nw8,nw9,nw10,nw11,nw12\n"
		 "startup_grace = 1\nbackoff_base = 0.05\nbackoff_cap = 0.2\n"
		 "metrics_listen = 127.0.0.1:%d\n",
		 port);
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(dmn_wait_log(d, "databases unhealthy: ", 10000));
	/* every database is reported unhealthy by /health, each by name */
	ck_assert(wait_http(port, "/health", 503, "never ticked", buf, 1 << 16, 10000));
	for (int i = 1; i <= 12; i++) {
		char name[32];

		snprintf(name, sizeof(name), "\"nw%d\"", i);
		ck_assert_msg(strstr(buf, name), "%s missing from /health", name);
	}
	/* twelve turned unhealthy in (at most a couple of) checks: a few warnings, not
	   twelve (each database's own line is at debug level, which the tests log) */
	for (size_t i = 0; i < dmn_log_nlines(d); i++) {
		const char *l = dmn_log_line(d, i);

		if (strstr(l, "unhealthy") && strstr(l, "WARNING")) {
			fprintf(stderr, "%s\n", l);
			lines++;
			/* the count, the first names, one reason */
			if (strstr(l, "databases unhealthy: nw") && strstr(l, ", ...; nw") &&
			    strstr(l, "never ticked in"))
				combined = true;
		}
	}
	ck_assert(combined);
	ck_assert_uint_le(lines, 2);
	dmn_stop(d);
	free(buf);
}
END_TEST

/* A role the server refuses counts as kind auth, not connect. */
START_TEST(test_auth_failure_counted)
{
	char ini[1024], *buf = malloc(1 << 16);
	int port = next_port();
	Daemon *d;

	ck_assert_ptr_nonnull(buf);
	snprintf(
		ini, sizeof(ini),
		"[pgqd]\nsyslog = 0\nbase_connstr = host=%s port=%d user=no_such_role_x\n"
		"database_list = postgres\nbackoff_base = 0.05\nbackoff_cap = 0.2\nmetrics_listen = 127.0.0.1:%d\n",
		pgt_socket_dir(), pgt_port(), port);
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(wait_metric_above(port, "pgqd_ev_errors_total{kind=\"auth\"}", 1, buf));
	ck_assert_double_eq(metric(buf, "pgqd_ev_errors_total{kind=\"connect\"}"), 0);
	dmn_stop(d);
	free(buf);
}
END_TEST

/* Ticks that stop without any failure (a hung pgq.ticker()) make /health 503. */
START_TEST(test_stale_ticks_unhealthy)
{
	const char *db = pgt_db_new();
	char ini[1024], *buf = malloc(1 << 16);
	int port = next_port();
	PGconn *locker;
	Daemon *d;

	ck_assert_ptr_nonnull(buf);
	pgt_exec_db(db, "select pgq.create_queue('q')");
	snprintf(ini, sizeof(ini),
		 "%sdatabase_list = %s\nticker_period = 0.1\nquery_timeout = 0\n"
		 "tick_stale_timeout = 1\nmetrics_listen = 127.0.0.1:%d\n",
		 dmn_base_ini(), db, port);
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(wait_http(port, "/health", 200, "\"last_tick\":\"20", buf, 1 << 16, 10000));
	ck_assert_ptr_nonnull(strstr(buf, "\"healthy\":true"));
	/* hold the queue table: the next pgq.ticker() waits, nothing fails */
	locker = pgt_connect(db);
	pgt_exec(locker, "begin");
	pgt_exec(locker, "lock table pgq.queue in access exclusive mode");
	ck_assert(wait_http(port, "/health", 503, "no tick for", buf, 1 << 16, 10000));
	ck_assert_int_eq(json_check(buf), 0);
	ck_assert(dmn_wait_log(d, "unhealthy: no tick for", 5000));
	pgt_exec(locker, "rollback");
	ck_assert(wait_http(port, "/health", 200, "\"healthy\":true", buf, 1 << 16, 10000));
	ck_assert(dmn_wait_log(d, "healthy again", 5000));
	PQfinish(locker);
	dmn_stop(d);
	free(buf);
}
END_TEST

/*
 * Odd names stay valid in both documents; counters keep their series across a
 * state change (no state label); numbers are short.
 */
START_TEST(test_metrics_valid_and_stable)
{
	const char *db = pgt_db_new();
	char ini[2048], *buf = malloc(1 << 16);
	const char *odd = "we\"ird\\na\nme\xc3\xa9";
	int port = next_port();
	PGconn *c = pgt_connect("postgres");
	char *q, *esc;
	Daemon *d;

	ck_assert_ptr_nonnull(buf);
	esc = PQescapeIdentifier(c, odd, strlen(odd));
	ck_assert_ptr_nonnull(esc);
	q = malloc(strlen(esc) + 64);
	ck_assert_ptr_nonnull(q);
	sprintf(q, "drop database if exists %s", esc);
	pgt_exec(c, q);
	sprintf(q, "create database %s", esc);
	pgt_exec(c, q);
	PQfreemem(esc);
	free(q);
	PQfinish(c);
	pgt_exec_db(db, "select pgq.create_queue('q')");
	/* discovery finds the odd name; the [cluster] lists a name that is not UTF-8 */
	snprintf(ini, sizeof(ini),
		 "%sticker_period = 0.1\nmetrics_listen = 127.0.0.1:%d\ninitial_database = %s\n"
		 "backoff_base = 0.05\nbackoff_cap = 0.2\n"
		 "[cluster caf\xc3\xa9]\nbase_connstr = host=%s port=%d user=postgres\n"
		 "database_list = caf\xe9 \"x\", %s\n",
		 dmn_base_ini(), port, db, pgt_socket_dir(), pgt_port(), db);
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(wait_http(port, "/metrics", 200, "pgqd_ev_db_ticks_total{cluster=\"caf\xc3\xa9\"",
			    buf, 1 << 16, 10000));
	ck_assert(wait_metric_above(port,
				    "pgqd_ev_db_errors_total{cluster=\"caf\xc3\xa9\",database="
				    "\"caf\\\\xe9 \\\"x\\\"\",kind=\"connect\"}",
				    0, buf));
	ck_assert(wait_http(port, "/metrics", 200, "database=\"we\\\"ird\\\\\\\\na\\nme\xc3\xa9\"",
			    buf, 1 << 16, 10000));
	ck_assert_int_eq(promtool(buf), 0);
	ck_assert(numbers_short(buf));
	ck_assert(counters_without_state(buf));
	ck_assert_ptr_nonnull(strstr(buf, "pgqd_ev_db_state{cluster=\"caf\xc3\xa9\",database=\""));
	ck_assert_int_eq(http_get(port, "/health", buf, 1 << 16) > 0, 1);
	ck_assert_int_eq(json_check(buf), 0);
	ck_assert_ptr_nonnull(strstr(buf, "\"uptime_s\":"));
	dmn_stop(d);
	free(buf);
}
END_TEST

/*
 * More databases than descriptors (issue 20: at 50,000 databases the limit is
 * RLIMIT_NOFILE): the ones beyond the budget wait without a connection and the
 * daemon says so in one log line and in /metrics, which still answers; the
 * others tick. Before, every connect past the limit failed with EMFILE, the
 * server was logged as down, and /metrics could not accept its clients.
 */
START_TEST(test_descriptor_limit_reported)
{
	enum { NDB = 8, CONNECTED = 3 };
	/* the daemon keeps 48 + (1 + max_maint_connections) per cluster */
	const rlim_t limit = 48 + 1 + 1 + CONNECTED;
	char ini[4096], list[2048] = "", *buf = malloc(1 << 16);
	int port = next_port();
	Daemon *d;

	ck_assert_ptr_nonnull(buf);
	for (int i = 0; i < NDB; i++) {
		const char *db = pgt_db_new();

		pgt_exec_db(db, "select pgq.create_queue('q')");
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "",
			 db);
	}
	snprintf(ini, sizeof(ini),
		 "%sdatabase_list = %s\nmax_maint_connections = 1\nticker_period = 0.2\n"
		 "stats_period = 0.5\nmetrics_listen = 127.0.0.1:%d\n",
		 dmn_base_ini(), list, port);
	/* the daemon's alone: the test process keeps its own (valgrind's test
	   setup runs the tests unforked, and refuses the change) */
	d = dmn_start_nofile(ini, limit);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(dmn_wait_log(d,
			       "5 databases are not ticked: each needs a connection, and the "
			       "descriptor limit (RLIMIT_NOFILE) is 53",
			       20000));
	ck_assert(wait_http(port, "/metrics", 200, "pgqd_ev_databases{state=\"running\"} 3", buf,
			    1 << 16, 20000));
	ck_assert_double_eq(metric(buf, "pgqd_ev_databases_no_descriptor"), NDB - CONNECTED);
	ck_assert_double_eq(metric(buf, "pgqd_ev_descriptor_limit"), (double)limit);
	ck_assert_int_eq(promtool(buf), 0);
	ck_assert(wait_http(port, "/health", 503, "descriptor limit", buf, 1 << 16, 10000));
	/* not taken for a server outage */
	ck_assert(!dmn_log_contains(d, "is down"));
	ck_assert(!dmn_log_contains(d, "Too many open files"));
	dmn_stop(d);
	free(buf);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("daemon-health");
	TCase *tc = pgt_tcase("health", 60);
	PgtOptions opts = {.need_server = true};

	tcase_add_test(tc, test_never_connected_is_unhealthy);
	tcase_add_test(tc, test_unhealthy_logged_once_for_many);
	tcase_add_test(tc, test_auth_failure_counted);
	tcase_add_test(tc, test_stale_ticks_unhealthy);
	tcase_add_test(tc, test_metrics_valid_and_stable);
	tcase_add_test(tc, test_descriptor_limit_reported);
	suite_add_tcase(s, tc);
	return pgt_main(s, &opts);
}
