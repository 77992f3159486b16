/*
 * The harness itself, against its private server: databases come from the
 * template with sql/ installed, a LISTEN/NOTIFY round trip works through a
 * libevent loop on a nonblocking libpq connection, and the supervisor can
 * restart and crash the server with clients seeing it.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "pgtest.h"

START_TEST(test_db_from_template)
{
	const char *db = pgt_db_new();
	PGconn *c = pgt_connect(db);
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_namespace where nspname = 'pgq'"), 1);
	ck_assert_int_eq(
		pgt_int(c,
			"select count(*) from pg_database where datname = 'pgqd_tpl' and datistemplate"),
		1);
	PQfinish(c);
	c = pgt_connect(pgt_db_new_empty());
	ck_assert_int_eq(pgt_int(c, "select count(*) from pg_namespace where nspname = 'pgq'"), 0);
	PQfinish(c);
}
END_TEST

struct notify_ctx {
	PGconn *conn;
	struct event_base *base;
	char payload[64];
	int got;
};

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct notify_ctx *nc = arg;
	PGnotify *n;
	ck_assert_int_eq(PQconsumeInput(nc->conn), 1);
	while ((n = PQnotifies(nc->conn)) != NULL) {
		snprintf(nc->payload, sizeof(nc->payload), "%s", n->extra);
		nc->got++;
		PQfreemem(n);
	}
	if (nc->got)
		event_base_loopbreak(nc->base);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

START_TEST(test_listen_notify_roundtrip)
{
	const char *db = pgt_db_new();
	struct notify_ctx nc = {0};
	struct event *rd, *wd;
	struct timeval limit = {10, 0};
	PGconn *sender;

	nc.conn = pgt_connect(db);
	pgt_exec(nc.conn, "listen pgqev_harness");
	ck_assert_int_eq(PQsetnonblocking(nc.conn, 1), 0);
	nc.base = event_base_new();
	rd = event_new(nc.base, PQsocket(nc.conn), EV_READ | EV_PERSIST, on_readable, &nc);
	wd = evtimer_new(nc.base, on_watchdog, nc.base);
	event_add(rd, NULL);
	evtimer_add(wd, &limit);

	sender = pgt_connect(db);
	pgt_exec(sender, "select pg_notify('pgqev_harness', 'hello ' || 42)");
	event_base_dispatch(nc.base);

	ck_assert_int_eq(nc.got, 1);
	ck_assert_str_eq(nc.payload, "hello 42");
	event_free(rd);
	event_free(wd);
	event_base_free(nc.base);
	PQfinish(sender);
	PQfinish(nc.conn);
}
END_TEST

START_TEST(test_server_restart_and_crash)
{
	const char *db = pgt_db_new();
	PGconn *c = pgt_connect(db);
	PGresult *r;
	int64_t pid1 = pgt_int(c, "select pg_backend_pid()");

	pgt_server_restart();
	r = PQexec(c, "select 1");
	ck_assert_int_ne(PQresultStatus(r), PGRES_TUPLES_OK); /* the old session is gone */
	PQclear(r);
	PQfinish(c);
	c = pgt_connect(db);
	ck_assert_int_ne(pgt_int(c, "select pg_backend_pid()"), pid1);

	pgt_server_crash();
	ck_assert_int_eq(PQping(pgt_connstr(db, false)), PQPING_NO_RESPONSE);
	pgt_server_start();
	PQfinish(c);
	c = pgt_connect(db);
	ck_assert_int_eq(pgt_int(c, "select 40 + 2"), 42);
	/* TCP on 127.0.0.1 works too (for keepalive and address tests) */
	ck_assert_int_eq(PQping(pgt_connstr(db, true)), PQPING_OK);
	PQfinish(c);
}
END_TEST

START_TEST(test_error_helper)
{
	PGconn *c = pgt_connect(pgt_db_new());
	char *msg = pgt_error(c, "select 1/0");
	ck_assert_str_eq(msg, "division by zero");
	free(msg);
	PQfinish(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("harness");
	TCase *tc = pgt_tcase("server", 120);
	tcase_add_test(tc, test_db_from_template);
	tcase_add_test(tc, test_listen_notify_roundtrip);
	tcase_add_test(tc, test_server_restart_and_crash);
	tcase_add_test(tc, test_error_helper);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
