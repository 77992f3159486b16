/*
 * The cascade worker's iteration (see pgqev_cascade.c for the state machine):
 * the node's lock and state, the provider's next batch, request completions.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pgqd-ev/pqev_clock.h>

#include "pgqev_config.h"
#include "pgqev_cascade_int.h"

static void go_next(PgqevCascade *w);
static bool send_state(PgqevCascade *w);
static void req_rows(PqevConn *conn, const PGresult *res, void *arg);

int cas_send_on(PgqevCascade *w, bool src, ReqKind kind, const char *sql, int nparams,
		const char *const *params, unsigned flags)
{
	PgqevReq req = {.owner = w, .gen = w->gen, .kind = kind, .alt = src};
	return pgqev_req_send(src ? w->src : w->dst, &req, sql, nparams, params, flags,
			      (kind == RK_CURSOR || kind == RK_FETCH) ? req_rows : NULL,
			      cas_req_done);
}

bool cas_send_or_fail(PgqevCascade *w, bool src, ReqKind kind, const char *sql, int nparams,
		      const char *const *params, unsigned flags)
{
	int rc = cas_send_on(w, src, kind, sql, nparams, params, flags);
	if (rc == 0)
		return true;
	PqevConn *conn = src ? w->src : w->dst;
	cas_fail(w, src ? PGQEV_ERR_SQL : PGQEV_ERR_TARGET, "cannot send a request",
		 rc == -ENOMEM ? "out of memory"
		 : conn        ? pqev_conn_error_detail(conn)
			       : "no connection");
	return false;
}

bool cas_send_copy_or_fail(PgqevCascade *w, const char *sql, char *data, size_t len)
{
	PgqevReq req = {.owner = w, .gen = w->gen, .kind = RK_WRITE, .alt = false};
	int rc = pgqev_req_send_copy(w->dst, &req, sql, data, len, cas_req_done);
	if (rc == 0)
		return true;
	cas_fail(w, PGQEV_ERR_TARGET, "cannot send a request",
		 rc == -ENOMEM ? "out of memory"
		 : w->dst      ? pqev_conn_error_detail(w->dst)
			       : "no connection");
	return false;
}

void cas_send_ignored(PgqevCascade *w, bool src, const char *sql, int nparams,
		      const char *const *params)
{
	PqevConn *conn = src ? w->src : w->dst;
	if (conn && pqev_conn_is_ready(conn))
		(void)cas_send_on(w, src, RK_IGNORE, sql, nparams, params, 0);
}

static void go_idle(PgqevCascade *w, usec_t delay)
{
	if (w->stop_requested) {
		cas_do_stop(w);
		return;
	}
	cas_arm_timer(w, delay);
	cas_set_phase(w, WP_IDLE);
	cas_tick_in_background(w); /* paused: the last batch's tick all the same */
}

static void go_next(PgqevCascade *w)
{
	if (w->stop_requested) {
		/* the last batch's finish is still on its way: stop once it is
		   answered (RK_SRC_COMMIT), not in the middle of it */
		if (w->finishing)
			cas_set_phase(w, WP_FINISH);
		else
			cas_do_stop(w);
		return;
	}
	/* $3: a branch that does not know whether the last batch's tick was made
	   asks for that tick's time on the provider, to make it when no batch
	   follows (cas_idle_tick) */
	char done[32];
	snprintf(done, sizeof(done), "%" PRId64, w->completed);
	const char *p[3] = {w->cfg.queue, w->worker,
			    w->type == NT_BRANCH && !w->tick_done ? done : NULL};
	w->wake_pending = false;
	cas_set_phase(w, WP_NEXT);
	(void)cas_send_or_fail(w, true, RK_NEXT,
			       "select b.batch_id, b.prev_tick_id, b.cur_tick_id, b.cur_tick_time,"
			       " (select max(t.tick_id) from pgq.tick t"
			       " where t.tick_queue = " CAS_QUEUE_ID_SQL "),"
			       " extract(epoch from now() - b.prev_tick_time), b.prev_tick_time,"
			       " (select t.tick_time from pgq.tick t"
			       " where t.tick_queue = " CAS_QUEUE_ID_SQL
			       " and t.tick_id = $3::int8),"
			       " b.cur_tick_event_seq - b.prev_tick_event_seq"
			       " from pgq.next_batch_info($1, $2) b",
			       3, p, PQEV_Q_PREPARE);
}

/* No batch to read: the idle report when due, then wait for a tick. */
void cas_next_none(PgqevCascade *w)
{
	w->st.lag_seconds = 0;
	usec_t delay = w->poll_interval;
	if (cas_idle_report(w, &delay))
		return;
	if (w->wake_pending)
		cas_go_state(w);
	else
		go_idle(w, delay);
}

void cas_go_hello(PgqevCascade *w)
{
	if (!w->dst || !pqev_conn_is_ready(w->dst)) {
		cas_set_phase(w, WP_WAIT_DST);
		return;
	}
	const char *p[1] = {w->cfg.queue};
	cas_set_phase(w, WP_HELLO);
	(void)cas_send_or_fail(w, false, RK_LOCK,
			       "select pg_try_advisory_lock(hashtext('pgq_node'), hashtext($1))", 1,
			       p, 0);
}

/* get_node_info is a PL/pgSQL function of five queries, about a fifth of a
   busy branch's local server time when read for every batch. What it says
   changes through admin calls, which announce themselves by setting the
   worker's uptodate to false (demote_root, promote_branch, pause, provider
   changes: seen in the consumer state, read every time), except node_attrs
   (set_node_attrs), seen within this age. */
#define NODE_INFO_MAX_AGE USEC_PER_SEC

static bool node_info_fresh(const PgqevCascade *w)
{
	usec_t now = pqev_clock_monotonic();
	if (!w->worker || w->type == NT_UNKNOWN || !w->node_read_at ||
	    now - w->node_read_at >= NODE_INFO_MAX_AGE)
		return false;
	/* a sync_watermark branch passes its own global watermark on: read it
	   every time, as before */
	if (w->sync)
		return false;
	/* a merge leaf: the combined node's type changes with the combined
	   cascade's switchover, which announces itself to that cascade's worker,
	   not to this one */
	if (w->combined_queue)
		return false;
	/* the report upward carries node_info's local watermark: as fresh as
	   when it was read at every iteration */
	if (w->type != NT_ROOT && (!w->last_wm || now - w->last_wm >= w->cfg.wm_period))
		return false;
	return true;
}

#define NODE_SQL                                                            \
	"select ret_code, ret_note, node_type, node_name, local_watermark," \
	" worker_name, combined_queue, combined_type, global_watermark,"    \
	" node_attrs from pgq_node.get_node_info($1)"
#define STATE_SQL                                                   \
	"select ret_code, ret_note, completed_tick, provider_node," \
	" provider_location, paused, uptodate"                      \
	" from pgq_node.get_consumer_state($1, $2)"

void cas_go_state(PgqevCascade *w)
{
	if (w->stop_requested) {
		cas_do_stop(w);
		return;
	}
	evtimer_del(w->timer);
	if (!w->dst || !pqev_conn_is_ready(w->dst) || !w->locked) {
		cas_go_hello(w);
		return;
	}
	cas_set_phase(w, WP_STATE);
	if (w->ahead_pending > 0 && !w->ahead_taken && !w->ahead_dropped) {
		/* read behind the last batch's COMMIT: its answers are this
		   iteration's */
		w->ahead_taken = true;
		w->node_cached = w->ahead_node_cached;
		w->state_sent = true;
		return;
	}
	w->node_cached = node_info_fresh(w);
	if (w->node_cached) {
		w->state_sent = true;
		(void)send_state(w);
		return;
	}
	const char *p[1] = {w->cfg.queue};
	if (!cas_send_or_fail(w, false, RK_NODE, NODE_SQL, 1, p, 0))
		return;
	/* once the worker's name is known, its state goes out in the same
	   round trip (a failed node check makes the answer stale: gen) */
	w->state_sent = w->worker != NULL && send_state(w);
}

/* The next iteration's node state, pipelined right behind a batch's COMMIT on
   the local node: it comes back in the COMMIT's round trip, so once the commit
   is answered the provider gets finish_batch, COMMIT and next_batch_info
   together (one round trip per batch less than reading the state after the
   COMMIT's answer). The read sees the node as the commit left it, as a read
   sent after the answer would. cas_go_state takes its answers when the
   iteration follows the batch at once; a stop, a sync round or anything else
   that runs first drops them, and a failed COMMIT (gen) makes them stale. */
void cas_state_ahead(PgqevCascade *w)
{
	if (w->stop_requested || w->ahead_pending > 0 || !w->worker)
		return;
	w->ahead_taken = w->ahead_dropped = false;
	w->ahead_node_cached = node_info_fresh(w);
	if (!w->ahead_node_cached) {
		const char *p[1] = {w->cfg.queue};
		if (cas_send_on(w, false, RK_NODE_AHEAD, NODE_SQL, 1, p, 0) != 0)
			return;
		w->ahead_pending++;
	}
	const char *p[2] = {w->cfg.queue, w->worker};
	if (cas_send_on(w, false, RK_STATE_AHEAD, STATE_SQL, 2, p, 0) != 0) {
		w->ahead_dropped = w->ahead_pending > 0; /* the node's answer alone */
		return;
	}
	w->ahead_pending++;
}

/* An answer of the read ahead arrived: true when this iteration took it. */
static bool ahead_arrived(PgqevCascade *w)
{
	bool taken = w->ahead_taken && !w->ahead_dropped;
	if (w->ahead_pending > 0)
		w->ahead_pending--;
	if (!taken)
		w->ahead_dropped = true;
	if (w->ahead_pending == 0)
		w->ahead_taken = w->ahead_dropped = false;
	return taken;
}

static bool send_state(PgqevCascade *w)
{
	const char *p[2] = {w->cfg.queue, w->worker};
	return cas_send_or_fail(w, false, RK_STATE, STATE_SQL, 2, p, 0);
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
		cas_fail(w, PGQEV_ERR_CONNECTION, "cannot connect to the provider",
			 "out of memory");
		return false;
	}
	w->src = cas_new_conn(w, location, true);
	int rc = w->src ? pqev_conn_start(w->src) : -ENOMEM;
	if (rc < 0) {
		char d[512];
		snprintf(d, sizeof(d), "%s (provider %s)",
			 rc == -ENOMEM ? "out of memory" : pqev_conn_error_detail(w->src),
			 w->provider ? w->provider : "?");
		w->src = pqev_conn_free(w->src);
		free(w->src_conninfo);
		w->src_conninfo = NULL;
		cas_fail(w, PGQEV_ERR_CONNECTION, "bad provider location", d);
		return false;
	}
	return true;
}

/* One row with at least ncols columns: what a handler reads without looking
   further (another pgq_node version, or a function replaced by hand, may
   answer with fewer columns: an error, not a NULL read). */
static bool one_row(const PGresult *res, int ncols)
{
	return res && PQntuples(res) == 1 && PQnfields(res) >= ncols;
}

static void on_state_reply(PgqevCascade *w, const PGresult *res)
{
	/* ret_code, ret_note, completed_tick, provider_node, provider_location,
	   paused, uptodate */
	if (!one_row(res, 7)) {
		cas_fail(w, PGQEV_ERR_SQL,
			 "pgq_node.get_consumer_state returned no row of 7 columns", NULL);
		return;
	}
	int code = atoi(PQgetvalue(res, 0, 0));
	if (code >= 400) {
		cas_fail(w, PGQEV_ERR_SQL, "pgq_node.get_consumer_state", PQgetvalue(res, 0, 1));
		return;
	}
	int64_t completed = PQgetisnull(res, 0, 2) ? 0 : strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	if (completed != w->completed)
		w->tick_done = false; /* known for the position it had */
	w->completed = completed;
	w->st.completed_tick = w->completed;
	free(w->provider);
	w->provider = PQgetisnull(res, 0, 3) ? NULL : strdup(PQgetvalue(res, 0, 3));
	w->paused = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
	if (strcmp(PQgetvalue(res, 0, 6), "t") != 0 && w->node_cached) {
		/* an admin change: the node's own row may have changed too; read it
		   before acting on (and acknowledging) anything */
		w->node_read_at = 0;
		cas_go_state(w);
		return;
	}
	if (strcmp(PQgetvalue(res, 0, 6), "t") != 0) {
		const char *p[2] = {w->cfg.queue, w->worker};
		cas_send_ignored(w, false, "select pgq_node.set_consumer_uptodate($1, $2, true)", 2,
				 p);
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
			(void)cas_send_or_fail(w, false, RK_GWM,
					       "select ret_code, ret_note from"
					       " pgq_node.set_global_watermark($1, NULL)",
					       1, p, 0);
			return;
		}
		cas_progress(w);
		go_idle(w, w->poll_interval);
		return;
	}
	if (w->provider && w->node_name && strcmp(w->provider, w->node_name) == 0) {
		char d[300];
		snprintf(d, sizeof(d), "node %s of cascade %s names itself as its provider",
			 w->node_name, w->cfg.queue);
		cas_fail(w, PGQEV_ERR_SQL, "bad provider", d);
		return;
	}
	if (PQgetisnull(res, 0, 4)) {
		cas_fail(w, PGQEV_ERR_SQL, "no location for the provider node",
			 w->provider ? w->provider : "(none)");
		return;
	}
	if (!need_src(w, PQgetvalue(res, 0, 4)))
		return;
	if (!w->src_setup || !pqev_conn_is_ready(w->src)) {
		cas_go_wait_src(w);
		return;
	}
	go_next(w);
}

static NodeType node_type_of(const char *t)
{
	return strcmp(t, "root") == 0     ? NT_ROOT
	       : strcmp(t, "branch") == 0 ? NT_BRANCH
	       : strcmp(t, "leaf") == 0   ? NT_LEAF
					  : NT_UNKNOWN;
}

/* A merge leaf: combined_queue names a local queue whose node is a root or a
   branch of another cascade (spec 5.2: anything else is an invalid state). */
static bool read_combined(PgqevCascade *w, const PGresult *res)
{
	free(w->combined_queue);
	w->combined_queue = NULL;
	w->combined_type = NT_UNKNOWN;
	if (PQgetisnull(res, 0, 6))
		return true;
	const char *cq = PQgetvalue(res, 0, 6);
	char d[400];
	if (w->type != NT_LEAF) {
		snprintf(d, sizeof(d), "node of cascade %s is a %s with combined queue %s",
			 w->cfg.queue, cas_type_name(w->type), cq);
		cas_fail(w, PGQEV_ERR_SQL, "only a leaf can feed a combined queue", d);
		return false;
	}
	NodeType ct = PQgetisnull(res, 0, 7) ? NT_UNKNOWN : node_type_of(PQgetvalue(res, 0, 7));
	if (ct != NT_ROOT && ct != NT_BRANCH) {
		snprintf(d, sizeof(d), "combined queue %s: its node in this database is %s", cq,
			 PQgetisnull(res, 0, 7) ? "missing" : PQgetvalue(res, 0, 7));
		cas_fail(w, PGQEV_ERR_SQL, "merge leaf needs a combined root or branch", d);
		return false;
	}
	w->combined_queue = strdup(cq);
	w->combined_type = ct;
	if (!w->combined_queue) {
		cas_fail(w, PGQEV_ERR_SQL, "cannot read the node", "out of memory");
		return false;
	}
	return true;
}

static void on_node_reply(PgqevCascade *w, const PGresult *res)
{
	/* ret_code, ret_note, node_type, node_name, local_watermark, worker_name,
	   combined_queue, combined_type, global_watermark, node_attrs: the query's
	   ten columns, all read below */
	if (!one_row(res, 10)) {
		cas_fail(w, PGQEV_ERR_SQL, "pgq_node.get_node_info returned no row of 10 columns",
			 NULL);
		return;
	}
	int code = atoi(PQgetvalue(res, 0, 0));
	if (code >= 400 || PQgetisnull(res, 0, 2)) {
		char d[300];
		snprintf(d, sizeof(d), "no node of cascade %s in this database (%s)", w->cfg.queue,
			 PQgetvalue(res, 0, 1));
		cas_fail(w, PGQEV_ERR_SQL, "pgq_node.get_node_info", d);
		return;
	}
	const char *t = PQgetvalue(res, 0, 2);
	w->type = node_type_of(t);
	if (w->type == NT_UNKNOWN) {
		cas_fail(w, PGQEV_ERR_SQL, "unknown node type", t);
		return;
	}
	if (!read_combined(w, res))
		return;
	if (w->cfg.node && strcmp(w->cfg.node, PQgetvalue(res, 0, 3)) != 0) {
		char d[300];
		snprintf(d, sizeof(d), "expected node %s, the database holds node %s of cascade %s",
			 w->cfg.node, PQgetvalue(res, 0, 3), w->cfg.queue);
		cas_fail(w, PGQEV_ERR_SQL, "wrong node", d);
		return;
	}
	if (!w->node_name || strcmp(w->node_name, PQgetvalue(res, 0, 3)) != 0) {
		free(w->node_name);
		w->node_name = strdup(PQgetvalue(res, 0, 3));
	}
	w->local_wm = PQgetisnull(res, 0, 4) ? 0 : strtoll(PQgetvalue(res, 0, 4), NULL, 10);
	w->global_wm = PQgetisnull(res, 0, 8) ? 0 : strtoll(PQgetvalue(res, 0, 8), NULL, 10);
	if (!cas_read_attrs(w, PQgetisnull(res, 0, 9) ? NULL : PQgetvalue(res, 0, 9))) {
		cas_fail(w, PGQEV_ERR_SQL, "cannot read the node", "out of memory");
		return;
	}
	if (w->type != NT_BRANCH)
		w->sync = false; /* a branch attribute only (spec 5.2) */
	if (!w->worker) {
		if (PQgetisnull(res, 0, 5)) {
			cas_fail(w, PGQEV_ERR_SQL, "node has no worker name", w->cfg.queue);
			return;
		}
		w->worker = strdup(PQgetvalue(res, 0, 5));
	}
	if (!w->node_name || !w->worker) {
		cas_fail(w, PGQEV_ERR_SQL, "cannot read the node", "out of memory");
		return;
	}
	w->node_read_at = pqev_clock_monotonic();
	if (!w->node_read_at)
		w->node_read_at = 1;
	if (!w->state_sent)
		(void)send_state(w);
}

static void on_next_reply(PgqevCascade *w, const PGresult *res)
{
	if (!one_row(res, 9)) {
		cas_fail(w, PGQEV_ERR_SQL, "pgq.next_batch_info returned no row of 9 columns",
			 NULL);
		return;
	}
	cas_progress(w);
	if (!PQgetisnull(res, 0, 4))
		w->st.provider_tick = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
	if (PQgetisnull(res, 0, 0)) {
		/* a branch whose last batch's tick may be missing makes it now */
		if (w->type == NT_BRANCH && !w->tick_done && !PQgetisnull(res, 0, 7) &&
		    cas_idle_tick(w, PQgetvalue(res, 0, 7)))
			return;
		cas_next_none(w);
		return;
	}
	/* the lag is shown in /health and metrics: a text that reads as nan or inf
	   (no server sends one) counts as none rather than spoiling them */
	double lag = PQgetisnull(res, 0, 5) ? 0 : strtod(PQgetvalue(res, 0, 5), NULL);
	w->st.lag_seconds = isfinite(lag) ? lag : 0;
	w->in_batch = true;
	w->batch_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	w->prev_tick = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	w->cur_tick = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	w->cur_tick_time = strdup(PQgetvalue(res, 0, 3));
	w->prev_tick_time = PQgetisnull(res, 0, 6) ? NULL : strdup(PQgetvalue(res, 0, 6));
	/* how many events the batch holds at most: ids the provider's sequence
	   gave out between the two ticks (decides the unsorted read) */
	w->est_events = PQgetisnull(res, 0, 8) ? 0 : strtoll(PQgetvalue(res, 0, 8), NULL, 10);
	if (!w->cur_tick_time || (!w->prev_tick_time && !PQgetisnull(res, 0, 6))) {
		cas_fail(w, PGQEV_ERR_SQL, "cannot start a batch", "out of memory");
		return;
	}
	if (w->combined_queue && w->combined_type == NT_BRANCH) {
		/* wait behind: the combined branch moves our position when it replays
		   this partition's pgq.tick-id events; a batch beyond it stays open */
		if (w->cur_tick > w->completed) {
			cas_clear_batch(w);
			usec_t delay =
				w->poll_interval < USEC_PER_SEC ? w->poll_interval : USEC_PER_SEC;
			if (!cas_idle_report(w, &delay))
				go_idle(w, delay);
			return;
		}
		w->behind_only = true;
		cas_go_open(w);
		return;
	}
	if (w->completed == w->prev_tick) {
		cas_go_open(w);
		return;
	}
	if (w->completed == w->cur_tick) {
		/* applied before a crash: only the tick (branch) and the finish are left */
		if (w->type != NT_BRANCH) {
			cas_go_finish(w);
			return;
		}
		const char *p[1] = {w->cfg.queue};
		cas_set_phase(w, WP_CHECK);
		(void)cas_send_or_fail(w, false, RK_LAST_TICK,
				       "select t.tick_id from pgq.tick t"
				       " where t.tick_queue = " CAS_QUEUE_ID_SQL
				       " order by t.tick_queue desc, t.tick_id desc limit 1",
				       1, p, 0);
		return;
	}
	char d[200];
	snprintf(d, sizeof(d), "batch %" PRId64 "..%" PRId64 ", local node has %" PRId64,
		 w->prev_tick, w->cur_tick, w->completed);
	cas_fail(w, PGQEV_ERR_SQL, "lost position", d);
}

static void on_last_tick(PgqevCascade *w, const PGresult *res)
{
	int64_t last = (res && PQntuples(res) == 1) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
	if (last == w->cur_tick) {
		cas_go_finish(w);
	} else if (last == w->prev_tick) {
		cas_go_tick(w);
	} else {
		char d[200];
		snprintf(d, sizeof(d),
			 "last local tick %" PRId64 ", expected %" PRId64 " or %" PRId64, last,
			 w->prev_tick, w->cur_tick);
		cas_fail(w, PGQEV_ERR_SQL, "branch ticks out of step", d);
	}
}

static int reply_code(const PqevReply *r)
{
	if (!r->result || PQntuples(r->result) < 1 || PQnfields(r->result) < 2)
		return 0;
	return atoi(PQgetvalue(r->result, 0, 0));
}

static bool ok_reply(PgqevCascade *w, const PgqevReq *x, const PqevReply *r, const char *what)
{
	if (r->status == PQEV_OK)
		return true;
	if (r->status == PQEV_SQL_ERROR || r->status == PQEV_TIMEOUT)
		cas_fail(w, x->alt ? PGQEV_ERR_SQL : PGQEV_ERR_TARGET, what, r->detail);
	else
		cas_conn_lost(w, x->alt);
	return false;
}

static void on_done_kind(PgqevCascade *w, const PgqevReq *x, const PqevReply *r)
{
	switch ((ReqKind)x->kind) {
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
			cas_fail(w, PGQEV_ERR_SQL, "not starting", d);
			return;
		}
		w->locked = true;
		cas_go_state(w);
		return;
	case RK_NODE:
		if (r->status == PQEV_SQL_ERROR) {
			char d[600];
			snprintf(d, sizeof(d), "is pgq_node installed in this database? %s",
				 r->detail);
			cas_fail(w, PGQEV_ERR_SQL, "pgq_node.get_node_info failed", d);
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
			cas_report(w, PGQEV_ERR_SQL, 0, 1, "pgq_node.set_global_watermark: %s",
				   PQgetvalue(r->result, 0, 1));
		cas_progress(w);
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
	case RK_OPEN_STEP:
		(void)ok_reply(w, x, r,
			       x->alt ? "cannot begin the transaction on the provider"
				      : "cannot begin the local transaction");
		return;
	case RK_OWED_TICK:
		if (!ok_reply(w, x, r, "pgq.ticker failed on the local node") ||
		    !cas_owed_tick_reply(w, r->result, w->completed))
			return;
		if (!w->in_batch) {
			/* made on its own (autocommit): nothing followed the batch.
			   Once more round: the local watermark reported upward (the
			   last tick, on a branch without consumers) is read again */
			w->tick_done = true;
			w->node_read_at = 0;
			cas_go_state(w);
		}
		return;
	case RK_OWED_TICK_BG:
		if (r->status == PQEV_OK && r->result && PQntuples(r->result) == 1 &&
		    (PQgetisnull(r->result, 0, 0) ||
		     strtoll(PQgetvalue(r->result, 0, 0), NULL, 10) <= w->owed_tick))
			w->tick_done = w->owed_tick == w->completed;
		else if (r->status == PQEV_SQL_ERROR)
			cas_report(w, PGQEV_ERR_TARGET, 0, 1, "pgq.ticker on the local node: %s",
				   r->detail);
		return;
	case RK_OPEN:
		if (!ok_reply(w, x, r, "cannot begin the local transaction"))
			return;
		if (cas_copies(w)) {
			if (!r->result || PQntuples(r->result) != 1 || PQnfields(r->result) != 2) {
				cas_fail(w, PGQEV_ERR_TARGET,
					 "pgq.current_event_table returned nothing", NULL);
				return;
			}
			w->ev_table = strdup(PQgetvalue(r->result, 0, 1));
			if (!w->ev_table) {
				cas_fail(w, PGQEV_ERR_TARGET, "cannot start a batch",
					 "out of memory");
				return;
			}
		}
		w->dst_open = true;
		if (w->phase == WP_OPEN) {
			cas_open_cursor(w);
		} else if (w->phase == WP_READ) {
			cas_open_done(w);
		}
		return;
	case RK_BATCH_SQL:
		if (ok_reply(w, x, r, "pgq.batch_event_sql failed on the provider"))
			cas_declare_unsorted(w, r->result);
		return;
	case RK_CURSOR:
	case RK_FETCH:
		if (!ok_reply(w, x, r, "reading the batch from the provider failed"))
			return;
		if (r->nresults == 0)
			cas_fail(w, PGQEV_ERR_SQL, "reading the batch", "no rows result");
		return;
	case RK_WRITE:
		if (!ok_reply(w, x, r, "writing the batch on the local node failed"))
			return;
		w->writes--;
		cas_maybe_fetch(w);
		cas_maybe_commit(w);
		return;
	case RK_TICK_ID:
		(void)ok_reply(w, x, r, "inserting pgq.tick-id into the combined queue failed");
		return;
	case RK_COMPLETED:
		if (!ok_reply(w, x, r, "pgq_node.set_consumer_completed failed"))
			return;
		if (reply_code(r) >= 300)
			cas_fail(w, PGQEV_ERR_TARGET, "pgq_node.set_consumer_completed",
				 PQgetvalue(r->result, 0, 1));
		return;
	case RK_COMMIT:
		if (!ok_reply(w, x, r, "commit on the local node failed"))
			return;
		w->dst_in_tx = false;
		w->completed = w->cur_tick;
		if (w->batch_gwm)
			w->real_gwm = w->batch_gwm;
		/* a branch's tick of this batch is made at the start of the next
		   batch's transaction, or on its own when none follows: cas_go_open */
		w->tick_done = false;
		if (w->type == NT_BRANCH) {
			free(w->owed_time);
			w->owed_tick = w->committing_tick;
			w->owed_time = w->committing_time;
			w->committing_time = NULL;
		}
		cas_go_finish(w);
		return;
	case RK_TICK:
		if (ok_reply(w, x, r, "pgq.ticker failed on the local node"))
			cas_go_finish(w);
		return;
	case RK_FINISH:
	case RK_FINISH_ONLY:
		if (!ok_reply(w, x, r, "pgq.finish_batch failed on the provider"))
			return;
		if (!r->result || PQntuples(r->result) != 1 ||
		    strcmp(PQgetvalue(r->result, 0, 0), "1") != 0) {
			cas_fail(w, PGQEV_ERR_SQL, "finish_batch did not find the batch", NULL);
			return;
		}
		if (x->kind == RK_FINISH_ONLY)
			cas_batch_done(w);
		return;
	case RK_SRC_COMMIT:
		if (!ok_reply(w, x, r, "commit on the provider failed"))
			return;
		w->src_in_tx = false;
		w->finishing = false;
		if (w->in_batch)
			cas_batch_done(w); /* a stop waited for it */
		else if (w->stop_requested && w->phase == WP_FINISH)
			cas_do_stop(w);
		return;
	case RK_WM:
		if (r->status != PQEV_OK)
			cas_report(w, PGQEV_ERR_SQL, 0, 1, "pgq_node.set_subscriber_watermark: %s",
				   r->detail);
		else if (reply_code(r) >= 300)
			cas_report(w, PGQEV_ERR_SQL, 0, 1, "pgq_node.set_subscriber_watermark: %s",
				   PQgetvalue(r->result, 0, 1));
		return;
	case RK_SYNC_LOC:
	case RK_SYNC_NODE:
	case RK_SYNC_SET:
		cas_sync_reply(w, x->kind, r);
		return;
	case RK_CHANNEL:
	case RK_NODE_AHEAD:
	case RK_STATE_AHEAD:
		return; /* handled in cas_req_done */
	}
}

void cas_req_done(PqevConn *conn, const PqevReply *reply, void *arg)
{
	PgqevReq x = *(PgqevReq *)arg;
	free(arg);
	PgqevCascade *w = x.owner;
	if (w->free_pending)
		return;
	if (x.kind == RK_CHANNEL) {
		if (conn != w->src)
			return;
		cas_enter(w);
		cas_on_channel(w, reply);
		cas_leave(w);
		return;
	}
	if (x.gen != w->gen)
		return;
	if (x.kind == RK_NODE_AHEAD || x.kind == RK_STATE_AHEAD) {
		if (!ahead_arrived(w))
			return;
		x.kind = x.kind == RK_NODE_AHEAD ? RK_NODE : RK_STATE;
	}
	cas_enter(w);
	on_done_kind(w, &x, reply);
	cas_leave(w);
}

static void req_rows(PqevConn *conn, const PGresult *res, void *arg)
{
	PgqevReq *x = arg;
	PgqevCascade *w = x->owner;
	if (x->gen != w->gen || w->free_pending || !w->in_batch || w->phase != WP_READ)
		return;
	cas_enter(w);
	cas_chunk_arrived(w, res);
	cas_leave(w);
}
