/*
 * libFuzzer harness for the site stream's payload decompression
 * (engine/site/site_compress.c, tsr_site_decompress): the bytes of a
 * compressed WRITE come from the other site, the length from its header.
 * Input: byte 0 bit 0 chooses the codec (0 lz4, 1 zstd); bytes 1..4 the
 * header's length (little endian, taken modulo TSR_SITE_MAX_DATA + 2, so 0
 * and one past the limit come up too); the rest is the payload (wire_len =
 * its size), in its own heap copy of exactly that size (ASan sees
 * overreads).  The output buffer has length bytes and then a guard of
 * GUARD bytes of a known pattern.
 * Checks: 0, -EBADMSG or -ENOMEM only; the guard is intact whatever the
 * result (the output stays within the stated length); the codecs live for
 * the whole run as a session's do, so a failure must not spoil the next
 * call: the payload, taken as data, compressed by tsr_site_compress (when
 * it gets smaller) decompresses to the same bytes, and to -EBADMSG for a
 * length one less or one more.
 * Built with -DTSR_FUZZ=ON and clang-14; run:
 *   fuzz_site_decompress -max_total_time=60 tests/fuzz/corpus/fuzz_site_decompress
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/site.h"

#define GUARD      64
#define GUARD_BYTE 0xa5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct tsr_site_codec *codec(unsigned i)
{
	static struct tsr_site_codec *codecs[2];

	if (codecs[i] == NULL &&
	    tsr_site_codec_create(i == 0 ? TSR_SITE_COMPRESS_LZ4 : TSR_SITE_COMPRESS_ZSTD,
				  &codecs[i]) < 0)
		abort();
	return codecs[i];
}

/* Decompress into a buffer of length bytes and a guard; the result. */
static int decompress(struct tsr_site_codec *c, const uint8_t *src, uint32_t wire_len,
		      uint32_t length, uint8_t **out)
{
	uint8_t *dst = malloc((size_t)length + GUARD);
	int ret;

	if (dst == NULL)
		abort();
	memset(dst + length, GUARD_BYTE, GUARD);
	ret = tsr_site_decompress(c, src, wire_len, dst, length);
	if (ret != 0 && ret != -EBADMSG && ret != -ENOMEM)
		abort();
	for (unsigned i = 0; i < GUARD; i++)
		if (dst[length + i] != GUARD_BYTE)
			abort(); /* a byte past the stated length */
	if (out != NULL && ret == 0) {
		*out = dst;
		return 0;
	}
	free(dst);
	return ret;
}

/* The encoder's output for the payload taken as data goes back exactly. */
static void round_trip(struct tsr_site_codec *c, const uint8_t *p, uint32_t len)
{
	uint8_t *wire, *back = NULL;
	uint32_t n;

	if (len == 0 || len > TSR_SITE_MAX_DATA)
		return;
	wire = malloc(len);
	if (wire == NULL)
		abort();
	n = tsr_site_compress(c, p, len, wire, len);
	if (n >= len)
		abort(); /* only a smaller form is sent */
	if (n > 0) {
		int ret = decompress(c, wire, n, len, &back);

		if (ret == -ENOMEM)
			goto out;
		if (ret != 0 || memcmp(back, p, len) != 0)
			abort();
		free(back);
		if (decompress(c, wire, n, len - 1, NULL) == 0 ||
		    (len < TSR_SITE_MAX_DATA && decompress(c, wire, n, len + 1, NULL) == 0))
			abort(); /* another length than the data's */
	}
out:
	free(wire);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tsr_site_codec *c;
	uint32_t length = 0;
	uint8_t *payload;
	size_t wire_len;

	if (size < 5)
		return 0;
	c = codec(data[0] & 1);
	for (int i = 0; i < 4; i++)
		length |= (uint32_t)data[1 + i] << (8 * i);
	length %= TSR_SITE_MAX_DATA + 2;
	wire_len = size - 5;
	if (wire_len > TSR_SITE_MAX_DATA)
		return 0;
	payload = malloc(wire_len ? wire_len : 1);
	if (payload == NULL)
		abort();
	memcpy(payload, data + 5, wire_len);
	(void)decompress(c, payload, (uint32_t)wire_len, length, NULL);
	round_trip(c, payload, (uint32_t)wire_len);
	free(payload);
	return 0;
}
