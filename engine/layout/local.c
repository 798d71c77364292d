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
 * volume's home worker, with the layout.c gate holding writes back).  A
 * create is tsr_store_snap_create_async: on the spare layer the store's
 * thread made ahead (the layout asks for spares when it opens the volume,
 * tsr_store_snap_spare, and lets them go when it closes it), the gate only
 * sees the name and seq checks and the in-memory publish of the layer; the
 * layout then reopens the gate (tsr_layout_snap_opened) and the store's
 * thread makes the catalogue row final (SQLite, one WAL sync) and calls
 * local_created, which posts the gate's callback back to the home worker
 * (tsr_layout_post), so the reply goes out only once the row is durable.
 * Without a home post (unit tests) or a spare, the create runs whole in the
 * gate.  Delete and clone run whole in the gate.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/layout_module.h"

struct local_layout {
	struct tsr_store *store; /* borrowed: outlives the layout */
	struct tsr_layout *layout; /* the wrapper around us (gate, home post) */
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

static int local_read_direct(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len, void *buf,
			     tsr_cb cb_fn, void *cb_arg)
{
	struct local_layout *ll = ctx;

	return tsr_svol_read_direct(ll->svol, io, offset, len, buf, cb_fn, cb_arg);
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

/* A create whose row the store makes durable after the gate reopened. */
struct local_create {
	struct local_layout *ll;
	tsr_cb cb_fn; /* the gate's */
	void *cb_arg;
	int status;   /* set by local_created before the post */
};

/* On the home worker: the row is durable (or failed). */
static void local_created_home(void *arg)
{
	struct local_create *lc = arg;
	tsr_cb cb_fn = lc->cb_fn;
	void *cb_arg = lc->cb_arg;
	int status = lc->status;

	free(lc);
	cb_fn(cb_arg, status);
}

/* From the store's spare thread. */
static void local_created(void *arg, int status)
{
	struct local_create *lc = arg;
	int ret;

	lc->status = status;
	ret = tsr_layout_post(lc->ll->layout, local_created_home, lc);
	if (ret) /* the home worker is gone (shutdown): nobody to call back */
		tsr_error("snapshot: volume %s: cannot reach the home worker to report a "
			  "create (%s); its reply is lost",
			  lc->ll->vol, strerror(-ret));
}

static int local_create(struct local_layout *ll, const struct tsr_snap_req *req, tsr_cb cb_fn,
			void *cb_arg)
{
	struct local_create *lc = calloc(1, sizeof(*lc));
	int ret;

	if (lc == NULL)
		return -ENOMEM;
	lc->ll = ll;
	lc->cb_fn = cb_fn;
	lc->cb_arg = cb_arg;
	ret = tsr_store_snap_create_async(ll->store, ll->vol, req->snap, local_created, lc);
	if (ret < 0) {
		free(lc);
		return ret;
	}
	if (ret == 1) { /* the whole create ran in the gate (no spare) */
		free(lc);
		cb_fn(cb_arg, 0);
		return 0;
	}
	/* cut and published: writes may go on; local_created reports later */
	tsr_layout_snap_opened(ll->layout);
	return 0;
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
		if (tsr_layout_has_home(ll->layout))
			return local_create(ll, req, cb_fn, cb_arg);
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
	.read_direct = local_read_direct,
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
	ll->layout = *out;
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
