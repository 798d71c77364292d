/*
 * Tessera erasure-coded layout (DESIGN.md layer 3, invariant 4): a volume
 * cut into stripes of k data chunks + m parity chunks (Reed-Solomon over
 * GF(2^8), ISA-L), chunk positions placed on k+m nodes in distinct failure
 * domains.  Two parts: the codec (engine/layout/ec_codec.c, a thin wrapper
 * over ISA-L) and the layout (engine/layout/ec*.c, a tsr_layout like the
 * mirror, driven by the coordinator on the attach node).
 *
 * Geometry (every function of this header and the cluster code agree):
 *   unit         stripe unit, bytes per chunk per stripe (4 KiB..1 MiB, power of 2)
 *   width        k * unit: volume bytes per stripe
 *   stripe s     volume bytes [s*width, (s+1)*width)
 *   data chunk d of stripe s (0 <= d < k): volume bytes s*width + d*unit ..+unit
 *   parity chunk j (0 <= j < m) is position k+j
 *   position p of stripe s lives on copy (p + s) % (k+m)  (parity rotates)
 *   on every copy, stripe s's chunk is at chunk-volume offset s*unit
 *   chunk volume: the store volume with the volume's name on each copy's
 *                 node, tsr_ec_chunk_volume_size(size) bytes
 */
#ifndef TESSERA_EC_H
#define TESSERA_EC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tessera/layout.h"
#include "tessera/store.h"
#include "tessera/worker.h"

#define TSR_EC_MAX_K 16u
#define TSR_EC_MAX_M 4u
#define TSR_EC_MIN_UNIT 4096u
#define TSR_EC_MAX_UNIT (1024u * 1024)
#define TSR_EC_DEFAULT_UNIT (64u * 1024)

/* ---- geometry --------------------------------------------------------- */

static inline uint64_t tsr_ec_stripes(uint64_t size, unsigned k, uint32_t unit)
{
	uint64_t width = (uint64_t)k * unit;

	return (size + width - 1) / width;
}

/* Bytes of the chunk volume each of the k+m copies holds. */
static inline uint64_t tsr_ec_chunk_volume_size(uint64_t size, unsigned k, uint32_t unit)
{
	return tsr_ec_stripes(size, k, unit) * unit;
}

/* Copy index holding position p (0..k+m-1) of stripe s. */
static inline unsigned tsr_ec_copy_of(uint64_t stripe, unsigned p, unsigned k, unsigned m)
{
	return (unsigned)((p + stripe) % (k + m));
}

/* Position that copy c holds in stripe s (inverse of tsr_ec_copy_of). */
static inline unsigned tsr_ec_position_of(uint64_t stripe, unsigned c, unsigned k, unsigned m)
{
	unsigned n = k + m;

	return (unsigned)((c + n - stripe % n) % n);
}

/*
 * Parse "K+M" (e.g. "4+2"): 1 <= k <= 16, 1 <= m <= 4.  Errors: -EINVAL
 * (with nothing written to k, m).
 */
int tsr_ec_parse(const char *s, unsigned *k, unsigned *m);
/* unit valid: power of 2 in [TSR_EC_MIN_UNIT, TSR_EC_MAX_UNIT]. */
bool tsr_ec_unit_valid(uint32_t unit);

/* ---- codec (ISA-L) ------------------------------------------------------ */

/*
 * One codec per (k, m); not thread-safe (decode tables are cached per
 * pattern of missing chunks): one per thread or per layout.  Chunk buffers
 * may have any alignment; len is any multiple of 64 (the engine uses 4 KiB
 * multiples).
 */
struct tsr_ec_codec;

/* Errors: -EINVAL k or m out of range, -ENOMEM. */
int tsr_ec_codec_create(unsigned k, unsigned m, struct tsr_ec_codec **out);
void tsr_ec_codec_destroy(struct tsr_ec_codec *c); /* NULL ok */

/* parity[0..m-1] = encode(data[0..k-1]), each len bytes. */
void tsr_ec_encode(struct tsr_ec_codec *c, size_t len, const uint8_t *const *data,
		   uint8_t *const *parity);

/*
 * chunks[0..k+m-1] (data then parity), len bytes each; present: bit p set
 * when chunks[p] holds position p's content.  Fills every chunk whose bit is
 * set in want (and clear in present) from any k present ones.  Buffers of
 * wanted chunks must be writable.  Errors: -EINVAL fewer than k present or
 * a bit beyond k+m; -ENOMEM.
 */
int tsr_ec_decode(struct tsr_ec_codec *c, size_t len, uint8_t *const *chunks, uint32_t present,
		  uint32_t want);

/*
 * Parity delta: data chunk d (0..k-1) changes from old_data to new_data;
 * update parity[0..m-1] in place so that it equals the encode of the new
 * data (ISA-L ec_encode_data_update on old ^ new).  scratch: len bytes.
 */
void tsr_ec_update(struct tsr_ec_codec *c, size_t len, unsigned d, const uint8_t *old_data,
		   const uint8_t *new_data, uint8_t *const *parity, uint8_t *scratch);

/* ---- layout -------------------------------------------------------------- */

/*
 * Rules (DESIGN.md invariants 1, 2, 4, 5, 7; docs/ARCHITECTURE.md
 * "Erasure coding" has the protocol and the recovery rule per crash point):
 *  - every write (full or partial stripe, write-zeroes) is a transaction per
 *    stripe: the coordinator computes the new chunks (full stripe: encode;
 *    partial: read the old column range from any k chunks, overlay, encode),
 *    stages each participant's new bytes on its copy (tsr_svol_stage /
 *    TSR_PEER_STAGE, durable there), and once every participant staged,
 *    commits them (tsr_svol_stage_commit / TSR_PEER_COMMIT); the host is
 *    acknowledged once every participant staged, before the commits (reads
 *    of the stripe and snapshot cuts wait for the commits).  Writes to one
 *    stripe run one at a time in arrival order;
 *  - txn ids: (epoch << 32) | counter, so a newer coordinator's ids are
 *    higher; the coordinator releases committed txns (TSR_PEER_RELEASE) in
 *    batches;
 *  - at create, on every reachable copy: list staged/committed entries
 *    (tsr_svol_stage_list / TSR_PEER_STAGE_LIST); per txn: committed
 *    anywhere, or staged on every participant whose copy is reachable and
 *    IN_SYNC -> roll forward (commit on all of them); otherwise roll back
 *    (release).  Then release
 *    everything older than this epoch.  A copy unreachable then is OUT_OF_SYNC
 *    and, when it returns, its entries are listed, the stripes they name
 *    rebuilt on it (with the dirty regions), and released;
 *  - reads: from the data chunk's copy when IN_SYNC, else decoded from any k
 *    IN_SYNC chunks of the same column range (counted in degraded_reads);
 *  - writes go on while at least min_in_sync (default k) copies are IN_SYNC
 *    (a copy that fails is recorded OUT_OF_SYNC through the hooks before any
 *    write that missed it is acknowledged, its dirty bitmap persisted in
 *    state_dir as for the mirror); below that they wait write_wait_ms, then
 *    -EIO;
 *  - a returning copy gets the chunks of the stripes in its dirty regions
 *    recomputed from k others (resync); a replacing copy gets every stripe's
 *    chunk (rebuild); progress in status (stripes_rebuilding);
 *  - trim: accepted and ignored (NBD allows it; data stays readable);
 *  - scrub: every stripe's parity recomputed from its data and compared;
 *    repair rewrites the chunks that disagree, choosing the content that
 *    every choice of k good chunks decodes to (a chunk failing its CRC is
 *    not good);
 *  - snapshots: cut on every IN_SYNC copy at one point of the write order,
 *    as the mirror does (the store snapshots each chunk volume).
 *
 * Fault switch for the write-hole test: when the environment variable
 * TESSERA_EC_CRASH_POINT is set at layout create to "staged:N" or
 * "committed:N", the coordinator process kills itself (SIGKILL) in the
 * first partial-stripe write once N participants have acknowledged that
 * step (stage or commit; N = 0 for "staged:0": after the old data was read,
 * before any stage is sent).  "acked:0": every participant staged, the host
 * write was acknowledged, no COMMIT is sent, and the process kills itself
 * 300 ms later (the NBD reply has gone out).  It logs "ec fault switch: ..."
 * first.  TSR_TEST_EC_RESYNC_HOLD_FILE=PATH (tests only): while PATH exists, a
 * resync or rebuild that has cleared a region starts no further one
 * (ec_resync.c; logs "resync held (test) after N regions").
 */
struct tsr_ec_opts {
	const char *name;
	uint64_t size;                /* volume bytes (4 KiB multiple) */
	unsigned k, m;
	uint32_t stripe_unit;         /* tsr_ec_unit_valid */
	uint64_t epoch;
	struct tsr_store *store;      /* this node's store (for a local chunk copy) */
	const char *state_dir;        /* dirty bitmaps: state_dir/<vol>.<node_id>.bitmap */
	struct tsr_worker *home;
	const char *node_id;
	const char *token;
	/*
	 * index = copy c of tsr_ec_copy_of.  full_resync counts only on a copy
	 * not recorded IN_SYNC (rebuilt whole); on an IN_SYNC one (attach.c's
	 * mark of the dead last coordinator's own copy) it is ignored: an IN_SYNC
	 * chunk copy changes in place only by COMMITs of txns in its stage
	 * journal, which the recovery at create lists like every copy's.
	 */
	struct tsr_layout_copy copies[TSR_LAYOUT_MAX_COPIES];
	unsigned n_copies;            /* k + m */
	unsigned min_in_sync;         /* 0: k */
	unsigned peer_timeout_ms;     /* 0: 5000 */
	unsigned write_wait_ms;       /* 0: 30000 */
	uint64_t resync_rate;         /* bytes/s, 0: unlimited */
	uint32_t region_size;         /* dirty-bitmap granule in chunk-volume bytes, 0: 1 MiB */
	/* The previous coordinator did not detach cleanly: scrub-verify after the
	 * staged-txn recovery (counted in status; repairs what disagrees). */
	bool converge;
	struct tsr_layout_hooks hooks;
};

/*
 * Build and start on opts->home (blocking, control thread): open sessions on
 * every reachable copy with opts->epoch, run the staged-txn recovery above,
 * start resyncs.  Returns once the volume can serve.  Errors: -ESTALE,
 * -EIO fewer than min_in_sync IN_SYNC copies reachable, -ENOENT a chunk
 * volume missing, -EINVAL opts (k, m, unit, n_copies, sizes), -ENOMEM.
 */
int tsr_layout_ec_create(const struct tsr_ec_opts *opts, struct tsr_layout **out);
bool tsr_layout_is_ec(const struct tsr_layout *l);

/* ---- snapshots (engine/layout/ec_snapread.c) ------------------------------ */

/*
 * Read-only layout over snapshot snap of the ec volume whose coordinator
 * layout is coord (attached on this node): data chunks read from each chunk
 * copy's snapshot (this node's store, or a peer session on "VOL@SNAP"),
 * decoded from any k copies when one cannot be read.  It runs on coord's
 * home worker (*home): every read must be issued there (else -EXDEV).
 * Writes, trims, write-zeroes and the snap op fail with -EROFS; flush is a
 * no-op; block status reports everything allocated.  Size: the volume's at
 * the cut (from this node's chunk copy when it holds one, else from the
 * chunk-volume snapshot of a copy that does).  It holds no reference on
 * coord once started and may outlive it.  A chunk copy without the snapshot
 * (away at the cut) is decoded around.  When this node's chunk copy lacks
 * snap, or is no source (not IN_SYNC, or missed operations pending), or the
 * node holds none, the other copies are asked first (a peer OPEN of
 * "VOL@SNAP" each, waited for here: at most the peer timeout + 1 s).  Any
 * thread.
 * Errors: -EINVAL coord not ec or bad name; -ENOMEM; -ENOENT no snapshot
 * snap: fewer than k copies hold it and the others answered that they lack
 * it (NBD: unknown export); -EHOSTUNREACH fewer than k confirmed it while
 * enough others could not be asked (away, out of sync, missed operations
 * pending, not answering) to leave it unknown; the store's errors opening
 * this node's chunk snapshot other than -ENOENT.
 */
int tsr_layout_ec_snap_create(struct tsr_layout *coord, const char *snap,
			      struct tsr_layout **out, struct tsr_worker **home);
bool tsr_layout_is_ec_snapshot(const struct tsr_layout *l);

/* One chunk copy's diff (chunk-volume offsets, as tsr_store_snap_diff gives
 * them); have = false when that copy could not give it. */
struct tsr_ec_chunk_diff {
	const struct tsr_extent *ext;
	size_t n;
	bool have;
};

/*
 * The volume's changed extents from its k+m copies' chunk diffs (diffs[c]
 * is copy c's): each data chunk's extents mapped to volume offsets by the
 * geometry above; for a copy without a diff, its data chunks count as
 * changed wherever a parity chunk of the same stripe column changed (a
 * superset, flags 0).  Clipped to size, sorted, merged where adjacent with
 * the same flags.  *out malloc'd (free()).  Errors: -EINVAL geometry,
 * -EHOSTUNREACH more than m copies without a diff, -ENOMEM.
 */
int tsr_ec_diff_map(unsigned k, unsigned m, uint32_t unit, uint64_t size,
		    const struct tsr_ec_chunk_diff *diffs, struct tsr_extent **out, size_t *count);

#endif
