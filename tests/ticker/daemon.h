/*
 * Spawning the real pgqd-ev binary from a test: a private directory with the
 * generated ini, stderr read line by line through a pipe, and a datagram socket
 * the test owns passed as NOTIFY_SOCKET, so readiness is observed instead of
 * slept for. Every wait has a deadline; the daemon is SIGKILLed at dmn_free()
 * if still running.
 */
#ifndef PGQEV_TESTS_TICKER_DAEMON_H
#define PGQEV_TESTS_TICKER_DAEMON_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct Daemon Daemon;

/* Path of the built pgqd-ev binary. */
const char *dmn_binary(void);

/* A [pgqd] section header plus base_connstr for the test server (static buffer). */
const char *dmn_base_ini(void);

/* Write `ini` to a fresh directory and start `pgqd-ev -v [extra] INI`. */
Daemon *dmn_start(const char *ini, const char *extra_arg);
/* The same with RLIMIT_NOFILE set to nofile for the daemon alone. */
Daemon *dmn_start_nofile(const char *ini, unsigned long nofile);

/* Replace the ini file's content (for SIGHUP tests). */
void dmn_write_ini(Daemon *d, const char *ini);
const char *dmn_ini_path(const Daemon *d);
const char *dmn_dir(const Daemon *d);
pid_t dmn_pid(const Daemon *d);

/* Wait for an sd_notify datagram containing `needle`; consumed datagrams are kept. */
bool dmn_wait_notify(Daemon *d, const char *needle, int timeout_ms);
/* Wait for a stderr line containing `needle` (lines seen before count too, once
   each: a matched line is not matched again). */
bool dmn_wait_log(Daemon *d, const char *needle, int timeout_ms);
/* Wait for n lines containing `needle` that come after all such lines so far (a
   window measured by the daemon's own timers, e.g. its stats lines). */
bool dmn_wait_log_more(Daemon *d, const char *needle, int n, int timeout_ms);
/* Drain what is readable now and tell whether any line so far contains needle. */
bool dmn_log_contains(Daemon *d, const char *needle);
/* Index of the first stderr line so far containing needle, -1 if none (for order). */
long dmn_log_line_no(Daemon *d, const char *needle);

/* Lines of stderr read so far (read first), and line i of them (NULL past the end). */
size_t dmn_log_nlines(Daemon *d);
const char *dmn_log_line(Daemon *d, size_t i);

void dmn_signal(Daemon *d, int signo);
/* Wait for exit; returns the exit status, 128+signal, or -1 on timeout. */
int dmn_wait_exit(Daemon *d, int timeout_ms);
/* Kill if running, print the log to stderr when `dump`, remove the directory. */
void dmn_free(Daemon *d, bool dump);
/* The ordinary end of a test: SIGTERM, exit status 0 within 10 s (asserted), dmn_free(). */
void dmn_stop(Daemon *d);

/* Run the binary synchronously with args (NULL-terminated); output in *out (malloc'd). */
int dmn_run_sync(char **out, ...);

#endif
