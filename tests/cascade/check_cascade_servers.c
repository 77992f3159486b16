/*
 * A cascade over two private servers: the root on server 0, a branch and a leaf
 * on server 1. The provider's server is shut down immediately (SIGQUIT to the
 * postmaster, as pg_ctl restart -m immediate) and started again while the
 * branch is in the middle of copying a batch; then the local server the same
 * way. The workers resume by themselves, and the branch ends with exactly the
 * root's events and ticks (none lost, none twice), the leaf applied each once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "castest.h"

#define POLL (50 * PGQEV_USEC_PER_MSEC)

typedef struct ChunkCond {
	CtWorker *x;
	uint64_t above;
} ChunkCond;

/* the branch worker is inside a batch: more chunks copied since `above` */
static bool mid_batch(void *arg)
{
	ChunkCond *c = arg;
	return c->x->chunks > c->above && pgqev_cascade_state(c->x->w) == PGQEV_STATE_PROCESSING;
}

START_TEST(test_two_servers_restart_mid_copy)
{
	char *root = ct_node_db_on(0), *b1 = ct_node_db_on(1), *lf = ct_node_db_on(1);
	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	ct_make_sub("leaf", lf, "lf", b1, "b1", root);
	ct_make_applied(lf);
	CtWorker wb = {.quiet = true, .sleep_ms_per_chunk = 20};
	CtWorker wl = {.quiet = true, .apply = true};
	ct_start(&wb, b1, POLL);
	ct_start(&wl, lf, POLL);
	int next = 0;

	/* 1: the provider's server (root) goes down while the branch copies */
	ct_produce(root, next, next + 3000);
	next += 3000;
	cs_tick(root);
	ChunkCond cc = {&wb, wb.chunks + 3};
	ck_assert_msg(cs_run_until(mid_batch, &cc, 30000), "the branch never copied");
	pgt_server_crash_on(0);
	pgt_server_start_on(0);
	ct_produce(root, next, next + 300);
	next += 300;
	cs_tick(root);
	const char *dbs[2] = {b1, lf};
	const char *names[2] = {"b1", "lf"};
	ck_assert_msg(ct_wait_synced(root, dbs, names, 2, 60000), "did not recover (provider)");
	ck_assert_int_gt(wb.errors, 0); /* the branch saw its provider go */

	/* 2: the local server (branch and leaf) goes down while the branch copies */
	ct_produce(root, next, next + 3000);
	next += 3000;
	cs_tick(root);
	cc.above = wb.chunks + 3;
	ck_assert_msg(cs_run_until(mid_batch, &cc, 30000), "the branch never copied");
	int errs = wb.errors;
	pgt_server_crash_on(1);
	pgt_server_start_on(1);
	cs_tick(root);
	ck_assert_msg(ct_wait_synced(root, dbs, names, 2, 60000), "did not recover (local)");
	ck_assert_int_gt(wb.errors, errs);

	int64_t last = ct_last_tick(root);
	char *re = ct_events(root, false);
	char want[32];
	snprintf(want, sizeof(want), "%d:", next + 2); /* + the 2 location events */
	ck_assert_msg(strncmp(re, want, strlen(want)) == 0, "root has %s", re);
	ct_assert_same("b1 events", strdup(re), ct_events(b1, false));
	ct_assert_same("leaf applied events", re, ct_events(lf, true));
	ct_assert_same("b1 ticks", ct_ticks(root, 1, last), ct_ticks(b1, 1, last));
	ct_stop(&wl);
	ct_stop(&wb);
	free(root);
	free(b1);
	free(lf);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cascade-servers");
	TCase *tc = pgt_tcase("servers", 240);
	tcase_add_checked_fixture(tc, cs_setup, cs_teardown);
	tcase_add_test(tc, test_two_servers_restart_mid_copy);
	suite_add_tcase(s, tc);
	/* the template's synchronous_commit = off lets an immediate shutdown forget
	   the last commits: the root once lost the 3,000 events it had just
	   committed and the branch was copying (docs/reliability.md, "never") */
	PgtOptions o = {.need_server = true, .servers = 2, .extra_conf = "synchronous_commit = on"};
	return pgt_main(s, &o);
}
