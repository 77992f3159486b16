/*
 * The public handles on two pieces of the core's connection layer, which is
 * itself internal: PgqevTarget, the exactly-once target connection with just
 * the operations a batch handler may use, and PgqevLimiter, the connect
 * limiter shared by a loop's consumers. Each is the core object under its
 * public name (see pgqev_int.h), so the library hands it out without a copy.
 */
#include <errno.h>
#include <stdlib.h>

#include "pgqev_int.h"

/* ---- the exactly-once target ---- */

typedef struct TargetCall {
	PgqevTargetFn fn;
	void *arg;
} TargetCall;

static void target_done(PqevConn *conn, const PqevReply *r, void *arg)
{
	TargetCall call = *(TargetCall *)arg;
	free(arg);
	call.fn(pgqev_target_of(conn), r->result, r->status == PQEV_OK ? NULL : r->error, call.arg);
}

int pgqev_target_query(PgqevTarget *t, const char *sql, int nparams, const char *const *params,
		       PgqevTargetFn on_done, void *arg)
{
	if (!t || !sql || !on_done || nparams < 0)
		return -EINVAL;
	TargetCall *call = malloc(sizeof(*call));
	if (!call)
		return -ENOMEM;
	call->fn = on_done;
	call->arg = arg;
	int rc = pqev_conn_query(pgqev_target_conn(t), sql, nparams, params, target_done, call);
	if (rc < 0)
		free(call);
	return rc;
}

PGconn *pgqev_target_pgconn(const PgqevTarget *t)
{
	return t ? pqev_conn_pgconn(pgqev_target_conn((PgqevTarget *)t)) : NULL;
}

const char *pgqev_target_label(const PgqevTarget *t)
{
	return t ? pqev_conn_name(pgqev_target_conn((PgqevTarget *)t)) : "";
}

/* ---- the connect limiter ---- */

PgqevLimiter *pgqev_limiter_new(struct event_base *base, unsigned max_connecting)
{
	return base ? pgqev_limiter_of(pqev_connlimit_new(base, max_connecting)) : NULL;
}

int pgqev_limiter_free(PgqevLimiter *lim)
{
	return pqev_connlimit_free(pgqev_limiter_core(lim));
}

void pgqev_limiter_set_max(PgqevLimiter *lim, unsigned max_connecting)
{
	pqev_connlimit_set_max(pgqev_limiter_core(lim), max_connecting);
}

unsigned pgqev_limiter_active(const PgqevLimiter *lim)
{
	return pqev_connlimit_active(pgqev_limiter_core((PgqevLimiter *)lim));
}

unsigned pgqev_limiter_waiting(const PgqevLimiter *lim)
{
	return pqev_connlimit_waiting(pgqev_limiter_core((PgqevLimiter *)lim));
}

unsigned pgqev_limiter_peak(const PgqevLimiter *lim)
{
	return pqev_connlimit_peak(pgqev_limiter_core((PgqevLimiter *)lim));
}
