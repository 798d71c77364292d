/*
 * Unit tests of the admin parser's check of VolumeCreate.region_size
 * (engine/admin/admin_msg.c): 0 (1 MiB) or a power of 2 in 64 KiB..2 GiB,
 * with ec at least the stripe unit; and Volume.region_size in responses.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "admin/admin_internal.h"

/* A create of "v" (16 MiB) with these fields: 0, or -EINVAL with why containing want. */
static void expect_create(const char *ec, uint32_t unit, uint32_t region, const char *want)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT, *out = NULL;
	Tessera__Admin__VolumeCreate vc = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	const char *why = NULL;
	uint8_t *frame;
	size_t frame_len;
	int ret;

	vc.name = "v";
	vc.size = 16u << 20;
	vc.ec = (char *)ec;
	vc.stripe_unit = unit;
	vc.region_size = region;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
	req.volume_create = &vc;
	assert_int_equal(admin_frame_pack(&req.base, &frame, &frame_len), 0);
	ret = tsr_admin_request_parse(frame + 4, frame_len - 4, &out, &why);
	free(frame);
	if (want == NULL) {
		assert_int_equal(ret, 0);
		assert_int_equal(out->volume_create->region_size, region);
		tessera__admin__request__free_unpacked(out, NULL);
		return;
	}
	assert_int_equal(ret, -EINVAL);
	assert_null(out);
	assert_non_null(why);
	if (strstr(why, want) == NULL)
		fail_msg("ec '%s' unit %u region %u: why '%s' lacks '%s'", ec, unit, region, why,
			 want);
}

static void test_region_accepted(void **state)
{
	(void)state;
	expect_create("", 0, 0, NULL);
	expect_create("", 0, 64u << 10, NULL);
	expect_create("", 0, 128u << 20, NULL);
	expect_create("", 0, 1u << 31, NULL);
	expect_create("4+2", 0, 64u << 10, NULL);      /* = the default unit */
	expect_create("4+2", 1u << 20, 1u << 20, NULL); /* = the unit */
	expect_create("2+1", 4096, 64u << 10, NULL);
}

static void test_region_rejected(void **state)
{
	(void)state;
	expect_create("", 0, 4096, "64 KiB to 2 GiB");
	expect_create("", 0, (64u << 10) - 4096, "64 KiB to 2 GiB");
	expect_create("", 0, 96u << 10, "power of 2");
	expect_create("", 0, (1u << 31) + (1u << 30), "64 KiB to 2 GiB");
	expect_create("4+2", 1u << 20, 512u << 10, "at least its stripe unit");
	expect_create("4+2", 256u << 10, 128u << 10, "at least its stripe unit");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_region_accepted),
		cmocka_unit_test(test_region_rejected),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
