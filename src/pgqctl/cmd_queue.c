/*
 * Queues: create, drop, config, queues. Changes run in one transaction, so a
 * bad setting in `create q a=1 b=x` leaves no queue behind.
 */
#include <stdlib.h>
#include <string.h>

#include "pgqctl.h"

/* Settings pgq.set_queue_config() accepts (without the queue_ prefix). */
static const char *const settable[] = {
	"ticker_max_count", "ticker_max_lag",  "ticker_idle_period", "ticker_paused",
	"rotation_period",  "external_ticker", "low_latency",        NULL,
};

static bool check_pair(const char *arg, char **key, const char **val)
{
	const char *eq = strchr(arg, '=');
	const char *k;

	if (!eq || eq == arg) {
		ctl_err("\"%s\": expected KEY=VALUE", arg);
		return false;
	}
	*key = strndup(arg, (size_t)(eq - arg));
	*val = eq + 1;
	k = *key;
	if (strncmp(k, "queue_", 6) == 0)
		k += 6;
	for (int i = 0; settable[i]; i++)
		if (strcmp(settable[i], k) == 0) {
			memmove(*key, k, strlen(k) + 1);
			return true;
		}
	ctl_err("unknown queue setting \"%s\" (one of: ticker_max_count, ticker_max_lag, "
		"ticker_idle_period, ticker_paused, rotation_period, external_ticker, "
		"low_latency)",
		*key);
	free(*key);
	*key = NULL;
	return false;
}

static PGresult *q1(CtlDb *db, const char *sql, const char *a)
{
	const char *p[1] = {a};
	return ctl_db_exec(db, sql, 1, p);
}

/* Apply KEY=VALUE pairs inside the caller's transaction. */
static bool apply_pairs(CtlDb *db, const char *queue, int n, char **pairs, const char *what)
{
	for (int i = 0; i < n; i++) {
		char *key;
		const char *val;
		const char *p[3];
		PGresult *r;

		if (!check_pair(pairs[i], &key, &val))
			return false;
		p[0] = queue;
		p[1] = key;
		p[2] = val;
		r = ctl_db_exec(db, "select pgq.set_queue_config($1, $2, $3)", 3, p);
		free(key);
		if (!r) {
			ctl_db_fail(db, what);
			return false;
		}
		PQclear(r);
	}
	return true;
}

static bool queue_exists(CtlDb *db, const char *queue, bool *exists)
{
	PGresult *r = q1(db, "select 1 from pgq.queue where queue_name = $1", queue);

	if (!r)
		return false;
	*exists = PQntuples(r) > 0;
	PQclear(r);
	return true;
}

static void rollback(CtlDb *db)
{
	PQclear(ctl_db_exec(db, "rollback", 0, NULL));
}

/* QUEUE [KEY=VALUE ...] of create and config, checked before anything is sent. */
static int parse_queue_pairs(CtlCtx *ctx, int argc, char **argv, char **pos, int *npos)
{
	int rc;

	if ((rc = ctl_parse_opts(ctx, argc, argv, NULL, pos, npos)))
		return rc;
	if (*npos < 1)
		return ctl_usage(argv[0], "needs QUEUE");
	for (int i = 1; i < *npos; i++) {
		char *k;
		const char *v;
		if (!check_pair(pos[i], &k, &v))
			return CTL_EXIT_ERROR;
		free(k);
	}
	return CTL_EXIT_OK;
}

int cmd_create(CtlCtx *ctx, int argc, char **argv)
{
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	PGresult *r;
	char what[300];

	if ((rc = parse_queue_pairs(ctx, argc, argv, pos, &npos)))
		return rc;
	snprintf(what, sizeof(what), "create queue %s", ctl_qq(pos[0]));
	if (!ctl_check_new_name("queue", pos[0]))
		return CTL_EXIT_ERROR;
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!ctl_db_need_pgq(db)) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	PQclear(ctl_db_exec(db, "begin", 0, NULL));
	r = q1(db, "select pgq.create_queue($1)", pos[0]);
	if (!r) {
		rc = ctl_db_fail(db, what);
		ctl_db_close(db);
		return rc;
	}
	if (strcmp(ctl_val(r, 0, 0) ? ctl_val(r, 0, 0) : "0", "0") == 0) {
		PQclear(r);
		rollback(db);
		ctl_err("%s: %s: the queue already exists", ctl_db_label(db), what);
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	PQclear(r);
	if (!apply_pairs(db, pos[0], npos - 1, pos + 1, what)) {
		rollback(db);
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	r = ctl_db_exec(db, "commit", 0, NULL);
	if (!r) {
		rc = ctl_db_fail(db, what);
		ctl_db_close(db);
		return rc;
	}
	PQclear(r);
	if (!ctx->quiet)
		printf("%s: created queue %s\n", ctl_db_label(db), ctl_q(pos[0]));
	ctl_db_close(db);
	return CTL_EXIT_OK;
}

int cmd_drop(CtlCtx *ctx, int argc, char **argv)
{
	bool force = false;
	const CtlOpt opts[] = {{"force", false, &force}, {NULL}};
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	PGresult *r;
	bool exists;
	char what[300];
	const char *p[2];

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos != 1)
		return ctl_usage(argv[0], "needs exactly one QUEUE");
	snprintf(what, sizeof(what), "drop queue %s", ctl_qq(pos[0]));
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!ctl_db_need_pgq(db)) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	if (!queue_exists(db, pos[0], &exists)) {
		rc = ctl_db_fail(db, what);
		ctl_db_close(db);
		return rc;
	}
	if (!exists) {
		ctl_err("%s: %s: no such queue", ctl_db_label(db), what);
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	p[0] = pos[0];
	p[1] = force ? "true" : "false";
	r = ctl_db_exec(db, "select pgq.drop_queue($1, $2::bool)", 2, p);
	if (!r) {
		rc = ctl_db_fail(db, what);
		if (!force && strstr(ctl_db_error(db), "consumers"))
			fprintf(stderr, "  (unregister them, or use --force)\n");
		ctl_db_close(db);
		return rc;
	}
	PQclear(r);
	if (!ctx->quiet)
		printf("%s: dropped queue %s\n", ctl_db_label(db), ctl_q(pos[0]));
	ctl_db_close(db);
	return CTL_EXIT_OK;
}

static int show_config(CtlCtx *ctx, CtlDb *db, const char *queue)
{
	PGresult *r = q1(db,
			 "select regexp_replace(key, '^queue_', ''), value"
			 "  from pgq.queue q, jsonb_each_text(to_jsonb(q)) e"
			 " where q.queue_name = $1 and key <> 'queue_name'"
			 " order by 1",
			 queue);
	char what[300];

	snprintf(what, sizeof(what), "config %s", ctl_qq(queue));
	if (!r)
		return ctl_db_fail(db, what);
	if (PQntuples(r) == 0) {
		PQclear(r);
		ctl_err("%s: %s: no such queue", ctl_db_label(db), what);
		return CTL_EXIT_ERROR;
	}
	if (ctx->json) {
		CtlJson j;
		ctl_json_init(&j, stdout);
		ctl_json_obj_begin(&j, NULL);
		ctl_json_str(&j, "queue", queue);
		ctl_json_obj_begin(&j, "settings");
		for (int i = 0; i < PQntuples(r); i++)
			ctl_json_str(&j, PQgetvalue(r, i, 0), ctl_val(r, i, 1));
		ctl_json_obj_end(&j);
		ctl_json_obj_end(&j);
		ctl_json_end(&j);
	} else {
		const char *h[3] = {"setting", "value", "settable"};
		CtlTable *t = ctl_table_new(3, h);
		for (int i = 0; i < PQntuples(r); i++) {
			const char *k = PQgetvalue(r, i, 0);
			bool can = false;
			const char *cells[3];

			for (int s = 0; settable[s]; s++)
				can = can || strcmp(settable[s], k) == 0;
			cells[0] = k;
			cells[1] = ctl_val(r, i, 1) ? ctl_val(r, i, 1) : "(null)";
			cells[2] = can ? "yes" : "";
			ctl_table_add(t, cells);
		}
		ctl_table_print(t, stdout, ctx->color);
		ctl_table_free(t);
	}
	PQclear(r);
	return CTL_EXIT_OK;
}

int cmd_config(CtlCtx *ctx, int argc, char **argv)
{
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	bool exists;
	char what[300];
	PGresult *r;

	if ((rc = parse_queue_pairs(ctx, argc, argv, pos, &npos)))
		return rc;
	snprintf(what, sizeof(what), "config %s", ctl_qq(pos[0]));
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!ctl_db_need_pgq(db)) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	if (npos == 1) {
		rc = show_config(ctx, db, pos[0]);
		ctl_db_close(db);
		return rc;
	}
	if (!queue_exists(db, pos[0], &exists)) {
		rc = ctl_db_fail(db, what);
		ctl_db_close(db);
		return rc;
	}
	if (!exists) {
		ctl_err("%s: %s: no such queue", ctl_db_label(db), what);
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	PQclear(ctl_db_exec(db, "begin", 0, NULL));
	if (!apply_pairs(db, pos[0], npos - 1, pos + 1, what)) {
		rollback(db);
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	r = ctl_db_exec(db, "commit", 0, NULL);
	if (!r) {
		rc = ctl_db_fail(db, what);
		ctl_db_close(db);
		return rc;
	}
	PQclear(r);
	if (!ctx->quiet)
		printf("%s: queue %s: %d setting%s changed\n", ctl_db_label(db), ctl_q(pos[0]),
		       npos - 1, npos == 2 ? "" : "s");
	ctl_db_close(db);
	return CTL_EXIT_OK;
}

/* Shared with status: the queue columns in get_queue_info() order. */
const char ctl_queue_sql[] =
	"select queue_name, queue_ntables, queue_cur_table,"
	" extract(epoch from queue_rotation_period)::float8,"
	" queue_ticker_max_count, extract(epoch from queue_ticker_max_lag)::float8,"
	" extract(epoch from queue_ticker_idle_period)::float8,"
	" queue_ticker_paused, queue_external_ticker,"
	" extract(epoch from ticker_lag)::float8, ev_per_sec, ev_new, last_tick_id,"
	" (select count(*) from pgq.subscription s join pgq.queue q2 on q2.queue_id = s.sub_queue"
	"   where q2.queue_name = i.queue_name)"
	" from pgq.get_queue_info() i order by queue_name";

int cmd_queues(CtlCtx *ctx, int argc, char **argv)
{
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	PGresult *r;

	if ((rc = ctl_parse_opts(ctx, argc, argv, NULL, pos, &npos)))
		return rc;
	if (npos)
		return ctl_usage(argv[0], "takes no arguments");
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!ctl_db_need_pgq(db)) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	r = ctl_db_exec(db, ctl_queue_sql, 0, NULL);
	if (!r) {
		rc = ctl_db_fail(db, "queues");
		ctl_db_close(db);
		return rc;
	}
	if (ctx->json) {
		static const char *const keys[] = {
			"queue",
			"ntables",
			"cur_table",
			"rotation_period",
			"ticker_max_count",
			"ticker_max_lag",
			"ticker_idle_period",
			"ticker_paused",
			"external_ticker",
			"ticker_lag",
			"ev_per_sec",
			"ev_new",
			"last_tick_id",
			"consumers",
		};
		CtlJson j;
		ctl_json_init(&j, stdout);
		ctl_json_arr_begin(&j, NULL);
		for (int i = 0; i < PQntuples(r); i++) {
			ctl_json_obj_begin(&j, NULL);
			for (int c = 0; c < 14; c++)
				ctl_json_cell(&j, keys[c], r, i, c);
			ctl_json_obj_end(&j);
		}
		ctl_json_arr_end(&j);
		ctl_json_end(&j);
	} else {
		const char *h[8] = {"queue",      "tables", "rotation", "ticker (count/lag/idle)",
				    "ticker lag", "ev/s",   "new",      "consumers"};
		CtlTable *t = ctl_table_new(8, h);
		for (int i = 0; i < PQntuples(r); i++) {
			char tables[32], rot[32], tick[96], lag[32], eps[32];
			char a1[32], a2[32];
			const char *cells[8];

			snprintf(tables, sizeof(tables), "%s", PQgetvalue(r, i, 1));
			ctl_fmt_age(rot, sizeof(rot), atof(PQgetvalue(r, i, 3)));
			ctl_fmt_age(a1, sizeof(a1), atof(PQgetvalue(r, i, 5)));
			ctl_fmt_age(a2, sizeof(a2), atof(PQgetvalue(r, i, 6)));
			snprintf(tick, sizeof(tick), "%s/%s/%s%s%s", PQgetvalue(r, i, 4), a1, a2,
				 PQgetvalue(r, i, 7)[0] == 't' ? " paused" : "",
				 PQgetvalue(r, i, 8)[0] == 't' ? " external" : "");
			ctl_fmt_age(lag, sizeof(lag),
				    PQgetisnull(r, i, 9) ? -1 : atof(PQgetvalue(r, i, 9)));
			if (PQgetisnull(r, i, 10))
				snprintf(eps, sizeof(eps), "-");
			else
				snprintf(eps, sizeof(eps), "%.1f", atof(PQgetvalue(r, i, 10)));
			cells[0] = PQgetvalue(r, i, 0);
			cells[1] = tables;
			cells[2] = rot;
			cells[3] = tick;
			cells[4] = lag;
			cells[5] = eps;
			cells[6] = PQgetisnull(r, i, 11) ? "-" : PQgetvalue(r, i, 11);
			cells[7] = PQgetvalue(r, i, 13);
			ctl_table_add(t, cells);
		}
		ctl_table_print(t, stdout, ctx->color);
		ctl_table_free(t);
	}
	PQclear(r);
	ctl_db_close(db);
	return CTL_EXIT_OK;
}
