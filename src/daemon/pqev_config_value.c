/*
 * Value side of the config engine: parsing text into typed fields, and the
 * per-type operations the loader needs (free, reset, compare, copy, format),
 * plus pqev_conf_write. Kept apart from the loader (pqev_config.c) so each stays
 * small; pqev_config_int.h is the internal interface between the two.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>

#include <pgqd-ev/pqev_config.h>
#include <pgqd-ev/pqev_log.h>

#include "pqev_config_int.h"

const PqevConfEnumItem pqev_conf_syslog_facilities[] = {
	{"auth", LOG_AUTH},
	{"authpriv", LOG_AUTHPRIV},
	{"daemon", LOG_DAEMON},
	{"user", LOG_USER},
	{"local0", LOG_LOCAL0},
	{"local1", LOG_LOCAL1},
	{"local2", LOG_LOCAL2},
	{"local3", LOG_LOCAL3},
	{"local4", LOG_LOCAL4},
	{"local5", LOG_LOCAL5},
	{"local6", LOG_LOCAL6},
	{"local7", LOG_LOCAL7},
	{NULL, 0},
};

/* Quote a value for a message: control characters become '?', long ones cut. */
const char *pqev_conf_quote(char *buf, size_t size, const char *v, const PqevConfKey *k)
{
	size_t i, o = 0;
	if (k && (k->flags & PQEV_CF_SECRET))
		return "(hidden)";
	buf[o++] = '"';
	for (i = 0; v[i] && o + 5 < size && i < PQEV_CONF_MAX_QUOTED; i++)
		buf[o++] = iscntrl((unsigned char)v[i]) ? '?' : v[i];
	if (v[i]) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

/* ---- value parsing ---- */

int pqev_conf_parse_seconds(const char *s, usec_t *out)
{
	char *end;
	double v;

	/* what pgqd accepts (strtod): 60, 0.5, .5, 1e3, 0x10, inf; not " 1" or "1s" */
	if (*s == '\0' || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (*end != '\0' || isnan(v))
		return -EINVAL;
	if (v < 0 || (v == 0 && signbit(v) && errno == ERANGE))
		return -EDOM;
	if (errno == ERANGE && v != 0) {
		*out = PQEV_CONF_MAX_USEC;
		return -ERANGE;
	}
	if (v * 1e6 >= (double)PQEV_CONF_MAX_USEC) {
		*out = PQEV_CONF_MAX_USEC;
		return -ERANGE;
	}
	*out = (usec_t)llround(v * 1e6);
	return 0;
}

/* A range bound as people write it: 3600, 0.01, 31536000 (not 3.1536e+07). */
static const char *fmt_secs(char *buf, size_t size, double v)
{
	snprintf(buf, size, "%.6f", v);
	{
		char *e = buf + strlen(buf);
		while (e > buf && e[-1] == '0')
			*--e = '\0';
		if (e > buf && e[-1] == '.')
			*--e = '\0';
	}
	return buf;
}

int pqev_conf_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"1", "true", "yes", "on"};
	static const char *const no[] = {"0", "false", "no", "off"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

static int parse_int(const char *s, int *out)
{
	char *end;
	long v;
	if (*s == '\0' || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (*end != '\0')
		return -EINVAL;
	if (errno == ERANGE || v < INT_MIN || v > INT_MAX)
		return -ERANGE;
	*out = (int)v;
	return 0;
}

static char *path_base;

int pqev_conf_set_path_base(const char *dir)
{
	char *copy = dir ? strdup(dir) : NULL;

	if (dir && !copy)
		return -ENOMEM;
	free(path_base);
	path_base = copy;
	return 0;
}

/* A relative path joined to path_base (malloc'd); takes ownership of `p`. */
static char *rebase(char *p)
{
	char *abs;

	if (!p || p[0] == '/' || p[0] == '\0' || !path_base)
		return p;
	abs = malloc(strlen(path_base) + strlen(p) + 2);
	if (abs)
		sprintf(abs, "%s/%s", path_base, p);
	else
		errno = ENOMEM;
	free(p);
	return abs;
}

char *pqev_conf_expand_path(const char *s)
{
	const char *rest, *home = NULL;
	struct passwd pw, *res = NULL;
	char pwbuf[4096], user[256], *out;
	size_t ulen;

	if (s[0] != '~')
		return strdup(s);
	rest = strchr(s, '/');
	if (!rest)
		rest = s + strlen(s);
	ulen = (size_t)(rest - s - 1);
	if (ulen == 0) {
		home = getenv("HOME");
		if (!home || !*home) {
			if (getpwuid_r(getuid(), &pw, pwbuf, sizeof(pwbuf), &res) != 0 || !res) {
				errno = ENOENT;
				return NULL;
			}
			home = res->pw_dir;
		}
	} else {
		if (ulen >= sizeof(user)) {
			errno = ENAMETOOLONG;
			return NULL;
		}
		memcpy(user, s + 1, ulen);
		user[ulen] = '\0';
		if (getpwnam_r(user, &pw, pwbuf, sizeof(pwbuf), &res) != 0 || !res) {
			errno = ENOENT;
			return NULL;
		}
		home = res->pw_dir;
	}
	out = malloc(strlen(home) + strlen(rest) + 1);
	if (!out)
		return NULL;
	strcpy(out, home);
	strcat(out, rest);
	return out;
}

static void list_clear(PqevConfList *l)
{
	for (size_t i = 0; i < l->count; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

/* Split on commas, trim, drop empty items. */
static int list_parse(const char *s, PqevConfList *out)
{
	PqevConfList l = {NULL, 0};
	size_t cap = 0;
	const char *p = s;

	while (*p) {
		const char *a = p, *b;
		while (*p && *p != ',')
			p++;
		b = p;
		if (*p == ',')
			p++;
		while (a < b && isspace((unsigned char)*a))
			a++;
		while (b > a && isspace((unsigned char)b[-1]))
			b--;
		if (a == b)
			continue;
		if (l.count == cap) {
			size_t ncap = cap ? cap * 2 : 4;
			char **n = realloc(l.items, ncap * sizeof(*n));
			if (!n)
				goto fail;
			l.items = n;
			cap = ncap;
		}
		l.items[l.count] = strndup(a, (size_t)(b - a));
		if (!l.items[l.count])
			goto fail;
		l.count++;
	}
	*out = l;
	return 0;
fail:
	list_clear(&l);
	return -ENOMEM;
}

/* ---- field operations by type ---- */

void *pqev_conf_field_at(void *data, const PqevConfKey *k)
{
	return (char *)data + k->offset;
}

void pqev_conf_field_free(void *data, const PqevConfKey *k)
{
	void *f = pqev_conf_field_at(data, k);
	switch (k->type) {
	case PQEV_CT_STRING:
	case PQEV_CT_PATH:
		free(*(char **)f);
		*(char **)f = NULL;
		break;
	case PQEV_CT_LIST:
		list_clear(f);
		break;
	default:
		break;
	}
}

void pqev_conf_field_unset(void *data, const PqevConfKey *k)
{
	void *f = pqev_conf_field_at(data, k);
	pqev_conf_field_free(data, k);
	switch (k->type) {
	case PQEV_CT_INT:
	case PQEV_CT_ENUM:
		*(int *)f = 0;
		break;
	case PQEV_CT_SECONDS:
		*(usec_t *)f = PQEV_CONF_UNSET_USEC;
		break;
	case PQEV_CT_BOOL:
		*(bool *)f = false;
		break;
	default:
		break;
	}
}

bool pqev_conf_str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

bool pqev_conf_field_equal(const void *a, const void *b, const PqevConfKey *k)
{
	const void *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
	switch (k->type) {
	case PQEV_CT_STRING:
	case PQEV_CT_PATH:
		return pqev_conf_str_eq(*(char *const *)fa, *(char *const *)fb);
	case PQEV_CT_INT:
	case PQEV_CT_ENUM:
		return *(const int *)fa == *(const int *)fb;
	case PQEV_CT_SECONDS:
		return *(const usec_t *)fa == *(const usec_t *)fb;
	case PQEV_CT_BOOL:
		return *(const bool *)fa == *(const bool *)fb;
	case PQEV_CT_LIST: {
		const PqevConfList *la = fa, *lb = fb;
		if (la->count != lb->count)
			return false;
		for (size_t i = 0; i < la->count; i++)
			if (strcmp(la->items[i], lb->items[i]) != 0)
				return false;
		return true;
	}
	}
	return false;
}

/* Replace dst's field with a deep copy of src's. */
int pqev_conf_field_copy(void *dst, const void *src, const PqevConfKey *k)
{
	void *fd = pqev_conf_field_at(dst, k);
	const void *fs = (const char *)src + k->offset;
	switch (k->type) {
	case PQEV_CT_STRING:
	case PQEV_CT_PATH: {
		const char *s = *(char *const *)fs;
		char *c = s ? strdup(s) : NULL;
		if (s && !c)
			return -ENOMEM;
		pqev_conf_field_free(dst, k);
		*(char **)fd = c;
		return 0;
	}
	case PQEV_CT_LIST: {
		const PqevConfList *ls = fs;
		PqevConfList l = {NULL, 0};
		if (ls->count) {
			l.items = calloc(ls->count, sizeof(char *));
			if (!l.items)
				return -ENOMEM;
			for (; l.count < ls->count; l.count++) {
				l.items[l.count] = strdup(ls->items[l.count]);
				if (!l.items[l.count]) {
					list_clear(&l);
					return -ENOMEM;
				}
			}
		}
		pqev_conf_field_free(dst, k);
		*(PqevConfList *)fd = l;
		return 0;
	}
	case PQEV_CT_INT:
	case PQEV_CT_ENUM:
		*(int *)fd = *(const int *)fs;
		return 0;
	case PQEV_CT_SECONDS:
		*(usec_t *)fd = *(const usec_t *)fs;
		return 0;
	case PQEV_CT_BOOL:
		*(bool *)fd = *(const bool *)fs;
		return 0;
	}
	return 0;
}

/* Render a value for a message (NO_RELOAD warnings). */
void pqev_conf_field_format(char *buf, size_t size, const void *data, const PqevConfKey *k)
{
	const void *f = (const char *)data + k->offset;
	char tmp[128];
	switch (k->type) {
	case PQEV_CT_STRING:
	case PQEV_CT_PATH: {
		const char *s = *(char *const *)f;
		snprintf(buf, size, "%s", s ? pqev_conf_quote(tmp, sizeof(tmp), s, k) : "(unset)");
		break;
	}
	case PQEV_CT_INT:
		snprintf(buf, size, "%d", *(const int *)f);
		break;
	case PQEV_CT_ENUM: {
		const char *name = "?";
		for (const PqevConfEnumItem *e = k->map; e && e->name; e++)
			if (e->value == *(const int *)f) {
				name = e->name;
				break;
			}
		snprintf(buf, size, "%s", name);
		break;
	}
	case PQEV_CT_SECONDS: {
		usec_t u = *(const usec_t *)f;
		if (u == PQEV_CONF_UNSET_USEC)
			snprintf(buf, size, "(unset)");
		else
			snprintf(buf, size, "%llu.%06llu", (unsigned long long)(u / USEC_PER_SEC),
				 (unsigned long long)(u % USEC_PER_SEC));
		break;
	}
	case PQEV_CT_BOOL:
		snprintf(buf, size, "%s", *(const bool *)f ? "on" : "off");
		break;
	case PQEV_CT_LIST: {
		const PqevConfList *l = f;
		size_t o = 0;
		buf[0] = '\0';
		for (size_t i = 0; i < l->count && o < size; i++)
			o += (size_t)snprintf(buf + o, size - o, "%s%s", i ? "," : "", l->items[i]);
		break;
	}
	}
}

/*
 * Convert `value` into the key's field. Returns 0, -ENOMEM, or -EINVAL with the
 * cause in err.
 */
int pqev_conf_field_set(void *data, const PqevConfKey *k, const char *value, char *err,
			size_t errlen)
{
	void *f = pqev_conf_field_at(data, k);
	int r;

	switch (k->type) {
	case PQEV_CT_STRING: {
		char *c = strdup(value);
		if (!c)
			return -ENOMEM;
		pqev_conf_field_free(data, k);
		*(char **)f = c;
		return 0;
	}
	case PQEV_CT_PATH: {
		char *c = rebase(pqev_conf_expand_path(value));
		if (!c) {
			if (errno == ENOMEM)
				return -ENOMEM;
			snprintf(err, errlen, "cannot expand '~': %s",
				 errno == ENOENT ? "no such user or home directory"
						 : strerror(errno));
			return -EINVAL;
		}
		pqev_conf_field_free(data, k);
		*(char **)f = c;
		return 0;
	}
	case PQEV_CT_INT: {
		int v;
		r = parse_int(value, &v);
		if (r == -EINVAL) {
			snprintf(err, errlen, "expected a whole number");
			return r;
		}
		if (r == -ERANGE) {
			snprintf(err, errlen, "too large");
			return -EINVAL;
		}
		if ((k->min != 0 || k->max != 0) && (double)v < k->min) {
			snprintf(err, errlen, "must be at least %.0f", k->min);
			return -EINVAL;
		}
		if ((k->min != 0 || k->max != 0) && (double)v > k->max) {
			snprintf(err, errlen, "must be at most %.0f", k->max);
			return -EINVAL;
		}
		*(int *)f = v;
		return 0;
	}
	case PQEV_CT_SECONDS: {
		usec_t u = 0;
		double lo = k->min, hi = k->max;
		bool ranged = lo != 0 || hi != 0, clamp = (k->flags & PQEV_CF_CLAMP) != 0;
		char b1[32], b2[32];
		int ret = 0;

		r = pqev_conf_parse_seconds(value, &u);
		if (r == -EINVAL) {
			snprintf(err, errlen, "expected a number of seconds, like 0.5, 60 or 1e3");
			return r;
		}
		if (r == -EDOM) {
			snprintf(err, errlen, "must be at least %s seconds",
				 fmt_secs(b1, sizeof(b1), lo));
			return -EINVAL;
		}
		if (ranged && (double)u < lo * 1e6 - 0.5) {
			if (!clamp) {
				snprintf(err, errlen, "must be at least %s seconds",
					 fmt_secs(b1, sizeof(b1), lo));
				return -EINVAL;
			}
			snprintf(err, errlen, "below the least useful value; using %s seconds",
				 fmt_secs(b1, sizeof(b1), lo));
			u = (usec_t)llround(lo * 1e6);
			ret = 1;
		} else if ((ranged && (double)u > hi * 1e6 + 0.5) || r == -ERANGE) {
			if (!clamp || !ranged) {
				if (ranged)
					snprintf(err, errlen,
						 "must be at most %s seconds (%s to %s)",
						 fmt_secs(b2, sizeof(b2), hi),
						 fmt_secs(b1, sizeof(b1), lo),
						 fmt_secs(b2, sizeof(b2), hi));
				else
					snprintf(err, errlen, "too large");
				return -EINVAL;
			}
			snprintf(err, errlen, "above the largest useful value; using %s seconds",
				 fmt_secs(b2, sizeof(b2), hi));
			u = (usec_t)llround(hi * 1e6);
			ret = 1;
		}
		*(usec_t *)f = u;
		return ret;
	}
	case PQEV_CT_BOOL:
		if (pqev_conf_parse_bool(value, f) < 0) {
			snprintf(err, errlen,
				 "expected a boolean (1/0, true/false, yes/no, on/off)");
			return -EINVAL;
		}
		return 0;
	case PQEV_CT_ENUM: {
		size_t o;
		for (const PqevConfEnumItem *e = k->map; e && e->name; e++)
			if (strcasecmp(e->name, value) == 0) {
				*(int *)f = e->value;
				return 0;
			}
		o = (size_t)snprintf(err, errlen, "expected one of:");
		for (const PqevConfEnumItem *e = k->map; e && e->name && o < errlen; e++)
			o += (size_t)snprintf(err + o, errlen - o, "%s %s", e == k->map ? "" : ",",
					      e->name);
		return -EINVAL;
	}
	case PQEV_CT_LIST: {
		PqevConfList l;
		if (list_parse(value, &l) < 0)
			return -ENOMEM;
		pqev_conf_field_free(data, k);
		*(PqevConfList *)f = l;
		return 0;
	}
	}
	snprintf(err, errlen, "bad key type in schema");
	return -EINVAL;
}

/* ---- display ---- */

static void write_section(const PqevConfSection *sec, const void *data, const char *label,
			  FILE *out)
{
	fprintf(out, "[%s]\n", label);
	for (const PqevConfKey *k = sec->keys; k && k->key; k++) {
		const void *f = (const char *)data + k->offset;
		char buf[1024];
		if ((k->type == PQEV_CT_STRING || k->type == PQEV_CT_PATH) && !*(char *const *)f) {
			fprintf(out, "; %s is unset\n", k->key);
		} else if (k->type == PQEV_CT_SECONDS &&
			   *(const usec_t *)f == PQEV_CONF_UNSET_USEC) {
			fprintf(out, "; %s is unset\n", k->key);
		} else if ((k->flags & PQEV_CF_SECRET) &&
			   !((k->type == PQEV_CT_STRING || k->type == PQEV_CT_PATH) &&
			     !**(char *const *)f)) {
			/* an empty secret hides nothing: it prints as empty below */
			fprintf(out, "%s = (hidden)\n", k->key);
		} else if (k->type == PQEV_CT_STRING || k->type == PQEV_CT_PATH) {
			char *clean = pqev_log_scrub_dup(*(char *const *)f);
			fprintf(out, "%s = %s\n", k->key, clean ? clean : "(out of memory)");
			free(clean);
		} else {
			pqev_conf_field_format(buf, sizeof(buf), data, k);
			if (k->type == PQEV_CT_SECONDS) {
				/* "1.500000" -> "1.5", "60.000000" -> "60" */
				char *e = buf + strlen(buf);
				while (e > buf && e[-1] == '0')
					*--e = '\0';
				if (e > buf && e[-1] == '.')
					*--e = '\0';
			}
			fprintf(out, "%s = %s\n", k->key, buf);
		}
	}
}

int pqev_conf_write(const PqevConfSchema *schema, const void *cfg, FILE *out)
{
	for (const PqevConfSection *sec = schema->sections; sec->name; sec++) {
		if (sec->flags & PQEV_CS_REPEATED) {
			const PqevConfArray *arr =
				(const PqevConfArray *)((const char *)cfg + sec->offset);
			for (size_t i = 0; i < arr->count; i++) {
				const char *e = (const char *)arr->items + i * sec->elem_size;
				char label[256];
				snprintf(label, sizeof(label), "%s %s", sec->name,
					 *(char *const *)(e + sec->name_offset));
				fputc('\n', out);
				write_section(sec, e, label, out);
			}
		} else {
			if (sec != schema->sections)
				fputc('\n', out);
			write_section(sec, (const char *)cfg + sec->offset, sec->name, out);
		}
	}
	return ferror(out) ? -EIO : 0;
}
