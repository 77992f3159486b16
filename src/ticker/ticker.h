/*
 * pgqd-ev internals shared by the daemon's modules.
 *
 * Object model: one Ticker (the process) owns Clusters (one per configured
 * server); each Cluster owns its Dbs and, in discovery mode, one discovery
 * connection. Each Db owns its tick connection (db->conn), open all the time,
 * which carries the pgq checks and the ticks, and a maintenance connection
 * (db->maint_conn), open only while a maintenance or retry round runs (at most
 * max_maint_connections per cluster at once). Each connection has at most one
 * of our queries in flight, in a JobSlot (job.c): the only code that sends a
 * job and ends it. Maintenance and retry (maint.c) only plan the next
 * statement and read its result, so a tick never waits behind them.
 *
 * Invariants:
 *   - db->state changes only through db_set_state(), which keeps the per-state
 *     counters in Ticker.stats right.
 *   - Every Db has one timer (db->timer), armed for its earliest deadline other
 *     than its ticks; the ticks of all databases on the same grid come from
 *     their TickSlot's timer (tick_slot.c). A Db outside any slot (out of
 *     memory) ticks from db->timer.
 *   - A Db or Cluster is never freed inside one of its own callbacks: unregistering
 *     moves it to the graveyard, emptied from a deferred event.
 */
#ifndef PGQEV_TICKER_H
#define PGQEV_TICKER_H

#include <stdbool.h>
#include <stdint.h>

#include <pgqd-ev/pqev_common.h>
#include <pgqd-ev/pqev_conn.h>
#include <pgqd-ev/pqev_daemon.h>
#include <pgqd-ev/pqev_log.h>

#include "ticker_config.h"

struct event;
struct event_base;
struct evbuffer;

typedef struct Ticker Ticker;
typedef struct Cluster Cluster;
typedef struct Db Db;
typedef struct TickerHttp TickerHttp;
typedef struct TickSlot TickSlot;
typedef struct NodeWorker NodeWorker;

/* Where a database is; each state has a counter in TickerStats.by_state. */
typedef enum DbState {
	DB_CONNECTING = 0, /* waiting for a connection (includes backoff after failures) */
	DB_CHECKING,       /* checking for pgq and its version */
	DB_RUNNING,        /* ticking */
	DB_NOPGQ,          /* no usable pgq: disconnected, re-checked later */
	DB_FAILED,         /* the checks failed with an SQL error: disconnected, retried */
	DB_NSTATES,
} DbState;

const char *db_state_name(DbState st);

/* What failed, for pgqd_ev_errors_total{kind} and the stats line's errors. */
typedef enum ErrKind {
	ERR_CONNECT = 0, /* a connection attempt failed (refused, unreachable, name) */
	ERR_AUTH,        /* the server refused us (authentication, pg_hba.conf) */
	ERR_TIMEOUT,     /* a connect or query deadline passed */
	ERR_LOST,        /* an established connection broke */
	ERR_QUERY,       /* the server answered a query with an error */
	ERR_NKINDS,
} ErrKind;

const char *err_kind_name(ErrKind k);

/* What a query of ours is for. */
typedef enum DbJob {
	JOB_NONE = 0,
	JOB_CHECK,
	JOB_TICK,
	JOB_MAINT,
	JOB_RETRY,
	JOB_CANCEL, /* stop: cancel the maintenance statement in flight */
} DbJob;

/* One statement to run, as planned by the checks, ticks, maintenance or retry. */
typedef struct JobSpec {
	DbJob job;
	const char *what;  /* for messages: "pgq.ticker()", a maintenance function */
	const char *sql;   /* copied by job_run */
	const char *param; /* $1, or NULL for none */
	unsigned flags;    /* PQEV_Q_* */
	usec_t timeout;    /* 0: none */
} JobSpec;

/* How a job ended: handed to its done callback, borrowed for the call. */
typedef struct JobOutcome {
	DbJob job;
	const char *what;
	const PqevReply *reply;
	bool timed_out; /* cancelled by job_expire at its deadline */
} JobOutcome;

typedef void (*JobDoneFn)(Db *db, const JobOutcome *o);

/* The one job in flight on one connection of a database (job.c). */
typedef struct JobSlot {
	Db *db;
	DbJob job; /* JOB_NONE: idle */
	PqevReq *req;
	usec_t deadline; /* 0: none */
	bool timed_out;
	JobDoneFn done;
	char what[64];
} JobSlot;

/* One maintenance operation. */
typedef struct MaintOp {
	char *func; /* function name, or "vacuum"/"vacuum analyze"; MAINT_VACUUM_LIST special */
	char *arg;  /* NULL: no argument */
} MaintOp;

/* Tick lateness histogram bucket upper bounds, in milliseconds. */
#define LATENESS_BUCKETS 12
extern const double lateness_bounds_ms[LATENESS_BUCKETS];

struct Db {
	Ticker *t;
	Cluster *cl;
	Db *next; /* in cl->dbs */
	char *name;
	char *label; /* "db" or "cluster/db": log context and metrics label */
	PqevLogCtx *log;
	PqevConn *conn;       /* ticks and checks; open while the database is ticked */
	PqevConn *maint_conn; /* maintenance and retry; open only during a round */
	JobSlot tick_job;     /* on conn */
	JobSlot maint_job;    /* on maint_conn */
	bool maint_conn_held; /* counts against the cluster's max_maint_connections */
	Db *maint_wait_next;  /* in cl's queue of databases waiting for a connection */
	bool maint_waiting;
	struct event *timer;
	usec_t timer_at; /* when the pending timer fires (valid while pending) */
	TickSlot *slot;  /* the timer of this database's tick grid; NULL: db->timer */
	Db *slot_next, **slot_pprev;
	DbState state;
	bool dead;    /* unregistered; waiting in the graveyard */
	bool ever_ok; /* reached RUNNING at least once */

	/* what the checks found */
	bool has_maint_ops;
	char version[32];

	/* schedule (monotonic) */
	usec_t phase;      /* offset of this database's ticks on the period grid */
	usec_t next_tick;  /* next grid point */
	usec_t next_maint; /* USEC_INFINITY: not scheduled */
	usec_t next_retry;
	usec_t next_check; /* NOPGQ/FAILED: when to connect again */
	usec_t recheck_interval;
	usec_t wake_at; /* a woken tick waiting for wake_min_interval; 0: none */
	bool tick_due, maint_due, retry_due;
	bool tick_is_wake;   /* the due tick came from a wake-up */
	usec_t tick_sched;   /* when the due tick was scheduled */
	usec_t tick_started; /* when the last tick was sent */
	bool recheck_pgq;    /* a tick failed with an SQL error: run the checks again */

	/* low-latency watch (pgq.ticker_watch(), db.c): while it holds the watch lock,
	   producers send no wake-up and this database is ticked every few ms */
	bool has_watch;      /* the schema has pgq.ticker_watch() */
	bool has_watch_rule; /* ... and its form with the busy rule's settings */
	bool watching;       /* this session holds the watch lock */
	int tick_watch_mode; /* the mode of the tick in flight; -1: pgq.ticker() */
	usec_t watch_active; /* the last watch tick that made ticks (or the start) */
	usec_t watch_gap;    /* the current gap between watch ticks */
	usec_t watch_floor;  /* its least value now: wider while producers are busy */
	usec_t watch_prev;   /* when the previous watch tick was sent */
	bool watch_busy;     /* said in the log: the rate widened the gap (to 2x or more) */

	/* maintenance and retry rounds in progress */
	bool maint_active;
	MaintOp *ops;
	size_t nops, op_idx, op_cap;
	unsigned op_repeat;
	char *maint_sql; /* the statement maint_plan gave last */
	int maint_last;  /* what it was (maint.c's MaintStmt) */
	bool retry_active;
	bool retry_more; /* the last retry call moved events: call again */
	unsigned retry_calls;

	/* health */
	usec_t last_tick_ok;   /* monotonic; 0: never */
	usec_t last_tick_wall; /* wall clock of the same */
	unsigned fails;        /* consecutive failures (connect, check, tick) */
	usec_t failing_since;  /* monotonic; 0 when healthy */
	bool unreachable;      /* failing longer than unreachable_timeout */
	bool holds_conn;       /* counted in Ticker.fd_conns */
	bool fd_waiting;       /* counted in Ticker.fd_over: no descriptor left for it */
	unsigned err_streak;   /* SQL errors in a row, for log rate limiting */
	usec_t seen_at;        /* when it was registered: its start-up grace starts here */
	bool unhealthy_logged; /* the stale/never-ticked warning was logged */
	/* outage logging: a lost session is reported with what comes next (its
	   server down: the server's one line covers it; otherwise in full) */
	char *lost_msg;     /* held "connection lost" line, malloc'd; NULL: none */
	char *fatal_msg;    /* the server's last FATAL notice on this session */
	bool in_outage;     /* this failure streak waited on a down server */
	int cancel_backend; /* stop: the maintenance backend to cancel once the tick
			       connection is free; 0: none */

	/* totals for metrics */
	uint64_t n_ticks, n_created, n_errors, n_maint, n_retry, n_wakes;
	uint64_t n_err[ERR_NKINDS];
};

struct Cluster {
	Ticker *t;
	Cluster *next;
	char *name; /* "" for [pgqd] */
	char *base_connstr;
	char *initial_database;
	char **dblist; /* NULL-terminated copy; NULL: discovery */
	size_t ndblist;
	usec_t check_period, ticker_period, maint_period, retry_period, connection_lifetime;
	int max_connecting;
	PqevConnLimit *own_limit; /* when max_connecting > 0 */
	PqevLogCtx *log;
	Db *dbs;
	size_t ndbs;
	bool marked;
	bool dead;
	/* maintenance connections open now, and the databases waiting for one */
	unsigned maint_conns;
	Db *maint_wait_head, **maint_wait_tail;
	/* discovery */
	PqevConn *disc;
	struct event *disc_timer;
	bool disc_busy;
	bool disc_ok_once;
};

typedef struct TickerStats {
	/* since the last stats line */
	uint64_t ticks, created, maint, retry, errors, wakes;
	/* totals */
	uint64_t t_ticks, t_created, t_maint, t_retry, t_errors, t_wakes, t_skipped;
	uint64_t t_err[ERR_NKINDS];
	uint64_t lateness_hist[LATENESS_BUCKETS + 1];
	double lateness_sum;
	uint64_t lateness_count;
	usec_t lateness_max;    /* since the last stats line */
	uint64_t skipped;       /* since the last stats line */
	usec_t cpu_at, line_at; /* process CPU and clock at the last stats line */
	unsigned by_state[DB_NSTATES];
	unsigned unreachable;
} TickerStats;

struct Ticker {
	struct event_base *base;
	PqevConnLimit *limit;
	TickerConfig *cfg;
	const char *config_path;
	Cluster *clusters;
	TickSlot *slots;
	Db *graveyard;
	Cluster *cl_graveyard;
	struct event *reap_ev;
	struct event *stats_timer;
	struct event *health_timer;
	struct event *watchdog_timer;
	struct event *stop_timer;
	TickerHttp *http;
	NodeWorker *nodes;        /* [node NAME] workers (node.c) */
	unsigned nodes_unhealthy; /* as of the last node_check_health() */
	TickerStats stats;
	/*
	 * Each database holds one session, so one descriptor: the databases
	 * beyond RLIMIT_NOFILE less a reserve (log, HTTP, discovery, maintenance)
	 * are not connected, and said so, instead of failing with EMFILE and
	 * starving the HTTP endpoint of descriptors.
	 */
	size_t fd_limit; /* RLIMIT_NOFILE's soft limit, raised to the hard one at start */
	size_t fd_conns; /* databases holding a tick session object */
	size_t fd_over;  /* databases waiting for a descriptor */
	size_t fd_over_logged;
	usec_t fd_logged_at;
	usec_t start_mono;
	bool stopping;
	int exit_code;
	bool syslog_wanted;
};

/* ---- job.c: the one place that runs a job and ends it ---- */
void job_slot_init(JobSlot *s, Db *db);
/*
 * Send spec on c; `done` runs exactly once later (never inside this call), with
 * the slot already idle again, unless the database was unregistered meanwhile.
 * -errno when it could not be sent: then nothing runs.
 */
int job_run(JobSlot *s, PqevConn *c, const JobSpec *spec, JobDoneFn done);
static inline bool job_busy(const JobSlot *s)
{
	return s->job != JOB_NONE;
}
/* Past its deadline: cancel it (its done runs now, timed_out set). True if it did. */
bool job_expire(JobSlot *s, usec_t now);
/* Cancel the job, if any (its done runs now with PQEV_CANCELED). */
void job_cancel(JobSlot *s);

/* ---- db.c: the per-database state machine ---- */
Db *db_new(Cluster *cl, const char *name);
void db_start(Db *db);
/* Unregister: close the connection and move to the graveyard. */
void db_unregister(Db *db);
void db_free(Db *db);
void db_set_state(Db *db, DbState st);
/* Descriptors the databases may use: fd_limit less the reserve. */
size_t ticker_fd_budget(const Ticker *t);
/* Raise RLIMIT_NOFILE's soft limit to the hard one and note it in t->fd_limit. */
void ticker_fd_init(Ticker *t);
/* Run the next due job if nothing is in flight. */
void db_kick(Db *db);
/* Re-arm db->timer for the earliest deadline. */
void db_rearm(Db *db);
/* The cluster's settings changed: new connection config and schedule. */
void db_apply_settings(Db *db, bool reconnect);
/* Build the PqevConnConfig for a database (conninfo malloc'd into *conninfo_out). */
int db_conn_config(const Db *db, PqevConnConfig *cc, char **conninfo_out);
/* Record a failure (for health) and an SQL error (counters, rate-limited log). */
void db_note_failure(Db *db);
void db_note_sql_error(Db *db, const char *what, const PqevReply *r);
/*
 * Graceful stop: true while the stop owes this database something (a
 * maintenance statement to cancel, the cancel in flight), which is waited for
 * up to stop_timeout.
 */
bool db_stop_owed(const Db *db);
/* A tick, check or retry probe is in flight: one autocommit statement, never waited for long. */
bool db_tick_in_flight(const Db *db);
/* Graceful stop begins: end maintenance now (its statement is cancelled, not waited for). */
void db_stop(Db *db);
/* Graceful stop: send the cancels owed by the cluster's databases, on another free session if need be. */
void cluster_stop_cancels(Cluster *cl);
/* SIGHUP: check for pgq again now (parked: connect now; running: before the next tick). */
void db_recheck_now(Db *db);
/* Close both connections (stop, unregister); callbacks see db->dead. */
void db_close(Db *db);
/* The limiter's server hook: one line per outage of a server. */
void db_server_event(const PqevServerEvent *ev, void *arg);
/* Give free maintenance connections to the databases waiting for one. */
void cluster_maint_wake(Cluster *cl);
/* A grid point of the database's tick schedule passed (its slot's timer fired). */
void db_on_grid(Db *db, usec_t now);

/* ---- tick_slot.c: one timer per tick grid ---- */
/* The first point strictly after `now` of the grid start + phase + k * period. */
usec_t tick_grid_next(const Ticker *t, usec_t period, usec_t phase, usec_t now);
/* Put db in the slot of its cluster's ticker_period and its phase; -1: out of memory
   (db is then in no slot and ticks from its own timer). */
int slot_join(Db *db);
void slot_leave(Db *db);

/* ---- maint.c: what maintenance and retry rounds run ---- */
/*
 * The next statement of the maintenance round (starting one if none is
 * active), true; false when the round is over (counted and re-planned). The
 * spec's strings stay valid until the next call of maint.c for db.
 */
bool maint_plan(Db *db, JobSpec *spec);
/* The answer of the statement maint_plan gave last (a server result or SQL error). */
void maint_read(Db *db, const PqevReply *r);
bool retry_plan(Db *db, JobSpec *spec);
void retry_read(Db *db, const PqevReply *r);
/* Forget a round that cannot finish (its connection failed). */
void maint_reset(Db *db);
/* Quote a possibly schema-qualified name, each part as an identifier. */
char *maint_quote_fqname(const char *name);

/* ---- registry.c: clusters, discovery, reload ---- */
/* Make the running set of clusters and databases match cfg (mark and sweep). */
void registry_apply(Ticker *t, const TickerConfig *cfg);
void registry_free_all(Ticker *t);
void registry_reap(Ticker *t);
/* Schedule freeing of the graveyards from the loop. */
void registry_schedule_reap(Ticker *t);
/* Label of a database: "db" or "cluster/db" (malloc'd). */
char *registry_label(const Cluster *cl, const char *dbname);

/* ---- stats.c: stats line, health, metrics ---- */
void stats_record_lateness(Ticker *t, usec_t late);
void stats_log_line(Ticker *t);
/* Count one failure of `kind` (db NULL: a cluster's discovery connection). */
void stats_count_error(Ticker *t, Db *db, ErrKind kind);
/* The kind of a CONNECT_FAILED or LOST connection event. */
ErrKind stats_conn_error_kind(const PqevConnEvent *ev);
/* Update unreachable flags; returns true when the exit policy triggered. */
bool stats_check_health(Ticker *t);
bool stats_healthy(const Ticker *t);
void stats_render_metrics(Ticker *t, struct evbuffer *out);
void stats_render_health(Ticker *t, struct evbuffer *out);
/* Text as a Prometheus label value (json false) or inside a JSON string (json
   true), without the quotes: escaped, and a byte that is not UTF-8 written as
   the text \xNN, so the document stays valid whatever the name holds. */
void stats_put_escaped(struct evbuffer *out, const char *v, bool json);
/* Short text for systemd STATUS= */
void stats_status_text(const Ticker *t, char *buf, size_t len);

/* ---- node.c: [node NAME] cascade workers ---- */
/* Make the running workers match cfg (unchanged ones keep running). */
void node_apply(Ticker *t, const TickerConfig *cfg);
void node_stop_all(Ticker *t);
bool node_all_stopped(const Ticker *t);
void node_free_all(Ticker *t);
/* Update the unhealthy flags; returns how many nodes are unhealthy. */
unsigned node_check_health(Ticker *t);
void node_render_metrics(Ticker *t, struct evbuffer *out);
/* Appends ,"nodes":[...] to the /health object. */
void node_render_health(Ticker *t, struct evbuffer *out);

/* ---- http.c: the optional metrics endpoint ---- */
/* (Re)bind to `listen` ("" closes it). -errno with the cause logged. */
int http_configure(Ticker *t, const char *listen);
void http_free(Ticker *t);

#endif
