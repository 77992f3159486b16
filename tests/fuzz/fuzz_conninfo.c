/* Fuzz target for connection strings as the connection layer takes them
 * (pqev_conn_new + pqev_conn_start parse them; the loop never runs, so nothing
 * connects anywhere): no crash, and a password never shows in the connection's
 * label or error, whether the input carries it as a keyword, in a URI, or inside
 * a dbname that is itself a connection string. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_conn.h>
#include <pgqd-ev/pqev_connlimit.h>

#include "fuzz.h"

#define SECRET "Zq9SecretPw"

static void try_one(struct event_base *base, PqevConnLimit *lim, const char *conninfo, bool check)
{
	PqevConnConfig cfg;
	PqevConnCallbacks cb = {.size = sizeof(cb)};
	pqev_conn_config_init(&cfg);
	cfg.conninfo = conninfo;
	PqevConn *c = pqev_conn_new(lim, &cfg, &cb);
	(void)base;
	if (!c)
		return;
	int rc = pqev_conn_start(c);
	/* refused (bad string) or armed for the loop, which never runs here */
	if (rc != 0 && pqev_conn_error(c)[0] == '\0') {
		fprintf(stderr, "refused without a reason (%d): '%s'\n", rc, conninfo);
		abort();
	}
	if (check && (strstr(pqev_conn_name(c), SECRET) || strstr(pqev_conn_error(c), SECRET))) {
		fprintf(stderr, "password shown: name '%s' error '%s' for '%s'\n",
			pqev_conn_name(c), pqev_conn_error(c), conninfo);
		abort();
	}
	pqev_conn_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct event_base *base;
	static PqevConnLimit *lim;
	char *text = malloc(size + 1), *buf = malloc(2 * size + 200);
	if (!base) {
		base = event_base_new();
		lim = pqev_connlimit_new(base, 0);
	}
	if (!text || !buf || !base || !lim)
		abort();
	memcpy(text, data, size);
	text[size] = '\0'; /* a NUL inside ends the string, as for any C caller */
	if (strstr(text, SECRET)) {
		/* the secret outside a password (a dbname, say) may well be shown */
		try_one(base, lim, text, false);
		free(text);
		free(buf);
		return 0;
	}
	try_one(base, lim, text, true);
	snprintf(buf, 2 * size + 200, "%s password=" SECRET, text);
	try_one(base, lim, buf, true);
	snprintf(buf, 2 * size + 200, "password=" SECRET " %s", text);
	try_one(base, lim, buf, true);
	snprintf(buf, 2 * size + 200, "postgresql://u:" SECRET "@%s", text);
	try_one(base, lim, buf, true);
	snprintf(buf, 2 * size + 200, "dbname='password=" SECRET " %s'", text);
	try_one(base, lim, buf, true);
	free(text);
	free(buf);
	return 0;
}
