/*
 * Tessera peer protocol (DESIGN.md layer 4): how a volume's coordinator
 * reaches the copies that live on other nodes.  TCP, one connection per
 * (worker thread, remote node); fixed binary header + raw payload.
 *
 * Wire format, every frame in both directions (little endian):
 *   off  size  field
 *    0    4    magic       TSR_PEER_MAGIC ("TSRP")
 *    4    1    opcode      enum tsr_peer_op
 *    5    1    flags       TSR_PEER_F_REPLY | TSR_PEER_F_FUA (| _NO_HOLE, | _REPAIR,
 *                          | _MISSING_OK, | _DIRECT: the bits each opcode may carry below)
 *    6    2    reserved    0
 *    8    8    handle      volume session handle from OPEN's reply (0 for HELLO/OPEN)
 *   16    8    offset      bytes (OPEN reply: the volume's size)
 *   24    4    length      bytes the op covers (WRITE/READ: 4 KiB multiple, <= TSR_MAX_IO)
 *   28    4    status      replies: 0 or -errno; requests: 0
 *   32    8    epoch       coordinator epoch (OPEN and every data op)
 *   40    8    seq         request id chosen by the client, echoed in the reply
 *   48    4    data_crc    CRC32C of the payload (0 when there is none)
 *   52    4    hdr_crc     CRC32C of bytes 0..51
 *   56         payload     payload_len(header) bytes, see below
 * HELLO reply: epoch = the replica's feature bits (TSR_PEER_FEAT_*).  The
 * request carries epoch 0 and a build before feature bits echoes it, so 0
 * means "none": a coordinator sends a flag a feature names only to a replica
 * whose HELLO reply named it (a replica of an earlier build refuses any
 * unknown flag bit as a bad frame and closes the whole connection).
 * Payload length by frame: HELLO request 64+1+N (token hex, node-id length,
 * node id; N <= 63), HELLO reply 0; OPEN request: volume name (1..63 bytes),
 * or "VOLUME@SNAPSHOT" (up to 127 bytes: a read-only session on a snapshot);
 * SNAP request: 3+S+C bytes (below); HELLO, OPEN and SNAP requests carry
 * their payload length in length; WRITE request: length bytes; READ reply:
 * length bytes (status 0); SUMS reply: 4 bytes (CRC32C) per 4 KiB block of
 * the range; STATS reply: length bytes (status 0); everything else: 0.
 *
 * SNAP request (handle: the session, epoch: checked like a data op's, offset
 * 0, length 3..129, data_crc: CRC32C of the payload):
 *   off  size  field
 *    0    1    op          enum tsr_snap_op (1 create, 2 delete, 3 clone)
 *    1    1    S           snapshot name length, 0..63 (0: CLONE of the head)
 *    2    1    C           clone name length, 0..63 (CLONE: 1..63, else 0)
 *    3    S    snap        snapshot name, no NUL
 *  3+S    C    clone       clone's volume name, no NUL
 * 3+S+C   8    size        CREATE only, optional: the snapshot's size, LE
 *                          (a block multiple, not 0, at most the volume's)
 * length must be exactly 3+S+C, or 3+S+C+8 for a CREATE with a size (a
 * build before the size field answers that -EPROTO).  The replica runs the
 * store call (tsr_store_snap_create_sized / _delete / tsr_store_vol_clone)
 * on the session's volume and replies with length 0, status 0 or -errno
 * (-ESTALE stale epoch, -EEXIST, -ENOENT, -EINVAL bad name, op or size,
 * -EBUSY writes in flight there).  The call runs off the replica's event
 * loop; a frame on the same volume, an OPEN, SNAP or SNAP_LIST sent after it
 * on the same connection is run only after its answer, so a SNAP keeps its
 * place in that connection's order (SNAP_LIST too).
 *
 * Staged chunk writes (EC transactions, ec.h; store.h tsr_svol_stage*), each
 * carrying the session handle and an epoch checked like a data op's:
 *   STAGE request: offset = chunk-volume offset (4 KiB aligned), length =
 *     data bytes (4 KiB multiple, <= 1 MiB), payload = 32-byte prefix +
 *     length data bytes (payload_len 32 + length), data_crc over all of it:
 *       off size field
 *        0   8   txn
 *        8   8   stripe
 *       16   4   participants   bit p: stripe position p takes part (p < 20)
 *       20  12   reserved       0
 *     reply: status (-EEXIST, -ENOSPC, -EINVAL, -ESTALE, -EIO).
 *   COMMIT request: offset = txn, length 0; reply: status (-ENOENT).
 *   RELEASE request: offset = txn_upto, length 0; reply: status.
 *   SNAP_LIST request (a head session; epoch checked like a data op's):
 *   offset 0, length 0; reply: length = 72 * n bytes (n <= 1024), the
 *   volume's snapshots oldest first (as tsr_store_snap_list lists them),
 *   each: off 0 size (8, bytes at the cut), off 8 name (64: 1..63 bytes of a
 *   valid name, NUL-padded).  A mirror's scrub asks a copy for it when the
 *   coordinator holds no copy of its own.
 *   STAGE_LIST request: offset 0, length 0; reply: length = 40 * n bytes
 *     (n <= TSR_STAGE_MAX_ENTRIES), n entries in txn order:
 *       off size field
 *        0   8   txn
 *        8   8   stripe
 *       16   8   offset
 *       24   4   length
 *       28   4   participants
 *       32   4   state          1 staged, 2 committed
 *       36   4   reserved       0
 *   STATS request (a head or snapshot session; epoch checked like a data
 *   op's): offset 0, length 0, no payload.  Reply, status 0: length =
 *   16..64 bytes, a multiple of 8 (this build sends 16), data_crc over it:
 *       off size field
 *        0   8   crc_errors     tsr_svol_stats.crc_errors of the session's volume
 *        8   8   cached_reads   tsr_svol_stats.cached_reads
 *       16   .   later counters, appended 8 bytes each (a reader ignores what
 *                it does not know)
 *     counts since that node opened the volume (they restart at 0 with it);
 *     a failed reply has length 0.  Sent only to a replica whose HELLO reply
 *     has TSR_PEER_FEAT_STATS: a build before it closes the connection on
 *     the unknown opcode.
 *
 * Replica rules (engine/peer/peer_server.c): the first frame must be HELLO
 * with the cluster token; OPEN of "V@S" opens snapshot S of V read-only
 * (writes -EROFS; no epoch is recorded: reading a snapshot changes nothing);
 * OPEN of volume V with epoch E fails with -ESTALE
 * when E is below the highest epoch ever accepted for V on this node (kept
 * durably in the local store before the reply), otherwise records E and
 * returns a handle; every data op carrying an epoch below V's highest epoch
 * fails with -ESTALE (a newer coordinator exists: the old one is fenced).
 * Every received header goes through tsr_peer_hdr_parse() and every WRITE
 * payload is checked against data_crc before it reaches the store (-EBADMSG).
 */
#ifndef TESSERA_PEER_H
#define TESSERA_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tessera/common.h"
#include "tessera/layout.h"
#include "tessera/store.h"
#include "tessera/worker.h"

#define TSR_PEER_MAGIC 0x50525354u /* little endian "TSRP" */
#define TSR_PEER_HDR_SIZE 56u

enum tsr_peer_op {
	TSR_PEER_HELLO = 1,
	TSR_PEER_OPEN = 2,
	TSR_PEER_CLOSE = 3,
	TSR_PEER_READ = 4,
	TSR_PEER_WRITE = 5,
	TSR_PEER_FLUSH = 6,
	TSR_PEER_TRIM = 7,
	TSR_PEER_WRITE_ZEROES = 8,
	TSR_PEER_SUMS = 9,    /* CRC32C per block of [offset, offset+length), length <= 64 MiB */
	TSR_PEER_PING = 10,
	TSR_PEER_SNAP = 11,   /* struct tsr_snap_req on the session's volume (layout.h);
			       * the coordinator sends it with its writes drained */
	TSR_PEER_STAGE = 12,  /* tsr_svol_stage */
	TSR_PEER_COMMIT = 13, /* tsr_svol_stage_commit */
	TSR_PEER_RELEASE = 14, /* tsr_svol_stage_release */
	TSR_PEER_STAGE_LIST = 15, /* tsr_svol_stage_list */
	TSR_PEER_SNAP_LIST = 16,  /* the session's volume's snapshots (tsr_store_snap_list) */
	TSR_PEER_STATS = 17,      /* the session's volume's store counters (tsr_svol_get_stats);
				   * sent only to a replica with TSR_PEER_FEAT_STATS */
};

#define TSR_PEER_F_REPLY 0x01u
#define TSR_PEER_F_FUA 0x02u
#define TSR_PEER_F_NO_HOLE 0x04u /* WRITE_ZEROES: allocate */
/*
 * WRITE on a read-only snapshot session ("VOL@SNAP"): a scrub's repair of
 * the snapshot's image (tsr_svol_snap_repair: its own layer only; durable
 * when answered, FUA or not).  The epoch is checked against the volume's
 * (-ESTALE), like a head write's; on a head session the flag is -EINVAL, and
 * a WRITE without it on a snapshot session stays -EROFS.
 */
#define TSR_PEER_F_REPAIR  0x08u
/*
 * SNAP DELETE of a make-up's replay (tsr_snap_req.missing_ok): the copy may
 * never have had the snapshot, so its absence (-ENOENT, answered as ever) is
 * logged below ERROR (tsr_store_snap_delete_missing_ok).  Only on SNAP.
 */
#define TSR_PEER_F_MISSING_OK 0x10u
/*
 * READ (request only; byte 5, bit 5): read what is stored on the disk, not
 * the replica's page cache (tsr_svol_read_direct): a scrub's check of a
 * remote chunk.  Only on READ (elsewhere -EPROTO, a bad frame).  Sent only
 * to a replica whose HELLO reply has TSR_PEER_FEAT_READ_DIRECT.
 */
#define TSR_PEER_F_DIRECT 0x20u
/* HELLO reply epoch: feature bits of the replica's build */
#define TSR_PEER_FEAT_READ_DIRECT 0x1ull /* READ takes TSR_PEER_F_DIRECT */
/* serves TSR_PEER_STATS (a build before it refuses the opcode as a bad frame) */
#define TSR_PEER_FEAT_STATS     0x2ull
#define TSR_PEER_FEATURES       (TSR_PEER_FEAT_READ_DIRECT | TSR_PEER_FEAT_STATS)
#define TSR_PEER_MAX_SUMS_RANGE (64u * 1024 * 1024)

struct tsr_peer_hdr {
	uint8_t opcode, flags;
	uint64_t handle, offset;
	uint32_t length;
	int32_t status;
	uint64_t epoch, seq;
	uint32_t data_crc;
	uint32_t payload_len;  /* derived from opcode/flags/length/status, not on the wire */
};

/*
 * Decode and validate one 56-byte header: magic, hdr_crc, known opcode,
 * reserved 0, alignment and bounds of offset/length per opcode, status <= 0.
 * Fills out (with payload_len).  Errors: -EBADMSG bad magic or checksum,
 * -EPROTO unknown opcode or bad field, -EMSGSIZE length over its bound.
 */
int tsr_peer_hdr_parse(const uint8_t buf[TSR_PEER_HDR_SIZE], struct tsr_peer_hdr *out);
/* Encode h (payload_len ignored) with its hdr_crc. */
void tsr_peer_hdr_pack(const struct tsr_peer_hdr *h, uint8_t buf[TSR_PEER_HDR_SIZE]);

#define TSR_PEER_SNAP_MIN 3u
#define TSR_PEER_SNAP_SIZE 8u
/* two names (CLONE); a CREATE with its size (3 + 63 + 8) is shorter */
#define TSR_PEER_SNAP_MAX (3u + 63 + 63)
/*
 * Decode and validate a SNAP request payload (len bytes, the header's length;
 * its data_crc checked by the caller): op (1 byte), snapshot name length,
 * clone name length, the names, then for a CREATE with a size (req.size, a
 * make-up's cut) that size, 8 bytes little-endian; without it the payload
 * ends after the names (size 0: the volume's; what senders before the field
 * sent).  Checked: known op, lengths that add up to len, valid names
 * (tsr_valid_name), a snapshot name for CREATE and DELETE, a clone name for
 * CLONE and none otherwise, a size only on CREATE, non-zero and a multiple
 * of TSR_BLOCK_SIZE.  Errors: -EPROTO bad layout, -EINVAL bad op, name or
 * size.
 */
int tsr_peer_snap_parse(const uint8_t *p, uint32_t len, struct tsr_snap_req *out);
/* Encode req; returns the payload length, or -EINVAL when it would not parse. */
int tsr_peer_snap_pack(const struct tsr_snap_req *req, uint8_t buf[TSR_PEER_SNAP_MAX]);

#define TSR_PEER_STAGE_PREFIX 32u
#define TSR_PEER_STAGE_ENTRY 40u
/*
 * STAGE payload prefix (the first TSR_PEER_STAGE_PREFIX bytes; the header
 * gives offset and length): fills e (txn, stripe, participants; offset and
 * length from hdr; state STAGED).  Errors: -EPROTO reserved bytes not 0,
 * -EINVAL participants 0 or beyond bit 19.
 */
int tsr_peer_stage_parse(const struct tsr_peer_hdr *hdr, const uint8_t *prefix,
			 struct tsr_stage_entry *e);
void tsr_peer_stage_pack(const struct tsr_stage_entry *e, uint8_t prefix[TSR_PEER_STAGE_PREFIX]);
/*
 * STAGE_LIST reply payload (len bytes): n entries into out[0..max-1].
 * Errors: -EPROTO len not a multiple of 40, a bad state, reserved not 0,
 * offset/length misaligned, txns not increasing; -EMSGSIZE more than max.
 */
int tsr_peer_stage_list_parse(const uint8_t *p, uint32_t len, struct tsr_stage_entry *out,
			      size_t max, size_t *n);
void tsr_peer_stage_list_pack(const struct tsr_stage_entry *e, size_t n, uint8_t *out);

#define TSR_PEER_STATS_MIN 16u
#define TSR_PEER_STATS_MAX 64u
/* STATS reply payload: the counters this build knows. */
struct tsr_peer_stats {
	uint64_t crc_errors, cached_reads;
};
/* Decode a STATS reply payload (len bytes).  Errors: -EPROTO (len not a
 * multiple of 8 in [TSR_PEER_STATS_MIN, TSR_PEER_STATS_MAX]). */
int tsr_peer_stats_parse(const uint8_t *p, uint32_t len, struct tsr_peer_stats *out);
/* Encode st; returns the payload length (TSR_PEER_STATS_MIN). */
uint32_t tsr_peer_stats_pack(const struct tsr_peer_stats *st, uint8_t buf[TSR_PEER_STATS_MAX]);

/* ---- replica side: serving this node's store copies to coordinators ---- */

struct tsr_peer_server;
struct tsr_peer_server_opts {
	struct tsr_store *store;  /* the copies are this store's volumes, by name */
	const char *token;        /* cluster token (TSR_ADMIN_TOKEN_LEN hex) */
	const char *node_id;      /* ours, for logs */
};
int tsr_peer_server_create(const struct tsr_peer_server_opts *opts,
			   struct tsr_peer_server **out);
/* All connections must have ended (workers stopped) first.  NULL ok. */
void tsr_peer_server_destroy(struct tsr_peer_server *srv);
/* Serve an accepted socket on worker w; must run on w's thread.  Owns fd. */
void tsr_peer_conn_start(struct tsr_peer_server *srv, struct tsr_worker *w, int fd);
struct tsr_peer_server_stats {
	uint64_t connections_open, frames, bytes_written, bytes_read;
	uint64_t stale_epoch, bad_frames;
};
void tsr_peer_server_get_stats(struct tsr_peer_server *srv, struct tsr_peer_server_stats *out);

/* ---- coordinator side: one connection to one remote node -------------- */

struct tsr_peer_client;

struct tsr_peer_client_opts {
	const char *address;      /* "HOST:PORT" of the node's --listen */
	const char *token;        /* cluster token */
	const char *node_id;      /* ours, sent in HELLO */
	unsigned timeout_ms;      /* a request unanswered this long fails the connection (0: 5000) */
};

/*
 * Create a client on worker w (call on w's thread); it connects in the
 * background (non-blocking connect, HELLO).  Requests queued before the
 * connection is up wait for it.  When the connection fails (refused, reset,
 * timeout, bad frame) every request in flight and every later one completes
 * with an error until tsr_peer_client_destroy; the owner makes a new client
 * to reconnect.  on_fail (may be NULL) is called once, on w's thread, with
 * the cause, before the failed requests complete (never for destroy).
 * Errors: -EINVAL bad address, -ENOMEM.
 */
int tsr_peer_client_create(struct tsr_worker *w, const struct tsr_peer_client_opts *opts,
			   void (*on_fail)(void *arg, int err), void *fail_arg,
			   struct tsr_peer_client **out);
/* On w's thread, before w stops.  In-flight requests complete with
 * -ECANCELED before this returns.  NULL ok. */
void tsr_peer_client_destroy(struct tsr_peer_client *c);
bool tsr_peer_client_failed(const struct tsr_peer_client *c);

/*
 * Requests.  Async contract: 0 and cb fires exactly once on the client's
 * worker thread, or -errno and it never fires.  Completion status: 0 or
 * -errno as the replica answered (-ESTALE fenced by a newer epoch, -ENOENT no
 * such volume, -EIO, -ENOSPC ...), or the connection's failure (-ECONNRESET,
 * -ETIMEDOUT, -ECONNREFUSED, -EPROTO).  Buffers stay the caller's until cb.
 * Once the client has failed, calls return -ENOTCONN (cb never fires).
 */
typedef void (*tsr_peer_open_cb)(void *cb_arg, int status, uint64_t handle, uint64_t size);
/* volume: "NAME", or "NAME@SNAP" for a read-only session on a snapshot. */
int tsr_peer_open(struct tsr_peer_client *c, const char *volume, uint64_t epoch,
		  tsr_peer_open_cb cb_fn, void *cb_arg);
/* End a session (the replica puts its handle once no request uses it). */
int tsr_peer_close(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch, tsr_cb cb_fn,
		   void *cb_arg);
int tsr_peer_read(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		  uint64_t offset, uint32_t len, void *buf, tsr_cb cb_fn, void *cb_arg);
/*
 * READ with TSR_PEER_F_DIRECT: the replica reads its disk, not its page
 * cache (scrub).  A replica whose HELLO reply lacks TSR_PEER_FEAT_READ_DIRECT
 * (an earlier build, which would close the connection on the flag) gets a
 * plain READ instead, said once per connection in the log, and counted
 * (tsr_peer_client_direct_fallbacks).
 */
int tsr_peer_read_direct(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
			 uint64_t offset, uint32_t len, void *buf, tsr_cb cb_fn, void *cb_arg);
/* The replica's feature bits from its HELLO reply (0 until it answered). */
uint64_t tsr_peer_client_features(const struct tsr_peer_client *c);
uint64_t tsr_peer_client_direct_fallbacks(const struct tsr_peer_client *c);
/* flags: TSR_WRITE_FUA */
int tsr_peer_write(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		   uint64_t offset, uint32_t len, const void *buf, unsigned flags,
		   tsr_cb cb_fn, void *cb_arg);
/*
 * tsr_peer_write with the payload's block CRCs known (sums[i] =
 * tsr_crc32c(0, block i), len / TSR_BLOCK_SIZE of them, tsr_crc32c_blocks):
 * the frame's data_crc is joined from them (tsr_crc32c_join_blocks) instead
 * of read from the data again.  sums are read during the call only; NULL is
 * tsr_peer_write.
 */
int tsr_peer_write_sums(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch, uint64_t offset,
			uint32_t len, const void *buf, const uint32_t *sums, unsigned flags,
			tsr_cb cb_fn, void *cb_arg);
int tsr_peer_flush(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		   tsr_cb cb_fn, void *cb_arg);
int tsr_peer_trim(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		  uint64_t offset, uint32_t len, tsr_cb cb_fn, void *cb_arg);
/* flags: TSR_WRITE_FUA | TSR_WRITE_NO_HOLE */
int tsr_peer_write_zeroes(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
			  uint64_t offset, uint32_t len, unsigned flags, tsr_cb cb_fn,
			  void *cb_arg);
/* SNAP_LIST reply entries (peer.h wire format above). */
#define TSR_PEER_SNAP_ENTRY    72u
#define TSR_PEER_SNAP_LIST_MAX 1024u
struct tsr_peer_snap_entry {
	char name[64];
	uint64_t size;
};
/* SNAP_LIST reply payload (len bytes): n entries into out[0..max-1].
 * Errors: -EPROTO (length not a multiple of 72, over max entries, a name
 * not NUL-padded or not valid). */
int tsr_peer_snap_list_parse(const uint8_t *p, uint32_t len, struct tsr_peer_snap_entry *out,
			     size_t max, size_t *n);
void tsr_peer_snap_list_pack(const struct tsr_peer_snap_entry *e, size_t n, uint8_t *out);
typedef void (*tsr_peer_snap_list_cb)(void *cb_arg, int status,
				      const struct tsr_peer_snap_entry *e, size_t n);
/* SNAP_LIST on a head session: cb gets the entries (valid during the call).
 * Errors before sending: -EINVAL, -ENOTCONN, -ENOMEM. */
int tsr_peer_snap_list(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		       tsr_peer_snap_list_cb cb_fn, void *cb_arg);
/* WRITE with TSR_PEER_F_REPAIR on a snapshot session (handle from an OPEN
 * of "VOL@SNAP"): the scrub's repair of its image.  Errors before sending:
 * -EINVAL (range, buf), -ENOTCONN, -ENOMEM. */
int tsr_peer_snap_repair(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
			 uint64_t offset, uint32_t len, const void *buf, tsr_cb cb_fn,
			 void *cb_arg);
/* sums: len/4096 CRC32C values of the blocks' data (a hole sums as zeros). */
int tsr_peer_sums(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		  uint64_t offset, uint32_t len, uint32_t *sums, tsr_cb cb_fn, void *cb_arg);
/*
 * snap: run req (layout.h) on the session's volume on the replica.  The
 * caller has drained its writes to that copy first (the store refuses a cut
 * with writes in flight: -EBUSY).  Errors before sending: -EINVAL (bad op,
 * bad or missing name), -ENOTCONN, -ENOMEM.
 */
int tsr_peer_snap(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		  const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg);

/* Staged chunk writes (store.h tsr_svol_stage*); e->offset/length/txn/
 * stripe/participants as sent.  buf: e->length bytes, the caller's until cb.
 * Errors before sending: -EINVAL (misaligned, length 0 or > 1 MiB,
 * participants 0), -ENOTCONN, -ENOMEM. */
int tsr_peer_stage(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		   const struct tsr_stage_entry *e, const void *buf, tsr_cb cb_fn, void *cb_arg);
int tsr_peer_commit(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch, uint64_t txn,
		    tsr_cb cb_fn, void *cb_arg);
int tsr_peer_release(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		     uint64_t txn_upto, tsr_cb cb_fn, void *cb_arg);
/* cb_fn(cb_arg, status, entries, n): entries valid during the call only. */
typedef void (*tsr_peer_stage_list_cb)(void *cb_arg, int status,
				       const struct tsr_stage_entry *entries, size_t n);
int tsr_peer_stage_list(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
			tsr_peer_stage_list_cb cb_fn, void *cb_arg);
/*
 * STATS on a session: cb_fn(cb_arg, status, st) gets the replica's store
 * counters of the session's volume (st valid during the call, NULL on
 * error).  Errors before sending: -EOPNOTSUPP the replica's HELLO reply
 * lacks TSR_PEER_FEAT_STATS (or has not come yet: nothing is sent to a
 * build that would close the connection on it), -EINVAL, -ENOTCONN, -ENOMEM.
 */
typedef void (*tsr_peer_stats_cb)(void *cb_arg, int status, const struct tsr_peer_stats *st);
int tsr_peer_stats(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		   tsr_peer_stats_cb cb_fn, void *cb_arg);

#endif
