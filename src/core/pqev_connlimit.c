/*
 * Connect limiter: a global cap on concurrent connection attempts per loop, a
 * FIFO of connections waiting for a slot, the shared async resolver and the
 * debug hook. Slots freed during a callback are handed on from a zero-delay
 * event, so granting never recurses into the connection that released one.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "pqev_conn_int.h"

struct PqevConnLimit {
	struct event_base *base;
	unsigned max;
	unsigned active;
	unsigned peak;
	unsigned nwaiting;
	unsigned nconns;
	TAILQ_HEAD(, PqevConn) waiters;
	struct event *grant_ev;
	struct evdns_base *dns;
	PqevDebugFn dbg;
	void *dbg_arg;
	PqevServerFn srv_hook;
	void *srv_arg;
	PqevServer *servers;
};

void pqev_connlimit_set_server_hook(PqevConnLimit *lim, PqevServerFn fn, void *arg)
{
	lim->srv_hook = fn;
	lim->srv_arg = arg;
}

void pqev_connlimit_server_event(PqevConnLimit *lim, const PqevServerEvent *ev)
{
	if (lim->srv_hook)
		lim->srv_hook(ev, lim->srv_arg);
}

PqevServer **pqev_connlimit_servers(PqevConnLimit *lim)
{
	return &lim->servers;
}

static bool has_room(const PqevConnLimit *lim)
{
	return lim->max == 0 || lim->active < lim->max;
}

static void take_slot(PqevConnLimit *lim, PqevConn *c)
{
	lim->active++;
	if (lim->active > lim->peak)
		lim->peak = lim->active;
	c->has_slot = true;
}

static void grant_cb(evutil_socket_t fd, short what, void *arg)
{
	PqevConnLimit *lim = arg;
	while (lim->nwaiting > 0 && has_room(lim)) {
		PqevConn *c = TAILQ_FIRST(&lim->waiters);
		TAILQ_REMOVE(&lim->waiters, c, wait_link);
		lim->nwaiting--;
		c->waiting = false;
		take_slot(lim, c);
		pqev_conn_slot_granted(c);
	}
}

static void schedule_grant(PqevConnLimit *lim)
{
	if (lim->nwaiting > 0 && has_room(lim))
		event_active(lim->grant_ev, EV_TIMEOUT, 0);
}

PqevConnLimit *pqev_connlimit_new(struct event_base *base, unsigned max_connecting)
{
	PqevConnLimit *lim = calloc(1, sizeof(*lim));
	if (!lim)
		return NULL;
	lim->base = base;
	lim->max = max_connecting;
	TAILQ_INIT(&lim->waiters);
	lim->grant_ev = event_new(base, -1, 0, grant_cb, lim);
	if (!lim->grant_ev) {
		free(lim);
		return NULL;
	}
	return lim;
}

int pqev_connlimit_free(PqevConnLimit *lim)
{
	if (!lim)
		return 0;
	if (lim->nconns > 0)
		return -EBUSY;
	event_free(lim->grant_ev);
	if (lim->dns)
		evdns_base_free(lim->dns, 1);
	free(lim);
	return 0;
}

void pqev_connlimit_set_max(PqevConnLimit *lim, unsigned max_connecting)
{
	lim->max = max_connecting;
	schedule_grant(lim);
}

void pqev_connlimit_set_debug(PqevConnLimit *lim, PqevDebugFn fn, void *arg)
{
	lim->dbg = fn;
	lim->dbg_arg = arg;
}

struct event_base *pqev_connlimit_base(const PqevConnLimit *lim)
{
	return lim->base;
}

unsigned pqev_connlimit_active(const PqevConnLimit *lim)
{
	return lim->active;
}

unsigned pqev_connlimit_waiting(const PqevConnLimit *lim)
{
	return lim->nwaiting;
}

unsigned pqev_connlimit_peak(const PqevConnLimit *lim)
{
	return lim->peak;
}

bool pqev_connlimit_acquire(PqevConnLimit *lim, PqevConn *c)
{
	/* NOTE: a newcomer never overtakes waiters, or a busy loop could starve them */
	if (lim->nwaiting == 0 && has_room(lim)) {
		take_slot(lim, c);
		return true;
	}
	TAILQ_INSERT_TAIL(&lim->waiters, c, wait_link);
	lim->nwaiting++;
	c->waiting = true;
	return false;
}

void pqev_connlimit_release(PqevConnLimit *lim, PqevConn *c)
{
	if (c->has_slot) {
		c->has_slot = false;
		lim->active--;
		schedule_grant(lim);
	} else if (c->waiting) {
		TAILQ_REMOVE(&lim->waiters, c, wait_link);
		lim->nwaiting--;
		c->waiting = false;
	}
}

void pqev_connlimit_attach(PqevConnLimit *lim)
{
	lim->nconns++;
}

void pqev_connlimit_detach(PqevConnLimit *lim)
{
	lim->nconns--;
}

struct evdns_base *pqev_connlimit_dns(PqevConnLimit *lim)
{
	if (!lim->dns)
		lim->dns = evdns_base_new(lim->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
							     EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	return lim->dns;
}

void pqev_connlimit_debugv(PqevConnLimit *lim, const char *name, const char *fmt, va_list ap)
{
	char buf[PQEV_ERR_MAX];
	if (!lim->dbg)
		return;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	lim->dbg(name, buf, lim->dbg_arg);
}
