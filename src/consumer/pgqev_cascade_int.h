/*
 * Internal structures of the cascade worker (pgqev_cascade*.c). Not installed.
 *
 *   pgqev_cascade.c        lifecycle, public API, failures, connection events
 *   pgqev_cascade_node.c   the iteration: lock, node state, next batch, replies
 *   pgqev_cascade_copy.c   one batch: read the provider, write the local node,
 *                          cascade events, commit, tick, finish, watermark
 *   pgqev_cascade_sync.c   sync_watermark: the branch's global watermark from
 *                          the nodes named in its node_attrs
 */
#ifndef PGQEV_PGQEV_CASCADE_INT_H
#define PGQEV_PGQEV_CASCADE_INT_H

#include <pgqd-ev/pgqev_cascade.h>

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
	WP_SYNC, /* sync_watermark round after a batch: locations, nodes, set */
	WP_BACKOFF,
} WPhase;

typedef enum ReqKind {
	RK_IGNORE,
	RK_LOCK,
	RK_NODE,
	RK_STATE,
	RK_NODE_AHEAD,  /* RK_NODE and RK_STATE of the next iteration, sent */
	RK_STATE_AHEAD, /* behind a batch's COMMIT (cas_state_ahead) */
	RK_GWM,
	RK_CHANNEL,
	RK_NEXT,
	RK_LAST_TICK,
	RK_OPEN_STEP, /* dst: begin / set local inside the open; checked only */
	RK_OPEN,
	RK_OWED_TICK,    /* dst: the previous batch's tick, made when not made yet */
	RK_OWED_TICK_BG, /* the same while the worker waits (provider away, paused) */
	RK_CURSOR,
	RK_BATCH_SQL, /* src: pgq.batch_event_sql, for an unsorted cursor */
	RK_FETCH,
	RK_WRITE,
	RK_TICK_ID, /* merge leaf: pgq.tick-id into the combined queue */
	RK_COMPLETED,
	RK_COMMIT,
	RK_TICK,
	RK_FINISH,      /* inside the src transaction; COMMIT follows */
	RK_FINISH_ONLY, /* autocommit: the batch was applied before */
	RK_SRC_COMMIT,
	RK_WM,
	RK_SYNC_LOC,  /* dst: the member map */
	RK_SYNC_NODE, /* a named node: its local watermark */
	RK_SYNC_SET,  /* dst: set_global_watermark */
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
	/* merge leaf: the local queue of the combined cascade and its node's type
	   (root: copy data events and pgq.tick-id into it; branch: wait behind) */
	char *combined_queue;
	NodeType combined_type;
	int64_t completed, local_wm;
	int64_t global_wm; /* node_info's global watermark at this iteration */
	bool paused;

	/* sync_watermark (branch attribute, spec 5.6): the global watermark comes
	   from the upstream one and the named nodes' local watermarks */
	bool sync;
	char *sync_nodes;  /* the decoded comma list; NULL: none */
	int64_t real_gwm;  /* the last upstream pgq.global-watermark applied; 0: none */
	int64_t batch_gwm; /* the open batch's pgq.global-watermark; 0: none */
	PqevConn *wm_conn; /* a named node, during a sync round */
	char **wm_locs, **wm_names;
	int wm_n, wm_i;
	int64_t wm_value;

	/* provider connection */
	bool src_setup, channel_reported, wake_pending;
	char *channel;
	usec_t poll_interval;

	/* the consumer state request went out with get_node_info (pipelined) */
	bool state_sent;
	/* get_node_info is not read at every iteration: its answer is kept for
	   up to NODE_INFO_MAX_AGE, and read again at once when an admin change is
	   announced (uptodate false), after a failure, when a watermark report is
	   due, and on every iteration of a sync_watermark branch (cas_go_state) */
	usec_t node_read_at; /* 0: not read, or to be read again */
	bool node_cached;    /* this iteration reads only the consumer state */
	/* branch: the local tick of `completed` is known to exist. A batch's tick
	   is not made after its commit but at the start of the next batch's
	   transaction (or in one of its own when no batch follows): see
	   cas_go_open and cas_idle_tick. */
	bool tick_done;
	int64_t owed_tick; /* the last batch committed here, its tick time: */
	char *owed_time;   /* what that tick needs without the provider */
	/* the batch whose COMMIT is in flight, and its tick time: when a broken
	   connection loses the answer, the next state read tells whether it
	   committed, and if it did, this is the tick owed */
	int64_t committing_tick;
	char *committing_time;
	/* the next iteration's state read, pipelined behind the batch's COMMIT:
	   answers still to come; taken by cas_go_state, or dropped when anything
	   else ran first (a failure resets them with gen) */
	unsigned ahead_pending;
	bool ahead_taken, ahead_dropped, ahead_node_cached;
	/* provider: finish_batch + COMMIT of the last batch still in flight while
	   the next iteration reads the node's state */
	bool finishing;

	/* the open batch */
	int64_t batch_id, prev_tick, cur_tick;
	char *cur_tick_time, *prev_tick_time;
	bool dst_open; /* the local transaction's opening statements answered */
	char *ev_table;
	unsigned fetches, writes;
	bool eof, src_in_tx, dst_in_tx, in_batch;
	bool behind_only; /* merge leaf under a combined branch: finish, apply nothing */
	PgqevBatch *ub;
	/* a large batch on a binary branch is read without the provider's sort
	   (its cascade events are then gathered and applied in ev_id order before
	   the commit); est_events: the provider's event sequence over the batch */
	int64_t est_events;
	bool unsorted, cursor_wait;
	struct CasDeferred *defer;
	size_t n_defer, cap_defer;
	uint64_t b_events, b_copied;
	int64_t max_ev_id; /* highest ev_id copied since start */
	/* branch: binary COPY rows not yet sent, gathered from the FETCHes that
	   arrive while the previous COPY runs (bounded: see cas_maybe_fetch) */
	char *pend;
	size_t pend_len, pend_cap;
	unsigned pend_rows;

	usec_t last_wm, last_gwm;
	int64_t wm_sent; /* the last local watermark reported upward */
	struct event *timer;
	PqevBackoff fail_bo;
	unsigned fail_streak;
	PgqevCascadeStats st;
};

static inline const char *cas_type_name(NodeType t)
{
	return t == NT_ROOT ? "root" : t == NT_BRANCH ? "branch" : t == NT_LEAF ? "leaf" : NULL;
}

/* The worker writes the batch's events into a local queue: its own (branch,
   same ids) or the combined queue (merge leaf under a combined root, new ids). */
static inline bool cas_copies(const PgqevCascade *w)
{
	return w->type == NT_BRANCH || (w->combined_queue && w->combined_type == NT_ROOT);
}

/* ---- pgqev_cascade.c ---- */
void cas_enter(PgqevCascade *w);
void cas_leave(PgqevCascade *w);
void cas_set_phase(PgqevCascade *w, WPhase ph);
void cas_report(PgqevCascade *w, PgqevErrorKind kind, usec_t retry_in, unsigned streak,
		const char *fmt, ...) PQEV_PRINTF(5, 6);
/* the worker made progress: a batch, a look-up or a publication succeeded */
void cas_progress(PgqevCascade *w);
void cas_arm_timer(PgqevCascade *w, usec_t delay);
void cas_clear_batch(PgqevCascade *w);
/* fail the iteration: roll back, report, back off */
void cas_fail(PgqevCascade *w, PgqevErrorKind kind, const char *what, const char *detail);
void cas_conn_lost(PgqevCascade *w, bool src);
void cas_go_wait_src(PgqevCascade *w);
void cas_on_channel(PgqevCascade *w, const PqevReply *r);
PqevConn *cas_new_conn(PgqevCascade *w, const char *conninfo, bool src);
void cas_do_stop(PgqevCascade *w);

/* ---- pgqev_cascade_node.c ---- */
int cas_send_on(PgqevCascade *w, bool src, ReqKind kind, const char *sql, int nparams,
		const char *const *params, unsigned flags);
bool cas_send_or_fail(PgqevCascade *w, bool src, ReqKind kind, const char *sql, int nparams,
		      const char *const *params, unsigned flags);
/* COPY ... FROM STDIN on the local node with data (owned from here) as RK_WRITE */
bool cas_send_copy_or_fail(PgqevCascade *w, const char *sql, char *data, size_t len);
void cas_send_ignored(PgqevCascade *w, bool src, const char *sql, int nparams,
		      const char *const *params);
void cas_go_hello(PgqevCascade *w);
void cas_go_state(PgqevCascade *w);
/* the next iteration's state read, sent behind the batch's COMMIT */
void cas_state_ahead(PgqevCascade *w);
void cas_req_done(PqevConn *conn, const PqevReply *reply, void *arg);
/* the provider has no batch: the idle report when due, then wait */
void cas_next_none(PgqevCascade *w);

/* ---- pgqev_cascade_copy.c ---- */
void cas_maybe_fetch(PgqevCascade *w);
void cas_maybe_commit(PgqevCascade *w);
/* the local transaction's opening answered while the batch is being read */
void cas_open_done(PgqevCascade *w);
void cas_chunk_arrived(PgqevCascade *w, const PGresult *res);
/* The COPY text (ev_id when !merge, ev_time, ev_type, ev_data, ev_extra1..4) of
   the cursor rows in res; a merge leaves out pgq.* events. malloc'd (NULL: out
   of memory); *len bytes, *copied rows. */
/* the local watermark to report upward after batch prev..cur (spec 5.6) */
int64_t cas_wm_to_report(const PgqevCascade *w, int64_t prev_tick, int64_t cur_tick);
/* send it to the provider when wm_period has passed since the last report */
bool cas_maybe_publish_wm(PgqevCascade *w, int64_t prev_tick, int64_t cur_tick);
char *cas_copy_text(const PGresult *res, bool merge, const char *own_gwm, size_t *len, int *copied);
void cas_open_cursor(PgqevCascade *w);
/* the batch's SQL came back: declare the unsorted cursor over it */
void cas_declare_unsorted(PgqevCascade *w, const PGresult *res);
void cas_defer_clear(PgqevCascade *w);
void cas_go_open(PgqevCascade *w);
void cas_go_tick(PgqevCascade *w);
/* branch, no batch to read: make the tick of the last batch when not known to
   be made (time: the provider's tick); true when it was sent (the reply goes
   on to the idle handling). */
bool cas_idle_tick(PgqevCascade *w, const char *tick_time);
/* The worker waits (provider unreachable, a failure's backoff, paused): make
   the last batch's tick now if it is owed, so the branch's consumers (and a
   failover that promotes this branch) see the batch; the reply only notes it. */
void cas_tick_in_background(PgqevCascade *w);
/* The queue's id for a condition on pgq.tick's key, queue named by $1. A join
   with pgq.queue instead leaves the planner to estimate the queue's share of
   pgq.tick; with stale statistics it reads all of the queue's ticks (a busy
   low-latency queue has thousands) to find the newest, on every batch. */
#define CAS_QUEUE_ID_SQL "(select queue_id from pgq.queue where queue_name = $1)"

/* the owed-tick reply: last local tick before, and whether the tick was made */
bool cas_owed_tick_reply(PgqevCascade *w, const PGresult *res, int64_t tick);
void cas_go_finish(PgqevCascade *w);
void cas_batch_done(PgqevCascade *w);

/* ---- pgqev_cascade_sync.c ---- */
/* node_attrs (urlencoded k=v&...): sets w->sync and w->sync_nodes; false on
   out of memory */
bool cas_read_attrs(PgqevCascade *w, const char *attrs);
void cas_sync_start(PgqevCascade *w);
void cas_sync_reply(PgqevCascade *w, int kind, const PqevReply *r);
void cas_sync_clear(PgqevCascade *w);
/* No batch to read: the watermark report (and a sync round) when due, so the
   position of the last batch reaches the provider while nothing comes; true
   when a sync round was started (it goes on to STATE by itself). *delay is
   shortened to when a pending report falls due. */
bool cas_idle_report(PgqevCascade *w, usec_t *delay);

#endif
