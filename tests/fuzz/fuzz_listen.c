/*
 * Fuzz target for the LISTEN/UNLISTEN statement the connection layer builds
 * for a channel name (any bytes but NUL; the tick channel comes from the
 * server, a consumer's or pgqctl's from the user): for a channel of at most
 * PQEV_CHANNEL_MAX bytes the statement is the verb and one double-quoted
 * identifier that reads back, by PostgreSQL's rule ("" is a quote, a lone
 * quote ends it), as exactly the channel, with nothing after it. A longer
 * name (refused by pqev_conn_listen) must still not write past the buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "pqev_conn_int.h"

#include "fuzz.h"
#include "fuzz_check.h"

static void check_one(const char *verb, const char *chan)
{
	char sql[2 * PQEV_CHANNEL_MAX + 16], back[2 * PQEV_CHANNEL_MAX + 16];
	size_t vl = strlen(verb), n = 0;
	pqev_listen_sql(sql, sizeof(sql), verb, chan);
	if (strlen(sql) >= sizeof(sql))
		FZ_FAIL("%s statement overflows", verb);
	if (strncmp(sql, verb, vl) != 0 || sql[vl] != ' ' || sql[vl + 1] != '"')
		FZ_FAIL("%s statement does not start with '%s \"': %s", verb, verb, sql);
	if (strlen(chan) > PQEV_CHANNEL_MAX)
		return; /* refused before it is built; only the bounds matter */
	const char *p = sql + vl + 2;
	for (;;) {
		if (*p == '\0')
			FZ_FAIL("%s statement has no closing quote: %s", verb, sql);
		if (*p == '"') {
			if (p[1] != '"')
				break;
			p++;
		}
		back[n++] = *p++;
	}
	back[n] = '\0';
	if (p[1] != '\0')
		FZ_FAIL("%s statement has text after the identifier: %s", verb, sql);
	if (strcmp(back, chan) != 0)
		FZ_FAIL("%s identifier reads back as '%s', not the channel '%s'", verb, back, chan);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *chan = malloc(size + 1);
	if (!chan)
		abort();
	memcpy(chan, data, size);
	chan[size] = '\0'; /* a NUL inside ends the name, as in C */
	check_one("LISTEN", chan);
	check_one("UNLISTEN", chan);
	free(chan);
	return 0;
}
