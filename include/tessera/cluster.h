/*
 * Tessera cluster control plane (engine/cluster): what a tesserad started
 * with --meta or --join does beyond serving its store.
 *
 *  - membership: registers node/<id> and keeps alive/<id> on a lease in the
 *    metadata store (include/tessera/meta.h, keys in proto/cluster.proto);
 *  - volumes: placement of copies over failure domains, create, delete,
 *    resize, replace-replica, list and show from the metadata store;
 *  - coordinators: attach makes this node a volume's single writer (epoch =
 *    mod_rev of attach/<name>, held on this node's lease) through the mirror
 *    layout (include/tessera/mirror.h) or, for an erasure-coded volume (ec
 *    K+M: K+M chunk copies, include/tessera/ec.h), the ec layout, registered
 *    in the volume set; copies
 *    that come back are told to resync, copies whose node stays dead are
 *    rebuilt elsewhere after --rebuild-after;
 *  - snapshots, clones and rollback of replicated volumes: cut through the
 *    coordinator's gate when attached, on every copy when detached;
 *  - the admin API's cluster commands (tsr_cluster_admin_handle).
 *
 * Threads: everything here runs on tesserad's main libev thread, except a
 * background thread ("cluster") that renews the lease, fences every attached
 * mirror when the lease cannot be proved (so an isolated coordinator stops
 * acknowledging writes) and records copy-state changes asked by the mirrors
 * (those sit on the write path and must not wait behind a busy main loop).
 * Known debt: the main-thread commands make blocking calls (metadata store,
 * other nodes' admin API, tsr_layout_mirror_create); the meta service runs
 * on its own thread so this never stalls the cluster's metadata.
 */
#ifndef TESSERA_CLUSTER_H
#define TESSERA_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin.pb-c.h"
#include "tessera/store.h"
#include "tessera/vol.h"
#include "tessera/worker.h"

struct ev_loop;
struct tsr_cluster;
struct tsr_meta_server;

#define TSR_CLUSTER_LEASE_TTL_MS 3000u
#define TSR_CLUSTER_KEEPALIVE_MS 1000u

struct tsr_cluster_opts {
	struct ev_loop *loop;          /* tesserad's main loop */
	struct tsr_store *store;
	struct tsr_volset *vols;       /* already in cluster mode */
	struct tsr_worker *const *workers; /* home workers for coordinators, round robin */
	unsigned n_workers;
	const char *dir;               /* data directory: DIR/meta.db, DIR/coord/ */
	const char *address;           /* --listen HOST:PORT (actual port) */
	bool meta;                     /* --meta: open DIR/meta.db and run the meta service */
	const char *join;              /* --join HOST:PORT (NULL with --meta) */
	const char *token;             /* cluster token */
	const char *node_id, *zone, *site;
	uint64_t capacity;             /* bytes */
	unsigned peer_timeout_ms;      /* 0: 5000 */
	unsigned write_wait_ms;        /* below min-replicas, how long writes wait (0: 30000) */
	unsigned rebuild_after_sec;    /* 0: never rebuild automatically */
	uint64_t resync_rate;          /* bytes/s, 0: unlimited */
	bool site_pump_worker;         /* geo-replication sources pump on the worker after
					* their volume's home (tsr_site_source_opts.pump_worker;
					* off: on the home, the default until a gain is shown) */
	/* store copies no vol/<name> lists for this node are removed this long
	 * after their creation (engine/cluster/sweep.c); 0: never */
	unsigned leftover_grace_sec;
	const char *const *nbd_listeners;
	size_t n_nbd_listeners;
	/* geo-replication (engine/cluster/replication.c): this cluster's name in
	 * site links (HELLO); NULL: "site-<node id>" */
	const char *repl_site;
};

/*
 * Open the metadata store (sqlite on --meta, else the meta node's service,
 * retried for up to 30 s), start the meta service (--meta), grant the lease,
 * register node/<id> and alive/<id>, start the background thread and the
 * 500 ms tick on opts->loop.  Errors: -ECONNREFUSED/-ETIMEDOUT meta node not
 * reachable, -EACCES token refused, -EEXIST another live node has this id,
 * -EIO/-EUCLEAN metadata store, -ENOMEM; each logged once.
 */
int tsr_cluster_start(const struct tsr_cluster_opts *opts, struct tsr_cluster **out);
/*
 * Detach every volume attached here (cleanly when possible), revoke the
 * lease, stop the thread and the meta service, close the store handle.
 * Call before the workers stop.  NULL ok.
 */
void tsr_cluster_stop(struct tsr_cluster *c);

const char *tsr_cluster_node_id(const struct tsr_cluster *c);
/* Store copies no volume record listed that this node removed since it
 * started (engine/cluster/sweep.c); any thread. */
uint64_t tsr_cluster_leftovers_removed(struct tsr_cluster *c);
/* Taken (lock true) and released around a delete of a store copy of this
 * node made outside engine/cluster (the admin API's local_copy delete), so
 * that the leftover sweep's check and delete of a copy stay atomic against
 * it.  Held for one store delete. */
void tsr_cluster_copy_delete_lock(struct tsr_cluster *c, bool lock);
/* The meta service on the --meta node (for connections on --listen), else NULL. */
struct tsr_meta_server *tsr_cluster_meta_server(struct tsr_cluster *c);

/*
 * Answer an admin request in cluster mode (main thread).  Returns false for
 * what the node answers from its own store: status, the node-to-node
 * local_copy forms (volume create/clone/delete/resize, snapshot create/delete,
 * volume rollback), and snapshot list/show/diff when this node holds an
 * IN_SYNC copy of the volume (else they are forwarded to a node that does:
 * engine/cluster/snapshot.c).  Otherwise fills resp (error + message for a
 * person, or the results, built with malloc the way engine/admin frees
 * replies) and returns true.
 */
bool tsr_cluster_admin_handle(struct tsr_cluster *c, const Tessera__Admin__Request *req,
			      Tessera__Admin__Response *resp);

/* ---- geo-replication (replication.c, include/tessera/site.h) ----------
 *
 * A volume with a repl/<name> record ships to a remote site from the node
 * that coordinates it: attach starts its tsr_site_source, detach stops it.
 * A node with a site listener (tesserad --site-listen) is a target: its
 * tsr_site_server creates, attaches here and fences the target volumes
 * through the ops below, and answers promote and status.
 */
struct tsr_site_server;
struct tsr_site_server_ops;

/* The site server's ops (open_volume) backed by this cluster. */
void tsr_cluster_site_ops(struct tsr_cluster *c, struct tsr_site_server_ops *ops);
/* Tell the cluster about the node's site server (NULL before stopping it). */
void tsr_cluster_set_site_server(struct tsr_cluster *c, struct tsr_site_server *srv);
/* This cluster's site name and id as sent in HELLO (valid names). */
const char *tsr_cluster_repl_site(const struct tsr_cluster *c);
const char *tsr_cluster_id(const struct tsr_cluster *c);

/* ---- placement (placement.c): a pure function, unit tested ------------- */

enum tsr_failure_domain { TSR_FD_NODE = 0, TSR_FD_ZONE = 1, TSR_FD_SITE = 2 };
/* "node" | "zone" | "site" ("" = node).  0 or -EINVAL. */
int tsr_failure_domain_parse(const char *s, enum tsr_failure_domain *out);
const char *tsr_failure_domain_name(enum tsr_failure_domain fd);

struct tsr_place_node {
	const char *id, *zone, *site;
	uint64_t capacity;
	uint64_t provisioned;  /* sizes of the copies already placed on it */
	bool alive;
	bool holds_copy;       /* already holds a copy of this volume: its domain is taken */
};

/*
 * Choose count nodes for copies of size bytes: alive, not holding a copy,
 * each in a distinct failure domain (also distinct from the domains of the
 * nodes holding copies), preferring the domains and nodes with the most
 * unprovisioned capacity (capacity - provisioned; ties by id).  chosen[]
 * gets indices into nodes, best first.  Errors: -ENOSPC with why (a sentence
 * naming the domains that exist and what they lack, e.g. "needs 3 distinct
 * zones; alive nodes cover 2: a (n1), b (n2, n3)"), -EINVAL count 0 or over
 * TSR_PLACE_MAX.
 */
#define TSR_PLACE_MAX 20 /* TSR_LAYOUT_MAX_COPIES: ec 16+4 */
int tsr_cluster_place(const struct tsr_place_node *nodes, size_t n, enum tsr_failure_domain fd,
		      unsigned count, uint64_t size, unsigned *chosen, char *why, size_t why_len);
/*
 * The k+m copies of an erasure-coded volume of size bytes (include/tessera/
 * ec.h): tsr_cluster_place of k+m copies of the chunk volume size
 * (tsr_ec_chunk_volume_size), chosen[c] is copy c (parity rotates over the
 * copies by stripe, so the order only decides which node holds which
 * position of stripe 0).  provisioned of each node must count the chunk
 * volume sizes of its ec copies.  Errors as tsr_cluster_place, the lack of
 * domains said as "ec 4+2 needs 6 nodes in distinct zones, the cluster has
 * 4 alive: ..."; -EINVAL k, m or unit out of range.
 */
int tsr_cluster_place_ec(const struct tsr_place_node *nodes, size_t n,
			 enum tsr_failure_domain fd, unsigned k, unsigned m, uint32_t unit,
			 uint64_t size, unsigned *chosen, char *why, size_t why_len);

#endif
