/*
 * Consumers: register, unregister, consumers; and `complete` (names for the
 * shell completion).
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

/* 1 exists, 0 not (message printed), -1 query failed (message printed). */
static int need_queue(CtlDb *db, const char *queue, const char *what)
{
	const char *p[1] = {queue};
	PGresult *r = ctl_db_exec(db, "select 1 from pgq.queue where queue_name = $1", 1, p);
	int n;

	if (!r) {
		ctl_db_fail(db, what);
		return -1;
	}
	n = PQntuples(r);
	PQclear(r);
	if (n == 0)
		ctl_err("%s: %s: no such queue %s", ctl_db_label(db), what, ctl_qq(queue));
	return n > 0;
}

static int is_registered(CtlDb *db, const char *queue, const char *consumer, const char *what)
{
	const char *p[2] = {queue, consumer};
	PGresult *r = ctl_db_exec(db, "select 1 from pgq.get_consumer_info($1, $2)", 2, p);
	int n;

	if (!r) {
		ctl_db_fail(db, what);
		return -1;
	}
	n = PQntuples(r);
	PQclear(r);
	return n > 0;
}

int cmd_register(CtlCtx *ctx, int argc, char **argv)
{
	const char *at = NULL;
	bool retained = false;
	const CtlOpt opts[] = {
		{"at", true, &at},
		{"from-start-of-retained", false, &retained},
		{NULL},
	};
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	PGresult *r;
	char what[512], tick[32] = "";
	long long v;

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos != 2)
		return ctl_usage(argv[0], "needs QUEUE CONSUMER");
	if (at && retained)
		return ctl_usage(argv[0], "--at and --from-start-of-retained exclude each other");
	if (at) {
		if (!ctl_parse_i64("--at", at, 1, INT64_MAX, &v))
			return CTL_EXIT_USAGE;
		snprintf(tick, sizeof(tick), "%lld", v);
	}
	if (!ctl_check_new_name("consumer", pos[1]))
		return CTL_EXIT_ERROR;
	snprintf(what, sizeof(what), "register %s on queue %s", ctl_qq(pos[1]), ctl_qq(pos[0]));
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!ctl_db_need_pgq(db) || need_queue(db, pos[0], what) != 1) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	rc = is_registered(db, pos[0], pos[1], what);
	if (rc != 0) {
		if (rc > 0)
			ctl_err("%s: %s: already registered", ctl_db_label(db), what);
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	if (retained) {
		const char *p[1] = {pos[0]};
		r = ctl_db_exec(db,
				"select min(t.tick_id) from pgq.tick t join pgq.queue q"
				" on q.queue_id = t.tick_queue where q.queue_name = $1",
				1, p);
		if (!r)
			return fail_close(db, what);
		snprintf(tick, sizeof(tick), "%s", ctl_val(r, 0, 0) ? ctl_val(r, 0, 0) : "");
		PQclear(r);
		if (!*tick) {
			ctl_err("%s: %s: the queue has no tick yet", ctl_db_label(db), what);
			ctl_db_close(db);
			return CTL_EXIT_ERROR;
		}
	}
	if (*tick) {
		const char *p[3] = {pos[0], pos[1], tick};
		r = ctl_db_exec(db, "select pgq.register_consumer_at($1, $2, $3::bigint)", 3, p);
	} else {
		const char *p[2] = {pos[0], pos[1]};
		r = ctl_db_exec(db, "select pgq.register_consumer($1, $2)", 2, p);
	}
	if (!r)
		return fail_close(db, what);
	PQclear(r);
	if (!ctx->quiet)
		printf("%s: registered %s on %s%s%s\n", ctl_db_label(db), ctl_q(pos[1]),
		       ctl_q(pos[0]), *tick ? " at tick " : "", tick);
	ctl_db_close(db);
	return CTL_EXIT_OK;
}

int cmd_unregister(CtlCtx *ctx, int argc, char **argv)
{
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	PGresult *r;
	char what[512];
	const char *p[2];

	if ((rc = ctl_parse_opts(ctx, argc, argv, NULL, pos, &npos)))
		return rc;
	if (npos != 2)
		return ctl_usage(argv[0], "needs QUEUE CONSUMER");
	snprintf(what, sizeof(what), "unregister %s from queue %s", ctl_qq(pos[1]), ctl_qq(pos[0]));
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!ctl_db_need_pgq(db) || need_queue(db, pos[0], what) != 1) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	rc = is_registered(db, pos[0], pos[1], what);
	if (rc != 1) {
		if (rc == 0)
			ctl_err("%s: %s: no such consumer on this queue", ctl_db_label(db), what);
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	p[0] = pos[0];
	p[1] = pos[1];
	r = ctl_db_exec(db, "select pgq.unregister_consumer($1, $2)", 2, p);
	if (!r)
		return fail_close(db, what);
	PQclear(r);
	if (!ctx->quiet)
		printf("%s: unregistered %s from %s\n", ctl_db_label(db), ctl_q(pos[1]),
		       ctl_q(pos[0]));
	ctl_db_close(db);
	return CTL_EXIT_OK;
}

/* Shared with status. Columns: queue, consumer, lag s, last_seen s, last_tick,
   current_batch, next_tick, pending, coop main (or NULL), retry count. */
const char ctl_consumer_sql[] =
	"select i.queue_name, i.consumer_name, extract(epoch from i.lag)::float8,"
	" extract(epoch from i.last_seen)::float8, i.last_tick, i.current_batch, i.next_tick,"
	" i.pending_events,"
	" (select m.consumer_name from pgq.get_consumer_info(i.queue_name, null) m"
	"   where i.consumer_name like m.consumer_name || '.%' and m.consumer_name <> "
	"i.consumer_name"
	"   order by length(m.consumer_name) desc limit 1)"
	" from pgq.get_consumer_info() i"
	" where $1::text is null or i.queue_name = $1 order by 1, 2";

int cmd_consumers(CtlCtx *ctx, int argc, char **argv)
{
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	PGresult *r;
	const char *p[1];

	if ((rc = ctl_parse_opts(ctx, argc, argv, NULL, pos, &npos)))
		return rc;
	if (npos > 1)
		return ctl_usage(argv[0], "takes at most one QUEUE");
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!ctl_db_need_pgq(db) || (npos == 1 && need_queue(db, pos[0], "consumers") != 1)) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	p[0] = npos == 1 ? pos[0] : NULL;
	r = ctl_db_exec(db, ctl_consumer_sql, 1, p);
	if (!r)
		return fail_close(db, "consumers");
	if (ctx->json) {
		static const char *const keys[] = {
			"queue",         "consumer",  "lag",     "last_seen", "last_tick",
			"current_batch", "next_tick", "pending", "coop_main",
		};
		CtlJson j;
		ctl_json_init(&j, stdout);
		ctl_json_arr_begin(&j, NULL);
		for (int i = 0; i < PQntuples(r); i++) {
			ctl_json_obj_begin(&j, NULL);
			for (int c = 0; c < 9; c++)
				ctl_json_cell(&j, keys[c], r, i, c);
			ctl_json_obj_end(&j);
		}
		ctl_json_arr_end(&j);
		ctl_json_end(&j);
	} else {
		const char *h[7] = {"queue", "consumer", "lag", "last seen",
				    "batch", "pending",  "coop"};
		CtlTable *t = ctl_table_new(7, h);
		for (int i = 0; i < PQntuples(r); i++) {
			char lag[32], seen[32];
			const char *cells[7];
			char coop[300] = "";

			ctl_fmt_age(lag, sizeof(lag),
				    PQgetisnull(r, i, 2) ? -1 : atof(PQgetvalue(r, i, 2)));
			ctl_fmt_age(seen, sizeof(seen),
				    PQgetisnull(r, i, 3) ? -1 : atof(PQgetvalue(r, i, 3)));
			if (!PQgetisnull(r, i, 8))
				snprintf(coop, sizeof(coop), "sub of %s", PQgetvalue(r, i, 8));
			cells[0] = PQgetvalue(r, i, 0);
			cells[1] = PQgetvalue(r, i, 1);
			cells[2] = lag;
			cells[3] = seen;
			cells[4] = PQgetisnull(r, i, 5) ? "-" : PQgetvalue(r, i, 5);
			cells[5] = PQgetisnull(r, i, 7) ? "-" : PQgetvalue(r, i, 7);
			cells[6] = coop;
			ctl_table_add(t, cells);
		}
		ctl_table_print(t, stdout, ctx->color);
		ctl_table_free(t);
	}
	PQclear(r);
	ctl_db_close(db);
	return CTL_EXIT_OK;
}

int cmd_complete(CtlCtx *ctx, int argc, char **argv)
{
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	PGresult *r = NULL;

	if ((rc = ctl_parse_opts(ctx, argc, argv, NULL, pos, &npos)))
		return rc;
	if (npos < 1)
		return ctl_usage(argv[0], "needs queues, consumers [QUEUE] or commands");
	if (strcmp(pos[0], "commands") == 0) {
		for (const CtlCommand *c = ctl_commands; c->name; c++)
			printf("%s\n", c->name);
		return CTL_EXIT_OK;
	}
	ctx->connect_timeout = 2 * USEC_PER_SEC;
	ctx->quiet = true;
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (strcmp(pos[0], "queues") == 0) {
		r = ctl_db_exec(db, "select queue_name from pgq.queue order by 1", 0, NULL);
	} else if (strcmp(pos[0], "consumers") == 0) {
		const char *p[1] = {npos > 1 ? pos[1] : NULL};
		r = ctl_db_exec(db,
				"select distinct consumer_name from pgq.get_consumer_info()"
				" where $1::text is null or queue_name = $1 order by 1",
				1, p);
	}
	if (r)
		for (int i = 0; i < PQntuples(r); i++)
			printf("%s\n", PQgetvalue(r, i, 0));
	PQclear(r);
	ctl_db_close(db);
	return r ? CTL_EXIT_OK : CTL_EXIT_ERROR;
}
