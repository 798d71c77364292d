/*
 * Tessera local store (DESIGN.md layer 5): the volumes a node keeps on its own
 * disk, in a data directory of sparse files or on a raw block device.
 *
 * Catalogue: a SQLite database (DIR/store.db, WAL journal) with one row per
 * volume, each row carrying a CRC32C of its fields, checked on open.
 * Data: one sparse file per volume (or an extent of the raw device), written
 * with O_DIRECT through the calling thread's struct tsr_io, read with O_DIRECT
 * or, for host reads of files, through the page cache (tsr_svol_read).
 * Per-block CRC32C: see engine/store/store.c and docs/ARCHITECTURE.md for the
 * format and the crash recovery rule.
 *
 * Control functions (create/delete/resize/list) are blocking and run on the
 * control thread; data functions are asynchronous and may run on any worker
 * thread, each with its own struct tsr_io.  A volume handle may be used from
 * several threads at once.
 */
#ifndef TESSERA_STORE_H
#define TESSERA_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include "tessera/common.h"
#include "tessera/io.h"

struct tsr_store;
struct tsr_svol;

struct tsr_store_opts {
	const char *device; /* raw block device for volume data, or NULL: sparse files in dir */
	/*
	 * false (the default): host reads (tsr_svol_read) of volumes kept in
	 * files go through the kernel's page cache, by a second, buffered
	 * O_RDONLY fd per segment file, when the caller's io reads buffered fds
	 * asynchronously (tsr_io_buffered_reads_async).  true: every read is
	 * O_DIRECT (tesserad --read-cache off).  Writes are O_DIRECT either way;
	 * device mode reads O_DIRECT either way.
	 */
	bool read_cache_off;
};

struct tsr_vol_info {
	char name[64];
	char uuid[37];
	uint64_t size;       /* bytes, multiple of TSR_BLOCK_SIZE */
	uint64_t allocated;  /* bytes actually allocated on disk */
	int64_t created;     /* unix seconds */
	/* its open handles when read: tsr_store_vol_open sessions (a peer
	 * session, a local coordinator), which a detach waits to see closed
	 * (cluster/closewait.c); 0: closed.  Not its snapshots' readers (an NBD
	 * client of VOL@SNAP, a clone reading one): nobody's detach ends them,
	 * though they too hold the volume against a delete or a rollback. */
	unsigned sessions;
};

/*
 * Open (creating if absent) the store in dir; runs crash recovery.
 * Errors: -ENOENT/-EACCES dir, -EUCLEAN catalogue checksum mismatch,
 * -EINVAL bad device, -EBUSY store locked by another process.
 */
int tsr_store_open(const char *dir, const struct tsr_store_opts *opts,
		   struct tsr_store **out);
/* Clean shutdown: flush everything, mark clean.  All svols must be put. NULL ok. */
/* Early in shutdown (tsr_store_close runs it too): every rollback waiting
 * for a same-snapshot rollback of its volume, or starting such a wait
 * later, answers -ESHUTDOWN at once; a running rollback copy still
 * finishes (tsr_store_close waits for it). */
void tsr_store_closing(struct tsr_store *store);
void tsr_store_close(struct tsr_store *store);

/* Errors: -EINVAL bad name or size, -EEXIST, -ENOSPC (device mode). */
int tsr_store_vol_create(struct tsr_store *store, const char *name, uint64_t size,
			 struct tsr_vol_info *info_out);
/*
 * tsr_store_vol_create with flags: TSR_VOL_EC_CHUNK marks the volume as one
 * chunk column of an erasure-coded cluster volume (not an image: its
 * snapshots must not be served as images), kept durably in the catalogue row
 * (and its CRC).  Clones inherit it through their parent snapshot's volume.
 * unit: for TSR_VOL_EC_CHUNK, the EC stripe unit (a power of 2, 4 KiB..1
 * MiB); in file mode the volume then gets a redirect-on-write map cut in
 * units (engine/store/rowmap.c: volumes/<uuid>.map, and .row, 32 MiB of
 * spare slots written once); 0: none (every other volume).
 * Errors: as tsr_store_vol_create, -EINVAL unknown flags or a bad unit.
 */
#define TSR_VOL_EC_CHUNK 0x1u
int tsr_store_vol_create_flags(struct tsr_store *store, const char *name, uint64_t size,
			       unsigned flags, uint32_t unit, struct tsr_vol_info *info_out);
/*
 * Whether volume name (or, for a clone, the volume its parent snapshot
 * belongs to, recursively, hidden ones included) was created with
 * TSR_VOL_EC_CHUNK.  Reads the catalogue (one row per level, as
 * tsr_store_snap_open does).  Stores made before the flag existed say false.
 * Errors: -ENOENT, -EUCLEAN, -EIO.
 */
int tsr_store_vol_ec_chunk(struct tsr_store *store, const char *name, bool *out);
/* Errors: -ENOENT, -EBUSY (open handles, read-only snapshot handles included).
 * With clones depending on its snapshots the volume is hidden instead (see below). */
int tsr_store_vol_delete(struct tsr_store *store, const char *name);
/* Grow only.  Errors: -ENOENT, -EINVAL (not a multiple of 4 KiB, or a shrink), -ENOSPC. */
int tsr_store_vol_resize(struct tsr_store *store, const char *name, uint64_t new_size);
/* Whether tsr_store_vol_resize could grow name to new_size now (changes
 * nothing; the space is not reserved: a grow may still fail).  0 also when
 * new_size is the size.  Errors as tsr_store_vol_resize. */
int tsr_store_vol_resize_check(struct tsr_store *store, const char *name, uint64_t new_size);
/* Errors: -ENOENT. */
int tsr_store_vol_info(struct tsr_store *store, const char *name, struct tsr_vol_info *out);
/* *out is malloc'd (free()); sorted by name. */
int tsr_store_vol_list(struct tsr_store *store, struct tsr_vol_info **out, size_t *count);
/*
 * Bytes the store's volumes hold on disk, all of them: every file under
 * DIR/volumes (heads' data and their .crc, .dirty, .present and .stage files,
 * snapshot layers, hidden volumes kept for their clones, layers made ahead
 * of a snapshot) by its allocated blocks, plus each device-mode extent at its
 * size.  More than the sum of tsr_store_vol_list's allocated (heads' data
 * only).  Errors: -EIO (catalogue), -errno of opening DIR/volumes.
 */
int tsr_store_allocated(struct tsr_store *store, uint64_t *out);

/* Open a handle for I/O (refcounted: several opens share one).  -ENOENT. */
int tsr_store_vol_open(struct tsr_store *store, const char *name, struct tsr_svol **out);
void tsr_svol_put(struct tsr_svol *svol);
uint64_t tsr_svol_size(const struct tsr_svol *svol); /* current size (resize updates it) */

/*
 * Data path.  Async contract: returns 0 and cb_fn fires exactly once (from
 * tsr_io_poll on io's thread) with 0 or -errno; or returns -errno and cb_fn
 * never fires.  offset and len must be multiples of TSR_BLOCK_SIZE, within the
 * volume, len <= TSR_MAX_IO; buf must be TSR_BLOCK_SIZE aligned.
 * Call errors: -EINVAL misaligned, -ENOSPC past the end (NBD's error for that)
 * or, for writes, the data file system is full (nothing was changed).
 * Completion errors: -EIO (disk error or CRC mismatch, logged once per block),
 * -ENOSPC (writes: the file system is full; the old data still reads back).
 *
 * tsr_svol_read may be served by the page cache (tsr_store_opts.read_cache_off);
 * the cache is coherent with the O_DIRECT writes, trims and zeroes (the kernel
 * drops the range's cached pages on each), and every block read, from the
 * cache or the disk, is checked against its CRC.  tsr_svol_read_direct reads
 * the disk, never the cache (O_DIRECT, and it leaves no page in the cache):
 * for every read whose purpose is to check what is stored (scrub, SUMS,
 * verification), where a page cached before the medium went bad would hide
 * the damage.  Same arguments, contract and errors.
 */
int tsr_svol_read(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset,
		  uint32_t len, void *buf, tsr_cb cb_fn, void *cb_arg);
int tsr_svol_read_direct(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint32_t len,
			 void *buf, tsr_cb cb_fn, void *cb_arg);
#define TSR_WRITE_FUA 0x1u     /* durable (data and its CRCs) before completion */
#define TSR_WRITE_NO_HOLE 0x2u /* write_zeroes: allocate, do not punch */
int tsr_svol_write(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset,
		   uint32_t len, const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg);
/*
 * tsr_svol_write with the blocks' CRCs already known: sums[i] =
 * tsr_crc32c(0, block i of buf) (tsr_crc32c_blocks), len / TSR_BLOCK_SIZE
 * of them, read when the CRC entries are set (until cb_fn fires: keep them
 * as long as buf).  The caller vouches for them: a coordinator that computed
 * them once for every copy, a replica that checked them against the frame's
 * data_crc.  sums NULL is tsr_svol_write.  Same contract and errors.
 */
int tsr_svol_write_sums(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint32_t len,
			const void *buf, const uint32_t *sums, unsigned flags, tsr_cb cb_fn,
			void *cb_arg);
/* Everything completed before the call is durable when cb fires. */
int tsr_svol_flush(struct tsr_svol *svol, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg);
/* Deallocate: reads return zeros afterwards. */
int tsr_svol_trim(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset,
		  uint64_t len, tsr_cb cb_fn, void *cb_arg);
int tsr_svol_write_zeroes(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset,
			  uint64_t len, unsigned flags, tsr_cb cb_fn, void *cb_arg);
/*
 * Allocation map of [offset, offset+len): fills up to max extents in order,
 * *count set to how many.  Synchronous (lseek SEEK_DATA/SEEK_HOLE).
 */
int tsr_svol_block_status(struct tsr_svol *svol, uint64_t offset, uint64_t len,
			  struct tsr_extent *ext, size_t max, size_t *count);

/*
 * Coordinator epochs (DESIGN.md invariant 2).  Each volume keeps the highest
 * epoch a coordinator has opened it with, durably in the catalogue.
 * set_epoch raises it to epoch (blocking, control path or a rare peer OPEN);
 * Errors: -ENOENT, -ESTALE epoch is below the recorded one (equal is fine).
 * tsr_svol_epoch reads the current value without a lock (data path: a
 * writer whose epoch is below it is fenced).
 */
int tsr_store_vol_set_epoch(struct tsr_store *store, const char *name, uint64_t epoch);
uint64_t tsr_svol_epoch(const struct tsr_svol *svol);

/* Counters for status and tests. */
struct tsr_svol_stats {
	uint64_t reads, writes, flushes, trims;
	uint64_t bytes_read, bytes_written;
	uint64_t crc_errors;     /* blocks that failed their CRC on read */
	uint64_t cached_reads;   /* reads (of those in reads) issued through the page cache */
};
void tsr_svol_get_stats(const struct tsr_svol *svol, struct tsr_svol_stats *out);

/* ---- snapshots, clones, diffs (engine/store/snap*.c) ----------------------
 *
 * Model: every volume is a chain of layers.  The head (the writable volume)
 * keeps its data in place as before; a snapshot is a copy-on-write layer
 * holding the blocks the head has overwritten since the snapshot was cut.
 * Snapshots of one volume are ordered S1 (oldest) .. Sn (newest); each layer
 * has a data file, a CRC table (same format as a volume's) and a "present"
 * bitmap (1 bit per 4 KiB block): bit b set means this layer holds block b's
 * content at its cut (data, or zeros when its CRC entry says so).
 *
 * Reading snapshot Si at block b: the first of Si, Si+1, .., Sn whose present
 * bit b is set, else the head.  Reading the head of a clone: its own block
 * when the clone's present bit is set (written since the clone), else the
 * parent image (a snapshot of another volume, read the same way, clones of
 * clones nest).  A volume that is not a clone owns every block of its head.
 *
 * Writing head block b while the volume has snapshots: if Sn lacks b, the
 * head's current content of b is copied into Sn (read, write FUA, CRC entry,
 * present bit made durable) before the head write is issued; concurrent
 * writers of the same block wait for that copy.  Blocks Sn already holds, and
 * every write on a volume without snapshots, take the old path: one atomic
 * load extra.  Trim and write-zeroes copy the same way.
 *
 * diff(Sa, Sb) = union of the present bitmaps of Sa .. Sb-1 (head: .. Sn):
 * computed from the bitmaps, never from the data.
 *
 * Crash rule: a snapshot (or clone) exists whole or not at all: its files are
 * created and fsynced before its catalogue row is committed; files without a
 * row are removed at open.  Delete marks the row first and is finished at the
 * next open when interrupted; space comes back when it finishes.
 *
 * Dependencies: a snapshot that clones were made from, and a volume whose
 * snapshots clones were made from, are kept hidden (not listed, name free for
 * reuse) after delete until the last clone depending on them is deleted; so
 * deleting a source never breaks a clone.
 *
 * Device mode (tsr_store_opts.device): snapshots and clones are -EOPNOTSUPP.
 *
 * Concurrency: tsr_store_snap_create and tsr_store_snap_delete on a volume
 * that has open handles require that no write, trim or write-zeroes of it be
 * in flight for the duration of the call (the layout above quiesces: see
 * tsr_layout_snapshot); they check it and return -EBUSY otherwise.  Every
 * other function here needs the volume (or clone source) closed where noted.
 * All are blocking control functions (SQLite, file creation, fsync); create
 * takes a few ms whatever the volume size.
 *
 * Names: snapshot names follow the volume name rule (tsr_valid_name).
 */
#define TSR_SNAP_NAME_MAX 63

struct tsr_snap_info {
	char name[64];
	char uuid[37];
	int64_t created;     /* unix seconds */
	uint64_t seq;        /* order of cuts within the volume, 1-based, increasing */
	uint64_t size;       /* the volume's size at the cut */
	uint64_t allocated;  /* bytes this layer holds on disk */
	uint64_t exclusive;  /* bytes deleting it would free */
	uint32_t clones;     /* clones made from it that still exist */
	bool deleting;       /* its delete is accepted (the name is free) but its merge into
			      * the older snapshot is not finished: it runs in the
			      * background, or waits for space (tsr_store_snap_list_all) */
};

/* Cut a snapshot of volume vol now.  Errors: -ENOENT vol, -EEXIST snap name,
 * -EINVAL bad name, -EBUSY writes in flight, -EOPNOTSUPP device mode, -EIO. */
int tsr_store_snap_create(struct tsr_store *store, const char *vol, const char *snap,
			  struct tsr_snap_info *info_out);
/* tsr_store_snap_create of a snapshot size bytes large (0: the volume's size,
 * as tsr_store_snap_create): a make-up's cut of a snapshot that its other
 * copies cut before the volume grew (mirror_snap.c, ec_snap.c), so that the
 * snapshot has one size on every copy.  Its layer and row take that size;
 * reads of the snapshot (tsr_store_snap_open: its svol's size) end there,
 * and the head's writes past it copy nothing into it, as for a snapshot cut
 * before a grow.  No spare layer is used unless size is the volume's.
 * Errors as tsr_store_snap_create; -EINVAL size not a multiple of
 * TSR_BLOCK_SIZE or larger than the volume. */
int tsr_store_snap_create_sized(struct tsr_store *store, const char *vol, const char *snap,
				uint64_t size, struct tsr_snap_info *info_out);
/*
 * A create in two steps, for a caller that holds vol's writes (the local
 * layout's gate): the cut is made before this returns (name and seq checked,
 * the layer published in memory: writes from then on copy on write into
 * it), and done(arg, 0 or -errno) fires exactly once when the snapshot's row
 * is durable.  On a spare layer (tsr_store_snap_spare) of an open volume the
 * row is made final by the store's spare thread, which then calls done
 * (from that thread, no store lock held), so the caller may reopen its gate
 * at once; a crash before that leaves no snapshot and the head whole.
 * Returns 0: done fires later; 1: the whole create ran in this call (no
 * spare, or the volume is not open; the row is durable) and done never
 * fires; or the errors of tsr_store_snap_create: done never fires, nothing
 * was cut.  done with -EIO: the snapshot was not created (the cut layer goes
 * at the next open).
 */
int tsr_store_snap_create_async(struct tsr_store *store, const char *vol, const char *snap,
				tsr_cb done, void *arg);
/*
 * Keep (keep true) a spare layer ready for the next snapshot of vol: a
 * background thread of the store makes its files (created, sized, fsynced,
 * the directory fsynced) and maps them, so that tsr_store_snap_create only
 * commits the catalogue row and publishes the layer; each create asks for
 * the next spare.  keep false drops the spare (the volume is closed).  A
 * spare's row is pending (not listed): a crash leaves a row and files the
 * next open removes.  Without a spare a create makes the files itself.
 * Errors: -ENOENT vol, -EOPNOTSUPP device mode, -ENOMEM, -EAGAIN (thread).
 */
int tsr_store_snap_spare(struct tsr_store *store, const char *vol, bool keep);
/* Delete (hide, when clones depend on it).  Errors: -ENOENT, -EBUSY writes in
 * flight or read-only handles (tsr_store_snap_open) on the volume's snapshots. */
int tsr_store_snap_delete(struct tsr_store *store, const char *vol, const char *snap);
/* tsr_store_snap_delete for a caller that takes -ENOENT as an answer (a
 * make-up's replayed delete of a snapshot the copy may never have had): a
 * missing snapshot is logged at DEBUG, not ERROR.  Same errors. */
int tsr_store_snap_delete_missing_ok(struct tsr_store *store, const char *vol, const char *snap);
/* Oldest first; *out malloc'd (free()).  Errors: -ENOENT vol. */
int tsr_store_snap_list(struct tsr_store *store, const char *vol, struct tsr_snap_info **out,
			size_t *count);
/* tsr_store_snap_list with the snapshots whose delete is accepted but not
 * finished (deleting true; the merge runs on the store's merge thread, or
 * failed for want of space and is tried again at the next list or delete of
 * the closed volume, or the next start) in their place, oldest first.  A
 * deleting snapshot's name may already be taken again by a new snapshot.
 * Errors as tsr_store_snap_list. */
int tsr_store_snap_list_all(struct tsr_store *store, const char *vol,
			    struct tsr_snap_info **out, size_t *count);
int tsr_store_snap_info(struct tsr_store *store, const char *vol, const char *snap,
			struct tsr_snap_info *out);
/* tsr_store_snap_info without the space figures (allocated, exclusive and
 * clones left 0): the catalogue's row only, no layer is opened or scanned
 * (the reply to a create: a snapshot just cut holds no block yet).
 * Errors: -ENOENT vol or snap, -EOPNOTSUPP device mode, -EIO. */
int tsr_store_snap_row_info(struct tsr_store *store, const char *vol, const char *snap,
			    struct tsr_snap_info *out);

/*
 * Clone: a new volume name whose content is vol@snap (snap NULL: vol's head
 * now, through a hidden snapshot that lives as long as the clone), sharing
 * the unchanged blocks; O(1) in the volume size.  The clone is an ordinary
 * volume afterwards (I/O, snapshots, clones of it, resize, delete).
 * Errors: -ENOENT vol or snap, -EEXIST name, -EINVAL bad name, -EBUSY
 * (snap NULL and writes of vol in flight), -EOPNOTSUPP device mode.
 */
int tsr_store_vol_clone(struct tsr_store *store, const char *name, const char *vol,
			const char *snap, struct tsr_vol_info *info_out);
/*
 * A peer SNAP's store call (engine/peer/peer_server.c), run in a thread some
 * time after the coordinator's epoch was checked on the event loop: the
 * operation of tsr_store_snap_create_sized, tsr_store_snap_delete (missing_ok:
 * _missing_ok) or tsr_store_vol_clone, with epoch checked again against vol's
 * highest epoch under the lock tsr_store_vol_set_epoch raises it under, so a
 * newer coordinator's OPEN (on another connection) comes either after the
 * operation or before its refusal (DESIGN.md invariant 2).  Errors: theirs,
 * and -ESTALE epoch below vol's (nothing done).
 */
int tsr_store_snap_create_epoch(struct tsr_store *store, const char *vol, const char *snap,
				uint64_t size, uint64_t epoch);
int tsr_store_snap_delete_epoch(struct tsr_store *store, const char *vol, const char *snap,
				bool missing_ok, uint64_t epoch);
int tsr_store_vol_clone_epoch(struct tsr_store *store, const char *name, const char *vol,
			      const char *snap, uint64_t epoch);
/* Where a clone came from ("" / "" for an ordinary volume; hidden parents
 * are reported by their original names). */
int tsr_store_vol_parent(struct tsr_store *store, const char *name, char vol_out[64],
			 char snap_out[64]);

/*
 * Make the head of vol equal snap again (snapshots are kept, newer ones
 * too).  Copies only the blocks changed since snap; idempotent, so an
 * interrupted rollback is finished by running it again (until then the
 * catalogue says so and tsr_store_vol_open refuses the volume, -EAGAIN).
 * The data copy runs without the store's lock: meanwhile the catalogue
 * reads (vol_list, vol_info, snap_list/info, vol_space, allocated) and every
 * other volume's calls go on, and the calls that would open or change vol
 * (vol_open, snap_open, snapshot create/delete, clone from it, vol_delete,
 * resize and resize_check, set_epoch raising the epoch, snap_spare keep,
 * diff against the head, another rollback to another snapshot) answer
 * -EBUSY; another rollback to the same snapshot (a retry) waits for the
 * running one's end (30 min at most) and then runs again.
 * Errors: -ENOENT, -EBUSY volume open or a rollback of it running,
 * -ESHUTDOWN the store closing while this one waited (tsr_store_closing).
 */
int tsr_store_vol_rollback(struct tsr_store *store, const char *vol, const char *snap);
/* The same, fenced: -ESTALE (nothing done) when vol's epoch is past epoch
 * at the rollback's start, under the store's lock (a newer coordinator
 * opened the copy since the caller's own check). */
int tsr_store_vol_rollback_epoch(struct tsr_store *store, const char *vol, const char *snap,
				 uint64_t epoch);
/* The same two for callers on an event loop (review 16d N5): while a
 * rollback of vol to the same snapshot runs, -EBUSY at once instead of
 * waiting for its end. */
int tsr_store_vol_rollback_nowait(struct tsr_store *store, const char *vol, const char *snap);
int tsr_store_vol_rollback_epoch_nowait(struct tsr_store *store, const char *vol,
					const char *snap, uint64_t epoch);
/* Whether a rollback of vol runs now in this store (its callers' -EBUSY
 * messages: the answer may be stale by the time it is read). */
bool tsr_store_vol_rollback_running(struct tsr_store *store, const char *vol);
/* What a rollback of vol to snap that answered -EBUSY met, for its caller's
 * message (may be stale by the time it is read, as the one above). */
enum tsr_rollback_busy {
	TSR_ROLLBACK_BUSY_NONE = 0, /* no rollback of vol runs: the -EBUSY had another
				     * cause (the volume open) */
	TSR_ROLLBACK_BUSY_OTHER,    /* a rollback of vol to another snapshot runs */
	TSR_ROLLBACK_BUSY_SAME,     /* one to snap itself runs: the call was a _nowait
				     * one, or it still ran when the wait's bound
				     * (30 min) passed */
};
enum tsr_rollback_busy tsr_store_vol_rollback_busy(struct tsr_store *store, const char *vol,
						   const char *snap);
/* The sentence for that -EBUSY ("another rollback of this copy (to another
 * snapshot) is running; ...", or the same snapshot's, which says whether the
 * call waited: nowait, the caller used a _nowait entry point), written to
 * msg: true; false when no rollback of vol runs (msg untouched). */
bool tsr_store_rollback_busy_msg(struct tsr_store *store, const char *vol, const char *snap,
				 bool nowait, char *msg, size_t msg_len);

/*
 * Changed blocks between snap1 and snap2 (NULL: the head), as extents in
 * order, merged where adjacent.  *out malloc'd (free()); flags 0 where the
 * later point holds data, TSR_EXTENT_HOLE|TSR_EXTENT_ZERO where the block
 * reads as zeros there (trimmed or zeroed).  Errors: -ENOENT, -EINVAL snap2
 * older than snap1.
 */
int tsr_store_snap_diff(struct tsr_store *store, const char *vol, const char *snap1,
			const char *snap2, struct tsr_extent **out, size_t *count);

/* Read-only handle on a snapshot's image: tsr_svol_read and
 * tsr_svol_block_status work (allocation from the layers' metadata), writes
 * are -EROFS, size is the volume size at the cut.  Errors: -ENOENT. */
int tsr_store_snap_open(struct tsr_store *store, const char *vol, const char *snap,
			struct tsr_svol **out);
bool tsr_svol_readonly(const struct tsr_svol *svol);
/*
 * Scrub repair: make [offset, offset+len) of the image of the snapshot svol
 * (a tsr_store_snap_open handle) read buf, for a writer of epoch epoch.
 * Changes that snapshot's image only: the blocks go into its own layer;
 * where older snapshots read the same blocks through it, their current
 * bytes are kept in the layer before it first (engine/store/repair.c: the
 * rule, crash order).  Blocking (pread, pwrite, fdatasync under the store's
 * lock); the caller keeps writes of the range off the volume's head
 * meanwhile.  Errors: -EROFS (not a snapshot handle), -ESTALE (epoch below
 * the volume's), -EINVAL (alignment, len 0 or over TSR_MAX_IO), -ENOSPC
 * (past the snapshot's size, or the file system is full), -EBUSY (this
 * snapshot's neighbour or a newer one is being deleted, its merge running:
 * retry later), -ENOENT, -EIO.
 */
int tsr_svol_snap_repair(struct tsr_svol *svol, uint64_t epoch, uint64_t offset, uint32_t len,
			 const void *buf);

/* Space of a volume's head: allocated (bytes on disk in its own layer) and
 * exclusive (bytes no snapshot or clone shares, freed by deleting it with
 * all its snapshots: head + snapshots; when clones depend on its layers the
 * head stays hidden, and only the snapshots' own exclusive bytes count).
 * Errors: -ENOENT, -EOPNOTSUPP device mode. */
int tsr_store_vol_space(struct tsr_store *store, const char *vol, uint64_t *allocated,
			uint64_t *exclusive);


/* ---- staged chunk writes (EC transactions, ec.h) ----------------------------
 *
 * A per-volume journal (volumes/<uuid>.stage, format in docs/ARCHITECTURE.md
 * "Local store") that makes a stripe's chunk writes atomic across nodes: the
 * EC coordinator stages each participant's new bytes, then commits them
 * once every participant staged.
 *
 * Entry life: STAGED (bytes durable in the journal, not in place) ->
 * COMMITTED (marker durable, then the bytes written in place through the
 * normal write path, not FUA: durable through the journal until a release,
 * which flushes the volume first) -> forgotten (released, or superseded by a
 * newer txn staged for the same stripe on this volume).  Rules:
 *  - at most one live entry per stripe: staging txn T2 for stripe S forgets
 *    the older entry for S (the coordinator only stages T2 once T finished);
 *  - at an unclean open every committed, unreleased record (superseded ones
 *    too) is written in place again, in commit order (the in-place write
 *    may have been lost); the newest record per stripe decides the entry:
 *    STAGED -> kept STAGED for the coordinator to resolve, released -> gone;
 *  - release is durable before it returns; a released entry never comes back;
 *  - rollback, delete and snapshot restore of the volume drop its journal;
 *  - the journal holds at most TSR_STAGE_MAX_ENTRIES live entries (-ENOSPC).
 */
#define TSR_STAGE_MAX_ENTRIES 4096u

enum tsr_stage_state {
	TSR_STAGE_STAGED = 1,
	TSR_STAGE_COMMITTED = 2,
};

struct tsr_stage_entry {
	uint64_t txn;             /* coordinator's id, unique per volume, (epoch << 32) | n */
	uint64_t stripe;          /* stripe number (ec.h geometry) */
	uint64_t offset;          /* bytes in this volume, 4 KiB aligned */
	uint32_t length;          /* 4 KiB multiple, 1..1 MiB (TSR_EC_MAX_UNIT) */
	uint32_t participants;    /* bit p: stripe position p takes part in txn */
	enum tsr_stage_state state;
};

/*
 * Stage e->length bytes of buf for txn e->txn (e->state ignored): durable in
 * the journal when cb fires with 0; nothing in place changes.  Staging the
 * same txn again with the same offset/length replaces its bytes (retry).
 * Async contract as tsr_svol_write.  Errors: -EINVAL range/alignment/length,
 * -EEXIST txn known with another range, -ENOSPC journal full, -EROFS
 * read-only handle, -EOPNOTSUPP device mode, -EIO.
 */
int tsr_svol_stage(struct tsr_svol *svol, struct tsr_io *io, const struct tsr_stage_entry *e,
		   const void *buf, tsr_cb cb_fn, void *cb_arg);
/*
 * Commit txn: COMMITTED marker durable, then its bytes written in place
 * (not FUA: the journal keeps them durable until a release; copy-on-write
 * into the newest snapshot as for any write), then cb.
 * Committing a COMMITTED txn writes its bytes again (idempotent roll
 * forward).  Errors: -ENOENT txn unknown (never staged, released or
 * superseded), -EIO.
 */
int tsr_svol_stage_commit(struct tsr_svol *svol, struct tsr_io *io, uint64_t txn,
			  tsr_cb cb_fn, void *cb_arg);
/* Live entries, by txn; *out malloc'd (free()), NULL when count is 0. */
int tsr_svol_stage_list(struct tsr_svol *svol, struct tsr_stage_entry **out, size_t *count);
/*
 * Forget every live entry with txn <= txn_upto (STAGED ones are thereby
 * rolled back: their bytes were never in place); the volume's data is
 * flushed first (committed bytes durable in place), then one small journal
 * write, FUA; durable when cb fires with 0.  Never release a txn whose
 * commit has not called back (the flush would not cover its in-place
 * write).  The EC coordinator calls it in batches.
 * Async contract as tsr_svol_write.  Errors: -EIO.
 */
int tsr_svol_stage_release(struct tsr_svol *svol, struct tsr_io *io, uint64_t txn_upto,
			   tsr_cb cb_fn, void *cb_arg);

#endif
