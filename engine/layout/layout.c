/*
 * Layout core: the one place that calls through struct tsr_layout_ops.
 * Every wrapper checks the request against the volume (alignment, range,
 * maximum size) so layouts receive only valid requests, and keeps the
 * async contract: a layout that returns an error must not call back.
 */
#include <errno.h>
#include <stdlib.h>

#include "tessera/layout_module.h"

struct tsr_layout {
	const struct tsr_layout_ops *ops; /* never NULL; block_status may be NULL */
	void *ctx;                        /* the layout's own state, freed by ops->destroy */
};

int tsr_layout_new(const struct tsr_layout_ops *ops, void *ctx, struct tsr_layout **out)
{
	struct tsr_layout *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return -ENOMEM;
	l->ops = ops;
	l->ctx = ctx;
	*out = l;
	return 0;
}

const struct tsr_layout_ops *tsr_layout_ops_of(const struct tsr_layout *l)
{
	return l->ops;
}

void *tsr_layout_ctx(struct tsr_layout *l)
{
	return l->ctx;
}

void tsr_layout_destroy(struct tsr_layout *l)
{
	if (l == NULL)
		return;
	l->ops->destroy(l->ctx);
	free(l);
}

const char *tsr_layout_name(const struct tsr_layout *l)
{
	return l->ops->name;
}

uint64_t tsr_layout_size(const struct tsr_layout *l)
{
	return l->ops->size(l->ctx);
}

/* -EINVAL for misaligned, -ENOSPC past the end (the NBD error for both reads
 * and writes beyond the export is EINVAL/ENOSPC; the NBD layer maps it). */
static int check_range(struct tsr_layout *l, uint64_t offset, uint64_t len, uint64_t max_len)
{
	uint64_t size = l->ops->size(l->ctx);

	if (len == 0 || len > max_len)
		return -EINVAL;
	if (offset % TSR_BLOCK_SIZE || len % TSR_BLOCK_SIZE)
		return -EINVAL;
	if (offset > size || len > size - offset)
		return -ENOSPC;
	return 0;
}

int tsr_layout_read(struct tsr_layout *l, struct tsr_io *io, uint64_t offset, uint32_t len,
		    void *buf, tsr_cb cb_fn, void *cb_arg)
{
	int ret = check_range(l, offset, len, TSR_MAX_IO);

	if (ret)
		return ret;
	return l->ops->read(l->ctx, io, offset, len, buf, cb_fn, cb_arg);
}

int tsr_layout_write(struct tsr_layout *l, struct tsr_io *io, uint64_t offset, uint32_t len,
		     const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	int ret = check_range(l, offset, len, TSR_MAX_IO);

	if (ret)
		return ret;
	return l->ops->write(l->ctx, io, offset, len, buf, flags, cb_fn, cb_arg);
}

int tsr_layout_flush(struct tsr_layout *l, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg)
{
	return l->ops->flush(l->ctx, io, cb_fn, cb_arg);
}

int tsr_layout_trim(struct tsr_layout *l, struct tsr_io *io, uint64_t offset, uint64_t len,
		    tsr_cb cb_fn, void *cb_arg)
{
	int ret = check_range(l, offset, len, UINT64_MAX);

	if (ret)
		return ret;
	return l->ops->trim(l->ctx, io, offset, len, cb_fn, cb_arg);
}

int tsr_layout_write_zeroes(struct tsr_layout *l, struct tsr_io *io, uint64_t offset,
			    uint64_t len, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	int ret = check_range(l, offset, len, UINT64_MAX);

	if (ret)
		return ret;
	return l->ops->write_zeroes(l->ctx, io, offset, len, flags, cb_fn, cb_arg);
}

int tsr_layout_block_status(struct tsr_layout *l, uint64_t offset, uint64_t len,
			    struct tsr_extent *ext, size_t max, size_t *count)
{
	uint64_t size = l->ops->size(l->ctx);
	int ret = check_range(l, offset, len, UINT64_MAX);

	if (ret)
		return ret;
	if (max == 0) {
		*count = 0;
		return 0;
	}
	if (l->ops->block_status == NULL) {
		ext[0].offset = offset;
		ext[0].length = len < size - offset ? len : size - offset;
		ext[0].flags = 0;
		*count = 1;
		return 0;
	}
	return l->ops->block_status(l->ctx, offset, len, ext, max, count);
}
