/*
 * Consumer test helpers; see constest.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "constest.h"

static struct event_base *base;
static struct event *tick_ev;
static PGconn *tick_conn;
static struct timeval tick_tv;

struct event_base *cs_base(void)
{
	return base;
}

void cs_setup(void)
{
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
}

void cs_teardown(void)
{
	cs_ticker(NULL, 0);
	/* let deferred frees of the connection layer run */
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
	base = NULL;
}

const char *cs_db_with_queue(const char *q)
{
	const char *db = pgt_db_new();
	PGconn *c = pgt_connect(db);
	char sql[512];
	snprintf(sql, sizeof(sql),
		 "select pgq.create_queue('%s'), pgq.set_queue_config('%s', 'ticker_max_lag', '0'),"
		 " pgq.set_queue_config('%s', 'ticker_idle_period', '0')",
		 q, q, q);
	pgt_exec(c, sql);
	PQfinish(c);
	return db;
}

void cs_eo_dbs(char *src, char *tgt, const char *q, const char *sink_columns)
{
	char sql[256];
	snprintf(src, CS_DB_LEN, "%s", cs_db_with_queue(q));
	snprintf(tgt, CS_DB_LEN, "%s", pgt_db_new());
	snprintf(sql, sizeof(sql), "create table sink (%s)", sink_columns);
	pgt_exec_db(tgt, sql);
}

void cs_on_finish(const char *db, const char *name, const char *when, const char *action)
{
	char sql[1024];
	int n = snprintf(sql, sizeof(sql),
			 "create function %s() returns trigger language plpgsql as $$"
			 " begin"
			 "  if old.sub_batch is not null and new.sub_batch is null and (%s) then"
			 "    %s;"
			 "  end if;"
			 "  return new;"
			 " end $$",
			 name, when, action);
	ck_assert(n > 0 && (size_t)n < sizeof(sql));
	pgt_exec_db(db, sql);
	snprintf(sql, sizeof(sql),
		 "create trigger %s before update on pgq.subscription"
		 " for each row execute function %s()",
		 name, name);
	pgt_exec_db(db, sql);
}

void cs_config_target(PgqevConsumerConfig *cfg, char *buf, size_t len, const char *db)
{
	snprintf(buf, len, "%s", pgt_connstr(db, false));
	cfg->target_conninfo = buf;
}

void cs_tick(const char *db)
{
	PGconn *c = pgt_connect(db);
	pgt_exec(c, "select pgq.ticker()");
	PQfinish(c);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	PGresult *r = PQexec(tick_conn, "select pgq.ticker()");
	PQclear(r);
}

void cs_ticker(const char *db, int ms)
{
	if (tick_ev) {
		event_free(tick_ev);
		tick_ev = NULL;
	}
	if (tick_conn) {
		PQfinish(tick_conn);
		tick_conn = NULL;
	}
	if (!db || ms <= 0)
		return;
	tick_conn = pgt_connect(db);
	tick_tv.tv_sec = ms / 1000;
	tick_tv.tv_usec = (ms % 1000) * 1000;
	tick_ev = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	ck_assert_int_eq(event_add(tick_ev, &tick_tv), 0);
}

static void grow(Rec *r)
{
	if (r->n < r->cap)
		return;
	r->cap = r->cap ? r->cap * 2 : 1024;
	r->vals = realloc(r->vals, r->cap * sizeof(*r->vals));
	r->batches = realloc(r->batches, r->cap * sizeof(*r->batches));
	r->retries = realloc(r->retries, r->cap * sizeof(*r->retries));
	ck_assert(r->vals && r->batches && r->retries);
}

static PgqevVerdict rec_on_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	Rec *r = arg;
	size_t n = pgqev_batch_count(b);
	ck_assert_uint_ge(n, 1);
	r->chunks++;
	if (n > r->max_chunk)
		r->max_chunk = n;
	if (pgqev_batch_id(b) != r->last_batch) {
		r->batches_seen++;
		r->last_batch = pgqev_batch_id(b);
	}
	for (size_t i = 0; i < n; i++) {
		PgqevEvent *e = pgqev_batch_event(b, i);
		const char *d = pgqev_event_data(e);
		char *end = NULL;
		int64_t v = d ? strtoll(d, &end, 10) : -1;
		if (!d || *end)
			v = -1;
		grow(r);
		r->vals[r->n] = v;
		r->batches[r->n] = pgqev_batch_id(b);
		r->retries[r->n] = pgqev_event_retry_count(e);
		r->n++;
	}
	if (r->hook) {
		r->hook_calls++;
		return r->hook(r, b);
	}
	return PGQEV_DONE;
}

static void rec_on_error(PgqevConsumer *c, const PgqevError *err, void *arg)
{
	Rec *r = arg;
	r->errors[err->kind]++;
	snprintf(r->last_error, sizeof(r->last_error), "%s", err->message);
	if (!r->quiet)
		fprintf(stderr, "# %s error kind %d streak %u: %s\n", r->name ? r->name : "rec",
			(int)err->kind, err->streak, err->message);
}

static void rec_on_state(PgqevConsumer *c, PgqevState old, PgqevState st, void *arg)
{
	Rec *r = arg;
	ck_assert_int_ne(old, st);
	/* every change is reported, once, and the consumer already says so */
	ck_assert_int_eq(old, r->state);
	ck_assert_int_eq(pgqev_consumer_state(c), st);
	r->states[st]++;
	r->state = st;
}

void cs_config(PgqevConsumerConfig *cfg, Rec *r, const char *db, const char *q,
	       const char *consumer)
{
	pgqev_config_init(cfg);
	static char conninfo[4][512];
	static int slot;
	char *ci = conninfo[slot++ % 4];
	snprintf(ci, 512, "%s", pgt_connstr(db, false));
	cfg->conninfo = ci;
	cfg->queue = q;
	cfg->consumer = consumer;
	cfg->on_batch = rec_on_batch;
	cfg->on_error = rec_on_error;
	cfg->on_state = rec_on_state;
	cfg->arg = r;
	cfg->fail_delay = 50 * PGQEV_USEC_PER_MSEC;
	cfg->fail_cap = 500 * PGQEV_USEC_PER_MSEC;
}

PgqevConsumer *cs_start(Rec *r, const PgqevConsumerConfig *cfg)
{
	char err[256] = "";
	r->c = pgqev_consumer_new(base, cfg, err, sizeof(err));
	ck_assert_msg(r->c != NULL, "consumer_new: %s", err);
	ck_assert_int_eq(pgqev_consumer_start(r->c), 0);
	return r->c;
}

void rec_free(Rec *r)
{
	r->c = pgqev_consumer_free(r->c);
	free(r->vals);
	free(r->batches);
	free(r->retries);
	r->vals = NULL;
	r->batches = NULL;
	r->retries = NULL;
	r->n = r->cap = 0;
}

void cs_produce(const char *db, const char *q, int64_t from, int64_t to)
{
	PGconn *c = pgt_connect(db);
	char v[32];
	if (to - from <= 20) {
		pgt_exec(c, "begin");
		for (int64_t i = from; i < to; i++) {
			snprintf(v, sizeof(v), "%lld", (long long)i);
			int64_t id = 0;
			ck_assert_int_eq(pgqev_insert_event(c, q, "num", v, NULL, &id), 0);
			ck_assert_int_gt(id, 0);
		}
		pgt_exec(c, "commit");
	} else {
		int err = 0;
		PgqevBulk *b = pgqev_bulk_begin(c, q, &err);
		ck_assert_msg(b != NULL, "bulk_begin %d: %s", err, PQerrorMessage(c));
		for (int64_t i = from; i < to; i++) {
			snprintf(v, sizeof(v), "%lld", (long long)i);
			ck_assert_int_eq(pgqev_bulk_add(b, "num", v, NULL), 0);
		}
		uint64_t n = 0;
		ck_assert_msg(pgqev_bulk_end(b, &n) == 0, "bulk_end: %s", PQerrorMessage(c));
		ck_assert_uint_eq(n, (uint64_t)(to - from));
	}
	PQfinish(c);
}

static void wd_cb(evutil_socket_t fd, short what, void *arg)
{
	*(bool *)arg = true;
}

bool cs_run_until(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
	int64_t deadline = pgt_now_ms() + timeout_ms;
	bool fired = false;
	struct event *wd = event_new(base, -1, EV_PERSIST, wd_cb, &fired);
	struct timeval step = {0, 20000};
	event_add(wd, &step);
	bool ok = cond ? cond(arg) : false;
	while (!ok && pgt_now_ms() < deadline) {
		event_base_loop(base, EVLOOP_ONCE);
		ok = cond ? cond(arg) : false;
	}
	event_free(wd);
	return ok;
}

void cs_run_for(int ms)
{
	(void)cs_run_until(NULL, NULL, ms);
}

typedef struct DrainedCond {
	PGconn *c;
	char sql[600];
	Rec *const *recs;
	int n;
	int64_t next_ms;
} DrainedCond;

static bool drained(void *arg)
{
	DrainedCond *d = arg;
	for (int i = 0; i < d->n; i++)
		if (d->recs[i]->state != PGQEV_STATE_IDLE)
			return false;
	/* the loop runs between two looks */
	if (!pgt_due(&d->next_ms, 10))
		return false;
	return pgt_int(d->c, d->sql) == 0;
}

bool cs_run_until_drained(const char *db, const char *q, Rec *const *recs, int n, int timeout_ms)
{
	DrainedCond d = {.c = pgt_connect(db), .recs = recs, .n = n};
	char *lit = PQescapeLiteral(d.c, q, strlen(q));
	ck_assert_ptr_nonnull(lit);
	snprintf(d.sql, sizeof(d.sql),
		 "select count(*) from pgq.get_consumer_info(%s) ci, pgq.get_queue_info(%s) qi"
		 " where ci.current_batch is not null"
		 " or (ci.consumer_name not like '%%.%%' and ci.last_tick <> qi.last_tick_id)",
		 lit, lit);
	PQfreemem(lit);
	bool ok = cs_run_until(drained, &d, timeout_ms);
	PQfinish(d.c);
	return ok;
}

typedef struct IdleCond {
	Rec *r;
	int want;
} IdleCond;

static bool idle_again(void *arg)
{
	IdleCond *ic = arg;
	return ic->r->states[PGQEV_STATE_IDLE] >= ic->want;
}

bool cs_run_until_idle_again(Rec *r, int more, int timeout_ms)
{
	IdleCond ic = {r, r->states[PGQEV_STATE_IDLE] + more};
	return cs_run_until(idle_again, &ic, timeout_ms);
}

bool cs_has_count(void *arg)
{
	CountCond *cc = arg;
	return cc->r->n >= cc->want;
}

typedef struct StateCond {
	Rec *r;
	PgqevState st;
} StateCond;

static bool state_cond(void *arg)
{
	StateCond *sc = arg;
	return pgqev_consumer_state(sc->r->c) == sc->st;
}

bool cs_state_is(Rec *r, PgqevState st, int timeout_ms)
{
	StateCond sc = {r, st};
	return cs_run_until(state_cond, &sc, timeout_ms);
}

static int *counts_for(Rec *r, int64_t from, int64_t to, size_t *others)
{
	int *cnt = calloc((size_t)(to - from), sizeof(int));
	ck_assert_ptr_nonnull(cnt);
	*others = 0;
	for (size_t i = 0; i < r->n; i++) {
		int64_t v = r->vals[i];
		if (v >= from && v < to)
			cnt[v - from]++;
		else
			(*others)++;
	}
	return cnt;
}

void cs_assert_exactly_once(Rec *r, int64_t from, int64_t to)
{
	size_t others;
	int *cnt = counts_for(r, from, to, &others);
	for (int64_t v = from; v < to; v++)
		ck_assert_msg(cnt[v - from] == 1, "value %lld delivered %d times", (long long)v,
			      cnt[v - from]);
	free(cnt);
	ck_assert_uint_eq(others, 0);
	ck_assert_uint_eq(r->n, (size_t)(to - from));
}

size_t cs_assert_at_least_once(Rec *r, int64_t from, int64_t to)
{
	size_t others, dups = 0;
	int *cnt = counts_for(r, from, to, &others);
	for (int64_t v = from; v < to; v++) {
		ck_assert_msg(cnt[v - from] >= 1, "value %lld never delivered", (long long)v);
		dups += (size_t)(cnt[v - from] - 1);
	}
	free(cnt);
	ck_assert_uint_eq(others, 0);
	return dups;
}
