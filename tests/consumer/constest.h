/*
 * Helpers for the consumer tests: a loop per test with an in-loop ticker (a
 * blocking pgq.ticker() on a timer, the queue set to tick on every call), a
 * recording consumer context, and producers whose event data is a counter so
 * exactly-once delivery can be checked by value.
 */
#ifndef PGQEV_TESTS_CONSTEST_H
#define PGQEV_TESTS_CONSTEST_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include <pgqd-ev/pgqev_consumer.h>

#include "pgtest.h"

typedef struct Rec Rec;
/* Optional per-chunk hook: runs after the chunk's events were recorded. */
typedef PgqevVerdict (*RecHook)(Rec *r, PgqevBatch *b);

struct Rec {
	PgqevConsumer *c;
	const char *name;
	/* per delivered event */
	int64_t *vals;    /* data parsed as an integer (-1 if not a number) */
	int64_t *batches; /* batch id of that delivery */
	int *retries;     /* retry count */
	size_t n, cap;
	/* per chunk */
	size_t chunks, max_chunk;
	int64_t last_batch;
	size_t batches_seen; /* distinct consecutive batch ids */
	/* callbacks */
	int errors[4];
	char last_error[512];
	int states[6];
	PgqevState state;
	bool quiet; /* do not print errors */
	RecHook hook;
	void *hook_arg;
	int hook_calls;
	PgqevBatch *held; /* async tests */
};

/* Loop and ticker for one test. */
struct event_base *cs_base(void);
void cs_setup(void);
void cs_teardown(void);

/* Fresh database with queue `q` ticking on every pgq.ticker() call. */
const char *cs_db_with_queue(const char *q);
/* Tick the database every `ms` from inside the loop (0: stop). */
void cs_ticker(const char *db, int ms);
/* One tick now (blocking). */
void cs_tick(const char *db);

/* Config for (db, q, consumer) recording into r. */
void cs_config(PgqevConsumerConfig *cfg, Rec *r, const char *db, const char *q,
	       const char *consumer);
/* New + start; ck_asserts. */
PgqevConsumer *cs_start(Rec *r, const PgqevConsumerConfig *cfg);
void rec_free(Rec *r);

/*
 * Exactly-once fixtures. cs_eo_dbs: a source database with queue q (as
 * cs_db_with_queue) and a target database holding table sink (sink_columns),
 * their names copied into src and tgt. cs_on_finish: a trigger `name` on
 * pgq.subscription in db that runs action (PL/pgSQL) when a batch is finished
 * and when (an SQL condition) holds, to fail or stall the source's finish after
 * the target committed. cs_config_target: the consumer writes into db; buf keeps
 * the connection string and must outlive the consumer.
 */
#define CS_DB_LEN 64
void cs_eo_dbs(char *src, char *tgt, const char *q, const char *sink_columns);
void cs_on_finish(const char *db, const char *name, const char *when, const char *action);
void cs_config_target(PgqevConsumerConfig *cfg, char *buf, size_t len, const char *db);

/* Insert values [from, to) as events (data = the number), one transaction. */
void cs_produce(const char *db, const char *q, int64_t from, int64_t to);

/* Run the loop until cond(arg) or timeout_ms; returns cond's last value. */
bool cs_run_until(bool (*cond)(void *arg), void *arg, int timeout_ms);
void cs_run_for(int ms);

/*
 * Run the loop until every consumer of queue q in db is at the queue's last tick
 * with no batch open (coop subconsumers: no batch open) and each of the n Recs is
 * idle: everything ticked so far was delivered and finished, so nothing more can
 * arrive before the next tick. Tick first when what must not arrive came after
 * the last tick. Returns false on timeout.
 */
bool cs_run_until_drained(const char *db, const char *q, Rec *const *recs, int n, int timeout_ms);
/* Run the loop until r went idle `more` more times (each empty look-up for a batch,
   on a poll or a notification, ends in IDLE). */
bool cs_run_until_idle_again(Rec *r, int more, int timeout_ms);

/* Condition helpers. */
typedef struct CountCond {
	Rec *r;
	size_t want;
} CountCond;
bool cs_has_count(void *cc); /* CountCond: r->n >= want */
bool cs_state_is(Rec *r, PgqevState st, int timeout_ms);

/* Each value in [from, to) delivered exactly once (no others); ck_asserts. */
void cs_assert_exactly_once(Rec *r, int64_t from, int64_t to);
/* Each value in [from, to) delivered at least once; returns duplicates. */
size_t cs_assert_at_least_once(Rec *r, int64_t from, int64_t to);

#endif
