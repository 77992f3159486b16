/*
 * Observability: the periodic stats line, error counting, per-database health
 * and the unreachable policy, and the Prometheus / JSON documents the HTTP
 * endpoint serves.
 *
 * The stats line keeps pgqd's "{ticks: N, maint: N, retry: N" prefix so existing
 * log parsers still match, then adds our counters and the databases by state.
 * Counters in the line are reset after each line; metrics are totals.
 *
 * Metrics: counters carry only identity labels (cluster, database, kind), never
 * the state, so a series survives state changes and rate() works; the state is
 * the gauge pgqd_ev_db_state. Label values and JSON strings are escaped, and
 * bytes that are not UTF-8 (a database name on a SQL_ASCII server) are written
 * as the text \xNN, so both documents stay valid.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include <pgqd-ev/pqev_clock.h>
#include <pgqd-ev/pqev_log.h>

#include "ticker.h"

const double lateness_bounds_ms[LATENESS_BUCKETS] = {1,   2,   5,   10,   20,   50,
						     100, 200, 500, 1000, 2000, 5000};

void stats_record_lateness(Ticker *t, usec_t late)
{
	double ms = (double)late / 1000.0;
	int i;

	for (i = 0; i < LATENESS_BUCKETS; i++)
		if (ms <= lateness_bounds_ms[i])
			break;
	t->stats.lateness_hist[i]++;
	t->stats.lateness_sum += (double)late / 1e6;
	t->stats.lateness_count++;
	if (late > t->stats.lateness_max)
		t->stats.lateness_max = late;
}

static const char *const err_kind_names[ERR_NKINDS] = {
	[ERR_CONNECT] = "connect", [ERR_AUTH] = "auth",   [ERR_TIMEOUT] = "timeout",
	[ERR_LOST] = "lost",       [ERR_QUERY] = "query",
};

const char *err_kind_name(ErrKind k)
{
	return k < ERR_NKINDS ? err_kind_names[k] : "?";
}

void stats_count_error(Ticker *t, Db *db, ErrKind kind)
{
	t->stats.errors++;
	t->stats.t_errors++;
	t->stats.t_err[kind]++;
	if (db) {
		db->n_errors++;
		db->n_err[kind]++;
	}
}

ErrKind stats_conn_error_kind(const PqevConnEvent *ev)
{
	const char *m = ev->message;

	if (ev->type == PQEV_EV_LOST)
		return ERR_LOST;
	/* libpq gives no code for a failed connect; its messages are stable */
	if (strstr(m, "timed out") || strstr(m, "timeout expired"))
		return ERR_TIMEOUT;
	if (strstr(m, "authentication") || strstr(m, "pg_hba.conf") || strstr(m, "password") ||
	    strstr(m, "role \"") || strstr(m, "permission denied"))
		return ERR_AUTH;
	return ERR_CONNECT;
}

static usec_t process_cpu(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (usec_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
	       (usec_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* descriptors kept for the log, HTTP clients, discovery, maintenance, nodes */
size_t ticker_fd_budget(const Ticker *t)
{
	size_t reserve = 48, n = 0; /* 16 of them for [node] workers */

	for (const Cluster *cl = t->clusters; cl; cl = cl->next)
		n++;
	reserve += n * (1 + (size_t)t->cfg->main.max_maint_connections);
	return t->fd_limit > reserve ? t->fd_limit - reserve : 0;
}

void ticker_fd_init(Ticker *t)
{
	struct rlimit rl;

	t->fd_limit = SIZE_MAX;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit up = {rl.rlim_max, rl.rlim_max};

		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			rl = up;
	}
	if (rl.rlim_cur != RLIM_INFINITY)
		t->fd_limit = (size_t)rl.rlim_cur;
	pqev_log_debug(NULL, "descriptor limit %zu", t->fd_limit);
}

/*
 * Say when the daemon cannot keep up, and what limits it: ticks skipped
 * because the previous one of the same database was still not sent (the loop
 * or the server is too slow), with the process's CPU share over the period,
 * which tells the two apart.
 */
static void log_falling_behind(Ticker *t, usec_t now)
{
	TickerStats *s = &t->stats;
	usec_t cpu = process_cpu();

	if (s->skipped && s->line_at && now > s->line_at)
		pqev_log_warning(NULL,
				 "falling behind: %" PRIu64 " ticks skipped in %.1f s (latest tick "
				 "%.1f ms after its time); the daemon used %.0f%% of a CPU, so the "
				 "limit is %s",
				 s->skipped, pqev_usec_to_sec(now - s->line_at),
				 (double)s->lateness_max / 1000.0,
				 100.0 * (double)(cpu - s->cpu_at) / (double)(now - s->line_at),
				 (double)(cpu - s->cpu_at) >= 0.8 * (double)(now - s->line_at)
					 ? "the daemon's CPU"
					 : "the servers' replies or this machine's load");
	s->skipped = 0;
	s->cpu_at = cpu;
	s->line_at = now;
}

void stats_log_line(Ticker *t)
{
	TickerStats *s = &t->stats;

	pqev_log_info(NULL,
		      "{ticks: %" PRIu64 ", maint: %" PRIu64 ", retry: %" PRIu64
		      ", created: %" PRIu64 ", wakes: %" PRIu64 ", errors: %" PRIu64
		      ", late_max_ms: %.1f"
		      ", running: %u, connecting: %u, checking: %u, no_pgq: %u, failed: %u"
		      ", unreachable: %u}",
		      s->ticks, s->maint, s->retry, s->created, s->wakes, s->errors,
		      (double)s->lateness_max / 1000.0, s->by_state[DB_RUNNING],
		      s->by_state[DB_CONNECTING], s->by_state[DB_CHECKING], s->by_state[DB_NOPGQ],
		      s->by_state[DB_FAILED], s->unreachable);
	log_falling_behind(t, pqev_clock_now());
	s->ticks = s->maint = s->retry = s->created = s->wakes = s->errors = 0;
	s->lateness_max = 0;
}

/*
 * Why a database is unhealthy, or NULL: unreachable; a database with PgQ whose
 * last tick is older than tick_stale_timeout (at least two of its periods); or
 * one that never ticked within startup_grace of being first seen. A database
 * without PgQ has nothing to tick and is healthy.
 */
static const char *db_problem(const Ticker *t, const Db *db, usec_t now, char *buf, size_t len)
{
	const MainCfg *m = &t->cfg->main;
	usec_t stale = m->tick_stale_timeout;

	if (db->unreachable)
		return "unreachable";
	if (db->fd_waiting)
		return "not connected: descriptor limit (RLIMIT_NOFILE) reached";
	if (db->state == DB_NOPGQ)
		return NULL;
	if (db->last_tick_ok) {
		if (stale && stale < 2 * db->cl->ticker_period)
			stale = 2 * db->cl->ticker_period;
		if (stale && now - db->last_tick_ok > stale) {
			snprintf(buf, len, "no tick for %.0f s (tick_stale_timeout %.0f s)",
				 pqev_usec_to_sec(now - db->last_tick_ok), pqev_usec_to_sec(stale));
			return buf;
		}
		return NULL;
	}
	{
		usec_t since = db->seen_at;

		if (now > since && now - since > m->startup_grace) {
			snprintf(buf, len, "never ticked in %.0f s (startup_grace %.0f s)",
				 pqev_usec_to_sec(now - since), pqev_usec_to_sec(m->startup_grace));
			return buf;
		}
	}
	return NULL;
}

/* A discovery cluster that has not listed its databases once within the grace
 * has, as far as we know, databases we are not ticking. */
static bool cluster_problem(const Ticker *t, const Cluster *cl, usec_t now)
{
	return !cl->dblist && !cl->disc_ok_once && now - t->start_mono > t->cfg->main.startup_grace;
}

/*
 * The databases that turned unhealthy (or healthy again) in one health check,
 * logged as one line: at 10,000 slow-starting databases one line each drowned
 * the log. The line names the first few; each one's detail is at debug level.
 */
#define HEALTH_TURN_NAMES 5
typedef struct {
	size_t count;
	const Db *first[HEALTH_TURN_NAMES];
	char why[128]; /* the first database's reason */
} HealthTurns;

static void health_turn_add(HealthTurns *h, const Db *db, const char *why)
{
	if (h->count < HEALTH_TURN_NAMES)
		h->first[h->count] = db;
	if (h->count == 0 && why)
		snprintf(h->why, sizeof(h->why), "%s", why);
	h->count++;
}

static void health_turn_log(const HealthTurns *h, bool unhealthy)
{
	char names[HEALTH_TURN_NAMES * 72 + 8];
	size_t len = 0, shown = h->count < HEALTH_TURN_NAMES ? h->count : HEALTH_TURN_NAMES;

	if (h->count == 0)
		return;
	if (h->count == 1) {
		if (unhealthy)
			pqev_log_warning(h->first[0]->log, "unhealthy: %s", h->why);
		else
			pqev_log_info(h->first[0]->log, "healthy again");
		return;
	}
	names[0] = '\0';
	for (size_t i = 0; i < shown && len < sizeof(names); i++)
		len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%.64s", i ? ", " : "",
					h->first[i]->label);
	if (len >= sizeof(names))
		len = sizeof(names) - 1;
	if (unhealthy)
		pqev_log_warning(NULL,
				 "%zu databases unhealthy: %s%s; %s: %s (each at debug level)",
				 h->count, names, h->count > shown ? ", ..." : "",
				 h->first[0]->label, h->why);
	else
		pqev_log_info(NULL, "%zu databases healthy again: %s%s", h->count, names,
			      h->count > shown ? ", ..." : "");
}

bool stats_check_health(Ticker *t)
{
	const MainCfg *m = &t->cfg->main;
	usec_t now = pqev_clock_now();
	bool exit_now = false;
	char buf[128];
	HealthTurns turned_bad = {0}, turned_good = {0};

	for (Cluster *cl = t->clusters; cl; cl = cl->next) {
		for (Db *db = cl->dbs; db; db = db->next) {
			bool bad = m->unreachable_timeout && db->failing_since &&
				   now - db->failing_since >= m->unreachable_timeout;

			if (bad && !db->unreachable) {
				db->unreachable = true;
				t->stats.unreachable++;
				pqev_log_error(db->log,
					       "unreachable for %.0f s (%u failures in a row): %s",
					       pqev_usec_to_sec(now - db->failing_since), db->fails,
					       db->conn ? pqev_conn_error(db->conn) : "");
				if (m->unreachable_action == TICKER_UNREACHABLE_EXIT)
					exit_now = true;
			}
			/* say once when a database turns unhealthy for a reason /health gives */
			if (!db->unreachable && !db->fd_waiting) {
				const char *why = db_problem(t, db, now, buf, sizeof(buf));

				if (why && !db->unhealthy_logged) {
					pqev_log_debug(db->log, "unhealthy: %s", why);
					health_turn_add(&turned_bad, db, why);
				} else if (!why && db->unhealthy_logged) {
					pqev_log_debug(db->log, "healthy again");
					health_turn_add(&turned_good, db, NULL);
				}
				db->unhealthy_logged = why != NULL;
			}
		}
	}
	health_turn_log(&turned_bad, true);
	health_turn_log(&turned_good, false);
	/* one line for all the databases without a descriptor, at most once a minute */
	if (t->fd_over != t->fd_over_logged &&
	    (t->fd_over == 0 || t->fd_over_logged == 0 || now - t->fd_logged_at >= 60000000)) {
		if (t->fd_over)
			pqev_log_warning(
				NULL,
				"%zu databases are not ticked: each needs a connection, and the "
				"descriptor limit (RLIMIT_NOFILE) is %zu, of which %zu are kept for "
				"the log, HTTP, discovery and maintenance; raise it (LimitNOFILE= "
				"in the unit, ulimit -n)",
				t->fd_over, t->fd_limit, t->fd_limit - ticker_fd_budget(t));
		else
			pqev_log_info(NULL, "every database has a connection again");
		t->fd_over_logged = t->fd_over;
		t->fd_logged_at = now;
	}
	return exit_now;
}

bool stats_healthy(const Ticker *t)
{
	usec_t now = pqev_clock_now();
	char buf[128];

	if (t->stopping || t->nodes_unhealthy > 0)
		return false;
	for (Cluster *cl = t->clusters; cl; cl = cl->next) {
		if (cluster_problem(t, cl, now))
			return false;
		for (Db *db = cl->dbs; db; db = db->next)
			if (db_problem(t, db, now, buf, sizeof(buf)))
				return false;
	}
	return true;
}

void stats_status_text(const Ticker *t, char *buf, size_t len)
{
	const TickerStats *s = &t->stats;

	snprintf(buf, len, "%u running, %u connecting, %u no pgq, %u failed, %u unreachable",
		 s->by_state[DB_RUNNING], s->by_state[DB_CONNECTING] + s->by_state[DB_CHECKING],
		 s->by_state[DB_NOPGQ], s->by_state[DB_FAILED], s->unreachable);
}

/*
 * Escape for a Prometheus label value (json false) or a JSON string (json true):
 * quote and newline (JSON: every control character) escaped; a byte that does
 * not start well-formed UTF-8 becomes the text \xNN, and so a backslash
 * becomes the text \\: the value read back is one-to-one with the name (a
 * literal "\xff" and the byte 0xff no longer look alike).
 */
void stats_put_escaped(struct evbuffer *out, const char *v, bool json)
{
	while (*v) {
		unsigned char c = (unsigned char)*v;
		size_t n = pqev_utf8_seq_len(v);

		if (n == 0) {
			evbuffer_add_printf(out, "\\\\x%02x", c);
			v++;
		} else if (c == '\\') {
			evbuffer_add(out, "\\\\\\\\", 4);
			v++;
		} else if (c == '"') {
			evbuffer_add(out, "\\\"", 2);
			v++;
		} else if (c == '\n') {
			evbuffer_add(out, "\\n", 2);
			v++;
		} else if (json && c < 0x20) {
			evbuffer_add_printf(out, "\\u%04x", c);
			v++;
		} else {
			evbuffer_add(out, v, n);
			v += n;
		}
	}
}

static void put_json(struct evbuffer *out, const char *v)
{
	evbuffer_add(out, "\"", 1);
	stats_put_escaped(out, v, true);
	evbuffer_add(out, "\"", 1);
}

/* The shortest decimal that reads back as v: 0.58077, not 0.58077000000000001. */
static void put_num(struct evbuffer *out, double v)
{
	char buf[32];

	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	evbuffer_add(out, buf, strlen(buf));
}

static void put_db_labels(struct evbuffer *out, const char *name, const Db *db)
{
	evbuffer_add_printf(out, "%s{cluster=\"", name);
	stats_put_escaped(out, db->cl->name, false);
	evbuffer_add(out, "\",database=\"", 12);
	stats_put_escaped(out, db->name, false);
	evbuffer_add(out, "\"", 1);
}

enum { M_TICKS, M_CREATED, M_AGE, M_FAILS, M_UP, M_HEALTHY };

static void per_db_metric(Ticker *t, struct evbuffer *out, const char *name, const char *type,
			  const char *help, int which)
{
	usec_t now = pqev_clock_now();
	char buf[128];

	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
	for (Cluster *cl = t->clusters; cl; cl = cl->next) {
		for (Db *db = cl->dbs; db; db = db->next) {
			put_db_labels(out, name, db);
			evbuffer_add(out, "} ", 2);
			switch (which) {
			case M_TICKS:
				evbuffer_add_printf(out, "%" PRIu64, db->n_ticks);
				break;
			case M_CREATED:
				evbuffer_add_printf(out, "%" PRIu64, db->n_created);
				break;
			case M_AGE:
				if (db->last_tick_ok)
					put_num(out, pqev_usec_to_sec(now - db->last_tick_ok));
				else
					evbuffer_add(out, "-1", 2);
				break;
			case M_FAILS:
				evbuffer_add_printf(out, "%u", db->fails);
				break;
			case M_UP:
				evbuffer_add_printf(out, "%d", db->state == DB_RUNNING);
				break;
			case M_HEALTHY:
				evbuffer_add_printf(out, "%d",
						    db_problem(t, db, now, buf, sizeof(buf)) ==
							    NULL);
				break;
			}
			evbuffer_add(out, "\n", 1);
		}
	}
}

static void per_db_errors(Ticker *t, struct evbuffer *out)
{
	evbuffer_add_printf(out, "# HELP pgqd_ev_db_errors_total Failures per database, by kind "
				 "(connect, auth, timeout, lost, query).\n"
				 "# TYPE pgqd_ev_db_errors_total counter\n");
	for (Cluster *cl = t->clusters; cl; cl = cl->next)
		for (Db *db = cl->dbs; db; db = db->next)
			for (int k = 0; k < ERR_NKINDS; k++) {
				put_db_labels(out, "pgqd_ev_db_errors_total", db);
				evbuffer_add_printf(out, ",kind=\"%s\"} %" PRIu64 "\n",
						    err_kind_name((ErrKind)k), db->n_err[k]);
			}
}

static void per_db_state(Ticker *t, struct evbuffer *out)
{
	evbuffer_add_printf(out, "# HELP pgqd_ev_db_state 1 for the state the database is in.\n"
				 "# TYPE pgqd_ev_db_state gauge\n");
	for (Cluster *cl = t->clusters; cl; cl = cl->next)
		for (Db *db = cl->dbs; db; db = db->next)
			for (int i = 0; i < DB_NSTATES; i++) {
				put_db_labels(out, "pgqd_ev_db_state", db);
				evbuffer_add_printf(out, ",state=\"%s\"} %d\n",
						    db_state_name((DbState)i),
						    db->state == (DbState)i);
			}
}

void stats_render_metrics(Ticker *t, struct evbuffer *out)
{
	const TickerStats *s = &t->stats;
	uint64_t cum = 0;

	evbuffer_add_printf(
		out,
		"# HELP pgqd_ev_ticks_total Successful pgq.ticker() calls.\n"
		"# TYPE pgqd_ev_ticks_total counter\npgqd_ev_ticks_total %" PRIu64 "\n"
		"# HELP pgqd_ev_ticks_created_total Sum of pgq.ticker() results.\n"
		"# TYPE pgqd_ev_ticks_created_total counter\n"
		"pgqd_ev_ticks_created_total %" PRIu64 "\n"
		"# HELP pgqd_ev_maint_rounds_total Completed maintenance rounds.\n"
		"# TYPE pgqd_ev_maint_rounds_total counter\n"
		"pgqd_ev_maint_rounds_total %" PRIu64 "\n"
		"# HELP pgqd_ev_retry_events_total Events moved back from retry queues.\n"
		"# TYPE pgqd_ev_retry_events_total counter\n"
		"pgqd_ev_retry_events_total %" PRIu64 "\n"
		"# HELP pgqd_ev_wake_ticks_total Ticks made on a producer wake-up.\n"
		"# TYPE pgqd_ev_wake_ticks_total counter\n"
		"pgqd_ev_wake_ticks_total %" PRIu64 "\n"
		"# HELP pgqd_ev_ticks_skipped_total Grid points skipped (tick still pending).\n"
		"# TYPE pgqd_ev_ticks_skipped_total counter\n"
		"pgqd_ev_ticks_skipped_total %" PRIu64 "\n",
		s->t_ticks, s->t_created, s->t_maint, s->t_retry, s->t_wakes, s->t_skipped);
	evbuffer_add_printf(out, "# HELP pgqd_ev_errors_total Failures by kind: connect, auth, "
				 "timeout, lost (connection broke), query (SQL error).\n"
				 "# TYPE pgqd_ev_errors_total counter\n");
	for (int k = 0; k < ERR_NKINDS; k++)
		evbuffer_add_printf(out, "pgqd_ev_errors_total{kind=\"%s\"} %" PRIu64 "\n",
				    err_kind_name((ErrKind)k), s->t_err[k]);
	evbuffer_add_printf(
		out,
		"# HELP pgqd_ev_descriptor_limit RLIMIT_NOFILE (each database needs one).\n"
		"# TYPE pgqd_ev_descriptor_limit gauge\npgqd_ev_descriptor_limit %zu\n"
		"# HELP pgqd_ev_databases_no_descriptor Databases not connected: descriptor limit.\n"
		"# TYPE pgqd_ev_databases_no_descriptor gauge\n"
		"pgqd_ev_databases_no_descriptor %zu\n"
		"# HELP process_cpu_seconds_total CPU time of the daemon (user and system).\n"
		"# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ",
		t->fd_limit, t->fd_over);
	put_num(out, pqev_usec_to_sec(process_cpu()));
	evbuffer_add_printf(out, "\n");
	evbuffer_add_printf(out, "# HELP pgqd_ev_databases Databases by state.\n"
				 "# TYPE pgqd_ev_databases gauge\n");
	for (int i = 0; i < DB_NSTATES; i++)
		evbuffer_add_printf(out, "pgqd_ev_databases{state=\"%s\"} %u\n",
				    db_state_name((DbState)i), s->by_state[i]);
	evbuffer_add_printf(out,
			    "# HELP pgqd_ev_databases_unreachable Databases failing longer than "
			    "unreachable_timeout.\n# TYPE pgqd_ev_databases_unreachable gauge\n"
			    "pgqd_ev_databases_unreachable %u\n",
			    s->unreachable);
	evbuffer_add_printf(out,
			    "# HELP pgqd_ev_healthy 1 when /health answers 200.\n"
			    "# TYPE pgqd_ev_healthy gauge\npgqd_ev_healthy %d\n",
			    stats_healthy(t));
	evbuffer_add_printf(out,
			    "# HELP pgqd_ev_tick_lateness_seconds Tick start after its "
			    "scheduled time.\n# TYPE pgqd_ev_tick_lateness_seconds histogram\n");
	for (int i = 0; i < LATENESS_BUCKETS; i++) {
		cum += s->lateness_hist[i];
		evbuffer_add(out, "pgqd_ev_tick_lateness_seconds_bucket{le=\"", 41);
		put_num(out, lateness_bounds_ms[i] / 1000.0);
		evbuffer_add_printf(out, "\"} %" PRIu64 "\n", cum);
	}
	cum += s->lateness_hist[LATENESS_BUCKETS];
	evbuffer_add_printf(out,
			    "pgqd_ev_tick_lateness_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
			    "pgqd_ev_tick_lateness_seconds_sum ",
			    cum);
	put_num(out, s->lateness_sum);
	evbuffer_add_printf(out, "\npgqd_ev_tick_lateness_seconds_count %" PRIu64 "\n",
			    s->lateness_count);
	per_db_metric(t, out, "pgqd_ev_db_ticks_total", "counter",
		      "Successful pgq.ticker() calls per database.", M_TICKS);
	per_db_metric(t, out, "pgqd_ev_db_ticks_created_total", "counter",
		      "Sum of pgq.ticker() results per database.", M_CREATED);
	per_db_errors(t, out);
	per_db_state(t, out);
	per_db_metric(t, out, "pgqd_ev_db_last_tick_age_seconds", "gauge",
		      "Seconds since the last good tick; -1: never.", M_AGE);
	per_db_metric(t, out, "pgqd_ev_db_consecutive_failures", "gauge",
		      "Failures in a row (connect, check, tick).", M_FAILS);
	per_db_metric(t, out, "pgqd_ev_db_up", "gauge", "1 when the database is ticking.", M_UP);
	per_db_metric(t, out, "pgqd_ev_db_healthy", "gauge",
		      "1 when the database counts as healthy in /health.", M_HEALTHY);
	node_render_metrics(t, out);
}

void stats_render_health(Ticker *t, struct evbuffer *out)
{
	usec_t now = pqev_clock_now();
	bool first = true;
	char iso[32], buf[128];
	const char *why;

	evbuffer_add_printf(out, "{\"status\":\"%s\",\"healthy\":%s,\"uptime_s\":",
			    stats_healthy(t) ? "ok" : (t->stopping ? "stopping" : "unhealthy"),
			    stats_healthy(t) ? "true" : "false");
	put_num(out, (double)((now - t->start_mono) / 100000) / 10.0);
	evbuffer_add(out, ",\"clusters\":[", 13);
	for (Cluster *cl = t->clusters; cl; cl = cl->next) {
		evbuffer_add_printf(out, "%s\n{\"cluster\":", first ? "" : ",");
		first = false;
		put_json(out, cl->name);
		evbuffer_add_printf(out, ",\"discovery\":%s", cl->dblist ? "false" : "true");
		if (!cl->dblist)
			evbuffer_add_printf(out, ",\"discovered\":%s",
					    cl->disc_ok_once ? "true" : "false");
		evbuffer_add_printf(out, ",\"healthy\":%s}",
				    cluster_problem(t, cl, now) ? "false" : "true");
	}
	evbuffer_add(out, "],\"databases\":[", 15);
	first = true;
	for (Cluster *cl = t->clusters; cl; cl = cl->next) {
		for (Db *db = cl->dbs; db; db = db->next) {
			evbuffer_add_printf(out, "%s\n{\"cluster\":", first ? "" : ",");
			first = false;
			put_json(out, cl->name);
			evbuffer_add(out, ",\"database\":", 12);
			put_json(out, db->name);
			why = db_problem(t, db, now, buf, sizeof(buf));
			evbuffer_add_printf(out, ",\"state\":\"%s\",\"healthy\":%s",
					    db_state_name(db->state), why ? "false" : "true");
			if (why) {
				evbuffer_add(out, ",\"problem\":", 11);
				put_json(out, why);
			}
			if (db->last_tick_ok) {
				pqev_clock_format_iso(db->last_tick_wall, iso, sizeof(iso));
				evbuffer_add_printf(
					out, ",\"last_tick\":\"%s\",\"last_tick_age_s\":", iso);
				put_num(out, (double)((now - db->last_tick_ok) / 1000) / 1000.0);
			} else {
				evbuffer_add_printf(out, ",\"last_tick\":null");
			}
			evbuffer_add_printf(out, ",\"consecutive_failures\":%u", db->fails);
			if (db->version[0]) {
				evbuffer_add(out, ",\"pgq_version\":", 15);
				put_json(out, db->version);
			}
			if (db->fails && db->conn && pqev_conn_error(db->conn)[0]) {
				evbuffer_add(out, ",\"last_error\":", 14);
				put_json(out, pqev_conn_error(db->conn));
			}
			evbuffer_add(out, "}", 1);
		}
	}
	evbuffer_add(out, "]", 1);
	node_render_health(t, out);
	evbuffer_add_printf(out, "}\n");
}
