/*
 * sync_watermark (spec 5.6): a branch whose node_attrs hold
 * sync_watermark=A,B does not follow the upstream global watermark directly.
 * It remembers the upstream value (real_gwm), reports only its own position
 * upward, and after each due report sets its own global watermark to the
 * lowest of its local watermark, real_gwm and the local watermarks of the
 * named nodes (each read on a short-lived connection to the node's location,
 * the named node itself and dead nodes skipped). An unknown name or an
 * unreachable node leaves the watermark where it is until the next round:
 * moving it past a node that could not be asked would let rotation drop what
 * that node may still need.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pgqd-ev/pqev_clock.h>

#include "pgqev_config.h"
#include "pgqev_cascade_int.h"

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* %XX and '+' decoded in place, as SkyTools' db_urldecode reads node_attrs */
static void urldecode(char *s)
{
	char *o = s;
	for (char *p = s; *p; p++) {
		if (*p == '+') {
			*o++ = ' ';
		} else if (*p == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
			*o++ = (char)(hexval(p[1]) * 16 + hexval(p[2]));
			p += 2;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
}

bool cas_read_attrs(PgqevCascade *w, const char *attrs)
{
	free(w->sync_nodes);
	w->sync_nodes = NULL;
	w->sync = false;
	if (!attrs || !*attrs)
		return true;
	char *copy = strdup(attrs);
	if (!copy)
		return false;
	bool ok = true;
	char *save = NULL;
	for (char *kv = strtok_r(copy, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(kv, '=');
		if (eq)
			*eq = '\0';
		urldecode(kv);
		if (strcmp(kv, "sync_watermark") != 0)
			continue;
		w->sync = true;
		free(w->sync_nodes);
		w->sync_nodes = NULL;
		if (eq && eq[1]) {
			urldecode(eq + 1);
			w->sync_nodes = strdup(eq + 1);
			ok = w->sync_nodes != NULL;
		}
	}
	free(copy);
	return ok;
}

void cas_sync_clear(PgqevCascade *w)
{
	w->wm_conn = pqev_conn_free(w->wm_conn);
	for (int i = 0; i < w->wm_n; i++) {
		free(w->wm_locs[i]);
		free(w->wm_names[i]);
	}
	free(w->wm_locs);
	free(w->wm_names);
	w->wm_locs = w->wm_names = NULL;
	w->wm_n = w->wm_i = 0;
}

/* The round ends without moving the watermark: say why, go on. */
static void give_up(PgqevCascade *w, const char *d)
{
	cas_sync_clear(w);
	cas_report(w, PGQEV_ERR_SQL, 0, 1,
		   "sync_watermark: %s; the global watermark of cascade %s stays until the"
		   " next round",
		   d, w->cfg.queue);
	cas_go_state(w);
}

void cas_sync_start(PgqevCascade *w)
{
	const char *p[1] = {w->cfg.queue};
	cas_set_phase(w, WP_SYNC);
	(void)cas_send_or_fail(w, false, RK_SYNC_LOC,
			       "select node_name, node_location, dead"
			       " from pgq_node.get_queue_locations($1)",
			       1, p, 0);
}

static void wm_conn_event(PqevConn *conn, const PqevConnEvent *ev, void *arg)
{
	/* a failed connect fails the queued request: the reply handles it */
	(void)conn;
	(void)ev;
	(void)arg;
}

static void ask_next_node(PgqevCascade *w);

static void set_wm(PgqevCascade *w)
{
	char s[32];
	snprintf(s, sizeof(s), "%" PRId64, w->wm_value);
	const char *p[2] = {w->cfg.queue, s};
	cas_sync_clear(w);
	(void)cas_send_or_fail(w, false, RK_SYNC_SET,
			       "select ret_code, ret_note from"
			       " pgq_node.set_global_watermark($1, $2::int8)",
			       2, p, 0);
}

static void ask_next_node(PgqevCascade *w)
{
	if (w->wm_i >= w->wm_n) {
		set_wm(w);
		return;
	}
	const char *name = w->wm_names[w->wm_i];
	char *label = pgqev_sprintf("%s/sync %s", w->label, name);
	PqevConnCallbacks cb = {.on_event = wm_conn_event, .arg = w};
	w->wm_conn = label ? pgqev_conn_open(w->lim, w->wm_locs[w->wm_i], label, "pgqev-cascade",
					     w->cfg.connect_timeout, w->cfg.statement_timeout, &cb)
			   : NULL;
	free(label);
	int rc = w->wm_conn ? pqev_conn_start(w->wm_conn) : -ENOMEM;
	const char *p[1] = {w->cfg.queue};
	PgqevReq req = {.owner = w, .gen = w->gen, .kind = RK_SYNC_NODE};
	if (rc == 0)
		rc = pgqev_req_send(w->wm_conn, &req,
				    "select local_watermark from pgq_node.get_node_info($1)", 1, p,
				    0, NULL, cas_req_done);
	if (rc != 0) {
		char d[PGQEV_MSG_MAX];
		snprintf(d, sizeof(d), "cannot connect to node %.200s: %.400s", name,
			 rc == -ENOMEM ? "out of memory"
			 : w->wm_conn  ? pqev_conn_error_detail(w->wm_conn)
				       : "no connection");
		give_up(w, d);
	}
}

static void on_locations(PgqevCascade *w, const PGresult *res)
{
	w->wm_value = w->local_wm;
	if (w->real_gwm < w->wm_value || w->wm_value <= 0)
		w->wm_value = w->real_gwm;
	int rows = res ? PQntuples(res) : 0;
	char *list = w->sync_nodes ? strdup(w->sync_nodes) : NULL;
	if (w->sync_nodes && !list) {
		give_up(w, "out of memory");
		return;
	}
	size_t most = 1;
	for (const char *c = list; c && *c; c++)
		most += *c == ',';
	w->wm_locs = calloc(most, sizeof(char *));
	w->wm_names = calloc(most, sizeof(char *));
	if (!w->wm_locs || !w->wm_names) {
		free(list);
		give_up(w, "out of memory");
		return;
	}
	/* split on every comma, empty names included, as the Python worker does */
	char *name = list;
	while (name) {
		char *comma = strchr(name, ',');
		if (comma)
			*comma = '\0';
		if (strcmp(name, w->node_name) != 0) {
			int row = -1;
			for (int i = 0; i < rows && row < 0; i++)
				if (strcmp(PQgetvalue(res, i, 0), name) == 0)
					row = i;
			if (row < 0) {
				char d[300];
				snprintf(d, sizeof(d), "unknown node \"%.200s\" in node_attrs",
					 name);
				free(list);
				give_up(w, d);
				return;
			}
			if (strcmp(PQgetvalue(res, row, 2), "t") != 0 &&
			    !PQgetisnull(res, row, 1)) {
				w->wm_names[w->wm_n] = strdup(name);
				w->wm_locs[w->wm_n] = strdup(PQgetvalue(res, row, 1));
				w->wm_n++;
				if (!w->wm_names[w->wm_n - 1] || !w->wm_locs[w->wm_n - 1]) {
					free(list);
					give_up(w, "out of memory");
					return;
				}
			}
		}
		name = comma ? comma + 1 : NULL;
	}
	free(list);
	ask_next_node(w);
}

static void on_node_wm(PgqevCascade *w, const PqevReply *r)
{
	const char *name = w->wm_names[w->wm_i];
	if (r->status != PQEV_OK) {
		char d[PGQEV_MSG_MAX];
		snprintf(d, sizeof(d), "cannot read the local watermark of node %.200s: %.400s",
			 name, r->error ? r->detail : pqev_status_name(r->status));
		give_up(w, d);
		return;
	}
	if (!r->result || PQntuples(r->result) != 1 || PQgetisnull(r->result, 0, 0)) {
		/* a node not set up (yet): the Python worker goes on without it */
		cas_report(w, PGQEV_ERR_SQL, 0, 1,
			   "sync_watermark: node %s has no local watermark for cascade %s", name,
			   w->cfg.queue);
	} else {
		int64_t v = strtoll(PQgetvalue(r->result, 0, 0), NULL, 10);
		if (v < w->wm_value)
			w->wm_value = v;
	}
	w->wm_conn = pqev_conn_free(w->wm_conn);
	w->wm_i++;
	ask_next_node(w);
}

void cas_sync_reply(PgqevCascade *w, int kind, const PqevReply *r)
{
	switch (kind) {
	case RK_SYNC_LOC:
		if (r->status != PQEV_OK) {
			cas_fail(w, PGQEV_ERR_TARGET, "pgq_node.get_queue_locations failed",
				 r->error ? r->detail : NULL);
			return;
		}
		on_locations(w, r->result);
		return;
	case RK_SYNC_NODE:
		on_node_wm(w, r);
		return;
	case RK_SYNC_SET:
		if (r->status != PQEV_OK) {
			cas_fail(w, PGQEV_ERR_TARGET, "pgq_node.set_global_watermark failed",
				 r->error ? r->detail : NULL);
			return;
		}
		if (r->result && PQntuples(r->result) == 1 &&
		    atoi(PQgetvalue(r->result, 0, 0)) >= 300)
			cas_report(w, PGQEV_ERR_SQL, 0, 1, "pgq_node.set_global_watermark: %s",
				   PQgetvalue(r->result, 0, 1));
		cas_progress(w);
		cas_go_state(w);
		return;
	default:
		return;
	}
}

/* PgQ's worker reports only after a batch; with pgqd's idle ticks every batch
   is followed by another one soon enough. Here a report that was not due after
   the last batch (wm_period) would wait for the next tick, which may never
   come on a quiet queue: the provider would then keep holding back rotation
   for a position this node has long passed, and a sync_watermark branch would
   never take its round. Between batches the position is the completed tick
   (the next batch's previous tick). */
bool cas_idle_report(PgqevCascade *w, usec_t *delay)
{
	if (w->type == NT_ROOT || w->completed <= 0)
		return false;
	if (cas_maybe_publish_wm(w, w->completed, w->completed)) {
		if (w->sync && w->real_gwm > 0) {
			cas_sync_start(w);
			return true;
		}
		return false;
	}
	if (cas_wm_to_report(w, w->completed, w->completed) != w->wm_sent) {
		usec_t due = w->last_wm + w->cfg.wm_period, now = pqev_clock_monotonic();
		usec_t left = due > now ? due - now : 0;
		if (left < *delay)
			*delay = left;
	}
	return false;
}
