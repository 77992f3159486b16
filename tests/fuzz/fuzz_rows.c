/*
 * Fuzz target for what the library decodes from the rows the server sends, with
 * results of any shape (too few columns, NULLs anywhere, any text in any cell),
 * built with libpq's PQmakeEmptyPGresult / PQsetvalue so no server is needed:
 *   - the event accessors of a batch chunk (ids, ev_time, retry count, type,
 *     data and its length, extra1..4): no crash, data_len agrees with the data;
 *   - the cascade worker's COPY text of a chunk (branch and merge leaf): parsed
 *     back by a strict COPY text reader written here, it must give exactly the
 *     rows' values (NULL as NULL), without pgq.* events for a merge;
 *   - the cascade worker's replies to get_node_info, get_consumer_state and
 *     next_batch_info (node type, names, tick ids, lag, provider location as a
 *     connection string, node_attrs), fed to its real reply handler: no crash, a
 *     finite lag, no password of the provider location in an error message, and
 *     node_attrs' sync_watermark read as an independent decoder reads it.
 * Input: a shape byte per result, then NUL-separated cell texts; a cell whose
 * text is a single 0x01 byte is NULL.
 */
#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <pgqd-ev/pgqev_cascade.h>
#include <pgqd-ev/pqev_connlimit.h>
#include <pgqd-ev/pqev_log.h>

#include "pgqev_cascade_int.h"
#include "pgqev_int.h"

#include "fuzz.h"
#include "fuzz_check.h"

#define SECRET "Zq9SecretPw"

/* The next cell: its text and length, or NULL (a lone 0x01). */
static const char *in_cell(FzIn *in, int *len)
{
	const uint8_t *z = memchr(in->p, 0, in->n);
	size_t l = z ? (size_t)(z - in->p) : in->n;
	const char *s = (const char *)in->p;
	in->p += l + (z != NULL);
	in->n -= l + (z != NULL);
	*len = (int)l;
	return (l == 1 && s[0] == 1) ? NULL : s;
}

/* A result of ncols text columns and nrows rows of cells from the input. */
static PGresult *make_result(FzIn *in, int ncols, int nrows)
{
	PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	PGresAttDesc att[16];
	memset(att, 0, sizeof(att));
	for (int i = 0; i < ncols; i++) {
		att[i].name = (char *)"c";
		att[i].typid = 25;
		att[i].typlen = -1;
		att[i].atttypmod = -1;
	}
	if (!r || !PQsetResultAttrs(r, ncols, att))
		abort();
	for (int row = 0; row < nrows; row++)
		for (int c = 0; c < ncols; c++) {
			int len;
			const char *v = in_cell(in, &len);
			/* PQsetvalue copies; a NULL value is len -1 */
			if (!PQsetvalue(r, row, c, (char *)(v ? v : ""), v ? len : -1))
				abort();
		}
	return r;
}

static void check_events(const PGresult *r)
{
	PgqevBatch *b = pgqev_batch_new_slots(16, 1);
	if (!b)
		abort();
	pgqev_batch_set_rows(b, r, NULL);
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		PgqevEvent *e = pgqev_batch_event(b, i);
		const char *d = pgqev_event_data(e);
		(void)pgqev_event_id(e);
		(void)pgqev_event_txid(e);
		(void)pgqev_event_retry_count(e);
		(void)pgqev_event_time(e);
		(void)pgqev_event_type(e);
		for (int k = 0; k <= 5; k++)
			(void)pgqev_event_extra(e, k);
		if (d && pgqev_event_data_len(e) != (size_t)PQgetlength(r, (int)i, 5))
			FZ_FAIL("data_len %zu for a value of %d bytes", pgqev_event_data_len(e),
				PQgetlength(r, (int)i, 5));
		if (!d && pgqev_event_data_len(e) != 0)
			FZ_FAIL("data_len %zu for NULL data", pgqev_event_data_len(e));
	}
	if (pgqev_batch_event(b, pgqev_batch_count(b)) != NULL)
		FZ_FAIL("an event past the chunk's end");
	pgqev_batch_release(b);
}

/* Read one COPY text field at *p (up to the '\t' or '\n' that ends it). */
static bool copy_field(const char **p, const char *end, char *out, size_t *len, bool *null,
		       char *term)
{
	size_t o = 0;
	*null = false;
	if (end - *p >= 2 && (*p)[0] == '\\' && (*p)[1] == 'N' &&
	    (end - *p == 2 || (*p)[2] == '\t' || (*p)[2] == '\n')) {
		*null = true;
		*p += 2;
	} else {
		while (*p < end && **p != '\t' && **p != '\n') {
			char c = **p;
			if (c == '\r')
				return false; /* a raw carriage return ends a line for COPY */
			if (c == '\\') {
				if (end - *p < 2)
					return false;
				char e = (*p)[1];
				out[o++] = e == 't' ? '\t' : e == 'n' ? '\n' : e == 'r' ? '\r' : e;
				if (!strchr("\\tnr", e))
					return false; /* the only escapes we write */
				*p += 2;
			} else {
				out[o++] = c;
				(*p)++;
			}
		}
	}
	if (*p >= end)
		return false;
	*term = **p;
	(*p)++;
	*len = o;
	return true;
}

static void check_copy(const PGresult *r, bool merge)
{
	static const int cols[8] = {0, 1, 4, 5, 6, 7, 8, 9};
	size_t len;
	int copied;
	char *text = cas_copy_text(r, merge, NULL, &len, &copied);
	if (!text)
		abort();
	char *buf = malloc(len + 1);
	const char *p = text, *end = text + len;
	int rows = 0;
	if (!buf)
		abort();
	if (memchr(text, 0, len))
		FZ_FAIL("a NUL in COPY text");
	for (int i = 0; i < PQntuples(r); i++) {
		const char *type = PQgetisnull(r, i, 4) ? NULL : PQgetvalue(r, i, 4);
		if (merge && type && strncmp(type, "pgq.", 4) == 0)
			continue;
		for (int k = merge ? 1 : 0; k < 8; k++) {
			size_t fl;
			bool null;
			char term;
			int c = cols[k];
			if (!copy_field(&p, end, buf, &fl, &null, &term))
				FZ_FAIL("COPY text row %d column %d does not parse", i, c);
			if (term != (k < 7 ? '\t' : '\n'))
				FZ_FAIL("COPY text row %d column %d ends with 0x%02x", i, c, term);
			if (null != (bool)PQgetisnull(r, i, c))
				FZ_FAIL("COPY text row %d column %d: NULL is not kept", i, c);
			if (!null && (fl != (size_t)PQgetlength(r, i, c) ||
				      memcmp(buf, PQgetvalue(r, i, c), fl) != 0))
				FZ_FAIL("COPY text row %d column %d does not read back", i, c);
		}
		rows++;
	}
	if (p != end || rows != copied)
		FZ_FAIL("COPY text has %zu bytes after %d rows (%d copied)", (size_t)(end - p),
			rows, copied);
	free(buf);
	free(text);
}

/* %XX and '+' decoded, written apart from the library's decoder: a '%' without
   two hex digits after it stays as it is */
static char *attr_decode(const char *s, size_t n)
{
	char *o = malloc(n + 1), *q = o;
	if (!o)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '+') {
			*q++ = ' ';
		} else if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
			   isxdigit((unsigned char)s[i + 2])) {
			char hex[3] = {s[i + 1], s[i + 2], 0};
			*q++ = (char)strtol(hex, NULL, 16);
			i += 2;
		} else {
			*q++ = s[i];
		}
	}
	*q = 0;
	return o;
}

/* node_attrs (k=v&k=v, urlencoded) through the worker's reader: sync is set
   exactly when a key reads as sync_watermark, and its nodes are the last such
   key's value, decoded (none when empty) */
static void check_attrs(PgqevCascade *w, const char *attrs)
{
	bool sync = false;
	char *nodes = NULL;
	size_t len = strlen(attrs);
	for (size_t a = 0; a <= len;) {
		size_t b = a;
		while (b < len && attrs[b] != '&')
			b++;
		size_t eq = a;
		while (eq < b && attrs[eq] != '=')
			eq++;
		char *k = attr_decode(attrs + a, eq - a);
		if (b > a && strcmp(k, "sync_watermark") == 0) {
			sync = true;
			free(nodes);
			nodes = eq + 1 < b ? attr_decode(attrs + eq + 1, b - eq - 1) : NULL;
		}
		free(k);
		a = b + 1;
	}
	if (!cas_read_attrs(w, attrs))
		abort();
	if (w->sync != sync)
		FZ_FAIL("node_attrs: sync_watermark read wrong");
	if ((w->sync_nodes == NULL) != (nodes == NULL) ||
	    (nodes && strcmp(w->sync_nodes, nodes) != 0))
		FZ_FAIL("node_attrs: sync_watermark's nodes read wrong");
	free(nodes);
}

static bool saw_secret;
static bool saw_nan;

static void on_error(PgqevCascade *w, const PgqevError *err, void *arg)
{
	(void)w;
	(void)arg;
	if (strstr(err->message, SECRET) || strstr(err->detail, SECRET))
		saw_secret = true;
}

/* One reply of `kind` with result r to the worker's real handler. */
static void reply(PgqevCascade *w, ReqKind kind, const PGresult *r)
{
	PgqevReq *x = malloc(sizeof(*x));
	PqevReply rep = {.status = PQEV_OK, .result = r, .error = NULL, .nresults = 1};
	if (!x)
		abort();
	x->owner = w;
	x->gen = w->gen;
	x->kind = kind;
	x->alt = kind == RK_NEXT;
	cas_req_done(NULL, &rep, x);
	PgqevCascadeStats st;
	pgqev_cascade_stats(w, &st);
	if (!isfinite(st.lag_seconds))
		saw_nan = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct event_base *base;
	static PqevConnLimit *lim;
	FzIn in = {data, size};

	if (!base) {
		base = event_base_new();
		lim = pqev_connlimit_new(base, 0);
		pqev_log_set_level(PQEV_LOG_FATAL);
	}
	if (!base || !lim)
		abort();

	/* a chunk of the batch cursor: 10 columns, or fewer from a strange server */
	unsigned shape = fz_in_byte(&in);
	int ncols = (shape & 0x10) ? (int)(shape & 0x0F) % 11 : 10;
	int nrows = (int)(shape >> 5) + 1;
	PGresult *r = make_result(&in, ncols, nrows);
	check_events(r);
	if (ncols == 10) {
		check_copy(r, false);
		check_copy(r, true);
	}
	PQclear(r);

	/* the cascade worker's node, state and next-batch replies */
	PgqevCascadeConfig cc;
	char eb[256];
	pgqev_cascade_config_init(&cc);
	cc.conninfo = "host=/nonexistent dbname=fuzz";
	cc.queue = "q";
	cc.limiter = pgqev_limiter_of(lim);
	cc.on_error = on_error;
	PgqevCascade *w = pgqev_cascade_new(base, &cc, eb, sizeof(eb));
	if (!w || pgqev_cascade_start(w) < 0)
		abort();
	saw_secret = saw_nan = false;
	static const ReqKind kinds[3] = {RK_NODE, RK_STATE, RK_NEXT};
	static const int widths[3] = {10, 7, 6}; /* the columns each query selects */
	for (int k = 0; k < 3 && in.n; k++) {
		unsigned s = fz_in_byte(&in);
		int nc = (s & 0x10) ? (int)(s & 0x0F) % (widths[k] + 1) : widths[k];
		int nr = (s & 0x20) ? 0 : 1;
		PGresult *nr_res = make_result(&in, nc, nr);
		if (kinds[k] == RK_STATE && nc > 4 && nr == 1 && !PQgetisnull(nr_res, 0, 4)) {
			/* the provider location with a password appended */
			char *loc = pgqev_sprintf("%s password=" SECRET, PQgetvalue(nr_res, 0, 4));
			if (!loc || !PQsetvalue(nr_res, 0, 4, loc, (int)strlen(loc)))
				abort();
			free(loc);
		}
		if (kinds[k] == RK_NODE && nc == 10 && nr == 1 && !PQgetisnull(nr_res, 0, 9))
			check_attrs(w, PQgetvalue(nr_res, 0, 9));
		reply(w, kinds[k], nr_res);
		PQclear(nr_res);
	}
	pgqev_cascade_free(w);
	event_base_loop(base, EVLOOP_NONBLOCK); /* deferred frees */
	/* the secret elsewhere in the input (a node name, say) may well be shown */
	if (saw_secret && !memmem(data, size, SECRET, strlen(SECRET)))
		FZ_FAIL("a provider location's password shown in an error");
	if (saw_nan)
		FZ_FAIL("lag_seconds is not finite (/health would write it as nan)");
	return 0;
}
