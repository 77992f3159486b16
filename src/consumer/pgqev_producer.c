/*
 * Producer and admin helpers: blocking libpq calls on the caller's PGconn, in
 * the caller's transaction when one is open. The bulk path COPYs text rows into
 * pgq.current_event_table(queue), whose name is valid only inside the current
 * transaction, so a bulk always runs inside one (ours if the caller has none).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgqev_int.h"

#define BULK_BUF 65536

struct PgqevBulk {
	PGconn *conn;
	bool own_tx;
	char now[64]; /* ev_time: now() of the transaction, as insert_event uses */
	uint64_t count;
	size_t len;
	char buf[BULK_BUF];
};

/* Run one statement; 0 or -EIO (PQerrorMessage(conn) tells why). */
static int exec_params(PGconn *conn, const char *sql, int n, const char *const *p, PGresult **out)
{
	PGresult *res = PQexecParams(conn, sql, n, NULL, p, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		PQclear(res);
		return res ? -EIO : -ENOMEM;
	}
	if (out)
		*out = res;
	else
		PQclear(res);
	return 0;
}

int pgqev_insert_event(PGconn *conn, const char *queue, const char *type, const char *data,
		       const char *const *extra, int64_t *id_out)
{
	if (!conn || !queue)
		return -EINVAL;
	const char *p[7] = {queue, type, data, NULL, NULL, NULL, NULL};
	if (extra)
		for (int i = 0; i < 4; i++)
			p[3 + i] = extra[i];
	PGresult *res = NULL;
	int rc = exec_params(conn, "select pgq.insert_event($1, $2, $3, $4, $5, $6, $7)", 7, p,
			     &res);
	if (rc < 0)
		return rc;
	if (id_out)
		*id_out = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return 0;
}

/* ---- bulk COPY ---- */

static int bulk_flush(PgqevBulk *b)
{
	if (b->len == 0)
		return 0;
	if (PQputCopyData(b->conn, b->buf, (int)b->len) != 1)
		return -EIO;
	b->len = 0;
	return 0;
}

/* Append one COPY text field (escaped), or \N for NULL. */
static int put_field(PgqevBulk *b, const char *s, char term)
{
	if (!s) {
		if (b->len + 3 > BULK_BUF && bulk_flush(b) < 0)
			return -EIO;
		b->buf[b->len++] = '\\';
		b->buf[b->len++] = 'N';
		b->buf[b->len++] = term;
		return 0;
	}
	for (const char *p = s;; p++) {
		if (b->len + 3 > BULK_BUF && bulk_flush(b) < 0)
			return -EIO;
		char ch = *p;
		if (ch == '\0')
			break;
		switch (ch) {
		case '\\':
			b->buf[b->len++] = '\\';
			b->buf[b->len++] = '\\';
			break;
		case '\t':
			b->buf[b->len++] = '\\';
			b->buf[b->len++] = 't';
			break;
		case '\n':
			b->buf[b->len++] = '\\';
			b->buf[b->len++] = 'n';
			break;
		case '\r':
			b->buf[b->len++] = '\\';
			b->buf[b->len++] = 'r';
			break;
		default:
			b->buf[b->len++] = ch;
		}
	}
	b->buf[b->len++] = term;
	return 0;
}

PgqevBulk *pgqev_bulk_begin(PGconn *conn, const char *queue, int *err)
{
	int dummy;
	if (!err)
		err = &dummy;
	*err = -EINVAL;
	if (!conn || !queue)
		return NULL;
	PgqevBulk *b = malloc(sizeof(*b));
	if (!b) {
		*err = -ENOMEM;
		return NULL;
	}
	b->conn = conn;
	b->count = 0;
	b->len = 0;
	b->own_tx = PQtransactionStatus(conn) == PQTRANS_IDLE;
	PGresult *res = NULL;
	char *sql = NULL;
	int rc = 0;
	if (b->own_tx)
		rc = exec_params(conn, "begin", 0, NULL, NULL);
	const char *p[1] = {queue};
	/* The transaction's id before the table's name (our current_event_table takes
	   it itself; PgQ 3.5's does not): a rotation that commits between the two would
	   otherwise leave the rows in a table no later batch reads (sql/pgq/produce.sql,
	   "Writers and rotation"). The function's own query sees a newer snapshot. */
	if (rc == 0)
		rc = exec_params(
			conn,
			"select pg_catalog.txid_current(), pgq.current_event_table($1), now()", 1,
			p, &res);
	if (rc == 0) {
		/* the name is pgq-generated (schema.table), already a valid identifier */
		sql = pgqev_sprintf("copy %s (ev_time, ev_type, ev_data, ev_extra1, ev_extra2,"
				    " ev_extra3, ev_extra4) from stdin",
				    PQgetvalue(res, 0, 1));
		snprintf(b->now, sizeof(b->now), "%s", PQgetvalue(res, 0, 2));
		PQclear(res);
		if (!sql)
			rc = -ENOMEM;
	}
	if (rc == 0) {
		res = PQexec(conn, sql);
		if (PQresultStatus(res) != PGRES_COPY_IN)
			rc = -EIO;
		PQclear(res);
	}
	free(sql);
	if (rc < 0) {
		if (b->own_tx)
			PQclear(PQexec(conn, "rollback"));
		free(b);
		*err = rc;
		return NULL;
	}
	*err = 0;
	return b;
}

int pgqev_bulk_add(PgqevBulk *b, const char *type, const char *data, const char *const *extra)
{
	const char *x[4] = {NULL, NULL, NULL, NULL};
	if (extra)
		memcpy(x, extra, sizeof(x));
	if (put_field(b, b->now, '\t') < 0 || put_field(b, type, '\t') < 0 ||
	    put_field(b, data, '\t') < 0 || put_field(b, x[0], '\t') < 0 ||
	    put_field(b, x[1], '\t') < 0 || put_field(b, x[2], '\t') < 0 ||
	    put_field(b, x[3], '\n') < 0)
		return -EIO;
	b->count++;
	return 0;
}

int pgqev_bulk_end(PgqevBulk *b, uint64_t *count_out)
{
	PGconn *conn = b->conn;
	int rc = bulk_flush(b);
	if (PQputCopyEnd(conn, rc < 0 ? "aborted" : NULL) != 1)
		rc = -EIO;
	PGresult *res;
	while ((res = PQgetResult(conn)) != NULL) {
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			rc = -EIO;
		PQclear(res);
	}
	if (b->own_tx) {
		if (rc == 0)
			rc = exec_params(conn, "commit", 0, NULL, NULL);
		else
			PQclear(PQexec(conn, "rollback"));
	}
	if (rc == 0 && count_out)
		*count_out = b->count;
	free(b);
	return rc;
}

void pgqev_bulk_abort(PgqevBulk *b)
{
	if (!b)
		return;
	PGconn *conn = b->conn;
	(void)PQputCopyEnd(conn, "aborted by pgqev_bulk_abort");
	PGresult *res;
	while ((res = PQgetResult(conn)) != NULL)
		PQclear(res);
	if (b->own_tx)
		PQclear(PQexec(conn, "rollback"));
	free(b);
}

/* ---- subscriptions ---- */

int pgqev_register(PGconn *conn, const char *queue, const char *consumer, const char *subconsumer,
		   int64_t tick, bool *new_out)
{
	if (!conn || !queue || !consumer)
		return -EINVAL;
	char t[32];
	snprintf(t, sizeof(t), "%" PRId64, tick);
	PGresult *res = NULL;
	int rc;
	if (subconsumer) {
		const char *p[3] = {queue, consumer, subconsumer};
		rc = exec_params(conn, "select pgq_coop.register_subconsumer($1, $2, $3)", 3, p,
				 &res);
	} else if (tick > 0) {
		const char *p[3] = {queue, consumer, t};
		rc = exec_params(conn, "select pgq.register_consumer_at($1, $2, $3)", 3, p, &res);
	} else {
		const char *p[2] = {queue, consumer};
		rc = exec_params(conn, "select pgq.register_consumer($1, $2)", 2, p, &res);
	}
	if (rc < 0)
		return rc;
	if (new_out)
		*new_out = strcmp(PQgetvalue(res, 0, 0), "1") == 0;
	PQclear(res);
	return 0;
}

int pgqev_unregister(PGconn *conn, const char *queue, const char *consumer, const char *subconsumer,
		     bool drop_batch)
{
	if (!conn || !queue || !consumer)
		return -EINVAL;
	if (subconsumer) {
		const char *p[4] = {queue, consumer, subconsumer, drop_batch ? "1" : "0"};
		return exec_params(conn,
				   "select pgq_coop.unregister_subconsumer($1, $2, $3, $4::int4)",
				   4, p, NULL);
	}
	const char *p[2] = {queue, consumer};
	return exec_params(conn, "select pgq.unregister_consumer($1, $2)", 2, p, NULL);
}
