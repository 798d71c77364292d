/*
 * Tessera cluster metadata store: which nodes and volumes exist, where copies
 * live, who may write (DESIGN.md "Metadata").  One interface modelled on etcd
 * v3 (get, range, compare-and-set, delete, watch, lease), several backends
 * (include/tessera/meta_module.h):
 *
 *  - "sqlite": the embedded default, a SQLite file on the node started with
 *    --meta (DIR/meta.db);
 *  - "remote": every other node, and the tessera CLI: the same calls sent to
 *    the meta node's meta service (engine/meta/meta_server.c) over TCP;
 *  - "etcd": a later issue; callers will not change.
 *
 * Model: a flat key space of printable keys (1..255 bytes) mapping to opaque
 * values (0..64 KiB).  Every change bumps one store-wide revision counter
 * (starting at 1, never reused, persisted); each key carries the revision
 * that created it and the one that last changed it (mod_rev).  Epochs of
 * volume coordinators are mod_revs, so they only grow.  A lease is a TTL the
 * holder keeps alive; when it lapses every key attached to it is deleted
 * (node liveness, coordinator attachments).
 *
 * All calls are blocking, for control threads only (never a worker loop).
 * A handle may be used by one thread at a time; the sqlite backend serialises
 * its callers internally so that the meta service and the local node can share it.
 * Errors common to every call: -ENOTCONN/-ECONNRESET/-ETIMEDOUT (remote: the
 * meta node is unreachable; a reconnect can also give the errors of
 * tsr_meta_open_remote), -EPROTO (remote: a malformed reply), -EIO (storage),
 * -EUCLEAN (sqlite: a row failed its checksum), -ENOMEM, -EINVAL (bad
 * key/value).
 */
#ifndef TESSERA_META_H
#define TESSERA_META_H

#include <stddef.h>
#include <stdint.h>

#define TSR_META_MAX_KEY 255
#define TSR_META_MAX_VALUE (64u * 1024)
#define TSR_META_ANY_REV UINT64_MAX /* tsr_meta_cas/delete: no compare */

struct tsr_meta;

struct tsr_meta_kv {
	char *key;              /* NUL-terminated, malloc'd */
	uint8_t *value;         /* malloc'd (NULL when value_len is 0) */
	size_t value_len;
	uint64_t create_rev;
	uint64_t mod_rev;       /* revision of the last change (for a delete event: of the delete) */
	uint64_t lease;         /* 0: none */
	int deleted;            /* watch events only: 1 when this is a delete */
};

/* Free the contents of kv (not kv itself).  NULL ok. */
void tsr_meta_kv_clear(struct tsr_meta_kv *kv);
/* Free an array returned by range/watch. */
void tsr_meta_kv_free_array(struct tsr_meta_kv *kvs, size_t n);

/*
 * Open (creating) the embedded store at path (SQLite, WAL, synchronous=FULL).
 * Leases survive a restart with their full TTL counted again from the open.
 * Errors: -EACCES/-ENOENT path, -EUCLEAN corrupt file, -EIO.
 */
int tsr_meta_open_sqlite(const char *path, struct tsr_meta **out);
/*
 * Connect to the meta service of the node at "HOST:PORT" (its --listen
 * address), authenticating with the cluster token.  timeout_ms bounds every
 * later call (0: 5000).  Errors: -ECONNREFUSED, -EACCES (token refused),
 * -EHOSTUNREACH, -ETIMEDOUT.  Reconnects by itself on the next call after a
 * lost connection.
 */
int tsr_meta_open_remote(const char *hostport, const char *token, int timeout_ms,
			 struct tsr_meta **out);
void tsr_meta_close(struct tsr_meta *m); /* NULL ok */
const char *tsr_meta_backend(const struct tsr_meta *m); /* "sqlite", "remote" */

/* Errors: -ENOENT. *out to be cleared with tsr_meta_kv_clear. */
int tsr_meta_get(struct tsr_meta *m, const char *key, struct tsr_meta_kv *out);
/*
 * Every key starting with prefix, sorted by key; *rev (may be NULL) gets the
 * store's current revision, to start a watch from.
 */
int tsr_meta_range(struct tsr_meta *m, const char *prefix, struct tsr_meta_kv **out,
		   size_t *n, uint64_t *rev);
/*
 * Put value at key if the key's mod_rev equals expect_rev (0: the key must not
 * exist; TSR_META_ANY_REV: no compare).  lease: attach to that lease (0: none).
 * *new_rev (may be NULL) gets the key's new mod_rev.
 * Errors: -ECANCELED the compare failed (someone else changed the key),
 * -ENOENT lease unknown or expired.
 */
int tsr_meta_cas(struct tsr_meta *m, const char *key, uint64_t expect_rev,
		 const void *value, size_t value_len, uint64_t lease, uint64_t *new_rev);
/* Delete key if its mod_rev equals expect_rev (TSR_META_ANY_REV: always).
 * Errors: -ENOENT no such key, -ECANCELED compare failed. */
int tsr_meta_delete(struct tsr_meta *m, const char *key, uint64_t expect_rev);
/*
 * Changes to keys under prefix with revision > since_rev, oldest first
 * (puts and deletes; a key changed twice may appear once with its latest
 * state).  Waits up to timeout_ms for the first change (0: do not wait).
 * *rev gets the revision to pass as since_rev next time (one call returns at
 * most about 768 KiB of events; the rest come from the next call).
 * Errors: -ECANCELED since_rev is older than the history kept (re-read with
 * tsr_meta_range and watch from its revision).
 */
int tsr_meta_watch(struct tsr_meta *m, const char *prefix, uint64_t since_rev,
		   int timeout_ms, struct tsr_meta_kv **events, size_t *n, uint64_t *rev);
/* Grant a lease of ttl_ms (>= 100).  *id is never 0. */
int tsr_meta_lease_grant(struct tsr_meta *m, uint32_t ttl_ms, uint64_t *id);
/* Renew for another TTL.  Errors: -ENOENT expired or unknown (its keys are gone). */
int tsr_meta_lease_keepalive(struct tsr_meta *m, uint64_t id);
/* End the lease now and delete its keys.  Errors: -ENOENT. */
int tsr_meta_lease_revoke(struct tsr_meta *m, uint64_t id);

/* ---- the meta service (on the node started with --meta) ---------------- */

struct tsr_meta_server;
/*
 * Serve m to remote clients on its own thread ("meta"), so that a busy or
 * blocked control loop never stalls the cluster's metadata.  Connections are
 * handed over already accepted (tesserad's --listen port recognises the meta
 * protocol's first bytes, see engine/meta/meta_proto.c); token is the cluster
 * token every connection must present first.  Errors: -ENOMEM, -EAGAIN.
 */
int tsr_meta_server_start(struct tsr_meta *m, const char *token,
			  struct tsr_meta_server **out);
/* Hand an accepted socket to the service (thread-safe).  Takes ownership of fd. */
void tsr_meta_server_adopt(struct tsr_meta_server *srv, int fd);
void tsr_meta_server_stop(struct tsr_meta_server *srv); /* closes every connection; NULL ok */

/* First 4 bytes a meta client sends on a new connection ("TSRM"). */
#define TSR_META_MAGIC 0x4d525354u /* little endian "TSRM" */

#endif
