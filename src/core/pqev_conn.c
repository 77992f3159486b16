/*
 * PqevConn lifecycle: connect attempts (limiter slot, off-loop resolving,
 * PQconnectPoll under our own deadline), the READY state's socket and idle
 * timer, and every way out of READY: failure with backoff, restart, recycle,
 * close and free. Requests and result processing live in pqev_conn_req.c.
 *
 * All state changes go through set_state(). Socket and timer events are
 * handled as switch (event) then switch (state); an unexpected combination is
 * a "bad state" and resets the connection through the failure path.
 *
 * Re-entrancy: every entry from the loop or from an API call that may run user
 * callbacks is bracketed by pqev_conn_enter()/pqev_conn_leave(); a free asked
 * for inside is carried out by the outermost leave.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/dns.h>
#include <event2/util.h>

#include "pqev_conn_int.h"

static const char *const state_names[] = {
	[PQEV_CONN_CLOSED] = "closed",       [PQEV_CONN_WAIT_SLOT] = "wait_slot",
	[PQEV_CONN_RESOLVING] = "resolving", [PQEV_CONN_CONNECTING] = "connecting",
	[PQEV_CONN_READY] = "ready",         [PQEV_CONN_BACKOFF] = "backoff",
};

const char *pqev_conn_state_name(PqevConnState st)
{
	if ((unsigned)st < sizeof(state_names) / sizeof(state_names[0]) && state_names[st])
		return state_names[st];
	return "invalid";
}

usec_t pqev_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (usec_t)ts.tv_sec * USEC_PER_SEC + (usec_t)ts.tv_nsec / 1000;
}

static struct timeval to_tv(usec_t u)
{
	struct timeval tv = {.tv_sec = (time_t)(u / USEC_PER_SEC),
			     .tv_usec = (suseconds_t)(u % USEC_PER_SEC)};
	return tv;
}

void pqev_conn_debug(PqevConn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	pqev_connlimit_debugv(c->lim, c->name, fmt, ap);
	va_end(ap);
}

/* c->err and c->err_msg before the first error (read only: every write goes
   to the buffer) */
static char conn_err_none[1];

void pqev_conn_clear_err(PqevConn *c, bool release)
{
	if (c->err == conn_err_none)
		return;
	if (release) {
		free(c->err); /* err_msg is the buffer's second half */
		c->err = c->err_msg = conn_err_none;
	} else {
		c->err[0] = c->err_msg[0] = '\0';
	}
}

void pqev_conn_seterr(PqevConn *c, const char *fmt, ...)
{
	va_list ap;
	if (c->err == conn_err_none) {
		char *buf = malloc(2 * PQEV_ERR_MAX);

		if (!buf)
			return; /* out of memory: the message is lost, "" stays */
		c->err = buf;
		c->err_msg = buf + PQEV_ERR_MAX;
	}
	va_start(ap, fmt);
	vsnprintf(c->err, PQEV_ERR_MAX, fmt, ap);
	va_end(ap);
	pqev_flatten_message(c->err);
	pqev_conn_label(c, c->err_msg, PQEV_ERR_MAX, c->err);
}

void pqev_conn_label(const PqevConn *c, char *out, size_t size, const char *detail)
{
	if (snprintf(out, size, "%s: %s", c->name, detail) < 0)
		out[0] = '\0';
}

void pqev_flatten_message(char *msg)
{
	/* libpq texts end in newlines and continue lines with "\n\t": keep one log
	   line, a line break becoming one space, or ". " where a sentence ended
	   without a full stop ("unexpectedly\n\tThis probably means"). Read from a
	   copy: ". " may be longer than the break it replaces; the result is cut at
	   the original length. */
	size_t len = strlen(msg), n = 0;
	char *src = strdup(msg);

	if (!src) {
		for (char *p = msg; *p; p++)
			if (*p == '\n' || *p == '\r' || *p == '\t')
				*p = ' ';
		return;
	}
	for (const char *p = src; *p && n < len;) {
		if (*p != '\n' && *p != '\r' && *p != '\t') {
			msg[n++] = *p++;
			continue;
		}
		bool broke = false;
		while (*p == '\n' || *p == '\r' || *p == '\t' || *p == ' ') {
			broke |= *p == '\n' || *p == '\r';
			p++;
		}
		while (n > 0 && msg[n - 1] == ' ')
			n--;
		if (*p == '\0' || n == 0)
			continue;
		char prev = msg[n - 1];
		if (broke && *p >= 'A' && *p <= 'Z' &&
		    ((prev >= 'a' && prev <= 'z') || (prev >= '0' && prev <= '9')) && n < len)
			msg[n++] = '.';
		if (n < len)
			msg[n++] = ' ';
	}
	while (n > 0 && msg[n - 1] == ' ')
		n--;
	msg[n] = '\0';
	free(src);
}

/* The first layout of PqevConnConfig (library 1.0): fields added later go after it. */
#define CONN_CONFIG_SIZE_1 (offsetof(PqevConnConfig, max_pipeline) + sizeof(unsigned))
#define CALLBACKS_SIZE_1   (offsetof(PqevConnCallbacks, arg) + sizeof(void *))

static void config_defaults(PqevConnConfig *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->application_name = "pgqd-ev";
	cfg->connect_timeout = 10 * USEC_PER_SEC;
	cfg->idle_check = 30 * USEC_PER_SEC;
	cfg->idle_check_timeout = 10 * USEC_PER_SEC;
	cfg->retry_base = 250 * USEC_PER_MSEC;
	cfg->retry_cap = 60 * USEC_PER_SEC;
	cfg->keepalives_idle = 30;
	cfg->keepalives_interval = 10;
	cfg->keepalives_count = 3;
	cfg->max_pipeline = 16;
}

void pqev_conn_config_init_size(PqevConnConfig *cfg, size_t size)
{
	PqevConnConfig d;
	if (!cfg || size < sizeof(d.size))
		return;
	config_defaults(&d);
	/* a caller built against an older header has a shorter struct, one built
	   against a newer header a longer one */
	size_t n = size < sizeof(d) ? size : sizeof(d);
	if (size > n)
		memset(cfg, 0, size); /* a newer program's fields: unset */
	memcpy(cfg, &d, n);
	cfg->size = size;
}

/* ---- re-entrancy ---- */

static void conn_destroy(PqevConn *c);

void pqev_conn_enter(PqevConn *c)
{
	c->depth++;
}

void pqev_conn_leave(PqevConn *c)
{
	if (--c->depth == 0 && c->free_pending)
		conn_destroy(c);
}

/* ---- waits: one socket event, one timer ---- */

static void sock_cb(evutil_socket_t fd, short what, void *arg);
static void timer_cb(evutil_socket_t fd, short what, void *arg);

static void sock_disarm(PqevConn *c)
{
	/* NOTE: also when not armed: a kick may have made it active (event_active) */
	if (c->sock_init)
		event_del(&c->sock_ev);
	c->sock_armed = false;
}

/* Wait for `what` on the connection's current socket (re-read every time). */
static int sock_wait(PqevConn *c, short what)
{
	evutil_socket_t fd = PQsocket(c->pg);
	if (fd < 0) {
		pqev_conn_seterr(c, "connection has no socket: %s", PQerrorMessage(c->pg));
		return -EBADF;
	}
	if (c->sock_armed && c->sock_fd == fd && c->sock_what == what)
		return 0;
	sock_disarm(c);
	event_assign(&c->sock_ev, c->base, fd, what, sock_cb, c);
	c->sock_init = true;
	if (event_add(&c->sock_ev, NULL) < 0) {
		pqev_conn_seterr(c, "cannot add socket event");
		return -ENOMEM;
	}
	c->sock_armed = true;
	c->sock_fd = fd;
	c->sock_what = what;
	return 0;
}

static void timer_disarm(PqevConn *c)
{
	if (c->timer_armed) {
		evtimer_del(&c->timer_ev);
		c->timer_armed = false;
	}
	c->timer_idle = false;
}

static int timer_arm(PqevConn *c, usec_t delay)
{
	struct timeval tv = to_tv(delay);
	timer_disarm(c);
	if (evtimer_add(&c->timer_ev, &tv) < 0) {
		pqev_conn_seterr(c, "cannot add timer event");
		return -ENOMEM;
	}
	c->timer_armed = true;
	c->timer_due = pqev_now() + delay;
	return 0;
}

static void set_state(PqevConn *c, PqevConnState st)
{
	if (c->state == st)
		return;
	pqev_conn_debug(c, "state %s -> %s", pqev_conn_state_name(c->state),
			pqev_conn_state_name(st));
	c->state = st;
}

/* ---- tearing down one connection ---- */

static void dns_cancel(PqevConn *c)
{
	if (!c->lookups)
		return;
	for (int i = 0; i < c->nhosts; i++) {
		DnsLookup *l = c->lookups[i];
		if (!l)
			continue;
		if (l->done || !l->req) {
			/* answered, or never issued (out of memory while issuing the others) */
			free(l);
		} else {
			/* evdns reports the cancel later; the lookup frees itself then */
			l->conn = NULL;
			evdns_getaddrinfo_cancel(l->req);
		}
	}
	free(c->lookups);
	c->lookups = NULL;
	c->dns_pending = 0;
}

/* Close the libpq side and every wait; requests are left to the caller. */
/* Sessions kept open between pqev_conn_defer_finish() and pqev_conn_finish_deferred(). */
static struct {
	bool on;
	PGconn **pg;
	size_t n, cap;
} deferred;

static void finish_session(PGconn *pg)
{
	if (deferred.on && deferred.n == deferred.cap) {
		size_t cap = deferred.cap ? deferred.cap * 2 : 256;
		PGconn **v = realloc(deferred.pg, cap * sizeof(*v));

		if (v) {
			deferred.pg = v;
			deferred.cap = cap;
		}
	}
	if (deferred.on && deferred.n < deferred.cap)
		deferred.pg[deferred.n++] = pg;
	else
		PQfinish(pg);
}

void pqev_conn_defer_finish(void)
{
	deferred.on = true;
}

/*
 * Free a session's libpq memory but leave its socket to the process exit.
 * PQfinish writes a Terminate message and closes the socket, and each of these
 * wakes the backend; on a shared CPU each woken backend runs before we do
 * again, so 1,000 of them took seconds. Instead the socket is kept under a new
 * descriptor, libpq's descriptor is pointed at /dev/null (the Terminate then
 * fails with ENOTSOCK, which PQfinish ignores, and the close closes /dev/null),
 * and the exit closes every socket in the kernel in one pass. An idle backend
 * treats the end of its input like a Terminate message (PostgreSQL logs it at
 * DEBUG1 only). On any failure the session is ended the ordinary way.
 */
static void finish_leaving_socket(PGconn *pg, int devnull)
{
	int sock = PQsocket(pg);

	if (devnull >= 0 && sock >= 0) {
		int kept = fcntl(sock, F_DUPFD_CLOEXEC, 0);

		if (kept >= 0 && dup2(devnull, sock) < 0)
			close(kept); /* sock is unchanged: PQfinish ends it */
	}
	PQfinish(pg);
}

unsigned pqev_conn_finish_deferred(void)
{
	size_t n = deferred.n;
	int devnull = n ? open("/dev/null", O_WRONLY | O_CLOEXEC) : -1;

	for (size_t i = 0; i < n; i++)
		finish_leaving_socket(deferred.pg[i], devnull);
	if (devnull >= 0)
		close(devnull);
	free(deferred.pg);
	memset(&deferred, 0, sizeof(deferred));
	return (unsigned)n;
}

static void conn_drop(PqevConn *c)
{
	sock_disarm(c);
	timer_disarm(c);
	dns_cancel(c);
	pqev_connlimit_release(c->lim, c);
	pqev_server_leave(c);
	if (c->pg) {
		finish_session(c->pg);
		c->pg = NULL;
	}
	c->in_pipeline = false;
	c->want_write = false;
	pqev_conn_clear_notices(c);
	pqev_conn_prep_clear(c);
	c->gen++;
}

/* ---- connect attempts ---- */

static void attempt_failed(PqevConn *c)
{
	pqev_conn_failure(c, PQEV_EV_CONNECT_FAILED);
}

static void start_libpq(PqevConn *c)
{
	if (pqev_conninfo_build(c) < 0) {
		attempt_failed(c);
		return;
	}
	c->pg = PQconnectStartParams((const char *const *)c->keys, (const char *const *)c->vals, 0);
	pqev_conninfo_release_params(c);
	if (!c->pg) {
		pqev_conn_seterr(c, "out of memory starting a connection");
		attempt_failed(c);
		return;
	}
	if (PQstatus(c->pg) == CONNECTION_BAD) {
		/* a unix socket that is missing or refuses fails right here; so do bad
		   option values, which then wait on the server's probe like the rest */
		c->fail_class = pqev_classify_connect_error(PQerrorMessage(c->pg), false);
		pqev_conn_seterr(c, "connect failed: %s", PQerrorMessage(c->pg));
		attempt_failed(c);
		return;
	}
	/* verbose: the SQLSTATE of a refusal tells whose failure it is (cleaned off
	   the message again); back to the default once connected */
	PQsetErrorVerbosity(c->pg, PQERRORS_VERBOSE);
	PQsetNoticeReceiver(c->pg, pqev_notice_receiver, c);
	set_state(c, PQEV_CONN_CONNECTING);
	/* libpq: after PQconnectStart, act as if PQconnectPoll asked for writing */
	if (sock_wait(c, EV_WRITE) < 0)
		attempt_failed(c);
}

/* All lookups answered: connect with the addresses, or fail the attempt. */
static void dns_finish(PqevConn *c)
{
	for (int i = 0; i < c->nhosts; i++) {
		if (c->lookups[i] && c->hostaddrs[i][0] == '\0') {
			dns_cancel(c);
			c->fail_class = PQEV_FAIL_SERVER; /* the target cannot be reached */
			attempt_failed(c);
			return;
		}
	}
	dns_cancel(c);
	start_libpq(c);
}

static void dns_done(int result, struct evutil_addrinfo *res, void *arg)
{
	DnsLookup *l = arg;
	PqevConn *c = l->conn;
	l->done = true;
	if (!c) {
		/* cancelled: the connection has forgotten this lookup */
		if (res)
			evutil_freeaddrinfo(res);
		free(l);
		return;
	}
	if (result == 0 && res) {
		char buf[INET6_ADDRSTRLEN + 1] = "";
		const void *a = NULL;
		if (res->ai_family == AF_INET)
			a = &((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr;
		else if (res->ai_family == AF_INET6)
			a = &((struct sockaddr_in6 *)(void *)res->ai_addr)->sin6_addr;
		if (a && evutil_inet_ntop(res->ai_family, a, buf, sizeof(buf))) {
			char *s = strdup(buf);
			if (s) {
				free(c->hostaddrs[l->index]);
				c->hostaddrs[l->index] = s;
			}
		}
	}
	if (res)
		evutil_freeaddrinfo(res);
	if (c->hostaddrs[l->index][0] == '\0')
		pqev_conn_seterr(c, "could not resolve host \"%s\": %s", c->hosts[l->index],
				 result ? evutil_gai_strerror(result) : "no address");
	/* NOTE: evdns may answer inside evdns_getaddrinfo(); start_resolving goes on then */
	if (--c->dns_pending > 0 || c->dns_issuing)
		return;
	pqev_conn_enter(c);
	dns_finish(c);
	pqev_conn_leave(c);
}

static void start_resolving(PqevConn *c)
{
	struct evdns_base *dns = pqev_connlimit_dns(c->lim);
	struct evutil_addrinfo hints;

	if (!dns) {
		pqev_conn_seterr(c, "cannot create the resolver");
		attempt_failed(c);
		return;
	}
	c->lookups = calloc((size_t)c->nhosts, sizeof(DnsLookup *));
	if (!c->lookups) {
		pqev_conn_seterr(c, "out of memory resolving");
		attempt_failed(c);
		return;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	set_state(c, PQEV_CONN_RESOLVING);
	c->dns_pending = 0;
	for (int i = 0; i < c->nhosts; i++) {
		const char *h = c->hosts[i];
		if (h[0] == '\0' || h[0] == '/' || h[0] == '@')
			continue;
		DnsLookup *l = calloc(1, sizeof(*l));
		if (!l) {
			pqev_conn_seterr(c, "out of memory resolving");
			attempt_failed(c);
			return;
		}
		l->conn = c;
		l->index = i;
		c->lookups[i] = l;
		c->dns_pending++;
	}
	c->dns_issuing = true;
	for (int i = 0; i < c->nhosts; i++) {
		DnsLookup *l = c->lookups[i];
		if (!l)
			continue;
		struct evdns_getaddrinfo_request *rq =
			evdns_getaddrinfo(dns, c->hosts[i], NULL, &hints, dns_done, l);
		if (!l->done)
			l->req = rq;
	}
	c->dns_issuing = false;
	if (c->dns_pending == 0)
		dns_finish(c); /* every answer came at once (hosts file, numeric) */
}

/* With a slot in hand: arm the deadline, then resolve or connect. */
static void attempt_with_slot(PqevConn *c)
{
	if (timer_arm(c, c->cfg.connect_timeout) < 0) {
		attempt_failed(c);
		return;
	}
	if (c->need_dns)
		start_resolving(c);
	else
		start_libpq(c);
}

void pqev_conn_slot_granted(PqevConn *c)
{
	pqev_conn_enter(c);
	switch (c->state) {
	case PQEV_CONN_WAIT_SLOT:
		if (pqev_server_is_down(c)) {
			/* it went down while we queued: wait for its probe instead */
			pqev_conn_seterr(c, "%s", pqev_server_error(c));
			c->fail_class = PQEV_FAIL_SERVER;
			attempt_failed(c);
			break;
		}
		attempt_with_slot(c);
		break;
	default:
		/* NOTE: the limiter only grants to waiters; anything else is a bug */
		pqev_conn_seterr(c, "bad state %s on connect slot", pqev_conn_state_name(c->state));
		pqev_connlimit_release(c->lim, c);
		pqev_conn_failure(c, PQEV_EV_CONNECT_FAILED);
		break;
	}
	pqev_conn_leave(c);
}

/* Begin an attempt now: take a slot or queue for one. */
static void begin_attempt(PqevConn *c)
{
	/* the settings may have changed since the last attempt (set_config) */
	if (pqev_conninfo_parse(c) < 0) {
		attempt_failed(c);
		return;
	}
	if (pqev_server_is_down(c)) {
		/* its probe will tell when it is back: no attempt of our own meanwhile */
		pqev_conn_seterr(c, "%s", pqev_server_error(c));
		c->fail_class = PQEV_FAIL_SERVER;
		attempt_failed(c);
		return;
	}
	set_state(c, PQEV_CONN_WAIT_SLOT);
	if (pqev_connlimit_acquire(c->lim, c))
		attempt_with_slot(c);
}

void pqev_conn_attempt(PqevConn *c)
{
	begin_attempt(c);
}

static void connected(PqevConn *c)
{
	PqevConnEvent ev = {.type = PQEV_EV_CONNECTED};
	uint64_t gen;

	pqev_connlimit_release(c->lim, c);
	timer_disarm(c);
	PQsetErrorVerbosity(c->pg, PQERRORS_DEFAULT);
	pqev_server_answered(c);
	ev.streak = c->streak;
	ev.recovered = c->streak > 0;
	c->streak = 0;
	/* NOTE: the backoff is reset by the first request that succeeds, not here: a
	   session that dies before doing any work (a pooler that cannot reach its server,
	   a backend killed at once) must not be retried at the base delay forever */
	c->connected_at = c->last_activity = pqev_now();
	pqev_conn_clear_err(c, true);
	set_state(c, PQEV_CONN_READY);
	if (PQsetnonblocking(c->pg, 1) != 0 || pqev_req_queue_listens(c) < 0) {
		pqev_conn_seterr(c, "connection setup failed: %s", PQerrorMessage(c->pg));
		pqev_conn_failure(c, PQEV_EV_LOST);
		return;
	}
	char msg[PQEV_ERR_MAX], detail[PQEV_ERR_MAX];
	if (ev.recovered)
		snprintf(detail, sizeof(detail), "connected after %u failure%s (backend %d)",
			 ev.streak, ev.streak == 1 ? "" : "s", PQbackendPID(c->pg));
	else
		snprintf(detail, sizeof(detail), "connected (backend %d)", PQbackendPID(c->pg));
	pqev_conn_label(c, msg, sizeof(msg), detail);
	ev.message = msg;
	ev.detail = detail;
	gen = c->gen;
	if (c->cb.on_event)
		c->cb.on_event(c, &ev, c->cb.arg);
	if (c->gen != gen)
		return;
	if (pqev_conn_io(c, 0))
		pqev_conn_arm_idle(c);
}

static void connect_poll(PqevConn *c)
{
	PostgresPollingStatusType st = PQconnectPoll(c->pg);
	uint64_t gen = c->gen;
	if (!pqev_conn_dispatch_async(c) || c->gen != gen)
		return;
	/* authenticated: the server takes connections again, so its waiters need not
	   wait for this backend's startup too */
	if (c->srv_probing && PQstatus(c->pg) == CONNECTION_AUTH_OK)
		pqev_server_answered(c);
	switch (st) {
	case PGRES_POLLING_READING:
		if (sock_wait(c, EV_READ) < 0)
			attempt_failed(c);
		break;
	case PGRES_POLLING_WRITING:
		if (sock_wait(c, EV_WRITE) < 0)
			attempt_failed(c);
		break;
	case PGRES_POLLING_OK:
		sock_disarm(c);
		connected(c);
		break;
	case PGRES_POLLING_FAILED:
	default: {
		char *msg = strdup(PQerrorMessage(c->pg));
		c->fail_class = pqev_classify_connect_error(msg ? msg : "",
							    PQconnectionNeedsPassword(c->pg));
		if (msg)
			pqev_clean_connect_error(msg);
		pqev_conn_seterr(c, "connect failed: %s", msg ? msg : PQerrorMessage(c->pg));
		free(msg);
		attempt_failed(c);
		break;
	}
	}
}

static void sock_cb(evutil_socket_t fd, short what, void *arg)
{
	PqevConn *c = arg;
	pqev_conn_enter(c);
	/* persistent only in READY; one-shot waits are re-armed by their handlers */
	if (!(c->sock_what & EV_PERSIST))
		c->sock_armed = false;
	switch (c->state) {
	case PQEV_CONN_CONNECTING:
		connect_poll(c);
		break;
	case PQEV_CONN_READY:
		c->last_activity = pqev_now();
		if (pqev_conn_io(c, what))
			pqev_conn_arm_idle(c);
		break;
	default:
		pqev_conn_seterr(c, "bad state %s on socket event", pqev_conn_state_name(c->state));
		pqev_conn_failure(c, PQEV_EV_LOST);
		break;
	}
	pqev_conn_leave(c);
}

void pqev_conn_arm_io(PqevConn *c)
{
	short what = EV_READ | EV_PERSIST;
	if (c->want_write)
		what |= EV_WRITE;
	if (sock_wait(c, what) < 0)
		pqev_conn_failure(c, PQEV_EV_LOST);
}

/*
 * Only outside a transaction block may the session be replaced: BEGIN ... sent
 * as separate requests would otherwise lose its work, and its COMMIT would
 * succeed on the new session. Exact because an idle session is never left in
 * pipeline mode (see send_queued).
 */
static bool recyclable(const PqevConn *c)
{
	return c->cfg.lifetime > 0 && !c->in_pipeline && PQtransactionStatus(c->pg) == PQTRANS_IDLE;
}

/* READY and idle: the next liveness check or lifetime expiry. */
void pqev_conn_arm_idle(PqevConn *c)
{
	usec_t now, due = USEC_INFINITY;
	if (c->state != PQEV_CONN_READY || c->nqueued + c->ninflight > 0)
		return;
	now = pqev_now();
	if (c->cfg.idle_check > 0)
		due = c->last_activity + c->cfg.idle_check;
	/* recomputed every time: a COMMIT makes a session recyclable at once */
	if (recyclable(c) && c->connected_at + c->cfg.lifetime < due)
		due = c->connected_at + c->cfg.lifetime;
	if (due == USEC_INFINITY) {
		timer_disarm(c);
		return;
	}
	/* Activity only moves the idle check later: an idle timer already due
	   earlier stays, fires early and re-arms (ready_timer). Re-arming after
	   every reply cost two timer-heap operations per request, and the heap
	   was the ticker's largest user-space cost at a thousand connections. */
	if (c->timer_armed && c->timer_idle && c->timer_due <= due)
		return;
	if (timer_arm(c, due > now ? due - now : 0) < 0) {
		pqev_conn_failure(c, PQEV_EV_LOST);
		return;
	}
	c->timer_idle = true;
}

static void ready_timer(PqevConn *c)
{
	usec_t now = pqev_now();
	if (c->nqueued + c->ninflight > 0)
		return; /* busy: request timeouts and keepalives watch it; re-armed when idle */
	if (recyclable(c) && now >= c->connected_at + c->cfg.lifetime) {
		pqev_conn_restart(c, true);
		return;
	}
	if (c->cfg.idle_check > 0 && now >= c->last_activity + c->cfg.idle_check) {
		if (pqev_req_queue_liveness(c) < 0) {
			pqev_conn_seterr(c, "out of memory queueing the liveness check");
			pqev_conn_failure(c, PQEV_EV_LOST);
			return;
		}
		pqev_conn_io(c, 0);
		return;
	}
	pqev_conn_arm_idle(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	PqevConn *c = arg;
	pqev_conn_enter(c);
	c->timer_armed = false;
	c->timer_idle = false;
	switch (c->state) {
	case PQEV_CONN_BACKOFF:
		begin_attempt(c);
		break;
	case PQEV_CONN_RESOLVING:
	case PQEV_CONN_CONNECTING:
		pqev_conn_seterr(c, "connect timed out after %.1f s%s",
				 (double)c->cfg.connect_timeout / 1e6,
				 c->state == PQEV_CONN_RESOLVING ? " (resolving)" : "");
		c->fail_class = PQEV_FAIL_SERVER;
		attempt_failed(c);
		break;
	case PQEV_CONN_READY:
		ready_timer(c);
		break;
	default:
		pqev_conn_seterr(c, "bad state %s on timer", pqev_conn_state_name(c->state));
		pqev_conn_failure(c, PQEV_EV_LOST);
		break;
	}
	pqev_conn_leave(c);
}

/* ---- leaving READY ---- */

void pqev_conn_failure(PqevConn *c, PqevConnEventType type)
{
	struct ReqList fail;
	PqevConnEvent ev = {.type = type};
	char msg[PQEV_ERR_MAX], detail[PQEV_ERR_MAX];

	PqevFailClass cls = type == PQEV_EV_CONNECT_FAILED ? c->fail_class : PQEV_FAIL_LOCAL;

	c->fail_class = PQEV_FAIL_LOCAL;
	if (c->state == PQEV_CONN_CLOSED)
		return;
	pqev_conn_enter(c);
	pqev_req_take_all(c, &fail, true);
	/* the server answered (about the database or role): it is up for everyone */
	if (cls == PQEV_FAIL_DB)
		pqev_server_answered(c);
	conn_drop(c);
	if (c->err[0] == '\0')
		pqev_conn_seterr(c, "%s",
				 type == PQEV_EV_LOST ? "connection lost" : "connect failed");
	snprintf(msg, sizeof(msg), "%s", c->err_msg);
	snprintf(detail, sizeof(detail), "%s", c->err);
	c->streak++;
	ev.streak = c->streak;
	ev.message = msg;
	ev.detail = detail;
	set_state(c, PQEV_CONN_BACKOFF);
	if (cls == PQEV_FAIL_SERVER && c->srv) {
		/* the server's failure, not ours: no own backoff, wait for its probe */
		ev.server_down = true;
		ev.retry_in = pqev_server_wait(c);
	} else {
		ev.retry_in = pqev_backoff_next(&c->backoff);
		if (timer_arm(c, ev.retry_in) < 0) {
			/* NOTE: never strand the machine: without a timer, try again now */
			begin_attempt(c);
		}
	}
	if (c->cb.on_event)
		c->cb.on_event(c, &ev, c->cb.arg);
	pqev_req_fail_list(&fail, PQEV_CONN_LOST, detail);
	pqev_conn_leave(c);
}

void pqev_conn_restart(PqevConn *c, bool recycled)
{
	struct ReqList fail;
	char msg[PQEV_ERR_MAX];
	const char *detail = recycled ? "connection lifetime reached, reconnecting"
				      : "connection dropped on request, reconnecting";

	pqev_conn_enter(c);
	pqev_req_take_all(c, &fail, false);
	conn_drop(c);
	pqev_conn_label(c, msg, sizeof(msg), detail);
	pqev_conn_debug(c, "%s", detail);
	begin_attempt(c);
	if (recycled && c->cb.on_event) {
		PqevConnEvent ev = {.type = PQEV_EV_RECYCLED, .message = msg, .detail = detail};
		c->cb.on_event(c, &ev, c->cb.arg);
	}
	pqev_req_fail_list(&fail, PQEV_CONN_LOST, detail);
	pqev_conn_leave(c);
}

/* ---- public lifecycle ---- */

static char *dup_opt(const char *s, bool *oom)
{
	char *d;
	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*oom = true;
	return d;
}

static int copy_config(PqevConn *c, const PqevConnConfig *given)
{
	PqevConnConfig in;
	config_defaults(&in);
	int rc = pqev_struct_in(&in, sizeof(in), given, given->size, 0);
	if (rc < 0 || given->size < CONN_CONFIG_SIZE_1)
		return rc < 0 ? rc : -EINVAL;
	const PqevConnConfig *cfg = &in;
	bool oom = false;
	char *ci = dup_opt(cfg->conninfo, &oom);
	char *nm = dup_opt(cfg->name, &oom);
	char *an = dup_opt(cfg->application_name, &oom);
	if (oom) {
		free(ci);
		free(nm);
		free(an);
		return -ENOMEM;
	}
	free(c->conninfo);
	free(c->cfg_name);
	free(c->appname);
	c->cfg = *cfg;
	c->cfg.size = sizeof(c->cfg);
	c->conninfo = ci;
	c->cfg_name = nm;
	c->appname = an;
	c->cfg.conninfo = ci;
	c->cfg.name = nm;
	c->cfg.application_name = an;
	if (c->cfg.max_pipeline == 0)
		c->cfg.max_pipeline = 1;
	if (c->cfg.connect_timeout == 0)
		c->cfg.connect_timeout = 10 * USEC_PER_SEC;
	if (c->cfg.idle_check_timeout == 0)
		c->cfg.idle_check_timeout = 10 * USEC_PER_SEC;
	unsigned failures = c->backoff.failures;
	pqev_backoff_init(&c->backoff, c->cfg.retry_base ? c->cfg.retry_base : 250 * USEC_PER_MSEC,
			  c->cfg.retry_cap ? c->cfg.retry_cap : 60 * USEC_PER_SEC, 0);
	/* keep the failure count: a reload must not make a failing database hammer */
	c->backoff.failures = failures;
	pqev_sanitize(c->name, sizeof(c->name), nm ? nm : "?");
	return 0;
}

PqevConn *pqev_conn_new(PqevConnLimit *lim, const PqevConnConfig *cfg, const PqevConnCallbacks *cb)
{
	PqevConn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->err = c->err_msg = conn_err_none;
	c->lim = lim;
	c->base = pqev_connlimit_base(lim);
	if (copy_config(c, cfg) < 0) {
		free(c);
		return NULL;
	}
	if (cb && pqev_struct_in(&c->cb, sizeof(c->cb), cb, cb->size, CALLBACKS_SIZE_1) < 0) {
		free(c->conninfo);
		free(c->cfg_name);
		free(c->appname);
		free(c);
		return NULL;
	}
	TAILQ_INIT(&c->queue);
	TAILQ_INIT(&c->inflight);
	c->notices_tail = &c->notices;
	c->state = PQEV_CONN_CLOSED;
	evtimer_assign(&c->timer_ev, c->base, timer_cb, c);
	pqev_connlimit_attach(lim);
	return c;
}

int pqev_conn_start(PqevConn *c)
{
	int rc;
	if (c->state != PQEV_CONN_CLOSED || c->free_pending)
		return 0;
	rc = pqev_conninfo_parse(c);
	if (rc < 0)
		return rc;
	pqev_conn_clear_err(c, false);
	c->gen++;
	/* NOTE: the first attempt starts from the loop, so no callback runs in here */
	set_state(c, PQEV_CONN_BACKOFF);
	if (timer_arm(c, 0) < 0) {
		set_state(c, PQEV_CONN_CLOSED);
		return -ENOMEM;
	}
	return 0;
}

void pqev_conn_close(PqevConn *c)
{
	struct ReqList fail;

	if (c->state == PQEV_CONN_CLOSED && c->nqueued + c->ninflight == 0)
		return;
	pqev_conn_enter(c);
	pqev_req_take_all(c, &fail, true);
	conn_drop(c);
	set_state(c, PQEV_CONN_CLOSED);
	pqev_req_fail_list(&fail, PQEV_CLOSED, "connection closed by the application");
	pqev_conn_leave(c);
}

void pqev_conn_reconnect(PqevConn *c)
{
	if (c->state == PQEV_CONN_CLOSED || c->free_pending)
		return;
	pqev_conn_restart(c, false);
}

static void conn_destroy(PqevConn *c)
{
	pqev_server_unbind(c);
	pqev_conn_clear_notices(c);
	pqev_conn_prep_clear(c);
	pqev_conninfo_clear(c);
	for (size_t i = 0; i < c->nchannels; i++)
		free(c->channels[i]);
	free(c->channels);
	free(c->conninfo);
	free(c->cfg_name);
	free(c->appname);
	pqev_conn_clear_err(c, true);
	pqev_connlimit_detach(c->lim);
	free(c);
}

PqevConn *pqev_conn_free(PqevConn *c)
{
	if (!c || c->free_pending)
		return NULL;
	pqev_conn_enter(c);
	pqev_conn_close(c);
	c->free_pending = true;
	pqev_conn_leave(c);
	return NULL;
}

int pqev_conn_set_config(PqevConn *c, const PqevConnConfig *cfg)
{
	char name[PQEV_NAME_MAX];
	memcpy(name, c->name, sizeof(name));
	int rc = copy_config(c, cfg);
	if (rc < 0)
		return rc;
	/* a derived label is recomputed at the next attempt; keep it until then */
	if (!c->cfg_name)
		memcpy(c->name, name, sizeof(name));
	return 0;
}

PqevConnState pqev_conn_state(const PqevConn *c)
{
	return c->state;
}

bool pqev_conn_is_ready(const PqevConn *c)
{
	return c->state == PQEV_CONN_READY;
}

const char *pqev_conn_name(const PqevConn *c)
{
	return c->name;
}

const char *pqev_conn_error(const PqevConn *c)
{
	return c->err_msg;
}

const char *pqev_conn_error_detail(const PqevConn *c)
{
	return c->err;
}

unsigned pqev_conn_pending(const PqevConn *c)
{
	return c->nqueued + c->ninflight;
}

unsigned pqev_conn_streak(const PqevConn *c)
{
	return c->streak;
}

int pqev_conn_backend_pid(const PqevConn *c)
{
	return c->state == PQEV_CONN_READY ? PQbackendPID(c->pg) : 0;
}

PGconn *pqev_conn_pgconn(const PqevConn *c)
{
	return c->state == PQEV_CONN_READY ? c->pg : NULL;
}
