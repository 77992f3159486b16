/*
 * Connect limiter: the per-loop state every PqevConn of one event_base shares.
 *
 * - A global cap on concurrent connection attempts. A connection takes a slot
 *   before it resolves and connects and gives it back when the attempt ends
 *   (ready, failed, timed out, closed). Waiters are served first come, first
 *   served, so a thousand databases coming up at once do not stampede one server.
 * - The asynchronous resolver (libevent evdns) used for host names, created on
 *   first use, so host names never block the loop.
 * - An optional debug hook: the core library never logs above debug; it hands
 *   debug text to this hook, and the daemon decides what to do with it.
 *
 * Thread-safety: none. One loop, one thread: every call on the loop's thread.
 * Ownership: the caller owns the limiter and the event_base; the base must outlive
 * the limiter, and the limiter must outlive every PqevConn created on it.
 */
#ifndef PGQEV_PQEV_CONNLIMIT_H
#define PGQEV_PQEV_CONNLIMIT_H

#include <stdbool.h>

#include <pgqd-ev/pqev_common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;

typedef struct PqevConnLimit PqevConnLimit;

/*
 * Debug hook: `name` is the connection's database label (sanitized, never NULL),
 * `msg` the text; both are borrowed for the duration of the call. The hook must
 * not call back into the connection layer.
 */
typedef void (*PqevDebugFn)(const char *name, const char *msg, void *arg);

/*
 * New limiter on `base` allowing at most `max_connecting` connection attempts at
 * once (0: no cap). Returns NULL on out-of-memory.
 */
PqevConnLimit *pqev_connlimit_new(struct event_base *base, unsigned max_connecting);

/*
 * Free the limiter. Every connection created on it must already be freed
 * (pqev_conn_free); otherwise -EBUSY is returned and nothing is freed. A
 * connection freed inside one of its own callbacks still counts until that
 * callback has returned, so from a callback defer this (e.g. event_base_once).
 * Never call it from a connection callback while that connection is alive.
 * Accepts NULL (returns 0).
 */
PQEV_MUSTCHECK int pqev_connlimit_free(PqevConnLimit *lim);

/* Change the cap (0: none). Raising it starts waiting connects on the next loop pass. */
void pqev_connlimit_set_max(PqevConnLimit *lim, unsigned max_connecting);

/* Set or clear (fn NULL) the debug hook. */
void pqev_connlimit_set_debug(PqevConnLimit *lim, PqevDebugFn fn, void *arg);

/* The loop this limiter belongs to (borrowed). */
struct event_base *pqev_connlimit_base(const PqevConnLimit *lim);

/* Counters: attempts holding a slot now, waiting for one, the most ever held at once. */
unsigned pqev_connlimit_active(const PqevConnLimit *lim);
unsigned pqev_connlimit_waiting(const PqevConnLimit *lim);
unsigned pqev_connlimit_peak(const PqevConnLimit *lim);

#ifdef __cplusplus
}
#endif

#endif
