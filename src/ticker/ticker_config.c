/*
 * The ini schema of pgqd-ev (see ticker_config.h). Keys keep pgqd's names and
 * defaults; every key is documented in docs/pgqd-ev.8.md and conf/pgqd-ev.ini.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pgqd-ev/pqev_log.h>

#include "ticker_config.h"

/*
 * syslog: pgqd reads an integer (any, as strtol with base 0: 2, -1, 0x10), non-zero
 * meaning on; we also take auto and the usual boolean words.
 */
static int parse_syslog(const char *v)
{
	bool b;
	char *end;

	if (!v)
		return -1;
	if (strcasecmp(v, "auto") == 0)
		return TICKER_SYSLOG_AUTO;
	if (pqev_conf_parse_bool(v, &b) == 0)
		return b ? TICKER_SYSLOG_ON : TICKER_SYSLOG_OFF;
	if (*v == '\0' || isspace((unsigned char)*v))
		return -1;
	errno = 0;
	{
		long long n = strtoll(v, &end, 0);
		if (*end != '\0')
			return -1;
		/* too large still reads as non-zero, as in pgqd */
		return n != 0 || errno == ERANGE ? TICKER_SYSLOG_ON : TICKER_SYSLOG_OFF;
	}
}

static bool check_syslog(const void *field, char *err, size_t errlen)
{
	if (parse_syslog(*(char *const *)field) >= 0)
		return true;
	snprintf(err, errlen, "expected auto, a whole number (0: off, any other: on) or on/off");
	return false;
}

static const PqevConfEnumItem unreachable_map[] = {
	{"report", TICKER_UNREACHABLE_REPORT},
	{"exit", TICKER_UNREACHABLE_EXIT},
	{NULL, 0},
};

static const PqevConfEnumItem log_format_map[] = {
	{"text", PQEV_LOG_TEXT},
	{"logfmt", PQEV_LOG_LOGFMT},
	{NULL, 0},
};

/* "host:port" or "[v6]:port"; the address must be numeric (no blocking lookup). */
static bool check_listen(const void *field, char *err, size_t errlen)
{
	const char *v = *(char *const *)field;
	const char *colon;
	char *end;
	long port;

	if (!v || !*v)
		return true;
	colon = strrchr(v, ':');
	if (!colon || colon == v) {
		snprintf(err, errlen, "expected ADDRESS:PORT, e.g. 127.0.0.1:9187");
		return false;
	}
	port = strtol(colon + 1, &end, 10);
	if (*end || colon[1] == '\0' || port < 1 || port > 65535) {
		snprintf(err, errlen, "bad port \"%s\" (1..65535)", colon + 1);
		return false;
	}
	return true;
}

static bool check_dbnames(const void *field, char *err, size_t errlen)
{
	const PqevConfList *l = field;

	for (size_t i = 0; i < l->count; i++) {
		if (strlen(l->items[i]) > 63) {
			snprintf(err, errlen, "database name \"%.20s...\" longer than 63 bytes",
				 l->items[i]);
			return false;
		}
		for (size_t j = 0; j < i; j++) {
			if (strcmp(l->items[i], l->items[j]) == 0) {
				snprintf(err, errlen, "database \"%s\" listed twice", l->items[i]);
				return false;
			}
		}
	}
	return true;
}

/* the largest useful period: a year */
#define MAXP (86400.0 * 365)

static const PqevConfKey main_keys[] = {
	/* pgqd 3.5 */
	PQEV_CONF_STRING("base_connstr", MainCfg, base_connstr, "", PQEV_CF_SECRET,
			 .help = "libpq conninfo without dbname"),
	PQEV_CONF_STRING("initial_database", MainCfg, initial_database, "template1", 0,
			 .help = "database that discovery connects to"),
	PQEV_CONF_LIST("database_list", MainCfg, database_list, "", 0, .validate = check_dbnames,
		       .help = "databases to tick; empty: discover"),
	PQEV_CONF_SECONDS("check_period", MainCfg, check_period, "60", PQEV_CF_CLAMP, 0.1, MAXP,
			  .help = "seconds between database discovery scans"),
	PQEV_CONF_SECONDS("ticker_period", MainCfg, ticker_period, "1", PQEV_CF_CLAMP, 0.01, 3600,
			  .help = "seconds between pgq.ticker() calls per database"),
	PQEV_CONF_SECONDS("maint_period", MainCfg, maint_period, "120", PQEV_CF_CLAMP, 0.1, MAXP,
			  .help = "seconds between maintenance rounds per database"),
	PQEV_CONF_SECONDS("retry_period", MainCfg, retry_period, "30", PQEV_CF_CLAMP, 0.1, MAXP,
			  .help = "seconds between retry-queue flushes per database"),
	PQEV_CONF_SECONDS("stats_period", MainCfg, stats_period, "30", PQEV_CF_CLAMP, 0, MAXP,
			  .help = "seconds between stats lines; 0: none"),
	PQEV_CONF_SECONDS("connection_lifetime", MainCfg, connection_lifetime, "3600",
			  PQEV_CF_CLAMP, 0, MAXP,
			  .help = "recycle connections older than this; 0: never"),
	PQEV_CONF_PATH("logfile", MainCfg, logfile, "", 0, .help = "log file to append to"),
	PQEV_CONF_PATH("pidfile", MainCfg, pidfile, "", PQEV_CF_NO_RELOAD, .help = "pid file"),
	PQEV_CONF_STRING(
		"syslog", MainCfg, syslog_text, "auto", 0, .validate = check_syslog,
		.help = "0: off, other numbers: on; auto: on unless stderr is the journal"),
	PQEV_CONF_STRING("syslog_ident", MainCfg, syslog_ident, "pgqd", 0),
	PQEV_CONF_ENUM("syslog_facility", MainCfg, syslog_facility, "daemon", 0,
		       pqev_conf_syslog_facilities),
	/* pgqd-ev */
	PQEV_CONF_INT("max_connecting", MainCfg, max_connecting, "20", 0, 0, 100000,
		      .help = "connection attempts in flight at once; 0: no cap"),
	PQEV_CONF_INT("max_maint_connections", MainCfg, max_maint_connections, "4", 0, 1, 100000,
		      .help = "maintenance connections open at once per cluster"),
	PQEV_CONF_SECONDS("connect_timeout", MainCfg, connect_timeout, "10", 0, 0.1, 3600,
			  .help = "deadline of one connection attempt"),
	PQEV_CONF_SECONDS("statement_timeout", MainCfg, statement_timeout, "0", 0, 0, MAXP,
			  .help = "server statement_timeout for our sessions; 0: server default"),
	PQEV_CONF_SECONDS("query_timeout", MainCfg, query_timeout, "30", 0, 0, MAXP,
			  .help = "client deadline for a tick, check or retry query; 0: none"),
	PQEV_CONF_SECONDS("backoff_base", MainCfg, backoff_base, "0.25", 0, 0.01, 3600,
			  .help = "first reconnect delay (upper bound)"),
	PQEV_CONF_SECONDS("backoff_cap", MainCfg, backoff_cap, "60", 0, 0.01, 86400,
			  .help = "largest reconnect delay"),
	PQEV_CONF_SECONDS("pgq_recheck_max", MainCfg, pgq_recheck_max, "0", 0, 0, MAXP,
			  .help = "above check_period: re-checks of databases without pgq"
				  " double up to this; else every check_period"),
	PQEV_CONF_BOOL("low_latency", MainCfg, low_latency, "1", 0,
		       .help = "LISTEN for producer wake-ups and tick at once"),
	PQEV_CONF_SECONDS("wake_min_interval", MainCfg, wake_min_interval, "0.005", 0, 0, 60,
			  .help = "least time between two woken ticks of one database"),
	PQEV_CONF_SECONDS("wake_max_interval", MainCfg, wake_max_interval, "0.05", 0, 0, 60,
			  .help = "longest gap between watch ticks while producers are busy"),
	PQEV_CONF_INT("wake_busy_rate", MainCfg, wake_busy_rate, "2000", 0, 0, 100000000,
		      .help = "events/s of a database's low_latency queues above which the"
			      " watch gap grows in proportion; 0: never"),
	PQEV_CONF_STRING("application_name", MainCfg, application_name, "pgqd-ev", 0),
	PQEV_CONF_STRING("metrics_listen", MainCfg, metrics_listen, "", 0, .validate = check_listen,
			 .help = "ADDRESS:PORT of the HTTP endpoint"),
	PQEV_CONF_SECONDS("unreachable_timeout", MainCfg, unreachable_timeout, "0", 0, 0, MAXP,
			  .help = "a database failing this long is unhealthy; 0: never"),
	PQEV_CONF_SECONDS("tick_stale_timeout", MainCfg, tick_stale_timeout, "60", 0, 0, MAXP,
			  .help = "a database not ticked this long is unhealthy; 0: never"),
	PQEV_CONF_SECONDS("startup_grace", MainCfg, startup_grace, "30", 0, 0, MAXP,
			  .help = "time after start before a never-ticked database is unhealthy"),
	PQEV_CONF_ENUM("unreachable_action", MainCfg, unreachable_action, "report", 0,
		       unreachable_map, .help = "report or exit"),
	PQEV_CONF_SECONDS("stop_timeout", MainCfg, stop_timeout, "10", 0, 0, 3600,
			  .help = "how long a stop waits for work in flight"),
	PQEV_CONF_ENUM("log_format", MainCfg, log_format, "text", 0, log_format_map),
	PQEV_CONF_END,
};

static const PqevConfKey cluster_keys[] = {
	PQEV_CONF_STRING("base_connstr", ClusterCfg, base_connstr, NULL,
			 PQEV_CF_REQUIRED | PQEV_CF_SECRET),
	PQEV_CONF_STRING("initial_database", ClusterCfg, initial_database, "template1", 0),
	PQEV_CONF_LIST("database_list", ClusterCfg, database_list, "", 0,
		       .validate = check_dbnames),
	PQEV_CONF_SECONDS("check_period", ClusterCfg, check_period, NULL, PQEV_CF_CLAMP, 0.1, MAXP),
	PQEV_CONF_SECONDS("ticker_period", ClusterCfg, ticker_period, NULL, PQEV_CF_CLAMP, 0.01,
			  3600),
	PQEV_CONF_SECONDS("maint_period", ClusterCfg, maint_period, NULL, PQEV_CF_CLAMP, 0.1, MAXP),
	PQEV_CONF_SECONDS("retry_period", ClusterCfg, retry_period, NULL, PQEV_CF_CLAMP, 0.1, MAXP),
	PQEV_CONF_SECONDS("connection_lifetime", ClusterCfg, connection_lifetime, NULL,
			  PQEV_CF_CLAMP, 0, MAXP),
	PQEV_CONF_INT("max_connecting", ClusterCfg, max_connecting, "0", 0, 0, 100000),
	PQEV_CONF_END,
};

static const PqevConfKey node_keys[] = {
	PQEV_CONF_STRING("queue", NodeCfg, queue, NULL, PQEV_CF_REQUIRED,
			 .help = "the cascade's queue name"),
	PQEV_CONF_STRING("db", NodeCfg, db, NULL, PQEV_CF_REQUIRED | PQEV_CF_SECRET,
			 .help = "libpq conninfo of the node's database"),
	PQEV_CONF_STRING("node_name", NodeCfg, node_name, "", 0,
			 .help = "the node's name in pgq_node; empty: the section name"),
	PQEV_CONF_STRING("worker", NodeCfg, worker, "", 0,
			 .help = "worker name; empty: node_info.worker_name"),
	PQEV_CONF_INT("fetch_size", NodeCfg, fetch_size, "1000", 0, 1, 1000000),
	PQEV_CONF_SECONDS("poll_period", NodeCfg, poll_period, "1", 0, 0.01, 3600,
			  .help = "look for a batch this often without tick notifications"),
	PQEV_CONF_SECONDS("wm_publish_period", NodeCfg, wm_period, "300", 0, 0.01, MAXP,
			  .help = "seconds between watermark publications"),
	PQEV_CONF_SECONDS("unhealthy_after", NodeCfg, unhealthy_after, "60", 0, 0, MAXP,
			  .help = "no progress this long: /health unhealthy; 0: never"),
	PQEV_CONF_END,
};

static void check_node(void *section, const char *name, PqevConfCheck *chk)
{
	if (!name || !*name)
		pqev_conf_check_error(chk, NULL, "a node section needs a name: [node NAME]");
	else if (strchr(name, '/') || strlen(name) > 63)
		pqev_conf_check_error(chk, NULL, "node name \"%s\": at most 63 bytes and no '/'",
				      name);
}

static void check_main(void *section, const char *name, PqevConfCheck *chk)
{
	MainCfg *m = section;

	m->syslog = parse_syslog(m->syslog_text);
	m->is_cluster = pqev_conf_check_key_set(chk, "base_connstr") ||
			pqev_conf_check_key_set(chk, "initial_database") ||
			pqev_conf_check_key_set(chk, "database_list");
	if (m->backoff_cap < m->backoff_base)
		pqev_conf_check_error(chk, "backoff_cap", "must be at least backoff_base");
	/* a wake_min_interval above the default bound raises it, unless it was set */
	if (m->wake_max_interval < m->wake_min_interval) {
		if (pqev_conf_check_key_set(chk, "wake_max_interval"))
			pqev_conf_check_error(chk, "wake_max_interval",
					      "must be at least wake_min_interval");
		m->wake_max_interval = m->wake_min_interval;
	}
}

static void check_cluster(void *section, const char *name, PqevConfCheck *chk)
{
	const ClusterCfg *c = section;

	if (!name || !*name)
		pqev_conf_check_error(chk, NULL, "a cluster section needs a name: [cluster NAME]");
	else if (strchr(name, '/') || strlen(name) > 40)
		pqev_conf_check_error(chk, NULL, "cluster name \"%s\": at most 40 bytes and no '/'",
				      name);
	if (c->base_connstr && strstr(c->base_connstr, "dbname"))
		pqev_conf_check_warning(chk, "base_connstr",
					"dbname here is overridden for every database");
}

static void check_all(void *cfgp, PqevConfCheck *chk)
{
	TickerConfig *cfg = cfgp;

	if (cfg->clusters.count == 0)
		cfg->main.is_cluster = true;
}

static const PqevConfSection sections[] = {
	{
		.name = "pgqd",
		.flags = PQEV_CS_REQUIRED,
		.offset = offsetof(TickerConfig, main),
		.keys = main_keys,
		.check = check_main,
	},
	{
		.name = "cluster",
		.flags = PQEV_CS_REPEATED,
		.offset = offsetof(TickerConfig, clusters),
		.elem_size = sizeof(ClusterCfg),
		.name_offset = offsetof(ClusterCfg, name),
		.keys = cluster_keys,
		.check = check_cluster,
	},
	{
		.name = "node",
		.flags = PQEV_CS_REPEATED,
		.offset = offsetof(TickerConfig, nodes),
		.elem_size = sizeof(NodeCfg),
		.name_offset = offsetof(NodeCfg, name),
		.keys = node_keys,
		.check = check_node,
	},
	{.name = NULL},
};

const PqevConfSchema ticker_config_schema = {
	.size = sizeof(TickerConfig),
	.sections = sections,
	.check = check_all,
};

bool ticker_config_main_is_cluster(const TickerConfig *cfg)
{
	return cfg->main.is_cluster || cfg->clusters.count == 0;
}

static usec_t pick(usec_t v, usec_t def)
{
	return v == PQEV_CONF_UNSET_USEC ? def : v;
}

size_t ticker_config_clusters(const TickerConfig *cfg, ClusterView *views, size_t max)
{
	const MainCfg *m = &cfg->main;
	size_t n = 0;

	if (ticker_config_main_is_cluster(cfg)) {
		if (n < max) {
			views[n] = (ClusterView){
				.name = "",
				.base_connstr = m->base_connstr ? m->base_connstr : "",
				.initial_database = m->initial_database,
				.database_list = &m->database_list,
				.check_period = m->check_period,
				.ticker_period = m->ticker_period,
				.maint_period = m->maint_period,
				.retry_period = m->retry_period,
				.connection_lifetime = m->connection_lifetime,
				.max_connecting = 0,
			};
		}
		n++;
	}
	for (size_t i = 0; i < cfg->clusters.count; i++, n++) {
		const ClusterCfg *c = PQEV_CONF_ARRAY_AT(cfg->clusters, ClusterCfg, i);

		if (n >= max)
			continue;
		views[n] = (ClusterView){
			.name = c->name,
			.base_connstr = c->base_connstr,
			.initial_database = c->initial_database,
			.database_list = &c->database_list,
			.check_period = pick(c->check_period, m->check_period),
			.ticker_period = pick(c->ticker_period, m->ticker_period),
			.maint_period = pick(c->maint_period, m->maint_period),
			.retry_period = pick(c->retry_period, m->retry_period),
			.connection_lifetime = pick(c->connection_lifetime, m->connection_lifetime),
			.max_connecting = c->max_connecting,
		};
	}
	return n;
}

TickerConfig *ticker_config_free(TickerConfig *cfg)
{
	return pqev_conf_free(&ticker_config_schema, cfg);
}
