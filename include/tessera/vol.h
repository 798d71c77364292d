/*
 * Tessera volume coordinator (DESIGN.md layer 2): the single writer of a
 * volume attached on this node.  It orders host I/O and hands it to the
 * volume's layout (layer 3), which today keeps one local copy and later fans
 * out to replicas and EC chunks.  The NBD server (layer 1) uses only this
 * header.
 *
 * The same async contract and argument rules as tsr_svol_* (store.h) apply;
 * status 0 or -errno.  A struct tsr_vol may be used from several worker
 * threads at once, each passing its own struct tsr_io.
 */
#ifndef TESSERA_VOL_H
#define TESSERA_VOL_H

#include <stdbool.h>
#include <stdint.h>
#include "tessera/common.h"
#include "tessera/io.h"
#include "tessera/store.h"
#include "tessera/layout.h"
#include "tessera/worker.h"

struct tsr_volset; /* the volumes this node can attach */
struct tsr_vol;

/* Errors: -ENOMEM. */
int tsr_volset_create(struct tsr_store *store, struct tsr_volset **out);
void tsr_volset_destroy(struct tsr_volset *set); /* all vols must be put; NULL ok */

/*
 * Attach (or share the existing attachment of) volume name.  Thread-safe.
 * Errors: -ENOENT unknown volume, -ENOMEM.
 */
int tsr_vol_get(struct tsr_volset *set, const char *name, struct tsr_vol **out);
void tsr_vol_put(struct tsr_vol *vol);
/* True while some handle is held (delete refuses such a volume). */
bool tsr_volset_in_use(struct tsr_volset *set, const char *name);
/* True while handles other than the caller's one (vol) are held, the
 * registration's included.  Thread-safe. */
bool tsr_vol_shared(struct tsr_vol *vol);

/*
 * The host clients of the volumes (the NBD server fills it in): who holds an
 * export, and closing them.  Both are called from the control thread and
 * may take the implementer's own lock, never the volset's.
 */
#define TSR_PEER_ADDR_MAX 64 /* "127.0.0.1:40312", "[::1]:40312", "unix pid 1234" */
#define TSR_DETACH_CLIENTS_LISTED 8 /* a refused detach names at most this many */
struct tsr_volset_client_ops {
	/* The clients of export name (an exact name: "VOL@SNAP" is another
	 * export): how many, and the peer addresses of the first max of them
	 * into peers (may be NULL when max is 0). */
	unsigned (*list)(void *arg, const char *name, char (*peers)[TSR_PEER_ADDR_MAX],
			 unsigned max);
	/* Close every client of export name: each reads no more requests,
	 * finishes and answers those in flight, then closes its connection.
	 * Returns how many were asked to; asking one twice is harmless. */
	unsigned (*disconnect)(void *arg, const char *name);
};
/* Install ops (NULL: none; the NBD server's create and destroy). */
void tsr_volset_set_client_ops(struct tsr_volset *set, const struct tsr_volset_client_ops *ops,
			       void *arg);
/* ops->list, or 0 when no client ops are installed. */
unsigned tsr_volset_clients(struct tsr_volset *set, const char *name,
			    char (*peers)[TSR_PEER_ADDR_MAX], unsigned max);
/* ops->disconnect, or 0 when no client ops are installed. */
unsigned tsr_volset_disconnect(struct tsr_volset *set, const char *name);

/*
 * Cluster mode: only volumes registered with tsr_volset_attach are served
 * (the store's volumes are copies that only a coordinator may write).
 * Call before any tsr_vol_get.
 */
void tsr_volset_set_cluster_mode(struct tsr_volset *set, bool on);
/*
 * Register layout as volume name's coordinator on this node, its data path
 * run by worker home (NULL: any worker, as a local layout).  The volset owns
 * layout from here on.  Errors: -EEXIST already attached, -ENOMEM.
 */
int tsr_volset_attach(struct tsr_volset *set, const char *name, struct tsr_layout *layout,
		      struct tsr_worker *home);
/* tsr_volset_attach with host writes fenced with write_fence from the
 * start (tsr_vol_set_write_fence; 0: none): a replication target is never
 * served unfenced, not even between the registration and the fence. */
int tsr_volset_attach_fenced(struct tsr_volset *set, const char *name, struct tsr_layout *layout,
			     struct tsr_worker *home, int write_fence);
/*
 * Unregister name: new tsr_vol_get calls fail with -ENOENT; the layout is
 * destroyed when the last handle is put.  Errors: -ENOENT.
 */
int tsr_volset_detach(struct tsr_volset *set, const char *name);
/* The registered coordinator's layout (no reference taken: control thread only), or NULL. */
struct tsr_layout *tsr_volset_layout(struct tsr_volset *set, const char *name);

/*
 * Workers that run volumes' I/O: each volume served on this node gets one
 * as its home (round robin at first open, cluster coordinators at attach),
 * so its layout runs on one thread.  Call before any tsr_vol_get; without
 * it local volumes keep a NULL home (any worker: unit tests).
 */
void tsr_volset_set_workers(struct tsr_volset *set, struct tsr_worker *const *workers,
			    unsigned n);
/*
 * Run req through the gate of volume name's layout on its home worker and
 * wait for it (control thread, blocking: the snapshot cut itself takes a
 * few ms).  Errors: -ENOENT when name has no open handle or registered
 * coordinator here (the caller then acts on the store directly: nothing
 * writes it), the layout's errors otherwise.
 */
int tsr_volset_snap(struct tsr_volset *set, const char *name, const struct tsr_snap_req *req);
/*
 * The same without waiting: returns 0 and cb_fn(cb_arg, status) fires
 * exactly once, with the layout's result, on the volume's home worker's
 * thread (the caller's own when the volume has no home, possibly before
 * this returns), once the gate released the volume; or returns -errno and
 * cb_fn never fires: -ENOENT as above, -EINVAL (req or cb_fn NULL),
 * -ENOMEM, -ESHUTDOWN (the home worker is stopping).
 */
int tsr_volset_snap_async(struct tsr_volset *set, const char *name,
			  const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg);

/* The worker that must run vol's I/O, or NULL when any worker may. */
struct tsr_worker *tsr_vol_home(const struct tsr_vol *vol);
const char *tsr_vol_name(const struct tsr_vol *vol);
uint64_t tsr_vol_size(const struct tsr_vol *vol);

int tsr_vol_read(struct tsr_vol *vol, struct tsr_io *io, uint64_t offset, uint32_t len,
		 void *buf, tsr_cb cb_fn, void *cb_arg);
/* As tsr_vol_read, from the copies' disks, never a page cache: for checks of
 * what is stored (the site server's failback digests), as scrub reads. */
int tsr_vol_read_direct(struct tsr_vol *vol, struct tsr_io *io, uint64_t offset, uint32_t len,
			void *buf, tsr_cb cb_fn, void *cb_arg);
int tsr_vol_write(struct tsr_vol *vol, struct tsr_io *io, uint64_t offset, uint32_t len,
		  const void *buf, unsigned flags /* TSR_WRITE_FUA|TSR_WRITE_REPL */, tsr_cb cb_fn,
		  void *cb_arg);
int tsr_vol_flush(struct tsr_vol *vol, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg);
int tsr_vol_trim(struct tsr_vol *vol, struct tsr_io *io, uint64_t offset, uint64_t len,
		 tsr_cb cb_fn, void *cb_arg);
/* tsr_vol_trim with flags (TSR_WRITE_REPL only). */
int tsr_vol_trim_flags(struct tsr_vol *vol, struct tsr_io *io, uint64_t offset, uint64_t len,
		       unsigned flags, tsr_cb cb_fn, void *cb_arg);
int tsr_vol_write_zeroes(struct tsr_vol *vol, struct tsr_io *io, uint64_t offset,
			 uint64_t len, unsigned flags /* TSR_WRITE_FUA|TSR_WRITE_NO_HOLE|TSR_WRITE_REPL */,
			 tsr_cb cb_fn, void *cb_arg);
int tsr_vol_block_status(struct tsr_vol *vol, uint64_t offset, uint64_t len,
			 struct tsr_extent *ext, size_t max, size_t *count);

/*
 * Geo-replication taps on a volume (engine/site/, DESIGN.md "Geo-replication").
 * Hooks see every host write, zero and trim that completed with status 0,
 * on the volume's home worker, just before its acknowledgment: their call
 * order is the host's acknowledgment order.  A hook must not block and must
 * not issue I/O on the volume from inside the call (it may queue some).
 * buf is only valid during the call.  Writes issued with TSR_WRITE_REPL skip
 * the hooks and the read-only fence (the site target applying a stream).
 */
#define TSR_WRITE_REPL 0x100u /* from the replication stream: no hooks, past the fence */

struct tsr_vol_hooks {
	void (*on_write)(void *arg, uint64_t offset, uint32_t len, const void *buf);
	/* write_zeroes and trim (both read back as zeros afterwards) */
	void (*on_zero)(void *arg, uint64_t offset, uint64_t len);
	void *arg;
};
/*
 * Install (h != NULL) or remove (NULL) vol's hooks.  Only on vol's home
 * worker (or, with no home, while no I/O runs).  Writes in flight when the
 * hooks change report to the hooks present at their completion.
 * Errors: -EBUSY other hooks are installed (remove them first).
 */
int tsr_vol_set_hooks(struct tsr_vol *vol, const struct tsr_vol_hooks *h);
/*
 * Fence host writes of vol: err 0 lets them through; -EROFS (a replication
 * target, or a demoted former primary) fails every write, zero and trim
 * without TSR_WRITE_REPL with err.  Any thread (an atomic store); a write
 * already admitted completes.
 */
void tsr_vol_set_write_fence(struct tsr_vol *vol, int err);
int tsr_vol_write_fence(const struct tsr_vol *vol);

#endif
