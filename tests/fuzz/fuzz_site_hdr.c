/*
 * libFuzzer harness: site protocol frames (include/tessera/site.h):
 * tsr_site_hdr_parse and, behind an accepted header, the parser of its
 * payload (HELLO, VOLUME_OPEN, SNAPSHOT, ERROR) and tsr_site_data_check;
 * DIGEST (opcode 11) and the VOLUME_OPEN request's DIGEST flag are held to
 * their field rules.  A WRITE with flag COMPRESSED (0x08) must have
 * 1 <= wire_len < length and payload_len = wire_len (the flag and wire_len
 * nowhere else); its payload goes through both decompressors (lz4, zstd)
 * into a buffer of exactly length bytes: 0 or -EBADMSG, never a byte past
 * it (ASan).  VOLUME_OPEN's compression byte: a known algorithm or
 * -EPROTONOSUPPORT.  MARKER (opcode 12, consistency groups): seq, offset
 * (the marker number) and stream non-zero, payload through
 * tsr_site_marker_parse (member count 1..64); a VOLUME_OPEN with a group
 * carries a member count 1..64, one without a group 0.
 * Each 64-byte piece of the input is parsed twice: as it is (the checksum
 * almost always rejects it), and with its hdr_crc recomputed so the fuzzer
 * reaches the field checks.  When the bytes after an accepted header hold
 * its payload, the payload is parsed from its own heap copy (ASan sees any
 * overread).  The layout string parser also gets the raw input.
 * Checks: no crash; only the documented errnos; an accepted header packs
 * back to the same bytes and keeps its documented bounds; an accepted
 * payload packs back to the same bytes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/site.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_err(int ret, int a, int b)
{
	if (ret != 0 && ret != a && ret != b)
		abort();
}

/* A compressed WRITE's payload through each decompressor. */
static void check_decompress(const struct tsr_site_hdr *h, const uint8_t *p)
{
	static struct tsr_site_codec *codecs[2];
	uint8_t *out = malloc(h->length);

	if (out == NULL)
		abort();
	for (unsigned i = 0; i < 2; i++) {
		int ret;

		if (codecs[i] == NULL &&
		    tsr_site_codec_create(i == 0 ? TSR_SITE_COMPRESS_LZ4 : TSR_SITE_COMPRESS_ZSTD,
					  &codecs[i]) < 0)
			abort();
		ret = tsr_site_decompress(codecs[i], p, h->wire_len, out, h->length);
		check_err(ret, -EBADMSG, -ENOMEM);
	}
	free(out);
}

static void check_payload(const struct tsr_site_hdr *h, const uint8_t *p)
{
	uint8_t again[TSR_SITE_ERROR_MAX + TSR_SITE_HELLO_MAX]; /* the largest of them */
	uint32_t len = h->payload_len;
	int ret;

	(void)tsr_site_data_check(h, p);
	switch (h->opcode) {
	case TSR_SITE_HELLO: {
		struct tsr_site_hello m;

		ret = tsr_site_hello_parse(p, len, &m);
		check_err(ret, -EPROTO, -EINVAL);
		if (ret == 0 && (tsr_site_hello_pack(&m, again) != (int)len ||
				 memcmp(again, p, len) != 0))
			abort();
		break;
	}
	case TSR_SITE_VOLUME_OPEN: {
		struct tsr_site_open m;

		ret = tsr_site_open_parse(p, len, &m);
		if (ret == -EPROTONOSUPPORT && p[2] <= TSR_SITE_COMPRESS_MAX)
			abort();
		if (ret != -EPROTONOSUPPORT)
			check_err(ret, -EPROTO, -EINVAL);
		if (ret == 0 && ((m.parsed.replicas == 0) == (m.parsed.ec_k == 0) ||
				 m.compress > TSR_SITE_COMPRESS_MAX ||
				 (m.group[0] != '\0') != (m.members != 0) ||
				 m.members > TSR_SITE_GROUP_MAX ||
				 tsr_site_open_pack(&m, again) != (int)len ||
				 memcmp(again, p, len) != 0))
			abort();
		break;
	}
	case TSR_SITE_MARKER: {
		struct tsr_site_marker m;

		ret = tsr_site_marker_parse(p, len, &m);
		check_err(ret, -EPROTO, -EINVAL);
		if (ret == 0 && (m.members == 0 || m.members > TSR_SITE_GROUP_MAX ||
				 tsr_site_marker_pack(&m, again) != (int)len ||
				 memcmp(again, p, len) != 0))
			abort();
		break;
	}
	case TSR_SITE_SNAPSHOT: {
		char name[TSR_SITE_NAME_MAX + 1];

		ret = tsr_site_snap_parse(p, len, name);
		check_err(ret, -EPROTO, -EINVAL);
		if (ret == 0 && (tsr_site_snap_pack(name, again) != (int)len ||
				 memcmp(again, p, len) != 0))
			abort();
		break;
	}
	case TSR_SITE_ERROR: {
		struct tsr_site_error m;

		ret = tsr_site_error_parse(p, len, &m);
		check_err(ret, -EPROTO, -EINVAL);
		if (ret == 0 && (m.code <= 0 || m.code > 4095 ||
				 tsr_site_error_pack(&m, again) != (int)len ||
				 memcmp(again, p, len) != 0))
			abort();
		break;
	}
	case TSR_SITE_WRITE:
		if (h->flags & TSR_SITE_F_COMPRESSED)
			check_decompress(h, p);
		break;
	default:
		break;
	}
}

/* 0 and *h when buf is an accepted header. */
static int check(const uint8_t *buf, struct tsr_site_hdr *h)
{
	uint8_t again[TSR_SITE_HDR_SIZE];
	int ret = tsr_site_hdr_parse(buf, h);

	if (ret != 0) {
		if (ret != -EBADMSG && ret != -EPROTO && ret != -EMSGSIZE &&
		    ret != -EPROTONOSUPPORT)
			abort();
		return ret;
	}
	tsr_site_hdr_pack(h, again);
	if (memcmp(again, buf, TSR_SITE_HDR_SIZE) != 0)
		abort();
	if (h->opcode < TSR_SITE_HELLO || h->opcode > TSR_SITE_MARKER)
		abort();
	if (h->payload_len > TSR_SITE_MAX_DATA || (h->payload_len == 0 && h->data_crc != 0))
		abort();
	if (h->opcode != TSR_SITE_WRITE && h->opcode != TSR_SITE_DIGEST &&
	    h->payload_len > TSR_SITE_ERROR_MAX)
		abort();
	if ((h->opcode == TSR_SITE_WRITE || h->opcode == TSR_SITE_ZERO) &&
	    (h->seq == 0 || h->stream == 0 || h->length == 0 || h->length % TSR_BLOCK_SIZE ||
	     h->offset % TSR_BLOCK_SIZE || h->offset + h->length < h->offset))
		abort();
	if ((h->flags & TSR_SITE_F_REPLY) && h->opcode != TSR_SITE_HELLO &&
	    h->opcode != TSR_SITE_VOLUME_OPEN)
		abort();
	if ((h->flags & TSR_SITE_F_REPLAY) &&
	    (h->opcode != TSR_SITE_VOLUME_OPEN || !(h->flags & TSR_SITE_F_REPLY)))
		abort();
	if ((h->flags & TSR_SITE_F_DIGEST) &&
	    (h->opcode != TSR_SITE_VOLUME_OPEN || (h->flags & TSR_SITE_F_REPLY)))
		abort();
	if (h->opcode == TSR_SITE_DIGEST &&
	    (h->stream == 0 || h->seq != 0 || h->offset % TSR_SITE_DIGEST_REGION ||
	     h->length % TSR_SITE_DIGEST_LEN || h->payload_len != h->length || h->flags))
		abort();
	if ((h->flags & TSR_SITE_F_COMPRESSED) && h->opcode != TSR_SITE_WRITE)
		abort();
	if (!(h->flags & TSR_SITE_F_COMPRESSED) && h->wire_len != 0)
		abort();
	if (h->opcode == TSR_SITE_WRITE &&
	    ((h->flags & TSR_SITE_F_COMPRESSED) ?
	     h->wire_len == 0 || h->wire_len >= h->length || h->payload_len != h->wire_len :
	     h->payload_len != h->length))
		abort();
	if (h->opcode == TSR_SITE_MARKER &&
	    (h->seq == 0 || h->stream == 0 || h->offset == 0 || h->flags ||
	     h->payload_len != h->length || h->length < 5 || h->length > TSR_SITE_MARKER_MAX))
		abort();
	if ((h->opcode == TSR_SITE_SYNC_BEGIN || h->opcode == TSR_SITE_SYNC_END) &&
	    (h->seq == 0 || h->stream == 0 || h->offset != 0 || h->length != 0 ||
	     h->payload_len != 0))
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t buf[TSR_SITE_HDR_SIZE];
	struct tsr_site_hdr h;
	size_t off;

	{
		char s[40];
		struct tsr_site_layout l;
		size_t n = size < sizeof(s) - 1 ? size : sizeof(s) - 1;

		memcpy(s, data, n);
		s[n] = '\0';
		if (tsr_site_layout_parse(s, &l) == 0 &&
		    (l.replicas > 8 || l.ec_k > 16 || l.ec_m > 4 ||
		     (l.replicas == 0) == (l.ec_k == 0)))
			abort();
	}
	for (off = 0; off + TSR_SITE_HDR_SIZE <= size; off += TSR_SITE_HDR_SIZE) {
		uint32_t crc;

		memcpy(buf, data + off, TSR_SITE_HDR_SIZE);
		check(buf, &h);
		crc = tsr_crc32c(0, buf, 60);
		buf[60] = (uint8_t)crc;
		buf[61] = (uint8_t)(crc >> 8);
		buf[62] = (uint8_t)(crc >> 16);
		buf[63] = (uint8_t)(crc >> 24);
		if (check(buf, &h) == 0 && h.payload_len > 0 &&
		    size - off - TSR_SITE_HDR_SIZE >= h.payload_len) {
			uint8_t *p = malloc(h.payload_len);

			if (p == NULL)
				abort();
			memcpy(p, data + off + TSR_SITE_HDR_SIZE, h.payload_len);
			check_payload(&h, p);
			free(p);
			off += h.payload_len;
		}
	}
	return 0;
}
