/*
 * Checks shared by the consumer's and the cascade worker's constructors: one-line
 * error text in the caller's buffer, connection strings checked without echoing a
 * password, and the database name a default label may show.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgqev_int.h"

bool pgqev_errbuf_set(char *errbuf, size_t errsize, const char *fmt, ...)
{
	if (errbuf && errsize) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(errbuf, errsize, fmt, ap);
		va_end(ap);
		/* one line: libpq's texts end in a newline and may span lines */
		size_t n = strlen(errbuf);
		while (n > 0 && (errbuf[n - 1] == '\n' || errbuf[n - 1] == ' '))
			errbuf[--n] = '\0';
		for (char *p = errbuf; *p; p++)
			if (*p == '\n' || *p == '\r' || *p == '\t')
				*p = ' ';
	}
	return false;
}

bool pgqev_check_conninfo(char *errbuf, size_t errsize, const char *setting, const char *conninfo)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
	if (opts) {
		PQconninfoFree(opts);
		return true;
	}
	/* libpq quotes the offending token or the whole URI: withhold it with a password */
	if (!perr)
		pgqev_errbuf_set(errbuf, errsize, "%s: cannot parse (out of memory)", setting);
	else if (pqev_conninfo_has_password(conninfo))
		pgqev_errbuf_set(errbuf, errsize,
				 "%s: invalid (details withheld: it contains a password)", setting);
	else
		pgqev_errbuf_set(errbuf, errsize, "%s: %s", setting, perr);
	PQfreemem(perr);
	return false;
}

char *pgqev_conninfo_dbname(const char *conninfo)
{
	char *db = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	/* a dbname that is itself a connection string may hold a password */
	for (PQconninfoOption *o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, "dbname") == 0 && o->val && *o->val &&
		    !pqev_conninfo_is_expanded(o->val))
			db = strdup(o->val);
	PQconninfoFree(opts);
	return db;
}
