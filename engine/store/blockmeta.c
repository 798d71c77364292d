/*
 * Per-volume block metadata: the per-block CRC table and the write-intent
 * (dirty-region) bitmap, both files in DIR/volumes/, both mmap'd shared.
 *
 * <uuid>.crc — size 8 * (volume size / 4096) bytes, sparse.  Entry of block b
 * at byte offset 8*b:
 *   +0  u32 cur   (little endian)  crc32c(block data) XOR Z
 *   +4  u32 prev  (little endian)  the cur before the latest write
 *   Z = crc32c(4096 zero bytes) = 0x98f94189, so a zero (sparse) entry means
 *   "a block of zeros".  A read accepts data whose crc matches cur or prev.
 *   The 8 bytes are stored with one aligned 64-bit store, so a reader never
 *   sees half an update.
 *
 * <uuid>.dirty — one bit per 1 MiB region (region r = bytes [r MiB, r+1 MiB)):
 *   byte r/8, bit r%8 (least significant bit first); the file is rounded up to
 *   a multiple of 4096 bytes.  A set bit means "entries in this region may
 *   not be normalized" ({cur, prev} where the data matches only one of them);
 *   recovery (recovery.c) scans exactly those regions after an unclean stop.
 *   The bit reaches the disk before the first entry of a clean region is
 *   changed: a write (data.c) sets it in the mapping and queues an fsync of
 *   the file on its own io, and changes entries and data only from that
 *   fsync's completion (blockmeta_mark_dirty_async; the event loop goes on
 *   meanwhile); trim and write_zeroes msync on the spot (blockmeta_mark_dirty).
 *   The bitmap is cleared (zeroed in place, fdatasync) only when every entry is
 *   known to match its data: after recovery at open, at the close of a
 *   volume, and after a flush during which no write was in flight
 *   (blockmeta_clear_if_quiet, at most every 30 s, TSR_STORE_DIRTY_CLEAR_MS),
 *   and never while a failed write may have left an entry unnormalized.
 *
 * Mappings and resize: the crc file is mapped with room to grow (twice its
 * size, at least 1 GiB of address space, MAP_NORESERVE) because touching a
 * page past EOF raises SIGBUS, a grow ftruncates the file first.  When a
 * grow outruns the mapping, a larger mapping of the same file is published
 * atomically and the old one stays mapped until the volume is closed: both
 * alias the same page cache, so a thread still using the old pointer stays
 * correct and no I/O has to be quiesced.  The bitmap and its in-memory
 * "durable" twin are small (128 MiB for 1 PiB) and are reserved for the
 * largest volume (STORE_MAX_VOL_SIZE) up front.
 *
 * Full file systems: a store through a shared mapping into a hole of the
 * file has to allocate a block, and on a full file system the kernel answers
 * with SIGBUS, not an error.  So no page is stored to before its blocks
 * exist: the bitmap file is allocated whole (create, grow, open) and cleared
 * by zeroing in place; the crc table stays sparse (thin volumes), and a write
 * allocates the table pages it will change first (blockmeta_reserve_entries,
 * a synchronous fallocate once per 2 MiB of volume after open, remembered in
 * the anonymous crc_alloc bitmap), failing with -ENOSPC before it has changed
 * anything.  Trim and write_zeroes only change entries that are non-zero,
 * which live on pages that are allocated already.  The same rule for the
 * other mapped files: a snapshot layer's .crc and .present pages are
 * allocated before a copy-on-write chunk, a merge or a recovery stores to
 * them (layer_reserve), a clone's own bits before a write, trim or zeroing
 * sets one (data.c own_reserve); each fails with -ENOSPC instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/internal.h"
#include "tessera/io.h"

static uint32_t g_zero_crc;
static pthread_once_t g_zero_once = PTHREAD_ONCE_INIT;

static void zero_crc_init(void)
{
	void *z = calloc(1, TSR_BLOCK_SIZE);

	if (z == NULL)
		abort(); /* at first use, before any volume is open */
	g_zero_crc = tsr_crc32c(0, z, TSR_BLOCK_SIZE);
	free(z);
}

uint32_t blockmeta_zero_crc(void)
{
	pthread_once(&g_zero_once, zero_crc_init);
	return g_zero_crc;
}

uint32_t blockmeta_block_crc(const void *block)
{
	return tsr_crc32c(0, block, TSR_BLOCK_SIZE) ^ blockmeta_zero_crc();
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

uint64_t blockmeta_crc_file_size(uint64_t size)
{
	return (size >> STORE_BLOCK_SHIFT) * STORE_CRC_ENTRY;
}

uint64_t blockmeta_dirty_file_size(uint64_t size)
{
	uint64_t regions = (size + (1ull << STORE_REGION_SHIFT) - 1) >> STORE_REGION_SHIFT;
	uint64_t bytes = round_up((regions + 7) / 8, STORE_PAGE);

	return bytes ? bytes : STORE_PAGE;
}

static size_t crc_reserve(uint64_t crc_len)
{
	uint64_t max = blockmeta_crc_file_size(STORE_MAX_VOL_SIZE);
	uint64_t want = crc_len * 2;

	if (want < (1ull << 30))
		want = 1ull << 30;
	if (want > max)
		want = max;
	if (want < crc_len)
		want = crc_len;
	return (size_t)round_up(want, STORE_PAGE);
}

int blockmeta_create_files(const char *crc_path, const char *dirty_path, uint64_t size)
{
	const char *path = crc_path;
	int fd, ret = 0;

	/* sizes durable before the catalogue row that promises them */
	fd = open(crc_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)blockmeta_crc_file_size(size)) < 0 || fsync(fd) < 0)
		goto err;
	close(fd);
	path = dirty_path;
	fd = open(dirty_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)blockmeta_dirty_file_size(size)) < 0)
		goto err;
	ret = blockmeta_alloc_file(fd, blockmeta_dirty_file_size(size));
	if (ret < 0)
		goto err_ret;
	if (fsync(fd) < 0)
		goto err;
	close(fd);
	return 0;
err:
	ret = -errno;
err_ret:
	tsr_error("create: %s: %s", path, strerror(-ret));
	if (fd >= 0)
		close(fd);
	return ret;
}

int blockmeta_alloc_file(int fd, uint64_t len)
{
	return blockmeta_alloc_range(fd, 0, len);
}

int blockmeta_alloc_range(int fd, uint64_t offset, uint64_t len)
{
	uint64_t start = offset / STORE_PAGE * STORE_PAGE;
	uint64_t end = round_up(offset + len, STORE_PAGE);

	if (len == 0 || fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)start, (off_t)(end - start)) == 0)
		return 0;
	return errno == EOPNOTSUPP ? 0 : -errno;
}

int blockmeta_open(struct blockmeta *bm, const char *crc_path, const char *dirty_path,
		   uint64_t size)
{
	uint64_t crc_len = blockmeta_crc_file_size(size);
	const char *path = crc_path;
	struct stat st;
	void *p;
	int ret;

	memset(bm, 0, sizeof(*bm));
	bm->crc_fd = bm->dirty_fd = -1;
	pthread_mutex_init(&bm->dirty_lock, NULL);
	bm->crc_fd = open(crc_path, O_RDWR | O_CLOEXEC);
	if (bm->crc_fd < 0 || fstat(bm->crc_fd, &st) < 0)
		goto err_errno;
	if ((uint64_t)st.st_size < crc_len) {
		tsr_error("open: %s is %lld bytes, expected %llu: volume metadata damaged",
			  crc_path, (long long)st.st_size, (unsigned long long)crc_len);
		ret = -EUCLEAN;
		goto err;
	}
	path = dirty_path;
	bm->dirty_fd = open(dirty_path, O_RDWR | O_CLOEXEC);
	if (bm->dirty_fd < 0 || fstat(bm->dirty_fd, &st) < 0)
		goto err_errno;
	if ((uint64_t)st.st_size < blockmeta_dirty_file_size(size)) {
		tsr_error("open: %s is %lld bytes, expected %llu: volume metadata damaged",
			  dirty_path, (long long)st.st_size,
			  (unsigned long long)blockmeta_dirty_file_size(size));
		ret = -EUCLEAN;
		goto err;
	}
	/* the bitmap is stored to through a mapping: its blocks must exist (a
	 * store older than this check punched it when clearing it).  If they
	 * cannot be had now, the volume opens all the same and its marks try
	 * again first (dirty_holes): reads go on, writes get -ENOSPC. */
	ret = blockmeta_alloc_file(bm->dirty_fd, (uint64_t)st.st_size);
	if (ret) {
		tsr_warn("open: %s: allocate the dirty-region bitmap: %s; writes fail until "
			 "it can be (free space on the data file system)",
			 dirty_path, strerror(-ret));
		atomic_store(&bm->dirty_holes, true);
	}
	path = crc_path;
	bm->crc_map_len = crc_reserve(crc_len);
	p = mmap(NULL, bm->crc_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
		 bm->crc_fd, 0);
	if (p == MAP_FAILED)
		goto err_errno;
	atomic_store(&bm->crc_map, p);
	path = dirty_path;
	bm->dirty_map_len = blockmeta_dirty_file_size(STORE_MAX_VOL_SIZE);
	p = mmap(NULL, bm->dirty_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
		 bm->dirty_fd, 0);
	if (p == MAP_FAILED)
		goto err_errno;
	bm->dirty_map = p;
	bm->durable_len = bm->dirty_map_len;
	p = mmap(NULL, bm->durable_len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		goto err_errno;
	bm->durable = p;
	bm->crc_alloc_len =
	    round_up(blockmeta_crc_file_size(STORE_MAX_VOL_SIZE) / STORE_PAGE / 8, STORE_PAGE);
	p = mmap(NULL, bm->crc_alloc_len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		goto err_errno;
	bm->crc_alloc = p;
	return 0;
err_errno:
	ret = -errno;
	tsr_error("open: %s: %s", path, strerror(errno));
err:
	blockmeta_close(bm);
	return ret;
}

void blockmeta_close(struct blockmeta *bm)
{
	struct retired_map *r;
	uint64_t *crc = atomic_load(&bm->crc_map);

	if (crc)
		munmap(crc, bm->crc_map_len);
	while ((r = bm->retired)) {
		bm->retired = r->next;
		munmap(r->addr, r->len);
		free(r);
	}
	if (bm->dirty_map)
		munmap(bm->dirty_map, bm->dirty_map_len);
	if (bm->durable)
		munmap((void *)bm->durable, bm->durable_len);
	if (bm->crc_alloc)
		munmap((void *)bm->crc_alloc, bm->crc_alloc_len);
	if (bm->crc_fd >= 0)
		close(bm->crc_fd);
	if (bm->dirty_fd >= 0)
		close(bm->dirty_fd);
	pthread_mutex_destroy(&bm->dirty_lock);
	memset(bm, 0, sizeof(*bm));
	bm->crc_fd = bm->dirty_fd = -1;
}

int blockmeta_grow(struct blockmeta *bm, uint64_t old_size, uint64_t new_size)
{
	uint64_t crc_len = blockmeta_crc_file_size(new_size);
	struct retired_map *r;
	void *p;

	int ret;

	if (ftruncate(bm->crc_fd, (off_t)crc_len) < 0 || fsync(bm->crc_fd) < 0 ||
	    ftruncate(bm->dirty_fd, (off_t)blockmeta_dirty_file_size(new_size)) < 0)
		goto err_errno;
	ret = blockmeta_alloc_file(bm->dirty_fd, blockmeta_dirty_file_size(new_size));
	if (ret)
		goto err;
	if (fsync(bm->dirty_fd) < 0)
		goto err_errno;
	if (crc_len <= bm->crc_map_len)
		return 0;
	r = malloc(sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	p = mmap(NULL, crc_reserve(crc_len), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
		 bm->crc_fd, 0);
	if (p == MAP_FAILED) {
		ret = -errno;
		tsr_error("resize: map crc table: %s", strerror(-ret));
		free(r);
		return ret;
	}
	r->addr = atomic_load(&bm->crc_map);
	r->len = bm->crc_map_len;
	r->next = bm->retired;
	bm->retired = r;
	bm->crc_map_len = crc_reserve(crc_len);
	atomic_store_explicit(&bm->crc_map, p, memory_order_release);
	return 0;
err_errno:
	ret = -errno;
err:
	tsr_error("resize: extend crc/dirty files: %s", strerror(-ret));
	return ret;
}

static bool crc_page_allocated(struct blockmeta *bm, uint64_t page)
{
	return atomic_load_explicit(&bm->crc_alloc[page / 64], memory_order_relaxed) &
	       (1ull << (page % 64));
}

int blockmeta_reserve_entries(struct blockmeta *bm, uint64_t offset, uint64_t len)
{
	uint64_t first = (offset >> STORE_BLOCK_SHIFT) * STORE_CRC_ENTRY / STORE_PAGE;
	uint64_t last = (((offset + len) >> STORE_BLOCK_SHIFT) * STORE_CRC_ENTRY - 1) / STORE_PAGE;
	uint64_t p, q;

	for (p = first; p <= last; p = q + 1) {
		q = p;
		if (crc_page_allocated(bm, p))
			continue;
		while (q < last && !crc_page_allocated(bm, q + 1))
			q++;
		/* KEEP_SIZE: the last page may reach past the end of the table */
		if (fallocate(bm->crc_fd, FALLOC_FL_KEEP_SIZE, (off_t)(p * STORE_PAGE),
			      (off_t)((q - p + 1) * STORE_PAGE)) < 0 &&
		    errno != EOPNOTSUPP)
			return -errno;
		for (; p <= q; p++) /* two threads may both allocate: harmless */
			atomic_fetch_or_explicit(&bm->crc_alloc[p / 64], 1ull << (p % 64),
						 memory_order_relaxed);
	}
	return 0;
}

static bool durable_test(struct blockmeta *bm, uint64_t r)
{
	/* seq_cst: pairs with blockmeta_clear_if_quiet (see there) */
	return atomic_load(&bm->durable[r / 64]) & (1ull << (r % 64));
}

/*
 * Regions are marked a group of 64 at a time (one 8-byte word of the bitmap,
 * 64 MiB of volume): a first write anywhere in a group sets all 64 bits with
 * one sync.  The sync (a journal commit and a disk cache flush) is what
 * costs; a crash makes recovery read at most the whole group.  Bits past the
 * end of the volume may get set; recovery ignores them, and the word is
 * always inside the file (its size is a multiple of 4096).
 */
static bool words_durable(struct blockmeta *bm, uint64_t lo_w, uint64_t hi_w)
{
	for (uint64_t w = lo_w; w <= hi_w; w++)
		if (atomic_load(&bm->durable[w]) != UINT64_MAX)
			return false;
	return true;
}

/* Set the bits of words [lo_w, hi_w] in the mapping (dirty_lock held). */
static void words_set(struct blockmeta *bm, uint64_t lo_w, uint64_t hi_w)
{
	for (uint64_t w = lo_w; w <= hi_w; w++)
		if (atomic_load(&bm->durable[w]) != UINT64_MAX)
			memset(bm->dirty_map + w * 8, 0xff, 8);
}

/* The bits of words [lo_w, hi_w] reached the disk (dirty_lock held). */
static void words_publish(struct blockmeta *bm, uint64_t lo_w, uint64_t hi_w)
{
	for (uint64_t w = lo_w; w <= hi_w; w++)
		atomic_store(&bm->durable[w], UINT64_MAX);
	atomic_store(&bm->any_dirty, true);
}

/* Set and msync words [lo_w, hi_w] (dirty_lock held). */
static int words_msync(struct blockmeta *bm, uint64_t lo_w, uint64_t hi_w)
{
	uintptr_t start, end;

	words_set(bm, lo_w, hi_w);
	start = (uintptr_t)(bm->dirty_map + lo_w * 8) & ~(uintptr_t)(STORE_PAGE - 1);
	end = (uintptr_t)(bm->dirty_map + hi_w * 8 + 8);
	if (msync((void *)start, end - start, MS_SYNC) < 0) {
		int ret = -errno;

		tsr_error("write: sync dirty-region bitmap: %s", strerror(-ret));
		return ret;
	}
	words_publish(bm, lo_w, hi_w);
	atomic_fetch_add_explicit(&bm->mark_msyncs, 1, memory_order_relaxed);
	return 0;
}

static bool regions_durable(struct blockmeta *bm, uint64_t first, uint64_t last)
{
	for (uint64_t r = first; r <= last; r++)
		if (!durable_test(bm, r))
			return false;
	return true;
}

/* Before a bit is set through the mapping: if the bitmap file may have holes
 * (dirty_holes), allocate it whole first.  0 or -errno (-ENOSPC). */
static int fill_dirty_holes(struct blockmeta *bm)
{
	struct stat st;
	int ret;

	if (!atomic_load(&bm->dirty_holes))
		return 0;
	if (fstat(bm->dirty_fd, &st) < 0)
		return -errno;
	ret = blockmeta_alloc_file(bm->dirty_fd, (uint64_t)st.st_size);
	if (ret == 0)
		atomic_store(&bm->dirty_holes, false);
	return ret;
}

int blockmeta_mark_dirty(struct blockmeta *bm, uint64_t first, uint64_t last)
{
	int ret = 0;

	/* common path: every region already durable-dirty, no lock */
	if (regions_durable(bm, first, last))
		return 0;
	ret = fill_dirty_holes(bm);
	if (ret)
		return ret;
	pthread_mutex_lock(&bm->dirty_lock);
	if (!words_durable(bm, first / 64, last / 64))
		ret = words_msync(bm, first / 64, last / 64);
	pthread_mutex_unlock(&bm->dirty_lock);
	return ret;
}

/*
 * An fsync of the .dirty file queued on one io after the bits of words
 * [lo_w, hi_w] were set in the mapping (fsync writes back the mapping's
 * dirty pages, as msync does).  Writes on the same io that need only those
 * words join it; a write on another thread queues its own (its completion
 * must run on its own thread), which finds the bits set already.  While one
 * is in flight its first waiter has begun and not ended (writes_started),
 * so blockmeta_clear_if_quiet cannot wipe the file underneath it.
 */
struct mark_sync {
	struct blockmeta *bm;
	struct tsr_io *io;   /* the ring it is queued on: only its thread joins */
	uint64_t lo_w, hi_w; /* words set in the mapping before it was queued */
	struct blockmeta_wait *waiters, **tail; /* called back in arrival order */
	struct mark_sync *next;                 /* bm->mark_syncs (dirty_lock) */
};

static void mark_sync_done(void *cb_arg, int res)
{
	struct mark_sync *s = cb_arg, **pp;
	struct blockmeta *bm = s->bm;
	struct blockmeta_wait *w, *next;

	pthread_mutex_lock(&bm->dirty_lock);
	for (pp = &bm->mark_syncs; *pp != s; pp = &(*pp)->next)
		;
	*pp = s->next;
	if (res >= 0)
		words_publish(bm, s->lo_w, s->hi_w);
	pthread_mutex_unlock(&bm->dirty_lock);
	if (res < 0)
		tsr_error("write: sync dirty-region bitmap: %s", strerror(-res));
	for (w = s->waiters; w != NULL; w = next) {
		next = w->next; /* the callback may free w */
		w->cb_fn(w->cb_arg, res < 0 ? res : 0);
	}
	free(s);
}

int blockmeta_mark_dirty_async(struct blockmeta *bm, struct tsr_io *io, uint64_t first,
			       uint64_t last, struct blockmeta_wait *w,
			       void (*cb_fn)(void *cb_arg, int res), void *cb_arg)
{
	uint64_t lo_w = first / 64, hi_w = last / 64;
	struct mark_sync *s;
	int ret = 0;

	if (regions_durable(bm, first, last))
		return 0;
	ret = fill_dirty_holes(bm);
	if (ret)
		return ret;
	w->cb_fn = cb_fn;
	w->cb_arg = cb_arg;
	w->next = NULL;
	pthread_mutex_lock(&bm->dirty_lock);
	if (words_durable(bm, lo_w, hi_w)) /* another thread's sync completed */
		goto out;
	for (s = bm->mark_syncs; s != NULL; s = s->next)
		if (s->io == io && s->lo_w <= lo_w && hi_w <= s->hi_w)
			break;
	if (s != NULL) {
		atomic_fetch_add_explicit(&bm->mark_joins, 1, memory_order_relaxed);
	} else {
		s = calloc(1, sizeof(*s));
		if (s == NULL) {
			ret = words_msync(bm, lo_w, hi_w);
			goto out;
		}
		s->bm = bm;
		s->io = io;
		s->lo_w = lo_w;
		s->hi_w = hi_w;
		s->tail = &s->waiters;
		words_set(bm, lo_w, hi_w);
		/* a full fsync (the file's size never changes here, so it costs
		 * what an fdatasync does); fault rules "fdatasync:" pass it by */
		ret = tsr_io_fsync(io, bm->dirty_fd, false, mark_sync_done, s);
		if (ret < 0) { /* e.g. -EAGAIN, io full: mark the blocking way */
			free(s);
			ret = words_msync(bm, lo_w, hi_w);
			goto out;
		}
		s->next = bm->mark_syncs;
		bm->mark_syncs = s;
		atomic_fetch_add_explicit(&bm->mark_fsyncs, 1, memory_order_relaxed);
	}
	*s->tail = w;
	s->tail = &w->next;
	ret = 1;
out:
	pthread_mutex_unlock(&bm->dirty_lock);
	return ret;
}

/* Empty the on-disk bitmap (dirty_lock held): zero it in place (the blocks
 * stay allocated: a hole punched here would make the next bit set through
 * the mapping allocate, and raise SIGBUS on a full file system); where that
 * is refused write zeros through the mapping, or, while the file may have
 * holes (dirty_holes), punch it; then make it durable.  0 or -errno, logged. */
static int wipe_dirty_file(struct blockmeta *bm, uint64_t len)
{
	int ret;

	if (fallocate(bm->dirty_fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, (off_t)len) ==
	    0) {
		/* zeroed in place */
	} else if (!atomic_load(&bm->dirty_holes)) { /* every page has its blocks */
		memset(bm->dirty_map, 0, len);
		if (msync(bm->dirty_map, len, MS_SYNC) < 0)
			goto err;
	} else if (fallocate(bm->dirty_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
			     (off_t)len) < 0) {
		/* holes (ZERO_RANGE would have allocated them: a full file
		 * system): punched, they stay holes and the next mark
		 * allocates; a store into them here would be a SIGBUS */
		goto err;
	}
	if (fdatasync(bm->dirty_fd) < 0)
		goto err;
	atomic_store(&bm->any_dirty, false);
	return 0;
err:
	ret = -errno;
	tsr_error("clear dirty-region bitmap: %s", strerror(-ret));
	return ret;
}

int blockmeta_clear_dirty(struct blockmeta *bm, uint64_t size)
{
	uint64_t len = blockmeta_dirty_file_size(size);
	int ret;

	pthread_mutex_lock(&bm->dirty_lock);
	memset((void *)bm->durable, 0, len);
	ret = wipe_dirty_file(bm, len);
	pthread_mutex_unlock(&bm->dirty_lock);
	return ret;
}

/*
 * Writers count themselves (writes_started, a seq_cst RMW) before testing
 * their regions' durable bits (seq_cst loads); here the durable bits are
 * cleared (seq_cst stores) before writes_started is read again.  So either a
 * writer's count is seen here, and the on-disk bitmap is left alone, or the
 * writer sees its bits clear and takes the slow path, which waits for
 * dirty_lock and sets its bit again on disk after the punch below.  Clearing
 * the in-memory bits alone is always safe: it only costs an extra msync.
 */
int blockmeta_clear_if_quiet(struct blockmeta *bm, uint64_t size, _Atomic uint64_t *writes_started,
			     uint64_t seen)
{
	uint64_t len = blockmeta_dirty_file_size(size), w;
	int ret = 0;

	pthread_mutex_lock(&bm->dirty_lock);
	if (!atomic_load(&bm->any_dirty))
		goto out;
	for (w = 0; w < len / 8; w++)
		if (atomic_load_explicit(&bm->durable[w], memory_order_relaxed))
			atomic_store(&bm->durable[w], 0);
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load(writes_started) != seen) {
		ret = -EAGAIN;
		goto out;
	}
	ret = wipe_dirty_file(bm, len);
out:
	pthread_mutex_unlock(&bm->dirty_lock);
	return ret;
}

static int64_t coarse_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void blockmeta_note_sync(struct blockmeta *bm)
{
	atomic_store_explicit(&bm->crc_sync_ns, coarse_ns(), memory_order_relaxed);
	atomic_fetch_add_explicit(&bm->crc_sync_gen, 1, memory_order_relaxed);
}

/* Whether a crc_fd sync was issued within the last 2 s. */
static bool recently_synced(const struct blockmeta *bm)
{
	int64_t t = atomic_load_explicit(&bm->crc_sync_ns, memory_order_relaxed);

	return t != 0 && coarse_ns() - t < 2000000000;
}

/*
 * Per page and sync: the first CRC_PAGE_PWRITES runs of entries go by pwrite,
 * later ones by stores.  A store after a sync takes one page_mkwrite fault
 * (about a pwrite's cost here, more while the sync's writeback is in flight)
 * and then none until the next sync, so a page written many times between
 * two syncs (a DR target applying 1000s of writes per 100 ms flush) pays one
 * fault instead of a pwrite each, while a page written once or twice between
 * syncs (host flushes every few writes) keeps the pwrite.  Either way the
 * same bytes land in the same page-cache page: the choice is cost only.
 */
#define CRC_PAGE_PWRITES 2
#define CRC_GEN_MASK     0x3fffffull

bool blockmeta_entries_by_write(struct blockmeta *bm, uint64_t first)
{
	uint64_t page = first * STORE_CRC_ENTRY / STORE_PAGE, gen, slot, n;
	_Atomic uint64_t *s;

	if (!recently_synced(bm))
		return false;
	gen = atomic_load_explicit(&bm->crc_sync_gen, memory_order_relaxed) & CRC_GEN_MASK;
	s = &bm->crc_page_pwrites[page % BLOCKMETA_PAGE_SLOTS];
	slot = atomic_load_explicit(s, memory_order_relaxed);
	n = slot >> 24 == page && ((slot >> 2) & CRC_GEN_MASK) == gen ? slot & 3 : 0;
	if (n >= CRC_PAGE_PWRITES)
		return false;
	atomic_store_explicit(s, page << 24 | gen << 2 | (n + 1), memory_order_relaxed);
	return true;
}

int blockmeta_sync(struct blockmeta *bm)
{
	blockmeta_note_sync(bm);
	if (fdatasync(bm->crc_fd) < 0) {
		int ret = -errno;

		tsr_error("sync crc table: %s", strerror(-ret));
		return ret;
	}
	return 0;
}
