/*
 * libpgqev cascade workers: the worker of one node of a cascaded queue
 * (pgq_node, PgQ 3.5 compatible) on the caller's event_base.
 *
 * A PgqevCascade runs the node's worker (node_info.worker_name) for one
 * cascade (the queue name) in one local database. What it does follows the
 * node's type, read from pgq_node.get_node_info() at every iteration:
 *
 *   root    publishes the global watermark (pgq_node.set_global_watermark)
 *           every wm_period; reads no batches.
 *   branch  reads each batch of its provider (the node named in its
 *           local_state row, reached through node_location), copies the events
 *           into its own queue keeping ev_id, ev_time, type, data and extras,
 *           applies the cascade's own pgq.* events, records the batch's tick with
 *           pgq_node.set_consumer_completed in the same local transaction, then
 *           re-creates the provider's tick (same id and time) with pgq.ticker()
 *           and finishes the batch on the provider.
 *   leaf    hands each batch to on_batch (the local transaction is open; writes
 *           through pgqev_batch_target_exec() commit together with the position)
 *           and records the tick with set_consumer_completed.
 *   merge leaf  a leaf whose node_info.combined_queue names a local queue of
 *           another cascade: under a combined root it also copies the data
 *           events into that queue (new ids, same time and payload) with a
 *           pgq.tick-id event per batch; under a combined branch it waits
 *           behind the position the branch worker replays, applying nothing.
 *
 * Every non-root worker reports its node's local watermark to the provider
 * (set_subscriber_watermark) every wm_period. A crash anywhere is safe: the
 * local position (local_state.last_tick_id) decides whether a batch handed out
 * again is applied or only finished; a branch whose tick is missing after a
 * crash between the commit and the tick creates it then.
 *
 * One worker per node: the worker holds a session advisory lock on the local
 * database (pg_try_advisory_lock(hashtext('pgq_node'), hashtext(queue))); a
 * second worker reports an error and retries with backoff, changing nothing.
 *
 * Threading, ownership and re-entrancy are as for PgqevConsumer (see
 * pgqev_consumer.h). The PgqevBatch handed to on_batch supports the batch and
 * event accessors and pgqev_batch_target()/pgqev_batch_target_exec() (the local
 * node's transaction); pgqev_batch_consumer() returns NULL, pgqev_event_retry()
 * does nothing (a cascade has no retry queue), and PGQEV_PENDING is not
 * supported (it fails the batch).
 */
#ifndef PGQEV_PGQEV_CASCADE_H
#define PGQEV_PGQEV_CASCADE_H

#include <pgqd-ev/pgqev_consumer.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct PgqevCascade PgqevCascade;

typedef PgqevVerdict (*PgqevCascadeBatchFn)(PgqevCascade *w, PgqevBatch *batch, void *arg);
typedef void (*PgqevCascadeErrorFn)(PgqevCascade *w, const PgqevError *err, void *arg);
typedef void (*PgqevCascadeStateFn)(PgqevCascade *w, PgqevState old_state, PgqevState new_state,
				    void *arg);

/*
 * Settings, a value type: fill with pgqev_cascade_config_init() and change what
 * you need. Extensible as PgqevConsumerConfig: `size` is set by the init to the
 * size the program was compiled with; a struct not filled by the init, or one
 * setting fields this library does not know, is refused by pgqev_cascade_new().
 */
typedef struct PgqevCascadeConfig {
	size_t size;          /* set by pgqev_cascade_config_init(); do not change */
	const char *conninfo; /* the local node's database (required) */
	const char *queue;    /* the cascade: its queue name (required) */
	const char *worker;   /* worker name; NULL: node_info.worker_name */
	const char *node;     /* expected node name (an error if the database holds
				 another); NULL: any */
	const char *label;    /* name in messages; NULL: "<db>/<queue>" */

	unsigned fetch_size;            /* events per chunk read from the provider; default 1000 */
	pgqev_usec_t poll_interval;     /* look for a batch at least this often when idle;
					   default 30 s with tick notifications, 1 s without */
	pgqev_usec_t wm_period;         /* watermark publication period; default 300 s (as
					   python-pgq's *_wm_publish_period) */
	pgqev_usec_t fail_delay;        /* first delay after a failure, doubling; default 1 s */
	pgqev_usec_t fail_cap;          /* default 60 s */
	pgqev_usec_t connect_timeout;   /* default 10 s */
	pgqev_usec_t statement_timeout; /* 0: the server's */
	PgqevLimiter *limiter;          /* shared connect limiter; NULL: own one */

	/* Events of every chunk (pgq.* events included, in ev_id order) while the
	   local transaction is open; NULL: none. Branch and leaf. */
	PgqevCascadeBatchFn on_batch;
	PgqevCascadeErrorFn on_error;
	PgqevCascadeStateFn on_state;
	void *arg;
} PgqevCascadeConfig;

/* Fill with defaults; `size` is the caller's sizeof(PgqevCascadeConfig). */
void pgqev_cascade_config_init_size(PgqevCascadeConfig *cfg, size_t size);

static inline void pgqev_cascade_config_init(PgqevCascadeConfig *cfg)
{
	pgqev_cascade_config_init_size(cfg, sizeof(*cfg));
}

/* New worker; NULL and a message in errbuf on a bad config, on a cfg not filled
   by pgqev_cascade_config_init() or one that sets fields this library does not
   know (built against a newer header). No I/O yet. */
PgqevCascade *pgqev_cascade_new(struct event_base *base, const PgqevCascadeConfig *cfg,
				char *errbuf, size_t errsize);
/* Begin connecting. 0, -EINVAL (bad conninfo), -EALREADY. */
PGQEV_MUSTCHECK int pgqev_cascade_start(PgqevCascade *w);
/* Graceful: a batch in progress is finished first, then STOPPED. Idempotent. */
void pgqev_cascade_stop(PgqevCascade *w);
/* Free now (an open batch is rolled back and redone later). NULL-safe; returns NULL. */
PgqevCascade *pgqev_cascade_free(PgqevCascade *w);

PgqevState pgqev_cascade_state(const PgqevCascade *w);
const char *pgqev_cascade_label(const PgqevCascade *w);
/* "root", "branch", "leaf" once known, else NULL. */
const char *pgqev_cascade_node_type(const PgqevCascade *w);
/* The provider's node name once known, else NULL. */
const char *pgqev_cascade_provider(const PgqevCascade *w);

/* Figures since start. Extensible: `size` is set by pgqev_cascade_stats() to
   the size the program was compiled with; the library fills what it knows of
   that size and zeroes fields added by later versions. */
typedef struct PgqevCascadeStats {
	size_t size;                /* set by pgqev_cascade_stats() */
	uint64_t batches;           /* batches committed on the local node */
	uint64_t events;            /* events read from the provider in those batches */
	uint64_t copied;            /* events written into the local queue (branch) */
	uint64_t errors;            /* failures reported through on_error */
	int64_t completed_tick;     /* local position (local_state.last_tick_id), 0: unknown */
	int64_t provider_tick;      /* the provider's latest tick at the last look, 0: unknown */
	double lag_seconds;         /* age of the oldest tick not yet applied, at the last look */
	pgqev_usec_t last_progress; /* CLOCK_MONOTONIC time of the last batch, look-up or
				       publication that succeeded; 0: none yet */
	bool provider_connected;    /* the provider connection is ready */
	unsigned provider_failures; /* current failure streak of the provider connection */
} PgqevCascadeStats;

/* Fill *out; `size` is the caller's sizeof(PgqevCascadeStats). */
void pgqev_cascade_stats_size(const PgqevCascade *w, PgqevCascadeStats *out, size_t size);

static inline void pgqev_cascade_stats(const PgqevCascade *w, PgqevCascadeStats *out)
{
	pgqev_cascade_stats_size(w, out, sizeof(*out));
}

/* Look for a batch now (no-op unless idle). */
void pgqev_cascade_wake(PgqevCascade *w);

#ifdef __cplusplus
}
#endif

#endif
