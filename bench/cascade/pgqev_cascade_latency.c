/*
 * bench/cascade: both ends of the latency run (bench/cascade/latency). A
 * producer process inserts RATE events/s into the root's queue (autocommit,
 * each carrying its wall clock in microseconds taken right before the insert)
 * for WARMUP + SECONDS seconds; a libpgqev leaf worker's on_batch records
 * now - that for the events produced after WARMUP, then prints
 * "events=N p50_ms=.. p90_ms=.. p99_ms=.. max_ms=..".
 *
 *   pgqev_cascade_latency ROOT_CONNSTR LEAF_CONNSTR QUEUE RATE SECONDS [WARMUP]
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include <event2/event.h>

#include <pgqd-ev/pgqev_cascade.h>

static struct event_base *base;
static double *lat;
static size_t n, cap;
static double t_start, t_rec, t_end;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void producer(const char *conninfo, const char *queue, int rate, double seconds)
{
	PGconn *c = PQconnectdb(conninfo);
	if (PQstatus(c) != CONNECTION_OK)
		_exit(1);
	double t0 = now_s();
	int64_t total = (int64_t)((double)rate * seconds);
	for (int64_t i = 0; i < total; i++) {
		double due = t0 + (double)i / rate, now = now_s();
		if (due > now)
			usleep((useconds_t)((due - now) * 1e6));
		char data[32];
		snprintf(data, sizeof(data), "%lld", (long long)(now_s() * 1e6));
		const char *p[2] = {queue, data};
		PQclear(PQexecParams(c, "select pgq.insert_event($1, 'lat', $2)", 2, NULL, p, NULL,
				     NULL, 0));
	}
	PQfinish(c);
	_exit(0);
}

static void on_error(PgqevCascade *cw, const PgqevError *err, void *arg)
{
	fprintf(stderr, "%s\n", err->message);
}

static PgqevVerdict on_batch(PgqevCascade *cw, PgqevBatch *b, void *arg)
{
	double now = now_s();
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		PgqevEvent *e = pgqev_batch_event(b, i);
		const char *type = pgqev_event_type(e), *data = pgqev_event_data(e);
		if (!type || !data || type[0] != 'l')
			continue; /* the cascade's own pgq.* events */
		if ((double)strtoll(data, NULL, 10) / 1e6 < t_rec)
			continue; /* produced during the warm-up */
		if (n == cap) {
			cap = cap ? cap * 2 : 1 << 16;
			lat = realloc(lat, cap * sizeof(*lat));
			if (!lat)
				abort();
		}
		lat[n++] = (now - (double)strtoll(data, NULL, 10) / 1e6) * 1e3;
	}
	return PGQEV_DONE;
}

static void check(evutil_socket_t fd, short what, void *arg)
{
	if (now_s() >= t_end)
		event_base_loopbreak(base);
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double p)
{
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);
	return lat[i];
}

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: %s ROOT_CONNSTR LEAF_CONNSTR QUEUE RATE SECONDS [WARMUP]\n",
			argv[0]);
		return 2;
	}
	int rate = atoi(argv[4]);
	double secs = atof(argv[5]), warm = argc > 6 ? atof(argv[6]) : 3;
	base = event_base_new();
	PgqevCascadeConfig cfg;
	pgqev_cascade_config_init(&cfg);
	cfg.conninfo = argv[2];
	cfg.queue = argv[3];
	cfg.on_batch = on_batch;
	cfg.on_error = on_error;
	char eb[256];
	PgqevCascade *w = pgqev_cascade_new(base, &cfg, eb, sizeof(eb));
	if (!w) {
		fprintf(stderr, "%s\n", eb);
		return 1;
	}
	struct event *tm = event_new(base, -1, EV_PERSIST, check, NULL);
	struct timeval tv = {0, 100000};
	event_add(tm, &tv);
	if (pgqev_cascade_start(w) != 0)
		return 1;
	t_start = now_s();
	t_rec = t_start + warm;
	t_end = t_rec + secs + 2; /* the last events' way through */
	pid_t pp = fork();
	if (pp == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		producer(argv[1], argv[3], rate, warm + secs);
	}
	event_base_dispatch(base);
	waitpid(pp, NULL, 0);
	if (n == 0) {
		printf("events=0\n");
		return 1;
	}
	qsort(lat, n, sizeof(*lat), cmp);
	printf("rate=%d events=%zu p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f\n", rate, n,
	       pct(0.5), pct(0.9), pct(0.99), lat[n - 1]);
	event_free(tm);
	pgqev_cascade_free(w);
	event_base_free(base);
	free(lat);
	return 0;
}
