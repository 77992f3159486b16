/*
 * Moving roles in a cascade: node change-provider, node switchover NEW_ROOT
 * and node failover --dead OLD NEW (PGQ-NODE-SPEC 6.3, 6.5, 6.7), each a step
 * plan (node_plan.c) whose checks read the members' databases (node_cascade.c),
 * so a run that stopped anywhere is finished by running the same command again.
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
		ctl_err("node %s: %s: no consumer %s in pgq_node.local_state", op->node->name,
			op->what, op->consumer);
		return -1;
	}
	return 0;
}

static int cp_chk_pause(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcCons cs;

	if (cp_state(op, &cs) < 0)
		return -1;
	return strcmp(cs.provider, op->prov->name) == 0 || (cs.paused && cs.uptodate);
}

static int cp_act_pause(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	return nc_pause(op, op->node, op->consumer, true);
}

static int cp_chk_location(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const char *q[2] = {op->queue, op->node->name};
	PGresult *r = ctl_plan_query(nc_db(op, op->prov), op->what,
				     "select count(*) from pgq_node.get_queue_locations($1)"
				     " where node_name = $2",
				     2, q);
	int has;

	if (!r)
		return -1;
	has = atoi(PQgetvalue(r, 0, 0)) > 0;
	PQclear(r);
	return has;
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

static int plain_registered(NcOp *op, NcMember *m)
{
	const char *q[2] = {op->queue, op->consumer};
	PGresult *r = ctl_plan_query(nc_db(op, m), op->what,
				     "select count(*) from pgq.get_consumer_info($1)"
				     " where consumer_name = $2",
				     2, q);
	int has;

	if (!r)
		return -1;
	has = atoi(PQgetvalue(r, 0, 0)) > 0;
	PQclear(r);
	return has;
}

static int cp_chk_register(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcCons cs;

	if (cp_state(op, &cs) < 0)
		return -1;
	if (strcmp(cs.provider, op->prov->name) == 0)
		return 1;
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

static int cp_chk_change(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcCons cs;

	if (cp_state(op, &cs) < 0)
		return -1;
	return strcmp(cs.provider, op->prov->name) == 0;
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

static int cp_chk_resume(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcCons cs;

	if (cp_state(op, &cs) < 0)
		return -1;
	return !cs.paused;
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
	int k = 0;

	if (!op->plain)
		return nc_subscribed_on(op, op->node->name, op->prov, op->node, out);
	for (int i = 0; i < op->nm; i++) {
		NcMember *m = &op->m[i];
		NcState st;
		int rc;

		if (m == op->prov || m == op->node || m->dead)
			continue;
		rc = nc_read_state(op, m, &st);
		if (rc < 0)
			return -1;
		if (rc == 0 || !st.node || strcmp(st.type, "leaf") == 0)
			continue;
		rc = plain_registered(op, m);
		if (rc < 0)
			return -1;
		if (rc)
			out[k++] = m;
	}
	return k;
}

static int cp_chk_drop(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
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
	for (int i = 0; i < k; i++) {
		if (op->plain) {
			const char *q[2] = {op->queue, op->consumer};
			PGresult *r =
				ctl_plan_query(nc_db(op, f[i]), op->what,
					       "select pgq.unregister_consumer($1, $2)", 2, q);
			if (!r)
				return -1;
			PQclear(r);
		} else {
			const char *q[2] = {op->queue, op->node->name};
			if (!ctl_plan_call(nc_db(op, f[i]), op->what,
					   "select * from pgq_node.unregister_subscriber($1, $2)",
					   2, q, NULL))
				return -1;
		}
		ctl_plan_note(p, "on %s", f[i]->name);
	}
	return 0;
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
	CtlPlan *plan;

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos > 0)
		return ctl_usage(argv[0], "unexpected argument \"%s\"", pos[0]);
	if (!provider)
		return ctl_usage(argv[0], "needs --provider NODE");
	if (node && consumer)
		return ctl_usage(argv[0], "give --node or --consumer, not both");
	snprintf(op.what, sizeof(op.what), "change provider to \"%s\"", provider);
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
			ctl_err("%s: %s: no node of cascade \"%s\" here", ctl_db_label(op.local),
				op.what, op.queue);
			PQclear(r);
			goto out;
		}
		op.node = nc_find(&op, ctl_val(r, 0, 0));
		PQclear(r);
	} else {
		op.node = nc_need_member(&op, node, "node");
	}
	op.prov = nc_need_member(&op, provider, "provider");
	if (!op.node || !op.prov)
		goto out;
	if (op.node == op.prov) {
		ctl_err("%s: node %s cannot be its own provider", op.what, op.node->name);
		rc = CTL_EXIT_USAGE;
		goto out;
	}
	if (op.prov->dead) {
		ctl_err("%s: node %s is marked dead", op.what, op.prov->name);
		goto out;
	}
	if (!nc_need_state(&op, op.node, &st) || !nc_need_state(&op, op.prov, &ps))
		goto out;
	if (strcmp(ps.type, "leaf") == 0) {
		ctl_err("node %s: %s: a leaf has no queue, so it cannot be a provider",
			op.prov->name, op.what);
		goto out;
	}
	op.plain = consumer != NULL;
	snprintf(op.worker, sizeof(op.worker), "%s", st.worker);
	op.consumer = consumer ? consumer : op.worker;
	if (!op.plain && strcmp(st.type, "root") == 0) {
		ctl_err("node %s: %s: the root has no provider (see pgqctl node switchover)",
			op.node->name, op.what);
		goto out;
	}
	if (!op.plain) {
		int above = nc_is_above(&op, op.prov, op.node);
		if (above < 0)
			goto out;
		if (above) {
			ctl_err("%s: node %s reads (through others) from %s: that would make a "
				"loop",
				op.what, op.prov->name, op.node->name);
			goto out;
		}
	}
	plan = ctl_plan_new(ctx, a.dry_run);
	if (!ctx->quiet)
		printf("change provider of %s %s on node %s to %s%s\n",
		       op.plain ? "consumer" : "worker", op.consumer, op.node->name, op.prov->name,
		       a.dry_run ? " (dry run)" : "");
	ctl_plan_step(plan, cp_chk_pause, cp_act_pause, &op, 0,
		      "pause %s on %s and wait until it acknowledged", op.consumer, op.node->name);
	ctl_plan_step(plan, cp_chk_location, cp_act_location, &op, 0,
		      "%s learns the location of %s", op.prov->name, op.node->name);
	ctl_plan_step(plan, cp_chk_register, cp_act_register, &op, 0,
		      "register %s on %s at its last tick", op.consumer, op.prov->name);
	ctl_plan_step(plan, cp_chk_change, cp_act_change, &op, 0, "point %s on %s to %s",
		      op.consumer, op.node->name, op.prov->name);
	ctl_plan_step(plan, cp_chk_resume, cp_act_resume, &op, 0, "resume %s on %s", op.consumer,
		      op.node->name);
	ctl_plan_step(plan, cp_chk_drop, cp_act_drop, &op, 0,
		      "drop its registration on the former provider");
	rc = ctl_plan_run(plan);
	ctl_plan_free(plan);
out:
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

static int sw_promoted(NcOp *op)
{
	NcState st;

	if (!nc_need_state(op, op->nw, &st))
		return -1;
	return strcmp(st.type, "root") == 0;
}

/* Both "OLD demoted" or "NEW promoted" make the early steps done. */
static int sw_past(NcOp *op, bool promoted_counts)
{
	int rc = sw_demoted(op);

	if (rc != 0 || !promoted_counts)
		return rc;
	return sw_promoted(op);
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

	r = ctl_plan_query(db, op->what,
			   "select pgq.quote_fqname(queue_data_pfx) from pgq.queue"
			   " where queue_name = $1",
			   1, q);
	if (!r)
		return -1;
	if (PQntuples(r) != 1) {
		PQclear(r);
		ctl_err("node %s: %s: no queue %s", m->name, op->what, op->queue);
		return -1;
	}
	snprintf(tbl, sizeof(tbl), "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
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

static int sw_chk_pause_old(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState st;
	int rc = sw_past(op, true);

	if (rc != 0)
		return rc;
	if (!nc_need_state(op, op->old, &st))
		return -1;
	return st.paused;
}

static int sw_act_pause_old(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState st;

	if (!nc_need_state(op, op->old, &st))
		return -1;
	/* the root's worker only publishes watermarks: no need to wait for it */
	return nc_pause(op, op->old, st.worker, false);
}

/* Before writes go off, NEW catches up with what OLD has now: the write pause
   then only covers the last ticks, not NEW's whole lag. */
static int sw_chk_near(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState os, ns;
	int rc = sw_past(op, true);

	if (rc != 0)
		return rc;
	if (!nc_need_state(op, op->old, &os) || !nc_need_state(op, op->nw, &ns))
		return -1;
	return os.writes_off || (ns.top >= os.top && ns.completed >= os.top);
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

static int sw_chk_writes_off(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState st;
	int rc = sw_past(op, false);

	if (rc != 0)
		return rc;
	if (!nc_need_state(op, op->old, &st))
		return -1;
	return st.writes_off;
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
		      op->old->name);
	return 0;
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
			op->old->name, op->what);
		return -1;
	}
	return st.top;
}

static int sw_chk_final(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState st;
	int rc = sw_past(op, true);

	if (rc != 0)
		return rc;
	if (!nc_need_state(op, op->old, &st))
		return -1;
	if (!st.writes_off)
		return 0;
	rc = all_below_last_tick(op, op->old);
	if (rc == 1) {
		op->final_tick = st.top;
		ctl_plan_note(p, "final tick %lld", st.top);
	}
	return rc;
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

static int sw_chk_caught_up(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState st;
	long long l;
	int rc = sw_past(op, true);

	if (rc != 0)
		return rc;
	if ((l = sw_final_tick(op)) < 0 || !nc_need_state(op, op->nw, &st))
		return -1;
	return st.top >= l && st.completed >= l;
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

static int sw_chk_pause_new(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState st;
	int rc = sw_past(op, true);

	if (rc != 0)
		return rc;
	if (!nc_need_state(op, op->nw, &st))
		return -1;
	return st.paused && st.uptodate;
}

static int sw_act_pause_new(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState st;

	if (!nc_need_state(op, op->nw, &st))
		return -1;
	return nc_pause(op, op->nw, st.worker, true);
}

static int sw_chk_promote(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	int rc = sw_past(op, true);
	return rc;
}

static int sw_act_promote(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const char *q[1] = {op->queue};

	if (!ctl_plan_call(nc_db(op, op->nw), op->what, "select * from pgq_node.promote_branch($1)",
			   1, q, NULL))
		return -1;
	op->t_on = ctl_now_sec();
	if (op->t_off > 0)
		ctl_plan_note(p, "producers write to %s now; writes were off for %.3f s",
			      op->nw->name, op->t_on - op->t_off);
	else
		ctl_plan_note(p, "producers write to %s now", op->nw->name);
	return 0;
}

static int sw_chk_subscribe_old(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	int rc = sw_demoted(op);

	if (rc != 0)
		return rc;
	return nc_has_subscriber(op, op->nw, op->old->name);
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

static int sw_chk_unsub_new(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcMember *f[NC_MAX_MEMBERS];
	int k = nc_subscribed_on(op, op->nw->name, op->nw, NULL, f);

	return k < 0 ? -1 : k == 0;
}

static int unsub_everywhere(CtlPlan *p, NcOp *op, NcMember *who, const NcMember *except)
{
	NcMember *f[NC_MAX_MEMBERS];
	const char *q[2] = {op->queue, who->name};
	int k = nc_subscribed_on(op, who->name, who, except, f);

	if (k < 0)
		return -1;
	for (int i = 0; i < k; i++) {
		if (!ctl_plan_call(nc_db(op, f[i]), op->what,
				   "select * from pgq_node.unregister_subscriber($1, $2)", 2, q,
				   NULL))
			return -1;
		ctl_plan_note(p, "on %s", f[i]->name);
	}
	return 0;
}

static int sw_act_unsub_new(CtlPlan *p, void *arg, int n)
{
	return unsub_everywhere(p, arg, ((NcOp *)arg)->nw, NULL);
}

static int chk_resumed(NcOp *op, NcMember *m)
{
	NcState st;

	if (!nc_need_state(op, m, &st))
		return -1;
	return !st.paused;
}

static int act_resume(NcOp *op, NcMember *m)
{
	NcState st;

	if (!nc_need_state(op, m, &st))
		return -1;
	return nc_resume(op, m, st.worker);
}

static int sw_chk_resume_new(CtlPlan *p, void *arg, int n)
{
	return chk_resumed(arg, ((NcOp *)arg)->nw);
}

static int sw_act_resume_new(CtlPlan *p, void *arg, int n)
{
	return act_resume(arg, ((NcOp *)arg)->nw);
}

static int sw_chk_demote(CtlPlan *p, void *arg, int n)
{
	return sw_demoted(arg);
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

static int sw_chk_resume_old(CtlPlan *p, void *arg, int n)
{
	return chk_resumed(arg, ((NcOp *)arg)->old);
}

static int sw_act_resume_old(CtlPlan *p, void *arg, int n)
{
	return act_resume(arg, ((NcOp *)arg)->old);
}

/* Which node is the old root: the other root, or (after a run that got as far
   as demoting it) a paused branch under NEW. NULL when there is nothing to do
   or no answer (printed). */
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
					op->what, op->nw->name, found->name, m->name);
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
	NcOp op = {0};
	NcState ns, os;
	CtlPlan *plan;
	bool nothing;
	double t0 = ctl_now_sec();

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos != 1)
		return ctl_usage(argv[0], "needs NEW_ROOT (a branch node's name)");
	snprintf(op.what, sizeof(op.what), "switchover to \"%s\"", pos[0]);
	if ((rc = nc_setup(ctx, &op, &a, argv[0])))
		goto out;
	rc = CTL_EXIT_ERROR;
	if (!(op.nw = nc_need_member(&op, pos[0], "new root")))
		goto out;
	if (op.nw->dead) {
		ctl_err("%s: node %s is marked dead", op.what, op.nw->name);
		goto out;
	}
	if (!nc_need_state(&op, op.nw, &ns))
		goto out;
	if (strcmp(ns.type, "leaf") == 0) {
		ctl_err("node %s: %s: a leaf has no queue, so it cannot be the root", op.nw->name,
			op.what);
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
				if (!ctx->quiet)
					printf("%s: already done: %s is the root\n", op.what,
					       op.nw->name);
				rc = CTL_EXIT_OK;
			} else {
				ctl_err("%s: no live root answers: if it is dead, use pgqctl node "
					"failover --dead ROOT %s",
					op.what, op.nw->name);
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
		ctl_err("node %s: %s: it is a %s, not the root", op.old->name, op.what, os.type);
		goto out;
	}
	if (strcmp(os.type, "root") == 0 && strcmp(ns.type, "branch") == 0) {
		/* NEW must be below OLD */
		int above = nc_is_above(&op, op.nw, op.old);
		if (above < 0)
			goto out;
		if (!above) {
			ctl_err("%s: %s does not read from %s (directly or through others)",
				op.what, op.nw->name, op.old->name);
			goto out;
		}
	}
	if (!ctx->quiet)
		printf("switchover of cascade %s: root %s -> %s%s\n", op.queue, op.old->name,
		       op.nw->name, a.dry_run ? " (dry run)" : "");
	plan = ctl_plan_new(ctx, a.dry_run);
	ctl_plan_step(plan, sw_chk_pause_old, sw_act_pause_old, &op, 0, "pause the worker of %s",
		      op.old->name);
	ctl_plan_step(plan, sw_chk_near, sw_act_near, &op, 0,
		      "let %s catch up with %s while writes go on", op.nw->name, op.old->name);
	ctl_plan_step(plan, sw_chk_writes_off, sw_act_writes_off, &op, 0,
		      "switch writes off on %s (demote_root step 1)", op.old->name);
	ctl_plan_step(plan, sw_chk_final, sw_act_final, &op, 0,
		      "write the final tick of %s (demote_root step 2)", op.old->name);
	ctl_plan_step(plan, sw_chk_caught_up, sw_act_caught_up, &op, 0,
		      "wait until %s has the final tick", op.nw->name);
	ctl_plan_step(plan, sw_chk_pause_new, sw_act_pause_new, &op, 0,
		      "pause the worker of %s and wait until it acknowledged", op.nw->name);
	ctl_plan_step(plan, sw_chk_promote, sw_act_promote, &op, 0,
		      "make %s the root (promote_branch)", op.nw->name);
	ctl_plan_step(plan, sw_chk_subscribe_old, sw_act_subscribe_old, &op, 0,
		      "subscribe %s to %s at the final tick", op.old->name, op.nw->name);
	ctl_plan_step(plan, sw_chk_unsub_new, sw_act_unsub_new, &op, 0,
		      "drop %s's subscription on its former provider", op.nw->name);
	ctl_plan_step(plan, sw_chk_resume_new, sw_act_resume_new, &op, 0, "resume the worker of %s",
		      op.nw->name);
	ctl_plan_step(plan, sw_chk_demote, sw_act_demote, &op, 0,
		      "make %s a branch reading from %s (demote_root step 3)", op.old->name,
		      op.nw->name);
	ctl_plan_step(plan, sw_chk_resume_old, sw_act_resume_old, &op, 0, "resume the worker of %s",
		      op.old->name);
	rc = ctl_plan_run(plan);
	ctl_plan_free(plan);
	if (rc == 0 && !a.dry_run && !ctx->quiet) {
		printf("switchover done in %.3f s: %s is the root of cascade %s, %s a branch "
		       "under it\n",
		       ctl_now_sec() - t0, op.nw->name, op.queue, op.old->name);
		if (op.t_off > 0 && op.t_on > 0)
			printf("write pause: %.3f s (inserts on %s refused from step 3; %s takes "
			       "them from step 7)\n",
			       op.t_on - op.t_off, op.old->name, op.nw->name);
		else
			printf("write pause: not measured (this run resumed an earlier one)\n");
		printf("producers: write to %s now\n", op.nw->name);
	}
out:
	nc_free(&op);
	return rc;
}

/* ======================= failover ======================= */

static const char GRAVE_SQL[] = "select last_tick from pgq.get_consumer_info($1)"
				" where consumer_name = $2 || '.gravestone'";

/* NEW's gravestone for OLD: the tick the cascade resumed from; 0 none, -1 error. */
static long long fo_gravestone(NcOp *op)
{
	const char *q[2] = {op->queue, op->old->name};
	PGresult *r = ctl_plan_query(nc_db(op, op->nw), op->what, GRAVE_SQL, 2, q);
	long long t;

	if (!r)
		return -1;
	t = PQntuples(r) ? nc_cell_ll(r, 0, 0) : 0;
	PQclear(r);
	return t;
}

static int fo_chk_tag(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const char *q[2] = {op->queue, op->old->name};

	for (int i = 0; i < op->nm; i++) {
		NcMember *m = &op->m[i];
		PGresult *r;
		bool dead;

		if (m == op->old || m->dead || !nc_reachable(op, m))
			continue;
		r = ctl_plan_query(nc_db(op, m), op->what,
				   "select coalesce(bool_and(dead), false)"
				   " from pgq_node.get_queue_locations($1) where node_name = $2",
				   2, q);
		if (!r)
			return -1;
		dead = PQgetvalue(r, 0, 0)[0] == 't';
		PQclear(r);
		if (!dead)
			return 0;
	}
	return 1;
}

static int fo_act_tag(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const char *q[2] = {op->queue, op->old->name};
	char skipped[512] = "";

	for (int i = 0; i < op->nm; i++) {
		NcMember *m = &op->m[i];

		if (m == op->old || m->dead)
			continue;
		if (!nc_reachable(op, m)) {
			size_t l = strlen(skipped);
			snprintf(skipped + l, sizeof(skipped) - l, "%s%s", l ? ", " : "", m->name);
			continue;
		}
		if (!ctl_plan_call(nc_db(op, m), op->what,
				   "select * from pgq_node.register_location($1, $2, null, true)",
				   2, q, NULL))
			return -1;
	}
	if (skipped[0])
		ctl_plan_note(p, "not reached: %s; tag it there later (pgqctl node tag-dead)",
			      skipped);
	return 0;
}

/* The fence: if OLD answers after all, its writes go off so that nothing more
   is written where no one will read it. */
static int fo_chk_fence(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState st;
	int rc = nc_read_state(op, op->old, &st);

	if (rc < 0)
		return -1;
	if (rc == 0) {
		ctl_plan_note(p, "%s does not answer", op->old->name);
		return 1;
	}
	return !st.node || strcmp(st.type, "root") != 0 || st.writes_off;
}

static int fo_act_fence(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const char *q[1] = {op->queue};

	if (!ctl_plan_call(nc_db(op, op->old), op->what,
			   "select * from pgq_node.demote_root($1, 1, null)", 1, q, NULL))
		return -1;
	ctl_plan_note(p, "%s answers: its writes are off now", op->old->name);
	return 0;
}

/* The most advanced survivor: the live branch (other than NEW and OLD) with the
   highest tick. NULL when none is ahead of NEW. */
static int fo_best(NcOp *op, NcMember **best, long long *best_top, long long *new_top)
{
	NcState ns;

	*best = NULL;
	*best_top = -1;
	if (!nc_need_state(op, op->nw, &ns))
		return -1;
	*new_top = ns.top;
	for (int i = 0; i < op->nm; i++) {
		NcMember *m = &op->m[i];
		NcState st;
		int rc;

		if (m == op->old || m == op->nw || m->dead)
			continue;
		rc = nc_read_state(op, m, &st);
		if (rc < 0)
			return -1;
		if (rc == 0 || !st.node || strcmp(st.type, "branch") != 0)
			continue;
		if (st.top > ns.top && st.top > *best_top) {
			*best = m;
			*best_top = st.top;
		}
	}
	return 0;
}

static int fo_chk_catch_up(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcMember *best;
	long long bt, nt, g = fo_gravestone(op);

	if (g != 0)
		return g < 0 ? -1 : 1;
	if (fo_best(op, &best, &bt, &nt) < 0)
		return -1;
	if (!best)
		ctl_plan_note(p, "no survivor is ahead of %s (tick %lld)", op->nw->name, nt);
	return best == NULL;
}

static int fo_act_catch_up(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcMember *best;
	long long bt, nt;
	int above;

	if (fo_best(op, &best, &bt, &nt) < 0)
		return -1;
	if (!best)
		return 0;
	above = nc_is_above(op, op->nw, best);
	if (above < 0)
		return -1;
	if (!above && nc_move_worker(op, op->nw, best) != 0)
		return -1;
	if (nc_wait_for_tick(op, op->nw, bt) != 0)
		return -1;
	ctl_plan_note(p, "%s got ticks %lld..%lld from %s", op->nw->name, nt, bt, best->name);
	return 0;
}

static int fo_chk_grave(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	long long g = fo_gravestone(op);

	if (g > 0)
		ctl_plan_note(p, "at tick %lld", g);
	return g < 0 ? -1 : g > 0;
}

static int fo_act_grave(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState ns;
	char tick[32], grave[NC_NAME_LEN + 16];
	const char *q[4] = {op->queue, op->old->name, grave, tick};
	int rc;

	if (!nc_need_state(op, op->nw, &ns))
		return -1;
	snprintf(tick, sizeof(tick), "%lld", ns.top);
	snprintf(grave, sizeof(grave), "%s.gravestone", op->old->name);
	/* a subscription of OLD left from before (NEW was its provider) goes first */
	rc = nc_has_subscriber(op, op->nw, op->old->name);
	if (rc < 0)
		return -1;
	if (rc &&
	    !ctl_plan_call(nc_db(op, op->nw), op->what,
			   "select * from pgq_node.unregister_subscriber($1, $2)", 2, q, NULL))
		return -1;
	if (!ctl_plan_call(nc_db(op, op->nw), op->what,
			   "select * from pgq_node.register_subscriber($1, $2, $3, $4::bigint)", 4,
			   q, NULL))
		return -1;
	ctl_plan_note(p, "at tick %lld", ns.top);
	return 0;
}

static int fo_chk_pause_new(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState st;

	if (!nc_need_state(op, op->nw, &st))
		return -1;
	return strcmp(st.type, "root") == 0 || (st.paused && st.uptodate);
}

static int fo_chk_promote(CtlPlan *p, void *arg, int n)
{
	return sw_promoted(arg);
}

static int fo_act_promote(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const char *q[1] = {op->queue};

	if (!ctl_plan_call(nc_db(op, op->nw), op->what, "select * from pgq_node.promote_branch($1)",
			   1, q, NULL))
		return -1;
	ctl_plan_note(p, "producers write to %s now", op->nw->name);
	return 0;
}

static int fo_chk_unsub_new(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcMember *f[NC_MAX_MEMBERS];
	int k = nc_subscribed_on(op, op->nw->name, op->nw, op->old, f);

	return k < 0 ? -1 : k == 0;
}

static int fo_act_unsub_new(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	return unsub_everywhere(p, op, op->nw, op->old);
}

static int fo_chk_move(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState st;

	if (!nc_need_state(op, op->subs[n], &st))
		return -1;
	return strcmp(st.provider, op->nw->name) == 0;
}

static int fo_act_move(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcState st;

	if (nc_move_worker(op, op->subs[n], op->nw) != 0 || !nc_need_state(op, op->subs[n], &st))
		return -1;
	ctl_plan_note(p, "from its tick %lld", st.completed);
	return 0;
}

/* Events on OLD's queue that the tick the cascade resumed from does not cover:
   they exist only there. Printed when OLD answers; otherwise says why not. */
static void fo_report_lost(NcOp *op, long long resume_tick)
{
	const char *q[2] = {op->queue, ""};
	char tick[32], sql[1400], tbl[300];
	PGresult *r;
	CtlDb *db = nc_db(op, op->old);

	if (!db) {
		printf("events only on %s: not known, it does not answer; they are the events "
		       "committed there after tick %lld. Run this command again when its "
		       "database answers to count them (nothing else is done then)\n",
		       op->old->name, resume_tick);
		return;
	}
	r = ctl_plan_query(db, op->what,
			   "select pgq.quote_fqname(queue_data_pfx) from pgq.queue"
			   " where queue_name = $1",
			   1, q);
	if (!r || PQntuples(r) != 1) {
		PQclear(r);
		printf("events only on %s: not known, its queue cannot be read\n", op->old->name);
		return;
	}
	snprintf(tbl, sizeof(tbl), "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	snprintf(tick, sizeof(tick), "%lld", resume_tick);
	q[1] = tick;
	snprintf(sql, sizeof(sql),
		 "with t as (select t.tick_snapshot s from pgq.tick t join pgq.queue q"
		 " on q.queue_id = t.tick_queue where q.queue_name = $1 and t.tick_id = $2::bigint)"
		 " select count(*), count(*) filter (where e.ev_type not like 'pgq.%%'),"
		 " min(e.ev_id), max(e.ev_id), min(e.ev_time)::text, max(e.ev_time)::text,"
		 " (select count(*) from t)"
		 " from %s e, t where e.ev_txid >= txid_snapshot_xmin(t.s)"
		 " and not txid_visible_in_snapshot(e.ev_txid, t.s)",
		 tbl);
	r = ctl_plan_query(db, op->what, sql, 2, q);
	if (!r)
		return;
	if (atoll(PQgetvalue(r, 0, 6)) == 0) {
		printf("events only on %s: not known, it no longer holds tick %lld\n",
		       op->old->name, resume_tick);
	} else if (atoll(PQgetvalue(r, 0, 0)) == 0) {
		printf("events only on %s: none\n", op->old->name);
	} else {
		printf("events only on %s: %s (%s of them data events, not cascade events), "
		       "ev_id %s..%s, ev_time %s .. %s\n",
		       op->old->name, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2),
		       PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4), PQgetvalue(r, 0, 5));
	}
	PQclear(r);
}

/* Was OLD the root? If it answers, it says; else the survivors tell: no other
   live root, or NEW already holds OLD's gravestone. */
static int fo_dead_root(NcOp *op)
{
	NcState st;
	int rc = nc_read_state(op, op->old, &st), roots = 0;

	if (rc < 0)
		return -1;
	if (rc == 1 && st.node)
		return strcmp(st.type, "root") == 0;
	for (int i = 0; i < op->nm; i++) {
		NcMember *m = &op->m[i];

		if (m == op->old || m->dead)
			continue;
		rc = nc_read_state(op, m, &st);
		if (rc < 0)
			return -1;
		if (rc == 1 && st.node && strcmp(st.type, "root") == 0 && m != op->nw)
			roots++;
	}
	if (roots > 0)
		return 0;
	{
		long long g = fo_gravestone(op);
		NcState ns;
		if (g < 0 || !nc_need_state(op, op->nw, &ns))
			return -1;
		return strcmp(ns.type, "root") != 0 || g > 0;
	}
}

int cmd_node_failover(CtlCtx *ctx, int argc, char **argv)
{
	NcArgs a = {0};
	const char *dead = NULL;
	const CtlOpt opts[] = {
		{"queue", true, &a.queue},     {"cascade", true, &a.cascade},
		{"timeout", true, &a.timeout}, {"dry-run", false, &a.dry_run},
		{"dead", true, &dead},         {NULL},
	};
	char *pos[CTL_MAX_ARGS];
	int npos, rc, dr;
	NcOp op = {0};
	NcState ns;
	CtlPlan *plan;
	double t0 = ctl_now_sec();

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (!dead || npos != 1)
		return ctl_usage(argv[0], "needs --dead OLD NEW");
	snprintf(op.what, sizeof(op.what), "failover from \"%s\" to \"%s\"", dead, pos[0]);
	if ((rc = nc_setup(ctx, &op, &a, argv[0])))
		goto out;
	rc = CTL_EXIT_ERROR;
	if (!(op.old = nc_need_member(&op, dead, "dead node")) ||
	    !(op.nw = nc_need_member(&op, pos[0], "new provider")))
		goto out;
	if (op.old == op.nw) {
		ctl_err("%s: the dead node and the new one are the same", op.what);
		rc = CTL_EXIT_USAGE;
		goto out;
	}
	if (!nc_need_state(&op, op.nw, &ns))
		goto out;
	if (strcmp(ns.type, "leaf") == 0) {
		ctl_err("node %s: %s: a leaf has no queue, so it cannot take over", op.nw->name,
			op.what);
		goto out;
	}
	if ((dr = fo_dead_root(&op)) < 0)
		goto out;
	op.dead_root = dr == 1;
	/* OLD's live subscribers: members whose worker reads from OLD */
	for (int i = 0; i < op.nm; i++) {
		NcMember *m = &op.m[i];
		NcState st;
		int r2;

		if (m == op.old || m == op.nw || m->dead)
			continue;
		r2 = nc_read_state(&op, m, &st);
		if (r2 < 0)
			goto out;
		if (r2 == 0) {
			fprintf(stderr, "pgqctl: warning: node %s does not answer: %s\n", m->name,
				ctl_db_error(m->db));
			continue;
		}
		if (!st.node || strcmp(st.provider, op.old->name) != 0)
			continue;
		if (!op.dead_root) {
			int above = nc_is_above(&op, op.nw, m);
			if (above < 0)
				goto out;
			if (above) {
				ctl_err("%s: %s reads from %s, a subscriber of %s: moving %s under "
					"%s would make a loop; pick a node outside %s's subtree",
					op.what, op.nw->name, m->name, op.old->name, m->name,
					op.nw->name, op.old->name);
				goto out;
			}
		}
		op.subs[op.nsubs++] = m;
	}
	if (!op.dead_root && strcmp(ns.provider, op.old->name) == 0) {
		ctl_err("%s: %s itself reads from %s: for a dead branch, name a node that does "
			"not (or first run this for %s's subscribers with another NEW)",
			op.what, op.nw->name, op.old->name, op.nw->name);
		goto out;
	}
	if (!ctx->quiet)
		printf("failover of cascade %s: dead %s %s, %s%s%s\n", op.queue,
		       op.dead_root ? "root" : "branch", op.old->name,
		       op.dead_root ? "new root " : "its subscribers move to ", op.nw->name,
		       a.dry_run ? " (dry run)" : "");
	plan = ctl_plan_new(ctx, a.dry_run);
	ctl_plan_step(plan, fo_chk_tag, fo_act_tag, &op, 0, "mark %s dead on every live member",
		      op.old->name);
	if (op.dead_root) {
		ctl_plan_step(plan, fo_chk_fence, fo_act_fence, &op, 0,
			      "switch writes off on %s if it answers", op.old->name);
		ctl_plan_step(plan, fo_chk_catch_up, fo_act_catch_up, &op, 0,
			      "%s catches up with the most advanced survivor", op.nw->name);
		ctl_plan_step(plan, fo_chk_grave, fo_act_grave, &op, 0,
			      "record on %s the tick it resumes from (%s.gravestone)", op.nw->name,
			      op.old->name);
		ctl_plan_step(plan, fo_chk_pause_new, sw_act_pause_new, &op, 0,
			      "pause the worker of %s and wait until it acknowledged", op.nw->name);
		ctl_plan_step(plan, fo_chk_promote, fo_act_promote, &op, 0,
			      "make %s the root (promote_branch)", op.nw->name);
		ctl_plan_step(plan, fo_chk_unsub_new, fo_act_unsub_new, &op, 0,
			      "drop %s's subscription on its former provider", op.nw->name);
		ctl_plan_step(plan, sw_chk_resume_new, sw_act_resume_new, &op, 0,
			      "resume the worker of %s", op.nw->name);
	}
	for (int i = 0; i < op.nsubs; i++)
		ctl_plan_step(plan, fo_chk_move, fo_act_move, &op, i, "move %s under %s",
			      op.subs[i]->name, op.nw->name);
	rc = ctl_plan_run(plan);
	ctl_plan_free(plan);
	if (rc != 0 || a.dry_run || ctx->quiet)
		goto out;
	printf("failover done in %.3f s\n", ctl_now_sec() - t0);
	if (op.dead_root) {
		long long g = fo_gravestone(&op);
		if (g > 0) {
			printf("%s is the root of cascade %s; it resumed from tick %lld (the last "
			       "tick any survivor had from %s)\n",
			       op.nw->name, op.queue, g, op.old->name);
			fo_report_lost(&op, g);
		}
		printf("producers: write to %s now\n", op.nw->name);
	} else {
		printf("events only on %s: none (a branch holds copies only); its subscribers "
		       "continue from their own last ticks\n",
		       op.old->name);
	}
	printf("when %s will not come back: pgqctl node drop-node %s (its registrations pin "
	       "event rotation until then)\n",
	       op.old->name, op.old->name);
out:
	nc_free(&op);
	return rc;
}
