/*
 * gRPC framing without I/O: the 5-byte length prefix of a message, protobuf
 * decoding of a request, the grpc-message percent-encoding and status names.
 * Every request body read from a client goes through grpc_frame_parse() and
 * then grpc_msg_decode() before a handler sees it (tests/fuzz/fuzz_grpc_*).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

int grpc_frame_parse(const uint8_t *buf, size_t len, size_t max, struct grpc_frame *out)
{
	uint32_t n;

	if (len < GRPC_FRAME_HDR)
		return -EINVAL;
	if (buf[0] > 1)
		return -EINVAL;
	n = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | buf[4];
	if (n > max)
		return -EMSGSIZE;
	if (len - GRPC_FRAME_HDR != n)
		return -EINVAL; /* truncated, or a second message in a unary call */
	if (buf[0] == 1)
		return -ENOTSUP;
	out->compressed = false;
	out->msg = buf + GRPC_FRAME_HDR;
	out->len = n;
	return 0;
}

void grpc_frame_header(uint8_t hdr[GRPC_FRAME_HDR], uint32_t len)
{
	hdr[0] = 0;
	hdr[1] = (uint8_t)(len >> 24);
	hdr[2] = (uint8_t)(len >> 16);
	hdr[3] = (uint8_t)(len >> 8);
	hdr[4] = (uint8_t)len;
}

int grpc_msg_decode(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
		    ProtobufCMessage **out)
{
	ProtobufCMessage *m;

	if (len > CSI_MAX_MSG)
		return -EMSGSIZE;
	m = protobuf_c_message_unpack(desc, NULL, len, buf);
	if (m == NULL)
		return -EINVAL;
	*out = m;
	return 0;
}

size_t grpc_percent_encode(const char *in, char *out, size_t out_len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	if (out_len == 0)
		return 0;
	for (; *in; in++) {
		unsigned char ch = (unsigned char)*in;

		if (ch >= 0x20 && ch <= 0x7e && ch != '%') {
			if (o + 1 >= out_len)
				break;
			out[o++] = (char)ch;
		} else {
			if (o + 3 >= out_len)
				break;
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	out[o] = '\0';
	return o;
}

const char *grpc_code_name(int code)
{
	static const char *const names[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
		"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
		"UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
	};

	if (code < 0 || (size_t)code >= sizeof(names) / sizeof(names[0]))
		return "?";
	return names[code];
}
