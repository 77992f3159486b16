/*
 * pgqctl node status / pause / resume / tag-dead / tag-alive / drop-node /
 * wait-root / wait-provider / resurrect / rename-node on a root -> branch ->
 * branch -> leaf cascade of the private server, whose workers run in a real
 * pgqd-ev ([node NAME] sections); the test makes every tick itself, so lags
 * are exact. Multi-step commands are killed after each step (the
 * PGQCTL_STOP_AFTER_STEP hook) and run again until they finish; --dry-run
 * must leave every table as it was. The last test reads a cascade that
 * python3-pgq's CascadeAdmin made on Debian's pgq_node, and pauses it so that
 * CascadeAdmin sees it. Another cascade's queue and node names hold a quote, a
 * space and UTF-8; the multi-step commands run there with --json.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "castest.h"
#include "ctlrun.h"
#include "daemon.h"

#define POLL (50 * PGQEV_USEC_PER_MSEC)

static int count_of(const char *s, const char *needle);

/* Run a multi-step command killed after each step that changed something, until
   it finishes; returns the number of runs. All output is concatenated in *all. */
static int run_interrupted(const char *db, const char *const *args, char **all)
{
	size_t len = 0;
	int runs = 0;

	*all = strdup("");
	setenv("PGQCTL_STOP_AFTER_STEP", "1", 1);
	for (;;) {
		CtlRun r = ctr_node(db, args);
		runs++;
		*all = realloc(*all, len + strlen(r.out) + 2);
		strcpy(*all + len, r.out);
		len += strlen(r.out);
		if (r.rc == 0) {
			ctr_free(&r);
			break;
		}
		ck_assert_msg(r.rc == 128 + SIGKILL, "run %d: exit %d: %s%s", runs, r.rc, r.out,
			      r.err);
		ck_assert_ptr_nonnull(strstr(r.err, "stopping after step"));
		ctr_free(&r);
		ck_assert_int_lt(runs, 30);
	}
	unsetenv("PGQCTL_STOP_AFTER_STEP");
	/* each killed run did exactly one step, the last one none */
	ck_assert_msg(count_of(*all, ": done") == runs - 1, "%d runs:\n%s", runs, *all);
	return runs;
}

static int count_of(const char *s, const char *needle)
{
	int n = 0;
	for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* Everything a cascade operation may touch on a node, as one md5. */
#define SNAPSHOT                                                                                \
	"select md5(coalesce(string_agg(x, E'\\n' order by x), '')) from ("                     \
	" select 'l' || row(l.*)::text x from pgq_node.node_location l"                         \
	" union all select 'n' || row(n.*)::text from pgq_node.node_info n"                     \
	" union all select 's' || row(s.*)::text from pgq_node.local_state s"                   \
	" union all select 'u' || row(s.*)::text from pgq_node.subscriber_info s"               \
	" union all select 'c' || c.co_name || '@' || s.sub_last_tick from pgq.subscription s"  \
	"  join pgq.consumer c on c.co_id = s.sub_consumer"                                     \
	" union all select 't' || tick_queue || '/' || tick_id from pgq.tick"                   \
	" union all select 'q' || row(queue_name, queue_disable_insert, queue_external_ticker)" \
	"  ::text from pgq.queue"                                                               \
	" union all select 'e' || count(*) from pgq.event_template) t"

static char *snapshot(const char *const *dbs, int n)
{
	char *all = calloc(1, (size_t)n * 40 + 1);
	for (int i = 0; i < n; i++) {
		PGconn *c = pgt_connect(dbs[i]);
		char *v = pgt_value(c, SNAPSHOT);
		strcat(all, v);
		strcat(all, ",");
		free(v);
		PQfinish(c);
	}
	return all;
}

typedef struct Synced {
	const char *root;
	const char *db[4], *name[4];
	int n;
} Synced;

static bool synced(void *arg)
{
	Synced *s = arg;
	int64_t t = ct_last_tick(s->root);
	for (int i = 0; i < s->n; i++)
		if (ct_completed(s->db[i], s->name[i]) != t)
			return false;
	return true;
}

static void tick(const char *db)
{
	PGconn *c = pgt_connect(db);
	ctr_tick(c, CT_QUEUE);
	PQfinish(c);
}

static void node_section(char *buf, size_t len, const char *name, const char *db)
{
	snprintf(buf, len,
		 "[node %s]\nqueue = " CT_QUEUE "\ndb = %s\npoll_period = 0.05\n"
		 "wm_publish_period = 3600\nunhealthy_after = 0\n",
		 name, pgt_connstr(db, false));
}

/* The ticker makes no tick by itself: the test ticks, so lags are exact. */
static void quiet_ticker(const char *root)
{
	pgt_exec_db(root, "select pgq.set_queue_config('" CT_QUEUE "', 'ticker_max_lag', '1 hour'),"
			  " pgq.set_queue_config('" CT_QUEUE "', 'ticker_max_count', '1000000'),"
			  " pgq.set_queue_config('" CT_QUEUE "', 'ticker_idle_period', '1 hour')");
}

#define DEAD_OF(n)                                                                         \
	"select coalesce(string_agg(dead::text, ','), 'none') from pgq_node.node_location" \
	" where node_name = '" n "'"

START_TEST(test_status_and_admin)
{
	char *root = ct_node_db(), *b1 = ct_node_db(), *b2 = ct_node_db(), *lf = ct_node_db();
	char *droot = ctr_dsn_dup(root), *db1 = ctr_dsn_dup(b1), *db2 = ctr_dsn_dup(b2),
	     *dlf = ctr_dsn_dup(lf);
	const char *all[4] = {root, b1, b2, lf};
	CtlRun r;
	char ini[8192], s1[1024], s2[1024], s3[1024], s4[1024], want[2048];

	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	ct_make_sub("branch", b2, "b2", b1, "b1", root);
	ct_make_sub("leaf", lf, "lf", b2, "b2", root);
	quiet_ticker(root);
	node_section(s1, sizeof(s1), "root", root);
	node_section(s2, sizeof(s2), "b1", b1);
	node_section(s3, sizeof(s3), "b2", b2);
	node_section(s4, sizeof(s4), "lf", lf);
	snprintf(ini, sizeof(ini),
		 "%sdatabase_list = %s\nticker_period = 0.05\nstats_period = 0\n%s%s%s%s",
		 dmn_base_ini(), root, s1, s2, s3, s4);
	Daemon *d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));

	ct_produce(root, 0, 20);
	tick(root);
	Synced sy = {root, {b1, b2, lf}, {"b1", "b2", "lf"}, 3};
	ck_assert_msg(pgt_wait_until(synced, &sy, 20000, 20), "cascade did not catch up");
	int64_t t1 = ct_last_tick(root);

	/* healthy: the tree from the leaf, exact */
	r = ctr_node(dlf, (const char *[]){"status", CT_QUEUE, NULL});
	ctr_expect(&r, 0, NULL, NULL);
	{
		char *g = ctr_golden(r.out);
		snprintf(want, sizeof(want),
			 "cascade cq: 4 members, root root at tick %lld\n"
			 "node type provider lag_ticks lag last_tick paused uptodate status\n"
			 "root root - 0 0.0s %lld no yes ok\n"
			 "`- b1 branch root 0 0.0s %lld no yes ok\n"
			 "   `- b2 branch b1 0 0.0s %lld no yes ok\n"
			 "      `- lf leaf b2 0 0.0s %lld no yes ok\n"
			 "healthy\n",
			 (long long)t1, (long long)t1, (long long)t1, (long long)t1, (long long)t1);
		char *gw = ctr_golden(want);
		ck_assert_msg(strcmp(g, gw) == 0, "got:\n%s\nwant:\n%s", g, gw);
		free(g);
		free(gw);
	}
	ctr_free(&r);
	/* the same from the root with --cascade, as JSON */
	r = ctr_node(droot, (const char *[]){"status", "--cascade", CT_QUEUE, "--json", NULL});
	ctr_expect(&r, 0, NULL, NULL);
	{
		PGconn *c = pgt_connect(root);
		char t[32];
		snprintf(t, sizeof(t), "%lld", (long long)t1);
		ctr_json_eq(c, r.out, "{cascade}", CT_QUEUE);
		ctr_json_eq(c, r.out, "{root}", "root");
		ctr_json_eq(c, r.out, "{healthy}", "true");
		ctr_json_eq(c, r.out, "{members}", "4");
		ctr_json_eq(c, r.out, "{root_last_tick}", t);
		const char *names[4] = {"root", "b1", "b2", "lf"};
		const char *types[4] = {"root", "branch", "branch", "leaf"};
		const char *parents[4] = {NULL, "root", "b1", "b2"};
		for (int i = 0; i < 4; i++) {
			char path[64];
			snprintf(path, sizeof(path), "{nodes,%d,node}", i);
			ctr_json_eq(c, r.out, path, names[i]);
			snprintf(path, sizeof(path), "{nodes,%d,type}", i);
			ctr_json_eq(c, r.out, path, types[i]);
			snprintf(path, sizeof(path), "{nodes,%d,parent}", i);
			ctr_json_eq(c, r.out, path, parents[i]);
			snprintf(path, sizeof(path), "{nodes,%d,lag_ticks}", i);
			ctr_json_eq(c, r.out, path, "0");
			snprintf(path, sizeof(path), "{nodes,%d,last_tick}", i);
			ctr_json_eq(c, r.out, path, t);
			snprintf(path, sizeof(path), "{nodes,%d,paused}", i);
			ctr_json_eq(c, r.out, path, "false");
			snprintf(path, sizeof(path), "{nodes,%d,problems}", i);
			ctr_json_eq(c, r.out, path, "[]");
		}
		PQfinish(c);
	}
	ctr_free(&r);

	/* pause b2: the worker acknowledges and stops copying */
	r = ctr_node(db2, (const char *[]){"pause", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "w_b2 paused", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "w_b2 has seen it"));
	ctr_free(&r);
	r = ctr_node(db2, (const char *[]){"pause", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "w_b2 already paused", NULL);
	ctr_free(&r);
	ct_produce(root, 20, 30);
	tick(root);
	Synced sy1 = {root, {b1}, {"b1"}, 1};
	ck_assert(pgt_wait_until(synced, &sy1, 20000, 20));
	int64_t t2 = ct_last_tick(root);
	ck_assert_int_gt(t2, t1);
	/* wait-provider on the paused node times out with exit 4 */
	r = ctr_node(db2, (const char *[]){"wait-provider", CT_QUEUE, "--timeout", "1", NULL});
	ctr_expect(&r, 4, NULL, "its worker is paused");
	ctr_free(&r);
	ck_assert_int_eq(ct_completed(b2, "b2"), t1);
	ck_assert_int_eq(ct_completed(lf, "lf"), t1);
	r = ctr_node(dlf, (const char *[]){"status", CT_QUEUE, "--json", NULL});
	ctr_expect(&r, 3, NULL, NULL);
	{
		PGconn *c = pgt_connect(root);
		ctr_json_eq(c, r.out, "{healthy}", "false");
		ctr_json_eq(c, r.out, "{nodes,1,lag_ticks}", "0");
		ctr_json_eq(c, r.out, "{nodes,2,lag_ticks}", "1");
		ctr_json_eq(c, r.out, "{nodes,2,paused}", "true");
		ctr_json_eq(c, r.out, "{nodes,2,problems}", "[\"paused\"]");
		ctr_json_eq(c, r.out, "{nodes,3,lag_ticks}", "1");
		ctr_json_eq(c, r.out, "{nodes,3,problems}", "[]");
		PQfinish(c);
	}
	ctr_free(&r);
	r = ctr_node(dlf, (const char *[]){"status", CT_QUEUE, NULL});
	ctr_expect(&r, 3, "PROBLEMS found", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, " paused\n"));
	ctr_free(&r);
	/* the leaf's lag in seconds is over a zero --max-lag */
	r = ctr_node(dlf, (const char *[]){"status", CT_QUEUE, "--json", "--max-lag", "0", NULL});
	ctr_expect(&r, 3, NULL, NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "over --max-lag 0.0s"));
	ctr_free(&r);

	/* resume: the worker copies again; wait-provider / wait-root return */
	r = ctr_node(db2, (const char *[]){"resume", "--cascade", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "w_b2 resumed", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "w_b2 has seen it"));
	ctr_free(&r);
	r = ctr_node(db2, (const char *[]){"wait-provider", CT_QUEUE, "--timeout", "20", NULL});
	ctr_expect(&r, 0, "caught up", NULL);
	ctr_free(&r);
	r = ctr_node(dlf, (const char *[]){"wait-root", CT_QUEUE, "--timeout", "20", NULL});
	ctr_expect(&r, 0, "caught up", NULL);
	ctr_free(&r);
	ck_assert_int_eq(ct_completed(lf, "lf"), t2);
	r = ctr_node(dlf, (const char *[]){"status", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "healthy", NULL);
	ctr_free(&r);
	/* pause another node's worker with --node, from the root */
	r = ctr_node(droot, (const char *[]){"pause", CT_QUEUE, "--node", "lf", NULL});
	ctr_expect(&r, 0, "node lf: w_lf paused", NULL);
	ctr_free(&r);
	ct_expect_value(lf, "select paused::text from pgq_node.local_state", "true");
	r = ctr_node(droot, (const char *[]){"resume", CT_QUEUE, "--consumer", "w_lf", NULL});
	ctr_expect(&r, 0, "w_lf resumed", NULL);
	ctr_free(&r);

	/* an unreachable member: the leaf's location points to a closed port */
	for (int i = 0; i < 4; i++)
		pgt_exec_db(all[i], "update pgq_node.node_location set node_location ="
				    " 'host=127.0.0.1 port=1 dbname=gone' where node_name = 'lf'");
	r = ctr_node(droot, (const char *[]){"status", CT_QUEUE, NULL});
	ctr_expect(&r, 3, NULL, NULL);
	{
		char *g = ctr_golden(r.out);
		ck_assert_msg(strstr(g, "\n `- lf ? - - - - - - unreachable: "), "%s", g);
		free(g);
	}
	ctr_free(&r);
	r = ctr_node(droot, (const char *[]){"status", CT_QUEUE, "--json", NULL});
	ctr_expect(&r, 3, NULL, NULL);
	{
		PGconn *c = pgt_connect(root);
		ctr_json_eq(c, r.out, "{nodes,3,node}", "lf");
		ctr_json_eq(c, r.out, "{nodes,3,parent}", "b2");
		ctr_json_eq(c, r.out, "{nodes,3,reachable}", "false");
		ctr_json_eq(c, r.out, "{nodes,2,problems}", "[]");
		PQfinish(c);
	}
	ctr_free(&r);
	for (int i = 0; i < 4; i++) {
		PGconn *c = pgt_connect(all[i]);
		char *lit = PQescapeLiteral(c, dlf, strlen(dlf)), sql[1200];
		snprintf(sql, sizeof(sql),
			 "update pgq_node.node_location set node_location = %s"
			 " where node_name = 'lf'",
			 lit);
		pgt_exec(c, sql);
		PQfreemem(lit);
		PQfinish(c);
	}

	/* --dry-run changes nothing */
	char *before = snapshot(all, 4);
	r = ctr_node(droot, (const char *[]){"tag-dead", CT_QUEUE, "lf", "--dry-run", NULL});
	ctr_expect(&r, 0, "would be done", NULL);
	ctr_free(&r);
	r = ctr_node(droot, (const char *[]){"drop-node", CT_QUEUE, "lf", "--dry-run", NULL});
	ctr_expect(&r, 0, "would be done", NULL);
	ctr_free(&r);
	{
		char *after = snapshot(all, 4);
		ck_assert_str_eq(before, after);
		free(after);
	}
	free(before);

	/* tag-dead, interrupted after each member and run again */
	{
		char *out;
		int runs = run_interrupted(
			droot, (const char *[]){"tag-dead", CT_QUEUE, "lf", NULL}, &out);
		ck_assert_int_eq(runs, 4); /* root, b1, b2, then the finishing run */
		ck_assert_int_eq(count_of(out, ": done"), 3);
		ck_assert_int_eq(count_of(out, ": already done"), 0 + 1 + 2 + 3);
		free(out);
	}
	for (int i = 0; i < 3; i++)
		ct_expect_value(all[i], DEAD_OF("lf"), "true");
	r = ctr_node(droot, (const char *[]){"tag-dead", CT_QUEUE, "lf", NULL});
	ctr_expect(&r, 0, "nothing to do", NULL);
	ctr_free(&r);
	r = ctr_node(db1, (const char *[]){"status", CT_QUEUE, "--json", NULL});
	ctr_expect(&r, 3, NULL, NULL);
	{
		PGconn *c = pgt_connect(root);
		ctr_json_eq(c, r.out, "{nodes,3,node}", "lf");
		ctr_json_eq(c, r.out, "{nodes,3,dead}", "true");
		ctr_json_eq(c, r.out, "{nodes,3,parent}", "b2");
		ctr_json_eq(c, r.out, "{nodes,3,problems}", "[\"dead\"]");
		PQfinish(c);
	}
	ctr_free(&r);
	/* tag-alive: every member, the node itself included */
	{
		char *out;
		run_interrupted(droot, (const char *[]){"tag-alive", CT_QUEUE, "lf", NULL}, &out);
		ck_assert_int_eq(count_of(out, "tag \"lf\" alive: done"), 3);
		free(out);
	}
	for (int i = 0; i < 4; i++)
		ct_expect_value(all[i], DEAD_OF("lf"), "false");
	r = ctr_node(dlf, (const char *[]){"status", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "healthy", NULL);
	ctr_free(&r);
	/* a consumer's recorded error (first line shown) is a problem */
	pgt_exec_db(lf, "select pgq_node.set_consumer_error('" CT_QUEUE "', 'w_lf',"
			" E'apply failed: boom\\nsecond line')");
	r = ctr_node(db1, (const char *[]){"status", CT_QUEUE, "--json", NULL});
	ctr_expect(&r, 3, NULL, NULL);
	{
		PGconn *c = pgt_connect(root);
		ctr_json_eq(c, r.out, "{nodes,3,errors,0}", "w_lf: apply failed: boom");
		ctr_json_eq(c, r.out, "{nodes,3,problems,0}", "error: w_lf: apply failed: boom");
		PQfinish(c);
	}
	ctr_free(&r);
	pgt_exec_db(lf, "select pgq_node.set_consumer_error('" CT_QUEUE "', 'w_lf', null)");

	/* drop-node: refused while someone reads from it; a spare leaf is dropped with
	   a kill after each step, and a re-run finds everything done */
	r = ctr_node(droot, (const char *[]){"drop-node", CT_QUEUE, "b2", NULL});
	ctr_expect(&r, 1, NULL, "node \"lf\" still reads from \"b2\"");
	ctr_free(&r);
	char *sp = ct_node_db();
	ct_make_sub("leaf", sp, "sp", b1, "b1", root);
	ct_expect_value(b1,
			"select count(*) from pgq.get_consumer_info('" CT_QUEUE "')"
			" where consumer_name in ('.sp.watermark', 'w_sp')",
			"2");
	{
		char *out;
		int runs = run_interrupted(db2, (const char *[]){"drop-node", CT_QUEUE, "sp", NULL},
					   &out);
		/* run from b2, which never learned of sp (no tick carried the root's
		   event there): sp drops, the root unregisters, b1 forgets its
		   subscriber */
		ck_assert_msg(runs == 4, "%s", out);
		ck_assert_ptr_nonnull(
			strstr(out, "step 1: sp: drop the node's rows and queue: done"));
		ck_assert_ptr_nonnull(strstr(out, "step 2: root: unregister the location of \"sp\""
						  " (announced to every node): done"));
		ck_assert_ptr_nonnull(
			strstr(out, "b1: forget \"sp\" (subscription, location): done"));
		free(out);
	}
	r = ctr_node(db2, (const char *[]){"drop-node", CT_QUEUE, "sp", NULL});
	ctr_expect(&r, 0, "nothing to do", NULL);
	ctr_free(&r);
	for (int i = 0; i < 4; i++)
		ct_expect_value(all[i], DEAD_OF("sp"), "none");
	ct_expect_value(sp, "select count(*) from pgq_node.node_info", "0");
	ct_expect_value(
		b1, "select count(*) from pgq_node.subscriber_info where subscriber_node = 'sp'",
		"0");
	ct_expect_value(b1,
			"select count(*) from pgq.get_consumer_info('" CT_QUEUE "')"
			" where consumer_name in ('.sp.watermark', 'w_sp')",
			"0");
	free(sp);
	/* the cascade still works */
	ct_produce(root, 30, 35);
	tick(root);
	ck_assert(pgt_wait_until(synced, &sy, 20000, 20));

	/* rename-node is refused with the reason */
	r = ctr_node(droot, (const char *[]){"rename-node", CT_QUEUE, "lf", "lf9", NULL});
	ctr_expect(&r, 1, NULL, "refused");
	ck_assert_ptr_nonnull(strstr(r.err, "drop-node lf"));
	ctr_free(&r);
	/* bad input */
	r = ctr_node(droot, (const char *[]){"status", NULL});
	ctr_expect(&r, 2, NULL, "needs the cascade");
	ctr_free(&r);
	r = ctr_node(droot, (const char *[]){"tag-dead", CT_QUEUE, "nosuch", NULL});
	ctr_expect(&r, 1, NULL, "\"nosuch\" is not a member");
	ctr_free(&r);
	r = ctr_node(droot, (const char *[]){"status", "nocascade", NULL});
	ctr_expect(&r, 1, NULL, "no node of this cascade here");
	ctr_free(&r);

	dmn_free(d, false);
	free(root);
	free(b1);
	free(b2);
	free(lf);
	free(droot);
	free(db1);
	free(db2);
	free(dlf);
}
END_TEST

/* The old root comes back after a dead-root failover done the way an admin tool
   does it (tag dead, move subscribers, promote, gravestone): resurrect reports
   the events only it had and makes it a branch of the new root. */
START_TEST(test_resurrect)
{
	char *ro = ct_node_db(), *nb = ct_node_db(), *lf = ct_node_db();
	char *dro = ctr_dsn_dup(ro), *dnb = ctr_dsn_dup(nb);
	const char *all[3] = {ro, nb, lf};
	char file[600], sql[600];
	CtlRun r;

	ct_make_root(ro, "ro");
	ct_make_sub("branch", nb, "nb", ro, "ro", ro);
	ct_make_sub("leaf", lf, "lf", ro, "ro", ro);
	quiet_ticker(ro);
	CtWorker wn = {0}, wl = {0};
	ct_start(&wn, nb, POLL);
	ct_start(&wl, lf, POLL);
	ct_produce(ro, 0, 5);
	tick(ro);
	const char *dbs[2] = {nb, lf}, *names[2] = {"nb", "lf"};
	ck_assert(ct_wait_synced(ro, dbs, names, 2, 20000));
	ct_stop(&wn);
	ct_stop(&wl);
	/* nb made the tick it completed (ct_wait_synced waits for that): the
	   gravestone below is the root's tick, so exactly 7 events are lost */
	int64_t g = ct_last_tick(nb);
	ck_assert_int_eq(g, ct_last_tick(ro));
	/* 7 events that only the old root will ever have */
	ct_produce(ro, 5, 8);
	tick(ro);
	ct_produce(ro, 8, 12);
	tick(ro);
	/* failover: ro dead, the leaf moves to nb, nb becomes the root */
	pgt_exec_db(nb, "select pgq_node.register_location('" CT_QUEUE "', 'ro', null, true)");
	pgt_exec_db(lf, "select pgq_node.register_location('" CT_QUEUE "', 'ro', null, true)");
	snprintf(sql, sizeof(sql),
		 "select pgq_node.register_subscriber('" CT_QUEUE "', 'lf', 'w_lf', %lld)",
		 (long long)ct_completed(lf, "lf"));
	pgt_exec_db(nb, sql);
	pgt_exec_db(lf, "select pgq_node.change_consumer_provider('" CT_QUEUE "', 'w_lf', 'nb')");
	pgt_exec_db(nb, "select pgq_node.promote_branch('" CT_QUEUE "')");
	snprintf(sql, sizeof(sql),
		 "select pgq_node.register_subscriber('" CT_QUEUE "', 'ro', 'ro.gravestone', %lld)",
		 (long long)g);
	pgt_exec_db(nb, sql);
	quiet_ticker(nb);
	ct_produce(nb, 100, 102);
	tick(nb);

	snprintf(file, sizeof(file), "%s/lost.json", pgt_tmp_dir());
	/* --dry-run changes nothing */
	char *before = snapshot(all, 2);
	r = ctr_node(dro, (const char *[]){"resurrect", CT_QUEUE, "--lost-events", file,
					   "--dry-run", NULL});
	ctr_expect(&r, 0, "gravestone of ro found on nb", NULL);
	ck_assert_msg(
		strstr(r.out, ": report and remove the events after tick") &&
			strstr(r.out, ": would be done\nstep 6: ro: position the worker at") &&
			strstr(r.out, "step 7: nb: replace the gravestone") &&
			count_of(r.out, "tag \"ro\" alive: would be done") == 2,
		"%s", r.out);
	ctr_free(&r);
	{
		char *after = snapshot(all, 2);
		ck_assert_str_eq(before, after);
		free(after);
	}
	free(before);
	ck_assert_int_ne(access(file, F_OK), 0);

	/* killed after every step, run again until done */
	char *out;
	int runs = run_interrupted(
		dro, (const char *[]){"resurrect", CT_QUEUE, "--lost-events", file, NULL}, &out);
	ck_assert_msg(runs == 9, "%s", out);
	ck_assert_ptr_nonnull(strstr(out, "step 1: ro: stop writes (demote_root step 1): done"));
	ck_assert_ptr_nonnull(strstr(out, "step 2: ro: final tick, demote to a branch of \"nb\","
					  " pause the worker: done"));
	ck_assert_ptr_nonnull(strstr(out, "step 3: ro: unregister its old subscribers: done"));
	ck_assert_ptr_nonnull(strstr(out, "step 7: nb: replace the gravestone by a subscription"
					  " of w_ro at tick"));
	ck_assert_int_eq(count_of(out, "tag \"ro\" alive: done"), 2);
	ck_assert_msg(strstr(out, "LOST EVENTS: 7\n"), "%s", out);
	ck_assert_ptr_nonnull(strstr(out, "7 events existed only on ro"));
	free(out);
	{
		char *json = NULL;
		FILE *f = fopen(file, "r");
		size_t cap = 0;
		ck_assert_ptr_nonnull(f);
		ck_assert_int_gt(getdelim(&json, &cap, '\0', f), 0);
		fclose(f);
		PGconn *c = pgt_connect(nb);
		ctr_json_eq(c, json, "{count}", "7");
		ctr_json_eq(c, json, "{node}", "ro");
		char t[32];
		snprintf(t, sizeof(t), "%lld", (long long)g + 1);
		ctr_json_eq(c, json, "{events,0,tick_id}", t);
		snprintf(t, sizeof(t), "%lld", (long long)g + 2);
		ctr_json_eq(c, json, "{events,6,tick_id}", t);
		PQfinish(c);
		free(json);
	}
	/* the end state */
	ct_expect_value(ro,
			"select node_type || '/' || provider_node || '/' || worker_paused::text"
			" from pgq_node.get_node_info('" CT_QUEUE "')",
			"branch/nb/true");
	snprintf(sql, sizeof(sql), "select count(*) from pgq.tick where tick_id > %lld",
		 (long long)g);
	ct_expect_value(ro, sql, "0");
	ct_expect_value(nb,
			"select string_agg(node_name || ':' || worker_name, ',' order by 1)"
			" from pgq_node.get_subscriber_info('" CT_QUEUE "')",
			"lf:w_lf,ro:w_ro");
	ct_expect_value(nb,
			"select count(*) from pgq.get_consumer_info('" CT_QUEUE "')"
			" where consumer_name = 'ro.gravestone'",
			"0");
	for (int i = 0; i < 3; i++)
		ct_expect_value(all[i], DEAD_OF("ro"), "false");
	r = ctr_node(dro, (const char *[]){"resurrect", CT_QUEUE, "--lost-events", file, NULL});
	ctr_expect(&r, 0, "nothing to do", NULL);
	ctr_free(&r);
	/* resumed, it follows the new root */
	r = ctr_node(dro, (const char *[]){"resume", CT_QUEUE, "--no-wait", NULL});
	ctr_expect(&r, 0, "w_ro resumed", NULL);
	ctr_free(&r);
	tick(nb); /* carries the location-info events of tag-alive */
	CtWorker wr = {0};
	ct_start(&wr, ro, POLL);
	ct_start(&wl, lf, POLL);
	const char *dbs2[2] = {ro, lf}, *names2[2] = {"ro", "lf"};
	ck_assert(ct_wait_synced(nb, dbs2, names2, 2, 20000));
	ct_stop(&wr);
	ct_stop(&wl);
	ck_assert_int_eq(wr.errors, 0);
	ct_assert_same("resurrected root events", ct_events(ro, false), ct_events(nb, false));
	r = ctr_node(dnb, (const char *[]){"status", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "healthy", NULL);
	ctr_free(&r);
	free(ro);
	free(nb);
	free(lf);
	free(dro);
	free(dnb);
}
END_TEST

/* ---- python3-pgq's CascadeAdmin on Debian's pgq_node ---- */

#define PYTHON "/usr/bin/python3"

static const char admin_py[] = "import sys\n"
			       "from pgq.cascade.admin import CascadeAdmin\n"
			       "CascadeAdmin('cascade_admin', 'db', sys.argv[1:],"
			       " worker_setup=True).start()\n";

static int py_admin(const char *dir, const char *name, const char *db, const char *const *args,
		    char **out)
{
	char ini[700], py[700], outf[700], text[4096];
	snprintf(py, sizeof(py), "%s/admin.py", dir);
	snprintf(ini, sizeof(ini), "%s/%s.ini", dir, name);
	snprintf(outf, sizeof(outf), "%s/%s.out", dir, name);
	FILE *f = fopen(py, "w");
	fputs(admin_py, f);
	fclose(f);
	snprintf(text, sizeof(text),
		 "[cascade_admin]\njob_name = %s_worker\ndb = %s\nqueue_name = " CT_QUEUE "\n"
		 "logfile = %s/%s.log\npidfile = %s/%s.pid\n",
		 name, pgt_connstr(db, false), dir, name, dir, name);
	f = fopen(ini, "w");
	fputs(text, f);
	fclose(f);
	const char *argv[16] = {PYTHON, py, ini};
	int n = 3;
	for (int i = 0; args[i]; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (!freopen(outf, "w", stdout))
			_exit(126);
		dup2(1, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	int st;
	waitpid(pid, &st, 0);
	if (out) {
		FILE *o = fopen(outf, "r");
		size_t cap = 0;
		*out = NULL;
		if (o) {
			if (getdelim(out, &cap, '\0', o) < 0) {
				free(*out);
				*out = strdup("");
			}
			fclose(o);
		}
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

START_TEST(test_interop_cascadeadmin)
{
	char dir[600];
	CtlRun r;

	if (pgt_missing(system(PYTHON " -c 'import pgq.cascade.admin' >/dev/null 2>&1") != 0,
			"python3-pgq (scripts/packages.txt)"))
		return;
	snprintf(dir, sizeof(dir), "%s/casadm", pgt_tmp_dir());
	mkdir(dir, 0777);
	char *root = ct_debian_db("nodeops_deb_root"), *br = ct_debian_db("nodeops_deb_br");
	/* Debian's pgq_node, not ours */
	ct_expect_value(root, "select extversion from pg_extension where extname = 'pgq_node'",
			"3.5");
	char *droot = ctr_dsn_dup(root), *dbr = ctr_dsn_dup(br), prov[700];
	snprintf(prov, sizeof(prov), "--provider=%s", pgt_connstr(root, false));
	ck_assert_int_eq(py_admin(dir, "rootnode", root,
				  (const char *[]){"create-root", "rootnode",
						   pgt_connstr(root, false), NULL},
				  NULL),
			 0);
	ck_assert_int_eq(py_admin(dir, "branchnode", br,
				  (const char *[]){"create-branch", "branchnode",
						   pgt_connstr(br, false), prov, NULL},
				  NULL),
			 0);
	/* pgqctl reads the cascade CascadeAdmin made */
	r = ctr_node(dbr, (const char *[]){"status", CT_QUEUE, NULL});
	ctr_expect(&r, 0, NULL, NULL);
	{
		char *g = ctr_golden(r.out);
		char *gw = ctr_golden("cascade cq: 2 members, root rootnode at tick 1\n"
				      "node type provider lag_ticks lag last_tick paused uptodate "
				      "status\n"
				      "rootnode root - 0 0.0s 1 no no ok\n"
				      "`- branchnode branch rootnode 0 0.0s 1 no no ok\n"
				      "healthy\n");
		ck_assert_msg(strcmp(g, gw) == 0, "got:\n%s\nwant:\n%s", g, gw);
		free(g);
		free(gw);
	}
	ctr_free(&r);
	/* a node paused by pgqctl is paused for CascadeAdmin */
	r = ctr_node(dbr, (const char *[]){"pause", CT_QUEUE, "--no-wait", NULL});
	ctr_expect(&r, 0, "branchnode_worker paused", NULL);
	ctr_free(&r);
	char *out;
	ck_assert_int_eq(py_admin(dir, "branchnode", br, (const char *[]){"status", NULL}, &out),
			 0);
	ck_assert_msg(strstr(out, "PAUSED") != NULL, "%s", out);
	free(out);
	/* and pgqctl's tag-dead shows as dead there */
	r = ctr_node(droot, (const char *[]){"tag-dead", CT_QUEUE, "branchnode", NULL});
	ctr_expect(&r, 0, "finished", NULL);
	ctr_free(&r);
	ck_assert_int_eq(py_admin(dir, "rootnode", root, (const char *[]){"members", NULL}, &out),
			 0);
	ck_assert_msg(strstr(out, "branchnode") && strstr(out, "True"), "%s", out);
	free(out);
	r = ctr_node(droot, (const char *[]){"status", CT_QUEUE, NULL});
	ctr_expect(&r, 3, NULL, NULL);
	{
		char *g = ctr_golden(r.out);
		ck_assert_msg(strstr(g, "`- branchnode dead - - - - - - dead\n"), "%s", g);
		free(g);
	}
	ctr_free(&r);
	free(root);
	free(br);
	free(droot);
	free(dbr);
}
END_TEST

/* ---- names with a quote, a space and UTF-8; --json of the multi-step commands ---- */

#define ODD_Q "q 'x\xc3\xa9" /* q 'xé */
enum { O_ROOT, O_BR, O_LF };
static const char *const odd_node[3] = {"ro'ot \xc3\xa9", "b 1'\xc3\xbc", "l\"f \xc3\x9f"};
static const char *const odd_worker[3] = {"w ro'ot", "w b 1'\xc3\xbc", "w l\"f"};

/* One value of a statement with parameters (malloc'd; "(null)" for NULL). */
static char *odd_value(const char *db, const char *sql, int n, const char *const *p)
{
	PGconn *c = pgt_connect(db);
	PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
	char *v = strdup(PQntuples(r) && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "(null)");
	PQclear(r);
	PQfinish(c);
	return v;
}

/* A pgq_node call answering (ret_code, ret_note, ...): ret_code < 300. */
static void odd_call(const char *db, const char *sql, int n, const char *const *p)
{
	char *v = odd_value(db, sql, n, p);
	ck_assert_msg(atoi(v) < 300, "%s: %s", sql, v);
	free(v);
}

static void odd_location(const char *on, const char *name, const char *where, bool dead)
{
	char *loc = strdup(pgt_connstr(where, false)); /* a static buffer pgt_connect reuses */
	const char *p[4] = {ODD_Q, name, loc, dead ? "true" : "false"};
	odd_call(on, "select * from pgq_node.register_location($1, $2, $3, $4::boolean)", 4, p);
	free(loc);
}

/* The member `i` under provider `pi` (the root is O_ROOT), as ct_make_sub_q does, but
   with every name a parameter. */
static void odd_make(char *const *db, int i, const char *type, int pi)
{
	char *gwm;
	if (i == O_ROOT) {
		const char *p[3] = {ODD_Q, odd_node[i], odd_worker[i]};
		odd_location(db[i], odd_node[i], db[i], false);
		odd_call(db[i],
			 "select * from pgq_node.create_node($1, 'root', $2, $3, null, null, null)",
			 3, p);
		return;
	}
	odd_location(db[O_ROOT], odd_node[i], db[i], false);
	if (pi != O_ROOT)
		odd_location(db[pi], odd_node[i], db[i], false);
	{
		const char *p[3] = {ODD_Q, odd_node[i], odd_worker[i]};
		gwm = odd_value(
			db[pi],
			"select global_watermark from pgq_node.register_subscriber($1, $2, $3,"
			" null)",
			3, p);
	}
	for (int k = 0; k <= i; k++)
		odd_location(db[i], odd_node[k], db[k], false);
	const char *p[6] = {ODD_Q, type, odd_node[i], odd_worker[i], odd_node[pi], gwm};
	odd_call(db[i], "select * from pgq_node.create_node($1, $2, $3, $4, $5, $6::bigint, null)",
		 6, p);
	free(gwm);
}

static void odd_tick(const char *db)
{
	const char *p[1] = {ODD_Q};
	free(odd_value(db, "select pgq.force_tick($1), pgq.ticker($1)", 1, p));
}

static char *odd_node_value(const char *db, const char *col)
{
	char sql[200];
	const char *p[1] = {ODD_Q};
	snprintf(sql, sizeof(sql), "select %s from pgq_node.get_node_info($1)", col);
	return odd_value(db, sql, 1, p);
}

typedef struct OddCas {
	char *db[3];
	CtLoop l;
	CtWorker w[3];
} OddCas;

/* Every worker but the root's has the root's latest tick. */
static bool odd_synced(void *arg)
{
	OddCas *c = arg;
	char *root = NULL;
	for (int i = 0; i < 3 && !root; i++) {
		char *t = odd_node_value(c->db[i], "node_type");
		if (strcmp(t, "root") == 0)
			root = c->db[i];
		free(t);
	}
	const char *p[1] = {ODD_Q};
	char *top = odd_value(root,
			      "select max(t.tick_id) from pgq.tick t join pgq.queue q"
			      " on q.queue_id = t.tick_queue where q.queue_name = $1",
			      1, p);
	bool all = true;
	for (int i = 0; i < 3 && all; i++) {
		if (c->db[i] == root)
			continue; /* its worker only publishes watermarks */
		char *done = odd_value(c->db[i],
				       "select ls.last_tick_id from pgq_node.get_node_info($1) n"
				       " join pgq_node.local_state ls on ls.queue_name = $1"
				       " and ls.consumer_name = n.worker_name",
				       1, p);
		all = strcmp(done, top) == 0;
		free(done);
	}
	free(top);
	return all;
}

/* pgqctl node ... -d db (argv ends with NULL); the JSON document is checked
   by the server's parser in the callers. */
static CtlRun odd_run(const char *db, const char *const *args)
{
	char *d = ctr_dsn_dup(db);
	CtlRun r = ctr_node(d, args);
	free(d);
	return r;
}

START_TEST(test_odd_names_json)
{
	OddCas c = {0};
	CtlRun r;
	char path[64];

	for (int i = 0; i < 3; i++)
		c.db[i] = ct_node_db();
	odd_make(c.db, O_ROOT, "root", O_ROOT);
	odd_make(c.db, O_BR, "branch", O_ROOT);
	odd_make(c.db, O_LF, "leaf", O_BR);
	c.l.base = event_base_new();
	for (int i = 0; i < 3; i++)
		ct_start_q(&c.w[i], c.l.base, ODD_Q, c.db[i], POLL);
	ct_loop_go(&c.l);
	{
		const char *p[1] = {ODD_Q};
		free(odd_value(c.db[O_ROOT], "select pgq.insert_event($1, 'data', 'x')", 1, p));
	}
	odd_tick(c.db[O_ROOT]);
	ck_assert_msg(pgt_wait_until(odd_synced, &c, 30000, 20), "the cascade did not catch up");
	PGconn *pc = pgt_connect(c.db[O_ROOT]);

	/* status and its JSON, from the leaf */
	r = odd_run(c.db[O_LF], (const char *[]){"status", "--cascade", ODD_Q, "--json", NULL});
	ctr_expect(&r, 0, NULL, NULL);
	ctr_json_eq(pc, r.out, "{cascade}", ODD_Q);
	ctr_json_eq(pc, r.out, "{root}", odd_node[O_ROOT]);
	ctr_json_eq(pc, r.out, "{members}", "3");
	ctr_free(&r);

	/* pause / resume a node by its name */
	r = odd_run(c.db[O_ROOT],
		    (const char *[]){"pause", "--cascade", ODD_Q, "--node", odd_node[O_BR], NULL});
	ctr_expect(&r, 0, "has seen it", NULL);
	ctr_free(&r);
	r = odd_run(c.db[O_ROOT],
		    (const char *[]){"resume", "--cascade", ODD_Q, "--node", odd_node[O_BR], NULL});
	ctr_expect(&r, 0, "has seen it", NULL);
	ctr_free(&r);

	/* tag-dead: a dry run, the real one, and again (already done), as JSON */
	const char *tag_dry[] = {"tag-dead", ODD_Q, odd_node[O_LF], "--dry-run", "--json", NULL};
	r = odd_run(c.db[O_ROOT], tag_dry);
	ctr_expect(&r, 0, NULL, NULL);
	ctr_json_eq(pc, r.out, "{command}", "tag-dead");
	ctr_json_eq(pc, r.out, "{node}", odd_node[O_LF]);
	ctr_json_eq(pc, r.out, "{dry_run}", "true");
	ctr_json_eq(pc, r.out, "{ok}", "true");
	ctr_json_eq(pc, r.out, "{steps,0,outcome}", "would_do");
	ctr_json_eq(pc, r.out, "{steps,1,outcome}", "would_do");
	ctr_json_eq(pc, r.out, "{steps,2}", NULL);
	ctr_free(&r);
	for (int run = 0; run < 2; run++) {
		r = odd_run(c.db[O_ROOT],
			    (const char *[]){"tag-dead", ODD_Q, odd_node[O_LF], "--json", NULL});
		ctr_expect(&r, 0, NULL, NULL);
		ctr_json_eq(pc, r.out, "{dry_run}", "false");
		ctr_json_eq(pc, r.out, "{steps_done_now}", run == 0 ? "2" : "0");
		for (int k = 0; k < 2; k++) {
			snprintf(path, sizeof(path), "{steps,%d,outcome}", k);
			ctr_json_eq(pc, r.out, path, run == 0 ? "done" : "already_done");
			snprintf(path, sizeof(path), "{steps,%d,node}", k);
			ctr_json_eq(pc, r.out, path, odd_node[k]);
		}
		ctr_free(&r);
	}
	{
		const char *p[2] = {ODD_Q, odd_node[O_LF]};
		char *d = odd_value(c.db[O_BR],
				    "select dead::text from pgq_node.get_queue_locations($1)"
				    " where node_name = $2",
				    2, p);
		ck_assert_str_eq(d, "true");
		free(d);
	}
	/* tag-alive, as text: the names are shown quoted */
	r = odd_run(c.db[O_ROOT], (const char *[]){"tag-alive", ODD_Q, odd_node[O_LF], NULL});
	ctr_expect(&r, 0, "finished (2 steps done now)", NULL);
	ck_assert_msg(
		strstr(r.out, "step 2: \"b 1'\xc3\xbc\": tag \"l\\\"f \xc3\x9f\" alive: done"),
		"%s", r.out);
	ctr_free(&r);

	/* change-provider: the leaf reads from the root */
	r = odd_run(c.db[O_LF], (const char *[]){"change-provider", "--cascade", ODD_Q,
						 "--provider", odd_node[O_ROOT], "--json", NULL});
	ctr_expect(&r, 0, NULL, NULL);
	ctr_json_eq(pc, r.out, "{command}", "change-provider");
	ctr_json_eq(pc, r.out, "{ok}", "true");
	ctr_json_eq(pc, r.out, "{node}", odd_node[O_LF]);
	ctr_json_eq(pc, r.out, "{provider}", odd_node[O_ROOT]);
	ctr_json_eq(pc, r.out, "{steps,3,outcome}", "done");
	ctr_json_eq(pc, r.out, "{steps,5,outcome}", "done");
	ctr_json_eq(pc, r.out, "{steps,6}", NULL);
	ctr_free(&r);
	{
		char *pv = odd_node_value(c.db[O_LF], "provider_node");
		ck_assert_str_eq(pv, odd_node[O_ROOT]);
		free(pv);
	}

	/* switchover to the branch: every step done, the final tick, the write pause */
	r = odd_run(c.db[O_ROOT], (const char *[]){"switchover", "--cascade", ODD_Q, odd_node[O_BR],
						   "--json", NULL});
	ctr_expect(&r, 0, NULL, NULL);
	ctr_json_eq(pc, r.out, "{command}", "switchover");
	ctr_json_eq(pc, r.out, "{ok}", "true");
	ctr_json_eq(pc, r.out, "{old_root}", odd_node[O_ROOT]);
	ctr_json_eq(pc, r.out, "{new_root}", odd_node[O_BR]);
	ctr_json_eq(pc, r.out, "{steps,11,outcome}", "done");
	ctr_json_eq(pc, r.out, "{steps,12}", NULL);
	{
		char *ft = ctr_json(pc, r.out, "{final_tick}");
		char *wp = ctr_json(pc, r.out, "{write_pause_seconds}");
		ck_assert_msg(ft && atoll(ft) > 0 && wp, "%s", r.out);
		free(ft);
		free(wp);
	}
	ctr_free(&r);
	{
		char *t = odd_node_value(c.db[O_BR], "node_type");
		char *o = odd_node_value(c.db[O_ROOT], "node_type || '/' || provider_node");
		ck_assert_str_eq(t, "root");
		ck_assert_msg(strcmp(o, "branch/b 1'\xc3\xbc") == 0, "%s", o);
		free(t);
		free(o);
	}
	/* again: nothing left to do */
	r = odd_run(c.db[O_ROOT],
		    (const char *[]){"switchover", "--cascade", ODD_Q, odd_node[O_BR], NULL});
	ctr_expect(&r, 0, "already done", NULL);
	ctr_free(&r);

	PQfinish(pc);
	ct_loop_hold(&c.l);
	for (int i = 0; i < 3; i++) {
		ct_stop(&c.w[i]);
		free(c.db[i]);
	}
	event_base_free(c.l.base);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pgqctl-nodeops");
	/* one case each, so CK_RUN_CASE can pick one */
	const char *names[4] = {"status", "resurrect", "interop", "odd_names_json"};
	const TTest *tests[4] = {test_status_and_admin, test_resurrect, test_interop_cascadeadmin,
				 test_odd_names_json};
	for (int i = 0; i < 4; i++) {
		TCase *tc = pgt_tcase(names[i], 240);
		tcase_add_checked_fixture(tc, cs_setup, cs_teardown);
		tcase_add_test(tc, tests[i]);
		suite_add_tcase(s, tc);
	}
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
