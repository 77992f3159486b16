/*
 * Connection layer logic that needs no server: conninfo validation and the
 * password rule for its errors, labels, channel checks, refusals on a closed
 * connection, state/status names, the connect limiter's bookkeeping, and
 * connections waiting on a server that is down.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_conn.h>
#include <pgqd-ev/pqev_connlimit.h>

#include "pgtest.h"

static struct event_base *base;
static PqevConnLimit *lim;

static void setup(void)
{
	base = event_base_new();
	lim = pqev_connlimit_new(base, 2);
}

static void teardown(void)
{
	ck_assert_int_eq(pqev_connlimit_free(lim), 0);
	event_base_free(base);
}

static PqevConn *mk(const char *conninfo, const char *name)
{
	PqevConnConfig cfg;
	pqev_conn_config_init(&cfg);
	cfg.conninfo = conninfo;
	cfg.name = name;
	PqevConn *c = pqev_conn_new(lim, &cfg, NULL);
	ck_assert_ptr_nonnull(c);
	return c;
}

START_TEST(test_bad_conninfo_named_and_no_password)
{
	PqevConn *c = mk("dbname=orders password=s3cret bogus_key=1", NULL);
	ck_assert_int_eq(pqev_conn_start(c), -EINVAL);
	ck_assert_int_eq(pqev_conn_state(c), PQEV_CONN_CLOSED);
	ck_assert_msg(strstr(pqev_conn_error(c), "s3cret") == NULL, "%s", pqev_conn_error(c));
	ck_assert_msg(strstr(pqev_conn_error(c), "invalid conninfo") != NULL, "%s",
		      pqev_conn_error(c));
	pqev_conn_free(c);

	/* without a password the libpq reason is shown */
	c = mk("dbname=orders bogus_key=1", "orders-db");
	ck_assert_int_eq(pqev_conn_start(c), -EINVAL);
	ck_assert_msg(strncmp(pqev_conn_error(c), "orders-db: ", 11) == 0, "%s",
		      pqev_conn_error(c));
	ck_assert_msg(strstr(pqev_conn_error(c), "bogus_key") != NULL, "%s", pqev_conn_error(c));
	pqev_conn_free(c);

	/* a malformed string where libpq would echo a fragment of the password */
	c = mk("dbname=x password=ab cd", NULL);
	ck_assert_int_eq(pqev_conn_start(c), -EINVAL);
	ck_assert_msg(strstr(pqev_conn_error(c), "cd") == NULL, "%s", pqev_conn_error(c));
	pqev_conn_free(c);

	/* a URI's password is in the userinfo, and libpq quotes a bad %-token or the
	   whole URI in its parse errors */
	const char *uris[] = {"postgresql://u:se%zzcret@localhost/db",
			      "postgres://u:secret%@localhost/db", "postgresql://u:secret@[::1/db"};
	for (size_t i = 0; i < sizeof(uris) / sizeof(uris[0]); i++) {
		c = mk(uris[i], NULL);
		ck_assert_int_eq(pqev_conn_start(c), -EINVAL);
		ck_assert_msg(strstr(pqev_conn_error(c), "cret") == NULL, "%s", pqev_conn_error(c));
		pqev_conn_free(c);
	}
}
END_TEST

START_TEST(test_labels_sanitized)
{
	PqevConn *c = mk("dbname=plain", "bad\nname\x01");
	ck_assert_str_eq(pqev_conn_name(c), "bad?name?");
	pqev_conn_free(c);
}
END_TEST

START_TEST(test_closed_connection_refuses)
{
	PqevConn *c = mk("dbname=x", NULL);
	PqevQuery q = {.sql = "select 1", .on_done = (PqevDoneFn)1};
	ck_assert_int_eq(pqev_conn_send(c, &q, NULL), -ENOTCONN);
	q.on_done = NULL;
	ck_assert_int_eq(pqev_conn_send(c, &q, NULL), -EINVAL);
	q.on_done = (PqevDoneFn)1;
	q.flags = PQEV_Q_SIMPLE;
	q.nparams = 1;
	q.params = (const char *const[]){"1"};
	ck_assert_int_eq(pqev_conn_send(c, &q, NULL), -EINVAL);
	ck_assert_int_eq(pqev_conn_listen(c, ""), -EINVAL);
	char longname[80];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[79] = '\0';
	ck_assert_int_eq(pqev_conn_listen(c, longname), -EINVAL);
	ck_assert_int_eq(pqev_conn_listen(c, "we\"ird"), 0);
	ck_assert_int_eq(pqev_conn_listen(c, "we\"ird"), 0);
	ck_assert(pqev_conn_listening(c, "we\"ird"));
	ck_assert_int_eq(pqev_conn_unlisten(c, "other"), -ENOENT);
	ck_assert_int_eq(pqev_conn_unlisten(c, "we\"ird"), 0);
	ck_assert(!pqev_conn_listening(c, "we\"ird"));
	ck_assert_int_eq(pqev_conn_pending(c), 0);
	ck_assert_ptr_null(pqev_conn_pgconn(c));
	ck_assert_int_eq(pqev_conn_backend_pid(c), 0);
	pqev_conn_close(c); /* no-op */
	ck_assert_ptr_null(pqev_conn_free(c));
	ck_assert_ptr_null(pqev_conn_free(NULL));
}
END_TEST

START_TEST(test_names)
{
	ck_assert_str_eq(pqev_conn_state_name(PQEV_CONN_READY), "ready");
	ck_assert_str_eq(pqev_conn_state_name(PQEV_CONN_BACKOFF), "backoff");
	ck_assert_str_eq(pqev_conn_state_name((PqevConnState)99), "invalid");
	ck_assert_str_eq(pqev_status_name(PQEV_CONN_LOST), "conn_lost");
	ck_assert_str_eq(pqev_status_name((PqevStatus)-1), "invalid");
}
END_TEST

START_TEST(test_limiter_queues_and_frees)
{
	/* unix socket paths need no resolving: connect attempts start at once */
	PqevConn *c[4];
	for (int i = 0; i < 4; i++) {
		c[i] = mk("host=/nonexistent-dir dbname=x", NULL);
		ck_assert_int_eq(pqev_conn_start(c[i]), 0);
	}
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_uint_le(pqev_connlimit_active(lim), 2);
	ck_assert_int_eq(pqev_connlimit_free(lim), -EBUSY);
	for (int i = 0; i < 4; i++)
		pqev_conn_free(c[i]);
	ck_assert_uint_eq(pqev_connlimit_active(lim), 0);
	ck_assert_uint_eq(pqev_connlimit_waiting(lim), 0);
}
END_TEST

static int dbg_calls;
static char dbg_name[64];

static void on_debug(const char *name, const char *msg, void *arg)
{
	dbg_calls++;
	snprintf(dbg_name, sizeof(dbg_name), "%s", name);
	ck_assert_ptr_nonnull(msg);
}

START_TEST(test_debug_hook)
{
	pqev_connlimit_set_debug(lim, on_debug, NULL);
	PqevConn *c = mk("host=/nonexistent-dir dbname=hooked", NULL);
	ck_assert_int_eq(pqev_conn_start(c), 0);
	ck_assert_int_eq(pqev_conn_state(c), PQEV_CONN_BACKOFF);
	ck_assert_uint_eq(pqev_conn_streak(c), 0); /* no attempt inside start */
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_gt(dbg_calls, 0); /* state changes went to the hook */
	ck_assert_str_eq(dbg_name, "hooked");
	ck_assert_int_eq(pqev_conn_state(c), PQEV_CONN_BACKOFF);
	ck_assert_uint_eq(pqev_conn_streak(c), 1);
	ck_assert_msg(strstr(pqev_conn_error(c), "hooked: connect failed") == pqev_conn_error(c),
		      "%s", pqev_conn_error(c));
	pqev_conn_free(c);
	pqev_connlimit_set_debug(lim, NULL, NULL);
}
END_TEST

typedef struct Watch {
	int events, server_down, waits_over;
	usec_t max_retry;
	char last[512];
} Watch;

static void on_watch(PqevConn *c, const PqevConnEvent *ev, void *arg)
{
	Watch *w = arg;
	w->events++;
	if (ev->server_down)
		w->server_down++;
	if (ev->retry_in > w->max_retry)
		w->max_retry = ev->retry_in;
	snprintf(w->last, sizeof(w->last), "%s", ev->message);
}

static void stop_loop(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(base);
}

/*
 * A missing socket says the server is down: the connections wait on their server,
 * which is probed every quarter to half of retry_base by one of them, instead of
 * each backing off toward retry_cap. libpq's two-line text reads as one sentence
 * pair ("directory. Is the server"), not "directory  Is".
 */
START_TEST(test_server_down_is_probed_not_backed_off)
{
	Watch w = {0};
	PqevConnCallbacks cb = {.on_event = on_watch, .arg = &w};
	PqevConnConfig cfg;
	PqevConn *c[3];
	struct timeval tv = {1, 500000};

	pqev_conn_config_init(&cfg);
	cfg.conninfo = "host=/nonexistent-dir port=5999 dbname=x";
	cfg.retry_base = 200 * USEC_PER_MSEC;
	cfg.retry_cap = 60 * USEC_PER_SEC;
	for (int i = 0; i < 3; i++) {
		c[i] = pqev_conn_new(lim, &cfg, &cb);
		ck_assert_ptr_nonnull(c[i]);
		ck_assert_int_eq(pqev_conn_start(c[i]), 0);
	}
	event_base_once(base, -1, EV_TIMEOUT, stop_loop, NULL, &tv);
	event_base_dispatch(base);
	/* own backoff would allow about 4 attempts per connection in 1.5 s (0.1, 0.3,
	   0.7, 1.5 s); probes come every 50-100 ms whatever the outage length */
	ck_assert_int_ge(w.events, 15);
	ck_assert_int_eq(w.server_down, w.events);
	ck_assert_uint_le(w.max_retry, 100 * USEC_PER_MSEC);
	ck_assert_msg(strstr(w.last, "No such file or directory. Is the server running"), "%s",
		      w.last);
	ck_assert_msg(!strstr(w.last, "  ") || strstr(w.last, "FATAL:  "), "%s", w.last);
	ck_assert_msg(!strchr(w.last, '\n') && !strchr(w.last, '\t'), "%s", w.last);
	for (int i = 0; i < 3; i++)
		pqev_conn_free(c[i]);
}
END_TEST

static void run_ms(int ms)
{
	struct timeval tv = {0, ms * 1000};
	event_base_once(base, -1, EV_TIMEOUT, stop_loop, NULL, &tv);
	event_base_dispatch(base);
}

/*
 * A server seen down whose waiters all went away (closed) is not down for good:
 * the next attempt on it is made for real (as its probe). Here the "server" is a
 * listening unix socket that never answers, so a real attempt stays connecting.
 */
START_TEST(test_server_down_without_waiters_is_probed_again)
{
	char dir[] = "/tmp/pqev-unit-XXXXXX", ci[256], path[80];
	Watch w = {0};
	PqevConnCallbacks cb = {.on_event = on_watch, .arg = &w};
	PqevConnConfig cfg;
	PqevConn *c;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(ci, sizeof(ci), "host=%s port=5998 dbname=x", dir);
	pqev_conn_config_init(&cfg);
	cfg.conninfo = ci;
	c = pqev_conn_new(lim, &cfg, &cb);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(pqev_conn_start(c), 0);
	/* the refused attempt marks the server down (within a few loop steps) */
	for (int step = 0; step < 500 && w.server_down < 1; step++)
		run_ms(10);
	ck_assert_int_ge(w.server_down, 1);
	pqev_conn_close(c);
	/* the probe timer fires with nobody waiting: run until the loop has
	   nothing left to run */
	for (int step = 0;
	     step < 500 && event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED) > 0; step++)
		run_ms(10);
	ck_assert_int_eq(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), 0);
	snprintf(path, sizeof(path), "%s/.s.PGSQL.5998", dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fd, 4), 0);
	ck_assert_int_eq(pqev_conn_start(c), 0);
	/* the attempt is made for real: it reaches the socket (and, never
	   answered, stays connecting) */
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	for (int step = 0; step < 500 && poll(&pfd, 1, 0) == 0; step++)
		run_ms(10);
	ck_assert_int_eq(poll(&pfd, 1, 0), 1);
	ck_assert_str_eq(pqev_conn_state_name(pqev_conn_state(c)), "connecting");
	pqev_conn_free(c);
	close(fd);
	unlink(path);
	rmdir(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conn-unit");
	TCase *tc = tcase_create("conn-unit");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_bad_conninfo_named_and_no_password);
	tcase_add_test(tc, test_labels_sanitized);
	tcase_add_test(tc, test_closed_connection_refuses);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_limiter_queues_and_frees);
	tcase_add_test(tc, test_debug_hook);
	tcase_add_test(tc, test_server_down_is_probed_not_backed_off);
	tcase_add_test(tc, test_server_down_without_waiters_is_probed_again);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = false};
	return pgt_main(s, &o);
}
