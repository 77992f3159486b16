/*
 * The optional HTTP endpoint (libevent's evhttp on the daemon's loop):
 *   GET /metrics  Prometheus text format 0.0.4
 *   GET /health   JSON; 200 when healthy, 503 when a database is unreachable,
 *                 has stopped ticking or never ticked (stats.c: db_problem), or
 *                 the daemon is stopping
 * Requests are answered from the loop in one pass; nothing blocks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <pgqd-ev/pqev_log.h>

#include "ticker.h"

struct TickerHttp {
	struct evhttp *http;
	char *listen;
};

static void reply(struct evhttp_request *req, int code, const char *reason, const char *ctype,
		  struct evbuffer *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
	evhttp_send_reply(req, code, reason, body);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	Ticker *t = arg;
	const char *uri = evhttp_request_get_uri(req);
	struct evbuffer *body = evbuffer_new();
	size_t plen;

	if (!body) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	plen = strcspn(uri, "?");
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET &&
	    evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
		evbuffer_add_printf(body, "only GET\n");
		reply(req, 405, "Method Not Allowed", "text/plain", body);
	} else if (plen == 8 && strncmp(uri, "/metrics", 8) == 0) {
		stats_render_metrics(t, body);
		reply(req, 200, "OK", "text/plain; version=0.0.4", body);
	} else if (plen == 7 && strncmp(uri, "/health", 7) == 0) {
		stats_render_health(t, body);
		if (stats_healthy(t))
			reply(req, 200, "OK", "application/json", body);
		else
			reply(req, 503, "Service Unavailable", "application/json", body);
	} else {
		evbuffer_add_printf(body, "pgqd-ev: /metrics or /health\n");
		reply(req, 404, "Not Found", "text/plain", body);
	}
	evbuffer_free(body);
}

void http_free(Ticker *t)
{
	if (!t->http)
		return;
	if (t->http->http)
		evhttp_free(t->http->http);
	free(t->http->listen);
	free(t->http);
	t->http = NULL;
}

int http_configure(Ticker *t, const char *listen)
{
	char host[128];
	const char *colon;
	int port;
	struct evhttp *h;

	if (t->http && strcmp(t->http->listen, listen ? listen : "") == 0)
		return 0;
	http_free(t);
	if (!listen || !*listen)
		return 0;
	colon = strrchr(listen, ':');
	if (!colon || (size_t)(colon - listen) >= sizeof(host))
		return -EINVAL;
	if (listen[0] == '[' && colon > listen + 1 && colon[-1] == ']')
		snprintf(host, sizeof(host), "%.*s", (int)(colon - listen - 2), listen + 1);
	else
		snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
	port = atoi(colon + 1);
	t->http = calloc(1, sizeof(*t->http));
	if (!t->http)
		return -ENOMEM;
	t->http->listen = strdup(listen);
	h = evhttp_new(t->base);
	if (!h || !t->http->listen) {
		if (h)
			evhttp_free(h);
		http_free(t);
		return -ENOMEM;
	}
	t->http->http = h;
	evhttp_set_allowed_methods(h, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
	evhttp_set_timeout(h, 10);
	evhttp_set_gencb(h, on_request, t);
	if (evhttp_bind_socket(h, host, (ev_uint16_t)port) != 0) {
		int e = errno ? errno : EADDRINUSE;

		pqev_log_error(NULL, "metrics_listen %s: cannot listen: %s", listen, strerror(e));
		http_free(t);
		return -e;
	}
	pqev_log_info(NULL, "metrics on http://%s/metrics, health on /health", listen);
	return 0;
}
