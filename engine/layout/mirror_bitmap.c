/*
 * Mirror layout: the dirty-region bitmap of one copy, in memory and in its
 * state file (format in mirror_internal.h).
 *
 * Persisting without blocking the home worker: a page whose bits changed
 * gets a version (mv); a write of the page (a private copy of it, so later
 * changes do not tear it) goes through the home io with TSR_IO_FUA; when it
 * completes, pv = the version it carried, and the waiters that needed that
 * version run.  One write per page in flight; changes made meanwhile go out
 * with the next one.  A write that only sets bits already persisted waits
 * for nothing (the common case while a copy is away).  A write that finds
 * the io queue full (-EAGAIN) keeps its waiters and goes again from
 * mbm_retry (a page write of this bitmap completing, or the owner's io
 * completions and tick): a deep queue delays a copy's bitmap, never fails it.
 *
 * Opening, loading and the header are written at create, on the control
 * thread, with plain blocking calls.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layout/mirror_internal.h"

#define PAGE          TSR_BLOCK_SIZE
#define BITS_PER_PAGE (PAGE * 8ull)
#define BM_MAGIC      "TSRMBMAP"
#define BM_VERSION    1u

void bits_set_range(uint8_t *bits, uint64_t first, uint64_t last)
{
	for (uint64_t r = first; r <= last; r++)
		bits[r >> 3] |= (uint8_t)(1u << (r & 7));
}

/* The header page for a volume of size bytes (format: mirror_internal.h). */
static void header_fill_size(uint8_t *p, const struct mirror *m, uint64_t size)
{
	uint32_t crc;

	memset(p, 0, PAGE);
	memcpy(p, BM_MAGIC, 8);
	p[8] = BM_VERSION;
	memcpy(p + 12, &m->region_size, 4);
	memcpy(p + 16, &size, 8);
	crc = tsr_crc32c(0, p, 24);
	memcpy(p + 24, &crc, 4);
}

static void header_fill(uint8_t *p, const struct mirror *m)
{
	header_fill_size(p, m, m->size);
}

int mbm_open(struct mbitmap *bm, struct mirror *m, const char *path, bool load, bool full)
{
	uint8_t *hdr = NULL, *want = NULL;
	size_t bytes;
	int ret = 0, loaded = 0;
	ssize_t n;

	memset(bm, 0, sizeof(*bm));
	bm->m = m;
	bm->fd = -1;
	snprintf(bm->path, sizeof(bm->path), "%s", path);
	bm->nregions = m->nregions;
	bm->region_shift = m->region_shift;
	bm->npages = (m->nregions + BITS_PER_PAGE - 1) / BITS_PER_PAGE;
	bytes = bm->npages * PAGE;
	bm->bits = tsr_alloc_aligned(bytes);
	bm->pages = calloc(bm->npages, sizeof(*bm->pages));
	hdr = tsr_alloc_aligned(PAGE);
	want = tsr_alloc_aligned(PAGE);
	if (bm->bits == NULL || bm->pages == NULL || hdr == NULL || want == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	memset(bm->bits, 0, bytes);
	bm->fd = open(path, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
	if (bm->fd < 0 && errno == EINVAL) /* no O_DIRECT here (tmpfs): FUA writes still */
		bm->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (bm->fd < 0) {
		ret = -errno;
		tsr_error("mirror %s: bitmap %s: %s", m->name, path, strerror(-ret));
		goto out;
	}
	header_fill(want, m);
	if (load && !full) {
		n = pread(bm->fd, hdr, PAGE, 0);
		if (n == PAGE && memcmp(hdr, want, PAGE) == 0 &&
		    pread(bm->fd, bm->bits, bytes, PAGE) == (ssize_t)bytes) {
			loaded = 1;
		} else {
			/* ours, for another size: a grow did not reach it (mirror_resize) */
			bm->stale_header = n == PAGE && memcmp(hdr, want, 16) == 0;
			tsr_warn("mirror %s: bitmap %s: absent or not ours: full resync", m->name,
				 path);
			full = true;
		}
	}
	if (full)
		memset(bm->bits, 0xff, bytes);
	/* bits past the last region stay clear whatever the file said */
	for (uint64_t r = bm->nregions; r < bm->npages * BITS_PER_PAGE; r++)
		bm->bits[r >> 3] &= (uint8_t) ~(1u << (r & 7));
	for (uint64_t r = 0; r < bm->nregions; r++)
		if (mbm_test(bm, r))
			bm->nset++;
	/* header + the bits as they are now, durable before we serve */
	if (pwrite(bm->fd, want, PAGE, 0) != PAGE ||
	    pwrite(bm->fd, bm->bits, bytes, PAGE) != (ssize_t)bytes || fdatasync(bm->fd) < 0) {
		ret = errno ? -errno : -EIO;
		tsr_error("mirror %s: bitmap %s: write: %s", m->name, path, strerror(-ret));
		goto out;
	}
	ret = loaded;
out:
	tsr_free_aligned(hdr);
	tsr_free_aligned(want);
	return ret;
}

void mbm_close(struct mbitmap *bm, bool unlink_file)
{
	if (bm->pages != NULL)
		for (size_t p = 0; p < bm->npages; p++)
			tsr_free_aligned(bm->pages[p].iobuf);
	free(bm->pages);
	tsr_free_aligned(bm->bits);
	if (bm->fd >= 0)
		close(bm->fd);
	if (unlink_file && bm->path[0] != '\0')
		unlink(bm->path);
	bm->pages = NULL;
	bm->bits = NULL;
	bm->fd = -1;
}

bool mbm_test(const struct mbitmap *bm, uint64_t region)
{
	return bm->bits[region >> 3] & (1u << (region & 7));
}

uint64_t mbm_next(const struct mbitmap *bm, uint64_t from)
{
	uint64_t r = from;

	while (r < bm->nregions) {
		if ((r & 63) == 0 && r + 64 <= bm->nregions) {
			uint64_t w;

			memcpy(&w, bm->bits + (r >> 3), 8);
			if (w == 0) {
				r += 64;
				continue;
			}
		}
		if (mbm_test(bm, r))
			return r;
		r++;
	}
	return bm->nregions;
}

bool mbm_busy(const struct mbitmap *bm)
{
	for (size_t p = 0; p < bm->npages; p++)
		if (bm->pages[p].inflight || bm->pages[p].retry)
			return true;
	return false;
}

static void page_write(struct mbitmap *bm, size_t p);

/* The owner's reference for a page write in flight. */
static void bm_hold(struct mbitmap *bm, bool get)
{
	if (bm->hold != NULL)
		bm->hold(bm->owner, get);
	else if (get)
		m_get(bm->m);
	else
		m_put(bm->m);
}

/* Per-page completion context: the bitmap and the page index. */
/*
 * One page write in flight.  The iovec lives here, not in bm->pages: the io
 * layer reads it until the write completes (at submit, and again for a short
 * write), and mbm_grow may reallocate the page array meanwhile.
 */
struct page_ctx {
	struct mbitmap *bm;
	size_t page;
	struct iovec iov;
};

static void page_done(void *arg, int res)
{
	struct page_ctx *pc = arg;
	struct mbitmap *bm = pc->bm;
	struct mirror *m = bm->m;
	struct mpage *pg = &bm->pages[pc->page];
	struct waiter **pp = &pg->waiters, *ready = NULL, *w;
	int status = res < 0 ? res : 0;

	pg->inflight = false;
	if (status == 0) {
		pg->pv = pg->fv;
		bm->error = 0;
	} else {
		tsr_error("mirror %s: bitmap %s: page %zu: %s", m->name, bm->path, pc->page,
			  strerror(-status));
		bm->error = status;
	}
	/* on success wake the waiters now covered; on failure all of them fail */
	while ((w = *pp) != NULL) {
		if (status < 0 || w->ver <= pg->pv) {
			*pp = w->next;
			w->next = ready;
			ready = w;
		} else {
			pp = &w->next;
		}
	}
	if (status == 0 && pg->mv > pg->pv && !m->closing)
		page_write(bm, pc->page);
	free(pc);
	mbm_retry(bm); /* this write's io slot is free */
	while ((w = ready) != NULL) {
		ready = w->next;
		w->fn(w->arg, status);
		free(w);
	}
	bm_hold(bm, false);
}

static void page_write(struct mbitmap *bm, size_t p)
{
	struct mpage *pg = &bm->pages[p];
	struct mirror *m = bm->m;
	struct page_ctx *pc;
	int ret;

	if (pg->inflight)
		return;
	pg->retry = false;
	if (pg->iobuf == NULL)
		pg->iobuf = tsr_alloc_aligned(PAGE);
	pc = malloc(sizeof(*pc));
	if (pg->iobuf == NULL || pc == NULL) {
		free(pc);
		ret = -ENOMEM;
		goto fail;
	}
	pc->bm = bm;
	pc->page = p;
	memcpy(pg->iobuf, bm->bits + p * PAGE, PAGE);
	pc->iov.iov_base = pg->iobuf;
	pc->iov.iov_len = PAGE;
	pg->fv = pg->mv;
	pg->inflight = true;
	bm_hold(bm, true);
	ret = tsr_io_writev(m->io, bm->fd, &pc->iov, 1, (p + 1) * PAGE, TSR_IO_FUA, page_done, pc);
	if (ret == 0) {
		m->bitmap_writes++;
		return;
	}
	pg->inflight = false;
	free(pc);
	bm_hold(bm, false);
	if (ret == -EAGAIN && !m->closing) {
		/* io queue full: the waiters wait, mbm_retry writes it again */
		pg->retry = true;
		bm->retry_pending = true;
		return;
	}
fail:
	/* the waiters of this page fail; their writes are failed, not acked */
	{
		struct waiter *w;

		tsr_error("mirror %s: bitmap %s: cannot queue a write: %s", m->name, bm->path,
			  strerror(-ret));
		bm->error = ret;
		while ((w = pg->waiters) != NULL) {
			pg->waiters = w->next;
			w->fn(w->arg, ret);
			free(w);
		}
	}
}

void mbm_retry(struct mbitmap *bm)
{
	if (!bm->retry_pending || bm->pages == NULL)
		return;
	bm->retry_pending = false;
	for (size_t p = 0; p < bm->npages; p++) {
		struct mpage *pg = &bm->pages[p];
		struct waiter *w;

		if (!pg->retry)
			continue;
		if (!bm->m->closing) {
			page_write(bm, p); /* may set retry_pending again */
			continue;
		}
		pg->retry = false;
		while ((w = pg->waiters) != NULL) {
			pg->waiters = w->next;
			w->fn(w->arg, -ECANCELED);
			free(w);
		}
	}
}

static int add_waiter(struct mbitmap *bm, size_t p, void (*fn)(void *, int), void *arg)
{
	struct mpage *pg = &bm->pages[p];
	struct waiter *w = malloc(sizeof(*w));

	if (w == NULL)
		return -ENOMEM;
	w->fn = fn;
	w->arg = arg;
	w->ver = pg->mv;
	w->next = pg->waiters;
	pg->waiters = w;
	return 0;
}

int mbm_mark(struct mbitmap *bm, uint64_t off, uint64_t len, void (*fn)(void *, int), void *arg)
{
	uint64_t first = off >> bm->region_shift;
	uint64_t last = (off + len - 1) >> bm->region_shift;
	size_t p, p0 = first / BITS_PER_PAGE, p1 = last / BITS_PER_PAGE;
	int waits = 0, ret;

	for (uint64_t r = first; r <= last; r++) {
		if (!mbm_test(bm, r)) {
			bm->bits[r >> 3] |= (uint8_t)(1u << (r & 7));
			bm->nset++;
			bm->pages[r / BITS_PER_PAGE].mv++;
		}
	}
	for (p = p0; p <= p1; p++) {
		struct mpage *pg = &bm->pages[p];

		if (pg->pv >= pg->mv)
			continue;
		if (fn != NULL) {
			ret = add_waiter(bm, p, fn, arg);
			if (ret < 0)
				return waits ? waits : ret;
			waits++;
		}
		page_write(bm, p);
	}
	return waits;
}

int mbm_wait_all(struct mbitmap *bm, void (*fn)(void *, int), void *arg)
{
	int waits = 0;

	for (size_t p = 0; p < bm->npages; p++) {
		struct mpage *pg = &bm->pages[p];

		if (pg->pv >= pg->mv)
			continue;
		if (add_waiter(bm, p, fn, arg) == 0)
			waits++;
		page_write(bm, p);
	}
	return waits;
}

void mbm_mark_all(struct mbitmap *bm)
{
	if (bm->nregions > 0)
		mbm_mark(bm, 0, bm->nregions << bm->region_shift, NULL, NULL);
}

void mbm_clear_region(struct mbitmap *bm, uint64_t region)
{
	size_t p = region / BITS_PER_PAGE;

	if (!mbm_test(bm, region))
		return;
	bm->bits[region >> 3] &= (uint8_t) ~(1u << (region & 7));
	bm->nset--;
	bm->pages[p].mv++;
	/* a stale set bit costs one extra region copy, never data: no waiter */
	page_write(bm, p);
}

void mbm_clear_bits(struct mbitmap *bm, uint64_t first, uint64_t n)
{
	for (uint64_t r = first; r < first + n && r < bm->nregions; r++) {
		if (!mbm_test(bm, r))
			continue;
		bm->bits[r >> 3] &= (uint8_t) ~(1u << (r & 7));
		bm->nset--;
		bm->pages[r / BITS_PER_PAGE].mv++;
	}
}

void mbm_write_changed(struct mbitmap *bm, uint64_t first, uint64_t last)
{
	if (bm->nregions == 0 || first >= bm->nregions)
		return;
	if (last >= bm->nregions)
		last = bm->nregions - 1;
	for (size_t p = first / BITS_PER_PAGE; p <= last / BITS_PER_PAGE; p++) {
		struct mpage *pg = &bm->pages[p];

		/* fv is the version of the last write queued; a write in flight
		 * is followed by another when it completes (page_done: mv > pv) */
		if (pg->mv != pg->fv && !pg->inflight)
			page_write(bm, p);
	}
}

void mbm_clear_regions(struct mbitmap *bm, uint64_t first, uint64_t n)
{
	if (n == 0)
		return;
	mbm_clear_bits(bm, first, n);
	mbm_write_changed(bm, first, first + n - 1);
}

void mbm_clear_all(struct mbitmap *bm)
{
	for (size_t p = 0; p < bm->npages; p++) {
		uint8_t *b = bm->bits + p * PAGE;
		bool any = false;

		for (size_t i = 0; i < PAGE && !any; i++)
			any = b[i] != 0;
		if (!any)
			continue;
		memset(b, 0, PAGE);
		bm->pages[p].mv++;
		page_write(bm, p);
	}
	bm->nset = 0;
}

/* ---- online growth (mirror.c mirror_resize) ---------------------------- */

int mbm_grow_file(struct mbitmap *bm, uint64_t new_size, uint64_t new_nregions)
{
	struct mirror *m = bm->m;
	size_t npages = (new_nregions + BITS_PER_PAGE - 1) / BITS_PER_PAGE;
	uint8_t *page = NULL;
	int ret = 0;

	if (bm->fd < 0)
		return -EBADF;
	page = tsr_alloc_aligned(PAGE);
	if (page == NULL)
		return -ENOMEM;
	/* the new bit pages first (clear: the grown space holds zeros on every
	 * copy), so that a header naming the new size never sees them missing */
	memset(page, 0, PAGE);
	for (size_t p = bm->npages; p < npages; p++) {
		if (pwrite(bm->fd, page, PAGE, (off_t)((p + 1) * PAGE)) != PAGE) {
			ret = errno ? -errno : -EIO;
			goto out;
		}
	}
	header_fill_size(page, m, new_size);
	if (pwrite(bm->fd, page, PAGE, 0) != PAGE || fdatasync(bm->fd) < 0)
		ret = errno ? -errno : -EIO;
out:
	if (ret)
		tsr_error("mirror %s: bitmap %s: grow to %llu regions: %s", m->name, bm->path,
			  (unsigned long long)new_nregions, strerror(-ret));
	tsr_free_aligned(page);
	return ret;
}

int mbm_grow(struct mbitmap *bm, uint64_t new_nregions)
{
	size_t npages = (new_nregions + BITS_PER_PAGE - 1) / BITS_PER_PAGE;

	if (new_nregions < bm->nregions)
		return -EINVAL;
	if (npages > bm->npages) {
		uint8_t *bits = tsr_alloc_aligned(npages * PAGE);
		struct mpage *pages = calloc(npages, sizeof(*pages));

		if (bits == NULL || pages == NULL) {
			tsr_free_aligned(bits);
			free(pages);
			return -ENOMEM;
		}
		/* page writes in flight copied their page at submit, hold their
		 * iovec in their page_ctx and find their page again by index */
		memset(bits, 0, npages * PAGE);
		memcpy(bits, bm->bits, bm->npages * PAGE);
		memcpy(pages, bm->pages, bm->npages * sizeof(*pages));
		tsr_free_aligned(bm->bits);
		free(bm->pages);
		bm->bits = bits;
		bm->pages = pages;
		bm->npages = npages;
	}
	/* the new regions are clear: bits past the old last region always were */
	bm->nregions = new_nregions;
	return 0;
}
