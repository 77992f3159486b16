/*
 * pgqctl node switchover / failover / change-provider on a live cascade
 * root -> b1 -> b2 -> lf (four databases of the private server), served by a
 * real pgqd-ev (ticker and the root's and branches' workers) while
 *   - a producer thread writes 10 events every 20 ms (500 events/s) to
 *     whichever node takes them (the application's part: on "Insert into queue
 *     disallowed" it tries the other nodes),
 *   - a consumer thread reads every root/branch queue as PgQ consumer "app",
 *     recording each batch's events in table "seen" in the batch's own
 *     transaction (exactly-once),
 *   - the leaf's worker (libpgqev, in a thread) applies every event into table
 *     "applied" in the batch's transaction (exactly-once).
 * Afterwards every consumer must hold each acknowledged event exactly once.
 * Every step of every plan is interrupted once (PGQCTL_STOP_AFTER_STEP) and the
 * command run again; --dry-run must change nothing. A dead node is a database
 * that refuses connections (ALLOW_CONNECTIONS false, backends terminated): one
 * test server holds all four nodes.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "castest.h"
#include "ctlrun.h"
#include "daemon.h"

#define NNODES 4
enum { N_ROOT, N_B1, N_B2, N_LF };
static const char *const node_names[NNODES] = {"root", "b1", "b2", "lf"};

typedef struct Cas {
	char *db[NNODES];
	char *dsn[NNODES];
	Daemon *d;
	/* leaf worker thread */
	struct event_base *lbase;
	CtWorker lw;
	pthread_t lth;
	volatile bool lstop;
	/* consumer thread */
	pthread_t cth;
	volatile bool cstop;
	volatile bool skip[NNODES]; /* a "dead" node: not read */
	/* producer thread */
	pthread_t pth;
	volatile bool pstop;
	pthread_mutex_t mu;
	int64_t next;   /* next event number */
	int64_t *acked; /* numbers whose insert committed */
	size_t nacked, cap;
	int64_t *unsure; /* numbers whose commit answer was lost */
	size_t nunsure, ucap;
	int cur; /* node written to */
	int64_t last_ok_ms, max_gap_ms;
	bool measuring;
} Cas;

static Cas *diag_cas; /* the running cascade, for diagnose() */

/* ---- setup ---- */

/* Ticks every 0.2 s under load (as pgqd's defaults, scaled down), 1 s idle. */
static void node_conf(const char *db)
{
	pgt_exec_db(db, "select pgq.set_queue_config('" CT_QUEUE "', 'ticker_max_lag', '0.2'),"
			" pgq.set_queue_config('" CT_QUEUE "', 'ticker_max_count', '1000'),"
			" pgq.set_queue_config('" CT_QUEUE "', 'ticker_idle_period', '1')");
	pgt_exec_db(db, "create table seen (ev_id bigint, data bigint)");
	pgt_exec_db(db, "select pgq.register_consumer('" CT_QUEUE "', 'app')");
}

static void *leaf_loop(void *arg)
{
	Cas *c = arg;
	while (!c->lstop)
		event_base_loop(c->lbase, EVLOOP_ONCE);
	return NULL;
}

static void *consumer_loop(void *arg)
{
	Cas *c = arg;
	PGconn *conn[NNODES] = {0};
	bool failing[NNODES] = {0};

	while (!c->cstop) {
		for (int i = N_ROOT; i <= N_B2; i++) {
			if (c->skip[i]) {
				if (conn[i])
					PQfinish(conn[i]);
				conn[i] = NULL;
				continue;
			}
			if (!conn[i] || PQstatus(conn[i]) != CONNECTION_OK) {
				if (conn[i])
					PQfinish(conn[i]);
				conn[i] = PQconnectdb(pgt_connstr(c->db[i], false));
				if (PQstatus(conn[i]) != CONNECTION_OK)
					continue;
			}
			PGresult *r =
				PQexec(conn[i], "select pgq.next_batch('" CT_QUEUE "', 'app')");
			if (PQresultStatus(r) != PGRES_TUPLES_OK || PQgetisnull(r, 0, 0)) {
				/* say why once per streak: a silent error hid a wrong database */
				if (PQresultStatus(r) != PGRES_TUPLES_OK && !failing[i])
					fprintf(stderr, "# consumer of %s: %s", node_names[i],
						PQerrorMessage(conn[i]));
				failing[i] = PQresultStatus(r) != PGRES_TUPLES_OK;
				PQclear(r);
				continue;
			}
			failing[i] = false;
			char bid[32];
			snprintf(bid, sizeof(bid), "%s", PQgetvalue(r, 0, 0));
			PQclear(r);
			const char *p[1] = {bid};
			PQclear(PQexec(conn[i], "begin"));
			r = PQexecParams(
				conn[i],
				"insert into seen select ev_id, ev_data::bigint"
				" from pgq.get_batch_events($1::bigint) where ev_type = 'data'",
				1, NULL, p, NULL, NULL, 0);
			bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
			PQclear(r);
			if (ok) {
				r = PQexecParams(conn[i], "select pgq.finish_batch($1::bigint)", 1,
						 NULL, p, NULL, NULL, 0);
				ok = PQresultStatus(r) == PGRES_TUPLES_OK;
				PQclear(r);
			}
			PQclear(PQexec(conn[i], ok ? "commit" : "rollback"));
		}
		usleep(20000);
	}
	for (int i = 0; i < NNODES; i++)
		if (conn[i])
			PQfinish(conn[i]);
	return NULL;
}

static void push(int64_t **v, size_t *n, size_t *cap, int64_t from, int count)
{
	if (*n + (size_t)count > *cap) {
		*cap = (*cap + (size_t)count) * 2;
		*v = realloc(*v, *cap * sizeof(int64_t));
		ck_assert_ptr_nonnull(*v);
	}
	for (int k = 0; k < count; k++)
		(*v)[(*n)++] = from + k;
}

/* 10 events per transaction, a transaction every 20 ms: 500 events/s (the
   1,000 events/s figures come from bench/cascade/switchover). */
#define PER_TX    10
#define PERIOD_MS 20

static void *producer_loop(void *arg)
{
	Cas *c = arg;
	PGconn *conn[NNODES] = {0};
	int64_t next_at = pgt_now_ms();

	while (!c->pstop) {
		char a[32], b[32];
		const char *p[2] = {a, b};
		bool ok = false;
		int start = c->cur;

		snprintf(a, sizeof(a), "%" PRId64, c->next);
		snprintf(b, sizeof(b), "%" PRId64, c->next + PER_TX - 1);
		/* the current node first, then the others: the application's part */
		for (int k = 0; k < N_LF && !ok; k++) {
			int i = (start + k) % N_LF;
			if (!conn[i] || PQstatus(conn[i]) != CONNECTION_OK) {
				if (conn[i])
					PQfinish(conn[i]);
				char cs[700];
				snprintf(cs, sizeof(cs), "%s connect_timeout=2",
					 pgt_connstr(c->db[i], false));
				conn[i] = PQconnectdb(cs);
				if (PQstatus(conn[i]) != CONNECTION_OK)
					continue;
			}
			PGresult *r = PQexecParams(
				conn[i],
				"select count(pgq.insert_event('" CT_QUEUE "', 'data', s::text))"
				" from generate_series($1::bigint, $2::bigint) s",
				2, NULL, p, NULL, NULL, 0);
			ok = PQresultStatus(r) == PGRES_TUPLES_OK;
			bool lost_answer = !ok && PQstatus(conn[i]) != CONNECTION_OK;
			PQclear(r);
			pthread_mutex_lock(&c->mu);
			if (ok) {
				int64_t now = pgt_now_ms();
				push(&c->acked, &c->nacked, &c->cap, c->next, PER_TX);
				if (c->measuring && now - c->last_ok_ms > c->max_gap_ms)
					c->max_gap_ms = now - c->last_ok_ms;
				c->last_ok_ms = now;
				c->cur = i;
			} else if (lost_answer) {
				/* committed or not: never written again elsewhere */
				push(&c->unsure, &c->nunsure, &c->ucap, c->next, PER_TX);
				c->next += PER_TX;
				snprintf(a, sizeof(a), "%" PRId64, c->next);
				snprintf(b, sizeof(b), "%" PRId64, c->next + PER_TX - 1);
			}
			if (ok)
				c->next += PER_TX;
			pthread_mutex_unlock(&c->mu);
		}
		next_at += PERIOD_MS;
		int64_t now = pgt_now_ms();
		if (next_at > now)
			usleep((useconds_t)(next_at - now) * 1000);
		else
			next_at = now;
	}
	for (int i = 0; i < NNODES; i++)
		if (conn[i])
			PQfinish(conn[i]);
	return NULL;
}

static char *ini_for(Cas *c, bool with_root_worker)
{
	char *ini = malloc(16384);
	size_t n;
	ck_assert_ptr_nonnull(ini);
	n = (size_t)snprintf(
		ini, 16384,
		"%sdatabase_list = %s, %s, %s\nticker_period = 0.05\nstats_period = 0\n",
		dmn_base_ini(), c->db[N_ROOT], c->db[N_B1], c->db[N_B2]);
	for (int i = N_ROOT; i <= N_B2; i++)
		n += (size_t)snprintf(ini + n, 16384 - n,
				      "[node %s]\nqueue = " CT_QUEUE
				      "\ndb = %s\npoll_period = 0.05\n"
				      "wm_publish_period = 0.2\n",
				      node_names[i], pgt_connstr(c->db[i], false));
	(void)with_root_worker;
	return ini;
}

static void cas_start(Cas *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	for (int i = 0; i < NNODES; i++) {
		c->db[i] = ct_node_db();
		c->dsn[i] = strdup(ctr_dsn(c->db[i], NULL));
	}
	ct_make_root(c->db[N_ROOT], "root");
	ct_make_sub("branch", c->db[N_B1], "b1", c->db[N_ROOT], "root", c->db[N_ROOT]);
	ct_make_sub("branch", c->db[N_B2], "b2", c->db[N_B1], "b1", c->db[N_ROOT]);
	ct_make_sub("leaf", c->db[N_LF], "lf", c->db[N_B2], "b2", c->db[N_ROOT]);
	for (int i = N_ROOT; i <= N_B2; i++)
		node_conf(c->db[i]);
	ct_make_applied(c->db[N_LF]);
	char *ini = ini_for(c, true);
	c->d = dmn_start(ini, NULL);
	free(ini);
	ck_assert(dmn_wait_notify(c->d, "READY=1", 10000));
	c->lbase = event_base_new();
	c->lw.apply = true;
	c->lw.quiet = true;
	ct_start_on(&c->lw, c->lbase, c->db[N_LF], 50 * PGQEV_USEC_PER_MSEC);
	ck_assert_int_eq(pthread_create(&c->lth, NULL, leaf_loop, c), 0);
	ck_assert_int_eq(pthread_create(&c->cth, NULL, consumer_loop, c), 0);
	c->cur = N_ROOT;
	c->last_ok_ms = pgt_now_ms();
	diag_cas = c;
	ck_assert_int_eq(pthread_create(&c->pth, NULL, producer_loop, c), 0);
}

static void producer_stop(Cas *c)
{
	if (!c->pstop) {
		c->pstop = true;
		pthread_join(c->pth, NULL);
	}
}

static void cas_stop(Cas *c, bool dump)
{
	diag_cas = NULL;
	producer_stop(c);
	c->cstop = true;
	pthread_join(c->cth, NULL);
	c->lstop = true;
	event_base_loopbreak(c->lbase);
	pthread_join(c->lth, NULL);
	pgqev_cascade_free(c->lw.w);
	event_base_free(c->lbase);
	dmn_signal(c->d, SIGTERM);
	dmn_wait_exit(c->d, 10000);
	dmn_free(c->d, dump);
	for (int i = 0; i < NNODES; i++) {
		free(c->db[i]);
		free(c->dsn[i]);
	}
	free(c->acked);
	free(c->unsure);
}

/* ---- checks ---- */

/* Run the command with PGQCTL_STOP_AFTER_STEP = 1, 2, ... until it completes:
   each run must stop right after its step, the last one finish. In the slow
   suite (PGQD_TEST_EVERY_STEP=1) every step is interrupted; in the default
   suite every third one (1, 4, 7, ...), to stay short. Returns the final run;
   *nsteps is the plan's length as the first run printed it. */
static CtlRun run_interrupted(const char *dsn, const char *const *args, int *nsteps)
{
	const char *every = getenv("PGQD_TEST_EVERY_STEP");
	int inc = every && *every == '1' ? 1 : 3, prev = 0;

	*nsteps = 0;
	for (int n = 1; n < 40; n += inc) {
		char v[16];
		snprintf(v, sizeof(v), "%d", n);
		setenv("PGQCTL_STOP_AFTER_STEP", v, 1);
		int64_t t0 = pgt_now_ms();
		CtlRun r = ctr_node(dsn, args);
		unsetenv("PGQCTL_STOP_AFTER_STEP");
		fprintf(stderr, "# %s stopped after step %d: exit %d in %" PRId64 " ms\n", args[0],
			n, r.rc, pgt_now_ms() - t0);
		if (n == 1) {
			const char *at = strstr(r.out, "step 1/");
			ck_assert_msg(at, "no plan printed:\n%s\n%s", r.out, r.err);
			*nsteps = atoi(at + 7);
		}
		if (r.rc == 0) {
			ck_assert_msg(n > 1, "nothing to interrupt:\n%s", r.out);
			ck_assert_msg(n > *nsteps, "finished at run %d of a %d-step plan:\n%s", n,
				      *nsteps, r.out);
			return r;
		}
		char want[64];
		snprintf(want, sizeof(want), "stopped after step %d ", n);
		ck_assert_msg(r.rc == 1 && strstr(r.err, want),
			      "run %d: exit %d\nstdout: %s\nstderr: %s", n, r.rc, r.out, r.err);
		if (prev > 0) {
			/* the steps before were found done, not done again; except the
			   catch-up while writes go on, whose target (OLD's last tick) may
			   have moved on since the run before */
			snprintf(want, sizeof(want), "step %d/", prev);
			const char *at = strstr(r.out, want);
			const char *eol = at ? strchr(at, '\n') : NULL;
			const char *moving = at ? strstr(at, "while writes go on") : NULL;
			ck_assert_msg(at && (strstr(at, "already done") ||
					     (moving && (!eol || moving < eol))),
				      "run %d:\n%s", n, r.out);
		}
		prev = n;
		ctr_free(&r);
	}
	ck_abort_msg("the plan never finished");
	return (CtlRun){0};
}

/* One row of node state: type|provider|paused per node, and queue flags. */
static char *snapshot(Cas *c)
{
	char *all = calloc(1, 8192);
	ck_assert_ptr_nonnull(all);
	for (int i = 0; i < NNODES; i++) {
		PGconn *k = pgt_connect(c->db[i]);
		char *v = pgt_value(
			k,
			"select n.node_type || '|' || s.provider_node || '|' || s.paused || '|' ||"
			" s.last_tick_id >= 0 || '|' || coalesce((select queue_disable_insert::text"
			" from pgq.queue where queue_name = 'cq'), '-') || '|' ||"
			" (select count(*) from pgq_node.subscriber_info) || '|' ||"
			" (select string_agg(node_name || dead::text, ',' order by node_name)"
			"  from pgq_node.node_location)"
			" from pgq_node.node_info n join pgq_node.local_state s"
			" on s.consumer_name = n.worker_name");
		PQfinish(k);
		strcat(all, v ? v : "?");
		strcat(all, ";");
		free(v);
	}
	return all;
}

#define SEEN_SQL    "select data from seen"
#define APPLIED_SQL "select ev_data::bigint from applied where ev_type = 'data'"

typedef struct Count {
	const char *db, *sql;
	size_t want;
} Count;

static bool count_reached(void *arg)
{
	Count *k = arg;
	size_t n;
	int64_t *v = ct_fetch_sorted(k->db, k->sql, &n);
	free(v);
	return n >= k->want;
}

/* ---- diagnostics for a consumer that did not get everything ---- */

/* Append one query's rows (cells joined by " ") to the report. */
static void diag_rows(FILE *f, const char *db, const char *label, const char *sql, int nparams,
		      const char *const *params)
{
	PGconn *k = PQconnectdb(pgt_connstr(db, false));
	if (PQstatus(k) != CONNECTION_OK) {
		fprintf(f, "#   %s: no connection: %s", label, PQerrorMessage(k));
		PQfinish(k);
		return;
	}
	PGresult *r = PQexecParams(k, sql, nparams, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(f, "#   %s: %s", label, PQerrorMessage(k));
	} else {
		for (int i = 0; i < PQntuples(r); i++) {
			fprintf(f, "#   %s:", label);
			for (int j = 0; j < PQnfields(r); j++)
				fprintf(f, " %s=%s", PQfname(r, j),
					PQgetisnull(r, i, j) ? "null" : PQgetvalue(r, i, j));
			fputc('\n', f);
		}
		if (PQntuples(r) == 0)
			fprintf(f, "#   %s: no rows\n", label);
	}
	PQclear(r);
	PQfinish(k);
}

static const char *const state_names[] = {"stopped", "connecting", "listening",
					  "idle",    "processing", "backoff"};

/* Everything that tells a stall from a loss, as TAP comments: each node's
   pgq_node state and last tick, its consumer "app", where the first missing
   events are (on which node, with which txid, visible in which tick), the leaf
   worker's state and the daemon's log tail. */
static void diagnose(const char *what, const int64_t *want, size_t nwant, const int64_t *have,
		     size_t nhave)
{
	Cas *c = diag_cas;
	FILE *f = stderr;
	char missing[2048] = "";
	size_t nmiss = 0, len = 0;

	for (size_t i = 0; i < nwant; i++)
		if (!ct_contains(have, nhave, want[i])) {
			if (nmiss < 20)
				len += (size_t)snprintf(missing + len, sizeof(missing) - len,
							"%s%" PRId64, nmiss ? "," : "", want[i]);
			nmiss++;
		}
	size_t nextra = 0;
	for (size_t i = 0; i < nhave; i++)
		if (!ct_contains(want, nwant, have[i]) && nextra++ < 5)
			fprintf(f, "# DIAG %s: event %" PRId64 " was not acknowledged\n", what,
				have[i]);
	fprintf(f, "# DIAG %s: has %zu, expected %zu; %zu missing: %s; %zu unexpected\n", what,
		nhave, nwant, nmiss, missing, nextra);
	if (!c)
		return;
	for (int i = 0; i < NNODES; i++) {
		const char *db = c->db[i];
		fprintf(f, "# DIAG node %s (%s)\n", node_names[i], db);
		diag_rows(f, db, "node",
			  "select n.node_type, n.node_name, n.worker_name, s.provider_node,"
			  " s.last_tick_id, s.paused, s.uptodate, s.cur_error"
			  " from pgq_node.node_info n join pgq_node.local_state s"
			  " on s.queue_name = n.queue_name",
			  0, NULL);
		diag_rows(f, db, "subscribers", "select * from pgq_node.subscriber_info", 0, NULL);
		if (i == N_LF)
			continue;
		diag_rows(
			f, db, "queue",
			"select queue_disable_insert, queue_external_ticker, queue_ticker_paused,"
			" (select max(tick_id) from pgq.tick where tick_queue = queue_id) as last_tick,"
			" (select tick_snapshot from pgq.tick where tick_queue = queue_id"
			"  order by tick_id desc limit 1) as last_snap,"
			" pgq.seq_getval(queue_tick_seq) as tick_seq,"
			" pgq.seq_getval(queue_event_seq) as event_seq"
			" from pgq.queue where queue_name = '" CT_QUEUE "'",
			0, NULL);
		diag_rows(f, db, "consumers",
			  "select consumer_name, last_tick, current_batch, next_tick, lag,"
			  " pending_events from pgq.get_consumer_info('" CT_QUEUE "')",
			  0, NULL);
		/* the first missing events, as this node's queue holds them */
		char list[2048] = "";
		size_t ll = 0, k = 0;
		for (size_t j = 0; j < nwant && k < 5; j++)
			if (!ct_contains(have, nhave, want[j])) {
				ll += (size_t)snprintf(list + ll, sizeof(list) - ll,
						       "%s'%" PRId64 "'", k ? "," : "", want[j]);
				k++;
			}
		if (k == 0)
			continue;
		char sql[3000];
		snprintf(sql, sizeof(sql),
			 "select e.ev_id, e.ev_data, e.ev_txid, e.ev_time,"
			 " (select min(t.tick_id) from pgq.tick t join pgq.queue q"
			 "  on q.queue_id = t.tick_queue where q.queue_name = '" CT_QUEUE "'"
			 "  and txid_visible_in_snapshot(e.ev_txid, t.tick_snapshot)) as first_tick"
			 " from pgq.event_1 e where e.ev_type = 'data' and e.ev_data in (%s)",
			 list);
		diag_rows(f, db, "missing events here", sql, 0, NULL);
	}
	if (c->lw.w)
		fprintf(f, "# DIAG leaf worker: state %s, %d errors, last: %s\n",
			state_names[pgqev_cascade_state(c->lw.w)], c->lw.errors, c->lw.last_error);
	size_t nl = dmn_log_nlines(c->d);
	fprintf(f, "# DIAG daemon log, last %d of %zu lines:\n", nl < 60 ? (int)nl : 60, nl);
	for (size_t i = nl > 60 ? nl - 60 : 0; i < nl; i++)
		fprintf(f, "#   %s\n", dmn_log_line(c->d, i));
}

/* The consumer on db holds exactly `want` (sorted, no duplicates); a report
   (diagnose) when it is short. */
static void expect_exactly(const char *what, const char *db, const char *sql, const int64_t *want,
			   size_t nwant)
{
	CtExactly how = {.diag = diagnose};
	ct_expect_exactly(what, db, sql, want, nwant, &how);
}

static void wait_applied(Cas *c, size_t n)
{
	Count k = {c->db[N_LF], APPLIED_SQL, n};
	ck_assert_msg(pgt_wait_until(count_reached, &k, 20000, 50),
		      "the leaf did not apply %zu events", n);
}

static int64_t *acked_sorted(Cas *c, size_t *n)
{
	pthread_mutex_lock(&c->mu);
	*n = c->nacked;
	int64_t *v = malloc((*n + 1) * sizeof(int64_t));
	ck_assert_ptr_nonnull(v);
	memcpy(v, c->acked, *n * sizeof(int64_t));
	pthread_mutex_unlock(&c->mu);
	qsort(v, *n, sizeof(int64_t), ct_cmp64);
	return v;
}

typedef struct Writes {
	Cas *c;
	int node;
	size_t after;
} Writes;

static bool writes_to(void *arg)
{
	Writes *w = arg;
	pthread_mutex_lock(&w->c->mu);
	bool ok = w->c->cur == w->node && w->c->nacked > w->after;
	pthread_mutex_unlock(&w->c->mu);
	return ok;
}

typedef struct Conns {
	const char *db;
	int want, last;
} Conns;

static bool worker_conns_are(void *arg)
{
	Conns *k = arg;
	char sql[256];
	snprintf(sql, sizeof(sql),
		 "select count(*) from pg_stat_activity where datname = '%s'"
		 " and application_name = 'pgqev-cascade'",
		 k->db);
	k->last = (int)pgt_int_db("postgres", sql);
	return k->last == k->want;
}

static void expect_role(const char *db, const char *want)
{
	PGconn *k = pgt_connect(db);
	char *v = pgt_value(k, "select n.node_type || ':' || s.provider_node"
			       " from pgq_node.node_info n join pgq_node.local_state s"
			       " on s.consumer_name = n.worker_name");
	PQfinish(k);
	ck_assert_msg(v && strcmp(v, want) == 0, "%s: %s, expected %s", db, v ? v : "-", want);
	free(v);
}

/* ---- tests ---- */

/* A queue's ticker settings, one line. */
#define TICKER_SETTINGS_SQL                                                                          \
	"select concat_ws(' ', queue_ticker_max_count, queue_ticker_max_lag,"                        \
	" queue_ticker_idle_period, queue_low_latency) from pgq.queue where queue_name = '" CT_QUEUE \
	"'"

START_TEST(test_switchover_under_load)
{
	Cas c;
	cas_start(&c);
	wait_applied(&c, 500);

	/* --dry-run prints the plan and changes nothing */
	char *before = snapshot(&c);
	CtlRun r = ctr_node(c.dsn[N_B2], (const char *[]){"switchover", "b2", "--cascade", CT_QUEUE,
							  "--dry-run", NULL});
	ctr_expect(&r, 0, "step 12/12: resume the worker of root: to do", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "dry run: nothing was changed"));
	ctr_free(&r);
	char *after = snapshot(&c);
	ck_assert_str_eq(before, after);
	free(before);
	free(after);

	/* b2's own ticker settings, unused while it is a branch, differ from the
	   root's: the root's go with its role */
	pgt_exec_db(c.db[N_B2],
		    "select pgq.set_queue_config('" CT_QUEUE "', 'ticker_max_count', '7'),"
		    " pgq.set_queue_config('" CT_QUEUE "', 'ticker_max_lag', '17'),"
		    " pgq.set_queue_config('" CT_QUEUE "', 'ticker_idle_period', '19'),"
		    " pgq.set_queue_config('" CT_QUEUE "', 'low_latency', 'false')");
	char *root_ticker = ct_value(c.db[N_ROOT], TICKER_SETTINGS_SQL);
	char *b2_ticker = ct_value(c.db[N_B2], TICKER_SETTINGS_SQL);
	ck_assert_str_ne(root_ticker, b2_ticker);
	free(b2_ticker);

	/* switchover root -> b2 (two hops below) under 1,000 events/s */
	pthread_mutex_lock(&c.mu);
	c.measuring = true;
	c.max_gap_ms = 0;
	pthread_mutex_unlock(&c.mu);
	int64_t t0 = pgt_now_ms();
	r = ctr_node(c.dsn[N_B2],
		     (const char *[]){"switchover", "b2", "--cascade", CT_QUEUE, NULL});
	int64_t took = pgt_now_ms() - t0;
	ctr_dump(&r);
	ctr_expect(&r, 0, "switchover done in", NULL);
	double pause = ctr_number_after(r.out, "write pause: ");
	ck_assert_ptr_nonnull(strstr(r.out, "producers: write to b2 now"));
	ctr_free(&r);
	expect_role(c.db[N_B2], "root:b2");
	expect_role(c.db[N_ROOT], "branch:b2");
	expect_role(c.db[N_B1], "branch:root");
	expect_role(c.db[N_LF], "leaf:b2");
	ct_expect_value(c.db[N_B2], TICKER_SETTINGS_SQL, root_ticker);
	free(root_ticker);
	/* b2's worker, a root's now, lets go of its former provider b1: only b1's
	   own worker stays connected there */
	Conns k = {c.db[N_B1], 1};
	ck_assert_msg(pgt_wait_until(worker_conns_are, &k, 10000, 50),
		      "%d worker connections on b1, expected 1", k.last);
	Writes w = {&c, N_B2, c.nacked + 200};
	ck_assert_msg(pgt_wait_until(writes_to, &w, 10000, 20), "the producer did not move to b2");
	pthread_mutex_lock(&c.mu);
	int64_t gap = c.max_gap_ms;
	c.measuring = false;
	pthread_mutex_unlock(&c.mu);
	fprintf(stderr,
		"# switchover root -> b2 at 500 ev/s: command %" PRId64 " ms, write pause %.3f s"
		" (pgqctl), longest gap between the producer's commits %" PRId64 " ms\n",
		took, pause, gap);

	/* and back, interrupted after every step, still under load */
	int nsteps;
	r = run_interrupted(c.dsn[N_ROOT],
			    (const char *[]){"switchover", "root", "--cascade", CT_QUEUE, NULL},
			    &nsteps);
	ck_assert_int_eq(nsteps, 12);
	ck_assert_msg(strstr(r.out, "already done: root is the root") ||
			      strstr(r.out, "switchover done in"),
		      "%s", r.out);
	ctr_free(&r);
	expect_role(c.db[N_ROOT], "root:root");
	expect_role(c.db[N_B2], "branch:root");
	w = (Writes){&c, N_ROOT, c.nacked + 200};
	ck_assert_msg(pgt_wait_until(writes_to, &w, 10000, 20), "the producer did not move back");

	/* change-provider: the leaf from b2 to b1, interrupted after every step */
	r = run_interrupted(c.dsn[N_LF],
			    (const char *[]){"change-provider", "--cascade", CT_QUEUE, "--provider",
					     "b1", NULL},
			    &nsteps);
	ck_assert_int_eq(nsteps, 6);
	ctr_free(&r);
	expect_role(c.db[N_LF], "leaf:b1");
	ck_assert_int_eq(pgt_int_db(c.db[N_B2], "select count(*) from pgq_node.subscriber_info"),
			 0);
	w = (Writes){&c, N_ROOT, c.nacked + 300};
	ck_assert(pgt_wait_until(writes_to, &w, 10000, 20));

	/* every consumer got every acknowledged event exactly once */
	producer_stop(&c);
	size_t na;
	int64_t *acked = acked_sorted(&c, &na);
	ck_assert_int_eq(c.nunsure, 0);
	for (int i = N_ROOT; i <= N_B2; i++)
		expect_exactly(node_names[i], c.db[i], SEEN_SQL, acked, na);
	expect_exactly("lf", c.db[N_LF], APPLIED_SQL, acked, na);
	fprintf(stderr, "# %zu events, each seen once by the consumers of root, b1, b2, lf\n", na);
	free(acked);
	cas_stop(&c, false);
}
END_TEST

/* The root's database stops answering: connections refused, sessions killed. */
static void kill_db(Cas *c, int i)
{
	char sql[256];
	c->skip[i] = true;
	snprintf(sql, sizeof(sql), "alter database %s allow_connections false", c->db[i]);
	pgt_exec_db("postgres", sql);
	snprintf(sql, sizeof(sql),
		 "select count(pg_terminate_backend(pid)) from pg_stat_activity"
		 " where datname = '%s'",
		 c->db[i]);
	pgt_exec_db("postgres", sql);
}

static void revive_db(Cas *c, int i)
{
	char sql[256];
	snprintf(sql, sizeof(sql), "alter database %s allow_connections true", c->db[i]);
	pgt_exec_db("postgres", sql);
}

START_TEST(test_failover_dead_root_and_branch)
{
	Cas c;
	cas_start(&c);
	wait_applied(&c, 500);

	/* --dry-run changes nothing */
	char *before = snapshot(&c);
	CtlRun r =
		ctr_node(c.dsn[N_B1], (const char *[]){"failover", "--dead", "root", "b1",
						       "--cascade", CT_QUEUE, "--dry-run", NULL});
	ctr_expect(&r, 0, "dry run: nothing was changed", NULL);
	ctr_free(&r);
	char *after = snapshot(&c);
	ck_assert_str_eq(before, after);
	free(before);
	free(after);

	/* the root dies under load; b1 takes over, every step interrupted once */
	kill_db(&c, N_ROOT);
	int64_t t0 = pgt_now_ms();
	int nsteps;
	r = run_interrupted(
		c.dsn[N_B1],
		(const char *[]){"failover", "--dead", "root", "b1", "--cascade", CT_QUEUE, NULL},
		&nsteps);
	int64_t took = pgt_now_ms() - t0;
	ck_assert_int_eq(nsteps, 8);
	ck_assert_ptr_nonnull(strstr(r.out, "events only on root: not known, it does not answer"));
	long long resumed = (long long)ctr_number_after(r.out, "it resumed from tick ");
	ctr_free(&r);
	expect_role(c.db[N_B1], "root:b1");
	expect_role(c.db[N_B2], "branch:b1");
	Writes w = {&c, N_B1, c.nacked + 300};
	ck_assert_msg(pgt_wait_until(writes_to, &w, 10000, 20), "the producer did not move to b1");
	fprintf(stderr,
		"# failover of a dead root (interrupted at each of %d steps): %" PRId64 " ms\n",
		nsteps, took);

	/* the dead root's database answers again: the same command fences it and
	   counts the events that existed only there */
	producer_stop(&c);
	revive_db(&c, N_ROOT);
	r = ctr_node(c.dsn[N_B1], (const char *[]){"failover", "--dead", "root", "b1", "--cascade",
						   CT_QUEUE, NULL});
	ctr_expect(&r, 0, "root answers: its writes are off now", NULL);
	long long lost_reported = 0;
	if (!strstr(r.out, "events only on root: none"))
		lost_reported = (long long)ctr_number_after(r.out, "events only on root: ");
	const char *dp = strstr(r.out, "events only on root: ");
	ck_assert_ptr_nonnull(dp);
	long long data_reported = lost_reported ? strtoll(strstr(dp, "(") + 1, NULL, 10) : 0;
	char tickbuf[64];
	snprintf(tickbuf, sizeof(tickbuf), "resumed from tick %lld", resumed);
	ck_assert_ptr_nonnull(strstr(r.out, tickbuf));
	ctr_free(&r);
	size_t nroot, nb1;
	int64_t *on_root = ct_fetch_sorted(
		c.db[N_ROOT], "select ev_data::bigint from pgq.event_1 where ev_type = 'data'",
		&nroot);
	int64_t *on_b1 = ct_fetch_sorted(c.db[N_B1],
					 "select ev_data::bigint from pgq.event_1"
					 " where ev_type = 'data'",
					 &nb1);
	size_t lost = 0;
	for (size_t i = 0; i < nroot; i++)
		if (!ct_contains(on_b1, nb1, on_root[i]))
			lost++;
	fprintf(stderr, "# events only on the dead root: %zu data events (reported %lld of %lld)\n",
		lost, data_reported, lost_reported);
	ck_assert_int_eq((long long)lost, data_reported);
	/* every acknowledged event is on the new root or among the lost ones */
	size_t na;
	int64_t *acked = acked_sorted(&c, &na);
	for (size_t i = 0; i < na; i++)
		ck_assert_msg(ct_contains(on_b1, nb1, acked[i]) ||
				      ct_contains(on_root, nroot, acked[i]),
			      "event %" PRId64 " is nowhere", acked[i]);
	/* the consumers below the new root: exactly what it holds */
	expect_exactly("b1", c.db[N_B1], SEEN_SQL, on_b1, nb1);
	expect_exactly("b2", c.db[N_B2], SEEN_SQL, on_b1, nb1);
	expect_exactly("lf", c.db[N_LF], APPLIED_SQL, on_b1, nb1);
	free(on_root);
	free(on_b1);
	free(acked);

	/* a dead branch: b2 stops answering, its leaf moves to b1 */
	kill_db(&c, N_B2);
	r = run_interrupted(
		c.dsn[N_B1],
		(const char *[]){"failover", "--dead", "b2", "b1", "--cascade", CT_QUEUE, NULL},
		&nsteps);
	ck_assert_int_eq(nsteps, 2);
	ck_assert_ptr_nonnull(strstr(r.out, "events only on b2: none"));
	ck_assert_ptr_null(strstr(r.err, "Unknown node"));
	ctr_free(&r);
	expect_role(c.db[N_LF], "leaf:b1");
	pgt_exec_db(c.db[N_B1], "select pgq.insert_event('" CT_QUEUE "', 'data', s::text)"
				" from generate_series(2000000, 2000099) s");
	int64_t *all = ct_fetch_sorted(c.db[N_B1],
				       "select ev_data::bigint from pgq.event_1"
				       " where ev_type = 'data'",
				       &nb1);
	expect_exactly("lf after the branch died", c.db[N_LF], APPLIED_SQL, all, nb1);
	free(all);
	revive_db(&c, N_B2);
	cas_stop(&c, false);
}
END_TEST

START_TEST(test_bad_input)
{
	Cas c;
	cas_start(&c);
	producer_stop(&c);
	CtlRun r = ctr_node(c.dsn[N_B1],
			    (const char *[]){"switchover", "lf", "--cascade", CT_QUEUE, NULL});
	ctr_expect(&r, 1, NULL, "a leaf has no queue, so it cannot be the root");
	ctr_free(&r);
	r = ctr_node(c.dsn[N_B1],
		     (const char *[]){"switchover", "nosuch", "--cascade", CT_QUEUE, NULL});
	ctr_expect(&r, 1, NULL, "no member \"nosuch\"");
	ctr_free(&r);
	r = ctr_node(c.dsn[N_B1], (const char *[]){"change-provider", "--cascade", CT_QUEUE,
						   "--provider", "b2", NULL});
	ctr_expect(&r, 1, NULL, "would make a loop");
	ctr_free(&r);
	r = ctr_node(c.dsn[N_B1], (const char *[]){"change-provider", "--cascade", CT_QUEUE,
						   "--provider", "lf", NULL});
	ctr_expect(&r, 1, NULL, "cannot be a provider");
	ctr_free(&r);
	r = ctr_node(c.dsn[N_B1],
		     (const char *[]){"switchover", "root", "--cascade", CT_QUEUE, NULL});
	ctr_expect(&r, 0, "already done: root is the root", NULL);
	ctr_free(&r);
	r = ctr_node(c.dsn[N_B1], (const char *[]){"failover", "--dead", "b1", "b1", "--cascade",
						   CT_QUEUE, NULL});
	ctr_expect(&r, 2, NULL, "the same");
	ctr_free(&r);
	cas_stop(&c, false);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pgqctl-switchover");
	TCase *tc = pgt_tcase("bad_input", 60);
	tcase_add_test(tc, test_bad_input);
	suite_add_tcase(s, tc);
	/* left out of the default suite (tests/pgqctl/meson.build says why) */
	if (!getenv("PGQD_TEST_LEAVE_OUT_SWITCHOVER")) {
		tc = pgt_tcase("switchover", 240);
		tcase_add_test(tc, test_switchover_under_load);
		suite_add_tcase(s, tc);
	}
	tc = pgt_tcase("failover", 240);
	tcase_add_test(tc, test_failover_dead_root_and_branch);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
