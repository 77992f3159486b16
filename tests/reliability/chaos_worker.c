/*
 * The processes of the fault-injection test (check_chaos.c): a producer or the
 * libpgqev consumers of one kind on one database, each recording what it did in
 * an append-only file that survives its own SIGKILL.
 *
 *   chaos_worker produce CONNSTR DBNO OUTFILE SEED
 *   chaos_worker consume KIND CONNSTR OUTFILE SEED     KIND: regular coop-a coop-b exact
 *
 * Producer: transactions of 1..500 events over the queues qa and qb, each event's
 * data a unique id, the ids inserted into chaos_committed in the same transaction
 * (so the table is the truth about what was committed); 10% rolled back on
 * purpose. Ends on SIGTERM, writing "P <committed> <rolled_back> <failed> <events>".
 *
 * Consumer lines: "B queue batch" at the first chunk of each delivery, "G queue
 * uid batch retry_count" per event handled, "R queue uid batch" per event put in
 * the retry queue, "F queue batch" when a chunk fails on purpose. The exactly-once
 * kind also writes each chunk's ids into chaos_exact through the target
 * transaction (pgq_ext). Ends (gracefully) on SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include <pgqd-ev/pgqev_consumer.h>

#define NQUEUES 2
static const char *const queues[NQUEUES] = {"qa", "qb"};

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: deterministic from the seed, good enough for choices */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static unsigned rnd_below(unsigned n)
{
	return (unsigned)(rnd() % n);
}

static int out_fd = -1;

/* One write(2) per record group: a SIGKILL never leaves half a group. */
static void out_write(const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(out_fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("chaos_worker: write");
			exit(3);
		}
		buf += n;
		len -= (size_t)n;
	}
}

/* One timestamped line on stderr (the worker's log file): what, then why. */
static void logmsg(const char *what, const char *why)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	fprintf(stderr, "%lld.%03ld %s: %s", (long long)ts.tv_sec, ts.tv_nsec / 1000000, what, why);
	if (!*why || why[strlen(why) - 1] != '\n')
		fputc('\n', stderr);
}

/* ---- producer ------------------------------------------------------------------ */

static volatile sig_atomic_t stop_flag;

static void on_term(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static bool exec_ok(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
	if (!ok)
		logmsg(sql, PQerrorMessage(c));
	PQclear(r);
	return ok;
}

/* Events of one transaction; returns false on any failure (then rolled back). */
static bool produce_txn(PGconn *c, uint64_t *next_uid, unsigned n, bool rollback)
{
	char *uids = malloc((size_t)n * 24 + 4), *qs = malloc((size_t)n * 4 + 4);
	size_t ul = 0, ql = 0;
	bool ok = exec_ok(c, "begin");
	unsigned bulk_q = rnd_below(NQUEUES);
	PgqevBulk *bulk = NULL;

	uids[ul++] = '{';
	qs[ql++] = '{';
	if (ok && n > 50) {
		/* a big transaction goes through COPY into one queue */
		bulk = pgqev_bulk_begin(c, queues[bulk_q], NULL);
		ok = bulk != NULL;
		if (!ok)
			logmsg("bulk_begin", PQerrorMessage(c));
	}
	for (unsigned i = 0; ok && i < n; i++) {
		char data[24];
		unsigned q = bulk ? bulk_q : rnd_below(NQUEUES);
		uint64_t uid = (*next_uid)++;
		snprintf(data, sizeof(data), "%" PRIu64, uid);
		if (bulk)
			ok = pgqev_bulk_add(bulk, "chaos", data, NULL) == 0;
		else
			ok = pgqev_insert_event(c, queues[q], "chaos", data, NULL, NULL) == 0;
		if (!ok)
			logmsg("insert", PQerrorMessage(c));
		ul += (size_t)sprintf(uids + ul, "%s%s", i ? "," : "", data);
		ql += (size_t)sprintf(qs + ql, "%s%s", i ? "," : "", queues[q]);
	}
	if (bulk) {
		uint64_t cnt = 0;
		if (ok) {
			ok = pgqev_bulk_end(bulk, &cnt) == 0 && cnt == n;
			if (!ok)
				logmsg("bulk_end", PQerrorMessage(c));
		} else {
			pgqev_bulk_abort(bulk);
		}
	}
	uids[ul++] = '}';
	uids[ul] = '\0';
	qs[ql++] = '}';
	qs[ql] = '\0';
	if (ok) {
		const char *p[2] = {uids, qs};
		PGresult *r = PQexecParams(c,
					   "insert into chaos_committed (uid, queue)"
					   " select unnest($1::bigint[]), unnest($2::text[])",
					   2, NULL, p, NULL, NULL, 0);
		ok = PQresultStatus(r) == PGRES_COMMAND_OK;
		if (!ok)
			logmsg("record", PQerrorMessage(c));
		PQclear(r);
	}
	free(uids);
	free(qs);
	if (ok && !rollback)
		return exec_ok(c, "commit");
	if (PQstatus(c) == CONNECTION_OK)
		(void)exec_ok(c, "rollback");
	return ok;
}

static int produce(const char *connstr, int dbno)
{
	uint64_t next_uid = ((uint64_t)(dbno + 1) << 40) + 1;
	unsigned long committed = 0, rolled_back = 0, failed = 0, events = 0;
	PGconn *c = NULL;
	char line[160];

	while (!stop_flag) {
		if (!c || PQstatus(c) != CONNECTION_OK) {
			if (c)
				PQfinish(c);
			c = PQconnectdb(connstr);
			if (PQstatus(c) != CONNECTION_OK) {
				usleep(50000); /* the server is away: pace the reconnects */
				continue;
			}
		}
		unsigned roll = rnd_below(100), n;
		unsigned size = rnd_below(100);
		n = size < 80   ? 1 + rnd_below(5)
		    : size < 97 ? 10 + rnd_below(40)
				: 200 + rnd_below(300);
		bool rollback = roll < 10;
		if (!produce_txn(c, &next_uid, n, rollback))
			failed++;
		else if (rollback)
			rolled_back++;
		else {
			committed++;
			events += n;
		}
		usleep(5000 + rnd_below(20000)); /* load pacing */
	}
	if (c)
		PQfinish(c);
	int len = snprintf(line, sizeof(line), "P %lu %lu %lu %lu\n", committed, rolled_back,
			   failed, events);
	out_write(line, (size_t)len);
	return 0;
}

/* ---- consumers ----------------------------------------------------------------- */

typedef enum Kind { K_REGULAR, K_COOP_A, K_COOP_B, K_EXACT } Kind;

static Kind kind;
static struct event_base *base;
static PgqevConsumer *cons[NQUEUES];
static int running;

static PgqevVerdict on_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	const char *q = arg;
	size_t n = pgqev_batch_count(b);
	int64_t batch = pgqev_batch_id(b);
	char *buf = malloc(n * 64 + 128), *ids = malloc(n * 24 + 4);
	size_t len = 0, il = 0;
	bool fail = rnd_below(100) < 3;
	(void)c;

	if (pgqev_batch_chunk(b) == 0)
		len += (size_t)sprintf(buf + len, "B %s %" PRId64 "\n", q, batch);
	ids[il++] = '{';
	for (size_t i = 0; i < n; i++) {
		PgqevEvent *e = pgqev_batch_event(b, i);
		const char *d = pgqev_event_data(e);
		int rc = pgqev_event_retry_count(e);
		if (kind != K_EXACT && rc < 2 && rnd_below(100) < 2) {
			pgqev_event_retry(e, 1);
			len += (size_t)sprintf(buf + len, "R %s %s %" PRId64 "\n", q, d ? d : "-",
					       batch);
			continue;
		}
		len += (size_t)sprintf(buf + len, "G %s %s %" PRId64 " %d\n", q, d ? d : "-", batch,
				       rc);
		il += (size_t)sprintf(ids + il, "%s%s", il > 1 ? "," : "", d ? d : "0");
	}
	ids[il++] = '}';
	ids[il] = '\0';
	if (fail)
		len += (size_t)sprintf(buf + len, "F %s %" PRId64 "\n", q, batch);
	out_write(buf, len);
	free(buf);
	PgqevVerdict v = fail ? PGQEV_FAIL : PGQEV_DONE;
	if (kind == K_EXACT && !fail) {
		char bs[24];
		snprintf(bs, sizeof(bs), "%" PRId64, batch);
		const char *p[3] = {q, ids, bs};
		if (pgqev_batch_target_exec(b,
					    "insert into chaos_exact (queue, uid, batch)"
					    " select $1, unnest($2::bigint[]), $3::bigint",
					    3, p) < 0)
			v = PGQEV_FAIL;
	}
	free(ids);
	return v;
}

static void on_error(PgqevConsumer *c, const PgqevError *err, void *arg)
{
	(void)c;
	(void)arg;
	logmsg("error", err->message);
}

static void on_state(PgqevConsumer *c, PgqevState old, PgqevState st, void *arg)
{
	(void)c;
	(void)old;
	(void)arg;
	if (st == PGQEV_STATE_STOPPED && --running == 0)
		event_base_loopbreak(base);
}

static void on_sigterm(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	for (int i = 0; i < NQUEUES; i++)
		pgqev_consumer_stop(cons[i]);
}

static int consume(const char *kname, const char *connstr)
{
	char err[512];
	struct event *sig;

	if (strcmp(kname, "regular") == 0)
		kind = K_REGULAR;
	else if (strcmp(kname, "coop-a") == 0)
		kind = K_COOP_A;
	else if (strcmp(kname, "coop-b") == 0)
		kind = K_COOP_B;
	else if (strcmp(kname, "exact") == 0)
		kind = K_EXACT;
	else {
		fprintf(stderr, "chaos_worker: unknown consumer kind %s\n", kname);
		return 2;
	}
	base = event_base_new();
	for (int i = 0; i < NQUEUES; i++) {
		PgqevConsumerConfig cfg;
		pgqev_config_init(&cfg);
		cfg.conninfo = connstr;
		cfg.queue = queues[i];
		/* one exactly-once name on both queues into one target: the
		   library keys pgq_ext by queue and consumer (this found the
		   duplicates when it keyed by consumer alone) */
		cfg.consumer = kind == K_REGULAR ? "c_regular"
			       : kind == K_EXACT ? "c_exact"
						 : "c_coop";
		if (kind == K_COOP_A || kind == K_COOP_B) {
			cfg.subconsumer = kind == K_COOP_A ? "a" : "b";
			cfg.dead_interval = 3 * PGQEV_USEC_PER_SEC;
		}
		if (kind == K_EXACT)
			cfg.target_conninfo = connstr;
		cfg.fetch_size = 100;
		cfg.fail_delay = 100 * PGQEV_USEC_PER_MSEC;
		cfg.fail_cap = 2 * PGQEV_USEC_PER_SEC;
		cfg.retry_delay = 1;
		cfg.poll_interval = 2 * PGQEV_USEC_PER_SEC;
		cfg.connect_timeout = 5 * PGQEV_USEC_PER_SEC;
		cfg.on_batch = on_batch;
		cfg.on_error = on_error;
		cfg.on_state = on_state;
		cfg.arg = (void *)queues[i];
		cons[i] = pgqev_consumer_new(base, &cfg, err, sizeof(err));
		if (!cons[i]) {
			fprintf(stderr, "chaos_worker: %s\n", err);
			return 2;
		}
		if (pgqev_consumer_start(cons[i]) != 0) {
			fprintf(stderr, "chaos_worker: start failed\n");
			return 2;
		}
		running++;
	}
	sig = evsignal_new(base, SIGTERM, on_sigterm, NULL);
	event_add(sig, NULL);
	event_base_dispatch(base);
	event_free(sig);
	for (int i = 0; i < NQUEUES; i++)
		pgqev_consumer_free(cons[i]);
	event_base_free(base);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stderr, NULL, _IOLBF, 0);
	if (argc == 6 && strcmp(argv[1], "produce") == 0) {
		rng_state = strtoull(argv[5], NULL, 10) | 1;
		out_fd = open(argv[4], O_WRONLY | O_APPEND | O_CREAT, 0644);
		if (out_fd < 0) {
			perror(argv[4]);
			return 2;
		}
		struct sigaction sa = {.sa_handler = on_term};
		sigaction(SIGTERM, &sa, NULL);
		return produce(argv[2], atoi(argv[3]));
	}
	if (argc == 6 && strcmp(argv[1], "consume") == 0) {
		rng_state = strtoull(argv[5], NULL, 10) | 1;
		out_fd = open(argv[4], O_WRONLY | O_APPEND | O_CREAT, 0644);
		if (out_fd < 0) {
			perror(argv[4]);
			return 2;
		}
		return consume(argv[2], argv[3]);
	}
	fprintf(stderr, "usage: chaos_worker produce CONNSTR DBNO OUTFILE SEED\n"
			"       chaos_worker consume KIND CONNSTR OUTFILE SEED\n");
	return 2;
}
