/*
 * Maintenance and retry rounds, run on the database's one connection between
 * ticks, one statement at a time.
 *
 * Maintenance (modern PgQ): `select func_name, func_arg from pgq.maint_operations()`
 * gives the list; each op is its own statement and so its own transaction (step1
 * and step2 of a rotation must commit separately). A function op is repeated
 * while its first column is a non-zero integer. A vacuum op runs with the simple
 * protocol outside any transaction and counts as done on COMMAND_OK. An op that
 * fails is logged and skipped: later ops still run (pgqd aborts the round).
 *
 * Without pgq.maint_operations() (PgQ before 3.0.0.x): step1 per queue from
 * pgq.get_queue_info(), step2, then a vacuum of each table named by
 * pgq.maint_tables_to_vacuum(), quoted.
 *
 * Retry: `select * from pgq.maint_retry_events()` until it returns 0.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pgqd-ev/pqev_clock.h>
#include <pgqd-ev/pqev_log.h>

#include "ticker.h"

/* A marker op of the legacy path: ask pgq.maint_tables_to_vacuum() and add vacuums. */
#define OP_TABLES_TO_VACUUM "\001tables_to_vacuum"
/* A runaway guard: no op is repeated more often than this in one round. */
#define MAX_REPEAT 100000
/* The same for retry calls in one round (each moves up to 10 events). */
#define MAX_RETRY_CALLS 100000

char *maint_quote_fqname(const char *name)
{
	size_t n = 0;
	char *out = malloc(2 * strlen(name) + 8);

	if (!out)
		return NULL;
	out[n++] = '"';
	for (const char *p = name; *p; p++) {
		if (*p == '.') {
			out[n++] = '"';
			out[n++] = '.';
			out[n++] = '"';
		} else {
			if (*p == '"')
				out[n++] = '"';
			out[n++] = *p;
		}
	}
	out[n++] = '"';
	out[n] = '\0';
	return out;
}

void maint_reset(Db *db)
{
	for (size_t i = 0; i < db->nops; i++) {
		free(db->ops[i].func);
		free(db->ops[i].arg);
	}
	free(db->ops);
	db->ops = NULL;
	db->nops = db->op_cap = db->op_idx = 0;
	db->op_repeat = 0;
	db->maint_active = false;
}

static bool add_op(Db *db, const char *func, const char *arg)
{
	MaintOp *op;

	if (db->nops == db->op_cap) {
		size_t cap = db->op_cap ? db->op_cap * 2 : 8;
		MaintOp *n = realloc(db->ops, cap * sizeof(*n));

		if (!n)
			return false;
		db->ops = n;
		db->op_cap = cap;
	}
	op = &db->ops[db->nops];
	op->func = strdup(func);
	op->arg = arg ? strdup(arg) : NULL;
	if (!op->func || (arg && !op->arg)) {
		free(op->func);
		free(op->arg);
		return false;
	}
	db->nops++;
	return true;
}

static bool is_vacuum(const char *func)
{
	return strcasecmp(func, "vacuum") == 0 || strcasecmp(func, "vacuum analyze") == 0;
}

static void round_done(Db *db)
{
	Ticker *t = db->t;

	pqev_log_debug(db->log, "maintenance done, %zu ops", db->nops);
	maint_reset(db);
	db->job = JOB_NONE;
	t->stats.maint++;
	t->stats.t_maint++;
	db->n_maint++;
	db->next_maint = pqev_clock_now() + db->cl->maint_period;
	db_kick(db);
}

static void send_maint(Db *db, const char *sql, int nparams, const char *const *params,
		       unsigned flags, PqevDoneFn fn)
{
	PqevQuery q = {
		.sql = sql,
		.nparams = nparams,
		.params = params,
		.flags = flags,
		.on_done = fn,
		.arg = db,
	};

	db->job = JOB_MAINT;
	if (pqev_conn_send(db->conn, &q, NULL) < 0) {
		pqev_log_debug(db->log, "cannot send: %s", pqev_conn_error(db->conn));
		db_job_aborted(db);
	}
}

static void next_op(Db *db);

/* Common handling of a failed maintenance statement: true if the round goes on. */
static bool maint_failed(Db *db, const char *what, const PqevReply *r)
{
	if (r->status == PQEV_SQL_ERROR) {
		db_note_sql_error(db, what, r);
		return true;
	}
	db_request_failed(db, what, r);
	return false;
}

static void on_op(PqevConn *c, const PqevReply *r, void *arg)
{
	Db *db = arg;
	MaintOp *op;
	bool again = false;

	db->job = JOB_NONE;
	if (db->dead || !db->maint_active || db->op_idx >= db->nops)
		return;
	op = &db->ops[db->op_idx];
	if (r->status != PQEV_OK) {
		if (!maint_failed(db, op->func, r))
			return;
	} else if (!is_vacuum(op->func) && r->result && PQntuples(r->result) > 0 &&
		   PQnfields(r->result) > 0 && !PQgetisnull(r->result, 0, 0)) {
		char *end;
		const char *v = PQgetvalue(r->result, 0, 0);
		long long n = strtoll(v, &end, 10);

		again = end != v && *end == '\0' && n != 0;
	}
	if (again && ++db->op_repeat < MAX_REPEAT) {
		pqev_log_noise(db->log, "maint %s again", op->func);
	} else {
		db->op_idx++;
		db->op_repeat = 0;
	}
	db_kick(db);
}

static void on_tables_to_vacuum(PqevConn *c, const PqevReply *r, void *arg)
{
	Db *db = arg;

	db->job = JOB_NONE;
	if (db->dead || !db->maint_active)
		return;
	if (r->status != PQEV_OK) {
		if (!maint_failed(db, "pgq.maint_tables_to_vacuum()", r))
			return;
	} else {
		for (int i = 0; i < PQntuples(r->result); i++) {
			if (!PQgetisnull(r->result, i, 0) &&
			    !add_op(db, "vacuum", PQgetvalue(r->result, i, 0))) {
				pqev_log_error(db->log, "out of memory");
				break;
			}
		}
	}
	db->op_idx++;
	db_kick(db);
}

static void next_op(Db *db)
{
	MaintOp *op;
	char *q, *sql;

	if (db->op_idx >= db->nops) {
		round_done(db);
		return;
	}
	op = &db->ops[db->op_idx];
	if (strcmp(op->func, OP_TABLES_TO_VACUUM) == 0) {
		send_maint(db, "select * from pgq.maint_tables_to_vacuum()", 0, NULL, 0,
			   on_tables_to_vacuum);
		return;
	}
	if (is_vacuum(op->func)) {
		if (!op->arg || !*op->arg) {
			pqev_log_warning(db->log, "maint op %s without a table, skipped", op->func);
			db->op_idx++;
			db_kick(db);
			return;
		}
		q = maint_quote_fqname(op->arg);
		sql = q ? malloc(strlen(q) + 32) : NULL;
		if (!sql) {
			free(q);
			pqev_log_error(db->log, "out of memory");
			db_job_aborted(db);
			return;
		}
		sprintf(sql, "%s %s",
			strcasecmp(op->func, "vacuum") == 0 ? "vacuum" : "vacuum analyze", q);
		pqev_log_debug(db->log, "maint: %s", sql);
		/* simple protocol: VACUUM refuses to run inside a pipeline's transaction */
		send_maint(db, sql, 0, NULL, PQEV_Q_SIMPLE, on_op);
		free(q);
		free(sql);
		return;
	}
	q = maint_quote_fqname(op->func);
	sql = q ? malloc(strlen(q) + 32) : NULL;
	if (!sql) {
		free(q);
		pqev_log_error(db->log, "out of memory");
		db_job_aborted(db);
		return;
	}
	sprintf(sql, "select %s(%s)", q, op->arg ? "$1" : "");
	pqev_log_debug(db->log, "maint: %s%s%s", sql, op->arg ? " -- $1 = " : "",
		       op->arg ? op->arg : "");
	{
		const char *params[1] = {op->arg};

		send_maint(db, sql, op->arg ? 1 : 0, params, 0, on_op);
	}
	free(q);
	free(sql);
}

static void on_op_list(PqevConn *c, const PqevReply *r, void *arg)
{
	Db *db = arg;

	db->job = JOB_NONE;
	if (db->dead || !db->maint_active)
		return;
	if (r->status != PQEV_OK) {
		if (maint_failed(db, "pgq.maint_operations()", r)) {
			/* nothing to run this round; try again next period */
			round_done(db);
		}
		return;
	}
	for (int i = 0; i < PQntuples(r->result); i++) {
		const char *func = PQgetvalue(r->result, i, 0);
		const char *a = PQgetisnull(r->result, i, 1) ? NULL : PQgetvalue(r->result, i, 1);

		if (PQgetisnull(r->result, i, 0))
			continue;
		if (!add_op(db, func, a)) {
			pqev_log_error(db->log, "out of memory");
			break;
		}
	}
	db_kick(db);
}

static void on_queue_list(PqevConn *c, const PqevReply *r, void *arg)
{
	Db *db = arg;
	bool ok = true;

	db->job = JOB_NONE;
	if (db->dead || !db->maint_active)
		return;
	if (r->status != PQEV_OK) {
		if (maint_failed(db, "pgq.get_queue_info()", r))
			round_done(db);
		return;
	}
	for (int i = 0; i < PQntuples(r->result) && ok; i++)
		ok = add_op(db, "pgq.maint_rotate_tables_step1", PQgetvalue(r->result, i, 0));
	ok = ok && add_op(db, "pgq.maint_rotate_tables_step2", NULL);
	ok = ok && add_op(db, OP_TABLES_TO_VACUUM, NULL);
	if (!ok)
		pqev_log_error(db->log, "out of memory");
	db_kick(db);
}

void maint_step(Db *db)
{
	if (!db->maint_active) {
		db->maint_due = false;
		db->maint_active = true;
		db->op_idx = 0;
		if (db->has_maint_ops)
			send_maint(db, "select func_name, func_arg from pgq.maint_operations()", 0,
				   NULL, 0, on_op_list);
		else
			send_maint(db, "select queue_name from pgq.get_queue_info()", 0, NULL, 0,
				   on_queue_list);
		return;
	}
	next_op(db);
}

/* ---- retry ---- */

static void on_retry(PqevConn *c, const PqevReply *r, void *arg)
{
	Db *db = arg;
	Ticker *t = db->t;
	long long n = 0;

	db_job_done(db);
	if (db->dead || !db->retry_active)
		return;
	if (r->status != PQEV_OK) {
		if (r->status == PQEV_SQL_ERROR)
			db_note_sql_error(db, "pgq.maint_retry_events()", r);
		else
			db_request_failed(db, "pgq.maint_retry_events()", r);
		if (r->status != PQEV_SQL_ERROR)
			return;
	} else if (PQntuples(r->result) > 0 && !PQgetisnull(r->result, 0, 0)) {
		n = strtoll(PQgetvalue(r->result, 0, 0), NULL, 10);
	}
	if (n > 0) {
		t->stats.retry += (uint64_t)n;
		t->stats.t_retry += (uint64_t)n;
		db->n_retry += (uint64_t)n;
	}
	if (n > 0 && ++db->retry_calls < MAX_RETRY_CALLS) {
		db_kick(db);
		return;
	}
	db->retry_active = false;
	db->next_retry = pqev_clock_now() + db->cl->retry_period;
	db_kick(db);
}

void retry_step(Db *db)
{
	if (!db->retry_active) {
		db->retry_due = false;
		db->retry_active = true;
		db->retry_calls = 0;
	}
	db_send_job(db, JOB_RETRY, "select * from pgq.maint_retry_events()", on_retry);
	if (db->job == JOB_NONE)
		db_job_aborted(db);
}
