/*
 * pgqd-ev's maintenance and retry rounds, on a server with autovacuum off (so
 * pgq.maint_operations() lists vacuum ops: pgqd bug #2 aborted its round after
 * the first one), and interop with Debian's PgQ 3.5 (C extension and the PL-only
 * script).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "pgtest.h"

#define PGQ_PL_ONLY "/usr/share/postgresql/15/contrib/pgq_pl_only.sql"

static char *db_copy(const char *name)
{
	char *s = strdup(name);

	ck_assert_ptr_nonnull(s);
	return s;
}

static char *ini_for(const char *db, const char *extra)
{
	char *s = malloc(4096);

	snprintf(s, 4096, "%sdatabase_list = %s\nstats_period = 0.5\n%s", dmn_base_ini(), db,
		 extra);
	return s;
}

typedef struct SqlWait {
	const char *db;
	const char *sql; /* true when it returns a non-zero integer */
} SqlWait;

static bool sql_true(void *arg)
{
	SqlWait *w = arg;

	return pgt_int_db(w->db, w->sql) != 0;
}

static bool wait_sql(const char *db, const char *sql, int timeout_ms)
{
	SqlWait w = {db, sql};

	return pgt_wait_until(sql_true, &w, timeout_ms, 50);
}

/* Make queue q due for rotation now: its last switch was longer ago than its period. */
static void backdate_switch(PGconn *c)
{
	pgt_exec(c, "update pgq.queue set queue_switch_time = queue_switch_time"
		    " - queue_rotation_period - interval '1 second' where queue_name = 'q'");
}

/*
 * A londiste.periodic_maintenance() stand-in: pgq.maint_operations() lists it
 * after the vacuum ops. It asks to be called again twice (returns 1), then
 * returns 0, and logs every call.
 */
static void add_late_op(PGconn *c)
{
	pgt_exec(c, "create schema londiste; create table londiste.calls (at timestamptz)");
	pgt_exec(c, "create function londiste.periodic_maintenance() returns int language plpgsql"
		    " as $$ begin insert into londiste.calls values (clock_timestamp());"
		    " return case when (select count(*) from londiste.calls) % 3 = 0 then 0"
		    " else 1 end; end $$");
}

static const char vacuumed_all[] = "select (count(*) = 0)::int from pgq.maint_tables_to_vacuum() t"
				   " join pg_stat_all_tables s on s.relid = t::regclass"
				   " where s.last_vacuum is null";

static void run_maint_round_checks(const char *db, Daemon *d)
{
	/* the queue rotated: step1 and step2 ran, each in its own transaction */
	ck_assert(wait_sql(
		db, "select (queue_cur_table <> 0)::int from pgq.queue where queue_name = 'q'",
		8000));
	/* every vacuum op ran, not just the first */
	ck_assert_int_gt(pgt_int_db(db, "select count(*) from pgq.maint_operations()"
					" where func_name ilike 'vacuum%'"),
			 1);
	ck_assert(wait_sql(db, vacuumed_all, 8000));
	/* and the op listed after them ran, repeated while it returned non-zero */
	ck_assert(wait_sql(db, "select (count(*) >= 3)::int from londiste.calls", 8000));
	ck_assert(dmn_wait_log(d, "maintenance done", 8000));
}

START_TEST(test_maint_rotates_and_vacuums)
{
	char *db = db_copy(pgt_db_new());
	PGconn *c = pgt_connect(db);
	char *ini;
	Daemon *d;

	char *autovacuum = pgt_value(c, "show autovacuum");
	ck_assert_str_eq(autovacuum, "off");
	free(autovacuum);
	pgt_exec(c, "select pgq.create_queue('q')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'rotation_period', '1 second')");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'x')");
	add_late_op(c);
	backdate_switch(c);
	PQfinish(c);
	ini = ini_for(db, "maint_period = 0.5\nticker_period = 0.2\n");
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	run_maint_round_checks(db, d);
	ck_assert(!dmn_log_contains(d, "ERROR"));
	dmn_stop(d);
	free(ini);
	free(db);
}
END_TEST

/* Consumer 'c' on queue 'q' takes one event and puts it in the retry queue; its id. */
static int64_t retry_one_event(PGconn *c)
{
	char sql[256];
	int64_t batch, ev;

	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'again')");
	pgt_exec(c, "select pgq.force_tick('q')");
	pgt_exec(c, "select pgq.ticker()");
	batch = pgt_int(c, "select pgq.next_batch('q', 'c')");
	ck_assert_int_gt(batch, 0);
	snprintf(sql, sizeof(sql), "select ev_id from pgq.get_batch_events(%lld)",
		 (long long)batch);
	ev = pgt_int(c, sql);
	snprintf(sql, sizeof(sql), "select pgq.event_retry(%lld, %lld, 0)", (long long)batch,
		 (long long)ev);
	pgt_exec(c, sql);
	snprintf(sql, sizeof(sql), "select pgq.finish_batch(%lld)", (long long)batch);
	pgt_exec(c, sql);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.retry_queue"), 1);
	return ev;
}

START_TEST(test_retry_events_come_back)
{
	char *db = db_copy(pgt_db_new());
	PGconn *c = pgt_connect(db);
	char *ini, sql[256];
	Daemon *d;
	int64_t ev;

	pgt_exec(c, "select pgq.create_queue('q')");
	ev = retry_one_event(c);
	PQfinish(c);
	ini = ini_for(db, "retry_period = 0.3\nticker_period = 0.2\n");
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(wait_sql(db, "select (count(*) = 0)::int from pgq.retry_queue", 5000));
	snprintf(sql, sizeof(sql),
		 "select count(*) from pgq.event_template where ev_id = %lld and ev_retry = 1",
		 (long long)ev);
	ck_assert(wait_sql(db, sql, 3000));
	ck_assert(dmn_wait_log(d, "retry: 1,", 3000));
	dmn_stop(d);
	free(ini);
	free(db);
}
END_TEST

/*
 * The systemd units run as the account pgqd-ev and peer authentication logs
 * it in as the role "pgqd-ev": a plain member of pgq_admin, no superuser.
 * Ticks, rotation and retries work as that role; the vacuum ops the server
 * skips for a non-owner (a warning) do not fail the round.
 */
START_TEST(test_runs_as_pgq_admin_member)
{
	char *db = db_copy(pgt_db_new());
	PGconn *c = pgt_connect(db);
	char *ini, extra[512];
	Daemon *d;
	int64_t ticks;

	pgt_exec(c, "do $$ begin if not exists (select from pg_roles where rolname = 'pgqd-ev')"
		    " then create role \"pgqd-ev\" login in role pgq_admin; end if; end $$");
	ck_assert_int_eq(pgt_int(c, "select (rolsuper or rolcreaterole or rolcreatedb)::int"
				    " from pg_roles where rolname = 'pgqd-ev'"),
			 0);
	pgt_exec(c, "select pgq.create_queue('q')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'rotation_period', '1 second')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_lag', '0')");
	(void)retry_one_event(c);
	ticks = pgt_int(c, "select count(*) from pgq.tick");
	backdate_switch(c);
	PQfinish(c);

	snprintf(extra, sizeof(extra),
		 "[pgqd]\nbase_connstr = host=%s port=%d user=pgqd-ev\nsyslog = 0\n"
		 "database_list = %s\nstats_period = 0.5\nticker_period = 0.2\n"
		 "maint_period = 0.5\nretry_period = 0.3\n",
		 pgt_socket_dir(), pgt_port(), db);
	ini = strdup(extra);
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	snprintf(extra, sizeof(extra), "select (count(*) > %lld)::int from pgq.tick",
		 (long long)ticks);
	ck_assert(wait_sql(db, extra, 5000));
	ck_assert(wait_sql(db, "select (count(*) = 0)::int from pgq.retry_queue", 5000));
	ck_assert(wait_sql(
		db, "select (queue_cur_table <> 0)::int from pgq.queue where queue_name = 'q'",
		8000));
	ck_assert(dmn_wait_log(d, "maintenance done", 8000));
	ck_assert(dmn_wait_log(d, "retry: 1,", 5000));
	ck_assert(!dmn_log_contains(d, "ERROR"));
	/* and it really was that role on the server */
	ck_assert(wait_sql("postgres",
			   "select (count(*) > 0)::int from pg_stat_activity"
			   " where usename = 'pgqd-ev' and application_name like 'pgqd-ev%'",
			   3000));
	dmn_stop(d);
	free(ini);
	free(db);
}
END_TEST

static bool op_running(void *arg)
{
	char sql[256];

	snprintf(sql, sizeof(sql),
		 "select count(*) from pg_stat_activity where datname = '%s'"
		 " and state = 'active' and query like '%%periodic_maintenance%%'",
		 (const char *)arg);
	return pgt_int_db("postgres", sql) == 1;
}

static bool op_gone(void *arg)
{
	return !op_running(arg);
}

/* A stop does not wait for a maintenance statement (it may run for minutes): the
   server is asked to cancel it, nothing of it commits, and the daemon exits 0
   without reaching stop_timeout. */
START_TEST(test_stop_cancels_londiste_maintenance)
{
	char *db = db_copy(pgt_db_new());
	PGconn *c = pgt_connect(db);
	char *ini;
	Daemon *d;

	pgt_exec(c, "create schema londiste; create table londiste.calls (at timestamptz)");
	pgt_exec(c, "create function londiste.periodic_maintenance() returns int language plpgsql"
		    " as $$ begin perform pg_sleep(30);"
		    " insert into londiste.calls values (clock_timestamp()); return 0; end $$");
	PQfinish(c);
	ini = ini_for(db, "maint_period = 0.2\nstop_timeout = 20\n");
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(pgt_wait_until(op_running, db, 5000, 20));
	dmn_signal(d, SIGTERM);
	ck_assert(dmn_wait_notify(d, "STOPPING=1", 2000));
	/* well before the statement's 30 s and the 20 s stop_timeout */
	ck_assert_int_eq(dmn_wait_exit(d, 10000), 0);
	ck_assert(!dmn_log_contains(d, "stop_timeout reached"));
	/* the statement was cancelled: it is gone and committed nothing */
	ck_assert(pgt_wait_until(op_gone, db, 10000, 20));
	ck_assert_int_eq(pgt_int_db(db, "select count(*) from londiste.calls"), 0);
	dmn_free(d, false);
	free(ini);
	free(db);
}
END_TEST

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	ck_assert_int_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/*
 * Debian's PgQ 3.5 (create_sql "create extension pgq", or NULL for the PL-only
 * script) or our extension pgq_ev, in an empty database.
 */
static void interop_with(const char *create_sql)
{
	char *db = db_copy(pgt_db_new_empty());
	PGconn *c = pgt_connect(db);
	char *ini, *v;
	Daemon *d;

	if (create_sql) {
		pgt_exec(c, create_sql);
	} else {
		char *script = read_file(PGQ_PL_ONLY);

		/* scripts/test installs postgresql-15-pgq3 (scripts/packages.txt) */
		ck_assert_msg(script != NULL, "%s missing: install postgresql-15-pgq3",
			      PGQ_PL_ONLY);
		pgt_exec(c, script);
		free(script);
	}
	v = pgt_value(c, "select pgq.version()");
	if (create_sql)
		ck_assert_str_eq(v, "3.5");
	else /* its version() reads pg_extension: NULL as a script (pgqd ignores such a db) */
		ck_assert_ptr_null(v);
	free(v);
	pgt_exec(c, "select pgq.create_queue('q')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'rotation_period', '1 second')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_lag', '0')");
	pgt_exec(c, "select pgq.insert_event('q', 't', 'x')");
	add_late_op(c);
	backdate_switch(c);
	PQfinish(c);
	ini = ini_for(db, "maint_period = 0.5\nticker_period = 0.2\nlow_latency = 1\n");
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(dmn_wait_log(d, create_sql ? "pgq version ok: 3.5" : "pgq version ok: unknown",
			       5000));
	ck_assert(wait_sql(db, "select (count(*) > 1)::int from pgq.tick", 5000));
	run_maint_round_checks(db, d);
	dmn_stop(d);
	free(ini);
	free(db);
}

static void interop(bool c_extension)
{
	interop_with(c_extension ? "create extension pgq" : NULL);
}

START_TEST(test_interop_pgq_ev_extension)
{
	/* tests/mk-template.sh puts the built extension files into the test server's
	   private extension directory */
	char control[700];
	snprintf(control, sizeof(control), "%s/pgq_ev.control", pgt_extension_dir());
	ck_assert_msg(access(control, F_OK) == 0, "%s: %s", control, strerror(errno));
	interop_with("create extension pgq_ev");
}
END_TEST

START_TEST(test_interop_pgq_c_extension)
{
	interop(true);
}
END_TEST

START_TEST(test_interop_pgq_pl_only)
{
	interop(false);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("daemon-maint");
	TCase *tc = pgt_tcase("maint", 60);
	PgtOptions opts = {.need_server = true, .extra_conf = "autovacuum = off"};

	tcase_add_test(tc, test_maint_rotates_and_vacuums);
	tcase_add_test(tc, test_retry_events_come_back);
	tcase_add_test(tc, test_runs_as_pgq_admin_member);
	tcase_add_test(tc, test_stop_cancels_londiste_maintenance);
	tcase_add_test(tc, test_interop_pgq_c_extension);
	tcase_add_test(tc, test_interop_pgq_ev_extension);
	tcase_add_test(tc, test_interop_pgq_pl_only);
	suite_add_tcase(s, tc);
	return pgt_main(s, &opts);
}
