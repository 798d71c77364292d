/*
 * The --verify=crc32c block pattern: a header naming the block's offset and
 * write generation, sealed with a CRC32C over everything after the CRC
 * field.  A misdirected write shows as a wrong offset, a lost write as an
 * old generation, a torn or corrupted block as a CRC mismatch.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "tessera/common.h"
#include "bench.h"

static void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

void bench_verify_fill(void *buf, uint32_t bs, uint64_t offset, uint32_t gen, uint64_t seed)
{
	uint8_t *p = buf;

	put32(p + 0, BENCH_VERIFY_MAGIC);
	put64(p + 8, offset);
	put32(p + 16, gen);
	put32(p + 20, bs);
	put64(p + 24, seed);
	put32(p + 4, tsr_crc32c(0, p + 8, bs - 8));
}

int bench_verify_check(const void *buf, uint32_t bs, uint64_t offset, uint32_t gen, char *msg,
		       size_t msglen)
{
	const uint8_t *p = buf;
	uint32_t magic = get32(p), crc, want_crc, hgen, hbs;
	uint64_t hoff;

	if (magic != BENCH_VERIFY_MAGIC) {
		snprintf(msg, msglen,
			 "offset %" PRIu64 ": bad header magic: expected 0x%08x, actual 0x%08x "
			 "(block never written with --verify, or overwritten)", offset,
			 BENCH_VERIFY_MAGIC, magic);
		return -EILSEQ;
	}
	hbs = get32(p + 20);
	if (hbs != bs) {
		snprintf(msg, msglen,
			 "offset %" PRIu64 ": block written with bs=%u, expected bs=%u", offset,
			 hbs, bs);
		return -EILSEQ;
	}
	crc = get32(p + 4);
	want_crc = tsr_crc32c(0, p + 8, bs - 8);
	if (crc != want_crc) {
		snprintf(msg, msglen,
			 "offset %" PRIu64 ": crc32c mismatch: expected 0x%08x (stored), actual "
			 "0x%08x (computed over the data read)", offset, crc, want_crc);
		return -EILSEQ;
	}
	hoff = get64(p + 8);
	if (hoff != offset) {
		snprintf(msg, msglen,
			 "offset %" PRIu64 ": block belongs elsewhere: expected offset %" PRIu64
			 ", actual %" PRIu64, offset, offset, hoff);
		return -EILSEQ;
	}
	hgen = get32(p + 16);
	if (gen != 0 && hgen != gen) {
		snprintf(msg, msglen,
			 "offset %" PRIu64 ": stale data: expected write generation %u, actual %u",
			 offset, gen, hgen);
		return -EILSEQ;
	}
	return 0;
}
