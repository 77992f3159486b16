/*
 * Pidfile with exclusive creation and stale-pid detection, and daemonize (see
 * pqev_pidfile.h). The file holds the pid in decimal and a newline.
 *
 * The owner keeps the file open with a flock() for its whole life, so "alive"
 * is the lock, not only the pid: the pid in the file is briefly the creator's
 * (dead) one between daemonize and pqev_pidfile_update, and pids get reused.
 * The lock follows the open file through fork, so the daemon child holds it.
 * Invariants that make stale removal safe against a second instance starting
 * at the same moment:
 * - the file appears complete and locked (written under a temporary name, then
 *   link()ed into place, which fails if a file is there);
 * - only the holder of a file's lock unlinks it, after checking that the path
 *   still names that file.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pgqd-ev/pqev_pidfile.h>

struct PqevPidfile {
	char *path;
	int fd;    /* open and locked for the handle's life */
	pid_t pid; /* the pid we wrote */
};

bool pqev_pid_alive(pid_t pid)
{
	if (pid <= 0)
		return false;
	return kill(pid, 0) == 0 || errno == EPERM;
}

static int parse_pid(int fd, pid_t *pid)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	long v;
	char *end;
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	errno = 0;
	v = strtol(buf, &end, 10);
	if (end == buf || errno || v <= 0 || v > 0x7fffffffL || (*end && *end != '\n'))
		return -EINVAL;
	*pid = (pid_t)v;
	return 0;
}

int pqev_pidfile_read(const char *path, pid_t *pid)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int r;
	if (fd < 0)
		return -errno;
	r = parse_pid(fd, pid);
	close(fd);
	return r;
}

static int write_pid(int fd, pid_t pid)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)pid);
	if (ftruncate(fd, 0) < 0)
		return -errno;
	errno = 0;
	if (pwrite(fd, buf, (size_t)n, 0) != n)
		return errno ? -errno : -EIO;
	return 0;
}

static bool same_file(int fd, const char *path)
{
	struct stat a, b;
	return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
	       a.st_ino == b.st_ino;
}

/*
 * The file at `path` exists. 0 if it was stale and is removed (*stale: its pid or
 * 0), -EEXIST if its owner lives (*live: the pid in it), -ENOENT if it vanished.
 */
static int check_existing(const char *path, pid_t *live, pid_t *stale)
{
	pid_t pid = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY), r;
	if (fd < 0)
		return -errno;
	r = parse_pid(fd, &pid);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		close(fd);
		if (e != EWOULDBLOCK)
			return -e;
		*live = r == 0 ? pid : 0;
		return -EEXIST; /* locked: its owner lives, whatever pid it names */
	}
	/* unlocked, but a file not made by us may still belong to a live process */
	if (r == 0 && pid != getpid() && pqev_pid_alive(pid)) {
		close(fd);
		*live = pid;
		return -EEXIST;
	}
	r = 0;
	if (!same_file(fd, path))
		r = -ENOENT; /* replaced meanwhile: look again */
	else if (unlink(path) < 0)
		r = errno == ENOENT ? -ENOENT : -errno;
	close(fd);
	*stale = pid;
	return r;
}

int pqev_pidfile_create(const char *path, PqevPidfile **out, pid_t *other)
{
	PqevPidfile *pf;
	pid_t removed = 0;
	char *tmp = NULL;
	int fd = -1, r = 0;

	*out = NULL;
	*other = 0;
	pf = calloc(1, sizeof(*pf));
	if (!pf || !(pf->path = strdup(path)) ||
	    asprintf(&tmp, "%s.%d.tmp", path, (int)getpid()) < 0) {
		tmp = NULL;
		r = -ENOMEM;
		goto fail;
	}
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		r = -errno;
		goto fail_unlink;
	}
	r = write_pid(fd, getpid());
	if (r < 0)
		goto fail_unlink;
	for (int attempt = 0;; attempt++) {
		if (link(tmp, path) == 0)
			break;
		if (errno != EEXIST || attempt > 2) {
			r = errno == EEXIST ? -EEXIST : -errno;
			goto fail_unlink;
		}
		r = check_existing(path, other, &removed);
		if (r < 0 && r != -ENOENT)
			goto fail_unlink;
	}
	unlink(tmp);
	free(tmp);
	pf->fd = fd;
	pf->pid = getpid();
	*out = pf;
	*other = removed;
	return 0;
fail_unlink:
	unlink(tmp);
fail:
	if (fd >= 0)
		close(fd);
	free(tmp);
	if (pf)
		free(pf->path);
	free(pf);
	if (r != -EEXIST)
		*other = 0;
	return r;
}

int pqev_pidfile_update(PqevPidfile *pf)
{
	int r = write_pid(pf->fd, getpid());
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
	if (same_file(pf->fd, pf->path) && parse_pid(pf->fd, &pid) == 0 && pid == pf->pid)
		unlink(pf->path);
	close(pf->fd);
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
