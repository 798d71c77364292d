/* Unit tests for engine/util: CRC32C check values, size parsing, names. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tessera/common.h"

static void test_crc32c_check_value(void **state)
{
	/* the standard CRC-32C check value of "123456789" */
	assert_int_equal(tsr_crc32c(0, "123456789", 9), 0xE3069283u);
	/* chaining two halves equals one pass */
	assert_int_equal(tsr_crc32c(tsr_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
	assert_int_equal(tsr_crc32c(0, "", 0), 0);
}

/* One pass's per-block CRCs joined equal the CRC of the whole run (the peer
 * frame's data_crc a mirror write derives from them), for 1..5 blocks of
 * varied content; a wrong shift or order gives a different value. */
static void test_crc32c_join_blocks(void **state)
{
	static uint8_t buf[5 * TSR_BLOCK_SIZE];
	uint32_t sums[5], swapped[2];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 131 + (i >> 12) * 7 + 1);
	tsr_crc32c_blocks(buf, 5, sums);
	assert_int_equal(sums[2], tsr_crc32c(0, buf + 2 * TSR_BLOCK_SIZE, TSR_BLOCK_SIZE));
	for (size_t n = 1; n <= 5; n++)
		assert_int_equal(tsr_crc32c_join_blocks(sums, n),
				 tsr_crc32c(0, buf, n * TSR_BLOCK_SIZE));
	assert_int_equal(tsr_crc32c_join_blocks(sums, 0), 0);
	swapped[0] = sums[1];
	swapped[1] = sums[0];
	assert_int_not_equal(tsr_crc32c_join_blocks(swapped, 2),
			     tsr_crc32c(0, buf, 2 * TSR_BLOCK_SIZE));
}

static void test_parse_size(void **state)
{
	uint64_t v;

	assert_int_equal(tsr_parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(tsr_parse_size("4k", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(tsr_parse_size("10G", &v), 0);
	assert_int_equal(v, 10ull << 30);
	assert_int_equal(tsr_parse_size("16TiB", &v), 0);
	assert_int_equal(v, 16ull << 40);
	assert_int_equal(tsr_parse_size("1x", &v), -EINVAL);
	assert_int_equal(tsr_parse_size("", &v), -EINVAL);
	assert_int_equal(tsr_parse_size("-1", &v), -EINVAL);
	assert_int_equal(tsr_parse_size("99999999999P", &v), -ERANGE);
}

static void test_valid_name(void **state)
{
	assert_true(tsr_valid_name("db"));
	assert_true(tsr_valid_name("db-1.data_x"));
	assert_false(tsr_valid_name(""));
	assert_false(tsr_valid_name("-db"));
	assert_false(tsr_valid_name("a/b"));
	assert_false(tsr_valid_name("a b"));
	assert_false(tsr_valid_name("0123456789012345678901234567890123456789012345678901234567890123"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc32c_check_value),
	    cmocka_unit_test(test_crc32c_join_blocks),
	    cmocka_unit_test(test_parse_size),
	    cmocka_unit_test(test_valid_name),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
