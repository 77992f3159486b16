/*
 * Every public function of libpgqev, called once for real from one program
 * that is valid C and C++ (built as both, in the tree and against the
 * installed library; see installed.sh). It talks to a live server:
 *
 *   api_all SOURCE_CONNSTR TARGET_CONNSTR
 *
 * SOURCE has queue "q" ticking on every pgq.ticker() call and is the root
 * node "api_root" of cascade "q" (pgq_node); TARGET has pgq_ext and a table
 * sink(v text). Prints "api_all: ok" and exits 0, or
 * names the first failed check and exits 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include <pgqd-ev/pgqev_cascade.h>
#include <pgqd-ev/pgqev_consumer.h>
#include <pgqd-ev/pgqev_version.h>

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond)) {                                                                    \
			fprintf(stderr, "api_all: %s:%d: check failed: %s\n", __FILE__, __LINE__, \
				#cond);                                                           \
			exit(1);                                                                  \
		}                                                                                 \
	} while (0)

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run the loop until *flag is set (30 s at most). */
static void run_until(struct event_base *base, const int *flag)
{
	long long deadline = now_ms() + 30000;
	while (!*flag && now_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	CHECK(*flag);
}

static void sql(PGconn *pg, const char *q)
{
	PGresult *r = PQexec(pg, q);
	if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
		fprintf(stderr, "api_all: %s: %s", q, PQerrorMessage(pg));
		exit(1);
	}
	PQclear(r);
}

/* ---- producer and admin helpers ---- */

static void producer(PGconn *pg)
{
	bool isnew = false;
	CHECK(pgqev_register(pg, "q", "api", NULL, 0, &isnew) == 0);
	CHECK(isnew);
	CHECK(pgqev_register(pg, "q", "gone", NULL, 0, NULL) == 0);
	CHECK(pgqev_unregister(pg, "q", "gone", NULL, false) == 0);
	const char *extra[4] = {"e1", NULL, "e3", "e4"};
	int64_t id = 0;
	CHECK(pgqev_insert_event(pg, "q", "single", "one", extra, &id) == 0);
	CHECK(id > 0);
	int err = 0;
	PgqevBulk *b = pgqev_bulk_begin(pg, "q", &err);
	CHECK(b != NULL);
	CHECK(pgqev_bulk_add(b, "bulk", "two", NULL) == 0);
	CHECK(pgqev_bulk_add(b, "bulk", "three", extra) == 0);
	uint64_t count = 0;
	CHECK(pgqev_bulk_end(b, &count) == 0);
	CHECK(count == 2);
	b = pgqev_bulk_begin(pg, "q", &err);
	CHECK(b != NULL);
	CHECK(pgqev_bulk_add(b, "bulk", "never", NULL) == 0);
	pgqev_bulk_abort(b);
	sql(pg, "select pgq.ticker()");
}

/* ---- the consumer ---- */

typedef struct ConsCtx {
	int events;
	int stopped;
	int errors;
	int queried;      /* the target query's on_done ran */
	char count[16];   /* what it read */
	PgqevBatch *held; /* the chunk left pending (async) */
	PgqevConsumer *c;
} ConsCtx;

/* A read in the batch's target transaction: sees the batch's own writes. */
static void on_target_count(PgqevTarget *t, const PGresult *res, const char *error, void *arg)
{
	ConsCtx *x = (ConsCtx *)arg;
	CHECK(error == NULL);
	CHECK(res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK);
	snprintf(x->count, sizeof(x->count), "%s", PQgetvalue(res, 0, 0));
	CHECK(strcmp(pgqev_target_label(t), "api-consumer/target") == 0);
	x->queried = 1;
}

static const char *const p_none[1] = {"none"};

static PgqevVerdict on_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	ConsCtx *x = (ConsCtx *)arg;
	CHECK(pgqev_batch_consumer(b) == c);
	CHECK(pgqev_batch_id(b) > 0);
	CHECK(pgqev_batch_tick(b) > pgqev_batch_prev_tick(b));
	CHECK(pgqev_batch_prev_tick_time(b) != NULL);
	CHECK(pgqev_batch_tick_time(b) != NULL);
	CHECK(pgqev_batch_chunk(b) == 0);
	CHECK(pgqev_batch_count(b) == 3);
	CHECK(pgqev_batch_event(b, 3) == NULL);
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		PgqevEvent *e = pgqev_batch_event(b, i);
		CHECK(pgqev_event_id(e) > 0);
		CHECK(pgqev_event_time(e) != NULL);
		CHECK(pgqev_event_txid(e) > 0);
		CHECK(pgqev_event_retry_count(e) == 0);
		CHECK(pgqev_event_type(e) != NULL);
		CHECK(pgqev_event_data_len(e) == strlen(pgqev_event_data(e)));
		if (strcmp(pgqev_event_type(e), "single") == 0) {
			CHECK(strcmp(pgqev_event_extra(e, 1), "e1") == 0);
			CHECK(pgqev_event_extra(e, 2) == NULL);
			CHECK(pgqev_event_extra(e, 5) == NULL);
			pgqev_event_retry(e, 3600); /* goes to the retry queue */
		}
		const char *p[1] = {pgqev_event_data(e)};
		CHECK(pgqev_batch_target_exec(b, "insert into sink values ($1)", 1, p) == 0);
		x->events++;
	}
	PgqevTarget *t = pgqev_batch_target(b);
	CHECK(t != NULL);
	CHECK(strcmp(pgqev_target_label(t), "api-consumer/target") == 0);
	char *lit = PQescapeLiteral(pgqev_target_pgconn(t), "it's", 4);
	CHECK(lit != NULL && strcmp(lit, "'it''s'") == 0);
	PQfreemem(lit);
	CHECK(pgqev_target_query(t, NULL, 0, NULL, on_target_count, x) == -EINVAL);
	CHECK(pgqev_target_query(t, "select count(*) from sink", 0, NULL, NULL, x) == -EINVAL);
	CHECK(pgqev_target_query(t, "select count(*) from sink where v <> $1", 1, p_none,
				 on_target_count, x) == 0);
	x->held = b;
	return PGQEV_PENDING;
}

static void on_error(PgqevConsumer *c, const PgqevError *err, void *arg)
{
	fprintf(stderr, "api_all: consumer error: %s\n", err->message);
	((ConsCtx *)arg)->errors++;
}

static void on_state(PgqevConsumer *c, PgqevState o, PgqevState n, void *arg)
{
	if (n == PGQEV_STATE_STOPPED)
		((ConsCtx *)arg)->stopped = 1;
}

static void consumer(struct event_base *base, const char *src, const char *tgt, PGconn *tpg)
{
	ConsCtx x;
	memset(&x, 0, sizeof(x));
	/* a limiter shared by the loop's consumers (here one) */
	PgqevLimiter *lim = pgqev_limiter_new(base, 4);
	CHECK(lim != NULL);
	pgqev_limiter_set_max(lim, 1);
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	CHECK(cfg.size == sizeof(cfg));
	cfg.conninfo = src;
	cfg.target_conninfo = tgt;
	cfg.queue = "q";
	cfg.consumer = "api";
	cfg.label = "api-consumer";
	cfg.async = true;
	cfg.limiter = lim;
	cfg.on_batch = on_batch;
	cfg.on_error = on_error;
	cfg.on_state = on_state;
	cfg.arg = &x;
	char eb[256];
	PgqevConsumer *c = pgqev_consumer_new(base, &cfg, eb, sizeof(eb));
	if (!c)
		fprintf(stderr, "api_all: %s\n", eb);
	CHECK(c != NULL);
	x.c = c;
	CHECK(strcmp(pgqev_consumer_label(c), "api-consumer") == 0);
	CHECK(pgqev_consumer_state(c) == PGQEV_STATE_STOPPED);
	CHECK(pgqev_consumer_start(c) == 0);
	CHECK(pgqev_consumer_start(c) == -EALREADY);
	pgqev_consumer_wake(c);
	long long deadline = now_ms() + 30000;
	while (!(x.held && x.queried) && now_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	CHECK(x.held != NULL);
	CHECK(x.queried);
	CHECK(strcmp(x.count, "3") == 0); /* the chunk's three writes, not committed yet */
	/* both connections are up: one attempt at a time (the cap), none now */
	CHECK(pgqev_limiter_peak(lim) == 1);
	CHECK(pgqev_limiter_active(lim) == 0);
	CHECK(pgqev_limiter_waiting(lim) == 0);
	CHECK(pgqev_consumer_state(c) == PGQEV_STATE_PROCESSING);
	CHECK(strcmp(pgqev_state_name(pgqev_consumer_state(c)), "processing") == 0);
	CHECK(pgqev_batch_complete(x.held, PGQEV_DONE) == 0);
	deadline = now_ms() + 30000;
	while (pgqev_consumer_batches(c) < 1 && now_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	CHECK(pgqev_consumer_batches(c) == 1);
	CHECK(pgqev_consumer_events(c) == 3);
	CHECK(x.errors == 0);
	pgqev_consumer_stop(c);
	run_until(base, &x.stopped);
	CHECK(pgqev_consumer_free(c) == NULL);
	event_base_loop(base, EVLOOP_NONBLOCK);
	CHECK(pgqev_limiter_free(lim) == 0);
	PGresult *r = PQexec(tpg, "select count(*) from sink");
	CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "3") == 0);
	PQclear(r);
}

/* ---- the cascade worker (a root: publishes the global watermark) ---- */

typedef struct CasCtx {
	int stopped;
	int errors;
} CasCtx;

static void cas_on_error(PgqevCascade *w, const PgqevError *err, void *arg)
{
	fprintf(stderr, "api_all: cascade error: %s\n", err->message);
	((CasCtx *)arg)->errors++;
}

static void cas_on_state(PgqevCascade *w, PgqevState o, PgqevState n, void *arg)
{
	if (n == PGQEV_STATE_STOPPED)
		((CasCtx *)arg)->stopped = 1;
}

static void cascade(struct event_base *base, const char *src)
{
	CasCtx x;
	memset(&x, 0, sizeof(x));
	PgqevCascadeConfig cfg;
	pgqev_cascade_config_init(&cfg);
	CHECK(cfg.size == sizeof(cfg));
	cfg.conninfo = src;
	cfg.queue = "q";
	cfg.node = "api_root";
	cfg.label = "api-cascade";
	cfg.on_error = cas_on_error;
	cfg.on_state = cas_on_state;
	cfg.arg = &x;
	char eb[256];
	PgqevCascade *w = pgqev_cascade_new(base, &cfg, eb, sizeof(eb));
	if (!w)
		fprintf(stderr, "api_all: %s\n", eb);
	CHECK(w != NULL);
	CHECK(strcmp(pgqev_cascade_label(w), "api-cascade") == 0);
	CHECK(pgqev_cascade_state(w) == PGQEV_STATE_STOPPED);
	CHECK(pgqev_cascade_node_type(w) == NULL);
	CHECK(pgqev_cascade_start(w) == 0);
	CHECK(pgqev_cascade_start(w) == -EALREADY);
	/* running: the node read as a root and the watermark published once */
	PgqevCascadeStats st;
	memset(&st, 0, sizeof(st));
	long long deadline = now_ms() + 30000;
	while (now_ms() < deadline) {
		pgqev_cascade_stats(w, &st);
		if (pgqev_cascade_state(w) == PGQEV_STATE_IDLE && st.last_progress != 0)
			break;
		event_base_loop(base, EVLOOP_ONCE);
	}
	CHECK(pgqev_cascade_state(w) == PGQEV_STATE_IDLE);
	CHECK(st.size == sizeof(st));
	CHECK(st.last_progress != 0);
	CHECK(st.errors == 0);
	CHECK(pgqev_cascade_node_type(w) != NULL);
	CHECK(strcmp(pgqev_cascade_node_type(w), "root") == 0);
	CHECK(pgqev_cascade_provider(w) == NULL); /* a root has none */
	pgqev_cascade_wake(w);
	CHECK(x.errors == 0);
	pgqev_cascade_stop(w);
	run_until(base, &x.stopped);
	CHECK(pgqev_cascade_state(w) == PGQEV_STATE_STOPPED);
	CHECK(pgqev_cascade_free(w) == NULL);
	event_base_loop(base, EVLOOP_NONBLOCK);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: api_all SOURCE_CONNSTR TARGET_CONNSTR\n");
		return 2;
	}
	CHECK(strcmp(pgqev_version(), PGQEV_VERSION_STRING) == 0);
	CHECK(PGQEV_VERSION_AT_LEAST(0, 0, 1));
	CHECK(PGQEV_USEC_PER_SEC == 1000 * PGQEV_USEC_PER_MSEC);
	PGconn *pg = PQconnectdb(argv[1]);
	PGconn *tpg = PQconnectdb(argv[2]);
	CHECK(PQstatus(pg) == CONNECTION_OK && PQstatus(tpg) == CONNECTION_OK);
	producer(pg);
	struct event_base *base = event_base_new();
	CHECK(base != NULL);
	consumer(base, argv[1], argv[2], tpg);
	/* the event marked for retry is in the retry queue */
	PGresult *r = PQexec(pg, "select count(*) from pgq.retry_queue");
	CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "1") == 0);
	PQclear(r);
	CHECK(pgqev_unregister(pg, "q", "api", NULL, false) == 0);
	cascade(base, argv[1]);
	/* the blocking runner refuses a config without a queue at once */
	PgqevConsumerConfig bad;
	pgqev_config_init(&bad);
	bad.conninfo = argv[1];
	CHECK(pgqev_run(&bad) == -EINVAL);
	event_base_free(base);
	PQfinish(pg);
	PQfinish(tpg);
	printf("api_all: ok\n");
	return 0;
}
