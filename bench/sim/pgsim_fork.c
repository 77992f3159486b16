/*
 * pgsim_fork.c: pgsim --process-per-session, one process per session as
 * PostgreSQL has one backend per connection, for a few hundred sessions (the
 * default single-process mode is the one for 10,000-50,000 databases).
 *
 * The server process reads the startup packet (SSLRequest refused, unknown
 * databases refused, CancelRequest routed) and forks a backend for each valid
 * one. The backend moves its socket to descriptor 3, closes every other one it
 * inherited (listeners, the server's epoll and signal pipe, other sessions),
 * sends the greeting with its own pid in BackendKeyData (in a session of its
 * own, setsid(), as PostgreSQL's backends, so that autogroup scheduling treats
 * both alike), and then sleeps in
 * its own epoll_wait. For each statement it runs the protocol code of pgsim.c
 * and, before answering, burns the statement's delay (+- jitter) as CPU time:
 * a busy loop that walks a private buffer (BURN_BYTES, a backend's working set
 * in the caches), timed by its own CPU clock, so the kernel shares the cores
 * among the backends and the daemon as it does for a real server (--cores,
 * the single-process mode's timer model of the cores, does not apply).
 *
 * Signals as PostgreSQL's: SIGINT cancels the statement being burnt (ERROR
 * 57014; a cancel while idle is dropped), SIGTERM ends the session with FATAL
 * 57P01 (the server's "restart", or the server's end: PR_SET_PDEATHSIG). The
 * server keeps each backend's pid and key: a CancelRequest with both signals
 * that pid; SIGCHLD reaps. A backend exits on EOF, Terminate or a FATAL.
 * Ticks and counters go to the server's MAP_SHARED figures (pgsim.c: Shared).
 * LISTEN/NOTIFY are only acknowledged, in both modes: no session is notified.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "pgsim.h"

#define BURN_BYTES (256 * 1024) /* walked by 64-byte lines, one pass between clock reads */
#define BACKEND_FD 3

/* ---- the server's side ---- */

typedef struct Backend {
	pid_t pid;
	uint32_t key;
} Backend;

static Backend *backends;
static int nbackends, backends_cap;
static pid_t server_pid;

static void on_sigchld(evutil_socket_t fd, short ev, void *arg)
{
	pid_t pid;
	(void)fd;
	(void)ev;
	(void)arg;
	while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
		for (int i = 0; i < nbackends; i++)
			if (backends[i].pid == pid) {
				backends[i] = backends[--nbackends];
				break;
			}
}

void backends_init(struct event_base *base)
{
	struct event *ev = evsignal_new(base, SIGCHLD, on_sigchld, NULL);
	if (!ev || evsignal_add(ev, NULL) != 0)
		die("SIGCHLD event failed");
	server_pid = getpid();
}

int backends_count(void)
{
	return nbackends;
}

void backends_terminate(void)
{
	for (int i = 0; i < nbackends; i++)
		kill(backends[i].pid, SIGTERM);
}

void backend_cancel(uint32_t pid, uint32_t key)
{
	for (int i = 0; i < nbackends; i++)
		if ((uint32_t)backends[i].pid == pid && backends[i].key == key) {
			kill(backends[i].pid, SIGINT);
			return;
		}
}

static void backend_main(Conn *c, struct evbuffer *in, const sigset_t *mask)
	__attribute__((noreturn));

static volatile sig_atomic_t cancel_pending, die_pending;
static volatile unsigned char *burn_buf;
/* A real backend sends a statement's reply before it is done with it (the end
   of the transaction, freeing its memory, the stats): the share of a
   statement's delay burnt after the reply (--reply-tail; bench/sim/check-real
   measures it on the real server's backends, docs/benchmarks.md) */
static double reply_tail;

static bool burn(double ms);

void backend_fork(Conn *c, struct evbuffer *in, double fork_ms, double tail)
{
	sigset_t all, old;

	reply_tail = tail; /* the child's copy is the one that counts */

	/* PostgreSQL's postmaster forks every backend itself, one after another:
	   its CPU per fork (--fork-delay) is a serial cost of a connection storm */
	if (fork_ms > 0) {
		if (!burn_buf)
			burn_buf = xmalloc(BURN_BYTES);
		(void)burn(fork_ms);
	}
	/* no signal reaches the child before it replaced libevent's handlers,
	   which would write to the server's signal pipe */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pid_t pid = fork();
	if (pid == 0)
		backend_main(c, in, &old);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (pid < 0) {
		static int logged;
		if (logged++ < 5)
			fprintf(stderr, "pgsim: fork: %s\n", strerror(errno));
		return; /* the client sees the socket close */
	}
	if (nbackends == backends_cap) {
		backends_cap = backends_cap ? 2 * backends_cap : 64;
		backends = realloc(backends, sizeof(Backend) * (size_t)backends_cap);
		if (!backends)
			die("out of memory");
	}
	backends[nbackends++] = (Backend){.pid = pid, .key = c->key};
}

/* ---- a backend ---- */

static void on_sigint(int sig)
{
	(void)sig;
	cancel_pending = 1;
}

static void on_sigterm(int sig)
{
	(void)sig;
	die_pending = 1;
}

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ms of this process's CPU time; false when a signal interrupted it */
static bool burn(double ms)
{
	if (ms <= 0)
		return true;
	double end = cpu_now() + ms / 1000;
	do {
		for (size_t i = 0; i < BURN_BYTES; i += 64)
			burn_buf[i]++;
		if (cancel_pending || die_pending)
			return false;
	} while (cpu_now() < end);
	return true;
}

/* all of b to the socket; wait: for room (a reply), or not (last words) */
static void send_all(struct evbuffer *b, bool wait)
{
	while (evbuffer_get_length(b) > 0) {
		int n = evbuffer_write(b, BACKEND_FD);
		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR) && wait) {
			fd_set w;
			FD_ZERO(&w);
			FD_SET(BACKEND_FD, &w);
			select(BACKEND_FD + 1, NULL, &w, NULL, NULL);
			continue;
		}
		_exit(0);
	}
}

static void terminate(Conn *c) __attribute__((noreturn));
static void terminate(Conn *c)
{
	evbuffer_drain(c->pending, evbuffer_get_length(c->pending));
	msg_error(c->pending, "FATAL", "57P01",
		  "terminating connection due to administrator command");
	send_all(c->pending, false);
	_exit(0);
}

/* the reply due in c->pending, after its CPU; tail: the share of that CPU
   burnt after the reply (a statement's; 0 for the session's start) */
static void respond(Conn *c, double tail)
{
	double before = c->burn_ms * (1 - tail), after = c->burn_ms * tail;
	c->due = false;
	c->burn_ms = 0;
	if (!burn(before)) {
		if (die_pending)
			terminate(c);
		cancel_pending = 0;
		evbuffer_drain(c->pending, evbuffer_get_length(c->pending));
		msg_error(c->pending, "ERROR", "57014", "canceling statement due to user request");
		msg_ready(c->pending);
	}
	send_all(c->pending, true);
	if (c->closing)
		_exit(0);
	if (!burn(after)) {
		if (die_pending)
			terminate(c);
		cancel_pending = 0; /* nothing left to cancel */
	}
}

static void close_inherited(void)
{
#ifdef SYS_close_range
	if (syscall(SYS_close_range, BACKEND_FD + 1, ~0U, 0) == 0)
		return;
#endif
	for (int fd = BACKEND_FD + 1; fd < 65536; fd++)
		close(fd);
}

static void backend_main(Conn *sc, struct evbuffer *sin, const sigset_t *mask)
{
	struct sigaction sa = {.sa_handler = on_sigint}; /* no SA_RESTART: waits end */
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_sigterm;
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = SIG_DFL;
	sigaction(SIGCHLD, &sa, NULL);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != server_pid)
		_exit(0);
	/* a session of its own, as PostgreSQL's backends (InitPostmasterChild): with
	   the kernel's autogroup scheduling each backend is then a group of its own
	   with a whole session's weight, not one of the server's many children
	   sharing one group (which gave pgsim's backends less of a busy machine than
	   a real server's get: later replies, slower recovery) */
	(void)setsid();

	if (sc->fd != BACKEND_FD && dup2(sc->fd, BACKEND_FD) < 0)
		_exit(1);
	close_inherited();
	srand48((long)getpid() ^ (long)time(NULL));
	if (!burn_buf)
		burn_buf = xmalloc(BURN_BYTES);

	/* the session, now this process's; what the server read after the
	   startup packet is its first input */
	Conn *c = xmalloc(sizeof(Conn));
	struct evbuffer *in = evbuffer_new();
	c->pending = evbuffer_new();
	if (!in || !c->pending)
		die("out of memory");
	c->fd = BACKEND_FD;
	c->db = sc->db;
	c->key = sc->key;
	c->user = sc->user;
	c->state = C_READY;
	evbuffer_add_buffer(in, sin);

	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN};
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, BACKEND_FD, &ev) != 0)
		die("backend: epoll: %s", strerror(errno));

	sigset_t blocked = *mask;
	sigaddset(&blocked, SIGINT);
	sigaddset(&blocked, SIGTERM);
	sigprocmask(SIG_SETMASK, mask, NULL);

	startup_reply(c, (uint32_t)getpid());
	hold(c, connect_delay(c->db));
	respond(c, 0);
	for (;;) {
		for (;;) {
			int r = proto_step(c, in);
			if (r == STEP_CLOSE)
				_exit(0);
			if (c->due)
				respond(c, reply_tail);
			else if (r == STEP_MORE)
				break;
		}
		/* idle: a terminate ends the session, a cancel is dropped; the
		   signals are let in only while epoll_pwait sleeps (no lost wake-up) */
		sigprocmask(SIG_SETMASK, &blocked, NULL);
		if (!die_pending)
			epoll_pwait(ep, &ev, 1, -1, mask);
		if (die_pending)
			terminate(c);
		cancel_pending = 0;
		sigprocmask(SIG_SETMASK, mask, NULL);
		int n = evbuffer_read(in, BACKEND_FD, 65536);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			_exit(0);
	}
}
