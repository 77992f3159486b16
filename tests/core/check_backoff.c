/* Unit tests for the reconnect backoff arithmetic (no server). */
#include <pgqd-ev/pqev_backoff.h>

#include "pgtest.h"

START_TEST(test_first_delay_under_a_second)
{
	PqevBackoff b;
	pqev_backoff_init(&b, 200 * USEC_PER_MSEC, 60 * USEC_PER_SEC, 12345);
	for (int i = 0; i < 1000; i++) {
		usec_t d;
		pqev_backoff_reset(&b);
		d = pqev_backoff_next(&b);
		ck_assert_uint_ge(d, 100 * USEC_PER_MSEC);
		ck_assert_uint_le(d, 200 * USEC_PER_MSEC);
	}
}
END_TEST

START_TEST(test_grows_and_caps)
{
	PqevBackoff b;
	usec_t prev_hi = 0;
	pqev_backoff_init(&b, 100 * USEC_PER_MSEC, 5 * USEC_PER_SEC, 99);
	for (int i = 0; i < 200; i++) {
		usec_t d = pqev_backoff_next(&b);
		usec_t hi = 100 * USEC_PER_MSEC << (i < 20 ? i : 20);
		if (hi > 5 * USEC_PER_SEC)
			hi = 5 * USEC_PER_SEC;
		ck_assert_uint_le(d, hi);
		ck_assert_uint_ge(d, hi / 2);
		ck_assert_uint_ge(hi, prev_hi);
		prev_hi = hi;
	}
	ck_assert(pqev_backoff_failing(&b));
	pqev_backoff_reset(&b);
	ck_assert(!pqev_backoff_failing(&b));
}
END_TEST

START_TEST(test_jitter_spreads)
{
	/* 300 databases failing at once must not retry in lockstep */
	PqevBackoff b;
	int buckets[10] = {0};
	pqev_backoff_init(&b, USEC_PER_SEC, 60 * USEC_PER_SEC, 7);
	for (int i = 0; i < 3000; i++) {
		usec_t d = pqev_backoff_jitter(&b, 0, 999999);
		buckets[d / 100000]++;
	}
	for (int i = 0; i < 10; i++)
		ck_assert_int_gt(buckets[i], 200);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("backoff");
	TCase *tc = pgt_tcase("backoff", 10);
	tcase_add_test(tc, test_first_delay_under_a_second);
	tcase_add_test(tc, test_grows_and_caps);
	tcase_add_test(tc, test_jitter_spreads);
	suite_add_tcase(s, tc);
	return pgt_main(s, NULL);
}
