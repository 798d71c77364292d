/*
 * tsr_pb_parse: size bound, decode, field check, in that order, for every
 * control-plane message read from a socket (include/tessera/pbmsg.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "tessera/pbmsg.h"

int tsr_pb_parse(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
		 size_t max, const char *kind, const char *type,
		 int (*check)(const ProtobufCMessage *msg, const char **why),
		 ProtobufCMessage **out, const char **why)
{
	/* reasons are static strings: one per kind and type would need a table */
	static __thread char reason[128];
	ProtobufCMessage *msg;
	const char *dummy;
	int ret;

	if (why == NULL)
		why = &dummy;
	*out = NULL;
	if (len > max) {
		snprintf(reason, sizeof(reason), "%s too large", kind);
		*why = reason;
		return -EMSGSIZE;
	}
	msg = protobuf_c_message_unpack(desc, NULL, len, buf);
	if (msg == NULL) {
		snprintf(reason, sizeof(reason), "malformed %s (not %s)", kind, type);
		*why = reason;
		return -EINVAL;
	}
	ret = check ? check(msg, why) : 0;
	if (ret) {
		protobuf_c_message_free_unpacked(msg, NULL);
		return ret;
	}
	*out = msg;
	return 0;
}

uint32_t tsr_pb_frame_len(const uint8_t hdr[4])
{
	return (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
}

int tsr_pb_frame_pack(const ProtobufCMessage *msg, size_t max, uint8_t **frame, size_t *len)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf;

	if (n > max)
		return -EMSGSIZE;
	buf = malloc(4 + n);
	if (buf == NULL)
		return -ENOMEM;
	buf[0] = (uint8_t)(n >> 24);
	buf[1] = (uint8_t)(n >> 16);
	buf[2] = (uint8_t)(n >> 8);
	buf[3] = (uint8_t)n;
	protobuf_c_message_pack(msg, buf + 4);
	*frame = buf;
	*len = 4 + n;
	return 0;
}
