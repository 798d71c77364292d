/*
 * Helpers shared by the libFuzzer harnesses of protobuf-c messages
 * (fuzz_meta_response.c, fuzz_admin_response.c, fuzz_cluster_record.c).
 *
 * fz_check_uuid, fz_check_text: the oracles of the reply and record
 * harnesses, abort() when a field an accepted message hands on breaks the
 * rule: a UUID "" or 8-4-4-4-12 hex digits (the admin reply parser's);
 * text at most max bytes, not empty unless may_be_empty, no control byte.
 *
 * pb_has_unknown: whether msg or any message inside it kept unknown
 * fields.  A harness packs what a parser accepted and parses it again; that
 * round trip holds except with unknown fields: protobuf-c keeps a
 * non-canonical tag 0 (0x80 0x00) as one and packs it back as 0x00, which
 * it then rejects.  Nothing of ours re-sends a parsed message, so that
 * quirk is harmless, and the harnesses skip the round trip for such input.
 */
#ifndef TSR_FUZZ_PB_H
#define TSR_FUZZ_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

static inline void fz_check_uuid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0)
		return;
	if (n != 36)
		abort();
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? c != '-'
			 : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
			     (c >= 'A' && c <= 'F')))
			abort();
	}
}

static inline void fz_check_text(const char *s, size_t max, bool may_be_empty)
{
	size_t n = strlen(s);

	if (n > max || (n == 0 && !may_be_empty))
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			abort();
}

static bool pb_has_unknown(const ProtobufCMessage *msg)
{
	const ProtobufCMessageDescriptor *d;

	if (msg == NULL)
		return false;
	if (msg->n_unknown_fields)
		return true;
	d = msg->descriptor;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const char *base = (const char *)msg;

		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			ProtobufCMessage *const *v =
			    *(ProtobufCMessage *const *const *)(base + f->offset);

			for (size_t k = 0; k < n; k++)
				if (pb_has_unknown(v[k]))
					return true;
			continue;
		}
		/* a member of a oneof is there only when the case says so */
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(base + f->quantifier_offset) != f->id)
			continue;
		if (pb_has_unknown(*(ProtobufCMessage *const *)(base + f->offset)))
			return true;
	}
	return false;
}

#endif
