/*
 * Declarative configuration engine (see pqev_config.h): our own reader of the
 * ini grammar pgqd 3.5 reads, with no line-length limit, every error reported
 * with its file and line, and %include.
 *
 * Loading is two-phase: parsing only records (section instance, key, raw value,
 * line) assignments; then a fresh zeroed struct gets defaults, the assignments
 * converted in file order, required keys, validators, and the NO_RELOAD rule.
 * Any error frees the fresh struct; the caller's running config is never touched.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pgqd-ev/pqev_config.h>
#include <pgqd-ev/pqev_log.h>

#include "pqev_config_int.h"

/* Config files are small; a bigger one is a mistake (a log file given as config). */
#define MAX_FILE_SIZE (4 * 1024 * 1024)
/* %include nesting limit (as pgqd's), and files per load (so a file including
 * another many times cannot blow up). */
#define MAX_INCLUDE_DEPTH 10
#define MAX_INCLUDES      256

/* A file or string being read; the top one is the loaded file itself. */
typedef struct Source {
	int name_idx; /* into Loader.names */
	char *buf;    /* owned file content, NULL for the caller's string */
	const char *pos, *end;
	int lineno; /* last line read, 1-based */
	dev_t dev;  /* identity, to refuse include cycles */
	ino_t ino;
} Source;

/*
 * Lines are numbered globally across included files ("line" everywhere below);
 * a segment maps the global lines from gstart on to a file and its own numbering,
 * until the next segment.
 */
typedef struct Segment {
	int gstart;
	int name_idx;
	int lstart;
} Segment;

/* One section as it appears in the file (single sections appear once even if
 * their header is repeated). */
typedef struct Inst {
	const PqevConfSection *sec;
	char *name;    /* NAME of a repeated section, else NULL */
	char *label;   /* for messages: "pgqd", "cluster east" */
	int line;      /* header line, 0 if the section is absent from the file */
	void *data;    /* the section struct inside the fresh config */
	int *key_line; /* per key index: line of the last assignment, 0 if none */
} Inst;

typedef struct Assign {
	Inst *inst;
	int key_idx;
	int line;
	char *value;
} Assign;

typedef struct Loader {
	const PqevConfSchema *schema;
	PqevConfReportFn report;
	void *arg;
	int errors;
	bool oom;

	/* reader */
	Source src[MAX_INCLUDE_DEPTH + 1];
	int depth;
	char **names; /* every file read, [0] the loaded one */
	int nincludes;
	size_t nnames;
	Segment *segs;
	size_t nsegs, capsegs;
	int lineno; /* global line number of the current line */
	char *line; /* the current line, NUL-terminated */
	size_t linecap;
	bool in_section; /* some header was seen */
	bool cur_bad;    /* current section unknown or malformed: keys are skipped */
	Inst *cur;

	Inst **insts;
	size_t ninsts, capinsts;
	Assign *assigns;
	size_t nassigns, capassigns;
} Loader;

struct PqevConfCheck {
	Loader *L;
	Inst *inst;
};

/* ---- diagnostics ---- */

static void diag(Loader *L, PqevConfSeverity sev, int line, const char *section, const char *key,
		 const char *fmt, ...) PQEV_PRINTF(6, 7);

static void vdiag(Loader *L, PqevConfSeverity sev, int line, const char *section, const char *key,
		  const char *fmt, va_list ap) PQEV_PRINTF(6, 0);

static void vdiag(Loader *L, PqevConfSeverity sev, int line, const char *section, const char *key,
		  const char *fmt, va_list ap)
{
	char cause[512], msg[1024], where[64] = "";
	const char *file;
	PqevConfDiag d;
	int n;

	if (sev == PQEV_CONF_ERROR)
		L->errors++;
	if (!L->report)
		return;
	vsnprintf(cause, sizeof(cause), fmt, ap);
	file = L->nnames ? L->names[0] : "?";
	if (line > 0) {
		size_t i = L->nsegs;
		while (i > 0 && L->segs[i - 1].gstart > line)
			i--;
		if (i > 0) {
			file = L->names[L->segs[i - 1].name_idx];
			line = L->segs[i - 1].lstart + (line - L->segs[i - 1].gstart);
		}
		snprintf(where, sizeof(where), ":%d", line);
	}
	n = snprintf(msg, sizeof(msg), "%s%s:", file, where);
	if (section && n >= 0 && (size_t)n < sizeof(msg))
		n += snprintf(msg + n, sizeof(msg) - n, " [%s]", section);
	if (key && n >= 0 && (size_t)n < sizeof(msg))
		n += snprintf(msg + n, sizeof(msg) - n, " %s:", key);
	if (n >= 0 && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - n, " %s", cause);
	d.severity = sev;
	d.file = file;
	d.line = line;
	d.section = section;
	d.key = key;
	d.cause = cause;
	d.message = msg;
	L->report(&d, L->arg);
}

static void diag(Loader *L, PqevConfSeverity sev, int line, const char *section, const char *key,
		 const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vdiag(L, sev, line, section, key, fmt, ap);
	va_end(ap);
}

static void oom(Loader *L)
{
	if (!L->oom)
		diag(L, PQEV_CONF_ERROR, 0, NULL, NULL, "out of memory");
	L->oom = true;
}

/* ---- section instances ---- */

static size_t nkeys(const PqevConfSection *sec)
{
	size_t n = 0;
	while (sec->keys && sec->keys[n].key)
		n++;
	return n;
}

static Inst *inst_new(Loader *L, const PqevConfSection *sec, const char *name, const char *label,
		      int line)
{
	Inst *in;
	if (L->ninsts == L->capinsts) {
		size_t ncap = L->capinsts ? L->capinsts * 2 : 8;
		Inst **n = realloc(L->insts, ncap * sizeof(*n));
		if (!n)
			goto fail;
		L->insts = n;
		L->capinsts = ncap;
	}
	in = calloc(1, sizeof(*in));
	if (!in)
		goto fail;
	in->sec = sec;
	in->line = line;
	in->name = name ? strdup(name) : NULL;
	in->label = strdup(label);
	in->key_line = calloc(nkeys(sec) + 1, sizeof(int));
	if ((name && !in->name) || !in->label || !in->key_line) {
		free(in->name);
		free(in->label);
		free(in->key_line);
		free(in);
		goto fail;
	}
	L->insts[L->ninsts++] = in;
	return in;
fail:
	oom(L);
	return NULL;
}

static Inst *inst_find(Loader *L, const PqevConfSection *sec, const char *name)
{
	for (size_t i = 0; i < L->ninsts; i++) {
		Inst *in = L->insts[i];
		if (in->sec == sec && pqev_conf_str_eq(in->name, name))
			return in;
	}
	return NULL;
}

/* Match "[prefix NAME]" or "[prefix:NAME]"; returns NAME's start or NULL. */
static const char *match_repeated(const char *hdr, const char *prefix)
{
	size_t n = strlen(prefix);
	if (strncmp(hdr, prefix, n) != 0)
		return NULL;
	if (hdr[n] == ':')
		n++;
	else if (hdr[n] == ' ' || hdr[n] == '\t')
		n++;
	else if (hdr[n] != '\0')
		return NULL;
	while (hdr[n] == ' ' || hdr[n] == '\t')
		n++;
	return hdr + n;
}

static void open_section(Loader *L, char *hdr, int line)
{
	const PqevConfSection *sec;

	L->in_section = true;
	L->cur = NULL;
	L->cur_bad = true;
	for (sec = L->schema->sections; sec->name; sec++) {
		if (sec->flags & PQEV_CS_REPEATED) {
			const char *name = match_repeated(hdr, sec->name);
			Inst *prev;
			if (!name)
				continue;
			if (*name == '\0') {
				diag(L, PQEV_CONF_ERROR, line, hdr, NULL,
				     "section needs a name: [%s NAME] or [%s:NAME]", sec->name,
				     sec->name);
				return;
			}
			for (const char *c = name; *c; c++)
				if (iscntrl((unsigned char)*c)) {
					diag(L, PQEV_CONF_ERROR, line, NULL, NULL,
					     "control character in section name");
					return;
				}
			/* names become metric labels and JSON strings */
			if (!pqev_utf8_valid(name)) {
				diag(L, PQEV_CONF_ERROR, line, NULL, NULL,
				     "section name is not valid UTF-8");
				return;
			}
			prev = inst_find(L, sec, name);
			if (prev) {
				diag(L, PQEV_CONF_ERROR, line, hdr, NULL,
				     "duplicate section, first defined at line %d", prev->line);
				return;
			}
			L->cur = inst_new(L, sec, name, hdr, line);
			L->cur_bad = L->cur == NULL;
			return;
		}
		if (strcmp(hdr, sec->name) == 0) {
			L->cur = inst_find(L, sec, NULL);
			if (!L->cur)
				L->cur = inst_new(L, sec, NULL, hdr, line);
			L->cur_bad = L->cur == NULL;
			return;
		}
	}
	diag(L, PQEV_CONF_ERROR, line, hdr, NULL, "unknown section");
}

/* ---- reading the file ---- */

static void include_file(Loader *L, const char *arg);

/* Record that global lines from the next one on come from source `S`. */
static void add_segment(Loader *L, const Source *S)
{
	if (L->nsegs == L->capsegs) {
		size_t ncap = L->capsegs ? L->capsegs * 2 : 8;
		Segment *n = realloc(L->segs, ncap * sizeof(*n));
		if (!n) {
			oom(L);
			return;
		}
		L->segs = n;
		L->capsegs = ncap;
	}
	L->segs[L->nsegs].gstart = L->lineno + 1;
	L->segs[L->nsegs].name_idx = S->name_idx;
	L->segs[L->nsegs].lstart = S->lineno + 1;
	L->nsegs++;
}

static int add_name(Loader *L, const char *name)
{
	char **n = realloc(L->names, (L->nnames + 1) * sizeof(*n));
	if (!n)
		return -1;
	L->names = n;
	n[L->nnames] = strdup(name);
	if (!n[L->nnames])
		return -1;
	return (int)L->nnames++;
}

/*
 * Read a whole file (up to MAX_FILE_SIZE). The loaded file may be a pipe
 * (`--check <(...)`); an included one must be a regular file, so a stray
 * `%include /dev/stdin` cannot block the loader.
 */
static int read_file(const char *path, bool regular_only, char **out, size_t *outlen,
		     struct stat *id)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0, cap = 0;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC | (regular_only ? O_NONBLOCK : 0));
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		ret = -EISDIR;
		goto fail;
	}
	if (regular_only && !S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		goto fail;
	}
	for (;;) {
		ssize_t n;
		if (got == cap) {
			char *nb;
			if (cap > MAX_FILE_SIZE) {
				ret = -EFBIG;
				goto fail;
			}
			cap = cap ? cap * 2 : (S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 4096);
			nb = realloc(buf, cap);
			if (!nb) {
				ret = -ENOMEM;
				goto fail;
			}
			buf = nb;
		}
		n = read(fd, buf + got, cap - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto fail;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got > MAX_FILE_SIZE) {
		ret = -EFBIG;
		goto fail;
	}
	close(fd);
	*out = buf;
	*outlen = got;
	*id = st;
	return 0;
fail:
	close(fd);
	free(buf);
	return ret;
}

static const char *read_error(int err)
{
	if (err == -EFBIG)
		return "larger than 4 MB";
	if (err == -EINVAL)
		return "not a regular file";
	return strerror(-err);
}

/*
 * `%include PATH`: push the file as the source of the next lines. A relative
 * PATH is taken from the including file's directory (pgqd took it from the
 * current directory, which under a service manager is "/").
 */
static void include_file(Loader *L, const char *arg)
{
	const char *cur = L->names[L->src[L->depth].name_idx], *slash;
	char *path = NULL, *expanded, *buf = NULL;
	struct stat st = {0};
	size_t len = 0;
	Source *S;
	int r, idx;

	while (*arg && isspace((unsigned char)*arg))
		arg++;
	if (*arg == '\0') {
		diag(L, PQEV_CONF_ERROR, L->lineno, NULL, NULL, "%%include needs a file name");
		return;
	}
	if (L->depth >= MAX_INCLUDE_DEPTH) {
		diag(L, PQEV_CONF_ERROR, L->lineno, NULL, NULL,
		     "%%include nested more than %d deep", MAX_INCLUDE_DEPTH);
		return;
	}
	expanded = pqev_conf_expand_path(arg);
	if (!expanded) {
		diag(L, PQEV_CONF_ERROR, L->lineno, NULL, NULL, "%%include %s: cannot expand '~'",
		     arg);
		return;
	}
	slash = strrchr(cur, '/');
	if (expanded[0] != '/' && slash) {
		path = malloc((size_t)(slash - cur) + 2 + strlen(expanded));
		if (path)
			sprintf(path, "%.*s/%s", (int)(slash - cur), cur, expanded);
		free(expanded);
	} else {
		path = expanded;
	}
	if (!path) {
		oom(L);
		return;
	}
	if (++L->nincludes > MAX_INCLUDES) {
		diag(L, PQEV_CONF_ERROR, L->lineno, NULL, NULL,
		     "%%include %s: more than %d included files", path, MAX_INCLUDES);
		free(path);
		return;
	}
	r = read_file(path, true, &buf, &len, &st);
	if (r < 0) {
		diag(L, PQEV_CONF_ERROR, L->lineno, NULL, NULL, "%%include %s: %s", path,
		     read_error(r));
		free(path);
		return;
	}
	for (int i = 0; i <= L->depth; i++)
		if (L->src[i].dev == st.st_dev && L->src[i].ino == st.st_ino) {
			diag(L, PQEV_CONF_ERROR, L->lineno, NULL, NULL,
			     "%%include %s: includes itself (through %s)", path,
			     L->names[L->src[i].name_idx]);
			free(path);
			free(buf);
			return;
		}
	idx = add_name(L, path);
	free(path);
	if (idx < 0) {
		free(buf);
		oom(L);
		return;
	}
	S = &L->src[++L->depth];
	S->name_idx = idx;
	S->buf = buf;
	S->pos = buf;
	S->end = buf + len;
	S->lineno = 0;
	S->dev = st.st_dev;
	S->ino = st.st_ino;
	add_segment(L, S);
}

static char *trim(char *s)
{
	char *e;
	while (*s && isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	*e = '\0';
	return s;
}

/*
 * The next physical line into L->line (grown as needed: there is no length
 * limit), popping finished included files; NULL at the end of the loaded file.
 * A CR before the LF and a BOM at the start of any file are dropped.
 */
static char *next_line(Loader *L)
{
	Source *S = &L->src[L->depth];
	const char *p, *eol;
	size_t len;

	while (S->pos >= S->end) {
		if (L->depth == 0)
			return NULL;
		free(S->buf);
		S->buf = NULL;
		S = &L->src[--L->depth];
		add_segment(L, S);
	}
	p = S->pos;
	eol = memchr(p, '\n', (size_t)(S->end - p));
	if (!eol)
		eol = S->end;
	S->pos = eol < S->end ? eol + 1 : eol;
	S->lineno++;
	L->lineno++;
	len = (size_t)(eol - p);
	if (len > 0 && p[len - 1] == '\r')
		len--;
	if (S->lineno == 1 && len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
		p += 3;
		len -= 3;
	}
	if (len + 1 > L->linecap) {
		size_t ncap = len + 1 > 2 * L->linecap ? len + 1 : 2 * L->linecap;
		char *n = realloc(L->line, ncap);
		if (!n) {
			oom(L);
			return NULL;
		}
		L->line = n;
		L->linecap = ncap;
	}
	memcpy(L->line, p, len);
	L->line[len] = '\0';
	if (memchr(p, '\0', len)) {
		diag(L, PQEV_CONF_ERROR, L->lineno, NULL, NULL, "line contains a NUL byte");
		L->line[0] = '\0';
	}
	return L->line;
}

static void parse_section(Loader *L, char *start)
{
	char *close = strchr(start + 1, ']'), *after;

	if (!close) {
		diag(L, PQEV_CONF_ERROR, L->lineno, NULL, NULL,
		     "section header without closing ']'");
		/* its keys are skipped, not given to the previous section */
		L->cur = NULL;
		L->cur_bad = true;
		L->in_section = true;
		return;
	}
	after = close + 1;
	while (*after && isspace((unsigned char)*after))
		after++;
	if (*after && *after != ';' && *after != '#')
		diag(L, PQEV_CONF_ERROR, L->lineno, NULL, NULL,
		     "unexpected text after the section header");
	*close = '\0';
	open_section(L, trim(start + 1), L->lineno);
}

/* "key = value" (or "key: value"): the value is the rest of the line, trimmed;
 * like pgqd, a ';' or '#' inside it is part of the value. */
static void parse_key(Loader *L, char *start)
{
	char *sep = start + strcspn(start, "=:"), *name, *value;
	const PqevConfKey *keys;
	int idx;
	Assign *a;

	if (*sep == '\0') {
		diag(L, PQEV_CONF_ERROR, L->lineno,
		     L->cur_bad ? NULL : (L->cur ? L->cur->label : NULL), NULL,
		     "syntax error: expected \"key = value\", a [section] or a comment");
		return;
	}
	*sep = '\0';
	name = trim(start);
	value = trim(sep + 1);
	if (name[0] == '\0') {
		diag(L, PQEV_CONF_ERROR, L->lineno, L->cur ? L->cur->label : NULL, NULL,
		     "missing key name before '='");
		return;
	}
	if (!L->in_section) {
		diag(L, PQEV_CONF_ERROR, L->lineno, NULL, name,
		     "key outside of any section; put it under a [section] header");
		return;
	}
	if (L->cur_bad || !L->cur)
		return;
	keys = L->cur->sec->keys;
	for (idx = 0; keys && keys[idx].key; idx++)
		if (strcmp(keys[idx].key, name) == 0)
			break;
	if (!keys || !keys[idx].key) {
		diag(L, PQEV_CONF_ERROR, L->lineno, L->cur->label, name, "unknown key");
		return;
	}
	if (L->cur->key_line[idx])
		diag(L, PQEV_CONF_WARNING, L->lineno, L->cur->label, name,
		     "set again (first at line %d); the last value is used", L->cur->key_line[idx]);
	L->cur->key_line[idx] = L->lineno;
	if (L->nassigns == L->capassigns) {
		size_t ncap = L->capassigns ? L->capassigns * 2 : 16;
		Assign *n = realloc(L->assigns, ncap * sizeof(*n));
		if (!n) {
			oom(L);
			return;
		}
		L->assigns = n;
		L->capassigns = ncap;
	}
	a = &L->assigns[L->nassigns];
	a->inst = L->cur;
	a->key_idx = idx;
	a->line = L->lineno;
	a->value = strdup(value);
	if (!a->value) {
		oom(L);
		return;
	}
	L->nassigns++;
}

/* Blank lines and lines starting with ';' or '#' are skipped; leading
 * whitespace never matters (an indented key is a key, as in pgqd). */
static void parse(Loader *L)
{
	char *line;

	while (!L->oom && (line = next_line(L)) != NULL) {
		char *start = trim(line);

		if (*start == '\0' || *start == ';' || *start == '#')
			continue;
		if (*start == '[')
			parse_section(L, start);
		else if (strncmp(start, "%include", 8) == 0 &&
			 (start[8] == '\0' || isspace((unsigned char)start[8])))
			include_file(L, start + 8);
		else
			parse_key(L, start);
	}
}

/* ---- building the fresh struct ---- */

static void set_value(Loader *L, Inst *in, int idx, const char *value, int line, bool is_default)
{
	const PqevConfKey *k = &in->sec->keys[idx];
	char err[256] = "", q[PQEV_CONF_QUOTE_SIZE];
	int r = pqev_conf_field_set(in->data, k, value, err, sizeof(err));
	if (r == -ENOMEM)
		oom(L);
	else if (r > 0)
		diag(L, PQEV_CONF_WARNING, line, in->label, k->key, "value %s: %s",
		     pqev_conf_quote(q, sizeof(q), value, k), err);
	else if (r < 0)
		diag(L, PQEV_CONF_ERROR, line, in->label, k->key, "invalid %svalue %s: %s",
		     is_default ? "default " : "", pqev_conf_quote(q, sizeof(q), value, k), err);
}

static void apply_defaults(Loader *L, Inst *in)
{
	for (int i = 0; in->sec->keys && in->sec->keys[i].key; i++) {
		const PqevConfKey *k = &in->sec->keys[i];
		pqev_conf_field_unset(in->data, k);
		if (k->def)
			set_value(L, in, i, k->def, 0, true);
	}
}

static void check_section(Loader *L, Inst *in)
{
	PqevConfCheck chk = {L, in};
	for (int i = 0; in->sec->keys && in->sec->keys[i].key; i++) {
		const PqevConfKey *k = &in->sec->keys[i];
		char err[256] = "";
		if ((k->flags & PQEV_CF_REQUIRED) && !in->key_line[i]) {
			diag(L, PQEV_CONF_ERROR, in->line, in->label, k->key,
			     "required key is missing");
			continue;
		}
		if (k->validate && !k->validate(pqev_conf_field_at(in->data, k), err, sizeof(err)))
			diag(L, PQEV_CONF_ERROR, in->key_line[i], in->label, k->key, "%s",
			     err[0] ? err : "invalid value");
	}
	if (in->sec->check)
		in->sec->check(in->data, in->name, &chk);
}

static const void *old_section(const PqevConfSchema *s, const void *old, const Inst *in)
{
	const PqevConfSection *sec = in->sec;
	const PqevConfArray *arr;
	if (!(sec->flags & PQEV_CS_REPEATED))
		return (const char *)old + sec->offset;
	arr = (const PqevConfArray *)((const char *)old + sec->offset);
	for (size_t i = 0; i < arr->count; i++) {
		const char *e = (const char *)arr->items + i * sec->elem_size;
		if (pqev_conf_str_eq(*(char *const *)(e + sec->name_offset), in->name))
			return e;
	}
	(void)s;
	return NULL;
}

static void keep_no_reload(Loader *L, const void *old, Inst *in)
{
	const void *od = old_section(L->schema, old, in);
	if (!od)
		return;
	for (int i = 0; in->sec->keys && in->sec->keys[i].key; i++) {
		const PqevConfKey *k = &in->sec->keys[i];
		char was[160], now[160];
		if (!(k->flags & PQEV_CF_NO_RELOAD) || pqev_conf_field_equal(od, in->data, k))
			continue;
		pqev_conf_field_format(was, sizeof(was), od, k);
		pqev_conf_field_format(now, sizeof(now), in->data, k);
		diag(L, PQEV_CONF_WARNING, in->key_line[i] ? in->key_line[i] : in->line, in->label,
		     k->key,
		     "changed from %s to %s, but cannot change without a restart; keeping %s", was,
		     now, was);
		if (pqev_conf_field_copy(in->data, od, k) < 0)
			oom(L);
	}
}

static void free_section_data(const PqevConfSection *sec, void *data)
{
	for (int i = 0; sec->keys && sec->keys[i].key; i++)
		pqev_conf_field_free(data, &sec->keys[i]);
}

void *pqev_conf_free(const PqevConfSchema *schema, void *cfg)
{
	if (!cfg)
		return NULL;
	for (const PqevConfSection *sec = schema->sections; sec->name; sec++) {
		if (sec->flags & PQEV_CS_REPEATED) {
			PqevConfArray *arr = (PqevConfArray *)((char *)cfg + sec->offset);
			for (size_t i = 0; i < arr->count; i++) {
				char *e = (char *)arr->items + i * sec->elem_size;
				free_section_data(sec, e);
				free(*(char **)(e + sec->name_offset));
			}
			free(arr->items);
			arr->items = NULL;
			arr->count = 0;
		} else {
			free_section_data(sec, (char *)cfg + sec->offset);
		}
	}
	free(cfg);
	return NULL;
}

static void *build(Loader *L, const void *old)
{
	const PqevConfSchema *s = L->schema;
	char *root = calloc(1, s->size ? s->size : 1);
	if (!root) {
		oom(L);
		return NULL;
	}
	/* section storage: single sections live in root; repeated get arrays */
	for (const PqevConfSection *sec = s->sections; sec->name; sec++) {
		if (sec->flags & PQEV_CS_REPEATED) {
			PqevConfArray *arr = (PqevConfArray *)(root + sec->offset);
			size_t n = 0, j = 0;
			for (size_t i = 0; i < L->ninsts; i++)
				n += L->insts[i]->sec == sec;
			if (n == 0)
				continue;
			arr->items = calloc(n, sec->elem_size);
			if (!arr->items) {
				oom(L);
				continue;
			}
			arr->count = n;
			for (size_t i = 0; i < L->ninsts; i++) {
				Inst *in = L->insts[i];
				char **np;
				if (in->sec != sec)
					continue;
				in->data = (char *)arr->items + j++ * sec->elem_size;
				np = (char **)((char *)in->data + sec->name_offset);
				*np = strdup(in->name);
				if (!*np)
					oom(L);
			}
		} else {
			Inst *in = inst_find(L, sec, NULL);
			if (!in) {
				if (sec->flags & PQEV_CS_REQUIRED)
					diag(L, PQEV_CONF_ERROR, 0, NULL, NULL,
					     "section [%s] is missing", sec->name);
				in = inst_new(L, sec, NULL, sec->name, 0);
				if (!in)
					continue;
			}
			in->data = root + sec->offset;
		}
	}
	if (L->oom)
		return root;
	for (size_t i = 0; i < L->ninsts; i++)
		apply_defaults(L, L->insts[i]);
	for (size_t i = 0; i < L->nassigns && !L->oom; i++) {
		Assign *a = &L->assigns[i];
		set_value(L, a->inst, a->key_idx, a->value, a->line, false);
	}
	if (L->errors)
		return root; /* validators would only repeat what is already wrong */
	for (size_t i = 0; i < L->ninsts; i++)
		check_section(L, L->insts[i]);
	if (s->check) {
		PqevConfCheck chk = {L, NULL};
		s->check(root, &chk);
	}
	if (old && !L->errors)
		for (size_t i = 0; i < L->ninsts; i++)
			keep_no_reload(L, old, L->insts[i]);
	return root;
}

static void loader_free(Loader *L)
{
	for (size_t i = 0; i < L->ninsts; i++) {
		free(L->insts[i]->name);
		free(L->insts[i]->label);
		free(L->insts[i]->key_line);
		free(L->insts[i]);
	}
	free(L->insts);
	for (size_t i = 0; i < L->nassigns; i++)
		free(L->assigns[i].value);
	free(L->assigns);
	for (int i = 0; i <= L->depth; i++)
		free(L->src[i].buf);
	for (size_t i = 0; i < L->nnames; i++)
		free(L->names[i]);
	free(L->names);
	free(L->segs);
	free(L->line);
}

/* Parse `text` (owned buffer `own`, or NULL for the caller's string) named `name`. */
static int load_text(const PqevConfSchema *schema, char *own, const char *text, size_t len,
		     const char *name, int read_err, const struct stat *id, const void *old,
		     void **out, PqevConfReportFn report, void *arg)
{
	Loader L = {0};
	void *cfg = NULL;
	int ret;

	*out = NULL;
	L.schema = schema;
	L.report = report;
	L.arg = arg;
	L.src[0].buf = own;
	if (id) {
		L.src[0].dev = id->st_dev;
		L.src[0].ino = id->st_ino;
	}
	if (add_name(&L, name) < 0) {
		loader_free(&L);
		return -ENOMEM;
	}
	if (read_err < 0) {
		diag(&L, PQEV_CONF_ERROR, 0, NULL, NULL, "cannot read the configuration file: %s",
		     read_error(read_err));
		loader_free(&L);
		return read_err;
	}
	L.src[0].pos = text;
	L.src[0].end = text + len;
	add_segment(&L, &L.src[0]);
	parse(&L);
	cfg = build(&L, old);
	ret = L.oom ? -ENOMEM : L.errors ? -EINVAL : 0;
	loader_free(&L);
	if (ret < 0)
		cfg = pqev_conf_free(schema, cfg);
	*out = cfg;
	return ret;
}

int pqev_conf_load_string(const PqevConfSchema *schema, const char *text, const char *name,
			  const void *old, void **out, PqevConfReportFn report, void *arg)
{
	return load_text(schema, NULL, text, strlen(text), name ? name : "<string>", 0, NULL, old,
			 out, report, arg);
}

int pqev_conf_load_file(const PqevConfSchema *schema, const char *path, const void *old, void **out,
			PqevConfReportFn report, void *arg)
{
	char *buf = NULL;
	size_t len = 0;
	struct stat st = {0};
	int r = read_file(path, false, &buf, &len, &st);
	return load_text(schema, buf, buf, len, path, r, &st, old, out, report, arg);
}

/* ---- validator helpers ---- */

static int check_key_idx(PqevConfCheck *chk, const char *key)
{
	if (!chk->inst || !key)
		return -1;
	for (int i = 0; chk->inst->sec->keys && chk->inst->sec->keys[i].key; i++)
		if (strcmp(chk->inst->sec->keys[i].key, key) == 0)
			return i;
	return -1;
}

static void check_report(PqevConfCheck *chk, PqevConfSeverity sev, const char *key, const char *fmt,
			 va_list ap) PQEV_PRINTF(4, 0);

static void check_report(PqevConfCheck *chk, PqevConfSeverity sev, const char *key, const char *fmt,
			 va_list ap)
{
	int idx = check_key_idx(chk, key);
	int line = 0;
	if (chk->inst)
		line = idx >= 0 && chk->inst->key_line[idx] ? chk->inst->key_line[idx]
							    : chk->inst->line;
	vdiag(chk->L, sev, line, chk->inst ? chk->inst->label : NULL, key, fmt, ap);
}

void pqev_conf_check_error(PqevConfCheck *chk, const char *key, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	check_report(chk, PQEV_CONF_ERROR, key, fmt, ap);
	va_end(ap);
}

void pqev_conf_check_warning(PqevConfCheck *chk, const char *key, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	check_report(chk, PQEV_CONF_WARNING, key, fmt, ap);
	va_end(ap);
}

bool pqev_conf_check_key_set(PqevConfCheck *chk, const char *key)
{
	int idx = check_key_idx(chk, key);
	return idx >= 0 && chk->inst->key_line[idx] != 0;
}
