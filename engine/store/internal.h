/*
 * Private interfaces of the local store (engine/store), one section per file.
 * Callers outside this folder use include/tessera/store.h only.
 *
 * Lock policy (the whole of it, see also the header of store.c):
 * - store->lock guards the SQLite handle, the list of open volumes, every
 *   svol's refcount, and the growth of an svol's files and mappings (resize).
 *   Every control function holds it for its whole run except a rollback,
 *   whose data copy runs without it (snap.c tsr_store_vol_rollback,
 *   svol->rollback_running: the calls that would change or open that volume
 *   answer -EBUSY meanwhile, a second rollback to the same snapshot waits on
 *   store->rollback_end).
 * - svol->meta.dirty_lock guards the 0->1 transition of dirty-region bits
 *   (set the bit in the mmap'd bitmap, msync it or queue an fsync of the
 *   file on the writer's io, then publish it as durable), the list of those
 *   fsyncs in flight, and the clearing of the bitmap after a quiet flush;
 *   never held across an fsync queued on an io.
 * - layer->crc_sync.lock guards the group commit of a snapshot layer's .crc
 *   syncs by copy-on-write (cow.c, slow path only);
 *   svol->cow_lock is never held while taking them.
 * - svol->stage->lock guards the staging journal's index, tail and counters
 *   (stage.c), held briefly per staged-write call, never across I/O.
 * - The data path takes no lock: it reads svol->size, the segment fds, the
 *   crc mapping pointer and the durable-region bits with atomic loads, and
 *   counts stats with relaxed atomic adds.
 */
#ifndef TSR_STORE_INTERNAL_H
#define TSR_STORE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "tessera/store.h"

#define STORE_FORMAT_VERSION 1
#define STORE_MAX_VOL_SIZE   (1ull << 50) /* 1 PiB */
#define STORE_BLOCK_SHIFT    12           /* 4 KiB blocks */
#define STORE_REGION_SHIFT   20           /* 1 MiB dirty regions */
#define STORE_SEG_SHIFT      43           /* 8 TiB data segment files */
#define STORE_SEG_SIZE       (1ull << STORE_SEG_SHIFT)
#define STORE_MAX_SEGS       (STORE_MAX_VOL_SIZE >> STORE_SEG_SHIFT) /* 128 */
#define STORE_CRC_ENTRY      8u /* bytes per block in the crc table */
#define STORE_PAGE           4096u

/* ---- catalog.c: the SQLite catalogue (DIR/store.db) ---- */

/* One row of table volumes, as read back and checksum-verified. */
struct vol_row {
	char name[64];
	char uuid[37];
	uint64_t size;      /* bytes */
	int64_t created;    /* unix seconds */
	int64_t dev_offset; /* byte offset of the extent on the raw device; -1 = files */
	uint64_t epoch;     /* highest coordinator epoch accepted (0: none yet) */
	char parent[37];    /* clone: uuid of the snapshot layer it reads through, "" */
	uint32_t flags;     /* VOL_HIDDEN | VOL_ROLLBACK | VOL_EC_CHUNK */
	char orig[64];      /* hidden: the name it had before delete, else "" */
	uint32_t unit;      /* VOL_EC_CHUNK made with a map: the stripe unit G (bytes); else 0 */
};
#define VOL_HIDDEN   0x1u /* deleted, kept for clones: name ".h-<uuid>", orig = old name */
#define VOL_ROLLBACK 0x2u /* a rollback is running or was interrupted: opens refused */
#define VOL_EC_CHUNK 0x4u /* a chunk column of an ec volume (TSR_VOL_EC_CHUNK), set at create */

/* One row of table snapshots (format: see catalog.c). */
struct snap_row {
	char uuid[37];     /* its files: volumes/<uuid>.data[.N], .crc, .present */
	char vol_uuid[37]; /* the volume whose layer it is */
	char name[64];     /* "" for a from-volume clone's snapshot */
	uint64_t seq;      /* cut order within the volume, increasing */
	int64_t created;   /* unix seconds */
	uint64_t size;     /* the volume's size at the cut */
	uint32_t flags;    /* SNAP_* */
};
#define SNAP_HIDDEN   0x1u /* deleted by name but clones depend on it; not listed */
#define SNAP_DELETING 0x2u /* delete in progress: finished at the next open */
#define SNAP_AUTO     0x4u /* made for a from-volume clone, lives as long as the clone */
#define SNAP_PENDING  0x8u /* a spare layer's row (spare.c): not listed; attached only once
			    * cut; finished like a delete at the next open */
/* seq of pending rows: above every cut (2^62 + the order the spares were made) */
#define SNAP_PENDING_SEQ (1ull << 62)

/* Open or create DIR/store.db, check the format and every row's CRC.
 * device: the raw device path the store was created with must match ("" = files).
 * Errors: -EUCLEAN (row checksum), -EINVAL (format or device mismatch), -EIO. */
int catalog_open(const char *dir, const char *device, sqlite3 **out);
void catalog_close(sqlite3 *db);
/* -ENOENT, -EUCLEAN, -EIO. */
int catalog_get(sqlite3 *db, const char *name, struct vol_row *row);
/* All rows sorted by name (or by dev_offset when by_extent); *rows malloc'd. */
int catalog_list(sqlite3 *db, bool by_extent, struct vol_row **rows, size_t *count);
/* -EEXIST, -EIO. */
int catalog_insert(sqlite3 *db, const struct vol_row *row);
int catalog_delete(sqlite3 *db, const char *name);
int catalog_update_size(sqlite3 *db, const struct vol_row *row);
/* Store row->epoch (and the row's new CRC); durable on return.  -ENOENT, -EIO. */
int catalog_update_epoch(sqlite3 *db, const struct vol_row *row);
/* CRC32C of a row as stored in column crc (format: see catalog.c). */
uint32_t catalog_row_crc(const struct vol_row *row);
/* Any row, hidden ones included, by uuid.  -ENOENT, -EUCLEAN, -EIO. */
int catalog_get_uuid(sqlite3 *db, const char *uuid, struct vol_row *row);
/* Rewrite name, parent, flags and orig of the row that is now called old_name. */
int catalog_update_row(sqlite3 *db, const char *old_name, const struct vol_row *row);
/* Transactions around several changes: BEGIN IMMEDIATE / COMMIT / ROLLBACK. */
int catalog_begin(sqlite3 *db);
int catalog_commit(sqlite3 *db);
void catalog_rollback(sqlite3 *db);
uint32_t catalog_snap_crc(const struct snap_row *row);
/* Snapshots of vol_uuid (NULL: of every volume), by seq; *rows malloc'd. */
int catalog_snap_list(sqlite3 *db, const char *vol_uuid, struct snap_row **rows, size_t *count);
int catalog_snap_get(sqlite3 *db, const char *uuid, struct snap_row *row);
int catalog_snap_insert(sqlite3 *db, const struct snap_row *row);
int catalog_snap_update_flags(sqlite3 *db, const struct snap_row *row);
int catalog_snap_delete(sqlite3 *db, const char *uuid);
/* Make a pending row final: name, seq, created, flags (and CRC) of row, whose
 * uuid and vol_uuid must match.  Durable on return.  -ENOENT, -EIO. */
int catalog_snap_finalize(sqlite3 *db, const struct snap_row *row);
/* Volumes (hidden ones included) whose parent is snap_uuid. */
int catalog_clone_count(sqlite3 *db, const char *snap_uuid, uint32_t *count);

/* ---- blockmeta.c: per-block CRC table and dirty-region bitmap ---- */

/* A mapping of the crc file retired by a resize; kept until the svol is freed
 * because threads of the data path may still be using it. */
struct retired_map {
	void *addr;
	size_t len;
	struct retired_map *next;
};

struct tsr_io;

/* A write waiting for a mark of its regions to be durable (embedded in the
 * waiting op; blockmeta_mark_dirty_async). */
struct blockmeta_wait {
	void (*cb_fn)(void *cb_arg, int res); /* 0 or -errno of the mark's fsync */
	void *cb_arg;
	struct blockmeta_wait *next; /* the sync's waiters, in arrival order */
};

/* Slots of struct blockmeta's crc_page_pwrites (8 KiB per open volume). */
#define BLOCKMETA_PAGE_SLOTS 1024

/* One fsync of the .dirty file queued on one thread's io (blockmeta.c). */
struct mark_sync;

struct blockmeta {
	int crc_fd;                  /* DIR/volumes/<uuid>.crc, O_RDWR (buffered) */
	int dirty_fd;                /* DIR/volumes/<uuid>.dirty, O_RDWR (buffered) */
	_Atomic(uint64_t *) crc_map; /* MAP_SHARED; covers at least every block < size */
	size_t crc_map_len;          /* bytes reserved by crc_map (store->lock) */
	struct retired_map *retired; /* older crc mappings (store->lock) */
	uint8_t *dirty_map;          /* MAP_SHARED, reserved for STORE_MAX_VOL_SIZE */
	size_t dirty_map_len;
	_Atomic uint64_t *durable; /* anonymous: region bit is set AND durable on disk */
	size_t durable_len;
	pthread_mutex_t dirty_lock; /* 0->1 transitions of dirty bits */
	_Atomic bool any_dirty;     /* a bit was set since the bitmap was last cleared */
	/* CLOCK_MONOTONIC_COARSE ns of the last fdatasync of crc_fd issued
	 * (blockmeta_note_sync).  Writeback write-protects the pages it wrote, so
	 * the next store into one through crc_map takes a page_mkwrite fault
	 * (~100 us on our VM); while syncs are recent, entries of host writes go
	 * in with pwrite (~7-11 us) instead (data.c entries_put). */
	_Atomic int64_t crc_sync_ns;
	/* fdatasyncs of crc_fd issued so far (blockmeta_note_sync): a page of
	 * the crc file stays writable through the mapping from its first store
	 * after one of them until the next one */
	_Atomic uint64_t crc_sync_gen;
	/* While syncs are recent: which crc pages took entries by pwrite since
	 * the last sync, direct mapped by page (a collision only costs a pwrite
	 * or a fault, never a wrong entry).  Slot: page << 24 | (gen & 0x3fffff)
	 * << 2 | pwrites (0..3).  A page that already took CRC_PAGE_PWRITES
	 * pwrites since the sync takes stores: one page_mkwrite fault, then
	 * stores free of faults until the next sync (blockmeta_entries_by_write). */
	_Atomic uint64_t crc_page_pwrites[BLOCKMETA_PAGE_SLOTS];
	struct mark_sync *mark_syncs; /* marks in flight (dirty_lock) */
	_Atomic uint64_t mark_fsyncs; /* marks made durable by an fsync on an io */
	_Atomic uint64_t mark_joins;  /* writes that waited on another write's mark */
	_Atomic uint64_t mark_msyncs; /* marks made durable by a blocking msync */
	/* anonymous, reserved for STORE_MAX_VOL_SIZE: bit p is set once page p of
	 * the crc file (512 entries, 2 MiB of volume) has its disk blocks
	 * allocated (blockmeta_reserve_entries) since open */
	_Atomic uint64_t *crc_alloc;
	size_t crc_alloc_len;
	/* the .dirty file may have holes (its allocation at open failed, or a
	 * clear had to punch it): a mark allocates it whole before it sets a
	 * bit, or fails with -ENOSPC */
	_Atomic bool dirty_holes;
};

/* Z = crc32c of a zero block; entries are stored as crc ^ Z. */
uint32_t blockmeta_zero_crc(void);
/* crc32c(block) ^ Z: the form stored in the table. */
uint32_t blockmeta_block_crc(const void *block);
/* Sizes of the files for a volume of size bytes. */
uint64_t blockmeta_crc_file_size(uint64_t size);
uint64_t blockmeta_dirty_file_size(uint64_t size);
/* Record that an fdatasync of bm->crc_fd is being issued (see crc_sync_ns). */
void blockmeta_note_sync(struct blockmeta *bm);
/* Whether entries from entry first on (within one page of the crc file) go
 * in with pwrite rather than stores through the mapping: a crc_fd sync
 * issued within the last 2 s, and the page not yet written CRC_PAGE_PWRITES
 * times by pwrite since the last one (blockmeta.c). */
bool blockmeta_entries_by_write(struct blockmeta *bm, uint64_t first);
/* test hook: runs of entries data.c wrote with pwrite (entries_put) */
extern _Atomic unsigned store_test_entry_pwrites;
/* Allocate the disk blocks of [0, len) of fd, keeping its size: for files
 * stored to through a shared mapping.  0 (also where the file system has no
 * fallocate) or -errno (-ENOSPC). */
int blockmeta_alloc_file(int fd, uint64_t len);
/* The same for the pages holding bytes [offset, offset+len) of fd. */
int blockmeta_alloc_range(int fd, uint64_t offset, uint64_t len);
/* Create (O_EXCL) the two files sized for size, the bitmap's blocks
 * allocated; 0 or -errno. */
int blockmeta_create_files(const char *crc_path, const char *dirty_path, uint64_t size);
/* Open and map the files of a volume of size bytes; bm is zeroed first. */
int blockmeta_open(struct blockmeta *bm, const char *crc_path, const char *dirty_path,
		   uint64_t size);
void blockmeta_close(struct blockmeta *bm);
/*
 * Allocate the disk blocks of the crc table pages holding the entries of
 * [offset, offset+len) before they are stored to through the mapping: the
 * table is sparse, and the first store into a hole on a full file system
 * would raise SIGBUS.  A synchronous fallocate the first time a page is met
 * after open (once per 2 MiB of volume), a bit test after that.  Errors:
 * -ENOSPC (the file system is full: nothing may be written), other -errno of
 * fallocate.  A file system without fallocate (-EOPNOTSUPP) counts as done.
 */
int blockmeta_reserve_entries(struct blockmeta *bm, uint64_t offset, uint64_t len);
/* Grow the files and, if needed, the mapping (store->lock held). */
int blockmeta_grow(struct blockmeta *bm, uint64_t old_size, uint64_t new_size);

static inline uint64_t *blockmeta_entries(struct blockmeta *bm)
{
	return atomic_load_explicit(&bm->crc_map, memory_order_acquire);
}
static inline uint64_t entry_load(const uint64_t *e)
{
	return __atomic_load_n(e, __ATOMIC_ACQUIRE);
}
static inline void entry_store(uint64_t *e, uint64_t v)
{
	__atomic_store_n(e, v, __ATOMIC_RELEASE);
}
static inline uint32_t entry_cur(uint64_t e)
{
	return (uint32_t)e;
}
static inline uint32_t entry_prev(uint64_t e)
{
	return (uint32_t)(e >> 32);
}
static inline uint64_t entry_make(uint32_t cur, uint32_t prev)
{
	return (uint64_t)cur | ((uint64_t)prev << 32);
}

/* Make the dirty bits of regions [first, last] durable before returning
 * (lock-free when they already are).  0 or -errno from msync (-ENOSPC: see
 * dirty_holes).  Blocks the
 * caller for the msync: for callers that are not on an event loop (trim,
 * write_zeroes). */
int blockmeta_mark_dirty(struct blockmeta *bm, uint64_t first_region, uint64_t last_region);
/*
 * The same without blocking: when the bits are not durable yet, set them in
 * the bitmap and queue an fsync of the .dirty file on io (or join such an
 * fsync already queued on io for them), and call w->cb_fn from tsr_io_poll
 * on io's thread once it completed.  Returns 0 when the bits are durable
 * already (cb never fires: go on now), 1 when cb_fn will fire exactly once
 * with 0 (durable) or -errno (the fsync failed: nothing may be written), or
 * -errno (cb never fires).  When io cannot take the fsync (-EAGAIN), falls
 * back to blockmeta_mark_dirty.  Errors: those of msync; -ENOSPC when the
 * bitmap file has holes (dirty_holes) and the file system is full.
 */
int blockmeta_mark_dirty_async(struct blockmeta *bm, struct tsr_io *io, uint64_t first_region,
			       uint64_t last_region, struct blockmeta_wait *w,
			       void (*cb_fn)(void *cb_arg, int res), void *cb_arg);
/* Clear every dirty bit on disk and in memory (no I/O may be in flight). */
int blockmeta_clear_dirty(struct blockmeta *bm, uint64_t size);
/* Clear the bitmap while the volume is open, if *writes_started still equals
 * seen once new writes are forced onto the slow path.  Returns 0 when
 * cleared (or nothing to clear), -EAGAIN when a write started meanwhile, or -errno. */
int blockmeta_clear_if_quiet(struct blockmeta *bm, uint64_t size, _Atomic uint64_t *writes_started,
			     uint64_t seen);
/* Make the crc table durable (fdatasync of the crc file). */
int blockmeta_sync(struct blockmeta *bm);

/* ---- layer.c: one snapshot layer's files and the present bitmaps ---- */

struct cow_op;

/* Group commit of one metadata file of a snapshot layer (cow.c): copies that
 * need the file durable join the batch; one fdatasync is in flight at a time,
 * issued on the io of the copy that found none running, and every copy that
 * joined while it ran rides on the next one, which its completion issues on
 * the same io. */
struct sync_batch {
	int fd;                  /* the layer's .crc or .present (set at open) */
	pthread_mutex_t lock;    /* guards the fields below */
	uint64_t joined;         /* tickets handed out: the last one */
	uint64_t covered;        /* the sync in flight covers tickets <= covered */
	bool inflight;           /* a sync is in flight */
	struct tsr_io *round_io; /* ... on this io, whose thread completes it */
	struct cow_op *waiters;  /* copies waiting for a sync that covers them */
};

/* A snapshot layer, open: its files mapped.  Immutable after open except the
 * crc entries and present bits of blocks it did not hold (CoW, merge). */
struct layer {
	char uuid[37];
	uint64_t seq;
	uint64_t size;        /* bytes at the cut: the layer covers blocks < size/4096 */
	unsigned nseg;
	int *seg_fd;          /* O_DIRECT data file per 8 TiB segment */
	int crc_fd;           /* .crc, buffered (fdatasync makes the mapping durable) */
	int present_fd;       /* .present, buffered */
	uint64_t *crc;        /* MAP_SHARED entries {c, c} of held blocks (0: zeros) */
	size_t crc_len;
	uint64_t *present;    /* MAP_SHARED bitmap, 64-bit little-endian words */
	size_t present_len;
	struct sync_batch crc_sync;     /* copies waiting for .crc durable */
	_Atomic bool present_unsynced;  /* a copy set a bit since the last .present sync
					 * (set after the bit; layer_sync_present
					 * clears it before its fdatasync) */
	struct layer *next_retired;     /* svol->retired_layers */
	/* delete (snap.c, merge.c): set once its row is marked SNAP_DELETING
	 * (at load for such rows); never cleared.  A deleting layer takes no
	 * new copy on write (cow.c picks the newest layer that is not
	 * deleting), so its bits stop changing once cow_users is 0; it stays
	 * in the chain, read like any layer, until its merge is done. */
	_Atomic bool deleting;
	/* copies on write whose target is this layer (cow_start raises it,
	 * then checks deleting again; cow_free lowers it): the merge waits for
	 * 0 before it reads the bits */
	_Atomic unsigned cow_users;
};

/* A copied zero block's entry in a layer: {0, LAYER_ZERO_MARK}, so that
 * recovery tells it from "not copied" (0) when its bit did not reach the
 * disk.  A held data block's entry is {c, c}, so the two never meet; reads
 * check a layer block against cur only. */
#define LAYER_ZERO_MARK 0x5a45524fu /* "ZERO" */

/* Layers of one volume, oldest first; replaced whole (copy, publish) under
 * store->lock, old arrays kept until the svol is freed. */
struct layer_chain {
	unsigned n;
	struct layer_chain *next_retired;
	struct layer *l[];
};

/* Bytes of a present bitmap for size bytes (rounded to 4096, at least 4096). */
uint64_t present_file_size(uint64_t size);
/* Create (O_EXCL) and fsync a snapshot layer's files (not the directory). */
int layer_create_files(struct tsr_store *store, const char *uuid, uint64_t size);
void layer_remove_files(struct tsr_store *store, const char *uuid, uint64_t size);
int layer_open(struct tsr_store *store, const struct snap_row *row, struct layer **out);
void layer_close(struct layer *l);
/* Data fd and file offset of byte off of the layer; *max: bytes left in that segment. */
int layer_fd(const struct layer *l, uint64_t off, uint64_t *fd_off, uint64_t *max);
/* Allocate the disk blocks behind the crc entries and present bits of blocks
 * [b, b+n) of l before they are stored to through the mappings (blockmeta.c,
 * "Full file systems").  0 or -errno (-ENOSPC). */
int layer_reserve(struct layer *l, uint64_t b, uint64_t n);
/* Sum of st_blocks*512 of the data files of a layer or volume uuid. */
uint64_t layer_allocated(struct tsr_store *store, const char *uuid, uint64_t size);
/* Make l's present bits durable if a copy set one since the last time
 * (fdatasync of .present, blocking).  0 or -errno. */
int layer_sync_present(struct layer *l);
/* The same for every layer of svol's chain: called before the head's dirty
 * bitmap is cleared (quiet flush, clean close), since the bits of copies
 * are rebuilt from the dirty regions only (layer_recover_present). */
int chain_sync_present(struct tsr_svol *svol);
/* chain_sync_present from an I/O thread (a quiet flush): under store->lock,
 * which keeps a snapshot delete from closing a layer meanwhile; -EBUSY
 * without waiting when the lock is taken (the bitmap is cleared later). */
int chain_sync_present_try(struct tsr_svol *svol);
/*
 * Open-time rebuild of the bits of copies whose .present page did not reach
 * the disk: for each block of a dirty region of the head (dirty_map, the
 * head's bitmap before its recovery clears it) below l's size whose bit is
 * clear but whose entry is set: a zero mark ({0, LAYER_ZERO_MARK}) or data
 * matching its entry is a finished copy (the bit is set), anything else an
 * unfinished one (the entry is cleared; the head write after it was never
 * issued).  Counts into *fixed and *dropped; syncs the entries it cleared
 * and always the bitmap (bits set before a process crash may be in the page
 * cache only, and the head's recovery then clears the regions behind them).
 * 0 or -errno.
 */
int layer_recover_present(struct layer *l, const uint8_t *dirty_map, uint64_t vol_size,
			  uint64_t *fixed, uint64_t *dropped);
/* test hook: counts the .present fdatasyncs of layer_sync_present and
 * layer_recover_present */
extern _Atomic unsigned store_test_present_syncs;

static inline bool bit_test(const uint64_t *map, uint64_t b)
{
	return __atomic_load_n(&map[b / 64], __ATOMIC_ACQUIRE) & (1ull << (b % 64));
}
static inline void bit_set(uint64_t *map, uint64_t b)
{
	__atomic_fetch_or(&map[b / 64], 1ull << (b % 64), __ATOMIC_SEQ_CST);
}

/* The clone head's own-block bitmap (volumes/<uuid>.present), growable. */
struct own_bits {
	int fd;
	_Atomic(uint64_t *) map;
	size_t map_len;
	struct retired_map *retired;
};
int own_bits_open(struct own_bits *ob, const char *path, uint64_t size);
int own_bits_grow(struct own_bits *ob, uint64_t new_size);
void own_bits_close(struct own_bits *ob);
static inline uint64_t *own_map(struct own_bits *ob)
{
	return atomic_load_explicit(&ob->map, memory_order_acquire);
}

/* ---- rowmap.c: the redirect-on-write map of an EC chunk volume (.map, .row) ---- */

#define ROWMAP_HDR           4096u         /* the map file's header; slot[c] words follow */
#define ROWMAP_ROW_BASE      (1ull << 31)  /* physical slots from here on are in .row */
/* chunks a map covers at most: chunk c >= this is always at home (slot c in
 * .data), has no map word, is never a slot the allocator hands out, and is
 * never staged by redirect (step 3: such a STAGE takes the journal path) */
#define ROWMAP_MAX_CHUNKS    (ROWMAP_ROW_BASE - 1)
#define ROWMAP_MIN_SHIFT     12u           /* G = 4 KiB .. */
#define ROWMAP_MAX_SHIFT     20u           /* .. 1 MiB (tsr_ec_unit_valid) */
#define ROWMAP_RESERVE_BYTES (32ull << 20) /* R x G at most (from 32 slots up) */
/* R's floor: 32 slots, or 2 MiB of .row when that is fewer (G > 64 KiB) */
#define ROWMAP_RESERVE_MIN_BYTES (2ull << 20)
#define ROWMAP_RESERVE_MIN_SLOTS 32u

/* A map file's header, as checked by rowmap_parse. */
struct rowmap_hdr {
	unsigned shift;   /* log2 G */
	uint64_t chunks;  /* C in the header (>= the covered chunks: a grow may have
			   * stopped; <= ROWMAP_MAX_CHUNKS) */
	uint32_t reserve; /* R */
	/* hdr_crc did not match, but the header is one a grow's in-place write
	 * torn at a power cut leaves (rowmap_parse): to be rewritten whole */
	bool torn;
};

/* A freed slot waiting for the reads that may have mapped it. */
struct rowmap_limbo {
	uint32_t slot;  /* physical slot */
	uint64_t epoch; /* read epoch when it was freed: free once the epoch is >= +2 */
};

struct rowmap {
	int fd;           /* volumes/<uuid>.map, O_RDWR, buffered (fdatasync makes it durable) */
	int row_fd;       /* volumes/<uuid>.row, O_RDWR|O_DIRECT */
	int row_cfd;      /* the same file buffered O_RDONLY for host reads (store->read_cache),
			   * or -1: reads of .row use row_fd */
	unsigned shift;   /* log2 G, fixed */
	uint32_t reserve; /* R, slots in .row, fixed */
	/* slot[c] words of the MAP_SHARED mapping (little endian; svol_map reads
	 * them lock-free); replaced by a grow that needs a larger mapping */
	_Atomic(uint32_t *) slot;
	/* chunks covered: min(C, ROWMAP_MAX_CHUNKS), raised by rowmap_grow
	 * (store->lock) after the mapping; the home slots the allocator knows */
	_Atomic uint64_t chunks;
	void *map_addr;              /* the current mapping (store->lock) */
	size_t map_len;              /* bytes it reserves */
	struct retired_map *retired; /* older mappings, unmapped at close */
	pthread_mutex_t lock;        /* the allocator: every field below */
	uint64_t *home_free;         /* bit P: home slot P (< C) is free */
	size_t home_words;           /* words of home_free */
	uint64_t *row_free;          /* bit i: .row slot i (physical 2^31 + i) is free */
	uint64_t nfree;              /* bits set in both */
	uint32_t cursor;             /* next-fit: physical slot to look at first */
	struct rowmap_limbo *limbo;  /* freed slots not yet free, oldest first */
	size_t nlimbo, limbo_cap;
	/* read epochs: readers[e & 1] counts the reads begun in epoch e that
	 * have not ended; the epoch moves on (lock) only when the reads of the
	 * epoch before the current one ended */
	_Atomic uint64_t epoch;
	_Atomic uint64_t readers[2];
};

/* The design's R for G = 2^shift: 32 MiB / G, at least 32. */
uint32_t rowmap_reserve_max(unsigned shift);
/* R's floor for G = 2^shift: 32 slots, or 2 MiB / G when that is fewer
 * (16 at 128 KiB .. 2 at 1 MiB); what open accepts is floor..max, which
 * holds every R the rule before (32..max) made too. */
uint32_t rowmap_reserve_min(unsigned shift);
/* R of a map created for C chunks: rowmap_reserve_max, or C / 8 when that
 * is less (at least rowmap_reserve_min): a small volume pays at most 1/8
 * of its size, or 2 MiB, of .row, not 32 MiB (ARCHITECTURE.md, issue 4,
 * "Space: R is C / 8 for small volumes").  Fixed at create: a grow keeps it. */
uint32_t rowmap_reserve_slots(unsigned shift, uint64_t chunks);
/* C for a volume of size bytes. */
uint64_t rowmap_chunks(uint64_t size, unsigned shift);
/* The chunks a map covers for a volume of size bytes: min(C,
 * ROWMAP_MAX_CHUNKS) (the header's chunks; the rest are at home). */
uint64_t rowmap_covered(uint64_t size, unsigned shift);
/* Bytes of the map file for C chunks (whole pages). */
uint64_t rowmap_file_size(uint64_t chunks);
/* log2 of a stripe unit (a power of 2, 4 KiB..1 MiB), or -EINVAL. */
int rowmap_unit_shift(uint32_t unit);
/* The 4 KiB header for those values, hdr_crc included. */
void rowmap_hdr_pack(uint8_t hdr[ROWMAP_HDR], unsigned shift, uint64_t chunks, uint32_t reserve);
/*
 * Check the len bytes of a map file (path names it in the log) for a volume
 * of chunks granules of 2^shift bytes: magic, hdr_crc, version, shift, the
 * header's chunks (chunks..ROWMAP_MAX_CHUNKS; chunks is the covered count,
 * rowmap_covered) and reserve (rowmap_reserve_min..rowmap_reserve_max), the
 * file long enough, then every
 * slot[c] (c < chunks) names an existing slot that no other chunk names.
 * Sets the bits of the slots in use in home_used ((chunks + 63) / 64 words)
 * and row_used ((R + 63) / 64 words, R <= rowmap_reserve_max(shift)).
 * 0, or -EUCLEAN (logged: what is wrong, and that the copy must be rebuilt).
 */
int rowmap_parse(const uint8_t *buf, size_t len, unsigned shift, uint64_t chunks, const char *path,
		 struct rowmap_hdr *hdr, uint64_t *home_used, uint64_t *row_used);
/* Create (O_EXCL) and fsync the map (identity, covering rowmap_covered
 * chunks) and the .row file (zeros) of a volume of size bytes.  0 or -errno. */
int rowmap_create_files(const char *map_path, const char *row_path, uint64_t size, unsigned shift);
/* Open, map and check them (rowmap_parse), rebuild the free bitmaps; a
 * buffered fd of .row too when cached.  0, -EUCLEAN (damaged, logged with
 * the file's name), -EIO (missing) or -errno. */
int rowmap_open(const char *map_path, const char *row_path, uint64_t size, unsigned shift,
		bool cached, struct rowmap **out);
void rowmap_close(struct rowmap *m);
/* Grow to a volume of new_size bytes (store->lock): the new chunks are at
 * home (identity), the header says the new covered count (rowmap_covered:
 * chunks past ROWMAP_MAX_CHUNKS get no word), all durable on return.
 * 0 or -errno (logged). */
int rowmap_grow(struct rowmap *m, uint64_t new_size);
/* fdatasync of the map and of .row.  0 or -errno. */
int rowmap_sync(struct rowmap *m);
/* Take n free slots, next-fit after the last taken (contiguous for a
 * stream while the space allows), into slots[].  0, or -ENOSPC: fewer than
 * n free (nothing taken: the caller takes the journal path). */
int rowmap_alloc(struct rowmap *m, uint32_t n, uint32_t *slots);
/* Slots no map entry names any more (the caller changed the map first):
 * into the limbo, free once every read that may have mapped them ended.
 * 0 or -ENOMEM (nothing freed). */
int rowmap_free(struct rowmap *m, const uint32_t *slots, uint32_t n);
/* Mark slots[] in use (step 3's open: the slots live journal entries
 * reserve besides the map's).  0, or -EEXIST when one is in use already,
 * named twice or does not exist (nothing taken). */
int rowmap_take(struct rowmap *m, const uint32_t *slots, uint32_t n);
/* The physical slot of chunk c (c < the covered chunks: the caller checks
 * that a chunk past ROWMAP_MAX_CHUNKS, always at home, is not asked) now. */
uint32_t rowmap_slot(struct rowmap *m, uint64_t c);
/* Point chunks first..first+n-1 at new_slots[] (a slot equal to the chunk
 * is its home and stored as 0), after checking each is at old[i] (old
 * NULL: no check, as a replay's undo).  Under the allocator lock; each word
 * is stored atomically (readers see the old or the new slot of a chunk).
 * Durable with the next rowmap_sync or flush.  0, or -EIO (logged) with
 * nothing changed when a chunk is not where old says or is past the
 * covered chunks (it has no map word: step 3 must not stage it by redirect). */
int rowmap_flip(struct rowmap *m, uint64_t first, uint32_t n, const uint32_t *old,
		const uint32_t *new_slots);
/* Free slots now (the limbo's old enough ones counted in first). */
uint64_t rowmap_free_slots(struct rowmap *m);
/* Around every read that resolves volume bytes through the map: begin
 * before svol_map, end once the read completed (with the returned token). */
unsigned rowmap_read_begin(struct rowmap *m);
void rowmap_read_end(struct rowmap *m, unsigned token);

/* ---- store.c: the store, volumes and handles ---- */

struct tsr_store {
	char *dir;
	char *device;               /* raw device path or NULL */
	int dev_fd;                 /* O_RDWR|O_DIRECT|O_EXCL raw device, or -1 */
	uint64_t dev_size;          /* bytes */
	int lock_fd;                /* DIR/store.lock, flock'd exclusive */
	sqlite3 *db;                /* store->lock */
	pthread_mutex_t lock;       /* see the lock policy above */
	pthread_cond_t rollback_end; /* with lock: a rollback's step 3 ended (snap.c) */
	pthread_cond_t svol_closed;  /* with lock: an svol's last open handle went
				      * (tsr_svol_put): a rollback waiting for a
				      * copy's closing session (snap.c) */
	unsigned rollbacks;          /* store->lock: rollbacks past step 1 or waiting for
				      * one of the same volume (tsr_store_close waits) */
	bool closing;                /* store->lock: tsr_store_closing ran; a rollback
				      * waiting for a same-snapshot one answers -ESHUTDOWN */
	struct tsr_svol *open_vols; /* store->lock */
	int trampoline_fd;          /* for deferred completions (data.c) */
	int64_t dirty_clear_ns;     /* least interval between bitmap clears at flush */
	bool read_cache;            /* set at open: file-mode heads get cseg_fd (host
				     * reads through the page cache), !opts->read_cache_off */
	bool unclean;               /* opened after a crash: journals are rolled forward */
	struct stage_replayed *stage_replayed; /* volumes rolled forward since (store->lock) */
	struct spare_set *spares;   /* spare.c: set under store->lock at first use, freed
				     * by spare_stop at close; NULL when no volume asked */
	struct merge_set *merges;   /* merge.c: set under store->lock at the first delete
				     * of an open volume's layer, freed by merge_stop at
				     * close; NULL until then */
};

struct svol_stats {
	_Atomic uint64_t reads, writes, flushes, trims;
	_Atomic uint64_t bytes_read, bytes_written;
	_Atomic uint64_t crc_errors;
	_Atomic uint64_t cached_reads; /* successful reads issued on cseg_fd */
};

struct tsr_svol {
	struct tsr_store *store;
	char name[64];
	char uuid[37];
	int refs;              /* store->lock */
	_Atomic uint64_t size; /* bytes; grows only */
	int64_t dev_offset;    /* -1: segment files; else extent on store->dev_fd */
	_Atomic int
	    seg_fd[STORE_MAX_SEGS]; /* file mode: O_DIRECT fd per 8 TiB segment, -1 absent */
	/* file mode with store->read_cache: a buffered O_RDONLY fd of the same
	 * segment file (same inode), for host reads only (data.c read_go); opened
	 * and closed with seg_fd[i] (load, resize, free); -1 absent: reads of
	 * that segment use seg_fd[i] */
	_Atomic int cseg_fd[STORE_MAX_SEGS];
	struct blockmeta meta;
	struct svol_stats stats;
	_Atomic bool write_failed;       /* keep the dirty bits at close (data.c) */
	_Atomic uint64_t writes_started; /* writes, trims, zeroes begun (data.c) */
	_Atomic uint64_t writes_done;    /* ... and finished, successfully or not */
	_Atomic int64_t last_clear_ns;   /* CLOCK_MONOTONIC of the last bitmap clear */
	_Atomic uint64_t epoch;          /* highest coordinator epoch, raised (under
					  * store->lock) only after the catalogue has
					  * it durably; read lock-free (tsr_svol_epoch) */
	struct tsr_svol *next;           /* store->open_vols, store->lock */

	/* snapshots and clones (snap.c, cow.c, image.c); store->lock for changes */
	int opens;                         /* handles from tsr_store_vol_open (store->lock) */
	int child_refs;                    /* refs held by open clones of its layers */
	int ro_handles;                    /* open read-only handles on its snapshots */
	_Atomic(struct layer_chain *) chain; /* its snapshots, NULL when none */
	struct layer_chain *retired_chains;
	struct layer *retired_layers;      /* deleted while readers may hold them */
	_Atomic unsigned chain_users;      /* write paths looking at the chain lock-free
					    * (chain_enter .. chain_exit, cow.c) */
	bool is_clone;
	struct tsr_svol *parent;           /* clone: head of the source volume (ref held) */
	struct layer *parent_layer;        /* clone: the source layer (in parent's chain) */
	struct own_bits own;               /* clone: blocks written since the clone */
	struct tsr_svol *base;             /* read-only snapshot handle: its volume's head */
	struct layer *ro_layer;            /* read-only snapshot handle: its layer */
	pthread_mutex_t cow_lock;          /* the set of blocks being copied */
	struct cow_busy *cow_busy;         /* cow_lock */
	_Atomic uint32_t cow_inflight;     /* copies between claim and bits set */

	/* staged chunk writes (stage.c): set at load for heads in file mode */
	struct stage_journal *stage;
	/* redirect-on-write map (rowmap.c): file-mode chunk volumes made with a
	 * unit (vol_row.unit); NULL for every other volume.  Set at load. */
	struct rowmap *rowmap;

	/* a rollback of this head runs without store->lock (snap.c
	 * tsr_store_vol_rollback; store->lock): set and cleared under the lock
	 * by that rollback, which holds a ref meanwhile; store calls that would
	 * change the volume or open it answer -EBUSY (store_rollback_busy), and
	 * chain_publish retires a dropped layer instead of closing it (the
	 * rollback reads its chain without chain_enter) */
	bool rollback_running;
	/* store->lock: while rollback_running, the uuid of the snapshot it rolls
	 * back to (a second rollback to the same one waits for its end) */
	char rollback_snap[37];
};

/* Paths of a volume's files into buf (PATH_MAX). */
void store_seg_path(const struct tsr_store *store, const char *uuid, unsigned seg, char *buf);
void store_meta_path(const struct tsr_store *store, const char *uuid, const char *ext, char *buf);
/* Open a volume's files and mappings into a zeroed, unlisted svol; 0 or -errno. */
int store_svol_load(struct tsr_store *store, const struct vol_row *row, struct tsr_svol **out);
/* Close files and mappings of an svol built by store_svol_load and free it. */
void store_svol_free(struct tsr_svol *svol);
/* Internal reference to the head of volume uuid (store->lock held): found
 * among the open ones or loaded with its snapshots and parent.  Hidden
 * volumes too.  Released with store_svol_unref. */
int store_svol_get_uuid(struct tsr_store *store, const char *uuid, struct tsr_svol **out);
void store_svol_unref(struct tsr_svol *svol);
struct tsr_svol *store_find_open_uuid(struct tsr_store *store, const char *uuid);
/* -EBUSY, logged "OP: volume V: a rollback is running: try again when it
 * ends", while a rollback of the volume of row runs (svol->rollback_running);
 * else 0.  store->lock held.  Called before the row's VOL_ROLLBACK check,
 * which then means an interrupted rollback only. */
int store_rollback_busy(struct tsr_store *store, const struct vol_row *row, const char *op);
int store_fsync_voldir(const struct tsr_store *store);
void store_make_uuid(char out[37]);
/* Create (O_EXCL) and fsync a head's files: data, crc, dirty (+ present for a clone). */
int store_create_head_files(struct tsr_store *store, const char *uuid, uint64_t size, bool clone);
/* Log a step of an accepted request that failed with err (-errno): "<what>:
 * <strerror>" as an error, except -EAGAIN: the io queue was full for a step
 * queued after the submit, and every caller issues such a request again (NBD,
 * mirror and EC local copies, peer server, site target), so it is no failure:
 * "<what>: io queue full, issued again" at debug level. */
void store_log_step(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- data.c: the asynchronous data path ---- */

/* One contiguous piece of a volume range on one fd. */
struct svol_piece {
	int fd;
	uint64_t fd_offset;
	uint64_t vol_offset;
	uint64_t len;
	int cfd; /* a buffered fd of the same file for host reads (cseg_fd, rowmap's
		  * row_cfd), or -1 */
};
/*
 * Split [offset, offset+len) into at most max pieces: one per segment file,
 * and for a volume with a redirect map one per run of granules whose
 * physical slots are contiguous in one file (each granule resolved through
 * the map: its home in the segment files or a slot of .row).  Returns the
 * number of pieces, which cover a prefix of the range: all of it unless max
 * pieces were too few (callers loop, or use svol_map_all).
 */
int svol_map(struct tsr_svol *svol, uint64_t offset, uint64_t len, struct svol_piece *p, int max);
/* All the pieces of [offset, offset+len): in small (nsmall of room) when
 * they fit, else in a malloc'd array returned in *big (free it; NULL when
 * small was used).  The number of pieces, or -ENOMEM. */
int svol_map_all(struct tsr_svol *svol, uint64_t offset, uint64_t len, struct svol_piece *small,
		 int nsmall, struct svol_piece **big);
/* Make [offset, offset+len) of a raw device read as zeros, synchronously:
 * fallocate(PUNCH_HOLE) (unmap), else fallocate(ZERO_RANGE), else pwrite zeros. */
int store_dev_zero(int fd, uint64_t offset, uint64_t len);

/* Writes, trims and zeroes in flight (snapshot create/delete need none). */
void svol_write_begin(struct tsr_svol *svol);
void svol_write_end(struct tsr_svol *svol);
/* The data path proper, after range checks and copy-on-write (cow.c resumes here). */
/* flags of data_write_go: its caller was told 0 long ago (a copy on write
 * resuming from a completion), so it cannot return -EAGAIN: a full io queue
 * makes a step run on the spot, blocking, and cb_fn may fire before it returns */
#define DATA_GO_LATE 0x80000000u
int data_write_go(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint32_t len,
		  const void *buf, const uint32_t *sums, unsigned flags, tsr_cb cb_fn,
		  void *cb_arg);
int data_trim_go(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint64_t len,
		 unsigned flags, tsr_cb cb_fn, void *cb_arg);
int data_zeroes_go(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint64_t len,
		   unsigned flags, tsr_cb cb_fn, void *cb_arg);
/* Queue a no-op on io whose completion calls cb_fn (a "later"); iov is the
 * caller's, valid until then. */
int data_trampoline(struct tsr_store *store, struct tsr_io *io, struct iovec *iov,
		    tsr_io_cb cb_fn, void *cb_arg);

/* ---- image.c: reads through layers (snapshot images, clone heads) ---- */

enum src_kind { SRC_ZERO, SRC_LAYER, SRC_HEAD };
/* Where one block of an image lives. */
struct block_src {
	enum src_kind kind;
	struct layer *layer;   /* SRC_LAYER */
	struct tsr_svol *head; /* SRC_HEAD: whose own data */
	bool via_snap;         /* reached through a snapshot layer: re-check after reading */
};
/* Block b of the image of h seen from layer from (NULL: h's head). */
void image_resolve(struct tsr_svol *h, struct layer *from, uint64_t b, struct block_src *s);
/* Read [offset, offset+len) of that image into buf, async contract of
 * tsr_svol_read; counted in stats' counters (NULL: not counted). */
int image_read(struct tsr_svol *h, struct layer *from, struct tsr_svol *stats, struct tsr_io *io,
	       uint64_t offset, uint64_t len, void *buf, tsr_cb cb_fn, void *cb_arg);
/* Test hook: called before a head read on behalf of a snapshot image is
 * queued (holds the copy-on-write race open deterministically). */
extern void (*store_test_before_head_read)(void *arg);
extern void *store_test_hook_arg;
/* block_status from the layers' metadata. */
int image_block_status(struct tsr_svol *h, struct layer *from, uint64_t size, uint64_t offset,
		       uint64_t len, struct tsr_extent *ext, size_t max, size_t *count);
/* Does block b of that image read as zeros (metadata only)? */
bool image_zero(struct tsr_svol *h, struct layer *from, uint64_t b);
static inline struct layer_chain *chain_load(struct tsr_svol *svol)
{
	return atomic_load_explicit(&svol->chain, memory_order_acquire);
}

/* A lock-free look at the chain from the write path (cow.c), without
 * store->lock: every layer in it stays open until chain_exit.  chain_publish
 * stores the new chain, then closes a dropped layer only once chain_users
 * was 0 (both sequentially consistent: a user counted after that read loads
 * the new chain).  Keep the section short and take no store->lock in it. */
static inline struct layer_chain *chain_enter(struct tsr_svol *svol)
{
	atomic_fetch_add_explicit(&svol->chain_users, 1, memory_order_seq_cst);
	return atomic_load_explicit(&svol->chain, memory_order_seq_cst);
}

static inline void chain_exit(struct tsr_svol *svol)
{
	atomic_fetch_sub_explicit(&svol->chain_users, 1, memory_order_release);
}

/* ---- cow.c: copy-on-write of head writes into the newest snapshot ---- */

/* Does a head write/trim of [offset, offset+len) need the slow path?  Sets a
 * clone's own bits on the way (cheap when already set). */
bool cow_needed(struct tsr_svol *svol, uint64_t offset, uint64_t len);
enum cow_kind { COW_WRITE, COW_TRIM, COW_ZEROES };
/* Copy what the newest snapshot lacks, then run the head operation; async
 * contract of the public function it stands for. */
int cow_start(struct tsr_svol *svol, struct tsr_io *io, enum cow_kind kind, uint64_t offset,
	      uint64_t len, const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg);

/* ---- snap.c: snapshot control functions ---- */

/* Load the chain and the parent of a freshly loaded head (store->lock held). */
int snap_attach(struct tsr_svol *svol, const struct vol_row *row);
/* Release them (before store_svol_free of a head). */
void snap_detach(struct tsr_svol *svol);
/* Delete a volume row and files, with its snapshots; hidden instead while
 * clones depend on its layers (store->lock held, no user handle open). */
int snap_volume_delete(struct tsr_store *store, const struct vol_row *row);
/* Open-time: rebuild the present bits of svol's layers from its dirty regions
 * (layer_recover_present), before recovery_run clears them.  Logs; errors
 * leave the volume's layers as they are. */
void snap_recover_present(struct tsr_store *store, struct tsr_svol *svol);
/* Finish interrupted deletes and collect unneeded hidden layers (store open). */
void snap_recover(struct tsr_store *store);
/* Test hook: when non-zero, counts down at each step of snapshot create and
 * delete and _exit(99)s the process at zero (crash tests). */
extern int store_test_crash_at;
void store_crash_point(void);

/* Finish the delete of snapshot row snap_uuid of open volume svol, whose
 * layer is already deleting (the merge thread, store->lock NOT held: taken
 * for the catalogue and the chain only).  Drops the reference on svol that
 * merge_queue took. */
void snap_merge_job(struct tsr_store *store, struct tsr_svol *svol, const char *snap_uuid);

/* ---- merge.c: the thread that finishes snapshot deletes of open volumes ---- */

struct merge_set;
/* Queue the rest of the delete of layer snap_uuid of open volume svol for
 * the thread (store->lock held): takes a reference on svol, started the
 * thread at first use.  0, or -errno (no memory, no thread: the caller
 * finishes the delete itself). */
int merge_queue(struct tsr_store *store, struct tsr_svol *svol, const char *snap_uuid);
/* Run every queued job, then stop the thread (store close, store->lock not held). */
void merge_stop(struct tsr_store *store);
/* Test hook: wait until no job is queued or running; jobs finished so far. */
unsigned store_test_merges_idle(struct tsr_store *store);
/* Test hook: called with store_test_merge_arg by a delete's merge once its
 * data and entries are in the older layer and before it sets the bits (for
 * the oldest layer, which has no merge, before the row goes): on the merge
 * thread for an open volume, else in the caller. */
extern void (*store_test_merge_hook)(void *arg);
extern void *store_test_merge_arg;
/* Tests: called after each chunk a rollback rewrote, without store->lock
 * (snap.c rollback_run). */
extern void (*store_test_rollback_chunk)(void *arg);
extern void *store_test_rollback_arg;

/* ---- remove.c: removing the files of a deleted volume or layer ---- */

/* Unlink every file uuid may have (data segments for size, crc, dirty,
 * present, stage, map, row), now, whatever it costs. */
void store_remove_files(struct tsr_store *store, const char *uuid, uint64_t size);
/* The files of uuid, whose row is gone (store->lock held): removed now when
 * they hold at most store_remove_piece() extents in all (false), else queued
 * to the reaper thread, started if need be (true; the reaper syncs volumes/),
 * unless the file system is short of space (remove.c space_short: removed
 * now, false).
 * may_stay: a store close may leave them to the next open (a volume's:
 * spare.c REAP_CLOSE_MS); else the close removes them first.  The caller
 * syncs volumes/ after a removal. */
bool store_remove_deleted(struct tsr_store *store, const char *uuid, uint64_t size, bool may_stay);
/* Open: DIR/volumes/name belongs to no row: unlinked now (logged), or, when
 * it holds more than store_remove_piece() extents and the file system is not
 * short of space, its uuid's files queued to the reaper. */
void store_remove_leftover(struct tsr_store *store, const char *name);
/* The reaper's removal: each file of uuid cut down from its end, at most
 * store_remove_piece() extents per ftruncate, then unlinked; stop(arg) (may
 * be NULL) is asked before each cut.  0, -EINTR (stopped: the rest of the
 * files stay), or the first -errno (logged; the other files still go). */
int store_remove_pieces(struct tsr_store *store, const char *uuid, uint64_t size,
			bool (*stop)(void *arg), void *arg);
/* Extents per piece, and the most a removal in the call may free: 1024
 * (tests: store_test_remove_piece when non-zero). */
unsigned store_remove_piece(void);
/* Tests: the piece size; cuts made by the reaper; removals queued to it. */
extern _Atomic unsigned store_test_remove_piece;
extern _Atomic unsigned store_test_remove_cuts;
extern _Atomic unsigned store_test_removes_queued;
/* Tests: non-zero replaces space_short's bound (free bytes). */
extern _Atomic uint64_t store_test_remove_space_min;

/* ---- spare.c: snapshot layers made ahead of their create ---- */

struct spare_set;
/* Ask the background thread for a spare of volume vol_uuid sized size, if
 * the volume wants spares (tsr_store_snap_spare) and has none parked. */
void spare_request(struct tsr_store *store, const char *vol_uuid, uint64_t size);
/* The parked spare of vol_uuid (store->lock held): its layer, mapped, files
 * durable and without a row, its uuid in uuid_out; NULL when there is none
 * or it was made for another size (then dropped). */
struct layer *spare_take(struct tsr_store *store, const char *vol_uuid, uint64_t size,
			 char uuid_out[37]);
/* Volume vol_uuid wants no spare any more (deleted): drop its spare (its
 * pending row, then its files) and wait until the thread did. */
void spare_forget(struct tsr_store *store, const char *vol_uuid);
/* Hand the removal of a deleted layer's files (its row is gone) and the sync
 * of volumes/ to the store's reaper thread (started with the spare thread),
 * when it runs: true; false: do it yourself. */
bool spare_reap(struct tsr_store *store, const char *uuid, uint64_t size);
/* The same, the threads started first if they are not running (store->lock
 * held, or the store's open); may_stay: a store close may drop it from the
 * queue once its time is over (REAP_CLOSE_MS), and the reaper removes it in
 * pieces (store_remove_pieces) so that it can stop between two.  0, or
 * -ENOMEM / -EAGAIN / a catalogue error: nothing queued. */
int spare_reap_start(struct tsr_store *store, const char *uuid, uint64_t size, bool may_stay);
/*
 * A cut on a spare, its row still pending: queue the row's finish (row: the
 * final name, seq, created, flags) for the thread, which commits it on its
 * own connection, in the order queued, then calls done(arg, 0 or -errno)
 * once, with no lock held.  0, or -ENOMEM / -EINVAL (no thread): done never
 * fires.
 */
int spare_commit(struct tsr_store *store, const struct snap_row *row, tsr_cb done, void *arg);
/* Rows of vol_uuid queued by spare_commit: true if one is named name (not
 * ""); *seq raised to the highest of their seqs. */
bool spare_inflight(struct tsr_store *store, const char *vol_uuid, const char *name,
		    uint64_t *seq);
/* Wait until no row of vol_uuid is queued (store->lock may be held). */
void spare_commits_wait(struct tsr_store *store, const char *vol_uuid);
/* Pending row uuid belongs to a layer that was cut (its row queued, or its
 * finish failed): it is in its volume's chain.  Other pending rows are
 * spares nothing was cut on: left out of the chain at attach. */
bool spare_is_cut(struct tsr_store *store, const char *uuid);
/* Tests: while non-zero the thread holds queued rows back. */
extern _Atomic int store_test_commit_hold;
/* Tests: creates whose row was made final after the cut (snap.c). */
extern _Atomic unsigned store_test_rows_after_cut;
/* Stop the threads (store close): the spare thread once its queued commits
 * and drops are done, the reaper once its queue is empty; the removals that
 * may stay (spare_reap_start) get REAP_CLOSE_MS (2 s; tests:
 * store_test_reap_close_ms when >= 0), then are stopped between two pieces
 * or dropped (logged; the next open removes their files); then every parked
 * spare's files go. */
void spare_stop(struct tsr_store *store);
extern _Atomic int store_test_reap_close_ms;
/* Test hook: wait until no spare is queued or being made; spares parked so far. */
unsigned store_test_spares_idle(struct tsr_store *store);
/* Test hooks: spares parked so far, without waiting; while
 * store_test_reap_hold is non-zero the reaper thread waits before it removes
 * a reap's files (or until a close's time is over); the
 * removals queued and not finished when the spare thread last parked a
 * spare. */
unsigned store_test_spares_made(struct tsr_store *store);
extern _Atomic int store_test_reap_hold;
extern _Atomic unsigned store_test_reaps_left_at_made;
/* Test hook: wal_settle runs that copied every WAL frame back so far. */
unsigned store_test_wal_settled(struct tsr_store *store);

/* ---- stage.c: the staging journal of EC transactions (volumes/<uuid>.stage) ---- */

/* One live entry of the index. */
struct stage_ent {
	struct tsr_stage_entry e; /* as staged; state STAGED or COMMITTED */
	uint64_t jpos;            /* journal offset of its data (current generation) */
	uint32_t dcrc;            /* CRC32C of its data */
	uint64_t cseq;            /* open-time scan only: seq of its last COMMIT record
				   * (the replay order), 0 while STAGED */
	uint8_t *held;            /* a copy of its data kept in memory since the stage
				   * (aligned, e.length bytes; counted in j->held_bytes),
				   * or NULL: over the cap, replayed at open, or taken by a
				   * commit; freed when the entry is forgotten */
};

struct stage_lane; /* stage.c: one io's batch of records being gathered or written */

struct stage_journal {
	int fd;                 /* volumes/<uuid>.stage, O_RDWR|O_DIRECT */
	struct stage_lane *lanes; /* STAGE_LANES, owned (group commit, stage.c) */
	pthread_mutex_t lock;   /* every field below */
	uint64_t gen, salt;     /* current generation (header at offset 0) */
	uint64_t seq;           /* last record sequence number handed out */
	uint64_t tail;          /* next free byte: records are reserved from here */
	struct stage_ent *ents; /* live entries, unordered, TSR_STAGE_MAX_ENTRIES room */
	size_t n;               /* live entries */
	unsigned appends;       /* record writes in flight */
	unsigned readers;       /* commits reading staged data back */
	bool rolling;           /* a new generation header is in flight: appends wait */
	bool need_roll;         /* no valid header on disk: write one before any record */
	bool dir_unsynced;      /* the file's name may not be durable: sync volumes/ with
				 * the next generation header */
	bool failed;            /* a journal write failed: every call -EIO until reopen */
	uint64_t writes;        /* journal writes issued (a batch counts once) */
	uint64_t records;       /* records in them (STAGE, COMMIT, RELEASE, GEN) */
	uint64_t held_bytes;    /* sum of the live entries' held copies, <= store_stage_hold_bytes */
	uint64_t commits_held;  /* commits whose in-place write used the held copy */
	uint64_t commits_read;  /* commits that read the staged bytes back from the file */
};

/* Open the journal of a head just loaded with its snapshots and scan it;
 * the first load after an unclean store open also writes its COMMITTED
 * entries in place again (blocking; store->lock held).  No journal for
 * device mode or read-only handles.  0 or -errno. */
int stage_open(struct tsr_svol *svol);
/* Free store->stage_replayed (store_free). */
void stage_store_free(struct tsr_store *store);
void stage_close(struct tsr_svol *svol);
/* Forget every entry and make the journal empty on disk (rollback). */
int stage_drop(struct tsr_svol *svol);
/* File size past which a release leaving no live entry starts a new
 * generation (tests lower it). */
extern uint64_t store_stage_roll_bytes;
/* Test hook: journal writes issued and records written in them since the
 * volume was loaded (0s without a journal). */
void stage_counters(struct tsr_svol *svol, uint64_t *writes, uint64_t *records);
/* Per journal cap on the staged bytes kept in memory for their commit (a
 * stage past it is read back from the file at commit; tests lower it). */
extern uint64_t store_stage_hold_bytes;
/* Test hook: commits served from the held copy and commits that read the
 * staged bytes back from the journal since the volume was loaded. */
void stage_commit_counters(struct tsr_svol *svol, uint64_t *from_memory, uint64_t *read_back);

/* ---- recovery.c: crash recovery at open ---- */

struct recovery_stats {
	uint64_t regions, fixed, corrupt;
};
/* Normalize the entries of every dirty region of svol, then clear the bitmap. */
int recovery_run(struct tsr_svol *svol, struct recovery_stats *st);

#endif
