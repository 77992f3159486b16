/*
 * pgq_coop and pgq_ext against the private server.
 *
 * pgq_coop: subconsumers of one main consumer share its stream without
 * overlap (every event processed exactly once, also when two sessions ask at
 * the same moment: the second waits on the main consumer's row), dead-interval
 * takeover, retries reaching the group, unregister with and without an open
 * batch, grants.
 * pgq_ext: batch/event/tick tracking in all forms, upgrade_schema() from the
 * pre-3.1 layout, re-running the install scripts, grants.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgtest.h"

/* A database with queue cq that ticks on every pgq.ticker() call. */
static PGconn *queue_db(void)
{
	PGconn *c = pgt_connect(pgt_db_new());
	pgt_exec(c, "set client_min_messages = warning");
	pgt_exec(c, "select pgq.create_queue('cq')");
	pgt_exec(c,
		 "update pgq.queue set queue_ticker_max_lag = '0', queue_ticker_idle_period = '0'"
		 " where queue_name = 'cq'");
	return c;
}

static void insert_and_tick(PGconn *c, int nevents)
{
	char sql[256];
	snprintf(sql, sizeof(sql),
		 "select count(pgq.insert_event('cq', 'e', g::text)) from generate_series(1, %d) g",
		 nevents);
	pgt_exec(c, sql);
	ck_assert_int_gt(pgt_int(c, "select coalesce(pgq.ticker('cq'), 0)"), 0);
}

/* Batch id handed to subconsumer `sub`, 0 for none. */
static int64_t coop_next(PGconn *c, const char *sub, const char *dead)
{
	char sql[256];
	if (dead)
		snprintf(sql, sizeof(sql),
			 "select coalesce(pgq_coop.next_batch('cq', 'main', '%s', '%s'), 0)", sub,
			 dead);
	else
		snprintf(sql, sizeof(sql),
			 "select coalesce(pgq_coop.next_batch('cq', 'main', '%s'), 0)", sub);
	return pgt_int(c, sql);
}

__attribute__((format(printf, 2, 3))) static int64_t qint(PGconn *c, const char *fmt, ...)
{
	char sql[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	return pgt_int(c, sql);
}

static void expect_error(PGconn *c, const char *sql, const char *msg)
{
	char *got = pgt_error(c, sql);
	ck_assert_str_eq(got, msg);
	free(got);
}

START_TEST(test_coop_register_and_batch)
{
	PGconn *c = queue_db();
	ck_assert_int_eq(pgt_int(c, "select pgq_coop.register_subconsumer('cq', 'main', 's1')"), 1);
	ck_assert_int_eq(pgt_int(c, "select pgq_coop.register_subconsumer('cq', 'main', 's1')"), 0);
	/* the subconsumer shares the main sub_id and starts idle */
	ck_assert_int_eq(pgt_int(c, "select count(distinct sub_id) from pgq.subscription"), 1);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.get_consumer_info('cq')"
				    " where consumer_name = 'main.s1' and last_tick is null"),
			 1);
	ck_assert_int_eq(coop_next(c, "s1", NULL), 0);

	insert_and_tick(c, 5);
	int64_t b1 = coop_next(c, "s1", NULL);
	ck_assert_int_gt(b1, 0);
	ck_assert_int_eq(coop_next(c, "s1", NULL), b1); /* same batch until finished */
	ck_assert_int_eq(coop_next(c, "s2", NULL), 0);  /* auto-registered, nothing left */
	ck_assert_int_eq(qint(c, "select count(*) from pgq.get_batch_events(%lld)", (long long)b1),
			 5);
	/* the main consumer already moved past the batch and holds none */
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.get_consumer_info('cq', 'main')"
				    " where current_batch is null and last_tick = 2"),
			 1);
	ck_assert_int_eq(qint(c, "select pgq_coop.finish_batch(%lld)", (long long)b1), 1);
	ck_assert_int_eq(qint(c, "select pgq_coop.finish_batch(%lld)", (long long)b1), 0);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.subscription"
				    " where sub_batch is null and sub_last_tick is null"),
			 2);

	/* a batch the main consumer opened itself blocks the group */
	insert_and_tick(c, 1);
	pgt_exec(c, "select pgq.next_batch('cq', 'main')");
	expect_error(c, "select pgq_coop.next_batch('cq', 'main', 's1')",
		     "main consumer has batch open?");

	char *v = pgt_value(c, "select pgq_coop.version()");
	ck_assert_str_eq(v, "3.4");
	free(v);
	PQfinish(c);
}
END_TEST

/* Three sessions, three subconsumers, 30 ticks: each event exactly once. */
START_TEST(test_coop_exactly_once)
{
	PGconn *c = queue_db();
	const char *db = PQdb(c);
	PGconn *w[3];
	const char *subs[3] = {"s1", "s2", "s3"};
	int got_batches[3] = {0, 0, 0};
	pgt_exec(c, "create table seen(ev_id bigint, sub text)");
	for (int i = 0; i < 3; i++) {
		w[i] = pgt_connect(db);
		pgt_exec(w[i], "set client_min_messages = warning");
		char sql[128];
		snprintf(sql, sizeof(sql),
			 "select pgq_coop.register_subconsumer('cq', 'main', '%s')", subs[i]);
		pgt_exec(w[i], sql);
	}
	for (int t = 0; t < 30; t++)
		insert_and_tick(c, 10);

	int idle = 0;
	for (int turn = 0; idle < 3 && turn < 200; turn++) {
		int i = turn % 3;
		int64_t b = coop_next(w[i], subs[i], NULL);
		if (b == 0) {
			idle++;
			continue;
		}
		idle = 0;
		got_batches[i]++;
		char sql[256];
		snprintf(sql, sizeof(sql),
			 "insert into seen select ev_id, '%s' from pgq.get_batch_events(%lld)",
			 subs[i], (long long)b);
		pgt_exec(w[i], sql);
		ck_assert_int_eq(qint(w[i], "select pgq_coop.finish_batch(%lld)", (long long)b), 1);
	}
	ck_assert_int_eq(pgt_int(c, "select count(*) from seen"), 300);
	ck_assert_int_eq(pgt_int(c, "select count(distinct ev_id) from seen"), 300);
	for (int i = 0; i < 3; i++)
		ck_assert_int_gt(got_batches[i], 0);

	/*
	 * Two sessions asking at once: the first holds the main consumer's row
	 * until it commits, the second waits and then gets the next batch.
	 */
	insert_and_tick(c, 3);
	insert_and_tick(c, 4);
	pgt_exec(w[0], "begin");
	int64_t b1 = coop_next(w[0], "s1", NULL);
	ck_assert_int_gt(b1, 0);
	ck_assert_int_eq(PQsendQuery(w[1], "select pgq_coop.next_batch('cq', 'main', 's2')"), 1);
	int pid = PQbackendPID(w[1]);
	bool waiting = false;
	for (int i = 0; i < 500 && !waiting; i++) {
		waiting =
			qint(c,
			     "select count(*) from pg_stat_activity where pid = %d and wait_event_type = 'Lock'",
			     pid) == 1;
		if (!waiting)
			pgt_exec(c, "select pg_sleep(0.01)");
	}
	ck_assert_msg(waiting, "second subconsumer did not wait for the main consumer's row");
	pgt_exec(w[0], "commit");
	PGresult *r = PQgetResult(w[1]);
	ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
	int64_t b2 = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	while ((r = PQgetResult(w[1])) != NULL)
		PQclear(r);
	ck_assert_int_gt(b2, 0);
	ck_assert_int_ne(b1, b2);
	ck_assert_int_eq(qint(c, "select count(*) from pgq.get_batch_events(%lld)", (long long)b1),
			 3);
	ck_assert_int_eq(qint(c, "select count(*) from pgq.get_batch_events(%lld)", (long long)b2),
			 4);
	for (int i = 0; i < 3; i++)
		PQfinish(w[i]);
	PQfinish(c);
}
END_TEST

START_TEST(test_coop_dead_takeover_and_retry)
{
	PGconn *c = queue_db();
	insert_and_tick(c, 1); /* main registers at the latest tick below */
	pgt_exec(c, "select pgq_coop.register_subconsumer('cq', 'main', 's1')");
	pgt_exec(c, "select pgq_coop.register_subconsumer('cq', 'main', 's3')");
	insert_and_tick(c, 4);
	int64_t b1 = coop_next(c, "s1", NULL);
	ck_assert_int_gt(b1, 0);
	/* s1 holds b1 and goes silent; s2 takes it over after the dead interval */
	pgt_exec(
		c,
		"update pgq.subscription s set sub_active = now() - interval '1 hour' from pgq.consumer c"
		" where c.co_id = s.sub_consumer and c.co_name = 'main.s1'");
	ck_assert_int_eq(coop_next(c, "s2", "1 day"), 0); /* not dead yet by that measure */
	ck_assert_int_eq(coop_next(c, "s2", "10 minutes"), b1);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.get_consumer_info('cq', 'main.s1')"),
			 0);
	ck_assert_int_eq(qint(c, "select count(*) from pgq.get_batch_events(%lld)", (long long)b1),
			 4);

	/* retry one event: it comes back to the group (shared sub_id), to any subconsumer */
	int64_t ev = qint(c, "select min(ev_id) from pgq.get_batch_events(%lld)", (long long)b1);
	char sql[256];
	snprintf(sql, sizeof(sql), "select pgq.event_retry(%lld, %lld, 0)", (long long)b1,
		 (long long)ev);
	ck_assert_int_eq(pgt_int(c, sql), 1);
	ck_assert_int_eq(qint(c, "select pgq_coop.finish_batch(%lld)", (long long)b1), 1);
	ck_assert_int_eq(pgt_int(c, "select pgq.maint_retry_events()"), 1);
	ck_assert_int_gt(pgt_int(c, "select coalesce(pgq.ticker('cq'), 0)"), 0);

	/* an idle dead subconsumer (s3) is just removed */
	pgt_exec(
		c,
		"update pgq.subscription s set sub_active = now() - interval '1 hour' from pgq.consumer c"
		" where c.co_id = s.sub_consumer and c.co_name = 'main.s3'");
	int64_t b2 = coop_next(c, "s4", "10 minutes");
	ck_assert_int_gt(b2, 0);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.get_consumer_info('cq', 'main.s3')"),
			 0);
	snprintf(
		sql, sizeof(sql),
		"select count(*) from pgq.get_batch_events(%lld) where ev_id = %lld and ev_retry = 1",
		(long long)b2, (long long)ev);
	ck_assert_int_eq(pgt_int(c, sql), 1);
	PQfinish(c);
}
END_TEST

START_TEST(test_coop_unregister)
{
	PGconn *c = queue_db();
	pgt_exec(c, "select pgq_coop.register_subconsumer('cq', 'main', 's1')");
	pgt_exec(c, "select pgq_coop.register_subconsumer('cq', 'main', 's2')");
	ck_assert_int_eq(
		pgt_int(c, "select pgq_coop.unregister_subconsumer('cq', 'main', 'nosuch', 0)"), 0);
	insert_and_tick(c, 2);
	ck_assert_int_gt(coop_next(c, "s1", NULL), 0);
	expect_error(c, "select pgq_coop.unregister_subconsumer('cq', 'main', 's1', 0)",
		     "subconsumer has active batch");
	ck_assert_int_eq(
		pgt_int(c, "select pgq_coop.unregister_subconsumer('cq', 'main', 's1', 1)"), 1);
	ck_assert_int_eq(
		pgt_int(c, "select pgq_coop.unregister_subconsumer('cq', 'main', 's1', 1)"), 0);
	ck_assert_int_eq(
		pgt_int(c, "select count(*) from pgq.subscription where sub_batch is not null"), 0);
	/* idle subconsumer unregisters with any handling value */
	ck_assert_int_eq(
		pgt_int(c, "select pgq_coop.unregister_subconsumer('cq', 'main', 's2', 0)"), 1);
	pgt_exec(c, "select pgq_coop.register_subconsumer('cq', 'main', 's3')");
	/* unregistering the main consumer takes its subconsumers along */
	ck_assert_int_eq(pgt_int(c, "select pgq.unregister_consumer('cq', 'main')"), 2);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.subscription"), 0);
	PQfinish(c);
}
END_TEST

START_TEST(test_coop_grants)
{
	PGconn *c = queue_db();
	pgt_exec(c, "create role coop_plain; create role coop_reader in role pgq_reader");
	pgt_exec(c, "set role coop_plain");
	char *err = pgt_error(c, "select pgq_coop.next_batch('cq', 'main', 's1')");
	ck_assert_ptr_nonnull(strstr(err, "permission denied for function next_batch"));
	free(err);
	ck_assert_int_eq(pgt_int(c, "select count(pgq_coop.version())"), 1);
	pgt_exec(c, "reset role; set role coop_reader");
	ck_assert_int_eq(pgt_int(c, "select pgq_coop.register_subconsumer('cq', 'main', 's1')"), 1);
	ck_assert_int_eq(coop_next(c, "s1", NULL), 0);
	pgt_exec(c, "reset role");
	PQfinish(c);
}
END_TEST

START_TEST(test_ext_tracking)
{
	PGconn *c = pgt_connect(pgt_db_new());
	const char *checks[][2] = {
		{"select pgq_ext.set_batch_done('c', 1)", "t"},
		{"select pgq_ext.set_batch_done('c', 1)", "f"},
		{"select pgq_ext.is_batch_done('c', 1)", "t"},
		{"select pgq_ext.is_batch_done('c', 2)", "f"},
		{"select pgq_ext.is_batch_done('c', 's', 1)", "f"},
		{"select pgq_ext.set_batch_done('c', 2)", "t"},
		{"select pgq_ext.is_batch_done('c', 1)", "f"},
		{"select pgq_ext.set_batch_done('c', 's', 1)", "t"},
		{"select pgq_ext.is_batch_done('c', 's', 1)", "t"},
		{"select pgq_ext.is_batch_done('c', '', 2)", "t"},
		{"select pgq_ext.set_batch_done('z', 0)", "t"},
		{"select count(*) from pgq_ext.completed_batch where consumer_id = 'z'", "0"},
		{"select pgq_ext.set_event_done('c', 10, 1)", "t"},
		{"select pgq_ext.set_event_done('c', 10, 1)", "f"},
		{"select pgq_ext.is_event_done('c', 10, 1)", "t"},
		{"select pgq_ext.set_event_done('c', 10, 2)", "t"},
		{"select pgq_ext.is_event_done('c', 's', 10, 2)", "f"},
		{"select pgq_ext.set_event_done('c', 's', 10, 2)", "t"},
		/* a new batch forgets the previous batch's events */
		{"select pgq_ext.set_event_done('c', 11, 1)", "t"},
		{"select pgq_ext.is_event_done('c', 10, 1)", "f"},
		{"select count(*) from pgq_ext.completed_event where subconsumer_id = ''", "1"},
		{"select cur_batch_id from pgq_ext.partial_batch where consumer_id = 'c' and subconsumer_id = ''",
		 "11"},
		{"select pgq_ext.is_event_done('c', 's', 10, 2)", "t"},
		{"select coalesce(pgq_ext.get_last_tick('c')::text, 'null')", "null"},
		{"select pgq_ext.set_last_tick('c', 5)", "1"},
		{"select pgq_ext.get_last_tick('c')", "5"},
		{"select pgq_ext.set_last_tick('c', 7)", "1"},
		{"select pgq_ext.get_last_tick('c', '')", "7"},
		{"select pgq_ext.set_last_tick('c', 's', 9)", "1"},
		{"select pgq_ext.get_last_tick('c', 's')", "9"},
		{"select pgq_ext.set_last_tick('c', null)", "1"},
		{"select coalesce(pgq_ext.get_last_tick('c')::text, 'null')", "null"},
		{"select pgq_ext.get_last_tick('c', 's')", "9"},
		{"select pgq_ext.version()", "3.3"},
		{"select pgq_ext.upgrade_schema()", "0"},
	};
	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
		char *v = pgt_value(c, checks[i][0]);
		ck_assert_msg(strcmp(v, checks[i][1]) == 0, "%s: got %s, want %s", checks[i][0], v,
			      checks[i][1]);
		free(v);
	}
	/* pgq_writer may track progress without table grants; others may not */
	pgt_exec(c, "create role ext_plain; create role ext_writer in role pgq_writer");
	pgt_exec(c, "set role ext_plain");
	char *err = pgt_error(c, "select pgq_ext.set_batch_done('c', 3)");
	ck_assert_ptr_nonnull(strstr(err, "permission denied"));
	free(err);
	pgt_exec(c, "reset role; set role ext_writer");
	ck_assert_int_eq(pgt_int(c, "select pgq_ext.set_batch_done('c', 3)::int"), 1);
	pgt_exec(c, "reset role");
	PQfinish(c);
}
END_TEST

static char *read_built_sql(const char *name)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/sql/%s", getenv("PGQD_TEST_BUILDDIR"), name);
	FILE *f = fopen(path, "r");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	ck_assert_int_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = 0;
	fclose(f);
	return buf;
}

START_TEST(test_ext_upgrade_schema)
{
	PGconn *c = pgt_connect(pgt_db_new());
	pgt_exec(c, "set client_min_messages = warning");
	/* pre-3.1 layout, one row per consumer, with data */
	pgt_exec(
		c,
		"drop table pgq_ext.completed_tick, pgq_ext.completed_batch, pgq_ext.completed_event,"
		" pgq_ext.partial_batch");
	pgt_exec(
		c,
		"create table pgq_ext.completed_tick(consumer_id text primary key, last_tick_id bigint not null);"
		"create table pgq_ext.completed_batch(consumer_id text primary key, last_batch_id bigint not null);"
		"create table pgq_ext.completed_event(consumer_id text not null, batch_id bigint not null,"
		"  event_id bigint not null, primary key (consumer_id, batch_id, event_id));"
		"create table pgq_ext.partial_batch(consumer_id text primary key, cur_batch_id bigint not null);"
		"insert into pgq_ext.completed_tick values ('old', 42);"
		"insert into pgq_ext.completed_batch values ('old', 7);"
		"insert into pgq_ext.completed_event values ('old', 7, 1);"
		"insert into pgq_ext.partial_batch values ('old', 7)");
	ck_assert_int_eq(pgt_int(c, "select pgq_ext.upgrade_schema()"), 8);
	ck_assert_int_eq(pgt_int(c, "select pgq_ext.upgrade_schema()"), 0);
	ck_assert_int_eq(pgt_int(c, "select pgq_ext.get_last_tick('old')"), 42);
	ck_assert_int_eq(pgt_int(c, "select pgq_ext.is_batch_done('old', 7)::int"), 1);
	ck_assert_int_eq(pgt_int(c, "select pgq_ext.is_event_done('old', 7, 1)::int"), 1);
	ck_assert_int_eq(pgt_int(c, "select pgq_ext.set_last_tick('old', 'sub', 43)"), 1);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq_ext.completed_tick"), 2);
	ck_assert_int_eq(
		pgt_int(c,
			"select array_length(conkey, 1) from pg_constraint"
			" where conrelid = 'pgq_ext.completed_event'::regclass and contype = 'p'"),
		4);
	/* the current layout without defaults (as the install script makes it): 4 changes */
	pgt_exec(c, "alter table pgq_ext.completed_tick alter subconsumer_id drop default;"
		    "alter table pgq_ext.completed_batch alter subconsumer_id drop default;"
		    "alter table pgq_ext.completed_event alter subconsumer_id drop default;"
		    "alter table pgq_ext.partial_batch alter subconsumer_id drop default");
	ck_assert_int_eq(pgt_int(c, "select pgq_ext.upgrade_schema()"), 4);
	/* the plain install scripts are re-runnable over an installed schema, keeping data */
	char *sql = read_built_sql("pgq_ext_ev.sql");
	pgt_exec(c, sql);
	free(sql);
	sql = read_built_sql("pgq_coop_ev.sql");
	pgt_exec(c, sql);
	free(sql);
	ck_assert_int_eq(pgt_int(c, "select pgq_ext.get_last_tick('old', 'sub')"), 43);
	PQfinish(c);
}
END_TEST

/* Copy `from` into `dir` under its base name, atomically (write a temporary, rename). */
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

/* default_version of a built control file (static buffer). */
static const char *control_version(const char *path)
{
	static char v[64];
	char line[256];
	FILE *f = fopen(path, "r");
	ck_assert_msg(f != NULL, "cannot read %s", path);
	v[0] = '\0';
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "default_version = '%63[^']'", v) == 1)
			break;
	fclose(f);
	ck_assert_str_ne(v, "");
	return v;
}

/*
 * CREATE EXTENSION pgq_coop_ev and pgq_ext_ev (on top of pgq_ev) as a
 * non-superuser database owner, from the test server's private extension
 * directory (pgt_extension_dir).
 */
START_TEST(test_extensions)
{
	const char *build = getenv("PGQD_TEST_BUILDDIR");
	char extdir[1024] = "", path[4096], sql[512];
	snprintf(extdir, sizeof(extdir), "%s", pgt_extension_dir());
	static const char *exts[][2] = {
		{"", "pgq_ev"}, {"pgq_coop/", "pgq_coop_ev"}, {"pgq_ext/", "pgq_ext_ev"}};
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/sql/%s%s.control", build, exts[i][0], exts[i][1]);
		const char *v = control_version(path);
		install_file(path, extdir);
		snprintf(path, sizeof(path), "%s/sql/%s%s--%s.sql", build, exts[i][0], exts[i][1],
			 v);
		install_file(path, extdir);
	}

	const char *db = pgt_db_new_empty();
	PGconn *su = pgt_connect(db);
	pgt_exec(su,
		 "do $$ begin if not exists (select from pg_roles where rolname = 't_coopext') then"
		 " create role t_coopext login; end if; end $$");
	snprintf(sql, sizeof(sql), "alter database %s owner to t_coopext", db);
	pgt_exec(su, sql);
	PQfinish(su);
	snprintf(sql, sizeof(sql), "%s user=t_coopext", pgt_connstr(db, false));
	PGconn *c = PQconnectdb(sql);
	ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
	pgt_exec(c, "set client_min_messages = warning");
	pgt_exec(c, "create extension pgq_coop_ev cascade");
	pgt_exec(c, "create extension pgq_ext_ev");
	ck_assert_int_eq(
		pgt_int(c,
			"select array_length(extconfig, 1) from pg_extension where extname = 'pgq_ext_ev'"),
		4);
	ck_assert_int_eq(
		pgt_int(c,
			"select count(*) from pg_depend d join pg_extension e on e.oid = d.refobjid"
			" where e.extname = 'pgq_coop_ev' and d.classid = 'pg_proc'::regclass"),
		10);
	pgt_exec(c, "select pgq.create_queue('cq')");
	ck_assert_int_eq(pgt_int(c, "select pgq_coop.register_subconsumer('cq', 'main', 's1')"), 1);
	ck_assert_int_eq(pgt_int(c, "select pgq_ext.set_last_tick('c', 3)"), 1);
	pgt_exec(c, "drop extension pgq_ext_ev");
	pgt_exec(c, "drop extension pgq_coop_ev");
	ck_assert_int_eq(
		pgt_int(c,
			"select count(*) from pg_namespace where nspname in ('pgq_coop', 'pgq_ext')"),
		0);
	PQfinish(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sql_coop_ext");
	TCase *tc = pgt_tcase("coop_ext", 120);
	tcase_add_test(tc, test_coop_register_and_batch);
	tcase_add_test(tc, test_coop_exactly_once);
	tcase_add_test(tc, test_coop_dead_takeover_and_retry);
	tcase_add_test(tc, test_coop_unregister);
	tcase_add_test(tc, test_coop_grants);
	tcase_add_test(tc, test_ext_tracking);
	tcase_add_test(tc, test_ext_upgrade_schema);
	tcase_add_test(tc, test_extensions);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
