/*
 * node status: the cascade as a tree, seen from any member; node wait-root /
 * wait-provider.
 *
 * status reads the member map of the -d node, asks every live member at once
 * (multi.c: one connection each, all in parallel, so a dead server costs one
 * connect timeout, 5 s unless --connect-timeout says otherwise), then asks the
 * root how many of its ticks each node is behind and when the node's last tick
 * was made there. A member that is tagged dead is not contacted; one that
 * cannot be reached is shown with the reason. The tree follows each node's
 * provider; a node whose provider is unknown (dead or unreachable) is placed
 * under the member that lists it as subscriber. Anything wrong makes the exit
 * code 3, so the command serves as a monitoring check.
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <pgqd-ev/pqev_clock.h>
#include <pgqd-ev/pqev_config.h>

#include "pgqctl.h"

#define STATUS_CONNECT_TIMEOUT (5 * USEC_PER_SEC)
#define MAX_DEPTH              64

enum {
	Q_HAS = 0,
	Q_INFO,
	Q_CONSUMERS,
	Q_SUBSCRIBERS,
	Q_LATEST,
	Q_COUNT,
};

static const char sql_has[] = "select to_regproc('pgq_node.get_node_info') is not null";
static const char sql_info[] =
	"select ret_code, ret_note, node_type, node_name, provider_node, worker_name,"
	" worker_paused, worker_uptodate, worker_last_tick from pgq_node.get_node_info($1)";
static const char sql_consumers[] = "select consumer_name, cur_error"
				    " from pgq_node.get_consumer_info($1)"
				    " where cur_error is not null order by 1";
static const char sql_subscribers[] = "select node_name from pgq_node.get_subscriber_info($1)";
static const char sql_latest[] = "select t.tick_id, extract(epoch from t.tick_time)::float8"
				 " from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue"
				 " where q.queue_name = $1"
				 " order by t.tick_id desc limit 1";

typedef struct SNode {
	const CtlMember *m;
	bool dead, reachable;
	char reason[512]; /* why unreachable / no node */
	bool has_node;
	char *type, *provider, *worker;
	bool paused, uptodate;
	long long last_tick; /* worker_last_tick; -1 unknown */
	double tick_time;    /* epoch of last_tick, NAN unknown */
	long long lag_ticks; /* -1 unknown */
	double lag_sec;      /* NAN unknown */
	char **errors;       /* "consumer: first line" */
	int nerrors;
	char **subs;
	int nsubs;
	int parent; /* index, -1 top level */
	int depth;
	bool printed;
	char problems[1024]; /* "; "-joined, for the table */
	char *plist[16];     /* each problem, for JSON */
	int nproblems;
} SNode;

static char *dup_or_null(const char *s)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		abort();
	return d;
}

static void add_problem(SNode *n, const char *fmt, ...) PQEV_PRINTF(2, 3);

static void add_problem(SNode *n, const char *fmt, ...)
{
	size_t len = strlen(n->problems);
	char one[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(one, sizeof(one), fmt, ap);
	va_end(ap);
	if (len && len + 2 < sizeof(n->problems)) {
		strcat(n->problems, "; ");
		len += 2;
	}
	snprintf(n->problems + len, sizeof(n->problems) - len, "%s", one);
	if (n->nproblems < 16) {
		n->plist[n->nproblems] = strdup(one);
		if (!n->plist[n->nproblems])
			abort();
		n->nproblems++;
	}
}

/* First line of an error text, at most 200 bytes. */
static char *first_line(const char *consumer, const char *s)
{
	size_t n = strcspn(s, "\n");
	char *out;

	if (n > 200)
		n = 200;
	if (asprintf(&out, "%s: %.*s", consumer, (int)n, s) < 0)
		abort();
	return out;
}

static void fill_from_probe(SNode *n, const CtlProbe *p, const char *queue)
{
	const PGresult *r;

	n->reachable = p->reachable && p->res[Q_HAS];
	if (!n->reachable) {
		snprintf(n->reason, sizeof(n->reason), "%s",
			 p->error[0]         ? p->error
			 : p->qerr[Q_HAS][0] ? p->qerr[Q_HAS]
					     : "no answer");
		return;
	}
	if (PQgetvalue(p->res[Q_HAS], 0, 0)[0] != 't') {
		snprintf(n->reason, sizeof(n->reason), "no pgq_node schema in this database");
		return;
	}
	r = p->res[Q_INFO];
	if (!r || PQntuples(r) != 1) {
		snprintf(n->reason, sizeof(n->reason), "get_node_info failed: %s",
			 p->qerr[Q_INFO][0] ? p->qerr[Q_INFO] : "no row");
		return;
	}
	if (PQgetisnull(r, 0, 2)) {
		snprintf(n->reason, sizeof(n->reason), "no node of cascade %s there (%s)", queue,
			 PQgetvalue(r, 0, 1));
		return;
	}
	if (strcmp(PQgetvalue(r, 0, 3), n->m->name) != 0) {
		snprintf(n->reason, sizeof(n->reason), "the database holds node \"%s\", not \"%s\"",
			 PQgetvalue(r, 0, 3), n->m->name);
		return;
	}
	n->has_node = true;
	n->type = dup_or_null(PQgetvalue(r, 0, 2));
	n->provider = dup_or_null(ctl_val(r, 0, 4));
	n->worker = dup_or_null(ctl_val(r, 0, 5));
	n->paused = ctl_val(r, 0, 6) && ctl_val(r, 0, 6)[0] == 't';
	n->uptodate = ctl_val(r, 0, 7) && ctl_val(r, 0, 7)[0] == 't';
	n->last_tick = ctl_val(r, 0, 8) ? atoll(ctl_val(r, 0, 8)) : -1;
	r = p->res[Q_CONSUMERS];
	if (r) {
		n->errors = calloc((size_t)PQntuples(r) + 1, sizeof(char *));
		for (int i = 0; i < PQntuples(r); i++)
			n->errors[n->nerrors++] =
				first_line(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
	}
	r = p->res[Q_SUBSCRIBERS];
	if (r) {
		n->subs = calloc((size_t)PQntuples(r) + 1, sizeof(char *));
		for (int i = 0; i < PQntuples(r); i++)
			n->subs[n->nsubs++] = dup_or_null(PQgetvalue(r, i, 0));
	}
}

static int find_node(SNode *v, size_t n, const char *name)
{
	if (!name)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].m->name, name) == 0)
			return (int)i;
	return -1;
}

/* Lag against the root, asked of the root itself: ticks after each node's last
   tick, and that tick's time. */
static void root_lag(CtlCtx *ctx, SNode *v, size_t n, int root, const char *queue,
		     const char *root_conninfo)
{
	static const char sql[] =
		"select x.id,"
		" (select count(*) from pgq.tick t where t.tick_queue = q.queue_id"
		"   and t.tick_id > x.id),"
		" (select extract(epoch from t.tick_time)::float8 from pgq.tick t"
		"   where t.tick_queue = q.queue_id and t.tick_id = x.id)"
		" from unnest($2::int8[]) x(id), pgq.queue q where q.queue_name = $1";
	char *arr = malloc(n * 24 + 8), *w = arr;
	CtlTarget t = {.label = (char *)v[root].m->name, .conninfo = (char *)root_conninfo};
	CtlDb *db;
	PGresult *r;
	const char *p[2];

	if (!arr)
		abort();
	w += sprintf(w, "{");
	for (size_t i = 0; i < n; i++)
		if (v[i].has_node && v[i].last_tick >= 0)
			w += sprintf(w, "%s%lld", w[-1] == '{' ? "" : ",", v[i].last_tick);
	sprintf(w, "}");
	db = ctl_db_open(ctx, &t);
	p[0] = queue;
	p[1] = arr;
	r = ctl_db_connect(db) ? ctl_db_exec(db, sql, 2, p) : NULL;
	for (int k = 0; r && k < PQntuples(r); k++) {
		long long id = atoll(PQgetvalue(r, k, 0));
		for (size_t i = 0; i < n; i++) {
			if (!v[i].has_node || v[i].last_tick != id)
				continue;
			v[i].lag_ticks = atoll(PQgetvalue(r, k, 1));
			if (!PQgetisnull(r, k, 2))
				v[i].tick_time = atof(PQgetvalue(r, k, 2));
		}
	}
	PQclear(r);
	ctl_db_close(db);
	free(arr);
}

typedef struct StatusArgs {
	const char *queue;
	double max_lag; /* < 0: none */
} StatusArgs;

static void judge(SNode *v, size_t n, int root, const StatusArgs *a)
{
	double root_time = root >= 0 ? v[root].tick_time : (double)NAN;

	for (size_t i = 0; i < n; i++) {
		SNode *x = &v[i];

		if (x->has_node && !isnan(x->tick_time) && !isnan(root_time)) {
			x->lag_sec = root_time - x->tick_time;
			if (x->lag_sec < 0)
				x->lag_sec = 0;
		}
		if ((int)i == root) {
			x->lag_ticks = 0;
			x->lag_sec = 0;
		}
		if (x->dead) {
			add_problem(x, "dead");
			continue;
		}
		if (!x->reachable) {
			add_problem(x, "unreachable: %s", x->reason);
			continue;
		}
		if (!x->has_node) {
			add_problem(x, "%s", x->reason);
			continue;
		}
		if (x->paused)
			add_problem(x, "paused");
		for (int e = 0; e < x->nerrors; e++)
			add_problem(x, "error: %s", x->errors[e]);
		if (strcmp(x->type, "root") == 0 && (int)i != root)
			add_problem(x, "a second root");
		if (a->max_lag >= 0 && !isnan(x->lag_sec) && x->lag_sec > a->max_lag)
			add_problem(x, "lag %.1fs over --max-lag %.1fs", x->lag_sec, a->max_lag);
		if (x->provider && strcmp(x->provider, x->m->name) != 0) {
			int p = find_node(v, n, x->provider);
			if (p < 0)
				add_problem(x, "provider \"%s\" is not a member", x->provider);
			else if (v[p].dead)
				add_problem(x, "provider \"%s\" is dead", x->provider);
		}
	}
}

/* Parents: the provider when known, else the member listing it as subscriber. */
static void link_tree(SNode *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		SNode *x = &v[i];

		x->parent = -1;
		if (x->has_node && x->provider && strcmp(x->type, "root") != 0)
			x->parent = find_node(v, n, x->provider);
		if (x->parent < 0 && !x->has_node)
			for (size_t k = 0; k < n && x->parent < 0; k++)
				for (int s = 0; s < v[k].nsubs; s++)
					if (strcmp(v[k].subs[s], x->m->name) == 0)
						x->parent = (int)k;
		if (x->parent == (int)i)
			x->parent = -1;
	}
	/* a provider loop would hang the walk: cut it */
	for (size_t i = 0; i < n; i++) {
		int p = v[i].parent, hops = 0;
		while (p >= 0 && hops++ < MAX_DEPTH)
			p = v[p].parent;
		if (hops >= MAX_DEPTH)
			v[i].parent = -1;
	}
}

static const char *yes_no(bool b)
{
	return b ? "yes" : "no";
}

typedef struct Printer {
	CtlCtx *ctx;
	SNode *v;
	size_t n;
	CtlTable *t;
	CtlJson j;
} Printer;

static void fmt_ll(char *buf, size_t len, long long v)
{
	if (v < 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%lld", v);
}

static void emit(Printer *pr, int i, const char *prefix, bool last, bool top)
{
	SNode *x = &pr->v[i];
	char name[512], lt[32], lag[32], tick[32], child_prefix[512];
	const char *type = x->has_node ? x->type : x->dead ? "dead" : "?";

	x->printed = true;
	if (pr->ctx->json) {
		CtlJson *j = &pr->j;
		ctl_json_obj_begin(j, NULL);
		ctl_json_str(j, "node", x->m->name);
		ctl_json_str(j, "type", x->has_node ? x->type : NULL);
		ctl_json_str(j, "provider", x->has_node ? x->provider : NULL);
		ctl_json_str(j, "parent", x->parent >= 0 ? pr->v[x->parent].m->name : NULL);
		ctl_json_bool(j, "dead", x->dead);
		ctl_json_bool(j, "reachable", x->reachable);
		if (!x->dead && !x->reachable)
			ctl_json_str(j, "unreachable", x->reason);
		if (x->has_node) {
			ctl_json_str(j, "worker", x->worker);
			ctl_json_bool(j, "paused", x->paused);
			ctl_json_bool(j, "uptodate", x->uptodate);
			if (x->last_tick >= 0)
				ctl_json_int(j, "last_tick", x->last_tick);
			else
				ctl_json_null(j, "last_tick");
			if (x->lag_ticks >= 0)
				ctl_json_int(j, "lag_ticks", x->lag_ticks);
			else
				ctl_json_null(j, "lag_ticks");
			if (!isnan(x->lag_sec))
				ctl_json_num(j, "lag_seconds", x->lag_sec);
			else
				ctl_json_null(j, "lag_seconds");
			ctl_json_arr_begin(j, "errors");
			for (int e = 0; e < x->nerrors; e++)
				ctl_json_str(j, NULL, x->errors[e]);
			ctl_json_arr_end(j);
		}
		ctl_json_arr_begin(j, "problems");
		for (int p = 0; p < x->nproblems; p++)
			ctl_json_str(j, NULL, x->plist[p]);
		ctl_json_arr_end(j);
		ctl_json_obj_end(j);
	} else {
		const char *cells[9];
		/* names quoted when odd and the status cell escaped: no member can
		   break or forge a row of the table */
		snprintf(name, sizeof(name), "%s%s%s", prefix, top ? "" : "`- ", ctl_q(x->m->name));
		fmt_ll(lt, sizeof(lt), x->has_node ? x->lag_ticks : -1);
		if (x->has_node && !isnan(x->lag_sec))
			ctl_fmt_age(lag, sizeof(lag), x->lag_sec);
		else
			snprintf(lag, sizeof(lag), "-");
		fmt_ll(tick, sizeof(tick), x->has_node ? x->last_tick : -1);
		cells[0] = name;
		cells[1] = type;
		cells[2] = x->has_node && x->provider && strcmp(x->type, "root") != 0
				   ? ctl_q(x->provider)
				   : "-";
		cells[3] = lt;
		cells[4] = lag;
		cells[5] = tick;
		cells[6] = x->has_node ? yes_no(x->paused) : "-";
		cells[7] = x->has_node ? yes_no(x->uptodate) : "-";
		cells[8] = x->problems[0] ? ctl_cell_text(x->problems) : "ok";
		ctl_table_add(pr->t, cells);
		if (x->problems[0])
			ctl_table_mark_bad(pr->t, 8);
	}
	snprintf(child_prefix, sizeof(child_prefix), "%s%s", prefix,
		 top    ? ""
		 : last ? "   "
			: "|  ");
	{
		int kids[256], nk = 0;
		for (size_t k = 0; k < pr->n && nk < 256; k++)
			if (pr->v[k].parent == i && !pr->v[k].printed)
				kids[nk++] = (int)k;
		for (int k = 0; k < nk; k++)
			emit(pr, kids[k], child_prefix, k == nk - 1, false);
	}
}

static void print_status(CtlCtx *ctx, SNode *v, size_t n, int root, const StatusArgs *a,
			 int problems, const char *local)
{
	static const char *const hdr[] = {"node",      "type",   "provider", "lag_ticks", "lag",
					  "last_tick", "paused", "uptodate", "status"};
	Printer pr = {.ctx = ctx, .v = v, .n = n};
	int order[1024], no = 0;

	/* the root first, then other top-level nodes by name */
	if (root >= 0 && v[root].parent < 0)
		order[no++] = root;
	for (size_t i = 0; i < n && no < 1024; i++)
		if (v[i].parent < 0 && (int)i != root)
			order[no++] = (int)i;
	if (ctx->json) {
		ctl_json_init(&pr.j, stdout);
		ctl_json_obj_begin(&pr.j, NULL);
		ctl_json_str(&pr.j, "cascade", a->queue);
		ctl_json_str(&pr.j, "asked", local);
		ctl_json_str(&pr.j, "root", root >= 0 ? v[root].m->name : NULL);
		if (root >= 0 && v[root].last_tick >= 0)
			ctl_json_int(&pr.j, "root_last_tick", v[root].last_tick);
		else
			ctl_json_null(&pr.j, "root_last_tick");
		ctl_json_int(&pr.j, "members", (long long)n);
		ctl_json_int(&pr.j, "problems", problems);
		ctl_json_bool(&pr.j, "healthy", problems == 0);
		ctl_json_arr_begin(&pr.j, "nodes");
	} else {
		pr.t = ctl_table_new(9, hdr);
		if (!ctx->quiet) {
			if (root >= 0)
				printf("cascade %s: %zu members, root %s at tick %lld\n",
				       ctl_q(a->queue), n, ctl_q(v[root].m->name),
				       v[root].last_tick);
			else
				printf("cascade %s: %zu members, no root reachable\n",
				       ctl_q(a->queue), n);
		}
	}
	for (int k = 0; k < no; k++)
		emit(&pr, order[k], "", true, true);
	/* whatever a loop kept out of the walk */
	for (size_t i = 0; i < n; i++)
		if (!v[i].printed)
			emit(&pr, (int)i, "", true, true);
	if (ctx->json) {
		ctl_json_arr_end(&pr.j);
		ctl_json_obj_end(&pr.j);
		ctl_json_end(&pr.j);
	} else {
		ctl_table_print(pr.t, stdout, ctx->color);
		ctl_table_free(pr.t);
		if (!ctx->quiet)
			printf("%s\n", problems ? "PROBLEMS found (exit 3)" : "healthy");
	}
}

int cmd_node_status(CtlCtx *ctx, int argc, char **argv)
{
	const char *max_lag = NULL;
	const CtlOpt opts[] = {{"max-lag", true, &max_lag}, {NULL}};
	StatusArgs a = {.max_lag = -1};
	char *pos[CTL_MAX_ARGS], what[CTL_NAME_MAX + 64], local[CTL_NAME_MAX + 1] = "";
	int npos, rc, root = -1, problems = 0;
	CtlDb *db;
	PGresult *r;
	CtlMember *m;
	size_t n;
	CtlTarget self, *targets;
	CtlProbe *probes;
	SNode *v;
	const char *params[1];
	CtlProbeQuery q[Q_COUNT];

	if ((rc = ctl_node_args(ctx, argc, argv, opts, 0, &a.queue, pos, &npos)))
		return rc;
	if (max_lag) {
		usec_t us;
		if (pqev_conf_parse_seconds(max_lag, &us) != 0) {
			ctl_err("--max-lag: \"%s\" is not a number of seconds", max_lag);
			return CTL_EXIT_USAGE;
		}
		a.max_lag = (double)us / USEC_PER_SEC;
	}
	snprintf(what, sizeof(what), "status of cascade %s", ctl_qq(a.queue));
	if (!ctx->connect_timeout_set)
		ctx->connect_timeout = STATUS_CONNECT_TIMEOUT;
	if ((rc = ctl_single_target(ctx, &self)))
		return rc;
	db = ctl_db_open(ctx, &self);
	r = ctl_node_info(db, a.queue, what);
	if (!r) {
		ctl_db_close(db);
		free(self.label);
		free(self.conninfo);
		free(self.cluster);
		return CTL_EXIT_ERROR;
	}
	if (!ctl_val(r, 0, 2)) {
		ctl_err("%s: %s: no node of this cascade here (%s)", ctl_db_label(db), what,
			ctl_val(r, 0, 1) ? ctl_val(r, 0, 1) : "none");
		PQclear(r);
		ctl_db_close(db);
		free(self.label);
		free(self.conninfo);
		free(self.cluster);
		return CTL_EXIT_ERROR;
	}
	snprintf(local, sizeof(local), "%s", ctl_val(r, 0, 3));
	PQclear(r);
	m = ctl_node_members(db, a.queue, what, &n);
	ctl_db_close(db);
	if (!m) {
		free(self.label);
		free(self.conninfo);
		free(self.cluster);
		return CTL_EXIT_ERROR;
	}

	/* every live member at once; the asked node through -d */
	targets = calloc(n + 1, sizeof(*targets));
	v = calloc(n + 1, sizeof(*v));
	if (!targets || !v)
		abort();
	for (size_t i = 0; i < n; i++) {
		v[i].m = &m[i];
		v[i].dead = m[i].dead;
		v[i].last_tick = v[i].lag_ticks = -1;
		v[i].tick_time = v[i].lag_sec = NAN;
		targets[i].label = m[i].name;
		targets[i].conninfo = strcmp(m[i].name, local) == 0 ? self.conninfo : m[i].location;
	}
	params[0] = a.queue;
	q[Q_HAS] = (CtlProbeQuery){sql_has, 0, NULL, 0};
	q[Q_INFO] = (CtlProbeQuery){sql_info, 1, params, 0};
	q[Q_CONSUMERS] = (CtlProbeQuery){sql_consumers, 1, params, 0};
	q[Q_SUBSCRIBERS] = (CtlProbeQuery){sql_subscribers, 1, params, 0};
	q[Q_LATEST] = (CtlProbeQuery){sql_latest, 1, params, 0};
	{
		/* dead members are not contacted: probe the others only */
		CtlTarget *live = calloc(n + 1, sizeof(*live));
		size_t nl = 0, idx[1024];
		if (!live)
			abort();
		for (size_t i = 0; i < n && nl < 1024; i++)
			if (!v[i].dead) {
				idx[nl] = i;
				live[nl++] = targets[i];
			}
		probes = ctl_multi_run(ctx, live, nl, q, Q_COUNT);
		if (!probes) {
			free(self.label);
			free(self.conninfo);
			free(self.cluster);
			free(live);
			free(targets);
			free(v);
			ctl_node_members_free(m, n);
			return 128 + ctl_signalled;
		}
		for (size_t k = 0; k < nl; k++) {
			SNode *x = &v[idx[k]];
			const PGresult *lt = probes[k].res[Q_LATEST];
			fill_from_probe(x, &probes[k], a.queue);
			if (x->has_node && strcmp(x->type, "root") == 0) {
				if (root < 0)
					root = (int)idx[k];
				if (lt && PQntuples(lt) == 1)
					x->tick_time = atof(PQgetvalue(lt, 0, 1));
			}
		}
		ctl_probes_free(probes, nl);
		free(live);
	}
	if (root >= 0)
		root_lag(ctx, v, n, root, a.queue, targets[root].conninfo);
	judge(v, n, root, &a);
	link_tree(v, n);
	for (size_t i = 0; i < n; i++)
		if (v[i].problems[0])
			problems++;
	if (root < 0)
		problems++;
	print_status(ctx, v, n, root, &a, problems, local);

	for (size_t i = 0; i < n; i++) {
		free(v[i].type);
		free(v[i].provider);
		free(v[i].worker);
		for (int e = 0; e < v[i].nerrors; e++)
			free(v[i].errors[e]);
		free(v[i].errors);
		for (int s = 0; s < v[i].nsubs; s++)
			free(v[i].subs[s]);
		for (int p = 0; p < v[i].nproblems; p++)
			free(v[i].plist[p]);
		free(v[i].subs);
	}
	free(v);
	free(targets);
	ctl_node_members_free(m, n);
	free(self.label);
	free(self.conninfo);
	free(self.cluster);
	return problems ? CTL_EXIT_PROBLEM : CTL_EXIT_OK;
}

/* ---- wait-root / wait-provider ---- */

#define WAIT_POLL (200 * USEC_PER_MSEC)

static int node_wait(CtlCtx *ctx, int argc, char **argv, bool to_root)
{
	const char *timeout = NULL, *queue;
	const CtlOpt opts[] = {{"timeout", true, &timeout}, {NULL}};
	char *pos[CTL_MAX_ARGS], what[CTL_NAME_MAX + 64];
	int npos, rc;
	usec_t limit = 0, start;
	long long target = -1;
	CtlDb *db;
	PGresult *r;
	char *type = NULL, *provider = NULL, *name = NULL;

	if ((rc = ctl_node_args(ctx, argc, argv, opts, 0, &queue, pos, &npos)))
		return rc;
	if (timeout && pqev_conf_parse_seconds(timeout, &limit) != 0) {
		ctl_err("--timeout: \"%s\" is not a number of seconds", timeout);
		return CTL_EXIT_USAGE;
	}
	snprintf(what, sizeof(what), "%s of cascade %s", argv[0], ctl_qq(queue));
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	r = ctl_node_info(db, queue, what);
	if (!r) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	if (!ctl_val(r, 0, 2)) {
		ctl_err("%s: %s: no node of this cascade here", ctl_db_label(db), what);
		PQclear(r);
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	type = dup_or_null(ctl_val(r, 0, 2));
	name = dup_or_null(ctl_val(r, 0, 3));
	provider = dup_or_null(ctl_val(r, 0, 6));
	PQclear(r);
	rc = CTL_EXIT_ERROR;
	if (strcmp(type, "root") == 0) {
		if (!ctx->quiet)
			printf("%s: node %s is the root: nothing to wait for\n", what, ctl_q(name));
		rc = CTL_EXIT_OK;
		goto out;
	}
	/* the tick to reach: the root's latest, or the provider's own last tick */
	{
		size_t nm;
		CtlMember *m = ctl_node_members(db, queue, what, &nm);
		const CtlMember *up = NULL;
		CtlDb *other;
		if (!m)
			goto out;
		if (to_root) {
			/* walk providers from here to the root */
			char cur[CTL_NAME_MAX + 1];
			snprintf(cur, sizeof(cur), "%s", provider ? provider : "");
			for (int hop = 0; hop < MAX_DEPTH && !up; hop++) {
				const CtlMember *x = ctl_node_member(m, nm, cur);
				if (!x)
					break;
				other = ctl_node_open_member(ctx, x);
				r = ctl_node_info(other, queue, what);
				if (r && ctl_val(r, 0, 2) &&
				    strcmp(ctl_val(r, 0, 2), "root") == 0) {
					up = x;
					target = atoll(ctl_val(r, 0, 13));
				} else if (r && ctl_val(r, 0, 6)) {
					snprintf(cur, sizeof(cur), "%s", ctl_val(r, 0, 6));
				} else {
					PQclear(r);
					ctl_db_close(other);
					break;
				}
				PQclear(r);
				ctl_db_close(other);
			}
			if (!up)
				ctl_err("%s: %s: cannot find the root from provider %s",
					ctl_db_label(db), what, ctl_qq(provider ? provider : ""));
		} else {
			up = provider ? ctl_node_member(m, nm, provider) : NULL;
			if (!up) {
				ctl_err("%s: %s: provider %s is not in the member map",
					ctl_db_label(db), what, ctl_qq(provider ? provider : ""));
			} else {
				other = ctl_node_open_member(ctx, up);
				r = ctl_node_info(other, queue, what);
				if (r && ctl_val(r, 0, 13))
					target = atoll(ctl_val(r, 0, 13));
				else if (r)
					ctl_err("%s: %s: no node there", ctl_db_label(other), what);
				PQclear(r);
				ctl_db_close(other);
			}
		}
		ctl_node_members_free(m, nm);
		if (target < 0)
			goto out;
	}
	if (!ctx->quiet)
		printf("%s: waiting for node %s to reach tick %lld of %s\n", what, ctl_q(name),
		       target, to_root ? "the root" : "its provider");
	fflush(stdout);
	start = pqev_clock_monotonic();
	for (;;) {
		long long have;
		bool paused;
		r = ctl_node_info(db, queue, what);
		if (!r)
			goto out;
		have = ctl_val(r, 0, 13) ? atoll(ctl_val(r, 0, 13)) : -1;
		paused = ctl_val(r, 0, 11) && ctl_val(r, 0, 11)[0] == 't';
		PQclear(r);
		if (have >= target) {
			if (!ctx->quiet)
				printf("%s: node %s is at tick %lld: caught up\n", what,
				       ctl_q(name), have);
			rc = CTL_EXIT_OK;
			goto out;
		}
		if (limit && pqev_clock_monotonic() - start >= limit) {
			ctl_err("%s: node %s is at tick %lld, not %lld, after %s s%s", what,
				ctl_q(name), have, target, timeout,
				paused ? " (its worker is paused)" : "");
			rc = CTL_EXIT_TIMEOUT;
			goto out;
		}
		if (!ctl_node_sleep(ctx, WAIT_POLL)) {
			ctl_err("%s: interrupted", what);
			rc = 128 + ctl_signalled;
			goto out;
		}
	}
out:
	free(type);
	free(name);
	free(provider);
	ctl_db_close(db);
	return rc;
}

int cmd_node_wait_root(CtlCtx *ctx, int argc, char **argv)
{
	return node_wait(ctx, argc, argv, true);
}

int cmd_node_wait_provider(CtlCtx *ctx, int argc, char **argv)
{
	return node_wait(ctx, argc, argv, false);
}
