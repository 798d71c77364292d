/*
 * Private header of engine/admin/: what each file offers the others (and the
 * unit tests).  Users include include/tessera/admin.h.  engine/cluster uses
 * the reply builders of admin_msg.c too (it fills the cluster commands'
 * replies).
 */
#ifndef TESSERA_ADMIN_INTERNAL_H
#define TESSERA_ADMIN_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <ev.h>

#include "tessera/admin.h"

/* ---- admin_msg.c: framing and message building ------------------------ */

/* Length carried by a frame header (big endian u32). */
uint32_t admin_frame_len(const uint8_t hdr[4]);
/*
 * Pack msg into a malloc'd frame (4-byte length + bytes).
 * Errors: -EMSGSIZE larger than TSR_ADMIN_MAX_FRAME, -ENOMEM.
 */
/* TCP connect to "HOST:PORT" with TCP_NODELAY; nonblock: may return while the
 * connect is in progress (admin_sock.c).  0 and *fd_out, or -errno. */
int admin_tcp_connect(const char *hostport, bool nonblock, int *fd_out);
/* A numeric "IP:PORT" or "[IPv6]:PORT" with its NUL fits (scope id included). */
#define ADMIN_ADDR_MAX 96
/* "HOST:PORT"'s addresses, in the resolver's order, as numeric HOST:PORT
 * strings (at most max) that admin_tcp_connect and admin_async_call take
 * without a resolver round trip: for a caller that connects again and again
 * (closewait.c: one look every 10 ms).  A numeric host is its own address;
 * a name is resolved, blocking (getaddrinfo).  Returns how many (>= 1), or
 * -EINVAL (not HOST:PORT), -EHOSTUNREACH (the name does not resolve); on an
 * error why holds the cause for a message (the resolver's: gai_strerror). */
int admin_resolve(const char *hostport, char (*out)[ADMIN_ADDR_MAX], unsigned max, char *why,
		  size_t why_len);
int admin_frame_pack(const ProtobufCMessage *msg, uint8_t **frame, size_t *len);

/* tsr_admin_connect_tcp that gives up after timeout_ms (-ETIMEDOUT) when the
 * connect does not complete (a peer cut off by a partition: a blocking
 * connect would wait for the kernel's SYN retries, minutes).  The socket is
 * non-blocking (tsr_admin_call polls with its own deadline).  0 or -errno. */
int admin_connect_tcp_timeout(const char *hostport, const char *token, int timeout_ms,
			      struct tsr_admin_client **out);

/* strdup that keeps NULL as protobuf's empty string; NULL on ENOMEM. */
char *admin_strdup(const char *s);
/*
 * Free a Response built by the server (every string malloc'd or
 * protobuf_c_empty_string; arrays and sub-messages malloc'd, each on its
 * own).  NULL ok.
 */
void admin_response_free_built(Tessera__Admin__Response *resp);
void admin_volume_free_built(Tessera__Admin__Volume *v);
void admin_snapshot_free_built(Tessera__Admin__Snapshot *s);
void admin_node_free_built(Tessera__Admin__Node *n);
void admin_site_free_built(Tessera__Admin__Site *s);
void admin_replication_free_built(Tessera__Admin__Replication *r);
void admin_data_fs_free_built(Tessera__Admin__DataFs *fs);
/*
 * The file system of dir (statvfs) as a built DataFs (error set when
 * statvfs fails), or NULL on ENOMEM.  A blocking call (statvfs): control
 * thread only.
 */
Tessera__Admin__DataFs *admin_data_fs(const char *dir);
/*
 * The bytes on disk of all of store's volumes (tsr_store_allocated: every
 * file of DIR/volumes, so snapshot layers, hidden volumes and the heads'
 * .crc/.dirty files too, not only the heads' data that volume list shows).
 * 0 or its error.  Blocking (a stat per file): control thread only.
 */
int admin_store_allocated(struct tsr_store *store, uint64_t *out);
/* A DataFs whose figures are unknown, for why (copied); NULL on ENOMEM. */
Tessera__Admin__DataFs *admin_data_fs_unknown(const char *why);
/* Fill resp with error err (-errno) and a formatted user message. */
void admin_fail(Tessera__Admin__Response *resp, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- admin_ops.c: the commands ---------------------------------------- */

/*
 * A detached volume's rollback of this store's copy of vol to snap, fenced by
 * epoch (the volume record's when the cluster rollback began): -ESTALE, nothing
 * done, when an attach raised the copy's epoch past it (the check is
 * tsr_store_vol_set_epoch's, under the store lock; a copy below it is raised
 * to it, which fences only coordinators older than the record's last one);
 * then the store's rollback (under the store lock: -EBUSY while a coordinator
 * has the copy open, as its OPEN opens before it raises the epoch); then the
 * check again: -ESTALE with *rolled true when an attach reached the copy in
 * between (rolled back, maybe after that attach wrote it: the caller makes
 * the next attach converge the copies).  Errors: tsr_store_vol_rollback's,
 * -ESTALE.  Blocking: control thread.  nowait: an event loop's call, -EBUSY
 * at once while a rollback of vol to the same snapshot runs, instead of the
 * store's wait for its end (review 16d N5).
 */
int admin_rollback_fenced(struct tsr_store *store, const char *vol, const char *snap,
			  uint64_t epoch, bool nowait, bool *rolled);

/* Whether cmd is a site or replication command (cluster mode only; the
 * cluster hands them to engine/cluster/replication.c). */
bool admin_is_replication(Tessera__Admin__Request__CommandCase cmd);

/*
 * Run one validated request against the store and fill resp (initialised by
 * the caller, freed with admin_response_free_built).  Blocking store calls:
 * runs on the control thread only.  resp->error carries the outcome.
 */
void admin_handle(struct tsr_admin_server *srv, const Tessera__Admin__Request *req,
		  Tessera__Admin__Response *resp);

/* ---- admin_server.c: sockets on the libev loop ------------------------ */

/*
 * A reply that comes later (a command waiting for a worker, e.g. a snapshot
 * cut through a volume's gate, without blocking the loop).  A command calls
 * admin_later_begin while admin_handle runs for a connection's request; the
 * connection then reads nothing more until the reply is out.  Later,
 * admin_later_done (any thread, exactly once) makes fn(srv, arg, resp) run
 * on the loop; resp (initialised) is sent to the connection, or dropped when
 * it closed meanwhile: fn always runs, so it frees arg.
 */
struct admin_later;
typedef void (*admin_later_fn)(struct tsr_admin_server *srv, void *arg,
			       Tessera__Admin__Response *resp);
/* The handle, or NULL (out of memory, or not inside a connection's
 * admin_handle): then the command replies at once, as usual. */
struct admin_later *admin_later_begin(struct tsr_admin_server *srv, admin_later_fn fn,
				      void *arg);
/* From any thread, once: fn runs on the loop soon. */
void admin_later_done(struct admin_later *l);
/* Inside the same admin_handle, instead of admin_later_done: the reply is
 * given at once after all; fn never runs. */
void admin_later_cancel(struct admin_later *l);
/* The server whose admin_handle runs on this thread now (its loop), else
 * NULL: how a command of the cluster layer, whose hook is not given the
 * server, calls admin_later_begin. */
struct tsr_admin_server *admin_handling_server(void);

/* ---- admin_async.c: a client on a libev loop --------------------------- */

/*
 * One request to another tesserad's admin API without blocking the loop
 * (tesserad's main thread: a command forwarded to another node).  resp is
 * the validated reply, the callback's to free with
 * tessera__admin__response__free_unpacked; a non-zero resp->error is the
 * server's answer.  status: 0 with resp, or -errno with resp NULL:
 * -ECONNREFUSED (nobody listens), -ECONNRESET/-EPIPE (connection lost
 * before the reply), -ETIMEDOUT, -EPROTO (invalid reply), -ENOMEM,
 * -ECANCELED (admin_async_cancel), and others from connect.
 */
struct admin_async;
typedef void (*admin_async_fn)(void *cb_arg, int status, Tessera__Admin__Response *resp);
/*
 * Send req (token, when not NULL, replaces req->token in the frame; req is
 * not written to) to TCP "HOST:PORT", one connection per request.  Returns 0
 * and cb_fn fires exactly once, on loop's thread, never before this returns,
 * at the latest timeout_ms after the call; or returns -errno and cb_fn never
 * fires: -EINVAL (bad arguments or address), -EHOSTUNREACH (name not
 * resolved), -EMSGSIZE, -ENOMEM, and others from socket/connect.  *out (may
 * be NULL) is the call's handle for admin_async_cancel, valid until cb_fn
 * fires.  A numeric host is not resolved; a name is, blocking (getaddrinfo).
 */
int admin_async_call(struct ev_loop *loop, const char *hostport, const char *token,
		     const Tessera__Admin__Request *req, int timeout_ms, admin_async_fn cb_fn,
		     void *cb_arg, struct admin_async **out);
/* On loop's thread, before its callback fired: it fires now with -ECANCELED. */
void admin_async_cancel(struct admin_async *a);

#define ADMIN_MAX_CONNS 64
#define ADMIN_IDLE_TIMEOUT 300.0  /* seconds without a request: close */
#define ADMIN_AUTH_TIMEOUT 10.0   /* TCP: seconds to send the first request */

struct admin_listener {
	struct tsr_admin_server *srv;
	ev_io watcher;
	ev_timer pause;       /* out of file descriptors: accept again a little later */
	int fd;               /* listening socket; -1 when unused */
	bool tcp;             /* its connections must authenticate */
	char name[320];       /* "unix:PATH" or "tcp:HOST:PORT" (actual port) */
};

struct admin_conn {
	struct tsr_admin_server *srv;
	ev_io watcher;        /* EV_READ while receiving, EV_WRITE while replying */
	ev_timer idle;        /* closes connections that stall */
	int fd;
	bool tcp;
	bool authenticated;   /* unix: always; TCP: after a request with the right token */
	bool close_after_reply;
	uint8_t hdr[4];
	size_t hdr_got;       /* < 4: still reading the header */
	uint8_t *in;          /* message body, in_len bytes once complete */
	uint32_t in_len;
	size_t in_got;
	uint8_t *out;         /* frame being sent */
	size_t out_len, out_sent;
	struct admin_later *later; /* its reply comes later (admin_later_begin), else NULL */
	struct admin_conn *prev, *next;
};

struct tsr_admin_server {
	struct ev_loop *loop;
	struct tsr_store *store;
	struct tsr_volset *vols;
	struct tsr_nbd_server *nbd;
	char *token;              /* NULL when no TCP listener */
	char *unix_path;          /* unlinked on destroy */
	/* copies of the node info */
	char *data_dir, *device, *io_backend;
	unsigned workers;
	char **nbd_listeners;
	size_t n_nbd_listeners;
	time_t started;
	/* cluster mode (copies of the hooks and strings), else handle is NULL */
	struct tsr_admin_cluster cluster;
	char *node_id, *cluster_address;
	struct admin_listener listeners[2]; /* [0] unix, [1] TCP */
	size_t n_listeners;
	struct admin_conn *conns;
	unsigned n_conns;
	struct admin_conn *handling; /* the connection whose request admin_handle runs, or NULL */
	/* replies that come later (admin_later_*) */
	ev_async later_wake;         /* a handle was done: run later_wake_cb on the loop */
	bool later_ready;            /* later_wake and the lock/cond are initialised */
	pthread_mutex_t later_lock;  /* guards later_done and later_out */
	pthread_cond_t later_cond;   /* signalled when later_out drops (destroy waits) */
	struct admin_later *later_done; /* done, fn not run yet (newest first) */
	unsigned later_out;          /* begun and not done yet */
};

#endif
