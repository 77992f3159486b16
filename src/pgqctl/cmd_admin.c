/*
 * install, upgrade, uninstall, version.
 *
 * A plain install sends each script as one simple-protocol query: the script
 * has no transaction control, so it runs as one implicit transaction and a
 * failure leaves the database as it was.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pgqctl.h"
#include "pgqev_config.h"

#ifndef PGQCTL_SQLDIR
#define PGQCTL_SQLDIR "/usr/local/share/pgqd-ev/sql"
#endif

/* What a database has: plain schemas or extensions, and versions. */
typedef struct Installed {
	char pgq_ext[64]; /* extension owning pgq ("pgq", "pgq_ev") or "" */
	char pgq_ver[64]; /* pgq.version() or "" */
	char ev_ver[64];  /* pgq.pgqd_ev_version() or "" */
	char coop_ext[64], coop_ver[64];
	char ext_ext[64], ext_ver[64];
	char ext_extver[64]; /* extension version of pgq's extension */
	char server[64];
} Installed;

static void copy(char *dst, const char *src)
{
	snprintf(dst, 64, "%s", src ? src : "");
}

static bool scalar(CtlDb *db, const char *sql, char *dst)
{
	PGresult *r = ctl_db_exec(db, sql, 0, NULL);

	if (!r)
		return false;
	copy(dst, ctl_val(r, 0, 0));
	PQclear(r);
	return true;
}

static bool inspect(CtlDb *db, Installed *in)
{
	PGresult *r = ctl_db_exec(
		db,
		"select current_setting('server_version'),"
		" (select e.extname from pg_depend d join pg_extension e on e.oid = d.refobjid"
		"   where d.classid = 'pg_proc'::regclass and d.deptype = 'e'"
		"   and d.objid = to_regproc('pgq.version')),"
		" (select e.extversion from pg_depend d join pg_extension e on e.oid = d.refobjid"
		"   where d.classid = 'pg_proc'::regclass and d.deptype = 'e'"
		"   and d.objid = to_regproc('pgq.version')),"
		" (select e.extname from pg_depend d join pg_extension e on e.oid = d.refobjid"
		"   where d.classid = 'pg_proc'::regclass and d.deptype = 'e'"
		"   and d.objid = to_regproc('pgq_coop.version')),"
		" (select e.extname from pg_depend d join pg_extension e on e.oid = d.refobjid"
		"   where d.classid = 'pg_proc'::regclass and d.deptype = 'e'"
		"   and d.objid = to_regproc('pgq_ext.version')),"
		" to_regproc('pgq.version') is not null,"
		" to_regproc('pgq.pgqd_ev_version') is not null,"
		" to_regproc('pgq_coop.version') is not null,"
		" to_regproc('pgq_ext.version') is not null",
		0, NULL);
	bool ok = true;

	memset(in, 0, sizeof(*in));
	if (!r)
		return false;
	copy(in->server, ctl_val(r, 0, 0));
	copy(in->pgq_ext, ctl_val(r, 0, 1));
	copy(in->ext_extver, ctl_val(r, 0, 2));
	copy(in->coop_ext, ctl_val(r, 0, 3));
	copy(in->ext_ext, ctl_val(r, 0, 4));
	if (ctl_val(r, 0, 5)[0] == 't')
		ok = ok && scalar(db, "select pgq.version()", in->pgq_ver);
	if (ctl_val(r, 0, 6)[0] == 't')
		ok = ok && scalar(db, "select pgq.pgqd_ev_version()", in->ev_ver);
	if (ctl_val(r, 0, 7)[0] == 't')
		ok = ok && scalar(db, "select pgq_coop.version()", in->coop_ver);
	if (ctl_val(r, 0, 8)[0] == 't')
		ok = ok && scalar(db, "select pgq_ext.version()", in->ext_ver);
	PQclear(r);
	return ok;
}

static const char *form(const char *ext)
{
	return *ext ? "extension" : "plain";
}

static void print_component(const char *name, const char *ver, const char *ext)
{
	if (!*ver)
		printf("%-9s not installed\n", name);
	else if (*ext)
		printf("%-9s %s (extension %s)\n", name, ver, ext);
	else
		printf("%-9s %s (plain)\n", name, ver);
}

int ctl_open_single(CtlCtx *ctx, CtlDb **out)
{
	CtlTarget t;
	int rc = ctl_single_target(ctx, &t);

	if (rc)
		return rc;
	*out = ctl_db_open(ctx, &t);
	free(t.label);
	free(t.conninfo);
	free(t.cluster);
	if (!ctl_db_connect(*out)) {
		rc = ctl_db_fail(*out, "connect");
		*out = ctl_db_close(*out);
		return rc;
	}
	return 0;
}

int cmd_version(CtlCtx *ctx, int argc, char **argv)
{
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	Installed in;

	if ((rc = ctl_parse_opts(ctx, argc, argv, NULL, pos, &npos)))
		return rc;
	if (npos)
		return ctl_usage(argv[0], "takes no arguments");
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!inspect(db, &in)) {
		rc = ctl_db_fail(db, "version");
		ctl_db_close(db);
		return rc;
	}
	if (ctx->json) {
		CtlJson j;
		ctl_json_init(&j, stdout);
		ctl_json_obj_begin(&j, NULL);
		ctl_json_str(&j, "database", ctl_db_label(db));
		ctl_json_str(&j, "pgqctl", PGQEV_VERSION);
		ctl_json_str(&j, "server", in.server);
		ctl_json_str(&j, "pgq", *in.pgq_ver ? in.pgq_ver : NULL);
		ctl_json_str(&j, "pgq_form", *in.pgq_ver ? form(in.pgq_ext) : NULL);
		ctl_json_str(&j, "pgq_extension", *in.pgq_ext ? in.pgq_ext : NULL);
		ctl_json_str(&j, "pgqd_ev", *in.ev_ver ? in.ev_ver : NULL);
		ctl_json_str(&j, "pgq_coop", *in.coop_ver ? in.coop_ver : NULL);
		ctl_json_str(&j, "pgq_coop_form", *in.coop_ver ? form(in.coop_ext) : NULL);
		ctl_json_str(&j, "pgq_ext", *in.ext_ver ? in.ext_ver : NULL);
		ctl_json_str(&j, "pgq_ext_form", *in.ext_ver ? form(in.ext_ext) : NULL);
		ctl_json_obj_end(&j);
		ctl_json_end(&j);
	} else {
		printf("pgqctl    %s\n", PGQEV_VERSION);
		printf("server    PostgreSQL %s\n", in.server);
		print_component("pgq", in.pgq_ver, in.pgq_ext);
		if (*in.ev_ver)
			printf("pgqd-ev   %s\n", in.ev_ver);
		print_component("pgq_coop", in.coop_ver, in.coop_ext);
		print_component("pgq_ext", in.ext_ver, in.ext_ext);
	}
	ctl_db_close(db);
	return CTL_EXIT_OK;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		fclose(f);
		errno = EIO;
		return NULL;
	}
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static const char *sqldir(CtlCtx *ctx)
{
	return ctx->sqldir ? ctx->sqldir : PGQCTL_SQLDIR;
}

/* Run one plain script as one transaction; prints and returns false on failure. */
static bool run_script(CtlCtx *ctx, CtlDb *db, const char *file, const char *what)
{
	char path[4096];
	char *sql;
	PGresult *r;

	snprintf(path, sizeof(path), "%s/%s", sqldir(ctx), file);
	sql = read_file(path);
	if (!sql) {
		ctl_err("%s: %s (set --sqldir or PGQCTL_SQLDIR to the directory with "
			"pgq_ev.sql)",
			path, strerror(errno));
		return false;
	}
	r = ctl_db_exec_simple(db, sql);
	free(sql);
	if (!r) {
		ctl_db_fail(db, what);
		return false;
	}
	PQclear(r);
	return true;
}

static bool script_exists(CtlCtx *ctx, const char *file)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", sqldir(ctx), file);
	f = fopen(path, "r");
	if (f)
		fclose(f);
	return f != NULL;
}

static bool ext_available(CtlDb *db, const char *name)
{
	const char *p[1] = {name};
	PGresult *r =
		ctl_db_exec(db, "select 1 from pg_available_extensions where name = $1", 1, p);
	bool ok = r && PQntuples(r) > 0;

	PQclear(r);
	return ok;
}

static void report_installed(CtlDb *db, const char *verb)
{
	Installed in;

	if (!inspect(db, &in))
		return;
	printf("%s: %s pgq %s%s%s (%s%s%s)", ctl_db_label(db), verb, in.pgq_ver,
	       *in.ev_ver ? ", pgqd-ev " : "", in.ev_ver, form(in.pgq_ext), *in.pgq_ext ? " " : "",
	       in.pgq_ext);
	if (*in.coop_ver)
		printf(", pgq_coop %s", in.coop_ver);
	if (*in.ext_ver)
		printf(", pgq_ext %s", in.ext_ver);
	printf("\n");
}

int cmd_install(CtlCtx *ctx, int argc, char **argv)
{
	bool extension = false, no_coop = false, no_ext = false;
	const CtlOpt opts[] = {
		{"extension", false, &extension},
		{"no-coop", false, &no_coop},
		{"no-ext", false, &no_ext},
		{NULL},
	};
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	Installed in;

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos)
		return ctl_usage(argv[0], "takes no arguments");
	if (!extension && !script_exists(ctx, "pgq_ev.sql")) {
		ctl_err("%s/pgq_ev.sql not found (set --sqldir or PGQCTL_SQLDIR)", sqldir(ctx));
		return CTL_EXIT_ERROR;
	}
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!inspect(db, &in)) {
		rc = ctl_db_fail(db, "install");
		ctl_db_close(db);
		return rc;
	}
	if (*in.pgq_ver) {
		ctl_err("%s: install: PgQ %s is already installed (%s%s%s); use pgqctl upgrade",
			ctl_db_label(db), in.pgq_ver, form(in.pgq_ext), *in.pgq_ext ? " " : "",
			in.pgq_ext);
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	if (extension) {
		const char *exts[3] = {"pgq_ev", no_coop ? NULL : "pgq_coop_ev",
				       no_ext ? NULL : "pgq_ext_ev"};
		PGresult *r;

		if (!ext_available(db, "pgq_ev")) {
			ctl_err("%s: install --extension: the server has no extension pgq_ev "
				"(meson install puts pgq_ev.control into its extension directory)",
				ctl_db_label(db));
			ctl_db_close(db);
			return CTL_EXIT_ERROR;
		}
		/* one transaction: all or nothing */
		r = ctl_db_exec(db, "begin", 0, NULL);
		PQclear(r);
		for (int i = 0; i < 3 && r; i++) {
			char sql[128];

			if (!exts[i] || (i > 0 && !ext_available(db, exts[i])))
				continue;
			snprintf(sql, sizeof(sql), "create extension %s", exts[i]);
			r = ctl_db_exec(db, sql, 0, NULL);
			PQclear(r);
		}
		if (!r) {
			rc = ctl_db_fail(db, "install --extension");
			ctl_db_close(db);
			return rc;
		}
		r = ctl_db_exec(db, "commit", 0, NULL);
		if (!r) {
			rc = ctl_db_fail(db, "install --extension");
			ctl_db_close(db);
			return rc;
		}
		PQclear(r);
	} else {
		if (!run_script(ctx, db, "pgq_ev.sql", "install pgq") ||
		    (!no_coop && script_exists(ctx, "pgq_coop_ev.sql") &&
		     !run_script(ctx, db, "pgq_coop_ev.sql", "install pgq_coop")) ||
		    (!no_ext && script_exists(ctx, "pgq_ext_ev.sql") &&
		     !run_script(ctx, db, "pgq_ext_ev.sql", "install pgq_ext"))) {
			ctl_db_close(db);
			return CTL_EXIT_ERROR;
		}
	}
	report_installed(db, "installed");
	ctl_db_close(db);
	return CTL_EXIT_OK;
}

int cmd_upgrade(CtlCtx *ctx, int argc, char **argv)
{
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	Installed in;
	char before[64];

	if ((rc = ctl_parse_opts(ctx, argc, argv, NULL, pos, &npos)))
		return rc;
	if (npos)
		return ctl_usage(argv[0], "takes no arguments");
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!inspect(db, &in)) {
		rc = ctl_db_fail(db, "upgrade");
		ctl_db_close(db);
		return rc;
	}
	if (!*in.pgq_ver) {
		ctl_err("%s: upgrade: no PgQ in this database; see pgqctl install",
			ctl_db_label(db));
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	snprintf(before, sizeof(before), "%s", *in.ev_ver ? in.ev_ver : in.ext_extver);
	if (*in.pgq_ext) {
		char sql[256];
		PGresult *r;

		snprintf(sql, sizeof(sql), "alter extension %s update", in.pgq_ext);
		r = ctl_db_exec(db, sql, 0, NULL);
		if (!r) {
			rc = ctl_db_fail(db, "upgrade");
			ctl_db_close(db);
			return rc;
		}
		PQclear(r);
	} else {
		if (!run_script(ctx, db, "pgq_ev.sql", "upgrade pgq") ||
		    (*in.coop_ver && !*in.coop_ext && script_exists(ctx, "pgq_coop_ev.sql") &&
		     !run_script(ctx, db, "pgq_coop_ev.sql", "upgrade pgq_coop")) ||
		    (*in.ext_ver && !*in.ext_ext && script_exists(ctx, "pgq_ext_ev.sql") &&
		     !run_script(ctx, db, "pgq_ext_ev.sql", "upgrade pgq_ext"))) {
			ctl_db_close(db);
			return CTL_EXIT_ERROR;
		}
	}
	if (*before)
		printf("%s: upgrade from %s\n", ctl_db_label(db), before);
	report_installed(db, "upgraded to");
	ctl_db_close(db);
	return CTL_EXIT_OK;
}

int cmd_uninstall(CtlCtx *ctx, int argc, char **argv)
{
	bool yes = false;
	const CtlOpt opts[] = {{"yes-drop-all-queues", false, &yes}, {NULL}};
	char *pos[CTL_MAX_ARGS];
	int npos, rc;
	CtlDb *db;
	Installed in;
	PGresult *r;
	char nq[64] = "0";
	static const char *const schemas[] = {"pgq_ext", "pgq_coop", "pgq"};

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos)
		return ctl_usage(argv[0], "takes no arguments");
	if (!yes)
		return ctl_usage(argv[0], "drops every queue and event: confirm with "
					  "--yes-drop-all-queues");
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	if (!inspect(db, &in)) {
		rc = ctl_db_fail(db, "uninstall");
		ctl_db_close(db);
		return rc;
	}
	if (!*in.pgq_ver) {
		ctl_err("%s: uninstall: no PgQ in this database", ctl_db_label(db));
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	scalar(db, "select count(*) from pgq.get_queue_info()", nq);
	r = ctl_db_exec(db, "begin", 0, NULL);
	PQclear(r);
	for (int i = 0; i < 3 && r; i++) {
		const char *ext = i == 0 ? in.ext_ext : i == 1 ? in.coop_ext : in.pgq_ext;
		char sql[256];

		if (*ext)
			snprintf(sql, sizeof(sql), "drop extension if exists %s cascade", ext);
		else
			snprintf(sql, sizeof(sql), "drop schema if exists %s cascade", schemas[i]);
		r = ctl_db_exec(db, sql, 0, NULL);
		PQclear(r);
	}
	if (r)
		r = ctl_db_exec(db, "commit", 0, NULL);
	if (!r) {
		rc = ctl_db_fail(db, "uninstall");
		ctl_db_close(db);
		return rc;
	}
	PQclear(r);
	printf("%s: uninstalled pgq %s (%s)%s%s, dropped %s queues; the roles pgq_reader, "
	       "pgq_writer, pgq_admin are kept (they belong to the whole server)\n",
	       ctl_db_label(db), in.pgq_ver, form(in.pgq_ext), *in.coop_ver ? ", pgq_coop" : "",
	       *in.ext_ver ? ", pgq_ext" : "", nq);
	ctl_db_close(db);
	return CTL_EXIT_OK;
}
