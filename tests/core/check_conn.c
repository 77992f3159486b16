/*
 * The connection layer against a private PostgreSQL: connect, queries with
 * parameters, errors, pipelining, multi-statement requests, notices, LISTEN and
 * NOTIFY (also arriving between pipelined results), cancel and timeouts,
 * pg_terminate_backend of idle and busy connections, a server restart, a peer
 * that never answers the startup packet, the liveness check on a stopped
 * backend, lifetime recycling, the connect cap, callbacks freeing their own
 * connection, shutdown with pending requests, and statements prepared once per
 * session (also after a failed prepare, a changed result type, DEALLOCATE ALL and
 * a new session).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conntest.h"

static char conninfo[600];

static const char *db_conninfo(const char *db, bool tcp)
{
	snprintf(conninfo, sizeof(conninfo), "%s", pgt_connstr(db, tcp));
	return conninfo;
}

static bool all_done(void *arg)
{
	CtReq *r = arg;
	for (; r->seq != -1; r++)
		if (r->done == 0)
			return false;
	return true;
}

static bool reconnected(void *arg)
{
	CtConn *r = arg;
	return r->connected >= 2;
}

/* A query on a plain blocking connection returns 1 (polled while the loop runs). */
typedef struct SqlCond {
	PGconn *c;
	const char *sql;
	int64_t next_ms;
} SqlCond;

static bool sql_is_one(void *arg)
{
	SqlCond *q = arg;
	if (!pgt_due(&q->next_ms, 10))
		return false;
	return pgt_int(q->c, q->sql) == 1;
}

/* The connection's backend is running pg_sleep (a request was really sent). */
static bool sleeping(void *arg)
{
	char sql[200];
	snprintf(sql, sizeof(sql),
		 "select count(*) from pg_stat_activity where pid = %d and state = 'active'"
		 " and query like '%%pg_sleep%%'",
		 pqev_conn_backend_pid(((CtConn *)arg)->conn));
	return pgt_int_db("postgres", sql) == 1;
}

static bool nothing_pending(void *arg)
{
	return pqev_conn_pending(arg) == 0;
}

static bool has_notify(void *arg)
{
	return ((CtConn *)arg)->notifies > 0;
}

/* A round trip: everything queued before it (LISTENs after a reconnect) is done. */
static void sync_conn(PqevConn *c)
{
	CtReq r = {0};
	ct_send(c, &r, "select 1", 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &r, 10000));
	ck_assert_int_eq(r.status, PQEV_OK);
}

START_TEST(test_connect_query_params)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec = {0};
	CtReq q1 = {0}, q2 = {0}, q3 = {0};
	const char *params[] = {"40", "2"};

	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, false));
	cfg.statement_timeout = 1500 * USEC_PER_MSEC;
	cfg.application_name = "conn-test";
	ct_conn_new(&rec, &cfg);
	ck_assert_str_eq(pqev_conn_name(rec.conn), db);
	/* queued while connecting, sent once ready */
	ct_send(rec.conn, &q1, "select $1::int + $2::int", 2, params, 0, 0, NULL);
	ct_send(rec.conn, &q2, "show statement_timeout", 0, NULL, 0, 0, NULL);
	ct_send(rec.conn, &q3,
		"select application_name from pg_stat_activity where pid = pg_backend_pid()", 0,
		NULL, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &q3, 10000));
	ck_assert_int_eq(rec.connected, 1);
	ck_assert_int_eq(rec.last_streak, 0);
	ck_assert(!rec.last_recovered);
	ck_assert_int_eq(q1.done, 1);
	ck_assert_int_eq(q1.status, PQEV_OK);
	ck_assert_str_eq(q1.value, "42");
	ck_assert_str_eq(q2.value, "1500ms");
	ck_assert_str_eq(q3.value, "conn-test");
	ck_assert(pqev_conn_is_ready(rec.conn));
	ck_assert_int_gt(pqev_conn_backend_pid(rec.conn), 0);
	ck_assert_ptr_nonnull(pqev_conn_pgconn(rec.conn));
	ck_assert_int_eq(pqev_conn_pending(rec.conn), 0);
	pqev_conn_free(rec.conn);
	ck_assert_int_eq(q1.done + q2.done + q3.done, 3);
	ct_teardown();
}
END_TEST

START_TEST(test_errors_and_pipeline)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec = {0};
	enum { N = 40 };
	CtReq q[N + 1];
	char sql[N][64];

	memset(q, 0, sizeof(q));
	q[N].seq = -1;
	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, false));
	cfg.max_pipeline = 8;
	ct_conn_new(&rec, &cfg);
	ck_assert(ct_run_until(ct_is_connected, &rec, 10000));
	for (int i = 0; i < N; i++) {
		if (i % 7 == 3)
			snprintf(sql[i], sizeof(sql[i]), "select 1/0");
		else
			snprintf(sql[i], sizeof(sql[i]), "select %d", i);
		ct_send(rec.conn, &q[i], sql[i], 0, NULL, 0, 0, NULL);
	}
	ck_assert_int_eq(pqev_conn_pending(rec.conn), N);
	ck_assert(ct_run_until(all_done, q, 10000));
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(q[i].done, 1);
		ck_assert_int_eq(q[i].seq, i + 1); /* completion order = send order */
		if (i % 7 == 3) {
			ck_assert_int_eq(q[i].status, PQEV_SQL_ERROR);
			ck_assert_msg(strstr(q[i].error, "division by zero") != NULL, "%s",
				      q[i].error);
			ck_assert_msg(strncmp(q[i].error, db, strlen(db)) == 0, "%s", q[i].error);
		} else {
			char want[16];
			snprintf(want, sizeof(want), "%d", i);
			ck_assert_int_eq(q[i].status, PQEV_OK);
			ck_assert_str_eq(q[i].value, want);
		}
	}
	/* an error never aborts the next request: each has its own sync */
	ck_assert_int_eq(rec.lost, 0);
	ck_assert_int_eq(rec.connected, 1);
	pqev_conn_free(rec.conn);
	ct_teardown();
}
END_TEST

START_TEST(test_simple_multi_statement_and_notice)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec = {0};
	CtReq m = {0}, p = {0}, w = {0}, bad = {0};

	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, false));
	ct_conn_new(&rec, &cfg);
	ct_send(rec.conn, &m, "select 1; select g from generate_series(1, 5) g; select 'last'", 0,
		NULL, PQEV_Q_SIMPLE, 0, NULL);
	ct_send(rec.conn, &p, "select $1::text", 1, (const char *const[]){"after"}, 0, 0, NULL);
	ct_send(rec.conn, &w, "do $$ begin raise warning 'careful %', 7; end $$", 0, NULL, 0, 0,
		NULL);
	ct_send(rec.conn, &bad, "select 1; select nosuchcolumn", 0, NULL, PQEV_Q_SIMPLE, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &bad, 10000));
	ck_assert_int_eq(m.status, PQEV_OK);
	ck_assert_int_eq(m.nresults, 3);
	ck_assert_int_eq(m.rows_calls, 3);
	ck_assert_int_eq(m.rows, 7);
	ck_assert_str_eq(m.value, "last");
	ck_assert_int_eq(p.status, PQEV_OK);
	ck_assert_str_eq(p.value, "after");
	ck_assert_int_eq(w.status, PQEV_OK);
	ck_assert_int_eq(rec.notices, 1);
	ck_assert_str_eq(rec.notice_sev, "WARNING");
	ck_assert_str_eq(rec.notice_text, "careful 7");
	ck_assert_int_eq(bad.status, PQEV_SQL_ERROR);
	ck_assert_msg(strstr(bad.error, "nosuchcolumn") != NULL, "%s", bad.error);
	/* invalid requests are refused without a callback */
	PqevQuery q = {.sql = "select 1", .nparams = 1, .params = NULL, .on_done = NULL};
	ck_assert_int_eq(pqev_conn_send(rec.conn, &q, NULL), -EINVAL);
	pqev_conn_free(rec.conn);
	ct_teardown();
}
END_TEST

/* A NOTIFY is dispatched as soon as it arrives, before later pipelined results. */
START_TEST(test_notify_between_results)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec = {0};
	CtReq lock = {0}, big = {0}, last = {0}, warm = {0};
	PGconn *t = pgt_connect(db);
	char sql[128];

	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, false));
	ct_conn_new(&rec, &cfg);
	ck_assert_int_eq(pqev_conn_listen(rec.conn, "mid chan"), 0);
	ck_assert(pqev_conn_listening(rec.conn, "mid chan"));
	ct_send(rec.conn, &warm, "select 1", 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &warm, 10000));
	pgt_exec(t, "select pg_advisory_lock(7)");
	ct_send(rec.conn, &lock, "select pg_advisory_lock(7)", 0, NULL, 0, 0, NULL);
	ct_send(rec.conn, &big, "select g, repeat('x', 200) from generate_series(1, 100000) g", 0,
		NULL, 0, 0, NULL);
	ct_send(rec.conn, &last, "select 'end'", 0, NULL, 0, 0, NULL);
	/* wait (in the loop) until the backend blocks on the lock */
	snprintf(
		sql, sizeof(sql),
		"select count(*) from pg_stat_activity where wait_event_type = 'Lock' and pid = %d",
		pqev_conn_backend_pid(rec.conn));
	ck_assert(ct_run_until(sql_is_one, &(SqlCond){t, sql, 0}, 5000));
	pgt_exec(t, "notify \"mid chan\", 'in the middle'");
	pgt_exec(t, "select pg_advisory_unlock(7)");
	ck_assert(ct_run_until(ct_req_is_done, &last, 20000));
	ck_assert_int_eq(rec.notifies, 1);
	ck_assert_str_eq(rec.notify_chan, "mid chan");
	ck_assert_str_eq(rec.notify_payload, "in the middle");
	ck_assert_int_eq(big.rows, 100000);
	ck_assert_int_eq(lock.status, PQEV_OK);
	/* dispatched as it arrived (before the lock request's sync even), not after
	   the big result that followed it on the wire */
	ck_assert_int_lt(rec.seq, big.seq);
	ck_assert_int_lt(rec.seq, last.seq);
	/* unlisten: a later notify is not delivered */
	ck_assert_int_eq(pqev_conn_unlisten(rec.conn, "mid chan"), 0);
	ck_assert_int_eq(pqev_conn_unlisten(rec.conn, "mid chan"), -ENOENT);
	CtReq after = {0};
	ct_send(rec.conn, &after, "select 1", 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &after, 10000));
	pgt_exec(t, "notify \"mid chan\", 'gone'");
	CtReq after2 = {0};
	ct_send(rec.conn, &after2, "select pg_sleep(0.05)", 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &after2, 10000));
	ck_assert_int_eq(rec.notifies, 1);
	PQfinish(t);
	pqev_conn_free(rec.conn);
	ct_teardown();
}
END_TEST

static void terminate(const char *db, int pid)
{
	char sql[128];
	PGconn *t = pgt_connect(db);
	snprintf(sql, sizeof(sql), "select pg_terminate_backend(%d)", pid);
	ck_assert_int_eq(pgt_int(t, "select 1"), 1);
	pgt_exec(t, sql);
	PQfinish(t);
}

/* The statement's executions by name on the connection's own session (0 if
   it is not prepared there). */
static int prep_executions(PqevConn *c, const char *stmt)
{
	CtReq r = {0};
	const char *params[] = {stmt};
	ct_send(c, &r,
		"select coalesce(sum(generic_plans + custom_plans), 0) from pg_prepared_statements"
		" where name like 'pqev\\_%' and statement = $1",
		1, params, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &r, 10000));
	ck_assert_int_eq(r.status, PQEV_OK);
	return atoi(r.value);
}

static void send_prepared(PqevConn *c, CtReq *r, const char *sql, const char *param)
{
	const char *params[] = {param};
	ct_send(c, r, sql, param ? 1 : 0, param ? params : NULL, PQEV_Q_PREPARE, 0, NULL);
}

static void never_done(PqevConn *c, const PqevReply *r, void *arg)
{
	(void)c;
	(void)r;
	(void)arg;
	ck_abort_msg("on_done ran for a refused request");
}

START_TEST(test_prepared_statements)
{
	const char *db = pgt_db_new();
	const char *twice = "select $1::int * 2", *fn = "select * from prep_f()";
	PqevConnConfig cfg;
	CtConn rec = {0};
	CtReq q[6];
	PqevQuery bad = {PQEV_QUERY_INIT, .sql = "select 1",
			 .flags = PQEV_Q_SIMPLE | PQEV_Q_PREPARE, .on_done = never_done};
	int pid;

	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, false));
	ct_conn_new(&rec, &cfg);
	ck_assert(ct_run_until(ct_is_connected, &rec, 10000));
	ck_assert_int_eq(pqev_conn_send(rec.conn, &bad, NULL), -EINVAL);

	/* the first prepares; one sent before that is confirmed goes unprepared */
	memset(q, 0, sizeof(q));
	send_prepared(rec.conn, &q[0], twice, "21");
	send_prepared(rec.conn, &q[1], twice, "5");
	ck_assert(ct_run_until(ct_req_is_done, &q[1], 10000));
	ck_assert_int_eq(q[0].status, PQEV_OK);
	ck_assert_str_eq(q[0].value, "42");
	ck_assert_str_eq(q[1].value, "10");
	ck_assert_int_eq(q[0].nresults, 1);
	ck_assert_int_eq(prep_executions(rec.conn, twice), 1);
	/* from then on by name, pipelined */
	for (int i = 2; i < 6; i++)
		send_prepared(rec.conn, &q[i], twice, "4");
	ck_assert(ct_run_until(ct_req_is_done, &q[5], 10000));
	for (int i = 2; i < 6; i++) {
		ck_assert_int_eq(q[i].done, 1);
		ck_assert_str_eq(q[i].value, "8");
	}
	ck_assert_int_eq(prep_executions(rec.conn, twice), 5);

	/* a statement that cannot be prepared reports the server's own error, each time */
	memset(q, 0, sizeof(q));
	send_prepared(rec.conn, &q[0], "select no_such_column", NULL);
	send_prepared(rec.conn, &q[1], "select no_such_column", NULL);
	send_prepared(rec.conn, &q[2], twice, "1");
	ck_assert(ct_run_until(ct_req_is_done, &q[2], 10000));
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(q[i].status, PQEV_SQL_ERROR);
		ck_assert_msg(strstr(q[i].error, "column \"no_such_column\" does not exist"), "%s",
			      q[i].error);
	}
	ck_assert_str_eq(q[2].value, "2");

	/* a function replaced with another result type: one failure, then prepared anew */
	pgt_exec_db(db, "create function prep_f() returns int language sql as 'select 1'");
	memset(q, 0, sizeof(q));
	send_prepared(rec.conn, &q[0], fn, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &q[0], 10000));
	ck_assert_str_eq(q[0].value, "1");
	pgt_exec_db(db, "drop function prep_f(); create function prep_f(out a text, out b int)"
			" language sql as $$select 'new', 2$$");
	send_prepared(rec.conn, &q[1], fn, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &q[1], 10000));
	ck_assert_int_eq(q[1].status, PQEV_SQL_ERROR);
	ck_assert_msg(strstr(q[1].error, "cached plan must not change result type"), "%s",
		      q[1].error);
	send_prepared(rec.conn, &q[2], fn, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &q[2], 10000));
	ck_assert_int_eq(q[2].status, PQEV_OK);
	ck_assert_str_eq(q[2].value, "new");

	/* statements dropped under us: one failure, then nothing more prepared */
	ct_send(rec.conn, &q[3], "deallocate all", 0, NULL, 0, 0, NULL);
	send_prepared(rec.conn, &q[4], twice, "3");
	ck_assert(ct_run_until(ct_req_is_done, &q[4], 10000));
	ck_assert_int_eq(q[4].status, PQEV_SQL_ERROR);
	ck_assert_msg(strstr(q[4].error, "does not exist"), "%s", q[4].error);
	memset(q, 0, sizeof(q));
	send_prepared(rec.conn, &q[0], twice, "3");
	send_prepared(rec.conn, &q[1], "select 'other'", NULL);
	ck_assert(ct_run_until(ct_req_is_done, &q[1], 10000));
	ck_assert_str_eq(q[0].value, "6");
	ck_assert_str_eq(q[1].value, "other");
	ck_assert_int_eq(prep_executions(rec.conn, twice), 0);
	ck_assert_int_eq(prep_executions(rec.conn, "select 'other'"), 0);
	ck_assert_int_eq(rec.lost, 0);

	/* a new session prepares again */
	pid = pqev_conn_backend_pid(rec.conn);
	terminate(db, pid);
	ck_assert(ct_run_until(reconnected, &rec, 10000));
	send_prepared(rec.conn, &q[1], twice, "7");
	send_prepared(rec.conn, &q[2], twice, "8");
	ck_assert(ct_run_until(ct_req_is_done, &q[2], 10000));
	ck_assert_str_eq(q[1].value, "14");
	ck_assert_str_eq(q[2].value, "16");
	ck_assert_int_eq(prep_executions(rec.conn, twice), 1);
	pqev_conn_free(rec.conn);
	ct_teardown();
}
END_TEST

START_TEST(test_terminate_idle_listener)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec = {0};
	int pid1;

	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, true));
	cfg.retry_base = 200 * USEC_PER_MSEC;
	ct_conn_new(&rec, &cfg);
	ck_assert_int_eq(pqev_conn_listen(rec.conn, "wake"), 0);
	ck_assert(ct_run_until(ct_is_connected, &rec, 10000));
	sync_conn(rec.conn);
	pid1 = pqev_conn_backend_pid(rec.conn);
	terminate(db, pid1);
	ck_assert(ct_run_until(reconnected, &rec, 10000));
	ck_assert_int_eq(rec.lost, 1);
	ck_assert_int_eq(rec.failed, 0);
	ck_assert(rec.last_recovered);
	ck_assert_int_eq(rec.last_streak, 1);
	/* back within its backoff: the first delay, plus the connect itself */
	ck_assert_uint_le(rec.last_retry_in, 200 * USEC_PER_MSEC);
	ck_assert_int_le(rec.t_connected_ms - rec.t_lost_ms,
			 200 + (int64_t)(1000 * pgt_time_factor()));
	ck_assert_int_ne(pqev_conn_backend_pid(rec.conn), pid1);
	/* the channel was re-subscribed on the new connection */
	sync_conn(rec.conn);
	pgt_exec_db(db, "notify wake, 'again'");
	ck_assert(ct_run_until(has_notify, &rec, 5000));
	ck_assert_int_eq(rec.notifies, 1);
	ck_assert_str_eq(rec.notify_payload, "again");
	pqev_conn_free(rec.conn);
	ct_teardown();
}
END_TEST

START_TEST(test_terminate_busy)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec = {0};
	CtReq slow = {0}, queued = {0}, after = {0};
	char sql[160];
	PGconn *t = pgt_connect(db);

	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, false));
	ct_conn_new(&rec, &cfg);
	ck_assert(ct_run_until(ct_is_connected, &rec, 10000));
	ct_send(rec.conn, &slow, "select pg_sleep(30)", 0, NULL, 0, 0, NULL);
	ct_send(rec.conn, &queued, "select 2", 0, NULL, PQEV_Q_SIMPLE, 0, NULL);
	snprintf(sql, sizeof(sql),
		 "select count(*) from pg_stat_activity where state = 'active' and pid = %d",
		 pqev_conn_backend_pid(rec.conn));
	ck_assert(ct_run_until(sql_is_one, &(SqlCond){t, sql, 0}, 5000));
	snprintf(sql, sizeof(sql), "select pg_terminate_backend(%d)",
		 pqev_conn_backend_pid(rec.conn));
	pgt_exec(t, sql);
	ck_assert(ct_run_until(reconnected, &rec, 10000));
	ck_assert(ct_run_until(ct_req_is_done, &slow, 10000));
	ck_assert_int_eq(slow.done, 1);
	ck_assert_msg(slow.status == PQEV_CONN_LOST || slow.status == PQEV_SQL_ERROR, "%s",
		      pqev_status_name(slow.status));
	ck_assert_int_eq(queued.done, 1);
	ck_assert_int_eq(queued.status, PQEV_CONN_LOST);
	ck_assert_int_eq(rec.lost, 1);
	ck_assert_int_le(rec.t_connected_ms - rec.t_lost_ms,
			 250 + (int64_t)(1000 * pgt_time_factor()));
	ct_send(rec.conn, &after, "select 3", 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &after, 10000));
	ck_assert_str_eq(after.value, "3");
	ck_assert_int_eq(slow.done, 1);
	PQfinish(t);
	pqev_conn_free(rec.conn);
	ct_teardown();
}
END_TEST

enum { NRESTART = 12 };

START_TEST(test_server_restart)
{
	PqevConnConfig cfg;
	CtConn rec[NRESTART];
	const char *dbs[4];
	char ci[4][600];

	memset(rec, 0, sizeof(rec));
	for (int i = 0; i < 4; i++) {
		dbs[i] = pgt_db_new();
		snprintf(ci[i], sizeof(ci[i]), "%s", pgt_connstr(dbs[i], i % 2 == 0));
	}
	ct_setup(4);
	for (int i = 0; i < NRESTART; i++) {
		ct_config(&cfg, ci[i % 4]);
		cfg.retry_cap = 1 * USEC_PER_SEC;
		ct_conn_new(&rec[i], &cfg);
	}
	ck_assert(ct_run_until(ct_all_connected, &(CtAll){rec, NRESTART, 1}, 20000));
	ck_assert_uint_le(pqev_connlimit_peak(ct_limit()), 4);
	pgt_server_stop();
	/* the server is down: every connection notices and keeps failing */
	ck_assert(ct_run_until(ct_all_failed, &(CtAll){rec, NRESTART, 2}, 20000));
	ct_run_for(1500); /* let the backoff grow to its cap */
	pgt_server_start();
	int64_t t0 = pgt_now_ms();
	ck_assert(ct_run_until(ct_all_connected, &(CtAll){rec, NRESTART, 2}, 20000));
	int64_t worst = 0;
	for (int i = 0; i < NRESTART; i++)
		if (rec[i].t_connected_ms - t0 > worst)
			worst = rec[i].t_connected_ms - t0;
	fprintf(stderr, "# restart: all %d back %lld ms after the server accepted\n", NRESTART,
		(long long)worst);
	for (int i = 0; i < NRESTART; i++) {
		ck_assert_int_eq(rec[i].lost, 1);
		ck_assert(rec[i].last_recovered);
		ck_assert_uint_ge(rec[i].last_streak, 3);
		/* back within 2 s of the server accepting again (cap 1 s + connect;
		   the connect scales with the sanitizer and valgrind runs' factor) */
		ck_assert_int_le(rec[i].t_connected_ms - t0,
				 1000 + (int64_t)(1000 * pgt_time_factor()));
	}
	ck_assert_uint_le(pqev_connlimit_peak(ct_limit()), 4);
	for (int i = 0; i < NRESTART; i++)
		pqev_conn_free(rec[i].conn);
	ct_teardown();
}
END_TEST

/* A TCP peer that completes the handshake (kernel backlog) but never answers. */
static int silent_listener(int *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(fd, 16), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

static bool failed_twice(void *arg)
{
	return ((CtConn *)arg)->failed >= 2;
}

START_TEST(test_connect_deadline)
{
	PqevConnConfig cfg;
	CtConn rec = {0};
	CtReq q = {0};
	int port, fd = silent_listener(&port);
	char ci[200];

	snprintf(ci, sizeof(ci), "hostaddr=127.0.0.1 port=%d dbname=silent user=x password=s3cret",
		 port);
	ct_setup(0);
	ct_config(&cfg, ci);
	cfg.connect_timeout = 300 * USEC_PER_MSEC;
	cfg.retry_base = 50 * USEC_PER_MSEC;
	ct_conn_new(&rec, &cfg);
	ct_send(rec.conn, &q, "select 1", 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(failed_twice, &rec, 10000));
	ck_assert_int_eq(rec.connected, 0);
	ck_assert_int_eq(rec.last_streak, 2);
	ck_assert_msg(strstr(rec.last_msg, "silent: connect timed out") == rec.last_msg, "%s",
		      rec.last_msg);
	ck_assert_int_eq(q.done, 1); /* a request fails with the attempt */
	ck_assert_int_eq(q.status, PQEV_CONN_LOST);
	ck_assert_msg(strstr(q.error, "s3cret") == NULL, "%s", q.error);
	ck_assert_int_eq(pqev_conn_streak(rec.conn), 2);
	pqev_conn_free(rec.conn);
	close(fd);
	ct_teardown();
}
END_TEST

START_TEST(test_unresolvable_host_fails_within_deadline)
{
	PqevConnConfig cfg;
	CtConn rec = {0};

	ct_setup(0);
	ct_config(&cfg, "host=no-such-host.invalid dbname=nowhere user=x");
	cfg.connect_timeout = 1 * USEC_PER_SEC;
	ct_conn_new(&rec, &cfg);
	ck_assert(ct_run_until(failed_twice, &rec, 10000));
	ck_assert_int_eq(rec.connected, 0);
	/* either the resolver answers (no such name) or the deadline fires first */
	ck_assert_msg(strstr(rec.last_msg, "no-such-host.invalid") != NULL ||
			      strstr(rec.last_msg, "timed out after 1.0 s (resolving)") != NULL,
		      "%s", rec.last_msg);
	ck_assert_msg(strncmp(rec.last_msg, "nowhere: ", 9) == 0, "%s", rec.last_msg);
	pqev_conn_free(rec.conn);
	ct_teardown();
}
END_TEST

START_TEST(test_host_name_resolved_off_loop)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec = {0};
	CtReq q = {0};
	char ci[300];

	snprintf(ci, sizeof(ci), "host=localhost port=%d user=postgres dbname=%s", pgt_port(), db);
	ct_setup(0);
	ct_config(&cfg, ci);
	ct_conn_new(&rec, &cfg);
	ct_send(rec.conn, &q, "select inet_client_addr()::text", 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &q, 10000));
	ck_assert_int_eq(q.status, PQEV_OK);
	ck_assert_msg(strncmp(q.value, "127.0.0.1", 9) == 0 || strncmp(q.value, "::1", 3) == 0,
		      "%s", q.value);
	pqev_conn_free(rec.conn);
	ct_teardown();
}
END_TEST

START_TEST(test_cancel_and_timeout)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec = {0};
	CtReq slow = {0}, queued = {0}, to = {0}, after = {0}, qto = {0};
	PqevReq *h_slow, *h_queued;

	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, false));
	ct_conn_new(&rec, &cfg);
	ck_assert(ct_run_until(ct_is_connected, &rec, 10000));
	ct_send(rec.conn, &slow, "select pg_sleep(30)", 0, NULL, 0, 0, &h_slow);
	ct_send(rec.conn, &queued, "select 'q'", 0, NULL, PQEV_Q_SIMPLE, 0, &h_queued);
	/* not sent yet (a simple request waits for the pipeline to drain): just removed */
	pqev_req_cancel(h_queued);
	ck_assert_int_eq(queued.done, 1);
	ck_assert_int_eq(queued.status, PQEV_CANCELED);
	ck_assert(ct_run_until(sleeping, &rec, 5000));
	int pid1 = pqev_conn_backend_pid(rec.conn);
	pqev_req_cancel(h_slow);
	ck_assert_int_eq(slow.done, 1);
	ck_assert_int_eq(slow.status, PQEV_CANCELED);
	ck_assert(ct_run_until(reconnected, &rec, 10000));
	ck_assert_int_ne(pqev_conn_backend_pid(rec.conn), pid1);
	ck_assert_int_eq(rec.lost, 0); /* a cancel is not a failure */
	/* a timeout on a sent request */
	ct_send(rec.conn, &to, "select pg_sleep(30)", 0, NULL, 0, 200 * USEC_PER_MSEC, NULL);
	ct_send(rec.conn, &after, "select 'after'", 0, NULL, PQEV_Q_SIMPLE, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &after, 10000));
	ck_assert_int_eq(to.done, 1);
	ck_assert_int_eq(to.status, PQEV_TIMEOUT);
	ck_assert_int_eq(after.status, PQEV_OK); /* queued ones survive the restart */
	ck_assert_str_eq(after.value, "after");
	/* a timeout while queued behind a closed connection */
	pqev_conn_close(rec.conn);
	ck_assert_int_eq(pqev_conn_send(rec.conn,
					&(PqevQuery){.sql = "select 1", .on_done = (PqevDoneFn)1},
					NULL),
			 -ENOTCONN);
	ck_assert_int_eq(pqev_conn_start(rec.conn), 0);
	ct_send(rec.conn, &qto, "select 1", 0, NULL, 0, 1, NULL); /* 1 us */
	ck_assert(ct_run_until(ct_req_is_done, &qto, 10000));
	ck_assert_int_eq(qto.done, 1);
	ck_assert_int_eq(qto.status, PQEV_TIMEOUT);
	/* nothing queued or in flight: no completion can come again */
	ck_assert(ct_run_until(nothing_pending, rec.conn, 10000));
	ck_assert_int_eq(slow.done + queued.done + to.done + after.done + qto.done, 5);
	pqev_conn_free(rec.conn);
	ct_teardown();
}
END_TEST

/* The liveness checks of one backend, as the server sees them. */
typedef struct LiveSeen {
	PGconn *c;
	int pid;
	char last[64];
	int changes; /* state_change moved this often since the first look */
	int64_t next_ms;
} LiveSeen;

static bool two_liveness_checks(void *arg)
{
	LiveSeen *l = arg;
	char sql[128];
	/* the loop runs between two looks */
	if (!pgt_due(&l->next_ms, 20))
		return false;
	snprintf(sql, sizeof(sql),
		 "select coalesce(state_change::text, '') from pg_stat_activity where pid = %d",
		 l->pid);
	char *v = pgt_value(l->c, sql);
	if (l->last[0] && strcmp(v, l->last) != 0)
		l->changes++;
	snprintf(l->last, sizeof(l->last), "%s", v);
	free(v);
	return l->changes >= 2;
}

START_TEST(test_liveness_detects_stopped_backend)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec = {0};

	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, true));
	cfg.idle_check = 200 * USEC_PER_MSEC;
	cfg.idle_check_timeout = 300 * USEC_PER_MSEC;
	ct_conn_new(&rec, &cfg);
	ck_assert_int_eq(pqev_conn_listen(rec.conn, "alive"), 0);
	ck_assert(ct_run_until(ct_is_connected, &rec, 10000));
	int pid1 = pqev_conn_backend_pid(rec.conn);
	/* a couple of liveness checks pass quietly: the server saw two of them
	   (each moves the backend's state_change) */
	LiveSeen live = {.c = pgt_connect(db), .pid = pid1};
	ck_assert(ct_run_until(two_liveness_checks, &live, 10000));
	PQfinish(live.c);
	ck_assert_int_eq(rec.lost, 0);
	ck_assert_int_eq(pqev_conn_backend_pid(rec.conn), pid1);
	/* a backend that keeps its socket but never answers: only the check can tell */
	ck_assert_int_eq(kill(pid1, SIGSTOP), 0);
	bool ok = ct_run_until(reconnected, &rec, 10000);
	kill(pid1, SIGCONT);
	ck_assert(ok);
	ck_assert_int_eq(rec.lost, 1);
	ck_assert_msg(strstr(rec.last_msg, "connected") != NULL, "%s", rec.last_msg);
	sync_conn(rec.conn);
	pgt_exec_db(db, "notify alive, 'yes'");
	ck_assert(ct_run_until(has_notify, &rec, 5000));
	ck_assert_int_eq(rec.notifies, 1);
	pqev_conn_free(rec.conn);
	ct_teardown();
}
END_TEST

START_TEST(test_lifetime_recycle)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec = {0};

	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, false));
	cfg.lifetime = 300 * USEC_PER_MSEC;
	ct_conn_new(&rec, &cfg);
	ck_assert(ct_run_until(ct_is_connected, &rec, 10000));
	int pid1 = pqev_conn_backend_pid(rec.conn);
	ck_assert(ct_run_until(reconnected, &rec, 10000));
	ck_assert_int_eq(rec.recycled, 1);
	ck_assert_int_eq(rec.lost, 0);
	ck_assert(!rec.last_recovered);
	ck_assert_int_ne(pqev_conn_backend_pid(rec.conn), pid1);
	pqev_conn_free(rec.conn);
	ct_teardown();
}
END_TEST

enum { NCAP = 30 };

START_TEST(test_connect_cap)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec[NCAP];

	memset(rec, 0, sizeof(rec));
	ct_setup(3);
	ct_config(&cfg, db_conninfo(db, false));
	for (int i = 0; i < NCAP; i++)
		ct_conn_new(&rec[i], &cfg);
	ck_assert_uint_eq(pqev_connlimit_active(ct_limit()), 0); /* attempts start in the loop */
	event_base_loop(ct_base(), EVLOOP_NONBLOCK);
	ck_assert_uint_eq(pqev_connlimit_active(ct_limit()), 3);
	/* a first attempt may have ended within that pass (a nonblocking connect
	   to a full listen queue fails at once: seen under the sanitizers' load),
	   its slot going to the next in line */
	int done = 0;
	for (int i = 0; i < NCAP; i++)
		done += rec[i].connected > 0 || rec[i].failed > 0;
	ck_assert_uint_eq(pqev_connlimit_waiting(ct_limit()) + (unsigned)done, NCAP - 3);
	ck_assert(ct_run_until(ct_all_connected, &(CtAll){rec, NCAP, 1}, 20000));
	ck_assert_uint_eq(pqev_connlimit_peak(ct_limit()), 3);
	ck_assert_uint_eq(pqev_connlimit_active(ct_limit()), 0);
	ck_assert_int_eq(pqev_connlimit_free(ct_limit()), -EBUSY);
	for (int i = 0; i < NCAP; i++)
		pqev_conn_free(rec[i].conn);
	ct_teardown();
}
END_TEST

START_TEST(test_callbacks_free_their_connection)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn a = {0}, b = {.free_on_event = true}, n = {.free_on_notify = true};
	CtReq first = {0}, second = {0}, onb = {0};

	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, false));
	/* a: on_done of the first request frees the connection; the second fails once */
	ct_conn_new(&a, &cfg);
	first.free_conn = a.conn;
	ct_send(a.conn, &first, "select 1", 0, NULL, 0, 0, NULL);
	ct_send(a.conn, &second, "select 2", 0, NULL, 0, 0, NULL);
	/* b: freed inside on_event(CONNECTED) with a request queued */
	ct_conn_new(&b, &cfg);
	ct_send(b.conn, &onb, "select 1", 0, NULL, 0, 0, NULL);
	/* n: freed inside on_notify */
	ct_conn_new(&n, &cfg);
	ck_assert_int_eq(pqev_conn_listen(n.conn, "bye"), 0);
	ck_assert(ct_run_until(ct_req_is_done, &second, 10000));
	/* b's session may start after the others' (seen on a fast machine: n had
	   its notify before b connected) */
	ck_assert(ct_run_until(ct_is_connected, &b, 10000));
	ck_assert(ct_run_until(ct_is_connected, &n, 10000));
	sync_conn(n.conn);
	pgt_exec_db(db, "notify bye");
	ck_assert(ct_run_until(has_notify, &n, 5000));
	ck_assert_int_eq(n.notifies, 1);
	ck_assert_ptr_null(n.conn);
	ck_assert_int_eq(first.done, 1);
	ck_assert_int_eq(first.status, PQEV_OK);
	ck_assert_int_eq(second.done, 1);
	/* either sent together with the first (then dropped) or still queued */
	ck_assert_int_eq(second.status, PQEV_CLOSED);
	ck_assert_int_eq(b.connected, 1);
	ck_assert_ptr_null(b.conn);
	ck_assert_int_eq(onb.done, 1);
	ck_assert_int_eq(onb.status, PQEV_CLOSED);
	ct_run_passes(3); /* nothing more comes */
	ck_assert_int_eq(first.done + second.done + onb.done, 3);
	ct_teardown(); /* -EBUSY here would mean a connection was not really freed */
}
END_TEST

START_TEST(test_callback_closes_and_restarts)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec = {0};
	CtReq first = {0}, second = {0}, third = {0};

	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, false));
	ct_conn_new(&rec, &cfg);
	first.restart_conn = rec.conn;
	ct_send(rec.conn, &first, "select 1", 0, NULL, 0, 0, NULL);
	ct_send(rec.conn, &second, "select 2", 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &second, 10000));
	ck_assert_int_eq(first.status, PQEV_OK);
	ck_assert_int_eq(second.status, PQEV_CLOSED);
	ck_assert(ct_run_until(reconnected, &rec, 10000));
	ct_send(rec.conn, &third, "select 3", 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &third, 10000));
	ck_assert_str_eq(third.value, "3");
	ck_assert_int_eq(first.done + second.done + third.done, 3);
	ck_assert_int_eq(rec.lost + rec.failed, 0);
	pqev_conn_free(rec.conn);
	ct_teardown();
}
END_TEST

START_TEST(test_shutdown_fails_pending_once)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec = {0}, early = {0};
	enum { N = 10 };
	CtReq q[N], e[3];

	memset(q, 0, sizeof(q));
	memset(e, 0, sizeof(e));
	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, false));
	ct_conn_new(&rec, &cfg);
	ck_assert(ct_run_until(ct_is_connected, &rec, 10000));
	ct_send(rec.conn, &q[0], "select pg_sleep(30)", 0, NULL, 0, 0, NULL);
	for (int i = 1; i < N; i++)
		ct_send(rec.conn, &q[i], "select 1", 0, NULL, i % 2 ? PQEV_Q_SIMPLE : 0, 0, NULL);
	ck_assert(ct_run_until(sleeping, &rec, 5000));
	/* and one still connecting */
	ct_conn_new(&early, &cfg);
	for (int i = 0; i < 3; i++)
		ct_send(early.conn, &e[i], "select 1", 0, NULL, 0, 0, NULL);
	pqev_conn_free(rec.conn);
	pqev_conn_free(early.conn);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(q[i].done, 1);
		ck_assert_int_eq(q[i].status, PQEV_CLOSED);
	}
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(e[i].done, 1);
		ck_assert_int_eq(e[i].status, PQEV_CLOSED);
	}
	ct_run_passes(3); /* nothing more comes */
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(q[i].done, 1);
	ct_teardown();
}
END_TEST

START_TEST(test_set_config_and_reconnect)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	CtConn rec = {0};
	CtReq a = {0}, b = {0}, bad = {0};

	ct_setup(0);
	ct_config(&cfg, db_conninfo(db, false));
	ct_conn_new(&rec, &cfg);
	ct_send(rec.conn, &a, "show statement_timeout", 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &a, 10000));
	ck_assert_str_eq(a.value, "0");
	/* new settings apply from the next connection */
	cfg.statement_timeout = 2 * USEC_PER_SEC;
	cfg.name = "renamed";
	ck_assert_int_eq(pqev_conn_set_config(rec.conn, &cfg), 0);
	ck_assert_str_eq(pqev_conn_name(rec.conn), "renamed");
	pqev_conn_reconnect(rec.conn);
	ct_send(rec.conn, &b, "show statement_timeout", 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &b, 10000));
	ck_assert_str_eq(b.value, "2s");
	ck_assert_int_eq(rec.connected, 2);
	ck_assert_int_eq(rec.lost, 0);
	/* a statement_timeout hit is an SQL error, the connection stays */
	ct_send(rec.conn, &bad, "select pg_sleep(5)", 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, &bad, 10000));
	ck_assert_int_eq(bad.status, PQEV_SQL_ERROR);
	ck_assert_msg(strstr(bad.error, "renamed: canceling statement due to statement timeout") ==
			      bad.error,
		      "%s", bad.error);
	ck_assert_int_eq(rec.lost, 0);
	/* a bad conninfo at the next attempt is a connect failure naming the cause */
	cfg.conninfo = "dbname=x nonsense_key=1";
	ck_assert_int_eq(pqev_conn_set_config(rec.conn, &cfg), 0);
	pqev_conn_reconnect(rec.conn);
	ck_assert_int_eq(rec.failed, 1);
	ck_assert_msg(strstr(rec.last_msg, "nonsense_key") != NULL, "%s", rec.last_msg);
	ck_assert_int_eq(pqev_conn_state(rec.conn), PQEV_CONN_BACKOFF);
	pqev_conn_free(rec.conn);
	ct_teardown();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conn");
	TCase *tc = pgt_tcase("conn", 60);
	tcase_add_test(tc, test_connect_query_params);
	tcase_add_test(tc, test_errors_and_pipeline);
	tcase_add_test(tc, test_simple_multi_statement_and_notice);
	tcase_add_test(tc, test_notify_between_results);
	tcase_add_test(tc, test_terminate_idle_listener);
	tcase_add_test(tc, test_terminate_busy);
	tcase_add_test(tc, test_prepared_statements);
	tcase_add_test(tc, test_server_restart);
	tcase_add_test(tc, test_connect_deadline);
	tcase_add_test(tc, test_host_name_resolved_off_loop);
	tcase_add_test(tc, test_unresolvable_host_fails_within_deadline);
	tcase_add_test(tc, test_cancel_and_timeout);
	tcase_add_test(tc, test_liveness_detects_stopped_backend);
	tcase_add_test(tc, test_lifetime_recycle);
	tcase_add_test(tc, test_connect_cap);
	tcase_add_test(tc, test_callbacks_free_their_connection);
	tcase_add_test(tc, test_callback_closes_and_restarts);
	tcase_add_test(tc, test_shutdown_fails_pending_once);
	tcase_add_test(tc, test_set_config_and_reconnect);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
