/*
 * Running the built pgqctl from a test: synchronously (exit code, stdout and
 * stderr kept apart, optional stdin), or in the background for `tail` (stdout
 * read as it comes, signals, exit). JSON answers are checked by the server
 * itself (jsonb), field by field.
 */
#ifndef PGQEV_TESTS_CTLRUN_H
#define PGQEV_TESTS_CTLRUN_H

#include <stdbool.h>
#include <sys/types.h>

#include <libpq-fe.h>

typedef struct CtlRun {
	int rc; /* exit status, or 128+signal */
	char *out, *err;
} CtlRun;

/* Run pgqctl with NULL-terminated args; stdin from `in` (NULL: /dev/null). */
CtlRun ctr_run(const char *in, ...);
/* Same with an argv array (NULL-terminated). */
CtlRun ctr_runv(const char *in, const char *const *argv);
void ctr_free(CtlRun *r);

/* Background process. */
typedef struct CtlProc CtlProc;
CtlProc *ctr_spawn(const char *const *argv);
/* Wait until stdout holds `needle` (true) or timeout (scaled by pgt_time_factor()). */
bool ctr_wait_out(CtlProc *p, const char *needle, int timeout_ms);
void ctr_signal(CtlProc *p, int sig);
/* Wait for exit; exit status, 128+signal, or -1 on timeout (scaled by
   pgt_time_factor()). Under PGQD_TEST_VALGRIND_PGQCTL=1 pgqctl runs under memcheck,
   and a memcheck error fails the test whatever status it expects. */
int ctr_wait_exit(CtlProc *p, int timeout_ms);
const char *ctr_out(CtlProc *p);
const char *ctr_err(CtlProc *p);
void ctr_free_proc(CtlProc *p);

/* `path` (text[] literal like "{databases,0,queue}") of json text, via the server;
   malloc'd, NULL for JSON null / missing. Fails the test on invalid JSON. */
char *ctr_json(PGconn *c, const char *json, const char *path);
/* Replace times like "1.2s", "3m04s", "2h05m" and decimals in ev/s by fixed text. */
char *ctr_mask(const char *s);

/* -d value for a database (as postgres, or `user`); static buffer. */
const char *ctr_dsn(const char *db, const char *user);
/* The same, malloc'd. */
char *ctr_dsn_dup(const char *db);
/* Exit code and substrings of stdout / stderr (NULL: not checked). */
void ctr_expect(CtlRun *r, int rc, const char *out_has, const char *err_has);
/* A JSON field equals `want` (NULL: JSON null or missing). */
void ctr_json_eq(PGconn *c, const char *json, const char *path, const char *want);
/* Masked with ctr_mask, runs of spaces collapsed (column widths follow the times). */
char *ctr_golden(const char *s);
/* A tick of `queue` now, whatever its thresholds say. */
void ctr_tick(PGconn *c, const char *queue);

/* `pgqctl --connect-timeout 60 -d dsn node ARGS...` (args NULL-terminated; a
   loaded test machine may take seconds to accept a connection). */
CtlRun ctr_node(const char *dsn, const char *const *args);
/* A command's stdout as TAP comments on stderr. */
void ctr_dump(const CtlRun *r);
/* The number right after `key` in out; fails the test when key is missing. */
double ctr_number_after(const char *out, const char *key);

#endif
