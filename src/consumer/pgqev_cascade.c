/*
 * The cascade worker's state machine (see pgqev_cascade.h): one connection to
 * the local node (dst) and one to its provider (src), both from the core layer.
 *
 *   WAIT_DST -> HELLO (advisory lock: one worker per node)
 *   -> STATE (get_node_info + get_consumer_state on dst)
 *        root: publish the global watermark when due -> IDLE -> STATE
 *        paused: IDLE -> STATE
 *   -> [WAIT_SRC: (re)connect to provider_location, learn the tick channel]
 *   -> NEXT (pgq.next_batch_info on src, autocommit)
 *        no batch -> IDLE (tick notification or poll timer) -> STATE
 *        batch already applied (cur = completed) -> [CHECK: branch, latest local
 *        tick; TICK if it is prev] -> FINISH
 *   -> OPEN (dst BEGIN [+ replica role + current_event_table])
 *   -> READ (src BEGIN + get_batch_cursor; each chunk: one bulk INSERT on dst,
 *      cascade-event handlers, on_batch; the next FETCH is in flight while dst
 *      writes, at most two of each, so memory stays at about two chunks)
 *   -> COMMIT (dst set_consumer_completed + COMMIT)
 *   -> [TICK: branch, pgq.ticker(q, cur, cur_time, seq) after the commit, so
 *      the tick's snapshot sees the copied rows as committed]
 *   -> FINISH (src finish_batch + COMMIT; local watermark upward when due)
 *   -> STATE.
 *   Any failure -> BACKOFF (roll back both sides, record the error on dst with
 *   set_consumer_error) -> STATE. A lost connection -> WAIT_DST / WAIT_SRC.
 *
 * `gen` is bumped whenever in-flight work becomes stale; every request carries
 * the gen it was sent in and its completion is ignored when they differ.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pgqd-ev/pgqev_cascade.h>
#include <pgqd-ev/pqev_clock.h>

#include "pgqev_config.h"
#include "pgqev_int.h"

#define CASCADE_CURSOR "pgqev_cascade_cursor"

typedef enum WPhase {
	WP_STOPPED = 0,
	WP_WAIT_DST,
	WP_HELLO,
	WP_STATE,
	WP_WAIT_SRC,
	WP_NEXT,
	WP_IDLE,
	WP_CHECK,
	WP_OPEN,
	WP_READ,
	WP_COMMIT,
	WP_TICK,
	WP_FINISH,
	WP_BACKOFF,
} WPhase;

typedef enum ReqKind {
	RK_IGNORE,
	RK_LOCK,
	RK_NODE,
	RK_STATE,
	RK_GWM,
	RK_CHANNEL,
	RK_NEXT,
	RK_LAST_TICK,
	RK_OPEN,
	RK_CURSOR,
	RK_FETCH,
	RK_WRITE,
	RK_COMPLETED,
	RK_COMMIT,
	RK_TICK,
	RK_FINISH,      /* inside the src transaction; COMMIT follows */
	RK_FINISH_ONLY, /* autocommit: the batch was applied before */
	RK_SRC_COMMIT,
	RK_WM,
} ReqKind;

typedef enum NodeType { NT_UNKNOWN = 0, NT_ROOT, NT_BRANCH, NT_LEAF } NodeType;

struct PgqevCascade {
	struct event_base *base;
	PqevConnLimit *lim;
	bool own_lim;
	PgqevCascadeConfig cfg;
	char *s_conninfo, *s_queue, *s_worker, *s_node, *label;
	char *worker; /* effective worker name */

	PqevConn *dst, *src;
	char *src_conninfo;

	WPhase phase;
	PgqevState state;
	uint64_t gen;
	unsigned depth;
	bool free_pending, started, stop_requested;
	bool locked;

	/* node state, read at every iteration */
	NodeType type;
	char *node_name, *provider;
	int64_t completed, local_wm;
	bool paused;

	/* provider connection */
	bool src_setup, channel_reported, wake_pending;
	char *channel;
	usec_t poll_interval;

	/* the open batch */
	int64_t batch_id, prev_tick, cur_tick;
	char *cur_tick_time;
	char *ev_table;
	unsigned fetches, writes;
	bool eof, src_in_tx, dst_in_tx, in_batch;
	PgqevBatch *ub;
	uint64_t b_events, b_copied;
	int64_t max_ev_id; /* highest ev_id copied since start */

	usec_t last_wm, last_gwm;
	struct event *timer;
	PqevBackoff fail_bo;
	unsigned fail_streak;
	PgqevCascadeStats st;
};

typedef struct ReqCtx {
	PgqevCascade *w;
	uint64_t gen;
	ReqKind kind;
	bool src;
} ReqCtx;

static void go_state(PgqevCascade *w);
static void go_hello(PgqevCascade *w);
static void go_next(PgqevCascade *w);
static void go_finish(PgqevCascade *w);
static void do_stop(PgqevCascade *w);
static void destroy(PgqevCascade *w);
static void fail(PgqevCascade *w, PgqevErrorKind kind, const char *what, const char *detail);
static PqevConn *new_conn(PgqevCascade *w, const char *conninfo, bool src);
static void go_wait_src(PgqevCascade *w);

static const char *const type_names[] = {
	[NT_UNKNOWN] = NULL, [NT_ROOT] = "root", [NT_BRANCH] = "branch", [NT_LEAF] = "leaf"};

/* ---- re-entrancy, state, messages ---- */

static void enter(PgqevCascade *w)
{
	w->depth++;
}

static void leave(PgqevCascade *w)
{
	if (--w->depth == 0 && w->free_pending)
		destroy(w);
}

static void set_phase(PgqevCascade *w, WPhase ph)
{
	w->phase = ph;
	PgqevState st;
	switch (ph) {
	case WP_STOPPED:
		st = PGQEV_STATE_STOPPED;
		break;
	case WP_WAIT_DST:
	case WP_HELLO:
	case WP_WAIT_SRC:
		st = PGQEV_STATE_CONNECTING;
		break;
	case WP_STATE:
	case WP_NEXT:
		st = PGQEV_STATE_LISTENING;
		break;
	case WP_IDLE:
		st = PGQEV_STATE_IDLE;
		break;
	case WP_BACKOFF:
		st = PGQEV_STATE_BACKOFF;
		break;
	default:
		st = PGQEV_STATE_PROCESSING;
		break;
	}
	if (st == w->state)
		return;
	PgqevState old = w->state;
	w->state = st;
	if (w->cfg.on_state)
		w->cfg.on_state(w, old, st, w->cfg.arg);
}

static const char *bare(PqevConn *conn, const char *msg)
{
	if (!msg)
		return "unknown error";
	const char *name = conn ? pqev_conn_name(conn) : NULL;
	size_t n = name ? strlen(name) : 0;
	if (n && strncmp(msg, name, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ')
		return msg + n + 2;
	return msg;
}

static void report(PgqevCascade *w, PgqevErrorKind kind, usec_t retry_in, unsigned streak,
		   const char *fmt, ...) PQEV_PRINTF(5, 6);

static void report(PgqevCascade *w, PgqevErrorKind kind, usec_t retry_in, unsigned streak,
		   const char *fmt, ...)
{
	w->st.errors++;
	if (!w->cfg.on_error)
		return;
	char msg[1024];
	int n = snprintf(msg, sizeof(msg), "%s: ", w->label);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	PgqevError err = {.kind = kind,
			  .batch_id = w->batch_id,
			  .streak = streak,
			  .retry_in = retry_in,
			  .message = msg};
	w->cfg.on_error(w, &err, w->cfg.arg);
}

static void progress(PgqevCascade *w)
{
	w->st.last_progress = pqev_clock_monotonic();
}

/* ---- requests ---- */

static void req_done(PqevConn *conn, const PqevReply *reply, void *arg);
static void req_rows(PqevConn *conn, const PGresult *res, void *arg);

static int send_on(PgqevCascade *w, bool src, ReqKind kind, const char *sql, int nparams,
		   const char *const *params, unsigned flags)
{
	PqevConn *conn = src ? w->src : w->dst;
	if (!conn)
		return -ENOTCONN;
	ReqCtx *ctx = malloc(sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	*ctx = (ReqCtx){.w = w, .gen = w->gen, .kind = kind, .src = src};
	PqevQuery q = {
		.sql = sql,
		.nparams = nparams,
		.params = params,
		.flags = flags,
		.on_rows = (kind == RK_CURSOR || kind == RK_FETCH) ? req_rows : NULL,
		.on_done = req_done,
		.arg = ctx,
	};
	int rc = pqev_conn_send(conn, &q, NULL);
	if (rc < 0)
		free(ctx);
	return rc;
}

static bool send_or_fail(PgqevCascade *w, bool src, ReqKind kind, const char *sql, int nparams,
			 const char *const *params, unsigned flags)
{
	int rc = send_on(w, src, kind, sql, nparams, params, flags);
	if (rc == 0)
		return true;
	PqevConn *conn = src ? w->src : w->dst;
	fail(w, src ? PGQEV_ERR_SQL : PGQEV_ERR_TARGET, "cannot send a request",
	     rc == -ENOMEM ? "out of memory"
	     : conn        ? bare(conn, pqev_conn_error(conn))
			   : "no connection");
	return false;
}

static void send_ignored(PgqevCascade *w, bool src, const char *sql, int nparams,
			 const char *const *params)
{
	PqevConn *conn = src ? w->src : w->dst;
	if (conn && pqev_conn_is_ready(conn))
		(void)send_on(w, src, RK_IGNORE, sql, nparams, params, 0);
}

/* ---- timer ---- */

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	PgqevCascade *w = arg;
	enter(w);
	if (w->phase == WP_IDLE || w->phase == WP_WAIT_SRC) {
		go_state(w);
	} else if (w->phase == WP_BACKOFF) {
		if (!w->locked)
			go_hello(w);
		else
			go_state(w);
	}
	leave(w);
}

static void arm_timer(PgqevCascade *w, usec_t delay)
{
	struct timeval tv = pqev_usec_to_timeval(delay);
	evtimer_del(w->timer);
	if (evtimer_add(w->timer, &tv) < 0)
		report(w, PGQEV_ERR_SQL, 0, 1, "cannot arm the timer");
}

/* ---- batches ---- */

static void clear_batch(PgqevCascade *w)
{
	if (w->ub) {
		w->ub->abandoned = true;
		if (!w->ub->in_handler)
			pgqev_batch_release(w->ub);
		w->ub = NULL;
	}
	free(w->cur_tick_time);
	w->cur_tick_time = NULL;
	free(w->ev_table);
	w->ev_table = NULL;
	w->batch_id = 0;
	w->fetches = w->writes = 0;
	w->eof = false;
	w->in_batch = false;
	w->b_events = w->b_copied = 0;
}

/* Roll back whatever is open on the connections that can take it. */
static void abandon(PgqevCascade *w, const char *why)
{
	if (w->dst_in_tx) {
		send_ignored(w, false, "rollback", 0, NULL);
		if (why && w->worker) {
			const char *p[3] = {w->cfg.queue, w->worker, why};
			send_ignored(w, false, "select pgq_node.set_consumer_error($1, $2, $3)", 3,
				     p);
		}
	}
	if (w->src_in_tx)
		send_ignored(w, true, "rollback", 0, NULL);
	w->dst_in_tx = w->src_in_tx = false;
	clear_batch(w);
}

static void fail(PgqevCascade *w, PgqevErrorKind kind, const char *what, const char *detail)
{
	if (w->phase == WP_STOPPED)
		return;
	char msg[1024];
	snprintf(msg, sizeof(msg), "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
	int64_t bid = w->batch_id;
	w->gen++;
	abandon(w, msg);
	w->fail_streak++;
	usec_t delay = pqev_backoff_next(&w->fail_bo);
	w->st.errors++;
	if (w->cfg.on_error) {
		char full[1200];
		snprintf(full, sizeof(full), "%s: %s", w->label, msg);
		PgqevError err = {.kind = kind,
				  .batch_id = bid,
				  .streak = w->fail_streak,
				  .retry_in = w->stop_requested ? 0 : delay,
				  .message = full};
		uint64_t gen = w->gen;
		w->cfg.on_error(w, &err, w->cfg.arg);
		if (gen != w->gen || w->free_pending)
			return;
	}
	if (w->stop_requested) {
		do_stop(w);
		return;
	}
	arm_timer(w, delay);
	set_phase(w, WP_BACKOFF);
}

/* A connection broke or reconnected: in-flight work is gone. */
static void conn_lost(PgqevCascade *w, bool src)
{
	if (w->phase == WP_STOPPED)
		return;
	w->gen++;
	evtimer_del(w->timer);
	if (src) {
		w->src_in_tx = false;
		w->src_setup = false;
	} else {
		w->dst_in_tx = false;
		w->locked = false;
	}
	abandon(w, src ? "provider connection lost" : NULL);
	if (w->stop_requested) {
		do_stop(w);
		return;
	}
	if (!src)
		set_phase(w, WP_WAIT_DST);
	else if (w->phase != WP_WAIT_DST)
		go_wait_src(w);
}

/* Wait for the provider; re-read the node's state now and then, so a provider
   changed meanwhile (change_consumer_provider) is followed. */
static void go_wait_src(PgqevCascade *w)
{
	arm_timer(w, w->poll_interval > USEC_PER_SEC ? w->poll_interval : USEC_PER_SEC);
	set_phase(w, WP_WAIT_SRC);
}

/* ---- growable text buffer for array literals ---- */

typedef struct Buf {
	char *p;
	size_t n, cap;
	bool oom;
} Buf;

static void buf_need(Buf *b, size_t more)
{
	if (b->oom || b->n + more + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->n + more + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		b->oom = true;
		return;
	}
	b->p = p;
	b->cap = cap;
}

static void buf_putc(Buf *b, char ch)
{
	buf_need(b, 1);
	if (b->oom)
		return;
	b->p[b->n++] = ch;
	b->p[b->n] = '\0';
}

/* One element of an array literal: NULL, or a double-quoted escaped string. */
static void buf_elem(Buf *b, const char *v, int len)
{
	buf_putc(b, b->n == 0 ? '{' : ',');
	if (!v) {
		buf_need(b, 4);
		if (!b->oom) {
			memcpy(b->p + b->n, "NULL", 5);
			b->n += 4;
		}
		return;
	}
	buf_need(b, (size_t)len * 2 + 2);
	if (b->oom)
		return;
	char *o = b->p + b->n;
	*o++ = '"';
	for (int i = 0; i < len; i++) {
		if (v[i] == '"' || v[i] == '\\')
			*o++ = '\\';
		*o++ = v[i];
	}
	*o++ = '"';
	*o = '\0';
	b->n = (size_t)(o - b->p);
}

/* Cursor columns: ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data, ev_extra1..4. */
enum { C_ID, C_TIME, C_TXID, C_RETRY, C_TYPE, C_DATA, C_EX1, C_EX2, C_EX3, C_EX4 };
static const int copy_cols[8] = {C_ID, C_TIME, C_TYPE, C_DATA, C_EX1, C_EX2, C_EX3, C_EX4};

static const char *val(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

/* One INSERT ... SELECT FROM unnest() per chunk: the events keep id and time. */
static bool copy_chunk(PgqevCascade *w, const PGresult *res)
{
	int n = PQntuples(res);
	Buf cols[8] = {{0}};
	bool oom = false;
	for (int k = 0; k < 8 && !oom; k++) {
		for (int i = 0; i < n; i++) {
			int c = copy_cols[k];
			buf_elem(&cols[k], val(res, i, c), PQgetlength(res, i, c));
		}
		buf_putc(&cols[k], '}');
		oom = cols[k].oom;
	}
	bool ok = false;
	char *sql = NULL;
	if (!oom)
		sql = pgqev_sprintf("insert into %s (ev_id, ev_time, ev_type, ev_data, ev_extra1,"
				    " ev_extra2, ev_extra3, ev_extra4) select * from"
				    " unnest($1::int8[], $2::timestamptz[], $3::text[], $4::text[],"
				    " $5::text[], $6::text[], $7::text[], $8::text[])",
				    w->ev_table);
	if (sql) {
		const char *p[8];
		for (int k = 0; k < 8; k++)
			p[k] = cols[k].p;
		w->writes++;
		ok = send_or_fail(w, false, RK_WRITE, sql, 8, p, 0);
		if (!ok)
			w->writes--;
	} else {
		fail(w, PGQEV_ERR_TARGET, "cannot copy a chunk", "out of memory");
	}
	free(sql);
	for (int k = 0; k < 8; k++)
		free(cols[k].p);
	if (ok) {
		w->b_copied += (uint64_t)n;
		int64_t last = strtoll(PQgetvalue(res, n - 1, C_ID), NULL, 10);
		if (last > w->max_ev_id)
			w->max_ev_id = last;
	}
	return ok;
}

static bool handler_sql(PgqevCascade *w, const char *sql, int n, const char *const *p)
{
	w->writes++;
	if (send_or_fail(w, false, RK_WRITE, sql, n, p, 0))
		return true;
	w->writes--;
	return false;
}

/* The cascade's own events, applied on the local node (spec §5.6). */
static bool cascade_event(PgqevCascade *w, const PGresult *res, int i)
{
	const char *type = val(res, i, C_TYPE);
	const char *data = val(res, i, C_DATA);
	const char *ex1 = val(res, i, C_EX1);
	const char *ex2 = val(res, i, C_EX2);
	const char *ex3 = val(res, i, C_EX3);
	const char *q = w->cfg.queue;
	bool own = ex1 && strcmp(ex1, q) == 0;
	char detail[256];
	if (strcmp(type, "pgq.tick-id") == 0) {
		if (own) {
			snprintf(detail, sizeof(detail), "event %s", PQgetvalue(res, i, C_ID));
			fail(w, PGQEV_ERR_SQL, "pgq.tick-id event names this cascade's own queue",
			     detail);
			return false;
		}
		if (w->type != NT_BRANCH)
			return true;
		const char *p[3] = {q, ex1, data};
		return handler_sql(w, "select * from pgq_node.set_partition_watermark($1, $2, $3)",
				   3, p);
	}
	if (!own) {
		snprintf(detail, sizeof(detail), "%s event %s is for queue %s", type,
			 PQgetvalue(res, i, C_ID), ex1 ? ex1 : "(null)");
		fail(w, PGQEV_ERR_SQL, "cascade event of another queue", detail);
		return false;
	}
	if (strcmp(type, "pgq.location-info") == 0) {
		const char *p[4] = {q, data, ex2, ex3};
		return handler_sql(w,
				   "select * from pgq_node.register_location($1, $2, $3,"
				   " coalesce($4::boolean, false))",
				   4, p);
	}
	if (strcmp(type, "pgq.unregister-location") == 0) {
		const char *p[2] = {q, data};
		return handler_sql(w, "select * from pgq_node.unregister_location($1, $2)", 2, p);
	}
	if (strcmp(type, "pgq.global-watermark") == 0) {
		if (w->type != NT_BRANCH)
			return true;
		const char *p[2] = {q, data};
		return handler_sql(w, "select * from pgq_node.set_global_watermark($1, $2::int8)",
				   2, p);
	}
	snprintf(detail, sizeof(detail), "%s (event %s)", type, PQgetvalue(res, i, C_ID));
	fail(w, PGQEV_ERR_SQL, "unknown cascade event type", detail);
	return false;
}

static void maybe_fetch(PgqevCascade *w)
{
	uint64_t gen = w->gen;
	while (w->phase == WP_READ && !w->eof && w->fetches < 2 && w->writes < 2 && gen == w->gen) {
		char sql[80];
		snprintf(sql, sizeof(sql), "fetch %u from " CASCADE_CURSOR, w->cfg.fetch_size);
		w->fetches++;
		if (!send_or_fail(w, true, RK_FETCH, sql, 0, NULL, 0))
			return;
	}
}

static void go_commit(PgqevCascade *w)
{
	char tick[32];
	snprintf(tick, sizeof(tick), "%" PRId64, w->cur_tick);
	const char *p[3] = {w->cfg.queue, w->worker, tick};
	set_phase(w, WP_COMMIT);
	if (!send_or_fail(w, false, RK_COMPLETED,
			  "select ret_code, ret_note from"
			  " pgq_node.set_consumer_completed($1, $2, $3)",
			  3, p, 0))
		return;
	(void)send_or_fail(w, false, RK_COMMIT, "commit", 0, NULL, 0);
}

static void maybe_commit(PgqevCascade *w)
{
	if (w->phase == WP_READ && w->eof && w->fetches == 0 && w->writes == 0)
		go_commit(w);
}

/* A chunk of the provider's batch (borrowed result). */
static void chunk_arrived(PgqevCascade *w, const PGresult *res)
{
	uint64_t gen = w->gen;
	w->fetches--;
	int n = PQntuples(res);
	if ((unsigned)n < w->cfg.fetch_size)
		w->eof = true;
	if (n > 0 && PQnfields(res) < 10) {
		fail(w, PGQEV_ERR_SQL, "unexpected batch cursor", "fewer than 10 columns");
		return;
	}
	for (int i = 0; i < n; i++) {
		if (!PQgetisnull(res, i, C_RETRY)) {
			char d[64];
			snprintf(d, sizeof(d), "event %s", PQgetvalue(res, i, C_ID));
			fail(w, PGQEV_ERR_SQL, "retried event in a cascaded queue", d);
			return;
		}
	}
	w->b_events += (uint64_t)n;
	if (n > 0 && w->type == NT_BRANCH && !copy_chunk(w, res))
		return;
	for (int i = 0; i < n; i++) {
		const char *type = val(res, i, C_TYPE);
		if (type && strncmp(type, "pgq.", 4) == 0 && !cascade_event(w, res, i))
			return;
	}
	if (n > 0 && w->cfg.on_batch) {
		PgqevBatch *b = w->ub;
		pgqev_batch_set_rows(b, res, NULL);
		b->in_handler = true;
		PgqevVerdict v = w->cfg.on_batch(w, b, w->cfg.arg);
		b->in_handler = false;
		b->chunk++;
		if (b->abandoned) {
			/* freed or failed meanwhile: the batch is gone */
			if (w->ub != b)
				pgqev_batch_release(b);
			return;
		}
		pgqev_batch_clear_rows(b);
		if (gen != w->gen || w->free_pending)
			return;
		if (v == PGQEV_PENDING) {
			fail(w, PGQEV_ERR_HANDLER, "handler returned PGQEV_PENDING",
			     "not supported by cascade workers");
			return;
		}
		if (v != PGQEV_DONE) {
			fail(w, PGQEV_ERR_HANDLER, "handler failed",
			     "the batch will be applied again");
			return;
		}
	}
	maybe_fetch(w);
	if (gen == w->gen)
		maybe_commit(w);
}

static void open_cursor(PgqevCascade *w)
{
	char *sql = pgqev_sprintf("begin; select * from pgq.get_batch_cursor(%" PRId64
				  ", '" CASCADE_CURSOR "', %u)",
				  w->batch_id, w->cfg.fetch_size);
	if (!sql) {
		fail(w, PGQEV_ERR_SQL, "cannot open the batch", "out of memory");
		return;
	}
	set_phase(w, WP_READ);
	w->src_in_tx = true;
	w->fetches = 1;
	(void)send_or_fail(w, true, RK_CURSOR, sql, 0, NULL, PQEV_Q_SIMPLE);
	free(sql);
}

static void go_open(PgqevCascade *w)
{
	set_phase(w, WP_OPEN);
	w->ub = pgqev_batch_new_slots(w->cfg.fetch_size, w->batch_id);
	if (!w->ub) {
		fail(w, PGQEV_ERR_SQL, "cannot start a batch", "out of memory");
		return;
	}
	w->ub->w = w;
	w->ub->prev_tick = w->prev_tick;
	w->ub->tick = w->cur_tick;
	w->ub->tick_time = w->cur_tick_time ? strdup(w->cur_tick_time) : NULL;
	w->dst_in_tx = true;
	if (w->type != NT_BRANCH) {
		(void)send_or_fail(w, false, RK_OPEN, "begin", 0, NULL, 0);
		return;
	}
	char *q = pgqev_quote_literal(w->cfg.queue);
	char *sql = q ? pgqev_sprintf("begin; set local session_replication_role = 'replica';"
				      " select pgq.current_event_table(%s)",
				      q)
		      : NULL;
	free(q);
	if (!sql) {
		fail(w, PGQEV_ERR_TARGET, "cannot start a batch", "out of memory");
		return;
	}
	(void)send_or_fail(w, false, RK_OPEN, sql, 0, NULL, PQEV_Q_SIMPLE);
	free(sql);
}

static void go_tick(PgqevCascade *w)
{
	char tick[32], seq[32];
	snprintf(tick, sizeof(tick), "%" PRId64, w->cur_tick);
	snprintf(seq, sizeof(seq), "%" PRId64, w->max_ev_id);
	const char *p[4] = {w->cfg.queue, tick, w->cur_tick_time, seq};
	set_phase(w, WP_TICK);
	/* the event sequence only moves forward: never below the last tick's */
	(void)send_or_fail(w, false, RK_TICK,
			   "select pgq.ticker($1, $2::int8, $3::timestamptz,"
			   " greatest($4::int8, coalesce((select t.tick_event_seq"
			   " from pgq.tick t, pgq.queue q where t.tick_queue = q.queue_id"
			   " and q.queue_name = $1 order by t.tick_queue desc, t.tick_id desc"
			   " limit 1), 0)))",
			   4, p, 0);
}

static void go_finish(PgqevCascade *w)
{
	char id[32];
	snprintf(id, sizeof(id), "%" PRId64, w->batch_id);
	const char *p[1] = {id};
	set_phase(w, WP_FINISH);
	if (!w->src_in_tx) {
		(void)send_or_fail(w, true, RK_FINISH_ONLY, "select pgq.finish_batch($1)", 1, p, 0);
		return;
	}
	if (!send_or_fail(w, true, RK_FINISH, "select pgq.finish_batch($1)", 1, p, 0))
		return;
	(void)send_or_fail(w, true, RK_SRC_COMMIT, "commit", 0, NULL, 0);
}

/* Report this node's watermark to the provider when due (autocommit). */
static void maybe_publish_local_wm(PgqevCascade *w, int64_t cur_tick)
{
	usec_t now = pqev_clock_monotonic();
	if (w->last_wm && now - w->last_wm < w->cfg.wm_period)
		return;
	int64_t wm = w->local_wm > 0 ? w->local_wm : cur_tick;
	if (wm > cur_tick)
		wm = cur_tick;
	char s[32];
	snprintf(s, sizeof(s), "%" PRId64, wm);
	const char *p[3] = {w->cfg.queue, w->node_name, s};
	if (send_on(w, true, RK_WM,
		    "select ret_code, ret_note from pgq_node.set_subscriber_watermark($1, $2, $3)",
		    3, p, 0) == 0)
		w->last_wm = now;
}

static void batch_done(PgqevCascade *w)
{
	int64_t cur = w->cur_tick;
	w->st.batches++;
	w->st.events += w->b_events;
	w->st.copied += w->b_copied;
	w->st.completed_tick = w->completed = cur;
	w->fail_streak = 0;
	pqev_backoff_reset(&w->fail_bo);
	progress(w);
	clear_batch(w);
	maybe_publish_local_wm(w, cur);
	go_state(w);
}

/* ---- iteration ---- */

static void go_idle(PgqevCascade *w, usec_t delay)
{
	if (w->stop_requested) {
		do_stop(w);
		return;
	}
	arm_timer(w, delay);
	set_phase(w, WP_IDLE);
}

static void go_next(PgqevCascade *w)
{
	const char *p[2] = {w->cfg.queue, w->worker};
	w->wake_pending = false;
	set_phase(w, WP_NEXT);
	(void)send_or_fail(w, true, RK_NEXT,
			   "select b.batch_id, b.prev_tick_id, b.cur_tick_id, b.cur_tick_time,"
			   " (select max(t.tick_id) from pgq.tick t, pgq.queue q"
			   " where t.tick_queue = q.queue_id and q.queue_name = $1),"
			   " extract(epoch from now() - b.prev_tick_time)"
			   " from pgq.next_batch_info($1, $2) b",
			   2, p, 0);
}

static void go_hello(PgqevCascade *w)
{
	if (!w->dst || !pqev_conn_is_ready(w->dst)) {
		set_phase(w, WP_WAIT_DST);
		return;
	}
	const char *p[1] = {w->cfg.queue};
	set_phase(w, WP_HELLO);
	(void)send_or_fail(w, false, RK_LOCK,
			   "select pg_try_advisory_lock(hashtext('pgq_node'), hashtext($1))", 1, p,
			   0);
}

static void go_state(PgqevCascade *w)
{
	if (w->stop_requested) {
		do_stop(w);
		return;
	}
	evtimer_del(w->timer);
	if (!w->dst || !pqev_conn_is_ready(w->dst) || !w->locked) {
		go_hello(w);
		return;
	}
	const char *p[1] = {w->cfg.queue};
	set_phase(w, WP_STATE);
	(void)send_or_fail(w, false, RK_NODE,
			   "select ret_code, ret_note, node_type, node_name, local_watermark,"
			   " worker_name, combined_queue from pgq_node.get_node_info($1)",
			   1, p, 0);
}

static bool need_src(PgqevCascade *w, const char *location)
{
	if (w->src && w->src_conninfo && strcmp(w->src_conninfo, location) == 0)
		return true;
	w->src = pqev_conn_free(w->src);
	free(w->src_conninfo);
	w->src_conninfo = strdup(location);
	w->src_setup = false;
	w->src_in_tx = false;
	free(w->channel);
	w->channel = NULL;
	if (!w->src_conninfo) {
		fail(w, PGQEV_ERR_CONNECTION, "cannot connect to the provider", "out of memory");
		return false;
	}
	w->src = new_conn(w, location, true);
	int rc = w->src ? pqev_conn_start(w->src) : -ENOMEM;
	if (rc < 0) {
		char d[512];
		snprintf(d, sizeof(d), "%s (provider %s)",
			 rc == -ENOMEM ? "out of memory" : bare(w->src, pqev_conn_error(w->src)),
			 w->provider ? w->provider : "?");
		w->src = pqev_conn_free(w->src);
		free(w->src_conninfo);
		w->src_conninfo = NULL;
		fail(w, PGQEV_ERR_CONNECTION, "bad provider location", d);
		return false;
	}
	return true;
}

static void on_state_reply(PgqevCascade *w, const PGresult *res)
{
	/* ret_code, ret_note, completed_tick, provider_node, provider_location,
	   paused, uptodate */
	if (!res || PQntuples(res) != 1) {
		fail(w, PGQEV_ERR_SQL, "pgq_node.get_consumer_state returned no row", NULL);
		return;
	}
	int code = atoi(PQgetvalue(res, 0, 0));
	if (code >= 400) {
		fail(w, PGQEV_ERR_SQL, "pgq_node.get_consumer_state", PQgetvalue(res, 0, 1));
		return;
	}
	w->completed = PQgetisnull(res, 0, 2) ? 0 : strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	w->st.completed_tick = w->completed;
	free(w->provider);
	w->provider = PQgetisnull(res, 0, 3) ? NULL : strdup(PQgetvalue(res, 0, 3));
	w->paused = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
	if (strcmp(PQgetvalue(res, 0, 6), "t") != 0) {
		const char *p[2] = {w->cfg.queue, w->worker};
		send_ignored(w, false, "select pgq_node.set_consumer_uptodate($1, $2, true)", 2, p);
	}
	if (w->paused) {
		go_idle(w, w->poll_interval < USEC_PER_SEC ? w->poll_interval : USEC_PER_SEC);
		return;
	}
	if (w->type == NT_ROOT) {
		/* a branch promoted to root (switchover, failover) has no provider any
		   more: its old provider connection would keep reconnecting (forever,
		   when that node died) and each failure would knock the root's loop
		   into WAIT_SRC */
		if (w->src) {
			w->src = pqev_conn_free(w->src);
			free(w->src_conninfo);
			w->src_conninfo = NULL;
			free(w->channel);
			w->channel = NULL;
			w->src_setup = w->src_in_tx = false;
		}
		usec_t now = pqev_clock_monotonic();
		if (!w->last_gwm || now - w->last_gwm >= w->cfg.wm_period) {
			const char *p[1] = {w->cfg.queue};
			w->last_gwm = now;
			(void)send_or_fail(w, false, RK_GWM,
					   "select ret_code, ret_note from"
					   " pgq_node.set_global_watermark($1, NULL)",
					   1, p, 0);
			return;
		}
		progress(w);
		go_idle(w, w->poll_interval);
		return;
	}
	if (PQgetisnull(res, 0, 4)) {
		fail(w, PGQEV_ERR_SQL, "no location for the provider node",
		     w->provider ? w->provider : "(none)");
		return;
	}
	if (!need_src(w, PQgetvalue(res, 0, 4)))
		return;
	if (!w->src_setup || !pqev_conn_is_ready(w->src)) {
		go_wait_src(w);
		return;
	}
	go_next(w);
}

static void on_node_reply(PgqevCascade *w, const PGresult *res)
{
	/* ret_code, ret_note, node_type, node_name, local_watermark, worker_name,
	   combined_queue */
	if (!res || PQntuples(res) != 1) {
		fail(w, PGQEV_ERR_SQL, "pgq_node.get_node_info returned no row", NULL);
		return;
	}
	int code = atoi(PQgetvalue(res, 0, 0));
	if (code >= 400 || PQgetisnull(res, 0, 2)) {
		char d[300];
		snprintf(d, sizeof(d), "no node of cascade %s in this database (%s)", w->cfg.queue,
			 PQgetvalue(res, 0, 1));
		fail(w, PGQEV_ERR_SQL, "pgq_node.get_node_info", d);
		return;
	}
	const char *t = PQgetvalue(res, 0, 2);
	w->type = strcmp(t, "root") == 0     ? NT_ROOT
		  : strcmp(t, "branch") == 0 ? NT_BRANCH
		  : strcmp(t, "leaf") == 0   ? NT_LEAF
					     : NT_UNKNOWN;
	if (w->type == NT_UNKNOWN) {
		fail(w, PGQEV_ERR_SQL, "unknown node type", t);
		return;
	}
	if (!PQgetisnull(res, 0, 6)) {
		fail(w, PGQEV_ERR_SQL, "merge leaf (combined_queue) is not supported yet",
		     PQgetvalue(res, 0, 6));
		return;
	}
	if (w->cfg.node && strcmp(w->cfg.node, PQgetvalue(res, 0, 3)) != 0) {
		char d[300];
		snprintf(d, sizeof(d), "expected node %s, the database holds node %s of cascade %s",
			 w->cfg.node, PQgetvalue(res, 0, 3), w->cfg.queue);
		fail(w, PGQEV_ERR_SQL, "wrong node", d);
		return;
	}
	if (!w->node_name || strcmp(w->node_name, PQgetvalue(res, 0, 3)) != 0) {
		free(w->node_name);
		w->node_name = strdup(PQgetvalue(res, 0, 3));
	}
	w->local_wm = PQgetisnull(res, 0, 4) ? 0 : strtoll(PQgetvalue(res, 0, 4), NULL, 10);
	if (!w->worker) {
		if (PQgetisnull(res, 0, 5)) {
			fail(w, PGQEV_ERR_SQL, "node has no worker name", w->cfg.queue);
			return;
		}
		w->worker = strdup(PQgetvalue(res, 0, 5));
	}
	if (!w->node_name || !w->worker) {
		fail(w, PGQEV_ERR_SQL, "cannot read the node", "out of memory");
		return;
	}
	const char *p[2] = {w->cfg.queue, w->worker};
	(void)send_or_fail(w, false, RK_STATE,
			   "select ret_code, ret_note, completed_tick, provider_node,"
			   " provider_location, paused, uptodate"
			   " from pgq_node.get_consumer_state($1, $2)",
			   2, p, 0);
}

static void on_next_reply(PgqevCascade *w, const PGresult *res)
{
	if (!res || PQntuples(res) != 1) {
		fail(w, PGQEV_ERR_SQL, "pgq.next_batch_info returned no row", NULL);
		return;
	}
	progress(w);
	if (!PQgetisnull(res, 0, 4))
		w->st.provider_tick = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
	if (PQgetisnull(res, 0, 0)) {
		w->st.lag_seconds = 0;
		if (w->wake_pending)
			go_state(w);
		else
			go_idle(w, w->poll_interval);
		return;
	}
	w->st.lag_seconds = PQgetisnull(res, 0, 5) ? 0 : strtod(PQgetvalue(res, 0, 5), NULL);
	w->in_batch = true;
	w->batch_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	w->prev_tick = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	w->cur_tick = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	w->cur_tick_time = strdup(PQgetvalue(res, 0, 3));
	if (!w->cur_tick_time) {
		fail(w, PGQEV_ERR_SQL, "cannot start a batch", "out of memory");
		return;
	}
	if (w->completed == w->prev_tick) {
		go_open(w);
		return;
	}
	if (w->completed == w->cur_tick) {
		/* applied before a crash: only the tick (branch) and the finish are left */
		if (w->type != NT_BRANCH) {
			go_finish(w);
			return;
		}
		const char *p[1] = {w->cfg.queue};
		set_phase(w, WP_CHECK);
		(void)send_or_fail(w, false, RK_LAST_TICK,
				   "select t.tick_id from pgq.tick t, pgq.queue q"
				   " where t.tick_queue = q.queue_id and q.queue_name = $1"
				   " order by t.tick_queue desc, t.tick_id desc limit 1",
				   1, p, 0);
		return;
	}
	char d[200];
	snprintf(d, sizeof(d), "batch %" PRId64 "..%" PRId64 ", local node has %" PRId64,
		 w->prev_tick, w->cur_tick, w->completed);
	fail(w, PGQEV_ERR_SQL, "lost position", d);
}

static void on_last_tick(PgqevCascade *w, const PGresult *res)
{
	int64_t last = (res && PQntuples(res) == 1) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
	if (last == w->cur_tick) {
		go_finish(w);
	} else if (last == w->prev_tick) {
		go_tick(w);
	} else {
		char d[200];
		snprintf(d, sizeof(d),
			 "last local tick %" PRId64 ", expected %" PRId64 " or %" PRId64, last,
			 w->prev_tick, w->cur_tick);
		fail(w, PGQEV_ERR_SQL, "branch ticks out of step", d);
	}
}

static int reply_code(const PqevReply *r)
{
	if (!r->result || PQntuples(r->result) < 1 || PQnfields(r->result) < 2)
		return 0;
	return atoi(PQgetvalue(r->result, 0, 0));
}

/* ---- request completions ---- */

static bool ok_reply(PgqevCascade *w, const ReqCtx *x, const PqevReply *r, const char *what)
{
	if (r->status == PQEV_OK)
		return true;
	PqevConn *conn = x->src ? w->src : w->dst;
	if (r->status == PQEV_SQL_ERROR || r->status == PQEV_TIMEOUT)
		fail(w, x->src ? PGQEV_ERR_SQL : PGQEV_ERR_TARGET, what, bare(conn, r->error));
	else
		conn_lost(w, x->src);
	return false;
}

static void on_done_kind(PgqevCascade *w, const ReqCtx *x, const PqevReply *r)
{
	switch (x->kind) {
	case RK_IGNORE:
		return;
	case RK_LOCK:
		if (!ok_reply(w, x, r, "cannot take the node's worker lock"))
			return;
		if (!r->result || PQntuples(r->result) != 1 ||
		    strcmp(PQgetvalue(r->result, 0, 0), "t") != 0) {
			char d[300];
			snprintf(d, sizeof(d),
				 "another worker runs the node of cascade %s in this database",
				 w->cfg.queue);
			fail(w, PGQEV_ERR_SQL, "not starting", d);
			return;
		}
		w->locked = true;
		go_state(w);
		return;
	case RK_NODE:
		if (r->status == PQEV_SQL_ERROR) {
			char d[600];
			snprintf(d, sizeof(d), "is pgq_node installed in this database? %s",
				 bare(w->dst, r->error));
			fail(w, PGQEV_ERR_SQL, "pgq_node.get_node_info failed", d);
			return;
		}
		if (ok_reply(w, x, r, "pgq_node.get_node_info failed"))
			on_node_reply(w, r->result);
		return;
	case RK_STATE:
		if (ok_reply(w, x, r, "pgq_node.get_consumer_state failed"))
			on_state_reply(w, r->result);
		return;
	case RK_GWM:
		if (!ok_reply(w, x, r, "pgq_node.set_global_watermark failed"))
			return;
		if (reply_code(r) >= 300)
			report(w, PGQEV_ERR_SQL, 0, 1, "pgq_node.set_global_watermark: %s",
			       PQgetvalue(r->result, 0, 1));
		progress(w);
		go_idle(w, w->poll_interval);
		return;
	case RK_NEXT:
		if (ok_reply(w, x, r, "pgq.next_batch_info failed on the provider"))
			on_next_reply(w, r->result);
		return;
	case RK_LAST_TICK:
		if (ok_reply(w, x, r, "reading the last local tick failed"))
			on_last_tick(w, r->result);
		return;
	case RK_OPEN:
		if (!ok_reply(w, x, r, "cannot begin the local transaction"))
			return;
		if (w->type == NT_BRANCH) {
			if (!r->result || PQntuples(r->result) != 1) {
				fail(w, PGQEV_ERR_TARGET,
				     "pgq.current_event_table returned nothing", NULL);
				return;
			}
			w->ev_table = strdup(PQgetvalue(r->result, 0, 0));
			if (!w->ev_table) {
				fail(w, PGQEV_ERR_TARGET, "cannot start a batch", "out of memory");
				return;
			}
		}
		open_cursor(w);
		return;
	case RK_CURSOR:
	case RK_FETCH:
		if (!ok_reply(w, x, r, "reading the batch from the provider failed"))
			return;
		if (r->nresults == 0 || (x->kind == RK_CURSOR && r->nresults < 2))
			fail(w, PGQEV_ERR_SQL, "reading the batch", "no rows result");
		return;
	case RK_WRITE:
		if (!ok_reply(w, x, r, "writing the batch on the local node failed"))
			return;
		w->writes--;
		maybe_fetch(w);
		maybe_commit(w);
		return;
	case RK_COMPLETED:
		if (!ok_reply(w, x, r, "pgq_node.set_consumer_completed failed"))
			return;
		if (reply_code(r) >= 300)
			fail(w, PGQEV_ERR_TARGET, "pgq_node.set_consumer_completed",
			     PQgetvalue(r->result, 0, 1));
		return;
	case RK_COMMIT:
		if (!ok_reply(w, x, r, "commit on the local node failed"))
			return;
		w->dst_in_tx = false;
		w->completed = w->cur_tick;
		if (w->type == NT_BRANCH)
			go_tick(w);
		else
			go_finish(w);
		return;
	case RK_TICK:
		if (ok_reply(w, x, r, "pgq.ticker failed on the local node"))
			go_finish(w);
		return;
	case RK_FINISH:
	case RK_FINISH_ONLY:
		if (!ok_reply(w, x, r, "pgq.finish_batch failed on the provider"))
			return;
		if (!r->result || PQntuples(r->result) != 1 ||
		    strcmp(PQgetvalue(r->result, 0, 0), "1") != 0) {
			fail(w, PGQEV_ERR_SQL, "finish_batch did not find the batch", NULL);
			return;
		}
		if (x->kind == RK_FINISH_ONLY)
			batch_done(w);
		return;
	case RK_SRC_COMMIT:
		if (!ok_reply(w, x, r, "commit on the provider failed"))
			return;
		w->src_in_tx = false;
		batch_done(w);
		return;
	case RK_WM:
		if (r->status != PQEV_OK)
			report(w, PGQEV_ERR_SQL, 0, 1, "pgq_node.set_subscriber_watermark: %s",
			       bare(w->src, r->error));
		else if (reply_code(r) >= 300)
			report(w, PGQEV_ERR_SQL, 0, 1, "pgq_node.set_subscriber_watermark: %s",
			       PQgetvalue(r->result, 0, 1));
		return;
	case RK_CHANNEL:
		return; /* handled in req_done_channel */
	}
}

static void on_channel(PgqevCascade *w, const PqevReply *r)
{
	if (r->status != PQEV_OK && r->status != PQEV_SQL_ERROR) {
		conn_lost(w, true);
		return;
	}
	const char *ch = NULL;
	if (r->status == PQEV_OK && r->result && PQntuples(r->result) == 1 &&
	    !PQgetisnull(r->result, 0, 0))
		ch = PQgetvalue(r->result, 0, 0);
	free(w->channel);
	w->channel = ch ? strdup(ch) : NULL;
	if (w->channel && pqev_conn_listen(w->src, w->channel) == 0) {
		w->poll_interval = w->cfg.poll_interval ? w->cfg.poll_interval : 30 * USEC_PER_SEC;
	} else {
		w->poll_interval = w->cfg.poll_interval ? w->cfg.poll_interval : USEC_PER_SEC;
		if (!w->channel_reported)
			report(w, PGQEV_ERR_SQL, 0, 1,
			       "no tick notifications from the provider (%s): polling every %" PRIu64
			       " ms",
			       r->status == PQEV_SQL_ERROR ? bare(w->src, r->error)
							   : "cannot LISTEN",
			       (uint64_t)(w->poll_interval / USEC_PER_MSEC));
		w->channel_reported = true;
	}
	w->src_setup = true;
	if (w->phase == WP_WAIT_SRC)
		go_state(w);
}

static void req_done(PqevConn *conn, const PqevReply *reply, void *arg)
{
	ReqCtx x = *(ReqCtx *)arg;
	free(arg);
	PgqevCascade *w = x.w;
	if (w->free_pending)
		return;
	if (x.kind == RK_CHANNEL) {
		if (conn != w->src)
			return;
		enter(w);
		on_channel(w, reply);
		leave(w);
		return;
	}
	if (x.gen != w->gen)
		return;
	enter(w);
	on_done_kind(w, &x, reply);
	leave(w);
}

static void req_rows(PqevConn *conn, const PGresult *res, void *arg)
{
	ReqCtx *x = arg;
	PgqevCascade *w = x->w;
	if (x->gen != w->gen || w->free_pending || !w->in_batch || w->phase != WP_READ)
		return;
	enter(w);
	chunk_arrived(w, res);
	leave(w);
}

/* ---- connection events ---- */

static void on_conn_event(PqevConn *conn, const PqevConnEvent *ev, void *arg)
{
	PgqevCascade *w = arg;
	if (w->free_pending || w->phase == WP_STOPPED)
		return;
	bool src = conn == w->src;
	enter(w);
	switch (ev->type) {
	case PQEV_EV_CONNECTED:
		if (src) {
			if (w->src_in_tx || (w->phase >= WP_NEXT && w->phase <= WP_FINISH))
				conn_lost(w, true);
			w->src_setup = false;
			const char *p[1] = {w->cfg.queue};
			ReqCtx *ctx = malloc(sizeof(*ctx));
			if (ctx) {
				*ctx = (ReqCtx){
					.w = w, .gen = w->gen, .kind = RK_CHANNEL, .src = true};
				PqevQuery q = {.sql = "select pgq.queue_notify_channel($1)",
					       .nparams = 1,
					       .params = p,
					       .on_done = req_done,
					       .arg = ctx};
				if (pqev_conn_send(conn, &q, NULL) < 0)
					free(ctx);
			}
		} else {
			if (w->phase != WP_WAIT_DST)
				conn_lost(w, false);
			if (w->phase == WP_WAIT_DST)
				go_hello(w);
		}
		break;
	case PQEV_EV_CONNECT_FAILED:
	case PQEV_EV_LOST:
		conn_lost(w, src);
		if (w->phase != WP_STOPPED && !w->free_pending)
			report(w, PGQEV_ERR_CONNECTION, ev->retry_in, ev->streak, "%s%s",
			       src ? "provider: " : "", bare(conn, ev->message));
		break;
	case PQEV_EV_RECYCLED:
		conn_lost(w, src);
		break;
	}
	leave(w);
}

static void on_notify(PqevConn *conn, const char *channel, const char *payload, int pid, void *arg)
{
	PgqevCascade *w = arg;
	if (w->free_pending)
		return;
	enter(w);
	if (w->phase == WP_IDLE)
		go_state(w);
	else
		w->wake_pending = true;
	leave(w);
}

static PqevConn *new_conn(PgqevCascade *w, const char *conninfo, bool src)
{
	PqevConnConfig cc;
	pqev_conn_config_init(&cc);
	char *name = pgqev_sprintf("%s%s", w->label, src ? "/provider" : "");
	cc.conninfo = conninfo;
	cc.name = name;
	cc.application_name = "pgqev-cascade";
	cc.connect_timeout = w->cfg.connect_timeout;
	cc.statement_timeout = w->cfg.statement_timeout;
	PqevConnCallbacks cb = {
		.on_event = on_conn_event,
		.on_notify = src ? on_notify : NULL,
		.arg = w,
	};
	PqevConn *c = name ? pqev_conn_new(w->lim, &cc, &cb) : NULL;
	free(name);
	return c;
}

/* ---- the batch's local transaction, for on_batch ---- */

PqevConn *pgqev_cascade_batch_target(PgqevBatch *b)
{
	return b->abandoned ? NULL : b->w->dst;
}

int pgqev_cascade_batch_exec(PgqevBatch *b, const char *sql, int nparams, const char *const *params)
{
	PgqevCascade *w = b->w;
	if (b->abandoned || !w->dst_in_tx)
		return -ENOTCONN;
	if (!sql || nparams < 0)
		return -EINVAL;
	int rc = send_on(w, false, RK_WRITE, sql, nparams, params, 0);
	if (rc == 0)
		w->writes++;
	return rc;
}

/* ---- public API ---- */

/* The first layout of PgqevCascadeConfig: fields added later go after it. */
#define CASCADE_CONFIG_SIZE_1 (offsetof(PgqevCascadeConfig, arg) + sizeof(void *))

static void config_defaults(PgqevCascadeConfig *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->fetch_size = 1000;
	cfg->wm_period = 300 * USEC_PER_SEC;
	cfg->fail_delay = USEC_PER_SEC;
	cfg->fail_cap = 60 * USEC_PER_SEC;
	cfg->connect_timeout = 10 * USEC_PER_SEC;
}

void pgqev_cascade_config_init_size(PgqevCascadeConfig *cfg, size_t size)
{
	PgqevCascadeConfig d;
	if (!cfg || size < sizeof(d.size))
		return;
	config_defaults(&d);
	/* an older program's struct is shorter, a newer one's longer */
	size_t n = size < sizeof(d) ? size : sizeof(d);
	if (size > n)
		memset(cfg, 0, size); /* a newer program's fields: unset */
	memcpy(cfg, &d, n);
	cfg->size = size;
}

static bool validate(const PgqevCascadeConfig *cfg, char *eb, size_t es)
{
	if (!cfg->conninfo || !*cfg->conninfo)
		return pgqev_errbuf_set(eb, es, "conninfo: required (the local node's database)");
	if (!cfg->queue || !*cfg->queue)
		return pgqev_errbuf_set(eb, es, "queue: required (the cascade's queue name)");
	if (cfg->worker && !*cfg->worker)
		return pgqev_errbuf_set(eb, es,
					"worker: empty name (use NULL for node_info.worker_name)");
	if (cfg->fetch_size < 1 || cfg->fetch_size > 1000000)
		return pgqev_errbuf_set(eb, es, "fetch_size: %u is out of range 1..1000000",
					cfg->fetch_size);
	if (cfg->wm_period == 0)
		return pgqev_errbuf_set(eb, es, "wm_period: must be positive");
	if (cfg->fail_delay == 0 || cfg->fail_cap < cfg->fail_delay)
		return pgqev_errbuf_set(eb, es,
					"fail_delay/fail_cap: need 0 < fail_delay <= fail_cap");
	return pgqev_check_conninfo(eb, es, "conninfo", cfg->conninfo);
}

static char *make_label(const PgqevCascadeConfig *cfg)
{
	if (cfg->label)
		return strdup(cfg->label);
	char *db = pgqev_conninfo_dbname(cfg->conninfo);
	char *l = pgqev_sprintf("%s/%s", db ? db : "-", cfg->queue);
	free(db);
	return l;
}

PgqevCascade *pgqev_cascade_new(struct event_base *base, const PgqevCascadeConfig *cfg,
				char *errbuf, size_t errsize)
{
	if (!base) {
		pgqev_errbuf_set(errbuf, errsize, "event_base: required");
		return NULL;
	}
	if (!cfg) {
		pgqev_errbuf_set(errbuf, errsize, "config: required");
		return NULL;
	}
	/* the caller's struct may be shorter or longer than ours (see size) */
	PgqevCascadeConfig in;
	config_defaults(&in);
	int src = pqev_struct_in(&in, sizeof(in), cfg, cfg->size, 0);
	if (src < 0 || cfg->size < CASCADE_CONFIG_SIZE_1) {
		pgqev_errbuf_set(errbuf, errsize,
				 src == -E2BIG
					 ? "config: sets fields this library (%s) does not know"
					 : "config: not filled by pgqev_cascade_config_init() (%s)",
				 PGQEV_VERSION);
		return NULL;
	}
	in.size = sizeof(in);
	cfg = &in;
	if (!validate(cfg, errbuf, errsize))
		return NULL;
	PgqevCascade *w = calloc(1, sizeof(*w));
	if (!w) {
		pgqev_errbuf_set(errbuf, errsize, "out of memory");
		return NULL;
	}
	w->base = base;
	w->cfg = *cfg;
	w->cfg.conninfo = w->s_conninfo = strdup(cfg->conninfo);
	w->cfg.queue = w->s_queue = strdup(cfg->queue);
	w->cfg.worker = w->s_worker = cfg->worker ? strdup(cfg->worker) : NULL;
	w->cfg.node = w->s_node = cfg->node ? strdup(cfg->node) : NULL;
	w->cfg.label = NULL;
	w->label = make_label(cfg);
	bool oom = !w->s_conninfo || !w->s_queue || (cfg->worker && !w->s_worker) ||
		   (cfg->node && !w->s_node) || !w->label;
	if (!oom) {
		w->lim = cfg->limiter;
		if (!w->lim) {
			w->lim = pqev_connlimit_new(base, 0);
			w->own_lim = true;
		}
		w->timer = evtimer_new(base, timer_cb, w);
		if (w->lim && w->timer)
			w->dst = new_conn(w, w->cfg.conninfo, false);
	}
	if (oom || !w->lim || !w->timer || !w->dst) {
		pgqev_errbuf_set(errbuf, errsize, "out of memory");
		destroy(w);
		return NULL;
	}
	pqev_backoff_init(&w->fail_bo, w->cfg.fail_delay, w->cfg.fail_cap, 0);
	w->poll_interval = w->cfg.poll_interval ? w->cfg.poll_interval : USEC_PER_SEC;
	return w;
}

int pgqev_cascade_start(PgqevCascade *w)
{
	if (w->started || w->free_pending)
		return -EALREADY;
	int rc = pqev_conn_start(w->dst);
	if (rc < 0) {
		report(w, PGQEV_ERR_CONNECTION, 0, 1, "cannot start: %s",
		       bare(w->dst, pqev_conn_error(w->dst)));
		pqev_conn_close(w->dst);
		return rc;
	}
	w->started = true;
	w->stop_requested = false;
	w->worker = w->s_worker ? strdup(w->s_worker) : NULL;
	set_phase(w, WP_WAIT_DST);
	return 0;
}

static void do_stop(PgqevCascade *w)
{
	w->gen++;
	abandon(w, NULL);
	evtimer_del(w->timer);
	if (w->dst)
		pqev_conn_close(w->dst);
	w->src = pqev_conn_free(w->src);
	free(w->src_conninfo);
	w->src_conninfo = NULL;
	w->src_setup = false;
	w->locked = false;
	w->started = false;
	w->stop_requested = false;
	free(w->worker);
	w->worker = NULL;
	set_phase(w, WP_STOPPED);
}

void pgqev_cascade_stop(PgqevCascade *w)
{
	if (!w || !w->started || w->free_pending)
		return;
	enter(w);
	w->stop_requested = true;
	if (!w->in_batch)
		do_stop(w);
	leave(w);
}

static void free_limiter_later(evutil_socket_t fd, short what, void *arg)
{
	if (pqev_connlimit_free(arg) < 0)
		(void)event_base_once(pqev_connlimit_base(arg), -1, EV_TIMEOUT, free_limiter_later,
				      arg, NULL);
}

static void destroy(PgqevCascade *w)
{
	if (w->timer)
		event_free(w->timer);
	w->timer = NULL;
	clear_batch(w);
	w->src = pqev_conn_free(w->src);
	w->dst = pqev_conn_free(w->dst);
	/* connections freed inside their own callback still hold the limiter:
	   free it on the next loop pass then */
	if (w->own_lim && w->lim && pqev_connlimit_free(w->lim) < 0)
		(void)event_base_once(w->base, -1, EV_TIMEOUT, free_limiter_later, w->lim, NULL);
	free(w->s_conninfo);
	free(w->s_queue);
	free(w->s_worker);
	free(w->s_node);
	free(w->label);
	free(w->worker);
	free(w->src_conninfo);
	free(w->node_name);
	free(w->provider);
	free(w->channel);
	free(w);
}

PgqevCascade *pgqev_cascade_free(PgqevCascade *w)
{
	if (!w || w->free_pending)
		return NULL;
	w->free_pending = true;
	w->gen++;
	if (w->timer)
		evtimer_del(w->timer);
	if (w->depth == 0)
		destroy(w);
	return NULL;
}

PgqevState pgqev_cascade_state(const PgqevCascade *w)
{
	return w->state;
}

const char *pgqev_cascade_label(const PgqevCascade *w)
{
	return w->label;
}

const char *pgqev_cascade_node_type(const PgqevCascade *w)
{
	return type_names[w->type];
}

const char *pgqev_cascade_provider(const PgqevCascade *w)
{
	return w->type == NT_ROOT ? NULL : w->provider;
}

void pgqev_cascade_stats_size(const PgqevCascade *w, PgqevCascadeStats *out, size_t size)
{
	if (!w || !out || size < sizeof(out->size))
		return;
	PgqevCascadeStats st = w->st;
	st.provider_connected = w->src && pqev_conn_is_ready(w->src);
	st.provider_failures = w->src ? pqev_conn_streak(w->src) : 0;
	/* an older program's struct is shorter; a newer one's extra fields are
	   unknown here: zero */
	size_t n = size < sizeof(st) ? size : sizeof(st);
	if (size > n)
		memset(out, 0, size);
	memcpy(out, &st, n);
	out->size = size;
}

void pgqev_cascade_wake(PgqevCascade *w)
{
	if (!w || w->free_pending)
		return;
	enter(w);
	if (w->phase == WP_IDLE)
		go_state(w);
	leave(w);
}
