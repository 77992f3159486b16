/*
 * libpgqev: an embeddable PgQ consumer on the caller's libevent loop.
 *
 * A PgqevConsumer follows one (queue, consumer[, subconsumer]) subscription in one
 * database and hands every batch to the application's on_batch callback, in
 * chunks of at most fetch_size events read through a cursor, so memory stays
 * bounded whatever the batch size. It wakes on the queue's tick notification
 * (LISTEN, see sql-api.md in share/doc/pgqd-ev) and asks for the next batch right after each
 * finished one; when there is nothing to do it waits for a notification or the
 * poll interval. Any number of consumers, on any number of databases, can share
 * one event_base.
 *
 * Delivery is at least once: a batch is finished (pgq.finish_batch) in the same
 * transaction that read it, only after every chunk was handled. A connection lost
 * mid-batch, a crashed process or a failing handler leaves the batch open and it
 * is delivered again. With a target database (exactly-once mode) the library
 * keeps one transaction open on the target for the whole batch, lets the handler
 * write and read in it (PgqevTarget), and records the batch with pgq_ext in the
 * same transaction, so a redelivered batch that was already applied is skipped.
 *
 * THREADING: none inside. Every function of a consumer, and of the batches and
 * events it hands out, must be called on the thread that runs its event_base,
 * and every callback runs on that thread from inside event_base_loop(). Different
 * consumers on different loops in different threads are independent. The
 * producer helpers use only the PGconn they are given (libpq's rules apply).
 *
 * OWNERSHIP: strings in a PgqevConsumerConfig are copied by pgqev_consumer_new().
 * A PgqevBatch and its PgqevEvent handles and strings are borrowed: valid until
 * the chunk is completed, that is until on_batch returns, or, if on_batch
 * returned PGQEV_PENDING (async mode only), until pgqev_batch_complete() is
 * called. Nothing handed
 * to a callback is ever freed by the application.
 *
 * RE-ENTRANCY: from inside any callback it is legal to call any function of this
 * API, including pgqev_consumer_stop() and pgqev_consumer_free() of the consumer
 * running the callback (the memory is released after the callback returns).
 *
 * Errors: functions that can fail return 0 or a negative errno and are marked
 * PGQEV_MUSTCHECK; constructors return NULL (with a reason where one is asked
 * for). Runtime failures (connection, SQL, handler) never stop a consumer: they
 * are reported through on_error and retried with backoff.
 */
#ifndef PGQEV_PGQEV_CONSUMER_H
#define PGQEV_PGQEV_CONSUMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include <pgqd-ev/pgqev_version.h>

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;

typedef struct PgqevConsumer PgqevConsumer;
typedef struct PgqevBatch PgqevBatch;
typedef struct PgqevEvent PgqevEvent;
typedef struct PgqevTarget PgqevTarget;
typedef struct PgqevLimiter PgqevLimiter;

/* Microseconds: durations, and CLOCK_MONOTONIC times where a field says so. */
typedef uint64_t pgqev_usec_t;

#define PGQEV_USEC_PER_MSEC ((pgqev_usec_t)1000)
#define PGQEV_USEC_PER_SEC  ((pgqev_usec_t)1000000)

/* The result of a function so marked must be checked. */
#define PGQEV_MUSTCHECK __attribute__((warn_unused_result))

/* The library's version string at run time, e.g. "0.1.0"; PGQEV_VERSION_STRING
   (pgqev_version.h) is the one the program was compiled against. */
const char *pgqev_version(void);

/* ------------------------------------------------------------------------ */
/* States, verdicts, errors                                                 */

typedef enum PgqevState {
	PGQEV_STATE_STOPPED = 0, /* not started, or stopped */
	PGQEV_STATE_CONNECTING,  /* connecting, registering, subscribing to ticks */
	PGQEV_STATE_LISTENING,   /* connected and subscribed; asking for a batch */
	PGQEV_STATE_IDLE,        /* no batch ready: waiting for a tick or the poll timer */
	PGQEV_STATE_PROCESSING,  /* a batch is open (reading, handling, finishing) */
	PGQEV_STATE_BACKOFF,     /* waiting after a failure before trying again */
} PgqevState;

/* Stable lower-case name ("idle", ...). */
const char *pgqev_state_name(PgqevState st);

/* What on_batch returns for its chunk. */
typedef enum PgqevVerdict {
	PGQEV_DONE = 0, /* chunk handled; events not marked for retry are done */
	PGQEV_FAIL,     /* chunk failed: handled per the consumer's failure policy */
	PGQEV_PENDING,  /* keep the chunk (and batch) open; complete it later with
			   pgqev_batch_complete() from any callback on the loop */
} PgqevVerdict;

/* What a failing handler causes. */
typedef enum PgqevFailPolicy {
	/* Roll the batch back (including per-event retries and, in exactly-once
	   mode, the target transaction), wait with backoff starting at fail_delay,
	   then deliver the whole batch again. The default. */
	PGQEV_FAIL_REDELIVER = 0,
	/* Put every event of the failed chunk into the retry queue
	   (pgq.event_retry, retry_delay seconds) and go on with the batch. */
	PGQEV_FAIL_RETRY_EVENTS,
} PgqevFailPolicy;

typedef enum PgqevErrorKind {
	PGQEV_ERR_CONNECTION, /* source connection failed or broke */
	PGQEV_ERR_SQL,        /* a statement of the library failed on the source */
	PGQEV_ERR_HANDLER,    /* on_batch returned PGQEV_FAIL */
	PGQEV_ERR_TARGET,     /* exactly-once: the target connection or a write failed */
} PgqevErrorKind;

/* Handed to on_error; borrowed for the call (the library may add fields at the end). */
typedef struct PgqevError {
	PgqevErrorKind kind;
	int64_t batch_id;      /* the open batch, 0 if none */
	unsigned streak;       /* failures in a row, this one included */
	pgqev_usec_t retry_in; /* delay before the next attempt (0: immediately) */
	const char *message;   /* "<label>: <detail>", one line, never NULL, never a password */
	const char *label;     /* the consumer's label (pgqev_consumer_label), never NULL */
	const char *detail;    /* what happened, without the label; never NULL */
} PgqevError;

/* ------------------------------------------------------------------------ */
/* Connect limiter, shared by the consumers and cascade workers of one loop  */

/*
 * Caps the connection attempts in flight at once over every consumer and
 * worker given it (config field `limiter`), so a thousand of them starting
 * together do not stampede a server; waiters are served first come, first
 * served. It also holds the loop's asynchronous resolver for host names.
 * Without one each consumer has its own (no cap). The limiter must outlive
 * every consumer and worker given it.
 */
PgqevLimiter *pgqev_limiter_new(struct event_base *base, unsigned max_connecting);

/*
 * Free the limiter; -EBUSY (nothing freed) while a connection of a consumer or
 * worker still uses it: free those first, and call this outside their
 * callbacks (a consumer freed in its own callback lets go of the limiter when
 * the loop next runs). Accepts NULL (returns 0).
 */
PGQEV_MUSTCHECK int pgqev_limiter_free(PgqevLimiter *lim);

/* Change the cap (0: none). Raising it starts waiting attempts on the next loop pass. */
void pgqev_limiter_set_max(PgqevLimiter *lim, unsigned max_connecting);

/* Attempts holding a slot now, waiting for one, and the most ever held at once. */
unsigned pgqev_limiter_active(const PgqevLimiter *lim);
unsigned pgqev_limiter_waiting(const PgqevLimiter *lim);
unsigned pgqev_limiter_peak(const PgqevLimiter *lim);

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */

/*
 * on_batch: one chunk of a batch (1..fetch_size events, in event id order). A
 * batch of n events arrives as ceil(n / fetch_size) calls with the same batch id;
 * empty batches are finished without a call. Return a PgqevVerdict.
 */
typedef PgqevVerdict (*PgqevBatchFn)(PgqevConsumer *c, PgqevBatch *batch, void *arg);
typedef void (*PgqevErrorFn)(PgqevConsumer *c, const PgqevError *err, void *arg);
typedef void (*PgqevStateFn)(PgqevConsumer *c, PgqevState old_state, PgqevState new_state,
			     void *arg);

/*
 * Settings, a value type: fill with pgqev_config_init() and change what you need.
 * Durations are microseconds (pgqev_usec_t, PGQEV_USEC_PER_SEC).
 * Extensible: `size` is set by the init to the size the program was compiled
 * with, so fields added at the end by later versions keep older programs
 * working; a struct not filled by pgqev_config_init() is refused.
 */
typedef struct PgqevConsumerConfig {
	size_t size; /* set by pgqev_config_init(); do not change */

	/* --- what to follow (conninfo, queue and consumer are required) --- */
	const char *conninfo;    /* libpq keyword/value string or URI */
	const char *queue;       /* queue name */
	const char *consumer;    /* consumer name */
	const char *subconsumer; /* pgq_coop subconsumer name; NULL: plain consumer */
	const char *label;       /* name in messages; NULL: "<db>/<queue>/<consumer>" */

	/* --- registration --- */
	bool register_on_start; /* register when first connected (default true); a coop
				   consumer registers with pgq_coop.register_subconsumer */
	int64_t register_tick;  /* > 0: register at this tick (pgq.register_consumer_at;
				   repositions an existing registration, once per start) */

	/* --- batch thresholds (pgq.next_batch_custom); 0: not used --- */
	int min_count;              /* wait until the batch has at least this many events... */
	pgqev_usec_t min_interval;  /* ...or spans at least this long */
	pgqev_usec_t min_lag;       /* only take batches whose end tick is at least this old */
	pgqev_usec_t dead_interval; /* coop: take over a subconsumer silent this long; 0: never */

	/* --- reading --- */
	unsigned fetch_size; /* events per chunk (cursor FETCH size); default 1000 */
	bool async;          /* on_batch may return PGQEV_PENDING. Each chunk is then
				copied once (PQcopyResult) so it can outlive the call;
				without it chunks are read in place, with no copy */

	/* --- waking --- */
	bool listen;                /* LISTEN on the queue's tick channel (default true); set
				       false behind PgBouncer transaction pooling */
	pgqev_usec_t poll_interval; /* look for a batch at least this often when idle;
				       default 30 s with listen, 1 s without */

	/* --- failures --- */
	PgqevFailPolicy fail_policy;
	int retry_delay;                /* seconds for pgqev_event_retry() without its own delay
					   and for PGQEV_FAIL_RETRY_EVENTS; default 60 */
	pgqev_usec_t fail_delay;        /* first delay after a failure; doubles up to fail_cap;
					   default 1 s */
	pgqev_usec_t fail_cap;          /* default 60 s */
	pgqev_usec_t statement_timeout; /* per statement on both connections; 0: server's */
	pgqev_usec_t connect_timeout;   /* per connect attempt; default 10 s */

	/* --- exactly-once into a PostgreSQL target (pgq_ext installed there) --- */
	const char *target_conninfo; /* NULL: off */

	/* --- shared loop resources --- */
	PgqevLimiter *limiter; /* shared connect limiter of the loop; NULL: own one */

	/* --- callbacks (on_batch required) --- */
	PgqevBatchFn on_batch;
	PgqevErrorFn on_error;
	PgqevStateFn on_state;
	void *arg;

	/* --- added after the first layout (CONFIG_SIZE_1) --- */
	/* Split reader: a batch whose tick_event_seq span is at least this many
	   events is read through a second connection at once, each backend sorting
	   half of it, and merged here in event id order (docs/consumer.md). Needs
	   pgqd-ev's SQL (pgq._get_batch_part_cursor); with PgQ 3.5's, or for a coop
	   subconsumer, batches are read as usual. 0 (default): off. */
	unsigned split_min_events;
} PgqevConsumerConfig;

/* Fill with defaults; `size` is the caller's sizeof(PgqevConsumerConfig). */
void pgqev_config_init_size(PgqevConsumerConfig *cfg, size_t size);

static inline void pgqev_config_init(PgqevConsumerConfig *cfg)
{
	pgqev_config_init_size(cfg, sizeof(*cfg));
}

/* ------------------------------------------------------------------------ */
/* Consumer lifecycle                                                       */

/*
 * New consumer on `base` (borrowed; must outlive the consumer). Validates the
 * config: on a bad value returns NULL and, if errbuf is not NULL, writes a
 * message naming the setting and the cause (one line, no trailing newline, never
 * a password: a connection string's parse error is withheld when it holds one).
 * Also NULL for a cfg not filled by pgqev_config_init() or one that sets fields
 * this library does not know (built against a newer header). No I/O until
 * pgqev_consumer_start().
 */
PgqevConsumer *pgqev_consumer_new(struct event_base *base, const PgqevConsumerConfig *cfg,
				  char *errbuf, size_t errsize);

/* Begin connecting. 0, or -EINVAL (bad conninfo; see on_error), -EALREADY. */
PGQEV_MUSTCHECK int pgqev_consumer_start(PgqevConsumer *c);

/*
 * Graceful stop: no new batch is taken; a batch in progress is finished first
 * (a PENDING chunk is waited for). Then the connections close and the state
 * becomes STOPPED (on_state tells when). Idempotent.
 */
void pgqev_consumer_stop(PgqevConsumer *c);

/*
 * Free now. An open batch is abandoned (rolled back by the server: it is
 * delivered again later). PgqevBatch handles held by the application become
 * invalid. Legal inside the consumer's callbacks. Accepts NULL; returns NULL.
 */
PgqevConsumer *pgqev_consumer_free(PgqevConsumer *c);

PgqevState pgqev_consumer_state(const PgqevConsumer *c);
const char *pgqev_consumer_label(const PgqevConsumer *c);
/* Counters since start: batches finished, events handed to on_batch. */
uint64_t pgqev_consumer_batches(const PgqevConsumer *c);
uint64_t pgqev_consumer_events(const PgqevConsumer *c);

/*
 * Look for a batch now (as if a tick notification arrived). For applications
 * that learn about ticks by other means. No-op unless idle.
 */
void pgqev_consumer_wake(PgqevConsumer *c);

/* ------------------------------------------------------------------------ */
/* Batches (borrowed; see OWNERSHIP)                                        */

int64_t pgqev_batch_id(const PgqevBatch *b);
/* Tick ids and times delimiting the batch; 0/NULL when unknown. Times are the
   server's text form of timestamptz. */
int64_t pgqev_batch_prev_tick(const PgqevBatch *b);
int64_t pgqev_batch_tick(const PgqevBatch *b);
const char *pgqev_batch_prev_tick_time(const PgqevBatch *b);
const char *pgqev_batch_tick_time(const PgqevBatch *b);
/* Chunk number within the batch (0 for the first) and events in this chunk. */
unsigned pgqev_batch_chunk(const PgqevBatch *b);
size_t pgqev_batch_count(const PgqevBatch *b);
/* Event i of this chunk, 0 <= i < count; NULL if out of range. */
PgqevEvent *pgqev_batch_event(PgqevBatch *b, size_t i);
/* The consumer the batch belongs to. */
PgqevConsumer *pgqev_batch_consumer(const PgqevBatch *b);

/*
 * Complete a chunk for which on_batch returned PGQEV_PENDING, with PGQEV_DONE or
 * PGQEV_FAIL. The batch and its events are invalid after this returns. If the
 * connection was lost meanwhile, the result is ignored (the batch is delivered
 * again) and -ECONNRESET is returned; -EINVAL if the chunk is not pending.
 */
PGQEV_MUSTCHECK int pgqev_batch_complete(PgqevBatch *b, PgqevVerdict verdict);

/*
 * Exactly-once mode: the target of this batch, a handle on the transaction that
 * will record the batch with pgq_ext.set_batch_done and commit (for a cascade
 * worker: the local node's transaction). NULL when the consumer has no target
 * or the batch was abandoned. Borrowed: use it only while the chunk is open
 * (until on_batch returns, or until pgqev_batch_complete()), the same as the
 * batch. The library alone begins, commits and rolls back that transaction;
 * the handle gives no way to do either, nor to close the connection.
 */
PgqevTarget *pgqev_batch_target(PgqevBatch *b);

/*
 * Queue one write on the target transaction (exactly-once mode). Parameters are
 * text (NULL entry: SQL NULL) and copied. If the statement fails, the whole
 * batch fails (target rolled back, source batch delivered again). 0, -ENOTCONN
 * (no target), -EINVAL, -ENOMEM.
 */
PGQEV_MUSTCHECK int pgqev_batch_target_exec(PgqevBatch *b, const char *sql, int nparams,
					    const char *const *params);

/*
 * Completion of pgqev_target_query(), exactly once per accepted statement, on
 * the loop. `res` is the statement's result (rows, or the server's error),
 * borrowed for the call (never PQclear it), NULL when there was none (the
 * connection broke, the consumer was freed). `error` is NULL on success, else
 * "<label>: <what happened>" (never a password).
 */
typedef void (*PgqevTargetFn)(PgqevTarget *t, const PGresult *res, const char *error, void *arg);

/*
 * Queue one statement in the target transaction, and hand its result to
 * on_done (required): for reads the batch's writes depend on. Parameters are
 * text (NULL entry: SQL NULL), copied. Statements run in the order queued,
 * together with pgqev_batch_target_exec()'s, all before the library's
 * set_batch_done; a failing one aborts the transaction, so the batch fails
 * (rolled back, delivered again). 0, -EINVAL (sql or on_done NULL, nparams < 0),
 * -ENOTCONN (the connection is closed), -ENOMEM.
 */
PGQEV_MUSTCHECK int pgqev_target_query(PgqevTarget *t, const char *sql, int nparams,
				       const char *const *params, PgqevTargetFn on_done, void *arg);

/*
 * The target's libpq connection, for PQescapeLiteral/PQescapeIdentifier,
 * PQserverVersion, PQparameterStatus and the like. Borrowed; NULL while not
 * connected. Never send, consume, or finish through it: that would break the
 * library's pipeline and transaction.
 */
PGconn *pgqev_target_pgconn(const PgqevTarget *t);

/* The target connection's label in messages (sanitized, never a password). */
const char *pgqev_target_label(const PgqevTarget *t);

/* ------------------------------------------------------------------------ */
/* Events (borrowed; see OWNERSHIP). Strings are NUL-terminated, never copied. */

int64_t pgqev_event_id(const PgqevEvent *e);
const char *pgqev_event_time(const PgqevEvent *e); /* timestamptz text */
int64_t pgqev_event_txid(const PgqevEvent *e);     /* 0 for a retried event */
int pgqev_event_retry_count(const PgqevEvent *e);  /* 0 for a first delivery */
const char *pgqev_event_type(const PgqevEvent *e); /* NULL if SQL NULL */
const char *pgqev_event_data(const PgqevEvent *e); /* NULL if SQL NULL */
size_t pgqev_event_data_len(const PgqevEvent *e);  /* 0 if NULL */
/* extra1..extra4: n in 1..4; NULL if SQL NULL or n out of range. */
const char *pgqev_event_extra(const PgqevEvent *e, int n);

/*
 * Verdict for one event: deliver it again after `seconds` (< 0: the consumer's
 * retry_delay) through PgQ's retry queue, with its retry count + 1. Only until
 * the chunk completes; applied when the batch finishes. Other events are done.
 */
void pgqev_event_retry(PgqevEvent *e, int seconds);

/* ------------------------------------------------------------------------ */
/* Blocking runner                                                          */

/*
 * Run one consumer on a private event loop until SIGINT or SIGTERM (graceful
 * stop: the batch in progress is finished) and return 0; -EINVAL for a bad
 * config (message on stderr), -ENOMEM. If cfg->on_error is NULL, errors are
 * printed to stderr, one line each with when the next attempt comes; a failure
 * that repeats the previous one is printed again only at streaks 2, 4, 8, ...
 * For simple programs; the signal handlers are removed again on return.
 */
PGQEV_MUSTCHECK int pgqev_run(const PgqevConsumerConfig *cfg);

/* ------------------------------------------------------------------------ */
/* Producer and admin helpers: blocking, on the caller's PGconn              */
/*
 * These run in the caller's current transaction if one is open (so an event is
 * committed together with the application's writes), else as their own. On
 * failure they return -EIO and PQerrorMessage(conn) tells why (or -EINVAL for a
 * bad argument, -ENOMEM). They block on libpq: call them from a worker or a
 * program without a loop, never from a loop callback.
 */

/* pgq.insert_event(queue, type, data, extra1..4). `extra` may be NULL or point to
   4 strings (NULL entries: SQL NULL). *id_out (if not NULL) gets the event id. */
PGQEV_MUSTCHECK int pgqev_insert_event(PGconn *conn, const char *queue, const char *type,
				       const char *data, const char *const *extra, int64_t *id_out);

/*
 * Bulk producer: COPY into pgq.current_event_table(queue). Events get their ids
 * from the table default and ev_time = now() of the transaction (as insert_event). If no transaction is open, one is begun by
 * pgqev_bulk_begin and committed by pgqev_bulk_end (the table name is valid only
 * within one transaction). While a bulk is open, use the PGconn for nothing else.
 */
typedef struct PgqevBulk PgqevBulk;

/* NULL on failure; *err (if not NULL) gets the negative errno. */
PgqevBulk *pgqev_bulk_begin(PGconn *conn, const char *queue, int *err);
/* Add one event (type/data/extras as in pgqev_insert_event). */
PGQEV_MUSTCHECK int pgqev_bulk_add(PgqevBulk *b, const char *type, const char *data,
				   const char *const *extra);
/* Finish the COPY (and commit if we began): *count_out = events written. Frees b. */
PGQEV_MUSTCHECK int pgqev_bulk_end(PgqevBulk *b, uint64_t *count_out);
/* Abort the COPY (and roll back if we began). Frees b. Accepts NULL. */
void pgqev_bulk_abort(PgqevBulk *b);

/*
 * Subscriptions. register: pgq.register_consumer (tick <= 0) or
 * register_consumer_at; with a subconsumer, pgq_coop.register_subconsumer. *new_out
 * (optional) tells whether the subscription is new. unregister: with a
 * subconsumer, pgq_coop.unregister_subconsumer (drop_batch: abandon its open batch,
 * whose events are then lost to the group, else fail if it has one); without,
 * pgq.unregister_consumer.
 */
PGQEV_MUSTCHECK int pgqev_register(PGconn *conn, const char *queue, const char *consumer,
				   const char *subconsumer, int64_t tick, bool *new_out);
PGQEV_MUSTCHECK int pgqev_unregister(PGconn *conn, const char *queue, const char *consumer,
				     const char *subconsumer, bool drop_batch);

#ifdef __cplusplus
}
#endif

#endif
