/*
 * Helpers for the pgq_node tests (tests/sql_node), on top of tests/sql/sqltest.h.
 */
#ifndef PGQEV_TESTS_NODETEST_H
#define PGQEV_TESTS_NODETEST_H

#include <libpq-fe.h>

#include "sqltest.h"

/* Path of a built SQL file listed in PGQD_TEST_SQL by its base name (static buffer). */
const char *nodet_built_sql(const char *base);

/* The result of `sql` as "v1|v2\n..." (NULL as "~"), or "ERROR: <primary message>"
 * when it fails; malloc'd. Never aborts, so callers can compare failures too. */
char *nodet_answer(PGconn *conn, const char *sql);

/* A database from template0 with Debian's PgQ 3.5 C extension (create extension
 * pgq), and with Debian's pgq_node too when `with_debian_node`. NULL (after
 * pgt_missing) when those packages are not installed. */
PGconn *nodet_debian_db(int with_debian_node);

/* Run the whole file at `path` on conn (simple query protocol); aborts on error. */
void nodet_exec_file(PGconn *conn, const char *path);

#endif
