/*
 * The fault-injection test's accounting: committed ids against what each consumer
 * kind recorded (see chaos_worker.c for the record lines), and the summary.
 */
#ifndef PGQEV_TESTS_CHAOS_CHECK_H
#define PGQEV_TESTS_CHAOS_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#define CHAOS_NDB 2
#define CHAOS_NQ  2

typedef enum ChaosKind {
	CK_REGULAR, /* libpgqev, at least once */
	CK_COOP,    /* libpgqev coop subconsumers a and b, one group */
	CK_EXACT,   /* libpgqev exactly-once: the rows of chaos_exact */
	CK_PYTHON,  /* python3-pgq's pgq.Consumer */
	CK_NKIND,
	CK_EXACT_FILE, /* the exactly-once worker's own lines: only F/R counted */
} ChaosKind;

typedef struct ChaosVec {
	int64_t *a, *b; /* uid and batch (b unused for plain id lists) */
	size_t n, cap;
} ChaosVec;

typedef struct ChaosTotals {
	ChaosVec committed[CHAOS_NDB][CHAOS_NQ];
	ChaosVec got[CK_NKIND][CHAOS_NDB][CHAOS_NQ];     /* uid, batch per delivery */
	ChaosVec batches[CK_NKIND][CHAOS_NDB][CHAOS_NQ]; /* batch id per delivery start */
	long retried[CK_NKIND], failed[CK_NKIND];
	unsigned long txn_committed, txn_rolled_back, txn_failed, producer_events;
	int bad_lines;
} ChaosTotals;

typedef struct ChaosFaults {
	int n;
	const char *const *names;
	const int *count, *hit;
	const int64_t *recovery_ms;
	int nrecovery;
	uint64_t seed;
	int seconds;
	int64_t drain_ms;
	int rotations; /* event table switches seen while the faults ran */
} ChaosFaults;

void chaos_totals_init(ChaosTotals *t);
void chaos_totals_free(ChaosTotals *t);
/* The producer's "P committed rolled_back failed events" line. */
void chaos_read_producer(ChaosTotals *t, const char *path);
void chaos_load_committed(ChaosTotals *t, int db, PGconn *c);
void chaos_read_file(ChaosTotals *t, int db, ChaosKind kind, const char *path);
void chaos_load_exact(ChaosTotals *t, int db, PGconn *c);
/* Print the summary (stderr, and report_path if not NULL); true when it passes:
   nothing lost, nothing rolled back delivered, no exactly-once duplicate, every
   other duplicate explained by an unfinished delivery of its batch. */
bool chaos_report(ChaosTotals *t, const ChaosFaults *f, const char *report_path);

#endif
