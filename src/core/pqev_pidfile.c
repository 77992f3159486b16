/*
 * Pidfile with O_EXCL creation and stale-pid detection, and daemonize (see
 * pqev_pidfile.h). The file holds the pid in decimal and a newline.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pgqd-ev/pqev_pidfile.h>

struct PqevPidfile {
	char *path;
	pid_t pid; /* the pid we wrote */
};

bool pqev_pid_alive(pid_t pid)
{
	if (pid <= 0)
		return false;
	return kill(pid, 0) == 0 || errno == EPERM;
}

int pqev_pidfile_read(const char *path, pid_t *pid)
{
	char buf[32];
	ssize_t n;
	long v;
	char *end;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	close(fd);
	buf[n] = '\0';
	errno = 0;
	v = strtol(buf, &end, 10);
	if (end == buf || errno || v <= 0 || v > 0x7fffffffL || (*end && *end != '\n'))
		return -EINVAL;
	*pid = (pid_t)v;
	return 0;
}

static int write_pid(int fd, pid_t pid)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)pid);
	if (ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0)
		return -errno;
	if (write(fd, buf, (size_t)n) != n)
		return errno ? -errno : -EIO;
	return 0;
}

int pqev_pidfile_create(const char *path, PqevPidfile **out, pid_t *other)
{
	PqevPidfile *pf;
	pid_t old = 0, removed = 0;
	int fd, r;

	*out = NULL;
	*other = 0;
	for (int attempt = 0;; attempt++) {
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0644);
		if (fd >= 0)
			break;
		if (errno != EEXIST || attempt > 0)
			return -errno;
		r = pqev_pidfile_read(path, &old);
		if (r == -ENOENT)
			continue; /* removed meanwhile: try again */
		if (r == 0 && old != getpid() && pqev_pid_alive(old)) {
			*other = old;
			return -EEXIST;
		}
		/* stale (dead pid, our own pid from a previous life, or garbage) */
		if (unlink(path) < 0 && errno != ENOENT)
			return -errno;
		removed = r == 0 ? old : 0;
	}
	r = write_pid(fd, getpid());
	close(fd);
	if (r < 0) {
		unlink(path);
		return r;
	}
	pf = calloc(1, sizeof(*pf));
	if (!pf || !(pf->path = strdup(path))) {
		free(pf);
		unlink(path);
		return -ENOMEM;
	}
	pf->pid = getpid();
	*out = pf;
	*other = removed;
	return 0;
}

int pqev_pidfile_update(PqevPidfile *pf)
{
	int fd, r;
	fd = open(pf->path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	r = write_pid(fd, getpid());
	close(fd);
	if (r == 0)
		pf->pid = getpid();
	return r;
}

PqevPidfile *pqev_pidfile_remove(PqevPidfile *pf)
{
	pid_t pid;
	if (!pf)
		return NULL;
	/* only our own file: another instance may have replaced a file we lost */
	if (pqev_pidfile_read(pf->path, &pid) == 0 && pid == pf->pid)
		unlink(pf->path);
	free(pf->path);
	free(pf);
	return NULL;
}

static int null_stdio(void)
{
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (int i = 0; i < 3; i++)
		if (dup2(fd, i) < 0) {
			int e = -errno;
			close(fd);
			return e;
		}
	if (fd > 2)
		close(fd);
	return 0;
}

int pqev_daemonize(void)
{
	pid_t pid;

	if (access("/dev/null", R_OK | W_OK) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		_exit(1);
	/* the second fork makes sure we can never reacquire a controlling tty */
	pid = fork();
	if (pid < 0)
		_exit(1);
	if (pid > 0)
		_exit(0);
	if (chdir("/") < 0 || null_stdio() < 0)
		_exit(1);
	return 0;
}
