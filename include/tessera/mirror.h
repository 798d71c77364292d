/*
 * Tessera mirror layout (DESIGN.md layers 2-3): a volume kept as N full
 * copies on N nodes, driven by its coordinator on the attach node.
 *
 * Threads: created and controlled from the control thread (tesserad's main
 * loop); all data-path work runs on one worker, the volume's home worker:
 * every tsr_layout_* data call must come from that worker with its io
 * (engine/vol moves NBD connections there).  Control calls below are
 * thread-safe unless marked otherwise.
 *
 * Rules (DESIGN.md invariants 1, 2, 3, 7):
 *  - a write is acknowledged once every IN_SYNC copy has it (FUA/FLUSH:
 *    durable on all of them);
 *  - a copy that fails or times out is recorded OUT_OF_SYNC in the metadata
 *    store (hooks.set_copy_state) before any write that missed it is
 *    acknowledged; while fewer than min_replicas copies are IN_SYNC, writes
 *    wait up to write_wait_ms for a copy to return, then fail with -EIO;
 *  - while a copy is OUT_OF_SYNC the regions written are set in its dirty
 *    bitmap, persisted in state_dir before the write is acknowledged;
 *  - a returning copy is RESYNCING: it receives new writes, and the dirty
 *    regions are copied to it from an IN_SYNC copy (region by region, host
 *    writes to a region being copied wait for it), throttled to resync_rate;
 *    then it is recorded IN_SYNC (hooks) and its bitmap emptied;
 *  - any copy answering -ESTALE means a newer coordinator exists: the layout
 *    is fenced, every I/O from then on fails with -EIO;
 *  - the local copy (if any) is written through the same epoch check as the
 *    remote ones (tsr_svol_epoch);
 *  - a snapshot (tsr_layout_snap, the layout's snap op) is cut on every
 *    IN_SYNC copy at one point of the write order; a copy that misses it
 *    (away, resyncing, or failing it: then OUT_OF_SYNC as for a write) has it
 *    recorded durably in state_dir/<vol>.<node_id>.snaps before the snap is
 *    acknowledged, and replayed on it (the same image) before its resync.
 */
#ifndef TESSERA_MIRROR_H
#define TESSERA_MIRROR_H

#include <stdbool.h>
#include <stdint.h>

#include "tessera/layout.h"
#include "tessera/store.h"
#include "tessera/worker.h"

#define TSR_MIRROR_MAX_COPIES 8

struct tsr_mirror_opts {
	const char *name;
	uint64_t size;
	uint64_t epoch;               /* from the metadata store's attach record */
	struct tsr_store *store;      /* this node's store (for a local copy) */
	const char *state_dir;        /* dirty bitmaps: state_dir/<vol>.<node_id>.bitmap */
	struct tsr_worker *home;      /* the worker that runs the data path */
	const char *node_id;          /* ours */
	const char *token;            /* cluster token for peer connections */
	struct tsr_layout_copy copies[TSR_MIRROR_MAX_COPIES];
	unsigned n_copies;
	unsigned min_replicas;        /* in-sync copies needed to acknowledge writes (>= 1) */
	unsigned peer_timeout_ms;     /* 0: 5000 */
	unsigned write_wait_ms;       /* below min_replicas: how long writes wait (0: 30000) */
	uint64_t resync_rate;         /* bytes/s, 0: unlimited */
	uint32_t region_size;         /* dirty-bitmap granule, power of 2 >= 64 KiB (0: 1 MiB) */
	/*
	 * The previous coordinator did not detach cleanly, so IN_SYNC copies may
	 * differ where its last writes were in flight: before create returns,
	 * make them identical (compare every block's CRC32C, copy differing
	 * blocks from the first IN_SYNC copy, local preferred).  resync counters
	 * count what this moved.  Every copy this did not compare (away, failing
	 * during the start-up or the converge, or OUT_OF_SYNC / RESYNCING in the
	 * record) may hold blocks of the dead coordinator's unacknowledged writes:
	 * it starts with every region dirty (full_resync, its bitmap opened all
	 * set and durable before any state is recorded) and its resync compares
	 * every block (copying only those that differ) once it is reachable.
	 */
	bool converge;
	struct tsr_layout_hooks hooks;
};

/*
 * Build the layout and start it on opts->home: open sessions on every
 * reachable copy with opts->epoch (which fences any older coordinator), and
 * start resyncs for copies that are reachable but not IN_SYNC.  Blocking,
 * control thread: returns once the volume can serve (at least min_replicas
 * IN_SYNC copies opened) or fails.  Errors: -ESTALE a copy has seen a newer
 * epoch, -EIO fewer than min_replicas IN_SYNC copies reachable, -ENOENT a
 * copy is missing on its node, -EINVAL opts, -ENOMEM.
 */
int tsr_layout_mirror_create(const struct tsr_mirror_opts *opts, struct tsr_layout **out);

/* The layout is a mirror (tsr_layout_name is "mirror"). */
bool tsr_layout_is_mirror(const struct tsr_layout *l);

/*
 * Control (layout.h, generic for every replicated layout): the mirror fills
 * copy_returned, replace_copy, fence, scrub_start and get_status:
 *  - copy_returned: copy idx's node is alive again (or has a new address):
 *    reconnect and resync.  Does not wait for the home worker.
 *  - replace_copy: replace copy idx by a new copy on another node (which
 *    already has an empty volume of the same name and size): full resync onto
 *    it.  Waits for the home worker.  -EBUSY another replace running.
 *    copy NULL: only check whether it would be refused now (-EIO fenced or
 *    closing, -EBUSY another replace running), changing nothing
 *    (tsr_layout_replace_check).
 *  - fence: the coordinator lost its attach lease: in force when it returns.
 *  - scrub_start: compare the CRC32C of every block of every IN_SYNC copy;
 *    repair a block that differs or fails its CRC from the copy the others
 *    agree with (the local copy on a tie).  -EBUSY scrub already running.
 */

#endif
