/*
 * Cascade administration (PGQ-NODE-SPEC 6.4, 6.8-6.10, 6.13): node pause /
 * resume, tag-dead / tag-alive, drop-node, resurrect, rename-node (refused).
 *
 * Every change is a step that first looks whether it is already done, so an
 * operation stopped anywhere (Ctrl-C, a lost connection, a crash) is finished
 * by running it again; --dry-run prints the steps and changes nothing. Members
 * are reached at the locations in the -d node's member map; a member tagged
 * dead is never contacted.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pgqd-ev/pqev_clock.h>
#include <pgqd-ev/pqev_config.h>

#include "pgqctl.h"

#define ACK_POLL (200 * USEC_PER_MSEC)

/* The -d node: its info row and member map. */
typedef struct Local {
	CtlDb *db;
	PGresult *info; /* get_node_info */
	const char *name, *type, *worker, *provider;
	CtlMember *m;
	size_t nm;
	char what[2 * CTL_NAME_MAX + 64];
} Local;

static void local_free(Local *l)
{
	PQclear(l->info);
	ctl_node_members_free(l->m, l->nm);
	ctl_db_close(l->db);
}

static int local_open(CtlCtx *ctx, Local *l, const char *queue, const char *op, const char *arg)
{
	int rc;

	memset(l, 0, sizeof(*l));
	snprintf(l->what, sizeof(l->what), "%s%s%s on cascade %s", op, arg ? " " : "",
		 arg ? ctl_q(arg) : "", ctl_q(queue));
	if ((rc = ctl_open_single(ctx, &l->db)))
		return rc;
	l->info = ctl_node_info(l->db, queue, l->what);
	if (!l->info)
		return CTL_EXIT_ERROR;
	if (!ctl_val(l->info, 0, 2)) {
		ctl_err("%s: %s: no node of this cascade here (%s)", ctl_db_label(l->db), l->what,
			ctl_val(l->info, 0, 1) ? ctl_val(l->info, 0, 1) : "none");
		return CTL_EXIT_ERROR;
	}
	l->type = ctl_val(l->info, 0, 2);
	l->name = ctl_val(l->info, 0, 3);
	l->provider = ctl_val(l->info, 0, 6);
	l->worker = ctl_val(l->info, 0, 10);
	l->m = ctl_node_members(l->db, queue, l->what, &l->nm);
	return l->m ? 0 : CTL_EXIT_ERROR;
}

/* One value of a query on db (malloc'd, NULL for no row / SQL NULL); *ok false
   and printed on error. */
static char *query1(CtlDb *db, const char *what, const char *sql, int n, const char *const *p,
		    bool *ok)
{
	PGresult *r = ctl_db_exec(db, sql, n, p);
	char *v = NULL;

	if (!r) {
		ctl_db_fail(db, what);
		*ok = false;
		return NULL;
	}
	if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) {
		v = strdup(PQgetvalue(r, 0, 0));
		if (!v)
			abort();
	}
	PQclear(r);
	return v;
}

/* ---- pause / resume ---- */

static int set_paused(CtlCtx *ctx, int argc, char **argv, bool flag)
{
	const char *node = NULL, *consumer = NULL, *timeout = NULL, *queue;
	bool no_wait = false;
	const CtlOpt opts[] = {{"node", true, &node},
			       {"consumer", true, &consumer},
			       {"timeout", true, &timeout},
			       {"no-wait", false, &no_wait},
			       {NULL}};
	const char *verb = flag ? "paused" : "resumed";
	char *pos[CTL_MAX_ARGS], *cons = NULL;
	int npos, rc;
	usec_t limit = 30 * USEC_PER_SEC, start;
	Local l;
	CtlDb *db = NULL; /* where the consumer's local_state row is */
	PGresult *r = NULL;

	if ((rc = ctl_node_args(ctx, argc, argv, opts, 0, &queue, pos, &npos)))
		return rc;
	if (node && consumer)
		return ctl_usage(argv[0], "--node and --consumer exclude each other");
	if (timeout && (pqev_conf_parse_seconds(timeout, &limit) != 0 || limit == 0)) {
		ctl_err("--timeout: \"%s\" is not a positive number of seconds", timeout);
		return CTL_EXIT_USAGE;
	}
	if ((rc = local_open(ctx, &l, queue, flag ? "pause" : "resume", NULL))) {
		local_free(&l);
		return rc;
	}
	snprintf(l.what, sizeof(l.what), "%s %s", flag ? "pause" : "resume",
		 ctl_q(node       ? node
		       : consumer ? consumer
				  : l.name));
	rc = CTL_EXIT_ERROR;
	if (node && strcmp(node, l.name) != 0) {
		const CtlMember *x = ctl_node_member(l.m, l.nm, node);
		if (!x) {
			ctl_err("%s: %s: node %s is not a member of cascade %s", ctl_db_label(l.db),
				l.what, ctl_qq(node), ctl_q(queue));
			goto out;
		}
		if (x->dead) {
			ctl_err("%s: %s: node %s is tagged dead", ctl_db_label(l.db), l.what,
				ctl_qq(node));
			goto out;
		}
		db = ctl_node_open_member(ctx, x);
		r = ctl_node_info(db, queue, l.what);
		if (!r)
			goto out;
		if (!ctl_val(r, 0, 3) || strcmp(ctl_val(r, 0, 3), node) != 0) {
			ctl_err("%s: %s: that database holds no node %s", ctl_db_label(db), l.what,
				ctl_qq(node));
			goto out;
		}
		cons = strdup(ctl_val(r, 0, 10));
	} else if (consumer) {
		/* this node first, then every live member */
		const char *p[2] = {queue, consumer};
		static const char sql[] = "select count(*) from pgq_node.get_consumer_info($1)"
					  " where consumer_name = $2";
		bool ok = true;
		char *v = query1(l.db, l.what, sql, 2, p, &ok);
		if (!ok)
			goto out;
		if (v && atoi(v) > 0) {
			db = l.db;
		} else {
			for (size_t i = 0; i < l.nm && !db; i++) {
				CtlDb *o;
				char *c;
				if (l.m[i].dead || strcmp(l.m[i].name, l.name) == 0)
					continue;
				o = ctl_node_open_member(ctx, &l.m[i]);
				ok = true;
				c = query1(o, l.what, sql, 2, p, &ok);
				if (ok && c && atoi(c) > 0)
					db = o;
				else
					ctl_db_close(o);
				free(c);
			}
		}
		free(v);
		if (!db) {
			ctl_err("%s: %s: no live member has consumer %s in cascade %s",
				ctl_db_label(l.db), l.what, ctl_qq(consumer), ctl_q(queue));
			goto out;
		}
		cons = strdup(consumer);
	} else {
		db = l.db;
		cons = strdup(l.worker);
	}
	if (!cons)
		abort();
	{
		const char *p[3] = {queue, cons, flag ? "true" : "false"};
		PQclear(r);
		r = NULL;
		if (!ctl_node_call(
			    db, l.what,
			    "select * from pgq_node.set_consumer_paused($1, $2, $3::boolean)", 3, p,
			    &r))
			goto out;
		if (!ctx->quiet)
			printf("%s: %s %s%s\n", ctl_db_label(db), ctl_q(cons),
			       atoi(PQgetvalue(r, 0, 0)) == 201 ? "already " : "", verb);
	}
	if (no_wait) {
		rc = CTL_EXIT_OK;
		goto out;
	}
	/* the consumer acknowledges by setting uptodate when it next reads its state */
	start = pqev_clock_monotonic();
	for (;;) {
		const char *p[2] = {queue, cons};
		PQclear(r);
		r = ctl_db_exec(db,
				"select paused, uptodate from pgq_node.get_consumer_state($1, $2)",
				2, p);
		if (!r || PQntuples(r) != 1 || PQgetisnull(r, 0, 0)) {
			if (!r)
				ctl_db_fail(db, l.what);
			else
				ctl_err("%s: %s: consumer %s is gone", ctl_db_label(db), l.what,
					cons);
			goto out;
		}
		if ((PQgetvalue(r, 0, 0)[0] == 't') != flag) {
			ctl_err("%s: %s: someone else %s %s meanwhile", ctl_db_label(db), l.what,
				flag ? "resumed" : "paused", cons);
			goto out;
		}
		if (PQgetvalue(r, 0, 1)[0] == 't') {
			if (!ctx->quiet)
				printf("%s: %s has seen it\n", ctl_db_label(db), cons);
			rc = CTL_EXIT_OK;
			goto out;
		}
		if (pqev_clock_monotonic() - start >= limit) {
			ctl_err("%s: %s: the flag is set, but %s has not acknowledged it within %.0f "
				"s: is its worker running? (--no-wait does not wait)",
				ctl_db_label(db), l.what, cons, (double)limit / USEC_PER_SEC);
			rc = CTL_EXIT_TIMEOUT;
			goto out;
		}
		if (!ctl_node_sleep(ctx, ACK_POLL)) {
			rc = 128 + ctl_signalled;
			goto out;
		}
	}
out:
	PQclear(r);
	if (db && db != l.db)
		ctl_db_close(db);
	free(cons);
	local_free(&l);
	return rc;
}

int cmd_node_pause(CtlCtx *ctx, int argc, char **argv)
{
	return set_paused(ctx, argc, argv, true);
}

int cmd_node_resume(CtlCtx *ctx, int argc, char **argv)
{
	return set_paused(ctx, argc, argv, false);
}

/* ---- tag-dead / tag-alive ---- */

/* A live member with its connection and node type. */
typedef struct Peer {
	const CtlMember *m;
	CtlDb *db; /* NULL: not contacted */
	bool reachable;
	char *type, *provider;
} Peer;

static void peers_free(Peer *p, size_t n)
{
	for (size_t i = 0; p && i < n; i++) {
		if (p[i].db)
			ctl_db_close(p[i].db);
		free(p[i].type);
		free(p[i].provider);
	}
	free(p);
}

/* Connect to every member except those tagged dead and `skip`; the -d node is
   reached through -d. The root comes first. */
static Peer *peers_open(CtlCtx *ctx, Local *l, const char *queue, const char *skip, size_t *n)
{
	Peer *p = calloc(l->nm + 1, sizeof(*p));
	size_t k = 0;

	if (!p)
		abort();
	for (size_t i = 0; i < l->nm; i++) {
		Peer *x;
		PGresult *r;
		if ((skip && strcmp(l->m[i].name, skip) == 0) || l->m[i].dead)
			continue;
		x = &p[k++];
		x->m = &l->m[i];
		if (strcmp(l->m[i].name, l->name) == 0) {
			x->reachable = true;
			x->type = strdup(l->type);
			x->provider = l->provider ? strdup(l->provider) : NULL;
			continue;
		}
		x->db = ctl_node_open_member(ctx, x->m);
		x->reachable = ctl_db_connect(x->db);
		if (!x->reachable)
			continue;
		r = ctl_node_info(x->db, queue, l->what);
		if (r && ctl_val(r, 0, 2)) {
			x->type = strdup(ctl_val(r, 0, 2));
			x->provider = ctl_val(r, 0, 6) ? strdup(ctl_val(r, 0, 6)) : NULL;
		}
		PQclear(r);
	}
	for (size_t i = 1; i < k; i++)
		if (p[i].type && strcmp(p[i].type, "root") == 0) {
			Peer t = p[0];
			p[0] = p[i];
			p[i] = t;
			break;
		}
	*n = k;
	return p;
}

static CtlDb *peer_db(Local *l, Peer *x)
{
	return x->db ? x->db : l->db;
}

/* What the steps of tag-dead / tag-alive / drop-node work on. */
typedef struct Op {
	CtlCtx *ctx;
	Local *l;
	Peer *p;
	size_t np;
	const char *queue, *node;
	bool dead;    /* tag: the flag to set */
	CtlDb *ndb;   /* drop-node: the node being dropped, when alive */
	char *ntype;  /* its type, when it holds the node */
	bool no_root; /* drop-node: no live root answered */
} Op;

static CtlDb *op_db(Op *o, int n)
{
	return peer_db(o->l, &o->p[n]);
}

static bool op_reachable(Op *o, int n, const char *todo)
{
	if (o->p[n].reachable)
		return true;
	ctl_err("node %s: unreachable: %s (%s)", ctl_q(o->p[n].m->name), ctl_db_error(o->p[n].db),
		todo);
	return false;
}

/* A count of rows about the node on member n's database; -1 on error. */
static long long op_count(Op *o, CtlDb *db, const char *sql)
{
	const char *q[2] = {o->queue, o->node};
	bool ok = true;
	char *v = query1(db, o->l->what, sql, 2, q, &ok);
	long long c = ok && v ? atoll(v) : ok ? 0 : -1;

	free(v);
	return c;
}

/* ---- tag-dead / tag-alive: the dead flag of the node on member n ---- */

static int chk_tagged(CtlPlan *pl, void *arg, int n)
{
	Op *o = arg;
	const char *q[2] = {o->queue, o->node};
	bool ok = true;
	char *cur;
	int done;

	if (!op_reachable(o, n, "run it again when the node is back"))
		return -1;
	cur = query1(op_db(o, n), o->l->what,
		     "select dead::text from pgq_node.get_queue_locations($1) where node_name = $2",
		     2, q, &ok);
	if (!ok)
		return -1;
	/* no row: nothing to tag there (register_location would store nothing) */
	done = !cur || (strcmp(cur, "true") == 0) == o->dead;
	free(cur);
	return done;
}

static int act_tag(CtlPlan *pl, void *arg, int n)
{
	Op *o = arg;
	const char *q[3] = {o->queue, o->node, o->dead ? "true" : "false"};

	return ctl_node_call(op_db(o, n), o->l->what,
			     "select * from pgq_node.register_location($1, $2, null, $3::boolean)",
			     3, q, NULL)
		       ? 0
		       : -1;
}

static void op_json(CtlJson *j, void *arg)
{
	Op *o = arg;

	ctl_json_str(j, "cascade", o->queue);
	ctl_json_str(j, "node", o->node);
}

static int tag(CtlCtx *ctx, int argc, char **argv, bool dead)
{
	bool dry = false;
	const CtlOpt opts[] = {{"dry-run", false, &dry}, {NULL}};
	char *pos[CTL_MAX_ARGS];
	const char *queue, *node;
	int npos, rc;
	Local l;
	Op o = {.ctx = ctx, .l = &l, .dead = dead};
	CtlPlan *plan = NULL;
	const CtlMember *x;

	if ((rc = ctl_node_args(ctx, argc, argv, opts, 1, &queue, pos, &npos)))
		return rc;
	node = pos[0];
	if (!ctl_check_new_name("node", node))
		return CTL_EXIT_ERROR;
	o.queue = queue;
	o.node = node;
	if ((rc = local_open(ctx, &l, queue, dead ? "tag-dead" : "tag-alive", node))) {
		local_free(&l);
		return rc;
	}
	rc = CTL_EXIT_ERROR;
	x = ctl_node_member(l.m, l.nm, node);
	if (!x) {
		ctl_err("%s: %s: %s is not a member of cascade %s", ctl_db_label(l.db), l.what,
			ctl_qq(node), ctl_q(queue));
		goto out;
	}
	if (dead && strcmp(node, l.name) == 0) {
		ctl_err("%s: %s: this is the node of -d: run it from a live member",
			ctl_db_label(l.db), l.what);
		goto out;
	}
	o.p = peers_open(ctx, &l, queue, node, &o.np);
	if (!dead) {
		/* alive means: reachable, holding that node, and not a second root */
		CtlDb *db = strcmp(node, l.name) == 0 ? NULL : ctl_node_open_member(ctx, x);
		PGresult *r = ctl_node_info(db ? db : l.db, queue, l.what);
		bool fine = false;
		if (!r) {
			/* printed */
		} else if (!ctl_val(r, 0, 3) || strcmp(ctl_val(r, 0, 3), node) != 0) {
			ctl_err("%s: %s: the database at its location holds no node %s",
				ctl_db_label(db ? db : l.db), l.what, ctl_qq(node));
		} else if (strcmp(ctl_val(r, 0, 2), "root") == 0 && o.np > 0 && o.p[0].type &&
			   strcmp(o.p[0].type, "root") == 0) {
			ctl_err("%s: %s: %s is still a root, but %s is the cascade's root now: run "
				"`pgqctl node resurrect` on it first",
				ctl_db_label(db ? db : l.db), l.what, ctl_qq(node),
				ctl_qq(o.p[0].m->name));
		} else {
			fine = true;
		}
		PQclear(r);
		if (!fine) {
			if (db)
				ctl_db_close(db);
			goto out;
		}
		/* the node itself is told too */
		o.p[o.np] = (Peer){.m = x, .db = db, .reachable = true};
		o.np++;
	}
	plan = ctl_plan_new(ctx, l.what, CTL_PLAN_PER_NODE, dry);
	for (size_t i = 0; i < o.np; i++) {
		ctl_plan_step(plan, o.p[i].m->name, chk_tagged, act_tag, &o, (int)i, "tag %s %s",
			      ctl_qq(node), dead ? "dead" : "alive");
		ctl_plan_independent(plan);
	}
	rc = ctl_plan_run(plan);
out:
	ctl_plan_json(plan, dead ? "tag-dead" : "tag-alive", rc, op_json, &o);
	ctl_plan_free(plan);
	peers_free(o.p, o.np);
	local_free(&l);
	return rc;
}

int cmd_node_tag_dead(CtlCtx *ctx, int argc, char **argv)
{
	return tag(ctx, argc, argv, true);
}

int cmd_node_tag_alive(CtlCtx *ctx, int argc, char **argv)
{
	return tag(ctx, argc, argv, false);
}

/* ---- drop-node ---- */

/* 1. the node itself drops its rows and its queue, first: while it is in every
   member's map, a re-run can still find it */
static int chk_node_dropped(CtlPlan *pl, void *arg, int n)
{
	Op *o = arg;
	return o->ntype == NULL;
}

static int act_drop_own(CtlPlan *pl, void *arg, int n)
{
	Op *o = arg;
	const char *q[2] = {o->queue, o->node};

	return ctl_node_call(o->ndb, o->l->what, "select * from pgq_node.drop_node($1, $2)", 2, q,
			     NULL)
		       ? 0
		       : -1;
}

/* 2. the root forgets the location; its event tells every worker */
static int chk_unregistered(CtlPlan *pl, void *arg, int n)
{
	Op *o = arg;

	if (o->no_root) {
		ctl_err("%s: no live root answered: the other members are cleaned, run drop-node "
			"again when the root is reachable",
			o->l->what);
		return -1;
	}
	long long c = op_count(o, op_db(o, 0),
			       "select count(*) from pgq_node.get_queue_locations($1)"
			       " where node_name = $2");
	return c < 0 ? -1 : c == 0;
}

static int act_unregister(CtlPlan *pl, void *arg, int n)
{
	Op *o = arg;
	const char *q[2] = {o->queue, o->node};

	return ctl_node_call(op_db(o, 0), o->l->what,
			     "select * from pgq_node.unregister_location($1, $2)", 2, q, NULL)
		       ? 0
		       : -1;
}

/* 3. every other live member forgets it (subscription and location) */
static int chk_forgotten(CtlPlan *pl, void *arg, int n)
{
	Op *o = arg;
	long long c;

	if (!op_reachable(o, n, "run drop-node again when it is back"))
		return -1;
	c = op_count(o, op_db(o, n),
		     "select (select count(*) from pgq_node.get_queue_locations($1)"
		     "  where node_name = $2)"
		     " + (select count(*) from pgq_node.get_subscriber_info($1)"
		     "  where node_name = $2)");
	return c < 0 ? -1 : c == 0;
}

static int act_forget(CtlPlan *pl, void *arg, int n)
{
	Op *o = arg;
	const char *q[2] = {o->queue, o->node};

	return ctl_node_call(op_db(o, n), o->l->what, "select * from pgq_node.drop_node($1, $2)", 2,
			     q, NULL)
		       ? 0
		       : -1;
}

int cmd_node_drop_node(CtlCtx *ctx, int argc, char **argv)
{
	bool dry = false;
	const CtlOpt opts[] = {{"dry-run", false, &dry}, {NULL}};
	char *pos[CTL_MAX_ARGS];
	const char *queue, *node;
	int npos, rc;
	Local l;
	Op o = {.ctx = ctx, .l = &l};
	CtlPlan *plan = NULL;
	const CtlMember *x;
	bool nalive = false;
	CtlMember found = {0};

	if ((rc = ctl_node_args(ctx, argc, argv, opts, 1, &queue, pos, &npos)))
		return rc;
	node = pos[0];
	if (!ctl_check_new_name("node", node))
		return CTL_EXIT_ERROR;
	o.queue = queue;
	o.node = node;
	if ((rc = local_open(ctx, &l, queue, "drop-node", node))) {
		local_free(&l);
		return rc;
	}
	rc = CTL_EXIT_ERROR;
	if (strcmp(node, l.name) == 0) {
		ctl_err("%s: %s: this is the node of -d: run it from another member",
			ctl_db_label(l.db), l.what);
		goto out;
	}
	x = ctl_node_member(l.m, l.nm, node);
	o.p = peers_open(ctx, &l, queue, node, &o.np);
	if (!x) {
		/* this node never learned of it (no tick carried the event yet): its
		   location is in the map of the root, its provider or itself */
		for (size_t i = 0; i < o.np && !x; i++) {
			const char *q[2] = {queue, node};
			PGresult *r;
			if (!o.p[i].reachable)
				continue;
			r = ctl_db_exec(
				op_db(&o, (int)i),
				"select node_name, node_location, dead"
				" from pgq_node.get_queue_locations($1) where node_name = $2",
				2, q);
			if (r && PQntuples(r) == 1) {
				found.name = strdup(PQgetvalue(r, 0, 0));
				found.location = strdup(PQgetvalue(r, 0, 1));
				found.dead = PQgetvalue(r, 0, 2)[0] == 't';
				if (!found.name || !found.location)
					abort();
				x = &found;
			}
			PQclear(r);
		}
	}
	/* checks: nobody may still read from the node, and it is not the root */
	for (size_t i = 0; i < o.np; i++)
		if (o.p[i].provider && strcmp(o.p[i].provider, node) == 0 &&
		    strcmp(o.p[i].m->name, node) != 0) {
			ctl_err("%s: node %s still reads from %s: move it to another provider "
				"first",
				l.what, ctl_qq(o.p[i].m->name), ctl_qq(node));
			goto out;
		}
	if (x && !x->dead) {
		PGresult *r;
		o.ndb = ctl_node_open_member(ctx, x);
		nalive = ctl_db_connect(o.ndb);
		if (!nalive && !ctx->quiet && !ctx->json)
			printf("node %s: unreachable (%s): only the other members are cleaned\n",
			       ctl_q(node), ctl_db_error(o.ndb));
		r = nalive ? ctl_node_info(o.ndb, queue, l.what) : NULL;
		if (nalive && !r)
			goto out;
		if (r && ctl_val(r, 0, 3) && strcmp(ctl_val(r, 0, 3), node) == 0)
			o.ntype = strdup(ctl_val(r, 0, 2));
		PQclear(r);
		if (o.ntype && strcmp(o.ntype, "root") == 0) {
			ctl_err("%s: %s is the root: switch over to another node first", l.what,
				ctl_qq(node));
			goto out;
		}
		if (o.ntype) {
			const char *q[1] = {queue};
			bool ok = true;
			char *subs = query1(o.ndb, l.what,
					    "select string_agg(node_name, ', ' order by node_name)"
					    " from pgq_node.get_subscriber_info($1)",
					    1, q, &ok);
			if (!ok)
				goto out;
			if (subs) {
				ctl_err("%s: %s still has subscribers (%s): move them to another "
					"provider first",
					l.what, ctl_qq(node), subs);
				free(subs);
				goto out;
			}
		}
	}
	plan = ctl_plan_new(ctx, l.what, CTL_PLAN_PER_NODE, dry);
	if (o.ntype || (nalive && x))
		ctl_plan_step(plan, node, chk_node_dropped, act_drop_own, &o, 0,
			      "drop the node's rows and queue");
	else if (ctl_plan_text(plan))
		printf("node %s: %s: its own rows are left (drop its database, or run drop-node "
		       "again while it is reachable)\n",
		       ctl_q(node),
		       !x        ? "in no member map"
		       : x->dead ? "tagged dead"
				 : "unreachable");
	o.no_root =
		!(o.np > 0 && o.p[0].type && strcmp(o.p[0].type, "root") == 0 && o.p[0].reachable);
	ctl_plan_step(plan, o.no_root ? "(root)" : o.p[0].m->name, chk_unregistered, act_unregister,
		      &o, 0, "unregister the location of %s (announced to every node)",
		      ctl_qq(node));
	ctl_plan_independent(plan);
	for (size_t i = 0; i < o.np; i++)
		ctl_plan_step(plan, o.p[i].m->name, chk_forgotten, act_forget, &o, (int)i,
			      "forget %s (subscription, location)", ctl_qq(node));
	rc = ctl_plan_run(plan);
out:
	ctl_plan_json(plan, "drop-node", rc, op_json, &o);
	ctl_plan_free(plan);
	free(found.name);
	free(found.location);
	free(o.ntype);
	if (o.ndb)
		ctl_db_close(o.ndb);
	peers_free(o.p, o.np);
	local_free(&l);
	return rc;
}

/* ---- rename-node ---- */

int cmd_node_rename_node(CtlCtx *ctx, int argc, char **argv)
{
	char *pos[CTL_MAX_ARGS];
	const char *queue;
	int npos, rc;

	if ((rc = ctl_node_args(ctx, argc, argv, NULL, 2, &queue, pos, &npos)))
		return rc;
	ctl_err("rename-node %s on cascade %s: refused: a node's name is a key on every member "
		"(node_location, node_info, local_state, subscriber_info) and in the PgQ "
		"consumer \".%s.watermark\" on its provider; the members cannot be changed in "
		"one transaction while their workers run, and pgq_node has no rename function, "
		"so a half-done rename would stop the workers. Instead: create a node named "
		"\"%s\" under the same provider, wait until it has caught up, move the "
		"subscribers, then drop-node %s",
		pos[0], queue, pos[0], pos[1], pos[0]);
	return CTL_EXIT_ERROR;
}
