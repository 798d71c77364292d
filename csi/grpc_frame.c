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

/* Well-formed UTF-8 (no overlong forms, surrogates or values past U+10FFFF)? */
static bool utf8_valid(const unsigned char *s)
{
	while (*s) {
		unsigned c = *s, n, cp, i;

		if (c < 0x80) {
			s++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, cp = c & 0x07;
		else
			return false;
		for (i = 1; i <= n; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i] & 0x3f);
		}
		if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return false;
		s += n + 1;
	}
	return true;
}

/*
 * proto3 strings must be UTF-8 (other gRPC implementations refuse a request
 * that breaks this; protobuf-c does not check): every string field, in
 * repeated fields, oneofs, map entries and nested messages.
 */
static bool strings_valid(const ProtobufCMessage *m, unsigned depth)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;
	unsigned i;

	if (depth > 32)
		return false;
	for (i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		size_t n = 1, k;
		const void *const *items;

		if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
				continue;
		}
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			n = *(const size_t *)(base + f->quantifier_offset);
			items = *(const void *const *const *)(base + f->offset);
		} else {
			items = (const void *const *)(base + f->offset);
		}
		for (k = 0; k < n; k++) {
			const void *item = items[k];

			if (item == NULL)
				continue;
			if (f->type == PROTOBUF_C_TYPE_STRING) {
				if (!utf8_valid(item))
					return false;
			} else if (!strings_valid(item, depth + 1)) {
				return false;
			}
		}
	}
	return true;
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
	if (!strings_valid(m, 0)) {
		protobuf_c_message_free_unpacked(m, NULL);
		return -EINVAL;
	}
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
	    "OK",
	    "CANCELLED",
	    "UNKNOWN",
	    "INVALID_ARGUMENT",
	    "DEADLINE_EXCEEDED",
	    "NOT_FOUND",
	    "ALREADY_EXISTS",
	    "PERMISSION_DENIED",
	    "RESOURCE_EXHAUSTED",
	    "FAILED_PRECONDITION",
	    "ABORTED",
	    "OUT_OF_RANGE",
	    "UNIMPLEMENTED",
	    "INTERNAL",
	    "UNAVAILABLE",
	    "DATA_LOSS",
	    "UNAUTHENTICATED",
	};

	if (code < 0 || (size_t)code >= sizeof(names) / sizeof(names[0]))
		return "?";
	return names[code];
}
