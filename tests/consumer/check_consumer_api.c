/*
 * libpgqev's edges as a library: what reaches error messages (bounded, one
 * line, never a password), the extensible config and query structs, and the
 * blocking runner's default error output. Connection failures are real: the
 * consumer points at a socket directory that does not exist inside the test's
 * temporary directory.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include <pgqd-ev/pgqev_consumer.h>
#include <pgqd-ev/pqev_conn.h> /* the core, internal: its config checks */

#include "pgtest.h"

static struct event_base *base;

static void setup(void)
{
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
}

static void teardown(void)
{
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
}

/* A connection string whose connects fail at once: no server there. */
static const char *nowhere(const char *extra)
{
	static char buf[1024];
	snprintf(buf, sizeof(buf), "host=%s/no-server-here dbname=x %s", pgt_tmp_dir(),
		 extra ? extra : "");
	return buf;
}

typedef struct Seen {
	int errors;
	size_t msg_len;
	char msg[2048];
	char label[2048];
	char detail[2048];
} Seen;

static void on_error(PgqevConsumer *c, const PgqevError *err, void *arg)
{
	Seen *s = arg;
	s->errors++;
	s->msg_len = strlen(err->message);
	snprintf(s->msg, sizeof(s->msg), "%s", err->message);
	snprintf(s->label, sizeof(s->label), "%s", err->label);
	snprintf(s->detail, sizeof(s->detail), "%s", err->detail);
}

static PgqevVerdict on_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	return PGQEV_DONE;
}

static void run_until_error(Seen *s)
{
	int64_t deadline = pgt_now_ms() + 20000;
	while (s->errors == 0 && pgt_now_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	ck_assert_int_gt(s->errors, 0);
}

/*
 * A label of more than 1 KiB and a connection failure: the message is cut at
 * 1023 bytes (marked "..."), the label and the detail arrive whole and apart.
 * Before the fix this overflowed report()'s stack buffer.
 */
START_TEST(test_long_label_connection_failure)
{
	char label[1100];
	memset(label, 'L', sizeof(label) - 1);
	label[sizeof(label) - 1] = '\0';
	Seen seen = {0};
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	cfg.conninfo = nowhere(NULL);
	cfg.queue = "q";
	cfg.consumer = "c";
	cfg.label = label;
	cfg.on_batch = on_batch;
	cfg.on_error = on_error;
	cfg.arg = &seen;
	char eb[256];
	PgqevConsumer *c = pgqev_consumer_new(base, &cfg, eb, sizeof(eb));
	ck_assert_msg(c != NULL, "%s", eb);
	ck_assert_int_eq(pgqev_consumer_start(c), 0);
	run_until_error(&seen);
	ck_assert_uint_eq(seen.msg_len, 1023);
	ck_assert_str_eq(seen.msg + 1020, "...");
	ck_assert_str_eq(seen.label, label);
	ck_assert_msg(strstr(seen.detail, "no-server-here") != NULL, "%s", seen.detail);
	ck_assert_msg(strncmp(seen.detail, label, 8) != 0, "detail carries the label");
	pgqev_consumer_free(c);
}
END_TEST

/* The consumer's detail never repeats its label (kept apart, not stripped). */
START_TEST(test_error_label_and_detail_apart)
{
	Seen seen = {0};
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	cfg.conninfo = nowhere(NULL);
	cfg.queue = "q";
	cfg.consumer = "c";
	cfg.on_batch = on_batch;
	cfg.on_error = on_error;
	cfg.arg = &seen;
	PgqevConsumer *c = pgqev_consumer_new(base, &cfg, NULL, 0);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(pgqev_consumer_start(c), 0);
	run_until_error(&seen);
	ck_assert_str_eq(seen.label, "x/q/c");
	ck_assert_str_eq(seen.label, pgqev_consumer_label(c));
	char want[4200];
	snprintf(want, sizeof(want), "%s: %s", seen.label, seen.detail);
	ck_assert_str_eq(seen.msg, want);
	ck_assert_msg(strstr(seen.detail, "x/q/c") == NULL, "%s", seen.detail);
	ck_assert_ptr_null(strchr(seen.msg, '\n'));
	pgqev_consumer_free(c);
}
END_TEST

static void expect_refused(const char *conninfo, const char *target, const char *setting)
{
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	cfg.conninfo = conninfo;
	cfg.target_conninfo = target;
	cfg.queue = "q";
	cfg.consumer = "c";
	cfg.on_batch = on_batch;
	char eb[512];
	memset(eb, 0, sizeof(eb));
	ck_assert_ptr_null(pgqev_consumer_new(base, &cfg, eb, sizeof(eb)));
	ck_assert_msg(strncmp(eb, setting, strlen(setting)) == 0, "%s", eb);
	ck_assert_msg(strstr(eb, "hunter2") == NULL && strstr(eb, "secret2") == NULL, "%s", eb);
	ck_assert_msg(strchr(eb, '\n') == NULL, "newline in \"%s\"", eb);
}

/* libpq's parse errors quote the bad token or the whole URI: withheld then. */
START_TEST(test_password_never_in_errbuf)
{
	expect_refused("password=hunter2 secret2", NULL, "conninfo: ");
	expect_refused("postgresql://app:hunter2@[::1/db", NULL, "conninfo: ");
	expect_refused("dbname=x", "password=hunter2 secret2", "target_conninfo: ");
	expect_refused("dbname=x", "postgresql://app:hunter2@[::1/db", "target_conninfo: ");
	/* without a password the cause is shown, on one line */
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	cfg.conninfo = "dbname=x bogus";
	cfg.queue = "q";
	cfg.consumer = "c";
	cfg.on_batch = on_batch;
	char eb[512];
	ck_assert_ptr_null(pgqev_consumer_new(base, &cfg, eb, sizeof(eb)));
	ck_assert_msg(strstr(eb, "conninfo: missing \"=\" after \"bogus\"") == eb, "%s", eb);
	ck_assert_int_ne(eb[strlen(eb) - 1], '\n');
}
END_TEST

/*
 * A dbname holding a whole connection string (libpq expands it): never used
 * as a label, neither by the consumer nor by the connection layer.
 */
START_TEST(test_expanded_dbname_not_a_label)
{
	char ci[1024];
	snprintf(ci, sizeof(ci), "dbname='host=%s/no-server-here password=hunter2'", pgt_tmp_dir());
	Seen seen = {0};
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	cfg.conninfo = ci;
	cfg.queue = "q";
	cfg.consumer = "c";
	cfg.on_batch = on_batch;
	cfg.on_error = on_error;
	cfg.arg = &seen;
	PgqevConsumer *c = pgqev_consumer_new(base, &cfg, NULL, 0);
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(pgqev_consumer_label(c), "-/q/c");
	ck_assert_int_eq(pgqev_consumer_start(c), 0);
	run_until_error(&seen);
	/* the label part; the detail may quote the server, which names the
	   database (libpq does not expand this dbname: it is a literal name) */
	ck_assert_str_eq(seen.label, "-/q/c");
	pgqev_consumer_free(c);

	PqevConnLimit *lim = pqev_connlimit_new(base, 0);
	PqevConnConfig cc;
	pqev_conn_config_init(&cc);
	cc.conninfo = ci;
	PqevConn *conn = pqev_conn_new(lim, &cc, NULL);
	ck_assert_ptr_nonnull(conn);
	ck_assert_int_eq(pqev_conn_start(conn), 0);
	ck_assert_msg(strstr(pqev_conn_name(conn), "hunter2") == NULL, "%s", pqev_conn_name(conn));
	pqev_conn_free(conn);
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(pqev_connlimit_free(lim), 0);
}
END_TEST

/* A config with room for fields this library does not know. */
typedef struct BiggerConfig {
	PgqevConsumerConfig cfg;
	uint64_t future[2];
} BiggerConfig;

START_TEST(test_config_size_checked)
{
	char eb[256];
	PgqevConsumerConfig raw;
	memset(&raw, 0, sizeof(raw));
	raw.conninfo = "dbname=x";
	raw.queue = "q";
	raw.consumer = "c";
	raw.on_batch = on_batch;
	ck_assert_ptr_null(pgqev_consumer_new(base, &raw, eb, sizeof(eb)));
	ck_assert_msg(strstr(eb, "not filled by pgqev_config_init()") != NULL, "%s", eb);

	/* a newer program's struct: accepted while the unknown tail is unset */
	BiggerConfig big;
	pgqev_config_init_size(&big.cfg, sizeof(big));
	ck_assert_uint_eq(big.cfg.size, sizeof(big));
	ck_assert_uint_eq(big.future[0] | big.future[1], 0);
	big.cfg.conninfo = "dbname=x";
	big.cfg.queue = "q";
	big.cfg.consumer = "c";
	big.cfg.on_batch = on_batch;
	PgqevConsumer *c = pgqev_consumer_new(base, &big.cfg, eb, sizeof(eb));
	ck_assert_msg(c != NULL, "%s", eb);
	pgqev_consumer_free(c);
	big.future[1] = 1;
	ck_assert_ptr_null(pgqev_consumer_new(base, &big.cfg, eb, sizeof(eb)));
	ck_assert_msg(strstr(eb, "does not know") != NULL, "%s", eb);
	ck_assert_int_eq(pgqev_run(&big.cfg), -EINVAL);

	/* the same for the connection layer's config and query */
	PqevConnLimit *lim = pqev_connlimit_new(base, 0);
	PqevConnConfig cc;
	memset(&cc, 0, sizeof(cc));
	cc.conninfo = "dbname=x";
	ck_assert_ptr_null(pqev_conn_new(lim, &cc, NULL));
	pqev_conn_config_init(&cc);
	ck_assert_uint_eq(cc.size, sizeof(cc));
	cc.conninfo = "dbname=x";
	PqevConn *conn = pqev_conn_new(lim, &cc, NULL);
	ck_assert_ptr_nonnull(conn);
	ck_assert_int_eq(pqev_conn_set_config(conn, &cc), 0);
	cc.size = 0;
	ck_assert_int_eq(pqev_conn_set_config(conn, &cc), -EINVAL);
	struct {
		PqevQuery q;
		uint64_t future;
	} bq = {{.sql = "select 1", .on_done = (PqevDoneFn)1}, 7};
	bq.q.size = sizeof(bq);
	ck_assert_int_eq(pqev_conn_send(conn, &bq.q, NULL), -E2BIG);
	bq.future = 0;
	/* known layout (or 0, the first layout): on to the next check */
	ck_assert_int_eq(pqev_conn_send(conn, &bq.q, NULL), -ENOTCONN);
	bq.q.size = 0;
	ck_assert_int_eq(pqev_conn_send(conn, &bq.q, NULL), -ENOTCONN);
	bq.q.size = 3;
	ck_assert_int_eq(pqev_conn_send(conn, &bq.q, NULL), -EINVAL);
	pqev_conn_free(conn);
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(pqev_connlimit_free(lim), 0);
}
END_TEST

static const char *stderr_path(void)
{
	static char p[1024];
	snprintf(p, sizeof(p), "%s/runner.stderr", pgt_tmp_dir());
	return p;
}

static bool has_fourth_failure(void *arg)
{
	FILE *f = fopen(stderr_path(), "r");
	if (!f)
		return false;
	char line[2048];
	bool found = false;
	while (fgets(line, sizeof(line), f))
		found |= strstr(line, "failure 4 in a row") != NULL;
	fclose(f);
	return found;
}

/*
 * pgqev_run's default error output: one line per new failure with when it is
 * retried, the same failure again only at streaks 2 and 4 (not 3).
 */
START_TEST(test_runner_default_errors_say_when)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (!freopen(stderr_path(), "w", stderr))
			_exit(3);
		setvbuf(stderr, NULL, _IONBF, 0);
		PgqevConsumerConfig cfg;
		pgqev_config_init(&cfg);
		cfg.conninfo = nowhere(NULL);
		cfg.queue = "q";
		cfg.consumer = "c";
		cfg.on_batch = on_batch;
		_exit(pgqev_run(&cfg) == 0 ? 0 : 1);
	}
	bool seen = pgt_wait_until(has_fourth_failure, NULL, 30000, 20);
	ck_assert_int_eq(kill(pid, SIGTERM), 0);
	int status = 0;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	ck_assert_msg(seen, "no fourth failure printed");
	FILE *f = fopen(stderr_path(), "r");
	ck_assert_ptr_nonnull(f);
	char line[2048];
	int n = 0;
	while (fgets(line, sizeof(line), f)) {
		n++;
		ck_assert_msg(strncmp(line, "pgqev: x/q/c: ", 14) == 0, "%s", line);
		ck_assert_msg(strstr(line, "retrying in ") != NULL, "%s", line);
		ck_assert_msg(strstr(line, "failure 3 in a row") == NULL, "%s", line);
		if (n == 1)
			ck_assert_msg(strstr(line, "in a row") == NULL, "%s", line);
		if (n == 2)
			ck_assert_msg(strstr(line, "failure 2 in a row") != NULL, "%s", line);
	}
	fclose(f);
	ck_assert_int_ge(n, 3);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("consumer-api");
	TCase *tc = pgt_tcase("consumer-api", 60);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_long_label_connection_failure);
	tcase_add_test(tc, test_error_label_and_detail_apart);
	tcase_add_test(tc, test_password_never_in_errbuf);
	tcase_add_test(tc, test_expanded_dbname_not_a_label);
	tcase_add_test(tc, test_config_size_checked);
	tcase_add_test(tc, test_runner_default_errors_say_when);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
