/*
 * Connection parameters: parse the configured conninfo once per start, derive
 * the database label and the host list, and build the keyword/value arrays for
 * PQconnectStartParams at each attempt. Our defaults (application_name,
 * keepalives) go before the conninfo's own values so the conninfo wins;
 * resolved addresses and the statement_timeout startup option go after.
 * Nothing here ever copies a password into a message.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pqev_conn_int.h"

void pqev_sanitize(char *out, size_t outlen, const char *in)
{
	size_t i = 0;
	if (outlen == 0)
		return;
	for (; in && *in && i + 1 < outlen; in++)
		out[i++] = ((unsigned char)*in < 0x20 || *in == 0x7f) ? '?' : *in;
	out[i] = '\0';
}

bool pqev_conninfo_has_password(const char *conninfo)
{
	/* crude on purpose: withholding a harmless parse error costs little */
	for (const char *p = conninfo; p && *p; p++)
		if (strncasecmp(p, "password", 8) == 0)
			return true;
	/* a URI's userinfo (user:secret@): libpq quotes bad %-tokens and whole URIs */
	const char *u = conninfo ? strstr(conninfo, "://") : NULL;
	return u && strchr(u, '@');
}

bool pqev_conninfo_is_expanded(const char *dbname)
{
	return dbname && (strchr(dbname, '=') || strstr(dbname, "://"));
}

int pqev_struct_in(void *dst, size_t dst_size, const void *src, size_t src_size, size_t base)
{
	if (src_size == 0 && base > 0)
		src_size = base; /* a caller that leaves size 0 means the first layout */
	if (src_size < base || src_size < sizeof(size_t))
		return -EINVAL;
	if (src_size > dst_size) {
		/* a newer caller: what this library does not know must be unset */
		for (size_t i = dst_size; i < src_size; i++)
			if (((const unsigned char *)src)[i])
				return -E2BIG;
		src_size = dst_size;
	}
	memcpy(dst, src, src_size);
	return 0;
}

static void free_strv(char **v, int n)
{
	if (!v)
		return;
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void free_keys(PqevConn *c)
{
	/* kv_put keeps keys and vals the same length: both or neither exist */
	if (c->keys && c->vals) {
		for (int i = 0; c->keys[i]; i++) {
			free(c->keys[i]);
			free(c->vals[i]);
		}
	}
	free(c->keys);
	free(c->vals);
	c->keys = NULL;
	c->vals = NULL;
}

void pqev_conninfo_release_params(PqevConn *c)
{
	free_keys(c);
}

void pqev_conninfo_clear(PqevConn *c)
{
	free_keys(c);
	free_strv(c->hosts, c->nhosts);
	free_strv(c->hostaddrs, c->nhosts);
	c->hosts = NULL;
	c->hostaddrs = NULL;
	c->nhosts = 0;
	c->need_dns = false;
}

static bool is_numeric_addr(const char *h)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

/* Split a comma-separated host list into c->hosts. */
static int split_hosts(PqevConn *c, const char *list)
{
	int n = 1;
	const char *p;
	for (p = list; *p; p++)
		n += *p == ',';
	c->hosts = calloc((size_t)n, sizeof(char *));
	c->hostaddrs = calloc((size_t)n, sizeof(char *));
	if (!c->hosts || !c->hostaddrs)
		return -ENOMEM;
	c->nhosts = n;
	p = list;
	for (int i = 0; i < n; i++) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		c->hosts[i] = strndup(p, len);
		c->hostaddrs[i] = strdup("");
		if (!c->hosts[i] || !c->hostaddrs[i])
			return -ENOMEM;
		/* a unix socket directory, an abstract socket or an address: no lookup */
		if (len > 0 && c->hosts[i][0] != '/' && c->hosts[i][0] != '@' &&
		    !is_numeric_addr(c->hosts[i]))
			c->need_dns = true;
		p = e ? e + 1 : p + len;
	}
	return 0;
}

int pqev_conninfo_parse(PqevConn *c)
{
	char *errmsg = NULL;
	PQconninfoOption *opts;
	const char *dbname = NULL, *user = NULL, *host = NULL, *hostaddr = NULL, *port = NULL;
	int rc = 0;

	pqev_conninfo_clear(c);
	if (!c->conninfo) {
		pqev_conn_seterr(c, "no conninfo configured");
		return -EINVAL;
	}
	opts = PQconninfoParse(c->conninfo, &errmsg);
	if (!opts) {
		if (!errmsg) {
			pqev_conn_seterr(c, "out of memory parsing the connection string");
			return -ENOMEM;
		}
		if (pqev_conninfo_has_password(c->conninfo))
			pqev_conn_seterr(
				c, "invalid conninfo (details withheld: it contains a password)");
		else
			pqev_conn_seterr(c, "invalid conninfo: %s", errmsg);
		PQfreemem(errmsg);
		return -EINVAL;
	}
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (!o->val || !*o->val)
			continue;
		/* a dbname holding a whole connection string (libpq expands it) may
		   carry a password: never a label */
		if (strcmp(o->keyword, "dbname") == 0 && !pqev_conninfo_is_expanded(o->val))
			dbname = o->val;
		/* likewise a user name that reads as key=value: "user= password=x" gives
		   user "password=x" */
		else if (strcmp(o->keyword, "user") == 0 && !pqev_conninfo_is_expanded(o->val))
			user = o->val;
		else if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "hostaddr") == 0)
			hostaddr = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			port = o->val;
	}
	if (c->cfg_name)
		pqev_sanitize(c->name, sizeof(c->name), c->cfg_name);
	else
		pqev_sanitize(c->name, sizeof(c->name), dbname ? dbname : user ? user : "?");
	/* libpq resolves names itself (blocking) only when no hostaddr is given */
	if (host && !hostaddr)
		rc = split_hosts(c, host);
	/* the connection target, which server-level failures belong to (pqev_server.c);
	   unset parts stay empty: libpq fills them the same way for every connection */
	char *key = NULL;
	if (asprintf(&key, "%s\x1f%s\x1f%s", host ? host : "", hostaddr ? hostaddr : "",
		     port ? port : "") < 0)
		key = NULL;
	pqev_server_bind(c, key);
	free(key);
	PQconninfoFree(opts);
	if (rc < 0) {
		pqev_conninfo_clear(c);
		pqev_conn_seterr(c, "out of memory parsing the host list");
	}
	return rc;
}

typedef struct KV {
	char **keys;
	char **vals;
	int n;
	int cap;
} KV;

static int kv_put(KV *kv, const char *k, const char *v)
{
	/* a later value replaces an earlier one, as libpq would do */
	for (int i = 0; i < kv->n; i++) {
		if (strcmp(kv->keys[i], k) == 0) {
			char *nv = strdup(v);
			if (!nv)
				return -ENOMEM;
			free(kv->vals[i]);
			kv->vals[i] = nv;
			return 0;
		}
	}
	/* both arrays stay NULL-terminated and the same length after every
	   step, so free_keys() can walk them whatever fails */
	if (kv->n + 2 > kv->cap) {
		int cap = kv->cap ? kv->cap * 2 : 32;
		char **nk = realloc(kv->keys, (size_t)cap * sizeof(char *));
		if (!nk)
			return -ENOMEM;
		kv->keys = nk;
		kv->keys[kv->n] = NULL;
		char **nv = realloc(kv->vals, (size_t)cap * sizeof(char *));
		if (!nv)
			return -ENOMEM;
		kv->vals = nv;
		kv->cap = cap;
		kv->keys[kv->n] = NULL;
		kv->vals[kv->n] = NULL;
	}
	char *dk = strdup(k), *dv = strdup(v);
	if (!dk || !dv) {
		free(dk);
		free(dv);
		return -ENOMEM;
	}
	kv->keys[kv->n] = dk;
	kv->vals[kv->n] = dv;
	kv->n++;
	kv->keys[kv->n] = NULL;
	kv->vals[kv->n] = NULL;
	return 0;
}

static int kv_puti(KV *kv, const char *k, int v)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%d", v);
	return kv_put(kv, k, buf);
}

int pqev_conninfo_build(PqevConn *c)
{
	KV kv = {0};
	PQconninfoOption *opts;
	char *errmsg = NULL;
	const char *options = NULL;
	int rc = 0;

	free_keys(c);
	opts = PQconninfoParse(c->conninfo, &errmsg);
	if (!opts) {
		PQfreemem(errmsg);
		pqev_conn_seterr(c, "invalid conninfo");
		return errmsg ? -EINVAL : -ENOMEM;
	}
	rc |= kv_put(&kv, "application_name", c->appname ? c->appname : "pgqd-ev");
	rc |= kv_put(&kv, "keepalives", "1");
	if (c->cfg.keepalives_idle > 0)
		rc |= kv_puti(&kv, "keepalives_idle", c->cfg.keepalives_idle);
	if (c->cfg.keepalives_interval > 0)
		rc |= kv_puti(&kv, "keepalives_interval", c->cfg.keepalives_interval);
	if (c->cfg.keepalives_count > 0)
		rc |= kv_puti(&kv, "keepalives_count", c->cfg.keepalives_count);
	for (PQconninfoOption *o = opts; o->keyword && rc == 0; o++) {
		if (!o->val)
			continue;
		if (strcmp(o->keyword, "options") == 0)
			options = o->val;
		else
			rc |= kv_put(&kv, o->keyword, o->val);
	}
	if (rc == 0 && c->need_dns) {
		size_t len = 1;
		for (int i = 0; i < c->nhosts; i++)
			len += strlen(c->hostaddrs[i]) + 1;
		char *list = calloc(1, len);
		if (!list) {
			rc = -ENOMEM;
		} else {
			for (int i = 0; i < c->nhosts; i++) {
				if (i)
					strcat(list, ",");
				strcat(list, c->hostaddrs[i]);
			}
			rc |= kv_put(&kv, "hostaddr", list);
			free(list);
		}
	}
	if (rc == 0 && c->cfg.statement_timeout > 0) {
		/* sized to fit: a cut-off options string would change other settings */
		unsigned long long ms = (c->cfg.statement_timeout + 999) / 1000;
		char *buf = NULL;
		if (asprintf(&buf, "%s%s-c statement_timeout=%llu", options ? options : "",
			     options ? " " : "", ms) < 0)
			rc = -ENOMEM;
		else
			rc |= kv_put(&kv, "options", buf);
		free(buf);
	} else if (rc == 0 && options) {
		rc |= kv_put(&kv, "options", options);
	}
	PQconninfoFree(opts);
	c->keys = kv.keys;
	c->vals = kv.vals;
	if (rc != 0) {
		free_keys(c);
		pqev_conn_seterr(c, "out of memory building connection parameters");
		return -ENOMEM;
	}
	return 0;
}
