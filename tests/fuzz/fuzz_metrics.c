/*
 * Fuzz target for the daemon's /metrics and /health documents with hostile
 * names: cluster and database names (any bytes but NUL: a database on a
 * SQL_ASCII server), pgq version strings, the last connection error (a bad
 * connection string quoted back by libpq), and the [node NAME] workers' names
 * and queues. The documents are rendered by the real stats.c / node.c code from
 * hand-built clusters and databases, then checked by fuzz_check.h's own strict
 * parsers: the Prometheus text must parse line by line with every series unique,
 * /health must be one JSON document, and every name must read back as written
 * (valid UTF-8 as is, any other byte as the text \xNN, a backslash as \\), a
 * form that is checked to decode back to the name: two names never show alike.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include <pgqd-ev/pqev_clock.h>
#include <pgqd-ev/pqev_connlimit.h>
#include <pgqd-ev/pqev_log.h>

#include "ticker.h"

#include "fuzz.h"
#include "fuzz_check.h"

/* The input: a few parameter bytes, then NUL-separated fields. */
static char *in_field(FzIn *in)
{
	const uint8_t *z = memchr(in->p, 0, in->n);
	size_t len = z ? (size_t)(z - in->p) : in->n;
	char *s = strndup((const char *)in->p, len);
	if (!s)
		abort();
	in->p += len + (z != NULL);
	in->n -= len + (z != NULL);
	return s;
}

/* How a name must read back: valid UTF-8 as is, another byte as the text \xNN,
   a backslash as the text \\. */
static char *shown(const char *s)
{
	size_t n = strlen(s), o = 0;
	char *out = malloc(4 * n + 1);
	if (!out)
		abort();
	for (size_t i = 0; i < n;) {
		size_t k = fz_utf8_len((const unsigned char *)s + i, n - i);
		if (k == 0) {
			o += (size_t)sprintf(out + o, "\\x%02x", (unsigned char)s[i]);
			i++;
		} else if (s[i] == '\\') {
			out[o++] = '\\';
			out[o++] = '\\';
			i++;
		} else {
			memcpy(out + o, s + i, k);
			o += k;
			i += k;
		}
	}
	out[o] = '\0';
	return out;
}

static int hex_digit(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The shown form decodes back to the name (so it is one-to-one): \\ is a
   backslash, \xNN the byte NN, anything else as it is; a lone backslash fails. */
static void check_shown_decodes(const char *name, const char *sh)
{
	size_t n = strlen(sh), o = 0;
	char *back = malloc(n + 1);
	if (!back)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (sh[i] != '\\') {
			back[o++] = sh[i];
		} else if (i + 1 < n && sh[i + 1] == '\\') {
			back[o++] = '\\';
			i++;
		} else if (i + 3 < n && sh[i + 1] == 'x' && hex_digit(sh[i + 2]) >= 0 &&
			   hex_digit(sh[i + 3]) >= 0) {
			back[o++] = (char)(hex_digit(sh[i + 2]) * 16 + hex_digit(sh[i + 3]));
			i += 3;
		} else {
			FZ_FAIL("shown form '%s' has a lone backslash", sh);
		}
	}
	back[o] = '\0';
	if (strcmp(back, name) != 0)
		FZ_FAIL("shown form '%s' does not decode back to its name", sh);
	free(back);
}

/* Every value of label `label` in the Prometheus text, decoded, must be one of
   `want` (n strings); with `all`, each of `want` must appear. */
static void check_prom_labels(const char *text, const char *label, char **want, size_t n, bool all)
{
	char key[32];
	bool *found = calloc(n + 1, 1);
	char *buf = malloc(strlen(text) + 1);
	int klen = snprintf(key, sizeof(key), "%s=\"", label);
	if (!found || !buf)
		abort();
	for (const char *p = strstr(text, key); p; p = strstr(p + 1, key)) {
		if (p[-1] != '{' && p[-1] != ',')
			continue; /* inside another label's value */
		const char *v = p + klen, *e = v;
		while (*e != '"')
			e += *e == '\\' ? 2 : 1;
		size_t len = fz_prom_unescape(v, (size_t)(e - v), buf);
		bool ok = false;
		for (size_t i = 0; i < n; i++)
			if (strlen(want[i]) == len && !memcmp(want[i], buf, len))
				ok = found[i] = true;
		if (!ok)
			FZ_FAIL("label %s=\"%.*s\" names nothing that exists", label, (int)(e - v),
				v);
	}
	for (size_t i = 0; i < n && all; i++)
		if (!found[i])
			FZ_FAIL("label %s for '%s' is missing", label, want[i]);
	free(found);
	free(buf);
}

/* Every "key":"string" of the JSON text, decoded, must be one of want. */
static void check_json_strings(const char *text, const char *jkey, char **want, size_t n)
{
	char key[32];
	char *buf = malloc(strlen(text) + 1);
	int klen = snprintf(key, sizeof(key), "\"%s\":\"", jkey);
	if (!buf)
		abort();
	for (const char *p = strstr(text, key); p; p = strstr(p + 1, key)) {
		if (p[-1] != '{' && p[-1] != ',')
			continue;
		const char *v = p + klen - 1, *e = v + 1;
		while (*e != '"')
			e += *e == '\\' ? 2 : 1;
		size_t len = 0;
		if (!fz_json_decode_string(v, (size_t)(e + 1 - v), buf, &len))
			FZ_FAIL("JSON string for %s does not decode", jkey);
		bool ok = false;
		for (size_t i = 0; i < n; i++)
			ok |= strlen(want[i]) == len && !memcmp(want[i], buf, len);
		if (!ok)
			FZ_FAIL("\"%s\":%.*s names nothing that exists", jkey, (int)(e + 1 - v), v);
	}
	free(buf);
}

#define MAX_CL    3
#define MAX_DB    4
#define MAX_NODES 3

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct event_base *base;
	static PqevConnLimit *lim;
	FzIn in = {data, size};
	TickerConfig cfg;
	Ticker t;
	Cluster cls[MAX_CL];
	Db dbs[MAX_CL * MAX_DB];
	char *clnames[MAX_CL], *clshown[MAX_CL], *dbshown[MAX_CL * MAX_DB];
	char *nodeshown[2 * MAX_NODES];
	size_t ncl, ndb = 0, nnodes, nnodeshown = 0;
	NodeCfg nodes[MAX_NODES];

	if (!base) {
		base = event_base_new();
		lim = pqev_connlimit_new(base, 0);
		pqev_log_set_level(PQEV_LOG_FATAL); /* the node workers' start lines */
	}
	if (!base || !lim)
		abort();
	memset(&cfg, 0, sizeof(cfg));
	memset(&t, 0, sizeof(t));
	memset(cls, 0, sizeof(cls));
	memset(dbs, 0, sizeof(dbs));
	t.base = base;
	t.limit = lim;
	t.cfg = &cfg;
	unsigned flags = fz_in_byte(&in);
	cfg.main.tick_stale_timeout = (flags & 1) ? 10 * USEC_PER_SEC : 0;
	cfg.main.startup_grace = (flags & 2) ? 0 : 3600 * USEC_PER_SEC;
	t.stopping = flags & 4;
	t.start_mono = pqev_clock_now() - (fz_in_byte(&in) + 1) * USEC_PER_SEC;
	t.stats.t_ticks = fz_in_byte(&in);
	t.stats.lateness_sum = fz_in_byte(&in) / 7.0;
	for (int i = 0; i < LATENESS_BUCKETS + 1; i++)
		t.stats.lateness_hist[i] = fz_in_byte(&in) & 3;

	ncl = 1 + fz_in_byte(&in) % MAX_CL;
	for (size_t c = 0; c < ncl; c++) {
		Cluster *cl = &cls[c];
		char *name = in_field(&in);
		char *sh = shown(name);
		bool cl_dup = false;
		check_shown_decodes(name, sh);
		/* cluster names are unique (as bytes: two that only show alike,
		   a literal "\xff" and the byte 0xff, are both kept) */
		for (size_t k = 0; k < c; k++)
			cl_dup |= !strcmp(clnames[k], name);
		if (c > 0 && cl_dup) {
			free(name);
			free(sh);
			ncl = c;
			break;
		}
		clnames[c] = name;
		clshown[c] = sh;
		cl->t = &t;
		cl->name = name;
		cl->ticker_period = USEC_PER_SEC;
		cl->disc_ok_once = fz_in_byte(&in) & 1;
		if (c > 0)
			cls[c - 1].next = cl;
		t.clusters = &cls[0];
		size_t want = fz_in_byte(&in) % (MAX_DB + 1);
		Db **tail = &cl->dbs;
		for (size_t d = 0; d < want; d++) {
			Db *db = &dbs[ndb];
			char *dn = in_field(&in), *ds = shown(dn);
			bool dup = false;
			check_shown_decodes(dn, ds);
			for (Db *o = cl->dbs; o; o = o->next)
				dup |= !strcmp(o->name, dn);
			if (dup) {
				free(dn);
				free(ds);
				continue;
			}
			unsigned b = fz_in_byte(&in);
			db->t = &t;
			db->cl = cl;
			db->name = dn;
			db->state = (DbState)(b % DB_NSTATES);
			db->fails = b >> 5;
			db->n_ticks = b;
			db->seen_at = pqev_clock_now() - USEC_PER_SEC;
			if (b & 8) {
				db->last_tick_ok = pqev_clock_now() - (b & 7) * 3 * USEC_PER_SEC;
				db->last_tick_wall = pqev_clock_wall();
			}
			char *ver = in_field(&in);
			snprintf(db->version, sizeof(db->version), "%s", ver);
			free(ver);
			if (db->fails) {
				/* a connection string libpq refuses: its error quotes it */
				PqevConnConfig cc;
				PqevConnCallbacks cb = {.size = sizeof(cb)};
				char *ci = in_field(&in);
				pqev_conn_config_init(&cc);
				cc.conninfo = ci;
				db->conn = pqev_conn_new(lim, &cc, &cb);
				if (db->conn)
					if (pqev_conn_start(db->conn) <
					    0) { /* refused: its error is shown */
					}
				free(ci);
			}
			dbshown[ndb++] = ds;
			*tail = db;
			tail = &db->next;
		}
	}

	nnodes = fz_in_byte(&in) % (MAX_NODES + 1);
	memset(nodes, 0, sizeof(nodes));
	for (size_t i = 0; i < nnodes; i++) {
		nodes[i].name = in_field(&in);
		nodes[i].queue = in_field(&in);
		nodes[i].db = strdup("host=/nonexistent dbname=fuzz");
		nodes[i].node_name = strdup("");
		nodes[i].worker = strdup("");
		nodes[i].fetch_size = 100;
		nodes[i].poll_period = USEC_PER_SEC;
		nodes[i].wm_period = USEC_PER_SEC;
	}
	cfg.nodes.items = nodes;
	cfg.nodes.count = nnodes;
	node_apply(&t, &cfg);
	for (size_t i = 0; i < nnodes; i++) {
		/* node_apply keeps the last section of a repeated name */
		nodeshown[nnodeshown++] = shown(nodes[i].name);
		check_shown_decodes(nodes[i].name, nodeshown[nnodeshown - 1]);
		nodeshown[nnodeshown++] = shown(nodes[i].queue);
		check_shown_decodes(nodes[i].queue, nodeshown[nnodeshown - 1]);
	}

	struct evbuffer *m = evbuffer_new(), *h = evbuffer_new();
	if (!m || !h)
		abort();
	stats_render_metrics(&t, m);
	stats_render_health(&t, h);
	evbuffer_add(m, "", 1);
	evbuffer_add(h, "", 1);
	size_t mlen = evbuffer_get_length(m) - 1, hlen = evbuffer_get_length(h) - 1;
	const char *mt = (const char *)evbuffer_pullup(m, -1);
	const char *ht = (const char *)evbuffer_pullup(h, -1);
	const char *why;
	if (memchr(mt, 0, mlen) || memchr(ht, 0, hlen))
		FZ_FAIL("a NUL in the output");
	if ((why = fz_prom_check(mt, mlen)))
		FZ_FAIL("/metrics is not valid Prometheus text: %s\n%s", why, mt);
	if ((why = fz_json_check(ht, hlen)))
		FZ_FAIL("/health is not valid JSON: %s\n%s", why, ht);
	if (ndb) {
		check_prom_labels(mt, "database", dbshown, ndb, true);
		check_json_strings(ht, "database", dbshown, ndb);
		check_prom_labels(mt, "cluster", clshown, ncl, false);
	}
	check_json_strings(ht, "cluster", clshown, ncl);
	if (t.nodes) {
		check_prom_labels(mt, "node", nodeshown, nnodeshown, false);
		check_prom_labels(mt, "queue", nodeshown, nnodeshown, false);
		check_json_strings(ht, "node", nodeshown, nnodeshown);
	}

	evbuffer_free(m);
	evbuffer_free(h);
	node_free_all(&t);
	for (size_t i = 0; i < nnodes; i++) {
		free(nodes[i].name);
		free(nodes[i].queue);
		free(nodes[i].db);
		free(nodes[i].node_name);
		free(nodes[i].worker);
	}
	for (size_t i = 0; i < nnodeshown; i++)
		free(nodeshown[i]);
	for (size_t i = 0; i < ndb; i++) {
		free(dbs[i].name);
		(void)pqev_conn_free(dbs[i].conn);
		free(dbshown[i]);
	}
	for (size_t c = 0; c < ncl; c++) {
		free(clnames[c]);
		free(clshown[c]);
	}
	event_base_loop(base, EVLOOP_NONBLOCK); /* deferred frees */
	return 0;
}
