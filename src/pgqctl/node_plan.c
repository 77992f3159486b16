/*
 * Step plans for multi-step cascade operations (node change-provider,
 * switchover, failover), and the member connections they share.
 *
 * A plan is a list of named steps; each has a check ("is this already done?",
 * read-only) and an action. Running a plan walks the steps in order: a step
 * whose check says done is printed "already done", the others are acted on and
 * printed "done". Checks look at the databases, never at memory of an earlier
 * run, so a plan stopped anywhere (Ctrl-C, a lost connection, a killed pgqctl)
 * is finished by running the same command again. --dry-run prints the steps,
 * checking them up to the first one still to do, and changes nothing.
 *
 * For tests, PGQCTL_STOP_AFTER_STEP=N makes pgqctl exit 1 right after step N,
 * as a crash there would, so every step can be interrupted once.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgqctl.h"

typedef struct PlanStep {
	char *title;
	CtlStepFn check, act;
	void *arg;
	int n;
} PlanStep;

struct CtlPlan {
	CtlCtx *ctx;
	bool dry_run;
	PlanStep *steps;
	int count, cap;
	char note[1024];
};

CtlPlan *ctl_plan_new(CtlCtx *ctx, bool dry_run)
{
	CtlPlan *p = calloc(1, sizeof(*p));

	if (!p)
		abort();
	p->ctx = ctx;
	p->dry_run = dry_run;
	return p;
}

CtlPlan *ctl_plan_free(CtlPlan *p)
{
	if (!p)
		return NULL;
	for (int i = 0; i < p->count; i++)
		free(p->steps[i].title);
	free(p->steps);
	free(p);
	return NULL;
}

void ctl_plan_step(CtlPlan *p, CtlStepFn check, CtlStepFn act, void *arg, int n, const char *fmt,
		   ...)
{
	va_list ap;
	PlanStep *s;

	if (p->count == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 16;
		p->steps = realloc(p->steps, (size_t)p->cap * sizeof(PlanStep));
		if (!p->steps)
			abort();
	}
	s = &p->steps[p->count++];
	*s = (PlanStep){.check = check, .act = act, .arg = arg, .n = n};
	va_start(ap, fmt);
	if (vasprintf(&s->title, fmt, ap) < 0)
		abort();
	va_end(ap);
}

int ctl_plan_count(const CtlPlan *p)
{
	return p->count;
}

void ctl_plan_note(CtlPlan *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->note, sizeof(p->note), fmt, ap);
	va_end(ap);
}

bool ctl_plan_dry_run(const CtlPlan *p)
{
	return p->dry_run;
}

static int stop_after(void)
{
	const char *e = getenv("PGQCTL_STOP_AFTER_STEP");

	return e && *e ? atoi(e) : 0;
}

int ctl_plan_run(CtlPlan *p)
{
	bool checking = true;
	int stop = stop_after();

	for (int i = 0; i < p->count; i++) {
		PlanStep *s = &p->steps[i];
		int done = 0;

		p->note[0] = '\0';
		if (checking) {
			done = s->check ? s->check(p, s->arg, s->n) : 0;
			if (done < 0) {
				ctl_err("step %d (%s) could not be checked; nothing more was done",
					i + 1, s->title);
				return CTL_EXIT_ERROR;
			}
		}
		if (!p->ctx->quiet) {
			printf("step %d/%d: %s: ", i + 1, p->count, s->title);
			fflush(stdout);
		}
		if (done) {
			if (!p->ctx->quiet)
				printf("already done%s%s%s\n", p->note[0] ? " (" : "", p->note,
				       p->note[0] ? ")" : "");
		} else if (p->dry_run) {
			if (!p->ctx->quiet)
				puts("to do");
			checking = false; /* later checks depend on this step */
		} else {
			double t0 = ctl_now_sec();
			if (s->act(p, s->arg, s->n) != 0) {
				if (!p->ctx->quiet)
					puts("failed");
				ctl_err("step %d/%d (%s) failed; fix the cause and run the same "
					"command again to continue from there",
					i + 1, p->count, s->title);
				return CTL_EXIT_ERROR;
			}
			if (!p->ctx->quiet)
				printf("done in %.3f s%s%s%s\n", ctl_now_sec() - t0,
				       p->note[0] ? " (" : "", p->note, p->note[0] ? ")" : "");
		}
		fflush(stdout);
		if (!p->dry_run && stop == i + 1) {
			ctl_err("stopped after step %d (PGQCTL_STOP_AFTER_STEP, for tests)", i + 1);
			exit(CTL_EXIT_ERROR);
		}
	}
	if (p->dry_run && !p->ctx->quiet)
		puts("dry run: nothing was changed");
	return CTL_EXIT_OK;
}

/* ---- member connections ---- */

CtlDb *ctl_plan_open(CtlCtx *ctx, const char *node, const char *location)
{
	char label[300];
	CtlTarget t;

	snprintf(label, sizeof(label), "node %s", node);
	t = (CtlTarget){.label = label, .conninfo = (char *)location};
	return ctl_db_open(ctx, &t);
}

bool ctl_plan_call(CtlDb *db, const char *what, const char *sql, int n, const char *const *p,
		   PGresult **out)
{
	PGresult *r = ctl_db_exec(db, sql, n, p);
	int code;

	if (out)
		*out = NULL;
	if (!r) {
		ctl_db_fail(db, what);
		return false;
	}
	code = ctl_val(r, 0, 0) ? atoi(ctl_val(r, 0, 0)) : 0;
	if (code >= 400) {
		ctl_err("%s: %s: %s (code %d)", ctl_db_label(db), what,
			ctl_val(r, 0, 1) ? ctl_val(r, 0, 1) : "failed", code);
		PQclear(r);
		return false;
	}
	if (out)
		*out = r;
	else
		PQclear(r);
	return true;
}

PGresult *ctl_plan_query(CtlDb *db, const char *what, const char *sql, int n, const char *const *p)
{
	PGresult *r = ctl_db_exec(db, sql, n, p);

	if (!r)
		ctl_db_fail(db, what);
	return r;
}

double ctl_now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
