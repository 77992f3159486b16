/*
 * The registry: clusters and their databases, discovery, and applying a
 * (re)loaded configuration by mark and sweep.
 *
 * Discovery (a cluster without database_list) runs
 *   select datname from pg_database where not datistemplate and datallowconn
 * on initial_database every check_period, over one connection that stays open
 * between scans, except when initial_database is a template (an open session on
 * template1 would make CREATE DATABASE fail). A failed scan changes nothing:
 * only a successful result unregisters databases (pgqd unregisters everything
 * when the query errors).
 *
 * Reload: clusters are matched by name, databases by name within a cluster. A
 * changed base_connstr reconnects only that cluster's databases; changed periods
 * re-plan the schedules without reconnecting. Every kept database is checked
 * for pgq again at once (a database parked without pgq connects now).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_clock.h>
#include <pgqd-ev/pqev_connlimit.h>
#include <pgqd-ev/pqev_log.h>

#include "ticker.h"

static const char discovery_sql[] =
	"select datname, (select datistemplate from pg_catalog.pg_database"
	" where datname = current_database())"
	" from pg_catalog.pg_database where not datistemplate and datallowconn";

char *registry_label(const Cluster *cl, const char *dbname)
{
	size_t n = strlen(cl->name) + strlen(dbname) + 2;
	char *s = malloc(n);

	if (!s)
		return NULL;
	if (cl->name[0])
		snprintf(s, n, "%s/%s", cl->name, dbname);
	else
		snprintf(s, n, "%s", dbname);
	return s;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void register_db(Cluster *cl, const char *name)
{
	Db *db = db_new(cl, name);

	if (!db) {
		pqev_log_error(cl->log, "out of memory registering database %s", name);
		return;
	}
	db->next = cl->dbs;
	cl->dbs = db;
	cl->ndbs++;
	pqev_log_debug(db->log, "registered");
	db_start(db);
}

/*
 * Make cl's databases exactly names[0..n), which are unique (pg_database's
 * names; database_list refuses repeats). Sorted and searched, not compared
 * with every database: discovery runs every check_period, and a linear search
 * per name is quadratic in the cluster size.
 */
static void reconcile(Cluster *cl, char *const *names, size_t n)
{
	char **sorted = malloc((n ? n : 1) * sizeof(*sorted));
	bool *known = calloc(n ? n : 1, sizeof(*known));
	Db **pp;

	if (!sorted || !known) {
		/* lose nothing: the registered databases stay as they are until next time */
		pqev_log_error(cl->log,
			       "out of memory matching databases, keeping the current set");
		free(sorted);
		free(known);
		return;
	}
	if (n) {
		memcpy(sorted, names, n * sizeof(*sorted));
		qsort(sorted, n, sizeof(*sorted), cmp_name);
	}
	pp = &cl->dbs;
	while (*pp) {
		Db *db = *pp;
		char **hit = n ? bsearch(&db->name, sorted, n, sizeof(*sorted), cmp_name) : NULL;

		if (hit) {
			known[hit - sorted] = true;
			pp = &db->next;
		} else {
			*pp = db->next;
			cl->ndbs--;
			pqev_log_info(NULL, "Unregister database: [%s]", db->label);
			db_unregister(db);
		}
	}
	for (size_t i = 0; i < n; i++)
		if (!known[i])
			register_db(cl, sorted[i]);
	free(known);
	free(sorted);
}

/* ---- discovery ---- */

static void disc_arm(Cluster *cl, usec_t delay)
{
	struct timeval tv = pqev_usec_to_timeval(delay);

	evtimer_add(cl->disc_timer, &tv);
}

static void on_discovery(PqevConn *c, const PqevReply *r, void *arg)
{
	Cluster *cl = arg;
	bool is_template = true;
	char **names;
	int n;

	cl->disc_busy = false;
	if (cl->dead)
		return;
	if (r->status != PQEV_OK) {
		/* keep every database registered: a failed scan says nothing about them */
		if (r->status == PQEV_SQL_ERROR || r->status == PQEV_TIMEOUT)
			stats_count_error(cl->t, NULL,
					  r->status == PQEV_SQL_ERROR ? ERR_QUERY : ERR_TIMEOUT);
		pqev_log_warning(NULL, "%s", r->error ? r->error : "database discovery failed");
		pqev_conn_close(cl->disc);
		disc_arm(cl, cl->check_period);
		return;
	}
	n = PQntuples(r->result);
	names = calloc((size_t)n + 1, sizeof(char *));
	if (!names) {
		pqev_log_error(cl->log, "out of memory in discovery");
		disc_arm(cl, cl->check_period);
		return;
	}
	for (int i = 0; i < n; i++) {
		names[i] = PQgetvalue(r->result, i, 0);
		if (strcmp(PQgetvalue(r->result, i, 1), "f") == 0)
			is_template = false;
	}
	pqev_log_debug(cl->log, "discovery found %d databases", n);
	cl->disc_ok_once = true;
	reconcile(cl, names, (size_t)n);
	free(names);
	if (is_template)
		pqev_conn_close(cl->disc);
	disc_arm(cl, cl->check_period);
}

static void on_disc_event(PqevConn *c, const PqevConnEvent *ev, void *arg)
{
	Cluster *cl = arg;

	if (ev->type == PQEV_EV_CONNECT_FAILED || ev->type == PQEV_EV_LOST) {
		/* the scan request fails with it; close so we retry on our own period */
		stats_count_error(cl->t, NULL, stats_conn_error_kind(ev));
		pqev_log_debug(NULL, "%s", ev->message);
		if (!cl->disc_busy)
			pqev_conn_close(c);
	}
}

static void disc_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	Cluster *cl = arg;
	int rc;

	if (cl->dead || cl->t->stopping || cl->dblist || cl->disc_busy)
		return;
	if (pqev_conn_state(cl->disc) == PQEV_CONN_CLOSED) {
		rc = pqev_conn_start(cl->disc);
		if (rc < 0) {
			pqev_log_error(cl->log, "discovery: %s", pqev_conn_error(cl->disc));
			disc_arm(cl, cl->check_period);
			return;
		}
	}
	pqev_log_debug(cl->log, "auto-detecting dbs ...");
	rc = pqev_conn_query(cl->disc, discovery_sql, 0, NULL, on_discovery, cl);
	if (rc < 0) {
		pqev_log_error(cl->log, "discovery: %s", pqev_conn_error(cl->disc));
		disc_arm(cl, cl->check_period);
		return;
	}
	cl->disc_busy = true;
}

static int disc_config(Cluster *cl)
{
	const MainCfg *m = &cl->t->cfg->main;
	PqevConnConfig cc;
	PqevConnCallbacks cb = {.on_event = on_disc_event, .arg = cl};
	size_t n = strlen(cl->base_connstr) + 2 * strlen(cl->initial_database) + 16;
	char *ci = malloc(n), *p;
	char label[128];
	int rc = 0;

	if (!ci)
		return -1;
	p = ci + sprintf(ci, "%s%sdbname='", cl->base_connstr, cl->base_connstr[0] ? " " : "");
	for (const char *s = cl->initial_database; *s; s++) {
		if (*s == '\'' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	*p++ = '\'';
	*p = '\0';
	snprintf(label, sizeof(label), "%s%sdiscovery@%s", cl->name, cl->name[0] ? "/" : "",
		 cl->initial_database);
	pqev_conn_config_init(&cc);
	cc.conninfo = ci;
	cc.name = label;
	cc.application_name = m->application_name;
	cc.connect_timeout = m->connect_timeout;
	cc.statement_timeout = m->statement_timeout;
	cc.retry_base = m->backoff_base;
	cc.retry_cap = m->backoff_cap;
	if (cl->disc) {
		rc = pqev_conn_set_config(cl->disc, &cc);
	} else {
		cl->disc = pqev_conn_new(cl->own_limit ? cl->own_limit : cl->t->limit, &cc, &cb);
		if (!cl->disc)
			rc = -1;
	}
	free(ci);
	return rc;
}

/* ---- clusters ---- */

static void free_dblist(Cluster *cl)
{
	if (cl->dblist) {
		for (size_t i = 0; i < cl->ndblist; i++)
			free(cl->dblist[i]);
		free(cl->dblist);
	}
	cl->dblist = NULL;
	cl->ndblist = 0;
}

static bool set_dblist(Cluster *cl, const PqevConfList *l)
{
	free_dblist(cl);
	if (l->count == 0)
		return true;
	cl->dblist = calloc(l->count + 1, sizeof(char *));
	if (!cl->dblist)
		return false;
	for (size_t i = 0; i < l->count; i++) {
		cl->dblist[i] = strdup(l->items[i]);
		if (!cl->dblist[i])
			return false;
	}
	cl->ndblist = l->count;
	return true;
}

static bool same_list(const Cluster *cl, const PqevConfList *l)
{
	if (l->count != cl->ndblist || (l->count && !cl->dblist))
		return false;
	for (size_t i = 0; i < l->count; i++)
		if (strcmp(cl->dblist[i], l->items[i]) != 0)
			return false;
	return true;
}

static void cluster_free(Cluster *cl)
{
	while (cl->dbs) {
		Db *db = cl->dbs;

		cl->dbs = db->next;
		db_free(db);
	}
	cl->disc = pqev_conn_free(cl->disc);
	if (cl->disc_timer)
		event_free(cl->disc_timer);
	if (pqev_connlimit_free(cl->own_limit) < 0)
		pqev_log_error(cl->log, "connect limiter still in use");
	pqev_log_ctx_free(cl->log);
	free_dblist(cl);
	free(cl->name);
	free(cl->base_connstr);
	free(cl->initial_database);
	free(cl);
}

static void cluster_unregister(Cluster *cl)
{
	Ticker *t = cl->t;

	cl->dead = true;
	evtimer_del(cl->disc_timer);
	if (cl->disc)
		pqev_conn_close(cl->disc);
	while (cl->dbs) {
		Db *db = cl->dbs;

		cl->dbs = db->next; /* db_unregister relinks db->next into the graveyard */
		pqev_log_info(NULL, "Unregister database: [%s]", db->label);
		db_unregister(db);
	}
	/* the dbs are now in the graveyard; forget our list */
	cl->dbs = NULL;
	cl->ndbs = 0;
	cl->next = t->cl_graveyard;
	t->cl_graveyard = cl;
	registry_schedule_reap(t);
}

static bool str_changed(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") != 0;
}

/* Apply a view to a cluster; returns true if connections must be re-made. */
static bool cluster_set(Cluster *cl, const ClusterView *v, bool *ok)
{
	bool reconnect = str_changed(cl->base_connstr, v->base_connstr);
	char *bc = strdup(v->base_connstr), *idb = strdup(v->initial_database);

	*ok = bc && idb;
	if (!*ok) {
		free(bc);
		free(idb);
		return false;
	}
	free(cl->base_connstr);
	free(cl->initial_database);
	cl->base_connstr = bc;
	cl->initial_database = idb;
	cl->check_period = v->check_period;
	cl->ticker_period = v->ticker_period;
	cl->maint_period = v->maint_period;
	cl->retry_period = v->retry_period;
	cl->connection_lifetime = v->connection_lifetime;
	if (v->max_connecting != cl->max_connecting || (v->max_connecting && !cl->own_limit)) {
		cl->max_connecting = v->max_connecting;
		if (cl->max_connecting > 0 && cl->own_limit)
			pqev_connlimit_set_max(cl->own_limit, (unsigned)cl->max_connecting);
		/* a limiter is only created with the cluster: it must outlive its connections */
	}
	return reconnect;
}

static Cluster *cluster_new(Ticker *t, const ClusterView *v)
{
	Cluster *cl = calloc(1, sizeof(*cl));
	bool ok;
	char label[64];

	if (!cl)
		return NULL;
	cl->t = t;
	cl->maint_wait_tail = &cl->maint_wait_head;
	cl->name = strdup(v->name);
	snprintf(label, sizeof(label), "%s", v->name[0] ? v->name : "pgqd");
	cl->log = pqev_log_ctx_new("cluster", label);
	cl->disc_timer = evtimer_new(t->base, disc_timer_cb, cl);
	if (!cl->name || !cl->log || !cl->disc_timer)
		goto fail;
	if (v->max_connecting > 0) {
		cl->own_limit = pqev_connlimit_new(t->base, (unsigned)v->max_connecting);
		if (!cl->own_limit)
			goto fail;
		pqev_connlimit_set_server_hook(cl->own_limit, db_server_event, t);
	}
	cluster_set(cl, v, &ok);
	if (!ok || !set_dblist(cl, v->database_list))
		goto fail;
	return cl;
fail:
	cluster_free(cl);
	return NULL;
}

/* Start or re-plan what a cluster does after its settings were set. */
static void cluster_run(Cluster *cl, bool list_changed)
{
	if (cl->dblist) {
		if (cl->disc)
			pqev_conn_close(cl->disc);
		evtimer_del(cl->disc_timer);
		if (list_changed)
			reconcile(cl, cl->dblist, cl->ndblist);
		return;
	}
	if (disc_config(cl) < 0) {
		pqev_log_error(cl->log, "out of memory");
		return;
	}
	/* scan now: new databases show up at once after start and reload */
	if (!cl->disc_busy)
		disc_arm(cl, 0);
}

static Cluster *find_cluster(Ticker *t, const char *name)
{
	for (Cluster *cl = t->clusters; cl; cl = cl->next)
		if (!cl->dead && strcmp(cl->name, name) == 0)
			return cl;
	return NULL;
}

void registry_apply(Ticker *t, const TickerConfig *cfg)
{
	size_t n = ticker_config_clusters(cfg, NULL, 0);
	ClusterView *views = calloc(n ? n : 1, sizeof(*views));
	Cluster **pp;

	if (!views) {
		pqev_log_error(NULL, "out of memory applying the configuration");
		return;
	}
	ticker_config_clusters(cfg, views, n);
	for (Cluster *cl = t->clusters; cl; cl = cl->next)
		cl->marked = true;
	for (size_t i = 0; i < n; i++) {
		Cluster *cl = find_cluster(t, views[i].name);

		if (!cl) {
			cl = cluster_new(t, &views[i]);
			if (!cl) {
				pqev_log_error(NULL, "out of memory creating cluster %s",
					       views[i].name);
				continue;
			}
			cl->next = t->clusters;
			t->clusters = cl;
			cluster_run(cl, true);
		} else {
			bool ok, list_changed = !same_list(cl, views[i].database_list);
			bool reconnect;

			cl->marked = false;
			reconnect = cluster_set(cl, &views[i], &ok);
			if (ok && list_changed && !set_dblist(cl, views[i].database_list))
				ok = false;
			if (!ok) {
				pqev_log_error(cl->log, "out of memory applying the configuration");
				continue;
			}
			/* a reload also checks every database for pgq at once */
			for (Db *db = cl->dbs; db; db = db->next) {
				db_apply_settings(db, reconnect);
				if (!reconnect)
					db_recheck_now(db);
			}
			cluster_maint_wake(cl); /* max_maint_connections may have grown */
			if (reconnect && cl->disc)
				pqev_conn_close(cl->disc);
			cluster_run(cl, list_changed || reconnect);
		}
	}
	/* views[i] borrowed cfg's strings; the clusters copied what they keep */
	free(views);
	pp = &t->clusters;
	while (*pp) {
		Cluster *cl = *pp;

		if (cl->marked) {
			*pp = cl->next;
			pqev_log_info(cl->log, "cluster removed");
			cluster_unregister(cl);
		} else {
			pp = &cl->next;
		}
	}
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
	registry_reap(arg);
}

void registry_schedule_reap(Ticker *t)
{
	if (!t->reap_ev)
		t->reap_ev = event_new(t->base, -1, 0, reap_cb, t);
	if (t->reap_ev)
		event_active(t->reap_ev, 0, 0);
}

void registry_reap(Ticker *t)
{
	while (t->graveyard) {
		Db *db = t->graveyard;

		t->graveyard = db->next;
		db_free(db);
	}
	while (t->cl_graveyard) {
		Cluster *cl = t->cl_graveyard;

		t->cl_graveyard = cl->next;
		cluster_free(cl);
	}
}

void registry_free_all(Ticker *t)
{
	while (t->clusters) {
		Cluster *cl = t->clusters;

		t->clusters = cl->next;
		cluster_free(cl);
	}
	registry_reap(t);
	if (t->reap_ev)
		event_free(t->reap_ev);
	t->reap_ev = NULL;
}
