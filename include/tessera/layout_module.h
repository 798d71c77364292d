/*
 * Tessera layout implementer interface.  A layout fills one static const
 * struct tsr_layout_ops; engine/layout/layout.c wraps every call (range and
 * alignment checks, counters) so layouts receive only valid requests.
 */
#ifndef TESSERA_LAYOUT_MODULE_H
#define TESSERA_LAYOUT_MODULE_H

#include "tessera/layout.h"

struct tsr_layout_ops {
	const char *name;
	uint64_t (*size)(void *ctx);
	int (*read)(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len, void *buf,
		    tsr_cb cb_fn, void *cb_arg);
	/* As read, from the copies' disks, never their page cache (what is
	 * stored: tsr_layout_read_direct).  May be NULL: the layout's read never
	 * goes through a cache (snapshot images), and serves both. */
	int (*read_direct)(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len, void *buf,
			   tsr_cb cb_fn, void *cb_arg);
	int (*write)(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len,
		     const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg);
	int (*flush)(void *ctx, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg);
	int (*trim)(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len,
		    tsr_cb cb_fn, void *cb_arg);
	int (*write_zeroes)(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len,
			    unsigned flags, tsr_cb cb_fn, void *cb_arg);
	/* may be NULL: everything reported allocated */
	int (*block_status)(void *ctx, uint64_t offset, uint64_t len, struct tsr_extent *ext,
			    size_t max, size_t *count);
	/*
	 * May be NULL (-EOPNOTSUPP).  Called by layout.c (tsr_layout_snap) on
	 * the layout's home thread once no write, trim or write-zeroes is in
	 * flight; new ones are held back until cb_fn fires.  Cut req on every
	 * copy (all at the same point of the write order) and call cb_fn(cb_arg,
	 * 0 or -errno) exactly once when 0 is returned.  A layout whose cut is
	 * in place before it is durable may reopen the gate early with
	 * tsr_layout_snap_opened (below); cb_fn still fires once, on the home
	 * thread, when the operation is done.
	 */
	int (*snap)(void *ctx, const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg);
	/* Control of replicated layouts (layout.h); each may be NULL. */
	void (*copy_returned)(void *ctx, unsigned idx, const char *address);
	/* copy NULL: check only (tsr_layout_replace_check): would it be refused now? */
	int (*replace_copy)(void *ctx, unsigned idx, const struct tsr_layout_copy *copy);
	void (*fence)(void *ctx);
	int (*scrub_start)(void *ctx, bool repair);
	void (*get_status)(void *ctx, struct tsr_layout_status *out);
	/* May be NULL (-EOPNOTSUPP).  tsr_layout_resize, range checked (new_size
	 * aligned, >= size); why has room (why_len > 0). */
	int (*resize)(void *ctx, uint64_t new_size, bool check_only, char *why, size_t why_len);
	void (*destroy)(void *ctx);
};

/* For layouts' constructors: wrap ctx into a struct tsr_layout. */
int tsr_layout_new(const struct tsr_layout_ops *ops, void *ctx, struct tsr_layout **out);
/*
 * For a snap op in progress (home thread, at most once per op, before its
 * cb_fn): the cut is in place, held writes may go on.  The gate reopens now;
 * the request's caller is called back when the op's cb_fn fires, and
 * requests still complete in the order they entered the gate.
 */
void tsr_layout_snap_opened(struct tsr_layout *l);
/* Run fn(arg) on the layout's home thread (tsr_layout_set_home's post).
 * 0, or -EOPNOTSUPP (no home given) / the post's -errno: fn never runs. */
int tsr_layout_post(struct tsr_layout *l, void (*fn)(void *arg), void *arg);
/* Home thread: a snap request is held, running, or not called back yet
 * (an online grow waits for it: the copies' snapshots must all have one size). */
bool tsr_layout_snap_busy(const struct tsr_layout *l);
/* A home post was given (tsr_layout_set_home). */
bool tsr_layout_has_home(const struct tsr_layout *l);
/* For a layout's own control functions: which ops table, and its ctx. */
const struct tsr_layout_ops *tsr_layout_ops_of(const struct tsr_layout *l);
void *tsr_layout_ctx(struct tsr_layout *l);

#endif
