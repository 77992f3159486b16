/*
 * Cascade test helpers; see castest.h.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "castest.h"

/*
 * Node databases are copies of one prepared database per server (made by the
 * first test that needs it): creating the extensions for every node costs
 * seconds, a copy a fraction of that.
 */
#define CT_TEMPLATE "ct_node_template"

/* postgres database of server k: a name for server 0, a connection string else */
static const char *admin_db(int k)
{
	return k == 0 ? "postgres" : pgt_connstr_on(k, "postgres");
}

static void make_template(int k)
{
	char pg[600];
	snprintf(pg, sizeof(pg), "%s", admin_db(k));
	if (pgt_int_db(pg, "select count(*) from pg_database where datname = '" CT_TEMPLATE "'") >
	    0)
		return;
	/* ours when the test template has pgq_node, else Debian's PgQ 3.5 extensions;
	   every server's data directory is a copy of the same template */
	char ours[600];
	if (k == 0) {
		snprintf(ours, sizeof(ours), "%s", pgt_db_new());
	} else {
		pgt_exec_db(pg, "create database ct_probe template pgqd_tpl");
		snprintf(ours, sizeof(ours), "%s", pgt_connstr_on(k, "ct_probe"));
	}
	bool have_ours =
		pgt_int_db(ours, "select count(*) from pg_namespace where nspname = 'pgq_node'") >
		0;
	char sql[700];
	snprintf(sql, sizeof(sql), "create database " CT_TEMPLATE " template %s",
		 !have_ours ? "template0"
		 : k == 0   ? ours
			    : "ct_probe");
	pgt_exec_db(pg, sql);
	char tpl[600];
	snprintf(tpl, sizeof(tpl), "%s", k == 0 ? CT_TEMPLATE : pgt_connstr_on(k, CT_TEMPLATE));
	if (!have_ours) {
		pgt_exec_db(tpl, "create extension pgq");
		pgt_exec_db(tpl, "create extension pgq_node");
	}
}

char *ct_node_db(void)
{
	return ct_node_db_on(0);
}

char *ct_node_db_on(int k)
{
	static int seq;
	make_template(k);
	char name[64], sql[160], pg[600];
	snprintf(name, sizeof(name), "ctn_%d_%d", (int)getpid(), ++seq);
	snprintf(sql, sizeof(sql), "create database %s template " CT_TEMPLATE, name);
	snprintf(pg, sizeof(pg), "%s", admin_db(k));
	pgt_exec_db(pg, sql);
	char *db = strdup(k == 0 ? name : pgt_connstr_on(k, name));
	ck_assert_ptr_nonnull(db);
	return db;
}

static char *loc(const char *db)
{
	char *s = strdup(pgt_connstr(db, false));
	ck_assert_ptr_nonnull(s);
	return s;
}

/* Run a pgq_node call returning (ret_code, ret_note, ...); assert ret_code < 300. */
static void node_call(const char *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void node_call(const char *db, const char *fmt, ...)
{
	char sql[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	PGconn *c = pgt_connect(db);
	PGresult *r = PQexec(c, sql);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
	ck_assert_msg(atoi(PQgetvalue(r, 0, 0)) < 300, "%s: %s %s", sql, PQgetvalue(r, 0, 0),
		      PQgetvalue(r, 0, 1));
	PQclear(r);
	PQfinish(c);
}

void ct_make_root(const char *db, const char *name)
{
	ct_make_root_q(CT_QUEUE, db, name);
}

void ct_make_root_q(const char *q, const char *db, const char *name)
{
	char *l = loc(db);
	node_call(db, "select * from pgq_node.register_location('%s', '%s', '%s', false)", q, name,
		  l);
	node_call(db,
		  "select * from pgq_node.create_node('%s', 'root', '%s', 'w_%s', NULL,"
		  " NULL, NULL)",
		  q, name, name);
	char sql[256];
	snprintf(sql, sizeof(sql),
		 "select pgq.set_queue_config('%s', 'ticker_max_lag', '0'),"
		 " pgq.set_queue_config('%s', 'ticker_idle_period', '0')",
		 q, q);
	pgt_exec_db(db, sql);
	free(l);
}

void ct_make_sub(const char *type, const char *db, const char *name, const char *prov_db,
		 const char *prov_name, const char *root_db)
{
	ct_make_sub_q(CT_QUEUE, type, db, name, prov_db, prov_name, root_db, NULL);
}

void ct_make_sub_q(const char *q, const char *type, const char *db, const char *name,
		   const char *prov_db, const char *prov_name, const char *root_db,
		   const char *combined)
{
	char *l = loc(db);
	node_call(root_db, "select * from pgq_node.register_location('%s', '%s', '%s', false)", q,
		  name, l);
	if (strcmp(prov_db, root_db) != 0)
		node_call(prov_db,
			  "select * from pgq_node.register_location('%s', '%s', '%s', false)", q,
			  name, l);
	char sql[512];
	snprintf(sql, sizeof(sql),
		 "select global_watermark from pgq_node.register_subscriber('%s', '%s', 'w_%s',"
		 " NULL)",
		 q, name, name);
	int64_t gwm = pgt_int_db(prov_db, sql);
	node_call(db, "select * from pgq_node.register_location('%s', '%s', '%s', false)", q, name,
		  l);
	/* the member map from the root */
	PGconn *rc = pgt_connect(root_db);
	snprintf(sql, sizeof(sql),
		 "select node_name, node_location, dead from pgq_node.get_queue_locations('%s')",
		 q);
	PGresult *r = PQexec(rc, sql);
	ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
	for (int i = 0; i < PQntuples(r); i++)
		node_call(db, "select * from pgq_node.register_location('%s', '%s', '%s', %s)", q,
			  PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
			  strcmp(PQgetvalue(r, i, 2), "t") == 0 ? "true" : "false");
	PQclear(r);
	PQfinish(rc);
	char comb[128];
	snprintf(comb, sizeof(comb), combined ? "'%s'" : "NULL", combined ? combined : "");
	node_call(db,
		  "select * from pgq_node.create_node('%s', '%s', '%s', 'w_%s', '%s',"
		  " %" PRId64 ", %s)",
		  q, type, name, name, prov_name, gwm, comb);
	free(l);
}

/* ---- workers ---- */

static void on_error(PgqevCascade *w, const PgqevError *err, void *arg)
{
	CtWorker *x = arg;
	if (strstr(err->message, "no tick notifications"))
		return; /* PgQ 3.5 has no tick channel: polling is expected there */
	x->errors++;
	snprintf(x->last_error, sizeof(x->last_error), "%s", err->message);
	if (!x->quiet)
		fprintf(stderr, "# cascade error: %s\n", err->message);
}

static PgqevVerdict on_batch(PgqevCascade *w, PgqevBatch *b, void *arg)
{
	CtWorker *x = arg;
	x->chunks++;
	if (x->sleep_ms_per_chunk)
		usleep((useconds_t)x->sleep_ms_per_chunk * 1000);
	if (!x->apply)
		return PGQEV_DONE;
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		PgqevEvent *e = pgqev_batch_event(b, i);
		char id[32];
		snprintf(id, sizeof(id), "%" PRId64, pgqev_event_id(e));
		const char *p[8] = {id,
				    pgqev_event_time(e),
				    pgqev_event_type(e),
				    pgqev_event_data(e),
				    pgqev_event_extra(e, 1),
				    pgqev_event_extra(e, 2),
				    pgqev_event_extra(e, 3),
				    pgqev_event_extra(e, 4)};
		if (pgqev_batch_target_exec(
			    b,
			    "insert into applied values ($1, $2, $3, $4, $5, $6, $7,"
			    " $8)",
			    8, p) != 0)
			return PGQEV_FAIL;
	}
	return PGQEV_DONE;
}

void ct_start(CtWorker *x, const char *db, pgqev_usec_t poll)
{
	ct_start_on(x, cs_base(), db, poll);
}

void ct_start_on(CtWorker *x, struct event_base *base, const char *db, pgqev_usec_t poll)
{
	ct_start_q(x, base, CT_QUEUE, db, poll);
}

void ct_start_q(CtWorker *x, struct event_base *base, const char *q, const char *db,
		pgqev_usec_t poll)
{
	PgqevCascadeConfig cfg;
	pgqev_cascade_config_init(&cfg);
	cfg.conninfo = pgt_connstr(db, false);
	cfg.queue = q;
	cfg.poll_interval = poll;
	cfg.wm_period = x->wm_period ? x->wm_period : 200 * PGQEV_USEC_PER_MSEC;
	cfg.fail_delay = 50 * PGQEV_USEC_PER_MSEC;
	cfg.fail_cap = 500 * PGQEV_USEC_PER_MSEC;
	cfg.fetch_size = 64;
	cfg.on_batch = x->no_handler ? NULL : on_batch;
	cfg.on_error = on_error;
	cfg.arg = x;
	cfg.worker = x->worker;
	x->db = db;
	char eb[256];
	x->w = pgqev_cascade_new(base, &cfg, eb, sizeof(eb));
	ck_assert_msg(x->w != NULL, "%s", eb);
	ck_assert_int_eq(pgqev_cascade_start(x->w), 0);
}

void ct_stop(CtWorker *x)
{
	x->w = pgqev_cascade_free(x->w);
}

bool ct_has_error(void *arg)
{
	CtErrCond *e = arg;
	return e->x->errors > 0 && strstr(e->x->last_error, e->needle) != NULL;
}

void ct_assert_same(const char *what, char *a, char *b)
{
	ck_assert_msg(strcmp(a, b) == 0, "%s differ: %s vs %s", what, a, b);
	free(a);
	free(b);
}

void ct_make_applied(const char *db)
{
	pgt_exec_db(db, "create table applied (ev_id int8, ev_time timestamptz, ev_type text,"
			" ev_data text, ev_extra1 text, ev_extra2 text, ev_extra3 text,"
			" ev_extra4 text)");
}

/* ---- canonical forms ---- */

#define CANON                                                                                   \
	"select count(*) || ':' || coalesce(md5(string_agg(concat_ws('|', ev_id, ev_time,"      \
	" coalesce(ev_type, '<n>'), coalesce(ev_data, '<n>'), coalesce(ev_extra1, '<n>'),"      \
	" coalesce(ev_extra2, '<n>'), coalesce(ev_extra3, '<n>'), coalesce(ev_extra4, '<n>'))," \
	" E'\\n' order by ev_id)), '') from "

char *ct_events(const char *db, bool applied)
{
	PGconn *c = pgt_connect(db);
	char sql[1024];
	if (applied) {
		snprintf(sql, sizeof(sql), "%s applied", CANON);
	} else {
		char *tbl = pgt_value(c, "select queue_data_pfx from pgq.queue"
					 " where queue_name = '" CT_QUEUE "'");
		snprintf(sql, sizeof(sql), "%s %s", CANON, tbl);
		free(tbl);
	}
	char *v = pgt_value(c, sql);
	PQfinish(c);
	return v;
}

char *ct_ticks(const char *db, int64_t from, int64_t to)
{
	char sql[1024];
	snprintf(
		sql, sizeof(sql),
		"select count(*) || ':' || coalesce(md5(string_agg(t.tick_id || '@' || t.tick_time,"
		" ',' order by t.tick_id)), '') from pgq.tick t join pgq.queue q"
		" on q.queue_id = t.tick_queue where q.queue_name = '" CT_QUEUE "'"
		" and t.tick_id > %" PRId64 " and t.tick_id <= %" PRId64,
		from, to);
	PGconn *c = pgt_connect(db);
	char *v = pgt_value(c, sql);
	PQfinish(c);
	return v;
}

int64_t ct_last_tick(const char *db)
{
	return pgt_int_db(db, "select max(t.tick_id) from pgq.tick t join pgq.queue q"
			      " on q.queue_id = t.tick_queue where q.queue_name = '" CT_QUEUE "'");
}

int64_t ct_completed(const char *db, const char *node)
{
	char sql[256];
	snprintf(sql, sizeof(sql),
		 "select coalesce(max(last_tick_id), 0) from pgq_node.local_state"
		 " where queue_name = '" CT_QUEUE "' and consumer_name = 'w_%s'",
		 node);
	return pgt_int_db(db, sql);
}

void ct_produce(const char *db, int from, int to)
{
	PGconn *c = pgt_connect(db);
	pgt_exec(c, "begin");
	for (int i = from; i < to; i++) {
		char sql[512];
		switch (i % 4) {
		case 0:
			snprintf(sql, sizeof(sql),
				 "select pgq.insert_event('" CT_QUEUE "', 'num', '%d')", i);
			break;
		case 1:
			snprintf(sql, sizeof(sql),
				 "select pgq.insert_event('" CT_QUEUE
				 "', 'I:id', 'id=%d&v=a''b\"c\\\\d',"
				 " 'public.t', NULL, 'x,y', '{z}')",
				 i);
			break;
		case 2:
			snprintf(sql, sizeof(sql),
				 "select pgq.insert_event('" CT_QUEUE
				 "', NULL, NULL, 'e1 %d', 'e2',"
				 " NULL, 'NULL')",
				 i);
			break;
		default:
			snprintf(sql, sizeof(sql),
				 "select pgq.insert_event('" CT_QUEUE "', 'multi', E'line1\\nline2"
				 " \\t %d ü', '', ' ', NULL, NULL)",
				 i);
			break;
		}
		pgt_exec(c, sql);
	}
	pgt_exec(c, "commit");
	PQfinish(c);
}

typedef struct SyncCond {
	PGconn *root;
	PGconn *conns[8];
	const char *const *names;
	int n;
	int64_t next_ms;
} SyncCond;

static int64_t completed_on(PGconn *c, const char *node)
{
	char sql[256];
	snprintf(sql, sizeof(sql),
		 "select coalesce(max(last_tick_id), 0) from pgq_node.local_state"
		 " where queue_name = '" CT_QUEUE "' and consumer_name = 'w_%s'",
		 node);
	return pgt_int(c, sql);
}

#define LAST_TICK_SQL                                            \
	"select max(t.tick_id) from pgq.tick t join pgq.queue q" \
	" on q.queue_id = t.tick_queue where q.queue_name = '" CT_QUEUE "'"

/* -1 on a leaf (no queue) */
#define LOCAL_TICK_SQL                                                         \
	"select coalesce(max(t.tick_id), -1) from pgq.tick t join pgq.queue q" \
	" on q.queue_id = t.tick_queue where q.queue_name = '" CT_QUEUE "'"

static bool synced(void *arg)
{
	SyncCond *s = arg;
	/* the loop may turn often: look at the databases every 50 ms, on
	   connections kept open (a connect per look would starve the loop) */
	if (!pgt_due(&s->next_ms, 50))
		return false;
	int64_t last = pgt_int(s->root, LAST_TICK_SQL);
	for (int i = 0; i < s->n; i++) {
		if (completed_on(s->conns[i], s->names[i]) != last)
			return false;
		/* a branch worker commits its position first and makes the tick in
		   the next transaction: a test that stops it in between would see a
		   branch one tick short (the resurrect case's gravestone was) */
		int64_t local = pgt_int(s->conns[i], LOCAL_TICK_SQL);
		if (local >= 0 && local != last)
			return false;
	}
	return true;
}

bool ct_wait_synced(const char *root_db, const char *const *dbs, const char *const *names, int n,
		    int timeout_ms)
{
	ck_assert_int_le(n, 8);
	SyncCond s = {.root = pgt_connect(root_db), .names = names, .n = n};
	for (int i = 0; i < n; i++)
		s.conns[i] = pgt_connect(dbs[i]);
	/* a deadline for catching up, no promise: it scales with the sanitizer and
	   valgrind runs' factor (a branch started late works through every tick) */
	bool ok = cs_run_until(synced, &s, (int)(timeout_ms * pgt_time_factor()));
	if (!ok) {
		fprintf(stderr, "# not synced: root last tick %" PRId64,
			pgt_int(s.root, LAST_TICK_SQL));
		for (int i = 0; i < n; i++)
			fprintf(stderr, ", %s at %" PRId64, names[i],
				completed_on(s.conns[i], names[i]));
		fprintf(stderr, "\n");
	}
	PQfinish(s.root);
	for (int i = 0; i < n; i++)
		PQfinish(s.conns[i]);
	return ok;
}

/* ---- exactly-once checks ---- */

int ct_cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

int64_t *ct_fetch_sorted(const char *db, const char *sql, size_t *n)
{
	PGconn *k = pgt_connect(db);
	PGresult *r = PQexec(k, sql);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(k));
	*n = (size_t)PQntuples(r);
	int64_t *v = malloc((*n + 1) * sizeof(int64_t));
	ck_assert_ptr_nonnull(v);
	for (size_t i = 0; i < *n; i++)
		v[i] = strtoll(PQgetvalue(r, (int)i, 0), NULL, 10);
	PQclear(r);
	PQfinish(k);
	qsort(v, *n, sizeof(int64_t), ct_cmp64);
	return v;
}

bool ct_contains(const int64_t *v, size_t n, int64_t x)
{
	return bsearch(&x, v, n, sizeof(int64_t), ct_cmp64) != NULL;
}

typedef struct ExactCond {
	const char *db, *sql;
	size_t want;
	const CtExactly *how;
} ExactCond;

static bool count_reached(void *arg)
{
	ExactCond *k = arg;
	char sql[1200];

	if (k->how && k->how->pump)
		k->how->pump(k->how->arg);
	snprintf(sql, sizeof(sql), "select count(*) from (%s) x", k->sql);
	return pgt_int_db(k->db, sql) >= (int64_t)k->want;
}

void ct_expect_exactly(const char *what, const char *db, const char *sql, const int64_t *want,
		       size_t nwant, const CtExactly *how)
{
	ExactCond k = {db, sql, nwant, how};
	int timeout = (int)((how && how->timeout_ms ? how->timeout_ms : 30000) * pgt_time_factor());
	size_t n;
	int64_t *v;

	if (!pgt_wait_until(count_reached, &k, timeout, 100)) {
		if (how && how->diag) {
			v = ct_fetch_sorted(db, sql, &n);
			how->diag(what, want, nwant, v, n);
			free(v);
			/* a stall or a loss: do they arrive later? */
			bool later = pgt_wait_until(count_reached, &k, 60000, 200);
			v = ct_fetch_sorted(db, sql, &n);
			fprintf(stderr, "# DIAG %s: after 60 s more: %zu events (%s)\n", what, n,
				later ? "arrived late: a stall" : "still missing");
			if (later)
				how->diag(what, want, nwant, v, n);
			free(v);
		}
		ck_abort_msg("%s: the consumer did not get %zu events within %d s", what, nwant,
			     timeout / 1000);
	}
	v = ct_fetch_sorted(db, sql, &n);
	for (size_t i = 1; i < n; i++)
		ck_assert_msg(v[i] != v[i - 1], "%s: event %" PRId64 " twice", what, v[i]);
	ck_assert_msg(n == nwant, "%s: %zu events, expected %zu", what, n, nwant);
	for (size_t i = 0; i < n; i++)
		ck_assert_msg(v[i] == want[i], "%s: event %" PRId64 " lost (have %" PRId64 ")",
			      what, want[i], v[i]);
	free(v);
}

/* ---- a loop thread, values, Debian databases ---- */

static void *loop_run(void *arg)
{
	CtLoop *l = arg;
	while (!l->stop)
		event_base_loop(l->base, EVLOOP_ONCE);
	return NULL;
}

void ct_loop_go(CtLoop *l)
{
	l->stop = false;
	ck_assert_int_eq(pthread_create(&l->th, NULL, loop_run, l), 0);
}

void ct_loop_hold(CtLoop *l)
{
	l->stop = true;
	pthread_join(l->th, NULL);
}

char *ct_value(const char *db, const char *sql)
{
	PGconn *c = pgt_connect(db);
	char *v = pgt_value(c, sql);
	PQfinish(c);
	return v ? v : strdup("(null)");
}

void ct_expect_value(const char *db, const char *sql, const char *want)
{
	char *v = ct_value(db, sql);
	ck_assert_msg(strcmp(v, want) == 0, "%s: %s: got \"%s\", want \"%s\"", db, sql, v, want);
	free(v);
}

char *ct_debian_db(const char *name)
{
	char sql[200];
	snprintf(sql, sizeof(sql), "create database %s template template0", name);
	pgt_exec_db("postgres", sql);
	pgt_exec_db(name, "create extension pgq");
	pgt_exec_db(name, "create extension pgq_node");
	return strdup(name);
}

void ct_terminate_workers(const char *db)
{
	char sql[300];
	snprintf(sql, sizeof(sql),
		 "select count(pg_terminate_backend(pid)) from pg_stat_activity"
		 " where datname = '%s' and application_name = 'pgqev-cascade'",
		 db);
	ck_assert_int_gt(pgt_int_db("postgres", sql), 0);
}

typedef struct WritingCond {
	PGconn *c;
	char sql[400];
	int64_t next_ms;
} WritingCond;

static bool writing(void *arg)
{
	WritingCond *t = arg;
	/* the loop runs the workers between looks */
	if (!pgt_due(&t->next_ms, 5))
		return false;
	return pgt_int(t->c, t->sql) > 0;
}

bool ct_wait_writing(const char *db, int timeout_ms)
{
	WritingCond t = {.c = pgt_connect("postgres")};
	snprintf(t.sql, sizeof(t.sql),
		 "select count(*) from pg_stat_activity where datname = '%s'"
		 " and application_name = 'pgqev-cascade' and backend_xid is not null",
		 db);
	bool ok = cs_run_until(writing, &t, timeout_ms);
	PQfinish(t.c);
	return ok;
}
