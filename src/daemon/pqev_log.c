/*
 * Process-wide logger (see pqev_log.h): formats one line per call and writes it
 * with a single write() per output, so lines from a daemon and its log file
 * reopening never interleave mid-line. Every message is scrubbed of conninfo
 * passwords before any output sees it.
 *
 * NOTE: a failed configure or reopen keeps the previous outputs; a daemon whose
 * new logfile path is wrong keeps logging where it did and reports the error.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <pgqd-ev/pqev_log.h>

PqevLogLevel pqev_log_threshold_ = PQEV_LOG_INFO;

struct PqevLogCtx {
	char *key;  /* logfmt key */
	char *name; /* sanitised */
};

static struct {
	PqevLogLevel level;
	PqevLogFormat format;
	bool quiet;
	int err_fd;
	bool journal;
	char *logfile;
	int file_fd;
	bool syslog;
	char *ident;
	int facility;
	bool syslog_open;
} st = {
	.level = PQEV_LOG_INFO,
	.err_fd = STDERR_FILENO,
	.file_fd = -1,
};

static const struct {
	const char *name; /* for parsing and logfmt */
	const char *tag;  /* text format, pgqd's words */
	int prio;         /* syslog and journal */
} levels[] = {
	[PQEV_LOG_FATAL] = {"fatal", "FATAL", LOG_CRIT},
	[PQEV_LOG_ERROR] = {"error", "ERROR", LOG_ERR},
	[PQEV_LOG_WARNING] = {"warning", "WARNING", LOG_WARNING},
	[PQEV_LOG_INFO] = {"info", "LOG", LOG_INFO},
	[PQEV_LOG_DEBUG] = {"debug", "DEBUG", LOG_DEBUG},
	[PQEV_LOG_NOISE] = {"noise", "NOISE", LOG_DEBUG},
};

/* ---- context ---- */

static char *sanitize(const char *s)
{
	char *c = strdup(s ? s : "");
	if (!c)
		return NULL;
	for (char *p = c; *p; p++)
		if (iscntrl((unsigned char)*p))
			*p = '?';
	return c;
}

PqevLogCtx *pqev_log_ctx_new(const char *key, const char *name)
{
	PqevLogCtx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return NULL;
	ctx->key = sanitize(key && *key ? key : "obj");
	ctx->name = sanitize(name);
	if (!ctx->key || !ctx->name)
		return pqev_log_ctx_free(ctx);
	/* a logfmt key must stay one bare word */
	for (char *p = ctx->key; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-')
			*p = '_';
	return ctx;
}

PqevLogCtx *pqev_log_ctx_free(PqevLogCtx *ctx)
{
	if (ctx) {
		free(ctx->key);
		free(ctx->name);
		free(ctx);
	}
	return NULL;
}

const char *pqev_log_ctx_name(const PqevLogCtx *ctx)
{
	return ctx ? ctx->name : "";
}

/* ---- levels ---- */

static void update_threshold(void)
{
	PqevLogLevel t = st.level;
	if (st.syslog && t < PQEV_LOG_INFO)
		t = PQEV_LOG_INFO;
	pqev_log_threshold_ = t;
}

void pqev_log_set_level(PqevLogLevel level)
{
	if (level > PQEV_LOG_NOISE)
		level = PQEV_LOG_NOISE;
	st.level = level;
	update_threshold();
}

PqevLogLevel pqev_log_get_level(void)
{
	return st.level;
}

int pqev_log_level_parse(const char *name, PqevLogLevel *out)
{
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcasecmp(name, levels[i].name) == 0) {
			*out = (PqevLogLevel)i;
			return 0;
		}
	if (strcasecmp(name, "warn") == 0) {
		*out = PQEV_LOG_WARNING;
		return 0;
	}
	return -EINVAL;
}

const char *pqev_log_level_name(PqevLogLevel level)
{
	return level <= PQEV_LOG_NOISE ? levels[level].name : "?";
}

/* ---- outputs ---- */

static bool stderr_is_journal(int fd)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat sb;
	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(fd, &sb) < 0)
		return false;
	return (unsigned long long)sb.st_dev == dev && (unsigned long long)sb.st_ino == ino;
}

static int open_logfile(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
	return fd < 0 ? -errno : fd;
}

int pqev_log_configure(const PqevLogSettings *s)
{
	char *logfile = NULL, *ident = NULL;
	int fd = -1;

	if (s->logfile && *s->logfile) {
		logfile = strdup(s->logfile);
		if (!logfile)
			return -ENOMEM;
		fd = open_logfile(logfile);
		if (fd < 0) {
			free(logfile);
			return fd;
		}
	}
	ident = strdup(s->syslog_ident && *s->syslog_ident ? s->syslog_ident : "pgqd-ev");
	if (!ident) {
		if (fd >= 0)
			close(fd);
		free(logfile);
		return -ENOMEM;
	}
	if (st.file_fd >= 0)
		close(st.file_fd);
	free(st.logfile);
	st.logfile = logfile;
	st.file_fd = fd;

	if (st.syslog_open) {
		closelog();
		st.syslog_open = false;
	}
	/* openlog keeps the ident pointer: free the old one only after replacing it */
	st.syslog = s->syslog;
	st.facility = s->syslog_facility ? s->syslog_facility : LOG_DAEMON;
	if (st.syslog) {
		openlog(ident, LOG_PID | LOG_NDELAY, st.facility);
		st.syslog_open = true;
	}
	free(st.ident);
	st.ident = ident;

	st.format = s->format;
	st.quiet = s->quiet;
	st.err_fd = s->stderr_fd > 0 ? s->stderr_fd : STDERR_FILENO;
	st.journal = s->journal == PQEV_LOG_JOURNAL_ON ||
		     (s->journal == PQEV_LOG_JOURNAL_AUTO && stderr_is_journal(st.err_fd));
	pqev_log_set_level(s->level);
	return 0;
}

int pqev_log_reopen(void)
{
	if (st.logfile) {
		int fd = open_logfile(st.logfile);
		if (fd < 0)
			return fd;
		if (st.file_fd >= 0)
			close(st.file_fd);
		st.file_fd = fd;
	}
	if (st.syslog_open) {
		closelog();
		openlog(st.ident, LOG_PID | LOG_NDELAY, st.facility);
	}
	return 0;
}

void pqev_log_shutdown(void)
{
	if (st.file_fd >= 0)
		close(st.file_fd);
	st.file_fd = -1;
	if (st.syslog_open)
		closelog();
	st.syslog_open = false;
	st.syslog = false;
	free(st.logfile);
	st.logfile = NULL;
	free(st.ident);
	st.ident = NULL;
	st.err_fd = STDERR_FILENO;
	st.journal = false;
	st.quiet = false;
	st.format = PQEV_LOG_TEXT;
	update_threshold();
}

/* ---- line building ---- */

typedef struct Buf {
	char *p;
	size_t len, cap;
	bool failed;
	char stack[1024];
} Buf;

static void buf_init(Buf *b)
{
	b->p = b->stack;
	b->len = 0;
	b->cap = sizeof(b->stack);
	b->failed = false;
}

static void buf_free(Buf *b)
{
	if (b->p != b->stack)
		free(b->p);
}

static bool buf_reserve(Buf *b, size_t more)
{
	char *n;
	size_t cap;
	if (b->failed)
		return false;
	if (b->len + more + 1 <= b->cap)
		return true;
	cap = b->cap * 2;
	while (cap < b->len + more + 1)
		cap *= 2;
	n = b->p == b->stack ? malloc(cap) : realloc(b->p, cap);
	if (!n) {
		b->failed = true;
		return false;
	}
	if (b->p == b->stack)
		memcpy(n, b->stack, b->len);
	b->p = n;
	b->cap = cap;
	return true;
}

static void buf_add(Buf *b, const char *s, size_t n)
{
	if (!buf_reserve(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_str(Buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void buf_printf(Buf *b, const char *fmt, ...) PQEV_PRINTF(2, 3);
static void buf_printf(Buf *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		buf_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* nowhere left to complain */
		p += w;
		n -= (size_t)w;
	}
}

/* Text line: "<ts> [pid] TAG [ctx]: msg", continuation lines tab-indented. With
 * `prio` >= 0 (journal): "<N>TAG [ctx]: msg" and every line starts with <N>. */
static void build_text(Buf *b, PqevLogLevel level, const PqevLogCtx *ctx, const char *msg,
		       const struct timeval *tv, int prio)
{
	char lineprefix[16] = "";
	if (prio >= 0) {
		snprintf(lineprefix, sizeof(lineprefix), "<%d>", prio);
		buf_str(b, lineprefix);
	} else {
		struct tm tm;
		char ts[64];
		time_t t = tv->tv_sec;
		localtime_r(&t, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
		buf_str(b, ts);
		buf_printf(b, ".%03d", (int)(tv->tv_usec / 1000));
		strftime(ts, sizeof(ts), " %Z", &tm);
		buf_str(b, ts);
		buf_printf(b, " [%d] ", (int)getpid());
	}
	buf_str(b, levels[level].tag);
	buf_str(b, " ");
	if (ctx) {
		buf_str(b, "[");
		buf_str(b, ctx->name);
		buf_str(b, "]: ");
	}
	for (const char *p = msg; *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		buf_add(b, p, n);
		if (!nl)
			break;
		p = nl + 1;
		if (!*p)
			break; /* a trailing newline adds no empty line */
		buf_str(b, "\n");
		buf_str(b, lineprefix);
		buf_str(b, "\t");
	}
	buf_str(b, "\n");
}

static void add_logfmt_value(Buf *b, const char *v, bool force_quotes)
{
	bool bare = *v != '\0' && !force_quotes;
	for (const char *p = v; *p && bare; p++)
		if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\' || iscntrl((unsigned char)*p))
			bare = false;
	if (bare) {
		buf_str(b, v);
		return;
	}
	buf_str(b, "\"");
	for (const char *p = v; *p; p++) {
		if (*p == '"' || *p == '\\') {
			char e[2] = {'\\', *p};
			buf_add(b, e, 2);
		} else if (*p == '\n') {
			buf_str(b, "\\n");
		} else if (*p == '\t') {
			buf_str(b, "\\t");
		} else if (iscntrl((unsigned char)*p)) {
			buf_str(b, "?");
		} else {
			buf_add(b, p, 1);
		}
	}
	buf_str(b, "\"");
}

static void build_logfmt(Buf *b, PqevLogLevel level, const PqevLogCtx *ctx, const char *msg,
			 const struct timeval *tv, int prio)
{
	if (prio >= 0) {
		buf_printf(b, "<%d>", prio);
	} else {
		struct tm tm;
		char ts[64];
		time_t t = tv->tv_sec;
		gmtime_r(&t, &tm);
		strftime(ts, sizeof(ts), "ts=%Y-%m-%dT%H:%M:%S", &tm);
		buf_str(b, ts);
		buf_printf(b, ".%03dZ pid=%d ", (int)(tv->tv_usec / 1000), (int)getpid());
	}
	buf_str(b, "level=");
	buf_str(b, levels[level].name);
	if (ctx) {
		buf_str(b, " ");
		buf_str(b, ctx->key);
		buf_str(b, "=");
		add_logfmt_value(b, ctx->name, false);
	}
	buf_str(b, " msg=");
	add_logfmt_value(b, msg, true);
	buf_str(b, "\n");
}

static void emit(int fd, PqevLogLevel level, const PqevLogCtx *ctx, const char *msg,
		 const struct timeval *tv, bool journal)
{
	Buf b;
	int prio = journal ? levels[level].prio : -1;
	buf_init(&b);
	if (st.format == PQEV_LOG_LOGFMT)
		build_logfmt(&b, level, ctx, msg, tv, prio);
	else
		build_text(&b, level, ctx, msg, tv, prio);
	if (!b.failed)
		write_all(fd, b.p, b.len);
	buf_free(&b);
}

void pqev_log_writev(PqevLogLevel level, const PqevLogCtx *ctx, const char *fmt, va_list ap)
{
	char stackmsg[1024], *big = NULL, *clean = NULL;
	const char *msg = stackmsg;
	struct timeval tv;
	va_list aq;
	int n;
	int saved_errno = errno;

	if (level > PQEV_LOG_NOISE)
		level = PQEV_LOG_NOISE;
	va_copy(aq, ap);
	n = vsnprintf(stackmsg, sizeof(stackmsg), fmt, aq);
	va_end(aq);
	if (n < 0) {
		msg = "(log message format error)";
	} else if ((size_t)n >= sizeof(stackmsg)) {
		big = malloc((size_t)n + 1);
		if (big) {
			vsnprintf(big, (size_t)n + 1, fmt, ap);
			msg = big;
		}
	}
	if (strcasestr(msg, "password") || strstr(msg, "://")) {
		clean = pqev_log_scrub_dup(msg);
		/* never risk a password: without memory to hide it, drop the text */
		msg = clean ? clean : "(message dropped: out of memory while hiding a password)";
	}
	gettimeofday(&tv, NULL);
	if (!st.quiet && level <= st.level)
		emit(st.err_fd, level, ctx, msg, &tv, st.journal);
	if (st.file_fd >= 0 && level <= st.level)
		emit(st.file_fd, level, ctx, msg, &tv, false);
	if (st.syslog_open && level <= PQEV_LOG_INFO) {
		if (ctx)
			syslog(levels[level].prio, "[%s]: %s", ctx->name, msg);
		else
			syslog(levels[level].prio, "%s", msg);
	}
	free(clean);
	free(big);
	errno = saved_errno;
}

void pqev_log_write(PqevLogLevel level, const PqevLogCtx *ctx, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	pqev_log_writev(level, ctx, fmt, ap);
	va_end(ap);
}

/* ---- password scrubbing ---- */

typedef struct Out {
	char *dst;
	size_t size, len;
} Out;

static void out_add(Out *o, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++, o->len++)
		if (o->len + 1 < o->size)
			o->dst[o->len] = s[i];
}

static bool word_char(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

/* At s[i], a "password" keyword followed by optional spaces and '='? Returns the
 * index just after '=' or 0. */
static size_t password_key(const char *s, size_t i)
{
	size_t j;
	if (strncasecmp(s + i, "password", 8) != 0)
		return 0;
	if (i > 0 && word_char(s[i - 1]) &&
	    !(i >= 2 && strncasecmp(s + i - 2, "PG", 2) == 0 && (i == 2 || !word_char(s[i - 3]))))
		return 0;
	j = i + 8;
	while (s[j] == ' ' || s[j] == '\t')
		j++;
	return s[j] == '=' ? j + 1 : 0;
}

size_t pqev_log_scrub(char *dst, size_t dstsize, const char *src)
{
	Out o = {dst, dstsize, 0};
	size_t i = 0;

	while (src[i]) {
		size_t v = password_key(src, i);
		if (v) {
			bool in_query = i > 0 && (src[i - 1] == '?' || src[i - 1] == '&');
			out_add(&o, src + i, v - i);
			while (src[v] == ' ' || src[v] == '\t')
				out_add(&o, src + v++, 1);
			if (src[v] == '\'') {
				/* quoted conninfo value, backslash escapes */
				for (v++; src[v] && src[v] != '\''; v++)
					if (src[v] == '\\' && src[v + 1])
						v++;
				if (src[v] == '\'')
					v++;
			} else {
				while (src[v] && !isspace((unsigned char)src[v]) &&
				       !(in_query && (src[v] == '&' || src[v] == '#')))
					v++;
			}
			out_add(&o, "***", 3);
			i = v;
			continue;
		}
		if (strncmp(src + i, "://", 3) == 0) {
			/* scheme://user:secret@host: hide what is between ':' and '@' */
			size_t a = i + 3, at = 0, colon = 0, k;
			for (k = a; src[k] && !isspace((unsigned char)src[k]) && src[k] != '/' &&
				    src[k] != '?' && src[k] != '#';
			     k++) {
				if (src[k] == '@')
					at = k; /* the last '@' ends userinfo */
				else if (src[k] == ':' && !colon && !at)
					colon = k;
			}
			if (at && colon && colon < at) {
				out_add(&o, src + i, colon + 1 - i);
				out_add(&o, "***", 3);
				i = at;
				continue;
			}
			out_add(&o, src + i, 3);
			i += 3;
			continue;
		}
		out_add(&o, src + i, 1);
		i++;
	}
	if (o.size)
		o.dst[o.len < o.size ? o.len : o.size - 1] = '\0';
	return o.len;
}

char *pqev_log_scrub_dup(const char *src)
{
	size_t n = pqev_log_scrub(NULL, 0, src);
	char *d = malloc(n + 1);
	if (d)
		pqev_log_scrub(d, n + 1, src);
	return d;
}

/* ---- UTF-8 ---- */

size_t pqev_utf8_seq_len(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n;
	unsigned lo = 0x80, hi = 0xBF;

	if (s[0] == 0)
		return 0;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		n = 2;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
		n = 3;
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
		n = 4;
	else
		return 0;
	/* the second byte's range excludes overlongs, surrogates and > U+10FFFF */
	if (s[0] == 0xE0)
		lo = 0xA0;
	else if (s[0] == 0xED)
		hi = 0x9F;
	else if (s[0] == 0xF0)
		lo = 0x90;
	else if (s[0] == 0xF4)
		hi = 0x8F;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return n;
}

bool pqev_utf8_valid(const char *s)
{
	while (*s) {
		size_t n = pqev_utf8_seq_len(s);
		if (n == 0)
			return false;
		s += n;
	}
	return true;
}
