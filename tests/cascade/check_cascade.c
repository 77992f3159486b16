/*
 * Cascade workers against a private server: a root -> branch -> branch -> leaf
 * chain holds the root's events and ticks, a consumer's batches on a branch equal
 * its batches on the root, and bad input (no pgq_node, no node, two workers for
 * one node) gives a clear error and changes nothing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "castest.h"

#define POLL (50 * PGQEV_USEC_PER_MSEC)

/* A consumer's batches, drained with the plain PgQ calls: "prev-cur:ids;" each. */
static char *drain_batches(const char *db, const char *consumer)
{
	PGconn *c = pgt_connect(db);
	size_t cap = 1 << 16, n = 0;
	char *out = malloc(cap);
	ck_assert_ptr_nonnull(out);
	out[0] = '\0';
	for (;;) {
		char sql[256];
		snprintf(sql, sizeof(sql),
			 "select batch_id, prev_tick_id, cur_tick_id"
			 " from pgq.next_batch_info('" CT_QUEUE "', '%s')",
			 consumer);
		PGresult *r = PQexec(c, sql);
		ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
		if (PQgetisnull(r, 0, 0)) {
			PQclear(r);
			break;
		}
		char bid[32];
		snprintf(bid, sizeof(bid), "%s", PQgetvalue(r, 0, 0));
		char head[96];
		snprintf(head, sizeof(head), "%s-%s:", PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
		PQclear(r);
		snprintf(sql, sizeof(sql),
			 "select coalesce(string_agg(ev_id::text, ',' order by ev_id), '')"
			 " from pgq.get_batch_events(%s)",
			 bid);
		char *ids = pgt_value(c, sql);
		size_t need = strlen(head) + strlen(ids) + 2;
		while (n + need + 1 > cap) {
			cap *= 2;
			out = realloc(out, cap);
			ck_assert_ptr_nonnull(out);
		}
		n += (size_t)sprintf(out + n, "%s%s;", head, ids);
		free(ids);
		snprintf(sql, sizeof(sql), "select pgq.finish_batch(%s)", bid);
		pgt_exec(c, sql);
	}
	PQfinish(c);
	return out;
}

/* The leaf reports its position to its provider at most every wm_period:
   after its last batch the report comes while it idles. */
static bool leaf_wm_reported(void *arg)
{
	return pgt_int_db((const char *)arg,
			  "select count(*) from pgq.get_consumer_info('" CT_QUEUE
			  "') where consumer_name = '.lf.watermark' and last_tick > 1") > 0;
}

typedef struct TickCond {
	PGconn *c;
	int64_t above, next_ms;
} TickCond;

static bool ticked(void *arg)
{
	TickCond *t = arg;
	/* on a connection kept open, every 20 ms: the loop runs between looks */
	if (!pgt_due(&t->next_ms, 20))
		return false;
	return pgt_int(t->c, "select max(t.tick_id) from pgq.tick t join pgq.queue q"
			     " on q.queue_id = t.tick_queue where q.queue_name = '" CT_QUEUE
			     "'") > t->above;
}

/* Run the loop (its ticker and workers) until the root made a tick after now. */
static void run_until_ticked(const char *root)
{
	TickCond t = {pgt_connect(root), ct_last_tick(root), 0};
	bool ok = cs_run_until(ticked, &t, 20000);
	PQfinish(t.c);
	ck_assert_msg(ok, "no tick after %lld", (long long)t.above);
}

START_TEST(test_chain_root_branch_branch_leaf)
{
	char *root = ct_node_db(), *b1 = ct_node_db(), *b2 = ct_node_db(), *lf = ct_node_db();
	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	ct_make_sub("branch", b2, "b2", b1, "b1", root);
	ct_make_sub("leaf", lf, "lf", b2, "b2", root);
	ct_make_applied(lf);
	/* a plain consumer on the root and on the last branch, from the start, and
	   one on the last branch that is never read */
	pgt_exec_db(root, "select pgq.register_consumer('" CT_QUEUE "', 'obs')");
	pgt_exec_db(b2, "select pgq.register_consumer('" CT_QUEUE "', 'obs')");
	pgt_exec_db(b2, "select pgq.register_consumer('" CT_QUEUE "', 'held')");

	CtWorker wr = {0}, w1 = {0}, w2 = {0}, wl = {.apply = true};
	ct_start(&wr, root, POLL);
	ct_start(&w1, b1, POLL);
	ct_start(&w2, b2, POLL);
	ct_start(&wl, lf, POLL);
	cs_ticker(root, 30);
	const char *dbs[3] = {b1, b2, lf};
	const char *names[3] = {"b1", "b2", "lf"};
	for (int round = 0; round < 5; round++) {
		ct_produce(root, round * 300, round * 300 + 300);
		run_until_ticked(root); /* each round in a batch of its own */
	}
	cs_ticker(NULL, 0);
	/* the root worker's global watermark events would follow the last tick */
	ck_assert_str_eq(pgqev_cascade_node_type(wr.w), "root");
	ct_stop(&wr);
	cs_tick(root);
	ck_assert_msg(ct_wait_synced(root, dbs, names, 3, 30000), "chain did not catch up");
	int64_t last = ct_last_tick(root);
	ck_assert_int_gt(last, 5);

	char *re = ct_events(root, false);
	ck_assert_msg(strncmp(re, "0:", 2) != 0, "root has no events");
	ct_assert_same("b1 events", strdup(re), ct_events(b1, false));
	ct_assert_same("b2 events", strdup(re), ct_events(b2, false));
	ct_assert_same("leaf applied events", strdup(re), ct_events(lf, true));
	free(re);
	ct_assert_same("b1 ticks", ct_ticks(root, 1, last), ct_ticks(b1, 1, last));
	ct_assert_same("b2 ticks", ct_ticks(root, 1, last), ct_ticks(b2, 1, last));
	ct_assert_same("batches of a consumer", drain_batches(root, "obs"),
		       drain_batches(b2, "obs"));

	PgqevCascadeStats st;
	pgqev_cascade_stats(w2.w, &st);
	ck_assert_str_eq(pgqev_cascade_node_type(w2.w), "branch");
	ck_assert_str_eq(pgqev_cascade_provider(w2.w), "b1");
	ck_assert_int_eq(st.completed_tick, last);
	ck_assert_uint_ge(st.copied, 1500);
	ck_assert_str_eq(pgqev_cascade_node_type(wl.w), "leaf");
	ck_assert_int_eq(w1.errors + w2.errors + wl.errors, 0);

	/* the leaf reported its position upward; b2's own watermark stays at 1,
	   held there by the unread consumer held (obs was read to its end above:
	   with it alone the watermark b2 reports moved on, and whether b1 had it
	   yet was a race, lost on a fast machine: 10 instead of 1) */
	{
		/* the workers run on this thread's loop: keep it (and the root's idle
		   ticks, as a ticker would) going while waiting */
		int64_t until = pgt_now_ms() + (int64_t)(10000 * pgt_time_factor());
		while (!leaf_wm_reported(b2) && pgt_now_ms() < until) {
			cs_tick(root);
			cs_run_for(100);
		}
		ck_assert_msg(leaf_wm_reported(b2), "the leaf's watermark did not reach b2");
	}
	ck_assert_int_eq(pgt_int_db(b1, "select last_tick from pgq.get_consumer_info('" CT_QUEUE
					"') where consumer_name = '.b2.watermark'"),
			 1);
	ct_stop(&wl);
	ct_stop(&w2);
	ct_stop(&w1);
	free(root);
	free(b1);
	free(b2);
	free(lf);
}
END_TEST

/* Rotation rounds on the root: step1 + step2 with a tick between. */
static void rotate(const char *db, int rounds)
{
	PGconn *c = pgt_connect(db);
	for (int i = 0; i < rounds; i++) {
		pgt_exec(c, "select pgq.maint_rotate_tables_step1('" CT_QUEUE "')");
		pgt_exec(c, "select pgq.maint_rotate_tables_step2()");
		pgt_exec(c, "select pgq.ticker()");
	}
	PQfinish(c);
}

static int64_t root_events(const char *db)
{
	PGconn *c = pgt_connect(db);
	char *tbl = pgt_value(
		c, "select queue_data_pfx from pgq.queue where queue_name = '" CT_QUEUE "'");
	char sql[256];
	snprintf(sql, sizeof(sql), "select count(*) from %s where ev_type = 'num'", tbl);
	int64_t n = pgt_int(c, sql);
	free(tbl);
	PQfinish(c);
	return n;
}

typedef struct GwmCond {
	PGconn *c;
	int64_t above;
	int64_t next_ms;
} GwmCond;

static bool gwm_above(void *arg)
{
	GwmCond *g = arg;
	if (!pgt_due(&g->next_ms, 50))
		return false;
	return pgt_int(g->c, "select last_tick from pgq.get_consumer_info('" CT_QUEUE
			     "') where consumer_name = '.global_watermark'") > g->above;
}

typedef struct RotCond {
	const char *db;
	int64_t next_ms;
} RotCond;

/* A rotation round every 400 ms; true once the 100 held events are gone. */
static bool rotated_away(void *arg)
{
	RotCond *r = arg;
	if (!pgt_due(&r->next_ms, 400))
		return false;
	rotate(r->db, 1);
	return root_events(r->db) < 100;
}

/* root -> b1 -> b2 with b2's worker not running: the root keeps b2's events
   through rotation although b1 copied them long ago; once b2 caught up and the
   watermarks went round, rotation drops them (the control). */
START_TEST(test_watermark_holds_rotation)
{
	char *root = ct_node_db(), *b1 = ct_node_db(), *b2 = ct_node_db();
	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	ct_make_sub("branch", b2, "b2", b1, "b1", root);
	pgt_exec_db(root, "select pgq.set_queue_config('" CT_QUEUE "', 'rotation_period', '0')");
	CtWorker wr = {0}, w1 = {0}, w2 = {0};
	ct_start(&wr, root, POLL);
	ct_start(&w1, b1, POLL);
	for (int i = 0; i < 4; i++) {
		ct_produce(root, i * 100, i * 100 + 100);
		cs_tick(root);
	}
	const char *dbs[2] = {b1, b2};
	const char *names[2] = {"b1", "b2"};
	ck_assert(ct_wait_synced(root, dbs, names, 1, 20000));
	/* rotation rounds with ticks and watermark rounds between them: what
	   lets rotation proceed in the control below */
	cs_ticker(root, 50);
	for (int i = 0; i < 8; i++) {
		rotate(root, 1);
		cs_run_for(800);
	}
	ck_assert_int_eq(root_events(root), 400 / 4);
	/* the lagging branch starts: everything arrives, then the watermark moves
	   (watermarks are published after batches: keep ticking) */
	ct_start(&w2, b2, POLL);
	/* a fixed target: with the 50 ms ticker running, a loaded machine made
	   ticks faster than the branches went through them */
	cs_ticker(NULL, 0);
	cs_tick(root);
	ck_assert(ct_wait_synced(root, dbs, names, 2, 20000));
	cs_ticker(root, 50);
	GwmCond g = {.c = pgt_connect(root), .above = 1};
	ck_assert_msg(cs_run_until(gwm_above, &g, 20000), "the global watermark never moved");
	PQfinish(g.c);
	/* every rotation waits for all positions and watermarks to pass the last
	   switch: rotate every 400 ms (they go round between rounds) until the
	   events are gone */
	RotCond rc = {.db = root};
	ck_assert_msg(cs_run_until(rotated_away, &rc, (int)(20000 * pgt_time_factor())),
		      "rotation never dropped b2's events once it caught up");
	cs_ticker(NULL, 0);
	ct_stop(&wr);
	ct_stop(&w2);
	ct_stop(&w1);
	free(root);
	free(b1);
	free(b2);
}
END_TEST

static int64_t gwm_of(PGconn *c)
{
	return pgt_int(c, "select last_tick from pgq.get_consumer_info('" CT_QUEUE
			  "') where consumer_name = '.global_watermark'");
}

static int64_t local_wm_of(const char *db)
{
	return pgt_int_db(db, "select local_watermark from pgq_node.get_node_info('" CT_QUEUE "')");
}

static int64_t nums_from(const char *db, int from)
{
	PGconn *c = pgt_connect(db);
	char *tbl = pgt_value(
		c, "select queue_data_pfx from pgq.queue where queue_name = '" CT_QUEUE "'");
	char sql[256];
	snprintf(sql, sizeof(sql),
		 "select count(*) from %s where ev_type = 'num' and ev_data::int >= %d", tbl, from);
	int64_t n = pgt_int(c, sql);
	free(tbl);
	PQfinish(c);
	return n;
}

/* the local watermark of node db has reached the position of node of */
typedef struct WmReached {
	const char *db, *of;
	int64_t next_ms;
} WmReached;

static bool wm_reached(void *arg)
{
	WmReached *k = arg;
	if (!pgt_due(&k->next_ms, 50))
		return false;
	int64_t want = local_wm_of(k->of);
	return want > 1 && local_wm_of(k->db) == want;
}

/* the global watermark of a node equals (eq) or exceeds (!eq) v */
typedef struct GwmIs {
	PGconn *c;
	int64_t v;
	bool eq;
	int64_t next_ms;
} GwmIs;

static bool gwm_is(void *arg)
{
	GwmIs *g = arg;
	if (!pgt_due(&g->next_ms, 50))
		return false;
	int64_t cur = gwm_of(g->c);
	return g->eq ? cur == g->v : cur > g->v;
}

/* root -> b1, root -> b2 -> l2, b1 and b2 with sync_watermark, l2 stopped
   after it got somewhere. b2 reports only its own position upward, so nothing
   on the root waits for l2; b1 names b2, so its global watermark stops at b2's local
   watermark (l2's position), its rotation keeps what l2 has not read, and the
   pgq.global-watermark events it passes on carry its own value. Once b2 is no
   longer named, b1 follows the root again. */
START_TEST(test_sync_watermark)
{
	char *root = ct_node_db(), *b1 = ct_node_db(), *b2 = ct_node_db(), *l2 = ct_node_db();
	ct_make_root(root, "root");
	ct_make_sub("branch", b2, "b2", root, "root", root);
	ct_make_sub("leaf", l2, "l2", b2, "b2", root);
	ct_make_sub("branch", b1, "b1", root, "root", root);
	pgt_exec_db(b1, "select * from pgq_node.set_node_attrs('" CT_QUEUE
			"', 'sync_watermark=b1%2cb2')");
	pgt_exec_db(b2,
		    "select * from pgq_node.set_node_attrs('" CT_QUEUE "', 'sync_watermark=b2')");
	pgt_exec_db(root, "select pgq.set_queue_config('" CT_QUEUE "', 'rotation_period', '0')");
	pgt_exec_db(b1, "select pgq.set_queue_config('" CT_QUEUE "', 'rotation_period', '0')");
	CtWorker wr = {0}, w1 = {0}, w2 = {0}, wl = {0};
	ct_start(&wr, root, POLL);
	ct_start(&w1, b1, POLL);
	ct_start(&w2, b2, POLL);
	ct_start(&wl, l2, POLL);
	/* l2 gets somewhere, then stops */
	for (int i = 0; i < 2; i++) {
		ct_produce(root, i * 100, i * 100 + 100);
		cs_tick(root);
	}
	const char *dbs[3] = {b1, b2, l2};
	const char *names[3] = {"b1", "b2", "l2"};
	ck_assert(ct_wait_synced(root, dbs, names, 3, 20000));
	/* no batch follows l2's last one: its report of that position comes
	   while it idles, once wm_period has passed */
	WmReached wr2 = {.db = b2, .of = l2};
	ck_assert_msg(cs_run_until(wm_reached, &wr2, 20000),
		      "b2's local watermark %lld, l2 is at %lld", (long long)local_wm_of(b2),
		      (long long)local_wm_of(l2));
	ct_stop(&wl);
	int64_t g2 = local_wm_of(b2);
	ck_assert_int_gt(g2, 1);
	/* more events, and rotation rounds on the root and on b1 */
	for (int i = 2; i < 6; i++) {
		ct_produce(root, i * 100, i * 100 + 100);
		cs_tick(root);
	}
	ck_assert(ct_wait_synced(root, dbs, names, 2, 20000));
	cs_ticker(root, 50);
	GwmIs g = {.c = pgt_connect(b1), .v = g2, .eq = true};
	ck_assert_msg(cs_run_until(gwm_is, &g, 20000), "b1's global watermark %lld, not %lld",
		      (long long)gwm_of(g.c), (long long)g2);
	for (int i = 0; i < 8; i++) {
		rotate(b1, 1);
		cs_run_for(800);
	}
	ck_assert_int_eq(local_wm_of(b2), g2);
	ck_assert_int_eq(gwm_of(g.c), g2);
	PGconn *rc = pgt_connect(root);
	/* the root is not held by l2: every position and watermark there, which
	   is what its rotation waits for, is past l2's */
	ck_assert_int_gt(gwm_of(rc), g2);
	ck_assert_int_gt(
		pgt_int(rc, "select min(last_tick) from pgq.get_consumer_info('" CT_QUEUE "')"),
		g2);
	ck_assert_int_eq(nums_from(b1, 200), 100);
	/* what b1 passed on: its own watermark, never the root's */
	char *tbl = pgt_value(
		g.c, "select queue_data_pfx from pgq.queue where queue_name = '" CT_QUEUE "'");
	char sql[300];
	snprintf(sql, sizeof(sql),
		 "select count(*) filter (where ev_data::int8 > %lld) || '/' || count(*) from %s"
		 " where ev_type = 'pgq.global-watermark'",
		 (long long)g2, tbl);
	char *passed = pgt_value(g.c, sql);
	ck_assert_msg(strncmp(passed, "0/", 2) == 0 && strcmp(passed, "0/0") != 0, "%s", passed);
	free(passed);
	free(tbl);
	/* b2 no longer named: b1 follows the root and rotates */
	pgt_exec_db(b1,
		    "select * from pgq_node.set_node_attrs('" CT_QUEUE "', 'sync_watermark=b1')");
	g.eq = false;
	ck_assert_msg(cs_run_until(gwm_is, &g, 20000), "b1's global watermark stays at %lld",
		      (long long)gwm_of(g.c));
	/* nothing on b1 waits for l2 any more: what its rotation waits for is
	   past l2's position */
	ck_assert_int_gt(
		pgt_int(g.c, "select min(last_tick) from pgq.get_consumer_info('" CT_QUEUE "')"),
		g2);
	ck_assert_int_eq(w1.errors, 0);
	cs_ticker(NULL, 0);
	PQfinish(rc);
	PQfinish(g.c);
	ct_stop(&wr);
	ct_stop(&w1);
	ct_stop(&w2);
	free(root);
	free(b1);
	free(b2);
	free(l2);
}
END_TEST

START_TEST(test_no_pgq_node)
{
	const char *db = pgt_db_new_empty();
	CtWorker x = {.quiet = true};
	ct_start(&x, db, POLL);
	CtErrCond e = {&x, "pgq_node"};
	ck_assert_msg(cs_run_until(ct_has_error, &e, 10000), "%s", x.last_error);
	ck_assert_int_eq(pgqev_cascade_state(x.w), PGQEV_STATE_BACKOFF);
	ck_assert_ptr_null(pgqev_cascade_node_type(x.w));
	ct_stop(&x);
	ck_assert_int_eq(
		pgt_int_db(db, "select count(*) from pg_namespace where nspname like 'pgq%'"), 0);
}
END_TEST

START_TEST(test_not_a_node)
{
	char *db = ct_node_db();
	CtWorker x = {.quiet = true};
	ct_start(&x, db, POLL);
	CtErrCond e = {&x, "no node of cascade " CT_QUEUE};
	ck_assert_msg(cs_run_until(ct_has_error, &e, 10000), "%s", x.last_error);
	ct_stop(&x);
	ck_assert_int_eq(pgt_int_db(db, "select count(*) from pgq_node.node_info"), 0);
	ck_assert_int_eq(pgt_int_db(db, "select count(*) from pgq.queue"), 0);
	free(db);
}
END_TEST

/* A branch whose provider is itself, then one whose position the provider
   does not hand out: a clear error each, nothing copied, no position moved. */
START_TEST(test_bad_provider_and_lost_position)
{
	char *root = ct_node_db(), *b1 = ct_node_db();
	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	ct_produce(root, 0, 50);
	cs_tick(root);
	const char *pos_sql = "select last_tick_id from pgq_node.local_state"
			      " where consumer_name = 'w_b1'";
	const char *sub_sql = "select last_tick from pgq.get_consumer_info('" CT_QUEUE "', 'w_b1')";
	int64_t pos = pgt_int_db(b1, pos_sql), sub = pgt_int_db(root, sub_sql);
	char *before = ct_events(b1, false);

	pgt_exec_db(b1, "update pgq_node.local_state set provider_node = 'b1'"
			" where consumer_name = 'w_b1'");
	CtWorker x = {.quiet = true};
	ct_start(&x, b1, POLL);
	CtErrCond e = {&x, "node b1 of cascade " CT_QUEUE " names itself as its provider"};
	ck_assert_msg(cs_run_until(ct_has_error, &e, 10000), "%s", x.last_error);
	ct_stop(&x);
	ck_assert_int_eq(pgt_int_db(b1, pos_sql), pos);
	ck_assert_int_eq(pgt_int_db(root, sub_sql), sub);

	/* the local position is not where the provider's batches start */
	char sql[200];
	snprintf(sql, sizeof(sql),
		 "update pgq_node.local_state set provider_node = 'root', last_tick_id = %" PRId64
		 " where consumer_name = 'w_b1'",
		 pos + 1000);
	pgt_exec_db(b1, sql);
	CtWorker y = {.quiet = true};
	ct_start(&y, b1, POLL);
	CtErrCond f = {&y, "lost position"};
	ck_assert_msg(cs_run_until(ct_has_error, &f, 10000), "%s", y.last_error);
	ct_stop(&y);
	ck_assert_int_eq(pgt_int_db(b1, pos_sql), pos + 1000);
	ck_assert_int_eq(pgt_int_db(root, sub_sql), sub);
	ct_assert_same("b1 events", before, ct_events(b1, false));
	free(root);
	free(b1);
}
END_TEST

/* Some session holds an advisory lock in database arg (a worker owns its node). */
static bool node_locked(void *arg)
{
	char sql[300];
	snprintf(sql, sizeof(sql),
		 "select count(*) from pg_locks l join pg_database d on d.oid = l.database"
		 " where l.locktype = 'advisory' and l.granted and d.datname = '%s'",
		 (const char *)arg);
	return pgt_int_db("postgres", sql) > 0;
}

START_TEST(test_two_workers_one_node)
{
	char *root = ct_node_db(), *b1 = ct_node_db();
	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	CtWorker a = {0}, b = {.quiet = true};
	ct_start(&a, b1, POLL);
	/* a takes the lock first */
	ck_assert(cs_run_until(node_locked, (void *)b1, 10000));
	ct_start(&b, b1, POLL);
	CtErrCond eb = {&b, "another worker runs the node of cascade " CT_QUEUE};
	ck_assert_msg(cs_run_until(ct_has_error, &eb, 10000), "%s", b.last_error);
	ck_assert_uint_eq(b.chunks, 0);
	cs_ticker(root, 30);
	ct_produce(root, 0, 500);
	run_until_ticked(root); /* both workers run past the tick */
	cs_ticker(NULL, 0);
	cs_tick(root);
	const char *dbs[1] = {b1};
	const char *names[1] = {"b1"};
	ck_assert(ct_wait_synced(root, dbs, names, 1, 20000));
	ct_assert_same("b1 events", ct_events(root, false), ct_events(b1, false));
	ck_assert_uint_eq(b.chunks, 0);
	ck_assert_int_eq(a.errors, 0);
	/* the first one goes away: the second takes over */
	ct_stop(&a);
	ct_produce(root, 500, 600);
	cs_tick(root);
	ck_assert(ct_wait_synced(root, dbs, names, 1, 20000));
	ck_assert_uint_gt(b.chunks, 0);
	ct_assert_same("b1 events", ct_events(root, false), ct_events(b1, false));
	ct_stop(&b);
	free(root);
	free(b1);
}
END_TEST

START_TEST(test_config_errors)
{
	PgqevCascadeConfig cfg;
	pgqev_cascade_config_init(&cfg);
	char eb[256];
	ck_assert_ptr_null(pgqev_cascade_new(cs_base(), &cfg, eb, sizeof(eb)));
	ck_assert_ptr_nonnull(strstr(eb, "conninfo"));
	cfg.conninfo = "dbname=x";
	ck_assert_ptr_null(pgqev_cascade_new(cs_base(), &cfg, eb, sizeof(eb)));
	ck_assert_ptr_nonnull(strstr(eb, "queue"));
	cfg.queue = "q";
	cfg.conninfo = "dbname='x";
	ck_assert_ptr_null(pgqev_cascade_new(cs_base(), &cfg, eb, sizeof(eb)));
	ck_assert_ptr_nonnull(strstr(eb, "conninfo"));
	/* libpq's parse error would quote the token after the password */
	cfg.conninfo = "password=hunter2 secret2";
	ck_assert_ptr_null(pgqev_cascade_new(cs_base(), &cfg, eb, sizeof(eb)));
	ck_assert_msg(strstr(eb, "conninfo") && !strstr(eb, "secret2") && !strstr(eb, "hunter2"),
		      "%s", eb);
	/* a dbname that is a whole connection string is not shown as the label */
	cfg.conninfo = "dbname='host=/nowhere dbname=x password=hunter2'";
	PgqevCascade *w = pgqev_cascade_new(cs_base(), &cfg, eb, sizeof(eb));
	ck_assert_ptr_nonnull(w);
	ck_assert_msg(!strstr(pgqev_cascade_label(w), "hunter2"), "%s", pgqev_cascade_label(w));
	pgqev_cascade_free(w);
}
END_TEST

/* A config and stats with room for fields this library does not know. */
typedef struct BiggerConfig {
	PgqevCascadeConfig cfg;
	uint64_t future[2];
} BiggerConfig;

typedef struct BiggerStats {
	PgqevCascadeStats st;
	uint64_t future[2];
} BiggerStats;

START_TEST(test_config_size_checked)
{
	char eb[256];
	PgqevCascadeConfig raw;
	memset(&raw, 0, sizeof(raw));
	raw.conninfo = "dbname=x";
	raw.queue = "q";
	ck_assert_ptr_null(pgqev_cascade_new(cs_base(), &raw, eb, sizeof(eb)));
	ck_assert_msg(strstr(eb, "not filled by pgqev_cascade_config_init()") != NULL, "%s", eb);

	/* a newer program's struct: accepted while the unknown tail is unset */
	BiggerConfig big;
	memset(&big, 0xff, sizeof(big));
	pgqev_cascade_config_init_size(&big.cfg, sizeof(big));
	ck_assert_uint_eq(big.cfg.size, sizeof(big));
	ck_assert_uint_eq(big.future[0] | big.future[1], 0);
	ck_assert_uint_eq(big.cfg.fetch_size, 1000);
	big.cfg.conninfo = "dbname=x";
	big.cfg.queue = "q";
	PgqevCascade *w = pgqev_cascade_new(cs_base(), &big.cfg, eb, sizeof(eb));
	ck_assert_msg(w != NULL, "%s", eb);

	/* stats into a newer program's struct: the unknown tail zeroed */
	BiggerStats bs;
	memset(&bs, 0xff, sizeof(bs));
	pgqev_cascade_stats_size(w, &bs.st, sizeof(bs));
	ck_assert_uint_eq(bs.st.size, sizeof(bs));
	ck_assert_uint_eq(bs.st.batches, 0);
	ck_assert_uint_eq(bs.future[0] | bs.future[1], 0);
	pgqev_cascade_free(w);

	big.future[1] = 1;
	ck_assert_ptr_null(pgqev_cascade_new(cs_base(), &big.cfg, eb, sizeof(eb)));
	ck_assert_msg(strstr(eb, "does not know") != NULL, "%s", eb);
}
END_TEST

/* A root and a branch node (b1) under it, with a plain consumer "obs" on each. */
static void root_and_branch(char **root, char **b1)
{
	*root = ct_node_db();
	*b1 = ct_node_db();
	ct_make_root(*root, "root");
	ct_make_sub("branch", *b1, "b1", *root, "root", *root);
	pgt_exec_db(*root, "select pgq.register_consumer('" CT_QUEUE "', 'obs')");
	pgt_exec_db(*b1, "select pgq.register_consumer('" CT_QUEUE "', 'obs')");
}

/* A setting for every later session of db, e.g. "track_functions = 'pl'". */
static void db_set(const char *db, const char *setting)
{
	char sql[300];
	snprintf(sql, sizeof(sql), "alter database \"%s\" set %s", db, setting);
	pgt_exec_db("postgres", sql);
}

/* Remove the branch's tick `tick`: the state a crash leaves between a batch's
   commit (finished on the provider at once) and its tick, which is made with
   the next batch's transaction or on its own when none follows. */
static void drop_tick(const char *db, int64_t tick)
{
	char sql[256];
	snprintf(sql, sizeof(sql),
		 "delete from pgq.tick t using pgq.queue q where t.tick_queue = q.queue_id"
		 " and q.queue_name = '" CT_QUEUE "' and t.tick_id = %" PRId64,
		 tick);
	pgt_exec_db(db, sql);
	ck_assert_int_lt(ct_last_tick(db), tick);
}

typedef struct OwedTickCond {
	const char *db;
	int64_t tick;
	int64_t next_ms;
} OwedTickCond;

static bool has_owed_tick(void *arg)
{
	OwedTickCond *t = arg;
	if (!pgt_due(&t->next_ms, 20))
		return false;
	return ct_last_tick(t->db) >= t->tick;
}

START_TEST(test_tick_owed_after_crash)
{
	char *root, *b1;
	root_and_branch(&root, &b1);
	CtWorker w1 = {0};
	ct_start(&w1, b1, POLL);
	ct_produce(root, 0, 50);
	cs_tick(root);
	ct_produce(root, 50, 100);
	cs_tick(root);
	const char *dbs[1] = {b1};
	const char *names[1] = {"b1"};
	ck_assert(ct_wait_synced(root, dbs, names, 1, 20000));
	ct_stop(&w1);
	int64_t t1 = ct_last_tick(root);
	ck_assert_int_eq(ct_completed(b1, "b1"), t1);
	/* the provider finished the batch: no batch is handed out again */
	char want[64];
	snprintf(want, sizeof(want), "%" PRId64 " -", t1);
	ct_expect_value(root,
			"select last_tick || ' ' || coalesce(current_batch::text, '-')"
			" from pgq.get_consumer_info('" CT_QUEUE "', 'w_b1')",
			want);

	/* nothing follows on the root: the worker makes the tick on its own,
	   with the root's tick time */
	drop_tick(b1, t1);
	ct_start(&w1, b1, POLL);
	OwedTickCond tc = {.db = b1, .tick = t1};
	ck_assert_msg(cs_run_until(has_owed_tick, &tc, 20000),
		      "the missing tick %" PRId64 " was not made", t1);
	ct_assert_same("ticks after an idle repair", ct_ticks(root, 1, t1), ct_ticks(b1, 1, t1));
	ct_stop(&w1);

	/* the next batch is there: its transaction makes the missing tick first,
	   and the batches on the branch stay the root's */
	drop_tick(b1, t1);
	ct_produce(root, 100, 150);
	cs_tick(root);
	ct_start(&w1, b1, POLL);
	ck_assert(ct_wait_synced(root, dbs, names, 1, 20000));
	int64_t t2 = ct_last_tick(root);
	ck_assert_int_gt(t2, t1);
	ct_assert_same("ticks after a repair in the next batch", ct_ticks(root, 1, t2),
		       ct_ticks(b1, 1, t2));
	ct_assert_same("events", ct_events(root, false), ct_events(b1, false));
	ct_assert_same("batches of a consumer", drain_batches(root, "obs"),
		       drain_batches(b1, "obs"));
	ck_assert_int_eq(w1.errors, 0);
	ct_stop(&w1);
	free(root);
	free(b1);
}
END_TEST

/* The commit-answer test's steps, run between turns of the loop: the branch's
   COMMIT of the batch waits on a lock the test holds; meanwhile the provider
   goes away (its connections terminated, new ones refused), so the worker
   drops the batch's state with the answer still due; then the commit goes
   through. */
typedef struct LostAnswer {
	PGconn *gate; /* on the branch: holds advisory lock 4242 */
	const char *b1, *root;
	CtWorker *x;
	int step;
	int64_t tick, next_ms;
} LostAnswer;

static bool commit_answer_lost(void *arg)
{
	LostAnswer *t = arg;
	if (!pgt_due(&t->next_ms, 20))
		return false;
	char sql[400];
	PgqevCascadeStats st;
	switch (t->step) {
	case 0: /* the COMMIT waits at the gate */
		if (pgt_int_db(t->b1, "select count(*) from pg_locks where locktype = 'advisory'"
				      " and objid = 4242 and not granted") == 0)
			return false;
		snprintf(sql, sizeof(sql),
			 "alter database \"%s\" allow_connections false;"
			 " select pg_terminate_backend(pid) from pg_stat_activity"
			 " where datname = '%s'",
			 t->root, t->root);
		pgt_exec(t->gate, sql);
		t->step = 1;
		return false;
	case 1: /* the worker saw its provider go */
		pgqev_cascade_stats(t->x->w, &st);
		if (st.provider_connected)
			return false;
		pgt_exec(t->gate, "select pg_advisory_unlock(4242)");
		t->step = 2;
		return false;
	default: /* the batch committed; its tick is made without the provider */
		return ct_completed(t->b1, "b1") == t->tick && ct_last_tick(t->b1) == t->tick;
	}
}

/* The answer to a branch's COMMIT is lost (the provider connection broke while
   it was in flight, which abandons the batch), the commit went through and the
   provider stays away: the worker learns from the node's state that the batch
   committed and makes its tick with the tick time it read with the batch. */
START_TEST(test_tick_owed_commit_answer_lost)
{
	char *root = ct_node_db(), *b1 = ct_node_db();
	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	pgt_exec_db(b1, "create function gate() returns trigger language plpgsql as"
			" $$ begin perform pg_advisory_xact_lock_shared(4242); return null; end $$;"
			" create constraint trigger gate after update on pgq_node.local_state"
			" deferrable initially deferred for each row execute function gate();"
			" alter table pgq_node.local_state enable always trigger gate");
	CtWorker w1 = {.quiet = true};
	ct_start(&w1, b1, POLL);
	ct_produce(root, 0, 50);
	cs_tick(root);
	const char *dbs[1] = {b1};
	const char *names[1] = {"b1"};
	ck_assert(ct_wait_synced(root, dbs, names, 1, 20000));

	LostAnswer t = {.gate = pgt_connect(b1), .b1 = b1, .root = root, .x = &w1};
	pgt_exec(t.gate, "select pg_advisory_lock(4242)");
	ct_produce(root, 50, 100);
	cs_tick(root);
	t.tick = ct_last_tick(root);
	char *ticks = ct_ticks(root, 1, t.tick), *events = ct_events(root, false);
	ck_assert_msg(cs_run_until(commit_answer_lost, &t, 20000),
		      "step %d: tick %" PRId64 " not made (b1 completed %" PRId64
		      ", last tick %" PRId64 ")",
		      t.step, t.tick, ct_completed(b1, "b1"), ct_last_tick(b1));
	ct_assert_same("ticks", ticks, ct_ticks(b1, 1, t.tick));
	ct_assert_same("events", events, ct_events(b1, false));

	char sql[200];
	snprintf(sql, sizeof(sql), "alter database \"%s\" allow_connections true", root);
	pgt_exec(t.gate, sql);
	PQfinish(t.gate);
	ct_stop(&w1);
	free(root);
	free(b1);
}
END_TEST

static bool read_unsorted(void *arg)
{
	/* the worker's provider session reports its function calls when it ends */
	/* get_batch_cursor builds its query without calling batch_event_sql: a
	   call is a batch read through the SQL alone (the test itself calls it
	   not on the root before this) */
	return pgt_int_db((const char *)arg,
			  "select coalesce(sum(calls), 0) from pg_stat_user_functions"
			  " where schemaname = 'pgq' and funcname = 'batch_event_sql'") > 0;
}

/* A large batch on a branch without a handler (pgqd-ev's worker) is read
   without the provider's sort: the cascade events in it still take effect in
   ev_id order, a terminated local backend in the middle of it loses and
   doubles nothing, and the branch's events, ticks and batches are the root's. */
START_TEST(test_unsorted_large_batch)
{
	char *root, *b1;
	root_and_branch(&root, &b1);
	db_set(root, "track_functions = 'pl'");
	pgt_exec_db(root, "select * from pgq_node.register_location('" CT_QUEUE
			  "', 'x', 'dbname=x', false)");
	cs_tick(root);
	/* One transaction: 3,000 events, then x unregistered (event B), then x's
	   registration inserted with an id taken before B's (event A < B), so it
	   lies after B in the table: read unsorted, B comes first, and applying
	   the events as they come would leave x registered on the branch. */
	pgt_exec_db(root, "do $$ declare a int8; t text; begin"
			  " select nextval(queue_event_seq) into a from pgq.queue"
			  " where queue_name = '" CT_QUEUE "';"
			  " perform pgq_node.unregister_location('" CT_QUEUE "', 'x');"
			  " t := pgq.current_event_table('" CT_QUEUE "');"
			  " execute format('insert into %s (ev_id, ev_time, ev_type, ev_data,"
			  " ev_extra1, ev_extra2, ev_extra3) values ($1, now(),"
			  " ''pgq.location-info'', ''x'', ''" CT_QUEUE "'', ''dbname=x'',"
			  " ''false'')', t) using a;"
			  " end $$");
	ct_produce(root, 0, 3000);
	cs_tick(root);
	ct_expect_value(root, "select count(*) from pgq_node.node_location where node_name = 'x'",
			"0");

	CtWorker w1 = {.no_handler = true, .quiet = true};
	ct_start(&w1, b1, POLL);
	/* the local side goes away while the batch is being written (when the
	   machine is fast, after: the check below holds either way) */
	if (ct_wait_writing(b1, (int)(20000 * pgt_time_factor())))
		ct_terminate_workers(b1);
	const char *dbs[1] = {b1};
	const char *names[1] = {"b1"};
	ck_assert(ct_wait_synced(root, dbs, names, 1, 60000));
	ct_stop(&w1);
	int64_t t = ct_last_tick(root);
	ct_assert_same("events", ct_events(root, false), ct_events(b1, false));
	ct_assert_same("ticks", ct_ticks(root, 1, t), ct_ticks(b1, 1, t));
	ct_expect_value(b1, "select count(*) from pgq_node.node_location where node_name = 'x'",
			"0");
	/* the large batch was read through pgq.batch_event_sql's text, not
	   get_batch_cursor (the counts reach the statistics once the worker's
	   sessions have ended) */
	ck_assert_msg(pgt_wait_until(read_unsorted, root, 20000, 50),
		      "no batch was read without get_batch_cursor");
	ct_assert_same("batches of a consumer", drain_batches(root, "obs"),
		       drain_batches(b1, "obs"));
	free(root);
	free(b1);
}
END_TEST

typedef struct CallsCond {
	const char *db;
	int64_t at_least;
} CallsCond;

static int64_t calls_of(const char *db, const char *fn)
{
	char sql[300];
	snprintf(sql, sizeof(sql),
		 "select coalesce(sum(calls), 0) from pg_stat_user_functions"
		 " where schemaname = 'pgq_node' and funcname = '%s'",
		 fn);
	return pgt_int_db(db, sql);
}

static bool state_calls_in(void *arg)
{
	CallsCond *c = arg;
	return calls_of(c->db, "get_consumer_state") >= c->at_least;
}

typedef struct BatchesCond {
	CtWorker *x;
	uint64_t n;
} BatchesCond;

static bool worker_batches(void *arg)
{
	BatchesCond *b = arg;
	PgqevCascadeStats st;
	pgqev_cascade_stats(b->x->w, &st);
	return st.batches >= b->n;
}

typedef struct UptodateCond {
	const char *db;
	int64_t next_ms;
} UptodateCond;

static bool consumer_uptodate(void *arg)
{
	UptodateCond *u = arg;
	if (!pgt_due(&u->next_ms, 50))
		return false;
	return pgt_int_db(u->db, "select count(*) from pgq_node.local_state"
				 " where consumer_name = 'w_b1' and uptodate") == 1;
}

/* A busy branch reads pgq_node.get_node_info about once a second, not for
   every batch (the consumer state still every time); an admin change (pause)
   is still seen and acknowledged. The statements of every batch are prepared. */
START_TEST(test_node_info_not_every_batch)
{
	enum { BATCHES = 100 };
	char *root = ct_node_db(), *b1 = ct_node_db();
	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	db_set(b1, "track_functions = 'pl'");
	db_set(root, "log_min_duration_statement = 0");
	db_set(b1, "log_min_duration_statement = 0");
	/* the batches wait on the root: the worker goes through them back to back */
	PGconn *c = pgt_connect(root);
	for (int i = 0; i < BATCHES; i++) {
		pgt_exec(c, "select pgq.insert_event('" CT_QUEUE "', 'num', 'x')");
		pgt_exec(c, "select pgq.ticker()");
	}
	PQfinish(c);
	CtWorker w1 = {.no_handler = true, .wm_period = 3600 * PGQEV_USEC_PER_SEC};
	int64_t t0 = pgt_now_ms();
	ct_start(&w1, b1, POLL);
	BatchesCond bc = {&w1, BATCHES};
	ck_assert_msg(cs_run_until(worker_batches, &bc, (int)(60000 * pgt_time_factor())),
		      "the branch did not copy %d batches", BATCHES);
	int64_t secs = (pgt_now_ms() - t0) / 1000 + 1;
	PgqevCascadeStats st;
	pgqev_cascade_stats(w1.w, &st);
	ct_stop(&w1);
	/* the statistics come when the worker's session ends */
	CallsCond cc = {b1, (int64_t)st.batches};
	ck_assert(pgt_wait_until(state_calls_in, &cc, 20000, 50));
	int64_t node = calls_of(b1, "get_node_info");
	ck_assert_msg(node < BATCHES / 2 && node <= secs + 3,
		      "get_node_info read %" PRId64 " times for %" PRIu64 " batches in %" PRId64
		      " s",
		      node, st.batches, secs);
	ct_assert_same("events", ct_events(root, false), ct_events(b1, false));
	pgt_assert_prepared(root, "next_batch_info", (int)st.batches);
	pgt_assert_prepared(root, "get_batch_cursor", (int)st.batches);
	pgt_assert_prepared(root, "finish_batch", (int)st.batches);
	pgt_assert_prepared(b1, "set_consumer_completed", (int)st.batches);
	pgt_assert_prepared(b1, "pgq.ticker($1", (int)st.batches);

	/* pause: announced through uptodate, seen at once despite the kept
	   node info, and acknowledged; so is the resume */
	ct_start(&w1, b1, POLL);
	const char *dbs[1] = {b1};
	const char *names[1] = {"b1"};
	ck_assert(ct_wait_synced(root, dbs, names, 1, 20000));
	pgt_exec_db(b1, "select * from pgq_node.set_consumer_paused('" CT_QUEUE "', 'w_b1', true)");
	UptodateCond uc = {.db = b1};
	ck_assert_msg(cs_run_until(consumer_uptodate, &uc, 20000), "pause not acknowledged");
	ct_produce(root, 1000, 1010);
	cs_tick(root);
	pgt_exec_db(b1,
		    "select * from pgq_node.set_consumer_paused('" CT_QUEUE "', 'w_b1', false)");
	uc.next_ms = 0;
	ck_assert_msg(cs_run_until(consumer_uptodate, &uc, 20000), "resume not acknowledged");
	ck_assert(ct_wait_synced(root, dbs, names, 1, 20000));
	ct_assert_same("events after the pause", ct_events(root, false), ct_events(b1, false));
	ct_stop(&w1);
	free(root);
	free(b1);
}
END_TEST

/* A branch's COMMIT fails (a deferred trigger refuses it once). The next
   iteration's state read, pipelined behind that COMMIT, is answered all the
   same (with the old position): the worker drops it with the failed batch,
   backs off, reads the state anew and applies the batch again; one error,
   nothing lost or doubled, the branch's batches the root's. */
START_TEST(test_commit_fails_state_read_behind)
{
	char *root, *b1;
	root_and_branch(&root, &b1);
	CtWorker w1 = {.no_handler = true, .quiet = true};
	ct_start(&w1, b1, POLL);
	ct_produce(root, 0, 50);
	cs_tick(root);
	const char *dbs[1] = {b1};
	const char *names[1] = {"b1"};
	ck_assert(ct_wait_synced(root, dbs, names, 1, 20000));
	/* a sequence counts the commits: it is not rolled back with them */
	pgt_exec_db(b1,
		    "create sequence commits;"
		    " create function refuse_once() returns trigger language plpgsql as"
		    " $$ begin if nextval('commits') = 1 then"
		    " raise exception 'commit refused once'; end if; return null; end $$;"
		    " create constraint trigger refuse_once after update on pgq_node.local_state"
		    " deferrable initially deferred for each row execute function refuse_once();"
		    " alter table pgq_node.local_state enable always trigger refuse_once");
	for (int i = 1; i <= 3; i++) {
		ct_produce(root, 50 * i, 50 * (i + 1));
		cs_tick(root);
	}
	ck_assert(ct_wait_synced(root, dbs, names, 1, 20000));
	ck_assert_int_ge(pgt_int_db(b1, "select last_value from commits"), 2);
	ck_assert_msg(w1.errors == 1 && strstr(w1.last_error, "commit refused once"),
		      "%d errors, the last: %s", w1.errors, w1.last_error);
	int64_t last = ct_last_tick(root);
	ct_assert_same("ticks", ct_ticks(root, 1, last), ct_ticks(b1, 1, last));
	ct_assert_same("events", ct_events(root, false), ct_events(b1, false));
	ct_assert_same("batches of a consumer", drain_batches(root, "obs"),
		       drain_batches(b1, "obs"));
	ct_stop(&w1);
	free(root);
	free(b1);
}
END_TEST

/* One case per group, each with a fresh loop (cs_setup) and its own timeout. */
static void group(Suite *s, const char *name, const TTest *const *tests)
{
	TCase *tc = pgt_tcase(name, 120);
	tcase_add_checked_fixture(tc, cs_setup, cs_teardown);
	for (; *tests; tests++)
		tcase_add_test(tc, *tests);
	suite_add_tcase(s, tc);
}

int main(void)
{
	Suite *s = suite_create("cascade");
	group(s, "cascade",
	      (const TTest *[]){test_config_errors, test_config_size_checked, test_no_pgq_node,
				test_not_a_node, test_two_workers_one_node,
				test_bad_provider_and_lost_position,
				test_chain_root_branch_branch_leaf, NULL});
	group(s, "owed_tick",
	      (const TTest *[]){test_tick_owed_after_crash, test_tick_owed_commit_answer_lost,
				test_commit_fails_state_read_behind, NULL});
	group(s, "unsorted", (const TTest *[]){test_unsorted_large_batch, NULL});
	group(s, "node_info", (const TTest *[]){test_node_info_not_every_batch, NULL});
	group(s, "watermark", (const TTest *[]){test_watermark_holds_rotation, NULL});
	group(s, "sync_watermark", (const TTest *[]){test_sync_watermark, NULL});
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
