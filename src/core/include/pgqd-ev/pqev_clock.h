/*
 * Time: a monotonic microsecond clock cached once per event-loop pass, and
 * wall-clock helpers.
 *
 * How the cache follows the loop: pqev_clock_attach() remembers the event_base.
 * libevent refreshes its own time cache right after each wait for events; when
 * pqev_clock_now() sees that cache change, a new loop pass has started and it
 * reads CLOCK_MONOTONIC once; later calls in the same pass return the same value.
 * The loop owner therefore calls nothing per iteration, and every callback of
 * one pass sees one "now" (timers scheduled from it line up, no drift between
 * databases). Outside a loop pass (before the loop runs, or with no base
 * attached) every call reads the clock.
 *
 * NOTE: libevent reads CLOCK_MONOTONIC_COARSE by default (a 1-4 ms tick), so two
 * passes inside one tick would share a value; create the base with
 * pqev_clock_base_new() (EVENT_BASE_FLAG_PRECISE_TIMER), which also makes
 * libevent's own timers precise, as sub-second tick periods want.
 *
 * Process-wide state (one loop per process); not thread-safe.
 */
#ifndef PGQEV_PQEV_CLOCK_H
#define PGQEV_PQEV_CLOCK_H

#include <stddef.h>
#include <sys/time.h>

#include <pgqd-ev/pqev_common.h>

struct event_base;

/* A new event_base with a precise monotonic timer (NULL on failure). Caller frees
 * it with event_base_free(). */
struct event_base *pqev_clock_base_new(void);

/* Follow `base`'s loop passes (NULL detaches). The base is borrowed. */
void pqev_clock_attach(struct event_base *base);

/* Cached monotonic time, microseconds (CLOCK_MONOTONIC). */
usec_t pqev_clock_now(void);

/* Read CLOCK_MONOTONIC now, store it as this pass's value, return it (after a
 * long synchronous step such as loading a config). */
usec_t pqev_clock_refresh(void);

/* Uncached CLOCK_MONOTONIC in microseconds (what sd_notify MONOTONIC_USEC wants). */
usec_t pqev_clock_monotonic(void);

/* Wall clock: microseconds since the Unix epoch (CLOCK_REALTIME), uncached. */
usec_t pqev_clock_wall(void);

/* Monotonic instant `mono` expressed as wall-clock time (for reports). */
usec_t pqev_clock_mono_to_wall(usec_t mono);

/* Format wall time as ISO 8601 UTC with milliseconds, "2026-11-22T02:40:46.539Z".
 * Needs 25 bytes; returns the length written (0 if buf too small). */
size_t pqev_clock_format_iso(usec_t wall, char *buf, size_t bufsize);

/* Conversions. */
struct timeval pqev_usec_to_timeval(usec_t usec);
static inline double pqev_usec_to_sec(usec_t usec)
{
	return (double)usec / (double)USEC_PER_SEC;
}

#endif
