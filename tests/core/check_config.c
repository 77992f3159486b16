/* Unit tests of the declarative config engine, with a test table (no server). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <pgqd-ev/pqev_config.h>

#include "pgtest.h"

typedef struct TCluster {
	char *name;
	char *connstr;
	PqevConfList dbs;
	usec_t period;
	int weight;
} TCluster;

typedef struct TCfg {
	char *base_connstr;
	char *logfile;
	char *pidfile;
	char *password;
	PqevConfList database_list;
	int max_connects;
	usec_t ticker_period;
	usec_t optional_period;
	usec_t clamped_period;
	bool syslog;
	int facility;
	int mode;
	PqevConfArray clusters;
} TCfg;

enum { MODE_FAST = 1, MODE_SAFE = 2 };
static const PqevConfEnumItem modes[] = {{"fast", MODE_FAST}, {"safe", MODE_SAFE}, {NULL, 0}};

static bool even_only(const void *field, char *err, size_t errlen)
{
	if (*(const int *)field % 2 == 0)
		return true;
	snprintf(err, errlen, "must be even");
	return false;
}

static const PqevConfKey main_keys[] = {
	PQEV_CONF_STRING("base_connstr", TCfg, base_connstr, "", 0),
	PQEV_CONF_PATH("logfile", TCfg, logfile, NULL, 0),
	PQEV_CONF_PATH("pidfile", TCfg, pidfile, NULL, PQEV_CF_NO_RELOAD),
	PQEV_CONF_STRING("password", TCfg, password, NULL, PQEV_CF_SECRET),
	PQEV_CONF_LIST("database_list", TCfg, database_list, "", 0),
	PQEV_CONF_INT("max_connects", TCfg, max_connects, "20", 0, 1, 1000, .validate = even_only),
	PQEV_CONF_SECONDS("ticker_period", TCfg, ticker_period, "1", 0, 0.01, 3600),
	PQEV_CONF_SECONDS("optional_period", TCfg, optional_period, NULL, 0, 0, 0),
	PQEV_CONF_SECONDS("clamped_period", TCfg, clamped_period, "1", PQEV_CF_CLAMP, 0.1, 60),
	PQEV_CONF_BOOL("syslog", TCfg, syslog, "1", 0),
	PQEV_CONF_ENUM("syslog_facility", TCfg, facility, "daemon", 0, pqev_conf_syslog_facilities),
	PQEV_CONF_ENUM("mode", TCfg, mode, "safe", PQEV_CF_NO_RELOAD, modes),
	PQEV_CONF_END,
};

static const PqevConfKey cluster_keys[] = {
	PQEV_CONF_STRING("connstr", TCluster, connstr, NULL, PQEV_CF_REQUIRED),
	PQEV_CONF_LIST("databases", TCluster, dbs, NULL, 0),
	PQEV_CONF_SECONDS("period", TCluster, period, NULL, 0, 0, 60),
	PQEV_CONF_INT("weight", TCluster, weight, "1", PQEV_CF_NO_RELOAD, 0, 0),
	PQEV_CONF_END,
};

static void cluster_check(void *section, const char *name, PqevConfCheck *chk)
{
	TCluster *c = section;
	if (strcmp(name, "forbidden") == 0)
		pqev_conf_check_error(chk, "connstr", "cluster %s is not allowed here", name);
	if (c->dbs.count == 0 && pqev_conf_check_key_set(chk, "databases"))
		pqev_conf_check_warning(chk, "databases", "empty list");
}

static const PqevConfSection sections[] = {
	{.name = "pgqd", .flags = PQEV_CS_REQUIRED, .offset = 0, .keys = main_keys},
	{.name = "cluster",
	 .flags = PQEV_CS_REPEATED,
	 .offset = offsetof(TCfg, clusters),
	 .elem_size = sizeof(TCluster),
	 .name_offset = offsetof(TCluster, name),
	 .keys = cluster_keys,
	 .check = cluster_check},
	{.name = NULL},
};

static const PqevConfSchema schema = {.size = sizeof(TCfg), .sections = sections};

/* Collected diagnostics. */
static char diags[64][1100];
static int ndiags, nerrors, nwarnings;

static void collect(const PqevConfDiag *d, void *arg)
{
	(void)arg;
	if (d->severity == PQEV_CONF_ERROR)
		nerrors++;
	else
		nwarnings++;
	if (ndiags < 64)
		snprintf(diags[ndiags++], sizeof(diags[0]), "%s %s",
			 d->severity == PQEV_CONF_ERROR ? "E" : "W", d->message);
}

static void reset(void)
{
	ndiags = nerrors = nwarnings = 0;
}

/* True if some diagnostic contains every one of the given fragments. */
static bool has_diag(const char *a, const char *b)
{
	for (int i = 0; i < ndiags; i++)
		if (strstr(diags[i], a) && (!b || strstr(diags[i], b)))
			return true;
	return false;
}

static void dump(void)
{
	for (int i = 0; i < ndiags; i++)
		fprintf(stderr, "diag: %s\n", diags[i]);
}

static TCfg *load_ok(const char *text)
{
	void *out = NULL;
	int r;
	reset();
	r = pqev_conf_load_string(&schema, text, "t.ini", NULL, &out, collect, NULL);
	if (r != 0)
		dump();
	ck_assert_int_eq(r, 0);
	ck_assert_ptr_nonnull(out);
	return out;
}

static void load_fail(const char *text)
{
	void *out = (void *)1;
	int r;
	reset();
	r = pqev_conf_load_string(&schema, text, "t.ini", NULL, &out, collect, NULL);
	dump();
	ck_assert_int_eq(r, -EINVAL);
	ck_assert_ptr_null(out);
	ck_assert_int_gt(nerrors, 0);
}

START_TEST(test_defaults)
{
	TCfg *c = load_ok("[pgqd]\n");
	ck_assert_str_eq(c->base_connstr, "");
	ck_assert_ptr_null(c->logfile);
	ck_assert_ptr_null(c->password);
	ck_assert_uint_eq(c->database_list.count, 0);
	ck_assert_int_eq(c->max_connects, 20);
	ck_assert_uint_eq(c->ticker_period, USEC_PER_SEC);
	ck_assert_uint_eq(c->optional_period, PQEV_CONF_UNSET_USEC);
	ck_assert(c->syslog);
	ck_assert_int_eq(c->facility, LOG_DAEMON);
	ck_assert_int_eq(c->mode, MODE_SAFE);
	ck_assert_uint_eq(c->clusters.count, 0);
	ck_assert_int_eq(nerrors + nwarnings, 0);
	pqev_conf_free(&schema, c);
}
END_TEST

START_TEST(test_every_type)
{
	TCfg *c;
	setenv("HOME", "/home/tester", 1);
	c = load_ok("; comment\n"
		    "# another\n"
		    "[pgqd]\n"
		    "base_connstr = host=/tmp port=5432\n"
		    "logfile = ~/log/pgqd.log\n"
		    "pidfile: /run/x.pid\n"
		    "database_list = a, b ,,c\n"
		    "max_connects = 64\n"
		    "ticker_period = 0.25\n"
		    "optional_period = 90\n"
		    "syslog = off\n"
		    "syslog_facility = LOCAL3\n"
		    "mode = fast\n");
	ck_assert_str_eq(c->base_connstr, "host=/tmp port=5432");
	ck_assert_str_eq(c->logfile, "/home/tester/log/pgqd.log");
	ck_assert_str_eq(c->pidfile, "/run/x.pid");
	ck_assert_uint_eq(c->database_list.count, 3);
	ck_assert_str_eq(c->database_list.items[0], "a");
	ck_assert_str_eq(c->database_list.items[1], "b");
	ck_assert_str_eq(c->database_list.items[2], "c");
	ck_assert_int_eq(c->max_connects, 64);
	ck_assert_uint_eq(c->ticker_period, 250000);
	ck_assert_uint_eq(c->optional_period, 90 * USEC_PER_SEC);
	ck_assert(!c->syslog);
	ck_assert_int_eq(c->facility, LOG_LOCAL3);
	ck_assert_int_eq(c->mode, MODE_FAST);
	pqev_conf_free(&schema, c);

	c = load_ok("[pgqd]\nlogfile = ~root/x\n");
	ck_assert_str_eq(c->logfile, "/root/x");
	pqev_conf_free(&schema, c);
}
END_TEST

START_TEST(test_unknown_key_names_key_section_line)
{
	load_fail("[pgqd]\n\nbogus_key = 1\nticker_period = 2\n");
	ck_assert_int_eq(nerrors, 1);
	ck_assert(has_diag("t.ini:3: [pgqd] bogus_key: unknown key", NULL));
}
END_TEST

START_TEST(test_bad_values)
{
	load_fail("[pgqd]\n"
		  "max_connects = 12x\n"
		  "max_connects = 0\n"
		  "ticker_period = -1\n"
		  "ticker_period = 1s\n"
		  "ticker_period = 9999\n"
		  "syslog = maybe\n"
		  "syslog_facility = kernel\n"
		  "logfile = ~nosuchuser_pgqdev/x\n"
		  "password = sekrit pass\n"
		  "optional_period = -0.5\n"
		  "[cluster a]\nconnstr = x\nperiod = 0.001\nweight = 99999999999\n");
	ck_assert(has_diag(
		"t.ini:2: [pgqd] max_connects: invalid value \"12x\": expected a whole number",
		NULL));
	ck_assert(has_diag("t.ini:3: [pgqd] max_connects", "must be at least 1"));
	ck_assert(has_diag("t.ini:4: [pgqd] ticker_period: invalid value \"-1\"",
			   "must be at least 0.01 seconds"));
	ck_assert(has_diag("t.ini:5: [pgqd] ticker_period", "expected a number of seconds"));
	/* ranges read as people write them, not 3.6e+03 */
	ck_assert(has_diag("t.ini:6: [pgqd] ticker_period",
			   "must be at most 3600 seconds (0.01 to 3600)"));
	ck_assert(has_diag("t.ini:7: [pgqd] syslog", "expected a boolean"));
	ck_assert(has_diag("t.ini:8: [pgqd] syslog_facility", "expected one of: auth, authpriv"));
	ck_assert(has_diag("t.ini:9: [pgqd] logfile", "cannot expand"));
	ck_assert(has_diag("t.ini:11: [pgqd] optional_period", "must be at least 0 seconds"));
	ck_assert(has_diag("t.ini:15: [cluster a] weight", "too large"));
	/* the period passed its range check (0..60) */
	ck_assert(!has_diag("t.ini:14", NULL));
	ck_assert_int_eq(nerrors, 10);
	/* no secret value in any message, even though password itself is valid */
	ck_assert(!has_diag("sekrit", NULL));
}
END_TEST

/* Numbers as pgqd reads them (strtod); out-of-range values of CLAMP keys warn. */
START_TEST(test_pgqd_numbers)
{
	TCfg *c = load_ok("[pgqd]\nticker_period = 1e1\noptional_period = 0x10\n"
			  "clamped_period = 1e12\n");
	ck_assert_uint_eq(c->ticker_period, 10 * USEC_PER_SEC);
	ck_assert_uint_eq(c->optional_period, 16 * USEC_PER_SEC);
	ck_assert_uint_eq(c->clamped_period, 60 * USEC_PER_SEC);
	ck_assert(has_diag("W t.ini:4: [pgqd] clamped_period: value \"1e12\"",
			   "above the largest useful value; using 60 seconds"));
	ck_assert_int_eq(nerrors, 0);
	pqev_conf_free(&schema, c);

	c = load_ok("[pgqd]\nclamped_period = 0\nticker_period = 0.29\n");
	ck_assert_uint_eq(c->clamped_period, 100000);
	ck_assert_uint_eq(c->ticker_period, 290000);
	ck_assert(has_diag("W t.ini:2: [pgqd] clamped_period", "using 0.1 seconds"));
	pqev_conf_free(&schema, c);

	c = load_ok("[pgqd]\nclamped_period = inf\n");
	ck_assert_uint_eq(c->clamped_period, 60 * USEC_PER_SEC);
	pqev_conf_free(&schema, c);

	load_fail("[pgqd]\nclamped_period = -1\noptional_period = nan\n"
		  "optional_period = 1e300\n");
	ck_assert(has_diag("t.ini:2: [pgqd] clamped_period", "must be at least 0.1 seconds"));
	ck_assert(has_diag("t.ini:3: [pgqd] optional_period", "expected a number of seconds"));
	ck_assert(has_diag("t.ini:4: [pgqd] optional_period", "too large"));
}
END_TEST

START_TEST(test_secret_hidden_in_errors)
{
	static const PqevConfKey keys[] = {
		PQEV_CONF_INT("pin", TCluster, weight, NULL, PQEV_CF_SECRET, 0, 9),
		PQEV_CONF_END,
	};
	static const PqevConfSection secs[] = {{.name = "s", .keys = keys}, {.name = NULL}};
	static const PqevConfSchema sch = {.size = sizeof(TCluster), .sections = secs};
	void *out;
	reset();
	ck_assert_int_eq(pqev_conf_load_string(&sch, "[s]\npin = 12345\n", "s.ini", NULL, &out,
					       collect, NULL),
			 -EINVAL);
	dump();
	ck_assert(has_diag("s.ini:2: [s] pin: invalid value (hidden)", NULL));
	ck_assert(!has_diag("12345", NULL));
}
END_TEST

START_TEST(test_syntax_errors_each_reported)
{
	load_fail("[pgqd]\n"
		  "this line has no equals sign\n"
		  "ticker_period = 1\n"
		  "another bad line\n"
		  "[unclosed\n"
		  "%include other.ini\n"
		  "[pgqd]\n"
		  " = orphan value\n");
	ck_assert(has_diag("t.ini:2: [pgqd] syntax error", NULL));
	ck_assert(has_diag("t.ini:4: [pgqd] syntax error", NULL));
	ck_assert(has_diag("t.ini:5: section header without closing ']'", NULL));
	ck_assert(has_diag("t.ini:6: %include other.ini: No such file or directory", NULL));
	ck_assert(has_diag("t.ini:8: [pgqd] missing key name before '='", NULL));
	ck_assert_int_eq(nerrors, 5);
}
END_TEST

START_TEST(test_sections)
{
	/* unknown section: one error, its keys are not reported one by one */
	load_fail("[pgqd]\n[nosuch]\na = 1\nb = 2\n");
	ck_assert_int_eq(nerrors, 1);
	ck_assert(has_diag("t.ini:2: [nosuch] unknown section", NULL));

	load_fail("ticker_period = 1\n[pgqd]\n");
	ck_assert(has_diag("t.ini:1: ticker_period: key outside of any section", NULL));

	load_fail("[cluster a]\nconnstr = x\n");
	ck_assert(has_diag("t.ini: section [pgqd] is missing", NULL));

	load_fail("[pgqd] trailing\n");
	ck_assert(has_diag("t.ini:1: unexpected text after the section header", NULL));

	/* a single section given twice merges, like pgqd */
	TCfg *c = load_ok("[pgqd]\nmax_connects = 4\n[pgqd]\nsyslog = 0\n");
	ck_assert_int_eq(c->max_connects, 4);
	ck_assert(!c->syslog);
	pqev_conf_free(&schema, c);
}
END_TEST

START_TEST(test_repeated_sections)
{
	TCluster *a, *b, *e;
	TCfg *c = load_ok("[pgqd]\n"
			  "[cluster east]\n"
			  "connstr = host=10.0.0.1\n"
			  "databases = d1, d2\n"
			  "[cluster:west]\n"
			  "connstr = host=10.0.0.2\n"
			  "period = 0.5\n"
			  "[cluster  empty one ]\n"
			  "connstr = host=10.0.0.3\n");
	ck_assert_uint_eq(c->clusters.count, 3);
	a = PQEV_CONF_ARRAY_AT(c->clusters, TCluster, 0);
	b = PQEV_CONF_ARRAY_AT(c->clusters, TCluster, 1);
	e = PQEV_CONF_ARRAY_AT(c->clusters, TCluster, 2);
	ck_assert_str_eq(a->name, "east");
	ck_assert_str_eq(a->connstr, "host=10.0.0.1");
	ck_assert_uint_eq(a->dbs.count, 2);
	ck_assert_str_eq(a->dbs.items[1], "d2");
	ck_assert_uint_eq(a->period, PQEV_CONF_UNSET_USEC);
	ck_assert_int_eq(a->weight, 1);
	ck_assert_str_eq(b->name, "west");
	ck_assert_uint_eq(b->period, 500000);
	ck_assert_str_eq(e->name, "empty one");
	pqev_conf_free(&schema, c);

	load_fail("[pgqd]\n[cluster a]\nconnstr=x\n[cluster:a]\nconnstr=y\n");
	ck_assert(
		has_diag("t.ini:4: [cluster:a] duplicate section, first defined at line 2", NULL));

	/* names become metric labels and JSON strings: UTF-8 only */
	load_fail("[pgqd]\n[cluster caf\xe9]\nconnstr=x\n[cluster caf\xc3\xa9]\nconnstr=y\n");
	ck_assert(has_diag("t.ini:2: section name is not valid UTF-8", NULL));
	ck_assert_int_eq(nerrors, 1);

	load_fail("[pgqd]\n[cluster]\nconnstr=x\n");
	ck_assert(has_diag("t.ini:2: [cluster] section needs a name", NULL));
	ck_assert_int_eq(nerrors, 1);

	/* required key missing: reported at the section header */
	load_fail("[pgqd]\n[cluster b]\nperiod = 1\n");
	ck_assert(has_diag("t.ini:2: [cluster b] connstr: required key is missing", NULL));

	/* section validator: error at the key's line; warning does not fail */
	load_fail("[pgqd]\n[cluster forbidden]\n\nconnstr = x\n");
	ck_assert(has_diag("t.ini:4: [cluster forbidden] connstr: cluster forbidden is not allowed",
			   NULL));
	c = load_ok("[pgqd]\n[cluster w]\nconnstr = x\ndatabases = ,\n");
	ck_assert(has_diag("W t.ini:4: [cluster w] databases: empty list", NULL));
	pqev_conf_free(&schema, c);
}
END_TEST

START_TEST(test_key_validator)
{
	load_fail("[pgqd]\n\nmax_connects = 7\n");
	ck_assert(has_diag("t.ini:3: [pgqd] max_connects: must be even", NULL));
}
END_TEST

/* No line-length limit (pgqd ticked 213 databases from one database_list line),
 * and leading whitespace never makes a line a continuation: it is a key, as in pgqd. */
START_TEST(test_long_lines_and_indentation)
{
	size_t cap = 64 * 1024, o;
	char *text = malloc(cap);
	TCfg *c;

	ck_assert_ptr_nonnull(text);
	o = (size_t)snprintf(text, cap, "[pgqd]\ndatabase_list = ");
	for (int i = 0; i < 213; i++)
		o += (size_t)snprintf(text + o, cap - o, "%sdatabase_number_%03d", i ? ", " : "",
				      i);
	snprintf(text + o, cap - o, "\n  max_connects = 2\n\tsyslog = 0\n");
	ck_assert_uint_gt(strlen(text), 4000);
	c = load_ok(text);
	ck_assert_uint_eq(c->database_list.count, 213);
	ck_assert_str_eq(c->database_list.items[212], "database_number_212");
	ck_assert_int_eq(c->max_connects, 2);
	ck_assert(!c->syslog);
	pqev_conf_free(&schema, c);
	free(text);

	/* an indented line without '=' is a syntax error, not a continued value */
	load_fail("[pgqd]\nbase_connstr = host=10.1.2.3\n    port=5433 user=ticker\n"
		  "    sslmode\n");
	ck_assert(has_diag("t.ini:3: [pgqd] port: unknown key", NULL));
	ck_assert(has_diag("t.ini:4: [pgqd] syntax error", NULL));
}
END_TEST

/* A ';' or '#' inside a value is part of it, as in pgqd (a password may hold " ;"). */
START_TEST(test_crlf_bom_semicolon_in_value)
{
	TCfg *c = load_ok("\xEF\xBB\xBF[pgqd]\r\n"
			  "base_connstr = password='a ;b' # x\r\n"
			  "   # indented comment\r\n"
			  "   ; another\r\n"
			  "syslog = no");
	ck_assert_str_eq(c->base_connstr, "password='a ;b' # x");
	ck_assert(!c->syslog);
	pqev_conf_free(&schema, c);

	load_fail("[pgqd]\nmax_connects = 6 ; six\n");
	ck_assert(has_diag("t.ini:2: [pgqd] max_connects: invalid value \"6 ; six\"", NULL));
}
END_TEST

START_TEST(test_duplicate_key_warns)
{
	TCfg *c = load_ok("[pgqd]\nmax_connects = 4\nmax_connects = 8\n");
	ck_assert_int_eq(c->max_connects, 8);
	ck_assert(has_diag("W t.ini:3: [pgqd] max_connects: set again (first at line 2)", NULL));
	pqev_conf_free(&schema, c);
}
END_TEST

START_TEST(test_reload_semantics)
{
	TCfg *old = load_ok("[pgqd]\npidfile = /run/a.pid\nmax_connects = 4\nmode = fast\n"
			    "[cluster a]\nconnstr = x\nweight = 3\n");
	void *fresh = (void *)1;
	TCfg *n;
	int r;

	/* a bad reload: error with line, nothing returned, old untouched */
	reset();
	r = pqev_conf_load_string(&schema, "[pgqd]\nmax_connects = 6\nticker_period = soon\n",
				  "t.ini", old, &fresh, collect, NULL);
	ck_assert_int_eq(r, -EINVAL);
	ck_assert_ptr_null(fresh);
	ck_assert(has_diag("t.ini:3: [pgqd] ticker_period", NULL));
	ck_assert_int_eq(old->max_connects, 4);
	ck_assert_str_eq(old->pidfile, "/run/a.pid");

	/* a good reload into a fresh struct: reloadable keys change, NO_RELOAD keys warn
	 * and keep the running value, a removed key reverts to its default */
	reset();
	r = pqev_conf_load_string(&schema,
				  "[pgqd]\npidfile = /run/b.pid\n"
				  "[cluster a]\nconnstr = y\nweight = 5\n"
				  "[cluster new]\nconnstr = z\nweight = 7\n",
				  "t.ini", old, &fresh, collect, NULL);
	dump();
	ck_assert_int_eq(r, 0);
	n = fresh;
	ck_assert_ptr_ne(n, old);
	ck_assert_int_eq(n->max_connects, 20);
	ck_assert_str_eq(n->pidfile, "/run/a.pid");
	ck_assert(
		has_diag("W t.ini:2: [pgqd] pidfile: changed from \"/run/a.pid\" to \"/run/b.pid\"",
			 "keeping \"/run/a.pid\""));
	ck_assert(has_diag("W t.ini:1: [pgqd] mode: changed from fast to safe", NULL));
	ck_assert_str_eq(PQEV_CONF_ARRAY_AT(n->clusters, TCluster, 0)->connstr, "y");
	ck_assert_int_eq(PQEV_CONF_ARRAY_AT(n->clusters, TCluster, 0)->weight, 3);
	ck_assert(has_diag("W t.ini:5: [cluster a] weight: changed from 3 to 5", NULL));
	ck_assert_int_eq(PQEV_CONF_ARRAY_AT(n->clusters, TCluster, 1)->weight, 7);
	ck_assert_int_eq(nwarnings, 3);
	ck_assert_int_eq(nerrors, 0);
	/* the old struct is still intact for the caller to diff and free */
	ck_assert_int_eq(old->mode, MODE_FAST);
	pqev_conf_free(&schema, old);
	pqev_conf_free(&schema, n);
}
END_TEST

START_TEST(test_file_loading)
{
	char path[] = "/tmp/pqev-config-XXXXXX";
	int fd = mkstemp(path);
	void *out;
	TCfg *c;
	const char *text = "[pgqd]\nmax_connects = 10\nbad = 1\n";

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	reset();
	ck_assert_int_eq(pqev_conf_load_file(&schema, path, NULL, &out, collect, NULL), -EINVAL);
	ck_assert(has_diag(path, ":3: [pgqd] bad: unknown key"));

	fd = open(path, O_WRONLY | O_TRUNC);
	ck_assert_int_eq(write(fd, text, 25), 25);
	close(fd);
	reset();
	ck_assert_int_eq(pqev_conf_load_file(&schema, path, NULL, &out, collect, NULL), 0);
	c = out;
	ck_assert_int_eq(c->max_connects, 10);
	pqev_conf_free(&schema, c);

	/* a NUL byte in a value: refused, naming file and line, never cut short there */
	static const char nul[] = "[pgqd]\nmax_connects = 1\0002\n";
	fd = open(path, O_WRONLY | O_TRUNC);
	ck_assert_int_eq(write(fd, nul, sizeof(nul) - 1), (ssize_t)sizeof(nul) - 1);
	close(fd);
	reset();
	out = NULL;
	ck_assert_int_eq(pqev_conf_load_file(&schema, path, NULL, &out, collect, NULL), -EINVAL);
	ck_assert_ptr_null(out);
	ck_assert_msg(has_diag(path, ":2: line contains a NUL byte"), "diagnostics: %s",
		      ndiags ? diags[0] : "none");
	unlink(path);

	reset();
	ck_assert_int_eq(pqev_conf_load_file(&schema, path, NULL, &out, collect, NULL), -ENOENT);
	ck_assert_ptr_null(out);
	ck_assert(has_diag(path, "cannot read the configuration file: No such file"));
	reset();
	ck_assert_int_eq(pqev_conf_load_file(&schema, "/tmp", NULL, &out, collect, NULL), -EISDIR);
	/* no report function: still fails cleanly */
	ck_assert_int_eq(pqev_conf_load_string(&schema, "junk", "x", NULL, &out, NULL, NULL),
			 -EINVAL);
}
END_TEST

START_TEST(test_parse_helpers)
{
	usec_t u;
	bool b;
	ck_assert_int_eq(pqev_conf_parse_seconds("60", &u), 0);
	ck_assert_uint_eq(u, 60 * USEC_PER_SEC);
	ck_assert_int_eq(pqev_conf_parse_seconds(".5", &u), 0);
	ck_assert_uint_eq(u, 500000);
	ck_assert_int_eq(pqev_conf_parse_seconds("1.0000019", &u), 0);
	ck_assert_uint_eq(u, 1000002); /* rounded to the nearest microsecond */
	ck_assert_int_eq(pqev_conf_parse_seconds("", &u), -EINVAL);
	ck_assert_int_eq(pqev_conf_parse_seconds(".", &u), -EINVAL);
	ck_assert_int_eq(pqev_conf_parse_seconds("1e3", &u), 0);
	ck_assert_uint_eq(u, 1000 * USEC_PER_SEC);
	ck_assert_int_eq(pqev_conf_parse_seconds(" 1", &u), -EINVAL);
	ck_assert_int_eq(pqev_conf_parse_seconds("-1", &u), -EDOM);
	ck_assert_int_eq(pqev_conf_parse_seconds("nan", &u), -EINVAL);
	ck_assert_int_eq(pqev_conf_parse_seconds("99999999999999999999", &u), -ERANGE);
	ck_assert_uint_eq(u, PQEV_CONF_MAX_USEC);
	ck_assert_int_eq(pqev_conf_parse_bool("YES", &b), 0);
	ck_assert(b);
	ck_assert_int_eq(pqev_conf_parse_bool("2", &b), -EINVAL);
}
END_TEST

START_TEST(test_write_effective_config)
{
	TCfg *c = load_ok("[pgqd]\nbase_connstr = host=h password=pw\npassword = sekrit\n"
			  "ticker_period = 1.5\ndatabase_list = a, b\n"
			  "[cluster:e]\nconnstr = x\n");
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	TCfg *again;
	ck_assert_int_eq(pqev_conf_write(&schema, c, f), 0);
	fclose(f);
	ck_assert_str_eq(text, "[pgqd]\n"
			       "base_connstr = host=h password=***\n"
			       "; logfile is unset\n"
			       "; pidfile is unset\n"
			       "password = (hidden)\n"
			       "database_list = a,b\n"
			       "max_connects = 20\n"
			       "ticker_period = 1.5\n"
			       "; optional_period is unset\n"
			       "clamped_period = 1\n"
			       "syslog = on\n"
			       "syslog_facility = daemon\n"
			       "mode = safe\n"
			       "\n"
			       "[cluster e]\n"
			       "connstr = x\n"
			       "databases = \n"
			       "; period is unset\n"
			       "weight = 1\n");
	/* what it writes loads again */
	again = load_ok(text);
	ck_assert_uint_eq(again->ticker_period, c->ticker_period);
	ck_assert_uint_eq(again->clusters.count, 1);
	pqev_conf_free(&schema, again);
	pqev_conf_free(&schema, c);
	free(text);
}
END_TEST

static void put(const char *dir, const char *name, const char *text)
{
	char path[256];
	int fd;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

START_TEST(test_include)
{
	char dir[] = "/tmp/pqev-include-XXXXXX", path[256], sub[256], want[512];
	void *out;
	TCfg *c;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(sub, sizeof(sub), "%s/sub", dir);
	ck_assert_int_eq(mkdir(sub, 0755), 0);
	/* included text continues the current section, like pgqd; relative names
	 * come from the including file's directory */
	put(dir, "main.ini", "[pgqd]\nmax_connects = 4\n%include sub/extra.ini\nsyslog = 0\n");
	put(dir, "sub/extra.ini",
	    "\xEF\xBB\xBFticker_period = 2\n%include more.ini\n"
	    "[cluster a]\nconnstr = x\nbogus = 1\n");
	put(dir, "sub/more.ini", "database_list = d1\n");
	snprintf(path, sizeof(path), "%s/main.ini", dir);
	reset();
	ck_assert_int_eq(pqev_conf_load_file(&schema, path, NULL, &out, collect, NULL), -EINVAL);
	dump();
	snprintf(want, sizeof(want), "%s/sub/extra.ini:5: [cluster a] bogus: unknown key", dir);
	ck_assert(has_diag(want, NULL));
	snprintf(want, sizeof(want), "%s/main.ini:4: [cluster a] syslog: unknown key", dir);
	ck_assert(has_diag(want, NULL));
	ck_assert_int_eq(nerrors, 2);

	put(dir, "sub/extra.ini",
	    "ticker_period = 2\n%include more.ini\n"
	    "[cluster a]\nconnstr = x\n[pgqd]\n");
	reset();
	ck_assert_int_eq(pqev_conf_load_file(&schema, path, NULL, &out, collect, NULL), 0);
	c = out;
	ck_assert_int_eq(c->max_connects, 4);
	ck_assert_uint_eq(c->ticker_period, 2 * USEC_PER_SEC);
	ck_assert_str_eq(c->database_list.items[0], "d1");
	ck_assert_uint_eq(c->clusters.count, 1);
	ck_assert(!c->syslog);
	pqev_conf_free(&schema, c);

	/* a file including itself stops at the depth limit, with its line */
	put(dir, "loop.ini", "%include loop.ini\n[pgqd]\n");
	snprintf(path, sizeof(path), "%s/loop.ini", dir);
	reset();
	ck_assert_int_eq(pqev_conf_load_file(&schema, path, NULL, &out, collect, NULL), -EINVAL);
	snprintf(want, sizeof(want), "%s/loop.ini:1: %%include %s/loop.ini: includes itself", dir,
		 dir);
	ck_assert(has_diag(want, NULL));
	ck_assert_int_eq(nerrors, 1);

	/* a chain deeper than 10 stops with the line of the 11th include */
	for (int i = 0; i <= 11; i++) {
		char name[32], text[64];
		snprintf(name, sizeof(name), "c%d.ini", i);
		snprintf(text, sizeof(text), "%s%%include c%d.ini\n", i == 0 ? "[pgqd]\n" : "",
			 i + 1);
		put(dir, name, text);
	}
	snprintf(path, sizeof(path), "%s/c0.ini", dir);
	reset();
	ck_assert_int_eq(pqev_conf_load_file(&schema, path, NULL, &out, collect, NULL), -EINVAL);
	dump();
	snprintf(want, sizeof(want), "%s/c10.ini:1: %%include nested more than 10 deep", dir);
	ck_assert(has_diag(want, NULL));
	ck_assert_int_eq(nerrors, 1);
	for (int i = 0; i <= 11; i++) {
		snprintf(path, sizeof(path), "%s/c%d.ini", dir, i);
		unlink(path);
	}

	/* an include must be a regular file (never blocks on a pipe or device) */
	reset();
	load_fail("[pgqd]\n%include /dev/stdin\n");
	ck_assert(has_diag("t.ini:2: %include /dev/stdin: not a regular file", NULL));
	/* the loaded file itself may be a pipe */
	{
		int pfd[2];
		const char *text = "[pgqd]\nmax_connects = 6\n";
		char fdpath[64];
		ck_assert_int_eq(pipe(pfd), 0);
		ck_assert_int_eq(write(pfd[1], text, strlen(text)), (ssize_t)strlen(text));
		close(pfd[1]);
		snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", pfd[0]);
		reset();
		ck_assert_int_eq(pqev_conf_load_file(&schema, fdpath, NULL, &out, collect, NULL),
				 0);
		ck_assert_int_eq(((TCfg *)out)->max_connects, 6);
		pqev_conf_free(&schema, out);
		close(pfd[0]);
	}

	reset();
	load_fail("[pgqd]\n%include\n");
	ck_assert(has_diag("t.ini:2: %include needs a file name", NULL));

	snprintf(path, sizeof(path), "%s/main.ini", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/loop.ini", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/sub/extra.ini", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/sub/more.ini", dir);
	unlink(path);
	rmdir(sub);
	rmdir(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("config");
	TCase *tc = pgt_tcase("config", 30);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_every_type);
	tcase_add_test(tc, test_unknown_key_names_key_section_line);
	tcase_add_test(tc, test_bad_values);
	tcase_add_test(tc, test_secret_hidden_in_errors);
	tcase_add_test(tc, test_syntax_errors_each_reported);
	tcase_add_test(tc, test_sections);
	tcase_add_test(tc, test_repeated_sections);
	tcase_add_test(tc, test_key_validator);
	tcase_add_test(tc, test_long_lines_and_indentation);
	tcase_add_test(tc, test_pgqd_numbers);
	tcase_add_test(tc, test_crlf_bom_semicolon_in_value);
	tcase_add_test(tc, test_duplicate_key_warns);
	tcase_add_test(tc, test_reload_semantics);
	tcase_add_test(tc, test_file_loading);
	tcase_add_test(tc, test_parse_helpers);
	tcase_add_test(tc, test_write_effective_config);
	tcase_add_test(tc, test_include);
	suite_add_tcase(s, tc);
	return pgt_main(s, NULL);
}
