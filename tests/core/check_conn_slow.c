/*
 * 500 connections to 500 databases on one loop, bounded by the connect cap:
 * all come up, each answers with its own database, all come back after every
 * backend is terminated at once, and the cap holds throughout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conntest.h"

enum { NDB = 500, CAP = 16 };

static CtConn rec[NDB];
static CtReq req[NDB];
static char names[NDB][64];
static char infos[NDB][600];

static bool all_done(void *arg)
{
	for (int i = 0; i < NDB; i++)
		if (req[i].done < 1)
			return false;
	return true;
}

START_TEST(test_500_databases)
{
	PqevConnConfig cfg;
	/* from one session: a session per CREATE DATABASE (pgt_db_new_empty) costs
	   several times as much on a loaded machine, and with 500 of them the
	   setup alone neared the test's timeout */
	PGconn *pg = pgt_connect("postgres");
	int64_t t_setup = pgt_now_ms();

	for (int i = 0; i < NDB; i++) {
		char sql[128];

		snprintf(names[i], sizeof(names[i]), "c%03d", i);
		snprintf(sql, sizeof(sql), "create database c%03d template template0", i);
		pgt_exec(pg, sql);
		snprintf(infos[i], sizeof(infos[i]), "%s", pgt_connstr(names[i], i % 2 == 1));
	}
	PQfinish(pg);
	fprintf(stderr, "# %d databases made in %lld ms\n", NDB,
		(long long)(pgt_now_ms() - t_setup));
	ct_setup(CAP);
	int64_t t0 = pgt_now_ms();
	for (int i = 0; i < NDB; i++) {
		ct_config(&cfg, infos[i]);
		cfg.retry_cap = 1 * USEC_PER_SEC;
		ct_conn_new(&rec[i], &cfg);
	}
	ck_assert_uint_le(pqev_connlimit_active(ct_limit()), CAP);
	ck_assert(ct_run_until(ct_all_connected, &(CtAll){rec, NDB, 1}, 120000));
	int64_t t1 = pgt_now_ms();
	ck_assert_uint_eq(pqev_connlimit_peak(ct_limit()), CAP);
	for (int i = 0; i < NDB; i++)
		ct_send(rec[i].conn, &req[i], "select current_database()", 0, NULL, 0, 0, NULL);
	ck_assert(ct_run_until(all_done, NULL, 60000));
	for (int i = 0; i < NDB; i++) {
		ck_assert_int_eq(req[i].status, PQEV_OK);
		ck_assert_str_eq(req[i].value, names[i]);
	}
	/* every backend at once: all must come back through the cap */
	PGconn *t = pgt_connect(names[0]);
	int64_t killed = pgt_int(t, "select count(pg_terminate_backend(pid)) from pg_stat_activity "
				    "where application_name = 'pgqd-ev'");
	PQfinish(t);
	ck_assert_int_eq(killed, NDB);
	int64_t t2 = pgt_now_ms();
	ck_assert(ct_run_until(ct_all_connected, &(CtAll){rec, NDB, 2}, 120000));
	int64_t t3 = pgt_now_ms();
	ck_assert_uint_eq(pqev_connlimit_peak(ct_limit()), CAP);
	for (int i = 0; i < NDB; i++) {
		ck_assert_int_eq(rec[i].lost, 1);
		ck_assert_int_eq(req[i].done, 1);
	}
	fprintf(stderr,
		"# %d connections up in %lld ms (cap %d); back after terminate in %lld ms\n", NDB,
		(long long)(t1 - t0), CAP, (long long)(t3 - t2));
	for (int i = 0; i < NDB; i++)
		pqev_conn_free(rec[i].conn);
	ct_teardown();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conn-slow");
	TCase *tc = pgt_tcase("conn-slow", 600);
	tcase_add_test(tc, test_500_databases);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true, .max_connections = 540, .ram_dir_mb = 6000};
	return pgt_main(s, &o);
}
