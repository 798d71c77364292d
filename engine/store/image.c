/*
 * Reads through layers: the image of a snapshot, and the head of a clone.
 *
 * Block b of the image of volume h seen from its layer Si (or from its head):
 * the first of Si .. Sn whose present bit b is set holds it; else the head:
 * a volume that is not a clone owns every block of its head; a clone owns the
 * blocks whose own bit is set, and reads the others from its parent image
 * (the source volume seen from the source layer; zeros past that layer's
 * size), clones of clones nesting (image_resolve).
 *
 * A read resolves every block, reads runs of blocks that live in the same
 * file with one request each (at most IMG_INFLIGHT at a time, so the io's
 * queue is never flooded), memsets blocks whose entry says zeros, and checks
 * every block read against its crc entry ({c, c} in a layer, cur or prev in a
 * head), like a head read.
 *
 * Race with copy-on-write: a block read from a head on behalf of a snapshot
 * image may be overwritten meanwhile; the copy into the newest snapshot sets
 * the present bit before the head write is issued, so after the read
 * completes each such block is resolved again, and read again from the layer
 * when its bit got set (rare: one more round).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"

#define IMG_INFLIGHT   16
#define IMG_STATUS_MAX (1ull << 30) /* bytes looked at per block_status call */

void (*store_test_before_head_read)(void *arg);
void *store_test_hook_arg;

struct img_op {
	struct tsr_svol *h;     /* image of h .. */
	struct layer *from;     /* .. seen from this layer (NULL: h's head) */
	struct tsr_svol *stats; /* counters to update */
	struct tsr_io *io;
	uint64_t offset, len;
	uint8_t *buf;
	tsr_cb cb_fn;
	void *cb_arg;
	uint64_t nblk;
	uint64_t cursor; /* next block to consider for a request */
	int pending;     /* requests in flight */
	int status;
	bool started; /* the first round was queued (completions may run) */
	struct block_src *src;
	uint8_t *state; /* per block: 0 done, 1 to read this round, 2 read this round */
	struct iovec *iov;
	struct iovec tramp;
	/* heads with a redirect map this image may read (h and the heads its
	 * parents chain through), each counted in a read epoch until img_free:
	 * their slots stay put while the op may still read them */
	unsigned nmaps;
	struct rowmap **maps;
	unsigned *map_tokens;
};

void image_resolve(struct tsr_svol *h, struct layer *from, uint64_t b, struct block_src *s)
{
	bool via = from != NULL;

	for (;;) {
		struct layer_chain *c = chain_load(h);
		unsigned i = 0, n = c ? c->n : 0;

		if (from) {
			while (i < n && c->l[i] != from)
				i++;
		} else {
			i = n;
		}
		for (; i < n; i++) {
			struct layer *l = c->l[i];

			if ((b << STORE_BLOCK_SHIFT) < l->size && bit_test(l->present, b)) {
				s->kind = SRC_LAYER;
				s->layer = l;
				s->head = NULL;
				s->via_snap = via;
				return;
			}
		}
		if (h->is_clone && !bit_test(own_map(&h->own), b)) {
			struct layer *pl = h->parent_layer;

			if ((b << STORE_BLOCK_SHIFT) >= pl->size) {
				s->kind = SRC_ZERO;
				s->layer = NULL;
				s->head = NULL;
				s->via_snap = via;
				return;
			}
			from = pl;
			h = h->parent;
			via = true;
			continue;
		}
		s->kind = SRC_HEAD;
		s->layer = NULL;
		s->head = h;
		s->via_snap = via;
		return;
	}
}

static uint64_t src_entry(const struct block_src *s, uint64_t b)
{
	if (s->kind == SRC_LAYER)
		return entry_load(&s->layer->crc[b]);
	if (s->kind == SRC_HEAD)
		return entry_load(&blockmeta_entries(&s->head->meta)[b]);
	return 0;
}

bool image_zero(struct tsr_svol *h, struct layer *from, uint64_t b)
{
	struct block_src s;

	image_resolve(h, from, b, &s);
	if (s.kind == SRC_ZERO)
		return true;
	return entry_cur(src_entry(&s, b)) == 0; /* {0, old}: trimmed, or being trimmed */
}

static bool same_src(const struct block_src *a, const struct block_src *b)
{
	return a->kind == b->kind && a->layer == b->layer && a->head == b->head;
}

/* Resolve block i of the request; zeros are filled at once. */
static void img_resolve_block(struct img_op *op, uint64_t i)
{
	uint64_t b = (op->offset >> STORE_BLOCK_SHIFT) + i;

	image_resolve(op->h, op->from, b, &op->src[i]);
	if (op->src[i].kind == SRC_ZERO || src_entry(&op->src[i], b) == 0 ||
	    (op->src[i].kind == SRC_LAYER && entry_cur(src_entry(&op->src[i], b)) == 0)) {
		op->src[i].kind = SRC_ZERO;
		memset(op->buf + (i << STORE_BLOCK_SHIFT), 0, TSR_BLOCK_SIZE);
		op->state[i] = 0;
	} else {
		op->state[i] = 1;
	}
}

static void img_free(struct img_op *op)
{
	unsigned i;

	for (i = 0; i < op->nmaps; i++)
		rowmap_read_end(op->maps[i], op->map_tokens[i]);
	free(op->maps);
	free(op->map_tokens);
	free(op->src);
	free(op->state);
	free(op->iov);
	free(op);
}

static void img_finish(struct img_op *op)
{
	tsr_cb cb_fn = op->cb_fn;
	void *cb_arg = op->cb_arg;
	int status = op->status;

	if (status == 0 && op->stats) {
		atomic_fetch_add_explicit(&op->stats->stats.reads, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&op->stats->stats.bytes_read, op->len,
					  memory_order_relaxed);
	}
	img_free(op);
	cb_fn(cb_arg, status);
}

static void img_read_done(void *cb_arg, int res);

/* Queue requests for blocks in state 1, IMG_INFLIGHT at most.  0, or -errno
 * when nothing could be queued. */
static int img_issue(struct img_op *op)
{
	while (op->pending < IMG_INFLIGHT && op->cursor < op->nblk) {
		uint64_t i = op->cursor, j, off, fd_off, max;
		struct block_src *s = &op->src[i];
		int fd, ret;

		if (op->state[i] != 1) {
			op->cursor++;
			continue;
		}
		off = op->offset + (i << STORE_BLOCK_SHIFT);
		if (s->kind == SRC_LAYER) {
			fd = layer_fd(s->layer, off, &fd_off, &max);
		} else {
			struct svol_piece p;

			svol_map(s->head, off, op->len - (i << STORE_BLOCK_SHIFT), &p, 1);
			fd = p.fd;
			fd_off = p.fd_offset;
			max = p.len;
		}
		for (j = i + 1; j < op->nblk && op->state[j] == 1 && same_src(&op->src[j], s) &&
				((j - i) << STORE_BLOCK_SHIFT) < max;
		     j++)
			;
		op->iov[i].iov_base = op->buf + (i << STORE_BLOCK_SHIFT);
		op->iov[i].iov_len = (j - i) << STORE_BLOCK_SHIFT;
		if (s->kind == SRC_HEAD && s->via_snap && store_test_before_head_read)
			store_test_before_head_read(store_test_hook_arg);
		ret = fd < 0 ? -EIO
			     : tsr_io_readv(op->io, fd, &op->iov[i], 1, fd_off, img_read_done, op);
		if (ret == -EAGAIN && op->pending > 0)
			return 0; /* more when one completes */
		if (ret)
			return ret;
		op->pending++;
		for (; i < j; i++)
			op->state[i] = 2;
		op->cursor = j;
	}
	return 0;
}

/* Check what this round read; resolve again what may have moved.  Returns
 * true when another round is needed. */
static bool img_verify(struct img_op *op)
{
	uint64_t first = op->offset >> STORE_BLOCK_SHIFT, i, bad = 0;
	uint32_t z = blockmeta_zero_crc();
	bool again = false;

	for (i = 0; i < op->nblk; i++) {
		struct block_src *s = &op->src[i];
		uint32_t c;
		uint64_t e;

		if (op->state[i] != 2)
			continue;
		op->state[i] = 0;
		c = blockmeta_block_crc(op->buf + (i << STORE_BLOCK_SHIFT));
		e = src_entry(s, first + i);
		if (c != entry_cur(e) && (s->kind == SRC_LAYER || c != entry_prev(e))) {
			if (s->kind == SRC_HEAD && s->via_snap) {
				/* a head write raced with us: the copy is in the layer now */
				struct block_src n;

				image_resolve(op->h, op->from, first + i, &n);
				if (!same_src(&n, s)) {
					img_resolve_block(op, i);
					again = again || op->state[i] == 1;
					continue;
				}
			}
			if (bad++ < 8)
				tsr_error("read: %s %s block %llu: CRC mismatch (stored %08x/%08x, "
					  "computed %08x)",
					  s->kind == SRC_LAYER ? "snapshot" : "volume",
					  s->kind == SRC_LAYER ? s->layer->uuid : s->head->name,
					  (unsigned long long)(first + i), entry_cur(e) ^ z,
					  entry_prev(e) ^ z, c ^ z);
			continue;
		}
		if (s->kind == SRC_HEAD && s->via_snap) {
			struct block_src n;

			image_resolve(op->h, op->from, first + i, &n);
			if (!same_src(&n, s)) {
				img_resolve_block(op, i);
				again = again || op->state[i] == 1;
			}
		}
	}
	if (bad) {
		if (op->stats)
			atomic_fetch_add_explicit(&op->stats->stats.crc_errors, bad,
						  memory_order_relaxed);
		op->status = -EIO;
		return false;
	}
	return again;
}

static void img_read_done(void *cb_arg, int res)
{
	struct img_op *op = cb_arg;
	int ret;

	op->pending--;
	if (res < 0 && op->status == 0)
		op->status = res;
	if (op->status == 0 && op->cursor < op->nblk) {
		ret = img_issue(op);
		if (ret && op->status == 0)
			op->status = ret;
	}
	if (op->pending)
		return;
	if (op->status == 0 && img_verify(op)) {
		op->cursor = 0;
		ret = img_issue(op);
		if (ret == 0 && op->pending)
			return;
		if (ret)
			op->status = ret;
	}
	img_finish(op);
}

/* Begin a read epoch on every head with a redirect map that op may read
 * (before any block is resolved).  0 or -ENOMEM. */
static int img_count_maps(struct img_op *op)
{
	struct tsr_svol *v;
	unsigned n = 0;

	for (v = op->h; v; v = v->parent)
		n += v->rowmap != NULL;
	if (n == 0)
		return 0;
	op->maps = malloc(n * sizeof(*op->maps));
	op->map_tokens = malloc(n * sizeof(*op->map_tokens));
	if (op->maps == NULL || op->map_tokens == NULL)
		return -ENOMEM;
	for (v = op->h; v; v = v->parent) {
		if (v->rowmap == NULL)
			continue;
		op->maps[op->nmaps] = v->rowmap;
		op->map_tokens[op->nmaps++] = rowmap_read_begin(v->rowmap);
	}
	return 0;
}

int image_read(struct tsr_svol *h, struct layer *from, struct tsr_svol *stats, struct tsr_io *io,
	       uint64_t offset, uint64_t len, void *buf, tsr_cb cb_fn, void *cb_arg)
{
	struct img_op *op = calloc(1, sizeof(*op));
	uint64_t i;
	int ret;

	if (op == NULL)
		return -ENOMEM;
	op->h = h;
	op->from = from;
	op->stats = stats;
	op->io = io;
	op->offset = offset;
	op->len = len;
	op->buf = buf;
	op->cb_fn = cb_fn;
	op->cb_arg = cb_arg;
	op->nblk = len >> STORE_BLOCK_SHIFT;
	op->src = malloc(op->nblk * sizeof(*op->src));
	op->state = malloc(op->nblk);
	op->iov = malloc(op->nblk * sizeof(*op->iov));
	if (op->src == NULL || op->state == NULL || op->iov == NULL || img_count_maps(op)) {
		img_free(op);
		return -ENOMEM;
	}
	for (i = 0; i < op->nblk; i++)
		img_resolve_block(op, i);
	ret = img_issue(op);
	if (ret && op->pending == 0) {
		img_free(op);
		return ret;
	}
	if (ret)
		op->status = ret;
	if (op->pending)
		return 0;
	/* nothing to read (all zeros): complete from the io all the same */
	op->pending = 1;
	ret = data_trampoline(h->store, io, &op->tramp, img_read_done, op);
	if (ret) {
		img_free(op);
		return ret;
	}
	return 0;
}

static int push_extent(struct tsr_extent *ext, size_t max, size_t *n, uint64_t offset, uint64_t len,
		       uint32_t flags)
{
	if (*n && ext[*n - 1].flags == flags && ext[*n - 1].offset + ext[*n - 1].length == offset) {
		ext[*n - 1].length += len;
		return 0;
	}
	if (*n == max)
		return -ENOSPC;
	ext[*n].offset = offset;
	ext[*n].length = len;
	ext[*n].flags = flags;
	(*n)++;
	return 0;
}

int image_block_status(struct tsr_svol *h, struct layer *from, uint64_t size, uint64_t offset,
		       uint64_t len, struct tsr_extent *ext, size_t max, size_t *count)
{
	const uint32_t hole = TSR_EXTENT_HOLE | TSR_EXTENT_ZERO;
	uint64_t b, end;
	size_t n = 0;

	*count = 0;
	if (max == 0 || len == 0)
		return -EINVAL;
	if (offset >= size)
		return -ENOSPC;
	if (len > size - offset)
		len = size - offset;
	/* metadata of every block is looked at: answer at most 1 GiB per call
	 * (a shorter answer is allowed, as when ext fills up) */
	if (len > IMG_STATUS_MAX)
		len = IMG_STATUS_MAX;
	end = (offset + len) >> STORE_BLOCK_SHIFT;
	for (b = offset >> STORE_BLOCK_SHIFT; b < end; b++)
		if (push_extent(ext, max, &n, b << STORE_BLOCK_SHIFT, TSR_BLOCK_SIZE,
				image_zero(h, from, b) ? hole : 0))
			break;
	*count = n;
	return 0;
}
