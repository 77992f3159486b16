/*
 * status: the SkyTools status view (versions, queues, consumers) plus what is
 * wrong, for one database or every database of the daemon's ini (--all), asked
 * concurrently. Exit 3 when a problem was found, so it serves as a check.
 *
 * Problems:
 *  - a queue (not paused, not externally ticked) without a tick for longer than
 *    its ticker_idle_period, or with new events and no tick for longer than its
 *    ticker_max_lag (each plus --tick-grace);
 *  - a consumer with a batch open and not seen for --stuck-minutes;
 *  - retry events overdue by more than --retry-overdue-minutes (nobody moves
 *    them back), and a retry queue that grew in each of the last three rounds
 *    of --watch, or of the last three runs that shared a --state file (a
 *    retry row carries no time it entered, so one look cannot tell growth);
 *  - with several databases: one that could not be reached or asked.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "pgqctl.h"

enum { Q_VERS, Q_PGQVER, Q_EVVER, Q_QUEUES, Q_CONSUMERS, Q_RETRY, NQ };

static const char sql_vers[] =
	"select current_setting('server_version'), to_regproc('pgq.version') is not null,"
	" (select e.extname from pg_depend d join pg_extension e on e.oid = d.refobjid"
	"   where d.classid = 'pg_proc'::regclass and d.deptype = 'e'"
	"   and d.objid = to_regproc('pgq.version')),"
	" to_regproc('pgq.pgqd_ev_version') is not null,"
	" to_regclass('pgq.retry_queue') is not null"
	"   and has_table_privilege('pgq.retry_queue', 'select')";
static const char sql_retry[] =
	"select q.queue_name, count(*),"
	" coalesce(extract(epoch from now() - min(r.ev_retry_after)"
	"   filter (where r.ev_retry_after < now())), 0)::float8"
	" from pgq.retry_queue r join pgq.queue q on q.queue_id = r.ev_queue"
	" group by 1 order by 1";

typedef struct Opts {
	double grace;     /* seconds */
	double stuck;     /* seconds */
	double retry_due; /* seconds */
	bool multi;
	const char *state; /* --state FILE */
} Opts;

/* Retry counts of earlier rounds (--watch) or runs (--state), per database and
   queue: key "DB\x1fQUEUE". */
typedef struct Hist {
	char *key;
	long long counts[3];
	int n;
	bool seen; /* asked this round */
} Hist;
static Hist *hist;
static size_t nhist;

static bool grew(const char *db, const char *queue, long long count)
{
	char key[600];
	Hist *h = NULL;
	bool up;

	snprintf(key, sizeof(key), "%s\x1f%s", db, queue);
	for (size_t i = 0; i < nhist; i++)
		if (strcmp(hist[i].key, key) == 0)
			h = &hist[i];
	if (!h) {
		hist = realloc(hist, (nhist + 1) * sizeof(Hist));
		h = &hist[nhist++];
		*h = (Hist){.key = strdup(key)};
	}
	h->seen = true;
	/* keep the last three counts before this one */
	up = h->n == 3 && h->counts[0] < h->counts[1] && h->counts[1] < h->counts[2] &&
	     h->counts[2] < count;
	if (h->n == 3) {
		h->counts[0] = h->counts[1];
		h->counts[1] = h->counts[2];
		h->counts[2] = count;
	} else {
		h->counts[h->n++] = count;
	}
	return up;
}

/* --state FILE: one line per key, "KEY<TAB>N<TAB>C0<TAB>C1<TAB>C2" after a
   "pgqctl-status-state 1" header; KEY with \\, \t, \n escaped. */
#define STATE_HEADER "pgqctl-status-state 1"

static char *state_unescape(const char *s)
{
	char *d = malloc(strlen(s) + 1), *o = d;

	if (!d)
		abort();
	for (; *s; s++) {
		if (*s == '\\' && s[1]) {
			s++;
			*o++ = *s == 't' ? '\t' : *s == 'n' ? '\n' : *s;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
	return d;
}

/* Missing file: no history yet. A file that is not ours: an error (not overwritten). */
static bool state_load(const char *path)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	long long lineno = 0;

	if (!f) {
		if (errno == ENOENT)
			return true;
		ctl_err("--state %s: %s", path, strerror(errno));
		return false;
	}
	while ((n = getline(&line, &cap, f)) >= 0) {
		char *tab, *key;
		Hist h = {0};
		int got;

		lineno++;
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = '\0';
		if (lineno == 1) {
			if (strcmp(line, STATE_HEADER) != 0) {
				ctl_err("--state %s: not a pgqctl status state file (first line is "
					"not \"%s\"); not touched",
					path, STATE_HEADER);
				free(line);
				fclose(f);
				return false;
			}
			continue;
		}
		tab = strchr(line, '\t');
		if (!tab)
			continue;
		*tab = '\0';
		got = sscanf(tab + 1, "%d\t%lld\t%lld\t%lld", &h.n, &h.counts[0], &h.counts[1],
			     &h.counts[2]);
		if (got != 4 || h.n < 0 || h.n > 3)
			continue;
		key = state_unescape(line);
		h.key = key;
		hist = realloc(hist, (nhist + 1) * sizeof(Hist));
		hist[nhist++] = h;
	}
	free(line);
	fclose(f);
	return true;
}

/* Keys asked this round, and the unasked keys of databases that did not answer
   (their history waits for the next run); written beside and renamed over. */
static bool state_save(const char *path, const CtlProbe *ps, size_t n)
{
	char *tmp;
	FILE *f;
	bool ok;

	if (asprintf(&tmp, "%s.tmp", path) < 0)
		abort();
	f = fopen(tmp, "w");
	if (!f) {
		ctl_err("--state %s: %s", tmp, strerror(errno));
		free(tmp);
		return false;
	}
	fprintf(f, "%s\n", STATE_HEADER);
	for (size_t i = 0; i < nhist; i++) {
		const Hist *h = &hist[i];
		bool keep = h->seen;

		if (!keep) {
			size_t dl = strcspn(h->key, "\x1f");
			keep = true;
			for (size_t d = 0; d < n; d++)
				if (strlen(ps[d].target->label) == dl &&
				    strncmp(ps[d].target->label, h->key, dl) == 0 &&
				    ps[d].res[Q_RETRY])
					keep = false; /* answered: the queue is gone */
		}
		if (!keep)
			continue;
		for (const char *k = h->key; *k; k++) {
			if (*k == '\\' || *k == '\t' || *k == '\n')
				fprintf(f, "\\%c", *k == '\t' ? 't' : *k == '\n' ? 'n' : '\\');
			else
				fputc(*k, f);
		}
		fprintf(f, "\t%d\t%lld\t%lld\t%lld\n", h->n, h->counts[0], h->counts[1],
			h->counts[2]);
	}
	ok = fflush(f) == 0 && !ferror(f);
	ok = fclose(f) == 0 && ok;
	if (!ok || rename(tmp, path) != 0) {
		ctl_err("--state %s: %s", path, strerror(errno));
		unlink(tmp);
		free(tmp);
		return false;
	}
	free(tmp);
	return true;
}

static double num(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? -1 : atof(PQgetvalue(r, row, col));
}

typedef struct Problems {
	char **v;
	size_t n;
} Problems;

static void add_problem(Problems *p, const char *fmt, ...) PQEV_PRINTF(2, 3);
static void add_problem(Problems *p, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	p->v = realloc(p->v, (p->n + 1) * sizeof(char *));
	p->v[p->n++] = s;
}

static void free_problems(Problems *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->v[i]);
	free(p->v);
	p->v = NULL;
	p->n = 0;
}

/* A queue's problem, or "" (written into buf). */
static void queue_problem(const Opts *o, const PGresult *r, int i, char *buf, size_t len)
{
	double max_lag = num(r, i, 5), idle = num(r, i, 6), lag = num(r, i, 9);
	long long ev_new = PQgetisnull(r, i, 11) ? 0 : atoll(PQgetvalue(r, i, 11));
	char a[32], b[32];

	buf[0] = '\0';
	if (PQgetvalue(r, i, 7)[0] == 't' || PQgetvalue(r, i, 8)[0] == 't')
		return;
	if (lag < 0) {
		snprintf(buf, len, "no tick at all");
		return;
	}
	ctl_fmt_age(a, sizeof(a), lag);
	if (lag > idle + o->grace) {
		ctl_fmt_age(b, sizeof(b), idle);
		snprintf(buf, len, "no tick for %s (idle period %s): is the ticker running?", a, b);
	} else if (ev_new > 0 && lag > max_lag + o->grace) {
		ctl_fmt_age(b, sizeof(b), max_lag);
		snprintf(buf, len, "%lld new events and no tick for %s (max lag %s)", ev_new, a, b);
	}
}

static void consumer_problem(const Opts *o, const PGresult *r, int i, char *buf, size_t len)
{
	double seen = num(r, i, 3);
	char a[32];

	buf[0] = '\0';
	if (!PQgetisnull(r, i, 5) && seen > o->stuck) {
		ctl_fmt_age(a, sizeof(a), seen);
		snprintf(buf, len, "batch %s open for %s", PQgetvalue(r, i, 5), a);
	}
}

/* Retry count and overdue seconds of a queue, from the retry result (or -1). */
static long long retry_of(const CtlProbe *p, const char *queue, double *overdue)
{
	const PGresult *r = p->res[Q_RETRY];

	*overdue = 0;
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++)
		if (strcmp(PQgetvalue(r, i, 0), queue) == 0) {
			*overdue = atof(PQgetvalue(r, i, 2));
			return atoll(PQgetvalue(r, i, 1));
		}
	return 0;
}

static bool has_pgq(const CtlProbe *p)
{
	return p->res[Q_VERS] && PQgetvalue(p->res[Q_VERS], 0, 1)[0] == 't';
}

/* "plain" or "extension NAME" */
static const char *pgq_form(const CtlProbe *p, char *buf, size_t len)
{
	const char *e = ctl_val(p->res[Q_VERS], 0, 2);

	if (!e)
		return "plain";
	snprintf(buf, len, "extension %s", e);
	return buf;
}

/* Collect every problem of one database (and the per-row ones) into *pr. */
static void db_problems(const Opts *o, const CtlProbe *p, Problems *pr, bool history)
{
	const char *lab = p->target->label;
	char buf[512];

	if (!p->reachable && p->error[0]) {
		add_problem(pr, "%s: unreachable: %s", lab, p->error);
		return;
	}
	if (!p->res[Q_VERS]) {
		add_problem(pr, "%s: %s", lab, p->qerr[Q_VERS]);
		return;
	}
	if (!has_pgq(p))
		return;
	if (!p->res[Q_QUEUES] || !p->res[Q_CONSUMERS]) {
		add_problem(pr, "%s: %s", lab,
			    p->res[Q_QUEUES] ? p->qerr[Q_CONSUMERS] : p->qerr[Q_QUEUES]);
		return;
	}
	for (int i = 0; i < PQntuples(p->res[Q_QUEUES]); i++) {
		const char *q = PQgetvalue(p->res[Q_QUEUES], i, 0);
		double overdue;
		long long nr;

		queue_problem(o, p->res[Q_QUEUES], i, buf, sizeof(buf));
		if (*buf)
			add_problem(pr, "%s: queue %s: %s", lab, ctl_q(q), buf);
		nr = retry_of(p, q, &overdue);
		if (nr > 0 && overdue > o->retry_due) {
			ctl_fmt_age(buf, 32, overdue);
			add_problem(pr,
				    "%s: queue %s: %lld retry events, overdue by %s: is the "
				    "ticker's retry round running?",
				    lab, ctl_q(q), nr, buf);
		}
		if (history && nr >= 0 && grew(lab, q, nr))
			add_problem(pr,
				    "%s: queue %s: the retry queue grew in each of the last 3 "
				    "%s (%lld events)",
				    lab, ctl_q(q), o->state ? "checks" : "rounds", nr);
	}
	for (int i = 0; i < PQntuples(p->res[Q_CONSUMERS]); i++) {
		consumer_problem(o, p->res[Q_CONSUMERS], i, buf, sizeof(buf));
		if (*buf)
			add_problem(pr, "%s: consumer %s on %s: %s", lab,
				    ctl_q(PQgetvalue(p->res[Q_CONSUMERS], i, 1)),
				    ctl_q(PQgetvalue(p->res[Q_CONSUMERS], i, 0)), buf);
	}
}

static void print_text(CtlCtx *ctx, const Opts *o, const CtlProbe *ps, size_t n, const Problems *pr)
{
	const char *qh[10] = {
		"database",   "queue", "tables", "rotation", "ticker (count/lag/idle)",
		"ticker lag", "ev/s",  "new",    "retry",    "problem"};
	const char *ch[9] = {"database", "queue",   "consumer", "lag",    "last seen",
			     "batch",    "pending", "coop",     "problem"};
	int off = o->multi ? 0 : 1;
	CtlTable *qt = ctl_table_new(10 - off, qh + off);
	CtlTable *ct = ctl_table_new(9 - off, ch + off);

	for (size_t d = 0; d < n; d++) {
		const CtlProbe *p = &ps[d];
		const char *lab = p->target->label;
		char form[80];

		if (!p->reachable && p->error[0]) {
			printf("%s: unreachable: %s\n", lab, p->error);
			continue;
		}
		if (!p->res[Q_VERS]) {
			printf("%s: %s\n", lab, p->qerr[Q_VERS]);
			continue;
		}
		if (!has_pgq(p)) {
			printf("%s: PostgreSQL %s, no PgQ\n", lab,
			       PQgetvalue(p->res[Q_VERS], 0, 0));
			continue;
		}
		printf("%s: PostgreSQL %s, pgq %s (%s)%s%s\n", lab,
		       PQgetvalue(p->res[Q_VERS], 0, 0),
		       p->res[Q_PGQVER] ? ctl_val(p->res[Q_PGQVER], 0, 0) : "?",
		       pgq_form(p, form, sizeof(form)), p->res[Q_EVVER] ? ", pgqd-ev " : "",
		       p->res[Q_EVVER] ? ctl_val(p->res[Q_EVVER], 0, 0) : "");
		for (int i = 0; p->res[Q_QUEUES] && i < PQntuples(p->res[Q_QUEUES]); i++) {
			const PGresult *r = p->res[Q_QUEUES];
			char rot[32], tick[96], lag[32], eps[32], a1[32], a2[32], retry[32];
			char prob[512];
			const char *cells[10];
			double overdue;
			long long nr = retry_of(p, PQgetvalue(r, i, 0), &overdue);

			ctl_fmt_age(rot, sizeof(rot), num(r, i, 3));
			ctl_fmt_age(a1, sizeof(a1), num(r, i, 5));
			ctl_fmt_age(a2, sizeof(a2), num(r, i, 6));
			snprintf(tick, sizeof(tick), "%s/%s/%s%s%s", PQgetvalue(r, i, 4), a1, a2,
				 PQgetvalue(r, i, 7)[0] == 't' ? " paused" : "",
				 PQgetvalue(r, i, 8)[0] == 't' ? " external" : "");
			ctl_fmt_age(lag, sizeof(lag), num(r, i, 9));
			if (PQgetisnull(r, i, 10))
				snprintf(eps, sizeof(eps), "-");
			else
				snprintf(eps, sizeof(eps), "%.1f", num(r, i, 10));
			if (nr < 0)
				snprintf(retry, sizeof(retry), "?");
			else
				snprintf(retry, sizeof(retry), "%lld", nr);
			queue_problem(o, r, i, prob, sizeof(prob));
			cells[0] = lab;
			cells[1] = PQgetvalue(r, i, 0);
			cells[2] = PQgetvalue(r, i, 1);
			cells[3] = rot;
			cells[4] = tick;
			cells[5] = lag;
			cells[6] = eps;
			cells[7] = PQgetisnull(r, i, 11) ? "-" : PQgetvalue(r, i, 11);
			cells[8] = retry;
			cells[9] = prob;
			ctl_table_add(qt, cells + off);
			if (*prob)
				ctl_table_mark_bad(qt, 9 - off);
		}
		for (int i = 0; p->res[Q_CONSUMERS] && i < PQntuples(p->res[Q_CONSUMERS]); i++) {
			const PGresult *r = p->res[Q_CONSUMERS];
			char lag[32], seen[32], coop[300] = "", prob[512];
			const char *cells[9];

			ctl_fmt_age(lag, sizeof(lag), num(r, i, 2));
			ctl_fmt_age(seen, sizeof(seen), num(r, i, 3));
			if (!PQgetisnull(r, i, 8))
				snprintf(coop, sizeof(coop), "sub of %s", PQgetvalue(r, i, 8));
			consumer_problem(o, r, i, prob, sizeof(prob));
			cells[0] = lab;
			cells[1] = PQgetvalue(r, i, 0);
			cells[2] = PQgetvalue(r, i, 1);
			cells[3] = lag;
			cells[4] = seen;
			cells[5] = PQgetisnull(r, i, 5) ? "-" : PQgetvalue(r, i, 5);
			cells[6] = PQgetisnull(r, i, 7) ? "-" : PQgetvalue(r, i, 7);
			cells[7] = coop;
			cells[8] = prob;
			ctl_table_add(ct, cells + off);
			if (*prob)
				ctl_table_mark_bad(ct, 8 - off);
		}
	}
	printf("\nQueues\n");
	ctl_table_print(qt, stdout, ctx->color);
	printf("\nConsumers\n");
	ctl_table_print(ct, stdout, ctx->color);
	if (pr->n) {
		printf("\n%sProblems%s\n", ctx->color ? "\033[1;31m" : "",
		       ctx->color ? "\033[0m" : "");
		for (size_t i = 0; i < pr->n; i++)
			printf("%s\n", pr->v[i]);
	} else {
		printf("\nNo problems.\n");
	}
	ctl_table_free(qt);
	ctl_table_free(ct);
}

static void print_json(const Opts *o, const CtlProbe *ps, size_t n, const Problems *pr)
{
	static const char *const qkeys[] = {
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
	static const char *const ckeys[] = {
		"queue",         "consumer",  "lag",     "last_seen", "last_tick",
		"current_batch", "next_tick", "pending", "coop_main",
	};
	CtlJson j;
	char buf[512];

	ctl_json_init(&j, stdout);
	ctl_json_obj_begin(&j, NULL);
	ctl_json_bool(&j, "ok", pr->n == 0);
	ctl_json_arr_begin(&j, "problems");
	for (size_t i = 0; i < pr->n; i++)
		ctl_json_str(&j, NULL, pr->v[i]);
	ctl_json_arr_end(&j);
	ctl_json_arr_begin(&j, "databases");
	for (size_t d = 0; d < n; d++) {
		const CtlProbe *p = &ps[d];
		bool ok = p->reachable && p->res[Q_VERS];

		ctl_json_obj_begin(&j, NULL);
		ctl_json_str(&j, "database", p->target->label);
		ctl_json_str(&j, "cluster", p->target->cluster);
		ctl_json_bool(&j, "reachable", p->reachable);
		ctl_json_str(&j, "error",
			     p->error[0] ? p->error : (!p->res[Q_VERS] ? p->qerr[Q_VERS] : NULL));
		ctl_json_str(&j, "server", ok ? ctl_val(p->res[Q_VERS], 0, 0) : NULL);
		ctl_json_str(&j, "pgq", ok && has_pgq(p) ? ctl_val(p->res[Q_PGQVER], 0, 0) : NULL);
		ctl_json_str(&j, "pgq_form",
			     ok && has_pgq(p)
				     ? (ctl_val(p->res[Q_VERS], 0, 2) ? "extension" : "plain")
				     : NULL);
		ctl_json_str(&j, "pgqd_ev", ok ? ctl_val(p->res[Q_EVVER], 0, 0) : NULL);
		ctl_json_arr_begin(&j, "queues");
		for (int i = 0; ok && p->res[Q_QUEUES] && i < PQntuples(p->res[Q_QUEUES]); i++) {
			double overdue;
			long long nr = retry_of(p, PQgetvalue(p->res[Q_QUEUES], i, 0), &overdue);

			ctl_json_obj_begin(&j, NULL);
			for (int c = 0; c < 14; c++)
				ctl_json_cell(&j, qkeys[c], p->res[Q_QUEUES], i, c);
			if (nr < 0)
				ctl_json_null(&j, "retry_events");
			else
				ctl_json_int(&j, "retry_events", nr);
			ctl_json_num(&j, "retry_overdue", nr < 0 ? 0 : overdue);
			queue_problem(o, p->res[Q_QUEUES], i, buf, sizeof(buf));
			ctl_json_str(&j, "problem", *buf ? buf : NULL);
			ctl_json_obj_end(&j);
		}
		ctl_json_arr_end(&j);
		ctl_json_arr_begin(&j, "consumers");
		for (int i = 0; ok && p->res[Q_CONSUMERS] && i < PQntuples(p->res[Q_CONSUMERS]);
		     i++) {
			ctl_json_obj_begin(&j, NULL);
			for (int c = 0; c < 9; c++)
				ctl_json_cell(&j, ckeys[c], p->res[Q_CONSUMERS], i, c);
			consumer_problem(o, p->res[Q_CONSUMERS], i, buf, sizeof(buf));
			ctl_json_str(&j, "problem", *buf ? buf : NULL);
			ctl_json_obj_end(&j);
		}
		ctl_json_arr_end(&j);
		ctl_json_obj_end(&j);
	}
	ctl_json_arr_end(&j);
	ctl_json_obj_end(&j);
	ctl_json_end(&j);
}

static void wake(evutil_socket_t fd, short what, void *arg)
{
	*(bool *)arg = true;
}

static bool parse_secs(const char *opt, const char *v, double scale, double *out)
{
	char *end;
	double d;

	if (!v)
		return true;
	d = strtod(v, &end);
	if (end == v || *end || !(d >= 0) || d > 1e9) {
		ctl_err("%s: \"%s\" is not a non-negative number", opt, v);
		return false;
	}
	*out = d * scale;
	return true;
}

int cmd_status(CtlCtx *ctx, int argc, char **argv)
{
	const char *watch = NULL, *grace = NULL, *stuck = NULL, *retry_due = NULL, *state = NULL;
	const CtlOpt opts[] = {
		{"watch", true, &watch},
		{"state", true, &state},
		{"tick-grace", true, &grace},
		{"stuck-minutes", true, &stuck},
		{"retry-overdue-minutes", true, &retry_due},
		{NULL},
	};
	static const char *const null_param[1] = {NULL};
	const CtlProbeQuery q[NQ] = {
		[Q_VERS] = {sql_vers, 0, NULL, 0},
		[Q_PGQVER] = {"select pgq.version()", 0, NULL, 1},
		[Q_EVVER] = {"select pgq.pgqd_ev_version()", 0, NULL, 3},
		[Q_QUEUES] = {ctl_queue_sql, 0, NULL, 1},
		[Q_CONSUMERS] = {ctl_consumer_sql, 1, null_param, 1},
		[Q_RETRY] = {sql_retry, 0, NULL, 4},
	};
	Opts o = {.grace = 10, .stuck = 300, .retry_due = 600};
	double every = 0;
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlTarget *t;
	size_t n;

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos)
		return ctl_usage(argv[0], "takes no arguments");
	if (!parse_secs("--tick-grace", grace, 1, &o.grace) ||
	    !parse_secs("--stuck-minutes", stuck, 60, &o.stuck) ||
	    !parse_secs("--retry-overdue-minutes", retry_due, 60, &o.retry_due) ||
	    !parse_secs("--watch", watch, 1, &every))
		return CTL_EXIT_USAGE;
	if (watch && every < 0.1)
		return ctl_usage(argv[0], "--watch needs at least 0.1 seconds");
	o.state = state;
	if (state && !state_load(state))
		return CTL_EXIT_ERROR;
	if ((rc = ctl_targets(ctx, &t, &n)))
		return rc;
	o.multi = ctx->ini != NULL && (ctx->all || ctx->cluster);
	for (;;) {
		CtlProbe *ps = ctl_multi_run(ctx, t, n, q, NQ);
		Problems pr = {0};
		static bool tick; /* static: a timer left pending at Ctrl-C may still fire */
		struct timeval tv;

		if (!ps) {
			/* interrupted: --watch ends normally, a single round with 128+signal */
			if (!watch)
				rc = 128 + ctl_signalled;
			break;
		}
		for (size_t d = 0; d < n; d++) {
			db_problems(&o, &ps[d], &pr, watch != NULL || state != NULL);
			if (!o.multi && !watch &&
			    (!ps[d].reachable || !ps[d].res[Q_VERS] || !has_pgq(&ps[d]))) {
				/* a single database that cannot be asked is an error */
				if (ps[d].error[0])
					ctl_err("%s: status: %s", ps[d].target->label, ps[d].error);
				else if (!ps[d].res[Q_VERS])
					ctl_err("%s: status: %s", ps[d].target->label,
						ps[d].qerr[Q_VERS]);
				else
					ctl_err("%s: status: no PgQ in this database; see pgqctl "
						"install",
						ps[d].target->label);
				ctl_probes_free(ps, n);
				free_problems(&pr);
				ctl_targets_free(t, n);
				return CTL_EXIT_ERROR;
			}
		}
		if (state && !state_save(state, ps, n)) {
			ctl_probes_free(ps, n);
			free_problems(&pr);
			rc = CTL_EXIT_ERROR;
			break;
		}
		for (size_t i = 0; i < nhist; i++)
			hist[i].seen = false;
		if (watch && isatty(STDOUT_FILENO))
			fputs("\033[H\033[2J", stdout);
		if (ctx->json)
			print_json(&o, ps, n, &pr);
		else
			print_text(ctx, &o, ps, n, &pr);
		fflush(stdout);
		rc = pr.n ? CTL_EXIT_PROBLEM : CTL_EXIT_OK;
		ctl_probes_free(ps, n);
		free_problems(&pr);
		if (!watch)
			break;
		tv.tv_sec = (time_t)every;
		tv.tv_usec = (suseconds_t)((every - (double)tv.tv_sec) * 1e6);
		if (event_base_once(ctx->base, -1, EV_TIMEOUT, wake, &tick, &tv) != 0)
			abort();
		tick = false;
		if (!ctl_loop_until(ctx, &tick))
			break;
	}
	ctl_targets_free(t, n);
	for (size_t i = 0; i < nhist; i++)
		free(hist[i].key);
	free(hist);
	hist = NULL;
	nhist = 0;
	return rc;
}
