/*
 * Internal definitions shared by the connection layer's files (pqev_conn.c,
 * pqev_conn_req.c, pqev_conninfo.c, pqev_connlimit.c). Not installed.
 *
 * Invariants:
 * - c->pg != NULL exactly in states CONNECTING and READY.
 * - c->has_slot only in WAIT_SLOT (granted, not yet started), RESOLVING and
 *   CONNECTING; c->waiting (on lim->waiters) only in WAIT_SLOT.
 * - Every request is on exactly one of c->queue (not sent) and c->inflight (sent,
 *   in send order), or on a caller's local list while being completed.
 * - c->depth > 0 while the library runs on c's behalf (callbacks may be on the
 *   stack); pqev_conn_free() then only marks free_pending and the outermost
 *   conn_leave() releases the memory.
 * - c->gen changes whenever the connection is dropped, closed or restarted; code
 *   that ran a user callback compares it to know whether to carry on.
 */
#ifndef PGQEV_PQEV_CONN_INT_H
#define PGQEV_PQEV_CONN_INT_H

#include <stdarg.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include <pgqd-ev/pqev_backoff.h>
#include <pgqd-ev/pqev_conn.h>
#include <pgqd-ev/pqev_connlimit.h>
#include <pgqd-ev/pqev_daemon.h>

#define PQEV_NAME_MAX 64
#define PQEV_ERR_MAX  512

typedef struct PqevServer PqevServer;

/* Whose failure a failed connect attempt is (see pqev_server.c). */
typedef enum PqevFailClass {
	PQEV_FAIL_LOCAL = 0, /* ours: bad settings, out of memory; own backoff */
	PQEV_FAIL_SERVER,    /* the server is down or not taking connections; wait on it */
	PQEV_FAIL_DB,        /* the server answered about the database or role; own backoff */
} PqevFailClass;

typedef enum ReqKind {
	REQ_USER = 0,
	REQ_LISTEN,   /* LISTEN/UNLISTEN issued by the layer */
	REQ_LIVENESS, /* the idle liveness check */
} ReqKind;

struct PqevReq {
	TAILQ_ENTRY(PqevReq) link;
	PqevConn *conn;
	ReqKind kind;
	char *sql;
	int nparams;
	char **params;
	unsigned flags;
	PqevRowsFn on_rows;
	PqevDoneFn on_done;
	void *arg;
	struct event *timeout_ev; /* only when a timeout was asked for */
	bool sent;                /* on c->inflight */
	bool got_end;             /* PQgetResult returned NULL for this query */
	bool failed;              /* an error result was seen */
	unsigned nresults;
	PGresult *last; /* last result, or the first error result */
	char *copy;     /* COPY FROM STDIN data (owned), sent on PGRES_COPY_IN */
	size_t copy_len;
	bool is_copy;   /* a COPY request: runs alone, outside pipeline mode */
	bool prepared;  /* executed as the session's statement pqev_<prep_name> */
	bool preparing; /* ... and its Prepare's result (then a NULL) comes first */
	unsigned prep_name;
};

TAILQ_HEAD(ReqList, PqevReq);

/* A statement prepared on the current session for PQEV_Q_PREPARE requests. */
typedef struct PrepStmt {
	char *sql;
	unsigned name; /* pqev_<name> on the server */
	bool ready;    /* its Prepare succeeded: until then the text goes unprepared */
} PrepStmt;

/* A queued server notice, delivered after the libpq call that received it. */
typedef struct ConnNotice {
	struct ConnNotice *next;
	char *severity;
	char *text;
} ConnNotice;

/* One pending host name lookup (heap-allocated: evdns may report after a cancel). */
typedef struct DnsLookup {
	PqevConn *conn; /* NULL once cancelled */
	struct evdns_getaddrinfo_request *req;
	int index;
	bool done;
} DnsLookup;

struct PqevConn {
	PqevConnLimit *lim;
	struct event_base *base;
	TAILQ_ENTRY(PqevConn) wait_link; /* on lim->waiters while `waiting` */
	bool waiting;

	/* settings (owned copies) */
	PqevConnConfig cfg;
	char *conninfo;
	char *cfg_name;
	char *appname;
	PqevConnCallbacks cb;
	char name[PQEV_NAME_MAX];

	/* connect parameters, built by pqev_conninfo_build() at each attempt */
	char **keys;
	char **vals;
	int nhosts;       /* entries in the host list */
	char **hosts;     /* host list entries (owned) */
	char **hostaddrs; /* resolved addresses per host entry, "" if not resolved */
	DnsLookup **lookups;
	int dns_pending;
	bool need_dns;
	bool dns_issuing; /* inside the evdns_getaddrinfo() loop */

	PqevConnState state;
	PGconn *pg;
	struct event sock_ev;
	bool sock_armed;
	bool sock_init; /* sock_ev has been assigned once */
	short sock_what;
	evutil_socket_t sock_fd;
	struct event timer_ev; /* deadline / backoff / idle check, by state */
	bool timer_armed;
	bool timer_idle; /* armed by pqev_conn_arm_idle, for timer_due */
	usec_t timer_due;
	bool has_slot;
	bool in_pipeline;
	bool want_write; /* PQflush returned 1 */

	PqevBackoff backoff;
	unsigned streak;
	PqevFailClass fail_class;       /* of the attempt failing now; reset by each failure */
	PqevServer *srv;                /* the server of the connection target; NULL on OOM */
	TAILQ_ENTRY(PqevConn) srv_link; /* on srv->waiters while srv_waiting */
	bool srv_waiting;
	bool srv_probing;
	usec_t connected_at;
	usec_t last_activity;

	struct ReqList queue;
	struct ReqList inflight;
	unsigned nqueued;
	unsigned ninflight;

	char **channels;
	size_t nchannels;
	size_t capchannels;

	ConnNotice *notices;
	ConnNotice **notices_tail;

	/* PQEV_Q_PREPARE: this session's statements (NULL until the first). Names
	   are never reused within a session, so a statement forgotten after an
	   error can be prepared again without DEALLOCATE; prep_names caps them. */
	PrepStmt *prep;
	unsigned nprep;
	unsigned prep_names;

	unsigned depth;
	bool free_pending;
	uint64_t gen;
	/* the last failure without the label (err) and as "<name>: <err>"
	   (err_msg, what pqev_conn_error() returns): conn_err_none ("") until the
	   first one, then one malloc'd buffer holding both until the session is
	   ready again (most sessions never fail: 1 KB each adds up at 10,000
	   databases) */
	char *err, *err_msg;
};

/* Forget every prepared statement (the session ended). */
void pqev_conn_prep_clear(PqevConn *c);

/* Forget the last error; release its buffer too when `release` (never while a
   callback may still hold the message). */
void pqev_conn_clear_err(PqevConn *c, bool release);

/* ---- pqev_connlimit.c ---- */
/* Take a slot: true if granted now; false: c is queued (state WAIT_SLOT). */
bool pqev_connlimit_acquire(PqevConnLimit *lim, PqevConn *c);
/* Give back c's slot, or leave the wait queue. */
void pqev_connlimit_release(PqevConnLimit *lim, PqevConn *c);
void pqev_connlimit_attach(PqevConnLimit *lim);
void pqev_connlimit_detach(PqevConnLimit *lim);
/* The resolver, created on first use; NULL on failure. */
struct evdns_base *pqev_connlimit_dns(PqevConnLimit *lim);
void pqev_connlimit_debugv(PqevConnLimit *lim, const char *name, const char *fmt, va_list ap)
	PQEV_PRINTF(3, 0);

/* The limiter's list of servers (pqev_server.c keeps it). */
PqevServer **pqev_connlimit_servers(PqevConnLimit *lim);
void pqev_connlimit_server_event(PqevConnLimit *lim, const PqevServerEvent *ev);

/* ---- pqev_server.c ---- */
/*
 * Classify the text of a failed connect attempt made with PQERRORS_VERBOSE:
 * SERVER when no server answered or it answered only "not now" (57P01, 57P02,
 * 57P03), DB when it answered anything else or asked for a missing password.
 */
PqevFailClass pqev_classify_connect_error(const char *msg, bool needs_password);
/* Remove what verbose mode adds (SQLSTATEs after severities, LOCATION lines). */
void pqev_clean_connect_error(char *msg);
/* Attach c to the server of `key` (its connection target); NULL key: none. */
void pqev_server_bind(PqevConn *c, const char *key);
void pqev_server_unbind(PqevConn *c);
/* True if c's server is known down and c is not its probe; if nobody probes it
   (no probe in flight or scheduled), c becomes the probe and false is returned. */
bool pqev_server_is_down(PqevConn *c);
/* Why the server is down (no label), for waiters' messages. */
const char *pqev_server_error(const PqevConn *c);
/* c (state BACKOFF, no timer) failed at server level: wait for the server. Returns
   the probe interval. */
usec_t pqev_server_wait(PqevConn *c);
/* c stops waiting or probing (dropped, closed, restarted). */
void pqev_server_leave(PqevConn *c);
/* An attempt of c reached the server: release everyone waiting on it. */
void pqev_server_answered(PqevConn *c);

/* ---- pqev_conninfo.c ---- */
/*
 * Parse c->conninfo: fill c->name (unless configured), c->hosts/nhosts and
 * need_dns. -EINVAL with text in c->err, -ENOMEM.
 */
PQEV_MUSTCHECK int pqev_conninfo_parse(PqevConn *c);
/* Free the keyword/value arrays of the attempt: libpq copies them at
   PQconnectStartParams, and keeping them cost about 600 bytes per session. */
void pqev_conninfo_release_params(PqevConn *c);
/* Build c->keys/c->vals for PQconnectStartParams (uses c->hostaddrs). */
PQEV_MUSTCHECK int pqev_conninfo_build(PqevConn *c);
void pqev_conninfo_clear(PqevConn *c);
/* Copy `in` to `out` with control characters as '?', truncated to outlen-1. */
void pqev_sanitize(char *out, size_t outlen, const char *in);
/* True if a conninfo string may hold a password (a password keyword, or a URI
 * with userinfo), so parse errors are withheld. */
bool pqev_conninfo_has_password(const char *conninfo);
/* True if a dbname value is itself a connection string (libpq expands those). */
bool pqev_conninfo_is_expanded(const char *dbname);

/*
 * Read a caller's extensible struct (its first member is `size_t size`) into
 * dst, already filled with defaults: copies min(size, dst_size) bytes. size 0
 * stands for `base` when base > 0 (structs callers fill by hand), else is an
 * error; -EINVAL below base, -E2BIG if bytes this library does not know are
 * set (a caller built against a newer header).
 */
PQEV_MUSTCHECK int pqev_struct_in(void *dst, size_t dst_size, const void *src, size_t src_size,
				  size_t base);

/* ---- pqev_conn.c ---- */
usec_t pqev_now(void);
void pqev_conn_debug(PqevConn *c, const char *fmt, ...) PQEV_PRINTF(2, 3);
/* One line from a libpq text: line breaks become one space (". " after a
   sentence without a full stop), trailing whitespace goes. In place. */
void pqev_flatten_message(char *msg);
/* Set c->err to the formatted text with newlines flattened, c->err_msg to
   "<name>: " and it. */
void pqev_conn_seterr(PqevConn *c, const char *fmt, ...) PQEV_PRINTF(2, 3);
/* "<name>: <detail>" into out (cut to size): the one place a label meets a detail. */
void pqev_conn_label(const PqevConn *c, char *out, size_t size, const char *detail);
const char *pqev_conn_error_detail(const PqevConn *c);
void pqev_conn_enter(PqevConn *c);
void pqev_conn_leave(PqevConn *c);
/* Begin a connect attempt now (state BACKOFF): the server's probe or release. */
void pqev_conn_attempt(PqevConn *c);
/* Called by the limiter when a queued connect gets its slot. */
void pqev_conn_slot_granted(PqevConn *c);
/* The connection broke (or an attempt failed): fail everything, back off. */
void pqev_conn_failure(PqevConn *c, PqevConnEventType type);
/* Drop the connection, fail in-flight requests (CONN_LOST), reconnect now. */
void pqev_conn_restart(PqevConn *c, bool recycled);
/* Re-arm the socket event for reading plus writing if a flush is pending. */
void pqev_conn_arm_io(PqevConn *c);
void pqev_conn_arm_idle(PqevConn *c);

/* ---- pqev_conn_req.c ---- */
/* Complete a request (already unlinked) exactly once and free it. */
/* detail: the failure without the label (NULL: the server's error, or PQEV_OK) */
void pqev_req_complete(PqevReq *r, PqevStatus st, const char *detail);
/* Complete every request on `list` with status/error. */
void pqev_req_fail_list(struct ReqList *list, PqevStatus st, const char *detail);
/* Move queued (and in-flight) requests of c to `out`, leaving c's lists empty. */
void pqev_req_take_all(PqevConn *c, struct ReqList *out, bool include_queued);
/* On READY: queue LISTENs for every channel at the front. */
PQEV_MUSTCHECK int pqev_req_queue_listens(PqevConn *c);
/*
 * Send what can be sent, flush, read results, dispatch notifications and notices.
 * `what` is the libevent event mask (0: only try to send). Returns false if the
 * connection changed under it (gen changed: caller must stop touching it).
 */
bool pqev_conn_io(PqevConn *c, short what);
/* Deliver queued notices and PQnotifies(); false if gen changed. */
bool pqev_conn_dispatch_async(PqevConn *c);
void pqev_conn_clear_notices(PqevConn *c);
void pqev_notice_receiver(void *arg, const PGresult *res);
/* Queue the liveness check request. */
PQEV_MUSTCHECK int pqev_req_queue_liveness(PqevConn *c);
void pqev_req_free(PqevReq *r);
/* The longest channel name (NAMEDATALEN - 1). */
#define PQEV_CHANNEL_MAX 63
/* "VERB <chan as a quoted identifier>" into buf (len >= 2 * PQEV_CHANNEL_MAX + 16
   for a channel of at most PQEV_CHANNEL_MAX bytes); exposed for the fuzz target. */
void pqev_listen_sql(char *buf, size_t len, const char *verb, const char *chan);
/* Internal to the libraries (not exported): a COPY ... FROM STDIN request whose
   data (len bytes, owned from then on, also on failure) is sent when the server
   asks for it; otherwise as pqev_conn_send. */
PQEV_MUSTCHECK int pqev_conn_send_copy(PqevConn *c, const PqevQuery *q, char *data, size_t len);

#endif
