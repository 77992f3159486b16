/*
 * python3-pgq's cascade code, which nobody here wrote, against our pgq_node and
 * pgq: CascadeAdmin creates a root and a branch in two databases of the private
 * server, CascadedWorker (one per node) copies events and ticks from the root to
 * the branch. Then the branch must hold the root's events with their ids and the
 * root's ticks with their ids and times, and report its watermark upward.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nodetest.h"

#define PYTHON "/usr/bin/python3"

static const char cascade_py[] =
	"import sys\n"
	"from pgq.cascade.admin import CascadeAdmin\n"
	"from pgq.cascade.worker import CascadedWorker\n"
	"\n"
	"class ReplicaWorker(CascadedWorker):\n"
	"    # as Londiste does: a branch queue takes copied events only in replica role\n"
	"    def connection_hook(self, dbname, conn):\n"
	"        if dbname == 'db':\n"
	"            curs = conn.cursor()\n"
	"            curs.execute(\"set session_replication_role = 'replica'\")\n"
	"            conn.commit()\n"
	"\n"
	"    # data events are applied in the batch's transaction on the node\n"
	"    def process_remote_event(self, src_curs, dst_curs, ev):\n"
	"        if ev.ev_type.startswith('pgq.'):\n"
	"            super().process_remote_event(src_curs, dst_curs, ev)\n"
	"        else:\n"
	"            dst_curs.execute('insert into applied values (%s, %s)', [ev.ev_id, ev.ev_data])\n"
	"\n"
	"if sys.argv[1] == 'admin':\n"
	"    CascadeAdmin('cascade_admin', 'db', sys.argv[2:], worker_setup=True).start()\n"
	"else:\n"
	"    ReplicaWorker('cascade_worker', 'db', sys.argv[2:]).start()\n";

static char g_dir[512], g_py[640];

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	ck_assert_msg(f != NULL, "cannot write %s", path);
	fputs(text, f);
	fclose(f);
}

static pid_t spawn(const char *const argv[], const char *out)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		setpgid(0, 0);
		if (out) {
			FILE *f = freopen(out, "w", stdout);
			(void)f;
			dup2(1, 2);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

static int run(const char *const argv[], const char *out)
{
	int st;
	pid_t pid = spawn(argv, out);
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void stop(pid_t pid)
{
	int st;
	kill(-pid, SIGTERM);
	waitpid(pid, &st, 0);
}

/* A config file with the admin and the worker section for node `name`. */
static const char *node_ini(const char *name, const char *db)
{
	static char path[700];
	char text[8192];
	snprintf(path, sizeof(path), "%s/%s.ini", g_dir, name);
	snprintf(text, sizeof(text),
		 "[cascade_admin]\njob_name = %s_worker\ndb = %s\nqueue_name = cq\n"
		 "logfile = %s/%s-admin.log\npidfile = %s/%s-admin.pid\n\n"
		 "[cascade_worker]\njob_name = %s_worker\ndb = %s\nqueue_name = cq\n"
		 "logfile = %s/%s-worker.log\npidfile = %s/%s-worker.pid\nloop_delay = 0.1\n"
		 "global_wm_publish_period = 0.2\nlocal_wm_publish_period = 0.2\n",
		 name, pgt_connstr(db, false), g_dir, name, g_dir, name, name,
		 pgt_connstr(db, false), g_dir, name, g_dir, name);
	write_file(path, text);
	return path;
}

static int admin(const char *ini, const char *cmd, const char *node, const char *db,
		 const char *provider_db)
{
	char loc[512], prov[600] = "", out[1200];
	snprintf(loc, sizeof(loc), "%s", pgt_connstr(db, false));
	if (provider_db)
		snprintf(prov, sizeof(prov), "--provider=%s", pgt_connstr(provider_db, false));
	snprintf(out, sizeof(out), "%s/%s-%s.out", g_dir, node, cmd);
	const char *argv[] = {PYTHON, g_py, "admin", ini, cmd, node, loc, provider_db ? prov : NULL,
			      NULL};
	return run(argv, out);
}

static const char *g_root, *g_branch;
static int g_want_applied;

/* Keeps the root ticking (one tick per call) until the branch has caught up with
 * the root's tick 4 and reported a watermark past tick 1 to the root. */
static bool branch_caught_up(void *arg)
{
	(void)arg;
	pgt_exec_db(g_root, "select pgq.ticker('cq')");
	return pgt_int_db(g_branch, "select coalesce(max(tick_id), 0) from pgq.tick") >= 4 &&
	       pgt_int_db(g_branch, "select count(*) from applied") == g_want_applied &&
	       pgt_int_db(g_root, "select coalesce(min(node_watermark), 0)"
				  " from pgq_node.get_subscriber_info('cq')") > 1 &&
	       pgt_int_db(g_branch, "select coalesce(global_watermark, 0)"
				    " from pgq_node.get_node_info('cq')") > 1;
}

START_TEST(test_admin_and_worker)
{
	const char *root, *branch;
	char *a, *b;
	PGconn *rc, *bc;
	pid_t wroot, wbranch;
	char *root_ini, *branch_ini;
	char out[2048];

	if (pgt_missing(system(PYTHON " -c 'import pgq.cascade.worker' >/dev/null 2>&1") != 0,
			"python3-pgq (scripts/packages.txt)"))
		return;
	snprintf(g_dir, sizeof(g_dir), "%s/cascade", pgt_tmp_dir());
	mkdir(g_dir, 0777);
	snprintf(g_py, sizeof(g_py), "%s/cascade.py", g_dir);
	write_file(g_py, cascade_py);
	root = strdup(pgt_db_new());
	branch = strdup(pgt_db_new());
	g_root = root;
	g_branch = branch;

	root_ini = strdup(node_ini("root", root));
	branch_ini = strdup(node_ini("branch", branch));
	ck_assert_int_eq(admin(root_ini, "create-root", "rootnode", root, NULL), 0);
	ck_assert_int_eq(admin(branch_ini, "create-branch", "branchnode", branch, root), 0);
	/* a second create is refused and changes nothing */
	ck_assert_int_eq(admin(branch_ini, "create-branch", "branchnode", branch, root), 0);
	snprintf(out, sizeof(out), "grep -q 'already initialized' %s/branchnode-create-branch.out",
		 g_dir);
	ck_assert_int_eq(system(out), 0);

	rc = pgt_connect(root);
	bc = pgt_connect(branch);
	pgt_exec(bc, "create table applied (ev_id bigint, data text)");
	sqlt_eq(bc,
		"select node_type || ' ' || provider_node || ' ' || worker_name"
		" from pgq_node.get_node_info('cq')",
		"branch rootnode branch_worker");
	sqlt_eq(rc,
		"select string_agg(node_name || ':' || worker_name, ',')"
		" from pgq_node.get_subscriber_info('cq')",
		"branchnode:branch_worker");
	pgt_exec(rc,
		 "update pgq.queue set queue_ticker_max_lag = '0', queue_ticker_idle_period = '0'"
		 " where queue_name = 'cq'");
	pgt_exec(rc, "select pgq.insert_event('cq', 'ty', 'ev' || i, 'x1', null, null, 'x4')"
		     " from generate_series(1, 5) i");
	pgt_exec(rc, "select pgq.ticker('cq')");

	{
		const char *argv[] = {PYTHON, g_py, "worker", root_ini, NULL};
		wroot = spawn(argv, NULL);
	}
	{
		const char *argv[] = {PYTHON, g_py, "worker", branch_ini, NULL};
		wbranch = spawn(argv, NULL);
	}
	g_want_applied = 5;
	ck_assert_msg(pgt_wait_until(branch_caught_up, NULL, 60000, 200),
		      "branch did not catch up (see %s/branch-worker.log)", g_dir);

	/* pause: the admin waits until the worker has seen it (uptodate handshake) */
	{
		const char *argv[] = {PYTHON, g_py, "admin", branch_ini, "pause", NULL};
		snprintf(out, sizeof(out), "%s/pause.out", g_dir);
		ck_assert_int_eq(run(argv, out), 0);
	}
	sqlt_eq(bc,
		"select paused::text || uptodate::text"
		" from pgq_node.get_consumer_state('cq', 'branch_worker')",
		"truetrue");
	pgt_exec(rc, "select pgq.insert_event('cq', 'ty', 'ev' || i, 'x1', null, null, 'x4')"
		     " from generate_series(6, 7) i");
	{
		const char *argv[] = {PYTHON, g_py, "admin", branch_ini, "resume", NULL};
		snprintf(out, sizeof(out), "%s/resume.out", g_dir);
		ck_assert_int_eq(run(argv, out), 0);
	}
	sqlt_eq(bc,
		"select paused::text || uptodate::text"
		" from pgq_node.get_consumer_state('cq', 'branch_worker')",
		"falsetrue");
	g_want_applied = 7;
	ck_assert_msg(pgt_wait_until(branch_caught_up, NULL, 60000, 200),
		      "branch did not resume (see %s/branch-worker.log)", g_dir);
	stop(wbranch);
	stop(wroot);

	/* the branch holds the root's events (ids, payload) and ticks (ids, times) */
	a = sqlt_rows(rc, "select ev_id, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3,"
			  " ev_extra4 from pgq.event_1 where ev_type = 'ty' order by 1");
	b = sqlt_rows(bc, "select ev_id, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3,"
			  " ev_extra4 from pgq.event_1 where ev_type = 'ty' order by 1");
	ck_assert_str_eq(b, a);
	ck_assert_int_eq(strncmp(b,
				 "3|ty|ev1|x1|~|~|x4\n4|ty|ev2|x1|~|~|x4\n5|ty|ev3|x1|~|~|x4\n"
				 "6|ty|ev4|x1|~|~|x4\n7|ty|ev5|x1|~|~|x4\n",
				 95),
			 0);
	free(a);
	free(b);
	/* each applied once, in order, under the root's ids */
	a = sqlt_rows(rc, "select ev_id, ev_data from pgq.event_1 where ev_type = 'ty' order by 1");
	b = sqlt_rows(bc, "select ev_id, data from applied order by 1");
	ck_assert_str_eq(b, a);
	free(a);
	free(b);
	sqlt_eq(bc, "select string_agg(data, ',' order by ev_id) from applied",
		"ev1,ev2,ev3,ev4,ev5,ev6,ev7");
	a = sqlt_rows(bc, "select tick_id, tick_time from pgq.tick where tick_id > 1 order by 1");
	b = sqlt_rows(rc, "select tick_id, tick_time from pgq.tick where tick_id > 1"
			  " and tick_id <= (select max(tick_id) from pgq.tick) order by 1");
	ck_assert_msg(strncmp(b, a, strlen(a)) == 0, "branch ticks:\n%s\nroot ticks:\n%s", a, b);
	free(a);
	free(b);
	/* the branch's location arrived through the root's queue; the worker's
	 * position matches its last tick */
	sqlt_eq(bc, "select count(*) from pgq.event_1 where ev_type = 'pgq.location-info'", "2");
	ck_assert_int_eq(pgt_int(bc, "select worker_last_tick from pgq_node.get_node_info('cq')"),
			 pgt_int(bc, "select max(tick_id) from pgq.tick"));
	sqlt_eq(bc, "select count(*) from pgq_node.local_state where cur_error is not null", "0");

	/* a leaf under the branch: no queue, subscribed on the branch, known at the root */
	{
		const char *leaf = pgt_db_new();
		const char *leaf_ini = node_ini("leaf", leaf);
		PGconn *lc;
		ck_assert_int_eq(admin(leaf_ini, "create-leaf", "leafnode", leaf, branch), 0);
		char want[128];
		lc = pgt_connect(leaf);
		/* it starts at the branch's global watermark */
		snprintf(want, sizeof(want), "leaf branchnode %lld %lld true",
			 (long long)pgt_int(
				 bc, "select global_watermark from pgq_node.get_node_info('cq')"),
			 (long long)pgt_int(
				 bc, "select global_watermark from pgq_node.get_node_info('cq')"));
		sqlt_eq(lc,
			"select node_type || ' ' || provider_node || ' ' || worker_last_tick || ' '"
			" || local_watermark || ' ' || (global_watermark is null)"
			" from pgq_node.get_node_info('cq')",
			want);
		sqlt_eq(lc, "select count(*) from pgq.queue", "0");
		sqlt_eq(lc,
			"select string_agg(node_name, ',' order by node_name)"
			" from pgq_node.get_queue_locations('cq')",
			"branchnode,leafnode,rootnode");
		PQfinish(lc);
	}
	sqlt_eq(bc,
		"select string_agg(node_name || ':' || worker_name, ',')"
		" from pgq_node.get_subscriber_info('cq')",
		"leafnode:leaf_worker");
	sqlt_eq(rc, "select count(*) from pgq_node.node_location where node_name = 'leafnode'",
		"1");

	/* status through python: both nodes, the branch under the root */
	{
		const char *argv[] = {PYTHON, g_py, "admin", root_ini, "status", NULL};
		snprintf(out, sizeof(out), "%s/status.out", g_dir);
		ck_assert_int_eq(run(argv, out), 0);
	}
	snprintf(out, sizeof(out),
		 "grep -q 'rootnode (root)' %s/status.out && grep -q 'branchnode (branch)' "
		 "%s/status.out",
		 g_dir, g_dir);
	ck_assert_int_eq(system(out), 0);
	PQfinish(rc);
	PQfinish(bc);
	free(root_ini);
	free(branch_ini);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sql-node-python");
	TCase *tc = pgt_tcase("python", 120);
	tcase_add_test(tc, test_admin_and_worker);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
