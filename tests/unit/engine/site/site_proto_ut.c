/*
 * Unit tests of the site protocol's frames (engine/site/site_proto.c): the
 * header's pack/parse round trip for every opcode, its byte offsets as
 * site.h documents them, every malformed header rejected with its errno;
 * each payload (HELLO, VOLUME_OPEN with its layout string, SNAPSHOT,
 * ERROR) round trip, byte layout and every malformed variant; data_crc.
 * Compression: the COMPRESSED flag's byte (6) and wire_len's offset (48),
 * its field rules, VOLUME_OPEN's algorithm byte, and both codecs: round
 * trip, incompressible data refused (0), and damaged, truncated or
 * wrongly sized input refused with -EBADMSG without writing past length.
 */
#include <stdlib.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tessera/site.h"

#define BS 4096u

static struct tsr_site_hdr valid_hdr(uint8_t op)
{
	struct tsr_site_hdr h = {.opcode = op, .stream = 7, .seq = 0x1122334455667788ull,
				 .epoch = 42};

	switch (op) {
	case TSR_SITE_HELLO:
		h.stream = h.seq = h.epoch = 0;
		h.length = 4 + 2 + 3;
		h.data_crc = 0xabcdef01;
		break;
	case TSR_SITE_VOLUME_OPEN:
		h.seq = 0;
		h.offset = 10ull << 30;
		h.length = 4 + 3 + 10;
		h.data_crc = 0x12345678;
		break;
	case TSR_SITE_WRITE:
		h.offset = 8 * BS;
		h.length = 2 * BS;
		h.data_crc = 0xdeadbeef;
		break;
	case TSR_SITE_ZERO:
		h.offset = 1ull << 40;
		h.length = 0xfffff000u;
		break;
	case TSR_SITE_SNAPSHOT:
		h.length = 1 + 5;
		h.data_crc = 0x5a5a5a5a;
		break;
	case TSR_SITE_ERROR:
		h.length = 8 + 4;
		h.data_crc = 0x01020304;
		break;
	case TSR_SITE_DIGEST:
		h.seq = 0;
		h.offset = 3ull * TSR_SITE_DIGEST_REGION;
		h.length = 2 * TSR_SITE_DIGEST_LEN;
		h.data_crc = 0x0badf00d;
		break;
	default: /* BARRIER, ACK, SYNC_BEGIN, SYNC_END */
		break;
	}
	return h;
}

/* Pack h, then parse: the errno, and on success the fields. */
static int roundtrip(const struct tsr_site_hdr *h, struct tsr_site_hdr *out)
{
	uint8_t buf[TSR_SITE_HDR_SIZE];

	tsr_site_hdr_pack(h, buf);
	return tsr_site_hdr_parse(buf, out);
}

static void test_hdr_roundtrip(void **state)
{
	uint8_t op;

	(void)state;
	for (op = TSR_SITE_HELLO; op <= TSR_SITE_DIGEST; op++) {
		struct tsr_site_hdr h = valid_hdr(op), out;
		uint32_t want_payload = (op == TSR_SITE_ZERO || op == TSR_SITE_BARRIER ||
					 op == TSR_SITE_ACK) ? 0 : h.length;

		assert_int_equal(roundtrip(&h, &out), 0);
		assert_int_equal(out.opcode, op);
		assert_int_equal(out.flags, h.flags);
		assert_true(out.stream == h.stream && out.seq == h.seq && out.offset == h.offset &&
			    out.epoch == h.epoch);
		assert_int_equal(out.length, h.length);
		assert_int_equal(out.data_crc, h.data_crc);
		assert_int_equal(out.payload_len, want_payload);
		assert_string_not_equal(tsr_site_op_name(op), "unknown");
	}
	/* replies */
	{
		struct tsr_site_hdr h = valid_hdr(TSR_SITE_HELLO), out;

		h.flags = TSR_SITE_F_REPLY;
		assert_int_equal(roundtrip(&h, &out), 0);
		assert_int_equal(out.flags, TSR_SITE_F_REPLY);
		h = valid_hdr(TSR_SITE_VOLUME_OPEN);
		h.flags = TSR_SITE_F_REPLY;
		h.offset = h.length = h.data_crc = 0;
		h.seq = 99; /* applied-through */
		assert_int_equal(roundtrip(&h, &out), 0);
		assert_int_equal(out.seq, 99);
		assert_int_equal(out.payload_len, 0);
	}
}

/* DIGEST (target -> source, failback / restart resync) and the DIGEST flag
 * of a VOLUME_OPEN request: accepted only where site.h allows them. */
static void test_digest_fields(void **state)
{
	struct tsr_site_hdr h, out;

	(void)state;
	h = valid_hdr(TSR_SITE_DIGEST); /* the end marker: length 0 */
	h.length = h.data_crc = 0;
	assert_int_equal(roundtrip(&h, &out), 0);
	assert_int_equal(out.payload_len, 0);
	h = valid_hdr(TSR_SITE_DIGEST);
	h.seq = 1;
	assert_int_equal(roundtrip(&h, &out), -EPROTO);
	h = valid_hdr(TSR_SITE_DIGEST);
	h.offset = BS; /* not a region boundary */
	assert_int_equal(roundtrip(&h, &out), -EPROTO);
	h = valid_hdr(TSR_SITE_DIGEST);
	h.length = TSR_SITE_DIGEST_LEN + 1;
	assert_int_equal(roundtrip(&h, &out), -EPROTO);
	h = valid_hdr(TSR_SITE_DIGEST);
	h.length = TSR_SITE_MAX_DATA + TSR_SITE_DIGEST_LEN;
	assert_int_equal(roundtrip(&h, &out), -EMSGSIZE);
	h = valid_hdr(TSR_SITE_DIGEST);
	h.stream = 0;
	assert_int_equal(roundtrip(&h, &out), -EPROTO);
	h = valid_hdr(TSR_SITE_DIGEST);
	h.offset = UINT64_MAX - TSR_SITE_DIGEST_REGION + 1; /* region-aligned, wraps */
	assert_int_equal(roundtrip(&h, &out), -EPROTO);
	h = valid_hdr(TSR_SITE_DIGEST);
	h.flags = TSR_SITE_F_DIGEST;
	assert_int_equal(roundtrip(&h, &out), -EPROTO);
	/* the flag: a VOLUME_OPEN request only */
	h = valid_hdr(TSR_SITE_VOLUME_OPEN);
	h.flags = TSR_SITE_F_DIGEST;
	assert_int_equal(roundtrip(&h, &out), 0);
	assert_int_equal(out.flags, TSR_SITE_F_DIGEST);
	h.flags = TSR_SITE_F_DIGEST | TSR_SITE_F_REPLY;
	h.offset = h.length = h.data_crc = 0;
	assert_int_equal(roundtrip(&h, &out), -EPROTO);
	h = valid_hdr(TSR_SITE_WRITE);
	h.flags = TSR_SITE_F_DIGEST;
	assert_int_equal(roundtrip(&h, &out), -EPROTO);
	/* FRESH: a VOLUME_OPEN reply only */
	h = valid_hdr(TSR_SITE_VOLUME_OPEN);
	h.flags = TSR_SITE_F_REPLY | TSR_SITE_F_FRESH;
	h.offset = h.length = h.data_crc = 0;
	assert_int_equal(roundtrip(&h, &out), 0);
	assert_int_equal(out.flags, TSR_SITE_F_REPLY | TSR_SITE_F_FRESH);
	h = valid_hdr(TSR_SITE_VOLUME_OPEN);
	h.flags = TSR_SITE_F_FRESH;
	assert_int_equal(roundtrip(&h, &out), -EPROTO);
	h = valid_hdr(TSR_SITE_ACK);
	h.flags = TSR_SITE_F_FRESH;
	assert_int_equal(roundtrip(&h, &out), -EPROTO);
}

/* The documented byte offsets, checked against a hand-built frame. */
static void test_hdr_layout(void **state)
{
	struct tsr_site_hdr h = valid_hdr(TSR_SITE_WRITE), out;
	uint8_t buf[TSR_SITE_HDR_SIZE], want[TSR_SITE_HDR_SIZE] = {0};
	uint32_t crc;

	(void)state;
	memcpy(want, "TSRS", 4);
	want[4] = 1;
	want[5] = TSR_SITE_WRITE;
	want[8] = 7;                                       /* stream */
	memcpy(want + 16, "\x88\x77\x66\x55\x44\x33\x22\x11", 8); /* seq */
	want[24 + 1] = 0x80;                               /* offset 8 * 4096 = 0x8000 */
	want[32] = 42;                                     /* epoch */
	want[40 + 1] = 0x20;                               /* length 0x2000 */
	memcpy(want + 44, "\xef\xbe\xad\xde", 4);          /* data_crc */
	crc = tsr_crc32c(0, want, 60);
	want[60] = (uint8_t)crc;
	want[61] = (uint8_t)(crc >> 8);
	want[62] = (uint8_t)(crc >> 16);
	want[63] = (uint8_t)(crc >> 24);
	tsr_site_hdr_pack(&h, buf);
	assert_memory_equal(buf, want, TSR_SITE_HDR_SIZE);
	assert_int_equal(tsr_site_hdr_parse(want, &out), 0);
	assert_int_equal(out.offset, 8 * BS);
}

/* Re-seal a hand-edited header so only the edited field is wrong. */
static void reseal(uint8_t buf[TSR_SITE_HDR_SIZE])
{
	uint32_t crc = tsr_crc32c(0, buf, 60);

	buf[60] = (uint8_t)crc;
	buf[61] = (uint8_t)(crc >> 8);
	buf[62] = (uint8_t)(crc >> 16);
	buf[63] = (uint8_t)(crc >> 24);
}

static void test_hdr_bad_bytes(void **state)
{
	struct tsr_site_hdr h = valid_hdr(TSR_SITE_WRITE), out;
	uint8_t good[TSR_SITE_HDR_SIZE], buf[TSR_SITE_HDR_SIZE];
	unsigned i;

	(void)state;
	tsr_site_hdr_pack(&h, good);
	memset(&out, 0xee, sizeof(out));
	/* bad magic (resealed) */
	memcpy(buf, good, sizeof(buf));
	buf[3] = 'P';
	reseal(buf);
	assert_int_equal(tsr_site_hdr_parse(buf, &out), -EBADMSG);
	/* any single flipped bit breaks the header CRC */
	for (i = 0; i < TSR_SITE_HDR_SIZE * 8; i++) {
		memcpy(buf, good, sizeof(buf));
		buf[i / 8] ^= (uint8_t)(1u << (i % 8));
		assert_int_equal(tsr_site_hdr_parse(buf, &out), -EBADMSG);
	}
	/* version */
	memcpy(buf, good, sizeof(buf));
	buf[4] = 2;
	reseal(buf);
	assert_int_equal(tsr_site_hdr_parse(buf, &out), -EPROTONOSUPPORT);
	buf[4] = 0;
	reseal(buf);
	assert_int_equal(tsr_site_hdr_parse(buf, &out), -EPROTONOSUPPORT);
	/* reserved byte 7 and 48..59 */
	for (i = 7; i < 60; i = (i == 7 ? 48 : i + 1)) {
		memcpy(buf, good, sizeof(buf));
		buf[i] = 1;
		reseal(buf);
		assert_int_equal(tsr_site_hdr_parse(buf, &out), -EPROTO);
	}
	/* unknown opcodes */
	for (i = 0; i < 256; i++) {
		if (i >= TSR_SITE_HELLO && i <= TSR_SITE_MARKER)
			continue;
		memcpy(buf, good, sizeof(buf));
		buf[5] = (uint8_t)i;
		reseal(buf);
		assert_int_equal(tsr_site_hdr_parse(buf, &out), -EPROTO);
		assert_string_equal(tsr_site_op_name((uint8_t)i), "unknown");
	}
	/* unknown flags */
	for (i = 1; i < 8; i++) {
		memcpy(buf, good, sizeof(buf));
		buf[6] = (uint8_t)(1u << i);
		reseal(buf);
		assert_int_equal(tsr_site_hdr_parse(buf, &out), -EPROTO);
	}
	/* out untouched by every failure */
	assert_int_equal(out.opcode, 0xee);
}

/* Field rules per opcode: each case breaks exactly one rule. */
static void test_hdr_bad_fields(void **state)
{
	struct tsr_site_hdr h, out;
	int n = 0;

	(void)state;
#define CASE(op_, expr, err_)                                   \
	do {                                                    \
		h = valid_hdr(op_);                             \
		expr;                                           \
		assert_int_equal(roundtrip(&h, &out), err_);    \
		n++;                                            \
	} while (0)
	/* REPLY only on HELLO and VOLUME_OPEN */
	CASE(TSR_SITE_WRITE, h.flags = TSR_SITE_F_REPLY, -EPROTO);
	CASE(TSR_SITE_ACK, h.flags = TSR_SITE_F_REPLY, -EPROTO);
	CASE(TSR_SITE_ERROR, h.flags = TSR_SITE_F_REPLY, -EPROTO);
	/* stream 0 */
	CASE(TSR_SITE_WRITE, h.stream = 0, -EPROTO);
	CASE(TSR_SITE_ZERO, h.stream = 0, -EPROTO);
	CASE(TSR_SITE_SNAPSHOT, h.stream = 0, -EPROTO);
	CASE(TSR_SITE_BARRIER, h.stream = 0, -EPROTO);
	CASE(TSR_SITE_ACK, h.stream = 0, -EPROTO);
	CASE(TSR_SITE_VOLUME_OPEN, h.stream = 0, -EPROTO);
	/* HELLO: stream, seq, offset, epoch 0; length bounds */
	CASE(TSR_SITE_HELLO, h.stream = 1, -EPROTO);
	CASE(TSR_SITE_HELLO, h.seq = 1, -EPROTO);
	CASE(TSR_SITE_HELLO, h.offset = 1, -EPROTO);
	CASE(TSR_SITE_HELLO, h.epoch = 1, -EPROTO);
	CASE(TSR_SITE_HELLO, h.length = 5, -EPROTO);
	CASE(TSR_SITE_HELLO, h.length = TSR_SITE_HELLO_MAX + 1, -EMSGSIZE);
	CASE(TSR_SITE_HELLO, h.length = UINT32_MAX, -EMSGSIZE);
	/* VOLUME_OPEN: seq 0, size aligned and non-zero, length bounds; reply */
	CASE(TSR_SITE_VOLUME_OPEN, h.seq = 1, -EPROTO);
	CASE(TSR_SITE_VOLUME_OPEN, h.offset = 0, -EPROTO);
	CASE(TSR_SITE_VOLUME_OPEN, h.offset = BS + 512, -EPROTO);
	CASE(TSR_SITE_VOLUME_OPEN, h.length = 5, -EPROTO);
	CASE(TSR_SITE_VOLUME_OPEN, h.length = TSR_SITE_OPEN_MAX + 1, -EMSGSIZE);
	CASE(TSR_SITE_VOLUME_OPEN, (h.flags = TSR_SITE_F_REPLY, h.offset = 0), -EPROTO);
	CASE(TSR_SITE_VOLUME_OPEN, (h.flags = TSR_SITE_F_REPLY, h.offset = 0, h.length = 0),
	     -EPROTO); /* data_crc without payload */
	/* WRITE / ZERO */
	CASE(TSR_SITE_WRITE, h.seq = 0, -EPROTO);
	CASE(TSR_SITE_WRITE, h.length = 0, -EPROTO);
	CASE(TSR_SITE_WRITE, h.length = 512, -EPROTO);
	CASE(TSR_SITE_WRITE, h.offset = 512, -EPROTO);
	CASE(TSR_SITE_WRITE, h.length = TSR_SITE_MAX_DATA + BS, -EMSGSIZE);
	CASE(TSR_SITE_WRITE, (h.offset = UINT64_MAX - BS + 1, h.length = 2 * BS), -EPROTO);
	CASE(TSR_SITE_ZERO, h.seq = 0, -EPROTO);
	CASE(TSR_SITE_ZERO, h.length = 0, -EPROTO);
	CASE(TSR_SITE_ZERO, h.length = BS + 1, -EPROTO);
	CASE(TSR_SITE_ZERO, h.offset = 1, -EPROTO);
	CASE(TSR_SITE_ZERO, h.data_crc = 1, -EPROTO);
	CASE(TSR_SITE_ZERO, (h.offset = UINT64_MAX - 2 * BS + 1, h.length = BS), 0);
	CASE(TSR_SITE_ZERO, (h.offset = UINT64_MAX - BS + 1, h.length = BS), -EPROTO);
	CASE(TSR_SITE_ZERO, (h.offset = UINT64_MAX - BS + 1, h.length = 2 * BS), -EPROTO);
	/* SNAPSHOT */
	CASE(TSR_SITE_SNAPSHOT, h.seq = 0, -EPROTO);
	CASE(TSR_SITE_SNAPSHOT, h.offset = BS, -EPROTO);
	CASE(TSR_SITE_SNAPSHOT, h.length = 1, -EPROTO);
	CASE(TSR_SITE_SNAPSHOT, h.length = TSR_SITE_SNAP_MAX + 1, -EMSGSIZE);
	/* BARRIER / ACK */
	CASE(TSR_SITE_BARRIER, h.offset = BS, -EPROTO);
	CASE(TSR_SITE_BARRIER, h.length = BS, -EPROTO);
	CASE(TSR_SITE_BARRIER, h.data_crc = 1, -EPROTO);
	CASE(TSR_SITE_ACK, h.length = 1, -EPROTO);
	CASE(TSR_SITE_ACK, h.offset = 1, -EPROTO);
	/* ERROR (stream 0 allowed) */
	CASE(TSR_SITE_ERROR, h.stream = 0, 0);
	CASE(TSR_SITE_ERROR, h.offset = 1, -EPROTO);
	CASE(TSR_SITE_ERROR, h.length = 7, -EPROTO);
	CASE(TSR_SITE_ERROR, h.length = TSR_SITE_ERROR_MAX + 1, -EMSGSIZE);
#undef CASE
	assert_true(n > 40);
}

static void test_data_check(void **state)
{
	uint8_t data[2 * BS];
	struct tsr_site_hdr h = valid_hdr(TSR_SITE_WRITE), out;

	(void)state;
	memset(data, 0x5c, sizeof(data));
	h.data_crc = tsr_crc32c(0, data, sizeof(data));
	assert_int_equal(roundtrip(&h, &out), 0);
	assert_int_equal(tsr_site_data_check(&out, data), 0);
	data[BS + 17] ^= 1;
	assert_int_equal(tsr_site_data_check(&out, data), -EBADMSG);
	h = valid_hdr(TSR_SITE_ZERO);
	assert_int_equal(roundtrip(&h, &out), 0);
	assert_int_equal(tsr_site_data_check(&out, NULL), 0);
}

static void test_hello(void **state)
{
	struct tsr_site_hello h = {.site = "dr-east", .cluster = "c0ffee"}, out;
	uint8_t buf[TSR_SITE_HELLO_MAX];
	const uint8_t want[] = {7, 6, 0, 0, 'd', 'r', '-', 'e', 'a', 's', 't',
				'c', '0', 'f', 'f', 'e', 'e'};
	int len;

	(void)state;
	len = tsr_site_hello_pack(&h, buf);
	assert_int_equal(len, sizeof(want));
	assert_memory_equal(buf, want, sizeof(want));
	assert_int_equal(tsr_site_hello_parse(buf, (uint32_t)len, &out), 0);
	assert_string_equal(out.site, "dr-east");
	assert_string_equal(out.cluster, "c0ffee");
	/* malformed */
	assert_int_equal(tsr_site_hello_parse(buf, (uint32_t)len - 1, &out), -EPROTO);
	assert_int_equal(tsr_site_hello_parse(buf, (uint32_t)len + 1, &out), -EPROTO);
	assert_int_equal(tsr_site_hello_parse(buf, 3, &out), -EPROTO);
	memcpy(buf, want, sizeof(want));
	buf[2] = 1;
	assert_int_equal(tsr_site_hello_parse(buf, sizeof(want), &out), -EPROTO);
	memcpy(buf, want, sizeof(want));
	buf[0] = 0;
	buf[1] = 13;
	assert_int_equal(tsr_site_hello_parse(buf, sizeof(want), &out), -EPROTO);
	memcpy(buf, want, sizeof(want));
	buf[4] = '-'; /* names start with a letter or digit */
	assert_int_equal(tsr_site_hello_parse(buf, sizeof(want), &out), -EINVAL);
	memcpy(buf, want, sizeof(want));
	buf[13] = '\0'; /* NUL inside a name */
	assert_int_equal(tsr_site_hello_parse(buf, sizeof(want), &out), -EINVAL);
	memcpy(buf, want, sizeof(want));
	buf[13] = '/';
	assert_int_equal(tsr_site_hello_parse(buf, sizeof(want), &out), -EINVAL);
	/* pack refuses what would not parse */
	strcpy(h.site, "bad/name");
	assert_int_equal(tsr_site_hello_pack(&h, buf), -EINVAL);
	h.site[0] = '\0';
	assert_int_equal(tsr_site_hello_pack(&h, buf), -EINVAL);
	memset(h.site, 'a', sizeof(h.site)); /* no NUL within 64 bytes */
	assert_int_equal(tsr_site_hello_pack(&h, buf), -EINVAL);
	memset(h.site, 'a', 63);
	h.site[63] = '\0';
	memset(h.cluster, 'b', 63);
	h.cluster[63] = '\0';
	len = tsr_site_hello_pack(&h, buf);
	assert_int_equal(len, TSR_SITE_HELLO_MAX);
	assert_int_equal(tsr_site_hello_parse(buf, (uint32_t)len, &out), 0);
	assert_int_equal(strlen(out.cluster), 63);
}

static void test_layout(void **state)
{
	struct tsr_site_layout l;
	const char *bad[] = {"", "replicas", "replicas:", "replicas:0", "replicas:9",
			     "replicas:02", "replicas:+2", "replicas:2 ", "replicas:-1",
			     "replicas:99999999999", "ec:", "ec:4", "ec:4+", "ec:0+2",
			     "ec:4+0", "ec:17+2", "ec:4+5", "ec:4+2x", "ec:4-2", "EC:4+2",
			     "mirror:2", "ec:04+2"};
	size_t i;

	(void)state;
	assert_int_equal(tsr_site_layout_parse("replicas:2", &l), 0);
	assert_true(l.replicas == 2 && l.ec_k == 0 && l.ec_m == 0);
	assert_int_equal(tsr_site_layout_parse("replicas:8", &l), 0);
	assert_int_equal(l.replicas, 8);
	assert_int_equal(tsr_site_layout_parse("ec:4+2", &l), 0);
	assert_true(l.replicas == 0 && l.ec_k == 4 && l.ec_m == 2);
	assert_int_equal(tsr_site_layout_parse("ec:16+4", &l), 0);
	assert_true(l.ec_k == 16 && l.ec_m == 4);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(tsr_site_layout_parse(bad[i], &l), -EINVAL);
}

static void test_open(void **state)
{
	struct tsr_site_open o = {.volume = "db1", .layout = "ec:4+2"}, out;
	uint8_t buf[TSR_SITE_OPEN_MAX];
	const uint8_t want[] = {3, 6, 0, 0, 'd', 'b', '1', 'e', 'c', ':', '4', '+', '2'};
	int len;

	(void)state;
	len = tsr_site_open_pack(&o, buf);
	assert_int_equal(len, sizeof(want));
	assert_memory_equal(buf, want, sizeof(want));
	assert_int_equal(tsr_site_open_parse(buf, (uint32_t)len, &out), 0);
	assert_string_equal(out.volume, "db1");
	assert_string_equal(out.layout, "ec:4+2");
	assert_true(out.parsed.ec_k == 4 && out.parsed.ec_m == 2 && out.parsed.replicas == 0);
	/* malformed */
	assert_int_equal(tsr_site_open_parse(buf, (uint32_t)len - 1, &out), -EPROTO);
	assert_int_equal(tsr_site_open_parse(buf, 2, &out), -EPROTO);
	memcpy(buf, want, sizeof(want));
	buf[3] = 0x80;
	assert_int_equal(tsr_site_open_parse(buf, sizeof(want), &out), -EPROTO);
	memcpy(buf, want, sizeof(want));
	buf[1] = 0;
	buf[0] = 9;
	assert_int_equal(tsr_site_open_parse(buf, sizeof(want), &out), -EPROTO);
	memcpy(buf, want, sizeof(want));
	buf[12] = '9'; /* ec:4+9 */
	assert_int_equal(tsr_site_open_parse(buf, sizeof(want), &out), -EINVAL);
	memcpy(buf, want, sizeof(want));
	buf[9] = '\0'; /* NUL in the layout */
	assert_int_equal(tsr_site_open_parse(buf, sizeof(want), &out), -EINVAL);
	memcpy(buf, want, sizeof(want));
	buf[5] = '@';
	assert_int_equal(tsr_site_open_parse(buf, sizeof(want), &out), -EINVAL);
	/* pack refuses a bad layout or name */
	strcpy(o.layout, "raid5");
	assert_int_equal(tsr_site_open_pack(&o, buf), -EINVAL);
	strcpy(o.layout, "replicas:3");
	strcpy(o.volume, "../x");
	assert_int_equal(tsr_site_open_pack(&o, buf), -EINVAL);
	strcpy(o.volume, "vol");
	len = tsr_site_open_pack(&o, buf);
	assert_int_equal(len, 4 + 3 + 10);
	assert_int_equal(tsr_site_open_parse(buf, (uint32_t)len, &out), 0);
	assert_int_equal(out.parsed.replicas, 3);
}

static void test_snap(void **state)
{
	uint8_t buf[TSR_SITE_SNAP_MAX];
	char name[TSR_SITE_NAME_MAX + 1];
	int len;

	(void)state;
	len = tsr_site_snap_pack("daily.1", buf);
	assert_int_equal(len, 8);
	assert_int_equal(buf[0], 7);
	assert_memory_equal(buf + 1, "daily.1", 7);
	assert_int_equal(tsr_site_snap_parse(buf, 8, name), 0);
	assert_string_equal(name, "daily.1");
	assert_int_equal(tsr_site_snap_parse(buf, 7, name), -EPROTO);
	assert_int_equal(tsr_site_snap_parse(buf, 9, name), -EPROTO);
	assert_int_equal(tsr_site_snap_parse(buf, 1, name), -EPROTO);
	buf[0] = 0;
	assert_int_equal(tsr_site_snap_parse(buf, 1, name), -EPROTO);
	buf[0] = 7;
	buf[3] = ' ';
	assert_int_equal(tsr_site_snap_parse(buf, 8, name), -EINVAL);
	assert_int_equal(tsr_site_snap_pack("", buf), -EINVAL);
	assert_int_equal(tsr_site_snap_pack("a b", buf), -EINVAL);
}

static void test_error(void **state)
{
	struct tsr_site_error e = {.code = EILSEQ, .msg = "seq 5 after 7"}, out;
	uint8_t buf[TSR_SITE_ERROR_MAX];
	int len;

	(void)state;
	len = tsr_site_error_pack(&e, buf);
	assert_int_equal(len, 8 + 13);
	assert_int_equal(buf[0], EILSEQ);
	assert_int_equal(buf[4], 13);
	assert_int_equal(buf[6] | buf[7], 0);
	assert_memory_equal(buf + 8, "seq 5 after 7", 13);
	assert_int_equal(tsr_site_error_parse(buf, (uint32_t)len, &out), 0);
	assert_int_equal(out.code, EILSEQ);
	assert_string_equal(out.msg, "seq 5 after 7");
	/* empty message is fine */
	e.msg[0] = '\0';
	assert_int_equal(tsr_site_error_pack(&e, buf), 8);
	assert_int_equal(tsr_site_error_parse(buf, 8, &out), 0);
	assert_string_equal(out.msg, "");
	/* malformed */
	len = tsr_site_error_pack(&(struct tsr_site_error){.code = EIO, .msg = "abc"}, buf);
	assert_int_equal(len, 11);
	assert_int_equal(tsr_site_error_parse(buf, 10, &out), -EPROTO);
	assert_int_equal(tsr_site_error_parse(buf, 12, &out), -EPROTO);
	assert_int_equal(tsr_site_error_parse(buf, 7, &out), -EPROTO);
	buf[7] = 1;
	assert_int_equal(tsr_site_error_parse(buf, 11, &out), -EPROTO);
	buf[7] = 0;
	buf[9] = '\n';
	assert_int_equal(tsr_site_error_parse(buf, 11, &out), -EINVAL);
	buf[9] = 'b';
	buf[0] = buf[1] = buf[2] = buf[3] = 0; /* code 0 */
	assert_int_equal(tsr_site_error_parse(buf, 11, &out), -EINVAL);
	buf[1] = 0x10; /* code 4096 */
	assert_int_equal(tsr_site_error_parse(buf, 11, &out), -EINVAL);
	assert_int_equal(tsr_site_error_pack(&(struct tsr_site_error){.code = 0}, buf), -EINVAL);
	assert_int_equal(tsr_site_error_pack(&(struct tsr_site_error){.code = 5000}, buf),
			 -EINVAL);
	assert_int_equal(tsr_site_error_pack(&(struct tsr_site_error){.code = 5, .msg = "\t"},
					     buf), -EINVAL);
	memset(e.msg, 'x', sizeof(e.msg)); /* 256 bytes, no NUL: too long */
	assert_int_equal(tsr_site_error_pack(&e, buf), -EINVAL);
	e.msg[255] = '\0';
	assert_int_equal(tsr_site_error_pack(&e, buf), TSR_SITE_ERROR_MAX);
}

/* A compressed WRITE: flag at byte 6, wire_len at 48..51, payload_len =
 * wire_len; each rule broken is refused. */
static void test_compressed_hdr(void **state)
{
	struct tsr_site_hdr h = valid_hdr(TSR_SITE_WRITE), out;
	uint8_t buf[TSR_SITE_HDR_SIZE];

	(void)state;
	h.flags = TSR_SITE_F_COMPRESSED;
	h.wire_len = 0x1234; /* below length 0x2000 */
	tsr_site_hdr_pack(&h, buf);
	assert_int_equal(buf[6], 0x08);
	assert_int_equal(buf[48], 0x34);
	assert_int_equal(buf[49], 0x12);
	assert_int_equal(buf[50] | buf[51] | buf[52], 0);
	assert_int_equal(tsr_site_hdr_parse(buf, &out), 0);
	assert_int_equal(out.flags, TSR_SITE_F_COMPRESSED);
	assert_int_equal(out.wire_len, 0x1234);
	assert_int_equal(out.length, 2 * BS);
	assert_int_equal(out.payload_len, 0x1234);
	/* wire_len 0, equal to or above length */
	h.wire_len = 0;
	tsr_site_hdr_pack(&h, buf);
	assert_int_equal(tsr_site_hdr_parse(buf, &out), -EPROTO);
	h.wire_len = h.length;
	tsr_site_hdr_pack(&h, buf);
	assert_int_equal(tsr_site_hdr_parse(buf, &out), -EPROTO);
	h.wire_len = h.length + 1;
	tsr_site_hdr_pack(&h, buf);
	assert_int_equal(tsr_site_hdr_parse(buf, &out), -EPROTO);
	/* wire_len without the flag */
	h.flags = 0;
	h.wire_len = 100;
	tsr_site_hdr_pack(&h, buf);
	assert_int_equal(tsr_site_hdr_parse(buf, &out), -EPROTO);
	/* the flag on anything but a WRITE */
	for (uint8_t op = TSR_SITE_HELLO; op <= TSR_SITE_DIGEST; op++) {
		if (op == TSR_SITE_WRITE)
			continue;
		h = valid_hdr(op);
		h.flags |= TSR_SITE_F_COMPRESSED;
		h.wire_len = h.length > 1 ? h.length - 1 : 0;
		tsr_site_hdr_pack(&h, buf);
		assert_int_equal(tsr_site_hdr_parse(buf, &out), -EPROTO);
	}
	/* bytes 52..59 stay reserved */
	h = valid_hdr(TSR_SITE_WRITE);
	tsr_site_hdr_pack(&h, buf);
	buf[52] = 1;
	reseal(buf);
	assert_int_equal(tsr_site_hdr_parse(buf, &out), -EPROTO);
}

static void test_open_compress(void **state)
{
	struct tsr_site_open o = {.volume = "db1", .layout = "replicas:2",
				  .compress = TSR_SITE_COMPRESS_ZSTD}, out;
	uint8_t buf[TSR_SITE_OPEN_MAX];
	int len;

	(void)state;
	len = tsr_site_open_pack(&o, buf);
	assert_true(len > 4);
	assert_int_equal(buf[2], 2);
	assert_int_equal(buf[3], 0);
	assert_int_equal(tsr_site_open_parse(buf, (uint32_t)len, &out), 0);
	assert_int_equal(out.compress, TSR_SITE_COMPRESS_ZSTD);
	buf[2] = TSR_SITE_COMPRESS_MAX + 1;
	assert_int_equal(tsr_site_open_parse(buf, (uint32_t)len, &out), -EPROTONOSUPPORT);
	o.compress = TSR_SITE_COMPRESS_MAX + 1;
	assert_int_equal(tsr_site_open_pack(&o, buf), -EINVAL);
}

/* Consistency groups: VOLUME_OPEN's group (byte 3 = its length, then u16
 * members and the name after the layout) and the MARKER frame. */
static void test_open_group(void **state)
{
	struct tsr_site_open o = {.volume = "db1", .layout = "replicas:2", .group = "app",
				  .members = 3}, out;
	uint8_t buf[TSR_SITE_OPEN_MAX];
	int len;

	(void)state;
	len = tsr_site_open_pack(&o, buf);
	assert_int_equal(len, 4 + 3 + 10 + 2 + 3);
	assert_int_equal(buf[3], 3);
	assert_int_equal(buf[4 + 3 + 10], 3); /* u16 members, little endian */
	assert_int_equal(buf[4 + 3 + 10 + 1], 0);
	assert_memory_equal(buf + 4 + 3 + 10 + 2, "app", 3);
	assert_int_equal(tsr_site_open_parse(buf, (uint32_t)len, &out), 0);
	assert_string_equal(out.group, "app");
	assert_int_equal(out.members, 3);
	/* without a group: byte 3 is 0 and the payload as before */
	o.group[0] = '\0';
	o.members = 0;
	len = tsr_site_open_pack(&o, buf);
	assert_int_equal(len, 4 + 3 + 10);
	assert_int_equal(buf[3], 0);
	assert_int_equal(tsr_site_open_parse(buf, (uint32_t)len, &out), 0);
	assert_string_equal(out.group, "");
	assert_int_equal(out.members, 0);
	/* refusals: member count 0 or over 64, length off, a bad name */
	snprintf(o.group, sizeof(o.group), "app");
	o.members = 0;
	assert_int_equal(tsr_site_open_pack(&o, buf), -EINVAL);
	o.members = TSR_SITE_GROUP_MAX + 1;
	assert_int_equal(tsr_site_open_pack(&o, buf), -EINVAL);
	o.members = 2;
	len = tsr_site_open_pack(&o, buf);
	assert_true(len > 0);
	assert_int_equal(tsr_site_open_parse(buf, (uint32_t)len - 1, &out), -EPROTO);
	buf[3] = 4; /* the name's length past the payload */
	assert_int_equal(tsr_site_open_parse(buf, (uint32_t)len, &out), -EPROTO);
	buf[3] = 3;
	buf[len - 1] = '/';
	assert_int_equal(tsr_site_open_parse(buf, (uint32_t)len, &out), -EINVAL);
}

static void test_marker(void **state)
{
	struct tsr_site_marker m = {.group = "app", .members = 2}, out;
	struct tsr_site_hdr h = {.opcode = TSR_SITE_MARKER, .stream = 7, .seq = 9,
				 .offset = 1700000000123456ull, .epoch = 1}, got;
	uint8_t buf[TSR_SITE_MARKER_MAX];
	int len;

	(void)state;
	len = tsr_site_marker_pack(&m, buf);
	assert_int_equal(len, 4 + 3);
	assert_int_equal(buf[0], 3);
	assert_int_equal(buf[1], 0);
	assert_int_equal(buf[2], 2);
	assert_int_equal(tsr_site_marker_parse(buf, (uint32_t)len, &out), 0);
	assert_string_equal(out.group, "app");
	assert_int_equal(out.members, 2);
	h.length = (uint32_t)len;
	h.data_crc = tsr_crc32c(0, buf, (size_t)len);
	assert_int_equal(roundtrip(&h, &got), 0);
	assert_int_equal(got.payload_len, (uint32_t)len);
	assert_int_equal(got.offset, h.offset);
	assert_string_equal(tsr_site_op_name(TSR_SITE_MARKER), "marker");
	/* header rules: seq, number (offset), stream, payload bounds, flags */
	got = h;
	got.seq = 0;
	assert_int_equal(roundtrip(&got, &got), -EPROTO);
	got = h;
	got.offset = 0;
	assert_int_equal(roundtrip(&got, &got), -EPROTO);
	got = h;
	got.stream = 0;
	assert_int_equal(roundtrip(&got, &got), -EPROTO);
	got = h;
	got.length = 4;
	assert_int_equal(roundtrip(&got, &got), -EPROTO);
	got = h;
	got.length = TSR_SITE_MARKER_MAX + 1;
	assert_int_equal(roundtrip(&got, &got), -EMSGSIZE);
	got = h;
	got.flags = TSR_SITE_F_COMPRESSED;
	assert_int_equal(roundtrip(&got, &got), -EPROTO);
	/* payload rules */
	buf[1] = 1;
	assert_int_equal(tsr_site_marker_parse(buf, (uint32_t)len, &out), -EPROTO);
	buf[1] = 0;
	buf[2] = 0;
	assert_int_equal(tsr_site_marker_parse(buf, (uint32_t)len, &out), -EINVAL);
	buf[2] = TSR_SITE_GROUP_MAX + 1;
	assert_int_equal(tsr_site_marker_parse(buf, (uint32_t)len, &out), -EINVAL);
	buf[2] = 2;
	assert_int_equal(tsr_site_marker_parse(buf, (uint32_t)len + 1, &out), -EPROTO);
	m.group[0] = '\0';
	assert_int_equal(tsr_site_marker_pack(&m, buf), -EINVAL);
}

static void codec_round_trip(unsigned algo)
{
	const uint32_t len = 64 * 1024;
	uint8_t *data = malloc(len), *wire = malloc(len), *out = malloc(len + 16);
	struct tsr_site_codec *c;
	uint64_t x = 88172645463325252ull;
	uint32_t n;

	assert_true(data && wire && out);
	assert_int_equal(tsr_site_codec_create(algo, &c), 0);
	for (uint32_t i = 0; i < len; i++)
		data[i] = (uint8_t)("site stream "[i % 12] + (i / 4096));
	n = tsr_site_compress(c, data, len, wire, len);
	assert_true(n > 0 && n < len / 4);
	memset(out, 0xee, len + 16);
	assert_int_equal(tsr_site_decompress(c, wire, n, out, len), 0);
	assert_memory_equal(out, data, len);
	/* another length than the data's: refused */
	assert_int_equal(tsr_site_decompress(c, wire, n, out, len - BS), -EBADMSG);
	/* truncated, damaged */
	assert_int_equal(tsr_site_decompress(c, wire, n - 1, out, len), -EBADMSG);
	assert_int_equal(tsr_site_decompress(c, wire, n / 2, out, len), -EBADMSG);
	for (uint32_t i = 0; i < n; i++)
		wire[i] ^= 0xa5;
	memset(out + len, 0xee, 16);
	assert_int_equal(tsr_site_decompress(c, wire, n, out, len), -EBADMSG);
	for (uint32_t i = 0; i < 16; i++)
		assert_int_equal(out[len + i], 0xee); /* nothing past length */
	/* incompressible: not sent compressed */
	for (uint32_t i = 0; i + 8 <= len; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(data + i, &x, 8);
	}
	assert_int_equal(tsr_site_compress(c, data, len, wire, len), 0);
	/* a small cap: not smaller than that, 0 */
	for (uint32_t i = 0; i < len; i++)
		data[i] = (uint8_t)i;
	assert_int_equal(tsr_site_compress(c, data, len, wire, 8), 0);
	tsr_site_codec_destroy(c);
	free(data);
	free(wire);
	free(out);
}

static void test_codecs(void **state)
{
	struct tsr_site_codec *c = NULL;
	uint8_t a = 99;

	(void)state;
	codec_round_trip(TSR_SITE_COMPRESS_LZ4);
	codec_round_trip(TSR_SITE_COMPRESS_ZSTD);
	assert_int_equal(tsr_site_codec_create(TSR_SITE_COMPRESS_NONE, &c), -EPROTONOSUPPORT);
	assert_int_equal(tsr_site_codec_create(7, &c), -EPROTONOSUPPORT);
	assert_null(c);
	assert_int_equal(tsr_site_compress_parse("lz4", &a), 0);
	assert_int_equal(a, TSR_SITE_COMPRESS_LZ4);
	assert_int_equal(tsr_site_compress_parse("zstd", &a), 0);
	assert_int_equal(a, TSR_SITE_COMPRESS_ZSTD);
	assert_int_equal(tsr_site_compress_parse("none", &a), 0);
	assert_int_equal(a, TSR_SITE_COMPRESS_NONE);
	assert_int_equal(tsr_site_compress_parse("gzip", &a), -EINVAL);
	assert_int_equal(tsr_site_compress_parse("", &a), -EINVAL);
	assert_string_equal(tsr_site_compress_name(TSR_SITE_COMPRESS_ZSTD), "zstd");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hdr_roundtrip),
		cmocka_unit_test(test_hdr_layout),
		cmocka_unit_test(test_digest_fields),
		cmocka_unit_test(test_hdr_bad_bytes),
		cmocka_unit_test(test_hdr_bad_fields),
		cmocka_unit_test(test_data_check),
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_open),
		cmocka_unit_test(test_snap),
		cmocka_unit_test(test_error),
		cmocka_unit_test(test_compressed_hdr),
		cmocka_unit_test(test_open_compress),
		cmocka_unit_test(test_codecs),
		cmocka_unit_test(test_open_group),
		cmocka_unit_test(test_marker),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
