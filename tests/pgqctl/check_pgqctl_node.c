/*
 * pgqctl node: create-root / create-branch / create-leaf on three databases of
 * the private server, the pgq_node tables each one holds afterwards, cascade
 * workers (libpgqev) copying events root -> branch -> leaf over the nodes
 * pgqctl made, re-runs that report what was already done, members / info, and
 * bad input (no pgq_node, unreachable provider, another node type, passwords),
 * merge leaves (--merge) and sync_watermark branches (--sync-watermark).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "castest.h"
#include "ctlrun.h"

#define POLL (50 * PGQEV_USEC_PER_MSEC)

/* One row's columns of a query, '|'-joined. */
static char *row(const char *db, const char *sql)
{
	PGconn *c = pgt_connect(db);
	char *v = pgt_value(c, sql);
	PQfinish(c);
	return v;
}

#define NODE_ROW                                                                     \
	"select n.node_type || '|' || n.node_name || '|' || n.worker_name || '|' ||" \
	" s.provider_node || '|' || s.last_tick_id from pgq_node.node_info n"        \
	" join pgq_node.local_state s on s.queue_name = n.queue_name"                \
	" and s.consumer_name = n.worker_name where n.queue_name = '" CT_QUEUE "'"
#define LOCS                                                                                     \
	"select string_agg(node_name || '=' || (node_location = %s)::text || '/' || dead::text," \
	" ',' order by node_name) from pgq_node.node_location where queue_name = '" CT_QUEUE "'"
#define SUBS                                                                    \
	"select coalesce(string_agg(subscriber_node || ':' || worker_name, ','" \
	" order by subscriber_node), '') from pgq_node.subscriber_info"

static void expect_row(const char *db, const char *sql, const char *want)
{
	char *v = row(db, sql);
	ck_assert_msg(v && strcmp(v, want) == 0, "%s: got \"%s\", want \"%s\"", db,
		      v ? v : "(null)", want);
	free(v);
}

START_TEST(test_create_chain_and_copy)
{
	char *root = ct_node_db(), *br = ct_node_db(), *lf = ct_node_db();
	char *droot = ctr_dsn_dup(root), *dbr = ctr_dsn_dup(br), *dlf = ctr_dsn_dup(lf);
	CtlRun r;

	/* root */
	r = ctr_node(droot, (const char *[]){"create-root", "root", "--queue", CT_QUEUE, "--worker",
					     "w_root", NULL});
	ctr_expect(&r, 0, "root node \"root\" created", NULL);
	ctr_free(&r);
	expect_row(root, NODE_ROW, "root|root|w_root|root|1");
	ck_assert_int_eq(pgt_int_db(root, "select count(*) from pgq.get_consumer_info('" CT_QUEUE
					  "') where consumer_name = '.global_watermark'"),
			 1);
	/* a second run changes nothing and says so */
	r = ctr_node(droot, (const char *[]){"create-root", "root", "--cascade", CT_QUEUE,
					     "--worker", "w_root", NULL});
	ctr_expect(&r, 0, "already done", NULL);
	ctr_free(&r);

	/* some history first, so the branch starts at a tick > 1 */
	ct_produce(root, 0, 10);
	{
		PGconn *c = pgt_connect(root);
		ctr_tick(c, CT_QUEUE);
		PQfinish(c);
	}
	pgt_exec_db(root, "select pgq_node.set_global_watermark('" CT_QUEUE "', null)");
	int64_t gw = ct_last_tick(root);
	ck_assert_int_gt(gw, 1);

	/* branch under the root; PUBLIC_CONNSTR given explicitly */
	r = ctr_node(dbr, (const char *[]){"create-branch", "br", dbr, "--provider", droot,
					   "--queue", CT_QUEUE, "--worker", "w_br", NULL});
	ctr_expect(&r, 0, "branch node \"br\" created, provider \"root\"", NULL);
	ctr_free(&r);
	{
		char want[128];
		snprintf(want, sizeof(want), "branch|br|w_br|root|%lld", (long long)gw);
		expect_row(br, NODE_ROW, want);
	}
	ck_assert_int_eq(pgt_int_db(br,
				    "select count(*) from pgq.queue where queue_name = '" CT_QUEUE
				    "' and queue_external_ticker and queue_disable_insert"),
			 1);
	expect_row(root, SUBS, "br:w_br");
	/* leaf under the branch */
	r = ctr_node(dlf, (const char *[]){"create-leaf", "lf", "--provider", dbr, "--queue",
					   CT_QUEUE, "--worker", "w_lf", NULL});
	ctr_expect(&r, 0, "leaf node \"lf\" created, provider \"br\"", NULL);
	ctr_free(&r);
	expect_row(br, SUBS, "lf:w_lf");
	expect_row(lf, SUBS, "");
	ck_assert_int_eq(pgt_int_db(lf, "select count(*) from pgq.queue"), 0);
	{
		char want[128];
		snprintf(want, sizeof(want), "leaf|lf|w_lf|br|%lld", (long long)gw);
		expect_row(lf, NODE_ROW, want);
	}
	/* locations: every node knows all three, each at its -d string, alive */
	{
		PGconn *c = pgt_connect(root);
		char *l1 = PQescapeLiteral(c, droot, strlen(droot));
		char *l2 = PQescapeLiteral(c, dbr, strlen(dbr));
		char *l3 = PQescapeLiteral(c, dlf, strlen(dlf));
		char sql[2048], cmp[1200];
		snprintf(cmp, sizeof(cmp),
			 "case node_name when 'root' then %s when 'br' then %s else %s end", l1, l2,
			 l3);
		snprintf(sql, sizeof(sql), LOCS, cmp);
		PQfreemem(l1);
		PQfreemem(l2);
		PQfreemem(l3);
		PQfinish(c);
		expect_row(root, sql, "br=true/false,lf=true/false,root=true/false");
		expect_row(br, sql, "br=true/false,lf=true/false,root=true/false");
		expect_row(lf, sql, "br=true/false,lf=true/false,root=true/false");
	}

	/* a second create-branch / create-leaf says what was already done */
	r = ctr_node(dlf, (const char *[]){"create-leaf", "lf", "--provider", dbr, "--queue",
					   CT_QUEUE, "--worker", "w_lf", NULL});
	ctr_expect(&r, 0, "already done: this database is node \"lf\"", NULL);
	ctr_free(&r);

	/* members / info */
	r = ctr_node(dlf, (const char *[]){"members", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "root", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "br"));
	ctr_free(&r);
	r = ctr_node(dbr, (const char *[]){"info", CT_QUEUE, "--json", NULL});
	ctr_expect(&r, 0, NULL, NULL);
	{
		PGconn *c = pgt_connect(br);
		ctr_json_eq(c, r.out, "{node_type}", "branch");
		ctr_json_eq(c, r.out, "{provider_node}", "root");
		PQfinish(c);
	}
	ctr_free(&r);

	/* workers copy root -> branch -> leaf */
	ct_make_applied(lf);
	CtWorker wr = {0}, wb = {0}, wl = {.apply = true};
	ct_start(&wr, root, POLL);
	ct_start(&wb, br, POLL);
	ct_start(&wl, lf, POLL);
	int64_t before = pgt_int_db(root, "select max(ev_id) from pgq.event_template");
	ct_produce(root, 10, 60);
	{
		PGconn *c = pgt_connect(root);
		ctr_tick(c, CT_QUEUE);
		PQfinish(c);
	}
	ck_assert_int_gt(ct_last_tick(root), gw);
	const char *dbs[2] = {br, lf};
	const char *names[2] = {"br", "lf"};
	ck_assert_msg(ct_wait_synced(root, dbs, names, 2, 20000), "chain did not catch up");
	ct_stop(&wl);
	ct_stop(&wb);
	ct_stop(&wr);
	ck_assert_int_eq(wb.errors + wl.errors, 0);
	/* the 50 events produced after the branch's start are on both */
	{
		char sql[256];
		snprintf(sql, sizeof(sql),
			 "select count(*) from pgq.event_template"
			 " where coalesce(ev_type, '') not like 'pgq.%%' and ev_id > %lld",
			 (long long)before);
		ck_assert_int_eq(pgt_int_db(br, sql), 50);
		snprintf(sql, sizeof(sql),
			 "select count(*) from applied"
			 " where coalesce(ev_type, '') not like 'pgq.%%' and ev_id > %lld",
			 (long long)before);
		ck_assert_int_eq(pgt_int_db(lf, sql), 50);
	}
	free(root);
	free(br);
	free(lf);
	free(droot);
	free(dbr);
	free(dlf);
}
END_TEST

START_TEST(test_bad_input)
{
	char *root = ct_node_db(), *other = ct_node_db(), *nonode = strdup(pgt_db_new_empty());
	char *droot = ctr_dsn_dup(root), *dother = ctr_dsn_dup(other),
	     *dnonode = ctr_dsn_dup(nonode);
	CtlRun r;

	r = ctr_node(droot, (const char *[]){"create-root", "root", "--queue", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "created", NULL);
	ctr_free(&r);
	/* no queue option, no provider, root with a provider */
	r = ctr_node(dother, (const char *[]){"create-branch", "b", "--provider", droot, NULL});
	ctr_expect(&r, 2, NULL, "needs --queue QUEUE");
	ctr_free(&r);
	r = ctr_node(dother, (const char *[]){"create-leaf", "b", "--queue", CT_QUEUE, NULL});
	ctr_expect(&r, 2, NULL, "needs --provider CONNSTR");
	ctr_free(&r);
	/* the root again, as a branch: another type */
	r = ctr_node(droot, (const char *[]){"create-branch", "root", "--provider", dother,
					     "--queue", CT_QUEUE, NULL});
	ctr_expect(&r, 1, NULL, "already node \"root\" of type root");
	ctr_free(&r);
	/* a database without pgq_node */
	r = ctr_node(dnonode, (const char *[]){"create-root", "x", "--queue", CT_QUEUE, NULL});
	ctr_expect(&r, 1, NULL, "no pgq_node schema in this database");
	ck_assert_ptr_nonnull(strstr(r.err, "create root node \"x\""));
	ctr_free(&r);
	/* provider unreachable: nothing changes on the new node */
	r = ctr_node(dother, (const char *[]){"create-branch", "b", "--provider",
					      "host=127.0.0.1 port=1 dbname=gone", "--queue",
					      CT_QUEUE, NULL});
	ctr_expect(&r, 1, NULL, "provider gone: create branch node \"b\"");
	ck_assert_ptr_nonnull(strstr(r.err, "provider unreachable"));
	ctr_free(&r);
	ck_assert_int_eq(pgt_int_db(other, "select count(*) from pgq_node.node_location"), 0);
	/* a provider database without the cascade */
	r = ctr_node(dother, (const char *[]){"create-branch", "b", "--provider", dnonode,
					      "--queue", CT_QUEUE, NULL});
	ctr_expect(&r, 1, NULL, "no pgq_node schema");
	ctr_free(&r);
	/* the provider is the node being made */
	r = ctr_node(dother, (const char *[]){"create-branch", "root", "--provider", droot,
					      "--queue", CT_QUEUE, NULL});
	ctr_expect(&r, 1, NULL, "the provider is node \"root\" itself");
	ctr_free(&r);
	/* a password in the public connect string: refused, never echoed */
	{
		char pub[1200];
		snprintf(pub, sizeof(pub), "%s password=s3cr3t-pw", dother);
		r = ctr_node(dother, (const char *[]){"create-branch", "b", pub, "--provider",
						      droot, "--queue", CT_QUEUE, NULL});
		ctr_expect(&r, 2, NULL, "holds a password");
		ck_assert_ptr_null(strstr(r.err, "s3cr3t-pw"));
		ck_assert_ptr_null(strstr(r.out, "s3cr3t-pw"));
		ctr_free(&r);
		ck_assert_int_eq(pgt_int_db(root, "select count(*) from pgq_node.node_location"),
				 1);
		/* a public connect string that reaches another database */
		r = ctr_node(dother, (const char *[]){"create-branch", "b", droot, "--provider",
						      droot, "--queue", CT_QUEUE, NULL});
		ctr_expect(&r, 1, NULL, "reaches database");
		ctr_free(&r);
		/* with --store-password: stored, with a warning; members hides it */
		r = ctr_node(dother,
			     (const char *[]){"create-branch", "b", pub, "--provider", droot,
					      "--queue", CT_QUEUE, "--store-password", NULL});
		ctr_expect(&r, 0, "created", "warning: storing a password");
		ck_assert_ptr_null(strstr(r.err, "s3cr3t-pw"));
		ctr_free(&r);
		r = ctr_node(droot, (const char *[]){"members", CT_QUEUE, NULL});
		ctr_expect(&r, 0, "hidden: holds a password", NULL);
		ck_assert_ptr_null(strstr(r.out, "s3cr3t-pw"));
		ctr_free(&r);
	}
	/* a run that stopped half way (location and subscription made on the root,
	   nothing on the node): the re-run says what it found and finishes */
	{
		char *part = ct_node_db(), *dpart = ctr_dsn_dup(part), sql[1400];
		PGconn *c = pgt_connect(root);
		char *lit = PQescapeLiteral(c, dpart, strlen(dpart));
		snprintf(sql, sizeof(sql),
			 "select pgq_node.register_location('" CT_QUEUE "', 'p', %s, false),"
			 " pgq_node.register_subscriber('" CT_QUEUE "', 'p', 'p', null)",
			 lit);
		PQfreemem(lit);
		pgt_exec(c, sql);
		PQfinish(c);
		r = ctr_node(dpart, (const char *[]){"create-leaf", "p", "--provider", droot,
						     "--queue", CT_QUEUE, NULL});
		ctr_expect(&r, 0, "location of \"p\" already registered", NULL);
		ck_assert_ptr_nonnull(strstr(r.out, "\"p\" already subscribed"));
		ck_assert_ptr_nonnull(strstr(r.out, "leaf node \"p\" created"));
		ctr_free(&r);
		expect_row(part, NODE_ROW, "leaf|p|p|root|1");
		free(part);
		free(dpart);
	}
	/* another database cannot take the name "p" */
	{
		char *third = ct_node_db(), *dthird = ctr_dsn_dup(third);
		r = ctr_node(dthird, (const char *[]){"create-leaf", "p", "--provider", droot,
						      "--queue", CT_QUEUE, NULL});
		ctr_expect(&r, 1, NULL, "node \"p\" is already a member of the cascade");
		ctr_free(&r);
		ck_assert_int_eq(pgt_int_db(third, "select count(*) from pgq_node.node_location"),
				 0);
		free(third);
		free(dthird);
	}
	free(root);
	free(other);
	free(nonode);
	free(droot);
	free(dother);
	free(dnonode);
}
END_TEST

static char *queue_events(const char *db, const char *q)
{
	char sql[400];
	snprintf(sql, sizeof(sql),
		 "select count(*) from pgq.event_template e"
		 " join pgq.queue q on q.queue_name = '%s'"
		 " where e.tableoid::regclass::text like q.queue_data_pfx || '%%'"
		 " and coalesce(ev_type, '') not like 'pgq.%%'",
		 q);
	return row(db, sql);
}

typedef struct CombinedCond {
	PGconn *c;
	int64_t next_ms;
} CombinedCond;

static bool combined_filled(void *arg)
{
	CombinedCond *k = arg;
	if (!pgt_due(&k->next_ms, 50))
		return false;
	return pgt_int(k->c, "select count(*) from pgq.event_template e join pgq.queue q"
			     " on q.queue_name = 'cq_all' where ev_type = 'pgq.tick-id' and"
			     " e.tableoid::regclass::text like q.queue_data_pfx || '%'") > 0;
}

/* create-leaf --merge: a merge leaf whose worker feeds the combined queue;
   create-branch --sync-watermark: the node attribute; both checked first. */
START_TEST(test_merge_and_sync_watermark)
{
	char *part = ct_node_db(), *comb = ct_node_db(), *br = ct_node_db();
	char *dpart = ctr_dsn_dup(part), *dcomb = ctr_dsn_dup(comb), *dbr = ctr_dsn_dup(br);
	CtlRun r;

	r = ctr_node(dpart, (const char *[]){"create-root", "p1", "--queue", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "created", NULL);
	ctr_free(&r);
	/* options for the other node types, and no combined node yet */
	r = ctr_node(dbr, (const char *[]){"create-branch", "b", "--provider", dpart, "--queue",
					   CT_QUEUE, "--merge", "cq_all", NULL});
	ctr_expect(&r, 2, NULL, "--merge is for a leaf");
	ctr_free(&r);
	r = ctr_node(dcomb, (const char *[]){"create-leaf", "m1", "--provider", dpart, "--queue",
					     CT_QUEUE, "--sync-watermark", "a", NULL});
	ctr_expect(&r, 2, NULL, "--sync-watermark is for a branch");
	ctr_free(&r);
	r = ctr_node(dcomb, (const char *[]){"create-leaf", "m1", "--provider", dpart, "--queue",
					     CT_QUEUE, "--merge", "cq_all", NULL});
	ctr_expect(&r, 1, NULL, "the combined queue \"cq_all\" has no node in this database");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int_db(part, "select count(*) from pgq_node.node_location"), 1);
	ck_assert_int_eq(pgt_int_db(comb, "select count(*) from pgq_node.node_location"), 0);
	r = ctr_node(dbr, (const char *[]){"create-branch", "b", "--provider", dpart, "--queue",
					   CT_QUEUE, "--sync-watermark", "b,,c", NULL});
	ctr_expect(&r, 2, NULL, "none empty");
	ctr_free(&r);

	/* the combined cascade's root, then the merge leaf beside it */
	r = ctr_node(dcomb, (const char *[]){"create-root", "all", "--queue", "cq_all", NULL});
	ctr_expect(&r, 0, "created", NULL);
	ctr_free(&r);
	r = ctr_node(dcomb, (const char *[]){"create-leaf", "m1", "--provider", dpart, "--queue",
					     CT_QUEUE, "--merge", "cq_all", NULL});
	ctr_expect(&r, 0, "leaf node \"m1\" created", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "feeds the combined queue \"cq_all\""));
	ctr_free(&r);
	expect_row(comb,
		   "select node_type || '|' || combined_queue || '|' || combined_type"
		   " from pgq_node.get_node_info('" CT_QUEUE "')",
		   "leaf|cq_all|root");
	expect_row(comb,
		   "select array_to_string(target_for, ',') from pgq_node.get_node_info('cq_all')",
		   CT_QUEUE); /* the partition queues that feed it */

	/* a branch that syncs its watermark with two nodes */
	r = ctr_node(dbr, (const char *[]){"create-branch", "b", "--provider", dpart, "--queue",
					   CT_QUEUE, "--sync-watermark", "b,m1", NULL});
	ctr_expect(&r, 0, "sync_watermark with b,m1", NULL);
	ctr_free(&r);
	expect_row(br, "select node_attrs from pgq_node.get_node_info('" CT_QUEUE "')",
		   "sync_watermark=b%2cm1");

	/* the merge leaf's worker copies the partition's events into cq_all */
	CtWorker wm = {0};
	ct_start(&wm, comb, POLL);
	ct_produce(part, 0, 20);
	/* a forced tick: pgq.ticker() ticks 20 events only once ticker_max_lag
	   (3 s by default) has passed since create-root's tick, which a quick run
	   never waits for */
	PGconn *pc = pgt_connect(part);
	ctr_tick(pc, CT_QUEUE);
	PQfinish(pc);
	CombinedCond k = {.c = pgt_connect(comb)};
	ck_assert_msg(cs_run_until(combined_filled, &k, 20000), "nothing reached cq_all");
	PQfinish(k.c);
	ct_stop(&wm);
	{
		char *v = queue_events(comb, "cq_all");
		ck_assert_str_eq(v, "20"); /* data events, new ids */
		free(v);
	}
	free(part);
	free(comb);
	free(br);
	free(dpart);
	free(dcomb);
	free(dbr);
}
END_TEST

/* Names: create-* take what pgq_node stores safely (quotes, spaces, UTF-8, as
   the operating commands do) and refuse the rest with the thing and the cause;
   the text tables quote odd names and escape control characters, so a member
   named by another tool cannot break or forge a row. */
#define ODD_Q    "q 'x\xc3\xa9"
#define ODD_ROOT "ro'ot \xc3\xa9"
#define ODD_BR   "b \"1\""

static int lines(const char *s)
{
	int n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

START_TEST(test_odd_names)
{
	char *root = ct_node_db(), *br = ct_node_db();
	char *droot = ctr_dsn_dup(root), *dbr = ctr_dsn_dup(br);
	CtlRun r;
	static const struct {
		const char *opt, *name, *err;
	} bad[] = {
		{NULL, "a\nb", "node name \"a\\x0ab\" holds a control character"},
		{NULL, "tab\there", "holds a control character (byte 0x09)"},
		{NULL, "x\xff", "is not valid UTF-8 (byte 0xff at offset 1)"},
		{NULL, " lead", "starts or ends with a space"},
		{NULL, "", "node name is empty"},
		{"--worker", ".w", "worker name .w starts with \".\""},
		{"--worker", "w.gravestone", "ends in \".gravestone\" or \".dumper\""},
		{"--queue", "q\r", "cascade name \"q\\x0d\" holds a control character"},
	};

	/* refused, with nothing stored */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *args[8] = {"create-root", bad[i].opt ? "x" : bad[i].name};
		int n = 2;
		if (bad[i].opt) {
			args[n++] = bad[i].opt;
			args[n++] = bad[i].name;
		}
		if (!bad[i].opt || strcmp(bad[i].opt, "--queue") != 0) {
			args[n++] = "--queue";
			args[n++] = ODD_Q;
		}
		args[n] = NULL;
		r = ctr_node(droot, args);
		ctr_expect(&r, 1, NULL, bad[i].err);
		ctr_free(&r);
	}
	ck_assert_int_eq(pgt_int_db(root, "select count(*) from pgq_node.node_location"), 0);

	/* accepted: a quote, a space, UTF-8, double quotes */
	r = ctr_node(droot, (const char *[]){"create-root", ODD_ROOT, "--queue", ODD_Q, "--worker",
					     "w ro'ot", NULL});
	ctr_expect(&r, 0, "root node \"ro'ot \xc3\xa9\" created", NULL);
	ctr_free(&r);
	r = ctr_node(dbr, (const char *[]){"create-branch", ODD_BR, "--provider", droot, "--queue",
					   ODD_Q, NULL});
	ctr_expect(&r, 0, "branch node \"b \\\"1\\\"\" created, provider \"ro'ot \xc3\xa9\"", NULL);
	ctr_free(&r);
	{
		PGconn *c = pgt_connect(br);
		const char *p[1] = {ODD_Q};
		PGresult *res = PQexecParams(c,
					     "select node_name || '|' || provider_node || '|' ||"
					     " worker_name from pgq_node.get_node_info($1)",
					     1, NULL, p, NULL, NULL, 0);
		ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
		ck_assert_str_eq(PQgetvalue(res, 0, 0), ODD_BR "|" ODD_ROOT "|" ODD_BR);
		PQclear(res);
		/* a member another tool named with a newline and a forged row */
		const char *q[2] = {ODD_Q, "evil\n`- fake branch ro'ot 0 0.0s 1 no yes ok"};
		res = PQexecParams(c,
				   "select pgq_node.register_location($1, $2,"
				   " 'host=127.0.0.1 port=1 dbname=gone', false)",
				   2, NULL, q, NULL, NULL, 0);
		ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
		PQclear(res);
		PQfinish(c);
	}
	/* status: one row per member, odd names quoted, the newline escaped */
	r = ctr_node(dbr, (const char *[]){"status", ODD_Q, NULL});
	ctr_expect(&r, 3, NULL, NULL);
	{
		char *g = ctr_golden(r.out);
		ck_assert_msg(
			strstr(g, "cascade \"q 'x\xc3\xa9\": 3 members, root \"ro'ot \xc3\xa9\""),
			"%s", g);
		ck_assert_msg(strstr(g, "\n\"ro'ot \xc3\xa9\" root - 0 "), "%s", g);
		ck_assert_msg(strstr(g, "\n`- \"b \\\"1\\\"\" branch \"ro'ot \xc3\xa9\" 0 "), "%s",
			      g);
		ck_assert_msg(
			strstr(r.out, "\n\"evil\\x0a`- fake branch ro'ot 0 0.0s 1 no yes ok\" "),
			"%s", r.out);
		ck_assert_ptr_null(strstr(r.out, "\n`- fake"));
		/* title, header, three rows, verdict */
		ck_assert_int_eq(lines(r.out), 6);
		free(g);
	}
	ctr_free(&r);
	/* members: the same quoting */
	r = ctr_node(dbr, (const char *[]){"members", ODD_Q, NULL});
	ctr_expect(&r, 0, "\"evil\\x0a`- fake branch", NULL);
	ck_assert_int_eq(lines(r.out), 4);
	ctr_free(&r);

	/* --sync-watermark and --merge take the same names: a sync branch listing
	   both odd nodes (urlencoded as PgQ's tool writes it), and a merge leaf
	   feeding a combined queue with a quote and a space */
	char *sb = ct_node_db(), *ml = ct_node_db();
	char *dsb = ctr_dsn_dup(sb), *dml = ctr_dsn_dup(ml);
	r = ctr_node(dsb, (const char *[]){"create-branch", "sb", "--provider", droot, "--queue",
					   ODD_Q, "--sync-watermark", ODD_ROOT "," ODD_BR, NULL});
	ctr_expect(&r, 0, "sync_watermark with \"ro'ot \xc3\xa9\",\"b \\\"1\\\"\"\n", NULL);
	ctr_free(&r);
	{
		PGconn *c = pgt_connect(sb);
		const char *p[1] = {ODD_Q};
		PGresult *res = PQexecParams(c, "select node_attrs from pgq_node.get_node_info($1)",
					     1, NULL, p, NULL, NULL, 0);
		ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
		ck_assert_str_eq(PQgetvalue(res, 0, 0),
				 "sync_watermark=ro%27ot%20%c3%a9%2cb%20%221%22");
		PQclear(res);
		PQfinish(c);
	}
	r = ctr_node(dsb, (const char *[]){"create-branch", "sb", "--provider", droot, "--queue",
					   ODD_Q, "--sync-watermark", "a, b", NULL});
	ctr_expect(&r, 2, NULL, "--sync-watermark node name \" b\" starts or ends with a space");
	ctr_free(&r);
	r = ctr_node(dml, (const char *[]){"create-root", "all", "--queue", "c 'all", NULL});
	ctr_expect(&r, 0, "created", NULL);
	ctr_free(&r);
	r = ctr_node(dml, (const char *[]){"create-leaf", "m 1", "--provider", droot, "--queue",
					   ODD_Q, "--merge", "c 'all", NULL});
	ctr_expect(&r, 0, "it feeds the combined queue \"c 'all\"", NULL);
	ctr_free(&r);
	{
		PGconn *c = pgt_connect(ml);
		const char *p[1] = {ODD_Q};
		PGresult *res = PQexecParams(c,
					     "select node_type || '|' || combined_queue"
					     " from pgq_node.get_node_info($1)",
					     1, NULL, p, NULL, NULL, 0);
		ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
		ck_assert_str_eq(PQgetvalue(res, 0, 0), "leaf|c 'all");
		PQclear(res);
		PQfinish(c);
	}
	free(sb);
	free(ml);
	free(dsb);
	free(dml);
	free(root);
	free(br);
	free(droot);
	free(dbr);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pgqctl-node");
	TCase *tc = pgt_tcase("node", 120);
	tcase_add_checked_fixture(tc, cs_setup, cs_teardown);
	tcase_add_test(tc, test_create_chain_and_copy);
	tcase_add_test(tc, test_bad_input);
	tcase_add_test(tc, test_merge_and_sync_watermark);
	tcase_add_test(tc, test_odd_names);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
