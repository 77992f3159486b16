/*
 * The cascade worker's state machine (see pgqev_cascade.h): one connection to
 * the local node (dst) and one to its provider (src), both from the core layer.
 *
 *   WAIT_DST -> HELLO (advisory lock: one worker per node)
 *   -> STATE (get_node_info + get_consumer_state on dst)
 *        root: publish the global watermark when due -> IDLE -> STATE
 *        paused: IDLE -> STATE
 *   -> [WAIT_SRC: (re)connect to provider_location, learn the tick channel]
 *   -> STATE (get_node_info + get_consumer_state on dst, one round trip once
 *      the worker's name is known)
 *   -> NEXT (pgq.next_batch_info on src, autocommit)
 *        no batch -> [TICK: branch, the last batch's tick when not known to be
 *        made] -> IDLE (tick notification or poll timer) -> STATE
 *        batch already applied (cur = completed) -> [CHECK: branch, latest local
 *        tick; TICK if it is prev] -> FINISH
 *   -> OPEN (dst BEGIN [+ branch: the previous batch's tick, pgq.ticker(q,
 *      prev, prev_time, seq), first in the transaction so that its snapshot
 *      sees the previous batch's rows and not this one's] [+ replica role +
 *      current_event_table], pipelined; a binary-copying branch and a leaf
 *      open the cursor at the same time)
 *   -> READ (src BEGIN + get_batch_cursor; each chunk: one COPY on dst,
 *      cascade-event handlers, on_batch; the next FETCH is in flight while dst
 *      writes, at most two of each, so memory stays bounded)
 *   -> COMMIT (dst set_consumer_completed + COMMIT)
 *   -> FINISH (src finish_batch + COMMIT; local watermark upward when due),
 *      while the next iteration's STATE read runs (a stop waits for them).
 *   Any failure -> BACKOFF (roll back both sides, record the error on dst with
 *   set_consumer_error) -> STATE. A lost connection -> WAIT_DST / WAIT_SRC.
 *
 * `gen` is bumped whenever in-flight work becomes stale; every request carries
 * the gen it was sent in and its completion is ignored when they differ.
 */
#include <errno.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pgqd-ev/pqev_clock.h>

#include "pgqev_config.h"
#include "pgqev_cascade_int.h"

static void destroy(PgqevCascade *w);
static void on_conn_event(PqevConn *conn, const PqevConnEvent *ev, void *arg);
static void on_notify(PqevConn *conn, const char *channel, const char *payload, int pid, void *arg);

/* The first layout of PgqevCascadeConfig: fields added later go after it. */
#define CASCADE_CONFIG_SIZE_1 (offsetof(PgqevCascadeConfig, arg) + sizeof(void *))

void cas_enter(PgqevCascade *w)
{
	w->depth++;
}

void cas_leave(PgqevCascade *w)
{
	if (--w->depth == 0 && w->free_pending)
		destroy(w);
}

void cas_set_phase(PgqevCascade *w, WPhase ph)
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

void cas_report(PgqevCascade *w, PgqevErrorKind kind, usec_t retry_in, unsigned streak,
		const char *fmt, ...)
{
	w->st.errors++;
	if (!w->cfg.on_error)
		return;
	char detail[PGQEV_MSG_MAX], msg[PGQEV_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	PgqevError err;
	pgqev_error_fill(&err, msg, w->label, kind, w->batch_id, retry_in, streak, detail);
	w->cfg.on_error(w, &err, w->cfg.arg);
}

void cas_progress(PgqevCascade *w)
{
	w->st.last_progress = pqev_clock_monotonic();
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	PgqevCascade *w = arg;
	cas_enter(w);
	if (w->phase == WP_IDLE || w->phase == WP_WAIT_SRC) {
		cas_go_state(w);
	} else if (w->phase == WP_BACKOFF) {
		if (!w->locked)
			cas_go_hello(w);
		else
			cas_go_state(w);
	}
	cas_leave(w);
}

void cas_arm_timer(PgqevCascade *w, usec_t delay)
{
	if (pgqev_timer_arm(w->timer, delay) < 0)
		cas_report(w, PGQEV_ERR_SQL, 0, 1, "cannot arm the timer");
}

void cas_clear_batch(PgqevCascade *w)
{
	if (w->ub) {
		w->ub->abandoned = true;
		if (!w->ub->in_handler)
			pgqev_batch_release(w->ub);
		w->ub = NULL;
	}
	free(w->cur_tick_time);
	w->cur_tick_time = NULL;
	free(w->prev_tick_time);
	w->prev_tick_time = NULL;
	w->dst_open = false;
	free(w->ev_table);
	w->ev_table = NULL;
	w->batch_id = 0;
	w->fetches = w->writes = 0;
	w->eof = false;
	w->in_batch = false;
	w->behind_only = false;
	w->b_events = w->b_copied = 0;
	w->batch_gwm = 0;
	free(w->pend);
	w->pend = NULL;
	w->pend_len = w->pend_cap = 0;
	w->pend_rows = 0;
	w->est_events = 0;
	w->unsorted = w->cursor_wait = false;
	cas_defer_clear(w);
}

/* Roll back whatever is open on the connections that can take it. */
static void abandon(PgqevCascade *w, const char *why)
{
	if (w->dst_in_tx) {
		cas_send_ignored(w, false, "rollback", 0, NULL);
		if (why && w->worker) {
			const char *p[3] = {w->cfg.queue, w->worker, why};
			cas_send_ignored(w, false, "select pgq_node.set_consumer_error($1, $2, $3)",
					 3, p);
		}
	}
	if (w->src_in_tx)
		cas_send_ignored(w, true, "rollback", 0, NULL);
	w->dst_in_tx = w->src_in_tx = false;
	w->finishing = false;
	/* the state read behind a COMMIT: its answers are stale (gen) */
	w->ahead_pending = 0;
	w->ahead_taken = w->ahead_dropped = false;
	/* a failed or lost commit leaves the position to the next state read,
	   and the branch's tick of it unknown: the next batch or idle pass
	   makes it when missing */
	w->tick_done = false;
	cas_clear_batch(w);
	cas_sync_clear(w);
}

void cas_fail(PgqevCascade *w, PgqevErrorKind kind, const char *what, const char *detail)
{
	if (w->phase == WP_STOPPED)
		return;
	char msg[PGQEV_MSG_MAX];
	snprintf(msg, sizeof(msg), "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
	int64_t bid = w->batch_id;
	w->gen++;
	w->node_read_at = 0; /* whatever failed, the next iteration reads the node */
	abandon(w, msg);
	w->fail_streak++;
	usec_t delay = pqev_backoff_next(&w->fail_bo);
	w->st.errors++;
	if (w->cfg.on_error) {
		char full[PGQEV_MSG_MAX];
		PgqevError err;
		pgqev_error_fill(&err, full, w->label, kind, bid, w->stop_requested ? 0 : delay,
				 w->fail_streak, msg);
		uint64_t gen = w->gen;
		w->cfg.on_error(w, &err, w->cfg.arg);
		if (gen != w->gen || w->free_pending)
			return;
	}
	if (w->stop_requested) {
		cas_do_stop(w);
		return;
	}
	cas_arm_timer(w, delay);
	cas_set_phase(w, WP_BACKOFF);
	cas_tick_in_background(w);
}

/* A connection broke or reconnected: in-flight work is gone. */
void cas_conn_lost(PgqevCascade *w, bool src)
{
	if (w->phase == WP_STOPPED)
		return;
	/* each failed reconnect to a dead provider lands here: re-arming the state
	   timer every time would postpone the state read for as long as the
	   provider stays dead, and a pause (failover) would never be acknowledged */
	bool keep_timer = src && w->phase == WP_WAIT_SRC && evtimer_pending(w->timer, NULL);
	w->gen++;
	if (!keep_timer)
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
		cas_do_stop(w);
		return;
	}
	if (!src)
		cas_set_phase(w, WP_WAIT_DST);
	else if (keep_timer)
		return;
	else if (w->phase != WP_WAIT_DST)
		cas_go_wait_src(w);
}

/* Wait for the provider; re-read the node's state every second meanwhile, so
   a pause or a new provider (failover, change_consumer_provider) is followed
   without the provider (the tick notifications' poll interval is for ticks). */
void cas_go_wait_src(PgqevCascade *w)
{
	cas_arm_timer(w, USEC_PER_SEC);
	cas_set_phase(w, WP_WAIT_SRC);
	cas_tick_in_background(w); /* the provider is away: the tick needs only dst */
}

void cas_on_channel(PgqevCascade *w, const PqevReply *r)
{
	if (r->status != PQEV_OK && r->status != PQEV_SQL_ERROR) {
		cas_conn_lost(w, true);
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
			cas_report(
				w, PGQEV_ERR_SQL, 0, 1,
				"no tick notifications from the provider (%s): polling every %" PRIu64
				" ms",
				r->status == PQEV_SQL_ERROR ? r->detail : "cannot LISTEN",
				(uint64_t)(w->poll_interval / USEC_PER_MSEC));
		w->channel_reported = true;
	}
	w->src_setup = true;
	if (w->phase == WP_WAIT_SRC)
		cas_go_state(w);
}

static void on_conn_event(PqevConn *conn, const PqevConnEvent *ev, void *arg)
{
	PgqevCascade *w = arg;
	if (w->free_pending || w->phase == WP_STOPPED)
		return;
	bool src = conn == w->src;
	cas_enter(w);
	switch (ev->type) {
	case PQEV_EV_CONNECTED:
		if (src) {
			if (w->src_in_tx || (w->phase >= WP_NEXT && w->phase <= WP_FINISH))
				cas_conn_lost(w, true);
			w->src_setup = false;
			const char *p[1] = {w->cfg.queue};
			PgqevReq req = {.owner = w, .gen = w->gen, .kind = RK_CHANNEL, .alt = true};
			(void)pgqev_req_send(conn, &req, "select pgq.queue_notify_channel($1)", 1,
					     p, 0, NULL, cas_req_done);
		} else {
			if (w->phase != WP_WAIT_DST)
				cas_conn_lost(w, false);
			if (w->phase == WP_WAIT_DST)
				cas_go_hello(w);
		}
		break;
	case PQEV_EV_CONNECT_FAILED:
	case PQEV_EV_LOST:
		cas_conn_lost(w, src);
		if (w->phase != WP_STOPPED && !w->free_pending)
			cas_report(w, PGQEV_ERR_CONNECTION, ev->retry_in, ev->streak, "%s%s",
				   src ? "provider: " : "", ev->detail);
		break;
	case PQEV_EV_RECYCLED:
		cas_conn_lost(w, src);
		break;
	}
	cas_leave(w);
}

static void on_notify(PqevConn *conn, const char *channel, const char *payload, int pid, void *arg)
{
	PgqevCascade *w = arg;
	if (w->free_pending)
		return;
	cas_enter(w);
	if (w->phase == WP_IDLE)
		cas_go_state(w);
	else
		w->wake_pending = true;
	cas_leave(w);
}

PqevConn *cas_new_conn(PgqevCascade *w, const char *conninfo, bool src)
{
	char *name = pgqev_sprintf("%s%s", w->label, src ? "/provider" : "");
	PqevConnCallbacks cb = {
		.on_event = on_conn_event,
		.on_notify = src ? on_notify : NULL,
		.arg = w,
	};
	PqevConn *c = name ? pgqev_conn_open(w->lim, conninfo, name, "pgqev-cascade",
					     w->cfg.connect_timeout, w->cfg.statement_timeout, &cb)
			   : NULL;
	free(name);
	return c;
}

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
	pgqev_struct_out(cfg, size, &d, sizeof(d));
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

PgqevCascade *pgqev_cascade_new(struct event_base *base, const PgqevCascadeConfig *cfg,
				char *errbuf, size_t errsize)
{
	PgqevCascadeConfig in;
	config_defaults(&in);
	if (!pgqev_config_in(base, &in, sizeof(in), cfg, CASCADE_CONFIG_SIZE_1,
			     "pgqev_cascade_config_init", errbuf, errsize))
		return NULL;
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
	w->label = pgqev_default_label(cfg->label, cfg->conninfo, cfg->queue);
	bool oom = !w->s_conninfo || !w->s_queue || (cfg->worker && !w->s_worker) ||
		   (cfg->node && !w->s_node) || !w->label;
	if (!oom) {
		w->lim = pgqev_limiter_core(cfg->limiter);
		if (!w->lim) {
			w->lim = pqev_connlimit_new(base, 0);
			w->own_lim = true;
		}
		w->timer = evtimer_new(base, timer_cb, w);
		if (w->lim && w->timer)
			w->dst = cas_new_conn(w, w->cfg.conninfo, false);
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
		cas_report(w, PGQEV_ERR_CONNECTION, 0, 1, "cannot start: %s",
			   pqev_conn_error_detail(w->dst));
		pqev_conn_close(w->dst);
		return rc;
	}
	w->started = true;
	w->stop_requested = false;
	w->worker = w->s_worker ? strdup(w->s_worker) : NULL;
	cas_set_phase(w, WP_WAIT_DST);
	return 0;
}

void cas_do_stop(PgqevCascade *w)
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
	cas_set_phase(w, WP_STOPPED);
}

void pgqev_cascade_stop(PgqevCascade *w)
{
	if (!w || !w->started || w->free_pending)
		return;
	cas_enter(w);
	w->stop_requested = true;
	if (!w->in_batch && !w->finishing)
		cas_do_stop(w);
	cas_leave(w);
}

static void destroy(PgqevCascade *w)
{
	if (w->timer)
		event_free(w->timer);
	w->timer = NULL;
	cas_clear_batch(w);
	cas_sync_clear(w);
	w->src = pqev_conn_free(w->src);
	w->dst = pqev_conn_free(w->dst);
	if (w->own_lim)
		pgqev_limiter_release(w->base, w->lim);
	free(w->s_conninfo);
	free(w->s_queue);
	free(w->s_worker);
	free(w->s_node);
	free(w->label);
	free(w->worker);
	free(w->src_conninfo);
	free(w->node_name);
	free(w->provider);
	free(w->combined_queue);
	free(w->sync_nodes);
	free(w->channel);
	free(w->owed_time);
	free(w->committing_time);
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
	return cas_type_name(w->type);
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
	pgqev_struct_out(out, size, &st, sizeof(st));
}

void pgqev_cascade_wake(PgqevCascade *w)
{
	if (!w || w->free_pending)
		return;
	cas_enter(w);
	if (w->phase == WP_IDLE)
		cas_go_state(w);
	cas_leave(w);
}
