/*
 * Security and installation: SECURITY DEFINER hygiene, the role privilege matrix,
 * hostile names, install/re-install/upgrade as a non-superuser, the pgq_ev
 * extension, and Debian's C PgQ 3.5 as a differential oracle.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sqltest.h"

static PGconn *conn(const char *db)
{
	PGconn *c = pgt_connect(db);
	PQsetNoticeProcessor(c, NULL, NULL);
	return c;
}

/* Result of one statement as text: rows, or "ERR: message". */
static char *outcome(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	char *out;
	if (PQresultStatus(r) == PGRES_FATAL_ERROR) {
		const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
		out = malloc(strlen(m) + 8);
		sprintf(out, "ERR: %s", m);
		PQclear(r);
		PQclear(PQexec(c, "rollback"));
		return out;
	}
	out = sqlt_format_rows(r);
	PQclear(r);
	return out;
}

START_TEST(test_definer_functions_pin_search_path)
{
	PGconn *c = conn(pgt_db_new());
	sqlt_eq(c,
		"select count(*) > 20 from pg_proc where pronamespace = 'pgq'::regnamespace and prosecdef",
		"t");
	sqlt_eq(c,
		"select coalesce(string_agg(oid::regprocedure::text, ', '), 'none') from pg_proc"
		" where pronamespace = 'pgq'::regnamespace and prosecdef"
		" and not coalesce('search_path=pg_catalog, pg_temp' = any (proconfig), false)",
		"none");
	PQfinish(c);
}
END_TEST

START_TEST(test_role_matrix)
{
	const char *db = pgt_db_new();
	PGconn *su = conn(db), *rd, *wr, *ad, *no;
	pgt_exec(
		su,
		"do $$ begin"
		" if not exists (select from pg_roles where rolname = 't_reader') then"
		"  create role t_reader login in role pgq_reader; create role t_writer login in role pgq_writer;"
		"  create role t_admin login in role pgq_admin; create role t_nobody login; end if; end $$");
	pgt_exec(su,
		 "select pgq.create_queue('q'), pgq.set_queue_config('q', 'ticker_max_lag', '0')");
	rd = sqlt_connect_as(db, "t_reader");
	wr = sqlt_connect_as(db, "t_writer");
	ad = sqlt_connect_as(db, "t_admin");
	no = sqlt_connect_as(db, "t_nobody");

	/* everybody: information */
	sqlt_eq(no, "select pgq.version()", "3.5");
	sqlt_eq(no, "select count(*) from pgq.get_queue_info()", "1");
	sqlt_eq(no, "select count(*) from pgq.get_consumer_info()", "0");
	sqlt_eq(no, "select count(*) from pgq.queue", "1");
	sqlt_eq(no, "select pgq.queue_notify_channel('q')", "pgq.tick.q");
	sqlt_err(no, "select pgq.insert_event('q', 'a', 'b')",
		 "permission denied for function insert_event");
	sqlt_err(no, "select pgq.register_consumer('q', 'c')",
		 "permission denied for function register_consumer");
	sqlt_err(no, "select * from pgq.event_template",
		 "permission denied for table event_template");
	sqlt_err(no, "select * from pgq.retry_queue", "permission denied for table retry_queue");

	/* writer: produce only */
	sqlt_eq(wr, "select pgq.insert_event('q', 'a', 'b')", "1");
	sqlt_eq(wr, "select pgq.insert_event('q', 'a', 'b', '1', '2', '3', '4')", "2");
	sqlt_eq(wr, "select pgq.current_event_table('q')", "pgq.event_1_0");
	sqlt_err(wr, "select pgq.next_batch('q', 'c')",
		 "permission denied for function next_batch");
	sqlt_err(
		wr,
		"select pgq.insert_event_raw('q', null, now(), null, null, 'a', 'b', null, null, null, null)",
		"permission denied for function insert_event_raw");
	sqlt_err(wr, "select * from pgq.event_1", "permission denied for table event_1");
	sqlt_err(wr, "insert into pgq.event_1_0 (ev_id, ev_time) values (1, now())",
		 "permission denied for table event_1_0");
	sqlt_err(wr, "select pgq.ticker()", "permission denied for function ticker");

	/* reader: consume only */
	sqlt_eq(rd, "select pgq.register_consumer('q', 'c')", "1");
	pgt_exec(ad, "select pgq.ticker('q')");
	sqlt_eq(rd, "select pgq.next_batch('q', 'c')", "1");
	sqlt_eq(rd, "select count(*) from pgq.get_batch_events(1)", "2");
	sqlt_eq(rd, "select count(*) from pgq.event_1", "2");
	sqlt_eq(rd, "select pgq.event_retry(1, 1, 0)", "1");
	sqlt_eq(rd, "select pgq.batch_retry(1, 0)", "1");
	sqlt_eq(rd, "select pgq.finish_batch(1)", "1");
	sqlt_eq(rd, "select pgq.force_tick('q') is not null", "t");
	sqlt_err(rd, "select pgq.insert_event('q', 'a', 'b')",
		 "permission denied for function insert_event");
	sqlt_err(rd, "select pgq.create_queue('x')", "permission denied for function create_queue");
	sqlt_err(rd, "select pgq.ticker('q')", "permission denied for function ticker");
	sqlt_err(rd, "select pgq.maint_retry_events()",
		 "permission denied for function maint_retry_events");
	sqlt_err(rd, "select * from pgq.retry_queue", "permission denied for table retry_queue");
	sqlt_err(rd, "delete from pgq.event_1_0", "permission denied for table event_1_0");

	/* admin: everything, including maintenance run as the invoker */
	sqlt_eq(ad, "select pgq.create_queue('x')", "1");
	sqlt_eq(ad,
		"select pgq.insert_event_raw('x', null, now(), null, null, 'a', 'b', null, null, null, null)",
		"1");
	sqlt_eq(ad, "select pgq.maint_retry_events()", "2");
	pgt_exec(ad, "update pgq.queue set queue_rotation_period = '0'");
	pgt_exec(ad, "select pgq.ticker()");
	pgt_exec(ad, "select func_name from pgq.maint_operations()");
	sqlt_eq(ad, "select pgq.maint_rotate_tables_step1('x')", "0");
	sqlt_eq(ad, "select pgq.maint_rotate_tables_step2()", "0");
	sqlt_eq(ad, "select queue_cur_table from pgq.queue where queue_name = 'x'", "1");
	/* as in PgQ: moving a queue's sequence needs more than pgq_admin's USAGE */
	sqlt_err(ad, "select pgq.seq_setval('pgq.event_2_id_seq', 100)",
		 "permission denied for sequence event_2_id_seq");
	sqlt_eq(ad, "select pgq.drop_queue('x')", "1");
	sqlt_eq(ad, "select count(*) from pgq.retry_queue", "0");
	PQfinish(rd);
	PQfinish(wr);
	PQfinish(ad);
	PQfinish(no);
	PQfinish(su);
}
END_TEST

START_TEST(test_hostile_names)
{
	const char *names[] = {
		"it's",
		"x\"; drop table pgq.queue; --",
		"semi;colon",
		"日本語キュー ü",
		"a.b.c",
		" ",
		"",
		"$$ $x$ \\ %s %I",
		"0123456789012345678901234567890123456789012345678901234567890123456789-long",
	};
	PGconn *c = conn(pgt_db_new());
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *params[2] = {names[i], names[i]};
		PGresult *r = PQexecParams(
			c,
			"select pgq.create_queue($1), pgq.set_queue_config($1, 'ticker_max_lag', '0'),"
			" pgq.register_consumer($1, $2), pgq.insert_event($1, 't', $1)",
			2, NULL, params, NULL, NULL, 0);
		ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "name [%s]: %s", names[i],
			      PQerrorMessage(c));
		PQclear(r);
		r = PQexecParams(c, "select pgq.ticker($1), pgq.next_batch($1, $2)", 2, NULL,
				 params, NULL, NULL, 0);
		ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "name [%s]: %s", names[i],
			      PQerrorMessage(c));
		PQclear(r);
		r = PQexecParams(
			c,
			"select ev_data = $1, pgq.event_retry(pgq.next_batch($1, $2), ev_id, 0)"
			" from pgq.get_batch_events(pgq.next_batch($1, $2))",
			2, NULL, params, NULL, NULL, 0);
		ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1,
			      "name [%s]: %s", names[i], PQerrorMessage(c));
		ck_assert_str_eq(PQgetvalue(r, 0, 0), "t");
		PQclear(r);
		/* cursor named after it (cut to the 63-byte limit: a longer name is refused,
		 * check_sql_hostile.c); an empty name is refused */
		pgt_exec(c, "begin");
		if (!*names[i]) {
			sqlt_err(
				c,
				"select count(*) from pgq.get_batch_cursor(pgq.next_batch('', ''), '', 5)",
				"get_batch_cursor: cursor name must not be empty");
			pgt_exec(c, "rollback; begin");
		}
		r = PQexecParams(
			c,
			"select count(*) from pgq.get_batch_cursor(pgq.next_batch($1, $2), left($1 || 'c', 63), 5)",
			2, NULL, params, NULL, NULL, 0);
		ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "cursor [%s]: %s", names[i],
			      PQerrorMessage(c));
		PQclear(r);
		pgt_exec(c, "rollback");
		r = PQexecParams(
			c,
			"select pgq.finish_batch(pgq.next_batch($1, $2)), pgq.maint_retry_events(),"
			" pgq.current_event_table($1), pgq.queue_notify_channel($1),"
			" (select count(*) from pgq.get_consumer_info($1, $2)), pgq.unregister_consumer($1, $2), pgq.drop_queue($1)",
			2, NULL, params, NULL, NULL, 0);
		ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "name [%s]: %s", names[i],
			      PQerrorMessage(c));
		/* a NOTIFY on the channel works for any name */
		{
			char *chan = PQgetvalue(r, 0, 3);
			const char *p2[1] = {chan};
			PGresult *n = PQexecParams(c, "select pg_notify($1, 'x')", 1, NULL, p2,
						   NULL, NULL, 0);
			ck_assert_msg(PQresultStatus(n) == PGRES_TUPLES_OK, "notify [%s]: %s", chan,
				      PQerrorMessage(c));
			PQclear(n);
		}
		PQclear(r);
	}
	sqlt_eq(c, "select count(*) from pgq.queue", "0");
	/* injection through parameter names and values is refused with a plain error */
	pgt_exec(c, "select pgq.create_queue('q')");
	sqlt_err(
		c,
		"select pgq.set_queue_config('q', 'ticker_max_lag = 0, queue_name = ''x'' --', '1')",
		"cannot change parameter \"ticker_max_lag = 0, queue_name = 'x' --s\"");
	sqlt_err(
		c,
		"select pgq.set_queue_config('q', 'ticker_max_lag', '1''; drop table pgq.tick; --')",
		"invalid input syntax for type interval: \"1'; drop table pgq.tick; --\"");
	sqlt_err(c, "select pgq.set_queue_config('q', 'queue_name', 'x')",
		 "cannot change parameter \"queue_names\"");
	sqlt_eq(c, "select count(*) from pgq.tick", "1");
	sqlt_eq(c, "select pgq.seq_getval(queue_event_seq) from pgq.queue", "1");
	sqlt_err(c, "select pgq.seq_getval('pgq.event_10_id_seq; drop table pgq.tick')",
		 "relation \"pgq.event_10_id_seq; drop table pgq.tick\" does not exist");
	PQfinish(c);
}
END_TEST

/* A non-superuser installs the plain script, runs it again, and uses the queue. */
START_TEST(test_plain_install_as_non_superuser)
{
	const char *db = pgt_db_new_empty();
	PGconn *su = conn(db), *u;
	char sql[512];
	pgt_exec(su,
		 "do $$ begin if not exists (select from pg_roles where rolname = 't_inst') then"
		 " create role t_inst login; end if; end $$");
	snprintf(sql, sizeof(sql), "alter database %s owner to t_inst", db);
	pgt_exec(su, sql);
	/* roles already exist in the cluster (the template made them) */
	ck_assert_int_eq(sqlt_psql_file(db, "t_inst", sqlt_install_script()), 0);
	ck_assert_int_eq(sqlt_psql_file(db, "t_inst", sqlt_install_script()), 0);
	u = sqlt_connect_as(db, "t_inst");
	sqlt_eq(u,
		"select count(distinct proowner::regrole) || ' ' || min(proowner::regrole::text) from pg_proc"
		" where pronamespace = 'pgq'::regnamespace",
		"1 t_inst");
	sqlt_eq(u,
		"select pgq.create_queue('q'), pgq.register_consumer('q', 'c'), pgq.insert_event('q', 'a', 'b')",
		"1");
	pgt_exec(u, "select pgq.set_queue_config('q', 'ticker_max_lag', '0'), pgq.ticker()");
	/* re-running over live data keeps it */
	ck_assert_int_eq(sqlt_psql_file(db, "t_inst", sqlt_install_script()), 0);
	sqlt_eq(u, "select count(*) from pgq.get_batch_events(pgq.next_batch('q', 'c'))", "1");
	PQfinish(u);
	PQfinish(su);
}
END_TEST

/* An existing PgQ 3.5 (its PL-only plain install) upgraded in place by our script. */
START_TEST(test_upgrade_from_pgq_pl_only)
{
	const char *plonly = "/usr/share/postgresql/15/contrib/pgq_pl_only.sql";
	const char *db = pgt_db_new_empty();
	PGconn *c;
	if (pgt_missing(access(plonly, R_OK) != 0, "PgQ's pgq_pl_only.sql (postgresql-15-pgq3)"))
		return;
	ck_assert_int_eq(sqlt_psql_file(db, "postgres", plonly), 0);
	c = conn(db);
	sqlt_eq(c, "select pgq.create_queue('old'), pgq.register_consumer('old', 'c')", "1");
	pgt_exec(
		c,
		"select pgq.insert_event('old', 't', 'before-' || i) from generate_series(1, 3) i");
	pgt_exec(c, "select pgq.set_queue_config('old', 'ticker_max_lag', '0'), pgq.ticker('old')");
	pgt_exec(c, "select pgq.insert_event('old', 't', 'pending')");
	ck_assert_int_eq(sqlt_psql_file(db, "postgres", sqlt_install_script()), 0);
	PQfinish(c);
	c = conn(db);
	sqlt_eq(c, "select pgq.pgqd_ev_version() is not null and pgq.version() = '3.5'", "t");
	sqlt_eq(c,
		"select count(*) from pg_attribute where attrelid = 'pgq.queue'::regclass and attname = 'queue_low_latency'",
		"1");
	pgt_exec(c, "select pgq.insert_event('old', 't', 'after')");
	pgt_exec(c, "select pgq.ticker('old')");
	sqlt_eq(c,
		"select string_agg(ev_data, ',' order by ev_id) from pgq.get_batch_events(pgq.next_batch('old', 'c'))",
		"before-1,before-2,before-3");
	pgt_exec(c, "select pgq.finish_batch(1)");
	sqlt_eq(c,
		"select string_agg(ev_data, ',' order by ev_id) from pgq.get_batch_events(pgq.next_batch('old', 'c'))",
		"pending,after");
	PQfinish(c);
}
END_TEST

static int copy_file(const char *from, const char *dir)
{
	char to[4096], buf[65536];
	const char *base = strrchr(from, '/');
	FILE *in, *out;
	size_t n;
	snprintf(to, sizeof(to), "%s/%s", dir, base ? base + 1 : from);
	in = fopen(from, "r");
	if (!in)
		return -errno;
	out = fopen(to, "w");
	if (!out) {
		fclose(in);
		return -errno;
	}
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		fwrite(buf, 1, n, out);
	fclose(in);
	return fclose(out) == 0 ? 0 : -errno;
}

/*
 * CREATE EXTENSION pgq_ev as a non-superuser, from the test server's private
 * extension directory (pgt_extension_dir), where the update script is placed too.
 */
START_TEST(test_extension)
{
	const char *build = getenv("PGQD_TEST_BUILDDIR");
	char cmd[1024], extdir[1024] = "", path[4096], *ver;
	const char *db = pgt_db_new_empty();
	PGconn *su = conn(db), *u;
	FILE *p;
	snprintf(extdir, sizeof(extdir), "%s", pgt_extension_dir());
	ck_assert_ptr_nonnull(build);
	snprintf(path, sizeof(path), "%s/sql/pgq_ev.control", build);
	ck_assert_int_eq(copy_file(path, extdir), 0);
	p = fopen(path, "r");
	ck_assert_ptr_nonnull(p);
	{
		char line[256], v[64] = "";
		while (fgets(line, sizeof(line), p))
			if (sscanf(line, "default_version = '%63[^']'", v) == 1)
				break;
		fclose(p);
		ck_assert_str_ne(v, "");
		snprintf(path, sizeof(path), "%s/sql/pgq_ev--%s.sql", build, v);
		ver = strdup(v);
	}
	ck_assert_int_eq(copy_file(path, extdir), 0);

	pgt_exec(su, "do $$ begin if not exists (select from pg_roles where rolname = 't_ext') then"
		     " create role t_ext login; end if; end $$");
	snprintf(cmd, sizeof(cmd), "alter database %s owner to t_ext", db);
	pgt_exec(su, cmd);
	u = sqlt_connect_as(db, "t_ext");
	pgt_exec(u, "create extension pgq_ev");
	sqlt_eq(u, "select array_length(extconfig, 1) from pg_extension where extname = 'pgq_ev'",
		"7");
	sqlt_eq(u,
		"select pgq.version() = '3.5' and pgq.pgqd_ev_version() = extversion from pg_extension"
		" where extname = 'pgq_ev'",
		"t");
	sqlt_eq(u,
		"select pgq.create_queue('q'), pgq.register_consumer('q', 'c'), pgq.insert_event('q', 'a', 'b')",
		"1");
	pgt_exec(u, "select pgq.set_queue_config('q', 'ticker_max_lag', '0'), pgq.ticker()");
	/* an update script is the same idempotent script: ALTER EXTENSION UPDATE over live data */
	{
		char upd[4096];
		snprintf(upd, sizeof(upd), "%s/pgq_ev--%s--%s.9test.sql", extdir, ver, ver);
		ck_assert_int_eq(copy_file(sqlt_install_script(), extdir), 0);
		snprintf(path, sizeof(path), "%s/pgq_ev.sql", extdir);
		ck_assert_int_eq(rename(path, upd), 0);
		snprintf(cmd, sizeof(cmd), "alter extension pgq_ev update to '%s.9test'", ver);
		pgt_exec(u, cmd);
		unlink(upd);
		snprintf(
			cmd, sizeof(cmd),
			"select extversion = '%s.9test' from pg_extension where extname = 'pgq_ev'",
			ver);
		sqlt_eq(u, cmd, "t");
		sqlt_eq(u,
			"select count(*) from pg_depend where refobjid = (select oid from pg_extension"
			" where extname = 'pgq_ev') and classid = 'pg_proc'::regclass"
			" and objid = 'pgq.insert_event(text,text,text)'::regprocedure",
			"1");
	}
	sqlt_eq(u, "select pgq.insert_event('q', 'a', 'c') > 1", "t");
	sqlt_eq(u, "select count(*) from pgq.get_batch_events(pgq.next_batch('q', 'c'))", "1");
	/* Debian's pgq cannot go into the same database: both own schema pgq */
	sqlt_err(su, "create extension pgq", "schema \"pgq\" already exists");
	pgt_exec(u, "select pgq.drop_queue('q', true)");
	pgt_exec(u, "drop extension pgq_ev");
	free(ver);
	sqlt_eq(u, "select count(*) from pg_namespace where nspname = 'pgq'", "0");
	PQfinish(u);
	PQfinish(su);
}
END_TEST

/* The same scenario on Debian's C PgQ 3.5 and on ours: every result must match. */
static const char *const scenario[] = {
	"select pgq.create_queue('a')",
	"select pgq.create_queue('a')",
	"select pgq.create_queue('b')",
	"select pgq.create_queue(null)",
	"select pgq.set_queue_config('a', 'ticker_max_lag', '0')",
	"select pgq.set_queue_config('a', 'ticker_idle_period', '0')",
	"select pgq.set_queue_config('a', 'per_tx_limit', '1')",
	"select pgq.set_queue_config('nope', 'ticker_max_lag', '0')",
	"select pgq.register_consumer('a', 'c1')",
	"select pgq.register_consumer('a', 'c1')",
	"select pgq.register_consumer('a', 'c2')",
	"select pgq.register_consumer('nope', 'x')",
	"select pgq.register_consumer_at('a', 'c3', 999)",
	"select pgq.insert_event('a', 't', '1')",
	"select pgq.insert_event('a', 't', '2', 'e1', 'e2', 'e3', 'e4')",
	"select pgq.insert_event_raw('a', 50, '2020-01-01', null, null, 'r', 'raw', null, null, null, null)",
	"select pgq.insert_event_raw(null, 50, '2020-01-01', null, null, 'r', 'raw', null, null, null, null)",
	"select pgq.current_event_table('a')",
	"select pgq.current_event_table('nope')",
	"select pgq.ticker('a')",
	"select pgq.ticker('nope')",
	"select batch_id, cur_tick_id, prev_tick_id, cur_tick_event_seq, prev_tick_event_seq"
	" from pgq.next_batch_info('a', 'c1')",
	"select batch_id, cur_tick_id, prev_tick_id from pgq.next_batch_custom('a', 'c1', null, 1, null)",
	"select ev_id, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4"
	" from pgq.get_batch_events(1) where ev_id = 50 or ev_time > now() - interval '1 hour'",
	"select * from pgq.batch_event_tables(1)",
	"select queue_name, consumer_name, prev_tick_id, tick_id, seq_start, seq_end from pgq.get_batch_info(1)",
	"select pgq.event_retry(1, 1, 0)",
	"select pgq.event_retry(1, 1, 0)",
	"select pgq.event_retry(1, 999, 0)",
	"select pgq.batch_retry(1, 3600)",
	"select pgq.finish_batch(1)",
	"select pgq.finish_batch(1)",
	"select pgq.batch_retry(1, 3600)",
	"select pgq.maint_retry_events()",
	"select pgq.ticker('a')",
	"select pgq.next_batch('a', 'c1')",
	"select ev_id, ev_retry, ev_data from pgq.get_batch_events(2)",
	"select pgq.next_batch('a', 'c2')",
	"select ev_id, ev_retry, ev_data from pgq.get_batch_events(3)",
	"select pgq.finish_batch(3)",
	"select pgq.next_batch('a', 'c2')",
	"select count(*) from pgq.get_batch_events(4)",
	"select queue_name, consumer_name, last_tick, current_batch, next_tick, pending_events from pgq.get_consumer_info()",
	"select queue_name, consumer_name from pgq.get_consumer_info('a')",
	"select queue_name, consumer_name, pending_events from pgq.get_consumer_info('a', 'c1')",
	"select queue_name, queue_ntables, queue_cur_table, queue_ticker_max_count, ev_new, last_tick_id,"
	" queue_ticker_max_lag, queue_ticker_idle_period, queue_rotation_period from pgq.get_queue_info()",
	"select queue_name, last_tick_id from pgq.get_queue_info('b')",
	"select pgq.event_retry_raw('a', 'c1', now(), 77, '2020-01-01', 1, 't', 'd', null, null, null, null)",
	"select pgq.event_retry_raw('a', 'zz', now(), 77, '2020-01-01', 1, 't', 'd', null, null, null, null)",
	"select ev_id, ev_owner, ev_retry, ev_type from pgq.retry_queue order by 1",
	"select pgq.unregister_consumer('a', 'c2')",
	"select pgq.unregister_consumer('a', 'c2')",
	"select co_name from pgq.consumer order by 1",
	"select pgq.register_consumer_at('a', 'c3', 2)",
	"select batch_id, prev_tick_id, cur_tick_id from pgq.next_batch_custom('a', 'c3', null, 1, null)",
	"select pgq.force_tick('a')",
	"select pgq.ticker()",
	"select pgq.seq_getval('pgq.event_1_id_seq') > 1000",
	"select pgq.drop_queue('a')",
	"select pgq.drop_queue('b')",
	"select pgq.drop_queue('b')",
	"update pgq.queue set queue_rotation_period = '0', queue_switch_time = now() - interval '1 s'",
	"select * from pgq.maint_operations()",
	"select pgq.maint_rotate_tables_step1('a')",
	"select queue_cur_table, queue_switch_step2 is null from pgq.queue",
	"select * from pgq.maint_operations()",
	"select pgq.maint_rotate_tables_step2()",
	"select pgq.finish_batch(5)",
	"select pgq.finish_batch(2)",
	"select pgq.ticker('a')",
	"select pgq.maint_rotate_tables_step1('a')",
	"select queue_cur_table from pgq.queue",
	"select * from pgq.maint_tables_to_vacuum()",
	"select pgq.quote_fqname('a.b'), pgq.quote_fqname('X'), pgq.quote_fqname('\"q\".x y')",
	"select pgq.set_queue_config('a', 'ticker_paused', 'on')",
	"select pgq.ticker('a')",
	"select pgq.ticker()",
	"select pgq.set_queue_config('a', 'ticker_paused', 'off')",
	"select pgq.set_queue_config('a', 'external_ticker', 'on')",
	"select pgq.ticker('a')",
	"select pgq.ticker('a', 500, '2020-01-01', 9000)",
	"select pgq.seq_getval('pgq.event_1_tick_seq'), pgq.seq_getval('pgq.event_1_id_seq')",
	"select pgq.ticker('b', 500, '2020-01-01', 9000)",
	"update pgq.queue set queue_disable_insert = true",
	"select pgq.insert_event('a', 'x', 'y')",
	"select pgq.current_event_table('a')",
	"select pgq.upgrade_schema()",
	"select pgq.drop_queue('a', true)",
	"select count(*) from pgq.queue",
	"select count(*) from pgq.consumer",
	"select count(*) from pgq.retry_queue",
	"select count(*) from pgq.tick",
	"select pgq.version()",
	"select pgq.seq_setval('pgq.batch_id_seq', 3), pgq.seq_setval('pgq.batch_id_seq', 30)",
	NULL,
};

START_TEST(test_oracle_scenario)
{
	const char *ora_db = pgt_db_new_empty();
	PGconn *ora = conn(ora_db), *ours = conn(pgt_db_new());
	PGresult *r = PQexec(ora, "create extension pgq");
	if (pgt_missing(PQresultStatus(r) != PGRES_COMMAND_OK,
			"Debian's pgq extension (postgresql-15-pgq3)")) {
		PQclear(r);
		PQfinish(ora);
		PQfinish(ours);
		return;
	}
	PQclear(r);
	for (int i = 0; scenario[i]; i++) {
		char *a = outcome(ora, scenario[i]);
		char *b = outcome(ours, scenario[i]);
		ck_assert_msg(strcmp(a, b) == 0, "step %d: %s\n  pgq 3.5: %s\n  ours:    %s", i,
			      scenario[i], a, b);
		free(a);
		free(b);
	}
	PQfinish(ora);
	PQfinish(ours);
}
END_TEST

/*
 * Function signatures, parameter names, results and EXECUTE grants match PgQ 3.5.
 * One deliberate difference: the 3-argument insert_event is SECURITY DEFINER itself
 * (PgQ's calls the 7-argument one), which saves a nested call per event.
 */
START_TEST(test_oracle_catalog)
{
	const char *ora_db = pgt_db_new_empty();
	PGconn *ora = conn(ora_db), *ours = conn(pgt_db_new());
	const char *sig_q =
		"select p.oid::regprocedure::text, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),"
		" p.prosecdef or p.oid = 'pgq.insert_event(text,text,text)'::regprocedure, p.proisstrict, p.proretset,"
		" has_function_privilege('public_probe', p.oid, 'execute'),"
		" has_function_privilege('pgq_reader', p.oid, 'execute'),"
		" has_function_privilege('pgq_writer', p.oid, 'execute'),"
		" has_function_privilege('pgq_admin', p.oid, 'execute')"
		" from pg_proc p where p.pronamespace = 'pgq'::regnamespace"
		" and p.prorettype <> 'trigger'::regtype and p.proname not like '\\_%'"
		" and p.proname not in ('pgqd_ev_version', 'queue_notify_channel', 'ticker_wake_channel',"
		" 'ticker_watch', 'maint_thin_ticks')"
		" order by 1";
	const char *tbl_q =
		"select c.relname, r.rolname, p.priv, has_table_privilege(r.rolname, c.oid, p.priv)"
		" from pg_class c, (values ('public_probe'), ('pgq_reader'), ('pgq_writer'), ('pgq_admin')) r(rolname),"
		" (values ('select'), ('insert'), ('update'), ('delete'), ('truncate')) p(priv)"
		" where c.relnamespace = 'pgq'::regnamespace and c.relkind = 'r' order by 1, 2, 3";
	char *a, *b;
	PGresult *r = PQexec(ora, "create extension pgq");
	if (pgt_missing(PQresultStatus(r) != PGRES_COMMAND_OK,
			"Debian's pgq extension (postgresql-15-pgq3)")) {
		PQclear(r);
		PQfinish(ora);
		PQfinish(ours);
		return;
	}
	PQclear(r);
	pgt_exec(
		ours,
		"do $$ begin if not exists (select from pg_roles where rolname = 'public_probe') then"
		" create role public_probe; end if; end $$");
	a = sqlt_rows(ora, sig_q);
	b = sqlt_rows(ours, sig_q);
	ck_assert_msg(strcmp(a, b) == 0, "functions differ:\n--- pgq 3.5\n%s--- ours\n%s", a, b);
	free(a);
	free(b);
	a = sqlt_rows(ora, tbl_q);
	b = sqlt_rows(ours, tbl_q);
	ck_assert_msg(strcmp(a, b) == 0, "table privileges differ:\n--- pgq 3.5\n%s--- ours\n%s", a,
		      b);
	free(a);
	free(b);
	PQfinish(ora);
	PQfinish(ours);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sql-security");
	TCase *tc = pgt_tcase("security", 90);
	tcase_add_test(tc, test_definer_functions_pin_search_path);
	tcase_add_test(tc, test_role_matrix);
	tcase_add_test(tc, test_hostile_names);
	tcase_add_test(tc, test_plain_install_as_non_superuser);
	tcase_add_test(tc, test_upgrade_from_pgq_pl_only);
	tcase_add_test(tc, test_extension);
	tcase_add_test(tc, test_oracle_scenario);
	tcase_add_test(tc, test_oracle_catalog);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
