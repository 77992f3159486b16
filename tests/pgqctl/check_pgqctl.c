/*
 * pgqctl against a private PostgreSQL: every command on our SQL (plain and as
 * the pgq_ev extension) and on Debian's PgQ 3.5 C extension; golden output of
 * status and queues with times masked; --json checked field by field by the
 * server's own JSON parser; every bad input the issue lists; tail stopped by
 * SIGINT and SIGTERM; status --all with an unreachable database.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctlrun.h"
#include "pgtest.h"

static char dsn_buf[1024];

/* -d value for a database (as postgres, or `user`). */
static const char *dsn(const char *db, const char *user)
{
	snprintf(dsn_buf, sizeof(dsn_buf), "%s%s%s", pgt_connstr(db, false), user ? " user=" : "",
		 user ? user : "");
	return dsn_buf;
}

#define RUN(...) ctr_run(NULL, "-d", d, __VA_ARGS__, (const char *)NULL)

static void expect(CtlRun *r, int rc, const char *out_has, const char *err_has)
{
	ck_assert_msg(r->rc == rc, "exit %d, expected %d\nstdout: %s\nstderr: %s", r->rc, rc,
		      r->out, r->err);
	if (out_has)
		ck_assert_msg(strstr(r->out, out_has), "stdout lacks \"%s\":\n%s", out_has, r->out);
	if (err_has)
		ck_assert_msg(strstr(r->err, err_has), "stderr lacks \"%s\":\n%s", err_has, r->err);
}

/* A tick now, whatever the queue's thresholds say. */
static void tick(PGconn *c, const char *queue)
{
	char sql[256];

	snprintf(sql, sizeof(sql), "select pgq.force_tick('%s'), pgq.ticker('%s')", queue, queue);
	pgt_exec(c, sql);
}

static void json_eq(PGconn *c, const char *json, const char *path, const char *want)
{
	char *v = ctr_json(c, json, path);

	if (!want)
		ck_assert_msg(v == NULL, "%s: expected null, got %s in %s", path, v, json);
	else
		ck_assert_msg(v && strcmp(v, want) == 0, "%s: expected %s, got %s in %s", path,
			      want, v ? v : "null", json);
	free(v);
}

/* Masked, with runs of spaces collapsed (column widths depend on the times). */
static char *golden(const char *s)
{
	char *m = ctr_mask(s), *o = m;

	for (char *p = m; *p; p++) {
		if (*p == ' ' && p[1] == ' ')
			continue;
		*o++ = *p;
	}
	*o = '\0';
	return m;
}

START_TEST(test_install_plain_version_and_again)
{
	const char *db = pgt_db_new_empty();
	char d[1024];
	PGconn *c = pgt_connect(db);
	CtlRun r;

	snprintf(d, sizeof(d), "%s", dsn(db, NULL));
	r = RUN("version");
	expect(&r, 0, "pgq       not installed", NULL);
	ctr_free(&r);
	r = RUN("install");
	expect(&r, 0, "installed pgq 3.5, pgqd-ev ", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "(plain), pgq_coop"));
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_namespace where nspname in"
				    " ('pgq', 'pgq_coop', 'pgq_ext')"),
			 3);
	r = RUN("version", "--json");
	expect(&r, 0, NULL, NULL);
	json_eq(c, r.out, "{pgq}", "3.5");
	json_eq(c, r.out, "{pgq_form}", "plain");
	json_eq(c, r.out, "{pgq_extension}", NULL);
	json_eq(c, r.out, "{pgq_coop_form}", "plain");
	json_eq(c, r.out, "{pgq_ext_form}", "plain");
	ctr_free(&r);
	/* a second install changes nothing and says why */
	r = RUN("install");
	expect(&r, 1, NULL, "PgQ 3.5 is already installed (plain); use pgqctl upgrade");
	ctr_free(&r);
	r = RUN("upgrade");
	expect(&r, 0, "upgraded to pgq 3.5", NULL);
	ctr_free(&r);
	/* uninstall needs its confirmation */
	r = RUN("uninstall");
	expect(&r, 2, NULL, "--yes-drop-all-queues");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_namespace where nspname = 'pgq'"), 1);
	r = RUN("create", "qq");
	ctr_free(&r);
	r = RUN("uninstall", "--yes-drop-all-queues");
	expect(&r, 0, "dropped 1 queues", NULL);
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_namespace where nspname like 'pgq%'"),
			 0);
	PQfinish(c);
}
END_TEST

START_TEST(test_install_extension_as_non_superuser)
{
	const char *db = pgt_db_new_empty();
	char d[1024], sql[256];
	PGconn *c = pgt_connect(db);
	CtlRun r;

	pgt_exec(c, "do $$ begin if not exists (select from pg_roles where rolname = 'ctl_owner')"
		    " then create role ctl_owner login; end if; end $$");
	snprintf(sql, sizeof(sql), "alter database %s owner to ctl_owner", db);
	pgt_exec(c, sql);
	snprintf(d, sizeof(d), "%s", dsn(db, "ctl_owner"));
	r = RUN("install", "--extension");
	expect(&r, 0, "(extension pgq_ev)", NULL);
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_extension where extname in"
				    " ('pgq_ev', 'pgq_coop_ev', 'pgq_ext_ev')"),
			 3);
	r = RUN("version");
	expect(&r, 0, "pgq       3.5 (extension pgq_ev)", NULL);
	ctr_free(&r);
	r = RUN("upgrade");
	expect(&r, 0, "upgraded to", NULL);
	ctr_free(&r);
	r = RUN("uninstall", "--yes-drop-all-queues");
	expect(&r, 0, "uninstalled pgq 3.5 (extension)", NULL);
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_extension where extname like 'pgq%'"),
			 0);
	PQfinish(c);
}
END_TEST

START_TEST(test_queues_create_config_drop)
{
	const char *db = pgt_db_new();
	char d[1024];
	PGconn *c = pgt_connect(db);
	CtlRun r;
	char *g;

	snprintf(d, sizeof(d), "%s", dsn(db, NULL));
	r = RUN("create", "orders", "ticker_max_lag=2", "low_latency=on",
		"queue_ticker_max_count=7");
	expect(&r, 0, "created queue orders", NULL);
	ctr_free(&r);
	r = RUN("create", "billing");
	ctr_free(&r);
	/* a bad value in the middle: nothing is created */
	r = RUN("create", "third", "ticker_max_count=5", "ticker_max_lag=xyz");
	expect(&r, 1, NULL, "create queue \"third\"");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.queue where queue_name = 'third'"),
			 0);
	r = RUN("create", "third", "nosuch=1");
	expect(&r, 1, NULL, "unknown queue setting \"nosuch\"");
	ctr_free(&r);
	r = RUN("create", "orders");
	expect(&r, 1, NULL, "create queue \"orders\": the queue already exists");
	ctr_free(&r);

	r = RUN("queues");
	expect(&r, 0, NULL, NULL);
	g = golden(r.out);
	ck_assert_str_eq(g, "queue tables rotation ticker (count/lag/idle) ticker lag ev/s new "
			    "consumers\n"
			    "billing 3 <T> 500/<T>/<T> <T> - 0 0\n"
			    "orders 3 <T> 7/<T>/<T> <T> - 0 0\n");
	free(g);
	ctr_free(&r);
	r = RUN("queues", "--json");
	expect(&r, 0, NULL, NULL);
	json_eq(c, r.out, "{1,queue}", "orders");
	json_eq(c, r.out, "{1,ticker_max_count}", "7");
	json_eq(c, r.out, "{1,ticker_max_lag}", "2");
	json_eq(c, r.out, "{1,ticker_idle_period}", "60");
	json_eq(c, r.out, "{1,rotation_period}", "7200");
	json_eq(c, r.out, "{1,ntables}", "3");
	json_eq(c, r.out, "{1,ticker_paused}", "false");
	json_eq(c, r.out, "{1,consumers}", "0");
	json_eq(c, r.out, "{0,queue}", "billing");
	ctr_free(&r);

	r = RUN("config", "orders");
	expect(&r, 0, NULL, NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "low_latency "));
	ck_assert_ptr_nonnull(strstr(r.out, "ticker_max_count "));
	ctr_free(&r);
	r = RUN("config", "orders", "--json");
	json_eq(c, r.out, "{settings,low_latency}", "true");
	json_eq(c, r.out, "{settings,ticker_max_lag}", "00:00:02");
	ctr_free(&r);
	r = RUN("config", "orders", "ticker_paused=on", "rotation_period=1h", "low_latency=off");
	expect(&r, 0, "3 settings changed", NULL);
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.queue where queue_name = 'orders' and"
				    " queue_ticker_paused and not queue_low_latency and"
				    " queue_rotation_period = '1h'"),
			 1);
	r = RUN("config", "nosuch");
	expect(&r, 1, NULL, "config \"nosuch\": no such queue");
	ctr_free(&r);
	r = RUN("config", "nosuch", "ticker_paused=on");
	expect(&r, 1, NULL, "no such queue");
	ctr_free(&r);

	pgt_exec(c, "select pgq.register_consumer('billing', 'c1')");
	r = RUN("drop", "billing");
	expect(&r, 1, NULL, "drop queue \"billing\"");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.queue where queue_name = 'billing'"),
			 1);
	r = RUN("drop", "billing", "--force");
	expect(&r, 0, "dropped queue billing", NULL);
	ctr_free(&r);
	r = RUN("drop", "billing");
	expect(&r, 1, NULL, "drop queue \"billing\": no such queue");
	ctr_free(&r);
	PQfinish(c);
}
END_TEST

START_TEST(test_consumers_register_unregister_coop)
{
	const char *db = pgt_db_new();
	char d[1024];
	PGconn *c = pgt_connect(db);
	CtlRun r;

	snprintf(d, sizeof(d), "%s", dsn(db, NULL));
	pgt_exec(c, "select pgq.create_queue('q')");
	tick(c, "q");
	r = RUN("register", "q", "c1");
	expect(&r, 0, "registered c1 on q", NULL);
	ctr_free(&r);
	r = RUN("register", "q", "c1");
	expect(&r, 1, NULL, "register \"c1\" on queue \"q\": already registered");
	ctr_free(&r);
	r = RUN("register", "nosuch", "c1");
	expect(&r, 1, NULL, "no such queue \"nosuch\"");
	ctr_free(&r);
	r = RUN("register", "q", "c2", "--from-start-of-retained");
	expect(&r, 0, "at tick 1", NULL);
	ctr_free(&r);
	r = RUN("register", "q", "c3", "--at", "2");
	expect(&r, 0, "at tick 2", NULL);
	ctr_free(&r);
	r = RUN("register", "q", "c4", "--at", "x");
	expect(&r, 2, NULL, "--at: \"x\" is not a number");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select last_tick from pgq.get_consumer_info('q', 'c2')"), 1);
	/* a cooperative group */
	pgt_exec(c, "select pgq_coop.register_subconsumer('q', 'grp', 'w1')");
	r = RUN("consumers", "q");
	expect(&r, 0, "sub of grp", NULL);
	ctr_free(&r);
	r = RUN("consumers", "--json");
	json_eq(c, r.out, "{0,consumer}", "c1");
	json_eq(c, r.out, "{0,coop_main}", NULL);
	json_eq(c, r.out, "{0,last_tick}", "2");
	json_eq(c, r.out, "{4,consumer}", "grp.w1");
	json_eq(c, r.out, "{4,coop_main}", "grp");
	ctr_free(&r);
	r = RUN("unregister", "q", "c1");
	expect(&r, 0, "unregistered c1 from q", NULL);
	ctr_free(&r);
	r = RUN("unregister", "q", "c1");
	expect(&r, 1, NULL, "unregister \"c1\" from queue \"q\": no such consumer on this queue");
	ctr_free(&r);
	r = RUN("consumers", "nosuch");
	expect(&r, 1, NULL, "no such queue \"nosuch\"");
	ctr_free(&r);
	r = RUN("complete", "consumers", "q");
	expect(&r, 0, "c2\nc3\ngrp\ngrp.w1\n", NULL);
	ctr_free(&r);
	r = RUN("complete", "queues");
	expect(&r, 0, "q\n", NULL);
	ctr_free(&r);
	PQfinish(c);
}
END_TEST

START_TEST(test_status_golden_json_and_problems)
{
	const char *db = pgt_db_new();
	char d[1024], want[2048], *ver, *g;
	PGconn *c = pgt_connect(db);
	CtlRun r;

	snprintf(d, sizeof(d), "%s", dsn(db, NULL));
	ver = pgt_value(c, "select current_setting('server_version')");
	pgt_exec(c, "select pgq.create_queue('a')");
	pgt_exec(c, "select pgq.create_queue('b')");
	pgt_exec(c, "select pgq.register_consumer('a', 'ca')");
	r = RUN("status");
	expect(&r, 0, NULL, NULL);
	g = golden(r.out);
	snprintf(want, sizeof(want),
		 "%s: PostgreSQL %s, pgq 3.5 (plain), pgqd-ev 0.1.0\n\n"
		 "Queues\n"
		 "queue tables rotation ticker (count/lag/idle) ticker lag ev/s new retry problem\n"
		 "a 3 <T> 500/<T>/<T> <T> - 0 0 \n"
		 "b 3 <T> 500/<T>/<T> <T> - 0 0 \n\n"
		 "Consumers\n"
		 "queue consumer lag last seen batch pending coop problem\n"
		 "a ca <T> <T> - 0 \n\n"
		 "No problems.\n",
		 db, ver);
	ck_assert_str_eq(g, want);
	free(g);
	ctr_free(&r);

	/* make every kind of problem */
	pgt_exec(c, "select pgq.insert_event('a', 't', 'x1')");
	tick(c, "a");
	pgt_exec(c, "select pgq.next_batch('a', 'ca')");
	pgt_exec(c, "select pgq.event_retry(pgq.next_batch('a', 'ca'), ev_id, 0)"
		    " from pgq.get_batch_events(pgq.next_batch('a', 'ca'))");
	pgt_exec(c, "update pgq.retry_queue set ev_retry_after = now() - interval '1 hour'");
	pgt_exec(c, "update pgq.subscription set sub_active = now() - interval '20 minutes'");
	pgt_exec(c, "update pgq.tick set tick_time = tick_time - interval '10 minutes'"
		    " where tick_queue = (select queue_id from pgq.queue where queue_name = 'b')");
	r = RUN("status");
	expect(&r, 3, "Problems\n", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "queue b: no tick for 10m"));
	ck_assert_ptr_nonnull(strstr(r.out, "is the ticker running?"));
	ck_assert_ptr_nonnull(strstr(r.out, "consumer ca on a: batch "));
	ck_assert_ptr_nonnull(strstr(r.out, "open for 20m"));
	ck_assert_ptr_nonnull(strstr(r.out, "queue a: 1 retry events, overdue by 1h00m"));
	ctr_free(&r);
	/* thresholds are options */
	r = RUN("status", "--stuck-minutes", "30", "--retry-overdue-minutes", "120", "--tick-grace",
		"3600");
	expect(&r, 0, "No problems.", NULL);
	ctr_free(&r);
	r = RUN("status", "--json");
	expect(&r, 3, NULL, NULL);
	json_eq(c, r.out, "{ok}", "false");
	json_eq(c, r.out, "{databases,0,database}", db);
	json_eq(c, r.out, "{databases,0,reachable}", "true");
	json_eq(c, r.out, "{databases,0,pgq}", "3.5");
	json_eq(c, r.out, "{databases,0,pgq_form}", "plain");
	json_eq(c, r.out, "{databases,0,server}", ver);
	json_eq(c, r.out, "{databases,0,queues,0,queue}", "a");
	json_eq(c, r.out, "{databases,0,queues,0,retry_events}", "1");
	json_eq(c, r.out, "{databases,0,queues,0,ticker_max_count}", "500");
	json_eq(c, r.out, "{databases,0,queues,0,problem}", NULL);
	json_eq(c, r.out, "{databases,0,queues,1,queue}", "b");
	json_eq(c, r.out, "{databases,0,consumers,0,consumer}", "ca");
	json_eq(c, r.out, "{databases,0,consumers,0,coop_main}", NULL);
	{
		char *p = ctr_json(c, r.out, "{databases,0,queues,1,problem}");
		ck_assert_ptr_nonnull(p);
		ck_assert_ptr_nonnull(strstr(p, "no tick for"));
		free(p);
		p = ctr_json(c, r.out, "{problems}");
		ck_assert_ptr_nonnull(strstr(p, "open for"));
		free(p);
	}
	ctr_free(&r);
	free(ver);
	PQfinish(c);
}
END_TEST

START_TEST(test_events_insert_retry)
{
	const char *db = pgt_db_new();
	char d[1024], bid[32];
	PGconn *c = pgt_connect(db);
	CtlRun r;
	char *v;

	snprintf(d, sizeof(d), "%s", dsn(db, NULL));
	pgt_exec(c, "select pgq.create_queue('q')");
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	r = RUN("insert", "q", "ty", "payload one", "e1");
	expect(&r, 0, NULL, NULL);
	ctr_free(&r);
	r = ctr_run("a\tb\n\nplain line\nx\ty\tz1\tz2\tz3\tz4\n", "-d", d, "insert", "q", "--stdin",
		    (const char *)NULL);
	expect(&r, 0, NULL, "inserted 3 events into q");
	ctr_free(&r);
	r = ctr_run("{\"type\":\"j\",\"data\":\"d\\\"q\",\"extra2\":\"e2\"}\n{\"data\":\"only\"}\n",
		    "-d", d, "insert", "q", "--stdin", "--json", (const char *)NULL);
	expect(&r, 0, NULL, "inserted 2 events");
	ctr_free(&r);
	/* a bad line changes nothing */
	r = ctr_run("{\"data\":\"fine\"}\nnot json\n", "-d", d, "insert", "q", "--stdin", "--json",
		    (const char *)NULL);
	expect(&r, 1, NULL, "stdin line 2: not a JSON object");
	ctr_free(&r);
	r = ctr_run("{\"data\":\"fine\"}\n{\"data\": nope}\n", "-d", d, "insert", "q", "--stdin",
		    "--json", (const char *)NULL);
	expect(&r, 1, NULL, "stdin lines 1..2");
	ctr_free(&r);
	tick(c, "q");
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.event_1"), 6);

	r = RUN("events", "q", "--consumer", "c");
	expect(&r, 0, "\tty\tpayload one\textra1=e1\n", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "\ttext\tplain line\n"));
	ck_assert_ptr_nonnull(
		strstr(r.out, "\tx\ty\textra1=z1\textra2=z2\textra3=z3\textra4=z4\n"));
	ctr_free(&r);
	/* looking consumed nothing */
	ck_assert_int_eq(pgt_int(c, "select last_tick from pgq.get_consumer_info('q', 'c')"), 1);
	ck_assert_int_eq(
		pgt_int(c, "select count(*) from pgq.subscription where sub_batch is not null"), 0);
	r = RUN("events", "q", "--consumer", "c", "--limit", "2", "--json");
	expect(&r, 0, NULL, NULL);
	{
		char *nl = strchr(r.out, '\n');
		ck_assert_ptr_nonnull(nl);
		*nl = '\0';
		json_eq(c, r.out, "{ev_type}", "ty");
		json_eq(c, r.out, "{ev_extra1}", "e1");
		json_eq(c, r.out, "{ev_extra2}", NULL);
		ck_assert_ptr_nonnull(strchr(nl + 1, '\n'));
		ck_assert_ptr_null(strchr(strchr(nl + 1, '\n') + 1, '\n'));
	}
	ctr_free(&r);
	v = pgt_value(c, "select pgq.next_batch('q', 'c')");
	snprintf(bid, sizeof(bid), "%s", v);
	free(v);
	r = RUN("events", "q", "--batch", bid, "--json", "--limit", "100");
	expect(&r, 0, "\"ev_data\":\"d\\\"q\"", NULL);
	ctr_free(&r);
	r = RUN("events", "q", "--consumer", "nobody");
	expect(&r, 1, NULL, "no such consumer on this queue");
	ctr_free(&r);
	r = RUN("events", "q");
	expect(&r, 2, NULL, "needs one of --consumer C or --batch ID");
	ctr_free(&r);

	/* retry queue */
	pgt_exec(
		c,
		"select pgq.event_retry(pgq.next_batch('q', 'c'), ev_id, 3600)"
		" from pgq.get_batch_events(pgq.next_batch('q', 'c')) where ev_type in ('ty', 'j')");
	r = RUN("retry", "list", "--json");
	expect(&r, 0, NULL, NULL);
	json_eq(c, r.out, "{0,queue}", "q");
	json_eq(c, r.out, "{0,consumer}", "c");
	ctr_free(&r);
	r = RUN("retry", "now", "q", "999999");
	expect(&r, 1, NULL, "not in the retry queue: 999999");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.retry_queue"), 2);
	v = pgt_value(c, "select min(ev_id) from pgq.retry_queue");
	r = RUN("retry", "now", "q", v);
	expect(&r, 0, "made due 1 retry events of q", NULL);
	ctr_free(&r);
	free(v);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.retry_queue"), 1);
	r = RUN("retry", "drop", "q", "--all-events");
	expect(&r, 2, NULL, "--yes");
	ctr_free(&r);
	r = RUN("retry", "drop", "q", "--all-events", "--yes");
	expect(&r, 0, "dropped 1 retry events", NULL);
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.retry_queue"), 0);
	PQfinish(c);
}
END_TEST

START_TEST(test_bad_input)
{
	char *db = strdup(pgt_db_new());
	char *empty = strdup(pgt_db_new_empty());
	char d[1024], bad[1024];
	PGconn *c = pgt_connect(db);
	CtlRun r;
	int64_t t0;

	snprintf(d, sizeof(d), "%s", dsn(db, NULL));
	pgt_exec(c, "select pgq.create_queue('q')");
	/* names */
	r = RUN("create", "a'b");
	expect(&r, 1, NULL, "bad queue name \"a'b\": quotes are not allowed");
	ctr_free(&r);
	r = RUN("create", "a;drop table x");
	expect(&r, 1, NULL, "bad queue name");
	ctr_free(&r);
	r = RUN("create", "caf\xc3\xa9");
	expect(&r, 1, NULL, "bad queue name: non-ASCII characters are not allowed");
	ctr_free(&r);
	r = RUN("register", "q", "x\"y");
	expect(&r, 1, NULL, "bad consumer name");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.queue"), 1);
	/* unknown queue / consumer */
	r = RUN("insert", "nosuch", "t", "d");
	expect(&r, 1, NULL, "insert into queue \"nosuch\": no such queue \"nosuch\"");
	ctr_free(&r);
	r = RUN("unregister", "q", "ghost");
	expect(&r, 1, NULL, "no such consumer");
	ctr_free(&r);
	/* a bad connection string never shows its password */
	r = ctr_run(NULL, "-d", "host=/tmp password=s3cr3t-pw bogus_key=1", "queues",
		    (const char *)NULL);
	ck_assert_int_ne(r.rc, 0);
	ck_assert_ptr_null(strstr(r.out, "s3cr3t-pw"));
	ck_assert_ptr_null(strstr(r.err, "s3cr3t-pw"));
	ck_assert_ptr_nonnull(strstr(r.err, "bad connection string"));
	ctr_free(&r);
	r = ctr_run(NULL, "-d", "postgresql://u:s3cr3t-pw@127.0.0.1:1/x?bogus=1", "queues",
		    (const char *)NULL);
	ck_assert_int_ne(r.rc, 0);
	ck_assert_ptr_null(strstr(r.err, "s3cr3t-pw"));
	ctr_free(&r);
	/* a server that never answers: bounded by the connect timeout; no password shown */
	{
		int ls = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET,
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t sl = sizeof(sa);

		ck_assert_int_eq(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
		ck_assert_int_eq(listen(ls, 8), 0);
		ck_assert_int_eq(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
		snprintf(
			bad, sizeof(bad),
			"host=127.0.0.1 port=%d user=x password=s3cr3t-pw dbname=x sslmode=disable",
			ntohs(sa.sin_port));
		t0 = pgt_now_ms();
		r = ctr_run(NULL, "--connect-timeout", "1", "-d", bad, "queues",
			    (const char *)NULL);
		expect(&r, 1, NULL, "x: connect");
		ck_assert_int_ge(pgt_now_ms() - t0, 900);
		ck_assert_int_lt(pgt_now_ms() - t0, 8000);
		ck_assert_ptr_null(strstr(r.err, "s3cr3t-pw"));
		ctr_free(&r);
		close(ls);
	}
	r = ctr_run(NULL, "-d", "host=127.0.0.1 port=1 dbname=x", "queues", (const char *)NULL);
	expect(&r, 1, NULL, "x: connect");
	ctr_free(&r);
	/* a database without PgQ */
	snprintf(bad, sizeof(bad), "%s", dsn(empty, NULL));
	r = ctr_run(NULL, "-d", bad, "queues", (const char *)NULL);
	expect(&r, 1, NULL, "no PgQ in this database");
	ctr_free(&r);
	r = ctr_run(NULL, "-d", bad, "status", (const char *)NULL);
	expect(&r, 1, NULL, "no PgQ in this database");
	ctr_free(&r);
	/* a missing privilege names the role that has it */
	pgt_exec(c, "do $$ begin if not exists (select from pg_roles where rolname = 'ctl_nobody')"
		    " then create role ctl_nobody login; end if; end $$");
	snprintf(bad, sizeof(bad), "%s", dsn(db, "ctl_nobody"));
	r = ctr_run(NULL, "-d", bad, "create", "newq", (const char *)NULL);
	expect(&r, 1, NULL, "(grant the role pgq_admin to this user)");
	ctr_free(&r);
	r = ctr_run(NULL, "-d", bad, "insert", "q", "t", "d", (const char *)NULL);
	expect(&r, 1, NULL, "(grant the role pgq_writer to this user)");
	ctr_free(&r);
	r = ctr_run(NULL, "-d", bad, "register", "q", "c", (const char *)NULL);
	expect(&r, 1, NULL, "(grant the role pgq_reader to this user)");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.queue"), 1);
	/* usage */
	r = RUN("nosuchcommand");
	expect(&r, 2, NULL, "unknown command \"nosuchcommand\"");
	ctr_free(&r);
	r = RUN("drop");
	expect(&r, 2, NULL, "needs exactly one QUEUE");
	ctr_free(&r);
	r = RUN("queues", "--bogus");
	expect(&r, 2, NULL, "unknown option --bogus");
	ctr_free(&r);
	r = ctr_run(NULL, "--all", "status", (const char *)NULL);
	expect(&r, 2, NULL, "need -c INI");
	ctr_free(&r);
	PQfinish(c);
}
END_TEST

static void tail_stops_on(int sig)
{
	const char *db = pgt_db_new();
	char d[1024];
	PGconn *c = pgt_connect(db);
	const char *argv[] = {"-d", d, "tail", "q", NULL};
	CtlProc *p;
	int64_t end;

	snprintf(d, sizeof(d), "%s", dsn(db, NULL));
	pgt_exec(c, "select pgq.create_queue('q')");
	p = ctr_spawn(argv);
	end = pgt_now_ms() + 20000;
	while (pgt_int(c, "select count(*) from pgq.get_consumer_info('q', null)"
			  " where consumer_name like 'pgqctl_tail_%'") == 0) {
		ck_assert_msg(pgt_now_ms() < end, "tail did not register: %s", ctr_err(p));
		usleep(20000);
	}
	pgt_exec(c, "select pgq.insert_event('q', 'tt', 'hello tail')");
	tick(c, "q");
	ck_assert_msg(ctr_wait_out(p, "\ttt\thello tail\n", 20000), "tail printed: %s / %s",
		      ctr_out(p), ctr_err(p));
	ctr_signal(p, sig);
	ck_assert_int_eq(ctr_wait_exit(p, 20000), 0);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.get_consumer_info('q', null)"), 0);
	ctr_free_proc(p);
	PQfinish(c);
}

START_TEST(test_tail_sigint)
{
	tail_stops_on(SIGINT);
}
END_TEST

START_TEST(test_tail_sigterm)
{
	tail_stops_on(SIGTERM);
}
END_TEST

START_TEST(test_status_all_with_unreachable)
{
	char *db1 = strdup(pgt_db_new()), *db2 = strdup(pgt_db_new());
	char *db3 = strdup(pgt_db_new_empty());
	char ini[4096], path[1024], list[512];
	PGconn *c = pgt_connect(db1);
	CtlRun r;
	FILE *f;

	pgt_exec(c, "select pgq.create_queue('q1')");
	snprintf(path, sizeof(path), "%s/pgqctl-all.ini", pgt_tmp_dir());
	snprintf(list, sizeof(list), "%s, %s, %s", db1, db2, db3);
	snprintf(ini, sizeof(ini),
		 "[pgqd]\nbase_connstr = host=%s port=%d user=postgres\ndatabase_list = %s\n"
		 "[cluster gone]\nbase_connstr = host=127.0.0.1 port=1 user=postgres\n"
		 "database_list = lost\n",
		 pgt_socket_dir(), pgt_port(), list);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(ini, f);
	fclose(f);
	r = ctr_run(NULL, "-c", path, "--all", "status", (const char *)NULL);
	expect(&r, 3, "gone/lost: unreachable: ", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "no PgQ"));
	ck_assert_ptr_nonnull(strstr(r.out, "q1"));
	ctr_free(&r);
	r = ctr_run(NULL, "-c", path, "--all", "--max-conns", "1", "status", "--json",
		    (const char *)NULL);
	expect(&r, 3, NULL, NULL);
	json_eq(c, r.out, "{databases,0,database}", db1);
	json_eq(c, r.out, "{databases,0,queues,0,queue}", "q1");
	json_eq(c, r.out, "{databases,1,reachable}", "true");
	json_eq(c, r.out, "{databases,2,pgq}", NULL);
	json_eq(c, r.out, "{databases,3,database}", "gone/lost");
	json_eq(c, r.out, "{databases,3,cluster}", "gone");
	json_eq(c, r.out, "{databases,3,reachable}", "false");
	ctr_free(&r);
	/* one database of the ini */
	r = ctr_run(NULL, "-c", path, "--db", db1, "queues", (const char *)NULL);
	expect(&r, 0, "q1", NULL);
	ctr_free(&r);
	r = ctr_run(NULL, "-c", path, "--cluster", "nosuch", "status", (const char *)NULL);
	expect(&r, 1, NULL, "no cluster \"nosuch\"");
	ctr_free(&r);
	PQfinish(c);
}
END_TEST

/* Debian's PgQ 3.5 C extension: pgqctl works on existing installations. */
START_TEST(test_debian_pgq)
{
	const char *db = pgt_db_new_empty();
	char d[1024];
	PGconn *c = pgt_connect(db);
	PGresult *res = PQexec(c, "create extension pgq");
	CtlRun r;
	char *bid;

	if (pgt_missing(PQresultStatus(res) != PGRES_COMMAND_OK,
			"Debian's pgq extension (postgresql-15-pgq3)")) {
		PQclear(res);
		PQfinish(c);
		return;
	}
	PQclear(res);
	snprintf(d, sizeof(d), "%s", dsn(db, NULL));
	r = RUN("version");
	expect(&r, 0, "pgq       3.5 (extension pgq)", NULL);
	ctr_free(&r);
	r = RUN("install");
	expect(&r, 1, NULL, "already installed");
	ctr_free(&r);
	r = RUN("create", "dq", "ticker_max_count=9");
	expect(&r, 0, "created queue dq", NULL);
	ctr_free(&r);
	r = RUN("create", "dq2", "low_latency=on");
	expect(&r, 1, NULL, "create queue \"dq2\"");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.queue"), 1);
	r = RUN("config", "dq");
	expect(&r, 0, "ticker_max_count", NULL);
	ctr_free(&r);
	r = RUN("register", "dq", "dc");
	expect(&r, 0, NULL, NULL);
	ctr_free(&r);
	r = RUN("insert", "dq", "t", "debian event");
	expect(&r, 0, NULL, NULL);
	ctr_free(&r);
	r = ctr_run("a\tb\nc\td\n", "-d", d, "insert", "dq", "--stdin", (const char *)NULL);
	expect(&r, 0, NULL, "inserted 2 events");
	ctr_free(&r);
	tick(c, "dq");
	r = RUN("events", "dq", "--consumer", "dc");
	expect(&r, 0, "\tt\tdebian event\n", NULL);
	ctr_free(&r);
	r = RUN("queues", "--json");
	json_eq(c, r.out, "{0,ticker_max_count}", "9");
	ctr_free(&r);
	r = RUN("consumers", "--json");
	json_eq(c, r.out, "{0,consumer}", "dc");
	ctr_free(&r);
	r = RUN("status", "--json");
	expect(&r, 0, NULL, NULL);
	json_eq(c, r.out, "{databases,0,pgq_form}", "extension");
	json_eq(c, r.out, "{databases,0,pgqd_ev}", NULL);
	json_eq(c, r.out, "{databases,0,queues,0,queue}", "dq");
	ctr_free(&r);
	bid = pgt_value(c, "select pgq.next_batch('dq', 'dc')");
	r = RUN("events", "dq", "--batch", bid);
	expect(&r, 0, "debian event", NULL);
	ctr_free(&r);
	free(bid);
	r = RUN("unregister", "dq", "dc");
	expect(&r, 0, NULL, NULL);
	ctr_free(&r);
	r = RUN("drop", "dq");
	expect(&r, 0, NULL, NULL);
	ctr_free(&r);
	r = RUN("uninstall", "--yes-drop-all-queues");
	expect(&r, 0, "(extension)", NULL);
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_extension where extname = 'pgq'"), 0);
	PQfinish(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pgqctl");
	TCase *tc = pgt_tcase("commands", 120);
	PgtOptions o = {.need_server = true};

	tcase_add_test(tc, test_install_plain_version_and_again);
	tcase_add_test(tc, test_install_extension_as_non_superuser);
	tcase_add_test(tc, test_queues_create_config_drop);
	tcase_add_test(tc, test_consumers_register_unregister_coop);
	tcase_add_test(tc, test_status_golden_json_and_problems);
	tcase_add_test(tc, test_events_insert_retry);
	tcase_add_test(tc, test_bad_input);
	tcase_add_test(tc, test_tail_sigint);
	tcase_add_test(tc, test_tail_sigterm);
	tcase_add_test(tc, test_status_all_with_unreachable);
	tcase_add_test(tc, test_debian_pgq);
	suite_add_tcase(s, tc);
	return pgt_main(s, &o);
}
