/*
 * The "local" layout: a volume with one copy, in this node's store.  It maps
 * every call one to one onto the store; mirror and EC layouts (replication
 * and EC issues) fan the same calls out to peers.
 *
 * A name "VOL@SNAP" opens snapshot SNAP of VOL read-only
 * (tsr_store_snap_open): reads and block status come from the snapshot's
 * image, writes, trims and write-zeroes fail with -EROFS (the store's
 * answer), and the snap op is refused.  That is how a snapshot is exported.
 *
 * The snap op runs the store's snapshot call on the calling thread (the
 * volume's home worker, with the layout.c gate holding writes back).  For a
 * create that is one catalogue transaction (the row: SQLite, one WAL sync)
 * and the in-memory publish of the layer: the layer's files are made ahead
 * by the store's spare thread, which the layout asks for when it opens the
 * volume (tsr_store_snap_spare) and the store asks again after each create;
 * the layout lets the spare go when it closes the volume.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/layout_module.h"

struct local_layout {
	struct tsr_store *store; /* borrowed: outlives the layout */
	struct tsr_svol *svol;   /* our reference on the store volume (or snapshot image) */
	char vol[64];            /* the volume's name in the store */
	bool snapshot;           /* svol is a read-only snapshot image */
};

static uint64_t local_size(void *ctx)
{
	struct local_layout *ll = ctx;

	return tsr_svol_size(ll->svol);
}

static int local_read(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len, void *buf,
		      tsr_cb cb_fn, void *cb_arg)
{
	struct local_layout *ll = ctx;

	return tsr_svol_read(ll->svol, io, offset, len, buf, cb_fn, cb_arg);
}

static int local_write(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len,
		       const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	struct local_layout *ll = ctx;

	return tsr_svol_write(ll->svol, io, offset, len, buf, flags, cb_fn, cb_arg);
}

static int local_flush(void *ctx, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg)
{
	struct local_layout *ll = ctx;

	return tsr_svol_flush(ll->svol, io, cb_fn, cb_arg);
}

static int local_trim(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len,
		      tsr_cb cb_fn, void *cb_arg)
{
	struct local_layout *ll = ctx;

	return tsr_svol_trim(ll->svol, io, offset, len, cb_fn, cb_arg);
}

static int local_write_zeroes(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len,
			      unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	struct local_layout *ll = ctx;

	return tsr_svol_write_zeroes(ll->svol, io, offset, len, flags, cb_fn, cb_arg);
}

static int local_block_status(void *ctx, uint64_t offset, uint64_t len, struct tsr_extent *ext,
			      size_t max, size_t *count)
{
	struct local_layout *ll = ctx;

	return tsr_svol_block_status(ll->svol, offset, len, ext, max, count);
}

static int local_snap(void *ctx, const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg)
{
	struct local_layout *ll = ctx;
	struct tsr_snap_info snap_info;
	struct tsr_vol_info vol_info;
	int ret;

	if (ll->snapshot)
		return -EROFS;
	switch (req->op) {
	case TSR_SNAP_CREATE:
		ret = tsr_store_snap_create(ll->store, ll->vol, req->snap, &snap_info);
		break;
	case TSR_SNAP_DELETE:
		ret = tsr_store_snap_delete(ll->store, ll->vol, req->snap);
		break;
	case TSR_SNAP_CLONE:
		ret = tsr_store_vol_clone(ll->store, req->clone, ll->vol,
					  req->snap[0] ? req->snap : NULL, &vol_info);
		break;
	default:
		return -EINVAL;
	}
	cb_fn(cb_arg, ret);
	return 0;
}

static void local_destroy(void *ctx)
{
	struct local_layout *ll = ctx;

	if (ll == NULL)
		return;
	if (!ll->snapshot)
		tsr_store_snap_spare(ll->store, ll->vol, false);
	tsr_svol_put(ll->svol);
	free(ll);
}

static const struct tsr_layout_ops local_layout_ops = {
	.name = "local",
	.size = local_size,
	.read = local_read,
	.write = local_write,
	.flush = local_flush,
	.trim = local_trim,
	.write_zeroes = local_write_zeroes,
	.block_status = local_block_status,
	.snap = local_snap,
	.destroy = local_destroy,
};

int tsr_layout_local_create(struct tsr_store *store, const char *name, struct tsr_layout **out)
{
	struct local_layout *ll = calloc(1, sizeof(*ll));
	const char *at = strchr(name, '@');
	int ret;

	if (ll == NULL)
		return -ENOMEM;
	ll->store = store;
	if (at != NULL) {
		/* "VOL@SNAP": the snapshot's image, read-only */
		if ((size_t)(at - name) >= sizeof(ll->vol)) {
			ret = -ENOENT;
			goto err;
		}
		memcpy(ll->vol, name, (size_t)(at - name));
		ll->snapshot = true;
		ret = tsr_store_snap_open(store, ll->vol, at + 1, &ll->svol);
	} else {
		strncpy(ll->vol, name, sizeof(ll->vol) - 1);
		ret = tsr_store_vol_open(store, name, &ll->svol);
	}
	if (ret)
		goto err;
	ret = tsr_layout_new(&local_layout_ops, ll, out);
	if (ret)
		goto err;
	/* the next snapshot's files, made in the background; without them a
	 * create makes them itself (device mode: no snapshots) */
	if (!ll->snapshot)
		tsr_store_snap_spare(store, ll->vol, true);
	return 0;
err:
	if (ll->svol)
		tsr_svol_put(ll->svol);
	free(ll);
	return ret;
}
