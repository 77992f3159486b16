/*
 * One batch of a cascade worker: the provider's cursor read in chunks, each
 * chunk written on the local node (branch) or handed to on_batch (leaf), the
 * cascade's own events, then commit, tick, finish and the local watermark.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pgqd-ev/pqev_clock.h>

#include "pgqev_config.h"
#include "pgqev_cascade_int.h"

/* ---- growable text buffer for COPY data ---- */

typedef struct Buf {
	char *p;
	size_t n, cap;
	bool oom;
} Buf;

static void buf_need(Buf *b, size_t more)
{
	if (b->oom || b->n + more + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->n + more + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		b->oom = true;
		return;
	}
	b->p = p;
	b->cap = cap;
}

/* One field of COPY's text format: \N for NULL; backslash, tab, newline and
   carriage return escaped. */
static void buf_copy_field(Buf *b, const char *v, int len, char end)
{
	if (!v) {
		buf_need(b, 3);
		if (!b->oom) {
			memcpy(b->p + b->n, "\\N", 2);
			b->n += 2;
			b->p[b->n++] = end;
		}
		return;
	}
	buf_need(b, (size_t)len * 2 + 1);
	if (b->oom)
		return;
	char *o = b->p + b->n;
	for (int i = 0; i < len; i++) {
		char ch = v[i];
		switch (ch) {
		case '\\':
			*o++ = '\\';
			*o++ = '\\';
			break;
		case '\t':
			*o++ = '\\';
			*o++ = 't';
			break;
		case '\n':
			*o++ = '\\';
			*o++ = 'n';
			break;
		case '\r':
			*o++ = '\\';
			*o++ = 'r';
			break;
		default:
			*o++ = ch;
			break;
		}
	}
	*o++ = end;
	b->n = (size_t)(o - b->p);
}

/* Cursor columns: ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data, ev_extra1..4. */
enum { C_ID, C_TIME, C_TXID, C_RETRY, C_TYPE, C_DATA, C_EX1, C_EX2, C_EX3, C_EX4 };
static const int copy_cols[8] = {C_ID, C_TIME, C_TYPE, C_DATA, C_EX1, C_EX2, C_EX3, C_EX4};

static const char *val(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

/* own_gwm, when not NULL, replaces the data of pgq.global-watermark events (a
   sync_watermark branch passes its own global watermark downstream, spec 5.6). */
char *cas_copy_text(const PGresult *res, bool merge, const char *own_gwm, size_t *len, int *copied)
{
	int n = PQntuples(res);
	int first = merge ? 1 : 0;
	int own_gwm_len = own_gwm ? (int)strlen(own_gwm) : 0;
	Buf b = {0};
	*copied = 0;
	*len = 0;
	buf_need(&b, (size_t)n * 64);
	for (int i = 0; i < n && !b.oom; i++) {
		const char *type = val(res, i, C_TYPE);
		if (merge && type && strncmp(type, "pgq.", 4) == 0)
			continue;
		bool swap = own_gwm_len > 0 && type && strcmp(type, "pgq.global-watermark") == 0;
		for (int k = first; k < 8; k++) {
			int c = copy_cols[k];
			if (swap && c == C_DATA)
				buf_copy_field(&b, own_gwm, own_gwm_len, '\t');
			else
				buf_copy_field(&b, val(res, i, c), PQgetlength(res, i, c),
					       k < 7 ? '\t' : '\n');
		}
		(*copied)++;
	}
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	if (!b.p)
		b.p = calloc(1, 1);
	*len = b.n;
	return b.p;
}

/* One COPY per chunk: the events keep id and time. The chunk's text is the
   only copy of it held (the FETCH result is released after this returns). */
static bool copy_chunk(PgqevCascade *w, const PGresult *res)
{
	int n = PQntuples(res);
	/* a branch keeps the ids; a merge leaf leaves them to the combined queue's
	   sequence and copies only data events */
	bool merge = w->type != NT_BRANCH;
	int copied = 0;
	size_t len = 0;
	char own_gwm[32];
	bool swap = !merge && w->sync && w->global_wm > 0;
	if (swap)
		snprintf(own_gwm, sizeof(own_gwm), "%" PRId64, w->global_wm);
	char *text = cas_copy_text(res, merge, swap ? own_gwm : NULL, &len, &copied);
	if (text && copied == 0) {
		free(text);
		return true;
	}
	char *sql = !text ? NULL
			  : pgqev_sprintf("copy %s (%sev_time, ev_type, ev_data, ev_extra1,"
					  " ev_extra2, ev_extra3, ev_extra4) from stdin",
					  w->ev_table, merge ? "" : "ev_id, ");
	if (!sql) {
		free(text);
		cas_fail(w, PGQEV_ERR_TARGET, "cannot copy a chunk", "out of memory");
		return false;
	}
	w->writes++;
	bool ok = cas_send_copy_or_fail(w, sql, text, len);
	free(sql);
	if (!ok) {
		w->writes--;
		return false;
	}
	w->b_copied += (uint64_t)copied;
	if (!merge) {
		int64_t last = strtoll(PQgetvalue(res, n - 1, C_ID), NULL, 10);
		if (last > w->max_ev_id)
			w->max_ev_id = last;
	}
	return true;
}

/* ---- branch: binary COPY, rows gathered while the previous COPY runs ----
 *
 * A branch FETCHes in binary (PQEV_Q_BINARY) and writes COPY's binary format:
 * each field goes over as the provider sent it, so neither server formats or
 * parses ids and times and the client does not escape text. The rows that
 * arrive while a COPY runs on the local node are appended to one buffer and
 * sent as the next COPY when it ends, so the slower the local node, the fewer
 * and larger its COPYs (fewer round trips, fewer wake-ups); the buffer holds at
 * most PEND_CHUNKS chunks (cas_maybe_fetch stops fetching beyond that). */

#define PEND_CHUNKS 4u

enum { OID_INT8 = 20, OID_TEXT = 25, OID_TIMESTAMPTZ = 1184 };

static const unsigned char copy_bin_header[19] = {
	'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0377, '\r', '\n', 0, 0, 0, 0, 0, 0, 0, 0, 0};

static inline void put_be16(char *o, uint16_t v)
{
	o[0] = (char)(v >> 8);
	o[1] = (char)v;
}

static inline void put_be32(char *o, uint32_t v)
{
	o[0] = (char)(v >> 24);
	o[1] = (char)(v >> 16);
	o[2] = (char)(v >> 8);
	o[3] = (char)v;
}

static int64_t get_be64(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | u[i];
	return (int64_t)v;
}

/* ev_id of row i, as text, whatever the result's format. */
static const char *ev_id_text(const PGresult *r, int i, char buf[24])
{
	if (PQfformat(r, C_ID) == 0)
		return PQgetvalue(r, i, C_ID);
	if (PQgetlength(r, i, C_ID) != 8)
		return "?";
	snprintf(buf, 24, "%" PRId64, get_be64(PQgetvalue(r, i, C_ID)));
	return buf;
}

/* A binary result whose copied columns have the event table's types. */
static bool binary_copyable(const PGresult *r)
{
	static const unsigned oids[8] = {OID_INT8, OID_TIMESTAMPTZ, OID_TEXT, OID_TEXT,
					 OID_TEXT, OID_TEXT,        OID_TEXT, OID_TEXT};
	if (!PQbinaryTuples(r))
		return false;
	for (int k = 0; k < 8; k++)
		if (PQftype(r, copy_cols[k]) != oids[k])
			return false;
	return true;
}

static bool pend_reserve(PgqevCascade *w, size_t more)
{
	if (w->pend_len + more <= w->pend_cap)
		return true;
	size_t cap = w->pend_cap ? w->pend_cap : 65536;
	while (cap < w->pend_len + more)
		cap *= 2;
	char *p = realloc(w->pend, cap);
	if (!p)
		return false;
	w->pend = p;
	w->pend_cap = cap;
	return true;
}

/* Append a binary chunk's rows to the pending COPY data. */
static bool pend_append(PgqevCascade *w, const PGresult *res)
{
	int n = PQntuples(res);
	size_t need = w->pend_len ? 0 : sizeof(copy_bin_header);
	for (int i = 0; i < n; i++) {
		need += 2;
		for (int k = 0; k < 8; k++)
			need += 4 + (size_t)PQgetlength(res, i, copy_cols[k]);
	}
	if (!pend_reserve(w, need + 2)) /* + the trailer */
		return false;
	char *o = w->pend + w->pend_len;
	if (!w->pend_len) {
		memcpy(o, copy_bin_header, sizeof(copy_bin_header));
		o += sizeof(copy_bin_header);
	}
	for (int i = 0; i < n; i++) {
		put_be16(o, 8);
		o += 2;
		for (int k = 0; k < 8; k++) {
			int c = copy_cols[k];
			if (PQgetisnull(res, i, c)) {
				put_be32(o, 0xffffffffu);
				o += 4;
				continue;
			}
			int len = PQgetlength(res, i, c);
			put_be32(o, (uint32_t)len);
			memcpy(o + 4, PQgetvalue(res, i, c), (size_t)len);
			o += 4 + len;
		}
	}
	w->pend_len = (size_t)(o - w->pend);
	w->pend_rows += (unsigned)n;
	/* the highest id, not the last row's: an unsorted cursor's rows come in
	   any order */
	for (int i = 0; i < n; i++) {
		int64_t id = get_be64(PQgetvalue(res, i, C_ID));
		if (id > w->max_ev_id)
			w->max_ev_id = id;
	}
	return true;
}

/* Send the pending rows as one COPY when nothing else is being written. */
static bool pend_flush(PgqevCascade *w)
{
	/* the table comes with the local transaction's opening, which may still be
	   on its way (the cursor was opened at the same time) */
	if (w->pend_rows == 0 || w->writes > 0 || !w->ev_table)
		return true;
	char *sql = pgqev_sprintf("copy %s (ev_id, ev_time, ev_type, ev_data, ev_extra1,"
				  " ev_extra2, ev_extra3, ev_extra4) from stdin (format binary)",
				  w->ev_table);
	if (!sql) {
		cas_fail(w, PGQEV_ERR_TARGET, "cannot copy a chunk", "out of memory");
		return false;
	}
	put_be16(w->pend + w->pend_len, 0xffffu);
	char *data = w->pend;
	size_t len = w->pend_len + 2;
	unsigned rows = w->pend_rows;
	w->pend = NULL;
	w->pend_len = w->pend_cap = 0;
	w->pend_rows = 0;
	w->writes++;
	bool ok = cas_send_copy_or_fail(w, sql, data, len);
	free(sql);
	if (!ok) {
		w->writes--;
		return false;
	}
	w->b_copied += rows;
	return true;
}

/* The next FETCHes are in binary: a branch that copies, with no handler to
   read the rows as text, and no sync_watermark (whose copy rewrites the data of
   pgq.global-watermark events, which copy_chunk does on the text rows). */
static bool fetch_binary(const PgqevCascade *w)
{
	return w->type == NT_BRANCH && !w->cfg.on_batch && !w->behind_only && !w->sync;
}

static bool handler_sql(PgqevCascade *w, const char *sql, int n, const char *const *p)
{
	w->writes++;
	if (cas_send_or_fail(w, false, RK_WRITE, sql, n, p, 0))
		return true;
	w->writes--;
	return false;
}

/* A cascade event's fields (borrowed): from a cursor row, or gathered from an
   unsorted cursor until the batch's end. */
typedef struct CasEvent {
	int64_t id;
	const char *type, *data, *ex1, *ex2, *ex3;
} CasEvent;

struct CasDeferred {
	int64_t id;
	char *type, *data, *ex1, *ex2, *ex3;
};

static int64_t ev_id_of(const PGresult *r, int i)
{
	if (PQfformat(r, C_ID) == 0)
		return strtoll(PQgetvalue(r, i, C_ID), NULL, 10);
	return PQgetlength(r, i, C_ID) == 8 ? get_be64(PQgetvalue(r, i, C_ID)) : 0;
}

/* The cascade's own events, applied on the local node (spec §5.6). */
static bool cascade_event(PgqevCascade *w, const CasEvent *e)
{
	const char *type = e->type;
	const char *data = e->data;
	const char *ex1 = e->ex1;
	const char *ex2 = e->ex2;
	const char *ex3 = e->ex3;
	const char *q = w->cfg.queue;
	bool own = ex1 && strcmp(ex1, q) == 0;
	char detail[256];
	if (strcmp(type, "pgq.tick-id") == 0) {
		if (own) {
			snprintf(detail, sizeof(detail), "event %" PRId64, e->id);
			cas_fail(w, PGQEV_ERR_SQL,
				 "pgq.tick-id event names this cascade's own queue", detail);
			return false;
		}
		if (w->type != NT_BRANCH)
			return true;
		const char *p[3] = {q, ex1, data};
		return handler_sql(w, "select * from pgq_node.set_partition_watermark($1, $2, $3)",
				   3, p);
	}
	if (!own) {
		snprintf(detail, sizeof(detail), "%s event %" PRId64 " is for queue %s", type,
			 e->id, ex1 ? ex1 : "(null)");
		cas_fail(w, PGQEV_ERR_SQL, "cascade event of another queue", detail);
		return false;
	}
	if (strcmp(type, "pgq.location-info") == 0) {
		const char *p[4] = {q, data, ex2, ex3};
		return handler_sql(w,
				   "select * from pgq_node.register_location($1, $2, $3,"
				   " coalesce($4::boolean, false))",
				   4, p);
	}
	if (strcmp(type, "pgq.unregister-location") == 0) {
		const char *p[2] = {q, data};
		return handler_sql(w, "select * from pgq_node.unregister_location($1, $2)", 2, p);
	}
	if (strcmp(type, "pgq.global-watermark") == 0) {
		if (w->type != NT_BRANCH)
			return true;
		if (w->sync) {
			/* remembered; applied after the batch commits, through the
			   sync round (spec 5.6) */
			int64_t v = data ? strtoll(data, NULL, 10) : 0;
			if (v > 0)
				w->batch_gwm = v;
			return true;
		}
		const char *p[2] = {q, data};
		return handler_sql(w, "select * from pgq_node.set_global_watermark($1, $2::int8)",
				   2, p);
	}
	snprintf(detail, sizeof(detail), "%s (event %" PRId64 ")", type, e->id);
	cas_fail(w, PGQEV_ERR_SQL, "unknown cascade event type", detail);
	return false;
}

/* An unsorted cursor: the batch's cascade events are kept (copied: the
   result goes away) and applied in ev_id order once every row is in, so a
   location registered and then unregistered in one batch ends unregistered. */
static bool defer_push(PgqevCascade *w, const PGresult *res, int i)
{
	if (w->n_defer == w->cap_defer) {
		size_t cap = w->cap_defer ? w->cap_defer * 2 : 8;
		struct CasDeferred *d = realloc(w->defer, cap * sizeof(*d));
		if (!d)
			return false;
		w->defer = d;
		w->cap_defer = cap;
	}
	struct CasDeferred *d = &w->defer[w->n_defer];
	const int cols[5] = {C_TYPE, C_DATA, C_EX1, C_EX2, C_EX3};
	char **dst[5] = {&d->type, &d->data, &d->ex1, &d->ex2, &d->ex3};
	d->id = ev_id_of(res, i);
	bool ok = true;
	for (int k = 0; k < 5; k++) {
		const char *v = val(res, i, cols[k]);
		*dst[k] = v ? strdup(v) : NULL;
		ok = ok && (!v || *dst[k]);
	}
	w->n_defer++; /* freed by cas_defer_clear even when a copy failed */
	return ok;
}

void cas_defer_clear(PgqevCascade *w)
{
	for (size_t i = 0; i < w->n_defer; i++) {
		struct CasDeferred *d = &w->defer[i];
		free(d->type);
		free(d->data);
		free(d->ex1);
		free(d->ex2);
		free(d->ex3);
	}
	free(w->defer);
	w->defer = NULL;
	w->n_defer = w->cap_defer = 0;
}

static int defer_cmp(const void *a, const void *b)
{
	int64_t x = ((const struct CasDeferred *)a)->id, y = ((const struct CasDeferred *)b)->id;
	return (x > y) - (x < y);
}

/* Apply the gathered cascade events; false when the batch failed. */
static bool defer_apply(PgqevCascade *w)
{
	uint64_t gen = w->gen;
	qsort(w->defer, w->n_defer, sizeof(*w->defer), defer_cmp);
	for (size_t i = 0; i < w->n_defer; i++) {
		const struct CasDeferred *d = &w->defer[i];
		CasEvent e = {d->id, d->type, d->data, d->ex1, d->ex2, d->ex3};
		if (!cascade_event(w, &e) || gen != w->gen)
			return false;
	}
	cas_defer_clear(w);
	return true;
}

static bool send_tick(PgqevCascade *w, ReqKind kind, int64_t tick, const char *tick_time);

void cas_open_done(PgqevCascade *w)
{
	/* the cursor was opened at the same time: the rows gathered meanwhile go
	   out now (more FETCHes only once the cursor's own rows are in) */
	uint64_t gen = w->gen;
	if (pend_flush(w) && gen == w->gen)
		cas_maybe_commit(w);
}

void cas_maybe_fetch(PgqevCascade *w)
{
	uint64_t gen = w->gen;
	if (w->phase == WP_READ && !pend_flush(w))
		return;
	/* room for what the FETCHes in flight bring: at most PEND_CHUNKS chunks
	   gathered, and two COPYs or other writes queued on the local node */
	while (w->phase == WP_READ && !w->eof && !w->cursor_wait && w->fetches < 2 &&
	       w->writes < 2 &&
	       w->pend_rows + w->fetches * w->cfg.fetch_size < PEND_CHUNKS * w->cfg.fetch_size &&
	       gen == w->gen) {
		char sql[80];
		snprintf(sql, sizeof(sql), "fetch %u from " CASCADE_CURSOR, w->cfg.fetch_size);
		w->fetches++;
		if (!cas_send_or_fail(w, true, RK_FETCH, sql, 0, NULL,
				      fetch_binary(w) ? PQEV_Q_BINARY : 0))
			return;
	}
}

static void go_commit(PgqevCascade *w)
{
	char tick[32];
	snprintf(tick, sizeof(tick), "%" PRId64, w->cur_tick);
	const char *p[3] = {w->cfg.queue, w->worker, tick};
	cas_set_phase(w, WP_COMMIT);
	if (w->type == NT_BRANCH) {
		free(w->committing_time);
		w->committing_tick = w->cur_tick;
		w->committing_time = w->cur_tick_time ? strdup(w->cur_tick_time) : NULL;
	}
	if (w->behind_only) {
		/* the position belongs to the combined branch's replay */
		if (cas_send_or_fail(w, false, RK_COMMIT, "commit", 0, NULL, 0))
			cas_state_ahead(w);
		return;
	}
	if (w->combined_queue) {
		/* how far this partition went, inside the combined stream (spec 5.4) */
		const char *t[3] = {w->combined_queue, tick, w->cfg.queue};
		if (!cas_send_or_fail(w, false, RK_TICK_ID,
				      "select pgq.insert_event($1, 'pgq.tick-id', $2, $3, null,"
				      " null, null)",
				      3, t, 0))
			return;
	}
	if (!cas_send_or_fail(w, false, RK_COMPLETED,
			      "select ret_code, ret_note from"
			      " pgq_node.set_consumer_completed($1, $2, $3)",
			      3, p, PQEV_Q_PREPARE))
		return;
	if (cas_send_or_fail(w, false, RK_COMMIT, "commit", 0, NULL, 0))
		cas_state_ahead(w);
}

void cas_maybe_commit(PgqevCascade *w)
{
	/* dst_open: the opening's answers (the tick's check among them) are in
	   before anything that commits is sent */
	if (w->phase != WP_READ || !w->eof || w->fetches != 0 || w->writes != 0 ||
	    w->pend_rows != 0 || !w->dst_open)
		return;
	if (w->n_defer > 0) {
		/* the writes they send come back here */
		if (defer_apply(w) && w->writes == 0)
			go_commit(w);
		return;
	}
	go_commit(w);
}

/* A chunk of the provider's batch (borrowed result). */
void cas_chunk_arrived(PgqevCascade *w, const PGresult *res)
{
	uint64_t gen = w->gen;
	w->fetches--;
	int n = PQntuples(res);
	if ((unsigned)n < w->cfg.fetch_size)
		w->eof = true;
	if (n > 0 && PQnfields(res) < 10) {
		cas_fail(w, PGQEV_ERR_SQL, "unexpected batch cursor", "fewer than 10 columns");
		return;
	}
	for (int i = 0; i < n; i++) {
		if (!PQgetisnull(res, i, C_RETRY)) {
			char d[64], idb[24];
			snprintf(d, sizeof(d), "event %s", ev_id_text(res, i, idb));
			cas_fail(w, PGQEV_ERR_SQL, "retried event in a cascaded queue", d);
			return;
		}
	}
	w->b_events += (uint64_t)n;
	if (n > 0 && cas_copies(w)) {
		if (w->type == NT_BRANCH && binary_copyable(res)) {
			if (!pend_append(w, res)) {
				cas_fail(w, PGQEV_ERR_TARGET, "cannot copy a chunk",
					 "out of memory");
				return;
			}
		} else if (PQbinaryTuples(res)) {
			cas_fail(w, PGQEV_ERR_SQL, "unexpected batch cursor",
				 "its columns are not the event table's types (bigint,"
				 " timestamptz, text)");
			return;
		} else if (!copy_chunk(w, res)) {
			return;
		}
	}
	for (int i = 0; i < n; i++) {
		const char *type = val(res, i, C_TYPE);
		if (!type || strncmp(type, "pgq.", 4) != 0)
			continue;
		if (w->unsorted) {
			if (!defer_push(w, res, i)) {
				cas_fail(w, PGQEV_ERR_TARGET, "cannot keep a cascade event",
					 "out of memory");
				return;
			}
			continue;
		}
		CasEvent e = {ev_id_of(res, i),    type,
			      val(res, i, C_DATA), val(res, i, C_EX1),
			      val(res, i, C_EX2),  val(res, i, C_EX3)};
		if (!cascade_event(w, &e))
			return;
	}
	if (n > 0 && w->cfg.on_batch && !w->behind_only) {
		PgqevBatch *b = w->ub;
		pgqev_batch_set_rows(b, res, NULL);
		b->in_handler = true;
		PgqevVerdict v = w->cfg.on_batch(w, b, w->cfg.arg);
		b->in_handler = false;
		b->chunk++;
		if (b->abandoned) {
			/* freed or failed meanwhile: the batch is gone */
			if (w->ub != b)
				pgqev_batch_release(b);
			return;
		}
		pgqev_batch_clear_rows(b);
		if (gen != w->gen || w->free_pending)
			return;
		if (v == PGQEV_PENDING) {
			cas_fail(w, PGQEV_ERR_HANDLER, "handler returned PGQEV_PENDING",
				 "not supported by cascade workers");
			return;
		}
		if (v != PGQEV_DONE) {
			cas_fail(w, PGQEV_ERR_HANDLER, "handler failed",
				 "the batch will be applied again");
			return;
		}
	}
	cas_maybe_fetch(w);
	if (gen == w->gen)
		cas_maybe_commit(w);
}

/* A batch of at least this many FETCHes is read without the provider's sort
   (pgq.batch_event_sql ends in "order by 1"): the sort costs the provider a
   pass over the whole batch before the first row, while a branch needs no
   order (its consumers sort when they read); what it costs is one round trip
   more, to get the batch's SQL first. */
#define UNSORTED_MIN_CHUNKS 4

/* The text without its trailing "order by 1" (in place); false when the text
   does not end so (then it is read as it is, sorted). */
static bool strip_order_by(char *q)
{
	static const char tail[] = "order by 1";
	size_t n = strlen(q), t = sizeof(tail) - 1;
	while (n > 0 && (q[n - 1] == ' ' || q[n - 1] == '\n' || q[n - 1] == '\t'))
		n--;
	if (n <= t || strncasecmp(q + n - t, tail, t) != 0)
		return false;
	n -= t;
	if (q[n - 1] != ' ' && q[n - 1] != '\n' && q[n - 1] != '\t' && q[n - 1] != ')')
		return false;
	q[n] = '\0';
	return true;
}

void cas_declare_unsorted(PgqevCascade *w, const PGresult *res)
{
	if (!res || PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		cas_fail(w, PGQEV_ERR_SQL, "pgq.batch_event_sql", "returned no text");
		return;
	}
	char *q = strdup(PQgetvalue(res, 0, 0));
	if (!q) {
		cas_fail(w, PGQEV_ERR_SQL, "cannot read the batch", "out of memory");
		return;
	}
	w->unsorted = strip_order_by(q);
	char *decl = pgqev_sprintf("declare " CASCADE_CURSOR " no scroll cursor for %s", q);
	free(q);
	if (!decl) {
		cas_fail(w, PGQEV_ERR_SQL, "cannot read the batch", "out of memory");
		return;
	}
	char fetch[80];
	snprintf(fetch, sizeof(fetch), "fetch %u from " CASCADE_CURSOR, w->cfg.fetch_size);
	bool ok = cas_send_or_fail(w, true, RK_OPEN_STEP, decl, 0, NULL, 0);
	free(decl);
	if (!ok)
		return;
	w->cursor_wait = false;
	(void)cas_send_or_fail(w, true, RK_FETCH, fetch, 0, NULL, PQEV_Q_BINARY);
}

void cas_open_cursor(PgqevCascade *w)
{
	char id[32], n[32];
	snprintf(id, sizeof(id), "%" PRId64, w->batch_id);
	snprintf(n, sizeof(n), "%u", w->cfg.fetch_size);
	const char *p[3] = {id, CASCADE_CURSOR, n};
	cas_set_phase(w, WP_READ);
	w->src_in_tx = true;
	w->fetches = 1;
	/* pipelined: one round trip; the first chunk in binary too when the
	   branch copies in binary */
	if (!cas_send_or_fail(w, true, RK_OPEN_STEP, "begin", 0, NULL, 0))
		return;
	if (fetch_binary(w) &&
	    w->est_events >= (int64_t)UNSORTED_MIN_CHUNKS * (int64_t)w->cfg.fetch_size) {
		/* the cursor is declared over the SQL once it is here; no FETCH
		   before that */
		w->cursor_wait = true;
		(void)cas_send_or_fail(w, true, RK_BATCH_SQL,
				       "select pgq.batch_event_sql($1::int8)", 1, p, 0);
		return;
	}
	(void)cas_send_or_fail(w, true, RK_CURSOR,
			       "select * from pgq.get_batch_cursor($1::int8, $2, $3::int4, null)",
			       3, p, PQEV_Q_PREPARE | (fetch_binary(w) ? PQEV_Q_BINARY : 0));
}

/* The local transaction opens, pipelined (one round trip): BEGIN; on a branch
   the previous batch's tick when it may be missing; replica role and the event
   table when the batch is copied. A branch that copies in binary and a leaf
   (nothing to copy) open the provider's cursor at the same time: their rows
   wait for the event table (pend_flush), a leaf's writes queue behind BEGIN. */
void cas_go_open(PgqevCascade *w)
{
	cas_set_phase(w, WP_OPEN);
	w->ub = pgqev_batch_new_slots(w->cfg.fetch_size, w->batch_id);
	if (!w->ub) {
		cas_fail(w, PGQEV_ERR_SQL, "cannot start a batch", "out of memory");
		return;
	}
	w->ub->w = w;
	w->ub->prev_tick = w->prev_tick;
	w->ub->tick = w->cur_tick;
	w->ub->tick_time = w->cur_tick_time ? strdup(w->cur_tick_time) : NULL;
	w->dst_in_tx = true;
	w->dst_open = false;
	bool copies = cas_copies(w);
	if (!cas_send_or_fail(w, false, copies ? RK_OPEN_STEP : RK_OPEN, "begin", 0, NULL, 0))
		return;
	bool branch = w->type == NT_BRANCH;
	/* The previous batch's tick, first in the transaction: its snapshot is
	   taken before the transaction has an xid, so it sees that batch's rows
	   (committed before) and not this batch's (inserted later under an xid at
	   or above the snapshot's xmax). Its time is the provider's. */
	if (branch && !w->tick_done && !send_tick(w, RK_OWED_TICK, w->prev_tick, w->prev_tick_time))
		return;
	if (copies) {
		if (branch &&
		    !cas_send_or_fail(w, false, RK_OPEN_STEP,
				      "set local session_replication_role = 'replica'", 0, NULL, 0))
			return;
		/* a branch's queue refuses inserts outside replica role; a combined
		   root's queue takes them as any. The transaction's id before the
		   table's name: a local rotation between them would strand the copy
		   (sql/pgq/produce.sql, "Writers and rotation"; PgQ 3.5 does not). */
		const char *p[1] = {branch ? w->cfg.queue : w->combined_queue};
		if (!cas_send_or_fail(
			    w, false, RK_OPEN,
			    "select pg_catalog.txid_current(), pgq.current_event_table($1)", 1, p,
			    0))
			return;
	}
	if (fetch_binary(w) || !copies)
		cas_open_cursor(w);
}

/* pgq.ticker(q, tick, time, seq) on the local node unless the last local tick
   is already tick or later; answers (last local tick before, the tick made or
   NULL). seq is the highest event id copied, never below the last tick's, so
   the local event sequence moves forward. */
static const char *tick_sql(void)
{
	return "select l.tick_id, case when coalesce(l.tick_id, 0) < $2::int8 then"
	       " pgq.ticker($1, $2::int8, $3::timestamptz,"
	       " greatest($4::int8, coalesce(l.tick_event_seq, 0))) end"
	       " from (select 1) o left join lateral (select t.tick_id, t.tick_event_seq"
	       " from pgq.tick t where t.tick_queue = " CAS_QUEUE_ID_SQL
	       " order by t.tick_queue desc, t.tick_id desc limit 1) l on true";
}

static bool send_tick(PgqevCascade *w, ReqKind kind, int64_t tick, const char *tick_time)
{
	char t[32], seq[32];
	snprintf(t, sizeof(t), "%" PRId64, tick);
	snprintf(seq, sizeof(seq), "%" PRId64, w->max_ev_id);
	const char *p[4] = {w->cfg.queue, t, tick_time, seq};
	if (kind == RK_OWED_TICK_BG)
		return cas_send_on(w, false, kind, tick_sql(), 4, p, PQEV_Q_PREPARE) == 0;
	return cas_send_or_fail(w, false, kind, tick_sql(), 4, p, PQEV_Q_PREPARE);
}

void cas_tick_in_background(PgqevCascade *w)
{
	if (w->committing_time && w->committing_tick == w->completed &&
	    w->owed_tick != w->completed) {
		/* the commit went through, its answer was lost with a connection */
		free(w->owed_time);
		w->owed_tick = w->committing_tick;
		w->owed_time = w->committing_time;
		w->committing_time = NULL;
	}
	if (w->type != NT_BRANCH || w->tick_done || w->dst_in_tx || !w->owed_time ||
	    w->owed_tick != w->completed || !w->dst || !pqev_conn_is_ready(w->dst))
		return;
	(void)send_tick(w, RK_OWED_TICK_BG, w->owed_tick, w->owed_time);
}

bool cas_owed_tick_reply(PgqevCascade *w, const PGresult *res, int64_t tick)
{
	if (!res || PQntuples(res) != 1 || PQnfields(res) < 2) {
		cas_fail(w, PGQEV_ERR_TARGET, "pgq.ticker on the local node", "no answer row");
		return false;
	}
	int64_t last = PQgetisnull(res, 0, 0) ? 0 : strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	if (last > tick) {
		char d[200];
		snprintf(d, sizeof(d), "last local tick %" PRId64 " is past %" PRId64, last, tick);
		cas_fail(w, PGQEV_ERR_SQL, "branch ticks out of step", d);
		return false;
	}
	return true;
}

bool cas_idle_tick(PgqevCascade *w, const char *tick_time)
{
	cas_set_phase(w, WP_TICK);
	return send_tick(w, RK_OWED_TICK, w->completed, tick_time);
}

/* After a crash between the commit and the tick: the tick, then the finish. */
void cas_go_tick(PgqevCascade *w)
{
	cas_set_phase(w, WP_TICK);
	(void)send_tick(w, RK_TICK, w->cur_tick, w->cur_tick_time);
}

/* finish_batch + COMMIT on the provider. The batch is committed locally, so
   the next iteration starts at once while they travel (its state read came
   back with the local COMMIT: cas_state_ahead, so its next_batch_info follows
   them in the same round trip); a failure of theirs fails that iteration, and
   the batch handed out again is recognised by the position (completed = cur).
   A stop waits for them. */
void cas_go_finish(PgqevCascade *w)
{
	char id[32];
	snprintf(id, sizeof(id), "%" PRId64, w->batch_id);
	const char *p[1] = {id};
	cas_set_phase(w, WP_FINISH);
	if (!w->src_in_tx) {
		(void)cas_send_or_fail(w, true, RK_FINISH_ONLY, "select pgq.finish_batch($1)", 1, p,
				       PQEV_Q_PREPARE);
		return;
	}
	if (!cas_send_or_fail(w, true, RK_FINISH, "select pgq.finish_batch($1)", 1, p,
			      PQEV_Q_PREPARE))
		return;
	if (!cas_send_or_fail(w, true, RK_SRC_COMMIT, "commit", 0, NULL, 0))
		return;
	if (w->stop_requested)
		return; /* RK_SRC_COMMIT ends the batch */
	w->finishing = true;
	cas_batch_done(w);
}

/* Report this node's watermark to the provider when due (autocommit); true
   when it was due and sent. A sync_watermark branch reports its own position
   only (the batch's previous tick): the nodes below it are covered by its own
   global watermark instead. */
int64_t cas_wm_to_report(const PgqevCascade *w, int64_t prev_tick, int64_t cur_tick)
{
	int64_t wm = w->local_wm > 0 ? w->local_wm : cur_tick;
	if (wm > cur_tick)
		wm = cur_tick;
	return w->sync ? prev_tick : wm;
}

bool cas_maybe_publish_wm(PgqevCascade *w, int64_t prev_tick, int64_t cur_tick)
{
	usec_t now = pqev_clock_monotonic();
	if (w->last_wm && now - w->last_wm < w->cfg.wm_period)
		return false;
	/* due, but this iteration kept an older get_node_info: the next one reads
	   it (a report is due) and reports, so the watermark sent upward is never
	   older than the iteration that sends it */
	if (w->node_cached)
		return false;
	int64_t wm = cas_wm_to_report(w, prev_tick, cur_tick);
	char s[32];
	snprintf(s, sizeof(s), "%" PRId64, wm);
	const char *p[3] = {w->cfg.queue, w->node_name, s};
	if (cas_send_on(
		    w, true, RK_WM,
		    "select ret_code, ret_note from pgq_node.set_subscriber_watermark($1, $2, $3)",
		    3, p, 0) != 0)
		return false;
	w->last_wm = now;
	w->wm_sent = wm;
	return true;
}

void cas_batch_done(PgqevCascade *w)
{
	int64_t cur = w->cur_tick, prev = w->prev_tick;
	w->st.batches++;
	w->st.events += w->b_events;
	w->st.copied += w->b_copied;
	if (!w->behind_only)
		w->st.completed_tick = w->completed = cur;
	w->fail_streak = 0;
	pqev_backoff_reset(&w->fail_bo);
	cas_progress(w);
	cas_clear_batch(w);
	/* the sync round follows a report, as in PgQ's worker, once an upstream
	   global watermark was seen */
	if (cas_maybe_publish_wm(w, prev, cur) && w->sync && w->real_gwm > 0) {
		cas_sync_start(w);
		return;
	}
	cas_go_state(w);
}

PqevConn *pgqev_cascade_batch_target(PgqevBatch *b)
{
	return b->abandoned ? NULL : b->w->dst;
}

int pgqev_cascade_batch_exec(PgqevBatch *b, const char *sql, int nparams, const char *const *params)
{
	PgqevCascade *w = b->w;
	if (b->abandoned || !w->dst_in_tx)
		return -ENOTCONN;
	if (!sql || nparams < 0)
		return -EINVAL;
	int rc = cas_send_on(w, false, RK_WRITE, sql, nparams, params, 0);
	if (rc == 0)
		w->writes++;
	return rc;
}
