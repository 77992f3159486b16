/*
 * Accounting of the fault-injection test (see chaos_check.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos_check.h"

static const char *const kind_name[CK_NKIND] = {"regular (at least once)", "coop subconsumers",
						"exactly-once (pgq_ext)", "python3-pgq Consumer"};

static void vec_push(ChaosVec *v, int64_t a, int64_t b)
{
	if (v->n == v->cap) {
		v->cap = v->cap ? v->cap * 2 : 1024;
		v->a = realloc(v->a, v->cap * sizeof(int64_t));
		v->b = realloc(v->b, v->cap * sizeof(int64_t));
		if (!v->a || !v->b)
			abort();
	}
	v->a[v->n] = a;
	v->b[v->n] = b;
	v->n++;
}

static void vec_free(ChaosVec *v)
{
	free(v->a);
	free(v->b);
	memset(v, 0, sizeof(*v));
}

typedef struct Pair {
	int64_t a, b;
} Pair;

static int pair_cmp(const void *x, const void *y)
{
	const Pair *p = x, *q = y;
	if (p->a != q->a)
		return p->a < q->a ? -1 : 1;
	return p->b < q->b ? -1 : p->b > q->b;
}

/* Sort by (a, b), keeping the pairs together. */
static void vec_sort(ChaosVec *v)
{
	Pair *p = malloc((v->n + 1) * sizeof(Pair));
	if (!p)
		abort();
	for (size_t i = 0; i < v->n; i++)
		p[i] = (Pair){v->a[i], v->b[i]};
	qsort(p, v->n, sizeof(Pair), pair_cmp);
	for (size_t i = 0; i < v->n; i++) {
		v->a[i] = p[i].a;
		v->b[i] = p[i].b;
	}
	free(p);
}

/* Entries of sorted v whose a equals x. */
static size_t vec_count(const ChaosVec *v, int64_t x)
{
	size_t lo = 0, hi = v->n, n = 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v->a[mid] < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	while (lo + n < v->n && v->a[lo + n] == x)
		n++;
	return n;
}

void chaos_totals_init(ChaosTotals *t)
{
	memset(t, 0, sizeof(*t));
}

void chaos_totals_free(ChaosTotals *t)
{
	for (int d = 0; d < CHAOS_NDB; d++)
		for (int q = 0; q < CHAOS_NQ; q++) {
			vec_free(&t->committed[d][q]);
			for (int k = 0; k < CK_NKIND; k++) {
				vec_free(&t->got[k][d][q]);
				vec_free(&t->batches[k][d][q]);
			}
		}
}

static int queue_index(const char *q)
{
	return strcmp(q, "qa") == 0 ? 0 : strcmp(q, "qb") == 0 ? 1 : -1;
}

void chaos_read_producer(ChaosTotals *t, const char *path)
{
	FILE *f = fopen(path, "r");
	unsigned long c, r, fl, e;
	if (!f) {
		t->bad_lines++;
		return;
	}
	if (fscanf(f, "P %lu %lu %lu %lu", &c, &r, &fl, &e) == 4) {
		t->txn_committed += c;
		t->txn_rolled_back += r;
		t->txn_failed += fl;
		t->producer_events += e;
	} else {
		t->bad_lines++;
	}
	fclose(f);
}

void chaos_load_committed(ChaosTotals *t, int db, PGconn *c)
{
	PGresult *r = PQexec(c, "select uid, queue from chaos_committed");
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "# chaos: reading chaos_committed: %s", PQerrorMessage(c));
		t->bad_lines++;
	}
	for (int i = 0; i < PQntuples(r); i++) {
		int q = queue_index(PQgetvalue(r, i, 1));
		if (q < 0) {
			t->bad_lines++;
			continue;
		}
		vec_push(&t->committed[db][q], strtoll(PQgetvalue(r, i, 0), NULL, 10), 0);
	}
	PQclear(r);
}

void chaos_load_exact(ChaosTotals *t, int db, PGconn *c)
{
	PGresult *r = PQexec(c, "select uid, batch, queue from chaos_exact");
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "# chaos: reading chaos_exact: %s", PQerrorMessage(c));
		t->bad_lines++;
	}
	for (int i = 0; i < PQntuples(r); i++) {
		int q = queue_index(PQgetvalue(r, i, 2));
		if (q < 0) {
			t->bad_lines++;
			continue;
		}
		vec_push(&t->got[CK_EXACT][db][q], strtoll(PQgetvalue(r, i, 0), NULL, 10),
			 strtoll(PQgetvalue(r, i, 1), NULL, 10));
	}
	PQclear(r);
}

void chaos_read_file(ChaosTotals *t, int db, ChaosKind kind, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[256], q[16];
	long long uid, batch;
	int rc;
	int k = kind == CK_EXACT_FILE ? CK_EXACT : (int)kind;
	if (!f)
		return; /* a consumer that never got a batch writes nothing */
	while (fgets(line, sizeof(line), f)) {
		int qi;
		if (sscanf(line, "G %15s %lld %lld %d", q, &uid, &batch, &rc) == 4) {
			if ((qi = queue_index(q)) < 0)
				t->bad_lines++;
			else if (kind != CK_EXACT_FILE)
				vec_push(&t->got[k][db][qi], uid, batch);
		} else if (sscanf(line, "B %15s %lld", q, &batch) == 2) {
			if ((qi = queue_index(q)) < 0)
				t->bad_lines++;
			else
				vec_push(&t->batches[k][db][qi], batch, 0);
		} else if (sscanf(line, "R %15s %lld %lld", q, &uid, &batch) == 3) {
			t->retried[k]++;
		} else if (sscanf(line, "F %15s %lld", q, &batch) == 2) {
			t->failed[k]++;
		} else {
			fprintf(stderr, "# chaos: bad record line in %s: %s", path, line);
			t->bad_lines++;
		}
	}
	fclose(f);
}

typedef struct KindResult {
	unsigned long delivered, lost, leaked, dups, unfinished, unexplained;
} KindResult;

static void check_kind(ChaosTotals *t, int k, KindResult *res)
{
	memset(res, 0, sizeof(*res));
	for (int d = 0; d < CHAOS_NDB; d++)
		for (int q = 0; q < CHAOS_NQ; q++) {
			ChaosVec *com = &t->committed[d][q], *got = &t->got[k][d][q];
			ChaosVec *bat = &t->batches[k][d][q];
			vec_sort(com);
			vec_sort(got);
			vec_sort(bat);
			res->delivered += got->n;
			for (size_t i = 0; i < com->n; i++)
				if ((i == 0 || com->a[i] != com->a[i - 1]) &&
				    vec_count(got, com->a[i]) == 0)
					res->lost++;
			for (size_t i = 0; i < bat->n; i++)
				if (i > 0 && bat->a[i] == bat->a[i - 1])
					res->unfinished++;
			for (size_t i = 0; i < got->n;) {
				size_t j = i;
				unsigned long again = 0;
				while (j < got->n && got->a[j] == got->a[i]) {
					/* a delivery in a batch delivered more than once */
					if (vec_count(bat, got->b[j]) > 1)
						again++;
					j++;
				}
				unsigned long copies = (unsigned long)(j - i);
				if (vec_count(com, got->a[i]) == 0)
					res->leaked++;
				res->dups += copies - 1;
				if (k == CK_EXACT)
					res->unexplained += copies - 1;
				else if (copies - 1 > again)
					res->unexplained += copies - 1 - again;
				i = j;
			}
		}
}

static int cmp_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
	return a < b ? -1 : a > b;
}

bool chaos_report(ChaosTotals *t, const ChaosFaults *f, const char *report_path)
{
	char *buf = NULL;
	size_t blen = 0;
	FILE *o = open_memstream(&buf, &blen);
	unsigned long committed = 0;
	int nfaults = 0;
	bool ok = t->bad_lines == 0;
	if (!o)
		abort();

	for (int d = 0; d < CHAOS_NDB; d++)
		for (int q = 0; q < CHAOS_NQ; q++)
			committed += t->committed[d][q].n;
	for (int i = 0; i < f->n; i++)
		nfaults += f->count[i];
	fprintf(o,
		"chaos: seed %" PRIu64
		", %d s of faults, drained in %.1f s after the producers stopped\n",
		f->seed, f->seconds, f->drain_ms / 1000.0);
	fprintf(o,
		"events committed: %lu (transactions: %lu committed, %lu rolled back on purpose,"
		" %lu failed by faults)\n",
		committed, t->txn_committed, t->txn_rolled_back, t->txn_failed);
	fprintf(o, "event table rotations seen: %d\n", f->rotations);
	fprintf(o, "faults: %d\n", nfaults);
	for (int i = 0; i < f->n; i++)
		fprintf(o, "  %-32s %4d  (took effect %d)\n", f->names[i], f->count[i], f->hit[i]);
	fprintf(o, "%-26s %9s %5s %11s %10s %10s %11s %7s %6s\n", "consumer kind", "delivered",
		"lost", "rolled-back", "duplicates", "unfinished", "unexplained", "retried",
		"failed");
	for (int k = 0; k < CK_NKIND; k++) {
		KindResult r;
		check_kind(t, k, &r);
		fprintf(o, "%-26s %9lu %5lu %11lu %10lu %10lu %11lu %7ld %6ld\n", kind_name[k],
			r.delivered, r.lost, r.leaked, r.dups, r.unfinished, r.unexplained,
			t->retried[k], t->failed[k]);
		if (r.lost || r.leaked || r.unexplained || r.delivered == 0)
			ok = false;
	}
	fprintf(o, "(duplicates: extra deliveries of an id; unfinished: batch deliveries that were"
		   " not finished and came again; unexplained: duplicates not in such a batch)\n");
	if (f->nrecovery > 0) {
		int64_t *r = malloc((size_t)f->nrecovery * sizeof(int64_t));
		memcpy(r, f->recovery_ms, (size_t)f->nrecovery * sizeof(int64_t));
		qsort(r, (size_t)f->nrecovery, sizeof(int64_t), cmp_i64);
		fprintf(o,
			"recovery after a server restart (every queue ticked and every consumer"
			" past that tick): %d restarts, min %" PRId64 " ms, median %" PRId64
			" ms, max %" PRId64 " ms\n",
			f->nrecovery, r[0], r[f->nrecovery / 2], r[f->nrecovery - 1]);
		free(r);
	} else {
		fprintf(o, "recovery after a server restart: no restart in this run\n");
	}
	if (committed == 0)
		ok = false;
	if (t->bad_lines)
		fprintf(o, "unreadable records: %d\n", t->bad_lines);
	fprintf(o, "result: %s\n", ok ? "PASS" : "FAIL");
	fclose(o);

	for (char *line = buf, *nl; line && *line; line = nl ? nl + 1 : NULL) {
		nl = strchr(line, '\n');
		fprintf(stderr, "# %.*s\n", nl ? (int)(nl - line) : (int)strlen(line), line);
	}
	if (report_path && *report_path) {
		FILE *rf = fopen(report_path, "w");
		if (rf) {
			fputs(buf, rf);
			fclose(rf);
		}
	}
	free(buf);
	return ok;
}
