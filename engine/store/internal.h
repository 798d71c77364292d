/*
 * Private interfaces of the local store (engine/store), one section per file.
 * Callers outside this folder use include/tessera/store.h only.
 *
 * Lock policy (the whole of it, see also the header of store.c):
 * - store->lock guards the SQLite handle, the list of open volumes, every
 *   svol's refcount, and the growth of an svol's files and mappings (resize).
 * - svol->meta.dirty_lock guards the 0->1 transition of dirty-region bits
 *   (set the bit in the mmap'd bitmap, msync it, then publish it as durable)
 *   and the clearing of the bitmap after a quiet flush.
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
};

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

/* ---- blockmeta.c: per-block CRC table and dirty-region bitmap ---- */

/* A mapping of the crc file retired by a resize; kept until the svol is freed
 * because threads of the data path may still be using it. */
struct retired_map {
	void *addr;
	size_t len;
	struct retired_map *next;
};

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
};

/* Z = crc32c of a zero block; entries are stored as crc ^ Z. */
uint32_t blockmeta_zero_crc(void);
/* crc32c(block) ^ Z: the form stored in the table. */
uint32_t blockmeta_block_crc(const void *block);
/* Sizes of the files for a volume of size bytes. */
uint64_t blockmeta_crc_file_size(uint64_t size);
uint64_t blockmeta_dirty_file_size(uint64_t size);
/* Create (O_EXCL) the two files sized for size; 0 or -errno. */
int blockmeta_create_files(const char *crc_path, const char *dirty_path, uint64_t size);
/* Open and map the files of a volume of size bytes; bm is zeroed first. */
int blockmeta_open(struct blockmeta *bm, const char *crc_path, const char *dirty_path,
		   uint64_t size);
void blockmeta_close(struct blockmeta *bm);
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
 * (lock-free when they already are).  0 or -errno from msync. */
int blockmeta_mark_dirty(struct blockmeta *bm, uint64_t first_region, uint64_t last_region);
/* Clear every dirty bit on disk and in memory (no I/O may be in flight). */
int blockmeta_clear_dirty(struct blockmeta *bm, uint64_t size);
/* Clear the bitmap while the volume is open, if *writes_started still equals
 * seen once new writes are forced onto the slow path.  Returns 0 when
 * cleared (or nothing to clear), -EAGAIN when a write started meanwhile, or -errno. */
int blockmeta_clear_if_quiet(struct blockmeta *bm, uint64_t size, _Atomic uint64_t *writes_started,
			     uint64_t seen);
/* Make the crc table durable (fdatasync of the crc file). */
int blockmeta_sync(struct blockmeta *bm);

/* ---- store.c: the store, volumes and handles ---- */

struct tsr_store {
	char *dir;
	char *device;               /* raw device path or NULL */
	int dev_fd;                 /* O_RDWR|O_DIRECT|O_EXCL raw device, or -1 */
	uint64_t dev_size;          /* bytes */
	int lock_fd;                /* DIR/store.lock, flock'd exclusive */
	sqlite3 *db;                /* store->lock */
	pthread_mutex_t lock;       /* see the lock policy above */
	struct tsr_svol *open_vols; /* store->lock */
	int trampoline_fd;          /* for deferred completions (data.c) */
	int64_t dirty_clear_ns;     /* least interval between bitmap clears at flush */
};

struct svol_stats {
	_Atomic uint64_t reads, writes, flushes, trims;
	_Atomic uint64_t bytes_read, bytes_written;
	_Atomic uint64_t crc_errors;
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
};

/* Paths of a volume's files into buf (PATH_MAX). */
void store_seg_path(const struct tsr_store *store, const char *uuid, unsigned seg, char *buf);
void store_meta_path(const struct tsr_store *store, const char *uuid, const char *ext, char *buf);
/* Open a volume's files and mappings into a zeroed, unlisted svol; 0 or -errno. */
int store_svol_load(struct tsr_store *store, const struct vol_row *row, struct tsr_svol **out);
/* Close files and mappings of an svol built by store_svol_load and free it. */
void store_svol_free(struct tsr_svol *svol);

/* ---- data.c: the asynchronous data path ---- */

/* One contiguous piece of a volume range on one fd. */
struct svol_piece {
	int fd;
	uint64_t fd_offset;
	uint64_t vol_offset;
	uint64_t len;
};
/* Split [offset, offset+len) into at most max pieces (one per segment).
 * Returns the number of pieces. */
int svol_map(struct tsr_svol *svol, uint64_t offset, uint64_t len, struct svol_piece *p, int max);
/* Make [offset, offset+len) of a raw device read as zeros, synchronously:
 * fallocate(PUNCH_HOLE) (unmap), else fallocate(ZERO_RANGE), else pwrite zeros. */
int store_dev_zero(int fd, uint64_t offset, uint64_t len);

/* ---- recovery.c: crash recovery at open ---- */

struct recovery_stats {
	uint64_t regions, fixed, corrupt;
};
/* Normalize the entries of every dirty region of svol, then clear the bitmap. */
int recovery_run(struct tsr_svol *svol, struct recovery_stats *st);

#endif
