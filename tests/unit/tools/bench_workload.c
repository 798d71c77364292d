/*
 * tessera-bench workload and verify pattern: the random permutation visits
 * every block exactly once per pass, mixes keep their ratio, sequential
 * jobs wrap; the verify header catches corruption, misplaced and stale
 * blocks and accepts good ones.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bench.h"

static void check_permutation(uint64_t n, uint64_t seed)
{
	struct bench_perm p;
	uint8_t *seen = calloc(n, 1);
	uint64_t first = 0;

	assert_non_null(seen);
	bench_perm_init(&p, n, seed);
	for (int pass = 0; pass < 2; pass++) {
		memset(seen, 0, n);
		for (uint64_t i = 0; i < n; i++) {
			uint64_t x = bench_perm_next(&p);

			assert_true(x < n);
			assert_int_equal(seen[x], 0);
			seen[x] = 1;
			if (i == 0 && pass == 0)
				first = x;
		}
	}
	(void)first;
	free(seen);
}

static void test_permutation_covers_all(void **state)
{
	(void)state;
	check_permutation(1, 1);
	check_permutation(2, 2);
	check_permutation(3, 3);
	check_permutation(1000, 4);
	check_permutation(65536, 5);
	check_permutation(262145, 6);
}

static void test_permutation_is_shuffled(void **state)
{
	struct bench_perm p;
	uint64_t in_order = 0, prev = 0;

	(void)state;
	bench_perm_init(&p, 100000, 7);
	for (int i = 0; i < 100000; i++) {
		uint64_t x = bench_perm_next(&p);

		in_order += x == prev + 1;
		prev = x;
	}
	assert_true(in_order < 100);
}

static void test_mix_ratio(void **state)
{
	struct bench_workload w;
	unsigned reads = 0;

	(void)state;
	bench_workload_init(&w, BENCH_RW_RANDRW, 70, 1000, false, 9);
	for (int i = 0; i < 100000; i++) {
		enum bench_ddir d;
		uint64_t b;

		bench_workload_next(&w, &d, &b);
		assert_true(b < 1000);
		reads += d == BENCH_READ;
	}
	assert_true(reads > 69000 && reads < 71000);
}

static void test_sequential_wraps(void **state)
{
	struct bench_workload w;

	(void)state;
	bench_workload_init(&w, BENCH_RW_WRITE, 50, 3, false, 1);
	for (uint64_t i = 0; i < 7; i++) {
		enum bench_ddir d;
		uint64_t b;

		bench_workload_next(&w, &d, &b);
		assert_int_equal(d, BENCH_WRITE);
		assert_int_equal(b, i % 3);
	}
}

static void test_verify_pattern(void **state)
{
	enum { BS = 4096 };
	uint8_t *buf = malloc(BS);
	char msg[256];

	(void)state;
	for (int i = 0; i < BS; i++)
		buf[i] = (uint8_t)(i * 7);
	bench_verify_fill(buf, BS, 8192, 5, 42);
	assert_int_equal(bench_verify_check(buf, BS, 8192, 5, msg, sizeof(msg)), 0);
	assert_int_equal(bench_verify_check(buf, BS, 8192, 0, msg, sizeof(msg)), 0);
	/* read from the wrong place */
	assert_int_equal(bench_verify_check(buf, BS, 12288, 5, msg, sizeof(msg)), -EILSEQ);
	assert_non_null(strstr(msg, "expected offset 12288, actual 8192"));
	/* an older write */
	assert_int_equal(bench_verify_check(buf, BS, 8192, 6, msg, sizeof(msg)), -EILSEQ);
	assert_non_null(strstr(msg, "expected write generation 6, actual 5"));
	/* one flipped bit in the data */
	buf[3000] ^= 0x10;
	assert_int_equal(bench_verify_check(buf, BS, 8192, 5, msg, sizeof(msg)), -EILSEQ);
	assert_non_null(strstr(msg, "crc32c mismatch"));
	/* never written */
	memset(buf, 0, BS);
	assert_int_equal(bench_verify_check(buf, BS, 8192, 0, msg, sizeof(msg)), -EILSEQ);
	assert_non_null(strstr(msg, "magic"));
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_permutation_covers_all),
		cmocka_unit_test(test_permutation_is_shuffled),
		cmocka_unit_test(test_mix_ratio),
		cmocka_unit_test(test_sequential_wraps),
		cmocka_unit_test(test_verify_pattern),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
