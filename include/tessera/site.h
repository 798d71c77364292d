/*
 * Tessera site protocol: the link between two Tessera clusters for async
 * geo-replication (DESIGN.md "Geo-replication", GitHub issue 7).  The
 * source site ships each replicated volume's writes, in its acknowledgment
 * order, as a numbered stream; the target applies them in that order and
 * acknowledges how far it got.  It always runs inside mutual TLS 1.3
 * (tsr_site_tls_* below): nothing crosses between sites in clear text.
 *
 * Wire format, every frame in both directions (little endian):
 *   off  size  field
 *    0    4    magic       TSR_SITE_MAGIC ("TSRS")
 *    4    1    version     TSR_SITE_VERSION (1); another: -EPROTONOSUPPORT
 *    5    1    opcode      enum tsr_site_op
 *    6    1    flags       TSR_SITE_F_REPLY (HELLO and VOLUME_OPEN only),
 *                          TSR_SITE_F_REPLAY, TSR_SITE_F_DIGEST (below),
 *                          TSR_SITE_F_COMPRESSED 0x08 (WRITE only, below)
 *    7    1    reserved    0
 *    8    8    stream      the volume stream, chosen by the source in
 *                          VOLUME_OPEN (non-zero); 0 for HELLO
 *   16    8    seq         stream sequence number (rules below)
 *   24    8    offset      bytes (VOLUME_OPEN request: the volume's size)
 *   32    8    epoch       the source volume's epoch (0 in HELLO)
 *   40    4    length      payload bytes, or for ZERO the bytes covered
 *                          (a compressed WRITE: the data bytes it carries
 *                          once decompressed, the logical length)
 *   44    4    data_crc    CRC32C of the payload as on the wire (0 when
 *                          there is none; compressed: of the compressed bytes)
 *   48    4    wire_len    with TSR_SITE_F_COMPRESSED: the payload bytes on
 *                          the wire, 1..length-1; else 0
 *   52    8    reserved    0
 *   60    4    hdr_crc     CRC32C of bytes 0..59
 *   64         payload     payload_len bytes (below)
 *
 * Opcodes (R: with TSR_SITE_F_REPLY, sent by the target):
 *   HELLO        first frame each way.  stream, seq, offset, epoch 0.
 *                payload 4+S+C: u8 S, u8 C, u16 reserved 0, site name (S,
 *                1..63), cluster id (C, 1..63); both tsr_valid_name().
 *   VOLUME_OPEN  source: stream != 0, seq 0, offset = volume size (4 KiB
 *                multiple, > 0), payload 4+N+L[+2+G]: u8 N, u8 L, u8
 *                compression (enum tsr_site_compress: the algorithm of this
 *                stream's compressed WRITEs; another value is refused with
 *                ERROR -EPROTONOSUPPORT), u8 G (consistency group name
 *                length, 0: no group; a target built before groups refuses
 *                a non-zero byte 3 as malformed),
 *                target volume name (N, 1..63, tsr_valid_name), target
 *                layout (L, 1..31: "replicas:R" R 1..8, or "ec:K+M" K 1..16,
 *                M 1..4); with G > 0: u16 member count (1..64), group name
 *                (G, 1..63, tsr_valid_name).  R: same stream, offset 0, length 0, seq = the
 *                applied-through seq the target holds for the stream (where
 *                the source resumes); flag TSR_SITE_F_REPLAY when the target
 *                restarted without a clean close: frames after seq may be
 *                partly on its disk, so it is not consistent until the source
 *                has re-sent everything it had sent before and then SYNC_END.
 *                Flag TSR_SITE_F_FRESH (0x10) when the target volume is not
 *                the one its state file described (deleted and created
 *                again while the stream went on): seq is then 0 and the
 *                source copies the whole volume; a source built before the
 *                flag refuses such a reply as malformed (never resumes a
 *                log tail onto an empty target).
 *                A volume promoted at the target refuses VOLUME_OPEN of the
 *                stream it was the target of with ERROR -ESTALE (that source
 *                is demoted) and of any other stream with ERROR -EEXIST; no
 *                other cause is sent as -ESTALE (a state file I/O error goes
 *                out as -EIO).
 *   WRITE        stream, seq, offset (4 KiB aligned), length (4 KiB multiple,
 *                1..TSR_SITE_MAX_DATA), payload = length data bytes; or, with
 *                flag TSR_SITE_F_COMPRESSED (0x08), payload = wire_len bytes,
 *                the length data bytes compressed with the stream's algorithm
 *                (VOLUME_OPEN byte 2): one LZ4 block (LZ4_compress_default) or
 *                one zstd frame (level 1).  The source sends a WRITE raw
 *                (flag clear) when compressing does not make it smaller.  The
 *                target refuses with ERROR -EBADMSG a compressed WRITE of a
 *                stream without an algorithm, one that does not decompress,
 *                or one that does not decompress to exactly length bytes,
 *                before the volume sees it.
 *   ZERO         stream, seq, offset, length (4 KiB aligned, > 0); no payload.
 *   SNAPSHOT     stream, seq: a named consistent point.  payload 1+N: u8 N,
 *                snapshot name (N, 1..63, tsr_valid_name).
 *   BARRIER      source: stream, seq = ask for an ACK once everything up to
 *                seq is applied and durable; offset 0, length 0.
 *   ACK          target: stream, seq = applied and durable through seq (may
 *                come unasked); offset 0, length 0.
 *   SYNC_BEGIN   source: stream, seq (next number), offset 0, length 0: the
 *                frames that follow until SYNC_END re-copy regions (an
 *                initial copy, or a delta after the log overflowed); the
 *                target is not a prefix of the history until SYNC_END is
 *                applied, and says so (consistent = false, persisted).
 *   SYNC_END     source: stream, seq (next number), offset 0, length 0:
 *                once applied the target equals a prefix of the history
 *                again (consistent = true).  Also ends a replay (below).
 *   DIGEST       target, only after a VOLUME_OPEN reply whose request carried
 *                TSR_SITE_F_DIGEST (0x04): stream, seq 0, offset = byte
 *                offset of the first region (a multiple of
 *                TSR_SITE_DIGEST_REGION), length = 16 * n (n >= 1, at most
 *                TSR_SITE_MAX_DATA), payload = n digests of consecutive
 *                regions of the target volume as it is now, each the first
 *                16 bytes of SHA-256 over the region's bytes (the last one up
 *                to the source's size); regions in increasing order.  A DIGEST
 *                with length 0 ends the list (offset = bytes covered).  The
 *                source re-sends only the regions whose content differs
 *                (failback resync, a source restart): ARCHITECTURE.md.
 *   MARKER       source, consistency groups only: stream, seq (next number),
 *                offset = marker number n (> 0; the same n goes into every
 *                member's stream at one moment of the group's worker: a cut
 *                of the group's merged ack history), payload 4+G: u8 G, u8
 *                reserved 0, u16 member count (1..64), group name (G,
 *                1..63).  The target hands a member's frames past its last
 *                released marker to the volume only once every member of
 *                the group has received a marker at least as new.
 *   ERROR        either side: stream and seq of the refused frame (0 when
 *                none), offset 0; payload 8+M: u32 code (an errno, 1..4095),
 *                u16 M (0..TSR_SITE_ERRMSG_MAX), u16 reserved 0, message (M
 *                printable ASCII bytes, no NUL).
 * Sequence rule: WRITE, ZERO, SNAPSHOT, MARKER, SYNC_BEGIN and SYNC_END each take the next number of their
 * stream, starting at 1 (0 is never used); the target applies them only in
 * order, refuses a duplicate or a gap (ERROR -EILSEQ) and changes nothing.
 * Every received header goes through tsr_site_hdr_parse(), every payload
 * through its parse function, and data_crc is checked before use.
 */
#ifndef TESSERA_SITE_H
#define TESSERA_SITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tessera/common.h"
#include "tessera/io.h"
#include "tessera/store.h"

struct ev_loop;

#define TSR_SITE_MAGIC 0x53525354u /* little endian "TSRS" */
#define TSR_SITE_VERSION 1u
#define TSR_SITE_HDR_SIZE 64u
#define TSR_SITE_MAX_DATA (4u * 1024 * 1024) /* largest WRITE payload */
#define TSR_SITE_NAME_MAX 63u                 /* site, cluster, volume, snapshot names */
#define TSR_SITE_LAYOUT_MAX 31u
#define TSR_SITE_ERRMSG_MAX 255u
/* A source's last_error: "target error on seq N: " + the target's whole ERROR
 * message + " (strerror)" (before, 160 bytes cut a DR's create or grow
 * refusal in the middle of its reason). */
#define TSR_SITE_LAST_ERROR_MAX (TSR_SITE_ERRMSG_MAX + 97)

enum tsr_site_op {
	TSR_SITE_HELLO = 1,
	TSR_SITE_VOLUME_OPEN = 2,
	TSR_SITE_WRITE = 3,
	TSR_SITE_ZERO = 4,
	TSR_SITE_SNAPSHOT = 5,
	TSR_SITE_BARRIER = 6,
	TSR_SITE_ACK = 7,
	TSR_SITE_ERROR = 8,
	TSR_SITE_SYNC_BEGIN = 9,
	TSR_SITE_SYNC_END = 10,
	TSR_SITE_DIGEST = 11,
	TSR_SITE_MARKER = 12,
};

#define TSR_SITE_F_REPLY 0x01u
#define TSR_SITE_F_REPLAY 0x02u /* VOLUME_OPEN reply only: see above */
#define TSR_SITE_F_DIGEST 0x04u /* VOLUME_OPEN request only: send DIGEST frames first */
#define TSR_SITE_F_COMPRESSED 0x08u /* WRITE only: the payload is compressed (wire_len) */
#define TSR_SITE_F_FRESH 0x10u /* VOLUME_OPEN reply only: a re-created target, holds nothing */

/* Stream compression (VOLUME_OPEN payload byte 2). */
enum tsr_site_compress {
	TSR_SITE_COMPRESS_NONE = 0,
	TSR_SITE_COMPRESS_LZ4 = 1,  /* liblz4 block: LZ4_compress_default */
	TSR_SITE_COMPRESS_ZSTD = 2, /* libzstd frame, level 1 */
};
#define TSR_SITE_COMPRESS_MAX TSR_SITE_COMPRESS_ZSTD

/* DIGEST granularity and entry size: one TSR_SITE_DIGEST_LEN-byte digest
 * (the first bytes of SHA-256) per TSR_SITE_DIGEST_REGION bytes of volume;
 * the last region of a volume is hashed over the bytes up to its end. */
#define TSR_SITE_DIGEST_REGION (64u * 1024)
#define TSR_SITE_DIGEST_LEN 16u

struct tsr_site_hdr {
	uint8_t opcode;       /* enum tsr_site_op */
	uint8_t flags;        /* TSR_SITE_F_REPLY only on HELLO / VOLUME_OPEN;
			       * TSR_SITE_F_REPLAY, TSR_SITE_F_FRESH only on a
			       * VOLUME_OPEN reply;
			       * TSR_SITE_F_DIGEST only on a VOLUME_OPEN request;
			       * TSR_SITE_F_COMPRESSED only on a WRITE */
	uint64_t stream;      /* 0 only for HELLO (and ERROR about no stream) */
	uint64_t seq;         /* see the sequence rule above */
	uint64_t offset;      /* 4 KiB aligned for WRITE / ZERO / VOLUME_OPEN size */
	uint64_t epoch;       /* source volume epoch; 0 in HELLO */
	uint32_t length;      /* on the wire; ZERO: bytes covered, else payload bytes */
	uint32_t data_crc;    /* CRC32C of the payload as on the wire; 0 when payload_len is 0 */
	uint32_t wire_len;    /* TSR_SITE_F_COMPRESSED: payload bytes on the wire,
			       * 1..length-1; else 0 */
	uint32_t payload_len; /* derived (bytes after the header: wire_len when
			       * compressed), not on the wire */
};

/*
 * Decode and validate one 64-byte header: magic, hdr_crc, version, known
 * opcode, flags, reserved bytes 0, and every field's rule for its opcode
 * (above).  Fills out, with payload_len.  Errors: -EBADMSG bad magic or
 * checksum, -EPROTONOSUPPORT other version, -EPROTO unknown opcode or bad
 * field, -EMSGSIZE a length over its bound.
 */
int tsr_site_hdr_parse(const uint8_t buf[TSR_SITE_HDR_SIZE], struct tsr_site_hdr *out);
/* Encode h (payload_len ignored) with its hdr_crc.  Does not validate. */
void tsr_site_hdr_pack(const struct tsr_site_hdr *h, uint8_t buf[TSR_SITE_HDR_SIZE]);
/* 0 when the payload's CRC32C equals hdr->data_crc, else -EBADMSG. */
int tsr_site_data_check(const struct tsr_site_hdr *hdr, const void *payload);

/* ---- payloads: one parse function each; len is the header's payload_len;
 * pack returns the payload length, or -EINVAL when it would not parse. ---- */

struct tsr_site_hello {
	char site[TSR_SITE_NAME_MAX + 1];    /* tsr_valid_name, NUL-terminated */
	char cluster[TSR_SITE_NAME_MAX + 1]; /* tsr_valid_name, NUL-terminated */
};
#define TSR_SITE_HELLO_MAX (4u + 2 * TSR_SITE_NAME_MAX)
/* Errors: -EPROTO lengths do not add up or reserved not 0, -EINVAL bad name. */
int tsr_site_hello_parse(const uint8_t *p, uint32_t len, struct tsr_site_hello *out);
int tsr_site_hello_pack(const struct tsr_site_hello *h, uint8_t buf[TSR_SITE_HELLO_MAX]);

/* A target layout as VOLUME_OPEN names it. */
struct tsr_site_layout {
	unsigned replicas; /* 1..8 for "replicas:R"; 0 for EC */
	unsigned ec_k;     /* 1..16 for "ec:K+M"; 0 for a mirror */
	unsigned ec_m;     /* 1..4 for "ec:K+M"; 0 for a mirror */
};
/* "replicas:R" or "ec:K+M", decimal without leading zeros or signs.
 * Errors: -EINVAL anything else (out of range, trailing bytes). */
int tsr_site_layout_parse(const char *s, struct tsr_site_layout *out);

/* Members of one consistency group, at most (VOLUME_OPEN, MARKER). */
#define TSR_SITE_GROUP_MAX 64u

struct tsr_site_open {
	char volume[TSR_SITE_NAME_MAX + 1];   /* target volume, tsr_valid_name */
	char layout[TSR_SITE_LAYOUT_MAX + 1]; /* as sent; parses with tsr_site_layout_parse */
	uint8_t compress;                     /* enum tsr_site_compress, <= TSR_SITE_COMPRESS_MAX */
	char group[TSR_SITE_NAME_MAX + 1];    /* consistency group (tsr_valid_name), "" none */
	unsigned members;                     /* with a group: its member count, 1..
					       * TSR_SITE_GROUP_MAX; 0 without one */
	struct tsr_site_layout parsed;        /* filled by parse; ignored by pack */
};
#define TSR_SITE_OPEN_MAX (4u + TSR_SITE_NAME_MAX + TSR_SITE_LAYOUT_MAX + 2u + TSR_SITE_NAME_MAX)
/* Errors: -EPROTO lengths or reserved, -EINVAL bad name or layout,
 * -EPROTONOSUPPORT a compression algorithm this build does not know. */
int tsr_site_open_parse(const uint8_t *p, uint32_t len, struct tsr_site_open *out);
int tsr_site_open_pack(const struct tsr_site_open *o, uint8_t buf[TSR_SITE_OPEN_MAX]);

/* A consistency group's marker (MARKER frame payload; the number n is the
 * header's offset). */
struct tsr_site_marker {
	char group[TSR_SITE_NAME_MAX + 1]; /* tsr_valid_name */
	unsigned members;                  /* 1..TSR_SITE_GROUP_MAX */
};
#define TSR_SITE_MARKER_MAX (4u + TSR_SITE_NAME_MAX)
/* Errors: -EPROTO lengths or reserved, -EINVAL bad name or member count. */
int tsr_site_marker_parse(const uint8_t *p, uint32_t len, struct tsr_site_marker *out);
int tsr_site_marker_pack(const struct tsr_site_marker *m, uint8_t buf[TSR_SITE_MARKER_MAX]);

#define TSR_SITE_SNAP_MAX (1u + TSR_SITE_NAME_MAX)
/* name: NUL-terminated, tsr_valid_name.  Errors: -EPROTO, -EINVAL. */
int tsr_site_snap_parse(const uint8_t *p, uint32_t len, char name[TSR_SITE_NAME_MAX + 1]);
int tsr_site_snap_pack(const char *name, uint8_t buf[TSR_SITE_SNAP_MAX]);

struct tsr_site_error {
	int code;                            /* positive errno, 1..4095 */
	char msg[TSR_SITE_ERRMSG_MAX + 1];   /* printable ASCII, NUL-terminated */
};
#define TSR_SITE_ERROR_MAX (8u + TSR_SITE_ERRMSG_MAX)
/* Errors: -EPROTO lengths or reserved, -EINVAL code out of range or a
 * non-printable message byte.  pack truncates nothing: a longer message
 * is -EINVAL. */
int tsr_site_error_parse(const uint8_t *p, uint32_t len, struct tsr_site_error *out);
int tsr_site_error_pack(const struct tsr_site_error *e, uint8_t buf[TSR_SITE_ERROR_MAX]);

const char *tsr_site_op_name(uint8_t op);

/* ---- payload compression (engine/site/site_compress.c; liblz4, libzstd) ---- */

/* "none", "lz4", "zstd"; "unknown" for another value. */
const char *tsr_site_compress_name(unsigned algo);
/* The algorithm named s ("none", "lz4", "zstd").  Errors: -EINVAL. */
int tsr_site_compress_parse(const char *s, uint8_t *out);

/* One thread's (de)compression state for one algorithm (zstd contexts are
 * reused across frames).  Owned by one thread at a time. */
struct tsr_site_codec;
/* Errors: -EPROTONOSUPPORT algo unknown or NONE, -ENOMEM. */
int tsr_site_codec_create(unsigned algo, struct tsr_site_codec **out);
void tsr_site_codec_destroy(struct tsr_site_codec *c); /* NULL ok */
/*
 * Compress len bytes (1..TSR_SITE_MAX_DATA) of src into dst (cap bytes).
 * Returns the compressed size when it is below len and fits in cap, 0 when
 * the data does not get smaller (send it raw), never an error for data.
 */
uint32_t tsr_site_compress(struct tsr_site_codec *c, const void *src, uint32_t len, void *dst,
			   uint32_t cap);
/*
 * Decompress wire_len bytes of src into dst, which must become exactly
 * length bytes (the header's length; dst holds length).  Never writes past
 * dst + length.  Errors: -EBADMSG a corrupt stream or another size,
 * -ENOMEM (a zstd context).
 */
int tsr_site_decompress(struct tsr_site_codec *c, const void *src, uint32_t wire_len,
			void *dst, uint32_t length);

/* The DIGEST of one region's bytes (len <= TSR_SITE_DIGEST_REGION): the first
 * TSR_SITE_DIGEST_LEN bytes of its SHA-256 (OpenSSL).  Any thread. */
void tsr_site_digest(const void *buf, size_t len, uint8_t out[TSR_SITE_DIGEST_LEN]);

/* ---- transport: mutual TLS 1.3 between sites (engine/site/site_tls.c) ----
 *
 * Both sides present a certificate signed by the configured CA and check
 * the other's: chain to that CA, validity dates, and the name (DNS SAN or
 * CN) against the expected site/host name.  TLS 1.3 only.  Every refusal is
 * logged once with its cause (the X509 verify error, or the TLS alert).
 * Sockets are the caller's, non-blocking; -EAGAIN means "wait for
 * tsr_site_tls_want() on the fd and call again".  A connection belongs to
 * one thread.
 */
struct tsr_site_tls_ctx;
struct tsr_site_tls;

struct tsr_site_tls_opts {
	const char *ca_file;   /* PEM: the CA(s) the other site's certificate must chain to */
	const char *cert_file; /* PEM: our certificate (may hold the chain) */
	const char *key_file;  /* PEM: its private key */
	bool server;           /* accept (true) or connect (false) */
};
/*
 * Load the files and set the rules.  Errors: -EINVAL missing option,
 * -ENOENT / -EACCES unreadable file, -EKEYREJECTED key does not match the
 * certificate or a file is not valid PEM, -ENOMEM.  Logs the cause.
 */
int tsr_site_tls_ctx_create(const struct tsr_site_tls_opts *opts, struct tsr_site_tls_ctx **out);
void tsr_site_tls_ctx_destroy(struct tsr_site_tls_ctx *ctx); /* NULL ok; after its connections */

/*
 * A TLS connection over fd (connected or accepted; non-blocking; stays the
 * caller's: tsr_site_tls_free does not close it).  peer_name: the name the
 * other side's certificate must carry (its site's host name); on a server
 * context NULL or "" accepts any certificate chaining to the CA (a target
 * serving several source sites).  Errors: -EINVAL, -ENOMEM.
 */
int tsr_site_tls_new(struct tsr_site_tls_ctx *ctx, int fd, const char *peer_name,
		     struct tsr_site_tls **out);
void tsr_site_tls_free(struct tsr_site_tls *t); /* NULL ok */
/*
 * Drive the handshake (accept or connect, by the context).  0: done, the
 * peer is verified; -EAGAIN: wait per tsr_site_tls_want; -EACCES: we refused
 * the peer's certificate (tsr_site_tls_verify_error says why); -EPROTO: not
 * TLS 1.3, or the peer refused us (its alert is logged); -ECONNRESET: the
 * peer closed.  After an error the connection is dead: free it.
 */
int tsr_site_tls_handshake(struct tsr_site_tls *t);
/* Bytes read (> 0), 0 on a clean close by the peer, -EAGAIN, -EPROTO,
 * -ECONNRESET.  Only after a successful handshake (-ENOTCONN before). */
ssize_t tsr_site_tls_read(struct tsr_site_tls *t, void *buf, size_t len);
/* Bytes written (> 0, maybe fewer than len), -EAGAIN, -EPROTO,
 * -ECONNRESET, -ENOTCONN.  After -EAGAIN, retry with the same buf and len. */
ssize_t tsr_site_tls_write(struct tsr_site_tls *t, const void *buf, size_t len);
/*
 * tsr_site_tls_write for a stream of many records: all of buf (unless
 * -EAGAIN or an error comes first) goes into records that are queued and
 * sent together, one send per GATHER_MAX (272 KiB) instead of one per
 * 16 KiB record.  Returns the bytes accepted (> 0), like tsr_site_tls_write
 * (-EAGAIN before any: retry with the same buf and len; -ENOMEM for the
 * queue).  Accepted bytes the socket did not take yet stay queued
 * (tsr_site_tls_pending): wait for POLLOUT and call tsr_site_tls_flush.
 * Any later write, read or shutdown on t sends them first.
 */
ssize_t tsr_site_tls_write_gather(struct tsr_site_tls *t, const void *buf, size_t len);
/* tsr_site_tls_write_gather that leaves its records queued: they go with
 * the next gathered write's, when the queue is full, or by
 * tsr_site_tls_flush, so several buffers leave in one send.  Same returns. */
ssize_t tsr_site_tls_write_gather_more(struct tsr_site_tls *t, const void *buf, size_t len);
/* Send what a gathered write left queued: 0 nothing left, -EAGAIN (wait for
 * POLLOUT), -ECONNRESET (logged). */
int tsr_site_tls_flush(struct tsr_site_tls *t);
/* Bytes queued by a gathered write and not on the socket yet. */
bool tsr_site_tls_pending(const struct tsr_site_tls *t);
/* The send calls on t's socket that took bytes so far (handshake included). */
uint64_t tsr_site_tls_sends(const struct tsr_site_tls *t);
/* Send our close_notify (a clean end the peer's read sees as 0), without
 * waiting for the peer's.  0 sent, -EAGAIN, -ENOTCONN before the handshake,
 * the write errors. */
int tsr_site_tls_shutdown(struct tsr_site_tls *t);
/* POLLIN or POLLOUT: what the last -EAGAIN waits for (POLLIN before any). */
short tsr_site_tls_want(const struct tsr_site_tls *t);
/* The X509 verify result of the peer's certificate (X509_V_OK = 0, or
 * X509_V_ERR_*), meaningful after the handshake ended. */
long tsr_site_tls_verify_error(const struct tsr_site_tls *t);

/* ---- target side: ordered apply of one stream (engine/site/site_target.c) ----
 *
 * One struct per (stream, target volume), owned by one thread (the one whose
 * io it uses).  Pipelined: up to a window of frames (opts.window frames and
 * opts.window_bytes of WRITE payload) are in the store at once, checked at
 * submit time against the next expected seq (received + 1, not applied + 1):
 * a duplicate, a replay or a gap is refused before any I/O, so nothing on
 * the volume changes.  Frames go to the store in seq order; a WRITE or ZERO
 * whose byte range overlaps a frame still in the store waits until that one
 * completed (the last write of a block lands last), others do not wait.
 * BARRIER, SYNC_BEGIN, SYNC_END (and SNAPSHOT) are ordering points: they
 * wait until every earlier frame completed, then flush.  A MARKER only
 * takes its seq (no I/O): applied passes it once every earlier frame did.  applied moves only
 * through the contiguous prefix of completed frames, and callbacks fire in
 * seq order as applied passes their frame: a completion out of order waits
 * for the gap to fill.  After a crash, frames past applied may be partly on
 * the volume (several were in flight): the caller's state file therefore
 * says "not clean" while a stream is open, and after an unclean end the
 * volume counts as inconsistent until the source's replay (everything it had
 * sent past applied, then SYNC_END) is applied (TSR_SITE_F_REPLAY).  This
 * slice keeps applied in memory (the caller gives the resume point); a store
 * I/O error breaks the stream (every later call -EIO; the frames accepted
 * after it complete with -EIO once the ones in the store drained) since the
 * extent may be half written.
 */
struct tsr_site_target;

#define TSR_SITE_TARGET_WINDOW 32u              /* default opts.window */
#define TSR_SITE_TARGET_WINDOW_BYTES (16u << 20) /* default opts.window_bytes */

struct tsr_site_target_opts {
	struct tsr_vol *vol;   /* the target volume (written with TSR_WRITE_REPL); the caller's handle */
	struct tsr_io *io;     /* the owning thread's io; completions run from its poll */
	uint64_t stream;       /* frames of another stream are refused */
	uint64_t epoch;        /* lowest source epoch accepted (raised by newer frames) */
	uint64_t applied;      /* applied-through seq to resume from (0: a new stream) */
	bool consistent;       /* the volume equals a prefix of the history now */
	unsigned window;       /* frames accepted whose cb has not fired, at most;
				* 0: TSR_SITE_TARGET_WINDOW; 1..1024 */
	uint64_t window_bytes; /* WRITE payload bytes those frames hold, at most; 0: the
				* default; at least TSR_SITE_MAX_DATA (raised to it) */
};
/* Errors: -EINVAL missing vol/io, stream 0, window over 1024; -ENOMEM. */
int tsr_site_target_create(const struct tsr_site_target_opts *opts,
			   struct tsr_site_target **out);
/* No frame may be held (tsr_site_target_inflight 0).  NULL ok.  From inside
 * a cb the memory is freed once the callback returns. */
void tsr_site_target_destroy(struct tsr_site_target *t);

/*
 * Apply one frame: hdr from tsr_site_hdr_parse, payload its payload_len
 * bytes (WRITE: TSR_BLOCK_SIZE aligned, the caller's until cb; its data_crc
 * is checked here).  WRITE and ZERO change the volume; BARRIER flushes it
 * (then the caller sends the ACK of tsr_site_target_ack); SYNC_BEGIN clears
 * consistent and SYNC_END sets it (both after a flush, so that the caller
 * may persist the state once cb fired).
 * Async contract: returns 0 and cb_fn fires exactly once (from io's poll,
 * or from tsr_site_target_kick; never from inside this call), in seq order,
 * once applied includes the frame (0), or with -errno (-EIO, -ENOSPC from
 * the store; -EIO for a frame after one that failed), or returns -errno and
 * cb_fn never fires and nothing changed:
 *   -EILSEQ   WRITE/ZERO/SNAPSHOT/MARKER/SYNC_* seq != received+1, or BARRIER seq >
 *             received (received: the last seq accepted)
 *   -ESTALE   epoch below the stream's
 *   -EBADMSG  WRITE payload does not match data_crc
 *   -EPROTO   another stream, or an opcode that is not applied (HELLO, ...)
 *   -EINVAL   WRITE payload not block aligned; -ENOSPC past the volume's end
 *   -EBUSY    the window is full (tsr_site_target_room)
 *   -EOPNOTSUPP SNAPSHOT (not built in this slice: the stream stops there)
 *   -EIO      the stream broke earlier
 */
int tsr_site_target_apply(struct tsr_site_target *t, const struct tsr_site_hdr *hdr,
			  const void *payload, tsr_cb cb_fn, void *cb_arg);
/* A frame with payload_len bytes of WRITE payload (0: any other) fits in
 * the window now (the caller reads the next frame only then). */
bool tsr_site_target_room(const struct tsr_site_target *t, uint32_t payload_len);
/* Frames accepted whose cb has not fired yet. */
unsigned tsr_site_target_inflight(const struct tsr_site_target *t);
/* Issue again the frames the store had no queue room for (-EAGAIN from the
 * io), and complete what can be: callbacks may fire from inside.  Cheap
 * when nothing waits; call it whenever the owning thread is idle. */
void tsr_site_target_kick(struct tsr_site_target *t);
/* Applied-through seq (every frame up to it completed on the store). */
uint64_t tsr_site_target_applied(const struct tsr_site_target *t);
/* The volume equals a prefix of the source's history (no SYNC_BEGIN open,
 * no replay pending). */
bool tsr_site_target_consistent(const struct tsr_site_target *t);
/* The caller learned that the volume may hold frames past applied (an
 * unclean restart): consistent stays false until SYNC_END is applied. */
void tsr_site_target_set_inconsistent(struct tsr_site_target *t);
/* The ACK header to send now (seq = applied-through, the stream's epoch). */
void tsr_site_target_ack(const struct tsr_site_target *t, struct tsr_site_hdr *out);

/* ---- framing over a site TLS connection (engine/site/site_frame.c) ----
 *
 * Non-blocking, resumable: each call moves as many bytes as the socket
 * takes and returns -EAGAIN (wait for tsr_site_tls_want) until the frame is
 * whole.  The receiver parses the header as soon as it has 64 bytes (so a
 * bad header costs no payload read) and checks data_crc before handing the
 * frame out.
 */
struct tsr_site_rx {
	uint8_t hdr_buf[TSR_SITE_HDR_SIZE]; /* the header's bytes as received */
	struct tsr_site_hdr hdr;  /* valid once got >= TSR_SITE_HDR_SIZE */
	size_t got;               /* bytes of the current frame received, header first */
	uint8_t *payload;         /* where the current frame's payload goes: own, or the
				   * caller's buffer given by tsr_site_rx_set_payload */
	uint8_t *own;             /* TSR_SITE_MAX_DATA bytes, block aligned, owned */
	bool hold;                /* tsr_site_rx_hold: hand the header out first */
	bool need_buf;            /* hold: the header was handed out (2), no buffer given yet */
};
/* Errors: -ENOMEM. */
int tsr_site_rx_init(struct tsr_site_rx *rx);
void tsr_site_rx_fini(struct tsr_site_rx *rx);
/*
 * 1: a whole frame is in rx->hdr and rx->payload (hdr.payload_len bytes),
 * valid until the next call; 0: the peer closed cleanly between frames;
 * -EAGAIN; -EBADMSG / -EPROTO / -EMSGSIZE / -EPROTONOSUPPORT: a bad header
 * or payload checksum (the connection is then unusable: the stream has no
 * resync point); -ECONNRESET: closed mid-frame; the transport's errors.
 * With hold on: 2 once a frame's header is in (checked) and it has a
 * payload; the caller then names where the payload goes
 * (tsr_site_rx_set_payload) and polls on.  Until it does, poll reads
 * nothing and returns 2 again (the caller may wait, e.g. for room).
 */
int tsr_site_rx_poll(struct tsr_site_rx *rx, struct tsr_site_tls *t);
/* Hand headers out before their payload (2 above), on or off; between frames. */
void tsr_site_rx_hold(struct tsr_site_rx *rx, bool on);
/*
 * After poll returned 2: the payload of the frame in rx->hdr goes into buf
 * (hdr.payload_len bytes at least, block aligned for a WRITE; the caller's
 * until it is done with the frame: rx keeps no pointer after the next
 * frame starts), or into rx's own buffer when buf is NULL.
 */
void tsr_site_rx_set_payload(struct tsr_site_rx *rx, uint8_t *buf);

struct tsr_site_tx {
	uint8_t hdr_buf[TSR_SITE_HDR_SIZE]; /* the packed header */
	const uint8_t *payload;   /* the caller's, untouched until the frame is sent */
	size_t payload_len;       /* bytes of payload after the header */
	size_t sent;              /* bytes of the frame sent, header first */
};
/*
 * Prepare h (data_crc is computed here from payload) for sending.
 * Errors: -EINVAL the header would not pass tsr_site_hdr_parse, or a payload
 * is missing.
 */
int tsr_site_tx_start(struct tsr_site_tx *tx, const struct tsr_site_hdr *h,
		      const void *payload);
/* 1: all sent; -EAGAIN; the transport's errors. */
int tsr_site_tx_poll(struct tsr_site_tx *tx, struct tsr_site_tls *t);

/* ---- source side: one replicated volume's stream (engine/site/site_source.c) ----
 *
 * Runs on the source volume's home worker, shared-nothing (or, with
 * opts.pump_worker, on that worker, the taps handing their entries over once
 * per loop pass of home): the volume's
 * replication taps (tsr_vol_set_hooks) append every acknowledged write to an
 * in-memory ordered log (sequence, extent, a copy of the data) in
 * acknowledgment order, and the same thread ships the log over one TLS
 * connection to the target site, frees entries once ACKed, and keeps at most
 * log_max_bytes of data.  Past that bound (a slow or dead link) the log
 * turns into a dirty-region bitmap: writes go on at full speed and only mark
 * regions; when the link is back, the regions are re-read from the live
 * volume and shipped between SYNC_BEGIN and SYNC_END while new writes are
 * logged again (ARCHITECTURE.md "Geo-replication" says why live reads plus
 * the log give a prefix at SYNC_END).  A new replication starts the same way
 * with every allocated extent dirty (initial copy).
 *
 * Connection: non-blocking connect + TLS (tsr_site_tls_*) + HELLO +
 * VOLUME_OPEN; the reply's seq is where the target is; the source resends
 * from there what its log still holds (or, when it cannot, a full delta of
 * its dirty regions).  A lost connection retries every retry_ms.  A BARRIER
 * goes out every barrier_ms (and after each SYNC_END); ACKs free the log.
 * An ERROR -ESTALE to VOLUME_OPEN (the target was promoted) demotes the
 * source: it fences host writes of the volume with -EROFS, stops shipping,
 * and calls on_demoted once.
 */
struct tsr_site_source;
struct tsr_vol;
struct tsr_worker;

enum tsr_site_state {
	TSR_SITE_CONNECTING = 1, /* no session yet (or retrying after a loss) */
	TSR_SITE_SYNCING,        /* shipping regions between SYNC_BEGIN and SYNC_END */
	TSR_SITE_STREAMING,      /* shipping the log; target consistent through acked */
	TSR_SITE_BEHIND,         /* log overflowed: regions marked, link down or slow */
	TSR_SITE_PAUSED,         /* tsr_site_source_pause */
	TSR_SITE_SPLIT,          /* demoted: the target was promoted; nothing ships */
};
const char *tsr_site_state_name(enum tsr_site_state st); /* "syncing", ... */

struct tsr_site_source_opts {
	struct tsr_vol *vol;          /* source volume: the caller's handle, held until stop returns */
	struct tsr_worker *worker;    /* vol's home worker (tsr_vol_home): the hooks run there */
	struct tsr_worker *pump_worker; /* where the log, the TLS session and the pump run
				       * (the hooks hand their entries over once per loop
				       * pass of worker); NULL or worker: all on worker.
				       * Ignored with group (markers cut the members' logs
				       * on one thread) */
	struct tsr_site_tls_ctx *tls; /* client context (server = false); outlives the source */
	const char *address;          /* target site's listener "HOST:PORT" (IPv4 or name) */
	const char *peer_name;        /* name the target's certificate must carry */
	const char *site;             /* our site name (HELLO) */
	const char *cluster;          /* our cluster id (HELLO) */
	const char *target_volume;    /* volume name at the target */
	const char *target_layout;    /* "replicas:R" | "ec:K+M" */
	uint64_t stream;              /* non-zero, stable for this replication */
	uint64_t epoch;               /* replication epoch sent in every frame */
	bool initial_copy;            /* start with every allocated extent dirty (new
				       * replication, or a source restart: the log is gone) */
	uint64_t log_max_bytes;       /* data bytes the log may hold; 0: 256 MiB */
	uint32_t region_size;         /* dirty bitmap granularity, power of 2 >= 4 KiB; 0: 64 KiB */
	uint64_t max_bps;             /* bandwidth cap in bytes/s of payload; 0: none */
	uint8_t compress;             /* enum tsr_site_compress for WRITE payloads
				       * (announced in VOLUME_OPEN); 0: none */
	bool compare_digests;         /* when a sync is due, ask the target for its region
				       * digests (VOLUME_OPEN TSR_SITE_F_DIGEST) and send only
				       * the regions that differ; needs region_size 64 KiB
				       * (TSR_SITE_DIGEST_REGION), else ignored */
	const char *group;            /* consistency group (tsr_valid_name), NULL or "": none.
				       * Every member's volume must have the same home worker
				       * (else start is -EXDEV); the sources append a MARKER to
				       * every member's log at one moment (ARCHITECTURE.md) */
	unsigned group_members;       /* with group: members the group has, 1..
				       * TSR_SITE_GROUP_MAX (announced to the target) */
	unsigned group_interval_ms;   /* with group: marker period; 0: 200 */
	const char *marker_file;      /* with group: the file persisting the group's marker
				       * counter (created; written once per 65536 markers),
				       * so numbers keep growing across restarts whatever the
				       * clock does.  NULL: numbered by the wall clock, not
				       * persisted.  The first member started names it */
	unsigned barrier_ms;          /* 0: 100 */
	uint32_t send_batch;          /* host bytes logged that start a send at once; below
				       * it they go at the next 10 ms tick. 0: 256 KiB; 1:
				       * every write at once (ARCHITECTURE.md "Send batching") */
	unsigned retry_ms;            /* 0: 1000 */
	/* Called once on the worker when the target refused us as stale
	 * (promoted there); may be NULL. */
	void (*on_demoted)(void *arg, const char *why);
	void *cb_arg;
};
/*
 * Start replicating: installs the volume's hooks on the worker and begins
 * connecting.  Any thread (control); returns when the hooks are installed,
 * so every write acknowledged after the return is in the log.  Errors:
 * -EINVAL a missing option, -EBUSY the volume already has hooks, -ENOMEM,
 * -EXDEV opts.group's other members run on another worker, the I/O errors of
 * opts.marker_file (the group's first member).
 */
int tsr_site_source_start(const struct tsr_site_source_opts *opts,
			  struct tsr_site_source **out);
/* Remove the hooks, close the connection (a clean close), free.  Control
 * thread only (waits for the worker).  NULL ok. */
void tsr_site_source_stop(struct tsr_site_source *s);
/* Stop shipping (the log fills then overflows to the bitmap) / go on. */
void tsr_site_source_pause(struct tsr_site_source *s, bool paused);
/*
 * The volume is about to grow to size (a multiple of 4 KiB): have the
 * target grow first.  The source takes size as its own (bitmaps, the size in
 * VOLUME_OPEN; region reads stop at the volume's real end until it grows),
 * ends its session and opens it again announcing size; the target grows its
 * volume before it answers (ops.open_volume; EBUSY while its old session
 * closes and EINPROGRESS while it grows are retried 100 ms apart), and the
 * frames not ACKed are resent behind the reopen as after any reconnect.
 * Async contract: returns 0 and cb_fn(cb_arg, status, why) fires exactly
 * once, on the source's worker thread (it may fire before this returns; post
 * it to your own loop), or returns 1 (the source is that large already) or
 * -errno with why and cb_fn never fires.  status: 0 the target took size;
 * -ENOTCONN the session was lost during the reopen; -ETIMEDOUT no answer in
 * timeout_ms (the worker's timer); -ESTALE demoted meanwhile; -ESHUTDOWN the
 * source stopped; otherwise the target's errno with its sentence in why.
 * Refusals at once: -EINVAL a bad size, -ENOTCONN no session is open (link
 * down, connecting, paused), -ESTALE demoted, -EBUSY another grow runs,
 * -ESHUTDOWN stopping, -ENOMEM.  On any error the source goes on at its old
 * size.  Control thread only (waits briefly for the worker); call before the
 * volume's layout grows (nothing past the old end is written before).
 */
typedef void (*tsr_site_grow_fn)(void *cb_arg, int status, const char *why);
int tsr_site_source_grow_async(struct tsr_site_source *s, uint64_t size, unsigned timeout_ms,
			       tsr_site_grow_fn cb_fn, void *cb_arg, char *why, size_t why_len);
/* The same, waiting for the answer: 0 the target is at least size bytes
 * (also when the source is that large already), else -errno as above. */
int tsr_site_source_grow(struct tsr_site_source *s, uint64_t size, unsigned timeout_ms,
			 char *why, size_t why_len);

struct tsr_site_source_stats {
	enum tsr_site_state state;
	uint64_t next_seq;        /* next wire seq to assign */
	uint64_t sent_seq;        /* highest wire seq sent on the current session */
	uint64_t acked_seq;       /* highest seq the target ACKed (durable there) */
	uint64_t log_entries;     /* entries held (not yet ACKed) */
	uint64_t log_bytes;       /* data bytes held */
	uint64_t lag_bytes;       /* bytes acknowledged here and not ACKed there */
	double lag_sec;           /* age of the oldest entry not ACKed (0 when none) */
	uint64_t dirty_bytes;     /* bytes of marked regions still to ship */
	uint64_t sync_total_bytes, sync_done_bytes; /* current SYNC (0 when none) */
	uint64_t bytes_shipped;   /* payload bytes sent since start (all frames; a
				   * compressed WRITE counts its logical length) */
	uint64_t region_bytes_shipped; /* of which region re-copies (initial + delta) */
	uint64_t region_bytes_same; /* region bytes not sent: equal at the target (digests) */
	bool last_sync_compared;  /* the last sync skipped equal regions (false: every marked
				   * region was sent: a full copy of them) */
	uint64_t frames_shipped;
	uint64_t tls_writes;      /* sends on the TLS connections (tsr_site_tls_sends, all
				   * sessions): the records of the pump's gathered writes
				   * (the run of log entries' frames, the 256 KiB batch)
				   * leave together, so 4 KiB frames that wait together
				   * take about one send per 62 frames, not two per frame
				   * (unbatched) or one per four (a send per record) */
	uint64_t handover_ranges; /* split source (pump_worker): ZERO, MARK and OVER entries
				   * made on home and not taken into the log yet (read
				   * live); bounded (review s20-revM B4) */
	uint64_t log_allocs;      /* log memory taken from malloc: 256 KiB slabs, which hold
				   * the frames of entries up to 64 KiB and are recycled
				   * (up to 16.25 MiB of them kept while the log is in
				   * use: pool_bytes), and larger WRITE
				   * entries; a steady stream stops allocating */
	uint64_t pool_bytes;      /* log memory kept for the next writes: empty slabs on
				   * the free list and spare entry records; given back
				   * (slabs unmapped) once the log has been empty for 2 s */
	uint64_t slab_bytes;      /* 256 KiB slabs mapped: those holding log frames, the
				   * one being filled and the free list's */
	uint64_t compress_in_bytes;  /* WRITE payload bytes offered to the compressor
				      * (0 when compression is off) */
	uint64_t compress_out_bytes; /* what those took on the wire (raw when it did
				      * not make a frame smaller); ratio = in / out */
	uint64_t frames_compressed;  /* WRITE frames sent with TSR_SITE_F_COMPRESSED */
	uint64_t overflows;       /* times the log turned into the bitmap */
	uint64_t reconnects;      /* sessions started after the first */
	uint64_t full_copies;     /* sessions whose target held less than it had ACKed (a
				   * volume created again there): the whole volume went again */
	uint64_t markers_sent;    /* consistency group: MARKER frames sent */
	uint64_t last_marker;     /* number of the last MARKER sent (0: none) */
	double rate_bps;          /* payload bytes/s over the last few seconds */
	double eta_sec;           /* to ship what is behind at rate_bps; 0 when none */
	char last_error[TSR_SITE_LAST_ERROR_MAX]; /* the last session's failure, "" when none */
	int64_t counted_ns; /* tsr_mono_ns at which the worker took these counters
			     * (0: not yet): a change acknowledged to the host
			     * before it is in them (log, dirty or, split, handed
			     * over); so log_entries, lag_bytes, dirty_bytes and
			     * handover_ranges all 0 with counted_ns past a time T
			     * say the target has ACKed every change acked before T */
};
/* A consistent copy of the counters.  Any thread (a small per-source
 * mutex, taken by the worker at most once per loop pass). */
void tsr_site_source_stats(struct tsr_site_source *s, struct tsr_site_source_stats *out);

/* ---- target side: the site listener's sessions (engine/site/site_server.c) ----
 *
 * Accepts TLS connections from source sites (any certificate chaining to
 * the configured CA), one stream per connection.  After HELLO and
 * VOLUME_OPEN the session moves to the target volume's home worker and
 * applies frames there through tsr_site_target, sends an ACK after each
 * BARRIER (and at least every 100 ms while applying), and persists its
 * stream state in DIR/<state_dir>/<volume>.state at each ACK (below).
 *
 * State file (one 4 KiB block, O_DIRECT + FUA through the worker's io,
 * little endian):
 *   off size field
 *    0   4   magic "TSST"        4  4  version 1, or 2 with a target id
 *    8   8   stream             16  8  epoch (highest seen)
 *   24   8   applied            32  4  flags: 1 consistent, 2 clean close,
 *                                          4 promoted, 8 fresh (version 2: a
 *                                          re-created target, nothing applied
 *                                          yet: each open replies FRESH)
 *   36  64   source site (NUL padded)   100 64 source cluster
 *  164  64   volume name        228  4  reserved 0
 *  232   8   consistency group: newest MARKER applied through applied (0: none)
 *  240  64   consistency group name (NUL padded; empty: none, then marker 0)
 *  304  64   version 2: the target volume's identity (open_volume's id, NUL
 *            padded); version 1: zero (unknown, taken as this volume's)
 *  ... zero ...                4092  4  CRC32C of bytes 0..4091
 * A state file whose id is not the opened volume's describes a volume
 * deleted since: the stream starts over at applied 0 (TSR_SITE_F_FRESH).
 * A file that fails its checks is refused with a log line (the volume is
 * then not served as a target until an operator acts).
 */
struct tsr_site_server;

struct tsr_site_server_ops {
	/*
	 * Find or create (size bytes, layout o->parsed) the target volume named
	 * in o, attached on this node with host writes fenced (-EROFS), and
	 * return a handle in *out (the server puts it).  Runs on the control
	 * thread (it may block on cluster operations).  Errors go back to the
	 * source as ERROR: -EEXIST a volume of that name that is no replication
	 * target of this stream, -EKEYREVOKED the volume was promoted at this
	 * site and was this stream's target (whatever this node's state file
	 * says: the promote may have run on another node of the site; sent as
	 * -ESTALE, as a promoted state file is: the source demotes itself),
	 * -EINVAL a bad layout, -ENOSPC, others.  An
	 * existing volume smaller than size is grown first (its source grew).
	 * On an error a sentence for the source may be put in why (else the
	 * server words one).  On success id gets the volume's identity, which
	 * changes when it is deleted and created again (the cluster: its
	 * record's uuid; tsr_valid_name), or "" when there is none.
	 */
	int (*open_volume)(void *arg, const struct tsr_site_hello *from,
			   const struct tsr_site_open *o, uint64_t size, uint64_t stream,
			   struct tsr_vol **out, char id[TSR_SITE_NAME_MAX + 1], char *why,
			   size_t why_len);
	/*
	 * May be NULL (never).  Failback: volume has a state file of another
	 * stream (or of one since promoted here) and stream, from the site in
	 * from, asks for it.  1: stream replaces it (a fresh state: applied 0,
	 * not consistent), then open_volume as for a new stream; 0: refused as
	 * before (EEXIST, or ESTALE when promoted); -EAGAIN: not yet (the
	 * source is told EBUSY and retries).  Control thread.
	 */
	int (*may_replace)(void *arg, const struct tsr_site_hello *from, const char *volume,
			   uint64_t stream);
	/*
	 * May be NULL (no check).  The identity of the volume named volume
	 * now, as open_volume gives it, without opening it: 0 and id, -ENOENT
	 * no such volume, others (the server then cannot tell, and goes on as
	 * without the op).  A state file whose target id differs from it (or
	 * with no volume) is of a target deleted since: VOLUME_OPEN drops it
	 * before it looks at its stream or promoted flag, promote refuses
	 * (-EIDRM).  Control thread.
	 */
	int (*volume_id)(void *arg, const char *volume, char id[TSR_SITE_NAME_MAX + 1]);
	void *arg;
};

struct tsr_site_server_opts {
	struct tsr_site_tls_ctx *tls;           /* server context; outlives the server */
	struct tsr_worker *const *workers;      /* handshake workers (round robin) */
	unsigned n_workers;
	const char *state_dir;                  /* directory of the state files (created) */
	const char *site;                       /* our site name (HELLO) */
	const char *cluster;                    /* our cluster id (HELLO) */
	struct tsr_site_server_ops ops;
	/* the control thread's libev loop: open_volume runs there */
	struct ev_loop *loop;
};
/*
 * The most connections one site server holds that have not finished the TLS
 * handshake (the peer not authenticated yet): tsr_site_server_accept closes
 * one more at once (-EBUSY).  With the deadline below, what a peer without a
 * certificate can hold is bounded: this many sockets (2 fds each: the socket
 * and its timer) for at most 10 s each.  Authenticated sessions are not
 * counted.
 */
#define TSR_SITE_UNAUTH_MAX 64u
/*
 * Errors: -EINVAL, -ENOMEM, mkdir's.  A connection that has not sent its
 * VOLUME_OPEN within 10 s of its accept (TLS handshake, HELLO and VOLUME_OPEN
 * together) is closed, logged once.  Tests only: TSR_TEST_SITE_EARLY_MS (100
 * .. 10000, read at start) shortens those 10 s.
 */
int tsr_site_server_start(const struct tsr_site_server_opts *opts,
			  struct tsr_site_server **out);
/* Close every session (cleanly: the state files say so), put the volume
 * handles open_volume gave (held until here), and free.  Control thread;
 * before the workers stop. */
void tsr_site_server_stop(struct tsr_site_server *s);
/* A connection accepted by the caller (non-blocking; the server owns fd
 * from here, also on error).  Control thread.  Errors: -ENOMEM, -ESHUTDOWN,
 * -EBUSY refused and closed: TSR_SITE_UNAUTH_MAX connections have not
 * finished their handshake (logged here: the first at once, those after it
 * counted, one line per 10 s while they come). */
int tsr_site_server_accept(struct tsr_site_server *s, int fd);

struct tsr_site_target_info {
	char volume[TSR_SITE_NAME_MAX + 1];
	char source_site[TSR_SITE_NAME_MAX + 1];
	char source_cluster[TSR_SITE_NAME_MAX + 1];
	uint64_t stream, epoch, applied;
	bool connected;          /* a session is applying now */
	bool consistent;
	bool promoted;           /* its state says promoted, and is this volume's (not of a
				  * target deleted since: ops.volume_id) */
	uint64_t bytes_applied;  /* payload bytes since start */
	double last_frame_age_sec; /* since the last frame applied (-1: none) */
	char group[TSR_SITE_NAME_MAX + 1]; /* consistency group, "" none */
	uint64_t marker;         /* group: the newest marker applied and durable (0: none) */
	unsigned group_members;  /* group: members announced (0: unknown since start) */
	uint64_t group_reach;    /* group: the marker every held member has received */
	char group_blocker[160]; /* group: which member holds the group back, a sentence */
};
/* The target volumes this node has state files for (control thread).
 * Returns how many exist (may exceed max; fills min(max, that)). */
size_t tsr_site_server_list(struct tsr_site_server *s, struct tsr_site_target_info *out,
			    size_t max);
/*
 * Failover: end volume's stream for good (its session is closed, later
 * VOLUME_OPENs of that stream get ERROR -ESTALE, another stream's -EEXIST),
 * write the state promoted, and lift the
 * volume's write fence (on the handle open_volume gave since start: with no
 * session since then the server holds none, and the caller lifts it).
 * Control thread; blocks until the session's last frame and state write are
 * done.  Errors: -ENOENT not a target here, -EIDRM the state file is of a
 * target deleted since (ops.volume_id: the volume now of that name is
 * another one, or none; nothing changed), -EBUSY not consistent (a SYNC was
 * open, or a replay pending) unless force, -EALREADY promoted, -EUCLEAN a
 * damaged state file (logged), the file's I/O errors.
 */
int tsr_site_server_promote(struct tsr_site_server *s, const char *volume, bool force);
/*
 * Failover of a consistency group: end every member's session (the frames
 * in flight drain, the states are written), check that every member the
 * group announced has a state here, is consistent and sits at the same
 * marker, then promote each (as above).  *marker: that marker.  Control
 * thread, blocking.  Errors: -EINVAL bad name, -ENOENT no member here,
 * -EBUSY members not consistent or at different markers (unless force:
 * each member is then promoted as it is), -EALREADY all promoted, others
 * as tsr_site_server_promote (msg says which member).
 */
int tsr_site_server_promote_group(struct tsr_site_server *s, const char *group, bool force,
				  uint64_t *marker, char *msg, size_t msg_len);

#endif
