/*
 * SQL text helpers: literal quoting that does not depend on the server's
 * standard_conforming_strings (E'' form), formatted allocation, intervals.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>

#include "pgqev_int.h"

char *pgqev_quote_literal(const char *s)
{
	size_t n = strlen(s), extra = 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\'' || s[i] == '\\')
			extra++;
	char *out = malloc(n + extra + 4);
	if (!out)
		return NULL;
	char *p = out;
	*p++ = 'E';
	*p++ = '\'';
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\'' || s[i] == '\\')
			*p++ = s[i];
		*p++ = s[i];
	}
	*p++ = '\'';
	*p = '\0';
	return out;
}

char *pgqev_sprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *out = NULL;
	if (vasprintf(&out, fmt, ap) < 0)
		out = NULL;
	va_end(ap);
	return out;
}

/* Interval literal for next_batch_custom, or NULL for "not used". */
char *pgqev_interval(usec_t us, char *buf, size_t size)
{
	if (us == 0)
		return NULL;
	snprintf(buf, size, "%" PRIu64 " microseconds", (uint64_t)us);
	return buf;
}
