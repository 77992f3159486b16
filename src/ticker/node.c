/*
 * [node NAME] sections: the worker of each cascade node runs on the daemon's
 * loop (libpgqev's PgqevCascade), beside the ticking, on the shared connect
 * limiter. A reload keeps workers whose settings did not change, starts new
 * ones and frees removed or changed ones (an open batch is rolled back there
 * and applied again by the next worker, see docs/cascade.md).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include <pgqd-ev/pgqev_cascade.h>
#include <pgqd-ev/pqev_clock.h>

#include "ticker.h"

struct NodeWorker {
	NodeWorker *next;
	Ticker *t;
	char *name;
	NodeCfg cfg; /* strings owned */
	PgqevCascade *w;
	PqevLogCtx *log;
	usec_t started;
	bool marked;
	bool unhealthy;
	bool stopped;
};

static char *dup0(const char *s)
{
	return strdup(s ? s : "");
}

static bool same_str(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool same_cfg(const NodeCfg *a, const NodeCfg *b)
{
	return same_str(a->queue, b->queue) && same_str(a->db, b->db) &&
	       same_str(a->node_name, b->node_name) && same_str(a->worker, b->worker) &&
	       a->fetch_size == b->fetch_size && a->poll_period == b->poll_period &&
	       a->wm_period == b->wm_period && a->unhealthy_after == b->unhealthy_after;
}

static void on_error(PgqevCascade *w, const PgqevError *err, void *arg)
{
	NodeWorker *n = arg;
	/* the first failure of a streak at warning, repeats at debug */
	if (err->streak <= 1)
		pqev_log_warning(n->log, "%s", err->message);
	else
		pqev_log_debug(n->log, "%s (%u in a row)", err->message, err->streak);
}

static void on_state(PgqevCascade *w, PgqevState old_state, PgqevState new_state, void *arg)
{
	NodeWorker *n = arg;
	if (new_state == PGQEV_STATE_STOPPED)
		n->stopped = true;
}

static void node_free(NodeWorker *n)
{
	if (!n)
		return;
	pgqev_cascade_free(n->w);
	pqev_log_ctx_free(n->log);
	free(n->name);
	free(n->cfg.queue);
	free(n->cfg.db);
	free(n->cfg.node_name);
	free(n->cfg.worker);
	free(n);
}

static NodeWorker *node_new(Ticker *t, const NodeCfg *c)
{
	NodeWorker *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->t = t;
	n->cfg = *c;
	n->name = dup0(c->name);
	n->cfg.name = n->name;
	n->cfg.queue = dup0(c->queue);
	n->cfg.db = dup0(c->db);
	n->cfg.node_name = dup0(c->node_name);
	n->cfg.worker = dup0(c->worker);
	n->log = pqev_log_ctx_new("node", c->name);
	if (!n->name || !n->cfg.queue || !n->cfg.db || !n->cfg.node_name || !n->cfg.worker ||
	    !n->log) {
		node_free(n);
		return NULL;
	}
	PgqevCascadeConfig cc;
	pgqev_cascade_config_init(&cc);
	cc.conninfo = n->cfg.db;
	cc.queue = n->cfg.queue;
	cc.node = *n->cfg.node_name ? n->cfg.node_name : n->name;
	cc.worker = *n->cfg.worker ? n->cfg.worker : NULL;
	cc.label = n->name;
	cc.fetch_size = (unsigned)n->cfg.fetch_size;
	cc.poll_interval = n->cfg.poll_period;
	cc.wm_period = n->cfg.wm_period;
	cc.connect_timeout = t->cfg->main.connect_timeout;
	cc.statement_timeout = t->cfg->main.statement_timeout;
	/* the library's PgqevLimiter is the core's connect limiter under its public
	   name: the workers share the cluster's (src/consumer/pgqev_int.h) */
	cc.limiter = (PgqevLimiter *)t->limit;
	cc.on_error = on_error;
	cc.on_state = on_state;
	cc.arg = n;
	char eb[256];
	n->w = pgqev_cascade_new(t->base, &cc, eb, sizeof(eb));
	if (!n->w) {
		pqev_log_error(n->log, "cannot run the node's worker: %s", eb);
		node_free(n);
		return NULL;
	}
	if (pgqev_cascade_start(n->w) < 0) {
		node_free(n);
		return NULL;
	}
	n->started = pqev_clock_monotonic();
	pqev_log_info(n->log, "worker started for cascade %s", n->cfg.queue);
	return n;
}

void node_apply(Ticker *t, const TickerConfig *cfg)
{
	for (NodeWorker *n = t->nodes; n; n = n->next)
		n->marked = false;
	for (size_t i = 0; i < cfg->nodes.count; i++) {
		const NodeCfg *c = PQEV_CONF_ARRAY_AT(cfg->nodes, NodeCfg, i);
		NodeWorker **pp = &t->nodes;
		while (*pp && strcmp((*pp)->name, c->name) != 0)
			pp = &(*pp)->next;
		if (*pp && same_cfg(&(*pp)->cfg, c)) {
			(*pp)->marked = true;
			continue;
		}
		if (*pp) {
			NodeWorker *old = *pp;
			*pp = old->next;
			pqev_log_info(old->log, "settings changed, restarting the worker");
			node_free(old);
		}
		NodeWorker *n = node_new(t, c);
		if (!n)
			continue;
		n->marked = true;
		n->next = t->nodes;
		t->nodes = n;
	}
	for (NodeWorker **pp = &t->nodes; *pp;) {
		NodeWorker *n = *pp;
		if (n->marked) {
			pp = &n->next;
			continue;
		}
		*pp = n->next;
		pqev_log_info(n->log, "removed from the configuration, worker stopped");
		node_free(n);
	}
}

void node_stop_all(Ticker *t)
{
	for (NodeWorker *n = t->nodes; n; n = n->next)
		pgqev_cascade_stop(n->w);
}

bool node_all_stopped(const Ticker *t)
{
	for (const NodeWorker *n = t->nodes; n; n = n->next)
		if (pgqev_cascade_state(n->w) != PGQEV_STATE_STOPPED)
			return false;
	return true;
}

void node_free_all(Ticker *t)
{
	while (t->nodes) {
		NodeWorker *n = t->nodes;
		t->nodes = n->next;
		node_free(n);
	}
}

unsigned node_check_health(Ticker *t)
{
	usec_t now = pqev_clock_monotonic();
	unsigned bad_count = 0;
	for (NodeWorker *n = t->nodes; n; n = n->next) {
		PgqevCascadeStats st;
		pgqev_cascade_stats(n->w, &st);
		usec_t since = st.last_progress ? st.last_progress : n->started;
		bool bad = n->cfg.unhealthy_after && now - since >= n->cfg.unhealthy_after;
		if (bad && !n->unhealthy)
			pqev_log_error(n->log, "no progress for %.0f s (%s%s)",
				       pqev_usec_to_sec(now - since),
				       st.provider_connected ? "provider connected"
							     : "provider unreachable",
				       st.provider_failures ? ", failing" : "");
		else if (!bad && n->unhealthy)
			pqev_log_info(n->log, "making progress again");
		n->unhealthy = bad;
		bad_count += bad;
	}
	t->nodes_unhealthy = bad_count;
	return bad_count;
}

static double lag_ticks(const PgqevCascadeStats *st)
{
	if (!st->provider_tick || !st->completed_tick || st->provider_tick < st->completed_tick)
		return 0;
	return (double)(st->provider_tick - st->completed_tick);
}

/* Names come from the configuration and the provider's name from the server:
   escaped as stats.c escapes cluster and database names. */
static void put_label(struct evbuffer *out, const char *v)
{
	stats_put_escaped(out, v, false);
}

static void node_metric(Ticker *t, struct evbuffer *out, const char *name, const char *type,
			const char *help, int which)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
	for (NodeWorker *n = t->nodes; n; n = n->next) {
		PgqevCascadeStats st;
		pgqev_cascade_stats(n->w, &st);
		double v = 0;
		switch (which) {
		case 0:
			v = lag_ticks(&st);
			break;
		case 1:
			v = st.lag_seconds;
			break;
		case 2:
			v = (double)st.copied;
			break;
		case 3:
			v = (double)st.events;
			break;
		case 4:
			v = (double)st.batches;
			break;
		case 5:
			v = (double)st.errors;
			break;
		case 6:
			v = !n->unhealthy;
			break;
		}
		const char *type_name = pgqev_cascade_node_type(n->w);
		evbuffer_add_printf(out, "%s{node=\"", name);
		put_label(out, n->name);
		evbuffer_add(out, "\",queue=\"", 9);
		put_label(out, n->cfg.queue);
		evbuffer_add_printf(out, "\",type=\"%s\"} %.17g\n",
				    type_name ? type_name : "unknown", v);
	}
}

void node_render_metrics(Ticker *t, struct evbuffer *out)
{
	if (!t->nodes)
		return;
	node_metric(t, out, "pgqd_ev_node_lag_ticks", "gauge",
		    "Ticks of the provider not yet applied on the node.", 0);
	node_metric(t, out, "pgqd_ev_node_lag_seconds", "gauge",
		    "Age of the oldest provider tick not yet applied; 0 when caught up.", 1);
	node_metric(t, out, "pgqd_ev_node_events_copied_total", "counter",
		    "Events copied into the node's queue (branch).", 2);
	node_metric(t, out, "pgqd_ev_node_events_total", "counter",
		    "Events read from the provider in applied batches.", 3);
	node_metric(t, out, "pgqd_ev_node_batches_total", "counter", "Batches applied on the node.",
		    4);
	node_metric(t, out, "pgqd_ev_node_errors_total", "counter",
		    "Failures of the node's worker.", 5);
	node_metric(t, out, "pgqd_ev_node_healthy", "gauge",
		    "0 when the worker made no progress for unhealthy_after.", 6);
}

static void put_json(struct evbuffer *out, const char *v)
{
	evbuffer_add(out, "\"", 1);
	stats_put_escaped(out, v, true);
	evbuffer_add(out, "\"", 1);
}

void node_render_health(Ticker *t, struct evbuffer *out)
{
	usec_t now = pqev_clock_monotonic();
	evbuffer_add(out, ",\"nodes\":[", 10);
	for (NodeWorker *n = t->nodes; n; n = n->next) {
		PgqevCascadeStats st;
		pgqev_cascade_stats(n->w, &st);
		const char *type_name = pgqev_cascade_node_type(n->w);
		const char *prov = pgqev_cascade_provider(n->w);
		evbuffer_add_printf(out, "%s\n{\"node\":", n == t->nodes ? "" : ",");
		put_json(out, n->name);
		evbuffer_add(out, ",\"queue\":", 9);
		put_json(out, n->cfg.queue);
		evbuffer_add(out, ",\"type\":", 8);
		put_json(out, type_name ? type_name : "unknown");
		evbuffer_add(out, ",\"provider\":", 12);
		if (prov)
			put_json(out, prov);
		else
			evbuffer_add(out, "null", 4);
		evbuffer_add_printf(out,
				    ",\"state\":\"%s\",\"healthy\":%s,\"completed_tick\":%" PRId64
				    ",\"lag_ticks\":%.0f,\"lag_s\":%.3f,\"provider_connected\":%s",
				    pgqev_state_name(pgqev_cascade_state(n->w)),
				    n->unhealthy ? "false" : "true", st.completed_tick,
				    lag_ticks(&st), st.lag_seconds,
				    st.provider_connected ? "true" : "false");
		if (st.last_progress)
			evbuffer_add_printf(out, ",\"last_progress_age_s\":%.3f",
					    pqev_usec_to_sec(now - st.last_progress));
		evbuffer_add(out, "}", 1);
	}
	evbuffer_add(out, "]", 1);
}
