/*
 * Decoding untrusted protobuf-c messages and framing them: the one pattern
 * behind every message parser of the control plane (admin API, metadata
 * service), and the length-prefixed frames both send.
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

/*
 * Framing shared by the admin API and the metadata service: a u32
 * big-endian length, then that many bytes of protobuf.
 */
uint32_t tsr_pb_frame_len(const uint8_t hdr[4]);
/* Pack msg into a malloc'd frame.  Errors: -EMSGSIZE larger than max, -ENOMEM. */
int tsr_pb_frame_pack(const ProtobufCMessage *msg, size_t max, uint8_t **frame, size_t *len);

#endif
