/*
 * Payload compression of the site stream (site.h, "payload compression"):
 * WRITE payloads as one LZ4 block (liblz4) or one zstd frame at level 1
 * (libzstd), chosen per stream in VOLUME_OPEN.  A codec belongs to one
 * thread: the source's worker compresses, the target session's worker
 * decompresses.  Decompression trusts nothing: the output is bounded by the
 * header's length and must fill it exactly.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <zstd.h>

#include "tessera/site.h"

#define ZSTD_LEVEL 1

struct tsr_site_codec {
	unsigned algo;    /* TSR_SITE_COMPRESS_LZ4 or _ZSTD, fixed at create */
	ZSTD_CCtx *cctx;  /* zstd: created on the first compress, reused */
	ZSTD_DCtx *dctx;  /* zstd: created on the first decompress, reused */
};

const char *tsr_site_compress_name(unsigned algo)
{
	switch (algo) {
	case TSR_SITE_COMPRESS_NONE: return "none";
	case TSR_SITE_COMPRESS_LZ4: return "lz4";
	case TSR_SITE_COMPRESS_ZSTD: return "zstd";
	default: return "unknown";
	}
}

int tsr_site_compress_parse(const char *s, uint8_t *out)
{
	for (unsigned a = 0; a <= TSR_SITE_COMPRESS_MAX; a++) {
		if (strcmp(s, tsr_site_compress_name(a)) == 0) {
			*out = (uint8_t)a;
			return 0;
		}
	}
	return -EINVAL;
}

int tsr_site_codec_create(unsigned algo, struct tsr_site_codec **out)
{
	struct tsr_site_codec *c;

	if (algo != TSR_SITE_COMPRESS_LZ4 && algo != TSR_SITE_COMPRESS_ZSTD)
		return -EPROTONOSUPPORT;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->algo = algo;
	*out = c;
	return 0;
}

void tsr_site_codec_destroy(struct tsr_site_codec *c)
{
	if (c == NULL)
		return;
	ZSTD_freeCCtx(c->cctx);
	ZSTD_freeDCtx(c->dctx);
	free(c);
}

uint32_t tsr_site_compress(struct tsr_site_codec *c, const void *src, uint32_t len, void *dst,
			   uint32_t cap)
{
	size_t n;

	if (len == 0 || len > TSR_SITE_MAX_DATA)
		return 0;
	if (cap >= len)
		cap = len - 1; /* only a smaller form is worth sending */
	if (cap == 0)
		return 0;
	if (c->algo == TSR_SITE_COMPRESS_LZ4) {
		int r = LZ4_compress_default(src, dst, (int)len, (int)cap);

		return r > 0 ? (uint32_t)r : 0; /* 0: does not fit in cap */
	}
	if (c->cctx == NULL) {
		c->cctx = ZSTD_createCCtx();
		if (c->cctx == NULL)
			return 0; /* no memory: send it raw */
	}
	n = ZSTD_compressCCtx(c->cctx, dst, cap, src, len, ZSTD_LEVEL);
	return ZSTD_isError(n) || n == 0 || n >= len ? 0 : (uint32_t)n;
}

int tsr_site_decompress(struct tsr_site_codec *c, const void *src, uint32_t wire_len,
			void *dst, uint32_t length)
{
	unsigned long long fsize;
	size_t n;

	if (wire_len == 0 || length == 0 || length > TSR_SITE_MAX_DATA)
		return -EBADMSG;
	if (c->algo == TSR_SITE_COMPRESS_LZ4) {
		int r = LZ4_decompress_safe(src, dst, (int)wire_len, (int)length);

		return r == (int)length ? 0 : -EBADMSG;
	}
	/* the frame states its content size (ZSTD_compressCCtx writes it): it
	 * must be the header's length before any byte is produced */
	fsize = ZSTD_getFrameContentSize(src, wire_len);
	if (fsize != length)
		return -EBADMSG;
	if (ZSTD_findFrameCompressedSize(src, wire_len) != wire_len)
		return -EBADMSG; /* trailing bytes, or a frame cut short */
	if (c->dctx == NULL) {
		c->dctx = ZSTD_createDCtx();
		if (c->dctx == NULL)
			return -ENOMEM;
	}
	n = ZSTD_decompressDCtx(c->dctx, dst, length, src, wire_len);
	return !ZSTD_isError(n) && n == length ? 0 : -EBADMSG;
}
