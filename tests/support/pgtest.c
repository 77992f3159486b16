/*
 * pgtest: a private PostgreSQL per test binary. See pgtest.h for the contract.
 *
 * Process tree while a suite runs:
 *
 *   test binary (Check parent) ──┬── Check test children (fork per test)
 *                                └── supervisor ── postgres ── backends
 *
 * The supervisor holds the postmaster as its child so that any test child can ask
 * it, over an inherited SOCK_SEQPACKET socket, to stop/start/restart/crash the
 * server. PR_SET_PDEATHSIG ties the supervisor to the test binary and postgres to
 * the supervisor (set after the user switch, which would clear it).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pgtest.h"

extern char **environ;

#define TPL_DBNAME "pgqd_tpl"

/* One private server: its data directory, socket, log, port and supervisor. */
typedef struct Srv {
	char data[300];
	char sock[300];
	char log[300];
	int port;
	pid_t supervisor;
	int ctl_fd; /* test side of the supervisor socket */
} Srv;

#define PGT_MAX_SERVERS 2

static Srv SV[PGT_MAX_SERVERS] = {{.ctl_fd = -1}, {.ctl_fd = -1}};
static int n_servers;

static struct {
	char tmp[256];
	char bindir[256];
	int max_connections;
	const char *extra_conf;
	int ram_dir_mb;
	bool in_ram; /* in /dev/shm: not kept after a failure (PGQD_TEST_KEEP keeps it) */
	uid_t uid;
	gid_t gid;
	bool drop_privs;
	unsigned *db_counter; /* shared across Check's forked children */
} S;

int64_t pgt_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool pgt_due(int64_t *next_ms, int every_ms)
{
	int64_t now = pgt_now_ms();
	if (now < *next_ms)
		return false;
	*next_ms = now + every_ms;
	return true;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

bool pgt_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms, int step_ms)
{
	int64_t deadline = pgt_now_ms() + timeout_ms;
	for (;;) {
		if (cond(arg))
			return true;
		if (pgt_now_ms() >= deadline)
			return false;
		sleep_ms(step_ms);
	}
}

/* PGQD_TEST_REQUIRE_PG (set in CI): what tests would skip must fail instead. */
static bool require_everything(void)
{
	const char *req = getenv("PGQD_TEST_REQUIRE_PG");
	return req && *req && strcmp(req, "0") != 0;
}

bool pgt_missing(bool missing, const char *what)
{
	if (!missing)
		return false;
	ck_assert_msg(!require_everything(), "required for this test: %s", what);
	fprintf(stderr, "# SKIP %s\n", what);
	return true;
}

const char *pgt_env_path(const char *env)
{
	const char *v = getenv(env);
	ck_assert_msg(v && *v, "environment variable %s is not set (run through meson test)", env);
	return v;
}

/* Run argv (argv[0] is a path or in PATH) and wait; returns the exit status or -1. */
static int run_wait(const char *const argv[])
{
	pid_t pid;
	int st;
	if (posix_spawnp(&pid, argv[0], NULL, NULL, (char *const *)argv, environ) != 0)
		return -1;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void rm_rf(const char *path)
{
	const char *argv[] = {"rm", "-rf", path, NULL};
	run_wait(argv);
}

/* Remove /tmp/pgqd-test.<pid>.* directories whose test binary is gone, except
   those a failed (or PGQD_TEST_KEEP) run kept on purpose for its post-mortem. */
static void remove_stale_dirs(const char *base)
{
	DIR *d = opendir(base);
	struct dirent *e;
	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		long pid;
		char path[512];
		if (strncmp(e->d_name, "pgqd-test.", 10) != 0)
			continue;
		pid = strtol(e->d_name + 10, NULL, 10);
		if (pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(path, sizeof(path), "%s/%s/KEPT", base, e->d_name);
		if (access(path, F_OK) == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", base, e->d_name);
		rm_rf(path);
	}
	closedir(d);
}

static int pick_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static void print_log_tail(const Srv *v, FILE *out, int lines)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "tail -n %d '%s' 2>/dev/null | sed 's/^/# /'", lines, v->log);
	fflush(out);
	if (system(cmd) < 0)
		fprintf(out, "# (could not read %s)\n", v->log);
}

/* The logs of daemons a failed test left behind (tests/ticker/daemon.c writes
   them into PGT_DAEMON_LOG files; a passing test removes its own). */
static void print_daemon_logs(FILE *out)
{
	char cmd[800];
	if (!S.tmp[0])
		return;
	snprintf(cmd, sizeof(cmd),
		 "find '%s' -maxdepth 3 -name '" PGT_DAEMON_LOG
		 "' 2>/dev/null | sort | while read -r f;"
		 " do echo \"# last lines of $f:\"; tail -n 60 \"$f\" | sed 's/^/# /'; done",
		 S.tmp);
	fflush(out);
	if (system(cmd) < 0)
		fprintf(out, "# (could not list the daemon logs under %s)\n", S.tmp);
}

/* ---- the supervisor process ---------------------------------------------------- */

static pid_t pg_spawn(const Srv *v, pid_t supervisor)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	/* child: become postgres, tie our life to the supervisor, exec the server */
	int fd = open(v->log, O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	if (S.drop_privs) {
		if (setgroups(0, NULL) != 0 || setgid(S.gid) != 0 || setuid(S.uid) != 0) {
			perror("pgtest: dropping to the postgres user");
			_exit(120);
		}
	}
	prctl(PR_SET_PDEATHSIG, SIGQUIT);
	if (getppid() != supervisor)
		_exit(121);
	char exe[400], port[16], maxc[40];
	snprintf(exe, sizeof(exe), "%s/postgres", S.bindir);
	snprintf(port, sizeof(port), "%d", v->port);
	snprintf(maxc, sizeof(maxc), "max_connections=%d", S.max_connections);
	const char *argv[] = {
		exe,  "-D", v->data, "-k", v->sock, "-p", port, "-c", "listen_addresses=127.0.0.1",
		"-c", maxc, NULL};
	execv(exe, (char *const *)argv);
	perror("pgtest: exec postgres");
	_exit(122);
}

static bool pg_ready(const Srv *v)
{
	char conninfo[512];
	snprintf(conninfo, sizeof(conninfo),
		 "host=%s port=%d dbname=postgres user=postgres connect_timeout=2", v->sock,
		 v->port);
	return PQping(conninfo) == PQPING_OK;
}

/* Start postgres and wait for it to accept connections; error text in err. */
static pid_t pg_start(const Srv *v, char *err, size_t errlen)
{
	pid_t self = getpid();
	pid_t pid = pg_spawn(v, self);
	int64_t deadline = pgt_now_ms() + 60000;
	if (pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		return -1;
	}
	for (;;) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			snprintf(err, errlen, "postgres exited during start (status %d), see %s",
				 st, v->log);
			return -1;
		}
		if (pg_ready(v))
			return pid;
		if (pgt_now_ms() > deadline) {
			kill(pid, SIGQUIT);
			waitpid(pid, NULL, 0);
			snprintf(err, errlen,
				 "postgres did not accept connections within 60 s, see %s", v->log);
			return -1;
		}
		sleep_ms(20);
	}
}

static void pg_stop(pid_t pid, int sig)
{
	int64_t deadline = pgt_now_ms() + 30000;
	if (pid <= 0)
		return;
	kill(pid, sig);
	for (;;) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return;
		if (pgt_now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return;
		}
		sleep_ms(10);
	}
}

/* Wait until no process from the previous postmaster still holds the data dir. */
static void wait_postmaster_pid_gone(const Srv *v)
{
	char pidfile[400];
	int64_t deadline = pgt_now_ms() + 10000;
	snprintf(pidfile, sizeof(pidfile), "%.299s/postmaster.pid", v->data);
	while (access(pidfile, F_OK) == 0 && pgt_now_ms() < deadline)
		sleep_ms(10);
}

/* SIGKILL the postmaster and every process it started (backends, background
   workers): nothing shuts down, as when the machine dies. Stopped first, so it
   forks no new child while they are killed. */
static void pg_kill_all(pid_t pg)
{
	DIR *d;
	struct dirent *e;

	if (pg <= 0)
		return;
	kill(pg, SIGSTOP);
	if ((d = opendir("/proc"))) {
		while ((e = readdir(d))) {
			char path[300], buf[512];
			pid_t pid = (pid_t)atoi(e->d_name);
			if (pid <= 0)
				continue;
			snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
			FILE *f = fopen(path, "r");
			if (!f)
				continue;
			size_t n = fread(buf, 1, sizeof(buf) - 1, f);
			fclose(f);
			buf[n] = '\0';
			/* pid (comm) state ppid ...: comm may hold spaces, so from the last ')' */
			char *rp = strrchr(buf, ')');
			int ppid = 0;
			char st;
			if (rp && sscanf(rp + 1, " %c %d", &st, &ppid) == 2 && ppid == (int)pg)
				kill(pid, SIGKILL);
		}
		closedir(d);
	}
	kill(pg, SIGKILL);
	waitpid(pg, NULL, 0);
}

static void supervisor_main(const Srv *v, int fd, pid_t parent)
{
	pid_t pg;
	char err[512] = "";
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	pg = pg_start(v, err, sizeof(err));
	/* first reply: started or not */
	if (send(fd, err, strlen(err) + 1, 0) < 0 || pg < 0)
		_exit(1);
	for (;;) {
		char cmd;
		ssize_t n = recv(fd, &cmd, 1, 0);
		if (n <= 0)
			cmd = 'Q';
		err[0] = '\0';
		switch (cmd) {
		case 'S':
			pg_stop(pg, SIGINT);
			pg = 0;
			break;
		case 'C':
			pg_stop(pg, SIGQUIT);
			pg = 0;
			wait_postmaster_pid_gone(v);
			break;
		case 'K':
			pg_kill_all(pg);
			pg = 0;
			break;
		case 'G':
			if (pg > 0)
				snprintf(err, sizeof(err), "server already running");
			else
				pg = pg_start(v, err, sizeof(err));
			break;
		case 'R':
			pg_stop(pg, SIGINT);
			pg = pg_start(v, err, sizeof(err));
			break;
		case 'Q':
		default:
			pg_stop(pg, SIGINT);
			if (n > 0)
				send(fd, "", 1, 0);
			_exit(0);
		}
		if (pg < 0)
			pg = 0;
		if (send(fd, err, strlen(err) + 1, 0) < 0)
			_exit(1);
	}
}

static void supervisor_cmd(int server, char cmd)
{
	char reply[512];
	ssize_t n;
	ck_assert_msg(server >= 0 && server < n_servers, "no private server %d in this test binary",
		      server);
	Srv *v = &SV[server];
	ck_assert_msg(v->ctl_fd >= 0, "no private server in this test binary");
	ck_assert_msg(send(v->ctl_fd, &cmd, 1, 0) == 1, "supervisor send: %s", strerror(errno));
	n = recv(v->ctl_fd, reply, sizeof(reply) - 1, 0);
	ck_assert_msg(n > 0, "supervisor gone");
	reply[n] = '\0';
	ck_assert_msg(reply[0] == '\0', "server control '%c' failed: %s", cmd, reply);
}

double pgt_time_factor(void)
{
	const char *v = getenv("PGQD_TEST_TIME_FACTOR");
	char *end;
	double f;

	if (v && *v) {
		f = strtod(v, &end);
		if (*end == '\0' && f >= 1)
			return f;
	}
	return getenv("PGQD_TEST_VALGRIND") ? 6 : 1;
}

void pgt_server_stop(void)
{
	supervisor_cmd(0, 'S');
}
void pgt_server_start(void)
{
	supervisor_cmd(0, 'G');
}
void pgt_server_restart(void)
{
	supervisor_cmd(0, 'R');
}
void pgt_server_crash(void)
{
	supervisor_cmd(0, 'C');
}
void pgt_server_stop_on(int server)
{
	supervisor_cmd(server, 'S');
}
void pgt_server_start_on(int server)
{
	supervisor_cmd(server, 'G');
}
void pgt_server_crash_on(int server)
{
	supervisor_cmd(server, 'C');
}
void pgt_server_kill_on(int server)
{
	supervisor_cmd(server, 'K');
}

/* ---- setup and teardown --------------------------------------------------------- */

static int ensure_template(const char *tpl, char *why, size_t whylen)
{
	const char *script = getenv("PGQD_TEST_MKTEMPLATE");
	const char *sql = getenv("PGQD_TEST_SQL");
	const char *argv[64];
	int argc = 0, rc;
	char *sqlcopy, *save = NULL, *tok;
	if (!script || !sql) {
		snprintf(why, whylen,
			 "PGQD_TEST_MKTEMPLATE/PGQD_TEST_SQL not set (run through meson test)");
		return -1;
	}
	sqlcopy = strdup(sql);
	argv[argc++] = script;
	argv[argc++] = tpl;
	argv[argc++] = S.bindir;
	for (tok = strtok_r(sqlcopy, ":", &save); tok && argc < 62;
	     tok = strtok_r(NULL, ":", &save))
		argv[argc++] = tok;
	argv[argc] = NULL;
	rc = run_wait(argv);
	free(sqlcopy);
	if (rc != 0) {
		snprintf(why, whylen, "template creation failed (%s exited %d)", script, rc);
		return -1;
	}
	return 0;
}

static int chown_tree(const char *path)
{
	char owner[64];
	snprintf(owner, sizeof(owner), "%u:%u", (unsigned)S.uid, (unsigned)S.gid);
	const char *argv[] = {"chown", "-R", owner, path, NULL};
	return run_wait(argv);
}

/* Copy the template into a server's own directory and start its supervisor. */
static int server_spawn(Srv *v, int k, const char *tpldata, char *why, size_t whylen)
{
	const char *sfx = k == 0 ? "" : "2";
	int sv[2];
	snprintf(v->data, sizeof(v->data), "%s/data%s", S.tmp, sfx);
	snprintf(v->sock, sizeof(v->sock), "%s/sock%s", S.tmp, sfx);
	snprintf(v->log, sizeof(v->log), "%s/postgres%s.log", S.tmp, sfx);
	mkdir(v->sock, 0755);
	{
		const char *argv[] = {"cp", "-a", tpldata, v->data, NULL};
		if (run_wait(argv) != 0) {
			snprintf(why, whylen, "copying the template %s failed", tpldata);
			return -1;
		}
	}
	if (S.extra_conf) {
		char conf[400];
		FILE *f;
		snprintf(conf, sizeof(conf), "%.299s/postgresql.auto.conf", v->data);
		f = fopen(conf, "a");
		if (!f || fprintf(f, "%s\n", S.extra_conf) < 0 || fclose(f) != 0) {
			snprintf(why, whylen, "writing %s failed", conf);
			return -1;
		}
	}
	if (chown_tree(S.tmp) != 0) {
		snprintf(why, whylen, "chown %s failed", S.tmp);
		return -1;
	}
	v->port = pick_port();
	if (v->port <= 0) {
		snprintf(why, whylen, "no free TCP port on 127.0.0.1");
		return -1;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		snprintf(why, whylen, "socketpair: %s", strerror(errno));
		return -1;
	}
	pid_t parent = getpid();
	v->supervisor = fork();
	if (v->supervisor < 0) {
		snprintf(why, whylen, "fork: %s", strerror(errno));
		return -1;
	}
	if (v->supervisor == 0) {
		close(sv[0]);
		supervisor_main(v, sv[1], parent);
	}
	close(sv[1]);
	v->ctl_fd = sv[0];
	{
		char reply[512];
		ssize_t n = recv(v->ctl_fd, reply, sizeof(reply) - 1, 0);
		if (n <= 0 || reply[0]) {
			if (n > 0)
				reply[n] = '\0';
			snprintf(why, whylen, "server start failed: %s",
				 n > 0 ? reply : "supervisor died");
			return -1;
		}
	}
	return 0;
}

/* Prepare the directory and start the supervisor; 0, or -1 with a reason. */
static int server_setup(char *why, size_t whylen)
{
	const char *tmpbase = getenv("TMPDIR");
	const char *tpl = getenv("PGQD_TEST_TEMPLATE");
	char tpldata[400], pgexe[400];
	if (!tmpbase || !*tmpbase)
		tmpbase = "/tmp";
	if (S.ram_dir_mb > 0) {
		struct statvfs vfs;

		if (statvfs("/dev/shm", &vfs) == 0 &&
		    (double)vfs.f_bavail * (double)vfs.f_frsize >= S.ram_dir_mb * 1048576.0)
			tmpbase = "/dev/shm", S.in_ram = true;
		else
			fprintf(stderr, "# /dev/shm has less than %d MB free: the server in %s\n",
				S.ram_dir_mb, tmpbase);
	}
	snprintf(S.bindir, sizeof(S.bindir), "%s",
		 getenv("PGQD_TEST_PG_BINDIR") ? getenv("PGQD_TEST_PG_BINDIR") : "");
	snprintf(pgexe, sizeof(pgexe), "%s/postgres", S.bindir);
	if (access(pgexe, X_OK) != 0) {
		snprintf(why, whylen, "no PostgreSQL server binaries at '%s'", S.bindir);
		return 1;
	}
	if (!tpl || !*tpl) {
		snprintf(why, whylen, "PGQD_TEST_TEMPLATE not set (run through meson test)");
		return -1;
	}
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam("postgres");
		if (!pw) {
			snprintf(why, whylen,
				 "no 'postgres' user (tests/mk-template.sh creates it)");
			return -1;
		}
		S.uid = pw->pw_uid;
		S.gid = pw->pw_gid;
		S.drop_privs = true;
	} else {
		S.uid = geteuid();
		S.gid = getegid();
	}
	if (ensure_template(tpl, why, whylen) != 0)
		return -1;
	/* the private install tree mk-template.sh made: its own extension directory */
	if (snprintf(S.bindir, sizeof(S.bindir), "%s-pg/bin", tpl) >= (int)sizeof(S.bindir)) {
		snprintf(why, whylen, "template path too long: %s", tpl);
		return -1;
	}
	snprintf(pgexe, sizeof(pgexe), "%s/postgres", S.bindir);
	if (access(pgexe, X_OK) != 0) {
		snprintf(why, whylen, "no private server tree at '%s' (tests/mk-template.sh)",
			 S.bindir);
		return -1;
	}
	remove_stale_dirs(tmpbase);
	snprintf(S.tmp, sizeof(S.tmp), "%s/pgqd-test.%d.XXXXXX", tmpbase, (int)getpid());
	if (!mkdtemp(S.tmp)) {
		snprintf(why, whylen, "mkdtemp %s: %s", S.tmp, strerror(errno));
		return -1;
	}
	chmod(S.tmp, 0755);
	snprintf(tpldata, sizeof(tpldata), "%s/data", tpl);
	for (int k = 0; k < n_servers; k++)
		if (server_spawn(&SV[k], k, tpldata, why, whylen) != 0)
			return -1;
	{
		char port[16];
		snprintf(port, sizeof(port), "%d", SV[0].port);
		setenv("PGHOST", SV[0].sock, 1);
		setenv("PGPORT", port, 1);
		setenv("PGUSER", "postgres", 1);
		setenv("PGQD_TEST_SOCKDIR", SV[0].sock, 1);
	}
	return 0;
}

static void server_teardown(bool keep)
{
	for (int k = 0; k < PGT_MAX_SERVERS; k++) {
		Srv *v = &SV[k];
		if (v->ctl_fd >= 0) {
			char q = 'Q', r;
			if (send(v->ctl_fd, &q, 1, 0) == 1)
				(void)recv(v->ctl_fd, &r, 1, 0);
			close(v->ctl_fd);
			v->ctl_fd = -1;
		}
		if (v->supervisor > 0)
			waitpid(v->supervisor, NULL, 0);
	}
	if (S.tmp[0] && !keep)
		rm_rf(S.tmp);
	else if (S.tmp[0]) {
		char marker[sizeof(S.tmp) + 8];
		snprintf(marker, sizeof(marker), "%s/KEPT", S.tmp);
		FILE *f = fopen(marker, "w");
		if (f)
			fclose(f);
		fprintf(stderr, "pgtest: kept %s (remove it by hand when done)\n", S.tmp);
	}
}

TCase *pgt_tcase(const char *name, double timeout_sec)
{
	TCase *tc = tcase_create(name);
	/* a guard against a hang, no promise: slower under the sanitizers */
	tcase_set_timeout(tc, timeout_sec * pgt_time_factor());
	return tc;
}

int pgt_main(Suite *suite, const PgtOptions *opts)
{
	SRunner *sr;
	int failed;
	bool keep = getenv("PGQD_TEST_KEEP") != NULL;
	bool require = require_everything();

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	S.db_counter = mmap(NULL, sizeof(unsigned), PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (S.db_counter == MAP_FAILED) {
		printf("Bail out! mmap: %s\n", strerror(errno));
		return 1;
	}
	if (opts && opts->need_server) {
		char why[600] = "";
		int rc;
		S.max_connections = opts->max_connections > 0 ? opts->max_connections : 120;
		S.extra_conf = opts->extra_conf;
		S.ram_dir_mb = opts->ram_dir_mb;
		n_servers = opts->servers > 1 ? PGT_MAX_SERVERS : 1;
		rc = server_setup(why, sizeof(why));
		if (rc == 1 && !require) {
			printf("1..0 # SKIP %s\n", why);
			return 0;
		}
		if (rc != 0) {
			printf("Bail out! %s\n", why);
			if (SV[0].log[0])
				print_log_tail(&SV[0], stdout, 30);
			server_teardown(true);
			return 1;
		}
	}
	sr = srunner_create(suite);
	srunner_set_tap(sr, "-");
	srunner_run_all(sr, CK_SILENT);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	for (int k = 0; failed && k < n_servers; k++) {
		fprintf(stderr, "pgtest: last lines of %s:\n", SV[k].log);
		print_log_tail(&SV[k], stderr, 40);
	}
	if (failed)
		print_daemon_logs(stderr);
	server_teardown(keep || (failed && !S.in_ram));
	return failed ? 1 : 0;
}

/* ---- coordinates and blocking helpers -------------------------------------------- */

const char *pgt_socket_dir(void)
{
	return SV[0].sock;
}
int pgt_port(void)
{
	return SV[0].port;
}
const char *pgt_data_dir(void)
{
	return SV[0].data;
}
const char *pgt_tmp_dir(void)
{
	return S.tmp;
}

const char *pgt_bindir(void)
{
	return S.bindir;
}

const char *pgt_extension_dir(void)
{
	static char dir[600];
	char cmd[600];
	FILE *p;
	if (*dir)
		return dir;
	snprintf(cmd, sizeof(cmd), "'%s/pg_config' --sharedir", S.bindir);
	p = popen(cmd, "r");
	ck_assert_msg(p && fgets(dir, sizeof(dir) - 16, p), "%s failed", cmd);
	pclose(p);
	dir[strcspn(dir, "\n")] = '\0';
	strcat(dir, "/extension");
	return dir;
}

const char *pgt_connstr(const char *dbname, bool tcp)
{
	static _Thread_local char buf[600];
	if (strchr(dbname, '=')) /* already a connection string (pgt_connstr_on) */
		snprintf(buf, sizeof(buf), "%s", dbname);
	else
		snprintf(buf, sizeof(buf), "host=%s port=%d user=postgres dbname=%s",
			 tcp ? "127.0.0.1" : SV[0].sock, SV[0].port, dbname);
	return buf;
}

const char *pgt_connstr_on(int server, const char *dbname)
{
	static _Thread_local char buf[600];
	ck_assert_msg(server >= 0 && server < n_servers, "no private server %d", server);
	snprintf(buf, sizeof(buf), "host=%s port=%d user=postgres dbname=%s", SV[server].sock,
		 SV[server].port, dbname);
	return buf;
}

PGconn *pgt_connect(const char *dbname)
{
	PGconn *c = PQconnectdb(pgt_connstr(dbname, false));
	ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect to %s: %s", dbname, PQerrorMessage(c));
	return c;
}

void pgt_exec(PGconn *conn, const char *sql)
{
	PGresult *r = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(r));
		PQclear(r);
		ck_abort_msg("SQL failed: %s\n  %s", sql, msg);
	}
	PQclear(r);
}

char *pgt_value(PGconn *conn, const char *sql)
{
	PGresult *r = PQexec(conn, sql);
	char *v;
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(r));
		PQclear(r);
		ck_abort_msg("query failed: %s\n  %s", sql, msg);
	}
	if (PQntuples(r) == 0)
		v = strdup("");
	else if (PQgetisnull(r, 0, 0))
		v = NULL;
	else
		v = strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

char *pgt_take_batch(PGconn *conn, const char *queue, const char *consumer)
{
	char sql[512];
	char *bid, *res;
	snprintf(sql, sizeof(sql), "select pgq.next_batch('%s', '%s')", queue, consumer);
	bid = pgt_value(conn, sql);
	if (bid == NULL)
		return NULL;
	snprintf(sql, sizeof(sql),
		 "select coalesce(string_agg(ev_data, ',' order by ev_id), '')"
		 " from pgq.get_batch_events(%s)",
		 bid);
	res = pgt_value(conn, sql);
	snprintf(sql, sizeof(sql), "select pgq.finish_batch(%s)", bid);
	pgt_exec(conn, sql);
	free(bid);
	return res;
}

char *pgt_take_all_batches(PGconn *conn, const char *queue, const char *consumer)
{
	char *all = strdup(""), *b;
	ck_assert_ptr_nonnull(all);
	while ((b = pgt_take_batch(conn, queue, consumer)) != NULL) {
		char *n = malloc(strlen(all) + strlen(b) + 2);
		ck_assert_ptr_nonnull(n);
		sprintf(n, "%s%s%s", all, *all && *b ? "," : "", b);
		free(all);
		free(b);
		all = n;
	}
	return all;
}

int64_t pgt_int(PGconn *conn, const char *sql)
{
	char *v = pgt_value(conn, sql);
	int64_t n;
	ck_assert_msg(v != NULL && *v, "expected a number from: %s", sql);
	n = strtoll(v, NULL, 10);
	free(v);
	return n;
}

char *pgt_error(PGconn *conn, const char *sql)
{
	PGresult *r = PQexec(conn, sql);
	char *msg;
	if (PQresultStatus(r) != PGRES_FATAL_ERROR) {
		PQclear(r);
		ck_abort_msg("expected an error from: %s", sql);
	}
	msg = strdup(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
	PQclear(r);
	/* leave the connection usable after an error inside a transaction block */
	if (PQtransactionStatus(conn) == PQTRANS_INERROR)
		PQclear(PQexec(conn, "rollback"));
	return msg;
}

void pgt_exec_db(const char *dbname, const char *sql)
{
	PGconn *c = pgt_connect(dbname);
	pgt_exec(c, sql);
	PQfinish(c);
}

int64_t pgt_int_db(const char *dbname, const char *sql)
{
	PGconn *c = pgt_connect(dbname);
	int64_t v = pgt_int(c, sql);
	PQfinish(c);
	return v;
}

int pgt_server_log_count(const char *dbname, const char *a, const char *b)
{
	char line[8192], tag[128];
	int n = 0;
	FILE *f = fopen(SV[0].log, "r");

	ck_assert_msg(f != NULL, "cannot read %s", SV[0].log);
	snprintf(tag, sizeof(tag), " %s LOG:", dbname);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, tag) && strstr(line, a) && strstr(line, b))
			n++;
	fclose(f);
	return n;
}

typedef struct LogCond {
	const char *db, *a, *b;
	int want;
} LogCond;

static bool logged(void *arg)
{
	const LogCond *l = arg;
	return pgt_server_log_count(l->db, l->a, l->b) >= l->want;
}

void pgt_assert_prepared(const char *dbname, const char *stmt, int want)
{
	LogCond by_name = {dbname, "execute pqev_", stmt, want};

	ck_assert_msg(pgt_wait_until(logged, &by_name, 5000, 20),
		      "%s on %s: %d executions by name, want %d or more", stmt, dbname,
		      pgt_server_log_count(dbname, "execute pqev_", stmt), want);
	ck_assert_int_eq(pgt_server_log_count(dbname, "parse pqev_", stmt), 1);
	ck_assert_int_eq(pgt_server_log_count(dbname, "<unnamed>", stmt), 0);
}

static const char *db_new_from(const char *tpl)
{
	static char name[64];
	char sql[200];
	unsigned n = __atomic_add_fetch(S.db_counter, 1, __ATOMIC_SEQ_CST);
	snprintf(name, sizeof(name), "t%u", n);
	snprintf(sql, sizeof(sql), "create database %s template %s", name, tpl);
	pgt_exec_db("postgres", sql);
	return name;
}

const char *pgt_db_new(void)
{
	return db_new_from(TPL_DBNAME);
}

const char *pgt_db_new_empty(void)
{
	return db_new_from("template0");
}
