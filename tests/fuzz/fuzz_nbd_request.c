/*
 * libFuzzer harness: NBD transmission requests.  The input is a stream of
 * request headers (and payload bytes, skipped as the server skips them);
 * each is parsed with nbd_parse_request and validated with
 * nbd_check_request against a negotiated state taken from the input, and
 * the replies the server would build for it are encoded.
 * Checks: no crash; a request accepted by the validator really is aligned,
 * in range and within the size limits.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nbd/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nbd_tx_state tx;
	uint8_t out[NBD_CHUNK_HDR_LEN + 6 + NBD_MAX_STRING];
	size_t off = 9;

	if (size < 9)
		return 0;
	/* 9 bytes of negotiated state: flags byte, export size. */
	tx.structured = data[0] & 1;
	tx.meta = data[0] & 2;
	tx.tflags = nbd_transmission_flags(tx.structured);
	tx.size = nbd_get64(data + 1) & ~(uint64_t)(NBD_MIN_BLOCK - 1);

	while (off < size) {
		struct nbd_request r;
		uint32_t err;
		int ret = nbd_parse_request(data + off, size - off, &r);

		if (ret <= 0)
			break; /* truncated, or bad magic: the server disconnects */
		off += (size_t)ret;
		err = nbd_check_request(&r, &tx);
		if (err == 0 && r.type != NBD_CMD_DISC && r.type != NBD_CMD_FLUSH) {
			if (r.offset % NBD_MIN_BLOCK || r.len % NBD_MIN_BLOCK)
				abort();
			if (r.offset > tx.size || r.len > tx.size - r.offset)
				abort();
			if ((r.type == NBD_CMD_READ || r.type == NBD_CMD_WRITE) &&
			    r.len > NBD_MAX_BLOCK)
				abort();
			if (r.type > NBD_CMD_BLOCK_STATUS || r.type == NBD_CMD_CACHE)
				abort();
		}
		if (err != 0 && err != NBD_EINVAL && err != NBD_ENOSPC && err != NBD_ENOTSUP)
			abort();
		nbd_encode_simple_reply(out, err, r.handle);
		if (nbd_get64(out + 8) != r.handle)
			abort();
		nbd_encode_error_chunk(out, NBD_REPLY_FLAG_DONE, r.handle, err ? err : NBD_EIO,
				       (const char *)data, (uint16_t)(size < 200 ? size : 200));
		nbd_encode_data_chunk(out, 0, r.handle, r.offset, r.len);
		nbd_encode_hole_chunk(out, NBD_REPLY_FLAG_DONE, r.handle, r.offset, r.len);
		/* a write's payload follows its header: skip it as the server does */
		if (r.type == NBD_CMD_WRITE)
			off += r.len < size - off ? r.len : size - off;
	}
	return 0;
}
