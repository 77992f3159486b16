/*
 * The per-database state machine: one persistent connection that checks for
 * pgq, then ticks at a fixed rate on the monotonic clock and runs maintenance
 * and retry rounds in between ticks.
 *
 * Scheduling: tick k of a database is due at start + phase + k * ticker_period,
 * where phase is one of the period's slots (PHASE_SLOT apart), picked at random
 * per database: a thousand databases do not tick in one burst, yet the databases
 * of one slot share a loop wake-up (one wake-up per tick is what made spreading
 * cost more CPU than pgqd's single burst). A late tick never shifts the grid (no drift); grid
 * points missed entirely (the database was slow) are skipped and counted, never
 * made up in a burst. Wake-ups (LISTEN "pgq.wake") add ticks between grid
 * points, at most one per wake_min_interval.
 *
 * Failures: the connection layer reconnects with backoff and jitter; every
 * reconnect redoes the pgq checks. Only one query of ours is in flight, so an
 * event callback for a lost connection always pairs with at most one aborted job.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_backoff.h>
#include <pgqd-ev/pqev_clock.h>
#include <pgqd-ev/pqev_conn.h>
#include <pgqd-ev/pqev_log.h>

#include "ticker.h"

#define WAKE_CHANNEL "pgq.wake"

static const char *const state_names[DB_NSTATES] = {
	[DB_CONNECTING] = "connecting", [DB_CHECKING] = "checking", [DB_RUNNING] = "running",
	[DB_NOPGQ] = "no_pgq",          [DB_FAILED] = "failed",
};

const char *db_state_name(DbState st)
{
	return st < DB_NSTATES ? state_names[st] : "?";
}

/* Distance between two tick phases of a period. */
#define PHASE_SLOT (100 * USEC_PER_MSEC)

/* One generator for phases and re-check jitter; seeded from the clock. */
static PqevBackoff rng;
static bool rng_ready;

static usec_t jitter(usec_t lo, usec_t hi)
{
	if (!rng_ready) {
		pqev_backoff_init(&rng, 1, 1, 0);
		rng_ready = true;
	}
	return pqev_backoff_jitter(&rng, lo, hi);
}

static usec_t pick_phase(usec_t period)
{
	usec_t slots = period / PHASE_SLOT;

	if (slots <= 1)
		return 0;
	return jitter(0, slots - 1) * PHASE_SLOT;
}

/* The layer's messages start with "<label>: "; log them under our [label] context. */
static const char *strip_label(const Db *db, const char *msg)
{
	size_t n = strlen(db->label);

	if (msg && strncmp(msg, db->label, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ')
		return msg + n + 2;
	return msg ? msg : "";
}

void db_set_state(Db *db, DbState st)
{
	Ticker *t = db->t;

	if (db->state == st)
		return;
	if (t->stats.by_state[db->state] > 0)
		t->stats.by_state[db->state]--;
	t->stats.by_state[st]++;
	pqev_log_noise(db->log, "state %s -> %s", db_state_name(db->state), db_state_name(st));
	db->state = st;
}

static void on_timer(evutil_socket_t fd, short what, void *arg);
static usec_t grid_next(const Db *db, usec_t now);
static void on_conn_event(PqevConn *c, const PqevConnEvent *ev, void *arg);
static void on_notify(PqevConn *c, const char *channel, const char *payload, int pid, void *arg);
static void on_notice(PqevConn *c, const char *severity, const char *text, void *arg);

Db *db_new(Cluster *cl, const char *name)
{
	Ticker *t = cl->t;
	Db *db = calloc(1, sizeof(*db));

	if (!db)
		return NULL;
	db->t = t;
	db->cl = cl;
	db->name = strdup(name);
	db->label = registry_label(cl, name);
	if (!db->name || !db->label)
		goto fail;
	db->log = pqev_log_ctx_new("db", db->label);
	db->timer = evtimer_new(t->base, on_timer, db);
	if (!db->log || !db->timer)
		goto fail;
	db->state = DB_CONNECTING;
	t->stats.by_state[DB_CONNECTING]++;
	db->next_maint = db->next_retry = db->next_check = USEC_INFINITY;
	db->phase = pick_phase(cl->ticker_period);
	if (slot_join(db) < 0)
		pqev_log_warning(db->log, "out of memory: ticking from its own timer");
	return db;
fail:
	if (db->timer)
		event_free(db->timer);
	pqev_log_ctx_free(db->log);
	free(db->label);
	free(db->name);
	free(db);
	return NULL;
}

/* libpq keyword value quoting: single quotes, backslash before ' and \. */
static char *append_dbname(const char *base, const char *name)
{
	size_t blen = strlen(base), n = 0;
	char *s = malloc(blen + 2 * strlen(name) + 16);

	if (!s)
		return NULL;
	memcpy(s, base, blen);
	n = blen;
	if (n > 0)
		s[n++] = ' ';
	memcpy(s + n, "dbname='", 8);
	n += 8;
	for (const char *p = name; *p; p++) {
		if (*p == '\'' || *p == '\\')
			s[n++] = '\\';
		s[n++] = *p;
	}
	s[n++] = '\'';
	s[n] = '\0';
	return s;
}

int db_conn_config(const Db *db, PqevConnConfig *cc, char **conninfo_out)
{
	const MainCfg *m = &db->t->cfg->main;
	char *ci = append_dbname(db->cl->base_connstr, db->name);

	if (!ci)
		return -ENOMEM;
	pqev_conn_config_init(cc);
	cc->conninfo = ci;
	cc->name = db->label;
	cc->application_name = m->application_name;
	cc->connect_timeout = m->connect_timeout;
	cc->statement_timeout = m->statement_timeout;
	cc->lifetime = db->cl->connection_lifetime;
	cc->retry_base = m->backoff_base;
	cc->retry_cap = m->backoff_cap;
	cc->max_pipeline = 4;
	*conninfo_out = ci;
	return 0;
}

static PqevConnLimit *limit_of(const Db *db)
{
	return db->cl->own_limit ? db->cl->own_limit : db->t->limit;
}

/* Open (or re-open after NOPGQ/FAILED) the connection. */
static void db_connect(Db *db)
{
	PqevConnConfig cc;
	char *ci = NULL;
	int rc;

	db->next_check = USEC_INFINITY;
	if (!db->conn) {
		PqevConnCallbacks cb = {
			.on_event = on_conn_event,
			.on_notify = on_notify,
			.on_notice = on_notice,
			.arg = db,
		};
		if (db_conn_config(db, &cc, &ci) < 0) {
			pqev_log_error(db->log, "out of memory");
			goto retry_later;
		}
		db->conn = pqev_conn_new(limit_of(db), &cc, &cb);
		free(ci);
		if (!db->conn) {
			pqev_log_error(db->log, "out of memory");
			goto retry_later;
		}
		if (db->t->cfg->main.low_latency && pqev_conn_listen(db->conn, WAKE_CHANNEL) < 0)
			pqev_log_warning(db->log, "cannot listen on %s", WAKE_CHANNEL);
	}
	db_set_state(db, DB_CONNECTING);
	rc = pqev_conn_start(db->conn);
	if (rc < 0) {
		pqev_log_error(db->log, "cannot connect: %s", pqev_conn_error(db->conn));
		db_set_state(db, DB_FAILED);
		goto retry_later;
	}
	return;
retry_later:
	db->next_check = pqev_clock_now() + db->cl->check_period;
	db_rearm(db);
}

void db_start(Db *db)
{
	db->recheck_interval = db->cl->check_period;
	db_connect(db);
}

void db_note_failure(Db *db)
{
	db->fails++;
	if (!db->failing_since)
		db->failing_since = pqev_clock_now();
}

static void note_success(Db *db)
{
	if (db->unreachable) {
		pqev_log_info(db->log, "reachable again");
		db->unreachable = false;
		if (db->t->stats.unreachable > 0)
			db->t->stats.unreachable--;
	}
	db->fails = 0;
	db->failing_since = 0;
}

void db_note_sql_error(Db *db, const char *what, const PqevReply *r)
{
	Ticker *t = db->t;

	t->stats.errors++;
	t->stats.t_errors++;
	db->n_errors++;
	db->err_streak++;
	if (db->err_streak == 1)
		pqev_log_warning(db->log, "%s failed: %s", what, strip_label(db, r->error));
	else
		pqev_log_debug(db->log, "%s failed again (%u in a row): %s", what, db->err_streak,
			       strip_label(db, r->error));
}

void db_request_failed(Db *db, const char *what, const PqevReply *r)
{
	if ((r->status == PQEV_TIMEOUT || (r->status == PQEV_CANCELED && db->job_timed_out)) &&
	    !db->dead) {
		db->job_timed_out = false;
		/* the layer drops a session whose query timed out and reconnects */
		pqev_log_warning(db->log, "%s timed out, reconnecting", what);
		db->t->stats.errors++;
		db->t->stats.t_errors++;
		db->n_errors++;
		db_note_failure(db);
		db_set_state(db, DB_CONNECTING);
	}
	db_job_aborted(db);
}

void db_job_aborted(Db *db)
{
	db->job = JOB_NONE;
	if (db->maint_active) {
		maint_reset(db);
		db->maint_due = true;
	}
	if (db->retry_active) {
		db->retry_active = false;
		db->retry_due = true;
	}
}

/* Close the connection and come back later (no pgq, or a failed check). */
static void db_park(Db *db, DbState st, usec_t delay)
{
	db->job = JOB_NONE;
	maint_reset(db);
	db->retry_active = false;
	db->tick_due = db->maint_due = db->retry_due = false;
	db->wake_at = 0;
	db_set_state(db, st);
	if (db->conn)
		pqev_conn_close(db->conn);
	db->next_check = pqev_clock_now() + delay;
	db_rearm(db);
}

/* ---- checks ---- */

/*
 * One round trip (there were two) to learn: is pgq there, does it have
 * maint_operations(), and for PgQ's extension its version (what its version()
 * returns). Syscache lookups, not catalog joins: on a thousand fresh backends
 * at start the server's first queries are what bounds the time to first tick.
 */
static const char check_sql[] =
	"select pg_catalog.to_regnamespace('pgq') is not null,"
	" pg_catalog.to_regprocedure('pgq.maint_operations()') is not null,"
	" (select extversion from pg_catalog.pg_extension where extname = 'pgq')";

static void send_job(Db *db, DbJob job, const char *sql, PqevDoneFn fn, unsigned flags)
{
	PqevQuery q = {
		.sql = sql,
		.on_done = fn,
		.arg = db,
		.flags = flags,
	};
	usec_t qt = db->t->cfg->main.query_timeout;
	int rc;

	db->job = job;
	db->job_timed_out = false;
	rc = pqev_conn_send(db->conn, &q, &db->job_req);
	if (rc < 0) {
		/* closed under us or out of memory: the event callback restarts us */
		db->job = JOB_NONE;
		db->job_req = NULL;
		pqev_log_debug(db->log, "cannot send: %s", pqev_conn_error(db->conn));
		return;
	}
	db->job_deadline = qt ? pqev_clock_now() + qt : 0;
}

void db_send_job(Db *db, DbJob job, const char *sql, PqevDoneFn fn)
{
	/* constant SQL without parameters: the simple protocol costs both sides less
	   (one Query message, no pipeline sync) than Parse/Bind/Execute/Sync */
	send_job(db, job, sql, fn, PQEV_Q_SIMPLE);
}

void db_job_done(Db *db)
{
	db->job_req = NULL;
	db->job_deadline = 0;
	db->job = JOB_NONE;
}

/* The query in flight passed query_timeout: cancel it (the layer drops the session). */
static bool check_deadline(Db *db, usec_t now)
{
	PqevReq *req = db->job_req;

	if (!req || !db->job_deadline || now < db->job_deadline)
		return false;
	db->job_timed_out = true;
	pqev_req_cancel(req); /* its on_done runs now and sees job_timed_out */
	return true;
}

/*
 * "3.5", "3.5.2", "10.1": major.minor compared as numbers (pgqd compares only
 * the first character). We need 3.0 or later.
 */
static bool version_ok(const char *v)
{
	char *end;
	long major = strtol(v, &end, 10);

	if (end == v)
		return false;
	return major >= 3;
}

static void version_checked(Db *db, const char *v);

static void on_version(PqevConn *c, const PqevReply *r, void *arg)
{
	Db *db = arg;
	const char *v;

	db_job_done(db);
	if (r->status != PQEV_OK) {
		if (r->status == PQEV_SQL_ERROR) {
			db_note_sql_error(db, "pgq.version()", r);
			db_note_failure(db);
			db_park(db, DB_FAILED, db->cl->check_period);
		} else {
			db_request_failed(db, "pgq.version()", r);
		}
		return;
	}
	/* NULL: pgq_pl_only.sql loaded as a script, whose version() reads
	   pg_extension and finds nothing. Its functions are PgQ 3.x all the same. */
	v = PQntuples(r->result) > 0 ? PQgetvalue(r->result, 0, 0) : "";
	version_checked(db, PQntuples(r->result) > 0 && PQgetisnull(r->result, 0, 0) ? NULL : v);
}

/* The version is known (NULL: pgq_pl_only.sql): start ticking if we can drive it. */
static void version_checked(Db *db, const char *v)
{
	if (!v) {
		v = "unknown (pgq_pl_only.sql)";
	} else if (!version_ok(v)) {
		pqev_log_warning(db->log, "bad pgq version %s, ignoring", v);
		db_park(db, DB_NOPGQ, db->cl->check_period);
		return;
	}
	snprintf(db->version, sizeof(db->version), "%s", v);
	if (!db->ever_ok)
		pqev_log_info(db->log, "pgq version ok: %s", v);
	else
		pqev_log_debug(db->log, "pgq version ok: %s", v);
	db->err_streak = 0;
	db->recheck_pgq = false;
	db->recheck_interval = db->cl->check_period;
	db_set_state(db, DB_RUNNING);
	/*
	 * First tick at once, then on the grid. The first maintenance and retry rounds
	 * are spread over the second half of their periods: while a thousand
	 * databases start, the server then spends itself only on connections, checks
	 * and ticks, and all tick sooner.
	 */
	if (!db->ever_ok) {
		usec_t now = pqev_clock_now();

		db->next_maint = now + jitter(db->cl->maint_period / 2, db->cl->maint_period);
		db->next_retry = now + jitter(db->cl->retry_period / 2, db->cl->retry_period);
	} else {
		if (db->next_maint == USEC_INFINITY)
			db->maint_due = true;
		if (db->next_retry == USEC_INFINITY)
			db->retry_due = true;
	}
	db->ever_ok = true;
	db->tick_due = true;
	db->tick_is_wake = false;
	db->tick_sched = pqev_clock_now();
	db->next_tick = grid_next(db, db->tick_sched);
	db_kick(db);
}

static void on_check(PqevConn *c, const PqevReply *r, void *arg)
{
	Db *db = arg;

	db_job_done(db);
	if (r->status != PQEV_OK) {
		if (r->status == PQEV_SQL_ERROR) {
			db_note_sql_error(db, "pgq check", r);
			db_note_failure(db);
			db_park(db, DB_FAILED, db->cl->check_period);
		} else {
			db_request_failed(db, "pgq check", r);
		}
		return;
	}
	if (PQntuples(r->result) != 1 || strcmp(PQgetvalue(r->result, 0, 0), "t") != 0) {
		usec_t d = db->recheck_interval;

		pqev_log_debug(db->log, "no pgq, next check in %.0f s", pqev_usec_to_sec(d));
		/* a database without pgq is healthy, just idle */
		note_success(db);
		db->recheck_interval = d * 2 > db->t->cfg->main.pgq_recheck_max
					       ? db->t->cfg->main.pgq_recheck_max
					       : d * 2;
		db_park(db, DB_NOPGQ, jitter(d - d / 8, d));
		return;
	}
	db->has_maint_ops = strcmp(PQgetvalue(r->result, 0, 1), "t") == 0;
	if (!PQgetisnull(r->result, 0, 2))
		version_checked(db, PQgetvalue(r->result, 0, 2)); /* PgQ's extension */
	else
		db_send_job(db, JOB_CHECK, "select pgq.version()", on_version);
}

static void start_checks(Db *db)
{
	db_set_state(db, DB_CHECKING);
	/* pipelined, not simple: it is sent behind the LISTEN the connection queued
	   ahead of it without waiting for its answer, one round trip less before
	   the first tick */
	send_job(db, JOB_CHECK, check_sql, on_check, 0);
}

/* ---- ticking ---- */

static usec_t grid_next(const Db *db, usec_t now)
{
	return tick_grid_next(db->t, db->cl->ticker_period, db->phase, now);
}

static void on_tick(PqevConn *c, const PqevReply *r, void *arg)
{
	Db *db = arg;
	Ticker *t = db->t;

	db_job_done(db);
	if (r->status == PQEV_OK) {
		const char *v = PQntuples(r->result) > 0 ? PQgetvalue(r->result, 0, 0) : "0";
		long long n = strtoll(v, NULL, 10);

		t->stats.ticks++;
		t->stats.t_ticks++;
		db->n_ticks++;
		if (n > 0) {
			t->stats.created += (uint64_t)n;
			t->stats.t_created += (uint64_t)n;
			db->n_created += (uint64_t)n;
		}
		db->last_tick_ok = pqev_clock_now();
		db->last_tick_wall = pqev_clock_wall();
		db->err_streak = 0;
		note_success(db);
		pqev_log_noise(db->log, "ticked, %lld", n);
		db_kick(db);
		return;
	}
	if (r->status == PQEV_SQL_ERROR) {
		db_note_sql_error(db, "pgq.ticker()", r);
		db_note_failure(db);
		/* pgq may have been dropped or upgraded: check again before the next tick */
		db->recheck_pgq = true;
		db_kick(db);
		return;
	}
	/* lost, timed out, closed: the connection event restarts the checks */
	db_request_failed(db, "pgq.ticker()", r);
}

static void send_tick(Db *db)
{
	usec_t now = pqev_clock_now();

	db->tick_due = false;
	db->tick_started = now;
	if (db->tick_is_wake) {
		db->t->stats.wakes++;
		db->t->stats.t_wakes++;
		db->n_wakes++;
	} else if (now >= db->tick_sched) {
		stats_record_lateness(db->t, now - db->tick_sched);
	} else {
		stats_record_lateness(db->t, 0);
	}
	db->tick_is_wake = false;
	db_send_job(db, JOB_TICK, "select pgq.ticker()", on_tick);
}

bool db_idle(const Db *db)
{
	return db->job == JOB_NONE;
}

void db_kick(Db *db)
{
	if (db->state != DB_RUNNING || db->job != JOB_NONE || db->dead || db->t->stopping) {
		db_rearm(db);
		return;
	}
	if (db->recheck_pgq) {
		db->recheck_pgq = false;
		start_checks(db);
		return;
	}
	if (db->tick_due)
		send_tick(db);
	else if (db->maint_active || db->maint_due)
		maint_step(db);
	else if (db->retry_active || db->retry_due)
		retry_step(db);
	db_rearm(db);
}

static usec_t min_u(usec_t a, usec_t b)
{
	return a < b ? a : b;
}

void db_rearm(Db *db)
{
	usec_t now = pqev_clock_now(), at = USEC_INFINITY;

	if (db->dead)
		return;
	switch (db->state) {
	case DB_RUNNING:
		if (!db->slot)
			at = db->next_tick;
		if (db->wake_at)
			at = min_u(at, db->wake_at);
		if (!db->maint_due && !db->maint_active)
			at = min_u(at, db->next_maint);
		if (!db->retry_due && !db->retry_active)
			at = min_u(at, db->next_retry);
		break;
	case DB_NOPGQ:
	case DB_FAILED:
		at = db->next_check;
		break;
	default:
		break;
	}
	if (db->job_req && db->job_deadline)
		at = min_u(at, db->job_deadline);
	if (at == USEC_INFINITY) {
		evtimer_del(db->timer);
		return;
	}
	/*
	 * A pending timer that fires no later stays: on_timer only acts on what
	 * is due and re-arms. A tick re-armed twice (sent, answered) with the
	 * same target; each evtimer_add was a timer-heap remove and insert.
	 */
	if (db->timer_at <= at && evtimer_pending(db->timer, NULL))
		return;
	{
		struct timeval tv = pqev_usec_to_timeval(at > now ? at - now : 0);

		db->timer_at = at > now ? at : now;
		evtimer_add(db->timer, &tv);
	}
}

/* Mark the tick due if its grid point passed; true if it did. */
static bool grid_passed(Db *db, usec_t now)
{
	if (now < db->next_tick)
		return false;
	if (db->tick_due && !db->tick_is_wake) {
		/* the previous tick has not even been sent: skip, do not pile up */
		db->t->stats.t_skipped++;
	} else {
		db->tick_due = true;
		db->tick_is_wake = false;
		db->tick_sched = db->next_tick;
	}
	db->next_tick = grid_next(db, now);
	return true;
}

void db_on_grid(Db *db, usec_t now)
{
	if (db->dead || db->state != DB_RUNNING)
		return;
	if (grid_passed(db, now))
		db_kick(db);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	Db *db = arg;
	usec_t now = pqev_clock_now();

	if (db->dead)
		return;
	if (check_deadline(db, now))
		return; /* the cancel's on_done moved the machine on and re-armed */
	if (db->t->stopping)
		return;
	if (db->state == DB_NOPGQ || db->state == DB_FAILED) {
		if (now >= db->next_check)
			db_connect(db);
		else
			db_rearm(db);
		return;
	}
	if (db->state != DB_RUNNING) {
		db_rearm(db);
		return;
	}
	grid_passed(db, now);
	if (db->wake_at && now >= db->wake_at) {
		db->wake_at = 0;
		if (!db->tick_due) {
			db->tick_due = true;
			db->tick_is_wake = true;
			db->tick_sched = now;
		}
	}
	if (now >= db->next_maint && !db->maint_active) {
		db->maint_due = true;
		db->next_maint = USEC_INFINITY;
	}
	if (now >= db->next_retry && !db->retry_active) {
		db->retry_due = true;
		db->next_retry = USEC_INFINITY;
	}
	db_kick(db);
}

/* ---- connection callbacks ---- */

static void on_conn_event(PqevConn *c, const PqevConnEvent *ev, void *arg)
{
	Db *db = arg;

	if (db->dead)
		return;
	switch (ev->type) {
	case PQEV_EV_CONNECTED:
		if (ev->recovered)
			pqev_log_info(db->log, "%s", strip_label(db, ev->message));
		else
			pqev_log_debug(db->log, "%s", strip_label(db, ev->message));
		db->job = JOB_NONE;
		if (db->next_tick == 0 || db->next_tick == USEC_INFINITY)
			db->next_tick = grid_next(db, pqev_clock_now());
		start_checks(db);
		break;
	case PQEV_EV_CONNECT_FAILED:
	case PQEV_EV_LOST:
		if (ev->server_down && ev->streak <= 1)
			pqev_log_warning(
				db->log, "%s; waiting for the server (next probe in %.2f s)",
				strip_label(db, ev->message), pqev_usec_to_sec(ev->retry_in));
		else if (ev->server_down)
			pqev_log_debug(db->log, "%s (%u in a row); waiting for the server",
				       strip_label(db, ev->message), ev->streak);
		else if (ev->streak <= 1)
			pqev_log_warning(db->log, "%s; retrying in %.2f s",
					 strip_label(db, ev->message),
					 pqev_usec_to_sec(ev->retry_in));
		else
			pqev_log_debug(db->log, "%s (%u in a row); retrying in %.2f s",
				       strip_label(db, ev->message), ev->streak,
				       pqev_usec_to_sec(ev->retry_in));
		db_job_aborted(db);
		db_note_failure(db);
		db->tick_due = false;
		db->wake_at = 0;
		db_set_state(db, DB_CONNECTING);
		db_rearm(db);
		break;
	case PQEV_EV_RECYCLED:
		pqev_log_debug(db->log, "%s", strip_label(db, ev->message));
		db_job_aborted(db);
		db_set_state(db, DB_CONNECTING);
		db_rearm(db);
		break;
	}
}

static void on_notify(PqevConn *c, const char *channel, const char *payload, int pid, void *arg)
{
	Db *db = arg;
	usec_t now = pqev_clock_now(), min_gap = db->t->cfg->main.wake_min_interval;

	if (db->dead || db->state != DB_RUNNING || strcmp(channel, WAKE_CHANNEL) != 0)
		return;
	pqev_log_noise(db->log, "wake-up for queue %s", payload);
	if (db->tick_due)
		return; /* a tick is already waiting to go: it covers this wake-up */
	if (db->job == JOB_TICK || now < db->tick_started + min_gap) {
		/* coalesce: one tick after the current one, no sooner than min_gap */
		usec_t at = db->tick_started + min_gap;

		if (db->job == JOB_TICK && at <= now) {
			db->tick_due = true;
			db->tick_is_wake = true;
			db->tick_sched = now;
			return; /* runs when the tick in flight completes */
		}
		if (!db->wake_at || at < db->wake_at)
			db->wake_at = at;
		db_rearm(db);
		return;
	}
	db->tick_due = true;
	db->tick_is_wake = true;
	db->tick_sched = now;
	db_kick(db);
}

static void on_notice(PqevConn *c, const char *severity, const char *text, void *arg)
{
	Db *db = arg;

	if (strcmp(severity, "WARNING") == 0)
		pqev_log_warning(db->log, "server %s: %s", severity, text);
	else
		pqev_log_info(db->log, "server %s: %s", severity, text);
}

/* ---- settings, unregister ---- */

void db_apply_settings(Db *db, bool reconnect)
{
	PqevConnConfig cc;
	char *ci = NULL;
	usec_t now = pqev_clock_now();

	if (db->phase >= db->cl->ticker_period)
		db->phase = pick_phase(db->cl->ticker_period);
	if (slot_join(db) < 0)
		pqev_log_warning(db->log, "out of memory: ticking from its own timer");
	if (db->state == DB_RUNNING)
		db->next_tick = grid_next(db, now);
	if (db->next_maint != USEC_INFINITY && db->next_maint > now + db->cl->maint_period)
		db->next_maint = now + db->cl->maint_period;
	if (db->next_retry != USEC_INFINITY && db->next_retry > now + db->cl->retry_period)
		db->next_retry = now + db->cl->retry_period;
	if (db->conn) {
		if (db_conn_config(db, &cc, &ci) == 0) {
			if (pqev_conn_set_config(db->conn, &cc) < 0)
				pqev_log_error(db->log, "out of memory");
			free(ci);
		}
		if (db->t->cfg->main.low_latency && !pqev_conn_listening(db->conn, WAKE_CHANNEL)) {
			if (pqev_conn_listen(db->conn, WAKE_CHANNEL) < 0)
				pqev_log_warning(db->log, "cannot listen on %s", WAKE_CHANNEL);
		} else if (!db->t->cfg->main.low_latency &&
			   pqev_conn_listening(db->conn, WAKE_CHANNEL)) {
			if (pqev_conn_unlisten(db->conn, WAKE_CHANNEL) < 0)
				pqev_log_debug(db->log, "unlisten failed");
		}
		if (reconnect) {
			pqev_log_info(db->log, "connection settings changed, reconnecting");
			if (pqev_conn_state(db->conn) == PQEV_CONN_CLOSED) {
				if (db->state == DB_NOPGQ || db->state == DB_FAILED)
					db->next_check = now;
			} else {
				pqev_conn_reconnect(db->conn);
			}
		}
	}
	db_rearm(db);
}

void db_unregister(Db *db)
{
	Ticker *t = db->t;

	if (db->dead)
		return;
	db->dead = true;
	evtimer_del(db->timer);
	slot_leave(db);
	if (t->stats.by_state[db->state] > 0)
		t->stats.by_state[db->state]--;
	if (db->unreachable && t->stats.unreachable > 0)
		t->stats.unreachable--;
	/* fails the request in flight; the callbacks see db->dead and do nothing */
	if (db->conn)
		pqev_conn_close(db->conn);
	db->next = t->graveyard;
	t->graveyard = db;
	registry_schedule_reap(t);
}

void db_free(Db *db)
{
	if (!db)
		return;
	db->dead = true;
	slot_leave(db);
	db->conn = pqev_conn_free(db->conn);
	maint_reset(db);
	if (db->timer)
		event_free(db->timer);
	pqev_log_ctx_free(db->log);
	free(db->label);
	free(db->name);
	free(db);
}
