/*
 * The "local" layout: a volume with one copy, in this node's store.  It maps
 * every call one to one onto the store; mirror and EC layouts (replication
 * and EC issues) fan the same calls out to peers.
 */
#include <errno.h>
#include <stdlib.h>

#include "tessera/layout_module.h"

struct local_layout {
	struct tsr_svol *svol; /* our reference on the store volume */
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

static void local_destroy(void *ctx)
{
	struct local_layout *ll = ctx;

	if (ll == NULL)
		return;
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
	.destroy = local_destroy,
};

int tsr_layout_local_create(struct tsr_store *store, const char *name, struct tsr_layout **out)
{
	struct local_layout *ll = calloc(1, sizeof(*ll));
	int ret;

	if (ll == NULL)
		return -ENOMEM;
	ret = tsr_store_vol_open(store, name, &ll->svol);
	if (ret)
		goto err;
	ret = tsr_layout_new(&local_layout_ops, ll, out);
	if (ret)
		goto err;
	return 0;
err:
	if (ll->svol)
		tsr_svol_put(ll->svol);
	free(ll);
	return ret;
}
