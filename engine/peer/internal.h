/*
 * Private interfaces of the peer protocol (engine/peer), one section per
 * file.  Callers outside this folder use include/tessera/peer.h only.
 *
 * Threads: a server connection and a client belong to one worker thread for
 * their whole life; nothing here takes a lock.  The server object is shared
 * read-only by every worker except its counters (relaxed atomics) and its
 * per-worker slots (worker i's thread only).
 */
#ifndef TSR_PEER_INTERNAL_H
#define TSR_PEER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "tessera/peer.h"

#define PEER_TOKEN_LEN  64u                      /* TSR_ADMIN_TOKEN_LEN hex characters */
#define PEER_NAME_MAX   63u                      /* volume names and node ids */
#define PEER_OPEN_MAX   (2 * PEER_NAME_MAX + 1)  /* OPEN payload: "VOL" or "VOL@SNAP" */
#define PEER_HELLO_MIN  (PEER_TOKEN_LEN + 1)     /* token, node-id length, no id */
#define PEER_HELLO_MAX  (PEER_HELLO_MIN + PEER_NAME_MAX)
#define PEER_MAX_ERRNO  4095                     /* a status below -4095 is no errno */
#define PEER_RBUF_SIZE  (256u * 1024)            /* receive buffer of either side */
#define PEER_SUMS_PIECE (1024u * 1024)           /* SUMS reads the range this much at a time */
#define PEER_STAGE_MAX_LEN (1024u * 1024)        /* STAGE data bytes (TSR_EC_MAX_UNIT) */
#define PEER_STAGE_MAX_POSITIONS 20u             /* participants bits (k + m <= 20) */

/* ---- peer_proto.c: frame encoding and checking ---- */

/* Payload bytes following a header (the rule in peer.h), computed from the
 * header's fields; tsr_peer_hdr_parse stores it in payload_len. */
uint32_t peer_payload_len(const struct tsr_peer_hdr *h);
/* An OPEN name: a volume name, or "VOL@SNAP" with both valid. */
bool peer_open_name_ok(const char *name);
/* "write", "sums"... for logs. */
const char *peer_op_name(uint8_t op);

/* ---- peer_server.c: the replica side ---- */

/* (Only public functions: tsr_peer_server_*, tsr_peer_conn_start.) */

/* ---- peer_client.c: the coordinator side ---- */

/* (Only public functions: tsr_peer_client_*, tsr_peer_<op>.) */

#endif
