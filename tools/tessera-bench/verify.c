/*
 * The --verify=crc32c block pattern: a header naming the block's offset and
 * write generation, sealed with a CRC32C over everything after the CRC
 * field.  A misdirected write shows as a wrong offset, a lost write as an
 * old generation, a torn or corrupted block as a CRC mismatch.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "tessera/common.h"
#include "bench.h"

void bench_verify_fill(void *buf, uint32_t bs, uint64_t offset, uint32_t gen, uint64_t seed)
{
	uint8_t *p = buf;

	tsr_put_le32(p + 0, BENCH_VERIFY_MAGIC);
	tsr_put_le64(p + 8, offset);
	tsr_put_le32(p + 16, gen);
	tsr_put_le32(p + 20, bs);
	tsr_put_le64(p + 24, seed);
	tsr_put_le32(p + 4, tsr_crc32c(0, p + 8, bs - 8));
}

int bench_verify_check(const void *buf, uint32_t bs, uint64_t offset, uint32_t gen, char *msg,
		       size_t msglen)
{
	const uint8_t *p = buf;
	uint32_t magic = tsr_get_le32(p), crc, want_crc, hgen, hbs;
	uint64_t hoff;

	if (magic != BENCH_VERIFY_MAGIC) {
		snprintf(msg, msglen,
			 "offset %" PRIu64 ": bad header magic: expected 0x%08x, actual 0x%08x "
			 "(block never written with --verify, or overwritten)", offset,
			 BENCH_VERIFY_MAGIC, magic);
		return -EILSEQ;
	}
	hbs = tsr_get_le32(p + 20);
	if (hbs != bs) {
		snprintf(msg, msglen,
			 "offset %" PRIu64 ": block written with bs=%u, expected bs=%u", offset,
			 hbs, bs);
		return -EILSEQ;
	}
	crc = tsr_get_le32(p + 4);
	want_crc = tsr_crc32c(0, p + 8, bs - 8);
	if (crc != want_crc) {
		snprintf(msg, msglen,
			 "offset %" PRIu64 ": crc32c mismatch: expected 0x%08x (stored), actual "
			 "0x%08x (computed over the data read)", offset, crc, want_crc);
		return -EILSEQ;
	}
	hoff = tsr_get_le64(p + 8);
	if (hoff != offset) {
		snprintf(msg, msglen,
			 "offset %" PRIu64 ": block belongs elsewhere: expected offset %" PRIu64
			 ", actual %" PRIu64, offset, offset, hoff);
		return -EILSEQ;
	}
	hgen = tsr_get_le32(p + 16);
	if (gen != 0 && hgen != gen) {
		snprintf(msg, msglen,
			 "offset %" PRIu64 ": stale data: expected write generation %u, actual %u",
			 offset, gen, hgen);
		return -EILSEQ;
	}
	return 0;
}
