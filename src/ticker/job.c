/*
 * The job runner: the only code that sends a query of the daemon's and the
 * only code that marks it ended. A JobSlot holds the one job in flight on one
 * connection; ticks and checks (db->tick_job on db->conn) and maintenance and
 * retry (db->maint_job on db->maint_conn) all go through job_run().
 *
 * Completion is exactly once, because the connection layer calls on_done
 * exactly once per accepted request: the slot is made idle first, then the
 * job's done callback runs, so the callback may start the next job at once.
 *
 * Deadlines are kept in the slot and enforced by the database's own timer
 * (db_rearm reads s->deadline), not by a timer per request: one timer event
 * per tick fewer is measurable at a thousand databases.
 */
#include <stdio.h>
#include <string.h>

#include <pgqd-ev/pqev_clock.h>
#include <pgqd-ev/pqev_conn.h>
#include <pgqd-ev/pqev_log.h>

#include "ticker.h"

void job_slot_init(JobSlot *s, Db *db)
{
	memset(s, 0, sizeof(*s));
	s->db = db;
}

static void on_job_done(PqevConn *c, const PqevReply *r, void *arg)
{
	JobSlot *s = arg;
	JobDoneFn done = s->done;
	JobOutcome o = {
		.job = s->job,
		.what = s->what,
		.reply = r,
		.timed_out = s->timed_out,
	};
	char what[sizeof(s->what)];

	(void)c;
	/* the callback may run the next job in this slot: copy what it reads */
	memcpy(what, s->what, sizeof(what));
	o.what = what;
	s->job = JOB_NONE;
	s->req = NULL;
	s->deadline = 0;
	s->timed_out = false;
	s->done = NULL;
	if (s->db->dead)
		return;
	done(s->db, &o);
}

int job_run(JobSlot *s, PqevConn *c, const JobSpec *spec, JobDoneFn done)
{
	const char *params[1] = {spec->param};
	PqevQuery q = {
		.sql = spec->sql,
		.nparams = spec->param ? 1 : 0,
		.params = spec->param ? params : NULL,
		.flags = spec->flags,
		.on_done = on_job_done,
		.arg = s,
	};
	int rc;

	if (job_busy(s)) {
		pqev_log_error(s->db->log, "internal: %s sent while %s is in flight", spec->what,
			       s->what);
		return -1;
	}
	s->job = spec->job;
	s->done = done;
	s->timed_out = false;
	snprintf(s->what, sizeof(s->what), "%s", spec->what);
	rc = c ? pqev_conn_send(c, &q, &s->req) : -1;
	if (rc < 0) {
		/* closed under us or out of memory: the connection's event says what next */
		pqev_log_debug(s->db->log, "cannot send %s: %s", spec->what,
			       c ? pqev_conn_error(c) : "no connection");
		s->job = JOB_NONE;
		s->req = NULL;
		s->done = NULL;
		return rc;
	}
	s->deadline = spec->timeout ? pqev_clock_now() + spec->timeout : 0;
	return 0;
}

bool job_expire(JobSlot *s, usec_t now)
{
	if (!s->req || !s->deadline || now < s->deadline)
		return false;
	s->timed_out = true;
	/* drops the session; on_job_done runs now and reports timed_out */
	pqev_req_cancel(s->req);
	return true;
}

void job_cancel(JobSlot *s)
{
	if (s->req)
		pqev_req_cancel(s->req); /* on_job_done runs now */
}
