/*
 * Helpers for the connection layer tests: a loop with a watchdog, and a
 * recording context that counts every callback of a PqevConn so tests can
 * assert exactly-once completion and failure streaks.
 */
#ifndef PGQEV_TESTS_CONNTEST_H
#define PGQEV_TESTS_CONNTEST_H

#include <stdbool.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_conn.h>

#include "pgtest.h"

#define CT_MAX_EVENTS 64

/* What one connection's callbacks saw. */
typedef struct CtConn {
	PqevConn *conn;
	int connected; /* CONNECTED events */
	int failed;    /* CONNECT_FAILED events */
	int lost;      /* LOST events */
	int recycled;
	unsigned last_streak;
	bool last_recovered;
	usec_t last_retry_in;
	int64_t t_lost_ms;      /* loop time of the last LOST/CONNECT_FAILED */
	int64_t t_connected_ms; /* loop time of the last CONNECTED */
	char last_msg[512];
	int notifies;
	char notify_chan[64];
	char notify_payload[256];
	int notices;
	char notice_sev[32];
	char notice_text[256];
	int seq;             /* global order counter snapshot of the last notify */
	bool free_on_event;  /* pqev_conn_free inside on_event(CONNECTED) */
	bool free_on_notify; /* pqev_conn_free inside on_notify */
} CtConn;

/* One request's completion record. */
typedef struct CtReq {
	int done; /* on_done calls: must end at exactly 1 */
	PqevStatus status;
	int nresults;
	int rows_calls;  /* on_rows calls */
	long rows;       /* rows over all on_rows calls */
	char value[128]; /* first column of the first row of the final result */
	char error[512];
	int seq;                /* global order when done */
	PqevConn *free_conn;    /* if set, pqev_conn_free() it inside on_done */
	PqevConn *restart_conn; /* if set, close and start it again inside on_done */
} CtReq;

extern int ct_seq; /* increments with every recorded completion/notification */

extern const PqevConnCallbacks ct_callbacks_template;

struct event_base *ct_base(void);
PqevConnLimit *ct_limit(void);
/* Fresh loop and limiter (cap 0 = none) for one test; ct_teardown frees them. */
void ct_setup(unsigned max_connecting);
void ct_teardown(void);

/* Config with test-friendly defaults for `conninfo`. */
void ct_config(PqevConnConfig *cfg, const char *conninfo);
/* Create and start a recorded connection. */
PqevConn *ct_conn_new(CtConn *rec, const PqevConnConfig *cfg);

/* Run the loop until cond(arg) or timeout_ms; returns cond's last value. */
bool ct_run_until(bool (*cond)(void *arg), void *arg, int timeout_ms);
/* Run the loop for ms milliseconds. */
void ct_run_for(int ms);
/* Run n loop passes (no waiting on the clock): what is already due, deferred
   callbacks included, has run after it. */
void ct_run_passes(int n);

bool ct_is_connected(void *rec); /* CtConn: connected >= 1 */

/* A set of recorded connections for the predicates below. */
typedef struct CtAll {
	const CtConn *rec;
	int n;
	int min;
} CtAll;
bool ct_all_connected(void *all); /* CtAll: every rec[i].connected >= min */
bool ct_all_failed(void *all);    /* CtAll: every rec[i].failed >= min */
bool ct_req_is_done(void *req);   /* CtReq: done >= 1 */

/* Send with recording; ck_asserts success. */
void ct_send(PqevConn *c, CtReq *rq, const char *sql, int nparams, const char *const *params,
	     unsigned flags, usec_t timeout, PqevReq **out);

#endif
