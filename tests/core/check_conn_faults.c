/*
 * Connection layer edge cases found in review, against a private PostgreSQL:
 * lifetime recycling never drops an open transaction, the server's reason for
 * ending an idle session reaches on_notice, a session that dies right after
 * connecting keeps backing off instead of retrying at the base delay forever,
 * and callbacks that close, reconnect or free from inside on_rows.
 */
#include <stdio.h>
#include <string.h>

#include "conntest.h"

static char conninfo[600];

static const char *db_conninfo(const char *db)
{
	snprintf(conninfo, sizeof(conninfo), "%s", pgt_connstr(db, false));
	return conninfo;
}

static void run_ok(PqevConn *c, const char *sql, CtReq *r)
{
	memset(r, 0, sizeof(*r));
	ct_send(c, r, sql, 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(ct_req_is_done, r, 10000));
	ck_assert_msg(r->status == PQEV_OK, "%s: %s", sql, r->error);
}

static void terminate(const char *db, int pid)
{
	char sql[96];
	snprintf(sql, sizeof(sql), "select pg_terminate_backend(%d)", pid);
	pgt_exec_db(db, sql);
}

/* A fresh loop and a connected, recorded connection. */
static void up(CtConn *rec, const char *ci, usec_t lifetime, usec_t statement_timeout)
{
	PqevConnConfig cfg;
	ct_setup(0);
	ct_config(&cfg, ci);
	cfg.lifetime = lifetime;
	cfg.statement_timeout = statement_timeout;
	ct_conn_new(rec, &cfg);
	ck_assert(ct_run_until(ct_is_connected, rec, 10000));
}

static void down(CtConn *rec)
{
	pqev_conn_free(rec->conn);
	ct_teardown();
}

static bool recycled(void *arg)
{
	return ((CtConn *)arg)->recycled >= 1;
}

static bool lost_once(void *arg)
{
	return ((CtConn *)arg)->lost >= 1;
}

/*
 * A session idle inside BEGIN ... is not recycled: dropping it would roll the
 * work back and let the next request (COMMIT) succeed on a fresh session.
 */
START_TEST(test_recycle_waits_for_transaction)
{
	CtConn rec = {0};
	CtReq r;

	up(&rec, db_conninfo(pgt_db_new()), 200 * USEC_PER_MSEC, 0);
	int pid = pqev_conn_backend_pid(rec.conn);
	run_ok(rec.conn, "begin", &r);
	run_ok(rec.conn, "create table t_in_tx(x int)", &r);
	/* well past the lifetime, idle in the transaction */
	ck_assert(!ct_run_until(recycled, &rec, 800));
	ck_assert_int_eq(pqev_conn_backend_pid(rec.conn), pid);
	run_ok(rec.conn, "commit", &r);
	ck_assert(ct_run_until(recycled, &rec, 10000));
	run_ok(rec.conn, "select count(*) from t_in_tx", &r);
	ck_assert_int_ne(pqev_conn_backend_pid(rec.conn), pid);
	down(&rec);
}
END_TEST

/* pg_terminate_backend of an idle session that has run pipelined requests. */
START_TEST(test_terminate_reason_reaches_on_notice)
{
	const char *db = pgt_db_new();
	CtConn rec = {0};
	CtReq r;

	up(&rec, db_conninfo(db), 0, 0);
	run_ok(rec.conn, "select 1", &r);
	terminate(db, pqev_conn_backend_pid(rec.conn));
	ck_assert(ct_run_until(lost_once, &rec, 10000));
	ck_assert_int_eq(rec.notices, 1);
	ck_assert_str_eq(rec.notice_sev, "FATAL");
	ck_assert_msg(strstr(rec.notice_text, "administrator command") != NULL, "%s",
		      rec.notice_text);
	down(&rec);
}
END_TEST

/* Terminates the backend of every new session before it can do any work. */
typedef struct Flap {
	CtConn rec;
	const char *db;
	int kills;
	usec_t retry[8];
	int nretry;
} Flap;

static void flap_event(PqevConn *c, const PqevConnEvent *ev, void *arg)
{
	Flap *f = arg;
	if (ev->type == PQEV_EV_CONNECTED && f->kills < 5) {
		f->kills++;
		terminate(f->db, pqev_conn_backend_pid(c));
	} else if (ev->type == PQEV_EV_LOST && f->nretry < 8) {
		f->retry[f->nretry++] = ev->retry_in;
	} else if (ev->type == PQEV_EV_CONNECTED) {
		f->rec.connected++;
	}
}

static bool flap_settled(void *arg)
{
	return ((Flap *)arg)->rec.connected >= 1;
}

static bool six_retries(void *arg)
{
	return ((Flap *)arg)->nretry >= 6;
}

START_TEST(test_flapping_session_backs_off)
{
	Flap f = {.db = pgt_db_new()};
	PqevConnConfig cfg;
	PqevConnCallbacks cb = {.on_event = flap_event, .arg = &f};
	CtReq r;

	ct_setup(0);
	ct_config(&cfg, db_conninfo(f.db));
	cfg.retry_base = 20 * USEC_PER_MSEC;
	cfg.retry_cap = 10 * USEC_PER_SEC;
	PqevConn *c = pqev_conn_new(ct_limit(), &cfg, &cb);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(pqev_conn_start(c), 0);
	ck_assert(ct_run_until(flap_settled, &f, 20000));
	ck_assert_int_eq(f.nretry, 5);
	/* connecting is not success: each quick death doubles the delay's range */
	for (int i = 1; i < f.nretry; i++) {
		usec_t d = 20 * USEC_PER_MSEC << i;
		ck_assert_msg(f.retry[i] >= d / 2 && f.retry[i] <= d, "retry %d: %llu us", i,
			      (unsigned long long)f.retry[i]);
	}
	/* a completed request proves the session: the next failure starts from base */
	run_ok(c, "select 1", &r);
	terminate(f.db, pqev_conn_backend_pid(c));
	ck_assert(ct_run_until(six_retries, &f, 5000));
	ck_assert_int_eq(f.nretry, 6);
	ck_assert_uint_le(f.retry[5], 20 * USEC_PER_MSEC);
	pqev_conn_free(c);
	ct_teardown();
}
END_TEST

/* on_rows closes, reconnects or frees its connection: every request ends once. */
typedef struct RowsAct {
	CtReq req[3];
	CtConn rec;
	int action; /* 0 close, 1 reconnect, 2 free */
	int rows_calls;
} RowsAct;

static void act_rows(PqevConn *c, const PGresult *res, void *arg)
{
	RowsAct *a = arg;
	a->rows_calls++;
	if (a->action == 0)
		pqev_conn_close(c);
	else if (a->action == 1)
		pqev_conn_reconnect(c);
	else
		a->rec.conn = pqev_conn_free(c);
}

static void act_done(PqevConn *c, const PqevReply *reply, void *arg)
{
	CtReq *r = arg;
	r->done++;
	r->status = reply->status;
}

static bool act_all_done(void *arg)
{
	RowsAct *a = arg;
	return a->req[0].done && a->req[1].done && a->req[2].done;
}

START_TEST(test_on_rows_closes_reconnects_frees)
{
	const char *db = pgt_db_new();

	for (int action = 0; action < 3; action++) {
		RowsAct a = {.action = action};
		up(&a.rec, db_conninfo(db), 0, 0);
		PqevQuery q = {.sql = "select 1",
			       .on_rows = act_rows,
			       .on_done = act_done,
			       .arg = &a.req[0]};
		/* on_rows gets the RowsAct through req[0]'s address (the first member) */
		ck_assert_int_eq(pqev_conn_send(a.rec.conn, &q, NULL), 0);
		q.on_rows = NULL;
		q.arg = &a.req[1];
		ck_assert_int_eq(pqev_conn_send(a.rec.conn, &q, NULL), 0);
		q.sql = "select 3";
		q.flags = PQEV_Q_SIMPLE;
		q.arg = &a.req[2];
		ck_assert_int_eq(pqev_conn_send(a.rec.conn, &q, NULL), 0);
		ck_assert(ct_run_until(act_all_done, &a, 10000));
		ct_run_passes(3); /* nothing more comes */
		ck_assert_int_eq(a.rows_calls, 1);
		for (int i = 0; i < 3; i++)
			ck_assert_int_eq(a.req[i].done, 1);
		if (action == 0) {
			ck_assert_int_eq(a.req[0].status, PQEV_CLOSED);
			ck_assert_int_eq(a.req[2].status, PQEV_CLOSED);
		} else if (action == 1) {
			/* the simple request was queued behind the pipeline: it waits */
			ck_assert_int_eq(a.req[0].status, PQEV_CONN_LOST);
			ck_assert_int_eq(a.req[2].status, PQEV_OK);
		}
		down(&a.rec);
	}
}
END_TEST

/* on_notice frees its connection in the middle of a pipeline: each request ends once. */
typedef struct NoticeFree {
	CtReq req[3];
	int notices;
} NoticeFree;

static void free_on_notice(PqevConn *c, const char *sev, const char *text, void *arg)
{
	((NoticeFree *)arg)->notices++;
	pqev_conn_free(c);
}

static bool nf_all_done(void *arg)
{
	NoticeFree *nf = arg;
	return nf->req[0].done && nf->req[1].done && nf->req[2].done;
}

START_TEST(test_on_notice_frees_mid_pipeline)
{
	const char *db = pgt_db_new();
	PqevConnConfig cfg;
	NoticeFree nf = {0};
	PqevConnCallbacks cb = {.on_notice = free_on_notice, .arg = &nf};
	const char *sql[3] = {"select 1", "do $$ begin raise notice 'bye'; end $$", "select 3"};

	ct_setup(0);
	ct_config(&cfg, db_conninfo(db));
	PqevConn *c = pqev_conn_new(ct_limit(), &cfg, &cb);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(pqev_conn_start(c), 0);
	for (int i = 0; i < 3; i++)
		ct_send(c, &nf.req[i], sql[i], 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(nf_all_done, &nf, 10000));
	ct_run_passes(3); /* nothing more comes */
	ck_assert_int_eq(nf.notices, 1);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(nf.req[i].done, 1);
	ck_assert_int_eq(nf.req[0].status, PQEV_OK);
	ck_assert_int_eq(nf.req[2].status, PQEV_CLOSED);
	ct_teardown();
}
END_TEST

static void on_value(PqevConn *c, const PqevReply *reply, void *arg)
{
	char *out = arg;
	snprintf(out, 2048, "%s",
		 reply->status == PQEV_OK ? PQgetvalue(reply->result, 0, 0) : reply->error);
}

static bool got_value(void *arg)
{
	return ((char *)arg)[0] != '\0';
}

/* statement_timeout joins the conninfo's own options, however long they are. */
START_TEST(test_long_options_with_statement_timeout)
{
	const char *db = pgt_db_new();
	CtConn rec = {0};
	char path[1400] = "", ci[2200], got[2048] = "";
	size_t n = 0;

	for (int i = 0; i < 200; i++)
		n += (size_t)snprintf(path + n, sizeof(path) - n, "%ss%04d", i ? "," : "", i);
	snprintf(ci, sizeof(ci), "%s options='-c search_path=%s'", db_conninfo(db), path);
	up(&rec, ci, 0, 7 * USEC_PER_SEC);
	ck_assert_int_eq(pqev_conn_query(rec.conn, "show search_path", 0, NULL, on_value, got), 0);
	ck_assert(ct_run_until(got_value, got, 10000));
	ck_assert_str_eq(got, path);
	got[0] = '\0';
	ck_assert_int_eq(
		pqev_conn_query(rec.conn, "show statement_timeout", 0, NULL, on_value, got), 0);
	ck_assert(ct_run_until(got_value, got, 10000));
	ck_assert_str_eq(got, "7s");
	down(&rec);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conn-faults");
	TCase *tc = pgt_tcase("conn-faults", 60);
	tcase_add_test(tc, test_recycle_waits_for_transaction);
	tcase_add_test(tc, test_terminate_reason_reaches_on_notice);
	tcase_add_test(tc, test_flapping_session_backs_off);
	tcase_add_test(tc, test_on_rows_closes_reconnects_frees);
	tcase_add_test(tc, test_long_options_with_statement_timeout);
	tcase_add_test(tc, test_on_notice_frees_mid_pipeline);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
