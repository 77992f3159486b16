/*
 * Helpers shared by the `node` commands (cmd_node*.c): connections to other
 * members, the pgq_node schema check, calls answering (ret_code, ret_note),
 * progress lines, and connect strings safe to print.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "pgqctl.h"

int ctl_node_has_password(const char *cs)
{
	PQconninfoOption *o = PQconninfoParse(cs, NULL);
	int has = 0;

	if (!o)
		return -1;
	for (PQconninfoOption *p = o; p->keyword; p++)
		if (strcmp(p->keyword, "password") == 0 && p->val && *p->val)
			has = 1;
	PQconninfoFree(o);
	return has;
}

CtlDb *ctl_node_open(CtlCtx *ctx, const char *role, const char *cs)
{
	PQconninfoOption *o = PQconninfoParse(cs, NULL);
	const char *db = "?";
	char label[300];
	CtlTarget t;

	for (PQconninfoOption *p = o; p && p->keyword; p++)
		if (strcmp(p->keyword, "dbname") == 0 && p->val && *p->val)
			db = p->val;
	snprintf(label, sizeof(label), "%s %s", role, db);
	if (o)
		PQconninfoFree(o);
	t = (CtlTarget){.label = label, .conninfo = (char *)cs};
	return ctl_db_open(ctx, &t);
}

bool ctl_node_has_schema(CtlDb *db, const char *what)
{
	PGresult *r =
		ctl_db_exec(db, "select to_regproc('pgq_node.get_node_info') is not null", 0, NULL);
	bool has;

	if (!r) {
		ctl_db_fail(db, what);
		return false;
	}
	has = ctl_val(r, 0, 0) && ctl_val(r, 0, 0)[0] == 't';
	PQclear(r);
	if (!has)
		ctl_err("%s: %s: no pgq_node schema in this database (install pgq_node_ev.sql)",
			ctl_db_label(db), what);
	return has;
}

PGresult *ctl_node_info(CtlDb *db, const char *queue, const char *what)
{
	const char *p[1] = {queue};
	PGresult *r;

	if (!ctl_node_has_schema(db, what))
		return NULL;
	r = ctl_db_exec(db, "select * from pgq_node.get_node_info($1)", 1, p);
	if (!r)
		ctl_db_fail(db, what);
	return r;
}

bool ctl_node_call_below(CtlDb *db, const char *what, const char *sql, int n, const char *const *p,
			 PGresult **out, int limit)
{
	PGresult *r = ctl_db_exec(db, sql, n, p);
	int code;

	if (out)
		*out = NULL;
	if (!r) {
		ctl_db_fail(db, what);
		return false;
	}
	code = ctl_val(r, 0, 0) ? atoi(ctl_val(r, 0, 0)) : 0;
	if (code >= limit) {
		ctl_err("%s: %s: %s (code %d)", ctl_db_label(db), what,
			ctl_val(r, 0, 1) ? ctl_val(r, 0, 1) : "failed", code);
		PQclear(r);
		return false;
	}
	if (out)
		*out = r;
	else
		PQclear(r);
	return true;
}

bool ctl_node_call(CtlDb *db, const char *what, const char *sql, int n, const char *const *p,
		   PGresult **out)
{
	return ctl_node_call_below(db, what, sql, n, p, out, 300);
}

bool ctl_node_exec_ok(CtlDb *db, const char *what, const char *sql)
{
	PGresult *r = ctl_db_exec_simple(db, sql);

	if (!r) {
		ctl_db_fail(db, what);
		return false;
	}
	PQclear(r);
	return true;
}

void ctl_node_say(CtlCtx *ctx, CtlDb *db, const char *fmt, ...)
{
	va_list ap;

	if (ctx->quiet)
		return;
	printf("%s: ", ctl_db_label(db));
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

const char *ctl_node_shown_location(const char *loc)
{
	if (!loc)
		return NULL;
	return ctl_node_has_password(loc) != 0 ? "(hidden: holds a password)" : loc;
}

/* ---- cascade operations (cmd_node_status.c, cmd_node_admin.c) ---- */

int ctl_node_args(CtlCtx *ctx, int argc, char **argv, const CtlOpt *extra, int nwant,
		  const char **queue, char **pos, int *npos)
{
	const char *q = NULL, *c = NULL;
	CtlOpt opts[32];
	int n = 0, rc;

	opts[n++] = (CtlOpt){"queue", true, &q};
	opts[n++] = (CtlOpt){"cascade", true, &c};
	for (const CtlOpt *o = extra; o && o->name && n < 31; o++)
		opts[n++] = *o;
	opts[n] = (CtlOpt){NULL};
	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, npos)))
		return rc;
	if (q && c && strcmp(q, c) != 0)
		return ctl_usage(argv[0], "--queue and --cascade name different cascades");
	if (!q)
		q = c;
	/* the cascade's queue name as the first word, as `node members QUEUE` */
	if (!q && *npos == nwant + 1) {
		q = pos[0];
		memmove(pos, pos + 1, (size_t)nwant * sizeof(char *));
		(*npos)--;
	}
	if (!q)
		return ctl_usage(argv[0], "needs the cascade: QUEUE or --cascade QUEUE");
	if (*npos != nwant)
		return ctl_usage(argv[0], "needs %d argument%s after the cascade, got %d", nwant,
				 nwant == 1 ? "" : "s", *npos);
	if (!ctl_check_new_name("cascade", q))
		return CTL_EXIT_ERROR;
	*queue = q;
	return 0;
}

CtlMember *ctl_node_members(CtlDb *db, const char *queue, const char *what, size_t *n)
{
	const char *p[1] = {queue};
	PGresult *r;
	CtlMember *m;

	*n = 0;
	r = ctl_db_exec(db,
			"select node_name, node_location, dead"
			" from pgq_node.get_queue_locations($1) order by 1",
			1, p);
	if (!r) {
		ctl_db_fail(db, what);
		return NULL;
	}
	m = calloc((size_t)PQntuples(r) + 1, sizeof(*m));
	if (!m)
		abort();
	for (int i = 0; i < PQntuples(r); i++) {
		m[i].name = strdup(PQgetvalue(r, i, 0));
		m[i].location = strdup(PQgetvalue(r, i, 1));
		m[i].dead = PQgetvalue(r, i, 2)[0] == 't';
		if (!m[i].name || !m[i].location)
			abort();
	}
	*n = (size_t)PQntuples(r);
	PQclear(r);
	return m;
}

const CtlMember *ctl_node_member(const CtlMember *m, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(m[i].name, name) == 0)
			return &m[i];
	return NULL;
}

void ctl_node_members_free(CtlMember *m, size_t n)
{
	if (!m)
		return;
	for (size_t i = 0; i < n; i++) {
		free(m[i].name);
		free(m[i].location);
	}
	free(m);
}

CtlDb *ctl_node_open_member(CtlCtx *ctx, const CtlMember *m)
{
	return ctl_plan_open(ctx, m->name, m->location);
}

static void wake(evutil_socket_t fd, short what, void *arg)
{
	*(bool *)arg = true;
}

bool ctl_node_sleep(CtlCtx *ctx, usec_t us)
{
	bool fired = false;
	struct timeval tv = {.tv_sec = (time_t)(us / USEC_PER_SEC),
			     .tv_usec = (suseconds_t)(us % USEC_PER_SEC)};
	struct event *ev = evtimer_new(ctx->base, wake, &fired);
	bool ok;

	if (!ev)
		abort();
	evtimer_add(ev, &tv);
	ok = ctl_loop_until(ctx, &fired);
	event_free(ev);
	return ok;
}

/* Length of the valid UTF-8 sequence at s, 0 when invalid. */
static size_t utf8_len(const unsigned char *s)
{
	size_t n;
	unsigned min;
	unsigned cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xE0) == 0xC0)
		n = 2, min = 0x80, cp = s[0] & 0x1F;
	else if ((s[0] & 0xF0) == 0xE0)
		n = 3, min = 0x800, cp = s[0] & 0x0F;
	else if ((s[0] & 0xF8) == 0xF0)
		n = 4, min = 0x10000, cp = s[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && strcmp(s + n - k, suffix) == 0;
}

bool ctl_check_node_name(const char *what, const char *name)
{
	/* ".NODE.watermark" and "NODE.gravestone" are the longest derived names */
	static const size_t derived = sizeof(".gravestone") - 1;
	size_t n = strlen(name);

	if (!ctl_check_new_name(what, name))
		return false;
	for (const unsigned char *p = (const unsigned char *)name; *p;) {
		size_t k = utf8_len(p);
		if (!k) {
			ctl_err("%s name %s is not valid UTF-8 (byte 0x%02x at offset %zu): "
				"every member stores it, in databases that may reject it",
				what, ctl_q(name), *p, (size_t)(p - (const unsigned char *)name));
			return false;
		}
		p += k;
	}
	if (name[0] == ' ' || name[n - 1] == ' ') {
		ctl_err("%s name %s starts or ends with a space: a [node NAME] section of "
			"pgqd-ev's ini file cannot hold it",
			what, ctl_qq(name));
		return false;
	}
	if (strcmp(what, "worker") == 0) {
		if (name[0] == '.') {
			ctl_err("worker name %s starts with \".\": such consumer names are the "
				"cascade's own (.global_watermark, .NODE.watermark), which resurrect "
				"keeps and status does not list",
				ctl_q(name));
			return false;
		}
		if (has_suffix(name, ".gravestone") || has_suffix(name, ".dumper")) {
			ctl_err("worker name %s ends in \".gravestone\" or \".dumper\": failover "
				"and resurrect name their consumers so",
				ctl_q(name));
			return false;
		}
	} else if (strcmp(what, "node") == 0 && n + derived > CTL_NAME_MAX) {
		ctl_err("node name %s is %zu bytes long: at most %zu leave room for the "
			"consumer names pgq_node derives from it (.NODE.watermark, "
			"NODE.gravestone)",
			ctl_q(name), n, CTL_NAME_MAX - derived);
		return false;
	}
	return true;
}

const char *ctl_cell_text(const char *s)
{
	static char *buf;
	size_t len = 0;

	free(buf);
	buf = malloc(strlen(s) * 4 + 1);
	if (!buf)
		abort();
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < ' ' || *p == 0x7f)
			len += (size_t)sprintf(buf + len, "\\x%02x", *p);
		else
			buf[len++] = (char)*p;
	}
	buf[len] = '\0';
	return buf;
}
