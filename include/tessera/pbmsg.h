/*
 * Decoding untrusted protobuf-c messages: the one pattern behind every
 * message parser of the control plane (admin API, metadata service).
 * A parser is a descriptor, a size bound and a check of the decoded fields;
 * this does the rest once.
 */
#ifndef TESSERA_PBMSG_H
#define TESSERA_PBMSG_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/*
 * Decode buf[0, len) as a message of type desc, then run check on it (NULL:
 * no check).  what names the message for the reasons given in *why, e.g.
 * kind "request" and type "an admin.proto Request" give "request too large"
 * and "malformed request (not an admin.proto Request)".  On success *out is to
 * be freed with protobuf_c_message_free_unpacked(*out, NULL).
 * Errors: -EMSGSIZE len > max; -EINVAL not decodable, or the error check
 * returned (with its own *why); -ENOMEM is reported as -EINVAL by protobuf-c.
 */
int tsr_pb_parse(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
		 size_t max, const char *kind, const char *type,
		 int (*check)(const ProtobufCMessage *msg, const char **why),
		 ProtobufCMessage **out, const char **why);

#endif
