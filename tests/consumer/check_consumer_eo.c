/*
 * Exactly-once's record in the target (pgq_ext) is keyed by queue and
 * consumer: one consumer name on two queues writing into one target applies
 * nothing twice, and a batch recorded under the pre-queue key (an older
 * libpgqev, python3-pgq's RemoteConsumer) just before an upgrade is not
 * applied again. A handler's statement in the target transaction
 * (pgqev_target_query) sees the batch's writes, and its failure fails the
 * batch.
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

/* The handler's reads on the target (pgqev_target_query), per delivery. */
typedef struct TqCtx {
	int deliveries;
	int done;          /* on_done calls */
	int failed;        /* ... with an error */
	bool res_on_error; /* the failing one carried the server's error result */
	char seen[32];     /* what the last successful read returned */
	char error[256];
} TqCtx;

static void tq_done(PgqevTarget *t, const PGresult *res, const char *error, void *arg)
{
	TqCtx *x = arg;
	x->done++;
	if (error) {
		x->failed++;
		snprintf(x->error, sizeof(x->error), "%s", error);
		x->res_on_error = res && PQresultStatus(res) == PGRES_FATAL_ERROR;
	} else {
		snprintf(x->seen, sizeof(x->seen), "%s", PQgetvalue(res, 0, 0));
	}
}

/* Write the chunk, then read in the same transaction: the first delivery's
   read fails (division by zero), later ones count the batch's own rows. */
static PgqevVerdict apply_and_read(Rec *r, PgqevBatch *b)
{
	TqCtx *x = r->hook_arg;
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		const char *p[1] = {pgqev_event_data(pgqev_batch_event(b, i))};
		ck_assert_int_eq(pgqev_batch_target_exec(
					 b, "insert into sink values ('qa', $1::bigint)", 1, p),
				 0);
	}
	PgqevTarget *t = pgqev_batch_target(b);
	ck_assert_ptr_nonnull(t);
	ck_assert_ptr_nonnull(pgqev_target_pgconn(t));
	ck_assert_msg(strstr(pgqev_target_label(t), "/target") != NULL, "%s",
		      pgqev_target_label(t));
	const char *sql = x->deliveries++ == 0 ? "select 1 / (count(*) - count(*)) from sink"
					       : "select count(*) from sink where q = 'qa'";
	ck_assert_int_eq(pgqev_target_query(t, sql, 0, NULL, tq_done, x), 0);
	return PGQEV_DONE;
}

static bool tq_finished(void *arg)
{
	Rec *r = arg;
	return ((TqCtx *)r->hook_arg)->deliveries >= 2 && pgqev_consumer_batches(r->c) >= 1;
}

START_TEST(test_target_query_reads_and_fails_the_batch)
{
	static char src[64], tgt[64];
	snprintf(src, sizeof(src), "%s", cs_db_with_queue("qa"));
	snprintf(tgt, sizeof(tgt), "%s", pgt_db_new());
	tgt_db = tgt;
	pgt_exec_db(tgt, "create table sink (q text, v bigint)");
	PGconn *s = pgt_connect(src);
	pgt_exec(s, "select pgq.register_consumer('qa', 'c')");
	PQfinish(s);
	cs_produce(src, "qa", 0, 10);
	cs_tick(src);

	TqCtx x;
	memset(&x, 0, sizeof(x));
	Rec r;
	start_eo(&r, src, "qa", "c");
	r.hook = apply_and_read;
	r.hook_arg = &x;
	ck_assert(cs_run_until(tq_finished, &r, 30000));
	/* the first delivery: the read failed, so did the batch (rolled back) */
	ck_assert_int_eq(x.failed, 1);
	ck_assert(x.res_on_error);
	ck_assert_msg(strstr(x.error, "division by zero") != NULL, "%s", x.error);
	ck_assert_int_ge(r.errors[PGQEV_ERR_TARGET] + r.errors[PGQEV_ERR_SQL], 1);
	/* the second: the read saw the chunk's own ten rows, not yet committed */
	ck_assert_int_eq(x.deliveries, 2);
	ck_assert_int_eq(x.done, 2);
	ck_assert_str_eq(x.seen, "10");
	ck_assert_int_eq(sink_count("qa", false), 10);
	ck_assert_int_eq(sink_count("qa", true), 10);
	rec_free(&r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("consumer-eo");
	TCase *tc = pgt_tcase("consumer-eo", 120);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_one_name_two_queues_one_target);
	tcase_add_test(tc, test_upgrade_reads_the_old_key_once);
	tcase_add_test(tc, test_target_query_reads_and_fails_the_batch);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
