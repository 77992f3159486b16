/*
 * Events: events (look without consuming), insert (one, or many from stdin),
 * tail (a temporary consumer that prints what is ticked).
 *
 * `events --consumer` opens the consumer's batches one after the other inside a
 * transaction and rolls it back, so the consumer's position never moves.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_conn.h>

#include "pgqctl.h"

static const char ev_cols[] = "ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data, ev_extra1,"
			      " ev_extra2, ev_extra3, ev_extra4";
static const char *const ev_keys[] = {
	"ev_id",   "ev_time",   "ev_txid",   "ev_retry",  "ev_type",
	"ev_data", "ev_extra1", "ev_extra2", "ev_extra3", "ev_extra4",
};

static int fail_close(CtlDb *db, const char *what)
{
	int rc = ctl_db_fail(db, what);

	ctl_db_close(db);
	return rc;
}

/* Events of a result as JSON lines or tab-separated text; extras only when set. */
static void print_events(CtlCtx *ctx, const PGresult *r, const char *batch)
{
	for (int i = 0; i < PQntuples(r); i++) {
		if (ctx->json) {
			CtlJson j;
			ctl_json_init(&j, stdout);
			ctl_json_obj_begin(&j, NULL);
			if (batch)
				ctl_json_int(&j, "batch_id", atoll(batch));
			for (int c = 0; c < 10; c++)
				ctl_json_cell(&j, ev_keys[c], r, i, c);
			ctl_json_obj_end(&j);
			ctl_json_end(&j);
		} else {
			printf("%s\t%s\t%s\t%s", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
			       PQgetvalue(r, i, 4), PQgetvalue(r, i, 5));
			for (int c = 6; c < 10; c++)
				if (!PQgetisnull(r, i, c))
					printf("\t%s=%s", ev_keys[c] + 3, PQgetvalue(r, i, c));
			putchar('\n');
		}
	}
	fflush(stdout);
}

static bool queue_known(CtlDb *db, const char *queue, const char *what)
{
	const char *p[1] = {queue};
	PGresult *r = ctl_db_exec(db, "select 1 from pgq.queue where queue_name = $1", 1, p);
	bool ok = r && PQntuples(r) > 0;

	if (!r)
		ctl_db_fail(db, what);
	else if (!ok)
		ctl_err("%s: %s: no such queue %s", ctl_db_label(db), what, ctl_qq(queue));
	PQclear(r);
	return ok;
}

int cmd_events(CtlCtx *ctx, int argc, char **argv)
{
	const char *consumer = NULL, *batch = NULL, *limit_s = NULL;
	const CtlOpt opts[] = {
		{"consumer", true, &consumer},
		{"batch", true, &batch},
		{"limit", true, &limit_s},
		{NULL},
	};
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	long long limit = 100, bid = 0, shown = 0;
	CtlDb *db;
	PGresult *r;
	char what[512], sql[512], lim[32];

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos != 1)
		return ctl_usage(argv[0], "needs QUEUE");
	if (!!consumer == !!batch)
		return ctl_usage(argv[0], "needs one of --consumer C or --batch ID");
	if (limit_s && !ctl_parse_i64("--limit", limit_s, 1, 10000000, &limit))
		return CTL_EXIT_USAGE;
	if (batch && !ctl_parse_i64("--batch", batch, 1, INT64_MAX, &bid))
		return CTL_EXIT_USAGE;
	snprintf(what, sizeof(what), "events of %s %s on queue %s", consumer ? "consumer" : "batch",
		 consumer ? ctl_qq(consumer) : batch, ctl_qq(pos[0]));
	snprintf(lim, sizeof(lim), "%lld", limit);
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!ctl_db_need_pgq(db) || !queue_known(db, pos[0], what)) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	if (batch) {
		const char *p[3] = {batch, pos[0], lim};
		snprintf(sql, sizeof(sql),
			 "select %s from pgq.get_batch_events($1::bigint)"
			 " where exists (select 1 from pgq.subscription s join pgq.queue q on"
			 " q.queue_id = s.sub_queue where s.sub_batch = $1::bigint and"
			 " q.queue_name = $2) order by ev_id limit $3::bigint",
			 ev_cols);
		r = ctl_db_exec(db, sql, 3, p);
		if (!r)
			return fail_close(db, what);
		print_events(ctx, r, batch);
		PQclear(r);
		ctl_db_close(db);
		return CTL_EXIT_OK;
	}
	/* consumer: walk its batches inside a transaction that is rolled back */
	{
		const char *p[2] = {pos[0], consumer};
		r = ctl_db_exec(db, "select 1 from pgq.get_consumer_info($1, $2)", 2, p);
		if (!r)
			return fail_close(db, what);
		if (PQntuples(r) == 0) {
			PQclear(r);
			ctl_err("%s: %s: no such consumer on this queue", ctl_db_label(db), what);
			ctl_db_close(db);
			return CTL_EXIT_ERROR;
		}
		PQclear(r);
	}
	PQclear(ctl_db_exec(db, "begin", 0, NULL));
	while (shown < limit) {
		const char *p[2] = {pos[0], consumer};
		char b[32], left[32];
		const char *bp[2] = {b, left};

		r = ctl_db_exec(db, "select pgq.next_batch($1, $2)", 2, p);
		if (!r) {
			rc = ctl_db_fail(db, what);
			PQclear(ctl_db_exec(db, "rollback", 0, NULL));
			ctl_db_close(db);
			return rc;
		}
		if (!ctl_val(r, 0, 0)) {
			PQclear(r);
			break;
		}
		snprintf(b, sizeof(b), "%s", ctl_val(r, 0, 0));
		PQclear(r);
		snprintf(left, sizeof(left), "%lld", limit - shown);
		snprintf(sql, sizeof(sql),
			 "select %s from pgq.get_batch_events($1::bigint) order by ev_id"
			 " limit $2::bigint",
			 ev_cols);
		r = ctl_db_exec(db, sql, 2, bp);
		if (r) {
			print_events(ctx, r, b);
			shown += PQntuples(r);
			PQclear(r);
			r = ctl_db_exec(db, "select pgq.finish_batch($1::bigint)", 1, bp);
		}
		if (!r) {
			rc = ctl_db_fail(db, what);
			PQclear(ctl_db_exec(db, "rollback", 0, NULL));
			ctl_db_close(db);
			return rc;
		}
		PQclear(r);
	}
	PQclear(ctl_db_exec(db, "rollback", 0, NULL));
	ctl_db_close(db);
	return CTL_EXIT_OK;
}

/* ---- insert ---- */

/* Append `s` to a text[] literal element list. */
static void arr_add(char **buf, size_t *len, size_t *cap, const char *s)
{
	size_t need = strlen(s) * 2 + 4;

	if (*len + need + 2 > *cap) {
		*cap = (*len + need + 2) * 2;
		*buf = realloc(*buf, *cap);
		if (!*buf)
			abort();
	}
	if (*len > 1)
		(*buf)[(*len)++] = ',';
	(*buf)[(*len)++] = '"';
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			(*buf)[(*len)++] = '\\';
		(*buf)[(*len)++] = *s;
	}
	(*buf)[(*len)++] = '"';
	(*buf)[*len] = '\0';
}

static const char sql_bulk_text[] =
	"select count(pgq.insert_event($1, case when strpos(l, E'\\t') = 0 then $3 else a[1] end,"
	" case when strpos(l, E'\\t') = 0 then l else a[2] end, a[3], a[4], a[5], a[6]))"
	" from unnest($2::text[]) l, lateral (select string_to_array(l, E'\\t') a) x";
static const char sql_bulk_json[] =
	"select count(pgq.insert_event($1, coalesce(e->>'type', $3), e->>'data', e->>'extra1',"
	" e->>'extra2', e->>'extra3', e->>'extra4'))"
	" from unnest($2::text[]) l, lateral (select l::json e) x";

#define BULK_LINES 1000

int cmd_insert(CtlCtx *ctx, int argc, char **argv)
{
	bool use_stdin = false;
	const char *type = NULL;
	const CtlOpt opts[] = {{"stdin", false, &use_stdin}, {"type", true, &type}, {NULL}};
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	PGresult *r;
	char what[300];

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (use_stdin ? npos != 1 : (npos < 3 || npos > 7))
		return ctl_usage(argv[0], "needs QUEUE TYPE DATA [EXTRA1..4] or QUEUE --stdin");
	snprintf(what, sizeof(what), "insert into queue %s", ctl_qq(pos[0]));
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!ctl_db_need_pgq(db) || !queue_known(db, pos[0], what)) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	if (!use_stdin) {
		const char *p[7] = {pos[0], pos[1], pos[2], NULL, NULL, NULL, NULL};
		for (int i = 3; i < npos; i++)
			p[i] = pos[i];
		r = ctl_db_exec(db, "select pgq.insert_event($1, $2, $3, $4, $5, $6, $7)", 7, p);
		if (!r)
			return fail_close(db, what);
		if (!ctx->quiet)
			printf("%s\n", ctl_val(r, 0, 0));
		PQclear(r);
		ctl_db_close(db);
		return CTL_EXIT_OK;
	}
	/* stdin: batches of lines, all in one transaction (a bad line changes nothing) */
	{
		char *line = NULL, *arr = NULL;
		size_t lcap = 0, alen = 0, acap = 0;
		long long total = 0, lineno = 0, first = 1;
		int inbatch = 0;
		ssize_t n;
		bool ok = true;

		PQclear(ctl_db_exec(db, "begin", 0, NULL));
		arr = strdup("{");
		alen = 1;
		acap = 2;
		for (;;) {
			n = getline(&line, &lcap, stdin);
			if (n > 0) {
				lineno++;
				if (line[n - 1] == '\n')
					line[--n] = '\0';
				if (n > 0 && line[n - 1] == '\r')
					line[--n] = '\0';
				if (n == 0)
					continue;
				if (ctx->json && (line[0] != '{' || line[n - 1] != '}')) {
					ctl_err("%s: stdin line %lld: not a JSON object", what,
						lineno);
					ok = false;
					break;
				}
				arr_add(&arr, &alen, &acap, line);
				inbatch++;
			}
			if (inbatch > 0 && (inbatch == BULK_LINES || n < 0)) {
				char *lit;
				const char *p[3];

				if (asprintf(&lit, "%s}", arr) < 0)
					abort();
				p[0] = pos[0];
				p[1] = lit;
				p[2] = type ? type : "text";
				r = ctl_db_exec(db, ctx->json ? sql_bulk_json : sql_bulk_text, 3,
						p);
				free(lit);
				if (!r) {
					char w2[400];
					snprintf(w2, sizeof(w2), "%s (stdin lines %lld..%lld)",
						 what, first, lineno);
					ctl_db_fail(db, w2);
					ok = false;
					break;
				}
				total += atoll(ctl_val(r, 0, 0) ? ctl_val(r, 0, 0) : "0");
				PQclear(r);
				inbatch = 0;
				first = lineno + 1;
				alen = 1;
				arr[1] = '\0';
			}
			if (n < 0)
				break;
		}
		free(line);
		free(arr);
		r = ctl_db_exec(db, ok ? "commit" : "rollback", 0, NULL);
		if (ok && !r)
			return fail_close(db, what);
		PQclear(r);
		if (ok && !ctx->quiet)
			fprintf(stderr, "%s: inserted %lld events into %s\n", ctl_db_label(db),
				total, pos[0]);
		ctl_db_close(db);
		return ok ? CTL_EXIT_OK : CTL_EXIT_ERROR;
	}
}

/* ---- tail ---- */

/* `s` as one shell word (single quotes), for a command line we suggest. */
static const char *shell_word(const char *s)
{
	static char *buf;
	size_t len = 0;

	free(buf);
	buf = malloc(strlen(s) * 4 + 3);
	if (!buf)
		abort();
	buf[len++] = '\'';
	for (; *s; s++) {
		if (*s == '\'') {
			memcpy(buf + len, "'\\''", 4);
			len += 4;
		} else {
			buf[len++] = *s;
		}
	}
	buf[len++] = '\'';
	buf[len] = '\0';
	return buf;
}

static void wake(evutil_socket_t fd, short what, void *arg)
{
	*(bool *)arg = true;
}

int cmd_tail(CtlCtx *ctx, int argc, char **argv)
{
	bool from_now = false;
	const CtlOpt opts[] = {{"from-now", false, &from_now}, {NULL}};
	char *pos[CTL_MAX_ARGS];
	int npos, rc = CTL_EXIT_OK;
	CtlDb *db;
	PGresult *r;
	char what[300], consumer[64], sql[512], tick[32] = "";
	static bool woke; /* static: a pending timer may fire after we return */
	bool notify = false;
	const char *p[3];

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos != 1)
		return ctl_usage(argv[0], "needs QUEUE");
	/* a signal ends the loop below, never the unregistration */
	ctl_finish_on_signal = true;
	snprintf(consumer, sizeof(consumer), "pgqctl_tail_%ld", (long)getpid());
	snprintf(what, sizeof(what), "tail queue %s", ctl_qq(pos[0]));
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!ctl_db_need_pgq(db) || !queue_known(db, pos[0], what)) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	p[0] = pos[0];
	p[1] = consumer;
	if (!from_now) {
		r = ctl_db_exec(db,
				"select min(t.tick_id) from pgq.tick t join pgq.queue q"
				" on q.queue_id = t.tick_queue where q.queue_name = $1",
				1, p);
		if (!r)
			return fail_close(db, what);
		snprintf(tick, sizeof(tick), "%s", ctl_val(r, 0, 0) ? ctl_val(r, 0, 0) : "");
		PQclear(r);
	}
	p[2] = tick;
	r = *tick ? ctl_db_exec(db, "select pgq.register_consumer_at($1, $2, $3::bigint)", 3, p)
		  : ctl_db_exec(db, "select pgq.register_consumer($1, $2)", 2, p);
	if (!r)
		return fail_close(db, what);
	PQclear(r);
	if (!ctx->quiet)
		fprintf(stderr, "pgqctl: %s: tailing %s as consumer %s (Ctrl-C stops)\n",
			ctl_db_label(db), ctl_q(pos[0]), consumer);
	/* woken by the queue's tick channel where the SQL has one; polled otherwise */
	r = ctl_db_exec(db,
			"select case when to_regproc('pgq.queue_notify_channel') is not null"
			" then 1 end",
			0, NULL);
	if (r && ctl_val(r, 0, 0)) {
		PQclear(r);
		r = ctl_db_exec(db, "select pgq.queue_notify_channel($1)", 1, p);
		if (r && ctl_val(r, 0, 0) &&
		    pqev_conn_listen(ctl_db_conn(db), ctl_val(r, 0, 0)) == 0)
			notify = true;
	}
	PQclear(r);
	ctl_db_on_notify(db, &woke);
	snprintf(sql, sizeof(sql), "select %s from pgq.get_batch_events($1::bigint) order by ev_id",
		 ev_cols);
	while (!ctl_signalled) {
		char b[32];
		const char *bp[1] = {b};
		struct timeval tv = {notify ? 5 : 1, 0};

		r = ctl_db_exec(db, "select pgq.next_batch($1, $2)", 2, p);
		if (!r) {
			rc = ctl_db_fail(db, what);
			break;
		}
		if (ctl_val(r, 0, 0)) {
			snprintf(b, sizeof(b), "%s", ctl_val(r, 0, 0));
			PQclear(r);
			r = ctl_db_exec(db, sql, 1, bp);
			if (r) {
				print_events(ctx, r, ctx->json ? b : NULL);
				PQclear(r);
				r = ctl_db_exec(db, "select pgq.finish_batch($1::bigint)", 1, bp);
			}
			if (!r) {
				rc = ctl_db_fail(db, what);
				break;
			}
			PQclear(r);
			continue;
		}
		PQclear(r);
		woke = false;
		if (event_base_once(ctx->base, -1, EV_TIMEOUT, wake, &woke, &tv) != 0)
			abort();
		ctl_loop_until(ctx, &woke);
	}
	/* always leave no registration behind */
	r = ctl_db_exec(db, "select pgq.unregister_consumer($1, $2)", 2, p);
	if (!r) {
		ctl_db_fail(db, "tail: unregister");
		ctl_err("the temporary consumer %s is still registered on %s: run pgqctl "
			"unregister %s %s",
			consumer, ctl_q(pos[0]), shell_word(pos[0]), consumer);
		rc = CTL_EXIT_ERROR;
	} else {
		PQclear(r);
	}
	ctl_db_on_notify(db, NULL);
	ctl_db_close(db);
	return rc;
}
