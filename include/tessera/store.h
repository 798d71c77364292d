/*
 * Tessera local store (DESIGN.md layer 5): the volumes a node keeps on its own
 * disk, in a data directory of sparse files or on a raw block device.
 *
 * Catalogue: a SQLite database (DIR/store.db, WAL journal) with one row per
 * volume, each row carrying a CRC32C of its fields, checked on open.
 * Data: one sparse file per volume (or an extent of the raw device), read
 * and written with O_DIRECT through the calling thread's struct tsr_io.
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
};

struct tsr_vol_info {
	char name[64];
	char uuid[37];
	uint64_t size;       /* bytes, multiple of TSR_BLOCK_SIZE */
	uint64_t allocated;  /* bytes actually allocated on disk */
	int64_t created;     /* unix seconds */
};

/*
 * Open (creating if absent) the store in dir; runs crash recovery.
 * Errors: -ENOENT/-EACCES dir, -EUCLEAN catalogue checksum mismatch,
 * -EINVAL bad device, -EBUSY store locked by another process.
 */
int tsr_store_open(const char *dir, const struct tsr_store_opts *opts,
		   struct tsr_store **out);
/* Clean shutdown: flush everything, mark clean.  All svols must be put. NULL ok. */
void tsr_store_close(struct tsr_store *store);

/* Errors: -EINVAL bad name or size, -EEXIST, -ENOSPC (device mode). */
int tsr_store_vol_create(struct tsr_store *store, const char *name, uint64_t size,
			 struct tsr_vol_info *info_out);
/* Errors: -ENOENT, -EBUSY (open handles). */
int tsr_store_vol_delete(struct tsr_store *store, const char *name);
/* Grow only.  Errors: -ENOENT, -EINVAL (not a multiple of 4 KiB, or a shrink), -ENOSPC. */
int tsr_store_vol_resize(struct tsr_store *store, const char *name, uint64_t new_size);
/* Errors: -ENOENT. */
int tsr_store_vol_info(struct tsr_store *store, const char *name, struct tsr_vol_info *out);
/* *out is malloc'd (free()); sorted by name. */
int tsr_store_vol_list(struct tsr_store *store, struct tsr_vol_info **out, size_t *count);

/* Open a handle for I/O (refcounted: several opens share one).  -ENOENT. */
int tsr_store_vol_open(struct tsr_store *store, const char *name, struct tsr_svol **out);
void tsr_svol_put(struct tsr_svol *svol);
uint64_t tsr_svol_size(const struct tsr_svol *svol); /* current size (resize updates it) */

/*
 * Data path.  Async contract: returns 0 and cb_fn fires exactly once (from
 * tsr_io_poll on io's thread) with 0 or -errno; or returns -errno and cb_fn
 * never fires.  offset and len must be multiples of TSR_BLOCK_SIZE, within the
 * volume, len <= TSR_MAX_IO; buf must be TSR_BLOCK_SIZE aligned.
 * Call errors: -EINVAL misaligned, -ENOSPC past the end (NBD's error for that).
 * Completion errors: -EIO (disk error or CRC mismatch, logged once per block).
 */
int tsr_svol_read(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset,
		  uint32_t len, void *buf, tsr_cb cb_fn, void *cb_arg);
#define TSR_WRITE_FUA 0x1u     /* durable (data and its CRCs) before completion */
#define TSR_WRITE_NO_HOLE 0x2u /* write_zeroes: allocate, do not punch */
int tsr_svol_write(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset,
		   uint32_t len, const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg);
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
};
void tsr_svol_get_stats(const struct tsr_svol *svol, struct tsr_svol_stats *out);

#endif
