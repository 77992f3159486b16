/*
 * The pgq API function by function: results and every error text of PgQ 3.5.
 */
#include <stdlib.h>
#include <string.h>

#include "sqltest.h"

static PGconn *fresh(void)
{
	PGconn *c = pgt_connect(pgt_db_new());
	PQsetNoticeProcessor(c, NULL, NULL);
	return c;
}

START_TEST(test_queue_admin)
{
	PGconn *c = fresh();
	sqlt_eq(c, "select pgq.create_queue('q')", "1");
	sqlt_eq(c, "select pgq.create_queue('q')", "0");
	sqlt_err(c, "select pgq.create_queue(null)", "Invalid NULL value");
	/* per-queue objects, tuned storage, and tick 1 */
	sqlt_eq(c,
		"select string_agg(relname, ',' order by relname) from pg_class where relname like 'event_1%'",
		"event_1,event_1_0,event_1_0_txid_idx,event_1_1,event_1_1_txid_idx,event_1_2,"
		"event_1_2_txid_idx,event_1_id_seq,event_1_tick_seq");
	sqlt_eq(c, "select reloptions::text from pg_class where relname = 'event_1_2'",
		"{fillfactor=100,autovacuum_enabled=off}");
	sqlt_eq(c, "select string_agg(tick_id::text, ',') from pgq.tick", "1");
	sqlt_eq(c,
		"select queue_data_pfx || ' ' || queue_event_seq || ' ' || queue_tick_seq from pgq.queue",
		"pgq.event_1 pgq.event_1_id_seq pgq.event_1_tick_seq");

	/* configuration */
	sqlt_eq(c, "select pgq.set_queue_config('q', 'ticker_max_count', '7')", "1");
	sqlt_eq(c, "select pgq.set_queue_config('q', 'queue_ticker_max_lag', '5s')", "1");
	sqlt_eq(c, "select pgq.set_queue_config('q', 'ticker_idle_period', '2 min')", "1");
	sqlt_eq(c, "select pgq.set_queue_config('q', 'rotation_period', '1 hour')", "1");
	sqlt_eq(c, "select pgq.set_queue_config('q', 'ticker_paused', 'true')", "1");
	sqlt_eq(c, "select pgq.set_queue_config('q', 'external_ticker', 'false')", "1");
	sqlt_eq(c, "select pgq.set_queue_config('q', 'low_latency', 'on')", "1");
	sqlt_eq(c,
		"select format('%s %s %s %s %s %s', queue_ticker_max_count, queue_ticker_max_lag, "
		"queue_ticker_idle_period, queue_rotation_period, queue_ticker_paused, queue_low_latency) "
		"from pgq.queue",
		"7 00:00:05 00:02:00 01:00:00 t t");
	sqlt_err(c, "select pgq.set_queue_config('q', 'per_tx_limit', '3')",
		 "cannot change parameter \"per_tx_limits\"");
	sqlt_err(c, "select pgq.set_queue_config('q', 'ntables', '5')",
		 "cannot change parameter \"ntabless\"");
	sqlt_err(c, "select pgq.set_queue_config('nope', 'ticker_max_lag', '1')",
		 "No such event queue");
	sqlt_err(c, "select pgq.set_queue_config(null, 'ticker_max_lag', '1')",
		 "Invalid NULL value");
	sqlt_err(c, "select pgq.set_queue_config('q', null, '1')", "Invalid NULL value");
	sqlt_err(c, "select pgq.set_queue_config('q', 'ticker_max_count', 'x')",
		 "invalid input syntax for type integer: \"x\"");

	/* drop */
	sqlt_eq(c, "select pgq.register_consumer('q', 'c')", "1");
	sqlt_err(c, "select pgq.drop_queue('q')", "cannot drop queue, consumers still attached");
	sqlt_err(c, "select pgq.drop_queue('nope')", "No such event queue");
	sqlt_eq(c, "select pgq.drop_queue(null)", NULL);
	sqlt_eq(c, "select pgq.drop_queue('q', true)", "1");
	sqlt_eq(c, "select count(*) from pg_class where relname like 'event_1%'", "0");
	sqlt_eq(c,
		"select (select count(*) from pgq.queue) + (select count(*) from pgq.tick) + "
		"(select count(*) from pgq.subscription) + (select count(*) from pgq.consumer)",
		"0");
	/* ids are never reused */
	sqlt_eq(c, "select pgq.create_queue('q')", "1");
	sqlt_eq(c, "select queue_id from pgq.queue", "2");
	sqlt_eq(c, "select pgq.drop_queue('q')", "1");
	PQfinish(c);
}
END_TEST

START_TEST(test_produce)
{
	PGconn *c = fresh();
	char *t;
	pgt_exec(c, "select pgq.create_queue('q')");
	sqlt_eq(c, "select pgq.insert_event('q', 'ty', 'da')", "1");
	sqlt_eq(c, "select pgq.insert_event('q', 'ty', 'da', 'e1', 'e2', 'e3', 'e4')", "2");
	sqlt_eq(c,
		"select pgq.insert_event_raw('q', 100, '2020-01-01 00:00+00', 7, 3, 'a', 'b', null, null, null, 'x')",
		"100");
	sqlt_eq(c,
		"select string_agg(format('%s:%s:%s:%s:%s:%s:%s:%s:%s', ev_id, ev_owner, ev_retry, "
		"ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4), ' ' order by ev_id) "
		"from pgq.event_1_0",
		"1:::ty:da:::: 2:::ty:da:e1:e2:e3:e4 100:7:3:a:b::::x");
	sqlt_eq(c, "select ev_time from pgq.event_1 where ev_id = 100", "2020-01-01 00:00:00+00");
	/* the sequence moved on the raw insert with an explicit id */
	sqlt_eq(c, "select pgq.seq_getval('pgq.event_1_id_seq')", "3");
	sqlt_err(
		c,
		"select pgq.insert_event_raw(null, null, null, null, null, 'a', 'b', null, null, null, null)",
		"Queue name must not be NULL");
	sqlt_err(c, "select pgq.insert_event('nope', 'a', 'b')", "No such queue");

	/* disabled queue: refused (after taking an id) unless in replica role */
	pgt_exec(c, "update pgq.queue set queue_disable_insert = true");
	sqlt_err(c, "select pgq.insert_event('q', 'a', 'b')", "Insert into queue disallowed");
	sqlt_err(c, "select pgq.current_event_table('q')", "Writing to queue disabled");
	pgt_exec(c, "set session_replication_role = replica");
	sqlt_eq(c, "select pgq.insert_event('q', 'a', 'b')", "5");
	sqlt_eq(c, "select pgq.current_event_table('q')", "pgq.event_1_0");
	pgt_exec(c, "set session_replication_role = origin");
	pgt_exec(c, "update pgq.queue set queue_disable_insert = false");
	sqlt_err(c, "select pgq.current_event_table('nope')", "Event queue not found");

	/* per-transaction limit */
	pgt_exec(c, "update pgq.queue set queue_per_tx_limit = 2");
	pgt_exec(c, "begin");
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'b')");
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'b')");
	sqlt_err(c, "select pgq.insert_event('q', 'a', 'b')",
		 "Queue 'q' allows max 2 events from one TX");
	pgt_exec(c, "rollback");
	pgt_exec(c, "update pgq.queue set queue_per_tx_limit = 0");
	sqlt_err(c, "select pgq.insert_event('q', 'a', 'b')",
		 "Queue 'q' allows max 0 events from one TX");
	pgt_exec(c, "update pgq.queue set queue_per_tx_limit = null");

	/* bulk: COPY into the current table, ids from the table default */
	pgt_exec(c, "begin");
	t = pgt_value(c, "select pgq.current_event_table('q')");
	ck_assert_str_eq(t, "pgq.event_1_0");
	{
		char sql[256];
		PGresult *r;
		snprintf(sql, sizeof(sql), "copy %s (ev_time, ev_type, ev_data) from stdin", t);
		r = PQexec(c, sql);
		ck_assert_int_eq(PQresultStatus(r), PGRES_COPY_IN);
		PQclear(r);
		const char *rows = "2024-01-01\tbulk\tone\n2024-01-01\tbulk\ttwo\n";
		ck_assert_int_eq(PQputCopyData(c, rows, (int)strlen(rows)), 1);
		ck_assert_int_eq(PQputCopyEnd(c, NULL), 1);
		r = PQgetResult(c);
		ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
		PQclear(r);
		PQclear(PQgetResult(c));
	}
	pgt_exec(c, "commit");
	free(t);
	sqlt_eq(c,
		"select string_agg(ev_data, ',' order by ev_id) from pgq.event_1 where ev_type = 'bulk'",
		"one,two");
	PQfinish(c);
}
END_TEST

/* The generated static insert paths: one per event table, and the dynamic fallback. */
START_TEST(test_insert_paths)
{
	PGconn *c = fresh();
	pgt_exec(c, "select pgq.create_queue('q' || i) from generate_series(1, 7) i");
	pgt_exec(c, "select pgq.drop_queue('q3'), pgq.drop_queue('q6')");
	sqlt_eq(c,
		"select (prosrc like '%event\\_7\\_2%') || ' ' || (prosrc like '%event\\_6\\_%')"
		" from pg_proc where proname = '_insert_static'",
		"true false");
	pgt_exec(c, "update pgq.queue set queue_cur_table = queue_id % 3");
	pgt_exec(c, "select pgq.insert_event(queue_name, 't', queue_name) from pgq.queue");
	pgt_exec(
		c,
		"select pgq.insert_event(queue_name, 't', queue_name, 'x', null, null, null) from pgq.queue");
	pgt_exec(
		c,
		"select pgq.insert_event_raw(queue_name, null, null, null, null, 't', queue_name, 'raw', null, null, null)"
		" from pgq.queue");
	sqlt_eq(c,
		"select string_agg(format('%s=%s', tableoid::regclass, ev_data), ' ' order by ev_data, ev_id)"
		" from pgq.event_template where ev_extra1 is null",
		"pgq.event_1_1=q1 pgq.event_2_2=q2 pgq.event_4_1=q4 pgq.event_5_2=q5 pgq.event_7_1=q7");
	sqlt_eq(c,
		"select count(*) from pgq.event_template t join pgq.queue q on q.queue_name = t.ev_data"
		" where t.tableoid = ('pgq.event_' || q.queue_id || '_' || q.queue_cur_table)::regclass",
		"15");
	/* without the generated paths (as after a restore) the dynamic one takes over */
	pgt_exec(
		c,
		"create or replace function pgq._insert_static(qid integer, cur integer, ev_id bigint,"
		" ev_time timestamptz, ev_owner integer, ev_retry integer, ev_type text, ev_data text, ev_extra1 text,"
		" ev_extra2 text, ev_extra3 text, ev_extra4 text) returns bigint language plpgsql as 'begin return null; end'");
	sqlt_eq(c, "select pgq.insert_event('q7', 't', 'dyn')", "4");
	sqlt_eq(c, "select tableoid::regclass from pgq.event_7 where ev_data = 'dyn'",
		"pgq.event_7_1");
	sqlt_eq(c, "select pgq.upgrade_schema()", "0");
	sqlt_eq(c,
		"select prosrc like '%event\\_7\\_2%' from pg_proc where proname = '_insert_static'",
		"t");
	PQfinish(c);
}
END_TEST

START_TEST(test_subscribe)
{
	PGconn *c = fresh();
	pgt_exec(c, "select pgq.create_queue('q')");
	sqlt_err(c, "select pgq.register_consumer('nope', 'c')", "Event queue not created yet");
	sqlt_eq(c, "select pgq.register_consumer('q', 'c')", "1");
	sqlt_eq(c, "select pgq.register_consumer('q', 'c')", "0");
	sqlt_eq(c, "select sub_last_tick from pgq.subscription", "1");
	sqlt_err(c, "select pgq.register_consumer_at('q', 'c', 999)",
		 "cannot reposition, tick not found: 999");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_lag', '0')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_idle_period', '0')");
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'b')");
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'b')");
	sqlt_eq(c, "select pgq.ticker('q')", "2");
	sqlt_eq(c, "select pgq.register_consumer_at('q', 'd', 2)", "1");
	sqlt_eq(c,
		"select sub_last_tick from pgq.subscription s join pgq.consumer on co_id = sub_consumer where co_name = 'd'",
		"2");
	/* repositioning drops an open batch */
	sqlt_eq(c, "select pgq.next_batch('q', 'c') is not null", "t");
	sqlt_eq(c, "select pgq.register_consumer_at('q', 'c', 2)", "0");
	sqlt_eq(c,
		"select format('%s %s %s', sub_last_tick, sub_batch, sub_next_tick) from pgq.subscription s "
		"join pgq.consumer on co_id = sub_consumer where co_name = 'c'",
		"2  ");
	/* unregister removes its retry events and the consumer name */
	pgt_exec(
		c,
		"select pgq.event_retry_raw('q', 'c', now(), null, now(), 0, 't', 'd', null, null, null, null)");
	sqlt_eq(c, "select pgq.unregister_consumer('q', 'c')", "1");
	sqlt_eq(c, "select pgq.unregister_consumer('q', 'c')", "0");
	sqlt_eq(c, "select pgq.unregister_consumer('nope', 'c')", "0");
	sqlt_eq(c, "select count(*) from pgq.retry_queue", "0");
	sqlt_eq(c, "select string_agg(co_name, ',') from pgq.consumer", "d");
	/* a consumer on two queues keeps its name until the last one goes */
	pgt_exec(c, "select pgq.create_queue('q2')");
	pgt_exec(c, "select pgq.register_consumer('q2', 'd')");
	sqlt_eq(c, "select pgq.unregister_consumer('q', 'd')", "1");
	sqlt_eq(c, "select count(*) from pgq.consumer", "1");
	sqlt_eq(c, "select pgq.unregister_consumer('q2', 'd')", "1");
	sqlt_eq(c, "select count(*) from pgq.consumer", "0");
	/* no ticks at all */
	pgt_exec(c, "delete from pgq.tick where tick_queue = 1");
	sqlt_err(c, "select pgq.register_consumer('q', 'x')",
		 "No ticks for this queue.  Please run ticker on database.");
	PQfinish(c);
}
END_TEST

START_TEST(test_batch_errors)
{
	PGconn *c = fresh();
	pgt_exec(c, "select pgq.create_queue('q')");
	sqlt_err(c, "select pgq.next_batch('q', 'x')", "Not subscriber to queue: q/x");
	sqlt_err(c, "select pgq.next_batch(null, null)", "Not subscriber to queue: NULL/NULL");
	sqlt_err(c, "select * from pgq.next_batch_info('q', 'x')", "Not subscriber to queue: q/x");
	sqlt_err(c, "select * from pgq.get_batch_events(999)", "batch not found");
	sqlt_err(c, "select pgq.batch_event_sql(999)", "batch not found");
	sqlt_err(c, "select * from pgq.batch_event_tables(999)", "Cannot find data for batch 999");
	sqlt_eq(c, "select pgq.finish_batch(999)", "0");
	sqlt_eq(c, "select row(g.*)::text from pgq.get_batch_info(999) g", "(,,,,,,,,)");
	sqlt_err(c, "select pgq.batch_retry(999, 1)", "batch_retry: batch 999 not found");
	sqlt_err(c, "select pgq.event_retry(999, 1, 1)", "event not found");
	sqlt_err(
		c,
		"select pgq.event_retry_raw('q', 'x', now(), 1, now(), 0, 't', 'd', null, null, null, null)",
		"consumer not registered");
	sqlt_err(c, "select pgq.ticker('nope')", "no such queue");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_paused', 'on')");
	sqlt_err(c, "select pgq.ticker('q')", "Ticker has been paused for this queue");
	sqlt_eq(c, "select pgq.ticker()", "0");
	/* as PgQ: no push for a paused queue, but its latest tick (issue 21) */
	sqlt_eq(c, "select pgq.force_tick('q')", "1");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_paused', 'off')");
	sqlt_err(c, "select pgq.ticker('q', 5, now(), 10)",
		 "queue not found or ticker disabled: q");
	pgt_exec(c, "select pgq.set_queue_config('q', 'external_ticker', 'on')");
	sqlt_err(c, "select pgq.ticker('q')", "This queue has external tick source.");
	/* corruption: the consumer's tick vanished */
	pgt_exec(c, "select pgq.set_queue_config('q', 'external_ticker', 'off')");
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	pgt_exec(c, "update pgq.subscription set sub_last_tick = 77");
	sqlt_err(c, "select pgq.next_batch('q', 'c')",
		 "PgQ corruption: Consumer c on queue q does not see tick 77");
	/* a batch whose event is not there */
	pgt_exec(c, "update pgq.subscription set sub_last_tick = 1");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_lag', '0')");
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'b')");
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'b')");
	pgt_exec(c, "select pgq.ticker('q')");
	sqlt_eq(c, "select pgq.next_batch('q', 'c')", "1");
	sqlt_err(c, "select pgq.event_retry(1, 12345, 1)", "event not found");
	sqlt_eq(c, "select pgq.finish_batch(1)", "1");
	sqlt_eq(c, "select pgq.finish_batch(1)", "0");
	PQfinish(c);
}
END_TEST

START_TEST(test_batch_flow)
{
	PGconn *c = fresh();
	pgt_exec(c, "select pgq.create_queue('q')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_lag', '0')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_idle_period', '0')");
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	/* no new tick: no batch, all columns NULL */
	sqlt_eq(c, "select row(b.*)::text from pgq.next_batch_info('q', 'c') b", "(,,,,,,)");
	pgt_exec(c, "select pgq.insert_event('q', 'a', '1')");
	pgt_exec(c, "select pgq.insert_event('q', 'a', '2')");
	sqlt_eq(c, "select pgq.ticker()", "1");
	sqlt_eq(c,
		"select format('%s %s %s %s %s', batch_id, cur_tick_id, prev_tick_id, cur_tick_event_seq, "
		"prev_tick_event_seq) from pgq.next_batch_info('q', 'c')",
		"1 2 1 2 1");
	/* idempotent until finished */
	sqlt_eq(c,
		"select format('%s %s %s', batch_id, cur_tick_id, prev_tick_id) from pgq.next_batch_custom('q', 'c', null, 1, null)",
		"1 2 1");
	sqlt_eq(c, "select pgq.next_batch('q', 'c')", "1");
	sqlt_eq(c, "select string_agg(ev_data, ',' order by ev_id) from pgq.get_batch_events(1)",
		"1,2");
	sqlt_eq(c, "select string_agg(t, ',') from pgq.batch_event_tables(1) t",
		"pgq.event_1_2,pgq.event_1_0");
	sqlt_eq(c,
		"select format('%s %s %s %s %s %s', queue_name, consumer_name, prev_tick_id, tick_id, seq_start, seq_end) "
		"from pgq.get_batch_info(1)",
		"q c 1 2 1 2");
	sqlt_eq(c, "select current_batch from pgq.get_consumer_info('q', 'c')", "1");
	sqlt_eq(c, "select pgq.finish_batch(1)", "1");
	/* a later batch reads only the current table */
	pgt_exec(c, "select pgq.insert_event('q', 'a', '3')");
	pgt_exec(c, "select pgq.ticker('q')");
	sqlt_eq(c, "select pgq.next_batch('q', 'c')", "2");
	sqlt_eq(c, "select string_agg(t, ',') from pgq.batch_event_tables(2) t", "pgq.event_1_0");
	sqlt_eq(c, "select string_agg(ev_data, ',' order by ev_id) from pgq.get_batch_events(2)",
		"3");
	pgt_exec(c, "select pgq.finish_batch(2)");
	/* a lagging consumer advances one tick per batch; custom batches jump */
	for (int i = 0; i < 4; i++) {
		pgt_exec(c, "select pgq.insert_event('q', 'a', 'x')");
		pgt_exec(c, "select pgq.ticker('q')");
	}
	sqlt_eq(c,
		"select format('%s-%s', prev_tick_id, cur_tick_id) from pgq.next_batch_info('q', 'c')",
		"3-4");
	pgt_exec(c, "select pgq.finish_batch(3)");
	sqlt_eq(c,
		"select format('%s-%s', prev_tick_id, cur_tick_id) from pgq.next_batch_custom('q', 'c', null, 2, null)",
		"4-7");
	pgt_exec(c, "select pgq.finish_batch(4)");
	for (int i = 0; i < 2; i++) {
		pgt_exec(c, "select pgq.insert_event('q', 'a', 'x')");
		pgt_exec(c, "select pgq.ticker('q')");
	}
	sqlt_eq(c, "select batch_id from pgq.next_batch_custom('q', 'c', null, 5, null)", NULL);
	sqlt_eq(c, "select batch_id from pgq.next_batch_custom('q', 'c', null, null, '1 hour')",
		NULL);
	sqlt_eq(c, "select batch_id from pgq.next_batch_custom('q', 'c', '1 hour', null, null)",
		NULL);
	/* the latest tick overshoots 2x: the earliest qualifying one is taken */
	sqlt_eq(c,
		"select format('%s-%s', prev_tick_id, cur_tick_id) from pgq.next_batch_custom('q', 'c', null, null, '0')",
		"7-8");
	pgt_exec(c, "select pgq.finish_batch(5)");
	/* find_tick_helper directly */
	sqlt_eq(c, "select next_tick_id from pgq.find_tick_helper(1, 3, '2000-01-01', 3, 1, null)",
		"4");
	sqlt_eq(c, "select next_tick_id from pgq.find_tick_helper(1, 3, '2000-01-01', 3, 3, null)",
		"9");
	sqlt_eq(c, "select next_tick_id from pgq.find_tick_helper(1, 9, now(), 9, 1, null)", NULL);
	PQfinish(c);
}
END_TEST

START_TEST(test_batch_cursor)
{
	PGconn *c = fresh();
	pgt_exec(c, "select pgq.create_queue('q')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_lag', '0')");
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	pgt_exec(c, "select pgq.insert_event('q', 'odd', 'e' || i) from generate_series(1, 10) i");
	pgt_exec(
		c,
		"select pgq.insert_event('q', case when i % 2 = 0 then 'even' else 'odd' end, 'f' || i) "
		"from generate_series(1, 4) i");
	pgt_exec(c, "select pgq.ticker('q')");
	pgt_exec(c, "select pgq.next_batch('q', 'c')");
	pgt_exec(c, "begin");
	sqlt_eq(c, "select string_agg(ev_data, ',') from pgq.get_batch_cursor(1, 'my cur', 3)",
		"e1,e2,e3");
	ck_assert_int_eq(sqlt_ntuples(c, "fetch all from \"my cur\""), 11);
	pgt_exec(c, "close \"my cur\"");
	sqlt_eq(c,
		"select string_agg(ev_data, ',') from pgq.get_batch_cursor(1, 'c2', 1, 'ev_type = ''even''')",
		"f2");
	sqlt_eq(c, "fetch all from c2", "14");
	sqlt_eq(c, "select count(*) from pgq.get_batch_cursor(1, 'c3', 0, null)", "0");
	ck_assert_int_eq(sqlt_ntuples(c, "fetch all from c3"), 14);
	sqlt_eq(c, "select count(*) from pgq.get_batch_cursor(1, null, 5, null)", "0");
	sqlt_eq(c, "select count(*) from pgq.get_batch_cursor(null, 'x', 5)", "0");
	pgt_exec(c, "commit");
	/* outside a transaction block only the quick rows are any use: the cursor ends with the statement */
	sqlt_eq(c, "select count(*) from pgq.get_batch_cursor(1, 'c4', 2)", "2");
	sqlt_err(c, "fetch all from c4", "cursor \"c4\" does not exist");
	PQfinish(c);
}
END_TEST

START_TEST(test_retry)
{
	PGconn *c = fresh();
	pgt_exec(c, "select pgq.create_queue('q')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_lag', '0')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_idle_period', '0')");
	pgt_exec(c, "select pgq.register_consumer('q', 'a')");
	pgt_exec(c, "select pgq.register_consumer('q', 'b')");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'd' || i) from generate_series(1, 5) i");
	pgt_exec(c, "select pgq.ticker('q')");
	sqlt_eq(c, "select pgq.next_batch('q', 'a')", "1");
	sqlt_eq(c, "select pgq.event_retry(1, 2, 0)", "1");
	sqlt_eq(c, "select pgq.event_retry(1, 2, 0)", "0");
	sqlt_eq(c, "select pgq.event_retry(1, 3, now() - interval '1 s')", "1");
	sqlt_eq(c, "select pgq.event_retry(1, 4, 3600)", "1");
	sqlt_eq(c, "select pgq.batch_retry(1, 7200)", "2");
	sqlt_eq(c,
		"select string_agg(format('%s:%s:%s', ev_id, ev_retry, ev_txid is null), ' ' order by ev_id) "
		"from pgq.retry_queue",
		"1:1:t 2:1:t 3:1:t 4:1:t 5:1:t");
	pgt_exec(c, "select pgq.finish_batch(1)");
	/* only the due ones move, keeping id and time */
	sqlt_eq(c, "select pgq.maint_retry_events()", "2");
	sqlt_eq(c, "select pgq.maint_retry_events()", "0");
	sqlt_eq(c,
		"select string_agg(format('%s:%s', ev_id, ev_owner), ' ' order by ev_id) from pgq.event_1 "
		"where ev_owner is not null",
		"2:1 3:1");
	pgt_exec(c, "select pgq.ticker('q')");
	/* owner filtering: a sees the retried events, b only the originals */
	sqlt_eq(c, "select pgq.next_batch('q', 'a')", "2");
	sqlt_eq(c,
		"select string_agg(format('%s:%s', ev_id, ev_retry), ' ' order by ev_id) from pgq.get_batch_events(2)",
		"2:1 3:1");
	pgt_exec(c, "select pgq.finish_batch(2)");
	sqlt_eq(c, "select pgq.next_batch('q', 'b')", "3");
	sqlt_eq(c,
		"select string_agg(ev_id::text, ',' order by ev_id) from pgq.get_batch_events(3)",
		"1,2,3,4,5");
	pgt_exec(c, "select pgq.finish_batch(3)");
	sqlt_eq(c, "select pgq.next_batch('q', 'b')", "4");
	sqlt_eq(c, "select count(*) from pgq.get_batch_events(4)", "0");
	/* raw retry rows */
	sqlt_eq(c,
		"select pgq.event_retry_raw('q', 'b', now(), 77, '2020-02-02', 4, 'rt', 'rd', '1', '2', '3', '4')",
		"77");
	sqlt_eq(c,
		"select pgq.event_retry_raw('q', 'b', now(), null, now(), null, 'rt', 'rd', null, null, null, null) > 5",
		"t");
	sqlt_err(
		c,
		"select pgq.event_retry_raw('q', 'b', now(), 77, now(), 0, 't', 'd', null, null, null, null)",
		"duplicate key value violates unique constraint \"rq_pkey\"");
	sqlt_eq(c, "select pgq.maint_retry_events()", "2");
	sqlt_eq(c,
		"select format('%s %s %s %s', ev_retry, ev_time, ev_type, ev_extra4) from pgq.event_1 where ev_id = 77",
		"4 2020-02-02 00:00:00+00 rt 4");
	PQfinish(c);
}
END_TEST

START_TEST(test_ticker_rules)
{
	PGconn *c = fresh();
	pgt_exec(c, "select pgq.create_queue('q')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_lag', '1 hour')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_idle_period', '1 hour')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_count', '3')");
	/* idle: the second tick comes at once, then the back-off holds */
	sqlt_eq(c, "select pgq.ticker('q')", "2");
	sqlt_eq(c, "select pgq.ticker('q')", NULL);
	/* a call that makes no tick writes nothing: no transaction id is even assigned */
	pgt_exec(c, "begin");
	sqlt_eq(c, "select pgq.ticker()", "0");
	sqlt_eq(c, "select txid_current_if_assigned() is null", "t");
	pgt_exec(c, "rollback");
	/* the first event is invisible to the sequence test (last_value stays 1) */
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'b')");
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'b')");
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'b')");
	sqlt_eq(c, "select pgq.ticker('q')", NULL);
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'b')");
	sqlt_eq(c, "select pgq.ticker('q')", "3");
	sqlt_eq(c, "select tick_event_seq from pgq.tick where tick_id = 3", "4");
	/* failed and rolled back inserts still count as activity */
	pgt_exec(c, "begin");
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'b') from generate_series(1, 3)");
	pgt_exec(c, "rollback");
	sqlt_eq(c, "select pgq.ticker('q')", "4");
	/* force_tick returns the current tick and makes the next ticker call tick */
	sqlt_eq(c, "select pgq.force_tick('q')", "4");
	sqlt_eq(c, "select pgq.ticker()", "1");
	sqlt_eq(c, "select max(tick_id) from pgq.tick", "5");
	/* lag-only and idle rules with zero lag */
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_lag', '0')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_idle_period', '0')");
	sqlt_eq(c, "select pgq.ticker('q')", "6");
	sqlt_eq(c, "select pgq.ticker('q')", "7");
	/* external ticks set the sequences forward */
	pgt_exec(c, "select pgq.set_queue_config('q', 'external_ticker', 'on')");
	sqlt_eq(c, "select pgq.ticker('q', 100, '2021-01-01', 5000)", "100");
	sqlt_eq(c,
		"select pgq.seq_getval('pgq.event_1_tick_seq') || ' ' || pgq.seq_getval('pgq.event_1_id_seq')",
		"100 5000");
	sqlt_eq(c, "select tick_time from pgq.tick where tick_id = 100", "2021-01-01 00:00:00+00");
	sqlt_eq(c, "select pgq.ticker()", "0");
	PQfinish(c);
}
END_TEST

/*
 * pgq.ticker()'s pre-filter against pgq._ticker() itself: queues in each state
 * the rules tell apart; every queue _ticker() ticks (each tried in a rolled
 * back subtransaction) must be a candidate, and the idle ones must not be.
 */
START_TEST(test_ticker_candidates)
{
	PGconn *c = fresh();
	pgt_exec(c, "select pgq.create_queue('q' || i) from generate_series(1, 12) i");
	pgt_exec(c, "select pgq.set_queue_config('q' || i, 'ticker_max_lag', '1 hour')"
		    " from generate_series(2, 12) i where i <> 7");
	/* q1: created, one tick: the second comes at once */
	/* q2: two ticks just made, idle */
	pgt_exec(c, "select pgq.ticker('q2')");
	/* q3: idle for two hours */
	pgt_exec(c, "select pgq.ticker('q3')");
	pgt_exec(c, "update pgq.tick set tick_time = tick_time - interval '2 hours'"
		    " where tick_queue = (select queue_id from pgq.queue where queue_name = 'q3')");
	/* q4: idle, within twice its last gap (ticks 100 s and 10 s ago) */
	pgt_exec(c, "select pgq.set_queue_config('q4', 'ticker_max_lag', '10 s')");
	pgt_exec(c, "select pgq.ticker('q4')");
	pgt_exec(c, "update pgq.tick t set tick_time = now() - case when tick_id = 1 then"
		    " interval '100 s' else interval '10 s' end from pgq.queue q"
		    " where q.queue_name = 'q4' and t.tick_queue = q.queue_id");
	/* q5: events below ticker_max_count; q6: as many as it */
	pgt_exec(c, "select pgq.set_queue_config('q5', 'ticker_max_count', '100')");
	pgt_exec(c, "select pgq.set_queue_config('q6', 'ticker_max_count', '2')");
	pgt_exec(c, "select pgq.ticker('q5'), pgq.ticker('q6')");
	pgt_exec(c, "select pgq.insert_event(q, 't', 'd') from (values ('q5'), ('q6')) v(q),"
		    " generate_series(1, 4)");
	/* q7: events and ticker_max_lag 0 */
	pgt_exec(c, "select pgq.set_queue_config('q7', 'ticker_max_lag', '0')");
	pgt_exec(c, "select pgq.ticker('q7')");
	pgt_exec(c, "select pgq.insert_event('q7', 't', 'd') from generate_series(1, 2)");
	/* q8: low_latency with events, no consumer (no reader: not due); q9: its consumer
	   three ticks behind */
	pgt_exec(c, "select pgq.set_queue_config(q, 'low_latency', 'on') from"
		    " (values ('q8'), ('q9'), ('q10')) v(q)");
	pgt_exec(c, "select pgq.ticker('q8'), pgq.register_consumer('q9', 'c')");
	pgt_exec(c, "select pgq.force_tick('q9'), pgq.ticker('q9')");
	pgt_exec(c, "select pgq.force_tick('q9'), pgq.ticker('q9')");
	pgt_exec(c, "select pgq.force_tick('q9'), pgq.ticker('q9')");
	pgt_exec(c, "select pgq.insert_event(q, 't', 'd') from (values ('q8'), ('q9')) v(q),"
		    " generate_series(1, 2)");
	/* q10: low_latency, idle; q11: paused; q12: its sequence behind its last tick */
	pgt_exec(c, "select pgq.ticker('q10'), pgq.ticker('q11'), pgq.ticker('q12')");
	pgt_exec(c, "select pgq.set_queue_config('q11', 'ticker_paused', 'on')");
	pgt_exec(c, "select pgq.insert_event('q11', 't', 'd') from generate_series(1, 600)");
	pgt_exec(c, "select pgq.insert_event('q12', 't', 'd') from generate_series(1, 2)");
	pgt_exec(c, "update pgq.tick t set tick_event_seq = 1000 from pgq.queue q"
		    " where q.queue_name = 'q12' and t.tick_queue = q.queue_id");

	pgt_exec(c, "do $$ declare q text; due text[] := '{}'; begin"
		    " for q in select queue_name from pgq.queue order by queue_name loop"
		    "  begin"
		    "   if pgq._ticker(q, false) is not null then due := due || q; end if;"
		    "   raise sqlstate 'P0099';"
		    "  exception when sqlstate 'P0099' then null;"
		    "  end;"
		    " end loop;"
		    " perform set_config('pgqtest.due', array_to_string(due, ' '), false); end $$");
	sqlt_eq(c, "select current_setting('pgqtest.due')", "q1 q3 q6 q7");
	/* the same set, and where _ticker() decides with more than the filter reads */
	sqlt_eq(c, "select string_agg(c, ' ' order by c) from pgq._ticker_candidates() c",
		"q1 q12 q3 q6 q7 q8 q9");
	sqlt_eq(c, "select count(*) from pgq.tick", "25");
	sqlt_eq(c, "select pgq.ticker()", "4");
	PQfinish(c);
}
END_TEST

START_TEST(test_maint_and_info)
{
	PGconn *c = fresh();
	pgt_exec(c, "select pgq.create_queue('q')");
	pgt_exec(c, "select pgq.create_queue('r')");
	sqlt_eq(c, "select count(*) from pgq.maint_operations()", "0");
	pgt_exec(
		c,
		"update pgq.queue set queue_rotation_period = '0', queue_switch_time = now() - interval '1 s' where queue_name = 'q'");
	pgt_exec(
		c,
		"update pgq.queue set queue_extra_maint = '{my.fn,other.fn}' where queue_name = 'r'");
	sqlt_eq(c,
		"select string_agg(format('%s(%s)', func_name, func_arg), ' ') from pgq.maint_operations()",
		"pgq.maint_rotate_tables_step1(q) pgq.maint_rotate_tables_step2() my.fn(r) other.fn(r)");
	sqlt_eq(c, "select pgq.maint_rotate_tables_step1('q')", "0");
	sqlt_eq(c,
		"select queue_cur_table || ' ' || (queue_switch_step2 is null) from pgq.queue where queue_name = 'q'",
		"1 true");
	/* step2 pending: listed even though no rotation is due */
	sqlt_eq(c,
		"select string_agg(func_name, ' ') from pgq.maint_operations() where func_arg is null",
		"pgq.maint_rotate_tables_step2");
	sqlt_eq(c, "select pgq.maint_rotate_tables_step2()", "0");
	sqlt_eq(c, "select count(*) from pgq.queue where queue_switch_step2 is null", "0");
	sqlt_eq(c, "select pgq.maint_rotate_tables_step1('r')", "0");
	sqlt_eq(c, "select queue_cur_table from pgq.queue where queue_name = 'r'", "0");
	/* the server runs autovacuum: nothing to vacuum by hand */
	sqlt_eq(c, "select count(*) from pgq.maint_tables_to_vacuum()", "0");

	/* information */
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	pgt_exec(c, "select pgq.register_consumer('r', 'c')");
	pgt_exec(c, "select pgq.register_consumer('r', 'd')");
	sqlt_eq(c,
		"select string_agg(queue_name || '/' || consumer_name, ' ') from pgq.get_consumer_info()",
		"q/c r/c r/d");
	sqlt_eq(c, "select string_agg(consumer_name, ' ') from pgq.get_consumer_info('r')", "c d");
	sqlt_eq(c, "select string_agg(queue_name, ' ') from pgq.get_consumer_info(null, 'c')",
		"q r");
	sqlt_eq(c,
		"select format('%s %s %s', last_tick, current_batch, pending_events) from pgq.get_consumer_info('r', 'd')",
		"1  0");
	sqlt_eq(c, "select string_agg(queue_name, ' ') from pgq.get_queue_info()", "q r");
	pgt_exec(c, "select pgq.insert_event('r', 'a', 'b') from generate_series(1, 3)");
	sqlt_eq(c,
		"select format('%s %s %s %s %s', queue_ntables, queue_cur_table, queue_ticker_max_count, ev_new, last_tick_id) "
		"from pgq.get_queue_info('r')",
		"3 0 500 2 1");
	sqlt_eq(c, "select count(*) from pgq.get_queue_info('nope')", "0");
	sqlt_eq(c, "select pgq.version()", "3.5");
	sqlt_eq(c, "select pgq.pgqd_ev_version() ~ '^[0-9]+\\.[0-9]+'", "t");
	PQfinish(c);
}
END_TEST

START_TEST(test_utils)
{
	PGconn *c = fresh();
	sqlt_eq(c, "select pgq.quote_fqname('a.b')", "a.b");
	sqlt_eq(c, "select pgq.quote_fqname('tbl')", "public.tbl");
	sqlt_eq(c, "select pgq.quote_fqname('My\"S.x.y')", "\"My\"\"S\".\"x.y\"");
	sqlt_eq(c, "select pgq.quote_fqname(null)", NULL);
	pgt_exec(c, "create sequence public.s1");
	sqlt_eq(c, "select pgq.seq_getval('s1')", "1");
	sqlt_eq(c, "select pgq.seq_setval('public.s1', 10)", "10");
	sqlt_eq(c, "select pgq.seq_setval('s1', 5)", "10");
	sqlt_eq(c, "select nextval('s1')", "11");
	sqlt_err(c, "select pgq.grant_perms('nope')", "Queue not found");
	sqlt_eq(c, "select pgq.tune_storage('nope')", "0");
	sqlt_eq(c, "select pgq.upgrade_schema()", "0");
	pgt_exec(c, "select pgq.create_queue('q')");
	sqlt_eq(c, "select pgq.grant_perms('q')", "1");
	sqlt_eq(c, "select pgq.tune_storage('q')", "1");
	pgt_exec(c, "create table public.src (x int); create table public.dst (x int)");
	pgt_exec(
		c,
		"grant select on public.src to pgq_reader; grant insert on public.src to pgq_writer with grant option");
	sqlt_eq(c, "select pgq._grant_perms_from('public', 'src', 'public', 'dst')", "1");
	sqlt_eq(c,
		"select has_table_privilege('pgq_reader', 'public.dst', 'select') and "
		"has_table_privilege('pgq_writer', 'public.dst', 'insert with grant option')",
		"t");
	/* channel names */
	sqlt_eq(c, "select pgq.queue_notify_channel('orders')", "pgq.tick.orders");
	sqlt_eq(c,
		"select pgq.queue_notify_channel(repeat('x', 54)) = 'pgq.tick.' || repeat('x', 54)",
		"t");
	sqlt_eq(c,
		"select pgq.queue_notify_channel(repeat('x', 55)) = 'pgq.tickh.' || md5(repeat('x', 55))",
		"t");
	sqlt_eq(c, "select pgq.ticker_wake_channel()", "pgq.wake");
	sqlt_eq(c, "select pgq.queue_notify_channel(null)", NULL);
	sqlt_eq(c,
		"select pgq.quote_fqname('.y') || ' ' || pgq.quote_fqname('') || ' ' ||"
		" pgq.quote_fqname('a.') || ' ' || pgq.quote_fqname(e'a\\nb')",
		"\"\".y public.\"\" a.\"\" public.\"a\nb\"");
	/* inlined where they are called (each tick calls both): a call the planner does
	   not inline parses the function's body again in every transaction */
	pgt_exec(c,
		 "do $$ declare line text; begin for line in explain (verbose)"
		 " select pgq.quote_fqname(queue_event_seq), pgq.queue_notify_channel(queue_name)"
		 " from pgq.queue loop if line ~ 'quote_fqname|queue_notify_channel' then"
		 " raise exception 'not inlined: %', line; end if; end loop; end $$");
	PQfinish(c);
}
END_TEST

static const char *g_vacdb;
static bool autovacuum_off(void *arg)
{
	(void)arg;
	return pgt_int_db(g_vacdb, "select (current_setting('autovacuum') = 'off')::int") == 1;
}

/* With autovacuum off the maintenance list names the small hot tables to vacuum. */
START_TEST(test_tables_to_vacuum_without_autovacuum)
{
	PGconn *c = fresh();
	g_vacdb = PQdb(c);
	pgt_exec(c, "alter system set autovacuum = off");
	pgt_exec(c, "select pg_reload_conf()");
	ck_assert(pgt_wait_until(autovacuum_off, NULL, 10000, 50));
	PQfinish(c);
	c = fresh();
	sqlt_eq(c,
		"select string_agg(t, ' ') from pgq.maint_tables_to_vacuum() t where t like 'pgq.%'",
		"pgq.subscription pgq.consumer pgq.queue pgq.tick pgq.retry_queue");
	sqlt_eq(c,
		"select string_agg(func_arg, ' ') = (select string_agg(t, ' ') from pgq.maint_tables_to_vacuum() t)"
		" from pgq.maint_operations() where func_name = 'vacuum'",
		"t");
	pgt_exec(c, "alter system reset autovacuum");
	pgt_exec(c, "select pg_reload_conf()");
	PQfinish(c);
}
END_TEST

static void err_prefix(PGconn *c, const char *sql, const char *prefix)
{
	char *e = pgt_error(c, sql);
	ck_assert_msg(e && strncmp(e, prefix, strlen(prefix)) == 0,
		      "%s: got \"%s\", want \"%s...\"", sql, e ? e : "(none)", prefix);
	free(e);
}

START_TEST(test_rotation_paths_and_sanity_errors)
{
	PGconn *c = fresh();
	pgt_exec(c,
		 "select pgq.create_queue('q'), pgq.set_queue_config('q', 'ticker_max_lag', '0'),"
		 " pgq.set_queue_config('q', 'ticker_idle_period', '0')");
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'one')");
	pgt_exec(c, "select pgq.ticker('q')");
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'two')");
	pgt_exec(c, "select pgq.ticker('q')");
	pgt_exec(c, "select pgq.register_consumer_at('q', 'c', 2)");
	pgt_exec(c, "update pgq.queue set queue_rotation_period = '0'");
	sqlt_eq(c, "select pgq.maint_rotate_tables_step1('q')", "0");
	sqlt_eq(c, "select queue_cur_table from pgq.queue", "1");
	/* the batch was written entirely before the rotation: previous table only */
	sqlt_eq(c, "select pgq.next_batch('q', 'c')", "1");
	sqlt_eq(c, "select string_agg(t, ',') from pgq.batch_event_tables(1) t", "pgq.event_1_0");
	sqlt_eq(c, "select string_agg(ev_data, ',') from pgq.get_batch_events(1)", "two");
	pgt_exec(c, "select pgq.finish_batch(1)");
	/* between step1 and step2 a later batch reads both tables */
	pgt_exec(c, "select pgq.insert_event('q', 'a', 'three')");
	pgt_exec(c, "select pgq.ticker('q')");
	sqlt_eq(c, "select pgq.next_batch('q', 'c')", "2");
	sqlt_eq(c, "select string_agg(t, ',') from pgq.batch_event_tables(2) t",
		"pgq.event_1_0,pgq.event_1_1");
	sqlt_eq(c, "select string_agg(ev_data, ',') from pgq.get_batch_events(2)", "three");
	pgt_exec(c, "select pgq.finish_batch(2)");
	pgt_exec(c, "select pgq.maint_rotate_tables_step2()");

	/* sanity errors */
	pgt_exec(c, "update pgq.subscription set sub_last_tick = 999");
	sqlt_err(c, "select pgq.maint_rotate_tables_step1('q')",
		 "queue q maint failure: tick 999 not found");
	pgt_exec(c, "update pgq.queue set queue_switch_step1 = 9000000000000000");
	err_prefix(c, "select pgq.maint_rotate_tables_step1('q')",
		   "queue q maint failure: step1=9000000000000000, current=");
	pgt_exec(c, "update pgq.tick set tick_snapshot = '9000000000000000:9000000000000000:'"
		    " where tick_id = (select max(tick_id) from pgq.tick)");
	err_prefix(
		c, "select pgq.ticker('q')",
		"Invalid PgQ state: old xmin=9000000000000000, old xmax=9000000000000000, cur txid=");
	PQfinish(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sql-api");
	TCase *tc = pgt_tcase("api", 60);
	tcase_add_test(tc, test_queue_admin);
	tcase_add_test(tc, test_produce);
	tcase_add_test(tc, test_insert_paths);
	tcase_add_test(tc, test_subscribe);
	tcase_add_test(tc, test_batch_errors);
	tcase_add_test(tc, test_batch_flow);
	tcase_add_test(tc, test_batch_cursor);
	tcase_add_test(tc, test_retry);
	tcase_add_test(tc, test_ticker_rules);
	tcase_add_test(tc, test_ticker_candidates);
	tcase_add_test(tc, test_maint_and_info);
	tcase_add_test(tc, test_utils);
	tcase_add_test(tc, test_rotation_paths_and_sanity_errors);
	tcase_add_test(tc, test_tables_to_vacuum_without_autovacuum);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
