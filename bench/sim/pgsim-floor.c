/*
 * pgsim-floor: the memory floor of bench/sim/run. A bare libpq client that opens
 * one idle session to each of N simulated databases (pgsim's layout: db<i> on
 * server s for i in s*N/M+1 .. (s+1)*N/M, port P+s) and reports its own RSS
 * before and after, so the daemon's RSS per database can be given as a ratio to
 * what libpq alone costs per session in the same run.
 *
 *   pgsim-floor HOST PORT N M [QUERY]
 *
 * With QUERY, each session runs it once after connecting (so libpq's buffers
 * have carried a reply, as a ticking session's have). env FLOOR_COUNT=K opens
 * sessions to the first K databases only (a descriptor limit below N). Prints
 * one line (n: the sessions opened):
 *   floor n=N rss_before_kb=A rss_after_kb=B kb_per_conn=C malloc_kb_per_conn=D failed=F cpu_ms=E
 * (D: bytes malloc'd per session, touched or not; libpq allocates 16 KB input
 * and output buffers per session, of which only the pages used count in RSS;
 * E: its own CPU time since it started)
 *
 * env FLOOR_PARALLEL=K: up to K sessions connecting (and then running QUERY) at
 * once over nonblocking libpq, as the daemon does with max_connecting, instead
 * of one after another; then a QUERY that fails counts in F too (one after
 * another, only a failed connection does). bench/sim/check-real calibrates the
 * simulator's session start with it: on 2 cores, 20 session starts at once
 * cost the server more CPU each than one at a time (docs/benchmarks.md).
 */
#include <malloc.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <libpq-fe.h>

static long rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "VmRSS:", 6) == 0)
			kb = strtol(line + 6, NULL, 10);
	fclose(f);
	return kb;
}

static double cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec * 1e3 + ru.ru_utime.tv_usec / 1e3 + ru.ru_stime.tv_sec * 1e3 +
	       ru.ru_stime.tv_usec / 1e3;
}

/* The conninfo of database db<i>: on server s, port + s, in pgsim's layout of n
   databases on m servers (s*n/m+1 .. (s+1)*n/m). */
static void db_conninfo(char *ci, size_t size, const char *host, int port, int n, int m, int i)
{
	int s = 0;

	while ((long)(s + 1) * n / m < i)
		s++;
	snprintf(ci, size, "host=%s port=%d user=postgres dbname=db%d", host, port + s, i);
}

/* Open sessions to databases 1..count one after another. */
static void open_serial(PGconn **conns, const char *host, int port, int n, int m, int count,
			const char *query, int *failed)
{
	for (int i = 1; i <= count; i++) {
		char ci[512];

		db_conninfo(ci, sizeof(ci), host, port, n, m, i);
		conns[i - 1] = PQconnectdb(ci);
		if (PQstatus(conns[i - 1]) != CONNECTION_OK) {
			if ((*failed)++ == 0)
				fprintf(stderr, "pgsim-floor: db%d: %s", i,
					PQerrorMessage(conns[i - 1]));
			continue;
		}
		if (query)
			PQclear(PQexec(conns[i - 1], query));
	}
}

/* Slot of a session being opened in parallel: connecting, then its query. */
typedef struct Opening {
	PGconn *conn;
	int db;
	bool querying;
	PostgresPollingStatusType poll;
} Opening;

/* Ends slot o: its session counts as opened or failed; true if opened. */
static bool opening_done(Opening *o, bool ok, int *failed)
{
	if (!ok && (*failed)++ == 0)
		fprintf(stderr, "pgsim-floor: db%d: %s", o->db, PQerrorMessage(o->conn));
	o->conn = NULL;
	return ok;
}

/* Advance slot o after its socket was ready; false while it goes on. */
static bool opening_step(Opening *o, const char *query, int *failed, bool *ok)
{
	PGresult *r;

	if (!o->querying) {
		o->poll = PQconnectPoll(o->conn);
		if (o->poll == PGRES_POLLING_FAILED) {
			*ok = opening_done(o, false, failed);
			return true;
		}
		if (o->poll != PGRES_POLLING_OK)
			return false;
		if (!query) {
			*ok = opening_done(o, true, failed);
			return true;
		}
		o->querying = true;
		if (!PQsendQuery(o->conn, query)) {
			*ok = opening_done(o, false, failed);
			return true;
		}
		return false;
	}
	if (!PQconsumeInput(o->conn)) {
		*ok = opening_done(o, false, failed);
		return true;
	}
	while (!PQisBusy(o->conn)) {
		r = PQgetResult(o->conn);
		if (!r) {
			*ok = opening_done(o, true, failed);
			return true;
		}
		if (PQresultStatus(r) == PGRES_FATAL_ERROR)
			(*failed)++;
		PQclear(r);
	}
	return false;
}

/* Open sessions to databases 1..count, up to k at once; conns[i] is db i+1's
   session (NULL if it failed). */
static void open_parallel(PGconn **conns, const char *host, int port, int n, int m, int count,
			  int k, const char *query, int *failed)
{
	Opening *slot = calloc((size_t)k, sizeof(*slot));
	struct pollfd *pfd = calloc((size_t)k, sizeof(*pfd));
	int next = 0, busy = 0;

	if (!slot || !pfd) {
		fprintf(stderr, "pgsim-floor: out of memory\n");
		exit(1);
	}
	while (next < count || busy > 0) {
		for (int j = 0; j < k && next < count; j++) {
			char ci[512];

			if (slot[j].conn)
				continue;
			db_conninfo(ci, sizeof(ci), host, port, n, m, next + 1);
			slot[j] = (Opening){.conn = PQconnectStart(ci),
					    .db = next + 1,
					    .poll = PGRES_POLLING_WRITING};
			conns[next++] = slot[j].conn;
			if (!slot[j].conn || PQstatus(slot[j].conn) == CONNECTION_BAD) {
				if (slot[j].conn)
					opening_done(&slot[j], false, failed);
				else
					(*failed)++;
				PQfinish(conns[next - 1]);
				conns[next - 1] = NULL;
				continue;
			}
			busy++;
		}
		for (int j = 0; j < k; j++) {
			pfd[j].fd = slot[j].conn ? PQsocket(slot[j].conn) : -1;
			pfd[j].events = slot[j].querying || slot[j].poll == PGRES_POLLING_READING
						? POLLIN
						: POLLOUT;
			pfd[j].revents = 0;
		}
		if (busy > 0 && poll(pfd, (nfds_t)k, -1) < 0)
			continue;
		for (int j = 0; j < k; j++) {
			bool ok;

			if (slot[j].conn && pfd[j].revents &&
			    opening_step(&slot[j], query, failed, &ok)) {
				busy--;
				if (!ok) {
					PQfinish(conns[slot[j].db - 1]);
					conns[slot[j].db - 1] = NULL;
				}
			}
		}
	}
	free(slot);
	free(pfd);
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	long before, after;
	size_t heap0, heap1;
	int n, m, count, failed = 0;
	PGconn **conns;

	if (argc < 5) {
		fprintf(stderr, "usage: pgsim-floor HOST PORT N M [QUERY]\n");
		return 2;
	}
	n = atoi(argv[3]);
	m = atoi(argv[4]);
	count = n;
	if (n <= 0 || m <= 0) {
		fprintf(stderr, "pgsim-floor: N and M must be positive\n");
		return 2;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getenv("FLOOR_COUNT")) {
		int k = atoi(getenv("FLOOR_COUNT"));

		if (k > 0 && k < n)
			count = k;
	}
	conns = calloc((size_t)n, sizeof(*conns));
	if (!conns)
		return 1;
	/* libpq's own start-up allocations (one session opened and closed) are
	   not per-connection: take them before the baseline */
	PQfinish(PQconnectdb("dbname=none connect_timeout=1"));
	before = rss_kb();
	heap0 = mallinfo2().uordblks + mallinfo2().hblkhd;
	if (getenv("FLOOR_PARALLEL") && atoi(getenv("FLOOR_PARALLEL")) > 1)
		open_parallel(conns, argv[1], atoi(argv[2]), n, m, count,
			      atoi(getenv("FLOOR_PARALLEL")), argc > 5 ? argv[5] : NULL, &failed);
	else
		open_serial(conns, argv[1], atoi(argv[2]), n, m, count, argc > 5 ? argv[5] : NULL,
			    &failed);
	after = rss_kb();
	heap1 = mallinfo2().uordblks + mallinfo2().hblkhd;
	printf("floor n=%d rss_before_kb=%ld rss_after_kb=%ld kb_per_conn=%.2f "
	       "malloc_kb_per_conn=%.2f failed=%d cpu_ms=%.1f\n",
	       count, before, after, (double)(after - before) / count,
	       (double)(heap1 - heap0) / 1024.0 / count, failed, cpu_ms());
	fflush(stdout);
	/* hold the sessions until told to stop, so the simulator's figures can be read */
	if (getenv("FLOOR_HOLD"))
		getchar();
	for (int i = 0; i < count; i++)
		if (conns[i])
			PQfinish(conns[i]);
	free(conns);
	return failed ? 1 : 0;
}
