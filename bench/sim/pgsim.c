/*
 * pgsim: a PostgreSQL wire-protocol simulator that stands in for N databases on
 * M servers, so the ticker can be measured at more databases than one machine's
 * PostgreSQL holds (docs/benchmarks.md, "The ticker by simulation").
 *
 *   pgsim --dir DIR [--servers M] [--port P] [--databases N] [--replies FILE]
 *         [--delay MS] [--jitter MS] [--connect-delay MS] [--first-connect-delay MS]
 *         [--period S] [--cores C | --process-per-session [--fork-delay MS]
 *         [--reply-tail SHARE]] [--tcp]
 *   pgsim --ctl DIR stats|reset|restart SECONDS [PORT]
 *
 * Server s (0..M-1) listens on port P+s: a unix socket DIR/.s.PGSQL.<P+s>, or
 * 127.0.0.1:<P+s> with --tcp. It holds the databases db<i> for i in
 * s*N/M+1 .. (s+1)*N/M, plus "postgres" and "template1" (for discovery). Each
 * server is its own process (so each has its own RLIMIT_NOFILE, raised to the
 * hard limit), with a control socket DIR/pgsim-ctl.<port>.
 *
 * Protocol 3.0 as libpq speaks it: SSLRequest and GSSENCRequest refused with
 * 'N'; startup answered with AuthenticationOk, ParameterStatus, BackendKeyData
 * and ReadyForQuery (after --connect-delay, the cost of a backend's start; the
 * first session of each database after a "restart" waits --first-connect-delay
 * instead, if given: PostgreSQL's first backend in a database after a restart
 * rebuilds the relation cache file, which dominates a recovery); an
 * unknown database gets FATAL 3D000. Simple Query and the extended protocol
 * (Parse/Bind/Describe/Execute/Sync/Flush/Close, pipelined or not) are
 * answered from the table of recorded replies (--replies, default replies.txt
 * beside this file; first block whose prefix matches), each reply after
 * --delay +- --jitter ms, one at a time per session as a backend would (timed
 * with a precise timer: not rounded to epoll_wait's milliseconds). With
 * --cores C the delay is the statement's CPU time on a server of C cores:
 * statements that arrive together (a tick slot's) are answered one core-slot
 * after another, as a real server's backends answer them, instead of all after
 * the same delay (bench/sim/check-real calibrates both on a real server). An
 * unmatched statement gets SQLSTATE 42883 and is logged once. CancelRequest
 * turns a reply still waiting into SQLSTATE 57014. Terminate closes.
 *
 * --process-per-session (pgsim_fork.c) serves each session in its own forked
 * process, as PostgreSQL's backends: asleep in its own epoll_wait, it burns
 * each statement's delay +- jitter as CPU (a busy loop over a private buffer,
 * timed by its CPU clock) before it answers, so the kernel wakes one process
 * per statement and shares the real cores among the backends and the client,
 * instead of the timers (and --cores, refused with it) of the single process.
 * BackendKeyData then carries the backend's pid, a CancelRequest is routed to
 * it as SIGINT and "restart" sends it SIGTERM (FATAL 57P01). --fork-delay MS:
 * the server burns MS of its own CPU before each fork, as PostgreSQL's
 * postmaster spends its own on every fork, one after another (under a
 * connection storm on a busy machine, that serial share is what paces the
 * starts). --reply-tail SHARE (default 0.15): the share of a statement's delay
 * the backend burns after sending its reply, as a real backend ends its
 * transaction after answering. For a few hundred sessions
 * (bench/sim/check-real); the default mode is the one for 10,000 and
 * more. The figures below live in MAP_SHARED memory in both modes, so the
 * backends record into it. LISTEN and NOTIFY are only acknowledged, in both
 * modes: no session is ever notified.
 *
 * Every statement marked "tick" in the table is timestamped per database:
 * lateness = time since the database's previous tick call - --period (0 when
 * earlier), the measure bench/ticker/run uses on a real server. "restart T"
 * sends FATAL 57P01 to every session of a server, closes its socket (new
 * connections are refused) and listens again after T seconds; stats then tell
 * how long until every database ticked again. "stats" merges the servers'
 * figures: ticks, databases ticked, p50/p99/max lateness, time from "reset" to
 * the last database's first tick, recovery.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>

#include "pgsim.h"

#define PROTO_V3       196608
#define SSL_REQUEST    80877103
#define GSS_REQUEST    80877104
#define CANCEL_REQUEST 80877102
#define MAX_MSG        (1 << 20)
#define HIST_RES_US    100                              /* lateness histogram: 0.1 ms buckets */
#define HIST_N         (10 * 1000000 / HIST_RES_US + 1) /* up to 10 s, the last one is "more" */

/* ---- the table of recorded replies ---- */

struct Reply {
	char *match; /* statement text prefix */
	size_t matchlen;
	int ncols;
	char **colname;
	uint32_t *coltype;
	int nrows;
	char ***rows;   /* rows[r][c], NULL = SQL NULL */
	char **each_db; /* a row template repeated for every database of the server */
	char *tag;      /* CommandComplete; NULL: "SELECT n" */
	char *err_code; /* an ErrorResponse instead of rows */
	char *err_msg;
	bool tick;       /* a tick call: timestamped */
	int scope;       /* 0: every database, 1: only db<i>, 2: only postgres/template1 */
	double delay_ms; /* < 0: the global delay */
	bool warned;
};

static Reply *replies;
static int nreplies;

/* ---- options ---- */

static const char *opt_dir;
static int opt_servers = 1, opt_port = 5500, opt_ndb = 100;
static double opt_delay = 0.3, opt_jitter = 0.1, opt_period = 1.0;
static double opt_connect_delay;
static double opt_first_connect_delay = -1; /* < 0: as --connect-delay */
static double opt_fork_delay;
static double opt_reply_tail = 0.15; /* share of a statement's delay burnt after its reply */
static bool opt_tcp;
static int opt_cores;     /* 0: every statement is answered after its own delay */
static bool opt_sessions; /* --process-per-session */

/* ---- one server (per process) ---- */

typedef struct DbStat {
	double last_tick, first_tick, first_after;
	uint32_t nticks;
	uint32_t cold; /* no session since the last restart (--first-connect-delay) */
} DbStat;

/*
 * The figures every session updates: in memory shared (MAP_SHARED, mapped
 * before any fork) so that --process-per-session's backends record into it and
 * the server reads it. Counters and the histogram are updated with atomic adds;
 * a database's slot only by the session that ticks it (the daemon holds one per
 * database; two ticking one database at once could lose an update of it).
 */
typedef struct Shared {
	uint64_t ticks, queries, connects;
	uint64_t late_max_us;
	double restart_end;
	uint32_t hist[HIST_N];
	DbStat dbs[]; /* the server's databases */
} Shared;

static struct {
	struct event_base *base;
	int idx, port, first, ndb; /* databases db<first> .. db<first+ndb-1> */
	struct evconnlistener *lis, *ctl;
	struct event reopen;
	bool down;
	Conn **byfd;
	int nfd;
	int nconns; /* sessions of this process (in --process-per-session: at startup) */
	Shared *sh;
	double *core_free; /* --cores: when each core is next free (now_s()) */
	double t0;
	char sockpath[sizeof(((struct sockaddr_un *)0)->sun_path)];
} S;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

__attribute__((format(printf, 1, 2), noreturn)) void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("pgsim: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

void *xmalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);
	if (!p)
		die("out of memory");
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (!p)
		die("out of memory");
	return p;
}

/* ---- reading the reply table ---- */

static uint32_t type_oid(const char *t, const char *file, int line)
{
	static const struct {
		const char *name;
		uint32_t oid;
	} types[] = {{"bool", 16}, {"int8", 20},   {"int4", 23},         {"text", 25},
		     {"name", 19}, {"void", 2278}, {"timestamptz", 1184}};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(types[i].name, t) == 0)
			return types[i].oid;
	die("%s:%d: unknown type \"%s\" (bool, int4, int8, text, name, void, timestamptz)", file,
	    line, t);
	return 0;
}

static char **split_row(Reply *r, char *s, const char *file, int line)
{
	char **v = xmalloc(sizeof(char *) * (size_t)(r->ncols ? r->ncols : 1));
	int n = 0;
	for (char *tok = s;; n++) {
		char *bar = strchr(tok, '|');
		if (bar)
			*bar = '\0';
		if (n >= r->ncols)
			die("%s:%d: more values than columns", file, line);
		v[n] = strcmp(tok, "\\N") == 0 ? NULL : xstrdup(tok);
		if (!bar)
			break;
		tok = bar + 1;
	}
	if (n + 1 != r->ncols)
		die("%s:%d: %d values for %d columns", file, line, n + 1, r->ncols);
	return v;
}

static void load_replies(const char *file)
{
	FILE *f = fopen(file, "r");
	char buf[4096];
	int line = 0;
	Reply *r = NULL;

	if (!f)
		die("%s: %s", file, strerror(errno));
	while (fgets(buf, sizeof(buf), f)) {
		line++;
		buf[strcspn(buf, "\n")] = '\0';
		char *arg = strchr(buf, ' ');
		if (arg)
			*arg++ = '\0';
		else
			arg = buf + strlen(buf);
		if (buf[0] == '#' || buf[0] == '\0')
			continue;
		if (strcmp(buf, "match") == 0) {
			replies = realloc(replies, sizeof(Reply) * (size_t)(nreplies + 1));
			if (!replies)
				die("out of memory");
			r = &replies[nreplies++];
			memset(r, 0, sizeof(*r));
			r->match = xstrdup(arg);
			r->matchlen = strlen(arg);
			r->delay_ms = -1;
			continue;
		}
		if (!r)
			die("%s:%d: \"%s\" before the first \"match\"", file, line, buf);
		if (strcmp(buf, "cols") == 0) {
			for (char *tok = strtok(arg, " "); tok; tok = strtok(NULL, " ")) {
				char *colon = strchr(tok, ':');
				if (!colon)
					die("%s:%d: column \"%s\" needs NAME:TYPE", file, line,
					    tok);
				*colon = '\0';
				r->colname = realloc(r->colname,
						     sizeof(char *) * (size_t)(r->ncols + 1));
				r->coltype = realloc(r->coltype,
						     sizeof(uint32_t) * (size_t)(r->ncols + 1));
				if (!r->colname || !r->coltype)
					die("out of memory");
				r->colname[r->ncols] = xstrdup(tok);
				r->coltype[r->ncols++] = type_oid(colon + 1, file, line);
			}
		} else if (strcmp(buf, "row") == 0) {
			r->rows = realloc(r->rows, sizeof(char **) * (size_t)(r->nrows + 1));
			if (!r->rows)
				die("out of memory");
			r->rows[r->nrows++] = split_row(r, arg, file, line);
		} else if (strcmp(buf, "each-db") == 0) {
			r->each_db = split_row(r, arg, file, line);
		} else if (strcmp(buf, "tag") == 0) {
			r->tag = xstrdup(arg);
		} else if (strcmp(buf, "for") == 0) {
			if (strcmp(arg, "sim") == 0)
				r->scope = 1;
			else if (strcmp(arg, "other") == 0)
				r->scope = 2;
			else
				die("%s:%d: \"for\" takes sim or other", file, line);
		} else if (strcmp(buf, "tick") == 0) {
			r->tick = true;
		} else if (strcmp(buf, "delay") == 0) {
			r->delay_ms = atof(arg);
		} else if (strcmp(buf, "error") == 0) {
			char *sp = strchr(arg, ' ');
			if (!sp || sp - arg != 5)
				die("%s:%d: error needs SQLSTATE TEXT", file, line);
			*sp = '\0';
			r->err_code = xstrdup(arg);
			r->err_msg = xstrdup(sp + 1);
		} else {
			die("%s:%d: unknown keyword \"%s\" (match, cols, row, each-db, tag, tick, "
			    "for, delay, error)",
			    file, line, buf);
		}
	}
	fclose(f);
	if (nreplies == 0)
		die("%s: no replies", file);
}

static const Reply *find_reply(const char *sql, int db)
{
	while (*sql == ' ' || *sql == '\t' || *sql == '\n')
		sql++;
	for (int i = 0; i < nreplies; i++)
		if ((replies[i].scope == 0 || replies[i].scope == (db >= 0 ? 1 : 2)) &&
		    strncmp(sql, replies[i].match, replies[i].matchlen) == 0)
			return &replies[i];
	return NULL;
}

/* ---- messages: each built in a scratch buffer, then appended whole ---- */

static unsigned char mbuf[1 << 16];
static size_t mlen;

static void m_bytes(const void *p, size_t n)
{
	if (mlen + n > sizeof(mbuf))
		die("a reply message is longer than %zu bytes", sizeof(mbuf));
	memcpy(mbuf + mlen, p, n);
	mlen += n;
}

static void m_u32(uint32_t v)
{
	v = htonl(v);
	m_bytes(&v, 4);
}

static void m_u16(uint16_t v)
{
	v = htons(v);
	m_bytes(&v, 2);
}

static void m_str(const char *s)
{
	m_bytes(s, strlen(s) + 1);
}

static void m_begin(char type)
{
	mlen = 0;
	m_bytes(&type, 1);
	m_u32(0);
}

static void m_end(struct evbuffer *b)
{
	uint32_t len = htonl((uint32_t)(mlen - 1));
	memcpy(mbuf + 1, &len, 4);
	evbuffer_add(b, mbuf, mlen);
}

static void msg_simple(struct evbuffer *b, char type)
{
	m_begin(type);
	m_end(b);
}

void msg_error(struct evbuffer *b, const char *sev, const char *code, const char *text)
{
	m_begin('E');
	m_bytes("S", 1);
	m_str(sev);
	m_bytes("V", 1);
	m_str(sev);
	m_bytes("C", 1);
	m_str(code);
	m_bytes("M", 1);
	m_str(text);
	m_bytes("", 1);
	m_end(b);
}

void msg_ready(struct evbuffer *b)
{
	m_begin('Z');
	m_bytes("I", 1);
	m_end(b);
}

static void msg_param(struct evbuffer *b, const char *k, const char *v)
{
	m_begin('S');
	m_str(k);
	m_str(v);
	m_end(b);
}

static void msg_rowdesc(struct evbuffer *b, const Reply *r)
{
	if (r->ncols == 0) {
		msg_simple(b, 'n'); /* NoData */
		return;
	}
	m_begin('T');
	m_u16((uint16_t)r->ncols);
	for (int i = 0; i < r->ncols; i++) {
		m_str(r->colname[i]);
		m_u32(0);
		m_u16(0);
		m_u32(r->coltype[i]);
		m_u16((uint16_t)(r->coltype[i] == 20 ? 8 : r->coltype[i] == 16 ? 1 : 0xffff));
		m_u32(0xffffffff);
		m_u16(0);
	}
	m_end(b);
}

static void msg_datarow(struct evbuffer *b, const Reply *r, char **v, const char *self)
{
	m_begin('D');
	m_u16((uint16_t)r->ncols);
	for (int i = 0; i < r->ncols; i++) {
		const char *s = v[i];
		if (s && strcmp(s, "$DB") == 0)
			s = self;
		if (!s) {
			m_u32(0xffffffff);
			continue;
		}
		m_u32((uint32_t)strlen(s));
		m_bytes(s, strlen(s));
	}
	m_end(b);
}

static void db_name(char *buf, size_t len, int db)
{
	if (db < 0)
		snprintf(buf, len, "postgres");
	else
		snprintf(buf, len, "db%d", S.first + db);
}

static void record_tick(int db)
{
	double t = now_s();
	Shared *sh = S.sh;
	DbStat *d = &sh->dbs[db];

	__atomic_fetch_add(&sh->ticks, 1, __ATOMIC_RELAXED);
	d->nticks++;
	if (d->first_tick == 0)
		d->first_tick = t;
	if (sh->restart_end > 0 && d->first_after == 0 && t >= sh->restart_end)
		d->first_after = t;
	if (d->last_tick > 0) {
		double late = t - d->last_tick - opt_period;
		if (late < 0)
			late = 0;
		long b = lround(late * 1e6 / HIST_RES_US);
		__atomic_fetch_add(&sh->hist[b < HIST_N - 1 ? b : HIST_N - 1], 1, __ATOMIC_RELAXED);
		uint64_t us = (uint64_t)llround(late * 1e6);
		uint64_t max = __atomic_load_n(&sh->late_max_us, __ATOMIC_RELAXED);
		while (us > max && !__atomic_compare_exchange_n(&sh->late_max_us, &max, us, true,
								__ATOMIC_RELAXED, __ATOMIC_RELAXED))
			;
	}
	d->last_tick = t;
}

/* rows and CommandComplete of one statement (Execute, or a simple Query) */
static void reply_rows(Conn *c, struct evbuffer *b, const Reply *r)
{
	char self[32], tag[64];
	int n = r->nrows;

	db_name(self, sizeof(self), c->db);
	for (int i = 0; i < r->nrows; i++)
		msg_datarow(b, r, r->rows[i], self);
	if (r->each_db) {
		char name[32];
		for (int d = 0; d < S.ndb; d++) {
			db_name(name, sizeof(name), d);
			for (int i = 0; i < r->ncols; i++)
				if (r->each_db[i] && strcmp(r->each_db[i], "$NAME") == 0) {
					char *save = r->each_db[i];
					r->each_db[i] = name;
					msg_datarow(b, r, r->each_db, self);
					r->each_db[i] = save;
				}
		}
		n += S.ndb;
	}
	snprintf(tag, sizeof(tag), "SELECT %d", n);
	m_begin('C');
	m_str(r->tag ? r->tag : tag);
	m_end(b);
	if (r->tick && c->db >= 0)
		record_tick(c->db);
}

static void unmatched(const char *sql, struct evbuffer *b)
{
	static int logged;
	if (logged++ < 20)
		fprintf(stderr, "pgsim: server %d: no recorded reply for: %.200s\n", S.idx, sql);
	msg_error(b, "ERROR", "42883", "pgsim: no recorded reply for this statement");
}

/* ---- sessions ---- */

static void conn_read(struct bufferevent *bev, void *arg);

static void conn_free(Conn *c)
{
	if (c->fd >= 0 && c->fd < S.nfd)
		S.byfd[c->fd] = NULL;
	if (event_initialized(&c->timer))
		event_del(&c->timer);
	bufferevent_free(c->bev);
	evbuffer_free(c->pending);
	free(c->stmt_sql);
	free(c->user);
	S.nconns--;
	free(c);
}

static double reply_delay(const Reply *r)
{
	double d = r && r->delay_ms >= 0 ? r->delay_ms : opt_delay;
	if (opt_jitter > 0)
		d += opt_jitter * (2.0 * drand48() - 1.0);
	return d < 0 ? 0 : d;
}

static void flush_pending(Conn *c)
{
	bufferevent_write_buffer(c->bev, c->pending);
}

static void on_timer(evutil_socket_t fd, short ev, void *arg)
{
	Conn *c = arg;
	(void)fd;
	(void)ev;
	c->waiting = false;
	flush_pending(c);
	if (c->closing) {
		bufferevent_disable(c->bev, EV_READ);
		return;
	}
	conn_read(c->bev, c); /* input that came meanwhile */
}

/* the reply in c->pending goes out after ms milliseconds; input waits (in a
 * backend process: after burning ms of CPU, pgsim_fork.c) */
void hold(Conn *c, double ms)
{
	if (!c->bev) {
		c->due = true;
		c->burn_ms += ms > 0 ? ms : 0;
		return;
	}
	if (ms <= 0) {
		flush_pending(c);
		return;
	}
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
			     .tv_usec = (suseconds_t)fmod(ms * 1000, 1e6)};
	c->waiting = true;
	evtimer_add(&c->timer, &tv);
}

/*
 * A statement's reply: with --cores C, the server is C cores and the delay is
 * the statement's CPU time, so statements that arrive together are answered
 * one core-slot after another, as a real server's backends are; without, each
 * after its own delay.
 */
static void hold_stmt(Conn *c, double ms)
{
	if (opt_cores <= 0 || ms <= 0) {
		hold(c, ms);
		return;
	}
	double now = now_s();
	int best = 0;
	for (int i = 1; i < opt_cores; i++)
		if (S.core_free[i] < S.core_free[best])
			best = i;
	double start = S.core_free[best] > now ? S.core_free[best] : now;
	S.core_free[best] = start + ms / 1000;
	hold(c, (S.core_free[best] - now) * 1000);
}

static void fatal(Conn *c, const char *code, const char *text)
{
	msg_error(c->pending, "FATAL", code, text);
	if (!c->bev) {
		c->closing = c->due = true;
		return;
	}
	flush_pending(c);
	c->closing = true;
	bufferevent_disable(c->bev, EV_READ);
}

static int lookup_db(const char *name)
{
	if (strcmp(name, "postgres") == 0 || strcmp(name, "template1") == 0)
		return -1;
	if (strncmp(name, "db", 2) == 0) {
		char *end;
		long g = strtol(name + 2, &end, 10);
		if (*end == '\0' && end != name + 2 && g >= S.first && g < S.first + S.ndb)
			return (int)(g - S.first);
	}
	return -2;
}

/* The start delay of a new session of database db: the first one since a
   restart takes --first-connect-delay (exchanged, so one session pays it). */
double connect_delay(int db)
{
	if (opt_first_connect_delay >= 0 && db >= 0 &&
	    __atomic_exchange_n(&S.sh->dbs[db].cold, 0, __ATOMIC_RELAXED))
		return opt_first_connect_delay;
	return opt_connect_delay;
}

static void handle_cancel(const unsigned char *m)
{
	uint32_t pid, key;
	memcpy(&pid, m + 8, 4);
	memcpy(&key, m + 12, 4);
	pid = ntohl(pid);
	key = ntohl(key);
	if (opt_sessions) {
		backend_cancel(pid, key);
		return;
	}
	int fd = (int)pid - (S.idx + 1) * 1000000;
	if (fd < 0 || fd >= S.nfd || !S.byfd[fd] || S.byfd[fd]->key != key)
		return;
	Conn *t = S.byfd[fd];
	if (!t->waiting)
		return;
	event_del(&t->timer);
	evbuffer_drain(t->pending, evbuffer_get_length(t->pending));
	msg_error(t->pending, "ERROR", "57014", "canceling statement due to user request");
	msg_ready(t->pending);
	on_timer(-1, 0, t);
}

/* the startup packet (m: whole packet, len bytes): STEP_DONE, STEP_CLOSE, or
 * STEP_FORK (c->db and c->user set, nothing sent) */
static int handle_startup(Conn *c, const unsigned char *m, uint32_t len)
{
	uint32_t code;
	memcpy(&code, m + 4, 4);
	code = ntohl(code);
	if (code == SSL_REQUEST || code == GSS_REQUEST) {
		bufferevent_write(c->bev, "N", 1);
		return STEP_DONE;
	}
	if (code == CANCEL_REQUEST && len == 16) {
		handle_cancel(m);
		return STEP_CLOSE;
	}
	if (code != PROTO_V3) {
		fatal(c, "0A000", "unsupported frontend protocol");
		return STEP_DONE;
	}
	const char *user = "postgres", *dbname = NULL;
	const char *p = (const char *)m + 8, *end = (const char *)m + len;
	while (p < end && *p) {
		const char *k = p;
		p += strnlen(p, (size_t)(end - p)) + 1;
		if (p >= end)
			break;
		const char *v = p;
		p += strnlen(p, (size_t)(end - p)) + 1;
		if (strcmp(k, "user") == 0)
			user = v;
		else if (strcmp(k, "database") == 0)
			dbname = v;
	}
	if (!dbname || !*dbname)
		dbname = user;
	c->db = lookup_db(dbname);
	if (c->db == -2) {
		char text[200];
		snprintf(text, sizeof(text), "database \"%.64s\" does not exist", dbname);
		fatal(c, "3D000", text);
		return STEP_DONE;
	}
	__atomic_fetch_add(&S.sh->connects, 1, __ATOMIC_RELAXED);
	c->state = C_READY;
	c->user = xstrdup(user);
	if (opt_sessions)
		return STEP_FORK;
	startup_reply(c, (uint32_t)((S.idx + 1) * 1000000 + c->fd));
	hold(c, connect_delay(c->db));
	return STEP_DONE;
}

/* a started session's greeting; pid: BackendKeyData's, the key is c->key */
void startup_reply(Conn *c, uint32_t pid)
{
	struct evbuffer *b = c->pending;
	m_begin('R');
	m_u32(0); /* AuthenticationOk */
	m_end(b);
	msg_param(b, "server_version", "15.20 (pgsim)");
	msg_param(b, "server_encoding", "UTF8");
	msg_param(b, "client_encoding", "UTF8");
	msg_param(b, "DateStyle", "ISO, MDY");
	msg_param(b, "IntervalStyle", "postgres");
	msg_param(b, "TimeZone", "UTC");
	msg_param(b, "integer_datetimes", "on");
	msg_param(b, "standard_conforming_strings", "on");
	msg_param(b, "is_superuser", "on");
	msg_param(b, "session_authorization", c->user);
	msg_param(b, "application_name", "");
	m_begin('K');
	m_u32(pid);
	m_u32(c->key);
	m_end(b);
	msg_ready(b);
}

/* one message after the startup; false: close now */
static bool handle_msg(Conn *c, char type, const char *body, uint32_t blen)
{
	struct evbuffer *b = c->pending;
	const Reply *r;

	if (c->ext_error && type != 'S' && type != 'X')
		return true;
	switch (type) {
	case 'Q':
		__atomic_fetch_add(&S.sh->queries, 1, __ATOMIC_RELAXED);
		if (body[strspn(body, " \t\n;")] == '\0') {
			msg_simple(b, 'I');
			msg_ready(b);
			hold(c, 0);
			return true;
		}
		r = find_reply(body, c->db);
		if (!r) {
			unmatched(body, b);
		} else if (r->err_code) {
			msg_error(b, "ERROR", r->err_code, r->err_msg);
		} else {
			if (r->ncols > 0) /* a command has no RowDescription */
				msg_rowdesc(b, r);
			reply_rows(c, b, r);
		}
		msg_ready(b);
		hold_stmt(c, reply_delay(r));
		return true;
	case 'P': {
		const char *sql = body + strnlen(body, blen) + 1;
		if (sql >= body + blen)
			return false;
		free(c->stmt_sql);
		c->stmt_sql = xstrdup(sql);
		c->stmt_empty = sql[strspn(sql, " \t\n;")] == '\0';
		c->stmt = c->stmt_empty ? NULL : find_reply(sql, c->db);
		msg_simple(b, '1');
		return true;
	}
	case 'B':
		msg_simple(b, '2');
		return true;
	case 'D':
		if (body[0] == 'S') {
			m_begin('t');
			m_u16(0);
			m_end(b);
		}
		if (c->stmt && !c->stmt->err_code)
			msg_rowdesc(b, c->stmt);
		else if (!c->stmt)
			msg_simple(b, 'n'); /* NoData, also for an empty statement */
		return true;
	case 'E':
		__atomic_fetch_add(&S.sh->queries, 1, __ATOMIC_RELAXED);
		if (c->stmt_empty) {
			msg_simple(b, 'I'); /* EmptyQueryResponse: libpq's liveness check */
		} else if (!c->stmt) {
			unmatched(c->stmt_sql ? c->stmt_sql : "", b);
			c->ext_error = true;
		} else if (c->stmt->err_code) {
			msg_error(b, "ERROR", c->stmt->err_code, c->stmt->err_msg);
			c->ext_error = true;
		} else {
			reply_rows(c, b, c->stmt);
		}
		return true;
	case 'S':
		c->ext_error = false;
		msg_ready(b);
		hold_stmt(c, reply_delay(c->stmt));
		return true;
	case 'H':
		hold_stmt(c, evbuffer_get_length(b) ? reply_delay(c->stmt) : 0);
		return true;
	case 'C':
		msg_simple(b, '3');
		return true;
	case 'X':
		return false;
	default:
		fatal(c, "08P01", "pgsim: unsupported message type");
		return true;
	}
}

/*
 * Handles the next whole message of in: STEP_MORE when there is none yet,
 * STEP_DONE, STEP_CLOSE, or STEP_FORK after a valid startup packet in
 * --process-per-session.
 */
int proto_step(Conn *c, struct evbuffer *in)
{
	size_t have = evbuffer_get_length(in);
	unsigned char hdr[5];
	uint32_t len;
	if (c->state == C_STARTUP) {
		if (have < 4)
			return STEP_MORE;
		evbuffer_copyout(in, hdr, 4);
		memcpy(&len, hdr, 4);
		len = ntohl(len);
		if (len < 8 || len > 10000)
			return STEP_CLOSE;
		if (have < len)
			return STEP_MORE;
		unsigned char *m = evbuffer_pullup(in, len);
		int r = handle_startup(c, m, len);
		evbuffer_drain(in, len);
		return r;
	}
	if (have < 5)
		return STEP_MORE;
	evbuffer_copyout(in, hdr, 5);
	memcpy(&len, hdr + 1, 4);
	len = ntohl(len);
	if (len < 4 || len > MAX_MSG)
		return STEP_CLOSE;
	if (have < len + 1)
		return STEP_MORE;
	/* bodies are NUL-terminated strings where it matters; add one for safety */
	unsigned char *m = evbuffer_pullup(in, len + 1);
	char *body = malloc(len - 4 + 1);
	if (!body)
		die("out of memory");
	memcpy(body, m + 5, len - 4);
	body[len - 4] = '\0';
	evbuffer_drain(in, len + 1);
	bool keep = handle_msg(c, (char)hdr[0], body, len - 4);
	free(body);
	return keep ? STEP_DONE : STEP_CLOSE;
}

static void conn_read(struct bufferevent *bev, void *arg)
{
	Conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (!c->waiting && !c->closing) {
		switch (proto_step(c, in)) {
		case STEP_MORE:
			return;
		case STEP_FORK:
			backend_fork(c, in, opt_fork_delay,
				     opt_reply_tail); /* returns in the server only */
			conn_free(c);                 /* its copy of the socket */
			return;
		case STEP_CLOSE:
			conn_free(c);
			return;
		}
	}
}

static void conn_written(struct bufferevent *bev, void *arg)
{
	Conn *c = arg;
	(void)bev;
	if (c->closing && !c->waiting)
		conn_free(c);
}

static void conn_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		conn_free(arg);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
		      void *arg)
{
	(void)l;
	(void)sa;
	(void)salen;
	(void)arg;
	if (fd >= S.nfd) {
		close(fd);
		return;
	}
	Conn *c = xmalloc(sizeof(Conn));
	c->fd = fd;
	c->db = -1;
	c->key = (uint32_t)mrand48();
	c->bev = bufferevent_socket_new(S.base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->pending = evbuffer_new();
	if (!c->bev || !c->pending)
		die("out of memory");
	evtimer_assign(&c->timer, S.base, on_timer, c);
	bufferevent_setcb(c->bev, conn_read, conn_written, conn_event, c);
	bufferevent_enable(c->bev, EV_READ);
	S.byfd[fd] = c;
	S.nconns++;
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
	static int logged;
	(void)l;
	(void)arg;
	if (logged++ < 5)
		fprintf(stderr, "pgsim: server %d: accept: %s\n", S.idx, strerror(errno));
}

/* ---- the listening socket, and simulated restarts ---- */

static void server_listen(void)
{
	unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;
	if (opt_tcp) {
		struct sockaddr_in sin = {.sin_family = AF_INET,
					  .sin_port = htons((uint16_t)S.port)};
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		S.lis = evconnlistener_new_bind(S.base, on_accept, NULL, flags, 4096,
						(struct sockaddr *)&sin, sizeof(sin));
	} else {
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", S.sockpath);
		unlink(S.sockpath);
		S.lis = evconnlistener_new_bind(S.base, on_accept, NULL, flags, 4096,
						(struct sockaddr *)&sun, sizeof(sun));
	}
	if (!S.lis)
		die("server %d: listen on port %d: %s", S.idx, S.port, strerror(errno));
	evconnlistener_set_error_cb(S.lis, on_accept_error);
	S.down = false;
}

static void on_reopen(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	server_listen();
}

static void server_restart(double secs)
{
	double t = now_s();
	if (S.down)
		return;
	evconnlistener_free(S.lis);
	S.lis = NULL;
	if (!opt_tcp)
		unlink(S.sockpath);
	S.down = true;
	for (int fd = 0; fd < S.nfd; fd++) {
		Conn *c = S.byfd[fd];
		if (!c)
			continue;
		evbuffer_drain(c->pending, evbuffer_get_length(c->pending));
		msg_error(c->pending, "FATAL", "57P01",
			  "terminating connection due to administrator command");
		/* a dying backend's last words are best effort: write and close now */
		evbuffer_write(c->pending, fd);
		conn_free(c);
	}
	if (opt_sessions)
		backends_terminate(); /* each sends its FATAL 57P01 */
	S.sh->restart_end = t + secs;
	for (int d = 0; d < S.ndb; d++) {
		S.sh->dbs[d].last_tick = 0;
		S.sh->dbs[d].first_after = 0;
		__atomic_store_n(&S.sh->dbs[d].cold, 1, __ATOMIC_RELAXED);
	}
	struct timeval tv = {.tv_sec = (time_t)secs, .tv_usec = (suseconds_t)fmod(secs * 1e6, 1e6)};
	evtimer_add(&S.reopen, &tv);
}

/* ---- control socket ---- */

static void ctl_dump(struct evbuffer *out)
{
	double t = now_s(), first_all = 0, rec_max = 0;
	int ticked = 0, fresh = 0, recovered = 0, rec_last = -1;
	Shared *sh = S.sh;
	for (int d = 0; d < S.ndb; d++) {
		DbStat *s = &sh->dbs[d];
		if (s->first_tick > 0) {
			ticked++;
			if (s->first_tick - S.t0 > first_all)
				first_all = s->first_tick - S.t0;
		}
		if (s->last_tick > 0 && t - s->last_tick <= 2 * opt_period)
			fresh++;
		if (s->first_after > 0) {
			recovered++;
			if (s->first_after - sh->restart_end > rec_max) {
				rec_max = s->first_after - sh->restart_end;
				rec_last = d;
			}
		}
	}
	evbuffer_add_printf(out,
			    "server %d port %d dbs %d conns %d ticks %" PRIu64 " queries %" PRIu64
			    " connects %" PRIu64 " ticked %d fresh %d first_all %.6f late_max %.6f "
			    "restarted %d recovered %d recover_max %.6f elapsed %.6f\n",
			    S.idx, S.port, S.ndb, S.nconns + (opt_sessions ? backends_count() : 0),
			    sh->ticks, sh->queries, sh->connects, ticked, fresh, first_all,
			    (double)sh->late_max_us / 1e6, sh->restart_end > 0, recovered, rec_max,
			    t - S.t0);
	if (rec_last >= 0)
		evbuffer_add_printf(out, "last_recovered db%d\n", S.first + rec_last);
	for (int i = 0; i < HIST_N; i++)
		if (sh->hist[i])
			evbuffer_add_printf(out, "h %d %" PRIu32 "\n", i, sh->hist[i]);
	evbuffer_add_printf(out, "end\n");
}

static void ctl_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	struct evbuffer *in = bufferevent_get_input(bev), *out = bufferevent_get_output(bev);
	char *line = evbuffer_readln(in, NULL, EVBUFFER_EOL_LF);
	if (!line)
		return;
	if (strcmp(line, "dump") == 0) {
		ctl_dump(out);
	} else if (strcmp(line, "reset") == 0) {
		S.t0 = now_s();
		S.sh->ticks = S.sh->queries = S.sh->connects = 0;
		S.sh->late_max_us = 0;
		memset(S.sh->hist, 0, sizeof(uint32_t) * HIST_N);
		/* lateness counts from the first tick after the reset: the daemon of a
		 * previous run left its own last ticks */
		memset(S.sh->dbs, 0, sizeof(DbStat) * (size_t)S.ndb);
		S.sh->restart_end = 0;
		evbuffer_add_printf(out, "ok\n");
	} else if (strncmp(line, "restart ", 8) == 0) {
		server_restart(atof(line + 8));
		evbuffer_add_printf(out, "ok\n");
	} else {
		evbuffer_add_printf(out, "error: unknown command (dump, reset, restart SECONDS)\n");
	}
	free(line);
}

static void ctl_written(struct bufferevent *bev, void *arg)
{
	(void)arg;
	bufferevent_free(bev);
}

static void ctl_event(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	(void)arg;
	bufferevent_free(bev);
}

static void on_ctl(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
		   void *arg)
{
	(void)l;
	(void)sa;
	(void)salen;
	(void)arg;
	struct bufferevent *bev = bufferevent_socket_new(S.base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		close(fd);
		return;
	}
	bufferevent_setcb(bev, ctl_read, ctl_written, ctl_event, NULL);
	bufferevent_enable(bev, EV_READ);
}

static void on_term(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	event_base_loopbreak(S.base);
}

static void run_server(int idx)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	S.nfd = (int)rl.rlim_cur;
	S.byfd = xmalloc(sizeof(Conn *) * (size_t)S.nfd);
	S.idx = idx;
	S.port = opt_port + idx;
	S.first = (int)((long)idx * opt_ndb / opt_servers) + 1;
	S.ndb = (int)((long)(idx + 1) * opt_ndb / opt_servers) + 1 - S.first;
	S.sh = mmap(NULL, sizeof(Shared) + sizeof(DbStat) * (size_t)S.ndb, PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (S.sh == MAP_FAILED)
		die("server %d: mmap: %s", idx, strerror(errno));
	S.core_free = xmalloc(sizeof(double) * (size_t)(opt_cores > 0 ? opt_cores : 1));
	for (int i = 0; i < opt_cores; i++)
		S.core_free[i] = 0;
	S.t0 = now_s();
	srand48((long)getpid() ^ (long)time(NULL));
	snprintf(S.sockpath, sizeof(S.sockpath), "%s/.s.PGSQL.%d", opt_dir, S.port);
	/* a precise timer (timerfd): epoll_wait's millisecond timeout rounds every
	   delay up to the next millisecond and answers the replies due within it
	   together, which a real server's backends do not */
	struct event_config *cfg = event_config_new();
	if (!cfg)
		die("event_config_new failed");
	event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	S.base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (!S.base)
		die("event_base_new failed");
	evtimer_assign(&S.reopen, S.base, on_reopen, NULL);
	server_listen();

	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char tmp[sizeof(sun.sun_path)];
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/pgsim-ctl.%d", opt_dir, S.port);
	snprintf(tmp, sizeof(tmp), "%s/pgsim-ctl.%d.tmp", opt_dir, S.port);
	/* bound under a temporary name and renamed: its presence means ready */
	struct sockaddr_un tsun = {.sun_family = AF_UNIX};
	snprintf(tsun.sun_path, sizeof(tsun.sun_path), "%s", tmp);
	unlink(tmp);
	S.ctl = evconnlistener_new_bind(S.base, on_ctl, NULL,
					LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16,
					(struct sockaddr *)&tsun, sizeof(tsun));
	if (!S.ctl || rename(tmp, sun.sun_path) != 0)
		die("server %d: control socket %s: %s", idx, sun.sun_path, strerror(errno));
	fprintf(stderr, "pgsim: server %d on port %d: databases db%d..db%d, %d descriptors\n", idx,
		S.port, S.first, S.first + S.ndb - 1, S.nfd);

	struct event *t1 = evsignal_new(S.base, SIGTERM, on_term, NULL);
	struct event *t2 = evsignal_new(S.base, SIGINT, on_term, NULL);
	evsignal_add(t1, NULL);
	evsignal_add(t2, NULL);
	if (opt_sessions)
		backends_init(S.base);
	event_base_dispatch(S.base);
	if (opt_sessions)
		backends_terminate();
	unlink(sun.sun_path);
	unlink(S.sockpath);
	exit(0);
}

/* ---- the control client ---- */

static FILE *ctl_open(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0)
		die("%s: %s", path, strerror(errno));
	return fdopen(fd, "r+");
}

static int run_ctl(const char *dir, int argc, char **argv)
{
	char pat[4096];
	glob_t g;
	snprintf(pat, sizeof(pat), "%s/pgsim-ctl.*[0-9]", dir);
	if (argc < 1)
		die("--ctl DIR needs a command: stats, reset, restart SECONDS [PORT]");
	if (glob(pat, 0, NULL, &g) != 0)
		die("%s: no pgsim control sockets", dir);
	const char *cmd = argv[0];
	if (strcmp(cmd, "stats") == 0) {
		uint32_t *hist = xmalloc(sizeof(uint32_t) * HIST_N);
		long dbs = 0, conns = 0, ticked = 0, fresh = 0, recovered = 0, restarted = 0;
		unsigned long long ticks = 0, queries = 0, connects = 0;
		double first_all = 0, late_max = 0, rec_max = 0, elapsed = 0;
		for (size_t i = 0; i < g.gl_pathc; i++) {
			FILE *f = ctl_open(g.gl_pathv[i]);
			char line[512];
			fprintf(f, "dump\n");
			fflush(f);
			while (fgets(line, sizeof(line), f) && strcmp(line, "end\n") != 0) {
				int b, s, p, n, cn, tk, fr, rs, rc;
				unsigned long long t, q, cc;
				unsigned h;
				double fa, lm, rm, el;
				if (sscanf(line, "h %d %u", &b, &h) == 2 && b >= 0 && b < HIST_N) {
					hist[b] += h;
				} else if (sscanf(line,
						  "server %d port %d dbs %d conns %d ticks %llu "
						  "queries %llu connects %llu ticked %d fresh %d "
						  "first_all %lf late_max %lf restarted %d "
						  "recovered %d recover_max %lf elapsed %lf",
						  &s, &p, &n, &cn, &t, &q, &cc, &tk, &fr, &fa, &lm,
						  &rs, &rc, &rm, &el) == 15) {
					dbs += n, conns += cn, ticks += t, queries += q;
					connects += cc, ticked += tk, fresh += fr, recovered += rc;
					restarted += rs;
					first_all = fa > first_all ? fa : first_all;
					late_max = lm > late_max ? lm : late_max;
					rec_max = rm > rec_max ? rm : rec_max;
					elapsed = el > elapsed ? el : elapsed;
				}
			}
			fclose(f);
		}
		unsigned long long total = 0, acc = 0;
		double q[3] = {0.5, 0.99, 0.999}, v[3] = {0, 0, 0};
		for (int i = 0; i < HIST_N; i++)
			total += hist[i];
		for (int i = 0, k = 0; i < HIST_N && k < 3; i++) {
			acc += hist[i];
			while (k < 3 && total &&
			       acc >= (unsigned long long)ceil(q[k] * (double)total))
				v[k++] = i * HIST_RES_US / 1000.0;
		}
		printf("servers=%zu dbs=%ld conns=%ld ticks=%llu queries=%llu connects=%llu "
		       "ticked=%ld fresh=%ld first_all_s=%.3f late_p50_ms=%.1f late_p99_ms=%.1f "
		       "late_p999_ms=%.1f late_max_ms=%.1f",
		       g.gl_pathc, dbs, conns, ticks, queries, connects, ticked, fresh,
		       ticked == dbs ? first_all : -1.0, v[0], v[1], v[2], late_max * 1000);
		if (restarted)
			printf(" recovered=%ld recover_max_s=%.3f", recovered,
			       recovered == dbs ? rec_max : -1.0);
		printf(" elapsed_s=%.1f\n", elapsed);
		free(hist);
	} else if (strcmp(cmd, "reset") == 0 || strcmp(cmd, "restart") == 0) {
		char line[128];
		if (strcmp(cmd, "restart") == 0 && argc < 2)
			die("restart needs SECONDS [PORT]");
		const char *only = argc >= 3 ? argv[2] : NULL;
		for (size_t i = 0; i < g.gl_pathc; i++) {
			const char *dot = strrchr(g.gl_pathv[i], '.');
			if (only && strcmp(dot + 1, only) != 0)
				continue;
			FILE *f = ctl_open(g.gl_pathv[i]);
			if (strcmp(cmd, "reset") == 0)
				fprintf(f, "reset\n");
			else
				fprintf(f, "restart %s\n", argv[1]);
			fflush(f);
			if (!fgets(line, sizeof(line), f) || strcmp(line, "ok\n") != 0)
				die("%s: %s", g.gl_pathv[i], line);
			fclose(f);
		}
	} else {
		die("unknown command \"%s\" (stats, reset, restart SECONDS [PORT])", cmd);
	}
	globfree(&g);
	return 0;
}

/* ---- main: one process per server ---- */

static pid_t *children;
static volatile sig_atomic_t stop_requested;

static void on_parent_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: pgsim --dir DIR [--servers M] [--port P] [--databases N] [--replies FILE]\n"
		"             [--delay MS] [--jitter MS] [--connect-delay MS]\n"
		"             [--first-connect-delay MS] [--period S]\n"
		"             [--cores C | --process-per-session [--fork-delay MS]\n"
		"             [--reply-tail SHARE]] [--tcp]\n"
		"       pgsim --ctl DIR stats|reset|restart SECONDS [PORT]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *replies_file = NULL;
	char defpath[4096];

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--ctl") == 0 && v)
			return run_ctl(v, argc - i - 2, argv + i + 2);
		if (strcmp(a, "--tcp") == 0) {
			opt_tcp = true;
			continue;
		}
		if (strcmp(a, "--process-per-session") == 0) {
			opt_sessions = true;
			continue;
		}
		if (!v)
			usage();
		if (strcmp(a, "--dir") == 0)
			opt_dir = v;
		else if (strcmp(a, "--servers") == 0)
			opt_servers = atoi(v);
		else if (strcmp(a, "--port") == 0)
			opt_port = atoi(v);
		else if (strcmp(a, "--databases") == 0)
			opt_ndb = atoi(v);
		else if (strcmp(a, "--replies") == 0)
			replies_file = v;
		else if (strcmp(a, "--delay") == 0)
			opt_delay = atof(v);
		else if (strcmp(a, "--jitter") == 0)
			opt_jitter = atof(v);
		else if (strcmp(a, "--connect-delay") == 0)
			opt_connect_delay = atof(v);
		else if (strcmp(a, "--first-connect-delay") == 0)
			opt_first_connect_delay = atof(v);
		else if (strcmp(a, "--fork-delay") == 0)
			opt_fork_delay = atof(v);
		else if (strcmp(a, "--reply-tail") == 0)
			opt_reply_tail = atof(v);
		else if (strcmp(a, "--period") == 0)
			opt_period = atof(v);
		else if (strcmp(a, "--cores") == 0)
			opt_cores = atoi(v);
		else
			usage();
		i++;
	}
	if (!opt_dir || opt_servers < 1 || opt_ndb < 0 || opt_port < 1 ||
	    opt_port + opt_servers > 65536 || opt_period <= 0 || opt_cores < 0)
		usage();
	if (opt_sessions && opt_cores > 0)
		die("--cores models a server's cores with timers; with --process-per-session each "
		    "session's backend burns its CPU and the kernel shares the real cores: give one");
	if (opt_fork_delay < 0 || (opt_fork_delay > 0 && !opt_sessions))
		die("--fork-delay is the server's CPU per forked backend: at least 0, and only "
		    "with --process-per-session");
	if (opt_reply_tail < 0 || opt_reply_tail > 1)
		die("--reply-tail is the share of a statement's delay burnt after its reply: "
		    "from 0 to 1");
	if (!replies_file) {
		/* replies.txt beside the source, where meson's build tree points */
		snprintf(defpath, sizeof(defpath), "%s/replies.txt", PGSIM_SRCDIR);
		replies_file = defpath;
	}
	load_replies(replies_file);
	signal(SIGPIPE, SIG_IGN);

	children = xmalloc(sizeof(pid_t) * (size_t)opt_servers);
	pid_t parent = getpid();
	for (int s = 0; s < opt_servers; s++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork: %s", strerror(errno));
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			if (getppid() != parent)
				exit(0);
			run_server(s);
		}
		children[s] = pid;
	}
	struct sigaction sa = {.sa_handler = on_parent_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	int alive = opt_servers, status = 0;
	while (alive > 0) {
		int st;
		pid_t p = wait(&st);
		if (p > 0) {
			alive--;
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
				status = 1;
			continue;
		}
		if (errno == EINTR && stop_requested) {
			for (int s = 0; s < opt_servers; s++)
				kill(children[s], SIGTERM);
			stop_requested = 0;
		} else if (errno == ECHILD) {
			break;
		}
	}
	return status;
}
