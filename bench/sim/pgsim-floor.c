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
 *   floor n=N rss_before_kb=A rss_after_kb=B kb_per_conn=C malloc_kb_per_conn=D failed=F
 * (D: bytes malloc'd per session, touched or not; libpq allocates 16 KB input
 * and output buffers per session, of which only the pages used count in RSS)
 */
#include <malloc.h>
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
	for (int i = 1, s = 0; i <= count; i++) {
		char ci[512];

		while ((long)(s + 1) * n / m < i)
			s++;
		snprintf(ci, sizeof(ci), "host=%s port=%d user=postgres dbname=db%d", argv[1],
			 atoi(argv[2]) + s, i);
		conns[i - 1] = PQconnectdb(ci);
		if (PQstatus(conns[i - 1]) != CONNECTION_OK) {
			if (failed++ == 0)
				fprintf(stderr, "pgsim-floor: db%d: %s", i,
					PQerrorMessage(conns[i - 1]));
			continue;
		}
		if (argc > 5)
			PQclear(PQexec(conns[i - 1], argv[5]));
	}
	after = rss_kb();
	heap1 = mallinfo2().uordblks + mallinfo2().hblkhd;
	printf("floor n=%d rss_before_kb=%ld rss_after_kb=%ld kb_per_conn=%.2f "
	       "malloc_kb_per_conn=%.2f failed=%d\n",
	       count, before, after, (double)(after - before) / count,
	       (double)(heap1 - heap0) / 1024.0 / count, failed);
	fflush(stdout);
	/* hold the sessions until told to stop, so the simulator's figures can be read */
	if (getenv("FLOOR_HOLD"))
		getchar();
	for (int i = 0; i < count; i++)
		PQfinish(conns[i]);
	free(conns);
	return failed ? 1 : 0;
}
