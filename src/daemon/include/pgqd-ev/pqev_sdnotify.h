/*
 * The systemd notification protocol, written in-tree (no libsystemd): one
 * datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET (a path,
 * or "@name" for an abstract socket). Stateless; a socket is opened per message.
 * A send never blocks: when the listener's queue is full the message is dropped
 * and -EAGAIN returned, so an event loop is never stopped by a slow listener.
 *
 * Return convention (as sd_notify): > 0 sent, 0 when NOTIFY_SOCKET is unset (not
 * under systemd: nothing to do), negative errno on failure.
 *
 * With Type=notify-reload the daemon sends: READY=1 after the first config load
 * and loop setup; RELOADING=1 (with MONOTONIC_USEC) and READY=1 around each
 * reload; STOPPING=1 when a stop begins; WATCHDOG=1 from a timer when
 * pqev_sd_watchdog_interval() says so.
 */
#ifndef PGQEV_PQEV_SDNOTIFY_H
#define PGQEV_PQEV_SDNOTIFY_H

#include <stdbool.h>

#include <pgqd-ev/pqev_common.h>

/* Send `state` as is ("KEY=VALUE" lines separated by '\n'). */
int pqev_sd_notify(const char *state) PQEV_MUSTCHECK;
int pqev_sd_notifyf(const char *fmt, ...) PQEV_PRINTF(1, 2) PQEV_MUSTCHECK;

/* READY=1, plus STATUS= when status != NULL. */
int pqev_sd_ready(const char *status) PQEV_MUSTCHECK;
/* RELOADING=1 and MONOTONIC_USEC=<CLOCK_MONOTONIC now>, plus STATUS=. */
int pqev_sd_reloading(const char *status) PQEV_MUSTCHECK;
/* STOPPING=1, plus STATUS=. */
int pqev_sd_stopping(const char *status) PQEV_MUSTCHECK;
/* STATUS=<status>; newlines in status become spaces. */
int pqev_sd_status(const char *status) PQEV_MUSTCHECK;
/* WATCHDOG=1. */
int pqev_sd_watchdog(void) PQEV_MUSTCHECK;

/*
 * Watchdog: if $WATCHDOG_USEC is set (and $WATCHDOG_PID is unset or our pid),
 * store in *ping_interval how often to send WATCHDOG=1 (half the timeout, as
 * systemd recommends) and return 1; 0 if no watchdog; -EINVAL if the variables
 * are malformed.
 */
int pqev_sd_watchdog_interval(usec_t *ping_interval) PQEV_MUSTCHECK;

/* True if $NOTIFY_SOCKET is set. */
bool pqev_sd_enabled(void);

#endif
