/*
 * Observability: the periodic stats line, per-database health and the
 * unreachable policy, and the Prometheus / JSON documents the HTTP endpoint
 * serves.
 *
 * The stats line keeps pgqd's "{ticks: N, maint: N, retry: N" prefix so existing
 * log parsers still match, then adds our counters and the databases by state.
 * Counters in the line are reset after each line; metrics are totals.
 */
#include <inttypes.h>
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
	s->ticks = s->maint = s->retry = s->created = s->wakes = s->errors = 0;
	s->lateness_max = 0;
}

bool stats_check_health(Ticker *t)
{
	const MainCfg *m = &t->cfg->main;
	usec_t now = pqev_clock_now();
	bool exit_now = false;

	if (m->unreachable_timeout == 0)
		return false;
	for (Cluster *cl = t->clusters; cl; cl = cl->next) {
		for (Db *db = cl->dbs; db; db = db->next) {
			bool bad = db->failing_since &&
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
		}
	}
	return exit_now;
}

bool stats_healthy(const Ticker *t)
{
	return t->stats.unreachable == 0 && t->nodes_unhealthy == 0 && !t->stopping;
}

void stats_status_text(const Ticker *t, char *buf, size_t len)
{
	const TickerStats *s = &t->stats;

	snprintf(buf, len, "%u running, %u connecting, %u no pgq, %u failed, %u unreachable",
		 s->by_state[DB_RUNNING], s->by_state[DB_CONNECTING] + s->by_state[DB_CHECKING],
		 s->by_state[DB_NOPGQ], s->by_state[DB_FAILED], s->unreachable);
}

/* Prometheus label values: escape \ " and newline. */
static void put_label(struct evbuffer *out, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			evbuffer_add_printf(out, "\\%c", *v);
		else if (*v == '\n')
			evbuffer_add(out, "\\n", 2);
		else
			evbuffer_add(out, v, 1);
	}
}

/* JSON strings. */
static void put_json(struct evbuffer *out, const char *v)
{
	evbuffer_add(out, "\"", 1);
	for (; *v; v++) {
		unsigned char c = (unsigned char)*v;

		if (c == '\\' || c == '"')
			evbuffer_add_printf(out, "\\%c", c);
		else if (c < 0x20)
			evbuffer_add_printf(out, "\\u%04x", c);
		else
			evbuffer_add(out, v, 1);
	}
	evbuffer_add(out, "\"", 1);
}

static void per_db_metric(Ticker *t, struct evbuffer *out, const char *name, const char *type,
			  const char *help, int which)
{
	usec_t now = pqev_clock_now();

	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
	for (Cluster *cl = t->clusters; cl; cl = cl->next) {
		for (Db *db = cl->dbs; db; db = db->next) {
			double v = 0;

			switch (which) {
			case 0:
				v = (double)db->n_ticks;
				break;
			case 1:
				v = (double)db->n_errors;
				break;
			case 2:
				v = db->last_tick_ok ? pqev_usec_to_sec(now - db->last_tick_ok)
						     : -1;
				break;
			case 3:
				v = db->fails;
				break;
			case 4:
				v = db->state == DB_RUNNING;
				break;
			case 5:
				v = (double)db->n_created;
				break;
			}
			evbuffer_add_printf(out, "%s{cluster=\"", name);
			put_label(out, cl->name);
			evbuffer_add(out, "\",database=\"", 12);
			put_label(out, db->name);
			evbuffer_add_printf(out, "\",state=\"%s\"} %.17g\n",
					    db_state_name(db->state), v);
		}
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
		"# HELP pgqd_ev_errors_total Failed queries.\n"
		"# TYPE pgqd_ev_errors_total counter\npgqd_ev_errors_total %" PRIu64 "\n"
		"# HELP pgqd_ev_ticks_skipped_total Grid points skipped (tick still pending).\n"
		"# TYPE pgqd_ev_ticks_skipped_total counter\n"
		"pgqd_ev_ticks_skipped_total %" PRIu64 "\n",
		s->t_ticks, s->t_created, s->t_maint, s->t_retry, s->t_wakes, s->t_errors,
		s->t_skipped);
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
			    "# HELP pgqd_ev_tick_lateness_seconds Tick start after its "
			    "scheduled time.\n# TYPE pgqd_ev_tick_lateness_seconds histogram\n");
	for (int i = 0; i < LATENESS_BUCKETS; i++) {
		cum += s->lateness_hist[i];
		evbuffer_add_printf(out,
				    "pgqd_ev_tick_lateness_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
				    lateness_bounds_ms[i] / 1000.0, cum);
	}
	cum += s->lateness_hist[LATENESS_BUCKETS];
	evbuffer_add_printf(out,
			    "pgqd_ev_tick_lateness_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
			    "pgqd_ev_tick_lateness_seconds_sum %.6f\n"
			    "pgqd_ev_tick_lateness_seconds_count %" PRIu64 "\n",
			    cum, s->lateness_sum, s->lateness_count);
	per_db_metric(t, out, "pgqd_ev_db_ticks_total", "counter",
		      "Successful pgq.ticker() calls per database.", 0);
	per_db_metric(t, out, "pgqd_ev_db_ticks_created_total", "counter",
		      "Sum of pgq.ticker() results per database.", 5);
	per_db_metric(t, out, "pgqd_ev_db_errors_total", "counter", "Failed queries per database.",
		      1);
	per_db_metric(t, out, "pgqd_ev_db_last_tick_age_seconds", "gauge",
		      "Seconds since the last good tick; -1: never.", 2);
	per_db_metric(t, out, "pgqd_ev_db_consecutive_failures", "gauge",
		      "Failures in a row (connect, check, tick).", 3);
	per_db_metric(t, out, "pgqd_ev_db_up", "gauge", "1 when the database is ticking.", 4);
	node_render_metrics(t, out);
}

void stats_render_health(Ticker *t, struct evbuffer *out)
{
	usec_t now = pqev_clock_now();
	bool first = true;
	char iso[32];

	evbuffer_add_printf(out, "{\"status\":\"%s\",\"uptime_s\":%.1f,\"databases\":[",
			    stats_healthy(t) ? "ok" : (t->stopping ? "stopping" : "unhealthy"),
			    pqev_usec_to_sec(now - t->start_mono));
	for (Cluster *cl = t->clusters; cl; cl = cl->next) {
		for (Db *db = cl->dbs; db; db = db->next) {
			evbuffer_add_printf(out, "%s\n{\"cluster\":", first ? "" : ",");
			first = false;
			put_json(out, cl->name);
			evbuffer_add(out, ",\"database\":", 12);
			put_json(out, db->name);
			evbuffer_add_printf(out, ",\"state\":\"%s\",\"healthy\":%s",
					    db_state_name(db->state),
					    db->unreachable ? "false" : "true");
			if (db->last_tick_ok) {
				pqev_clock_format_iso(db->last_tick_wall, iso, sizeof(iso));
				evbuffer_add_printf(
					out, ",\"last_tick\":\"%s\",\"last_tick_age_s\":%.3f", iso,
					pqev_usec_to_sec(now - db->last_tick_ok));
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
