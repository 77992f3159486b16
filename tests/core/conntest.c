/* Helpers for the connection layer tests (see conntest.h). */
#include <stdio.h>
#include <string.h>

#include <pgqd-ev/pqev_clock.h>

#include "conntest.h"

int ct_seq;

static struct event_base *g_base;
static PqevConnLimit *g_lim;

struct event_base *ct_base(void)
{
	return g_base;
}

PqevConnLimit *ct_limit(void)
{
	return g_lim;
}

void ct_setup(unsigned max_connecting)
{
	/* precise timers: with libevent's default coarse clock (a 4 ms tick) a 1 us
	   request timeout could fire after a local connect and query had finished */
	g_base = pqev_clock_base_new();
	ck_assert_ptr_nonnull(g_base);
	g_lim = pqev_connlimit_new(g_base, max_connecting);
	ck_assert_ptr_nonnull(g_lim);
	ct_seq = 0;
}

void ct_teardown(void)
{
	ck_assert_int_eq(pqev_connlimit_free(g_lim), 0);
	event_base_free(g_base);
	g_lim = NULL;
	g_base = NULL;
}

/* The layer hands each message out twice: "<name>: <detail>" and the detail alone. */
static void ct_assert_label_detail(PqevConn *c, const char *msg, const char *detail)
{
	char want[1024];
	ck_assert_ptr_nonnull(msg);
	ck_assert_ptr_nonnull(detail);
	snprintf(want, sizeof(want), "%s: %s", pqev_conn_name(c), detail);
	ck_assert_msg(strncmp(msg, want, strlen(msg)) == 0, "message \"%s\" is not \"%s\"", msg,
		      want);
}

static void on_event(PqevConn *c, const PqevConnEvent *ev, void *arg)
{
	CtConn *r = arg;
	ck_assert_ptr_nonnull(ev->message);
	ck_assert_msg(strstr(ev->message, pqev_conn_name(c)) == ev->message,
		      "message does not start with the name: %s", ev->message);
	ck_assert_msg(strstr(ev->message, "password") == NULL &&
			      strstr(ev->message, "s3cret") == NULL,
		      "message shows a password: %s", ev->message);
	ct_assert_label_detail(c, ev->message, ev->detail);
	snprintf(r->last_msg, sizeof(r->last_msg), "%s", ev->message);
	r->last_streak = ev->streak;
	r->last_recovered = ev->recovered;
	switch (ev->type) {
	case PQEV_EV_CONNECTED:
		r->connected++;
		r->t_connected_ms = pgt_now_ms();
		if (r->free_on_event) {
			ck_assert_ptr_null(pqev_conn_free(c));
			r->conn = NULL;
		}
		break;
	case PQEV_EV_CONNECT_FAILED:
		r->failed++;
		r->t_lost_ms = pgt_now_ms();
		r->last_retry_in = ev->retry_in;
		break;
	case PQEV_EV_LOST:
		r->lost++;
		r->t_lost_ms = pgt_now_ms();
		r->last_retry_in = ev->retry_in;
		break;
	case PQEV_EV_RECYCLED:
		r->recycled++;
		break;
	}
}

static void on_notify(PqevConn *c, const char *chan, const char *payload, int pid, void *arg)
{
	CtConn *r = arg;
	r->notifies++;
	r->seq = ++ct_seq;
	snprintf(r->notify_chan, sizeof(r->notify_chan), "%s", chan);
	snprintf(r->notify_payload, sizeof(r->notify_payload), "%s", payload);
	if (r->free_on_notify) {
		pqev_conn_free(c);
		r->conn = NULL;
	}
}

static void on_notice(PqevConn *c, const char *sev, const char *text, void *arg)
{
	CtConn *r = arg;
	r->notices++;
	snprintf(r->notice_sev, sizeof(r->notice_sev), "%s", sev);
	snprintf(r->notice_text, sizeof(r->notice_text), "%s", text);
}

const PqevConnCallbacks ct_callbacks_template = {
	.on_event = on_event, .on_notify = on_notify, .on_notice = on_notice};

void ct_config(PqevConnConfig *cfg, const char *conninfo)
{
	pqev_conn_config_init(cfg);
	cfg->conninfo = conninfo;
	cfg->connect_timeout = 5 * USEC_PER_SEC;
	cfg->retry_base = 100 * USEC_PER_MSEC;
	cfg->retry_cap = 1 * USEC_PER_SEC;
}

PqevConn *ct_conn_new(CtConn *rec, const PqevConnConfig *cfg)
{
	PqevConnCallbacks cb = ct_callbacks_template;
	cb.arg = rec;
	rec->conn = pqev_conn_new(g_lim, cfg, &cb);
	ck_assert_ptr_nonnull(rec->conn);
	ck_assert_int_eq(pqev_conn_start(rec->conn), 0);
	return rec->conn;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

bool ct_run_until(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
	int64_t deadline = pgt_now_ms() + timeout_ms;
	struct timeval tv = {0, 20000};
	/* a periodic wake-up so the condition is re-checked even when nothing happens */
	struct event *tick = event_new(g_base, -1, EV_PERSIST, tick_cb, NULL);
	bool ok;
	event_add(tick, &tv);
	while (!(ok = cond ? cond(arg) : false) && pgt_now_ms() < deadline)
		event_base_loop(g_base, EVLOOP_ONCE);
	event_free(tick);
	return ok;
}

void ct_run_for(int ms)
{
	ct_run_until(NULL, NULL, ms);
}

static void pass_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(*(int *)arg)++;
}

void ct_run_passes(int n)
{
	/* a zero timer re-armed after each firing: it fires once per loop pass, after
	   the events already active (deferred callbacks, zero timers) of that pass */
	int fired = 0;
	struct event *ev = evtimer_new(g_base, pass_cb, &fired);
	struct timeval zero = {0, 0};
	ck_assert_ptr_nonnull(ev);
	while (fired < n) {
		int before = fired;
		evtimer_add(ev, &zero);
		while (fired == before)
			event_base_loop(g_base, EVLOOP_ONCE);
	}
	event_free(ev);
}

bool ct_is_connected(void *rec)
{
	return ((CtConn *)rec)->connected >= 1;
}

static bool all_at_least(const CtAll *a, bool failed)
{
	for (int i = 0; i < a->n; i++)
		if ((failed ? a->rec[i].failed : a->rec[i].connected) < a->min)
			return false;
	return true;
}

bool ct_all_connected(void *all)
{
	return all_at_least(all, false);
}

bool ct_all_failed(void *all)
{
	return all_at_least(all, true);
}

bool ct_req_is_done(void *req)
{
	return ((CtReq *)req)->done >= 1;
}

static void on_rows(PqevConn *c, const PGresult *res, void *arg)
{
	CtReq *r = arg;
	r->rows_calls++;
	r->rows += PQntuples(res);
}

static void on_done(PqevConn *c, const PqevReply *reply, void *arg)
{
	CtReq *r = arg;
	r->done++;
	r->seq = ++ct_seq;
	r->status = reply->status;
	r->nresults = (int)reply->nresults;
	if (reply->status == PQEV_OK) {
		ck_assert_ptr_null(reply->error);
		ck_assert_ptr_null(reply->detail);
	} else {
		ct_assert_label_detail(c, reply->error, reply->detail);
	}
	if (reply->error)
		snprintf(r->error, sizeof(r->error), "%s", reply->error);
	if (reply->result && PQntuples(reply->result) > 0 && PQnfields(reply->result) > 0)
		snprintf(r->value, sizeof(r->value), "%s", PQgetvalue(reply->result, 0, 0));
	if (r->free_conn)
		pqev_conn_free(r->free_conn);
	if (r->restart_conn) {
		pqev_conn_close(r->restart_conn);
		ck_assert_int_eq(pqev_conn_state(r->restart_conn), PQEV_CONN_CLOSED);
		ck_assert_int_eq(pqev_conn_start(r->restart_conn), 0);
	}
}

void ct_send(PqevConn *c, CtReq *rq, const char *sql, int nparams, const char *const *params,
	     unsigned flags, usec_t timeout, PqevReq **out)
{
	PqevQuery q = {.sql = sql,
		       .nparams = nparams,
		       .params = params,
		       .flags = flags,
		       .timeout = timeout,
		       .on_rows = on_rows,
		       .on_done = on_done,
		       .arg = rq};
	int rc = pqev_conn_send(c, &q, out);
	ck_assert_msg(rc == 0, "send failed: %d %s", rc, pqev_conn_error(c));
}
