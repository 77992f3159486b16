/*
 * Strict checkers for what the fuzz targets produce, written apart from the code
 * under test (so a target does not trust the escaper it checks): UTF-8, a JSON
 * document (RFC 8259), the Prometheus text format (0.0.4), and decoders for the
 * quoted forms the project writes. Each check returns NULL when the text is
 * valid, else a short reason; the targets abort with it.
 */
#ifndef PGQEV_TESTS_FUZZ_CHECK_H
#define PGQEV_TESTS_FUZZ_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The fuzz input as the targets read it: bytes taken one at a time from the
   front; past the end every byte reads as 0. */
typedef struct FzIn {
	const unsigned char *p;
	size_t n;
} FzIn;

static inline unsigned fz_in_byte(FzIn *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

/* Length of the well-formed UTF-8 sequence at s (1..4, within n bytes), else 0. */
static inline size_t fz_utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	unsigned cp;

	if (n == 0)
		return 0;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		len = 2, cp = s[0] & 0x1Fu;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
		len = 3, cp = s[0] & 0x0Fu;
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
		len = 4, cp = s[0] & 0x07u;
	else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3Fu);
	}
	if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (cp >= 0xD800 && cp <= 0xDFFF) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
		return 0;
	return len;
}

static inline bool fz_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		size_t k = fz_utf8_len(p + i, n - i);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}

/* ---- JSON ---- */

typedef struct FzJson {
	const char *p, *end;
	const char *err;
	int depth;
} FzJson;

static void fz_json_ws(FzJson *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static bool fz_json_fail(FzJson *j, const char *why)
{
	if (!j->err)
		j->err = why;
	return false;
}

static int fz_hex(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
}

/* A string at j->p (the opening quote); its decoded bytes go to out (if not NULL,
   at least as large as the encoded string). */
static bool fz_json_string(FzJson *j, char *out, size_t *outlen)
{
	size_t o = 0;
	if (j->p >= j->end || *j->p != '"')
		return fz_json_fail(j, "string expected");
	j->p++;
	while (j->p < j->end && *j->p != '"') {
		unsigned char c = (unsigned char)*j->p;
		if (c < 0x20)
			return fz_json_fail(j, "raw control character in a string");
		if (c == '\\') {
			if (j->end - j->p < 2)
				return fz_json_fail(j, "cut escape");
			char e = j->p[1];
			const char *simple = strchr("\"\\/bfnrt", e);
			if (e && simple) {
				static const char dec[] = "\"\\/\b\f\n\r\t";
				if (out)
					out[o++] = dec[simple - "\"\\/bfnrt"];
				j->p += 2;
				continue;
			}
			if (e != 'u' || j->end - j->p < 6)
				return fz_json_fail(j, "bad escape");
			unsigned cp = 0;
			for (int i = 2; i < 6; i++) {
				int h = fz_hex(j->p[i]);
				if (h < 0)
					return fz_json_fail(j, "bad \\u escape");
				cp = cp * 16 + (unsigned)h;
			}
			j->p += 6;
			if (cp >= 0xD800 && cp <= 0xDFFF)
				return fz_json_fail(j, "surrogate escape (not written by us)");
			if (out) {
				if (cp < 0x80) {
					out[o++] = (char)cp;
				} else if (cp < 0x800) {
					out[o++] = (char)(0xC0 | (cp >> 6));
					out[o++] = (char)(0x80 | (cp & 0x3F));
				} else {
					out[o++] = (char)(0xE0 | (cp >> 12));
					out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
					out[o++] = (char)(0x80 | (cp & 0x3F));
				}
			}
			continue;
		}
		size_t k = fz_utf8_len((const unsigned char *)j->p, (size_t)(j->end - j->p));
		if (k == 0)
			return fz_json_fail(j, "invalid UTF-8 in a string");
		if (out)
			memcpy(out + o, j->p, k);
		o += k;
		j->p += k;
	}
	if (j->p >= j->end)
		return fz_json_fail(j, "unterminated string");
	j->p++;
	if (outlen)
		*outlen = o;
	return true;
}

static bool fz_json_number(FzJson *j)
{
	const char *s = j->p;
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p < j->end && *j->p == '0')
		j->p++;
	else if (j->p < j->end && *j->p >= '1' && *j->p <= '9')
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	else
		return fz_json_fail(j, "bad number");
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (j->p >= j->end || *j->p < '0' || *j->p > '9')
			return fz_json_fail(j, "bad fraction");
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (j->p >= j->end || *j->p < '0' || *j->p > '9')
			return fz_json_fail(j, "bad exponent");
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	}
	return j->p > s;
}

static bool fz_json_value(FzJson *j);

/* After a member or an element: 1 at ',' (another follows), 0 at `close` (the
   container ends), -1 on anything else. */
static int fz_json_next(FzJson *j, char close)
{
	fz_json_ws(j);
	if (j->p < j->end && *j->p == ',') {
		j->p++;
		return 1;
	}
	if (j->p < j->end && *j->p == close) {
		j->p++;
		return 0;
	}
	fz_json_fail(j, close == '}' ? "',' or '}' expected" : "',' or ']' expected");
	return -1;
}

static bool fz_json_lit(FzJson *j, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
		return fz_json_fail(j, "bad literal");
	j->p += n;
	return true;
}

static bool fz_json_value(FzJson *j)
{
	if (++j->depth > 64)
		return fz_json_fail(j, "too deep");
	fz_json_ws(j);
	if (j->p >= j->end)
		return fz_json_fail(j, "value expected");
	bool ok;
	switch (*j->p) {
	case '{':
		j->p++;
		fz_json_ws(j);
		if (j->p < j->end && *j->p == '}') {
			j->p++;
			ok = true;
			break;
		}
		for (;;) {
			fz_json_ws(j);
			if (!fz_json_string(j, NULL, NULL))
				return false;
			fz_json_ws(j);
			if (j->p >= j->end || *j->p != ':')
				return fz_json_fail(j, "':' expected");
			j->p++;
			if (!fz_json_value(j))
				return false;
			int more = fz_json_next(j, '}');
			if (more < 0)
				return false;
			if (!more)
				break;
		}
		ok = true;
		break;
	case '[':
		j->p++;
		fz_json_ws(j);
		if (j->p < j->end && *j->p == ']') {
			j->p++;
			ok = true;
			break;
		}
		for (;;) {
			if (!fz_json_value(j))
				return false;
			int more = fz_json_next(j, ']');
			if (more < 0)
				return false;
			if (!more)
				break;
		}
		ok = true;
		break;
	case '"':
		ok = fz_json_string(j, NULL, NULL);
		break;
	case 't':
		ok = fz_json_lit(j, "true");
		break;
	case 'f':
		ok = fz_json_lit(j, "false");
		break;
	case 'n':
		ok = fz_json_lit(j, "null");
		break;
	default:
		ok = fz_json_number(j);
	}
	j->depth--;
	return ok;
}

/* NULL when text[0..n) is exactly one JSON value (with surrounding whitespace). */
static inline const char *fz_json_check(const char *text, size_t n)
{
	FzJson j = {text, text + n, NULL, 0};
	if (!fz_json_value(&j))
		return j.err ? j.err : "invalid";
	fz_json_ws(&j);
	if (j.p != j.end)
		return "text after the value";
	return NULL;
}

/* Decode the one JSON string at text (n bytes) into out; false when it is not one. */
static inline bool fz_json_decode_string(const char *text, size_t n, char *out, size_t *outlen)
{
	FzJson j = {text, text + n, NULL, 0};
	return fz_json_string(&j, out, outlen) && j.p == j.end;
}

/* ---- Prometheus text format 0.0.4 ---- */

static bool fz_prom_name_char(char c, bool first, bool label)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
	       (!label && c == ':') || (!first && c >= '0' && c <= '9');
}

/* A sample value: a Go ParseFloat number, NaN, +Inf, -Inf. */
static bool fz_prom_value(const char *s, size_t n)
{
	char buf[64];
	char *end;
	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (!strcmp(buf, "NaN") || !strcmp(buf, "+Inf") || !strcmp(buf, "-Inf"))
		return true;
	for (size_t i = 0; i < n; i++)
		if (!strchr("0123456789+-.eE", buf[i]))
			return false; /* no nan/inf spellings, no hex */
	(void)strtod(buf, &end);
	return *end == '\0';
}

/*
 * NULL when text is valid: lines end in '\n'; "# HELP name text", "# TYPE name
 * type" or a sample "name{label="value",...} value"; label values hold UTF-8
 * with only \\, \" and \n escapes and no raw newline; each labels set is unique
 * per metric name (a duplicate series is invalid), and a TYPE line comes before
 * the metric's samples.
 */
static inline const char *fz_prom_check(const char *text, size_t n)
{
	const char *p = text, *end = text + n;
	/* series seen: "name{labels}" lines, kept to find duplicates */
	size_t nseen = 0, capseen = 0;
	char **seen = NULL;
	const char *err = NULL;

	if (n == 0 || text[n - 1] != '\n')
		return "does not end in a newline";
	if (!fz_utf8_valid(text, n))
		return "not UTF-8";
	while (p < end && !err) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *q = p;
		if (q == eol) {
			err = "empty line";
			break;
		}
		if (*q == '#') {
			if ((size_t)(eol - q) > 7 &&
			    (!strncmp(q, "# HELP ", 7) || !strncmp(q, "# TYPE ", 7))) {
				bool type = q[2] == 'T';
				q += 7;
				if (!fz_prom_name_char(*q, true, false)) {
					err = "bad metric name in HELP/TYPE";
					break;
				}
				while (q < eol && fz_prom_name_char(*q, false, false))
					q++;
				if (q >= eol || *q != ' ') {
					err = "HELP/TYPE without text";
					break;
				}
				q++;
				if (type) {
					size_t tl = (size_t)(eol - q);
					const char *types[] = {"counter", "gauge", "histogram",
							       "summary", "untyped"};
					bool ok = false;
					for (size_t i = 0; i < 5; i++)
						ok |= strlen(types[i]) == tl &&
						      !memcmp(q, types[i], tl);
					if (!ok)
						err = "unknown TYPE";
				} else {
					for (; q < eol; q++)
						if (*q == '\\' && (q + 1 >= eol ||
								   (q[1] != '\\' && q[1] != 'n'))) {
							err = "bad escape in HELP";
							break;
						}
				}
			}
			p = eol + 1;
			continue;
		}
		const char *name = q;
		if (!fz_prom_name_char(*q, true, false)) {
			err = "bad metric name";
			break;
		}
		while (q < eol && fz_prom_name_char(*q, false, false))
			q++;
		if (q < eol && *q == '{') {
			q++;
			while (q < eol && *q != '}') {
				if (!fz_prom_name_char(*q, true, true)) {
					err = "bad label name";
					break;
				}
				while (q < eol && fz_prom_name_char(*q, false, true))
					q++;
				if (eol - q < 2 || q[0] != '=' || q[1] != '"') {
					err = "label without =\"";
					break;
				}
				q += 2;
				while (q < eol && *q != '"') {
					if (*q == '\\') {
						if (q + 1 >= eol ||
						    (q[1] != '\\' && q[1] != '"' && q[1] != 'n')) {
							err = "bad escape in a label value";
							break;
						}
						q += 2;
					} else {
						q++;
					}
				}
				if (err)
					break;
				if (q >= eol) {
					err = "unterminated label value";
					break;
				}
				q++;
				if (q < eol && *q == ',')
					q++;
				else if (q >= eol || *q != '}') {
					err = "',' or '}' expected after a label";
					break;
				}
			}
			if (err)
				break;
			if (q >= eol) {
				err = "unterminated labels";
				break;
			}
			q++;
		}
		/* the series must be new */
		size_t slen = (size_t)(q - name);
		for (size_t i = 0; i < nseen && !err; i++)
			if (strlen(seen[i]) == slen && !memcmp(seen[i], name, slen))
				err = "duplicate series";
		if (err)
			break;
		if (nseen == capseen) {
			capseen = capseen ? capseen * 2 : 64;
			seen = realloc(seen, capseen * sizeof(*seen));
			if (!seen)
				abort();
		}
		seen[nseen] = strndup(name, slen);
		if (!seen[nseen++])
			abort();
		if (q >= eol || *q != ' ') {
			err = "no value after the series";
			break;
		}
		q++;
		const char *sp = memchr(q, ' ', (size_t)(eol - q));
		if (!fz_prom_value(q, (size_t)((sp ? sp : eol) - q)))
			err = "bad sample value";
		p = eol + 1;
	}
	for (size_t i = 0; i < nseen; i++)
		free(seen[i]);
	free(seen);
	return err;
}

/* Decode a Prometheus label value body (between the quotes) into out. */
static inline size_t fz_prom_unescape(const char *s, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\' && i + 1 < n) {
			i++;
			out[o++] = s[i] == 'n' ? '\n' : s[i];
		} else {
			out[o++] = s[i];
		}
	}
	return o;
}

#define FZ_FAIL(...)                          \
	do {                                  \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr);          \
		abort();                      \
	} while (0)

#endif
