/*
 * libFuzzer harness: peer protocol frame headers (tsr_peer_hdr_parse), the
 * SNAP request payload (tsr_peer_snap_parse), the SNAP_LIST reply
 * payload (tsr_peer_snap_list_parse) and the STATS reply payload
 * (tsr_peer_stats_parse).
 * Each 56-byte piece of the input is parsed twice: as it is (the checksum
 * almost always rejects it), and with its hdr_crc recomputed, so the
 * fuzzer reaches the field checks behind it.  When a piece is an accepted
 * SNAP request, SNAP_LIST or STATS reply, the bytes after it (up to its length)
 * are parsed as its payload.
 * Checks: no crash; an accepted header packs back to the same bytes, its
 * flags are the opcode's, and its length, offset and payload length are
 * within the documented bounds;
 * an accepted SNAP payload, and an accepted SNAP_LIST payload, pack back to
 * the same bytes; an accepted STATS payload packs back to its first 16
 * bytes (a longer one: a later build's counters, ignored).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/peer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A SNAP payload of len bytes (the header's length, within its bound). */
static void check_snap(const uint8_t *p, uint32_t len)
{
	struct tsr_snap_req req;
	uint8_t again[TSR_PEER_SNAP_MAX];
	int ret = tsr_peer_snap_parse(p, len, &req);

	if (ret != 0) {
		if (ret != -EPROTO && ret != -EINVAL)
			abort();
		return;
	}
	if (req.op != TSR_SNAP_CREATE && req.op != TSR_SNAP_DELETE && req.op != TSR_SNAP_CLONE)
		abort();
	if (req.size % TSR_BLOCK_SIZE != 0 || (req.size != 0 && req.op != TSR_SNAP_CREATE))
		abort();
	if (tsr_peer_snap_pack(&req, again) != (int)len || memcmp(again, p, len) != 0)
		abort();
}

/* A SNAP_LIST reply payload of len bytes (the header's length). */
static void check_snap_list(const uint8_t *p, uint32_t len)
{
	static struct tsr_peer_snap_entry e[TSR_PEER_SNAP_LIST_MAX];
	static uint8_t again[TSR_PEER_SNAP_ENTRY * TSR_PEER_SNAP_LIST_MAX];
	size_t n = 0;
	int ret = tsr_peer_snap_list_parse(p, len, e, TSR_PEER_SNAP_LIST_MAX, &n);

	if (ret != 0) {
		if (ret != -EPROTO)
			abort();
		return;
	}
	if (n * TSR_PEER_SNAP_ENTRY != len)
		abort();
	tsr_peer_snap_list_pack(e, n, again);
	if (memcmp(again, p, len) != 0)
		abort();
}

/* A STATS reply payload of len bytes (the header's length). */
static void check_stats(const uint8_t *p, uint32_t len)
{
	struct tsr_peer_stats st;
	uint8_t again[TSR_PEER_STATS_MAX];
	int ret = tsr_peer_stats_parse(p, len, &st);

	if (ret != 0) {
		if (ret != -EPROTO)
			abort();
		return;
	}
	if (len < TSR_PEER_STATS_MIN || len > TSR_PEER_STATS_MAX || len % 8 != 0)
		abort();
	if (tsr_peer_stats_pack(&st, again) != TSR_PEER_STATS_MIN ||
	    memcmp(again, p, TSR_PEER_STATS_MIN) != 0)
		abort();
}

/* Returns the accepted header's SNAP (SNAP_LIST, STATS reply) payload length (0
 * when it is none); *op its opcode. */
static uint32_t check(const uint8_t *buf, uint8_t *op)
{
	struct tsr_peer_hdr h;
	uint8_t again[TSR_PEER_HDR_SIZE];
	int ret = tsr_peer_hdr_parse(buf, &h);

	if (ret != 0) {
		if (ret != -EBADMSG && ret != -EPROTO && ret != -EMSGSIZE)
			abort();
		return 0;
	}
	tsr_peer_hdr_pack(&h, again);
	if (memcmp(again, buf, TSR_PEER_HDR_SIZE) != 0)
		abort();
	if (h.status > 0 || (!(h.flags & TSR_PEER_F_REPLY) && h.status != 0))
		abort();
	/* each flag only on the opcodes that take it (REPAIR: a WRITE on a
	 * snapshot session, the scrub's repair) */
	if ((h.flags & TSR_PEER_F_REPAIR) && h.opcode != TSR_PEER_WRITE)
		abort();
	if ((h.flags & TSR_PEER_F_NO_HOLE) && h.opcode != TSR_PEER_WRITE_ZEROES)
		abort();
	if ((h.flags & TSR_PEER_F_MISSING_OK) && h.opcode != TSR_PEER_SNAP)
		abort();
	if ((h.flags & TSR_PEER_F_DIRECT) &&
	    (h.opcode != TSR_PEER_READ || (h.flags & TSR_PEER_F_REPLY)))
		abort();
	if ((h.flags & ~(TSR_PEER_F_REPLY | TSR_PEER_F_FUA | TSR_PEER_F_NO_HOLE |
			 TSR_PEER_F_REPAIR | TSR_PEER_F_MISSING_OK | TSR_PEER_F_DIRECT)) != 0)
		abort();
	switch (h.opcode) {
	case TSR_PEER_READ:
	case TSR_PEER_WRITE:
		if (h.length == 0 || h.length > TSR_MAX_IO)
			abort();
		/* fall through */
	case TSR_PEER_TRIM:
	case TSR_PEER_WRITE_ZEROES:
	case TSR_PEER_SUMS:
		if (h.length % TSR_BLOCK_SIZE || h.offset % TSR_BLOCK_SIZE ||
		    h.offset + h.length < h.offset)
			abort();
		break;
	default:
		break;
	}
	if (h.payload_len > TSR_MAX_IO || (h.payload_len == 0 && h.data_crc != 0))
		abort();
	if (h.opcode == TSR_PEER_SUMS && h.payload_len > TSR_PEER_MAX_SUMS_RANGE / 1024)
		abort();
	if ((h.opcode == TSR_PEER_HELLO || h.opcode == TSR_PEER_OPEN) && h.payload_len > 128)
		abort();
	*op = h.opcode;
	if (h.opcode == TSR_PEER_STATS) {
		if (h.offset != 0 || h.payload_len > TSR_PEER_STATS_MAX || h.payload_len % 8 ||
		    (h.payload_len != 0 && h.payload_len < TSR_PEER_STATS_MIN) ||
		    ((!(h.flags & TSR_PEER_F_REPLY) || h.status != 0) && h.payload_len != 0) ||
		    h.flags & ~TSR_PEER_F_REPLY)
			abort();
		return h.payload_len;
	}
	if (h.opcode == TSR_PEER_SNAP_LIST) {
		if (h.offset != 0 || h.payload_len > TSR_PEER_SNAP_ENTRY * TSR_PEER_SNAP_LIST_MAX ||
		    h.payload_len % TSR_PEER_SNAP_ENTRY ||
		    (!(h.flags & TSR_PEER_F_REPLY) && h.payload_len != 0))
			abort();
		return h.payload_len;
	}
	if (h.opcode == TSR_PEER_SNAP) {
		if (h.offset != 0 || h.payload_len > TSR_PEER_SNAP_MAX ||
		    (!(h.flags & TSR_PEER_F_REPLY) && h.payload_len < TSR_PEER_SNAP_MIN))
			abort();
		return h.payload_len;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t buf[TSR_PEER_HDR_SIZE];
	size_t off;

	for (off = 0; off + TSR_PEER_HDR_SIZE <= size; off += TSR_PEER_HDR_SIZE) {
		uint32_t crc;

		uint32_t plen;
		uint8_t op = 0;

		memcpy(buf, data + off, TSR_PEER_HDR_SIZE);
		check(buf, &op);
		crc = tsr_crc32c(0, buf, 52);
		buf[52] = (uint8_t)crc;
		buf[53] = (uint8_t)(crc >> 8);
		buf[54] = (uint8_t)(crc >> 16);
		buf[55] = (uint8_t)(crc >> 24);
		plen = check(buf, &op);
		if (plen > 0 && size - off - TSR_PEER_HDR_SIZE >= plen) {
			uint8_t *p = malloc(plen); /* its own copy: ASan sees overreads */

			if (p == NULL)
				abort();
			memcpy(p, data + off + TSR_PEER_HDR_SIZE, plen);
			if (op == TSR_PEER_SNAP_LIST)
				check_snap_list(p, plen);
			else if (op == TSR_PEER_STATS)
				check_stats(p, plen);
			else
				check_snap(p, plen);
			free(p);
		}
	}
	return 0;
}
