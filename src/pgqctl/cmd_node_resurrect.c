/*
 * node resurrect (PGQ-NODE-SPEC 6.10): an old root that came back after a
 * dead-root failover becomes a paused branch of the node that holds its
 * gravestone (the PgQ consumer "<node>.gravestone", registered at the tick G
 * where the cascade left it). The events the old root committed after G never
 * reached any other node: they are read batch by batch, written to a JSON file
 * and reported, then removed with their ticks, so the branch can take the new
 * root's ticks G+1... without a clash.
 *
 * Steps, each skipped when already done (a re-run finishes an interrupted one):
 *   1. old root: stop writes (demote_root step 1)
 *   2. old root: final tick, demote to branch of the gravestone node, pause
 *      its worker (demote_root steps 2 and 3, one transaction)
 *   3. unregister its old subscribers   4. unregister its plain PgQ consumers
 *   5. the lost events (ticks > G): to the file, then deleted with the ticks
 *   6. its worker's position := G
 *   7. gravestone node: the gravestone is replaced by a subscription of the
 *      worker at G (one transaction)
 *   8. its global watermark from the gravestone node
 *   9. tag it alive on every live member
 * Once step 7 is done, steps 1-6 count as done whatever the tables say, since
 * the branch's worker may already have copied new ticks past G.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgqctl.h"

#define MAX_LIST 20

typedef struct Res {
	CtlCtx *ctx;
	const char *queue, *file;
	CtlDb *db; /* the old root (-d) */
	char what[CTL_NAME_MAX + 64];
	char *name, *type, *worker;
	CtlMember *m;
	size_t nm;
	/* the gravestone node */
	const CtlMember *gm;
	CtlDb *gdb;
	long long g;    /* gravestone tick; -1 when only the finished state was found */
	bool done7;     /* the gravestone node already has the worker subscribed */
	char *gnode_wm; /* its global watermark (text) */
	bool dry;
	char gs[32];    /* g as text */
	CtlDb **mdb;    /* step 9: a connection per member, opened by its check */
	long long lost; /* step 5 done now: the events removed; -1 not known */
	long long lost_first, lost_last;
	char lost_ids[400];
} Res;

static char *val_dup(const PGresult *r, int row, int col)
{
	const char *v = ctl_val(r, row, col);
	char *d;

	if (!v)
		return NULL;
	d = strdup(v);
	if (!d)
		abort();
	return d;
}

/* Find the member that holds "<self>.gravestone" (or, after step 7, the
   subscription of our worker). */
static bool find_gravestone(Res *s)
{
	static const char sql[] = "select (select s.sub_last_tick from pgq.subscription s"
				  "   join pgq.consumer c on c.co_id = s.sub_consumer"
				  "   join pgq.queue q on q.queue_id = s.sub_queue"
				  "   where q.queue_name = $1 and c.co_name = $2),"
				  " (select count(*) from pgq_node.get_subscriber_info($1)"
				  "   where node_name = $3 and worker_name = $4),"
				  " (select global_watermark from pgq_node.get_node_info($1))";
	char grave[CTL_NAME_MAX + 16];
	int found = 0;

	snprintf(grave, sizeof(grave), "%s.gravestone", s->name);
	for (size_t i = 0; i < s->nm; i++) {
		const CtlMember *x = &s->m[i];
		const char *p[4] = {s->queue, grave, s->name, s->worker};
		CtlDb *db;
		PGresult *r;

		if (x->dead || strcmp(x->name, s->name) == 0)
			continue;
		db = ctl_node_open_member(s->ctx, x);
		if (!ctl_db_connect(db)) {
			if (!s->ctx->quiet && !s->ctx->json)
				printf("node %s: unreachable (%s): not searched\n", ctl_q(x->name),
				       ctl_db_error(db));
			ctl_db_close(db);
			continue;
		}
		r = ctl_db_exec(db, sql, 4, p);
		if (!r || PQntuples(r) != 1 ||
		    (PQgetisnull(r, 0, 0) && atoi(PQgetvalue(r, 0, 1)) == 0)) {
			/* a leaf has no queue: the first subquery fails there, fine */
			PQclear(r);
			ctl_db_close(db);
			continue;
		}
		if (++found > 1) {
			ctl_err("%s: both %s and %s hold the gravestone of %s: resolve that by "
				"hand",
				s->what, ctl_qq(s->gm->name), ctl_qq(x->name), ctl_qq(s->name));
			PQclear(r);
			ctl_db_close(db);
			return false;
		}
		s->gm = x;
		s->gdb = db;
		s->g = PQgetisnull(r, 0, 0) ? -1 : atoll(PQgetvalue(r, 0, 0));
		s->done7 = atoi(PQgetvalue(r, 0, 1)) > 0;
		s->gnode_wm = val_dup(r, 0, 2);
		PQclear(r);
	}
	if (!found) {
		ctl_err("%s: no live member holds the consumer %s: this node was not left "
			"behind by a dead-root failover, or the node that took over is unreachable",
			s->what, ctl_qq(grave));
		return false;
	}
	return true;
}

static bool bool_query(Res *s, CtlDb *db, const char *sql, int n, const char *const *p, bool *v)
{
	PGresult *r = ctl_db_exec(db, sql, n, p);

	if (!r) {
		ctl_db_fail(db, s->what);
		return false;
	}
	*v = PQntuples(r) > 0 && PQgetvalue(r, 0, 0)[0] == 't';
	PQclear(r);
	return true;
}

/* The report file: it names the cascade, node and tick, so a re-run may
   overwrite its own but never another operation's report. */
static char *file_head(Res *s)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		abort();
	fputs("{\"cascade\": ", f);
	ctl_json_escape(f, s->queue);
	fputs(", \"node\": ", f);
	ctl_json_escape(f, s->name);
	fprintf(f, ", \"gravestone_tick\": %lld,", s->g);
	if (fclose(f) != 0)
		abort();
	return buf;
}

static bool file_is_ours_or_absent(Res *s)
{
	char *head, *line = NULL;
	size_t cap = 0;
	FILE *f = fopen(s->file, "r");
	bool ours;

	if (!f)
		return errno == ENOENT;
	head = file_head(s);
	ours = getline(&line, &cap, f) > 0 && strncmp(line, head, strlen(head)) == 0;
	free(line);
	free(head);
	fclose(f);
	if (!ours)
		ctl_err("%s: %s exists and is not this resurrect's report: move it away or give "
			"--lost-events FILE",
			s->what, s->file);
	return ours;
}

/* Read the batches after G with a temporary consumer, write them out, then
   delete those events and the ticks after G in one transaction. */
static bool lost_events(Res *s, CtlPlan *pl)
{
	char dumper[CTL_NAME_MAX + 16], tmp[1100], *head, detail[CTL_NAME_MAX + 1600],
		ids[400] = "";
	const char *p[3];
	PGresult *r = NULL, *pfx;
	FILE *f;
	long long count = 0, first_tick = -1, last_tick = -1, listed = 0;
	char gs[32];
	/* ids and txids of the events, as array literals */
	size_t cap = 4096, len_id = 1, len_tx = 1;
	char *arr_id = malloc(cap), *arr_tx = malloc(cap);
	bool ok = false, first = true, in_txn = false;

	if (!arr_id || !arr_tx)
		abort();
	strcpy(arr_id, "{");
	strcpy(arr_tx, "{");
	snprintf(dumper, sizeof(dumper), "%s.dumper", s->name);
	snprintf(gs, sizeof(gs), "%lld", s->g);
	snprintf(tmp, sizeof(tmp), "%s.tmp", s->file);
	p[0] = s->queue;
	p[1] = dumper;
	p[2] = gs;
	r = ctl_db_exec(s->db, "select pgq.register_consumer_at($1, $2, $3::int8)", 3, p);
	if (!r) {
		ctl_db_fail(s->db, s->what);
		goto out;
	}
	PQclear(r);
	r = NULL;
	f = fopen(tmp, "w");
	if (!f) {
		ctl_err("%s: cannot write %s: %s", s->what, tmp, strerror(errno));
		goto out;
	}
	head = file_head(s);
	fprintf(f, "%s\n \"events\": [", head);
	free(head);
	for (;;) {
		const char *bp[2] = {s->queue, dumper};
		char bid[32];
		const char *ep[1] = {bid};
		PGresult *b = ctl_db_exec(s->db,
					  "select batch_id, prev_tick_id, cur_tick_id"
					  " from pgq.next_batch_info($1, $2)",
					  2, bp);
		PGresult *ev;
		if (!b) {
			ctl_db_fail(s->db, s->what);
			fclose(f);
			goto out;
		}
		if (PQgetisnull(b, 0, 0)) {
			PQclear(b);
			break;
		}
		snprintf(bid, sizeof(bid), "%s", PQgetvalue(b, 0, 0));
		if (first_tick < 0)
			first_tick = atoll(PQgetvalue(b, 0, 1)) + 1;
		last_tick = atoll(PQgetvalue(b, 0, 2));
		ev = ctl_db_exec(s->db,
				 "select ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data,"
				 " ev_extra1, ev_extra2, ev_extra3, ev_extra4"
				 " from pgq.get_batch_events($1::int8) order by ev_id",
				 1, ep);
		if (!ev) {
			ctl_db_fail(s->db, s->what);
			PQclear(b);
			fclose(f);
			goto out;
		}
		for (int i = 0; i < PQntuples(ev); i++) {
			CtlJson j;
			size_t need =
				strlen(PQgetvalue(ev, i, 0)) + strlen(PQgetvalue(ev, i, 2)) + 4;
			fputs(first ? "\n  " : ",\n  ", f);
			first = false;
			ctl_json_init(&j, f);
			ctl_json_obj_begin(&j, NULL);
			for (int c = 0; c < PQnfields(ev); c++)
				ctl_json_cell(&j, PQfname(ev, c), ev, i, c);
			ctl_json_cell(&j, "prev_tick_id", b, 0, 1);
			ctl_json_cell(&j, "tick_id", b, 0, 2);
			ctl_json_obj_end(&j);
			if (len_id + need + 2 > cap || len_tx + need + 2 > cap) {
				cap = cap * 2 + need;
				arr_id = realloc(arr_id, cap);
				arr_tx = realloc(arr_tx, cap);
				if (!arr_id || !arr_tx)
					abort();
			}
			len_id += (size_t)sprintf(arr_id + len_id, "%s%s", count ? "," : "",
						  PQgetvalue(ev, i, 0));
			len_tx += (size_t)sprintf(arr_tx + len_tx, "%s%s", count ? "," : "",
						  PQgetvalue(ev, i, 2));
			if (listed < MAX_LIST) {
				size_t l = strlen(ids);
				snprintf(ids + l, sizeof(ids) - l, "%s%s", listed ? "," : "",
					 PQgetvalue(ev, i, 0));
				listed++;
			}
			count++;
		}
		PQclear(ev);
		PQclear(b);
		r = ctl_db_exec(s->db, "select pgq.finish_batch($1::int8)", 1, ep);
		if (!r) {
			ctl_db_fail(s->db, s->what);
			fclose(f);
			goto out;
		}
		PQclear(r);
		r = NULL;
	}
	fprintf(f, "%s],\n \"count\": %lld}\n", first ? "" : "\n ", count);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0 ||
	    rename(tmp, s->file) != 0) {
		ctl_err("%s: cannot write %s: %s", s->what, s->file, strerror(errno));
		goto out;
	}
	strcpy(arr_id + len_id, "}");
	strcpy(arr_tx + len_tx, "}");
	/* delete them and the ticks after G, and the temporary consumer */
	pfx = ctl_db_exec(s->db, "select queue_data_pfx from pgq.queue where queue_name = $1", 1,
			  p);
	if (!pfx || PQntuples(pfx) != 1) {
		if (pfx)
			ctl_err("%s: queue %s is gone", s->what, s->queue);
		else
			ctl_db_fail(s->db, s->what);
		PQclear(pfx);
		goto out;
	}
	{
		const char *dp[2] = {arr_id, arr_tx};
		const char *tp[2] = {s->queue, gs};
		char sql[600];
		PGresult *q;
		/* the table name comes from pgq.queue; quote_ident-safe characters only */
		const char *t = PQgetvalue(pfx, 0, 0);
		if (strspn(t, "abcdefghijklmnopqrstuvwxyz0123456789_.") != strlen(t)) {
			ctl_err("%s: unexpected event table name %s", s->what, t);
			PQclear(pfx);
			goto out;
		}
		snprintf(sql, sizeof(sql),
			 "delete from %s e using unnest($1::int8[], $2::int8[]) x(id, txid)"
			 " where e.ev_id = x.id and e.ev_txid = x.txid",
			 t);
		PQclear(pfx);
		if (!ctl_node_exec_ok(s->db, s->what, "begin"))
			goto out;
		in_txn = true;
		q = ctl_db_exec(s->db, sql, 2, dp);
		if (!q) {
			ctl_db_fail(s->db, s->what);
			goto out;
		}
		PQclear(q);
		q = ctl_db_exec(s->db,
				"delete from pgq.tick t using pgq.queue q"
				" where q.queue_name = $1 and t.tick_queue = q.queue_id"
				" and t.tick_id > $2::int8",
				2, tp);
		if (!q) {
			ctl_db_fail(s->db, s->what);
			goto out;
		}
		PQclear(q);
		q = ctl_db_exec(s->db, "select pgq.unregister_consumer($1, $2)", 2, p);
		if (!q) {
			ctl_db_fail(s->db, s->what);
			goto out;
		}
		PQclear(q);
		if (!ctl_node_exec_ok(s->db, s->what, "commit"))
			goto out;
	}
	if (count)
		snprintf(detail, sizeof(detail),
			 "%lld event%s existed only on %s (ticks %lld..%lld, ev_id %s%s), written "
			 "to %s",
			 count, count == 1 ? "" : "s", s->name, first_tick, last_tick, ids,
			 count > listed ? ",..." : "", s->file);
	else
		snprintf(detail, sizeof(detail), "no event existed only on %s (report in %s)",
			 s->name, s->file);
	if (ctl_plan_text(pl))
		printf("LOST EVENTS: %lld\n", count);
	ctl_plan_note(pl, "%s", detail);
	s->lost = count;
	s->lost_first = first_tick;
	s->lost_last = last_tick;
	snprintf(s->lost_ids, sizeof(s->lost_ids), "%s", ids);
	ok = true;
out:
	if (!ok && in_txn)
		ctl_node_exec_ok(s->db, s->what, "rollback");
	free(arr_id);
	free(arr_tx);
	return ok;
}

/* ---- the steps; once step 7 is done, 1-6 count as done (see above) ---- */

/* 1. stop writes */
static int chk_writes_off(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	const char *q[1] = {s->queue};
	bool v;

	if (s->done7 || strcmp(s->type, "root") != 0)
		return 1;
	if (!bool_query(s, s->db,
			"select queue_disable_insert and queue_external_ticker from pgq.queue"
			" where queue_name = $1",
			1, q, &v))
		return -1;
	return v;
}

static int act_writes_off(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	const char *q[2] = {s->queue, s->gm->name};

	if (!ctl_node_call(s->db, s->what,
			   "select ret_code, ret_note from pgq_node.demote_root($1, 1, $2)", 2, q,
			   NULL))
		return -1;
	ctl_plan_note(p, "producers on it now get an error");
	return 0;
}

/* 2. final tick, branch of the gravestone node, worker paused */
static int chk_demoted(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	return s->done7 || strcmp(s->type, "root") != 0;
}

static int act_demote(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	const char *q[2] = {s->queue, s->gm->name};
	const char *w[2] = {s->queue, s->worker};
	PGresult *r = NULL;

	if (!ctl_node_exec_ok(s->db, s->what, "begin") ||
	    !ctl_node_call(s->db, s->what,
			   "select ret_code, ret_note, last_tick"
			   " from pgq_node.demote_root($1, 2, $2)",
			   2, q, &r) ||
	    !ctl_node_call(s->db, s->what,
			   "select ret_code, ret_note from pgq_node.demote_root($1, 3, $2)", 2, q,
			   NULL) ||
	    !ctl_node_call(s->db, s->what,
			   "select * from pgq_node.set_consumer_paused($1, $2, true)", 2, w,
			   NULL) ||
	    !ctl_node_exec_ok(s->db, s->what, "commit")) {
		PQclear(r);
		ctl_node_exec_ok(s->db, s->what, "rollback");
		return -1;
	}
	ctl_plan_note(p, "final tick %s", PQgetvalue(r, 0, 2));
	PQclear(r);
	return 0;
}

/* 3. old subscribers, 4. plain PgQ consumers of its queue (names starting with
   "." are the cascade's own): the names to unregister */
static const char *const UNREG_LIST[2] = {
	"select node_name from pgq_node.get_subscriber_info($1) order by 1",
	"select consumer_name from pgq.get_consumer_info($1)"
	" where consumer_name not like '.%' order by 1",
};
static const char *const UNREG_CALL[2] = {
	"select * from pgq_node.unregister_subscriber($1, $2)",
	"select 200, null::text from pgq.unregister_consumer($1, $2)",
};

static int chk_unregistered(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	const char *q[1] = {s->queue};
	PGresult *r;
	int none;

	if (s->done7)
		return 1;
	if (!(r = ctl_db_exec(s->db, UNREG_LIST[n], 1, q))) {
		ctl_db_fail(s->db, s->what);
		return -1;
	}
	none = PQntuples(r) == 0;
	PQclear(r);
	return none;
}

static int act_unregister(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	const char *q[1] = {s->queue};
	PGresult *r = ctl_db_exec(s->db, UNREG_LIST[n], 1, q);

	if (!r) {
		ctl_db_fail(s->db, s->what);
		return -1;
	}
	for (int i = 0; i < PQntuples(r); i++) {
		const char *u[2] = {s->queue, PQgetvalue(r, i, 0)};
		if (!ctl_node_call(s->db, s->what, UNREG_CALL[n], 2, u, NULL)) {
			PQclear(r);
			return -1;
		}
	}
	PQclear(r);
	return 0;
}

/* 5. the events that only this node has */
static int chk_no_lost(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	const char *q[2] = {s->queue, s->gs};
	bool later = false;

	if (s->done7)
		return 1;
	if (!bool_query(s, s->db,
			"select exists (select 1 from pgq.tick t join pgq.queue q"
			" on q.queue_id = t.tick_queue where q.queue_name = $1"
			" and t.tick_id > $2::int8)",
			2, q, &later))
		return -1;
	if (!s->dry && !file_is_ours_or_absent(s))
		return -1;
	return !later;
}

static int act_lost(CtlPlan *p, void *arg, int n)
{
	return lost_events(arg, p) ? 0 : -1;
}

/* 6. the worker resumes from G */
static int chk_at_g(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	const char *q[2] = {s->queue, s->worker};
	PGresult *r;
	bool at_g;

	if (s->done7)
		return 1;
	r = ctl_db_exec(s->db, "select completed_tick from pgq_node.get_consumer_state($1, $2)", 2,
			q);
	if (!r) {
		ctl_db_fail(s->db, s->what);
		return -1;
	}
	at_g = ctl_val(r, 0, 0) && atoll(ctl_val(r, 0, 0)) == s->g;
	PQclear(r);
	return at_g;
}

static int act_at_g(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	const char *c[3] = {s->queue, s->worker, s->gs};

	return ctl_node_call(s->db, s->what,
			     "select * from pgq_node.set_consumer_completed($1, $2, $3::int8)", 3,
			     c, NULL)
		       ? 0
		       : -1;
}

/* 7. the gravestone becomes a subscription */
static int chk_subscribed(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	return s->done7;
}

static int act_subscribe(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	const char *u[2] = {s->queue, s->name};
	const char *g[4] = {s->queue, s->name, s->worker, s->gs};
	PGresult *r = NULL;

	if (!ctl_node_exec_ok(s->gdb, s->what, "begin") ||
	    !ctl_node_call(s->gdb, s->what, "select * from pgq_node.unregister_subscriber($1, $2)",
			   2, u, NULL) ||
	    !ctl_node_call(s->gdb, s->what,
			   "select * from pgq_node.register_subscriber($1, $2, $3, $4::int8)", 4, g,
			   &r) ||
	    !ctl_node_exec_ok(s->gdb, s->what, "commit")) {
		PQclear(r);
		ctl_node_exec_ok(s->gdb, s->what, "rollback");
		return -1;
	}
	free(s->gnode_wm);
	s->gnode_wm = val_dup(r, 0, 2);
	PQclear(r);
	return 0;
}

/* 8. global watermark (nothing to do when the gravestone node has none) */
static int chk_watermark(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	const char *q[1] = {s->queue};
	PGresult *r;
	bool same;

	if (!s->gnode_wm)
		return 1;
	r = ctl_db_exec(s->db, "select global_watermark from pgq_node.get_node_info($1)", 1, q);
	if (!r) {
		ctl_db_fail(s->db, s->what);
		return -1;
	}
	same = ctl_val(r, 0, 0) && strcmp(ctl_val(r, 0, 0), s->gnode_wm) == 0;
	PQclear(r);
	return same;
}

static int act_watermark(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	const char *q[2] = {s->queue, s->gnode_wm};

	return ctl_node_call(s->db, s->what,
			     "select * from pgq_node.set_global_watermark($1, $2::int8)", 2, q,
			     NULL)
		       ? 0
		       : -1;
}

/* 9. alive again on member n */
static CtlDb *member_db(Res *s, int n)
{
	const CtlMember *x = &s->m[n];

	if (strcmp(x->name, s->name) == 0)
		return s->db;
	if (!s->mdb[n])
		s->mdb[n] = ctl_node_open_member(s->ctx, x);
	return s->mdb[n];
}

static int chk_alive(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	CtlDb *db = member_db(s, n);
	const char *q[2] = {s->queue, s->name};
	bool dead = false;

	if (!ctl_db_connect(db)) {
		ctl_err("node %s: unreachable (%s): tag %s alive there later (node tag-alive)",
			ctl_q(s->m[n].name), ctl_db_error(db), ctl_q(s->name));
		return -1;
	}
	if (!bool_query(s, db,
			"select dead from pgq_node.get_queue_locations($1) where node_name = $2", 2,
			q, &dead))
		return -1;
	return !dead;
}

static int act_alive(CtlPlan *p, void *arg, int n)
{
	Res *s = arg;
	const char *q[3] = {s->queue, s->name, "false"};

	return ctl_node_call(member_db(s, n), s->what,
			     "select * from pgq_node.register_location($1, $2, null, $3::boolean)",
			     3, q, NULL)
		       ? 0
		       : -1;
}

static void res_steps(Res *s, CtlPlan *p)
{
	const char *me = s->name;

	ctl_plan_step(p, me, chk_writes_off, act_writes_off, s, 0,
		      "stop writes (demote_root step 1)");
	ctl_plan_step(p, me, chk_demoted, act_demote, s, 0,
		      "final tick, demote to a branch of %s, pause the worker",
		      ctl_qq(s->gm->name));
	ctl_plan_step(p, me, chk_unregistered, act_unregister, s, 0,
		      "unregister its old subscribers");
	ctl_plan_step(p, me, chk_unregistered, act_unregister, s, 1,
		      "unregister the PgQ consumers of its queue");
	ctl_plan_step(p, me, chk_no_lost, act_lost, s, 0,
		      "report and remove the events after tick %lld (to %s)", s->g, s->file);
	ctl_plan_step(p, me, chk_at_g, act_at_g, s, 0, "position the worker at tick %lld", s->g);
	ctl_plan_step(p, s->gm->name, chk_subscribed, act_subscribe, s, 0,
		      "replace the gravestone by a subscription of %s at tick %lld",
		      ctl_q(s->worker), s->g);
	ctl_plan_step(p, me, chk_watermark, act_watermark, s, 0, "global watermark := %s",
		      s->gnode_wm ? s->gnode_wm : "(none)");
	for (size_t i = 0; i < s->nm; i++) {
		if (s->m[i].dead)
			continue;
		ctl_plan_step(p, s->m[i].name, chk_alive, act_alive, s, (int)i, "tag %s alive",
			      ctl_qq(s->name));
		ctl_plan_independent(p);
	}
}

static void res_json(CtlJson *j, void *arg)
{
	Res *s = arg;

	ctl_json_str(j, "cascade", s->queue);
	ctl_json_str(j, "node", s->name);
	ctl_json_str(j, "gravestone_node", s->gm ? s->gm->name : NULL);
	if (s->g >= 0)
		ctl_json_int(j, "resume_tick", s->g);
	else
		ctl_json_null(j, "resume_tick");
	ctl_json_obj_begin(j, "lost_events");
	ctl_json_bool(j, "known", s->lost >= 0);
	if (s->lost >= 0) {
		ctl_json_int(j, "count", s->lost);
		if (s->lost > 0) {
			ctl_json_int(j, "first_tick", s->lost_first);
			ctl_json_int(j, "last_tick", s->lost_last);
		}
		ctl_json_str(j, "first_ev_ids", s->lost_ids);
	} else {
		ctl_json_null(j, "count");
		ctl_json_str(j, "reason",
			     s->done7 || s->g < 0 ? "removed by an earlier run"
						  : "not removed (yet) by this run");
	}
	ctl_json_str(j, "file", s->file);
	ctl_json_obj_end(j);
}

int cmd_node_resurrect(CtlCtx *ctx, int argc, char **argv)
{
	bool dry = false;
	const char *file = NULL;
	const CtlOpt opts[] = {{"dry-run", false, &dry}, {"lost-events", true, &file}, {NULL}};
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	Res s = {.ctx = ctx, .g = -1, .lost = -1};
	PGresult *r = NULL;
	CtlPlan *plan = NULL;

	if ((rc = ctl_node_args(ctx, argc, argv, opts, 0, &s.queue, pos, &npos)))
		return rc;
	s.file = file ? file : "resurrect-lost-events.json";
	s.dry = dry;
	snprintf(s.what, sizeof(s.what), "resurrect on cascade %s", ctl_q(s.queue));
	if ((rc = ctl_open_single(ctx, &s.db)))
		return rc;
	rc = CTL_EXIT_ERROR;
	r = ctl_node_info(s.db, s.queue, s.what);
	if (!r)
		goto out;
	if (!ctl_val(r, 0, 2)) {
		ctl_err("%s: %s: no node of this cascade here", ctl_db_label(s.db), s.what);
		goto out;
	}
	s.type = val_dup(r, 0, 2);
	s.name = val_dup(r, 0, 3);
	s.worker = val_dup(r, 0, 10);
	if (strcmp(s.type, "leaf") == 0) {
		ctl_err("%s: %s: node %s is a leaf: only an old root is resurrected",
			ctl_db_label(s.db), s.what, ctl_q(s.name));
		goto out;
	}
	s.m = ctl_node_members(s.db, s.queue, s.what, &s.nm);
	if (!s.m || !find_gravestone(&s))
		goto out;
	if (!ctl_node_member(s.m, s.nm, s.gm->name)) {
		ctl_err("%s: internal: gravestone node not in the member map", s.what);
		goto out;
	}
	if (!s.done7 && s.g < 0) {
		ctl_err("%s: internal: no gravestone tick", s.what);
		goto out;
	}
	snprintf(s.gs, sizeof(s.gs), "%lld", s.g);
	s.mdb = calloc(s.nm + 1, sizeof(*s.mdb));
	if (!s.mdb)
		abort();
	if (!ctx->quiet && !ctx->json)
		printf("%s: gravestone of %s found on %s%s\n", s.what, ctl_q(s.name),
		       ctl_q(s.gm->name), s.done7 ? " (already replaced by a subscription)" : "");
	/* after that line: a dry run's first line follows it */
	plan = ctl_plan_new(ctx, s.what, CTL_PLAN_PER_NODE, dry);
	res_steps(&s, plan);
	rc = ctl_plan_run(plan);
	if (rc == 0 && !dry && ctl_plan_text(plan))
		printf("%s is now a paused branch of %s: check it, then `pgqctl node resume %s`\n",
		       ctl_q(s.name), ctl_q(s.gm->name), ctl_q(s.queue));
out:
	ctl_plan_json(plan, "resurrect", rc, res_json, &s);
	ctl_plan_free(plan);
	PQclear(r);
	free(s.type);
	free(s.name);
	free(s.worker);
	free(s.gnode_wm);
	for (size_t i = 0; s.mdb && i < s.nm; i++)
		if (s.mdb[i])
			ctl_db_close(s.mdb[i]);
	free(s.mdb);
	ctl_node_members_free(s.m, s.nm);
	if (s.gdb)
		ctl_db_close(s.gdb);
	ctl_db_close(s.db);
	return rc;
}
