/*
 * pgqd-ev: the PgQ ticker daemon. Process lifecycle: command line, first config
 * load, logging, pidfile and -d, the event loop, reload on SIGHUP, graceful stop
 * on SIGTERM/SIGINT, sd_notify, and the periodic stats, health and watchdog
 * timers. The work itself is in registry.c (what to tick) and db.c (ticking).
 *
 * Exit status: 0 after a requested stop; 1 for a bad command line or config, or a
 * failed start; 3 when a database stayed unreachable and unreachable_action=exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_clock.h>
#include <pgqd-ev/pqev_config.h>
#include <pgqd-ev/pqev_conn.h>
#include <pgqd-ev/pqev_connlimit.h>
#include <pgqd-ev/pqev_log.h>
#include <pgqd-ev/pqev_pidfile.h>
#include <pgqd-ev/pqev_sdnotify.h>
#include <pgqd-ev/pqev_signal.h>

#include "pgqev_config.h"
#include "cli.h"
#include "ticker.h"

#define EXIT_UNREACHABLE 3
/* How often a stop checks whether the work in flight has finished. */
#define STOP_POLL_USEC (10 * USEC_PER_MSEC)
/*
 * How long a stop lets ticks and checks in flight be answered before closing
 * their sessions anyway. Each is one autocommit statement, made whole or not
 * at all, so nothing needs them; but a backend that answers a closed Unix
 * socket logs "could not send data to client: Broken pipe" and "FATAL:
 * connection to client lost". A healthy server answers a tick in a few ms
 * (p99 14 ms at load 6 here): this lets those end cleanly, and cuts off only
 * ticks behind a lock or on an overloaded server, where waiting costs most.
 */
#define STOP_TICK_GRACE_USEC (100 * USEC_PER_MSEC)
#define HEALTH_PERIOD_USEC   USEC_PER_SEC

static void report_diag(const PqevConfDiag *d, void *arg)
{
	bool *to_stdout = arg;

	if (to_stdout && *to_stdout) {
		printf("%s: %s\n", d->severity == PQEV_CONF_ERROR ? "error" : "warning",
		       d->message);
		return;
	}
	if (d->severity == PQEV_CONF_ERROR)
		pqev_log_error(NULL, "%s", d->message);
	else
		pqev_log_warning(NULL, "%s", d->message);
}

/* The directory we were started in: relative paths are taken from it, also after
 * -d moved us to "/". */
static char *start_dir;

/* `path` made absolute against start_dir (malloc'd), or NULL when out of memory. */
static char *absolute(const char *path)
{
	char *abs;

	if (path[0] == '/' || !start_dir)
		return strdup(path);
	abs = malloc(strlen(start_dir) + strlen(path) + 2);
	if (abs)
		sprintf(abs, "%s/%s", start_dir, path);
	return abs;
}

static int load_config(const char *path, const TickerConfig *old, TickerConfig **out,
		       bool to_stdout)
{
	void *cfg = NULL;
	int rc = pqev_conf_load_file(&ticker_config_schema, path, old, &cfg, report_diag,
				     &to_stdout);

	*out = cfg;
	return rc;
}

/* A failure is logged when it starts, not for each message it drops (a full
   listener queue drops every watchdog ping until it is read). */
static void send_notify(int rc, const char *what)
{
	static int last_rc;

	if (rc < 0 && rc != last_rc)
		pqev_log_debug(NULL, "sd_notify %s: %s", what, strerror(-rc));
	last_rc = rc < 0 ? rc : 0;
}

static int configure_logging(Ticker *t, const TickerCli *cli)
{
	const MainCfg *m = &t->cfg->main;
	PqevLogSettings s;
	int level = PQEV_LOG_INFO + cli->verbose;

	memset(&s, 0, sizeof(s));
	s.level = level > PQEV_LOG_NOISE ? PQEV_LOG_NOISE : (PqevLogLevel)level;
	s.format = (PqevLogFormat)m->log_format;
	s.quiet = cli->quiet;
	s.journal = PQEV_LOG_JOURNAL_AUTO;
	s.logfile = m->logfile;
	if (m->syslog == TICKER_SYSLOG_AUTO)
		s.syslog = getenv("JOURNAL_STREAM") == NULL;
	else
		s.syslog = m->syslog == TICKER_SYSLOG_ON;
	s.syslog_ident = m->syslog_ident;
	s.syslog_facility = m->syslog_facility;
	t->syslog_wanted = s.syslog;
	return pqev_log_configure(&s);
}

/* ---- timers ---- */

static void arm(struct event *ev, usec_t delay)
{
	struct timeval tv = pqev_usec_to_timeval(delay);

	evtimer_add(ev, &tv);
}

static void update_status(Ticker *t)
{
	static char last[256];
	char buf[256];
	int rc;

	if (!pqev_sd_enabled())
		return;
	stats_status_text(t, buf, sizeof(buf));
	if (strcmp(buf, last) == 0)
		return;
	rc = pqev_sd_status(buf);
	/* a status the listener had no room for is sent again next time */
	if (rc > 0)
		snprintf(last, sizeof(last), "%s", buf);
	send_notify(rc, "STATUS");
}

static void on_stats(evutil_socket_t fd, short what, void *arg)
{
	Ticker *t = arg;

	stats_log_line(t);
	if (t->cfg->main.stats_period > 0)
		arm(t->stats_timer, t->cfg->main.stats_period);
}

static void on_health(evutil_socket_t fd, short what, void *arg)
{
	Ticker *t = arg;

	(void)node_check_health(t);
	if (stats_check_health(t)) {
		pqev_log_fatal(NULL, "a database stayed unreachable and unreachable_action = exit");
		t->exit_code = EXIT_UNREACHABLE;
		send_notify(pqev_sd_stopping("unreachable database"), "STOPPING");
		event_base_loopbreak(t->base);
		return;
	}
	update_status(t);
	arm(t->health_timer, HEALTH_PERIOD_USEC);
}

static usec_t watchdog_every;

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	Ticker *t = arg;

	send_notify(pqev_sd_watchdog(), "WATCHDOG");
	arm(t->watchdog_timer, watchdog_every);
}

/* ---- signals ---- */

static TickerCli cli;

static void on_reload(int signo, void *arg)
{
	Ticker *t = arg;
	TickerConfig *fresh = NULL, *old;
	int rc;

	send_notify(pqev_sd_reloading("reloading"), "RELOADING");
	pqev_log_info(NULL, "Got SIGHUP, re-reading config");
	pqev_clock_refresh();
	rc = load_config(t->config_path, t->cfg, &fresh, false);
	if (rc < 0) {
		/* the cause was reported above */
		pqev_log_error(NULL, "reload failed; keeping the running configuration");
		send_notify(pqev_sd_ready("reload failed, running with the old configuration"),
			    "READY");
		return;
	}
	old = t->cfg;
	t->cfg = fresh;
	rc = configure_logging(t, &cli);
	if (rc < 0)
		pqev_log_error(NULL, "logging: %s; keeping the old outputs", strerror(-rc));
	pqev_connlimit_set_max(t->limit, (unsigned)t->cfg->main.max_connecting);
	if (http_configure(t, t->cfg->main.metrics_listen) < 0)
		pqev_log_error(NULL, "metrics endpoint is off until the next reload");
	registry_apply(t, t->cfg);
	node_apply(t, t->cfg);
	if (t->cfg->main.stats_period > 0)
		arm(t->stats_timer, t->cfg->main.stats_period);
	else
		evtimer_del(t->stats_timer);
	ticker_config_free(old);
	pqev_log_info(NULL, "configuration reloaded");
	send_notify(pqev_sd_ready("running"), "READY");
	update_status(t);
}

static usec_t stop_deadline, stop_grace_end, stop_at;

/* Send the cancels owed; count the databases the stop still waits for, and the ticks in flight. */
static unsigned count_owed(Ticker *t, unsigned *ticks)
{
	unsigned n = 0;

	*ticks = 0;
	for (Cluster *cl = t->clusters; cl; cl = cl->next) {
		/* a cancel held up by a tick may find a free session by now */
		cluster_stop_cancels(cl);
		for (Db *db = cl->dbs; db; db = db->next) {
			n += db_stop_owed(db);
			*ticks += db_tick_in_flight(db);
		}
	}
	return n;
}

static void on_stop_check(evutil_socket_t fd, short what, void *arg)
{
	Ticker *t = arg;
	usec_t now = pqev_clock_refresh();
	unsigned ticks, owed = count_owed(t, &ticks);

	if (!owed && node_all_stopped(t) && (!ticks || now >= stop_grace_end)) {
		pqev_log_debug(NULL, "stop: work in flight done after %.3f s (%u ticks cut off)",
			       pqev_usec_to_sec(now - stop_at), ticks);
		event_base_loopexit(t->base, NULL);
		return;
	}
	if (now >= stop_deadline) {
		pqev_log_warning(NULL, "stop_timeout reached with queries in flight, closing");
		event_base_loopexit(t->base, NULL);
		return;
	}
	arm(t->stop_timer, STOP_POLL_USEC);
}

static void on_graceful_stop(int signo, void *arg)
{
	Ticker *t = arg;
	unsigned ticks, owed;
	usec_t grace = STOP_TICK_GRACE_USEC;

	pqev_log_info(NULL, "Got %s, shutting down", signo == SIGINT ? "SIGINT" : "SIGTERM");
	send_notify(pqev_sd_stopping("stopping"), "STOPPING");
	t->stopping = true;
	node_stop_all(t);
	for (Cluster *cl = t->clusters; cl; cl = cl->next)
		for (Db *db = cl->dbs; db; db = db->next)
			db_stop(db);
	evtimer_del(t->stats_timer);
	evtimer_del(t->health_timer);
	stop_at = pqev_clock_refresh();
	owed = count_owed(t, &ticks);
	pqev_log_debug(NULL, "stop: %u ticks in flight, %u cancels owed", ticks, owed);
	if (grace > t->cfg->main.stop_timeout)
		grace = t->cfg->main.stop_timeout;
	stop_grace_end = stop_at + grace;
	stop_deadline = stop_at + t->cfg->main.stop_timeout;
	arm(t->stop_timer, 0);
}

static void on_immediate_stop(int signo, void *arg)
{
	Ticker *t = arg;

	pqev_log_info(NULL, "Got a second stop signal, exiting now");
	event_base_loopbreak(t->base);
}

/* ---- actions ---- */

static int do_signal(const TickerConfig *cfg)
{
	pid_t pid;
	int rc;
	const char *name = cli.signo == SIGINT    ? "SIGINT"
			   : cli.signo == SIGTERM ? "SIGTERM"
						  : "SIGHUP";

	if (!cfg->main.pidfile || !*cfg->main.pidfile) {
		fprintf(stderr, "pgqd-ev: no pidfile configured in %s\n", cli.config);
		return 1;
	}
	rc = pqev_pidfile_read(cfg->main.pidfile, &pid);
	if (rc < 0 || !pqev_pid_alive(pid)) {
		printf("Old process is not running\n");
		return 1;
	}
	if (kill(pid, cli.signo) < 0) {
		fprintf(stderr, "pgqd-ev: kill %d: %s\n", (int)pid, strerror(errno));
		return 1;
	}
	printf("%s sent\n", name);
	return 0;
}

/* The directory part of `path` ("." for a bare name), malloc'd. */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

/* What start-up would fail on beyond the file itself: the log file and the
 * pidfile's directory. Prints each problem; returns how many. */
static int check_files(const TickerConfig *cfg, const char *path)
{
	const MainCfg *m = &cfg->main;
	int bad = 0;

	if (m->logfile && *m->logfile) {
		/* opened as the daemon will, but without O_CREAT: --check creates nothing */
		int fd = open(m->logfile, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY);

		if (fd >= 0) {
			close(fd);
		} else if (errno != ENOENT) {
			printf("error: %s: [pgqd] logfile: cannot open %s: %s\n", path, m->logfile,
			       strerror(errno));
			bad++;
		} else {
			char *dir = dir_of(m->logfile);

			if (dir && access(dir, W_OK | X_OK) < 0) {
				printf("error: %s: [pgqd] logfile: cannot create %s: %s\n", path,
				       m->logfile, strerror(errno));
				bad++;
			}
			free(dir);
		}
	}
	if (m->pidfile && *m->pidfile) {
		char *dir = dir_of(m->pidfile);

		if (dir && access(dir, W_OK | X_OK) < 0) {
			printf("error: %s: [pgqd] pidfile: cannot create %s: %s\n", path,
			       m->pidfile, strerror(errno));
			bad++;
		}
		free(dir);
	}
	return bad;
}

static int do_check(const char *path)
{
	TickerConfig *cfg = NULL;
	size_t n;
	int rc = load_config(path, NULL, &cfg, true);

	if (rc < 0) {
		/* every cause was printed by report_diag */
		printf("%s: configuration is NOT valid\n", path);
		return 1;
	}
	if (check_files(cfg, path) > 0) {
		printf("%s: configuration is NOT valid\n", path);
		ticker_config_free(cfg);
		return 1;
	}
	n = ticker_config_clusters(cfg, NULL, 0);
	printf("; effective configuration of %s\n", path);
	if (pqev_conf_write(&ticker_config_schema, cfg, stdout) < 0)
		rc = -EIO;
	printf("\n%s: configuration OK (%zu cluster%s)\n", path, n, n == 1 ? "" : "s");
	ticker_config_free(cfg);
	return rc < 0 ? 1 : 0;
}

static int run(Ticker *t)
{
	const MainCfg *m = &t->cfg->main;
	PqevPidfile *pf = NULL;
	PqevSignals *sig = NULL;
	PqevSignalHandlers sh = {
		.on_reload = on_reload,
		.on_graceful_stop = on_graceful_stop,
		.on_immediate_stop = on_immediate_stop,
		.arg = t,
	};
	pid_t other = 0;
	usec_t closing_at;
	unsigned nclosed;
	bool ran = false;
	int rc;

	if (cli.daemon) {
		if (!m->pidfile || !*m->pidfile) {
			pqev_log_fatal(NULL, "daemon needs pidfile configured");
			return 1;
		}
		if ((!m->logfile || !*m->logfile) && !t->syslog_wanted) {
			pqev_log_fatal(NULL, "daemon needs logging configured");
			return 1;
		}
	}
	if (m->pidfile && *m->pidfile) {
		rc = pqev_pidfile_create(m->pidfile, &pf, &other);
		if (rc == -EEXIST) {
			pqev_log_fatal(NULL,
				       "pidfile %s exists, another instance running? (pid %d)",
				       m->pidfile, (int)other);
			return 1;
		}
		if (rc < 0) {
			pqev_log_fatal(NULL, "pidfile %s: %s", m->pidfile, strerror(-rc));
			return 1;
		}
		if (other)
			pqev_log_info(NULL, "stale pidfile of pid %d removed", (int)other);
	}
	if (cli.daemon) {
		rc = pqev_daemonize();
		if (rc < 0) {
			pqev_log_fatal(NULL, "cannot daemonize: %s", strerror(-rc));
			pqev_pidfile_remove(pf);
			return 1;
		}
		if (pqev_pidfile_update(pf) < 0)
			pqev_log_error(NULL, "cannot update pidfile");
	}
	t->base = pqev_clock_base_new();
	if (!t->base) {
		pqev_log_fatal(NULL, "cannot create the event loop");
		pqev_pidfile_remove(pf);
		return 1;
	}
	pqev_clock_attach(t->base);
	t->start_mono = pqev_clock_refresh();
	t->limit = pqev_connlimit_new(t->base, (unsigned)m->max_connecting);
	if (t->limit)
		pqev_connlimit_set_server_hook(t->limit, db_server_event, t);
	sig = pqev_signals_new(t->base, &sh);
	t->stats_timer = evtimer_new(t->base, on_stats, t);
	t->health_timer = evtimer_new(t->base, on_health, t);
	t->watchdog_timer = evtimer_new(t->base, on_watchdog, t);
	t->stop_timer = evtimer_new(t->base, on_stop_check, t);
	if (!t->limit || !sig || !t->stats_timer || !t->health_timer || !t->watchdog_timer ||
	    !t->stop_timer) {
		pqev_log_fatal(NULL, "out of memory at start");
		t->exit_code = 1;
		goto out;
	}
	pqev_log_info(NULL, "Starting pgqd-ev %s", PGQEV_VERSION);
	ticker_fd_init(t);
	if (http_configure(t, m->metrics_listen) < 0) {
		t->exit_code = 1;
		goto out;
	}
	registry_apply(t, t->cfg);
	node_apply(t, t->cfg);
	if (m->stats_period > 0)
		arm(t->stats_timer, m->stats_period);
	arm(t->health_timer, HEALTH_PERIOD_USEC);
	if (pqev_sd_watchdog_interval(&watchdog_every) > 0)
		arm(t->watchdog_timer, watchdog_every);
	send_notify(pqev_sd_ready("running"), "READY");
	if (event_base_dispatch(t->base) < 0) {
		pqev_log_fatal(NULL, "event loop failed");
		t->exit_code = 1;
	}
	ran = true;
out:
	t->stopping = true;
	/* Each ended session wakes its backend, which on a shared CPU runs before
	   we do again: free everything first, then let the exit close every socket
	   in one pass. "stopped" is logged once no session is left but in the
	   sockets the exit closes */
	closing_at = pqev_clock_refresh();
	pqev_conn_defer_finish();
	http_free(t);
	node_free_all(t);
	registry_free_all(t);
	nclosed = pqev_conn_finish_deferred();
	if (ran)
		pqev_log_debug(NULL, "%u connections closed in %.3f s", nclosed,
			       pqev_usec_to_sec(pqev_clock_refresh() - closing_at));
	if (ran && !t->exit_code)
		pqev_log_info(NULL, "stopped");
	if (t->stats_timer)
		event_free(t->stats_timer);
	if (t->health_timer)
		event_free(t->health_timer);
	if (t->watchdog_timer)
		event_free(t->watchdog_timer);
	if (t->stop_timer)
		event_free(t->stop_timer);
	pqev_signals_free(sig);
	if (pqev_connlimit_free(t->limit) < 0)
		pqev_log_error(NULL, "connections left at exit");
	pqev_clock_attach(NULL);
	event_base_free(t->base);
	pqev_pidfile_remove(pf);
	return t->exit_code;
}

int main(int argc, char **argv)
{
	Ticker ticker;
	TickerConfig *cfg = NULL;
	char *config_abs;
	int rc;

	if (cli_parse(argc, argv, &cli) < 0)
		return 1;
	start_dir = getcwd(NULL, 0);
	if (start_dir && pqev_conf_set_path_base(start_dir) < 0) {
		fprintf(stderr, "pgqd-ev: out of memory\n");
		return 1;
	}
	switch (cli.action) {
	case CLI_INI:
		fputs(ticker_sample_ini, stdout);
		return 0;
	case CLI_HELP:
		cli_usage(stdout, argv[0]);
		return 0;
	case CLI_VERSION:
		printf("pgqd-ev version %s\n", PGQEV_VERSION);
		return 0;
	case CLI_CHECK:
		rc = do_check(cli.config);
		free(start_dir);
		return rc;
	default:
		break;
	}
	rc = load_config(cli.config, NULL, &cfg, false);
	if (rc < 0) {
		/* the cause was reported as an error line; no second copy of it */
		if (rc == -ENOMEM)
			pqev_log_fatal(NULL, "out of memory reading config %s", cli.config);
		else
			pqev_log_fatal(NULL, "failed to read config %s", cli.config);
		free(start_dir);
		return 1;
	}
	if (cli.action == CLI_SIGNAL) {
		rc = do_signal(cfg);
		ticker_config_free(cfg);
		free(start_dir);
		return rc;
	}
	memset(&ticker, 0, sizeof(ticker));
	ticker.cfg = cfg;
	/* absolute, so a reload after -d (in "/") still finds it */
	config_abs = absolute(cli.config);
	if (!config_abs) {
		pqev_log_fatal(NULL, "out of memory");
		ticker_config_free(cfg);
		free(start_dir);
		return 1;
	}
	ticker.config_path = config_abs;
	rc = configure_logging(&ticker, &cli);
	if (rc < 0) {
		pqev_log_fatal(NULL, "cannot open logfile %s: %s", cfg->main.logfile,
			       strerror(-rc));
		ticker_config_free(cfg);
		free(config_abs);
		free(start_dir);
		return 1;
	}
	rc = run(&ticker);
	ticker_config_free(ticker.cfg);
	pqev_log_shutdown();
	free(config_abs);
	free(start_dir);
	return rc;
}
