/*
 * pgqctl against a private PostgreSQL, second part: bad input of every kind the
 * issue lists, tail stopped by SIGINT and SIGTERM, status --all over an ini with
 * an unreachable cluster, and the commands on Debian's PgQ 3.5 C extension.
 * (Two binaries so meson runs them side by side, each with its own server.)
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctlrun.h"
#include "pgtest.h"

#define RUN(...) ctr_run(NULL, "-d", d, __VA_ARGS__, (const char *)NULL)

START_TEST(test_bad_input)
{
	char *db = strdup(pgt_db_new());
	char *empty = strdup(pgt_db_new_empty());
	char d[1024], bad[1024];
	PGconn *c = pgt_connect(db);
	CtlRun r;
	int64_t t0;

	snprintf(d, sizeof(d), "%s", ctr_dsn(db, NULL));
	pgt_exec(c, "select pgq.create_queue('q')");
	/* names: what cannot work is refused, and nothing is created */
	r = RUN("create", "");
	ctr_expect(&r, 1, NULL, "queue name is empty");
	ctr_free(&r);
	r = RUN("create", "two\nlines");
	ctr_expect(&r, 1, NULL,
		   "queue name \"two\\x0alines\" holds a control character (byte 0x0a)");
	ctr_free(&r);
	{
		char *longname = malloc(2100);
		memset(longname, 'n', 2050);
		longname[2050] = '\0';
		r = RUN("create", longname);
		ctr_expect(&r, 1, NULL, "is 2050 bytes long: at most 2000");
		ctr_free(&r);
		free(longname);
	}
	r = RUN("register", "q", "tab\there");
	ctr_expect(&r, 1, NULL, "consumer name \"tab\\x09here\" holds a control character");
	ctr_free(&r);
	r = RUN("create", "caf\xc3");
	ctr_expect(&r, 1, NULL, "create queue \"caf\xc3\": invalid byte sequence");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.queue"), 1);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.consumer"), 0);
	/* unknown queue / consumer */
	r = RUN("insert", "nosuch", "t", "d");
	ctr_expect(&r, 1, NULL, "insert into queue \"nosuch\": no such queue \"nosuch\"");
	ctr_free(&r);
	r = RUN("unregister", "q", "ghost");
	ctr_expect(&r, 1, NULL, "no such consumer");
	ctr_free(&r);
	/* a bad connection string never shows its password */
	r = ctr_run(NULL, "-d", "host=/tmp password=s3cr3t-pw bogus_key=1", "queues",
		    (const char *)NULL);
	ck_assert_int_ne(r.rc, 0);
	ck_assert_ptr_null(strstr(r.out, "s3cr3t-pw"));
	ck_assert_ptr_null(strstr(r.err, "s3cr3t-pw"));
	ck_assert_ptr_nonnull(strstr(r.err, "bad connection string"));
	ctr_free(&r);
	r = ctr_run(NULL, "-d", "postgresql://u:s3cr3t-pw@127.0.0.1:1/x?bogus=1", "queues",
		    (const char *)NULL);
	ck_assert_int_ne(r.rc, 0);
	ck_assert_ptr_null(strstr(r.err, "s3cr3t-pw"));
	ctr_free(&r);
	/* a server that never answers: bounded by the connect timeout; no password shown */
	{
		int ls = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET,
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t sl = sizeof(sa);

		ck_assert_int_eq(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
		ck_assert_int_eq(listen(ls, 8), 0);
		ck_assert_int_eq(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
		snprintf(
			bad, sizeof(bad),
			"host=127.0.0.1 port=%d user=x password=s3cr3t-pw dbname=x sslmode=disable",
			ntohs(sa.sin_port));
		t0 = pgt_now_ms();
		r = ctr_run(NULL, "--connect-timeout", "1", "-d", bad, "queues",
			    (const char *)NULL);
		ctr_expect(&r, 1, NULL, "x: connect");
		ck_assert_int_ge(pgt_now_ms() - t0, 900);
		ck_assert_int_lt(pgt_now_ms() - t0, 8000);
		ck_assert_ptr_null(strstr(r.err, "s3cr3t-pw"));
		ctr_free(&r);
		/* Ctrl-C ends a command that waits, at once, with 128+SIGINT */
		{
			const char *argv[] = {"--connect-timeout", "60", "-d", bad, "queues", NULL};
			struct pollfd pf = {.fd = ls, .events = POLLIN};
			CtlProc *p;
			int cs;

			/* drop the earlier attempt still in the backlog */
			fcntl(ls, F_SETFL, O_NONBLOCK);
			while ((cs = accept(ls, NULL, NULL)) >= 0)
				close(cs);
			p = ctr_spawn(argv);

			ck_assert_int_eq(poll(&pf, 1, 20000), 1); /* pgqctl is connecting */
			cs = accept(ls, NULL, NULL);
			/* it sent its startup packet: its signal handlers are in place */
			pf.fd = cs;
			ck_assert_int_eq(poll(&pf, 1, 20000), 1);
			ck_assert_int_ge(cs, 0);
			t0 = pgt_now_ms();
			ctr_signal(p, SIGINT);
			ck_assert_int_eq(ctr_wait_exit(p, 20000), 130);
			ck_assert_int_lt(pgt_now_ms() - t0, 10000);
			ck_assert_ptr_nonnull(strstr(ctr_err(p), "interrupted"));
			ctr_free_proc(p);
			close(cs);
		}
		close(ls);
	}
	r = ctr_run(NULL, "-d", "host=127.0.0.1 port=1 dbname=x", "queues", (const char *)NULL);
	ctr_expect(&r, 1, NULL, "x: connect");
	ctr_free(&r);
	/* a database without PgQ */
	snprintf(bad, sizeof(bad), "%s", ctr_dsn(empty, NULL));
	r = ctr_run(NULL, "-d", bad, "queues", (const char *)NULL);
	ctr_expect(&r, 1, NULL, "no PgQ in this database");
	ctr_free(&r);
	r = ctr_run(NULL, "-d", bad, "status", (const char *)NULL);
	ctr_expect(&r, 1, NULL, "no PgQ in this database");
	ctr_free(&r);
	/* a missing privilege names the role that has it */
	pgt_exec(c, "do $$ begin if not exists (select from pg_roles where rolname = 'ctl_nobody')"
		    " then create role ctl_nobody login; end if; end $$");
	snprintf(bad, sizeof(bad), "%s", ctr_dsn(db, "ctl_nobody"));
	r = ctr_run(NULL, "-d", bad, "create", "newq", (const char *)NULL);
	ctr_expect(&r, 1, NULL, "(grant the role pgq_admin to this user)");
	ctr_free(&r);
	r = ctr_run(NULL, "-d", bad, "insert", "q", "t", "d", (const char *)NULL);
	ctr_expect(&r, 1, NULL, "(grant the role pgq_writer to this user)");
	ctr_free(&r);
	r = ctr_run(NULL, "-d", bad, "register", "q", "c", (const char *)NULL);
	ctr_expect(&r, 1, NULL, "(grant the role pgq_reader to this user)");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.queue"), 1);
	/* usage */
	r = RUN("nosuchcommand");
	ctr_expect(&r, 2, NULL, "unknown command \"nosuchcommand\"");
	ctr_free(&r);
	r = RUN("drop");
	ctr_expect(&r, 2, NULL, "needs exactly one QUEUE");
	ctr_free(&r);
	r = RUN("queues", "--bogus");
	ctr_expect(&r, 2, NULL, "unknown option --bogus");
	ctr_free(&r);
	r = ctr_run(NULL, "--all", "status", (const char *)NULL);
	ctr_expect(&r, 2, NULL, "need -c INI");
	ctr_free(&r);
	PQfinish(c);
	free(db);
	free(empty);
}
END_TEST

/* Names with quotes, semicolons, spaces and UTF-8 through every command, on `db`
   (our SQL or Debian's PgQ 3.5): they reach the server only as parameters. */
static const char *const odd[] = {
	"it's",
	"say \"hi\"",
	"x'); drop table pgq.queue; --",
	"two words",
	"caf\xc3\xa9 \xe2\x98\x95",
};
/* the same as JSON strings */
static const char *const odd_json[] = {
	"\"it's\"",      "\"say \\\"hi\\\"\"",           "\"x'); drop table pgq.queue; --\"",
	"\"two words\"", "\"caf\xc3\xa9 \xe2\x98\x95\"",
};
#define NODD 5

static int64_t count_p(PGconn *c, const char *sql, const char *a, const char *b)
{
	const char *p[2] = {a, b};
	PGresult *res = PQexecParams(c, sql, b ? 2 : 1, NULL, p, NULL, NULL, 0);
	int64_t v;

	ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
	v = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	return v;
}

static void tick_p(PGconn *c, const char *queue)
{
	const char *p[1] = {queue};
	PGresult *res = PQexecParams(c, "select pgq.force_tick($1), pgq.ticker($1)", 1, NULL, p,
				     NULL, NULL, 0);

	ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "tick: %s", PQerrorMessage(c));
	PQclear(res);
}

static void odd_names_on(const char *db, PGconn *c)
{
	char d[1024], data[64];
	CtlRun r;

	snprintf(d, sizeof(d), "%s", ctr_dsn(db, NULL));
	for (int i = 0; i < NODD; i++) {
		const char *q = odd[i], *co = odd[(i + 1) % NODD];

		r = RUN("create", q, "ticker_max_count=5");
		ctr_expect(&r, 0, "created queue \"", NULL);
		ctr_free(&r);
		ck_assert_int_eq(count_p(c,
					 "select count(*) from pgq.queue where queue_name = $1"
					 " and queue_ticker_max_count = 5",
					 q, NULL),
				 1);
		r = RUN("register", q, co);
		ctr_expect(&r, 0, "registered \"", NULL);
		ctr_free(&r);
		ck_assert_int_eq(
			count_p(c, "select count(*) from pgq.get_consumer_info($1, $2)", q, co), 1);
		snprintf(data, sizeof(data), "data %d", i);
		r = RUN("insert", q, "t", data);
		ctr_expect(&r, 0, NULL, NULL);
		ctr_free(&r);
		r = ctr_run("s\tfrom stdin\n", "-d", d, "insert", q, "--stdin", (const char *)NULL);
		ctr_expect(&r, 0, NULL, "inserted 1 events");
		ctr_free(&r);
		tick_p(c, q);
		r = RUN("events", q, "--consumer", co);
		ctr_expect(&r, 0, data, NULL);
		ck_assert_ptr_nonnull(strstr(r.out, "\ts\tfrom stdin\n"));
		ctr_free(&r);
		r = RUN("config", q, "ticker_max_count=6");
		ctr_expect(&r, 0, "1 setting changed", NULL);
		ctr_free(&r);
	}
	r = RUN("status", "--json");
	ck_assert_msg(r.rc == 0 || r.rc == 3, "status: %d %s", r.rc, r.err);
	ctr_json_eq(c, r.out, "{ok}", r.rc == 0 ? "true" : "false");
	for (int i = 0; i < NODD; i++) {
		char key[256];

		snprintf(key, sizeof(key), "\"queue\":%s", odd_json[i]);
		ck_assert_msg(strstr(r.out, key), "status --json lacks %s: %s", key, r.out);
		snprintf(key, sizeof(key), "\"consumer\":%s", odd_json[(i + 1) % NODD]);
		ck_assert_msg(strstr(r.out, key), "status --json lacks %s", key);
	}
	ctr_free(&r);
	r = RUN("status");
	ck_assert_int_ne(r.rc, 1);
	for (int i = 0; i < NODD; i++)
		ck_assert_msg(strstr(r.out, odd[i]), "status lacks %s: %s", odd[i], r.out);
	ctr_free(&r);
	r = RUN("consumers", odd[1]);
	ctr_expect(&r, 0, odd[2], NULL);
	ctr_free(&r);
	/* tail: its LISTEN channel (our SQL) is built from the name (one with quotes) */
	for (int i = 1; i < 2; i++) {
		const char *argv[] = {"-d", d, "tail", odd[i], NULL};
		CtlProc *p = ctr_spawn(argv);

		ck_assert_msg(ctr_wait_out(p, "\tt\tdata ", 20000), "tail %s printed: %s / %s",
			      odd[i], ctr_out(p), ctr_err(p));
		ctr_signal(p, SIGINT);
		ck_assert_int_eq(ctr_wait_exit(p, 20000), 0);
		ctr_free_proc(p);
		ck_assert_int_eq(count_p(c, "select count(*) from pgq.get_consumer_info($1, null)",
					 odd[i], NULL),
				 1);
	}
	for (int i = 0; i < NODD; i++) {
		r = RUN("unregister", odd[i], odd[(i + 1) % NODD]);
		ctr_expect(&r, 0, "unregistered", NULL);
		ctr_free(&r);
		r = RUN("drop", odd[i]);
		ctr_expect(&r, 0, "dropped queue \"", NULL);
		ctr_free(&r);
	}
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.queue"), 0);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.consumer"), 0);
}

START_TEST(test_odd_names)
{
	const char *db = pgt_db_new();
	PGconn *c = pgt_connect(db);

	odd_names_on(db, c);
	PQfinish(c);
}
END_TEST

START_TEST(test_odd_names_debian)
{
	const char *db = pgt_db_new_empty();
	PGconn *c = pgt_connect(db);
	PGresult *res = PQexec(c, "create extension pgq");

	if (pgt_missing(PQresultStatus(res) != PGRES_COMMAND_OK,
			"Debian's pgq extension (postgresql-15-pgq3)")) {
		PQclear(res);
		PQfinish(c);
		return;
	}
	PQclear(res);
	odd_names_on(db, c);
	PQfinish(c);
}
END_TEST

static void tail_stops_on(int sig)
{
	const char *db = pgt_db_new();
	char d[1024];
	PGconn *c = pgt_connect(db);
	const char *argv[] = {"-d", d, "tail", "q", NULL};
	CtlProc *p;
	int64_t end;

	snprintf(d, sizeof(d), "%s", ctr_dsn(db, NULL));
	pgt_exec(c, "select pgq.create_queue('q')");
	p = ctr_spawn(argv);
	end = pgt_now_ms() + 20000;
	while (pgt_int(c, "select count(*) from pgq.get_consumer_info('q', null)"
			  " where consumer_name like 'pgqctl_tail_%'") == 0) {
		ck_assert_msg(pgt_now_ms() < end, "tail did not register: %s", ctr_err(p));
		usleep(20000);
	}
	pgt_exec(c, "select pgq.insert_event('q', 'tt', 'hello tail')");
	ctr_tick(c, "q");
	ck_assert_msg(ctr_wait_out(p, "\ttt\thello tail\n", 20000), "tail printed: %s / %s",
		      ctr_out(p), ctr_err(p));
	ctr_signal(p, sig);
	ck_assert_int_eq(ctr_wait_exit(p, 20000), 0);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.get_consumer_info('q', null)"), 0);
	ctr_free_proc(p);
	PQfinish(c);
}

START_TEST(test_tail_sigint)
{
	tail_stops_on(SIGINT);
}
END_TEST

START_TEST(test_tail_sigterm)
{
	tail_stops_on(SIGTERM);
}
END_TEST

START_TEST(test_status_all_with_unreachable)
{
	char *db1 = strdup(pgt_db_new()), *db2 = strdup(pgt_db_new());
	char *db3 = strdup(pgt_db_new_empty());
	char ini[4096], path[1024], list[512];
	PGconn *c = pgt_connect(db1);
	CtlRun r;
	FILE *f;

	pgt_exec(c, "select pgq.create_queue('q1')");
	snprintf(path, sizeof(path), "%s/pgqctl-all.ini", pgt_tmp_dir());
	snprintf(list, sizeof(list), "%s, %s, %s", db1, db2, db3);
	snprintf(ini, sizeof(ini),
		 "[pgqd]\nbase_connstr = host=%s port=%d user=postgres\ndatabase_list = %s\n"
		 "[cluster gone]\nbase_connstr = host=127.0.0.1 port=1 user=postgres\n"
		 "database_list = lost\n",
		 pgt_socket_dir(), pgt_port(), list);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(ini, f);
	fclose(f);
	r = ctr_run(NULL, "-c", path, "--all", "status", (const char *)NULL);
	ctr_expect(&r, 3, "gone/lost: unreachable: ", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, "no PgQ"));
	ck_assert_ptr_nonnull(strstr(r.out, "q1"));
	ctr_free(&r);
	r = ctr_run(NULL, "-c", path, "--all", "--max-conns", "1", "status", "--json",
		    (const char *)NULL);
	ctr_expect(&r, 3, NULL, NULL);
	ctr_json_eq(c, r.out, "{databases,0,database}", db1);
	ctr_json_eq(c, r.out, "{databases,0,queues,0,queue}", "q1");
	ctr_json_eq(c, r.out, "{databases,1,reachable}", "true");
	ctr_json_eq(c, r.out, "{databases,2,pgq}", NULL);
	ctr_json_eq(c, r.out, "{databases,3,database}", "gone/lost");
	ctr_json_eq(c, r.out, "{databases,3,cluster}", "gone");
	ctr_json_eq(c, r.out, "{databases,3,reachable}", "false");
	ctr_free(&r);
	/* one database of the ini */
	r = ctr_run(NULL, "-c", path, "--db", db1, "queues", (const char *)NULL);
	ctr_expect(&r, 0, "q1", NULL);
	ctr_free(&r);
	r = ctr_run(NULL, "-c", path, "--cluster", "nosuch", "status", (const char *)NULL);
	ctr_expect(&r, 1, NULL, "no cluster \"nosuch\"");
	ctr_free(&r);
	PQfinish(c);
	free(db1);
	free(db2);
	free(db3);
}
END_TEST

START_TEST(test_debian_pgq)
{
	const char *db = pgt_db_new_empty();
	char d[1024];
	PGconn *c = pgt_connect(db);
	PGresult *res = PQexec(c, "create extension pgq");
	CtlRun r;
	char *bid;

	if (pgt_missing(PQresultStatus(res) != PGRES_COMMAND_OK,
			"Debian's pgq extension (postgresql-15-pgq3)")) {
		PQclear(res);
		PQfinish(c);
		return;
	}
	PQclear(res);
	snprintf(d, sizeof(d), "%s", ctr_dsn(db, NULL));
	r = RUN("version");
	ctr_expect(&r, 0, "pgq       3.5 (extension pgq)", NULL);
	ctr_free(&r);
	r = RUN("install");
	ctr_expect(&r, 1, NULL, "already installed");
	ctr_free(&r);
	r = RUN("create", "dq", "ticker_max_count=9");
	ctr_expect(&r, 0, "created queue dq", NULL);
	ctr_free(&r);
	r = RUN("create", "dq2", "low_latency=on");
	ctr_expect(&r, 1, NULL, "create queue \"dq2\"");
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pgq.queue"), 1);
	r = RUN("config", "dq");
	ctr_expect(&r, 0, "ticker_max_count", NULL);
	ctr_free(&r);
	r = RUN("register", "dq", "dc");
	ctr_expect(&r, 0, NULL, NULL);
	ctr_free(&r);
	r = RUN("insert", "dq", "t", "debian event");
	ctr_expect(&r, 0, NULL, NULL);
	ctr_free(&r);
	r = ctr_run("a\tb\nc\td\n", "-d", d, "insert", "dq", "--stdin", (const char *)NULL);
	ctr_expect(&r, 0, NULL, "inserted 2 events");
	ctr_free(&r);
	ctr_tick(c, "dq");
	r = RUN("events", "dq", "--consumer", "dc");
	ctr_expect(&r, 0, "\tt\tdebian event\n", NULL);
	ctr_free(&r);
	r = RUN("queues", "--json");
	ctr_json_eq(c, r.out, "{0,ticker_max_count}", "9");
	ctr_free(&r);
	r = RUN("consumers", "--json");
	ctr_json_eq(c, r.out, "{0,consumer}", "dc");
	ctr_free(&r);
	r = RUN("status", "--json");
	ctr_expect(&r, 0, NULL, NULL);
	ctr_json_eq(c, r.out, "{databases,0,pgq_form}", "extension");
	ctr_json_eq(c, r.out, "{databases,0,pgqd_ev}", NULL);
	ctr_json_eq(c, r.out, "{databases,0,queues,0,queue}", "dq");
	ctr_free(&r);
	bid = pgt_value(c, "select pgq.next_batch('dq', 'dc')");
	r = RUN("events", "dq", "--batch", bid);
	ctr_expect(&r, 0, "debian event", NULL);
	ctr_free(&r);
	free(bid);
	r = RUN("unregister", "dq", "dc");
	ctr_expect(&r, 0, NULL, NULL);
	ctr_free(&r);
	r = RUN("drop", "dq");
	ctr_expect(&r, 0, NULL, NULL);
	ctr_free(&r);
	r = RUN("uninstall", "--yes-drop-all-queues");
	ctr_expect(&r, 0, "(extension)", NULL);
	ctr_free(&r);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_extension where extname = 'pgq'"), 0);
	PQfinish(c);
}
END_TEST

/* status --watch redraws until Ctrl-C. */
START_TEST(test_status_watch)
{
	const char *db = pgt_db_new();
	char d[1024];
	PGconn *c = pgt_connect(db);
	const char *argv[] = {"-d", d, "status", "--watch", "0.2", NULL};
	CtlProc *p;
	const char *o;
	int n = 0;

	snprintf(d, sizeof(d), "%s", ctr_dsn(db, NULL));
	pgt_exec(c, "select pgq.create_queue('w')");
	p = ctr_spawn(argv);
	ck_assert(ctr_wait_out(p, "Queues", 20000));
	/* wait for a third round */
	for (int64_t end = pgt_now_ms() + 20000; n < 3 && pgt_now_ms() < end;) {
		ctr_wait_out(p, "\x01never", 100);
		n = 0;
		for (o = ctr_out(p); (o = strstr(o, "\nQueues\n")); o++)
			n++;
	}
	ck_assert_int_ge(n, 3);
	ctr_signal(p, SIGINT);
	ck_assert_int_eq(ctr_wait_exit(p, 10000), 0);
	ctr_free_proc(p);
	PQfinish(c);
}
END_TEST

/* ticker: the real daemon's /health, its address from the same ini. */
START_TEST(test_ticker_health)
{
	char *db = strdup(pgt_db_new());
	char ini[2048], path[1024], daemon[1024];
	const char *b = getenv("PGQD_TEST_BUILDDIR");
	int ls = socket(AF_INET, SOCK_STREAM, 0), port;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	CtlRun r = {0};
	pid_t pid;
	FILE *f;

	/* a free port: bound, read, closed (the daemon binds it next) */
	ck_assert_int_eq(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
	port = ntohs(sa.sin_port);
	close(ls);
	snprintf(path, sizeof(path), "%s/pgqctl-ticker.ini", pgt_tmp_dir());
	snprintf(ini, sizeof(ini),
		 "[pgqd]\nbase_connstr = host=%s port=%d user=postgres\ndatabase_list = %s\n"
		 "metrics_listen = 127.0.0.1:%d\nsyslog = 0\n",
		 pgt_socket_dir(), pgt_port(), db, port);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(ini, f);
	fclose(f);
	/* nothing listens yet: a clear error */
	r = ctr_run(NULL, "-c", path, "ticker", (const char *)NULL);
	ctr_expect(&r, 1, NULL, "ticker: connect to 127.0.0.1:");
	ctr_free(&r);
	snprintf(daemon, sizeof(daemon), "%s/src/ticker/pgqd-ev", b);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int nul = open("/dev/null", O_WRONLY);
		dup2(nul, STDERR_FILENO);
		execl(daemon, "pgqd-ev", path, (char *)NULL);
		_exit(127);
	}
	for (int64_t end = pgt_now_ms() + 20000; pgt_now_ms() < end; usleep(50000)) {
		ctr_free(&r);
		r = ctr_run(NULL, "-c", path, "ticker", (const char *)NULL);
		if (r.rc == 0 && strstr(r.out, "running"))
			break;
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	ctr_expect(&r, 0, "pgqd-ev at 127.0.0.1:", NULL);
	ck_assert_ptr_nonnull(strstr(r.out, db));
	ck_assert_ptr_nonnull(strstr(r.out, "true"));
	ctr_free(&r);
	free(db);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pgqctl-live");
	TCase *tc = pgt_tcase("live", 120);
	PgtOptions o = {.need_server = true};

	tcase_add_test(tc, test_bad_input);
	tcase_add_test(tc, test_odd_names);
	tcase_add_test(tc, test_odd_names_debian);
	tcase_add_test(tc, test_tail_sigint);
	tcase_add_test(tc, test_tail_sigterm);
	tcase_add_test(tc, test_status_all_with_unreachable);
	tcase_add_test(tc, test_debian_pgq);
	tcase_add_test(tc, test_status_watch);
	tcase_add_test(tc, test_ticker_health);
	suite_add_tcase(s, tc);
	return pgt_main(s, &o);
}
