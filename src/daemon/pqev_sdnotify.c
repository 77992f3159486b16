/*
 * sd_notify, in-tree (see pqev_sdnotify.h): one AF_UNIX datagram per message to
 * $NOTIFY_SOCKET. A leading '@' names an abstract socket (the '@' becomes a NUL
 * byte and the address length counts only the name, as systemd does).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <pgqd-ev/pqev_clock.h>
#include <pgqd-ev/pqev_sdnotify.h>

/* A status line longer than this is cut; systemd shows one line anyway. */
#define MAX_STATUS 1024

bool pqev_sd_enabled(void)
{
	const char *p = getenv("NOTIFY_SOCKET");
	return p && *p;
}

int pqev_sd_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa;
	socklen_t salen;
	size_t plen;
	ssize_t n;
	int fd, err;

	if (!path || !*path)
		return 0;
	plen = strlen(path);
	if (path[0] != '/' && path[0] != '@')
		return -EAFNOSUPPORT; /* e.g. vsock: addresses, not for us */
	/* a path needs its NUL; an abstract name may fill sun_path (as systemd allows) */
	if (plen + (path[0] == '/') > sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, plen);
	if (path[0] == '@')
		sa.sun_path[0] = '\0';
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '/'));

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* never wait: a listener whose queue is full (e.g. 10 unread datagrams at
	   net.unix.max_dgram_qlen's default) would otherwise stop the caller's whole
	   event loop, ticks and the stop included; the message is lost instead */
	do
		n = sendto(fd, state, strlen(state), MSG_NOSIGNAL | MSG_DONTWAIT,
			   (struct sockaddr *)&sa, salen);
	while (n < 0 && errno == EINTR);
	err = n < 0 ? -errno : 1;
	close(fd);
	return err;
}

int pqev_sd_notifyf(const char *fmt, ...)
{
	char buf[MAX_STATUS + 256];
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	return pqev_sd_notify(buf);
}

/* "STATUS=<status>" with newlines flattened, appended to `buf`. */
static void add_status(char *buf, size_t size, const char *status)
{
	size_t o = strlen(buf);
	if (!status)
		return;
	o += (size_t)snprintf(buf + o, size > o ? size - o : 0, "%sSTATUS=", o ? "\n" : "");
	for (const char *p = status; *p && o + 1 < size && o < MAX_STATUS + 64; p++)
		buf[o++] = (*p == '\n' || *p == '\r') ? ' ' : *p;
	if (o < size)
		buf[o] = '\0';
}

static int send_with_status(const char *head, const char *status)
{
	char buf[MAX_STATUS + 128];
	snprintf(buf, sizeof(buf), "%s", head);
	add_status(buf, sizeof(buf), status);
	return pqev_sd_notify(buf);
}

int pqev_sd_ready(const char *status)
{
	return send_with_status("READY=1", status);
}

int pqev_sd_reloading(const char *status)
{
	char head[96];
	snprintf(head, sizeof(head), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)pqev_clock_monotonic());
	return send_with_status(head, status);
}

int pqev_sd_stopping(const char *status)
{
	return send_with_status("STOPPING=1", status);
}

int pqev_sd_status(const char *status)
{
	return send_with_status("", status ? status : "");
}

int pqev_sd_watchdog(void)
{
	return pqev_sd_notify("WATCHDOG=1");
}

static int parse_u64(const char *s, unsigned long long *out)
{
	char *end;
	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	*out = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	return 0;
}

int pqev_sd_watchdog_interval(usec_t *ping_interval)
{
	const char *us = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	unsigned long long u, p;
	if (!us)
		return 0;
	if (parse_u64(us, &u) < 0 || u == 0)
		return -EINVAL;
	if (pid) {
		if (parse_u64(pid, &p) < 0 || p == 0)
			return -EINVAL;
		if ((pid_t)p != getpid())
			return 0; /* meant for another process (our parent or child) */
	}
	*ping_interval = (usec_t)u / 2;
	return 1;
}
