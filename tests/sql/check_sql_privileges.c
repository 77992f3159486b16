/*
 * The privilege matrix, generated from the catalog: every function in schemas pgq,
 * pgq_coop and pgq_ext is called as each role (a plain login role, members of
 * pgq_reader, pgq_writer and pgq_admin, the non-superuser that installed the schemas,
 * a superuser) and must be executable exactly when the table below (which mirrors
 * docs/sql-api.md, "Security") says so. A function without an entry fails the test.
 * Then SECURITY DEFINER functions run with hostile objects first in search_path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqltest.h"

/* Who may execute: PUBLIC < READER/WRITER < ADMIN (member of both) < OWNER. */
typedef enum { PUBLIC, READER, WRITER, ADMIN, OWNER } Level;

static const struct {
	const char *sig; /* regprocedure text */
	Level level;
} expected[] = {
	/* information, to PUBLIC */
	{"pgq.get_queue_info()", PUBLIC},
	{"pgq.get_queue_info(text)", PUBLIC},
	{"pgq.get_consumer_info()", PUBLIC},
	{"pgq.get_consumer_info(text)", PUBLIC},
	{"pgq.get_consumer_info(text,text)", PUBLIC},
	{"pgq.seq_getval(text)", PUBLIC},
	{"pgq.quote_fqname(text)", PUBLIC},
	{"pgq.version()", PUBLIC},
	{"pgq.pgqd_ev_version()", PUBLIC},
	{"pgq.queue_notify_channel(text)", PUBLIC},
	{"pgq.ticker_wake_channel()", PUBLIC},
	/* the triggers' helpers run as the writing user and only read catalogs */
	{"pgq._trg_urlencode(text)", PUBLIC},
	{"pgq._trg_urlenc_fast(text)", PUBLIC},
	{"pgq._trg_out_expr(text,oid)", PUBLIC},
	{"pgq._trg_has_eq(oid)", PUBLIC},
	{"pgq._trg_cmp_kind(oid,oid)", PUBLIC},
	{"pgq._trg_build(text,oid,text[],text)", PUBLIC},
	{"pgq_coop.version()", PUBLIC},
	{"pgq_coop.pgqd_ev_version()", PUBLIC},
	{"pgq_ext.version()", PUBLIC},
	{"pgq_ext.pgqd_ev_version()", PUBLIC},
	/* consuming, to pgq_reader */
	{"pgq.register_consumer(text,text)", READER},
	{"pgq.register_consumer_at(text,text,bigint)", READER},
	{"pgq.unregister_consumer(text,text)", READER},
	{"pgq.next_batch(text,text)", READER},
	{"pgq.next_batch_info(text,text)", READER},
	{"pgq.next_batch_custom(text,text,interval,integer,interval)", READER},
	{"pgq.get_batch_events(bigint)", READER},
	{"pgq.get_batch_info(bigint)", READER},
	{"pgq.get_batch_cursor(bigint,text,integer)", READER},
	{"pgq.get_batch_cursor(bigint,text,integer,text)", READER},
	{"pgq.batch_event_sql(bigint)", READER},
	{"pgq._batch_event_sql(bigint,text)", READER},
	{"pgq._batch_split_block(bigint)", READER},
	{"pgq._get_batch_part_cursor(bigint,text,integer,bigint,integer)", READER},
	{"pgq._check_cursor_name(text,text)", READER},
	{"pgq._declare_batch_cursor(bigint,text,text)", READER},
	{"pgq._batch_tables(text,integer,integer,bigint,bigint,bigint,bigint)", READER},
	{"pgq.batch_event_tables(bigint)", READER},
	{"pgq.event_retry(bigint,bigint,integer)", READER},
	{"pgq.event_retry(bigint,bigint,timestamp with time zone)", READER},
	{"pgq.batch_retry(bigint,integer)", READER},
	{"pgq.finish_batch(bigint)", READER},
	{"pgq.force_tick(text)", READER},
	{"pgq.find_tick_helper(integer,bigint,timestamp with time zone,bigint,bigint,interval)",
	 READER},
	{"pgq_coop.register_subconsumer(text,text,text)", READER},
	{"pgq_coop.unregister_subconsumer(text,text,text,integer)", READER},
	{"pgq_coop.next_batch(text,text,text)", READER},
	{"pgq_coop.next_batch(text,text,text,interval)", READER},
	{"pgq_coop.next_batch_custom(text,text,text,interval,integer,interval)", READER},
	{"pgq_coop.next_batch_custom(text,text,text,interval,integer,interval,interval)", READER},
	{"pgq_coop.finish_batch(bigint)", READER},
	/* producing, to pgq_writer */
	{"pgq.insert_event(text,text,text)", WRITER},
	{"pgq.insert_event(text,text,text,text,text,text,text)", WRITER},
	{"pgq.current_event_table(text)", WRITER},
	{"pgq.logutriga()", WRITER},
	{"pgq.sqltriga()", WRITER},
	{"pgq.jsontriga()", WRITER},
	{"pgq_ext.upgrade_schema()", WRITER},
	{"pgq_ext.is_batch_done(text,bigint)", WRITER},
	{"pgq_ext.is_batch_done(text,text,bigint)", WRITER},
	{"pgq_ext.set_batch_done(text,bigint)", WRITER},
	{"pgq_ext.set_batch_done(text,text,bigint)", WRITER},
	{"pgq_ext.is_event_done(text,bigint,bigint)", WRITER},
	{"pgq_ext.is_event_done(text,text,bigint,bigint)", WRITER},
	{"pgq_ext.set_event_done(text,bigint,bigint)", WRITER},
	{"pgq_ext.set_event_done(text,text,bigint,bigint)", WRITER},
	{"pgq_ext.get_last_tick(text)", WRITER},
	{"pgq_ext.get_last_tick(text,text)", WRITER},
	{"pgq_ext.set_last_tick(text,bigint)", WRITER},
	{"pgq_ext.set_last_tick(text,text,bigint)", WRITER},
	/* ticking, maintenance, administration, to pgq_admin */
	{"pgq.ticker()", ADMIN},
	{"pgq.ticker(text)", ADMIN},
	{"pgq.ticker(text,bigint,timestamp with time zone,bigint)", ADMIN},
	{"pgq.maint_operations()", ADMIN},
	{"pgq.maint_retry_events()", ADMIN},
	{"pgq.maint_rotate_tables_step1(text)", ADMIN},
	{"pgq.maint_rotate_tables_step2()", ADMIN},
	{"pgq.maint_tables_to_vacuum()", ADMIN},
	{"pgq.maint_thin_ticks(text)", ADMIN},
	{"pgq.create_queue(text)", ADMIN},
	{"pgq.drop_queue(text)", ADMIN},
	{"pgq.drop_queue(text,boolean)", ADMIN},
	{"pgq.set_queue_config(text,text,text)", ADMIN},
	{"pgq.insert_event_raw(text,bigint,timestamp with time zone,integer,integer,text,text,text,"
	 "text,text,text)",
	 ADMIN},
	{"pgq.event_retry_raw(text,text,timestamp with time zone,bigint,timestamp with time zone,"
	 "integer,text,text,text,text,text,text)",
	 ADMIN},
	{"pgq.seq_setval(text,bigint)", ADMIN},
	{"pgq.grant_perms(text)", ADMIN},
	{"pgq._grant_perms_from(text,text,text,text)", ADMIN},
	{"pgq.tune_storage(text)", ADMIN},
	{"pgq.upgrade_schema()", ADMIN},
	/* internals pgq_admin's invoker functions call */
	{"pgq._insert_static(integer,integer,bigint,timestamp with time zone,integer,integer,text,"
	 "text,text,text,text,text)",
	 ADMIN},
	{"pgq._insert_checked(text,bigint,timestamp with time zone,integer,integer,text,text,text,"
	 "text,text,text)",
	 ADMIN},
	{"pgq._regen_insert_paths()", ADMIN},
	{"pgq._wake(text)", ADMIN},
	{"pgq.ticker_watch(integer)", ADMIN},
	{"pgq.ticker_watch(integer,double precision,double precision,double precision)", ADMIN},
	/* internals only SECURITY DEFINER functions call: the owner's */
	{"pgq._ticker(text,boolean)", OWNER},
	{"pgq._ticker_candidates(double precision,double precision,double precision)", OWNER},
	{"pgq._first_event_pending(text,txid_snapshot)", OWNER},
	{"pgq._events_pending(text,txid_snapshot)", OWNER},
	{"pgq._insert_tree(integer[],integer[],integer,integer)", OWNER},
	{"pgq._pending_tree(integer[],integer,integer)", OWNER},
	{"pgq._pending_probe_sql(text,text)", OWNER},
	{"pgq._pending_static(integer,txid_snapshot)", OWNER},
	{"pgq_coop._lock_main(text,text)", OWNER},
};
#define N_EXPECTED (sizeof(expected) / sizeof(expected[0]))

static const struct {
	const char *role; /* NULL: the connecting superuser */
	const char *what;
} roles[] = {
	{"pm_public", "public"},   {"pm_reader", "pgq_reader"},  {"pm_writer", "pgq_writer"},
	{"pm_admin", "pgq_admin"}, {"pm_owner", "schema owner"}, {NULL, "superuser"},
};

static bool may_execute(size_t role, Level l)
{
	switch (role) {
	case 0:
		return l == PUBLIC;
	case 1:
		return l == PUBLIC || l == READER;
	case 2:
		return l == PUBLIC || l == WRITER;
	case 3:
		return l != OWNER;
	default:
		return true;
	}
}

static void quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

static void create_roles(PGconn *su)
{
	pgt_exec(su,
		 "do $$ begin if not exists (select from pg_roles where rolname = 'pm_public') then"
		 " create role pm_public login; create role pm_reader login in role pgq_reader;"
		 " create role pm_writer login in role pgq_writer;"
		 " create role pm_admin login in role pgq_admin; create role pm_owner login;"
		 " end if; end $$");
}

/* A database whose pgq, pgq_coop and pgq_ext were installed by pm_owner (no superuser). */
static const char *owner_db(PGconn **su_out)
{
	const char *db = pgt_db_new_empty();
	const char *all = getenv("PGQD_TEST_SQL");
	char sql[512], *list, *tok, *save = NULL;
	PGconn *su = pgt_connect(db);
	PQsetNoticeProcessor(su, quiet, NULL);
	create_roles(su);
	snprintf(sql, sizeof(sql), "alter database %s owner to pm_owner", db);
	pgt_exec(su, sql);
	ck_assert_ptr_nonnull(all);
	list = strdup(all);
	for (tok = strtok_r(list, ":", &save); tok; tok = strtok_r(NULL, ":", &save))
		ck_assert_msg(sqlt_psql_file(db, "pm_owner", tok) == 0, "install %s", tok);
	free(list);
	*su_out = su;
	return db;
}

/*
 * Call `call` (a function call with NULL arguments, or CREATE TRIGGER for trigger
 * functions) as `role` in a rolled-back transaction. Returns 1 if it ran (any outcome
 * but a permission error on the function itself), 0 if refused with exactly
 * "permission denied for function NAME"; another permission error fails the test.
 */
static int try_call(PGconn *su, const char *role, const char *call, const char *name, bool trigger)
{
	char sql[2048], denied[256];
	PGresult *r;
	int ran;
	pgt_exec(su, "begin");
	if (role) {
		snprintf(sql, sizeof(sql), "set local role %s", role);
		pgt_exec(su, sql);
	}
	if (trigger) {
		pgt_exec(su, "create temp table pm_t(id int primary key)");
		snprintf(
			sql, sizeof(sql),
			"create trigger pm after insert on pm_t for each row execute function %s('q')",
			call);
	} else {
		snprintf(sql, sizeof(sql), "select %s", call);
	}
	r = PQexec(su, sql);
	/* CREATE TRIGGER names the function schema-qualified */
	snprintf(denied, sizeof(denied), "permission denied for function %s",
		 trigger ? call : name);
	if (PQresultStatus(r) == PGRES_FATAL_ERROR &&
	    strcmp(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501") == 0) {
		ck_assert_msg(strcmp(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY), denied) == 0,
			      "%s as %s: permission error from inside: %s", call,
			      role ? role : "superuser",
			      PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
		ran = 0;
	} else {
		ran = 1;
	}
	PQclear(r);
	pgt_exec(su, "rollback");
	return ran;
}

START_TEST(test_privilege_matrix)
{
	PGconn *su;
	const char *db = owner_db(&su);
	PGresult *fns;
	bool seen[N_EXPECTED] = {false};
	int pairs = 0;
	(void)db;
	/* every function of the three schemas, with a call taking typed NULLs from
	 * subqueries (a NULL constant would let the planner fold a strict call away,
	 * and with it the permission check) */
	fns = PQexec(
		su,
		"select p.oid::regprocedure::text, p.proname, p.prorettype = 'trigger'::regtype,"
		" case when p.prorettype = 'trigger'::regtype"
		"  then quote_ident(n.nspname) || '.' || quote_ident(p.proname)"
		"  else quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || coalesce((select"
		"   string_agg('(select null::' || format_type(t, null) || ')', ', ' order by i)"
		"   from unnest(p.proargtypes::oid[]) with ordinality u(t, i)), '') || ')' end,"
		" pg_get_userbyid(p.proowner)"
		" from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
		" where n.nspname in ('pgq', 'pgq_coop', 'pgq_ext') order by 1");
	ck_assert_int_eq(PQresultStatus(fns), PGRES_TUPLES_OK);
	ck_assert_int_gt(PQntuples(fns), 80);
	for (int i = 0; i < PQntuples(fns); i++) {
		const char *sig = PQgetvalue(fns, i, 0);
		size_t e;
		ck_assert_str_eq(PQgetvalue(fns, i, 4), "pm_owner");
		for (e = 0; e < N_EXPECTED; e++)
			if (strcmp(expected[e].sig, sig) == 0)
				break;
		ck_assert_msg(e < N_EXPECTED,
			      "%s has no expected privileges: add it to this test and to "
			      "docs/sql-api.md (Security)",
			      sig);
		seen[e] = true;
		for (size_t ro = 0; ro < sizeof(roles) / sizeof(roles[0]); ro++) {
			int ran = try_call(su, roles[ro].role, PQgetvalue(fns, i, 3),
					   PQgetvalue(fns, i, 1), PQgetvalue(fns, i, 2)[0] == 't');
			ck_assert_msg(ran == (int)may_execute(ro, expected[e].level),
				      "%s as %s: %s, expected %s", sig, roles[ro].what,
				      ran ? "executes" : "refused",
				      may_execute(ro, expected[e].level) ? "executes" : "refused");
			pairs++;
		}
	}
	PQclear(fns);
	for (size_t e = 0; e < N_EXPECTED; e++)
		ck_assert_msg(seen[e], "expected function %s does not exist", expected[e].sig);
	fprintf(stderr, "# privilege matrix: %d (role, function) pairs\n", pairs);
	PQfinish(su);
}
END_TEST

/*
 * The hostile schema: a clone of every pg_catalog function and operator that raises
 * "hijacked: NAME", and a view raising the same under the name of every pgq relation,
 * also as temporary views (pg_temp comes last in our pinned search_path).
 */
static const char *hostile_sql[] = {
	"create schema evil authorization pm_hostile",
	"grant usage on schema evil to public",
	"set role pm_hostile",
	"create function evil.boom() returns int language plpgsql as"
	" $$ begin raise exception 'hijacked: a relation'; end $$",
	"do $$ declare f record; begin"
	" for f in select p.proname, pg_get_function_identity_arguments(p.oid) as args,"
	"  format_type(p.prorettype, null) as ret, p.proretset from pg_proc p"
	"  where p.pronamespace = 'pg_catalog'::regnamespace and p.prokind = 'f' and p.proallargtypes is null"
	" loop begin"
	"  execute format('create function evil.%I(%s) returns %s%s language plpgsql as %L', f.proname,"
	"   f.args, case when f.proretset then 'setof ' else '' end, f.ret,"
	"   'begin raise exception ''hijacked: function ' || f.proname || '''; end');"
	" exception when others then null; end; end loop; end $$",
	"do $$ declare o record; begin"
	" for o in select oid, oprname, oprleft, oprright, oprresult from pg_operator"
	"  where oprnamespace = 'pg_catalog'::regnamespace and oprcode <> 0"
	" loop begin"
	"  execute format('create function evil.op_%s(%s) returns %s language plpgsql as %L', o.oid,"
	"   concat_ws(', ', case when o.oprleft <> 0 then format_type(o.oprleft, null) end,"
	"    format_type(o.oprright, null)), format_type(o.oprresult, null),"
	"   'begin raise exception ''hijacked: operator ' || o.oprname || '''; end');"
	"  execute format('create operator evil.%s (%s rightarg = %s, function = evil.op_%s)', o.oprname,"
	"   case when o.oprleft <> 0 then format('leftarg = %s,', format_type(o.oprleft, null)) end,"
	"   format_type(o.oprright, null), o.oid);"
	" exception when others then null; end; end loop; end $$",
	"do $$ declare r record; begin"
	" for r in select relname from pg_class where relnamespace in"
	"  ('pgq'::regnamespace, 'pgq_coop'::regnamespace, 'pgq_ext'::regnamespace)"
	" loop execute format('create view evil.%I as select evil.boom() as x', r.relname); end loop; end $$",
	NULL,
};

/* The same hostile setup in a session: temporary views and the search_path. */
static void hostile_session(PGconn *c)
{
	pgt_exec(
		c,
		"do $$ declare r record; begin"
		" for r in select relname from pg_class where relnamespace in"
		"  ('pgq'::regnamespace, 'pgq_coop'::regnamespace, 'pgq_ext'::regnamespace)"
		" loop execute format('create temp view %I as select evil.boom() as x', r.relname);"
		" end loop; end $$");
	pgt_exec(c, "set search_path = evil, pg_catalog, pgq, public");
}

/* Run sql (as whoever c is); it must succeed; returns the first value (malloc'd). */
static char *must(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	char *v;
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK,
		      "with a hostile search_path: %s: %s", sql, PQerrorMessage(c));
	v = strdup(PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "~");
	PQclear(r);
	return v;
}

/*
 * Every SECURITY DEFINER function, called with the hostile search_path by a hostile
 * member of pgq_reader and pgq_writer (H) or by pgq_admin (A); `want` is the first
 * value (NULL: any). `sig` names the function the step is for (checked against the
 * catalog: a new SECURITY DEFINER function needs a step here). Statements qualify
 * what they use themselves: only pgq's functions are under test.
 */
static const struct {
	char who;
	const char *sig, *sql, *want;
} hostile_steps[] = {
	{'A', "pgq.create_queue(text)", "select pgq.create_queue('hq2')", "1"},
	{'A', "pgq.set_queue_config(text,text,text)",
	 "select pgq.set_queue_config('hq2', 'ticker_max_count', '10')", "1"},
	{'H', "pgq.register_consumer(text,text)", "select pgq.register_consumer('hq', 'c')", "1"},
	{'H', "pgq.register_consumer_at(text,text,bigint)",
	 "select pgq.register_consumer_at('hq', 'c2', 1)", "1"},
	{'H', "pgq.insert_event(text,text,text)",
	 "select pgq.insert_event('hq', 't', 'd1') is not null", "t"},
	{'H', "pgq.insert_event(text,text,text,text,text,text,text)",
	 "select pgq.insert_event('hq', 't', 'd2', 'e1', 'e2', 'e3', 'e4') is not null", "t"},
	{'A', "pgq.ticker(text)", "select pgq.ticker('hq') is not null", "t"},
	{'A', "pgq.ticker()", "select pgq.ticker()", NULL},
	{'A', "pgq.ticker_watch(integer,double precision,double precision,double precision)",
	 "select watching from pgq.ticker_watch(0, 0.005, 2000, 0.05)", "t"},
	{'H', "pgq.next_batch_custom(text,text,interval,integer,interval)",
	 "select batch_id from pgq.next_batch_custom('hq', 'c', null, null, null)", "1"},
	{'H', "pgq.get_batch_info(bigint)", "select consumer_name from pgq.get_batch_info(1)", "c"},
	{'H', "pgq.event_retry(bigint,bigint,integer)", "select pgq.event_retry(1, 1::bigint, 0)",
	 "1"},
	{'H', "pgq.event_retry(bigint,bigint,timestamp with time zone)",
	 "select pgq.event_retry(1, 2::bigint, pg_catalog.now())", "1"},
	{'H', "pgq.batch_retry(bigint,integer)", "select pgq.batch_retry(1, 0)", "0"},
	{'H', "pgq.finish_batch(bigint)", "select pgq.finish_batch(1)", "1"},
	{'H', "pgq.force_tick(text)", "select pgq.force_tick('hq') is not null", "t"},
	{'H', "pgq.get_consumer_info()",
	 "select consumer_name from pgq.get_consumer_info() limit 1", "c"},
	{'H', "pgq.get_consumer_info(text)",
	 "select consumer_name from pgq.get_consumer_info('hq') limit 1", "c"},
	{'H', "pgq.get_consumer_info(text,text)",
	 "select consumer_name from pgq.get_consumer_info('hq', 'c')", "c"},
	{'A',
	 "pgq.event_retry_raw(text,text,timestamp with time zone,bigint,timestamp with time "
	 "zone,integer,text,text,text,text,text,text)",
	 "select pgq.event_retry_raw('hq', 'c', pg_catalog.now(), 99, pg_catalog.now(), 0, 't', 'd',"
	 " null, null, null, null)",
	 "99"},
	{'A', "pgq.grant_perms(text)", "select pgq.grant_perms('hq')", "1"},
	{'A', "pgq._regen_insert_paths()", "select pgq._regen_insert_paths() is not null", "t"},
	{'A', "pgq.set_queue_config(text,text,text)",
	 "select pgq.set_queue_config('hq', 'external_ticker', '1')", "1"},
	{'A', "pgq.ticker(text,bigint,timestamp with time zone,bigint)",
	 "select pgq.ticker('hq', 100, pg_catalog.now(), 100)", "100"},
	{'H', "pgq.unregister_consumer(text,text)", "select pgq.unregister_consumer('hq', 'c2')",
	 "1"},
	{'A', "pgq.drop_queue(text,boolean)", "select pgq.drop_queue('hq2', true)", "1"},
	{'H', "pgq_coop.register_subconsumer(text,text,text)",
	 "select pgq_coop.register_subconsumer('hq', 'c', 's1')", "1"},
	{'H', "pgq_coop.next_batch_custom(text,text,text,interval,integer,interval,interval)",
	 "select pgq_coop.next_batch_custom('hq', 'c', 's1', null, null, null, null) is not null",
	 "t"},
	{'H', "pgq_coop._lock_main(text,text)", /* through next_batch_custom */
	 "select pgq_coop.next_batch_custom('hq', 'c', 's1', null, null, null, null) is not null",
	 "t"},
	{'H', "pgq_coop.finish_batch(bigint)",
	 "select pgq_coop.finish_batch(pgq_coop.next_batch_custom('hq', 'c', 's1', null, null, null,"
	 " null))",
	 "1"},
	{'H', "pgq_coop.unregister_subconsumer(text,text,text,integer)",
	 "select pgq_coop.unregister_subconsumer('hq', 'c', 's1', 0)", "1"},
	{'H', "pgq_ext.set_batch_done(text,text,bigint)",
	 "select pgq_ext.set_batch_done('c', 's', 7)", "t"},
	{'H', "pgq_ext.is_batch_done(text,text,bigint)",
	 "select pgq_ext.is_batch_done('c', 's', 7)", "t"},
	{'H', "pgq_ext.set_event_done(text,text,bigint,bigint)",
	 "select pgq_ext.set_event_done('c', 's', 7, 70)", "t"},
	{'H', "pgq_ext.is_event_done(text,text,bigint,bigint)",
	 "select pgq_ext.is_event_done('c', 's', 7, 70)", "t"},
	{'H', "pgq_ext.set_last_tick(text,text,bigint)",
	 "select pgq_ext.set_last_tick('c', 's', 5)", "1"},
	{'H', "pgq_ext.get_last_tick(text,text)", "select pgq_ext.get_last_tick('c', 's')", "5"},
};
#define N_HOSTILE_STEPS (sizeof(hostile_steps) / sizeof(hostile_steps[0]))

START_TEST(test_definer_functions_ignore_hostile_search_path)
{
	const char *db = pgt_db_new();
	PGconn *su = pgt_connect(db), *ho, *ad;
	char sql[256];
	PQsetNoticeProcessor(su, quiet, NULL);
	create_roles(su);
	pgt_exec(
		su,
		"do $$ begin if not exists (select from pg_roles where rolname = 'pm_hostile') then"
		" create role pm_hostile login in role pgq_reader, pgq_writer; end if; end $$");
	/* a queue whose event tables exist before the hostile views are named after them */
	pgt_exec(su,
		 "select pgq.create_queue('hq'), pgq.set_queue_config('hq', 'ticker_max_lag', '0'),"
		 " pgq.set_queue_config('hq', 'ticker_idle_period', '0')");
	snprintf(sql, sizeof(sql), "grant create on database %s to pm_hostile", db);
	pgt_exec(su, sql);
	for (int i = 0; hostile_sql[i]; i++)
		pgt_exec(su, hostile_sql[i]);
	pgt_exec(su, "reset role");
	/* the hostile schema really is hostile to a session that trusts it */
	ck_assert_int_gt(
		pgt_int(su,
			"select count(*) from pg_proc where pronamespace = 'evil'::regnamespace"),
		2000);
	ck_assert_int_gt(
		pgt_int(su,
			"select count(*) from pg_operator where oprnamespace = 'evil'::regnamespace"),
		500);
	ho = sqlt_connect_as(db, "pm_hostile");
	ad = sqlt_connect_as(db, "pm_admin");
	PQsetNoticeProcessor(ho, quiet, NULL);
	PQsetNoticeProcessor(ad, quiet, NULL);
	hostile_session(ho);
	hostile_session(ad);
	{
		char *e = pgt_error(ho, "select now()");
		ck_assert_str_eq(e, "hijacked: function now");
		free(e);
		e = pgt_error(ho, "select 1::bigint = 1::bigint");
		ck_assert_str_eq(e, "hijacked: operator =");
		free(e);
		e = pgt_error(ho, "select * from queue");
		ck_assert_str_eq(e, "hijacked: a relation");
		free(e);
	}

	for (size_t i = 0; i < N_HOSTILE_STEPS; i++) {
		char *v = must(hostile_steps[i].who == 'A' ? ad : ho, hostile_steps[i].sql);
		ck_assert_msg(!hostile_steps[i].want || strcmp(v, hostile_steps[i].want) == 0,
			      "%s: got %s, want %s", hostile_steps[i].sql, v,
			      hostile_steps[i].want);
		free(v);
	}
	PQfinish(ho);
	PQfinish(ad);

	/* checked from a clean session: the work was done, on the real tables */
	sqlt_eq(su, "select count(*) from pgq.retry_queue", "3");
	sqlt_eq(su, "select string_agg(co_name, ',' order by co_name) from pgq.consumer", "c,c.s1");
	sqlt_eq(su, "select count(*) from pgq.event_1", "2");
	sqlt_eq(su, "select count(*) from pgq.queue", "1");
	sqlt_eq(su, "select count(*) from pgq_ext.completed_event", "1");
	/* every SECURITY DEFINER function had its step */
	{
		PGresult *r =
			PQexec(su, "select p.oid::regprocedure::text from pg_proc p"
				   " where p.prosecdef and p.pronamespace in ('pgq'::regnamespace,"
				   " 'pgq_coop'::regnamespace, 'pgq_ext'::regnamespace)");
		ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
		ck_assert_int_gt(PQntuples(r), 30);
		for (int i = 0; i < PQntuples(r); i++) {
			size_t k;
			for (k = 0; k < N_HOSTILE_STEPS; k++)
				if (strcmp(hostile_steps[k].sig, PQgetvalue(r, i, 0)) == 0)
					break;
			ck_assert_msg(
				k < N_HOSTILE_STEPS,
				"SECURITY DEFINER %s is not called with a hostile search_path",
				PQgetvalue(r, i, 0));
		}
		PQclear(r);
	}
	PQfinish(su);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sql-privileges");
	TCase *tc = pgt_tcase("privileges", 120);
	tcase_add_test(tc, test_privilege_matrix);
	tcase_add_test(tc, test_definer_functions_ignore_hostile_search_path);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
