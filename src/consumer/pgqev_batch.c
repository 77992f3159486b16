/*
 * Batches and events: the handles on_batch sees. An event is a row of the
 * current chunk's PGresult, read in place (no copy): the result is borrowed from
 * the connection layer while on_batch runs, or owned (a PQcopyResult) when the
 * consumer runs in async mode and a chunk may outlive the callback. The split
 * reader's chunks take their rows from two parts' results (pgqev_split.c).
 *
 * Column order of the cursor (pgq.get_batch_cursor / FETCH): ev_id, ev_time,
 * ev_txid, ev_retry, ev_type, ev_data, ev_extra1..4.
 */
#include <stdlib.h>
#include <string.h>

#include "pgqev_int.h"

enum { COL_ID, COL_TIME, COL_TXID, COL_RETRY, COL_TYPE, COL_DATA, COL_EXTRA1 };

PgqevBatch *pgqev_batch_new_slots(unsigned cap, int64_t id)
{
	PgqevBatch *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->events = calloc(cap, sizeof(PgqevEvent));
	if (!b->events) {
		free(b);
		return NULL;
	}
	b->cap = cap;
	b->id = id;
	return b;
}

PgqevBatch *pgqev_batch_new(PgqevConsumer *c, int64_t id)
{
	PgqevBatch *b = pgqev_batch_new_slots(c->cfg.fetch_size, id);
	if (!b)
		return NULL;
	b->c = c;
	b->gen = c->gen;
	return b;
}

void pgqev_batch_clear_rows(PgqevBatch *b)
{
	PQclear(b->own);
	b->own = NULL;
	b->res = NULL;
	b->nrows = 0;
}

void pgqev_batch_release(PgqevBatch *b)
{
	if (!b)
		return;
	pgqev_batch_clear_rows(b);
	if (b->split)
		pgqev_split_free(b);
	PQclear(b->ready);
	free(b->prev_tick_time);
	free(b->tick_time);
	free(b->events);
	free(b);
}

/* Point the chunk at `res` (borrowed) or `own` (taken over); build event slots. */
void pgqev_batch_set_rows(PgqevBatch *b, const PGresult *res, PGresult *own)
{
	pgqev_batch_clear_rows(b);
	b->own = own;
	b->res = own ? own : res;
	int n = PQntuples(b->res);
	if ((size_t)n > b->cap)
		n = (int)b->cap; /* never: FETCH asks for fetch_size */
	b->nrows = (size_t)n;
	for (int i = 0; i < n; i++) {
		b->events[i].batch = b;
		b->events[i].res = b->res;
		b->events[i].row = i;
		b->events[i].retry_secs = PGQEV_NO_RETRY;
	}
}

int64_t pgqev_batch_id(const PgqevBatch *b)
{
	return b->id;
}

int64_t pgqev_batch_prev_tick(const PgqevBatch *b)
{
	return b->prev_tick;
}

int64_t pgqev_batch_tick(const PgqevBatch *b)
{
	return b->tick;
}

const char *pgqev_batch_prev_tick_time(const PgqevBatch *b)
{
	return b->prev_tick_time;
}

const char *pgqev_batch_tick_time(const PgqevBatch *b)
{
	return b->tick_time;
}

unsigned pgqev_batch_chunk(const PgqevBatch *b)
{
	return b->chunk;
}

size_t pgqev_batch_count(const PgqevBatch *b)
{
	return b->nrows;
}

PgqevEvent *pgqev_batch_event(PgqevBatch *b, size_t i)
{
	return i < b->nrows ? &b->events[i] : NULL;
}

PgqevConsumer *pgqev_batch_consumer(const PgqevBatch *b)
{
	return b->c;
}

/* ---- events ---- */

static const char *field(const PgqevEvent *e, int col)
{
	const PGresult *res = e->res;
	if (PQgetisnull(res, e->row, col))
		return NULL;
	return PQgetvalue(res, e->row, col);
}

static int64_t field_i64(const PgqevEvent *e, int col)
{
	const char *s = field(e, col);
	return s ? strtoll(s, NULL, 10) : 0;
}

int64_t pgqev_event_id(const PgqevEvent *e)
{
	return field_i64(e, COL_ID);
}

const char *pgqev_event_time(const PgqevEvent *e)
{
	return field(e, COL_TIME);
}

int64_t pgqev_event_txid(const PgqevEvent *e)
{
	return field_i64(e, COL_TXID);
}

int pgqev_event_retry_count(const PgqevEvent *e)
{
	return (int)field_i64(e, COL_RETRY);
}

const char *pgqev_event_type(const PgqevEvent *e)
{
	return field(e, COL_TYPE);
}

const char *pgqev_event_data(const PgqevEvent *e)
{
	return field(e, COL_DATA);
}

size_t pgqev_event_data_len(const PgqevEvent *e)
{
	return (size_t)PQgetlength(e->res, e->row, COL_DATA);
}

const char *pgqev_event_extra(const PgqevEvent *e, int n)
{
	if (n < 1 || n > 4)
		return NULL;
	return field(e, COL_EXTRA1 + n - 1);
}

void pgqev_event_retry(PgqevEvent *e, int seconds)
{
	if (!e->batch->c)
		return; /* a cascade has no retry queue */
	if (seconds < 0)
		seconds = e->batch->c->cfg.retry_delay;
	e->retry_secs = seconds;
}
