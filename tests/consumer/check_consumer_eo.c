/*
 * Exactly-once's record in the target (pgq_ext) is keyed by queue and
 * consumer: one consumer name on two queues writing into one target applies
 * nothing twice, and a batch recorded under the pre-queue key (an older
 * libpgqev, python3-pgq's RemoteConsumer) just before an upgrade is not
 * applied again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "constest.h"

static void setup(void)
{
	cs_setup();
}

static void teardown(void)
{
	cs_teardown();
}

static const char *tgt_db;

/* hook_arg: the queue name, written next to each value */
static PgqevVerdict apply_tagged(Rec *r, PgqevBatch *b)
{
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		const char *p[2] = {r->hook_arg, pgqev_event_data(pgqev_batch_event(b, i))};
		ck_assert_int_eq(pgqev_batch_target_exec(
					 b, "insert into sink values ($1, $2::bigint)", 2, p),
				 0);
	}
	return PGQEV_DONE;
}

static void start_eo(Rec *r, const char *src, const char *q, const char *consumer)
{
	static char tci[512];
	memset(r, 0, sizeof(*r));
	r->name = q;
	r->hook = apply_tagged;
	r->hook_arg = (void *)q;
	r->quiet = true;
	PgqevConsumerConfig cfg;
	cs_config(&cfg, r, src, q, consumer);
	cs_config_target(&cfg, tci, sizeof(tci), tgt_db);
	cfg.fail_delay = 50000; /* 50 ms */
	cs_start(r, &cfg);
}

static bool failed_finish(void *arg)
{
	Rec *r = arg;
	return r->errors[PGQEV_ERR_SQL] >= 1 && pgt_int_db(tgt_db, "select count(*) from sink") > 0;
}

static int64_t sink_count(const char *q, bool distinct)
{
	char sql[160];
	snprintf(sql, sizeof(sql), "select count(%sv) from sink where q = '%s'",
		 distinct ? "distinct " : "", q);
	return pgt_int_db(tgt_db, sql);
}

/*
 * The fault test's duplicate, made deterministic: consumer "c" on qa applies a
 * batch into the target and fails at the source finish; "c" on qb then
 * applies and records a batch of its own into the same target; qa's batch,
 * redelivered, must be recognised. Keyed by consumer alone (before the fix),
 * qb's record replaced qa's and the batch was applied twice.
 */
START_TEST(test_one_name_two_queues_one_target)
{
	static char src[CS_DB_LEN], tgt[CS_DB_LEN];
	cs_eo_dbs(src, tgt, "qa", "q text, v bigint");
	tgt_db = tgt;
	PGconn *s = pgt_connect(src);
	pgt_exec(s,
		 "select pgq.create_queue('qb'), pgq.set_queue_config('qb', 'ticker_max_lag', '0'),"
		 " pgq.set_queue_config('qb', 'ticker_idle_period', '0')");
	pgt_exec(s, "create table boom_armed (on_queue text)");
	cs_on_finish(src, "boom",
		     "exists (select 1 from public.boom_armed a join pgq.queue q"
		     " on q.queue_name = a.on_queue where q.queue_id = new.sub_queue)",
		     "raise exception 'injected failure at finish'");
	pgt_exec(s, "select pgq.register_consumer('qa', 'c'), pgq.register_consumer('qb', 'c')");
	pgt_exec(s, "insert into boom_armed values ('qa')");

	/* 1: qa's batch reaches the target, its finish on the source fails */
	Rec ra;
	start_eo(&ra, src, "qa", "c");
	cs_produce(src, "qa", 0, 10);
	cs_tick(src);
	ck_assert(cs_run_until(failed_finish, &ra, 30000));
	rec_free(&ra);
	ck_assert_int_eq(sink_count("qa", false), 10);
	ck_assert_int_eq(pgt_int(s, "select count(*) from pgq.subscription s join pgq.queue q"
				    " on q.queue_id = s.sub_queue"
				    " where q.queue_name = 'qa' and s.sub_batch is not null"),
			 1);
	pgt_exec(s, "delete from boom_armed");

	/* 2: the same name on qb records a batch of its own in the same target */
	Rec rb;
	start_eo(&rb, src, "qb", "c");
	cs_produce(src, "qb", 100, 110);
	cs_tick(src);
	Rec *rbs[1] = {&rb};
	ck_assert(cs_run_until_drained(src, "qb", rbs, 1, 30000));
	ck_assert_int_eq(sink_count("qb", false), 10);

	/* 3: qa's open batch is delivered again and recognised */
	Rec ra2;
	start_eo(&ra2, src, "qa", "c");
	Rec *ras[2] = {&ra2, &rb};
	ck_assert(cs_run_until_drained(src, "qa", ras, 2, 30000));
	ck_assert_int_eq(ra2.n, 0); /* the handler never saw the batch again */
	ck_assert_int_eq(sink_count("qa", false), 10);
	ck_assert_int_eq(sink_count("qa", true), 10);
	ck_assert_int_eq(sink_count("qb", false), 10);
	/* one record per queue, none under the pre-queue key */
	ck_assert_int_eq(pgt_int_db(tgt, "select count(*) from pgq_ext.completed_batch"
					 " where consumer_id = 'c'"
					 " and subconsumer_id in ('\"qa\"', '\"qb\"')"),
			 2);
	ck_assert_int_eq(pgt_int_db(tgt, "select count(*) from pgq_ext.completed_batch"
					 " where subconsumer_id = ''"),
			 0);
	rec_free(&ra2);
	rec_free(&rb);
	PQfinish(s);
}
END_TEST

/*
 * Upgrade: the batch an older libpgqev (or python3-pgq's RemoteConsumer,
 * pgq_ext.set_batch_done(consumer, batch)) applied and recorded just before
 * it stopped, with the source batch still open, is finished without being
 * applied again. Once the new key is written the old one is no longer read:
 * an old record naming the next batch does not make it look done.
 */
START_TEST(test_upgrade_reads_the_old_key_once)
{
	static char src[CS_DB_LEN], tgt[CS_DB_LEN];
	cs_eo_dbs(src, tgt, "qa", "q text, v bigint");
	tgt_db = tgt;
	PGconn *s = pgt_connect(src);
	pgt_exec(s, "select pgq.register_consumer('qa', 'c')");
	cs_produce(src, "qa", 0, 10);
	cs_tick(src);

	/* the old consumer: batch applied and recorded under (c, ''), not finished */
	int64_t batch = pgt_int(s, "select pgq.next_batch('qa', 'c')");
	ck_assert_int_gt(batch, 0);
	char sql[256];
	snprintf(sql, sizeof(sql),
		 "select string_agg(ev_data, ',' order by ev_id) from pgq.get_batch_events(%lld)",
		 (long long)batch);
	char *vals = pgt_value(s, sql);
	ck_assert_str_eq(vals, "0,1,2,3,4,5,6,7,8,9");
	char apply[512];
	snprintf(apply, sizeof(apply),
		 "begin; insert into sink select 'qa', unnest('{%s}'::bigint[]);"
		 " select pgq_ext.set_batch_done('c', %lld); commit",
		 vals, (long long)batch);
	free(vals);
	pgt_exec_db(tgt, apply);

	/* the new library takes over: the open batch is recognised */
	Rec r;
	start_eo(&r, src, "qa", "c");
	Rec *rs[1] = {&r};
	ck_assert(cs_run_until_drained(src, "qa", rs, 1, 30000));
	ck_assert_int_eq(r.n, 0);
	ck_assert_int_eq(sink_count("qa", false), 10);

	/* a batch of its own, recorded under the new key */
	cs_produce(src, "qa", 10, 20);
	cs_tick(src);
	ck_assert(cs_run_until_drained(src, "qa", rs, 1, 30000));
	ck_assert_int_eq(r.n, 10);
	ck_assert_int_eq(pgt_int_db(tgt, "select count(*) from pgq_ext.completed_batch"
					 " where consumer_id = 'c' and subconsumer_id = '\"qa\"'"),
			 1);

	/* the old key now names the next batch: it must not count any more */
	int64_t next = pgt_int(s, "select last_value + 1 from pgq.batch_id_seq");
	snprintf(sql, sizeof(sql), "select pgq_ext.set_batch_done('c', %lld)", (long long)next);
	pgt_exec_db(tgt, sql);
	cs_produce(src, "qa", 20, 30);
	cs_tick(src);
	ck_assert(cs_run_until_drained(src, "qa", rs, 1, 30000));
	ck_assert_int_eq(r.last_batch, next);
	ck_assert_int_eq(r.n, 20);
	ck_assert_int_eq(sink_count("qa", false), 30);
	ck_assert_int_eq(sink_count("qa", true), 30);
	rec_free(&r);
	PQfinish(s);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("consumer-eo");
	TCase *tc = pgt_tcase("consumer-eo", 120);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_one_name_two_queues_one_target);
	tcase_add_test(tc, test_upgrade_reads_the_old_key_once);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
