/*
 * Argument helpers: messages, command options, names and numbers.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "pgqctl.h"

char ctl_last_err[1024];

void ctl_err(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("pgqctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	va_start(ap, fmt);
	vsnprintf(ctl_last_err, sizeof(ctl_last_err), fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int ctl_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("pgqctl: ", stderr);
	if (cmd)
		fprintf(stderr, "%s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (cmd)
		fprintf(stderr, "\nTry 'pgqctl help %s'.\n", cmd);
	else
		fputs("\nTry 'pgqctl --help'.\n", stderr);
	return CTL_EXIT_USAGE;
}

/* Names pgqctl creates (queues, consumers). PgQ itself takes any text: names only
   ever reach the server as parameters and the event tables are named by queue id,
   so quotes, semicolons, spaces and UTF-8 are fine. Refused is what cannot work or
   cannot be shown: empty, control characters (the one-name-a-line output of
   complete, and the tables, would break), and names the unique indexes on
   pgq.queue / pgq.consumer cannot reliably hold. */
bool ctl_check_new_name(const char *what, const char *name)
{
	size_t n = strlen(name);

	if (n == 0) {
		ctl_err("%s name is empty", what);
		return false;
	}
	if (n > CTL_NAME_MAX) {
		ctl_err("%s name %s is %zu bytes long: at most %d fit pgq's unique index on "
			"names",
			what, ctl_q(name), n, CTL_NAME_MAX);
		return false;
	}
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		if (*p < ' ' || *p == 0x7f) {
			ctl_err("%s name %s holds a control character (byte 0x%02x): it "
				"would break pgqctl's one-name-a-line output",
				what, ctl_q(name), *p);
			return false;
		}
	return true;
}

/* Plain when the name is made of the usual characters, else in double quotes with
   \", \\ and \xNN escapes; names over 80 bytes are shortened (at a UTF-8
   boundary) with "...". CTL_Q_HELD results stay valid at once: one message may
   show that many names (failover's longest shows 8). */
static const char *quote_name(const char *name, bool always)
{
	static char *ring[CTL_Q_HELD];
	static int next;
	size_t n = strlen(name), cut = n, len = 0;
	bool plain = n > 0 && !always;
	char *s;

	for (const unsigned char *p = (const unsigned char *)name; plain && *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || strchr("_.-:/@+", *p)))
			plain = false;
	if (n > 80) {
		cut = 77;
		/* back to a character's start, at most 3 bytes (a run of stray
		   continuation bytes would otherwise cut the whole name away) */
		while (cut > 74 && ((unsigned char)name[cut] & 0xC0) == 0x80)
			cut--;
		plain = false;
	}
	s = malloc(cut * 4 + 8);
	if (!s)
		abort();
	if (!plain)
		s[len++] = '"';
	for (size_t i = 0; i < cut; i++) {
		unsigned char c = (unsigned char)name[i];

		if (!plain && (c == '"' || c == '\\')) {
			s[len++] = '\\';
			s[len++] = (char)c;
		} else if (c < ' ' || c == 0x7f) {
			len += (size_t)sprintf(s + len, "\\x%02x", c);
		} else {
			s[len++] = (char)c;
		}
	}
	if (cut < n)
		len += (size_t)sprintf(s + len, "...");
	if (!plain)
		s[len++] = '"';
	s[len] = '\0';
	free(ring[next]);
	ring[next] = s;
	next = (next + 1) % CTL_Q_HELD;
	return s;
}

const char *ctl_q(const char *name)
{
	return quote_name(name, false);
}

const char *ctl_qq(const char *name)
{
	return quote_name(name, true);
}

bool ctl_parse_i64(const char *opt, const char *s, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		ctl_err("%s: \"%s\" is not a number in %lld..%lld", opt, s, min, max);
		return false;
	}
	*out = v;
	return true;
}

int ctl_parse_opts(CtlCtx *ctx, int argc, char **argv, const CtlOpt *opts, char **pos, int *npos)
{
	bool only_pos = false;

	*npos = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const CtlOpt *o = NULL;
		const char *eq;
		size_t nlen;

		if (only_pos || a[0] != '-' || strcmp(a, "-") == 0 || a[1] != '-') {
			/* a negative number or a single-dash word is positional too */
			if (*npos == CTL_MAX_ARGS)
				return ctl_usage(argv[0], "more than %d arguments", CTL_MAX_ARGS);
			pos[(*npos)++] = argv[i];
			continue;
		}
		if (strcmp(a, "--") == 0) {
			only_pos = true;
			continue;
		}
		if (strcmp(a, "--json") == 0) {
			ctx->json = true;
			continue;
		}
		eq = strchr(a, '=');
		nlen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
		for (const CtlOpt *p = opts; p && p->name; p++)
			if (strlen(p->name) == nlen && strncmp(p->name, a + 2, nlen) == 0)
				o = p;
		if (!o)
			return ctl_usage(argv[0], "unknown option %.*s", (int)nlen + 2, a);
		if (!o->takes_value) {
			if (eq)
				return ctl_usage(argv[0], "--%s takes no value", o->name);
			*(bool *)o->dst = true;
			continue;
		}
		if (eq) {
			*(const char **)o->dst = eq + 1;
		} else {
			if (i + 1 >= argc)
				return ctl_usage(argv[0], "--%s needs a value", o->name);
			*(const char **)o->dst = argv[++i];
		}
	}
	return 0;
}
