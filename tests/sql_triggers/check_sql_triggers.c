/*
 * pgq.logutriga / pgq.sqltriga / pgq.jsontriga against the private server:
 * exact encodings for every format, every option and error path, TRUNCATE,
 * session_replication_role, the per-session cache across DDL, delivery
 * through a real queue, and a differential run against Debian's C triggers
 * (extension pgq from postgresql-15-pgq3) in a separate database.
 *
 * Most tests replace pgq.insert_event(7 args) with a logger, as PgQ's own
 * suite does: the triggers must route through that SQL-level function.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtest.h"

/* pgq.insert_event replaced by a function that records its arguments. */
static const char *logger_sql =
	"create table evlog(n serial, q text, t text, d text, e1 text, e2 text, e3 text, e4 text);"
	"create or replace function pgq.insert_event(queue_name text, ev_type text, ev_data text,"
	"  ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text) returns bigint"
	" language plpgsql as $$ begin insert into evlog(q, t, d, e1, e2, e3, e4)"
	" values (queue_name, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4);"
	" return 1; end $$;";

/* All logged events since the last call, one line each: type|data|e1|e2|e3|e4 (NULL as ~). */
static const char *events_sql =
	"with d as (delete from evlog returning *)"
	" select coalesce(string_agg(concat_ws('|', coalesce(t, '~'), coalesce(d, '~'), coalesce(e1, '~'),"
	"   coalesce(e2, '~'), coalesce(e3, '~'), coalesce(e4, '~')), E'\\n' order by n), '') from d";

static PGconn *logger_db(void)
{
	PGconn *c = pgt_connect(pgt_db_new());
	pgt_exec(c, logger_sql);
	pgt_exec(c, "set client_min_messages = warning");
	return c;
}

static void expect_events(PGconn *c, const char *expected)
{
	char *got = pgt_value(c, events_sql);
	ck_assert_str_eq(got, expected);
	free(got);
}

static void expect_error(PGconn *c, const char *sql, const char *msg)
{
	char *got = pgt_error(c, sql);
	ck_assert_str_eq(got, msg);
	free(got);
}

static const char *row_table =
	"create table t(id int4 primary key, txt text, val text, b bool, by bytea);";

START_TEST(test_logutriga_encoding)
{
	PGconn *c = logger_db();
	pgt_exec(c, row_table);
	pgt_exec(c, "create trigger l after insert or update or delete on t for each row"
		    " execute procedure pgq.logutriga('q1')");
	pgt_exec(c, "insert into t values (1, 'text1', null, true, null)");
	expect_events(c, "I:id|id=1&txt=text1&val&b=t&by|public.t|~|~|~");
	pgt_exec(
		c,
		"insert into t values (2, 'a b&c=d%e+f/g~h.i_j-k:{}', '', false, '\\x00ff'::bytea)");
	expect_events(
		c, "I:id|id=2&txt=a+b%26c%3dd%25e%2bf%2fg%7eh.i_j-k%3a%7b%7d&val=&b=f&by=%5cx00ff"
		   "|public.t|~|~|~");
	pgt_exec(
		c,
		"insert into t values (3, E'\\u00fc\\u2603 \\t\\n', E'back\\\\slash''q\"', null, null)");
	expect_events(
		c,
		"I:id|id=3&txt=%c3%bc%e2%98%83+%09%0a&val=back%5cslash%27q%22&b&by|public.t|~|~|~");
	pgt_exec(c, "update t set txt = 'text2' where id = 1");
	expect_events(c, "U:id|id=1&txt=text2&val&b=t&by|public.t|~|~|~");
	pgt_exec(c, "update t set txt = txt where id = 1");
	expect_events(c, "U:id|id=1&txt=text2&val&b=t&by|public.t|~|~|~");
	pgt_exec(c, "delete from t where id = 1");
	expect_events(c, "D:id|id=1&txt=text2&val&b=t&by|public.t|~|~|~");
	expect_error(c, "update t set id = 10 where id = 2", "primary key update not allowed");
	PQfinish(c);
}
END_TEST

START_TEST(test_sqltriga_encoding)
{
	PGconn *c = logger_db();
	pgt_exec(c, "create table t(id int4, k2 text, \"Odd Col\" text, val text, n numeric,"
		    " primary key (k2, id))");
	pgt_exec(c, "create trigger s after insert or update or delete on t for each row"
		    " execute procedure pgq.sqltriga('q1')");
	pgt_exec(c, "insert into t values (1, 'a', 'x''y', null, 1.50)");
	expect_events(
		c,
		"I|(id,k2,\"Odd Col\",val,n) values ('1','a','x''y',null,'1.50')|public.t|~|~|~");
	pgt_exec(c, "update t set val = E'back\\\\slash', \"Odd Col\" = null");
	expect_events(
		c,
		"U|\"Odd Col\"=NULL,val=E'back\\\\slash' where id='1' and k2='a'|public.t|~|~|~");
	pgt_exec(c, "update t set n = n");
	expect_events(c, "U|id='1' where id='1' and k2='a'|public.t|~|~|~");
	pgt_exec(c, "delete from t");
	expect_events(c, "D|id='1' and k2='a'|public.t|~|~|~");
	/* a pkey= column that may be NULL: the C triggers refuse such keys */
	pgt_exec(c, "create table nk(id int, v text)");
	pgt_exec(c, "create trigger s after insert or update or delete on nk for each row"
		    " execute procedure pgq.sqltriga('q1', 'pkey=id')");
	pgt_exec(c, "insert into nk values (null, 'x')");
	expect_events(c, "I|(id,v) values (null,'x')|public.nk|~|~|~");
	expect_error(c, "update nk set v = 'y'", "logtriga: Unexpected NULL key value");
	expect_error(c, "delete from nk", "logtriga: Unexpected NULL key value");
	PQfinish(c);
}
END_TEST

START_TEST(test_jsontriga_encoding)
{
	PGconn *c = logger_db();
	pgt_exec(c, "set timezone = 'UTC'; set datestyle = 'German, DMY'");
	pgt_exec(
		c,
		"create table t(id int8 primary key, i2 int2, f float8, nu numeric, b bool, t text,"
		" d date, ts timestamp, tz timestamptz, js json, ar int[], by bytea, iv interval)");
	pgt_exec(c, "create trigger j after insert or update or delete on t for each row"
		    " execute procedure pgq.jsontriga('q1', 'backup')");
	pgt_exec(
		c,
		"insert into t values (1, -2, 1.5, 10.10, true, E'q\"\\\\\\n\\u00fc', '2009-09-19',"
		" '2009-09-19 11:59:48.599', '2009-09-19 11:59:48.599+00', '{\"a\": 1}', '{1,NULL}',"
		" '\\x01', '1 day')");
	expect_events(
		c,
		"{\"op\":\"INSERT\",\"table\":[\"public\",\"t\"],\"pkey\":[\"id\"]}|"
		"{\"id\":1,\"i2\":-2,\"f\":\"1.5\",\"nu\":\"10.10\",\"b\":true,\"t\":\"q\\\"\\\\\\n\u00fc\","
		"\"d\":\"2009-09-19\",\"ts\":\"2009-09-19T11:59:48.599\","
		"\"tz\":\"2009-09-19T11:59:48.599+00:00\",\"js\":\"{\\\"a\\\": 1}\",\"ar\":\"{1,NULL}\","
		"\"by\":\"\\\\x01\",\"iv\":\"1 day\"}|public.t|~|~|~");
	pgt_exec(c, "update t set b = null, i2 = null");
	expect_events(
		c,
		"{\"op\":\"UPDATE\",\"table\":[\"public\",\"t\"],\"pkey\":[\"id\"]}|"
		"{\"id\":1,\"i2\":null,\"f\":\"1.5\",\"nu\":\"10.10\",\"b\":null,\"t\":\"q\\\"\\\\\\n\u00fc\","
		"\"d\":\"2009-09-19\",\"ts\":\"2009-09-19T11:59:48.599\","
		"\"tz\":\"2009-09-19T11:59:48.599+00:00\",\"js\":\"{\\\"a\\\": 1}\",\"ar\":\"{1,NULL}\","
		"\"by\":\"\\\\x01\",\"iv\":\"1 day\"}|public.t|"
		"{\"id\":1,\"i2\":-2,\"f\":\"1.5\",\"nu\":\"10.10\",\"b\":true,\"t\":\"q\\\"\\\\\\n\u00fc\","
		"\"d\":\"2009-09-19\",\"ts\":\"2009-09-19T11:59:48.599\","
		"\"tz\":\"2009-09-19T11:59:48.599+00:00\",\"js\":\"{\\\"a\\\": 1}\",\"ar\":\"{1,NULL}\","
		"\"by\":\"\\\\x01\",\"iv\":\"1 day\"}|~|~");
	pgt_exec(c, "create table nok(a int, b text)");
	pgt_exec(c, "create trigger j after insert or update or delete on nok for each row"
		    " execute procedure pgq.jsontriga('q1')");
	pgt_exec(c, "insert into nok values (1, null)");
	expect_events(c, "{\"op\":\"INSERT\",\"table\":[\"public\",\"nok\"],\"pkey\":[]}|"
			 "{\"a\":1,\"b\":null}|public.nok|~|~|~");
	expect_error(c, "update nok set a = 2", "Update/Delete on table without pkey");
	expect_error(c, "delete from nok", "Update/Delete on table without pkey");
	PQfinish(c);
}
END_TEST

START_TEST(test_options_ignore_pkey_backup)
{
	PGconn *c = logger_db();
	pgt_exec(c, "create table t(id int, x text, y text, z int)");
	pgt_exec(c, "create trigger l after insert or update or delete on t for each row"
		    " execute procedure pgq.logutriga('q1', 'ignore=y', 'pkey=z,id', 'backup')");
	pgt_exec(c, "create trigger s after insert or update or delete on t for each row"
		    " execute procedure pgq.sqltriga('q1', 'ignore=y', 'pkey=z,id', 'backup')");
	pgt_exec(c, "insert into t values (1, 'a', 'b', 2)");
	expect_events(c, "I:z,id|id=1&x=a&z=2|public.t|~|~|~\n"
			 "I|(id,x,z) values ('1','a','2')|public.t|~|~|~");
	/* only the ignored column changed: no event from either */
	pgt_exec(c, "update t set y = 'bb'");
	expect_events(c, "");
	pgt_exec(c, "update t set x = 'aa', y = 'bbb'");
	expect_events(c, "U:z,id|id=1&x=aa&z=2|public.t|id=1&x=a&z=2|~|~\n"
			 "U|x='aa' where id='1' and z='2'|public.t|id=1&x=a&z=2|~|~");
	expect_error(c, "update t set z = 3", "primary key update not allowed");
	pgt_exec(c, "delete from t");
	expect_events(c, "D:z,id|id=1&x=aa&z=2|public.t|~|~|~\n"
			 "D|id='1' and z='2'|public.t|~|~|~");
	PQfinish(c);
}
END_TEST

START_TEST(test_options_skip_deny_when_overrides)
{
	PGconn *c = logger_db();
	pgt_exec(c, "create table t(id int primary key, x text, n numeric, b bool)");
	/* SKIP in a BEFORE trigger: event queued, row change suppressed */
	pgt_exec(c, "create trigger a before insert or update or delete on t for each row"
		    " execute procedure pgq.logutriga('q1', 'SKIP')");
	pgt_exec(c, "insert into t values (1, 'one')");
	expect_events(c, "I:id|id=1&x=one&n&b|public.t|~|~|~");
	ck_assert_int_eq(pgt_int(c, "select count(*) from t"), 0);
	pgt_exec(c, "drop trigger a on t");
	/* BEFORE without SKIP returns the row */
	pgt_exec(c, "create trigger a before insert or update or delete on t for each row"
		    " execute procedure pgq.sqltriga('q1')");
	ck_assert_int_eq(pgt_int(c, "with i as (insert into t values (2, 'two') returning id)"
				    " select id from i"),
			 2);
	ck_assert_int_eq(pgt_int(c, "with d as (delete from t returning id) select id from d"), 2);
	expect_events(c, "I|(id,x,n,b) values ('2','two',null,null)|public.t|~|~|~\n"
			 "D|id='2'|public.t|~|~|~");
	pgt_exec(c, "drop trigger a on t");
	pgt_exec(
		c,
		"create trigger a after insert on t for each row execute procedure pgq.logutriga('q1', 'SKIP')");
	expect_error(c, "insert into t values (3)", "SKIP does not work in AFTER trigger.");
	pgt_exec(c, "drop trigger a on t");
	pgt_exec(c, "create trigger a after insert or update or delete on t for each row"
		    " execute procedure pgq.logutriga('q1', 'deny')");
	expect_error(c, "insert into t values (3)",
		     "Table 'public.t' to queue 'q1': change not allowed (INSERT)");
	pgt_exec(c, "drop trigger a on t");
	pgt_exec(c, "insert into t values (3, 'three', 2.5, true)");
	pgt_exec(c, "create trigger a after insert or update or delete on t for each row"
		    " execute procedure pgq.logutriga('q1', 'deny')");
	expect_error(c, "update t set x = 'y'",
		     "Table 'public.t' to queue 'q1': change not allowed (UPDATE)");
	expect_error(c, "delete from t",
		     "Table 'public.t' to queue 'q1': change not allowed (DELETE)");
	pgt_exec(c, "drop trigger a on t");
	/* expressions see the row (OLD for DELETE); NULL results give NULL fields */
	pgt_exec(
		c,
		"create trigger a after insert or update or delete on t for each row"
		" execute procedure pgq.logutriga('q1', 'ev_type=''my:'' || id', 'ev_data=upper(x)',"
		" 'ev_extra1=x', 'ev_extra2=n*2', 'ev_extra3=b', 'ev_extra4=null', 'when=id > 3')");
	pgt_exec(c, "insert into t values (4, 'four', 1.5, false)");
	pgt_exec(c, "insert into t values (1, 'one', 1.5, false)");
	pgt_exec(c, "delete from t where id = 4");
	expect_events(c, "my:4|FOUR|four|3.0|f|~\nmy:4|FOUR|four|3.0|f|~");
	pgt_exec(c, "drop trigger a on t");
	pgt_exec(
		c,
		"create trigger a after insert on t for each row execute procedure pgq.jsontriga('q1', 'when=n')");
	expect_error(c, "insert into t values (5, 'x', 1)",
		     "when= query result must be boolean, got=1700");
	pgt_exec(c, "drop trigger a on t");
	pgt_exec(
		c,
		"create trigger a after insert on t for each row execute procedure pgq.jsontriga('q1', 'when=b')");
	expect_error(c, "insert into t values (5, 'x', 1)", "when= should not be NULL");
	pgt_exec(c, "insert into t values (5, 'x', 1, false)");
	expect_events(c, "");
	pgt_exec(c, "drop trigger a on t");
	/* argument errors */
	pgt_exec(
		c,
		"create trigger a after insert on t for each row execute procedure pgq.logutriga('q1', 'skip')");
	expect_error(c, "insert into t values (6)", "bad param to pgq trigger");
	pgt_exec(c, "drop trigger a on t");
	pgt_exec(
		c,
		"create trigger a after insert on t for each row execute procedure pgq.logutriga()");
	expect_error(c, "insert into t values (6)",
		     "pgq trigger must have destination queue as argument");
	pgt_exec(c, "drop trigger a on t");
	pgt_exec(
		c,
		"create trigger a after insert on t for each statement execute procedure pgq.sqltriga('q1')");
	expect_error(c, "insert into t values (6)",
		     "pgq Ins/Upd/Del trigger must be fired FOR EACH ROW");
	PQfinish(c);
}
END_TEST

START_TEST(test_magic_columns)
{
	PGconn *c = logger_db();
	pgt_exec(c,
		 "create table t(id int primary key, x text, _pgq_ev_type text, _pgq_ev_data text,"
		 " _pgq_ev_extra1 text, _pgq_ev_extra4 text)");
	pgt_exec(c, "create trigger l after insert or update or delete on t for each row"
		    " execute procedure pgq.logutriga('q1', 'ev_extra4=''arg wins''')");
	pgt_exec(c, "insert into t values (1, 'x', 'TT', 'DD', 'E1', 'E4')");
	expect_events(c, "TT|DD|E1|~|~|arg wins");
	pgt_exec(c, "insert into t values (2, 'y', null, null, null, null)");
	expect_events(c, "~|~|~|~|~|arg wins");
	pgt_exec(c, "create table bad(id int primary key, _pgq_ev_bogus text)");
	pgt_exec(
		c,
		"create trigger l after insert on bad for each row execute procedure pgq.logutriga('q1')");
	expect_error(c, "insert into bad values (1, 'x')", "Unknown magic column: _pgq_ev_bogus");
	PQfinish(c);
}
END_TEST

START_TEST(test_truncate)
{
	PGconn *c = logger_db();
	pgt_exec(c, "create table t(id int, name text, primary key (name, id))");
	pgt_exec(
		c,
		"create trigger l after truncate on t for each statement execute procedure pgq.logutriga('q1')");
	pgt_exec(
		c,
		"create trigger s after truncate on t for each statement execute procedure pgq.sqltriga('q2')");
	pgt_exec(
		c,
		"create trigger j after truncate on t for each statement execute procedure pgq.jsontriga('q3')");
	pgt_exec(c, "truncate t");
	expect_events(
		c,
		"{\"op\":\"TRUNCATE\",\"table\":[\"public\",\"t\"],\"pkey\":[\"name\",\"id\"]}|{}|public.t|~|~|~\n"
		"R||public.t|~|~|~\nR||public.t|~|~|~");
	pgt_exec(c, "drop trigger l on t; drop trigger s on t; drop trigger j on t");
	static const struct {
		const char *arg, *msg;
	} bad[] = {
		{"'ignore=id'", "Column ignore does not make sense for truncate trigger"},
		{"'pkey=id'", "Custom pkey_list does not make sense for truncate trigger"},
		{"'backup'", "Backup does not make sense for truncate trigger"},
		{"'when=true'", "Custom expressions do not make sense for truncater trigger"},
		{"'ev_extra1=1'", "Custom expressions do not make sense for truncater trigger"},
		{"'deny'", "Table 'public.t' to queue 'q1': change not allowed (TRUNCATE)"},
		{"'SKIP'", "SKIP does not work in AFTER trigger."},
	};
	char sql[256];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(sql, sizeof(sql),
			 "create trigger x after truncate on t for each statement"
			 " execute procedure pgq.logutriga('q1', %s)",
			 bad[i].arg);
		pgt_exec(c, sql);
		expect_error(c, "truncate t", bad[i].msg);
		pgt_exec(c, "drop trigger x on t");
	}
	/* SKIP is fine in a BEFORE TRUNCATE trigger, the truncate still happens */
	pgt_exec(c, "insert into t values (1, 'a')");
	pgt_exec(c, "create trigger x before truncate on t for each statement"
		    " execute procedure pgq.sqltriga('q1', 'SKIP')");
	pgt_exec(c, "truncate t");
	expect_events(c, "R||public.t|~|~|~");
	ck_assert_int_eq(pgt_int(c, "select count(*) from t"), 0);
	PQfinish(c);
}
END_TEST

START_TEST(test_replication_role)
{
	PGconn *c = logger_db();
	pgt_exec(c, "create table t(id int primary key, x text)");
	pgt_exec(
		c,
		"create trigger a after insert or update on t for each row execute procedure pgq.logutriga('q1')");
	pgt_exec(c, "create trigger b before insert or update on t for each row"
		    " execute procedure pgq.logutriga('q1', 'SKIP')");
	/* local: the trigger does nothing and lets the row through, even with SKIP */
	pgt_exec(c, "set session_replication_role = 'local'");
	pgt_exec(c, "insert into t values (1, 'local')");
	expect_events(c, "");
	ck_assert_int_eq(pgt_int(c, "select count(*) from t"), 1);
	/* replica: ordinary triggers do not fire; ALWAYS triggers queue normally */
	pgt_exec(c, "set session_replication_role = 'replica'");
	pgt_exec(c, "insert into t values (2, 'replica')");
	expect_events(c, "");
	pgt_exec(c, "alter table t enable always trigger a");
	pgt_exec(c, "insert into t values (3, 'always')");
	expect_events(c, "I:id|id=3&x=always|public.t|~|~|~");
	pgt_exec(c, "reset session_replication_role");
	PQfinish(c);
}
END_TEST

START_TEST(test_cache_follows_ddl)
{
	PGconn *c = logger_db();
	pgt_exec(c, "create table t(id int primary key, a text)");
	pgt_exec(
		c,
		"create trigger l after insert or update on t for each row execute procedure pgq.logutriga('q1')");
	pgt_exec(c, "insert into t values (1, 'a')");
	pgt_exec(c, "alter table t add column b int");
	pgt_exec(c, "insert into t values (2, 'a', 5)");
	pgt_exec(c, "alter table t drop column a");
	pgt_exec(c, "insert into t values (3, 6)");
	pgt_exec(c, "alter table t rename column b to bb");
	pgt_exec(c, "alter table t alter column bb type bool using bb > 5");
	pgt_exec(c, "insert into t values (4, true)");
	pgt_exec(c, "delete from t where bb is null");
	pgt_exec(c, "alter table t drop constraint t_pkey, add primary key (bb, id)");
	pgt_exec(c, "insert into t values (5, false)");
	/* same trigger name, new arguments */
	pgt_exec(c, "drop trigger l on t");
	pgt_exec(
		c,
		"create trigger l after insert or update on t for each row execute procedure pgq.logutriga('q9')");
	pgt_exec(c, "insert into t values (6, false)");
	char *ev = pgt_value(
		c, "select string_agg(q || ' ' || t || ' ' || d, ',' order by n) from evlog");
	ck_assert_str_eq(ev,
			 "q1 I:id id=1&a=a,q1 I:id id=2&a=a&b=5,q1 I:id id=3&b=6,q1 I:id id=4&bb=t,"
			 "q1 I:bb,id id=5&bb=f,q9 I:bb,id id=6&bb=f");
	free(ev);
	PQfinish(c);
}
END_TEST

/* Without the logger: events land in the queue and come out of a batch. */
START_TEST(test_delivery_through_queue)
{
	PGconn *c = pgt_connect(pgt_db_new());
	pgt_exec(c, "set client_min_messages = warning");
	pgt_exec(c, "select pgq.create_queue('tq')");
	pgt_exec(c,
		 "update pgq.queue set queue_ticker_max_lag = '0', queue_ticker_idle_period = '0'");
	pgt_exec(c, "select pgq.register_consumer('tq', 'c1')");
	pgt_exec(c, "create table t(id int primary key, x text)");
	pgt_exec(
		c,
		"create trigger l after insert on t for each row execute procedure pgq.logutriga('tq')");
	pgt_exec(
		c,
		"create trigger j after insert on t for each row execute procedure pgq.jsontriga('tq')");
	pgt_exec(c, "insert into t values (1, 'a b')");
	pgt_exec(c, "select pgq.ticker('tq')");
	char *ev = pgt_value(
		c,
		"select string_agg(ev_type || ' ' || ev_data || ' ' || ev_extra1, ',' order by ev_id)"
		" from pgq.get_batch_events(pgq.next_batch('tq', 'c1'))");
	/* triggers fire in name order: j before l */
	ck_assert_str_eq(ev, "{\"op\":\"INSERT\",\"table\":[\"public\",\"t\"],\"pkey\":[\"id\"]}"
			     " {\"id\":1,\"x\":\"a b\"} public.t,I:id id=1&x=a+b public.t");
	free(ev);
	/* producers need pgq_writer: the trigger runs insert_event as the writing user */
	pgt_exec(c, "create role trg_nowriter; grant all on t to trg_nowriter");
	pgt_exec(c, "set role trg_nowriter");
	char *err = pgt_error(c, "insert into t values (2, 'x')");
	ck_assert_ptr_nonnull(strstr(err, "permission denied"));
	free(err);
	pgt_exec(c, "reset role");
	pgt_exec(c, "grant pgq_writer to trg_nowriter; set role trg_nowriter");
	pgt_exec(c, "insert into t values (2, 'x')");
	pgt_exec(c, "reset role");
	PQfinish(c);
}
END_TEST

/*
 * Differential run: the same DML in a database with Debian's C pgq and in one
 * of ours, both with the logging insert_event; the logs must be identical.
 */
static const char *diff_dml[] = {
	"create type mood as enum ('sad', 'happy')",
	"create domain posint as int check (value > 0)",
	"create table ty(id int8 primary key, i2 int2, i4 int4, f4 float4, f8 float8, nu numeric, b bool,"
	" t text, vc varchar(10), ch char(5), by bytea, d date, ts timestamp, tz timestamptz, iv interval,"
	" js json, jb jsonb, ar int[], tar text[], ip inet, ci cidr, u uuid, m mood, dom posint, pt point,"
	" rng int4range, \"Weird Col\" text, \"a=b&c\" text, \"\u00fc\" text)",
	"create trigger l after insert or update or delete on ty for each row execute procedure pgq.logutriga('qq', 'backup')",
	"create trigger s after insert or update or delete on ty for each row execute procedure pgq.sqltriga('qq', 'backup')",
	"create trigger j after insert or update or delete on ty for each row execute procedure pgq.jsontriga('qq', 'backup')",
	"insert into ty(id) values (1)",
	"insert into ty values (2, -3, 2147483647, 1.5, -2.25e-10, 12345.678900, true,"
	" 'a b&c=d%e+f/g?h#i ~!@$^*()[]{}|\\;:''\"<>,._-', 'varchar', 'ab', '\\x00ff10'::bytea, '2020-02-29',"
	" '2009-09-19 11:59:48.599', '2009-09-19 11:59:48.599+03', '1 day 02:03:04', '{\"a\": [1, \"x\"]}',"
	" '{\"b\": null, \"a\": 1}', '{1,NULL,3}', '{\"a b\",\"c,d\",NULL,\"e\\\"f\"}', '10.0.0.1/32', '10.0.0.0/8',"
	" 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', 7, '(1.5,2)', '[1,5)', 'weird', 'eq',"
	" '\u00fcn\u00efc\u00f6d\u00e9 \u2603 \U0001D11E')",
	"insert into ty(id, t, f8, f4, nu, d, ts, tz) values (3, E'tab\\there\\nnl\\\\back\\r\\x01', 'NaN',"
	" '-Infinity', 'NaN', 'infinity', '-infinity', 'infinity')",
	"insert into ty(id, t, b, js, jb) values (4, '', false, '\"str\"', '\"s\\u00e9\"')",
	"update ty set t = 'changed', b = null where id = 2",
	"update ty set id = id where id = 1",
	"update ty set js = '{\"a\":1}', ar = '{1,2}', pt = '(0,0)' where id = 3",
	"update ty set \"\u00fc\" = 'x', nu = 1.0 where id = 3",
	"update ty set nu = 1.00 where id = 3",
	"delete from ty where id = 2",
	"set datestyle = 'SQL, DMY'",
	"set timezone = 'Asia/Kolkata'",
	"insert into ty(id, d, ts, tz, iv) values (5, '2021-03-04', '2021-03-04 05:06:07.891011',"
	" '2021-03-04 05:06:07.891011+00', '-1 year 2 mons')",
	"reset datestyle",
	"reset timezone",
	"truncate ty",
	"create table k2(a int, b text, c int, primary key (c, a))",
	"create trigger l after insert or update or delete on k2 for each row execute procedure pgq.logutriga('qq', 'ignore=b')",
	"create trigger s after insert or update or delete on k2 for each row execute procedure pgq.sqltriga('qq')",
	"create trigger j after insert or update or delete on k2 for each row execute procedure pgq.jsontriga('qq', 'pkey=c')",
	"insert into k2 values (1, 'x', 2), (3, null, 4)",
	"update k2 set b = b",
	"update k2 set b = 'y' where a = 3",
	"delete from k2",
	"create table mg(id int primary key, x text, _pgq_ev_type text, _pgq_ev_extra3 text)",
	"create trigger l after insert or update or delete on mg for each row execute procedure pgq.logutriga('qq')",
	"create trigger s after insert or update or delete on mg for each row execute procedure pgq.sqltriga('qq', 'ignore=x')",
	"insert into mg values (1, 'x', 'TT', 'E3')",
	"update mg set _pgq_ev_type = 'UU'",
	"update mg set x = 'z'",
	"delete from mg",
	/* no interval/citext-like columns: UPDATE change detection runs without EXECUTE */
	"create type pair as (a int, b text)",
	"create table e2(id int primary key, nu numeric, f float8, jb jsonb, ar numeric[], t text, cp pair)",
	"create trigger s after insert or update or delete on e2 for each row execute procedure pgq.sqltriga('qq')",
	"create trigger l after insert or update or delete on e2 for each row execute procedure pgq.logutriga('qq', 'ignore=t', 'backup')",
	"create trigger j after insert or update or delete on e2 for each row execute procedure pgq.jsontriga('qq', 'backup')",
	"insert into e2 values (1, 1.0, 0, '{\"a\": 1.0}', '{1.0}', 'x', '(1,\"x,y\")')",
	"update e2 set nu = 1.00",
	"update e2 set f = '-0'",
	"update e2 set jb = '{\"a\": 1.00}'",
	"update e2 set ar = '{1.00}'",
	"update e2 set t = 'y'",
	"update e2 set t = 'z', nu = 2",
	"update e2 set cp = '(2,\"a\\\\b\"\"c\")'",
	"delete from e2",
};

static char *run_diff_dml(const char *db, bool ours)
{
	PGconn *c = pgt_connect(db);
	char *log;
	if (!ours)
		pgt_exec(c, "create extension pgq");
	pgt_exec(c, logger_sql);
	pgt_exec(c, "set client_min_messages = warning");
	for (size_t i = 0; i < sizeof(diff_dml) / sizeof(diff_dml[0]); i++)
		pgt_exec(c, diff_dml[i]);
	log = pgt_value(
		c,
		"select string_agg(concat_ws('|', q, t, coalesce(d, '~'), coalesce(e1, '~'),"
		" coalesce(e2, '~'), coalesce(e3, '~'), coalesce(e4, '~')), E'\\n' order by n) from evlog");
	PQfinish(c);
	return log;
}

START_TEST(test_differential_vs_c_triggers)
{
	const char *cdb = pgt_db_new_empty();
	PGconn *c = pgt_connect(cdb);
	if (pgt_int(c, "select count(*) from pg_available_extensions where name = 'pgq'") == 0)
		ck_abort_msg("extension pgq (Debian's C PgQ, the reference) is not installed: "
			     "install postgresql-15-pgq3 (listed in scripts/packages.txt)");
	PQfinish(c);
	char *theirs = run_diff_dml(cdb, false);
	char *ours = run_diff_dml(pgt_db_new(), true);
	ck_assert_int_gt((int)strlen(theirs), 1000);
	ck_assert_str_eq(ours, theirs);
	free(theirs);
	free(ours);
}
END_TEST

/*
 * Every error a trigger raises, on Debian's C triggers and on ours: the SQLSTATE and
 * the message must be the same (PgQ's C triggers raise XX000; PL/pgSQL's default
 * would be P0001). Statements run one by one; each outcome is "ok" or
 * "SQLSTATE: message".
 */
static const char *error_dml[] = {
	"create table t(id int primary key, x text, n numeric, b bool)",
	"insert into t values (1,'a',1,true)",
	"create trigger a after insert or update or delete on t for each row execute procedure pgq.logutriga('q1')",
	"update t set id = 2",
	"drop trigger a on t",
	"create trigger a after insert or update or delete on t for each row execute procedure pgq.sqltriga('q1')",
	"update t set id = 2",
	"drop trigger a on t",
	"create trigger a after insert or update or delete on t for each row execute procedure pgq.jsontriga('q1')",
	"update t set id = 2",
	"drop trigger a on t",
	"create trigger a after insert or update or delete on t for each row execute procedure pgq.logutriga('q1','deny')",
	"insert into t values (3)",
	"update t set x = 'y'",
	"delete from t",
	"drop trigger a on t",
	"create trigger a after insert or update or delete on t for each row execute procedure pgq.sqltriga('q1','deny')",
	"insert into t values (3)",
	"drop trigger a on t",
	"create trigger a after insert or update or delete on t for each row execute procedure pgq.jsontriga('q1','deny')",
	"insert into t values (3)",
	"drop trigger a on t",
	"create trigger a after insert on t for each row execute procedure pgq.logutriga('q1','SKIP')",
	"insert into t values (3)",
	"drop trigger a on t",
	"create trigger a after insert on t for each row execute procedure pgq.sqltriga('q1','SKIP')",
	"insert into t values (3)",
	"drop trigger a on t",
	"create trigger a after insert on t for each row execute procedure pgq.jsontriga('q1','SKIP')",
	"insert into t values (3)",
	"drop trigger a on t",
	"create trigger a after insert on t for each row execute procedure pgq.jsontriga('q1','when=n')",
	"insert into t values (5,'x',1)",
	"drop trigger a on t",
	"create trigger a after insert on t for each row execute procedure pgq.logutriga('q1','when=b')",
	"insert into t values (5,'x',1)",
	"drop trigger a on t",
	"create trigger a after insert on t for each row execute procedure pgq.logutriga('q1','skip')",
	"insert into t values (6)",
	"drop trigger a on t",
	"create trigger a after insert on t for each row execute procedure pgq.sqltriga('q1','bogus=1')",
	"insert into t values (6)",
	"drop trigger a on t",
	"create trigger a after insert on t for each row execute procedure pgq.logutriga()",
	"insert into t values (6)",
	"drop trigger a on t",
	"create trigger a after insert on t for each row execute procedure pgq.jsontriga()",
	"insert into t values (6)",
	"drop trigger a on t",
	"create trigger a after insert on t for each statement execute procedure pgq.sqltriga('q1')",
	"insert into t values (6)",
	"drop trigger a on t",
	"create trigger a after insert on t for each statement execute procedure pgq.logutriga('q1')",
	"insert into t values (6)",
	"drop trigger a on t",
	"create trigger a after insert on t for each statement execute procedure pgq.jsontriga('q1')",
	"insert into t values (6)",
	"drop trigger a on t",
	"create trigger a after truncate on t for each statement execute procedure pgq.logutriga('q1','ignore=id')",
	"truncate t",
	"drop trigger a on t",
	"create trigger a after truncate on t for each statement execute procedure pgq.sqltriga('q1','pkey=id')",
	"truncate t",
	"drop trigger a on t",
	"create trigger a after truncate on t for each statement execute procedure pgq.jsontriga('q1','backup')",
	"truncate t",
	"drop trigger a on t",
	"create trigger a after truncate on t for each statement execute procedure pgq.logutriga('q1','when=true')",
	"truncate t",
	"drop trigger a on t",
	"create trigger a after truncate on t for each statement execute procedure pgq.logutriga('q1','deny')",
	"truncate t",
	"drop trigger a on t",
	"create trigger a after truncate on t for each statement execute procedure pgq.logutriga('q1','SKIP')",
	"truncate t",
	"drop trigger a on t",
	"create table nk(id int, v text)",
	"insert into nk values (null, 'x')",
	"create trigger s after insert or update or delete on nk for each row execute procedure pgq.sqltriga('q1', 'pkey=id')",
	"update nk set v = 'y'",
	"delete from nk",
	"drop trigger s on nk",
	"create trigger s after insert or update or delete on nk for each row execute procedure pgq.logutriga('q1', 'pkey=id')",
	"update nk set v = 'y'",
	"drop trigger s on nk",
	"create trigger s after insert or update or delete on nk for each row execute procedure pgq.jsontriga('q1', 'pkey=id')",
	"update nk set v = 'y'",
	"drop trigger s on nk",
	"create trigger s after insert or update or delete on nk for each row execute procedure pgq.jsontriga('q1')",
	"update nk set v = 'y'",
	"delete from nk",
	"drop trigger s on nk",
	"create trigger s after insert or update or delete on nk for each row execute procedure pgq.logutriga('q1')",
	"update nk set v = 'y'",
	"drop trigger s on nk",
	"create trigger s after insert or update or delete on nk for each row execute procedure pgq.sqltriga('q1')",
	"update nk set v = 'y'",
	"drop trigger s on nk",
	"create trigger s after insert or update or delete on nk for each row execute procedure pgq.sqltriga('q1', 'pkey=nosuch')",
	"insert into nk values (1,'a')",
	"update nk set v = 'y'",
	"drop trigger s on nk",
	"create table bad(id int primary key, _pgq_ev_bogus text)",
	"create trigger l after insert on bad for each row execute procedure pgq.logutriga('q1')",
	"insert into bad values (1, 'x')",
	"drop trigger l on bad",
	"create trigger l after insert on bad for each row execute procedure pgq.sqltriga('q1')",
	"insert into bad values (1, 'x')",
	"drop trigger l on bad",
	"create trigger l after insert on bad for each row execute procedure pgq.jsontriga('q1')",
	"insert into bad values (1, 'x')",
	"drop trigger l on bad",
	"create trigger a after insert on t for each row execute procedure pgq.logutriga('q1','ev_extra1=nosuchcol')",
	"insert into t values (7)",
	"drop trigger a on t",
	"create trigger a after insert on t for each row execute procedure pgq.logutriga('q1','when=1/0 = 1')",
	"insert into t values (7)",
	"drop trigger a on t",
	"create trigger a after insert on t for each row execute procedure pgq.logutriga('q1','ev_type=x(')",
	"insert into t values (7)",
	"drop trigger a on t",
	"create view v as select * from t",
	"create trigger a instead of insert on v for each row execute procedure pgq.logutriga('q1')",
	"insert into v values (8)",
	"drop trigger a on v",
};

/* The known exception: a syntax error in a user expression names a different token,
 * since ours wraps the expression in its own SQL (same SQLSTATE 42601). */
static const char *syntax_err_stmt =
	"create trigger a after insert on t for each row execute procedure "
	"pgq.logutriga('q1','ev_type=x(')";

static char *run_error_dml(const char *db, bool ours)
{
	PGconn *c = pgt_connect(db);
	size_t cap = 65536, len = 0;
	char *log = malloc(cap);
	bool syntax_case = false;
	log[0] = 0;
	if (!ours)
		pgt_exec(c, "create extension pgq");
	pgt_exec(c, logger_sql);
	pgt_exec(c, "set client_min_messages = warning");
	for (size_t i = 0; i < sizeof(error_dml) / sizeof(error_dml[0]); i++) {
		PGresult *r = PQexec(c, error_dml[i]);
		char line[1024];
		if (strcmp(error_dml[i], syntax_err_stmt) == 0)
			syntax_case = true;
		else if (strncmp(error_dml[i], "drop trigger", 12) == 0)
			syntax_case = false;
		if (PQresultStatus(r) == PGRES_FATAL_ERROR)
			snprintf(line, sizeof(line), "%zu %s: %s\n", i,
				 PQresultErrorField(r, PG_DIAG_SQLSTATE),
				 syntax_case ? "(syntax error)"
					     : PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
		else
			snprintf(line, sizeof(line), "%zu ok\n", i);
		PQclear(r);
		ck_assert_uint_lt(len + strlen(line), cap);
		memcpy(log + len, line, strlen(line) + 1);
		len += strlen(line);
	}
	PQfinish(c);
	return log;
}

START_TEST(test_differential_errors_vs_c_triggers)
{
	const char *cdb = pgt_db_new_empty();
	PGconn *c = pgt_connect(cdb);
	if (pgt_int(c, "select count(*) from pg_available_extensions where name = 'pgq'") == 0)
		ck_abort_msg("extension pgq (Debian's C PgQ, the reference) is not installed: "
			     "install postgresql-15-pgq3 (listed in scripts/packages.txt)");
	PQfinish(c);
	char *theirs = run_error_dml(cdb, false);
	char *ours = run_error_dml(pgt_db_new(), true);
	/* the list provokes 39 errors, 36 of them the triggers' own (XX000) */
	int n_err = 0, n_xx = 0;
	for (const char *p = theirs; *p;) {
		const char *sp = strchr(p, ' ') + 1;
		if (strncmp(sp, "ok", 2) != 0)
			n_err++;
		if (strncmp(sp, "XX000:", 6) == 0)
			n_xx++;
		p = strchr(p, '\n') + 1;
	}
	ck_assert_int_eq(n_err, 39);
	ck_assert_int_eq(n_xx, 36);
	/* first differing line, with its statement (the whole log is too long for Check) */
	for (const char *a = theirs, *b = ours; *a || *b;) {
		size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
		ck_assert_msg(la == lb && memcmp(a, b, la) == 0, "%s\n  C pgq: %.*s\n  ours:  %.*s",
			      error_dml[atoi(a)], (int)la, a, (int)lb, b);
		a += la + (a[la] != 0);
		b += lb + (b[lb] != 0);
	}
	free(theirs);
	free(ours);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sql_triggers");
	TCase *tc = pgt_tcase("triggers", 120);
	tcase_add_test(tc, test_logutriga_encoding);
	tcase_add_test(tc, test_sqltriga_encoding);
	tcase_add_test(tc, test_jsontriga_encoding);
	tcase_add_test(tc, test_options_ignore_pkey_backup);
	tcase_add_test(tc, test_options_skip_deny_when_overrides);
	tcase_add_test(tc, test_magic_columns);
	tcase_add_test(tc, test_truncate);
	tcase_add_test(tc, test_replication_role);
	tcase_add_test(tc, test_cache_follows_ddl);
	tcase_add_test(tc, test_delivery_through_queue);
	tcase_add_test(tc, test_differential_vs_c_triggers);
	tcase_add_test(tc, test_differential_errors_vs_c_triggers);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
