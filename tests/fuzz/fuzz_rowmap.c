/*
 * libFuzzer harness for the redirect map of an ec chunk volume read at
 * open (engine/store/rowmap.c, rowmap_parse; the format is at the top of
 * rowmap.c: a 4 KiB header "TSRM" with its hdr_crc, then one 4-byte slot
 * word per chunk).  The input is the map file's bytes; the volume's
 * geometry the caller expects is the header's own granule_shift when it is
 * 12..20 (else 16), and as many chunks as the input holds words after the
 * header, at most 4096 (so a shorter or longer header count is met too).
 * Each input is parsed twice: as it is (a bit flip in the header almost
 * always breaks its CRC), and with hdr_crc recomputed so the fuzzer
 * reaches the version, the counts and the slot words.
 * Checks (a damaged map is refused, never taken for another): 0 or
 * -EUCLEAN only; on 0, the header's magic is right, its CRC too or it is a
 * tear of a grow's rewrite (chunks = C, or the CRC of C), bytes 20..4091
 * zero, its shift the expected one, its reserve rowmap_reserve_min..
 * rowmap_reserve_max (min(32, 2 MiB / G)..max(32, 32 MiB / G)), its chunk
 * count from the expected one to ROWMAP_MAX_CHUNKS (a map covers no more:
 * the chunks past it are at home), and the slots in use are exactly
 * as many as the chunks, each inside [0, C) or .row's [0, R): every chunk
 * has a slot of its own.
 * Built with -DTSR_FUZZ=ON and clang-14; run:
 *   fuzz_rowmap -max_total_time=60 tests/fuzz/corpus/fuzz_rowmap
 */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"

#define MAX_CHUNKS 4096u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t popcount_words(const uint64_t *w, uint64_t bits)
{
	uint64_t i, n = 0;

	for (i = 0; i < (bits + 63) / 64; i++)
		n += (uint64_t)__builtin_popcountll(w[i]);
	return n;
}

/* Parse buf as the map of a volume of chunks granules of 2^shift bytes. */
static void check(const uint8_t *buf, size_t len, unsigned shift, uint64_t chunks)
{
	uint64_t home[MAX_CHUNKS / 64 + 1], row[(ROWMAP_RESERVE_BYTES >> ROWMAP_MIN_SHIFT) / 64];
	uint32_t reserve, crc;
	struct rowmap_hdr hdr;
	uint64_t i;
	int ret;

	memset(home, 0xa5, sizeof(home));
	memset(row, 0xa5, sizeof(row));
	ret = rowmap_parse(buf, len, shift, chunks, "fuzz.map", &hdr, home, row);
	if (ret == -EUCLEAN)
		return;
	if (ret != 0)
		abort();
	memcpy(&crc, buf + 4092, 4);
	if (memcmp(buf, "TSRM", 4))
		abort();
	if (crc != tsr_crc32c(0, buf, 4092)) { /* only a grow's tear (grow_torn) */
		uint8_t h[4092];
		uint64_t c = htole64(chunks);

		memcpy(h, buf, sizeof(h));
		memcpy(h + 8, &c, 8);
		if (!hdr.torn || (hdr.chunks != chunks && crc != tsr_crc32c(0, h, sizeof(h))))
			abort();
	}
	for (i = 20; i < 4092; i++)
		if (buf[i])
			abort(); /* the zero area is zero */
	reserve = hdr.reserve;
	if (hdr.shift != shift || reserve < rowmap_reserve_min(shift) ||
	    reserve > rowmap_reserve_max(shift) || hdr.chunks < chunks ||
	    hdr.chunks > ROWMAP_MAX_CHUNKS)
		abort();
	if (popcount_words(home, chunks) + popcount_words(row, reserve) != chunks)
		abort();
	if (chunks % 64 && (home[chunks / 64] >> (chunks % 64)))
		abort(); /* no bit past C */
	if (reserve % 64 && (row[reserve / 64] >> (reserve % 64)))
		abort();
	for (i = 0; i < chunks; i++) {
		uint32_t v;

		memcpy(&v, buf + ROWMAP_HDR + i * 4, 4);
		if (v > chunks && (v - 1 < ROWMAP_ROW_BASE || v - 1 >= ROWMAP_ROW_BASE + reserve))
			abort(); /* a slot that does not exist was accepted */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t chunks = 0;
	unsigned shift = 16;
	uint8_t *buf;
	uint32_t crc;

	if (size >= 8 && data[6] >= ROWMAP_MIN_SHIFT && data[6] <= ROWMAP_MAX_SHIFT && !data[7])
		shift = data[6];
	if (size > ROWMAP_HDR)
		chunks = (size - ROWMAP_HDR) / 4;
	if (chunks > MAX_CHUNKS)
		chunks = MAX_CHUNKS;
	check(data, size, shift, chunks);
	if (size < ROWMAP_HDR)
		return 0;
	buf = malloc(size);
	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	crc = tsr_crc32c(0, buf, 4092);
	memcpy(buf + 4092, &crc, 4);
	check(buf, size, shift, chunks);
	free(buf);
	return 0;
}
