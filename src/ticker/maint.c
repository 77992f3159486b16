/*
 * What maintenance and retry rounds run: the next statement (maint_plan,
 * retry_plan) and what its answer means (maint_read, retry_read). Running the
 * statements is db.c's and job.c's: on the database's maintenance connection,
 * one statement at a time, never on the tick connection.
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
#include <pgqd-ev/pqev_conn.h>
#include <pgqd-ev/pqev_log.h>

#include "ticker.h"

/* A marker op of the legacy path: ask pgq.maint_tables_to_vacuum() and add vacuums. */
#define OP_TABLES_TO_VACUUM "\001tables_to_vacuum"
/* A runaway guard: no op is repeated more often than this in one round. */
#define MAX_REPEAT 100000
/* The same for retry calls in one round (each moves up to 10 events). */
#define MAX_RETRY_CALLS 100000

/* What the statement maint_plan gave last was (db->maint_last). */
typedef enum MaintStmt {
	STMT_LIST = 0, /* pgq.maint_operations() or, before 3.0, pgq.get_queue_info() */
	STMT_OP,       /* db->ops[db->op_idx] */
	STMT_TABLES,   /* pgq.maint_tables_to_vacuum() for the OP_TABLES_TO_VACUUM marker */
} MaintStmt;

char *maint_quote_fqname(const char *name)
{
	size_t n = 0;
	/* worst case: every byte a '.' (three bytes: `"."`), plus the outer quotes */
	char *out = malloc(3 * strlen(name) + 3);

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
	free(db->maint_sql);
	db->maint_sql = NULL;
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
	t->stats.maint++;
	t->stats.t_maint++;
	db->n_maint++;
	db->next_maint = pqev_clock_now() + db->cl->maint_period;
}

/* Keep sql as the statement of the spec; false (logged) when out of memory. */
static bool set_sql(Db *db, JobSpec *spec, char *sql, const char *what, const char *param,
		    unsigned flags, MaintStmt kind)
{
	free(db->maint_sql);
	db->maint_sql = sql;
	if (!sql) {
		pqev_log_error(db->log, "out of memory");
		return false;
	}
	db->maint_last = kind;
	spec->job = JOB_MAINT;
	spec->what = what;
	spec->sql = sql;
	spec->param = param;
	spec->flags = flags;
	spec->timeout = 0; /* a vacuum of a large table may take long: statement_timeout */
	return true;
}

/* "select <func>($1)" or "vacuum <table>" for one op; NULL when out of memory. */
static char *op_sql(const MaintOp *op)
{
	char *q = maint_quote_fqname(is_vacuum(op->func) ? op->arg : op->func);
	char *sql = q ? malloc(strlen(q) + 32) : NULL;

	if (sql && is_vacuum(op->func))
		sprintf(sql, "%s %s",
			strcasecmp(op->func, "vacuum") == 0 ? "vacuum" : "vacuum analyze", q);
	else if (sql)
		sprintf(sql, "select %s(%s)", q, op->arg ? "$1" : "");
	free(q);
	return sql;
}

/* The round ends when its next statement cannot be planned. */
static bool planned_or_done(Db *db, bool planned)
{
	if (!planned)
		round_done(db);
	return planned;
}

bool maint_plan(Db *db, JobSpec *spec)
{
	MaintOp *op;

	if (!db->maint_active) {
		db->maint_due = false;
		db->maint_active = true;
		db->op_idx = 0;
		if (db->has_maint_ops)
			return planned_or_done(db, set_sql(db, spec,
							   strdup("select func_name, func_arg"
								  " from pgq.maint_operations()"),
							   "pgq.maint_operations()", NULL, 0,
							   STMT_LIST));
		return planned_or_done(
			db, set_sql(db, spec, strdup("select queue_name from pgq.get_queue_info()"),
				    "pgq.get_queue_info()", NULL, 0, STMT_LIST));
	}
	while (db->op_idx < db->nops) {
		op = &db->ops[db->op_idx];
		if (strcmp(op->func, OP_TABLES_TO_VACUUM) == 0)
			return planned_or_done(
				db, set_sql(db, spec,
					    strdup("select * from pgq.maint_tables_to_vacuum()"),
					    "pgq.maint_tables_to_vacuum()", NULL, 0, STMT_TABLES));
		if (is_vacuum(op->func) && (!op->arg || !*op->arg)) {
			pqev_log_warning(db->log, "maint op %s without a table, skipped", op->func);
			db->op_idx++;
			continue;
		}
		/* VACUUM refuses to run inside a pipeline's transaction: simple protocol */
		if (!planned_or_done(db, set_sql(db, spec, op_sql(op), op->func,
						 is_vacuum(op->func) ? NULL : op->arg,
						 is_vacuum(op->func) ? PQEV_Q_SIMPLE : 0, STMT_OP)))
			return false;
		pqev_log_debug(db->log, "maint: %s%s%s", db->maint_sql,
			       spec->param ? " -- $1 = " : "", spec->param ? spec->param : "");
		return true;
	}
	round_done(db);
	return false;
}

static void read_op(Db *db, const PqevReply *r)
{
	MaintOp *op = &db->ops[db->op_idx];
	bool again = false;

	if (r->status != PQEV_OK) {
		db_note_sql_error(db, op->func, r);
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
}

static void read_tables(Db *db, const PqevReply *r)
{
	if (r->status != PQEV_OK) {
		db_note_sql_error(db, "pgq.maint_tables_to_vacuum()", r);
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
}

static void read_list(Db *db, const PqevReply *r)
{
	bool ok = true;

	if (r->status != PQEV_OK) {
		/* nothing to run this round (maint_plan ends it); again next period */
		db_note_sql_error(
			db, db->has_maint_ops ? "pgq.maint_operations()" : "pgq.get_queue_info()",
			r);
		return;
	}
	for (int i = 0; i < PQntuples(r->result) && ok; i++) {
		if (PQgetisnull(r->result, i, 0))
			continue;
		if (db->has_maint_ops)
			ok = add_op(db, PQgetvalue(r->result, i, 0),
				    PQgetisnull(r->result, i, 1) ? NULL
								 : PQgetvalue(r->result, i, 1));
		else
			ok = add_op(db, "pgq.maint_rotate_tables_step1",
				    PQgetvalue(r->result, i, 0));
	}
	if (!db->has_maint_ops) {
		ok = ok && add_op(db, "pgq.maint_rotate_tables_step2", NULL);
		ok = ok && add_op(db, OP_TABLES_TO_VACUUM, NULL);
	}
	if (!ok)
		pqev_log_error(db->log, "out of memory");
}

void maint_read(Db *db, const PqevReply *r)
{
	if (!db->maint_active)
		return;
	if (db->maint_last == STMT_LIST)
		read_list(db, r);
	else if (db->maint_last == STMT_TABLES && db->op_idx < db->nops)
		read_tables(db, r);
	else if (db->op_idx < db->nops)
		read_op(db, r);
}

/* ---- retry ---- */

bool retry_plan(Db *db, JobSpec *spec)
{
	if (!db->retry_active) {
		db->retry_due = false;
		db->retry_active = true;
		db->retry_more = true;
		db->retry_calls = 0;
	}
	if (!db->retry_more) {
		db->retry_active = false;
		db->next_retry = pqev_clock_now() + db->cl->retry_period;
		return false;
	}
	spec->job = JOB_RETRY;
	spec->what = "pgq.maint_retry_events()";
	spec->sql = "select * from pgq.maint_retry_events()";
	spec->param = NULL;
	/* constant SQL without parameters: the simple protocol costs both sides less */
	spec->flags = PQEV_Q_SIMPLE;
	spec->timeout = db->t->cfg->main.query_timeout;
	return true;
}

void retry_read(Db *db, const PqevReply *r)
{
	Ticker *t = db->t;
	long long n = 0;

	if (r->status != PQEV_OK)
		db_note_sql_error(db, "pgq.maint_retry_events()", r);
	else if (PQntuples(r->result) > 0 && !PQgetisnull(r->result, 0, 0))
		n = strtoll(PQgetvalue(r->result, 0, 0), NULL, 10);
	if (n > 0) {
		t->stats.retry += (uint64_t)n;
		t->stats.t_retry += (uint64_t)n;
		db->n_retry += (uint64_t)n;
	}
	db->retry_more = n > 0 && ++db->retry_calls < MAX_RETRY_CALLS;
}
