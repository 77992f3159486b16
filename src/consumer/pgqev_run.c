/*
 * The blocking runner: one consumer on a private event loop until SIGINT or
 * SIGTERM, which stop it gracefully (the batch in progress is finished first).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "pgqev_int.h"

typedef struct Runner {
	struct event_base *base;
	PgqevConsumer *c;
	PgqevBatchFn user_on_batch;
	PgqevErrorFn user_on_error;
	PgqevStateFn user_on_state;
	void *user_arg;
	int signals;
	char last[256]; /* detail of the last failure printed */
} Runner;

static bool power_of_two(unsigned n)
{
	return n && !(n & (n - 1));
}

/* The default error output: one line per failure with when it is retried; the
   same failure again only at streaks 2, 4, 8, ... so an outage does not flood. */
static void print_error(Runner *r, const PgqevError *err)
{
	bool same = strncmp(r->last, err->detail, sizeof(r->last) - 1) == 0;
	if (same && err->streak > 1 && !power_of_two(err->streak))
		return;
	snprintf(r->last, sizeof(r->last), "%s", err->detail);
	char when[64] = "";
	if (err->retry_in >= USEC_PER_SEC)
		snprintf(when, sizeof(when), "; retrying in %.1f s", (double)err->retry_in / 1e6);
	else if (err->retry_in > 0)
		snprintf(when, sizeof(when), "; retrying in %u ms",
			 (unsigned)((err->retry_in + 999) / USEC_PER_MSEC));
	if (err->streak > 1)
		fprintf(stderr, "pgqev: %s (failure %u in a row%s)\n", err->message, err->streak,
			when);
	else if (*when)
		fprintf(stderr, "pgqev: %s (%s)\n", err->message, when + 2);
	else
		fprintf(stderr, "pgqev: %s\n", err->message);
}

static void run_on_error(PgqevConsumer *c, const PgqevError *err, void *arg)
{
	Runner *r = arg;
	if (r->user_on_error)
		r->user_on_error(c, err, r->user_arg);
	else
		print_error(r, err);
}

static void run_on_state(PgqevConsumer *c, PgqevState old, PgqevState st, void *arg)
{
	Runner *r = arg;
	if (r->user_on_state)
		r->user_on_state(c, old, st, r->user_arg);
	if (st == PGQEV_STATE_STOPPED)
		event_base_loopbreak(r->base);
}

static PgqevVerdict run_on_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	Runner *r = arg;
	return r->user_on_batch(c, b, r->user_arg);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	Runner *r = arg;
	if (++r->signals > 1) {
		event_base_loopbreak(r->base); /* second signal: stop at once */
		return;
	}
	pgqev_consumer_stop(r->c);
}

int pgqev_run(const PgqevConsumerConfig *cfg)
{
	if (!cfg)
		return -EINVAL;
	/* the caller's struct may be shorter or longer than ours (see size) */
	PgqevConsumerConfig rc;
	pgqev_config_init(&rc);
	if (pqev_struct_in(&rc, sizeof(rc), cfg, cfg->size, 0) < 0) {
		fprintf(stderr, "pgqev: config: not filled by pgqev_config_init(), or sets fields "
				"this library does not know\n");
		return -EINVAL;
	}
	rc.size = sizeof(rc);
	Runner r = {.user_on_batch = rc.on_batch,
		    .user_on_error = rc.on_error,
		    .user_on_state = rc.on_state,
		    .user_arg = rc.arg};
	rc.on_batch = r.user_on_batch ? run_on_batch : NULL;
	rc.on_error = run_on_error;
	rc.on_state = run_on_state;
	rc.arg = &r;
	rc.limiter = NULL;
	r.base = event_base_new();
	if (!r.base)
		return -ENOMEM;
	char err[256];
	r.c = pgqev_consumer_new(r.base, &rc, err, sizeof(err));
	if (!r.c) {
		fprintf(stderr, "pgqev: %s\n", err);
		event_base_free(r.base);
		return -EINVAL;
	}
	struct event *sint = evsignal_new(r.base, SIGINT, on_signal, &r);
	struct event *sterm = evsignal_new(r.base, SIGTERM, on_signal, &r);
	int ret = -ENOMEM;
	if (sint && sterm && evsignal_add(sint, NULL) == 0 && evsignal_add(sterm, NULL) == 0) {
		ret = pgqev_consumer_start(r.c);
		if (ret == 0)
			event_base_dispatch(r.base);
	}
	pgqev_consumer_free(r.c);
	if (sint)
		event_free(sint);
	if (sterm)
		event_free(sterm);
	/* let deferred frees of the connection layer run */
	event_base_loop(r.base, EVLOOP_NONBLOCK);
	event_base_free(r.base);
	return ret;
}
