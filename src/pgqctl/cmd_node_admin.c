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
	char what[300];
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
		 arg ? arg : "", queue);
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
		 node       ? node
		 : consumer ? consumer
			    : l.name);
	rc = CTL_EXIT_ERROR;
	if (node && strcmp(node, l.name) != 0) {
		const CtlMember *x = ctl_node_member(l.m, l.nm, node);
		if (!x) {
			ctl_err("%s: %s: node \"%s\" is not a member of cascade %s",
				ctl_db_label(l.db), l.what, node, queue);
			goto out;
		}
		if (x->dead) {
			ctl_err("%s: %s: node \"%s\" is tagged dead", ctl_db_label(l.db), l.what,
				node);
			goto out;
		}
		db = ctl_node_open_member(ctx, x);
		r = ctl_node_info(db, queue, l.what);
		if (!r)
			goto out;
		if (!ctl_val(r, 0, 3) || strcmp(ctl_val(r, 0, 3), node) != 0) {
			ctl_err("%s: %s: that database holds no node \"%s\"", ctl_db_label(db),
				l.what, node);
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
			ctl_err("%s: %s: no live member has consumer \"%s\" in cascade %s",
				ctl_db_label(l.db), l.what, consumer, queue);
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
			printf("%s: %s %s%s\n", ctl_db_label(db), cons,
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

/* Set the dead flag of `node` on every live member; false when one could not be
   told (printed). */
static bool tag_all(CtlCtx *ctx, CtlSteps *st, Local *l, Peer *p, size_t np, const char *queue,
		    const char *node, bool dead)
{
	bool all = true;

	for (size_t i = 0; i < np; i++) {
		Peer *x = &p[i];
		const char *q[3] = {queue, node, dead ? "true" : "false"};
		char *cur;
		bool ok = true;

		if (!x->reachable) {
			ctl_err("node %s: cannot tag \"%s\" %s there: unreachable: %s (run it again "
				"when the node is back)",
				x->m->name, node, dead ? "dead" : "alive", ctl_db_error(x->db));
			all = false;
			continue;
		}
		cur = query1(peer_db(l, x), l->what,
			     "select dead::text from pgq_node.get_queue_locations($1)"
			     " where node_name = $2",
			     2, q, &ok);
		if (!ok) {
			all = false;
			continue;
		}
		/* no row: nothing to tag there (register_location would store nothing) */
		if (ctl_step(st, x->m->name, !cur || (strcmp(cur, "true") == 0) == dead,
			     "tag \"%s\" %s", node, dead ? "dead" : "alive")) {
			if (ctl_node_call(peer_db(l, x), l->what,
					  "select * from pgq_node.register_location($1, $2, null,"
					  " $3::boolean)",
					  3, q, NULL))
				ctl_step_done(st, NULL);
			else
				all = false;
		}
		free(cur);
	}
	return all;
}

static int tag(CtlCtx *ctx, int argc, char **argv, bool dead)
{
	bool dry = false;
	const CtlOpt opts[] = {{"dry-run", false, &dry}, {NULL}};
	char *pos[CTL_MAX_ARGS];
	const char *queue, *node;
	int npos, rc;
	Local l;
	Peer *p = NULL;
	size_t np = 0;
	CtlSteps st;
	const CtlMember *x;

	if ((rc = ctl_node_args(ctx, argc, argv, opts, 1, &queue, pos, &npos)))
		return rc;
	node = pos[0];
	if (!ctl_check_name("node", node))
		return CTL_EXIT_ERROR;
	if ((rc = local_open(ctx, &l, queue, dead ? "tag-dead" : "tag-alive", node))) {
		local_free(&l);
		return rc;
	}
	rc = CTL_EXIT_ERROR;
	x = ctl_node_member(l.m, l.nm, node);
	if (!x) {
		ctl_err("%s: %s: \"%s\" is not a member of cascade %s", ctl_db_label(l.db), l.what,
			node, queue);
		goto out;
	}
	if (dead && strcmp(node, l.name) == 0) {
		ctl_err("%s: %s: this is the node of -d: run it from a live member",
			ctl_db_label(l.db), l.what);
		goto out;
	}
	p = peers_open(ctx, &l, queue, node, &np);
	if (!dead) {
		/* alive means: reachable, holding that node, and not a second root */
		CtlDb *db = strcmp(node, l.name) == 0 ? NULL : ctl_node_open_member(ctx, x);
		PGresult *r = ctl_node_info(db ? db : l.db, queue, l.what);
		bool fine = false;
		if (!r) {
			/* printed */
		} else if (!ctl_val(r, 0, 3) || strcmp(ctl_val(r, 0, 3), node) != 0) {
			ctl_err("%s: %s: the database at its location holds no node \"%s\"",
				ctl_db_label(db ? db : l.db), l.what, node);
		} else if (strcmp(ctl_val(r, 0, 2), "root") == 0 && np > 0 && p[0].type &&
			   strcmp(p[0].type, "root") == 0) {
			ctl_err("%s: %s: \"%s\" is still a root, but \"%s\" is the cascade's root "
				"now: run `pgqctl node resurrect` on it first",
				ctl_db_label(db ? db : l.db), l.what, node, p[0].m->name);
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
		p[np] = (Peer){.m = x, .db = db, .reachable = true};
		np++;
	}
	ctl_steps_init(&st, ctx, l.what, dry);
	if (!tag_all(ctx, &st, &l, p, np, queue, node, dead))
		goto out;
	rc = ctl_steps_end(&st);
out:
	peers_free(p, np);
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

int cmd_node_drop_node(CtlCtx *ctx, int argc, char **argv)
{
	bool dry = false;
	const CtlOpt opts[] = {{"dry-run", false, &dry}, {NULL}};
	char *pos[CTL_MAX_ARGS];
	const char *queue, *node;
	int npos, rc;
	Local l;
	Peer *p = NULL;
	size_t np = 0;
	CtlSteps st;
	const CtlMember *x;
	CtlDb *ndb = NULL; /* the node being dropped, when alive */
	bool nalive = false, root_missing = false;
	char *ntype = NULL;
	CtlMember found = {0};

	if ((rc = ctl_node_args(ctx, argc, argv, opts, 1, &queue, pos, &npos)))
		return rc;
	node = pos[0];
	if (!ctl_check_name("node", node))
		return CTL_EXIT_ERROR;
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
	p = peers_open(ctx, &l, queue, node, &np);
	if (!x) {
		/* this node never learned of it (no tick carried the event yet): its
		   location is in the map of the root, its provider or itself */
		for (size_t i = 0; i < np && !x; i++) {
			const char *q[2] = {queue, node};
			PGresult *r;
			if (!p[i].reachable)
				continue;
			r = ctl_db_exec(
				peer_db(&l, &p[i]),
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
	for (size_t i = 0; i < np; i++)
		if (p[i].provider && strcmp(p[i].provider, node) == 0 &&
		    strcmp(p[i].m->name, node) != 0) {
			ctl_err("%s: node \"%s\" still reads from \"%s\": move it to another "
				"provider first",
				l.what, p[i].m->name, node);
			goto out;
		}
	if (x && !x->dead) {
		PGresult *r;
		ndb = ctl_node_open_member(ctx, x);
		nalive = ctl_db_connect(ndb);
		if (!nalive && !ctx->quiet)
			printf("node %s: unreachable (%s): only the other members are cleaned\n",
			       node, ctl_db_error(ndb));
		r = nalive ? ctl_node_info(ndb, queue, l.what) : NULL;
		if (nalive && !r)
			goto out;
		if (r && ctl_val(r, 0, 3) && strcmp(ctl_val(r, 0, 3), node) == 0)
			ntype = strdup(ctl_val(r, 0, 2));
		PQclear(r);
		if (ntype && strcmp(ntype, "root") == 0) {
			ctl_err("%s: \"%s\" is the root: switch over to another node first", l.what,
				node);
			goto out;
		}
		if (ntype) {
			const char *q[1] = {queue};
			bool ok = true;
			char *subs = query1(ndb, l.what,
					    "select string_agg(node_name, ', ' order by node_name)"
					    " from pgq_node.get_subscriber_info($1)",
					    1, q, &ok);
			if (!ok)
				goto out;
			if (subs) {
				ctl_err("%s: \"%s\" still has subscribers (%s): move them to "
					"another provider first",
					l.what, node, subs);
				free(subs);
				goto out;
			}
		}
	}
	ctl_steps_init(&st, ctx, l.what, dry);
	/* 1. the node itself drops its rows and its queue, first: while it is in
	   every member's map, a re-run can still find it */
	if (ntype || (nalive && x)) {
		const char *q[2] = {queue, node};
		if (ctl_step(&st, node, ntype == NULL, "drop the node's rows and queue")) {
			if (!ctl_node_call(ndb, l.what, "select * from pgq_node.drop_node($1, $2)",
					   2, q, NULL))
				goto out;
			ctl_step_done(&st, NULL);
		}
	} else if (!ctx->quiet) {
		printf("node %s: %s: its own rows are left (drop its database, or run "
		       "drop-node again while it is reachable)\n",
		       node,
		       !x        ? "in no member map"
		       : x->dead ? "tagged dead"
				 : "unreachable");
	}
	/* 2. the root forgets the location; its event tells every worker */
	if (np > 0 && p[0].type && strcmp(p[0].type, "root") == 0 && p[0].reachable) {
		const char *q[2] = {queue, node};
		bool ok = true;
		char *has = query1(peer_db(&l, &p[0]), l.what,
				   "select count(*) from pgq_node.get_queue_locations($1)"
				   " where node_name = $2",
				   2, q, &ok);
		if (!ok)
			goto out;
		if (ctl_step(&st, p[0].m->name, atoi(has) == 0,
			     "unregister the location of \"%s\" (announced to every node)", node)) {
			if (!ctl_node_call(peer_db(&l, &p[0]), l.what,
					   "select * from pgq_node.unregister_location($1, $2)", 2,
					   q, NULL)) {
				free(has);
				goto out;
			}
			ctl_step_done(&st, NULL);
		}
		free(has);
	} else {
		ctl_err("%s: no live root answered: the other members are cleaned, run "
			"drop-node again when the root is reachable",
			l.what);
		root_missing = true;
	}
	/* 3. every other live member forgets it (subscription and location) */
	for (size_t i = 0; i < np; i++) {
		const char *q[2] = {queue, node};
		bool ok = true;
		char *left;
		if (!p[i].reachable) {
			ctl_err("node %s: unreachable: %s (run drop-node again when it is back)",
				p[i].m->name, ctl_db_error(p[i].db));
			goto out;
		}
		left = query1(peer_db(&l, &p[i]), l.what,
			      "select (select count(*) from pgq_node.get_queue_locations($1)"
			      "  where node_name = $2)"
			      " + (select count(*) from pgq_node.get_subscriber_info($1)"
			      "  where node_name = $2)",
			      2, q, &ok);
		if (!ok)
			goto out;
		if (ctl_step(&st, p[i].m->name, atoi(left) == 0,
			     "forget \"%s\" (subscription, location)", node)) {
			if (!ctl_node_call(peer_db(&l, &p[i]), l.what,
					   "select * from pgq_node.drop_node($1, $2)", 2, q,
					   NULL)) {
				free(left);
				goto out;
			}
			ctl_step_done(&st, NULL);
		}
		free(left);
	}
	rc = root_missing ? CTL_EXIT_ERROR : ctl_steps_end(&st);
out:
	free(found.name);
	free(found.location);
	free(ntype);
	if (ndb)
		ctl_db_close(ndb);
	peers_free(p, np);
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
