/*
 * pgqctl node commands that move readers, run for real on a cascade of the
 * private server whose workers (libpgqev) run on a loop thread of their own:
 *   - change-provider --consumer: the leaf's worker named by --consumer, and a
 *     plain cascaded consumer on another leaf (asked for on the first leaf's
 *     database, so pgqctl finds it among the members), each moved from b1 to b2
 *     while a producer writes; every data event reaches both exactly once, and the
 *     registrations follow (subscriber rows for the worker, a PgQ consumer
 *     only for the plain one);
 *   - failover --dead root b1 while b2 holds ticks b1 never got: b1 first takes
 *     them from b2 (the step says so), resumes from b2's tick, and the events
 *     reported as only on the root are exactly those after that tick;
 *   - failover --dead root b1 when b1 applied the root's last batch but its
 *     tick is missing (no survivor ahead): b1 makes the tick and resumes there;
 *   - drop-node, resurrect, wait-root and wait-provider on Debian's pgq_node.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "castest.h"
#include "ctlrun.h"

#define POLL (50 * PGQEV_USEC_PER_MSEC)
/* how long the cascade may take to catch up: a deadline against a hang, not a
   promise; the workers run in this process, which valgrind slows several times */
#define CATCH_UP_MS ((int)(30000 * pgt_time_factor()))

#define APPLIED_SQL "select ev_data::bigint from applied where ev_type = 'data'"
#define DATA_SQL    "select ev_data::bigint from pgq.event_1 where ev_type = 'data'"

/* A producer thread: 10 numbered data events a transaction on the root, then
   a tick, until stopped. */
typedef struct Prod {
	char *conninfo;
	pthread_t th;
	volatile bool stop;
	int64_t next;
} Prod;

static void *produce(void *arg)
{
	Prod *p = arg;
	PGconn *c = PQconnectdb(p->conninfo);
	while (!p->stop && PQstatus(c) == CONNECTION_OK) {
		char a[32];
		const char *prm[1] = {a};
		snprintf(a, sizeof(a), "%" PRId64, p->next);
		PGresult *r = PQexecParams(c,
					   "select count(pgq.insert_event('" CT_QUEUE
					   "', 'data', s::text))"
					   " from generate_series($1::bigint, $1::bigint + 9) s",
					   1, NULL, prm, NULL, NULL, 0);
		ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
		PQclear(r);
		p->next += 10;
		PQclear(PQexec(c, "select pgq.force_tick('" CT_QUEUE "'), pgq.ticker('" CT_QUEUE
				  "')"));
		usleep(20000);
	}
	PQfinish(c);
	return NULL;
}

/* Stop one worker while the others run on. */
static void worker_stop(CtLoop *l, CtWorker *w)
{
	ct_loop_hold(l);
	ct_stop(w);
	ct_loop_go(l);
}

static void tick(const char *db)
{
	PGconn *c = pgt_connect(db);
	ctr_tick(c, CT_QUEUE);
	PQfinish(c);
}

static void produce_n(const char *db, int64_t from, int64_t count)
{
	char sql[300];
	snprintf(sql, sizeof(sql),
		 "select count(pgq.insert_event('" CT_QUEUE "', 'data', s::text))"
		 " from generate_series(%" PRId64 ", %" PRId64 ") s",
		 from, from + count - 1);
	pgt_exec_db(db, sql);
	tick(db);
}

typedef struct Count {
	const char *db, *sql;
	int64_t want;
} Count;

static bool count_reached(void *arg)
{
	Count *k = arg;
	return pgt_int_db(k->db, k->sql) >= k->want;
}

/* Every listed node's consumer `consumer` (NULL: w_NAME) holds the root's last
   tick, and a branch has made it. */
typedef struct Sync {
	const char *root;
	const char *db[4], *name[4];
	int n;
} Sync;

static bool synced(void *arg)
{
	Sync *s = arg;
	int64_t t = ct_last_tick(s->root);
	for (int i = 0; i < s->n; i++) {
		if (ct_completed(s->db[i], s->name[i]) != t)
			return false;
		int64_t local = pgt_int_db(s->db[i], "select coalesce(max(t.tick_id), -1)"
						     " from pgq.tick t join pgq.queue q"
						     " on q.queue_id = t.tick_queue"
						     " where q.queue_name = '" CT_QUEUE "'");
		if (local >= 0 && local != t)
			return false;
	}
	return true;
}

#define CONSUMERS_OF(db)                                                                       \
	"select coalesce(string_agg(consumer_name, ',' order by consumer_name collate \"C\")," \
	" '')"                                                                                 \
	" from pgq.get_consumer_info('" CT_QUEUE "')"
#define SUBSCRIBERS                                                       \
	"select coalesce(string_agg(node_name || ':' || worker_name, ','" \
	" order by node_name collate \"C\"),"                             \
	" '') from pgq_node.get_subscriber_info('" CT_QUEUE "')"

START_TEST(test_change_provider_consumer)
{
	char *root = ct_node_db(), *b1 = ct_node_db(), *b2 = ct_node_db(), *lf = ct_node_db(),
	     *lc = ct_node_db();
	char *dlf = ctr_dsn_dup(lf), *dlc = ctr_dsn_dup(lc);
	CtlRun r;

	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	ct_make_sub("branch", b2, "b2", root, "root", root);
	ct_make_sub("leaf", lf, "lf", b1, "b1", root);
	ct_make_sub("leaf", lc, "lc", b1, "b1", root);
	ct_make_applied(lf);
	ct_make_applied(lc);
	/* lc's own worker does not run: the plain cascaded consumer c1 reads for
	   it, from b1's tick 1, before any data event */
	pgt_exec_db(lc, "select * from pgq_node.register_consumer('" CT_QUEUE "', 'c1', 'b1', 1)");
	pgt_exec_db(b1, "select pgq.register_consumer_at('" CT_QUEUE "', 'c1', 1)");

	CtLoop l = {event_base_new()};
	CtWorker w1 = {.quiet = true}, w2 = {.quiet = true}, wl = {.quiet = true, .apply = true},
		 wc = {.quiet = true, .apply = true, .worker = "c1"};
	ct_start_on(&w1, l.base, b1, POLL);
	ct_start_on(&w2, l.base, b2, POLL);
	ct_start_on(&wl, l.base, lf, POLL);
	ct_start_on(&wc, l.base, lc, POLL);
	ct_loop_go(&l);

	Prod p = {.conninfo = strdup(pgt_connstr(root, false))};
	ck_assert_int_eq(pthread_create(&p.th, NULL, produce, &p), 0);
	Count k = {lf, "select count(*) from applied where ev_type = 'data'", 100};
	ck_assert_msg(pgt_wait_until(count_reached, &k, CATCH_UP_MS, 50),
		      "the leaf applied nothing");

	/* the leaf's own worker, named by --consumer: the node moves */
	r = ctr_node(dlf, (const char *[]){"change-provider", "--cascade", CT_QUEUE, "--consumer",
					   "w_lf", "--provider", "b2", NULL});
	ctr_dump(&r);
	ctr_expect(&r, 0, "change provider of worker w_lf on node lf to b2", NULL);
	ck_assert_msg(strstr(r.out, "drop its registration on the former provider: done"), "%s",
		      r.out);
	ctr_free(&r);
	/* a consumer on no member: named, nothing changes */
	r = ctr_node(dlf, (const char *[]){"change-provider", "--cascade", CT_QUEUE, "--consumer",
					   "nobody", "--provider", "b2", NULL});
	ctr_expect(&r, 1, NULL, "no consumer nobody in pgq_node.local_state of any member");
	ctr_free(&r);
	/* a plain cascaded consumer of lc, asked for on lf's database: found on lc
	   among the members; only its PgQ registration moves */
	r = ctr_node(dlf, (const char *[]){"change-provider", "--cascade", CT_QUEUE, "--consumer",
					   "c1", "--provider", "b2", NULL});
	ctr_dump(&r);
	ctr_expect(&r, 0, "change provider of consumer c1 on node lc to b2", NULL);
	ctr_free(&r);
	/* both keep reading under load from their new provider */
	int64_t more = pgt_int_db(root, "select count(*) from (" DATA_SQL ") x") + 100;
	Count k2 = {lc, "select count(*) from applied where ev_type = 'data'", more};
	ck_assert_msg(pgt_wait_until(count_reached, &k2, CATCH_UP_MS, 50), "c1 stopped reading");
	p.stop = true;
	pthread_join(p.th, NULL);
	tick(root);

	size_t n;
	int64_t *all = ct_fetch_sorted(root, DATA_SQL, &n);
	ck_assert_int_gt((int64_t)n, 200);
	ct_expect_exactly("lf (w_lf moved)", lf, APPLIED_SQL, all, n, NULL);
	ct_expect_exactly("lc (c1 moved)", lc, APPLIED_SQL, all, n, NULL);
	/* the worker moved as a node: subscriber rows and .lf.watermark follow it */
	ct_expect_value(b2, SUBSCRIBERS, "lf:w_lf");
	ct_expect_value(b1, SUBSCRIBERS, "lc:w_lc");
	ct_expect_value(b1, CONSUMERS_OF(b1), ".global_watermark,.lc.watermark,w_lc");
	ct_expect_value(b2, CONSUMERS_OF(b2), ".global_watermark,.lf.watermark,c1,w_lf");
	ct_expect_value(lf, "select provider_node from pgq_node.get_node_info('" CT_QUEUE "')",
			"b2");
	ct_expect_value(lc,
			"select provider_node from pgq_node.local_state"
			" where queue_name = '" CT_QUEUE "' and consumer_name = 'c1'",
			"b2");
	/* again: nothing to do */
	r = ctr_node(dlc, (const char *[]){"change-provider", "--cascade", CT_QUEUE, "--consumer",
					   "c1", "--provider", "b2", NULL});
	ctr_expect(&r, 0, "already done", NULL);
	ctr_free(&r);

	ct_loop_hold(&l);
	ct_stop(&w1);
	ct_stop(&w2);
	ct_stop(&wl);
	ct_stop(&wc);
	event_base_free(l.base);
	free(all);
	free(p.conninfo);
	free(dlf);
	free(dlc);
	free(root);
	free(b1);
	free(b2);
	free(lf);
	free(lc);
}
END_TEST

/* Point every listed node's location of `name` to `loc`. */
static void set_location(const char *const *dbs, int n, const char *name, const char *loc)
{
	for (int i = 0; i < n; i++) {
		PGconn *c = pgt_connect(dbs[i]);
		const char *p[2] = {loc, name};
		PGresult *res = PQexecParams(c,
					     "update pgq_node.node_location set node_location = $1"
					     " where node_name = $2",
					     2, NULL, p, NULL, NULL, 0);
		ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
		PQclear(res);
		PQfinish(c);
	}
}

START_TEST(test_failover_branch_ahead)
{
	char *root = ct_node_db(), *b1 = ct_node_db(), *b2 = ct_node_db(), *lf = ct_node_db();
	char *db1 = ctr_dsn_dup(b1), *root_loc = strdup(pgt_connstr(root, false));
	const char *surv[3] = {b1, b2, lf};
	CtlRun r;

	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	ct_make_sub("branch", b2, "b2", root, "root", root);
	ct_make_sub("leaf", lf, "lf", root, "root", root);
	ct_make_applied(lf);

	CtLoop l = {event_base_new()};
	CtWorker w1 = {.quiet = true}, w2 = {.quiet = true}, wl = {.quiet = true, .apply = true};
	ct_start_on(&w1, l.base, b1, POLL);
	ct_start_on(&w2, l.base, b2, POLL);
	ct_start_on(&wl, l.base, lf, POLL);
	ct_loop_go(&l);
	produce_n(root, 0, 100);
	Sync all3 = {root, {b1, b2, lf}, {"b1", "b2", "lf"}, 3};
	ck_assert_msg(pgt_wait_until(synced, &all3, CATCH_UP_MS, 50),
		      "the cascade did not catch up");
	int64_t t1 = ct_last_tick(root);

	/* b1 stops; b2 and the leaf get 100 events more */
	worker_stop(&l, &w1);
	produce_n(root, 100, 100);
	Sync ahead = {root, {b2, lf}, {"b2", "lf"}, 2};
	ck_assert_msg(pgt_wait_until(synced, &ahead, CATCH_UP_MS, 50), "b2 did not catch up");
	int64_t t2 = ct_last_tick(root);
	ck_assert_int_gt(t2, t1);
	/* the root's host is gone: 50 events more that nobody copied, then no
	   survivor reaches it (its location leads to a closed port). b2 owes its
	   last tick (stopped between its batch's commit and the tick): it is
	   the most advanced survivor all the same, and the failover makes that
	   tick there before b1 reads from it */
	ct_loop_hold(&l);
	ct_stop(&w2);
	ct_stop(&wl);
	{
		char sql[200];
		snprintf(sql, sizeof(sql), "delete from pgq.tick where tick_id = %lld",
			 (long long)t2);
		pgt_exec_db(b2, sql);
	}
	ck_assert_int_eq(ct_completed(b2, "b2"), t2);
	produce_n(root, 200, 50);
	set_location(surv, 3, "root", "host=127.0.0.1 port=1 dbname=gone");
	ct_start_on(&w1, l.base, b1, POLL);
	ct_start_on(&w2, l.base, b2, POLL);
	ct_start_on(&wl, l.base, lf, POLL);
	ct_loop_go(&l);
	ck_assert_int_eq(ct_last_tick(b1), t1);

	r = ctr_node(db1, (const char *[]){"failover", "--dead", "root", "b1", "--cascade",
					   CT_QUEUE, NULL});
	ctr_dump(&r);
	ctr_expect(&r, 0, NULL, NULL);
	{
		char want[200];
		snprintf(want, sizeof(want), "b1 got ticks %lld..%lld from b2", (long long)t1,
			 (long long)t2);
		ck_assert_msg(strstr(r.out, want), "no \"%s\" in:\n%s", want, r.out);
	}
	{
		char want[200];
		snprintf(want, sizeof(want), "b2 made tick %lld: its worker had applied that batch",
			 (long long)t2);
		ck_assert_msg(strstr(r.out, want), "no \"%s\" in:\n%s", want, r.out);
	}
	ck_assert_int_eq((long long)ctr_number_after(r.out, "it resumed from tick "), t2);
	ck_assert_ptr_nonnull(strstr(r.out, "events only on root: not known, it does not answer"));
	ctr_free(&r);
	/* b2 and the leaf read from the new root now */
	ct_expect_value(b2, "select provider_node from pgq_node.get_node_info('" CT_QUEUE "')",
			"b1");
	ct_expect_value(lf, "select provider_node from pgq_node.get_node_info('" CT_QUEUE "')",
			"b1");
	ct_expect_value(b1, "select node_type from pgq_node.get_node_info('" CT_QUEUE "')", "root");
	/* the new root's writes reach everyone; the leaf has each event once */
	produce_n(b1, 1000, 50);
	Sync after = {b1, {b2, lf}, {"b2", "lf"}, 2};
	ck_assert_msg(pgt_wait_until(synced, &after, CATCH_UP_MS, 50), "b2 / lf did not follow b1");
	size_t n;
	int64_t *on_b1 = ct_fetch_sorted(b1, DATA_SQL, &n);
	ck_assert_int_eq((int64_t)n, 250);
	ct_expect_exactly("lf", lf, APPLIED_SQL, on_b1, n, NULL);
	/* b1 took the 100 events only b2 had: b2's queue holds the same data events
	   (the new root's own pgq.global-watermark events may not be ticked yet) */
	ct_expect_exactly("b2 queue", b2, DATA_SQL, on_b1, n, NULL);

	/* the root answers again: the same command fences it and counts its 50 */
	set_location(surv, 3, "root", root_loc);
	r = ctr_node(db1, (const char *[]){"failover", "--dead", "root", "b1", "--cascade",
					   CT_QUEUE, NULL});
	ctr_dump(&r);
	ctr_expect(&r, 0, "root answers: its writes are off now", NULL);
	ck_assert_int_eq((long long)ctr_number_after(strstr(r.out, "events only on root: "),
						     "events only on root: "),
			 50);
	ctr_free(&r);

	ct_loop_hold(&l);
	ct_stop(&w1);
	ct_stop(&w2);
	ct_stop(&wl);
	event_base_free(l.base);
	free(on_b1);
	free(root_loc);
	free(db1);
	free(root);
	free(b1);
	free(b2);
	free(lf);
}
END_TEST

/* A leaf that applied ticks no branch has: failover refuses before changing
   anything (under NEW it would skip NEW's first ticks); with the leaf's position
   moved back as the message says, it goes through, and the leaf holds its own
   extra events and all of NEW's, each once. */
/* root -> branch b1 and leaf lf (applying), their workers running on l, 20
   events produced on root. */
static void start_root_b1_lf(const char *root, const char *b1, const char *lf, CtLoop *l,
			     CtWorker *w1, CtWorker *wl)
{
	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	ct_make_sub("leaf", lf, "lf", root, "root", root);
	ct_make_applied(lf);
	ct_start_on(w1, l->base, b1, POLL);
	ct_start_on(wl, l->base, lf, POLL);
	ct_loop_go(l);
	produce_n(root, 0, 20);
}

START_TEST(test_failover_leaf_ahead)
{
	char *root = ct_node_db(), *b1 = ct_node_db(), *lf = ct_node_db();
	char *db1 = ctr_dsn_dup(b1), *dlf = ctr_dsn_dup(lf);
	const char *surv[2] = {b1, lf};
	CtlRun r;

	CtLoop l = {event_base_new()};
	CtWorker w1 = {.quiet = true}, wl = {.quiet = true, .apply = true};
	start_root_b1_lf(root, b1, lf, &l, &w1, &wl);
	Sync both = {root, {b1, lf}, {"b1", "lf"}, 2};
	ck_assert_msg(pgt_wait_until(synced, &both, CATCH_UP_MS, 50),
		      "the cascade did not catch up");
	int64_t t1 = ct_last_tick(root);
	worker_stop(&l, &w1);
	produce_n(root, 20, 10);
	Sync leaf = {root, {lf}, {"lf"}, 1};
	ck_assert_msg(pgt_wait_until(synced, &leaf, CATCH_UP_MS, 50), "the leaf did not catch up");
	int64_t t2 = ct_last_tick(root);
	ct_loop_hold(&l);
	ct_stop(&wl);
	set_location(surv, 2, "root", "host=127.0.0.1 port=1 dbname=gone");
	ct_start_on(&w1, l.base, b1, POLL);
	ct_start_on(&wl, l.base, lf, POLL);
	ct_loop_go(&l);

	r = ctr_node(db1, (const char *[]){"failover", "--dead", "root", "b1", "--cascade",
					   CT_QUEUE, NULL});
	{
		char want[200];
		snprintf(want, sizeof(want),
			 "node lf has applied ticks up to %lld from root, past tick %lld",
			 (long long)t2, (long long)t1);
		ctr_expect(&r, 1, NULL, want);
		ck_assert_ptr_nonnull(strstr(r.err, "Nothing was changed"));
		snprintf(want, sizeof(want),
			 "select pgq_node.set_consumer_completed('" CT_QUEUE "', 'w_lf', %lld)",
			 (long long)t1);
		ck_assert_msg(strstr(r.err, want), "%s", r.err);
	}
	ctr_free(&r);
	ct_expect_value(b1, "select node_type from pgq_node.get_node_info('" CT_QUEUE "')",
			"branch");
	ct_expect_value(b1, "select count(*) from pgq_node.node_location where dead", "0");

	/* as the message says: the leaf paused, its position back at t1 */
	r = ctr_node(dlf, (const char *[]){"pause", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "w_lf paused", NULL);
	ctr_free(&r);
	{
		char sql[200];
		snprintf(sql, sizeof(sql),
			 "select * from pgq_node.set_consumer_completed('" CT_QUEUE
			 "', 'w_lf', %lld)",
			 (long long)t1);
		pgt_exec_db(lf, sql);
	}
	r = ctr_node(db1, (const char *[]){"failover", "--dead", "root", "b1", "--cascade",
					   CT_QUEUE, NULL});
	ctr_dump(&r);
	ctr_expect(&r, 0, "move lf under b1: done", NULL);
	ck_assert_int_eq((long long)ctr_number_after(r.out, "it resumed from tick "), t1);
	ctr_free(&r);
	r = ctr_node(dlf, (const char *[]){"resume", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "w_lf resumed", NULL);
	ctr_free(&r);
	produce_n(b1, 100, 10);
	Sync after = {b1, {lf}, {"lf"}, 1};
	ck_assert_msg(pgt_wait_until(synced, &after, CATCH_UP_MS, 50),
		      "the leaf did not follow b1");
	/* b1's events (0..19, 100..109) and the root's 20..29 the leaf had applied */
	int64_t want[40];
	size_t n = 0;
	for (int64_t i = 0; i < 30; i++)
		want[n++] = i;
	for (int64_t i = 100; i < 110; i++)
		want[n++] = i;
	ct_expect_exactly("lf", lf, APPLIED_SQL, want, n, NULL);

	ct_loop_hold(&l);
	ct_stop(&w1);
	ct_stop(&wl);
	event_base_free(l.base);
	free(db1);
	free(dlf);
	free(root);
	free(b1);
	free(lf);
}
END_TEST

/* b1's worker applied the root's last batch but the tick is missing (its worker
   restarted between the commit and the tick, with the root gone, so it has no
   tick time to make it with); no survivor is ahead. The failover makes that
   tick on b1 and resumes from it: the leaf, which has the same batch, is not
   refused, nothing is read twice, and only the root's later events count as
   lost. */
START_TEST(test_failover_owed_tick)
{
	char *root = ct_node_db(), *b1 = ct_node_db(), *lf = ct_node_db();
	char *db1 = ctr_dsn_dup(b1), *root_loc = strdup(pgt_connstr(root, false));
	const char *surv[2] = {b1, lf};
	CtlRun r;

	CtLoop l = {event_base_new()};
	CtWorker w1 = {.quiet = true}, wl = {.quiet = true, .apply = true};
	start_root_b1_lf(root, b1, lf, &l, &w1, &wl);
	Sync both = {root, {b1, lf}, {"b1", "lf"}, 2};
	ck_assert_msg(pgt_wait_until(synced, &both, CATCH_UP_MS, 50),
		      "the cascade did not catch up");
	int64_t c = ct_last_tick(root);

	/* the state of a worker stopped between its batch's commit and the tick */
	ct_loop_hold(&l);
	ct_stop(&w1);
	ct_stop(&wl);
	{
		char sql[200];
		snprintf(sql, sizeof(sql), "delete from pgq.tick where tick_id = %lld",
			 (long long)c);
		pgt_exec_db(b1, sql);
	}
	ck_assert_int_eq(ct_last_tick(b1), c - 1);
	ck_assert_int_eq(ct_completed(b1, "b1"), c);
	produce_n(root, 100, 10);
	set_location(surv, 2, "root", "host=127.0.0.1 port=1 dbname=gone");
	ct_start_on(&w1, l.base, b1, POLL);
	ct_start_on(&wl, l.base, lf, POLL);
	ct_loop_go(&l);

	r = ctr_node(db1, (const char *[]){"failover", "--dead", "root", "b1", "--cascade",
					   CT_QUEUE, NULL});
	ctr_dump(&r);
	ctr_expect(&r, 0, "move lf under b1: done", NULL);
	{
		char want[200];
		snprintf(want, sizeof(want), "b1 made tick %lld: its worker had applied that batch",
			 (long long)c);
		ck_assert_msg(strstr(r.out, want), "no \"%s\" in:\n%s", want, r.out);
	}
	ck_assert_int_eq((long long)ctr_number_after(r.out, "it resumed from tick "), c);
	ctr_free(&r);

	/* the new root's events reach the leaf; the 20 it had are not read again */
	produce_n(b1, 1000, 5);
	Sync after = {b1, {lf}, {"lf"}, 1};
	ck_assert_msg(pgt_wait_until(synced, &after, CATCH_UP_MS, 50),
		      "the leaf did not follow b1");
	int64_t want[25];
	size_t n = 0;
	for (int64_t i = 0; i < 20; i++)
		want[n++] = i;
	for (int64_t i = 1000; i < 1005; i++)
		want[n++] = i;
	ct_expect_exactly("lf", lf, APPLIED_SQL, want, n, NULL);

	/* the root answers: its 10 later events, and only those, were lost */
	set_location(surv, 2, "root", root_loc);
	r = ctr_node(db1, (const char *[]){"failover", "--dead", "root", "b1", "--cascade",
					   CT_QUEUE, NULL});
	ctr_dump(&r);
	ctr_expect(&r, 0, "root answers: its writes are off now", NULL);
	ck_assert_int_eq((long long)ctr_number_after(strstr(r.out, "events only on root: "), "("),
			 10);
	ctr_free(&r);

	ct_loop_hold(&l);
	ct_stop(&w1);
	ct_stop(&wl);
	event_base_free(l.base);
	free(root_loc);
	free(db1);
	free(root);
	free(b1);
	free(lf);
}
END_TEST

/* ---- Debian's pgq_node (postgresql-15-pgq-node) ---- */

START_TEST(test_debian_drop_resurrect_wait)
{
	PGconn *pc = pgt_connect("postgres");
	bool have = pgt_int(pc, "select count(*) from pg_available_extensions"
				" where name in ('pgq', 'pgq_node')") == 2;
	PQfinish(pc);
	if (pgt_missing(!have, "Debian's postgresql-15-pgq3 and postgresql-15-pgq-node"))
		return;
	char *root = ct_debian_db("nm_deb_root"), *b1 = ct_debian_db("nm_deb_b1"),
	     *lf = ct_debian_db("nm_deb_lf"), *sp = ct_debian_db("nm_deb_sp");
	char *droot = ctr_dsn_dup(root), *db1 = ctr_dsn_dup(b1), *dlf = ctr_dsn_dup(lf);
	char *root_loc = strdup(pgt_connstr(root, false)), file[600];
	const char *surv[2] = {b1, lf};
	CtlRun r;

	/* Debian's extension, not ours */
	ct_expect_value(root, "select extversion from pg_extension where extname = 'pgq_node'",
			"3.5");
	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	ct_make_sub("leaf", lf, "lf", b1, "b1", root);
	ct_make_sub("leaf", sp, "sp", b1, "b1", root);
	CtLoop l = {event_base_new()};
	CtWorker w1 = {.quiet = true}, wl = {.quiet = true};
	ct_start_on(&w1, l.base, b1, POLL);
	ct_start_on(&wl, l.base, lf, POLL);
	ct_loop_go(&l);
	produce_n(root, 0, 20);

	/* wait-provider / wait-root return once the leaf has the ticks */
	r = ctr_node(dlf, (const char *[]){"wait-root", CT_QUEUE, "--timeout", "30", NULL});
	ctr_expect(&r, 0, "caught up", NULL);
	ctr_free(&r);
	ck_assert_int_eq(ct_completed(lf, "lf"), ct_last_tick(root));
	r = ctr_node(dlf, (const char *[]){"wait-provider", CT_QUEUE, "--timeout", "30", NULL});
	ctr_expect(&r, 0, "caught up", NULL);
	ctr_free(&r);
	/* with b1 paused, the leaf cannot reach the root's next tick: exit 4 */
	r = ctr_node(db1, (const char *[]){"pause", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "w_b1 paused", NULL);
	ctr_free(&r);
	produce_n(root, 20, 10);
	r = ctr_node(dlf, (const char *[]){"wait-root", CT_QUEUE, "--timeout", "1", NULL});
	ctr_expect(&r, 4, NULL, "after 1 s");
	ctr_free(&r);
	ck_assert_int_lt(ct_completed(lf, "lf"), ct_last_tick(root));
	r = ctr_node(db1, (const char *[]){"resume", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "w_b1 resumed", NULL);
	ctr_free(&r);
	r = ctr_node(dlf, (const char *[]){"wait-root", CT_QUEUE, "--timeout", "30", NULL});
	ctr_expect(&r, 0, "caught up", NULL);
	ctr_free(&r);

	/* drop-node: the spare leaf (its worker never ran) goes from every member */
	r = ctr_node(droot, (const char *[]){"drop-node", CT_QUEUE, "sp", NULL});
	ctr_dump(&r);
	ctr_expect(&r, 0, "finished", NULL);
	ctr_free(&r);
	ct_expect_value(sp, "select count(*) from pgq_node.node_info", "0");
	ct_expect_value(b1, SUBSCRIBERS, "lf:w_lf");
	ct_expect_value(b1, CONSUMERS_OF(b1), ".global_watermark,.lf.watermark,w_lf");
	ct_expect_value(root, "select count(*) from pgq_node.node_location where node_name = 'sp'",
			"0");
	r = ctr_node(droot, (const char *[]){"drop-node", CT_QUEUE, "sp", NULL});
	ctr_expect(&r, 0, "nothing to do", NULL);
	ctr_free(&r);

	/* drop-node announced sp's removal with an event on the root: the survivors
	   get it, so that exactly the 7 events below are the root's own */
	tick(root);
	Sync both = {root, {b1, lf}, {"b1", "lf"}, 2};
	ck_assert_msg(pgt_wait_until(synced, &both, CATCH_UP_MS, 50),
		      "the cascade did not catch up");

	/* the root's host goes away with 7 events nobody copied; b1 takes over */
	ct_loop_hold(&l);
	ct_stop(&w1);
	ct_stop(&wl);
	produce_n(root, 100, 3);
	produce_n(root, 103, 4);
	set_location(surv, 2, "root", "host=127.0.0.1 port=1 dbname=gone");
	ct_start_on(&w1, l.base, b1, POLL);
	ct_start_on(&wl, l.base, lf, POLL);
	ct_loop_go(&l);
	r = ctr_node(db1, (const char *[]){"failover", "--dead", "root", "b1", "--cascade",
					   CT_QUEUE, NULL});
	ctr_dump(&r);
	ctr_expect(&r, 0, "events only on root: not known", NULL);
	int64_t g = (int64_t)ctr_number_after(r.out, "it resumed from tick ");
	ctr_free(&r);
	set_location(surv, 2, "root", root_loc);
	produce_n(b1, 1000, 5);

	/* resurrect: the old root reports its 7 and becomes a paused branch of b1 */
	snprintf(file, sizeof(file), "%s/deb-lost.json", pgt_tmp_dir());
	r = ctr_node(droot, (const char *[]){"resurrect", CT_QUEUE, "--lost-events", file, NULL});
	ctr_dump(&r);
	ctr_expect(&r, 0, "LOST EVENTS: 7\n", NULL);
	ctr_free(&r);
	ct_expect_value(root,
			"select node_type || '/' || provider_node || '/' || worker_paused::text"
			" from pgq_node.get_node_info('" CT_QUEUE "')",
			"branch/b1/true");
	{
		char sql[200];
		snprintf(sql, sizeof(sql), "select count(*) from pgq.tick where tick_id > %lld",
			 (long long)g);
		ct_expect_value(root, sql, "0");
	}
	/* resumed, it follows b1: the same data events as b1, each once */
	r = ctr_node(droot, (const char *[]){"resume", CT_QUEUE, "--no-wait", NULL});
	ctr_expect(&r, 0, "w_root resumed", NULL);
	ctr_free(&r);
	CtWorker wr = {.quiet = true};
	ct_loop_hold(&l);
	ct_start_on(&wr, l.base, root, POLL);
	ct_loop_go(&l);
	tick(b1);
	Sync back = {b1, {root, lf}, {"root", "lf"}, 2};
	ck_assert_msg(pgt_wait_until(synced, &back, CATCH_UP_MS, 50),
		      "the old root did not follow b1");
	size_t n;
	int64_t *on_b1 = ct_fetch_sorted(b1, DATA_SQL, &n);
	ck_assert_int_eq((int64_t)n, 35);
	ct_expect_exactly("old root", root, DATA_SQL, on_b1, n, NULL);

	ct_loop_hold(&l);
	ct_stop(&w1);
	ct_stop(&wl);
	ct_stop(&wr);
	event_base_free(l.base);
	free(on_b1);
	free(root_loc);
	free(droot);
	free(db1);
	free(dlf);
	free(root);
	free(b1);
	free(lf);
	free(sp);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pgqctl-nodemove");
	const char *names[5] = {"consumer", "ahead", "leaf_ahead", "owed_tick", "debian"};
	const TTest *tests[5] = {test_change_provider_consumer, test_failover_branch_ahead,
				 test_failover_leaf_ahead, test_failover_owed_tick,
				 test_debian_drop_resurrect_wait};
	for (int i = 0; i < 5; i++) {
		TCase *tc = pgt_tcase(names[i], 180);
		tcase_add_checked_fixture(tc, cs_setup, cs_teardown);
		tcase_add_test(tc, tests[i]);
		suite_add_tcase(s, tc);
	}
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
