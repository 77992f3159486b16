/*
 * Reconnect backoff: capped exponential with jitter, the one retry policy of
 * pgqd-ev. Delay n (n = 0, 1, ...) is drawn uniformly from [d/2, d] where
 * d = min(cap, base * 2^n): the first retry comes well under a second with the
 * default base, and hundreds of databases failing together spread out instead of
 * reconnecting in lockstep.
 *
 * PqevBackoff is a small value type owned by its user; no allocation.
 */
#ifndef PGQEV_PQEV_BACKOFF_H
#define PGQEV_PQEV_BACKOFF_H

#include <stdbool.h>

#include <pgqd-ev/pqev_common.h>

typedef struct PqevBackoff {
	usec_t base;       /* first delay's upper bound, > 0 */
	usec_t cap;        /* no delay exceeds this, >= base */
	unsigned failures; /* consecutive failures so far */
	uint64_t rng;      /* xorshift state, never 0 */
} PqevBackoff;

/* Initialise; seed 0 picks one from the clock and address. */
void pqev_backoff_init(PqevBackoff *b, usec_t base, usec_t cap, uint64_t seed);

/* Record a failure and return the delay before the next attempt. */
usec_t pqev_backoff_next(PqevBackoff *b);

/* Record a success: the next failure starts again from base. */
void pqev_backoff_reset(PqevBackoff *b);

/* True if at least one failure happened since the last reset. */
bool pqev_backoff_failing(const PqevBackoff *b);

/* Uniform random value in [lo, hi] from the backoff's generator (phase jitter). */
usec_t pqev_backoff_jitter(PqevBackoff *b, usec_t lo, usec_t hi);

#endif
