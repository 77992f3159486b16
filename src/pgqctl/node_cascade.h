/*
 * Cascade members for pgqctl's role changes (cmd_node_switch.c,
 * cmd_node_failover.c): the member map,
 * a connection per member, each node's state read fresh from its database, and
 * the moves the plans are made of (pause, resume, subscribe, change provider).
 */
#ifndef PGQEV_PGQCTL_NODE_CASCADE_H
#define PGQEV_PGQCTL_NODE_CASCADE_H

#include "pgqctl.h"

#define NC_MAX_MEMBERS 128
#define NC_NAME_LEN    (CTL_NAME_MAX + 1)

typedef struct NcMember {
	char *name, *location;
	bool dead; /* in the map of the -d node */
	CtlDb *db;
	bool tried, up;
} NcMember;

/* A node as its own database tells it, read fresh for every check. */
typedef struct NcState {
	bool node; /* a node of the cascade is there */
	char type[16], name[NC_NAME_LEN], worker[NC_NAME_LEN], provider[NC_NAME_LEN];
	bool paused, uptodate, writes_off;
	long long completed, top; /* worker's last tick; queue's latest tick (-1: none) */
} NcState;

/* A cascaded consumer's row in local_state. */
typedef struct NcCons {
	bool found;
	char provider[NC_NAME_LEN];
	long long completed;
	bool paused, uptodate;
} NcCons;

typedef struct NcOp {
	CtlCtx *ctx;
	const char *queue;
	char what[2 * CTL_NAME_MAX + 64];
	usec_t timeout;
	NcMember m[NC_MAX_MEMBERS];
	int nm;
	CtlDb *local;
	/* switchover / failover */
	NcMember *old, *nw;
	bool dead_root;
	NcMember *subs[NC_MAX_MEMBERS]; /* failover: OLD's live subscribers to move */
	int nsubs;
	long long final_tick;
	double t_off, t_on, t_start;
	long long resume_tick; /* failover: the tick the cascade resumed from (0: none) */
	/* change-provider */
	NcMember *node, *prov;
	const char *consumer; /* the consumer to move; the node's worker unless --consumer */
	bool plain;           /* --consumer: a plain cascaded consumer, not the worker */
	char worker[NC_NAME_LEN];
} NcOp;

typedef struct NcArgs {
	const char *queue, *cascade, *timeout;
	bool dry_run;
} NcArgs;

/* Options, -d connection and member map (merged with the members' own maps);
   0 or an exit code (printed). nc_free closes every connection. */
int nc_setup(CtlCtx *ctx, NcOp *op, NcArgs *a, const char *cmd);
void nc_free(NcOp *op);
NcMember *nc_find(NcOp *op, const char *name);
/* nc_find, or NULL with "no member" printed. */
NcMember *nc_need_member(NcOp *op, const char *name, const char *role);
/* The member's connection (opened once), NULL when it does not answer. */
CtlDb *nc_db(NcOp *op, NcMember *m);
bool nc_reachable(NcOp *op, NcMember *m);
long long nc_cell_ll(const PGresult *r, int row, int col); /* NULL -> -1 */
/* 1 read, 0 the member does not answer, -1 error (printed). */
int nc_read_state(NcOp *op, NcMember *m, NcState *st);
/* nc_read_state that needs an answer and a node: false (printed) otherwise. */
bool nc_need_state(NcOp *op, NcMember *m, NcState *st);
/* The consumer's local_state row; 1 or -1 (printed). */
int nc_cons_state(NcOp *op, NcMember *m, const char *consumer, NcCons *cs);
/* Sleep on the loop; a signal ends pgqctl ("run the same command again"). */
void nc_nap(CtlCtx *ctx, int ms);
/* set_consumer_paused; with `wait`, until the consumer acknowledged (uptodate)
   or --timeout. 0 or -1 (printed). */
int nc_pause(NcOp *op, NcMember *m, const char *consumer, bool wait);
int nc_resume(NcOp *op, NcMember *m, const char *consumer);
/* Is `name` in m's subscriber_info? 1, 0, -1. */
int nc_has_subscriber(NcOp *op, NcMember *m, const char *name);
/* Live members with a queue (not leaves) but the two excepted for which
   holds(op, m, name) says 1, into out[]; their count or -1. */
int nc_queues_holding(NcOp *op, const NcMember *except1, const NcMember *except2,
		      int (*holds)(NcOp *op, NcMember *m, const char *name), const char *name,
		      NcMember **out);
/* Live members (but the two excepted; one of them is the node `name`) listing
   `name` as subscriber, into out[]; their count or -1. */
int nc_subscribed_on(NcOp *op, const char *name, const NcMember *except1, const NcMember *except2,
		     NcMember **out);
/* Wait until m's queue holds `tick` and its worker completed it (--timeout). */
int nc_wait_for_tick(NcOp *op, NcMember *m, long long tick);
/* Is `anc` on m's provider path? 1, 0, -1. */
int nc_is_above(NcOp *op, NcMember *m, const NcMember *anc);
/* Subscribe s's worker on `to` at s's last tick (waiting for `to` to have it)
   and point it there (change_consumer_provider). 0 or -1 (printed). */
int nc_move_worker(NcOp *op, NcMember *s, NcMember *to);

/* The first column of a one-row statement on m as a number: a count(*) or a
   flag; -1 on error (printed). */
long long nc_number(NcOp *op, NcMember *m, const char *sql, int n, const char *const *p);
/* The quoted name of m's event table of the cascade's queue into tbl; false
   (printed) when there is no queue. */
bool nc_queue_table(NcOp *op, NcMember *m, char *tbl, size_t len);
/* Is `m`'s worker resumed? 1, 0, -1. */
int nc_resumed(NcOp *op, NcMember *m);
/* Resume / pause (waiting for the acknowledgement) m's worker; 0 or -1. */
int nc_resume_worker(NcOp *op, NcMember *m);
int nc_pause_worker(NcOp *op, NcMember *m);
/* Is m the root? 1, 0, -1 (printed). */
int nc_is_root(NcOp *op, NcMember *m);
/* Drop `who`'s subscription on every live member but `except` that has one
   (each noted as "on NODE"); 0 or -1. */
int nc_unsubscribe_everywhere(CtlPlan *p, NcOp *op, NcMember *who, const NcMember *except);
/* A step title from `tpl`, where "{KEY}" stands for the name vals[i] of
   keys[i] (shown as ctl_q shows it). */
void nc_title(char *buf, size_t len, const char *tpl, int n, const char *const *keys,
	      const char *const *vals);

#endif
