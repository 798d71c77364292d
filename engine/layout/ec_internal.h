/*
 * Private header of the erasure-coded layout (include/tessera/ec.h).  Like
 * the mirror, every structure here belongs to the volume's home worker;
 * only the published status (cs.status, under cs.status_lock), fence_req
 * (atomic) and the start/stop semaphore are touched from other threads.
 *
 * Files:
 *  - ec.c         create/destroy, start-up (sessions, staged-txn recovery),
 *                 copy states, failures and fencing, control calls,
 *                 status, the tick;
 *  - ec_copy.c    one copy's operations (local store + epoch check, or a
 *                 peer client) behind one set of functions; the stripe
 *                 locks;
 *  - copyset.c    shared with the mirror (copyset_internal.h): the records
 *                 of copy states (hooks), sessions, a snapshot request on
 *                 one copy;
 *  - ec_io.c      the host data path: reads (direct or decoded), writes as
 *                 per-stripe transactions (stage, commit), flush, trim,
 *                 write_zeroes, batched release, the fault switch; and the
 *                 stripe column reader every path shares (ec_col_read);
 *  - ec_resync.c  resync of a returning copy and rebuild of a replacing
 *                 one (chunks recomputed from k others);
 *  - ec_scrub.c   parity checked against data, repair;
 *  - ec_snap.c    the snap op: a cut on every IN_SYNC copy;
 *  - ec_snapread.c a snapshot read back (ec.h tsr_layout_ec_snap_create:
 *                 its own read-only layout; it reads struct ec only at
 *                 create and start) and the diff mapping (tsr_ec_diff_map).
 *
 * The dirty bitmaps are the mirror's (mirror_bitmap.c): each copy's struct
 * mbitmap is opened against bmhost, a struct mirror used only for the
 * fields the bitmap reads (name, size, region size, io, closing), and holds
 * a reference on the EC layout for each page write in flight (mbitmap.hold).
 * Bitmap regions are chunk-volume bytes: region r covers stripes
 * [r * region_size / unit, (r + 1) * region_size / unit).
 */
#ifndef TSR_LAYOUT_EC_INTERNAL_H
#define TSR_LAYOUT_EC_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>

#include "layout/mirror_internal.h"
#include "tessera/ec.h"
#include "tessera/peer.h"

#define EC_TICK_MS        20  /* timer: stalls, release, throttle, status */
#define EC_RELEASE_BATCH  256 /* finished txns that trigger a RELEASE */
#define EC_RELEASE_MS     100 /* ... or this long after the last one */
#define EC_RESYNC_DEPTH   4   /* stripes recomputed at once by a resync */
#define EC_LOCAL_RETRY_NS (5ull * 1000000000)
/* a RESYNCING copy's kept regions (stripes no k chunks rebuilt): walked
 * again after 5 s, then 10, 20, 40, 60, 60 ... until they decode */
#define EC_KEPT_RETRY_NS     (5ull * 1000000000)
#define EC_KEPT_RETRY_MAX_NS (60ull * 1000000000)

struct ec;
struct ecopy;
struct ecop;

/* ---- ec_copy.c: stripe locks -------------------------------------------- */

/*
 * Exclusive lock on one stripe, granted in arrival order: host write
 * transactions, decoded reads, resync and scrub of the stripe.
 */
struct slock {
	uint64_t stripe;
	bool held, queued;
	bool acked; /* held by a txn whose host write was acknowledged before its commits */
	void (*granted)(struct slock *sl); /* a queued lock was granted */
	struct slock *next;
};
/* true: held now (granted not called); false: queued, granted() later. */
bool sl_acquire(struct ec *e, struct slock *sl, uint64_t stripe, void (*granted)(struct slock *sl));
void sl_release(struct ec *e, struct slock *sl);
/* Is stripe's lock held by an acknowledged, not yet committed txn? */
bool sl_acked(const struct ec *e, uint64_t stripe);

/* ---- copies --------------------------------------------------------------- */

struct eresync;

struct ecopy {
	COPYSET_COPY_BASE; /* idx (copy index: tsr_ec_copy_of), node_id, state, hooks, session */
	struct ec *e;
	bool full_resync;       /* every region suspect (rebuild or lost bitmap) */
	struct mbitmap bm;      /* dirty regions of the chunk volume */
	uint64_t journal_est;   /* stage journal bytes written since the last drain (estimate) */
	struct eresync *resync; /* running resync / rebuild, or NULL */
	bool resync_queued;     /* start one once ready */
	/* RESYNCING with regions a walk could not rebuild (ec_resync.c
	 * rs_unrecoverable): the tick walks them again at kept_retry_ns (0: no
	 * retry due), the delay doubling from EC_KEPT_RETRY_NS to
	 * EC_KEPT_RETRY_MAX_NS */
	uint64_t kept_retry_ns, kept_delay_ns;
	uint64_t kept_stripes; /* of them, in status (stripes_unrebuilt) */
	/*
	 * Start-up only (ec.c), cleared by start_finish.  start_failed: failed
	 * before ready (ec_copy_failed then changes the state in memory only);
	 * start_missed: holds a participant chunk of a txn the recovery rolled
	 * forward and did not get its COMMIT.  Recorded OUT_OF_SYNC only by a
	 * start-up that goes on (a missed one before the RELEASE that makes the
	 * others forget the txn): a failed attach leaves the recorded in-sync
	 * set as it was.
	 */
	bool start_failed, start_missed;
};

/*
 * One operation on one copy (ec_copy.c), chunk-volume offsets.  Async
 * contract of the store and peer calls: 0 and cb fires once, or -errno
 * (-ENOTCONN not open, -ESTALE local epoch moved on) and it never fires.
 */
int ecopy_read(struct ecopy *c, uint64_t off, uint32_t len, void *buf, tsr_cb cb, void *arg);
/* ecopy_read served from the copy's disk, never its page cache: a local
 * copy through tsr_svol_read_direct, a remote one a READ with
 * TSR_PEER_F_DIRECT (a plain READ to a replica of a build without it):
 * scrub, and resync/rebuild through ec_col_read(EC_COL_DIRECT). */
int ecopy_read_direct(struct ecopy *c, uint64_t off, uint32_t len, void *buf, tsr_cb cb, void *arg);
int ecopy_write(struct ecopy *c, uint64_t off, uint32_t len, const void *buf, tsr_cb cb, void *arg);
int ecopy_flush(struct ecopy *c, tsr_cb cb, void *arg);
int ecopy_stage(struct ecopy *c, const struct tsr_stage_entry *en, const void *buf, tsr_cb cb,
		void *arg);
int ecopy_commit(struct ecopy *c, uint64_t txn, tsr_cb cb, void *arg);
int ecopy_release(struct ecopy *c, uint64_t upto, tsr_cb cb, void *arg);
/* cb(arg, status, entries, n); local: called before returning. */
int ecopy_stage_list(struct ecopy *c, tsr_peer_stage_list_cb cb, void *arg);
int ecopy_snap(struct ecopy *c, const struct tsr_snap_req *req, tsr_cb cb, void *arg);
/* Local operations that met a full io queue go again (ec_copy.c). */
void ec_io_kick(struct ec *e);
/* copyset_connect, copyset_disconnect (1 returned: local, open). */
int ecopy_connect(struct ecopy *c, tsr_cb cb, void *arg);
void ecopy_disconnect(struct ecopy *c);
/* open and IN_SYNC: chunks may be read from it */
bool ecopy_readable(const struct ecopy *c);
/* open and IN_SYNC or RESYNCING: takes part in writes */
bool ecopy_writable(const struct ecopy *c);

/* ---- the layout ------------------------------------------------------------ */

struct etxn;
struct ehost;
struct escrub;
struct esnap;

enum ec_crash { EC_CRASH_NONE = 0, EC_CRASH_STAGED, EC_CRASH_COMMITTED, EC_CRASH_ACKED };

struct ec {
	struct copyset cs; /* what copyset.c reads of the layout (set at create) */
	/* immutable after create, but for size, nstripes, chunk_size and
	 * nregions: grown on the home worker only (ec.c ec_resize); size is read
	 * by other threads through ec_size (atomic) */
	char name[64];
	uint64_t size;    /* volume bytes */
	unsigned k, m, n; /* n = k + m = copies */
	uint32_t unit;    /* stripe unit */
	uint64_t width;   /* k * unit */
	uint64_t nstripes;
	uint64_t chunk_size; /* chunk volume bytes: nstripes * unit */
	struct tsr_layout *layout; /* ours (tsr_layout_new), set before the first request */
	uint64_t epoch;
	char node_id[64];
	char token[128];
	char state_dir[PATH_MAX];
	struct tsr_store *store;
	struct tsr_worker *home;
	struct tsr_io *io; /* the home worker's */
	pthread_t home_thread;
	unsigned min_in_sync;
	unsigned peer_timeout_ms;
	unsigned write_wait_ms;
	uint64_t resync_rate;
	uint32_t region_size; /* chunk-volume bytes per bitmap region (>= unit) */
	unsigned region_shift;
	uint64_t nregions;
	bool converge;
	struct tsr_layout_hooks hooks;
	struct tsr_ec_codec *codec;
	struct mirror *bmhost; /* the bitmaps' host (see the file comment) */
	/* fault switch (ec.h): armed until the first partial-stripe write */
	enum ec_crash crash_kind;
	unsigned crash_n;
	bool crash_armed;
	uint64_t crash_at_ns; /* EC_CRASH_ACKED: kill at this time (ec_release_tick), 0: not due */

	struct ecopy copies[TSR_LAYOUT_MAX_COPIES];
	unsigned n_copies;
	/*
	 * Where each copy is, for threads other than the home worker: written
	 * by ec_publish under cs.status_lock with the status (whose copies[]
	 * give node id and state), read under it by the existence check of a
	 * snapshot export (ec_snapread.c snap_exists).
	 */
	struct ec_place {
		char address[128];
		bool local;
	} places[TSR_LAYOUT_MAX_COPIES];

	bool fence_req; /* tsr_layout_fence was called (atomic, any thread) */

	/* home worker state */
	bool ready, fenced, closing;
	int timer_fd;
	struct slock *locks_held, *locks_wait, *locks_wait_tail;
	struct ehost *stalled, *stalled_tail; /* host writes waiting for min_in_sync */
	uint32_t txn_counter;                 /* low half of the next txn id */
	struct etxn *unfinished;              /* txns with an id, not finished */
	uint64_t released_upto;               /* last RELEASE sent to the copies */
	/* admission (ec_io.c): txns past their lock, <= EC_TXN_ACTIVE */
	unsigned txn_active;
	uint64_t active_bytes; /* sum of the active txns' weights (ec_io.c txn_weight) */
	unsigned acked_txns;   /* txns acknowledged, commits not all answered (ec_io.c txn_ack) */
	struct etxn *admit_wait, *admit_wait_tail; /* lock held, waiting, FIFO */
	/* journal drain (ec_io.c): admission stopped until every copy released
	 * everything up to the newest txn */
	bool draining;
	bool drain_sent;     /* the drain's RELEASE went out */
	uint64_t drain_txns; /* txns admitted since the last drain */
	uint64_t journal_drains;
	unsigned finished_since_release;
	uint64_t last_release_ns;
	unsigned releases_inflight;
	struct escrub *scrub;
	struct ecop *io_waiters, *io_waiters_tail; /* local ops waiting for io queue room */
	/*
	 * Snapshot cut: while snap_holding, resync and scrub start no new
	 * stripe (their writes would make the store refuse the cut, -EBUSY);
	 * the cut goes once bg_ops, their stripes in flight, is 0.
	 */
	bool snap_holding;
	struct esnap *snap_pending; /* waiting for bg_ops == 0 */
	unsigned bg_ops;
	bool scrub_parked; /* scrub waiting for the cut to end */
	bool replace_running;
	unsigned replace_idx;
	uint64_t local_retry_ns;
	unsigned start_pending;
	int start_status; /* create waits on cs.sem for it */

	/* counters (home worker) */
	uint64_t n_writes, n_reads, write_errors, copy_failures, degraded_reads;
	uint64_t txn_rolled_forward, txn_rolled_back;
	uint64_t resync_bytes_copied, resync_regions_copied;
	uint64_t resync_total, resync_done; /* stripes */
	bool resync_running;
	double resync_rate_bps;
	uint64_t rate_last_bytes, rate_last_ns;
	uint64_t scrub_total, scrub_done, scrub_mismatches, scrub_repaired, scrub_unrepaired;
	bool scrub_running, scrub_finished;
};

/* ec.c */
void ec_get(struct ec *e);
void ec_put(struct ec *e);
uint64_t ec_now_ns(void);
unsigned ec_in_sync(const struct ec *e);
void ec_publish(struct ec *e);
/* A copy failed (error, timeout, on_fail): OUT_OF_SYNC + hook (before ready:
 * no hook, the start-up records it if it succeeds).  -ESTALE fences. */
void ec_copy_failed(struct ecopy *c, int err);
void ec_fence_now(struct ec *e, const char *why);
bool ec_fence_requested(struct ec *e);
/* Ask the metadata store to record st for c; w (may be NULL) waits for it. */
void ec_hook_request(struct ecopy *c, enum tsr_copy_state st, struct waiter *w);
/* Chunk-volume byte range of stripe s (one chunk). */
static inline uint64_t ec_chunk_off(const struct ec *e, uint64_t stripe)
{
	return stripe * e->unit;
}

/*
 * ec_io.c.  ec_col_read: fill bufs[p * len ..] for every position p set in
 * want with column [col, col+len) of stripe s's chunk p, reading those
 * positions from their IN_SYNC copies and, for the ones that cannot be read
 * (not IN_SYNC, error, bit set in exclude), reading others until k are
 * present and decoding.  The caller holds the stripe lock.  bufs: n * len
 * bytes, 4 KiB aligned.  flags: EC_COL_DIRECT reads every chunk with
 * ecopy_read_direct (the copies' disks, not their page caches: resync and
 * rebuild, which read each stripe once), 0 through the page cache (host
 * reads and the read-modify-write of host writes).  done(arg, status,
 * present): present = positions read or decoded (a superset of want on
 * success).  0 or -errno (then done never fires).
 */
#define EC_COL_DIRECT 1u
int ec_col_read(struct ec *e, uint64_t stripe, uint32_t col, uint32_t len, uint32_t want,
		uint32_t exclude, unsigned flags, uint8_t *bufs,
		void (*done)(void *arg, int status, uint32_t present), void *arg);
int ec_read(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len, void *buf, tsr_cb cb_fn,
	    void *cb_arg);
int ec_read_direct(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len, void *buf,
		   tsr_cb cb_fn, void *cb_arg);
int ec_write(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len, const void *buf,
	     unsigned flags, tsr_cb cb_fn, void *cb_arg);
int ec_flush(void *ctx, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg);
int ec_trim(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len, tsr_cb cb_fn,
	    void *cb_arg);
int ec_write_zeroes(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len, unsigned flags,
		    tsr_cb cb_fn, void *cb_arg);
/* Host writes waiting for min_in_sync: go (a copy is back) or expire. */
void ec_kick_stalled(struct ec *e);
void ec_expire_stalled(struct ec *e, bool all);
/* Tick: batched RELEASE when due. */
void ec_release_tick(struct ec *e, uint64_t now_ns);
/* Journal drain thresholds (ec_io.c; tests lower them): admitted txns, and
 * estimated journal bytes on one copy, between two drains. */
extern uint64_t ec_drain_txns;
extern uint64_t ec_drain_bytes;

/* ec_resync.c */
void ec_resync_start(struct ecopy *c);
void ec_resync_abort(struct ecopy *c);
void ec_resync_tick(struct ec *e, uint64_t now_ns);

/* ec_scrub.c */
int ec_scrub_begin(struct ec *e, bool repair, void (*done)(void *arg, int status), void *arg);
void ec_scrub_abort(struct ec *e);

/* ec_scrub.c: a parked scrub goes on (the cut is over). */
void ec_scrub_unpark(struct ec *e);

/* ec_snap.c */
int ec_snap(void *ctx, const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg);
/* A resync or scrub stripe is done: a waiting cut may go. */
void ec_bg_done(struct ec *e);
/*
 * Snapshot operations a copy missed (a CREATE or DELETE it did not do),
 * state_dir/<vol>.<node_id>.snaps, replayed when it returns (ec_snap.c).
 * ec_missed_pending: the copy has entries waiting (it serves no snapshot reads
 * meanwhile).  A replay: ec_missed_begin (the entries now; empty: nothing to
 * do), ec_missed_delete (each name deleted on the copy), ec_missed_makeup
 * (each snapshot whose last missed operation is a CREATE decoded into the
 * copy's dirty regions and cut there: only while it is OUT_OF_SYNC, its
 * dirty stripes listed), ec_missed_end (the entries dropped when done).  The
 * two steps call done(arg, 0 or -errno) once, on the home worker.
 */
struct ec_missed;
bool ec_missed_pending(const struct ec *e, const struct ecopy *c);
/* The same by node id, from any thread (a file's existence). */
bool ec_missed_pending_node(const struct ec *e, const char *node_id);
/* Control thread, before a replace gives node_id a slot: every snapshot of
 * this node's chunk copy (when it is IN_SYNC with nothing missed) noted as a
 * missed CREATE of node_id, oldest first, so the rebuild makes each up
 * (stage 2b); without such a copy, recorded's lines (tsr_layout_copy.missed,
 * may be NULL).  The number noted, or -errno. */
int ec_missed_note_all(struct ec *e, const char *node_id, const char *recorded);
/*
 * At attach: a copy's operations as the metadata store records them
 * (tsr_layout_copy.missed) become its file when it has none.  A file that
 * exists is this node's own as the last coordinator (attach.c removes it when
 * another node coordinated last): it is kept, it is the authority (fsynced
 * before each operation is answered, like the record; a replay's progress
 * reaches the file first).  How many noted, or -errno.
 */
int ec_missed_adopt(struct ec *e, const char *node_id, const char *recorded);
/* node_id's file removed (its slot went to another node, or a replace
 * giving it one failed before it existed).  Home worker, or the control
 * thread for a node whose file nothing else uses. */
void ec_missed_forget(struct ec *e, const char *node_id);
int ec_missed_begin(struct ecopy *c, struct ec_missed **out);
bool ec_missed_empty(const struct ec_missed *m);
struct ecopy *ec_missed_copy(const struct ec_missed *m);
int ec_missed_delete(struct ec_missed *m, tsr_cb done, void *arg);
int ec_missed_makeup(struct ec_missed *m, tsr_cb done, void *arg);
void ec_missed_end(struct ec_missed *m, bool done);

/* ec_snapread.c: the image of snapshot snap read from the copies' snapshots
 * (as VOL@SNAP is served), on e's home worker; tsr_layout_destroy frees it. */
int ec_snap_image(struct ec *e, const char *snap, struct tsr_layout **out);

#endif
