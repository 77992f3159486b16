/*
 * The split reader (cfg.split_min_events): a large batch read through two
 * server backends at once, so that both cores sort. The batch's rows are split
 * by one block number of the event tables (pgq._batch_split_block, asked on the
 * source connection inside the batch's transaction); part 0 (the rows below it)
 * is read on the source connection, part 1 (the rest) on a second connection
 * (c->part, opened for the batch and closed when it ends), each through a
 * cursor sorted by ev_id (pgq._get_batch_part_cursor). The client merges the two
 * sorted streams by ev_id into chunks of at most fetch_size events.
 *
 * Why the parts are exact: every transaction of the batch committed before its
 * end tick, and the tables are not rotated away while the batch is open, so the
 * batch's rows are the same for any later snapshot; the ctid ranges split them
 * into two disjoint sets whatever the two backends see of other rows.
 *
 * Memory: per part, the results not merged yet (at most two: a FETCH is sent
 * only while fewer than two are buffered or in flight) and those the delivered
 * chunk still points into (at most two), each fetch_size rows, copied out of
 * the connection layer (PQcopyResult) since a chunk holds rows of both parts.
 *
 * Failures: one on the source connection is the batch's (the consumer's usual
 * path). One on the second connection fails the batch too (rolled back, nothing
 * finished), and the batch is delivered again at once, read with one backend
 * (c->split_refused), so a second connection that cannot be had costs one
 * attempt, not the batch.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgqev_int.h"

#define PART_RES_MAX 6 /* results held per part: see "Memory" above */

typedef enum SplitKind {
	SK_IGNORE,
	SK_BLOCK, /* pgq._batch_split_block on the source */
	SK_ROWS,  /* the part's opening call or a FETCH */
} SplitKind;

typedef struct SplitPart {
	PGresult *res[PART_RES_MAX]; /* owned copies, oldest first */
	int nres;
	int cur;         /* first result with rows not merged yet */
	int row;         /* its next row */
	int64_t head_id; /* that row's ev_id (valid while cur < nres) */
	unsigned fetches;
	bool opened; /* the cursor's opening call was sent */
	bool eof;
} SplitPart;

typedef struct PgqevSplit {
	SplitPart part[2];
	int64_t block;
} PgqevSplit;

static void split_done(PqevConn *conn, const PqevReply *reply, void *arg);
static void advance(PgqevConsumer *c, PgqevBatch *b);

static PqevConn *part_conn(PgqevConsumer *c, int i)
{
	return i == 0 ? c->src : c->part;
}

static int send_part(PgqevConsumer *c, PgqevBatch *b, int i, SplitKind kind, const char *sql,
		     int nparams, const char *const *params)
{
	PgqevReq req = {.owner = c, .gen = b->gen, .kind = kind, .alt = i == 1};
	int rc = pgqev_req_send(part_conn(c, i), &req, sql, nparams, params, 0, NULL, split_done);
	if (rc < 0)
		pgqev_consumer_fail(c, i == 1, "cannot send a request",
				    i == 1 ? "the second connection refused it"
					   : "the source connection refused it");
	return rc;
}

void pgqev_split_open(PgqevConsumer *c, PgqevBatch *b)
{
	PqevConn *part = pgqev_consumer_part_conn(c);
	b->split = calloc(1, sizeof(*b->split));
	if (!part || !b->split) {
		pgqev_consumer_fail(c, false, "cannot read the batch in two parts",
				    "out of memory");
		return;
	}
	/* a fresh session: one left open by an abandoned batch the application
	   still holds may be inside that batch's transaction */
	pqev_conn_close(part);
	if (pqev_conn_start(part) < 0) {
		c->split_refused = b->id;
		pgqev_consumer_fail(c, true, "cannot open the second connection",
				    pqev_conn_error_detail(part));
		return;
	}
	char id[32];
	snprintf(id, sizeof(id), "%" PRId64, b->id);
	const char *p[1] = {id};
	if (!c->src_in_tx) {
		c->src_in_tx = true;
		if (send_part(c, b, 0, SK_IGNORE, "begin", 0, NULL) < 0)
			return;
	}
	if (send_part(c, b, 1, SK_IGNORE, "begin", 0, NULL) < 0)
		return;
	(void)send_part(c, b, 0, SK_BLOCK, "select pgq._batch_split_block($1)", 1, p);
}

/* Open both parts' cursors once the split block is known. */
static void open_parts(PgqevConsumer *c, PgqevBatch *b)
{
	char id[32], fetch[16], block[32];
	snprintf(id, sizeof(id), "%" PRId64, b->id);
	snprintf(fetch, sizeof(fetch), "%u", c->cfg.fetch_size);
	snprintf(block, sizeof(block), "%" PRId64, b->split->block);
	uint64_t gen = c->gen;
	for (int i = 0; i < 2 && gen == c->gen; i++) {
		const char *p[5] = {id, fetch, block, i == 0 ? "0" : "1"};
		SplitPart *sp = &b->split->part[i];
		sp->opened = true;
		sp->fetches = 1;
		(void)send_part(c, b, i, SK_ROWS,
				"select * from pgq._get_batch_part_cursor($1, '" PGQEV_PART_CURSOR
				"', $2::int4, $3::int8, $4::int4)",
				4, p);
	}
}

static void set_head(SplitPart *sp)
{
	while (sp->cur < sp->nres && sp->row >= PQntuples(sp->res[sp->cur])) {
		sp->cur++;
		sp->row = 0;
	}
	if (sp->cur < sp->nres)
		sp->head_id = strtoll(PQgetvalue(sp->res[sp->cur], sp->row, 0), NULL, 10);
}

/* A part's rows arrived (owned copy in res). */
static bool part_rows(PgqevConsumer *c, PgqevBatch *b, int i, const PGresult *res)
{
	SplitPart *sp = &b->split->part[i];
	sp->fetches--;
	int n = res ? PQntuples(res) : 0;
	if ((unsigned)n < c->cfg.fetch_size)
		sp->eof = true;
	if (n == 0)
		return true;
	PGresult *own = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
	if (!own || sp->nres == PART_RES_MAX) {
		PQclear(own);
		pgqev_consumer_fail(c, false, "cannot keep a chunk",
				    own ? "too many chunks buffered" : "out of memory");
		return false;
	}
	sp->res[sp->nres++] = own;
	set_head(sp);
	return true;
}

/* Keep each part's FETCHes going: fewer than two results buffered or coming. */
static void pump(PgqevConsumer *c, PgqevBatch *b)
{
	char sql[64];
	snprintf(sql, sizeof(sql), "fetch %u from " PGQEV_PART_CURSOR, c->cfg.fetch_size);
	uint64_t gen = c->gen;
	for (int i = 0; i < 2 && gen == c->gen; i++) {
		SplitPart *sp = &b->split->part[i];
		while (gen == c->gen && sp->opened && !sp->eof &&
		       (unsigned)(sp->nres - sp->cur) + sp->fetches < 2) {
			sp->fetches++;
			(void)send_part(c, b, i, SK_ROWS, sql, 0, NULL);
		}
	}
}

/* Merge the next chunk while no chunk is out; finish when both parts are done. */
static void advance(PgqevConsumer *c, PgqevBatch *b)
{
	uint64_t gen = c->gen;
	pump(c, b);
	if (gen != c->gen || c->batch != b || b->in_handler || b->pending || b->nrows > 0 ||
	    b->finishing || b->eof)
		return;
	SplitPart *p0 = &b->split->part[0], *p1 = &b->split->part[1];
	size_t n = 0;
	bool done = false;
	while (n < b->cap) {
		bool h0 = p0->cur < p0->nres, h1 = p1->cur < p1->nres;
		/* a part with no row at hand that is not at its end may still hold a
		   smaller id: wait for it */
		if ((!h0 && !p0->eof) || (!h1 && !p1->eof))
			break;
		if (!h0 && !h1) {
			done = true;
			break;
		}
		SplitPart *sp = !h1 || (h0 && p0->head_id <= p1->head_id) ? p0 : p1;
		PgqevEvent *e = &b->events[n++];
		e->batch = b;
		e->res = sp->res[sp->cur];
		e->row = sp->row;
		e->retry_secs = PGQEV_NO_RETRY;
		sp->row++;
		set_head(sp);
	}
	if (n > 0) {
		b->res = NULL;
		b->nrows = n;
		pgqev_consumer_deliver(c, b);
		return;
	}
	if (done) {
		b->eof = true;
		pgqev_consumer_maybe_finish(c, b);
	}
}

/* Drop the results whose rows were all merged and handled. */
static void drop_merged(SplitPart *sp)
{
	int k = sp->cur;
	for (int j = 0; j < k; j++)
		PQclear(sp->res[j]);
	memmove(sp->res, sp->res + k, (size_t)(sp->nres - k) * sizeof(sp->res[0]));
	sp->nres -= k;
	sp->cur = 0;
}

void pgqev_split_chunk_done(PgqevConsumer *c, PgqevBatch *b)
{
	drop_merged(&b->split->part[0]);
	drop_merged(&b->split->part[1]);
	advance(c, b);
}

void pgqev_split_free(PgqevBatch *b)
{
	PgqevSplit *s = b->split;
	b->split = NULL;
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < s->part[i].nres; j++)
			PQclear(s->part[i].res[j]);
	free(s);
	/* the second connection is only for the batch: closing it ends its
	   transaction (replies still pending are stale by now) */
	PgqevConsumer *c = b->c;
	if (c && c->part && !(c->batch && c->batch != b && c->batch->split))
		pqev_conn_close(c->part);
}

void pgqev_split_conn_failed(PgqevConsumer *c, const char *message)
{
	PgqevBatch *b = c->batch;
	if (!b || !b->split)
		return;
	c->split_refused = b->id;
	pgqev_consumer_fail(c, true, "the second connection failed; the batch is read again",
			    message);
}

static void split_done(PqevConn *conn, const PqevReply *reply, void *arg)
{
	PgqevReq x = *(PgqevReq *)arg;
	free(arg);
	PgqevConsumer *c = x.owner;
	PgqevBatch *b = c->batch;
	if (!b || !b->split || x.gen != c->gen || b->gen != x.gen || c->free_pending)
		return;
	pgqev_consumer_enter(c);
	int i = x.alt ? 1 : 0;
	if (reply->status == PQEV_SQL_ERROR)
		c->split_refused = b->id; /* whatever it was, read it again with one backend */
	if (i == 0 && !pgqev_consumer_src_ok(c, &x, reply, "reading the batch failed")) {
		pgqev_consumer_leave(c);
		return;
	}
	if (i == 1 && reply->status != PQEV_OK) {
		/* SQL errors too: the source will meet the same error if it is the
		   batch's, and the batch is not lost on a second connection's trouble */
		pgqev_split_conn_failed(c, reply->detail);
		pgqev_consumer_leave(c);
		return;
	}
	switch ((SplitKind)x.kind) {
	case SK_IGNORE:
		break;
	case SK_BLOCK:
		if (!reply->result || PQntuples(reply->result) != 1 ||
		    PQgetisnull(reply->result, 0, 0)) {
			pgqev_consumer_fail(c, false, "pgq._batch_split_block failed",
					    "no block number returned");
			break;
		}
		b->split->block = strtoll(PQgetvalue(reply->result, 0, 0), NULL, 10);
		open_parts(c, b);
		break;
	case SK_ROWS:
		if (part_rows(c, b, i, reply->result))
			advance(c, b);
		break;
	}
	pgqev_consumer_leave(c);
}
