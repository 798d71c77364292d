/*
 * Private header of the mirror layout (include/tessera/mirror.h).  Every
 * structure here belongs to the volume's home worker: no field is touched
 * from another thread except the published status snapshot (cs.status,
 * under cs.status_lock), fence_req (atomic) and the start/stop semaphore.
 *
 * Files:
 *  - mirror.c        create/destroy, control messages, status, the host data
 *                    path (write fan-out, read with fail-over and repair,
 *                    flush, trim, write_zeroes), copy failure;
 *  - mirror_copy.c   one copy's operations, local (store + epoch check) or
 *                    remote (peer client), behind one set of functions, and
 *                    the range locks;
 *  - copyset.c       shared with the EC layout (copyset_internal.h): the
 *                    records of copy states (hooks), sessions, a snapshot
 *                    request on one copy;
 *  - mirror_bitmap.c the per-copy dirty-region bitmap and its state file;
 *  - mirror_resync.c region copies (resync, rebuild, read repair);
 *  - mirror_scrub.c  block-by-block comparison (converge at create, scrub);
 *  - mirror_snap.c   the snap op: a snapshot cut on every IN_SYNC copy at one
 *                    point of the write order.
 */
#ifndef TSR_LAYOUT_MIRROR_INTERNAL_H
#define TSR_LAYOUT_MIRROR_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "layout/copyset_internal.h"
#include "tessera/mirror.h"
#include "tessera/peer.h"

#define MIRROR_TICK_MS        20                  /* timer: stalls, throttle, status */
#define MIRROR_RESYNC_DEPTH   8                   /* resync copies in flight at once, at most */
#define MIRROR_RESYNC_IO      (2u << 20)          /* largest resync copy: dirty regions merged */
/*
 * Resync bytes in flight, at most (one copy always may go): a replica keeps
 * 16 MiB of receive buffers per connection for reuse (peer_server.c); past
 * that each frame gets a fresh mmap faulted in page by page.  Measured on
 * the bench's 1 GiB resync: 8 x 4 MiB in flight took 15.8 s, 6 x 2 MiB 3.7 s.
 */
#define MIRROR_RESYNC_INFLIGHT_BYTES (12u << 20)
#define MIRROR_RESYNC_FLUSH_BYTES (64ull << 20)   /* bytes copied per flush of the target */
#define MIRROR_RESYNC_FLUSH_NS (500ull * 1000000) /* a smaller batch waits no longer (throttled) */
#define MIRROR_XBUF_CACHE     8                   /* copy buffers kept for reuse */
#define MIRROR_SCRUB_CHUNK    (4u << 20)          /* bytes compared per step */
#define MIRROR_PEER_SPLIT     (1u << 30)          /* trim/zeroes pieces for the peer protocol */
/*
 * The largest single read, write or SUMS a copy's operation issues (a store
 * read or write and a peer READ/WRITE take at most TSR_MAX_IO, a peer SUMS
 * TSR_PEER_MAX_SUMS_RANGE): a longer one (a region of a --region-size over
 * 32 MiB) goes as pieces one after another (mcopy_submit), and the make-up
 * of a snapshot works on pieces of a region this size (mirror_snap.c).
 */
#define MIRROR_IO_PIECE       TSR_MAX_IO
_Static_assert(MIRROR_IO_PIECE <= TSR_PEER_MAX_SUMS_RANGE, "a SUMS piece over the peer's bound");
#define MIRROR_LOCAL_RETRY_NS (5ull * 1000000000) /* an out-of-sync local copy: resync again */
#define MIRROR_RECENT_SNAPS   32                  /* snapshot operations remembered (replace) */

struct mirror;
struct mcopy;
struct wop;

/*
 * A free list of finished operations of one size (mirror_copy.c), kept for
 * the next ones instead of a calloc and free each: a struct mirror's lists
 * belong to its home worker, so no lock.  At most MIRROR_FREE_OPS are kept
 * (a burst's extra ones are freed); mop_cache_drop frees them all (mirror
 * teardown).  A cached op's first bytes hold the list's link.
 * None are kept under AddressSanitizer (TSR_KEEP_FREED, tessera/common.h).
 */
#define MIRROR_FREE_OPS 64
struct mop_cache {
	void *head;
	unsigned n;
};
/* A zeroed op of size bytes (>= a pointer), from the list or calloc'd. */
void *mop_cache_get(struct mop_cache *mc, size_t size);
void mop_cache_put(struct mop_cache *mc, void *op);
void mop_cache_drop(struct mop_cache *mc);

/* ---- mirror_copy.c: range locks ---------------------------------------- */

/*
 * A lock on [off, off+len) against other lock holders: host writes, trims,
 * region copies and scrub chunks.  Granted in arrival order among
 * overlapping requests (so overlapping writes reach every copy in order).
 */
struct rlock {
	uint64_t off, len;
	bool held, queued;
	void (*granted)(struct rlock *rl); /* a queued lock was granted */
	struct rlock *next;
};
/* true: held now (granted is not called); false: queued, granted() later. */
bool rl_acquire(struct mirror *m, struct rlock *rl, uint64_t off, uint64_t len,
		void (*granted)(struct rlock *rl));
void rl_release(struct mirror *m, struct rlock *rl);
/* Remove a queued (not yet granted) lock. */
void rl_cancel(struct mirror *m, struct rlock *rl);

/* ---- mirror_bitmap.c ---------------------------------------------------- */

/*
 * State file state_dir/<vol>.<node_id>.bitmap, 4 KiB pages, written with
 * O_DIRECT (when the file system allows) and TSR_IO_FUA through the home io:
 *   page 0:  off 0 magic "TSRMBMAP" (8), 8 version 1 (4), 12 region_size (4),
 *            16 volume size (8), 24 CRC32C of bytes 0..23 (4), zeros;
 *   page 1+: the bits, region r at byte r/8 of the bit area, bit r%8.
 * A file that is absent or whose header does not match means every region
 * is dirty (full resync).
 */
struct mpage {
	uint64_t mv, pv, fv; /* versions: modified, persisted, in flight */
	bool inflight;
	bool retry;             /* the io queue was full: mbm_retry writes it */
	struct waiter *waiters; /* wait for pv >= ver */
	uint8_t *iobuf;         /* copy of the page being written (its iovec: page_ctx) */
};

struct mbitmap {
	struct mirror *m;
	int fd; /* -1: not open */
	char path[PATH_MAX];
	uint64_t nregions;
	unsigned region_shift;
	uint8_t *bits; /* npages * 4096 bytes */
	size_t npages;
	struct mpage *pages;
	uint64_t nset; /* set bits */
	int error;     /* last persist error (sticky until a success) */
	bool retry_pending; /* some page has retry set (mbm_retry has work) */
	/* mbm_open with load found our header for another volume size (a grow
	 * recorded but not reached: mirror_resize): the copy is compared in
	 * full (full_resync), not copied whole */
	bool stale_header;
	/*
	 * Optional owner reference held by each page write in flight (the EC
	 * layout borrows this bitmap, ec_internal.h); NULL: m_get/m_put on m.
	 * Set after mbm_open.
	 */
	void (*hold)(void *owner, bool get);
	void *owner;
};
/* Control thread (blocking).  full: every region dirty; load: keep the file's
 * bits if its header matches, else every region dirty; neither: empty.
 * Returns 1 if loaded, 0 otherwise, -errno. */
int mbm_open(struct mbitmap *bm, struct mirror *m, const char *path, bool load, bool full);
void mbm_close(struct mbitmap *bm, bool unlink_file);
/* Home worker.  Set the regions of [off, off+len); for every page whose
 * persisted state lacks them queue a write and a waiter (fn(arg, status)),
 * returning the number of waiters queued (0: already durable) or -errno. */
int mbm_mark(struct mbitmap *bm, uint64_t off, uint64_t len, void (*fn)(void *, int), void *arg);
void mbm_mark_all(struct mbitmap *bm);
/* Wait for every page not yet persisted; returns waiters queued. */
int mbm_wait_all(struct mbitmap *bm, void (*fn)(void *, int), void *arg);
void mbm_clear_region(struct mbitmap *bm, uint64_t region);
/* Clear regions [first, first+n), one page write per page touched. */
void mbm_clear_regions(struct mbitmap *bm, uint64_t first, uint64_t n);
/* Clear the bits of regions [first, first+n) in memory only: the caller
 * then calls mbm_write_changed once for all it cleared (a resync batch of
 * many runs costs one write per page, not one per run). */
void mbm_clear_bits(struct mbitmap *bm, uint64_t first, uint64_t n);
/* Queue one write of each page holding regions [first, last] (inclusive)
 * changed since its last write was queued. */
void mbm_write_changed(struct mbitmap *bm, uint64_t first, uint64_t last);
void mbm_clear_all(struct mbitmap *bm);
bool mbm_test(const struct mbitmap *bm, uint64_t region);
/* The first set region >= from, or nregions. */
uint64_t mbm_next(const struct mbitmap *bm, uint64_t from);
bool mbm_busy(const struct mbitmap *bm); /* a page write in flight or waiting */
/*
 * A page write that met a full io queue (-EAGAIN) waits (its waiters too)
 * until mbm_retry: the owner calls it when one of its io operations
 * completes and on its tick.  Closing (m->closing): the waiters fail with
 * -ECANCELED.
 */
void mbm_retry(struct mbitmap *bm);

/*
 * Online growth (mirror_resize), in two steps.  Control thread: write the
 * file's new bit pages (clear) and then the header naming new_size, durable
 * (page 0 and the new pages are never written by the home worker, whose
 * page writes go on meanwhile).  Home worker: mbm_grow makes the in-memory
 * bitmap cover new_nregions (the new regions clear).  0 or -errno.
 */
int mbm_grow_file(struct mbitmap *bm, uint64_t new_size, uint64_t new_nregions);
int mbm_grow(struct mbitmap *bm, uint64_t new_nregions);

/* In-memory region sets (regions written since the last flush). */
void bits_set_range(uint8_t *bits, uint64_t first, uint64_t last);

/* ---- copies ------------------------------------------------------------- */

struct mresync;
struct mreplay;

/* A snapshot operation a copy missed (not IN_SYNC at the cut, or failed it). */
struct msnap_miss {
	enum tsr_snap_op op; /* CREATE or DELETE */
	char snap[64];
};

struct mcopy {
	COPYSET_COPY_BASE; /* idx, node_id, address, local, state, hooks, session */
	struct mirror *m;
	bool present; /* false: slot dropped (replaced) */
	bool full_resync;
	/*
	 * Failed before ready (mirror_copy_failed then changes the state in
	 * memory only); recorded OUT_OF_SYNC by a start-up that succeeds
	 * (start_finish, start_done), cleared by start_done.
	 */
	bool start_failed;
	struct mbitmap bm;
	struct mresync *resync; /* running resync, or NULL */
	bool resync_queued;     /* start one once the session is open */
	/*
	 * Snapshot operations missed, oldest first, kept durably in
	 * state_dir/<vol>.<node_id>.snaps (mirror_snap.c) before the snap that
	 * missed the copy is acknowledged; replayed on the copy before its
	 * resync proper, emptied once it is IN_SYNC.
	 */
	struct msnap_miss *missed;
	unsigned n_missed;
	/* the metadata record may list missed operations (CopyRecord.missed_snaps):
	 * replay pops and the end of a replay are recorded too */
	bool missed_in_record;
	unsigned missed_rec_seq;   /* records of the list asked (the last one counts) */
	bool missed_rec_retry;     /* the last one failed: the tick asks again */
	uint64_t missed_rec_next_ns; /* not before (one try a second) */
	struct mreplay *replay; /* replay running, or NULL */
	/* the replay cut a snapshot on it: its head holds that image, so the
	 * resync compares sums and copies only what differs (mirror_resync.c
	 * compares()); cleared once IN_SYNC and when the slot is replaced */
	bool head_imaged;
};

/* One operation on one copy: mirror_copy.c.  Sync errors are returned.  A
 * READ, WRITE or SUMS longer than MIRROR_IO_PIECE goes as pieces in turn
 * (the first failure ends it: that status, the rest not issued). */
enum mcop_kind { MCOP_READ, MCOP_WRITE, MCOP_FLUSH, MCOP_TRIM, MCOP_ZEROES, MCOP_SUMS };
/* MCOP_READ flags: read the copy's disk, not its page cache (a resync
 * source: a one-pass stream of the whole volume that would otherwise pass
 * through every source node's cache; a remote copy: TSR_PEER_F_DIRECT) */
#define MCOP_READ_DIRECT 1u
int mcopy_submit(struct mcopy *c, enum mcop_kind kind, uint64_t off, uint64_t len, void *buf,
		 unsigned flags, tsr_cb cb_fn, void *cb_arg);
/* An MCOP_WRITE with its blocks' CRCs computed once for every copy (sums[i] =
 * tsr_crc32c(0, block i of buf), tsr_crc32c_blocks; kept until cb_fn): the
 * local store takes them for its entries, a peer frame's data_crc is joined
 * from them.  sums NULL is mcopy_submit. */
int mcopy_write_sums(struct mcopy *c, uint64_t off, uint64_t len, void *buf, const uint32_t *sums,
		     unsigned flags, tsr_cb cb_fn, void *cb_arg);
/* Local operations that met a full io queue (-EAGAIN) wait in
 * m->io_waiters; this issues them again (closing: -ECANCELED). */
void mirror_io_kick(struct mirror *m);
/* A snapshot request on one copy: copyset_snap. */
int mcopy_snap(struct mcopy *c, const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg);
/* Start (re)connecting a remote copy, drop the session: copyset_connect,
 * copyset_disconnect. */
int mcopy_connect(struct mcopy *c, tsr_cb cb_fn, void *cb_arg);
void mcopy_disconnect(struct mcopy *c);

/* ---- the layout --------------------------------------------------------- */

struct mscrub;
struct mcop;

struct mirror {
	struct copyset cs; /* what copyset.c reads of the layout (set at create) */
	/* immutable after create, but for size and nregions */
	char name[64];
	/* grown on the home worker only (mirror_resize), with nregions; read
	 * by other threads through mirror_size (atomic) */
	uint64_t size;
	uint64_t epoch;
	char node_id[64];
	char token[128];
	char state_dir[PATH_MAX];
	struct tsr_store *store;
	struct tsr_worker *home;
	struct tsr_io *io; /* the home worker's */
	pthread_t home_thread;
	unsigned min_replicas;
	unsigned peer_timeout_ms;
	unsigned write_wait_ms;
	uint64_t resync_rate;
	uint32_t region_size;
	unsigned region_shift;
	uint64_t nregions;
	bool converge;
	struct tsr_layout_hooks hooks;
	struct tsr_layout *layout; /* ours (tsr_layout_new), set before the first request */

	struct mcopy copies[TSR_MIRROR_MAX_COPIES];
	unsigned n_copies;

	bool fence_req; /* tsr_layout_fence was called (atomic, any thread) */

	/* home worker state */
	bool ready, fenced, closing;
	int timer_fd;
	struct mcop *io_waiters, *io_waiters_tail; /* local ops waiting for io queue room */
	/* finished write ops (mirror.c) and copy ops (mirror_copy.c) for
	 * the next ones: no calloc and free per write and per copy */
	struct mop_cache wop_cache, mcop_cache;
	struct rlock *locks_held;
	struct rlock *locks_wait, *locks_wait_tail;
	struct wop *stalled, *stalled_tail; /* writes waiting for min_replicas (range held) */
	struct wop *blocked;                /* writes queued behind a range lock (for timeouts) */
	unsigned read_rr;
	uint8_t *unflushed;      /* regions written since the last flush began */
	uint8_t *unflushed_prev; /* regions written before a flush in flight */
	unsigned flushes_inflight;
	bool flush_failed;
	struct mscrub *scrub;
	/*
	 * The last snapshot operations done (ring, oldest first from
	 * recent_snaps_head): a replace whose list of snapshots was read
	 * elsewhere before it reached us (no IN_SYNC copy here) adds those cut
	 * since (mirror_missed_all).
	 */
	struct msnap_miss recent_snaps[MIRROR_RECENT_SNAPS];
	unsigned recent_snaps_head, n_recent_snaps;
	bool replace_running; /* a replaced copy's full resync not yet IN_SYNC */
	unsigned replace_idx;
	struct mbitmap *retired[TSR_MIRROR_MAX_COPIES * 4]; /* replaced copies' bitmaps */
	unsigned n_retired;
	/* start */
	unsigned start_pending; /* copy OPENs, then OUT_OF_SYNC records, awaited */
	int start_status; /* create waits on cs.sem for it */

	/* counters (home worker) */
	uint64_t n_writes, n_reads, write_errors, copy_failures;
	uint64_t resync_bytes_copied, resync_regions_copied;
	uint64_t resync_copies;       /* resync copy I/Os (each one or more regions) */
	uint64_t resync_flushes;      /* target flushes, each making a batch of copies durable */
	unsigned resync_max_inflight; /* most resync copies in flight at once */
	uint64_t bitmap_writes;       /* dirty-bitmap page writes queued (marks and clears) */
	/*
	 * Buffers of finished copies, reused by the next ones: a fresh 1 MiB
	 * buffer is an mmap whose pages fault in on first touch and whose munmap
	 * flushes TLBs (measured: more than half of a resync's CPU).  Each is
	 * region_size or xbuf_big() bytes, MIRROR_IO_PIECE at most (xbuf_len[i]:
	 * a longer copy goes through its buffer piece by piece).
	 */
	void *xbuf_cache[MIRROR_XBUF_CACHE];
	uint32_t xbuf_len[MIRROR_XBUF_CACHE];
	unsigned n_xbuf;
	uint64_t xbuf_bytes;     /* copy buffers allocated now (in use and cached) */
	uint64_t xbuf_bytes_max; /* ... the most at once (status: copy_buf_bytes_max) */
	uint64_t resync_total, resync_done;
	bool resync_running;
	uint64_t local_retry_ns; /* last automatic resync try of the local copy */
	uint64_t local_retry_period_ns; /* MIRROR_LOCAL_RETRY_NS; tests only:
					 * $TSR_TEST_MIRROR_LOCAL_RETRY_MS (500..), read at create */
	double resync_rate_bps;
	uint64_t rate_last_bytes, rate_last_ns;
	uint64_t scrub_total, scrub_done, scrub_mismatches, scrub_repaired, scrub_unrepaired;
	bool scrub_running, scrub_finished;
};

/* mirror.c */
void m_get(struct mirror *m);
void m_put(struct mirror *m);
uint64_t mirror_now_ns(void);
unsigned mirror_in_sync(const struct mirror *m);
/* Bit i set: copy i is present, open and IN_SYNC. */
uint32_t mirror_in_sync_mask(const struct mirror *m);
void mirror_publish(struct mirror *m);
/* A copy failed (error, timeout, on_fail): OUT_OF_SYNC + hook (before ready:
 * no hook, the start-up records it if it succeeds).  err -ESTALE fences. */
void mirror_copy_failed(struct mcopy *c, int err);
void mirror_fence_now(struct mirror *m, const char *why);
/* Ask the metadata store to record st for c; w (may be NULL) waits for it. */
void mirror_hook_request(struct mcopy *c, enum tsr_copy_state st, struct waiter *w);
/* A copy became IN_SYNC: writes waiting for min_replicas may go. */
void mirror_kick_stalled(struct mirror *m);
/* The IN_SYNC copy to read from first (local preferred), or -1. */
int mirror_read_source(struct mirror *m, uint32_t exclude);

/* mirror_resync.c */
/* Free the cached copy buffers (teardown, end of a resync). */
void mirror_xbuf_drop(struct mirror *m);
/*
 * Copy [off, off+len) from an IN_SYNC copy to the copies in dst (bitmask),
 * holding the range lock unless nolock; written with FUA (durable when done
 * fires); done(arg, status, bytes written).  Read repair and scrub use it;
 * the resync writes without FUA and flushes each batch (mirror_resync.c).
 */
int mirror_xfer(struct mirror *m, uint64_t off, uint32_t len, uint32_t dst, bool nolock,
		int src_hint, void (*done)(void *arg, int status, uint64_t bytes), void *arg);
void mirror_resync_start(struct mcopy *c);
void mirror_resync_abort(struct mcopy *c);
void mirror_resync_tick(struct mirror *m, uint64_t now_ns);

/* mirror_snap.c: the layout's snap op (layout_module.h) */
int mirror_snap(void *ctx, const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg);
/*
 * Control thread, at create: c's missed snapshot operations (an IN_SYNC
 * copy's journal is stale: removed).  recorded: the metadata record's
 * (tsr_layout_copy.missed, may be NULL); rebuild: every region of c will be
 * copied (full resync, or no bitmap): then the record's list is taken (our
 * journal may predate another coordinator's), else our journal.  0 or -errno.
 */
int mirror_missed_load(struct mcopy *c, const char *recorded, bool rebuild);
/* Replace, home worker: the new (empty) copy misses every snapshot: the local
 * IN_SYNC copy's, else given's (journal text, may be NULL); saved, recorded. */
void mirror_missed_all(struct mcopy *c, const char *given);
/* c's journal file: state_dir/<vol>.<node_id>.snaps ("" if too long). */
void mirror_missed_path(const struct mcopy *c, char out[PATH_MAX]);
/* Forget (and unlink) c's journal: it is IN_SYNC. */
void mirror_missed_clear(struct mcopy *c);
void mirror_missed_free(struct mcopy *c);
/*
 * Home worker, c OUT_OF_SYNC and open: replay c's missed operations (file
 * header of mirror_snap.c), then call done(c, 0); on a failure done(c,
 * -errno).  Returns 1 when there is nothing to replay (done not called), 0
 * when started.
 */
int mirror_snap_replay(struct mcopy *c, void (*done)(struct mcopy *c, int status));
void mirror_snap_replay_abort(struct mcopy *c);
/* The tick: record again a copy's list whose last record failed. */
void mirror_missed_tick(struct mirror *m, uint64_t now_ns);

/* mirror_scrub.c */
int mirror_scrub_begin(struct mirror *m, bool repair, bool converge,
		       void (*done)(void *arg, int status), void *arg);
void mirror_scrub_abort(struct mirror *m);

#endif
