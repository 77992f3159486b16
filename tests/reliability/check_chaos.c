/*
 * The fault-injection test (issue 18): one private server, two databases with two
 * queues each, producers whose events carry unique ids committed together with a
 * record of them (chaos_committed), the real pgqd-ev ticking and rotating tables
 * every ~15 s, and consumers of every kind (libpgqev regular, coop subconsumers,
 * exactly-once through pgq_ext; python3-pgq's Consumer as an outside witness),
 * each recording what it got. Faults come at random times from a printed seed
 * (PGQD_CHAOS_SEED replays the schedule): terminated backends of the ticker,
 * maintenance, consumers and producers, fast and immediate server restarts,
 * SIGKILL of the daemon and of consumers, SIGSTOP/SIGCONT of the daemon, SIGHUP
 * with a good and a broken config, forced rotations; the consumers retry events
 * and fail batches on purpose all along. Then the queues drain and the records
 * are compared with the committed ids: nothing lost, nothing rolled back
 * delivered, no duplicate for exactly-once, every other duplicate explained by a
 * delivery that was not finished.
 *
 * PGQD_CHAOS_SECONDS sets the length of the fault phase (default 30; the slow
 * suite runs 200, scripts/chaos what it is told); PGQD_CHAOS_REPORT names a file
 * that gets the summary too.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chaos_check.h"
#include "pgtest.h"

#define NDB 2
#define NQ  2
static const char *const queues[NQ] = {"qa", "qb"};

/* ---- seeded choices --------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static int rnd_between(int lo, int hi)
{
	return lo + (int)(rnd() % (uint64_t)(hi - lo + 1));
}

/* Pauses that are the fault itself (how long a daemon stays stopped, the gap
   between faults), never a synchronisation. */
static void pause_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- child processes -------------------------------------------------------------- */

typedef struct Proc {
	char name[48];
	char *argv[10];
	char log[512];
	pid_t pid;
	int restarts;
} Proc;

static char dir[400];

static void proc_spawn(Proc *p)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = open(p->log, O_WRONLY | O_APPEND | O_CREAT, 0644);
		int nul = open("/dev/null", O_RDWR);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		if (fd >= 0)
			dup2(fd, 2);
		if (nul >= 0) {
			dup2(nul, 0);
			dup2(nul, 1);
		}
		execv(p->argv[0], p->argv);
		perror(p->argv[0]);
		_exit(127);
	}
	p->pid = pid;
}

static void proc_setup(Proc *p, const char *name, const char *const *argv)
{
	snprintf(p->name, sizeof(p->name), "%s", name);
	snprintf(p->log, sizeof(p->log), "%s/%s.log", dir, name);
	for (int i = 0; argv[i] && i < 9; i++)
		p->argv[i] = strdup(argv[i]);
	proc_spawn(p);
}

/* Still running? Reaps it if not (an exit we did not cause fails the test). */
static bool proc_alive(Proc *p)
{
	int st;
	if (p->pid <= 0)
		return false;
	if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
		fprintf(stderr, "# chaos: %s exited by itself (status %d), see %s\n", p->name, st,
			p->log);
		p->pid = 0;
		return false;
	}
	return true;
}

static void proc_kill(Proc *p)
{
	if (p->pid > 0) {
		kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, 0);
		p->pid = 0;
	}
}

/* SIGTERM and wait up to timeout_ms; SIGKILL after that. true: it exited by itself. */
static bool proc_stop(Proc *p, int timeout_ms)
{
	int64_t deadline = pgt_now_ms() + timeout_ms;
	if (p->pid <= 0)
		return false;
	kill(p->pid, SIGTERM);
	while (pgt_now_ms() < deadline) {
		if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
			p->pid = 0;
			return true;
		}
		pause_ms(20);
	}
	fprintf(stderr, "# chaos: %s did not stop within %d ms\n", p->name, timeout_ms);
	proc_kill(p);
	return false;
}

/* ---- the world ------------------------------------------------------------------------ */

enum { W_REGULAR, W_COOP_A, W_COOP_B, W_EXACT, W_NKIND };
static const char *const wkind[W_NKIND] = {"regular", "coop-a", "coop-b", "exact"};

static char dbs[NDB][64];
static Proc producers[NDB];
static Proc workers[NDB][W_NKIND];
static Proc pyw[NDB][NQ];
static Proc daemon_p;
static char ini_path[512];
static int ini_generation;

#define NCONS (NDB * (W_NKIND + NQ))

static Proc *consumer_proc(int i)
{
	int per = W_NKIND + NQ, d = i / per, k = i % per;
	return k < W_NKIND ? &workers[d][k] : &pyw[d][k - W_NKIND];
}

static void write_ini(bool broken)
{
	char tmp[600];
	FILE *f;
	snprintf(tmp, sizeof(tmp), "%s.tmp", ini_path);
	f = fopen(tmp, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f,
		"[pgqd]\nbase_connstr = host=%s port=%d user=postgres\nsyslog = 0\n"
		"database_list = %s, %s\nticker_period = %s\nmaint_period = 2\n"
		"retry_period = 1\nstats_period = 10\nconnect_timeout = 5\n",
		pgt_socket_dir(), pgt_port(), dbs[0], dbs[1], ini_generation % 2 ? "0.3" : "0.2");
	if (broken)
		fputs("ticker_period = soon\nno_such_key = 1\n", f);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(rename(tmp, ini_path), 0);
}

static void setup_db(int d)
{
	snprintf(dbs[d], sizeof(dbs[d]), "%s", pgt_db_new());
	PGconn *c = pgt_connect(dbs[d]);
	pgt_exec(c, "create table chaos_committed (uid bigint not null, queue text not null)");
	pgt_exec(c, "create table chaos_exact (queue text, uid bigint, batch bigint)");
	for (int q = 0; q < NQ; q++) {
		char sql[600];
		snprintf(sql, sizeof(sql),
			 "select pgq.create_queue('%1$s');"
			 "select pgq.set_queue_config('%1$s', 'ticker_max_lag', '0.3');"
			 "select pgq.set_queue_config('%1$s', 'ticker_idle_period', '1');"
			 "select pgq.set_queue_config('%1$s', 'ticker_max_count', '300');"
			 "select pgq.set_queue_config('%1$s', 'rotation_period', '15 seconds');"
			 "select pgq.register_consumer('%1$s', 'c_regular');"
			 "select pgq.register_consumer('%1$s', 'c_exact');"
			 "select pgq.register_consumer('%1$s', 'c_py');"
			 "select pgq_coop.register_subconsumer('%1$s', 'c_coop', 'a');"
			 "select pgq_coop.register_subconsumer('%1$s', 'c_coop', 'b');",
			 queues[q]);
		pgt_exec(c, sql);
	}
	PQfinish(c);
}

static void daemon_start(void);

static void start_world(uint64_t seed)
{
	const char *worker = pgt_env_path("PGQD_CHAOS_WORKER");
	const char *py = pgt_env_path("PGQD_CHAOS_PY");
	char pconn[700], out[600], seedbuf[32], dbno[8], name[64];

	snprintf(ini_path, sizeof(ini_path), "%s/pgqd-ev.ini", dir);
	write_ini(false);
	{
		char daemon_bin[600];
		snprintf(daemon_bin, sizeof(daemon_bin), "%s/src/ticker/pgqd-ev",
			 getenv("PGQD_TEST_BUILDDIR"));
		const char *argv[] = {daemon_bin, ini_path, NULL};
		snprintf(daemon_p.name, sizeof(daemon_p.name), "daemon");
		snprintf(daemon_p.log, sizeof(daemon_p.log), "%s/daemon.log", dir);
		for (int i = 0; argv[i]; i++)
			daemon_p.argv[i] = strdup(argv[i]);
		daemon_start();
	}
	for (int d = 0; d < NDB; d++) {
		for (int k = 0; k < W_NKIND; k++) {
			snprintf(out, sizeof(out), "%s/got-%d-%s", dir, d, wkind[k]);
			snprintf(seedbuf, sizeof(seedbuf), "%" PRIu64,
				 seed * 31 + (uint64_t)(d * 7 + k));
			snprintf(name, sizeof(name), "%s-%d", wkind[k], d);
			/* libpgqev names its sessions pgqev-consumer */
			const char *argv[] = {
				worker, "consume", wkind[k], pgt_connstr(dbs[d], false),
				out,    seedbuf,   NULL};
			proc_setup(&workers[d][k], name, argv);
		}
		for (int q = 0; q < NQ; q++) {
			snprintf(out, sizeof(out), "%s/got-%d-python-%s", dir, d, queues[q]);
			snprintf(name, sizeof(name), "python-%d-%s", d, queues[q]);
			snprintf(pconn, sizeof(pconn), "%s application_name=chaos-py",
				 pgt_connstr(dbs[d], false));
			const char *argv[] = {
				"/usr/bin/python3", py, pconn, queues[q], "c_py", out, NULL};
			proc_setup(&pyw[d][q], name, argv);
		}
		snprintf(pconn, sizeof(pconn), "%s application_name=chaos-producer",
			 pgt_connstr(dbs[d], false));
		snprintf(out, sizeof(out), "%s/produced-%d", dir, d);
		snprintf(seedbuf, sizeof(seedbuf), "%" PRIu64, seed * 17 + (uint64_t)d);
		snprintf(dbno, sizeof(dbno), "%d", d);
		snprintf(name, sizeof(name), "producer-%d", d);
		const char *argv[] = {worker, "produce", pconn, dbno, out, seedbuf, NULL};
		proc_setup(&producers[d], name, argv);
	}
}

/* ---- faults ------------------------------------------------------------------------------ */

enum {
	F_TERM_TICKER,
	F_TERM_MAINT,
	F_TERM_CONSUMER,
	F_TERM_PRODUCER,
	F_RESTART_FAST,
	F_RESTART_IMMEDIATE,
	F_KILL_DAEMON,
	F_KILL_CONSUMER,
	F_STOP_DAEMON,
	F_HUP_GOOD,
	F_HUP_BROKEN,
	F_ROTATE,
	F_NKIND
};
static const char *const fault_name[F_NKIND] = {
	"terminate ticker backend",   "terminate maintenance backend", "terminate consumer backend",
	"terminate producer backend", "server restart (fast)",         "server restart (immediate)",
	"SIGKILL + restart daemon",   "SIGKILL + restart consumer",    "SIGSTOP/SIGCONT daemon",
	"SIGHUP good config",         "SIGHUP broken config",          "forced rotation"};
static int fault_count[F_NKIND], fault_hit[F_NKIND];
static int64_t recovery_ms[256];
static int nrecovery, recovery_failed;
static int daemon_reload_errors;

/* Terminate backends of `where` (on every database); returns how many. */
static int terminate(const char *where, bool one)
{
	char sql[800];
	snprintf(sql, sizeof(sql),
		 "select count(pg_terminate_backend(pid)) from (select pid from pg_stat_activity"
		 " where pid <> pg_backend_pid() and (%s) order by pid offset %d limit %d) s",
		 where, one ? (int)(rnd() % 3) : 0, one ? 1 : 1000);
	PGconn *c = PQconnectdb(pgt_connstr("postgres", false));
	int n = 0;
	if (PQstatus(c) == CONNECTION_OK) {
		PGresult *r = PQexec(c, sql);
		if (PQresultStatus(r) == PGRES_TUPLES_OK)
			n = atoi(PQgetvalue(r, 0, 0));
		else if (one) /* fewer than offset+1: take the first */
			n = 0;
		PQclear(r);
		if (one && n == 0) {
			snprintf(sql, sizeof(sql),
				 "select count(pg_terminate_backend(pid)) from (select pid from"
				 " pg_stat_activity where pid <> pg_backend_pid() and (%s)"
				 " order by pid limit 1) s",
				 where);
			r = PQexec(c, sql);
			if (PQresultStatus(r) == PGRES_TUPLES_OK)
				n = atoi(PQgetvalue(r, 0, 0));
			PQclear(r);
		}
	}
	PQfinish(c);
	return n;
}

static bool terminate_maint(void *arg)
{
	(void)arg;
	return terminate("application_name = 'pgqd-ev' and query not like '%pgq.ticker()%'"
			 " and query not like '%pgq.version()%' and state = 'active'",
			 false) > 0;
}

/* Table rotations seen (queue_cur_table changes between samples). */
static int last_table[NDB][NQ], rotations_seen;

static void sample_rotations(void)
{
	for (int d = 0; d < NDB; d++) {
		PGconn *c = PQconnectdb(pgt_connstr(dbs[d], false));
		PGresult *r =
			PQexec(c, "select queue_cur_table from pgq.queue order by queue_name");
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == NQ)
			for (int q = 0; q < NQ; q++) {
				int t = atoi(PQgetvalue(r, q, 0));
				rotations_seen += t != last_table[d][q];
				last_table[d][q] = t;
			}
		PQclear(r);
		PQfinish(c);
	}
}

typedef struct RecoveryCond {
	PGconn *c[NDB];
	int64_t next_ms;
} RecoveryCond;

/*
 * Every queue has a tick made after the server came back, and every consumer (the
 * coop group through its main registration) has finished a batch up to it: the
 * ticker, each consumer process and the python witness all work again.
 */
static bool recovered(void *arg)
{
	RecoveryCond *rc = arg;
	for (int d = 0; d < NDB; d++) {
		if (!rc->c[d] || PQstatus(rc->c[d]) != CONNECTION_OK) {
			if (rc->c[d])
				PQfinish(rc->c[d]);
			rc->c[d] = PQconnectdb(pgt_connstr(dbs[d], false));
			if (PQstatus(rc->c[d]) != CONNECTION_OK)
				return false;
		}
		PGresult *r = PQexec(
			rc->c[d],
			"select (select count(*) from pgq.queue q where not exists (select 1 from"
			"  pgq.tick t where t.tick_queue = q.queue_id"
			"  and t.tick_time > pg_postmaster_start_time()))"
			" + (select count(*) from pgq.get_consumer_info() ci"
			"  where ci.consumer_name not like '%.%' and ci.last_tick < coalesce((select"
			"  min(t.tick_id) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue"
			"  where q.queue_name = ci.queue_name"
			"  and t.tick_time > pg_postmaster_start_time()), 1e18))");
		bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) == 0;
		PQclear(r);
		if (!ok)
			return false;
	}
	return true;
}

static void wait_recovery(void)
{
	RecoveryCond rc = {{NULL}, 0};
	int64_t t0 = pgt_now_ms();
	if (pgt_wait_until(recovered, &rc, (int)(60000 * pgt_time_factor()), 25))
		recovery_ms[nrecovery++ % 256] = pgt_now_ms() - t0;
	else {
		fprintf(stderr, "# chaos: no recovery within 60 s of a server restart\n");
		recovery_failed++;
	}
	for (int d = 0; d < NDB; d++)
		if (rc.c[d])
			PQfinish(rc.c[d]);
}

static int count_lines(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	char line[2048];
	int n = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, needle))
			n++;
	fclose(f);
	return n;
}

typedef struct LogCond {
	const char *path, *needle;
	int want;
} LogCond;

static bool log_has(void *arg)
{
	LogCond *lc = arg;
	return count_lines(lc->path, lc->needle) >= lc->want;
}

static int daemon_start_failures;

/* Start the daemon and wait until it says it started, which it does once its
   signal handlers are in place: a SIGHUP before that would end it. */
static void daemon_start(void)
{
	LogCond lc = {daemon_p.log, "Starting pgqd-ev",
		      count_lines(daemon_p.log, "Starting pgqd-ev") + 1};
	proc_spawn(&daemon_p);
	if (!pgt_wait_until(log_has, &lc, (int)(20000 * pgt_time_factor()), 10)) {
		fprintf(stderr, "# chaos: pgqd-ev did not start, see %s\n", daemon_p.log);
		daemon_start_failures++;
	}
}

static void respawn_daemon(void)
{
	proc_kill(&daemon_p);
	daemon_p.restarts++;
	daemon_start();
}

static void run_fault(int f)
{
	char where[300];
	fault_count[f]++;
	switch (f) {
	case F_TERM_TICKER:
		fault_hit[f] +=
			terminate("application_name = 'pgqd-ev' and query like '%pgq.ticker()%'",
				  false) > 0;
		break;
	case F_TERM_MAINT:
		/* maintenance connections live for a round only: catch one */
		fault_hit[f] += pgt_wait_until(terminate_maint, NULL, 4000, 10);
		break;
	case F_TERM_CONSUMER:
		fault_hit[f] +=
			terminate("application_name in ('pgqev-consumer', 'chaos-py')", true) > 0;
		break;
	case F_TERM_PRODUCER:
		fault_hit[f] += terminate("application_name = 'chaos-producer'", true) > 0;
		break;
	case F_RESTART_FAST:
		pgt_server_restart();
		fault_hit[f]++;
		wait_recovery();
		break;
	case F_RESTART_IMMEDIATE:
		pgt_server_crash(); /* SIGQUIT to the postmaster: immediate shutdown */
		pgt_server_start();
		fault_hit[f]++;
		wait_recovery();
		break;
	case F_KILL_DAEMON:
		respawn_daemon();
		fault_hit[f]++;
		break;
	case F_KILL_CONSUMER: {
		Proc *p = consumer_proc((int)(rnd() % NCONS));
		proc_kill(p);
		p->restarts++;
		proc_spawn(p);
		fault_hit[f]++;
		break;
	}
	case F_STOP_DAEMON:
		kill(daemon_p.pid, SIGSTOP);
		pause_ms(rnd_between(300, 4000));
		kill(daemon_p.pid, SIGCONT);
		fault_hit[f]++;
		break;
	case F_HUP_GOOD:
		ini_generation++;
		write_ini(false);
		kill(daemon_p.pid, SIGHUP);
		fault_hit[f]++;
		break;
	case F_HUP_BROKEN: {
		LogCond lc = {daemon_p.log, "reload failed",
			      count_lines(daemon_p.log, "reload failed") + 1};
		write_ini(true);
		kill(daemon_p.pid, SIGHUP);
		/* the daemon says it keeps its configuration, and stays up */
		if (pgt_wait_until(log_has, &lc, 10000, 20) && proc_alive(&daemon_p))
			fault_hit[f]++;
		else
			daemon_reload_errors++;
		write_ini(false);
		if (!proc_alive(&daemon_p))
			respawn_daemon();
		break;
	}
	case F_ROTATE: {
		int d = (int)(rnd() % NDB);
		const char *q = queues[rnd() % NQ];
		PGconn *c = PQconnectdb(pgt_connstr(dbs[d], false));
		if (PQstatus(c) == CONNECTION_OK) {
			char cur[300];
			snprintf(cur, sizeof(cur),
				 "select queue_cur_table from pgq.queue where queue_name = '%s'",
				 q);
			PGresult *r = PQexec(c, cur);
			int before = PQresultStatus(r) == PGRES_TUPLES_OK
					     ? atoi(PQgetvalue(r, 0, 0))
					     : -1;
			PQclear(r);
			/* step1 rotates only when the rotation period has passed */
			snprintf(
				where, sizeof(where),
				"update pgq.queue set queue_switch_time = now() - interval '1 hour'"
				" where queue_name = '%s'",
				q);
			PQclear(PQexec(c, where));
			snprintf(where, sizeof(where), "select pgq.maint_rotate_tables_step1('%s')",
				 q);
			PQclear(PQexec(c, where));
			PQclear(PQexec(c, "select pgq.maint_rotate_tables_step2()"));
			r = PQexec(c, cur);
			if (PQresultStatus(r) == PGRES_TUPLES_OK && before >= 0 &&
			    atoi(PQgetvalue(r, 0, 0)) != before)
				fault_hit[f]++;
			PQclear(r);
		}
		PQfinish(c);
		break;
	}
	}
}

/* ---- end: drain and compare ------------------------------------------------------------ */

typedef struct DrainCond {
	PGconn *c[NDB];
} DrainCond;

/* No event waits anywhere: nothing in the retry queues, nothing untaken since the
   last tick, every consumer at the last tick with no batch open. "Since the last
   tick" is asked of the event tables, not only of the event sequence: an event
   whose transaction took its id (nextval) before the last tick and committed after
   it is not counted by ev_new, and the retry mover's re-inserted events are such
   events when a tick falls inside the mover's transaction (the regular consumer
   "lost" a retried event that way: the test stopped while it waited for the next,
   idle-backed-off tick). */
static bool drained(void *arg)
{
	DrainCond *dc = arg;
	for (int d = 0; d < NDB; d++) {
		if (!dc->c[d] || PQstatus(dc->c[d]) != CONNECTION_OK) {
			if (dc->c[d])
				PQfinish(dc->c[d]);
			dc->c[d] = PQconnectdb(pgt_connstr(dbs[d], false));
			if (PQstatus(dc->c[d]) != CONNECTION_OK)
				return false;
		}
		PGresult *r = PQexec(
			dc->c[d],
			"select (select count(*) from pgq.retry_queue)"
			" + (select count(*) from pgq.get_queue_info() where ev_new > 0)"
			" + (select count(*) from pgq.queue q where pgq._events_pending(q.queue_data_pfx,"
			"    (select t.tick_snapshot from pgq.tick t where t.tick_queue = q.queue_id"
			"     order by t.tick_id desc limit 1)))"
			" + (select count(*) from pgq.get_consumer_info() ci join pgq.get_queue_info() qi"
			"    using (queue_name) where ci.current_batch is not null"
			"    or (ci.consumer_name not like '%.%' and ci.last_tick <> qi.last_tick_id))");
		bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) == 0;
		PQclear(r);
		if (!ok)
			return false;
	}
	return true;
}

/* PGQD_CHAOS_SECONDS (scripts/chaos), else the suite's default, else 30. */
static int chaos_seconds(void)
{
	const char *v = getenv("PGQD_CHAOS_SECONDS");
	if (!v || !*v)
		v = getenv("PGQD_CHAOS_DEFAULT_SECONDS");
	return v && atoi(v) > 0 ? atoi(v) : 30;
}

START_TEST(test_chaos)
{
	const char *s = getenv("PGQD_CHAOS_SEED");
	uint64_t seed = s && *s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
	int seconds = chaos_seconds();
	ChaosTotals tot;

	if (pgt_missing(system("/usr/bin/python3 -c 'import pgq' 2>/dev/null") != 0,
			"python3-pgq for /usr/bin/python3 (scripts/packages.txt)"))
		return;
	fprintf(stderr,
		"# chaos: seed %" PRIu64 " (replay: PGQD_CHAOS_SEED=%" PRIu64 "), %d s of faults\n",
		seed, seed, seconds);
	rng_state = seed ? seed : 1;
	snprintf(dir, sizeof(dir), "%s/chaos", pgt_tmp_dir());
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	int64_t t_setup = pgt_now_ms();
	for (int d = 0; d < NDB; d++)
		setup_db(d);
	start_world(seed);
	fprintf(stderr, "# chaos: set up in %.1f s\n", (pgt_now_ms() - t_setup) / 1000.0);

	/* faults, in seeded rounds that each hold every kind once */
	int order[F_NKIND], pos = F_NKIND;
	int64_t end = pgt_now_ms() + (int64_t)seconds * 1000;
	while (pgt_now_ms() < end) {
		pause_ms(rnd_between(200, 1500));
		if (pos == F_NKIND) {
			for (int i = 0; i < F_NKIND; i++)
				order[i] = i;
			for (int i = F_NKIND - 1; i > 0; i--) {
				int j = (int)(rnd() % (uint64_t)(i + 1)), t = order[i];
				order[i] = order[j];
				order[j] = t;
			}
			pos = 0;
		}
		run_fault(order[pos++]);
		sample_rotations();
		for (int d = 0; d < NDB; d++)
			ck_assert_msg(proc_alive(&producers[d]), "producer %d died, see %s", d,
				      producers[d].log);
		ck_assert_msg(proc_alive(&daemon_p), "pgqd-ev died, see %s", daemon_p.log);
		for (int i = 0; i < NCONS; i++)
			ck_assert_msg(proc_alive(consumer_proc(i)), "%s died, see %s",
				      consumer_proc(i)->name, consumer_proc(i)->log);
	}

	/* stop producing; let everything drain with the daemon and consumers up */
	for (int d = 0; d < NDB; d++)
		ck_assert_msg(proc_stop(&producers[d], 30000), "producer %d did not stop", d);
	DrainCond dc = {{NULL}};
	int64_t t_drain = pgt_now_ms();
	bool drain_ok = pgt_wait_until(drained, &dc, (int)(120000 * pgt_time_factor()), 50);
	int64_t drain_ms = pgt_now_ms() - t_drain;
	for (int d = 0; d < NDB; d++)
		if (dc.c[d])
			PQfinish(dc.c[d]);
	for (int i = 0; i < NCONS; i++)
		(void)proc_stop(consumer_proc(i), 20000);
	(void)proc_stop(&daemon_p, 20000);
	fprintf(stderr, "# chaos: faults ran %.1f s, stopped everything %.1f s after the drain\n",
		(t_drain - end) / 1000.0 + seconds, (pgt_now_ms() - t_drain - drain_ms) / 1000.0);

	/* compare */
	chaos_totals_init(&tot);
	for (int d = 0; d < NDB; d++) {
		char path[600];
		snprintf(path, sizeof(path), "%s/produced-%d", dir, d);
		chaos_read_producer(&tot, path);
		PGconn *c = pgt_connect(dbs[d]);
		chaos_load_committed(&tot, d, c);
		for (int k = 0; k < W_NKIND; k++) {
			snprintf(path, sizeof(path), "%s/got-%d-%s", dir, d, wkind[k]);
			chaos_read_file(&tot, d,
					k == W_REGULAR ? CK_REGULAR
					: k == W_EXACT ? CK_EXACT_FILE
						       : CK_COOP,
					path);
		}
		for (int q = 0; q < NQ; q++) {
			snprintf(path, sizeof(path), "%s/got-%d-python-%s", dir, d, queues[q]);
			chaos_read_file(&tot, d, CK_PYTHON, path);
		}
		chaos_load_exact(&tot, d, c);
		PQfinish(c);
	}
	ChaosFaults fr = {.n = F_NKIND,
			  .names = fault_name,
			  .count = fault_count,
			  .hit = fault_hit,
			  .recovery_ms = recovery_ms,
			  .nrecovery = nrecovery < 256 ? nrecovery : 256,
			  .seed = seed,
			  .seconds = seconds,
			  .drain_ms = drain_ms,
			  .rotations = rotations_seen};
	bool ok = chaos_report(&tot, &fr, getenv("PGQD_CHAOS_REPORT"));
	chaos_totals_free(&tot);

	ck_assert_msg(drain_ok, "the queues did not drain within 120 s");
	ck_assert_msg(recovery_failed == 0, "%d server restarts were not recovered from",
		      recovery_failed);
	ck_assert_msg(daemon_start_failures == 0, "pgqd-ev did not start (see above)");
	ck_assert_msg(daemon_reload_errors == 0,
		      "a reload with a broken config was not refused with the daemon up");
	ck_assert_msg(ok, "chaos: deliveries do not match the committed events (see above)");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("chaos");
	TCase *tc = pgt_tcase("chaos", chaos_seconds() + 150 * pgt_time_factor() + 60);
	tcase_add_test(tc, test_chaos);
	suite_add_tcase(s, tc);
	/* The test template turns synchronous_commit off for speed; an immediate
	   shutdown may then lose commits the clients were told about, which is the
	   server's choice, not ours: this test needs every commit to be a commit. */
	PgtOptions o = {.need_server = true,
			.max_connections = 200,
			.extra_conf = "synchronous_commit = on"};
	return pgt_main(s, &o);
}
