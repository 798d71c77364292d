/*
 * Tessera admin API: tesserad's control interface (volumes, status), spoken
 * by the tessera CLI and, later, the CSI plugin.  Messages and framing are
 * defined in proto/admin.proto; this header offers the three pieces built on
 * them (engine/admin/):
 *
 *  - the parsers: every message read from a socket goes through
 *    tsr_admin_request_parse() or tsr_admin_response_parse() before use;
 *  - the server: runs on a libev loop (tesserad's main thread), on a unix
 *    socket and optionally a token-protected TCP listener; its handlers make
 *    blocking store calls, which is allowed on that thread only;
 *  - the client: blocking calls for command-line tools.
 */
#ifndef TESSERA_ADMIN_H
#define TESSERA_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "admin.pb-c.h" /* generated from proto/admin.proto */
#include "tessera/nbd.h"
#include "tessera/store.h"
#include "tessera/vol.h"

#define TSR_ADMIN_MAX_FRAME (1u << 20) /* largest message either way */
#define TSR_ADMIN_TOKEN_LEN 64         /* hex characters (32 random bytes) */

/* ---- parsers (admin_msg.c) ------------------------------------------- */

/*
 * Decode and validate a Request: exactly one command, names valid
 * (tsr_valid_name), sizes non-zero multiples of TSR_BLOCK_SIZE, token at most
 * TSR_ADMIN_TOKEN_LEN printable characters.  On success *out must be freed
 * with tessera__admin__request__free_unpacked(*out, NULL).  On -EINVAL, why
 * (when not NULL) says what is wrong, for the error reply.
 * Errors: -EINVAL malformed or invalid; -EMSGSIZE len > TSR_ADMIN_MAX_FRAME.
 */
int tsr_admin_request_parse(const uint8_t *buf, size_t len, Tessera__Admin__Request **out,
			    const char **why);

/*
 * Decode and validate a Response: error <= 0, strings bounded and printable,
 * volumes with valid names.  Free *out with tessera__admin__response__free_unpacked.
 * Errors: -EINVAL, -EMSGSIZE.
 */
int tsr_admin_response_parse(const uint8_t *buf, size_t len, Tessera__Admin__Response **out,
			     const char **why);

/* ---- sockets (admin_sock.c), also used for tesserad's NBD listeners --- */

/* "host:port" or "[v6addr]:port" -> host, port.  0 or -EINVAL. */
int tsr_admin_split_hostport(const char *hostport, char *host, size_t host_len, char *port,
			     size_t port_len);
/*
 * Listen on TCP "HOST:PORT" (port 0: any free port).  name gets
 * "tcp:HOST:PORT" with the actual port.  Non-blocking, close-on-exec.
 * Errors: -EINVAL bad address, and from socket()/bind()/listen(); logged.
 */
int tsr_admin_listen_tcp(const char *hostport, int *fd_out, char *name, size_t name_len);
/*
 * Listen on a unix socket created mode 0600, replacing a stale socket file.
 * Errors: -ENAMETOOLONG, and from socket()/bind()/listen(); logged.
 */
int tsr_admin_listen_unix(const char *path, int *fd_out);
/* Connect (blocking) to unix_path, or when it is NULL to TCP hostport.  0 or -errno. */
int tsr_admin_connect_socket(const char *unix_path, const char *hostport, int *fd_out);

/* ---- server (admin_server.c, admin_ops.c) ----------------------------- */

struct ev_loop;
struct tsr_admin_server;

/* What the node is, for the status reply; strings are copied. */
struct tsr_admin_node_info {
	const char *data_dir;
	const char *device;         /* or NULL */
	const char *io_backend;     /* tsr_io_name() of worker 0 */
	unsigned workers;
	const char *const *nbd_listeners; /* "unix:PATH" / "tcp:HOST:PORT", actual ports */
	size_t n_nbd_listeners;
	time_t started;
};

/*
 * Cluster mode (tesserad --meta/--join): the control plane that answers the
 * cluster's commands (engine/cluster, wired by tesserad so that this layer
 * does not depend on it).
 */
struct tsr_admin_cluster {
	/*
	 * Answer req: fill resp (error and message, or results built with malloc
	 * as admin_response_free_built frees them) and return true; or return
	 * false to let the node answer from its own store.
	 */
	bool (*handle)(void *arg, const Tessera__Admin__Request *req,
		       Tessera__Admin__Response *resp);
	void *arg;
	const char *node_id;         /* for the status reply */
	const char *address;         /* --listen HOST:PORT, for the status reply */
	/* for the status reply: copies the leftover sweep removed (may be NULL) */
	uint64_t (*leftovers_removed)(void *arg);
	/* around a store delete: tsr_cluster_copy_delete_lock (may be NULL) */
	void (*copy_delete_lock)(void *arg, bool lock);
};

struct tsr_admin_server_opts {
	struct ev_loop *loop;
	struct tsr_store *store;
	struct tsr_volset *vols;
	struct tsr_nbd_server *nbd;  /* for connection counts; may be NULL */
	const char *unix_path;       /* always served, created mode 0600 (a stale one is replaced) */
	const char *tcp_listen;      /* "HOST:PORT" (IPv6: "[::1]:PORT"), or NULL */
	const char *token;           /* required for TCP and adopted connections: TSR_ADMIN_TOKEN_LEN hex */
	struct tsr_admin_node_info node;
	const struct tsr_admin_cluster *cluster; /* cluster mode, or NULL: standalone */
};

/*
 * Bind and listen, and start serving on opts->loop.
 * Errors: -EINVAL bad address or missing token, -ENAMETOOLONG unix path,
 * -EADDRINUSE, and others from socket()/bind()/listen(); each logged once.
 */
int tsr_admin_server_create(const struct tsr_admin_server_opts *opts,
			    struct tsr_admin_server **out);
/*
 * Serve an already accepted TCP connection (tesserad's --listen port, after
 * it recognised the admin protocol): like one from the TCP listener, its
 * first request must carry the token.  Takes ownership of fd (closed when
 * the server cannot take it).  Errors: -EINVAL no token configured,
 * -EMFILE too many connections, -ENOMEM.
 */
int tsr_admin_server_adopt(struct tsr_admin_server *srv, int fd);
/* The listeners as "unix:PATH" / "tcp:HOST:PORT" (actual port); NULL past the end. */
const char *tsr_admin_server_listener(const struct tsr_admin_server *srv, size_t i);
/* Stop listening, close every connection, unlink the unix socket.  NULL ok. */
void tsr_admin_server_destroy(struct tsr_admin_server *srv);

/* ---- client (admin_client.c) ------------------------------------------ */

struct tsr_admin_client;

/*
 * Connect to tesserad's unix socket.  Errors: -ENOENT, -ECONNREFUSED,
 * -EACCES, -ENAMETOOLONG ... (from socket/connect; nothing is logged: the
 * caller tells its user).
 */
int tsr_admin_connect_unix(const char *path, struct tsr_admin_client **out);
/*
 * Connect over TCP to "HOST:PORT"; token is sent with every request.
 * Errors: -EINVAL bad address, -EHOSTUNREACH name not resolved, and from connect.
 */
int tsr_admin_connect_tcp(const char *hostport, const char *token,
			  struct tsr_admin_client **out);
void tsr_admin_close(struct tsr_admin_client *c); /* NULL ok */

/*
 * Send req (its token field is filled in by the client) and wait for the
 * reply, validated by tsr_admin_response_parse().  *resp is to be freed with
 * tessera__admin__response__free_unpacked().  A non-zero resp->error is the
 * server's answer, not a call error.
 * Errors: -EPIPE/-ECONNRESET connection lost, -ETIMEDOUT no answer within
 * timeout_ms (0: wait forever), -EPROTO invalid reply, -ENOMEM.
 */
int tsr_admin_call(struct tsr_admin_client *c, Tessera__Admin__Request *req,
		   int timeout_ms, Tessera__Admin__Response **resp);

/* Read DIR/admin.token-style files: the first line, trimmed.  0 or -errno (-EINVAL: empty). */
int tsr_admin_read_token(const char *path, char *buf, size_t len);

#endif
