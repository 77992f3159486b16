/*
 * node failover --dead OLD NEW (PGQ-NODE-SPEC 6.7): a branch takes over from a
 * dead root, or a dead branch's subscribers move to another provider. A step
 * plan (node_plan.c) like switchover's (cmd_node_switch.c); the report says
 * which tick the cascade resumed from and which events existed only on OLD.
 */
#include <stdlib.h>
#include <string.h>

#include "node_cascade.h"

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
			snprintf(skipped + l, sizeof(skipped) - l, "%s%s", l ? ", " : "",
				 ctl_q(m->name));
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
		ctl_plan_note(p, "%s does not answer", ctl_q(op->old->name));
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
	ctl_plan_note(p, "%s answers: its writes are off now", ctl_q(op->old->name));
	return 0;
}

/* A branch's worker makes the tick of a batch after the batch's commit (with
   the provider's tick time). Stopped or restarted between the two while its
   provider is dead, it cannot: the branch then holds the batch's events and
   its position but not the tick. Such a branch stands at its position. */
static long long fo_top_of(const NcState *st)
{
	return strcmp(st->type, "branch") == 0 && st->completed > st->top ? st->completed : st->top;
}

/* The most advanced survivor: the live branch (other than NEW and OLD) with the
   highest tick, counting a tick it owes. NULL when none is ahead of NEW. */
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
		if (fo_top_of(&st) > ns.top && fo_top_of(&st) > *best_top) {
			*best = m;
			*best_top = fo_top_of(&st);
		}
	}
	return 0;
}

/* Does m owe the tick of the batch it applied last (see fo_top_of)? Without a
   survivor to read it from, pgqctl makes it (the same guarded call as the
   worker's, stamped now), so the cascade resumes from the tick applied and
   those events do not count as lost. 1 owed, 0 not, -1 error. */
static int fo_owes_tick(NcOp *op, NcMember *m, NcState *st)
{
	if (!nc_need_state(op, m, st))
		return -1;
	return strcmp(st->type, "branch") == 0 && st->completed > st->top;
}

/* Has m's worker made the owed tick by now? 1 yes (noted in the plan), 0 no,
   -1 error. */
static int fo_worker_made_tick(CtlPlan *p, NcOp *op, NcMember *m, const NcState *owed)
{
	NcState st;

	if (!nc_need_state(op, m, &st))
		return -1;
	if (st.top < owed->completed)
		return 0;
	ctl_plan_note(p, "%s's worker made tick %lld", ctl_q(m->name), owed->completed);
	return 1;
}

static int fo_make_owed_tick(CtlPlan *p, NcOp *op, NcMember *m, const NcState *owed)
{
	char tbl[300], sql[1200], tick[32];
	const char *q[2] = {op->queue, tick};
	CtlDb *db = nc_db(op, m);
	PGresult *r;

	/* a running worker makes it while it waits for its provider: give it 2 s */
	for (int i = 0; i < 100; i++) {
		int made = fo_worker_made_tick(p, op, m, owed);
		if (made != 0)
			return made < 0 ? -1 : 0;
		nc_nap(op->ctx, 20);
	}
	if (!nc_queue_table(op, m, tbl, sizeof(tbl)))
		return -1;
	snprintf(tick, sizeof(tick), "%lld", owed->completed);
	snprintf(sql, sizeof(sql),
		 "with l as (select t.tick_id, t.tick_event_seq, t.tick_snapshot from pgq.tick t"
		 " join pgq.queue q on q.queue_id = t.tick_queue where q.queue_name = $1"
		 " order by t.tick_queue desc, t.tick_id desc limit 1)"
		 " select case when coalesce((select tick_id from l), 0) < $2::int8 then"
		 " pgq.ticker($1, $2::int8, now(), greatest("
		 "(select max(e.ev_id) from %s e, l"
		 " where e.ev_txid >= txid_snapshot_xmin(l.tick_snapshot)),"
		 " (select tick_event_seq from l), 0)) end",
		 tbl);
	/* autocommit, guarded as the worker's: if the worker makes the same tick
	   at the same moment, one of the two fails on the duplicate, and the
	   tick is there either way */
	r = ctl_db_exec(db, sql, 2, q);
	if (!r) {
		int made = fo_worker_made_tick(p, op, m, owed);
		if (made != 0)
			return made < 0 ? -1 : 0;
		ctl_db_fail(db, op->what);
		return -1;
	}
	PQclear(r);
	ctl_plan_note(p,
		      "%s made tick %lld: its worker had applied that batch, and its provider "
		      "died before the tick",
		      ctl_q(m->name), owed->completed);
	return 0;
}

static int fo_chk_catch_up(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcMember *best;
	NcState ns;
	long long bt, nt, g = fo_gravestone(op);
	int owes;

	if (g != 0)
		return g < 0 ? -1 : 1;
	if (fo_best(op, &best, &bt, &nt) < 0 || (owes = fo_owes_tick(op, op->nw, &ns)) < 0)
		return -1;
	if (!best && !owes)
		ctl_plan_note(p, "no survivor is ahead of %s (tick %lld)", ctl_q(op->nw->name), nt);
	return best == NULL && !owes;
}

static int fo_act_catch_up(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	NcMember *best;
	NcState ns;
	long long bt, nt;
	int above, owes;

	if (fo_best(op, &best, &bt, &nt) < 0)
		return -1;
	if (!best) {
		owes = fo_owes_tick(op, op->nw, &ns);
		return owes <= 0 ? owes : fo_make_owed_tick(p, op, op->nw, &ns);
	}
	/* NEW reads up to bt from best: best's own tick of bt first */
	owes = fo_owes_tick(op, best, &ns);
	if (owes < 0 || (owes && fo_make_owed_tick(p, op, best, &ns) != 0))
		return -1;
	above = nc_is_above(op, op->nw, best);
	if (above < 0)
		return -1;
	if (!above && nc_move_worker(op, op->nw, best) != 0)
		return -1;
	if (nc_wait_for_tick(op, op->nw, bt) != 0)
		return -1;
	ctl_plan_note_more(p, "%s got ticks %lld..%lld from %s", ctl_q(op->nw->name), nt, bt,
			   ctl_q(best->name));
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
	NcOp *op = arg;
	return nc_is_root(op, op->nw);
}

static int fo_act_promote(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	const char *q[1] = {op->queue};

	if (!ctl_plan_call(nc_db(op, op->nw), op->what, "select * from pgq_node.promote_branch($1)",
			   1, q, NULL))
		return -1;
	ctl_plan_note(p, "producers write to %s now", ctl_q(op->nw->name));
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
	return nc_unsubscribe_everywhere(p, op, op->nw, op->old);
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

/* The events on OLD's queue that the tick the cascade resumed from does not
   cover: they exist only there. Known only when OLD answers. */
typedef struct FoLost {
	bool known;
	char why[200]; /* when not known */
	long long count, data;
	char first_id[32], last_id[32], first_time[64], last_time[64];
} FoLost;

static void fo_count_lost(NcOp *op, long long resume_tick, FoLost *l)
{
	const char *q[2] = {op->queue, ""};
	char tick[32], sql[1400], tbl[300];
	PGresult *r;
	CtlDb *db = nc_db(op, op->old);

	memset(l, 0, sizeof(*l));
	if (!db) {
		snprintf(l->why, sizeof(l->why), "it does not answer");
		return;
	}
	if (!nc_queue_table(op, op->old, tbl, sizeof(tbl))) {
		snprintf(l->why, sizeof(l->why), "its queue cannot be read");
		return;
	}
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
	if (!r) {
		snprintf(l->why, sizeof(l->why), "its queue cannot be read");
		return;
	}
	if (atoll(PQgetvalue(r, 0, 6)) == 0) {
		snprintf(l->why, sizeof(l->why), "it no longer holds tick %lld", resume_tick);
	} else {
		l->known = true;
		l->count = atoll(PQgetvalue(r, 0, 0));
		l->data = atoll(PQgetvalue(r, 0, 1));
		snprintf(l->first_id, sizeof(l->first_id), "%s", PQgetvalue(r, 0, 2));
		snprintf(l->last_id, sizeof(l->last_id), "%s", PQgetvalue(r, 0, 3));
		snprintf(l->first_time, sizeof(l->first_time), "%s", PQgetvalue(r, 0, 4));
		snprintf(l->last_time, sizeof(l->last_time), "%s", PQgetvalue(r, 0, 5));
	}
	PQclear(r);
}

static void fo_print_lost(NcOp *op, long long resume_tick, const FoLost *l)
{
	const char *old = ctl_q(op->old->name);

	if (!l->known && strcmp(l->why, "it does not answer") == 0)
		printf("events only on %s: not known, it does not answer; they are the events "
		       "committed there after tick %lld. Run this command again when its "
		       "database answers to count them (nothing else is done then)\n",
		       old, resume_tick);
	else if (!l->known)
		printf("events only on %s: not known, %s\n", old, l->why);
	else if (l->count == 0)
		printf("events only on %s: none\n", old);
	else
		printf("events only on %s: %lld (%lld of them data events, not cascade events), "
		       "ev_id %s..%s, ev_time %s .. %s\n",
		       old, l->count, l->data, l->first_id, l->last_id, l->first_time,
		       l->last_time);
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

static int fo_act_pause_new(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	return nc_pause_worker(op, op->nw);
}

static int fo_chk_resume_new(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	return nc_resumed(op, op->nw);
}

static int fo_act_resume_new(CtlPlan *p, void *arg, int n)
{
	NcOp *op = arg;
	return nc_resume_worker(op, op->nw);
}

static void fo_steps(CtlPlan *plan, NcOp *op)
{
	const char *old = op->old->name, *nw = op->nw->name;

	ctl_plan_step(plan, NULL, fo_chk_tag, fo_act_tag, op, 0,
		      "mark %s dead on every live member", ctl_q(old));
	if (op->dead_root) {
		ctl_plan_step(plan, NULL, fo_chk_fence, fo_act_fence, op, 0,
			      "switch writes off on %s if it answers", ctl_q(old));
		ctl_plan_step(plan, NULL, fo_chk_catch_up, fo_act_catch_up, op, 0,
			      "%s catches up with the most advanced survivor", ctl_q(nw));
		ctl_plan_step(plan, NULL, fo_chk_grave, fo_act_grave, op, 0,
			      "record on %s the tick it resumes from (%s.gravestone)", ctl_q(nw),
			      old);
		ctl_plan_step(plan, NULL, fo_chk_pause_new, fo_act_pause_new, op, 0,
			      "pause the worker of %s and wait until it acknowledged", ctl_q(nw));
		ctl_plan_step(plan, NULL, fo_chk_promote, fo_act_promote, op, 0,
			      "make %s the root (promote_branch)", ctl_q(nw));
		ctl_plan_step(plan, NULL, fo_chk_unsub_new, fo_act_unsub_new, op, 0,
			      "drop %s's subscription on its former provider", ctl_q(nw));
		ctl_plan_step(plan, NULL, fo_chk_resume_new, fo_act_resume_new, op, 0,
			      "resume the worker of %s", ctl_q(nw));
	}
	for (int i = 0; i < op->nsubs; i++)
		ctl_plan_step(plan, NULL, fo_chk_move, fo_act_move, op, i, "move %s under %s",
			      ctl_q(op->subs[i]->name), ctl_q(nw));
}

typedef struct FoJson {
	NcOp *op;
	FoLost *lost;
} FoJson;

static void fo_json(CtlJson *j, void *arg)
{
	FoJson *f = arg;
	NcOp *op = f->op;
	FoLost *l = f->lost;

	ctl_json_str(j, "cascade", op->queue);
	ctl_json_str(j, "dead_node", op->old ? op->old->name : NULL);
	ctl_json_str(j, "new_node", op->nw ? op->nw->name : NULL);
	ctl_json_bool(j, "dead_root", op->dead_root);
	if (op->resume_tick > 0)
		ctl_json_int(j, "resume_tick", op->resume_tick);
	else
		ctl_json_null(j, "resume_tick");
	ctl_json_obj_begin(j, "lost_events");
	ctl_json_bool(j, "known", l->known);
	if (l->known) {
		ctl_json_int(j, "count", l->count);
		ctl_json_int(j, "data_events", l->data);
		if (l->count) {
			ctl_json_int(j, "first_ev_id", atoll(l->first_id));
			ctl_json_int(j, "last_ev_id", atoll(l->last_id));
		} else {
			ctl_json_null(j, "first_ev_id");
			ctl_json_null(j, "last_ev_id");
		}
		ctl_json_str(j, "first_ev_time", l->count ? l->first_time : NULL);
		ctl_json_str(j, "last_ev_time", l->count ? l->last_time : NULL);
	} else {
		ctl_json_null(j, "count");
		ctl_json_str(j, "reason", l->why[0] ? l->why : "the plan did not finish");
	}
	ctl_json_obj_end(j);
	ctl_json_num(j, "seconds", ctl_now_sec() - op->t_start);
}

/* A dead-root failover resumes from L, the most any queue-holding survivor has.
   A subscriber of OLD past L (a leaf that applied ticks no branch copied) would,
   moved under NEW at its own tick, skip NEW's first ticks after the takeover,
   whose ids repeat OLD's with other events. Refused before anything changes. */
/* s as an SQL string literal, for a hint the operator pastes */
static const char *sql_lit(char *buf, size_t len, const char *s)
{
	size_t k = 0;

	buf[k++] = '\'';
	for (; *s && k + 3 < len; s++) {
		if (*s == '\'')
			buf[k++] = '\'';
		buf[k++] = *s;
	}
	buf[k++] = '\'';
	buf[k] = '\0';
	return buf;
}

static int fo_check_ahead(NcOp *op)
{
	char ql[2 * NC_NAME_LEN + 4], wl[2 * NC_NAME_LEN + 4];
	NcMember *best;
	long long bt, nt, g = fo_gravestone(op), resume;

	if (g < 0)
		return -1;
	if (g > 0) {
		resume = g;
	} else {
		NcState ns;
		int owes;

		if (fo_best(op, &best, &bt, &nt) < 0 || (owes = fo_owes_tick(op, op->nw, &ns)) < 0)
			return -1;
		resume = best ? bt : owes ? ns.completed : nt;
	}
	for (int i = 0; i < op->nsubs; i++) {
		NcState st;

		if (!nc_need_state(op, op->subs[i], &st))
			return -1;
		if (st.completed <= resume)
			continue;
		ctl_err("%s: node %s has applied ticks up to %lld from %s, past tick %lld, the "
			"most any surviving branch holds (%s resumes from there). Moved under %s, "
			"it would skip %s's own ticks %lld..%lld after the takeover; its events "
			"after tick %lld exist only on %s and what %s applied. Nothing was "
			"changed. If those may stay applied, move its position back first: on %s, "
			"with its worker paused, select pgq_node.set_consumer_completed(%s, %s, "
			"%lld); then run this again",
			op->what, ctl_q(op->subs[i]->name), st.completed, ctl_q(op->old->name),
			resume, ctl_q(op->nw->name), ctl_q(op->nw->name), ctl_q(op->nw->name),
			resume + 1, st.completed, resume, ctl_q(op->old->name),
			ctl_q(op->subs[i]->name), ctl_q(op->subs[i]->name),
			sql_lit(ql, sizeof(ql), op->queue), sql_lit(wl, sizeof(wl), st.worker),
			resume);
		return 1;
	}
	return 0;
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
	CtlPlan *plan = NULL;
	FoLost lost = {0};
	FoJson fj = {&op, &lost};
	bool text;

	op.t_start = ctl_now_sec();

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (!dead || npos != 1)
		return ctl_usage(argv[0], "needs --dead OLD NEW");
	snprintf(op.what, sizeof(op.what), "failover from %s to %s", ctl_qq(dead), ctl_qq(pos[0]));
	plan = ctl_plan_new(ctx, op.what, CTL_PLAN_SEQUENCE, a.dry_run);
	text = ctl_plan_text(plan);
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
		ctl_err("node %s: %s: a leaf has no queue, so it cannot take over",
			ctl_q(op.nw->name), op.what);
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
			fprintf(stderr, "pgqctl: warning: node %s does not answer: %s\n",
				ctl_q(m->name), ctl_db_error(m->db));
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
					op.what, ctl_q(op.nw->name), ctl_q(m->name),
					ctl_q(op.old->name), ctl_q(m->name), ctl_q(op.nw->name),
					ctl_q(op.old->name));
				goto out;
			}
		}
		op.subs[op.nsubs++] = m;
	}
	if (!op.dead_root && strcmp(ns.provider, op.old->name) == 0) {
		ctl_err("%s: %s itself reads from %s: for a dead branch, name a node that does "
			"not (or first run this for %s's subscribers with another NEW)",
			op.what, ctl_q(op.nw->name), ctl_q(op.old->name), ctl_q(op.nw->name));
		goto out;
	}
	if (op.dead_root && fo_check_ahead(&op) != 0)
		goto out;
	if (text)
		printf("failover of cascade %s: dead %s %s, %s%s%s\n", ctl_q(op.queue),
		       op.dead_root ? "root" : "branch", ctl_q(op.old->name),
		       op.dead_root ? "new root " : "its subscribers move to ", ctl_q(op.nw->name),
		       a.dry_run ? " (dry run)" : "");
	fo_steps(plan, &op);
	rc = ctl_plan_run(plan);
	if (rc != 0 || a.dry_run)
		goto out;
	if (op.dead_root) {
		long long g = fo_gravestone(&op);
		if (g > 0) {
			op.resume_tick = g;
			fo_count_lost(&op, g, &lost);
		}
	} else {
		lost.known = true; /* a branch holds copies only */
	}
	if (!text)
		goto out;
	printf("failover done in %.3f s\n", ctl_now_sec() - op.t_start);
	if (op.dead_root) {
		if (op.resume_tick > 0) {
			printf("%s is the root of cascade %s; it resumed from tick %lld (the last "
			       "tick any survivor had from %s)\n",
			       ctl_q(op.nw->name), ctl_q(op.queue), op.resume_tick,
			       ctl_q(op.old->name));
			fo_print_lost(&op, op.resume_tick, &lost);
		}
		printf("producers: write to %s now\n", ctl_q(op.nw->name));
	} else {
		printf("events only on %s: none (a branch holds copies only); its subscribers "
		       "continue from their own last ticks\n",
		       ctl_q(op.old->name));
	}
	printf("when %s will not come back: pgqctl node drop-node %s (its registrations pin "
	       "event rotation until then)\n",
	       ctl_q(op.old->name), ctl_q(op.old->name));
out:
	ctl_plan_json(plan, "failover", rc, fo_json, &fj);
	ctl_plan_free(plan);
	nc_free(&op);
	return rc;
}
