/*
 * Hostile data on the SQL side: names at and past PostgreSQL's 63-byte identifier
 * limit (compared with Debian's C PgQ 3.5), names with quotes, semicolons and
 * non-ASCII through every function that builds SQL from a name, bytes that are not
 * UTF-8 in a SQL_ASCII database (compared with PgQ's C triggers), and, in the slow
 * suite, a 100 MB event.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqltest.h"

static void quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

static PGconn *conn(const char *db)
{
	PGconn *c = pgt_connect(db);
	PQsetNoticeProcessor(c, quiet, NULL);
	return c;
}

/* Rows, or "SQLSTATE: message" (then rolls back). */
static char *outcome(PGconn *c, const char *sql, int nparams, const char *const *params)
{
	PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
	char *out;
	if (PQresultStatus(r) == PGRES_FATAL_ERROR) {
		const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
		out = malloc(strlen(st) + strlen(m) + 8);
		sprintf(out, "%s: %s", st, m);
		PQclear(r);
		PQclear(PQexec(c, "rollback"));
		return out;
	}
	out = sqlt_format_rows(r);
	PQclear(r);
	return out;
}

static bool have_pgq_extension(PGconn *c)
{
	PGresult *r = PQexec(c, "create extension pgq");
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	return !pgt_missing(!ok, "Debian's pgq extension (postgresql-15-pgq3)");
}

/*
 * Queue and consumer names of 63, 64, 100 and 300 bytes, pairs that share their
 * first 63 bytes (ASCII and multi-byte): nothing is truncated into a collision,
 * and every outcome is PgQ's. $1 and $2 are two names sharing the first 63 bytes.
 */
static const char *const long_steps[] = {
	"select pgq.create_queue($1), pgq.create_queue($2)",
	"select pgq.create_queue($1)",
	"select queue_name = $1, octet_length(queue_name) from pgq.queue order by queue_id",
	"select pgq.set_queue_config($1, 'ticker_max_lag', '0'), pgq.set_queue_config($2, 'ticker_max_lag', '0')",
	"select pgq.register_consumer($1, $1), pgq.register_consumer($1, $2), pgq.register_consumer($2, $1)",
	"select pgq.register_consumer($1, $2)",
	"select pgq.insert_event($1, 't', 'in-1'), pgq.insert_event($2, 't', 'in-2')",
	"select pgq.ticker($1) > 0, pgq.ticker($2) > 0",
	"select pgq.next_batch($1, $1), pgq.next_batch($1, $2), pgq.next_batch($2, $1)",
	"select ev_data from pgq.get_batch_events(pgq.next_batch($1, $1))",
	"select ev_data from pgq.get_batch_events(pgq.next_batch($1, $2))",
	"select ev_data from pgq.get_batch_events(pgq.next_batch($2, $1))",
	"select count(*), count(distinct co_name), min(octet_length(co_name)) from pgq.consumer",
	"select queue_name = $1, consumer_name = $2 from pgq.get_consumer_info($1, $2)",
	"select pgq.finish_batch(pgq.next_batch($1, $2))",
	"select pgq.unregister_consumer($1, $2)",
	"select queue_name = $1, consumer_name = $1 from pgq.get_consumer_info() order by queue_name = $1 desc",
	"select pgq.current_event_table($2)",
	"select pgq.drop_queue($1, true)",
	"select queue_name = $2 from pgq.queue",
	"select pgq.drop_queue($2, true)",
	NULL,
};

START_TEST(test_long_names_match_pgq)
{
	char *pairs[4][2];
	PGconn *ora = conn(pgt_db_new_empty()), *ours = conn(pgt_db_new());
	int npairs = 0;
	if (!have_pgq_extension(ora)) {
		PQfinish(ora);
		PQfinish(ours);
		return;
	}
	/* 64, 100 and 300 bytes, all but the last in common */
	for (int len = 64; len <= 300; len = len == 64 ? 100 : len * 3) {
		pairs[npairs][0] = malloc((size_t)len + 1);
		pairs[npairs][1] = malloc((size_t)len + 1);
		memset(pairs[npairs][0], 'q', (size_t)len);
		memset(pairs[npairs][1], 'q', (size_t)len);
		pairs[npairs][0][len] = pairs[npairs][1][len] = 0;
		pairs[npairs][0][len - 1] = 'A';
		pairs[npairs][1][len - 1] = 'B';
		npairs++;
	}
	/* 40 two-byte characters: the limit falls inside a character */
	{
		const char *u = "\xc3\xbc";
		pairs[npairs][0] = malloc(100);
		pairs[npairs][1] = malloc(100);
		pairs[npairs][0][0] = pairs[npairs][1][0] = 0;
		for (int i = 0; i < 40; i++) {
			strcat(pairs[npairs][0], u);
			strcat(pairs[npairs][1], u);
		}
		strcat(pairs[npairs][0], "\xe2\x98\x83");
		strcat(pairs[npairs][1], "\xe2\x98\x84");
		npairs++;
	}
	for (int p = 0; p < npairs; p++) {
		const char *params[2] = {pairs[p][0], pairs[p][1]};
		for (int i = 0; long_steps[i]; i++) {
			char *a = outcome(ora, long_steps[i], 2, params);
			char *b = outcome(ours, long_steps[i], 2, params);
			ck_assert_msg(strcmp(a, b) == 0,
				      "%zu-byte names, step %d: %s\n  pgq 3.5: %s\n  ours: %s",
				      strlen(params[0]), i, long_steps[i], a, b);
			free(a);
			free(b);
		}
		free(pairs[p][0]);
		free(pairs[p][1]);
	}
	PQfinish(ora);
	PQfinish(ours);
}
END_TEST

/* The same steps, checked for what they must return (not only for agreeing with PgQ). */
START_TEST(test_long_names_stay_apart)
{
	PGconn *c = conn(pgt_db_new());
	char a[101], b[101];
	const char *p[2] = {a, b};
	memset(a, 'n', 100);
	memset(b, 'n', 100);
	a[100] = b[100] = 0;
	a[99] = 'A';
	b[99] = 'B';
	PQclear(PQexecParams(c,
			     "select pgq.create_queue($1), pgq.create_queue($2),"
			     " pgq.set_queue_config($1, 'ticker_max_lag', '0'),"
			     " pgq.set_queue_config($2, 'ticker_max_lag', '0'),"
			     " pgq.register_consumer($1, $1), pgq.register_consumer($1, $2)",
			     2, NULL, p, NULL, NULL, 0));
	/* Events in their own transaction: the first tick was taken in the creating
	 * one, whose snapshot counts that transaction as visible once any later xid
	 * has completed (a transaction is never in its own xip list), so its events
	 * would belong to the first tick and reach no batch. */
	PQclear(PQexecParams(
		c, "select pgq.insert_event($1, 't', 'in-a'), pgq.insert_event($2, 't', 'in-b')", 2,
		NULL, p, NULL, NULL, 0));
	sqlt_eq(c, "select count(*) from pgq.queue", "2");
	sqlt_eq(c, "select count(distinct co_name) from pgq.consumer", "2");
	sqlt_eq(c, "select min(octet_length(co_name)) from pgq.consumer", "100");
	{
		char *v = outcome(
			c,
			"select pgq.ticker($1) > 0, pgq.ticker($2) > 0,"
			" (select string_agg(ev_data, ',') from pgq.get_batch_events(pgq.next_batch($1, $1))),"
			" (select string_agg(ev_data, ',') from pgq.get_batch_events(pgq.next_batch($1, $2)))",
			2, p);
		ck_assert_str_eq(v, "t|t|in-a|in-a\n");
		free(v);
	}
	/* a cursor name past the identifier limit would be truncated, so two names
	 * sharing 63 bytes would collide: refused; 63 bytes work */
	{
		char cur[65];
		const char *cp[2] = {a, cur};
		char *v, want[256];
		memset(cur, 'c', 64);
		cur[64] = 0;
		/* get_batch_cursor and the split reader's part cursors: one check, the
		   error naming the function called */
		static const char *const fn[2][2] = {
			{"get_batch_cursor",
			 "pgq.get_batch_cursor(pgq.next_batch($1, $1), $2, 10)"},
			{"_get_batch_part_cursor",
			 "pgq._get_batch_part_cursor(pgq.next_batch($1, $1), $2, 10, 0, 1)"}};
		for (int k = 0; k < 2; k++) {
			char sql[200];
			for (int empty = 0; empty < 2; empty++) {
				const char *cp2[2] = {a, empty ? "" : cur};
				snprintf(sql, sizeof(sql), "select count(*) from %s", fn[k][1]);
				pgt_exec(c, "begin");
				v = outcome(c, sql, 2, cp2);
				if (empty)
					snprintf(want, sizeof(want),
						 "P0001: %s: cursor name must not be empty",
						 fn[k][0]);
				else
					snprintf(
						want, sizeof(want),
						"P0001: %s: cursor name \"%s\" is longer than 63 bytes",
						fn[k][0], cur);
				ck_assert_str_eq(v, want);
				free(v);
			}
		}
		cur[63] = 0;
		pgt_exec(c, "begin");
		v = outcome(
			c,
			"select count(*) from pgq.get_batch_cursor(pgq.next_batch($1, $1), $2, 10)",
			2, cp);
		ck_assert_str_eq(v, "1\n");
		free(v);
		pgt_exec(c, "rollback");
	}
	PQfinish(c);
}
END_TEST

/*
 * Quotes, semicolons, backslashes, dollar quotes and non-ASCII through the functions
 * that build SQL from a name: sequence names, grant_perms/tune_storage, pgq_coop's
 * subconsumer names, pgq_ext's names, and the triggers (schema, table, column and
 * queue names).
 */
static const char *const bad_names[] = {
	"it's",
	"x\"; drop table pgq.queue; --",
	"semi;colon",
	"\xe6\x97\xa5\xe6\x9c\xac \xc3\xbc",
	"$$ $q$ \\ %s %I",
	"a.b",
	"Tab\tNL\n",
};

START_TEST(test_hostile_names_build_no_sql)
{
	PGconn *c = conn(pgt_db_new());
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		const char *n = bad_names[i];
		const char *p[2] = {n, NULL};
		char *v, *qi, sql[1024];
		PGresult *r;
		/* a sequence with that name, through seq_getval/seq_setval */
		r = PQexecParams(c, "select quote_ident($1)", 1, NULL, p, NULL, NULL, 0);
		ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
		qi = strdup(PQgetvalue(r, 0, 0));
		PQclear(r);
		/* (the functions take the name unquoted, a dot separating the schema, as PgQ) */
		if (!strchr(n, '.')) {
			snprintf(sql, sizeof(sql), "create sequence %s", qi);
			pgt_exec(c, sql);
			v = outcome(c, "select pgq.seq_setval($1, 41), pgq.seq_getval($1)", 1, p);
			ck_assert_msg(strcmp(v, "41|41\n") == 0, "sequence [%s]: %s", n, v);
			free(v);
			snprintf(sql, sizeof(sql), "drop sequence %s", qi);
			pgt_exec(c, sql);
		}
		/* queue administration that builds SQL from the queue */
		v = outcome(
			c,
			"select pgq.create_queue($1), pgq.grant_perms($1), pgq.tune_storage($1),"
			" pgq.set_queue_config($1, 'ticker_max_lag', '0'), pgq.register_consumer($1, 'main'),"
			" pgq.register_consumer($1, 'plain')",
			1, p);
		ck_assert_msg(strcmp(v, "1|1|1|1|1|1\n") == 0, "queue [%s]: %s", n, v);
		free(v);
		/* a cooperative subconsumer with that name; pgq_ext progress under it */
		v = outcome(c, "select pgq.insert_event($1, 't', $1) > 0", 1, p);
		ck_assert_msg(strcmp(v, "t\n") == 0, "insert [%s]: %s", n, v);
		free(v);
		v = outcome(
			c,
			"select pgq_coop.register_subconsumer($1, 'main', $1), pgq.ticker($1) > 0,"
			" pgq_coop.next_batch($1, 'main', $1) is not null,"
			" pgq_ext.set_batch_done($1, $1, 1), pgq_ext.is_batch_done($1, $1, 1),"
			" pgq_ext.set_event_done($1, $1, 1, 2), pgq_ext.is_event_done($1, $1, 1, 2),"
			" pgq_ext.set_last_tick($1, $1, 3), pgq_ext.get_last_tick($1, $1)",
			1, p);
		ck_assert_msg(strcmp(v, "1|t|t|t|t|t|t|1|3\n") == 0, "coop/ext [%s]: %s", n, v);
		free(v);
		v = outcome(c,
			    "select count(*) from pgq_coop.next_batch($1, 'main', $1) b,"
			    " pgq.get_batch_events(b) e where e.ev_data = $1",
			    1, p);
		ck_assert_msg(strcmp(v, "1\n") == 0, "coop batch [%s]: %s", n, v);
		free(v);
		v = outcome(c,
			    "select pgq_coop.finish_batch(pgq_coop.next_batch($1, 'main', $1)),"
			    " pgq_coop.unregister_subconsumer($1, 'main', $1, 0)",
			    1, p);
		ck_assert_msg(strcmp(v, "1|1\n") == 0, "coop finish [%s]: %s", n, v);
		free(v);
		/* triggers on a table, column and schema with that name, into that queue */
		snprintf(sql, sizeof(sql),
			 "create schema %s; create table %s.%s(%s int primary key, v text)", qi, qi,
			 qi, qi);
		pgt_exec(c, sql);
		{
			const char *fmts[] = {"logutriga", "sqltriga", "jsontriga"};
			for (int f = 0; f < 3; f++) {
				char *lit;
				r = PQexecParams(c, "select quote_literal($1)", 1, NULL, p, NULL,
						 NULL, 0);
				lit = strdup(PQgetvalue(r, 0, 0));
				PQclear(r);
				snprintf(
					sql, sizeof(sql),
					"create trigger %s after insert or update or delete on %s.%s"
					" for each row execute procedure pgq.%s(%s, 'backup')",
					fmts[f], qi, qi, fmts[f], lit);
				pgt_exec(c, sql);
				free(lit);
			}
		}
		snprintf(sql, sizeof(sql),
			 "insert into %s.%s values (1, 'one'); update %s.%s set v = 'two';"
			 " delete from %s.%s",
			 qi, qi, qi, qi, qi, qi);
		pgt_exec(c, sql);
		v = outcome(c, "select pgq.ticker($1) > 0", 1, p);
		ck_assert_msg(strcmp(v, "t\n") == 0, "tick [%s]: %s", n, v);
		free(v);
		/* the first batch has the insert_event one, the second the trigger events;
		 * ev_extra1 is schema.table unquoted, as PgQ's C triggers make it */
		v = outcome(c, "select pgq.finish_batch(pgq.next_batch($1, 'plain'))", 1, p);
		free(v);
		v = outcome(c,
			    "select count(*), count(*) filter (where e.ev_extra1 = $1 || '.' || $1)"
			    " from pgq.get_batch_events(pgq.next_batch($1, 'plain')) e",
			    1, p);
		ck_assert_msg(strcmp(v, "9|9\n") == 0, "triggers [%s]: %s", n, v);
		free(v);
		snprintf(sql, sizeof(sql), "drop schema %s cascade", qi);
		pgt_exec(c, sql);
		v = outcome(c, "select pgq.drop_queue($1, true)", 1, p);
		ck_assert_msg(strcmp(v, "1\n") == 0, "drop [%s]: %s", n, v);
		free(v);
		free(qi);
	}
	sqlt_eq(c, "select count(*) from pgq.queue", "0");
	PQfinish(c);
}
END_TEST

/* A SQL_ASCII database with pgq: ours installed from the script, or Debian's. */
static const char *sql_ascii_db(PGconn *admin, const char *name, bool ours)
{
	static char names[2][64];
	char sql[256];
	char *db = names[ours];
	snprintf(db, sizeof(names[0]), "%s", name);
	snprintf(
		sql, sizeof(sql),
		"create database %s template template0 encoding 'SQL_ASCII' lc_collate 'C' lc_ctype 'C'",
		db);
	pgt_exec(admin, sql);
	if (ours)
		ck_assert_int_eq(sqlt_psql_file(db, "postgres", sqlt_install_script()), 0);
	return db;
}

/*
 * Bytes that are not UTF-8, in a SQL_ASCII database (the only encoding that lets
 * them in): insert_event/get_batch_events keep them byte for byte, and the triggers
 * encode them exactly as PgQ's C triggers do.
 */
static const char *const ascii_dml[] = {
	"create table evlog(n serial, q text, t text, d text, e1 text, e2 text, e3 text, e4 text)",
	"create or replace function pgq.insert_event(queue_name text, ev_type text, ev_data text,"
	" ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text) returns bigint"
	" language plpgsql as $$ begin insert into evlog(q, t, d, e1, e2, e3, e4)"
	" values (queue_name, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4);"
	" return 1; end $$",
	"create table \"t\xff\"(id int primary key, x text, \"c\xfe\x80\" text)",
	"create trigger l after insert or update or delete on \"t\xff\" for each row"
	" execute procedure pgq.logutriga('q\xfe', 'backup')",
	"create trigger s after insert or update or delete on \"t\xff\" for each row"
	" execute procedure pgq.sqltriga('q\xfe')",
	"create trigger j after insert or update or delete on \"t\xff\" for each row"
	" execute procedure pgq.jsontriga('q\xfe', 'backup')",
	"insert into \"t\xff\" values (2, 'a\xff\x80"
	"b\xc3', '\xe2\x82')",
	"update \"t\xff\" set x = '\xc0\xaf' where id = 2",
	"delete from \"t\xff\"",
	NULL,
};

START_TEST(test_sql_ascii_bytes)
{
	PGconn *admin = conn("postgres");
	const char *odb = sql_ascii_db(admin, "ascii_ora", false);
	const char *udb = sql_ascii_db(admin, "ascii_ours", true);
	PGconn *ora = conn(odb), *ours = conn(udb);
	char bytes[256], *log[2];
	const char *p[1] = {bytes};
	PGresult *r;
	/* every byte but NUL, through a real queue */
	for (int i = 1; i < 256; i++)
		bytes[i - 1] = (char)i;
	bytes[255] = 0;
	pgt_exec(ours, "set client_encoding = 'SQL_ASCII'");
	pgt_exec(ours,
		 "select pgq.create_queue('a'), pgq.set_queue_config('a', 'ticker_max_lag', '0'),"
		 " pgq.register_consumer('a', 'c')");
	r = PQexecParams(ours, "select pgq.insert_event('a', $1, $1, $1, $1, $1, $1)", 1, NULL, p,
			 NULL, NULL, 0);
	ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
	PQclear(r);
	pgt_exec(ours, "select pgq.ticker('a')");
	r = PQexec(ours, "select ev_type, ev_data, ev_extra1, ev_extra4"
			 " from pgq.get_batch_events(pgq.next_batch('a', 'c'))");
	ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
	ck_assert_int_eq(PQntuples(r), 1);
	for (int f = 0; f < 4; f++) {
		ck_assert_int_eq(PQgetlength(r, 0, f), 255);
		ck_assert(memcmp(PQgetvalue(r, 0, f), bytes, 255) == 0);
	}
	PQclear(r);
	pgt_exec(ours, "select pgq.drop_queue('a', true)");

	/* the triggers, against Debian's C triggers */
	if (!have_pgq_extension(ora))
		goto out;
	for (int k = 0; k < 2; k++) {
		PGconn *c = k ? ours : ora;
		pgt_exec(c, "set client_encoding = 'SQL_ASCII'");
		for (int i = 0; ascii_dml[i]; i++)
			pgt_exec(c, ascii_dml[i]);
		log[k] = sqlt_rows(c, "select q, t, d, e1, e2 from evlog order by n");
	}
	ck_assert_int_gt((int)strlen(log[0]), 500);
	ck_assert_msg(strchr(log[0], '\xff') != NULL, "the raw byte reached the events");
	ck_assert_str_eq(log[1], log[0]);
	free(log[0]);
	free(log[1]);
out:
	PQfinish(ora);
	PQfinish(ours);
	pgt_exec(admin, "drop database ascii_ora");
	pgt_exec(admin, "drop database ascii_ours");
	PQfinish(admin);
}
END_TEST

/* 100 MB of event data in one event (slow suite): nothing truncated either way. */
START_TEST(test_100mb_event)
{
	const size_t len = 100u * 1024 * 1024;
	PGconn *c = conn(pgt_db_new());
	char *data = malloc(len + 1);
	const char *p[1] = {data};
	PGresult *r;
	for (size_t i = 0; i < len; i++)
		data[i] = (char)('a' + i % 23);
	data[len - 1] = 'Z';
	data[len] = 0;
	pgt_exec(
		c,
		"select pgq.create_queue('big'), pgq.set_queue_config('big', 'ticker_max_lag', '0'),"
		" pgq.register_consumer('big', 'c')");
	r = PQexecParams(c, "select pgq.insert_event('big', 'big', $1)", 1, NULL, p, NULL, NULL, 0);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "insert: %s", PQerrorMessage(c));
	PQclear(r);
	pgt_exec(c, "select pgq.ticker('big')");
	r = PQexec(c, "select ev_data from pgq.get_batch_events(pgq.next_batch('big', 'c'))");
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "read: %s", PQerrorMessage(c));
	ck_assert_int_eq(PQntuples(r), 1);
	ck_assert_uint_eq((size_t)PQgetlength(r, 0, 0), len);
	ck_assert(memcmp(PQgetvalue(r, 0, 0), data, len) == 0);
	PQclear(r);
	free(data);
	PQfinish(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sql-hostile");
	TCase *tc = pgt_tcase("hostile", 300);
	PgtOptions o = {.need_server = true};
	if (getenv("PGQEV_TEST_SLOW")) { /* the 'slow' suite runs this binary again */
		tcase_add_test(tc, test_100mb_event);
		suite_add_tcase(s, tc);
		return pgt_main(s, &o);
	}
	tcase_add_test(tc, test_long_names_match_pgq);
	tcase_add_test(tc, test_long_names_stay_apart);
	tcase_add_test(tc, test_hostile_names_build_no_sql);
	tcase_add_test(tc, test_sql_ascii_bytes);
	suite_add_tcase(s, tc);
	return pgt_main(s, &o);
}
