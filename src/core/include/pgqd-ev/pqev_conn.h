/*
 * PqevConn: one asynchronous libpq connection driven by a libevent loop, with a
 * request queue, LISTEN/NOTIFY, and reconnects with backoff in one place.
 *
 * Lifecycle
 *   pqev_conn_new()   allocate, copy the config; no I/O.
 *   pqev_conn_start() validate the conninfo and begin connecting (in the loop).
 *   ...               the connection reconnects by itself after any failure, with
 *                     capped exponential backoff plus jitter, until closed.
 *   pqev_conn_close() disconnect and stop; pending requests fail (PQEV_CLOSED).
 *                     pqev_conn_start() may be called again later.
 *   pqev_conn_free()  close and free.
 *
 * Connecting: PQconnectStartParams/PQconnectPoll driven by the loop, with the
 * socket re-read after every poll, under a deadline of our own (libpq's
 * connect_timeout does nothing in this mode). Every attempt first takes a slot
 * from the PqevConnLimit, so concurrent connects per loop are capped. Host names
 * are resolved off-loop with libevent's evdns (the result is passed to libpq as
 * hostaddr, host stays for TLS and .pgpass); IP addresses and unix socket
 * directories are used as given. application_name, TCP keepalives and an optional
 * statement_timeout (startup option) are set on every connection.
 *
 * Requests: each is queued on the connection and sent once it is ready. Queued
 * requests wait through the current connect attempt; if that attempt fails, or
 * the connection breaks, every pending request fails (PQEV_CONN_LOST): a request
 * is never re-sent on a new connection. Single-statement requests are pipelined
 * (libpq pipeline mode, one sync per request, so each is its own implicit
 * transaction exactly as without pipelining); up to max_pipeline are in flight.
 * PQEV_Q_SIMPLE requests use the simple protocol (several statements in one
 * string, no parameters) and run alone. PQEV_Q_PREPARE requests are pipelined
 * as well, executing a statement prepared once per session. BEGIN ... COMMIT sent as separate
 * requests works as without pipelining (a sync does not end an explicit
 * transaction).
 *
 * EXACTLY-ONCE RULE: every request accepted by pqev_conn_send() (return 0) gets
 * exactly one on_done call: with its results, or as a failure on disconnect,
 * cancel, timeout, close or free. on_done never runs inside pqev_conn_send(); it
 * may run inside pqev_req_cancel(), pqev_conn_close(), pqev_conn_reconnect() and
 * pqev_conn_free() (for the requests those calls fail). on_event may run inside
 * pqev_req_cancel() and pqev_conn_reconnect() (a new attempt that fails at
 * once). No callback runs inside pqev_conn_new(), pqev_conn_start(),
 * pqev_conn_send(), pqev_conn_query(), pqev_conn_listen(), pqev_conn_unlisten()
 * or pqev_conn_set_config().
 *
 * RE-ENTRANCY: from inside any callback of a connection it is legal to call any
 * function of this API on the same connection, including pqev_conn_close() and
 * pqev_conn_free() (the free is deferred until the callback stack unwinds; the
 * pointer must not be used after pqev_conn_free() returns). Callbacks never run
 * with libpq in an inconsistent state: server notices are queued by libpq's
 * receiver and delivered after the libpq call returns.
 *
 * OWNERSHIP: strings passed in are copied unless stated otherwise. Everything
 * handed to a callback (PGresult, strings, event structs) is borrowed for the
 * duration of the call only and freed by the library afterwards: never PQclear()
 * a PGresult you got from a callback; copy what you need to keep.
 *
 * LISTEN/NOTIFY: channels subscribed with pqev_conn_listen() are remembered and
 * re-subscribed automatically on every new connection. Notifications are
 * dispatched as they arrive, also in the middle of a result: PQnotifies() is
 * drained after every PQconsumeInput() and PQgetResult(). A dead idle connection is
 * found by TCP keepalives and by a liveness check (an empty query when idle for
 * idle_check), then reconnected. Notifications sent while a connection is down
 * are lost; consumers re-check state on PQEV_EV_CONNECTED.
 *
 * Thread-safety: none. One loop, one thread.
 * Messages: every message the layer reports starts with the database label (the
 * configured name, sanitized) and never contains a password; the conninfo string
 * is never echoed. Each also comes without the label (`detail`), for a caller that
 * adds its own context.
 */
#ifndef PGQEV_PQEV_CONN_H
#define PGQEV_PQEV_CONN_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

#include <pgqd-ev/pqev_common.h>
#include <pgqd-ev/pqev_connlimit.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct PqevConn PqevConn;
typedef struct PqevReq PqevReq;

/* Connection states; changed only inside the library, through one function. */
typedef enum PqevConnState {
	PQEV_CONN_CLOSED = 0, /* not started, or closed by the application */
	PQEV_CONN_WAIT_SLOT,  /* waiting for a connect slot from the limiter */
	PQEV_CONN_RESOLVING,  /* resolving host names off-loop */
	PQEV_CONN_CONNECTING, /* PQconnectPoll in progress, under the connect deadline */
	PQEV_CONN_READY,      /* connected; requests are sent (idle or busy) */
	PQEV_CONN_BACKOFF,    /* waiting before the next attempt after a failure */
} PqevConnState;

/* Stable lower-case name of a state ("ready", ...), for logs. */
const char *pqev_conn_state_name(PqevConnState st);

/* What the on_event callback reports. */
typedef enum PqevConnEventType {
	PQEV_EV_CONNECTED,      /* ready (channels re-subscribed are queued first) */
	PQEV_EV_CONNECT_FAILED, /* an attempt failed or hit its deadline; retry follows */
	PQEV_EV_LOST,           /* an established connection broke; reconnect follows */
	PQEV_EV_RECYCLED,       /* reconnecting because the connection outlived lifetime */
} PqevConnEventType;

/*
 * Event for on_event; borrowed for the call. Logging policy for the daemon:
 * CONNECT_FAILED/LOST with streak == 1 at warning, streak > 1 at debug, except
 * server_down ones (debug: the limiter's server hook reports the outage once);
 * a LOST is held until the next event says whose failure it was; CONNECTED with
 * recovered at info (debug after an outage); RECYCLED at debug.
 */
typedef struct PqevConnEvent {
	PqevConnEventType type;
	unsigned streak;     /* failures in a row, this one included; on CONNECTED the
				length of the streak that just ended (0 if none) */
	bool recovered;      /* CONNECTED after one or more failures */
	usec_t retry_in;     /* CONNECT_FAILED/LOST: delay before the next attempt; with
				server_down, before the server's next probe */
	const char *message; /* "<name>: <what happened>", no password, never NULL */
	bool server_down;    /* CONNECT_FAILED: the failure is the server's (refused, no
				socket, starting up, shutting down, in recovery, connect
				deadline); the connection waits for the server instead of
				backing off, see "Server-level failures" */
	const char *detail;  /* the message without the "<name>: " label, never NULL */
} PqevConnEvent;

/*
 * Server-level failures. A connect attempt that fails because the server is
 * down or not taking connections yet (no answer at all, or SQLSTATE 57P01,
 * 57P02, 57P03) does not count toward the connection's own backoff: the
 * connection waits on its server (one per host/hostaddr/port and limiter), which
 * one waiting connection probes with a real attempt every retry_base (jittered
 * down to half). When an attempt of any connection to that server reaches it,
 * every waiting connection starts its attempt at once (within the limiter's cap).
 * Failures about the database or role (authentication, missing database, a
 * password libpq does not have, too many clients) keep the capped exponential
 * backoff of the connection. A request queued on a waiting connection fails with
 * PQEV_CONN_LOST at the next probe.
 */

/* True if `sqlstate` means the server is going down or not taking connections
   now (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now). */
bool pqev_sqlstate_is_server_down(const char *sqlstate);

/*
 * Callbacks of a connection; any may be NULL. `arg` is passed to each.
 * Extensible: set size = sizeof(PqevConnCallbacks); 0 stands for the layout
 * of library 1.0 (callbacks added later are then not called).
 */
typedef struct PqevConnCallbacks {
	size_t size;
	void (*on_event)(PqevConn *c, const PqevConnEvent *ev, void *arg);
	/* A notification; channel and payload are borrowed for the call. */
	void (*on_notify)(PqevConn *c, const char *channel, const char *payload, int be_pid,
			  void *arg);
	/* A server NOTICE/WARNING/...: severity ("WARNING", "NOTICE", "FATAL" for an
	   error arriving on an idle session, ...) and the server's primary message
	   without trailing newline, both borrowed for the call. The text does not
	   carry the label: log it with pqev_conn_name(c). */
	void (*on_notice)(PqevConn *c, const char *severity, const char *text, void *arg);
	void *arg;
} PqevConnCallbacks;

/*
 * Connection settings, a value type. Fill with pqev_conn_config_init() and
 * change what you need. Strings are copied by pqev_conn_new() and
 * pqev_conn_set_config(). Extensible: `size` is set by the init to the size the
 * caller was compiled with, so fields added at the end in later versions keep
 * older programs working; a struct not filled by the init is refused.
 */
typedef struct PqevConnConfig {
	size_t size;                  /* set by pqev_conn_config_init(); do not change */
	const char *conninfo;         /* libpq keyword/value string or URI (required) */
	const char *name;             /* label for messages; NULL: dbname from conninfo */
	const char *application_name; /* default "pgqd-ev"; conninfo's own value wins */
	usec_t connect_timeout;       /* deadline per attempt incl. resolving; default 10 s */
	usec_t statement_timeout;     /* 0 (default): server setting */
	usec_t lifetime;              /* recycle when older than this, idle and outside a
					 transaction block; 0: never */
	usec_t idle_check;            /* liveness query when idle this long; 0: off; default 30 s */
	usec_t idle_check_timeout;    /* the liveness query's own timeout; default 10 s */
	usec_t retry_base;            /* first retry delay upper bound; default 250 ms. The
					 delays grow until a request on a new session
					 succeeds (connecting alone proves nothing) */
	usec_t retry_cap;             /* largest retry delay; default 60 s */
	int keepalives_idle;          /* seconds (TCP only); default 30; conninfo wins */
	int keepalives_interval;      /* seconds; default 10 */
	int keepalives_count;         /* probes; default 3 */
	unsigned max_pipeline;        /* requests in flight at once; default 16, >= 1 */
} PqevConnConfig;

/* Fill with defaults; `size` is the caller's sizeof(PqevConnConfig). */
void pqev_conn_config_init_size(PqevConnConfig *cfg, size_t size);

static inline void pqev_conn_config_init(PqevConnConfig *cfg)
{
	pqev_conn_config_init_size(cfg, sizeof(*cfg));
}

/*
 * New connection on the limiter's loop. `cfg` and `cb` are copied. No I/O is done
 * and the conninfo is not validated yet (see pqev_conn_start). NULL on
 * out-of-memory, or if cfg was not filled by pqev_conn_config_init() or sets
 * fields this library does not know (built against a newer header).
 */
PqevConn *pqev_conn_new(PqevConnLimit *lim, const PqevConnConfig *cfg, const PqevConnCallbacks *cb);

/*
 * Begin connecting: the first attempt starts in the next loop pass (state
 * BACKOFF with no delay until then), so no callback runs inside this call.
 * Requests may be sent right after. Only from PQEV_CONN_CLOSED; otherwise 0 and
 * no effect. -EINVAL if the conninfo is invalid (text in pqev_conn_error()),
 * -ENOMEM.
 */
PQEV_MUSTCHECK int pqev_conn_start(PqevConn *c);

/*
 * Disconnect and stop reconnecting: state CLOSED. Every pending request gets its
 * on_done with PQEV_CLOSED before this returns. Channels stay subscribed (they are
 * re-issued by the next pqev_conn_start). No-op when already closed.
 */
void pqev_conn_close(PqevConn *c);

/*
 * Drop the connection now and reconnect (through the limiter, without backoff);
 * in-flight requests fail with PQEV_CONN_LOST, queued ones wait for the new
 * connection. For recycling on demand, or after a protocol-level surprise.
 * No-op when closed.
 */
void pqev_conn_reconnect(PqevConn *c);

/*
 * Close and free. Pending requests fail with PQEV_CLOSED first. Legal inside the
 * connection's own callbacks (the memory is released when they return). Accepts
 * NULL. Always returns NULL.
 */
PqevConn *pqev_conn_free(PqevConn *c);

/*
 * Replace the settings; applies from the next connect attempt (call
 * pqev_conn_reconnect() to apply now). The callbacks are kept. -ENOMEM;
 * -EINVAL if cfg was not filled by pqev_conn_config_init(), -E2BIG if it sets
 * fields this library does not know.
 */
PQEV_MUSTCHECK int pqev_conn_set_config(PqevConn *c, const PqevConnConfig *cfg);

/* Accessors. Strings are borrowed and valid until the next call on `c`. */
PqevConnState pqev_conn_state(const PqevConn *c);
bool pqev_conn_is_ready(const PqevConn *c);
const char *pqev_conn_name(const PqevConn *c);  /* sanitized label */
const char *pqev_conn_error(const PqevConn *c); /* last error text, "" if none */
unsigned pqev_conn_pending(const PqevConn *c);  /* requests queued + in flight */
unsigned pqev_conn_streak(const PqevConn *c);   /* current failure streak */
int pqev_conn_backend_pid(const PqevConn *c);   /* 0 unless READY */
/*
 * The PGconn while READY, else NULL. Borrowed: only for PQescape*, PQserverVersion,
 * PQparameterStatus and the like. Never send, consume, or finish through it.
 */
PGconn *pqev_conn_pgconn(const PqevConn *c);

/* ---- requests ---- */

/* How a request ended. */
typedef enum PqevStatus {
	PQEV_OK = 0,    /* every statement succeeded */
	PQEV_SQL_ERROR, /* the server reported an error; reply->result holds it */
	PQEV_CONN_LOST, /* the connection failed or broke before the request completed */
	PQEV_CANCELED,  /* pqev_req_cancel() */
	PQEV_TIMEOUT,   /* the request's timeout expired */
	PQEV_CLOSED,    /* pqev_conn_close() or pqev_conn_free() */
} PqevStatus;

const char *pqev_status_name(PqevStatus st);

/* The outcome handed to on_done; everything borrowed for the call. */
typedef struct PqevReply {
	PqevStatus status;
	/* The last result (the error result on PQEV_SQL_ERROR); NULL when the request
	   failed without a server result. Owned by the library: do not PQclear. */
	const PGresult *result;
	/* NULL on PQEV_OK; otherwise "<name>: <text>" (the server's primary message
	   for SQL errors), no password. */
	const char *error;
	unsigned nresults;  /* results received (one per statement) */
	const char *detail; /* NULL on PQEV_OK; otherwise `error` without the label */
} PqevReply;

/* Completion: exactly once per accepted request. `req` is invalid after return. */
typedef void (*PqevDoneFn)(PqevConn *c, const PqevReply *reply, void *arg);
/* Optional: each result (row set) as it completes, before on_done; borrowed. */
typedef void (*PqevRowsFn)(PqevConn *c, const PGresult *res, void *arg);

#define PQEV_Q_SIMPLE 0x1u /* simple protocol: several statements allowed, no params */
#define PQEV_Q_BINARY 0x2u /* results in binary format (ignored with PQEV_Q_SIMPLE) */
/*
 * Prepare the statement once per session and execute it by name from then on:
 * the server skips parsing and planning (a generic plan is kept once it is as
 * good as a custom one, as for any prepared statement). Keyed by the SQL text;
 * the first request of a session sends Prepare and Execute in one round trip.
 * A new session prepares again. An error saying the statement is gone (26000,
 * e.g. after DEALLOCATE ALL) or that its result type changed (0A000, a function
 * replaced under it) fails that request and makes the next one prepare anew.
 * At most 32 prepares per session; after them, SQL texts not yet prepared go
 * unprepared. Not for
 * a server reached through a pooler that does not keep prepared statements.
 * Not with PQEV_Q_SIMPLE.
 */
#define PQEV_Q_PREPARE 0x4u

/*
 * A request to send; copied by pqev_conn_send (sql and params included).
 * Extensible: set size = sizeof(PqevQuery) (PQEV_QUERY_INIT does); 0 stands
 * for the layout of library 1.0, so fields added later are then not read.
 */
typedef struct PqevQuery {
	size_t size;
	const char *sql;
	int nparams;               /* text parameters $1..$n (not with PQEV_Q_SIMPLE) */
	const char *const *params; /* nparams values; a NULL entry is SQL NULL */
	unsigned flags;            /* PQEV_Q_* */
	usec_t timeout;            /* from submission to completion; 0: none. On expiry the
				      request fails with PQEV_TIMEOUT; if it was already sent,
				      the connection is dropped and reconnected (see below). */
	PqevRowsFn on_rows;        /* optional */
	PqevDoneFn on_done;        /* required */
	void *arg;
} PqevQuery;

/* Start of a PqevQuery initializer: PqevQuery q = {PQEV_QUERY_INIT, .sql = ...}; */
#define PQEV_QUERY_INIT .size = sizeof(PqevQuery)

/*
 * Queue a request. Returns 0 and, if req_out is not NULL, a handle valid until
 * on_done starts; -EINVAL (bad query: text in pqev_conn_error()), -E2BIG (q sets
 * fields this library does not know), -ENOTCONN if the connection is CLOSED,
 * -ENOMEM. On error no callback will run.
 */
PQEV_MUSTCHECK int pqev_conn_send(PqevConn *c, const PqevQuery *q, PqevReq **req_out);

/* Shorthands for pqev_conn_send: one statement, text params (may be 0/NULL). */
PQEV_MUSTCHECK int pqev_conn_query(PqevConn *c, const char *sql, int nparams,
				   const char *const *params, PqevDoneFn on_done, void *arg);

/*
 * Cancel a request; its on_done runs with PQEV_CANCELED before this returns.
 * A request not sent yet is just removed. A request already sent cannot be
 * cancelled without blocking (PQcancel opens a blocking connection), so the
 * connection is dropped and reconnected: other in-flight requests fail with
 * PQEV_CONN_LOST, queued ones wait for the new connection. NOTE: queued requests
 * that belong to a transaction block opened on the old connection then run
 * outside it; cancel them too (the same holds for a request timeout).
 */
void pqev_req_cancel(PqevReq *req);

/* ---- LISTEN/NOTIFY ---- */

/*
 * Subscribe to `channel` (any text; quoted as an identifier here). Remembered and
 * re-subscribed on every reconnect; LISTEN is sent now if READY. 0 if already
 * subscribed; -EINVAL for an empty or over-long (>= 64 bytes) name, -ENOMEM.
 * A failing LISTEN is reported like a broken connection (reconnect).
 */
PQEV_MUSTCHECK int pqev_conn_listen(PqevConn *c, const char *channel);

/* Unsubscribe; UNLISTEN is sent if READY. -ENOENT if not subscribed. */
PQEV_MUSTCHECK int pqev_conn_unlisten(PqevConn *c, const char *channel);

bool pqev_conn_listening(const PqevConn *c, const char *channel);

#ifdef __cplusplus
}
#endif

#endif
