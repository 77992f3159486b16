/*
 * pgtest: a private PostgreSQL per test binary, for Check suites.
 *
 * pgt_main() copies the initdb template made once per build (tests/mk-template.sh),
 * starts postgres as the `postgres` user on a unix socket in a private temporary
 * directory (and on an ephemeral 127.0.0.1 port), runs the Check suite with TAP on
 * stdout, then stops the server and removes the directory (kept on failure or when
 * PGQD_TEST_KEEP is set).
 *
 * The server is owned by a supervisor process, so a test running in Check's forked
 * child can stop, start, restart or crash it (pgt_server_*). The supervisor dies
 * with the test binary (PR_SET_PDEATHSIG) and postgres dies with the supervisor, so
 * a SIGKILLed test binary leaves no server behind.
 *
 * Missing server binaries: "1..0 # SKIP", or a failure when PGQD_TEST_REQUIRE_PG=1.
 */
#ifndef PGQEV_TESTS_PGTEST_H
#define PGQEV_TESTS_PGTEST_H

#include <stdbool.h>
#include <stdint.h>

#include <check.h>
#include <libpq-fe.h>

/* Options for pgt_main(). */
typedef struct PgtOptions {
	bool need_server;       /* false: pure unit tests, no server at all */
	int max_connections;    /* 0: 120 */
	const char *extra_conf; /* extra postgresql.conf lines, or NULL */
	int servers;            /* 2: a second private server (pgt_*_on(1, ...)) */
	/* > 0: the servers' directory goes to /dev/shm when it has this many MB
	   free (else TMPDIR): removing hundreds of databases' files from this
	   machine's disk (ext4 mounted with discard) takes about 1 s a database */
	int ram_dir_mb;
} PgtOptions;

/* Run `suite` (ownership passes to the runner) and return the process exit code. */
int pgt_main(Suite *suite, const PgtOptions *opts);

/* A TCase with a timeout in seconds (Check's default of 4 s is too short for us),
   scaled by pgt_time_factor() for the sanitizer and valgrind runs. */
TCase *pgt_tcase(const char *name, double timeout_sec);

/* Server coordinates. Valid after pgt_main() started the server. */
const char *pgt_socket_dir(void);
int pgt_port(void);
const char *pgt_data_dir(void);
const char *pgt_tmp_dir(void);

/* A daemon's log file under pgt_tmp_dir(); a failed test binary prints the
   last lines of every one left there. */
#define PGT_DAEMON_LOG "daemon.log"
/* The server's private install tree (tests/mk-template.sh): its bin directory, and
 * the extension directory that holds our built extensions beside the system's. */
const char *pgt_bindir(void);
const char *pgt_extension_dir(void);

/*
 * Connection string for database `dbname` over the unix socket (tcp=false) or
 * 127.0.0.1 (tcp=true). Returns a buffer of the calling thread, overwritten by
 * its next call (thread-local: tests call it from producer and consumer threads
 * at once, and a shared buffer once sent a thread to another test's database).
 */
const char *pgt_connstr(const char *dbname, bool tcp);

/*
 * Connection string for database `dbname` on private server `server` (0: the
 * first; 1: the second, with PgtOptions.servers = 2); a thread-local buffer. The
 * blocking helpers below take such a string in place of a database name.
 */
const char *pgt_connstr_on(int server, const char *dbname);

/*
 * Create a fresh database from the template (which has sql/ installed) and return
 * its name (static buffer). Names are unique per test binary run.
 */
const char *pgt_db_new(void);
/* Same, from template0 (no pgq installed). */
const char *pgt_db_new_empty(void);

/* Blocking helpers for test code; they ck_abort on failure. */
PGconn *pgt_connect(const char *dbname);
void pgt_exec(PGconn *conn, const char *sql);
/* First column of the first row, malloc'd ("" for no row, NULL for SQL NULL). */
char *pgt_value(PGconn *conn, const char *sql);
int64_t pgt_int(PGconn *conn, const char *sql);
/* Take the next batch of consumer on queue through SQL (next_batch,
   get_batch_events, finish_batch): its ev_data in ev_id order joined by ','
   (malloc'd), or NULL when there is no batch. Names are put in as they are. */
char *pgt_take_batch(PGconn *conn, const char *queue, const char *consumer);
/* Every batch pgt_take_batch finds until none is left, joined by ','. */
char *pgt_take_all_batches(PGconn *conn, const char *queue, const char *consumer);
/* Run `sql` expecting an error; returns the primary message (malloc'd). */
char *pgt_error(PGconn *conn, const char *sql);
/* Run sql on a short-lived connection to dbname. */
void pgt_exec_db(const char *dbname, const char *sql);
int64_t pgt_int_db(const char *dbname, const char *sql);
/* Lines the first server has logged at LOG level from database dbname that
   contain both a and b (its log_line_prefix names the database). */
int pgt_server_log_count(const char *dbname, const char *a, const char *b);
/* The first server's statement log (log_min_duration_statement = 0 for dbname)
   shows stmt prepared once (PQEV_Q_PREPARE's names, pqev_N), run by name at
   least `want` times (waited for up to 5 s) and never unnamed; ck_asserts. */
void pgt_assert_prepared(const char *dbname, const char *stmt, int want);

/* Server control through the supervisor; each returns 0 or ck_aborts. */
void pgt_server_stop(void);    /* fast shutdown, wait until gone */
void pgt_server_start(void);   /* start again on the same data, socket and port */
void pgt_server_restart(void); /* stop + start */
void pgt_server_crash(void);   /* SIGQUIT the postmaster: immediate shutdown */
/* The same for private server `server`. */
void pgt_server_stop_on(int server);
void pgt_server_start_on(int server);
void pgt_server_crash_on(int server);
/* SIGKILL the postmaster of private server `server` and all its backends (no
   shutdown at all); pgt_server_start_on() starts it again (crash recovery). */
void pgt_server_kill_on(int server);

/*
 * Factor for time bounds that an issue promises (recovery latency): 1 normally,
 * PGQD_TEST_TIME_FACTOR when set (scripts/test sets 3 for --sanitize, 6 for
 * --valgrind), 6 under the valgrind test setup otherwise.
 */
double pgt_time_factor(void);

/* Monotonic milliseconds, for deadlines in tests. */
int64_t pgt_now_ms(void);
/* For a condition polled by an event loop that runs between looks: true at
   most once every every_ms, so an expensive look (a query) does not take the
   loop's time; *next_ms holds when the next look is due (0 at first). */
bool pgt_due(int64_t *next_ms, int every_ms);

/*
 * Wait until cond(arg) is true, polling every `step_ms`, for at most `timeout_ms`.
 * Returns true if the condition was met. For conditions owned by another process
 * (a daemon's effect in the database); in-process waits use the event loop.
 */
bool pgt_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms, int step_ms);

/*
 * A dependency from outside the project (a Debian anchor package, a writable
 * extension directory) is missing. In CI (PGQD_TEST_REQUIRE_PG set) the test fails
 * naming it; elsewhere a "# SKIP" note goes to stderr and true is returned so the
 * test can return. Use as: if (pgt_missing(cond, "why")) return;
 */
bool pgt_missing(bool missing, const char *what);

/* Path of a built program passed by meson in the environment variable `env`. */
const char *pgt_env_path(const char *env);

#endif
