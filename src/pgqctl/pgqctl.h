/*
 * pgqctl: the operator's command line for PgQ queues (ours and PgQ 3.5's).
 *
 * Structure: main.c parses the global options and walks the command table
 * (CtlCommand, nested by group: `retry now`, later `node status`); each command
 * group lives in its own cmd_*.c and gets a CtlCtx with the connection target
 * and the output settings. db.c turns the core's asynchronous connection into
 * the synchronous calls a command wants (one loop, run until the answer comes);
 * multi.c asks many databases at once (status --all). out.c prints aligned
 * tables and JSON.
 *
 * Errors: commands print one line "pgqctl: OBJECT: cause" through ctl_err()
 * and return a CTL_EXIT_* code.
 */
#ifndef PGQEV_PGQCTL_H
#define PGQEV_PGQCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <libpq-fe.h>

#include <pgqd-ev/pqev_common.h>

/* Exit codes (documented in pgqctl(1)). */
enum {
	CTL_EXIT_OK = 0,
	CTL_EXIT_ERROR = 1,
	CTL_EXIT_USAGE = 2,
	CTL_EXIT_PROBLEM = 3, /* status found a problem */
	CTL_EXIT_TIMEOUT = 4, /* a wait ran out of time */
};

struct event_base;
typedef struct PqevConnLimit PqevConnLimit;
typedef struct CtlDb CtlDb;

/* One database to talk to: label for output, full conninfo. */
typedef struct CtlTarget {
	char *label;    /* "db" or "cluster/db"; for output */
	char *conninfo; /* never printed */
	char *cluster;  /* cluster name ("" for [pgqd]) or NULL with -d */
} CtlTarget;

/* Everything a command gets. */
typedef struct CtlCtx {
	/* global options */
	const char *connstr; /* -d, else PGQCTL_DB, else "" (libpq's PG* variables) */
	const char *ini;     /* -c */
	const char *db_name; /* --db */
	const char *cluster; /* --cluster */
	bool all;            /* --all */
	bool json;           /* --json */
	bool color;          /* a terminal without NO_COLOR */
	bool quiet;
	usec_t connect_timeout;
	bool connect_timeout_set; /* --connect-timeout given */
	unsigned max_conns;       /* --max-conns: connections at once with --all */
	const char *sqldir;       /* --sqldir / PGQCTL_SQLDIR */
	/* loop */
	struct event_base *base;
	PqevConnLimit *lim;
	const char *ticker_listen; /* metrics_listen from the ini, if any */
} CtlCtx;

/* A command or a group of commands (sub != NULL). Tables end with name NULL. */
typedef struct CtlCommand {
	const char *name;
	int (*run)(CtlCtx *ctx, int argc, char **argv); /* argv[0] is the command name */
	const struct CtlCommand *sub;                   /* group: sub-command table */
	const char *usage;                              /* arguments, for help */
	const char *help;                               /* one line */
} CtlCommand;

/* ---- main.c / args.c ---- */
void ctl_err(const char *fmt, ...) PQEV_PRINTF(1, 2);
/* The text of the last ctl_err() (for --json reports); "" until the first. */
extern char ctl_last_err[1024];
int ctl_usage(const char *cmd, const char *fmt, ...) PQEV_PRINTF(2, 3); /* returns 2 */
/* A queue/consumer name pgqctl is asked to create: any text but empty, control
   characters or over CTL_NAME_MAX bytes. Otherwise prints why, returns false. */
#define CTL_NAME_MAX 2000
bool ctl_check_new_name(const char *what, const char *name);
/* A name for messages: as is when plain, else quoted and escaped. The last
   CTL_Q_HELD results stay valid (the names of one message). */
#define CTL_Q_HELD 16
const char *ctl_q(const char *name);
const char *ctl_qq(const char *name); /* always in double quotes */
/* Parse an integer option value; prints and returns false when bad. */
bool ctl_parse_i64(const char *opt, const char *s, long long min, long long max, long long *out);
/* A command's options: "--name" flags (bool *), "--name VALUE" or "--name=VALUE"
   (const char **). --json is accepted by every command. */
typedef struct CtlOpt {
	const char *name; /* without "--" */
	bool takes_value;
	void *dst;
} CtlOpt;
#define CTL_MAX_ARGS 256
/* Fills pos[0..*npos) with the positional arguments (argv[0] excluded). Returns 0
   or CTL_EXIT_USAGE (printed). pos holds CTL_MAX_ARGS entries. */
int ctl_parse_opts(CtlCtx *ctx, int argc, char **argv, const CtlOpt *opts, char **pos, int *npos);

/* ---- out.c ---- */
typedef struct CtlTable CtlTable;
CtlTable *ctl_table_new(int ncols, const char *const *headers);
void ctl_table_add(CtlTable *t, const char *const *cells); /* ncols cells, NULL -> "" */
/* Mark a cell of the last row as bad (red on a terminal). */
void ctl_table_mark_bad(CtlTable *t, int col);
void ctl_table_print(CtlTable *t, FILE *out, bool color);
CtlTable *ctl_table_free(CtlTable *t);

/* JSON writer: a tiny streaming emitter with comma handling. */
typedef struct CtlJson {
	FILE *out;
	int depth;
	bool need_comma[32];
} CtlJson;
void ctl_json_init(CtlJson *j, FILE *out);
void ctl_json_obj_begin(CtlJson *j, const char *key); /* key NULL inside arrays/top */
void ctl_json_obj_end(CtlJson *j);
void ctl_json_arr_begin(CtlJson *j, const char *key);
void ctl_json_arr_end(CtlJson *j);
void ctl_json_str(CtlJson *j, const char *key, const char *v); /* NULL -> null */
void ctl_json_int(CtlJson *j, const char *key, long long v);
void ctl_json_num(CtlJson *j, const char *key, double v);
void ctl_json_bool(CtlJson *j, const char *key, bool v);
void ctl_json_null(CtlJson *j, const char *key);
/* A PGresult cell: NULL -> null; numeric/boolean OIDs as JSON numbers/booleans. */
void ctl_json_cell(CtlJson *j, const char *key, const PGresult *r, int row, int col);
void ctl_json_end(CtlJson *j); /* newline */
/* Write `s` as a JSON string literal (quotes included). */
void ctl_json_escape(FILE *out, const char *s);

/* Seconds as "1.2s", "3m04s", "2h05m", "3d04h". */
void ctl_fmt_age(char *buf, size_t len, double sec);

/* ---- db.c ---- */
/* Resolve the targets of the global options: one (-d, --db) or many (--all,
   --cluster). Returns 0 or an exit code (message printed). */
int ctl_targets(CtlCtx *ctx, CtlTarget **out, size_t *n);
/* Load -c INI once (sets ctx->ticker_listen); 0 or an exit code (printed). */
int ctl_load_ini(CtlCtx *ctx);
void ctl_targets_free(CtlTarget *t, size_t n);
/* The one target of a single-database command (errors for --all). */
int ctl_single_target(CtlCtx *ctx, CtlTarget *out);

/* Open and connect the single target; 0 or an exit code (printed). */
int ctl_open_single(CtlCtx *ctx, CtlDb **out);
CtlDb *ctl_db_open(CtlCtx *ctx, const CtlTarget *t);
CtlDb *ctl_db_close(CtlDb *db);
const char *ctl_db_label(const CtlDb *db);
/* Wait until connected; false (message in ctl_db_error) when it failed. */
bool ctl_db_connect(CtlDb *db);
/* Run one statement; returns an owned copy of the result (PQclear it) or NULL
   with ctl_db_error()/ctl_db_sqlstate() set. flags: PQEV_Q_* */
PGresult *ctl_db_exec(CtlDb *db, const char *sql, int nparams, const char *const *params);
PGresult *ctl_db_exec_simple(CtlDb *db, const char *sql);
const char *ctl_db_error(const CtlDb *db);
const char *ctl_db_sqlstate(const CtlDb *db);
/* Print the last error as "pgqctl: LABEL: what: cause", with the role to ask for on a
   privilege error and "no PgQ here" on a missing schema. Returns CTL_EXIT_ERROR. */
int ctl_db_fail(CtlDb *db, const char *what);
/* The result of the last ctl_db_exec: one value or NULL. */
const char *ctl_val(const PGresult *r, int row, int col);
/* A plain blocking libpq connection to the same database (COPY, which the core's
   pipelined connection does not do); NULL with the error printed. */
PGconn *ctl_db_connect_blocking(CtlDb *db);
/* ctl_db_fail for an error result of such a connection (r NULL: the connection's). */
int ctl_db_fail_result(CtlDb *db, PGconn *pc, const PGresult *r, const char *what);
/* Does the database have PgQ (schema pgq with pgq.version())? -1 on error. */
int ctl_db_has_pgq(CtlDb *db);
/* Require PgQ; prints "no PgQ" and returns false. */
bool ctl_db_need_pgq(CtlDb *db);
/* Lets the loop run until `*flag` is true or a SIGINT/SIGTERM arrived (returns false). */
bool ctl_loop_until(CtlCtx *ctx, const bool *flag);
/* Set by SIGINT/SIGTERM (signal number). */
extern volatile int ctl_signalled;
/* false (default): a signal ends the command at its next wait with 128+signal;
   true: the command sees ctl_signalled and finishes by itself (tail). */
extern bool ctl_finish_on_signal;
struct PqevConn *ctl_db_conn(CtlDb *db);
/* Set *flag to true on every notification the connection receives. */
void ctl_db_on_notify(CtlDb *db, bool *flag);

/* ---- multi.c: the same statements on many databases at once ---- */
#define CTL_PROBE_MAXQ 8
typedef struct CtlProbe {
	const CtlTarget *target;
	bool reachable;                /* connected (false: error holds why) */
	char error[512];               /* connect failure, without the label */
	PGresult *res[CTL_PROBE_MAXQ]; /* owned copies; NULL when that statement failed */
	char qerr[CTL_PROBE_MAXQ][256];
	char sqlstate[CTL_PROBE_MAXQ][6];
} CtlProbe;
typedef struct CtlProbeQuery {
	const char *sql;
	int nparams;
	const char *const *params;
	int gate; /* > 0: sent only if column `gate` of the first statement's row is true */
} CtlProbeQuery;
/* Run the statements on every target, at most ctx->max_conns connections open at
   once: the first alone, then the others (pipelined) that its answer lets through,
   so a database without PgQ is not sent statements that would fail. Returns an
   array of n probes (free with ctl_probes_free). NULL if interrupted. */
CtlProbe *ctl_multi_run(CtlCtx *ctx, const CtlTarget *t, size_t n, const CtlProbeQuery *q, int nq);
void ctl_probes_free(CtlProbe *p, size_t n);

/* Shared SQL (cmd_queue.c, cmd_consumer.c). */
extern const char ctl_queue_sql[];
extern const char ctl_consumer_sql[];

/* ---- node_plan.c: resumable step plans of the multi-step `node` commands ---- */
typedef struct CtlPlan CtlPlan;
/* A step's check: 1 already done, 0 to do, -1 error (printed). Its action: 0 done,
   -1 failed (printed). `n` is the step's own number given at ctl_plan_step. */
typedef int (*CtlStepFn)(CtlPlan *p, void *arg, int n);
/* How steps are printed, how far a dry run checks, what the test hook counts. */
typedef enum CtlPlanStyle {
	/* steps that build on each other: "step 3/12: TITLE: done in 0.2 s (NOTE)",
	   a dry run checks up to the first step to do ("to do"), the closing line
	   only for a dry run; PGQCTL_STOP_AFTER_STEP=N exits 1 after step N */
	CTL_PLAN_SEQUENCE,
	/* a change on one member per step: "step 3: NODE: TITLE: done, NOTE", each
	   step checked in a dry run too ("would be done"), a closing count line;
	   PGQCTL_STOP_AFTER_STEP=N is a SIGKILL after the N-th step done now */
	CTL_PLAN_PER_NODE,
} CtlPlanStyle;
/* `op` names the operation in messages (and the closing line of a per-node plan). */
CtlPlan *ctl_plan_new(CtlCtx *ctx, const char *op, CtlPlanStyle style, bool dry_run);
CtlPlan *ctl_plan_free(CtlPlan *p);
/* `node`: the member the step changes (printed by a per-node plan), or NULL. */
void ctl_plan_step(CtlPlan *p, const char *node, CtlStepFn check, CtlStepFn act, void *arg, int n,
		   const char *fmt, ...) PQEV_PRINTF(7, 8);
/* The step just added stands alone: when it fails, the later steps still run
   (and the plan fails at the end). */
void ctl_plan_independent(CtlPlan *p);
int ctl_plan_count(const CtlPlan *p);
bool ctl_plan_dry_run(const CtlPlan *p);
/* Text output wanted (neither --quiet nor --json). */
bool ctl_plan_text(const CtlPlan *p);
/* Detail of the step being checked or done: printed after it, in the JSON "detail". */
void ctl_plan_note(CtlPlan *p, const char *fmt, ...) PQEV_PRINTF(2, 3);
/* The same, after what the step noted already ("; " between). */
void ctl_plan_note_more(CtlPlan *p, const char *fmt, ...) PQEV_PRINTF(2, 3);
/* Run the steps (see node_plan.c); an exit code. */
int ctl_plan_run(CtlPlan *p);
/* With --json: the document of the plan (command, every step with its outcome
   and detail), then what `extra` adds; returns rc. Nothing without --json. */
typedef void (*CtlPlanJsonFn)(CtlJson *j, void *arg);
int ctl_plan_json(CtlPlan *p, const char *command, int rc, CtlPlanJsonFn extra, void *arg);
/* Connection to a cascade member, labelled "node NAME". */
CtlDb *ctl_plan_open(CtlCtx *ctx, const char *node, const char *location);
/* A pgq_node call answering (ret_code, ret_note, ...): false (printed) on an SQL
   error or a code >= 400; the result is kept in *out when out is given. */
bool ctl_plan_call(CtlDb *db, const char *what, const char *sql, int n, const char *const *p,
		   PGresult **out);
/* A statement whose failure is printed; NULL then. */
PGresult *ctl_plan_query(CtlDb *db, const char *what, const char *sql, int n, const char *const *p);
double ctl_now_sec(void); /* monotonic seconds */
/* ---- node_common.c: helpers of the `node` commands ---- */
/* Does a connect string hold a password? -1 when it does not parse. */
int ctl_node_has_password(const char *cs);
/* Open another member's database, labelled "ROLE DBNAME" in messages. */
CtlDb *ctl_node_open(CtlCtx *ctx, const char *role, const char *cs);
/* Is schema pgq_node there? false (printed as "LABEL: what: no pgq_node ...") if not. */
bool ctl_node_has_schema(CtlDb *db, const char *what);
/* get_node_info(queue) after the schema check; NULL (printed) on error. */
PGresult *ctl_node_info(CtlDb *db, const char *queue, const char *what);
/* Run a pgq_node call answering (ret_code, ret_note, ...); false (printed) on an
   SQL error or a code >= 300. The result is kept in *out when out is given. */
bool ctl_node_call(CtlDb *db, const char *what, const char *sql, int n, const char *const *p,
		   PGresult **out);
/* The same, failing on a code >= `limit`. */
bool ctl_node_call_below(CtlDb *db, const char *what, const char *sql, int n, const char *const *p,
			 PGresult **out, int limit);
bool ctl_node_exec_ok(CtlDb *db, const char *what, const char *sql);
/* "LABEL: message" on stdout unless --quiet. */
void ctl_node_say(CtlCtx *ctx, CtlDb *db, const char *fmt, ...) PQEV_PRINTF(3, 4);
/* A stored connect string for printing: one holding a password is not shown. */
const char *ctl_node_shown_location(const char *loc);

/* A cascade, node or worker name that node create-root/-branch/-leaf is to
   store: what ctl_check_new_name() takes, valid UTF-8, no space at either end
   (an ini [node NAME] section cannot hold one), and room for the consumer
   names pgq_node derives from it; a worker name must not start with "." nor
   end in ".gravestone" or ".dumper" (the cascade's own consumers). Prints why
   (naming the thing and the cause) and returns false otherwise. */
bool ctl_check_node_name(const char *what, const char *name);
/* For a text table cell: control characters as \xNN (static buffer, one at a
   time). Names in cells go through ctl_q(). */
const char *ctl_cell_text(const char *s);

/* The cascade of a node command: --cascade Q, --queue Q, or the first of
   nwant + 1 positional words; pos then holds the nwant others. */
int ctl_node_args(CtlCtx *ctx, int argc, char **argv, const CtlOpt *extra, int nwant,
		  const char **queue, char **pos, int *npos);
/* The member map a node holds (get_queue_locations), ordered by name. */
typedef struct CtlMember {
	char *name, *location;
	bool dead;
} CtlMember;
CtlMember *ctl_node_members(CtlDb *db, const char *queue, const char *what, size_t *n);
const CtlMember *ctl_node_member(const CtlMember *m, size_t n, const char *name);
void ctl_node_members_free(CtlMember *m, size_t n);
/* Open a member at its stored location, labelled "node NAME". */
CtlDb *ctl_node_open_member(CtlCtx *ctx, const CtlMember *m);
/* Run the loop for `us`; false when a signal arrived. */
bool ctl_node_sleep(CtlCtx *ctx, usec_t us);
/* ---- commands ---- */
int cmd_install(CtlCtx *ctx, int argc, char **argv);
int cmd_upgrade(CtlCtx *ctx, int argc, char **argv);
int cmd_uninstall(CtlCtx *ctx, int argc, char **argv);
int cmd_version(CtlCtx *ctx, int argc, char **argv);
int cmd_create(CtlCtx *ctx, int argc, char **argv);
int cmd_drop(CtlCtx *ctx, int argc, char **argv);
int cmd_config(CtlCtx *ctx, int argc, char **argv);
int cmd_queues(CtlCtx *ctx, int argc, char **argv);
int cmd_register(CtlCtx *ctx, int argc, char **argv);
int cmd_unregister(CtlCtx *ctx, int argc, char **argv);
int cmd_consumers(CtlCtx *ctx, int argc, char **argv);
int cmd_status(CtlCtx *ctx, int argc, char **argv);
int cmd_events(CtlCtx *ctx, int argc, char **argv);
int cmd_insert(CtlCtx *ctx, int argc, char **argv);
int cmd_tail(CtlCtx *ctx, int argc, char **argv);
int cmd_retry_list(CtlCtx *ctx, int argc, char **argv);
int cmd_retry_now(CtlCtx *ctx, int argc, char **argv);
int cmd_retry_drop(CtlCtx *ctx, int argc, char **argv);
int cmd_ticker(CtlCtx *ctx, int argc, char **argv);
int cmd_complete(CtlCtx *ctx, int argc, char **argv);
int cmd_node_create_root(CtlCtx *ctx, int argc, char **argv);
int cmd_node_create_branch(CtlCtx *ctx, int argc, char **argv);
int cmd_node_create_leaf(CtlCtx *ctx, int argc, char **argv);
int cmd_node_members(CtlCtx *ctx, int argc, char **argv);
int cmd_node_info(CtlCtx *ctx, int argc, char **argv);
int cmd_node_change_provider(CtlCtx *ctx, int argc, char **argv);
int cmd_node_switchover(CtlCtx *ctx, int argc, char **argv);
int cmd_node_failover(CtlCtx *ctx, int argc, char **argv);
int cmd_node_status(CtlCtx *ctx, int argc, char **argv);
int cmd_node_wait_root(CtlCtx *ctx, int argc, char **argv);
int cmd_node_wait_provider(CtlCtx *ctx, int argc, char **argv);
int cmd_node_pause(CtlCtx *ctx, int argc, char **argv);
int cmd_node_resume(CtlCtx *ctx, int argc, char **argv);
int cmd_node_tag_dead(CtlCtx *ctx, int argc, char **argv);
int cmd_node_tag_alive(CtlCtx *ctx, int argc, char **argv);
int cmd_node_drop_node(CtlCtx *ctx, int argc, char **argv);
int cmd_node_resurrect(CtlCtx *ctx, int argc, char **argv);
int cmd_node_rename_node(CtlCtx *ctx, int argc, char **argv);

extern const CtlCommand ctl_commands[];

#endif
