/*
 * Helpers for the pgq_node tests; see nodetest.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nodetest.h"

const char *nodet_built_sql(const char *base)
{
	static char path[4096];
	const char *all = getenv("PGQD_TEST_SQL");
	size_t blen = strlen(base);
	ck_assert_ptr_nonnull(all);
	for (const char *p = all; *p;) {
		const char *end = strchr(p, ':');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len >= blen && strncmp(p + len - blen, base, blen) == 0 &&
		    (len == blen || p[len - blen - 1] == '/')) {
			snprintf(path, sizeof(path), "%.*s", (int)len, p);
			return path;
		}
		p += len + (end ? 1 : 0);
	}
	ck_abort_msg("%s is not in PGQD_TEST_SQL", base);
	return NULL;
}

char *nodet_answer(PGconn *conn, const char *sql)
{
	PGresult *r = PQexec(conn, sql);
	char *out;
	if (PQresultStatus(r) == PGRES_TUPLES_OK) {
		out = sqlt_format_rows(r);
	} else if (PQresultStatus(r) == PGRES_COMMAND_OK) {
		out = strdup("OK");
	} else {
		const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
		size_t n = strlen(msg ? msg : "?") + 8;
		out = malloc(n);
		snprintf(out, n, "ERROR: %s", msg ? msg : "?");
	}
	PQclear(r);
	return out;
}

PGconn *nodet_debian_db(int with_debian_node)
{
	char path[4096];
	PGconn *c;
	snprintf(path, sizeof(path), "%s/pgq.control", pgt_extension_dir());
	if (pgt_missing(access(path, R_OK) != 0,
			"Debian's postgresql-15-pgq3 (scripts/packages.txt)"))
		return NULL;
	snprintf(path, sizeof(path), "%s/pgq_node.control", pgt_extension_dir());
	if (with_debian_node &&
	    pgt_missing(access(path, R_OK) != 0,
			"Debian's postgresql-15-pgq-node (scripts/packages.txt)"))
		return NULL;
	c = pgt_connect(pgt_db_new_empty());
	pgt_exec(c, "set client_min_messages = warning");
	pgt_exec(c, "create extension pgq");
	if (with_debian_node)
		pgt_exec(c, "create extension pgq_node");
	return c;
}

void nodet_exec_file(PGconn *conn, const char *path)
{
	FILE *f = fopen(path, "r");
	char *text;
	long n;
	ck_assert_msg(f != NULL, "cannot read %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	text = malloc((size_t)n + 1);
	ck_assert_int_eq(fread(text, 1, (size_t)n, f), (size_t)n);
	text[n] = '\0';
	fclose(f);
	pgt_exec(conn, text);
	free(text);
}
