/*
 * Geo-replication source: one replicated volume's stream to the target site
 * (site.h "source side", DESIGN.md "Geo-replication", issue 7).
 *
 * Everything runs on one worker, shared-nothing: the volume's home, or
 * (split, "Pump worker" below) all but the hooks on another one.  The
 * volume's taps (tsr_vol_set_hooks) call log_write / log_zero just before
 * each host acknowledgment, so the ordered log below is in ack order.  The
 * same thread drives one non-blocking TCP + TLS session (connect, TLS
 * handshake, HELLO, VOLUME_OPEN) and ships the log:
 *
 *   log      entries (WRITE with a copy of the data, ZERO, SYNC_END marker)
 *            in ack order.  An entry takes its wire seq when first sent and
 *            keeps it, so after a reconnect the entries past the target's
 *            applied seq A go again with the same numbers.  ACK(seq) frees
 *            entries up to seq.
 *   dirty    bitmap of regions (region_size) to re-copy.  When the log's
 *            data passes log_max_bytes every entry held (sent or not) turns
 *            into dirty bits and later writes only mark bits (log_on false,
 *            state "behind"); an initial copy starts with the allocated
 *            extents (tsr_vol_block_status) dirty and logging off.
 *   sync     with logging off and a session up: SYNC_BEGIN, then the dirty
 *            regions re-read LIVE from the volume (tsr_vol_read) as WRITE
 *            frames (ZERO when all zero), while logging is on again; the
 *            SYNC_END marker is appended to the log when the last region
 *            read completes, and the log (writes acked during the sync,
 *            then SYNC_END) ships only after the last region frame.  At
 *            SYNC_END every block equals its value at that read: a region
 *            read after a write contains it, every write acked after
 *            SYNC_BEGIN is in the log and applied after the region copies.
 *   resume   VOLUME_OPEN's reply seq A: if the log holds exactly A+1..
 *            (nothing else went on the wire after A), resend from there
 *            (and append SYNC_END when the reply has TSR_SITE_F_REPLAY);
 *            otherwise (overflowed, a sync was cut, an initial copy) the
 *            log and the cut sync's regions become dirty bits, numbering
 *            restarts at A+1 and a sync runs.
 *   digests  (opts.compare_digests, 64 KiB regions) a session that will
 *            sync sets TSR_SITE_F_DIGEST in VOLUME_OPEN; after the reply the
 *            target sends the SHA-256/16 digest of each of its regions
 *            (state SESS_DIGEST) and the open completes at their end.  The
 *            sync then skips every region whose live read hashes to the
 *            target's digest (region_bytes_same): the target holds those
 *            bytes already, as sending them would have made it.  Holes here
 *            join the sync only where the target's digest is not that of
 *            zeros.  Digests hold for one session.  This is what makes a
 *            failback or a source restart ship only the regions that differ.
 *
 * Flow control: at most SRC_WINDOW bytes of frames sent and not ACKed (a
 * BARRIER goes out as soon as the window is full; ACK frees it, credited at
 * the barriers' checkpoints), a token bucket for max_bps refilled from a
 * periodic timerfd (SRC_TICK_MS) that also drives barriers (barrier_ms),
 * retries (retry_ms) and the throughput estimate.  Counters are copied to
 * s->pub under stats_lock at most once per loop pass (a call deferred to after
 * the pass submitted its disk I/O, tsr_worker_defer_after_submit) and
 * at each tick.  Window and token bucket count bytes on the wire.
 *
 * Send batching (opts.send_batch): a host write's log entry starts a send in
 * the same loop pass only once send_batch bytes were logged since the last
 * send; below that the tick sends them (at most SRC_TICK_MS later).  One TLS
 * write and one wake-up of the target per batch instead of per few writes:
 * it halves the target's CPU per write at QD1, for up to 10 ms more lag.
 *
 * Compression (opts.compress, announced in VOLUME_OPEN): tx_begin compresses
 * every WRITE payload (log entry or region) into cbuf and sends that with
 * flag COMPRESSED when it is smaller, else the raw payload; the CRC covers
 * what is sent.  compress_in/out count both kinds (the ratio shown).
 *
 * Consistency groups (opts.group): every source of a group runs on the
 * group's one worker (the cluster pins the members' volumes there; another
 * worker is -EXDEV at start).  On that thread the taps of all members run
 * in their ack order, so a MARKER entry appended to every member's log in
 * one call (group_mark) is a cut of the group's merged ack history: every
 * write acked before it is before it in every log, every later one after.
 * A marker goes in every group_interval_ms (200) and as soon as one member
 * logged more than SRC_WINDOW / 4 bytes since the last one, so a whole
 * interval always fits in the flow-control window (the target holds an
 * interval until every member has its end).  Marker numbers come from a
 * counter persisted in opts.marker_file (site_marker.c: reserved in batches,
 * at least the wall clock in microseconds at start), so they keep growing
 * across a restart of the source even with the clock stepped back.  A member whose log is off (overflowed,
 * initial copy) gets no markers until its sync starts logging again.
 *
 * Pump worker (opts.pump_worker, issue 7): the log, the session and the
 * pump run on a worker other than the volume's home ("split"), so that the
 * CRC, the TLS encryption and the sends of each 256 KiB no longer hold the
 * only thread that reaps the volume's completions and reads its NBD
 * requests.  On home the hooks only copy each change into an entry
 * (ho_change) and append it to a list of their own; once per loop pass of
 * home (after its submit) the list goes to the pump worker in one message
 * (handover; tsr_worker_send's queue is FIFO), where log_take does with each
 * entry what log_change does on one thread.  So the log stays in ack order
 * and the target a prefix of the acked history.  Bounds: WRITE data in
 * flight between the threads above log_max becomes an OVER entry (the log
 * overflows into the bitmap when it is taken in), a range no frame carries
 * a MARK entry.  Region reads go to home (region_read_home) and their
 * result back; home sends its pending entries first, so SYNC_END (appended
 * at the last read's completion) follows every write acked before that
 * completion.  Stop: unhook_fn on home (no more hooks, the last entries
 * sent), then stop_fn on the pump worker, which takes them in (freed with
 * the log).  A group's sources never split: their markers cut the members'
 * logs on one thread.
 *
 * An ERROR -ESTALE to VOLUME_OPEN (the target was promoted) demotes the
 * source: host writes fenced with -EROFS, state "split", on_demoted once,
 * no more sessions.  Other ERRORs and link loss close the session (logged,
 * last_error) and retry after retry_ms; sooner after EBUSY / EINPROGRESS
 * during a grow (SRC_GROW_RETRY_NS), and after EINPROGRESS to a VOLUME_OPEN
 * otherwise (the DR creating the target: SRC_OPEN_RETRY_NS, doubling; the DR
 * attaching it, "being attached": SRC_ATTACH_RETRY_NS, fixed).
 *
 * State shown (first that applies): split, paused, behind (an overflow's
 * regions are not all re-read yet, also while they ship), syncing (an
 * initial copy or a resync after a cut), connecting (no session), streaming.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "site/server_internal.h"
#include "tessera/site.h"
#include "tessera/test_hook.h"
#include "tessera/vol.h"
#include "tessera/worker.h"

#define SRC_WINDOW      (8u << 20) /* frame bytes sent and not ACKed */
#define SRC_TICK_MS     10u        /* timer period */
#define SRC_READ_MAX    (1u << 20) /* one region read / region frame */
#define SRC_ZERO_MAX    (1u << 30) /* bytes one ZERO frame covers */
#define SRC_ENTRY_COST  64u        /* log bound: per-entry overhead counted */
#define SRC_CHECKPOINTS 64u        /* barrier checkpoints kept for the window */
#define SRC_GROW_RETRY_NS (100 * NS_PER_MS) /* a grow's retries after EBUSY (the target's
					      * old session closing) or EINPROGRESS (the target
					      * growing): this far apart (at most retry_ms),
					      * until the grow's deadline */
#define SRC_OPEN_RETRY_NS (100 * NS_PER_MS) /* VOLUME_OPEN answered EINPROGRESS (the
					      * target creating its volume, or growing it
					      * for a source not growing): the first retry
					      * this far, doubled per answer up to retry_ms */
#define SRC_ATTACH_RETRY_NS (200 * NS_PER_MS) /* VOLUME_OPEN answered EINPROGRESS
					      * "being attached" (the DR opens the
					      * target's copies, off its loop): retried
					      * this far, fixed, not doubled (an attach
					      * takes milliseconds unless a DR node does
					      * not answer); the doubling of "being
					      * created" starts again after it */
/* That many "being attached" answers in a row are retried after
 * SRC_ATTACH_RETRY_NS (1 s: a normal attach); later ones after twice the
 * last, up to retry_ms: an attach waiting for a DR node that does not answer
 * lasts its peer timeout, then fails and begins again for as long as the node
 * stays away (review 17b: 5 reconnects a second meanwhile, each a TLS
 * handshake and a WARN line at the DR). */
#define SRC_ATTACH_FIXED 5u
#define SRC_BATCH       (256u << 10) /* staging buffer: frames packed for one TLS write */
#define SRC_SEND_BATCH  (256u << 10) /* default opts.send_batch */
#define SRC_SLAB        (256u << 10) /* log entries' frames (header slot, data) back to back */
#define SLAB_CAP        (SRC_SLAB - offsetof(struct slab, buf)) /* in one mapping of SRC_SLAB */
/* Empty slabs kept on the free list at most, in bytes (less when log_max is less).
 * A streaming log swings by a window and more between two ACKs: the window
 * is sent, and writes pile up behind it until its BARRIER's ACK frees it
 * at once.  With only one window kept (8 MiB, until session 19) the rest
 * of each swing came from malloc, and the worker's heap grew and shrank
 * (mprotect, fresh pages) hundreds of times a second under a normal lag. */
#define SRC_POOL_BYTES  (2 * SRC_WINDOW + SRC_SEND_BATCH)
/* A log that stayed empty this long, with no slab taken meanwhile, gives
 * its memory back (pool_trim): the free list's slabs, the slab being filled
 * when nothing is in it, the spare entry records.  Checked at the tick, so
 * nothing is added per write, and never while a stream keeps entries in
 * the log (a streaming log is empty only between an ACK and the next
 * write, never for a whole 2 s). */
#define SRC_TRIM_MS     2000u
#define SRC_BATCH_COPY  (64u << 10)  /* a frame up to this size is copied into the batch
				      * whole (a log entry's goes from its slab); a
				      * larger one: only its header, then its payload
				      * goes to TLS from where it is */
/* split: an entry of a host write up to this size has this much room, and
 * the pump worker hands the freed ones back to home (rc_stack) instead of
 * free(): a 4 KiB write's entry is not a malloc on one thread and a free on
 * the other (glibc: both under the home arena's lock), at most HO_RC_MAX of
 * them kept (the pool's bytes, SRC_POOL_BYTES). */
#define HO_SMALL        TSR_BLOCK_SIZE
#define HO_RC_MAX       (SRC_POOL_BYTES / HO_SMALL)
/* split: the ack times of this many batches handed over and not taken in
 * are kept for lag_sec (ho_fly_ns); past that a batch's time is not kept,
 * and the slot's older one stands for it (the lag shown errs long) */
#define HO_FLY_SLOTS 64
/* split: at most this many entries other than WRITE (ZERO, MARK, OVER: no
 * data, about 100 bytes each) on home and in flight; past it home marks the
 * regions of each change in a bitmap of its own (an ENT_BITS entry), and
 * one such bitmap at most is in flight (review s20-revM B4) */
#define HO_RANGE_MAX    4096
#define NS_PER_MS       1000000ull
#define NS_PER_SEC      1000000000ull

/* ENT_MARK, ENT_OVER and ENT_BITS only travel from the hooks to the pump
 * worker (split source, see "Pump worker" above) and never enter the log: a
 * range for the dirty bitmap, not block-aligned (MARK, as log_change's
 * log_to_dirty) or over the handover's bound or out of memory (OVER, an
 * overflow as log_room's); BITS: the regions of the changes made past
 * HO_RANGE_MAX (wire: a bitmap of offset regions, malloc'd), an overflow
 * too. */
enum ent_kind { ENT_WRITE, ENT_ZERO, ENT_SYNC_END, ENT_MARKER, ENT_MARK, ENT_OVER, ENT_BITS };

/*
 * Where the log entries of up to SRC_BATCH_COPY data bytes (and every ZERO)
 * keep their frames: each takes the next TSR_SITE_HDR_SIZE + data bytes,
 * the header slot filled when the entry is sent, so the frames of entries
 * logged one after the other lie back to back and go to TLS from here in
 * one gathered write (a "run"), not copied into the send batch first.  refs:
 * the entries in it, the run that reads it, and 1 while it is the slab
 * being filled; at 0 it goes back to the free list (or is freed).
 */
struct slab {
	struct slab *next; /* free list */
	uint32_t refs;
	uint32_t used;     /* bytes handed out */
	uint8_t buf[];     /* SLAB_CAP bytes (the mapping's rest) */
};

struct log_entry {
	struct log_entry *next; /* later in ack order */
	uint64_t seq;           /* wire seq from its first send on (kept), 0 before;
				 * MARK / OVER: the range's end (bytes) */
	uint64_t offset;        /* WRITE/ZERO: bytes, 4 KiB aligned; MARKER: its number */
	uint32_t len;           /* WRITE: data bytes (<= TSR_SITE_MAX_DATA); ZERO: bytes covered */
	uint8_t kind;           /* enum ent_kind */
	bool small;             /* split: made by ho_change with HO_SMALL data bytes of
				 * room, recycled to home (rc_*), not freed */
	uint64_t acked_ns;      /* monotonic time the host got its ack */
	struct slab *slab;      /* holds the frame (wire), or NULL: data[] holds the data */
	uint8_t *wire;          /* in slab: the header slot, then WRITE's len data bytes */
	uint8_t data[];         /* WRITE not in a slab: len bytes */
};

enum sess_state {
	SESS_IDLE,    /* no connection; connect at retry_at */
	SESS_CONNECT, /* TCP connect in progress */
	SESS_TLS,     /* TLS handshake */
	SESS_HELLO,   /* HELLO sent, waiting for the reply */
	SESS_OPEN,    /* VOLUME_OPEN sent, waiting for the reply */
	SESS_DIGEST,  /* the reply came; receiving the target's region digests */
	SESS_READY,   /* streaming */
	SESS_DEAD,    /* demoted or stopping: never again */
};

enum tx_kind { TX_NONE, TX_CTL, TX_ENTRY, TX_REGION };

struct checkpoint {
	uint64_t seq; /* a BARRIER's seq */
	uint64_t cum; /* cum_sent when it went */
};

/*
 * A consistency group's sources in this process.  name, members, worker
 * and refs under g_groups_lock (start / stop, control thread); mem, n,
 * mark and next_ns on worker only (mark opened by the first member's start).
 */
struct src_group {
	char name[TSR_SITE_NAME_MAX + 1];
	unsigned members;          /* the member count announced (VOLUME_OPEN, MARKER) */
	struct tsr_worker *worker; /* every member's home */
	unsigned refs;             /* sources started with this group */
	struct tsr_site_source *mem[TSR_SITE_GROUP_MAX]; /* hooked members (worker) */
	unsigned n;
	uint64_t interval_ns;      /* period of the markers */
	struct site_mark mark;     /* the marker numbers (site_marker.c) */
	uint64_t next_ns;          /* when the next one is due (monotonic) */
	struct src_group *next;
};

static pthread_mutex_t g_groups_lock = PTHREAD_MUTEX_INITIALIZER;
static struct src_group *g_groups;

struct tsr_site_source {
	/* ---- immutable after start ---- */
	struct tsr_vol *vol;       /* the caller's handle (held until stop returns) */
	struct tsr_worker *worker; /* the pump worker: everything below "worker only" runs
				    * there (opts.pump_worker, else vol's home) */
	struct tsr_worker *home;   /* vol's home: its hooks and the region reads run there */
	bool split;                /* worker != home: the hooks hand their entries over */
	struct tsr_site_tls_ctx *tls;
	struct sockaddr_storage addr; /* resolved at start */
	socklen_t addrlen;
	char address[256];
	char peer_name[256];
	struct tsr_site_hello hello; /* ours */
	struct tsr_site_open open;   /* target volume + layout */
	uint64_t stream, epoch;
	uint64_t vol_size;
	uint64_t log_max;     /* bound on data bytes + SRC_ENTRY_COST per entry */
	uint32_t region_size; /* power of 2 >= 4 KiB */
	unsigned region_shift;
	uint64_t n_regions;
	uint64_t max_bps; /* 0: no cap */
	uint64_t barrier_ns, retry_ns;
	void (*on_demoted)(void *arg, const char *why);
	void *cb_arg;

	/* ---- any thread ---- */
	pthread_mutex_t stats_lock; /* guards pub only */
	struct tsr_site_source_stats pub;
	uint64_t pub_oldest_ns; /* with pub: the oldest ack time publish saw (log
				 * head, dirty), 0: none (split: ho_view_read) */
	atomic_bool pause_req; /* tsr_site_source_pause's wish; the worker adopts it */
	/* split: bytes of WRITE data handed over to worker and not taken in yet
	 * (home adds, worker subtracts): with log_max the bound of the entries
	 * in flight between the threads */
	_Atomic uint64_t ho_bytes;
	/* split, the lag the worker has not taken in yet (review s20-revM B5;
	 * read by tsr_site_source_stats, any thread): ho_lag_bytes, bytes the
	 * entries on home and in flight change (WRITE data and MARK / OVER
	 * ranges, as log_bytes and dirty_bytes count them; home adds, worker
	 * subtracts); ho_home_ns, the ack time of the oldest on home (0: none;
	 * home writes); batch k handed over has the ack time of its first in
	 * ho_fly_ns[k % HO_FLY_SLOTS] (home writes it before ho_sent_n counts
	 * k; the worker counts ho_taken_n once k is in its log) */
	_Atomic uint64_t ho_lag_bytes;
	_Atomic uint64_t ho_ranges; /* split: entries other than WRITE on home and in flight
				     * (home adds, worker subtracts): handover_ranges */
	_Atomic uint64_t ho_home_ns;
	_Atomic uint64_t ho_sent_n, ho_taken_n;
	_Atomic uint64_t ho_fly_ns[HO_FLY_SLOTS];
	atomic_bool ho_pull_sent; /* split: ho_pull queued on home (worker sets, home clears) */
	atomic_bool ho_bits_fly;  /* split: an ENT_BITS entry handed over and not taken in
				   * (home sets, worker clears): home sends no other */
	/* ---- home only (split) ---- */
	struct log_entry *ho_head, *ho_tail; /* entries the hooks made, ack order, not
					      * handed over yet */
	uint64_t ho_pending;  /* WRITE data bytes in them */
	uint64_t ho_unsent;   /* bytes they change (send_batch starts a handover) */
	uint64_t ho_lag_pending;    /* their share of ho_lag_bytes (with ho_lost_*) */
	uint64_t ho_ranges_pending; /* their share of ho_ranges */
	struct log_entry *ho_bits;  /* the ENT_BITS entry in that list being filled, or NULL */
	bool ho_deferred;     /* handover() queued for this pass of home */
	bool ho_unhooked;     /* the hooks are gone (stop): no more handovers */
	uint64_t ho_lost_off, ho_lost_end; /* a range no entry could be made for (out of
					    * memory): an ENT_OVER at the next chance; end 0: none */
	/* split, small entries going back to home: freed on worker onto
	 * rc_local (worker only), pushed onto rc_stack once per pass (rc_flush,
	 * one compare-and-swap), taken whole by home onto rc_home (one
	 * exchange) when it runs out; rc_count: entries in all three */
	struct log_entry *rc_local, *rc_local_tail;
	uint64_t rc_local_n;
	_Atomic(struct log_entry *) rc_stack;
	struct log_entry *rc_home;  /* home only */
	_Atomic uint64_t rc_count;
	int r_status;         /* split: the region read's status, home -> worker */
	bool r_back_lost;     /* split, home only: the read's result is not sent yet (out
			       * of memory): sent again at each ho_pull, and by stop */
	uint64_t r_first;     /* split: first region index of the read (an -EAGAIN retries it) */
	/* ---- worker only ---- */
	bool stopping;               /* stop began: hooks gone, no session, no new work */
	bool stop_wait_read;         /* stop waits for the region read in flight */
	struct sync_call *stop_call; /* stop's waiter, signalled by stop_finish */
	bool pass_deferred;          /* pass_end queued for this loop pass */
	bool paused;
	bool demoted;
	bool first_session_done; /* a session reached READY once */
	/* tsr_site_source_grow_async: vol_size is the new size, the session is
	 * being reopened to announce it; grow_old_size to go back to on a
	 * refusal.  grow_end ends it (once) and calls grow_cb. */
	bool grow_pending;
	bool grow_busy; /* the target answered EBUSY (its old session still
			 * closing) or EINPROGRESS (growing): the retry goes on growing */
	bool grow_told_growing; /* EINPROGRESS at least once in this grow (the deadline's
				 * sentence) */
	uint64_t grow_deadline_ns; /* tick_cb ends the grow -ETIMEDOUT from here (monotonic) */
	bool open_busy;          /* this session_fail: VOLUME_OPEN answered EINPROGRESS
				  * outside a grow (the target is creating its volume) */
	uint64_t open_busy_ns;   /* the retry's delay after such an answer: SRC_OPEN_RETRY_NS,
				  * doubled per answer, at most retry_ns; 0 after any other
				  * failure and once an open succeeds (on_open) */
	bool open_attach_retry;  /* this session_fail: that EINPROGRESS said the target
				  * is being attached (open_answer_attaching): the retry
				  * after SRC_ATTACH_RETRY_NS, open_busy_ns 0 */
	unsigned open_attach_n;  /* such answers in a row (SRC_ATTACH_FIXED); 0 after any
				  * other failure and once an open succeeds */
	tsr_site_grow_fn grow_cb;  /* the caller's answer (grow_pending only) */
	void *grow_arg;
	uint64_t grow_old_size;
	bool running;            /* go_fn ran: sessions may start (not before: the
				  * initial copy's regions are merged first) */
	int tfd;                 /* timerfd, watched */
	uint64_t send_batch;     /* logged bytes that start a send at once */
	uint64_t unsent_new;     /* bytes logged since the last pump */

	bool log_on;                   /* hooks append to the log (false: mark dirty only;
					* then the log is empty) */
	bool behind;                   /* an overflow's regions are not all re-read yet */
	struct log_entry *head, *tail; /* the log, ack order; sent entries first */
	struct log_entry *cursor;      /* next entry to send this session, NULL: none */
	struct log_entry
	    *tx_orphan; /* entry being sent after its log was dropped; freed at tx end */
	uint64_t log_entries, log_bytes;
	uint64_t log_cost; /* the log bound's count of the entries: data outside slabs and
			    * SRC_ENTRY_COST each (log_room adds the slabs in use) */
	/* empty slabs, kept up to pool_max bytes, and freed entries of slabs
	 * (their bookkeeping only), kept as many until the log has been idle
	 * for SRC_TRIM_MS (trim_tick): a steady stream of small
	 * writes takes its log entries from here instead of malloc (whose
	 * top-of-heap trims and regrowths showed in the profile) */
	struct slab *slab_cur;  /* being filled, or NULL */
	struct slab *slab_free;
	struct log_entry *meta_free;
	uint64_t meta_free_n;
	uint64_t pool_bytes; /* slab bytes on the free list */
	uint64_t pool_max;   /* at most: SRC_POOL_BYTES, or log_max when less */
	uint64_t log_allocs; /* slabs mapped and WRITE entries taken from malloc */
	uint64_t slab_bytes; /* slabs mapped (in the log, the run, slab_cur, the free list) */
	uint64_t slab_takes; /* slabs made slab_cur (slab_take), for the idle trim */
	uint64_t trim_takes; /* slab_takes at the last tick (trim_tick) */
	uint64_t idle_since_ns; /* the log empty and no slab taken since (trim_tick) */
	unsigned trim_ms;       /* SRC_TRIM_MS; tests only: $TSR_TEST_SITE_TRIM_MS (100..), read at start */

	uint64_t *dirty;         /* n_regions bits */
	/* initial copy: the regions holding holes (n_regions bits), or NULL.
	 * A target that already has history (applied > 0 at the first
	 * VOLUME_OPEN: a restart of this source) may hold data where the
	 * volume now has a hole (a trim acked and never shipped before the
	 * crash), so these regions are re-copied too (as ZERO frames where
	 * they read as zeros); a new target reads holes as zeros already. */
	uint64_t *holes;
	uint64_t dirty_count;    /* bits set in dirty */
	uint64_t dirty_since_ns; /* ack time of the oldest change only in dirty (0: none) */

	bool sync_active;               /* between SYNC_BEGIN sent and the last region frame */
	uint64_t *sync_bits;            /* the regions of the last sync; NULL: none open */
	uint64_t sync_count;            /* bits in sync_bits */
	uint64_t sync_next;             /* next region index to read */
	uint64_t sync_end_seq;          /* SYNC_END's wire seq, 0 until sent */
	bool sync_end_logged;           /* the SYNC_END entry is in the log */
	uint64_t sync_total, sync_done; /* bytes */

	uint8_t *rbuf; /* SRC_READ_MAX, aligned: one region read */
	bool read_inflight;
	unsigned read_gen; /* bumped to drop a read's result */
	unsigned read_gen_issued;
	bool rbuf_ready; /* rbuf holds a read to send */
	bool rbuf_in_tx; /* tx is sending rbuf */
	uint64_t r_off;
	uint32_t r_len;
	uint32_t r_pos;  /* bytes of rbuf sent (frames per run of zero/data regions) */
	uint32_t tx_len; /* bytes the region frame in tx covers */
	bool r_last;     /* the sync's last read */

	enum sess_state sess;
	int fd; /* -1 when none */
	struct tsr_site_tls *t;
	uint32_t events; /* watched epoll events on fd (0: not watched) */
	struct tsr_site_rx rx;
	struct tsr_site_tx tx;
	enum tx_kind txk;           /* what tx carries (TX_NONE: idle) */
	struct log_entry *tx_entry; /* TX_ENTRY */
	uint64_t tx_seq;            /* its wire seq (0: BARRIER / control) */
	uint32_t tx_payload;        /* payload bytes on the wire (compressed or raw) */
	bool tx_barrier;            /* the frame is a BARRIER */
	bool tx_region;             /* a region re-copy frame */
	short tx_want;              /* POLLIN/POLLOUT after tx's last -EAGAIN */
	uint8_t ctl_buf[TSR_SITE_OPEN_MAX + TSR_SITE_HELLO_MAX];
	/* the send batch: whole frames not in a slab (control, region and
	 * compressed frames; a large frame's header) packed back
	 * to back in send order, handed to TLS in one write when the pump
	 * stops or bb is full, so TLS cuts full 16 KiB records instead of two
	 * records (header, payload) per frame.  A frame copied here counts as
	 * sent (tx_finished): a session lost before the flush loses it as it
	 * would lose bytes in the socket buffer, and the resume rules cover
	 * both.  bb_sent < bb_len: a flush is under way (TLS wants the same
	 * start again); bytes are only appended behind it. */
	uint8_t *bb;        /* SRC_BATCH bytes */
	size_t bb_len;      /* bytes packed */
	size_t bb_sent;     /* of which handed to TLS */
	short bb_want;      /* POLLIN/POLLOUT after the flush's last -EAGAIN (bb or run) */
	/* the run: frames of log entries back to back in one slab (struct
	 * slab), handed to TLS from there like bb.  The run's frames come
	 * before bb's (batch_stage hands the run over first; a frame joins the
	 * run only while bb is empty), so frames leave in send order.  Counted
	 * as sent like bb's; run_slab's reference keeps the bytes until TLS
	 * took them, whatever ACKs or an overflow do to the entries meanwhile. */
	uint8_t *run;
	size_t run_len, run_sent;
	struct slab *run_slab; /* NULL: no run */
	uint64_t tls_writes; /* sends of the sessions before this one (tsr_site_tls_sends) */
	uint64_t retry_at_ns;
	bool replay; /* the open reply had TSR_SITE_F_REPLAY */

	uint64_t next_seq, sent_seq, acked_seq, barrier_seq;
	uint64_t last_barrier_ns;
	bool barrier_now;             /* send a BARRIER at the next chance */
	uint64_t cum_sent, cum_acked; /* frame bytes this session */
	struct checkpoint ckpt[SRC_CHECKPOINTS];
	unsigned n_ckpt;

	double tokens; /* token bucket (bytes), max_bps only */
	uint64_t tokens_ns;

	/* region digests (opts.compare_digests, region_size = TSR_SITE_DIGEST_REGION):
	 * a session that will sync asks the target for them in VOLUME_OPEN;
	 * the sync then skips every region whose content equals the target's */
	bool compare;            /* opts.compare_digests and the region size fits */
	bool dig_asked;          /* this session's VOLUME_OPEN carried TSR_SITE_F_DIGEST */
	bool dig_valid;          /* the list ended: this session's sync may skip */
	bool last_sync_compared; /* the last sync began with dig_valid */
	uint8_t *dig;            /* n_regions * TSR_SITE_DIGEST_LEN, when compare */
	uint64_t *dig_have;      /* n_regions bits: a digest arrived this session */
	uint8_t dig_zero[TSR_SITE_DIGEST_LEN]; /* digest of a whole zero region (compare) */
	uint64_t open_a;         /* the VOLUME_OPEN reply, held through SESS_DIGEST */
	bool open_replay;
	bool open_fresh;
	uint64_t region_bytes_same; /* region bytes found equal at the target, not sent */

	uint64_t bytes_shipped, region_bytes_shipped, frames_shipped, overflows, reconnects;
	uint64_t full_copies; /* sessions that found the target holding less than it ACKed */

	/* compression (opts.compress): tx_begin compresses each WRITE payload
	 * into cbuf and sends that instead when it is smaller */
	struct tsr_site_codec *codec; /* NULL: compression off */
	uint8_t *cbuf;                /* TSR_SITE_MAX_DATA bytes, with codec; tx's payload
				       * while tx_compressed */
	bool tx_compressed;           /* the frame in tx carries cbuf (flag COMPRESSED) */
	uint32_t tx_logical;          /* the frame in tx: payload bytes before compression */
	uint64_t compress_in, compress_out, frames_compressed; /* the stats' counters */
	uint64_t rate_mark_bytes, rate_mark_ns;
	double rate_bps;
	char last_error[TSR_SITE_LAST_ERROR_MAX];

	/* consistency group (opts.group), or NULL */
	struct src_group *group;
	uint8_t mk_buf[TSR_SITE_MARKER_MAX]; /* the MARKER payload (one frame in tx) */
	uint64_t bytes_since_marker;         /* logged since the last marker (worker) */
	uint64_t markers_sent;               /* MARKER frames sent */
	uint64_t last_marker_sent;           /* number of the last one sent */
	bool at_marker;                      /* the last log entry sent was a MARKER */
};

struct sync_call;
static void pump(struct tsr_site_source *s);
static void schedule_pass(struct tsr_site_source *s);
static void publish(struct tsr_site_source *s);
static void grow_end(struct tsr_site_source *s, int status, const char *msg);
static void session_fail(struct tsr_site_source *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

const char *tsr_site_state_name(enum tsr_site_state st)
{
	switch (st) {
	case TSR_SITE_CONNECTING:
		return "connecting";
	case TSR_SITE_SYNCING:
		return "syncing";
	case TSR_SITE_STREAMING:
		return "streaming";
	case TSR_SITE_BEHIND:
		return "behind";
	case TSR_SITE_PAUSED:
		return "paused";
	case TSR_SITE_SPLIT:
		return "split";
	}
	return "unknown";
}

/* ---- dirty bitmaps ---- */

static bool bit_test(const uint64_t *b, uint64_t i)
{
	return (b[i / 64] >> (i % 64)) & 1;
}

/* Set the bits of [offset, offset+len) in b; returns how many were new. */
static uint64_t bits_mark(const struct tsr_site_source *s, uint64_t *b, uint64_t offset,
			  uint64_t len)
{
	uint64_t first, last, i, added = 0;

	if (len == 0 || offset >= s->vol_size)
		return 0;
	if (len > s->vol_size - offset)
		len = s->vol_size - offset;
	first = offset >> s->region_shift;
	last = (offset + len - 1) >> s->region_shift;
	for (i = first; i <= last; i++) {
		if (!bit_test(b, i)) {
			b[i / 64] |= 1ull << (i % 64);
			added++;
		}
	}
	return added;
}

static void dirty_mark(struct tsr_site_source *s, uint64_t offset, uint64_t len, uint64_t t)
{
	s->dirty_count += bits_mark(s, s->dirty, offset, len);
	if (s->dirty_since_ns == 0 || (t != 0 && t < s->dirty_since_ns))
		s->dirty_since_ns = t ? t : (uint64_t)tsr_mono_ns();
}

/* dirty |= b */
static void dirty_merge(struct tsr_site_source *s, const uint64_t *b)
{
	uint64_t words = (s->n_regions + 63) / 64, i;

	s->dirty_count = 0;
	for (i = 0; i < words; i++) {
		s->dirty[i] |= b[i];
		s->dirty_count += (uint64_t)__builtin_popcountll(s->dirty[i]);
	}
	if (s->dirty_count && s->dirty_since_ns == 0)
		s->dirty_since_ns = tsr_mono_ns();
}

static size_t bitmap_bytes(const struct tsr_site_source *s)
{
	return (size_t)((s->n_regions + 63) / 64) * sizeof(uint64_t);
}

/* ---- the log ---- */

/* Whether an entry of kind with data bytes keeps its frame in a slab. */
static bool in_slab(uint8_t kind, size_t data)
{
	return (kind == ENT_WRITE || kind == ENT_ZERO) && data <= SRC_BATCH_COPY;
}

/* The data bytes e holds outside a slab (what the log bound counts for it
 * beside SRC_ENTRY_COST; an entry in a slab is counted by its slab, whole:
 * log_room). */
static uint64_t entry_data_cap(const struct log_entry *e)
{
	return e->slab == NULL && e->kind == ENT_WRITE ? e->len : 0;
}

/*
 * A fresh slab, mapped on its own rather than malloc'd: glibc serves 256 KiB
 * from its arena once its mmap threshold has grown past that (the first free
 * of a mapped chunk raises it), and a chunk freed in the middle of an arena
 * stays resident.  A slab unmapped (slab_unmap) is given back for real.
 */
static struct slab *slab_map(struct tsr_site_source *s)
{
	void *p = mmap(NULL, SRC_SLAB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	s->log_allocs++;
	s->slab_bytes += SRC_SLAB;
	return p;
}

static void slab_unmap(struct tsr_site_source *s, struct slab *sl)
{
	munmap(sl, SRC_SLAB);
	s->slab_bytes -= SRC_SLAB;
}

/* Drop a reference to sl (NULL ok): an unused slab goes onto the free list,
 * up to pool_max bytes of them, or is unmapped. */
static void slab_put(struct tsr_site_source *s, struct slab *sl)
{
	if (sl == NULL || --sl->refs > 0)
		return;
	if (s->pool_bytes + SRC_SLAB > s->pool_max) {
		slab_unmap(s, sl);
		return;
	}
	sl->next = s->slab_free;
	s->slab_free = sl;
	s->pool_bytes += SRC_SLAB;
}

/* n bytes right behind the last ones handed out, or at the start of a
 * fresh slab when they do not fit (a slab nothing else uses is filled from
 * its start again); a reference on it in *out.  NULL: out of memory. */
static uint8_t *slab_take(struct tsr_site_source *s, size_t n, struct slab **out)
{
	struct slab *sl = s->slab_cur;
	uint8_t *p;

	if (sl != NULL && sl->refs == 1)
		sl->used = 0;
	if (sl == NULL || sl->used + n > SLAB_CAP) {
		if ((sl = s->slab_free) != NULL) {
			s->slab_free = sl->next;
			s->pool_bytes -= SRC_SLAB;
		} else if ((sl = slab_map(s)) == NULL) {
			return NULL;
		}
		sl->refs = 1; /* the slab being filled */
		s->slab_takes++;
		sl->used = 0;
		slab_put(s, s->slab_cur);
		s->slab_cur = sl;
	}
	p = sl->buf + sl->used;
	sl->used += (uint32_t)n;
	sl->refs++;
	*out = sl;
	return p;
}

/* WRITE's data bytes. */
static uint8_t *entry_data(struct log_entry *e)
{
	return e->slab != NULL ? e->wire + TSR_SITE_HDR_SIZE : e->data;
}

/* An entry no longer in the log: its slab reference dropped and its
 * bookkeeping onto the free list, or freed. */
static void entry_release(struct tsr_site_source *s, struct log_entry *e)
{
	if (e == NULL)
		return;
	if (e->small && s->pool_max != 0 &&
	    atomic_load_explicit(&s->rc_count, memory_order_relaxed) < HO_RC_MAX) {
		e->next = NULL;
		if (s->rc_local_tail != NULL)
			s->rc_local_tail->next = e;
		else
			s->rc_local = e;
		s->rc_local_tail = e;
		s->rc_local_n++;
		atomic_fetch_add_explicit(&s->rc_count, 1, memory_order_relaxed);
		return;
	}
	slab_put(s, e->slab);
	if (e->slab == NULL || s->meta_free_n >= s->pool_max / TSR_BLOCK_SIZE) {
		free(e);
		return;
	}
	e->next = s->meta_free;
	s->meta_free = e;
	s->meta_free_n++;
}

/* The log's spare memory given back: every empty slab unmapped, the slab
 * being filled too when nothing else holds it, the spare entry records
 * freed.  The next write maps a slab again. */
static void pool_trim(struct tsr_site_source *s)
{
	struct log_entry *e;
	struct slab *sl;

	while ((sl = s->slab_free) != NULL) {
		s->slab_free = sl->next;
		slab_unmap(s, sl);
	}
	s->pool_bytes = 0;
	if (s->slab_cur != NULL && s->slab_cur->refs == 1) {
		slab_unmap(s, s->slab_cur);
		s->slab_cur = NULL;
	}
	while ((e = s->meta_free) != NULL) {
		s->meta_free = e->next;
		free(e);
	}
	s->meta_free_n = 0;
}

/* At each tick: trim once the log has been empty, with no slab taken, for
 * SRC_TRIM_MS (a write that fits the slab being filled and is ACKed between
 * two ticks does not count: it needs no more memory than the trim leaves). */
static void trim_tick(struct tsr_site_source *s, uint64_t t)
{
	if (s->head != NULL || s->slab_takes != s->trim_takes) {
		s->trim_takes = s->slab_takes;
		s->idle_since_ns = t;
		return;
	}
	if (t - s->idle_since_ns >= (uint64_t)s->trim_ms * NS_PER_MS &&
	    (s->slab_free != NULL || s->meta_free != NULL ||
	     (s->slab_cur != NULL && s->slab_cur->refs == 1)))
		pool_trim(s);
}

static void entry_free(struct tsr_site_source *s, struct log_entry *e)
{
	if (s->txk == TX_ENTRY && s->tx_entry == e) { /* tx still reads its data */
		s->tx_orphan = e;
		return;
	}
	entry_release(s, e);
}

/* The run is handed to TLS or lost with the session: its slab is free to go. */
static void run_drop(struct tsr_site_source *s)
{
	slab_put(s, s->run_slab);
	s->run_slab = NULL;
	s->run = NULL;
	s->run_len = s->run_sent = 0;
}

/* Drop the whole log into the dirty bitmap (and the regions of a sync whose
 * SYNC_END is not applied yet): from here writes only mark regions. */
static void log_to_dirty(struct tsr_site_source *s)
{
	struct log_entry *e, *next;

	for (e = s->head; e != NULL; e = next) {
		next = e->next;
		if (e->kind == ENT_WRITE || e->kind == ENT_ZERO)
			dirty_mark(s, e->offset, e->len, e->acked_ns);
		entry_free(s, e);
	}
	s->head = s->tail = s->cursor = NULL;
	s->log_entries = s->log_bytes = s->log_cost = 0;
	if (s->sync_bits != NULL) {
		dirty_merge(s, s->sync_bits);
		free(s->sync_bits);
		s->sync_bits = NULL;
	}
	s->sync_active = false;
	s->sync_end_logged = false;
	s->sync_end_seq = 0;
	s->sync_total = s->sync_done = 0;
	s->rbuf_ready = false;
	s->read_gen++; /* a read in flight is dropped at completion */
	s->log_on = false;
}

static void log_append(struct tsr_site_source *s, struct log_entry *e)
{
	e->next = NULL;
	if (s->tail != NULL)
		s->tail->next = e;
	else
		s->head = e;
	s->tail = e;
	if (s->cursor == NULL)
		s->cursor = e;
	s->log_entries++;
	if (e->kind == ENT_WRITE)
		s->log_bytes += e->len;
	s->log_cost += entry_data_cap(e) + SRC_ENTRY_COST;
}

/* Room for cost more bytes, or the log overflows into the bitmap. */
static void log_overflow(struct tsr_site_source *s)
{
	tsr_warn("site source %s: log over %llu bytes: shipping changed regions from now on",
		 tsr_vol_name(s->vol), (unsigned long long)s->log_max);
	s->overflows++;
	s->behind = true;
	log_to_dirty(s);
}

/*
 * Room for an entry of cost more bytes (its data outside a slab and
 * SRC_ENTRY_COST), and slab_n bytes in a slab (0: none), or the log
 * overflows into the bitmap.  The slabs in use (those of the log's entries,
 * the run's, the one being filled) count whole, with the one a slab_n that
 * does not fit the slab being filled would take: the memory really held,
 * not the entries' bytes (with 64 KiB writes three frames fill 196,800
 * bytes of a slab; counting bytes let the log hold 1.33x log_max).  Two
 * slabs are not counted: the one being filled, so that a log_max under a
 * slab still logs, and the oldest, which stays whole while the frames in
 * flight at its end wait for their ACK (with one slab not counted a
 * one-slab log overflowed under a steady stream at each slab taken, with a
 * few 4 KiB frames in flight: review s21-revR).  So the log's memory is at
 * most log_max and two slabs.
 */
static bool log_room(struct tsr_site_source *s, uint64_t cost, size_t slab_n)
{
	uint64_t held = s->slab_bytes - s->pool_bytes;
	const struct slab *cur = s->slab_cur;

	if (slab_n && (cur == NULL || (cur->refs > 1 && cur->used + slab_n > SLAB_CAP)))
		held += SRC_SLAB;
	if (s->log_cost + cost + held <= s->log_max + 2 * SRC_SLAB)
		return true;
	log_overflow(s);
	return false;
}

/* A log entry with room for data bytes: in a slab (in_slab) with its
 * bookkeeping from the free list when there is one, else malloc'd whole. */
static struct log_entry *entry_new(struct tsr_site_source *s, uint8_t kind, uint64_t offset,
				   uint32_t len, size_t data, uint64_t t)
{
	struct log_entry *e;
	struct slab *sl = NULL;
	uint8_t *wire = NULL;

	if (in_slab(kind, data)) {
		if ((e = s->meta_free) != NULL) {
			s->meta_free = e->next;
			s->meta_free_n--;
		} else if ((e = malloc(sizeof(*e))) == NULL) {
			return NULL;
		}
		if ((wire = slab_take(s, TSR_SITE_HDR_SIZE + data, &sl)) == NULL) {
			free(e);
			return NULL;
		}
	} else {
		e = malloc(sizeof(*e) + data);
		if (e == NULL)
			return NULL;
		if (data > 0)
			s->log_allocs++;
	}
	*e = (struct log_entry){.kind = kind,
				.offset = offset,
				.len = len,
				.acked_ns = t,
				.slab = sl,
				.wire = wire};
	return e;
}

/*
 * A change the volume acked: host data (buf) or zeroes (buf NULL), one log
 * entry per frame's worth; the dirty bitmap instead while the log is off,
 * when it is full or out of memory, and for a range no frame carries (not
 * block-aligned).
 */
static void log_change(struct tsr_site_source *s, uint64_t offset, uint64_t len,
		       const void *buf)
{
	uint64_t t = tsr_mono_ns(), done = 0, max = buf ? TSR_SITE_MAX_DATA : SRC_ZERO_MAX;
	uint32_t n, data;
	size_t slab_n;
	struct log_entry *e;

	if (s->stopping || s->demoted || len == 0)
		return;
	/* Send batching: below send_batch new bytes the next tick sends */
	s->unsent_new += len;
	if (!s->log_on || s->unsent_new >= s->send_batch)
		schedule_pass(s);
	if (s->log_on && (offset % TSR_BLOCK_SIZE || len % TSR_BLOCK_SIZE))
		log_to_dirty(s); /* no frame carries it: a region sync will */
	if (!s->log_on) {
		dirty_mark(s, offset, len, t);
		return;
	}
	while (done < len) {
		n = (uint32_t)(len - done < max ? len - done : max);
		data = buf ? n : 0;
		slab_n = in_slab(buf ? ENT_WRITE : ENT_ZERO, data) ? TSR_SITE_HDR_SIZE + data : 0;
		if (!log_room(s, (slab_n ? 0 : data) + SRC_ENTRY_COST, slab_n) ||
		    (e = entry_new(s, buf ? ENT_WRITE : ENT_ZERO, offset + done, n, data, t)) == NULL) {
			if (s->log_on) /* out of memory: the bitmap holds it instead */
				log_to_dirty(s);
			dirty_mark(s, offset, len, t);
			return;
		}
		if (buf)
			memcpy(entry_data(e), (const uint8_t *)buf + done, n);
		log_append(s, e);
		done += n;
	}
}

/* ---- consistency group markers (worker) ---- */

static uint64_t realtime_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Marker n into s's log (nothing while the log is off: s is not a prefix
 * until its next SYNC_END anyway). */
static void marker_append(struct tsr_site_source *s, uint64_t n)
{
	struct log_entry *e;

	s->bytes_since_marker = 0;
	if (s->stopping || s->demoted || !s->log_on || !log_room(s, SRC_ENTRY_COST, 0))
		return;
	e = entry_new(s, ENT_MARKER, n, 0, 0, tsr_mono_ns());
	if (e == NULL) {
		log_to_dirty(s); /* the group cannot be cut here: s resyncs instead */
		return;
	}
	log_append(s, e);
	schedule_pass(s);
}

/* One marker into every member's log, in one go on the group's worker.  A
 * counter that cannot be written gives no marker this time (logged): the
 * target then holds a longer interval, nothing breaks. */
static void group_mark(struct src_group *g)
{
	uint64_t n;

	g->next_ns = tsr_mono_ns() + g->interval_ns;
	if (site_mark_next(&g->mark, &n)) {
		/* the next try at the next interval or 2 MiB, not at every write */
		for (unsigned i = 0; i < g->n; i++)
			g->mem[i]->bytes_since_marker = 0;
		return;
	}
	for (unsigned i = 0; i < g->n; i++)
		marker_append(g->mem[i], n);
}

/* ---- the handover (split source): hooks on home, the log on worker ---- */

/* The entries one pass of home handed over, in ack order. */
struct ho_batch {
	struct tsr_site_source *s;
	struct log_entry *head;
	uint64_t bytes; /* WRITE data bytes in them (ho_bytes) */
	uint64_t lag;   /* their share of ho_lag_bytes */
	uint64_t ranges; /* their share of ho_ranges */
};

static void handover(struct tsr_worker *w, void *arg);

static void ho_push(struct tsr_site_source *s, struct log_entry *e)
{
	e->next = NULL;
	if (s->ho_tail != NULL)
		s->ho_tail->next = e;
	else
		s->ho_head = e;
	s->ho_tail = e;
	if (e->kind == ENT_WRITE) {
		s->ho_pending += e->len;
	} else {
		s->ho_ranges_pending++;
		atomic_fetch_add_explicit(&s->ho_ranges, 1, memory_order_relaxed);
	}
}

/* A MARK / OVER entry for [offset, end): no data, never in the log. */
static struct log_entry *range_entry(uint8_t kind, uint64_t offset, uint64_t end, uint64_t t)
{
	struct log_entry *e = malloc(sizeof(*e));

	if (e != NULL)
		*e = (struct log_entry){.kind = kind, .offset = offset, .seq = end, .acked_ns = t};
	return e;
}

/* An entry never handed over (home) or dropped: its memory (and a BITS
 * entry's bitmap). */
static void ho_entry_free(struct log_entry *e)
{
	if (e->kind == ENT_BITS)
		free(e->wire);
	free(e);
}

/* home: a small entry, from those worker handed back, else malloc'd */
static struct log_entry *rc_take(struct tsr_site_source *s)
{
	struct log_entry *e = s->rc_home;

	if (e == NULL)
		e = atomic_exchange_explicit(&s->rc_stack, NULL, memory_order_acquire);
	if (e == NULL)
		return malloc(sizeof(*e) + HO_SMALL);
	s->rc_home = e->next;
	atomic_fetch_sub_explicit(&s->rc_count, 1, memory_order_relaxed);
	return e;
}

/* worker, once per pass: the small entries freed go back to home (one CAS
 * loop for all of them). */
static void rc_flush(struct tsr_site_source *s)
{
	struct log_entry *top;

	if (s->rc_local == NULL)
		return;
	top = atomic_load_explicit(&s->rc_stack, memory_order_relaxed);
	do
		s->rc_local_tail->next = top;
	while (!atomic_compare_exchange_weak_explicit(&s->rc_stack, &top, s->rc_local,
						      memory_order_release, memory_order_relaxed));
	s->rc_local = s->rc_local_tail = NULL;
	s->rc_local_n = 0;
}

/* Out of memory for [offset, end): an OVER at the next chance (ho_send). */
static void ho_lose(struct tsr_site_source *s, uint64_t offset, uint64_t end)
{
	if (s->ho_lost_end == 0 || offset < s->ho_lost_off)
		s->ho_lost_off = offset;
	if (end > s->ho_lost_end)
		s->ho_lost_end = end;
}

/*
 * home, past HO_RANGE_MAX: the regions of [offset, offset + len) into the
 * bitmap of home's BITS entry (made at the first such change, in ack order,
 * sized for the volume's live size).  Region bits, as the worker's dirty
 * bitmap: nothing marked that was not written (invariant 7).  What it
 * cannot hold (out of memory, past its size after a grow) goes as OVER.
 */
static void ho_bits_mark(struct tsr_site_source *s, uint64_t offset, uint64_t len, uint64_t t)
{
	struct log_entry *e = s->ho_bits;
	uint64_t n, first, last, i, *bits;

	if (e == NULL) {
		n = (tsr_vol_size(s->vol) + s->region_size - 1) >> s->region_shift;
		e = range_entry(ENT_BITS, n, 0, t);
		if (e != NULL && (e->wire = calloc((n + 63) / 64, sizeof(uint64_t))) == NULL) {
			free(e);
			e = NULL;
		}
		if (e == NULL) {
			ho_lose(s, offset, offset + len);
			return;
		}
		ho_push(s, e);
		s->ho_bits = e;
	}
	bits = (uint64_t *)(void *)e->wire;
	first = offset >> s->region_shift;
	last = (offset + len - 1) >> s->region_shift;
	for (i = first; i <= last && i < e->offset; i++)
		bits[i / 64] |= 1ull << (i % 64);
	if (last >= e->offset)
		ho_lose(s, first < e->offset ? e->offset << s->region_shift : offset, offset + len);
}

/*
 * log_change's twin on home (split): the change goes into entries in ack
 * order (WRITE with a copy of the data, ZERO), handed over to the pump
 * worker once per pass of home (handover, after the pass's submit), where
 * log_take decides what log_change decides.  A range no frame carries (not
 * block-aligned) goes as MARK; WRITE data over log_max in flight between the
 * threads (the worker is late taking them in) or out of memory as OVER: the
 * worker overflows its log into the bitmap, as log_room would have.
 */
static void ho_change(struct tsr_site_source *s, uint64_t offset, uint64_t len, const void *buf)
{
	uint64_t t = tsr_mono_ns(), done = 0, max = buf ? TSR_SITE_MAX_DATA : SRC_ZERO_MAX;
	uint8_t kind = buf ? ENT_WRITE : ENT_ZERO;
	struct log_entry *e;
	uint32_t n;

	if (s->ho_unhooked || len == 0)
		return;
	if (atomic_load_explicit(&s->ho_home_ns, memory_order_relaxed) == 0)
		atomic_store(&s->ho_home_ns, t);
	if (offset % TSR_BLOCK_SIZE || len % TSR_BLOCK_SIZE)
		kind = ENT_MARK;
	else if (buf && s->ho_pending + atomic_load_explicit(&s->ho_bytes, memory_order_relaxed) +
				len > s->log_max)
		kind = ENT_OVER;
	if (kind != ENT_ZERO) { /* (a ZERO entry ships no data: not in log_bytes either) */
		s->ho_lag_pending += len;
		atomic_fetch_add_explicit(&s->ho_lag_bytes, len, memory_order_relaxed);
	}
	if (kind != ENT_WRITE &&
	    atomic_load_explicit(&s->ho_ranges, memory_order_relaxed) >= HO_RANGE_MAX) {
		ho_bits_mark(s, offset, len, t); /* (handed over at send_batch or the tick) */
		kind = ENT_BITS;
	}
	if (kind == ENT_MARK || kind == ENT_OVER) {
		if ((e = range_entry(kind, offset, offset + len, t)) != NULL)
			ho_push(s, e);
		else
			ho_lose(s, offset, offset + len);
	}
	while ((kind == ENT_WRITE || kind == ENT_ZERO) && done < len) {
		bool small;

		n = (uint32_t)(len - done < max ? len - done : max);
		small = buf != NULL && n <= HO_SMALL;
		e = small ? rc_take(s) : malloc(sizeof(*e) + (buf ? n : 0));
		if (e == NULL) {
			ho_lose(s, offset + done, offset + len);
			break;
		}
		*e = (struct log_entry){
		    .kind = kind, .offset = offset + done, .len = n, .acked_ns = t, .small = small};
		if (buf)
			memcpy(e->data, (const uint8_t *)buf + done, n);
		ho_push(s, e);
		done += n;
	}
	/* send batching, as log_change: below send_batch the pump worker's
	 * tick pulls them (ho_pull) */
	s->ho_unsent += len;
	if ((s->ho_unsent >= s->send_batch || kind == ENT_MARK || kind == ENT_OVER) &&
	    !s->ho_deferred && tsr_worker_defer_after_submit(s->home, handover, s) == 0)
		s->ho_deferred = true;
}

static void log_take_batch(struct tsr_worker *w, void *arg);

/* Hand the entries made so far to the worker (one message).  They stay
 * here when that fails (out of memory), for the next try. */
static void ho_send(struct tsr_site_source *s)
{
	struct ho_batch *b;
	struct log_entry *e;
	bool bits = s->ho_bits != NULL;
	uint64_t k;

	/* one bitmap in flight at most: this one waits until the worker took
	 * that one in (its tick pulls again) */
	if (bits && atomic_load(&s->ho_bits_fly))
		return;

	if (s->ho_lost_end != 0) {
		/* the entries made after the loss may not go without it: the
		 * target would apply later writes and not the lost one */
		e = range_entry(ENT_OVER, s->ho_lost_off, s->ho_lost_end, tsr_mono_ns());
		if (e == NULL)
			return;
		ho_push(s, e);
		s->ho_lost_end = 0;
	}
	if (s->ho_head == NULL || (b = malloc(sizeof(*b))) == NULL)
		return;
	*b = (struct ho_batch){.s = s,
			       .head = s->ho_head,
			       .bytes = s->ho_pending,
			       .lag = s->ho_lag_pending,
			       .ranges = s->ho_ranges_pending};
	atomic_fetch_add_explicit(&s->ho_bytes, b->bytes, memory_order_relaxed);
	/* its time and number before the send: the worker may take it at once */
	k = atomic_load(&s->ho_sent_n);
	if (k - atomic_load(&s->ho_taken_n) < HO_FLY_SLOTS)
		atomic_store(&s->ho_fly_ns[k % HO_FLY_SLOTS], atomic_load(&s->ho_home_ns));
	atomic_store(&s->ho_sent_n, k + 1);
	if (bits)
		atomic_store(&s->ho_bits_fly, true);
	if (tsr_worker_send(s->worker, log_take_batch, b) < 0) {
		if (bits)
			atomic_store(&s->ho_bits_fly, false);
		atomic_store(&s->ho_sent_n, k);
		atomic_fetch_sub_explicit(&s->ho_bytes, b->bytes, memory_order_relaxed);
		free(b);
		return;
	}
	atomic_store(&s->ho_home_ns, 0); /* after ho_sent_n: a reader sees one of them */
	s->ho_head = s->ho_tail = NULL;
	s->ho_pending = 0;
	s->ho_lag_pending = 0;
	s->ho_ranges_pending = 0;
	s->ho_bits = NULL;
	s->ho_unsent = 0;
}

/* home, after its submit (the pass's disk writes go first), once send_batch
 * bytes were changed */
static void handover(struct tsr_worker *w, void *arg)
{
	struct tsr_site_source *s = arg;

	(void)w;
	s->ho_deferred = false;
	ho_send(s);
}

static void region_read_back(struct tsr_worker *w, void *arg);

/* home: the pump worker's tick asks for what is below send_batch (and a
 * region read's result that could not go) */
static void ho_pull(struct tsr_worker *w, void *arg)
{
	struct tsr_site_source *s = arg;

	(void)w;
	atomic_store(&s->ho_pull_sent, false);
	if (!s->ho_unhooked)
		ho_send(s);
	if (s->r_back_lost) {
		s->r_back_lost = false;
		if (tsr_worker_send(s->worker, region_read_back, s) < 0)
			s->r_back_lost = true;
	}
}

/* worker, at each tick: one ho_pull at a time */
static void ho_ask(struct tsr_site_source *s)
{
	if (!s->split || atomic_exchange(&s->ho_pull_sent, true))
		return;
	if (tsr_worker_send(s->home, ho_pull, s) < 0)
		atomic_store(&s->ho_pull_sent, false);
}

/* A BITS entry from home (worker): an overflow, then its regions dirty. */
static void log_take_bits(struct tsr_site_source *s, struct log_entry *e)
{
	const uint64_t *bits = (const uint64_t *)(const void *)e->wire;
	uint64_t i;

	if (!s->stopping && !s->demoted) {
		schedule_pass(s);
		if (s->log_on)
			log_overflow(s);
		for (i = 0; i < e->offset; i++) {
			if (bits[i / 64] == 0) {
				i |= 63; /* the next word */
				continue;
			}
			if (bits[i / 64] >> (i % 64) & 1)
				dirty_mark(s, i << s->region_shift, s->region_size, e->acked_ns);
		}
	}
	free(e->wire);
	entry_release(s, e);
	atomic_store(&s->ho_bits_fly, false);
}

/* One entry from home into the log (worker): what log_change does with a
 * change, the data copied already. */
static void log_take(struct tsr_site_source *s, struct log_entry *e)
{
	bool range = e->kind == ENT_MARK || e->kind == ENT_OVER;
	uint64_t len = range ? e->seq - e->offset : e->len;

	if (e->kind == ENT_BITS) {
		log_take_bits(s, e);
		return;
	}
	if (s->stopping || s->demoted) {
		entry_release(s, e);
		return;
	}
	s->unsent_new += len;
	if (!s->log_on || s->unsent_new >= s->send_batch)
		schedule_pass(s);
	if (range && s->log_on) {
		if (e->kind == ENT_OVER)
			log_overflow(s);
		else
			log_to_dirty(s); /* no frame carries it: a region sync will */
	}
	if (range || !s->log_on || !log_room(s, entry_data_cap(e) + SRC_ENTRY_COST, 0)) {
		dirty_mark(s, e->offset, len, e->acked_ns);
		entry_release(s, e);
		return;
	}
	log_append(s, e);
}

static void log_take_batch(struct tsr_worker *w, void *arg)
{
	struct ho_batch *b = arg;
	struct tsr_site_source *s = b->s;
	struct log_entry *e, *next;

	(void)w;
	for (e = b->head; e != NULL; e = next) {
		next = e->next;
		log_take(s, e);
	}
	/* the entries in the published log / dirty bytes first, then out of
	 * the handover's counts (seq_cst, read before pub: ho_view_read), or a
	 * status read between the two missed them until the next publish
	 * (review s21-revQ) */
	if (!s->stopping)
		publish(s);
	atomic_fetch_sub_explicit(&s->ho_bytes, b->bytes, memory_order_relaxed);
	atomic_fetch_sub(&s->ho_lag_bytes, b->lag);
	atomic_fetch_sub_explicit(&s->ho_ranges, b->ranges, memory_order_relaxed);
	atomic_fetch_add(&s->ho_taken_n, 1);
	free(b);
	rc_flush(s);
}

static void hook_write(void *arg, uint64_t offset, uint32_t len, const void *buf)
{
	struct tsr_site_source *s = arg;

	if (s->split) {
		ho_change(s, offset, len, buf);
		return;
	}
	log_change(s, offset, len, buf);
	if (s->group && (s->bytes_since_marker += len) > SRC_WINDOW / 4)
		group_mark(s->group); /* a whole interval fits in the window */
}

static void hook_zero(void *arg, uint64_t offset, uint64_t len)
{
	struct tsr_site_source *s = arg;

	if (s->split)
		ho_change(s, offset, len, NULL);
	else
		log_change(s, offset, len, NULL);
}

/* ACK through seq: free what it covers. */
static void on_ack(struct tsr_site_source *s, uint64_t seq)
{
	struct log_entry *e;
	unsigned i, k;

	if (seq > s->acked_seq)
		s->acked_seq = seq;
	while ((e = s->head) != NULL && e->seq != 0 && e->seq <= seq && e != s->cursor) {
		s->head = e->next;
		if (s->head == NULL)
			s->tail = NULL;
		s->log_entries--;
		if (e->kind == ENT_WRITE)
			s->log_bytes -= e->len;
		s->log_cost -= entry_data_cap(e) + SRC_ENTRY_COST;
		entry_free(s, e);
	}
	if (s->sync_bits != NULL && s->sync_end_seq != 0 && seq >= s->sync_end_seq) {
		free(s->sync_bits);
		s->sync_bits = NULL;
		s->sync_end_seq = 0;
		s->sync_total = s->sync_done = 0;
	}
	/* window credit: the newest checkpoint the ACK covers */
	for (i = 0; i < s->n_ckpt && s->ckpt[i].seq <= seq; i++)
		s->cum_acked = s->ckpt[i].cum;
	for (k = 0; i + k < s->n_ckpt; k++)
		s->ckpt[k] = s->ckpt[i + k];
	s->n_ckpt = k;
	rc_flush(s);
}

/* ---- stats ---- */

static enum tsr_site_state state_of(const struct tsr_site_source *s)
{
	if (s->demoted)
		return TSR_SITE_SPLIT;
	if (s->paused)
		return TSR_SITE_PAUSED;
	if (s->behind)
		return TSR_SITE_BEHIND;
	if (s->sess != SESS_READY)
		return TSR_SITE_CONNECTING;
	if (s->sync_active || !s->log_on)
		return TSR_SITE_SYNCING;
	return TSR_SITE_STREAMING;
}

static void publish(struct tsr_site_source *s)
{
	struct tsr_site_source_stats p = {0};
	uint64_t t = tsr_mono_ns(), oldest = 0;
	uint64_t sync_left = 0;

	p.state = state_of(s);
	p.counted_ns = (int64_t)t; /* read first: the counters below are at least this new */
	p.next_seq = s->next_seq;
	p.sent_seq = s->sent_seq;
	p.acked_seq = s->acked_seq;
	p.log_entries = s->log_entries;
	p.log_bytes = s->log_bytes;
	if (s->sync_active && s->sync_total > s->sync_done)
		sync_left = s->sync_total - s->sync_done;
	p.dirty_bytes = s->dirty_count * s->region_size + sync_left;
	if (p.dirty_bytes > s->vol_size)
		p.dirty_bytes = s->vol_size;
	p.lag_bytes = s->log_bytes + p.dirty_bytes;
	if (s->head != NULL)
		oldest = s->head->acked_ns;
	if (s->dirty_count && s->dirty_since_ns && (oldest == 0 || s->dirty_since_ns < oldest))
		oldest = s->dirty_since_ns;
	p.lag_sec = oldest && t > oldest ? (double)(t - oldest) / NS_PER_SEC : 0;
	p.sync_total_bytes = s->sync_total;
	p.sync_done_bytes = s->sync_done;
	p.bytes_shipped = s->bytes_shipped;
	p.region_bytes_shipped = s->region_bytes_shipped;
	p.region_bytes_same = s->region_bytes_same;
	p.last_sync_compared = s->last_sync_compared;
	p.frames_shipped = s->frames_shipped;
	p.tls_writes = s->tls_writes + (s->t != NULL ? tsr_site_tls_sends(s->t) : 0);
	p.log_allocs = s->log_allocs;
	p.pool_bytes = s->pool_bytes + s->meta_free_n * sizeof(struct log_entry);
	p.slab_bytes = s->slab_bytes;
	p.compress_in_bytes = s->compress_in;
	p.compress_out_bytes = s->compress_out;
	p.frames_compressed = s->frames_compressed;
	p.overflows = s->overflows;
	p.reconnects = s->reconnects;
	p.full_copies = s->full_copies;
	p.markers_sent = s->markers_sent;
	p.last_marker = s->last_marker_sent;
	p.rate_bps = s->rate_bps;
	p.eta_sec = p.lag_bytes && s->rate_bps > 1 ? (double)p.lag_bytes / s->rate_bps : 0;
	memcpy(p.last_error, s->last_error, sizeof(p.last_error));
	pthread_mutex_lock(&s->stats_lock);
	s->pub = p;
	s->pub_oldest_ns = oldest;
	pthread_mutex_unlock(&s->stats_lock);
}

static void pass_end(struct tsr_worker *w, void *arg)
{
	struct tsr_site_source *s = arg;

	(void)w;
	s->pass_deferred = false;
	if (s->stopping)
		return;
	pump(s);
	publish(s);
	rc_flush(s);
}

/*
 * Pump and publish once in this loop pass, after its submit
 * (tsr_worker_defer_after_submit): a write's tap runs the hook (log_change,
 * which schedules the pass) before the host's callback, whose NBD reply is
 * deferred to the end of the pass; with the pump among those deferred calls
 * the TLS work and the send to the DR site ran before the pass's replies
 * (until 391ae9c) or before its disk writes were submitted (until session
 * 19): the disk queue waited for the encryption and for the DR's worker,
 * which the send wakes and which then preempts this one.  Now the replies
 * and the disk writes of the pass go first.  Nothing after stop began
 * (stop_finish's signal, on the same list, must stay last).
 */
static void schedule_pass(struct tsr_site_source *s)
{
	if (s->pass_deferred || s->stopping)
		return;
	if (tsr_worker_defer_after_submit(s->worker, pass_end, s) == 0)
		s->pass_deferred = true;
}

/* ---- the session ---- */

static void fd_cb(void *arg, uint32_t events);

static void set_events(struct tsr_site_source *s, uint32_t ev)
{
	if (s->fd < 0 || ev == s->events)
		return;
	if (s->events == 0) {
		if (tsr_worker_watch(s->worker, s->fd, ev, fd_cb, s) != 0)
			return;
	} else {
		tsr_worker_modify(s->worker, s->fd, ev);
	}
	s->events = ev;
}

static void session_close(struct tsr_site_source *s)
{
	if (s->events)
		tsr_worker_unwatch(s->worker, s->fd);
	s->events = 0;
	if (s->t != NULL)
		s->tls_writes += tsr_site_tls_sends(s->t);
	tsr_site_tls_free(s->t);
	s->t = NULL;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	if (s->txk == TX_ENTRY && s->tx_orphan == s->tx_entry) {
		entry_release(s, s->tx_orphan);
		s->tx_orphan = NULL;
	}
	s->txk = TX_NONE;
	s->tx_entry = NULL;
	s->bb_len = s->bb_sent = 0; /* lost with the session, as the socket's buffer */
	run_drop(s);
	s->rbuf_in_tx = false;
	s->rx.got = 0;
	s->rx.hdr.payload_len = 0;
	s->dig_asked = s->dig_valid = false; /* digests hold for one session only */
	/* a cut sync: its regions and the log become dirty; the next session
	 * resyncs them (the target is past SYNC_BEGIN without SYNC_END) */
	if (s->sync_active)
		log_to_dirty(s);
}

/*
 * An EINPROGRESS to VOLUME_OPEN that says the DR is attaching the target (its
 * copies opening in a thread: replication.c site_open_volume, "site S:
 * target V is being attached (its copies are being opened): retry", the
 * same text since 7cb3cb6), as opposed to creating or growing it.  The code
 * is the same for all three (a source of any build retries them), so the
 * sentence tells them apart.
 */
static bool open_answer_attaching(const char *msg)
{
	return strstr(msg, " is being attached (") != NULL;
}

static void session_fail(struct tsr_site_source *s, const char *fmt, ...)
{
	/* a grow told "busy" or "growing" retries sooner; so does an open told
	 * "being created", sooner the first times (a create takes milliseconds
	 * when the DR's nodes answer, up to their timeouts when one does not) */
	uint64_t wait_ns = s->grow_busy && s->retry_ns > SRC_GROW_RETRY_NS ? SRC_GROW_RETRY_NS :
				s->retry_ns;
	va_list ap;

	bool attach_again = false; /* the same "being attached" answer as the last */
	char last[sizeof(s->last_error)];

	if (s->open_attach_retry) {
		unsigned more =
		    s->open_attach_n > SRC_ATTACH_FIXED ? s->open_attach_n - SRC_ATTACH_FIXED : 0;

		wait_ns = SRC_ATTACH_RETRY_NS << (more < 10 ? more : 10);
		if (wait_ns > s->retry_ns)
			wait_ns = s->retry_ns;
		memcpy(last, s->last_error, sizeof(last));
		attach_again = true;
	} else if (s->open_busy) {
		wait_ns = s->open_busy_ns;
		s->open_attach_n = 0;
	} else {
		s->open_busy_ns = 0;
		s->open_attach_n = 0;
	}
	s->open_busy = false;
	s->open_attach_retry = false;

	va_start(ap, fmt);
	vsnprintf(s->last_error, sizeof(s->last_error), fmt, ap);
	va_end(ap);
	/* an attach that takes seconds is retried every 200 ms: one warning,
	 * then the same answer again at debug level */
	if (attach_again && strcmp(last, s->last_error) == 0)
		tsr_debug("site source %s -> %s: %s; retrying in %llu ms", tsr_vol_name(s->vol),
			  s->address, s->last_error, (unsigned long long)(wait_ns / NS_PER_MS));
	else
		tsr_warn("site source %s -> %s: %s; retrying in %llu ms", tsr_vol_name(s->vol),
			 s->address, s->last_error, (unsigned long long)(wait_ns / NS_PER_MS));
	if (s->grow_pending && !s->grow_busy)
		grow_end(s, -ENOTCONN, s->last_error);
	session_close(s);
	if (s->sess != SESS_DEAD)
		s->sess = SESS_IDLE;
	s->retry_at_ns = tsr_mono_ns() + wait_ns;
	s->grow_busy = false;
	schedule_pass(s);
}

static void session_connect(struct tsr_site_source *s)
{
	int fd, one = 1;

	if (s->fd >= 0 || s->sess != SESS_IDLE)
		return;
	fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		session_fail(s, "socket: %s", strerror(errno));
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&s->addr, s->addrlen) < 0 && errno != EINPROGRESS) {
		int err = errno;

		close(fd);
		session_fail(s, "connect: %s", strerror(err));
		return;
	}
	s->fd = fd;
	if (tsr_worker_watch(s->worker, fd, EPOLLOUT, fd_cb, s) != 0) {
		session_fail(s, "cannot watch the socket");
		return;
	}
	s->events = EPOLLOUT;
	s->sess = SESS_CONNECT;
}

/* Queue a control or data frame on the idle tx; a WRITE payload goes
 * compressed (from cbuf) when compression is on and it gets smaller. */
static int tx_begin(struct tsr_site_source *s, const struct tsr_site_hdr *h, const void *payload,
		    enum tx_kind k)
{
	struct tsr_site_hdr ch;
	uint32_t n = 0;
	int ret;

	if (s->codec != NULL && h->opcode == TSR_SITE_WRITE && payload != NULL)
		n = tsr_site_compress(s->codec, payload, h->length, s->cbuf, TSR_SITE_MAX_DATA);
	if (n > 0) {
		ch = *h;
		ch.flags |= TSR_SITE_F_COMPRESSED;
		ch.wire_len = n;
		ret = tsr_site_tx_start(&s->tx, &ch, s->cbuf);
	} else {
		ret = tsr_site_tx_start(&s->tx, h, payload);
	}
	if (ret < 0) {
		tsr_error("site source %s: cannot frame %s seq %llu: %s", tsr_vol_name(s->vol),
			  tsr_site_op_name(h->opcode), (unsigned long long)h->seq, strerror(-ret));
		return ret;
	}
	s->txk = k;
	s->tx_seq = h->opcode == TSR_SITE_BARRIER ? 0 : h->seq;
	s->tx_payload = (uint32_t)s->tx.payload_len;
	s->tx_compressed = n > 0;
	s->tx_logical = n > 0 ? h->length : s->tx_payload;
	s->tx_barrier = h->opcode == TSR_SITE_BARRIER;
	s->tx_region = false;
	s->tx_want = POLLOUT;
	return 0;
}

static struct tsr_site_hdr frame_hdr(const struct tsr_site_source *s, uint8_t op, uint64_t seq)
{
	return (struct tsr_site_hdr){
	    .opcode = op, .stream = s->stream, .seq = seq, .epoch = s->epoch};
}

static void send_barrier(struct tsr_site_source *s)
{
	struct tsr_site_hdr h = frame_hdr(s, TSR_SITE_BARRIER, s->sent_seq);

	if (tx_begin(s, &h, NULL, TX_CTL) < 0)
		return;
	s->barrier_seq = s->sent_seq;
	s->last_barrier_ns = tsr_mono_ns();
	s->barrier_now = false;
	if (s->n_ckpt == SRC_CHECKPOINTS)
		s->n_ckpt--; /* coarser: the newest slot moves on */
	s->ckpt[s->n_ckpt++] = (struct checkpoint){.seq = s->sent_seq, .cum = s->cum_sent};
}

/* The frame in tx is all on the socket. */
static void tx_finished(struct tsr_site_source *s)
{
	enum tx_kind k = s->txk;

	s->txk = TX_NONE;
	s->cum_sent += TSR_SITE_HDR_SIZE + s->tx_payload;
	if (s->tx_seq > s->sent_seq)
		s->sent_seq = s->tx_seq;
	if (k == TX_CTL) /* HELLO, VOLUME_OPEN, BARRIER, SYNC_BEGIN */
		return;
	s->frames_shipped++;
	s->bytes_shipped += s->tx_logical;
	if (s->max_bps) /* the cap is on what crosses the link */
		s->tokens -= s->tx_payload;
	if (s->codec != NULL && s->tx_logical > 0) { /* a WRITE: the only payload here */
		s->compress_in += s->tx_logical;
		s->compress_out += s->tx_payload;
		s->frames_compressed += s->tx_compressed;
	}
	s->tx_compressed = false;
	if (k == TX_REGION) {
		s->rbuf_in_tx = false;
		s->region_bytes_shipped += s->tx_logical;
		s->sync_done += s->tx_len;
		s->r_pos += s->tx_len;
		if (s->r_pos >= s->r_len) {
			s->rbuf_ready = false;
			if (s->r_last && s->sync_active) /* the log (and SYNC_END) goes next */
				s->sync_active = false;
		}
	} else if (k == TX_ENTRY) {
		s->at_marker = s->tx_orphan != s->tx_entry && s->tx_entry->kind == ENT_MARKER;
		if (s->tx_orphan == s->tx_entry) {
			entry_release(s, s->tx_orphan);
			s->tx_orphan = NULL;
		} else if (s->tx_entry->kind == ENT_SYNC_END) {
			s->sync_end_seq = s->tx_seq;
			s->barrier_now = true;
		} else if (s->tx_entry->kind == ENT_MARKER) {
			s->barrier_now = true; /* a window checkpoint at every marker */
		}
		s->tx_entry = NULL;
	}
}

static void region_read_done(void *arg, int status);

/* ---- region reads of a split source: on home, the result to worker ---- */

static void region_read_back(struct tsr_worker *w, void *arg)
{
	struct tsr_site_source *s = arg;

	(void)w;
	region_read_done(s, s->r_status);
}

/*
 * home: the read is over (status, or 1: nothing to read there).  First the
 * entries of the writes acked before now go to the worker, then the
 * result, in that order (one queue): the SYNC_END that the last read's
 * completion appends follows every write acked before it, as on one
 * thread.  When they cannot go (out of memory), the result is -EAGAIN
 * (the worker reads again later), never ahead of them.  Nothing here
 * touches s after the send (stop may free it).
 */
static void region_read_home_done(void *arg, int status)
{
	struct tsr_site_source *s = arg;
	int ret;

	s->r_status = status;
	ho_send(s);
	if (s->ho_head != NULL || s->ho_lost_end != 0)
		s->r_status = -EAGAIN;
	s->r_back_lost = false;
	ret = tsr_worker_send(s->worker, region_read_back, s);
	if (ret < 0) {
		/* the worker waits for it (and so does a stop): again at its
		 * next tick (ho_pull), or by the stop */
		s->r_back_lost = true;
		tsr_warn("site source %s: a region read's result could not go to the pump "
			 "worker (%s): sent again at its next tick",
			 tsr_vol_name(s->vol), strerror(-ret));
	}
}

/* home: the read issue_region_read asked for (r_off, r_len), up to the
 * volume's live end (vol_size may be ahead during a grow). */
static void region_read_home(struct tsr_worker *w, void *arg)
{
	struct tsr_site_source *s = arg;
	uint64_t live = tsr_vol_size(s->vol);
	int ret;

	(void)w;
	if (s->r_off >= live) {
		region_read_home_done(s, 1);
		return;
	}
	if (s->r_off + s->r_len > live)
		s->r_len = (uint32_t)(live - s->r_off);
	ret = tsr_vol_read(s->vol, tsr_worker_io(s->home), s->r_off, s->r_len, s->rbuf,
			   region_read_home_done, s);
	if (ret < 0)
		region_read_home_done(s, ret);
}

/*
 * Every marked region has been read: SYNC_END into the log (the target is
 * consistent once it applies it).  false when out of memory: the session
 * has failed.
 */
static bool log_sync_end(struct tsr_site_source *s)
{
	struct log_entry *e = entry_new(s, ENT_SYNC_END, 0, 0, 0, tsr_mono_ns());

	if (e == NULL) {
		session_fail(s, "out of memory");
		return false;
	}
	log_append(s, e);
	s->sync_end_logged = true;
	s->behind = false;
	return true;
}

static void issue_region_read(struct tsr_site_source *s)
{
	uint64_t i = s->sync_next, first, n = 0, max_regions = SRC_READ_MAX >> s->region_shift;
	uint64_t off, len, live;
	int ret;

	if (max_regions == 0)
		max_regions = 1;
	while (i < s->n_regions && !bit_test(s->sync_bits, i))
		i++;
	if (i >= s->n_regions) { /* no region left: the sync ends here */
		if (!log_sync_end(s))
			return;
		s->sync_active = false;
		s->sync_next = i;
		return;
	}
	first = i;
	while (i < s->n_regions && n < max_regions && bit_test(s->sync_bits, i)) {
		i++;
		n++;
	}
	off = first << s->region_shift;
	len = n << s->region_shift;
	if (off + len > s->vol_size)
		len = s->vol_size - off;
	if (s->split) { /* home reads (region_read_home) */
		s->r_first = first;
		s->r_off = off;
		s->r_len = (uint32_t)len;
		if (tsr_worker_send(s->home, region_read_home, s) < 0)
			return; /* out of memory: again at the next pass */
		s->sync_next = i;
		s->read_inflight = true;
		s->read_gen_issued = s->read_gen;
		return;
	}
	/* vol_size may be ahead of the volume (tsr_site_source_grow: the
	 * target grows first): read no further than the volume's end */
	live = tsr_vol_size(s->vol);
	if (off >= live) { /* nothing was written there: nothing to copy */
		s->sync_next = i;
		return;
	}
	if (off + len > live)
		len = live - off;
	ret = tsr_vol_read(s->vol, tsr_worker_io(s->worker), off, (uint32_t)len, s->rbuf,
			   region_read_done, s);
	if (ret < 0) {
		if (ret != -EAGAIN) /* -EAGAIN: a full queue, again at the next pass */
			session_fail(s, "region read at %llu: %s", (unsigned long long)off,
				     strerror(-ret));
		return;
	}
	s->sync_next = i;
	s->read_inflight = true;
	s->read_gen_issued = s->read_gen;
	s->r_off = off;
	s->r_len = (uint32_t)len;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	const uint64_t *w = (const uint64_t *)p;
	size_t i;

	for (i = 0; i < len / 8; i++)
		if (w[i])
			return false;
	return true;
}

static void stop_finish(struct tsr_site_source *s);

static void region_read_done(void *arg, int status)
{
	struct tsr_site_source *s = arg;
	uint64_t i;

	s->read_inflight = false;
	if (s->stopping) {
		if (s->stop_wait_read)
			stop_finish(s);
		return;
	}
	schedule_pass(s);
	if (s->read_gen_issued != s->read_gen || !s->sync_active)
		return; /* the sync was dropped meanwhile */
	if (status == 1)
		return; /* split: past the volume's end, nothing to copy */
	if (status == -EAGAIN && s->split) {
		s->sync_next = s->r_first; /* home's queue was full: again */
		return;
	}
	if (status < 0) {
		session_fail(s, "region read at %llu: %s", (unsigned long long)s->r_off,
			     strerror(-status));
		return;
	}
	s->rbuf_ready = true;
	s->r_pos = 0;
	for (i = s->sync_next; i < s->n_regions && !bit_test(s->sync_bits, i); i++)
		;
	s->r_last = i >= s->n_regions;
	if (s->r_last) /* the last read completed: SYNC_END's place in the ack order */
		log_sync_end(s);
}

static void start_sync(struct tsr_site_source *s)
{
	struct tsr_site_hdr h = frame_hdr(s, TSR_SITE_SYNC_BEGIN, s->next_seq);

	if (s->sync_bits == NULL) {
		s->sync_bits = malloc(bitmap_bytes(s));
		if (s->sync_bits == NULL)
			return; /* again at the next pass */
	}
	if (tx_begin(s, &h, NULL, TX_CTL) < 0)
		return;
	s->tx_seq = s->next_seq++; /* SYNC_BEGIN takes a seq */
	memcpy(s->sync_bits, s->dirty, bitmap_bytes(s));
	memset(s->dirty, 0, bitmap_bytes(s));
	s->sync_count = s->dirty_count;
	s->dirty_count = 0;
	s->dirty_since_ns = 0;
	s->sync_total = s->sync_count * s->region_size;
	if (s->sync_total > s->vol_size)
		s->sync_total = s->vol_size;
	s->sync_done = 0;
	s->sync_next = 0;
	s->sync_end_seq = 0;
	s->sync_end_logged = false;
	s->sync_active = true;
	s->rbuf_ready = false;
	s->log_on = true; /* writes acked from here on are in the log */
	s->last_sync_compared = s->dig_valid;
	tsr_info("site source %s: sync of %llu regions (%llu bytes) begins at seq %llu%s",
		 tsr_vol_name(s->vol), (unsigned long long)s->sync_count,
		 (unsigned long long)s->sync_total, (unsigned long long)s->tx_seq,
		 s->dig_valid ? ", regions equal at the target (digests) are skipped" :
		 s->compare ? ", a full re-copy (the target sent no digests)" : "");
}

/* The region at off (n bytes of buf, read now) equals the target's. */
static bool region_same(const struct tsr_site_source *s, uint64_t off, const uint8_t *buf,
			uint32_t n)
{
	uint8_t d[TSR_SITE_DIGEST_LEN];
	uint64_t i = off >> s->region_shift;

	if (!s->dig_valid || i >= s->n_regions || !bit_test(s->dig_have, i))
		return false;
	tsr_site_digest(buf, n, d);
	return memcmp(d, s->dig + i * TSR_SITE_DIGEST_LEN, TSR_SITE_DIGEST_LEN) == 0;
}

static void send_region(struct tsr_site_source *s)
{
	uint32_t pos, end, n;
	bool zero = false;
	struct tsr_site_hdr h;

	/* regions the target holds already (equal digests) are not sent */
	while (s->r_pos < s->r_len) {
		n = s->r_len - s->r_pos < s->region_size ? s->r_len - s->r_pos : s->region_size;
		if (!region_same(s, s->r_off + s->r_pos, s->rbuf + s->r_pos, n))
			break;
		s->r_pos += n;
		s->sync_done += n;
		s->region_bytes_same += n;
	}
	if (s->r_pos >= s->r_len) { /* the whole read was there already */
		s->rbuf_ready = false;
		if (s->r_last && s->sync_active) /* the log (and SYNC_END) goes next */
			s->sync_active = false;
		return;
	}
	pos = end = s->r_pos;
	/* one frame per run of all-zero (ZERO) or data (WRITE) regions */
	while (end < s->r_len) {
		n = s->r_len - end < s->region_size ? s->r_len - end : s->region_size;
		if (end != pos && region_same(s, s->r_off + end, s->rbuf + end, n))
			break;
		if (end == pos)
			zero = all_zero(s->rbuf + end, n);
		else if (all_zero(s->rbuf + end, n) != zero)
			break;
		end += n;
	}
	h = frame_hdr(s, zero ? TSR_SITE_ZERO : TSR_SITE_WRITE, s->next_seq);
	h.offset = s->r_off + pos;
	h.length = end - pos;
	s->tx_len = end - pos;
	if (tx_begin(s, &h, zero ? NULL : s->rbuf + pos, TX_REGION) < 0) {
		session_fail(s, "cannot frame a region");
		return;
	}
	s->next_seq++;
	s->tx_region = true;
	s->rbuf_in_tx = true;
}

static void send_entry(struct tsr_site_source *s)
{
	struct log_entry *e = s->cursor;
	struct tsr_site_hdr h;
	uint64_t seq = e->seq ? e->seq : s->next_seq;

	if (e->kind == ENT_SYNC_END) {
		h = frame_hdr(s, TSR_SITE_SYNC_END, seq);
	} else if (e->kind == ENT_MARKER) {
		struct tsr_site_marker m = {
		    .members = s->group ? __atomic_load_n(&s->group->members, __ATOMIC_RELAXED) : 1};
		int n;

		snprintf(m.group, sizeof(m.group), "%s", s->open.group);
		n = tsr_site_marker_pack(&m, s->mk_buf);
		if (n < 0) {
			session_fail(s, "cannot frame a marker");
			return;
		}
		h = frame_hdr(s, TSR_SITE_MARKER, seq);
		h.offset = e->offset;
		h.length = (uint32_t)n;
		if (tx_begin(s, &h, s->mk_buf, TX_ENTRY) < 0) {
			session_fail(s, "cannot frame a marker");
			return;
		}
		s->markers_sent++;
		s->last_marker_sent = e->offset;
		goto sent;
	} else {
		h = frame_hdr(s, e->kind == ENT_WRITE ? TSR_SITE_WRITE : TSR_SITE_ZERO, seq);
		h.offset = e->offset;
		h.length = e->len;
	}
	if (tx_begin(s, &h, e->kind == ENT_WRITE ? entry_data(e) : NULL, TX_ENTRY) < 0) {
		session_fail(s, "cannot frame a log entry");
		return;
	}
sent:
	if (e->seq == 0) {
		e->seq = seq;
		s->next_seq++;
	}
	s->tx_entry = e;
	s->cursor = e->next;
}

static void refill_tokens(struct tsr_site_source *s, uint64_t t)
{
	double burst = (double)s->max_bps / 10.0;

	if (!s->max_bps)
		return;
	if (s->tokens_ns && t > s->tokens_ns)
		s->tokens += (double)s->max_bps * (double)(t - s->tokens_ns) / NS_PER_SEC;
	if (s->tokens > burst)
		s->tokens = burst;
	s->tokens_ns = t;
}

static void update_events(struct tsr_site_source *s)
{
	uint32_t ev = EPOLLIN;

	if (s->fd < 0 || s->sess == SESS_CONNECT || s->sess == SESS_TLS)
		return;
	if ((s->txk != TX_NONE && s->tx_want == POLLOUT) ||
	    ((s->bb_sent < s->bb_len || s->run_len > 0) && s->bb_want == POLLOUT) ||
	    (s->t != NULL && tsr_site_tls_pending(s->t)))
		ev |= EPOLLOUT;
	set_events(s, ev);
}

/* buf[*sent .. len) to TLS in gathered writes whose records stay queued
 * for one send (tsr_site_tls_write_gather_more): 0 when all of it went,
 * -EAGAIN (bb_want set; call again with buf unchanged), or an error. */
static int gather_out(struct tsr_site_source *s, const uint8_t *buf, size_t len, size_t *sent)
{
	ssize_t n;

	while (*sent < len) {
		n = tsr_site_tls_write_gather_more(s->t, buf + *sent, len - *sent);
		if (n < 0) {
			if (n == -EAGAIN)
				s->bb_want = tsr_site_tls_want(s->t);
			return (int)n;
		}
		*sent += (size_t)n;
	}
	return 0;
}

/* Hand the run, then the batch, to TLS (their records queued, sent when the
 * queue is full): 0 when all of it went (both empty again), -EAGAIN
 * (bb_want set; call again with them unchanged before), or the transport's
 * error. */
static int batch_stage(struct tsr_site_source *s)
{
	int ret;

	if (s->run_len > 0) {
		if ((ret = gather_out(s, s->run, s->run_len, &s->run_sent)) < 0)
			return ret;
		run_drop(s);
	}
	if ((ret = gather_out(s, s->bb, s->bb_len, &s->bb_sent)) < 0)
		return ret;
	s->bb_len = s->bb_sent = 0;
	return 0;
}

/* batch_stage, then the queued records in one send.  Records the socket
 * did not take yet wait for POLLOUT (update_events); the next call sends
 * them. */
static int batch_flush(struct tsr_site_source *s)
{
	int ret = batch_stage(s);

	if (ret < 0)
		return ret;
	ret = tsr_site_tls_flush(s->t);
	return ret == -EAGAIN ? 0 : ret;
}

/*
 * The frame in tx is a log entry's, uncompressed, in its slab: its header
 * goes into the entry's slot and the frame joins the run when it lies right
 * behind it (the next entry logged) and the batch is empty, else starts a
 * new run once what is pending went to TLS.  1, -EAGAIN or an error, like
 * tx_step.
 */
static int tx_run(struct tsr_site_source *s)
{
	struct log_entry *e = s->tx_entry;
	size_t frame = TSR_SITE_HDR_SIZE + s->tx.payload_len;
	int ret;

	if (!(s->run_slab == e->slab && s->run + s->run_len == e->wire && s->bb_len == 0) &&
	    (s->run_len > 0 || s->bb_len > 0) && (ret = batch_stage(s)) < 0)
		return ret;
	memcpy(e->wire, s->tx.hdr_buf, TSR_SITE_HDR_SIZE);
	if (s->run_len == 0) {
		s->run = e->wire;
		s->run_slab = e->slab;
		e->slab->refs++;
	}
	s->run_len += frame;
	s->tx.sent = frame;
	return 1;
}

/*
 * Move the frame in tx on: a log entry's in its slab onto the run (tx_run);
 * else into the batch (behind the run: batch_stage hands the run to TLS
 * first) when it fits (a frame up to SRC_BATCH_COPY whole, a larger one's
 * header), else after the run and the batch went to TLS; a large payload
 * then goes to TLS directly, after the batch that holds its header.  1: all
 * of the frame is in the batch or the run, or sent; -EAGAIN; an error.
 */
static int tx_step(struct tsr_site_source *s)
{
	struct tsr_site_tx *tx = &s->tx;
	size_t frame = TSR_SITE_HDR_SIZE + tx->payload_len, put;
	ssize_t n;
	int ret;

	if (tx->sent == 0 && s->txk == TX_ENTRY && s->tx_entry->slab != NULL && !s->tx_compressed)
		return tx_run(s);
	if (tx->sent == 0) {
		put = frame <= SRC_BATCH_COPY ? frame : TSR_SITE_HDR_SIZE;
		if (s->bb_len + put > SRC_BATCH && (ret = batch_stage(s)) < 0)
			return ret;
		memcpy(s->bb + s->bb_len, tx->hdr_buf, TSR_SITE_HDR_SIZE);
		if (put == frame && tx->payload_len)
			memcpy(s->bb + s->bb_len + TSR_SITE_HDR_SIZE, tx->payload,
			       tx->payload_len);
		s->bb_len += put;
		tx->sent = put;
	}
	if (tx->sent < frame && (ret = batch_stage(s)) < 0)
		return ret;
	while (tx->sent < frame) {
		n = tsr_site_tls_write_gather(s->t, tx->payload + (tx->sent - TSR_SITE_HDR_SIZE),
					      frame - tx->sent);
		if (n < 0)
			return (int)n;
		tx->sent += (size_t)n;
	}
	return 1;
}

/* Send what can go now: tx first, then a BARRIER, a sync step, the log. */
/*
 * A group member keeps sending past a full window until its next MARKER is
 * out: the target releases a member's frames (and so ACKs them) only at
 * markers, and the ACK that frees the window is the one of the BARRIER that
 * follows each MARKER.  Stopping between two markers would wait for an ACK
 * that needs the next marker: a deadlock.  So the bytes in flight of a
 * member stay below the window plus one interval (2 MiB or the one host
 * write, at most 32 MiB, that crossed it), which the target's held queue
 * takes (HOLD_MAX_BYTES in site_server.c).
 */
static bool window_open(const struct tsr_site_source *s)
{
	return s->group != NULL && s->log_on && !s->sync_active && !s->at_marker;
}

static void pump(struct tsr_site_source *s)
{
	int ret;

	s->unsent_new = 0;
	if (s->stopping || s->fd < 0 || s->sess < SESS_HELLO || s->sess == SESS_DEAD)
		return;
	for (;;) {
		if (s->txk != TX_NONE) {
			ret = tx_step(s);
			if (ret == -EAGAIN) {
				s->tx_want = tsr_site_tls_want(s->t);
				break;
			}
			if (ret < 0) {
				session_fail(s, "send: %s", strerror(-ret));
				return;
			}
			tx_finished(s);
			continue;
		}
		if (s->sess != SESS_READY)
			break;
		if (s->sent_seq > s->barrier_seq &&
		    (s->barrier_now || s->paused || s->cum_sent - s->cum_acked >= SRC_WINDOW ||
		     tsr_mono_ns() - s->last_barrier_ns >= s->barrier_ns)) {
			send_barrier(s);
			continue;
		}
		if (s->paused || (s->cum_sent - s->cum_acked >= SRC_WINDOW && !window_open(s)))
			break;
		if (s->max_bps && s->tokens <= 0)
			break;
		if (!s->log_on && !s->sync_active) {
			start_sync(s);
			if (s->txk == TX_NONE)
				break;
			continue;
		}
		if (s->sync_active) {
			if (s->rbuf_ready && !s->rbuf_in_tx) {
				send_region(s);
				continue;
			}
			if (!s->read_inflight && !s->rbuf_ready && !s->sync_end_logged) {
				issue_region_read(s);
				if (s->sync_active || s->sess != SESS_READY)
					break;
				continue; /* an empty sync: SYNC_END is in the log */
			}
			break;
		}
		if (s->cursor != NULL) {
			send_entry(s);
			continue;
		}
		break;
	}
	ret = batch_flush(s);
	if (ret < 0 && ret != -EAGAIN) {
		session_fail(s, "send: %s", strerror(-ret));
		return;
	}
	update_events(s);
}

/* Keep in s->holes only the regions whose target digest is not that of a
 * zero region (or is missing, or the region is the volume's shorter last). */
static void holes_not_zero_there(struct tsr_site_source *s)
{
	for (uint64_t i = 0; i < s->n_regions; i++) {
		bool partial = i == s->n_regions - 1 && (s->vol_size & (s->region_size - 1));

		if (bit_test(s->holes, i) && !partial && bit_test(s->dig_have, i) &&
		    memcmp(s->dig + i * TSR_SITE_DIGEST_LEN, s->dig_zero, TSR_SITE_DIGEST_LEN) == 0)
			s->holes[i / 64] &= ~(1ull << (i % 64));
	}
}

/*
 * VOLUME_OPEN's reply: the target applied through a; fresh: it is a volume
 * created again since (TSR_SITE_F_FRESH).  A target that holds less than it
 * acknowledged before (fresh, or a below what it ACKed: its volume or state
 * was replaced) gets every region: neither the log tail nor the regions the
 * log overflowed into cover what it lost.
 */
static void on_open(struct tsr_site_source *s, uint64_t a, bool replay, bool fresh)
{
	struct log_entry *e, *last_sent = NULL;
	bool ok;

	s->replay = replay;
	if (fresh || (s->first_session_done && a < s->acked_seq)) {
		log_to_dirty(s);
		s->dirty_count += bits_mark(s, s->dirty, 0, s->vol_size);
		if (s->dirty_since_ns == 0)
			s->dirty_since_ns = tsr_mono_ns();
		s->full_copies++;
		tsr_warn("site source %s -> %s: the target %s (it acknowledged seq %llu before, "
			 "holds seq %llu): copying the whole volume (%llu regions)",
			 tsr_vol_name(s->vol), s->address,
			 fresh ? "volume was created again" : "went back",
			 (unsigned long long)s->acked_seq, (unsigned long long)a,
			 (unsigned long long)s->n_regions);
	}
	if (!s->first_session_done && s->holes != NULL) {
		/* the target has history: zero what is a hole here; with its
		 * digests, only the holes where it holds something else than
		 * zeros (a failback: what the old primary wrote) */
		if (s->dig_valid)
			holes_not_zero_there(s);
		if (a > 0 || s->dig_valid)
			dirty_merge(s, s->holes);
		free(s->holes);
		s->holes = NULL;
	}
	s->cursor = NULL; /* everything the target applied goes */
	on_ack(s, a);
	s->acked_seq = a;
	for (e = s->head; e != NULL && e->seq != 0; e = e->next)
		last_sent = e;
	if (!s->log_on || s->sync_active)
		ok = false;
	else if (s->head != NULL && s->head->seq != 0)
		ok = s->head->seq == a + 1;
	else /* nothing sent is held: the target must be where we numbered to */
		ok = s->next_seq == a + 1 || (!s->first_session_done && s->next_seq == 1);
	if (ok) {
		s->next_seq = last_sent ? last_sent->seq + 1 : a + 1;
		s->cursor = s->head;
		if (replay) { /* the resend, then SYNC_END */
			e = entry_new(s, ENT_SYNC_END, 0, 0, 0, tsr_mono_ns());
			if (e != NULL) {
				if (last_sent == NULL) {
					e->next = s->head;
					s->head = e;
					if (s->tail == NULL)
						s->tail = e;
				} else {
					e->next = last_sent->next;
					last_sent->next = e;
					if (s->tail == last_sent)
						s->tail = e;
				}
				s->log_entries++;
				s->log_cost += SRC_ENTRY_COST;
				s->cursor = s->head;
			} else {
				ok = false;
			}
		}
	}
	if (!ok) {
		log_to_dirty(s); /* everything not applied there becomes regions */
		s->next_seq = a + 1;
	}
	s->sent_seq = s->barrier_seq = a;
	s->cum_sent = s->cum_acked = 0;
	s->at_marker = false; /* resent from a released marker: on to the next one */
	s->n_ckpt = 0;
	s->last_barrier_ns = tsr_mono_ns();
	if (s->first_session_done)
		s->reconnects++;
	s->first_session_done = true;
	s->last_error[0] = '\0';
	/* the next "being created" answer starts from SRC_OPEN_RETRY_NS again;
	 * a session that ends by a grow's reopen passes no session_fail */
	s->open_busy_ns = 0;
	s->open_attach_n = 0;
	s->sess = SESS_READY;
	if (s->grow_pending)
		grow_end(s, 0, "");
	tsr_info("site source %s -> %s: stream %llu open at seq %llu%s: %s", tsr_vol_name(s->vol),
		 s->address, (unsigned long long)s->stream, (unsigned long long)a,
		 replay ? " (replay)" : "", ok ? "resending the log" : "syncing changed regions");
}

static void demote(struct tsr_site_source *s, const char *why)
{
	tsr_vol_set_write_fence(s->vol, -EROFS);
	s->demoted = true;
	snprintf(s->last_error, sizeof(s->last_error), "demoted: %.140s", why);
	tsr_error("site source %s: the target refused us as stale (%s): demoted, host writes "
		  "fenced (read-only); promote or resync to replicate again",
		  tsr_vol_name(s->vol), why);
	if (s->grow_pending)
		grow_end(s, -ESTALE, s->last_error);
	session_close(s);
	s->sess = SESS_DEAD;
	log_to_dirty(s);
	if (s->on_demoted != NULL)
		s->on_demoted(s->cb_arg, why);
}

/* A DIGEST frame (SESS_DIGEST): store the target's digests; the end marker
 * (length 0) completes the open. */
static void on_digest(struct tsr_site_source *s, const struct tsr_site_hdr *h,
		      const uint8_t *payload)
{
	uint64_t first = h->offset / TSR_SITE_DIGEST_REGION, n = h->length / TSR_SITE_DIGEST_LEN;

	if (h->opcode != TSR_SITE_DIGEST || h->stream != s->stream) {
		session_fail(s, "expected DIGEST, got %s", tsr_site_op_name(h->opcode));
		return;
	}
	if (n == 0) {
		s->dig_valid = true;
		on_open(s, s->open_a, s->open_replay, s->open_fresh);
		return;
	}
	if (first >= s->n_regions || n > s->n_regions - first) {
		session_fail(s, "target sent digests past the volume's end (offset %llu, %llu "
			     "regions)", (unsigned long long)h->offset, (unsigned long long)n);
		return;
	}
	memcpy(s->dig + first * TSR_SITE_DIGEST_LEN, payload, n * TSR_SITE_DIGEST_LEN);
	for (uint64_t i = first; i < first + n; i++)
		s->dig_have[i / 64] |= 1ull << (i % 64);
}

/* One whole received frame. */
static void on_frame(struct tsr_site_source *s, const struct tsr_site_hdr *h,
		     const uint8_t *payload)
{
	struct tsr_site_hello peer;
	struct tsr_site_error err;

	if (h->opcode == TSR_SITE_ERROR) {
		if (tsr_site_error_parse(payload, h->payload_len, &err) < 0) {
			session_fail(s, "target sent a malformed ERROR");
			return;
		}
		/* "retry" answers to VOLUME_OPEN: session_fail's warning says it */
		if (!(s->sess == SESS_OPEN && (err.code == EBUSY || err.code == EINPROGRESS)))
			tsr_error("site source %s: target refused seq %llu: %s (%s)",
				  tsr_vol_name(s->vol), (unsigned long long)h->seq, err.msg,
				  strerror(err.code));
		if (s->sess == SESS_OPEN && err.code == ESTALE) {
			demote(s, err.msg[0] ? err.msg : "target promoted");
			return;
		}
		if (s->sess == SESS_OPEN && err.code == EINPROGRESS && !s->grow_pending &&
		    open_answer_attaching(err.msg)) {
			/* not the create's backoff continued (session 17) */
			s->open_busy = true;
			s->open_busy_ns = 0;
			s->open_attach_retry = true;
			s->open_attach_n++;
		} else if (s->sess == SESS_OPEN && err.code == EINPROGRESS && !s->grow_pending) {
			s->open_busy = true;
			s->open_busy_ns = s->open_busy_ns ? 2 * s->open_busy_ns : SRC_OPEN_RETRY_NS;
			if (s->open_busy_ns > s->retry_ns)
				s->open_busy_ns = s->retry_ns;
		}
		if (s->grow_pending && s->sess == SESS_OPEN) {
			/* its old session is closing, or it grows its volume and
			 * answers once done: retry (tick_cb's deadline bounds it) */
			if (err.code == EBUSY || err.code == EINPROGRESS) {
				s->grow_busy = true;
				s->grow_told_growing |= err.code == EINPROGRESS;
			} else {
				grow_end(s, -(int)err.code, err.msg);
			}
		}
		session_fail(s, "target error on seq %llu: %s (%s)", (unsigned long long)h->seq,
			     err.msg, strerror(err.code));
		return;
	}
	switch (s->sess) {
	case SESS_HELLO:
		if (h->opcode != TSR_SITE_HELLO || !(h->flags & TSR_SITE_F_REPLY) ||
		    tsr_site_hello_parse(payload, h->payload_len, &peer) < 0) {
			session_fail(s, "bad HELLO reply (%s)", tsr_site_op_name(h->opcode));
			return;
		}
		{
			struct tsr_site_hdr o = frame_hdr(s, TSR_SITE_VOLUME_OPEN, 0);
			int n;

			if (s->group) /* the count may have grown since start */
				s->open.members = __atomic_load_n(&s->group->members,
								  __ATOMIC_RELAXED);
			n = tsr_site_open_pack(&s->open, s->ctl_buf);

			/* a sync is due (initial copy, overflow, a cut sync): ask
			 * what the target holds, to send only what differs */
			s->dig_asked = s->compare && (!s->log_on || s->sync_active);
			if (s->dig_asked) {
				o.flags = TSR_SITE_F_DIGEST;
				memset(s->dig_have, 0, bitmap_bytes(s));
			}
			o.offset = s->vol_size;
			o.length = (uint32_t)n;
			if (n < 0 || tx_begin(s, &o, s->ctl_buf, TX_CTL) < 0) {
				session_fail(s, "cannot frame VOLUME_OPEN");
				return;
			}
		}
		s->sess = SESS_OPEN;
		return;
	case SESS_OPEN:
		if (h->opcode != TSR_SITE_VOLUME_OPEN || !(h->flags & TSR_SITE_F_REPLY) ||
		    h->stream != s->stream) {
			session_fail(s, "bad VOLUME_OPEN reply (%s)", tsr_site_op_name(h->opcode));
			return;
		}
		if (s->dig_asked) { /* the digests come first */
			s->open_a = h->seq;
			s->open_replay = h->flags & TSR_SITE_F_REPLAY;
			s->open_fresh = h->flags & TSR_SITE_F_FRESH;
			s->sess = SESS_DIGEST;
			return;
		}
		on_open(s, h->seq, h->flags & TSR_SITE_F_REPLAY, h->flags & TSR_SITE_F_FRESH);
		return;
	case SESS_DIGEST:
		on_digest(s, h, payload);
		return;
	case SESS_READY:
		if (h->opcode == TSR_SITE_ACK && h->stream == s->stream) {
			on_ack(s, h->seq);
			return;
		}
		session_fail(s, "unexpected %s frame from the target", tsr_site_op_name(h->opcode));
		return;
	default:
		session_fail(s, "unexpected frame");
	}
}

static void start_hello(struct tsr_site_source *s)
{
	struct tsr_site_hdr h = {.opcode = TSR_SITE_HELLO};
	int n = tsr_site_hello_pack(&s->hello, s->ctl_buf);

	h.length = (uint32_t)n;
	if (n < 0 || tx_begin(s, &h, s->ctl_buf, TX_CTL) < 0) {
		session_fail(s, "cannot frame HELLO");
		return;
	}
	s->sess = SESS_HELLO;
}

static void fd_cb(void *arg, uint32_t events)
{
	struct tsr_site_source *s = arg;
	int ret, err = 0;
	socklen_t elen = sizeof(err);

	(void)events;
	if (s->stopping || s->fd < 0)
		return;
	if (s->sess == SESS_CONNECT) {
		if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
			err = errno;
		if (err) {
			session_fail(s, "connect: %s", strerror(err));
			return;
		}
		ret = tsr_site_tls_new(s->tls, s->fd, s->peer_name, &s->t);
		if (ret < 0) {
			session_fail(s, "TLS: %s", strerror(-ret));
			return;
		}
		s->sess = SESS_TLS;
	}
	if (s->sess == SESS_TLS) {
		ret = tsr_site_tls_handshake(s->t);
		if (ret == -EAGAIN) {
			set_events(s, tsr_site_tls_want(s->t) == POLLOUT ? EPOLLOUT : EPOLLIN);
			return;
		}
		if (ret < 0) {
			session_fail(s, "TLS handshake with %s: %s", s->peer_name, strerror(-ret));
			return;
		}
		start_hello(s);
		if (s->sess != SESS_HELLO)
			return;
	}
	for (;;) {
		ret = tsr_site_rx_poll(&s->rx, s->t);
		if (ret == 1) {
			on_frame(s, &s->rx.hdr, s->rx.payload);
			if (s->fd < 0 || s->sess == SESS_IDLE || s->sess == SESS_DEAD)
				return;
			continue;
		}
		if (ret == -EAGAIN)
			break;
		if (ret == 0)
			session_fail(s, "the target closed the connection");
		else
			session_fail(s, "receive: %s", strerror(-ret));
		return;
	}
	pump(s);
	schedule_pass(s);
}

static void tick_cb(void *arg, uint32_t events)
{
	struct tsr_site_source *s = arg;
	uint64_t exp, t = tsr_mono_ns();

	(void)events;
	if (read(s->tfd, &exp, sizeof(exp)) < 0 && errno != EAGAIN)
		return;
	if (s->stopping) {
		ho_ask(s); /* split: a stop waits for a read's result (r_back_lost) */
		return;
	}
	if (s->grow_pending && t >= s->grow_deadline_ns)
		grow_end(s, -ETIMEDOUT, s->grow_told_growing ?
			 "the target was still growing its volume when the time ran out" :
			 "the target did not answer the reopen in time");
	refill_tokens(s, t);
	if (t - s->rate_mark_ns >= NS_PER_SEC) {
		double cur = (double)(s->bytes_shipped - s->rate_mark_bytes) * NS_PER_SEC /
			     (double)(t - s->rate_mark_ns);

		s->rate_bps = s->rate_mark_ns ? 0.5 * s->rate_bps + 0.5 * cur : cur;
		s->rate_mark_bytes = s->bytes_shipped;
		s->rate_mark_ns = t;
	}
	if (s->running && s->sess == SESS_IDLE && !s->demoted && t >= s->retry_at_ns)
		session_connect(s);
	if (s->group && t >= s->group->next_ns) /* any member's tick ticks the group */
		group_mark(s->group);
	ho_ask(s);
	pump(s);
	trim_tick(s, t);
	publish(s);
	rc_flush(s);
}

/* ---- start, stop, pause, stats ---- */

struct sync_call {
	struct tsr_site_source *s;
	void (*fn)(struct tsr_site_source *s, struct sync_call *c);
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int status;
	uint64_t *scan; /* initial copy's allocated regions, or NULL */
	uint64_t size;  /* grow_fn: the new size */
	unsigned timeout_ms;    /* grow_fn */
	tsr_site_grow_fn grow_cb; /* grow_fn */
	void *grow_arg;
	char *why;              /* grow_fn: its refusal */
	size_t why_len;
};

static void sync_call_done(struct sync_call *c, int status)
{
	pthread_mutex_lock(&c->lock);
	c->status = status;
	c->done = true;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

static void sync_call_msg(struct tsr_worker *w, void *arg)
{
	struct sync_call *c = arg;

	(void)w;
	c->fn(c->s, c);
}

/* Run fn on w and wait until it calls sync_call_done. */
static int run_on(struct tsr_site_source *s, struct tsr_worker *w, struct sync_call *c)
{
	int ret;

	c->s = s;
	c->done = false;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	ret = tsr_worker_send(w, sync_call_msg, c);
	if (ret == 0) {
		pthread_mutex_lock(&c->lock);
		while (!c->done)
			pthread_cond_wait(&c->cond, &c->lock);
		pthread_mutex_unlock(&c->lock);
		ret = c->status;
	}
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	return ret;
}

/* Run fn on the (pump) worker and wait until it calls sync_call_done. */
static int run_on_worker(struct tsr_site_source *s, struct sync_call *c)
{
	return run_on(s, s->worker, c);
}

static void install_fn(struct tsr_site_source *s, struct sync_call *c)
{
	struct tsr_vol_hooks h = {.on_write = hook_write, .on_zero = hook_zero, .arg = s};
	int ret = tsr_worker_watch(s->worker, s->tfd, EPOLLIN, tick_cb, s);

	if (ret == 0 && !s->split) { /* split: hook_fn on home, next */
		ret = tsr_vol_set_hooks(s->vol, &h);
		if (ret < 0)
			tsr_worker_unwatch(s->worker, s->tfd);
	}
	if (ret == 0 && s->group) {
		s->group->mem[s->group->n++] = s;
		if (s->group->next_ns == 0)
			s->group->next_ns = tsr_mono_ns() + s->group->interval_ns;
	}
	sync_call_done(c, ret);
}

/* split, on home: the hooks (install_fn watched the timer on worker) */
static void hook_fn(struct tsr_site_source *s, struct sync_call *c)
{
	struct tsr_vol_hooks h = {.on_write = hook_write, .on_zero = hook_zero, .arg = s};

	sync_call_done(c, tsr_vol_set_hooks(s->vol, &h));
}

/* split, on worker: install_fn undone after hook_fn failed */
static void unwatch_fn(struct tsr_site_source *s, struct sync_call *c)
{
	tsr_worker_unwatch(s->worker, s->tfd);
	sync_call_done(c, 0);
}

static void go_fn(struct tsr_site_source *s, struct sync_call *c)
{
	if (c->scan != NULL)
		dirty_merge(s, c->scan);
	s->retry_at_ns = 0;
	s->running = true;
	session_connect(s);
	publish(s);
	sync_call_done(c, 0);
}

/* The initial copy's regions: every allocated extent into bits, the holes
 * into holes (when not NULL; see struct tsr_site_source). */
static int scan_allocated(struct tsr_site_source *s, uint64_t *bits, uint64_t *holes)
{
	struct tsr_extent ext[256];
	uint64_t off = 0, marked = 0;
	size_t n, i;
	int ret;

	while (off < s->vol_size) {
		ret = tsr_vol_block_status(s->vol, off, s->vol_size - off, ext, 256, &n);
		if (ret < 0)
			return ret;
		if (n == 0)
			break;
		for (i = 0; i < n; i++) {
			if (!(ext[i].flags & TSR_EXTENT_HOLE))
				marked += bits_mark(s, bits, ext[i].offset, ext[i].length);
			else if (holes != NULL)
				bits_mark(s, holes, ext[i].offset, ext[i].length);
			off = ext[i].offset + ext[i].length;
		}
	}
	tsr_info("site source %s: initial copy of %llu regions of %u bytes", tsr_vol_name(s->vol),
		 (unsigned long long)marked, s->region_size);
	return 0;
}

static int resolve(struct tsr_site_source *s, const char *address)
{
	char host[256];
	const char *colon = strrchr(address, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	size_t hlen;
	int ret;

	if (colon == NULL || colon == address || colon[1] == '\0' ||
	    (hlen = (size_t)(colon - address)) >= sizeof(host)) {
		tsr_error("site source: address '%s' is not HOST:PORT", address);
		return -EINVAL;
	}
	memcpy(host, address, hlen);
	host[hlen] = '\0';
	if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') {
		memmove(host, host + 1, hlen - 2);
		host[hlen - 2] = '\0';
	}
	ret = getaddrinfo(host, colon + 1, &hints, &res);
	if (ret != 0 || res == NULL) {
		tsr_error("site source: cannot resolve '%s': %s", address, gai_strerror(ret));
		return -EINVAL;
	}
	memcpy(&s->addr, res->ai_addr, res->ai_addrlen);
	s->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* Join group name on worker (control thread).  Errors: -EXDEV the group
 * runs on another worker, -ENOSPC full, -ENOMEM. */
static int group_join(struct tsr_site_source *s, const char *name, unsigned members,
		      unsigned interval_ms, const char *marker_file)
{
	struct src_group *g;
	int ret = 0;

	pthread_mutex_lock(&g_groups_lock);
	for (g = g_groups; g; g = g->next)
		if (strcmp(g->name, name) == 0)
			break;
	if (g == NULL) {
		g = calloc(1, sizeof(*g));
		if (g == NULL) {
			ret = -ENOMEM;
			goto out;
		}
		snprintf(g->name, sizeof(g->name), "%s", name);
		g->members = members;
		g->worker = s->worker;
		g->interval_ns = (uint64_t)(interval_ms ? interval_ms : 200) * NS_PER_MS;
		ret = site_mark_open(&g->mark, marker_file, realtime_us());
		if (ret) {
			free(g);
			goto out;
		}
		g->next = g_groups;
		g_groups = g;
	}
	if (g->worker != s->worker)
		ret = -EXDEV;
	else if (g->refs >= TSR_SITE_GROUP_MAX)
		ret = -ENOSPC;
	if (ret == 0) {
		/* a member enabled later counts more members: every marker and
		 * VOLUME_OPEN announces the largest count from here on */
		if (members > g->members)
			__atomic_store_n(&g->members, members, __ATOMIC_RELAXED);
		g->refs++;
		s->group = g;
	} else if (g->refs == 0) { /* made for us: forget it */
		struct src_group **pp = &g_groups;

		while (*pp != g)
			pp = &(*pp)->next;
		*pp = g->next;
		free(g);
	}
out:
	pthread_mutex_unlock(&g_groups_lock);
	return ret;
}

static void group_leave(struct tsr_site_source *s)
{
	struct src_group *g = s->group;

	if (g == NULL)
		return;
	s->group = NULL;
	pthread_mutex_lock(&g_groups_lock);
	if (--g->refs == 0) {
		struct src_group **pp = &g_groups;

		while (*pp != g)
			pp = &(*pp)->next;
		*pp = g->next;
		free(g);
	}
	pthread_mutex_unlock(&g_groups_lock);
}

static void source_free(struct tsr_site_source *s)
{
	struct log_entry *e, *next;

	if (s == NULL)
		return;
	group_leave(s);
	for (e = s->ho_head; e != NULL; e = next) { /* never handed over (start failed) */
		next = e->next;
		ho_entry_free(e);
	}
	rc_flush(s);
	for (e = atomic_load(&s->rc_stack); e != NULL; e = next) {
		next = e->next;
		free(e);
	}
	for (e = s->rc_home; e != NULL; e = next) {
		next = e->next;
		free(e);
	}
	s->pool_max = 0; /* every slab and entry released from here is freed */
	for (e = s->head; e != NULL; e = next) {
		next = e->next;
		entry_release(s, e);
	}
	entry_release(s, s->tx_orphan);
	run_drop(s);
	slab_put(s, s->slab_cur);
	for (struct slab *sl = s->slab_free, *nsl; sl != NULL; sl = nsl) {
		nsl = sl->next;
		slab_unmap(s, sl);
	}
	for (e = s->meta_free; e != NULL; e = next) {
		next = e->next;
		free(e);
	}
	free(s->dirty);
	free(s->holes);
	free(s->sync_bits);
	free(s->dig);
	free(s->dig_have);
	free(s->cbuf);
	free(s->bb);
	tsr_site_codec_destroy(s->codec);
	tsr_free_aligned(s->rbuf);
	tsr_site_rx_fini(&s->rx);
	if (s->tfd >= 0)
		close(s->tfd);
	pthread_mutex_destroy(&s->stats_lock);
	free(s);
}

static bool str_ok(const char *p, size_t max)
{
	return p != NULL && p[0] != '\0' && strlen(p) <= max;
}

int tsr_site_source_start(const struct tsr_site_source_opts *opts, struct tsr_site_source **out)
{
	struct tsr_site_source *s;
	struct tsr_site_layout lay;
	struct itimerspec its = {.it_interval = {.tv_nsec = SRC_TICK_MS * NS_PER_MS},
				 .it_value = {.tv_nsec = SRC_TICK_MS * NS_PER_MS}};
	struct sync_call c = {0};
	struct tsr_worker *home;
	int ret;

	if (opts == NULL || out == NULL || opts->vol == NULL || opts->worker == NULL ||
	    opts->tls == NULL || !str_ok(opts->address, 255) || !str_ok(opts->peer_name, 255) ||
	    !str_ok(opts->site, TSR_SITE_NAME_MAX) || !str_ok(opts->cluster, TSR_SITE_NAME_MAX) ||
	    !str_ok(opts->target_volume, TSR_SITE_NAME_MAX) ||
	    !str_ok(opts->target_layout, TSR_SITE_LAYOUT_MAX) || opts->stream == 0 ||
	    tsr_site_layout_parse(opts->target_layout, &lay) < 0 ||
	    (opts->region_size &&
	     (opts->region_size < TSR_BLOCK_SIZE || (opts->region_size & (opts->region_size - 1)))))
		return -EINVAL;
	home = tsr_vol_home(opts->vol);
	if (home != NULL && home != opts->worker)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->fd = -1;
	s->tfd = -1;
	pthread_mutex_init(&s->stats_lock, NULL);
	s->vol = opts->vol;
	s->home = opts->worker;
	/* a group's markers cut its members' logs on one thread: no split */
	s->worker = opts->pump_worker != NULL && (opts->group == NULL || opts->group[0] == '\0')
			? opts->pump_worker : opts->worker;
	s->split = s->worker != s->home;
	s->trim_ms = (unsigned)tsr_test_env_ms("TSR_TEST_SITE_TRIM_MS", 100, SRC_TRIM_MS, SRC_TRIM_MS);
	s->tls = opts->tls;
	snprintf(s->address, sizeof(s->address), "%s", opts->address);
	snprintf(s->peer_name, sizeof(s->peer_name), "%s", opts->peer_name);
	snprintf(s->hello.site, sizeof(s->hello.site), "%s", opts->site);
	snprintf(s->hello.cluster, sizeof(s->hello.cluster), "%s", opts->cluster);
	snprintf(s->open.volume, sizeof(s->open.volume), "%s", opts->target_volume);
	snprintf(s->open.layout, sizeof(s->open.layout), "%s", opts->target_layout);
	s->open.compress = opts->compress;
	if (!tsr_valid_name(s->hello.site) || !tsr_valid_name(s->hello.cluster) ||
	    !tsr_valid_name(s->open.volume)) { /* tsr_valid_name: 1 valid, 0 not */
		ret = -EINVAL;
		goto err;
	}
	if (opts->group != NULL && opts->group[0] != '\0') {
		if (!str_ok(opts->group, TSR_SITE_NAME_MAX) || !tsr_valid_name(opts->group) ||
		    opts->group_members == 0 || opts->group_members > TSR_SITE_GROUP_MAX) {
			ret = -EINVAL;
			goto err;
		}
		snprintf(s->open.group, sizeof(s->open.group), "%s", opts->group);
		s->open.members = opts->group_members;
		ret = group_join(s, opts->group, opts->group_members, opts->group_interval_ms,
				 opts->marker_file);
		if (ret < 0) {
			tsr_warn("site source %s: consistency group %s: %s", tsr_vol_name(opts->vol),
				 opts->group, ret == -EXDEV ? "its volumes run on another worker "
				 "(attach every member on one node, after the group was set)" :
				 ret == -ENOSPC ? "more members than announced" : strerror(-ret));
			goto err;
		}
	}
	s->stream = opts->stream;
	s->epoch = opts->epoch;
	s->vol_size = tsr_vol_size(opts->vol);
	s->log_max = opts->log_max_bytes ? opts->log_max_bytes : 256ull << 20;
	s->pool_max = s->log_max < SRC_POOL_BYTES ? s->log_max : SRC_POOL_BYTES;
	s->region_size = opts->region_size ? opts->region_size : 64u << 10;
	s->region_shift = (unsigned)__builtin_ctz(s->region_size);
	s->n_regions = (s->vol_size + s->region_size - 1) >> s->region_shift;
	s->max_bps = opts->max_bps;
	s->barrier_ns = (opts->barrier_ms ? opts->barrier_ms : 100) * NS_PER_MS;
	s->send_batch = opts->send_batch ? opts->send_batch : SRC_SEND_BATCH;
	s->retry_ns = (opts->retry_ms ? opts->retry_ms : 1000) * NS_PER_MS;
	s->on_demoted = opts->on_demoted;
	s->cb_arg = opts->cb_arg;
	s->next_seq = 1;
	s->log_on = !opts->initial_copy;
	s->compare = opts->compare_digests && s->region_size == TSR_SITE_DIGEST_REGION;
	if (s->vol_size == 0 || s->vol_size % TSR_BLOCK_SIZE) {
		ret = -EINVAL;
		goto err;
	}
	ret = resolve(s, opts->address);
	if (ret < 0)
		goto err;
	ret = -ENOMEM;
	s->dirty = calloc(1, bitmap_bytes(s));
	s->rbuf = tsr_alloc_aligned(SRC_READ_MAX);
	s->bb = malloc(SRC_BATCH);
	if (s->compare) {
		s->dig = malloc(s->n_regions * TSR_SITE_DIGEST_LEN);
		s->dig_have = calloc(1, bitmap_bytes(s));
		if (s->dig == NULL || s->dig_have == NULL)
			goto err;
	}
	if (s->dirty == NULL || s->rbuf == NULL || s->bb == NULL || tsr_site_rx_init(&s->rx) < 0)
		goto err;
	if (opts->compress != TSR_SITE_COMPRESS_NONE) {
		ret = tsr_site_codec_create(opts->compress, &s->codec);
		if (ret < 0) {
			if (ret == -EPROTONOSUPPORT)
				ret = -EINVAL;
			goto err;
		}
		ret = -ENOMEM;
		s->cbuf = malloc(TSR_SITE_MAX_DATA);
		if (s->cbuf == NULL)
			goto err;
	}
	if (s->compare) {
		memset(s->rbuf, 0, TSR_SITE_DIGEST_REGION);
		tsr_site_digest(s->rbuf, TSR_SITE_DIGEST_REGION, s->dig_zero);
	}
	s->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (s->tfd < 0 || timerfd_settime(s->tfd, 0, &its, NULL) < 0) {
		ret = -errno;
		goto err;
	}
	s->pub.state = TSR_SITE_CONNECTING;
	s->pub.next_seq = 1;
	c.fn = install_fn;
	ret = run_on_worker(s, &c);
	if (ret < 0)
		goto err;
	if (s->split) {
		c.fn = hook_fn;
		ret = run_on(s, s->home, &c);
		if (ret < 0) {
			c.fn = unwatch_fn;
			run_on_worker(s, &c);
			goto err;
		}
	}
	/* hooks are on (writes acked from here are logged or marked): what
	 * was written before is on the volume, allocated */
	if (opts->initial_copy) {
		c.scan = calloc(1, bitmap_bytes(s));
		s->holes = calloc(1, bitmap_bytes(s));
		if (s->holes == NULL)
			tsr_warn("site source %s: no memory for the hole map: a restarted source "
				 "will not zero the target where the volume was trimmed",
				 tsr_vol_name(s->vol));
		if (c.scan == NULL || scan_allocated(s, c.scan, s->holes) < 0) {
			tsr_warn("site source %s: no allocation map: copying the whole volume",
				 tsr_vol_name(s->vol));
			if (c.scan != NULL)
				bits_mark(s, c.scan, 0, s->vol_size);
		}
	}
	c.fn = go_fn;
	if (c.scan != NULL || !opts->initial_copy)
		ret = run_on_worker(s, &c);
	else
		ret = -ENOMEM;
	free(c.scan);
	if (ret < 0) {
		tsr_site_source_stop(s);
		return ret;
	}
	tsr_info("site source %s -> %s (%s): started, stream %llu, %s, pump on worker%u",
		 tsr_vol_name(s->vol), s->address, s->open.volume, (unsigned long long)s->stream,
		 opts->initial_copy ? "initial copy of the allocated extents" : "log only",
		 tsr_worker_index(s->worker));
	*out = s;
	return 0;
err:
	source_free(s);
	return ret;
}

static void stop_signal(struct tsr_worker *w, void *arg)
{
	struct sync_call *c = arg;

	(void)w;
	sync_call_done(c, 0);
}

static void stop_finish(struct tsr_site_source *s)
{
	/* split: the tick ran on while the stop waited for the read */
	if (s->split && s->stop_wait_read)
		tsr_worker_unwatch(s->worker, s->tfd);
	/* after the calls already queued (FIFO), on the pass's last list, where
	 * pass_end waits: none touches s after this */
	if (tsr_worker_defer_after_submit(s->worker, stop_signal, s->stop_call) < 0)
		sync_call_done(s->stop_call, 0);
}

static void stop_fn(struct tsr_site_source *s, struct sync_call *c)
{
	if (s->grow_pending)
		grow_end(s, -ESHUTDOWN, "the source stopped");
	s->stop_call = c;
	if (!s->split) /* split: unhook_fn did, on home */
		tsr_vol_set_hooks(s->vol, NULL);
	if (s->group) {
		struct src_group *g = s->group;

		for (unsigned i = 0; i < g->n; i++)
			if (g->mem[i] == s) {
				g->mem[i] = g->mem[--g->n];
				break;
			}
	}
	/* split with a read in flight: the tick stays until it is back
	 * (stop_finish), its ho_pull sends again a result that could not go */
	if (!s->split || !s->read_inflight)
		tsr_worker_unwatch(s->worker, s->tfd);
	/* a clean close when no frame is half sent (one try: never wait) */
	if (s->t != NULL && s->sess >= SESS_HELLO && s->sess != SESS_DEAD && s->txk == TX_NONE)
		tsr_site_tls_shutdown(s->t);
	session_close(s);
	s->sess = SESS_DEAD;
	s->stopping = true;
	if (s->read_inflight) {
		s->stop_wait_read = true;
		return;
	}
	stop_finish(s);
}

/*
 * split, on home, before stop_fn on worker: no more hooks; the entries
 * made go to worker (ahead of stop_fn in its queue: taken, then freed with
 * the log) or are freed here.  Done after the calls home queued for this
 * pass (a handover may be among them: none touches s after the signal).
 */
static void unhook_fn(struct tsr_site_source *s, struct sync_call *c)
{
	struct log_entry *e, *next;

	tsr_vol_set_hooks(s->vol, NULL);
	s->ho_unhooked = true;
	ho_send(s);
	for (e = s->ho_head; e != NULL; e = next) {
		next = e->next;
		ho_entry_free(e);
	}
	s->ho_head = s->ho_tail = NULL;
	s->ho_bits = NULL;
	s->ho_pending = 0;
	atomic_fetch_sub_explicit(&s->ho_lag_bytes, s->ho_lag_pending, memory_order_relaxed);
	s->ho_lag_pending = 0;
	atomic_fetch_sub_explicit(&s->ho_ranges, s->ho_ranges_pending, memory_order_relaxed);
	s->ho_ranges_pending = 0;
	atomic_store(&s->ho_home_ns, 0);
	s->ho_lost_end = 0; /* (its OVER could not be made: nothing ships any more) */
	if (tsr_worker_defer_after_submit(s->home, stop_signal, c) < 0)
		sync_call_done(c, 0);
}

static void barrier_fn(struct tsr_site_source *s, struct sync_call *c)
{
	(void)s;
	sync_call_done(c, 0);
}

void tsr_site_source_stop(struct tsr_site_source *s)
{
	struct sync_call c = {.fn = stop_fn};

	if (s == NULL)
		return;
	if (s->split) {
		struct sync_call u = {.fn = unhook_fn};

		if (run_on(s, s->home, &u) < 0)
			tsr_error("site source %s: the volume's worker is gone; its hooks stay",
				  tsr_vol_name(s->vol));
	}
	if (run_on_worker(s, &c) < 0) {
		/* the worker is gone (stopped first): nothing runs s any more, so
		 * close here; the hooks stay on a volume nobody serves */
		tsr_error("site source %s: its worker is gone; closing from this thread",
			  tsr_vol_name(s->vol));
		tsr_site_tls_free(s->t);
		if (s->fd >= 0)
			close(s->fd);
		if (s->read_inflight)
			return; /* its callback may still name s: leak rather than crash */
	}
	if (s->split) {
		/* an ho_pull the last ticks queued on home runs before this */
		struct sync_call b = {.fn = barrier_fn};

		run_on(s, s->home, &b);
	}
	tsr_info("site source %s -> %s: stopped", tsr_vol_name(s->vol), s->address);
	source_free(s);
}

static void pause_msg(struct tsr_worker *w, void *arg)
{
	struct tsr_site_source *s = arg;

	(void)w;
	if (s->stopping)
		return;
	s->paused = atomic_load(&s->pause_req);
	pump(s);
	publish(s);
}

void tsr_site_source_pause(struct tsr_site_source *s, bool paused)
{
	atomic_store(&s->pause_req, paused);
	if (tsr_worker_send(s->worker, pause_msg, s) < 0)
		tsr_error("site source %s: cannot reach its worker to %s", tsr_vol_name(s->vol),
			  paused ? "pause" : "resume");
}

/* split: what the pump worker has not taken in yet (ho_view_read) */
struct ho_view {
	uint64_t lag_bytes, ranges;
	uint64_t oldest_ns; /* ack time of the oldest of them, 0: none */
};

/*
 * split, any thread: the entries on home and in the worker's queue are
 * acked, so they count for the RPO, most of all while the worker lags (and
 * publishes nothing).  By the queue's order the oldest of them is the first
 * of the oldest batch in flight, else of home's list.  Read before pub: the
 * worker publishes a batch's entries (log, dirty) before it takes them out
 * of these counts (seq_cst), so a reader that sees them out sees that
 * publish too; read after pub they could be in neither (review s21-revQ).
 */
static void ho_view_read(struct tsr_site_source *s, struct ho_view *v)
{
	uint64_t home_ns = atomic_load(&s->ho_home_ns), k, fly_ns;

	/* the slot of batch k is home's again once k is taken in: read again */
	do {
		k = atomic_load(&s->ho_taken_n);
		fly_ns = 0;
		if (k < atomic_load(&s->ho_sent_n))
			fly_ns = atomic_load(&s->ho_fly_ns[k % HO_FLY_SLOTS]);
	} while (atomic_load(&s->ho_taken_n) != k);
	v->oldest_ns = fly_ns;
	if (home_ns != 0 && (fly_ns == 0 || home_ns < fly_ns))
		v->oldest_ns = home_ns;
	v->lag_bytes = atomic_load(&s->ho_lag_bytes);
	v->ranges = atomic_load_explicit(&s->ho_ranges, memory_order_relaxed);
}

void tsr_site_source_stats(struct tsr_site_source *s, struct tsr_site_source_stats *out)
{
	struct ho_view v = {0};
	uint64_t oldest, t;

	if (s->split)
		ho_view_read(s, &v);
	pthread_mutex_lock(&s->stats_lock);
	*out = s->pub;
	oldest = s->pub_oldest_ns;
	pthread_mutex_unlock(&s->stats_lock);
	if (!s->split)
		return;
	if (v.oldest_ns != 0 && (oldest == 0 || v.oldest_ns < oldest))
		oldest = v.oldest_ns;
	out->lag_bytes += v.lag_bytes;
	out->handover_ranges = v.ranges;
	t = tsr_mono_ns();
	out->lag_sec = oldest && t > oldest ? (double)(t - oldest) / NS_PER_SEC : 0;
	out->eta_sec =
	    out->lag_bytes && out->rate_bps > 1 ? (double)out->lag_bytes / out->rate_bps : 0;
}

/* ---- growing: the target first (tsr_site_source_grow) ---- */

/* Make every bitmap hold n regions (new bits clear).  Worker. */
static int bitmaps_grow(struct tsr_site_source *s, uint64_t n)
{
	size_t oldw = (size_t)((s->n_regions + 63) / 64), neww = (size_t)((n + 63) / 64);
	uint64_t **bm[] = {&s->dirty, &s->sync_bits, &s->holes, &s->dig_have};
	void *p;

	for (size_t i = 0; i < sizeof(bm) / sizeof(bm[0]); i++) {
		if (*bm[i] == NULL)
			continue;
		p = realloc(*bm[i], neww * sizeof(uint64_t));
		if (p == NULL)
			return -ENOMEM;
		*bm[i] = p;
		memset(*bm[i] + oldw, 0, (neww - oldw) * sizeof(uint64_t));
	}
	if (s->dig != NULL) {
		p = realloc(s->dig, n * TSR_SITE_DIGEST_LEN);
		if (p == NULL)
			return -ENOMEM;
		s->dig = p;
	}
	return 0;
}

static void set_size(struct tsr_site_source *s, uint64_t size)
{
	s->vol_size = size;
	s->n_regions = (size + s->region_size - 1) >> s->region_shift;
}

/* The grow's answer: 0 (the target took vol_size), or -errno: back to the
 * old size (the bitmaps keep their room; no bit past it is ever set).  Ends
 * the grow (once: a second call does nothing) and calls its callback. */
static void grow_end(struct tsr_site_source *s, int status, const char *msg)
{
	tsr_site_grow_fn cb = s->grow_cb;
	void *arg = s->grow_arg;

	if (!s->grow_pending)
		return;
	s->grow_pending = false;
	s->grow_busy = false;
	s->grow_told_growing = false;
	s->grow_cb = NULL;
	s->grow_arg = NULL;
	if (status) {
		tsr_warn("site source %s: the target did not grow to %llu bytes: %s; the stream "
			 "goes on at %llu bytes", tsr_vol_name(s->vol),
			 (unsigned long long)s->vol_size, msg, (unsigned long long)s->grow_old_size);
		set_size(s, s->grow_old_size);
	} else {
		tsr_info("site source %s -> %s: the target took the new size, %llu bytes",
			 tsr_vol_name(s->vol), s->address, (unsigned long long)s->vol_size);
	}
	cb(arg, status, msg ? msg : "");
}

/* 1: nothing to do; 0: the grow runs (grow_end answers); -errno: c->why. */
static void grow_fn(struct tsr_site_source *s, struct sync_call *c)
{
	const char *why = NULL;
	int ret = 0;

	if (s->stopping || !s->running)
		ret = -ESHUTDOWN, why = "the source is stopping";
	else if (s->demoted)
		ret = -ESTALE, why = "the source is demoted";
	else if (s->grow_pending)
		ret = -EBUSY, why = "another resize is growing the target";
	else if (c->size <= s->vol_size)
		ret = 1;
	else if (s->paused)
		ret = -ENOTCONN, why = "replication is paused";
	else if (s->sess != SESS_READY)
		ret = -ENOTCONN, why = s->last_error[0] ? s->last_error : "no session is open";
	else if (bitmaps_grow(s, (c->size + s->region_size - 1) >> s->region_shift))
		ret = -ENOMEM, why = "out of memory";
	if (ret) {
		snprintf(c->why, c->why_len, "%s", why ? why : "");
		sync_call_done(c, ret);
		return;
	}
	s->grow_old_size = s->vol_size;
	s->grow_cb = c->grow_cb;
	s->grow_arg = c->grow_arg;
	s->grow_deadline_ns = tsr_mono_ns() + (uint64_t)c->timeout_ms * NS_PER_MS;
	set_size(s, c->size);
	s->grow_pending = true;
	tsr_info("site source %s -> %s: the volume grows to %llu bytes: the session is reopened "
		 "to grow the target first", tsr_vol_name(s->vol), s->address,
		 (unsigned long long)c->size);
	/* the frames sent and not ACKed stay in the log: the new session resends
	 * them after its VOLUME_OPEN (a reconnect) */
	if (s->t != NULL && s->txk == TX_NONE)
		tsr_site_tls_shutdown(s->t);
	session_close(s);
	s->sess = SESS_IDLE;
	s->retry_at_ns = 0;
	session_connect(s);
	publish(s);
	sync_call_done(c, 0);
}

int tsr_site_source_grow_async(struct tsr_site_source *s, uint64_t size, unsigned timeout_ms,
			       tsr_site_grow_fn cb_fn, void *cb_arg, char *why, size_t why_len)
{
	struct sync_call c = {.fn = grow_fn, .size = size, .timeout_ms = timeout_ms,
			      .grow_cb = cb_fn, .grow_arg = cb_arg, .why = why,
			      .why_len = why_len};
	int ret;

	if (size == 0 || size % TSR_BLOCK_SIZE) {
		snprintf(why, why_len, "size %llu is not a multiple of %u", (unsigned long long)size,
			 TSR_BLOCK_SIZE);
		return -EINVAL;
	}
	why[0] = '\0';
	ret = run_on_worker(s, &c);
	if (ret < 0 && why[0] == '\0')
		snprintf(why, why_len, "the source's worker is gone");
	return ret;
}

/* tsr_site_source_grow's wait for the answer */
struct grow_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int status;
	char msg[TSR_SITE_ERRMSG_MAX + 1];
};

static void grow_wait_cb(void *arg, int status, const char *why)
{
	struct grow_wait *w = arg;

	pthread_mutex_lock(&w->lock);
	w->status = status;
	snprintf(w->msg, sizeof(w->msg), "%s", why);
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

int tsr_site_source_grow(struct tsr_site_source *s, uint64_t size, unsigned timeout_ms,
			 char *why, size_t why_len)
{
	struct grow_wait w = {.done = false};
	int ret;

	pthread_mutex_init(&w.lock, NULL);
	pthread_cond_init(&w.cond, NULL);
	ret = tsr_site_source_grow_async(s, size, timeout_ms, grow_wait_cb, &w, why, why_len);
	if (ret == 1) {
		ret = 0;
	} else if (ret == 0) {
		/* the worker's tick ends the grow at its deadline, its stop at once */
		pthread_mutex_lock(&w.lock);
		while (!w.done)
			pthread_cond_wait(&w.cond, &w.lock);
		pthread_mutex_unlock(&w.lock);
		ret = w.status;
		snprintf(why, why_len, "%s", w.msg);
	}
	pthread_mutex_destroy(&w.lock);
	pthread_cond_destroy(&w.cond);
	return ret;
}
