/*
 * Output: aligned tables for people, JSON for scripts. The JSON writer is a
 * small streaming emitter (no dependency); strings are escaped per RFC 8259.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pgqctl.h"

#define OID_BOOL    16
#define OID_INT8    20
#define OID_INT2    21
#define OID_INT4    23
#define OID_OID     26
#define OID_FLOAT4  700
#define OID_FLOAT8  701
#define OID_NUMERIC 1700

struct CtlTable {
	int ncols;
	char **headers;
	char **cells; /* rows * ncols */
	unsigned char *bad;
	size_t rows, cap;
};

CtlTable *ctl_table_new(int ncols, const char *const *headers)
{
	CtlTable *t = calloc(1, sizeof(*t));

	if (!t)
		abort();
	t->ncols = ncols;
	t->headers = calloc((size_t)ncols, sizeof(char *));
	for (int i = 0; i < ncols; i++)
		t->headers[i] = strdup(headers[i]);
	return t;
}

/* A cell as shown: control characters (a newline in a name or in event data would
   break the row) as \xNN. */
static char *cell_dup(const char *s)
{
	size_t n = 0, len = 0;
	char *d;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		n += (*p < ' ' || *p == 0x7f) ? 4 : 1;
	d = malloc(n + 1);
	if (!d)
		abort();
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < ' ' || *p == 0x7f)
			len += (size_t)sprintf(d + len, "\\x%02x", *p);
		else
			d[len++] = (char)*p;
	}
	d[len] = '\0';
	return d;
}

void ctl_table_add(CtlTable *t, const char *const *cells)
{
	if (t->rows == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 16;
		t->cells = realloc(t->cells, t->cap * (size_t)t->ncols * sizeof(char *));
		t->bad = realloc(t->bad, t->cap * (size_t)t->ncols);
		if (!t->cells || !t->bad)
			abort();
	}
	for (int i = 0; i < t->ncols; i++) {
		t->cells[t->rows * (size_t)t->ncols + (size_t)i] =
			cell_dup(cells[i] ? cells[i] : "");
		t->bad[t->rows * (size_t)t->ncols + (size_t)i] = 0;
	}
	t->rows++;
}

void ctl_table_mark_bad(CtlTable *t, int col)
{
	if (t->rows > 0 && col >= 0 && col < t->ncols)
		t->bad[(t->rows - 1) * (size_t)t->ncols + (size_t)col] = 1;
}

/* Display width: UTF-8 continuation bytes take no column. */
static size_t width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xC0) != 0x80)
			w++;
	return w;
}

static void pad(FILE *out, size_t n)
{
	while (n-- > 0)
		fputc(' ', out);
}

void ctl_table_print(CtlTable *t, FILE *out, bool color)
{
	size_t *w = calloc((size_t)t->ncols, sizeof(size_t));

	for (int c = 0; c < t->ncols; c++) {
		w[c] = width(t->headers[c]);
		for (size_t r = 0; r < t->rows; r++) {
			size_t cw = width(t->cells[r * (size_t)t->ncols + (size_t)c]);
			if (cw > w[c])
				w[c] = cw;
		}
	}
	for (int c = 0; c < t->ncols; c++) {
		fprintf(out, "%s%s%s", color ? "\033[1m" : "", t->headers[c],
			color ? "\033[0m" : "");
		if (c + 1 < t->ncols)
			pad(out, w[c] - width(t->headers[c]) + 2);
	}
	fputc('\n', out);
	for (size_t r = 0; r < t->rows; r++) {
		int last = 0; /* no padding after the last non-empty cell */

		for (int c = 0; c < t->ncols; c++)
			if (t->cells[r * (size_t)t->ncols + (size_t)c][0])
				last = c;
		for (int c = 0; c <= last; c++) {
			const char *s = t->cells[r * (size_t)t->ncols + (size_t)c];
			bool bad = t->bad[r * (size_t)t->ncols + (size_t)c];

			fprintf(out, "%s%s%s", bad && color ? "\033[31m" : "", s,
				bad && color ? "\033[0m" : "");
			if (c < last)
				pad(out, w[c] - width(s) + 2);
		}
		fputc('\n', out);
	}
	free(w);
}

CtlTable *ctl_table_free(CtlTable *t)
{
	if (!t)
		return NULL;
	for (size_t i = 0; i < t->rows * (size_t)t->ncols; i++)
		free(t->cells[i]);
	for (int c = 0; c < t->ncols; c++)
		free(t->headers[c]);
	free(t->headers);
	free(t->cells);
	free(t->bad);
	free(t);
	return NULL;
}

/* ---- JSON ---- */

/* Length of the valid UTF-8 sequence at p (2..4), or 0. */
static int utf8_len(const unsigned char *p)
{
	int n;
	unsigned cp;

	if (p[0] >= 0xC2 && p[0] <= 0xDF)
		n = 2, cp = p[0] & 0x1Fu;
	else if (p[0] >= 0xE0 && p[0] <= 0xEF)
		n = 3, cp = p[0] & 0x0Fu;
	else if (p[0] >= 0xF0 && p[0] <= 0xF4)
		n = 4, cp = p[0] & 0x07u;
	else
		return 0;
	for (int i = 1; i < n; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3Fu);
	}
	if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
		return 0;
	return n;
}

/* Text from a database in another encoding (SQL_ASCII) may hold bytes that are
   not UTF-8: each such byte becomes U+FFFD, so the output stays valid JSON. */
void ctl_json_escape(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p >= 0x80) {
			int n = utf8_len(p);

			if (n == 0) {
				fputs("\\ufffd", out);
			} else {
				fwrite(p, 1, (size_t)n, out);
				p += n - 1;
			}
			continue;
		}
		switch (*p) {
		case '"':
			fputs("\\\"", out);
			break;
		case '\\':
			fputs("\\\\", out);
			break;
		case '\n':
			fputs("\\n", out);
			break;
		case '\r':
			fputs("\\r", out);
			break;
		case '\t':
			fputs("\\t", out);
			break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				fprintf(out, "\\u%04x", *p);
			else
				fputc(*p, out);
		}
	}
	fputc('"', out);
}

void ctl_json_init(CtlJson *j, FILE *out)
{
	memset(j, 0, sizeof(*j));
	j->out = out;
}

static void json_key(CtlJson *j, const char *key)
{
	if (j->need_comma[j->depth])
		fputc(',', j->out);
	j->need_comma[j->depth] = true;
	if (key) {
		ctl_json_escape(j->out, key);
		fputc(':', j->out);
	}
}

void ctl_json_obj_begin(CtlJson *j, const char *key)
{
	json_key(j, key);
	fputc('{', j->out);
	if (j->depth < 31)
		j->depth++;
	j->need_comma[j->depth] = false;
}

void ctl_json_obj_end(CtlJson *j)
{
	fputc('}', j->out);
	if (j->depth > 0)
		j->depth--;
}

void ctl_json_arr_begin(CtlJson *j, const char *key)
{
	json_key(j, key);
	fputc('[', j->out);
	if (j->depth < 31)
		j->depth++;
	j->need_comma[j->depth] = false;
}

void ctl_json_arr_end(CtlJson *j)
{
	fputc(']', j->out);
	if (j->depth > 0)
		j->depth--;
}

void ctl_json_str(CtlJson *j, const char *key, const char *v)
{
	json_key(j, key);
	if (v)
		ctl_json_escape(j->out, v);
	else
		fputs("null", j->out);
}

void ctl_json_int(CtlJson *j, const char *key, long long v)
{
	json_key(j, key);
	fprintf(j->out, "%lld", v);
}

void ctl_json_num(CtlJson *j, const char *key, double v)
{
	json_key(j, key);
	if (isfinite(v))
		fprintf(j->out, "%.6g", v);
	else
		fputs("null", j->out);
}

void ctl_json_bool(CtlJson *j, const char *key, bool v)
{
	json_key(j, key);
	fputs(v ? "true" : "false", j->out);
}

void ctl_json_null(CtlJson *j, const char *key)
{
	json_key(j, key);
	fputs("null", j->out);
}

void ctl_json_cell(CtlJson *j, const char *key, const PGresult *r, int row, int col)
{
	const char *v;

	if (PQgetisnull(r, row, col)) {
		ctl_json_null(j, key);
		return;
	}
	v = PQgetvalue(r, row, col);
	switch (PQftype(r, col)) {
	case OID_BOOL:
		ctl_json_bool(j, key, v[0] == 't');
		break;
	case OID_INT2:
	case OID_INT4:
	case OID_INT8:
	case OID_OID:
		json_key(j, key);
		fputs(v, j->out);
		break;
	case OID_FLOAT4:
	case OID_FLOAT8:
	case OID_NUMERIC:
		ctl_json_num(j, key, strtod(v, NULL));
		break;
	default:
		ctl_json_str(j, key, v);
	}
}

void ctl_json_end(CtlJson *j)
{
	fputc('\n', j->out);
	fflush(j->out);
}

/* ---- times ---- */

void ctl_fmt_age(char *buf, size_t len, double sec)
{
	long long s;

	if (sec < 0) {
		snprintf(buf, len, "-");
		return;
	}
	if (sec < 60) {
		snprintf(buf, len, "%.1fs", sec);
		return;
	}
	s = (long long)sec;
	if (s < 3600)
		snprintf(buf, len, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
	else
		snprintf(buf, len, "%lldd%02lldh", s / 86400, (s % 86400) / 3600);
}
