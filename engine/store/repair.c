/*
 * Repair of a snapshot's image (tsr_svol_snap_repair): the mirror's scrub
 * votes a snapshot's blocks across the copies (majority wins) and writes the
 * winning bytes into a copy that differs.  Snapshots are read-only to every
 * other caller; this is the one way to change one.
 *
 * The rule: a repair changes the image of the snapshot it was voted on, and
 * no other image (not the head, not an older or newer snapshot).  Block b of
 * the image of Si is the first of Si..Sn whose present bit b is set, else the
 * head (image.c); so:
 *   - the new bytes go into Si's own layer: overwritten in place when Si
 *     holds b, else written there and b's present bit set.  A newer snapshot
 *     starts its lookup at its own layer and never sees Si's; the head is not
 *     touched.
 *   - an older snapshot Sk (k < i) whose lookup reached Si (none of Sk..Si-1
 *     holds b) would see the new bytes too; so first, if Si-1 lacks b, the
 *     bytes b reads now from Si are copied into Si-1 (pinned: data, entry and
 *     bit, as a copy on write would), and those older images read what they
 *     read before.  When the current bytes fail their CRC they are not pinned
 *     (a copy of them with a fresh entry would hide the damage): the older
 *     snapshots that read them then read the new bytes.
 * Why not overwrite the layer that holds the block for Si (it may be a newer
 * Sj, shared by Si..Sj): the copies' layer structures differ (a make-up
 * writes what differs only, copies missed writes differently), so bytes
 * voted for Si say nothing about Sj's image on this copy; a later vote of Sj
 * writing back into the same layer would undo Si's repair.  The cost of the
 * rule: a block of space in Si (and Si-1) per block repaired.
 *
 * Crash safety, per block, as copy on write orders it (cow.c): the data is
 * written and made durable (pwrite, fdatasync), then the crc entry ({c, c},
 * or the zero mark for a zero block) stored and the .crc synced, then the
 * present bit set and the .present synced.  A crash before the bit leaves an
 * entry without its bit, which the image does not read (recovery sets the
 * bit again only when the data matches it, layer_recover_present).  A crash
 * while a held block is overwritten can leave new data with the old entry
 * (or the reverse): that block then fails its CRC on read (-EIO), detected,
 * never read as wrong bytes; a scrub repairs it again.
 *
 * Blocking (pread, pwrite, fdatasync) under store->lock: rare (a block a
 * scrub found differing), like the other snapshot control calls.  The caller
 * keeps writes of the range off the volume's head meanwhile (the mirror's
 * range lock over the scrub's chunk): the bytes read from the head for a pin
 * must not change under it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/internal.h"

static bool block_is_zero(const uint8_t *blk)
{
	static const uint8_t zero[TSR_BLOCK_SIZE];

	return memcmp(blk, zero, TSR_BLOCK_SIZE) == 0;
}

static int pread_block(int fd, uint64_t fd_off, uint8_t *blk)
{
	ssize_t n = pread(fd, blk, TSR_BLOCK_SIZE, (off_t)fd_off);

	if (n < 0)
		return -errno;
	if (n < (ssize_t)TSR_BLOCK_SIZE) /* past the end of a sparse file */
		memset(blk + n, 0, TSR_BLOCK_SIZE - (size_t)n);
	return 0;
}

/* Block b of the image of h seen from layer from, as it reads now, into blk
 * (aligned).  0, -EIO when it fails its CRC, other -errno of pread. */
static int image_block(struct tsr_svol *h, struct layer *from, uint64_t b, uint8_t *blk)
{
	struct rowmap *m = NULL;
	struct block_src s;
	struct svol_piece p;
	uint64_t e, fd_off, max;
	unsigned token = 0;
	uint32_t c;
	int fd, ret;

	image_resolve(h, from, b, &s);
	if (s.kind == SRC_ZERO) {
		memset(blk, 0, TSR_BLOCK_SIZE);
		return 0;
	}
	if (s.kind == SRC_LAYER) {
		e = entry_load(&s.layer->crc[b]);
		fd = layer_fd(s.layer, b << STORE_BLOCK_SHIFT, &fd_off, &max);
	} else {
		e = entry_load(&blockmeta_entries(&s.head->meta)[b]);
		m = s.head->rowmap; /* its slot stays put until the pread returned */
		if (m)
			token = rowmap_read_begin(m);
		svol_map(s.head, b << STORE_BLOCK_SHIFT, TSR_BLOCK_SIZE, &p, 1);
		fd = p.fd;
		fd_off = p.fd_offset;
	}
	if (entry_cur(e) == 0 || fd < 0) { /* zeros: the zero mark, a trim, a hole */
		if (m)
			rowmap_read_end(m, token);
		memset(blk, 0, TSR_BLOCK_SIZE);
		return 0;
	}
	ret = pread_block(fd, fd_off, blk);
	if (m)
		rowmap_read_end(m, token);
	if (ret < 0)
		return ret;
	c = blockmeta_block_crc(blk);
	if (c == entry_cur(e) || (s.kind == SRC_HEAD && c == entry_prev(e)))
		return 0;
	return -EIO;
}

/* Put blk as block b of layer l: data durable, entry durable, bit durable
 * (crash order: see the header).  0 or -errno. */
static int layer_put(struct layer *l, uint64_t b, const uint8_t *blk)
{
	bool zero = block_is_zero(blk);
	uint64_t e, fd_off, max;
	uint32_t c;
	int fd, ret;

	ret = layer_reserve(l, b, 1);
	if (ret < 0)
		return ret;
	if (zero) {
		e = entry_make(0, LAYER_ZERO_MARK);
	} else {
		fd = layer_fd(l, b << STORE_BLOCK_SHIFT, &fd_off, &max);
		if (fd < 0)
			return -EIO;
		if (pwrite(fd, blk, TSR_BLOCK_SIZE, (off_t)fd_off) != (ssize_t)TSR_BLOCK_SIZE)
			return errno ? -errno : -EIO;
		if (fdatasync(fd) < 0)
			return -errno;
		c = blockmeta_block_crc(blk);
		e = entry_make(c, c);
	}
	entry_store(&l->crc[b], e);
	if (fdatasync(l->crc_fd) < 0)
		return -errno;
	if (!bit_test(l->present, b)) {
		bit_set(l->present, b);
		atomic_store(&l->present_unsynced, true);
		ret = layer_sync_present(l);
	}
	return ret;
}

int tsr_svol_snap_repair(struct tsr_svol *svol, uint64_t epoch, uint64_t offset, uint32_t len,
			 const void *buf)
{
	struct tsr_store *store;
	struct layer_chain *c;
	struct layer *si, *prev = NULL;
	uint8_t *cur = NULL, *want = NULL;
	unsigned i;
	int ret = 0;

	if (svol == NULL || buf == NULL)
		return -EINVAL;
	if (svol->ro_layer == NULL)
		return -EROFS; /* a head: written through tsr_svol_write */
	if (len == 0 || len > TSR_MAX_IO || offset % TSR_BLOCK_SIZE || len % TSR_BLOCK_SIZE)
		return -EINVAL;
	if (offset > atomic_load(&svol->size) || len > atomic_load(&svol->size) - offset)
		return -ENOSPC;
	cur = tsr_alloc_aligned(TSR_BLOCK_SIZE);
	want = tsr_alloc_aligned(TSR_BLOCK_SIZE);
	if (cur == NULL || want == NULL) {
		ret = -ENOMEM;
		goto out_free;
	}
	store = svol->store;
	si = svol->ro_layer;
	pthread_mutex_lock(&store->lock);
	if (epoch < tsr_svol_epoch(svol->base)) {
		ret = -ESTALE; /* a fenced coordinator: as a head write is refused */
		goto out;
	}
	c = chain_load(svol->base);
	for (i = 0; c != NULL && i < c->n && c->l[i] != si; i++)
		;
	if (c == NULL || i == c->n) {
		ret = -ENOENT;
		goto out;
	}
	/* a delete's merge moves a layer's blocks into the one before it: one
	 * of Si-1 .. Sn deleting may write Si or Si-1 (or the layers Si reads)
	 * meanwhile; older merges touch only older layers */
	for (unsigned k = i > 0 ? i - 1 : 0; k < c->n; k++)
		if (atomic_load(&c->l[k]->deleting)) {
			ret = -EBUSY;
			goto out;
		}
	if (i > 0)
		prev = c->l[i - 1];
	for (uint64_t b = offset >> STORE_BLOCK_SHIFT; b < (offset + len) >> STORE_BLOCK_SHIFT;
	     b++) {
		int rd;

		memcpy(want, (const uint8_t *)buf + ((b << STORE_BLOCK_SHIFT) - offset),
		       TSR_BLOCK_SIZE);
		rd = image_block(svol->base, si, b, cur);
		if (rd < 0 && rd != -EIO) {
			ret = rd;
			break;
		}
		if (rd == 0 && memcmp(cur, want, TSR_BLOCK_SIZE) == 0)
			continue; /* it reads those bytes already */
		if (rd == 0 && prev != NULL && (b << STORE_BLOCK_SHIFT) < prev->size &&
		    !bit_test(prev->present, b)) {
			/* older images that lack b reach it through Si's
			 * lookup (cur): pin it in Si-1 for them */
			ret = layer_put(prev, b, cur);
			if (ret < 0)
				break;
		}
		ret = layer_put(si, b, want);
		if (ret < 0)
			break;
		tsr_info("snapshot repair: %s block %llu rewritten", svol->name,
			 (unsigned long long)b);
	}
out:
	pthread_mutex_unlock(&store->lock);
	if (ret < 0 && ret != -ESTALE)
		tsr_error("snapshot repair: %s at %llu+%u: %s", svol->name,
			  (unsigned long long)offset, len, strerror(-ret));
out_free:
	tsr_free_aligned(cur);
	tsr_free_aligned(want);
	return ret;
}
