/* Unit tests of logging: formats, levels, outputs, context and password scrubbing. */
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pgqd-ev/pqev_log.h>

#include "pgtest.h"

static int pfd[2];

/* Log into a pipe we read back. */
static void setup_pipe(PqevLogFormat format, PqevLogJournal journal, PqevLogLevel level)
{
	PqevLogSettings s = {0};
	ck_assert_int_eq(pipe(pfd), 0);
	ck_assert_int_eq(fcntl(pfd[0], F_SETFL, O_NONBLOCK), 0);
	s.level = level;
	s.format = format;
	s.journal = journal;
	s.stderr_fd = pfd[1];
	ck_assert_int_eq(pqev_log_configure(&s), 0);
}

static void teardown_pipe(void)
{
	pqev_log_shutdown();
	close(pfd[0]);
	close(pfd[1]);
}

/* Everything written so far (static buffer). */
static const char *drain(void)
{
	static char buf[65536];
	ssize_t n, o = 0;
	while ((n = read(pfd[0], buf + o, sizeof(buf) - 1 - (size_t)o)) > 0)
		o += n;
	buf[o] = '\0';
	return buf;
}

static void assert_match(const char *text, const char *pattern)
{
	regex_t re;
	ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
	if (regexec(&re, text, 0, NULL, 0) != 0)
		ck_abort_msg("\"%s\" does not match /%s/", text, pattern);
	regfree(&re);
}

START_TEST(test_text_format_pgqd_compatible)
{
	PqevLogCtx *ctx = pqev_log_ctx_new("db", "qdb1");
	char pat[256];
	setup_pipe(PQEV_LOG_TEXT, PQEV_LOG_JOURNAL_OFF, PQEV_LOG_INFO);
	pqev_log_info(ctx, "pgq version ok: %s", "3.5");
	pqev_log_warning(NULL, "no context");
	snprintf(pat, sizeof(pat),
		 "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3} [A-Z+0-9-]+ "
		 "\\[%d\\] LOG \\[qdb1\\]: pgq version ok: 3\\.5\n"
		 "[0-9-]+ [0-9:.]+ [A-Z+0-9-]+ \\[%d\\] WARNING no context\n$",
		 (int)getpid(), (int)getpid());
	assert_match(drain(), pat);
	pqev_log_ctx_free(ctx);
	teardown_pipe();
}
END_TEST

static int evaluated;
static int side_effect(void)
{
	return ++evaluated;
}

START_TEST(test_level_filtering_skips_arguments)
{
	PqevLogLevel l;
	setup_pipe(PQEV_LOG_TEXT, PQEV_LOG_JOURNAL_OFF, PQEV_LOG_WARNING);
	evaluated = 0;
	pqev_log_info(NULL, "info %d", side_effect());
	pqev_log_debug(NULL, "debug %d", side_effect());
	ck_assert_int_eq(evaluated, 0);
	ck_assert_str_eq(drain(), "");
	pqev_log_error(NULL, "error %d", side_effect());
	ck_assert_int_eq(evaluated, 1);
	assert_match(drain(), " ERROR error 1\n$");

	pqev_log_set_level(PQEV_LOG_NOISE);
	pqev_log_noise(NULL, "noise");
	assert_match(drain(), " NOISE noise\n$");
	ck_assert_int_eq(pqev_log_level_parse("Debug", &l), 0);
	ck_assert_int_eq(l, PQEV_LOG_DEBUG);
	ck_assert_int_eq(pqev_log_level_parse("chatty", &l), -EINVAL);
	ck_assert_str_eq(pqev_log_level_name(PQEV_LOG_WARNING), "warning");
	teardown_pipe();
}
END_TEST

START_TEST(test_multiline_and_context_sanitized)
{
	PqevLogCtx *ctx = pqev_log_ctx_new("db", "we\nird\x1b");
	setup_pipe(PQEV_LOG_TEXT, PQEV_LOG_JOURNAL_OFF, PQEV_LOG_INFO);
	ck_assert_str_eq(pqev_log_ctx_name(ctx), "we?ird?");
	pqev_log_error(ctx, "libpq: FATAL:  terminating\nDETAIL: more\n");
	assert_match(drain(),
		     " ERROR \\[we\\?ird\\?\\]: libpq: FATAL:  terminating\n\tDETAIL: more\n$");
	pqev_log_ctx_free(ctx);
	teardown_pipe();
}
END_TEST

START_TEST(test_journal_prefix)
{
	char env[64];
	struct stat sb;
	setup_pipe(PQEV_LOG_TEXT, PQEV_LOG_JOURNAL_ON, PQEV_LOG_DEBUG);
	pqev_log_warning(NULL, "first\nsecond");
	pqev_log_debug(NULL, "dbg");
	ck_assert_str_eq(drain(), "<4>WARNING first\n<4>\tsecond\n<7>DEBUG dbg\n");
	teardown_pipe();

	/* AUTO: JOURNAL_STREAM names our pipe's device and inode */
	ck_assert_int_eq(pipe(pfd), 0);
	ck_assert_int_eq(fstat(pfd[1], &sb), 0);
	snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)sb.st_dev,
		 (unsigned long long)sb.st_ino);
	setenv("JOURNAL_STREAM", env, 1);
	close(pfd[0]);
	close(pfd[1]);
	setup_pipe(PQEV_LOG_TEXT, PQEV_LOG_JOURNAL_AUTO, PQEV_LOG_INFO);
	pqev_log_info(NULL, "x"); /* a different pipe: not the journal */
	assert_match(drain(), "^[0-9]{4}-.* LOG x\n$");
	teardown_pipe();
	ck_assert_int_eq(pipe(pfd), 0);
	ck_assert_int_eq(fcntl(pfd[0], F_SETFL, O_NONBLOCK), 0);
	ck_assert_int_eq(fstat(pfd[1], &sb), 0);
	snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)sb.st_dev,
		 (unsigned long long)sb.st_ino);
	setenv("JOURNAL_STREAM", env, 1);
	{
		PqevLogSettings s = {.level = PQEV_LOG_INFO, .stderr_fd = pfd[1]};
		ck_assert_int_eq(pqev_log_configure(&s), 0);
	}
	pqev_log_info(NULL, "to the journal");
	ck_assert_str_eq(drain(), "<6>LOG to the journal\n");
	unsetenv("JOURNAL_STREAM");
	teardown_pipe();
}
END_TEST

START_TEST(test_logfmt)
{
	PqevLogCtx *ctx = pqev_log_ctx_new("db", "my db");
	char pat[256];
	setup_pipe(PQEV_LOG_LOGFMT, PQEV_LOG_JOURNAL_OFF, PQEV_LOG_INFO);
	pqev_log_info(ctx, "said \"hi\"\nthen left");
	pqev_log_error(NULL, "plain");
	snprintf(pat, sizeof(pat),
		 "^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\\.[0-9]{3}Z pid=%d level=info "
		 "db=\"my db\" msg=\"said \\\\\"hi\\\\\"\\\\nthen left\"\n"
		 "ts=[^ ]+ pid=[0-9]+ level=error msg=\"plain\"\n$",
		 (int)getpid());
	assert_match(drain(), pat);
	teardown_pipe();

	setup_pipe(PQEV_LOG_LOGFMT, PQEV_LOG_JOURNAL_ON, PQEV_LOG_INFO);
	pqev_log_info(ctx, "x");
	ck_assert_str_eq(drain(), "<6>level=info db=\"my db\" msg=\"x\"\n");
	pqev_log_ctx_free(ctx);
	teardown_pipe();
}
END_TEST

static char *slurp(const char *path)
{
	static char buf[8192];
	int fd = open(path, O_RDONLY);
	ssize_t n;
	ck_assert_int_ge(fd, 0);
	n = read(fd, buf, sizeof(buf) - 1);
	ck_assert_int_ge(n, 0);
	buf[n] = '\0';
	close(fd);
	return buf;
}

START_TEST(test_logfile_append_and_reopen)
{
	char dir[] = "/tmp/pqev-log-XXXXXX", path[128], rotated[128], bad[160];
	PqevLogSettings s = {0};
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/d.log", dir);
	snprintf(rotated, sizeof(rotated), "%s/d.log.1", dir);
	snprintf(bad, sizeof(bad), "%s/nosuchdir/d.log", dir);

	ck_assert_int_eq(pipe(pfd), 0);
	ck_assert_int_eq(fcntl(pfd[0], F_SETFL, O_NONBLOCK), 0);
	s.level = PQEV_LOG_INFO;
	s.stderr_fd = pfd[1];
	s.journal = PQEV_LOG_JOURNAL_ON; /* the file still gets full lines */
	s.logfile = path;
	ck_assert_int_eq(pqev_log_configure(&s), 0);
	pqev_log_info(NULL, "one");
	ck_assert_int_eq(rename(path, rotated), 0);
	pqev_log_info(NULL, "two"); /* still into the renamed file */
	ck_assert_int_eq(pqev_log_reopen(), 0);
	pqev_log_info(NULL, "three");
	assert_match(slurp(rotated), "^[0-9]{4}-[^\n]* LOG one\n[^\n]* LOG two\n$");
	assert_match(slurp(path), "^[0-9]{4}-[^\n]* LOG three\n$");
	ck_assert_str_eq(drain(), "<6>LOG one\n<6>LOG two\n<6>LOG three\n");

	/* a bad logfile on reload: error, and the old outputs keep working */
	s.logfile = bad;
	ck_assert_int_eq(pqev_log_configure(&s), -ENOENT);
	pqev_log_info(NULL, "four");
	assert_match(slurp(path), "LOG three\n[^\n]* LOG four\n$");

	/* quiet: nothing on stderr, the file still gets it */
	s.logfile = path;
	s.quiet = true;
	ck_assert_int_eq(pqev_log_configure(&s), 0);
	drain();
	pqev_log_info(NULL, "five");
	ck_assert_str_eq(drain(), "");
	assert_match(slurp(path), "LOG five\n$");
	pqev_log_shutdown();
	close(pfd[0]);
	close(pfd[1]);
	unlink(path);
	unlink(rotated);
	rmdir(dir);
}
END_TEST

START_TEST(test_syslog_threshold)
{
	PqevLogSettings s = {.level = PQEV_LOG_WARNING,
			     .syslog = true,
			     .syslog_ident = "pqev-test",
			     .quiet = true};
	ck_assert_int_eq(pqev_log_configure(&s), 0);
	/* info reaches syslog even when stderr and file take warnings only */
	ck_assert(pqev_log_enabled(PQEV_LOG_INFO));
	ck_assert(!pqev_log_enabled(PQEV_LOG_DEBUG));
	pqev_log_info(NULL, "pgqd-ev unit test line, ignore");
	pqev_log_shutdown();
	ck_assert(!pqev_log_enabled(PQEV_LOG_DEBUG));
}
END_TEST

static void scrub_eq(const char *in, const char *want)
{
	char out[256];
	size_t n = pqev_log_scrub(out, sizeof(out), in);
	ck_assert_str_eq(out, want);
	ck_assert_uint_eq(n, strlen(want));
}

START_TEST(test_scrub)
{
	char small[8];
	char *d;
	scrub_eq("host=a password=secret user=u", "host=a password=*** user=u");
	scrub_eq("password = 'it''s' dbname=x", "password = ***'s' dbname=x");
	scrub_eq("password='a b\\' c' port=1", "password=*** port=1");
	scrub_eq("PASSWORD=x", "PASSWORD=***");
	scrub_eq("PGPASSWORD=x ok", "PGPASSWORD=*** ok");
	scrub_eq("mypassword=x", "mypassword=x");
	scrub_eq("password is fine", "password is fine");
	scrub_eq("postgresql://user:pw@host:5432/db", "postgresql://user:***@host:5432/db");
	scrub_eq("postgres://u:p:q@h/db?password=zz&sslmode=require",
		 "postgres://u:***@h/db?password=***&sslmode=require");
	scrub_eq("postgresql://host:5432/db", "postgresql://host:5432/db");
	scrub_eq("postgresql://user@host:5432", "postgresql://user@host:5432");
	scrub_eq("", "");
	/* truncation is NUL-terminated and reports the full length */
	ck_assert_uint_eq(pqev_log_scrub(small, sizeof(small), "password=abc"), 12);
	ck_assert_str_eq(small, "passwor");
	d = pqev_log_scrub_dup("x password=y");
	ck_assert_str_eq(d, "x password=***");
	free(d);
}
END_TEST

START_TEST(test_every_line_scrubbed)
{
	PqevLogCtx *ctx = pqev_log_ctx_new("db", "d1");
	const char *out;
	setup_pipe(PQEV_LOG_TEXT, PQEV_LOG_JOURNAL_ON, PQEV_LOG_INFO);
	pqev_log_warning(ctx, "connect failed: %s", "host=h password=hunter2 dbname=d1");
	pqev_log_warning(ctx, "uri %s", "postgresql://me:hunter2@h/d1");
	out = drain();
	ck_assert_ptr_null(strstr(out, "hunter2"));
	ck_assert_str_eq(out, "<4>WARNING [d1]: connect failed: host=h password=*** dbname=d1\n"
			      "<4>WARNING [d1]: uri postgresql://me:***@h/d1\n");
	pqev_log_ctx_free(ctx);
	teardown_pipe();
}
END_TEST

START_TEST(test_long_message)
{
	char big[5000];
	const char *out;
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	setup_pipe(PQEV_LOG_TEXT, PQEV_LOG_JOURNAL_ON, PQEV_LOG_INFO);
	pqev_log_info(NULL, "%s end", big);
	out = drain();
	ck_assert_uint_eq(strlen(out), strlen("<6>LOG ") + sizeof(big) - 1 + strlen(" end\n"));
	teardown_pipe();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("log");
	TCase *tc = pgt_tcase("log", 30);
	tcase_add_test(tc, test_text_format_pgqd_compatible);
	tcase_add_test(tc, test_level_filtering_skips_arguments);
	tcase_add_test(tc, test_multiline_and_context_sanitized);
	tcase_add_test(tc, test_journal_prefix);
	tcase_add_test(tc, test_logfmt);
	tcase_add_test(tc, test_logfile_append_and_reopen);
	tcase_add_test(tc, test_syslog_threshold);
	tcase_add_test(tc, test_scrub);
	tcase_add_test(tc, test_every_line_scrubbed);
	tcase_add_test(tc, test_long_message);
	suite_add_tcase(s, tc);
	return pgt_main(s, NULL);
}
