/*
 * pgqd-ev's configuration: the structs the ini file fills and the schema that
 * describes it to the core config engine (pqev_config.h).
 *
 * The [pgqd] section carries pgqd 3.5's keys with pgqd's meaning and defaults,
 * so an existing pgqd.ini loads unchanged, plus our own process-wide keys. Each
 * `[cluster NAME]` section adds one more PostgreSQL server to tick. The [pgqd]
 * section itself is a cluster (named "") when no [cluster] section exists or
 * when it sets base_connstr, initial_database or database_list explicitly.
 *
 * After a successful load, ticker_config_clusters() gives the effective list of
 * clusters with every period resolved (cluster value, else the [pgqd] value).
 */
#ifndef PGQEV_TICKER_CONFIG_H
#define PGQEV_TICKER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include <pgqd-ev/pqev_common.h>
#include <pgqd-ev/pqev_config.h>

/* What happens when a database stays unreachable for unreachable_timeout. */
typedef enum TickerUnreachable {
	TICKER_UNREACHABLE_REPORT = 0, /* warn, mark unhealthy in /health and STATUS */
	TICKER_UNREACHABLE_EXIT,       /* exit with status 3 (pgqd#5) */
} TickerUnreachable;

/* syslog: pgqd's integer flag, plus "auto" (on unless stderr is the journal). */
typedef enum TickerSyslog {
	TICKER_SYSLOG_OFF = 0,
	TICKER_SYSLOG_ON,
	TICKER_SYSLOG_AUTO,
} TickerSyslog;

/* One [cluster NAME] section; periods left unset inherit from [pgqd]. */
typedef struct ClusterCfg {
	char *name; /* NAME from the section header */
	char *base_connstr;
	char *initial_database;
	PqevConfList database_list;
	usec_t check_period;
	usec_t ticker_period;
	usec_t maint_period;
	usec_t retry_period;
	usec_t connection_lifetime;
	int max_connecting; /* 0: the global cap only */
} ClusterCfg;

/* One [node NAME] section: run the worker of a cascade node (docs/cascade.md). */
typedef struct NodeCfg {
	char *name;      /* NAME from the section header */
	char *queue;     /* the cascade (queue name) */
	char *db;        /* libpq conninfo of the node's database */
	char *node_name; /* expected node name; empty: NAME */
	char *worker;    /* worker name; empty: node_info.worker_name */
	int fetch_size;
	usec_t poll_period;
	usec_t wm_period;
	usec_t unhealthy_after; /* no progress this long: unhealthy; 0: never */
} NodeCfg;

/* The [pgqd] section. */
typedef struct MainCfg {
	/* pgqd 3.5 keys, same defaults */
	char *base_connstr;
	char *initial_database;
	PqevConfList database_list;
	usec_t check_period;
	usec_t ticker_period;
	usec_t maint_period;
	usec_t retry_period;
	usec_t stats_period;
	usec_t connection_lifetime;
	char *logfile;
	char *pidfile;
	char *syslog_text; /* as written: pgqd's integer, on/off or auto */
	char *syslog_ident;
	int syslog_facility;
	/* pgqd-ev keys */
	int max_connecting;
	int max_maint_connections; /* per cluster */
	usec_t connect_timeout;
	usec_t statement_timeout;
	usec_t query_timeout;
	usec_t backoff_base;
	usec_t backoff_cap;
	usec_t pgq_recheck_max;
	bool low_latency;
	usec_t wake_min_interval;
	usec_t wake_max_interval; /* the watch gap's bound while producers are busy */
	int wake_busy_rate;       /* events/s above which the watch gap widens; 0: never */
	char *application_name;
	char *metrics_listen;
	usec_t unreachable_timeout;
	int unreachable_action; /* TickerUnreachable */
	usec_t stop_timeout;
	int log_format;            /* PqevLogFormat */
	usec_t tick_stale_timeout; /* a database not ticked this long is unhealthy */
	usec_t startup_grace;      /* before that, a never-ticked database is not */
	/* derived by the section check, not keys */
	int syslog; /* TickerSyslog, from syslog_text */
	bool is_cluster;
} MainCfg;

/* The whole file. */
typedef struct TickerConfig {
	MainCfg main;
	PqevConfArray clusters; /* of ClusterCfg */
	PqevConfArray nodes;    /* of NodeCfg */
} TickerConfig;

/* A cluster with everything resolved; strings borrowed from the TickerConfig. */
typedef struct ClusterView {
	const char *name; /* "" for the [pgqd] section itself */
	const char *base_connstr;
	const char *initial_database;
	const PqevConfList *database_list; /* count 0: discover */
	usec_t check_period;
	usec_t ticker_period;
	usec_t maint_period;
	usec_t retry_period;
	usec_t connection_lifetime;
	int max_connecting;
} ClusterView;

extern const PqevConfSchema ticker_config_schema;

/* True when the [pgqd] section is a cluster of its own (see the file comment). */
bool ticker_config_main_is_cluster(const TickerConfig *cfg);

/*
 * Fill views[0..max) with the effective clusters and return how many there are
 * (the return value may exceed max; call with max 0 to count).
 */
size_t ticker_config_clusters(const TickerConfig *cfg, ClusterView *views, size_t max);

/* Free (NULL allowed); returns NULL. */
TickerConfig *ticker_config_free(TickerConfig *cfg);

/* The commented sample configuration (conf/pgqd-ev.ini), embedded at build time. */
extern const char ticker_sample_ini[];

#endif
