/*
 * Unit tests for csi/grpc_frame.c (binary csi_grpc_frame_ut): the gRPC
 * length prefix (good, truncated, trailing bytes, oversized, compressed
 * flag, bad flag), protobuf decoding of a request, the grpc-message
 * percent-encoding.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

static void frame(uint8_t *buf, uint8_t flag, uint32_t len)
{
	buf[0] = flag;
	buf[1] = (uint8_t)(len >> 24);
	buf[2] = (uint8_t)(len >> 16);
	buf[3] = (uint8_t)(len >> 8);
	buf[4] = (uint8_t)len;
}

static void test_good(void **state)
{
	uint8_t buf[16];
	struct grpc_frame f;

	frame(buf, 0, 3);
	memcpy(buf + 5, "abc", 3);
	assert_int_equal(grpc_frame_parse(buf, 8, 100, &f), 0);
	assert_false(f.compressed);
	assert_int_equal(f.len, 3);
	assert_ptr_equal(f.msg, buf + 5);
	assert_memory_equal(f.msg, "abc", 3);
	/* an empty message is a valid message (all fields default) */
	frame(buf, 0, 0);
	assert_int_equal(grpc_frame_parse(buf, 5, 100, &f), 0);
	assert_int_equal(f.len, 0);
}

static void test_truncated(void **state)
{
	uint8_t buf[16];
	struct grpc_frame f;

	frame(buf, 0, 10);
	assert_int_equal(grpc_frame_parse(buf, 0, 100, &f), -EINVAL);
	assert_int_equal(grpc_frame_parse(buf, 4, 100, &f), -EINVAL); /* header cut */
	assert_int_equal(grpc_frame_parse(buf, 9, 100, &f), -EINVAL); /* message cut */
	frame(buf, 0, 2);
	assert_int_equal(grpc_frame_parse(buf, 9, 100, &f), -EINVAL); /* trailing bytes */
}

static void test_oversized(void **state)
{
	uint8_t buf[5];
	struct grpc_frame f;

	frame(buf, 0, 101);
	assert_int_equal(grpc_frame_parse(buf, 5, 100, &f), -EMSGSIZE);
	frame(buf, 0, 0xffffffffu);
	assert_int_equal(grpc_frame_parse(buf, 5, CSI_MAX_MSG, &f), -EMSGSIZE);
}

static void test_flags(void **state)
{
	uint8_t buf[8];
	struct grpc_frame f;

	frame(buf, 1, 3);
	assert_int_equal(grpc_frame_parse(buf, 8, 100, &f), -ENOTSUP);
	frame(buf, 2, 3);
	assert_int_equal(grpc_frame_parse(buf, 8, 100, &f), -EINVAL);
	frame(buf, 0x80, 3);
	assert_int_equal(grpc_frame_parse(buf, 8, 100, &f), -EINVAL);
}

static void test_header_roundtrip(void **state)
{
	uint8_t hdr[GRPC_FRAME_HDR], buf[GRPC_FRAME_HDR + 300] = {0};
	struct grpc_frame f;

	grpc_frame_header(hdr, 300);
	memcpy(buf, hdr, sizeof(hdr));
	assert_int_equal(grpc_frame_parse(buf, sizeof(buf), 1000, &f), 0);
	assert_int_equal(f.len, 300);
}

static void test_decode(void **state)
{
	Csi__V1__CreateVolumeRequest req = CSI__V1__CREATE_VOLUME_REQUEST__INIT;
	Csi__V1__CapacityRange cr = CSI__V1__CAPACITY_RANGE__INIT;
	ProtobufCMessage *m = NULL;
	uint8_t buf[256];
	size_t n;
	static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
	static const uint8_t cut[] = {0x0a, 0x10, 'a'}; /* name: 16 bytes announced, 1 given */

	req.name = "pvc-1";
	cr.required_bytes = 1 << 20;
	req.capacity_range = &cr;
	n = protobuf_c_message_get_packed_size(&req.base);
	assert_true(n < sizeof(buf));
	protobuf_c_message_pack(&req.base, buf);
	assert_int_equal(grpc_msg_decode(&csi__v1__create_volume_request__descriptor, buf, n, &m),
			 0);
	assert_string_equal(((Csi__V1__CreateVolumeRequest *)m)->name, "pvc-1");
	assert_int_equal(((Csi__V1__CreateVolumeRequest *)m)->capacity_range->required_bytes,
			 1 << 20);
	protobuf_c_message_free_unpacked(m, NULL);
	assert_int_equal(grpc_msg_decode(&csi__v1__create_volume_request__descriptor, garbage,
					 sizeof(garbage), &m),
			 -EINVAL);
	assert_int_equal(
	    grpc_msg_decode(&csi__v1__create_volume_request__descriptor, cut, sizeof(cut), &m),
	    -EINVAL);
	assert_int_equal(grpc_msg_decode(&csi__v1__create_volume_request__descriptor, buf,
					 (size_t)CSI_MAX_MSG + 1, &m),
			 -EMSGSIZE);
}

/* Strings must be UTF-8, also inside map entries and nested messages. */
static void test_decode_utf8(void **state)
{
	Csi__V1__CreateVolumeRequest req = CSI__V1__CREATE_VOLUME_REQUEST__INIT;
	Csi__V1__CreateVolumeRequest__ParametersEntry e =
	    CSI__V1__CREATE_VOLUME_REQUEST__PARAMETERS_ENTRY__INIT;
	Csi__V1__CreateVolumeRequest__ParametersEntry *ep = &e;
	ProtobufCMessage *m = NULL;
	uint8_t buf[256];
	size_t n;

	req.name = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"; /* café € 😀 */
	n = protobuf_c_message_pack(&req.base, buf);
	assert_int_equal(grpc_msg_decode(&csi__v1__create_volume_request__descriptor, buf, n, &m),
			 0);
	protobuf_c_message_free_unpacked(m, NULL);
	req.name = "pv\x9d"; /* stray continuation byte */
	n = protobuf_c_message_pack(&req.base, buf);
	assert_int_equal(grpc_msg_decode(&csi__v1__create_volume_request__descriptor, buf, n, &m),
			 -EINVAL);
	req.name = "\xc0\xaf"; /* overlong '/' */
	n = protobuf_c_message_pack(&req.base, buf);
	assert_int_equal(grpc_msg_decode(&csi__v1__create_volume_request__descriptor, buf, n, &m),
			 -EINVAL);
	req.name = "\xed\xa0\x80"; /* surrogate */
	n = protobuf_c_message_pack(&req.base, buf);
	assert_int_equal(grpc_msg_decode(&csi__v1__create_volume_request__descriptor, buf, n, &m),
			 -EINVAL);
	req.name = "ok";
	e.key = "replicas";
	e.value = "\xff";
	req.n_parameters = 1;
	req.parameters = &ep;
	n = protobuf_c_message_pack(&req.base, buf);
	assert_int_equal(grpc_msg_decode(&csi__v1__create_volume_request__descriptor, buf, n, &m),
			 -EINVAL);
}

static void test_percent(void **state)
{
	char out[64];

	assert_int_equal(grpc_percent_encode("plain text", out, sizeof(out)), 10);
	assert_string_equal(out, "plain text");
	grpc_percent_encode("100% sure\n\xc3\xa9", out, sizeof(out));
	assert_string_equal(out, "100%25 sure%0A%C3%A9");
	/* truncation never splits an escape */
	grpc_percent_encode("%%%%", out, 7);
	assert_string_equal(out, "%25%25");
	assert_string_equal(grpc_code_name(GRPC_NOT_FOUND), "NOT_FOUND");
	assert_string_equal(grpc_code_name(99), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),
	    cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_oversized),
	    cmocka_unit_test(test_flags),
	    cmocka_unit_test(test_header_roundtrip),
	    cmocka_unit_test(test_decode),
	    cmocka_unit_test(test_decode_utf8),
	    cmocka_unit_test(test_percent),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
