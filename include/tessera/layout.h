/*
 * Tessera layout (DESIGN.md layer 3): how a volume's bytes map onto copies.
 * The coordinator (engine/vol) calls tsr_layout_*; layouts implement
 * include/tessera/layout_module.h.  Today there is one layout, "local": a
 * single copy in this node's store.  Mirror and EC layouts come with
 * replication; they fan each call out to the peer protocol (layer 4).
 */
#ifndef TESSERA_LAYOUT_H
#define TESSERA_LAYOUT_H

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
};
/*
 * Must run on the layout's home thread (the volume's home worker, vol.h);
 * cb_fn(cb_arg, 0 or -errno) fires exactly once, on that thread, when 0 is
 * returned.  A second request while one runs waits behind it.
 * Errors: -EOPNOTSUPP (layout without snapshots), -ENOMEM.
 */
int tsr_layout_snap(struct tsr_layout *l, const struct tsr_snap_req *req, tsr_cb cb_fn,
		    void *cb_arg);

#endif
