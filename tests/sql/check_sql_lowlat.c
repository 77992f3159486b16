/*
 * Low-latency queues and metadata churn, in SQL: the watch protocol between
 * producers and the ticker (pgq._wake(), pgq.ticker_watch()), ticks for events of
 * transactions open at the last tick, ticks held back while every consumer is
 * behind or there is none (pgq._ticker), HOT updates of pgq.subscription (and its
 * in-place upgrade from PgQ 3.5's layout), and the thinning of a low-latency
 * queue's tick history (pgq.maint_thin_ticks()).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqltest.h"

static PGconn *queue_conn(const char *db, bool low_latency)
{
	PGconn *c = pgt_connect(db);

	pgt_exec(c, "select pgq.create_queue('q')");
	if (low_latency)
		pgt_exec(c, "select pgq.set_queue_config('q', 'low_latency', 'on')");
	return c;
}

/* Woken ticks are made for readers: consumer r, at the head. */
static void add_reader(PGconn *c)
{
	pgt_exec(c, "select pgq.register_consumer('q', 'r')");
}

/* r reads every batch there is, as a consumer keeping up does. */
static void read_to_head(PGconn *c)
{
	free(pgt_take_all_batches(c, "q", "r"));
}

/* Producers notify unless a ticker watches; the watch ends only with no producer open. */
START_TEST(test_watch_protocol)
{
	const char *db = pgt_db_new();
	PGconn *tk = queue_conn(db, true), *p = pgt_connect(db), *l = pgt_connect(db);
	char pl[256];

	add_reader(tk);
	pgt_exec(l, "listen \"pgq.wake\"");
	pgt_exec(p, "select pgq.insert_event('q', 't', 'd')");
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 1, pl, sizeof(pl)), 1);

	/* the ticker watches: a producer sends nothing, and is ticked by the watch;
	   new_events counts from the session's previous call, none before the first */
	sqlt_eq(tk, "select watching || ' ' || new_events from pgq.ticker_watch(1)", "true 0");
	/* a second session cannot watch too */
	sqlt_eq(p, "select watching from pgq.ticker_watch(1)", "f");
	pgt_exec(p, "begin");
	pgt_exec(p, "select pgq.insert_event('q', 't', 'd')");
	pgt_exec(p, "select pgq.insert_event_raw('q', null, null, null, null, 't', 'd', null, null,"
		    " null, null)");
	/* in flight: the watch may not end; r, two ticks behind, wants no woken tick */
	sqlt_eq(tk,
		"select watching || ' ' || wanted || ' ' || new_events from pgq.ticker_watch(2)",
		"true false 2");
	pgt_exec(p, "commit");
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 1, pl, sizeof(pl)), 0);
	/* r reads to the head and, finding no batch while events wait, asks for the
	   tick although the ticker watches (its watch is slow while no one is near) */
	read_to_head(p);
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 1, pl, sizeof(pl)), 1);
	ck_assert_str_eq(pl, "q");
	/* nothing in flight, but an event since the previous call: producers are busy,
	   so the watch goes on (it ends after a call with nothing new) */
	pgt_exec(p, "select pgq.insert_event('q', 't', 'd')");
	sqlt_eq(tk, "select watching || ' ' || new_events from pgq.ticker_watch(2)", "true 1");
	/* nothing in flight: it ends, and its tick covers the commit; r is at the head */
	sqlt_eq(tk,
		"select watching || ' ' || wanted || ' ' || new_events from pgq.ticker_watch(2)",
		"false true 0");
	sqlt_eq(tk,
		"select count(*) from pgq.event_1 e, (select tick_snapshot from pgq.tick"
		" order by tick_id desc limit 1) t"
		" where not txid_visible_in_snapshot(e.ev_txid, t.tick_snapshot)",
		"0");
	sqlt_eq(tk,
		"select count(*) from pg_locks where locktype = 'advisory'"
		" and classid = 1885827447",
		"0");
	/* not watched any more: producers notify again, the COPY path too */
	pgt_exec(p, "select pgq.insert_event('q', 't', 'd')");
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 1, pl, sizeof(pl)), 1);
	pgt_exec(p, "select pgq.current_event_table('q')");
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 1, pl, sizeof(pl)), 1);
	PQfinish(tk);
	PQfinish(p);
	PQfinish(l);
}
END_TEST

/* The watch with the busy rule's settings: wake_min_interval 5 ms, 1 event/s, at most gap_max s. */
static const char *watch_call(PGconn *c, const char *gap_max)
{
	static char v[64];
	char sql[160];
	char *r;

	/* each queue's last tick half a second old: 1,000 new events are 2,000/s */
	pgt_exec(
		c,
		"update pgq.tick t set tick_time = tick_time - interval '0.5 s'"
		" where tick_id = (select max(tick_id) from pgq.tick where tick_queue = t.tick_queue)");
	snprintf(sql, sizeof(sql),
		 "select ticks || ' ' || new_events from pgq.ticker_watch(0, 0.005, 1, %s)",
		 gap_max);
	r = sqlt_rows(c, sql);
	snprintf(v, sizeof(v), "%.*s", (int)strcspn(r, "\n"), r);
	free(r);
	free(pgt_take_all_batches(c, "busy", "r"));
	free(pgt_take_all_batches(c, "quiet", "r"));
	return v;
}

/*
 * Each busy queue's own gap: with the watch's settings, a low_latency queue whose
 * rate since its last tick is above i_busy_rate is due only once that tick is
 * i_gap_min x rate / i_busy_rate old, less i_gap_min (here 0.005 x 2,000 / 1 =
 * 10 s, at most i_gap_max), while a quiet queue beside it is ticked at once; the
 * daemon's new_events is the quieter queue's. Without the settings, or with a
 * busy rate of 0, every queue with new events is ticked.
 */
START_TEST(test_busy_queue_ticks_at_its_own_gap)
{
	PGconn *c = pgt_connect(pgt_db_new());

	/* no idle ticks (ticker_max_lag / 2) while the test moves ticks back */
	pgt_exec(c, "select pgq.create_queue(q), pgq.set_queue_config(q, 'low_latency', 'on'),"
		    " pgq.set_queue_config(q, 'ticker_max_lag', '60'),"
		    " pgq.register_consumer(q, 'r') from (values ('busy'), ('quiet')) v(q)");
	pgt_exec(c, "select pgq.ticker_watch(1, 0.005, 1, 20)");
	watch_call(c, "20");
	pgt_exec(c, "select pgq.insert_event('busy', 't', 'd') from generate_series(1, 1000)");
	pgt_exec(c, "select pgq.insert_event('quiet', 't', 'd')");
	ck_assert_str_eq(watch_call(c, "20"), "1 1");
	sqlt_eq(c,
		"select count(*) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue"
		" where q.queue_name = 'busy' and t.tick_event_seq >= 1000",
		"0");
	/* its last tick 6 s old: 1,000 events in 6 s make a gap of 0.83 s */
	pgt_exec(c,
		 "update pgq.tick t set tick_time = tick_time - interval '4.5 s' from pgq.queue q"
		 " where q.queue_id = t.tick_queue and q.queue_name = 'busy'");
	ck_assert_str_eq(watch_call(c, "20"), "1 0");
	/* 2,000 events/s: 10 s, then the bound (0.6 s, less 5 ms) at 1 s */
	pgt_exec(c, "select pgq.insert_event('busy', 't', 'd') from generate_series(1, 1000)");
	ck_assert_str_eq(watch_call(c, "20"), "0 0");
	ck_assert_str_eq(watch_call(c, "0.6"), "1 0");
	/* no rule: the old form, and a busy rate of 0 */
	pgt_exec(c, "select pgq.insert_event('busy', 't', 'd') from generate_series(1, 1000)");
	sqlt_eq(c, "select ticks from pgq.ticker_watch(0)", "1");
	pgt_exec(c, "select pgq.insert_event('busy', 't', 'd') from generate_series(1, 1000)");
	sqlt_eq(c, "select ticks from pgq.ticker_watch(0, 0.005, 0, 20)", "1");
	PQfinish(c);
}
END_TEST

/* A transaction open at a tick, whose event id that tick counted, is ticked after it commits. */
START_TEST(test_tick_after_open_transaction)
{
	const char *db = pgt_db_new();
	PGconn *c = queue_conn(db, true), *p = pgt_connect(db);
	char *before, *tick;

	add_reader(c);
	/* the first event does not move the sequence's last value: get past it */
	pgt_exec(c, "select pgq.insert_event('q', 't', 'first')");
	pgt_exec(c, "select pgq.ticker('q')");
	pgt_exec(p, "begin");
	pgt_exec(p, "select pgq.insert_event('q', 't', 'long')");
	/* counts p's id, cannot see p */
	tick = pgt_value(c, "select pgq.ticker('q')");
	ck_assert_ptr_nonnull(tick);
	free(tick);
	before = pgt_value(c, "select max(tick_id) from pgq.tick");
	/* nothing new, nothing committed: no tick */
	sqlt_eq(c, "select pgq.ticker('q') is null", "t");
	pgt_exec(p, "commit");
	sqlt_eq(c, "select pgq.ticker('q') is not null", "t");
	sqlt_eq(c,
		"select count(*) from pgq.event_1 e, (select tick_snapshot from pgq.tick"
		" order by tick_id desc limit 1) t"
		" where not txid_visible_in_snapshot(e.ev_txid, t.tick_snapshot)",
		"0");
	/* and then the queue is idle again */
	sqlt_eq(c, "select pgq.ticker('q') is null", "t");
	free(before);
	PQfinish(c);
	PQfinish(p);
}
END_TEST

/* c's next batch of queue q (asserted to exist), malloc'd. */
static char *take_batch(PGconn *c)
{
	char *b = pgt_value(c, "select pgq.next_batch('q', 'c')");

	ck_assert_ptr_nonnull(b);
	return b;
}

static void finish_batch(PGconn *c, char *batch)
{
	char sql[96];

	snprintf(sql, sizeof(sql), "select pgq.finish_batch(%s)", batch);
	sqlt_eq(c, sql, "1");
	free(batch);
}

/* Does a ticker call on queue q make a tick now? */
static void expect_tick(PGconn *c, bool made)
{
	sqlt_eq(c, "select pgq.ticker('q') is not null", made ? "t" : "f");
}

/* A woken tick waits for a reader: while every consumer has a whole batch waiting
   beyond the one it reads, it is held back (a slow consumer gets larger batches, not
   a backlog of small ones); a consumer close to the head, or one that finds no batch
   while events wait, gets it at once. */
START_TEST(test_tick_waits_for_a_reader)
{
	const char *db = pgt_db_new();
	PGconn *c = queue_conn(db, true), *l = pgt_connect(db);
	char pl[256], *b;

	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	/* pgq_node's bookkeeping consumers (names from '.') never count */
	pgt_exec(c, "select pgq.register_consumer('q', '.global_watermark')");
	pgt_exec(l, "listen \"pgq.wake\"");
	/* c is at the head: a new event is ticked at once (tick 2) */
	pgt_exec(c, "select pgq.insert_event('q', 't', '1')");
	expect_tick(c, true);
	/* c reads up to tick 2: one tick beyond it is made, and a second (4) */
	b = take_batch(c);
	pgt_exec(c, "select pgq.insert_event('q', 't', '2')");
	expect_tick(c, true);
	pgt_exec(c, "select pgq.insert_event('q', 't', '3')");
	expect_tick(c, true);
	/* c has a whole batch (2..3) waiting beyond its own: the fourth event waits */
	pgt_exec(c, "select pgq.insert_event('q', 't', '4')");
	expect_tick(c, false);
	sqlt_eq(c, "select pgq.ticker() = 0", "t");
	finish_batch(c, b);
	/* c's next batch ends at tick 3, the one before the last: the event is ticked */
	b = take_batch(c);
	expect_tick(c, true);
	pgt_exec(c, "select pgq.insert_event('q', 't', '5')");
	expect_tick(c, false);
	/* every insert woke the ticker (nobody watches); no batch look-up did */
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 5, pl, sizeof(pl)), 5);
	/* c reads on to the head; finding no batch while event 5 waits, it asks for the tick */
	finish_batch(c, b);
	finish_batch(c, take_batch(c));
	finish_batch(c, take_batch(c));
	sqlt_eq(c, "select pgq.next_batch('q', 'c') is null", "t");
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 1, pl, sizeof(pl)), 1);
	ck_assert_str_eq(pl, "q");
	expect_tick(c, true);
	/* caught up with nothing waiting: no wake-up */
	finish_batch(c, take_batch(c));
	sqlt_eq(c, "select pgq.next_batch('q', 'c') is null", "t");
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 1, pl, sizeof(pl)), 0);
	/* the normal rules still tick what waits: ticker_max_count */
	for (int i = 0; i < 2; i++) {
		pgt_exec(c, "select pgq.insert_event('q', 't', 'x')");
		expect_tick(c, true);
	}
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_count', '3')");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'x') from generate_series(1, 2)");
	expect_tick(c, false);
	pgt_exec(c, "select pgq.insert_event('q', 't', 'x')");
	expect_tick(c, true);
	/* with no reader at all, a tick serves no one: only the normal rules tick */
	pgt_exec(c, "select pgq.unregister_consumer('q', 'c')");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'x') from generate_series(1, 2)");
	expect_tick(c, false);
	pgt_exec(c, "select pgq.insert_event('q', 't', 'x')");
	expect_tick(c, true);
	PQfinish(c);
	PQfinish(l);
}
END_TEST

/* The scans of queue q's first event table in k's transaction: no seq scan, at
   least n index probes (the xip probe also runs when some other transaction, an
   autovacuum analyze say, was open at the last tick). */
static void expect_index_probes(PGconn *k, int n)
{
	char *v = pgt_value(k, "select seq_scan || ' ' || idx_scan from pg_stat_xact_user_tables"
			       " where relid = 'pgq.event_1_0'::regclass");
	long seq = -1, idx = -1;

	ck_assert_ptr_nonnull(v);
	ck_assert_msg(sscanf(v, "%ld %ld", &seq, &idx) == 2 && seq == 0 && idx >= n,
		      "scans of pgq.event_1_0 (seq idx): got \"%s\", want \"0 %d\" or more probes",
		      v, n);
	free(v);
}

/* A new session (no scan counts pending from other work) whose planner expects a
   match early in a seq scan, as it does for a table grown since its last analyze
   whose ev_txid index has one entry per producing transaction (the daemon's watch
   session planned such a seq scan on every call; a test cannot cheaply make 80,000
   transactions, so the costs are shifted instead). */
static PGconn *probe_session(const char *db)
{
	PGconn *k = pgt_connect(db);

	pgt_exec(k, "set random_page_cost = 40");
	return k;
}

/* The check for events committed since the last tick probes the ev_txid index even
   when the event table was filled since its last analyze: as an exists () it was
   planned as a seq scan, paid on every call of the daemon's watch. */
START_TEST(test_pending_probe_uses_the_index)
{
	const char *db = pgt_db_new();
	PGconn *c = queue_conn(db, true), *p = pgt_connect(db), *k;
	char *pxid, sql[192];

	add_reader(c);
	/* no statistics: as after a rotation or a burst, before autovacuum's analyze */
	pgt_exec(c, "alter table pgq.event_1_0 set (autovacuum_enabled = false)");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'd') from generate_series(1, 30000)");
	expect_tick(c, true);
	/* idle: the sequence did not move, so the tables are asked */
	k = probe_session(db);
	pgt_exec(k, "begin");
	expect_tick(k, false);
	expect_index_probes(k, 1);
	pgt_exec(k, "commit");
	/* through the generated static probe (plans cached), not its dynamic fallback */
	sqlt_eq(c,
		"select pgq._pending_static(1, tick_snapshot)::text from pgq.tick"
		" order by tick_id desc limit 1",
		"false");
	sqlt_eq(c, "select pgq._pending_static(999, txid_current_snapshot()) is null", "t");
	PQfinish(k);
	/* an event of a transaction open at the last tick: found through its xip entry */
	pgt_exec(p, "begin");
	pgt_exec(p, "select pgq.insert_event('q', 't', 'long')");
	/* a later transaction ends first, so the tick's xmax is past p and p is in its xip */
	pgt_exec(c, "select txid_current()");
	read_to_head(c);
	expect_tick(c, true);
	pxid = pgt_value(p, "select txid_current()");
	snprintf(sql, sizeof(sql),
		 "select %s in (select txid_snapshot_xip(tick_snapshot) from pgq.tick"
		 " where tick_id = (select max(tick_id) from pgq.tick))",
		 pxid);
	sqlt_eq(c, sql, "t");
	free(pxid);
	pgt_exec(p, "commit");
	k = probe_session(db);
	pgt_exec(k, "begin");
	expect_tick(k, true);
	expect_index_probes(k, 2);
	pgt_exec(k, "commit");
	expect_tick(k, false);
	PQfinish(k);
	PQfinish(c);
	PQfinish(p);
}
END_TEST

/* 200 batches, each in its own transactions as consumers run them: every update
   of pgq.subscription is HOT (pages are pruned between them). */
START_TEST(test_subscription_updates_are_hot)
{
	const char *db = pgt_db_new();
	PGconn *c = queue_conn(db, false);
	PGconn *r;
	long upd, hot;
	char *v;
	int i;

	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_lag', '0')");
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	for (i = 0; i < 200; i++) {
		pgt_exec(c, "select pgq.insert_event('q', 't', 'd')");
		pgt_exec(c, "select pgq.ticker('q')");
		pgt_exec(c, "select pgq.next_batch('q', 'c')");
		pgt_exec(c, "select pgq.finish_batch(sub_batch) from pgq.subscription");
	}
	/* the session's counters reach the statistics at the end of this one */
	pgt_exec(c, "select pg_stat_force_next_flush()");
	r = pgt_connect(db);
	v = pgt_value(r, "select n_tup_upd || ' ' || n_tup_hot_upd from pg_stat_user_tables"
			 " where relid = 'pgq.subscription'::regclass");
	upd = atol(v);
	hot = atol(strchr(v, ' ') + 1);
	free(v);
	PQfinish(r);
	ck_assert_int_eq(upd, 400);
	ck_assert_msg(hot == upd, "%ld updates, only %ld HOT", upd, hot);
	PQfinish(c);
}
END_TEST

/* An install with PgQ 3.5's layout (unique sub_batch, fillfactor 100) upgrades in place. */
START_TEST(test_subscription_upgrade_in_place)
{
	const char *db = pgt_db_new();
	PGconn *c = queue_conn(db, false);

	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	pgt_exec(c, "alter table pgq.subscription add constraint subscription_batch_idx unique"
		    " (sub_batch), set (fillfactor = 100)");
	sqlt_eq(c, "select pgq.upgrade_schema()", "0");
	sqlt_eq(c, "select count(*) from pg_constraint where conname = 'subscription_batch_idx'",
		"0");
	sqlt_eq(c, "select reloptions::text from pg_class where oid = 'pgq.subscription'::regclass",
		"{fillfactor=50}");
	/* the consumer is still there and reads */
	sqlt_eq(c, "select count(*) from pgq.get_consumer_info('q', 'c')", "1");
	/* and again: nothing to do */
	sqlt_eq(c, "select pgq.upgrade_schema()", "0");
	PQfinish(c);
}
END_TEST

/* Thinning keeps what a consumer or a repositioning may need. */
START_TEST(test_thin_ticks)
{
	const char *db = pgt_db_new();
	PGconn *c = queue_conn(db, true);
	char *pos;

	/* 20 minutes ago: 60 s of ticks at 5 a second; 10 minutes ago: another 60 s,
	   where a consumer is positioned; 2 minutes ago: 60 s more */
	pgt_exec(c,
		 "insert into pgq.tick (tick_queue, tick_id, tick_time, tick_event_seq)"
		 " select 1, nextval('pgq.event_1_tick_seq'),"
		 " date_trunc('second', now()) - m * interval '1 minute'"
		 " + i * interval '200 ms', 0"
		 " from unnest(array[20, 10, 2]) m, generate_series(0, 299) i order by m desc, i");
	pos = pgt_value(
		c, "select tick_id from pgq.tick where tick_time < now() - interval '9 minutes'"
		   " order by tick_id desc limit 1 offset 149");
	{
		char sql[160];

		snprintf(sql, sizeof(sql), "select pgq.register_consumer_at('q', 'c', %s)", pos);
		pgt_exec(c, sql);
	}
	sqlt_eq(c, "select count(*) from pgq.tick", "901"); /* and create_queue's */
	ck_assert_int_eq(
		sqlt_ntuples(c, "select * from pgq.maint_operations()"
				" where func_name = 'pgq.maint_thin_ticks' and func_arg = 'q'"),
		1);
	sqlt_eq(c, "select pgq.maint_thin_ticks('q')", "0");
	/* 20 min ago: one a second (60); 10 min ago: the 150 before the consumer one a
	   second (30), the 150 from its position on kept; the last 5 minutes kept */
	sqlt_eq(c, "select count(*) from pgq.tick where tick_time < now() - interval '15 minutes'",
		"60");
	sqlt_eq(c,
		"select count(*) from pgq.tick where tick_time between now() - interval '15 minutes'"
		" and now() - interval '5 minutes'",
		"180");
	sqlt_eq(c, "select count(*) from pgq.tick where tick_time > now() - interval '5 minutes'",
		"301");
	/* the consumer's batch still works */
	sqlt_eq(c, "select pgq.next_batch('q', 'c') is not null", "t");
	/* a normal queue is left alone */
	pgt_exec(c, "select pgq.set_queue_config('q', 'low_latency', 'off')");
	ck_assert_int_eq(sqlt_ntuples(c, "select * from pgq.maint_operations()"
					 " where func_name = 'pgq.maint_thin_ticks'"),
			 0);
	free(pos);
	PQfinish(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sql-lowlat");
	TCase *tc = pgt_tcase("lowlat", 60);
	PgtOptions opts = {.need_server = true};

	tcase_add_test(tc, test_watch_protocol);
	tcase_add_test(tc, test_busy_queue_ticks_at_its_own_gap);
	tcase_add_test(tc, test_tick_after_open_transaction);
	tcase_add_test(tc, test_tick_waits_for_a_reader);
	tcase_add_test(tc, test_pending_probe_uses_the_index);
	tcase_add_test(tc, test_subscription_updates_are_hot);
	tcase_add_test(tc, test_subscription_upgrade_in_place);
	tcase_add_test(tc, test_thin_ticks);
	suite_add_tcase(s, tc);
	return pgt_main(s, &opts);
}
