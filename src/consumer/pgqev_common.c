/*
 * Plumbing shared by the plain consumer and the cascade worker: requests that
 * carry their owner's generation, error messages for on_error, timers, the
 * connect limiter, connections, and the size-tagged public structs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pgqd-ev/pqev_clock.h>

#include "pgqev_config.h"
#include "pgqev_int.h"

/* Send q (or, with copy set, the COPY request q with that data) carrying a
   heap copy of *req as its arg. */
static int req_send(PqevConn *conn, const PgqevReq *req, PqevQuery *q, bool copy, char *data,
		    size_t len)
{
	PgqevReq *ctx = conn ? malloc(sizeof(*ctx)) : NULL;
	if (!ctx) {
		free(data);
		return conn ? -ENOMEM : -ENOTCONN;
	}
	*ctx = *req;
	q->arg = ctx;
	int rc = copy ? pqev_conn_send_copy(conn, q, data, len) : pqev_conn_send(conn, q, NULL);
	if (rc < 0)
		free(ctx);
	return rc;
}

int pgqev_req_send(PqevConn *conn, const PgqevReq *req, const char *sql, int nparams,
		   const char *const *params, unsigned flags, PqevRowsFn on_rows,
		   PqevDoneFn on_done)
{
	PqevQuery q = {.sql = sql,
		       .nparams = nparams,
		       .params = params,
		       .flags = flags,
		       .on_rows = on_rows,
		       .on_done = on_done};
	return req_send(conn, req, &q, false, NULL, 0);
}

int pgqev_req_send_copy(PqevConn *conn, const PgqevReq *req, const char *sql, char *data,
			size_t len, PqevDoneFn on_done)
{
	PqevQuery q = {.sql = sql, .on_done = on_done};
	return req_send(conn, req, &q, true, data, len);
}

void pgqev_error_fill(PgqevError *err, char msg[PGQEV_MSG_MAX], const char *label,
		      PgqevErrorKind kind, int64_t batch_id, usec_t retry_in, unsigned streak,
		      const char *detail)
{
	if (snprintf(msg, PGQEV_MSG_MAX, "%s: %s", label, detail) >= PGQEV_MSG_MAX)
		memcpy(msg + PGQEV_MSG_MAX - 4, "...", 4); /* cut: say so */
	*err = (PgqevError){
		.kind = kind,
		.batch_id = batch_id,
		.streak = streak,
		.retry_in = retry_in,
		.message = msg,
		.label = label,
		.detail = detail,
	};
}

int pgqev_timer_arm(struct event *timer, usec_t delay)
{
	struct timeval tv = pqev_usec_to_timeval(delay);
	evtimer_del(timer);
	/* NOTE: evtimer_add only fails on a broken base; then the next
	   notification or reconnect restarts the machine. */
	return evtimer_add(timer, &tv);
}

static void free_limiter_later(evutil_socket_t fd, short what, void *arg)
{
	if (pqev_connlimit_free(arg) < 0)
		(void)event_base_once(pqev_connlimit_base(arg), -1, EV_TIMEOUT, free_limiter_later,
				      arg, NULL);
}

void pgqev_limiter_release(struct event_base *base, PqevConnLimit *lim)
{
	/* connections freed inside their own callback still hold the limiter
	   until it unwinds: free it on the next loop pass then */
	if (lim && pqev_connlimit_free(lim) < 0)
		(void)event_base_once(base, -1, EV_TIMEOUT, free_limiter_later, lim, NULL);
}

PqevConn *pgqev_conn_open(PqevConnLimit *lim, const char *conninfo, const char *name,
			  const char *app, usec_t connect_timeout, usec_t statement_timeout,
			  const PqevConnCallbacks *cb)
{
	PqevConnConfig cc;
	pqev_conn_config_init(&cc);
	cc.conninfo = conninfo;
	cc.name = name;
	cc.application_name = app;
	cc.connect_timeout = connect_timeout;
	cc.statement_timeout = statement_timeout;
	return pqev_conn_new(lim, &cc, cb);
}

void pgqev_struct_out(void *out, size_t size, const void *src, size_t src_size)
{
	/* an older program's struct is shorter; a newer one's extra fields are
	   unknown here: zero */
	size_t n = size < src_size ? size : src_size;
	if (size > n)
		memset(out, 0, size);
	memcpy(out, src, n);
	memcpy(out, &size, sizeof(size)); /* every such struct starts with size_t size */
}

bool pgqev_config_in(struct event_base *base, void *in, size_t in_size, const void *cfg,
		     size_t size1, const char *init_name, char *errbuf, size_t errsize)
{
	if (!base)
		return pgqev_errbuf_set(errbuf, errsize, "event_base: required");
	if (!cfg)
		return pgqev_errbuf_set(errbuf, errsize, "config: required");
	size_t size;
	memcpy(&size, cfg, sizeof(size));
	/* the caller's struct may be shorter or longer than ours (see size) */
	int rc = pqev_struct_in(in, in_size, cfg, size, 0);
	if (rc == -E2BIG)
		return pgqev_errbuf_set(errbuf, errsize,
					"config: sets fields this library (%s) does not know",
					PGQEV_VERSION);
	if (rc < 0 || size < size1)
		return pgqev_errbuf_set(errbuf, errsize, "config: not filled by %s() (%s)",
					init_name, PGQEV_VERSION);
	memcpy(in, &in_size, sizeof(in_size));
	return true;
}

char *pgqev_strdup_opt(const char *s, bool *oom)
{
	if (!s)
		return NULL;
	char *d = strdup(s);
	if (!d)
		*oom = true;
	return d;
}

char *pgqev_default_label(const char *label, const char *conninfo, const char *what)
{
	if (label)
		return strdup(label);
	char *db = pgqev_conninfo_dbname(conninfo);
	char *l = pgqev_sprintf("%s/%s", db ? db : "-", what);
	free(db);
	return l;
}

#ifdef PGQEV_CASSERT
void pgqev_assert_failed(const char *cond, const char *file, int line)
{
	fprintf(stderr, "libpgqev: assertion failed: %s (%s:%d)\n", cond, file, line);
	abort();
}
#endif
