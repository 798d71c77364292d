/*
 * tessera-csi private header: the CSI plugin (Identity, Controller, Node)
 * served over gRPC on a unix socket, a client of tesserad's admin API.
 * One section per source file, saying what that file offers.
 *
 * Threads: the main thread runs the libev loop and every nghttp2 session
 * (grpc_server.c); a complete request becomes a struct csi_call handed to a
 * small pool of worker threads, which decode it, run the handler (blocking
 * admin calls and external commands are fine there) and post the encoded
 * reply back to the loop through an ev_async.
 */
#ifndef TESSERA_CSI_INTERNAL_H
#define TESSERA_CSI_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin.pb-c.h"
#include "csi.pb-c.h"

#define CSI_DRIVER_NAME  "csi.tessera.io"
#define CSI_TOPO_ZONE    "topology.tessera.io/zone"
#define CSI_TOPO_SITE    "topology.tessera.io/site"
#define CSI_MAX_MSG      (4u << 20)         /* largest request or reply message */
#define CSI_DEFAULT_SIZE (1ull << 30)       /* CreateVolume without capacity_range */
#define CSI_MAX_SIZE     (1ull << 50)       /* tesserad's largest volume: 1 PiB */
#define CSI_NAME_MAX     64                 /* Tessera names: 63 characters + NUL */
#define CSI_ID_MAX       (2 * CSI_NAME_MAX) /* "VOL@SNAP" */

/* gRPC status codes (grpc/doc/statuscodes.md). */
enum grpc_code {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_ALREADY_EXISTS = 6,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_ABORTED = 10,
	GRPC_OUT_OF_RANGE = 11,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
};

/* ---- grpc_frame.c: gRPC message framing, no I/O ------------------------ */

/*
 * A gRPC length-prefixed message, as carried in HTTP/2 DATA frames:
 *   offset 0: u8 compressed flag (0 or 1)
 *   offset 1: u32 big-endian length L
 *   offset 5: L bytes of protobuf (compressed when the flag is 1)
 */
#define GRPC_FRAME_HDR 5

struct grpc_frame {
	bool compressed;    /* flag byte was 1 (we announce no encoding: refused) */
	const uint8_t *msg; /* points into the parsed buffer */
	uint32_t len;       /* bytes at msg */
};

/*
 * Parse the body of a unary request: exactly one message, nothing after it.
 * Errors: -EINVAL truncated header or message, trailing bytes, flag byte
 * other than 0/1; -EMSGSIZE L > max; -ENOTSUP compressed flag set.
 */
int grpc_frame_parse(const uint8_t *buf, size_t len, size_t max, struct grpc_frame *out);
/* Write the 5-byte header for an uncompressed message of len bytes. */
void grpc_frame_header(uint8_t hdr[GRPC_FRAME_HDR], uint32_t len);
/*
 * Decode a protobuf message of type desc (protobuf-c); free *out with
 * protobuf_c_message_free_unpacked(*out, NULL).  Errors: -EINVAL not a valid
 * encoding of desc, or a string field that is not UTF-8; -EMSGSIZE len >
 * CSI_MAX_MSG.
 */
int grpc_msg_decode(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
		    ProtobufCMessage **out);
/* grpc-message value: percent-encode bytes outside 0x20..0x7e and '%'.  Returns length. */
size_t grpc_percent_encode(const char *in, char *out, size_t out_len);
/* "INVALID_ARGUMENT" etc. */
const char *grpc_code_name(int code);

/* ---- params.c: CSI <-> Tessera mapping, no I/O ------------------------- */

/*
 * Volume name for a CO's CreateVolume name: the name itself when it is a
 * valid Tessera name, else "csi-" and 40 hex digits of its SHA-256 (stable).
 * Errors: -EINVAL empty name or banned control characters.
 */
int csi_volume_name(const char *co_name, char out[CSI_NAME_MAX]);

/*
 * Size for a capacity range (0 = unset): required rounded up to 4 KiB, or
 * def when nothing is required (capped to limit rounded down).
 * Errors: -EINVAL negative value; -ERANGE no 4 KiB multiple in the range;
 * -EFBIG more than CSI_MAX_SIZE required.
 */
int csi_capacity(int64_t required, int64_t limit, uint64_t def, uint64_t *out);

/*
 * Pagination.  Listings are sorted by id; a next_token names the last id
 * returned ("after:ID") and the next page starts at the first id above it,
 * so volumes added or deleted between pages never shift what remains.
 * csi_token_parse: "" -> after = "" (from the start); -EINVAL (ABORTED) for
 * a token this plugin cannot have made.
 */
#define CSI_TOKEN_PREFIX "after:"
int csi_token_parse(const char *token, char *after, size_t len);
void csi_token_format(const char *last_id, char *buf, size_t len);

/* StorageClass parameters (CreateVolume, ValidateVolumeCapabilities, GetCapacity). */
struct csi_params {
	unsigned replicas;      /* 0 = tesserad's default */
	unsigned min_replicas;  /* 0 = tesserad's default */
	unsigned stripe_unit;   /* bytes; 0 = default; only with ec */
	char ec[16];            /* "K+M" or "" */
	char failure_domain[8]; /* "node" | "zone" | "site" | "" */
};
/*
 * Parse and check parameters: replicas (1..8), ec ("K+M"), failureDomain,
 * minReplicas (<= replicas), stripeUnit (power of 2, 4 KiB..1 MiB); keys
 * starting "csi.storage.k8s.io/" are the CO's and ignored.
 * Errors: -EINVAL with why (a sentence for the user).
 */
int csi_params_parse(size_t n, char *const *keys, char *const *values, struct csi_params *p,
		     char *why, size_t why_len);

/* "VOL@SNAP" -> vol, snap (both valid Tessera names).  -EINVAL otherwise. */
int csi_snapshot_id_parse(const char *id, char vol[CSI_NAME_MAX], char snap[CSI_NAME_MAX]);

/* ---- call.c: one RPC in progress --------------------------------------- */

struct csi_plugin;

struct csi_alloc_chunk;

struct csi_call {
	struct csi_plugin *plugin;     /* options, shared state (read-only but locks) */
	const char *method;            /* "NodeStageVolume"; static string */
	struct csi_alloc_chunk *arena; /* every csi_alloc of this call; freed with it */
	int code;                      /* gRPC status, GRPC_OK until csi_fail */
	char message[1024];            /* grpc-message when code != OK */
	char volume[CSI_ID_MAX];       /* volume or snapshot id, for the log line */
};

/* Zeroed memory freed with the call.  Aborts on out-of-memory (policy: see csi/call.c). */
void *csi_alloc(struct csi_call *call, size_t len);
char *csi_strdup(struct csi_call *call, const char *s);
char *csi_printf(struct csi_call *call, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Set the call's status and message; returns code. */
int csi_fail(struct csi_call *call, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void csi_call_free_arena(struct csi_call *call);
/* A map<string,string> entry for a reply, in the arena. */
Csi__V1__Topology *csi_topology_new(struct csi_call *call, const char *zone, const char *site);
/* Look a key up in a protobuf-c map (repeated entries).  NULL when absent. */
const char *csi_map_get(size_t n, void *const *entries, const char *key);

/* Per-key mutual exclusion (CreateVolume per name, node calls per volume). */
void csi_key_lock(struct csi_plugin *p, const char *key);
void csi_key_unlock(struct csi_plugin *p, const char *key);

/* ---- plugin.c: options and the method table ---------------------------- */

enum csi_mode { CSI_MODE_ALL, CSI_MODE_CONTROLLER, CSI_MODE_NODE };

struct csi_key_lock;

struct csi_plugin {
	enum csi_mode mode;
	const char *node_id;       /* --node-id: CSI node id and tesserad node id */
	const char *tesserad_unix; /* --tesserad unix:PATH, or NULL */
	const char *tesserad_tcp;  /* --tesserad HOST:PORT, or NULL */
	char *token;               /* from --token-file (TCP), or NULL */
	const char *state_dir;     /* --state-dir: per-volume node state */
	const char *zone;          /* --zone, or NULL: asked from tesserad's node list */
	const char *site;          /* --site, likewise */
	int64_t max_volumes;       /* --max-volumes; 0 = no limit */
	int admin_timeout_ms;      /* per admin call */
	/* key locks: owned by call.c, guarded by keys_lock */
	void *keys_lock;           /* pthread_mutex_t * */
	void *keys_cond;           /* pthread_cond_t * */
	struct csi_key_lock *keys; /* keys currently held */
};

typedef int (*csi_handler_fn)(struct csi_call *call, const ProtobufCMessage *req,
			      ProtobufCMessage **resp);

struct csi_method {
	const char *path; /* "/csi.v1.Node/NodeStageVolume" */
	const char *name; /* "NodeStageVolume" */
	const ProtobufCMessageDescriptor *req_desc;
	csi_handler_fn handler;
	unsigned service; /* CSI_SVC_* */
};
#define CSI_SVC_IDENTITY   1u
#define CSI_SVC_CONTROLLER 2u
#define CSI_SVC_NODE       4u

/*
 * The method for an HTTP/2 :path, or NULL (UNIMPLEMENTED): unknown, or
 * (*excluded set) of a service this instance's --mode does not serve.
 */
const struct csi_method *csi_method_find(const struct csi_plugin *p, const char *path,
					 bool *excluded);
/*
 * Run one request (worker thread): decode body (a whole gRPC message body,
 * header included), call the handler, encode the reply into *out (malloc,
 * header included).  call->code / call->message say the status.
 */
void csi_method_run(struct csi_call *call, const struct csi_method *m, const uint8_t *body,
		    size_t len, uint8_t **out, size_t *out_len);

/* ---- tesserad.c: admin API access from worker threads ------------------ */

/*
 * Send req to tesserad (one connection per worker thread, reconnected once
 * when lost).  Returns GRPC_OK with *resp (free with
 * tessera__admin__response__free_unpacked; resp->error may be set), or a
 * gRPC code (UNAVAILABLE) with call's message set.
 */
int csi_admin(struct csi_call *call, Tessera__Admin__Request *req, Tessera__Admin__Response **resp);
/* gRPC code for a tesserad error (negative errno). */
int csi_admin_code(int error);
/*
 * csi_admin plus: resp->error != 0 becomes csi_fail(code of it, "what: message").
 * Returns GRPC_OK with *resp, or the code (nothing to free).
 */
int csi_admin_ok(struct csi_call *call, Tessera__Admin__Request *req, const char *what,
		 Tessera__Admin__Response **resp);
/* Close this thread's connection (worker exit). */
void csi_admin_thread_close(void);

/* ---- exec.c: external commands ----------------------------------------- */

/*
 * Run argv (fork/execvp, no shell), wait.  Returns the exit status (0 ok),
 * 128+signal, or -errno when it could not be started.  out (may be NULL)
 * gets stdout, err (may be NULL) stderr (trimmed, truncated to the buffer).
 */
int csi_run(char *const argv[], char *out, size_t out_len, char *err, size_t err_len);
/*
 * Start argv detached (new session, stdout/stderr appended to log_path).
 * Errors: -errno from fork/open.
 */
int csi_spawn(char *const argv[], const char *log_path, int *pid_out);

/* ---- identity.c, controller.c, node.c: the handlers -------------------- */

int csi_get_plugin_info(struct csi_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp);
int csi_get_plugin_capabilities(struct csi_call *c, const ProtobufCMessage *req,
				ProtobufCMessage **resp);
int csi_probe(struct csi_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp);

int csi_create_volume(struct csi_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp);
int csi_delete_volume(struct csi_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp);
int csi_validate_volume_capabilities(struct csi_call *c, const ProtobufCMessage *req,
				     ProtobufCMessage **resp);
int csi_list_volumes(struct csi_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp);
int csi_get_capacity(struct csi_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp);
int csi_controller_get_capabilities(struct csi_call *c, const ProtobufCMessage *req,
				    ProtobufCMessage **resp);
int csi_create_snapshot(struct csi_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp);
int csi_delete_snapshot(struct csi_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp);
int csi_list_snapshots(struct csi_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp);
int csi_controller_expand_volume(struct csi_call *c, const ProtobufCMessage *req,
				 ProtobufCMessage **resp);
int csi_controller_get_volume(struct csi_call *c, const ProtobufCMessage *req,
			      ProtobufCMessage **resp);
/* Volume capabilities check shared by the controller and the node: NULL ok, else why not. */
const char *csi_capability_check(const Csi__V1__VolumeCapability *cap);

int csi_node_stage_volume(struct csi_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp);
int csi_node_unstage_volume(struct csi_call *c, const ProtobufCMessage *req,
			    ProtobufCMessage **resp);
int csi_node_publish_volume(struct csi_call *c, const ProtobufCMessage *req,
			    ProtobufCMessage **resp);
int csi_node_unpublish_volume(struct csi_call *c, const ProtobufCMessage *req,
			      ProtobufCMessage **resp);
int csi_node_get_volume_stats(struct csi_call *c, const ProtobufCMessage *req,
			      ProtobufCMessage **resp);
int csi_node_expand_volume(struct csi_call *c, const ProtobufCMessage *req,
			   ProtobufCMessage **resp);
int csi_node_get_capabilities(struct csi_call *c, const ProtobufCMessage *req,
			      ProtobufCMessage **resp);
int csi_node_get_info(struct csi_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp);
/*
 * When vol is staged by this process's node service, flush its file system
 * and device (CreateSnapshot calls it first, so a snapshot holds what the
 * application wrote).  Nothing otherwise.
 */
void csi_node_sync(const struct csi_plugin *p, const char *vol);

/* ---- grpc_server.c: the HTTP/2 server on the libev loop ----------------- */

struct csi_server;
/*
 * Listen on the unix socket path (stale socket replaced) and serve on the
 * default libev loop with nworkers threads.  Errors: -errno, logged.
 */
int csi_server_start(struct csi_plugin *p, const char *path, unsigned nworkers,
		     struct csi_server **out);
/* Run the loop until SIGTERM/SIGINT; then stop and free everything. */
void csi_server_run(struct csi_server *s);
/*
 * For tests/fuzz/fuzz_grpc_http2.c: data as the bytes a client sends on one
 * connection, through the same callbacks, without threads or a listener
 * (calls that need no tesserad are run, the others answered UNAVAILABLE);
 * everything freed before it returns.  0 or -errno (setup failed).
 */
int csi_server_feed(struct csi_plugin *p, const uint8_t *data, size_t len);

#endif
