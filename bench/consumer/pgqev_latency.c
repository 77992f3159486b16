/*
 * Commit-to-callback latency of libpgqev: a producer process inserts RATE
 * events/s for SECONDS, each carrying its send time (wall clock, microseconds,
 * taken just before the autocommit insert); the consumer records callback
 * time minus send time. With --tick-on-wake a third process plays the
 * low-latency ticker daemon: it LISTENs on pgq.wake and runs pgq.ticker() on
 * notifications, at most every 5 ms (use it when no ticker daemon runs).
 *
 *   pgqev_latency CONNSTR QUEUE CONSUMER RATE SECONDS [--tick-on-wake]
 *
 * Output: received=N sent=M p50_ms=.. p99_ms=.. max_ms=..; with LATENCY_SAMPLES=FILE
 * set, every sample (ms, sorted) is also written to FILE, one a line.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include <pgqd-ev/pgqev_consumer.h>

static int64_t wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void producer(const char *conninfo, const char *queue, int rate, int seconds)
{
	PGconn *c = PQconnectdb(conninfo);
	if (PQstatus(c) != CONNECTION_OK)
		_exit(1);
	int64_t t0 = wall_us(), total = (int64_t)rate * seconds;
	for (int64_t i = 0; i < total; i++) {
		int64_t due = t0 + i * 1000000 / rate, now = wall_us();
		if (due > now)
			usleep((useconds_t)(due - now));
		char data[32];
		snprintf(data, sizeof(data), "%lld", (long long)wall_us());
		const char *p[2] = {queue, data};
		PQclear(PQexecParams(c, "select pgq.insert_event($1, 'lat', $2)", 2, NULL, p, NULL,
				     NULL, 0));
	}
	PQfinish(c);
	_exit(0);
}

/* Tick on pgq.wake, at most once per 5 ms (bursts coalesce), as a daemon would. */
static void ticker_on_wake(const char *conninfo)
{
	PGconn *c = PQconnectdb(conninfo);
	if (PQstatus(c) != CONNECTION_OK)
		_exit(1);
	PQclear(PQexec(c, "listen \"pgq.wake\""));
	const int64_t gap = 5000;
	int64_t last = 0;
	bool pending = false;
	for (;;) {
		fd_set rd;
		FD_ZERO(&rd);
		FD_SET(PQsocket(c), &rd);
		struct timeval tv, *tvp = NULL;
		if (pending) {
			int64_t wait = last + gap - wall_us();
			if (wait < 0)
				wait = 0;
			tv.tv_sec = (time_t)(wait / 1000000);
			tv.tv_usec = (suseconds_t)(wait % 1000000);
			tvp = &tv;
		}
		if (select(PQsocket(c) + 1, &rd, NULL, NULL, tvp) > 0) {
			if (!PQconsumeInput(c))
				_exit(2);
			PGnotify *n;
			while ((n = PQnotifies(c)) != NULL) {
				PQfreemem(n);
				pending = true;
			}
		}
		if (pending && wall_us() - last >= gap) {
			last = wall_us();
			pending = false;
			PQclear(PQexec(c, "select pgq.ticker()"));
		}
	}
}

typedef struct Lat {
	int64_t *v;
	size_t n, cap;
} Lat;

static PgqevVerdict on_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	Lat *l = arg;
	int64_t now = wall_us();
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		if (l->n == l->cap) {
			l->cap = l->cap ? l->cap * 2 : 4096;
			l->v = realloc(l->v, l->cap * sizeof(int64_t));
		}
		l->v[l->n++] = now - atoll(pgqev_event_data(pgqev_batch_event(b, i)));
	}
	return PGQEV_DONE;
}

static void on_error(PgqevConsumer *c, const PgqevError *err, void *arg)
{
	fprintf(stderr, "pgqev_latency: %s\n", err->message);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

static int cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc < 6 || argc > 7) {
		fprintf(stderr, "usage: %s CONNSTR QUEUE CONSUMER RATE SECONDS [--tick-on-wake]\n",
			argv[0]);
		return 2;
	}
	int rate = atoi(argv[4]), seconds = atoi(argv[5]);
	bool tick = argc == 7 && strcmp(argv[6], "--tick-on-wake") == 0;
	struct event_base *base = event_base_new();
	Lat l = {0};
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	cfg.conninfo = argv[1];
	cfg.queue = argv[2];
	cfg.consumer = argv[3];
	cfg.on_batch = on_batch;
	cfg.on_error = on_error;
	cfg.arg = &l;
	PgqevConsumer *c = pgqev_consumer_new(base, &cfg, NULL, 0);
	if (!c || pgqev_consumer_start(c) < 0)
		return 1;
	/* settle: connected and idle before the producer starts */
	struct timeval settle = {1, 0};
	event_base_once(base, -1, EV_TIMEOUT, stop_cb, base, &settle);
	event_base_dispatch(base);
	l.n = 0;
	pid_t tp = 0;
	if (tick && (tp = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		ticker_on_wake(argv[1]);
	}
	pid_t pp = fork();
	if (pp == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		producer(argv[1], argv[2], rate, seconds);
	}
	struct timeval run = {seconds + 5, 0};
	event_base_once(base, -1, EV_TIMEOUT, stop_cb, base, &run);
	event_base_dispatch(base);
	waitpid(pp, NULL, 0);
	if (tp > 0) {
		kill(tp, SIGKILL);
		waitpid(tp, NULL, 0);
	}
	qsort(l.v, l.n, sizeof(int64_t), cmp);
	double p50 = l.n ? (double)l.v[l.n / 2] / 1000.0 : -1;
	double p99 = l.n ? (double)l.v[(size_t)((double)l.n * 0.99)] / 1000.0 : -1;
	double mx = l.n ? (double)l.v[l.n - 1] / 1000.0 : -1;
	printf("received=%zu sent=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n", l.n, rate * seconds,
	       p50, p99, mx);
	/* every sample in ms, sorted, one a line: for bench/run's distribution plot */
	const char *dump = getenv("LATENCY_SAMPLES");
	FILE *f = dump && *dump ? fopen(dump, "w") : NULL;
	if (f) {
		for (size_t i = 0; i < l.n; i++)
			fprintf(f, "%.3f\n", (double)l.v[i] / 1000.0);
		fclose(f);
	}
	pgqev_consumer_free(c);
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
	free(l.v);
	return 0;
}
