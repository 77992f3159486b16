/*
 * Internal structures of libpgqev, shared by the consumer's modules. Not
 * installed; nothing here is part of the ABI.
 */
#ifndef PGQEV_PGQEV_INT_H
#define PGQEV_PGQEV_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include <pgqd-ev/pqev_backoff.h>
#include <pgqd-ev/pqev_conn.h>
#include <pgqd-ev/pgqev_consumer.h>

/* The public PgqevTarget and PgqevLimiter are the core's PqevConn and
   PqevConnLimit under public names: the structs are never defined, the
   pointers only converted here (and by the daemon, which passes its limiter). */
static inline PqevConn *pgqev_target_conn(PgqevTarget *t)
{
	return (PqevConn *)t;
}

static inline PgqevTarget *pgqev_target_of(PqevConn *conn)
{
	return (PgqevTarget *)conn;
}

static inline PqevConnLimit *pgqev_limiter_core(PgqevLimiter *lim)
{
	return (PqevConnLimit *)lim;
}

static inline PgqevLimiter *pgqev_limiter_of(PqevConnLimit *lim)
{
	return (PgqevLimiter *)lim;
}

#define PGQEV_CURSOR   "pgqev_cursor"
#define PGQEV_NO_RETRY INT32_MIN
#define PGQEV_EV_COLS  10

/* Longest message handed to on_error (longer ones are cut). */
#define PGQEV_MSG_MAX 1024

/* Where the consumer's state machine is. Changed only through set_phase() in
   pgqev_consumer.c, which also sets the public PgqevState it maps to. */
typedef enum Phase {
	PH_STOPPED = 0,
	PH_CONNECT,   /* started: waiting for the source connection's first connect */
	PH_RECONNECT, /* the source connection failed or broke: waiting for it again */
	PH_SETUP,     /* registering / learning the tick channel */
	PH_NEXT,      /* next_batch in flight */
	PH_IDLE,      /* no batch: waiting for a notification or the poll timer */
	PH_EO_CHECK,  /* exactly-once: target begin + is_batch_done in flight */
	PH_READ,      /* batch open: cursor, chunks, handler */
	PH_FINISH,    /* target/source finish and commit in flight */
	PH_BACKOFF,   /* waiting after a failure */
} Phase;

/* Internal assertions, compiled in with -Dcassert=true. */
#ifdef PGQEV_CASSERT
#define PGQEV_ASSERT(cond) ((cond) ? (void)0 : pgqev_assert_failed(#cond, __FILE__, __LINE__))
_Noreturn void pgqev_assert_failed(const char *cond, const char *file, int line);
#else
#define PGQEV_ASSERT(cond) ((void)0)
#endif

struct PgqevEvent {
	PgqevBatch *batch;
	const PGresult *res; /* the result holding the row (the split reader's
				chunks take rows from two) */
	int row;
	int retry_secs; /* PGQEV_NO_RETRY, or seconds */
};

struct PgqevBatch {
	PgqevConsumer *c;       /* NULL for a cascade worker's batch */
	struct PgqevCascade *w; /* the cascade worker's batch, or NULL */
	unsigned cap;           /* event slots */
	uint64_t gen;           /* consumer generation this batch belongs to */
	int64_t id;
	int64_t prev_tick, tick;
	char *prev_tick_time, *tick_time;
	unsigned chunk; /* number of the chunk being delivered */
	/* current chunk: borrowed result (sync) or owned copy (async) */
	const PGresult *res;
	PGresult *own;
	size_t nrows;
	PgqevEvent *events; /* fetch_size slots */
	PGresult *ready;    /* async: next chunk, already fetched, owned */
	unsigned fetches;   /* FETCHes in flight */
	bool eof;           /* the cursor has no more rows */
	bool in_handler;    /* on_batch is running for the current chunk */
	bool pending;       /* on_batch returned PGQEV_PENDING */
	bool abandoned;     /* the consumer gave the batch up (failure, stop, free) */
	bool finishing;
	bool tgt_open;            /* exactly-once: target transaction begun */
	bool split_sized;         /* at least split_min_events (the look-up's test) */
	bool want_split;          /* read through two backends (pgqev_split.c) */
	struct PgqevSplit *split; /* the split reader's state, or NULL */
	PgqevBatch *next_stale;   /* abandoned but still held by the application */
};

struct PgqevConsumer {
	struct event_base *base;
	PqevConnLimit *lim;
	bool own_lim;
	PgqevConsumerConfig cfg; /* strings point into the copies below */
	char *s_conninfo, *s_queue, *s_consumer, *s_sub, *s_target;
	/* pgq_ext keys (consumer_id is the consumer): ext_key is the queue quoted,
	   plus ".subconsumer" for coop; ext_old_key is the pre-queue key (the
	   subconsumer or ""), also python3-pgq's, read until ext_key was written */
	char *ext_key;
	char *ext_old_key;
	bool ext_key_written;
	char *label;

	PqevConn *src;
	PqevConn *tgt;

	Phase phase;
	PgqevState state;
	uint64_t gen;   /* bumped whenever in-flight work becomes stale */
	unsigned depth; /* nesting of entries from the loop / API into the machine */
	bool free_pending;
	bool started;
	bool stop_requested;
	bool registered; /* registration done once for this start */
	bool setup_done; /* registration and channel known for this connection */
	bool src_in_tx;
	bool channel_tried;
	unsigned setup_pending; /* setup requests still in flight */
	char *channel;
	bool next_sent;        /* a next_batch request is in flight (current gen) */
	bool next_catchup;     /* the look-up in flight used catchup_us */
	bool spec_cursor;      /* BEGIN + the cursor of the batch it opens sent behind it */
	usec_t catchup_us;     /* > 0: the consumer lags; ask for bigger batches */
	bool wake_pending;     /* a notification arrived while a look-up was in flight */
	int64_t notified_tick; /* the highest tick id a tick notification named */
	usec_t poll_interval;

	struct event *timer; /* poll or failure backoff */
	PqevBackoff fail_bo;
	unsigned fail_streak;
	bool fail_conn; /* the failure being reported is a connection's, not ours */
	bool wait_tgt;  /* BACKOFF until the target connection is back (or fail_cap) */

	PqevConn *part;        /* split reader's second connection (open only while
				 a split batch is read), or NULL */
	int64_t split_refused; /* batch whose second connection failed: read it
				  with one backend */

	PgqevBatch *batch; /* the open batch, or NULL */
	PgqevBatch *stale; /* abandoned batches still held by the application */

	uint64_t n_batches, n_events;
};

/* From the core (pqev_conninfo.c, pqev_conn_req.c; not exported): never echo a
   connection string holding a password; read a caller's extensible struct;
   COPY FROM STDIN. */
bool pqev_conninfo_has_password(const char *conninfo);
const char *pqev_conn_error_detail(const PqevConn *c); /* pqev_conn_error() without the label */
bool pqev_conninfo_is_expanded(const char *dbname);
PQEV_MUSTCHECK int pqev_conn_send_copy(PqevConn *c, const PqevQuery *q, char *data, size_t len);
PQEV_MUSTCHECK int pqev_struct_in(void *dst, size_t dst_size, const void *src, size_t src_size,
				  size_t base);

/* pgqev_batch.c */
PgqevBatch *pgqev_batch_new(PgqevConsumer *c, int64_t id);
PgqevBatch *pgqev_batch_new_slots(unsigned cap, int64_t id);
void pgqev_batch_release(PgqevBatch *b);
void pgqev_batch_set_rows(PgqevBatch *b, const PGresult *res, PGresult *own);
void pgqev_batch_clear_rows(PgqevBatch *b);

struct PgqevReq;
/* pgqev_consumer.c, for pgqev_split.c: the state machine's entry points */
void pgqev_consumer_enter(PgqevConsumer *c);
void pgqev_consumer_leave(PgqevConsumer *c);
/* Checks a reply of the source connection as the consumer's own (a lost or
   terminated session is the source's failure); false after failing. */
bool pgqev_consumer_src_ok(PgqevConsumer *c, const struct PgqevReq *x, const PqevReply *r,
			   const char *what);
/* Fails the open batch; conn: a connection's failure (no backoff). */
void pgqev_consumer_fail(PgqevConsumer *c, bool conn, const char *what, const char *detail);
void pgqev_consumer_deliver(PgqevConsumer *c, PgqevBatch *b);
void pgqev_consumer_maybe_finish(PgqevConsumer *c, PgqevBatch *b);
PqevConn *pgqev_consumer_part_conn(PgqevConsumer *c); /* created on first use */

/* pgqev_split.c: the split reader */
#define PGQEV_PART_CURSOR "pgqev_part"
void pgqev_split_open(PgqevConsumer *c, PgqevBatch *b);
void pgqev_split_chunk_done(PgqevConsumer *c, PgqevBatch *b);
void pgqev_split_free(PgqevBatch *b);
void pgqev_split_conn_failed(PgqevConsumer *c, const char *message);

/* pgqev_cascade.c: the local node's transaction for a cascade batch */
PqevConn *pgqev_cascade_batch_target(PgqevBatch *b);
int pgqev_cascade_batch_exec(PgqevBatch *b, const char *sql, int nparams,
			     const char *const *params);

/* pgqev_common.c: plumbing shared by the consumer and the cascade worker */

/* A request's context: its owner, the owner's generation when it was sent (a
   completion from another generation is stale), what it is, and which of the
   owner's two connections carries it. */
typedef struct PgqevReq {
	void *owner;
	uint64_t gen;
	int kind;
	bool alt;
} PgqevReq;

/* Send with a heap copy of *req as the callbacks' arg (they free it). */
int pgqev_req_send(PqevConn *conn, const PgqevReq *req, const char *sql, int nparams,
		   const char *const *params, unsigned flags, PqevRowsFn on_rows,
		   PqevDoneFn on_done);
/* The same for COPY ... FROM STDIN with data (owned from here, also on failure). */
int pgqev_req_send_copy(PqevConn *conn, const PgqevReq *req, const char *sql, char *data,
			size_t len, PqevDoneFn on_done);
/* The PgqevError handed to on_error: msg gets "<label>: <detail>", cut to
   PGQEV_MSG_MAX whatever their lengths. */
void pgqev_error_fill(PgqevError *err, char msg[PGQEV_MSG_MAX], const char *label,
		      PgqevErrorKind kind, int64_t batch_id, usec_t retry_in, unsigned streak,
		      const char *detail);
int pgqev_timer_arm(struct event *timer, usec_t delay);
/* Free a limiter the owner created, now or (inside a connection's callback)
   on the next loop pass. */
void pgqev_limiter_release(struct event_base *base, PqevConnLimit *lim);
PqevConn *pgqev_conn_open(PqevConnLimit *lim, const char *conninfo, const char *name,
			  const char *app, usec_t connect_timeout, usec_t statement_timeout,
			  const PqevConnCallbacks *cb);
/* Copy a public struct that starts with `size_t size` out to a caller compiled
   with another size: as much as both know, the rest zero, size = the caller's. */
void pgqev_struct_out(void *out, size_t size, const void *src, size_t src_size);
/* The constructors' common checks: base and cfg given, cfg filled by the init
   function (at least size1 bytes), no fields this library does not know. The
   accepted copy in *in has size = in_size. */
bool pgqev_config_in(struct event_base *base, void *in, size_t in_size, const void *cfg,
		     size_t size1, const char *init_name, char *errbuf, size_t errsize);
char *pgqev_strdup_opt(const char *s, bool *oom);
/* label, or "<dbname>/<what>" */
char *pgqev_default_label(const char *label, const char *conninfo, const char *what);

/* pgqev_sql.c: SQL text helpers */
char *pgqev_quote_literal(const char *s);
char *pgqev_sprintf(const char *fmt, ...) PQEV_PRINTF(1, 2);

/* pgqev_cfgcheck.c: constructors' checks. pgqev_errbuf_set writes one line and
   returns false; pgqev_check_conninfo never echoes a password; the dbname is
   NULL when absent or itself a connection string (free it). */
bool pgqev_errbuf_set(char *errbuf, size_t errsize, const char *fmt, ...) PQEV_PRINTF(3, 4);
bool pgqev_check_conninfo(char *errbuf, size_t errsize, const char *setting, const char *conninfo);
char *pgqev_conninfo_dbname(const char *conninfo);
char *pgqev_interval(usec_t us, char *buf, size_t size);

#endif
