/*
 * Moving roles in a cascade: node change-provider and node switchover NEW_ROOT
 * (PGQ-NODE-SPEC 6.3, 6.5), each a step plan (node_plan.c) whose checks read
 * the members' databases (node_cascade.c), so a run that stopped anywhere is
 * finished by running the same command again. Failover: cmd_node_failover.c.
 *
 * A step here is a row of a table: its title, its action, and its check as a
 * condition on fresh state, behind a shortcut for the operation's end state
 * (once that is reached, every earlier step counts as done).
 */
#include <stdlib.h>
#include <string.h>

#include "node_cascade.h"

/* ======================= change-provider ======================= */

static int cp_state(NcOp *op, NcCons *cs)
{
	if (nc_cons_state(op, op->node, op->consumer, cs) < 0)
		return -1;
	if (!cs->found) {
		ctl_err("node %s: %s: no consumer %s in pgq_node.local_state",
			ctl_q(op->node->name), op->what, ctl_q(op->consumer));
		return -1;
	}
	return 0;
}

/* Is the plain consumer `consumer` registered on member m's queue? */
static int plain_registered_as(NcOp *op, NcMember *m, const char *consumer)
{
	const char *q[2] = {op->queue, consumer};
	long long n = nc_number(op, m,
				"select count(*) from pgq.get_consumer_info($1)"
				" where consumer_name = $2",
				2, q);

	return n < 0 ? -1 : n > 0;
}

static int plain_registered(NcOp *op, NcMember *m)
{
	return plain_registered_as(op, m, op->consumer);
}

static int cp_done_pause(CtlPlan *p, NcOp *op, const NcCons *cs)
{
	return cs->paused && cs->uptodate;
}

static int cp_act_pause(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	return nc_pause(op, op->node, op->consumer, true);
}

static int cp_done_location(CtlPlan *p, NcOp *op, const NcCons *cs)
{
	const char *q[2] = {op->queue, op->node->name};
	long long k = nc_number(op, op->prov,
				"select count(*) from pgq_node.get_queue_locations($1)"
				" where node_name = $2",
				2, q);

	return k < 0 ? -1 : k > 0;
}

static int cp_act_location(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const char *q[3] = {op->queue, op->node->name, op->node->location};

	return ctl_plan_call(nc_db(op, op->prov), op->what,
			     "select * from pgq_node.register_location($1, $2, $3, false)", 3, q,
			     NULL)
		       ? 0
		       : -1;
}

static int cp_done_register(CtlPlan *p, NcOp *op, const NcCons *cs)
{
	return op->plain ? plain_registered(op, op->prov)
			 : nc_has_subscriber(op, op->prov, op->node->name);
}

static int cp_act_register(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcCons cs;
	NcState ps;
	char tick[32];

	if (cp_state(op, &cs) < 0 || !nc_need_state(op, op->prov, &ps))
		return -1;
	if (ps.top < cs.completed && nc_wait_for_tick(op, op->prov, cs.completed) != 0)
		return -1;
	snprintf(tick, sizeof(tick), "%lld", cs.completed);
	if (op->plain) {
		const char *q[3] = {op->queue, op->consumer, tick};
		PGresult *r =
			ctl_plan_query(nc_db(op, op->prov), op->what,
				       "select pgq.register_consumer_at($1, $2, $3::bigint)", 3, q);
		if (!r)
			return -1;
		PQclear(r);
	} else {
		const char *q[4] = {op->queue, op->node->name, op->consumer, tick};
		if (!ctl_plan_call(
			    nc_db(op, op->prov), op->what,
			    "select * from pgq_node.register_subscriber($1, $2, $3, $4::bigint)", 4,
			    q, NULL))
			return -1;
	}
	ctl_plan_note(p, "at tick %lld", cs.completed);
	return 0;
}

static int cp_done_never(CtlPlan *p, NcOp *op, const NcCons *cs)
{
	return 0;
}

static int cp_act_change(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const char *q[3] = {op->queue, op->consumer, op->prov->name};

	return ctl_plan_call(nc_db(op, op->node), op->what,
			     "select * from pgq_node.change_consumer_provider($1, $2, $3)", 3, q,
			     NULL)
		       ? 0
		       : -1;
}

static int cp_done_resume(CtlPlan *p, NcOp *op, const NcCons *cs)
{
	return !cs->paused;
}

static int cp_act_resume(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	return nc_resume(op, op->node, op->consumer);
}

/* The registrations on the former provider(s): members other than the new
   provider and the node itself that still hold them. */
static int cp_former(NcOp *op, NcMember **out)
{
	if (!op->plain)
		return nc_subscribed_on(op, op->node->name, op->prov, op->node, out);
	return nc_queues_holding(op, op->prov, op->node, plain_registered_as, op->consumer, out);
}

static int cp_done_drop(CtlPlan *p, NcOp *op, const NcCons *cs)
{
	NcMember *f[NC_MAX_MEMBERS];
	int k = cp_former(op, f);

	return k < 0 ? -1 : k == 0;
}

static int cp_act_drop(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcMember *f[NC_MAX_MEMBERS];
	int k = cp_former(op, f);

	if (k < 0)
		return -1;
	if (!op->plain)
		return nc_unsubscribe_everywhere(p, op, op->node, op->prov);
	for (int i = 0; i < k; i++) {
		const char *q[2] = {op->queue, op->consumer};
		PGresult *r = ctl_plan_query(nc_db(op, f[i]), op->what,
					     "select pgq.unregister_consumer($1, $2)", 2, q);
		if (!r)
			return -1;
		PQclear(r);
		ctl_plan_note(p, "on %s", ctl_q(f[i]->name));
	}
	return 0;
}

typedef struct CpStep {
	bool end_counts; /* done once the consumer reads from the new provider */
	int (*done)(CtlPlan *p, NcOp *op, const NcCons *cs);
	CtlStepFn act;
	const char *title; /* {consumer}, {node}, {prov} */
} CpStep;

static const CpStep CP_STEPS[] = {
	{true, cp_done_pause, cp_act_pause,
	 "pause {consumer} on {node} and wait until it acknowledged"},
	{false, cp_done_location, cp_act_location, "{prov} learns the location of {node}"},
	{true, cp_done_register, cp_act_register, "register {consumer} on {prov} at its last tick"},
	{true, cp_done_never, cp_act_change, "point {consumer} on {node} to {prov}"},
	{false, cp_done_resume, cp_act_resume, "resume {consumer} on {node}"},
	{false, cp_done_drop, cp_act_drop, "drop its registration on the former provider"},
};

static int cp_check(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcCons cs;

	if (cp_state(op, &cs) < 0)
		return -1;
	if (CP_STEPS[n].end_counts && strcmp(cs.provider, op->prov->name) == 0)
		return 1;
	return CP_STEPS[n].done(p, op, &cs);
}

static void cp_json(CtlJson *j, void *arg)
{
	NcOp *op = arg;

	ctl_json_str(j, "cascade", op->queue);
	ctl_json_str(j, "node", op->node ? op->node->name : NULL);
	ctl_json_str(j, "consumer", op->consumer);
	ctl_json_str(j, "provider", op->prov ? op->prov->name : NULL);
}

/* --consumer without --node: the -d node when the consumer is there, else the
   one reachable member that has it in local_state (PgQ's tool looks in the same
   order). Two members with that consumer need --node to say which. */
static NcMember *consumer_home(NcOp *op, NcMember *local, const char *consumer)
{
	NcMember *home = NULL;
	NcCons cs;
	int unreachable = 0;

	if (nc_cons_state(op, local, consumer, &cs) < 0)
		return NULL;
	if (cs.found)
		return local;
	for (int i = 0; i < op->nm; i++) {
		NcMember *m = &op->m[i];

		if (m == local || m->dead)
			continue;
		if (!nc_reachable(op, m)) {
			unreachable++;
			continue;
		}
		if (nc_cons_state(op, m, consumer, &cs) < 0)
			return NULL;
		if (!cs.found)
			continue;
		if (home) {
			ctl_err("%s: consumer %s is on nodes %s and %s: say which with --node",
				op->what, ctl_q(consumer), ctl_q(home->name), ctl_q(m->name));
			return NULL;
		}
		home = m;
	}
	if (!home)
		ctl_err("%s: no consumer %s in pgq_node.local_state of any member of cascade %s%s",
			op->what, ctl_q(consumer), ctl_qq(op->queue),
			unreachable ? " that answers (some do not)" : "");
	return home;
}

int cmd_node_change_provider(CtlCtx *ctx, int argc, char **argv)
{
	NcArgs a = {0};
	const char *provider = NULL, *node = NULL, *consumer = NULL;
	const CtlOpt opts[] = {
		{"queue", true, &a.queue},     {"cascade", true, &a.cascade},
		{"timeout", true, &a.timeout}, {"dry-run", false, &a.dry_run},
		{"provider", true, &provider}, {"node", true, &node},
		{"consumer", true, &consumer}, {NULL},
	};
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	NcOp op = {0};
	NcState st, ps;
	CtlPlan *plan = NULL;

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos > 0)
		return ctl_usage(argv[0], "unexpected argument \"%s\"", pos[0]);
	if (!provider)
		return ctl_usage(argv[0], "needs --provider NODE");
	snprintf(op.what, sizeof(op.what), "change provider to %s", ctl_qq(provider));
	plan = ctl_plan_new(ctx, op.what, CTL_PLAN_SEQUENCE, a.dry_run);
	if ((rc = nc_setup(ctx, &op, &a, argv[0])))
		goto out;
	rc = CTL_EXIT_ERROR;
	if (!node) {
		/* the node of -d */
		PGresult *r;
		const char *q[1] = {op.queue};
		r = ctl_plan_query(op.local, op.what,
				   "select node_name from pgq_node.get_node_info($1)", 1, q);
		if (!r)
			goto out;
		if (!ctl_val(r, 0, 0)) {
			ctl_err("%s: %s: no node of cascade %s here", ctl_db_label(op.local),
				op.what, ctl_qq(op.queue));
			PQclear(r);
			goto out;
		}
		op.node = nc_find(&op, ctl_val(r, 0, 0));
		PQclear(r);
		if (op.node && consumer)
			op.node = consumer_home(&op, op.node, consumer);
		if (!op.node)
			goto out;
	} else {
		op.node = nc_need_member(&op, node, "node");
	}
	op.prov = nc_need_member(&op, provider, "provider");
	if (!op.node || !op.prov)
		goto out;
	if (op.node == op.prov) {
		ctl_err("%s: node %s cannot be its own provider", op.what, ctl_q(op.node->name));
		rc = CTL_EXIT_USAGE;
		goto out;
	}
	if (op.prov->dead) {
		ctl_err("%s: node %s is marked dead", op.what, ctl_q(op.prov->name));
		goto out;
	}
	if (!nc_need_state(&op, op.node, &st) || !nc_need_state(&op, op.prov, &ps))
		goto out;
	if (strcmp(ps.type, "leaf") == 0) {
		ctl_err("node %s: %s: a leaf has no queue, so it cannot be a provider",
			ctl_q(op.prov->name), op.what);
		goto out;
	}
	/* --consumer naming the node's own worker moves the node (subscriber rows and
	   .NODE.watermark follow it), as --node does; any other name is a plain
	   cascaded consumer, registered on the providers' queues only */
	op.plain = consumer != NULL && strcmp(consumer, st.worker) != 0;
	snprintf(op.worker, sizeof(op.worker), "%s", st.worker);
	op.consumer = consumer ? consumer : op.worker;
	if (!op.plain && strcmp(st.type, "root") == 0) {
		ctl_err("node %s: %s: the root has no provider (see pgqctl node switchover)",
			ctl_q(op.node->name), op.what);
		goto out;
	}
	if (!op.plain) {
		int above = nc_is_above(&op, op.prov, op.node);
		if (above < 0)
			goto out;
		if (above) {
			ctl_err("%s: node %s reads (through others) from %s: that would make a "
				"loop",
				op.what, ctl_q(op.prov->name), ctl_q(op.node->name));
			goto out;
		}
	}
	if (ctl_plan_text(plan))
		printf("change provider of %s %s on node %s to %s%s\n",
		       op.plain ? "consumer" : "worker", ctl_q(op.consumer), ctl_q(op.node->name),
		       ctl_q(op.prov->name), a.dry_run ? " (dry run)" : "");
	for (int i = 0; i < (int)(sizeof(CP_STEPS) / sizeof(CP_STEPS[0])); i++) {
		const char *k[3] = {"consumer", "node", "prov"};
		const char *v[3] = {op.consumer, op.node->name, op.prov->name};
		char title[3 * CTL_NAME_MAX + 200];

		nc_title(title, sizeof(title), CP_STEPS[i].title, 3, k, v);
		ctl_plan_step(plan, NULL, cp_check, CP_STEPS[i].act, &op, i, "%s", title);
	}
	rc = ctl_plan_run(plan);
out:
	ctl_plan_json(plan, "change-provider", rc, cp_json, &op);
	ctl_plan_free(plan);
	nc_free(&op);
	return rc;
}

/* ======================= switchover ======================= */

/* 1 OLD is already a branch under NEW (the end state), 0 not, -1 error. */
static int sw_demoted(NcOp *op)
{
	NcState st;

	if (!nc_need_state(op, op->old, &st))
		return -1;
	return strcmp(st.type, "branch") == 0 && strcmp(st.provider, op->nw->name) == 0;
}

/* Both "OLD demoted" or "NEW promoted" make the early steps done. */
static int sw_past(NcOp *op, bool promoted_counts)
{
	int rc = sw_demoted(op);

	if (rc != 0 || !promoted_counts)
		return rc;
	return nc_is_root(op, op->nw);
}

/* Is every event of member m's queue below its latest tick? Waits for writers
   that are still inside a transaction (the same lock demote_root step 2 takes). */
static int all_below_last_tick(NcOp *op, NcMember *m)
{
	const char *q[1] = {op->queue};
	CtlDb *db = nc_db(op, m);
	PGresult *r;
	char sql[1024], tbl[300];
	int rc = -1;

	if (!nc_queue_table(op, m, tbl, sizeof(tbl)))
		return -1;
	if (!(r = ctl_db_exec_simple(db, "begin")))
		return ctl_db_fail(db, op->what) ? -1 : -1;
	PQclear(r);
	snprintf(sql, sizeof(sql), "lock table %s in share mode", tbl);
	r = ctl_plan_query(db, op->what, sql, 0, NULL);
	if (r) {
		PQclear(r);
		snprintf(sql, sizeof(sql),
			 "with t as (select t.tick_snapshot s from pgq.tick t join pgq.queue q"
			 " on q.queue_id = t.tick_queue where q.queue_name = $1"
			 " order by t.tick_queue desc, t.tick_id desc limit 1)"
			 " select count(*) from %s e, t where e.ev_txid >= txid_snapshot_xmin(t.s)"
			 " and not txid_visible_in_snapshot(e.ev_txid, t.s)",
			 tbl);
		r = ctl_plan_query(db, op->what, sql, 1, q);
		if (r) {
			rc = atoll(PQgetvalue(r, 0, 0)) == 0;
			PQclear(r);
		}
	}
	PQclear(ctl_db_exec_simple(db, rc < 0 ? "rollback" : "commit"));
	return rc;
}

/* OLD's final tick: its latest one once writes are off and all events are below it. */
static long long sw_final_tick(NcOp *op)
{
	NcState st;

	if (op->final_tick > 0)
		return op->final_tick;
	if (!nc_need_state(op, op->old, &st))
		return -1;
	if (strcmp(st.type, "root") != 0) {
		ctl_err("node %s: %s: no longer the root, its final tick is not known here",
			ctl_q(op->old->name), op->what);
		return -1;
	}
	return st.top;
}

/* ---- the steps' own conditions (os: OLD's state, ns: NEW's) ---- */

static int sw_never(CtlPlan *p, NcOp *op, const NcState *os, const NcState *ns)
{
	return 0;
}

static int sw_old_paused(CtlPlan *p, NcOp *op, const NcState *os, const NcState *ns)
{
	return os->paused;
}

/* Before writes go off, NEW catches up with what OLD has now: the write pause
   then only covers the last ticks, not NEW's whole lag. */
static int sw_near(CtlPlan *p, NcOp *op, const NcState *os, const NcState *ns)
{
	return os->writes_off || (ns->top >= os->top && ns->completed >= os->top);
}

static int sw_writes_off(CtlPlan *p, NcOp *op, const NcState *os, const NcState *ns)
{
	return os->writes_off;
}

static int sw_final(CtlPlan *p, NcOp *op, const NcState *os, const NcState *ns)
{
	int rc;

	if (!os->writes_off)
		return 0;
	rc = all_below_last_tick(op, op->old);
	if (rc == 1) {
		op->final_tick = os->top;
		ctl_plan_note(p, "final tick %lld", os->top);
	}
	return rc;
}

static int sw_caught_up(CtlPlan *p, NcOp *op, const NcState *os, const NcState *ns)
{
	long long l = sw_final_tick(op);

	if (l < 0)
		return -1;
	return ns->top >= l && ns->completed >= l;
}

static int sw_new_paused(CtlPlan *p, NcOp *op, const NcState *os, const NcState *ns)
{
	return ns->paused && ns->uptodate;
}

static int sw_old_subscribed(CtlPlan *p, NcOp *op, const NcState *os, const NcState *ns)
{
	return nc_has_subscriber(op, op->nw, op->old->name);
}

static int sw_new_unsubscribed(CtlPlan *p, NcOp *op, const NcState *os, const NcState *ns)
{
	NcMember *f[NC_MAX_MEMBERS];
	int k = nc_subscribed_on(op, op->nw->name, op->nw, NULL, f);

	return k < 0 ? -1 : k == 0;
}

static int sw_new_resumed(CtlPlan *p, NcOp *op, const NcState *os, const NcState *ns)
{
	return !ns->paused;
}

static int sw_old_resumed(CtlPlan *p, NcOp *op, const NcState *os, const NcState *ns)
{
	return !os->paused;
}

/* ---- the actions ---- */

static int sw_act_pause_old(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState st;

	if (!nc_need_state(op, op->old, &st))
		return -1;
	/* the root's worker only publishes watermarks: no need to wait for it */
	return nc_pause(op, op->old, st.worker, false);
}

static int sw_act_near(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState os, ns;

	if (!nc_need_state(op, op->old, &os) || !nc_need_state(op, op->nw, &ns))
		return -1;
	if (nc_wait_for_tick(op, op->nw, os.top) != 0)
		return -1;
	ctl_plan_note(p, "ticks %lld..%lld", ns.top, os.top);
	return 0;
}

static int sw_act_writes_off(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const char *q[2] = {op->queue, op->nw->name};

	if (!ctl_plan_call(nc_db(op, op->old), op->what,
			   "select * from pgq_node.demote_root($1, 1, $2)", 2, q, NULL))
		return -1;
	op->t_off = ctl_now_sec();
	ctl_plan_note(p, "inserts on %s now fail with \"Insert into queue disallowed\"",
		      ctl_q(op->old->name));
	return 0;
}

static int sw_act_final(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const char *q[2] = {op->queue, op->nw->name};
	PGresult *r;

	if (!ctl_plan_call(nc_db(op, op->old), op->what,
			   "select * from pgq_node.demote_root($1, 2, $2)", 2, q, &r))
		return -1;
	op->final_tick = nc_cell_ll(r, 0, 2);
	PQclear(r);
	ctl_plan_note(p, "final tick %lld", op->final_tick);
	return 0;
}

static int sw_act_caught_up(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	long long l = sw_final_tick(op);
	double t0 = ctl_now_sec();

	if (l < 0 || nc_wait_for_tick(op, op->nw, l) != 0)
		return -1;
	ctl_plan_note(p, "in %.3f s", ctl_now_sec() - t0);
	return 0;
}

static int sw_act_pause_new(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	return nc_pause_worker(op, op->nw);
}

/* The root's ticker settings go with its role. A branch's own are unused (its
   ticks are its provider's) and promote_branch leaves them as they were, PgQ's
   defaults as a rule (3 s max lag): the cascade would tick differently after
   the switch. Copied before promote_branch, so that a run interrupted between
   the two copies them again. low_latency only where both queues have it
   (PgQ 3.5 has not). */
static int sw_carry_ticker_settings(NcOp *op, char *out, size_t len)
{
	static const char *const names[4] = {"ticker_max_count", "ticker_max_lag",
					     "ticker_idle_period", "low_latency"};
	const char *q[1] = {op->queue};
	PGresult *from, *to;
	size_t used = 0;

	from = ctl_plan_query(nc_db(op, op->old), op->what,
			      "select queue_ticker_max_count::text, queue_ticker_max_lag::text,"
			      " queue_ticker_idle_period::text,"
			      " to_jsonb(q) ->> 'queue_low_latency'"
			      " from pgq.queue q where queue_name = $1",
			      1, q);
	if (!from)
		return -1;
	to = PQntuples(from) == 1 ? ctl_plan_query(nc_db(op, op->nw), op->what,
						   "select to_jsonb(q) ? 'queue_low_latency'"
						   " from pgq.queue q where queue_name = $1",
						   1, q)
				  : NULL;
	if (!to) {
		if (PQntuples(from) != 1)
			ctl_err("%s: no queue %s on %s", op->what, ctl_q(op->queue),
				ctl_q(op->old->name));
		PQclear(from);
		return -1;
	}
	for (int i = 0; i < 4; i++) {
		const char *v = PQgetisnull(from, 0, i) ? NULL : PQgetvalue(from, 0, i);
		const char *c[3] = {op->queue, names[i], v};

		if (!v || (i == 3 && strcmp(PQgetvalue(to, 0, 0), "t") != 0))
			continue;
		if (!ctl_plan_call(nc_db(op, op->nw), op->what,
				   "select pgq.set_queue_config($1, $2, $3)", 3, c, NULL)) {
			PQclear(from);
			PQclear(to);
			return -1;
		}
		used += (size_t)snprintf(out + used, used < len ? len - used : 0, "%s%s %s",
					 used ? ", " : "", names[i], v);
	}
	PQclear(from);
	PQclear(to);
	return 0;
}

static int sw_act_promote(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const char *q[1] = {op->queue};
	char carried[300] = "";

	if (sw_carry_ticker_settings(op, carried, sizeof(carried)) != 0)
		return -1;
	if (!ctl_plan_call(nc_db(op, op->nw), op->what, "select * from pgq_node.promote_branch($1)",
			   1, q, NULL))
		return -1;
	op->t_on = ctl_now_sec();
	if (op->t_off > 0)
		ctl_plan_note(p, "producers write to %s now; writes were off for %.3f s",
			      ctl_q(op->nw->name), op->t_on - op->t_off);
	else
		ctl_plan_note(p, "producers write to %s now", ctl_q(op->nw->name));
	ctl_plan_note_more(p, "ticker settings of %s: %s", ctl_q(op->old->name), carried);
	return 0;
}

static int sw_act_subscribe_old(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState st;
	long long l = sw_final_tick(op);
	char tick[32];
	const char *q[4] = {op->queue, op->old->name, st.worker, tick};

	if (l < 0 || !nc_need_state(op, op->old, &st))
		return -1;
	snprintf(tick, sizeof(tick), "%lld", l);
	if (!ctl_plan_call(nc_db(op, op->nw), op->what,
			   "select * from pgq_node.register_subscriber($1, $2, $3, $4::bigint)", 4,
			   q, NULL))
		return -1;
	ctl_plan_note(p, "at tick %lld", l);
	return 0;
}

static int sw_act_unsub_new(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	return nc_unsubscribe_everywhere(p, op, op->nw, NULL);
}

static int sw_act_resume_new(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	return nc_resume_worker(op, op->nw);
}

static int sw_act_demote(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const char *q[2] = {op->queue, op->nw->name};

	return ctl_plan_call(nc_db(op, op->old), op->what,
			     "select * from pgq_node.demote_root($1, 3, $2)", 2, q, NULL)
		       ? 0
		       : -1;
}

static int sw_act_resume_old(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	return nc_resume_worker(op, op->old);
}

/* Which end states make a step done whatever its own condition says. */
typedef enum SwPast {
	SW_PAST_NONE,     /* only its own condition */
	SW_PAST_DEMOTED,  /* OLD is a branch under NEW */
	SW_PAST_PROMOTED, /* that, or NEW is the root */
} SwPast;

typedef struct SwStep {
	SwPast past;
	int (*done)(CtlPlan *p, NcOp *op, const NcState *os, const NcState *ns);
	CtlStepFn act;
	const char *title; /* {old}, {new} */
} SwStep;

static const SwStep SW_STEPS[] = {
	{SW_PAST_PROMOTED, sw_old_paused, sw_act_pause_old, "pause the worker of {old}"},
	{SW_PAST_PROMOTED, sw_near, sw_act_near,
	 "let {new} catch up with {old} while writes go on"},
	{SW_PAST_DEMOTED, sw_writes_off, sw_act_writes_off,
	 "switch writes off on {old} (demote_root step 1)"},
	{SW_PAST_PROMOTED, sw_final, sw_act_final,
	 "write the final tick of {old} (demote_root step 2)"},
	{SW_PAST_PROMOTED, sw_caught_up, sw_act_caught_up, "wait until {new} has the final tick"},
	{SW_PAST_PROMOTED, sw_new_paused, sw_act_pause_new,
	 "pause the worker of {new} and wait until it acknowledged"},
	{SW_PAST_PROMOTED, sw_never, sw_act_promote, "make {new} the root (promote_branch)"},
	{SW_PAST_DEMOTED, sw_old_subscribed, sw_act_subscribe_old,
	 "subscribe {old} to {new} at the final tick"},
	{SW_PAST_NONE, sw_new_unsubscribed, sw_act_unsub_new,
	 "drop {new}'s subscription on its former provider"},
	{SW_PAST_NONE, sw_new_resumed, sw_act_resume_new, "resume the worker of {new}"},
	{SW_PAST_DEMOTED, sw_never, sw_act_demote,
	 "make {old} a branch reading from {new} (demote_root step 3)"},
	{SW_PAST_NONE, sw_old_resumed, sw_act_resume_old, "resume the worker of {old}"},
};

static int sw_check(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const SwStep *s = &SW_STEPS[n];
	NcState os, ns;
	int rc;

	if (s->past != SW_PAST_NONE && (rc = sw_past(op, s->past == SW_PAST_PROMOTED)) != 0)
		return rc;
	if (!nc_need_state(op, op->old, &os) || !nc_need_state(op, op->nw, &ns))
		return -1;
	return s->done(p, op, &os, &ns);
}

static void sw_json(CtlJson *j, void *arg)
{
	NcOp *op = arg;

	ctl_json_str(j, "cascade", op->queue);
	ctl_json_str(j, "old_root", op->old ? op->old->name : NULL);
	ctl_json_str(j, "new_root", op->nw ? op->nw->name : NULL);
	if (op->final_tick > 0)
		ctl_json_int(j, "final_tick", op->final_tick);
	else
		ctl_json_null(j, "final_tick");
	if (op->t_off > 0 && op->t_on > 0)
		ctl_json_num(j, "write_pause_seconds", op->t_on - op->t_off);
	else
		ctl_json_null(j, "write_pause_seconds");
	ctl_json_num(j, "seconds", ctl_now_sec() - op->t_start);
}

static NcMember *sw_find_old(NcOp *op, bool *nothing)
{
	NcMember *found = NULL, *paused_child = NULL;

	*nothing = false;
	for (int i = 0; i < op->nm; i++) {
		NcMember *m = &op->m[i];
		NcState st;
		int rc;

		if (m == op->nw || m->dead)
			continue;
		rc = nc_read_state(op, m, &st);
		if (rc < 0)
			return NULL;
		if (rc == 0 || !st.node)
			continue;
		if (strcmp(st.type, "root") == 0) {
			if (found) {
				ctl_err("%s: two roots besides %s: %s and %s; give the old one with "
					"--old",
					op->what, ctl_q(op->nw->name), ctl_q(found->name),
					ctl_q(m->name));
				return NULL;
			}
			found = m;
		} else if (strcmp(st.type, "branch") == 0 &&
			   strcmp(st.provider, op->nw->name) == 0 && st.paused) {
			paused_child = m;
		}
	}
	if (found)
		return found;
	if (paused_child)
		return paused_child;
	*nothing = true;
	return NULL;
}

int cmd_node_switchover(CtlCtx *ctx, int argc, char **argv)
{
	NcArgs a = {0};
	const char *old = NULL;
	const CtlOpt opts[] = {
		{"queue", true, &a.queue},     {"cascade", true, &a.cascade},
		{"timeout", true, &a.timeout}, {"dry-run", false, &a.dry_run},
		{"old", true, &old},           {NULL},
	};
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	NcOp op = {.t_start = ctl_now_sec()};
	NcState ns, os;
	CtlPlan *plan = NULL;
	bool nothing, text;

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos != 1)
		return ctl_usage(argv[0], "needs NEW_ROOT (a branch node's name)");
	snprintf(op.what, sizeof(op.what), "switchover to %s", ctl_qq(pos[0]));
	plan = ctl_plan_new(ctx, op.what, CTL_PLAN_SEQUENCE, a.dry_run);
	text = ctl_plan_text(plan);
	if ((rc = nc_setup(ctx, &op, &a, argv[0])))
		goto out;
	rc = CTL_EXIT_ERROR;
	if (!(op.nw = nc_need_member(&op, pos[0], "new root")))
		goto out;
	if (op.nw->dead) {
		ctl_err("%s: node %s is marked dead", op.what, ctl_q(op.nw->name));
		goto out;
	}
	if (!nc_need_state(&op, op.nw, &ns))
		goto out;
	if (strcmp(ns.type, "leaf") == 0) {
		ctl_err("node %s: %s: a leaf has no queue, so it cannot be the root",
			ctl_q(op.nw->name), op.what);
		goto out;
	}
	if (old) {
		if (!(op.old = nc_need_member(&op, old, "old root")))
			goto out;
		if (op.old == op.nw) {
			ctl_err("%s: the old and the new root are the same node", op.what);
			rc = CTL_EXIT_USAGE;
			goto out;
		}
	} else {
		op.old = sw_find_old(&op, &nothing);
		if (!op.old && nothing) {
			if (strcmp(ns.type, "root") == 0) {
				if (text)
					printf("%s: already done: %s is the root\n", op.what,
					       ctl_q(op.nw->name));
				rc = CTL_EXIT_OK;
			} else {
				ctl_err("%s: no live root answers: if it is dead, use pgqctl node "
					"failover --dead ROOT %s",
					op.what, ctl_q(op.nw->name));
			}
			goto out;
		}
		if (!op.old)
			goto out;
	}
	if (!nc_need_state(&op, op.old, &os))
		goto out;
	if (strcmp(os.type, "root") != 0 &&
	    !(strcmp(os.type, "branch") == 0 && strcmp(os.provider, op.nw->name) == 0)) {
		ctl_err("node %s: %s: it is a %s, not the root", ctl_q(op.old->name), op.what,
			os.type);
		goto out;
	}
	if (strcmp(os.type, "root") == 0 && strcmp(ns.type, "branch") == 0) {
		/* NEW must be below OLD */
		int above = nc_is_above(&op, op.nw, op.old);
		if (above < 0)
			goto out;
		if (!above) {
			ctl_err("%s: %s does not read from %s (directly or through others)",
				op.what, ctl_q(op.nw->name), ctl_q(op.old->name));
			goto out;
		}
	}
	if (text)
		printf("switchover of cascade %s: root %s -> %s%s\n", ctl_q(op.queue),
		       ctl_q(op.old->name), ctl_q(op.nw->name), a.dry_run ? " (dry run)" : "");
	for (int i = 0; i < (int)(sizeof(SW_STEPS) / sizeof(SW_STEPS[0])); i++) {
		const char *k[2] = {"old", "new"};
		const char *v[2] = {op.old->name, op.nw->name};
		char title[2 * CTL_NAME_MAX + 200];

		nc_title(title, sizeof(title), SW_STEPS[i].title, 2, k, v);
		ctl_plan_step(plan, NULL, sw_check, SW_STEPS[i].act, &op, i, "%s", title);
	}
	rc = ctl_plan_run(plan);
	if (rc == 0 && !a.dry_run && text) {
		printf("switchover done in %.3f s: %s is the root of cascade %s, %s a branch "
		       "under it\n",
		       ctl_now_sec() - op.t_start, ctl_q(op.nw->name), ctl_q(op.queue),
		       ctl_q(op.old->name));
		if (op.t_off > 0 && op.t_on > 0)
			printf("write pause: %.3f s (inserts on %s refused from step 3; %s takes "
			       "them from step 7)\n",
			       op.t_on - op.t_off, ctl_q(op.old->name), ctl_q(op.nw->name));
		else
			printf("write pause: not measured (this run resumed an earlier one)\n");
		printf("producers: write to %s now\n", ctl_q(op.nw->name));
	}
out:
	ctl_plan_json(plan, "switchover", rc, sw_json, &op);
	ctl_plan_free(plan);
	nc_free(&op);
	return rc;
}
