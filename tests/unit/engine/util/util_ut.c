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
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_valid_name),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
