/* Helpers for the pgq SQL tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sqltest.h"

PGconn *sqlt_connect_as(const char *dbname, const char *user)
{
	char buf[1024];
	PGconn *c;
	snprintf(buf, sizeof(buf), "%s user=%s", pgt_connstr(dbname, false), user);
	c = PQconnectdb(buf);
	ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect as %s: %s", user, PQerrorMessage(c));
	PQsetNoticeProcessor(c, NULL, NULL);
	return c;
}

int sqlt_ntuples(PGconn *conn, const char *sql)
{
	PGresult *r = PQexec(conn, sql);
	int n;
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(conn));
	n = PQntuples(r);
	PQclear(r);
	return n;
}

char *sqlt_format_rows(const PGresult *r)
{
	size_t cap = 256, len = 0;
	char *out = malloc(cap);
	out[0] = '\0';
	for (int i = 0; i < PQntuples(r); i++) {
		for (int j = 0; j < PQnfields(r); j++) {
			const char *v = PQgetisnull(r, i, j) ? "~" : PQgetvalue(r, i, j);
			size_t need = len + strlen(v) + 3;
			if (need > cap) {
				while (cap < need)
					cap *= 2;
				out = realloc(out, cap);
			}
			len += (size_t)sprintf(out + len, "%s%s", j ? "|" : "", v);
		}
		if (len + 2 > cap)
			out = realloc(out, cap *= 2);
		out[len++] = '\n';
		out[len] = '\0';
	}
	return out;
}

char *sqlt_rows(PGconn *conn, const char *sql)
{
	PGresult *r = PQexec(conn, sql);
	char *out;
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(conn));
	out = sqlt_format_rows(r);
	PQclear(r);
	return out;
}

int sqlt_psql_file(const char *dbname, const char *user, const char *file)
{
	const char *bindir = getenv("PGQD_TEST_PG_BINDIR");
	char psql[512], port[16];
	pid_t pid;
	int st;
	snprintf(psql, sizeof(psql), "%s/psql", bindir && *bindir ? bindir : "/usr/bin");
	if (access(psql, X_OK) != 0)
		snprintf(psql, sizeof(psql), "psql");
	snprintf(port, sizeof(port), "%d", pgt_port());
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		if (devnull >= 0)
			dup2(devnull, 1);
		execlp(psql, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pgt_socket_dir(),
		       "-p", port, "-U", user, "-d", dbname, "-f", file, (char *)NULL);
		_exit(127);
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

const char *sqlt_install_script(void)
{
	static char path[4096];
	const char *all = getenv("PGQD_TEST_SQL");
	const char *colon;
	ck_assert_ptr_nonnull(all);
	colon = strchr(all, ':');
	snprintf(path, sizeof(path), "%.*s", colon ? (int)(colon - all) : (int)strlen(all), all);
	return path;
}

#define SENTINEL "pgqt.sentinel"

/* Count (and collect) the channel's notifications read so far; *sentinel when ours came. */
static int take_notifies(PGconn *conn, const char *channel, char *payloads, size_t len,
			 bool *sentinel)
{
	PGnotify *n;
	int count = 0;
	size_t used = payloads && len ? strlen(payloads) : 0;

	ck_assert_int_eq(PQconsumeInput(conn), 1);
	while ((n = PQnotifies(conn)) != NULL) {
		if (strcmp(n->relname, channel) == 0) {
			count++;
			if (payloads && used + strlen(n->extra) + 2 < len)
				used += (size_t)snprintf(payloads + used, len - used, "%s%s",
							 used ? "," : "", n->extra);
		} else if (sentinel && strcmp(n->relname, SENTINEL) == 0) {
			*sentinel = true;
		}
		PQfreemem(n);
	}
	return count;
}

int sqlt_notifies(PGconn *conn, const char *channel, char *payloads, size_t len)
{
	/* a round trip lets the backend deliver what is pending */
	PQclear(PQexec(conn, ""));
	return take_notifies(conn, channel, payloads, len, NULL);
}

int sqlt_wait_notifies(PGconn *conn, const char *channel, int want, char *payloads, size_t len)
{
	int got = 0;
	bool sentinel = false;
	int64_t deadline = pgt_now_ms() + 10000;
	if (payloads && len)
		payloads[0] = '\0';
	while (got < want && pgt_now_ms() < deadline) {
		got += sqlt_notifies(conn, channel, payloads, len);
		if (got < want)
			usleep(10000); /* poll step */
	}
	/*
	 * Anything extra was sent by commits already made: our own notification is
	 * queued after them, so once it arrives every earlier one has arrived too.
	 */
	pgt_exec(conn, "listen \"" SENTINEL "\"");
	pgt_exec(conn, "notify \"" SENTINEL "\"");
	got += take_notifies(conn, channel, payloads, len, &sentinel);
	while (!sentinel && pgt_now_ms() < deadline) {
		usleep(10000); /* poll step */
		PQclear(PQexec(conn, ""));
		got += take_notifies(conn, channel, payloads, len, &sentinel);
	}
	ck_assert_msg(sentinel, "own notification on " SENTINEL " never arrived");
	pgt_exec(conn, "unlisten \"" SENTINEL "\"");
	return got;
}
