/*
 * Private header of the NBD server (layer 1), one section per source file:
 *
 *   nbd_proto.c      wire constants, parsing and encoding of every message;
 *                    pure functions, no I/O, no allocation: the fuzz targets
 *   nbd_handshake.c  the fixed-newstyle option haggling as a state machine
 *                    fed from a byte buffer, producing bytes to send; it
 *                    learns about exports through struct nbd_export_ops
 *   nbd_conn.c       one client connection on a worker: socket I/O, the
 *                    handshake, then the transmission phase over vol.h
 *   nbd_server.c     the server object, per-worker connection lists, stats
 *
 * Wire format (doc/proto.md of github.com/NetworkBlockDevice/nbd), all
 * integers big endian.  Byte offsets of every message we parse or build:
 *
 *   greeting (S, 18):     0 u64 NBDMAGIC  8 u64 IHAVEOPT  16 u16 handshake flags
 *   client flags (C, 4):  0 u32
 *   option (C, 16+len):   0 u64 IHAVEOPT  8 u32 option  12 u32 len  16 data
 *   option reply (S, 20+len): 0 u64 REP_MAGIC  8 u32 option  12 u32 type
 *                         16 u32 len  20 data
 *   EXPORT_NAME reply (S, 10 or 134): 0 u64 size  8 u16 tflags  [10 124 zeroes]
 *   request (C, 28+len):  0 u32 REQUEST_MAGIC  4 u16 flags  6 u16 type
 *                         8 u64 handle  16 u64 offset  24 u32 len  [28 payload]
 *   simple reply (S, 16): 0 u32 SIMPLE_MAGIC  4 u32 error  8 u64 handle
 *   chunk (S, 20+len):    0 u32 STRUCTURED_MAGIC  4 u16 flags  6 u16 type
 *                         8 u64 handle  16 u32 len  20 payload
 *     OFFSET_DATA payload:  0 u64 offset  8 data
 *     OFFSET_HOLE payload:  0 u64 offset  8 u32 size
 *     ERROR payload:        0 u32 error  4 u16 msg len  6 msg
 *     BLOCK_STATUS payload: 0 u32 context id  4 {u32 length, u32 flags}...
 */
#ifndef TSR_NBD_INTERNAL_H
#define TSR_NBD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ======================= nbd_proto.c ======================= */

#define NBD_MAGIC            0x4e42444d41474943ull /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC       0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_REP_MAGIC        0x0003e889045565a9ull
#define NBD_REQUEST_MAGIC    0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

/* handshake flags (server) and client flags */
#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* transmission flags */
#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_ROTATIONAL        (1u << 4)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF           (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)
#define NBD_FLAG_SEND_RESIZE       (1u << 9)
#define NBD_FLAG_SEND_CACHE        (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO    (1u << 11)

/* options */
#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10

/* option reply types */
#define NBD_REP_ACK          1u
#define NBD_REP_SERVER       2u
#define NBD_REP_INFO         3u
#define NBD_REP_META_CONTEXT 4u
#define NBD_REP_ERR(n)       (0x80000000u + (n))
#define NBD_REP_ERR_UNSUP           NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY          NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID         NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM        NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD        NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN         NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN        NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG         NBD_REP_ERR(9)

/* NBD_REP_INFO types */
#define NBD_INFO_EXPORT      0
#define NBD_INFO_NAME        1
#define NBD_INFO_DESCRIPTION 2
#define NBD_INFO_BLOCK_SIZE  3

/* commands and command flags */
#define NBD_CMD_READ         0
#define NBD_CMD_WRITE        1
#define NBD_CMD_DISC         2
#define NBD_CMD_FLUSH        3
#define NBD_CMD_TRIM         4
#define NBD_CMD_CACHE        5
#define NBD_CMD_WRITE_ZEROES 6
#define NBD_CMD_BLOCK_STATUS 7
#define NBD_CMD_FLAG_FUA       (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE   (1u << 1)
#define NBD_CMD_FLAG_DF        (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE   (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

/* structured reply flags and chunk types */
#define NBD_REPLY_FLAG_DONE          (1u << 0)
#define NBD_REPLY_TYPE_NONE          0
#define NBD_REPLY_TYPE_OFFSET_DATA   1
#define NBD_REPLY_TYPE_OFFSET_HOLE   2
#define NBD_REPLY_TYPE_BLOCK_STATUS  5
#define NBD_REPLY_TYPE_ERROR         ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET  ((1u << 15) + 2)

/* base:allocation flags */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)

/* error values */
#define NBD_EPERM     1
#define NBD_EIO       5
#define NBD_ENOMEM    12
#define NBD_EINVAL    22
#define NBD_ENOSPC    28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP   95
#define NBD_ESHUTDOWN 108

/* Our limits and choices. */
#define NBD_MAX_STRING      4096u          /* spec: strings MUST be <= 4096 bytes */
#define NBD_MAX_OPTION_LEN  (64u * 1024)   /* longer options are discarded, ERR_TOO_BIG */
#define NBD_MIN_BLOCK       4096u          /* advertised minimum = preferred */
#define NBD_PREF_BLOCK      4096u
#define NBD_MAX_BLOCK       (32u * 1024 * 1024) /* = TSR_MAX_IO */
#define NBD_META_ID_BASE_ALLOCATION 1u     /* our context id for base:allocation */
#define NBD_META_BASE_ALLOCATION "base:allocation"

#define NBD_GREETING_LEN     18
#define NBD_OPT_HDR_LEN      16
#define NBD_OPT_REPLY_HDR_LEN 20
#define NBD_REQUEST_LEN      28
#define NBD_SIMPLE_REPLY_LEN 16
#define NBD_CHUNK_HDR_LEN    20
#define NBD_EXPORT_NAME_REPLY_LEN 134      /* 10 without the zeroes */

/* Big-endian load/store. */
static inline uint16_t nbd_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t nbd_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t nbd_get64(const uint8_t *p)
{
	return (uint64_t)nbd_get32(p) << 32 | nbd_get32(p + 4);
}
static inline void nbd_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void nbd_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void nbd_put64(uint8_t *p, uint64_t v)
{
	nbd_put32(p, (uint32_t)(v >> 32));
	nbd_put32(p + 4, (uint32_t)v);
}

/* An option header.  Returns NBD_OPT_HDR_LEN, 0 if len is too short, or
 * -EPROTO on a bad magic. */
struct nbd_opt_hdr {
	uint32_t option;
	uint32_t len;
};
int nbd_parse_opt_hdr(const uint8_t *buf, size_t len, struct nbd_opt_hdr *out);

/* NBD_OPT_INFO / NBD_OPT_GO data.  Pointers point into the data.
 * 0 or -EINVAL (malformed: the caller replies NBD_REP_ERR_INVALID). */
struct nbd_opt_info {
	const uint8_t *name;
	uint32_t name_len;
	uint16_t nr_requests;
	const uint8_t *requests; /* nr_requests big-endian u16 info types */
};
int nbd_parse_opt_info(const uint8_t *data, uint32_t len, struct nbd_opt_info *out);

/* NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data; every query's
 * bounds are checked here, so nbd_meta_query() on index < nr_queries cannot
 * fail afterwards.  0 or -EINVAL. */
struct nbd_opt_meta {
	const uint8_t *name;
	uint32_t name_len;
	uint32_t nr_queries;
	const uint8_t *queries;   /* the encoded list */
	uint32_t queries_len;
};
int nbd_parse_opt_meta(const uint8_t *data, uint32_t len, struct nbd_opt_meta *out);
/* Iterate: *pos starts at 0; returns 1 with the query, 0 at the end. */
int nbd_meta_next(const struct nbd_opt_meta *m, uint32_t *pos, const uint8_t **query,
		  uint32_t *query_len);

/* What a meta-context query selects from our single context. */
enum nbd_meta_match {
	NBD_META_NONE,            /* unknown namespace or leaf: ignore */
	NBD_META_ALLOCATION,      /* exactly base:allocation */
	NBD_META_BASE_WILDCARD,   /* "base:" (LIST: all of base:; SET: ignore) */
	NBD_META_INVALID,         /* no namespace colon, or too long */
};
enum nbd_meta_match nbd_meta_match(const uint8_t *query, uint32_t len);

/* A request header.  Returns NBD_REQUEST_LEN, 0 if len is too short, or
 * -EPROTO on a bad magic (the caller disconnects). */
struct nbd_request {
	uint16_t flags;
	uint16_t type;
	uint64_t handle;
	uint64_t offset;
	uint32_t len;
};
int nbd_parse_request(const uint8_t *buf, size_t len, struct nbd_request *out);

/* What the connection negotiated, for request validation. */
struct nbd_tx_state {
	uint16_t tflags;   /* transmission flags sent */
	bool structured;   /* NBD_OPT_STRUCTURED_REPLY acked */
	bool meta;         /* base:allocation selected for this export */
	uint64_t size;     /* export size now */
};
/*
 * Validate a request against the negotiated state: known command, flags
 * allowed for it, alignment to NBD_MIN_BLOCK, range and maximum size.
 * Returns 0 or an NBD error value (NBD_EINVAL, NBD_ENOSPC, NBD_ENOTSUP).
 * DISC and FLUSH take no range.  READ and WRITE are limited to
 * NBD_MAX_BLOCK; TRIM, WRITE_ZEROES and BLOCK_STATUS are not.  On a
 * read-only export (tflags NBD_FLAG_READ_ONLY) WRITE, TRIM and WRITE_ZEROES
 * get NBD_EPERM whatever their flags and range.
 */
uint32_t nbd_check_request(const struct nbd_request *req, const struct nbd_tx_state *tx);

/* Transmission flags we send, given whether structured replies were acked. */
uint16_t nbd_transmission_flags(bool structured);
/* The same for a read-only export (a snapshot, "VOL@SNAP"): READ_ONLY set,
 * the write-only flags (FUA, TRIM, WRITE_ZEROES, FAST_ZERO) cleared. */
uint16_t nbd_read_only_flags(uint16_t tflags);
/* -errno (from vol.h) to an NBD error value; 0 stays 0. */
uint32_t nbd_errno_to_nbd(int err);

/* Encoders: each writes exactly the returned number of bytes into out. */
size_t nbd_encode_greeting(uint8_t out[NBD_GREETING_LEN]);
size_t nbd_encode_opt_reply(uint8_t out[NBD_OPT_REPLY_HDR_LEN], uint32_t option,
			    uint32_t type, uint32_t len);
size_t nbd_encode_export_name_reply(uint8_t out[NBD_EXPORT_NAME_REPLY_LEN], uint64_t size,
				    uint16_t tflags, bool no_zeroes);
size_t nbd_encode_info_export(uint8_t out[12], uint64_t size, uint16_t tflags);
size_t nbd_encode_info_block_size(uint8_t out[14], uint32_t min, uint32_t pref,
				  uint32_t max);
size_t nbd_encode_simple_reply(uint8_t out[NBD_SIMPLE_REPLY_LEN], uint32_t error,
			       uint64_t handle);
size_t nbd_encode_chunk_hdr(uint8_t out[NBD_CHUNK_HDR_LEN], uint16_t flags, uint16_t type,
			    uint64_t handle, uint32_t payload_len);
/* OFFSET_DATA chunk header plus its offset (28 bytes); data_len follows. */
size_t nbd_encode_data_chunk(uint8_t out[28], uint16_t flags, uint64_t handle,
			     uint64_t offset, uint32_t data_len);
/* Whole OFFSET_HOLE chunk (32 bytes). */
size_t nbd_encode_hole_chunk(uint8_t out[32], uint16_t flags, uint64_t handle,
			     uint64_t offset, uint32_t size);
/* Whole ERROR chunk with message (26 + msg_len bytes, msg_len <= 4096). */
size_t nbd_encode_error_chunk(uint8_t *out, uint16_t flags, uint64_t handle, uint32_t error,
			      const char *msg, uint16_t msg_len);

/* ======================= nbd_handshake.c ======================= */

/* Growable byte buffer for the handshake's output. */
struct nbd_buf {
	uint8_t *data;
	size_t len, cap;
};
int nbd_buf_append(struct nbd_buf *b, const void *p, size_t len);
void nbd_buf_free(struct nbd_buf *b);

/* An export the handshake resolved. */
struct nbd_export {
	void *handle;        /* owner's (a struct tsr_vol *), NULL when none */
	uint64_t size;
	const char *name;    /* canonical name, valid while handle is held */
	bool read_only;      /* a snapshot ("VOL@SNAP"): NBD_FLAG_READ_ONLY */
};

/* How the handshake learns about exports (the connection: vol.h and store.h
 * through the server's opener threads; tests and fuzzers: a table). */
struct nbd_export_ops {
	/* Resolve name ("" = the default export).  0, -ENOENT, or -errno.
	 * Used when open_start is NULL. */
	int (*open)(void *arg, const char *name, struct nbd_export *out);
	void (*close)(void *arg, void *handle);
	/* Call emit(emit_arg, name) once per export.  0 or -errno. */
	int (*list)(void *arg, int (*emit)(void *emit_arg, const char *name), void *emit_arg);
	/*
	 * May be NULL.  Start resolving name elsewhere (an open may wait for
	 * other nodes).  Returns 0: the handshake waits in NBD_HS_OPENING,
	 * consuming no input, until its owner calls nbd_hs_open_done() with
	 * the result, once (or nbd_hs_fini(): the owner then closes the export
	 * when it comes); or -errno, the result now (as open's).
	 */
	int (*open_start)(void *arg, const char *name);
};

enum nbd_hs_state {
	NBD_HS_CLIENT_FLAGS, /* greeting queued, waiting for the 4 client flag bytes */
	NBD_HS_OPTIONS,      /* option haggling */
	NBD_HS_OPENING,      /* an option waits for ops->open_start's result */
	NBD_HS_DONE,         /* transmission: see hs->export, tflags, structured, meta */
	NBD_HS_CLOSE,        /* soft disconnect: send out, then close */
};

struct nbd_hs {
	const struct nbd_export_ops *ops;
	void *ops_arg;
	enum nbd_hs_state state;
	struct nbd_buf out;     /* bytes to send; the owner takes or drains them */
	bool no_zeroes;         /* client set NBD_FLAG_C_NO_ZEROES */
	bool structured;        /* NBD_OPT_STRUCTURED_REPLY acked */
	bool meta_allocation;   /* SET_META_CONTEXT selected base:allocation ... */
	char *meta_export;      /* ... for this export name (malloc'd) */
	uint32_t discard;       /* bytes of an over-long option still to skip */
	uint32_t discard_opt;   /* that option, answered NBD_REP_ERR_TOO_BIG */
	unsigned options;       /* options seen (for logs) */
	/* NBD_HS_OPENING: the option that waits, and what it asked */
	uint32_t pending_opt;   /* NBD_OPT_EXPORT_NAME, NBD_OPT_INFO or NBD_OPT_GO */
	bool pending_want_name; /* NBD_INFO_NAME requested */
	bool pending_want_desc; /* NBD_INFO_DESCRIPTION requested */
	char *pending_name;     /* the export name asked for (malloc'd) */
	/* Valid in NBD_HS_DONE; the owner takes export.handle (sets it NULL). */
	struct nbd_export export;
	uint16_t tflags;
	bool meta;              /* base:allocation applies to the chosen export */
	const char *error;      /* why a hard disconnect was asked for (static) */
};

/* Queue the greeting.  0 or -ENOMEM. */
int nbd_hs_init(struct nbd_hs *hs, const struct nbd_export_ops *ops, void *ops_arg);
/*
 * Consume client bytes.  Returns how many were used (possibly 0: feed more
 * next time, with the unused bytes first), or -EPROTO (hard disconnect;
 * hs->error says why), or -ENOMEM.  Stops consuming at NBD_HS_DONE or
 * NBD_HS_CLOSE: bytes after a successful GO belong to the transmission.
 * Needs at most NBD_OPT_HDR_LEN + NBD_MAX_OPTION_LEN bytes buffered to progress.
 */
ssize_t nbd_hs_feed(struct nbd_hs *hs, const uint8_t *buf, size_t len);
/*
 * The result of the open an NBD_HS_OPENING handshake waits for: status as
 * ops->open's, *exp (status 0) handed over to the handshake.  Queues the
 * option's reply and leaves NBD_HS_OPENING (for NBD_HS_OPTIONS, or
 * NBD_HS_DONE after a GO or EXPORT_NAME that succeeded); feed the input
 * buffered meanwhile next.  0, -EPROTO (an EXPORT_NAME that failed: hard
 * disconnect, hs->error says why), -ENOMEM, or -EINVAL when not OPENING
 * (exp then untouched).
 */
int nbd_hs_open_done(struct nbd_hs *hs, int status, struct nbd_export *exp);
/* Release what the handshake holds (an export not taken, buffers). */
void nbd_hs_fini(struct nbd_hs *hs);

/* ======================= nbd_conn.c ======================= */

struct tsr_nbd_server;
struct tsr_worker;
struct nbd_wctx;
struct nbd_conn;

/* Hard-close every connection of this worker now. */
void nbd_conns_close_all(struct nbd_wctx *wctx);
/* Drain and close the connections of this worker in transmission on
 * export name (tsr_volset_disconnect: a detach with --force), as a worker's
 * stop does (a client that takes no reply is closed at once); logged per
 * connection.  One draining already is no longer waited for either. */
void nbd_conns_disconnect(struct nbd_wctx *wctx, const char *name);
/*
 * The worker's stop hook: every connection stops reading, finishes its
 * in-flight requests, sends their replies if the client takes them without
 * blocking, and closes (spec: on shutdown, serve in-flight requests before
 * the hard disconnect).  Requests still waiting for I/O queue room are
 * answered ESHUTDOWN.  The worker keeps looping until all of it is done.
 */
void nbd_conns_drain_all(struct nbd_wctx *wctx);

/* ======================= nbd_server.c ======================= */

/*
 * A connection in transmission, as the server's client list sees it (the
 * detach's question "who holds this volume", tsr_volset_clients).  Embedded
 * in the connection; listed from its entry into transmission until it lets
 * go of its export (conn_free).  Its fields are written under the server's
 * clients_lock.
 */
struct nbd_client {
	struct nbd_client *prev, *next; /* srv->clients */
	const char *export;      /* the export's name (its tsr_vol's, held meanwhile) */
	char peer[64];           /* TSR_PEER_ADDR_MAX: "127.0.0.1:40312", "unix pid 1234" */
	struct tsr_worker *w;    /* the worker serving it now (a move updates it) */
	bool listed;
};
void nbd_client_add(struct tsr_nbd_server *srv, struct nbd_client *cl, const char *export,
		    struct tsr_worker *w);
void nbd_client_moved(struct tsr_nbd_server *srv, struct nbd_client *cl, struct tsr_worker *w);
void nbd_client_remove(struct tsr_nbd_server *srv, struct nbd_client *cl);

/* Per-worker state of a server: touched only by that worker's thread. */
struct nbd_wctx {
	struct tsr_nbd_server *srv;
	struct tsr_worker *w;
	struct nbd_conn *conns;   /* open connections (doubly linked) */
	bool stopped;             /* the worker's stop hook ran */
};

struct nbd_wctx *nbd_server_wctx(struct tsr_nbd_server *srv, struct tsr_worker *w);
/* Export lookup ops for connections of srv (arg = srv); synchronous: they
 * may block (nbd_open_start runs open on an opener thread). */
extern const struct nbd_export_ops nbd_server_export_ops;

/*
 * Export opens off the workers.  Opening may block: the store's catalogue,
 * and an erasure-coded snapshot's question to its chunk copies (up to the
 * peer timeout when one is frozen).  A connection hands the open to the
 * server's opener threads (at most NBD_OPENERS, started as needed, joined by
 * tsr_nbd_server_destroy) and gets the result back on its own worker.
 */
struct nbd_open;
typedef void (*nbd_open_cb)(void *cb_arg, int status, struct nbd_export *exp);
/*
 * From worker w's thread: open name (as nbd_server_export_ops.open) for a
 * connection of w.  Returns 0 and cb_fn(cb_arg, status, exp) runs exactly
 * once later on w's thread, exp (status 0) handed over: even when w stops
 * meanwhile (w's stop hook waits for every open out and finishes its own);
 * or -ENOMEM / -EAGAIN (no opener thread) and cb_fn never runs.
 */
int nbd_open_start(struct tsr_nbd_server *srv, struct tsr_worker *w, const char *name,
		   nbd_open_cb cb_fn, void *cb_arg, struct nbd_open **out);
/* From w's thread, before cb_fn ran: nobody waits for the result any more;
 * an open not begun is skipped (status -ECANCELED).  cb_fn still runs. */
void nbd_open_cancel(struct nbd_open *op);
void nbd_server_count_conn(struct tsr_nbd_server *srv, int delta_open);
void nbd_server_count_protocol_error(struct tsr_nbd_server *srv);

#endif
