/*
 * pgqd-ev's [node NAME] sections: the daemon ticks the root and runs the
 * branch's worker on the same loop; SIGHUP adds and removes node workers; the
 * nodes show in /metrics and /health, and a node that makes no progress makes
 * /health unhealthy.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "castest.h"
#include "daemon.h"

static bool http_get(int port, const char *path, char *out, size_t outlen)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return false;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return false;
	}
	char req[256];
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", path);
	if (write(fd, req, strlen(req)) < 0) {
		close(fd);
		return false;
	}
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, out + n, outlen - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n >= outlen - 1)
			break;
	}
	out[n] = '\0';
	close(fd);
	return n > 0;
}

typedef struct Synced {
	const char *root, *db, *node;
} Synced;

static bool synced(void *arg)
{
	Synced *s = arg;
	return ct_completed(s->db, s->node) == ct_last_tick(s->root);
}

typedef struct HttpHas {
	int port;
	const char *path, *needle;
	char buf[65536];
} HttpHas;

static bool http_has(void *arg)
{
	HttpHas *h = arg;
	return http_get(h->port, h->path, h->buf, sizeof(h->buf)) && strstr(h->buf, h->needle);
}

/* b1 holds the root's events. Waited for: a tick made while the producing
   transaction was open (its sequence moved) does not cover it, and the next one
   comes by ticker_max_lag, so "synced" can hold before the events are ticked. */
typedef struct SameEvents {
	const char *root, *b1;
	char *re, *be;
} SameEvents;

static bool same_events(void *arg)
{
	SameEvents *e = arg;
	free(e->re);
	free(e->be);
	e->re = ct_events(e->root, false);
	e->be = ct_events(e->b1, false);
	return strcmp(e->re, e->be) == 0;
}

static char *ini_with(const char *root, int port, const char *nodes)
{
	char *ini = malloc(8192);
	ck_assert_ptr_nonnull(ini);
	snprintf(ini, 8192,
		 "%sdatabase_list = %s\nticker_period = 0.05\nstats_period = 0\n"
		 "metrics_listen = 127.0.0.1:%d\n%s",
		 dmn_base_ini(), root, port, nodes);
	return ini;
}

static void node_section(char *buf, size_t len, const char *name, const char *db, int unhealthy)
{
	snprintf(buf, len,
		 "[node %s]\nqueue = " CT_QUEUE "\ndb = %s\npoll_period = 0.05\n"
		 "wm_publish_period = 0.2\nunhealthy_after = %d\n",
		 name, pgt_connstr(db, false), unhealthy);
}

START_TEST(test_daemon_nodes)
{
	char *root = ct_node_db(), *b1 = ct_node_db(), *lf = ct_node_db();
	const char *nopgq = pgt_db_new_empty();
	char *ghost_db = strdup(nopgq);
	ct_make_root(root, "root");
	ct_make_sub("branch", b1, "b1", root, "root", root);
	ct_make_sub("leaf", lf, "lf", b1, "b1", root);
	int port = 20000 + (getpid() % 20000);
	char nb1[1024], nlf[1024], nghost[1024], nodes[4096];
	node_section(nb1, sizeof(nb1), "b1", b1, 10);
	node_section(nlf, sizeof(nlf), "lf", lf, 10);
	node_section(nghost, sizeof(nghost), "ghost", ghost_db, 1);
	/* the daemon ticks the root: on events, else every 3 s (not on every call) */
	pgt_exec_db(root, "select pgq.set_queue_config('" CT_QUEUE "', 'ticker_max_lag', '3'),"
			  " pgq.set_queue_config('" CT_QUEUE "', 'ticker_max_count', '100'),"
			  " pgq.set_queue_config('" CT_QUEUE "', 'ticker_idle_period', '60')");
	char *ini = ini_with(root, port, nb1);
	Daemon *d = dmn_start(ini, NULL);
	free(ini);
	ck_assert(dmn_wait_notify(d, "READY=1", 5000));

	ct_produce(root, 0, 300);
	Synced s1 = {root, b1, "b1"};
	if (!pgt_wait_until(synced, &s1, 20000, 50)) {
		dmn_free(d, true);
		ck_abort_msg("b1 did not follow the root");
	}
	HttpHas h = {.port = port,
		     .path = "/metrics",
		     .needle = "pgqd_ev_node_events_copied_total{node=\"b1\",queue=\"" CT_QUEUE
			       "\",type=\"branch\"} 30"};
	ck_assert_msg(pgt_wait_until(http_has, &h, 5000, 50), "%s", h.buf);
	h.path = "/health";
	h.needle = "\"node\":\"b1\",\"queue\":\"" CT_QUEUE "\",\"type\":\"branch\",\"provider\":"
		   "\"root\"";
	ck_assert_msg(pgt_wait_until(http_has, &h, 5000, 50), "%s", h.buf);
	ck_assert_ptr_nonnull(strstr(h.buf, "\"status\":\"ok\""));

	/* SIGHUP: a leaf and a node whose database has no pgq_node */
	snprintf(nodes, sizeof(nodes), "%s%s%s", nb1, nlf, nghost);
	ini = ini_with(root, port, nodes);
	dmn_write_ini(d, ini);
	free(ini);
	dmn_signal(d, SIGHUP);
	ct_produce(root, 300, 400);
	Synced s2 = {root, lf, "lf"};
	ck_assert_msg(pgt_wait_until(synced, &s2, 20000, 50), "lf did not start");
	ck_assert(pgt_wait_until(synced, &s1, 20000, 50));
	ck_assert(dmn_wait_log(d, "pgq_node", 5000));
	h.needle = "\"status\":\"unhealthy\"";
	ck_assert_msg(pgt_wait_until(http_has, &h, 10000, 100), "%s", h.buf);
	ck_assert_ptr_nonnull(strstr(h.buf, "\"node\":\"ghost\""));

	/* SIGHUP: the broken node goes, health comes back */
	snprintf(nodes, sizeof(nodes), "%s%s", nb1, nlf);
	ini = ini_with(root, port, nodes);
	dmn_write_ini(d, ini);
	free(ini);
	dmn_signal(d, SIGHUP);
	h.needle = "\"status\":\"ok\"";
	ck_assert_msg(pgt_wait_until(http_has, &h, 10000, 100), "%s", h.buf);
	ck_assert_ptr_null(strstr(h.buf, "\"node\":\"ghost\""));
	ck_assert(dmn_wait_log(d, "removed from the configuration", 5000));

	SameEvents e = {root, b1, NULL, NULL};
	ck_assert_msg(pgt_wait_until(same_events, &e, 10000, 100), "root %s, b1 %s", e.re, e.be);
	free(e.re);
	free(e.be);
	dmn_stop(d);
	free(root);
	free(b1);
	free(lf);
	free(ghost_db);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cascade-daemon");
	TCase *tc = pgt_tcase("daemon", 120);
	tcase_add_test(tc, test_daemon_nodes);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
