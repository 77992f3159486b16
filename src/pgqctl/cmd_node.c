/*
 * Cascade nodes (schema pgq_node): node create-root / create-branch /
 * create-leaf, node members, node info.
 *
 * Creation makes the pgq_node calls an admin tool makes, in the same order
 * (PGQ-NODE-SPEC 6.2), so the result is what python3-pgq's CascadeAdmin
 * leaves: the root and the provider learn the new member's location, the
 * provider registers the new node as subscriber at its global watermark, and
 * the new node gets every member's location and then its node row. Each step
 * looks first whether it is already done, so a re-run (after a failure half
 * way) finishes the job and says what it found. A merge leaf (--merge CQ)
 * passes its combined queue to create_node; a branch with --sync-watermark
 * gets the node attribute in the same transaction as its node row.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "pgqctl.h"

#define MAX_HOPS 32

typedef struct NodeArgs {
	const char *queue, *cascade, *provider, *worker;
	const char *merge; /* leaf: the combined queue */
	const char *sync;  /* branch: sync_watermark node list */
	char *attrs;       /* "sync_watermark=<urlencoded list>" */
	bool store_password;
	const char *type; /* root, branch, leaf */
	const char *name;
	const char *location; /* public connect string */
	char what[512];       /* "create branch node "b1" on queue "q"" */
} NodeArgs;

/* Is the node already here? 0 no node for the queue, 1 the same node, -1 error (printed). */
static int check_local(CtlDb *db, const NodeArgs *a)
{
	PGresult *r = ctl_node_info(db, a->queue, a->what);
	const char *type, *name;
	int rc = 0;

	if (!r)
		return -1;
	type = ctl_val(r, 0, 2);
	name = ctl_val(r, 0, 3);
	if (type && name) {
		if (strcmp(type, a->type) == 0 && strcmp(name, a->name) == 0) {
			rc = 1;
		} else {
			ctl_err("%s: %s: this database is already node %s of type %s for the "
				"queue",
				ctl_db_label(db), a->what, ctl_qq(name), type);
			rc = -1;
		}
	}
	PQclear(r);
	return rc;
}

/* The public connect string must reach the database of -d (same oid and name). */
static bool check_public(CtlCtx *ctx, CtlDb *local, const NodeArgs *a)
{
	static const char sql[] = "select d.oid, d.datname from pg_catalog.pg_database d"
				  " where d.datname = current_database()";
	CtlDb *pub;
	PGresult *r1, *r2;
	bool same;

	if (strcmp(a->location, ctx->connstr) == 0)
		return true;
	pub = ctl_node_open(ctx, "public", a->location);
	r2 = ctl_db_exec(pub, sql, 0, NULL);
	if (!r2) {
		ctl_db_fail(pub, a->what);
		ctl_db_close(pub);
		return false;
	}
	ctl_db_close(pub);
	r1 = ctl_db_exec(local, sql, 0, NULL);
	if (!r1) {
		PQclear(r2);
		ctl_db_fail(local, a->what);
		return false;
	}
	same = strcmp(PQgetvalue(r1, 0, 0), PQgetvalue(r2, 0, 0)) == 0 &&
	       strcmp(PQgetvalue(r1, 0, 1), PQgetvalue(r2, 0, 1)) == 0;
	if (!same)
		ctl_err("%s: %s: the public connect string reaches database \"%s\", not this one",
			ctl_db_label(local), a->what, PQgetvalue(r2, 0, 1));
	PQclear(r1);
	PQclear(r2);
	return same;
}

static int create_root(CtlCtx *ctx, CtlDb *db, const NodeArgs *a)
{
	const char *p[3] = {a->queue, a->name, a->location};
	const char *c[3] = {a->queue, a->name, a->worker};

	if (!ctl_node_exec_ok(db, a->what, "begin") ||
	    !ctl_node_call(db, a->what,
			   "select * from pgq_node.register_location($1, $2, $3, false)", 3, p,
			   NULL) ||
	    !ctl_node_call(
		    db, a->what,
		    "select * from pgq_node.create_node($1, 'root', $2, $3, null, null, null)", 3,
		    c, NULL) ||
	    !ctl_node_exec_ok(db, a->what, "commit"))
		return CTL_EXIT_ERROR;
	ctl_node_say(ctx, db, "root node %s created", ctl_qq(a->name));
	return CTL_EXIT_OK;
}

/* Find the root from the provider: follow provider_location upwards. Returns the
   root's connection (caller closes) or NULL (printed). */
static CtlDb *find_root(CtlCtx *ctx, CtlDb *prov, const NodeArgs *a)
{
	CtlDb *cur = prov;
	char *next = NULL;

	for (int hop = 0; hop < MAX_HOPS; hop++) {
		PGresult *r = ctl_node_info(cur, a->queue, a->what);
		const char *type;

		if (!r)
			break;
		type = ctl_val(r, 0, 2);
		if (!type) {
			ctl_err("%s: %s: no node for the queue there (%s)", ctl_db_label(cur),
				a->what, ctl_val(r, 0, 1) ? ctl_val(r, 0, 1) : "no node");
			PQclear(r);
			break;
		}
		if (strcmp(type, "root") == 0) {
			PQclear(r);
			free(next);
			return cur;
		}
		if (hop == 0 && strcmp(type, "leaf") == 0) {
			ctl_err("%s: %s: the provider is a leaf node, which cannot have "
				"subscribers",
				ctl_db_label(cur), a->what);
			PQclear(r);
			break;
		}
		free(next);
		next = ctl_val(r, 0, 7) ? strdup(ctl_val(r, 0, 7)) : NULL;
		PQclear(r);
		if (!next) {
			ctl_err("%s: %s: the node has no provider location", ctl_db_label(cur),
				a->what);
			break;
		}
		if (cur != prov)
			ctl_db_close(cur);
		cur = ctl_node_open(ctx, "upstream", next);
	}
	if (cur != prov)
		ctl_db_close(cur);
	free(next);
	return NULL;
}

/* register_location unless the member is there with this location and alive. */
static bool ensure_location(CtlCtx *ctx, CtlDb *db, const NodeArgs *a)
{
	const char *p[3] = {a->queue, a->name, a->location};
	PGresult *r = ctl_db_exec(db,
				  "select count(*) from pgq_node.get_queue_locations($1)"
				  " where node_name = $2 and node_location = $3 and not dead",
				  3, p);
	bool have;

	if (!r) {
		ctl_db_fail(db, a->what);
		return false;
	}
	have = atoi(PQgetvalue(r, 0, 0)) > 0;
	PQclear(r);
	if (have) {
		ctl_node_say(ctx, db, "location of %s already registered", ctl_qq(a->name));
		return true;
	}
	if (!ctl_node_call(db, a->what,
			   "select * from pgq_node.register_location($1, $2, $3, false)", 3, p,
			   NULL))
		return false;
	ctl_node_say(ctx, db, "location of %s registered", ctl_qq(a->name));
	return true;
}

/* The --sync-watermark list, each name shown as status shows it. */
static void print_sync_list(CtlDb *db, const char *list)
{
	char *names = strdup(list), *save = NULL;

	if (!names)
		abort();
	printf("%s: sync_watermark with ", ctl_db_label(db));
	for (char *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save))
		printf("%s%s", t == names ? "" : ",", ctl_q(t));
	putchar('\n');
	free(names);
}

static int create_sub(CtlCtx *ctx, CtlDb *db, const NodeArgs *a)
{
	CtlDb *prov = ctl_node_open(ctx, "provider", a->provider), *root = NULL;
	PGresult *pinfo = NULL, *members = NULL, *r = NULL;
	const char *pname;
	char gw[32] = "";
	int rc = CTL_EXIT_ERROR;

	if (!ctl_db_connect(prov)) {
		ctl_err("%s: %s: provider unreachable: %s", ctl_db_label(prov), a->what,
			ctl_db_error(prov));
		goto out;
	}
	root = find_root(ctx, prov, a);
	if (!root)
		goto out;
	pinfo = ctl_node_info(prov, a->queue, a->what);
	if (!pinfo)
		goto out;
	pname = ctl_val(pinfo, 0, 3);
	if (strcmp(pname, a->name) == 0) {
		ctl_err("%s: %s: the provider is node %s itself", ctl_db_label(prov), a->what,
			ctl_qq(pname));
		goto out;
	}
	{
		const char *p[1] = {a->queue};
		members = ctl_db_exec(root,
				      "select node_name, node_location, dead"
				      " from pgq_node.get_queue_locations($1) order by 1",
				      1, p);
		if (!members) {
			ctl_db_fail(root, a->what);
			goto out;
		}
	}
	/* a member of that name elsewhere is another node: never move it */
	for (int i = 0; i < PQntuples(members); i++)
		if (strcmp(PQgetvalue(members, i, 0), a->name) == 0 &&
		    strcmp(PQgetvalue(members, i, 1), a->location) != 0) {
			ctl_err("%s: %s: node %s is already a member of the cascade, at "
				"another location",
				ctl_db_label(root), a->what, ctl_qq(a->name));
			goto out;
		}
	/* 1. the root and the provider learn the member */
	if (!ensure_location(ctx, root, a))
		goto out;
	if (prov != root && !ensure_location(ctx, prov, a))
		goto out;
	/* 2. the provider registers the subscriber at its global watermark */
	{
		const char *p[3] = {a->queue, a->name, a->worker};
		r = ctl_db_exec(
			prov,
			"select s.worker_name, c.last_tick"
			" from pgq_node.get_subscriber_info($1) s"
			" left join pgq.get_consumer_info($1) c on c.consumer_name = s.worker_name"
			" where s.node_name = $2",
			2, p);
		if (!r) {
			ctl_db_fail(prov, a->what);
			goto out;
		}
		if (PQntuples(r) > 0) {
			if (strcmp(PQgetvalue(r, 0, 0), a->worker) != 0) {
				ctl_err("%s: %s: %s is already subscribed with worker %s",
					ctl_db_label(prov), a->what, ctl_qq(a->name),
					ctl_qq(PQgetvalue(r, 0, 0)));
				goto out;
			}
			snprintf(gw, sizeof(gw), "%s", PQgetvalue(r, 0, 1));
			ctl_node_say(ctx, prov, "%s already subscribed", ctl_qq(a->name));
		}
		PQclear(r);
		r = NULL;
		if (!*gw) {
			if (!ctl_node_call(
				    prov, a->what,
				    "select * from pgq_node.register_subscriber($1, $2, $3, null)",
				    3, p, &r))
				goto out;
			snprintf(gw, sizeof(gw), "%s", PQgetvalue(r, 0, 2));
			PQclear(r);
			r = NULL;
			ctl_node_say(ctx, prov, "%s subscribed", ctl_qq(a->name));
		}
	}
	/* 3. the new node: every member's location, its own, then the node row */
	if (!ctl_node_exec_ok(db, a->what, "begin"))
		goto out;
	for (int i = 0; i < PQntuples(members); i++) {
		const char *p[4] = {a->queue, PQgetvalue(members, i, 0), PQgetvalue(members, i, 1),
				    PQgetvalue(members, i, 2)};
		if (strcmp(p[1], a->name) == 0)
			continue;
		if (!ctl_node_call(
			    db, a->what,
			    "select * from pgq_node.register_location($1, $2, $3, $4::boolean)", 4,
			    p, NULL))
			goto out;
	}
	{
		const char *p[3] = {a->queue, a->name, a->location};
		const char *c[7] = {a->queue, a->type, a->name, a->worker, pname, gw, a->merge};
		const char *s[2] = {a->queue, a->attrs};
		if (!ctl_node_call(db, a->what,
				   "select * from pgq_node.register_location($1, $2, $3, false)", 3,
				   p, NULL) ||
		    !ctl_node_call(db, a->what,
				   "select * from pgq_node.create_node($1, $2, $3, $4, $5,"
				   " $6::bigint, $7)",
				   7, c, NULL) ||
		    (a->attrs &&
		     !ctl_node_call(db, a->what, "select * from pgq_node.set_node_attrs($1, $2)", 2,
				    s, NULL)) ||
		    !ctl_node_exec_ok(db, a->what, "commit"))
			goto out;
	}
	if (!ctx->quiet) {
		printf("%s: %s node %s created, provider %s, starting at tick %s\n",
		       ctl_db_label(db), a->type, ctl_qq(a->name), ctl_qq(pname), gw);
		if (a->merge)
			printf("%s: it feeds the combined queue %s\n", ctl_db_label(db),
			       ctl_qq(a->merge));
		if (a->sync)
			print_sync_list(db, a->sync);
	}
	rc = CTL_EXIT_OK;
out:
	PQclear(r);
	PQclear(members);
	PQclear(pinfo);
	if (root != prov)
		ctl_db_close(root);
	ctl_db_close(prov);
	return rc;
}

/* "sync_watermark=" and the list urlencoded as SkyTools' db_urlencode does
   (',' as %2c); every name checked. NULL after an error (printed). */
static char *sync_attrs(const char *list)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = strlen(list);
	char *names, *save = NULL, *out, *o;
	bool ok = true;

	if (n == 0 || list[0] == ',' || list[n - 1] == ',' || strstr(list, ",,")) {
		ctl_err("--sync-watermark %s: needs node names separated by commas, none empty",
			ctl_qq(list));
		return NULL;
	}
	names = strdup(list);
	ok = names != NULL;
	for (char *t = names ? strtok_r(names, ",", &save) : NULL; t && ok;
	     t = strtok_r(NULL, ",", &save))
		ok = ctl_check_node_name("--sync-watermark node", t);
	free(names);
	out = ok ? malloc(sizeof("sync_watermark=") + 3 * n) : NULL;
	if (!out)
		return NULL;
	o = out + sprintf(out, "sync_watermark=");
	for (const char *p = list; *p; p++) {
		unsigned char ch = (unsigned char)*p;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-') {
			*o++ = (char)ch;
		} else {
			*o++ = '%';
			*o++ = hex[ch >> 4];
			*o++ = hex[ch & 15];
		}
	}
	*o = '\0';
	return out;
}

/* The combined queue of a merge leaf is a queue of another cascade with a root
   or branch node in this database (what the merge leaf's worker writes into). */
static bool check_combined(CtlDb *db, const NodeArgs *a)
{
	PGresult *r = ctl_node_info(db, a->merge, a->what);
	const char *type;
	bool ok;

	if (!r)
		return false;
	type = ctl_val(r, 0, 2);
	ok = type && (strcmp(type, "root") == 0 || strcmp(type, "branch") == 0);
	if (!ok)
		ctl_err("%s: %s: the combined queue %s has %s%s in this database; create "
			"its root or branch node here first",
			ctl_db_label(db), a->what, ctl_qq(a->merge),
			type ? "a node of type " : "no node", type ? type : "");
	if (ok && strcmp(a->merge, a->queue) == 0) {
		ctl_err("%s: %s: the combined queue is the leaf's own queue", ctl_db_label(db),
			a->what);
		ok = false;
	}
	PQclear(r);
	return ok;
}

static int node_create(CtlCtx *ctx, int argc, char **argv, const char *type)
{
	NodeArgs a = {.type = type};
	const CtlOpt opts[] = {
		{"queue", true, &a.queue},
		{"cascade", true, &a.cascade},
		{"provider", true, &a.provider},
		{"worker", true, &a.worker},
		{"store-password", false, &a.store_password},
		{"merge", true, &a.merge},
		{"sync-watermark", true, &a.sync},
		{NULL},
	};
	char *pos[CTL_MAX_ARGS];
	int npos, rc, pw;
	bool root = strcmp(type, "root") == 0;
	CtlDb *db;

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos < 1 || npos > 2)
		return ctl_usage(argv[0], "needs NODE_NAME [PUBLIC_CONNSTR]");
	if (a.queue && a.cascade && strcmp(a.queue, a.cascade) != 0)
		return ctl_usage(argv[0], "--queue and --cascade name different queues");
	if (!a.queue)
		a.queue = a.cascade;
	if (!a.queue)
		return ctl_usage(argv[0], "needs --queue QUEUE");
	if (root && a.provider)
		return ctl_usage(argv[0], "a root has no provider");
	if (!root && !a.provider)
		return ctl_usage(argv[0], "needs --provider CONNSTR");
	if (a.merge && strcmp(type, "leaf") != 0)
		return ctl_usage(argv[0], "--merge is for a leaf (create-leaf)");
	if (a.sync && strcmp(type, "branch") != 0)
		return ctl_usage(argv[0], "--sync-watermark is for a branch (create-branch)");
	if (a.merge && !ctl_check_node_name("combined queue", a.merge))
		return CTL_EXIT_ERROR;
	a.name = pos[0];
	a.location = npos > 1 ? pos[1] : ctx->connstr;
	if (!a.worker)
		a.worker = a.name;
	if (!ctl_check_node_name("cascade", a.queue) || !ctl_check_node_name("node", a.name) ||
	    !ctl_check_node_name("worker", a.worker))
		return CTL_EXIT_ERROR;
	snprintf(a.what, sizeof(a.what), "create %s node %s on queue %s", type, ctl_qq(a.name),
		 ctl_qq(a.queue));
	if (ctx->ini)
		return ctl_usage(argv[0], "give the node's database with -d (it is also the "
					  "default public connect string)");
	if (!*a.location)
		return ctl_usage(argv[0], "needs PUBLIC_CONNSTR (or -d)");
	pw = ctl_node_has_password(a.location);
	if (pw < 0) {
		ctl_err("%s: the public connect string does not parse", a.what);
		return CTL_EXIT_USAGE;
	}
	if (pw && !a.store_password) {
		ctl_err("%s: the public connect string holds a password; every member would "
			"store it in pgq_node.node_location: use a password file (~/.pgpass) or "
			"give --store-password",
			a.what);
		return CTL_EXIT_USAGE;
	}
	if (pw && !ctx->quiet)
		fprintf(stderr, "pgqctl: warning: storing a password in node_location of every "
				"member (--store-password)\n");
	if (!root && ctl_node_has_password(a.provider) < 0) {
		ctl_err("%s: the --provider connect string does not parse", a.what);
		return CTL_EXIT_USAGE;
	}
	if (a.sync && !(a.attrs = sync_attrs(a.sync)))
		return CTL_EXIT_USAGE;
	if ((rc = ctl_open_single(ctx, &db))) {
		free(a.attrs);
		return rc;
	}
	rc = check_local(db, &a);
	if (rc == 1) {
		ctl_node_say(ctx, db, "already done: this database is node %s", ctl_qq(a.name));
		ctl_db_close(db);
		free(a.attrs);
		return CTL_EXIT_OK;
	}
	if (rc < 0 || !check_public(ctx, db, &a) || (a.merge && !check_combined(db, &a))) {
		ctl_db_close(db);
		free(a.attrs);
		return CTL_EXIT_ERROR;
	}
	rc = root ? create_root(ctx, db, &a) : create_sub(ctx, db, &a);
	ctl_db_close(db);
	free(a.attrs);
	return rc;
}

int cmd_node_create_root(CtlCtx *ctx, int argc, char **argv)
{
	return node_create(ctx, argc, argv, "root");
}

int cmd_node_create_branch(CtlCtx *ctx, int argc, char **argv)
{
	return node_create(ctx, argc, argv, "branch");
}

int cmd_node_create_leaf(CtlCtx *ctx, int argc, char **argv)
{
	return node_create(ctx, argc, argv, "leaf");
}

/* ---- read-only views ---- */

static int view_args(CtlCtx *ctx, int argc, char **argv, const char **queue)
{
	const char *q = NULL, *c = NULL;
	const CtlOpt opts[] = {{"queue", true, &q}, {"cascade", true, &c}, {NULL}};
	char *pos[CTL_MAX_ARGS];
	int npos, rc;

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos > 1 || (npos == 1 && (q || c)))
		return ctl_usage(argv[0], "needs one QUEUE");
	*queue = npos ? pos[0] : q ? q : c;
	if (!*queue)
		return ctl_usage(argv[0], "needs QUEUE (or --queue QUEUE)");
	if (!ctl_check_new_name("cascade", *queue))
		return CTL_EXIT_ERROR;
	return 0;
}

int cmd_node_members(CtlCtx *ctx, int argc, char **argv)
{
	static const char *const hdr[] = {"node", "dead", "location"};
	const char *queue, *p[1];
	char what[300];
	CtlDb *db;
	PGresult *r;
	int rc;

	if ((rc = view_args(ctx, argc, argv, &queue)))
		return rc;
	snprintf(what, sizeof(what), "members of queue %s", ctl_qq(queue));
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	p[0] = queue;
	if (!ctl_node_has_schema(db, what)) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	r = ctl_db_exec(db,
			"select node_name, dead, node_location"
			" from pgq_node.get_queue_locations($1) order by 1",
			1, p);
	if (!r) {
		ctl_db_fail(db, what);
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	if (ctx->json) {
		CtlJson j;
		ctl_json_init(&j, stdout);
		ctl_json_obj_begin(&j, NULL);
		ctl_json_str(&j, "queue", queue);
		ctl_json_arr_begin(&j, "members");
		for (int i = 0; i < PQntuples(r); i++) {
			ctl_json_obj_begin(&j, NULL);
			ctl_json_str(&j, "node", PQgetvalue(r, i, 0));
			ctl_json_bool(&j, "dead", PQgetvalue(r, i, 1)[0] == 't');
			ctl_json_str(&j, "location", ctl_node_shown_location(PQgetvalue(r, i, 2)));
			ctl_json_obj_end(&j);
		}
		ctl_json_arr_end(&j);
		ctl_json_obj_end(&j);
		ctl_json_end(&j);
	} else {
		CtlTable *t = ctl_table_new(3, hdr);
		for (int i = 0; i < PQntuples(r); i++) {
			/* a name or location can hold anything: quoted, escaped, so that
			   it cannot break or forge a row */
			char *loc =
				strdup(ctl_cell_text(ctl_node_shown_location(PQgetvalue(r, i, 2))));
			const char *cells[3] = {ctl_q(PQgetvalue(r, i, 0)),
						PQgetvalue(r, i, 1)[0] == 't' ? "yes" : "no", loc};
			if (!loc)
				abort();
			ctl_table_add(t, cells);
			free(loc);
		}
		ctl_table_print(t, stdout, ctx->color);
		ctl_table_free(t);
	}
	PQclear(r);
	ctl_db_close(db);
	return CTL_EXIT_OK;
}

int cmd_node_info(CtlCtx *ctx, int argc, char **argv)
{
	const char *queue;
	char what[300];
	CtlDb *db;
	PGresult *r;
	int rc;

	if ((rc = view_args(ctx, argc, argv, &queue)))
		return rc;
	snprintf(what, sizeof(what), "node info of queue %s", ctl_qq(queue));
	if ((rc = ctl_open_single(ctx, &db)))
		return rc;
	r = ctl_node_info(db, queue, what);
	if (!r) {
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	if (!ctl_val(r, 0, 2)) {
		ctl_err("%s: %s: no node for this queue here (%s)", ctl_db_label(db), what,
			ctl_val(r, 0, 1) ? ctl_val(r, 0, 1) : "none");
		PQclear(r);
		ctl_db_close(db);
		return CTL_EXIT_ERROR;
	}
	if (ctx->json) {
		CtlJson j;
		ctl_json_init(&j, stdout);
		ctl_json_obj_begin(&j, NULL);
		ctl_json_str(&j, "queue", queue);
		for (int c = 2; c < PQnfields(r); c++) {
			if (c == 7)
				ctl_json_str(&j, PQfname(r, c),
					     ctl_node_shown_location(ctl_val(r, 0, c)));
			else
				ctl_json_cell(&j, PQfname(r, c), r, 0, c);
		}
		ctl_json_obj_end(&j);
		ctl_json_end(&j);
	} else {
		printf("%-18s %s\n", "queue", ctl_q(queue));
		for (int c = 2; c < PQnfields(r); c++) {
			const char *v = ctl_val(r, 0, c);
			if (c == 7)
				v = ctl_node_shown_location(v);
			printf("%-18s %s\n", PQfname(r, c), v ? ctl_cell_text(v) : "");
		}
	}
	PQclear(r);
	ctl_db_close(db);
	return CTL_EXIT_OK;
}
