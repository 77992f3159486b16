/*
 * bench/cascade: run a libpgqev cascade worker on a branch until its position
 * reaches a tick, and print "events=N seconds=S rate=R" (events copied per
 * second, connecting included).
 *
 *   pgqev_cascade_copy CONNSTR QUEUE TARGET_TICK [FETCH]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <event2/event.h>

#include <pgqd-ev/pgqev_cascade.h>

static PgqevCascade *w;
static int64_t target;
static struct event_base *base;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_error(PgqevCascade *cw, const PgqevError *err, void *arg)
{
	fprintf(stderr, "%s\n", err->message);
}

static void check(evutil_socket_t fd, short what, void *arg)
{
	PgqevCascadeStats st;
	pgqev_cascade_stats(w, &st);
	if (st.completed_tick >= target)
		event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s CONNSTR QUEUE TARGET_TICK [FETCH]\n", argv[0]);
		return 2;
	}
	target = strtoll(argv[3], NULL, 10);
	base = event_base_new();
	PgqevCascadeConfig cfg;
	pgqev_cascade_config_init(&cfg);
	cfg.conninfo = argv[1];
	cfg.queue = argv[2];
	cfg.fetch_size = argc > 4 ? (unsigned)atoi(argv[4]) : 2000;
	cfg.poll_interval = 10000; /* 10 ms: PgQ 3.5 sends no tick notifications */
	cfg.on_error = on_error;
	char eb[256];
	w = pgqev_cascade_new(base, &cfg, eb, sizeof(eb));
	if (!w) {
		fprintf(stderr, "%s\n", eb);
		return 1;
	}
	struct event *tm = event_new(base, -1, EV_PERSIST, check, NULL);
	struct timeval tv = {0, 1000};
	event_add(tm, &tv);
	double t0 = now_s();
	if (pgqev_cascade_start(w) != 0)
		return 1;
	event_base_dispatch(base);
	double secs = now_s() - t0;
	PgqevCascadeStats st;
	pgqev_cascade_stats(w, &st);
	printf("events=%" PRIu64 " seconds=%.3f rate=%.0f\n", st.copied, secs,
	       (double)st.copied / secs);
	event_free(tm);
	pgqev_cascade_free(w);
	event_base_free(base);
	return 0;
}
