/*
 * The blocking runner: one consumer on a private event loop until SIGINT or
 * SIGTERM, which stop it gracefully (the batch in progress is finished first).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>

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
} Runner;

static void run_on_error(PgqevConsumer *c, const PgqevError *err, void *arg)
{
	Runner *r = arg;
	if (r->user_on_error)
		r->user_on_error(c, err, r->user_arg);
	else
		fprintf(stderr, "pgqev: %s\n", err->message);
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
	Runner r = {.user_on_batch = cfg->on_batch,
		    .user_on_error = cfg->on_error,
		    .user_on_state = cfg->on_state,
		    .user_arg = cfg->arg};
	PgqevConsumerConfig rc = *cfg;
	rc.on_batch = cfg->on_batch ? run_on_batch : NULL;
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
