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

#define RUN(...) ctr_run(NULL, "-d", d, __VA_ARGS__, (const char *)NULL)

/* Run the bash completion for `words` (the last one being completed) and return
   the candidates, one a line. pgqctl is found on PATH in the build directory. */
static char *complete(const char *words)
{
	char script[4096], *out;
	const char *b = getenv("PGQD_TEST_BUILDDIR");
	const char *src = getenv("PGQD_TEST_SRCDIR");
	FILE *p;
	size_t len = 0;

	snprintf(script, sizeof(script),
		 "PATH='%s/src/pgqctl':$PATH bash -c '. \"%s/src/pgqctl/pgqctl.bash-completion\";"
		 " COMP_WORDS=(%s); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _pgqctl;"
		 " printf \"%%s\\n\" \"${COMPREPLY[@]}\"'",
		 b, src, words);
	p = popen(script, "r");
	ck_assert_ptr_nonnull(p);
	out = calloc(1, 65536);
	len = fread(out, 1, 65535, p);
	out[len] = '\0';
	pclose(p);
	return out;
}

START_TEST(test_install_plain_version_and_again)
{
	const char *db = pgt_db_new_empty();
	char d[1024];
	PGconn *c = pgt_connect(db);
	CtlRun r;

	snprintf(d, sizeof(d), "%s", ctr_dsn(db, NULL));
	r = RUN("version");
	ctr_expect(&r, 0, "pgq       not installed", NULL);
	ctr_free(&r);
	r = RUN("install");
	ctr_expect(&r, 0, "installed pgq 3.5, pgqd-ev ", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "(plain), pgq_coop"));
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_namespace where nspname in"
				    " ('pgq', 'pgq_coop', 'pgq_ext')"),
			 3);
	r = RUN("version", "--json");
	ctr_expect(&r, 0, NULL, NULL);
	ctr_json_eq(c, r.out, "{pgq}", "3.5");
	ctr_json_eq(c, r.out, "{pgq_form}", "plain");
	ctr_json_eq(c, r.out, "{pgq_extension}", NULL);
	ctr_json_eq(c, r.out, "{pgq_coop_form}", "plain");
	ctr_json_eq(c, r.out, "{pgq_ext_form}", "plain");
	ctr_free(&r);
	/* a second install changes nothing and says why */
	r = RUN("install");
	ctr_expect(&r, 1, NULL, "PgQ 3.5 is already installed (plain); use pgqctl upgrade");
	ctr_free(&r);
	r = RUN("upgrade");
	ctr_expect(&r, 0, "upgraded to pgq 3.5", NULL);
	ctr_free(&r);
	/* uninstall needs its confirmation */
	r = RUN("uninstall");
	ctr_expect(&r, 2, NULL, "--yes-drop-all-queues");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_namespace where nspname = 'pgq'"), 1);
	r = RUN("create", "qq");
	ctr_free(&r);
	r = RUN("uninstall", "--yes-drop-all-queues");
	ctr_expect(&r, 0, "dropped 1 queues", NULL);
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
	snprintf(d, sizeof(d), "%s", ctr_dsn(db, "ctl_owner"));
	r = RUN("install", "--extension");
	ctr_expect(&r, 0, "(extension pgq_ev)", NULL);
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_extension where extname in"
				    " ('pgq_ev', 'pgq_coop_ev', 'pgq_ext_ev')"),
			 3);
	r = RUN("version");
	ctr_expect(&r, 0, "pgq       3.5 (extension pgq_ev)", NULL);
	ctr_free(&r);
	r = RUN("upgrade");
	ctr_expect(&r, 0, "upgraded to", NULL);
	ctr_free(&r);
	r = RUN("uninstall", "--yes-drop-all-queues");
	ctr_expect(&r, 0, "uninstalled pgq 3.5 (extension)", NULL);
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

	snprintf(d, sizeof(d), "%s", ctr_dsn(db, NULL));
	r = RUN("create", "orders", "ticker_max_lag=2", "low_latency=on",
		"queue_ticker_max_count=7");
	ctr_expect(&r, 0, "created queue orders", NULL);
	ctr_free(&r);
	r = RUN("create", "billing");
	ctr_free(&r);
	/* a bad value in the middle: nothing is created */
	r = RUN("create", "third", "ticker_max_count=5", "ticker_max_lag=xyz");
	ctr_expect(&r, 1, NULL, "create queue \"third\"");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.queue where queue_name = 'third'"),
			 0);
	r = RUN("create", "third", "nosuch=1");
	ctr_expect(&r, 1, NULL, "unknown queue setting \"nosuch\"");
	ctr_free(&r);
	r = RUN("create", "orders");
	ctr_expect(&r, 1, NULL, "create queue \"orders\": the queue already exists");
	ctr_free(&r);

	r = RUN("queues");
	ctr_expect(&r, 0, NULL, NULL);
	g = ctr_golden(r.out);
	ck_assert_str_eq(g, "queue tables rotation ticker (count/lag/idle) ticker lag ev/s new "
			    "consumers\n"
			    "billing 3 <T> 500/<T>/<T> <T> - 0 0\n"
			    "orders 3 <T> 7/<T>/<T> <T> - 0 0\n");
	free(g);
	ctr_free(&r);
	r = RUN("queues", "--json");
	ctr_expect(&r, 0, NULL, NULL);
	ctr_json_eq(c, r.out, "{1,queue}", "orders");
	ctr_json_eq(c, r.out, "{1,ticker_max_count}", "7");
	ctr_json_eq(c, r.out, "{1,ticker_max_lag}", "2");
	ctr_json_eq(c, r.out, "{1,ticker_idle_period}", "60");
	ctr_json_eq(c, r.out, "{1,rotation_period}", "7200");
	ctr_json_eq(c, r.out, "{1,ntables}", "3");
	ctr_json_eq(c, r.out, "{1,ticker_paused}", "false");
	ctr_json_eq(c, r.out, "{1,consumers}", "0");
	ctr_json_eq(c, r.out, "{0,queue}", "billing");
	ctr_free(&r);

	r = RUN("config", "orders");
	ctr_expect(&r, 0, NULL, NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "low_latency "));
	ck_assert_ptr_nonnull(strstr(r.out, "ticker_max_count "));
	ctr_free(&r);
	r = RUN("config", "orders", "--json");
	ctr_json_eq(c, r.out, "{settings,low_latency}", "true");
	ctr_json_eq(c, r.out, "{settings,ticker_max_lag}", "00:00:02");
	ctr_free(&r);
	r = RUN("config", "orders", "ticker_paused=on", "rotation_period=1h", "low_latency=off");
	ctr_expect(&r, 0, "3 settings changed", NULL);
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.queue where queue_name = 'orders' and"
				    " queue_ticker_paused and not queue_low_latency and"
				    " queue_rotation_period = '1h'"),
			 1);
	r = RUN("config", "nosuch");
	ctr_expect(&r, 1, NULL, "config \"nosuch\": no such queue");
	ctr_free(&r);
	r = RUN("config", "nosuch", "ticker_paused=on");
	ctr_expect(&r, 1, NULL, "no such queue");
	ctr_free(&r);

	pgt_exec(c, "select pgq.register_consumer('billing', 'c1')");
	r = RUN("drop", "billing");
	ctr_expect(&r, 1, NULL, "drop queue \"billing\"");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.queue where queue_name = 'billing'"),
			 1);
	r = RUN("drop", "billing", "--force");
	ctr_expect(&r, 0, "dropped queue billing", NULL);
	ctr_free(&r);
	r = RUN("drop", "billing");
	ctr_expect(&r, 1, NULL, "drop queue \"billing\": no such queue");
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

	snprintf(d, sizeof(d), "%s", ctr_dsn(db, NULL));
	pgt_exec(c, "select pgq.create_queue('q')");
	ctr_tick(c, "q");
	r = RUN("register", "q", "c1");
	ctr_expect(&r, 0, "registered c1 on q", NULL);
	ctr_free(&r);
	r = RUN("register", "q", "c1");
	ctr_expect(&r, 1, NULL, "register \"c1\" on queue \"q\": already registered");
	ctr_free(&r);
	r = RUN("register", "nosuch", "c1");
	ctr_expect(&r, 1, NULL, "no such queue \"nosuch\"");
	ctr_free(&r);
	r = RUN("register", "q", "c2", "--from-start-of-retained");
	ctr_expect(&r, 0, "at tick 1", NULL);
	ctr_free(&r);
	r = RUN("register", "q", "c3", "--at", "2");
	ctr_expect(&r, 0, "at tick 2", NULL);
	ctr_free(&r);
	r = RUN("register", "q", "c4", "--at", "x");
	ctr_expect(&r, 2, NULL, "--at: \"x\" is not a number");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select last_tick from pgq.get_consumer_info('q', 'c2')"), 1);
	/* a cooperative group */
	pgt_exec(c, "select pgq_coop.register_subconsumer('q', 'grp', 'w1')");
	r = RUN("consumers", "q");
	ctr_expect(&r, 0, "sub of grp", NULL);
	ctr_free(&r);
	r = RUN("consumers", "--json");
	ctr_json_eq(c, r.out, "{0,consumer}", "c1");
	ctr_json_eq(c, r.out, "{0,coop_main}", NULL);
	ctr_json_eq(c, r.out, "{0,last_tick}", "2");
	ctr_json_eq(c, r.out, "{4,consumer}", "grp.w1");
	ctr_json_eq(c, r.out, "{4,coop_main}", "grp");
	ctr_free(&r);
	r = RUN("unregister", "q", "c1");
	ctr_expect(&r, 0, "unregistered c1 from q", NULL);
	ctr_free(&r);
	r = RUN("unregister", "q", "c1");
	ctr_expect(&r, 1, NULL,
		   "unregister \"c1\" from queue \"q\": no such consumer on this queue");
	ctr_free(&r);
	r = RUN("consumers", "nosuch");
	ctr_expect(&r, 1, NULL, "no such queue \"nosuch\"");
	ctr_free(&r);
	r = RUN("complete", "consumers", "q");
	ctr_expect(&r, 0, "c2\nc3\ngrp\ngrp.w1\n", NULL);
	ctr_free(&r);
	r = RUN("complete", "queues");
	ctr_expect(&r, 0, "q\n", NULL);
	ctr_free(&r);
	{
		char words[2048], *got;

		snprintf(words, sizeof(words), "pgqctl -d \"%s\" unregister q \"\"", d);
		got = complete(words);
		ck_assert_str_eq(got, "c2\nc3\ngrp\ngrp.w1\n");
		free(got);
		snprintf(words, sizeof(words), "pgqctl -d \"%s\" drop \"\"", d);
		got = complete(words);
		ck_assert_str_eq(got, "q\n");
		free(got);
		got = complete("pgqctl re");
		ck_assert_str_eq(got, "register\nretry\n");
		free(got);
		got = complete("pgqctl retry \"\"");
		ck_assert_str_eq(got, "list\nnow\ndrop\n");
		free(got);
		got = complete("pgqctl node create-");
		ck_assert_str_eq(got, "create-root\ncreate-branch\ncreate-leaf\n");
		free(got);
		got = complete("pgqctl node create-leaf x --pro");
		ck_assert_str_eq(got, "--provider\n");
		free(got);
		snprintf(words, sizeof(words), "pgqctl -d \"%s\" node info \"\"", d);
		got = complete(words);
		ck_assert_str_eq(got, "q\n");
		free(got);
		/* a name with a space and a quote comes back as one shell word */
		pgt_exec(c, "select pgq.create_queue('two \"words\"')");
		snprintf(words, sizeof(words), "pgqctl -d \"%s\" drop tw", d);
		got = complete(words);
		ck_assert_str_eq(got, "two\\ \\\"words\\\"\n");
		free(got);
	}
	PQfinish(c);
}
END_TEST

START_TEST(test_status_golden_json_and_problems)
{
	const char *db = pgt_db_new();
	char d[1024], want[2048], *ver, *g;
	PGconn *c = pgt_connect(db);
	CtlRun r;

	snprintf(d, sizeof(d), "%s", ctr_dsn(db, NULL));
	ver = pgt_value(c, "select current_setting('server_version')");
	pgt_exec(c, "select pgq.create_queue('a')");
	pgt_exec(c, "select pgq.create_queue('b')");
	pgt_exec(c, "select pgq.register_consumer('a', 'ca')");
	r = RUN("status");
	ctr_expect(&r, 0, NULL, NULL);
	g = ctr_golden(r.out);
	snprintf(want, sizeof(want),
		 "%s: PostgreSQL %s, pgq 3.5 (plain), pgqd-ev 0.1.0\n\n"
		 "Queues\n"
		 "queue tables rotation ticker (count/lag/idle) ticker lag ev/s new retry problem\n"
		 "a 3 <T> 500/<T>/<T> <T> - 0 0\n"
		 "b 3 <T> 500/<T>/<T> <T> - 0 0\n\n"
		 "Consumers\n"
		 "queue consumer lag last seen batch pending coop problem\n"
		 "a ca <T> <T> - 0\n\n"
		 "No problems.\n",
		 db, ver);
	ck_assert_str_eq(g, want);
	free(g);
	ctr_free(&r);

	/* make every kind of problem */
	pgt_exec(c, "select pgq.insert_event('a', 't', 'x1')");
	ctr_tick(c, "a");
	pgt_exec(c, "select pgq.next_batch('a', 'ca')");
	pgt_exec(c, "select pgq.event_retry(pgq.next_batch('a', 'ca'), ev_id, 0)"
		    " from pgq.get_batch_events(pgq.next_batch('a', 'ca'))");
	pgt_exec(c, "update pgq.retry_queue set ev_retry_after = now() - interval '1 hour'");
	pgt_exec(c, "update pgq.subscription set sub_active = now() - interval '20 minutes'");
	pgt_exec(c, "update pgq.tick set tick_time = tick_time - interval '10 minutes'"
		    " where tick_queue = (select queue_id from pgq.queue where queue_name = 'b')");
	r = RUN("status");
	ctr_expect(&r, 3, "Problems\n", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "queue b: no tick for 10m"));
	ck_assert_ptr_nonnull(strstr(r.out, "is the ticker running?"));
	ck_assert_ptr_nonnull(strstr(r.out, "consumer ca on a: batch "));
	ck_assert_ptr_nonnull(strstr(r.out, "open for 20m"));
	ck_assert_ptr_nonnull(strstr(r.out, "queue a: 1 retry events, overdue by 1h00m"));
	ctr_free(&r);
	/* thresholds are options */
	r = RUN("status", "--stuck-minutes", "30", "--retry-overdue-minutes", "120", "--tick-grace",
		"3600");
	ctr_expect(&r, 0, "No problems.", NULL);
	ctr_free(&r);
	r = RUN("status", "--json");
	ctr_expect(&r, 3, NULL, NULL);
	ctr_json_eq(c, r.out, "{ok}", "false");
	ctr_json_eq(c, r.out, "{databases,0,database}", db);
	ctr_json_eq(c, r.out, "{databases,0,reachable}", "true");
	ctr_json_eq(c, r.out, "{databases,0,pgq}", "3.5");
	ctr_json_eq(c, r.out, "{databases,0,pgq_form}", "plain");
	ctr_json_eq(c, r.out, "{databases,0,server}", ver);
	ctr_json_eq(c, r.out, "{databases,0,queues,0,queue}", "a");
	ctr_json_eq(c, r.out, "{databases,0,queues,0,retry_events}", "1");
	ctr_json_eq(c, r.out, "{databases,0,queues,0,ticker_max_count}", "500");
	ctr_json_eq(c, r.out, "{databases,0,queues,0,problem}", NULL);
	ctr_json_eq(c, r.out, "{databases,0,queues,1,queue}", "b");
	ctr_json_eq(c, r.out, "{databases,0,consumers,0,consumer}", "ca");
	ctr_json_eq(c, r.out, "{databases,0,consumers,0,coop_main}", NULL);
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

	snprintf(d, sizeof(d), "%s", ctr_dsn(db, NULL));
	pgt_exec(c, "select pgq.create_queue('q')");
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	r = RUN("insert", "q", "ty", "payload one", "e1");
	ctr_expect(&r, 0, NULL, NULL);
	ctr_free(&r);
	r = ctr_run("a\tb\n\nplain line\nx\ty\tz1\tz2\tz3\tz4\n", "-d", d, "insert", "q", "--stdin",
		    (const char *)NULL);
	ctr_expect(&r, 0, NULL, "inserted 3 events into q");
	ctr_free(&r);
	r = ctr_run("{\"type\":\"j\",\"data\":\"d\\\"q\",\"extra2\":\"e2\"}\n{\"data\":\"only\"}\n",
		    "-d", d, "insert", "q", "--stdin", "--json", (const char *)NULL);
	ctr_expect(&r, 0, NULL, "inserted 2 events");
	ctr_free(&r);
	/* a bad line changes nothing */
	r = ctr_run("{\"data\":\"fine\"}\nnot json\n", "-d", d, "insert", "q", "--stdin", "--json",
		    (const char *)NULL);
	ctr_expect(&r, 1, NULL, "stdin line 2: not a JSON object");
	ctr_free(&r);
	r = ctr_run("{\"data\":\"fine\"}\n{\"data\": nope}\n", "-d", d, "insert", "q", "--stdin",
		    "--json", (const char *)NULL);
	ctr_expect(&r, 1, NULL, "stdin lines 1..2");
	ctr_free(&r);
	ctr_tick(c, "q");
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.event_1"), 6);

	r = RUN("events", "q", "--consumer", "c");
	ctr_expect(&r, 0, "\tty\tpayload one\textra1=e1\n", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "\ttext\tplain line\n"));
	ck_assert_ptr_nonnull(
		strstr(r.out, "\tx\ty\textra1=z1\textra2=z2\textra3=z3\textra4=z4\n"));
	ctr_free(&r);
	/* looking consumed nothing */
	ck_assert_int_eq(pgt_int(c, "select last_tick from pgq.get_consumer_info('q', 'c')"), 1);
	ck_assert_int_eq(
		pgt_int(c, "select count(*) from pgq.subscription where sub_batch is not null"), 0);
	r = RUN("events", "q", "--consumer", "c", "--limit", "2", "--json");
	ctr_expect(&r, 0, NULL, NULL);
	{
		char *nl = strchr(r.out, '\n');
		ck_assert_ptr_nonnull(nl);
		*nl = '\0';
		ctr_json_eq(c, r.out, "{ev_type}", "ty");
		ctr_json_eq(c, r.out, "{ev_extra1}", "e1");
		ctr_json_eq(c, r.out, "{ev_extra2}", NULL);
		ck_assert_ptr_nonnull(strchr(nl + 1, '\n'));
		ck_assert_ptr_null(strchr(strchr(nl + 1, '\n') + 1, '\n'));
	}
	ctr_free(&r);
	v = pgt_value(c, "select pgq.next_batch('q', 'c')");
	snprintf(bid, sizeof(bid), "%s", v);
	free(v);
	r = RUN("events", "q", "--batch", bid, "--json", "--limit", "100");
	ctr_expect(&r, 0, "\"ev_data\":\"d\\\"q\"", NULL);
	ctr_free(&r);
	r = RUN("events", "q", "--consumer", "nobody");
	ctr_expect(&r, 1, NULL, "no such consumer on this queue");
	ctr_free(&r);
	r = RUN("events", "q");
	ctr_expect(&r, 2, NULL, "needs one of --consumer C or --batch ID");
	ctr_free(&r);

	/* retry queue */
	pgt_exec(
		c,
		"select pgq.event_retry(pgq.next_batch('q', 'c'), ev_id, 3600)"
		" from pgq.get_batch_events(pgq.next_batch('q', 'c')) where ev_type in ('ty', 'j')");
	r = RUN("retry", "list", "--json");
	ctr_expect(&r, 0, NULL, NULL);
	ctr_json_eq(c, r.out, "{0,queue}", "q");
	ctr_json_eq(c, r.out, "{0,consumer}", "c");
	ctr_free(&r);
	r = RUN("retry", "now", "q", "999999");
	ctr_expect(&r, 1, NULL, "not in the retry queue: 999999");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.retry_queue"), 2);
	v = pgt_value(c, "select min(ev_id) from pgq.retry_queue");
	r = RUN("retry", "now", "q", v);
	ctr_expect(&r, 0, "made due 1 retry events of q", NULL);
	ctr_free(&r);
	free(v);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.retry_queue"), 1);
	r = RUN("retry", "drop", "q", "--all-events");
	ctr_expect(&r, 2, NULL, "--yes");
	ctr_free(&r);
	r = RUN("retry", "drop", "q", "--all-events", "--yes");
	ctr_expect(&r, 0, "dropped 1 retry events", NULL);
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.retry_queue"), 0);
	PQfinish(c);
}
END_TEST

/* insert --stdin: COPY in chunks, all-or-nothing across chunks, the bad line named,
   text kept byte for byte; the pgq_writer path (no insert right on the event
   tables) through pgq.insert_event. */
START_TEST(test_insert_stdin_bulk)
{
	const char *db = pgt_db_new();
	char d[1024], in[4096];
	PGconn *c = pgt_connect(db);
	CtlRun r;
	size_t len = 0;

	snprintf(d, sizeof(d), "%s", ctr_dsn(db, NULL));
	pgt_exec(c, "select pgq.create_queue('b')");
	/* 10 lines in chunks of 3: backslashes, a carriage return inside, empty lines */
	for (int i = 1; i <= 10; i++)
		len += (size_t)snprintf(in + len, sizeof(in) - len,
					i == 4 ? "\n" : "t%d\tback\\slash\\t %d\r\tx\n", i, i);
	r = ctr_run(in, "-d", d, "insert", "b", "--stdin", "--chunk-lines", "3",
		    (const char *)NULL);
	ctr_expect(&r, 0, NULL, "inserted 9 events into b\n");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.event_1 where ev_data ="
				    " E'back\\\\slash\\\\t ' || substr(ev_type, 2) || E'\\r'"
				    " and ev_extra1 = 'x'"),
			 9);
	/* ids in line order, one transaction */
	ck_assert_int_eq(pgt_int(c, "select count(distinct ev_txid) from pgq.event_1"), 1);
	ck_assert_int_eq(pgt_int(c, "select count(*) from (select ev_type, row_number() over"
				    " (order by ev_id) k from pgq.event_1) x"
				    " where substr(ev_type, 2)::int <> k + (k >= 4)::int"),
			 0);
	/* a bad line in the third chunk: the first two chunks are not kept either */
	r = ctr_run("a\nb\nc\nd\ne\nf\ng\nbad \xff byte\ni\n", "-d", d, "insert", "b", "--stdin",
		    "--chunk-lines", "3", (const char *)NULL);
	ctr_expect(&r, 1, NULL, "insert into queue \"b\" (stdin line 8): invalid byte sequence");
	ctr_free(&r);
	r = ctr_run("{\"data\":1}\n{\"data\":2}\n{\"data\":3}\n{\"data\":4}\n{\"data\": x}\n", "-d",
		    d, "insert", "b", "--stdin", "--json", "--chunk-lines", "2",
		    (const char *)NULL);
	ctr_expect(&r, 1, NULL, "stdin line 5: invalid input syntax for type json");
	ctr_free(&r);
	r = ctr_run("a\n1\t2\t3\t4\t5\t6\t7\n", "-d", d, "insert", "b", "--stdin",
		    (const char *)NULL);
	ctr_expect(&r, 1, NULL, "stdin line 2: 7 tab-separated fields, at most 6");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.event_1"), 9);
	r = ctr_run("x\n", "-d", d, "insert", "b", "--stdin", "--chunk-lines", "0",
		    (const char *)NULL);
	ctr_expect(&r, 2, NULL, "--chunk-lines");
	ctr_free(&r);
	/* a pgq_writer may not insert into the event tables: pgq.insert_event per row */
	pgt_exec(c, "do $$ begin if not exists (select from pg_roles where rolname = 'ctl_writer')"
		    " then create role ctl_writer login in role pgq_writer; end if; end $$");
	snprintf(d, sizeof(d), "%s", ctr_dsn(db, "ctl_writer"));
	r = ctr_run("w1\tone\n{not json for text mode}\n", "-d", d, "insert", "b", "--stdin",
		    "--chunk-lines", "1", (const char *)NULL);
	ctr_expect(&r, 0, NULL, "inserted 2 events into b (through pgq.insert_event)");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c,
				 "select count(*) from pgq.event_1 where ev_type in ('w1', 'text')"
				 " and ev_data in ('one', '{not json for text mode}')"),
			 2);
	PQfinish(c);
}
END_TEST

/* Plain status remembers retry counts across runs in --state FILE and names a
   retry queue that grew in each of the last three checks. */
START_TEST(test_status_retry_growth_state)
{
	const char *db = pgt_db_new();
	char d[1024], state[1024];
	PGconn *c = pgt_connect(db);
	CtlRun r;
	FILE *f;

	snprintf(d, sizeof(d), "%s", ctr_dsn(db, NULL));
	snprintf(state, sizeof(state), "%s/status-%s.state", pgt_tmp_dir(), db);
	pgt_exec(c, "select pgq.create_queue('it''s growing')");
	pgt_exec(c, "select pgq.register_consumer('it''s growing', 'c')");
	for (int round = 0; round < 5; round++) {
		/* one more event failed and put in the retry queue for an hour */
		pgt_exec(c, "select pgq.insert_event('it''s growing', 't', 'd')");
		pgt_exec(c, "select pgq.force_tick('it''s growing'), pgq.ticker('it''s growing')");
		pgt_exec(c, "select pgq.event_retry(b, ev_id, 3600), pgq.finish_batch(b)"
			    " from (select pgq.next_batch('it''s growing', 'c') b) x,"
			    " pgq.get_batch_events(b)");
		ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.retry_queue"), round + 1);
		r = RUN("status", "--state", state);
		if (round < 3) {
			ctr_expect(&r, 0, "No problems.", NULL);
		} else {
			ctr_expect(&r, 3,
				   "queue \"it's growing\": the retry queue grew in each of the"
				   " last 3 checks (",
				   NULL);
		}
		ctr_free(&r);
		/* a run without the file knows nothing of the others */
		r = RUN("status");
		ctr_expect(&r, 0, "No problems.", NULL);
		ctr_free(&r);
	}
	/* a file that is not a state file is refused and left alone */
	f = fopen(state, "w");
	ck_assert_ptr_nonnull(f);
	fputs("precious\n", f);
	fclose(f);
	r = RUN("status", "--state", state);
	ctr_expect(&r, 1, NULL, "not a pgqctl status state file");
	ctr_free(&r);
	f = fopen(state, "r");
	{
		char buf[64] = "";
		ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), f));
		ck_assert_str_eq(buf, "precious\n");
	}
	fclose(f);
	PQfinish(c);
}
END_TEST

/* Debian's PgQ 3.5 C extension: pgqctl works on existing installations. */

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
	tcase_add_test(tc, test_insert_stdin_bulk);
	tcase_add_test(tc, test_status_retry_growth_state);
	suite_add_tcase(s, tc);
	return pgt_main(s, &o);
}
