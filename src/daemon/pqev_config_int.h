/*
 * Internal interface between the config loader (pqev_config.c) and the value
 * operations (pqev_config_value.c). Not installed.
 */
#ifndef PGQEV_PQEV_CONFIG_INT_H
#define PGQEV_PQEV_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <pgqd-ev/pqev_config.h>

/* How much of a bad value a message quotes, and the buffer pqev_conf_quote needs. */
#define PQEV_CONF_MAX_QUOTED 64
#define PQEV_CONF_QUOTE_SIZE (PQEV_CONF_MAX_QUOTED + 8)

/* "value" for a message: control characters as '?', cut at PQEV_CONF_MAX_QUOTED,
 * "(hidden)" for SECRET keys. Returns buf or a static string. */
const char *pqev_conf_quote(char *buf, size_t size, const char *v, const PqevConfKey *k);

bool pqev_conf_str_eq(const char *a, const char *b);
void *pqev_conf_field_at(void *data, const PqevConfKey *k);
/* Release what the field owns (strings, lists); leaves it zeroed. */
void pqev_conf_field_free(void *data, const PqevConfKey *k);
/* Free, then the type's unset value (0, false, NULL, PQEV_CONF_UNSET_USEC). */
void pqev_conf_field_unset(void *data, const PqevConfKey *k);
bool pqev_conf_field_equal(const void *a, const void *b, const PqevConfKey *k);
/* Deep copy src's field over dst's; -ENOMEM leaves dst unchanged. */
int pqev_conf_field_copy(void *dst, const void *src, const PqevConfKey *k);
/* Render for messages and pqev_conf_write (lists joined with ','). */
void pqev_conf_field_format(char *buf, size_t size, const void *data, const PqevConfKey *k);
/* Convert text into the field: 0; 1 when accepted with a warning in err (a
 * PQEV_CF_CLAMP value moved into its range); -ENOMEM; or -EINVAL with the cause
 * in err. */
int pqev_conf_field_set(void *data, const PqevConfKey *k, const char *value, char *err,
			size_t errlen);

#endif
