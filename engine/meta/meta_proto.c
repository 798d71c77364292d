/*
 * Meta service messages (proto/meta.proto explains the format): framing and
 * the one parsing function per direction that everything read from a socket
 * goes through.  protobuf-c checks the wire format; these functions check
 * what the code after them relies on: exactly one op, valid keys, bounded
 * values, strings and counts, error codes in range.  tesserad recognises the
 * protocol by its first 4 bytes, TSR_META_MAGIC ("TSRM").
 * tests/fuzz/fuzz_meta_request.c targets meta_request_parse.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "meta/internal.h"
#include "tessera/pbmsg.h"

uint32_t meta_frame_len(const uint8_t hdr[4])
{
	return tsr_pb_frame_len(hdr);
}

int meta_frame_pack(const ProtobufCMessage *msg, uint8_t **frame, size_t *len)
{
	return tsr_pb_frame_pack(msg, META_MAX_FRAME, frame, len);
}

/* A bounded string of printable ASCII (protobuf-c gives "" for an absent one). */
static bool valid_text(const char *s, size_t max)
{
	size_t n;

	if (s == NULL)
		return false;
	for (n = 0; s[n]; n++)
		if (n >= max || s[n] < 0x20 || s[n] > 0x7e)
			return false;
	return true;
}

static bool valid_value(const ProtobufCBinaryData *v)
{
	return v->len <= TSR_META_MAX_VALUE && (v->len == 0 || v->data != NULL);
}

static int check_request(const Tessera__Meta__Request *req, const char **why)
{
	switch (req->op_case) {
	case TESSERA__META__REQUEST__OP_HELLO:
		if (req->hello == NULL)
			break;
		if (!valid_text(req->hello->token, META_MAX_TOKEN)) {
			*why = "malformed token";
			return -EINVAL;
		}
		return 0;
	case TESSERA__META__REQUEST__OP_GET:
		if (req->get == NULL)
			break;
		if (!meta_key_valid(req->get->key))
			goto bad_key;
		return 0;
	case TESSERA__META__REQUEST__OP_RANGE:
		if (req->range == NULL)
			break;
		if (!meta_prefix_valid(req->range->prefix) ||
		    !meta_prefix_valid(req->range->start_after))
			goto bad_key;
		return 0;
	case TESSERA__META__REQUEST__OP_CAS:
		if (req->cas == NULL)
			break;
		if (!meta_key_valid(req->cas->key))
			goto bad_key;
		if (!valid_value(&req->cas->value)) {
			*why = "value larger than 64 KiB";
			return -EINVAL;
		}
		return 0;
	case TESSERA__META__REQUEST__OP_DELETE:
		if (req->delete_ == NULL)
			break;
		if (!meta_key_valid(req->delete_->key))
			goto bad_key;
		return 0;
	case TESSERA__META__REQUEST__OP_WATCH:
		if (req->watch == NULL)
			break;
		if (!meta_prefix_valid(req->watch->prefix))
			goto bad_key;
		return 0;
	case TESSERA__META__REQUEST__OP_LEASE_GRANT:
		if (req->lease_grant == NULL)
			break;
		if (req->lease_grant->ttl_ms < 100) {
			*why = "lease TTL below 100 ms";
			return -EINVAL;
		}
		return 0;
	case TESSERA__META__REQUEST__OP_LEASE_KEEPALIVE:
		if (req->lease_keepalive == NULL)
			break;
		return 0;
	case TESSERA__META__REQUEST__OP_LEASE_REVOKE:
		if (req->lease_revoke == NULL)
			break;
		return 0;
	default:
		*why = "no op, or an op this meta service does not know (version mismatch?)";
		return -EINVAL;
	}
	*why = "malformed op";
	return -EINVAL;
bad_key:
	*why = "invalid key or prefix: use up to 255 printable ASCII characters";
	return -EINVAL;
}

static int check_request_msg(const ProtobufCMessage *msg, const char **why)
{
	return check_request((const Tessera__Meta__Request *)msg, why);
}

int meta_request_parse(const uint8_t *buf, size_t len, Tessera__Meta__Request **out,
		       const char **why)
{
	return tsr_pb_parse(&tessera__meta__request__descriptor, buf, len, META_MAX_FRAME,
			    "request", "a meta.proto Request", check_request_msg,
			    (ProtobufCMessage **)out, why);
}

static int check_response(const Tessera__Meta__Response *resp, const char **why)
{
	if (resp->error > 0 || resp->error < -4095) {
		*why = "error code out of range";
		return -EINVAL;
	}
	if (!valid_text(resp->message, META_MAX_MESSAGE)) {
		*why = "malformed message text";
		return -EINVAL;
	}
	if (resp->n_kvs > META_MAX_KVS) {
		*why = "too many keys";
		return -EINVAL;
	}
	for (size_t i = 0; i < resp->n_kvs; i++) {
		const Tessera__Meta__KeyValue *kv = resp->kvs[i];

		if (kv == NULL || !meta_key_valid(kv->key) || !valid_value(&kv->value)) {
			*why = "malformed key or value";
			return -EINVAL;
		}
	}
	return 0;
}

static int check_response_msg(const ProtobufCMessage *msg, const char **why)
{
	return check_response((const Tessera__Meta__Response *)msg, why);
}

int meta_response_parse(const uint8_t *buf, size_t len, Tessera__Meta__Response **out,
			const char **why)
{
	return tsr_pb_parse(&tessera__meta__response__descriptor, buf, len, META_MAX_FRAME,
			    "response", "a meta.proto Response", check_response_msg,
			    (ProtobufCMessage **)out, why);
}

int meta_kv_from_proto(struct tsr_meta_kv *kv, const Tessera__Meta__KeyValue *p)
{
	return meta_kv_set(kv, p->key, p->value.data, p->value.len, p->create_rev, p->mod_rev,
			   p->lease, p->deleted ? 1 : 0);
}
