/*
 * libpgqev against a private server: delivery exactly once across ticks and
 * rotations, retries, failing handlers, asynchronous completion, NOTIFY wake-up
 * and poll fallback, many consumers on one loop, producer encodings, streaming
 * a large batch in bounded chunks, config validation, stop and free from
 * callbacks, a batch's events in ev_id order where the tables' order differs
 * (our SQL and PgQ 3.5), a bulk COPY whose table is rotated away before its rows,
 * and the per-batch statements prepared once per session.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "constest.h"

static void setup(void)
{
	cs_setup();
}

static void teardown(void)
{
	cs_teardown();
}

static void exec_db(const char *db, const char *sql)
{
	PGconn *c = pgt_connect(db);
	pgt_exec(c, sql);
	PQfinish(c);
}

/* No libpgqev session is connected to database arg. */
static bool no_consumer_session(void *arg)
{
	char sql[300];
	snprintf(sql, sizeof(sql),
		 "select count(*) from pg_stat_activity where datname = '%s'"
		 " and application_name = 'pgqev-consumer'",
		 (const char *)arg);
	return pgt_int_db("postgres", sql) == 0;
}

START_TEST(test_every_event_once_across_ticks_and_rotations)
{
	const char *db = cs_db_with_queue("q");
	exec_db(db, "select pgq.set_queue_config('q', 'rotation_period', '0')");
	Rec r = {.name = "main"};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.fetch_size = 7; /* many chunks per batch */
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	cs_ticker(db, 30);
	PGconn *admin = pgt_connect(db);
	int64_t next = 0;
	int tables_seen = 0, last_table = -1;
	for (int round = 0; round < 10; round++) {
		int64_t n = (round % 2) ? 10 : 60; /* insert_event and COPY paths */
		cs_produce(db, "q", next, next + n);
		/* a rolled-back producer is never delivered */
		pgt_exec(admin, "begin");
		pgt_exec(admin, "select pgq.insert_event('q', 'num', '999999')");
		pgt_exec(admin, "rollback");
		next += n;
		CountCond cc = {&r, (size_t)next};
		ck_assert_msg(cs_run_until(cs_has_count, &cc, 20000), "round %d: got %zu of %lld",
			      round, r.n, (long long)next);
		pgt_exec(admin, "select pgq.maint_rotate_tables_step1('q')");
		pgt_exec(admin, "select pgq.maint_rotate_tables_step2()");
		int t = (int)pgt_int(admin, "select queue_cur_table from pgq.queue");
		if (t != last_table) {
			tables_seen++;
			last_table = t;
		}
	}
	/* everything ticked was delivered: the rolled-back events would be among it */
	Rec *all[1] = {&r};
	ck_assert(cs_run_until_drained(db, "q", all, 1, 20000));
	cs_assert_exactly_once(&r, 0, next);
	ck_assert_int_ge(tables_seen, 3); /* the event tables rotated */
	ck_assert_uint_eq(r.max_chunk, 7);
	ck_assert_int_eq(r.errors[PGQEV_ERR_HANDLER] + r.errors[PGQEV_ERR_SQL], 0);
	ck_assert_uint_ge(pgqev_consumer_batches(r.c), 10);
	PQfinish(admin);
	rec_free(&r);
}
END_TEST

static PgqevVerdict retry_even_once(Rec *r, PgqevBatch *b)
{
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		PgqevEvent *e = pgqev_batch_event(b, i);
		int64_t v = strtoll(pgqev_event_data(e), NULL, 10);
		if (v % 2 == 0 && pgqev_event_retry_count(e) == 0)
			pgqev_event_retry(e, 0);
	}
	return PGQEV_DONE;
}

START_TEST(test_retry_round_trip)
{
	const char *db = cs_db_with_queue("q");
	Rec r = {.name = "retry", .hook = retry_even_once};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.fetch_size = 3;
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	cs_produce(db, "q", 0, 10);
	cs_tick(db);
	CountCond cc = {&r, 10};
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	PGconn *admin = pgt_connect(db);
	ck_assert_int_eq(pgt_int(admin, "select count(*) from pgq.retry_queue"), 5);
	while (pgt_int(admin, "select pgq.maint_retry_events()") > 0)
		;
	PQfinish(admin);
	cs_ticker(db, 30);
	cc.want = 15;
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	Rec *all[1] = {&r};
	ck_assert(cs_run_until_drained(db, "q", all, 1, 20000)); /* nothing more comes */
	ck_assert_uint_eq(r.n, 15);
	int again[10] = {0};
	for (size_t i = 10; i < r.n; i++) {
		ck_assert_int_eq(r.vals[i] % 2, 0);
		ck_assert_int_eq(r.retries[i], 1);
		again[r.vals[i]]++;
	}
	for (int v = 0; v < 10; v += 2)
		ck_assert_int_eq(again[v], 1);
	rec_free(&r);
}
END_TEST

static PgqevVerdict fail_first_call(Rec *r, PgqevBatch *b)
{
	return r->hook_calls == 1 ? PGQEV_FAIL : PGQEV_DONE;
}

START_TEST(test_failing_handler_redelivers_batch)
{
	const char *db = cs_db_with_queue("q");
	Rec r = {.name = "failing", .hook = fail_first_call, .quiet = true};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.fetch_size = 4;
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	cs_produce(db, "q", 0, 10);
	cs_tick(db);
	/* first chunk (4) fails, then the whole batch (10) comes again */
	CountCond cc = {&r, 14};
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	ck_assert_uint_eq(r.n, 14);
	ck_assert_int_eq(r.errors[PGQEV_ERR_HANDLER], 1);
	ck_assert_int_ge(r.states[PGQEV_STATE_BACKOFF], 1);
	for (size_t i = 0; i < r.n; i++)
		ck_assert_int_eq(r.batches[i], r.batches[0]); /* the same batch again */
	for (size_t i = 0; i < 4; i++)
		ck_assert_int_eq(r.vals[i], r.vals[4 + i]);
	ck_assert_int_eq(pgt_int_db(db, "select count(*) from pgq.subscription"
					" where sub_batch is not null"),
			 0);
	rec_free(&r);
}
END_TEST

static PgqevVerdict fail_first_delivery(Rec *r, PgqevBatch *b)
{
	return pgqev_event_retry_count(pgqev_batch_event(b, 0)) == 0 ? PGQEV_FAIL : PGQEV_DONE;
}

START_TEST(test_fail_policy_retry_events)
{
	const char *db = cs_db_with_queue("q");
	Rec r = {.name = "retry-policy", .hook = fail_first_delivery, .quiet = true};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.fail_policy = PGQEV_FAIL_RETRY_EVENTS;
	cfg.retry_delay = 0;
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	cs_produce(db, "q", 0, 6);
	cs_tick(db);
	CountCond cc = {&r, 6};
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	PGconn *admin = pgt_connect(db);
	ck_assert_int_eq(pgt_int(admin, "select count(*) from pgq.retry_queue"), 6);
	while (pgt_int(admin, "select pgq.maint_retry_events()") > 0)
		;
	PQfinish(admin);
	cs_ticker(db, 30);
	cc.want = 12;
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	for (size_t i = 6; i < 12; i++)
		ck_assert_int_eq(r.retries[i], 1);
	ck_assert_int_ge(r.errors[PGQEV_ERR_HANDLER], 1);
	rec_free(&r);
}
END_TEST

/* async: each chunk is held and completed from a timer */
typedef struct Held {
	Rec *r;
	struct event *ev;
	char first_data[32];
	int completions;
} Held;

static void complete_cb(evutil_socket_t fd, short what, void *arg)
{
	Held *h = arg;
	PgqevBatch *b = h->r->held;
	ck_assert_ptr_nonnull(b);
	/* the chunk's events are still readable after on_batch returned */
	ck_assert_str_eq(pgqev_event_data(pgqev_batch_event(b, 0)), h->first_data);
	h->r->held = NULL;
	h->completions++;
	ck_assert_int_eq(pgqev_batch_complete(b, PGQEV_DONE), 0);
}

static PgqevVerdict hold_chunk(Rec *r, PgqevBatch *b)
{
	Held *h = r->hook_arg;
	ck_assert_ptr_null(r->held); /* no chunk while another is held */
	r->held = b;
	snprintf(h->first_data, sizeof(h->first_data), "%s",
		 pgqev_event_data(pgqev_batch_event(b, 0)));
	struct timeval tv = {0, 20000};
	evtimer_add(h->ev, &tv);
	return PGQEV_PENDING;
}

START_TEST(test_async_finish)
{
	const char *db = cs_db_with_queue("q");
	Held h = {0};
	Rec r = {.name = "async", .hook = hold_chunk, .hook_arg = &h};
	h.r = &r;
	h.ev = evtimer_new(cs_base(), complete_cb, &h);
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.fetch_size = 5;
	cfg.async = true;
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	cs_produce(db, "q", 0, 23);
	cs_tick(db);
	cs_produce(db, "q", 23, 30);
	cs_tick(db);
	CountCond cc = {&r, 30};
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	cs_assert_exactly_once(&r, 0, 30);
	ck_assert_int_eq(h.completions, 7); /* 5 chunks + 2 chunks */
	ck_assert_uint_eq(pgqev_consumer_batches(r.c), 2);
	event_free(h.ev);
	rec_free(&r);
}
END_TEST

static PgqevVerdict pending_without_async(Rec *r, PgqevBatch *b)
{
	return r->hook_calls == 1 ? PGQEV_PENDING : PGQEV_DONE;
}

START_TEST(test_pending_needs_async_mode)
{
	const char *db = cs_db_with_queue("q");
	Rec r = {.name = "pending", .hook = pending_without_async, .quiet = true};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	cs_produce(db, "q", 0, 3);
	cs_tick(db);
	CountCond cc = {&r, 6};
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	ck_assert_int_eq(r.errors[PGQEV_ERR_HANDLER], 1);
	ck_assert_msg(strstr(r.last_error, "async") != NULL, "%s", r.last_error);
	rec_free(&r);
}
END_TEST

START_TEST(test_notify_wakeup)
{
	const char *db = cs_db_with_queue("q");
	Rec r = {.name = "notify"};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.poll_interval = 3600 * PGQEV_USEC_PER_SEC; /* only a notification can wake it */
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	Rec *all[1] = {&r};
	for (int round = 0; round < 3; round++) {
		/* done with everything ticked, so only the notification below can wake it */
		ck_assert(cs_run_until_drained(db, "q", all, 1, 10000));
		ck_assert_int_eq(pgqev_consumer_state(r.c), PGQEV_STATE_IDLE);
		cs_produce(db, "q", round * 5, round * 5 + 5);
		cs_tick(db);
		CountCond cc = {&r, (size_t)(round * 5 + 5)};
		ck_assert(cs_run_until(cs_has_count, &cc, 10000));
	}
	cs_assert_exactly_once(&r, 0, 15);
	ck_assert_int_ge(r.states[PGQEV_STATE_PROCESSING], 3);
	ck_assert_int_ge(r.states[PGQEV_STATE_LISTENING], 3);
	ck_assert_int_eq(r.errors[PGQEV_ERR_SQL], 0);
	rec_free(&r);
}
END_TEST

/*
 * The statements sent for every batch (next_batch_custom, the cursor sent behind
 * it, finish_batch) are prepared once per session and then executed by name: the
 * server logs each statement it runs (log_min_duration_statement = 0 for the
 * database), with the statement's name.
 */
START_TEST(test_batch_statements_prepared_once)
{
	const char *db = cs_db_with_queue("q");
	const char *hot[] = {"next_batch_custom", "get_batch_cursor", "finish_batch"};
	char sql[200];
	Rec r = {.name = "prepared"};
	PgqevConsumerConfig cfg;
	Rec *all[1] = {&r};

	snprintf(sql, sizeof(sql), "alter database %s set log_min_duration_statement = 0", db);
	exec_db(db, sql);
	cs_config(&cfg, &r, db, "q", "c1");
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000)); /* registered */
	for (int round = 0; round < 4; round++) {
		cs_produce(db, "q", round * 5, round * 5 + 5);
		cs_tick(db);
		ck_assert(cs_run_until_drained(db, "q", all, 1, 10000));
	}
	cs_assert_exactly_once(&r, 0, 20);
	rec_free(&r);
	for (size_t i = 0; i < sizeof(hot) / sizeof(hot[0]); i++)
		pgt_assert_prepared(db, hot[i], 4);
	/* a batch that ends at the newest tick a notification named is not followed
	   by a look-up that would find nothing: the first look-up and one per batch
	   (13 when every batch was followed by look-ups that found nothing) */
	int looks = pgt_server_log_count(db, "execute pqev_", "next_batch_custom");
	ck_assert_msg(looks >= 5 && looks <= 6, "%d look-ups for 4 batches", looks);
}
END_TEST

START_TEST(test_poll_without_listen)
{
	const char *db = cs_db_with_queue("q");
	/* the tick notifications go nowhere: nobody can LISTEN */
	Rec r = {.name = "poll"};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.listen = false;
	cfg.poll_interval = 100 * PGQEV_USEC_PER_MSEC;
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	PGconn *admin = pgt_connect(db);
	ck_assert_int_eq(pgt_int(admin, "select count(*) from pg_stat_activity"
					" where application_name = 'pgqev-consumer'"
					" and query ilike '%listen%'"),
			 0);
	PQfinish(admin);
	cs_produce(db, "q", 0, 8);
	cs_tick(db);
	CountCond cc = {&r, 8};
	ck_assert(cs_run_until(cs_has_count, &cc, 10000));
	cs_assert_exactly_once(&r, 0, 8);
	ck_assert_int_ge(r.states[PGQEV_STATE_LISTENING], 2);
	rec_free(&r);
}
END_TEST

START_TEST(test_many_consumers_many_databases)
{
	enum { NDB = 6 };
	const char *dbs[NDB];
	char names[NDB][64];
	Rec r[NDB];
	PgqevLimiter *lim = pgqev_limiter_new(cs_base(), 2);
	for (int i = 0; i < NDB; i++) {
		snprintf(names[i], sizeof(names[i]), "%s", cs_db_with_queue("q"));
		dbs[i] = names[i];
		memset(&r[i], 0, sizeof(r[i]));
		r[i].name = dbs[i];
		PgqevConsumerConfig cfg;
		cs_config(&cfg, &r[i], dbs[i], "q", "c1");
		cfg.limiter = lim;
		cs_start(&r[i], &cfg);
	}
	for (int i = 0; i < NDB; i++)
		ck_assert(cs_state_is(&r[i], PGQEV_STATE_IDLE, 20000));
	for (int i = 0; i < NDB; i++) {
		cs_produce(dbs[i], "q", i * 100, i * 100 + 30);
		cs_tick(dbs[i]);
	}
	for (int i = 0; i < NDB; i++) {
		CountCond cc = {&r[i], 30};
		ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	}
	for (int i = 0; i < NDB; i++) {
		cs_assert_exactly_once(&r[i], i * 100, i * 100 + 30);
		rec_free(&r[i]);
	}
	ck_assert_uint_le(pgqev_limiter_peak(lim), 2);
	ck_assert_uint_ge(pgqev_limiter_peak(lim), 1);
	ck_assert_uint_eq(pgqev_limiter_active(lim) + pgqev_limiter_waiting(lim), 0);
	event_base_loop(cs_base(), EVLOOP_NONBLOCK);
	ck_assert_int_eq(pgqev_limiter_free(lim), 0);
}
END_TEST

/* producer helpers: every byte survives COPY escaping and insert_event */
static const char *const enc_data[] = {
	"tab\there",
	"new\nline",
	"back\\slash",
	"quote'and\"dq",
	"cr\rx",
	"unicode: \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
	"",
	"\\N",
};
#define NENC (sizeof(enc_data) / sizeof(enc_data[0]))

typedef struct EncCheck {
	size_t n;
	int bad;
} EncCheck;

static PgqevVerdict enc_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	EncCheck *ec = arg;
	for (size_t i = 0; i < pgqev_batch_count(b); i++, ec->n++) {
		PgqevEvent *e = pgqev_batch_event(b, i);
		size_t k = ec->n % (NENC + 1);
		if (k == NENC) { /* the all-NULL event */
			ec->bad += pgqev_event_type(e) != NULL || pgqev_event_data(e) != NULL ||
				   pgqev_event_extra(e, 1) != NULL;
			ec->bad += pgqev_event_data_len(e) != 0;
			continue;
		}
		ec->bad += strcmp(pgqev_event_type(e), "enc") != 0;
		ec->bad += strcmp(pgqev_event_data(e), enc_data[k]) != 0;
		ec->bad += pgqev_event_data_len(e) != strlen(enc_data[k]);
		ec->bad += strcmp(pgqev_event_extra(e, 1), enc_data[(k + 1) % NENC]) != 0;
		ec->bad += pgqev_event_extra(e, 2) != NULL;
		ec->bad += strcmp(pgqev_event_extra(e, 4), "x4") != 0;
		ec->bad += pgqev_event_extra(e, 5) != NULL || pgqev_event_extra(e, 0) != NULL;
		ec->bad += pgqev_event_id(e) <= 0 || pgqev_event_txid(e) <= 0;
		ec->bad += pgqev_event_time(e) == NULL || pgqev_event_retry_count(e) != 0;
	}
	return PGQEV_DONE;
}

static bool enc_count(void *arg)
{
	return ((EncCheck *)arg)->n >= 2 * (NENC + 1);
}

START_TEST(test_producer_encodings)
{
	const char *db = cs_db_with_queue("q");
	PGconn *c = pgt_connect(db);
	pgt_exec(c, "select pgq.register_consumer('q', 'enc')");
	/* the same sequence through insert_event (in the caller's tx), then COPY */
	pgt_exec(c, "begin");
	for (size_t k = 0; k < NENC; k++) {
		const char *x[4] = {enc_data[(k + 1) % NENC], NULL, NULL, "x4"};
		ck_assert_int_eq(pgqev_insert_event(c, "q", "enc", enc_data[k], x, NULL), 0);
	}
	ck_assert_int_eq(pgqev_insert_event(c, "q", NULL, NULL, NULL, NULL), 0);
	pgt_exec(c, "commit");
	int err = 1;
	PgqevBulk *bulk = pgqev_bulk_begin(c, "q", &err);
	ck_assert_ptr_nonnull(bulk);
	ck_assert_int_eq(err, 0);
	for (size_t k = 0; k < NENC; k++) {
		const char *x[4] = {enc_data[(k + 1) % NENC], NULL, NULL, "x4"};
		ck_assert_int_eq(pgqev_bulk_add(bulk, "enc", enc_data[k], x), 0);
	}
	ck_assert_int_eq(pgqev_bulk_add(bulk, NULL, NULL, NULL), 0);
	uint64_t n = 0;
	ck_assert_int_eq(pgqev_bulk_end(bulk, &n), 0);
	ck_assert_uint_eq(n, NENC + 1);
	/* errors name the cause */
	ck_assert_int_eq(pgqev_insert_event(c, "no_such_queue", "t", "d", NULL, NULL), -EIO);
	ck_assert_ptr_nonnull(strstr(PQerrorMessage(c), "queue"));
	ck_assert_ptr_null(pgqev_bulk_begin(c, "no_such_queue", &err));
	ck_assert_int_eq(err, -EIO);
	ck_assert_int_eq(PQtransactionStatus(c), PQTRANS_IDLE);
	PQfinish(c);
	cs_tick(db);

	EncCheck ec = {0};
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	cfg.conninfo = pgt_connstr(db, false);
	cfg.queue = "q";
	cfg.consumer = "enc";
	cfg.fetch_size = 4;
	cfg.on_batch = enc_batch;
	cfg.arg = &ec;
	PgqevConsumer *con = pgqev_consumer_new(cs_base(), &cfg, NULL, 0);
	ck_assert_ptr_nonnull(con);
	ck_assert_int_eq(pgqev_consumer_start(con), 0);
	ck_assert(cs_run_until(enc_count, &ec, 20000));
	ck_assert_int_eq(ec.bad, 0);
	ck_assert_uint_eq(ec.n, 2 * (NENC + 1));
	pgqev_consumer_free(con);
}
END_TEST

/* One batch of `total` events read in 1000-event chunks with bounded heap. */
static void large_batch(int64_t total)
{
	const char *db = cs_db_with_queue("q");
	Rec r = {.name = "large"};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.fetch_size = 1000;
	PGconn *c = pgt_connect(db);
	pgt_exec(c, "select pgq.register_consumer('q', 'c1')");
	PQfinish(c);
	cs_produce(db, "q", 0, total);
	cs_tick(db);
	struct mallinfo2 before = mallinfo2();
	cs_start(&r, &cfg);
	CountCond cc = {&r, (size_t)total};
	ck_assert(cs_run_until(cs_has_count, &cc, 60000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	struct mallinfo2 after = mallinfo2();
	cs_assert_exactly_once(&r, 0, total);
	ck_assert_uint_eq(r.batches_seen, 1);              /* one batch ... */
	ck_assert_uint_eq(r.chunks, (size_t)total / 1000); /* ... in fetch_size chunks */
	ck_assert_uint_eq(r.max_chunk, 1000);
	/* the heap grew by the test's own record (3 arrays) plus bounded chunks */
	size_t rec_bytes = r.cap * (2 * sizeof(int64_t) + sizeof(int));
	if (!getenv("PGQD_TEST_VALGRIND") && after.uordblks > before.uordblks)
		ck_assert_msg(after.uordblks - before.uordblks < rec_bytes + 8 * 1024 * 1024,
			      "heap grew by %zu bytes", after.uordblks - before.uordblks);
	rec_free(&r);
}

START_TEST(test_large_batch_streams_in_bounded_chunks)
{
	large_batch(100000);
}
END_TEST

START_TEST(test_million_event_batch_streams_in_bounded_chunks)
{
	large_batch(1000000);
}
END_TEST

START_TEST(test_register_at_tick_and_min_count)
{
	const char *db = cs_db_with_queue("q");
	PGconn *admin = pgt_connect(db);
	cs_produce(db, "q", 0, 5);
	pgt_exec(admin, "select pgq.ticker()");
	int64_t t1 = pgt_int(admin, "select max(tick_id) from pgq.tick");
	cs_produce(db, "q", 5, 10);
	pgt_exec(admin, "select pgq.ticker()");
	/* registered at t1: only what committed after t1 */
	Rec r = {.name = "at"};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "at_tick");
	cfg.register_tick = t1;
	cs_start(&r, &cfg);
	CountCond cc = {&r, 5};
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	cs_assert_exactly_once(&r, 5, 10);
	rec_free(&r);

	/* min_count 10: ticks with 4 and 8 events pending give no batch; 12 do, in one */
	Rec m = {.name = "min_count"};
	cs_config(&cfg, &m, db, "q", "batched");
	cfg.min_count = 10;
	cfg.poll_interval = 50 * PGQEV_USEC_PER_MSEC;
	cs_start(&m, &cfg);
	ck_assert(cs_state_is(&m, PGQEV_STATE_IDLE, 20000));
	for (int i = 0; i < 3; i++) {
		cs_produce(db, "q", 100 + i * 4, 104 + i * 4);
		pgt_exec(admin, "select pgq.ticker()");
		if (i < 2) {
			/* several polls (each ends idle again): still nothing */
			ck_assert(cs_run_until_idle_again(&m, 3, 20000));
			ck_assert_uint_eq(m.n, 0);
		}
	}
	cc.r = &m;
	cc.want = 12;
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	cs_assert_exactly_once(&m, 100, 112);
	ck_assert_uint_eq(m.batches_seen, 1);
	/* an explicit wake-up while idle looks again at once */
	ck_assert(cs_state_is(&m, PGQEV_STATE_IDLE, 20000));
	int listening = m.states[PGQEV_STATE_LISTENING];
	pgqev_consumer_wake(m.c);
	ck_assert_int_eq(m.states[PGQEV_STATE_LISTENING], listening + 1);
	PQfinish(admin);
	rec_free(&m);
}
END_TEST

START_TEST(test_catch_up_merges_old_ticks)
{
	/* 30 ticks one second apart, the last 1 s ago (external ticker) */
	const char *db = cs_db_with_queue("q");
	PGconn *admin = pgt_connect(db);
	pgt_exec(admin, "select pgq.set_queue_config('q', 'external_ticker', 'true')");
	pgt_exec(admin, "select pgq.register_consumer('q', 'late')");
	int64_t tick = pgt_int(admin, "select max(tick_id) from pgq.tick");
	for (int i = 0; i < 30; i++) {
		cs_produce(db, "q", i * 3, i * 3 + 3);
		char sql[256];
		snprintf(sql, sizeof(sql),
			 "select pgq.ticker('q', %lld, now() - interval '%d seconds', 0)",
			 (long long)(tick + 1 + i), 30 - i);
		pgt_exec(admin, sql);
	}
	PQfinish(admin);
	Rec r = {.name = "late"};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "late");
	cs_start(&r, &cfg);
	CountCond cc = {&r, 90};
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	cs_assert_exactly_once(&r, 0, 90);
	/* one tick interval, then the rest in one batch over half the lag, not 30 */
	ck_assert_uint_eq(r.batches_seen, 2);
	rec_free(&r);
}
END_TEST

static void expect_bad(PgqevConsumerConfig *cfg, const char *needle)
{
	char err[256] = "";
	PgqevConsumer *c = pgqev_consumer_new(cs_base(), cfg, err, sizeof(err));
	ck_assert_ptr_null(c);
	ck_assert_msg(strstr(err, needle) != NULL, "'%s' does not name '%s'", err, needle);
}

static PgqevVerdict noop(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	return PGQEV_DONE;
}

START_TEST(test_config_validation)
{
	PgqevConsumerConfig cfg, base;
	pgqev_config_init(&base);
	base.conninfo = "dbname=x";
	base.queue = "q";
	base.consumer = "c";
	base.on_batch = noop;
	cfg = base, cfg.conninfo = NULL, expect_bad(&cfg, "conninfo");
	cfg = base, cfg.conninfo = "nosuchkey=1", expect_bad(&cfg, "conninfo");
	cfg = base, cfg.queue = "", expect_bad(&cfg, "queue");
	cfg = base, cfg.consumer = NULL, expect_bad(&cfg, "consumer");
	cfg = base, cfg.on_batch = NULL, expect_bad(&cfg, "on_batch");
	cfg = base, cfg.fetch_size = 0, expect_bad(&cfg, "fetch_size");
	cfg = base, cfg.min_count = -1, expect_bad(&cfg, "min_count");
	cfg = base, cfg.subconsumer = "", expect_bad(&cfg, "subconsumer");
	cfg = base, cfg.subconsumer = "s", cfg.register_tick = 5, expect_bad(&cfg, "register_tick");
	cfg = base, cfg.fail_delay = 0, expect_bad(&cfg, "fail_delay");
	cfg = base, cfg.target_conninfo = "bad=1", expect_bad(&cfg, "target_conninfo");
	cfg = base;
	PgqevConsumer *c = pgqev_consumer_new(cs_base(), &cfg, NULL, 0);
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(pgqev_consumer_label(c), "x/q/c");
	ck_assert_int_eq(pgqev_consumer_state(c), PGQEV_STATE_STOPPED);
	ck_assert_str_eq(pgqev_state_name(PGQEV_STATE_BACKOFF), "backing-off");
	ck_assert_ptr_null(pgqev_consumer_free(c));
	ck_assert_ptr_null(pgqev_consumer_free(NULL));
}
END_TEST

static PgqevVerdict stop_in_handler(Rec *r, PgqevBatch *b)
{
	pgqev_consumer_stop(r->c);
	return PGQEV_DONE;
}

static PgqevVerdict free_in_handler(Rec *r, PgqevBatch *b)
{
	r->c = pgqev_consumer_free(r->c);
	return PGQEV_DONE;
}

START_TEST(test_stop_and_free_from_callbacks)
{
	const char *db = cs_db_with_queue("q");
	Rec r = {.name = "stop", .hook = stop_in_handler};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.fetch_size = 2;
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	cs_produce(db, "q", 0, 5);
	cs_tick(db);
	/* graceful: the batch in progress is finished, then STOPPED */
	ck_assert(cs_state_is(&r, PGQEV_STATE_STOPPED, 20000));
	ck_assert_uint_eq(r.n, 5);
	ck_assert_uint_eq(pgqev_consumer_batches(r.c), 1);
	/* start again: nothing is redelivered */
	ck_assert_int_eq(pgqev_consumer_start(r.c), 0);
	ck_assert_int_eq(pgqev_consumer_start(r.c), -EALREADY);
	r.hook = free_in_handler;
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	cs_produce(db, "q", 5, 7); /* one chunk */
	cs_tick(db);
	CountCond cc = {&r, 7};
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	ck_assert_ptr_null(r.c); /* freed inside its own callback */
	/* its session is gone from the server, so it can deliver nothing more */
	ck_assert(cs_run_until(no_consumer_session, (void *)db, 20000));
	cs_assert_exactly_once(&r, 0, 7);
	/* the freed consumer's batch was abandoned: still open on the server */
	ck_assert_int_eq(pgt_int_db(db, "select count(*) from pgq.subscription"
					" where sub_batch is not null"),
			 1);
	rec_free(&r);
}
END_TEST

/*
 * Ordering within a batch: the reader must deliver a batch's events in ev_id
 * order (PgQ's get_batch_events / get_batch_cursor promise) even where the
 * event tables' physical order differs. Each round produces events into the
 * current table, moves the previous round's retried events back into it (with
 * their old, lower ids, physically after the new ones), rotates to the next
 * table and produces there, and a bulk producer that took the older table's
 * name before the rotation writes one more event into it (an id above the newer
 * table's), so one batch spans two tables out of id order and holds retried
 * events. A reader returning rows in scan or table order fails here.
 */
typedef struct Order {
	int64_t batch;   /* batch being delivered (an attempt restarts at chunk 0) */
	int64_t last_id; /* last ev_id delivered in that attempt */
	size_t broken;   /* events delivered after a higher id of the same batch */
	char first_break[160];
	int retried; /* this attempt: retried events delivered */
	int tables;  /* this attempt: bit 0 rows of the round's older table, bit 1 newer */
	int mixed;   /* batches with retried events and rows of both tables */
} Order;

static void order_end_batch(Order *o)
{
	if (o->batch && o->retried && o->tables == 3)
		o->mixed++;
	o->retried = 0;
	o->tables = 0;
}

static PgqevVerdict order_hook(Rec *r, PgqevBatch *b)
{
	Order *o = r->hook_arg;
	if (pgqev_batch_chunk(b) == 0) {
		if (pgqev_batch_id(b) == o->batch) /* redelivered: only the last attempt counts */
			o->retried = o->tables = 0;
		else
			order_end_batch(o);
		o->batch = pgqev_batch_id(b);
		o->last_id = INT64_MIN;
	}
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		PgqevEvent *e = pgqev_batch_event(b, i);
		int64_t id = pgqev_event_id(e);
		int64_t v = strtoll(pgqev_event_data(e), NULL, 10);
		if (id <= o->last_id && o->broken++ == 0)
			snprintf(o->first_break, sizeof(o->first_break),
				 "batch %lld: ev_id %lld (value %lld) after ev_id %lld",
				 (long long)o->batch, (long long)id, (long long)v,
				 (long long)o->last_id);
		o->last_id = id;
		if (pgqev_event_retry_count(e) > 0)
			o->retried++;
		else
			o->tables |= (v % 100 < 50 || v % 100 >= 90) ? 1 : 2;
		if (pgqev_event_retry_count(e) == 0 && v % 10 == 0)
			pgqev_event_retry(e, 0);
	}
	return PGQEV_DONE;
}

static void order_tick_ours(PGconn *admin)
{
	pgt_exec(admin, "select pgq.ticker()");
}

static void order_tick_pgq35(PGconn *admin)
{
	pgt_exec(admin, "select pgq.force_tick('q')"); /* ticks even with no new events */
	pgt_exec(admin, "select pgq.ticker('q')");
}

/*
 * Three rounds on queue q of db (rotation_period 0): values k*100+0..29 into the
 * current table, the earlier round's retried events back into it, a rotation,
 * values k*100+50..79 into the new table, then k*100+95 into the older table
 * by a producer that took its name before the rotation, one tick. Then the last retried
 * events. Every value arrives once as itself and, if a multiple of 10, once more
 * retried; every batch in ev_id order.
 */
static void order_scenario(const char *db, Rec *r, void (*tick)(PGconn *))
{
	Order *o = r->hook_arg;
	PGconn *admin = pgt_connect(db);
	PGconn *p[2] = {pgt_connect(db), pgt_connect(db)};
	size_t want = 0;
	/* rotation waits until every consumer has read past the queue's creation */
	tick(admin);
	Rec *all[1] = {r};
	ck_assert(cs_run_until_drained(db, "q", all, 1, 30000));
	for (int k = 0; k < 3; k++) {
		/* two producers with transactions open at once, ids interleaved */
		pgt_exec(p[0], "begin");
		pgt_exec(p[1], "begin");
		for (int i = 0; i < 30; i++) {
			char sql[160];
			snprintf(sql, sizeof(sql), "select pgq.insert_event('q', 'num', '%d')",
				 k * 100 + i);
			pgt_exec(p[i % 2], sql);
		}
		pgt_exec(p[0], "commit");
		pgt_exec(p[1], "commit");
		while (pgt_int(admin, "select pgq.maint_retry_events()") > 0)
			;
		/* a bulk producer holds the table it was given across the rotation */
		pgt_exec(p[0], "begin");
		pgt_exec(p[0], "select txid_current()");
		char *old_table = pgt_value(p[0], "select pgq.current_event_table('q')");
		int64_t before = pgt_int(admin, "select queue_cur_table from pgq.queue");
		pgt_exec(admin, "select pgq.maint_rotate_tables_step1('q')");
		pgt_exec(admin, "select pgq.maint_rotate_tables_step2()");
		ck_assert_int_ne(pgt_int(admin, "select queue_cur_table from pgq.queue"), before);
		cs_produce(db, "q", k * 100 + 50, k * 100 + 80);
		/* its event, in the older table, gets an id above the newer table's */
		char sql[200];
		snprintf(sql, sizeof(sql),
			 "insert into %s (ev_time, ev_type, ev_data) values (now(), 'num', '%d')",
			 old_table, k * 100 + 95);
		pgt_exec(p[0], sql);
		pgt_exec(p[0], "commit");
		free(old_table);
		tick(admin);
		want += 61 + (k ? 6 : 0);
		CountCond cc = {r, want};
		ck_assert_msg(cs_run_until(cs_has_count, &cc, 30000), "round %d: got %zu of %zu", k,
			      r->n, want);
		ck_assert(cs_state_is(r, PGQEV_STATE_IDLE, 20000));
	}
	while (pgt_int(admin, "select pgq.maint_retry_events()") > 0)
		;
	tick(admin);
	want += 6;
	CountCond cc = {r, want};
	ck_assert_msg(cs_run_until(cs_has_count, &cc, 30000), "last retries: got %zu of %zu", r->n,
		      want);
	ck_assert(cs_state_is(r, PGQEV_STATE_IDLE, 20000));
	order_end_batch(o);
	ck_assert_msg(o->broken == 0, "%zu events out of ev_id order; first: %s", o->broken,
		      o->first_break);
	/* the scenario did what it is for: retried events among two tables' rows */
	ck_assert_int_ge(o->mixed, 2);
	ck_assert_uint_eq(r->n, want);
	int seen[300][2] = {{0}};
	for (size_t i = 0; i < r->n; i++) {
		ck_assert(r->vals[i] >= 0 && r->vals[i] < 300);
		seen[r->vals[i]][r->retries[i] > 0]++;
	}
	for (int v = 0; v < 300; v++) {
		bool produced = v % 100 < 30 || (v % 100 >= 50 && v % 100 < 80) || v % 100 == 95;
		ck_assert_int_eq(seen[v][0], produced);
		ck_assert_int_eq(seen[v][1], produced && v % 10 == 0);
	}
	PQfinish(p[0]);
	PQfinish(p[1]);
	PQfinish(admin);
}

START_TEST(test_batch_in_ev_id_order_across_tables_and_retries)
{
	const char *db = cs_db_with_queue("q");
	pgt_exec_db(db, "select pgq.set_queue_config('q', 'rotation_period', '0')");
	Order o = {0};
	Rec r = {.name = "order", .hook = order_hook, .hook_arg = &o};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.fetch_size = 7; /* several chunks per batch */
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	order_scenario(db, &r, order_tick_ours);
	rec_free(&r);
}
END_TEST

/* A database with Debian's PgQ 3.5 C extension and queue q: a tick per event,
   rotation whenever asked. */
static const char *pgq35_db_with_queue(void)
{
	ck_assert_msg(access("/usr/share/postgresql/15/extension/pgq.control", R_OK) == 0,
		      "Debian's postgresql-15-pgq3 is not installed");
	const char *db = pgt_db_new_empty();
	pgt_exec_db(db, "create extension pgq");
	pgt_exec_db(db, "select pgq.create_queue('q'),"
			" pgq.set_queue_config('q', 'ticker_max_count', '1'),"
			" pgq.set_queue_config('q', 'rotation_period', '0')");
	return db;
}

/* The same on Debian's PgQ 3.5 C extension (its own batch query and rotation). */
START_TEST(test_batch_in_ev_id_order_on_pgq35)
{
	const char *db = pgq35_db_with_queue();
	Order o = {0};
	Rec r = {.name = "order-35", .quiet = true, .hook = order_hook, .hook_arg = &o};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.fetch_size = 7;
	cfg.poll_interval = 100 * PGQEV_USEC_PER_MSEC; /* no tick NOTIFY in PgQ 3.5 */
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	order_scenario(db, &r, order_tick_pgq35);
	rec_free(&r);
}
END_TEST

/*
 * pgqev_bulk_begin learns the table, a rotation commits and a tick follows before
 * the first row: the rows must still be read by a later batch (the bulk takes
 * its transaction's id before the table's name, which PgQ 3.5's
 * current_event_table does not do for it).
 */
static void bulk_across_rotation(const char *db, void (*tick)(PGconn *))
{
	PGconn *admin = pgt_connect(db), *p = pgt_connect(db);
	int err;
	uint64_t n = 0;

	pgt_exec(admin, "select pgq.register_consumer('q', 'r')");
	pgt_exec(admin, "select pgq.insert_event('q', 't', 'a')");
	tick(admin);
	char *got = pgt_take_all_batches(admin, "q", "r");
	ck_assert_str_eq(got, "a");
	free(got);

	PgqevBulk *b = pgqev_bulk_begin(p, "q", &err);
	ck_assert_msg(b != NULL, "pgqev_bulk_begin: %d %s", err, PQerrorMessage(p));
	int64_t before = pgt_int(admin, "select queue_cur_table from pgq.queue");
	pgt_exec(admin, "select pgq.maint_rotate_tables_step1('q')");
	pgt_exec(admin, "select pgq.maint_rotate_tables_step2()");
	ck_assert_int_ne(pgt_int(admin, "select queue_cur_table from pgq.queue"), before);
	tick(admin);
	ck_assert_int_eq(pgqev_bulk_add(b, "t", "late", NULL), 0);
	ck_assert_int_eq(pgqev_bulk_end(b, &n), 0);
	ck_assert_uint_eq(n, 1);
	pgt_exec(admin, "select pgq.insert_event('q', 't', 'b')");
	tick(admin);
	got = pgt_take_all_batches(admin, "q", "r");
	ck_assert_msg(strcmp(got, "late,b") == 0, "after the rotation: got \"%s\", want \"late,b\"",
		      got);
	free(got);
	PQfinish(p);
	PQfinish(admin);
}

START_TEST(test_bulk_across_rotation)
{
	const char *db = cs_db_with_queue("q");
	pgt_exec_db(db, "select pgq.set_queue_config('q', 'rotation_period', '0'),"
			" pgq.set_queue_config('q', 'ticker_max_lag', '0'),"
			" pgq.set_queue_config('q', 'ticker_idle_period', '0')");
	bulk_across_rotation(db, order_tick_ours);
}
END_TEST

START_TEST(test_bulk_across_rotation_on_pgq35)
{
	const char *db = pgq35_db_with_queue();
	bulk_across_rotation(db, order_tick_pgq35);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("consumer");
	TCase *tc = pgt_tcase("consumer", 120);
	tcase_add_checked_fixture(tc, setup, teardown);
	if (getenv("PGQEV_TEST_SLOW")) { /* the 'slow' suite runs this binary again */
		tcase_add_test(tc, test_million_event_batch_streams_in_bounded_chunks);
		suite_add_tcase(s, tc);
		PgtOptions slow = {.need_server = true};
		return pgt_main(s, &slow);
	}
	tcase_add_test(tc, test_config_validation);
	tcase_add_test(tc, test_every_event_once_across_ticks_and_rotations);
	tcase_add_test(tc, test_retry_round_trip);
	tcase_add_test(tc, test_failing_handler_redelivers_batch);
	tcase_add_test(tc, test_fail_policy_retry_events);
	tcase_add_test(tc, test_async_finish);
	tcase_add_test(tc, test_pending_needs_async_mode);
	tcase_add_test(tc, test_notify_wakeup);
	tcase_add_test(tc, test_batch_statements_prepared_once);
	tcase_add_test(tc, test_register_at_tick_and_min_count);
	tcase_add_test(tc, test_catch_up_merges_old_ticks);
	tcase_add_test(tc, test_poll_without_listen);
	tcase_add_test(tc, test_many_consumers_many_databases);
	tcase_add_test(tc, test_producer_encodings);
	tcase_add_test(tc, test_large_batch_streams_in_bounded_chunks);
	tcase_add_test(tc, test_stop_and_free_from_callbacks);
	tcase_add_test(tc, test_batch_in_ev_id_order_across_tables_and_retries);
	tcase_add_test(tc, test_batch_in_ev_id_order_on_pgq35);
	tcase_add_test(tc, test_bulk_across_rotation);
	tcase_add_test(tc, test_bulk_across_rotation_on_pgq35);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
