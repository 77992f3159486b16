/*
 * Common definitions of the pgqd-ev core library: the time type and the
 * attributes every public header uses.
 *
 * Error convention (whole library): functions that can fail return int, 0 on
 * success and a negative errno on failure, and are marked PQEV_MUSTCHECK;
 * predicates return bool; constructors return NULL on out-of-memory. Failures on
 * a connection arrive through its callback, with the text kept on the object.
 */
#ifndef PGQEV_PQEV_COMMON_H
#define PGQEV_PQEV_COMMON_H

#include <stdint.h>

/* Microseconds. Monotonic unless a name says otherwise. */
typedef uint64_t usec_t;

#define USEC_PER_MSEC ((usec_t)1000)
#define USEC_PER_SEC  ((usec_t)1000000)
#define USEC_INFINITY ((usec_t)UINT64_MAX)

#define PQEV_MUSTCHECK       __attribute__((warn_unused_result))
#define PQEV_PRINTF(fmt, va) __attribute__((format(printf, fmt, va)))

#endif
