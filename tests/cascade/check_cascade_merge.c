/*
 * Merge leaves (spec 5.4): two partition cascades pq1, pq2 feed the combined
 * cascade cq. On the combined root's database their merge leaves copy the data
 * events into cq (new ids, same time and payload) with a pgq.tick-id event per
 * batch; on the combined branch's database their merge leaves wait behind: the
 * branch worker replays the pgq.tick-id events into their positions and they
 * only finish the partition batches up to there.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "castest.h"

#define POLL (100 * PGQEV_USEC_PER_MSEC)

static void produce(const char *db, const char *q, int from, int to)
{
	PGconn *c = pgt_connect(db);
	pgt_exec(c, "begin");
	for (int i = from; i < to; i++) {
		char sql[300];
		snprintf(sql, sizeof(sql),
			 "select pgq.insert_event('%s', 'num', '%d', E'x\\t%s', NULL, 'e3', NULL)",
			 q, i, q);
		pgt_exec(c, sql);
	}
	pgt_exec(c, "commit");
	PQfinish(c);
}

static int64_t last_tick(PGconn *c, const char *q)
{
	char sql[200];
	snprintf(sql, sizeof(sql),
		 "select max(t.tick_id) from pgq.tick t join pgq.queue q"
		 " on q.queue_id = t.tick_queue where q.queue_name = '%s'",
		 q);
	return pgt_int(c, sql);
}

/* the last pgq.tick-id event of partition q in the combined queue on db */
static int64_t tick_id_event(PGconn *c, const char *q)
{
	char *id = pgt_value(c, "select queue_id from pgq.queue where queue_name = '" CT_QUEUE "'");
	char sql[300];
	snprintf(sql, sizeof(sql),
		 "select coalesce(max(ev_data::int8), 0) from pgq.event_%s"
		 " where ev_type = 'pgq.tick-id' and ev_extra1 = '%s'",
		 id, q);
	free(id);
	return pgt_int(c, sql);
}

static int64_t position(PGconn *c, const char *q, const char *worker)
{
	char sql[200];
	snprintf(sql, sizeof(sql),
		 "select coalesce(max(last_tick_id), 0) from pgq_node.local_state"
		 " where queue_name = '%s' and consumer_name = '%s'",
		 q, worker);
	return pgt_int(c, sql);
}

static int64_t finished_at(PGconn *c, const char *q, const char *consumer)
{
	char sql[200];
	snprintf(sql, sizeof(sql), "select last_tick from pgq.get_consumer_info('%s', '%s')", q,
		 consumer);
	return pgt_int(c, sql);
}

/* data events of the partition queue / of the combined queue from partition q,
   in the same canonical form: time, type, data, extras */
#define CANON                                                                                \
	"select count(*) || ':' || coalesce(md5(string_agg(concat_ws('|', ev_time, ev_type," \
	" ev_data, coalesce(ev_extra1, '<n>'), coalesce(ev_extra2, '<n>'),"                  \
	" coalesce(ev_extra3, '<n>'), coalesce(ev_extra4, '<n>')), E'\\n'"                   \
	" order by ev_data::int)), '') from pgq.event_"

static char *canon(PGconn *c, const char *q, const char *from_part)
{
	char sql[600];
	char *id = NULL;
	snprintf(sql, sizeof(sql), "select queue_id from pgq.queue where queue_name = '%s'", q);
	id = pgt_value(c, sql);
	if (from_part)
		snprintf(sql, sizeof(sql),
			 CANON "%s where ev_type = 'num' and ev_extra1 = E'x\\t%s'", id, from_part);
	else
		snprintf(sql, sizeof(sql), CANON "%s where ev_type = 'num'", id);
	free(id);
	return pgt_value(c, sql);
}

typedef struct MergeCond {
	PGconn *p1, *p2, *c, *cb;
	int64_t next_ms;
} MergeCond;

static bool merged(void *arg)
{
	MergeCond *m = arg;
	if (!pgt_due(&m->next_ms, 100))
		return false;
	int64_t t1 = last_tick(m->p1, "pq1"), t2 = last_tick(m->p2, "pq2");
	/* combined root: both partitions through their last tick */
	if (tick_id_event(m->c, "pq1") != t1 || tick_id_event(m->c, "pq2") != t2)
		return false;
	/* combined branch: positions replayed, partition batches finished there */
	return position(m->cb, "pq1", "w_mb1") == t1 && position(m->cb, "pq2", "w_mb2") == t2 &&
	       finished_at(m->p1, "pq1", "w_mb1") == t1 && finished_at(m->p2, "pq2", "w_mb2") == t2;
}

START_TEST(test_merge_leaves_root_and_branch)
{
	char *p1 = ct_node_db(), *p2 = ct_node_db(), *c = ct_node_db(), *cb = ct_node_db();
	ct_make_root_q("pq1", p1, "p1");
	ct_make_root_q("pq2", p2, "p2");
	ct_make_root_q(CT_QUEUE, c, "c");
	ct_make_sub_q(CT_QUEUE, "branch", cb, "cb", c, "c", c, NULL);
	/* merge leaves: on the combined root's database and on the branch's */
	ct_make_sub_q("pq1", "leaf", c, "mc1", p1, "p1", p1, CT_QUEUE);
	ct_make_sub_q("pq2", "leaf", c, "mc2", p2, "p2", p2, CT_QUEUE);
	ct_make_sub_q("pq1", "leaf", cb, "mb1", p1, "p1", p1, CT_QUEUE);
	ct_make_sub_q("pq2", "leaf", cb, "mb2", p2, "p2", p2, CT_QUEUE);

	produce(p1, "pq1", 0, 120);
	cs_tick(p1);
	produce(p2, "pq2", 1000, 1070);
	cs_tick(p2);
	produce(p1, "pq1", 120, 150);
	cs_tick(p1);

	CtWorker wc1 = {0}, wc2 = {0}, wcb = {0}, wb1 = {0}, wb2 = {0};
	struct event_base *base = cs_base();
	ct_start_q(&wc1, base, "pq1", c, POLL);
	ct_start_q(&wc2, base, "pq2", c, POLL);
	ct_start_q(&wcb, base, CT_QUEUE, cb, POLL);
	ct_start_q(&wb1, base, "pq1", cb, POLL);
	ct_start_q(&wb2, base, "pq2", cb, POLL);
	cs_ticker(c, 100); /* the combined queue has its own ticker */
	MergeCond m = {.p1 = pgt_connect(p1),
		       .p2 = pgt_connect(p2),
		       .c = pgt_connect(c),
		       .cb = pgt_connect(cb)};
	bool ok = cs_run_until(merged, &m, 30000);
	if (!ok)
		fprintf(stderr,
			"# pq1 last %" PRId64 " tick-id %" PRId64 " cb %" PRId64 " fin %" PRId64
			"; pq2 last %" PRId64 " tick-id %" PRId64 " cb %" PRId64 " fin %" PRId64
			"\n",
			last_tick(m.p1, "pq1"), tick_id_event(m.c, "pq1"),
			position(m.cb, "pq1", "w_mb1"), finished_at(m.p1, "pq1", "w_mb1"),
			last_tick(m.p2, "pq2"), tick_id_event(m.c, "pq2"),
			position(m.cb, "pq2", "w_mb2"), finished_at(m.p2, "pq2", "w_mb2"));
	ck_assert_msg(ok, "merge did not complete");
	cs_ticker(NULL, 0);

	/* every data event once, time and payload kept, ids from cq's sequence */
	char *a = canon(m.p1, "pq1", NULL), *b = canon(m.c, CT_QUEUE, "pq1");
	ck_assert_str_eq(a, b);
	ck_assert(strncmp(a, "150:", 4) == 0);
	free(a);
	free(b);
	a = canon(m.p2, "pq2", NULL);
	b = canon(m.c, CT_QUEUE, "pq2");
	ck_assert_str_eq(a, b);
	ck_assert(strncmp(a, "70:", 3) == 0);
	free(a);
	free(b);
	char *cid =
		pgt_value(m.c, "select queue_id from pgq.queue where queue_name = '" CT_QUEUE "'");
	char sql[300];
	snprintf(sql, sizeof(sql),
		 "select count(distinct ev_id) from pgq.event_%s where ev_type = 'num'", cid);
	ck_assert_int_eq(pgt_int(m.c, sql), 220);
	free(cid);
	/* the merge leaves' own positions: the partitions' last ticks */
	ck_assert_int_eq(position(m.c, "pq1", "w_mc1"), last_tick(m.p1, "pq1"));
	ck_assert_int_eq(position(m.c, "pq2", "w_mc2"), last_tick(m.p2, "pq2"));
	ck_assert_int_eq(wc1.errors + wc2.errors + wcb.errors + wb1.errors + wb2.errors, 0);

	ct_stop(&wc1);
	ct_stop(&wc2);
	ct_stop(&wcb);
	ct_stop(&wb1);
	ct_stop(&wb2);
	PQfinish(m.p1);
	PQfinish(m.p2);
	PQfinish(m.c);
	PQfinish(m.cb);
	free(p1);
	free(p2);
	free(c);
	free(cb);
}
END_TEST

/* A consumer of the combined queue, reading it with PgQ's batch calls: every
   event once per (partition, number), counted in seen. */
typedef struct Reader {
	PGconn *c, *p1, *p2;
	int want;     /* data events in all */
	int got, dup; /* distinct data events seen, repeats */
	unsigned char seen[2][4000];
	int64_t next_ms;
} Reader;

static void read_one_batch(Reader *r)
{
	char *id = pgt_value(r->c, "select pgq.next_batch('" CT_QUEUE "', 'reader')");
	if (!id || !*id) {
		free(id);
		return;
	}
	char sql[300];
	snprintf(sql, sizeof(sql),
		 "select ev_data, ev_extra1 from pgq.get_batch_events(%s) where ev_type = 'num'",
		 id);
	PGresult *res = PQexec(r->c, sql);
	ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
	for (int i = 0; i < PQntuples(res); i++) {
		int part = strcmp(PQgetvalue(res, i, 1), "x\tpq1") == 0   ? 0
			   : strcmp(PQgetvalue(res, i, 1), "x\tpq2") == 0 ? 1
									  : -1;
		int n = atoi(PQgetvalue(res, i, 0)) - (part == 1 ? 10000 : 0);
		ck_assert_msg(part >= 0 && n >= 0 && n < 4000, "stray event %s/%s",
			      PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
		if (r->seen[part][n]++)
			r->dup++;
		else
			r->got++;
	}
	PQclear(res);
	snprintf(sql, sizeof(sql), "select pgq.finish_batch(%s)", id);
	pgt_exec(r->c, sql);
	free(id);
}

/* everything produced reached the consumer of the combined queue, and both
   partitions' last ticks are recorded there */
static bool all_read(void *arg)
{
	Reader *r = arg;
	if (!pgt_due(&r->next_ms, 20))
		return false;
	read_one_batch(r);
	return r->got >= r->want && tick_id_event(r->c, "pq1") == last_tick(r->p1, "pq1") &&
	       tick_id_event(r->c, "pq2") == last_tick(r->p2, "pq2");
}

/* Two partitions merged into the combined root's queue, which its own ticker
   ticks: a plain consumer of it sees every data event exactly once, also when
   the merge leaves' backends are terminated mid-batch on the combined side and
   on a partition's side; the combined queue holds each event once with the
   partition's time and payload. */
START_TEST(test_merge_consumer_exactly_once)
{
	char *p1 = ct_node_db(), *p2 = ct_node_db(), *c = ct_node_db();
	ct_make_root_q("pq1", p1, "p1");
	ct_make_root_q("pq2", p2, "p2");
	ct_make_root_q(CT_QUEUE, c, "c");
	ct_make_sub_q("pq1", "leaf", c, "mc1", p1, "p1", p1, CT_QUEUE);
	ct_make_sub_q("pq2", "leaf", c, "mc2", p2, "p2", p2, CT_QUEUE);
	pgt_exec_db(c, "select pgq.register_consumer('" CT_QUEUE "', 'reader')");
	CtWorker w1 = {.quiet = true, .sleep_ms_per_chunk = 3};
	CtWorker w2 = {.quiet = true, .sleep_ms_per_chunk = 3};
	struct event_base *base = cs_base();
	ct_start_q(&w1, base, "pq1", c, POLL);
	ct_start_q(&w2, base, "pq2", c, POLL);
	cs_ticker(c, 100);
	Reader *r = calloc(1, sizeof(*r));
	ck_assert_ptr_nonnull(r);
	r->c = pgt_connect(c);
	r->p1 = pgt_connect(p1);
	r->p2 = pgt_connect(p2);

	/* 1: no fault */
	produce(p1, "pq1", 0, 300);
	cs_tick(p1);
	produce(p2, "pq2", 10000, 10200);
	cs_tick(p2);
	r->want = 500;
	ck_assert_msg(cs_run_until(all_read, r, 30000), "round 1: %d of %d read", r->got, r->want);

	/* 2: the combined side's backends go while a copy is open there */
	produce(p1, "pq1", 300, 2300);
	cs_tick(p1);
	/* a merge leaf's worker holds a transaction on the combined root's database
	   that has written (events copied into the combined queue, not committed) */
	ck_assert_msg(ct_wait_writing(c, 20000), "the merge leaf never wrote");
	ct_terminate_workers(c);
	produce(p2, "pq2", 10200, 10400);
	cs_tick(p2);
	r->want = 2700;
	ck_assert_msg(cs_run_until(all_read, r, 60000), "round 2: %d of %d read", r->got, r->want);

	/* 3: the partition side's backends go while its batch is being read */
	produce(p2, "pq2", 10400, 11900);
	cs_tick(p2);
	ck_assert_msg(ct_wait_writing(c, 20000), "the merge leaf never wrote");
	ct_terminate_workers(p2);
	produce(p1, "pq1", 2300, 2400);
	cs_tick(p1);
	r->want = 4300;
	ck_assert_msg(cs_run_until(all_read, r, 60000), "round 3: %d of %d read", r->got, r->want);
	cs_ticker(NULL, 0);

	ck_assert_int_eq(r->dup, 0);
	ck_assert_int_eq(r->got, 4300);
	/* the combined queue: each event once, time and payload as on the partition */
	char *a = canon(r->p1, "pq1", NULL), *b = canon(r->c, CT_QUEUE, "pq1");
	ck_assert_str_eq(a, b);
	ck_assert(strncmp(a, "2400:", 5) == 0);
	free(a);
	free(b);
	a = canon(r->p2, "pq2", NULL);
	b = canon(r->c, CT_QUEUE, "pq2");
	ck_assert_str_eq(a, b);
	ck_assert(strncmp(a, "1900:", 5) == 0);
	free(a);
	free(b);
	/* the faults happened and were recovered from */
	ck_assert_int_gt(w1.errors + w2.errors, 0);

	ct_stop(&w1);
	ct_stop(&w2);
	PQfinish(r->c);
	PQfinish(r->p1);
	PQfinish(r->p2);
	free(r);
	free(p1);
	free(p2);
	free(c);
}
END_TEST

/* A merge leaf whose combined queue has no root or branch node: a clear error,
   nothing read from the partition. */
START_TEST(test_merge_leaf_without_combined_node)
{
	char *p1 = ct_node_db(), *c = ct_node_db();
	ct_make_root_q("pq1", p1, "p1");
	pgt_exec_db(c, "select pgq.create_queue('plainq')");
	ct_make_sub_q("pq1", "leaf", c, "mc1", p1, "p1", p1, "plainq");
	produce(p1, "pq1", 0, 10);
	cs_tick(p1);
	CtWorker w = {.quiet = true};
	ct_start_q(&w, cs_base(), "pq1", c, POLL);
	CtErrCond e = {&w, "merge leaf needs a combined root or branch"};
	ck_assert_msg(cs_run_until(ct_has_error, &e, 20000), "no error; last: %s", w.last_error);
	ck_assert_msg(strstr(w.last_error, "plainq") != NULL, "%s", w.last_error);
	ct_stop(&w);
	PGconn *pc = pgt_connect(p1);
	int64_t reg = pgt_int(pc, "select last_tick from pgq.get_consumer_info('pq1', 'w_mc1')");
	ck_assert_int_lt(reg, last_tick(pc, "pq1"));
	PQfinish(pc);
	ck_assert_int_eq(pgt_int_db(c, "select count(*) from pgq.event_template"), 0);
	free(p1);
	free(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cascade-merge");
	TCase *tc = pgt_tcase("merge", 120);
	tcase_add_checked_fixture(tc, cs_setup, cs_teardown);
	tcase_add_test(tc, test_merge_leaves_root_and_branch);
	tcase_add_test(tc, test_merge_leaf_without_combined_node);
	suite_add_tcase(s, tc);
	TCase *tf = pgt_tcase("merge_consumer", 180);
	tcase_add_checked_fixture(tf, cs_setup, cs_teardown);
	tcase_add_test(tf, test_merge_consumer_exactly_once);
	suite_add_tcase(s, tf);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
