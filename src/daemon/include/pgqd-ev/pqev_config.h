/*
 * Declarative configuration.
 *
 * The caller (the daemon) describes its ini file once, as a static schema: sections,
 * and per section a table of keys with type, default, flags, range and validator,
 * each bound by offsetof() to a field of the caller's own struct. The engine parses
 * a file or a string into a FRESH zeroed struct, applies defaults, converts and
 * validates every value, and returns the struct only if nothing was wrong. The
 * caller swaps its pointer; a failed reload therefore leaves the running config
 * untouched (load, validate, then swap).
 *
 * File format (what pgqd 3.5 reads, read by our own reader):
 *   - `[section]` headers; `key = value` (or `key: value`); a line whose first
 *     non-blank character is `;` or `#` is a comment. Leading and trailing
 *     whitespace never matters. The value is the rest of the line: a `;` or `#`
 *     inside it is part of the value, as in pgqd. Lines have no length limit.
 *   - Repeated sections: a section declared PQEV_CS_REPEATED named "cluster"
 *     matches `[cluster NAME]` and `[cluster:NAME]`; each produces one element of
 *     a PqevConfArray. Two sections with the same NAME are an error; NAME must be
 *     UTF-8 without control characters.
 *   - `%include PATH` reads another file in place of that line, as pgqd does (the
 *     current section carries on into it). A relative PATH is taken from the
 *     including file's directory; at most 10 levels and 256 files; a cycle, or a
 *     file that is not a regular file, is an error. Messages name the included
 *     file and its own line numbers.
 *
 * Every problem is reported through a PqevConfReportFn as a PqevConfDiag whose
 * message reads "FILE:LINE: [SECTION] KEY: cause"; parsing continues after an
 * error so one run reports them all. The engine never logs by itself.
 *
 * Ownership: a struct returned by pqev_conf_load_*() belongs to the caller and is
 * released with pqev_conf_free() (strings, lists and repeated-section arrays are
 * malloc'd and owned by the struct). The schema must outlive every struct loaded
 * with it (make it static const). Not thread-safe; one loader at a time is fine.
 */
#ifndef PGQEV_PQEV_CONFIG_H
#define PGQEV_PQEV_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <pgqd-ev/pqev_common.h>

/* Largest SECONDS value (about 31 years); larger ones are out of range. */
#define PQEV_CONF_MAX_USEC ((usec_t)1000000000 * USEC_PER_SEC)

/* Value types and the C type of the field each one fills. */
typedef enum PqevConfType {
	PQEV_CT_STRING,  /* char *: malloc'd, NULL when unset and no default */
	PQEV_CT_PATH,    /* char *: like STRING, "~/" and "~user/" expanded, relative
			    ones joined to the base of pqev_conf_set_path_base() */
	PQEV_CT_INT,     /* int: decimal, optional sign, range [min, max] */
	PQEV_CT_SECONDS, /* usec_t: seconds as strtod reads them ("0.5", "60", "1e3"),
			    rounded to microseconds; range in seconds */
	PQEV_CT_BOOL,    /* bool: 1/0, true/false, yes/no, on/off (any case) */
	PQEV_CT_ENUM,    /* int: a name from the key's PqevConfEnumItem map */
	PQEV_CT_LIST,    /* PqevConfList: comma separated, items trimmed, empties dropped */
} PqevConfType;

/* Key flags. */
#define PQEV_CF_NO_RELOAD 0x01u /* a reload keeps the running value and warns if it changed */
#define PQEV_CF_REQUIRED  0x02u /* must appear in its section */
#define PQEV_CF_SECRET    0x04u /* value never appears in messages */
/* SECONDS: a value outside [min, max] is moved to the nearest bound with a
 * warning instead of an error (pgqd's keys: pgqd accepts any such value) */
#define PQEV_CF_CLAMP 0x08u

/* Section flags. */
#define PQEV_CS_REPEATED 0x01u /* [name NAME] / [name:NAME], zero or more times */
#define PQEV_CS_REQUIRED 0x02u /* a single section that must be present */

/* SECONDS keys without a default and not set in the file hold this. */
#define PQEV_CONF_UNSET_USEC USEC_INFINITY

/* List value: `items[0..count)` are malloc'd strings owned by the config struct. */
typedef struct PqevConfList {
	char **items;
	size_t count;
} PqevConfList;

/*
 * Repeated-section value: `count` elements of the section's elem_size, contiguous,
 * in file order, owned by the config struct. Use PQEV_CONF_ARRAY_AT to index.
 */
typedef struct PqevConfArray {
	void *items;
	size_t count;
} PqevConfArray;

#define PQEV_CONF_ARRAY_AT(arr, type, i) (&((type *)(arr).items)[(i)])

/* Enum map entry; a map ends with {NULL, 0}. Names match case-insensitively. */
typedef struct PqevConfEnumItem {
	const char *name;
	int value;
} PqevConfEnumItem;

/* syslog facilities (auth, authpriv, daemon, user, local0..local7) for ENUM keys. */
extern const PqevConfEnumItem pqev_conf_syslog_facilities[];

/*
 * Per-key validator, called after the value converted: `field` points at the
 * filled field. Return true if acceptable; otherwise write the cause (no key, no
 * line: the engine adds them) into err[errlen] and return false.
 */
typedef bool (*PqevConfValidateFn)(const void *field, char *err, size_t errlen);

/* One key of a section table. A table ends with an entry whose key is NULL. */
typedef struct PqevConfKey {
	const char *key;             /* name in the file, also the field name by convention */
	PqevConfType type;           /* what to parse and the field's C type */
	size_t offset;               /* offsetof(section struct, field) */
	const char *def;             /* default in file syntax, parsed like a value; NULL: none */
	unsigned flags;              /* PQEV_CF_* */
	double min, max;             /* INT, SECONDS: inclusive range; min == max == 0: any >= 0
	                                for SECONDS, any int for INT */
	const PqevConfEnumItem *map; /* ENUM only */
	PqevConfValidateFn validate; /* optional */
	const char *help;            /* one line for --check/--ini style output; may be NULL */
} PqevConfKey;

/* Check context handed to section and schema validators (valid during the call only). */
typedef struct PqevConfCheck PqevConfCheck;

/*
 * Section validator for cross-key rules: `section` points at the section struct
 * (the element for repeated sections), `name` is the repeated section's NAME or
 * NULL. Report problems with pqev_conf_check_error(); the return value is unused
 * beyond documentation (errors are counted by the engine).
 */
typedef void (*PqevConfSectionCheckFn)(void *section, const char *name, PqevConfCheck *chk);

/* One section. A section list ends with an entry whose name is NULL. */
typedef struct PqevConfSection {
	const char *name;             /* "pgqd"; for REPEATED the prefix: "cluster" */
	unsigned flags;               /* PQEV_CS_* */
	size_t offset;                /* single: offsetof(root, section struct), 0 if keys live
	                                  in the root; REPEATED: offsetof(root, PqevConfArray) */
	size_t elem_size;             /* REPEATED: sizeof one element struct */
	size_t name_offset;           /* REPEATED: offsetof(element, char *name) that gets NAME */
	const PqevConfKey *keys;      /* key table */
	PqevConfSectionCheckFn check; /* optional */
} PqevConfSection;

/* Whole-config validator for rules across sections (e.g. cluster vs main section). */
typedef void (*PqevConfSchemaCheckFn)(void *cfg, PqevConfCheck *chk);

typedef struct PqevConfSchema {
	size_t size;                     /* sizeof the root struct */
	const PqevConfSection *sections; /* table, ends with name == NULL */
	PqevConfSchemaCheckFn check;     /* optional */
} PqevConfSchema;

/* Severity of one diagnostic. */
typedef enum PqevConfSeverity {
	PQEV_CONF_ERROR,   /* the load fails */
	PQEV_CONF_WARNING, /* reported, the load still succeeds */
} PqevConfSeverity;

/* One diagnostic; all pointers are valid only during the report callback. */
typedef struct PqevConfDiag {
	PqevConfSeverity severity;
	const char *file;    /* file path, or the name given for a string */
	int line;            /* 1-based, 0 when not tied to a line */
	const char *section; /* as written inside the brackets ("cluster east"), or NULL */
	const char *key;     /* or NULL */
	const char *cause;   /* the cause alone */
	const char *message; /* "FILE:LINE: [SECTION] KEY: cause", ready to log */
} PqevConfDiag;

typedef void (*PqevConfReportFn)(const PqevConfDiag *diag, void *arg);

/*
 * Load `path` with `schema` into a fresh struct.
 *
 * `old`: NULL for the first load; on a reload the running struct (read only),
 * whose PQEV_CF_NO_RELOAD values are copied into the fresh struct, with a warning
 * for each one the file changed (repeated sections are matched by NAME; new
 * sections take the file's values).
 *
 * On success returns 0 and stores the struct in *out (caller owns it; free with
 * pqev_conf_free). On failure stores NULL in *out and returns -EINVAL (errors
 * were reported), -ENOENT/-EACCES/-EISDIR/-EFBIG (the file could not be read;
 * also reported), or -ENOMEM. `report` may be NULL (diagnostics dropped).
 */
int pqev_conf_load_file(const PqevConfSchema *schema, const char *path, const void *old, void **out,
			PqevConfReportFn report, void *arg) PQEV_MUSTCHECK;

/* Same, from the NUL-terminated `text`; `name` stands for the file in messages. */
int pqev_conf_load_string(const PqevConfSchema *schema, const char *text, const char *name,
			  const void *old, void **out, PqevConfReportFn report,
			  void *arg) PQEV_MUSTCHECK;

/* Free a struct from pqev_conf_load_* (NULL allowed). Returns NULL. */
void *pqev_conf_free(const PqevConfSchema *schema, void *cfg);

/*
 * Write the effective values of `cfg` as ini text to `out`, for --check and debug
 * logs: every key of every section, defaults included; SECRET values show as
 * "(hidden)", conninfo passwords inside strings as "***", unset values as a
 * comment. For display: long values are not split into continuation lines.
 * Returns 0 or -EIO.
 */
int pqev_conf_write(const PqevConfSchema *schema, const void *cfg, FILE *out) PQEV_MUSTCHECK;

/*
 * For validators: report an error (or warning) about `key` (may be NULL) of the
 * section being checked; the engine adds file, section and the line where the key
 * was set. Any error makes the load fail.
 */
void pqev_conf_check_error(PqevConfCheck *chk, const char *key, const char *fmt, ...)
	PQEV_PRINTF(3, 4);
void pqev_conf_check_warning(PqevConfCheck *chk, const char *key, const char *fmt, ...)
	PQEV_PRINTF(3, 4);

/* True if `key` was set in the file for the section being checked (not defaulted). */
bool pqev_conf_check_key_set(PqevConfCheck *chk, const char *key);

/* Parse helpers the engine uses, exported for command-line flags and tests. */
/* 0; -EINVAL (not a number, NaN); -EDOM (negative); -ERANGE (more than
 * PQEV_CONF_MAX_USEC, which is stored in *out) */
int pqev_conf_parse_seconds(const char *s, usec_t *out) PQEV_MUSTCHECK;
int pqev_conf_parse_bool(const char *s, bool *out) PQEV_MUSTCHECK; /* -EINVAL */
/*
 * Make relative PATH values absolute against `dir` from now on (a daemon passes
 * the directory it was started in, so the values still hold after it moved to
 * "/"). NULL: keep them relative. Process-wide. 0 or -ENOMEM.
 */
int pqev_conf_set_path_base(const char *dir) PQEV_MUSTCHECK;
/* Expand "~" / "~/x" / "~user/x"; returns malloc'd string or NULL with errno set. */
char *pqev_conf_expand_path(const char *s);

/*
 * Table-entry macros. T is the section struct type, F the field; the field's C
 * type is checked at compile time. Trailing arguments are extra designated
 * initializers (.validate, .help). Example:
 *   static const PqevConfKey main_keys[] = {
 *	PQEV_CONF_STRING("base_connstr", MainCfg, base_connstr, "", 0),
 *	PQEV_CONF_SECONDS("ticker_period", MainCfg, ticker_period, "1", 0, 0.001, 3600),
 *	PQEV_CONF_PATH("pidfile", MainCfg, pidfile, NULL, PQEV_CF_NO_RELOAD),
 *	PQEV_CONF_INT("max_connects", MainCfg, max_connects, "20", 0, 1, 10000,
 *		      .validate = check_fn, .help = "cap on connects in flight"),
 *	PQEV_CONF_END,
 *   };
 */
#define PQEV_CONF_FIELD_(T, F, CT)                                                         \
	(offsetof(T, F) +                                                                  \
	 0 * sizeof(struct {                                                               \
		 _Static_assert(__builtin_types_compatible_p(__typeof__(((T *)0)->F), CT), \
				"config field " #F " must have type " #CT);                \
		 int dummy_;                                                               \
	 }))

#define PQEV_CONF_STRING(K, T, F, DEF, FL, ...)                                               \
	{                                                                                     \
		.key = (K), .type = PQEV_CT_STRING, .offset = PQEV_CONF_FIELD_(T, F, char *), \
		.def = (DEF), .flags = (FL), __VA_ARGS__                                      \
	}
#define PQEV_CONF_PATH(K, T, F, DEF, FL, ...)                                               \
	{                                                                                   \
		.key = (K), .type = PQEV_CT_PATH, .offset = PQEV_CONF_FIELD_(T, F, char *), \
		.def = (DEF), .flags = (FL), __VA_ARGS__                                    \
	}
#define PQEV_CONF_INT(K, T, F, DEF, FL, MIN, MAX, ...)                                  \
	{                                                                               \
		.key = (K), .type = PQEV_CT_INT, .offset = PQEV_CONF_FIELD_(T, F, int), \
		.def = (DEF), .flags = (FL), .min = (MIN), .max = (MAX), __VA_ARGS__    \
	}
#define PQEV_CONF_SECONDS(K, T, F, DEF, FL, MIN, MAX, ...)                                     \
	{                                                                                      \
		.key = (K), .type = PQEV_CT_SECONDS, .offset = PQEV_CONF_FIELD_(T, F, usec_t), \
		.def = (DEF), .flags = (FL), .min = (MIN), .max = (MAX), __VA_ARGS__           \
	}
#define PQEV_CONF_BOOL(K, T, F, DEF, FL, ...)                                             \
	{                                                                                 \
		.key = (K), .type = PQEV_CT_BOOL, .offset = PQEV_CONF_FIELD_(T, F, bool), \
		.def = (DEF), .flags = (FL), __VA_ARGS__                                  \
	}
#define PQEV_CONF_ENUM(K, T, F, DEF, FL, MAP, ...)                                       \
	{                                                                                \
		.key = (K), .type = PQEV_CT_ENUM, .offset = PQEV_CONF_FIELD_(T, F, int), \
		.def = (DEF), .flags = (FL), .map = (MAP), __VA_ARGS__                   \
	}
#define PQEV_CONF_LIST(K, T, F, DEF, FL, ...)                                                     \
	{                                                                                         \
		.key = (K), .type = PQEV_CT_LIST, .offset = PQEV_CONF_FIELD_(T, F, PqevConfList), \
		.def = (DEF), .flags = (FL), __VA_ARGS__                                          \
	}
#define PQEV_CONF_END       \
	{                   \
		.key = NULL \
	}

#endif
