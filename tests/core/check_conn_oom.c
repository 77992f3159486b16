/*
 * Out-of-memory paths of the connection layer that need no server, driven by
 * making chosen allocations fail (the test links with -Wl,--wrap=calloc, which
 * reaches the core's own calls). The rule under test: the library never
 * crashes; the attempt fails and is retried on its backoff.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_conn.h>
#include <pgqd-ev/pqev_connlimit.h>

#include "pgtest.h"

void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);

/* Fail the n-th calloc(1, fail_size) from now on (0: none). */
static size_t fail_size;
static int fail_nth;

void *__wrap_calloc(size_t n, size_t size)
{
	if (fail_nth > 0 && n == 1 && size == fail_size && --fail_nth == 0)
		return NULL;
	return __real_calloc(n, size);
}

typedef struct Seen {
	int failed;
	char msg[512];
} Seen;

static void on_event(PqevConn *c, const PqevConnEvent *ev, void *arg)
{
	Seen *s = arg;
	if (ev->type == PQEV_EV_CONNECT_FAILED) {
		s->failed++;
		strncpy(s->msg, ev->message, sizeof(s->msg) - 1);
	}
}

/*
 * Two host names: the second lookup's record cannot be allocated, after the
 * first was made but before any was issued. The attempt must fail cleanly
 * (before the fix, dropping it cancelled a lookup that was never started).
 */
START_TEST(test_resolver_oom_between_lookups)
{
	struct event_base *base = event_base_new();
	PqevConnLimit *lim = pqev_connlimit_new(base, 0);
	PqevConnConfig cfg;
	Seen seen = {0};
	PqevConnCallbacks cb = {.on_event = on_event, .arg = &seen};

	pqev_conn_config_init(&cfg);
	cfg.conninfo = "host=one.invalid,two.invalid dbname=x";
	PqevConn *c = pqev_conn_new(lim, &cfg, &cb);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(pqev_conn_start(c), 0);
	/* the lookup record: a pointer, a pointer, an int and a bool */
	fail_size = 2 * sizeof(void *) + sizeof(int) + sizeof(bool);
	fail_size = (fail_size + sizeof(void *) - 1) / sizeof(void *) * sizeof(void *);
	fail_nth = 2;
	event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	fail_nth = 0;
	ck_assert_int_eq(seen.failed, 1);
	ck_assert_msg(strstr(seen.msg, "out of memory resolving") != NULL, "%s", seen.msg);
	ck_assert_int_eq(pqev_conn_state(c), PQEV_CONN_BACKOFF);
	pqev_conn_free(c);
	ck_assert_int_eq(pqev_connlimit_free(lim), 0);
	event_base_free(base);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conn-oom");
	TCase *tc = tcase_create("conn-oom");
	tcase_add_test(tc, test_resolver_oom_between_lookups);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = false};
	return pgt_main(s, &o);
}
