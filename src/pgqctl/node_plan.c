/*
 * Step plans for the multi-step cascade operations (node change-provider,
 * switchover, failover, tag-dead, tag-alive, drop-node, resurrect), and the
 * member connections they share.
 *
 * A plan is a list of named steps; each has a check ("is this already done?",
 * read-only) and an action. Running a plan walks the steps in order: a step
 * whose check says done is reported "already done", the others are acted on
 * and reported "done". Checks look at the databases, never at memory of an
 * earlier run, so a plan stopped anywhere (Ctrl-C, a lost connection, a killed
 * pgqctl) is finished by running the same command again. --dry-run reports the
 * steps still to do and changes nothing. With --json nothing is printed while
 * the steps run; ctl_plan_json() writes one document with every step.
 *
 * The two styles (CtlPlanStyle) differ only in how a step is printed, how far a
 * dry run checks, and what the test hook counts: PGQCTL_STOP_AFTER_STEP=N ends
 * pgqctl right after step N of a sequence (exit 1), or kills it (SIGKILL, as a
 * crash) after the N-th step of a per-node plan that changed something.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgqctl.h"

typedef enum Outcome { OUT_NOT_RUN, OUT_DONE, OUT_ALREADY, OUT_WOULD, OUT_FAILED } Outcome;

static const char *const outcome_name[] = {
	[OUT_NOT_RUN] = "not_run", [OUT_DONE] = "done",     [OUT_ALREADY] = "already_done",
	[OUT_WOULD] = "would_do",  [OUT_FAILED] = "failed",
};

typedef struct PlanStep {
	char *title, *node;
	CtlStepFn check, act;
	void *arg;
	int n;
	bool independent;
	Outcome outcome;
	char *detail;
	double seconds;
} PlanStep;

struct CtlPlan {
	CtlCtx *ctx;
	char *op;
	CtlPlanStyle style;
	bool dry_run;
	PlanStep *steps;
	int count, cap;
	int changed, planned;
	char note[1024];
};

static char *xstrdup(const char *s)
{
	char *d = s ? strdup(s) : NULL;

	if (s && !d)
		abort();
	return d;
}

bool ctl_plan_text(const CtlPlan *p)
{
	return !p->ctx->quiet && !p->ctx->json;
}

CtlPlan *ctl_plan_new(CtlCtx *ctx, const char *op, CtlPlanStyle style, bool dry_run)
{
	CtlPlan *p = calloc(1, sizeof(*p));

	if (!p)
		abort();
	p->ctx = ctx;
	p->op = xstrdup(op);
	p->style = style;
	p->dry_run = dry_run;
	if (dry_run && style == CTL_PLAN_PER_NODE && ctl_plan_text(p))
		printf("%s: dry run, nothing is changed\n", op);
	return p;
}

CtlPlan *ctl_plan_free(CtlPlan *p)
{
	if (!p)
		return NULL;
	for (int i = 0; i < p->count; i++) {
		free(p->steps[i].title);
		free(p->steps[i].node);
		free(p->steps[i].detail);
	}
	free(p->steps);
	free(p->op);
	free(p);
	return NULL;
}

void ctl_plan_step(CtlPlan *p, const char *node, CtlStepFn check, CtlStepFn act, void *arg, int n,
		   const char *fmt, ...)
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
	*s = (PlanStep){.node = xstrdup(node), .check = check, .act = act, .arg = arg, .n = n};
	va_start(ap, fmt);
	if (vasprintf(&s->title, fmt, ap) < 0)
		abort();
	va_end(ap);
}

void ctl_plan_independent(CtlPlan *p)
{
	if (p->count > 0)
		p->steps[p->count - 1].independent = true;
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

void ctl_plan_note_more(CtlPlan *p, const char *fmt, ...)
{
	size_t l = strlen(p->note);
	va_list ap;

	if (l && l + 2 < sizeof(p->note)) {
		memcpy(p->note + l, "; ", 3);
		l += 2;
	}
	va_start(ap, fmt);
	vsnprintf(p->note + l, sizeof(p->note) - l, fmt, ap);
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

/* "step 3/12: TITLE: " or "step 3: NODE: TITLE: " */
static void print_head(CtlPlan *p, int i)
{
	PlanStep *s = &p->steps[i];

	if (p->style == CTL_PLAN_SEQUENCE)
		printf("step %d/%d: %s: ", i + 1, p->count, s->title);
	else
		printf("step %d: %s: %s: ", i + 1, s->node ? ctl_q(s->node) : "-", s->title);
}

static void print_outcome(CtlPlan *p, int i)
{
	PlanStep *s = &p->steps[i];
	const char *d = s->detail;
	bool seq = p->style == CTL_PLAN_SEQUENCE;

	if (!ctl_plan_text(p))
		return;
	if (!seq)
		print_head(p, i);
	switch (s->outcome) {
	case OUT_ALREADY:
		if (seq && d)
			printf("already done (%s)\n", d);
		else
			puts("already done");
		break;
	case OUT_WOULD:
		puts(seq ? "to do" : "would be done");
		break;
	case OUT_DONE:
		if (seq)
			printf("done in %.3f s%s%s%s\n", s->seconds, d ? " (" : "", d ? d : "",
			       d ? ")" : "");
		else
			printf("done%s%s\n", d ? ", " : "", d ? d : "");
		break;
	case OUT_FAILED: /* see failed() */
	case OUT_NOT_RUN:
		break;
	}
	fflush(stdout);
}

static void take_note(CtlPlan *p, PlanStep *s)
{
	free(s->detail);
	s->detail = p->note[0] ? xstrdup(p->note) : NULL;
}

/* Step i failed in its check (`checked` false) or its action. */
static void failed(CtlPlan *p, int i, bool checked)
{
	PlanStep *s = &p->steps[i];
	const char *why = checked ? "failed" : "could not be checked";

	s->outcome = OUT_FAILED;
	free(s->detail);
	s->detail = xstrdup(ctl_last_err[0] ? ctl_last_err : why);
	if (p->style == CTL_PLAN_SEQUENCE) {
		if (checked && ctl_plan_text(p))
			puts("failed");
		if (checked)
			ctl_err("step %d/%d (%s) failed; fix the cause and run the same command "
				"again to continue from there",
				i + 1, p->count, s->title);
		else
			ctl_err("step %d (%s) could not be checked; nothing more was done", i + 1,
				s->title);
	} else {
		ctl_err("step %d (%s: %s) %s; %s", i + 1, s->node ? ctl_q(s->node) : "-", s->title,
			why,
			s->independent ? "the other steps go on, run the same command again later"
				       : "fix the cause and run the same command again");
	}
}

/* The test hook: end as a crash would, right after step i. */
static void maybe_stop(CtlPlan *p, int i, int stop)
{
	if (p->dry_run || stop <= 0)
		return;
	if (p->style == CTL_PLAN_SEQUENCE && stop == i + 1) {
		ctl_err("stopped after step %d (PGQCTL_STOP_AFTER_STEP, for tests)", i + 1);
		exit(CTL_EXIT_ERROR);
	}
	if (p->style == CTL_PLAN_PER_NODE && p->steps[i].outcome == OUT_DONE &&
	    p->changed >= stop) {
		fprintf(stderr, "pgqctl: stopping after step %d (PGQCTL_STOP_AFTER_STEP)\n", i + 1);
		raise(SIGKILL);
	}
}

int ctl_plan_run(CtlPlan *p)
{
	/* a sequence's later checks depend on the earlier steps: a dry run checks
	   up to the first step to do; a per-node step stands alone */
	bool checking = true, ok = true;
	int stop = stop_after();

	for (int i = 0; i < p->count; i++) {
		PlanStep *s = &p->steps[i];
		int done = 0;

		p->note[0] = '\0';
		ctl_last_err[0] = '\0';
		if (checking) {
			done = s->check ? s->check(p, s->arg, s->n) : 0;
			if (done < 0) {
				failed(p, i, false);
				ok = false;
				if (s->independent)
					continue;
				return CTL_EXIT_ERROR;
			}
		}
		if (p->style == CTL_PLAN_SEQUENCE && ctl_plan_text(p)) {
			print_head(p, i);
			fflush(stdout);
		}
		take_note(p, s);
		if (done) {
			s->outcome = OUT_ALREADY;
		} else if (p->dry_run) {
			s->outcome = OUT_WOULD;
			p->planned++;
			if (p->style == CTL_PLAN_SEQUENCE)
				checking = false;
		} else {
			double t0 = ctl_now_sec();

			p->note[0] = '\0';
			ctl_last_err[0] = '\0';
			if (s->act(p, s->arg, s->n) != 0) {
				failed(p, i, true);
				ok = false;
				if (s->independent)
					continue;
				return CTL_EXIT_ERROR;
			}
			s->seconds = ctl_now_sec() - t0;
			s->outcome = OUT_DONE;
			take_note(p, s);
			p->changed++;
		}
		print_outcome(p, i);
		maybe_stop(p, i, stop);
	}
	if (!ok)
		return CTL_EXIT_ERROR;
	if (!ctl_plan_text(p))
		return CTL_EXIT_OK;
	if (p->style == CTL_PLAN_SEQUENCE) {
		if (p->dry_run)
			puts("dry run: nothing was changed");
	} else if (p->dry_run) {
		printf("%s: dry run: %d step%s would change something\n", p->op, p->planned,
		       p->planned == 1 ? "" : "s");
	} else if (p->changed == 0) {
		printf("%s: nothing to do, everything was already done\n", p->op);
	} else {
		printf("%s: finished (%d step%s done now)\n", p->op, p->changed,
		       p->changed == 1 ? "" : "s");
	}
	return CTL_EXIT_OK;
}

int ctl_plan_json(CtlPlan *p, const char *command, int rc, CtlPlanJsonFn extra, void *arg)
{
	CtlJson j;

	if (!p || !p->ctx->json)
		return rc;
	ctl_json_init(&j, stdout);
	ctl_json_obj_begin(&j, NULL);
	ctl_json_str(&j, "command", command);
	ctl_json_str(&j, "operation", p->op);
	ctl_json_bool(&j, "dry_run", p->dry_run);
	ctl_json_bool(&j, "ok", rc == CTL_EXIT_OK);
	if (rc != CTL_EXIT_OK)
		ctl_json_str(&j, "error", ctl_last_err[0] ? ctl_last_err : NULL);
	ctl_json_int(&j, "steps_done_now", p->changed);
	ctl_json_arr_begin(&j, "steps");
	for (int i = 0; i < p->count; i++) {
		PlanStep *s = &p->steps[i];

		if (s->outcome == OUT_NOT_RUN)
			continue;
		ctl_json_obj_begin(&j, NULL);
		ctl_json_int(&j, "step", i + 1);
		ctl_json_str(&j, "node", s->node);
		ctl_json_str(&j, "name", s->title);
		ctl_json_str(&j, "outcome", outcome_name[s->outcome]);
		ctl_json_str(&j, "detail", s->detail);
		if (s->outcome == OUT_DONE)
			ctl_json_num(&j, "seconds", s->seconds);
		else
			ctl_json_null(&j, "seconds");
		ctl_json_obj_end(&j);
	}
	ctl_json_arr_end(&j);
	if (extra)
		extra(&j, arg);
	ctl_json_obj_end(&j);
	ctl_json_end(&j);
	fflush(stdout);
	return rc;
}

/* ---- member connections ---- */

CtlDb *ctl_plan_open(CtlCtx *ctx, const char *node, const char *location)
{
	char label[CTL_NAME_MAX + 16];
	CtlTarget t;

	snprintf(label, sizeof(label), "node %s", ctl_q(node));
	t = (CtlTarget){.label = label, .conninfo = (char *)location};
	return ctl_db_open(ctx, &t);
}

bool ctl_plan_call(CtlDb *db, const char *what, const char *sql, int n, const char *const *p,
		   PGresult **out)
{
	return ctl_node_call_below(db, what, sql, n, p, out, 400);
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
