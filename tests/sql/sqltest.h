/*
 * Small helpers for the pgq SQL tests, on top of tests/support/pgtest.h.
 */
#ifndef PGQEV_TESTS_SQLTEST_H
#define PGQEV_TESTS_SQLTEST_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "pgtest.h"

/* Assert that `sql` fails with exactly `msg` as primary message. */
#define sqlt_err(conn, sql, msg)                                                                \
	do {                                                                                    \
		char *e_ = pgt_error((conn), (sql));                                            \
		ck_assert_msg(e_ &&strcmp(e_, (msg)) == 0, "%s: got error \"%s\", want \"%s\"", \
			      (sql), e_ ? e_ : "(none)", (msg));                                \
		free(e_);                                                                       \
	} while (0)

/* Assert that the first value of `sql` is the string `want` (NULL for SQL NULL). */
#define sqlt_eq(conn, sql, want)                                                               \
	do {                                                                                   \
		char *v_ = pgt_value((conn), (sql));                                           \
		const char *w_ = (want);                                                       \
		ck_assert_msg((v_ == NULL && w_ == NULL) || (v_ && w_ && strcmp(v_, w_) == 0), \
			      "%s: got \"%s\", want \"%s\"", (sql), v_ ? v_ : "(null)",        \
			      w_ ? w_ : "(null)");                                             \
		free(v_);                                                                      \
	} while (0)

/* Number of rows `sql` returns. */
int sqlt_ntuples(PGconn *conn, const char *sql);

/* Connect to dbname as `user` (who must be able to log in without a password). */
PGconn *sqlt_connect_as(const char *dbname, const char *user);

/* Run a query and return all rows as "v1|v2\n..." (NULL as "~"), malloc'd. */
char *sqlt_rows(PGconn *conn, const char *sql);
/* The same formatting for a result already at hand. */
char *sqlt_format_rows(const PGresult *r);

/* Run psql -f file on dbname as user; returns psql's exit status. */
int sqlt_psql_file(const char *dbname, const char *user, const char *file);

/* The plain install script built from sql/ (first entry of PGQD_TEST_SQL). */
const char *sqlt_install_script(void);

/* Count NOTIFYs on `channel` that arrived on conn; appends their payloads joined by ','. */
int sqlt_notifies(PGconn *conn, const char *channel, char *payloads, size_t len);
/* Collect notifications until `want` arrived (10 s at most), then a little longer to
 * catch extras; returns how many arrived. */
int sqlt_wait_notifies(PGconn *conn, const char *channel, int want, char *payloads, size_t len);

#endif
