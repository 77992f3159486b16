/*
 * Cascade members for pgqctl's role changes; see node_cascade.h.
 *
 * The member map comes from the node given with -d. Members are reached at
 * their node_location; a member marked dead is only contacted where the
 * operation needs it (a failover's fence and lost-event count).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>

#include "node_cascade.h"

static const char STATE_SQL[] =
	"select n.node_type, n.node_name, n.worker_name, ls.provider_node,"
	" coalesce(ls.paused, false), coalesce(ls.uptodate, false), ls.last_tick_id,"
	" (select t.tick_id from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue"
	"   where q.queue_name = $1 order by t.tick_queue desc, t.tick_id desc limit 1),"
	" (select q.queue_disable_insert from pgq.queue q where q.queue_name = $1)"
	" from pgq_node.get_node_info($1) n"
	" left join pgq_node.local_state ls on ls.queue_name = $1"
	"  and ls.consumer_name = n.worker_name";

/* ---- members ---- */

void nc_free(NcOp *op)
{
	for (int i = 0; i < op->nm; i++) {
		ctl_db_close(op->m[i].db);
		free(op->m[i].name);
		free(op->m[i].location);
	}
	ctl_db_close(op->local);
}

NcMember *nc_find(NcOp *op, const char *name)
{
	for (int i = 0; i < op->nm; i++)
		if (strcmp(op->m[i].name, name) == 0)
			return &op->m[i];
	return NULL;
}

static int load_members(NcOp *op)
{
	const char *p[1] = {op->queue};
	PGresult *r = ctl_db_exec(op->local, "select to_regproc('pgq_node.get_node_info') is null",
				  0, NULL);

	if (!r)
		return ctl_db_fail(op->local, op->what);
	if (ctl_val(r, 0, 0) && ctl_val(r, 0, 0)[0] == 't') {
		PQclear(r);
		ctl_err("%s: %s: no pgq_node schema in this database", ctl_db_label(op->local),
			op->what);
		return CTL_EXIT_ERROR;
	}
	PQclear(r);
	r = ctl_plan_query(op->local, op->what,
			   "select node_name, node_location, dead"
			   " from pgq_node.get_queue_locations($1) order by 1",
			   1, p);
	if (!r)
		return CTL_EXIT_ERROR;
	if (PQntuples(r) == 0) {
		ctl_err("%s: %s: this database knows no member of cascade %s",
			ctl_db_label(op->local), op->what, ctl_qq(op->queue));
		PQclear(r);
		return CTL_EXIT_ERROR;
	}
	for (int i = 0; i < PQntuples(r) && op->nm < NC_MAX_MEMBERS; i++) {
		NcMember *m = &op->m[op->nm++];
		m->name = strdup(PQgetvalue(r, i, 0));
		m->location = strdup(PQgetvalue(r, i, 1));
		m->dead = PQgetvalue(r, i, 2)[0] == 't';
	}
	PQclear(r);
	return 0;
}

/* Members the -d node does not know yet (location events still on their way)
   are taken from the other members' maps. */
static void merge_members(NcOp *op)
{
	const char *p[1] = {op->queue};

	for (int i = 0; i < op->nm; i++) {
		NcMember *m = &op->m[i];
		CtlDb *db;
		PGresult *r;

		if (m->dead || !(db = nc_db(op, m)))
			continue;
		r = ctl_db_exec(db,
				"select node_name, node_location, dead"
				" from pgq_node.get_queue_locations($1) order by 1",
				1, p);
		for (int k = 0; r && k < PQntuples(r) && op->nm < NC_MAX_MEMBERS; k++) {
			NcMember *n;
			if (nc_find(op, PQgetvalue(r, k, 0)))
				continue;
			n = &op->m[op->nm++];
			n->name = strdup(PQgetvalue(r, k, 0));
			n->location = strdup(PQgetvalue(r, k, 1));
			n->dead = PQgetvalue(r, k, 2)[0] == 't';
		}
		PQclear(r);
	}
}

/* The member's connection, or NULL when it does not answer (why: ctl_db_error). */
CtlDb *nc_db(NcOp *op, NcMember *m)
{
	if (!m->tried) {
		m->tried = true;
		m->db = ctl_plan_open(op->ctx, m->name, m->location);
		m->up = ctl_db_connect(m->db);
	}
	return m->up ? m->db : NULL;
}

bool nc_reachable(NcOp *op, NcMember *m)
{
	return nc_db(op, m) != NULL;
}

long long nc_cell_ll(const PGresult *r, int row, int col)
{
	const char *v = ctl_val(r, row, col);
	return v ? atoll(v) : -1;
}

static void cell_cpy(char *dst, const PGresult *r, int row, int col)
{
	const char *v = ctl_val(r, row, col);
	snprintf(dst, NC_NAME_LEN, "%s", v ? v : "");
}

/* 1 read, 0 the member does not answer, -1 error (printed). */
int nc_read_state(NcOp *op, NcMember *m, NcState *st)
{
	const char *p[1] = {op->queue};
	CtlDb *db = nc_db(op, m);
	PGresult *r;

	memset(st, 0, sizeof(*st));
	st->completed = st->top = -1;
	if (!db)
		return 0;
	r = ctl_plan_query(db, op->what, STATE_SQL, 1, p);
	if (!r)
		return -1;
	if (PQntuples(r) == 1 && ctl_val(r, 0, 0)) {
		st->node = true;
		snprintf(st->type, sizeof(st->type), "%s", ctl_val(r, 0, 0));
		cell_cpy(st->name, r, 0, 1);
		cell_cpy(st->worker, r, 0, 2);
		cell_cpy(st->provider, r, 0, 3);
		st->paused = ctl_val(r, 0, 4)[0] == 't';
		st->uptodate = ctl_val(r, 0, 5)[0] == 't';
		st->completed = nc_cell_ll(r, 0, 6);
		st->top = nc_cell_ll(r, 0, 7);
		st->writes_off = ctl_val(r, 0, 8) && ctl_val(r, 0, 8)[0] == 't';
	}
	PQclear(r);
	return 1;
}

/* nc_read_state that needs the member and its node: false (printed) otherwise. */
bool nc_need_state(NcOp *op, NcMember *m, NcState *st)
{
	int rc = nc_read_state(op, m, st);

	if (rc < 0)
		return false;
	if (rc == 0) {
		ctl_err("node %s: %s: does not answer: %s", ctl_q(m->name), op->what,
			ctl_db_error(m->db));
		return false;
	}
	if (!st->node) {
		ctl_err("node %s: %s: the database holds no node of cascade %s", ctl_q(m->name),
			op->what, ctl_qq(op->queue));
		return false;
	}
	return true;
}

int nc_cons_state(NcOp *op, NcMember *m, const char *consumer, NcCons *cs)
{
	const char *p[2] = {op->queue, consumer};
	CtlDb *db = nc_db(op, m);
	PGresult *r;

	memset(cs, 0, sizeof(*cs));
	cs->completed = -1;
	if (!db) {
		ctl_err("node %s: %s: does not answer: %s", ctl_q(m->name), op->what,
			ctl_db_error(m->db));
		return -1;
	}
	r = ctl_plan_query(
		db, op->what,
		"select provider_node, last_tick_id, paused, uptodate"
		" from pgq_node.local_state where queue_name = $1 and consumer_name = $2",
		2, p);
	if (!r)
		return -1;
	if (PQntuples(r) == 1) {
		cs->found = true;
		cell_cpy(cs->provider, r, 0, 0);
		cs->completed = nc_cell_ll(r, 0, 1);
		cs->paused = PQgetvalue(r, 0, 2)[0] == 't';
		cs->uptodate = PQgetvalue(r, 0, 3)[0] == 't';
	}
	PQclear(r);
	return 1;
}

/* Sleep `ms` on the loop (Ctrl-C ends the command). */
void nc_nap(CtlCtx *ctx, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	event_base_loopexit(ctx->base, &tv);
	event_base_dispatch(ctx->base);
	if (ctl_signalled) {
		ctl_err("interrupted; run the same command again to continue");
		exit(128 + ctl_signalled);
	}
}

static bool timed_out(NcOp *op, double start)
{
	return ctl_now_sec() - start > (double)op->timeout / (double)USEC_PER_SEC;
}

/* A worker idles until its provider ticks or its poll period ends; a notification
   on the provider's tick channel makes it read its state now (pgq_ev only; on
   other PgQ versions this does nothing and the worker sees it at its next poll). */
static void wake_worker(NcOp *op, const char *provider)
{
	NcMember *p = provider[0] ? nc_find(op, provider) : NULL;
	const char *q[1] = {op->queue};
	CtlDb *db;
	PGresult *r;

	if (!p || p->dead || !(db = nc_db(op, p)))
		return;
	r = ctl_db_exec(db,
			"select pg_notify(pgq.queue_notify_channel($1), '')"
			" where to_regproc('pgq.queue_notify_channel') is not null",
			1, q);
	PQclear(r);
}

/* Pause a consumer on member m and wait until it acknowledged (uptodate). */
int nc_pause(NcOp *op, NcMember *m, const char *consumer, bool wait)
{
	const char *p[2] = {op->queue, consumer};
	NcCons cs;
	double start = ctl_now_sec();

	if (!ctl_plan_call(nc_db(op, m), op->what,
			   "select * from pgq_node.set_consumer_paused($1, $2, true)", 2, p, NULL))
		return -1;
	if (!wait)
		return 0;
	for (;;) {
		if (nc_cons_state(op, m, consumer, &cs) < 0)
			return -1;
		if (!cs.found) {
			ctl_err("node %s: %s: consumer %s is gone", ctl_q(m->name), op->what,
				ctl_q(consumer));
			return -1;
		}
		if (cs.paused && cs.uptodate)
			return 0;
		if (!cs.paused) {
			ctl_err("node %s: %s: consumer %s was resumed by someone else",
				ctl_q(m->name), op->what, ctl_q(consumer));
			return -1;
		}
		if (timed_out(op, start)) {
			ctl_err("node %s: %s: consumer %s did not acknowledge the pause within "
				"%.0f s: is it running (a [node] section of pgqd-ev, or the "
				"program that embeds it)?",
				ctl_q(m->name), op->what, ctl_q(consumer),
				(double)op->timeout / USEC_PER_SEC);
			return -1;
		}
		wake_worker(op, cs.provider);
		nc_nap(op->ctx, 50);
	}
}

int nc_resume(NcOp *op, NcMember *m, const char *consumer)
{
	const char *p[2] = {op->queue, consumer};

	return ctl_plan_call(nc_db(op, m), op->what,
			     "select * from pgq_node.set_consumer_paused($1, $2, false)", 2, p,
			     NULL)
		       ? 0
		       : -1;
}

long long nc_number(NcOp *op, NcMember *m, const char *sql, int n, const char *const *p)
{
	CtlDb *db = nc_db(op, m);
	PGresult *r;
	long long v;

	if (!db) {
		ctl_err("node %s: %s: does not answer: %s", ctl_q(m->name), op->what,
			ctl_db_error(m->db));
		return -1;
	}
	r = ctl_plan_query(db, op->what, sql, n, p);
	if (!r)
		return -1;
	v = PQntuples(r) != 1 ? 0 : PQgetvalue(r, 0, 0)[0] == 't' ? 1 : atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

/* Is `name` subscribed on member m (a row in its subscriber_info)? -1 error. */
int nc_has_subscriber(NcOp *op, NcMember *m, const char *name)
{
	const char *p[2] = {op->queue, name};
	long long n = nc_number(op, m,
				"select count(*) from pgq_node.get_subscriber_info($1)"
				" where node_name = $2",
				2, p);

	return n < 0 ? -1 : n > 0;
}

bool nc_queue_table(NcOp *op, NcMember *m, char *tbl, size_t len)
{
	const char *q[1] = {op->queue};
	PGresult *r = ctl_plan_query(nc_db(op, m), op->what,
				     "select pgq.quote_fqname(queue_data_pfx) from pgq.queue"
				     " where queue_name = $1",
				     1, q);

	if (!r)
		return false;
	if (PQntuples(r) != 1) {
		PQclear(r);
		ctl_err("node %s: %s: no queue %s", ctl_q(m->name), op->what, ctl_q(op->queue));
		return false;
	}
	snprintf(tbl, len, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return true;
}

int nc_resumed(NcOp *op, NcMember *m)
{
	NcState st;

	if (!nc_need_state(op, m, &st))
		return -1;
	return !st.paused;
}

int nc_resume_worker(NcOp *op, NcMember *m)
{
	NcState st;

	if (!nc_need_state(op, m, &st))
		return -1;
	return nc_resume(op, m, st.worker);
}

int nc_pause_worker(NcOp *op, NcMember *m)
{
	NcState st;

	if (!nc_need_state(op, m, &st))
		return -1;
	return nc_pause(op, m, st.worker, true);
}

int nc_is_root(NcOp *op, NcMember *m)
{
	NcState st;

	if (!nc_need_state(op, m, &st))
		return -1;
	return strcmp(st.type, "root") == 0;
}

int nc_unsubscribe_everywhere(CtlPlan *p, NcOp *op, NcMember *who, const NcMember *except)
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
		ctl_plan_note(p, "on %s", ctl_q(f[i]->name));
	}
	return 0;
}

int nc_queues_holding(NcOp *op, const NcMember *except1, const NcMember *except2,
		      int (*holds)(NcOp *op, NcMember *m, const char *name), const char *name,
		      NcMember **out)
{
	int n = 0;

	for (int i = 0; i < op->nm; i++) {
		NcMember *m = &op->m[i];
		NcState st;
		int rc;

		if (m == except1 || m == except2 || m->dead)
			continue;
		rc = nc_read_state(op, m, &st);
		if (rc < 0)
			return -1;
		if (rc == 0 || !st.node || strcmp(st.type, "leaf") == 0)
			continue;
		rc = holds(op, m, name);
		if (rc < 0)
			return -1;
		if (rc)
			out[n++] = m;
	}
	return n;
}

/* Members other than `except1`/`except2` that answer and list `name` as subscriber
   (dead ones are not asked). Fills out[]; returns the count or -1. */
int nc_subscribed_on(NcOp *op, const char *name, const NcMember *except1, const NcMember *except2,
		     NcMember **out)
{
	return nc_queues_holding(op, except1, except2, nc_has_subscriber, name, out);
}

/* Wait until member m's queue holds tick `tick` and its worker completed it. */
int nc_wait_for_tick(NcOp *op, NcMember *m, long long tick)
{
	double start = ctl_now_sec();
	NcState st;

	for (;;) {
		if (!nc_need_state(op, m, &st))
			return -1;
		if (st.top >= tick && (strcmp(st.type, "root") == 0 || st.completed >= tick))
			return 0;
		if (timed_out(op, start)) {
			ctl_err("node %s: %s: still at tick %lld after %.0f s, waiting for tick "
				"%lld: is its worker running?",
				ctl_q(m->name), op->what, st.top,
				(double)op->timeout / USEC_PER_SEC, tick);
			return -1;
		}
		nc_nap(op->ctx, 20);
	}
}

/* Is `anc` on the provider path above m (m's provider, its provider, ...)? */
int nc_is_above(NcOp *op, NcMember *m, const NcMember *anc)
{
	NcMember *cur = m;

	for (int hop = 0; hop < NC_MAX_MEMBERS; hop++) {
		NcState st;
		int rc = nc_read_state(op, cur, &st);
		NcMember *next;

		if (rc < 0)
			return -1;
		if (rc == 0 || !st.node || strcmp(st.type, "root") == 0 || !st.provider[0])
			return 0;
		next = nc_find(op, st.provider);
		if (!next || next == cur)
			return 0;
		if (next == anc)
			return 1;
		if (next->dead)
			return 0;
		cur = next;
	}
	return 0;
}

/* ---- moving one node's worker (change-provider, failover) ---- */

/* Register node s on member `to` at s's completed tick, then point s's worker
   there. `to` must hold that tick: it is waited for. */
int nc_move_worker(NcOp *op, NcMember *s, NcMember *to)
{
	NcState ss, ts;
	int rc;

	if (!nc_need_state(op, s, &ss) || !nc_need_state(op, to, &ts))
		return -1;
	if (strcmp(ss.provider, to->name) == 0)
		return 0;
	if (ss.completed < 0) {
		ctl_err("node %s: %s: its worker has no position", ctl_q(s->name), op->what);
		return -1;
	}
	rc = nc_has_subscriber(op, to, s->name);
	if (rc < 0)
		return -1;
	if (!rc) {
		char tick[32];
		const char *p[4] = {op->queue, s->name, ss.worker, tick};
		const char *l[3] = {op->queue, s->name, s->location};

		if (ts.top < ss.completed && nc_wait_for_tick(op, to, ss.completed) != 0)
			return -1;
		snprintf(tick, sizeof(tick), "%lld", ss.completed);
		if (!ctl_plan_call(
			    nc_db(op, to), op->what,
			    "select * from pgq_node.register_location($1, $2, $3, false)"
			    " where not exists (select 1 from pgq_node.get_queue_locations($1)"
			    " where node_name = $2)",
			    3, l, NULL) ||
		    !ctl_plan_call(
			    nc_db(op, to), op->what,
			    "select * from pgq_node.register_subscriber($1, $2, $3, $4::bigint)", 4,
			    p, NULL))
			return -1;
	}
	{
		const char *p[3] = {op->queue, ss.worker, to->name};
		if (!ctl_plan_call(nc_db(op, s), op->what,
				   "select * from pgq_node.change_consumer_provider($1, $2, $3)", 3,
				   p, NULL))
			return -1;
	}
	return 0;
}

/* ---- common option parsing ---- */

int nc_setup(CtlCtx *ctx, NcOp *op, NcArgs *a, const char *cmd)
{
	int rc;

	if (a->queue && a->cascade && strcmp(a->queue, a->cascade) != 0)
		return ctl_usage(cmd, "--queue and --cascade name different queues");
	op->ctx = ctx;
	op->queue = a->queue ? a->queue : a->cascade;
	if (!op->queue)
		return ctl_usage(cmd, "needs --cascade QUEUE");
	if (!ctl_check_new_name("queue", op->queue))
		return CTL_EXIT_USAGE;
	op->timeout = 60 * USEC_PER_SEC;
	if (a->timeout) {
		long long v;
		if (!ctl_parse_i64("--timeout", a->timeout, 1, 86400, &v))
			return CTL_EXIT_USAGE;
		op->timeout = (usec_t)v * USEC_PER_SEC;
	}
	if ((rc = ctl_open_single(ctx, &op->local)))
		return rc;
	if ((rc = load_members(op)))
		return rc;
	merge_members(op);
	return 0;
}

NcMember *nc_need_member(NcOp *op, const char *name, const char *role)
{
	NcMember *m = nc_find(op, name);

	if (!m)
		ctl_err("%s: %s: no member %s in cascade %s (see pgqctl node members)",
			ctl_db_label(op->local), op->what, ctl_qq(name), ctl_qq(op->queue));
	(void)role;
	return m;
}

void nc_title(char *buf, size_t len, const char *tpl, int n, const char *const *keys,
	      const char *const *vals)
{
	size_t o = 0;

	buf[0] = '\0';
	for (const char *t = tpl; *t && o + 1 < len;) {
		const char *end = *t == '{' ? strchr(t, '}') : NULL;
		int k = -1;

		for (int i = 0; end && i < n && k < 0; i++)
			if ((size_t)(end - t - 1) == strlen(keys[i]) &&
			    strncmp(t + 1, keys[i], strlen(keys[i])) == 0)
				k = i;
		if (k >= 0) {
			o += (size_t)snprintf(buf + o, len - o, "%s", ctl_q(vals[k]));
			t = end + 1;
		} else {
			buf[o++] = *t++;
			buf[o] = '\0';
		}
	}
	if (o >= len)
		buf[len - 1] = '\0';
}
