/*
 * Capped exponential backoff with jitter (see pqev_backoff.h). xorshift64* is
 * plenty for spreading retries; nothing here needs cryptographic randomness.
 */
#include <time.h>

#include <pgqd-ev/pqev_backoff.h>

static uint64_t next_rand(PqevBackoff *b)
{
	uint64_t x = b->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	b->rng = x;
	return x * UINT64_C(2685821657736338717);
}

void pqev_backoff_init(PqevBackoff *b, usec_t base, usec_t cap, uint64_t seed)
{
	if (seed == 0) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)b;
	}
	b->base = base ? base : 1;
	b->cap = cap < b->base ? b->base : cap;
	b->failures = 0;
	b->rng = seed ? seed : UINT64_C(0x9E3779B97F4A7C15);
}

usec_t pqev_backoff_jitter(PqevBackoff *b, usec_t lo, usec_t hi)
{
	if (hi <= lo)
		return lo;
	return lo + next_rand(b) % (hi - lo + 1);
}

usec_t pqev_backoff_next(PqevBackoff *b)
{
	usec_t d = b->base;
	unsigned n = b->failures;
	/* double without overflow until the cap is reached */
	while (n-- > 0 && d < b->cap)
		d = d > b->cap / 2 ? b->cap : d * 2;
	if (d > b->cap)
		d = b->cap;
	if (b->failures < 64)
		b->failures++;
	return pqev_backoff_jitter(b, d / 2, d);
}

void pqev_backoff_reset(PqevBackoff *b)
{
	b->failures = 0;
}

bool pqev_backoff_failing(const PqevBackoff *b)
{
	return b->failures > 0;
}
