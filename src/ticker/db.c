/*
 * The per-database state machine: one persistent connection that checks for
 * pgq, then ticks at a fixed rate on the monotonic clock, and a maintenance
 * connection opened for each maintenance or retry round and closed when the
 * round ends, so no maintenance statement ever holds up a tick.
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
 * Low-latency watch: a wake-up tick also tries to take the watch lock
 * (pgq.ticker_watch(1), sql/pgq/ticker.sql). While this session holds it,
 * producers send no NOTIFY (each one would serialise commits on the server's
 * global notification lock) and the database is ticked every wake_min_interval
 * instead; after WATCH_LINGER without a new tick the gap doubles up to
 * WATCH_GAP_MAX and every watch tick asks to stop (mode 2), which the server
 * grants only when no producer that skipped its NOTIFY is still open. While no
 * consumer is close to a queue's head (the call's "wanted"), no woken tick would
 * be made, so the gap doubles as well; a consumer that comes close asks with a
 * NOTIFY (next_batch), which brings the next watch tick forward.
 *
 * Maintenance connections: at most max_maint_connections per cluster are open
 * at once (each also takes a max_connecting slot while it connects); a
 * database that wants one when they are all in use waits in its cluster's
 * FIFO. The retry round first asks on the tick connection whether any retry
 * event is due (an index probe, well under a millisecond) and opens the
 * maintenance connection only if one is: a daemon whose consumers retry
 * nothing opens no connection between maintenance rounds.
 *
 * Failures: the connection layer reconnects with backoff and jitter; every
 * reconnect redoes the pgq checks. A failed maintenance connection ends its
 * round; the round is tried again after min(its period, check_period).
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

#define WAKE_CHANNEL  "pgq.wake"
#define WATCH_LINGER  (100 * USEC_PER_MSEC)
#define WATCH_GAP_MAX (25 * USEC_PER_MSEC)
#define WATCH_GAP_MIN USEC_PER_MSEC

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

void db_set_state(Db *db, DbState st)
{
	Ticker *t = db->t;

	if (db->state == st)
		return;
	if (t->stats.by_state[db->state] > 0)
		t->stats.by_state[db->state]--;
	t->stats.by_state[st]++;
	pqev_log_debug(db->log, "state %s -> %s", db_state_name(db->state), db_state_name(st));
	db->state = st;
}

static void on_timer(evutil_socket_t fd, short what, void *arg);
static usec_t grid_next(const Db *db, usec_t now);
static void on_conn_event(PqevConn *c, const PqevConnEvent *ev, void *arg);
static void on_notify(PqevConn *c, const char *channel, const char *payload, int pid, void *arg);
static void on_notice(PqevConn *c, const char *severity, const char *text, void *arg);
static void maint_kick(Db *db);
static void maint_abandon(Db *db, bool retry_soon);

Db *db_new(Cluster *cl, const char *name)
{
	Ticker *t = cl->t;
	Db *db = calloc(1, sizeof(*db));

	if (!db)
		return NULL;
	db->t = t;
	db->cl = cl;
	job_slot_init(&db->tick_job, db);
	job_slot_init(&db->maint_job, db);
	db->name = strdup(name);
	db->label = registry_label(cl, name);
	if (!db->name || !db->label)
		goto fail;
	db->log = pqev_log_ctx_new("db", db->label);
	db->timer = evtimer_new(t->base, on_timer, db);
	if (!db->log || !db->timer)
		goto fail;
	db->state = DB_CONNECTING;
	/* its start-up grace runs from here: set later (by the first health pass), a
	   database already reported as never ticked would turn healthy again */
	db->seen_at = pqev_clock_refresh();
	t->stats.by_state[DB_CONNECTING]++;
	db->next_maint = db->next_retry = db->next_check = USEC_INFINITY;
	db->tick_watch_mode = -1;
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
	if (!db->conn && db->t->fd_conns >= ticker_fd_budget(db->t)) {
		/* reported by stats_check_health; retried every check_period */
		if (!db->fd_waiting) {
			db->fd_waiting = true;
			db->t->fd_over++;
		}
		db_set_state(db, DB_FAILED);
		goto retry_later;
	}
	if (db->fd_waiting) {
		db->fd_waiting = false;
		db->t->fd_over--;
	}
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
		db->holds_conn = true;
		db->t->fd_conns++;
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
	stats_count_error(db->t, db, ERR_QUERY);
	db->err_streak++;
	if (db->err_streak == 1)
		pqev_log_warning(db->log, "%s failed: %s", what, r->detail);
	else
		pqev_log_debug(db->log, "%s failed again (%u in a row): %s", what, db->err_streak,
			       r->detail);
}

/* A job on the tick connection ended without a server result (lost, timeout, closed). */
static void tick_conn_job_failed(Db *db, const JobOutcome *o)
{
	PqevStatus st = o->reply->status;

	if (st == PQEV_TIMEOUT || (st == PQEV_CANCELED && o->timed_out)) {
		/* the layer drops a session whose query timed out and reconnects */
		pqev_log_warning(db->log, "%s timed out, reconnecting", o->what);
		stats_count_error(db->t, db, ERR_TIMEOUT);
		db_note_failure(db);
		db_set_state(db, DB_CONNECTING);
	}
	/* otherwise the connection's event (lost, closed) moves the machine on */
}

/* Log, at the default level, when a database starts or stops being ticked. */
static void note_ticking(Db *db, bool on, const char *why)
{
	if (on)
		pqev_log_info(db->log, "pgq version ok: %s; ticking", db->version);
	else
		pqev_log_info(db->log, "not ticking: %s", why);
}

/* Close the connection and come back later (no pgq, or a failed check). */
static void db_park(Db *db, DbState st, usec_t delay, const char *why)
{
	if (db->version[0])
		note_ticking(db, false, why);
	db->version[0] = '\0';
	maint_abandon(db, false);
	db->tick_due = db->maint_due = db->retry_due = false;
	db->wake_at = 0;
	db->watching = false; /* the session and its locks end here */
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
	" (select extversion from pg_catalog.pg_extension where extname = 'pgq'),"
	" pg_catalog.to_regprocedure('pgq.ticker_watch(integer)') is not null,"
	" pg_catalog.to_regprocedure("
	"'pgq.ticker_watch(integer,float8,float8,float8)') is not null";

/*
 * A check or tick on the tick connection, under query_timeout. Constant SQL
 * sent once or seldom goes by the simple protocol (flags PQEV_Q_SIMPLE): one
 * Query message, no pipeline sync. Ticks are prepared once per session
 * (PQEV_Q_PREPARE): the server skips parsing and planning the call, 8% of its
 * CPU per call at the watch's 200 calls a second (bench/ticker/tickcost); at one
 * call a period it is lost in the cost of waking the backend.
 */
static void run_on_tick_conn(Db *db, DbJob job, const char *what, const char *sql, unsigned flags,
			     JobDoneFn done)
{
	JobSpec spec = {
		.job = job,
		.what = what,
		.sql = sql,
		.flags = flags,
		.timeout = db->t->cfg->main.query_timeout,
	};

	/* on failure the connection's event callback restarts us */
	(void)job_run(&db->tick_job, db->conn, &spec, done);
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

static void on_version(Db *db, const JobOutcome *o)
{
	const PqevReply *r = o->reply;
	const char *v;

	if (r->status != PQEV_OK) {
		if (r->status == PQEV_SQL_ERROR) {
			db_note_sql_error(db, "pgq.version()", r);
			db_note_failure(db);
			db_park(db, DB_FAILED, db->cl->check_period, "pgq.version() failed");
		} else {
			tick_conn_job_failed(db, o);
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
		db_park(db, DB_NOPGQ, db->cl->check_period, "unsupported pgq version");
		return;
	}
	if (strcmp(db->version, v) != 0) {
		/* first ticked, or ticked again after a park, or pgq upgraded */
		snprintf(db->version, sizeof(db->version), "%s", v);
		note_ticking(db, true, NULL);
	} else {
		pqev_log_debug(db->log, "pgq version ok: %s", v);
	}
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

/*
 * The next check of a database without pgq: after check_period, or, with
 * pgq_recheck_max above check_period, after an interval doubling from
 * check_period up to pgq_recheck_max (for thousands of databases without pgq).
 */
static usec_t next_recheck(Db *db)
{
	usec_t d = db->recheck_interval, max = db->t->cfg->main.pgq_recheck_max;

	if (d < db->cl->check_period)
		d = db->cl->check_period;
	if (max > db->cl->check_period)
		db->recheck_interval = d * 2 > max ? max : d * 2;
	else
		db->recheck_interval = db->cl->check_period;
	return d;
}

static void on_check(Db *db, const JobOutcome *o)
{
	const PqevReply *r = o->reply;

	if (r->status != PQEV_OK) {
		if (r->status == PQEV_SQL_ERROR) {
			db_note_sql_error(db, "pgq check", r);
			db_note_failure(db);
			db_park(db, DB_FAILED, db->cl->check_period, "the pgq check failed");
		} else {
			tick_conn_job_failed(db, o);
		}
		return;
	}
	if (PQntuples(r->result) != 1 || strcmp(PQgetvalue(r->result, 0, 0), "t") != 0) {
		usec_t d = next_recheck(db);

		pqev_log_debug(db->log, "no pgq, next check in %.0f s", pqev_usec_to_sec(d));
		/* a database without pgq is healthy, just idle */
		note_success(db);
		db_park(db, DB_NOPGQ, jitter(d - d / 8, d), "no pgq");
		return;
	}
	db->has_maint_ops = strcmp(PQgetvalue(r->result, 0, 1), "t") == 0;
	db->has_watch = strcmp(PQgetvalue(r->result, 0, 3), "t") == 0;
	db->has_watch_rule =
		PQnfields(r->result) > 4 && strcmp(PQgetvalue(r->result, 0, 4), "t") == 0;
	if (!PQgetisnull(r->result, 0, 2))
		version_checked(db, PQgetvalue(r->result, 0, 2)); /* PgQ's extension */
	else
		run_on_tick_conn(db, JOB_CHECK, "pgq.version()", "select pgq.version()",
				 PQEV_Q_SIMPLE, on_version);
}

static void start_checks(Db *db)
{
	db_set_state(db, DB_CHECKING);
	/* pipelined, not simple: it is sent behind the LISTEN the connection queued
	   ahead of it without waiting for its answer, one round trip less before
	   the first tick */
	run_on_tick_conn(db, JOB_CHECK, "pgq check", check_sql, 0, on_check);
}

/* ---- ticking ---- */

static usec_t grid_next(const Db *db, usec_t now)
{
	return tick_grid_next(db->t, db->cl->ticker_period, db->phase, now);
}

static usec_t watch_gap_min(const Db *db)
{
	usec_t g = db->t->cfg->main.wake_min_interval;

	return g > WATCH_GAP_MIN ? g : WATCH_GAP_MIN;
}

/*
 * The watch gap's floor from the producers' rate: new_events (the call's fourth
 * column: of the least busy low_latency queue a consumer waits on) since the
 * previous watch tick. Up to wake_busy_rate it is wake_min_interval; above, it
 * grows in proportion up to wake_max_interval, so a busy queue's batches grow
 * with its rate instead of coming 200 times a second, each costing the server a
 * tick and the consumer a batch whatever its size. The SQL applies the same rule
 * to each queue, so a quiet queue keeps the short gap beside a busy one.
 */
static usec_t watch_floor(Db *db, const PGresult *res, int mode)
{
	const MainCfg *m = &db->t->cfg->main;
	usec_t g = watch_gap_min(db), span = db->tick_started - db->watch_prev;
	double rate, gap;

	db->watch_prev = db->tick_started;
	if (mode == 1) {
		db->watch_busy = false; /* a new watch; its count is from before it */
		return g;
	}
	/* older SQL has no fourth column */
	if (m->wake_busy_rate <= 0 || PQnfields(res) < 4 || span <= 0)
		return g;
	rate = strtod(PQgetvalue(res, 0, 3), NULL) * (double)USEC_PER_SEC / (double)span;
	gap = (double)g * rate / m->wake_busy_rate;
	if (gap > (double)m->wake_max_interval)
		gap = (double)m->wake_max_interval;
	/* logged with hysteresis: a rate near wake_busy_rate would log every tick */
	if (!db->watch_busy && gap >= 2.0 * (double)g) {
		pqev_log_debug(
			db->log,
			"low-latency watch: producers busy (%.0f events/s), ticks every %.1f ms",
			rate, gap / USEC_PER_MSEC);
		db->watch_busy = true;
	} else if (db->watch_busy && gap <= (double)g) {
		pqev_log_debug(db->log,
			       "low-latency watch: %.0f events/s, ticks every %.1f ms again", rate,
			       (double)g / USEC_PER_MSEC);
		db->watch_busy = false;
	}
	return gap > (double)g ? (usec_t)gap : g;
}

/* After a watch tick: its result says whether we still watch; plan the next one. */
static void watch_ticked(Db *db, const PGresult *res, long long n, int mode)
{
	usec_t now = pqev_clock_now(), at;
	bool was = db->watching, wanted;

	db->watching =
		PQntuples(res) > 0 && PQnfields(res) > 1 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	if (!db->watching) {
		if (was && db->watch_busy)
			pqev_log_debug(db->log,
				       "low-latency watch: producers stopped, watch ended");
		else if (was)
			pqev_log_noise(db->log, "low-latency watch ended");
		return; /* watch_floor is read only while watching */
	}
	db->watch_floor = watch_floor(db, res, mode);
	/* SQL before 2026-12-06 has no third column: every tick counts as wanted */
	wanted = PQnfields(res) < 3 || strcmp(PQgetvalue(res, 0, 2), "t") == 0;
	if (!was || (n > 0 && wanted)) {
		if (!was)
			pqev_log_noise(db->log, "low-latency watch started");
		db->watch_active = now;
		db->watch_gap = db->watch_floor;
	} else if (!wanted || now - db->watch_active >= WATCH_LINGER) {
		db->watch_gap =
			db->watch_gap * 2 > WATCH_GAP_MAX ? WATCH_GAP_MAX : db->watch_gap * 2;
		if (db->watch_gap < db->watch_floor)
			db->watch_gap = db->watch_floor;
	}
	/* from the tick's start, as wake-ups are: the tick's own time is not added */
	at = db->tick_started + db->watch_gap;
	if (at < now)
		at = now;
	if (!db->wake_at || at < db->wake_at)
		db->wake_at = at;
}

static void on_tick(Db *db, const JobOutcome *o)
{
	const PqevReply *r = o->reply;
	Ticker *t = db->t;
	int watch_mode = db->tick_watch_mode;

	db->tick_watch_mode = -1;
	if (r->status == PQEV_OK) {
		const char *v = PQntuples(r->result) > 0 ? PQgetvalue(r->result, 0, 0) : "0";
		long long n = strtoll(v, NULL, 10);

		if (watch_mode >= 0)
			watch_ticked(db, r->result, n, watch_mode);

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
		if (watch_mode >= 0 && (db->watching || watch_mode == 1)) {
			/* whether the session still holds the watch lock is unknown: a new
			   session drops it, and the connection event runs the checks */
			db->watching = false;
			db->wake_at = 0;
			pqev_conn_reconnect(db->conn);
			return;
		}
		/* pgq may have been dropped or upgraded: check again before the next tick */
		db->recheck_pgq = true;
		db_kick(db);
		return;
	}
	/* lost, timed out, closed: the connection event restarts the checks */
	tick_conn_job_failed(db, o);
}

/*
 * The watch call. With the busy rule in SQL (since 2026-12-06), each busy queue
 * is ticked at its own gap from the same settings, so a quiet queue beside it
 * keeps wake_min_interval; the text changes only on a reload, so the session's
 * prepared statement is reused.
 */
static const char *watch_sql(const Db *db, int mode, char *buf, size_t size)
{
	const MainCfg *m = &db->t->cfg->main;

	if (!db->has_watch_rule) {
		snprintf(buf, size, "select * from pgq.ticker_watch(%d)", mode);
		return buf;
	}
	snprintf(buf, size, "select * from pgq.ticker_watch(%d, %.6f, %d, %.6f)", mode,
		 pqev_usec_to_sec(watch_gap_min(db)), m->wake_busy_rate,
		 pqev_usec_to_sec(m->wake_max_interval));
	return buf;
}

static void send_tick(Db *db)
{
	usec_t now = pqev_clock_now();
	const char *sql = "select pgq.ticker()";
	char buf[96];

	db->tick_due = false;
	db->tick_started = now;
	db->tick_watch_mode = -1;
	if (db->watching)
		db->tick_watch_mode = now - db->watch_active >= WATCH_LINGER ? 2 : 0;
	else if (db->tick_is_wake && db->has_watch && db->t->cfg->main.low_latency)
		db->tick_watch_mode = 1;
	if (db->tick_watch_mode >= 0)
		sql = watch_sql(db, db->tick_watch_mode, buf, sizeof(buf));
	if (db->watching) {
		/* a watch tick, not a wake-up */
	} else if (db->tick_is_wake) {
		db->t->stats.wakes++;
		db->t->stats.t_wakes++;
		db->n_wakes++;
	} else if (now >= db->tick_sched) {
		stats_record_lateness(db->t, now - db->tick_sched);
	} else {
		stats_record_lateness(db->t, 0);
	}
	db->tick_is_wake = false;
	run_on_tick_conn(db, JOB_TICK, "pgq.ticker()", sql, PQEV_Q_PREPARE, on_tick);
}

bool db_stop_owed(const Db *db)
{
	/* a cancel owed on an open tick connection waits for the tick in flight there */
	return job_busy(&db->maint_job) || db->tick_job.job == JOB_CANCEL ||
	       (db->cancel_backend && pqev_conn_is_ready(db->conn));
}

bool db_tick_in_flight(const Db *db)
{
	return job_busy(&db->tick_job) && db->tick_job.job != JOB_CANCEL;
}

static void on_cancel_sent(Db *db, const JobOutcome *o)
{
	(void)db;
	(void)o; /* the stop closes this connection next: nothing waits for the answer */
}

/*
 * A maintenance statement can run for minutes (a vacuum behind a lock), so a
 * stop does not wait for it: the server is asked to cancel it on the tick
 * connection (no new session, no blocking PQcancel; the server acts on it even
 * when we close right after), and its connection is closed now. The cancel is
 * what the stop waits for (up to stop_timeout); with a tick in flight on that
 * connection it goes on another (cluster_stop_cancels) or after the tick.
 */
static void send_cancel(Db *db)
{
	char pid[16];
	JobSpec spec = {
		.job = JOB_CANCEL,
		.what = "cancel of the maintenance statement",
		.sql = "select pg_catalog.pg_cancel_backend($1)",
		.param = pid,
		.timeout = db->t->cfg->main.query_timeout,
	};

	if (!db->cancel_backend || job_busy(&db->tick_job) || !pqev_conn_is_ready(db->conn))
		return;
	snprintf(pid, sizeof(pid), "%d", db->cancel_backend);
	db->cancel_backend = 0;
	(void)job_run(&db->tick_job, db->conn, &spec, on_cancel_sent);
}

/* Both sessions are open to the same server (a multi-host base_connstr may differ). */
static bool same_server(const Db *a, const Db *b)
{
	PGconn *x = pqev_conn_pgconn(a->conn), *y = pqev_conn_pgconn(b->conn);
	const char *hx = x ? PQhost(x) : NULL, *hy = y ? PQhost(y) : NULL;
	const char *px = x ? PQport(x) : NULL, *py = y ? PQport(y) : NULL;

	return hx && hy && px && py && strcmp(hx, hy) == 0 && strcmp(px, py) == 0;
}

/*
 * A cancel that cannot go now on its own tick connection (a tick in flight
 * there, maybe behind a lock) goes on a free tick connection of another
 * database of the cluster on the same server: pg_cancel_backend() reaches any
 * backend of the server, and the cluster's sessions share one role.
 */
void cluster_stop_cancels(Cluster *cl)
{
	for (Db *db = cl->dbs; db; db = db->next) {
		if (db->dead || !db->cancel_backend)
			continue;
		send_cancel(db);
		if (!db->cancel_backend || !db->conn || !pqev_conn_is_ready(db->conn))
			continue;
		for (Db *h = cl->dbs; h; h = h->next) {
			if (h == db || h->dead || h->cancel_backend || job_busy(&h->tick_job) ||
			    !h->conn || !pqev_conn_is_ready(h->conn) || !same_server(db, h))
				continue;
			pqev_log_debug(db->log,
				       "cancel of the maintenance statement sent on %s's session",
				       h->label);
			h->cancel_backend = db->cancel_backend;
			db->cancel_backend = 0;
			send_cancel(h);
			break;
		}
	}
}

void db_stop(Db *db)
{
	if (!db->maint_conn_held && !db->maint_waiting)
		return;
	if (job_busy(&db->maint_job))
		db->cancel_backend = pqev_conn_backend_pid(db->maint_conn);
	maint_abandon(db, false);
	/* now, or when the tick in flight is answered (db_kick) */
	send_cancel(db);
}

static void send_retry_probe(Db *db);

void db_kick(Db *db)
{
	if (db->t->stopping && !db->dead)
		send_cancel(db);
	if (db->dead || db->t->stopping || db->state != DB_RUNNING) {
		db_rearm(db);
		return;
	}
	maint_kick(db);
	if (job_busy(&db->tick_job)) {
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
	else if (db->retry_due && !db->retry_active && !db->maint_conn_held && !db->maint_waiting)
		send_retry_probe(db);
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
	if (db->tick_job.deadline)
		at = min_u(at, db->tick_job.deadline);
	if (db->maint_job.deadline)
		at = min_u(at, db->maint_job.deadline);
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
		db->t->stats.skipped++;
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
	/* a timed-out retry call ends its round and its connection */
	(void)job_expire(&db->maint_job, now);
	if (job_expire(&db->tick_job, now))
		return; /* the cancel's done moved the machine on and re-armed */
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

/* ---- the maintenance connection ---- */

static bool maint_work_left(const Db *db)
{
	return db->maint_due || db->maint_active || db->retry_active;
}

static unsigned maint_cap(const Db *db)
{
	return (unsigned)db->t->cfg->main.max_maint_connections;
}

static void maint_wait_remove(Db *db)
{
	Cluster *cl = db->cl;
	Db **pp;

	if (!db->maint_waiting)
		return;
	for (pp = &cl->maint_wait_head; *pp; pp = &(*pp)->maint_wait_next) {
		if (*pp == db) {
			*pp = db->maint_wait_next;
			if (cl->maint_wait_tail == &db->maint_wait_next)
				cl->maint_wait_tail = pp;
			break;
		}
	}
	db->maint_wait_next = NULL;
	db->maint_waiting = false;
}

void cluster_maint_wake(Cluster *cl)
{
	while (cl->maint_wait_head &&
	       cl->maint_conns < (unsigned)cl->t->cfg->main.max_maint_connections) {
		Db *db = cl->maint_wait_head;

		maint_wait_remove(db);
		maint_kick(db);
	}
}

/* Close the maintenance connection and give its place to the next database waiting. */
static void maint_release(Db *db)
{
	Cluster *cl = db->cl;

	maint_wait_remove(db);
	if (!db->maint_conn_held)
		return;
	db->maint_conn_held = false;
	if (cl->maint_conns > 0)
		cl->maint_conns--;
	pqev_log_debug(db->log, "maintenance connection closed");
	/* a statement in flight ends here, through its done, which sees it released */
	pqev_conn_close(db->maint_conn);
	if (!db->dead && !cl->dead)
		cluster_maint_wake(cl);
}

/*
 * End the rounds in progress and close the connection. retry_soon: they
 * failed (connection lost, timeout); plan them again after min(period,
 * check_period) rather than at once, so a server that is down is not asked
 * for a maintenance connection in a loop.
 */
static void maint_abandon(Db *db, bool retry_soon)
{
	usec_t now = pqev_clock_now();

	if (retry_soon && (db->maint_active || db->maint_due)) {
		db->maint_due = false;
		db->next_maint = now + min_u(db->cl->maint_period, db->cl->check_period);
	}
	if (retry_soon && db->retry_active)
		db->next_retry = now + min_u(db->cl->retry_period, db->cl->check_period);
	maint_reset(db);
	db->retry_active = db->retry_more = false;
	maint_release(db);
	db_rearm(db);
}

static void maint_next(Db *db);

static void on_maint_done(Db *db, const JobOutcome *o)
{
	PqevStatus st = o->reply->status;

	if (!db->maint_conn_held)
		return; /* released (stop, park, unregister): the rounds are already over */
	if (st != PQEV_OK && st != PQEV_SQL_ERROR) {
		if (st == PQEV_TIMEOUT || (st == PQEV_CANCELED && o->timed_out))
			pqev_log_warning(db->log, "%s timed out, round abandoned", o->what);
		else
			pqev_log_warning(db->log, "%s: %s, round abandoned", o->what,
					 o->reply->detail);
		stats_count_error(db->t, db,
				  st == PQEV_TIMEOUT || o->timed_out ? ERR_TIMEOUT : ERR_LOST);
		maint_abandon(db, true);
		return;
	}
	if (o->job == JOB_MAINT)
		maint_read(db, o->reply);
	else
		retry_read(db, o->reply);
	maint_next(db);
}

/* Run the next statement of the rounds in progress, or close the connection. */
static void maint_next(Db *db)
{
	JobSpec spec;
	bool planned = false;

	if (db->t->stopping) {
		maint_abandon(db, false);
		return;
	}
	if (db->maint_due || db->maint_active)
		planned = maint_plan(db, &spec);
	if (!planned && db->retry_active)
		planned = retry_plan(db, &spec);
	if (!planned) {
		maint_release(db);
		db_rearm(db);
		return;
	}
	if (job_run(&db->maint_job, db->maint_conn, &spec, on_maint_done) < 0)
		maint_abandon(db, true);
}

static void on_maint_event(PqevConn *c, const PqevConnEvent *ev, void *arg)
{
	Db *db = arg;

	if (db->dead || !db->maint_conn_held)
		return;
	switch (ev->type) {
	case PQEV_EV_CONNECTED:
		pqev_log_debug(db->log, "maintenance connection open");
		if (!job_busy(&db->maint_job))
			maint_next(db);
		break;
	case PQEV_EV_CONNECT_FAILED:
	case PQEV_EV_LOST:
		if (ev->server_down) /* the server's own line says it */
			pqev_log_debug(db->log, "maintenance connection: %s", ev->detail);
		else
			pqev_log_warning(db->log, "maintenance connection: %s", ev->detail);
		maint_abandon(db, true);
		break;
	case PQEV_EV_RECYCLED:
		break; /* lifetime is 0 on this connection */
	}
}

/* Open the maintenance connection (under max_connecting). false: it cannot be made. */
static bool maint_open(Db *db)
{
	PqevConnConfig cc;
	char *ci = NULL;
	int rc;

	if (db_conn_config(db, &cc, &ci) < 0) {
		pqev_log_error(db->log, "out of memory");
		return false;
	}
	/* a round is short-lived: connection_lifetime does not apply, and no liveness
	   query is needed while a statement is in flight */
	cc.lifetime = 0;
	cc.idle_check = 0;
	cc.max_pipeline = 1;
	if (!db->maint_conn) {
		PqevConnCallbacks cb = {
			.on_event = on_maint_event,
			.on_notice = on_notice,
			.arg = db,
		};

		db->maint_conn = pqev_conn_new(limit_of(db), &cc, &cb);
		rc = db->maint_conn ? 0 : -ENOMEM;
	} else {
		rc = pqev_conn_set_config(db->maint_conn, &cc);
	}
	free(ci);
	if (rc == 0)
		rc = pqev_conn_start(db->maint_conn);
	if (rc < 0) {
		pqev_log_error(db->log, "cannot open a maintenance connection: %s",
			       db->maint_conn ? pqev_conn_error(db->maint_conn) : strerror(-rc));
		return false;
	}
	db->maint_conn_held = true;
	db->cl->maint_conns++;
	pqev_log_debug(db->log, "opening a maintenance connection (%u of %u in use)",
		       db->cl->maint_conns, maint_cap(db));
	return true;
}

/* Work for the maintenance connection: run it, open it, or queue for a place. */
static void maint_kick(Db *db)
{
	Cluster *cl = db->cl;

	if (db->maint_waiting || db->dead || db->t->stopping)
		return;
	if (db->maint_conn_held) {
		if (pqev_conn_is_ready(db->maint_conn) && !job_busy(&db->maint_job))
			maint_next(db);
		return; /* connecting: on_maint_event goes on */
	}
	if (db->state != DB_RUNNING || !maint_work_left(db))
		return;
	if (cl->maint_conns >= maint_cap(db)) {
		db->maint_waiting = true;
		db->maint_wait_next = NULL;
		*cl->maint_wait_tail = db;
		cl->maint_wait_tail = &db->maint_wait_next;
		pqev_log_debug(db->log, "waiting for a maintenance connection (%u in use)",
			       cl->maint_conns);
		return;
	}
	if (!maint_open(db))
		maint_abandon(db, true);
}

/*
 * Is any retry event due? Asked on the tick connection (rq_retry_idx, no lock
 * that maintenance takes), so a round that has nothing to move opens no
 * connection.
 */
static void on_retry_probe(Db *db, const JobOutcome *o)
{
	const PqevReply *r = o->reply;

	if (r->status == PQEV_OK && PQntuples(r->result) == 1 &&
	    strcmp(PQgetvalue(r->result, 0, 0), "t") == 0) {
		db->retry_active = true; /* the round starts on the maintenance connection */
		db->retry_more = true;
		db->retry_calls = 0;
		db->retry_due = false;
	} else {
		if (r->status == PQEV_SQL_ERROR)
			db_note_sql_error(db, "retry check", r);
		else if (r->status != PQEV_OK)
			tick_conn_job_failed(db, o);
		db->retry_due = false;
		db->next_retry = pqev_clock_now() + db->cl->retry_period;
	}
	db_kick(db);
}

static void send_retry_probe(Db *db)
{
	run_on_tick_conn(db, JOB_RETRY, "retry check",
			 "select exists (select 1 from pgq.retry_queue"
			 " where ev_retry_after <= pg_catalog.now())",
			 PQEV_Q_SIMPLE, on_retry_probe);
}

void db_close(Db *db)
{
	maint_abandon(db, false);
	if (db->conn)
		pqev_conn_close(db->conn);
}

void db_recheck_now(Db *db)
{
	if (db->dead)
		return;
	db->recheck_interval = db->cl->check_period;
	if (db->state == DB_RUNNING) {
		/* pgq may have been dropped or upgraded: check before the next tick */
		db->recheck_pgq = true;
		db_kick(db);
	} else if (db->state == DB_NOPGQ || db->state == DB_FAILED) {
		db->next_check = pqev_clock_now();
		db_rearm(db);
	}
}

/* ---- connection callbacks ---- */

void db_server_event(const PqevServerEvent *ev, void *arg)
{
	const char *s = ev->waiting == 1 ? "" : "s";

	(void)arg;
	if (ev->down)
		pqev_log_warning(NULL, "server %s is down: %s; %u connection%s wait for it",
				 ev->target, ev->error, ev->waiting, s);
	else if (ev->reported)
		pqev_log_info(NULL,
			      "server %s answers again after %.1f s; %u connection%s reconnect",
			      ev->target, pqev_usec_to_sec(ev->down_for), ev->waiting, s);
	else
		pqev_log_warning(
			NULL, "server %s was down for %.2f s: %s; %u connection%s reconnect",
			ev->target, pqev_usec_to_sec(ev->down_for), ev->error, ev->waiting, s);
}

static void set_msg(char **slot, const char *text)
{
	free(*slot);
	*slot = text ? strdup(text) : NULL; /* out of memory: the line is lost, not the state */
}

/* The held "connection lost" line, at `level` (debug: the server's line covers it). */
static void flush_lost(Db *db, bool warn)
{
	if (!db->lost_msg)
		return;
	if (warn)
		pqev_log_warning(db->log, "%s", db->lost_msg);
	else
		pqev_log_debug(db->log, "%s", db->lost_msg);
	set_msg(&db->lost_msg, NULL);
}

static void log_conn_failure(Db *db, const PqevConnEvent *ev)
{
	const char *msg = ev->detail;
	char line[1024];

	if (ev->server_down) {
		/* the server's own line says it once for all its connections */
		flush_lost(db, false);
		db->in_outage = true;
		pqev_log_debug(db->log, "%s (%u in a row); waiting for the server", msg,
			       ev->streak);
		return;
	}
	flush_lost(db, true);
	if (ev->type == PQEV_EV_LOST && ev->streak <= 1) {
		/* held until the next attempt tells whether the server went down */
		if (db->fatal_msg)
			snprintf(line, sizeof(line), "%s (server: FATAL: %s)", msg, db->fatal_msg);
		else
			snprintf(line, sizeof(line), "%s", msg);
		set_msg(&db->lost_msg, line);
	} else if (ev->streak <= 1) {
		pqev_log_warning(db->log, "%s; retrying in %.2f s", msg,
				 pqev_usec_to_sec(ev->retry_in));
	} else {
		pqev_log_debug(db->log, "%s (%u in a row); retrying in %.2f s", msg, ev->streak,
			       pqev_usec_to_sec(ev->retry_in));
	}
	set_msg(&db->fatal_msg, NULL);
}

static void on_conn_event(PqevConn *c, const PqevConnEvent *ev, void *arg)
{
	Db *db = arg;

	if (db->dead)
		return;
	switch (ev->type) {
	case PQEV_EV_CONNECTED:
		if (db->lost_msg) {
			/* a session lost alone (a terminated backend): one line for both */
			pqev_log_warning(db->log, "%s; reconnected", db->lost_msg);
			set_msg(&db->lost_msg, NULL);
		} else if (ev->recovered && !db->in_outage) {
			pqev_log_info(db->log, "%s", ev->detail);
		} else {
			pqev_log_debug(db->log, "%s", ev->detail);
		}
		db->in_outage = false;
		set_msg(&db->fatal_msg, NULL);
		if (db->next_tick == 0 || db->next_tick == USEC_INFINITY)
			db->next_tick = grid_next(db, pqev_clock_now());
		/* a job queued but not sent survives pqev_conn_reconnect(): the checks
		   go first on a new session */
		job_cancel(&db->tick_job);
		db->watching = false; /* a new session holds no lock */
		start_checks(db);
		break;
	case PQEV_EV_CONNECT_FAILED:
	case PQEV_EV_LOST:
		log_conn_failure(db, ev);
		stats_count_error(db->t, db, stats_conn_error_kind(ev));
		db_note_failure(db);
		db->tick_due = false;
		db->wake_at = 0;
		db->watching = false;
		db_set_state(db, DB_CONNECTING);
		db_rearm(db);
		break;
	case PQEV_EV_RECYCLED:
		pqev_log_debug(db->log, "%s", ev->detail);
		db->watching = false;
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
		return; /* a tick is already waiting to go */
	/* while watching only consumers notify (next_batch): the watch tick comes
	   forward, so a consumer that caught up does not wait out a long gap, but not
	   below the floor busy producers set (a consumer keeping up asks after every
	   batch) */
	if (db->watching && db->watch_floor > min_gap)
		min_gap = db->watch_floor;
	if (db->tick_job.job == JOB_TICK || now < db->tick_started + min_gap) {
		/* coalesce: one tick after the current one, no sooner than min_gap */
		usec_t at = db->tick_started + min_gap;

		if (db->tick_job.job == JOB_TICK && at <= now) {
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

	if (strcmp(severity, "FATAL") == 0) {
		/* the session ends with it: said with the lost connection (or, when
		   the whole server goes down, by the server's line) */
		pqev_log_debug(db->log, "server %s: %s", severity, text);
		set_msg(&db->fatal_msg, text);
	} else if (strcmp(severity, "WARNING") == 0)
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
	if (db->version[0])
		note_ticking(db, false, "unregistered");
	db_close(db);
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
	db_close(db);
	db->conn = pqev_conn_free(db->conn);
	db->maint_conn = pqev_conn_free(db->maint_conn);
	if (db->holds_conn)
		db->t->fd_conns--;
	if (db->fd_waiting)
		db->t->fd_over--;
	maint_reset(db);
	if (db->timer)
		event_free(db->timer);
	pqev_log_ctx_free(db->log);
	free(db->lost_msg);
	free(db->fatal_msg);
	free(db->label);
	free(db->name);
	free(db);
}
