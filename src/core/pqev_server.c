/*
 * Servers: a failed attempt that says the server is down (refused, no socket
 * file, "the database system is starting up" / "shutting down" / "in recovery
 * mode", a connect deadline, a lost connection during startup) belongs to the
 * server, not to the database. Such a connection does not back off on its own:
 * it waits on its server (one PqevServer per connection target, host, hostaddr
 * and port, per limiter). While a server is down, one waiter at a time makes a
 * real attempt as the probe, every quarter to half of retry_base (62-125 ms by
 * default); the
 * moment any attempt reaches the server (connected, or refused for a database
 * or role reason) every waiter starts its attempt at once, through the limiter.
 * So a long outage never pushes a database's retry out to backoff_cap, and a
 * server coming back is found within one probe interval.
 *
 * Invariants:
 * - c->srv_waiting: c is on s->waiters, state BACKOFF, no timer armed.
 * - c->srv_probing: c == s->probe, its attempt is in progress (WAIT_SLOT,
 *   RESOLVING or CONNECTING); at most one probe per server.
 * - A server is freed when no connection refers to it (refs == 0); callbacks
 *   run from its events hold a reference meanwhile.
 *
 * Outages are reported once per server through the limiter's server hook, not
 * once per connection: "down" after PQEV_SERVER_REPORT_DELAY (by then the
 * connections it broke wait for it and can be counted), "up" when it answers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_clock.h>

#include "pqev_conn_int.h"

struct PqevServer {
	PqevServer *next;
	PqevConnLimit *lim;
	char *key;
	unsigned refs;
	bool down;
	usec_t interval; /* probe spacing while down: half the smallest retry_base of
			    the waiters; each delay is drawn from [interval/2, interval] */
	TAILQ_HEAD(, PqevConn) waiters;
	unsigned nwaiting;
	PqevConn *probe;
	struct event *probe_ev;
	struct event *release_ev;
	PqevBackoff rng;
	char err[PQEV_ERR_MAX]; /* the failure that says it is down, without a label */
	usec_t down_since;
	bool reported; /* this outage's "down" report was made */
	struct event *report_ev;
};

/* ---- classification ---- */

/* SQLSTATEs that mean "this server does not take connections now". */
static bool sqlstate_server_level(const char *s)
{
	return strncmp(s, "57P01", 5) == 0 || /* admin_shutdown */
	       strncmp(s, "57P02", 5) == 0 || /* crash_shutdown */
	       strncmp(s, "57P03", 5) == 0;   /* cannot_connect_now: starting up, shutting
						 down, in recovery */
}

bool pqev_sqlstate_is_server_down(const char *sqlstate)
{
	return sqlstate && strlen(sqlstate) == 5 && sqlstate_server_level(sqlstate);
}

static bool is_sqlstate_char(char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z');
}

/* At p: "XXXXX: " (a verbose-mode SQLSTATE). */
static bool sqlstate_at(const char *p)
{
	for (int i = 0; i < 5; i++)
		if (!is_sqlstate_char(p[i]))
			return false;
	return p[5] == ':' && p[6] == ' ';
}

PqevFailClass pqev_classify_connect_error(const char *msg, bool needs_password)
{
	if (needs_password)
		return PQEV_FAIL_DB; /* the server asked for a password we do not have */
	/* out of descriptors here ("could not create socket: ..."): not the server's fault */
	if (msg && (strstr(msg, strerror(EMFILE)) || strstr(msg, strerror(ENFILE))))
		return PQEV_FAIL_DB;
	/* libpq formats a server error as "SEVERITY:  XXXXX: text" in verbose mode
	   (the severity may be translated, the layout is not) */
	for (const char *p = msg ? strstr(msg, ":  ") : NULL; p; p = strstr(p + 1, ":  ")) {
		if (!sqlstate_at(p + 3))
			continue;
		if (!sqlstate_server_level(p + 3))
			return PQEV_FAIL_DB; /* the server answered about the database or role */
	}
	/* no answer (refused, no socket, EOF, timeout) or only "not now" answers */
	return PQEV_FAIL_SERVER;
}

void pqev_clean_connect_error(char *msg)
{
	char *w = msg;
	for (char *p = msg; *p;) {
		/* drop a LOCATION line (verbose mode) */
		if ((p == msg || p[-1] == '\n') && strncmp(p, "LOCATION:  ", 11) == 0) {
			char *e = strchr(p, '\n');
			p = e ? e + 1 : p + strlen(p);
			continue;
		}
		/* drop the SQLSTATE after the severity */
		if (p[0] == ':' && p[1] == ' ' && p[2] == ' ' && sqlstate_at(p + 3)) {
			memmove(w, p, 3);
			w += 3;
			p += 3 + 7;
			continue;
		}
		*w++ = *p++;
	}
	*w = '\0';
}

/* ---- the registry ---- */

static void probe_cb(evutil_socket_t fd, short what, void *arg);
static void release_cb(evutil_socket_t fd, short what, void *arg);
static void report_cb(evutil_socket_t fd, short what, void *arg);

static void server_free(PqevServer *s)
{
	PqevServer **list = pqev_connlimit_servers(s->lim);
	for (PqevServer **p = list; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			break;
		}
	}
	event_free(s->probe_ev);
	event_free(s->release_ev);
	event_free(s->report_ev);
	free(s->key);
	free(s);
}

static void server_put(PqevServer *s)
{
	if (--s->refs == 0)
		server_free(s);
}

static PqevServer *server_get(PqevConnLimit *lim, const char *key)
{
	PqevServer **list = pqev_connlimit_servers(lim);
	struct event_base *base = pqev_connlimit_base(lim);
	PqevServer *s;

	for (s = *list; s; s = s->next) {
		if (strcmp(s->key, key) == 0) {
			s->refs++;
			return s;
		}
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->lim = lim;
	s->key = strdup(key);
	s->probe_ev = evtimer_new(base, probe_cb, s);
	s->release_ev = event_new(base, -1, 0, release_cb, s);
	s->report_ev = evtimer_new(base, report_cb, s);
	if (!s->key || !s->probe_ev || !s->release_ev || !s->report_ev) {
		if (s->probe_ev)
			event_free(s->probe_ev);
		if (s->release_ev)
			event_free(s->release_ev);
		if (s->report_ev)
			event_free(s->report_ev);
		free(s->key);
		free(s);
		return NULL;
	}
	TAILQ_INIT(&s->waiters);
	pqev_backoff_init(&s->rng, 1, 1, 0);
	s->refs = 1;
	s->next = *list;
	*list = s;
	return s;
}

void pqev_server_bind(PqevConn *c, const char *key)
{
	if (c->srv && key && strcmp(c->srv->key, key) == 0)
		return;
	pqev_server_unbind(c);
	/* out of memory: no server for c; its failures then back off on their own */
	c->srv = key ? server_get(c->lim, key) : NULL;
}

void pqev_server_unbind(PqevConn *c)
{
	PqevServer *s = c->srv;
	if (!s)
		return;
	pqev_server_leave(c);
	c->srv = NULL;
	server_put(s);
}

/* ---- outage reports ---- */

/* "host=/run/pg port=5433" from the key "host\x1fhostaddr\x1fport"; parts
   left unset are omitted (libpq's defaults) */
static void describe(const PqevServer *s, char *buf, size_t len)
{
	static const char *const names[] = {"host", "hostaddr", "port"};
	const char *p = s->key;
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 0; i < 3 && p; i++) {
		const char *end = strchr(p, '\x1f');
		int n = end ? (int)(end - p) : (int)strlen(p);

		if (n > 0 && used < len) {
			int w = snprintf(buf + used, len - used, "%s%s=%.*s", used ? " " : "",
					 names[i], n, p);
			used += w > 0 ? (size_t)w : 0;
		}
		p = end ? end + 1 : NULL;
	}
	if (!buf[0])
		snprintf(buf, len, "the default server");
}

/* probing: the probe is one of the outage's connections too, though off the
   waiters' list while its attempt runs (a restart within a second ends with
   only the probe's attempt: it said 3 of 4 connections reconnect) */
static void report(PqevServer *s, bool down, bool probing)
{
	char target[PQEV_ERR_MAX];
	PqevServerEvent ev = {
		.down = down,
		.reported = s->reported,
		.target = target,
		.error = s->err[0] ? s->err : "the server is down",
		.waiting = s->nwaiting + (probing ? 1 : 0),
		.down_for = pqev_clock_now() - s->down_since,
	};

	describe(s, target, sizeof(target));
	pqev_connlimit_server_event(s->lim, &ev);
}

static void report_cb(evutil_socket_t fd, short what, void *arg)
{
	PqevServer *s = arg;

	if (!s->down || s->reported)
		return;
	s->reported = true;
	s->refs++;
	report(s, true, s->probe != NULL);
	server_put(s);
}

/* ---- waiting and probing ---- */

static void schedule_probe(PqevServer *s)
{
	if (!s->down || s->nwaiting == 0 || s->probe || evtimer_pending(s->probe_ev, NULL))
		return;
	usec_t d = pqev_backoff_jitter(&s->rng, s->interval / 2, s->interval);
	struct timeval tv = {.tv_sec = (time_t)(d / USEC_PER_SEC),
			     .tv_usec = (suseconds_t)(d % USEC_PER_SEC)};
	if (evtimer_add(s->probe_ev, &tv) < 0) {
		/* NOTE: never strand the waiters: without a timer, release them */
		s->down = false;
		event_active(s->release_ev, EV_TIMEOUT, 0);
	}
}

bool pqev_server_is_down(PqevConn *c)
{
	PqevServer *s = c->srv;
	if (!s || !s->down || c->srv_probing)
		return false;
	if (!s->probe && !evtimer_pending(s->probe_ev, NULL)) {
		/* nobody probes it (its waiters closed or left): this attempt is the
		   probe, or a server once seen down would stay down for good */
		c->srv_probing = true;
		s->probe = c;
		return false;
	}
	return true;
}

const char *pqev_server_error(const PqevConn *c)
{
	return c->srv && c->srv->err[0] ? c->srv->err : "the server is down";
}

usec_t pqev_server_wait(PqevConn *c)
{
	PqevServer *s = c->srv;
	/* probes cost the server one refused connect each: a few per second at
	   most, yet the server is found within an eighth of a second */
	usec_t base = (c->cfg.retry_base ? c->cfg.retry_base : 250 * USEC_PER_MSEC) / 2;
	if (!s->down) {
		struct timeval tv = {.tv_sec = PQEV_SERVER_REPORT_DELAY / USEC_PER_SEC,
				     .tv_usec = PQEV_SERVER_REPORT_DELAY % USEC_PER_SEC};

		s->down = true;
		s->interval = base;
		s->down_since = pqev_clock_now();
		s->reported = false;
		/* without the timer the outage is reported once, when it ends */
		(void)evtimer_add(s->report_ev, &tv);
	}
	snprintf(s->err, sizeof(s->err), "%s", c->err);
	if (base < s->interval)
		s->interval = base;
	if (!c->srv_waiting) {
		TAILQ_INSERT_TAIL(&s->waiters, c, srv_link);
		s->nwaiting++;
		c->srv_waiting = true;
	}
	schedule_probe(s);
	return s->interval;
}

void pqev_server_leave(PqevConn *c)
{
	PqevServer *s = c->srv;
	if (!s)
		return;
	if (c->srv_waiting) {
		TAILQ_REMOVE(&s->waiters, c, srv_link);
		s->nwaiting--;
		c->srv_waiting = false;
	}
	if (c->srv_probing) {
		c->srv_probing = false;
		s->probe = NULL;
		schedule_probe(s);
	}
}

void pqev_server_answered(PqevConn *c)
{
	PqevServer *s = c->srv;
	bool probed = c->srv_probing;
	if (!s)
		return;
	if (c->srv_probing) {
		c->srv_probing = false;
		s->probe = NULL;
	}
	if (!s->down)
		return;
	pqev_conn_debug(c, "the server answers again: releasing %u waiting connection%s",
			s->nwaiting, s->nwaiting == 1 ? "" : "s");
	s->down = false;
	evtimer_del(s->probe_ev);
	evtimer_del(s->report_ev);
	s->refs++;
	report(s, false, probed);
	s->reported = false;
	s->err[0] = '\0';
	server_put(s);
	/* from the loop: the attempts must not run inside the caller's callbacks */
	if (s->nwaiting > 0)
		event_active(s->release_ev, EV_TIMEOUT, 0);
}

/* Requests queued on a waiter fail after a probe interval, as after a failed attempt. */
static void fail_queued(PqevServer *s)
{
	PqevConn **v;
	unsigned n = 0;
	PqevConn *c;

	TAILQ_FOREACH(c, &s->waiters, srv_link)
	{
		if (c->nqueued > 0)
			n++;
	}
	if (n == 0 || !(v = calloc(n, sizeof(*v))))
		return;
	n = 0;
	TAILQ_FOREACH(c, &s->waiters, srv_link)
	{
		if (c->nqueued > 0) {
			pqev_conn_enter(c);
			v[n++] = c;
		}
	}
	for (unsigned i = 0; i < n; i++) {
		struct ReqList fail;
		c = v[i];
		if (c->srv_waiting && c->nqueued > 0) {
			pqev_req_take_all(c, &fail, true);
			pqev_req_fail_list(&fail, PQEV_CONN_LOST, pqev_server_error(c));
		}
		pqev_conn_leave(c);
	}
	free(v);
}

static void probe_cb(evutil_socket_t fd, short what, void *arg)
{
	PqevServer *s = arg;
	PqevConn *c;

	s->refs++;
	fail_queued(s);
	if (s->down && !s->probe && (c = TAILQ_FIRST(&s->waiters)) != NULL) {
		TAILQ_REMOVE(&s->waiters, c, srv_link);
		s->nwaiting--;
		c->srv_waiting = false;
		c->srv_probing = true;
		s->probe = c;
		pqev_conn_enter(c);
		pqev_conn_attempt(c);
		pqev_conn_leave(c);
	}
	server_put(s);
}

static void release_cb(evutil_socket_t fd, short what, void *arg)
{
	PqevServer *s = arg;
	unsigned n = s->nwaiting;
	PqevConn *c;

	if (s->down) {
		schedule_probe(s);
		return;
	}
	s->refs++;
	/* NOTE: one pass over those waiting now; a connection that finds the server
	   down again meanwhile joins the tail and must not be taken twice */
	while (n-- > 0 && !s->down && (c = TAILQ_FIRST(&s->waiters)) != NULL) {
		TAILQ_REMOVE(&s->waiters, c, srv_link);
		s->nwaiting--;
		c->srv_waiting = false;
		pqev_conn_enter(c);
		pqev_conn_attempt(c);
		pqev_conn_leave(c);
	}
	schedule_probe(s);
	server_put(s);
}
