/* Fuzz target for the password scrubber: no crash, and every bounded result is a
 * prefix of the unbounded one. */
#include <stdlib.h>
#include <string.h>

#include <pgqd-ev/pqev_log.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), *full, small[16];
	size_t n;
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	full = pqev_log_scrub_dup(text);
	if (full) {
		n = pqev_log_scrub(small, sizeof(small), text);
		if (n != strlen(full) || strncmp(small, full, sizeof(small) - 1) != 0)
			abort();
		free(full);
	}
	free(text);
	return 0;
}
