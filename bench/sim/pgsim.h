/*
 * pgsim.h: what pgsim.c (the protocol, the server loop, the control socket)
 * shares with pgsim_fork.c (--process-per-session: one forked backend process
 * per session). A session is a Conn; in a backend process its bev is NULL and
 * hold() only marks a reply due (c->due, c->burn_ms), which the backend's own
 * loop answers after burning that much CPU.
 */
#ifndef PGSIM_H
#define PGSIM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event_struct.h>

struct bufferevent;
struct evbuffer;
struct event_base;
typedef struct Reply Reply;

enum { C_STARTUP, C_READY };

/* what proto_step() did with the input */
enum {
	STEP_MORE,  /* a message is incomplete: wait for input */
	STEP_DONE,  /* one message handled */
	STEP_CLOSE, /* close the session now */
	STEP_FORK,  /* a valid startup in --process-per-session: hand it to a backend */
};

typedef struct Conn {
	struct bufferevent *bev;  /* NULL in a backend process */
	struct evbuffer *pending; /* replies waiting for their delay */
	struct event timer;
	int fd;
	int db; /* index into the server's databases, -1: postgres/template1 */
	uint32_t key;
	uint8_t state;
	bool waiting;      /* a delayed reply is pending: input is not read meanwhile */
	bool closing;      /* close once the output is written */
	bool ext_error;    /* extended protocol: skip to Sync after an error */
	bool due;          /* backend: the reply in pending is due after burn_ms of CPU */
	double burn_ms;    /* backend: CPU to burn before sending pending */
	const Reply *stmt; /* the unnamed statement's reply (Parse) */
	bool stmt_empty;   /* the unnamed statement is blank */
	char *stmt_sql;
	char *user; /* the startup packet's user */
} Conn;

/* pgsim.c */
double connect_delay(int db);
__attribute__((format(printf, 1, 2), noreturn)) void die(const char *fmt, ...);
void *xmalloc(size_t n);
int proto_step(Conn *c, struct evbuffer *in);
void startup_reply(Conn *c, uint32_t pid);
void hold(Conn *c, double ms);
void msg_error(struct evbuffer *b, const char *sev, const char *code, const char *text);
void msg_ready(struct evbuffer *b);

/* pgsim_fork.c: the server's side */
void backends_init(struct event_base *base);
/* forks the backend of c (in: what followed the startup packet) after burning
 * fork_ms of the server's CPU; returns in the server only, which then closes
 * its copy of the socket */
void backend_fork(Conn *c, struct evbuffer *in, double fork_ms, double tail);
void backend_cancel(uint32_t pid, uint32_t key);
void backends_terminate(void);
int backends_count(void);

#endif
