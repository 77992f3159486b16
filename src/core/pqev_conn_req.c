/*
 * Requests on a PqevConn: the queue, sending (pipelined or simple protocol),
 * flushing without blocking, reading results, completion exactly once, per
 * request timeouts and cancel; LISTEN/UNLISTEN bookkeeping; delivery of
 * notifications and server notices.
 *
 * Pipelined requests are each followed by a sync, so the result stream of a
 * request is: its results, a NULL, then PGRES_PIPELINE_SYNC, which completes it.
 * A simple-protocol request runs alone outside pipeline mode and completes at
 * the NULL after its last result.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pqev_conn_int.h"

#define CHANNEL_MAX PQEV_CHANNEL_MAX

static const char *const status_names[] = {
	[PQEV_OK] = "ok",
	[PQEV_SQL_ERROR] = "sql_error",
	[PQEV_CONN_LOST] = "conn_lost",
	[PQEV_CANCELED] = "canceled",
	[PQEV_TIMEOUT] = "timeout",
	[PQEV_CLOSED] = "closed",
};

const char *pqev_status_name(PqevStatus st)
{
	if ((unsigned)st < sizeof(status_names) / sizeof(status_names[0]) && status_names[st])
		return status_names[st];
	return "invalid";
}

/* ---- request objects ---- */

void pqev_req_free(PqevReq *r)
{
	if (!r)
		return;
	if (r->timeout_ev)
		event_free(r->timeout_ev);
	if (r->params) {
		for (int i = 0; i < r->nparams; i++)
			free(r->params[i]);
		free(r->params);
	}
	PQclear(r->last);
	free(r->sql);
	free(r->copy);
	free(r);
}

/* Simple-protocol requests and COPY run alone, outside pipeline mode. */
static bool runs_alone(const PqevReq *r)
{
	return (r->flags & PQEV_Q_SIMPLE) || r->is_copy;
}

static void unlink_req(PqevReq *r)
{
	PqevConn *c = r->conn;
	if (r->sent) {
		TAILQ_REMOVE(&c->inflight, r, link);
		c->ninflight--;
	} else {
		TAILQ_REMOVE(&c->queue, r, link);
		c->nqueued--;
	}
}

void pqev_req_complete(PqevReq *r, PqevStatus st, const char *detail)
{
	PqevConn *c = r->conn;
	PqevReply reply = {.status = st, .result = r->last, .nresults = r->nresults};
	char buf[PQEV_ERR_MAX], msg[PQEV_ERR_MAX];

	if (st == PQEV_SQL_ERROR && !detail) {
		const char *m =
			r->last ? PQresultErrorField(r->last, PG_DIAG_MESSAGE_PRIMARY) : NULL;
		if (!m && r->last)
			m = PQresultErrorMessage(r->last);
		snprintf(buf, sizeof(buf), "%s", m && *m ? m : "query failed");
		pqev_flatten_message(buf);
		detail = buf;
	}
	if (st != PQEV_OK) {
		pqev_conn_label(c, msg, sizeof(msg), detail ? detail : "failed");
		reply.error = msg;
		reply.detail = detail ? detail : "failed";
	}
	if (r->timeout_ev)
		evtimer_del(r->timeout_ev);
	/* the callback may free c: it is held by the caller's enter/leave */
	r->on_done(c, &reply, r->arg);
	pqev_req_free(r);
}

void pqev_req_fail_list(struct ReqList *list, PqevStatus st, const char *detail)
{
	PqevReq *r;
	while ((r = TAILQ_FIRST(list)) != NULL) {
		TAILQ_REMOVE(list, r, link);
		pqev_req_complete(r, st, detail);
	}
}

void pqev_req_take_all(PqevConn *c, struct ReqList *out, bool include_queued)
{
	PqevReq *r;
	TAILQ_INIT(out);
	while ((r = TAILQ_FIRST(&c->inflight)) != NULL) {
		TAILQ_REMOVE(&c->inflight, r, link);
		TAILQ_INSERT_TAIL(out, r, link);
	}
	c->ninflight = 0;
	if (include_queued) {
		while ((r = TAILQ_FIRST(&c->queue)) != NULL) {
			TAILQ_REMOVE(&c->queue, r, link);
			TAILQ_INSERT_TAIL(out, r, link);
		}
		c->nqueued = 0;
	}
}

static void req_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	PqevReq *r = arg;
	PqevConn *c = r->conn;
	bool was_sent = r->sent;
	ReqKind kind = r->kind;
	char msg[PQEV_ERR_MAX];

	pqev_conn_enter(c);
	unlink_req(r);
	snprintf(msg, sizeof(msg), "%s timed out",
		 kind == REQ_LIVENESS ? "liveness check" : "request");
	uint64_t gen = c->gen;
	pqev_req_complete(r, PQEV_TIMEOUT, msg);
	if (was_sent && c->gen == gen && c->state == PQEV_CONN_READY) {
		/* its results are still coming: the session cannot be reused */
		if (kind == REQ_LIVENESS) {
			pqev_conn_seterr(c, "liveness check timed out");
			pqev_conn_failure(c, PQEV_EV_LOST);
		} else {
			pqev_conn_restart(c, false);
		}
	}
	pqev_conn_leave(c);
}

static PqevReq *req_new(PqevConn *c, const PqevQuery *q, ReqKind kind)
{
	PqevReq *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->conn = c;
	r->kind = kind;
	r->flags = q->flags;
	r->on_rows = q->on_rows;
	r->on_done = q->on_done;
	r->arg = q->arg;
	r->sql = strdup(q->sql);
	if (!r->sql)
		goto oom;
	if (q->nparams > 0) {
		r->params = calloc((size_t)q->nparams, sizeof(char *));
		if (!r->params)
			goto oom;
		r->nparams = q->nparams;
		for (int i = 0; i < q->nparams; i++) {
			if (q->params[i] && !(r->params[i] = strdup(q->params[i])))
				goto oom;
		}
	}
	if (q->timeout > 0) {
		struct timeval tv = {.tv_sec = (time_t)(q->timeout / USEC_PER_SEC),
				     .tv_usec = (suseconds_t)(q->timeout % USEC_PER_SEC)};
		r->timeout_ev = evtimer_new(c->base, req_timeout_cb, r);
		if (!r->timeout_ev || evtimer_add(r->timeout_ev, &tv) < 0)
			goto oom;
	}
	return r;
oom:
	pqev_req_free(r);
	return NULL;
}

static void enqueue(PqevConn *c, PqevReq *r, bool front)
{
	if (front)
		TAILQ_INSERT_HEAD(&c->queue, r, link);
	else
		TAILQ_INSERT_TAIL(&c->queue, r, link);
	c->nqueued++;
}

/*
 * Get queued requests sent: the socket handler runs in the next loop pass as if
 * writable. Nothing is sent and no callback runs from inside API calls.
 */
static void kick(PqevConn *c)
{
	if (c->state == PQEV_CONN_READY && c->sock_init)
		event_active(&c->sock_ev, EV_WRITE, 0);
}

/* The first layout of PqevQuery (library 1.0): fields added later go after it. */
#define QUERY_SIZE_1 (offsetof(PqevQuery, arg) + sizeof(void *))

static int conn_send(PqevConn *c, const PqevQuery *given, PqevReq **req_out, char *copy,
		     size_t copy_len, bool is_copy)
{
	PqevReq *r;
	PqevQuery in = {0};
	const PqevQuery *q = NULL;
	if (given) {
		int rc = pqev_struct_in(&in, sizeof(in), given, given->size, QUERY_SIZE_1);
		if (rc < 0) {
			pqev_conn_seterr(c,
					 "invalid request: size %zu is not a PqevQuery this "
					 "library knows (%zu..%zu)",
					 given->size, (size_t)QUERY_SIZE_1, sizeof(in));
			free(copy);
			return rc;
		}
		q = &in;
	}
	if (!q || !q->sql || !q->on_done || q->nparams < 0 || (q->nparams > 0 && !q->params) ||
	    ((q->flags & PQEV_Q_SIMPLE || is_copy) && q->nparams > 0) || q->nparams > 65535 ||
	    ((q->flags & PQEV_Q_SIMPLE) && (q->flags & PQEV_Q_PREPARE)) || copy_len > INT_MAX) {
		pqev_conn_seterr(c,
				 "invalid request (no SQL, no on_done, bad parameters or flags)");
		free(copy);
		return -EINVAL;
	}
	if (c->state == PQEV_CONN_CLOSED || c->free_pending) {
		free(copy);
		return -ENOTCONN;
	}
	r = req_new(c, q, REQ_USER);
	if (!r) {
		free(copy);
		return -ENOMEM;
	}
	r->copy = copy;
	r->copy_len = copy_len;
	r->is_copy = is_copy;
	enqueue(c, r, false);
	if (req_out)
		*req_out = r;
	kick(c);
	return 0;
}

int pqev_conn_send(PqevConn *c, const PqevQuery *given, PqevReq **req_out)
{
	return conn_send(c, given, req_out, NULL, 0, false);
}

int pqev_conn_send_copy(PqevConn *c, const PqevQuery *q, char *data, size_t len)
{
	return conn_send(c, q, NULL, data, len, true);
}

int pqev_conn_query(PqevConn *c, const char *sql, int nparams, const char *const *params,
		    PqevDoneFn on_done, void *arg)
{
	PqevQuery q = {
		.sql = sql, .nparams = nparams, .params = params, .on_done = on_done, .arg = arg};
	return pqev_conn_send(c, &q, NULL);
}

void pqev_req_cancel(PqevReq *r)
{
	PqevConn *c = r->conn;
	bool was_sent = r->sent;

	pqev_conn_enter(c);
	unlink_req(r);
	uint64_t gen = c->gen;
	pqev_req_complete(r, PQEV_CANCELED, "request cancelled");
	if (was_sent && c->gen == gen && c->state == PQEV_CONN_READY)
		pqev_conn_restart(c, false);
	pqev_conn_leave(c);
}

/* ---- internal requests ---- */

static void internal_done(PqevConn *c, const PqevReply *reply, void *arg)
{
	if (reply->status != PQEV_SQL_ERROR || c->state != PQEV_CONN_READY)
		return;
	/* a LISTEN that fails leaves the subscription set wrong: start over */
	pqev_conn_seterr(c, "%s", reply->detail);
	pqev_conn_failure(c, PQEV_EV_LOST);
}

static void liveness_done(PqevConn *c, const PqevReply *reply, void *arg)
{
	if (reply->status == PQEV_OK || reply->status == PQEV_SQL_ERROR)
		pqev_conn_debug(c, "liveness check answered");
}

static int queue_internal(PqevConn *c, const char *sql, ReqKind kind, usec_t timeout, bool front)
{
	PqevQuery q = {.sql = sql,
		       .timeout = timeout,
		       .on_done = kind == REQ_LIVENESS ? liveness_done : internal_done};
	PqevReq *r = req_new(c, &q, kind);
	if (!r)
		return -ENOMEM;
	enqueue(c, r, front);
	return 0;
}

int pqev_req_queue_liveness(PqevConn *c)
{
	return queue_internal(c, "", REQ_LIVENESS, c->cfg.idle_check_timeout, false);
}

/* "LISTEN <quoted>" into buf; the quoting is libpq-free so it works offline. */
void pqev_listen_sql(char *buf, size_t len, const char *verb, const char *chan)
{
	size_t n = (size_t)snprintf(buf, len, "%s \"", verb);
	for (const char *p = chan; *p && n + 3 < len; p++) {
		if (*p == '"')
			buf[n++] = '"';
		buf[n++] = *p;
	}
	buf[n++] = '"';
	buf[n] = '\0';
}

int pqev_req_queue_listens(PqevConn *c)
{
	/* front of the queue, in order: insert backwards */
	for (size_t i = c->nchannels; i-- > 0;) {
		char sql[2 * CHANNEL_MAX + 16];
		pqev_listen_sql(sql, sizeof(sql), "LISTEN", c->channels[i]);
		if (queue_internal(c, sql, REQ_LISTEN, 0, true) < 0)
			return -ENOMEM;
	}
	return 0;
}

static ssize_t find_channel(const PqevConn *c, const char *channel)
{
	for (size_t i = 0; i < c->nchannels; i++)
		if (strcmp(c->channels[i], channel) == 0)
			return (ssize_t)i;
	return -1;
}

bool pqev_conn_listening(const PqevConn *c, const char *channel)
{
	return channel && find_channel(c, channel) >= 0;
}

int pqev_conn_listen(PqevConn *c, const char *channel)
{
	char sql[2 * CHANNEL_MAX + 16];
	if (!channel || !*channel || strlen(channel) > CHANNEL_MAX) {
		pqev_conn_seterr(c, "invalid channel name (empty or longer than %d bytes)",
				 CHANNEL_MAX);
		return -EINVAL;
	}
	if (find_channel(c, channel) >= 0)
		return 0;
	if (c->nchannels == c->capchannels) {
		size_t cap = c->capchannels ? c->capchannels * 2 : 4;
		char **n = realloc(c->channels, cap * sizeof(char *));
		if (!n)
			return -ENOMEM;
		c->channels = n;
		c->capchannels = cap;
	}
	char *dup = strdup(channel);
	if (!dup)
		return -ENOMEM;
	if (c->state == PQEV_CONN_READY) {
		pqev_listen_sql(sql, sizeof(sql), "LISTEN", channel);
		if (queue_internal(c, sql, REQ_LISTEN, 0, false) < 0) {
			free(dup);
			return -ENOMEM;
		}
	}
	c->channels[c->nchannels++] = dup;
	kick(c);
	return 0;
}

int pqev_conn_unlisten(PqevConn *c, const char *channel)
{
	char sql[2 * CHANNEL_MAX + 16];
	ssize_t i = channel ? find_channel(c, channel) : -1;
	if (i < 0)
		return -ENOENT;
	if (c->state == PQEV_CONN_READY) {
		pqev_listen_sql(sql, sizeof(sql), "UNLISTEN", channel);
		if (queue_internal(c, sql, REQ_LISTEN, 0, false) < 0)
			return -ENOMEM;
	}
	free(c->channels[i]);
	c->channels[i] = c->channels[--c->nchannels];
	kick(c);
	return 0;
}

/* ---- notices and notifications ---- */

void pqev_notice_receiver(void *arg, const PGresult *res)
{
	PqevConn *c = arg;
	ConnNotice *n;
	const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
	const char *txt = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	if (!c->cb.on_notice)
		return;
	n = calloc(1, sizeof(*n));
	if (!n)
		return;
	n->severity = strdup(sev ? sev : "NOTICE");
	n->text = strdup(txt ? txt : PQresultErrorMessage(res));
	if (!n->severity || !n->text) {
		free(n->severity);
		free(n->text);
		free(n);
		return;
	}
	size_t len = strlen(n->text);
	while (len > 0 && n->text[len - 1] == '\n')
		n->text[--len] = '\0';
	*c->notices_tail = n;
	c->notices_tail = &n->next;
}

void pqev_conn_clear_notices(PqevConn *c)
{
	ConnNotice *n;
	while ((n = c->notices) != NULL) {
		c->notices = n->next;
		free(n->severity);
		free(n->text);
		free(n);
	}
	c->notices_tail = &c->notices;
}

bool pqev_conn_dispatch_async(PqevConn *c)
{
	uint64_t gen = c->gen;
	ConnNotice *n;
	while ((n = c->notices) != NULL) {
		c->notices = n->next;
		if (!c->notices)
			c->notices_tail = &c->notices;
		if (c->cb.on_notice)
			c->cb.on_notice(c, n->severity, n->text, c->cb.arg);
		free(n->severity);
		free(n->text);
		free(n);
		if (c->gen != gen)
			return false;
	}
	if (!c->pg)
		return true;
	PGnotify *nt;
	while ((nt = PQnotifies(c->pg)) != NULL) {
		if (c->cb.on_notify)
			c->cb.on_notify(c, nt->relname, nt->extra, nt->be_pid, c->cb.arg);
		PQfreemem(nt);
		if (c->gen != gen)
			return false;
	}
	return true;
}

/* ---- prepared statements (PQEV_Q_PREPARE) ---- */

#define PREP_NAMES_MAX 32

void pqev_conn_prep_clear(PqevConn *c)
{
	for (unsigned i = 0; i < c->nprep; i++)
		free(c->prep[i].sql);
	free(c->prep);
	c->prep = NULL;
	c->nprep = 0;
	c->prep_names = 0;
}

/* The name of sql's statement on this session, adding it (*first) if it has
   none and names are left; -1: send it unprepared. */
static long prep_find(PqevConn *c, const char *sql, bool *first)
{
	PrepStmt *grown;
	char *copy;

	*first = false;
	for (unsigned i = 0; i < c->nprep; i++) {
		if (strcmp(c->prep[i].sql, sql) == 0)
			return c->prep[i].ready ? (long)c->prep[i].name : -1;
	}
	if (c->prep_names >= PREP_NAMES_MAX)
		return -1;
	grown = realloc(c->prep, (c->nprep + 1) * sizeof(*grown));
	if (!grown)
		return -1;
	c->prep = grown;
	copy = strdup(sql);
	if (!copy)
		return -1;
	c->prep[c->nprep].sql = copy;
	c->prep[c->nprep].name = c->prep_names++;
	c->prep[c->nprep].ready = false;
	*first = true;
	return c->prep[c->nprep++].name;
}

static PrepStmt *prep_by_name(PqevConn *c, unsigned name)
{
	for (unsigned i = 0; i < c->nprep; i++) {
		if (c->prep[i].name == name)
			return &c->prep[i];
	}
	return NULL;
}

static void prep_forget(PqevConn *c, unsigned name)
{
	PrepStmt *p = prep_by_name(c, name);
	if (p) {
		free(p->sql);
		*p = c->prep[--c->nprep];
	}
}

/*
 * After a failed execution by name. 0A000 ("cached plan must not change result
 * type"): prepare that text anew next time. 26000 (no such statement): something
 * drops our statements (DEALLOCATE ALL, a pooler that moves the session between
 * server connections), so this session prepares nothing more.
 */
static void prep_failed(PqevConn *c, const PqevReq *r)
{
	const char *st = r->last ? PQresultErrorField(r->last, PG_DIAG_SQLSTATE) : NULL;

	if (!st)
		return;
	if (strcmp(st, "0A000") == 0) {
		prep_forget(c, r->prep_name);
	} else if (strcmp(st, "26000") == 0) {
		pqev_conn_prep_clear(c);
		c->prep_names = PREP_NAMES_MAX;
	}
}

static bool send_extended(PqevConn *c, PqevReq *r)
{
	const char *const *params = (const char *const *)r->params;
	int binary = (r->flags & PQEV_Q_BINARY) ? 1 : 0;
	bool first = false;
	long name = (r->flags & PQEV_Q_PREPARE) ? prep_find(c, r->sql, &first) : -1;
	char stmt[32];

	if (name < 0)
		return PQsendQueryParams(c->pg, r->sql, r->nparams, NULL, params, NULL, NULL,
					 binary) &&
		       PQpipelineSync(c->pg);
	snprintf(stmt, sizeof(stmt), "pqev_%ld", name);
	r->prepared = true;
	r->preparing = first;
	r->prep_name = (unsigned)name;
	if (first && !PQsendPrepare(c->pg, stmt, r->sql, r->nparams, NULL))
		return false;
	return PQsendQueryPrepared(c->pg, stmt, r->nparams, params, NULL, NULL, binary) &&
	       PQpipelineSync(c->pg);
}

/* ---- sending ---- */

static bool lost(PqevConn *c, const char *what)
{
	pqev_conn_seterr(c, "%s: %s", what, PQerrorMessage(c->pg));
	pqev_conn_failure(c, PQEV_EV_LOST);
	return false;
}

/* Send queued requests as far as the pipeline allows; false if the connection broke. */
static bool send_queued(PqevConn *c)
{
	PqevReq *r;
	while ((r = TAILQ_FIRST(&c->queue)) != NULL) {
		PqevReq *head = TAILQ_FIRST(&c->inflight);
		bool simple = runs_alone(r);
		if (head && (simple || runs_alone(head)))
			break;
		if (c->ninflight >= c->cfg.max_pipeline)
			break;
		if (simple) {
			if (c->in_pipeline) {
				if (!PQexitPipelineMode(c->pg))
					return lost(c, "leaving pipeline mode failed");
				c->in_pipeline = false;
			}
			if (!PQsendQuery(c->pg, r->sql))
				return lost(c, "sending a query failed");
		} else {
			if (!c->in_pipeline) {
				if (!PQenterPipelineMode(c->pg))
					return lost(c, "entering pipeline mode failed");
				c->in_pipeline = true;
			}
			if (!send_extended(c, r))
				return lost(c, "sending a query failed");
		}
		TAILQ_REMOVE(&c->queue, r, link);
		c->nqueued--;
		r->sent = true;
		TAILQ_INSERT_TAIL(&c->inflight, r, link);
		c->ninflight++;
		c->want_write = true; /* flushed below */
	}
	/*
	 * NOTE: an idle session leaves pipeline mode (no I/O, libpq only). libpq does
	 * not parse an ErrorResponse that arrives on an idle pipeline, so the FATAL
	 * saying why a backend was terminated would be lost, and PQtransactionStatus
	 * would say "active" instead of whether a transaction block is open.
	 */
	if (c->in_pipeline && c->ninflight == 0) {
		if (!PQexitPipelineMode(c->pg))
			return lost(c, "leaving pipeline mode failed");
		c->in_pipeline = false;
	}
	if (c->want_write) {
		int f = PQflush(c->pg);
		if (f < 0)
			return lost(c, "sending data failed");
		c->want_write = f > 0;
	}
	return true;
}

/* ---- results ---- */

static bool is_error(ExecStatusType st)
{
	return st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_PIPELINE_ABORTED;
}

/* Read every result available without blocking; false if gen changed. */
static bool read_results(PqevConn *c)
{
	uint64_t gen = c->gen;
	PqevReq *r;
	while ((r = TAILQ_FIRST(&c->inflight)) != NULL) {
		if (PQstatus(c->pg) == CONNECTION_BAD)
			return lost(c, "connection lost");
		if (PQisBusy(c->pg))
			break;
		PGresult *res = PQgetResult(c->pg);
		bool done = false;
		if (r->preparing) {
			/* the Prepare's own result and NULL; the Execute's follow */
			if (!res) {
				r->preparing = false;
			} else if (is_error(PQresultStatus(res))) {
				prep_forget(c, r->prep_name);
				PQclear(r->last);
				r->last = res;
				r->failed = true;
			} else {
				PrepStmt *p = prep_by_name(c, r->prep_name);
				if (p)
					p->ready = true;
				PQclear(res);
			}
		} else if (!res) {
			/* NOTE: a second NULL before the sync means libpq gave up on the
			   pipeline; spinning on it would hang the loop */
			if (r->got_end && !runs_alone(r))
				return lost(c, "unexpected end of results");
			r->got_end = true;
			done = runs_alone(r);
		} else {
			ExecStatusType st = PQresultStatus(res);
			if (st == PGRES_PIPELINE_SYNC) {
				PQclear(res);
				done = true;
			} else if (st == PGRES_COPY_IN && r->is_copy && r->copy) {
				/* the whole chunk at once: libpq buffers it and the loop
				   flushes it as the socket takes it */
				PQclear(res);
				int ok = PQputCopyData(c->pg, r->copy, (int)r->copy_len);
				if (ok == 1)
					ok = PQputCopyEnd(c->pg, NULL);
				free(r->copy);
				r->copy = NULL;
				if (ok != 1)
					return lost(c, "sending COPY data failed");
				c->want_write = true;
			} else if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT ||
				   st == PGRES_COPY_BOTH) {
				PQclear(res);
				pqev_conn_seterr(c,
						 "COPY is not supported by this connection layer");
				unlink_req(r);
				pqev_req_complete(r, PQEV_SQL_ERROR, c->err);
				if (c->gen == gen)
					pqev_conn_restart(c, false);
				return false;
			} else {
				r->nresults++;
				if (r->on_rows &&
				    (st == PGRES_TUPLES_OK || st == PGRES_SINGLE_TUPLE)) {
					r->on_rows(c, res, r->arg);
					if (c->gen != gen) {
						PQclear(res);
						return false;
					}
				}
				if (is_error(st)) {
					if (!r->failed) {
						PQclear(r->last);
						r->last = res;
					} else {
						PQclear(res);
					}
					r->failed = true;
				} else if (!r->failed) {
					PQclear(r->last);
					r->last = res;
				} else {
					PQclear(res);
				}
			}
		}
		if (!pqev_conn_dispatch_async(c))
			return false;
		if (done) {
			/* the server did work for us: the session is proven, failures start over */
			if (!r->failed)
				pqev_backoff_reset(&c->backoff);
			else if (r->prepared)
				prep_failed(c, r);
			unlink_req(r);
			pqev_req_complete(r, r->failed ? PQEV_SQL_ERROR : PQEV_OK, NULL);
			if (c->gen != gen)
				return false;
		}
	}
	return true;
}

/* One I/O pass in READY. what: libevent mask from the socket, 0 to only send. */
bool pqev_conn_io(PqevConn *c, short what)
{
	uint64_t gen = c->gen;
	if (c->state != PQEV_CONN_READY)
		return false;
	if (what & EV_WRITE) {
		int f = PQflush(c->pg);
		if (f < 0)
			return lost(c, "sending data failed");
		c->want_write = f > 0;
	}
	if (what & EV_READ) {
		if (!PQconsumeInput(c->pg)) {
			/* the server's reason for closing (FATAL on an idle session) comes first */
			if (!pqev_conn_dispatch_async(c))
				return false;
			return lost(c, "connection lost");
		}
		if (!pqev_conn_dispatch_async(c))
			return false;
		if (!read_results(c))
			return false;
	}
	if (!send_queued(c))
		return false;
	if (c->gen != gen)
		return false;
	pqev_conn_arm_io(c);
	return c->gen == gen;
}
