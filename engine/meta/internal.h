/*
 * Private header of engine/meta/: what each file offers the others (and the
 * unit tests and the fuzzer).  Users include include/tessera/meta.h;
 * backends fill include/tessera/meta_module.h.
 */
#ifndef TESSERA_META_INTERNAL_H
#define TESSERA_META_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meta.pb-c.h"
#include "tessera/common.h"
#include "tessera/meta.h"
#include "tessera/meta_module.h"

/* ---- meta.c: the wrappers, key rules, kv helpers ------------------------ */

/* A key: 1..TSR_META_MAX_KEY bytes of printable ASCII (0x20..0x7e). */
bool meta_key_valid(const char *key);
/* A prefix: the same, but may be empty. */
bool meta_prefix_valid(const char *prefix);
/* Fill kv with malloc'd copies.  0 or -ENOMEM (kv then left cleared). */
int meta_kv_set(struct tsr_meta_kv *kv, const char *key, const void *value, size_t value_len,
		uint64_t create_rev, uint64_t mod_rev, uint64_t lease, int deleted);

/* ---- meta_proto.c: framing and the validating parsers ------------------ */

#define META_MAX_FRAME (1u << 20)       /* largest message either way */
#define META_REPLY_BUDGET (768u * 1024) /* bytes of kvs in one range or watch reply */
#define META_MAX_TOKEN 255              /* printable characters */
#define META_MAX_MESSAGE 1024           /* Response.message */
#define META_MAX_KVS 1000000            /* kvs of one Response */

/* Length carried by a frame header (big endian u32). */
uint32_t meta_frame_len(const uint8_t hdr[4]);
/*
 * Pack msg into a malloc'd frame (4-byte length + bytes).
 * Errors: -EMSGSIZE larger than META_MAX_FRAME, -ENOMEM.
 */
int meta_frame_pack(const ProtobufCMessage *msg, uint8_t **frame, size_t *len);
/*
 * The one parser of what a client sends: exactly one op, its sub-message
 * present, keys and prefixes valid, value <= TSR_META_MAX_VALUE, token
 * bounded and printable, ttl >= 100.  On success *out is freed with
 * tessera__meta__request__free_unpacked.  On failure *out is NULL and *why
 * (may be NULL) says what was wrong.  Errors: -EINVAL, -EMSGSIZE (len >
 * META_MAX_FRAME).
 */
int meta_request_parse(const uint8_t *buf, size_t len, Tessera__Meta__Request **out,
		       const char **why);
/*
 * The one parser of what a server sends: error in [-4095, 0], message
 * bounded and printable, at most META_MAX_KVS kvs each with a valid key and
 * a value <= TSR_META_MAX_VALUE.  Same contract as meta_request_parse.
 */
int meta_response_parse(const uint8_t *buf, size_t len, Tessera__Meta__Response **out,
			const char **why);
/* Copy a parsed KeyValue into kv (malloc'd).  0 or -ENOMEM. */
int meta_kv_from_proto(struct tsr_meta_kv *kv, const Tessera__Meta__KeyValue *p);

/* ---- meta_sqlite.c: the embedded backend --------------------------------- */

#define META_HISTORY_DEFAULT 10000 /* change events kept for watch */

/* tsr_meta_open_sqlite with a chosen history length (tests: small). */
int meta_sqlite_open(const char *path, unsigned history, struct tsr_meta **out);

/* ---- meta_remote.c: the client backend ----------------------------------- */

#define META_DEFAULT_TIMEOUT_MS 5000

/* ---- meta_server.c: the meta service --------------------------------------- */

#define META_MAX_CONNS 256
#define META_AUTH_TIMEOUT_MS 10000 /* to send the magic and the Hello */

#endif
