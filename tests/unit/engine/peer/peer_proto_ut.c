/*
 * Unit tests of the peer protocol's frame header (engine/peer/peer_proto.c):
 * pack/parse round trip of every opcode as request and reply, the payload
 * length rule, the wire layout at its documented byte offsets, and every
 * malformed variant rejected with its errno; the SNAP payload (pack/parse,
 * its byte layout, every malformed variant); the staged-write frames (STAGE,
 * COMMIT, RELEASE, STAGE_LIST: header bounds, STAGE prefix and STAGE_LIST
 * reply payloads with their byte layouts and every malformed variant); STATS
 * (header bounds, the reply payload's layout, a longer one from a later
 * build, every malformed variant, the feature bit).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tessera/peer.h"

#define BS 4096u

/* A valid request of each opcode. */
static struct tsr_peer_hdr valid_req(uint8_t op)
{
	struct tsr_peer_hdr h = {.opcode = op, .epoch = 42, .seq = 0x1122334455667788ull};

	switch (op) {
	case TSR_PEER_HELLO:
		h.length = 65 + 5;
		h.data_crc = 0xabcdef01;
		break;
	case TSR_PEER_OPEN:
		h.length = 3;
		h.data_crc = 0x12345678;
		break;
	case TSR_PEER_SNAP:
		h.handle = 3;
		h.length = 3 + 5;
		h.data_crc = 0x87654321;
		break;
	case TSR_PEER_READ:
	case TSR_PEER_TRIM:
	case TSR_PEER_SUMS:
		h.handle = 3;
		h.offset = 1ull << 40;
		h.length = 16 * BS;
		break;
	case TSR_PEER_WRITE:
		h.handle = 3;
		h.offset = 8 * BS;
		h.length = 2 * BS;
		h.flags = TSR_PEER_F_FUA;
		h.data_crc = 0xdeadbeef;
		break;
	case TSR_PEER_WRITE_ZEROES:
		h.handle = 3;
		h.offset = 0;
		h.length = 0xfffff000u;
		h.flags = TSR_PEER_F_FUA | TSR_PEER_F_NO_HOLE;
		break;
	case TSR_PEER_STAGE:
		h.handle = 3;
		h.offset = 16 * BS;
		h.length = 4 * BS;
		h.data_crc = 0x5a5a5a5a;
		break;
	case TSR_PEER_COMMIT:
		h.handle = 3;
		h.offset = (7ull << 32) | 12345; /* the txn */
		break;
	case TSR_PEER_RELEASE:
		h.handle = 3;
		h.offset = UINT64_MAX; /* txn_upto */
		break;
	default: /* CLOSE, FLUSH, PING, STAGE_LIST, SNAP_LIST */
		h.handle = 3;
		break;
	}
	return h;
}

static uint32_t expected_payload(const struct tsr_peer_hdr *h)
{
	bool reply = h->flags & TSR_PEER_F_REPLY;

	switch (h->opcode) {
	case TSR_PEER_HELLO:
	case TSR_PEER_OPEN:
	case TSR_PEER_SNAP:
	case TSR_PEER_WRITE:
		return reply ? 0 : h->length;
	case TSR_PEER_READ:
		return reply && h->status == 0 ? h->length : 0;
	case TSR_PEER_SUMS:
		return reply && h->status == 0 ? h->length / BS * 4 : 0;
	case TSR_PEER_STAGE:
		return reply ? 0 : TSR_PEER_STAGE_PREFIX + h->length;
	case TSR_PEER_STAGE_LIST:
	case TSR_PEER_SNAP_LIST:
	case TSR_PEER_STATS:
		return reply && h->status == 0 ? h->length : 0;
	default:
		return 0;
	}
}

static void assert_same(const struct tsr_peer_hdr *a, const struct tsr_peer_hdr *b)
{
	assert_int_equal(a->opcode, b->opcode);
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->handle, b->handle);
	assert_int_equal(a->offset, b->offset);
	assert_int_equal(a->length, b->length);
	assert_int_equal(a->status, b->status);
	assert_int_equal(a->epoch, b->epoch);
	assert_int_equal(a->seq, b->seq);
	assert_int_equal(a->data_crc, b->data_crc);
}

static void test_round_trip_every_op(void **state)
{
	uint8_t op;

	(void)state;
	for (op = TSR_PEER_HELLO; op <= TSR_PEER_STATS; op++) {
		struct tsr_peer_hdr h = valid_req(op), out;
		uint8_t buf[TSR_PEER_HDR_SIZE];

		tsr_peer_hdr_pack(&h, buf);
		assert_int_equal(tsr_peer_hdr_parse(buf, &out), 0);
		assert_same(&h, &out);
		assert_int_equal(out.payload_len, expected_payload(&h));

		/* its reply: success, then an error */
		h.flags |= TSR_PEER_F_REPLY;
		if (op == TSR_PEER_HELLO || op == TSR_PEER_OPEN || op == TSR_PEER_SNAP ||
		    op == TSR_PEER_STAGE) {
			h.length = 0;
			h.data_crc = 0;
			if (op == TSR_PEER_OPEN) {
				h.handle = 9;
				h.offset = 1ull << 30; /* the size */
			}
		}
		if (op == TSR_PEER_STATS)
			h.length = TSR_PEER_STATS_MIN; /* the counters */
		h.data_crc = expected_payload(&h) ? 0x0badf00d : 0;
		tsr_peer_hdr_pack(&h, buf);
		assert_int_equal(tsr_peer_hdr_parse(buf, &out), 0);
		assert_same(&h, &out);
		assert_int_equal(out.payload_len, expected_payload(&h));
		h.status = -ESTALE;
		h.data_crc = 0;
		if (op == TSR_PEER_STATS)
			h.length = 0; /* a failed STATS carries no counters */
		tsr_peer_hdr_pack(&h, buf);
		assert_int_equal(tsr_peer_hdr_parse(buf, &out), 0);
		assert_int_equal(out.status, -ESTALE);
		assert_int_equal(out.payload_len, 0);
	}
}

static void test_payload_len(void **state)
{
	struct tsr_peer_hdr h = valid_req(TSR_PEER_SUMS), out;
	uint8_t buf[TSR_PEER_HDR_SIZE];

	(void)state;
	h.flags = TSR_PEER_F_REPLY;
	h.length = TSR_PEER_MAX_SUMS_RANGE;
	h.data_crc = 1;
	tsr_peer_hdr_pack(&h, buf);
	assert_int_equal(tsr_peer_hdr_parse(buf, &out), 0);
	assert_int_equal(out.payload_len, TSR_PEER_MAX_SUMS_RANGE / BS * 4);
	h = valid_req(TSR_PEER_READ);
	h.flags = TSR_PEER_F_REPLY;
	h.length = TSR_MAX_IO;
	h.data_crc = 1;
	tsr_peer_hdr_pack(&h, buf);
	assert_int_equal(tsr_peer_hdr_parse(buf, &out), 0);
	assert_int_equal(out.payload_len, TSR_MAX_IO);
	/* a READ request carries nothing */
	h = valid_req(TSR_PEER_READ);
	tsr_peer_hdr_pack(&h, buf);
	assert_int_equal(tsr_peer_hdr_parse(buf, &out), 0);
	assert_int_equal(out.payload_len, 0);
}

/* The documented offsets, little endian. */
static void test_wire_layout(void **state)
{
	struct tsr_peer_hdr h = valid_req(TSR_PEER_WRITE);
	uint8_t buf[TSR_PEER_HDR_SIZE];

	(void)state;
	h.seq = 0x0102030405060708ull;
	tsr_peer_hdr_pack(&h, buf);
	assert_memory_equal(buf, "TSRP", 4);
	assert_int_equal(buf[4], TSR_PEER_WRITE);
	assert_int_equal(buf[5], TSR_PEER_F_FUA);
	assert_int_equal(buf[6] | buf[7], 0);
	assert_int_equal(buf[8], 3);
	assert_int_equal(buf[16 + 1], (8 * BS) >> 8);
	assert_int_equal(buf[24 + 1], (2 * BS) >> 8);
	assert_int_equal(buf[32], 42);
	assert_int_equal(buf[40], 0x08);
	assert_int_equal(buf[47], 0x01);
	assert_int_equal(buf[48], 0xef);
	assert_int_equal(buf[51], 0xde);
	assert_int_equal(buf[52] | buf[53] << 8 | buf[54] << 16 | (uint32_t)buf[55] << 24,
			 tsr_crc32c(0, buf, 52));
}

/* Pack h, apply a change to the bytes (or not), re-seal the CRC, parse. */
static int parse_mod(struct tsr_peer_hdr h, size_t off, uint8_t val, bool reseal)
{
	uint8_t buf[TSR_PEER_HDR_SIZE];
	struct tsr_peer_hdr out;
	uint32_t crc;

	tsr_peer_hdr_pack(&h, buf);
	if (off < TSR_PEER_HDR_SIZE)
		buf[off] = val;
	if (reseal) {
		crc = tsr_crc32c(0, buf, 52);
		buf[52] = (uint8_t)crc;
		buf[53] = (uint8_t)(crc >> 8);
		buf[54] = (uint8_t)(crc >> 16);
		buf[55] = (uint8_t)(crc >> 24);
	}
	return tsr_peer_hdr_parse(buf, &out);
}

static int parse(struct tsr_peer_hdr h)
{
	return parse_mod(h, TSR_PEER_HDR_SIZE, 0, false);
}

static void test_malformed(void **state)
{
	struct tsr_peer_hdr h;
	size_t i;

	(void)state;
	/* wrong magic (even with a valid CRC), bad header CRC anywhere */
	assert_int_equal(parse_mod(valid_req(TSR_PEER_READ), 0, 'X', true), -EBADMSG);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_READ), 3, 'Q', false), -EBADMSG);
	for (i = 4; i < TSR_PEER_HDR_SIZE; i++)
		assert_int_equal(
		    parse_mod(valid_req(TSR_PEER_READ), i, (uint8_t)(i == 52 ? 0 : 0xff), false),
		    -EBADMSG);
	/* unknown opcode */
	assert_int_equal(parse_mod(valid_req(TSR_PEER_PING), 4, 0, true), -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_PING), 4, TSR_PEER_STATS + 1, true), -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_PING), 4, 0xff, true), -EPROTO);
	/* reserved != 0 */
	assert_int_equal(parse_mod(valid_req(TSR_PEER_PING), 6, 1, true), -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_PING), 7, 0x80, true), -EPROTO);
	/* unknown flags, and flags the opcode does not take */
	assert_int_equal(parse_mod(valid_req(TSR_PEER_WRITE), 5, 0x10, true), -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_WRITE), 5, 0x80, true), -EPROTO);
	/* REPAIR: a WRITE (on a snapshot session) only */
	assert_int_equal(parse_mod(valid_req(TSR_PEER_WRITE), 5, TSR_PEER_F_REPAIR, true), 0);
	assert_int_equal(
	    parse_mod(valid_req(TSR_PEER_WRITE), 5, TSR_PEER_F_REPAIR | TSR_PEER_F_FUA, true), 0);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_READ), 5, TSR_PEER_F_REPAIR, true), -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_SUMS), 5, TSR_PEER_F_REPAIR, true), -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_STAGE), 5, TSR_PEER_F_REPAIR, true), -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_READ), 5, TSR_PEER_F_FUA, true), -EPROTO);
	/* DIRECT (byte 5, bit 5): a READ request only */
	assert_int_equal(TSR_PEER_F_DIRECT, 0x20);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_READ), 5, TSR_PEER_F_DIRECT, true), 0);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_READ), 5, 0x40, true), -EPROTO);
	h = valid_req(TSR_PEER_READ);
	h.flags = TSR_PEER_F_DIRECT;
	{
		uint8_t b[TSR_PEER_HDR_SIZE];
		struct tsr_peer_hdr out;

		tsr_peer_hdr_pack(&h, b);
		assert_int_equal(b[5], 0x20);
		assert_int_equal(tsr_peer_hdr_parse(b, &out), 0);
		assert_int_equal(out.flags, TSR_PEER_F_DIRECT);
		assert_int_equal(out.payload_len, 0);
	}
	assert_int_equal(parse_mod(valid_req(TSR_PEER_READ), 5, TSR_PEER_F_DIRECT | TSR_PEER_F_REPLY,
				   true),
			 -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_READ), 5, TSR_PEER_F_DIRECT | TSR_PEER_F_FUA,
				   true),
			 -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_SUMS), 5, TSR_PEER_F_DIRECT, true), -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_WRITE), 5, TSR_PEER_F_DIRECT, true), -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_STAGE), 5, TSR_PEER_F_DIRECT, true), -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_HELLO), 5, TSR_PEER_F_DIRECT, true), -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_PING), 5, TSR_PEER_F_DIRECT, true), -EPROTO);
	/* a HELLO reply's epoch carries the feature bits: any value parses */
	h = valid_req(TSR_PEER_HELLO);
	h.flags = TSR_PEER_F_REPLY;
	h.length = 0;
	h.data_crc = 0;
	h.epoch = TSR_PEER_FEATURES;
	assert_int_equal(parse(h), 0);
	/* MISSING_OK: a SNAP only */
	assert_int_equal(parse_mod(valid_req(TSR_PEER_SNAP), 5, TSR_PEER_F_MISSING_OK, true), 0);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_TRIM), 5, TSR_PEER_F_MISSING_OK, true), -EPROTO);
	assert_int_equal(
	    parse_mod(valid_req(TSR_PEER_SNAP), 5, TSR_PEER_F_MISSING_OK | TSR_PEER_F_FUA, true),
	    -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_WRITE), 5, TSR_PEER_F_NO_HOLE, true),
			 -EPROTO);
	/* status > 0, status in a request, status below any errno */
	h = valid_req(TSR_PEER_FLUSH);
	h.flags = TSR_PEER_F_REPLY;
	h.status = 5;
	assert_int_equal(parse(h), -EPROTO);
	h.status = -100000;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_FLUSH);
	h.status = -EIO;
	assert_int_equal(parse(h), -EPROTO);

	/* misaligned offset or length */
	h = valid_req(TSR_PEER_READ);
	h.offset += 512;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_WRITE);
	h.length = BS + 1;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_TRIM);
	h.length = 100;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_WRITE_ZEROES);
	h.offset = 1;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_SUMS);
	h.length = 4 * BS - 4;
	assert_int_equal(parse(h), -EPROTO);
	/* zero length data ops, offset wrapping around */
	h = valid_req(TSR_PEER_READ);
	h.length = 0;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_TRIM);
	h.offset = UINT64_MAX - BS + 1;
	h.length = 2 * BS;
	assert_int_equal(parse(h), -EPROTO);
	/* fields that must be 0 */
	h = valid_req(TSR_PEER_FLUSH);
	h.length = BS;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_PING);
	h.offset = BS;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_HELLO);
	h.handle = 1;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_OPEN);
	h.offset = BS;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_READ); /* no payload: data_crc 0 */
	h.data_crc = 1;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_OPEN); /* replies have no payload */
	h.flags = TSR_PEER_F_REPLY;
	assert_int_equal(parse(h), -EPROTO);

	/* oversized */
	h = valid_req(TSR_PEER_READ);
	h.length = TSR_MAX_IO + BS;
	assert_int_equal(parse(h), -EMSGSIZE);
	h = valid_req(TSR_PEER_WRITE);
	h.length = TSR_MAX_IO + BS;
	assert_int_equal(parse(h), -EMSGSIZE);
	h.length = TSR_MAX_IO;
	assert_int_equal(parse(h), 0);
	h = valid_req(TSR_PEER_SUMS);
	h.length = TSR_PEER_MAX_SUMS_RANGE + BS;
	assert_int_equal(parse(h), -EMSGSIZE);
	h = valid_req(TSR_PEER_HELLO);
	h.length = 65 + 64;
	assert_int_equal(parse(h), -EMSGSIZE);
	h.length = 64; /* shorter than the token and its length byte */
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_OPEN);
	h.length = 128; /* "VOL@SNAP": 63 + 1 + 63 at most */
	assert_int_equal(parse(h), -EMSGSIZE);
	h.length = 127;
	assert_int_equal(parse(h), 0);
	h.length = 0;
	h.data_crc = 0;
	assert_int_equal(parse(h), -EPROTO);
	/* SNAP: payload 3..129 bytes, offset 0, replies without payload */
	h = valid_req(TSR_PEER_SNAP);
	h.length = TSR_PEER_SNAP_MAX;
	assert_int_equal(parse(h), 0);
	h.length = TSR_PEER_SNAP_MAX + 1;
	assert_int_equal(parse(h), -EMSGSIZE);
	h.length = TSR_PEER_SNAP_MIN - 1;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_SNAP);
	h.offset = BS;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_SNAP);
	h.flags = TSR_PEER_F_REPLY;
	assert_int_equal(parse(h), -EPROTO); /* length 8 in a reply */
	h = valid_req(TSR_PEER_SNAP);
	h.flags = TSR_PEER_F_FUA;
	assert_int_equal(parse(h), -EPROTO);
}

static struct tsr_snap_req snap_req(enum tsr_snap_op op, const char *snap, const char *clone)
{
	struct tsr_snap_req r;

	memset(&r, 0, sizeof(r));
	r.op = op;
	strcpy(r.snap, snap);
	strcpy(r.clone, clone);
	return r;
}

static void test_snap_payload(void **state)
{
	struct tsr_snap_req r, out;
	uint8_t buf[TSR_PEER_SNAP_MAX], bad[TSR_PEER_SNAP_MAX];
	char long_name[64];
	int len;

	(void)state;
	/* the documented layout */
	r = snap_req(TSR_SNAP_CLONE, "s1", "clone-a");
	len = tsr_peer_snap_pack(&r, buf);
	assert_int_equal(len, 3 + 2 + 7);
	assert_int_equal(buf[0], TSR_SNAP_CLONE);
	assert_int_equal(buf[1], 2);
	assert_int_equal(buf[2], 7);
	assert_memory_equal(buf + 3, "s1clone-a", 9);
	assert_int_equal(tsr_peer_snap_parse(buf, (uint32_t)len, &out), 0);
	assert_int_equal(out.op, TSR_SNAP_CLONE);
	assert_string_equal(out.snap, "s1");
	assert_string_equal(out.clone, "clone-a");
	/* clone of the head: no snapshot name */
	r = snap_req(TSR_SNAP_CLONE, "", "c");
	len = tsr_peer_snap_pack(&r, buf);
	assert_int_equal(len, 4);
	assert_int_equal(tsr_peer_snap_parse(buf, (uint32_t)len, &out), 0);
	assert_string_equal(out.snap, "");
	/* the longest: two 63-byte names */
	memset(long_name, 'a', 63);
	long_name[63] = '\0';
	r = snap_req(TSR_SNAP_CLONE, long_name, long_name);
	len = tsr_peer_snap_pack(&r, buf);
	assert_int_equal(len, TSR_PEER_SNAP_MAX);
	assert_int_equal(tsr_peer_snap_parse(buf, (uint32_t)len, &out), 0);
	assert_string_equal(out.clone, long_name);
	/* a size on that CLONE (two 63-byte names fill the buffer): refused
	 * before anything is written past it (the 8 bytes after the buffer
	 * stay as they were; ASan would catch a write there) */
	{
		uint8_t big[TSR_PEER_SNAP_MAX + 8];

		memset(big, 0x5a, sizeof(big));
		r.size = BS;
		assert_int_equal(tsr_peer_snap_pack(&r, big), -EINVAL);
		for (size_t i = TSR_PEER_SNAP_MAX; i < sizeof(big); i++)
			assert_int_equal(big[i], 0x5a);
		r.size = 0;
	}
	/* a CREATE with its size (a make-up's cut): 8 bytes little-endian after the name */
	r = snap_req(TSR_SNAP_CREATE, long_name, "");
	r.size = ((uint64_t)3 << 32) + 8 * BS;
	len = tsr_peer_snap_pack(&r, buf);
	assert_int_equal(len, 3 + 63 + 8);
	assert_int_equal(buf[1], 63);
	assert_int_equal(buf[2], 0);
	assert_int_equal(buf[66], 8 * BS & 0xff);
	assert_int_equal(buf[67], (8 * BS) >> 8);
	assert_int_equal(buf[70], 3);
	assert_int_equal(tsr_peer_snap_parse(buf, (uint32_t)len, &out), 0);
	assert_int_equal(out.op, TSR_SNAP_CREATE);
	assert_int_equal(out.size, r.size);
	assert_string_equal(out.snap, long_name);
	assert_int_equal(tsr_peer_snap_parse(buf, (uint32_t)len - 1, &out), -EPROTO);
	memcpy(bad, buf, (size_t)len);
	bad[66] = 1; /* not a multiple of the block */
	assert_int_equal(tsr_peer_snap_parse(bad, (uint32_t)len, &out), -EINVAL);
	memset(bad + 66, 0, 8); /* 0: the volume's size goes without the field */
	assert_int_equal(tsr_peer_snap_parse(bad, (uint32_t)len, &out), -EINVAL);
	memcpy(bad, buf, (size_t)len);
	bad[0] = TSR_SNAP_DELETE; /* a size on another op */
	assert_int_equal(tsr_peer_snap_parse(bad, (uint32_t)len, &out), -EINVAL);
	/* without it (what senders before the field sent): size 0 */
	r.size = 0;
	len = tsr_peer_snap_pack(&r, buf);
	assert_int_equal(len, 3 + 63);
	out.size = 1;
	assert_int_equal(tsr_peer_snap_parse(buf, (uint32_t)len, &out), 0);
	assert_int_equal(out.size, 0);
	/* what does not pack */
	r = snap_req(TSR_SNAP_DELETE, "s", "");
	r.size = BS;
	assert_int_equal(tsr_peer_snap_pack(&r, buf), -EINVAL);
	r = snap_req(TSR_SNAP_CREATE, "s", "");
	r.size = BS + 1;
	assert_int_equal(tsr_peer_snap_pack(&r, buf), -EINVAL);
	r = snap_req(TSR_SNAP_CREATE, "", "");
	assert_int_equal(tsr_peer_snap_pack(&r, buf), -EINVAL);
	r = snap_req(TSR_SNAP_DELETE, "s", "x");
	assert_int_equal(tsr_peer_snap_pack(&r, buf), -EINVAL);
	r = snap_req(TSR_SNAP_CLONE, "s", "");
	assert_int_equal(tsr_peer_snap_pack(&r, buf), -EINVAL);
	r = snap_req((enum tsr_snap_op)9, "s", "");
	assert_int_equal(tsr_peer_snap_pack(&r, buf), -EINVAL);
	r = snap_req(TSR_SNAP_CREATE, "a/b", "");
	assert_int_equal(tsr_peer_snap_pack(&r, buf), -EINVAL);

	/* malformed payloads */
	r = snap_req(TSR_SNAP_CREATE, "snap1", "");
	len = tsr_peer_snap_pack(&r, buf);
	assert_int_equal(len, 8);
	assert_int_equal(tsr_peer_snap_parse(buf, 8, &out), 0);
	assert_int_equal(tsr_peer_snap_parse(buf, 7, &out), -EPROTO); /* lengths disagree */
	assert_int_equal(tsr_peer_snap_parse(buf, 2, &out), -EPROTO); /* shorter than 3 */
	assert_int_equal(tsr_peer_snap_parse(buf, TSR_PEER_SNAP_MAX + 1, &out), -EPROTO);
	memcpy(bad, buf, 8);
	bad[1] = 64; /* a name over 63 bytes */
	assert_int_equal(tsr_peer_snap_parse(bad, 8, &out), -EPROTO);
	memcpy(bad, buf, 8);
	bad[0] = 0;
	assert_int_equal(tsr_peer_snap_parse(bad, 8, &out), -EINVAL);
	memcpy(bad, buf, 8);
	bad[5] = '\0'; /* a NUL inside the name */
	assert_int_equal(tsr_peer_snap_parse(bad, 8, &out), -EINVAL);
	memcpy(bad, buf, 8);
	bad[5] = '/';
	assert_int_equal(tsr_peer_snap_parse(bad, 8, &out), -EINVAL);
	memcpy(bad, buf, 8);
	bad[1] = 0; /* CREATE without a name */
	bad[2] = 5;
	assert_int_equal(tsr_peer_snap_parse(bad, 8, &out), -EINVAL);
}

static void test_stage_headers(void **state)
{
	struct tsr_peer_hdr h, out;
	uint8_t buf[TSR_PEER_HDR_SIZE];

	(void)state;
	/* STAGE: payload 32 + length, length a 4 KiB multiple, 1 .. 1 MiB */
	h = valid_req(TSR_PEER_STAGE);
	h.length = 1024 * 1024;
	tsr_peer_hdr_pack(&h, buf);
	assert_int_equal(tsr_peer_hdr_parse(buf, &out), 0);
	assert_int_equal(out.payload_len, TSR_PEER_STAGE_PREFIX + 1024 * 1024);
	h.length = 1024 * 1024 + BS;
	assert_int_equal(parse(h), -EMSGSIZE);
	h.length = 0;
	assert_int_equal(parse(h), -EPROTO);
	h.length = BS + 512;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_STAGE);
	h.offset = BS + 8;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_STAGE);
	h.offset = UINT64_MAX - BS + 1;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_STAGE);
	h.flags = TSR_PEER_F_FUA;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_STAGE); /* its reply carries no length, no payload */
	h.flags = TSR_PEER_F_REPLY;
	h.data_crc = 0;
	assert_int_equal(parse(h), -EPROTO);
	h.length = 0;
	assert_int_equal(parse(h), 0);
	h.data_crc = 1;
	assert_int_equal(parse(h), -EPROTO);

	/* COMMIT, RELEASE: any offset (the txn), length 0, no payload */
	h = valid_req(TSR_PEER_COMMIT);
	h.offset = 1;
	assert_int_equal(parse(h), 0);
	h.length = BS;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_COMMIT);
	h.data_crc = 7;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_RELEASE);
	h.length = 40;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_RELEASE);
	h.flags = TSR_PEER_F_REPLY;
	h.status = -EIO;
	assert_int_equal(parse(h), 0);
	h.length = BS;
	assert_int_equal(parse(h), -EPROTO);

	/* STAGE_LIST: request offset 0 length 0; reply 40 * n, n <= max */
	h = valid_req(TSR_PEER_STAGE_LIST);
	h.offset = BS;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_STAGE_LIST);
	h.length = 40;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_STAGE_LIST);
	h.flags = TSR_PEER_F_REPLY;
	h.length = TSR_PEER_STAGE_ENTRY * TSR_STAGE_MAX_ENTRIES;
	h.data_crc = 1;
	tsr_peer_hdr_pack(&h, buf);
	assert_int_equal(tsr_peer_hdr_parse(buf, &out), 0);
	assert_int_equal(out.payload_len, TSR_PEER_STAGE_ENTRY * TSR_STAGE_MAX_ENTRIES);
	h.length += TSR_PEER_STAGE_ENTRY;
	assert_int_equal(parse(h), -EMSGSIZE);
	h.length = 41;
	assert_int_equal(parse(h), -EPROTO);
	h.length = 0;
	h.data_crc = 0;
	assert_int_equal(parse(h), 0);
	h.length = 80;
	h.data_crc = 1;
	h.status = -ESTALE; /* an error carries no entries */
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_STAGE_LIST);
	h.flags = TSR_PEER_F_REPLY;
	h.offset = 1;
	assert_int_equal(parse(h), -EPROTO);
}

static void test_stage_prefix(void **state)
{
	struct tsr_peer_hdr h = valid_req(TSR_PEER_STAGE);
	struct tsr_stage_entry e = {.txn = 0x0102030405060708ull,
				    .stripe = 0x1112131415161718ull,
				    .participants = 0xfffff},
			       out;
	uint8_t p[TSR_PEER_STAGE_PREFIX];
	size_t i;

	(void)state;
	memset(p, 0xee, sizeof(p));
	tsr_peer_stage_pack(&e, p);
	/* the documented offsets, little endian */
	assert_int_equal(p[0], 0x08);
	assert_int_equal(p[7], 0x01);
	assert_int_equal(p[8], 0x18);
	assert_int_equal(p[15], 0x11);
	assert_int_equal(p[16], 0xff);
	assert_int_equal(p[18], 0x0f);
	assert_int_equal(p[19], 0);
	for (i = 20; i < TSR_PEER_STAGE_PREFIX; i++)
		assert_int_equal(p[i], 0);
	memset(&out, 0xaa, sizeof(out));
	assert_int_equal(tsr_peer_stage_parse(&h, p, &out), 0);
	assert_int_equal(out.txn, e.txn);
	assert_int_equal(out.stripe, e.stripe);
	assert_int_equal(out.participants, 0xfffff);
	assert_int_equal(out.offset, h.offset); /* offset and length from the header */
	assert_int_equal(out.length, h.length);
	assert_int_equal(out.state, TSR_STAGE_STAGED);

	for (i = 20; i < TSR_PEER_STAGE_PREFIX; i++) {
		tsr_peer_stage_pack(&e, p);
		p[i] = 1;
		assert_int_equal(tsr_peer_stage_parse(&h, p, &out), -EPROTO);
	}
	e.participants = 0;
	tsr_peer_stage_pack(&e, p);
	assert_int_equal(tsr_peer_stage_parse(&h, p, &out), -EINVAL);
	e.participants = 1u << 20; /* position 20: k + m is at most 20 */
	tsr_peer_stage_pack(&e, p);
	assert_int_equal(tsr_peer_stage_parse(&h, p, &out), -EINVAL);
	e.participants = 0x80000001u;
	tsr_peer_stage_pack(&e, p);
	assert_int_equal(tsr_peer_stage_parse(&h, p, &out), -EINVAL);
	e.participants = 1;
	tsr_peer_stage_pack(&e, p);
	assert_int_equal(tsr_peer_stage_parse(&h, p, &out), 0);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void test_stage_list_payload(void **state)
{
	struct tsr_stage_entry e[3] = {
	    {.txn = 5,
	     .stripe = 1,
	     .offset = 0,
	     .length = BS,
	     .participants = 3,
	     .state = TSR_STAGE_STAGED},
	    {.txn = 9,
	     .stripe = 2,
	     .offset = 1ull << 40,
	     .length = 1024 * 1024,
	     .participants = 0x3f,
	     .state = TSR_STAGE_COMMITTED},
	    {.txn = UINT64_MAX,
	     .stripe = UINT64_MAX,
	     .offset = 8 * BS,
	     .length = 2 * BS,
	     .participants = 1,
	     .state = TSR_STAGE_STAGED},
	};
	uint8_t p[3 * TSR_PEER_STAGE_ENTRY], q[sizeof(p)];
	struct tsr_stage_entry out[3];
	size_t n = 99;

	(void)state;
	tsr_peer_stage_list_pack(e, 3, p);
	/* entry 1 at its documented offsets */
	assert_int_equal(p[40], 9);
	assert_int_equal(p[48], 2);
	assert_int_equal(p[56 + 5], 1);    /* 1 << 40 */
	assert_int_equal(p[64 + 2], 0x10); /* 1 MiB */
	assert_int_equal(p[68], 0x3f);
	assert_int_equal(p[72], TSR_STAGE_COMMITTED);
	assert_int_equal(p[76] | p[77] | p[78] | p[79], 0);
	assert_int_equal(tsr_peer_stage_list_parse(p, sizeof(p), out, 3, &n), 0);
	assert_int_equal(n, 3);
	for (n = 0; n < 3; n++) {
		assert_int_equal(out[n].txn, e[n].txn);
		assert_int_equal(out[n].stripe, e[n].stripe);
		assert_int_equal(out[n].offset, e[n].offset);
		assert_int_equal(out[n].length, e[n].length);
		assert_int_equal(out[n].participants, e[n].participants);
		assert_int_equal(out[n].state, e[n].state);
	}
	assert_int_equal(tsr_peer_stage_list_parse(p, 0, out, 3, &n), 0);
	assert_int_equal(n, 0);

	/* malformed */
	assert_int_equal(tsr_peer_stage_list_parse(p, sizeof(p) - 1, out, 3, &n), -EPROTO);
	assert_int_equal(tsr_peer_stage_list_parse(p, sizeof(p), out, 2, &n), -EMSGSIZE);
#define BAD(off, val)                                                                              \
	do {                                                                                       \
		memcpy(q, p, sizeof(p));                                                           \
		put_le32(q + (off), (val));                                                        \
		assert_int_equal(tsr_peer_stage_list_parse(q, sizeof(q), out, 3, &n), -EPROTO);    \
	} while (0)
	BAD(40 + 32, 0); /* state */
	BAD(40 + 32, 3);
	BAD(40 + 36, 1);               /* reserved */
	BAD(40 + 16, 512);             /* offset misaligned */
	BAD(40 + 24, 0);               /* length 0 */
	BAD(40 + 24, BS + 4);          /* length misaligned */
	BAD(40 + 24, 2 * 1024 * 1024); /* length over 1 MiB */
	BAD(40, 5);                    /* txn equal to the previous one */
	BAD(40, 4);                    /* txn going down */
#undef BAD
	memcpy(q, p, sizeof(p)); /* offset + length wraps: 2^64 - 4096 + 8 KiB */
	memset(q + 80 + 16, 0xff, 8);
	q[80 + 16] = 0;
	q[80 + 17] = 0xf0;
	assert_int_equal(tsr_peer_stage_list_parse(q, sizeof(q), out, 3, &n), -EPROTO);
}

/* SNAP_LIST reply payload: 72-byte entries {size, name NUL-padded}. */
static void test_snap_list_payload(void **state)
{
	struct tsr_peer_snap_entry in[3] = {{"s1", 1ull << 30}, {"nightly-2", 8192}, {"x", 0}};
	struct tsr_peer_snap_entry out[3];
	uint8_t p[3 * TSR_PEER_SNAP_ENTRY], q[sizeof(p)];
	struct tsr_peer_hdr h = {.opcode = TSR_PEER_SNAP_LIST, .flags = TSR_PEER_F_REPLY}, o;
	uint8_t buf[TSR_PEER_HDR_SIZE];
	size_t n = 9;

	(void)state;
	memset(in[1].name + 10, 0, sizeof(in[1].name) - 10);
	tsr_peer_snap_list_pack(in, 3, p);
	assert_int_equal(tsr_get_le64(p + TSR_PEER_SNAP_ENTRY), 8192);
	assert_memory_equal(p + TSR_PEER_SNAP_ENTRY + 8, "nightly-2", 10);
	assert_int_equal(tsr_peer_snap_list_parse(p, sizeof(p), out, 3, &n), 0);
	assert_int_equal(n, 3);
	for (unsigned i = 0; i < 3; i++) {
		assert_string_equal(out[i].name, in[i].name);
		assert_int_equal(out[i].size, in[i].size);
	}
	assert_int_equal(tsr_peer_snap_list_parse(p, 0, out, 3, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(tsr_peer_snap_list_parse(p, sizeof(p) - 1, out, 3, &n), -EPROTO);
	assert_int_equal(tsr_peer_snap_list_parse(p, sizeof(p), out, 2, &n), -EPROTO);
	memcpy(q, p, sizeof(q)); /* an empty name */
	q[8] = 0;
	assert_int_equal(tsr_peer_snap_list_parse(q, sizeof(q), out, 3, &n), -EPROTO);
	memcpy(q, p, sizeof(q)); /* bytes after the NUL */
	q[8 + 5] = 'z';
	assert_int_equal(tsr_peer_snap_list_parse(q, sizeof(q), out, 3, &n), -EPROTO);
	memcpy(q, p, sizeof(q)); /* 64 bytes, no NUL */
	memset(q + 8, 'a', 64);
	assert_int_equal(tsr_peer_snap_list_parse(q, sizeof(q), out, 3, &n), -EPROTO);
	memcpy(q, p, sizeof(q)); /* not a valid name */
	q[8 + 1] = '/';
	assert_int_equal(tsr_peer_snap_list_parse(q, sizeof(q), out, 3, &n), -EPROTO);
	/* the header: a reply's length is 72 * n, at most 1024 entries */
	h.length = 3 * TSR_PEER_SNAP_ENTRY;
	tsr_peer_hdr_pack(&h, buf);
	assert_int_equal(tsr_peer_hdr_parse(buf, &o), 0);
	assert_int_equal(o.payload_len, 3 * TSR_PEER_SNAP_ENTRY);
	h.length = 3 * TSR_PEER_SNAP_ENTRY + 8;
	tsr_peer_hdr_pack(&h, buf);
	assert_int_equal(tsr_peer_hdr_parse(buf, &o), -EPROTO);
	h.length = 1025 * TSR_PEER_SNAP_ENTRY;
	tsr_peer_hdr_pack(&h, buf);
	assert_int_equal(tsr_peer_hdr_parse(buf, &o), -EMSGSIZE);
	h = (struct tsr_peer_hdr){.opcode = TSR_PEER_SNAP_LIST, .length = 72}; /* request */
	tsr_peer_hdr_pack(&h, buf);
	assert_int_equal(tsr_peer_hdr_parse(buf, &o), -EPROTO);
}

/* STATS: header bounds, the reply payload (peer.h), the feature bit. */
static void test_stats(void **state)
{
	struct tsr_peer_stats in = {.crc_errors = 0x0102030405060708ull, .cached_reads = 77}, out;
	struct tsr_peer_hdr h, o;
	uint8_t p[TSR_PEER_STATS_MAX], buf[TSR_PEER_HDR_SIZE];

	(void)state;
	assert_int_equal(TSR_PEER_STATS, 17);
	assert_int_equal(TSR_PEER_FEAT_STATS, 0x2);
	assert_true(TSR_PEER_FEATURES & TSR_PEER_FEAT_STATS);
	assert_true(TSR_PEER_FEATURES & TSR_PEER_FEAT_READ_DIRECT);
	/* the payload: crc_errors at 0, cached_reads at 8, little endian */
	memset(p, 0xee, sizeof(p));
	assert_int_equal(tsr_peer_stats_pack(&in, p), 16);
	assert_int_equal(p[0], 0x08);
	assert_int_equal(p[7], 0x01);
	assert_int_equal(tsr_get_le64(p + 8), 77);
	memset(&out, 0, sizeof(out));
	assert_int_equal(tsr_peer_stats_parse(p, 16, &out), 0);
	assert_int_equal(out.crc_errors, in.crc_errors);
	assert_int_equal(out.cached_reads, 77);
	/* a later build's longer reply: the known counters, the rest ignored */
	memset(&out, 0, sizeof(out));
	assert_int_equal(tsr_peer_stats_parse(p, TSR_PEER_STATS_MAX, &out), 0);
	assert_int_equal(out.crc_errors, in.crc_errors);
	assert_int_equal(tsr_peer_stats_parse(p, 24, &out), 0);
	/* too short, not 8-byte counters, too long */
	assert_int_equal(tsr_peer_stats_parse(p, 0, &out), -EPROTO);
	assert_int_equal(tsr_peer_stats_parse(p, 8, &out), -EPROTO);
	assert_int_equal(tsr_peer_stats_parse(p, 17, &out), -EPROTO);
	assert_int_equal(tsr_peer_stats_parse(p, 20, &out), -EPROTO);
	assert_int_equal(tsr_peer_stats_parse(p, TSR_PEER_STATS_MAX + 8, &out), -EPROTO);

	/* request: offset 0, length 0, no payload, no flag */
	h = valid_req(TSR_PEER_STATS);
	tsr_peer_hdr_pack(&h, buf);
	assert_int_equal(tsr_peer_hdr_parse(buf, &o), 0);
	assert_int_equal(o.payload_len, 0);
	h.offset = BS;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_STATS);
	h.length = 16;
	assert_int_equal(parse(h), -EPROTO);
	h = valid_req(TSR_PEER_STATS);
	h.data_crc = 1;
	assert_int_equal(parse(h), -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_STATS), 5, TSR_PEER_F_DIRECT, true), -EPROTO);
	assert_int_equal(parse_mod(valid_req(TSR_PEER_STATS), 5, TSR_PEER_F_FUA, true), -EPROTO);
	/* reply: 16..64 bytes, 8 a counter; an error carries none */
	h = valid_req(TSR_PEER_STATS);
	h.flags = TSR_PEER_F_REPLY;
	h.length = 16;
	h.data_crc = 1;
	tsr_peer_hdr_pack(&h, buf);
	assert_int_equal(tsr_peer_hdr_parse(buf, &o), 0);
	assert_int_equal(o.payload_len, 16);
	h.length = TSR_PEER_STATS_MAX;
	tsr_peer_hdr_pack(&h, buf);
	assert_int_equal(tsr_peer_hdr_parse(buf, &o), 0);
	assert_int_equal(o.payload_len, TSR_PEER_STATS_MAX);
	h.length = TSR_PEER_STATS_MAX + 8;
	assert_int_equal(parse(h), -EMSGSIZE);
	h.length = 8;
	assert_int_equal(parse(h), -EPROTO);
	h.length = 20;
	assert_int_equal(parse(h), -EPROTO);
	h.length = 0;
	assert_int_equal(parse(h), -EPROTO); /* a success carries the counters */
	h.length = 16;
	h.offset = 8;
	assert_int_equal(parse(h), -EPROTO);
	h.offset = 0;
	h.status = -ESTALE;
	assert_int_equal(parse(h), -EPROTO);
	h.length = 0;
	h.data_crc = 0;
	tsr_peer_hdr_pack(&h, buf);
	assert_int_equal(tsr_peer_hdr_parse(buf, &o), 0);
	assert_int_equal(o.status, -ESTALE);
	assert_int_equal(o.payload_len, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_every_op), cmocka_unit_test(test_payload_len),
	    cmocka_unit_test(test_wire_layout),         cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_snap_payload),        cmocka_unit_test(test_stage_headers),
	    cmocka_unit_test(test_stage_prefix),        cmocka_unit_test(test_stage_list_payload),
	    cmocka_unit_test(test_snap_list_payload),   cmocka_unit_test(test_stats),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
