/*
 * One snapshot layer's files, and the present bitmaps (snapshots and clone
 * heads).  A layer of a volume of size S bytes (S at the cut) is:
 *
 *   volumes/<snapuuid>.data[.N]  the blocks it holds, at their volume offsets,
 *                                sparse, O_DIRECT, 8 TiB segments like a volume's
 *   volumes/<snapuuid>.crc       8 bytes per block, the volume crc table format;
 *                                a held block's entry is {c, c} (0: a zero block)
 *   volumes/<snapuuid>.present   bit b%8 of byte b/8 (LSB first) = block b is held;
 *                                size rounded up to 4096 bytes, mmap'd MAP_SHARED
 *                                and read/set as 64-bit little-endian words
 *
 * A bit is set only after the block's data and crc entry are on disk.  A
 * merge makes its bits durable before it drops the merged layer; a copy on
 * write does not wait for its bit (cow.c): the head's dirty-region bitmap is
 * the intent record, and layer_recover_present rebuilds the bits of copies
 * in dirty regions at open from their entries (a copied zero block's entry
 * is {0, LAYER_ZERO_MARK}); the bits are made durable before that bitmap is
 * cleared (chain_sync_present: quiet flush, clean close).  Entries of blocks
 * whose bit is clear outside dirty regions mean nothing (an interrupted merge
 * or copy may leave some); they are rewritten before the bit is set.
 *
 * A clone's head has a .present of its own (volumes/<uuid>.present): bit b set
 * = the clone has written block b since it was made (read its own data), else
 * block b is read from the parent image.  It grows with the volume; bits are
 * set before the head write is issued and reach the disk with the flush (or
 * the FUA write) that makes that write durable.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/internal.h"

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

uint64_t present_file_size(uint64_t size)
{
	uint64_t bytes = round_up(((size >> STORE_BLOCK_SHIFT) + 7) / 8, STORE_PAGE);

	return bytes ? bytes : STORE_PAGE;
}

static unsigned nsegs(uint64_t size)
{
	return (unsigned)((size + STORE_SEG_SIZE - 1) >> STORE_SEG_SHIFT);
}

static int create_sized(const char *path, uint64_t len, int flags)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | flags, 0600);
	int ret = 0;

	if (fd < 0 || ftruncate(fd, (off_t)len) < 0 || fsync(fd) < 0) {
		ret = -errno;
		tsr_error("snapshot: create %s: %s", path, strerror(-ret));
	}
	if (fd >= 0)
		close(fd);
	return ret;
}

int layer_create_files(struct tsr_store *store, const char *uuid, uint64_t size)
{
	char path[PATH_MAX];
	unsigned i;
	int ret;

	for (i = 0; i < nsegs(size); i++) {
		uint64_t start = (uint64_t)i << STORE_SEG_SHIFT;

		store_seg_path(store, uuid, i, path);
		ret = create_sized(
		    path, size - start < STORE_SEG_SIZE ? size - start : STORE_SEG_SIZE, 0);
		if (ret)
			return ret;
	}
	store_meta_path(store, uuid, "crc", path);
	ret = create_sized(path, blockmeta_crc_file_size(size), 0);
	if (ret)
		return ret;
	store_meta_path(store, uuid, "present", path);
	return create_sized(path, present_file_size(size), 0);
}

void layer_remove_files(struct tsr_store *store, const char *uuid, uint64_t size)
{
	store_remove_files(store, uuid, size);
}

void layer_close(struct layer *l)
{
	unsigned i;

	if (l == NULL)
		return;
	pthread_mutex_destroy(&l->crc_sync.lock);
	if (l->crc)
		munmap(l->crc, l->crc_len);
	if (l->present)
		munmap(l->present, l->present_len);
	for (i = 0; l->seg_fd && i < l->nseg; i++)
		if (l->seg_fd[i] >= 0)
			close(l->seg_fd[i]);
	free(l->seg_fd);
	if (l->crc_fd >= 0)
		close(l->crc_fd);
	if (l->present_fd >= 0)
		close(l->present_fd);
	free(l);
}

static int map_file(int fd, size_t len, void **out)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	*out = p;
	return 0;
}

int layer_open(struct tsr_store *store, const struct snap_row *row, struct layer **out)
{
	char path[PATH_MAX];
	struct layer *l = calloc(1, sizeof(*l));
	struct stat st;
	unsigned i;
	int ret;

	if (l == NULL)
		return -ENOMEM;
	pthread_mutex_init(&l->crc_sync.lock, NULL);
	l->crc_fd = l->present_fd = -1;
	snprintf(l->uuid, sizeof(l->uuid), "%s", row->uuid);
	l->seq = row->seq;
	l->size = row->size;
	l->nseg = nsegs(row->size);
	l->seg_fd = malloc(sizeof(int) * (l->nseg ? l->nseg : 1));
	if (l->seg_fd == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	for (i = 0; i < l->nseg; i++)
		l->seg_fd[i] = -1;
	for (i = 0; i < l->nseg; i++) {
		store_seg_path(store, row->uuid, i, path);
		l->seg_fd[i] = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
		if (l->seg_fd[i] < 0)
			goto err_errno;
	}
	store_meta_path(store, row->uuid, "crc", path);
	l->crc_fd = open(path, O_RDWR | O_CLOEXEC);
	if (l->crc_fd < 0 || fstat(l->crc_fd, &st) < 0)
		goto err_errno;
	l->crc_len = (size_t)round_up(blockmeta_crc_file_size(row->size), STORE_PAGE);
	if ((uint64_t)st.st_size < blockmeta_crc_file_size(row->size)) {
		ret = -EUCLEAN;
		tsr_error("snapshot %s: %s is too short: layer metadata damaged", row->name, path);
		goto err;
	}
	ret = map_file(l->crc_fd, l->crc_len ? l->crc_len : STORE_PAGE, (void **)&l->crc);
	if (ret)
		goto err_ret;
	if (l->crc_len == 0)
		l->crc_len = STORE_PAGE;
	store_meta_path(store, row->uuid, "present", path);
	l->present_fd = open(path, O_RDWR | O_CLOEXEC);
	if (l->present_fd < 0 || fstat(l->present_fd, &st) < 0)
		goto err_errno;
	l->present_len = (size_t)present_file_size(row->size);
	if ((uint64_t)st.st_size < l->present_len) {
		ret = -EUCLEAN;
		tsr_error("snapshot %s: %s is too short: layer metadata damaged", row->name, path);
		goto err;
	}
	ret = map_file(l->present_fd, l->present_len, (void **)&l->present);
	if (ret)
		goto err_ret;
	l->crc_sync.fd = l->crc_fd;
	*out = l;
	return 0;
err_errno:
	ret = -errno;
err_ret:
	tsr_error("snapshot %s: open %s: %s", row->name, path, strerror(-ret));
err:
	layer_close(l);
	return ret == -ENOENT ? -EIO : ret;
}

int layer_fd(const struct layer *l, uint64_t off, uint64_t *fd_off, uint64_t *max)
{
	uint64_t seg = off >> STORE_SEG_SHIFT;

	*fd_off = off & (STORE_SEG_SIZE - 1);
	*max = STORE_SEG_SIZE - *fd_off;
	return seg < l->nseg ? l->seg_fd[seg] : -1;
}

int layer_reserve(struct layer *l, uint64_t b, uint64_t n)
{
	int ret = blockmeta_alloc_range(l->crc_fd, b * STORE_CRC_ENTRY, n * STORE_CRC_ENTRY);

	if (ret == 0) /* 64-bit words of bits */
		ret = blockmeta_alloc_range(l->present_fd, b / 64 * 8,
					    ((b + n - 1) / 64 - b / 64 + 1) * 8);
	return ret;
}

uint64_t layer_allocated(struct tsr_store *store, const char *uuid, uint64_t size)
{
	char path[PATH_MAX];
	uint64_t total = 0;
	struct stat st;
	unsigned i;

	for (i = 0; i < nsegs(size); i++) {
		store_seg_path(store, uuid, i, path);
		if (stat(path, &st) == 0)
			total += (uint64_t)st.st_blocks * 512;
	}
	return total;
}

/* ---- a clone head's own-block bitmap ---- */

static size_t own_reserve(uint64_t len)
{
	uint64_t want = len * 2;

	if (want < (64ull << 20))
		want = 64ull << 20;
	return (size_t)round_up(want, STORE_PAGE);
}

int own_bits_open(struct own_bits *ob, const char *path, uint64_t size)
{
	struct stat st;
	void *p;
	int ret;

	memset(ob, 0, sizeof(*ob));
	ob->fd = open(path, O_RDWR | O_CLOEXEC);
	if (ob->fd < 0 || fstat(ob->fd, &st) < 0)
		goto err_errno;
	if ((uint64_t)st.st_size < present_file_size(size)) {
		tsr_error("open: %s is too short: clone metadata damaged", path);
		ret = -EUCLEAN;
		goto err;
	}
	ob->map_len = own_reserve((uint64_t)st.st_size);
	ret = map_file(ob->fd, ob->map_len, &p);
	if (ret) {
		errno = -ret;
		goto err_errno;
	}
	atomic_store(&ob->map, p);
	return 0;
err_errno:
	ret = -errno;
	tsr_error("open: %s: %s", path, strerror(-ret));
err:
	own_bits_close(ob);
	return ret == -ENOENT ? -EIO : ret;
}

int own_bits_grow(struct own_bits *ob, uint64_t new_size)
{
	uint64_t len = present_file_size(new_size);
	struct retired_map *r;
	void *p;
	int ret;

	if (ftruncate(ob->fd, (off_t)len) < 0 || fsync(ob->fd) < 0) {
		ret = -errno;
		tsr_error("resize: extend clone bitmap: %s", strerror(-ret));
		return ret;
	}
	if (len <= ob->map_len)
		return 0;
	r = malloc(sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	ret = map_file(ob->fd, own_reserve(len), &p);
	if (ret) {
		free(r);
		return ret;
	}
	r->addr = own_map(ob);
	r->len = ob->map_len;
	r->next = ob->retired;
	ob->retired = r;
	ob->map_len = own_reserve(len);
	atomic_store_explicit(&ob->map, p, memory_order_release);
	return 0;
}

void own_bits_close(struct own_bits *ob)
{
	struct retired_map *r;
	uint64_t *m = own_map(ob);

	if (m)
		munmap(m, ob->map_len);
	while ((r = ob->retired)) {
		ob->retired = r->next;
		munmap(r->addr, r->len);
		free(r);
	}
	if (ob->fd >= 0)
		close(ob->fd);
	memset(ob, 0, sizeof(*ob));
	ob->fd = -1;
}

_Atomic unsigned store_test_present_syncs;

int layer_sync_present(struct layer *l)
{
	if (!atomic_exchange(&l->present_unsynced, false))
		return 0;
	atomic_fetch_add(&store_test_present_syncs, 1);
	if (fdatasync(l->present_fd) < 0) {
		int ret = -errno;

		atomic_store(&l->present_unsynced, true);
		tsr_error("snapshot %s: sync present bitmap: %s", l->uuid, strerror(-ret));
		return ret;
	}
	return 0;
}

int chain_sync_present(struct tsr_svol *svol)
{
	struct layer_chain *c = chain_load(svol);
	unsigned i;
	int ret = 0, r;

	for (i = 0; c != NULL && i < c->n; i++) {
		r = layer_sync_present(c->l[i]);
		if (r && ret == 0)
			ret = r;
	}
	return ret;
}

int chain_sync_present_try(struct tsr_svol *svol)
{
	int ret;

	if (pthread_mutex_trylock(&svol->store->lock))
		return -EBUSY;
	ret = chain_sync_present(svol);
	pthread_mutex_unlock(&svol->store->lock);
	return ret;
}

/* Does the layer's data of block b match crc c?  1 yes, 0 no, -errno. */
static int layer_block_matches(struct layer *l, uint64_t b, uint32_t c, uint8_t *buf)
{
	uint64_t fd_off, max;
	int fd = layer_fd(l, b << STORE_BLOCK_SHIFT, &fd_off, &max);
	ssize_t n;

	if (fd < 0)
		return fd;
	n = pread(fd, buf, TSR_BLOCK_SIZE, (off_t)fd_off);
	if (n < 0)
		return -errno;
	if (n < (ssize_t)TSR_BLOCK_SIZE) /* past the end of a short file: zeros */
		memset(buf + (n > 0 ? n : 0), 0, TSR_BLOCK_SIZE - (size_t)(n > 0 ? n : 0));
	return blockmeta_block_crc(buf) == c;
}

int layer_recover_present(struct layer *l, const uint8_t *dirty_map, uint64_t vol_size,
			  uint64_t *fixed, uint64_t *dropped)
{
	uint64_t size = l->size < vol_size ? l->size : vol_size;
	uint64_t nblk = size >> STORE_BLOCK_SHIFT;
	uint64_t per = (uint64_t)1 << (STORE_REGION_SHIFT - STORE_BLOCK_SHIFT);
	uint64_t regions = (nblk + per - 1) / per, r, b, end;
	bool entries = false;
	uint8_t *buf = NULL;
	int ret = 0;

	for (r = 0; r < regions && ret == 0; r++) {
		if (!(dirty_map[r / 8] & (1u << (r % 8))))
			continue;
		end = (r + 1) * per < nblk ? (r + 1) * per : nblk;
		for (b = r * per; b < end; b++) {
			uint64_t e = entry_load(&l->crc[b]);
			int m;

			if (e == 0 || bit_test(l->present, b))
				continue;
			if (entry_cur(e) == 0) {
				m = entry_prev(e) == LAYER_ZERO_MARK;
			} else {
				if (buf == NULL && (buf = tsr_alloc_aligned(TSR_BLOCK_SIZE)) == NULL) {
					ret = -ENOMEM;
					break;
				}
				m = entry_cur(e) == entry_prev(e)
					? layer_block_matches(l, b, entry_cur(e), buf)
					: 0;
				if (m < 0) {
					ret = m;
					break;
				}
			}
			if (m && (ret = layer_reserve(l, b, 1)) != 0)
				break;
			if (m) {
				bit_set(l->present, b);
				(*fixed)++;
			} else {
				entry_store(&l->crc[b], 0);
				entries = true;
				(*dropped)++;
			}
		}
	}
	tsr_free_aligned(buf);
	if (entries && fdatasync(l->crc_fd) < 0 && ret == 0)
		ret = -errno;
	/* always, not only when a bit was rebuilt: after a process crash the
	 * bits set before it may still be in the page cache only, and the
	 * head's recovery is about to clear the regions that vouch for them */
	atomic_fetch_add(&store_test_present_syncs, 1);
	if (fdatasync(l->present_fd) < 0 && ret == 0)
		ret = -errno;
	return ret;
}
