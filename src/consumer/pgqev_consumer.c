/*
 * The consumer's state machine: one source connection (and, in exactly-once
 * mode, one target connection) from the core layer, driven by request
 * completions, tick notifications and one timer.
 *
 *   WAIT_CONN -> SETUP (register once, learn + LISTEN the tick channel)
 *   -> NEXT (next_batch_custom, autocommit: the open batch is committed, so a
 *      redelivery returns the same batch id)
 *   -> IDLE (no batch: wait for a notification or the poll timer) -> NEXT
 *   -> [EO_CHECK: target BEGIN + pgq_ext.is_batch_done]
 *   -> READ (BEGIN + get_batch_cursor, sent right behind next_batch in the same
 *      round trip when no target is involved; FETCH ahead one chunk, handler per chunk,
 *      event retries) -> FINISH ([target set_batch_done + COMMIT], then
 *      finish_batch + COMMIT on the source) -> NEXT at once, or IDLE when the
 *      batch ended at the newest tick a notification named (nothing to find).
 *   Any failure -> BACKOFF (roll back, delay with backoff) -> NEXT.
 *   A lost source connection -> WAIT_CONN (the core reconnects with backoff).
 *
 * Invariants: `gen` is bumped whenever in-flight work becomes stale (failure,
 * lost connection, stop, free); every request carries the gen it was sent in and
 * its completion is ignored when they differ. User callbacks may stop or free
 * the consumer: every entry from the loop or the API is bracketed by enter/leave,
 * the memory is released at the outermost leave, and code after a user callback
 * checks gen before touching state.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgqev_config.h"
#include "pgqev_int.h"

typedef enum ReqKind {
	RK_IGNORE,
	RK_REGISTER,
	RK_CHANNEL,
	RK_NEXT,
	RK_EO_CHECK,
	RK_CURSOR, /* BEGIN + get_batch_cursor (first chunk) */
	RK_FETCH,
	RK_RETRY,
	RK_FINISH,
	RK_COMMIT,
	RK_SKIP_FINISH, /* exactly-once: batch already applied, finish only */
	RK_TGT_DONE,
	RK_TGT_COMMIT,
	RK_TGT_WRITE,
} ReqKind;

/* The split reader's function is there (pgqd-ev's SQL, not PgQ 3.5's). */
#define SPLIT_FN_EXISTS                                                                     \
	"to_regprocedure('pgq._get_batch_part_cursor(bigint,text,integer,bigint,integer)')" \
	" is not null"

static const char *const state_names[] = {
	[PGQEV_STATE_STOPPED] = "stopped",       [PGQEV_STATE_CONNECTING] = "connecting",
	[PGQEV_STATE_LISTENING] = "listening",   [PGQEV_STATE_IDLE] = "idle",
	[PGQEV_STATE_PROCESSING] = "processing", [PGQEV_STATE_BACKOFF] = "backing-off",
};

const char *pgqev_state_name(PgqevState st)
{
	if ((unsigned)st < sizeof(state_names) / sizeof(state_names[0]))
		return state_names[st];
	return "invalid";
}

const char *pgqev_version(void)
{
	return PGQEV_VERSION;
}

static void go_next(PgqevConsumer *c);
static void go_idle(PgqevConsumer *c);
static bool send_next(PgqevConsumer *c);
static void go_setup(PgqevConsumer *c);
static void do_stop(PgqevConsumer *c);
static void chunk_arrived(PgqevConsumer *c, const PGresult *res);
static void fail(PgqevConsumer *c, PgqevErrorKind kind, const char *what, const char *detail);
static void destroy(PgqevConsumer *c);

/* ---- re-entrancy ---- */

static void enter(PgqevConsumer *c)
{
	c->depth++;
}

static void leave(PgqevConsumer *c)
{
	if (--c->depth == 0 && c->free_pending)
		destroy(c);
}

/* What the application sees of each phase. */
static const PgqevState phase_state[] = {
	[PH_STOPPED] = PGQEV_STATE_STOPPED,     [PH_CONNECT] = PGQEV_STATE_CONNECTING,
	[PH_RECONNECT] = PGQEV_STATE_BACKOFF,   [PH_SETUP] = PGQEV_STATE_CONNECTING,
	[PH_NEXT] = PGQEV_STATE_LISTENING,      [PH_IDLE] = PGQEV_STATE_IDLE,
	[PH_EO_CHECK] = PGQEV_STATE_PROCESSING, [PH_READ] = PGQEV_STATE_PROCESSING,
	[PH_FINISH] = PGQEV_STATE_PROCESSING,   [PH_BACKOFF] = PGQEV_STATE_BACKOFF,
};

#ifdef PGQEV_CASSERT
#define PHB(p) (1u << (p))
/* The phases each phase may go to, besides itself, STOPPED and RECONNECT
   (stop and a broken source connection end any phase but STOPPED). */
static const unsigned phase_next[] = {
	[PH_STOPPED] = PHB(PH_CONNECT),
	[PH_CONNECT] = 0,
	[PH_RECONNECT] = PHB(PH_SETUP),
	[PH_SETUP] = PHB(PH_SETUP) | PHB(PH_NEXT) | PHB(PH_BACKOFF),
	[PH_NEXT] = PHB(PH_IDLE) | PHB(PH_EO_CHECK) | PHB(PH_READ) | PHB(PH_BACKOFF),
	[PH_IDLE] = PHB(PH_NEXT) | PHB(PH_BACKOFF),
	[PH_EO_CHECK] = PHB(PH_READ) | PHB(PH_FINISH) | PHB(PH_BACKOFF),
	[PH_READ] = PHB(PH_FINISH) | PHB(PH_BACKOFF),
	[PH_FINISH] = PHB(PH_NEXT) | PHB(PH_IDLE) | PHB(PH_BACKOFF),
	[PH_BACKOFF] = PHB(PH_SETUP) | PHB(PH_NEXT),
};

static bool phase_legal(Phase from, Phase to)
{
	if (from == to || to == PH_STOPPED)
		return true;
	if (to == PH_RECONNECT)
		return from != PH_STOPPED;
	if (to == PH_SETUP && from == PH_CONNECT)
		return true;
	return (phase_next[from] & PHB(to)) != 0;
}
#endif

/*
 * The one place the phase changes; the public state follows it. on_state runs
 * last, so a caller that goes on after it checks that the phase is still its
 * own (the application may have stopped or freed the consumer). A consumer
 * being freed reports nothing.
 */
static void set_phase(PgqevConsumer *c, Phase ph)
{
	PGQEV_ASSERT(phase_legal(c->phase, ph));
	c->phase = ph;
	PgqevState st = phase_state[ph];
	if (c->state == st)
		return;
	PgqevState old = c->state;
	c->state = st;
	if (c->cfg.on_state && !c->free_pending)
		c->cfg.on_state(c, old, st, c->cfg.arg);
}

/* Waiting for the source connection (first connect or again). */
static bool waiting_conn(const PgqevConsumer *c)
{
	return c->phase == PH_CONNECT || c->phase == PH_RECONNECT;
}

/* Hand an error to on_error: the label and the detail stay apart, and the
   joined message is cut to PGQEV_MSG_MAX whatever their lengths. */
static void emit(PgqevConsumer *c, PgqevErrorKind kind, int64_t batch_id, usec_t retry_in,
		 unsigned streak, const char *detail)
{
	char msg[PGQEV_MSG_MAX];
	PgqevError err;
	pgqev_error_fill(&err, msg, c->label, kind, batch_id, retry_in, streak, detail);
	c->cfg.on_error(c, &err, c->cfg.arg);
}

static void report(PgqevConsumer *c, PgqevErrorKind kind, usec_t retry_in, unsigned streak,
		   const char *fmt, ...) PQEV_PRINTF(5, 6);

static void report(PgqevConsumer *c, PgqevErrorKind kind, usec_t retry_in, unsigned streak,
		   const char *fmt, ...)
{
	if (!c->cfg.on_error)
		return;
	char detail[PGQEV_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	emit(c, kind, c->batch ? c->batch->id : 0, retry_in, streak, detail);
}

/* ---- requests ---- */

static void req_done(PqevConn *conn, const PqevReply *reply, void *arg);
static void req_rows(PqevConn *conn, const PGresult *res, void *arg);

static int send_on(PgqevConsumer *c, bool target, ReqKind kind, const char *sql, int nparams,
		   const char *const *params, unsigned flags)
{
	PgqevReq req = {.owner = c, .gen = c->gen, .kind = kind, .alt = target};
	return pgqev_req_send(target ? c->tgt : c->src, &req, sql, nparams, params, flags,
			      (kind == RK_CURSOR || kind == RK_FETCH) ? req_rows : NULL, req_done);
}

/* Send or fail the batch/consumer with a clear reason; true if sent. */
static bool send_or_fail(PgqevConsumer *c, bool target, ReqKind kind, const char *sql, int nparams,
			 const char *const *params, unsigned flags)
{
	int rc = send_on(c, target, kind, sql, nparams, params, flags);
	if (rc == 0)
		return true;
	PqevConn *conn = target ? c->tgt : c->src;
	fail(c, target ? PGQEV_ERR_TARGET : PGQEV_ERR_SQL, "cannot send a request",
	     rc == -ENOMEM ? "out of memory" : pqev_conn_error_detail(conn));
	return false;
}

static void send_ignored(PgqevConsumer *c, bool target, const char *sql)
{
	PqevConn *conn = target ? c->tgt : c->src;
	if (conn && pqev_conn_is_ready(conn))
		(void)send_on(c, target, RK_IGNORE, sql, 0, NULL, 0);
}

/* ---- timer ---- */

static void timer_cb(evutil_socket_t fd, short what, void *arg);

static void arm_timer(PgqevConsumer *c, usec_t delay)
{
	if (pgqev_timer_arm(c->timer, delay) < 0)
		report(c, PGQEV_ERR_SQL, 0, 1, "cannot arm the timer");
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	PgqevConsumer *c = arg;
	enter(c);
	c->wait_tgt = false;
	if (c->phase == PH_IDLE)
		go_next(c);
	else if (c->phase == PH_BACKOFF)
		c->setup_done ? go_next(c) : go_setup(c);
	leave(c);
}

/* ---- batches ---- */

/* Give the open batch up: roll back what can be rolled back, free it unless the
   application still holds a chunk of it. src_alive: the source can take a ROLLBACK. */
static void abandon_batch(PgqevConsumer *c, bool src_alive)
{
	PgqevBatch *b = c->batch;
	if (c->src_in_tx && src_alive)
		send_ignored(c, false, "rollback");
	c->src_in_tx = false;
	c->spec_cursor = false;
	if (!b)
		return;
	c->batch = NULL;
	b->abandoned = true;
	if (b->tgt_open)
		send_ignored(c, true, "rollback");
	b->tgt_open = false;
	if (b->in_handler)
		return; /* deliver() releases it when the handler returns */
	if (b->pending) {
		b->next_stale = c->stale;
		c->stale = b;
		return;
	}
	pgqev_batch_release(b);
}

static void unlink_stale(PgqevConsumer *c, PgqevBatch *b)
{
	for (PgqevBatch **p = &c->stale; *p; p = &(*p)->next_stale) {
		if (*p == b) {
			*p = b->next_stale;
			return;
		}
	}
}

static void fail(PgqevConsumer *c, PgqevErrorKind kind, const char *what, const char *detail)
{
	if (c->phase == PH_STOPPED || waiting_conn(c))
		return;
	int64_t bid = c->batch ? c->batch->id : 0;
	/* A connection failure (the target's session broke, or the server said it is
	   going down) is not ours to back off from: the core reconnects it (through
	   its server's probe while the server is down), and we go on as soon as it
	   is back. A growing delay here would keep the consumer idle for up to
	   fail_cap after a long outage. fail_cap bounds the wait. */
	bool conn = c->fail_conn;
	c->fail_conn = false;
	bool wait_tgt = conn && c->tgt && !pqev_conn_is_ready(c->tgt);
	c->gen++;
	c->next_sent = false;
	abandon_batch(c, true);
	c->fail_streak++;
	usec_t delay = wait_tgt ? c->cfg.fail_cap : conn ? 0 : pqev_backoff_next(&c->fail_bo);
	if (c->cfg.on_error) {
		char text[PGQEV_MSG_MAX];
		if (snprintf(text, sizeof(text), "%s%s%s", what, detail ? ": " : "",
			     detail ? detail : "") >= (int)sizeof(text))
			memcpy(text + sizeof(text) - 4, "...", 4);
		uint64_t gen = c->gen;
		emit(c, kind, bid, c->stop_requested ? 0 : delay, c->fail_streak, text);
		if (gen != c->gen)
			return;
	}
	if (c->stop_requested) {
		do_stop(c);
		return;
	}
	c->wait_tgt = wait_tgt;
	arm_timer(c, delay);
	set_phase(c, PH_BACKOFF);
}

/* The source connection broke: everything in flight is gone; wait for CONNECTED. */
static void conn_broken(PgqevConsumer *c)
{
	if (c->phase == PH_STOPPED || waiting_conn(c))
		return;
	c->gen++;
	c->next_sent = false;
	c->wait_tgt = false;
	evtimer_del(c->timer);
	abandon_batch(c, false);
	c->setup_done = false;
	if (c->stop_requested) {
		do_stop(c);
		return;
	}
	set_phase(c, PH_RECONNECT);
}

/* The batch ends at the newest tick a notification named: no newer tick has
   been announced, so a look-up now would find nothing (and cost the server a
   round of statements per batch); the next tick's notification wakes us. Only
   when notifications name ticks (pgqd-ev's SQL): with none, always look. */
static bool caught_up(const PgqevConsumer *c, const PgqevBatch *b)
{
	return !c->cfg.subconsumer && b->tick > 0 && b->tick == c->notified_tick;
}

static void batch_finished(PgqevConsumer *c)
{
	PgqevBatch *b = c->batch;
	bool idle = !c->next_sent && !c->stop_requested && caught_up(c, b);
	c->batch = NULL;
	/* committed; a BEGIN sent behind the next look-up opens the next one */
	c->src_in_tx = c->spec_cursor;
	pgqev_batch_release(b);
	c->n_batches++;
	c->fail_streak = 0;
	pqev_backoff_reset(&c->fail_bo);
	if (idle)
		go_idle(c);
	else
		go_next(c);
}

static void start_finish(PgqevConsumer *c)
{
	PgqevBatch *b = c->batch;
	char id[32];
	snprintf(id, sizeof(id), "%" PRId64, b->id);
	const char *p[3] = {id};
	b->finishing = true;
	set_phase(c, PH_FINISH);
	if (b->tgt_open) {
		const char *tp[3] = {c->cfg.consumer, c->ext_key, id};
		if (!send_or_fail(c, true, RK_TGT_DONE, "select pgq_ext.set_batch_done($1, $2, $3)",
				  3, tp, 0))
			return;
		(void)send_or_fail(c, true, RK_TGT_COMMIT, "commit", 0, NULL, 0);
		return;
	}
	const char *fin = c->cfg.subconsumer ? "select pgq_coop.finish_batch($1)"
					     : "select pgq.finish_batch($1)";
	if (!send_or_fail(c, false, RK_FINISH, fin, 1, p, PQEV_Q_PREPARE))
		return;
	if (!send_or_fail(c, false, RK_COMMIT, "commit", 0, NULL, 0))
		return;
	/* ask for the next batch in the same round trip (unless we know there is
	   none yet); if the finish fails, its answer is stale (gen) and ignored */
	if (!c->stop_requested && !caught_up(c, b) && send_next(c))
		c->next_sent = true;
}

/*
 * Ask for more chunks when nothing blocks it. Sync mode keeps two FETCHes in
 * flight so the server never waits for our next request (at most two chunks
 * buffered in libpq besides the one being handled); async mode keeps one, plus
 * one chunk held ready, beyond the chunk the application holds.
 */
static void maybe_fetch(PgqevConsumer *c, PgqevBatch *b)
{
	unsigned max = c->cfg.async ? 1 : 2;
	uint64_t gen = c->gen;
	while (!b->eof && !b->ready && b->fetches < max && gen == c->gen) {
		char sql[64];
		snprintf(sql, sizeof(sql), "fetch %u from " PGQEV_CURSOR, c->cfg.fetch_size);
		b->fetches++;
		(void)send_or_fail(c, false, RK_FETCH, sql, 0, NULL, 0);
	}
}

static void maybe_finish(PgqevConsumer *c, PgqevBatch *b)
{
	if (b->eof && b->fetches == 0 && !b->pending && !b->ready && !b->in_handler &&
	    !b->finishing)
		start_finish(c);
}

/* Queue pgq.event_retry for the events of the current chunk marked for retry. */
static bool send_retries(PgqevConsumer *c, PgqevBatch *b)
{
	size_t n = 0;
	for (size_t i = 0; i < b->nrows; i++)
		if (b->events[i].retry_secs != PGQEV_NO_RETRY)
			n++;
	if (n == 0)
		return true;
	size_t cap = n * 24 + 3;
	char *ids = malloc(cap), *secs = malloc(cap);
	if (!ids || !secs) {
		free(ids);
		free(secs);
		fail(c, PGQEV_ERR_SQL, "cannot queue event retries", "out of memory");
		return false;
	}
	size_t li = 0, ls = 0;
	ids[li++] = '{';
	secs[ls++] = '{';
	for (size_t i = 0; i < b->nrows; i++) {
		PgqevEvent *e = &b->events[i];
		if (e->retry_secs == PGQEV_NO_RETRY)
			continue;
		const char *sep = (li > 1) ? "," : "";
		li += (size_t)snprintf(ids + li, cap - li, "%s%s", sep,
				       PQgetvalue(e->res, e->row, 0));
		ls += (size_t)snprintf(secs + ls, cap - ls, "%s%d", sep, e->retry_secs);
	}
	snprintf(ids + li, cap - li, "}");
	snprintf(secs + ls, cap - ls, "}");
	char id[32];
	snprintf(id, sizeof(id), "%" PRId64, b->id);
	const char *p[3] = {id, ids, secs};
	bool ok = send_or_fail(c, false, RK_RETRY,
			       "select count(pgq.event_retry($1::bigint, e.ev, e.sec))"
			       " from unnest($2::bigint[], $3::int4[]) as e(ev, sec)",
			       3, p, 0);
	free(ids);
	free(secs);
	return ok;
}

/* The handler is done with the current chunk. */
static void chunk_done(PgqevConsumer *c, PgqevBatch *b, PgqevVerdict v)
{
	if (v == PGQEV_FAIL) {
		if (c->cfg.fail_policy == PGQEV_FAIL_REDELIVER) {
			fail(c, PGQEV_ERR_HANDLER, "handler failed",
			     "the batch will be delivered again");
			return;
		}
		for (size_t i = 0; i < b->nrows; i++)
			b->events[i].retry_secs = c->cfg.retry_delay;
		report(c, PGQEV_ERR_HANDLER, 0, 1,
		       "handler failed: %zu events of batch %" PRId64 " go to the retry queue",
		       b->nrows, b->id);
	}
	if (!send_retries(c, b))
		return;
	pgqev_batch_clear_rows(b);
	if (b->split) {
		pgqev_split_chunk_done(c, b);
		return;
	}
	if (b->ready) {
		PGresult *r = b->ready;
		b->ready = NULL;
		pgqev_batch_set_rows(b, NULL, r);
		maybe_fetch(c, b);
		if (b->c->gen != b->gen)
			return;
		/* deliver the buffered chunk; re-enters chunk_done */
		chunk_arrived(c, NULL);
		return;
	}
	maybe_fetch(c, b);
	if (c->batch == b)
		maybe_finish(c, b);
}

/* Run the handler on the chunk already set in b. */
static void deliver(PgqevConsumer *c, PgqevBatch *b)
{
	uint64_t gen = c->gen;
	c->n_events += b->nrows;
	b->in_handler = true;
	PgqevVerdict v = c->cfg.on_batch(c, b, c->cfg.arg);
	b->in_handler = false;
	b->chunk++;
	if (b->abandoned || gen != c->gen) {
		if (b->abandoned && c->batch != b)
			pgqev_batch_release(b);
		return;
	}
	if (v == PGQEV_PENDING) {
		if (!c->cfg.async) {
			fail(c, PGQEV_ERR_HANDLER, "handler returned PGQEV_PENDING",
			     "the consumer is not in async mode (set cfg.async)");
			return;
		}
		b->pending = true;
		return;
	}
	chunk_done(c, b, v == PGQEV_DONE ? PGQEV_DONE : PGQEV_FAIL);
}

/* A chunk came from the cursor (res), or the buffered one is set (res NULL). */
static void chunk_arrived(PgqevConsumer *c, const PGresult *res)
{
	PgqevBatch *b = c->batch;
	if (res) {
		b->fetches--;
		size_t n = (size_t)PQntuples(res);
		if (n < c->cfg.fetch_size)
			b->eof = true;
		if (n == 0) {
			maybe_finish(c, b);
			return;
		}
		if (c->cfg.async) {
			PGresult *own = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
			if (!own) {
				fail(c, PGQEV_ERR_SQL, "cannot keep a chunk", "out of memory");
				return;
			}
			if (b->pending) {
				b->ready = own;
				return;
			}
			pgqev_batch_set_rows(b, NULL, own);
		} else {
			pgqev_batch_set_rows(b, res, NULL);
		}
		/* fetch the next chunk while this one is handled */
		maybe_fetch(c, b);
		if (c->gen != b->gen)
			return;
	}
	deliver(c, b);
}

static void open_cursor(PgqevConsumer *c)
{
	PgqevBatch *b = c->batch;
	if (b->split_sized && c->spec_cursor) {
		/* the cursor sent behind the look-up skipped this batch (it is large)
		   and returns no rows: its reply is stale from here on; the BEGIN
		   before it stands. Read with one backend, the batch is opened below. */
		c->spec_cursor = false;
		c->gen++;
		b->gen = c->gen;
	}
	if (b->want_split) {
		set_phase(c, PH_READ);
		if (c->phase == PH_READ && !c->free_pending) /* on_state may stop it */
			pgqev_split_open(c, b);
		return;
	}
	if (c->spec_cursor) {
		/* already on its way behind the look-up: its rows are this batch's */
		c->spec_cursor = false;
		b->fetches = 1;
		set_phase(c, PH_READ);
		return;
	}
	char *sql = pgqev_sprintf("%sselect * from pgq.get_batch_cursor(%" PRId64 ", '" PGQEV_CURSOR
				  "', %u, null)",
				  c->src_in_tx ? "" : "begin; ", b->id, c->cfg.fetch_size);
	if (!sql) {
		fail(c, PGQEV_ERR_SQL, "cannot open the batch", "out of memory");
		return;
	}
	c->src_in_tx = true;
	b->fetches = 1;
	bool ok = send_or_fail(c, false, RK_CURSOR, sql, 0, NULL, PQEV_Q_SIMPLE);
	free(sql);
	if (ok)
		set_phase(c, PH_READ);
}

/*
 * The target look-up. Until this consumer has recorded a batch under its
 * (queue, consumer) key, the pre-queue key is asked as well: a batch applied
 * by an older libpgqev or by python3-pgq's RemoteConsumer (both keyed by
 * consumer and subconsumer only) just before an upgrade is recognised. After
 * that only the new key counts, so another queue's consumer of the same name
 * writing the old key cannot make a batch look done.
 */
static char *eo_check_sql(PgqevConsumer *c, int64_t id)
{
	char *cons = pgqev_quote_literal(c->cfg.consumer);
	char *key = pgqev_quote_literal(c->ext_key);
	char *old = pgqev_quote_literal(c->ext_old_key);
	char *sql = NULL;
	if (cons && key && old) {
		if (c->ext_key_written)
			sql = pgqev_sprintf("begin; select pgq_ext.is_batch_done(%s, %s, %" PRId64
					    ")",
					    cons, key, id);
		else
			sql = pgqev_sprintf("begin; select pgq_ext.is_batch_done(%s, %s, %" PRId64
					    ") or pgq_ext.is_batch_done(%s, %s, %" PRId64 ")",
					    cons, key, id, cons, old, id);
	}
	free(cons);
	free(key);
	free(old);
	return sql;
}

static void start_batch(PgqevConsumer *c, const PGresult *res)
{
	int64_t id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PgqevBatch *b = pgqev_batch_new(c, id);
	if (!b) {
		fail(c, PGQEV_ERR_SQL, "cannot start a batch", "out of memory");
		return;
	}
	if (!PQgetisnull(res, 0, 1))
		b->prev_tick = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	if (!PQgetisnull(res, 0, 2))
		b->tick = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	if (!PQgetisnull(res, 0, 3))
		b->prev_tick_time = strdup(PQgetvalue(res, 0, 3));
	if (!PQgetisnull(res, 0, 4))
		b->tick_time = strdup(PQgetvalue(res, 0, 4));
	/* the look-up's last column (split reader on): the batch is large and the
	   server has pgq._get_batch_part_cursor */
	b->split_sized = c->cfg.split_min_events && !c->cfg.subconsumer && PQnfields(res) >= 7 &&
			 strcmp(PQgetvalue(res, 0, 6), "t") == 0;
	b->want_split = b->split_sized && c->split_refused != id;
	c->batch = b;
	if (c->tgt) {
		char *sql = eo_check_sql(c, id);
		if (!sql) {
			fail(c, PGQEV_ERR_TARGET, "cannot check the target", "out of memory");
			return;
		}
		b->tgt_open = true;
		bool ok = send_or_fail(c, true, RK_EO_CHECK, sql, 0, NULL, PQEV_Q_SIMPLE);
		free(sql);
		if (ok)
			set_phase(c, PH_EO_CHECK);
		return;
	}
	open_cursor(c);
}

/* ---- phases ---- */

static void go_idle(PgqevConsumer *c)
{
	arm_timer(c, c->poll_interval);
	set_phase(c, PH_IDLE);
}

/*
 * Behind the (autocommitted) look-up, in the same round trip: BEGIN and the
 * cursor over the batch the look-up leaves open, read back from the
 * subscription (SELECT on it is public in PgQ). With no batch open
 * get_batch_cursor sees NULL and returns nothing; on_next rolls back.
 * Not with a target: the exactly-once check comes first there.
 *
 * The 4-argument get_batch_cursor (filter NULL) here and in open_cursor: the
 * 3-argument one only wraps it (in PgQ 3.5 a second PL/pgSQL call that copies
 * the rows again; in our SQL before 2026-12-06 a SQL function planned per call).
 */
static void send_spec_cursor(PgqevConsumer *c)
{
	char fetch[16], split[16];
	snprintf(fetch, sizeof(fetch), "%u", c->cfg.fetch_size);
	snprintf(split, sizeof(split), "%u", c->cfg.split_min_events);
	const char *p[4] = {c->cfg.queue, c->cfg.consumer, fetch, split};
	if (send_on(c, false, RK_IGNORE, "begin", 0, NULL, 0) < 0)
		return;
	c->src_in_tx = true;
	/* split reader on: not for a batch the split reader takes (the same test
	   as the look-up's last column, on the same tick rows) */
	int rc =
		c->cfg.split_min_events && !c->cfg.subconsumer
			? send_on(c, false, RK_CURSOR,
				  "select * from pgq.get_batch_cursor((select s.sub_batch"
				  " from pgq.subscription s join pgq.queue q on q.queue_id = s.sub_queue"
				  " join pgq.consumer co on co.co_id = s.sub_consumer"
				  " where q.queue_name = $1 and co.co_name = $2 and not coalesce("
				  "(select t2.tick_event_seq - t1.tick_event_seq >= $4::int8"
				  " from pgq.tick t1, pgq.tick t2 where t1.tick_queue = s.sub_queue"
				  " and t1.tick_id = s.sub_last_tick and t2.tick_queue = s.sub_queue"
				  " and t2.tick_id = s.sub_next_tick) and " SPLIT_FN_EXISTS
				  ", false)),"
				  " '" PGQEV_CURSOR "', $3::int4, null)",
				  4, p, PQEV_Q_PREPARE)
			: send_on(c, false, RK_CURSOR,
				  "select * from pgq.get_batch_cursor((select s.sub_batch"
				  " from pgq.subscription s join pgq.queue q on q.queue_id = s.sub_queue"
				  " join pgq.consumer co on co.co_id = s.sub_consumer"
				  " where q.queue_name = $1 and co.co_name = $2), '" PGQEV_CURSOR
				  "', $3::int4, null)",
				  3, p, PQEV_Q_PREPARE);
	if (rc == 0)
		c->spec_cursor = true;
}

/* Send next_batch_custom (or pgq_coop's); true if sent. */
static bool send_next(PgqevConsumer *c)
{
	c->wake_pending = false;
	char lag[48], ival[48], cnt[16];
	const char *min_lag = pgqev_interval(c->cfg.min_lag, lag, sizeof(lag));
	const char *min_ival = pgqev_interval(c->cfg.min_interval, ival, sizeof(ival));
	const char *min_cnt = NULL;
	if (c->cfg.min_count > 0) {
		snprintf(cnt, sizeof(cnt), "%d", c->cfg.min_count);
		min_cnt = cnt;
	}
	if (c->cfg.subconsumer) {
		char dead[48];
		const char *d = pgqev_interval(c->cfg.dead_interval, dead, sizeof(dead));
		const char *p[7] = {c->cfg.queue,
				    c->cfg.consumer,
				    c->cfg.subconsumer,
				    min_lag,
				    min_cnt,
				    min_ival,
				    d};
		return send_or_fail(
			c, false, RK_NEXT,
			"select b.id, i.prev_tick_id, i.tick_id, i.batch_start, i.batch_end"
			" from pgq_coop.next_batch_custom($1, $2, $3, $4::interval,"
			" $5::int4, $6::interval, $7::interval) as b(id)"
			" left join lateral (select * from pgq.get_batch_info(b.id)"
			" where b.id is not null) i on true",
			7, p, PQEV_Q_PREPARE);
	}
	/* catching up: one batch over about half the lag instead of one per tick */
	c->next_catchup = false;
	if (c->catchup_us && !c->cfg.min_count && !c->cfg.min_interval && !c->cfg.min_lag) {
		min_ival = pgqev_interval(c->catchup_us, ival, sizeof(ival));
		c->next_catchup = true;
	}
	char split[16];
	snprintf(split, sizeof(split), "%u", c->cfg.split_min_events);
	const char *p[6] = {c->cfg.queue, c->cfg.consumer, min_lag, min_cnt, min_ival, split};
	bool sent =
		c->cfg.split_min_events
			? send_or_fail(
				  c, false, RK_NEXT,
				  "select batch_id, prev_tick_id, cur_tick_id, prev_tick_time,"
				  " cur_tick_time, extract(epoch from now() - cur_tick_time),"
				  " coalesce(cur_tick_event_seq - prev_tick_event_seq >= $6::int8"
				  " and " SPLIT_FN_EXISTS ", false)"
				  " from pgq.next_batch_custom($1, $2, $3::interval, $4::int4,"
				  " $5::interval)",
				  6, p, PQEV_Q_PREPARE)
			: send_or_fail(c, false, RK_NEXT,
				       "select batch_id, prev_tick_id, cur_tick_id, prev_tick_time,"
				       " cur_tick_time, extract(epoch from now() - cur_tick_time)"
				       " from pgq.next_batch_custom($1, $2, $3::interval, $4::int4,"
				       " $5::interval)",
				       5, p, PQEV_Q_PREPARE);
	if (!sent)
		return false;
	if (!c->tgt)
		send_spec_cursor(c);
	return true;
}

static void go_next(PgqevConsumer *c)
{
	if (c->stop_requested) {
		do_stop(c);
		return;
	}
	evtimer_del(c->timer);
	/* next_sent: already pipelined behind the finished batch's COMMIT */
	if (c->next_sent || send_next(c)) {
		c->next_sent = true;
		set_phase(c, PH_NEXT);
	}
}

static void setup_step_done(PgqevConsumer *c)
{
	if (c->phase != PH_SETUP || --c->setup_pending > 0)
		return;
	c->setup_done = true;
	go_next(c);
}

static void go_setup(PgqevConsumer *c)
{
	c->src_in_tx = false;
	c->setup_pending = 0;
	set_phase(c, PH_SETUP);
	if (c->phase != PH_SETUP)
		return; /* stopped from on_state */
	bool sent = false;
	if (!c->registered && c->cfg.register_on_start) {
		char tick[32];
		snprintf(tick, sizeof(tick), "%" PRId64, c->cfg.register_tick);
		bool ok;
		if (c->cfg.subconsumer) {
			const char *p[3] = {c->cfg.queue, c->cfg.consumer, c->cfg.subconsumer};
			ok = send_or_fail(c, false, RK_REGISTER,
					  "select pgq_coop.register_subconsumer($1, $2, $3)", 3, p,
					  0);
		} else if (c->cfg.register_tick > 0) {
			const char *p[3] = {c->cfg.queue, c->cfg.consumer, tick};
			ok = send_or_fail(c, false, RK_REGISTER,
					  "select pgq.register_consumer_at($1, $2, $3)", 3, p, 0);
		} else {
			const char *p[2] = {c->cfg.queue, c->cfg.consumer};
			ok = send_or_fail(c, false, RK_REGISTER,
					  "select pgq.register_consumer($1, $2)", 2, p, 0);
		}
		if (!ok)
			return;
		sent = true;
		c->setup_pending++;
	} else {
		c->registered = true;
	}
	if (!c->channel_tried && c->cfg.listen) {
		const char *p[1] = {c->cfg.queue};
		if (!send_or_fail(c, false, RK_CHANNEL, "select pgq.queue_notify_channel($1)", 1, p,
				  0))
			return;
		sent = true;
		c->setup_pending++;
	} else {
		c->channel_tried = true;
	}
	if (!sent && c->phase == PH_SETUP) {
		c->setup_done = true;
		go_next(c);
	}
}

static void do_stop(PgqevConsumer *c)
{
	c->gen++;
	c->next_sent = false;
	bool alive = c->src && pqev_conn_is_ready(c->src);
	abandon_batch(c, alive);
	evtimer_del(c->timer);
	if (c->src)
		pqev_conn_close(c->src);
	if (c->tgt)
		pqev_conn_close(c->tgt);
	c->started = false;
	c->stop_requested = false;
	set_phase(c, PH_STOPPED);
}

/* ---- request completions ---- */

static bool ok_reply(PgqevConsumer *c, const PgqevReq *x, const PqevReply *r, const char *what)
{
	if (r->status == PQEV_OK)
		return true;
	const char *state = r->status == PQEV_SQL_ERROR && r->result
				    ? PQresultErrorField(r->result, PG_DIAG_SQLSTATE)
				    : NULL;
	if (r->status == PQEV_SQL_ERROR && !pqev_sqlstate_is_server_down(state)) {
		fail(c, x->alt ? PGQEV_ERR_TARGET : PGQEV_ERR_SQL, what, r->detail);
	} else if (x->alt) {
		c->fail_conn = true;
		fail(c, PGQEV_ERR_TARGET, what, r->detail);
	} else if (r->status == PQEV_SQL_ERROR) {
		/* the backend is going away (shutdown, terminated): the session ends
		   with it; reconnect at once instead of backing off */
		report(c, PGQEV_ERR_CONNECTION, 0, 1, "%s: %s", what, r->detail);
		conn_broken(c);
		pqev_conn_reconnect(c->src);
	} else {
		conn_broken(c);
	}
	return false;
}

static void on_register(PgqevConsumer *c, const PgqevReq *x, const PqevReply *r)
{
	if (!ok_reply(c, x, r, "registering the consumer failed"))
		return;
	c->registered = true;
	setup_step_done(c);
}

static void on_channel(PgqevConsumer *c, const PgqevReq *x, const PqevReply *r)
{
	c->channel_tried = true;
	const char *ch = NULL;
	if (r->status == PQEV_OK && r->result && PQntuples(r->result) == 1 &&
	    !PQgetisnull(r->result, 0, 0))
		ch = PQgetvalue(r->result, 0, 0);
	if (r->status != PQEV_OK && r->status != PQEV_SQL_ERROR) {
		c->channel_tried = false;
		conn_broken(c);
		return;
	}
	if (ch && (c->channel = strdup(ch)) && pqev_conn_listen(c->src, c->channel) == 0) {
		c->poll_interval = c->cfg.poll_interval ? c->cfg.poll_interval : 30 * USEC_PER_SEC;
	} else {
		c->poll_interval = c->cfg.poll_interval ? c->cfg.poll_interval : USEC_PER_SEC;
		report(c, PGQEV_ERR_SQL, 0, 1,
		       "no tick notifications (%s): polling every %" PRIu64 " ms",
		       r->status == PQEV_SQL_ERROR ? r->detail
						   : "cannot LISTEN on the tick channel",
		       c->poll_interval / USEC_PER_MSEC);
	}
	setup_step_done(c);
}

static void on_next(PgqevConsumer *c, const PgqevReq *x, const PqevReply *r)
{
	c->next_sent = false;
	if (!ok_reply(c, x, r, "next_batch failed"))
		return;
	const PGresult *res = r->result;
	/* how far behind the batch's end tick is: above 20 ms, the next look-up
	   asks for a batch spanning half of that (next_batch_custom's min_interval) */
	c->catchup_us = 0;
	if (res && PQntuples(res) == 1 && PQnfields(res) >= 6 && !PQgetisnull(res, 0, 5)) {
		double lag = strtod(PQgetvalue(res, 0, 5), NULL);
		/* capped: a lag of years (or an inf) would overflow the conversion */
		if (lag > 0.02)
			c->catchup_us = (usec_t)(fmin(lag, 86400.0) * 1e6 / 2);
	}
	if (!res || PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		if (c->spec_cursor) {
			/* the cursor sent behind the look-up found nothing to open */
			send_ignored(c, false, "rollback");
			c->src_in_tx = false;
			c->spec_cursor = false;
		}
		if (c->next_catchup && !c->stop_requested) {
			/* no tick that far ahead: look for the next one as usual */
			go_next(c);
			return;
		}
		if (c->stop_requested) {
			do_stop(c);
		} else if (c->wake_pending) {
			go_next(c);
		} else {
			go_idle(c);
		}
		return;
	}
	start_batch(c, res);
}

static void on_eo_check(PgqevConsumer *c, const PgqevReq *x, const PqevReply *r)
{
	if (!ok_reply(c, x, r, "pgq_ext.is_batch_done failed on the target"))
		return;
	const PGresult *res = r->result;
	bool done = res && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	if (!done) {
		open_cursor(c);
		return;
	}
	/* applied before a crash: finish the source batch without the handler */
	PgqevBatch *b = c->batch;
	send_ignored(c, true, "rollback");
	b->tgt_open = false;
	b->finishing = true;
	set_phase(c, PH_FINISH);
	char id[32];
	snprintf(id, sizeof(id), "%" PRId64, b->id);
	const char *p[1] = {id};
	const char *fin = c->cfg.subconsumer ? "select pgq_coop.finish_batch($1)"
					     : "select pgq.finish_batch($1)";
	(void)send_or_fail(c, false, RK_SKIP_FINISH, fin, 1, p, 0);
}

static bool finish_found(PgqevConsumer *c, const PqevReply *r)
{
	const PGresult *res = r->result;
	if (res && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "1") == 0)
		return true;
	char id[32];
	snprintf(id, sizeof(id), "batch %" PRId64, c->batch->id);
	fail(c, PGQEV_ERR_SQL, "finish_batch did not find the batch (re-registered?)", id);
	return false;
}

static void on_done_kind(PgqevConsumer *c, const PgqevReq *x, const PqevReply *r)
{
	switch ((ReqKind)x->kind) {
	case RK_IGNORE:
		return;
	case RK_REGISTER:
		on_register(c, x, r);
		return;
	case RK_CHANNEL:
		on_channel(c, x, r);
		return;
	case RK_NEXT:
		on_next(c, x, r);
		return;
	case RK_EO_CHECK:
		on_eo_check(c, x, r);
		return;
	case RK_CURSOR:
	case RK_FETCH:
		(void)ok_reply(c, x, r, "reading the batch failed");
		return;
	case RK_RETRY:
		(void)ok_reply(c, x, r, "pgq.event_retry failed");
		return;
	case RK_FINISH:
		if (ok_reply(c, x, r, "finish_batch failed"))
			(void)finish_found(c, r);
		return;
	case RK_COMMIT:
		if (ok_reply(c, x, r, "commit of the batch failed"))
			batch_finished(c);
		return;
	case RK_SKIP_FINISH:
		if (ok_reply(c, x, r, "finish_batch failed") && finish_found(c, r))
			batch_finished(c);
		return;
	case RK_TGT_DONE:
		(void)ok_reply(c, x, r, "pgq_ext.set_batch_done failed on the target");
		return;
	case RK_TGT_COMMIT:
		if (ok_reply(c, x, r, "commit on the target failed")) {
			c->batch->tgt_open = false;
			c->ext_key_written = true;
			start_finish(c);
		}
		return;
	case RK_TGT_WRITE:
		(void)ok_reply(c, x, r, "a write on the target failed");
		return;
	}
	fail(c, PGQEV_ERR_SQL, "bad state", "unknown request kind");
}

static void req_done(PqevConn *conn, const PqevReply *reply, void *arg)
{
	PgqevReq x = *(PgqevReq *)arg;
	free(arg);
	PgqevConsumer *c = x.owner;
	if (x.gen != c->gen || c->free_pending)
		return;
	enter(c);
	on_done_kind(c, &x, reply);
	leave(c);
}

static void req_rows(PqevConn *conn, const PGresult *res, void *arg)
{
	PgqevReq *x = arg;
	PgqevConsumer *c = x->owner;
	if (x->gen != c->gen || c->free_pending || !c->batch)
		return;
	enter(c);
	chunk_arrived(c, res);
	leave(c);
}

/* ---- for the split reader (pgqev_split.c) ---- */

void pgqev_consumer_enter(PgqevConsumer *c)
{
	enter(c);
}

void pgqev_consumer_leave(PgqevConsumer *c)
{
	leave(c);
}

bool pgqev_consumer_src_ok(PgqevConsumer *c, const PgqevReq *x, const PqevReply *r,
			   const char *what)
{
	return ok_reply(c, x, r, what);
}

void pgqev_consumer_fail(PgqevConsumer *c, bool conn, const char *what, const char *detail)
{
	c->fail_conn = conn;
	fail(c, conn ? PGQEV_ERR_CONNECTION : PGQEV_ERR_SQL, what, detail);
}

void pgqev_consumer_deliver(PgqevConsumer *c, PgqevBatch *b)
{
	deliver(c, b);
}

void pgqev_consumer_maybe_finish(PgqevConsumer *c, PgqevBatch *b)
{
	maybe_finish(c, b);
}

static void on_part_event(PqevConn *conn, const PqevConnEvent *ev, void *arg)
{
	PgqevConsumer *c = arg;
	if (c->free_pending || c->phase == PH_STOPPED || ev->type == PQEV_EV_CONNECTED)
		return;
	enter(c);
	pgqev_split_conn_failed(c, ev->detail);
	leave(c);
}

PqevConn *pgqev_consumer_part_conn(PgqevConsumer *c)
{
	if (!c->part) {
		PqevConnCallbacks cb = {.on_event = on_part_event, .arg = c};
		char *name = pgqev_sprintf("%s/part", c->label);
		if (name)
			c->part = pgqev_conn_open(c->lim, c->cfg.conninfo, name,
						  "pgqev-consumer-part", c->cfg.connect_timeout,
						  c->cfg.statement_timeout, &cb);
		free(name);
	}
	return c->part;
}

/* ---- connection events ---- */

static void on_src_event(PqevConn *conn, const PqevConnEvent *ev, void *arg)
{
	PgqevConsumer *c = arg;
	if (c->free_pending || c->phase == PH_STOPPED)
		return;
	enter(c);
	switch (ev->type) {
	case PQEV_EV_CONNECTED:
		if (!waiting_conn(c))
			conn_broken(c); /* a reconnect we did not see break */
		if (!waiting_conn(c))
			break; /* stopped meanwhile */
		c->gen++;
		c->next_sent = false;
		go_setup(c);
		break;
	case PQEV_EV_CONNECT_FAILED:
	case PQEV_EV_LOST:
		conn_broken(c);
		if (waiting_conn(c)) {
			set_phase(c, PH_RECONNECT);
			if (c->phase == PH_RECONNECT)
				report(c, PGQEV_ERR_CONNECTION, ev->retry_in, ev->streak, "%s",
				       ev->detail);
		}
		break;
	case PQEV_EV_RECYCLED:
		conn_broken(c);
		break;
	}
	leave(c);
}

static void on_tgt_event(PqevConn *conn, const PqevConnEvent *ev, void *arg)
{
	PgqevConsumer *c = arg;
	if (c->free_pending || c->phase == PH_STOPPED)
		return;
	enter(c);
	if (ev->type == PQEV_EV_CONNECTED) {
		/* the target is back: go on now instead of at the end of a delay */
		if (c->wait_tgt && c->phase == PH_BACKOFF) {
			c->wait_tgt = false;
			arm_timer(c, 0);
		}
		leave(c);
		return;
	}
	if (c->batch && (c->phase == PH_EO_CHECK || c->phase == PH_READ || c->phase == PH_FINISH)) {
		c->fail_conn = true;
		fail(c, PGQEV_ERR_TARGET, "target connection failed", ev->detail);
	} else if (ev->type != PQEV_EV_RECYCLED)
		report(c, PGQEV_ERR_TARGET, ev->retry_in, ev->streak, "target: %s", ev->detail);
	leave(c);
}

static void on_notify(PqevConn *conn, const char *channel, const char *payload, int pid, void *arg)
{
	PgqevConsumer *c = arg;
	if (c->free_pending)
		return;
	enter(c);
	/* the tick channel's payload is the tick id (pgqd-ev's SQL) */
	char *end = NULL;
	long long tick = payload ? strtoll(payload, &end, 10) : 0;
	if (end && end != payload && *end == '\0' && tick > c->notified_tick)
		c->notified_tick = tick;
	if (c->phase == PH_IDLE)
		go_next(c);
	else
		c->wake_pending = true;
	leave(c);
}

/* ---- public API ---- */

/* The first layout of PgqevConsumerConfig: fields added later go after it. */
#define CONFIG_SIZE_1 (offsetof(PgqevConsumerConfig, arg) + sizeof(void *))

static void config_defaults(PgqevConsumerConfig *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->register_on_start = true;
	cfg->fetch_size = 1000;
	cfg->listen = true;
	cfg->retry_delay = 60;
	cfg->fail_delay = USEC_PER_SEC;
	cfg->fail_cap = 60 * USEC_PER_SEC;
	cfg->connect_timeout = 10 * USEC_PER_SEC;
}

void pgqev_config_init_size(PgqevConsumerConfig *cfg, size_t size)
{
	PgqevConsumerConfig d;
	if (!cfg || size < sizeof(d.size))
		return;
	config_defaults(&d);
	pgqev_struct_out(cfg, size, &d, sizeof(d));
}

static bool validate(const PgqevConsumerConfig *cfg, char *eb, size_t es)
{
	if (!cfg->conninfo || !*cfg->conninfo)
		return pgqev_errbuf_set(eb, es, "conninfo: required (a libpq connection string)");
	if (!cfg->queue || !*cfg->queue)
		return pgqev_errbuf_set(eb, es, "queue: required (the queue name)");
	if (!cfg->consumer || !*cfg->consumer)
		return pgqev_errbuf_set(eb, es, "consumer: required (the consumer name)");
	if (cfg->subconsumer && !*cfg->subconsumer)
		return pgqev_errbuf_set(eb, es,
					"subconsumer: empty name (use NULL for a plain consumer)");
	if (cfg->subconsumer && cfg->register_tick > 0)
		return pgqev_errbuf_set(eb, es,
					"register_tick: not available for a coop subconsumer");
	if (!cfg->on_batch)
		return pgqev_errbuf_set(eb, es, "on_batch: required (the batch handler)");
	if (cfg->fetch_size < 1 || cfg->fetch_size > 1000000)
		return pgqev_errbuf_set(eb, es, "fetch_size: %u is out of range 1..1000000",
					cfg->fetch_size);
	if (cfg->min_count < 0)
		return pgqev_errbuf_set(eb, es, "min_count: %d must not be negative",
					cfg->min_count);
	if (cfg->retry_delay < 0)
		return pgqev_errbuf_set(eb, es, "retry_delay: %d must not be negative",
					cfg->retry_delay);
	if (cfg->fail_delay == 0 || cfg->fail_cap < cfg->fail_delay)
		return pgqev_errbuf_set(eb, es,
					"fail_delay/fail_cap: need 0 < fail_delay <= fail_cap");
	if (cfg->fail_policy != PGQEV_FAIL_REDELIVER && cfg->fail_policy != PGQEV_FAIL_RETRY_EVENTS)
		return pgqev_errbuf_set(eb, es, "fail_policy: unknown value %d",
					(int)cfg->fail_policy);
	if (cfg->target_conninfo && !*cfg->target_conninfo)
		return pgqev_errbuf_set(eb, es, "target_conninfo: empty (use NULL for no target)");
	if (!pgqev_check_conninfo(eb, es, "conninfo", cfg->conninfo))
		return false;
	return !cfg->target_conninfo ||
	       pgqev_check_conninfo(eb, es, "target_conninfo", cfg->target_conninfo);
}

static char *make_label(const PgqevConsumerConfig *cfg)
{
	char *what = cfg->subconsumer ? pgqev_sprintf("%s/%s.%s", cfg->queue, cfg->consumer,
						      cfg->subconsumer)
				      : pgqev_sprintf("%s/%s", cfg->queue, cfg->consumer);
	char *l = what ? pgqev_default_label(cfg->label, cfg->conninfo, what) : NULL;
	free(what);
	return l;
}

/*
 * The pgq_ext subconsumer key: the queue in double quotes (inner quotes
 * doubled), then ".subconsumer" for a coop member. Always quoted, so it is
 * never empty (python3-pgq's key) and the queue part ends unambiguously.
 */
static char *make_ext_key(const PgqevConsumerConfig *cfg)
{
	size_t qlen = strlen(cfg->queue), slen = cfg->subconsumer ? strlen(cfg->subconsumer) : 0;
	char *k = malloc(2 * qlen + slen + 4);
	if (!k)
		return NULL;
	char *o = k;
	*o++ = '"';
	for (const char *p = cfg->queue; *p; p++) {
		if (*p == '"')
			*o++ = '"';
		*o++ = *p;
	}
	*o++ = '"';
	if (cfg->subconsumer) {
		*o++ = '.';
		memcpy(o, cfg->subconsumer, slen);
		o += slen;
	}
	*o = '\0';
	return k;
}

static PqevConn *new_conn(PgqevConsumer *c, const char *conninfo, const char *name, bool target)
{
	PqevConnCallbacks cb = {
		.on_event = target ? on_tgt_event : on_src_event,
		.on_notify = target ? NULL : on_notify,
		.arg = c,
	};
	return pgqev_conn_open(c->lim, conninfo, name, "pgqev-consumer", c->cfg.connect_timeout,
			       c->cfg.statement_timeout, &cb);
}

PgqevConsumer *pgqev_consumer_new(struct event_base *base, const PgqevConsumerConfig *cfg,
				  char *errbuf, size_t errsize)
{
	PgqevConsumerConfig in;
	config_defaults(&in);
	if (!pgqev_config_in(base, &in, sizeof(in), cfg, CONFIG_SIZE_1, "pgqev_config_init", errbuf,
			     errsize))
		return NULL;
	cfg = &in;
	if (!validate(cfg, errbuf, errsize))
		return NULL;
	PgqevConsumer *c = calloc(1, sizeof(*c));
	if (!c) {
		pgqev_errbuf_set(errbuf, errsize, "out of memory");
		return NULL;
	}
	bool oom = false;
	c->base = base;
	c->cfg = *cfg;
	c->cfg.conninfo = c->s_conninfo = pgqev_strdup_opt(cfg->conninfo, &oom);
	c->cfg.queue = c->s_queue = pgqev_strdup_opt(cfg->queue, &oom);
	c->cfg.consumer = c->s_consumer = pgqev_strdup_opt(cfg->consumer, &oom);
	c->cfg.subconsumer = c->s_sub = pgqev_strdup_opt(cfg->subconsumer, &oom);
	c->cfg.target_conninfo = c->s_target = pgqev_strdup_opt(cfg->target_conninfo, &oom);
	c->cfg.label = NULL;
	c->ext_old_key = pgqev_strdup_opt(cfg->subconsumer ? cfg->subconsumer : "", &oom);
	c->ext_key = make_ext_key(cfg);
	if (!c->ext_key)
		oom = true;
	c->label = make_label(cfg);
	if (!c->label)
		oom = true;
	if (!oom) {
		c->lim = pgqev_limiter_core(cfg->limiter);
		if (!c->lim) {
			c->lim = pqev_connlimit_new(base, 0);
			c->own_lim = true;
		}
		c->timer = evtimer_new(base, timer_cb, c);
	}
	if (!oom && c->lim && c->timer) {
		c->src = new_conn(c, c->cfg.conninfo, c->label, false);
		if (c->src && c->cfg.target_conninfo) {
			char *tname = pgqev_sprintf("%s/target", c->label);
			if (tname)
				c->tgt = new_conn(c, c->cfg.target_conninfo, tname, true);
			free(tname);
		}
	}
	if (oom || !c->lim || !c->timer || !c->src || (c->cfg.target_conninfo && !c->tgt)) {
		pgqev_errbuf_set(errbuf, errsize, "out of memory");
		destroy(c);
		return NULL;
	}
	pqev_backoff_init(&c->fail_bo, c->cfg.fail_delay, c->cfg.fail_cap, 0);
	c->poll_interval = c->cfg.poll_interval ? c->cfg.poll_interval
						: (c->cfg.listen ? 30 : 1) * USEC_PER_SEC;
	return c;
}

int pgqev_consumer_start(PgqevConsumer *c)
{
	if (c->started || c->free_pending)
		return -EALREADY;
	PqevConn *failed = c->src;
	int rc = pqev_conn_start(c->src);
	if (rc == 0 && c->tgt)
		rc = pqev_conn_start(failed = c->tgt);
	if (rc < 0) {
		report(c, failed == c->tgt ? PGQEV_ERR_TARGET : PGQEV_ERR_CONNECTION, 0, 1,
		       "cannot start%s: %s", failed == c->tgt ? " the target" : "",
		       rc == -ENOMEM ? "out of memory" : pqev_conn_error_detail(failed));
		pqev_conn_close(c->src);
		if (c->tgt)
			pqev_conn_close(c->tgt);
		return rc;
	}
	c->started = true;
	c->stop_requested = false;
	c->registered = false;
	c->setup_done = false;
	enter(c);
	set_phase(c, PH_CONNECT);
	leave(c);
	return 0;
}

void pgqev_consumer_stop(PgqevConsumer *c)
{
	if (!c || c->free_pending || c->phase == PH_STOPPED)
		return;
	enter(c);
	c->stop_requested = true;
	switch (c->phase) {
	case PH_EO_CHECK:
	case PH_READ:
	case PH_FINISH:
		break; /* finish the batch first; go_next stops */
	default:
		do_stop(c);
		break;
	}
	leave(c);
}

static void destroy(PgqevConsumer *c)
{
	c->gen++;
	if (c->batch) {
		c->batch->in_handler = false;
		c->batch->pending = false;
		pgqev_batch_release(c->batch);
		c->batch = NULL;
	}
	while (c->stale) {
		PgqevBatch *b = c->stale;
		c->stale = b->next_stale;
		pgqev_batch_release(b);
	}
	c->free_pending = true;
	pqev_conn_free(c->src);
	pqev_conn_free(c->tgt);
	pqev_conn_free(c->part);
	if (c->timer)
		event_free(c->timer);
	if (c->own_lim)
		pgqev_limiter_release(c->base, c->lim);
	free(c->s_conninfo);
	free(c->s_queue);
	free(c->s_consumer);
	free(c->s_sub);
	free(c->s_target);
	free(c->ext_key);
	free(c->ext_old_key);
	free(c->label);
	free(c->channel);
	free(c);
}

PgqevConsumer *pgqev_consumer_free(PgqevConsumer *c)
{
	if (!c || c->free_pending)
		return NULL;
	if (c->depth > 0) {
		/* inside our own callback: stop now, release at the outermost leave */
		c->gen++;
		if (c->batch) {
			PgqevBatch *b = c->batch;
			c->batch = NULL;
			b->abandoned = true;
			if (!b->in_handler)
				pgqev_batch_release(b);
		}
		evtimer_del(c->timer);
		pqev_conn_close(c->src);
		if (c->tgt)
			pqev_conn_close(c->tgt);
		if (c->part)
			pqev_conn_close(c->part);
		c->free_pending = true;
		set_phase(c, PH_STOPPED); /* no on_state: being freed */
		return NULL;
	}
	destroy(c);
	return NULL;
}

PgqevState pgqev_consumer_state(const PgqevConsumer *c)
{
	return c->state;
}

const char *pgqev_consumer_label(const PgqevConsumer *c)
{
	return c->label;
}

uint64_t pgqev_consumer_batches(const PgqevConsumer *c)
{
	return c->n_batches;
}

uint64_t pgqev_consumer_events(const PgqevConsumer *c)
{
	return c->n_events;
}

void pgqev_consumer_wake(PgqevConsumer *c)
{
	if (!c || c->free_pending)
		return;
	enter(c);
	if (c->phase == PH_IDLE)
		go_next(c);
	else
		c->wake_pending = true;
	leave(c);
}

int pgqev_batch_complete(PgqevBatch *b, PgqevVerdict verdict)
{
	if (!b->pending)
		return -EINVAL;
	PgqevConsumer *c = b->c;
	b->pending = false;
	if (b->abandoned) {
		unlink_stale(c, b);
		pgqev_batch_release(b);
		return -ECONNRESET;
	}
	if (verdict != PGQEV_DONE && verdict != PGQEV_FAIL)
		verdict = PGQEV_FAIL;
	enter(c);
	chunk_done(c, b, verdict);
	leave(c);
	return 0;
}

PgqevTarget *pgqev_batch_target(PgqevBatch *b)
{
	if (b->w)
		return pgqev_target_of(pgqev_cascade_batch_target(b));
	return b->abandoned ? NULL : pgqev_target_of(b->c->tgt);
}

int pgqev_batch_target_exec(PgqevBatch *b, const char *sql, int nparams, const char *const *params)
{
	if (b->w)
		return pgqev_cascade_batch_exec(b, sql, nparams, params);
	PgqevConsumer *c = b->c;
	if (!c->tgt || b->abandoned)
		return -ENOTCONN;
	if (!sql || nparams < 0)
		return -EINVAL;
	return send_on(c, true, RK_TGT_WRITE, sql, nparams, params, 0);
}
