/*
 * Pidfile and daemonize, for running without systemd (-d). Under systemd run in
 * the foreground; neither is needed.
 *
 * The pidfile appears atomically (written and flock()ed under a temporary name,
 * then link()ed into place) and stays open and locked while the handle lives,
 * also through pqev_daemonize(). An existing file that is locked, or that names
 * another live pid, makes creation fail with -EEXIST; otherwise it is stale
 * (dead pid, our pid, no valid pid), removed, and creation retried.
 */
#ifndef PGQEV_PQEV_PIDFILE_H
#define PGQEV_PQEV_PIDFILE_H

#include <stdbool.h>
#include <sys/types.h>

#include <pgqd-ev/pqev_common.h>

typedef struct PqevPidfile PqevPidfile;

/*
 * Create `path` holding our pid. On success returns 0, *out is the handle (owned
 * by the caller; release with pqev_pidfile_remove), *other is the stale pid that
 * was removed or 0. On -EEXIST *other is the live pid holding the file. Other
 * failures: -errno from open/write (*other = 0).
 */
int pqev_pidfile_create(const char *path, PqevPidfile **out, pid_t *other) PQEV_MUSTCHECK;

/* Rewrite the file with the current pid (call in the daemon after daemonize).
 * Until then the file names the creator's pid; the lock keeps it owned. */
int pqev_pidfile_update(PqevPidfile *pf) PQEV_MUSTCHECK;

/* Unlink the file if it still holds our pid, free the handle. NULL allowed;
 * returns NULL. */
PqevPidfile *pqev_pidfile_remove(PqevPidfile *pf);

/* Read the pid from `path` (for -s/-k/-r). -ENOENT, -EINVAL (no valid pid), -errno. */
int pqev_pidfile_read(const char *path, pid_t *pid) PQEV_MUSTCHECK;

/* True if a process with this pid exists (kill(pid, 0) succeeds or says EPERM). */
bool pqev_pid_alive(pid_t pid);

/*
 * Detach from the terminal: fork, setsid, fork again, chdir("/"), umask
 * untouched, stdin/stdout/stderr to /dev/null. Returns 0 in the final child; the
 * parents exit with status 0 (_exit, no atexit handlers run). -errno if a step
 * failed before the first fork. Call before creating any event_base, and after
 * creating the pidfile (so "already running" is reported on the terminal), then
 * pqev_pidfile_update().
 */
int pqev_daemonize(void) PQEV_MUSTCHECK;

#endif
