/*
 * libpgqev's split reader (split_min_events) against a private server: each
 * delivered batch equals pgq.get_batch_events of that batch, in order and
 * content (every column), for batches with retried events, concurrent
 * producers, rows in two event tables and parts that are empty; small batches
 * use one connection; a second connection killed mid-batch loses and doubles
 * nothing; PgQ 3.5's SQL (Debian's extension) reads with one backend. The SQL
 * parts themselves are checked at every split block.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "constest.h"

/* What one batch delivered (the last attempt) and what the server says it holds. */
typedef struct Seen {
	int64_t batch;
	char *got, *want;
	size_t got_len, got_cap;
	int attempts;
	int parts; /* second connections seen while the batch was read */
} Seen;

typedef struct Split {
	PGconn *admin;
	Seen seen[32];
	int nseen;
	int retry_mod;     /* > 0: in the first batch, retry events whose value % this == 0 */
	int kill_at_chunk; /* > 0: terminate the second connection's backend at this chunk */
	bool killed;
	int64_t main_pid;
} Split;

static void setup(void)
{
	cs_setup();
}

static void teardown(void)
{
	cs_teardown();
}

static void append(Seen *s, const char *txt)
{
	size_t n = strlen(txt);
	if (s->got_len + n + 1 > s->got_cap) {
		s->got_cap = (s->got_len + n + 1) * 2;
		s->got = realloc(s->got, s->got_cap);
		ck_assert_ptr_nonnull(s->got);
	}
	memcpy(s->got + s->got_len, txt, n + 1);
	s->got_len += n;
}

static const char *nz(const char *s)
{
	return s ? s : "\\N";
}

/* The batch's events as the server lists them: one line per event, every column. */
static char *want_of(PGconn *c, int64_t batch)
{
	char sql[800];
	snprintf(
		sql, sizeof(sql),
		"select coalesce(string_agg(concat_ws('|', ev_id, coalesce(ev_time::text, '\\N'),"
		" ev_txid, coalesce(ev_retry::text, '\\N'), coalesce(ev_type, '\\N'),"
		" coalesce(ev_data, '\\N'),"
		" coalesce(ev_extra1, '\\N'), coalesce(ev_extra2, '\\N'), coalesce(ev_extra3, '\\N'),"
		" coalesce(ev_extra4, '\\N')) || E'\\n', '' order by n), '')"
		" from pgq.get_batch_events(%lld) with ordinality as e(ev_id, ev_time, ev_txid,"
		" ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4, n)",
		(long long)batch);
	return pgt_value(c, sql);
}

static PgqevVerdict split_hook(Rec *r, PgqevBatch *b)
{
	Split *sp = r->hook_arg;
	int64_t id = pgqev_batch_id(b);
	if (pgqev_batch_chunk(b) == 0) {
		Seen *s = NULL;
		for (int i = 0; i < sp->nseen; i++)
			if (sp->seen[i].batch == id)
				s = &sp->seen[i];
		if (!s) {
			ck_assert_int_lt(sp->nseen, 32);
			s = &sp->seen[sp->nseen++];
			s->batch = id;
			s->want = want_of(sp->admin, id);
		}
		/* a new attempt of the batch: what the earlier one delivered is void */
		s->got_len = 0;
		if (s->got)
			s->got[0] = 0;
		s->attempts++;
		s->parts = (int)pgt_int(sp->admin, "select count(*) from pg_stat_activity where"
						   " application_name = 'pgqev-consumer-part'"
						   " and datname = current_database()");
	}
	Seen *s = &sp->seen[sp->nseen - 1];
	ck_assert_int_eq(s->batch, id);
	char line[4096];
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		PgqevEvent *e = pgqev_batch_event(b, i);
		/* ev_retry: NULL for a first delivery, the count for a retried event */
		char retry[16] = "\\N";
		if (pgqev_event_retry_count(e))
			snprintf(retry, sizeof(retry), "%d", pgqev_event_retry_count(e));
		snprintf(line, sizeof(line), "%lld|%s|%lld|%s|%s|%s|%s|%s|%s|%s\n",
			 (long long)pgqev_event_id(e), nz(pgqev_event_time(e)),
			 (long long)pgqev_event_txid(e), retry, nz(pgqev_event_type(e)),
			 nz(pgqev_event_data(e)), nz(pgqev_event_extra(e, 1)),
			 nz(pgqev_event_extra(e, 2)), nz(pgqev_event_extra(e, 3)),
			 nz(pgqev_event_extra(e, 4)));
		append(s, line);
		if (sp->retry_mod && sp->nseen == 1 && s->attempts == 1) {
			const char *d = pgqev_event_data(e);
			if (d && atoll(d) % sp->retry_mod == 0)
				pgqev_event_retry(e, 0);
		}
	}
	if (sp->kill_at_chunk && !sp->killed && (int)pgqev_batch_chunk(b) == sp->kill_at_chunk) {
		ck_assert_int_eq(pgt_int(sp->admin,
					 "select count(pg_terminate_backend(pid))"
					 " from pg_stat_activity where application_name ="
					 " 'pgqev-consumer-part'"
					 " and datname = current_database()"),
				 1);
		sp->killed = true;
	}
	return PGQEV_DONE;
}

/* Every batch's last attempt delivered exactly what get_batch_events lists. */
static void assert_batches_equal(Split *sp)
{
	for (int i = 0; i < sp->nseen; i++) {
		Seen *s = &sp->seen[i];
		ck_assert_ptr_nonnull(s->want);
		ck_assert_msg(
			s->got && strcmp(s->got, s->want) == 0,
			"batch %lld differs from get_batch_events:\n--- got\n%.2000s\n--- want\n%.2000s",
			(long long)s->batch, s->got ? s->got : "", s->want);
	}
}

static void split_free(Split *sp)
{
	for (int i = 0; i < sp->nseen; i++) {
		free(sp->seen[i].got);
		free(sp->seen[i].want);
	}
	PQfinish(sp->admin);
}

/* n events with data from..from+n, a padded extra1 so a batch spans many blocks;
   in one transaction on c. */
static void produce_on(PGconn *c, int64_t from, int64_t n)
{
	char sql[300];
	snprintf(
		sql, sizeof(sql),
		"select count(pgq.insert_event('q', 'num', i::text, repeat('x', 200), null, 'e3', null))"
		" from generate_series(%lld, %lld) i",
		(long long)from, (long long)(from + n - 1));
	pgt_exec(c, sql);
}

/* Wait until the consumer is at the queue's last tick and idle. */
static void drain(const char *db, Rec *r)
{
	Rec *all[1] = {r};
	ck_assert(cs_run_until_drained(db, "q", all, 1, 60000));
}

START_TEST(test_split_equals_batch_events)
{
	const char *db = cs_db_with_queue("q");
	pgt_exec_db(db, "select pgq.set_queue_config('q', 'rotation_period', '0')");
	Split sp = {.admin = pgt_connect(db), .retry_mod = 7};
	Rec r = {.name = "split", .hook = split_hook, .hook_arg = &sp};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.fetch_size = 7;
	cfg.split_min_events = 100;
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));

	/* batch 1: three producers with transactions open at once, interleaved */
	PGconn *p[3];
	for (int i = 0; i < 3; i++) {
		p[i] = pgt_connect(db);
		pgt_exec(p[i], "begin");
	}
	for (int k = 0; k < 30; k++)
		produce_on(p[k % 3], k * 50, 50);
	pgt_exec(p[1], "commit");
	pgt_exec(p[2], "commit");
	pgt_exec(p[0], "commit");
	cs_tick(db);
	drain(db, &r);
	ck_assert_int_eq(sp.nseen, 1);
	ck_assert_int_eq(sp.seen[0].parts, 1); /* read through a second connection */

	/* batch 2: the retried events (old ids, in the current table), new events,
	   a rotation, and more events in the next table */
	pgt_exec(sp.admin, "select pgq.maint_retry_events()");
	produce_on(p[0], 10000, 400);
	int t0 = (int)pgt_int(sp.admin, "select queue_cur_table from pgq.queue");
	pgt_exec(sp.admin, "select pgq.maint_rotate_tables_step1('q')");
	pgt_exec(sp.admin, "select pgq.maint_rotate_tables_step2()");
	ck_assert_int_ne((int)pgt_int(sp.admin, "select queue_cur_table from pgq.queue"), t0);
	pgt_exec(p[1], "begin");
	produce_on(p[1], 20000, 300);
	produce_on(p[2], 30000, 300);
	pgt_exec(p[1], "commit");
	cs_tick(db);
	drain(db, &r);
	ck_assert_int_eq(sp.nseen, 2);
	ck_assert_int_eq(sp.seen[1].parts, 1);
	/* the retried events are in it, with ids below the new ones */
	ck_assert_ptr_nonnull(strstr(sp.seen[1].got, "|1|num|0|"));

	/* batch 3: below the threshold: one connection */
	produce_on(p[2], 40000, 20);
	cs_tick(db);
	drain(db, &r);
	ck_assert_int_eq(sp.nseen, 3);
	ck_assert_int_eq(sp.seen[2].parts, 0);

	assert_batches_equal(&sp);
	for (int i = 0; i < sp.nseen; i++)
		ck_assert_int_eq(sp.seen[i].attempts, 1);
	ck_assert_int_eq(r.errors[PGQEV_ERR_SQL] + r.errors[PGQEV_ERR_CONNECTION], 0);
	for (int i = 0; i < 3; i++)
		PQfinish(p[i]);
	rec_free(&r);
	split_free(&sp);
}
END_TEST

/* The parts of every split block, merged, are the batch; either may be empty. */
START_TEST(test_split_parts_cover_batch_at_every_block)
{
	const char *db = cs_db_with_queue("q");
	PGconn *c = pgt_connect(db);
	pgt_exec(c, "select pgq.register_consumer('q', 'c')");
	produce_on(c, 0, 300);
	pgt_exec(c, "select pgq.ticker()");
	int64_t batch = pgt_int(c, "select pgq.next_batch('q', 'c')");
	char *want = want_of(c, batch);
	char *tbl = pgt_value(c, "select pgq.current_event_table('q')");
	char q[300];
	snprintf(q, sizeof(q), "select max((ctid::text::point)[0]::int8) + 1 from %s", tbl);
	free(tbl);
	int64_t blocks = pgt_int(c, q);
	ck_assert_int_gt(blocks, 3);
	snprintf(q, sizeof(q), "select pgq._batch_split_block(%lld)", (long long)batch);
	int64_t mid = pgt_int(c, q);
	ck_assert_int_gt(mid, 0);
	ck_assert_int_lt(mid, blocks);
	for (int64_t blk = 0; blk <= blocks + 1; blk++) {
		char sql[1200];
		snprintf(
			sql, sizeof(sql),
			"select coalesce(string_agg(concat_ws('|', ev_id, coalesce(ev_time::text, '\\N'),"
			" ev_txid, coalesce(ev_retry::text, '\\N'), coalesce(ev_type, '\\N'),"
			" coalesce(ev_data, '\\N'), coalesce(ev_extra1, '\\N'), coalesce(ev_extra2, '\\N'),"
			" coalesce(ev_extra3, '\\N'), coalesce(ev_extra4, '\\N')) || E'\\n', '' order by"
			" ev_id), '') from (select * from pgq._get_batch_part_cursor(%lld, 'p0', 1000000,"
			" %lld, 0) union all select * from pgq._get_batch_part_cursor(%lld, 'p1', 1000000,"
			" %lld, 1)) u",
			(long long)batch, (long long)blk, (long long)batch, (long long)blk);
		pgt_exec(c, "begin");
		char *got = pgt_value(c, sql);
		pgt_exec(c, "rollback");
		ck_assert_msg(strcmp(got, want) == 0,
			      "split block %lld: parts differ from the batch", (long long)blk);
		free(got);
	}
	/* each part is sorted by ev_id on its own (the merge relies on it) */
	pgt_exec(c, "begin");
	snprintf(q, sizeof(q),
		 "select count(*) from (select ev_id, lag(ev_id) over () as prev"
		 " from pgq._get_batch_part_cursor(%lld, 'p', 1000000, 2, 1)) x where prev > ev_id",
		 (long long)batch);
	ck_assert_int_eq(pgt_int(c, q), 0);
	pgt_exec(c, "rollback");
	/* bad arguments name the argument */
	char *e = pgt_error(c, "select * from pgq._get_batch_part_cursor(1, 'x', 1, 0, 2)");
	ck_assert_ptr_nonnull(strstr(e, "part 2 is not 0 or 1"));
	free(e);
	e = pgt_error(c, "select * from pgq._get_batch_part_cursor(1, 'x', 1, -1, 0)");
	ck_assert_ptr_nonnull(strstr(e, "split block -1 is out of range"));
	free(e);
	free(want);
	PQfinish(c);
}
END_TEST

START_TEST(test_split_second_connection_killed_mid_batch)
{
	const char *db = cs_db_with_queue("q");
	Split sp = {.admin = pgt_connect(db), .kill_at_chunk = 5};
	Rec r = {.name = "split-kill", .quiet = true, .hook = split_hook, .hook_arg = &sp};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.fetch_size = 5;
	cfg.split_min_events = 100;
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	PGconn *p = pgt_connect(db);
	produce_on(p, 0, 2000);
	cs_tick(db);
	drain(db, &r);
	ck_assert(sp.killed);
	ck_assert_int_eq(sp.nseen, 1);
	ck_assert_int_eq(sp.seen[0].attempts, 2);
	ck_assert_int_eq(sp.seen[0].parts, 0); /* the second attempt: one backend */
	ck_assert_int_ge(r.errors[PGQEV_ERR_CONNECTION], 1);
	ck_assert_msg(strstr(r.last_error, "second connection") != NULL, "%s", r.last_error);
	assert_batches_equal(&sp);
	/* nothing lost: every event delivered, and none doubled in the last attempt */
	size_t dup = cs_assert_at_least_once(&r, 0, 2000);
	ck_assert_uint_gt(dup, 0); /* the first attempt's chunks came again */
	/* the next large batch splits again */
	produce_on(p, 2000, 500);
	cs_tick(db);
	drain(db, &r);
	ck_assert_int_eq(sp.nseen, 2);
	ck_assert_int_eq(sp.seen[1].parts, 1);
	ck_assert_int_eq(sp.seen[1].attempts, 1);
	assert_batches_equal(&sp);
	PQfinish(p);
	rec_free(&r);
	split_free(&sp);
}
END_TEST

/* Debian's PgQ 3.5 SQL has no pgq._get_batch_part_cursor: read with one backend. */
START_TEST(test_split_falls_back_on_pgq35)
{
	ck_assert_msg(access("/usr/share/postgresql/15/extension/pgq.control", R_OK) == 0,
		      "Debian's postgresql-15-pgq3 is not installed");
	const char *db = pgt_db_new_empty();
	Split sp = {.admin = pgt_connect(db)};
	pgt_exec(sp.admin, "create extension pgq");
	pgt_exec(sp.admin, "select pgq.create_queue('q')");
	pgt_exec(sp.admin, "select pgq.set_queue_config('q', 'ticker_max_count', '1')");
	Rec r = {.name = "split-35", .quiet = true, .hook = split_hook, .hook_arg = &sp};
	PgqevConsumerConfig cfg;
	cs_config(&cfg, &r, db, "q", "c1");
	cfg.fetch_size = 7;
	cfg.split_min_events = 10;
	cfg.poll_interval = 100 * PGQEV_USEC_PER_MSEC; /* no tick NOTIFY in PgQ 3.5 */
	cs_start(&r, &cfg);
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	produce_on(sp.admin, 0, 300);
	pgt_exec(sp.admin, "select pgq.ticker('q')");
	CountCond cc = {&r, 300};
	ck_assert(cs_run_until(cs_has_count, &cc, 30000));
	ck_assert(cs_state_is(&r, PGQEV_STATE_IDLE, 20000));
	ck_assert_int_eq(sp.nseen, 1);
	ck_assert_int_eq(sp.seen[0].parts, 0);
	ck_assert_int_eq(sp.seen[0].attempts, 1);
	assert_batches_equal(&sp);
	cs_assert_exactly_once(&r, 0, 300);
	rec_free(&r);
	split_free(&sp);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("consumer-split");
	TCase *tc = pgt_tcase("consumer-split", 120);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_split_equals_batch_events);
	tcase_add_test(tc, test_split_parts_cover_batch_at_every_block);
	tcase_add_test(tc, test_split_second_connection_killed_mid_batch);
	tcase_add_test(tc, test_split_falls_back_on_pgq35);
	suite_add_tcase(s, tc);
	PgtOptions o = {.need_server = true};
	return pgt_main(s, &o);
}
