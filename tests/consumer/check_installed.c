/*
 * libpgqev as a dependency: api_all.c (every public function) built as C and
 * as C++ in the tree, and the same source built against the installed
 * library by installed.sh (headers, pkg-config, -Wl,--no-undefined, exports),
 * each run against fresh databases of the test's server.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtest.h"

/* A source database with queue "q" ticking on every call, also the root node
   "api_root" (worker "api_w") of cascade "q", and a target. */
static void dbs(char *src, char *tgt, size_t size)
{
	const char *s = pgt_db_new();
	pgt_exec_db(s, "select pgq.create_queue('q'),"
		       " pgq.set_queue_config('q', 'ticker_max_lag', '0'),"
		       " pgq.set_queue_config('q', 'ticker_idle_period', '0')");
	snprintf(src, size, "%s", pgt_connstr(s, false));
	char sql[1024];
	snprintf(sql, sizeof(sql),
		 "select ret_code from pgq_node.register_location('q', 'api_root', '%s', false)",
		 src);
	ck_assert_int_eq(pgt_int_db(s, sql), 200);
	ck_assert_int_eq(pgt_int_db(s, "select ret_code from pgq_node.create_node('q', 'root',"
				       " 'api_root', 'api_w', NULL, NULL, NULL)"),
			 200);
	const char *t = pgt_db_new();
	pgt_exec_db(t, "create table sink (v text)");
	snprintf(tgt, size, "%s", pgt_connstr(t, false));
}

static void run(const char *cmd)
{
	fflush(NULL);
	int rc = system(cmd);
	ck_assert_msg(rc == 0, "%s: exit %d", cmd, rc);
}

static void run_program(const char *env)
{
	char src[512], tgt[512], cmd[2048];
	dbs(src, tgt, sizeof(src));
	snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s' >&2", pgt_env_path(env), src, tgt);
	run(cmd);
}

START_TEST(test_api_all_c)
{
	run_program("PGQEV_API_ALL_C");
}
END_TEST

START_TEST(test_api_all_cxx)
{
	run_program("PGQEV_API_ALL_CXX");
}
END_TEST

START_TEST(test_installed_library)
{
	char s1[512], t1[512], s2[512], t2[512], cmd[4096];
	dbs(s1, t1, sizeof(s1));
	dbs(s2, t2, sizeof(s2));
	snprintf(cmd, sizeof(cmd),
		 "sh '%s/tests/consumer/installed.sh' '%s' '%s' '%s/installed' '%s' '%s' "
		 "'%s' '%s' >&2",
		 getenv("PGQD_TEST_SRCDIR"), getenv("PGQD_TEST_BUILDDIR"),
		 getenv("PGQD_TEST_SRCDIR"), pgt_tmp_dir(), s1, t1, s2, t2);
	run(cmd);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("installed");
	TCase *tc = pgt_tcase("installed", 240);
	tcase_add_test(tc, test_api_all_c);
	tcase_add_test(tc, test_api_all_cxx);
	tcase_add_test(tc, test_installed_library);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
