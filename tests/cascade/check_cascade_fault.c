/*
 * Cascade workers under faults, caused for real: backends terminated on the
 * provider and on the local node, the branch worker's process SIGKILLed while
 * its local transaction is open, a server restart. Afterwards the branch holds
 * exactly the root's events and ticks and the leaf applied each event once.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "castest.h"

#define POLL (50 * PGQEV_USEC_PER_MSEC)

/* The branch worker in a child process, so it can be killed. */
static pid_t spawn_worker(const char *db)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid > 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct event_base *base = event_base_new();
	if (!base)
		_exit(2);
	CtWorker x = {.quiet = true, .sleep_ms_per_chunk = 3};
	ct_start_on(&x, base, db, POLL);
	event_base_dispatch(base);
	_exit(0);
}

typedef struct ReachCond {
	PGconn *c;
	char sql[300];
	int64_t tick, next_ms;
} ReachCond;

static bool reached(void *arg)
{
	ReachCond *r = arg;
	/* the loop (ticker, leaf) runs between looks, on a connection kept open: a
	   connect per look would starve it */
	if (!pgt_due(&r->next_ms, 50))
		return false;
	return pgt_int(r->c, r->sql) >= r->tick;
}

/* Run the loop until the node's worker completed a tick the root makes now: what
   was produced before is copied (applied), and the worker works again. The test's
   ticker pauses meanwhile, so a long wait on a loaded machine does not pile up
   hundreds of idle ticks for the leaf to go through afterwards. */
static void reach(const char *root, const char *db, const char *node)
{
	ReachCond r = {.c = pgt_connect(db)};
	snprintf(r.sql, sizeof(r.sql),
		 "select coalesce(max(last_tick_id), 0) from pgq_node.local_state"
		 " where queue_name = '" CT_QUEUE "' and consumer_name = 'w_%s'",
		 node);
	cs_ticker(NULL, 0);
	cs_tick(root);
	r.tick = ct_last_tick(root);
	bool ok = cs_run_until(reached, &r, (int)(60000 * pgt_time_factor()));
	PQfinish(r.c);
	ck_assert_msg(ok, "%s did not reach tick %lld", node, (long long)r.tick);
	cs_ticker(root, 30);
}

START_TEST(test_faults_branch_and_leaf)
{
	char *root = ct_node_db(), *b1 = ct_node_db(), *lf = ct_node_db();
	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	ct_make_sub("leaf", lf, "lf", b1, "b1", root);
	ct_make_applied(lf);
	pid_t child = spawn_worker(b1);
	CtWorker wl = {.apply = true, .quiet = true};
	ct_start(&wl, lf, POLL);
	cs_ticker(root, 30);
	int next = 0;

	/* 1: the provider side of the branch worker and the leaf's local side */
	ct_produce(root, next, next + 400);
	next += 400;
	reach(root, b1, "b1");
	reach(root, lf, "lf");
	ct_terminate_workers(root);
	ct_terminate_workers(lf);
	/* 2: the branch's local side and the leaf's provider side */
	ct_produce(root, next, next + 400);
	next += 400;
	reach(root, b1, "b1");
	ct_terminate_workers(b1);
	reach(root, b1, "b1"); /* back at work */

	/* 3: SIGKILL the branch worker while its copy transaction is open */
	ct_produce(root, next, next + 3000);
	next += 3000;
	ck_assert_msg(ct_wait_writing(b1, 20000), "the branch worker never copied");
	ck_assert_int_eq(kill(child, SIGKILL), 0);
	int status;
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	ck_assert(WIFSIGNALED(status));
	child = spawn_worker(b1);
	ct_produce(root, next, next + 400);
	next += 400;
	reach(root, b1, "b1");

	/* 4: server restart */
	pgt_server_restart();
	cs_ticker(root, 30); /* the test's ticker connection died with the server */
	ct_produce(root, next, next + 400);
	next += 400;
	reach(root, b1, "b1");
	reach(root, lf, "lf");

	cs_ticker(NULL, 0);
	cs_tick(root);
	const char *dbs[2] = {b1, lf};
	const char *names[2] = {"b1", "lf"};
	ck_assert_msg(ct_wait_synced(root, dbs, names, 2, 60000), "did not recover");
	int64_t last = ct_last_tick(root);
	char *re = ct_events(root, false);
	char want[32];
	snprintf(want, sizeof(want), "%d:", next + 2); /* + the 2 location events */
	ck_assert_msg(strncmp(re, want, strlen(want)) == 0, "root has %s", re);
	ct_assert_same("b1 events", strdup(re), ct_events(b1, false));
	ct_assert_same("leaf applied events", re, ct_events(lf, true));
	ct_assert_same("b1 ticks", ct_ticks(root, 1, last), ct_ticks(b1, 1, last));
	ck_assert_int_gt(wl.errors, 0); /* the faults were seen */

	ct_stop(&wl);
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	free(root);
	free(b1);
	free(lf);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cascade-fault");
	TCase *tc = pgt_tcase("faults", 180);
	tcase_add_checked_fixture(tc, cs_setup, cs_teardown);
	tcase_add_test(tc, test_faults_branch_and_leaf);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
