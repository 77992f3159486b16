/*
 * Core calls that only a daemon (a process of its own) makes: ending every
 * session at exit in one pass, and one report per server outage. Not
 * installed: libpgqev's users never need them, and the installed headers
 * declare exactly what libpgqev exports.
 */
#ifndef PGQEV_PQEV_DAEMON_H
#define PGQEV_PQEV_DAEMON_H

#include <pgqd-ev/pqev_conn.h>
#include <pgqd-ev/pqev_connlimit.h>

/*
 * For a single-threaded process about to exit. After pqev_conn_defer_finish(),
 * closing or freeing a connection does all its own work but keeps the libpq
 * session open; pqev_conn_finish_deferred() then frees every such session's
 * libpq memory in one pass, leaves its socket open for the process exit to
 * close, and returns how many. Ending a session (a Terminate message, a close)
 * wakes its backend, and where the server shares the CPU, each woken backend
 * runs before the closer gets the CPU back: 1,000 of them took seconds. The
 * exit closes every socket in the kernel in one pass instead, and an idle
 * backend ends on the end of its input as on a Terminate message. Nothing may
 * use the connection layer afterwards. Process-wide; not for a library in
 * someone else's process.
 */
void pqev_conn_defer_finish(void);
unsigned pqev_conn_finish_deferred(void);

/*
 * Server outages, one report each instead of one per connection. A server is a
 * connection target (host, hostaddr, port) of this limiter; it is down from the
 * first failure that says so (see "Server-level failures" in pqev_conn.h) until
 * any attempt reaches it again.
 * - down = true: it has stayed down for PQEV_SERVER_REPORT_DELAY; `waiting` is
 *   how many connections wait for it by then (the one probing it included),
 *   `error` the last failure.
 * - down = false: it answers again; `waiting` connections reconnect now (the
 *   one whose attempt found it back included, if it was waiting too),
 *   `down_for` is the outage's length, `reported` whether a down report was made
 *   (false: the outage was shorter than the delay and this is its only report).
 * `target` names the server ("host=... port=...", never a password). Every
 * string is borrowed for the call; the hook must not call into the connection
 * layer.
 */
#define PQEV_SERVER_REPORT_DELAY (1 * USEC_PER_SEC)
typedef struct PqevServerEvent {
	bool down;
	bool reported;
	const char *target;
	const char *error;
	unsigned waiting;
	usec_t down_for;
} PqevServerEvent;
typedef void (*PqevServerFn)(const PqevServerEvent *ev, void *arg);

/* Set or clear (fn NULL) the outage hook. */
void pqev_connlimit_set_server_hook(PqevConnLimit *lim, PqevServerFn fn, void *arg);

#endif
