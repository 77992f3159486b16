/*
 * A consumer resumes within 0.5 s of its server accepting connections again,
 * whatever the outage length (issue 13), with the default fail_delay/fail_cap.
 *
 * The consumer's loop runs in a second thread while the main thread starts the
 * server (pgt_server_start blocks until the server answers), so the consumer
 * probes the server while it comes up, as it would in an application.
 * "Resumed" is the consumer's state becoming idle again: it reconnected,
 * re-subscribed and asked for a batch. Measured on the wall clock against the
 * server log's "ready to accept connections"; the bound scales with
 * pgt_time_factor().
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "constest.h"

static double resumed_at; /* wall clock of the first idle after the outage */
static bool outage_seen;  /* the consumer noticed the outage */

static double wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_state(PgqevConsumer *c, PgqevState old, PgqevState st, void *arg)
{
	Rec *r = arg;
	r->states[st]++;
	r->state = st;
	if (st == PGQEV_STATE_BACKOFF || st == PGQEV_STATE_CONNECTING)
		outage_seen = true;
	if (st == PGQEV_STATE_IDLE && outage_seen && resumed_at == 0)
		resumed_at = wall_now();
}

static bool resumed(void *arg)
{
	return resumed_at != 0;
}

static bool noticed(void *arg)
{
	return outage_seen;
}

static void *loop_thread(void *arg)
{
	int *timeout_ms = arg;
	cs_run_until(resumed, NULL, *timeout_ms);
	return NULL;
}

/* Epoch seconds of the last "ready to accept connections" in the server log. */
static double ready_epoch(void)
{
	char path[512], line[1024], stamp[128] = "", sql[256];
	FILE *f;
	snprintf(path, sizeof(path), "%s/postgres.log", pgt_tmp_dir());
	f = fopen(path, "r");
	ck_assert_msg(f != NULL, "cannot read %s", path);
	while (fgets(line, sizeof(line), f)) {
		char *br = strstr(line, " [");
		if (strstr(line, "ready to accept connections") && br &&
		    (size_t)(br - line) < sizeof(stamp)) {
			memcpy(stamp, line, (size_t)(br - line));
			stamp[br - line] = '\0';
		}
	}
	fclose(f);
	ck_assert_msg(stamp[0], "no 'ready to accept connections' in %s", path);
	snprintf(sql, sizeof(sql), "select extract(epoch from '%s'::timestamptz)", stamp);
	PGconn *c = pgt_connect("postgres");
	char *v = pgt_value(c, sql);
	PQfinish(c);
	double e = strtod(v, NULL);
	free(v);
	return e;
}

/* Stop the server for outage_ms with the consumer running; its recovery in s. */
static double outage(Rec *r, int outage_ms)
{
	pthread_t th;
	int timeout_ms = (int)(15000 * pgt_time_factor());
	resumed_at = 0;
	outage_seen = false;
	pgt_server_stop();
	/* the loop runs through the outage: the consumer notices and waits */
	ck_assert(cs_run_until(noticed, NULL, 5000));
	cs_run_for(outage_ms);
	ck_assert_int_eq(pthread_create(&th, NULL, loop_thread, &timeout_ms), 0);
	pgt_server_start();
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert_msg(resumed_at != 0, "the consumer did not resume within %d ms", timeout_ms);
	double rec = resumed_at - ready_epoch();
	printf("# consumer, outage %.1f s: resumed %.3f s after the server was ready "
	       "(bound %.2f s)\n",
	       outage_ms / 1000.0, rec, 0.5 * pgt_time_factor());
	fflush(stdout);
	return rec;
}

START_TEST(test_consumer_resumes_after_outages)
{
	const char *db = cs_db_with_queue("q");
	Rec r = {.name = "recovery", .quiet = true};
	PgqevConsumerConfig cfg;
	double bound = 0.5 * pgt_time_factor();

	cs_config(&cfg, &r, db, "q", "c1");
	/* the defaults: before issue 13 the reconnect delay grew toward 60 s */
	cfg.fail_delay = PGQEV_USEC_PER_SEC;
	cfg.fail_cap = 60 * PGQEV_USEC_PER_SEC;
	cfg.on_state = on_state;
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	ck_assert_double_le(outage(&r, 1000), bound);
	ck_assert_double_le(outage(&r, 8000), bound);
	/* and it consumes again */
	cs_produce(db, "q", 0, 10);
	cs_tick(db);
	CountCond cc = {&r, 10};
	ck_assert(cs_run_until(cs_has_count, &cc, 20000));
	ck_assert_int_ge(r.errors[PGQEV_ERR_CONNECTION], 1);
	rec_free(&r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("consumer-recovery");
	TCase *tc = pgt_tcase("recovery", 120);
	PgtOptions opts = {.need_server = true};

	tcase_add_checked_fixture(tc, cs_setup, cs_teardown);
	tcase_add_test(tc, test_consumer_resumes_after_outages);
	suite_add_tcase(s, tc);
	return pgt_main(s, &opts);
}
