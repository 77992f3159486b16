/*
 * Low-latency queues without a NOTIFY per producing transaction: the races of
 * coalesced wake-ups (sql/pgq/produce.sql pgq._wake(), sql/pgq/ticker.sql
 * pgq.ticker_watch(), src/ticker/db.c). The grid tick comes every 30 s here, so an
 * event ticked within COVER_MS of its commit was ticked by the wake-up path.
 *
 * "Covered": some tick's snapshot sees the producer's transaction, i.e. its events
 * are in a batch a consumer can read.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "pgtest.h"

/* Commit to tick on a loaded 2-core machine is tens of ms; the fallback is 30 s. */
#define COVER_MS 2000

typedef struct Cover {
	const char *db;
	long long xid;
} Cover;

static bool covered(void *arg)
{
	Cover *c = arg;
	char sql[256];

	snprintf(
		sql, sizeof(sql),
		"select count(*) from pgq.tick where txid_visible_in_snapshot(%lld, tick_snapshot)",
		c->xid);
	return pgt_int_db(c->db, sql) > 0;
}

static int cover_ms(void)
{
	return (int)(COVER_MS * pgt_time_factor());
}

/* Consumer r reads every batch there is. */
static void read_to_head(const char *db)
{
	PGconn *c = pgt_connect(db);

	free(pgt_take_all_batches(c, "q", "r"));
	PQfinish(c);
}

/* Wait until xid's events are ticked; how long it took, or -1. Then consumer r
   reads to the head, as a consumer keeping up does: woken ticks are made for a
   reader close to the head (sql/pgq/ticker.sql pgq._ticker). */
static long wait_covered(const char *db, long long xid)
{
	Cover c = {db, xid};
	int64_t t0 = pgt_now_ms();
	long ms;

	if (!pgt_wait_until(covered, &c, cover_ms(), 5))
		return -1;
	ms = (long)(pgt_now_ms() - t0);
	read_to_head(db);
	return ms;
}

static bool watch_free(void *arg)
{
	return pgt_int_db(arg, "select count(*) from pg_locks where locktype = 'advisory'"
			       " and classid = 1885827447 and objid = 1 and granted") == 0;
}

static bool watch_held(void *arg)
{
	return !watch_free(arg);
}

/* Open a transaction that produced one event in queue; returns its xid. */
static long long produce_open_in(PGconn *c, const char *queue)
{
	char sql[128];

	pgt_exec(c, "begin");
	snprintf(sql, sizeof(sql), "select pgq.insert_event('%s', 'test', 'payload')", queue);
	pgt_exec(c, sql);
	return pgt_int(c, "select txid_current()");
}

static long long produce_open(PGconn *c)
{
	return produce_open_in(c, "q");
}

static long long produce_commit(const char *db)
{
	PGconn *c = pgt_connect(db);
	long long x = produce_open(c);

	pgt_exec(c, "commit");
	PQfinish(c);
	return x;
}

typedef struct Fixture {
	char *db;
	Daemon *d;
	char *ini;
} Fixture;

static void start_with(Fixture *f, const char *ini_extra)
{
	PGconn *c;
	char sql[160];

	f->db = strdup(pgt_db_new());
	ck_assert_ptr_nonnull(f->db);
	c = pgt_connect(f->db);
	/* the daemon's calls counted in pg_stat_user_functions */
	snprintf(sql, sizeof(sql), "alter database %s set track_functions = 'pl'", f->db);
	pgt_exec(c, sql);
	pgt_exec(c, "select pgq.create_queue('q')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'low_latency', 'on')");
	pgt_exec(c, "select pgq.register_consumer('q', 'r')");
	PQfinish(c);
	f->ini = malloc(4096);
	ck_assert_ptr_nonnull(f->ini);
	snprintf(f->ini, 4096, "%sdatabase_list = %s\nticker_period = 30\n%s", dmn_base_ini(),
		 f->db, ini_extra);
	f->d = dmn_start(f->ini, NULL);
	ck_assert(dmn_wait_notify(f->d, "READY=1", 5000));
	ck_assert(dmn_wait_log(f->d, "pgq version ok", 5000));
	/* the first tick (at connect) is made */
	ck_assert_int_ge(wait_covered(f->db, produce_commit(f->db)), 0);
}

static void start(Fixture *f)
{
	start_with(f, "");
}

static void stop(Fixture *f)
{
	dmn_stop(f->d);
	free(f->ini);
	free(f->db);
}

/*
 * Two producers open at once; the second commits after the first's commit was
 * ticked. With one notifier per queue and nothing after its tick, the second
 * waits for the grid. Then the same while the daemon watches (producers skip
 * their NOTIFY): one held open 0.5 s across the end of the watch's linger.
 */
START_TEST(test_skipped_producer_commits_after_notifier)
{
	Fixture f;
	PGconn *c1, *c2, *c3;
	long long x1, x2, x3;

	start(&f);
	c1 = pgt_connect(f.db);
	c2 = pgt_connect(f.db);
	x1 = produce_open(c1);
	x2 = produce_open(c2);
	pgt_exec(c1, "commit");
	ck_assert_int_ge(wait_covered(f.db, x1), 0);
	pgt_exec(c2, "commit");
	ck_assert_msg(wait_covered(f.db, x2) >= 0,
		      "a producer committing after the notifier"
		      " was not ticked within %d ms",
		      cover_ms());

	/* the daemon watches after a wake-up (an open producer, c1, keeps it
	   watching): c3 produces during the watch and sends no NOTIFY */
	c3 = pgt_connect(f.db);
	x2 = produce_open(c1);
	x1 = produce_commit(f.db);
	ck_assert_msg(wait_covered(f.db, x1) >= 0, "a producer next to an open one was not ticked");
	ck_assert(pgt_wait_until(watch_held, f.db, cover_ms(), 5));
	x3 = produce_open(c3);
	pgt_exec(c1, "commit");
	ck_assert_int_ge(wait_covered(f.db, x2), 0);
	/* open past the 100 ms linger: the watch may not end while it is open */
	{
		int64_t until = pgt_now_ms() + 500;

		while (pgt_now_ms() < until) {
			ck_assert(watch_held(f.db));
			usleep(20000);
		}
	}
	pgt_exec(c3, "commit");
	ck_assert_msg(wait_covered(f.db, x3) >= 0,
		      "a producer that skipped its NOTIFY was not"
		      " ticked within %d ms",
		      cover_ms());
	/* and the watch ends once nothing is in flight */
	ck_assert(pgt_wait_until(watch_free, f.db, cover_ms(), 10));
	PQfinish(c1);
	PQfinish(c2);
	PQfinish(c3);
	stop(&f);
}
END_TEST

/*
 * A transaction that produced first and stays open 2 s while others produce and
 * are ticked; its own events are ticked promptly after its commit, although the
 * event sequence does not move at its commit.
 */
START_TEST(test_long_producer_transaction)
{
	Fixture f;
	PGconn *cl;
	long long xl;
	int64_t until;
	int n = 0;

	start(&f);
	ck_assert(pgt_wait_until(watch_free, f.db, cover_ms(), 10));
	cl = pgt_connect(f.db);
	xl = produce_open(cl);
	until = pgt_now_ms() + 2000;
	while (pgt_now_ms() < until) {
		long long x = produce_commit(f.db);

		ck_assert_msg(wait_covered(f.db, x) >= 0,
			      "a producer next to a long open one was not ticked within %d ms",
			      cover_ms());
		n++;
	}
	ck_assert_int_ge(n, 2);
	ck_assert(!covered(&(Cover){f.db, xl}));
	pgt_exec(cl, "commit");
	ck_assert_msg(wait_covered(f.db, xl) >= 0,
		      "the long transaction's events were not ticked within %d ms of its commit",
		      cover_ms());
	PQfinish(cl);
	stop(&f);
}
END_TEST

/*
 * The first producer (the notifier, were there one per queue) rolls back after
 * the second, in another role, has committed: the second is still ticked. Then
 * the daemon's session is killed while it watches: after its reconnect,
 * producers are ticked again.
 */
START_TEST(test_rolled_back_notifier_and_reconnect)
{
	Fixture f;
	PGconn *c1, *c2;
	long long x2, x;

	start(&f);
	pgt_exec_db(f.db, "do $$ begin if not exists (select 1 from pg_roles where rolname ="
			  " 'll_writer') then create role ll_writer in role pgq_writer; end if;"
			  " end $$");
	ck_assert(pgt_wait_until(watch_free, f.db, cover_ms(), 10));
	c1 = pgt_connect(f.db);
	c2 = pgt_connect(f.db);
	pgt_exec(c2, "set role ll_writer");
	produce_open(c1);
	x2 = produce_open(c2);
	pgt_exec(c2, "commit");
	pgt_exec(c1, "rollback");
	ck_assert_msg(wait_covered(f.db, x2) >= 0,
		      "a producer was stranded by a rolled-back one (%d ms)", cover_ms());

	/* kill the watching session (an open producer keeps the watch going); a new
	   session is made and ticks the open producer's and later commits */
	x2 = produce_open(c2);
	x = produce_commit(f.db);
	ck_assert_int_ge(wait_covered(f.db, x), 0);
	ck_assert(pgt_wait_until(watch_held, f.db, cover_ms(), 5));
	ck_assert_int_eq(pgt_int_db(f.db, "select count(pg_terminate_backend(pid)) from pg_locks"
					  " where locktype = 'advisory' and classid = 1885827447"
					  " and objid = 1 and granted"),
			 1);
	ck_assert(pgt_wait_until(watch_free, f.db, cover_ms(), 5));
	pgt_exec(c2, "commit");
	ck_assert_msg(wait_covered(f.db, x2) >= 0, "not ticked after the daemon reconnected");
	x = produce_commit(f.db);
	ck_assert_msg(wait_covered(f.db, x) >= 0, "not ticked after the daemon reconnected");
	x = produce_commit(f.db);
	ck_assert_msg(wait_covered(f.db, x) >= 0, "not ticked after the daemon reconnected");
	PQfinish(c1);
	PQfinish(c2);
	stop(&f);
}
END_TEST

/* r has a whole batch waiting beyond its next one: no woken tick is made for it */
static bool reader_behind(const char *db)
{
	return pgt_int_db(db, "select count(*) from pgq.subscription"
			      " where sub_last_tick < (select max(tick_id) - 1 from pgq.tick)") > 0;
}

/* The daemon's watch calls so far, as the server's statistics have them (a
   backend sends its counts at most once a second). */
static long long watch_calls(const char *db)
{
	return pgt_int_db(db, "select coalesce(sum(calls), 0) from pg_stat_user_functions"
			      " where schemaname = 'pgq' and funcname = 'ticker_watch'");
}

/*
 * While producers keep the daemon watching but no consumer is near the head, the
 * watch slows to its longest gap (25 ms) instead of calling every
 * wake_min_interval (5 ms), even while it makes ticks (here by ticker_max_count 1,
 * a tick for every new event): no consumer is waiting for them. A consumer that
 * catches up then asks for the tick, and gets it.
 */
START_TEST(test_watch_slows_without_a_reader)
{
	Fixture f;
	PGconn *c1, *p;
	long long x, n0, calls;
	int64_t until;
	int events = 0;

	start(&f);
	/* no tick by ticker_max_lag within the test; one by ticker_max_count for
	   every new event */
	pgt_exec_db(f.db, "select pgq.set_queue_config('q', 'ticker_max_lag', '60'),"
			  " pgq.set_queue_config('q', 'ticker_max_count', '1')");
	c1 = pgt_connect(f.db);
	produce_open(c1); /* keeps the watch going */
	x = produce_commit(f.db);
	ck_assert_int_ge(wait_covered(f.db, x), 0);
	ck_assert(pgt_wait_until(watch_held, f.db, cover_ms(), 5));
	/* r stops reading and falls behind */
	for (int i = 0; i < 10 && !reader_behind(f.db); i++) {
		Cover cv = {f.db, produce_commit(f.db)};

		ck_assert(pgt_wait_until(covered, &cv, cover_ms(), 5));
	}
	ck_assert(reader_behind(f.db));
	/* 3 s of producing: at 25 ms that is 120 calls (plus up to a second's worth
	   that the statistics held back); at 5 ms it would be 600 */
	p = pgt_connect(f.db);
	n0 = watch_calls(f.db);
	until = pgt_now_ms() + 3000;
	while (pgt_now_ms() < until) {
		pgt_exec(p, "select pgq.insert_event('q', 'test', 'payload')");
		events++;
	}
	calls = watch_calls(f.db) - n0;
	ck_assert_msg(calls > 0 && calls < 300,
		      "%lld watch calls in 3 s (%d events) with no reader near the head", calls,
		      events);
	ck_assert(watch_held(f.db));
	/* r catches up: its next_batch finds no batch while events wait and asks */
	x = produce_commit(f.db);
	read_to_head(f.db);
	ck_assert_msg(wait_covered(f.db, x) >= 0, "a consumer that caught up was not given a tick");
	pgt_exec(c1, "rollback");
	PQfinish(p);
	PQfinish(c1);
	stop(&f);
}
END_TEST

static long long last_tick(const char *db)
{
	return pgt_int_db(db, "select coalesce(max(tick_id), 0) from pgq.tick");
}

/*
 * Busy producers widen the watch's gap: above wake_busy_rate events/s the watch
 * ticks every wake_min_interval * rate / wake_busy_rate (up to wake_max_interval),
 * so each batch carries more events, also while the consumer keeping up asks
 * for a tick after every batch. Here wake_busy_rate is 5 events/s and the loop
 * produces at least a hundred a second, so ticks come 100-200 ms apart: at most
 * 20 in 2 s (40 allowed). With the fixed 5 ms gap there were 482 for 5,286 events.
 * When producers stop, the gap is back to wake_min_interval.
 */
START_TEST(test_busy_producers_widen_the_watch)
{
	Fixture f;
	PGconn *p, *r;
	long long t0, ticks, x;
	int64_t until;
	int events = 0;

	start_with(&f, "wake_busy_rate = 5\nwake_max_interval = 0.2\n");
	p = pgt_connect(f.db);
	r = pgt_connect(f.db);
	until = pgt_now_ms() + cover_ms() * 5;
	while (!dmn_log_contains(f.d, "producers busy") && pgt_now_ms() < until) {
		pgt_exec(p, "select pgq.insert_event('q', 'test', 'payload')");
		free(pgt_take_all_batches(r, "q", "r"));
	}
	ck_assert_msg(dmn_log_contains(f.d, "producers busy"), "the watch did not widen its gap");
	t0 = last_tick(f.db);
	until = pgt_now_ms() + 2000;
	while (pgt_now_ms() < until) {
		pgt_exec(p, "select pgq.insert_event('q', 'test', 'payload')");
		free(pgt_take_all_batches(r, "q", "r"));
		events++;
	}
	ticks = last_tick(f.db) - t0;
	ck_assert_msg(events >= 200 && ticks <= 40,
		      "%lld ticks for %d events in 2 s of busy producers", ticks, events);
	/* producers stop: a lone event is ticked on the short gap again (or by a
	   new watch, if this one ended) */
	ck_assert(dmn_wait_log(f.d, "ticks every 5.0 ms again", cover_ms()) ||
		  dmn_log_contains(f.d, "producers stopped, watch ended"));
	x = produce_commit(f.db);
	ck_assert_int_ge(wait_covered(f.db, x), 0);
	PQfinish(p);
	PQfinish(r);
	stop(&f);
}
END_TEST

static bool covered_in_queue(PGconn *conn, const char *queue, long long xid)
{
	char sql[320];

	snprintf(sql, sizeof(sql),
		 "select count(*) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue"
		 " where q.queue_name = '%s' and txid_visible_in_snapshot(%lld, t.tick_snapshot)",
		 queue, xid);
	return pgt_int(conn, sql) > 0;
}

/* One statement of the busy producer, and its consumer reading what is ticked. */
static void produce_busy(PGconn *p, PGconn *r)
{
	pgt_exec(p, "select pgq.insert_event('q', 'test', 'payload') from generate_series(1, 20)");
	free(pgt_take_all_batches(r, "q", "r"));
}

static long long queue_ticks(const char *db, const char *queue)
{
	char sql[160];

	snprintf(sql, sizeof(sql),
		 "select count(*) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue"
		 " where q.queue_name = '%s'",
		 queue);
	return pgt_int_db(db, sql);
}

/* Commit one event to queue while q stays busy; ms until a tick of queue covers it, or -1. */
static long produce_covered(PGconn *p, PGconn *r, PGconn *k, const char *queue, int64_t limit)
{
	long long x = produce_open_in(p, queue);
	int64_t start;

	pgt_exec(p, "commit");
	start = pgt_now_ms();
	while (!covered_in_queue(k, queue, x)) {
		if (pgt_now_ms() - start >= limit)
			return -1;
		produce_busy(p, r);
	}
	return (long)(pgt_now_ms() - start);
}

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;

	return (x > y) - (x < y);
}

/*
 * A busy queue's wide gap is its own: a quiet low_latency queue in the same
 * database keeps its short one. q takes events flat out, 20 a statement
 * (2,000-5,000 a second here: at wake_busy_rate 50 and wake_min_interval 20 ms its
 * gap is 0.8-2 s); q2 gets one event at a time, each waited for (one event in
 * 20 ms is not busy). Median commit-to-tick of q2's events: under 25 ms; with the
 * database's gap set by the summed rate it was the busy queue's, 0.5-1.5 s.
 */
START_TEST(test_quiet_queue_keeps_its_gap)
{
	Fixture f;
	PGconn *p, *r, *k;
	long lat[9];
	long long t0, ticks;
	int n = (int)(sizeof(lat) / sizeof(lat[0]));
	int64_t limit = (int64_t)(5000 * pgt_time_factor()), began;

	start_with(&f, "wake_min_interval = 0.02\nwake_busy_rate = 50\nwake_max_interval = 3\n");
	/* no idle ticks of q2: each would put its reader a tick further from the head,
	   and the daemon watches for queues whose reader is near it */
	pgt_exec_db(f.db, "select pgq.create_queue('q2'),"
			  " pgq.set_queue_config('q2', 'low_latency', 'on'),"
			  " pgq.set_queue_config('q2', 'ticker_max_lag', '60'),"
			  " pgq.register_consumer('q2', 'r')");
	p = pgt_connect(f.db);
	r = pgt_connect(f.db);
	k = pgt_connect(f.db);
	/* q2's first event ticked (with the new queue's second tick), and its reader
	   at the head */
	ck_assert(produce_covered(p, r, k, "q2", cover_ms()) >= 0);
	free(pgt_take_all_batches(r, "q2", "r"));
	t0 = queue_ticks(f.db, "q");
	began = pgt_now_ms();
	for (int i = 0; i < n; i++) {
		int64_t until = pgt_now_ms() + 100;

		/* q busy for 100 ms, then one event in q2 while q stays busy */
		while (pgt_now_ms() < until)
			produce_busy(p, r);
		lat[i] = produce_covered(p, r, k, "q2", limit);
		ck_assert_msg(lat[i] >= 0, "q2's event %d was not ticked within %lld ms", i,
			      (long long)limit);
		free(pgt_take_all_batches(r, "q2", "r"));
	}
	began = pgt_now_ms() - began;
	ticks = queue_ticks(f.db, "q") - t0;
	qsort(lat, (size_t)n, sizeof(lat[0]), cmp_long);
	fprintf(stderr, "q2: median %ld ms, worst %ld ms; q: %lld ticks in %lld ms\n", lat[n / 2],
		lat[n - 1], ticks, (long long)began);
	ck_assert_msg(lat[n / 2] <= 150 * pgt_time_factor(),
		      "q2's events ticked %ld ms (median) and %ld ms (worst) after commit,"
		      " beside a busy queue",
		      lat[n / 2], lat[n - 1]);
	/* and q was ticked at its own gap meanwhile (0.3 s or more, less than 10 a
	   second), not at q2's (20-25 ms) */
	ck_assert_msg(ticks <= 2 + 10 * began / 1000,
		      "the busy queue was ticked %lld times in %lld ms", ticks, (long long)began);
	PQfinish(k);
	PQfinish(p);
	PQfinish(r);
	stop(&f);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("daemon-lowlat");
	TCase *tc = pgt_tcase("lowlat", 60);
	PgtOptions opts = {.need_server = true};

	tcase_add_test(tc, test_skipped_producer_commits_after_notifier);
	tcase_add_test(tc, test_long_producer_transaction);
	tcase_add_test(tc, test_rolled_back_notifier_and_reconnect);
	tcase_add_test(tc, test_watch_slows_without_a_reader);
	tcase_add_test(tc, test_busy_producers_widen_the_watch);
	tcase_add_test(tc, test_quiet_queue_keeps_its_gap);
	suite_add_tcase(s, tc);
	return pgt_main(s, &opts);
}
