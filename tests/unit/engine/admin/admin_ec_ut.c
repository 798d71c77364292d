/*
 * Unit tests of the admin parser's checks of erasure-coded volume creates
 * (engine/admin/admin_msg.c): ec "K+M" in range, ec excludes replicas, the
 * stripe unit only with ec and a power of 2 in 4 KiB..1 MiB, min-replicas
 * K..K+M; and responses carrying ec volumes of up to 16+4 copies.
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

/* Pack msg as a frame and parse its body as a request. */
static int parse_req(const ProtobufCMessage *msg, Tessera__Admin__Request **out,
		     const char **why)
{
	uint8_t *frame;
	size_t frame_len;
	int ret;

	assert_int_equal(admin_frame_pack(msg, &frame, &frame_len), 0);
	ret = tsr_admin_request_parse(frame + 4, frame_len - 4, out, why);
	free(frame);
	return ret;
}

/* A create of "v" (16 MiB) with these fields: 0 or -EINVAL with why containing want. */
static void expect_create(const char *ec, uint32_t unit, uint32_t replicas, uint32_t min,
			  const char *want)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT, *out = NULL;
	Tessera__Admin__VolumeCreate vc = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	const char *why = NULL;
	int ret;

	vc.name = "v";
	vc.size = 16u << 20;
	vc.ec = (char *)ec;
	vc.stripe_unit = unit;
	vc.replicas = replicas;
	vc.min_replicas = min;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
	req.volume_create = &vc;
	ret = parse_req(&req.base, &out, &why);
	if (want == NULL) {
		assert_int_equal(ret, 0);
		assert_string_equal(out->volume_create->ec, ec);
		assert_int_equal(out->volume_create->stripe_unit, unit);
		tessera__admin__request__free_unpacked(out, NULL);
		return;
	}
	assert_int_equal(ret, -EINVAL);
	assert_null(out);
	assert_non_null(why);
	if (strstr(why, want) == NULL)
		fail_msg("ec '%s' unit %u replicas %u min %u: why '%s' lacks '%s'", ec, unit,
			 replicas, min, why, want);
}

static void test_ec_accepted(void **state)
{
	expect_create("4+2", 0, 0, 0, NULL);
	expect_create("2+1", 4096, 0, 0, NULL);
	expect_create("16+4", 1u << 20, 0, 20, NULL);
	expect_create("8+3", 65536, 0, 8, NULL);
	expect_create("", 0, 3, 2, NULL); /* a mirror as before */
}

static void test_ec_rejected(void **state)
{
	expect_create("0+1", 0, 0, 0, "K+M");
	expect_create("17+1", 0, 0, 0, "K+M");
	expect_create("4+0", 0, 0, 0, "K+M");
	expect_create("4+5", 0, 0, 0, "K+M");
	expect_create("4x2", 0, 0, 0, "K+M");
	expect_create("4+2+1", 0, 0, 0, "K+M");
	expect_create("+2", 0, 0, 0, "K+M");
	expect_create("4+2 ", 0, 0, 0, "K+M");
	expect_create("4+\n2", 0, 0, 0, "K+M");
	expect_create("4+2", 0, 3, 0, "exclude each other");
	expect_create("4+2", 3072, 0, 0, "power of 2");
	expect_create("4+2", 2u << 20, 0, 0, "power of 2");
	expect_create("4+2", 2048, 0, 0, "power of 2");
	expect_create("4+2", 0, 0, 3, "min-replicas");
	expect_create("4+2", 0, 0, 7, "min-replicas");
	expect_create("", 65536, 0, 0, "goes with ec");
	expect_create("", 65536, 3, 0, "goes with ec");
}

/* A response volume: ec geometry consistent with its copies, or refused. */
static int parse_volume(uint32_t k, uint32_t m, uint32_t unit, size_t copies)
{
	Tessera__Admin__Response resp = TESSERA__ADMIN__RESPONSE__INIT, *out = NULL;
	Tessera__Admin__Volume v = TESSERA__ADMIN__VOLUME__INIT, *vp = &v;
	Tessera__Admin__Copy cp[20], *cps[20];
	uint8_t *frame;
	size_t frame_len;
	int ret;

	v.name = "v";
	v.uuid = "01234567-89ab-4cde-8f01-23456789abcd";
	v.size = 16u << 20;
	v.ec_k = k;
	v.ec_m = m;
	v.stripe_unit = unit;
	v.replicas = (uint32_t)copies;
	for (size_t i = 0; i < copies; i++) {
		tessera__admin__copy__init(&cp[i]);
		cp[i].node = "n1";
		cp[i].state = "in-sync";
		cps[i] = &cp[i];
	}
	v.copies = cps;
	v.n_copies = copies;
	resp.volumes = &vp;
	resp.n_volumes = 1;
	assert_int_equal(admin_frame_pack(&resp.base, &frame, &frame_len), 0);
	ret = tsr_admin_response_parse(frame + 4, frame_len - 4, &out, NULL);
	free(frame);
	if (ret == 0) {
		assert_int_equal(out->volumes[0]->ec_k, k);
		tessera__admin__response__free_unpacked(out, NULL);
	}
	return ret;
}

static void test_ec_responses(void **state)
{
	assert_int_equal(parse_volume(16, 4, 1u << 20, 20), 0);
	assert_int_equal(parse_volume(4, 2, 65536, 6), 0);
	assert_int_equal(parse_volume(0, 0, 0, 3), 0);
	assert_int_equal(parse_volume(4, 2, 65536, 5), -EINVAL);  /* copies != k+m */
	assert_int_equal(parse_volume(17, 2, 65536, 0), -EINVAL);
	assert_int_equal(parse_volume(4, 2, 3000, 6), -EINVAL);
	assert_int_equal(parse_volume(0, 0, 65536, 3), -EINVAL);  /* a unit without ec */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ec_accepted),
		cmocka_unit_test(test_ec_rejected),
		cmocka_unit_test(test_ec_responses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
