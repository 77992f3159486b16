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
	char what[300];
	char *name, *type, *worker;
	CtlMember *m;
	size_t nm;
	/* the gravestone node */
	const CtlMember *gm;
	CtlDb *gdb;
	long long g;    /* gravestone tick; -1 when only the finished state was found */
	bool done7;     /* the gravestone node already has the worker subscribed */
	char *gnode_wm; /* its global watermark (text) */
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
	char grave[300];
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
			if (!s->ctx->quiet)
				printf("node %s: unreachable (%s): not searched\n", x->name,
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
			ctl_err("%s: both \"%s\" and \"%s\" hold the gravestone of \"%s\": resolve "
				"that by hand",
				s->what, s->gm->name, x->name, s->name);
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
		ctl_err("%s: no live member holds the consumer \"%s\": this node was not left "
			"behind by a dead-root failover, or the node that took over is unreachable",
			s->what, grave);
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
static void file_head(Res *s, char *buf, size_t len)
{
	snprintf(buf, len, "{\"cascade\": \"%s\", \"node\": \"%s\", \"gravestone_tick\": %lld,",
		 s->queue, s->name, s->g);
}

static bool file_is_ours_or_absent(Res *s)
{
	char head[600], line[600];
	FILE *f = fopen(s->file, "r");
	bool ours;

	if (!f)
		return errno == ENOENT;
	file_head(s, head, sizeof(head));
	ours = fgets(line, sizeof(line), f) && strncmp(line, head, strlen(head)) == 0;
	fclose(f);
	if (!ours)
		ctl_err("%s: %s exists and is not this resurrect's report: move it away or give "
			"--lost-events FILE",
			s->what, s->file);
	return ours;
}

/* Read the batches after G with a temporary consumer, write them out, then
   delete those events and the ticks after G in one transaction. */
static bool lost_events(Res *s, CtlSteps *st)
{
	char dumper[300], tmp[1100], head[600], detail[512], ids[400] = "";
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
	file_head(s, head, sizeof(head));
	fprintf(f, "%s\n \"events\": [", head);
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
	if (!s->ctx->quiet)
		printf("LOST EVENTS: %lld\n", count);
	ctl_step_done(st, detail);
	ok = true;
out:
	if (!ok && in_txn)
		ctl_node_exec_ok(s->db, s->what, "rollback");
	free(arr_id);
	free(arr_tx);
	return ok;
}

static int resurrect(Res *s, CtlSteps *st, bool dry)
{
	const char *q1[1] = {s->queue};
	char gs[32];
	bool is_root = strcmp(s->type, "root") == 0, v;

	snprintf(gs, sizeof(gs), "%lld", s->g);
	if (!s->done7 && s->g < 0) {
		ctl_err("%s: internal: no gravestone tick", s->what);
		return CTL_EXIT_ERROR;
	}
	/* 1. stop writes */
	if (!bool_query(s, s->db,
			"select queue_disable_insert and queue_external_ticker from pgq.queue"
			" where queue_name = $1",
			1, q1, &v))
		return CTL_EXIT_ERROR;
	if (ctl_step(st, s->name, s->done7 || !is_root || v, "stop writes (demote_root step 1)")) {
		const char *p[2] = {s->queue, s->gm->name};
		if (!ctl_node_call(s->db, s->what,
				   "select ret_code, ret_note from pgq_node.demote_root($1, 1, $2)",
				   2, p, NULL))
			return CTL_EXIT_ERROR;
		ctl_step_done(st, "producers on it now get an error");
	}
	/* 2. final tick, branch of the gravestone node, worker paused */
	if (ctl_step(st, s->name, s->done7 || !is_root,
		     "final tick, demote to a branch of \"%s\", pause the worker", s->gm->name)) {
		const char *p[2] = {s->queue, s->gm->name};
		const char *w[2] = {s->queue, s->worker};
		PGresult *r = NULL;
		char detail[100];
		if (!ctl_node_exec_ok(s->db, s->what, "begin") ||
		    !ctl_node_call(s->db, s->what,
				   "select ret_code, ret_note, last_tick"
				   " from pgq_node.demote_root($1, 2, $2)",
				   2, p, &r) ||
		    !ctl_node_call(s->db, s->what,
				   "select ret_code, ret_note from pgq_node.demote_root($1, 3, $2)",
				   2, p, NULL) ||
		    !ctl_node_call(s->db, s->what,
				   "select * from pgq_node.set_consumer_paused($1, $2, true)", 2, w,
				   NULL) ||
		    !ctl_node_exec_ok(s->db, s->what, "commit")) {
			PQclear(r);
			ctl_node_exec_ok(s->db, s->what, "rollback");
			return CTL_EXIT_ERROR;
		}
		snprintf(detail, sizeof(detail), "final tick %s", PQgetvalue(r, 0, 2));
		PQclear(r);
		ctl_step_done(st, detail);
	}
	/* 3. old subscribers */
	{
		PGresult *r = ctl_db_exec(s->db,
					  "select node_name from pgq_node.get_subscriber_info($1)"
					  " order by 1",
					  1, q1);
		if (!r)
			return ctl_db_fail(s->db, s->what);
		if (ctl_step(st, s->name, s->done7 || PQntuples(r) == 0,
			     "unregister its old subscribers")) {
			for (int i = 0; i < PQntuples(r); i++) {
				const char *p[2] = {s->queue, PQgetvalue(r, i, 0)};
				if (!ctl_node_call(
					    s->db, s->what,
					    "select * from pgq_node.unregister_subscriber($1, "
					    "$2)",
					    2, p, NULL)) {
					PQclear(r);
					return CTL_EXIT_ERROR;
				}
			}
			ctl_step_done(st, NULL);
		}
		PQclear(r);
	}
	/* 4. plain PgQ consumers of its queue (names starting with "." are the
	   cascade's own) */
	{
		PGresult *r = ctl_db_exec(s->db,
					  "select consumer_name from pgq.get_consumer_info($1)"
					  " where consumer_name not like '.%' order by 1",
					  1, q1);
		if (!r)
			return ctl_db_fail(s->db, s->what);
		if (ctl_step(st, s->name, s->done7 || PQntuples(r) == 0,
			     "unregister the PgQ consumers of its queue")) {
			for (int i = 0; i < PQntuples(r); i++) {
				const char *p[2] = {s->queue, PQgetvalue(r, i, 0)};
				PGresult *u = ctl_db_exec(
					s->db, "select pgq.unregister_consumer($1, $2)", 2, p);
				if (!u)
					return ctl_db_fail(s->db, s->what);
				PQclear(u);
			}
			ctl_step_done(st, NULL);
		}
		PQclear(r);
	}
	/* 5. the events that only this node has */
	{
		const char *p[2] = {s->queue, gs};
		bool later = false;
		if (!s->done7 &&
		    !bool_query(s, s->db,
				"select exists (select 1 from pgq.tick t join pgq.queue q"
				" on q.queue_id = t.tick_queue where q.queue_name = $1"
				" and t.tick_id > $2::int8)",
				2, p, &later))
			return CTL_EXIT_ERROR;
		if (!s->done7 && !dry && !file_is_ours_or_absent(s))
			return CTL_EXIT_ERROR;
		if (ctl_step(st, s->name, s->done7 || !later,
			     "report and remove the events after tick %lld (to %s)", s->g,
			     s->file) &&
		    !lost_events(s, st))
			return CTL_EXIT_ERROR;
	}
	/* 6. the worker resumes from G */
	{
		const char *p[2] = {s->queue, s->worker};
		PGresult *r =
			ctl_db_exec(s->db,
				    "select completed_tick from pgq_node.get_consumer_state($1,"
				    " $2)",
				    2, p);
		bool at_g;
		if (!r)
			return ctl_db_fail(s->db, s->what);
		at_g = ctl_val(r, 0, 0) && atoll(ctl_val(r, 0, 0)) == s->g;
		PQclear(r);
		if (ctl_step(st, s->name, s->done7 || at_g, "position the worker at tick %lld",
			     s->g)) {
			const char *c[3] = {s->queue, s->worker, gs};
			if (!ctl_node_call(s->db, s->what,
					   "select * from pgq_node.set_consumer_completed($1, $2,"
					   " $3::int8)",
					   3, c, NULL))
				return CTL_EXIT_ERROR;
			ctl_step_done(st, NULL);
		}
	}
	/* 7. the gravestone becomes a subscription */
	if (ctl_step(st, s->gm->name, s->done7,
		     "replace the gravestone by a subscription of %s at tick %lld", s->worker,
		     s->g)) {
		const char *u[2] = {s->queue, s->name};
		const char *g[4] = {s->queue, s->name, s->worker, gs};
		PGresult *r = NULL;
		if (!ctl_node_exec_ok(s->gdb, s->what, "begin") ||
		    !ctl_node_call(s->gdb, s->what,
				   "select * from pgq_node.unregister_subscriber($1, $2)", 2, u,
				   NULL) ||
		    !ctl_node_call(
			    s->gdb, s->what,
			    "select * from pgq_node.register_subscriber($1, $2, $3, $4::int8)", 4,
			    g, &r) ||
		    !ctl_node_exec_ok(s->gdb, s->what, "commit")) {
			PQclear(r);
			ctl_node_exec_ok(s->gdb, s->what, "rollback");
			return CTL_EXIT_ERROR;
		}
		free(s->gnode_wm);
		s->gnode_wm = val_dup(r, 0, 2);
		PQclear(r);
		ctl_step_done(st, NULL);
	}
	/* 8. global watermark */
	if (s->gnode_wm) {
		const char *p[2] = {s->queue, s->gnode_wm};
		PGresult *r = ctl_db_exec(
			s->db, "select global_watermark from pgq_node.get_node_info($1)", 1, p);
		bool same;
		if (!r)
			return ctl_db_fail(s->db, s->what);
		same = ctl_val(r, 0, 0) && strcmp(ctl_val(r, 0, 0), s->gnode_wm) == 0;
		PQclear(r);
		if (ctl_step(st, s->name, same, "global watermark := %s", s->gnode_wm)) {
			if (!ctl_node_call(
				    s->db, s->what,
				    "select * from pgq_node.set_global_watermark($1, $2::int8)", 2,
				    p, NULL))
				return CTL_EXIT_ERROR;
			ctl_step_done(st, NULL);
		}
	}
	/* 9. alive again on every live member */
	for (size_t i = 0; i < s->nm; i++) {
		const CtlMember *x = &s->m[i];
		const char *p[3] = {s->queue, s->name, "false"};
		CtlDb *db;
		bool dead = false;
		if (x->dead)
			continue;
		db = strcmp(x->name, s->name) == 0 ? s->db : ctl_node_open_member(s->ctx, x);
		if (!ctl_db_connect(db)) {
			ctl_err("node %s: unreachable (%s): tag %s alive there later (node "
				"tag-alive)",
				x->name, ctl_db_error(db), s->name);
		} else if (bool_query(s, db,
				      "select dead from pgq_node.get_queue_locations($1)"
				      " where node_name = $2",
				      2, p, &dead) &&
			   ctl_step(st, x->name, !dead, "tag \"%s\" alive", s->name)) {
			if (ctl_node_call(db, s->what,
					  "select * from pgq_node.register_location($1, $2, null,"
					  " $3::boolean)",
					  3, p, NULL))
				ctl_step_done(st, NULL);
		}
		if (db != s->db)
			ctl_db_close(db);
	}
	ctl_steps_end(st);
	if (!s->ctx->quiet && !dry)
		printf("%s is now a paused branch of %s: check it, then `pgqctl node resume %s`\n",
		       s->name, s->gm->name, s->queue);
	return CTL_EXIT_OK;
}

int cmd_node_resurrect(CtlCtx *ctx, int argc, char **argv)
{
	bool dry = false;
	const char *file = NULL;
	const CtlOpt opts[] = {{"dry-run", false, &dry}, {"lost-events", true, &file}, {NULL}};
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	Res s = {.ctx = ctx, .g = -1};
	PGresult *r = NULL;
	CtlSteps st;

	if ((rc = ctl_node_args(ctx, argc, argv, opts, 0, &s.queue, pos, &npos)))
		return rc;
	s.file = file ? file : "resurrect-lost-events.json";
	snprintf(s.what, sizeof(s.what), "resurrect on cascade %s", s.queue);
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
			ctl_db_label(s.db), s.what, s.name);
		goto out;
	}
	s.m = ctl_node_members(s.db, s.queue, s.what, &s.nm);
	if (!s.m || !find_gravestone(&s))
		goto out;
	if (!ctl_node_member(s.m, s.nm, s.gm->name)) {
		ctl_err("%s: internal: gravestone node not in the member map", s.what);
		goto out;
	}
	if (!ctx->quiet)
		printf("%s: gravestone of %s found on %s%s\n", s.what, s.name, s.gm->name,
		       s.done7 ? " (already replaced by a subscription)" : "");
	ctl_steps_init(&st, ctx, s.what, dry);
	rc = resurrect(&s, &st, dry);
out:
	PQclear(r);
	free(s.type);
	free(s.name);
	free(s.worker);
	free(s.gnode_wm);
	ctl_node_members_free(s.m, s.nm);
	if (s.gdb)
		ctl_db_close(s.gdb);
	ctl_db_close(s.db);
	return rc;
}
