/*
 * Databases for pgqctl: which ones (-d, PGQCTL_DB, or the daemon's ini), and
 * synchronous statements over the core's asynchronous connection: a command
 * sends a request and runs the one loop until its completion arrives. A failed
 * connect is final for a command (no retry with backoff: an operator is waiting),
 * so the connection is closed at the first failure and its message kept.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_config.h>
#include <pgqd-ev/pqev_conn.h>
#include <pgqd-ev/pqev_connlimit.h>

#include "pgqctl.h"
#include "ticker_config.h"

struct CtlDb {
	CtlCtx *ctx;
	PqevConn *conn;
	char *label;
	char *conninfo; /* for ctl_db_connect_blocking */
	bool connected, failed;
	bool *notified; /* set on any notification */
	char err[1024];
	char sqlstate[6];
};

/* ---- targets ---- */

/* conninfo value quoting: single quotes, backslash-escaped. */
static char *with_dbname(const char *base, const char *db)
{
	size_t n = strlen(base) + 2 * strlen(db) + 16;
	char *s = malloc(n), *p;

	if (!s)
		abort();
	p = s + sprintf(s, "%s%sdbname='", base, *base ? " " : "");
	for (const char *q = db; *q; q++) {
		if (*q == '\'' || *q == '\\')
			*p++ = '\\';
		*p++ = *q;
	}
	*p++ = '\'';
	*p = '\0';
	return s;
}

static char *label_of(const char *cluster, const char *db)
{
	char *s;

	if (cluster && *cluster) {
		if (asprintf(&s, "%s/%s", cluster, db) < 0)
			abort();
	} else {
		s = strdup(db);
	}
	return s;
}

static void add_target(CtlTarget **v, size_t *n, size_t *cap, const char *cluster, const char *base,
		       const char *db)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 16;
		*v = realloc(*v, *cap * sizeof(CtlTarget));
		if (!*v)
			abort();
	}
	(*v)[*n] = (CtlTarget){
		.label = label_of(cluster, db),
		.conninfo = with_dbname(base, db),
		.cluster = strdup(cluster ? cluster : ""),
	};
	(*n)++;
}

void ctl_targets_free(CtlTarget *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(t[i].label);
		free(t[i].conninfo);
		free(t[i].cluster);
	}
	free(t);
}

static void conf_report(const PqevConfDiag *d, void *arg)
{
	if (d->severity == PQEV_CONF_ERROR)
		ctl_err("%s", d->message);
}

/* The database list of a cluster without database_list: ask its initial database. */
static int discover(CtlCtx *ctx, const ClusterView *cv, CtlTarget **v, size_t *n, size_t *cap)
{
	CtlTarget t = {
		.label = label_of(cv->name, cv->initial_database),
		.conninfo = with_dbname(cv->base_connstr, cv->initial_database),
		.cluster = (char *)cv->name,
	};
	CtlDb *db = ctl_db_open(ctx, &t);
	PGresult *r = ctl_db_exec(db,
				  "select datname from pg_catalog.pg_database"
				  " where not datistemplate and datallowconn order by 1",
				  0, NULL);
	int rc = 0;

	if (!r) {
		rc = ctl_db_fail(db, "listing databases");
	} else {
		for (int i = 0; i < PQntuples(r); i++)
			add_target(v, n, cap, cv->name, cv->base_connstr, PQgetvalue(r, i, 0));
		PQclear(r);
	}
	ctl_db_close(db);
	free(t.label);
	free(t.conninfo);
	return rc;
}

static TickerConfig *loaded_ini;

static void free_ini(void)
{
	loaded_ini = ticker_config_free(loaded_ini);
}

int ctl_load_ini(CtlCtx *ctx)
{
	void *cfgp = NULL;

	if (!loaded_ini) {
		int rc = pqev_conf_load_file(&ticker_config_schema, ctx->ini, NULL, &cfgp,
					     conf_report, NULL);
		if (rc < 0)
			return CTL_EXIT_ERROR; /* the engine reported why */
		loaded_ini = cfgp;
		atexit(free_ini);
	}
	if (loaded_ini->main.metrics_listen && *loaded_ini->main.metrics_listen)
		ctx->ticker_listen = loaded_ini->main.metrics_listen;
	return 0;
}

int ctl_targets(CtlCtx *ctx, CtlTarget **out, size_t *n)
{
	CtlTarget *v = NULL;
	size_t cap = 0;
	ClusterView views[256];
	size_t nv;
	bool found_cluster = false;
	int rc;

	*out = NULL;
	*n = 0;
	if (!ctx->ini) {
		const char *cs = ctx->connstr;
		char *err = NULL;
		PQconninfoOption *o;
		const char *db = NULL;

		if (ctx->all || ctx->cluster)
			return ctl_usage(NULL, "--all and --cluster need -c INI");
		o = PQconninfoParse(cs, &err);
		if (!o) {
			/* never echo the string: it may hold a password */
			ctl_err("bad connection string (-d or PGQCTL_DB)%s", strstr(cs, "password")
										     ? ""
									     : err ? ": "
										   : "");
			if (err && !strstr(cs, "password"))
				fprintf(stderr, "  %s", err);
			PQfreemem(err);
			return CTL_EXIT_USAGE;
		}
		for (PQconninfoOption *p = o; p->keyword; p++)
			if (strcmp(p->keyword, "dbname") == 0 && p->val && *p->val &&
			    !strchr(p->val, '='))
				db = p->val;
		if (!db)
			db = getenv("PGDATABASE");
		if (!db)
			db = getenv("PGUSER");
		if (!db)
			db = getenv("USER");
		v = calloc(1, sizeof(CtlTarget));
		v->label = strdup(db ? db : "postgres");
		v->conninfo = strdup(cs);
		PQconninfoFree(o);
		*out = v;
		*n = 1;
		return 0;
	}
	if (!ctx->all && !ctx->cluster && !ctx->db_name)
		return ctl_usage(NULL, "-c INI needs --db NAME, --cluster NAME or --all");
	if ((rc = ctl_load_ini(ctx)))
		return rc;
	nv = ticker_config_clusters(loaded_ini, views, 256);
	if (nv > 256)
		nv = 256;
	for (size_t i = 0; i < nv; i++) {
		const ClusterView *cv = &views[i];

		if (ctx->cluster && strcmp(ctx->cluster, cv->name) != 0)
			continue;
		found_cluster = true;
		if (ctx->db_name) {
			bool listed = cv->database_list->count == 0;

			for (size_t k = 0; k < cv->database_list->count; k++)
				if (strcmp(cv->database_list->items[k], ctx->db_name) == 0)
					listed = true;
			if (listed) {
				add_target(&v, n, &cap, cv->name, cv->base_connstr, ctx->db_name);
				break;
			}
			continue;
		}
		if (cv->database_list->count > 0) {
			for (size_t k = 0; k < cv->database_list->count; k++)
				add_target(&v, n, &cap, cv->name, cv->base_connstr,
					   cv->database_list->items[k]);
		} else {
			rc = discover(ctx, cv, &v, n, &cap);
			/* an unreachable cluster is reported (its initial database, marked
			   unreachable by status); the others are still shown */
			if (rc != 0 && ctx->all)
				add_target(&v, n, &cap, cv->name, cv->base_connstr,
					   cv->initial_database);
			else if (rc != 0) {
				ctl_targets_free(v, *n);
				*n = 0;
				return rc;
			}
		}
	}
	if (ctx->cluster && !found_cluster) {
		ctl_err("%s: no cluster \"%s\" (the [pgqd] section is cluster \"\")", ctx->ini,
			ctx->cluster);
		ctl_targets_free(v, *n);
		*n = 0;
		return CTL_EXIT_ERROR;
	}
	if (ctx->db_name && *n == 0) {
		ctl_err("%s: database \"%s\" is in no cluster's database_list", ctx->ini,
			ctx->db_name);
		return CTL_EXIT_ERROR;
	}
	*out = v;
	return 0;
}

int ctl_single_target(CtlCtx *ctx, CtlTarget *out)
{
	CtlTarget *v;
	size_t n;
	int rc;

	if (ctx->all)
		return ctl_usage(NULL, "this command works on one database: use --db NAME");
	rc = ctl_targets(ctx, &v, &n);
	if (rc)
		return rc;
	if (n != 1) {
		ctl_err("%zu databases match; name one with --db NAME", n);
		ctl_targets_free(v, n);
		return CTL_EXIT_USAGE;
	}
	*out = v[0];
	free(v);
	return 0;
}

/* ---- connections ---- */

static void on_event(PqevConn *c, const PqevConnEvent *ev, void *arg)
{
	CtlDb *db = arg;

	switch (ev->type) {
	case PQEV_EV_CONNECTED:
		db->connected = true;
		break;
	case PQEV_EV_CONNECT_FAILED:
	case PQEV_EV_LOST:
		db->failed = true;
		db->connected = false;
		snprintf(db->err, sizeof(db->err), "%s", ev->message);
		pqev_conn_close(c);
		break;
	case PQEV_EV_RECYCLED:
		break;
	}
}

static void on_notice(PqevConn *c, const char *severity, const char *text, void *arg)
{
	CtlDb *db = arg;

	if (!db->ctx->quiet && strcmp(severity, "NOTICE") != 0)
		fprintf(stderr, "pgqctl: %s: %s: %s\n", db->label, severity, text);
}

static void on_notify(PqevConn *c, const char *channel, const char *payload, int be_pid, void *arg)
{
	CtlDb *db = arg;

	if (db->notified)
		*db->notified = true;
}

void ctl_db_on_notify(CtlDb *db, bool *flag)
{
	db->notified = flag;
}

CtlDb *ctl_db_open(CtlCtx *ctx, const CtlTarget *t)
{
	CtlDb *db = calloc(1, sizeof(*db));
	PqevConnConfig cfg;
	PqevConnCallbacks cb = {
		.on_event = on_event, .on_notify = on_notify, .on_notice = on_notice, .arg = db};

	if (!db)
		abort();
	db->ctx = ctx;
	db->label = strdup(t->label);
	db->conninfo = strdup(t->conninfo);
	pqev_conn_config_init(&cfg);
	cfg.conninfo = t->conninfo;
	cfg.name = t->label;
	cfg.application_name = "pgqctl";
	cfg.connect_timeout = ctx->connect_timeout;
	cfg.idle_check = 0;
	db->conn = pqev_conn_new(ctx->lim, &cfg, &cb);
	if (!db->conn)
		abort();
	if (pqev_conn_start(db->conn) != 0) {
		db->failed = true;
		snprintf(db->err, sizeof(db->err), "%s: %s", t->label, pqev_conn_error(db->conn));
	}
	return db;
}

CtlDb *ctl_db_close(CtlDb *db)
{
	if (!db)
		return NULL;
	pqev_conn_free(db->conn);
	free(db->label);
	free(db->conninfo);
	free(db);
	return NULL;
}

const char *ctl_db_label(const CtlDb *db)
{
	return db->label;
}

const char *ctl_db_error(const CtlDb *db)
{
	return db->err;
}

const char *ctl_db_sqlstate(const CtlDb *db)
{
	return db->sqlstate;
}

PqevConn *ctl_db_conn(CtlDb *db)
{
	return db->conn;
}

bool ctl_loop_until(CtlCtx *ctx, const bool *flag)
{
	while (!*flag) {
		if (ctl_signalled)
			return false;
		event_base_loop(ctx->base, EVLOOP_ONCE);
	}
	return true;
}

bool ctl_finish_on_signal;

/* Ctrl-C stops a command at once (the server rolls back what was open), unless
   the command has cleanup of its own to do (tail). */
static void check_signal(void)
{
	if (ctl_signalled && !ctl_finish_on_signal) {
		ctl_err("interrupted");
		exit(128 + ctl_signalled);
	}
}

bool ctl_db_connect(CtlDb *db)
{
	while (!db->connected && !db->failed) {
		check_signal();
		event_base_loop(db->ctx->base, EVLOOP_ONCE);
	}
	return db->connected;
}

typedef struct Wait {
	CtlDb *db;
	bool done;
	PGresult *res;
} Wait;

static void on_done(PqevConn *c, const PqevReply *reply, void *arg)
{
	Wait *w = arg;
	CtlDb *db = w->db;

	w->done = true;
	if (reply->status == PQEV_OK) {
		if (reply->result)
			w->res = PQcopyResult(reply->result, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
		else
			w->res = PQmakeEmptyPGresult(NULL, PGRES_COMMAND_OK);
		return;
	}
	if (reply->status == PQEV_SQL_ERROR && reply->result) {
		const char *st = PQresultErrorField(reply->result, PG_DIAG_SQLSTATE);
		snprintf(db->sqlstate, sizeof(db->sqlstate), "%s", st ? st : "");
	}
	/* a connect failure already left the better message */
	if (!(db->failed && reply->status != PQEV_SQL_ERROR))
		snprintf(db->err, sizeof(db->err), "%s", reply->error ? reply->error : "failed");
}

static PGresult *exec_flags(CtlDb *db, const char *sql, int nparams, const char *const *params,
			    unsigned flags)
{
	Wait w = {.db = db};
	PqevQuery q = {
		.sql = sql,
		.nparams = nparams,
		.params = params,
		.flags = flags,
		.on_done = on_done,
		.arg = &w,
	};

	db->sqlstate[0] = '\0';
	if (db->failed)
		return NULL;
	if (pqev_conn_send(db->conn, &q, NULL) != 0) {
		snprintf(db->err, sizeof(db->err), "%s: %s", db->label, pqev_conn_error(db->conn));
		return NULL;
	}
	while (!w.done) {
		check_signal();
		event_base_loop(db->ctx->base, EVLOOP_ONCE);
	}
	return w.res;
}

PGresult *ctl_db_exec(CtlDb *db, const char *sql, int nparams, const char *const *params)
{
	return exec_flags(db, sql, nparams, params, 0);
}

PGresult *ctl_db_exec_simple(CtlDb *db, const char *sql)
{
	return exec_flags(db, sql, 0, NULL, PQEV_Q_SIMPLE);
}

const char *ctl_val(const PGresult *r, int row, int col)
{
	if (!r || row >= PQntuples(r) || col >= PQnfields(r) || PQgetisnull(r, row, col))
		return NULL;
	return PQgetvalue(r, row, col);
}

/* The message without the "label: " the core puts first. */
static const char *cause_of(const CtlDb *db)
{
	size_t n = strlen(db->label);

	if (strncmp(db->err, db->label, n) == 0 && strncmp(db->err + n, ": ", 2) == 0)
		return db->err + n + 2;
	return db->err;
}

/* Which role grants a pgq function, for the privilege hint. */
static const char *role_for(const char *what)
{
	static const struct {
		const char *prefix, *role;
	} map[] = {
		{"insert", "pgq_writer"},     {"register", "pgq_reader"},
		{"unregister", "pgq_reader"}, {"events", "pgq_reader"},
		{"tail", "pgq_reader"},       {"create", "pgq_admin"},
		{"drop", "pgq_admin"},        {"config", "pgq_admin"},
		{"retry", "pgq_admin"},       {"status", "pgq_reader"},
		{"consumers", "pgq_reader"},  {"install", "a role with CREATE on the database"},
		{"uninstall", "pgq_admin"},   {NULL, NULL},
	};

	for (int i = 0; map[i].prefix; i++)
		if (strncmp(what, map[i].prefix, strlen(map[i].prefix)) == 0)
			return map[i].role;
	return "pgq_admin";
}

int ctl_db_fail(CtlDb *db, const char *what)
{
	const char *st = db->sqlstate;

	if (strcmp(st, "42501") == 0)
		ctl_err("%s: %s: %s (grant the role %s to this user)", db->label, what,
			cause_of(db), role_for(what));
	else if (strcmp(st, "3F000") == 0 ||
		 (strcmp(st, "42883") == 0 && strstr(db->err, "pgq.")) ||
		 (strcmp(st, "42P01") == 0 && strstr(db->err, "pgq.")))
		ctl_err("%s: %s: no PgQ in this database (%s); see pgqctl install", db->label, what,
			cause_of(db));
	else
		ctl_err("%s: %s: %s", db->label, what, cause_of(db));
	return CTL_EXIT_ERROR;
}

PGconn *ctl_db_connect_blocking(CtlDb *db)
{
	char secs[32];
	const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
	const char *vals[] = {db->conninfo, secs, "pgqctl", NULL};
	PGconn *pc;

	snprintf(
		secs, sizeof(secs), "%llu",
		(unsigned long long)((db->ctx->connect_timeout + USEC_PER_SEC - 1) / USEC_PER_SEC));
	pc = PQconnectdbParams(keys, vals, 1);
	if (PQstatus(pc) != CONNECTION_OK) {
		/* libpq's message names host and port, never the password */
		snprintf(db->err, sizeof(db->err), "%s", pc ? PQerrorMessage(pc) : "out of memory");
		db->err[strcspn(db->err, "\n")] = '\0';
		db->sqlstate[0] = '\0';
		ctl_db_fail(db, "connect");
		PQfinish(pc);
		return NULL;
	}
	return pc;
}

int ctl_db_fail_result(CtlDb *db, PGconn *pc, const PGresult *r, const char *what)
{
	const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;

	snprintf(db->sqlstate, sizeof(db->sqlstate), "%s", st ? st : "");
	snprintf(db->err, sizeof(db->err), "%s", msg ? msg : PQerrorMessage(pc));
	db->err[strcspn(db->err, "\n")] = '\0';
	return ctl_db_fail(db, what);
}

int ctl_db_has_pgq(CtlDb *db)
{
	PGresult *r = ctl_db_exec(db, "select to_regproc('pgq.version') is not null", 0, NULL);
	int has;

	if (!r)
		return -1;
	has = ctl_val(r, 0, 0) && ctl_val(r, 0, 0)[0] == 't';
	PQclear(r);
	return has;
}

bool ctl_db_need_pgq(CtlDb *db)
{
	int has = ctl_db_has_pgq(db);

	if (has < 0) {
		ctl_db_fail(db, "connect");
		return false;
	}
	if (!has) {
		ctl_err("%s: no PgQ in this database (schema pgq with pgq.version() not found);"
			" see pgqctl install",
			db->label);
		return false;
	}
	return true;
}
