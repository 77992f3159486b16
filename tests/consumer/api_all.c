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

/* ---- the connection layer ---- */

typedef struct ConnCtx {
	int done;
	int canceled;
	int notified;
	int debug_lines;
	char value[64];
} ConnCtx;

static void on_debug(const char *name, const char *msg, void *arg)
{
	((ConnCtx *)arg)->debug_lines++;
}

static void on_query(PqevConn *c, const PqevReply *r, void *arg)
{
	ConnCtx *x = (ConnCtx *)arg;
	CHECK(r->status == PQEV_OK);
	CHECK(r->error == NULL);
	snprintf(x->value, sizeof(x->value), "%s", PQgetvalue(r->result, 0, 0));
	x->done++;
}

static void on_canceled(PqevConn *c, const PqevReply *r, void *arg)
{
	ConnCtx *x = (ConnCtx *)arg;
	CHECK(r->status == PQEV_CANCELED);
	x->canceled++;
}

static void on_notify(PqevConn *c, const char *channel, const char *payload, int pid, void *arg)
{
	if (strcmp(channel, "api_chan") == 0)
		((ConnCtx *)arg)->notified++;
}

static void connection_layer(struct event_base *base, const char *connstr)
{
	ConnCtx x;
	memset(&x, 0, sizeof(x));
	PqevConnLimit *lim = pqev_connlimit_new(base, 4);
	CHECK(lim != NULL);
	CHECK(pqev_connlimit_base(lim) == base);
	pqev_connlimit_set_max(lim, 2);
	pqev_connlimit_set_debug(lim, on_debug, &x);

	PqevConnConfig cfg;
	pqev_conn_config_init(&cfg);
	CHECK(cfg.size == sizeof(cfg));
	cfg.conninfo = connstr;
	cfg.name = "api";
	PqevConnCallbacks cb;
	memset(&cb, 0, sizeof(cb));
	cb.size = sizeof(cb);
	cb.on_notify = on_notify;
	cb.arg = &x;
	PqevConn *c = pqev_conn_new(lim, &cfg, &cb);
	CHECK(c != NULL);
	CHECK(pqev_conn_state(c) == PQEV_CONN_CLOSED);
	CHECK(strcmp(pqev_conn_state_name(PQEV_CONN_READY), "ready") == 0);
	CHECK(pqev_conn_start(c) == 0);
	CHECK(pqev_conn_listen(c, "api_chan") == 0);
	CHECK(pqev_conn_listening(c, "api_chan"));

	PqevQuery q;
	memset(&q, 0, sizeof(q));
	q.size = sizeof(q);
	q.sql = "select 'sent'";
	q.on_done = on_query;
	q.arg = &x;
	PqevReq *req = NULL;
	CHECK(pqev_conn_send(c, &q, &req) == 0);
	CHECK(req != NULL);
	/* a second request, cancelled before it is sent */
	q.on_done = on_canceled;
	CHECK(pqev_conn_send(c, &q, &req) == 0);
	CHECK(pqev_conn_pending(c) == 2);
	pqev_req_cancel(req);
	CHECK(x.canceled == 1);
	run_until(base, &x.done);
	CHECK(strcmp(x.value, "sent") == 0);
	CHECK(pqev_conn_is_ready(c));
	CHECK(pqev_conn_state(c) == PQEV_CONN_READY);
	CHECK(strcmp(pqev_conn_name(c), "api") == 0);
	CHECK(strcmp(pqev_conn_error(c), "") == 0);
	CHECK(pqev_conn_streak(c) == 0);
	CHECK(pqev_conn_backend_pid(c) > 0);
	CHECK(PQserverVersion(pqev_conn_pgconn(c)) > 0);
	CHECK(pqev_connlimit_peak(lim) >= 1);
	CHECK(pqev_connlimit_active(lim) == 0);
	CHECK(pqev_connlimit_waiting(lim) == 0);

	/* a notification to ourselves, then a query with parameters */
	const char *params[1] = {"api_chan"};
	CHECK(pqev_conn_query(c, "select pg_notify($1, 'hello')", 1, params, on_query, &x) == 0);
	run_until(base, &x.notified);
	CHECK(pqev_conn_unlisten(c, "api_chan") == 0);
	CHECK(!pqev_conn_listening(c, "api_chan"));

	/* new settings, applied by a reconnect */
	cfg.name = "api2";
	CHECK(pqev_conn_set_config(c, &cfg) == 0);
	pqev_conn_reconnect(c);
	x.done = 0;
	q.sql = "select 'again'";
	q.on_done = on_query;
	CHECK(pqev_conn_send(c, &q, NULL) == 0);
	run_until(base, &x.done);
	CHECK(strcmp(pqev_conn_name(c), "api2") == 0);
	CHECK(strcmp(pqev_status_name(PQEV_TIMEOUT), "timeout") == 0);
	CHECK(pqev_sqlstate_is_server_down("57P03") && !pqev_sqlstate_is_server_down("28P01"));
	CHECK(x.debug_lines > 0);
	pqev_conn_close(c);
	CHECK(pqev_conn_state(c) == PQEV_CONN_CLOSED);
	CHECK(pqev_conn_free(c) == NULL);
	event_base_loop(base, EVLOOP_NONBLOCK);
	CHECK(pqev_connlimit_free(lim) == 0);
}

/* ---- the consumer ---- */

typedef struct ConsCtx {
	int events;
	int stopped;
	int errors;
	PgqevBatch *held; /* the chunk left pending (async) */
	PgqevConsumer *c;
} ConsCtx;

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
	CHECK(pgqev_batch_target(b) != NULL);
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
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	CHECK(cfg.size == sizeof(cfg));
	cfg.conninfo = src;
	cfg.target_conninfo = tgt;
	cfg.queue = "q";
	cfg.consumer = "api";
	cfg.label = "api-consumer";
	cfg.async = true;
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
	while (!x.held && now_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	CHECK(x.held != NULL);
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
	PGconn *pg = PQconnectdb(argv[1]);
	PGconn *tpg = PQconnectdb(argv[2]);
	CHECK(PQstatus(pg) == CONNECTION_OK && PQstatus(tpg) == CONNECTION_OK);
	producer(pg);
	struct event_base *base = event_base_new();
	CHECK(base != NULL);
	connection_layer(base, argv[1]);
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
