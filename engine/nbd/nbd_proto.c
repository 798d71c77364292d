/*
 * NBD wire protocol: parsing and encoding of every message the server reads
 * or writes (byte offsets in internal.h).  Pure functions: no I/O, no
 * allocation, no global state; every length is checked against the bytes
 * actually present before it is used.  The fuzzers in tests/fuzz/ target
 * this file and nbd_handshake.c.
 */
#include <errno.h>
#include <string.h>

#include "nbd/internal.h"

int nbd_parse_opt_hdr(const uint8_t *buf, size_t len, struct nbd_opt_hdr *out)
{
	if (len < NBD_OPT_HDR_LEN)
		return 0;
	if (nbd_get64(buf) != NBD_OPTS_MAGIC)
		return -EPROTO;
	out->option = nbd_get32(buf + 8);
	out->len = nbd_get32(buf + 12);
	return NBD_OPT_HDR_LEN;
}

int nbd_parse_opt_info(const uint8_t *data, uint32_t len, struct nbd_opt_info *out)
{
	uint32_t name_len, rest;

	/* u32 name length, name, u16 count, count x u16 */
	if (len < 6)
		return -EINVAL;
	name_len = nbd_get32(data);
	if (name_len > len - 6)
		return -EINVAL;
	out->name = data + 4;
	out->name_len = name_len;
	out->nr_requests = nbd_get16(data + 4 + name_len);
	rest = len - 6 - name_len;
	if (rest != 2u * out->nr_requests)
		return -EINVAL;
	out->requests = data + 6 + name_len;
	return 0;
}

int nbd_parse_opt_meta(const uint8_t *data, uint32_t len, struct nbd_opt_meta *out)
{
	uint32_t name_len, pos, i;

	/* u32 name length, name, u32 count, count x (u32 length, query) */
	if (len < 8)
		return -EINVAL;
	name_len = nbd_get32(data);
	if (name_len > len - 8)
		return -EINVAL;
	out->name = data + 4;
	out->name_len = name_len;
	out->nr_queries = nbd_get32(data + 4 + name_len);
	out->queries = data + 8 + name_len;
	out->queries_len = len - 8 - name_len;
	/* Each query takes at least 4 bytes: bounds the loop below. */
	if (out->nr_queries > out->queries_len / 4)
		return -EINVAL;
	for (pos = 0, i = 0; i < out->nr_queries; i++) {
		uint32_t qlen;

		if (out->queries_len - pos < 4)
			return -EINVAL;
		qlen = nbd_get32(out->queries + pos);
		pos += 4;
		if (qlen > out->queries_len - pos)
			return -EINVAL;
		pos += qlen;
	}
	if (pos != out->queries_len)
		return -EINVAL;
	return 0;
}

int nbd_meta_next(const struct nbd_opt_meta *m, uint32_t *pos, const uint8_t **query,
		  uint32_t *query_len)
{
	uint32_t qlen;

	/* nbd_parse_opt_meta checked every bound; stay defensive anyway. */
	if (*pos >= m->queries_len || m->queries_len - *pos < 4)
		return 0;
	qlen = nbd_get32(m->queries + *pos);
	if (qlen > m->queries_len - *pos - 4)
		return 0;
	*query = m->queries + *pos + 4;
	*query_len = qlen;
	*pos += 4 + qlen;
	return 1;
}

enum nbd_meta_match nbd_meta_match(const uint8_t *query, uint32_t len)
{
	static const char base[] = "base:";
	static const char alloc[] = NBD_META_BASE_ALLOCATION;
	const uint8_t *colon;

	if (len > NBD_MAX_STRING)
		return NBD_META_INVALID;
	colon = memchr(query, ':', len);
	if (colon == NULL || colon == query)
		return NBD_META_INVALID;
	if (len == sizeof(base) - 1 && memcmp(query, base, len) == 0)
		return NBD_META_BASE_WILDCARD;
	if (len == sizeof(alloc) - 1 && memcmp(query, alloc, len) == 0)
		return NBD_META_ALLOCATION;
	return NBD_META_NONE;
}

int nbd_parse_request(const uint8_t *buf, size_t len, struct nbd_request *out)
{
	if (len < NBD_REQUEST_LEN)
		return 0;
	if (nbd_get32(buf) != NBD_REQUEST_MAGIC)
		return -EPROTO;
	out->flags = nbd_get16(buf + 4);
	out->type = nbd_get16(buf + 6);
	out->handle = nbd_get64(buf + 8);
	out->offset = nbd_get64(buf + 16);
	out->len = nbd_get32(buf + 24);
	return NBD_REQUEST_LEN;
}

/* Flags each command accepts (FUA is valid on every command once
 * NBD_FLAG_SEND_FUA was sent, which we always send). */
static uint16_t allowed_flags(uint16_t type, uint16_t tflags)
{
	uint16_t f = NBD_CMD_FLAG_FUA;

	switch (type) {
	case NBD_CMD_READ:
		if (tflags & NBD_FLAG_SEND_DF)
			f |= NBD_CMD_FLAG_DF;
		return f;
	case NBD_CMD_WRITE_ZEROES:
		f |= NBD_CMD_FLAG_NO_HOLE;
		if (tflags & NBD_FLAG_SEND_FAST_ZERO)
			f |= NBD_CMD_FLAG_FAST_ZERO;
		return f;
	case NBD_CMD_BLOCK_STATUS:
		return f | NBD_CMD_FLAG_REQ_ONE;
	default:
		return f;
	}
}

uint32_t nbd_check_request(const struct nbd_request *req, const struct nbd_tx_state *tx)
{
	bool past_end;

	switch (req->type) {
	case NBD_CMD_READ:
	case NBD_CMD_WRITE:
	case NBD_CMD_DISC:
	case NBD_CMD_FLUSH:
	case NBD_CMD_TRIM:
	case NBD_CMD_WRITE_ZEROES:
		break;
	case NBD_CMD_BLOCK_STATUS:
		/* Only after SET_META_CONTEXT selected a context (spec: EINVAL). */
		if (!tx->meta)
			return NBD_EINVAL;
		break;
	default:
		return NBD_EINVAL; /* unknown command, and CACHE (not advertised) */
	}
	/* spec: a write to a read-only export SHOULD fail with EPERM */
	if ((tx->tflags & NBD_FLAG_READ_ONLY) &&
	    (req->type == NBD_CMD_WRITE || req->type == NBD_CMD_TRIM ||
	     req->type == NBD_CMD_WRITE_ZEROES))
		return NBD_EPERM;
	if (req->flags & ~allowed_flags(req->type, tx->tflags))
		return NBD_EINVAL;
	/* DISC and FLUSH carry no range ("reserved, MUST be zero"): ignore it. */
	if (req->type == NBD_CMD_DISC || req->type == NBD_CMD_FLUSH)
		return 0;
	if ((req->type == NBD_CMD_READ || req->type == NBD_CMD_WRITE) &&
	    req->len > NBD_MAX_BLOCK)
		return NBD_EINVAL;
	if (req->offset % NBD_MIN_BLOCK || req->len % NBD_MIN_BLOCK)
		return NBD_EINVAL;
	if (req->type == NBD_CMD_BLOCK_STATUS && req->len == 0)
		return NBD_EINVAL;
	past_end = req->offset > tx->size || req->len > tx->size - req->offset;
	if (past_end) {
		/* spec: ENOSPC for writes past the end, EINVAL for the rest */
		if (req->type == NBD_CMD_WRITE || req->type == NBD_CMD_WRITE_ZEROES)
			return NBD_ENOSPC;
		return NBD_EINVAL;
	}
	/* We cannot promise that allocating zeroes is faster than writing. */
	if (req->type == NBD_CMD_WRITE_ZEROES && (req->flags & NBD_CMD_FLAG_FAST_ZERO) &&
	    (req->flags & NBD_CMD_FLAG_NO_HOLE))
		return NBD_ENOTSUP;
	return 0;
}

uint16_t nbd_transmission_flags(bool structured)
{
	/* CAN_MULTI_CONN is true: there is no per-connection cache, and a
	 * flush is an fdatasync of the whole volume, seen by every connection. */
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
		     NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
		     NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_FAST_ZERO;

	/* spec: SEND_DF MUST be clear unless structured replies were negotiated */
	if (structured)
		f |= NBD_FLAG_SEND_DF;
	return f;
}

uint16_t nbd_read_only_flags(uint16_t tflags)
{
	tflags |= NBD_FLAG_READ_ONLY;
	tflags &= (uint16_t)~(NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
			      NBD_FLAG_SEND_FAST_ZERO);
	return tflags;
}

uint32_t nbd_errno_to_nbd(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case 0:
		return 0;
	case EPERM:
	case EACCES:
	case EROFS:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		/* EIO, and whatever else failed underneath (EUCLEAN: bad CRC) */
		return NBD_EIO;
	}
}

size_t nbd_encode_greeting(uint8_t out[NBD_GREETING_LEN])
{
	nbd_put64(out, NBD_MAGIC);
	nbd_put64(out + 8, NBD_OPTS_MAGIC);
	nbd_put16(out + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	return NBD_GREETING_LEN;
}

size_t nbd_encode_opt_reply(uint8_t out[NBD_OPT_REPLY_HDR_LEN], uint32_t option,
			    uint32_t type, uint32_t len)
{
	nbd_put64(out, NBD_REP_MAGIC);
	nbd_put32(out + 8, option);
	nbd_put32(out + 12, type);
	nbd_put32(out + 16, len);
	return NBD_OPT_REPLY_HDR_LEN;
}

size_t nbd_encode_export_name_reply(uint8_t out[NBD_EXPORT_NAME_REPLY_LEN], uint64_t size,
				    uint16_t tflags, bool no_zeroes)
{
	nbd_put64(out, size);
	nbd_put16(out + 8, tflags);
	if (no_zeroes)
		return 10;
	memset(out + 10, 0, 124);
	return NBD_EXPORT_NAME_REPLY_LEN;
}

size_t nbd_encode_info_export(uint8_t out[12], uint64_t size, uint16_t tflags)
{
	nbd_put16(out, NBD_INFO_EXPORT);
	nbd_put64(out + 2, size);
	nbd_put16(out + 10, tflags);
	return 12;
}

size_t nbd_encode_info_block_size(uint8_t out[14], uint32_t min, uint32_t pref, uint32_t max)
{
	nbd_put16(out, NBD_INFO_BLOCK_SIZE);
	nbd_put32(out + 2, min);
	nbd_put32(out + 6, pref);
	nbd_put32(out + 10, max);
	return 14;
}

size_t nbd_encode_simple_reply(uint8_t out[NBD_SIMPLE_REPLY_LEN], uint32_t error,
			       uint64_t handle)
{
	nbd_put32(out, NBD_SIMPLE_REPLY_MAGIC);
	nbd_put32(out + 4, error);
	nbd_put64(out + 8, handle);
	return NBD_SIMPLE_REPLY_LEN;
}

size_t nbd_encode_chunk_hdr(uint8_t out[NBD_CHUNK_HDR_LEN], uint16_t flags, uint16_t type,
			    uint64_t handle, uint32_t payload_len)
{
	nbd_put32(out, NBD_STRUCTURED_REPLY_MAGIC);
	nbd_put16(out + 4, flags);
	nbd_put16(out + 6, type);
	nbd_put64(out + 8, handle);
	nbd_put32(out + 16, payload_len);
	return NBD_CHUNK_HDR_LEN;
}

size_t nbd_encode_data_chunk(uint8_t out[28], uint16_t flags, uint64_t handle,
			     uint64_t offset, uint32_t data_len)
{
	nbd_encode_chunk_hdr(out, flags, NBD_REPLY_TYPE_OFFSET_DATA, handle, 8 + data_len);
	nbd_put64(out + 20, offset);
	return 28;
}

size_t nbd_encode_hole_chunk(uint8_t out[32], uint16_t flags, uint64_t handle,
			     uint64_t offset, uint32_t size)
{
	nbd_encode_chunk_hdr(out, flags, NBD_REPLY_TYPE_OFFSET_HOLE, handle, 12);
	nbd_put64(out + 20, offset);
	nbd_put32(out + 28, size);
	return 32;
}

size_t nbd_encode_error_chunk(uint8_t *out, uint16_t flags, uint64_t handle, uint32_t error,
			      const char *msg, uint16_t msg_len)
{
	if (msg_len > NBD_MAX_STRING)
		msg_len = NBD_MAX_STRING;
	nbd_encode_chunk_hdr(out, flags, NBD_REPLY_TYPE_ERROR, handle, 6u + msg_len);
	nbd_put32(out + 20, error);
	nbd_put16(out + 24, msg_len);
	if (msg_len)
		memcpy(out + 26, msg, msg_len);
	return 26u + msg_len;
}
