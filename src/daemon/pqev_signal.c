/*
 * Signals through the loop (see pqev_signal.h). libevent's evsignal turns each
 * signal into an event callback on the loop thread; nothing runs in the real
 * handler context here.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_signal.h>

struct PqevSignals {
	struct event_base *base;
	PqevSignalHandlers h;
	struct event *ev_hup, *ev_term, *ev_int;
	unsigned stops;
	struct sigaction old_pipe;
	bool pipe_saved;
};

static void on_hup(evutil_socket_t fd, short what, void *arg)
{
	PqevSignals *s = arg;
	(void)what;
	if (s->h.on_reload)
		s->h.on_reload((int)fd, s->h.arg);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
	PqevSignals *s = arg;
	(void)what;
	s->stops++;
	if (s->stops == 1) {
		if (s->h.on_graceful_stop)
			s->h.on_graceful_stop((int)fd, s->h.arg);
		else
			event_base_loopexit(s->base, NULL);
	} else {
		if (s->h.on_immediate_stop)
			s->h.on_immediate_stop((int)fd, s->h.arg);
		else
			event_base_loopbreak(s->base);
	}
}

PqevSignals *pqev_signals_new(struct event_base *base, const PqevSignalHandlers *h)
{
	PqevSignals *s = calloc(1, sizeof(*s));
	struct sigaction ign;
	int err = ENOMEM;

	if (!s)
		return NULL;
	s->base = base;
	if (h)
		s->h = *h;
	s->ev_hup = evsignal_new(base, SIGHUP, on_hup, s);
	s->ev_term = evsignal_new(base, SIGTERM, on_stop, s);
	s->ev_int = evsignal_new(base, SIGINT, on_stop, s);
	if (!s->ev_hup || !s->ev_term || !s->ev_int)
		goto fail;
	err = EINVAL;
	if (evsignal_add(s->ev_hup, NULL) < 0 || evsignal_add(s->ev_term, NULL) < 0 ||
	    evsignal_add(s->ev_int, NULL) < 0)
		goto fail;
	/* libpq writes with MSG_NOSIGNAL, but SSL and logging to a closed pipe may not */
	memset(&ign, 0, sizeof(ign));
	ign.sa_handler = SIG_IGN;
	sigemptyset(&ign.sa_mask);
	if (sigaction(SIGPIPE, &ign, &s->old_pipe) == 0)
		s->pipe_saved = true;
	return s;
fail:
	pqev_signals_free(s);
	errno = err;
	return NULL;
}

PqevSignals *pqev_signals_free(PqevSignals *s)
{
	if (!s)
		return NULL;
	if (s->ev_hup)
		event_free(s->ev_hup);
	if (s->ev_term)
		event_free(s->ev_term);
	if (s->ev_int)
		event_free(s->ev_int);
	if (s->pipe_saved)
		sigaction(SIGPIPE, &s->old_pipe, NULL);
	free(s);
	return NULL;
}

unsigned pqev_signals_stop_count(const PqevSignals *s)
{
	return s ? s->stops : 0;
}
