/*
 * Helpers shared by the `node` commands (cmd_node*.c): connections to other
 * members, the pgq_node schema check, calls answering (ret_code, ret_note),
 * progress lines, and connect strings safe to print.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "pgqctl.h"

int ctl_node_has_password(const char *cs)
{
	PQconninfoOption *o = PQconninfoParse(cs, NULL);
	int has = 0;

	if (!o)
		return -1;
	for (PQconninfoOption *p = o; p->keyword; p++)
		if (strcmp(p->keyword, "password") == 0 && p->val && *p->val)
			has = 1;
	PQconninfoFree(o);
	return has;
}

CtlDb *ctl_node_open(CtlCtx *ctx, const char *role, const char *cs)
{
	PQconninfoOption *o = PQconninfoParse(cs, NULL);
	const char *db = "?";
	char label[300];
	CtlTarget t;

	for (PQconninfoOption *p = o; p && p->keyword; p++)
		if (strcmp(p->keyword, "dbname") == 0 && p->val && *p->val)
			db = p->val;
	snprintf(label, sizeof(label), "%s %s", role, db);
	if (o)
		PQconninfoFree(o);
	t = (CtlTarget){.label = label, .conninfo = (char *)cs};
	return ctl_db_open(ctx, &t);
}

bool ctl_node_has_schema(CtlDb *db, const char *what)
{
	PGresult *r =
		ctl_db_exec(db, "select to_regproc('pgq_node.get_node_info') is not null", 0, NULL);
	bool has;

	if (!r) {
		ctl_db_fail(db, what);
		return false;
	}
	has = ctl_val(r, 0, 0) && ctl_val(r, 0, 0)[0] == 't';
	PQclear(r);
	if (!has)
		ctl_err("%s: %s: no pgq_node schema in this database (install pgq_node_ev.sql)",
			ctl_db_label(db), what);
	return has;
}

PGresult *ctl_node_info(CtlDb *db, const char *queue, const char *what)
{
	const char *p[1] = {queue};
	PGresult *r;

	if (!ctl_node_has_schema(db, what))
		return NULL;
	r = ctl_db_exec(db, "select * from pgq_node.get_node_info($1)", 1, p);
	if (!r)
		ctl_db_fail(db, what);
	return r;
}

bool ctl_node_call(CtlDb *db, const char *what, const char *sql, int n, const char *const *p,
		   PGresult **out)
{
	PGresult *r = ctl_db_exec(db, sql, n, p);
	int code;

	if (!r) {
		ctl_db_fail(db, what);
		return false;
	}
	code = ctl_val(r, 0, 0) ? atoi(ctl_val(r, 0, 0)) : 0;
	if (code >= 300) {
		ctl_err("%s: %s: %s (code %d)", ctl_db_label(db), what,
			ctl_val(r, 0, 1) ? ctl_val(r, 0, 1) : "failed", code);
		PQclear(r);
		return false;
	}
	if (out)
		*out = r;
	else
		PQclear(r);
	return true;
}

bool ctl_node_exec_ok(CtlDb *db, const char *what, const char *sql)
{
	PGresult *r = ctl_db_exec_simple(db, sql);

	if (!r) {
		ctl_db_fail(db, what);
		return false;
	}
	PQclear(r);
	return true;
}

void ctl_node_say(CtlCtx *ctx, CtlDb *db, const char *fmt, ...)
{
	va_list ap;

	if (ctx->quiet)
		return;
	printf("%s: ", ctl_db_label(db));
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

const char *ctl_node_shown_location(const char *loc)
{
	if (!loc)
		return NULL;
	return ctl_node_has_password(loc) != 0 ? "(hidden: holds a password)" : loc;
}
