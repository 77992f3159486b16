/*
 * Drain benchmark: consume one queue with a no-op handler until EXPECT events
 * were handled and their batches finished; print the rate and the peak RSS.
 *
 *   pgqev_drain CONNSTR QUEUE CONSUMER EXPECT [FETCH_SIZE [SPLIT_MIN_EVENTS]]
 *
 * SPLIT_MIN_EVENTS > 0: the split reader for batches at least that large.
 *
 * Output (one line): events=N seconds=S rate=R maxrss_kb=K chunks=C
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include <event2/event.h>

#include <pgqd-ev/pgqev_consumer.h>

typedef struct Drain {
	struct event_base *base;
	uint64_t expect, events, chunks;
} Drain;

static PgqevVerdict on_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	Drain *d = arg;
	size_t n = pgqev_batch_count(b);
	/* touch every event as a real handler would */
	for (size_t i = 0; i < n; i++)
		(void)pgqev_event_data(pgqev_batch_event(b, i));
	d->events += n;
	d->chunks++;
	return PGQEV_DONE;
}

static void on_state(PgqevConsumer *c, PgqevState old, PgqevState st, void *arg)
{
	Drain *d = arg;
	/* LISTENING or IDLE after PROCESSING: the batch was finished (committed) */
	if (old == PGQEV_STATE_PROCESSING &&
	    (st == PGQEV_STATE_LISTENING || st == PGQEV_STATE_IDLE) && d->events >= d->expect)
		event_base_loopbreak(d->base);
}

static void on_error(PgqevConsumer *c, const PgqevError *err, void *arg)
{
	fprintf(stderr, "pgqev_drain: %s\n", err->message);
}

static double now_sec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 5 || argc > 7) {
		fprintf(stderr,
			"usage: %s CONNSTR QUEUE CONSUMER EXPECT [FETCH_SIZE [SPLIT_MIN_EVENTS]]\n",
			argv[0]);
		return 2;
	}
	Drain d = {.base = event_base_new(), .expect = strtoull(argv[4], NULL, 10)};
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	cfg.conninfo = argv[1];
	cfg.queue = argv[2];
	cfg.consumer = argv[3];
	cfg.register_on_start = false;
	if (argc >= 6)
		cfg.fetch_size = (unsigned)atoi(argv[5]);
	if (argc == 7)
		cfg.split_min_events = (unsigned)atoi(argv[6]);
	cfg.on_batch = on_batch;
	cfg.on_state = on_state;
	cfg.on_error = on_error;
	cfg.arg = &d;
	char err[256];
	PgqevConsumer *c = pgqev_consumer_new(d.base, &cfg, err, sizeof(err));
	if (!c) {
		fprintf(stderr, "pgqev_drain: %s\n", err);
		return 1;
	}
	double t0 = now_sec();
	if (pgqev_consumer_start(c) < 0)
		return 1;
	event_base_dispatch(d.base);
	double secs = now_sec() - t0;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("events=%llu seconds=%.3f rate=%.0f maxrss_kb=%ld chunks=%llu\n",
	       (unsigned long long)d.events, secs, (double)d.events / secs, ru.ru_maxrss,
	       (unsigned long long)d.chunks);
	pgqev_consumer_free(c);
	event_base_loop(d.base, EVLOOP_NONBLOCK);
	event_base_free(d.base);
	return d.events >= d.expect ? 0 : 1;
}
