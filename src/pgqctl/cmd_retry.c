/*
 * retry list | now | drop: the retry queue (pgq.retry_queue), which needs the
 * pgq_admin role. Changes run in one transaction: an unknown event id changes
 * nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "pgqctl.h"

static int fail_close(CtlDb *db, const char *what)
{
	int rc = ctl_db_fail(db, what);

	ctl_db_close(db);
	return rc;
}

static const char sql_list[] =
	"select q.queue_name,"
	" (select c.co_name from pgq.subscription s join pgq.consumer c on c.co_id = s.sub_consumer"
	"   where s.sub_id = r.ev_owner and s.sub_queue = r.ev_queue"
	"   order by length(c.co_name) limit 1),"
	" r.ev_id, r.ev_retry_after, r.ev_retry, r.ev_type, r.ev_data"
	" from pgq.retry_queue r join pgq.queue q on q.queue_id = r.ev_queue"
	" where $1::text is null or q.queue_name = $1"
	" order by r.ev_retry_after, r.ev_id limit $2::bigint";

int cmd_retry_list(CtlCtx *ctx, int argc, char **argv)
{
	const char *limit_s = NULL;
	const CtlOpt opts[] = {{"limit", true, &limit_s}, {NULL}};
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	long long limit = 100;
	char lim[32];
	CtlDb *db;
	PGresult *r;
	const char *p[2];

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos > 1)
		return ctl_usage("retry list", "takes at most one QUEUE");
	if (limit_s && !ctl_parse_i64("--limit", limit_s, 1, 10000000, &limit))
		return CTL_EXIT_USAGE;
	snprintf(lim, sizeof(lim), "%lld", limit);
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!ctl_db_need_pgq(db)) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	p[0] = npos ? pos[0] : NULL;
	p[1] = lim;
	r = ctl_db_exec(db, sql_list, 2, p);
	if (!r)
		return fail_close(db, "retry list");
	if (ctx->json) {
		static const char *const keys[] = {"queue",    "consumer", "ev_id",  "retry_after",
						   "ev_retry", "ev_type",  "ev_data"};
		CtlJson j;
		ctl_json_init(&j, stdout);
		ctl_json_arr_begin(&j, NULL);
		for (int i = 0; i < PQntuples(r); i++) {
			ctl_json_obj_begin(&j, NULL);
			for (int c = 0; c < 7; c++)
				ctl_json_cell(&j, keys[c], r, i, c);
			ctl_json_obj_end(&j);
		}
		ctl_json_arr_end(&j);
		ctl_json_end(&j);
	} else {
		const char *h[7] = {"queue",   "consumer", "event", "retry after",
				    "retries", "type",     "data"};
		CtlTable *t = ctl_table_new(7, h);
		for (int i = 0; i < PQntuples(r); i++) {
			const char *cells[7];
			for (int c = 0; c < 7; c++)
				cells[c] = PQgetisnull(r, i, c) ? "-" : PQgetvalue(r, i, c);
			ctl_table_add(t, cells);
		}
		ctl_table_print(t, stdout, ctx->color);
		ctl_table_free(t);
	}
	PQclear(r);
	ctl_db_close(db);
	return CTL_EXIT_OK;
}

/* "{1,2,3}" from validated ids, or NULL (message printed). */
static char *id_array(char **ids, int n)
{
	size_t cap = (size_t)n * 21 + 3, len = 1;
	char *s = malloc(cap);

	s[0] = '{';
	for (int i = 0; i < n; i++) {
		long long v;
		if (!ctl_parse_i64("EVENT_ID", ids[i], 1, INT64_MAX, &v)) {
			free(s);
			return NULL;
		}
		len += (size_t)snprintf(s + len, cap - len, "%s%lld", i ? "," : "", v);
	}
	s[len++] = '}';
	s[len] = '\0';
	return s;
}

/* Shared by now/drop: check the queue and that every id is in its retry queue. */
static int change(CtlCtx *ctx, int argc, char **argv, bool drop)
{
	bool every = false, yes = false;
	const CtlOpt opts[] = {
		{"all-events", false, &every},
		{"yes", false, &yes},
		{NULL},
	};
	const char *cmd = drop ? "retry drop" : "retry now";
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	PGresult *r;
	char *ids = NULL, what[300];
	const char *p[2];

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos < 1)
		return ctl_usage(cmd, "needs QUEUE");
	if (drop && !yes)
		return ctl_usage(cmd, "deletes events for good: confirm with --yes");
	if (drop && npos == 1 && !every)
		return ctl_usage(cmd, "name EVENT_IDs, or --all-events");
	if (every && npos > 1)
		return ctl_usage(cmd, "--all-events and EVENT_IDs exclude each other");
	if (npos > 1 && !(ids = id_array(pos + 1, npos - 1)))
		return CTL_EXIT_USAGE;
	snprintf(what, sizeof(what), "%s on queue %s", cmd, ctl_qq(pos[0]));
	if ((rc = ctl_open_single(ctx, &db))) {
		free(ids);
		return rc;
	}
	if (!ctl_db_need_pgq(db)) {
		free(ids);
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	p[0] = pos[0];
	p[1] = ids;
	r = ctl_db_exec(db, "select 1 from pgq.queue where queue_name = $1", 1, p);
	if (!r || PQntuples(r) == 0) {
		free(ids);
		if (!r)
			return fail_close(db, what);
		PQclear(r);
		ctl_err("%s: %s: no such queue", ctl_db_label(db), what);
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	PQclear(r);
	if (ids) {
		r = ctl_db_exec(
			db,
			"select string_agg(i::text, ', ') from unnest($2::bigint[]) i"
			" where not exists (select 1 from pgq.retry_queue r join pgq.queue q"
			" on q.queue_id = r.ev_queue where q.queue_name = $1 and r.ev_id = i)",
			2, p);
		if (!r) {
			free(ids);
			return fail_close(db, what);
		}
		if (ctl_val(r, 0, 0)) {
			ctl_err("%s: %s: not in the retry queue: %s", ctl_db_label(db), what,
				ctl_val(r, 0, 0));
			PQclear(r);
			free(ids);
			ctl_db_close(db);
			return CTL_EXIT_ERROR;
		}
		PQclear(r);
	}
	PQclear(ctl_db_exec(db, "begin", 0, NULL));
	if (drop)
		r = ctl_db_exec(
			db,
			"with d as (delete from pgq.retry_queue r using pgq.queue q"
			" where q.queue_id = r.ev_queue and q.queue_name = $1"
			" and ($2::bigint[] is null or r.ev_id = any($2::bigint[])) returning 1)"
			" select count(*) from d",
			2, p);
	else
		r = ctl_db_exec(
			db,
			"with u as (update pgq.retry_queue r set ev_retry_after = now()"
			" from pgq.queue q where q.queue_id = r.ev_queue and q.queue_name = $1"
			" and ($2::bigint[] is null or r.ev_id = any($2::bigint[])) returning 1)"
			" select count(*) from u",
			2, p);
	free(ids);
	if (!r) {
		rc = ctl_db_fail(db, what);
		PQclear(ctl_db_exec(db, "rollback", 0, NULL));
		ctl_db_close(db);
		return rc;
	}
	if (!ctx->quiet)
		printf("%s: %s %s retry events of %s\n", ctl_db_label(db),
		       drop ? "dropped" : "made due", ctl_val(r, 0, 0), ctl_q(pos[0]));
	if (!drop) {
		/* move them back into the queue now instead of at the daemon's next round */
		do {
			PQclear(r);
			r = ctl_db_exec(db, "select pgq.maint_retry_events()", 0, NULL);
		} while (r && ctl_val(r, 0, 0) && atoll(ctl_val(r, 0, 0)) > 0);
		if (!r) {
			rc = ctl_db_fail(db, what);
			PQclear(ctl_db_exec(db, "rollback", 0, NULL));
			ctl_db_close(db);
			return rc;
		}
	}
	PQclear(r);
	r = ctl_db_exec(db, "commit", 0, NULL);
	if (!r)
		return fail_close(db, what);
	PQclear(r);
	ctl_db_close(db);
	return CTL_EXIT_OK;
}

int cmd_retry_now(CtlCtx *ctx, int argc, char **argv)
{
	return change(ctx, argc, argv, false);
}

int cmd_retry_drop(CtlCtx *ctx, int argc, char **argv)
{
	return change(ctx, argc, argv, true);
}
