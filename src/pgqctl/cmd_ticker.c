/*
 * ticker: the daemon's own view, from its HTTP /health endpoint (address from
 * metrics_listen in the same ini, or --listen). A plain HTTP/1.0 GET with a
 * deadline; the daemon writes one database object per line, which is what the
 * table view reads.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pgqctl.h"

static int wait_fd(int fd, short ev, int ms)
{
	struct pollfd p = {.fd = fd, .events = ev};
	int r;

	do
		r = poll(&p, 1, ms);
	while (r < 0 && errno == EINTR);
	return r;
}

/* GET path from host:port (numeric); body in *out (malloc'd), HTTP status returned, -1 err. */
static int http_get(const char *listen, const char *path, int timeout_ms, char **out, char *err,
		    size_t errlen)
{
	char host[128];
	const char *colon = strrchr(listen, ':');
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	int fd, status = -1;
	char req[256], *buf = NULL, *body;
	size_t len = 0, cap = 0;

	if (!colon || (size_t)(colon - listen) >= sizeof(host)) {
		snprintf(err, errlen, "bad address \"%s\" (ADDRESS:PORT)", listen);
		return -1;
	}
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		((struct sockaddr_in *)&ss)->sin_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)atoi(colon + 1));
		sl = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)atoi(colon + 1));
		sl = sizeof(struct sockaddr_in6);
	} else {
		snprintf(err, errlen, "\"%s\" is not a numeric address", host);
		return -1;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS) {
		snprintf(err, errlen, "connect to %s: %s", listen, strerror(errno));
		close(fd);
		return -1;
	}
	if (wait_fd(fd, POLLOUT, timeout_ms) <= 0) {
		snprintf(err, errlen, "connect to %s: timed out", listen);
		close(fd);
		return -1;
	}
	{
		int e = 0;
		socklen_t el = sizeof(e);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
		if (e) {
			snprintf(err, errlen,
				 "connect to %s: %s (is pgqd-ev running with "
				 "metrics_listen?)",
				 listen, strerror(e));
			close(fd);
			return -1;
		}
	}
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, listen);
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		snprintf(err, errlen, "write to %s: %s", listen, strerror(errno));
		close(fd);
		return -1;
	}
	for (;;) {
		ssize_t n;

		if (len + 4096 > cap) {
			cap = cap ? cap * 2 : 8192;
			buf = realloc(buf, cap);
		}
		if (wait_fd(fd, POLLIN, timeout_ms) <= 0) {
			snprintf(err, errlen, "read from %s: timed out", listen);
			break;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			buf[len] = '\0';
			body = strstr(buf, "\r\n\r\n");
			if (strncmp(buf, "HTTP/1.", 7) == 0 && body) {
				status = atoi(buf + 9);
				*out = strdup(body + 4);
			} else {
				snprintf(err, errlen, "%s: not an HTTP answer", listen);
			}
			break;
		}
		len += (size_t)n;
	}
	free(buf);
	close(fd);
	return status;
}

/* Value of "key": in one line of the daemon's JSON (string unquoted, simple escapes). */
static void field(const char *line, const char *key, char *dst, size_t len)
{
	char pat[64];
	const char *p;
	size_t n = 0;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	dst[0] = '\0';
	p = strstr(line, pat);
	if (!p)
		return;
	p += strlen(pat);
	if (*p == '"') {
		for (p++; *p && *p != '"' && n + 1 < len; p++) {
			if (*p == '\\' && p[1])
				p++;
			dst[n++] = *p;
		}
	} else {
		while (*p && *p != ',' && *p != '}' && n + 1 < len)
			dst[n++] = *p++;
	}
	dst[n] = '\0';
}

int cmd_ticker(CtlCtx *ctx, int argc, char **argv)
{
	const char *listen = NULL;
	const CtlOpt opts[] = {{"listen", true, &listen}, {NULL}};
	char *pos[CTL_MAX_ARGS], *body = NULL, err[512] = "";
	int npos, rc, status;

	if ((rc = ctl_parse_opts(ctx, argc, argv, opts, pos, &npos)))
		return rc;
	if (npos)
		return ctl_usage(argv[0], "takes no arguments");
	if (!listen && ctx->ini) {
		if ((rc = ctl_load_ini(ctx)))
			return rc;
		listen = ctx->ticker_listen;
	}
	if (!listen)
		return ctl_usage(argv[0], "needs -c INI with metrics_listen set, or --listen "
					  "ADDRESS:PORT");
	status = http_get(listen, "/health", (int)(ctx->connect_timeout / 1000), &body, err,
			  sizeof(err));
	if (status < 0) {
		ctl_err("ticker: %s", err);
		free(body);
		return CTL_EXIT_ERROR;
	}
	if (ctx->json) {
		fputs(body, stdout);
	} else {
		const char *h[7] = {"cluster",       "database", "state", "healthy",
				    "last tick age", "failures", "error"};
		CtlTable *t = ctl_table_new(7, h);
		char st[32], up[32];

		field(body, "status", st, sizeof(st));
		field(body, "uptime_s", up, sizeof(up));
		printf("pgqd-ev at %s: %s, up %ss\n", listen, st, up);
		for (char *line = strchr(body, '\n'); line; line = strchr(line + 1, '\n')) {
			char c[7][256];
			const char *cells[7];
			char *end = strchr(line + 1, '\n');

			if (end)
				*end = '\0';
			field(line, "cluster", c[0], 256);
			field(line, "database", c[1], 256);
			field(line, "state", c[2], 256);
			field(line, "healthy", c[3], 256);
			field(line, "last_tick_age_s", c[4], 256);
			field(line, "consecutive_failures", c[5], 256);
			field(line, "last_error", c[6], 256);
			if (end)
				*end = '\n';
			if (!c[1][0])
				continue;
			for (int i = 0; i < 7; i++)
				cells[i] = c[i];
			ctl_table_add(t, cells);
			if (strcmp(c[3], "true") != 0)
				ctl_table_mark_bad(t, 3);
		}
		ctl_table_print(t, stdout, ctx->color);
		ctl_table_free(t);
	}
	free(body);
	return status == 200 ? CTL_EXIT_OK : CTL_EXIT_PROBLEM;
}
