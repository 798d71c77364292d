/*
 * tessera-bench latency histogram: bucket layout (contiguous, bounded
 * relative error), percentiles against exact order statistics, mean,
 * deviation and merging.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bench.h"

static void test_buckets_contiguous(void **state)
{
	(void)state;
	/* every bucket starts where the previous one ends */
	for (unsigned i = 1; i < BENCH_HIST_NBUCKETS; i++)
		assert_int_equal(bench_hist_bucket_low(i),
				 bench_hist_bucket_low(i - 1) + bench_hist_bucket_width(i - 1));
	/* and each value lands in the bucket that covers it */
	for (uint64_t v = 0; v < 1000000; v += 7) {
		unsigned idx = bench_hist_index(v);

		assert_true(bench_hist_bucket_low(idx) <= v);
		assert_true(v < bench_hist_bucket_low(idx) + bench_hist_bucket_width(idx));
	}
	assert_int_equal(bench_hist_index(0), 0);
	assert_int_equal(bench_hist_index(255), 255);
	assert_int_equal(bench_hist_index(UINT64_MAX), BENCH_HIST_NBUCKETS - 1);
}

static void test_relative_error(void **state)
{
	(void)state;
	for (uint64_t v = 256; v < (1ull << 40); v = v * 3 / 2 + 1) {
		unsigned idx = bench_hist_index(v);

		/* a bucket is at most 1/128 of its values wide */
		assert_true(bench_hist_bucket_width(idx) * 128 <= bench_hist_bucket_low(idx));
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void test_percentiles(void **state)
{
	struct bench_hist *h = malloc(sizeof(*h));
	enum { N = 100000 };
	uint64_t *vals = malloc(N * sizeof(*vals)), seed = 12345;

	(void)state;
	assert_non_null(h);
	assert_non_null(vals);
	bench_hist_init(h);
	/* a skewed spread from 1 us to ~10 ms, like real latencies */
	for (int i = 0; i < N; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		double u = (double)(seed >> 11) / (double)(1ull << 53);

		vals[i] = (uint64_t)(1000.0 * pow(10000.0, u * u));
		bench_hist_add(h, vals[i]);
	}
	qsort(vals, N, sizeof(*vals), cmp_u64);
	assert_int_equal(h->count, N);
	assert_int_equal(h->min, vals[0]);
	assert_int_equal(h->max, vals[N - 1]);
	for (size_t i = 0; i < bench_n_percentiles; i++) {
		double p = bench_percentiles[i];
		uint64_t exact = vals[(size_t)ceil(p / 100.0 * N) - 1];
		uint64_t got = bench_hist_percentile(h, p);

		/* within one bucket (1/128) of the exact order statistic */
		assert_true(fabs((double)got - (double)exact) <= (double)exact / 100.0);
	}
	assert_int_equal(bench_hist_percentile(h, 100.0), vals[N - 1]);
	free(vals);
	free(h);
}

static void test_mean_stddev_merge(void **state)
{
	struct bench_hist *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));

	(void)state;
	bench_hist_init(a);
	bench_hist_init(b);
	assert_int_equal(bench_hist_percentile(a, 50), 0);
	bench_hist_add(a, 2);
	bench_hist_add(a, 4);
	bench_hist_add(a, 4);
	bench_hist_add(b, 4);
	bench_hist_add(b, 5);
	bench_hist_add(b, 5);
	bench_hist_add(b, 7);
	bench_hist_add(b, 9);
	bench_hist_merge(a, b);
	assert_int_equal(a->count, 8);
	assert_int_equal(a->min, 2);
	assert_int_equal(a->max, 9);
	assert_true(fabs(bench_hist_mean(a) - 5.0) < 1e-9);
	/* sample deviation of 2,4,4,4,5,5,7,9 = sqrt(32/7) */
	assert_true(fabs(bench_hist_stddev(a) - sqrt(32.0 / 7.0)) < 1e-9);
	assert_int_equal(bench_hist_percentile(a, 50), 4);
	assert_int_equal(bench_hist_percentile(a, 99.99), 9);
	free(a);
	free(b);
}

static void test_number_format(void **state)
{
	char buf[32];

	(void)state;
	assert_string_equal(bench_fmt_num(9855, buf, sizeof(buf)), "9855");
	assert_string_equal(bench_fmt_num(46105, buf, sizeof(buf)), "46.1k");
	assert_string_equal(bench_fmt_num(101234, buf, sizeof(buf)), "101k");
	assert_string_equal(bench_fmt_num(1234567, buf, sizeof(buf)), "1235k");
	assert_string_equal(bench_fmt_num(12345678, buf, sizeof(buf)), "12.3M");
	assert_string_equal(bench_fmt_bw(180.0 * 1024 * 1024, false, buf, sizeof(buf)), "180MiB");
	assert_string_equal(bench_fmt_bw(180.0 * 1024 * 1024, true, buf, sizeof(buf)), "189MB");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buckets_contiguous),
		cmocka_unit_test(test_relative_error),
		cmocka_unit_test(test_percentiles),
		cmocka_unit_test(test_mean_stddev_merge),
		cmocka_unit_test(test_number_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
