/*
 * Events: events (look without consuming), insert (one, or many from stdin),
 * tail (a temporary consumer that prints what is ticked).
 *
 * `events --consumer` opens the consumer's batches one after the other inside a
 * transaction and rolls it back, so the consumer's position never moves.
 */
#include <errno.h>
#include <stdarg.h>
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

/*
 * insert --stdin: the lines go by COPY into a temporary table, and each chunk of
 * CHUNK_LINES lines becomes events in one statement: an INSERT ... SELECT into the
 * queue's current event table (pgq.current_event_table, PgQ's bulk path) when this
 * role may insert there and the queue has no per-transaction limit, else one
 * pgq.insert_event() call per row of the same SELECT. The client holds one line
 * at a time; the server one chunk. Everything runs in one transaction: a bad
 * line, an error or Ctrl-C inserts nothing.
 */
#define CHUNK_LINES 100000 /* default of --chunk-lines */
#define COPY_BUF    (64 * 1024)

typedef struct Bulk {
	CtlCtx *ctx;
	CtlDb *db; /* for messages */
	PGconn *pc;
	const char *queue, *type, *what;
	bool json;
	bool direct;       /* INSERT into the event table */
	bool copying;      /* a COPY is open */
	long long first;   /* stdin line number of the chunk's first row */
	long long inchunk; /* rows of this chunk */
	long long total;   /* events inserted */
	long long chunk;   /* lines per chunk */
	char *buf;
	size_t len;
} Bulk;

static bool bulk_fail(Bulk *b, PGresult *r, const char *fmt, ...) PQEV_PRINTF(3, 4);
static bool bulk_fail(Bulk *b, PGresult *r, const char *fmt, ...)
{
	char w[600], where[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(where, sizeof(where), fmt, ap);
	va_end(ap);
	snprintf(w, sizeof(w), "%s (%s)", b->what, where);
	ctl_db_fail_result(b->db, b->pc, r, w);
	PQclear(r);
	return false;
}

static bool bulk_exec(Bulk *b, const char *sql, int n, const char *const *p, long long *rows)
{
	PGresult *r = PQexecParams(b->pc, sql, n, NULL, p, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		return bulk_fail(b, r, "stdin lines %lld..%lld", b->first,
				 b->first + b->inchunk - 1);
	if (rows)
		*rows = st == PGRES_TUPLES_OK ? atoll(PQgetvalue(r, 0, 0)) : atoll(PQcmdTuples(r));
	PQclear(r);
	return true;
}

static bool bulk_flush(Bulk *b)
{
	if (b->len && PQputCopyData(b->pc, b->buf, (int)b->len) != 1)
		return bulk_fail(b, NULL, "sending stdin line %lld", b->first + b->inchunk - 1);
	b->len = 0;
	return true;
}

/* Bytes of a COPY text field, escaped. */
static bool bulk_field(Bulk *b, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (b->len + 3 > COPY_BUF && !bulk_flush(b))
			return false;
		if (s[i] == '\\' || s[i] == '\t' || s[i] == '\r') {
			b->buf[b->len++] = '\\';
			b->buf[b->len++] = s[i] == '\t' ? 't' : s[i] == '\r' ? 'r' : '\\';
		} else {
			b->buf[b->len++] = s[i];
		}
	}
	return true;
}

/* One stdin line (without its newline) as a COPY text row: "N<TAB>LINE" for JSON
   lines, "N<TAB>TYPE<TAB>DATA<TAB>EXTRA1..4" split here for plain ones (\N for
   what is missing: no type, the extras; an empty line has no DATA and is skipped
   by the SELECT, so COPY's line numbers stay the chunk's stdin lines). */
static bool bulk_add(Bulk *b, long long lineno, const char *line, size_t n)
{
	if (!b->copying) {
		PGresult *r = PQexec(b->pc, b->json ? "copy pg_temp.pgqctl_in (n, l) from stdin"
						    : "copy pg_temp.pgqctl_in (n, t, d, e1, e2, e3,"
						      " e4) from stdin");

		if (PQresultStatus(r) != PGRES_COPY_IN)
			return bulk_fail(b, r, "copy to a temporary table");
		PQclear(r);
		b->copying = true;
		b->first = lineno;
		b->inchunk = 0;
	}
	if (b->len + 64 > COPY_BUF && !bulk_flush(b))
		return false;
	b->len += (size_t)sprintf(b->buf + b->len, "%lld\t", lineno);
	if (b->json) {
		if (!bulk_field(b, line, n))
			return false;
	} else if (n == 0) {
		b->len += (size_t)sprintf(b->buf + b->len, "\\N\t\\N\t\\N\t\\N\t\\N\t\\N");
	} else {
		const char *f = line, *end = line + n;
		int nf = 0;

		if (!memchr(line, '\t', n)) {
			memcpy(b->buf + b->len, "\\N\t", 3);
			b->len += 3;
			nf = 1;
		}
		for (;;) {
			const char *tab = memchr(f, '\t', (size_t)(end - f));
			size_t fl = tab ? (size_t)(tab - f) : (size_t)(end - f);

			if (!bulk_field(b, f, fl))
				return false;
			nf++;
			if (!tab)
				break;
			if (b->len + 3 > COPY_BUF && !bulk_flush(b))
				return false;
			b->buf[b->len++] = '\t';
			f = tab + 1;
		}
		if (b->len + 16 > COPY_BUF && !bulk_flush(b))
			return false;
		for (; nf < 6; nf++)
			b->len += (size_t)sprintf(b->buf + b->len, "\t\\N");
	}
	b->buf[b->len++] = '\n';
	b->inchunk++;
	return true;
}

/* The first line of the chunk that is not JSON, with the parser's message. */
static void bulk_find_bad_json(Bulk *b)
{
	PGresult *r;

	PQclear(PQexec(b->pc, "rollback to savepoint pgqctl_chunk"));
	PQclear(PQexec(b->pc, "create function pg_temp.pgqctl_json_error(t text) returns text"
			      " language plpgsql as $f$ begin perform t::json; return null;"
			      " exception when others then return sqlerrm; end $f$"));
	r = PQexec(b->pc, "select n, e from (select n, pg_temp.pgqctl_json_error(l) e"
			  " from pg_temp.pgqctl_in where l <> '') x where e is not null"
			  " order by n limit 1");
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		ctl_err("%s: %s: stdin line %s: %s", ctl_db_label(b->db), b->what,
			PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
	PQclear(r);
}

/* End the chunk's COPY and turn its rows into events. */
static bool bulk_chunk(Bulk *b)
{
	static const char text_sel[] =
		"select coalesce(t, $1) t, d, e1, e2, e3, e4"
		" from (select * from pg_temp.pgqctl_in where d is not null order by n) x";
	static const char json_sel[] =
		"select coalesce(e->>'type', $1) t, e->>'data' d, e->>'extra1' e1, e->>'extra2' e2,"
		" e->>'extra3' e3, e->>'extra4' e4"
		" from (select n, l::json e from pg_temp.pgqctl_in where l <> '' order by n) x";
	const char *sel = b->json ? json_sel : text_sel;
	const char *p[2] = {b->type, b->queue};
	char *sql = NULL;
	PGresult *r;
	long long rows = 0;
	bool ok;

	if (!b->copying)
		return true;
	b->copying = false;
	if (!bulk_flush(b))
		return false;
	if (PQputCopyEnd(b->pc, NULL) != 1)
		return bulk_fail(b, NULL, "ending the copy");
	r = PQgetResult(b->pc);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		/* the server's "COPY pgqctl_in, line K": K counts from the chunk's start */
		const char *c = PQresultErrorField(r, PG_DIAG_CONTEXT);
		const char *at = c ? strstr(c, ", line ") : NULL;

		while (PQgetResult(b->pc))
			;
		if (at)
			return bulk_fail(b, r, "stdin line %lld", b->first + atoll(at + 7) - 1);
		return bulk_fail(b, r, "stdin lines %lld..%lld", b->first,
				 b->first + b->inchunk - 1);
	}
	PQclear(r);
	while ((r = PQgetResult(b->pc)))
		PQclear(r);
	if (b->json && !bulk_exec(b, "savepoint pgqctl_chunk", 0, NULL, NULL))
		return false;
	if (b->direct) {
		/* the current table again: the queue may have rotated since the last chunk */
		const char *q[1] = {b->queue};
		r = PQexecParams(b->pc, "select pgq.current_event_table($1)", 1, NULL, q, NULL,
				 NULL, 0);
		if (PQresultStatus(r) != PGRES_TUPLES_OK)
			return bulk_fail(b, r, "stdin lines %lld..%lld", b->first,
					 b->first + b->inchunk - 1);
		if (asprintf(
			    &sql,
			    "insert into %s (ev_time, ev_type, ev_data, ev_extra1, ev_extra2,"
			    " ev_extra3, ev_extra4) select now(), t, d, e1, e2, e3, e4 from (%s) s",
			    PQgetvalue(r, 0, 0), sel) < 0)
			abort();
		PQclear(r);
		ok = bulk_exec(b, sql, 1, p, &rows);
	} else {
		if (asprintf(&sql,
			     "select count(pgq.insert_event($2, t, d, e1, e2, e3, e4)) from (%s) s",
			     sel) < 0)
			abort();
		ok = bulk_exec(b, sql, 2, p, &rows);
	}
	free(sql);
	if (!ok) {
		if (b->json)
			bulk_find_bad_json(b);
		return false;
	}
	b->total += rows;
	return (!b->json || bulk_exec(b, "release savepoint pgqctl_chunk", 0, NULL, NULL)) &&
	       bulk_exec(b, "truncate pg_temp.pgqctl_in", 0, NULL, NULL);
}

/* Ctrl-C arrives through the loop: let it run once without waiting. */
static bool interrupted(CtlCtx *ctx)
{
	event_base_loop(ctx->base, EVLOOP_NONBLOCK);
	return ctl_signalled != 0;
}

/* The path for this queue and role; false when the queue cannot take events. */
static bool bulk_begin(Bulk *b)
{
	const char *p[1] = {b->queue};
	PGresult *r;

	/* the chunk is sorted by line number: in memory for the default chunk size */
	if (!bulk_exec(b, "begin", 0, NULL, NULL) ||
	    !bulk_exec(b, "set local work_mem = '64MB'", 0, NULL, NULL) ||
	    !bulk_exec(b,
		       "create temp table pgqctl_in (n bigint, l text, t text, d text,"
		       " e1 text, e2 text, e3 text, e4 text) on commit drop",
		       0, NULL, NULL))
		return false;
	/* current_event_table refuses a queue with inserts disabled (and wakes the
	   ticker of a low_latency queue once, at commit) */
	r = PQexecParams(b->pc,
			 "select coalesce(has_table_privilege(t, 'insert'), false)"
			 " and t ~ '^[a-z0-9_.]+$'"
			 " and (select to_jsonb(q)->>'queue_per_tx_limit' from pgq.queue q"
			 "      where q.queue_name = $1) is null"
			 " from pgq.current_event_table($1) t",
			 1, NULL, p, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		return bulk_fail(b, r, "before the first line");
	b->direct = PQgetvalue(r, 0, 0)[0] == 't';
	PQclear(r);
	return true;
}

static int insert_stdin(CtlCtx *ctx, CtlDb *db, const char *queue, const char *type,
			long long chunk, const char *what)
{
	Bulk b = {.ctx = ctx,
		  .db = db,
		  .queue = queue,
		  .type = type ? type : "text",
		  .what = what,
		  .json = ctx->json,
		  .chunk = chunk};
	char *line = NULL;
	size_t lcap = 0;
	long long lineno = 0;
	ssize_t n;
	bool ok;

	b.pc = ctl_db_connect_blocking(db);
	if (!b.pc)
		return CTL_EXIT_ERROR;
	b.buf = malloc(COPY_BUF);
	if (!b.buf)
		abort();
	ok = bulk_begin(&b);
	while (ok && (n = getline(&line, &lcap, stdin)) >= 0) {
		lineno++;
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = '\0';
		if (n > 0 && line[n - 1] == '\r')
			line[--n] = '\0';
		if (b.json && n > 0 && (line[0] != '{' || line[n - 1] != '}')) {
			ctl_err("%s: %s: stdin line %lld: not a JSON object", ctl_db_label(db),
				what, lineno);
			ok = false;
			break;
		}
		if (!b.json) {
			int tabs = 0;
			for (ssize_t i = 0; i < n; i++)
				tabs += line[i] == '\t';
			if (tabs > 5) {
				ctl_err("%s: %s: stdin line %lld: %d tab-separated fields, at most 6"
					" (TYPE, DATA, EXTRA1..4)",
					ctl_db_label(db), what, lineno, tabs + 1);
				ok = false;
				break;
			}
		}
		ok = bulk_add(&b, lineno, line, (size_t)n);
		if (ok && b.inchunk == b.chunk)
			ok = bulk_chunk(&b);
		if (ok && lineno % 10000 == 0 && interrupted(ctx))
			ok = false;
	}
	if (ok && ferror(stdin)) {
		ctl_err("%s: %s: reading stdin: %s", ctl_db_label(db), what, strerror(errno));
		ok = false;
	}
	ok = ok && bulk_chunk(&b);
	if (ok && interrupted(ctx))
		ok = false;
	ok = ok && bulk_exec(&b, "commit", 0, NULL, NULL);
	free(line);
	free(b.buf);
	PQfinish(b.pc); /* without a commit: rolled back */
	if (ctl_signalled) {
		ctl_err("%s: %s: interrupted: nothing inserted", ctl_db_label(db), what);
		return 128 + ctl_signalled;
	}
	if (!ok)
		return CTL_EXIT_ERROR;
	if (!ctx->quiet)
		fprintf(stderr, "%s: inserted %lld events into %s%s\n", ctl_db_label(db), b.total,
			ctl_q(queue), b.direct ? "" : " (through pgq.insert_event)");
	return CTL_EXIT_OK;
}

int cmd_insert(CtlCtx *ctx, int argc, char **argv)
{
	bool use_stdin = false;
	const char *type = NULL, *chunk_s = NULL;
	const CtlOpt opts[] = {
		{"stdin", false, &use_stdin},
		{"type", true, &type},
		{"chunk-lines", true, &chunk_s},
		{NULL},
	};
	long long chunk = CHUNK_LINES;
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	PGresult *r;
	char what[300];

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (use_stdin ? npos != 1 : (npos < 3 || npos > 7))
		return ctl_usage(argv[0], "needs QUEUE TYPE DATA [EXTRA1..4] or QUEUE --stdin");
	if (chunk_s && !ctl_parse_i64("--chunk-lines", chunk_s, 1, 100000000, &chunk))
		return CTL_EXIT_USAGE;
	snprintf(what, sizeof(what), "insert into queue %s", ctl_qq(pos[0]));
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!ctl_db_need_pgq(db) || !queue_known(db, pos[0], what)) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	if (use_stdin) {
		rc = insert_stdin(ctx, db, pos[0], type, chunk, what);
		ctl_db_close(db);
		return rc;
	}
	{
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
