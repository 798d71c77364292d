/*
 * Private header of engine/cluster/: what each file offers the others.
 * Users include include/tessera/cluster.h.
 *
 * Locking policy: c->lock guards the list of attachments' fields marked
 * "lock", the lease id and the background thread's queue.  The main thread
 * owns everything else; the background thread reads attachments only to
 * fence them and to find their epoch.  c->sweep_lock (taken alone, never
 * with c->lock) is held by the leftover sweep (its own thread) from its
 * last check of a store copy to its delete, and by the main thread around
 * each delete of a store copy of this node (cluster_copy_delete, the admin
 * API's local_copy delete: tsr_cluster_copy_delete_lock): a copy deleted and
 * made again under the same name (a replace onto this node) cannot fall
 * between the sweep's check and its delete.  Held for one store delete.
 * The background (lease) thread never calls the store: a store call may hold
 * the store's lock for longer than the lease TTL (review 15b, F4).
 */
#ifndef TESSERA_CLUSTER_INTERNAL_H
#define TESSERA_CLUSTER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <ev.h>

#include "cluster.pb-c.h"
#include "tessera/admin.h"
#include "tessera/cluster.h"
#include "tessera/meta.h"
#include "tessera/mirror.h"

#define CLUSTER_TICK_SEC 0.5
#define CLUSTER_RETURN_BACKOFF_SEC 2.0  /* between tsr_layout_copy_returned for one copy */
#define CLUSTER_FORWARD_TIMEOUT_MS 120000 /* a command forwarded to another node */
#define CLUSTER_COPY_TIMEOUT_MS 30000   /* creating/deleting a copy on another node */

/* One volume this node coordinates. */
struct attachment {
	char name[64];
	uint64_t epoch;                /* mod_rev of attach/<name> */
	struct tsr_layout *layout;     /* lock; owned by the volume set once registered; NULL before */
	bool fenced;                   /* lock; lease lost: the layout refuses I/O */
	bool fence_logged;             /* main: "fenced by a newer coordinator" said once */
	unsigned n_copies;
	struct {
		char node_id[64];
		double next_return;    /* ev_now before which copy_returned is not repeated */
		double dead_since;     /* ev_now when its node was first seen dead, 0: alive */
		enum tsr_copy_state last_state; /* as last logged */
		bool replacing;        /* main: the tick's automatic replace of this slot
					* runs (answered later: tick_one starts no other) */
		/*
		 * lock: a replace-replica of this slot between its record write
		 * and the layout's answer: its new node ("" none).  A state the
		 * layout's copy (node_id) asks meanwhile is held here (held_set,
		 * held_state; record_state) and written by the replace's undo
		 * when the coordinator refuses the new copy (volume.c).
		 */
		char pending_new[64];
		bool held_set;
		enum tsr_copy_state held_state;
		char *held_missed; /* the same for its missed snapshot operations (attach.c) */
	} copies[TSR_LAYOUT_MAX_COPIES]; /* node_id: written under lock, read by the main
					   * thread or under lock */
	struct attachment *next;       /* lock */
	/*
	 * main: a handle on its volume from detach_begin to detach_finish
	 * (NULL otherwise, or not opened): the volume outlives its clients'
	 * requests, so its replication source (which holds none) is stopped
	 * after they complete, and their writes reach the DR site's log.
	 */
	struct tsr_vol *held;
};

/* A copy-state change asked by a mirror, waiting for the background thread. */
struct state_req {
	char vol[64];
	unsigned idx;
	char node_id[64];  /* copy idx's node as the layout had it when asked ("" unknown) */
	enum tsr_copy_state state;
	void (*done)(void *done_arg, int status);
	void *done_arg;
	struct state_req *next;
};

struct tsr_cluster {
	struct tsr_cluster_opts o;     /* strings below point at our copies */
	char *dir, *address, *join, *token, *node_id, *zone, *site, *coord_dir;
	char **nbd_listeners;
	struct tsr_meta *meta;         /* main thread's handle */
	const char *origin;            /* main thread: the admin request being handled was
					* forwarded by this node ("" none): nested calls avoid it */
	struct tsr_meta *meta_bg;      /* the background thread's (== meta for sqlite) */
	struct tsr_meta *meta_sweep;   /* the sweep thread's (== meta for sqlite) */
	struct tsr_meta_server *meta_srv; /* --meta only */
	uint64_t lease;                /* lock */
	unsigned next_home;            /* round-robin cursor over o.workers */
	ev_timer tick;
	bool tick_running;
	pthread_mutex_t lock;
	pthread_mutex_t sweep_lock;    /* see the policy above */
	pthread_cond_t cond;
	pthread_t thread;
	pthread_cond_t sweep_cond;     /* wakes the sweep thread (stopping) */
	pthread_t sweep_thread;        /* the leftover sweep's (sweep.c) */
	bool thread_started, stopping; /* stopping: lock */
	bool sweep_started;            /* sweep_thread runs (else no sweep, or the
					* test switch TSR_TEST_SWEEP_ON_LEASE_THREAD) */
	struct state_req *queue, *queue_tail; /* lock */
	struct attachment *attached;   /* lock (list links); see struct attachment */
	struct attachment *draining;   /* lock: detached ones (detach_begin) whose coordinator
					* drains its clients' requests until detach_finish:
					* their copy-state changes are still recorded while
					* those requests hold the volume (record_state), so
					* that a copy failing then is not left in sync under
					* a clean detach; linked by next */
	struct detach_wait *detaching; /* main thread: detaches waiting for NBD clients, or
					* for their DR site's ACKs (attach.c) */
	int64_t drain_until_ns;        /* main thread: tsr_cluster_stop's one bound (tsr_mono_ns)
					* on its detaches' waits for their DR sites' ACKs;
					* 0: each detach waits the peer call timeout */
	struct close_wait *close_waits; /* main thread: detaches waiting for their copies'
					 * close on their nodes (closewait.c) */
	bool stopping_waits;           /* main thread: tsr_cluster_stop ends the waits above */
	struct forward_later *forwards; /* main thread: forwards answered later (volume.c) */
	struct attach_job *attaching;  /* main thread: attaches whose layout opens in a
					* thread, until applied and answered (attach.c) */
	ev_async attach_wake;          /* an attach thread's layout open ended */
	bool attach_wake_started;      /* main thread */
	/* geo-replication (replication.c): main thread unless marked */
	char repl_site[64];            /* our site name in HELLO */
	char cluster_id[64];           /* cluster/id: our cluster in HELLO */
	struct repl_source *sources;   /* one per attached volume with repl/<name> shipping */
	struct repl_tls *site_tls;     /* client TLS contexts, one per site (cached) */
	struct tsr_site_server *site_server; /* tesserad --site-listen, else NULL */
	ev_async repl_async;           /* a worker queued a demotion */
	bool repl_async_started;
	ev_async snap_show_async;      /* a create's cut done: read it back (snapshot.c) */
	bool snap_show_started;
	struct repl_demote *demotes;   /* lock; demotions queued by sources' workers */
	struct repl_grow *grows;       /* lock; grows answered by sources' workers */
	struct target_grow *target_grows; /* main thread: DR targets growing (target_grow) */
	/* leftover sweep (sweep.c): set at start, then the sweep thread's */
	bool sweep_on;                 /* grace > 0 and DIR/cluster.joined names our cluster */
	int64_t joined_at;             /* unix seconds this data dir joined the cluster */
	struct sweep_seen *sweep_seen; /* sweep thread: copies seen unlisted, since when */
	size_t n_sweep_seen;
	uint64_t leftovers_removed;    /* lock; copies the sweep removed since start */
};

/* ---- cluster.c: start/stop, lease, background thread, tick ----------- */

/* Current lease (under the lock). */
uint64_t cluster_lease(struct tsr_cluster *c);
/* The bound of a short call to another node (a list, a show, a copy's
 * delete): --peer-timeout-ms (0: 5000), at most CLUSTER_COPY_TIMEOUT_MS. */
int cluster_peer_call_ms(const struct tsr_cluster *c);
/* Unix seconds. */
int64_t cluster_now(void);
/* The attachment of name, or NULL (main thread, or with the lock held). */
struct attachment *cluster_find_attachment(struct tsr_cluster *c, const char *name);
/* The attachment of name, or a detached one still draining (c->draining;
 * *draining then true, may be NULL); with the lock held (record_state,
 * cluster_set_copy_state). */
struct attachment *cluster_find_recording(struct tsr_cluster *c, const char *name,
					  bool *draining);
/* ops ("c NAME\n" lines) as cr's missed_snaps (attach.c): 0 or -errno, cr unchanged */
int cluster_missed_set(Tessera__Cluster__CopyRecord *cr, const char *ops);
/* layout hook: queue a copy-state change of copy idx on node_id for the
 * background thread */
void cluster_set_copy_state(void *arg, const char *vol, unsigned idx, const char *node_id,
			    enum tsr_copy_state st, void (*done)(void *done_arg, int status),
			    void *done_arg);

/* ---- records.c: metadata records ------------------------------------- */

/* Get and decode; -ENOENT absent, -EUCLEAN malformed record (logged). *rev may be NULL. */
int rec_node_get(struct tsr_meta *m, const char *id, Tessera__Cluster__NodeRecord **out);
int rec_volume_get(struct tsr_meta *m, const char *name, Tessera__Cluster__VolumeRecord **out,
		   uint64_t *rev);
/* Decode a value read from the store (NULL when malformed, logged with key). */
Tessera__Cluster__NodeRecord *rec_node_decode(const struct tsr_meta_kv *kv);
Tessera__Cluster__VolumeRecord *rec_volume_decode(const struct tsr_meta_kv *kv);
Tessera__Cluster__AttachRecord *rec_attach_decode(const struct tsr_meta_kv *kv);
/* replication.c: a site/ or repl/ value (NULL when malformed, logged with key). */
Tessera__Cluster__SiteRecord *repl_site_decode(const struct tsr_meta_kv *kv);
Tessera__Cluster__ReplicationRecord *repl_record_decode(const struct tsr_meta_kv *kv);
/* Pack msg and CAS it at key (expect_rev as tsr_meta_cas). */
int rec_put(struct tsr_meta *m, const char *key, const ProtobufCMessage *msg,
	    uint64_t expect_rev, uint64_t lease, uint64_t *new_rev);
/*
 * Read-modify-write of the record at key by compare-and-set (no lease), read
 * again and retried while another writer changed it in between (up to
 * REC_UPDATE_TRIES times).  decode(kv) gives the message (NULL: malformed,
 * logged by it); fn(msg, arg) changes it (freed after) in place and returns
 * 0 to write it, 1 to leave the record as it is (success: nothing written),
 * or -errno to give up.  It may run several times: it must start from msg
 * alone.  0, fn's -errno, tsr_meta_get's (-ENOENT absent), -EUCLEAN
 * (malformed), rec_put's, or -ECANCELED (every try lost).
 */
#define REC_UPDATE_TRIES 50
typedef ProtobufCMessage *(*rec_decode_fn)(const struct tsr_meta_kv *kv);
typedef int (*rec_mutator)(ProtobufCMessage *msg, void *arg);
int rec_update(struct tsr_meta *m, const char *key, rec_decode_fn decode, rec_mutator fn,
	       void *arg);
/* rec_update of vol/<name>, fn given the decoded VolumeRecord. */
typedef int (*rec_volume_mutator)(Tessera__Cluster__VolumeRecord *rec, void *arg);
int rec_volume_update(struct tsr_meta *m, const char *name, rec_volume_mutator fn, void *arg);
/* Bytes of one store copy of r: the volume size, or (ec) its chunk volume size. */
uint64_t rec_copy_size(const Tessera__Cluster__VolumeRecord *r);
const char *rec_state_name(Tessera__Cluster__CopyState st);
enum tsr_copy_state rec_state_to_mirror(Tessera__Cluster__CopyState st);
Tessera__Cluster__CopyState rec_state_from_mirror(enum tsr_copy_state st);

/* Everything about the cluster a command needs, read in one go (main thread). */
struct cluster_view {
	struct tsr_meta_kv *node_kvs, *alive_kvs, *vol_kvs, *attach_kvs;
	size_t n_node_kvs, n_alive_kvs, n_vol_kvs, n_attach_kvs;
	Tessera__Cluster__NodeRecord **nodes;   /* decoded node_kvs (malformed ones skipped) */
	size_t n_nodes;
	Tessera__Cluster__VolumeRecord **vols;
	size_t n_vols;
	uint64_t rev;
};
int view_load(struct tsr_meta *m, struct cluster_view *v);
void view_free(struct cluster_view *v);
bool view_alive(const struct cluster_view *v, const char *node_id);
const Tessera__Cluster__NodeRecord *view_node(const struct cluster_view *v, const char *id);
/* node id attached as coordinator of vol (epoch in *epoch), or NULL */
const char *view_attached(const struct cluster_view *v, const char *vol, uint64_t *epoch);
/* Bytes of the store copies placed on node_id (rec_copy_size each) and their count. */
uint64_t view_provisioned(const struct cluster_view *v, const char *node_id, uint32_t *copies);

/* ---- volume.c: create, delete, resize, list, show, replace ----------- */

void cluster_volume_create(struct tsr_cluster *c, const Tessera__Admin__VolumeCreate *r,
			   Tessera__Admin__Response *resp);
/* Placement input of a new volume: every node of v, none holding a copy. */
size_t cluster_place_input(const struct cluster_view *v, struct tsr_place_node *pn, size_t max);
/*
 * vol/<name> of a volume whose n copies were just made, on node_ids[i]
 * (cluster_volume_create; a DR target's target_create, replication.c):
 * every copy IN_SYNC since now, clean_detach (fresh copies are identical:
 * zeros, ec zero parity), a new uuid.  f->rec points into f and at the
 * caller's strings: valid while they are.
 */
struct cluster_fresh_record {
	Tessera__Cluster__VolumeRecord rec;
	Tessera__Cluster__CopyRecord copies[TSR_PLACE_MAX];
	Tessera__Cluster__CopyRecord *copy_ptrs[TSR_PLACE_MAX];
	char uuid[37];
};
void cluster_fresh_record(struct cluster_fresh_record *f, const char *name, uint64_t size,
			  unsigned n, unsigned min_in_sync, enum tsr_failure_domain fd, unsigned k,
			  unsigned m, uint32_t unit, uint32_t region_size, const char *const *node_ids);
void cluster_volume_delete(struct tsr_cluster *c, const char *name,
			   Tessera__Admin__Response *resp);
void cluster_volume_resize(struct tsr_cluster *c, const Tessera__Admin__VolumeResize *r,
			   Tessera__Admin__Response *resp);
/*
 * The same resize without an admin connection (target_grow: a DR target
 * grown for its source), every node call asynchronous: returns 1 with the
 * answer in resp (nothing had to wait), or 0 and done_fn(done_arg, answer)
 * runs later on the main loop, exactly once (the answer is freed after it
 * returns).  Main thread.
 */
typedef void (*cluster_resize_fn)(void *done_arg, const Tessera__Admin__Response *answer);
int cluster_volume_resize_async(struct tsr_cluster *c, const char *name, uint64_t size,
				cluster_resize_fn done_fn, void *done_arg,
				Tessera__Admin__Response *resp);
void cluster_volume_list(struct tsr_cluster *c, const char *only,
			 Tessera__Admin__Response *resp);
/* Replace copy on node old by one on to ("" or NULL: placement picks); auto: by the tick. */
int cluster_replace_replica(struct tsr_cluster *c, const char *name, const char *old,
			    const char *to, char *msg, size_t msg_len);
/*
 * The tick's automatic replace (--rebuild-after) of name's copy on old (slot:
 * the attachment's, given back), no admin request behind it: the same steps
 * as cluster_replace_replica, each call to another node asynchronous (the
 * control loop runs meanwhile).  -EINPROGRESS: done(c, name, old, slot, ret,
 * msg) runs later on the main loop, exactly once (at tsr_cluster_stop too:
 * -ESHUTDOWN, or 0 when the copy was recorded); else the result now (0, or
 * -errno with msg) and done never runs.  Main thread.
 */
typedef void (*cluster_replace_fn)(struct tsr_cluster *c, const char *name, const char *old,
				   unsigned slot, int ret, const char *msg);
int cluster_replace_auto(struct tsr_cluster *c, const char *name, const char *old, unsigned slot,
			 cluster_replace_fn done, char *msg, size_t msg_len);
/* A replace-replica of name through this node waits for another node (its
 * snapshot list, its new copy, the old copy's uuid): the copy's node (old)
 * then, else NULL.  Main thread. */
const char *cluster_replace_waiting(const struct tsr_cluster *c, const char *name);
/*
 * A snapshot create (op 'c') or delete ('d') of name through its coordinator
 * here begins while a replace of name through this node waits: noted for
 * that replace, which applies it to the snapshots it gives its new copy
 * (review 17a F4: the snapshot was refused for the whole wait, up to the 30 s
 * of the new copy's create).  Noted before the cut begins, so whatever the
 * order of the cut and the replace's record write, the new copy is given a
 * create (one whose outcome is not known at the write included: a cut that
 * then fails leaves a name none has, whose make-up finds nothing, and is
 * done).  An invalid name is not noted (the snapshot's own checks refuse
 * it).  0, -ENOMEM, or -E2BIG (REPLACE_MISSED_MAX noted already: refuse the
 * snapshot until the replace answers).  Main thread.
 */
int cluster_replace_note_snap(struct tsr_cluster *c, const char *name, char op, const char *snap);
/*
 * The outcome of a snapshot operation noted so (done: it went through), given
 * once it is known: a failed create is not given to the new copy, and only a
 * delete done takes a name off its list (volume.c replace_noted_merge).  No
 * replace waiting, or the op not noted: nothing.  Main thread.
 */
void cluster_replace_snap_done(struct tsr_cluster *c, const char *name, char op,
			       const char *snap, bool done);
/* Build the admin Volume message of a record (view for attach state and URIs). */
Tessera__Admin__Volume *cluster_build_volume(struct tsr_cluster *c, const struct cluster_view *v,
					     const Tessera__Cluster__VolumeRecord *r);
/* Create/delete/resize node's store copy (ours: the store; else its admin API). */
int cluster_copy_create(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
			const char *name, uint64_t size, char *msg, size_t msg_len);
int cluster_copy_delete(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
			const char *name, char *msg, size_t msg_len);
/* The uuid of node's store copy of name, asked within the peer timeout at
 * size 0 (any size), then, when the node named none (a node before session
 * 20 refuses size 0), at size (its record's; 0: not again): 0 with uuid (""
 * when the node named none), -ENOENT (no copy there), the node's other error
 * or the call's -errno (volume.c copy_uuid_ask). */
int cluster_copy_uuid(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
		      const char *name, uint64_t size, char uuid[37]);
/* The requests and answers of cluster_copy_uuid and cluster_copy_delete_uuid
 * for a caller that sends them itself (admin_async_call: replication.c's
 * claim release; closewait.c).  cluster_copy_uuid_req: the local_copy
 * VolumeResize, check_only, at size (0: any, nodes of session 20 on), which
 * changes nothing, into req/vr (the caller's); the answer's Volume also has
 * the copy's open sessions (copy_sessions, closewait.c); its answer's uuid
 * ("" when none) in uuid, 0, -ENOENT (no copy) or the node's other error
 * (-EINVAL is 0 with no uuid: an earlier build refusing size 0).  cluster_copy_delete_req:
 * the local_copy VolumeDelete by uuid (NULL: by name) into req/vd; its
 * answer (resp, or the call's failure status) 0 (deleted or none) or -errno
 * with msg (-ESTALE: another copy there). */
void cluster_copy_uuid_req(const char *name, uint64_t size, Tessera__Admin__Request *req,
			   Tessera__Admin__VolumeResize *vr);
int cluster_copy_uuid_answer(const Tessera__Admin__Response *resp, char uuid[37]);
void cluster_copy_delete_req(const char *name, const char *uuid, Tessera__Admin__Request *req,
			     Tessera__Admin__VolumeDelete *vd);
int cluster_copy_delete_answer(const Tessera__Cluster__NodeRecord *node, const char *name,
			       int status, const Tessera__Admin__Response *resp, int timeout_ms,
			       char *msg, size_t msg_len);
/* cluster_copy_delete, only if node's copy of name has uuid (NULL or "": any):
 * another copy there is left alone, -ESTALE (node older than ctl3: any, as
 * before). */
int cluster_copy_delete_uuid(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
			     const char *name, const char *uuid, char *msg, size_t msg_len);
/* The same, another node's call bounded by cluster_peer_call_ms. */
int cluster_copy_delete_short(struct tsr_cluster *c, const Tessera__Cluster__NodeRecord *node,
			      const char *name, const char *uuid, char *msg, size_t msg_len);
/*
 * A copy walk (volume.c): the store copies of name on nodes[], in turn,
 * each asked for its uuid (as cluster_copy_uuid: size 0, then size) and/or
 * deleted by it (cluster_copy_delete_req; by name when its node named none;
 * not at all when the ask answered anything but 0).  With async (a client's
 * request whose reply comes later, admin_later_begin) another node's call
 * is made with the loop's async client (admin_async_call) and the loop goes
 * on meanwhile; else (and this node's copy) each call blocks, bounded by the
 * peer timeout (the deletes: delete_ms).  The volume delete
 * (cluster_volume_delete) and the DR claim's release (repl_claim_release)
 * use it.  The caller fills it (copy_walk_init; nodes: id, address, call;
 * size; async); the rest is the walk's.
 */
struct copy_walk_node {
	char id[64];
	char address[128];
	bool call;     /* a node to call; else not (down, unknown): its copy stays */
	int asked;     /* the ask's: 0 (uuid), -ENOENT (no copy), else none named */
	char uuid[37]; /* with asked 0: its copy's ("": the node named none) */
	int deleted;   /* the delete's: 0 (deleted, or none), else -errno with msg */
	char msg[512];
};

enum copy_walk_step { WALK_ASK, WALK_ASK_SIZE, WALK_DELETE };

typedef void (*copy_walk_fn)(void *arg);

struct copy_walk {
	struct tsr_cluster *c;
	const char *name;             /* the caller's, while the walk runs */
	uint64_t size;                /* the ask's second size (0: none) */
	int delete_ms;                /* another node's delete: its bound */
	struct copy_walk_node *nodes; /* the caller's */
	size_t n_nodes;
	bool async;           /* other nodes called with admin_async_call */
	copy_walk_fn done_fn; /* an async walk's end (after copy_walk_run's 1): once */
	void *done_arg;
	/* the walk's own */
	bool asks, deletes;          /* what this run does per node */
	bool stopped;                /* cancelled (copy_walk_stop): the nodes after not called */
	size_t next;                 /* the node called now, or to call */
	enum copy_walk_step step;    /* nodes[next]'s call now */
	struct admin_async *call;    /* until its callback fired */
	struct copy_walk *next_walk; /* the running walks' list (copy_walk_list) */
};
/* w (zeroed) for name's copies on c (nodes, n_nodes, size, async: the
 * caller's to fill). */
void copy_walk_init(struct copy_walk *w, struct tsr_cluster *c, const char *name, int delete_ms,
		    copy_walk_fn done_fn, void *done_arg);
/* Each node called is asked (asks), then its copy deleted (deletes: only a
 * node whose ask answered 0; without asks, those of an earlier run).  0: done (the
 * calls blocked, or none); 1: a call runs, done_fn fires once when the
 * last ends (or copy_walk_stop cancels it). */
int copy_walk_run(struct copy_walk *w, bool asks, bool deletes);
/* On the loop: a call that runs is cancelled, done_fn fires now (stopped). */
void copy_walk_stop(struct copy_walk *w);
/* The walks whose answer comes later, listed (main thread) while they run:
 * copy_walk_find, the one of c with done_fn on name (a second delete or
 * release of it is refused, -EBUSY), or NULL; copy_walks_stop (tesserad's
 * stop), each of c with done_fn stopped (its done_fn unlists it). */
void copy_walk_list(struct copy_walk *w);
void copy_walk_unlist(struct copy_walk *w);
struct copy_walk *copy_walk_find(struct tsr_cluster *c, const char *name, copy_walk_fn done_fn);
void copy_walks_stop(struct tsr_cluster *c, copy_walk_fn done_fn);
/* A volume delete's or a claim release's answer (error 0): copy_left_add,
 * resp's copies_left gets node's copy, left for why (freed with resp,
 * admin_response_free_built; out of memory: only the message names it);
 * copies_left_move, from's list moved to to (a reply given later). */
void copy_left_add(Tessera__Admin__Response *resp, const char *node, const char *why);
void copies_left_move(Tessera__Admin__Response *to, Tessera__Admin__Response *from);
/* One admin call to the node at address (blocking); 0 or -errno of the transport. */
int cluster_call_node(struct tsr_cluster *c, const char *address, Tessera__Admin__Request *req,
		      int timeout_ms, Tessera__Admin__Response **resp);
/* "unix:PATH"/"tcp:HOST:PORT" listener + export name -> NBD URI (malloc'd), or NULL. */
char *cluster_nbd_uri(const char *listener, const char *name);
/* The answer of a forward: status 0 and r moved into resp (r freed), or the
 * transport's -errno as an error reply naming node_id and address. */
void cluster_forward_answer(const char *node_id, const char *address, int status,
			    Tessera__Admin__Response *r, Tessera__Admin__Response *resp);
/* Send req to node at address and move its answer into resp (an error reply
 * on failure), waiting on this thread (the loop stops meanwhile). */
void cluster_forward(struct tsr_cluster *c, const char *node_id, const char *address,
		     const Tessera__Admin__Request *req, Tessera__Admin__Response *resp);
/*
 * req forwarded as the whole answer of the admin request being handled: its
 * reply is sent when node answers (up to CLUSTER_FORWARD_TIMEOUT_MS), the
 * loop serving other calls meanwhile; the caller must not touch resp after.
 * true: forwarded (or resp filled with the failure to start it); false: no
 * admin request is being handled here or out of memory, nothing done.
 */
bool cluster_forward_later(struct tsr_cluster *c, const char *node_id, const char *address,
			   const Tessera__Admin__Request *req, Tessera__Admin__Response *resp);
/* cluster_forward_later, else the blocking cluster_forward. */
void cluster_forward_reply(struct tsr_cluster *c, const char *node_id, const char *address,
			   const Tessera__Admin__Request *req, Tessera__Admin__Response *resp);
/* tsr_cluster_stop: forwards still out answer -ECANCELED now. */
void cluster_forward_stop(struct tsr_cluster *c);

/* ---- snapshot.c: snapshots, clones, rollback ------------------------- */

/* SnapshotCreate/Delete (not local_copy): through the coordinator's gate when
 * attached (here or forwarded), on every copy's store when detached. */
void cluster_snapshot_change(struct tsr_cluster *c, const Tessera__Admin__Request *req,
			     Tessera__Admin__Response *resp);
/* tsr_cluster_stop, before freeing c: the cuts still pending (answered
 * later) reply without c. */
void cluster_snapshot_stop(struct tsr_cluster *c);
/*
 * SnapshotList/Show/Diff of volume: false when this node holds an IN_SYNC
 * copy (the admin layer answers from the store), else asked of the alive
 * nodes that do, in turn, each bounded (the peer timeout; a diff 30 s):
 * true, resp the first answer, or an error naming each node that failed.
 * With answer_later (resp is the whole answer of the admin request being
 * handled), the reply is sent when a node answers (resp is not the
 * caller's after); else the calls block, each bounded.
 */
bool cluster_snapshot_read(struct tsr_cluster *c, const char *volume,
			   const Tessera__Admin__Request *req, Tessera__Admin__Response *resp,
			   bool answer_later);
/* tsr_cluster_stop: each read waiting for a node answers now (-ESHUTDOWN). */
void cluster_snap_read_stop(struct tsr_cluster *c);
/* tsr_cluster_start: a create's description read back off the loop (before
 * cluster_snapshot_stop, which ends it). */
void cluster_snapshot_start(struct tsr_cluster *c);
/* A snapshot create or delete (or a clone's cut) of vol through this node has
 * begun and not answered yet.  Main thread. */
bool cluster_snapshot_changing(struct tsr_cluster *c, const char *vol);
/* volume show: out->snapshots from a node holding an IN_SYNC copy (ours or
 * asked); left empty when none answers. */
void cluster_volume_snapshots(struct tsr_cluster *c, Tessera__Admin__Volume *out);
/* volume show's list into resp->volumes[0] (one volume, no error): from our
 * store, or the alive nodes holding an IN_SYNC copy asked in turn, each bounded
 * by the peer timeout.  true: the reply comes later (the caller must not touch
 * resp; the loop goes on meanwhile); false: resp done (none answered: without
 * the list, resp->message saying so). */
bool cluster_volume_show_snapshots(struct tsr_cluster *c, Tessera__Admin__Response *resp);
/* tsr_cluster_stop: each show waiting for a list answers now, without it. */
void cluster_show_stop(struct tsr_cluster *c);
/* VolumeRollback (not local_copy): detached volumes, every copy. */
void cluster_volume_rollback(struct tsr_cluster *c, const Tessera__Admin__VolumeRollback *r,
			     Tessera__Admin__Response *resp);
/* VolumeCreate with from_volume (not local_copy): a clone on the source's copy nodes. */
void cluster_volume_clone(struct tsr_cluster *c, const Tessera__Admin__VolumeCreate *r,
			  Tessera__Admin__Response *resp);

/* ---- attach.c: coordinators ------------------------------------------ */

void cluster_attach(struct tsr_cluster *c, const Tessera__Admin__Request *req,
		    Tessera__Admin__Response *resp);
void cluster_detach(struct tsr_cluster *c, const Tessera__Admin__Request *req,
		    Tessera__Admin__Response *resp);
/* Detach locally: unregister, delete attach/<name>, clean_detach when not fenced.
 * Blocks: up to 2 s for its NBD clients' requests, then, clean, until its DR
 * site has ACKed its source's log (bounded by c->drain_until_ns, else the peer
 * call timeout).  0 or -errno; msg: "detached NAME" and what its site lacks. */
int cluster_detach_local(struct tsr_cluster *c, struct attachment *a, char *msg, size_t msg_len);
/* Whether an admin detach of name waits for its NBD clients, or for its DR
 * site's ACKs, here (main thread). */
bool cluster_detach_pending(struct tsr_cluster *c, const char *name);
/* Finish every waiting detach now, let their replies go (tsr_cluster_stop). */
void cluster_detach_stop_waits(struct tsr_cluster *c);

/* ---- closewait.c: a detach's reply held until its copies are closed -- */

/* note: "" once every copy is closed, else which nodes' copies are still
 * open and why (for the detach's reply and the log; the callback's copy). */
typedef void (*close_wait_fn)(void *cb_arg, const char *note);
/*
 * Wait, on the loop, until the store copies of name on nodes (n node ids,
 * the detached coordinator's copies; this node's looked at in its store) are
 * closed there, at most the peer timeout, or name is attached again (an
 * attach/<name> of a higher epoch than the detached coordinator's, epoch: no
 * note).  Returns 0 and cb_fn fires exactly once, on the loop, never before
 * this returns; or -errno and cb_fn never fires: -EINVAL (n is 0 or too
 * large), -ENOMEM, the record's read's (-ENOENT: no vol/<name>).
 */
int cluster_close_wait_start(struct tsr_cluster *c, const char *name, uint64_t epoch,
			     const char (*nodes)[64], unsigned n, close_wait_fn cb_fn,
			     void *cb_arg);
/* tsr_cluster_stop: every wait ends now (its callback says so). */
void cluster_close_wait_stop(struct tsr_cluster *c);
/*
 * The note's list of the copies still open, into out (len bytes): "n2, n3
 * (its node did not answer ...), n4 (1 session(s) open there)": the nodes of
 * one state together, in the copies' order, so that a large layout's note
 * stays short (an ec 16+4 volume behind a cut site); cut short with "..."
 * past len.  nodes[i], states[i]: copy i's node and state, NULL when closed.
 */
void cluster_close_note(char *out, size_t len, unsigned n, const char *const *nodes,
			const char *const *states);
void cluster_volume_status(struct tsr_cluster *c, const Tessera__Admin__Request *req,
			   Tessera__Admin__Response *resp);
/*
 * The running layout's view of copy slot lc into cp (the record's copy of
 * that slot): state, session, dirty bytes and counters; when the layout's
 * copy is on another node than cp's (a replace recorded that the layout has
 * not taken), none of them: cp keeps the record's state, is not connected
 * nor counted, and coordinator_has names the layout's node.
 */
void cluster_status_copy(Tessera__Admin__Copy *cp, const struct tsr_layout_copy_status *lc);
void cluster_volume_scrub(struct tsr_cluster *c, const Tessera__Admin__Request *req,
			  Tessera__Admin__Response *resp);
/* The 500 ms pass over the attachments: returning copies, fencing, rebuilds. */
void cluster_attach_tick(struct tsr_cluster *c);

/* Attach name here, the layout opened on this thread (volume attach when its
 * reply cannot come later, TSR_TEST_ATTACH_INLINE; a DR target without a
 * thread).  0 (also when attached here already), or -errno with msg. */
int cluster_attach_local(struct tsr_cluster *c, const char *name, char *msg, size_t msg_len);
/* An attach of name running here: its layout opens in a thread (main thread). */
bool cluster_attach_running(struct tsr_cluster *c, const char *name);
/*
 * site_open_volume's attach of a DR target: the layout opens in a thread,
 * -EINPROGRESS ("being attached: retry", msg) meanwhile; once it is done the
 * volume is attached, registered write-fenced -EROFS (not when it was
 * promoted meanwhile), or the next call within ATTACH_FAIL_KEEP_MS returns
 * its failure once.  0: attached (inline when no thread could run it, also
 * registered fenced), or the cluster_attach_local refusals.
 */
int cluster_attach_target(struct tsr_cluster *c, const char *name, char *msg, size_t msg_len);
/* tsr_cluster_start: the attach threads' wake-up on c->o.loop. */
void cluster_attach_init(struct tsr_cluster *c);
/* tsr_cluster_stop: waits for the layouts still opening, undoes those
 * attaches and answers them -ESHUTDOWN. */
void cluster_attach_stop(struct tsr_cluster *c);
/* The attach/<name> key: the holder's node id into node, its epoch (mod_rev)
 * and lease (each may be NULL).  0, -ENOENT when detached, -EUCLEAN on a
 * record that does not decode, or the metadata store's -errno. */
int cluster_get_attach(struct tsr_cluster *c, const char *name, char *node, size_t node_len,
		       uint64_t *epoch, uint64_t *lease);

/* ---- replication.c: geo-replication records, sources, admin ----------- */

/* At start (after the metadata store is open): cluster/id, the async watcher. */
int repl_start(struct tsr_cluster *c);
/* At stop, after every detach: stop what is left, free the TLS contexts. */
void repl_stop(struct tsr_cluster *c);
/* name was just registered in the volume set here: start its source, or
 * fence it (demoted, or a replication target of this node). */
/* The home worker a consistency group's member must run on (its group
 * hashed over the workers), or NULL: any (round robin).  Control thread. */
struct tsr_worker *repl_home_hint(struct tsr_cluster *c, const char *name);
void repl_on_attach(struct tsr_cluster *c, const char *name);
/* vol was a DR copy promoted here: target/<vol> says "promoted", or the
 * site server's state of vol does.  Control thread. */
bool repl_target_promoted(struct tsr_cluster *c, const char *vol);
/* name is about to be unregistered here: stop its source. */
void repl_on_detach(struct tsr_cluster *c, const char *name);
/* What a volume's source holds that its site has not ACKed (repl_unshipped). */
struct repl_unshipped {
	char site[64];   /* the site it ships to */
	uint64_t writes; /* entries in its log (and, split, handed over): the host's
			  * writes and trims, a sync's end */
	uint64_t bytes;  /* lag_bytes: their data and the regions still to re-copy */
};
/*
 * Whether name's source (running here) still lacks its site's ACK for a
 * change acknowledged to the host before since_ns (tsr_mono_ns; 0: any
 * time): true, *out filled, also while its counters are not newer than
 * since_ns (published every 10 ms); false when none, when name has no
 * source here, or when it is demoted (it ships nothing).  Main thread.
 */
bool repl_unshipped(struct tsr_cluster *c, const char *name, int64_t since_ns,
		    struct repl_unshipped *out);
/* Site and replication commands (true: resp filled). */
bool repl_admin_handle(struct tsr_cluster *c, const Tessera__Admin__Request *req,
		       Tessera__Admin__Response *resp);
/* volume delete: -EBUSY with msg while repl/<name> exists, else 0. */
int repl_volume_busy(struct tsr_cluster *c, const char *name, char *msg, size_t msg_len);
/* Blocking form of repl_grow_target_async (up to REPL_GROW_TIMEOUT_MS), for a
 * resize with no admin connection: 0 or -errno with msg. */
int repl_grow_target(struct tsr_cluster *c, const char *name, uint64_t size, char *msg,
		     size_t msg_len);
/*
 * name (attached here, its coordinator) is about to grow to size: when it
 * replicates, its site target grows first (the source's stream reopened
 * announcing size: tsr_site_source_grow_async, bounded by
 * REPL_GROW_TIMEOUT_MS on the source's worker).  Returns 1: nothing to grow
 * (no repl/<name>, or demoted), cb_fn never fires; 0: cb_fn(cb_arg, status,
 * msg) fires exactly once, later, on the main loop (never inside this call),
 * with 0 or -errno and the refusal's sentence; *out is the handle until then;
 * -errno with msg: refused at once (the link is down: -ENOTCONN; the source
 * does not run here; ...), cb_fn never fires.  Main thread.
 */
struct repl_grow;
typedef void (*repl_grow_fn)(void *cb_arg, int status, const char *msg);
int repl_grow_target_async(struct tsr_cluster *c, const char *name, uint64_t size,
			   repl_grow_fn cb_fn, void *cb_arg, struct repl_grow **out, char *msg,
			   size_t msg_len);
/* Before its callback fired: it never will (the answer is dropped).  NULL ok. */
void repl_grow_abandon(struct repl_grow *g);
/* volume delete of name, before its record's delete: *rev, the revision of
 * target/<name> (0: absent).  0, or -errno (unreadable: logged; *rev 0, so
 * the claim is kept).  Main thread. */
int repl_target_rev(struct tsr_cluster *c, const char *name, uint64_t *rev);
/* volume delete succeeded (the record deleted): target/<name> deleted at rev,
 * read by repl_target_rev before the record's delete (0: nothing to do).  A
 * claim written since (a DR create of the name on another node) is kept:
 * the compare fails, logged.  0 (deleted, nothing to do, or moved on), or
 * -errno: the store failed, the claim kept (logged; the caller's answer
 * says so).  Main thread. */
int repl_volume_deleted(struct tsr_cluster *c, const char *name, uint64_t rev);
/* volume create of name: -EEXIST with msg when a DR stream's claim
 * target/<name> names it and vol/<name> is absent (or -errno: unreadable);
 * 0 otherwise.  Main thread. */
int repl_name_claimed(struct tsr_cluster *c, const char *name, char *msg, size_t msg_len);
/* volume delete of name answered -ENOENT in resp: a claim target/<name>
 * with no create of it running here is released, or a "promoted" mark left
 * there is deleted (vol/<name> read absent again), resp then error 0. */
void repl_claim_release(struct tsr_cluster *c, const char *name, Tessera__Admin__Response *resp);

/* ---- sweep.c: leftover store copies no record lists ----------------- */

#define SWEEP_GRACE_DEFAULT_SEC 900
/* A store copy the sweep has seen unlisted, at every pass since since_ms. */
struct sweep_seen {
	char name[64];
	char uuid[37];
	int64_t since_ms;              /* tsr_mono_ms() of the first such pass (this run) */
	bool mark;                     /* seen unlisted at the current pass */
};
/* At start, after repl_start (c->cluster_id): read or write DIR/cluster.joined
 * and decide whether the sweep runs (always 0: a problem only turns it off,
 * logged). */
int cluster_sweep_init(struct tsr_cluster *c);
/* One pass (sweep thread): remove this node's leftover copies (rule in
 * sweep.c).  true: stopped at its time budget, more to look at soon. */
bool cluster_sweep(struct tsr_cluster *c);
/* Milliseconds between passes: grace/4, 1 to 60 s. */
unsigned cluster_sweep_interval_ms(const struct tsr_cluster *c);

/* ---- nodes.c: node list, cluster status ------------------------------ */

void cluster_node_list(struct tsr_cluster *c, Tessera__Admin__Response *resp);
void cluster_status(struct tsr_cluster *c, Tessera__Admin__Response *resp);

#endif
