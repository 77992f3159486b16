/*
 * Helpers for the cascade tests: node databases (pgq + pgq_node), nodes made
 * with pgq_node's SQL calls in the order of an admin's create-root /
 * create-branch / create-leaf, a recording worker context, and canonical forms
 * of a queue's events and ticks to compare nodes.
 */
#ifndef PGQEV_TESTS_CASTEST_H
#define PGQEV_TESTS_CASTEST_H

#include <pthread.h>

#include <pgqd-ev/pgqev_cascade.h>

#include "constest.h"

#define CT_QUEUE "cq"

/* A fresh database with pgq and pgq_node: ours from the template when it has
   pgq_node, else Debian's PgQ 3.5 extensions in a database from template0.
   Returns a malloc'd name. */
char *ct_node_db(void);
/* The same on private server k (PgtOptions.servers = 2): for k > 0 a connection
   string, which every helper here and pgtest's take in place of a name. */
char *ct_node_db_on(int k);

/* Nodes of cascade CT_QUEUE; the worker of node N is "w_N". */
void ct_make_root(const char *db, const char *name);
/* type "branch" or "leaf"; provider and root given by database and node name. */
void ct_make_sub(const char *type, const char *db, const char *name, const char *prov_db,
		 const char *prov_name, const char *root_db);

/* The same for any cascade q; combined: a merge leaf's combined queue (a local
   queue of another cascade) or NULL. */
void ct_make_root_q(const char *q, const char *db, const char *name);
void ct_make_sub_q(const char *q, const char *type, const char *db, const char *name,
		   const char *prov_db, const char *prov_name, const char *root_db,
		   const char *combined);

/* A worker and what it reported. */
typedef struct CtWorker {
	PgqevCascade *w;
	const char *db;
	int errors;
	char last_error[512];
	bool quiet;
	const char *worker; /* a consumer name other than the node's worker; NULL: the worker */
	bool apply;         /* leaf: insert every event into table "applied" on the node */
	int sleep_ms_per_chunk;
	bool no_handler;        /* no on_batch: a branch copies as pgqd-ev's workers do */
	pgqev_usec_t wm_period; /* 0: 200 ms */
	uint64_t chunks;
} CtWorker;

/* Start a worker for the node in db (loop: cs_base()); ck_asserts. */
void ct_start(CtWorker *x, const char *db, pgqev_usec_t poll);
void ct_start_on(CtWorker *x, struct event_base *base, const char *db, pgqev_usec_t poll);
void ct_start_q(CtWorker *x, struct event_base *base, const char *q, const char *db,
		pgqev_usec_t poll);
void ct_stop(CtWorker *x);

/* For cs_run_until: the worker reported an error containing needle. */
typedef struct CtErrCond {
	CtWorker *x;
	const char *needle;
} CtErrCond;
bool ct_has_error(void *arg);

/* Assert two canonical forms equal (what names them); frees both. */
void ct_assert_same(const char *what, char *a, char *b);

/* Create table "applied" on a leaf (the apply handler's target). */
void ct_make_applied(const char *db);

/* "count:md5" of the queue's events (ev_id order) on a root/branch, or of the
   table "applied" (same columns) when applied is true. */
char *ct_events(const char *db, bool applied);
/* "count:md5" of the queue's ticks with id in (from, to]. */
char *ct_ticks(const char *db, int64_t from, int64_t to);
int64_t ct_last_tick(const char *db);
/* local_state.last_tick_id of the node's worker. */
int64_t ct_completed(const char *db, const char *node);

/* Produce events [from, to) on the root, one transaction, with varied types,
   extras, NULLs and quoting. */
void ct_produce(const char *db, int from, int to);

/* Wait (running the loop) until every db's worker completed the root's last tick
   and, on a branch, made that tick locally (a worker stopped then leaves no gap);
   timeout_ms is scaled by pgt_time_factor(). */
bool ct_wait_synced(const char *root_db, const char *const *dbs, const char *const *names, int n,
		    int timeout_ms);

/* Faults for the cascade workers on db (a name): terminate their backends there
   (at least one), or wait (running the loop) until one of them holds a transaction
   there that has written, e.g. a copy not yet committed. */
void ct_terminate_workers(const char *db);
bool ct_wait_writing(const char *db, int timeout_ms);

/* ---- workers on a thread of their own (pgqctl, run by the test, waits for
   their acknowledgements) ---- */
typedef struct CtLoop {
	struct event_base *base;
	pthread_t th;
	volatile bool stop;
} CtLoop;
/* Run base's loop on a new thread. */
void ct_loop_go(CtLoop *l);
/* Stop that thread: workers are started and freed only while it is held. */
void ct_loop_hold(CtLoop *l);

/* One value of a query on db (malloc'd; "(null)" for none). */
char *ct_value(const char *db, const char *sql);
/* ... which must be want. */
void ct_expect_value(const char *db, const char *sql, const char *want);
/* A database `name` from template0 with Debian's PgQ 3.5 extensions pgq and
   pgq_node (postgresql-15-pgq3, postgresql-15-pgq-node); malloc'd name. */
char *ct_debian_db(const char *name);

/* ---- exactly-once checks on numbered events ---- */

int ct_cmp64(const void *a, const void *b);
/* The int8 values of a query's first column, sorted; malloc'd, *n of them. */
int64_t *ct_fetch_sorted(const char *db, const char *sql, size_t *n);
/* x in v (sorted)? */
bool ct_contains(const int64_t *v, size_t n, int64_t x);

/* How ct_expect_exactly waits: pump (may be NULL) runs at every look, e.g. a
   PgQ consumer fed by the test; diag (may be NULL) reports a consumer short of
   events, then the test waits 60 s more to tell a stall from a loss. */
typedef struct CtExactly {
	void (*pump)(void *arg);
	void (*diag)(const char *what, const int64_t *want, size_t nwant, const int64_t *have,
		     size_t nhave);
	void *arg;
	int timeout_ms; /* 0: 30 s */
} CtExactly;

/* The rows of sql on db (int8, first column) become exactly want (sorted, no
   duplicates): waits until there are nwant, then fails on a duplicate or a
   missing one, naming `what` and the event. how may be NULL. */
void ct_expect_exactly(const char *what, const char *db, const char *sql, const int64_t *want,
		       size_t nwant, const CtExactly *how);

#endif
