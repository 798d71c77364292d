/*
 * Tessera layout (DESIGN.md layer 3): how a volume's bytes map onto copies.
 * The coordinator (engine/vol) calls tsr_layout_*; layouts implement
 * include/tessera/layout_module.h.  Today there is one layout, "local": a
 * single copy in this node's store.  Mirror and EC layouts come with
 * replication; they fan each call out to the peer protocol (layer 4).
 */
#ifndef TESSERA_LAYOUT_H
#define TESSERA_LAYOUT_H

#include <stdbool.h>

#include "tessera/common.h"
#include "tessera/io.h"
#include "tessera/store.h"

struct tsr_layout;

/* A single local copy of volume name.  Errors: -ENOENT, -ENOMEM. */
int tsr_layout_local_create(struct tsr_store *store, const char *name,
			    struct tsr_layout **out);
void tsr_layout_destroy(struct tsr_layout *layout);
const char *tsr_layout_name(const struct tsr_layout *layout);
uint64_t tsr_layout_size(const struct tsr_layout *layout);

/* Same contracts as tsr_vol_* (vol.h). */
int tsr_layout_read(struct tsr_layout *l, struct tsr_io *io, uint64_t offset, uint32_t len,
		    void *buf, tsr_cb cb_fn, void *cb_arg);
int tsr_layout_read_direct(struct tsr_layout *l, struct tsr_io *io, uint64_t offset, uint32_t len,
			   void *buf, tsr_cb cb_fn, void *cb_arg);
int tsr_layout_write(struct tsr_layout *l, struct tsr_io *io, uint64_t offset, uint32_t len,
		     const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg);
int tsr_layout_flush(struct tsr_layout *l, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg);
int tsr_layout_trim(struct tsr_layout *l, struct tsr_io *io, uint64_t offset, uint64_t len,
		    tsr_cb cb_fn, void *cb_arg);
int tsr_layout_write_zeroes(struct tsr_layout *l, struct tsr_io *io, uint64_t offset,
			    uint64_t len, unsigned flags, tsr_cb cb_fn, void *cb_arg);
int tsr_layout_block_status(struct tsr_layout *l, uint64_t offset, uint64_t len,
			    struct tsr_extent *ext, size_t max, size_t *count);

/*
 * Snapshot operations that need a point in the write order (store.h): the
 * layout.c gate holds new writes, trims and write-zeroes back, waits for the
 * ones in flight, runs the layout's snap op (on every copy), then lets the
 * held ones go in their order.  Reads and flushes pass the gate.
 */
enum tsr_snap_op {
	TSR_SNAP_CREATE = 1, /* tsr_store_snap_create(volume, snap) */
	TSR_SNAP_DELETE = 2, /* tsr_store_snap_delete(volume, snap) */
	TSR_SNAP_CLONE = 3,  /* tsr_store_vol_clone(clone, volume, snap or NULL when "") */
};
struct tsr_snap_req {
	enum tsr_snap_op op;
	char snap[64];  /* "" for CLONE of the current content */
	char clone[64]; /* CLONE: the new volume's name */
	uint64_t size;  /* CREATE: the snapshot's size, 0 the volume's (a make-up's cut of
			 * a snapshot cut before the volume grew: tsr_store_snap_create_sized);
			 * 0 for the other ops */
	bool missing_ok; /* DELETE: a make-up's replayed delete; the copy may never
			  * have had the snapshot: -ENOENT logged below ERROR */
};
/*
 * Must run on the layout's home thread (the volume's home worker, vol.h);
 * cb_fn(cb_arg, 0 or -errno) fires exactly once, on that thread, when 0 is
 * returned.  A second request while one runs waits behind it.
 * Errors: -EOPNOTSUPP (layout without snapshots), -ENOMEM.
 */
int tsr_layout_snap(struct tsr_layout *l, const struct tsr_snap_req *req, tsr_cb cb_fn,
		    void *cb_arg);

/*
 * Give the layout a way to run a function on its home thread from another
 * thread: post(post_arg, fn, arg) must run fn(arg) on the home thread soon
 * and return 0, or return -errno and never run it.  With it a layout may
 * finish a snap request off the home thread (the local layout: a snapshot
 * create's catalogue row, made durable by the store's thread after the gate
 * reopened) and still call back there.  Without it (unit tests with no
 * workers) such work runs inside the gate.  Call before the first request,
 * on the home thread.
 */
typedef int (*tsr_layout_post_fn)(void *post_arg, void (*fn)(void *arg), void *arg);
void tsr_layout_set_home(struct tsr_layout *l, tsr_layout_post_fn post, void *post_arg);


/* ---- replicated layouts (mirror, ec): copies, states, control, status ---- */

/*
 * A copy is a whole replica (mirror) or one chunk position of every stripe
 * (ec: the node holding position p of stripe 0; ec.h says how positions
 * rotate).  Both layouts share the copy states, the metadata hooks, the
 * control calls and the status below, so the cluster code never asks which
 * layout it drives.
 */
#define TSR_LAYOUT_MAX_COPIES 20   /* ec 16+4 */

enum tsr_copy_state {
	TSR_COPY_IN_SYNC = 0,
	TSR_COPY_OUT_OF_SYNC = 1, /* away: writes tracked in its dirty bitmap */
	TSR_COPY_RESYNCING = 2,   /* back: receives writes, dirty regions being copied */
};
const char *tsr_copy_state_name(enum tsr_copy_state st); /* "in-sync", "out-of-sync", "resyncing" */

struct tsr_layout_copy {
	char node_id[64];
	char address[128];        /* "HOST:PORT" of the node's --listen; ignored when local */
	bool local;               /* this node: the store given in opts */
	enum tsr_copy_state state; /* as recorded in the metadata store at attach */
	/*
	 * No usable bitmap (bitmap file lost, or the copy's node was the last
	 * coordinator and may hold writes nobody acknowledged): every region is
	 * suspect.  An existing copy is resynced by comparing per-block sums
	 * (tsr_peer_sums) and copying only the blocks that differ; a brand-new
	 * copy (replace) receives every allocated region.
	 */
	bool full_resync;
	/*
	 * May be NULL.  The snapshot operations the copy missed as the metadata
	 * store records them (CopyRecord.missed_snaps): lines "c NAME\n" /
	 * "d NAME\n", oldest first; "" none.  Read during the call only.  The
	 * mirror replays them when the copy is rebuilt in full (its coordinator
	 * changed, or its bitmap is lost); otherwise its own journal, which
	 * matches its bitmap, says what it missed.  For replace_copy: every
	 * snapshot of the volume, which the new copy must get, for a
	 * coordinator that holds no IN_SYNC copy itself (one that does takes
	 * its own copy's list, read between two cuts).
	 */
	const char *missed;
};

struct tsr_layout_hooks {
	/*
	 * Record copy idx of volume vol, on node node_id (the slot's copy as the
	 * layout has it: a replaced slot's new copy from the moment the layout
	 * took it), as st in the metadata store; a record whose slot lists
	 * another node is not that copy's.  Called on the home worker; must not
	 * block it (hand the work to the control thread) and must call
	 * done(done_arg, status) exactly once, from any thread, once the state is
	 * durable (status 0) or could not be recorded (-errno: the layout then
	 * fails the writes that depended on it).
	 */
	void (*set_copy_state)(void *arg, const char *vol, unsigned idx, const char *node_id,
			       enum tsr_copy_state st, void (*done)(void *done_arg, int status),
			       void *done_arg);
	/*
	 * May be NULL.  Record the snapshot operations copy idx (on node_id: a
	 * slot replaced since is left alone) has missed, ops as in
	 * tsr_layout_copy.missed (copied before the call returns; "" none), in
	 * the metadata store; same thread and done rules as set_copy_state.  A
	 * layout acknowledges a snapshot operation that missed a copy only once
	 * this is done, so the next coordinator knows what to replay.  done's
	 * -ESHUTDOWN: the volume is detached (not recorded, nothing wrong).
	 */
	void (*set_copy_missed)(void *arg, const char *vol, unsigned idx, const char *node_id,
				const char *ops, void (*done)(void *done_arg, int status),
				void *done_arg);
	void *arg;
};


struct tsr_layout_copy_status {
	char node_id[64];
	enum tsr_copy_state state;
	bool connected;
	uint64_t dirty_bytes;         /* regions still to copy (OUT_OF_SYNC / RESYNCING) */
	/*
	 * The copy's store counters (tsr_svol_stats): a local copy's read
	 * here, a remote one's as its node last answered a peer STATS (asked
	 * every COPYSET_STATS_NS, never waited for).  Counted since the layout
	 * opened the copy (the attach; a replace's new copy from 0) and never
	 * lower than before while the layout runs: a remote node's counts from
	 * before its counters began again at 0 (it restarted or reopened the
	 * copy) stay added (copyset_stats_take).  counters_known false: no
	 * answer yet, or (counters_unsupported) the node's build does not
	 * serve STATS.
	 */
	bool counters_known, counters_unsupported;
	uint64_t crc_errors, cached_reads;
};

struct tsr_layout_status {
	uint64_t epoch;
	bool ready, fenced;
	unsigned n_copies, in_sync;
	struct tsr_layout_copy_status copies[TSR_LAYOUT_MAX_COPIES];
	/* resync / rebuild, the one running or the last one */
	bool resync_running;
	uint64_t resync_total_bytes, resync_done_bytes;
	double resync_rate_bps;       /* recent rate */
	uint64_t resync_eta_sec;
	/* counters since attach */
	uint64_t resync_bytes_copied;  /* every byte written to a copy by resync or rebuild */
	uint64_t resync_regions_copied;
	uint64_t resync_copies;        /* mirror: copy I/Os (a run of regions each) */
	uint64_t resync_flushes;       /* mirror: target flushes (one per batch of copies) */
	unsigned resync_max_inflight;  /* mirror: most copies in flight at once */
	uint64_t copy_buf_bytes_max;   /* mirror: most bytes of copy buffers allocated at once
					* (resync, repairs; each MIRROR_IO_PIECE at most) */
	uint64_t bitmap_writes;        /* mirror: dirty-bitmap page writes (FUA) on the coordinator */
	uint64_t writes, reads, write_errors, copy_failures;
	/* host reads this node's own copies served through the page cache
	 * (tsr_svol_stats.cached_reads of each local copy, since it was
	 * opened); reads of copies on other nodes count in those nodes' stores */
	uint64_t cached_reads;
	/* blocks of this node's own copies that failed their CRC on read
	 * (tsr_svol_stats.crc_errors of each local copy, since it was opened:
	 * host reads, scrub and resync reads alike); other nodes' copies count
	 * in those nodes' stores */
	uint64_t crc_errors;
	/* the same over every copy whose counters are known (copies[i].
	 * counters_known); copies_counted of n_copies */
	uint64_t crc_errors_all, cached_reads_all;
	unsigned copies_counted;
	/* scrub, the one running or the last one */
	bool scrub_running, scrub_done;
	uint64_t scrub_total_bytes, scrub_done_bytes;
	uint64_t scrub_mismatches, scrub_repaired, scrub_unrepaired;
	/*
	 * ec only (0 for a mirror): k, m, stripe unit; stripes in the volume;
	 * stripes with a chunk on a copy that is not IN_SYNC (degraded: reads of
	 * that chunk are decoded); stripes still to rebuild or resync on a
	 * returning or replacing copy; reads answered by decoding; partial-stripe
	 * transactions rolled forward / back at attach.
	 */
	unsigned ec_k, ec_m;
	uint32_t stripe_unit;
	uint64_t stripes_total, stripes_degraded, stripes_rebuilding;
	uint64_t degraded_reads;
	uint64_t txn_rolled_forward, txn_rolled_back;
	/* ec: stripes the last walk of each RESYNCING copy could not rebuild
	 * (its regions kept dirty, walked again; ec_resync.c rs_unrecoverable) */
	uint64_t stripes_unrebuilt;
};

/*
 * Control calls of replicated layouts (layout_module.h ops, "may be NULL":
 * then -EOPNOTSUPP, or nothing for the void ones, or a zeroed status).
 * Thread rules as written on each op.
 */
/* Copy idx's node is alive again (or a new address): reconnect and resync.
 * Does not wait for the home worker (safe under a lock the hooks take). */
void tsr_layout_copy_returned(struct tsr_layout *l, unsigned idx, const char *address);
/* Replace copy idx by a new copy on another node (which already has an empty
 * volume of the same name and the copy's size): full resync / rebuild onto
 * it; the old copy is dropped.  Waits for the home worker: not under a lock
 * that hooks.set_copy_state takes.  Errors: -EINVAL, -EBUSY another replace
 * running, -EOPNOTSUPP. */
int tsr_layout_replace_copy(struct tsr_layout *l, unsigned idx, const struct tsr_layout_copy *copy);
/* Would tsr_layout_replace_copy of slot idx be refused now for the layout's
 * own state?  The tests its replace makes before it takes the slot: -EBUSY
 * another replace running (mirror, ec: replace_running), -EIO fenced or
 * closing (ec: not ready), -EINVAL, -EOPNOTSUPP; 0: it would take it.
 * Changes nothing.  Waits for the home worker (not under a lock that
 * hooks.set_copy_state takes).  cluster_replace_replica asks before its
 * record write, so the common refusal writes nothing (review 14c, A).  The
 * layout op: replace_copy with copy NULL (layout_module.h). */
int tsr_layout_replace_check(struct tsr_layout *l, unsigned idx);
/* The coordinator lost its attach lease: fence (in force when it returns,
 * nothing is acknowledged after).  Does not wait for the home worker. */
void tsr_layout_fence(struct tsr_layout *l);
/* Scrub every block (mirror: copies agree; ec: parity matches data), repair
 * when asked; background, progress in status.  Waits for the home worker to
 * start it.  Errors: -EBUSY already running, -EIO fenced, -EOPNOTSUPP. */
int tsr_layout_scrub_start(struct tsr_layout *l, bool repair);
/*
 * Grow the volume to new_size while it is in use (a multiple of
 * TSR_BLOCK_SIZE, not smaller than now).  Control thread; waits for the home
 * worker (not under a lock that hooks.set_copy_state takes).  Every copy
 * must already be at least new_size (the caller grew them).  check_only:
 * change nothing, only say whether a grow could run now.  On return 0 the
 * layout's size is new_size: writes past the old end are accepted from then
 * on (never before).  Errors (why, may be NULL, says what to do): -EINVAL
 * (smaller, misaligned), -EBUSY (a copy not in sync or away, a resync,
 * rebuild, scrub or snapshot make-up running: wait for it), -EIO (fenced,
 * closing), -ENOMEM, -errno of the layout's state files, -EOPNOTSUPP (a
 * layout that cannot grow while in use).
 */
int tsr_layout_resize(struct tsr_layout *l, uint64_t new_size, bool check_only, char *why,
		      size_t why_len);
/* A consistent snapshot of the status (thread-safe); zeroed when the layout
 * has none. */
void tsr_layout_get_status(struct tsr_layout *l, struct tsr_layout_status *out);

#endif
