/*
 * Fuzz target for names (queues, consumers, nodes, maintenance functions) as the
 * project checks, quotes and shows them:
 *   - pgqctl: ctl_check_new_name accepts exactly what its rule says (checked
 *     against a model written here); ctl_q / ctl_qq give one line without
 *     control characters that reads back as the name (or its first bytes and
 *     "..."); ctl_json_escape and the JSON writer give valid JSON that
 *     reads back as the name (a byte that is not UTF-8 as U+FFFD); a table keeps
 *     one line per row;
 *   - the daemon: maint_quote_fqname gives quoted identifiers that read back as
 *     the dot-separated parts of the name;
 *   - the library: pgqev_quote_literal gives an E'' literal that reads back as
 *     the text.
 * The input is the name (a NUL ends it, as for any C caller).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgqctl.h"
#include "pgqev_int.h"
#include "ticker.h"

#include "fuzz.h"
#include "fuzz_check.h"

#define OID_TEXT    25
#define OID_BOOL    16
#define OID_FLOAT8  701
#define OID_NUMERIC 1700

static bool model_check_new_name(const unsigned char *s, size_t n)
{
	if (n == 0 || n > CTL_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < ' ' || s[i] == 0x7f)
			return false;
	return true;
}

/* ctl_q / ctl_qq: one line of printable bytes that reads back as the name. */
static void check_shown(const char *name, const char *q, bool always)
{
	size_t n = strlen(name), qn = strlen(q);
	char *dec = malloc(qn + 1);
	size_t o = 0;
	if (!dec)
		abort();
	for (size_t i = 0; i < qn; i++)
		if ((unsigned char)q[i] < ' ' || q[i] == 0x7f)
			FZ_FAIL("ctl_q shows a control character: '%s'", q);
	if (qn >= 2 && q[0] == '"' && q[qn - 1] == '"') {
		for (size_t i = 1; i + 1 < qn; i++) {
			if (q[i] == '"')
				FZ_FAIL("unescaped quote inside '%s'", q);
			if (q[i] != '\\') {
				dec[o++] = q[i];
				continue;
			}
			if (q[i + 1] == '"' || q[i + 1] == '\\') {
				dec[o++] = q[++i];
			} else if (q[i + 1] == 'x' && i + 3 < qn && fz_hex(q[i + 2]) >= 0 &&
				   fz_hex(q[i + 3]) >= 0) {
				dec[o++] = (char)(fz_hex(q[i + 2]) * 16 + fz_hex(q[i + 3]));
				i += 3;
			} else {
				FZ_FAIL("bad escape in '%s'", q);
			}
		}
	} else {
		if (always || n == 0)
			FZ_FAIL("ctl_qq/ctl_q of '%s' is not in quotes: '%s'", name, q);
		memcpy(dec, q, qn);
		o = qn;
	}
	dec[o] = '\0';
	if (n <= 80) {
		if (o != n || memcmp(dec, name, n) != 0)
			FZ_FAIL("'%s' reads back as '%s'", name, dec);
	} else {
		/* the first 74-77 bytes, cut before a UTF-8 continuation byte unless
		   that takes more than 3 bytes back, and "..." */
		if (o < 77 || o - 3 > 77 || strcmp(dec + o - 3, "...") != 0 ||
		    memcmp(dec, name, o - 3) != 0 ||
		    (o - 3 > 74 && ((unsigned char)name[o - 3] & 0xC0) == 0x80))
			FZ_FAIL("long name '%s' shown as '%s'", name, q);
	}
	free(dec);
}

/* The JSON text of name: invalid UTF-8 bytes each become U+FFFD. */
static char *json_model(const char *s, size_t *len)
{
	size_t n = strlen(s), o = 0;
	char *out = malloc(3 * n + 1);
	if (!out)
		abort();
	for (size_t i = 0; i < n;) {
		size_t k = fz_utf8_len((const unsigned char *)s + i, n - i);
		if (k == 0) {
			memcpy(out + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i++;
		} else {
			memcpy(out + o, s + i, k);
			o += k;
			i += k;
		}
	}
	*len = o;
	return out;
}

static void check_json(const char *name)
{
	char *buf = NULL, *dec;
	size_t len = 0, mlen, dlen = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		abort();
	ctl_json_escape(f, name);
	fclose(f);
	char *model = json_model(name, &mlen);
	dec = malloc(len + 1);
	if (!dec)
		abort();
	if (!fz_json_decode_string(buf, len, dec, &dlen))
		FZ_FAIL("ctl_json_escape gives no JSON string: %s", buf);
	if (dlen != mlen || memcmp(dec, model, mlen) != 0)
		FZ_FAIL("ctl_json_escape does not read back: %s", buf);
	free(dec);
	free(model);
	free(buf);

	/* the writer around it, with the name as key, string and cells */
	PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	PGresAttDesc att[4];
	const Oid types[4] = {OID_TEXT, OID_BOOL, OID_FLOAT8, OID_NUMERIC};
	memset(att, 0, sizeof(att));
	for (int i = 0; i < 4; i++) {
		att[i].name = (char *)"c";
		att[i].typid = types[i];
		att[i].format = 0;
		att[i].typlen = -1;
		att[i].atttypmod = -1;
	}
	if (!r || !PQsetResultAttrs(r, 4, att))
		abort();
	for (int i = 0; i < 4; i++)
		if (!PQsetvalue(r, 0, i, (char *)name, (int)strlen(name)))
			abort();
	if (!PQsetvalue(r, 1, 0, NULL, -1))
		abort();
	buf = NULL;
	f = open_memstream(&buf, &len);
	if (!f)
		abort();
	CtlJson j;
	ctl_json_init(&j, f);
	ctl_json_obj_begin(&j, NULL);
	ctl_json_str(&j, name, name);
	ctl_json_arr_begin(&j, "cells");
	for (int row = 0; row < 2; row++)
		for (int i = 0; i < 4; i++)
			ctl_json_cell(&j, NULL, r, row, i);
	ctl_json_arr_end(&j);
	ctl_json_obj_end(&j);
	ctl_json_end(&j);
	fclose(f);
	const char *why = fz_json_check(buf, len);
	if (why)
		FZ_FAIL("pgqctl JSON is not valid (%s): %s", why, buf);
	free(buf);
	PQclear(r);
}

static void check_table(const char *name)
{
	static const char *const heads[3] = {"queue", "consumer", "lag"};
	const char *cells[3] = {name, "x", name};
	char *buf = NULL;
	size_t len = 0, lines = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		abort();
	CtlTable *t = ctl_table_new(3, heads);
	ctl_table_add(t, cells);
	cells[0] = "";
	ctl_table_add(t, cells);
	ctl_table_print(t, f, false);
	ctl_table_free(t);
	fclose(f);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)buf[i];
		lines += c == '\n';
		if ((c < ' ' && c != '\n') || c == 0x7f)
			FZ_FAIL("table shows control character 0x%02x", c);
	}
	if (lines != 3)
		FZ_FAIL("table of 2 rows printed %zu lines", lines);
	free(buf);
}

static void check_fqname(const char *name)
{
	char *q = maint_quote_fqname(name);
	size_t n = strlen(name), o = 0;
	char *dec = malloc(n + 1);
	if (!q || !dec)
		abort();
	/* "part"."part"... with "" for a quote inside a part */
	const char *p = q;
	for (;;) {
		if (*p != '"')
			FZ_FAIL("maint_quote_fqname(%s) = %s: part not quoted", name, q);
		p++;
		for (;;) {
			if (!*p)
				FZ_FAIL("maint_quote_fqname(%s) = %s: unterminated", name, q);
			if (*p == '"' && p[1] == '"') {
				dec[o++] = '"';
				p += 2;
			} else if (*p == '"') {
				p++;
				break;
			} else {
				dec[o++] = *p++;
			}
			if (o > n)
				FZ_FAIL("maint_quote_fqname(%s) = %s: too long", name, q);
		}
		if (!*p)
			break;
		if (*p != '.')
			FZ_FAIL("maint_quote_fqname(%s) = %s: junk after a part", name, q);
		dec[o++] = *p++;
		if (o > n)
			FZ_FAIL("maint_quote_fqname(%s) = %s: too long", name, q);
	}
	dec[o] = '\0';
	if (strcmp(dec, name) != 0)
		FZ_FAIL("maint_quote_fqname(%s) = %s reads back as %s", name, q, dec);
	free(dec);
	free(q);
}

static void check_literal(const char *name)
{
	char *q = pgqev_quote_literal(name);
	size_t qn, n = strlen(name), o = 0;
	char *dec = malloc(n + 1);
	if (!q || !dec)
		abort();
	qn = strlen(q);
	if (qn < 3 || q[0] != 'E' || q[1] != '\'' || q[qn - 1] != '\'')
		FZ_FAIL("pgqev_quote_literal(%s) = %s: not E''", name, q);
	for (size_t i = 2; i + 1 < qn; i++) {
		if (q[i] == '\'' || q[i] == '\\') {
			if (i + 2 >= qn || q[i + 1] != q[i])
				FZ_FAIL("pgqev_quote_literal(%s) = %s: lone %c", name, q, q[i]);
			i++;
		}
		if (o >= n)
			FZ_FAIL("pgqev_quote_literal(%s) = %s: too long", name, q);
		dec[o++] = q[i];
	}
	dec[o] = '\0';
	if (strcmp(dec, name) != 0)
		FZ_FAIL("pgqev_quote_literal(%s) = %s reads back as %s", name, q, dec);
	free(dec);
	free(q);
}

/* One message shows up to CTL_Q_HELD names: every one stays valid until it is
   printed (a ring of 4 made failover's 8-name message read freed memory). */
static void check_held(void)
{
	const char *held[CTL_Q_HELD];
	char want[32];
	for (int i = 0; i < CTL_Q_HELD; i++) {
		snprintf(want, sizeof(want), "node%d", i);
		held[i] = i % 2 ? ctl_q(want) : ctl_qq(want);
	}
	for (int i = 0; i < CTL_Q_HELD; i++) {
		snprintf(want, sizeof(want), i % 2 ? "node%d" : "\"node%d\"", i);
		if (strcmp(held[i], want) != 0)
			FZ_FAIL("ctl_q's result %d of %d is '%s', not '%s'", i + 1, CTL_Q_HELD,
				held[i], want);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *name = malloc(size + 1);
	if (!name)
		abort();
	memcpy(name, data, size);
	name[size] = '\0';
	size_t n = strlen(name);
	const unsigned char *u = (const unsigned char *)name;

	if (ctl_check_new_name("queue", name) != model_check_new_name(u, n))
		FZ_FAIL("ctl_check_new_name disagrees with its rule for '%s'", name);
	check_shown(name, ctl_q(name), false);
	check_shown(name, ctl_qq(name), true);
	check_json(name);
	check_table(name);
	check_fqname(name);
	check_literal(name);
	check_held();
	free(name);
	return 0;
}
