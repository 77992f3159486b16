/*
 * Slow suite: 300 databases ticked by one pgqd-ev. Once all are ticked (the
 * daemon's STATUS says so), every database gets a pgq.ticker() call each period
 * for 30 s, and in no database does a call come later than ticker_period +
 * 100 ms after the previous one, from its first call on (so also while the
 * others still connect). Each call is logged by a wrapper around pgq.ticker(),
 * so the check is made in the databases, not from the daemon's own numbers.
 * Then SIGTERM: the daemon is gone within 1 s (scaled by PGQD_TEST_TIME_FACTOR),
 * and logs "stopped" only after freeing its sessions (their sockets are closed
 * by its exit).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "pgtest.h"

#define NDB       300
#define RUN_SEC   30
#define PERIOD_MS 1000
#define SLACK_MS  100
/* a bound on connecting 300 fresh databases, 20 at once: the server's backend
   start-up on a loaded 2-core machine sets it (about 9 a second at load 20),
   not the daemon; it only keeps a stuck start from passing */
#define RAMP_SEC 120

/* The databases from one session: a session per CREATE DATABASE cost four
   times as much on a loaded machine (254 s for the 300). */
static void make_databases(void)
{
	PGconn *c = pgt_connect("postgres");
	char sql[128];

	pgt_exec(c, "create database slow_tpl template pgqd_tpl");
	{
		PGconn *t = pgt_connect("slow_tpl");

		pgt_exec(t, "select pgq.create_queue('q')");
		pgt_exec(t, "create table public.tick_log (t timestamptz not null"
			    " default clock_timestamp())");
		pgt_exec(t, "alter function pgq.ticker() rename to ticker_measured");
		pgt_exec(t, "create function pgq.ticker() returns bigint language sql as"
			    " $$ insert into public.tick_log default values;"
			    " select pgq.ticker_measured(); $$");
		PQfinish(t);
	}
	for (int i = 1; i <= NDB; i++) {
		snprintf(sql, sizeof(sql), "create database s%03d template slow_tpl", i);
		pgt_exec(c, sql);
	}
	PQfinish(c);
}

START_TEST(test_300_databases_on_time)
{
	char sql[512], status[64], *ini, *w0, *w1;
	size_t cap = 8192, len;
	Daemon *d;
	int worst_db = 0, least_db = 0;
	int64_t least = -1;
	double worst = 0, worst_at_ms = 0, worst_in_window = 0;
	int64_t t0, ramp_ms, exit_ms;
	PGconn *pg;

	t0 = pgt_now_ms();
	make_databases();
	fprintf(stderr, "# %d databases made in %lld ms\n", NDB, (long long)(pgt_now_ms() - t0));
	ini = malloc(cap);
	len = (size_t)snprintf(ini, cap,
			       "%sticker_period = %g\nmax_connecting = 20\ndatabase_list =",
			       dmn_base_ini(), PERIOD_MS / 1000.0);
	for (int i = 1; i <= NDB; i++) {
		if (len + 64 > cap)
			ini = realloc(ini, cap *= 2);
		/* one line: the reader has no line limit and, like pgqd's, no
		   continuation lines */
		len += (size_t)snprintf(ini + len, cap - len, "%s s%03d", i == 1 ? "" : ",", i);
	}
	snprintf(ini + len, cap - len, "\n");
	d = dmn_start(ini, NULL);
	t0 = pgt_now_ms();
	ck_assert(dmn_wait_notify(d, "READY=1", 10000));
	snprintf(status, sizeof(status), "STATUS=%d running, 0 connecting", NDB);
	ck_assert_msg(dmn_wait_notify(d, status, (int)(RAMP_SEC * 1000 * pgt_time_factor())),
		      "not all %d databases ticked within %.0f s", NDB,
		      RAMP_SEC * pgt_time_factor());
	ramp_ms = pgt_now_ms() - t0;
	fprintf(stderr, "# all %d databases ticked %lld ms after the start\n", NDB,
		(long long)ramp_ms);
	/* the window, on the server's clock (the one tick_log is written with) */
	pg = pgt_connect("postgres");
	w0 = pgt_value(pg, "select clock_timestamp()");
	/* read its stderr meanwhile: a full pipe would block the daemon */
	ck_assert_int_eq(dmn_wait_exit(d, RUN_SEC * 1000), -1);
	w1 = pgt_value(pg, "select clock_timestamp()");
	PQfinish(pg);
	t0 = pgt_now_ms();
	dmn_signal(d, SIGTERM);
	ck_assert_int_eq(dmn_wait_exit(d, 20000), 0);
	exit_ms = pgt_now_ms() - t0;
	fprintf(stderr, "# exit %lld ms after SIGTERM at %d databases\n", (long long)exit_ms, NDB);
	/* the sessions were freed before "stopped" was logged */
	ck_assert_int_gt(dmn_log_line_no(d, "LOG stopped"),
			 dmn_log_line_no(d, "connections closed in"));
	for (int i = 1; i <= NDB; i++) {
		PGconn *c;
		int64_t calls;
		double gap;

		snprintf(sql, sizeof(sql), "s%03d", i);
		c = pgt_connect(sql);
		/* one call per period in the window: 30 periods hold at least 29 calls
		   whatever their phase */
		snprintf(sql, sizeof(sql),
			 "select count(*) from tick_log where t >= '%s' and t < '%s'", w0, w1);
		calls = pgt_int(c, sql);
		if (least < 0 || calls < least) {
			least = calls;
			least_db = i;
		}
		/* the longest gap, and where it ended on the window's clock (negative:
		   while databases were still connecting); the longest inside the window */
		snprintf(
			sql, sizeof(sql),
			"select coalesce(max(gap), 0), coalesce(max(gap) filter (where t >= '%s'), 0),"
			" coalesce((array_agg((extract(epoch from t - '%s'::timestamptz) * 1000)::int"
			" order by gap desc nulls last))[1], 0)"
			" from (select t, (extract(epoch from t - lag(t) over (order by t)) * 1000)::int"
			" as gap from tick_log) g",
			w0, w0);
		PGresult *gr = PQexec(c, sql);
		ck_assert_int_eq(PQresultStatus(gr), PGRES_TUPLES_OK);
		gap = atof(PQgetvalue(gr, 0, 0));
		if (gap > worst) {
			worst = gap;
			worst_db = i;
			worst_at_ms = atof(PQgetvalue(gr, 0, 2));
		}
		if (atof(PQgetvalue(gr, 0, 1)) > worst_in_window)
			worst_in_window = atof(PQgetvalue(gr, 0, 1));
		PQclear(gr);
		PQfinish(c);
	}
	fprintf(stderr,
		"# fewest calls in %d s: %lld (s%03d); worst gap: %.0f ms (s%03d, ending %.0f ms"
		" from the window's start); worst inside the window: %.0f ms\n",
		RUN_SEC, (long long)least, least_db, worst, worst_db, worst_at_ms, worst_in_window);
	/* the daemon's log (stats line, lateness) with any failure below */
	dmn_free(d, least < RUN_SEC * 1000 / PERIOD_MS - 1 || worst > PERIOD_MS + SLACK_MS ||
			    exit_ms > 1000 * pgt_time_factor());
	ck_assert_msg(least >= RUN_SEC * 1000 / PERIOD_MS - 1, "s%03d: only %lld calls in %d s",
		      least_db, (long long)least, RUN_SEC);
	ck_assert_msg(worst <= PERIOD_MS + SLACK_MS, "s%03d: a call %.0f ms after the previous",
		      worst_db, worst);
	/* 1 s at 1,000 databases is the promise; bench/ticker/stop measures that */
	ck_assert_msg(exit_ms <= 1000 * pgt_time_factor(), "exit took %lld ms", (long long)exit_ms);
	dmn_free(d, false);
	free(w0);
	free(w1);
	free(ini);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("daemon-slow");
	TCase *tc = pgt_tcase("slow", 600);
	PgtOptions opts = {.need_server = true, .max_connections = NDB + 50};

	tcase_add_test(tc, test_300_databases_on_time);
	suite_add_tcase(s, tc);
	return pgt_main(s, &opts);
}
