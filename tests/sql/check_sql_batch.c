/*
 * Batch semantics with several real connections: transactions open across ticks,
 * rollbacks, rotation under load with a slow consumer, concurrent tickers, the
 * tick NOTIFY and the low_latency wake-up.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sqltest.h"

static PGconn *conn(const char *db)
{
	PGconn *c = pgt_connect(db);
	PQsetNoticeProcessor(c, NULL, NULL);
	return c;
}

static void setup_queue(PGconn *c, const char *q)
{
	char sql[512];
	snprintf(sql, sizeof(sql),
		 "select pgq.create_queue('%s'), pgq.set_queue_config('%s', 'ticker_max_lag', '0'),"
		 " pgq.set_queue_config('%s', 'ticker_idle_period', '0')",
		 q, q, q);
	pgt_exec(c, sql);
}

#define batch_is(c, q, cons, want)                                                            \
	do {                                                                                  \
		char *b_ = pgt_take_batch((c), (q), (cons));                                  \
		ck_assert_msg(b_ &&strcmp(b_, (want)) == 0, "batch: got \"%s\", want \"%s\"", \
			      b_ ? b_ : "(none)", (want));                                    \
		free(b_);                                                                     \
	} while (0)

START_TEST(test_open_transactions_across_ticks)
{
	const char *db = pgt_db_new();
	PGconn *c = conn(db), *longtx = conn(db), *other = conn(db), *rb = conn(db);
	setup_queue(c, "q");
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");

	/* a long transaction starts before a and b and stays open over two ticks */
	pgt_exec(longtx, "begin; select pgq.insert_event('q', 't', 'long')");
	pgt_exec(rb, "begin; select pgq.insert_event('q', 't', 'rolledback')");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'a')");
	pgt_exec(other, "begin; select pgq.insert_event('q', 't', 'b')");
	pgt_exec(c, "select pgq.ticker('q')");
	batch_is(c, "q", "c", "a");
	pgt_exec(other, "commit");
	pgt_exec(rb, "rollback");
	pgt_exec(c, "select pgq.ticker('q')");
	batch_is(c, "q", "c", "b");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'c')");
	pgt_exec(c, "select pgq.ticker('q')");
	batch_is(c, "q", "c", "c");
	pgt_exec(longtx, "commit");
	/* the late commit lands in the next batch, keeping its older id */
	pgt_exec(c, "select pgq.insert_event('q', 't', 'd')");
	pgt_exec(c, "select pgq.ticker('q')");
	batch_is(c, "q", "c", "long,d");
	sqlt_eq(c, "select ev_id from pgq.event_1 where ev_data = 'long'", "1");
	pgt_exec(c, "select pgq.ticker('q')");
	batch_is(c, "q", "c", "");
	/* the long transaction was listed explicitly or absorbed in the range: either way once */
	sqlt_eq(c, "select count(*) from pgq.event_1 where ev_data = 'rolledback'", "0");
	PQfinish(c);
	PQfinish(longtx);
	PQfinish(other);
	PQfinish(rb);
}
END_TEST

START_TEST(test_long_tx_far_below)
{
	/* an old transaction >100 txids below the range goes into the explicit id list */
	const char *db = pgt_db_new();
	PGconn *c = conn(db), *longtx = conn(db);
	char *sql;
	setup_queue(c, "q");
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	pgt_exec(longtx, "begin; select pgq.insert_event('q', 't', 'old')");
	for (int i = 0; i < 150; i++)
		pgt_exec(c, "select txid_current()");
	pgt_exec(c, "select pgq.ticker('q')");
	batch_is(c, "q", "c", "");
	pgt_exec(longtx, "commit");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'new')");
	pgt_exec(c, "select pgq.ticker('q')");
	pgt_exec(c, "select pgq.next_batch('q', 'c')");
	sql = pgt_value(c, "select pgq.batch_event_sql(2)");
	ck_assert_msg(strstr(sql, "ev.ev_txid in (") != NULL, "no id list: %s", sql);
	/* the snapshots are constants: no join with pgq.tick to plan and run per batch */
	ck_assert_msg(strstr(sql, "pgq.tick") == NULL && strstr(sql, "::pg_catalog.txid_snapshot"),
		      "snapshots not inlined: %s", sql);
	free(sql);
	sqlt_eq(c, "select string_agg(ev_data, ',' order by ev_id) from pgq.get_batch_events(2)",
		"old,new");
	PQfinish(c);
	PQfinish(longtx);
}
END_TEST

/*
 * The batch's txid filter at its edges: a transaction that ended before the
 * first tick but above its xmin belongs to the batch before; one that was
 * running at the second tick (its xmin) commits before the batch is read, so
 * only the filter keeps its row out of it.
 */
START_TEST(test_batch_txid_edges)
{
	const char *db = pgt_db_new();
	PGconn *c = conn(db), *a = conn(db), *b = conn(db);
	char *bid, *sql, q[200];

	setup_queue(c, "q");
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	pgt_exec(a, "begin; select pgq.insert_event('q', 't', 'a')");
	/* ended before tick 1 but above its xmin (a is open): batch 1 only */
	pgt_exec(c, "select pgq.insert_event('q', 't', 'before')");
	pgt_exec(c, "select pgq.ticker('q')");
	batch_is(c, "q", "c", "before");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'between')");
	pgt_exec(b, "begin; select pgq.insert_event('q', 't', 'b')");
	/* above the second snapshot's xmin, ended before it: in the batch */
	pgt_exec(c, "select pgq.insert_event('q', 't', 'after-b')");
	pgt_exec(a, "commit");
	pgt_exec(c, "select pgq.ticker('q')");
	pgt_exec(b, "commit");
	bid = pgt_value(c, "select pgq.next_batch('q', 'c')");
	ck_assert_ptr_nonnull(bid);
	snprintf(q, sizeof(q),
		 "select string_agg(ev_data, ',' order by ev_id) from pgq.get_batch_events(%s)",
		 bid);
	sql = pgt_value(c, q);
	ck_assert_str_eq(sql, "a,between,after-b");
	free(sql);
	snprintf(q, sizeof(q), "select pgq.finish_batch(%s)", bid);
	pgt_exec(c, q);
	pgt_exec(c, "select pgq.ticker('q')");
	batch_is(c, "q", "c", "b");
	free(bid);
	PQfinish(c);
	PQfinish(a);
	PQfinish(b);
}
END_TEST

/*
 * Rotation under continuous insert: a producer keeps one transaction open across
 * every tick and rotation, a fast consumer takes every batch and a slow one every
 * fourth round. Both must see every committed event exactly once.
 */
START_TEST(test_rotation_under_load)
{
	const char *db = pgt_db_new();
	PGconn *c = conn(db), *prod = conn(db), *slow = conn(db);
	int rounds = 40, per_round = 25, rotations = 0;
	char sql[512];
	setup_queue(c, "q");
	pgt_exec(c, "update pgq.queue set queue_rotation_period = '0'");
	pgt_exec(c,
		 "select pgq.register_consumer('q', 'fast'), pgq.register_consumer('q', 'slow')");
	pgt_exec(c, "create table seen (consumer text, data text)");
	pgt_exec(prod, "begin");
	for (int r = 0; r < rounds; r++) {
		snprintf(
			sql, sizeof(sql),
			"select pgq.insert_event('q', 't', '%d.' || i) from generate_series(1, %d) i",
			r, per_round);
		pgt_exec(prod, sql);
		if (r % 3 ==
		    2) { /* commit now and then, a new transaction straddles the next tick */
			pgt_exec(prod, "commit");
			pgt_exec(prod, "begin");
		}
		pgt_exec(c, "select pgq.ticker('q')");
		{
			int64_t before = pgt_int(c, "select queue_cur_table from pgq.queue");
			pgt_exec(c, "select pgq.maint_rotate_tables_step1('q')");
			pgt_exec(c, "select pgq.maint_rotate_tables_step2()");
			rotations += pgt_int(c, "select queue_cur_table from pgq.queue") != before;
		}
		for (;;) {
			char *b = pgt_value(c, "select pgq.next_batch('q', 'fast')");
			if (!b)
				break;
			snprintf(
				sql, sizeof(sql),
				"insert into seen select 'fast', ev_data from pgq.get_batch_events(%s); select pgq.finish_batch(%s)",
				b, b);
			pgt_exec(c, sql);
			free(b);
		}
		/* the slow one wakes up every 4th round and catches up */
		while (r % 4 == 3) {
			char *b = pgt_value(slow, "select pgq.next_batch('q', 'slow')");
			if (!b)
				break;
			{
				snprintf(
					sql, sizeof(sql),
					"insert into seen select 'slow', ev_data from pgq.get_batch_events(%s); select pgq.finish_batch(%s)",
					b, b);
				pgt_exec(slow, sql);
				free(b);
			}
		}
	}
	pgt_exec(prod, "commit");
	/* drain both */
	pgt_exec(c, "select pgq.ticker('q')");
	for (int i = 0; i < rounds * 2; i++) {
		for (int k = 0; k < 2; k++) {
			const char *who = k ? "slow" : "fast";
			char *b;
			snprintf(sql, sizeof(sql), "select pgq.next_batch('q', '%s')", who);
			b = pgt_value(c, sql);
			if (!b)
				continue;
			snprintf(
				sql, sizeof(sql),
				"insert into seen select '%s', ev_data from pgq.get_batch_events(%s); select pgq.finish_batch(%s)",
				who, b, b);
			pgt_exec(c, sql);
			free(b);
		}
	}
	snprintf(sql, sizeof(sql), "%d", rounds * per_round);
	sqlt_eq(c, "select count(*) from seen where consumer = 'fast'", sql);
	sqlt_eq(c, "select count(distinct data) from seen where consumer = 'fast'", sql);
	sqlt_eq(c, "select count(*) from seen where consumer = 'slow'", sql);
	sqlt_eq(c, "select count(distinct data) from seen where consumer = 'slow'", sql);
	/* rotation really happened, and old tables were emptied by TRUNCATE */
	ck_assert_int_ge(rotations, 4);
	ck_assert_int_lt(pgt_int(c, "select count(*) from pgq.event_1"), rounds * per_round);
	/* no dead tuples in any event table: append-only, emptied by TRUNCATE */
	pgt_exec(c, "create extension if not exists pgstattuple");
	sqlt_eq(c,
		"select coalesce(sum((pgstattuple(c.oid)).dead_tuple_count), 0) from pg_class c "
		"where c.relname like 'event\\_1\\__' and c.relkind = 'r'",
		"0");
	PQfinish(c);
	PQfinish(prod);
	PQfinish(slow);
}
END_TEST

START_TEST(test_rotation_waits_for_slow_consumer)
{
	PGconn *c = conn(pgt_db_new());
	setup_queue(c, "q");
	pgt_exec(c, "update pgq.queue set queue_rotation_period = '0'");
	pgt_exec(c, "select pgq.register_consumer('q', 'stuck')");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'x')");
	/* the consumer still sits at tick 1, taken before the creation step2: no rotation */
	sqlt_eq(c, "select pgq.maint_rotate_tables_step1('q')", "0");
	sqlt_eq(c, "select queue_cur_table from pgq.queue", "0");
	pgt_exec(c, "select pgq.ticker('q')");
	batch_is(c, "q", "stuck", "x");
	pgt_exec(c, "select pgq.maint_rotate_tables_step1('q')");
	sqlt_eq(c, "select queue_cur_table from pgq.queue", "1");
	pgt_exec(c, "select pgq.maint_rotate_tables_step2()");
	/* now the consumer lags again: the second rotation would truncate what it may read */
	pgt_exec(c, "select pgq.insert_event('q', 't', 'y')");
	sqlt_eq(c, "select pgq.maint_rotate_tables_step1('q')", "0");
	sqlt_eq(c, "select queue_cur_table from pgq.queue", "1");
	pgt_exec(c, "select pgq.ticker('q')");
	batch_is(c, "q", "stuck", "y");
	/* a table locked by someone else is skipped, not waited for */
	{
		PGconn *locker = conn(PQdb(c));
		pgt_exec(locker, "begin; lock table pgq.event_1_2 in access share mode");
		sqlt_eq(c, "select pgq.maint_rotate_tables_step1('q')", "0");
		sqlt_eq(c, "select queue_cur_table from pgq.queue", "1");
		pgt_exec(locker, "rollback");
		PQfinish(locker);
	}
	pgt_exec(c, "select pgq.maint_rotate_tables_step1('q')");
	sqlt_eq(c, "select queue_cur_table from pgq.queue", "2");
	PQfinish(c);
}
END_TEST

/*
 * A bulk writer takes the table's name (pgq.current_event_table) and writes one
 * round trip later; a rotation commits in between and the tick after it sees no
 * open transaction below it. Had the writer got its transaction id only at its
 * first row, the id would be above the rotation's step2, the row in the old table,
 * and every later batch would read only the new one: the event lost.
 */
START_TEST(test_bulk_table_taken_before_rotation)
{
	const char *db = pgt_db_new();
	PGconn *c = conn(db), *p = conn(db);
	char *tbl, sql[256], *got;

	setup_queue(c, "q");
	pgt_exec(c, "update pgq.queue set queue_rotation_period = '0'");
	pgt_exec(c, "select pgq.register_consumer('q', 'r')");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'a')");
	pgt_exec(c, "select pgq.ticker('q')");
	batch_is(c, "q", "r", "a");

	pgt_exec(p, "begin");
	tbl = pgt_value(p, "select pgq.current_event_table('q')");
	ck_assert_str_eq(tbl, "pgq.event_1_0");
	pgt_exec(c, "select pgq.maint_rotate_tables_step1('q')");
	sqlt_eq(c, "select queue_cur_table from pgq.queue", "1");
	pgt_exec(c, "select pgq.maint_rotate_tables_step2()");
	pgt_exec(c, "select pgq.ticker('q')");
	snprintf(sql, sizeof(sql),
		 "insert into %s (ev_time, ev_type, ev_data) values (now(), 't', 'late')", tbl);
	pgt_exec(p, sql);
	pgt_exec(p, "commit");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'b')");
	pgt_exec(c, "select pgq.ticker('q')");
	got = pgt_take_all_batches(c, "q", "r");
	ck_assert_msg(strcmp(got, "late,b") == 0,
		      "batches after the rotation: got \"%s\", want \"late,b\"", got);
	free(got);
	free(tbl);
	PQfinish(p);
	PQfinish(c);
}
END_TEST

/* Two sessions tick at the same moment, many times, while a third inserts. */
START_TEST(test_concurrent_tickers)
{
	const char *db = pgt_db_new();
	PGconn *c = conn(db), *t1 = conn(db), *t2 = conn(db);
	char want[32];
	int events = 0;
	/* one event is enough to make a tick due; an idle queue waits an hour */
	pgt_exec(c, "select pgq.create_queue('q'), pgq.create_queue('r')");
	pgt_exec(c,
		 "update pgq.queue set queue_ticker_max_count = 1, queue_ticker_max_lag = '1 hour',"
		 " queue_ticker_idle_period = '1 hour'");
	pgt_exec(
		c,
		"select pgq.insert_event('q', 't', 'first'), pgq.insert_event('q', 't', 'second')");
	sqlt_eq(c, "select pgq.ticker('q')", "2");
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	pgt_exec(c, "create table seen (data text)");
	for (int i = 0; i < 100; i++) {
		PGresult *r;
		pgt_exec(c,
			 "select pgq.insert_event('q', 't', 'e' || nextval('pgq.batch_id_seq'))");
		events++;
		ck_assert_int_eq(PQsendQuery(t1, "select pgq.ticker()"), 1);
		ck_assert_int_eq(
			PQsendQuery(t2, i % 2 ? "select pgq.ticker('q')" : "select pgq.ticker()"),
			1);
		for (int k = 0; k < 2; k++) {
			PGconn *t = k ? t2 : t1;
			while ((r = PQgetResult(t)) != NULL) {
				ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "ticker: %s",
					      PQerrorMessage(t));
				PQclear(r);
			}
		}
		if (i % 7 == 0) {
			char *b = pgt_value(c, "select pgq.next_batch('q', 'c')");
			if (b) {
				char sql[256];
				snprintf(
					sql, sizeof(sql),
					"insert into seen select ev_data from pgq.get_batch_events(%s); select pgq.finish_batch(%s)",
					b, b);
				pgt_exec(c, sql);
				free(b);
			}
		}
	}
	for (;;) {
		char *b = pgt_value(c, "select pgq.next_batch('q', 'c')");
		char sql[256];
		if (!b)
			break;
		snprintf(
			sql, sizeof(sql),
			"insert into seen select ev_data from pgq.get_batch_events(%s); select pgq.finish_batch(%s)",
			b, b);
		pgt_exec(c, sql);
		free(b);
	}
	/* snapshots never go backwards along tick ids, and times never decrease */
	sqlt_eq(c,
		"select count(*) from (select tick_queue, tick_snapshot, tick_time,"
		" lag(tick_snapshot) over w as prev_snap, lag(tick_time) over w as prev_time from pgq.tick"
		" window w as (partition by tick_queue order by tick_id)) x"
		" where txid_snapshot_xmax(tick_snapshot) < txid_snapshot_xmax(prev_snap)"
		"    or txid_snapshot_xmin(tick_snapshot) < txid_snapshot_xmin(prev_snap) or tick_time < prev_time",
		"0");
	/* exactly one tick per round: the second ticker saw the first one's tick */
	sqlt_eq(c, "select count(*) from pgq.tick where tick_queue = 1", "102");
	sqlt_eq(c,
		"select count(*) from (select tick_queue, tick_snapshot::text from pgq.tick"
		" group by 1, 2 having count(*) > 1) d",
		"0");
	snprintf(want, sizeof(want), "%d", events);
	sqlt_eq(c, "select count(*) from seen", want);
	sqlt_eq(c, "select count(distinct data) from seen", want);
	PQfinish(c);
	PQfinish(t1);
	PQfinish(t2);
}
END_TEST

/* conns[0]'s backend waits for a lock held by conns[1]'s. */
static bool blocked_by(void *arg)
{
	PGconn **conns = arg;
	char sql[128];

	snprintf(sql, sizeof(sql), "select (%d = any(pg_blocking_pids(%d)))::int",
		 PQbackendPID(conns[1]), PQbackendPID(conns[0]));
	return pgt_int_db("postgres", sql) == 1;
}

START_TEST(test_ticker_refuses_stale_snapshot)
{
	const char *db = pgt_db_new();
	PGconn *c = conn(db), *rr = conn(db);
	setup_queue(c, "q");
	pgt_exec(rr, "begin isolation level repeatable read; select count(*) from pgq.tick");
	pgt_exec(c, "select pgq.ticker('q')");
	sqlt_err(
		rr, "select pgq.ticker('q')",
		"pgq.ticker: queue q: a newer tick is not visible to this transaction, call the ticker in READ COMMITTED");
	pgt_exec(rr, "rollback");
	/* with a fresh snapshot REPEATABLE READ is fine */
	pgt_exec(rr, "begin isolation level repeatable read");
	sqlt_eq(rr, "select pgq.ticker('q') is not null", "t");
	pgt_exec(rr, "commit");
	/* a second ticker blocked on the lock sees the first one's tick (READ COMMITTED) */
	pgt_exec(c, "begin; select pgq.ticker('q')");
	ck_assert_int_eq(PQsendQuery(rr, "select pgq.ticker('q')"), 1);
	ck_assert(pgt_wait_until(blocked_by, (PGconn *[]){rr, c}, 10000, 10));
	pgt_exec(c, "commit");
	{
		PGresult *r = PQgetResult(rr);
		ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
		PQclear(r);
		while ((r = PQgetResult(rr)) != NULL)
			PQclear(r);
	}
	sqlt_eq(c,
		"select count(*) from (select tick_snapshot::text from pgq.tick group by 1 having count(*) > 1) d",
		"0");
	sqlt_eq(c,
		"select bool_and(txid_snapshot_xmax(b.tick_snapshot) >= txid_snapshot_xmax(a.tick_snapshot))"
		" from pgq.tick a join pgq.tick b on b.tick_queue = a.tick_queue and b.tick_id = a.tick_id + 1",
		"t");
	PQfinish(c);
	PQfinish(rr);
}
END_TEST

START_TEST(test_notify_per_tick)
{
	const char *db = pgt_db_new();
	PGconn *c = conn(db), *l = conn(db);
	char payloads[512], *chan, sql[512], *ids;
	const char *longname = "a very long queue name that does not fit in one channel identifier";
	pgt_exec(c, "select pgq.create_queue('q')");
	chan = pgt_value(c, "select pgq.queue_notify_channel('q')");
	ck_assert_str_eq(chan, "pgq.tick.q");
	pgt_exec(l, "listen \"pgq.tick.q\"");
	/* 1 tick per call, however many events; none from inserts */
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_lag', '0')");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'd') from generate_series(1, 50)");
	pgt_exec(c, "select pgq.ticker()");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'd') from generate_series(1, 50)");
	pgt_exec(c, "select pgq.ticker('q')");
	pgt_exec(c,
		 "begin; select pgq.insert_event('q', 't', 'd'); select pgq.ticker('q'); rollback");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'd') from generate_series(1, 50)");
	pgt_exec(c, "select pgq.set_queue_config('q', 'external_ticker', 'on')");
	pgt_exec(c, "select pgq.ticker('q', 100, now(), 1000)");
	ck_assert_int_eq(sqlt_wait_notifies(l, chan, 3, payloads, sizeof(payloads)), 3);
	ids = pgt_value(
		c,
		"select string_agg(tick_id::text, ',' order by tick_id) from pgq.tick where tick_id > 1");
	ck_assert_str_eq(payloads, ids);
	free(ids);
	/* a long, odd name: hashed channel, first tick from create_queue announced too */
	snprintf(sql, sizeof(sql), "select pgq.queue_notify_channel('%s')", longname);
	free(chan);
	chan = pgt_value(c, sql);
	ck_assert_int_le((int)strlen(chan), 63);
	snprintf(sql, sizeof(sql), "listen \"%s\"", chan);
	pgt_exec(l, sql);
	snprintf(sql, sizeof(sql), "select pgq.create_queue('%s')", longname);
	pgt_exec(c, sql);
	ck_assert_int_eq(sqlt_wait_notifies(l, chan, 1, payloads, sizeof(payloads)), 1);
	ck_assert_str_eq(payloads, "1");
	free(chan);
	PQfinish(c);
	PQfinish(l);
}
END_TEST

START_TEST(test_low_latency)
{
	const char *db = pgt_db_new();
	PGconn *c = conn(db), *l = conn(db);
	char payloads[256];
	pgt_exec(c, "select pgq.create_queue('fast'), pgq.create_queue('slow')");
	pgt_exec(l, "listen \"pgq.wake\"");
	/* idle: the second tick is made at once, after that the back-off holds */
	pgt_exec(c, "select pgq.ticker()");
	sqlt_eq(c, "select pgq.ticker()", "0");
	pgt_exec(c, "select pgq.register_consumer('fast', 'c')");
	/* default queue: no wake-up, no tick before ticker_max_lag */
	pgt_exec(c, "select pgq.insert_event('slow', 't', 'd')");
	pgt_exec(c, "select pgq.insert_event('slow', 't', 'd')");
	sqlt_eq(c, "select pgq.ticker('slow')", NULL);
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 0, NULL, 0), 0);

	pgt_exec(c, "select pgq.set_queue_config('fast', 'low_latency', 'on')");
	/* the very first event of a queue is seen even though the sequence hides it */
	pgt_exec(c, "select pgq.insert_event('fast', 't', 'first')");
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 1, payloads, sizeof(payloads)), 1);
	ck_assert_str_eq(payloads, "fast");
	sqlt_eq(c, "select pgq.ticker('fast') is not null", "t");
	sqlt_eq(c,
		"select string_agg(ev_data, ',') from pgq.get_batch_events(pgq.next_batch('fast', 'c'))",
		"first");
	pgt_exec(c, "select pgq.finish_batch(1)");
	/* many events in one transaction: one wake-up; the tick follows at once */
	pgt_exec(
		c,
		"begin; select pgq.insert_event('fast', 't', 'm' || i) from generate_series(1, 20) i;"
		" select pgq.insert_event('fast', 't', 'x', 'a', 'b', 'c', 'd'); commit");
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 1, payloads, sizeof(payloads)), 1);
	ck_assert_str_eq(payloads, "fast");
	sqlt_eq(c, "select pgq.ticker()", "1");
	sqlt_eq(c, "select count(*) from pgq.get_batch_events(pgq.next_batch('fast', 'c'))", "21");
	pgt_exec(c, "select pgq.finish_batch(2)");
	/* nothing new: no tick */
	sqlt_eq(c, "select pgq.ticker('fast')", NULL);
	/* rolled back: the wake-up is never sent */
	pgt_exec(c, "begin; select pgq.insert_event('fast', 't', 'r'); rollback");
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 0, NULL, 0), 0);
	/* the COPY path wakes too */
	pgt_exec(c, "begin; select pgq.current_event_table('fast'); commit");
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 1, NULL, 0), 1);
	/* off again */
	pgt_exec(c, "select pgq.set_queue_config('fast', 'low_latency', 'off')");
	pgt_exec(c, "select pgq.insert_event('fast', 't', 'd')");
	ck_assert_int_eq(sqlt_wait_notifies(l, "pgq.wake", 0, NULL, 0), 0);
	PQfinish(c);
	PQfinish(l);
}
END_TEST

/*
 * A batch's two ticks are found by their whole key: with a long tick history
 * and statistics that know the table's size but not its columns (a VACUUM
 * without ANALYZE, as autovacuum leaves it), a join of both ticks in one
 * statement was planned to read every earlier tick of the queue for the end
 * tick: milliseconds per batch on a busy low-latency queue. Counted through
 * the transaction's index statistics, so no timing is involved.
 */
START_TEST(test_batch_reads_only_its_ticks)
{
	PGconn *c = conn(pgt_db_new());
	char sql[512], *bid;
	int64_t before, after;

	setup_queue(c, "q");
	pgt_exec(c,
		 "insert into pgq.tick (tick_queue, tick_id, tick_time, tick_snapshot,"
		 " tick_event_seq) select q.queue_id, 1000 + i, now(), txid_current_snapshot(), 0"
		 " from pgq.queue q, generate_series(1, 20000) i where q.queue_name = 'q'");
	pgt_exec(c, "select setval(queue_tick_seq, 21000) from pgq.queue where queue_name = 'q'");
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'x')");
	pgt_exec(c, "select pgq.ticker()");
	pgt_exec(c, "vacuum pgq.tick");
	bid = pgt_value(c, "select pgq.next_batch('q', 'c')");
	ck_assert_ptr_nonnull(bid);
	pgt_exec(c, "begin");
	before = pgt_int(c, "select pg_stat_get_xact_tuples_returned('pgq.tick_pkey'::regclass)");
	snprintf(sql, sizeof(sql),
		 "select (select batch_id from pgq.next_batch_info('q', 'c')),"
		 " (select tick_id from pgq.get_batch_info(%s)),"
		 " (select count(*) from pgq.batch_event_tables(%s)),"
		 " length(pgq.batch_event_sql(%s)),"
		 " (select count(*) from pgq.get_batch_cursor(%s, 'cur', 10))",
		 bid, bid, bid, bid);
	for (int i = 0; i < 3; i++) { /* and again with the plans cached */
		pgt_exec(c, sql);
		pgt_exec(c, "close cur");
	}
	after = pgt_int(c, "select pg_stat_get_xact_tuples_returned('pgq.tick_pkey'::regclass)");
	ck_assert_msg(after - before < 100, "tick index entries read: %lld",
		      (long long)(after - before));
	pgt_exec(c, "commit");
	free(bid);
	PQfinish(c);
}
END_TEST

/*
 * Reading a batch calls what it needs once: the 3-argument get_batch_cursor does
 * not go through the 4-argument one (a wrapper was planned on every call) and
 * the batch query's builder takes the tables from its own statement, not from
 * batch_event_tables. Counted by the server (track_functions).
 */
START_TEST(test_batch_read_calls)
{
	PGconn *c = conn(pgt_db_new());
	char sql[256], *bid;

	setup_queue(c, "q");
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'x' || i) from generate_series(1, 5) i");
	pgt_exec(c, "select pgq.ticker()");
	bid = pgt_value(c, "select pgq.next_batch('q', 'c')");
	ck_assert_ptr_nonnull(bid);
	pgt_exec(c, "set track_functions = 'all'");
	pgt_exec(c, "begin");
	snprintf(sql, sizeof(sql), "select count(*) from pgq.get_batch_cursor(%s, 'cur', 10)", bid);
	ck_assert_int_eq(pgt_int(c, sql), 5);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_stat_xact_user_functions"
				    " where schemaname = 'pgq' and funcid ="
				    " 'pgq.get_batch_cursor(bigint,text,int4)'::regprocedure"),
			 1);
	char *calls = pgt_value(c, "select coalesce(string_agg(funcname || ' ' || calls, ', '"
				   " order by funcname), '') from pg_stat_xact_user_functions"
				   " where schemaname = 'pgq' and (funcid = 'pgq.get_batch_cursor("
				   "bigint,text,int4,text)'::regprocedure or funcname in"
				   " ('batch_event_tables', 'batch_event_sql'))");
	ck_assert_msg(strcmp(calls, "") == 0, "called while reading the batch: %s", calls);
	free(calls);
	pgt_exec(c, "commit");
	free(bid);
	PQfinish(c);
}
END_TEST

/* The wrappers consumers call per batch are PL/pgSQL, whose plans are kept: a
   SQL wrapper with a FROM clause is not inlined and was planned on every call. */
START_TEST(test_batch_wrappers_keep_plans)
{
	PGconn *c = conn(pgt_db_new());
	char *sql_fns = pgt_value(
		c,
		"select coalesce(string_agg(p.oid::regprocedure::text, ', ' order by 1), '')"
		" from pg_proc p join pg_language l on l.oid = p.prolang"
		" where l.lanname = 'sql' and p.oid in ('pgq.next_batch(text,text)'::regprocedure,"
		" 'pgq.next_batch_info(text,text)'::regprocedure,"
		" 'pgq.get_batch_cursor(bigint,text,int4)'::regprocedure)");
	ck_assert_msg(strcmp(sql_fns, "") == 0, "SQL wrappers: %s", sql_fns);
	free(sql_fns);
	/* and they still answer as PgQ's do */
	setup_queue(c, "q");
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.next_batch_info('q', 'c')"
				    " where batch_id is null and cur_tick_id is null"),
			 1);
	ck_assert_ptr_null(pgt_value(c, "select pgq.next_batch('q', 'c')"));
	pgt_exec(c, "select pgq.insert_event('q', 't', 'x')");
	pgt_exec(c, "select pgq.ticker()");
	char *id = pgt_value(c, "select pgq.next_batch('q', 'c')");
	ck_assert_ptr_nonnull(id);
	char sql[200];
	snprintf(sql, sizeof(sql),
		 "select count(*) from pgq.next_batch_info('q', 'c') where batch_id = %s"
		 " and cur_tick_id > prev_tick_id and cur_tick_event_seq >= prev_tick_event_seq",
		 id);
	ck_assert_int_eq(pgt_int(c, sql), 1);
	free(id);
	PQfinish(c);
}
END_TEST

/* Queue creation rewrites the insert paths: two at once are serialised, not broken. */
START_TEST(test_concurrent_create_queue)
{
	const char *db = pgt_db_new();
	PGconn *a = conn(db), *b = conn(db), *p = conn(db);
	PGresult *r;
	pgt_exec(p, "select pgq.create_queue('old')");
	pgt_exec(p, "begin; select pgq.insert_event('old', 't', 'in-flight')");
	pgt_exec(a, "begin; select pgq.create_queue('a')");
	ck_assert_int_eq(PQsendQuery(b, "select pgq.create_queue('b')"), 1);
	/* a producer keeps working meanwhile */
	sqlt_eq(p, "select pgq.insert_event('old', 't', 'during') > 0", "t");
	pgt_exec(a, "commit");
	r = PQgetResult(b);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "create_queue b: %s",
		      PQerrorMessage(b));
	ck_assert_str_eq(PQgetvalue(r, 0, 0), "1");
	PQclear(r);
	while ((r = PQgetResult(b)) != NULL)
		PQclear(r);
	pgt_exec(p, "commit");
	sqlt_eq(p,
		"select pgq.insert_event('a', 't', 'x') || ',' || pgq.insert_event('b', 't', 'y')",
		"1,1");
	sqlt_eq(p,
		"select string_agg(tableoid::regclass || ':' || ev_data, ' ' order by ev_data) from pgq.event_template",
		"pgq.event_1_0:during pgq.event_1_0:in-flight pgq.event_2_0:x pgq.event_3_0:y");
	sqlt_eq(p,
		"select (prosrc like '%event\\_2\\_0%' and prosrc like '%event\\_3\\_0%')::text"
		" from pg_proc where proname = '_insert_static'",
		"true");
	PQfinish(a);
	PQfinish(b);
	PQfinish(p);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sql-batch");
	TCase *tc = pgt_tcase("batch", 90);
	tcase_add_test(tc, test_open_transactions_across_ticks);
	tcase_add_test(tc, test_long_tx_far_below);
	tcase_add_test(tc, test_batch_txid_edges);
	tcase_add_test(tc, test_rotation_under_load);
	tcase_add_test(tc, test_rotation_waits_for_slow_consumer);
	tcase_add_test(tc, test_bulk_table_taken_before_rotation);
	tcase_add_test(tc, test_concurrent_tickers);
	tcase_add_test(tc, test_ticker_refuses_stale_snapshot);
	tcase_add_test(tc, test_notify_per_tick);
	tcase_add_test(tc, test_low_latency);
	tcase_add_test(tc, test_concurrent_create_queue);
	tcase_add_test(tc, test_batch_reads_only_its_ticks);
	tcase_add_test(tc, test_batch_read_calls);
	tcase_add_test(tc, test_batch_wrappers_keep_plans);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
