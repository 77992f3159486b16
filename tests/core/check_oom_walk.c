/*
 * Out-of-memory walk: the test links the core and the consumer with
 * -Wl,--wrap for malloc, calloc, realloc, strdup, strndup, asprintf,
 * vasprintf and free, so every allocation our code makes can be made to fail.
 * For n = 1, 2, ... it runs a scenario with the n-th allocation failing, until
 * a run makes fewer than n allocations. Each run must end without a crash,
 * with every allocation of ours freed (counted here; ASan checks the rest in
 * sanitizer runs), and either succeed or fail with a clear error: -ENOMEM, an
 * "out of memory" message, or (at run time) a retry that then succeeds.
 *
 * Scenarios: the connection layer (connect, a query with parameters, LISTEN),
 * the config reader (a file with every kind of value), and the consumer
 * (new, start, one batch delivered and finished).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <pgqd-ev/pgqev_consumer.h>
#include <pgqd-ev/pqev_config.h>
#include <pgqd-ev/pqev_conn.h>

#include "pgtest.h"

/* ---- the allocator wrappers ---- */

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_vasprintf(char **out, const char *fmt, va_list ap);
void __real_free(void *p);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap);
int __wrap_asprintf(char **out, const char *fmt, ...);
void __wrap_free(void *p);

/* Check (linked statically) allocates in every ck_assert: nothing asserts while
   armed; what goes wrong is written into `problem` and asserted after. */
static bool armed;    /* counting (and failing) allocations */
static long fail_at;  /* the allocation to fail, 1-based; 0: none */
static long allocs;   /* allocations seen while armed */
static long live;     /* allocations not freed yet, while armed */
static bool injected; /* the failure happened in this run */
static char problem[1200];

#define PROBLEM(...)                                                     \
	do {                                                             \
		if (!problem[0])                                         \
			snprintf(problem, sizeof(problem), __VA_ARGS__); \
	} while (0)

static void *fail_site; /* where the failed allocation was called from */

#define fail_now() fail_here(__builtin_return_address(0))

static bool fail_here(void *site)
{
	if (!armed)
		return false;
	if (++allocs == fail_at) {
		injected = true;
		fail_site = site;
		errno = ENOMEM; /* as the C library's allocators do */
		return true;
	}
	return false;
}

/* The failed call's place as "binary+offset", for addr2line. */
static const char *site_name(void)
{
	static char buf[600];
	Dl_info di;
	if (fail_site && dladdr(fail_site, &di) && di.dli_fname)
		snprintf(buf, sizeof(buf), "%s+0x%lx", di.dli_fname,
			 (unsigned long)((char *)fail_site - (char *)di.dli_fbase));
	else
		snprintf(buf, sizeof(buf), "?");
	return buf;
}

static void *counted(void *p)
{
	if (armed && p)
		live++;
	return p;
}

void *__wrap_malloc(size_t size)
{
	return fail_now() ? NULL : counted(__real_malloc(size));
}

void *__wrap_calloc(size_t n, size_t size)
{
	return fail_now() ? NULL : counted(__real_calloc(n, size));
}

void *__wrap_realloc(void *p, size_t size)
{
	if (fail_now())
		return NULL;
	void *q = __real_realloc(p, size);
	return p ? q : counted(q);
}

char *__wrap_strdup(const char *s)
{
	return fail_now() ? NULL : counted(__real_strdup(s));
}

char *__wrap_strndup(const char *s, size_t n)
{
	return fail_now() ? NULL : counted(__real_strndup(s, n));
}

int __wrap_vasprintf(char **out, const char *fmt, va_list ap)
{
	if (fail_now()) {
		*out = NULL;
		return -1;
	}
	int r = __real_vasprintf(out, fmt, ap);
	if (r >= 0)
		counted(*out);
	return r;
}

int __wrap_asprintf(char **out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (fail_now()) {
		*out = NULL;
		return -1;
	}
	allocs--; /* counted again by the call below */
	int r = __wrap_vasprintf(out, fmt, ap);
	va_end(ap);
	return r;
}

void __wrap_free(void *p)
{
	if (armed && p)
		live--;
	__real_free(p);
}

static void arm(long n)
{
	fail_at = n;
	allocs = live = 0;
	injected = false;
	problem[0] = '\0';
	armed = true;
}

static void disarm(void)
{
	armed = false;
}

/* ---- the walk ---- */

/* One run with allocation n failing; false once a run had no n-th allocation. */
typedef bool (*Scenario)(long n);

static void walk(const char *what, Scenario run)
{
	/* OOM_WALK_FROM=n starts at allocation n, to reproduce one failure */
	long n = getenv("OOM_WALK_FROM") ? atol(getenv("OOM_WALK_FROM")) : 1;
	int64_t t0 = pgt_now_ms();
	for (; n < 5000; n++) {
		bool more = run(n);
		ck_assert_msg(!problem[0], "%s: failing allocation %ld (at %s): %s", what, n,
			      site_name(), problem);
		ck_assert_msg(live == 0, "%s: failing allocation %ld of %ld: %ld not freed", what,
			      n, allocs, live);
		if (!more)
			break;
	}
	ck_assert_msg((n > 3 || getenv("OOM_WALK_FROM")) && n < 5000, "%s: walked %ld allocations",
		      what, n);
	fprintf(stderr, "# %s: walked %ld allocations in %.1f s\n", what, n - 1,
		(double)(pgt_now_ms() - t0) / 1000);
}

static bool has_oom_text(const char *s)
{
	return s && strstr(s, "out of memory") != NULL;
}

/* ---- connection layer ---- */

typedef struct ConnRun {
	int done;
	PqevStatus status;
	char error[512];
	int events;
} ConnRun;

static void conn_done(PqevConn *c, const PqevReply *r, void *arg)
{
	ConnRun *cr = arg;
	cr->done++;
	cr->status = r->status;
	snprintf(cr->error, sizeof(cr->error), "%s", r->error ? r->error : "");
}

static void conn_event(PqevConn *c, const PqevConnEvent *ev, void *arg)
{
	ConnRun *cr = arg;
	cr->events++;
	if (!ev->message || !ev->message[0])
		PROBLEM("event %d without a message", ev->type);
}

static const char *conn_db;

static bool run_conn(long n)
{
	struct event_base *base = event_base_new();
	ConnRun cr = {0};
	arm(n);
	PqevConnLimit *lim = pqev_connlimit_new(base, 2);
	PqevConn *c = NULL;
	if (lim) {
		PqevConnConfig cfg;
		pqev_conn_config_init(&cfg);
		cfg.conninfo = pgt_connstr(conn_db, true);
		cfg.name = "oom";
		cfg.statement_timeout = 5 * USEC_PER_SEC;
		cfg.retry_base = 5 * USEC_PER_MSEC;
		PqevConnCallbacks cb = {.on_event = conn_event, .arg = &cr};
		c = pqev_conn_new(lim, &cfg, &cb);
	}
	int rc = c ? pqev_conn_start(c) : -ENOMEM;
	if (rc == 0) {
		const char *params[2] = {"forty", "two"};
		rc = pqev_conn_query(c, "select $1::text || $2::text", 2, params, conn_done, &cr);
		if (rc == 0) {
			int lrc = pqev_conn_listen(c, "oom_channel");
			if (lrc != 0 && lrc != -ENOMEM)
				PROBLEM("listen: %d", lrc);
			int64_t deadline = pgt_now_ms() + 10000;
			while (!cr.done && pgt_now_ms() < deadline)
				event_base_loop(base, EVLOOP_ONCE);
			if (cr.done != 1)
				PROBLEM("the query completed %d times", cr.done);
			/* failed only as the layer fails any request: with a reason */
			if (cr.status != PQEV_OK && !cr.error[0])
				PROBLEM("no reason for status %d", cr.status);
		} else if (rc != -ENOMEM) {
			PROBLEM("query: %d", rc);
		}
	} else if (rc != -ENOMEM) {
		PROBLEM("start: %d", rc);
	}
	pqev_conn_free(c);
	event_base_loop(base, EVLOOP_NONBLOCK);
	int frc = pqev_connlimit_free(lim);
	disarm();
	ck_assert_int_eq(frc, 0);
	ck_assert_int_eq(cr.done, rc == 0 ? 1 : 0);
	event_base_free(base);
	return injected;
}

START_TEST(test_oom_walk_connection)
{
	conn_db = pgt_db_new();
	walk("connection", run_conn);
}
END_TEST

/* ---- config reader ---- */

typedef struct WCfg {
	char *connstr;
	char *path;
	PqevConfList dbs;
	int count;
	usec_t period;
	bool flag;
	int mode;
} WCfg;

static const PqevConfEnumItem wmodes[] = {{"a", 1}, {"b", 2}, {NULL, 0}};
static const PqevConfKey wkeys[] = {
	PQEV_CONF_STRING("connstr", WCfg, connstr, "dbname=x", 0),
	PQEV_CONF_PATH("path", WCfg, path, NULL, 0),
	PQEV_CONF_LIST("dbs", WCfg, dbs, "", 0),
	PQEV_CONF_INT("count", WCfg, count, "3", 0, 0, 100),
	PQEV_CONF_SECONDS("period", WCfg, period, "1", 0, 0, 60),
	PQEV_CONF_BOOL("flag", WCfg, flag, "0", 0),
	PQEV_CONF_ENUM("mode", WCfg, mode, "a", 0, wmodes),
	PQEV_CONF_END,
};
static const PqevConfSection wsections[] = {{.name = "main", .keys = wkeys}, {.name = NULL}};
static const PqevConfSchema wschema = {.size = sizeof(WCfg), .sections = wsections};

static int conf_errors;
static bool conf_oom_said;

static void conf_report(const PqevConfDiag *d, void *arg)
{
	if (d->severity == PQEV_CONF_ERROR)
		conf_errors++;
	conf_oom_said |= has_oom_text(d->message);
	if (d->severity == PQEV_CONF_ERROR && !has_oom_text(d->message))
		PROBLEM("config error that is not about memory: %s", d->message);
}

static bool run_config(long n)
{
	void *out = NULL;
	conf_errors = 0;
	conf_oom_said = false;
	arm(n);
	int rc = pqev_conf_load_string(&wschema,
				       "[main]\nconnstr = host=h dbname=d password=p\n"
				       "path = /tmp/x\ndbs = a, b, c, d\ncount = 7\n"
				       "period = 2.5\nflag = yes\nmode = b\n",
				       "walk.ini", NULL, &out, conf_report, NULL);
	int count = out ? ((WCfg *)out)->count : -1;
	pqev_conf_free(&wschema, out);
	disarm();
	if (rc == 0) {
		ck_assert_int_eq(count, 7);
	} else {
		/* an allocation failure is never reported as a mistake in the file */
		ck_assert_msg(rc == -ENOMEM || conf_oom_said,
			      "allocation %ld (at %s): rc %d, %d errors, none says why (%s)", n,
			      site_name(), rc, conf_errors, problem);
		ck_assert_int_eq(count, -1);
	}
	return injected;
}

START_TEST(test_oom_walk_config)
{
	walk("config", run_config);
}
END_TEST

/* ---- consumer ---- */

typedef struct ConsRun {
	int events;
	int errors;
	bool oom_said;
	char last[1100];
} ConsRun;

static PgqevVerdict cons_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	ConsRun *r = arg;
	r->events += (int)pgqev_batch_count(b);
	return PGQEV_DONE;
}

static void cons_error(PgqevConsumer *c, const PgqevError *err, void *arg)
{
	ConsRun *r = arg;
	r->errors++;
	r->oom_said |= has_oom_text(err->message);
	snprintf(r->last, sizeof(r->last), "%s", err->message);
}

static const char *cons_db;
static PGconn *cons_pg; /* the test's own connection, kept across runs */

static void debug_hook(const char *name, const char *msg, void *arg)
{
	fprintf(stderr, "# debug %s: %s\n", name, msg);
}

static void cons_state(PgqevConsumer *c, PgqevState o, PgqevState st, void *arg)
{
	if (getenv("OOM_WALK_DEBUG"))
		fprintf(stderr, "# state %s -> %s\n", pgqev_state_name(o), pgqev_state_name(st));
}

static bool run_consumer(long n)
{
	char name[32];
	snprintf(name, sizeof(name), "walk%ld", n);
	PGconn *pg = cons_pg;
	char sql[256];
	snprintf(sql, sizeof(sql),
		 "select pgq.register_consumer('q', '%s'), pgq.insert_event('q', 't', 'a'),"
		 " pgq.insert_event('q', 't', 'b')",
		 name);
	pgt_exec(pg, sql);
	pgt_exec(pg, "select pgq.ticker()");

	struct event_base *base = event_base_new();
	ConsRun r = {0};
	char eb[256] = "";
	PqevConnLimit *lim = pqev_connlimit_new(base, 0);
	if (getenv("OOM_WALK_DEBUG"))
		pqev_connlimit_set_debug(lim, debug_hook, NULL);
	arm(n);
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	cfg.conninfo = pgt_connstr(cons_db, false);
	cfg.queue = "q";
	cfg.consumer = name;
	cfg.fail_delay = 5 * USEC_PER_MSEC;
	cfg.fail_cap = 50 * USEC_PER_MSEC;
	cfg.poll_interval = 50 * USEC_PER_MSEC;
	cfg.on_batch = cons_batch;
	cfg.on_error = cons_error;
	cfg.on_state = cons_state;
	cfg.limiter = (PgqevLimiter *)lim; /* the core limiter under its public name */
	cfg.arg = &r;
	PgqevConsumer *c = pgqev_consumer_new(base, &cfg, eb, sizeof(eb));
	int rc = c ? pgqev_consumer_start(c) : -ENOMEM;
	if (!c) {
		if (strcmp(eb, "out of memory") != 0)
			PROBLEM("errbuf: %s", eb);
	} else if (rc < 0) {
		if (rc != -ENOMEM)
			PROBLEM("start: %d", rc);
	} else {
		/* every failure is retried: the batch arrives and is finished (on the
		   server: a failure after the COMMIT was queued does not undo it) */
		int64_t deadline = pgt_now_ms() + 15000;
		bool finished = false;
		while (!(r.events >= 2 && finished) && pgt_now_ms() < deadline) {
			event_base_loop(base, EVLOOP_ONCE);
			armed = false; /* a pause: the check's allocations do not count */
			snprintf(
				sql, sizeof(sql),
				"select count(*) from pgq.subscription s"
				" join pgq.consumer co on co.co_id = s.sub_consumer"
				" where co.co_name = '%s' and s.sub_batch is null and s.sub_last_tick"
				" = (select max(tick_id) from pgq.tick where tick_queue = s.sub_queue)",
				name);
			finished = pgt_int(pg, sql) == 1;
			armed = true;
		}
		if (r.events < 2 || !finished)
			PROBLEM("%d events, %d errors, state %s, last: %s", r.events, r.errors,
				pgqev_state_name(pgqev_consumer_state(c)), r.last);
	}
	pgqev_consumer_free(c);
	event_base_loop(base, EVLOOP_NONBLOCK);
	disarm();
	ck_assert_int_eq(pqev_connlimit_free(lim), 0);
	event_base_free(base);
	return injected;
}

START_TEST(test_oom_walk_consumer)
{
	cons_db = pgt_db_new();
	/* tick on every pgq.ticker() call */
	pgt_exec_db(cons_db, "select pgq.create_queue('q'),"
			     " pgq.set_queue_config('q', 'ticker_max_lag', '0'),"
			     " pgq.set_queue_config('q', 'ticker_idle_period', '0')");
	cons_pg = pgt_connect(cons_db);
	walk("consumer", run_consumer);
	PQfinish(cons_pg);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("oom-walk");
	TCase *tc = pgt_tcase("oom-walk", 240);
	tcase_add_test(tc, test_oom_walk_connection);
	tcase_add_test(tc, test_oom_walk_config);
	tcase_add_test(tc, test_oom_walk_consumer);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
