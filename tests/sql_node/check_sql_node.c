/*
 * pgq_node on its own: bad input (a clear answer, nothing changed), the
 * behaviour the differential test cannot show (grants as real roles, the
 * extension as a non-superuser, re-running the plain script, upgrade_schema,
 * maint_watermark, demote_root waiting for producers), PgQ's quirks we keep,
 * and pgq.force_tick on externally ticked queues (issue 21).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nodetest.h"

/* Everything a pgq_node call may change, as one text. */
static char *state(PGconn *c)
{
	return sqlt_rows(
		c,
		"select (select string_agg(x::text, ';' order by x::text) from pgq_node.node_location x),"
		" (select string_agg(x::text, ';' order by x::text) from pgq_node.node_info x),"
		" (select string_agg(x::text, ';' order by x::text) from pgq_node.local_state x),"
		" (select string_agg(x::text, ';' order by x::text) from pgq_node.subscriber_info x),"
		" (select string_agg(x, ';' order by x) from (select s.sub_queue || '/' || c.co_name || '@'"
		"  || coalesce(s.sub_last_tick, 0) x from pgq.subscription s"
		"  join pgq.consumer c on c.co_id = s.sub_consumer) s),"
		" (select string_agg(x, ';' order by x) from (select q.queue_name || ':'"
		"  || q.queue_external_ticker || q.queue_disable_insert x from pgq.queue q) q),"
		" (select string_agg(x, ';' order by x) from (select t.tick_queue || '/' || t.tick_id x"
		"  from pgq.tick t) t),"
		" (select count(*) from pgq.event_template)");
}

/* A root node n1 of queue q with subscriber n2 (worker w2), ticks 1..3. */
static PGconn *root_db(void)
{
	PGconn *c = pgt_connect(pgt_db_new());
	pgt_exec(c, "set client_min_messages = warning");
	pgt_exec(c,
		 "select pgq_node.register_location('q', 'n1', 'dbname=n1', false);"
		 "select pgq_node.register_location('q', 'n2', 'dbname=n2', false);"
		 "select pgq_node.register_location('q', 'n3', 'dbname=n3', false);"
		 "select pgq_node.create_node('q', 'root', 'n1', 'w1', null, null, null);"
		 "select pgq_node.register_subscriber('q', 'n2', 'w2', null);"
		 "update pgq.queue set queue_ticker_max_lag = '0', queue_ticker_idle_period = '0'");
	pgt_exec(c, "select pgq.ticker('q')");
	pgt_exec(c, "select pgq.ticker('q')");
	return c;
}

/* `sql` answers `want` (prefix of "code|note...") and changes nothing. */
static void refused(PGconn *c, const char *sql, const char *want)
{
	char *before = state(c);
	char *got = nodet_answer(c, sql);
	char *after = state(c);
	ck_assert_msg(strncmp(got, want, strlen(want)) == 0, "%s: got \"%s\", want \"%s\"", sql,
		      got, want);
	ck_assert_msg(strcmp(before, after) == 0, "%s changed state:\n%s\n->\n%s", sql, before,
		      after);
	free(before);
	free(got);
	free(after);
}

START_TEST(test_bad_input_changes_nothing)
{
	PGconn *c = root_db();
	/* a node that points at itself */
	refused(c, "select * from pgq_node.register_subscriber('q', 'n1', 'w9', null)",
		"401|Node cannot subscribe to itself: n1");
	pgt_exec(c, "select pgq_node.demote_root('q', 1, 'n3')");
	refused(c, "select * from pgq_node.demote_root('q', 3, 'n1')",
		"401|Node cannot be its own provider: n1");
	refused(c, "select * from pgq_node.demote_root('q', 3, 'n7')",
		"404|New node not found: n7");
	pgt_exec(
		c,
		"update pgq.queue set queue_disable_insert = false, queue_external_ticker = false");
	refused(c, "select * from pgq_node.create_node('b', 'branch', 'n1', 'w', 'n1', 1, null)",
		"401|Node cannot be its own provider: n1");
	refused(c, "select * from pgq_node.create_node('b', 'leaf', 'n1', 'w', 'n1', 1, null)",
		"401|Node cannot be its own provider: n1");
	/* a provider that lacks the tick a subscriber needs */
	refused(c, "select * from pgq_node.register_subscriber('q', 'n3', 'w3', 42)",
		"404|Tick 42 not found on node n1 for queue q: cannot continue subscriber n3");
	/* two workers for one node, one worker for two nodes */
	refused(c, "select * from pgq_node.register_subscriber('q', 'n2', 'w2b', null)",
		"401|Subscriber already registered: n2 (worker w2)");
	refused(c, "select * from pgq_node.register_subscriber('q', 'n3', 'w2', null)",
		"401|Worker w2 already serves subscriber n2");
	refused(c, "select * from pgq_node.create_node('q', 'root', 'n1', 'w1b', null, null, null)",
		"401|Node already initialized");
	/* other bad arguments */
	refused(c, "select * from pgq_node.create_node('b', null, 'n1', 'w', null, null, null)",
		"401|bad node type: <NULL>");
	refused(c, "select * from pgq_node.create_node('b', 'root', 'n1', null, null, null, null)",
		"401|worker name not set for root");
	refused(c, "select * from pgq_node.create_node('b', 'root', 'n1', 'w', null, 5, null)",
		"401|unexpected args for root");
	refused(c, "select * from pgq_node.create_node('b', 'root', 'n1', 'w', null, null, null)",
		"404|Location of node not registered: b/n1");
	pgt_exec(c, "select pgq_node.register_location('b', 'n1', 'dbname=n1', false)");
	refused(c, "select * from pgq_node.create_node('b', 'branch', 'n1', 'w', 'n7', 1, null)",
		"404|Location of provider not registered: b/n7");
	pgt_exec(c, "select pgq_node.unregister_location('b', 'n1')");
	refused(c, "select * from pgq_node.create_node('b', 'branch', 'n1', 'w', 'n2', 1, 'q')",
		"401|combined queue is only for a leaf: q");
	refused(c, "select * from pgq_node.register_subscriber('q', 'n8', 'w8', null)",
		"404|Location of subscriber not registered: q/n8");
	refused(c, "select * from pgq_node.register_consumer('q', 'c', 'n1', null)",
		"401|Start tick not given for consumer: q/c");
	refused(c, "select * from pgq_node.register_consumer('q', 'c', 'n8', 1)",
		"404|Unknown provider node: q/n8");
	refused(c, "select * from pgq_node.set_subscriber_watermark('q', 'n2', null)",
		"401|watermark not given for node n2");
	refused(c, "select * from pgq_node.unregister_location('q', 'n1')",
		"403|Cannot drop node's own location");
	refused(c, "select * from pgq_node.drop_node('b', 'n2')", "200|Node dropped: n2");
	/* errors that stay exceptions roll back the same way */
	refused(c, "select * from pgq_node.demote_root('q', 0, 'n2')",
		"ERROR: demote_root: incorrect step number: 0");
	refused(c, "select pgq_node.is_root_node('nosuch')", "ERROR: queue does not exist: nosuch");
	PQfinish(c);
}
END_TEST

START_TEST(test_branch_worker_provider)
{
	PGconn *c = pgt_connect(pgt_db_new());
	pgt_exec(c, "set client_min_messages = warning");
	pgt_exec(c, "select pgq_node.register_location('q', 'n1', 'dbname=n1', false);"
		    "select pgq_node.register_location('q', 'n2', 'dbname=n2', false);"
		    "select pgq_node.create_node('q', 'branch', 'n2', 'w2', 'n1', 1, null)");
	refused(c, "select * from pgq_node.change_consumer_provider('q', 'w2', 'n2')",
		"401|Node cannot be its own provider: n2");
	/* a plain consumer may read from the node it writes into */
	sqlt_eq(c, "select ret_code from pgq_node.register_consumer('q', 'c', 'n2', 1)", "200");
	/* §9.12: the branch queue takes events only in replica role, from the worker */
	sqlt_err(c, "select pgq.insert_event('q', 't', 'd')", "Insert into queue disallowed");
	pgt_exec(c, "set session_replication_role = replica");
	ck_assert_int_eq(pgt_int(c, "select count(pgq.current_event_table('q'))"), 1);
	pgt_exec(c, "reset session_replication_role");
	/* §9.5: the branch's global watermark may move back; a missing tick is skipped */
	pgt_exec(c, "select pgq.ticker('q', 5, now(), 10)");
	sqlt_eq(c, "select ret_note from pgq_node.set_global_watermark('q', 5)",
		"Global watermark set to 5");
	sqlt_eq(c, "select ret_note from pgq_node.set_global_watermark('q', 1)",
		"Global watermark set to 1");
	sqlt_eq(c, "select ret_note from pgq_node.set_global_watermark('q', 3)",
		"Skipping global watermark update to 3");
	sqlt_eq(c, "select global_watermark from pgq_node.get_node_info('q')", "1");
	PQfinish(c);
}
END_TEST

/* Issue 21: force_tick answers the latest tick for every existing queue. */
START_TEST(test_force_tick_external_and_paused)
{
	PGconn *c = pgt_connect(pgt_db_new());
	int64_t seq;
	pgt_exec(c, "select pgq.create_queue('ext'), pgq.create_queue('paused')");
	pgt_exec(c, "update pgq.queue set queue_external_ticker = true where queue_name = 'ext';"
		    "update pgq.queue set queue_ticker_paused = true where queue_name = 'paused'");
	pgt_exec(c, "select pgq.ticker('ext', 7, now(), 3)");
	seq = pgt_int(c, "select pgq.seq_getval(queue_event_seq) from pgq.queue"
			 " where queue_name = 'ext'");
	sqlt_eq(c, "select pgq.force_tick('ext')", "7");
	sqlt_eq(c, "select pgq.force_tick('paused')", "1");
	/* no push for such queues: the event sequence stays */
	ck_assert_int_eq(pgt_int(c, "select pgq.seq_getval(queue_event_seq) from pgq.queue"
				    " where queue_name = 'ext'"),
			 seq);
	sqlt_eq(c, "select pgq.force_tick('nosuch')", NULL);
	/* an ordinary queue still gets its push */
	pgt_exec(c, "select pgq.create_queue('plain')");
	sqlt_eq(c, "select pgq.force_tick('plain')", "1");
	ck_assert_int_gt(pgt_int(c, "select pgq.seq_getval(queue_event_seq) from pgq.queue"
				    " where queue_name = 'plain'"),
			 1000);
	PQfinish(c);
}
END_TEST

/* §9.8, §9.11, §9.6: the root publishes what it is told, and drop_node answers. */
START_TEST(test_kept_quirks)
{
	PGconn *c = root_db();
	/* a branch registering at the root that is also its provider: two events */
	pgt_exec(c, "select pgq_node.register_location('q', 'n4', 'dbname=n4', false);"
		    "select pgq_node.register_location('q', 'n4', 'dbname=n4', false)");
	sqlt_eq(c,
		"select count(*) from pgq.event_template where ev_type = 'pgq.location-info'"
		" and ev_data = 'n4' and ev_extra3 = 'false'",
		"2");
	/* unregistering a location nobody had still tells the cascade */
	sqlt_eq(c, "select ret_code from pgq_node.unregister_location('q', 'n9')", "301");
	sqlt_eq(c,
		"select count(*) from pgq.event_template where ev_type = 'pgq.unregister-location'"
		" and ev_data = 'n9'",
		"1");
	/* tag-dead: an update without a location, published with NULL location */
	sqlt_eq(c, "select ret_code from pgq_node.register_location('q', 'n4', null, true)", "200");
	sqlt_eq(c,
		"select node_location || dead from pgq_node.node_location where node_name = 'n4'",
		"dbname=n4true");
	sqlt_eq(c,
		"select count(*) from pgq.event_template where ev_type = 'pgq.location-info'"
		" and ev_data = 'n4' and ev_extra2 is null and ev_extra3 = 'true'",
		"1");
	/* drop_node: 200 for anything it does not know, 405 for the provider */
	sqlt_eq(c, "select ret_note from pgq_node.drop_node('nosuch', 'x')", "Node dropped: x");
	pgt_exec(c, "select pgq_node.demote_root('q', 1, 'n2'), pgq_node.demote_root('q', 2, 'n2'),"
		    " pgq_node.demote_root('q', 3, 'n2')");
	sqlt_eq(c, "select ret_code || ' ' || ret_note from pgq_node.drop_node('q', 'n2')",
		"405 Cannot drop provider node: n2");
	PQfinish(c);
}
END_TEST

START_TEST(test_maint_watermark)
{
	PGconn *c = root_db();
	sqlt_eq(c,
		"select count(*) from pgq.maint_operations()"
		" where func_name = 'pgq_node.maint_watermark' and func_arg = 'q'",
		"1");
	sqlt_eq(c, "select pgq_node.maint_watermark('q')", "0");
	sqlt_eq(c, "select count(*) from pgq.event_template where ev_type = 'pgq.global-watermark'",
		"0");
	/* the global watermark's tick is old: republished at the local watermark */
	pgt_exec(c, "select pgq_node.set_subscriber_watermark('q', 'n2', 2);"
		    "select pgq.register_consumer_at('q', 'w2', 3);"
		    "update pgq.tick set tick_time = tick_time - interval '10 minutes'");
	sqlt_eq(c, "select pgq_node.maint_watermark('q')", "0");
	sqlt_eq(c,
		"select ev_data || ' ' || ev_extra1 from pgq.event_template"
		" where ev_type = 'pgq.global-watermark'",
		"2 q");
	sqlt_eq(c,
		"select global_watermark || ' ' || worker_last_tick from pgq_node.get_node_info('q')",
		"2 3");
	sqlt_eq(c, "select last_tick_id from pgq_node.local_state where consumer_name = 'w1'", "2");
	PQfinish(c);
}
END_TEST

static PGconn *g_waiter;
static bool lock_waited(void *arg)
{
	(void)arg;
	return pgt_int(g_waiter, "select count(*) from pg_locks where not granted") > 0;
}

/* demote_root step 2 waits for a producer that got in before step 1, so its
 * event is below the root's final tick. */
START_TEST(test_demote_waits_for_producer)
{
	PGconn *c = root_db();
	PGconn *p = pgt_connect(PQdb(c));
	PGresult *r;
	pgt_exec(p, "begin; select pgq.insert_event('q', 'late', 'x')");
	pgt_exec(c, "select pgq_node.demote_root('q', 1, 'n2')");
	sqlt_err(c, "select pgq.insert_event('q', 'later', 'x')", "Insert into queue disallowed");
	ck_assert_int_eq(PQsendQuery(c, "select last_tick from pgq_node.demote_root('q', 2, 'n2')"),
			 1);
	/* step 2 waits for the producer's lock */
	g_waiter = p;
	ck_assert(pgt_wait_until(lock_waited, NULL, 30000, 20));
	pgt_exec(p, "commit");
	r = PQgetResult(c);
	ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
	ck_assert_str_eq(PQgetvalue(r, 0, 0), "4");
	PQclear(r);
	while ((r = PQgetResult(c)))
		PQclear(r);
	/* a consumer of the final batch sees the late event */
	pgt_exec(c, "select pgq.register_consumer_at('q', 'reader', 3)");
	sqlt_eq(c,
		"select count(*) from pgq.get_batch_events(pgq.next_batch('q', 'reader'))"
		" where ev_type = 'late'",
		"1");
	PQfinish(p);
	PQfinish(c);
}
END_TEST

/* Backend `pid` (of the connection g_waiter is not) is waiting: on a lock, or
   in a sleep (a polling wait). */
typedef struct PidWait {
	PGconn *watch;
	int pid;
} PidWait;

static bool pid_waits(void *arg)
{
	PidWait *w = arg;
	char sql[200];
	snprintf(sql, sizeof(sql),
		 "select count(*) from pg_stat_activity where pid = %d"
		 " and wait_event_type in ('Lock', 'Timeout')",
		 w->pid);
	return pgt_int(w->watch, sql) > 0;
}

/* A producer that read the queue row (inserts allowed) before step 1 committed
 * but had not locked the event table yet when step 2 locked it. Step 2 must
 * wait for it too: before, its event was committed after the final tick, so it
 * existed only on the old root (the switchover test's intermittent loss). The
 * producer is held between the two by a lock on the event sequence (ALTER
 * SEQUENCE), which its nextval waits for. */
START_TEST(test_demote_waits_for_producer_in_flight)
{
	PGconn *c = root_db();
	PGconn *blk = pgt_connect(PQdb(c));
	PGconn *p = pgt_connect(PQdb(c));
	PGconn *d = pgt_connect(PQdb(c));
	PGresult *r;
	char *seq = pgt_value(c, "select queue_event_seq from pgq.queue where queue_name = 'q'");
	char sql[300];

	snprintf(sql, sizeof(sql), "begin; alter sequence %s cache 1", seq);
	pgt_exec(blk, sql);
	/* the producer has read the queue row and waits in nextval */
	ck_assert_int_eq(PQsendQuery(p, "select pgq.insert_event('q', 'late', 'x')"), 1);
	PidWait w = {c, PQbackendPID(p)};
	ck_assert(pgt_wait_until(pid_waits, &w, 30000, 10));
	pgt_exec(c, "select pgq_node.demote_root('q', 1, 'n2')");
	ck_assert_int_eq(PQsendQuery(d, "select last_tick from pgq_node.demote_root('q', 2, 'n2')"),
			 1);
	w.pid = PQbackendPID(d);
	ck_assert(pgt_wait_until(pid_waits, &w, 30000, 10));
	pgt_exec(blk, "commit");
	/* the producer ends: its insert is either refused or below the final tick */
	r = PQgetResult(p);
	bool inserted = PQresultStatus(r) == PGRES_TUPLES_OK;
	if (!inserted)
		ck_assert_msg(strstr(PQresultErrorMessage(r), "Insert into queue disallowed"), "%s",
			      PQresultErrorMessage(r));
	PQclear(r);
	while ((r = PQgetResult(p)))
		PQclear(r);
	r = PQgetResult(d);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
	ck_assert_str_eq(PQgetvalue(r, 0, 0), "4");
	PQclear(r);
	while ((r = PQgetResult(d)))
		PQclear(r);
	pgt_exec(c, "select pgq.register_consumer_at('q', 'reader', 3)");
	sqlt_eq(c,
		"select count(*) from pgq.get_batch_events(pgq.next_batch('q', 'reader'))"
		" where ev_type = 'late'",
		inserted ? "1" : "0");
	sqlt_eq(c, "select count(*) from pgq.event_template where ev_type = 'late'",
		inserted ? "1" : "0");
	free(seq);
	PQfinish(d);
	PQfinish(p);
	PQfinish(blk);
	PQfinish(c);
}
END_TEST

START_TEST(test_grants_as_roles)
{
	PGconn *su = root_db();
	const char *db = PQdb(su);
	PGconn *c;
	pgt_exec(su, "do $$ begin"
		     " if not exists (select from pg_roles where rolname = 'n_plain') then"
		     " create role n_plain login; create role n_reader login in role pgq_reader;"
		     " create role n_writer login in role pgq_writer;"
		     " create role n_admin login in role pgq_admin; end if; end $$");
	/* only three functions are for everyone; every definer pins search_path */
	sqlt_eq(su,
		"select string_agg(proname, ',' order by proname) from pg_proc"
		" where pronamespace = 'pgq_node'::regnamespace"
		" and has_function_privilege('n_plain', oid, 'execute')",
		"is_leaf_node,is_root_node,version");
	sqlt_eq(su, "select count(*) from pg_proc where pronamespace = 'pgq_node'::regnamespace",
		"30");
	sqlt_eq(su,
		"select count(*) from pg_proc where pronamespace = 'pgq_node'::regnamespace"
		" and prosecdef and not coalesce('search_path=pg_catalog, pg_temp' = any (proconfig),"
		" false)",
		"0");

	c = sqlt_connect_as(db, "n_plain");
	sqlt_eq(c, "select pgq_node.is_root_node('q')", "t");
	sqlt_err(c, "select * from pgq_node.get_node_info('q')",
		 "permission denied for function get_node_info");
	sqlt_err(c, "select * from pgq_node.node_info", "permission denied for table node_info");
	PQfinish(c);

	c = sqlt_connect_as(db, "n_reader");
	sqlt_eq(c, "select ret_code from pgq_node.get_node_info('q')", "100");
	sqlt_eq(c, "select ret_code from pgq_node.set_subscriber_watermark('q', 'n2', 2)", "200");
	sqlt_eq(c, "select count(*) from pgq_node.node_location", "3");
	sqlt_err(c, "select * from pgq_node.set_consumer_completed('q', 'w1', 2)",
		 "permission denied for function set_consumer_completed");
	PQfinish(c);

	c = sqlt_connect_as(db, "n_writer");
	sqlt_eq(c, "select ret_code from pgq_node.set_consumer_completed('q', 'w1', 2)", "100");
	sqlt_err(c, "select * from pgq_node.create_node('x', 'root', 'n1', 'w', null, null, null)",
		 "permission denied for function create_node");
	sqlt_err(c, "delete from pgq_node.node_location",
		 "permission denied for table node_location");
	PQfinish(c);

	c = sqlt_connect_as(db, "n_admin");
	sqlt_eq(c, "select ret_code from pgq_node.demote_root('q', 1, 'n2')", "200");
	sqlt_eq(c, "select last_tick from pgq_node.demote_root('q', 2, 'n2')", "4");
	sqlt_eq(c, "select ret_code from pgq_node.demote_root('q', 3, 'n2')", "200");
	sqlt_eq(c, "select ret_code from pgq_node.promote_branch('q')", "200");
	sqlt_eq(c, "select pgq_node.maint_watermark('q')", "0");
	PQfinish(c);
	PQfinish(su);
}
END_TEST

/* The plain script again over an installed schema, and from an older layout. */
START_TEST(test_rerun_and_upgrade)
{
	PGconn *c = root_db();
	char *before = state(c);
	char *after;
	nodet_exec_file(c, nodet_built_sql("pgq_node_ev.sql"));
	after = state(c);
	ck_assert_str_eq(after, before);
	free(after);
	/* a 3.0 node_info without node_attrs, a 3.4 get_node_info without target_for */
	pgt_exec(c, "alter table pgq_node.node_info drop column node_attrs;"
		    "drop function pgq_node.get_node_info(text);"
		    "create function pgq_node.get_node_info(i_queue_name text, out ret_code int4,"
		    " out ret_note text) returns record language sql as $$ select 1, 'x'::text $$");
	sqlt_eq(c, "select pgq_node.upgrade_schema()", "1");
	sqlt_eq(c, "select pgq_node.upgrade_schema()", "0");
	pgt_exec(c, "alter table pgq_node.node_info drop column node_attrs");
	nodet_exec_file(c, nodet_built_sql("pgq_node_ev.sql"));
	sqlt_eq(c, "select node_name || ' ' || worker_last_tick from pgq_node.get_node_info('q')",
		"n1 3");
	after = state(c);
	ck_assert_str_eq(after, before);
	free(after);
	free(before);
	PQfinish(c);
}
END_TEST

/* Copy `from` into `dir` under its base name (write a temporary, rename). */
static void install_file(const char *from, const char *dir)
{
	char to[4096], tmp[4200], buf[65536];
	const char *base = strrchr(from, '/');
	FILE *in, *out;
	size_t n;
	snprintf(to, sizeof(to), "%s/%s", dir, base ? base + 1 : from);
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", to, (int)getpid());
	in = fopen(from, "r");
	ck_assert_msg(in != NULL, "cannot read %s", from);
	out = fopen(tmp, "w");
	ck_assert_msg(out != NULL, "cannot write %s", tmp);
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		ck_assert_int_eq(fwrite(buf, 1, n, out), n);
	fclose(in);
	ck_assert_int_eq(fclose(out), 0);
	ck_assert_int_eq(rename(tmp, to), 0);
}

/* CREATE EXTENSION pgq_node_ev (with pgq_ev) as a non-superuser database owner. */
START_TEST(test_extension_as_non_superuser)
{
	const char *build = getenv("PGQD_TEST_BUILDDIR");
	char path[4096], sql[512];
	char version[64] = "";
	FILE *f;
	snprintf(path, sizeof(path), "%s/sql/pgq_node/pgq_node_ev.control", build);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(sql, sizeof(sql), f))
		if (sscanf(sql, "default_version = '%63[^']'", version) == 1)
			break;
	fclose(f);
	install_file(path, pgt_extension_dir());
	snprintf(path, sizeof(path), "%s/sql/pgq_node/pgq_node_ev--%s.sql", build, version);
	install_file(path, pgt_extension_dir());

	const char *db = pgt_db_new_empty();
	PGconn *su = pgt_connect(db);
	pgt_exec(su, "do $$ begin if not exists (select from pg_roles where rolname = 't_nodeext')"
		     " then create role t_nodeext login; end if; end $$");
	snprintf(sql, sizeof(sql), "alter database %s owner to t_nodeext", db);
	pgt_exec(su, sql);
	PQfinish(su);
	PGconn *c = sqlt_connect_as(db, "t_nodeext");
	pgt_exec(c, "set client_min_messages = warning");
	pgt_exec(c, "create extension pgq_node_ev cascade");
	sqlt_eq(c,
		"select array_length(extconfig, 1) from pg_extension where extname = 'pgq_node_ev'",
		"4");
	sqlt_eq(c,
		"select count(*) from pg_depend d join pg_extension e on e.oid = d.refobjid"
		" where e.extname = 'pgq_node_ev' and d.classid = 'pg_proc'::regclass",
		"30");
	/* a whole switchover of roles runs with the owner's rights */
	pgt_exec(c, "select pgq_node.register_location('q', 'n1', 'dbname=n1', false);"
		    "select pgq_node.register_location('q', 'n2', 'dbname=n2', false)");
	sqlt_eq(c,
		"select ret_code from pgq_node.create_node('q', 'root', 'n1', 'w1', null, null, null)",
		"200");
	sqlt_eq(c, "select ret_code from pgq_node.register_subscriber('q', 'n2', 'w2', null)",
		"200");
	sqlt_eq(c, "select ret_code from pgq_node.demote_root('q', 1, 'n2')", "200");
	sqlt_eq(c, "select last_tick from pgq_node.demote_root('q', 2, 'n2')", "2");
	sqlt_eq(c, "select ret_code from pgq_node.demote_root('q', 3, 'n2')", "200");
	sqlt_eq(c, "select ret_code from pgq_node.promote_branch('q')", "200");
	sqlt_eq(c, "select ret_code from pgq_node.drop_node('q', 'n1')", "200");
	pgt_exec(c, "drop extension pgq_node_ev");
	sqlt_eq(c, "select count(*) from pg_namespace where nspname = 'pgq_node'", "0");
	PQfinish(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sql-node");
	TCase *tc = pgt_tcase("node", 120);
	tcase_add_test(tc, test_bad_input_changes_nothing);
	tcase_add_test(tc, test_branch_worker_provider);
	tcase_add_test(tc, test_force_tick_external_and_paused);
	tcase_add_test(tc, test_kept_quirks);
	tcase_add_test(tc, test_maint_watermark);
	tcase_add_test(tc, test_demote_waits_for_producer);
	tcase_add_test(tc, test_demote_waits_for_producer_in_flight);
	tcase_add_test(tc, test_grants_as_roles);
	tcase_add_test(tc, test_rerun_and_upgrade);
	tcase_add_test(tc, test_extension_as_non_superuser);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
