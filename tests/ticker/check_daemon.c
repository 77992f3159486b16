/*
 * pgqd-ev, the real binary against a private server: ticking several databases,
 * reload (good and bad), server restart, an unreachable database, sd_notify
 * messages, stop, --check, a pgqd.ini taken as is, discovery, low-latency
 * wake-ups, and the HTTP endpoint.
 *
 * A tick is observed in the database: each test queue has ticker_max_lag = 0
 * and a pending event, so the daemon's next pgq.ticker() call inserts a row in
 * pgq.tick.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "daemon.h"
#include "pgtest.h"

typedef struct DbWait {
	const char *db;
	int64_t above;
} DbWait;

static char *db_copy(const char *name)
{
	char *s = strdup(name);

	ck_assert_ptr_nonnull(s);
	return s;
}

/* A fresh database with queue q, a pending event, and ticks on every call. */
static char *queue_db(void)
{
	char *db = db_copy(pgt_db_new());
	PGconn *c = pgt_connect(db);

	pgt_exec(c, "select pgq.create_queue('q')");
	pgt_exec(c, "select pgq.set_queue_config('q', 'ticker_max_lag', '0')");
	pgt_exec(c, "select pgq.insert_event('q', 'test', 'payload')");
	PQfinish(c);
	return db;
}

static int64_t ticks(const char *db)
{
	return pgt_int_db(db, "select count(*) from pgq.tick");
}

static void add_event(const char *db)
{
	pgt_exec_db(db, "select pgq.insert_event('q', 'test', 'more')");
}

static bool ticked(void *arg)
{
	DbWait *w = arg;

	return ticks(w->db) > w->above;
}

typedef struct {
	PGconn *conn;
	int64_t above;
} ConnWait;

static bool conn_ticked(void *arg)
{
	ConnWait *w = arg;

	return pgt_int(w->conn, "select count(*) from pgq.tick") > w->above;
}

/* wait_tick on a session the caller holds: under load a new session per poll
   costs more than the tick period, and a window counting ticks then measured
   the test's connects instead of the daemon */
static bool wait_tick_on(PGconn *conn, int timeout_ms)
{
	ConnWait w = {.conn = conn, .above = pgt_int(conn, "select count(*) from pgq.tick")};

	pgt_exec(conn, "select pgq.insert_event('q', 'test', 'more')");
	return pgt_wait_until(conn_ticked, &w, timeout_ms, 20);
}

/* Put an event in and wait until a new tick covers it. */
static bool wait_tick(const char *db, int timeout_ms)
{
	DbWait w = {.db = db, .above = ticks(db)};

	add_event(db);
	return pgt_wait_until(ticked, &w, timeout_ms, 20);
}

static char *ini_for(const char *extra, const char *dblist)
{
	char *s = malloc(4096);

	snprintf(s, 4096, "%sdatabase_list = %s\nstats_period = 1\n%s", dmn_base_ini(), dblist,
		 extra ? extra : "");
	return s;
}

START_TEST(test_ticks_three_dbs)
{
	char *a = queue_db(), *b = queue_db(), *c = queue_db();
	char list[256];
	char *ini;
	Daemon *d;
	DbWait wa = {a, ticks(a)}, wb = {b, ticks(b)}, wc = {c, ticks(c)};

	snprintf(list, sizeof(list), "%s, %s, %s", a, b, c);
	ini = ini_for("ticker_period = 0.5\n", list);
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	/* the first tick is made as soon as each database is connected and checked */
	ck_assert(pgt_wait_until(ticked, &wa, 3000, 10));
	ck_assert(pgt_wait_until(ticked, &wb, 3000, 10));
	ck_assert(pgt_wait_until(ticked, &wc, 3000, 10));
	/* and it keeps ticking */
	ck_assert(wait_tick(a, 3000));
	ck_assert(dmn_wait_log(d, "pgq version ok: ", 1000));
	ck_assert(dmn_wait_log(d, "{ticks: ", 3000));
	dmn_signal(d, SIGTERM);
	ck_assert(dmn_wait_notify(d, "STOPPING=1", 5000));
	ck_assert_int_eq(dmn_wait_exit(d, 10000), 0);
	dmn_free(d, false);
	free(ini);
	free(a);
	free(b);
	free(c);
}
END_TEST

START_TEST(test_sighup_adds_db_and_bad_reload_keeps_running)
{
	char *a = queue_db(), *b = queue_db();
	char list[256], bad[4096];
	char *ini = ini_for("ticker_period = 0.2\n", a);
	Daemon *d = dmn_start(ini, NULL);

	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(wait_tick(a, 3000));
	/* b is not ticked yet */
	add_event(b);
	/* a window of two ticks of a: the daemon ran rounds after b's event, yet b is not ticked */
	ck_assert(wait_tick(a, 3000));
	ck_assert(wait_tick(a, 3000));
	ck_assert_int_eq(ticks(b), 1);

	free(ini);
	snprintf(list, sizeof(list), "%s,%s", a, b);
	ini = ini_for("ticker_period = 0.2\n", list);
	dmn_write_ini(d, ini);
	dmn_signal(d, SIGHUP);
	ck_assert(dmn_wait_notify(d, "RELOADING=1", 5000));
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(wait_tick(b, 3000));

	/* a broken file: the daemon says where and why, and keeps the old config */
	snprintf(bad, sizeof(bad), "%s\nticker_period = soon\n", ini);
	dmn_write_ini(d, bad);
	dmn_signal(d, SIGHUP);
	/* wait for the error itself: a "set twice" warning naming the file may come first */
	ck_assert(dmn_wait_log(d, "ticker_period: invalid value \"soon\"", 5000));
	ck_assert(dmn_log_contains(d, "pgqd-ev.ini:"));
	ck_assert(dmn_wait_log(d, "keeping the running configuration", 2000));
	ck_assert(wait_tick(a, 3000));
	ck_assert(wait_tick(b, 3000));
	ck_assert_int_eq(dmn_wait_exit(d, 0), -1);

	dmn_signal(d, SIGINT);
	ck_assert_int_eq(dmn_wait_exit(d, 10000), 0);
	dmn_free(d, false);
	free(ini);
	free(a);
	free(b);
}
END_TEST

/* Each pgq.ticker() call of the daemon lands in public.tick_calls. */
static void count_ticker_calls(const char *db)
{
	pgt_exec_db(db, "create table public.tick_calls (t timestamptz default clock_timestamp())");
	pgt_exec_db(db, "alter function pgq.ticker() rename to ticker_counted");
	pgt_exec_db(db, "create function pgq.ticker() returns bigint language sql as "
			"$$ insert into public.tick_calls default values; "
			"select pgq.ticker_counted(); $$");
}

static int64_t ticker_calls(const char *db)
{
	return pgt_int_db(db, "select count(*) from public.tick_calls");
}

static int scaled(int ms)
{
	return (int)(ms * pgt_time_factor());
}

typedef struct CallsWait {
	const char *a, *b;
	int64_t a0, b0, n;
} CallsWait;

static bool called_n_times(void *arg)
{
	CallsWait *w = arg;

	return ticker_calls(w->a) - w->a0 >= w->n && ticker_calls(w->b) - w->b0 >= w->n;
}

/* No pgq.ticker() call of the daemon is running in a or b. */
static bool no_call_in_flight(void *arg)
{
	CallsWait *w = arg;
	char sql[512];

	snprintf(sql, sizeof(sql),
		 "select count(*) from pg_stat_activity where pid <> pg_backend_pid()"
		 " and datname in ('%s', '%s') and state <> 'idle'"
		 " and query ilike '%%pgq.ticker()%%'",
		 w->a, w->b);
	return pgt_int_db("postgres", sql) == 0;
}

/*
 * The ticker calls in a and b during two of the daemon's stats periods
 * (stats_period = 1): the window is measured by the daemon's own timers, so
 * the daemon surely ran through it.
 */
static void calls_during_two_stats(Daemon *d, const char *a, const char *b, int64_t *na,
				   int64_t *nb)
{
	int64_t a0 = ticker_calls(a), b0 = ticker_calls(b);

	ck_assert(dmn_wait_log_more(d, "{ticks: ", 2, scaled(5000)));
	*na = ticker_calls(a) - a0;
	*nb = ticker_calls(b) - b0;
}

static void reload_with(Daemon *d, const char *ini)
{
	dmn_write_ini(d, ini);
	dmn_signal(d, SIGHUP);
	ck_assert(dmn_wait_notify(d, "RELOADING=1", 5000));
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
}

/* A reloaded ticker_period moves the databases to the new tick grid, both ways. */
START_TEST(test_reload_changes_ticker_period)
{
	char *a = queue_db(), *b = queue_db();
	char list[256];
	char *slow, *fast;
	Daemon *d;
	int64_t n0, n1;
	CallsWait w = {.a = a, .b = b};

	count_ticker_calls(a);
	count_ticker_calls(b);
	snprintf(list, sizeof(list), "%s, %s", a, b);
	slow = ini_for("ticker_period = 60\n", list);
	fast = ini_for("ticker_period = 0.1\n", list);
	d = dmn_start(slow, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(dmn_wait_log(d, "pgq version ok", 5000));
	/* first call at once, not at a grid point of the 60 s period */
	w.n = 1;
	ck_assert(pgt_wait_until(called_n_times, &w, scaled(500), 10));
	/* in 2 s at most one grid point of a 60 s period */
	calls_during_two_stats(d, a, b, &n0, &n1);
	ck_assert_int_le(n0, 1);

	reload_with(d, fast);
	/* 20 grid points of 0.1 s in 2 s; half of them allows for a loaded machine */
	w.a0 = ticker_calls(a);
	w.b0 = ticker_calls(b);
	w.n = 10;
	ck_assert(pgt_wait_until(called_n_times, &w, scaled(2000), 10));

	reload_with(d, slow);
	/* a call started on the fast grid before the reload may still land */
	ck_assert(pgt_wait_until(no_call_in_flight, &w, scaled(3000), 10));
	calls_during_two_stats(d, a, b, &n0, &n1);
	ck_assert_int_le(n0, 1);
	ck_assert_int_le(n1, 1);

	dmn_stop(d);
	free(slow);
	free(fast);
	free(a);
	free(b);
}
END_TEST

/* After failed attempts the reconnect says "connected after N failures"; a
   server back before the first attempt (a restart within 60 ms here) makes the
   lost session's own line end in "; reconnected" */
static bool reconnect_logged(void *arg)
{
	Daemon *d = arg;

	return dmn_log_contains(d, "connected after") || dmn_log_contains(d, "; reconnected");
}

START_TEST(test_server_restart_resumes_fast)
{
	char *a = queue_db(), *b = queue_db();
	char list[256];
	char *ini;
	Daemon *d;
	int64_t t0;

	snprintf(list, sizeof(list), "%s,%s", a, b);
	ini = ini_for("ticker_period = 0.2\n", list);
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(wait_tick(a, 3000));
	ck_assert(wait_tick(b, 3000));
	pgt_server_restart();
	t0 = pgt_now_ms();
	/* pgqd waits 60 s here; we reconnect with a backoff starting under 0.25 s */
	ck_assert(wait_tick(a, 2000));
	ck_assert(wait_tick(b, 2000 - (int)(pgt_now_ms() - t0) + 100));
	ck_assert(dmn_log_contains(d, "connection lost"));
	ck_assert(pgt_wait_until(reconnect_logged, d, 1000, 10));
	dmn_stop(d);
	free(ini);
	free(a);
	free(b);
}
END_TEST

START_TEST(test_unreachable_db_does_not_delay_others)
{
	char *a = queue_db();
	char ini[4096];
	Daemon *d;
	int64_t t0;
	int n = 0;

	/* a database that does not exist, and a cluster on a port nobody listens on */
	snprintf(ini, sizeof(ini),
		 "%sdatabase_list = %s, no_such_db\nticker_period = 0.2\n"
		 "unreachable_timeout = 1\nbackoff_base = 0.05\nbackoff_cap = 0.2\n"
		 "[cluster gone]\nbase_connstr = host=%s port=1 user=postgres\n"
		 "database_list = x1, x2\n",
		 dmn_base_ini(), a, pgt_socket_dir());
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	t0 = pgt_now_ms();
	/* while the others fail and retry, a keeps ticking at its period */
	while (pgt_now_ms() - t0 < 2000) {
		ck_assert(wait_tick(a, 600));
		n++;
	}
	ck_assert_int_ge(n, 3);
	ck_assert(dmn_wait_log(d, "[no_such_db]:", 3000));
	ck_assert(dmn_wait_log(d, "[gone/x1]:", 3000));
	/* only the first failure of a streak is a warning */
	ck_assert(dmn_wait_log(d, "unreachable for", 3000));
	ck_assert(dmn_wait_notify(d, "unreachable", 3000));
	dmn_stop(d);
	free(a);
}
END_TEST

/* A database whose tick hangs on a lock delays nobody else, and query_timeout frees it. */
START_TEST(test_hung_db_does_not_delay_others)
{
	char *a = queue_db(), *b = queue_db();
	char list[256], *ini;
	PGconn *locker, *bconn;
	Daemon *d;
	int64_t t0, before;
	int n = 0;

	snprintf(list, sizeof(list), "%s, %s", a, b);
	ini = ini_for("ticker_period = 0.2\nquery_timeout = 1.5\n", list);
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(wait_tick(a, 3000));
	ck_assert(wait_tick(b, 3000));
	/* hold the queue row: pgq.ticker() in a blocks behind it */
	locker = pgt_connect(a);
	pgt_exec(locker, "begin");
	pgt_exec(locker, "select * from pgq.queue for update");
	before = ticks(a);
	add_event(a);
	bconn = pgt_connect(b);
	t0 = pgt_now_ms();
	while (pgt_now_ms() - t0 < 1200) {
		ck_assert(wait_tick_on(bconn, 600));
		n++;
	}
	PQfinish(bconn);
	ck_assert_int_ge(n, 3);
	ck_assert_int_eq(ticks(a), before);
	/* the hung tick hits query_timeout: the session is replaced, a ticks again */
	ck_assert(dmn_wait_log(d, "pgq.ticker() timed out, reconnecting", 5000));
	pgt_exec(locker, "rollback");
	PQfinish(locker);
	ck_assert(wait_tick(a, 3000));
	ck_assert(wait_tick(b, 1000));
	dmn_stop(d);
	free(ini);
	free(a);
	free(b);
}
END_TEST

START_TEST(test_unreachable_exit_policy)
{
	char *a = queue_db();
	char ini[4096];
	Daemon *d;

	snprintf(ini, sizeof(ini),
		 "%sdatabase_list = %s, no_such_db\nunreachable_timeout = 0.5\n"
		 "unreachable_action = exit\nbackoff_base = 0.05\nbackoff_cap = 0.1\n",
		 dmn_base_ini(), a);
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert_int_eq(dmn_wait_exit(d, 10000), 3);
	ck_assert(dmn_log_contains(d, "[no_such_db]: unreachable for"));
	dmn_free(d, false);
	free(a);
}
END_TEST

START_TEST(test_check_option)
{
	char *out = NULL;
	char path[512], bad[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/good.ini", pgt_tmp_dir());
	snprintf(bad, sizeof(bad), "%s/bad.ini", pgt_tmp_dir());
	f = fopen(path, "w");
	fprintf(f, "%sticker_period = 0.1\n[cluster b]\nbase_connstr = host=/x\n", dmn_base_ini());
	fclose(f);
	f = fopen(bad, "w");
	fprintf(f, "[pgqd]\nticker_period = -1\nnot_a_key = 1\n[cluster]\n");
	fclose(f);
	ck_assert_int_eq(dmn_run_sync(&out, "--check", path, NULL), 0);
	ck_assert_ptr_nonnull(strstr(out, "configuration OK (2 clusters)"));
	free(out);
	ck_assert_int_eq(dmn_run_sync(&out, "--check", bad, NULL), 1);
	ck_assert_ptr_nonnull(strstr(out, "bad.ini:2: [pgqd] ticker_period"));
	ck_assert_ptr_nonnull(strstr(out, "bad.ini:3: [pgqd] not_a_key: unknown key"));
	ck_assert_ptr_nonnull(strstr(out, "NOT valid"));
	free(out);
	/* the embedded sample is itself a valid configuration */
	ck_assert_int_eq(dmn_run_sync(&out, "--ini", NULL), 0);
	f = fopen(path, "w");
	fputs(out, f);
	fclose(f);
	ck_assert_ptr_nonnull(strstr(out, "[pgqd]"));
	free(out);
	ck_assert_int_eq(dmn_run_sync(&out, "--check", path, NULL), 0);
	free(out);
	ck_assert_int_eq(dmn_run_sync(&out, "--version", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out, "pgqd-ev version "));
	free(out);
	ck_assert_int_eq(dmn_run_sync(&out, NULL), 1);
	ck_assert_ptr_nonnull(strstr(out, "requires config file"));
	free(out);
	ck_assert_int_eq(dmn_run_sync(&out, "-Z", path, NULL), 1);
	free(out);
}
END_TEST

static bool file_gone(void *path)
{
	return access(path, F_OK) != 0;
}

/* The pgqd.ini of PGQD-NOTES §9, as is, run with pgqd's -d and controlled by -r/-s. */
START_TEST(test_pgqd_ini_unchanged)
{
	char *a = queue_db();
	char dir[400], ini[512], log[512], pid[512], text[2048];
	char *out = NULL;
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/pgqdini", pgt_tmp_dir());
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	snprintf(ini, sizeof(ini), "%s/pgqd.ini", dir);
	snprintf(log, sizeof(log), "%s/pgqd.log", dir);
	snprintf(pid, sizeof(pid), "%s/pgqd.pid", dir);
	snprintf(text, sizeof(text),
		 "[pgqd]\nlogfile = %s\npidfile = %s\n"
		 "base_connstr = host=%s port=%d user=postgres\ninitial_database = postgres\n"
		 "syslog = 0\ncheck_period = 10\nstats_period = 10\n"
		 "# to tick only chosen DBs:\ndatabase_list = %s\n",
		 log, pid, pgt_socket_dir(), pgt_port(), a);
	f = fopen(ini, "w");
	fputs(text, f);
	fclose(f);
	ck_assert_int_eq(dmn_run_sync(&out, "--check", ini, NULL), 0);
	free(out);
	ck_assert_int_eq(dmn_run_sync(&out, "-d", ini, NULL), 0);
	free(out);
	ck_assert(wait_tick(a, 5000));
	ck_assert_int_eq(access(pid, F_OK), 0);
	ck_assert_int_eq(dmn_run_sync(&out, "-r", ini, NULL), 0);
	ck_assert_ptr_nonnull(strstr(out, "SIGHUP sent"));
	free(out);
	ck_assert_int_eq(dmn_run_sync(&out, "-s", ini, NULL), 0);
	ck_assert_ptr_nonnull(strstr(out, "SIGINT sent"));
	free(out);
	ck_assert(pgt_wait_until(file_gone, pid, 10000, 20));
	ck_assert_int_eq(dmn_run_sync(&out, "-s", ini, NULL), 1);
	ck_assert_ptr_nonnull(strstr(out, "Old process is not running"));
	free(out);
	f = fopen(log, "r");
	ck_assert_ptr_nonnull(f);
	{
		size_t n = fread(text, 1, sizeof(text) - 1, f);

		text[n] = '\0';
	}
	fclose(f);
	ck_assert_ptr_nonnull(strstr(text, "pgq version ok: 3.5"));
	ck_assert_ptr_nonnull(strstr(text, "Got SIGHUP, re-reading config"));
	free(a);
}
END_TEST

static bool db_has_ticks_gt1(void *arg)
{
	return ticks(arg) > 1;
}

START_TEST(test_discovery_new_and_dropped)
{
	char ini[4096];
	char *fresh;
	Daemon *d;

	snprintf(ini, sizeof(ini), "%sinitial_database = postgres\ncheck_period = 0.3\n",
		 dmn_base_ini());
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	/* a database created while running is found and ticked */
	fresh = queue_db();
	ck_assert(pgt_wait_until(db_has_ticks_gt1, fresh, 5000, 20));
	/* databases without pgq are left alone, with growing re-check intervals */
	ck_assert(dmn_wait_log(d, "[postgres]: no pgq, next check in", 3000));
	/* a dropped one is unregistered */
	{
		char sql[200];

		snprintf(sql, sizeof(sql), "drop database %s with (force)", fresh);
		pgt_exec_db("postgres", sql);
		snprintf(sql, sizeof(sql), "Unregister database: [%s]", fresh);
		ck_assert(dmn_wait_log(d, sql, 5000));
	}
	dmn_stop(d);
	free(fresh);
}
END_TEST

START_TEST(test_low_latency_wakeup)
{
	char *a = queue_db();
	char *ini;
	Daemon *d;
	DbWait w;

	pgt_exec_db(a, "select pgq.set_queue_config('q', 'low_latency', 'on')");
	/* ticks come every 30 s by period: a tick within 2 s comes from the wake-up */
	ini = ini_for("ticker_period = 30\n", a);
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(dmn_wait_log(d, "pgq version ok", 5000));
	w.db = a;
	w.above = ticks(a);
	/* the first tick after connecting is immediate; wait until it is made */
	pgt_wait_until(ticked, &w, 2000, 10);
	ck_assert(wait_tick(a, 2000));
	ck_assert(wait_tick(a, 2000));
	ck_assert(dmn_wait_log(d, "wakes: ", 3000));
	dmn_stop(d);
	free(ini);
	free(a);
}
END_TEST

/* The daemon started as systemd starts a unit with WatchdogSec (WATCHDOG_USEC
   set for it alone), once it said READY=1. */
static Daemon *start_watched(const char *ini, const char *watchdog_usec)
{
	Daemon *d;

	setenv("WATCHDOG_USEC", watchdog_usec, 1);
	unsetenv("WATCHDOG_PID");
	d = dmn_start(ini, NULL);
	unsetenv("WATCHDOG_USEC");
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	return d;
}

/* systemd's watchdog and status: WATCHDOG=1 at half of WATCHDOG_USEC, STATUS= lines. */
START_TEST(test_watchdog_and_status)
{
	char *a = queue_db();
	char *ini = ini_for("ticker_period = 0.2\n", a);
	Daemon *d;

	d = start_watched(ini, "200000");
	ck_assert(dmn_wait_notify(d, "WATCHDOG=1", 2000));
	ck_assert(dmn_wait_notify(d, "WATCHDOG=1", 2000));
	ck_assert(dmn_wait_notify(d, "STATUS=1 running", 3000));
	dmn_stop(d);
	free(ini);
	free(a);
}
END_TEST

/* A notify socket nobody reads (its queue full after a few datagrams: 10 at
   Linux's default net.unix.max_dgram_qlen) must not stop the daemon: with a
   WATCHDOG=1 every 10 ms it still ticks, and it still stops on SIGTERM. */
START_TEST(test_unread_notify_socket_does_not_block)
{
	char *a = queue_db();
	char *ini = ini_for("ticker_period = 0.2\n", a);
	Daemon *d;
	PGconn *c;
	ConnWait w;

	d = start_watched(ini, "20000");
	ck_assert(dmn_wait_log(d, "pgq version ok", 5000));
	/* from here the socket is not read: its queue fills within milliseconds */
	ck_assert(dmn_wait_log(d, "sd_notify WATCHDOG: ", 5000));
	c = pgt_connect(a);
	for (int i = 0; i < 3; i++) {
		add_event(a);
		w.conn = c;
		w.above = pgt_int(c, "select count(*) from pgq.tick");
		ck_assert_msg(pgt_wait_until(conn_ticked, &w, 3000, 10),
			      "no tick %d with the notify socket full", i + 1);
	}
	PQfinish(c);
	dmn_stop(d);
	free(ini);
	free(a);
}
END_TEST

static bool app_is(void *arg)
{
	const char **v = arg; /* db, application_name */
	char sql[256];

	snprintf(sql, sizeof(sql),
		 "select count(*) from pg_stat_activity where datname = '%s'"
		 " and application_name = '%s'",
		 v[0], v[1]);
	return pgt_int_db("postgres", sql) == 1;
}

static int64_t backend_of(const char *db)
{
	char sql[256];

	snprintf(sql, sizeof(sql),
		 "select coalesce(max(pid), 0) from pg_stat_activity where datname = '%s'"
		 " and application_name like 'pgqd-ev%%'",
		 db);
	return pgt_int_db("postgres", sql);
}

/* A changed base_connstr reconnects only the databases of that cluster. */
START_TEST(test_reload_reconnects_only_changed_cluster)
{
	char *a = queue_db(), *b = queue_db();
	char ini[4096];
	const char *want_a[2], *want_b[2];
	Daemon *d;
	int64_t pid_b;

	snprintf(ini, sizeof(ini),
		 "[pgqd]\nsyslog = 0\nticker_period = 0.2\n"
		 "[cluster one]\nbase_connstr = host=%s port=%d user=postgres\ndatabase_list = %s\n"
		 "[cluster two]\nbase_connstr = host=%s port=%d user=postgres"
		 " application_name=pgqd-ev-two\ndatabase_list = %s\n",
		 pgt_socket_dir(), pgt_port(), a, pgt_socket_dir(), pgt_port(), b);
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(wait_tick(a, 3000));
	ck_assert(wait_tick(b, 3000));
	want_b[0] = b;
	want_b[1] = "pgqd-ev-two";
	ck_assert(pgt_wait_until(app_is, want_b, 3000, 20));
	pid_b = backend_of(b);
	ck_assert_int_gt(pid_b, 0);
	snprintf(ini, sizeof(ini),
		 "[pgqd]\nsyslog = 0\nticker_period = 0.2\n"
		 "[cluster one]\nbase_connstr = host=%s port=%d user=postgres"
		 " application_name=pgqd-ev-one\ndatabase_list = %s\n"
		 "[cluster two]\nbase_connstr = host=%s port=%d user=postgres"
		 " application_name=pgqd-ev-two\ndatabase_list = %s\n",
		 pgt_socket_dir(), pgt_port(), a, pgt_socket_dir(), pgt_port(), b);
	dmn_write_ini(d, ini);
	dmn_signal(d, SIGHUP);
	ck_assert(dmn_wait_notify(d, "RELOADING=1", 5000));
	want_a[0] = a;
	want_a[1] = "pgqd-ev-one";
	ck_assert(pgt_wait_until(app_is, want_a, 3000, 20));
	ck_assert(wait_tick(a, 3000));
	ck_assert(wait_tick(b, 3000));
	/* cluster two kept its session */
	ck_assert_int_eq(backend_of(b), pid_b);
	ck_assert(dmn_log_contains(d, "[one/"));
	dmn_stop(d);
	free(a);
	free(b);
}
END_TEST

static bool http_get(int port, const char *path, char *out, size_t outlen)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	char req[256];
	size_t n = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return false;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return false;
	}
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", path);
	if (write(fd, req, strlen(req)) < 0) {
		close(fd);
		return false;
	}
	for (;;) {
		ssize_t r = read(fd, out + n, outlen - 1 - n);

		if (r <= 0 || n + (size_t)r >= outlen - 1) {
			if (r > 0)
				n += (size_t)r;
			break;
		}
		n += (size_t)r;
	}
	out[n] = '\0';
	close(fd);
	return n > 0;
}

START_TEST(test_http_metrics_and_health)
{
	char *a = queue_db();
	char extra[256], buf[65536];
	char *ini;
	Daemon *d;
	int port = 20000 + (getpid() % 20000);

	snprintf(extra, sizeof(extra), "ticker_period = 0.2\nmetrics_listen = 127.0.0.1:%d\n",
		 port);
	ini = ini_for(extra, a);
	d = dmn_start(ini, NULL);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));
	ck_assert(wait_tick(a, 3000));
	ck_assert(http_get(port, "/metrics", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "200 OK"));
	ck_assert_ptr_nonnull(strstr(buf, "pgqd_ev_ticks_total "));
	ck_assert_ptr_nonnull(strstr(buf, "pgqd_ev_databases{state=\"running\"} 1"));
	ck_assert_ptr_nonnull(strstr(buf, "pgqd_ev_tick_lateness_seconds_bucket{le=\"+Inf\"}"));
	ck_assert(http_get(port, "/health", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "200 OK"));
	ck_assert_ptr_nonnull(strstr(buf, "\"status\":\"ok\""));
	ck_assert_ptr_nonnull(strstr(buf, "\"state\":\"running\""));
	ck_assert_ptr_nonnull(strstr(buf, "\"last_tick\":\"20"));
	ck_assert(http_get(port, "/nope", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "404"));
	dmn_stop(d);
	free(ini);
	free(a);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("daemon");
	TCase *tc = pgt_tcase("daemon", 60);
	PgtOptions opts = {.need_server = true};

	tcase_add_test(tc, test_check_option);
	tcase_add_test(tc, test_ticks_three_dbs);
	tcase_add_test(tc, test_sighup_adds_db_and_bad_reload_keeps_running);
	tcase_add_test(tc, test_reload_changes_ticker_period);
	tcase_add_test(tc, test_server_restart_resumes_fast);
	tcase_add_test(tc, test_unreachable_db_does_not_delay_others);
	tcase_add_test(tc, test_hung_db_does_not_delay_others);
	tcase_add_test(tc, test_unreachable_exit_policy);
	tcase_add_test(tc, test_pgqd_ini_unchanged);
	tcase_add_test(tc, test_low_latency_wakeup);
	tcase_add_test(tc, test_http_metrics_and_health);
	tcase_add_test(tc, test_reload_reconnects_only_changed_cluster);
	tcase_add_test(tc, test_watchdog_and_status);
	tcase_add_test(tc, test_unread_notify_socket_does_not_block);
	tcase_add_test(tc, test_discovery_new_and_dropped);
	suite_add_tcase(s, tc);
	return pgt_main(s, &opts);
}
