/*
 * pgqd-ev pieces that need no server: the config table (pgqd's defaults, cluster
 * resolution, validation), the command line, identifier quoting, and that every
 * key is documented in the man page source and the sample ini.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pgqd-ev/pqev_config.h>

#include "cli.h"
#include "pgtest.h"
#include "ticker.h"
#include "ticker_config.h"

static int nerrors, nwarnings;
static char lasterr[512], lastwarn[512];

static void report(const PqevConfDiag *d, void *arg)
{
	if (d->severity == PQEV_CONF_ERROR) {
		nerrors++;
		snprintf(lasterr, sizeof(lasterr), "%s", d->message);
	} else {
		nwarnings++;
		snprintf(lastwarn, sizeof(lastwarn), "%s", d->message);
	}
}

static TickerConfig *load(const char *text)
{
	void *cfg = NULL;

	nerrors = nwarnings = 0;
	lasterr[0] = lastwarn[0] = '\0';
	if (pqev_conf_load_string(&ticker_config_schema, text, "t.ini", NULL, &cfg, report, NULL) <
	    0)
		return NULL;
	return cfg;
}

START_TEST(test_pgqd_defaults)
{
	TickerConfig *c = load("[pgqd]\n");
	const MainCfg *m;

	ck_assert_ptr_nonnull(c);
	m = &c->main;
	ck_assert_str_eq(m->base_connstr, "");
	ck_assert_str_eq(m->initial_database, "template1");
	ck_assert_uint_eq(m->database_list.count, 0);
	ck_assert_uint_eq(m->check_period, 60 * USEC_PER_SEC);
	ck_assert_uint_eq(m->ticker_period, 1 * USEC_PER_SEC);
	ck_assert_uint_eq(m->maint_period, 120 * USEC_PER_SEC);
	ck_assert_uint_eq(m->retry_period, 30 * USEC_PER_SEC);
	ck_assert_uint_eq(m->stats_period, 30 * USEC_PER_SEC);
	ck_assert_uint_eq(m->connection_lifetime, 3600 * USEC_PER_SEC);
	ck_assert_str_eq(m->syslog_ident, "pgqd");
	ck_assert_uint_eq(m->wake_min_interval, 5 * USEC_PER_MSEC);
	ck_assert_uint_eq(m->wake_max_interval, 50 * USEC_PER_MSEC);
	ck_assert_int_eq(m->wake_busy_rate, 2000);
	ck_assert_int_eq(m->syslog, TICKER_SYSLOG_AUTO);
	ck_assert(ticker_config_main_is_cluster(c));
	ck_assert_uint_eq(ticker_config_clusters(c, NULL, 0), 1);
	ticker_config_free(c);
	/* a wake_min_interval above the default bound, as older files may set it,
	   raises the bound instead of being refused */
	c = load("[pgqd]\nwake_min_interval = 0.1\n");
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->main.wake_max_interval, 100 * USEC_PER_MSEC);
	ticker_config_free(c);
}
END_TEST

START_TEST(test_pgqd_values)
{
	TickerConfig *c =
		load("[pgqd]\nsyslog = 1\nsyslog_facility = local3\n"
		     "database_list = a, b ,c\nticker_period = 0.05\nstats_period = 0.5\n");

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->main.syslog, TICKER_SYSLOG_ON);
	ck_assert_uint_eq(c->main.database_list.count, 3);
	ck_assert_str_eq(c->main.database_list.items[1], "b");
	ck_assert_uint_eq(c->main.ticker_period, 50 * USEC_PER_MSEC);
	ck_assert_uint_eq(c->main.stats_period, 500 * USEC_PER_MSEC);
	ticker_config_free(c);
}
END_TEST

START_TEST(test_clusters)
{
	ClusterView v[4];
	TickerConfig *c = load("[pgqd]\nticker_period = 2\n"
			       "[cluster east]\nbase_connstr = host=e\nticker_period = 0.5\n"
			       "[cluster west]\nbase_connstr = host=w\ndatabase_list = x\n");

	ck_assert_ptr_nonnull(c);
	/* [pgqd] sets none of the cluster keys: only the two clusters are ticked */
	ck_assert(!ticker_config_main_is_cluster(c));
	ck_assert_uint_eq(ticker_config_clusters(c, v, 4), 2);
	ck_assert_str_eq(v[0].name, "east");
	ck_assert_uint_eq(v[0].ticker_period, 500 * USEC_PER_MSEC);
	ck_assert_uint_eq(v[0].maint_period, 120 * USEC_PER_SEC);
	ck_assert_uint_eq(v[0].database_list->count, 0);
	ck_assert_str_eq(v[1].name, "west");
	ck_assert_uint_eq(v[1].ticker_period, 2 * USEC_PER_SEC);
	ck_assert_uint_eq(v[1].database_list->count, 1);
	ticker_config_free(c);

	c = load("[pgqd]\nbase_connstr = host=local\n[cluster east]\nbase_connstr = host=e\n");
	ck_assert_ptr_nonnull(c);
	ck_assert(ticker_config_main_is_cluster(c));
	ck_assert_uint_eq(ticker_config_clusters(c, v, 4), 2);
	ck_assert_str_eq(v[0].name, "");
	ck_assert_str_eq(v[0].base_connstr, "host=local");
	ticker_config_free(c);
}
END_TEST

START_TEST(test_bad_configs)
{
	ck_assert_ptr_null(load("[cluster x]\nbase_connstr = a\n"));
	ck_assert_int_ge(nerrors, 1);
	ck_assert_ptr_null(load("[pgqd]\n[cluster x]\ninitial_database = y\n"));
	ck_assert_ptr_nonnull(strstr(lasterr, "base_connstr"));
	ck_assert_ptr_null(load("[pgqd]\nmetrics_listen = localhost\n"));
	ck_assert_ptr_nonnull(strstr(lasterr, "t.ini:2: [pgqd] metrics_listen"));
	ck_assert_ptr_null(load("[pgqd]\nmetrics_listen = 127.0.0.1:99999\n"));
	ck_assert_ptr_null(load("[pgqd]\ndatabase_list = a, b, a\n"));
	ck_assert_ptr_nonnull(strstr(lasterr, "listed twice"));
	ck_assert_ptr_null(load("[pgqd]\nunreachable_action = panic\n"));
	ck_assert_ptr_null(load("[pgqd]\nbackoff_base = 5\nbackoff_cap = 1\n"));
	ck_assert_ptr_null(load("[pgqd]\nwake_min_interval = 0.1\nwake_max_interval = 0.05\n"));
	ck_assert_ptr_null(load("[pgqd]\nwake_busy_rate = -1\n"));
	ck_assert_ptr_null(load("[pgqd]\nticker_period = -1\n"));
	ck_assert_ptr_nonnull(strstr(lasterr, "must be at least 0.01 seconds"));
	ck_assert_ptr_null(load("[pgqd]\nsyslog = 1x\n"));
	ck_assert_ptr_null(load("[pgqd]\nstartup_grace = -1\n"));
	ck_assert_ptr_null(load("[pgqd]\nsyslog_facility = nosuch\n"));
	ck_assert_ptr_null(load("[pgqd]\n[cluster a/b]\nbase_connstr = x\n"));
}
END_TEST

static int parse(TickerCli *cli, int argc, const char **argv)
{
	return cli_parse(argc, (char **)argv, cli);
}

START_TEST(test_cli)
{
	TickerCli cli;
	const char *a1[] = {"pgqd-ev", "-v", "-v", "-q", "x.ini"};
	const char *a2[] = {"pgqd-ev", "-s", "x.ini"};
	const char *a3[] = {"pgqd-ev", "x.ini", "--ini"};
	const char *a4[] = {"pgqd-ev", "--check", "x.ini"};
	const char *a5[] = {"pgqd-ev", "-r", "-d", "x.ini"};
	const char *a6[] = {"pgqd-ev", "a.ini", "b.ini"};

	ck_assert_int_eq(parse(&cli, 5, a1), 0);
	ck_assert_int_eq(cli.action, CLI_RUN);
	ck_assert_int_eq(cli.verbose, 2);
	ck_assert(cli.quiet);
	ck_assert_str_eq(cli.config, "x.ini");
	ck_assert_int_eq(parse(&cli, 3, a2), 0);
	ck_assert_int_eq(cli.action, CLI_SIGNAL);
	ck_assert_int_eq(cli.signo, SIGINT);
	ck_assert_int_eq(parse(&cli, 3, a3), 0);
	ck_assert_int_eq(cli.action, CLI_INI);
	ck_assert_int_eq(parse(&cli, 3, a4), 0);
	ck_assert_int_eq(cli.action, CLI_CHECK);
	ck_assert_int_eq(parse(&cli, 4, a5), 0);
	ck_assert_int_eq(cli.signo, SIGHUP);
	ck_assert(cli.daemon);
	ck_assert_int_eq(parse(&cli, 3, a6), -1);
}
END_TEST

START_TEST(test_quote_fqname)
{
	char *q = maint_quote_fqname("pgq.maint_rotate_tables_step1");

	ck_assert_str_eq(q, "\"pgq\".\"maint_rotate_tables_step1\"");
	free(q);
	q = maint_quote_fqname("My\"Schema.t");
	ck_assert_str_eq(q, "\"My\"\"Schema\".\"t\"");
	free(q);
	q = maint_quote_fqname("plain");
	ck_assert_str_eq(q, "\"plain\"");
	free(q);
}
END_TEST

static char *slurp(const char *rel)
{
	char path[1024];
	const char *src = getenv("PGQD_TEST_SRCDIR");
	FILE *f;
	char *buf;
	long n;

	snprintf(path, sizeof(path), "%s/%s", src ? src : ".", rel);
	f = fopen(path, "r");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* What pgqd 3.5 runs must load, with pgqd's meaning (its values as `pgqd -s` took them). */
START_TEST(test_pgqd_ini_unchanged)
{
	TickerConfig *c;
	char *text = malloc(16384);
	size_t o;

	ck_assert_ptr_nonnull(text);
	o = (size_t)snprintf(text, 16384, "[pgqd]\ndatabase_list = ");
	for (int i = 0; i < 213; i++)
		o += (size_t)snprintf(text + o, 16384 - o, "%sdb_%03d", i ? ", " : "", i);
	snprintf(text + o, 16384 - o,
		 "\nsyslog = 2\nticker_period = 1e12\ncheck_period = 0\nretry_period = 0x10\n");
	c = load(text);
	free(text);
	ck_assert_msg(c != NULL, "%s", lasterr);
	ck_assert_uint_eq(c->main.database_list.count, 213);
	ck_assert_int_eq(c->main.syslog, TICKER_SYSLOG_ON);
	/* absurd values are moved into the range, with a warning each */
	ck_assert_uint_eq(c->main.ticker_period, 3600 * USEC_PER_SEC);
	ck_assert_uint_eq(c->main.check_period, USEC_PER_SEC / 10);
	ck_assert_uint_eq(c->main.retry_period, 16 * USEC_PER_SEC);
	ck_assert_int_eq(nwarnings, 2);
	ticker_config_free(c);

	c = load("[pgqd]\nsyslog = -1\n");
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->main.syslog, TICKER_SYSLOG_ON);
	ticker_config_free(c);
	c = load("[pgqd]\nsyslog = 0x0\n");
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->main.syslog, TICKER_SYSLOG_OFF);
	ticker_config_free(c);
	c = load("[pgqd]\nsyslog = 99999999999999999999\n");
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->main.syslog, TICKER_SYSLOG_ON);
	ticker_config_free(c);
	c = load("[pgqd]\n");
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->main.syslog, TICKER_SYSLOG_AUTO);
	ck_assert_uint_eq(c->main.tick_stale_timeout, 60 * USEC_PER_SEC);
	ticker_config_free(c);
}
END_TEST

START_TEST(test_every_key_documented)
{
	char *man = slurp("docs/pgqd-ev.8.md");
	char *ini = slurp("conf/pgqd-ev.ini");
	char needle[128];

	/* the embedded sample is the file */
	ck_assert_str_eq(ticker_sample_ini, ini);
	for (const PqevConfSection *s = ticker_config_schema.sections; s->name; s++) {
		for (const PqevConfKey *k = s->keys; k->key; k++) {
			snprintf(needle, sizeof(needle), "`%s`", k->key);
			ck_assert_msg(strstr(man, needle) != NULL, "%s not in pgqd-ev.8.md",
				      k->key);
			snprintf(needle, sizeof(needle), "%s = ", k->key);
			ck_assert_msg(strstr(ini, needle) != NULL, "%s not in pgqd-ev.ini", k->key);
		}
	}
	free(man);
	free(ini);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ticker-unit");
	TCase *tc = pgt_tcase("unit", 30);

	tcase_add_test(tc, test_pgqd_defaults);
	tcase_add_test(tc, test_pgqd_values);
	tcase_add_test(tc, test_clusters);
	tcase_add_test(tc, test_bad_configs);
	tcase_add_test(tc, test_pgqd_ini_unchanged);
	tcase_add_test(tc, test_cli);
	tcase_add_test(tc, test_quote_fqname);
	tcase_add_test(tc, test_every_key_documented);
	suite_add_tcase(s, tc);
	return pgt_main(s, NULL);
}
