/*
 * Unit tests for engine/nbd/nbd_proto.c: every parser field by field, the
 * rejections (bad magic, truncated, lengths that do not add up), request
 * validation, and the encoders byte for byte against values written out by
 * hand from the NBD spec (doc/proto.md).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "nbd/internal.h"

static void test_opt_hdr(void **state)
{
	static const uint8_t good[] = {
		'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T',
		0x00, 0x00, 0x00, 0x07,             /* NBD_OPT_GO */
		0x00, 0x01, 0x00, 0x02,             /* len 65538 */
	};
	uint8_t bad[sizeof(good)];
	struct nbd_opt_hdr h;

	assert_int_equal(nbd_parse_opt_hdr(good, sizeof(good), &h), 16);
	assert_int_equal(h.option, NBD_OPT_GO);
	assert_int_equal(h.len, 65538);
	/* truncated: need more */
	assert_int_equal(nbd_parse_opt_hdr(good, 15, &h), 0);
	assert_int_equal(nbd_parse_opt_hdr(good, 0, &h), 0);
	/* one wrong magic byte */
	memcpy(bad, good, sizeof(bad));
	bad[7] ^= 1;
	assert_int_equal(nbd_parse_opt_hdr(bad, sizeof(bad), &h), -EPROTO);
}

static void test_opt_info(void **state)
{
	static const uint8_t good[] = {
		0, 0, 0, 4, 'd', 'i', 's', 'k',     /* name */
		0, 2, 0, 3, 0, 1,                   /* 2 requests: BLOCK_SIZE, NAME */
	};
	static const uint8_t empty[] = { 0, 0, 0, 0, 0, 0 };
	uint8_t buf[sizeof(good)];
	struct nbd_opt_info oi;

	assert_int_equal(nbd_parse_opt_info(good, sizeof(good), &oi), 0);
	assert_int_equal(oi.name_len, 4);
	assert_memory_equal(oi.name, "disk", 4);
	assert_int_equal(oi.nr_requests, 2);
	assert_int_equal(nbd_get16(oi.requests), NBD_INFO_BLOCK_SIZE);
	assert_int_equal(nbd_get16(oi.requests + 2), NBD_INFO_NAME);

	assert_int_equal(nbd_parse_opt_info(empty, sizeof(empty), &oi), 0);
	assert_int_equal(oi.name_len, 0);
	assert_int_equal(oi.nr_requests, 0);

	/* too short for the fixed fields */
	assert_int_equal(nbd_parse_opt_info(good, 5, &oi), -EINVAL);
	/* requests count says 2 but only one follows */
	assert_int_equal(nbd_parse_opt_info(good, sizeof(good) - 2, &oi), -EINVAL);
	/* trailing byte */
	memcpy(buf, good, sizeof(buf));
	buf[9] = 1; /* 1 request, 4 bytes follow */
	assert_int_equal(nbd_parse_opt_info(buf, sizeof(buf), &oi), -EINVAL);
	/* name length beyond the data (incl. huge values that would wrap) */
	memcpy(buf, good, sizeof(buf));
	buf[3] = 9;
	assert_int_equal(nbd_parse_opt_info(buf, sizeof(buf), &oi), -EINVAL);
	buf[0] = 0xff; buf[1] = 0xff; buf[2] = 0xff; buf[3] = 0xff;
	assert_int_equal(nbd_parse_opt_info(buf, sizeof(buf), &oi), -EINVAL);
}

static void test_opt_meta(void **state)
{
	static const uint8_t good[] = {
		0, 0, 0, 1, 'x',                    /* export name */
		0, 0, 0, 2,                         /* 2 queries */
		0, 0, 0, 15, 'b', 'a', 's', 'e', ':', 'a', 'l', 'l', 'o', 'c', 'a', 't', 'i', 'o', 'n',
		0, 0, 0, 0,                         /* empty query */
	};
	uint8_t buf[sizeof(good)];
	struct nbd_opt_meta m;
	const uint8_t *q;
	uint32_t pos = 0, qlen;

	assert_int_equal(nbd_parse_opt_meta(good, sizeof(good), &m), 0);
	assert_int_equal(m.name_len, 1);
	assert_int_equal(m.name[0], 'x');
	assert_int_equal(m.nr_queries, 2);
	assert_int_equal(nbd_meta_next(&m, &pos, &q, &qlen), 1);
	assert_int_equal(qlen, 15);
	assert_memory_equal(q, "base:allocation", 15);
	assert_int_equal(nbd_meta_next(&m, &pos, &q, &qlen), 1);
	assert_int_equal(qlen, 0);
	assert_int_equal(nbd_meta_next(&m, &pos, &q, &qlen), 0);

	/* truncated anywhere: rejected */
	for (size_t l = 0; l < sizeof(good); l++)
		assert_int_equal(nbd_parse_opt_meta(good, (uint32_t)l, &m), -EINVAL);
	/* a query length running past the end */
	memcpy(buf, good, sizeof(buf));
	buf[12] = 16;
	assert_int_equal(nbd_parse_opt_meta(buf, sizeof(buf), &m), -EINVAL);
	/* more queries than could fit */
	memcpy(buf, good, sizeof(buf));
	buf[5] = 0x7f;
	assert_int_equal(nbd_parse_opt_meta(buf, sizeof(buf), &m), -EINVAL);
	/* fewer queries than data: trailing junk */
	memcpy(buf, good, sizeof(buf));
	buf[8] = 1;
	assert_int_equal(nbd_parse_opt_meta(buf, sizeof(buf), &m), -EINVAL);
}

static void test_meta_match(void **state)
{
	uint8_t long_query[NBD_MAX_STRING + 1];

	assert_int_equal(nbd_meta_match((const uint8_t *)"base:allocation", 15),
			 NBD_META_ALLOCATION);
	assert_int_equal(nbd_meta_match((const uint8_t *)"base:", 5), NBD_META_BASE_WILDCARD);
	assert_int_equal(nbd_meta_match((const uint8_t *)"base:dirty", 10), NBD_META_NONE);
	assert_int_equal(nbd_meta_match((const uint8_t *)"qemu:dirty-bitmap:x", 19),
			 NBD_META_NONE);
	assert_int_equal(nbd_meta_match((const uint8_t *)"base", 4), NBD_META_INVALID);
	assert_int_equal(nbd_meta_match((const uint8_t *)":x", 2), NBD_META_INVALID);
	assert_int_equal(nbd_meta_match((const uint8_t *)"", 0), NBD_META_INVALID);
	memset(long_query, 'a', sizeof(long_query));
	long_query[4] = ':';
	assert_int_equal(nbd_meta_match(long_query, sizeof(long_query)), NBD_META_INVALID);
}

static void test_request_parse(void **state)
{
	static const uint8_t good[] = {
		0x25, 0x60, 0x95, 0x13,             /* magic */
		0x00, 0x01,                         /* FUA */
		0x00, 0x01,                         /* WRITE */
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* handle */
		0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x10, 0x00, /* offset 4 GiB + 4096 */
		0x00, 0x02, 0x00, 0x00,             /* len 128 KiB */
	};
	uint8_t bad[sizeof(good)];
	struct nbd_request r;

	assert_int_equal(nbd_parse_request(good, sizeof(good), &r), 28);
	assert_int_equal(r.flags, NBD_CMD_FLAG_FUA);
	assert_int_equal(r.type, NBD_CMD_WRITE);
	assert_true(r.handle == 0x0102030405060708ull);
	assert_true(r.offset == 0x100001000ull);
	assert_int_equal(r.len, 128 * 1024);
	assert_int_equal(nbd_parse_request(good, 27, &r), 0);
	memcpy(bad, good, sizeof(bad));
	bad[0] = 0x12; /* the historic magic 0x12560953 is not accepted */
	bad[1] = 0x56; bad[2] = 0x09; bad[3] = 0x53;
	assert_int_equal(nbd_parse_request(bad, sizeof(bad), &r), -EPROTO);
}

static uint32_t check(uint16_t type, uint16_t flags, uint64_t off, uint32_t len,
		      bool structured, bool meta)
{
	struct nbd_request r = { .flags = flags, .type = type, .offset = off, .len = len };
	struct nbd_tx_state tx = {
		.tflags = nbd_transmission_flags(structured),
		.structured = structured,
		.meta = meta,
		.size = 1 << 20,
	};

	return nbd_check_request(&r, &tx);
}

static void test_request_check(void **state)
{
	const uint32_t mib = 1 << 20, max = NBD_MAX_BLOCK;

	/* in range, aligned */
	assert_int_equal(check(NBD_CMD_READ, 0, 0, 4096, false, false), 0);
	assert_int_equal(check(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, mib - 4096, 4096, false, false), 0);
	assert_int_equal(check(NBD_CMD_READ, 0, mib, 0, false, false), 0); /* empty at the end */
	/* unaligned offset or length */
	assert_int_equal(check(NBD_CMD_READ, 0, 512, 4096, false, false), NBD_EINVAL);
	assert_int_equal(check(NBD_CMD_WRITE, 0, 0, 512, false, false), NBD_EINVAL);
	assert_int_equal(check(NBD_CMD_TRIM, 0, 4096, 1, false, false), NBD_EINVAL);
	/* past the end: ENOSPC for writes, EINVAL for the rest */
	assert_int_equal(check(NBD_CMD_WRITE, 0, mib, 4096, false, false), NBD_ENOSPC);
	assert_int_equal(check(NBD_CMD_WRITE_ZEROES, 0, mib - 4096, 8192, false, false),
			 NBD_ENOSPC);
	assert_int_equal(check(NBD_CMD_READ, 0, mib, 4096, false, false), NBD_EINVAL);
	assert_int_equal(check(NBD_CMD_TRIM, 0, mib - 4096, 8192, false, false), NBD_EINVAL);
	/* offset + len wrapping around 2^64 */
	assert_int_equal(check(NBD_CMD_READ, 0, UINT64_MAX - 4095, 8192, false, false),
			 NBD_EINVAL);
	/* over the maximum block size: READ/WRITE only */
	assert_int_equal(check(NBD_CMD_READ, 0, 0, max + 4096, false, false), NBD_EINVAL);
	assert_int_equal(check(NBD_CMD_WRITE, 0, 0, max + 4096, false, false), NBD_EINVAL);
	/* unknown and unadvertised commands */
	assert_int_equal(check(NBD_CMD_CACHE, 0, 0, 4096, false, false), NBD_EINVAL);
	assert_int_equal(check(99, 0, 0, 4096, false, false), NBD_EINVAL);
	/* flags: unknown, or not valid for the command */
	assert_int_equal(check(NBD_CMD_READ, 0x20, 0, 4096, false, false), NBD_EINVAL);
	assert_int_equal(check(NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 4096, false, false),
			 NBD_EINVAL);
	assert_int_equal(check(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 4096, false, false),
			 NBD_EINVAL); /* DF needs structured replies */
	assert_int_equal(check(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 4096, true, false), 0);
	assert_int_equal(check(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA,
			       0, 8192, false, false), 0);
	assert_int_equal(check(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO, 0, 8192, false,
			       false), 0);
	assert_int_equal(check(NBD_CMD_WRITE_ZEROES,
			       NBD_CMD_FLAG_FAST_ZERO | NBD_CMD_FLAG_NO_HOLE, 0, 8192, false,
			       false), NBD_ENOTSUP);
	assert_int_equal(check(NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA, 0, 0, false, false), 0);
	/* FLUSH and DISC ignore their (reserved) range */
	assert_int_equal(check(NBD_CMD_FLUSH, 0, 3, 5, false, false), 0);
	assert_int_equal(check(NBD_CMD_DISC, 0, 0, 0, false, false), 0);
	/* BLOCK_STATUS: only with a context; REQ_ONE only there */
	assert_int_equal(check(NBD_CMD_BLOCK_STATUS, 0, 0, 4096, true, false), NBD_EINVAL);
	assert_int_equal(check(NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 0, mib, true, true), 0);
	assert_int_equal(check(NBD_CMD_BLOCK_STATUS, 0, 0, 0, true, true), NBD_EINVAL);
	assert_int_equal(check(NBD_CMD_BLOCK_STATUS, 0, 0, mib + 4096, true, true), NBD_EINVAL);
	assert_int_equal(check(NBD_CMD_READ, NBD_CMD_FLAG_REQ_ONE, 0, 4096, true, true),
			 NBD_EINVAL);
	/* TRIM and WRITE_ZEROES may be larger than the maximum block size */
	{
		struct nbd_request r = { .type = NBD_CMD_TRIM, .len = 64u << 20 };
		struct nbd_tx_state tx = { .tflags = nbd_transmission_flags(false),
					   .size = 1ull << 30 };

		assert_int_equal(nbd_check_request(&r, &tx), 0);
		r.type = NBD_CMD_WRITE_ZEROES;
		assert_int_equal(nbd_check_request(&r, &tx), 0);
	}
}

/* A snapshot export: READ_ONLY, no write-only flags, writes refused with EPERM. */
static void test_read_only_export(void **state)
{
	struct nbd_tx_state tx = { .tflags = nbd_read_only_flags(nbd_transmission_flags(true)),
				   .structured = true, .meta = true, .size = 1 << 20 };
	struct nbd_request r = { .offset = 0, .len = 4096 };

	/* HAS_FLAGS|READ_ONLY|SEND_FLUSH|SEND_DF|CAN_MULTI_CONN = bits 0,1,2,7,8 */
	assert_int_equal(tx.tflags, 0x0187);
	assert_int_equal(nbd_read_only_flags(nbd_transmission_flags(false)), 0x0107);
	r.type = NBD_CMD_WRITE;
	assert_int_equal(nbd_check_request(&r, &tx), NBD_EPERM);
	r.flags = NBD_CMD_FLAG_FUA; /* EPERM before the flag check */
	assert_int_equal(nbd_check_request(&r, &tx), NBD_EPERM);
	r.flags = 0;
	r.offset = 2 << 20; /* and before the range check */
	assert_int_equal(nbd_check_request(&r, &tx), NBD_EPERM);
	r.offset = 0;
	r.type = NBD_CMD_TRIM;
	assert_int_equal(nbd_check_request(&r, &tx), NBD_EPERM);
	r.type = NBD_CMD_WRITE_ZEROES;
	assert_int_equal(nbd_check_request(&r, &tx), NBD_EPERM);
	r.type = NBD_CMD_READ;
	assert_int_equal(nbd_check_request(&r, &tx), 0);
	r.type = NBD_CMD_BLOCK_STATUS;
	assert_int_equal(nbd_check_request(&r, &tx), 0);
	r.type = NBD_CMD_FLUSH;
	assert_int_equal(nbd_check_request(&r, &tx), 0);
}

static void test_flags_and_errors(void **state)
{
	/* HAS_FLAGS|SEND_FLUSH|SEND_FUA|SEND_TRIM|SEND_WRITE_ZEROES|CAN_MULTI_CONN|
	 * SEND_FAST_ZERO = bits 0,2,3,5,6,8,11; DF (bit 7) only when structured */
	assert_int_equal(nbd_transmission_flags(false), 0x096d);
	assert_int_equal(nbd_transmission_flags(true), 0x09ed);

	assert_int_equal(nbd_errno_to_nbd(0), 0);
	assert_int_equal(nbd_errno_to_nbd(-EPERM), 1);
	assert_int_equal(nbd_errno_to_nbd(-EROFS), 1);
	assert_int_equal(nbd_errno_to_nbd(-EIO), 5);
	assert_int_equal(nbd_errno_to_nbd(-ENOMEM), 12);
	assert_int_equal(nbd_errno_to_nbd(-EINVAL), 22);
	assert_int_equal(nbd_errno_to_nbd(-ENOSPC), 28);
	assert_int_equal(nbd_errno_to_nbd(-EDQUOT), 28);
	assert_int_equal(nbd_errno_to_nbd(-EFBIG), 28);
	assert_int_equal(nbd_errno_to_nbd(-EOVERFLOW), 75);
	assert_int_equal(nbd_errno_to_nbd(-ENOTSUP), 95);
	assert_int_equal(nbd_errno_to_nbd(-ESHUTDOWN), 108);
	assert_int_equal(nbd_errno_to_nbd(-EUCLEAN), 5);
	assert_int_equal(nbd_errno_to_nbd(-EAGAIN), 5);
}

static void test_encoders(void **state)
{
	static const uint8_t greeting[] = {
		0x4e, 0x42, 0x44, 0x4d, 0x41, 0x47, 0x49, 0x43, /* NBDMAGIC */
		0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54, /* IHAVEOPT */
		0x00, 0x03,                                     /* FIXED_NEWSTYLE|NO_ZEROES */
	};
	static const uint8_t opt_reply[] = {
		0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9,
		0x00, 0x00, 0x00, 0x07,                         /* NBD_OPT_GO */
		0x80, 0x00, 0x00, 0x06,                         /* NBD_REP_ERR_UNKNOWN */
		0x00, 0x00, 0x00, 0x05,
	};
	static const uint8_t simple[] = {
		0x67, 0x44, 0x66, 0x98, 0x00, 0x00, 0x00, 0x1c, /* ENOSPC */
		0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, 0x00, 0x01,
	};
	static const uint8_t hole[] = {
		0x66, 0x8e, 0x33, 0xef, 0x00, 0x01, 0x00, 0x02, /* DONE, OFFSET_HOLE */
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, /* handle */
		0x00, 0x00, 0x00, 0x0c,                         /* length 12 */
		0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, /* offset 1 MiB */
		0x00, 0x01, 0x00, 0x00,                         /* 64 KiB */
	};
	static const uint8_t data[] = {
		0x66, 0x8e, 0x33, 0xef, 0x00, 0x00, 0x00, 0x01, /* not DONE, OFFSET_DATA */
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09,
		0x00, 0x00, 0x10, 0x08,                         /* 8 + 4096 */
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, /* offset 8192 */
	};
	static const uint8_t err[] = {
		0x66, 0x8e, 0x33, 0xef, 0x00, 0x01, 0x80, 0x01, /* DONE, ERROR */
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09,
		0x00, 0x00, 0x00, 0x08,                         /* 6 + 2 */
		0x00, 0x00, 0x00, 0x05, 0x00, 0x02, 'h', 'i',   /* EIO, "hi" */
	};
	static const uint8_t info_export[] = {
		0x00, 0x00,                                     /* NBD_INFO_EXPORT */
		0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, /* 4 GiB */
		0x09, 0xed,                                     /* flags */
	};
	static const uint8_t info_bs[] = {
		0x00, 0x03, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x10, 0x00,
		0x02, 0x00, 0x00, 0x00,
	};
	uint8_t out[200];

	assert_int_equal(nbd_encode_greeting(out), sizeof(greeting));
	assert_memory_equal(out, greeting, sizeof(greeting));
	assert_int_equal(nbd_encode_opt_reply(out, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, 5), 20);
	assert_memory_equal(out, opt_reply, sizeof(opt_reply));
	assert_int_equal(nbd_encode_simple_reply(out, NBD_ENOSPC, 0xdeadbeef00000001ull), 16);
	assert_memory_equal(out, simple, sizeof(simple));
	assert_int_equal(nbd_encode_hole_chunk(out, NBD_REPLY_FLAG_DONE, 9, 1 << 20, 65536), 32);
	assert_memory_equal(out, hole, sizeof(hole));
	assert_int_equal(nbd_encode_data_chunk(out, 0, 9, 8192, 4096), 28);
	assert_memory_equal(out, data, sizeof(data));
	assert_int_equal(nbd_encode_error_chunk(out, NBD_REPLY_FLAG_DONE, 9, NBD_EIO, "hi", 2),
			 sizeof(err));
	assert_memory_equal(out, err, sizeof(err));
	assert_int_equal(nbd_encode_info_export(out, 1ull << 32, 0x09ed), 12);
	assert_memory_equal(out, info_export, sizeof(info_export));
	assert_int_equal(nbd_encode_info_block_size(out, 4096, 4096, 32u << 20), 14);
	assert_memory_equal(out, info_bs, sizeof(info_bs));

	/* EXPORT_NAME reply: size, flags, then 124 zeroes unless NO_ZEROES */
	memset(out, 0xaa, sizeof(out));
	assert_int_equal(nbd_encode_export_name_reply(out, 4096, 0x096d, false), 134);
	assert_int_equal(nbd_get64(out), 4096);
	assert_int_equal(nbd_get16(out + 8), 0x096d);
	for (int i = 10; i < 134; i++)
		assert_int_equal(out[i], 0);
	memset(out, 0xaa, sizeof(out));
	assert_int_equal(nbd_encode_export_name_reply(out, 4096, 0x096d, true), 10);
	assert_int_equal(out[10], 0xaa);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_opt_hdr),
		cmocka_unit_test(test_opt_info),
		cmocka_unit_test(test_opt_meta),
		cmocka_unit_test(test_meta_match),
		cmocka_unit_test(test_request_parse),
		cmocka_unit_test(test_request_check),
		cmocka_unit_test(test_flags_and_errors),
		cmocka_unit_test(test_read_only_export),
		cmocka_unit_test(test_encoders),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
