/*
 * Logging: levels, outputs (stderr, log file, syslog), text or logfmt lines, and a
 * per-object context such as a database name.
 *
 * The logger is process-wide on purpose: stderr, the log file and syslog are
 * process resources, and one loop thread writes them. It is not thread-safe.
 * Before pqev_log_configure() is called, lines at info and above go to stderr in
 * the text format.
 *
 * Line formats (message continuation lines are prefixed with a tab):
 *   text:   2026-11-22 02:40:46.539 UTC [9458] LOG [qdb1]: pgq version ok: 3.5
 *           (local time, as pgqd writes; level tags FATAL ERROR WARNING LOG DEBUG NOISE)
 *   logfmt: ts=2026-11-22T02:40:46.539Z pid=9458 level=info db=qdb1 msg="pgq version ok"
 * When stderr is the systemd journal (JOURNAL_STREAM names stderr's device:inode)
 * stderr lines carry a "<N>" syslog priority prefix instead of the timestamp and
 * pid: "<6>LOG [qdb1]: pgq version ok: 3.5". The log file always gets full lines.
 * syslog gets the message with its context, at info and more severe only.
 *
 * Every message is passed through pqev_log_scrub() before it is written, so a
 * conninfo password never reaches an output even if a caller forgot.
 *
 * The core library itself logs at debug and noise only; it returns errors.
 */
#ifndef PGQEV_PQEV_LOG_H
#define PGQEV_PQEV_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include <pgqd-ev/pqev_common.h>

typedef enum PqevLogLevel {
	PQEV_LOG_FATAL = 0, /* the process is about to exit */
	PQEV_LOG_ERROR,     /* something failed and was not done */
	PQEV_LOG_WARNING,   /* something failed and will be retried, or is suspicious */
	PQEV_LOG_INFO,      /* normal but significant: start, reload, recovery, stats */
	PQEV_LOG_DEBUG,     /* -v: state changes, SQL other than ticks */
	PQEV_LOG_NOISE,     /* -vv: every tick and timer */
} PqevLogLevel;

typedef enum PqevLogFormat {
	PQEV_LOG_TEXT = 0, /* pgqd-compatible lines */
	PQEV_LOG_LOGFMT,   /* key=value */
} PqevLogFormat;

typedef enum PqevLogJournal {
	PQEV_LOG_JOURNAL_AUTO = 0, /* detect through JOURNAL_STREAM */
	PQEV_LOG_JOURNAL_ON,       /* always "<N>" prefixes on stderr */
	PQEV_LOG_JOURNAL_OFF,      /* never */
} PqevLogJournal;

/* Settings for pqev_log_configure(); strings are copied. Zero-initialise, then set. */
typedef struct PqevLogSettings {
	PqevLogLevel level;       /* most verbose level written to stderr and file */
	PqevLogFormat format;     /* stderr and file */
	bool quiet;               /* true: nothing to stderr (-q) */
	int stderr_fd;            /* 0: STDERR_FILENO; tests pass a pipe or file */
	PqevLogJournal journal;   /* stderr journal mode */
	const char *logfile;      /* NULL or "": no file; appended to, created 0640 */
	bool syslog;              /* also log to syslog (info and more severe) */
	const char *syslog_ident; /* NULL: "pgqd-ev" */
	int syslog_facility;      /* LOG_DAEMON etc.; 0 (LOG_KERN) means LOG_DAEMON */
} PqevLogSettings;

/*
 * Context of log lines about one object: rendered "[name]: " in text and
 * "key=name" in logfmt. The name is sanitised when the context is made (control
 * characters become '?'), so callers pass raw database names. Owned by the
 * caller; it must outlive every log call that uses it.
 */
typedef struct PqevLogCtx PqevLogCtx;

/* New context: `key` is the logfmt key ("db"), `name` the object's name. NULL on OOM. */
PqevLogCtx *pqev_log_ctx_new(const char *key, const char *name);
/* Free (NULL allowed); returns NULL. */
PqevLogCtx *pqev_log_ctx_free(PqevLogCtx *ctx);
/* The sanitised name (owned by ctx). */
const char *pqev_log_ctx_name(const PqevLogCtx *ctx);

/*
 * Apply settings: opens the log file (O_APPEND) and syslog. On failure returns
 * -errno and keeps the previous outputs unchanged (a reload with a bad logfile
 * path keeps logging where it did).
 */
int pqev_log_configure(const PqevLogSettings *s) PQEV_MUSTCHECK;

/* Reopen the log file (after logrotate / on SIGHUP) and syslog. -errno on failure,
 * in which case the old file descriptor stays in use. */
int pqev_log_reopen(void) PQEV_MUSTCHECK;

/* Close the file and syslog, free settings; stderr only afterwards. */
void pqev_log_shutdown(void);

void pqev_log_set_level(PqevLogLevel level);
PqevLogLevel pqev_log_get_level(void);
/* "error", "warning", "info", "debug", "noise" (also "fatal"); -EINVAL if unknown. */
int pqev_log_level_parse(const char *name, PqevLogLevel *out) PQEV_MUSTCHECK;
const char *pqev_log_level_name(PqevLogLevel level);

/* Internal: the most verbose level any output takes; read by pqev_log_enabled(). */
extern PqevLogLevel pqev_log_threshold_;

/* True when a line at `level` would reach some output. Cheap. */
static inline bool pqev_log_enabled(PqevLogLevel level)
{
	return level <= pqev_log_threshold_;
}

/* Write one line (prefer the macros below). `ctx` may be NULL. */
void pqev_log_write(PqevLogLevel level, const PqevLogCtx *ctx, const char *fmt, ...)
	PQEV_PRINTF(3, 4);
void pqev_log_writev(PqevLogLevel level, const PqevLogCtx *ctx, const char *fmt, va_list ap)
	PQEV_PRINTF(3, 0);

/* The macros test the level before the arguments are evaluated. */
#define pqev_log(level, ctx, ...)                                    \
	do {                                                         \
		if (pqev_log_enabled(level))                         \
			pqev_log_write((level), (ctx), __VA_ARGS__); \
	} while (0)
#define pqev_log_fatal(ctx, ...)   pqev_log(PQEV_LOG_FATAL, ctx, __VA_ARGS__)
#define pqev_log_error(ctx, ...)   pqev_log(PQEV_LOG_ERROR, ctx, __VA_ARGS__)
#define pqev_log_warning(ctx, ...) pqev_log(PQEV_LOG_WARNING, ctx, __VA_ARGS__)
#define pqev_log_info(ctx, ...)    pqev_log(PQEV_LOG_INFO, ctx, __VA_ARGS__)
#define pqev_log_debug(ctx, ...)   pqev_log(PQEV_LOG_DEBUG, ctx, __VA_ARGS__)
#define pqev_log_noise(ctx, ...)   pqev_log(PQEV_LOG_NOISE, ctx, __VA_ARGS__)

/*
 * Hide passwords: in `src` (a conninfo string, a URI or any text containing
 * them), the value of every `password=...` (quoted or not, also as a URI query
 * parameter) and the password of `scheme://user:password@` become "***".
 * Writes at most dstsize bytes, NUL-terminated (truncating). Returns the length
 * the full result needs (like snprintf).
 */
size_t pqev_log_scrub(char *dst, size_t dstsize, const char *src);

/* Same, malloc'd result (caller frees); NULL on OOM. */
char *pqev_log_scrub_dup(const char *src);

/*
 * Length of the well-formed UTF-8 sequence at `s` (1..4; no overlongs, no
 * surrogates), or 0 when the bytes there are not UTF-8 (or *s is NUL).
 */
size_t pqev_utf8_seq_len(const char *s);
/* True when the whole NUL-terminated string is well-formed UTF-8. */
bool pqev_utf8_valid(const char *s);

#endif
