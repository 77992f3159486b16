/*
 * Many databases at once on the one loop: each target gets a connection and all
 * its statements pipelined at once (each its own implicit transaction, so one
 * failing statement does not hide the others). At most max_conns connections are
 * open at a time: when a database is done its connection is closed and the next
 * target starts. A connect failure is final for that target (reported, not
 * retried), so an unreachable server costs one connect timeout.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_conn.h>

#include "pgqctl.h"

typedef struct Runner Runner;

typedef struct Slot {
	Runner *run;
	CtlProbe *probe;
	PqevConn *conn;
	int pending;
	bool finished;
} Slot;

typedef struct QArg {
	Slot *slot;
	int idx;
} QArg;

struct Runner {
	CtlCtx *ctx;
	const CtlTarget *targets;
	size_t n, next, done;
	unsigned active;
	const CtlProbeQuery *q;
	int nq;
	Slot *slots;
	QArg *qargs; /* n * nq */
};

static void start_next(Runner *run);
static void send_from(Slot *s, int from, int to);

static void reap(evutil_socket_t fd, short what, void *arg)
{
	Slot *s = arg;
	Runner *run = s->run;

	s->conn = pqev_conn_free(s->conn);
	run->active--;
	run->done++;
	start_next(run);
}

/* The target is complete: free its connection from outside its callbacks. */
static void finish(Slot *s)
{
	struct timeval zero = {0, 0};

	if (s->finished)
		return;
	s->finished = true;
	if (event_base_once(s->run->ctx->base, -1, EV_TIMEOUT, reap, s, &zero) != 0)
		abort();
}

static void on_event(PqevConn *c, const PqevConnEvent *ev, void *arg)
{
	Slot *s = arg;

	if (ev->type == PQEV_EV_CONNECTED) {
		s->probe->reachable = true;
	} else if (ev->type == PQEV_EV_CONNECT_FAILED || ev->type == PQEV_EV_LOST) {
		if (!s->probe->error[0])
			snprintf(s->probe->error, sizeof(s->probe->error), "%s", ev->detail);
		s->probe->reachable = false;
		/* requests still queued fail when the connection closes */
		pqev_conn_close(c);
	}
}

static void on_done(PqevConn *c, const PqevReply *reply, void *arg)
{
	QArg *qa = arg;
	Slot *s = qa->slot;
	CtlProbe *p = s->probe;

	if (reply->status == PQEV_OK && reply->result) {
		p->res[qa->idx] = PQcopyResult(reply->result, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
	} else {
		if (reply->status == PQEV_SQL_ERROR && reply->result) {
			const char *st = PQresultErrorField(reply->result, PG_DIAG_SQLSTATE);
			snprintf(p->sqlstate[qa->idx], 6, "%s", st ? st : "");
		}
		snprintf(p->qerr[qa->idx], sizeof(p->qerr[0]), "%s",
			 reply->detail ? reply->detail : "failed");
	}
	if (--s->pending > 0)
		return;
	/* the first statement answered: send the others its answer lets through */
	if (qa->idx == 0 && p->res[0] && s->run->nq > 1 && p->reachable)
		send_from(s, 1, s->run->nq);
	else
		finish(s);
}

/* Send statements [from, to) whose gate lets them through. */
static void send_from(Slot *s, int from, int to)
{
	Runner *run = s->run;
	size_t i = (size_t)(s - run->slots);
	const PGresult *first = s->probe->res[0];

	for (int k = from; k < to; k++) {
		QArg *qa = &run->qargs[i * (size_t)run->nq + (size_t)k];
		PqevQuery q = {
			.sql = run->q[k].sql,
			.nparams = run->q[k].nparams,
			.params = run->q[k].params,
			.on_done = on_done,
			.arg = qa,
		};
		int g = run->q[k].gate;

		if (g > 0 && !(first && PQntuples(first) > 0 && g < PQnfields(first) &&
			       PQgetvalue(first, 0, g)[0] == 't'))
			continue;
		qa->slot = s;
		qa->idx = k;
		if (pqev_conn_send(s->conn, &q, NULL) == 0)
			s->pending++;
		else
			snprintf(s->probe->qerr[k], sizeof(s->probe->qerr[0]), "%s",
				 pqev_conn_error(s->conn));
	}
	if (s->pending == 0)
		finish(s);
}

static void start_one(Runner *run, size_t i)
{
	Slot *s = &run->slots[i];
	PqevConnConfig cfg;
	PqevConnCallbacks cb = {.on_event = on_event, .arg = s};

	s->run = run;
	s->probe->target = &run->targets[i];
	pqev_conn_config_init(&cfg);
	cfg.conninfo = run->targets[i].conninfo;
	cfg.name = run->targets[i].label;
	cfg.application_name = "pgqctl";
	cfg.connect_timeout = run->ctx->connect_timeout;
	cfg.idle_check = 0;
	cfg.max_pipeline = (unsigned)run->nq;
	s->conn = pqev_conn_new(run->ctx->lim, &cfg, &cb);
	if (!s->conn)
		abort();
	run->active++;
	if (pqev_conn_start(s->conn) != 0) {
		snprintf(s->probe->error, sizeof(s->probe->error), "%s", pqev_conn_error(s->conn));
		finish(s);
		return;
	}
	send_from(s, 0, 1);
}

static void start_next(Runner *run)
{
	while (run->next < run->n && run->active < run->ctx->max_conns)
		start_one(run, run->next++);
}

CtlProbe *ctl_multi_run(CtlCtx *ctx, const CtlTarget *t, size_t n, const CtlProbeQuery *q, int nq)
{
	Runner run = {.ctx = ctx, .targets = t, .n = n, .q = q, .nq = nq};
	CtlProbe *probes = calloc(n ? n : 1, sizeof(CtlProbe));
	bool interrupted = false;

	run.slots = calloc(n ? n : 1, sizeof(Slot));
	run.qargs = calloc((n ? n : 1) * (size_t)nq, sizeof(QArg));
	if (!probes || !run.slots || !run.qargs)
		abort();
	for (size_t i = 0; i < n; i++)
		run.slots[i].probe = &probes[i];
	start_next(&run);
	while (run.done < run.n) {
		if (ctl_signalled && !interrupted) {
			/* start nothing more; close what is open (its requests fail, so
			   every slot finishes and is reaped) */
			interrupted = true;
			run.n = run.next;
			for (size_t i = 0; i < run.next; i++)
				if (!run.slots[i].finished && run.slots[i].conn)
					pqev_conn_close(run.slots[i].conn);
			continue;
		}
		event_base_loop(ctx->base, EVLOOP_ONCE);
	}
	if (interrupted) {
		ctl_probes_free(probes, n);
		probes = NULL;
	}
	free(run.slots);
	free(run.qargs);
	return probes;
}

void ctl_probes_free(CtlProbe *p, size_t n)
{
	if (!p)
		return;
	for (size_t i = 0; i < n; i++)
		for (int k = 0; k < CTL_PROBE_MAXQ; k++)
			PQclear(p[i].res[k]);
	free(p);
}
