/*
 * Process signals through the event loop (evsignal): no work in real signal
 * handlers.
 *
 *   SIGHUP              -> on_reload
 *   SIGTERM or SIGINT   -> on_graceful_stop, the first time
 *   a second one        -> on_immediate_stop (the "stop now" escape hatch)
 *   SIGPIPE             -> ignored (SIG_IGN) while the handle exists
 *
 * Callbacks run on the loop thread, from the loop, with the signal number and
 * the caller's argument; they may free the PqevSignals handle.
 */
#ifndef PGQEV_PQEV_SIGNAL_H
#define PGQEV_PQEV_SIGNAL_H

#include <pgqd-ev/pqev_common.h>

struct event_base;

typedef struct PqevSignals PqevSignals;

typedef void (*PqevSignalFn)(int signo, void *arg);

typedef struct PqevSignalHandlers {
	PqevSignalFn on_reload;         /* SIGHUP; NULL: ignored */
	PqevSignalFn on_graceful_stop;  /* first SIGTERM/SIGINT; NULL: event_base_loopexit */
	PqevSignalFn on_immediate_stop; /* second one; NULL: event_base_loopbreak */
	void *arg;                      /* passed to every callback */
} PqevSignalHandlers;

/*
 * Register the signal events on `base` (borrowed; must outlive the handle) and
 * ignore SIGPIPE. `h` is copied. Returns NULL with errno set on failure.
 * Create the base after any daemonize fork.
 */
PqevSignals *pqev_signals_new(struct event_base *base, const PqevSignalHandlers *h);

/* Remove the events and restore SIGPIPE's previous disposition. NULL allowed;
 * returns NULL. */
PqevSignals *pqev_signals_free(PqevSignals *s);

/* Stop signals received so far (0, 1, 2, ...). */
unsigned pqev_signals_stop_count(const PqevSignals *s);

#endif
