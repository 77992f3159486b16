/*
 * pgqctl node failover after the root's whole server dies: root on private
 * server A, branch b1 and its leaf lf on server B. A producer thread writes to
 * the root (and ticks it) until the postmaster of A and every backend of it are
 * SIGKILLed; then `failover --dead root b1`. Checked:
 *   - every event the producer saw committed is on b1 or on A (nothing
 *     vanished), and the ones only on A are exactly what the commands report
 *     once A runs again: failover's "events only on root" and resurrect's
 *     "LOST EVENTS";
 *   - the consumers on the survivors (PgQ consumer "app" on b1, recording in its
 *     batch's transaction, and the leaf's worker applying in its batch's
 *     transaction) hold every other event, and those written to b1 after the
 *     failover, exactly once.
 * A second case: two branches on B, b2 ahead of b1 (b1's worker stopped
 * first) when A dies; b1 takes b2's ticks before it takes over, and loses only
 * what was on A alone.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "castest.h"
#include "ctlrun.h"

#define POLL (50 * PGQEV_USEC_PER_MSEC)

typedef struct Prod {
	char *conninfo;
	pthread_t th;
	volatile bool stop;
	pthread_mutex_t mu;
	int64_t next;
	int64_t *acked;
	size_t nacked, cap;
	int unsure; /* transactions whose commit answer was lost */
} Prod;

static void *produce(void *arg)
{
	Prod *p = arg;
	PGconn *c = PQconnectdb(p->conninfo);
	/* the test template runs with synchronous_commit off, which lets a killed
	   server forget commits it acknowledged */
	PQclear(PQexec(c, "set synchronous_commit = on"));
	while (!p->stop && PQstatus(c) == CONNECTION_OK) {
		char a[32], b[32];
		const char *prm[2] = {a, b};
		snprintf(a, sizeof(a), "%" PRId64, p->next);
		snprintf(b, sizeof(b), "%" PRId64, p->next + 9);
		PGresult *r = PQexecParams(c,
					   "select count(pgq.insert_event('" CT_QUEUE
					   "', 'data', s::text))"
					   " from generate_series($1::bigint, $2::bigint) s",
					   2, NULL, prm, NULL, NULL, 0);
		bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
		PQclear(r);
		pthread_mutex_lock(&p->mu);
		if (ok) {
			if (p->nacked + 10 > p->cap) {
				p->cap = (p->cap + 10) * 2;
				p->acked = realloc(p->acked, p->cap * sizeof(int64_t));
				ck_assert_ptr_nonnull(p->acked);
			}
			for (int k = 0; k < 10; k++)
				p->acked[p->nacked++] = p->next + k;
		} else {
			p->unsure++;
		}
		p->next += 10;
		pthread_mutex_unlock(&p->mu);
		if (!ok)
			break;
		PQclear(PQexec(c, "select pgq.ticker('" CT_QUEUE "')"));
		usleep(10000);
	}
	PQfinish(c);
	return NULL;
}

/* PgQ consumer "app" on b1: every batch recorded in table seen in the batch's
   own transaction (exactly-once). */
static void consume(PGconn *c)
{
	for (;;) {
		char *bid = pgt_value(c, "select pgq.next_batch('" CT_QUEUE "', 'app')");
		if (!bid)
			return;
		char sql[300];
		snprintf(sql, sizeof(sql),
			 "begin; insert into seen select ev_data::bigint"
			 " from pgq.get_batch_events(%s) where ev_type = 'data';"
			 " select pgq.finish_batch(%s); commit",
			 bid, bid);
		pgt_exec(c, sql);
		free(bid);
	}
}

static void pump(void *arg)
{
	consume(arg);
}

typedef struct Reach {
	const char *db, *sql;
	PGconn *consumer;
	size_t want;
} Reach;

static bool reached(void *arg)
{
	Reach *k = arg;
	consume(k->consumer);
	return pgt_int_db(k->db, k->sql) >= (int64_t)k->want;
}

static bool reached_plain(void *arg)
{
	Reach *k = arg;
	return pgt_int_db(k->db, k->sql) >= (int64_t)k->want;
}

#define DATA_SQL "select ev_data::bigint from pgq.event_1 where ev_type = 'data'"

/* A branch's worker makes the tick of its last batch after the batch (or
   while it waits): the node has settled once its last tick is the one its
   worker completed. */
typedef struct Settled {
	const char *db, *node;
} Settled;

static bool settled(void *arg)
{
	Settled *t = arg;
	return ct_completed(t->db, t->node) == ct_last_tick(t->db);
}

/* Server A (the root's) dies under load: postmaster and backends SIGKILLed;
   then the producer thread is stopped and joined. */
static void kill_server_a(Prod *p)
{
	pgt_server_kill_on(0);
	p->stop = true;
	pthread_join(p->th, NULL);
	fprintf(stderr, "# server A killed after %zu events committed, %d commits unanswered\n",
		p->nacked, p->unsure);
}

/* pgqctl node failover --dead root b1 while root's server is down: it succeeds
   and cannot count the events only on root. *took_ms: how long it ran. */
static CtlRun failover_dead_root(const char *db1, int64_t *took_ms)
{
	int64_t t0 = pgt_now_ms();
	CtlRun r = ctr_node(db1, (const char *[]){"failover", "--dead", "root", "b1", "--cascade",
						  CT_QUEUE, NULL});
	*took_ms = pgt_now_ms() - t0;
	ctr_dump(&r);
	ctr_expect(&r, 0, "events only on root: not known, it does not answer", NULL);
	return r;
}

/* One tick on a promoted branch now: it kept a branch's ticker settings (PgQ's
   default ticker_max_lag of 3 s), so a plain pgq.ticker() within 3 s of its last
   copied tick made none, and nothing else ticks in these tests (a fast idle run
   failed "b2 under b1: the consumer did not get 410 events within 30 s"). */
static void tick_new_root(const char *db)
{
	pgt_exec_db(db, "select pgq.set_queue_config('" CT_QUEUE "', 'ticker_max_lag', '0')");
	ck_assert_int_gt(pgt_int_db(db, "select coalesce(pgq.ticker('" CT_QUEUE "'), 0)"), 0);
}

START_TEST(test_failover_after_sigkill_of_root_server)
{
	char *root = ct_node_db_on(0), *b1 = ct_node_db_on(1), *lf = ct_node_db_on(1);
	char *droot = strdup(ctr_dsn(root, NULL)), *db1 = strdup(ctr_dsn(b1, NULL));
	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	ct_make_sub("leaf", lf, "lf", b1, "b1", root);
	pgt_exec_db(b1, "create table seen (data bigint)");
	pgt_exec_db(b1, "select pgq.register_consumer('" CT_QUEUE "', 'app'),"
			" pgq.set_queue_config('" CT_QUEUE "', 'ticker_max_lag', '0'),"
			" pgq.set_queue_config('" CT_QUEUE "', 'ticker_idle_period', '0')");
	ct_make_applied(lf);

	CtLoop l = {event_base_new()};
	CtWorker wb = {.quiet = true}, wl = {.quiet = true, .apply = true};
	ct_start_on(&wb, l.base, b1, POLL);
	ct_start_on(&wl, l.base, lf, POLL);
	ct_loop_go(&l);
	PGconn *app = pgt_connect(b1);

	Prod p = {.conninfo = strdup(pgt_connstr(root, false))};
	pthread_mutex_init(&p.mu, NULL);
	ck_assert_int_eq(pthread_create(&p.th, NULL, produce, &p), 0);
	Reach k = {lf, "select count(*) from applied where ev_type = 'data'", app, 300};
	ck_assert_msg(pgt_wait_until(reached, &k, 60000, 50), "the leaf applied nothing");

	kill_server_a(&p);

	/* nothing more reaches b1 now: the tick it holds is where it must resume
	   (once its worker made the tick of the batch it applied last) */
	Settled s1 = {b1, "b1"};
	ck_assert_msg(pgt_wait_until(settled, &s1, 30000, 50), "b1 did not make its last tick");
	int64_t b1_had = ct_last_tick(b1);
	int64_t took;
	CtlRun r = failover_dead_root(db1, &took);
	long long resumed = (long long)ctr_number_after(r.out, "it resumed from tick ");
	ctr_free(&r);
	fprintf(stderr, "# failover after SIGKILL of the root's server: %" PRId64 " ms\n", took);
	ck_assert_int_eq(b1_had, resumed);

	/* the new root takes writes; its consumers get them */
	pgt_exec_db(b1, "select pgq.insert_event('" CT_QUEUE "', 'data', s::text)"
			" from generate_series(5000000, 5000099) s");
	tick_new_root(b1);
	size_t nb1;
	int64_t *on_b1 = ct_fetch_sorted(b1, DATA_SQL, &nb1);
	CtExactly how = {.pump = pump, .arg = app, .timeout_ms = 60000};
	ct_expect_exactly("b1 consumer", b1, "select data from seen", on_b1, nb1, &how);
	ct_expect_exactly("lf", lf, "select ev_data::bigint from applied where ev_type = 'data'",
			  on_b1, nb1, &how);

	/* A starts again (crash recovery): what committed there and never reached B */
	pgt_server_start_on(0);
	size_t na;
	int64_t *on_a = ct_fetch_sorted(root, DATA_SQL, &na);
	size_t lost = 0;
	for (size_t i = 0; i < na; i++)
		if (!ct_contains(on_b1, nb1, on_a[i]))
			lost++;
	qsort(p.acked, p.nacked, sizeof(int64_t), ct_cmp64);
	size_t acked_lost = 0;
	for (size_t i = 0; i < p.nacked; i++) {
		bool b = ct_contains(on_b1, nb1, p.acked[i]), a = ct_contains(on_a, na, p.acked[i]);
		ck_assert_msg(a || b, "event %" PRId64 " committed, then on neither server",
			      p.acked[i]);
		acked_lost += !b;
	}
	fprintf(stderr,
		"# %zu data events only on A (%zu of them acknowledged to the producer), %zu on B\n",
		lost, acked_lost, nb1);

	/* the same failover again, now that A answers: it fences A and counts */
	r = ctr_node(db1, (const char *[]){"failover", "--dead", "root", "b1", "--cascade",
					   CT_QUEUE, NULL});
	ctr_dump(&r);
	ctr_expect(&r, 0, "root answers: its writes are off now", NULL);
	long long data_reported = 0, all_reported = 0;
	if (!strstr(r.out, "events only on root: none")) {
		all_reported = (long long)ctr_number_after(r.out, "events only on root: ");
		data_reported =
			(long long)ctr_number_after(strstr(r.out, "events only on root: "), "(");
	}
	ctr_free(&r);
	ck_assert_int_eq(data_reported, (long long)lost);

	/* resurrect reports the same events, and the file holds them */
	char file[600];
	snprintf(file, sizeof(file), "%s/lost.json", pgt_tmp_dir());
	r = ctr_node(droot, (const char *[]){"resurrect", CT_QUEUE, "--lost-events", file, NULL});
	ctr_dump(&r);
	ctr_expect(&r, 0, "LOST EVENTS: ", NULL);
	ck_assert_int_eq((long long)ctr_number_after(r.out, "LOST EVENTS: "), all_reported);
	ctr_free(&r);

	ct_loop_hold(&l);
	pgqev_cascade_free(wb.w);
	pgqev_cascade_free(wl.w);
	event_base_free(l.base);
	PQfinish(app);
	free(on_a);
	free(on_b1);
	free(p.acked);
	free(p.conninfo);
	free(droot);
	free(db1);
	free(root);
	free(b1);
	free(lf);
}
END_TEST

static void restart_worker(CtLoop *l, CtWorker *w, const char *db)
{
	ct_loop_hold(l);
	ct_start_on(w, l->base, db, POLL);
	ct_loop_go(l);
}

/* b1 and b2 both read from the root (server A); b1's worker stops, so b2
   copies ticks b1 never got; then A is SIGKILLed under load. failover --dead
   root b1 must first take those ticks from b2 (PgQ's takeover does the same:
   the most advanced former subscriber of the root becomes NEW's provider
   until NEW has its tick), resume from b2's tick and lose only what no
   survivor had: the events reported as only on root, counted once A runs
   again, are exactly those on A and not on b1. */
START_TEST(test_failover_kill_branch_ahead)
{
	char *root = ct_node_db_on(0), *b1 = ct_node_db_on(1), *b2 = ct_node_db_on(1);
	char *db1 = strdup(ctr_dsn(b1, NULL));
	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	ct_make_sub("branch", b2, "b2", root, "root", root);

	CtLoop l = {event_base_new()};
	CtWorker w1 = {.quiet = true}, w2 = {.quiet = true};
	ct_start_on(&w1, l.base, b1, POLL);
	ct_start_on(&w2, l.base, b2, POLL);
	ct_loop_go(&l);

	Prod p = {.conninfo = strdup(pgt_connstr(root, false))};
	pthread_mutex_init(&p.mu, NULL);
	ck_assert_int_eq(pthread_create(&p.th, NULL, produce, &p), 0);
	Reach k1 = {.db = b1,
		    .sql = "select count(*) from pgq.event_1 where ev_type = 'data'",
		    .want = 100};
	ck_assert_msg(pgt_wait_until(reached_plain, &k1, 60000, 50), "b1 copied nothing");

	/* b1 stops copying; b2 goes on for 100 events more */
	ct_loop_hold(&l);
	ct_stop(&w1);
	ct_loop_go(&l);
	int64_t b1_stopped =
		pgt_int_db(b1, "select count(*) from pgq.event_1 where ev_type = 'data'");
	Reach k2 = {.db = b2,
		    .sql = "select count(*) from pgq.event_1 where ev_type = 'data'",
		    .want = (size_t)b1_stopped + 100};
	ck_assert_msg(pgt_wait_until(reached_plain, &k2, 60000, 50), "b2 did not get ahead");

	kill_server_a(&p);

	/* b1's worker runs again (a failover waits for its acknowledgements);
	   nothing more reaches either branch. b2's worker makes the tick of its
	   last batch while it waits; b1's may owe one (stopped between its batch's
	   commit and the tick, it has no provider to ask the tick's time) */
	restart_worker(&l, &w1, b1);
	Settled s2 = {b2, "b2"};
	ck_assert_msg(pgt_wait_until(settled, &s2, 30000, 50), "b2 did not make its last tick");
	int64_t t1 = ct_last_tick(b1), t2 = ct_last_tick(b2);
	fprintf(stderr, "# b1 at tick %" PRId64 " (completed %" PRId64 "), b2 at %" PRId64 "\n", t1,
		ct_completed(b1, "b1"), t2);
	ck_assert_int_gt(t2, t1);
	size_t nb2;
	int64_t *on_b2 = ct_fetch_sorted(b2, DATA_SQL, &nb2);

	int64_t took;
	CtlRun r = failover_dead_root(db1, &took);
	{
		char want[200];
		snprintf(want, sizeof(want), "b1 got ticks %lld..%lld from b2", (long long)t1,
			 (long long)t2);
		ck_assert_msg(strstr(r.out, want), "no \"%s\" in:\n%s", want, r.out);
	}
	ck_assert_int_eq((long long)ctr_number_after(r.out, "it resumed from tick "), t2);
	ctr_free(&r);
	fprintf(stderr, "# failover with b2 %" PRId64 " ticks ahead of b1: %" PRId64 " ms\n",
		t2 - t1, took);
	ct_expect_value(b1, "select node_type from pgq_node.get_node_info('" CT_QUEUE "')", "root");
	ct_expect_value(b2, "select provider_node from pgq_node.get_node_info('" CT_QUEUE "')",
			"b1");
	/* b1 holds exactly what b2 had: the ticks b1 missed came from b2 */
	ct_expect_exactly("b1 after catching up", b1, DATA_SQL, on_b2, nb2, NULL);

	/* the new root's writes reach b2, each once */
	pgt_exec_db(b1, "select pgq.insert_event('" CT_QUEUE "', 'data', s::text)"
			" from generate_series(5000000, 5000099) s");
	tick_new_root(b1);
	size_t nb1;
	int64_t *on_b1 = ct_fetch_sorted(b1, DATA_SQL, &nb1);
	ck_assert_int_eq((int64_t)nb1, (int64_t)nb2 + 100);
	ct_expect_exactly("b2 under b1", b2, DATA_SQL, on_b1, nb1, NULL);

	/* A runs again: what it holds that b1 does not is what the failover
	   reports as lost, and nothing acknowledged vanished */
	pgt_server_start_on(0);
	size_t na, lost = 0;
	int64_t *on_a = ct_fetch_sorted(root, DATA_SQL, &na);
	for (size_t i = 0; i < na; i++)
		lost += !ct_contains(on_b1, nb1, on_a[i]);
	for (size_t i = 0; i < p.nacked; i++)
		ck_assert_msg(ct_contains(on_a, na, p.acked[i]) ||
				      ct_contains(on_b1, nb1, p.acked[i]),
			      "event %" PRId64 " committed, then on neither server", p.acked[i]);
	r = ctr_node(db1, (const char *[]){"failover", "--dead", "root", "b1", "--cascade",
					   CT_QUEUE, NULL});
	ctr_dump(&r);
	ctr_expect(&r, 0, "root answers: its writes are off now", NULL);
	long long data_reported = 0;
	if (!strstr(r.out, "events only on root: none"))
		data_reported =
			(long long)ctr_number_after(strstr(r.out, "events only on root: "), "(");
	ctr_free(&r);
	fprintf(stderr, "# %zu data events only on A, %zu on b1 before its own writes\n", lost,
		nb2);
	ck_assert_int_eq(data_reported, (long long)lost);

	ct_loop_hold(&l);
	ct_stop(&w1);
	ct_stop(&w2);
	event_base_free(l.base);
	free(on_a);
	free(on_b1);
	free(on_b2);
	free(p.acked);
	free(p.conninfo);
	free(db1);
	free(root);
	free(b1);
	free(b2);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pgqctl-failover");
	TCase *tc = pgt_tcase("failover_kill", 300);
	tcase_add_test(tc, test_failover_after_sigkill_of_root_server);
	suite_add_tcase(s, tc);
	tc = pgt_tcase("failover_kill_ahead", 300);
	tcase_add_test(tc, test_failover_kill_branch_ahead);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true, .servers = 2};
	return pgt_main(s, &o);
}
