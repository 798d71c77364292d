/*
 * libFuzzer harness: the staged-write payloads of the peer protocol, the
 * STAGE request prefix (tsr_peer_stage_parse) and the STAGE_LIST reply
 * (tsr_peer_stage_list_parse).
 * Input: byte 0 chooses the parser (even: STAGE, odd: STAGE_LIST).
 *   STAGE: bytes 1..8 the header's offset, 9..12 its length (little endian),
 *          then the 32-byte prefix (shorter inputs are padded with zeros);
 *   STAGE_LIST: the rest of the input is the reply payload; byte 1 also
 *          picks the caller's room (max entries: all, or fewer).
 * Checks: no crash, no read past the payload (parsed from its own heap
 * copy, so ASan sees overreads); an accepted prefix has participants in
 * 1..2^20-1, takes offset and length from the header, and packs back to the
 * same bytes; an accepted list has len/40 entries, within max, with
 * increasing txns, known states, aligned ranges, and packs back to the same
 * bytes; a list with more entries than max is -EMSGSIZE.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/peer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n-- > 0)
		v = (v << 8) | p[n];
	return v;
}

static void fuzz_prefix(const uint8_t *data, size_t size)
{
	uint8_t in[12 + TSR_PEER_STAGE_PREFIX] = {0}, again[TSR_PEER_STAGE_PREFIX];
	struct tsr_peer_hdr h = {.opcode = TSR_PEER_STAGE};
	struct tsr_stage_entry e;
	uint8_t *prefix;
	int ret;

	memcpy(in, data, size < sizeof(in) ? size : sizeof(in));
	h.offset = le(in, 8);
	h.length = (uint32_t)le(in + 8, 4);
	prefix = malloc(TSR_PEER_STAGE_PREFIX);
	if (prefix == NULL)
		abort();
	memcpy(prefix, in + 12, TSR_PEER_STAGE_PREFIX);
	ret = tsr_peer_stage_parse(&h, prefix, &e);
	if (ret != 0) {
		if (ret != -EPROTO && ret != -EINVAL)
			abort();
		free(prefix);
		return;
	}
	if (e.participants == 0 || e.participants >= 1u << 20 || e.offset != h.offset ||
	    e.length != h.length || e.state != TSR_STAGE_STAGED)
		abort();
	tsr_peer_stage_pack(&e, again);
	if (memcmp(again, prefix, TSR_PEER_STAGE_PREFIX) != 0)
		abort();
	free(prefix);
}

static void fuzz_list(const uint8_t *data, size_t size)
{
	size_t max = TSR_STAGE_MAX_ENTRIES, n = 0, i;
	struct tsr_stage_entry *out;
	uint32_t len;
	uint8_t *p, *again;
	int ret;

	if (size > 0 && (data[0] & 0x80)) /* a caller with less room */
		max = data[0] & 0x7f;
	if (size > (size_t)TSR_PEER_STAGE_ENTRY * (TSR_STAGE_MAX_ENTRIES + 1))
		size = (size_t)TSR_PEER_STAGE_ENTRY * (TSR_STAGE_MAX_ENTRIES + 1);
	len = (uint32_t)size;
	p = malloc(len ? len : 1);
	out = malloc(TSR_STAGE_MAX_ENTRIES * sizeof(*out));
	if (p == NULL || out == NULL)
		abort();
	memcpy(p, data, len);
	ret = tsr_peer_stage_list_parse(p, len, out, max, &n);
	if (ret != 0) {
		if (ret != -EPROTO && ret != -EMSGSIZE)
			abort();
		if (ret == -EMSGSIZE && (len % TSR_PEER_STAGE_ENTRY || len / TSR_PEER_STAGE_ENTRY <= max))
			abort();
		goto out;
	}
	if (n != len / TSR_PEER_STAGE_ENTRY || len % TSR_PEER_STAGE_ENTRY || n > max)
		abort();
	for (i = 0; i < n; i++) {
		if (out[i].state != TSR_STAGE_STAGED && out[i].state != TSR_STAGE_COMMITTED)
			abort();
		if (out[i].length == 0 || out[i].length % TSR_BLOCK_SIZE ||
		    out[i].offset % TSR_BLOCK_SIZE || out[i].offset + out[i].length < out[i].offset)
			abort();
		if (i > 0 && out[i].txn <= out[i - 1].txn)
			abort();
	}
	again = malloc(len ? len : 1);
	if (again == NULL)
		abort();
	tsr_peer_stage_list_pack(out, n, again);
	if (memcmp(again, p, len) != 0)
		abort();
	free(again);
out:
	free(out);
	free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		fuzz_list(data + 1, size - 1);
	else
		fuzz_prefix(data + 1, size - 1);
	return 0;
}
