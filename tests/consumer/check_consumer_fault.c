/*
 * libpgqev under faults, caused for real: a terminated backend mid-batch, a
 * SIGKILLed consumer process, cooperative subconsumers (no overlap, dead
 * takeover), exactly-once into a target database across terminated backends
 * and a failure between the target commit and the source finish, and interop
 * with Debian's PgQ 3.5 C extension ticked by Debian's pgqd.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
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

static void terminate_consumers(const char *db)
{
	PGconn *c = pgt_connect(db);
	ck_assert_int_ge(pgt_int(c, "select count(pg_terminate_backend(pid)) from pg_stat_activity"
				    " where application_name = 'pgqev-consumer'"
				    " and datname = current_database()"),
			 1);
	PQfinish(c);
}

static PgqevVerdict terminate_on_first(Rec *r, PgqevBatch *b)
{
	if (r->hook_calls == 1)
		terminate_consumers(r->hook_arg);
	return PGQEV_DONE;
}

START_TEST(test_terminated_backend_redelivers_batch)
{
	const char *db = cs_db_with_queue("q");
	Rec r = {.name = "terminate", .hook = terminate_on_first, .quiet = true};
	r.hook_arg = (void *)db;
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.fetch_size = 10;
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	cs_produce(db, "q", 0, 25);
	cs_tick(db);
	/* the first chunk (10) is lost with the backend; then all 25 again */
	CountCond cc = {&r, 35};
	ck_assert(cs_run_until(cs_has_count, &cc, 30000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	ck_assert_uint_eq(r.n, 35);
	for (size_t i = 0; i < r.n; i++)
		ck_assert_int_eq(r.batches[i], r.batches[0]);
	size_t dups = cs_assert_at_least_once(&r, 0, 25);
	ck_assert_uint_eq(dups, 10);
	ck_assert_int_ge(r.errors[PGQEV_ERR_CONNECTION], 1);
	ck_assert_int_ge(r.states[PGQEV_STATE_BACKOFF], 1);
	ck_assert_uint_eq(pgqev_consumer_batches(r.c), 1);
	rec_free(&r);
}
END_TEST

/* --- a consumer process killed in the middle of a batch --- */

static int child_pipe = -1;

static PgqevVerdict report_and_hang(Rec *r, PgqevBatch *b)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "%lld\n", (long long)pgqev_batch_id(b));
	if (write(child_pipe, line, (size_t)n) != n)
		_exit(3);
	for (;;)
		pause(); /* wait for SIGKILL inside the handler */
}

static void child_consumer(const char *db)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	cs_setup();
	Rec r = {.name = "child", .hook = report_and_hang, .quiet = true};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cs_start(&r, &cfg);
	cs_run_for(60000);
	_exit(4);
}

START_TEST(test_killed_process_redelivers_batch)
{
	const char *db = cs_db_with_queue("q");
	PGconn *c = pgt_connect(db);
	pgt_exec(c, "select pgq.register_consumer('q', 'c1')");
	PQfinish(c);
	cs_produce(db, "q", 0, 40);
	cs_tick(db);
	int fds[2], acks[2];
	ck_assert_int_eq(pipe(fds), 0);
	ck_assert_int_eq(pipe(acks), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(fds[0]);
		child_pipe = fds[1];
		child_consumer(db);
	}
	close(fds[1]);
	close(acks[0]);
	struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
	ck_assert_int_eq(poll(&pfd, 1, 30000), 1);
	char line[64] = "";
	ck_assert_int_gt(read(fds[0], line, sizeof(line) - 1), 0);
	close(fds[0]);
	long long child_batch = atoll(line);
	ck_assert_int_gt(child_batch, 0);
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	int status = 0;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

	/* a new process with the same consumer gets the same batch, in full */
	Rec r = {.name = "successor", .quiet = true};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cs_start(&r, &cfg);
	CountCond cc = {&r, 40};
	ck_assert(cs_run_until(cs_has_count, &cc, 30000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	ck_assert_int_eq(r.batches[0], child_batch);
	cs_assert_exactly_once(&r, 0, 40);
	rec_free(&r);
}
END_TEST

/* --- cooperative subconsumers --- */

typedef struct CoopHold {
	Rec *r;
	struct event *ev;
} CoopHold;

static void coop_release(evutil_socket_t fd, short what, void *arg)
{
	CoopHold *h = arg;
	PgqevBatch *b = h->r->held;
	h->r->held = NULL;
	ck_assert_int_eq(pgqev_batch_complete(b, PGQEV_DONE), 0);
}

static PgqevVerdict coop_hold(Rec *r, PgqevBatch *b)
{
	CoopHold *h = r->hook_arg;
	r->held = b;
	struct timeval tv = {0, 15000};
	evtimer_add(h->ev, &tv);
	return PGQEV_PENDING;
}

static bool coop_all(void *arg)
{
	Rec **rs = arg;
	return rs[0]->n + rs[1]->n >= 200;
}

START_TEST(test_coop_subconsumers_share_without_overlap)
{
	const char *db = cs_db_with_queue("q");
	PGconn *c = pgt_connect(db);
	pgt_exec(c, "select pgq_coop.register_subconsumer('q', 'grp', 'a')");
	pgt_exec(c, "select pgq_coop.register_subconsumer('q', 'grp', 'b')");
	PQfinish(c);
	for (int i = 0; i < 20; i++) {
		cs_produce(db, "q", i * 10, i * 10 + 10);
		cs_tick(db);
	}
	/* NOTE: concurrent pgq_coop.next_batch calls may deadlock in the server;
	   the consumer reports it and retries, so errors are not asserted here */
	Rec ra = {.name = "a", .hook = coop_hold, .quiet = true};
	Rec rb = {.name = "b", .hook = coop_hold, .quiet = true};
	CoopHold ha = {&ra, evtimer_new(cs_base(), coop_release, &ha)};
	CoopHold hb = {&rb, evtimer_new(cs_base(), coop_release, &hb)};
	ra.hook_arg = &ha;
	rb.hook_arg = &hb;
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &ra, db, "q", "grp");
	cfg.subconsumer = "a";
	cfg.async = true;
	cs_start(&ra, &cfg);
	cs_config(&cfg, &rb, db, "q", "grp");
	cfg.subconsumer = "b";
	cfg.async = true;
	cs_start(&rb, &cfg);
	Rec *rs[2] = {&ra, &rb};
	ck_assert(cs_run_until(coop_all, rs, 30000));
	/* the group is done with everything ticked: nothing more can come */
	ck_assert(cs_run_until_drained(db, "q", rs, 2, 20000));
	/* both worked, no batch went to both, every event exactly once */
	ck_assert_uint_gt(ra.n, 0);
	ck_assert_uint_gt(rb.n, 0);
	for (size_t i = 0; i < ra.n; i++)
		for (size_t j = 0; j < rb.n; j++)
			ck_assert_int_ne(ra.batches[i], rb.batches[j]);
	Rec all = {0};
	all.n = all.cap = ra.n + rb.n;
	all.vals = malloc(all.n * sizeof(int64_t));
	memcpy(all.vals, ra.vals, ra.n * sizeof(int64_t));
	memcpy(all.vals + ra.n, rb.vals, rb.n * sizeof(int64_t));
	cs_assert_exactly_once(&all, 0, 200);
	free(all.vals);
	ck_assert_ptr_null(ra.held);
	ck_assert_ptr_null(rb.held);
	event_free(ha.ev);
	event_free(hb.ev);
	rec_free(&ra);
	rec_free(&rb);
}
END_TEST

static PgqevVerdict hold_forever(Rec *r, PgqevBatch *b)
{
	r->held = b;
	return PGQEV_PENDING;
}

START_TEST(test_coop_dead_subconsumer_taken_over)
{
	const char *db = cs_db_with_queue("q");
	PGconn *c = pgt_connect(db);
	pgt_exec(c, "select pgq_coop.register_subconsumer('q', 'grp', 'dead')");
	PQfinish(c);
	cs_produce(db, "q", 0, 12);
	cs_tick(db);
	/* "dead" takes the batch and dies with it */
	Rec rd = {.name = "dead", .hook = hold_forever};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &rd, db, "q", "grp");
	cfg.subconsumer = "dead";
	cfg.async = true;
	cs_start(&rd, &cfg);
	CountCond cc = {&rd, 12};
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	int64_t batch = rd.batches[0];
	rec_free(&rd); /* abandoned: the server still has it on "dead" */
	/* "alive" with a dead_interval takes that batch over */
	Rec ra = {.name = "alive"};
	cs_config(&cfg, &ra, db, "q", "grp");
	cfg.subconsumer = "alive";
	cfg.dead_interval = 300 * PGQEV_USEC_PER_MSEC;
	cfg.poll_interval = 100 * PGQEV_USEC_PER_MSEC;
	cs_start(&ra, &cfg);
	cc.r = &ra;
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	ck_assert_int_eq(ra.batches[0], batch);
	cs_assert_exactly_once(&ra, 0, 12);
	c = pgt_connect(db);
	/* the dead subconsumer's registration went with the takeover */
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.get_consumer_info('q')"
				    " where consumer_name = 'grp.dead'"),
			 0);
	/* unregistering the live one is clean (no open batch after finishing) */
	ck_assert(cs_state_is(&ra, PGQEV_STATE_IDLE, 20000));
	ck_assert_int_eq(pgqev_unregister(c, "q", "grp", "alive", false), 0);
	PQfinish(c);
	rec_free(&ra);
}
END_TEST

/* --- exactly-once into a target database --- */

typedef struct EoCtx {
	const char *src_db;
	int calls;
	bool kill_src, kill_tgt;
} EoCtx;

static void terminate_target(const char *db)
{
	PGconn *c = pgt_connect(db);
	ck_assert_int_ge(pgt_int(c, "select count(pg_terminate_backend(pid)) from pg_stat_activity"
				    " where application_name = 'pgqev-consumer'"
				    " and datname = current_database()"
				    " and pid <> pg_backend_pid()"),
			 1);
	PQfinish(c);
}

static const char *eo_tgt_db;

static PgqevVerdict eo_apply(Rec *r, PgqevBatch *b)
{
	EoCtx *x = r->hook_arg;
	x->calls++;
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		const char *p[1] = {pgqev_event_data(pgqev_batch_event(b, i))};
		ck_assert_int_eq(
			pgqev_batch_target_exec(b, "insert into sink values ($1::bigint)", 1, p),
			0);
	}
	ck_assert_ptr_nonnull(pgqev_batch_target(b));
	if (x->kill_src) {
		x->kill_src = false;
		terminate_consumers(x->src_db);
	} else if (x->kill_tgt) {
		x->kill_tgt = false;
		terminate_target(eo_tgt_db);
	}
	return PGQEV_DONE;
}

static bool eo_sink_has(void *arg)
{
	int64_t want = *(int64_t *)arg;
	return pgt_int_db(eo_tgt_db, "select count(distinct v) from sink") >= want;
}

START_TEST(test_exactly_once_into_target_survives_kills)
{
	static char src[CS_DB_LEN], tgt[CS_DB_LEN];
	cs_eo_dbs(src, tgt, "q", "v bigint");
	eo_tgt_db = tgt;
	/* inject one failure of the source finish after the target committed */
	PGconn *s = pgt_connect(src);
	pgt_exec(s, "create sequence boom_seq");
	pgt_exec(s, "create table boom_armed (on_batch bigint)");
	cs_on_finish(src, "boom",
		     "exists (select 1 from public.boom_armed) and nextval('public.boom_seq') = 1",
		     "raise exception 'injected failure at finish'");
	pgt_exec(s, "select pgq.register_consumer('q', 'eo')");

	EoCtx x = {.src_db = src};
	Rec r = {.name = "eo", .hook = eo_apply, .hook_arg = &x, .quiet = true};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, src, "q", "eo");
	char tci[512];
	cs_config_target(&cfg, tci, sizeof(tci), tgt);
	cfg.fetch_size = 10;
	cs_start(&r, &cfg);

	/* 1: source backend terminated mid-batch: target rolled back, redelivered */
	x.kill_src = true;
	cs_produce(src, "q", 0, 30);
	cs_tick(src);
	int64_t want = 30;
	ck_assert(cs_run_until(eo_sink_has, &want, 30000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	ck_assert_int_ge(r.errors[PGQEV_ERR_CONNECTION], 1);

	/* 2: target backend terminated mid-batch */
	x.kill_tgt = true;
	cs_produce(src, "q", 30, 60);
	cs_tick(src);
	want = 60;
	ck_assert(cs_run_until(eo_sink_has, &want, 30000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	ck_assert_int_ge(r.errors[PGQEV_ERR_TARGET], 1);

	/* 3: target committed, source finish fails: redelivery is skipped */
	pgt_exec(s, "insert into boom_armed values (1)");
	int calls = x.calls;
	cs_produce(src, "q", 60, 75);
	cs_tick(src);
	want = 75;
	ck_assert(cs_run_until(eo_sink_has, &want, 30000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	ck_assert_int_eq(pgt_int(s, "select last_value from boom_seq"), 2); /* fired, then passed */
	ck_assert_int_ge(r.errors[PGQEV_ERR_SQL], 1);
	ck_assert_int_eq(x.calls - calls, 2); /* handler not called for the redelivery */

	PGconn *t = pgt_connect(tgt);
	ck_assert_int_eq(pgt_int(t, "select count(*) from sink"), 75);
	ck_assert_int_eq(pgt_int(t, "select count(distinct v) from sink"), 75);
	ck_assert_int_eq(pgt_int(t, "select min(v) + max(v) from sink"), 74);
	ck_assert_int_eq(pgt_int(t, "select count(*) from pgq_ext.completed_batch"
				    " where consumer_id = 'eo'"),
			 1);
	PQfinish(t);
	ck_assert_int_eq(pgt_int(s, "select count(*) from pgq.subscription"
				    " where sub_batch is not null"),
			 0);
	PQfinish(s);
	rec_free(&r);
}
END_TEST

/* --- exactly-once: a consumer process SIGKILLed after the target committed --- */

static PgqevVerdict eo_copy(Rec *r, PgqevBatch *b)
{
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		const char *p[1] = {pgqev_event_data(pgqev_batch_event(b, i))};
		if (pgqev_batch_target_exec(b, "insert into sink values ($1::bigint)", 1, p) < 0)
			return PGQEV_FAIL;
	}
	return PGQEV_DONE;
}

static bool sink_count_is(void *arg)
{
	return pgt_int_db(eo_tgt_db, "select count(*) from sink") >= *(int64_t *)arg;
}

START_TEST(test_exactly_once_survives_killed_process)
{
	static char src[CS_DB_LEN], tgt[CS_DB_LEN];
	cs_eo_dbs(src, tgt, "q", "v bigint");
	eo_tgt_db = tgt;
	/* the first source finish stalls, so the kill lands after the target commit */
	PGconn *s = pgt_connect(src);
	pgt_exec(s, "create sequence stall_seq");
	cs_on_finish(src, "stall", "nextval('public.stall_seq') = 1", "perform pg_sleep(2)");
	pgt_exec(s, "select pgq.register_consumer('q', 'eo')");
	cs_produce(src, "q", 0, 20);
	pgt_exec(s, "select pgq.ticker()");
	char tci[512];
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		cs_setup();
		Rec cr = {.name = "eo-child", .hook = eo_copy, .quiet = true};
		PgqevConsumerConfig cfg;
		cs_config(&cfg, &cr, src, "q", "eo");
		cs_config_target(&cfg, tci, sizeof(tci), tgt);
		cs_start(&cr, &cfg);
		cs_run_for(60000);
		_exit(4);
	}
	int64_t want = 20;
	ck_assert(pgt_wait_until(sink_count_is, &want, 30000, 20)); /* target committed */
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	int status = 0;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);

	Rec r = {.name = "eo-successor", .hook = eo_copy, .quiet = true};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, src, "q", "eo");
	cs_config_target(&cfg, tci, sizeof(tci), tgt);
	cs_start(&r, &cfg);
	cs_produce(src, "q", 20, 40);
	pgt_exec(s, "select pgq.ticker()");
	want = 40;
	ck_assert(cs_run_until(sink_count_is, &want, 30000));
	Rec *all[1] = {&r};
	ck_assert(cs_run_until_drained(src, "q", all, 1, 20000));
	ck_assert_int_eq(pgt_int_db(tgt, "select count(*) from sink"), 40);
	ck_assert_int_eq(pgt_int_db(tgt, "select count(distinct v) from sink"), 40);
	ck_assert_int_eq(
		pgt_int(s, "select count(*) from pgq.subscription where sub_batch is not null"), 0);
	PQfinish(s);
	rec_free(&r);
}
END_TEST

/* --- statement_timeout reaches the target: a slow write fails the batch once --- */

static PgqevVerdict slow_first_write(Rec *r, PgqevBatch *b)
{
	const char *sql = r->hook_calls == 1 ? "select pg_sleep(2)" : "select 1";
	return pgqev_batch_target_exec(b, sql, 0, NULL) == 0 ? PGQEV_DONE : PGQEV_FAIL;
}

START_TEST(test_statement_timeout_fails_slow_target_write)
{
	static char src[CS_DB_LEN], tgt[CS_DB_LEN];
	cs_eo_dbs(src, tgt, "q", "v bigint");
	Rec r = {.name = "timeout", .hook = slow_first_write, .quiet = true};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, src, "q", "to");
	char tci[512];
	cs_config_target(&cfg, tci, sizeof(tci), tgt);
	cfg.statement_timeout = 200 * PGQEV_USEC_PER_MSEC;
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	cs_produce(src, "q", 0, 3);
	cs_tick(src);
	CountCond cc = {&r, 6}; /* delivered, failed by the timeout, delivered again */
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	ck_assert_int_eq(r.errors[PGQEV_ERR_TARGET], 1);
	ck_assert_msg(strstr(r.last_error, "statement timeout") != NULL, "%s", r.last_error);
	ck_assert_int_eq(r.batches[0], r.batches[3]);
	rec_free(&r);
}
END_TEST

/* --- interop: Debian's PgQ 3.5 C extension, ticked by Debian's pgqd --- */

START_TEST(test_interop_debian_pgq_and_pgqd)
{
	/* Debian's postgresql-15-pgq3 and pgqd are part of the test dependencies */
	ck_assert_msg(access("/usr/share/postgresql/15/extension/pgq.control", R_OK) == 0,
		      "Debian's postgresql-15-pgq3 is not installed");
	ck_assert_msg(access("/usr/bin/pgqd", X_OK) == 0 || access("/usr/sbin/pgqd", X_OK) == 0,
		      "Debian's pgqd is not installed");
	const char *db = pgt_db_new_empty();
	PGconn *c = pgt_connect(db);
	pgt_exec(c, "create extension pgq");
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_extension where extname = 'pgq'"
				    " and extversion like '3.5%'"),
			 1);
	pgt_exec(c, "select pgq.create_queue('dq')");
	pgt_exec(c, "select pgq.set_queue_config('dq', 'ticker_max_lag', '0')");
	int64_t ticks0 = pgt_int(c, "select count(*) from pgq.tick");

	char dir[512], ini[600], log[600], pidf[600];
	snprintf(dir, sizeof(dir), "%s/pgqd-%d", pgt_tmp_dir(), (int)getpid());
	ck_assert_int_eq(mkdir(dir, 0777), 0);
	snprintf(ini, sizeof(ini), "%s/pgqd.ini", dir);
	snprintf(log, sizeof(log), "%s/pgqd.log", dir);
	snprintf(pidf, sizeof(pidf), "%s/pgqd.pid", dir);
	FILE *f = fopen(ini, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f,
		"[pgqd]\nbase_connstr = host=%s port=%d user=postgres\n"
		"initial_database = postgres\ndatabase_list = %s\nlogfile = %s\n"
		"pidfile = %s\nsyslog = 0\nticker_period = 0.1\n",
		pgt_socket_dir(), pgt_port(), db, log, pidf);
	fclose(f);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execlp("pgqd", "pgqd", ini, (char *)NULL);
		_exit(127);
	}

	Rec r = {.name = "interop", .quiet = true};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "dq", "ours");
	cfg.poll_interval = 100 * PGQEV_USEC_PER_MSEC; /* no tick NOTIFY in PgQ 3.5 */
	cfg.fetch_size = 16;
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	/* PgQ 3.5 has no tick channel: the consumer says so and polls */
	ck_assert_int_eq(r.errors[PGQEV_ERR_SQL], 1);
	ck_assert_ptr_nonnull(strstr(r.last_error, "polling"));
	for (int round = 0; round < 3; round++) {
		cs_produce(db, "dq", round * 50, round * 50 + 50);
		CountCond cc = {&r, (size_t)(round * 50 + 50)};
		ck_assert_msg(cs_run_until(cs_has_count, &cc, 30000), "round %d: %zu", round, r.n);
	}
	Rec *all[1] = {&r};
	ck_assert(cs_run_until_drained(db, "dq", all, 1, 20000)); /* nothing more comes */
	cs_assert_exactly_once(&r, 0, 150);
	ck_assert_int_gt(pgt_int(c, "select count(*) from pgq.tick"), ticks0 + 2);
	ck_assert_int_eq(kill(pid, SIGTERM), 0);
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	PQfinish(c);
	rec_free(&r);
}
END_TEST

/* --- the blocking runner: SIGTERM finishes the batch in progress, exit 0 --- */

static int runner_pipe = -1, runner_ack = -1;

static PgqevVerdict runner_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	/* tell the parent, then finish the batch only once it has sent SIGTERM */
	char line[32], ack;
	int n = snprintf(line, sizeof(line), "%zu\n", pgqev_batch_count(b));
	if (write(runner_pipe, line, (size_t)n) != n)
		_exit(3);
	while (runner_ack >= 0) { /* the signal may interrupt the read: retry */
		ssize_t r = read(runner_ack, &ack, 1);
		if (r == 1)
			runner_ack = -1; /* the later chunks of the batch run on */
		else if (r == 0 || errno != EINTR)
			_exit(4);
	}
	return PGQEV_DONE;
}

START_TEST(test_blocking_runner_stops_gracefully)
{
	const char *db = cs_db_with_queue("q");
	PGconn *c = pgt_connect(db);
	pgt_exec(c, "select pgq.register_consumer('q', 'runner')");
	cs_produce(db, "q", 0, 30);
	pgt_exec(c, "select pgq.ticker()");
	int fds[2], acks[2];
	ck_assert_int_eq(pipe(fds), 0);
	ck_assert_int_eq(pipe(acks), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(fds[0]);
		close(acks[1]);
		runner_pipe = fds[1];
		runner_ack = acks[0];
		PgqevConsumerConfig cfg;
		pgqev_config_init(&cfg);
		cfg.conninfo = pgt_connstr(db, false);
		cfg.queue = "q";
		cfg.consumer = "runner";
		cfg.fetch_size = 10;
		cfg.on_batch = runner_batch;
		_exit(pgqev_run(&cfg) == 0 ? 0 : 1);
	}
	close(fds[1]);
	close(acks[0]);
	struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
	ck_assert_int_eq(poll(&pfd, 1, 30000), 1);
	char line[64];
	ck_assert_int_gt(read(fds[0], line, sizeof(line)), 0);
	ck_assert_int_eq(kill(pid, SIGTERM), 0); /* during the first of 3 chunks */
	ck_assert_int_eq(write(acks[1], "k", 1), 1);
	close(acks[1]);
	int status = 0;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	close(fds[0]);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	/* the batch was finished before stopping */
	ck_assert_int_eq(
		pgt_int(c, "select count(*) from pgq.subscription where sub_batch is not null"), 0);
	ck_assert_int_eq(
		pgt_int(c, "select pending_events from pgq.get_consumer_info('q', 'runner')"), 0);
	PQfinish(c);
	/* bad config: -EINVAL, no loop */
	PgqevConsumerConfig bad;
	pgqev_config_init(&bad);
	ck_assert_int_eq(pgqev_run(&bad), -EINVAL);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("consumer-fault");
	TCase *tc = pgt_tcase("consumer-fault", 120);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_terminated_backend_redelivers_batch);
	tcase_add_test(tc, test_killed_process_redelivers_batch);
	tcase_add_test(tc, test_coop_subconsumers_share_without_overlap);
	tcase_add_test(tc, test_coop_dead_subconsumer_taken_over);
	tcase_add_test(tc, test_exactly_once_into_target_survives_kills);
	tcase_add_test(tc, test_exactly_once_survives_killed_process);
	tcase_add_test(tc, test_statement_timeout_fails_slow_target_write);
	tcase_add_test(tc, test_interop_debian_pgq_and_pgqd);
	tcase_add_test(tc, test_blocking_runner_stops_gracefully);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
