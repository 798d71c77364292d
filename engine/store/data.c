/*
 * The store's data path: asynchronous read, write, flush, trim and
 * write_zeroes of a volume through the caller's struct tsr_io, plus
 * block_status and the counters.  No lock is taken here (internal.h).
 *
 * Write of block b with data D (the order is what makes a crash safe):
 *   0. the crc table's page holding entry[b] is allocated on disk if it was
 *      not since open (blockmeta_reserve_entries): step 2 stores through a
 *      mapping, and a store into a hole of a full file system is a SIGBUS;
 *      here it is -ENOSPC to the caller, before anything changed;
 *   1. the 1 MiB region of b is marked in the dirty bitmap, durably, if it is
 *      not already (blockmeta_mark_dirty_async: lock-free bit test; on a
 *      region's first write since open the bit is set and an fsync of the
 *      bitmap queued on the caller's io, and steps 2 and 3 run from its
 *      completion (write_marked), so the loop never waits for it);
 *   2. entry[b] = {cur: crc(D), prev: old cur} in the mmap'd crc table;
 *   3. D is written with O_DIRECT (TSR_IO_FUA for FUA, plus an fdatasync of the
 *      crc file in parallel; completion when both are done).
 * A failed write turns the entries it set into {old cur, new} (entries_restore),
 * so reads still return the old data, and keeps the volume's dirty bits for
 * the next open.
 * Host reads of file-mode heads may go through the page cache (read_cached);
 * scrub and verification use tsr_svol_read_direct, which never does.
 * A read accepts each 4 KiB block whose crc equals cur or prev; otherwise the
 * whole read fails with -EIO, the block is logged and counted (crc_errors).
 * Trim and write_zeroes set {0 (= a zero block), old cur} before punching or
 * writing zeros.  Two writes in flight at once to the same block are not
 * supported (the coordinator orders overlapping writes).
 *
 * Each request uses one struct svol_op, taken from a per-thread free list
 * (ops complete on the thread that owns the io, which is the submitting one).
 * Synchronous steps (trim's fallocate) complete through a 4 KiB read of
 * /dev/zero so the callback still fires from tsr_io_poll, as promised.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/internal.h"

#define ZERO_BUF_SIZE (1u << 20)
#define ZERO_IOVS     8u /* a zero chunk is at most 8 MiB */
#define OP_FREE_MAX   256u
#define CRC_LOG_MAX   8u /* logged CRC errors per request */

enum op_kind { OP_READ, OP_WRITE, OP_FLUSH, OP_TRIM, OP_ZEROES };

struct svol_op {
	struct tsr_svol *svol;
	struct tsr_io *io; /* for ops that queue more work from a callback */
	enum op_kind kind;
	unsigned flags;  /* TSR_WRITE_* */
	uint64_t offset; /* request range */
	uint64_t len;
	uint8_t *buf; /* read/write buffer */
	/* write: tsr_crc32c(0, block i) of buf's blocks from the caller
	 * (tsr_svol_write_sums), or NULL: computed here */
	const uint32_t *sums;
	tsr_cb cb_fn;
	void *cb_arg;
	int pending;        /* queued sub-operations not yet called back */
	int status;         /* first error */
	bool syncing;       /* zeroes: final FUA fsyncs in flight */
	bool data_failed;   /* write: a data write failed (undo the entries) */
	bool quiet;         /* flush: no write was in flight when it was queued */
	bool may_block;     /* write: caller told 0 long ago, a full queue blocks (write_sub) */
	bool via_cache;     /* read: a piece went through the page cache (cseg_fd) */
	uint64_t seen;      /* flush: svol->writes_started when it was queued */
	uint64_t pos;       /* zeroes: next byte to write */
	uint64_t chunk_off; /* zeroes: chunk in flight */
	uint64_t chunk_len;
	struct iovec iov[ZERO_IOVS];
	/* read, write: one iovec per piece when they are more than ZERO_IOVS (a
	 * redirect map that is not contiguous over the range), malloc'd; else NULL */
	struct iovec *iov_big;
	/* read of a volume with a redirect map: counted in read epoch token
	 * (rowmap_read_begin) until op_put */
	bool map_read;
	unsigned map_token;
	/* write: its place among the waiters for its regions' mark */
	struct blockmeta_wait mark_wait;
	struct svol_op *next_free;
};

static __thread struct svol_op *t_free_ops;
static __thread unsigned t_nfree;

static uint8_t *g_zero_buf;
static pthread_once_t g_zero_once = PTHREAD_ONCE_INIT;
/* target of the /dev/zero trampoline reads; its contents are never looked at */
static uint8_t g_scratch[TSR_BLOCK_SIZE] __attribute__((aligned(TSR_BLOCK_SIZE)));

static void zero_buf_init(void)
{
	g_zero_buf = tsr_alloc_aligned(ZERO_BUF_SIZE);
	if (g_zero_buf)
		memset(g_zero_buf, 0, ZERO_BUF_SIZE);
}

static const uint8_t *zero_buf(void)
{
	pthread_once(&g_zero_once, zero_buf_init);
	return g_zero_buf;
}

static struct svol_op *op_get(struct tsr_svol *svol, struct tsr_io *io, enum op_kind kind,
			      tsr_cb cb_fn, void *cb_arg)
{
	struct svol_op *op = t_free_ops;

	if (op) {
		t_free_ops = op->next_free;
		t_nfree--;
	} else {
		op = malloc(sizeof(*op));
		if (op == NULL)
			return NULL;
	}
	memset(op, 0, sizeof(*op));
	op->svol = svol;
	op->io = io;
	op->kind = kind;
	op->cb_fn = cb_fn;
	op->cb_arg = cb_arg;
	return op;
}

static pthread_key_t g_free_key;
static pthread_once_t g_free_once = PTHREAD_ONCE_INIT;

/* At thread exit: free the thread's cached ops. */
static void free_ops_at_exit(void *unused)
{
	struct svol_op *op;

	while ((op = t_free_ops)) {
		t_free_ops = op->next_free;
		free(op);
	}
	t_nfree = 0;
}

static void free_key_init(void)
{
	pthread_key_create(&g_free_key, free_ops_at_exit);
}

static void op_put(struct svol_op *op)
{
	if (op->map_read)
		rowmap_read_end(op->svol->rowmap, op->map_token);
	free(op->iov_big);
	if (!TSR_KEEP_FREED || t_nfree >= OP_FREE_MAX) {
		free(op);
		return;
	}
	if (t_free_ops == NULL) {
		/* a non-NULL value makes the key's destructor run at thread exit */
		pthread_once(&g_free_once, free_key_init);
		pthread_setspecific(g_free_key, &t_free_ops);
	}
	op->next_free = t_free_ops;
	t_free_ops = op;
	t_nfree++;
}

/* Writes, trims and zeroes count themselves while they may change entries or
 * data, so a flush can tell it ran while the volume was quiet. */
static void write_begin(struct tsr_svol *svol)
{
	atomic_fetch_add(&svol->writes_started, 1); /* seq_cst: see blockmeta_clear_if_quiet */
}

static void write_end(struct tsr_svol *svol)
{
	atomic_fetch_add(&svol->writes_done, 1);
}

void svol_write_begin(struct tsr_svol *svol)
{
	write_begin(svol);
}

void svol_write_end(struct tsr_svol *svol)
{
	write_end(svol);
}

/* A clone's head owns a block from its first write, trim or zeroing on (its
 * own bit, layer.c); set before the head I/O is issued. */
static void own_mark(struct tsr_svol *svol, uint64_t offset, uint64_t len)
{
	uint64_t *m, b, end;

	if (!svol->is_clone)
		return;
	m = own_map(&svol->own);
	end = (offset + len) >> STORE_BLOCK_SHIFT;
	for (b = offset >> STORE_BLOCK_SHIFT; b < end;) {
		if (b % 64 == 0 && b + 64 <= end) {
			if (__atomic_load_n(&m[b / 64], __ATOMIC_ACQUIRE) != UINT64_MAX)
				__atomic_fetch_or(&m[b / 64], UINT64_MAX, __ATOMIC_SEQ_CST);
			b += 64;
			continue;
		}
		if (!bit_test(m, b))
			bit_set(m, b);
		b++;
	}
}

/* A clone's bits of [offset, offset+len) are stored to through a mapping:
 * allocate their page first when one of them is still clear (blockmeta.c,
 * "Full file systems").  0 or -errno (-ENOSPC). */
static int own_reserve(struct tsr_svol *svol, uint64_t offset, uint64_t len)
{
	uint64_t *m, w, first, last;

	if (!svol->is_clone)
		return 0;
	m = own_map(&svol->own);
	first = (offset >> STORE_BLOCK_SHIFT) / 64;
	last = ((offset + len - 1) >> STORE_BLOCK_SHIFT) / 64;
	for (w = first; w <= last; w++)
		if (__atomic_load_n(&m[w], __ATOMIC_ACQUIRE) != UINT64_MAX)
			return blockmeta_alloc_range(svol->own.fd, first * 8,
						     (last - first + 1) * 8);
	return 0;
}

static void op_finish(struct svol_op *op)
{
	tsr_cb cb_fn = op->cb_fn;
	void *cb_arg = op->cb_arg;
	int status = op->status;

	if (op->kind == OP_WRITE || op->kind == OP_ZEROES)
		write_end(op->svol);
	op_put(op);
	cb_fn(cb_arg, status);
}

/* Drop the guard reference taken while queueing.  Nothing completes before the
 * next tsr_io_poll on this thread, so the guard is never the last one when at
 * least one sub-operation was queued. */
static int op_launched(struct svol_op *op, int err)
{
	if (op->pending == 1) { /* nothing queued */
		if (op->kind == OP_WRITE)
			write_end(op->svol);
		op_put(op);
		return err;
	}
	if (err && op->status == 0)
		op->status = err;
	op->pending--;
	return 0;
}

static void stat_add(_Atomic uint64_t *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

static void piece_set(struct svol_piece *p, int fd, int cfd, uint64_t fd_offset,
		      uint64_t vol_offset, uint64_t len)
{
	p->fd = fd;
	p->cfd = cfd;
	p->fd_offset = fd_offset;
	p->vol_offset = vol_offset;
	p->len = len;
}

/* svol_map through svol's redirect map.  A chunk past ROWMAP_MAX_CHUNKS has
 * no map word and is at home: its ph is a home slot even when >= 2^31. */
static int map_resolve(struct tsr_svol *svol, struct rowmap *m, uint64_t offset, uint64_t len,
		       struct svol_piece *p, int max)
{
	const uint32_t *slot = atomic_load_explicit(&m->slot, memory_order_acquire);
	unsigned shift = m->shift;
	uint64_t g = 1ull << shift, next = UINT64_MAX;
	bool next_row = false;
	int n = 0;

	while (len) {
		uint64_t c = offset >> shift, in = offset & (g - 1);
		uint64_t l = g - in < len ? g - in : len, ph, fo;
		uint32_t v = c < ROWMAP_MAX_CHUNKS
				 ? le32toh(__atomic_load_n(&slot[c], __ATOMIC_ACQUIRE))
				 : 0;
		bool row = v && v - 1 >= ROWMAP_ROW_BASE;
		int fd, cfd;

		ph = v ? (uint64_t)v - 1 : c;
		/* the slot after the last piece's, in the same file: extend it
		 * (an identity map costs one load per granule) */
		if (ph == next && row == next_row &&
		    (row || ((ph << shift) & (STORE_SEG_SIZE - 1)))) {
			p[n - 1].len += l;
			goto next;
		}
		if (n == max)
			break;
		if (row) {
			fd = m->row_fd;
			cfd = m->row_cfd;
			fo = ((ph - ROWMAP_ROW_BASE) << shift) + in;
		} else {
			uint64_t b = (ph << shift) + in;

			fd = atomic_load_explicit(&svol->seg_fd[b >> STORE_SEG_SHIFT],
						  memory_order_acquire);
			cfd = atomic_load_explicit(&svol->cseg_fd[b >> STORE_SEG_SHIFT],
						   memory_order_acquire);
			fo = b & (STORE_SEG_SIZE - 1);
		}
		piece_set(&p[n++], fd, cfd, fo, offset, l);
	next:
		next = ph + 1;
		next_row = row;
		offset += l;
		len -= l;
	}
	return n;
}

int svol_map(struct tsr_svol *svol, uint64_t offset, uint64_t len, struct svol_piece *p, int max)
{
	int n = 0;

	if (svol->dev_offset >= 0) {
		piece_set(&p[0], svol->store->dev_fd, -1, (uint64_t)svol->dev_offset + offset,
			  offset, len);
		return 1;
	}
	if (svol->rowmap)
		return map_resolve(svol, svol->rowmap, offset, len, p, max);
	while (len && n < max) {
		uint64_t seg = offset >> STORE_SEG_SHIFT;
		uint64_t in = offset & (STORE_SEG_SIZE - 1);
		uint64_t l = STORE_SEG_SIZE - in < len ? STORE_SEG_SIZE - in : len;

		piece_set(&p[n++], atomic_load_explicit(&svol->seg_fd[seg], memory_order_acquire),
			  atomic_load_explicit(&svol->cseg_fd[seg], memory_order_acquire), in,
			  offset, l);
		offset += l;
		len -= l;
	}
	return n;
}

int svol_map_all(struct tsr_svol *svol, uint64_t offset, uint64_t len, struct svol_piece *small,
		 int nsmall, struct svol_piece **big)
{
	int n = svol_map(svol, offset, len, small, nsmall);
	uint64_t max;

	*big = NULL;
	if (n == 0 || small[n - 1].vol_offset + small[n - 1].len == offset + len)
		return n;
	/* a map that is not contiguous here: one piece per granule at most */
	max = svol->rowmap ? (len >> svol->rowmap->shift) + 2 : STORE_MAX_SEGS;
	*big = malloc(max * sizeof(**big));
	if (*big == NULL)
		return -ENOMEM;
	return svol_map(svol, offset, len, *big, (int)max);
}

/* n iovecs for op's pieces: its own, or malloc'd (op->iov_big) past
 * ZERO_IOVS.  NULL: no memory. */
static struct iovec *op_iovs(struct svol_op *op, int n)
{
	if (n <= (int)ZERO_IOVS)
		return op->iov;
	op->iov_big = malloc((size_t)n * sizeof(*op->iov_big));
	return op->iov_big;
}

/* Range check shared by every data function.  Errors: -EINVAL, -ENOSPC. */
static int check_range(struct tsr_svol *svol, uint64_t offset, uint64_t len)
{
	uint64_t size = tsr_svol_size(svol);

	if (len == 0 || offset % TSR_BLOCK_SIZE || len % TSR_BLOCK_SIZE)
		return -EINVAL;
	if (offset > size || len > size - offset)
		return -ENOSPC;
	return 0;
}

static int check_io(struct tsr_svol *svol, uint64_t offset, uint32_t len, const void *buf)
{
	if (len > TSR_MAX_IO || buf == NULL || (uintptr_t)buf % TSR_BLOCK_SIZE)
		return -EINVAL;
	return check_range(svol, offset, len);
}

static int mark_range(struct tsr_svol *svol, uint64_t offset, uint64_t len)
{
	return blockmeta_mark_dirty(&svol->meta, offset >> STORE_REGION_SHIFT,
				    (offset + len - 1) >> STORE_REGION_SHIFT);
}

/* ---- read ---- */

/* Does a clone own every block of the range (read its head directly)? */
static bool own_all(struct tsr_svol *svol, uint64_t offset, uint64_t len)
{
	uint64_t *m = own_map(&svol->own);
	uint64_t b = offset >> STORE_BLOCK_SHIFT, end = (offset + len) >> STORE_BLOCK_SHIFT;

	while (b < end) {
		if (b % 64 == 0 && b + 64 <= end) {
			if (__atomic_load_n(&m[b / 64], __ATOMIC_ACQUIRE) != UINT64_MAX)
				return false;
			b += 64;
			continue;
		}
		if (!bit_test(m, b))
			return false;
		b++;
	}
	return true;
}

static void read_verify(struct svol_op *op)
{
	struct tsr_svol *svol = op->svol;
	uint64_t *map = blockmeta_entries(&svol->meta);
	uint64_t first = op->offset >> STORE_BLOCK_SHIFT;
	uint64_t i, nblk = op->len >> STORE_BLOCK_SHIFT, bad = 0;
	uint32_t z = blockmeta_zero_crc();

	for (i = 0; i < nblk; i++) {
		uint32_t c = blockmeta_block_crc(op->buf + (i << STORE_BLOCK_SHIFT));
		uint64_t e = entry_load(&map[first + i]);

		if (c == entry_cur(e) || c == entry_prev(e))
			continue;
		if (bad++ < CRC_LOG_MAX)
			tsr_error("read: volume %s block %llu: CRC mismatch (stored %08x/%08x, "
				  "computed %08x)",
				  svol->name, (unsigned long long)(first + i), entry_cur(e) ^ z,
				  entry_prev(e) ^ z, c ^ z);
	}
	if (bad > CRC_LOG_MAX)
		tsr_error("read: volume %s: %llu more blocks with a CRC mismatch in this request",
			  svol->name, (unsigned long long)(bad - CRC_LOG_MAX));
	if (bad) {
		stat_add(&svol->stats.crc_errors, bad);
		op->status = -EIO;
	}
}

static void read_done(void *cb_arg, int res)
{
	struct svol_op *op = cb_arg;

	if (res < 0 && op->status == 0)
		op->status = res;
	if (--op->pending)
		return;
	if (op->status == 0)
		read_verify(op);
	if (op->status == 0) {
		stat_add(&op->svol->stats.reads, 1);
		stat_add(&op->svol->stats.bytes_read, op->len);
		if (op->via_cache)
			stat_add(&op->svol->stats.cached_reads, 1);
	}
	op_finish(op);
}

/*
 * Read through the page cache?  Host reads of a file-mode head, with the
 * store's read cache on, on an io that reads buffered fds without blocking
 * its loop (not libaio).  Coherence: every write, trim and zeroes of the
 * head reaches the same inode through seg_fd (O_DIRECT pwrite, fallocate
 * PUNCH_HOLE / ZERO_RANGE), and the kernel drops the cached pages of the
 * range on each (before an O_DIRECT write and again after it completes,
 * after its unwritten extents are converted; fallocate truncates the range's
 * pages), so a read issued after the completion finds the new bytes; a read
 * racing a write to the same block may see either, as with O_DIRECT, and
 * read_verify accepts either (cur or prev).
 */
static bool read_cached(struct tsr_svol *svol, struct tsr_io *io)
{
	return svol->store->read_cache && svol->dev_offset < 0 && tsr_io_buffered_reads_async(io);
}

static int read_go(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint32_t len,
		   void *buf, bool direct, tsr_cb cb_fn, void *cb_arg)
{
	struct svol_piece small[2], *big, *p;
	struct iovec *iov;
	struct svol_op *op;
	int i, n, ret = 0;
	bool cached;

	ret = check_io(svol, offset, len, buf);
	if (ret)
		return ret;
	if (svol->ro_layer)
		return image_read(svol->base, svol->ro_layer, svol, io, offset, len, buf, cb_fn,
				  cb_arg);
	if (svol->is_clone && !own_all(svol, offset, len))
		return image_read(svol, NULL, svol, io, offset, len, buf, cb_fn, cb_arg);
	op = op_get(svol, io, OP_READ, cb_fn, cb_arg);
	if (op == NULL)
		return -ENOMEM;
	op->offset = offset;
	op->len = len;
	op->buf = buf;
	op->pending = 1;
	cached = !direct && read_cached(svol, io);
	if (svol->rowmap) { /* before the map is read: its slots stay until the read ended */
		op->map_token = rowmap_read_begin(svol->rowmap);
		op->map_read = true;
	}
	n = svol_map_all(svol, offset, len, small, 2, &big);
	p = big ? big : small;
	iov = n < 0 ? NULL : op_iovs(op, n);
	if (iov == NULL) {
		free(big);
		op_put(op);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		int fd = p[i].fd;

		if (cached && p[i].cfd >= 0) {
			fd = p[i].cfd;
			op->via_cache = true;
		}
		iov[i].iov_base = op->buf + (p[i].vol_offset - offset);
		iov[i].iov_len = p[i].len;
		ret = tsr_io_readv(io, fd, &iov[i], 1, p[i].fd_offset, read_done, op);
		if (ret)
			break;
		op->pending++;
	}
	free(big);
	return op_launched(op, ret);
}

int tsr_svol_read(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint32_t len,
		  void *buf, tsr_cb cb_fn, void *cb_arg)
{
	return read_go(svol, io, offset, len, buf, false, cb_fn, cb_arg);
}

/* Snapshot images and a clone's blocks it does not own are read by
 * image_read, always O_DIRECT: only a head's own blocks are ever cached. */
int tsr_svol_read_direct(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint32_t len,
			 void *buf, tsr_cb cb_fn, void *cb_arg)
{
	return read_go(svol, io, offset, len, buf, true, cb_fn, cb_arg);
}

/* ---- write ---- */

/* After a failed write: drop the range's clean cached pages (file mode with
 * the read cache).  The kernel drops them before an O_DIRECT write and again
 * after it, but not after one that failed, which may have landed in part; a
 * read racing it may have cached either content, and the next open's
 * recovery may keep only the disk's (its entries then say so).  Rare path:
 * one fadvise per segment piece, pages only dropped, nothing written. */
static void cache_drop(struct tsr_svol *svol, uint64_t offset, uint64_t len)
{
	struct svol_piece p[2];
	int i, n;

	if (svol->dev_offset >= 0)
		return;
	while (len) {
		n = svol_map(svol, offset, len, p, 2);
		for (i = 0; i < n; i++) {
			if (p[i].cfd >= 0)
				posix_fadvise(p[i].cfd, (off_t)p[i].fd_offset, (off_t)p[i].len,
					      POSIX_FADV_DONTNEED);
			offset += p[i].len;
			len -= p[i].len;
		}
	}
}

/* After a failed write (or zero chunk): {new, old} -> {old, new} where the
 * entry still holds what we stored (buf NULL means zeros).  Reads accept
 * both, since a failed write may have landed in part, and the "data matches
 * cur" rule holds again in the usual case (nothing reached the disk).  The
 * volume keeps its dirty bits at close, so the next open normalizes these
 * entries against the data actually on disk. */
static void entries_restore(struct tsr_svol *svol, uint64_t offset, uint64_t len,
			    const uint8_t *buf, bool failed)
{
	uint64_t *map = blockmeta_entries(&svol->meta);
	uint64_t first = offset >> STORE_BLOCK_SHIFT, i, nblk = len >> STORE_BLOCK_SHIFT;

	for (i = 0; i < nblk; i++) {
		uint32_t c = buf ? blockmeta_block_crc(buf + (i << STORE_BLOCK_SHIFT)) : 0;
		uint64_t e = entry_load(&map[first + i]);

		if (entry_cur(e) == c)
			__atomic_compare_exchange_n(&map[first + i], &e,
						    entry_make(entry_prev(e), c), false,
						    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
	}
	if (failed) { /* a write that was never queued left the disk alone */
		atomic_store(&svol->write_failed, true);
		cache_drop(svol, offset, len);
	}
}

static void write_done(void *cb_arg, int res);

/* A failed data write undoes its entries; a failed FUA sync of the crc table
 * does not (the data may be on disk: both old and new must stay readable). */
static void write_data_done(void *cb_arg, int res)
{
	struct svol_op *op = cb_arg;

	if (res < 0)
		op->data_failed = true;
	write_done(cb_arg, res);
}

static void write_done(void *cb_arg, int res)
{
	struct svol_op *op = cb_arg;

	if (res < 0 && op->status == 0) {
		op->status = res;
		store_log_step(res, "write: volume %s offset %llu length %llu", op->svol->name,
			       (unsigned long long)op->offset, (unsigned long long)op->len);
	}
	if (--op->pending)
		return;
	if (op->data_failed) {
		entries_restore(op->svol, op->offset, op->len, op->buf, true);
	} else if (op->status == 0) {
		stat_add(&op->svol->stats.writes, 1);
		stat_add(&op->svol->stats.bytes_written, op->len);
	}
	op_finish(op);
}

int tsr_svol_write(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint32_t len,
		   const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	return tsr_svol_write_sums(svol, io, offset, len, buf, NULL, flags, cb_fn, cb_arg);
}

int tsr_svol_write_sums(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint32_t len,
			const void *buf, const uint32_t *sums, unsigned flags, tsr_cb cb_fn,
			void *cb_arg)
{
	int ret = check_io(svol, offset, len, buf);

	if (ret)
		return ret;
	if (svol->ro_layer)
		return -EROFS;
	if (cow_needed(svol, offset, len)) /* rare: its sums are computed again */
		return cow_start(svol, io, COW_WRITE, offset, len, buf, flags, cb_fn, cb_arg);
	return data_write_go(svol, io, offset, len, buf, sums, flags, cb_fn, cb_arg);
}

/*
 * Step 2 of a write: entry[b] = {crc(new), old cur} for the n blocks from
 * first.  Normally one store per entry through the shared mapping; while
 * fdatasyncs of the table are recent (host flushes, FUA writes, an ec
 * chunk volume's releases, a DR target's flushes) its pages are
 * write-protected after each one and the first store into one takes a
 * page_mkwrite fault (up to ten times the cost of a pwrite into the same
 * page-cache page while the sync's writeback runs; bench: fio nbd 4k
 * randwrite QD32 with a flush every 32 writes).  So then the first runs
 * into a page after a sync go in with pwrite, one per run of at most 64
 * entries within one page, and a page written more often than that before
 * the next sync takes the one fault and stores (blockmeta_entries_by_write).
 * Either way the entries are in the page cache before the data write is
 * issued.  A short or failed pwrite falls back to the stores (same values:
 * idempotent).
 */
_Atomic unsigned store_test_entry_pwrites;

static void entries_put(struct tsr_svol *svol, uint64_t *map, uint64_t first, uint64_t n,
			const uint8_t *buf, const uint32_t *sums)
{
	const uint64_t per_page = STORE_PAGE / STORE_CRC_ENTRY;
	uint32_t z = blockmeta_zero_crc();
	uint64_t ents[64];

	for (uint64_t i = 0; i < n;) {
		uint64_t k = n - i < 64 ? n - i : 64;
		uint64_t room = per_page - (first + i) % per_page; /* a run stays in one page */
		size_t bytes;

		if (k > room)
			k = room;
		bytes = (size_t)k * sizeof(ents[0]);
		for (uint64_t j = 0; j < k; j++) {
			uint32_t c =
			    sums ? sums[i + j] ^ z
				 : blockmeta_block_crc(buf + ((i + j) << STORE_BLOCK_SHIFT));

			ents[j] = entry_make(c, entry_cur(entry_load(&map[first + i + j])));
		}
		if (blockmeta_entries_by_write(&svol->meta, first + i) &&
		    pwrite(svol->meta.crc_fd, ents, bytes,
			   (off_t)((first + i) * sizeof(ents[0]))) == (ssize_t)bytes)
			store_test_entry_pwrites++;
		else
			for (uint64_t j = 0; j < k; j++)
				entry_store(&map[first + i + j], ents[j]);
		i += k;
	}
}

/*
 * Queue one sub-operation of a write (a data piece, or an fdatasync when iov
 * is NULL), counted in op->pending.  From write_queue_late (op->may_block:
 * after the mark's fsync, or a copy on write resuming, DATA_GO_LATE) an io
 * that filled up meanwhile cannot be answered with -EAGAIN any more (the
 * caller was told 0 long ago): the step is then done on the spot, blocking,
 * and its completion called here.  Rare: it takes a full queue at the moment
 * a mark or a copy completes.
 */
static int write_sub(struct svol_op *op, int fd, struct iovec *iov, uint64_t fd_offset,
		     tsr_io_cb done)
{
	bool fua = op->flags & TSR_WRITE_FUA;
	ssize_t n;
	int ret;

	if (iov)
		ret = tsr_io_writev(op->io, fd, iov, 1, fd_offset, fua ? TSR_IO_FUA : 0, done, op);
	else
		ret = tsr_io_fsync(op->io, fd, true, done, op);
	if (ret == 0 || ret != -EAGAIN || !op->may_block) {
		if (ret == 0)
			op->pending++;
		return ret;
	}
	op->pending++;
	if (iov) {
		n = pwritev2(fd, iov, 1, (off_t)fd_offset, fua ? RWF_DSYNC : 0);
		ret = n == (ssize_t)iov->iov_len ? (int)n : n < 0 ? -errno : -EIO;
	} else {
		ret = fdatasync(fd) < 0 ? -errno : 0;
	}
	done(op, ret);
	return 0;
}

/* Steps 2 and 3 of a write whose regions are durably marked: sub-operations
 * counted in op->pending.  0, or the first error (those before it stand). */
static int write_queue(struct svol_op *op, bool *piece_missing)
{
	struct tsr_svol *svol = op->svol;
	uint64_t *map, first = op->offset >> STORE_BLOCK_SHIFT, i;
	struct svol_piece small[2], *big, *p;
	struct iovec *iov;
	int n, ret = 0;

	map = blockmeta_entries(&svol->meta);
	entries_put(svol, map, first, op->len >> STORE_BLOCK_SHIFT, op->buf, op->sums);

	n = svol_map_all(svol, op->offset, op->len, small, 2, &big);
	p = big ? big : small;
	iov = n < 0 ? NULL : op_iovs(op, n);
	if (iov == NULL) {
		free(big);
		*piece_missing = true; /* nothing was written */
		return -ENOMEM;
	}
	for (i = 0; i < (uint64_t)n; i++) {
		iov[i].iov_base = op->buf + (p[i].vol_offset - op->offset);
		iov[i].iov_len = p[i].len;
		ret = write_sub(op, p[i].fd, &iov[i], p[i].fd_offset, write_data_done);
		if (ret)
			break;
	}
	free(big);
	*piece_missing = ret && i < (uint64_t)n;
	if (ret == 0 && (op->flags & TSR_WRITE_FUA)) {
		/* the entries must be durable with the data */
		blockmeta_note_sync(&svol->meta);
		ret = write_sub(op, svol->meta.crc_fd, NULL, 0, write_done);
		if (ret == 0 && svol->is_clone) /* and a clone's own bits */
			ret = write_sub(op, svol->own.fd, NULL, 0, write_done);
	}
	return ret;
}

/* Like op_launched: 0 when callbacks will finish op, else -errno with op put. */
static int write_issue(struct svol_op *op)
{
	bool piece_missing;
	int ret = write_queue(op, &piece_missing);

	if (op->pending == 1)
		entries_restore(op->svol, op->offset, op->len, op->buf, false);
	else if (piece_missing)
		op->data_failed = true; /* a piece was never written */
	return op_launched(op, ret);
}

/* Steps 2 and 3 when the caller was told 0 long ago: never -EAGAIN (a full
 * queue blocks, write_sub); op ends through write_done, which drops the
 * guard reference and calls the caller back (possibly before this returns). */
static void write_queue_late(struct svol_op *op)
{
	bool piece_missing = false;
	int res;

	op->may_block = true;
	res = write_queue(op, &piece_missing);
	if (op->pending == 1 && res)
		entries_restore(op->svol, op->offset, op->len, op->buf, false);
	else if (piece_missing)
		op->data_failed = true;
	write_done(op, res); /* drops the guard reference */
}

/* The mark's fsync completed (on op's io, from tsr_io_poll): go on with
 * steps 2 and 3, or fail the write with nothing changed.  Either way op
 * ends through write_done, which calls the caller back. */
static void write_marked(void *cb_arg, int res)
{
	struct svol_op *op = cb_arg;

	if (res < 0) {
		tsr_error("write: volume %s offset %llu length %llu: mark dirty region: %s",
			  op->svol->name, (unsigned long long)op->offset,
			  (unsigned long long)op->len, strerror(-res));
		op->status = res;
		op_finish(op);
		return;
	}
	write_queue_late(op);
}

int data_write_go(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint32_t len,
		  const void *buf, const uint32_t *sums, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	struct svol_op *op;
	int ret;

	/* before anything changes: on a full file system this is where the
	 * write stops, with -ENOSPC (blockmeta.c, "Full file systems") */
	ret = blockmeta_reserve_entries(&svol->meta, offset, len);
	if (ret == 0)
		ret = own_reserve(svol, offset, len);
	if (ret) {
		tsr_error("write: volume %s offset %llu length %u: allocate its crc table: %s",
			  svol->name, (unsigned long long)offset, len, strerror(-ret));
		return ret;
	}
	write_begin(svol);
	own_mark(svol, offset, len);
	op = op_get(svol, io, OP_WRITE, cb_fn, cb_arg);
	if (op == NULL) {
		write_end(svol);
		return -ENOMEM;
	}
	op->offset = offset;
	op->len = len;
	op->buf = (uint8_t *)buf;
	op->sums = sums;
	op->flags = flags & ~DATA_GO_LATE;
	op->pending = 1;
	ret = blockmeta_mark_dirty_async(&svol->meta, io, offset >> STORE_REGION_SHIFT,
					 (offset + len - 1) >> STORE_REGION_SHIFT, &op->mark_wait,
					 write_marked, op);
	if (ret < 0) {
		write_end(svol);
		op_put(op);
		return ret;
	}
	if (ret > 0)
		return 0; /* write_marked goes on */
	if (flags & DATA_GO_LATE) {
		write_queue_late(op);
		return 0;
	}
	return write_issue(op);
}

static int complete_later(struct svol_op *op);

/* ---- flush ---- */

/*
 * A flush that ran while no write was in flight or started made every entry
 * and block durable and normal enough ("data matches cur"), so the dirty
 * bitmap can start again from empty: a later crash then scans only regions
 * written since.  Done at most once per store->dirty_clear_ns (it costs a
 * punch and an fdatasync here, and an msync at each region's next write).
 */
static void maybe_clear_dirty(struct tsr_svol *svol, uint64_t seen)
{
	int64_t now, last;

	if (atomic_load(&svol->write_failed) || !atomic_load(&svol->meta.any_dirty))
		return;
	now = tsr_mono_ns();
	last = atomic_load(&svol->last_clear_ns);
	if (now - last < svol->store->dirty_clear_ns ||
	    !atomic_compare_exchange_strong(&svol->last_clear_ns, &last, now))
		return;
	/* copies' snapshot bits are rebuilt from dirty regions: durable first */
	if (chain_sync_present_try(svol))
		return;
	blockmeta_clear_if_quiet(&svol->meta, tsr_svol_size(svol), &svol->writes_started, seen);
}

static void flush_done(void *cb_arg, int res)
{
	struct svol_op *op = cb_arg;

	if (res < 0 && op->status == 0) {
		op->status = res;
		store_log_step(res, "flush: volume %s", op->svol->name);
	}
	if (--op->pending)
		return;
	if (op->status == 0 && op->kind == OP_FLUSH) {
		stat_add(&op->svol->stats.flushes, 1);
		if (op->quiet)
			maybe_clear_dirty(op->svol, op->seen);
	}
	op_finish(op);
}

/* Queue fdatasync of the data fds covering [offset, offset+len) (all of the
 * volume for len 0) and of the crc table; each completion goes to flush_done. */
static int queue_syncs(struct svol_op *op, uint64_t offset, uint64_t len)
{
	struct tsr_svol *svol = op->svol;
	struct svol_piece p[STORE_MAX_SEGS + 2];
	int i, n, ret;

	if (len == 0) {
		offset = 0;
		len = tsr_svol_size(svol);
	}
	if (svol->rowmap) {
		/* any range may be in any segment or in .row: sync them all, and
		 * the map (step 3's flips become durable with it) */
		n = 0;
		for (i = 0; i < (int)STORE_MAX_SEGS; i++) {
			p[n].fd = atomic_load_explicit(&svol->seg_fd[i], memory_order_acquire);
			if (p[n].fd >= 0)
				n++;
		}
		p[n++].fd = svol->rowmap->row_fd;
		p[n++].fd = svol->rowmap->fd;
	} else {
		n = svol_map(svol, offset, len, p, (int)STORE_MAX_SEGS);
	}
	for (i = 0; i < n; i++) {
		ret = tsr_io_fsync(op->io, p[i].fd, true, flush_done, op);
		if (ret)
			return ret;
		op->pending++;
	}
	blockmeta_note_sync(&svol->meta);
	ret = tsr_io_fsync(op->io, svol->meta.crc_fd, true, flush_done, op);
	if (ret)
		return ret;
	op->pending++;
	if (svol->is_clone) {
		ret = tsr_io_fsync(op->io, svol->own.fd, true, flush_done, op);
		if (ret)
			return ret;
		op->pending++;
	}
	return 0;
}

int tsr_svol_flush(struct tsr_svol *svol, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg)
{
	struct svol_op *op = op_get(svol, io, OP_FLUSH, cb_fn, cb_arg);

	if (op == NULL)
		return -ENOMEM;
	if (svol->ro_layer) /* nothing to make durable */
		return complete_later(op);
	op->seen = atomic_load(&svol->writes_started);
	op->quiet = atomic_load(&svol->writes_done) == op->seen;
	op->pending = 1;
	return op_launched(op, queue_syncs(op, 0, 0));
}

/* ---- trim and write_zeroes ---- */

static void trampoline_done(void *cb_arg, int res)
{
	struct svol_op *op = cb_arg;

	if (--op->pending)
		return;
	op_finish(op);
}

/* Complete op from the next tsr_io_poll (or after the FUA syncs). */
static int complete_later(struct svol_op *op)
{
	int ret;

	op->pending = 1;
	if (op->flags & TSR_WRITE_FUA)
		return op_launched(op, queue_syncs(op, op->offset, op->len));
	op->iov[0].iov_base = g_scratch;
	op->iov[0].iov_len = sizeof(g_scratch);
	ret = tsr_io_readv(op->io, op->svol->store->trampoline_fd, op->iov, 1, 0, trampoline_done,
			   op);
	if (ret == 0)
		op->pending++;
	return op_launched(op, ret);
}

/* entry = {0, old cur} for every block of [offset, offset+len), skipping the
 * holes of the crc file (entries there are already 0): a trim of a large,
 * mostly unwritten range stays cheap. */
static void entries_zero(struct tsr_svol *svol, uint64_t offset, uint64_t len)
{
	uint64_t *map = blockmeta_entries(&svol->meta);
	off_t pos = (off_t)((offset >> STORE_BLOCK_SHIFT) * STORE_CRC_ENTRY);
	off_t end = (off_t)(((offset + len) >> STORE_BLOCK_SHIFT) * STORE_CRC_ENTRY);
	int fd = svol->meta.crc_fd;

	while (pos < end) {
		off_t d = lseek(fd, pos, SEEK_DATA), h, b;

		if (d < 0 && errno == ENXIO)
			break;
		if (d < 0) { /* no SEEK_DATA: visit every entry */
			d = pos;
			h = end;
		} else {
			if (d >= end)
				break;
			if (d < pos)
				d = pos;
			h = lseek(fd, d, SEEK_HOLE);
			if (h < 0 || h > end)
				h = end;
		}
		for (b = d / STORE_CRC_ENTRY; b < h / (off_t)STORE_CRC_ENTRY; b++) {
			uint64_t e = entry_load(&map[b]);

			if (e)
				entry_store(&map[b], entry_make(0, entry_cur(e)));
		}
		pos = h;
	}
}

int store_dev_zero(int fd, uint64_t offset, uint64_t len)
{
	const uint8_t *z;
	uint64_t done = 0;

	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) ==
	    0)
		return 0;
	if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) ==
	    0)
		return 0;
	z = zero_buf();
	if (z == NULL)
		return -ENOMEM;
	while (done < len) {
		size_t n = len - done < ZERO_BUF_SIZE ? (size_t)(len - done) : ZERO_BUF_SIZE;
		ssize_t w = pwrite(fd, z, n, (off_t)(offset + done));

		if (w <= 0) {
			int ret = w < 0 ? -errno : -EIO;

			tsr_error("zero device range %llu+%llu: %s", (unsigned long long)offset,
				  (unsigned long long)len, strerror(-ret));
			return ret;
		}
		done += (uint64_t)w;
	}
	return 0;
}

int data_trampoline(struct tsr_store *store, struct tsr_io *io, struct iovec *iov,
		    tsr_io_cb cb_fn, void *cb_arg)
{
	iov->iov_base = g_scratch;
	iov->iov_len = sizeof(g_scratch);
	return tsr_io_readv(io, store->trampoline_fd, iov, 1, 0, cb_fn, cb_arg);
}

/* Deallocate synchronously; the callback follows from the io. */
static int trim_now(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint64_t len,
		    unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	int ret = check_range(svol, offset, len);

	if (ret)
		return ret;
	if (svol->ro_layer)
		return -EROFS;
	if (cow_needed(svol, offset, len))
		return cow_start(svol, io, COW_TRIM, offset, len, NULL, flags, cb_fn, cb_arg);
	return data_trim_go(svol, io, offset, len, flags, cb_fn, cb_arg);
}

int data_trim_go(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint64_t len,
		 unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	struct svol_piece p[STORE_MAX_SEGS];
	uint64_t at, left;
	struct svol_op *op;
	int i, n, ret;

	ret = own_reserve(svol, offset, len);
	if (ret) {
		tsr_error("trim: volume %s offset %llu length %llu: allocate its clone bitmap: %s",
			  svol->name, (unsigned long long)offset, (unsigned long long)len,
			  strerror(-ret));
		return ret;
	}
	op = op_get(svol, io, OP_TRIM, cb_fn, cb_arg);
	if (op == NULL)
		return -ENOMEM;
	op->offset = offset;
	op->len = len;
	op->flags = flags;
	write_begin(svol);
	own_mark(svol, offset, len);
	ret = mark_range(svol, offset, len);
	if (ret)
		goto err_end;
	entries_zero(svol, offset, len);
	for (at = offset, left = len; left;) {
		n = svol_map(svol, at, left, p, (int)STORE_MAX_SEGS);
		for (i = 0; i < n; i++) {
			at += p[i].len;
			left -= p[i].len;
			if (svol->dev_offset >= 0) {
				ret = store_dev_zero(p[i].fd, p[i].fd_offset, p[i].len);
			} else if (fallocate(p[i].fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					     (off_t)p[i].fd_offset, (off_t)p[i].len) < 0) {
				ret = -errno;
				tsr_error("trim: volume %s offset %llu length %llu: %s", svol->name,
					  (unsigned long long)offset, (unsigned long long)len,
					  strerror(-ret));
			}
			/* on error the entries stay {0, old}: either content reads back */
			if (ret)
				goto err_end;
		}
	}
	write_end(svol);
	stat_add(&svol->stats.trims, 1);
	return complete_later(op);
err_end:
	write_end(svol);
	op_put(op);
	return ret;
}

int tsr_svol_trim(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint64_t len,
		  tsr_cb cb_fn, void *cb_arg)
{
	return trim_now(svol, io, offset, len, 0, cb_fn, cb_arg);
}

static int zeroes_next(struct svol_op *op);

static void zeroes_done(void *cb_arg, int res)
{
	struct svol_op *op = cb_arg;
	int ret;

	if (op->syncing) {
		flush_done(cb_arg, res);
		return;
	}
	op->pending--;
	if (res < 0) {
		store_log_step(res, "write_zeroes: volume %s offset %llu length %llu",
			       op->svol->name, (unsigned long long)op->chunk_off,
			       (unsigned long long)op->chunk_len);
		entries_restore(op->svol, op->chunk_off, op->chunk_len, NULL, true);
		op->status = res;
		op_finish(op);
		return;
	}
	stat_add(&op->svol->stats.bytes_written, op->chunk_len);
	op->pos += op->chunk_len;
	if (op->pos < op->offset + op->len) {
		ret = zeroes_next(op);
	} else {
		stat_add(&op->svol->stats.writes, 1);
		if (!(op->flags & TSR_WRITE_FUA)) {
			op_finish(op);
			return;
		}
		op->syncing = true;
		op->pending = 1;
		ret = queue_syncs(op, op->offset, op->len);
		if (ret == 0 || op->pending > 1) {
			if (ret)
				op->status = ret;
			op->pending--;
			return;
		}
	}
	if (ret) {
		op->status = ret;
		op_finish(op);
	}
}

/* Queue the next chunk of zeros (at most 8 MiB, never across a segment). */
static int zeroes_next(struct svol_op *op)
{
	struct tsr_svol *svol = op->svol;
	uint64_t *map = blockmeta_entries(&svol->meta);
	uint64_t end = op->offset + op->len, len = end - op->pos, b;
	struct svol_piece p;
	unsigned i;
	int ret;

	if (len > (uint64_t)ZERO_IOVS * ZERO_BUF_SIZE)
		len = (uint64_t)ZERO_IOVS * ZERO_BUF_SIZE;
	svol_map(svol, op->pos, len, &p, 1);
	len = p.len;
	for (b = op->pos >> STORE_BLOCK_SHIFT; b < (op->pos + len) >> STORE_BLOCK_SHIFT; b++) {
		uint64_t e = entry_load(&map[b]);

		if (e)
			entry_store(&map[b], entry_make(0, entry_cur(e)));
	}
	for (i = 0; i * (uint64_t)ZERO_BUF_SIZE < len; i++) {
		uint64_t l = len - i * (uint64_t)ZERO_BUF_SIZE;

		op->iov[i].iov_base = (void *)zero_buf();
		op->iov[i].iov_len = l < ZERO_BUF_SIZE ? l : ZERO_BUF_SIZE;
	}
	op->chunk_off = op->pos;
	op->chunk_len = len;
	ret = tsr_io_writev(op->io, p.fd, op->iov, (int)i, p.fd_offset, 0, zeroes_done, op);
	if (ret) {
		entries_restore(svol, op->chunk_off, len, NULL, false);
		return ret;
	}
	op->pending++;
	return 0;
}

int tsr_svol_write_zeroes(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint64_t len,
			  unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	int ret;

	if (!(flags & TSR_WRITE_NO_HOLE))
		return trim_now(svol, io, offset, len, flags, cb_fn, cb_arg);
	ret = check_range(svol, offset, len);
	if (ret)
		return ret;
	if (svol->ro_layer)
		return -EROFS;
	if (cow_needed(svol, offset, len))
		return cow_start(svol, io, COW_ZEROES, offset, len, NULL, flags, cb_fn, cb_arg);
	return data_zeroes_go(svol, io, offset, len, flags, cb_fn, cb_arg);
}

int data_zeroes_go(struct tsr_svol *svol, struct tsr_io *io, uint64_t offset, uint64_t len,
		   unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	struct svol_op *op;
	int ret;

	if (zero_buf() == NULL)
		return -ENOMEM;
	ret = own_reserve(svol, offset, len);
	if (ret) {
		tsr_error("write_zeroes: volume %s offset %llu length %llu: allocate its clone "
			  "bitmap: %s",
			  svol->name, (unsigned long long)offset, (unsigned long long)len,
			  strerror(-ret));
		return ret;
	}
	write_begin(svol);
	own_mark(svol, offset, len);
	ret = mark_range(svol, offset, len);
	op = ret ? NULL : op_get(svol, io, OP_ZEROES, cb_fn, cb_arg);
	if (op == NULL) {
		write_end(svol);
		return ret ? ret : -ENOMEM;
	}
	op->offset = offset;
	op->len = len;
	op->flags = flags;
	op->pos = offset;
	ret = zeroes_next(op);
	if (ret) {
		write_end(svol);
		op_put(op);
		return ret;
	}
	return 0;
}

/* ---- block status and counters ---- */

static int add_extent(struct tsr_extent *ext, size_t max, size_t *n, uint64_t offset, uint64_t len,
		      uint32_t flags)
{
	if (len == 0)
		return 0;
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

int tsr_svol_block_status(struct tsr_svol *svol, uint64_t offset, uint64_t len,
			  struct tsr_extent *ext, size_t max, size_t *count)
{
	const uint32_t hole = TSR_EXTENT_HOLE | TSR_EXTENT_ZERO;
	uint64_t size = tsr_svol_size(svol);
	struct svol_piece p[STORE_MAX_SEGS];
	uint64_t at, left;
	size_t n = 0;
	int i, np;

	if (svol->ro_layer)
		return image_block_status(svol->base, svol->ro_layer, size, offset, len, ext, max,
					  count);
	if (svol->is_clone)
		return image_block_status(svol, NULL, size, offset, len, ext, max, count);
	*count = 0;
	if (max == 0 || len == 0)
		return -EINVAL;
	if (offset >= size)
		return -ENOSPC;
	if (len > size - offset)
		len = size - offset;
	if (svol->dev_offset >= 0) {
		add_extent(ext, max, &n, offset, len, 0);
		*count = n;
		return 0;
	}
	for (at = offset, left = len; left;) {
		np = svol_map(svol, at, left, p, (int)STORE_MAX_SEGS);
		for (i = 0; i < np; i++) {
			off_t pos = (off_t)p[i].fd_offset, end = (off_t)(p[i].fd_offset + p[i].len);

			at += p[i].len;
			left -= p[i].len;
			uint64_t base = p[i].vol_offset - p[i].fd_offset;

			while (pos < end) {
				off_t d = lseek(p[i].fd, pos, SEEK_DATA), h;

				if (d < 0 && errno != ENXIO) {
					int ret = -errno;

					tsr_error("block_status: volume %s: %s", svol->name,
						  strerror(-ret));
					return ret;
				}
				if (d < 0 || d > end)
					d = end;
				d &= ~(off_t)(TSR_BLOCK_SIZE -
					      1); /* data starts at a block boundary */
				if (d < pos)
					d = pos;
				if (add_extent(ext, max, &n, base + (uint64_t)pos,
					       (uint64_t)(d - pos), hole))
					goto full;
				if (d >= end)
					break;
				h = lseek(p[i].fd, d, SEEK_HOLE);
				if (h < 0 || h > end)
					h = end;
				h = (h + TSR_BLOCK_SIZE - 1) & ~(off_t)(TSR_BLOCK_SIZE - 1);
				if (h > end)
					h = end;
				if (add_extent(ext, max, &n, base + (uint64_t)d, (uint64_t)(h - d),
					       0))
					goto full;
				pos = h;
			}
		}
	}
full:
	*count = n;
	return 0;
}

void tsr_svol_get_stats(const struct tsr_svol *svol, struct tsr_svol_stats *out)
{
	struct svol_stats *s = &((struct tsr_svol *)svol)->stats;

	out->reads = atomic_load_explicit(&s->reads, memory_order_relaxed);
	out->writes = atomic_load_explicit(&s->writes, memory_order_relaxed);
	out->flushes = atomic_load_explicit(&s->flushes, memory_order_relaxed);
	out->trims = atomic_load_explicit(&s->trims, memory_order_relaxed);
	out->bytes_read = atomic_load_explicit(&s->bytes_read, memory_order_relaxed);
	out->bytes_written = atomic_load_explicit(&s->bytes_written, memory_order_relaxed);
	out->crc_errors = atomic_load_explicit(&s->crc_errors, memory_order_relaxed);
	out->cached_reads = atomic_load_explicit(&s->cached_reads, memory_order_relaxed);
}
