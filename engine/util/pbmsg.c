/*
 * tsr_pb_parse: size bound, decode, field check, in that order, for every
 * control-plane message read from a socket (include/tessera/pbmsg.h).
 */
#include <errno.h>
#include <stdio.h>

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
