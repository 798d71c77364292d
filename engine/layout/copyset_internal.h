/*
 * Private header of the copy set (copyset.c): what the mirror and the EC
 * layout do alike with the copies they drive, written once.
 *
 *  - the layout's lifetime: its reference count (copyset_get/copyset_put),
 *    held by every message, callback and call in flight, and destroy
 *    (teardown on the home worker, free after the last reference);
 *  - create and start-up: a copy's shared fields, the local copy's open
 *    (store, epoch, size), the start-up message and the wait for it, the
 *    tick's timer, the log and status of an OPEN that failed;
 *  - the published status (copyset_publish, copyset_get_status);
 *  - the record of a copy's state in the metadata store (hooks.set_copy_state,
 *    one call in flight per copy, waiters woken by the state recorded);
 *  - a remote copy's session (peer client, OPEN, on_fail, the client
 *    dropped outside its own callbacks), a local copy's open flag;
 *  - a snapshot request on one copy (local store call or TSR_PEER_SNAP);
 *  - fencing (tsr_layout_fence: a flag in force at once, then a message);
 *  - control calls: run a function on the home worker and wait for it, or
 *    send it there without waiting.
 *
 * What differs stays in the layouts: the I/O on a copy (mirror_copy.c,
 * ec_copy.c), what a failure, a fence, teardown and free do (called back
 * through struct copyset_ops), the start-up's steps and recovery, resync,
 * replace, what the status says.
 *
 * A layout embeds one struct copyset (its view of the layout, and the
 * lifetime, status and fence state the copy set keeps for it) and opens
 * each copy struct with COPYSET_COPY_BASE: the layout's files read the
 * shared fields as c->open, c->gen, ..., this file as c->base (a struct
 * copyset_copy).  Like everything of a layout, both belong to its home
 * worker but for the fields marked otherwise.
 */
#ifndef TSR_LAYOUT_COPYSET_INTERNAL_H
#define TSR_LAYOUT_COPYSET_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tessera/layout.h"
#include "tessera/peer.h"
#include "tessera/store.h"
#include "tessera/worker.h"

/* Something waiting for an event; fn(arg, 0 or -errno) fires once. */
struct waiter {
	void (*fn)(void *arg, int status);
	void *arg;
	uint64_t ver; /* bitmap: page version needed; hook: state wanted */
	struct waiter *next;
};

struct copyset;
struct copyset_copy;
struct tsr_layout_ops; /* tessera/layout_module.h */

/* What the copy set asks of its layout (arguments: copyset.layout). */
struct copyset_ops {
	/* Free the layout (the last reference went, or it never started). */
	void (*free)(void *layout);
	/* Stop (home worker): fail what waits, drop the sessions, then put
	 * the layout's own reference. */
	void (*teardown)(void *layout);
	/* The session of copy c failed (the peer client's on_fail). */
	void (*copy_failed)(struct copyset_copy *c, int err);
	/* Fence now (home worker): every I/O fails from now on. */
	void (*fence_now)(void *layout, const char *why);
};

/*
 * The layout as the copy set sees it.  The first fields change (each says
 * who writes it); the others are set at create, then read only.
 */
struct copyset {
	int refs;            /* async work referring to the layout, + 1 while alive (atomic) */
	bool destroy_waiter; /* a thread waits on sem for the last reference */
	sem_t sem;           /* create (start-up) and destroy wait here */
	/* the published status: written by the home worker (copyset_publish),
	 * copied by tsr_layout_get_status from any thread */
	pthread_mutex_t status_lock;
	struct tsr_layout_status status;
	const struct copyset_ops *ops;
	void *layout;        /* struct mirror or struct ec: the ops' argument */
	const char *kind;    /* log prefix: "mirror" or "ec" */
	const char *name;    /* the volume (the layout's name) */
	const char *node_id; /* this node, the token and timeout for peer OPENs */
	const char *token;
	const char *state_dir; /* the copies' bitmap files (copyset_bitmap_path) */
	unsigned peer_timeout_ms;
	uint64_t epoch;
	uint64_t copy_size; /* bytes a copy must hold: volume or chunk volume */
	struct tsr_store *store;
	struct tsr_worker *home;
	const struct tsr_layout_hooks *hooks;
	const bool *closing, *fenced; /* the layout's flags (home worker) */
	bool *fence_req;              /* the layout's: tsr_layout_fence was called (atomic) */
};

/*
 * One copy, as the copy set drives it.  The fields are listed once here and
 * opened both as this struct (c->base) and as plain members of the layout's
 * copy struct (c->open): an anonymous struct of the same members in an
 * anonymous union (C11), as Linux's struct_group_tagged.
 */
#define COPYSET_COPY_FIELDS                                                                        \
	struct copyset *set;                                                                       \
	unsigned idx; /* slot: the copy's index in the layout */                                   \
	char node_id[64];                                                                          \
	char address[128];                                                                         \
	bool local;                                                                                \
	enum tsr_copy_state state;    /* what the data path does with it now */                    \
	enum tsr_copy_state recorded; /* last state the metadata store holds */                    \
	unsigned slot_gen;            /* bumped when the slot gets a new copy (replace) */         \
	/* hooks: one call in flight per copy */                                                   \
	bool hook_busy;                                                                            \
	enum tsr_copy_state hook_issued, hook_want;                                                \
	struct waiter *hook_waiters; /* ver = state waited for */                                  \
	/* session */                                                                              \
	bool open; /* data ops may be sent */                                                      \
	bool connecting;                                                                           \
	unsigned gen;                   /* bumped at every failure / reconnect */                  \
	struct tsr_svol *svol;          /* local copy */                                           \
	struct tsr_peer_client *client; /* remote copy */                                          \
	uint64_t handle;                                                                           \
	void *fail_ctx; /* the client's on_fail argument (freed with it) */                        \
	/* a remote copy's store counters, as its node last answered (copyset_stats_tick) */       \
	bool stats_busy, stats_known, stats_unsupported;                                           \
	unsigned stats_slot_gen; /* the slot's copy they are of */                                 \
	uint64_t stats_next_ns, stats_crc_errors, stats_cached_reads;                              \
	/* what the node had counted before its counters began again at 0 (copyset_stats_take) */  \
	uint64_t stats_crc_carried, stats_cached_carried;

struct copyset_copy {
	COPYSET_COPY_FIELDS
};

#define COPYSET_COPY_BASE                                                                          \
	union {                                                                                    \
		struct copyset_copy base;                                                          \
		struct {                                                                           \
			COPYSET_COPY_FIELDS                                                        \
		};                                                                                 \
	}

/* The layout's copy struct (struct mcopy, struct ecopy) that opens with c. */
#define copyset_copy_of(c, type) ((type *)((char *)(c) - offsetof(type, base)))

/* ---- lifetime ------------------------------------------------------------ */

/*
 * A reference on the layout (any thread): every message, callback and call
 * in flight holds one, so teardown can wait for the last.  The last one
 * frees the layout (ops->free), or wakes the thread in copyset_destroy.
 */
void copyset_get(struct copyset *cs);
void copyset_put(struct copyset *cs);
/*
 * Create (control thread), once the layout filled *cs: the layout's own
 * reference (refs 1), sem and status_lock made.  copyset_fini, in the
 * layout's free, undoes them.
 */
void copyset_init(struct copyset *cs);
void copyset_fini(struct copyset *cs);
/*
 * tsr_layout_destroy.  Never started: freed here.  On the home worker
 * (here): ops->teardown inline, the last reference frees.  Elsewhere:
 * ops->teardown sent to the home worker, the last reference waited for,
 * then freed here.
 */
void copyset_destroy(struct copyset *cs, bool started, bool here);

/* ---- create options ------------------------------------------------------ */

/*
 * Create options, control thread: every copy has a node id without '/',
 * every remote one an address, at most one is local and then there is a
 * store.  0 or -EINVAL.
 */
int copyset_check_copies(const struct tsr_layout_copy *copies, unsigned n,
			 const struct tsr_store *store);
/* state_dir/<vol>.<node_id>.bitmap, a copy's dirty bitmap (mirror_bitmap.c):
 * 0 or -ENAMETOOLONG. */
int copyset_bitmap_path(const struct copyset *cs, const char *node_id, char out[PATH_MAX]);

/* ---- create and start-up ------------------------------------------------ */

/*
 * Create (control thread): copy idx of the layout, from its create option
 * oc: the shared fields (set, slot, node id, address, local, state wanted
 * and recorded).  The layout sets its own fields.
 */
void copyset_copy_init(struct copyset_copy *c, struct copyset *cs, unsigned idx,
		       const struct tsr_layout_copy *oc);
/*
 * Create (control thread): open the local copy c in cs->store, set our
 * epoch on it (which fences any older coordinator writing through this
 * store), check that it holds copy_size bytes; then c->open.  what names it
 * in the log lines ("local copy", "local chunk volume").  0, or -errno,
 * logged (c->svol may be set then: the layout's free puts it).
 */
int copyset_open_local(struct copyset_copy *c, const char *what);
/*
 * Control thread: 0 if svol (a local copy, just opened) holds cs->copy_size
 * bytes; else -EINVAL, logged "KIND NAME: WHAT is N bytes, M needed".  The
 * creates (copyset_open_local) and both layouts' replace_copy check a new
 * local copy with it: a copy too small would take writes past its end.
 */
int copyset_check_size(const struct copyset *cs, struct tsr_svol *svol, const char *what);
/*
 * Create's last step (control thread): send start_msg(cs->layout) to the
 * home worker, wait on cs->sem for the start-up's answer (*start_status),
 * then make the tsr_layout of layout_ops.  0 and *out set; or -errno and the
 * layout is gone: freed (ops->free) when the message could not be sent,
 * else destroyed (layout_ops->destroy).
 */
int copyset_start(struct copyset *cs, void (*start_msg)(struct tsr_worker *w, void *arg),
		  const int *start_status, const struct tsr_layout_ops *layout_ops,
		  struct tsr_layout **out);
/*
 * Start-up (home worker w): the layout's tick, every tick_ms (< 1000) on
 * *fd, a new timerfd watched by w.  0, or -ENOMEM (logged; *fd is -1).
 */
int copyset_timer_start(struct copyset *cs, struct tsr_worker *w, unsigned tick_ms,
			tsr_worker_fd_cb tick, void *arg, int *fd);
/* Teardown (home worker): stop the tick, close *fd, -1 (none: nothing). */
void copyset_timer_stop(struct copyset *cs, int *fd);
/*
 * Start-up (home worker): the OPEN of remote copy c failed (status < 0):
 * logged, *start_status set to -ESTALE (a newer coordinator), or to -ENOENT
 * (no such volume there) when it holds no error yet, the session dropped.
 */
void copyset_start_open_failed(struct copyset_copy *c, int status, int *start_status);
/*
 * A copy came back (copy_returned, replace) and its OPEN failed (status <
 * 0): logged, the layout fenced (ops->fence_now) on -ESTALE, the session
 * dropped.  The layout does the rest (its replace, its status).
 */
void copyset_returned_open_failed(struct copyset_copy *c, int status);

/* ---- status -------------------------------------------------------------- */

/* Publish s, the layout's status (home worker); copy it out (any thread). */
void copyset_publish(struct copyset *cs, const struct tsr_layout_status *s);
void copyset_get_status(struct copyset *cs, struct tsr_layout_status *out);

/*
 * A copy's store counters (home worker).  copyset_stats_tick, on the
 * layout's tick: a remote copy that is open is asked for them with a peer
 * STATS every COPYSET_STATS_NS, one in flight at most; the answer is kept
 * (with the slot's copy it is of) and nothing waits for it.  A node whose
 * HELLO reply lacks TSR_PEER_FEAT_STATS is not asked (an earlier build:
 * counters_unsupported).  copyset_stats_fill: a local copy's counters read
 * from its store, a remote one's last answer; adds the known ones to the
 * totals of s (crc_errors_all, cached_reads_all, copies_counted).
 * copyset_stats_take: keep answer st of the slot's copy; an answer lower than
 * the last (the node restarted, or reopened the copy: its counters begin
 * again at 0) adds the last one to what is carried, so a copy's figures
 * never go down while this layout runs.  copyset_stats_forget: the slot has
 * a new copy (replace, from copyset_hook_forget): nothing known of it, not
 * "unsupported" until its own node's HELLO says so, and asked at the next
 * tick (before, the old node's flag and 1 s wait held over: review F6).
 */
#define COPYSET_STATS_NS (1000ull * 1000000)
void copyset_stats_tick(struct copyset_copy *c, uint64_t now_ns);
void copyset_stats_take(struct copyset_copy *c, const struct tsr_peer_stats *st);
void copyset_stats_forget(struct copyset_copy *c);
void copyset_stats_fill(const struct copyset_copy *c, struct tsr_layout_copy_status *cs_out,
			struct tsr_layout_status *s);

/* ---- records: copy states in the metadata store -------------------------- */

/*
 * Ask the metadata store to record st for c; w (may be NULL) waits for it:
 * w->fn(w->arg, 0) once st is recorded, -EIO if recording it failed,
 * -ECANCELED once another state is wanted (or the slot gets a new copy).
 * One call in flight per copy: the latest state wanted goes next.
 */
void copyset_hook_request(struct copyset_copy *c, enum tsr_copy_state st, struct waiter *w);
/* The slot gets a new copy: the old one's waiters fail with -ECANCELED and
 * the answer of a call in flight is ignored. */
void copyset_hook_forget(struct copyset_copy *c);

/* ---- sessions ------------------------------------------------------------ */

/*
 * Start (re)connecting a remote copy: a new session (gen), a new peer client
 * and an OPEN with our epoch; cb_fn(cb_arg, status) once it is answered (0:
 * c->open, c->handle set; -EINVAL: the copy holds fewer than copy_size
 * bytes; -ECANCELED: the session was replaced meanwhile).  A connection lost
 * later calls ops->copy_failed.  Local copy: 1 when open (cb never fires),
 * else -ENOENT.  0, or -errno and cb never fires.
 */
int copyset_connect(struct copyset_copy *c, tsr_cb cb_fn, void *cb_arg);
/*
 * Open copy c again (it came back, or its slot has a new copy): as
 * copyset_connect, but every answer goes to cb_fn, which fires exactly once:
 * later for an OPEN, inline with 0 for a local copy already open, inline
 * with -errno when the connect failed at once.
 */
void copyset_reopen(struct copyset_copy *c, tsr_cb cb_fn, void *cb_arg);
/*
 * Drop the session: a new gen (answers to the old one are ignored), the
 * client destroyed outside its own callbacks (in-flight requests complete
 * with -ECANCELED).  A local copy stays open unless the layout is fenced or
 * closing.
 */
void copyset_disconnect(struct copyset_copy *c);

/*
 * A snapshot request on one copy: local, the store call here (blocking, a
 * few ms: the contract of tsr_store_snap_create) and cb_fn before
 * returning; remote, a TSR_PEER_SNAP with our epoch.  0 and cb_fn fires
 * once, or -errno (-ENOTCONN not open, -ESTALE the local volume moved to a
 * newer epoch) and it never fires.
 */
int copyset_snap(struct copyset_copy *c, const struct tsr_snap_req *req, tsr_cb cb_fn,
		 void *cb_arg);

/* ---- control calls ------------------------------------------------------- */

/*
 * tsr_layout_resize's steps, home worker: the layout is fenced or closing
 * (-EIO, why says so) or may go on (0).
 */
int copyset_resize_gate(struct copyset *cs, char *why, size_t why_len);

/*
 * Run fn(arg) on the home worker and wait for its answer: inline when the
 * caller is the home worker (here).  Returns fn's answer, or -errno when
 * the home worker stopped (fn never runs).
 */
int copyset_call(struct copyset *cs, bool here, int (*fn)(void *arg), void *arg);
/*
 * Send fn(arg) to the home worker without waiting (for callers that hold
 * locks the layout's hooks take), with a reference on the layout until fn
 * returned.  0, or -errno (fn never runs: arg is still the caller's).
 */
int copyset_post(struct copyset *cs, void (*fn)(void *arg), void *arg);
/*
 * tsr_layout copy_returned, any thread, no wait: fn(layout, idx, address)
 * runs on the home worker (address "" when none was given).
 */
void copyset_copy_returned(struct copyset *cs, unsigned idx, const char *address,
			   void (*fn)(void *layout, unsigned idx, const char *address));

/* ---- fencing ------------------------------------------------------------- */

/*
 * tsr_layout_fence, any thread.  Does not wait for the home worker: the
 * cluster calls it holding its own lock, which hooks.set_copy_state takes
 * on the home worker.  The flag is in force at once (every completion asks
 * copyset_fence_requested before acknowledging); ops->fence_now, here or
 * in a message to the home worker, does the rest (fail the waiting writes,
 * stop resync and scrub).
 */
void copyset_fence(struct copyset *cs, bool here);
/* Home worker: fenced, or tsr_layout_fence was called (then fence now). */
bool copyset_fence_requested(struct copyset *cs);

#endif
