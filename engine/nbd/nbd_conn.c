/*
 * One NBD client connection, owned by one worker thread for its whole life:
 * socket I/O, the handshake (nbd_handshake.c) and the transmission phase,
 * which turns requests into vol.h calls and their completions into replies.
 *
 * Input: the socket is nonblocking; each read takes as much as is available
 * into rbuf and every complete request in it is parsed and dispatched, so a
 * queue-depth-32 client costs one read per batch.  A write's payload is
 * copied from rbuf into a 4 KiB-aligned buffer, and the rest of a large
 * payload is read straight into that buffer (readv with rbuf behind it).
 *
 * Output: replies are queued as iovecs (header bytes inline, data pointing
 * into the request's buffer) and written with one sendmsg per loop pass
 * (tsr_worker_defer), MSG_NOSIGNAL; on EAGAIN we wait for EPOLLOUT.
 *
 * Handshake: an export open (NBD_OPT_GO, INFO, EXPORT_NAME) runs on the
 * server's opener threads (nbd_open_start: tsr_vol_get may wait for other
 * nodes); meanwhile the handshake waits in NBD_HS_OPENING, input is read
 * but not parsed, and the worker serves its other connections; the answer
 * is queued when the result comes back (conn_open_done).  A client that
 * hangs up meanwhile is closed at once; the open's export is closed when
 * it comes.
 *
 * Lifetime: a connection is reference counted: one reference while its
 * socket is open, one per live request (dispatched, not yet replied), one
 * per pending deferred call or retry message, one across each fd callback,
 * one while an export open is out.
 * A client that vanishes mid-request only closes the socket: the in-flight
 * I/O still completes into its buffers, the replies are dropped, and the
 * last reference frees everything.  No locks: everything here belongs to
 * the worker thread.
 *
 * Back-pressure: input stops while NBD_MAX_INFLIGHT requests or
 * NBD_MAX_INFLIGHT_BYTES of buffers are live (a client that does not read
 * its replies stops being read), and while requests wait for room in the
 * I/O queue (-EAGAIN from the io layer, retried after completions; also
 * when a request completes with -EAGAIN: a step the store queued later, such
 * as a copy on write, found the queue full).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tessera/nbd.h"
#include "nbd/internal.h"

#define NBD_RBUF_SIZE          (256u * 1024)  /* >= 2 x (16 + NBD_MAX_OPTION_LEN) */
#define NBD_MAX_INFLIGHT       512u
#define NBD_MAX_INFLIGHT_BYTES (64u * 1024 * 1024)
#define NBD_OUT_HDR            96u           /* inline reply bytes per output item */
#define NBD_SEND_IOV           256
#define NBD_POOL_CLASSES       14            /* 4 KiB << 0..13 = 4 KiB..32 MiB */
#define NBD_POOL_PER_CLASS     64
#define NBD_POOL_MAX_BYTES     (16u * 1024 * 1024)
#define NBD_READ_EXTENTS       32            /* hole map of one read */
#define NBD_STATUS_EXTENTS     64            /* descriptors per BLOCK_STATUS reply */
/* Reads this large ask the volume for holes first (lseek on the worker):
 * large reads are where skipping zeroes pays; a small random read would pay
 * the syscalls for nothing, and gets a cheap all-zero check instead. */
#define NBD_HOLE_PROBE_MIN     (64u * 1024)

enum conn_state {
	CONN_HANDSHAKE,
	CONN_TRANSMISSION,
	CONN_DRAINING, /* no more input: finish live requests, send, close */
	CONN_CLOSED,   /* socket closed; waiting for the last reference */
};

struct nbd_req {
	struct nbd_req *next;     /* free list or retry list */
	struct nbd_conn *conn;
	struct nbd_request r;
	uint8_t *buf;             /* payload (READ/WRITE), 4 KiB aligned, or NULL */
	unsigned buf_class;       /* pool class of buf */
	uint32_t have;            /* WRITE payload bytes received */
	uint64_t done;            /* TRIM/WRITE_ZEROES bytes done (chunked) */
	uint32_t cur;             /* length of the chunk in flight */
	bool flushing;            /* TRIM with FUA: the final flush is in flight */
	int status;               /* 0 or first -errno */
	bool all_hole;            /* READ: the whole range is a hole, no I/O */
	size_t next_ext;          /* READ: extents in ext[] */
	struct tsr_extent ext[NBD_READ_EXTENTS];
};

struct nbd_out {
	struct nbd_out *next;
	struct iovec iov[2];      /* inline header, then optional data */
	int iovcnt;
	int iov_idx;              /* first iovec not fully sent */
	struct nbd_req *release;  /* request freed once this item is sent */
	void *heap;               /* malloc'd bytes freed once sent */
	uint8_t hdr[NBD_OUT_HDR];
};

struct nbd_conn {
	struct nbd_conn *prev, *next; /* wctx->conns, while the socket is open */
	struct nbd_wctx *wctx;
	struct tsr_nbd_server *srv;
	struct tsr_worker *w;
	struct tsr_io *io;
	int fd;                   /* -1 once closed */
	unsigned refs;            /* see the file header */
	enum conn_state state;
	struct nbd_hs hs;         /* handshake; fini'd on entering transmission */
	struct tsr_vol *vol;      /* the export, held from GO/EXPORT_NAME to free */
	struct nbd_tx_state tx;   /* negotiated; tx.size refreshed per request */

	uint8_t *rbuf;            /* unparsed input is rbuf[rpos, rlen) */
	size_t rpos, rlen;
	struct nbd_req *payload_req; /* WRITE whose payload is being read */
	uint64_t discard;         /* payload bytes of a refused WRITE to skip */

	struct nbd_out *out_head, *out_tail;
	bool wait_out;            /* sendmsg hit EAGAIN: waiting for EPOLLOUT */
	uint32_t events;          /* epoll mask in place */
	bool flush_scheduled;     /* a deferred call is pending */
	bool paused;              /* input stopped by a limit */
	bool stopping;            /* the worker stops, or a detach --force: drain, never
				   * wait on the client (conn_stop_input) */
	struct tsr_worker *move_to; /* export's home worker: move there at the end of this pass */
	struct nbd_open *opening; /* the handshake's export open out, or NULL */
	struct nbd_client client; /* the server's list entry, from transmission to free;
				   * client.peer set at the start */

	struct nbd_req *retry_head, *retry_tail; /* waiting for I/O queue room */
	bool retry_scheduled;
	unsigned inflight;        /* live requests */
	unsigned inflight_io;     /* vol operations submitted, not completed */
	size_t inflight_bytes;    /* payload buffers of live requests */

	struct nbd_req *free_reqs;
	struct nbd_out *free_outs;
	void *pool[NBD_POOL_CLASSES][NBD_POOL_PER_CLASS];
	unsigned pool_n[NBD_POOL_CLASSES];
	size_t pool_bytes;
};

static void conn_close(struct nbd_conn *c);
static void conn_process(struct nbd_conn *c);
static void conn_read(struct nbd_conn *c);
static void conn_on_event(void *arg, uint32_t events);
static void conn_schedule(struct nbd_conn *c);
static void conn_update_events(struct nbd_conn *c);
static void req_complete(struct nbd_req *req);

/* ---- references ---- */

static void conn_free(struct nbd_conn *c)
{
	unsigned i, j;

	while (c->free_reqs != NULL) {
		struct nbd_req *r = c->free_reqs;

		c->free_reqs = r->next;
		free(r);
	}
	while (c->free_outs != NULL) {
		struct nbd_out *o = c->free_outs;

		c->free_outs = o->next;
		free(o);
	}
	for (i = 0; i < NBD_POOL_CLASSES; i++)
		for (j = 0; j < c->pool_n[i]; j++)
			tsr_free_aligned(c->pool[i][j]);
	nbd_hs_fini(&c->hs);
	nbd_client_remove(c->srv, &c->client); /* before the export goes */
	if (c->vol != NULL)
		tsr_vol_put(c->vol);
	tsr_free_aligned(c->rbuf);
	nbd_server_count_conn(c->srv, -1);
	free(c);
}

static void conn_get(struct nbd_conn *c)
{
	c->refs++;
}

static void conn_put(struct nbd_conn *c)
{
	if (--c->refs == 0)
		conn_free(c);
}

/* ---- payload buffers: a small pool per connection ---- */

static unsigned buf_class(uint32_t len)
{
	unsigned cls = 0;

	while ((TSR_BLOCK_SIZE << cls) < len)
		cls++;
	return cls;
}

static void *buf_get(struct nbd_conn *c, unsigned cls)
{
	if (c->pool_n[cls] > 0) {
		c->pool_bytes -= (size_t)TSR_BLOCK_SIZE << cls;
		return c->pool[cls][--c->pool_n[cls]];
	}
	return tsr_alloc_aligned((size_t)TSR_BLOCK_SIZE << cls);
}

static void buf_put(struct nbd_conn *c, void *p, unsigned cls)
{
	size_t size = (size_t)TSR_BLOCK_SIZE << cls;

	if (c->pool_n[cls] < NBD_POOL_PER_CLASS && c->pool_bytes + size <= NBD_POOL_MAX_BYTES &&
	    c->state != CONN_CLOSED) {
		c->pool[cls][c->pool_n[cls]++] = p;
		c->pool_bytes += size;
		return;
	}
	tsr_free_aligned(p);
}

/* ---- requests ---- */

static struct nbd_req *req_alloc(struct nbd_conn *c, const struct nbd_request *r,
				 bool with_buf)
{
	struct nbd_req *req = c->free_reqs;

	if (req != NULL)
		c->free_reqs = req->next;
	else
		req = malloc(sizeof(*req));
	if (req == NULL)
		return NULL;
	memset(req, 0, offsetof(struct nbd_req, ext));
	req->conn = c;
	req->r = *r;
	if (with_buf && r->len > 0) {
		req->buf_class = buf_class(r->len);
		req->buf = buf_get(c, req->buf_class);
		if (req->buf == NULL) {
			req->next = c->free_reqs;
			c->free_reqs = req;
			return NULL;
		}
		c->inflight_bytes += r->len;
	}
	c->inflight++;
	conn_get(c);
	return req;
}

static bool conn_can_resume(const struct nbd_conn *c)
{
	return c->inflight < NBD_MAX_INFLIGHT && c->inflight_bytes < NBD_MAX_INFLIGHT_BYTES &&
	       c->retry_head == NULL && c->opening == NULL;
}

static void req_free(struct nbd_req *req)
{
	struct nbd_conn *c = req->conn;

	if (req->buf != NULL) {
		c->inflight_bytes -= req->r.len;
		buf_put(c, req->buf, req->buf_class);
	}
	c->inflight--;
	if (c->state == CONN_CLOSED) {
		free(req);
	} else {
		req->next = c->free_reqs;
		c->free_reqs = req;
		if ((c->paused && conn_can_resume(c)) ||
		    (c->state == CONN_DRAINING && c->inflight == 0))
			conn_schedule(c);
	}
	conn_put(c);
}

/* ---- output queue ---- */

static struct nbd_out *out_new(struct nbd_conn *c)
{
	struct nbd_out *o = c->free_outs;

	if (o != NULL)
		c->free_outs = o->next;
	else
		o = malloc(sizeof(*o));
	if (o == NULL)
		return NULL;
	o->next = NULL;
	o->iovcnt = 1;
	o->iov_idx = 0;
	o->iov[0].iov_base = o->hdr;
	o->iov[0].iov_len = 0;
	o->release = NULL;
	o->heap = NULL;
	return o;
}

static void out_release(struct nbd_conn *c, struct nbd_out *o)
{
	struct nbd_req *req = o->release;

	free(o->heap);
	if (c->state == CONN_CLOSED) {
		free(o);
	} else {
		o->next = c->free_outs;
		c->free_outs = o;
	}
	if (req != NULL)
		req_free(req); /* may drop the last reference: last thing we do */
}

static void out_push(struct nbd_conn *c, struct nbd_out *o)
{
	if (c->state == CONN_CLOSED) {
		out_release(c, o);
		return;
	}
	if (c->out_tail != NULL)
		c->out_tail->next = o;
	else
		c->out_head = o;
	c->out_tail = o;
	conn_schedule(c);
}

/* Send as much of the queue as the socket takes. */
static void conn_flush(struct nbd_conn *c)
{
	while (c->out_head != NULL && !c->wait_out && c->fd >= 0) {
		struct iovec iov[NBD_SEND_IOV];
		struct msghdr msg = { .msg_iov = iov };
		struct nbd_out *o;
		ssize_t n;
		int cnt = 0, i;

		for (o = c->out_head; o != NULL && cnt <= NBD_SEND_IOV - 2; o = o->next)
			for (i = o->iov_idx; i < o->iovcnt; i++)
				iov[cnt++] = o->iov[i];
		msg.msg_iovlen = (size_t)cnt;
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (c->stopping) {
					/* shutting down: do not wait for a slow reader */
					conn_close(c);
					return;
				}
				c->wait_out = true;
				break;
			}
			tsr_debug("nbd: send: %s; closing the connection", strerror(errno));
			conn_close(c);
			return;
		}
		/* Retire what was sent; a partly sent iovec is advanced in place.
		 * (No item holds an empty iovec.) */
		while (n > 0) {
			struct iovec *v;

			o = c->out_head;
			v = &o->iov[o->iov_idx];
			if ((size_t)n >= v->iov_len) {
				n -= (ssize_t)v->iov_len;
				o->iov_idx++;
			} else {
				v->iov_base = (uint8_t *)v->iov_base + n;
				v->iov_len -= (size_t)n;
				n = 0;
			}
			if (o->iov_idx == o->iovcnt) {
				c->out_head = o->next;
				if (c->out_head == NULL)
					c->out_tail = NULL;
				out_release(c, o);
				if (c->out_head == NULL)
					break;
			}
		}
	}
	if (c->state == CONN_DRAINING && c->out_head == NULL && c->inflight == 0)
		conn_close(c);
}

/* ---- replies ---- */

static void reply_simple(struct nbd_conn *c, uint64_t handle, uint32_t error)
{
	struct nbd_out *o = out_new(c);

	if (o == NULL) {
		conn_close(c); /* a missing reply would hang the client */
		return;
	}
	o->iov[0].iov_len = nbd_encode_simple_reply(o->hdr, error, handle);
	out_push(c, o);
}

/* An error reply: a structured error chunk when negotiated (it carries a
 * message), else a simple reply. */
static void reply_error(struct nbd_conn *c, uint64_t handle, uint32_t error, const char *what)
{
	struct nbd_out *o;
	char msg[NBD_OUT_HDR - 26];
	size_t n;

	if (!c->tx.structured) {
		reply_simple(c, handle, error);
		return;
	}
	o = out_new(c);
	if (o == NULL) {
		conn_close(c);
		return;
	}
	n = (size_t)snprintf(msg, sizeof(msg), "%s: %s", what, strerror((int)error));
	if (n >= sizeof(msg))
		n = sizeof(msg) - 1;
	o->iov[0].iov_len = nbd_encode_error_chunk(o->hdr, NBD_REPLY_FLAG_DONE, handle, error,
						   msg, (uint16_t)n);
	out_push(c, o);
}

static const char *cmd_name(uint16_t type)
{
	switch (type) {
	case NBD_CMD_READ: return "read";
	case NBD_CMD_WRITE: return "write";
	case NBD_CMD_FLUSH: return "flush";
	case NBD_CMD_TRIM: return "trim";
	case NBD_CMD_WRITE_ZEROES: return "write zeroes";
	case NBD_CMD_BLOCK_STATUS: return "block status";
	default: return "request";
	}
}

static bool all_zero(const uint8_t *p, size_t len)
{
	const uint64_t *q = (const uint64_t *)p;
	size_t i;

	for (i = 0; i < len / 8; i++)
		if (q[i] != 0)
			return false;
	return true;
}

/* Queue one structured read chunk; data chunks point into req->buf. */
static bool push_read_chunk(struct nbd_conn *c, struct nbd_req *req, bool hole,
			    uint64_t off, uint32_t len, bool last)
{
	uint16_t flags = last ? NBD_REPLY_FLAG_DONE : 0;
	struct nbd_out *o = out_new(c);

	if (o == NULL)
		return false;
	if (hole) {
		o->iov[0].iov_len = nbd_encode_hole_chunk(o->hdr, flags, req->r.handle, off, len);
	} else {
		o->iov[0].iov_len = nbd_encode_data_chunk(o->hdr, flags, req->r.handle, off, len);
		o->iov[1].iov_base = req->buf + (off - req->r.offset);
		o->iov[1].iov_len = len;
		o->iovcnt = 2;
	}
	if (last)
		o->release = req;
	out_push(c, o);
	return true;
}

/* Successful READ: simple reply + data, or structured chunks with holes. */
static void reply_read(struct nbd_req *req)
{
	struct nbd_conn *c = req->conn;
	uint64_t off = req->r.offset, end = req->r.offset + req->r.len;
	bool df = req->r.flags & NBD_CMD_FLAG_DF;
	struct nbd_out *o;
	size_t i;

	if (!c->tx.structured) {
		o = out_new(c);
		if (o == NULL)
			goto fail;
		o->iov[0].iov_len = nbd_encode_simple_reply(o->hdr, 0, req->r.handle);
		o->iov[1].iov_base = req->buf;
		o->iov[1].iov_len = req->r.len;
		o->iovcnt = 2;
		o->release = req;
		out_push(c, o);
		return;
	}
	if (req->all_hole ||
	    (req->r.len < NBD_HOLE_PROBE_MIN && all_zero(req->buf, req->r.len))) {
		if (!push_read_chunk(c, req, true, off, req->r.len, true))
			goto fail;
		return;
	}
	if (df || req->next_ext == 0) {
		if (!push_read_chunk(c, req, false, off, req->r.len, true))
			goto fail;
		return;
	}
	/* Walk the hole map, merging neighbours of the same kind; whatever the
	 * map did not cover is sent as data (it was read). */
	i = 0;
	while (off < end) {
		bool hole = false;
		uint64_t seg_end = end;

		while (i < req->next_ext && req->ext[i].offset + req->ext[i].length <= off)
			i++;
		if (i < req->next_ext && req->ext[i].offset <= off) {
			hole = req->ext[i].flags & TSR_EXTENT_ZERO;
			seg_end = req->ext[i].offset + req->ext[i].length;
			/* merge following extents of the same kind */
			while (i + 1 < req->next_ext &&
			       req->ext[i + 1].offset == seg_end &&
			       (bool)(req->ext[i + 1].flags & TSR_EXTENT_ZERO) == hole) {
				i++;
				seg_end = req->ext[i].offset + req->ext[i].length;
			}
			if (seg_end > end)
				seg_end = end;
		} else if (i < req->next_ext && req->ext[i].offset < end) {
			seg_end = req->ext[i].offset; /* gap before the next extent */
		}
		if (!push_read_chunk(c, req, hole, off, (uint32_t)(seg_end - off),
				     seg_end == end))
			goto fail;
		off = seg_end;
	}
	return;
fail:
	/* Chunks already queued reference req->buf: keep req until they go. */
	conn_close(c);
	req_free(req);
}

static void reply_block_status(struct nbd_conn *c, const struct nbd_request *r)
{
	struct tsr_extent ext[NBD_STATUS_EXTENTS];
	bool one = r->flags & NBD_CMD_FLAG_REQ_ONE;
	uint64_t end = r->offset + r->len, pos = r->offset;
	size_t count = 0, i, n = 0;
	struct nbd_out *o;
	uint8_t *p;
	int ret;

	ret = tsr_vol_block_status(c->vol, r->offset, r->len, ext,
				   one ? 1 : NBD_STATUS_EXTENTS, &count);
	if (ret < 0) {
		reply_error(c, r->handle, nbd_errno_to_nbd(ret), "block status");
		return;
	}
	o = out_new(c);
	p = malloc(4 + 8 * (count ? count : 1));
	if (o == NULL || p == NULL) {
		free(p);
		if (o != NULL)
			out_release(c, o);
		conn_close(c);
		return;
	}
	nbd_put32(p, NBD_META_ID_BASE_ALLOCATION);
	for (i = 0; i < count; i++) {
		uint64_t s = ext[i].offset < r->offset ? r->offset : ext[i].offset;
		uint64_t e = ext[i].offset + ext[i].length;
		uint32_t st = 0;

		if (e > end)
			e = end;
		if (e <= s)
			continue;
		if (s != pos)
			break; /* descriptors must be consecutive: stop at a gap */
		pos = e;
		if (ext[i].flags & TSR_EXTENT_HOLE)
			st |= NBD_STATE_HOLE;
		if (ext[i].flags & TSR_EXTENT_ZERO)
			st |= NBD_STATE_ZERO;
		if (n > 0 && nbd_get32(p + 4 + 8 * (n - 1) + 4) == st) {
			uint8_t *d = p + 4 + 8 * (n - 1);

			nbd_put32(d, nbd_get32(d) + (uint32_t)(e - s));
			continue;
		}
		nbd_put32(p + 4 + 8 * n, (uint32_t)(e - s));
		nbd_put32(p + 4 + 8 * n + 4, st);
		n++;
	}
	if (n == 0) {
		/* spec: at least one descriptor; status 0 is always safe */
		nbd_put32(p + 4, r->len);
		nbd_put32(p + 8, 0);
		n = 1;
	}
	if (one)
		n = 1;
	o->heap = p;
	o->iov[0].iov_len = nbd_encode_chunk_hdr(o->hdr, NBD_REPLY_FLAG_DONE,
						 NBD_REPLY_TYPE_BLOCK_STATUS, r->handle,
						 (uint32_t)(4 + 8 * n));
	o->iov[1].iov_base = p;
	o->iov[1].iov_len = 4 + 8 * n;
	o->iovcnt = 2;
	out_push(c, o);
}

/* ---- dispatch to the volume ---- */

static void req_io_done(void *arg, int status);

/* Issue the next volume operation of req.  0 (req_io_done fires) or -errno. */
static int req_submit(struct nbd_req *req)
{
	struct nbd_conn *c = req->conn;
	const struct nbd_request *r = &req->r;
	unsigned flags = (r->flags & NBD_CMD_FLAG_FUA) ? TSR_WRITE_FUA : 0;
	uint64_t left = r->len - req->done;
	int ret;

	req->cur = left < TSR_MAX_IO ? (uint32_t)left : TSR_MAX_IO;
	switch (r->type) {
	case NBD_CMD_READ:
		ret = tsr_vol_read(c->vol, c->io, r->offset, r->len, req->buf, req_io_done, req);
		break;
	case NBD_CMD_WRITE:
		ret = tsr_vol_write(c->vol, c->io, r->offset, r->len, req->buf, flags,
				    req_io_done, req);
		break;
	case NBD_CMD_TRIM:
		if (left > 0)
			ret = tsr_vol_trim(c->vol, c->io, r->offset + req->done, req->cur,
					   req_io_done, req);
		else /* all trimmed; FUA asks for it to be durable */
			ret = tsr_vol_flush(c->vol, c->io, req_io_done, req);
		break;
	case NBD_CMD_WRITE_ZEROES:
		if (r->flags & NBD_CMD_FLAG_NO_HOLE)
			flags |= TSR_WRITE_NO_HOLE;
		ret = tsr_vol_write_zeroes(c->vol, c->io, r->offset + req->done, req->cur,
					   flags, req_io_done, req);
		break;
	case NBD_CMD_FLUSH:
	default:
		ret = tsr_vol_flush(c->vol, c->io, req_io_done, req);
		break;
	}
	if (ret == 0)
		c->inflight_io++;
	return ret;
}

static void retry_push(struct nbd_conn *c, struct nbd_req *req)
{
	req->next = NULL;
	if (c->retry_tail != NULL)
		c->retry_tail->next = req;
	else
		c->retry_head = req;
	c->retry_tail = req;
}

static void retry_msg(struct tsr_worker *w, void *arg);

static void retry_schedule(struct nbd_conn *c)
{
	if (c->retry_scheduled || c->state == CONN_CLOSED)
		return;
	if (tsr_worker_send(c->w, retry_msg, c) < 0) {
		/* The worker is stopping: answer what waits with ESHUTDOWN. */
		while (c->retry_head != NULL) {
			struct nbd_req *req = c->retry_head;

			c->retry_head = req->next;
			if (c->retry_head == NULL)
				c->retry_tail = NULL;
			req->status = -ESHUTDOWN;
			req_complete(req);
		}
		return;
	}
	c->retry_scheduled = true;
	conn_get(c);
}

/* Resubmit requests the I/O queue had no room for, in arrival order. */
static void retry_run(struct nbd_conn *c)
{
	while (c->retry_head != NULL && c->state != CONN_CLOSED) {
		struct nbd_req *req = c->retry_head;
		int ret = req_submit(req);

		if (ret == -EAGAIN) {
			/* Our own completions will retry; if none is pending, ask again. */
			if (c->inflight_io == 0)
				retry_schedule(c);
			return;
		}
		c->retry_head = req->next;
		if (c->retry_head == NULL)
			c->retry_tail = NULL;
		if (ret < 0) {
			req->status = ret;
			req_complete(req);
		}
	}
	if (c->paused && conn_can_resume(c))
		conn_schedule(c);
}

static void retry_msg(struct tsr_worker *w, void *arg)
{
	struct nbd_conn *c = arg;

	c->retry_scheduled = false;
	retry_run(c);
	conn_put(c);
}

static void req_dispatch(struct nbd_req *req)
{
	struct nbd_conn *c = req->conn;
	int ret;

	if (c->retry_head != NULL) {
		retry_push(c, req);
		return;
	}
	ret = req_submit(req);
	if (ret == -EAGAIN) {
		retry_push(c, req);
		retry_schedule(c);
		return;
	}
	if (ret < 0) {
		req->status = ret;
		req_complete(req);
	}
}

static void req_io_done(void *arg, int status)
{
	struct nbd_req *req = arg;
	struct nbd_conn *c = req->conn;
	int ret;

	c->inflight_io--;
	if (c->retry_head != NULL)
		retry_schedule(c);
	if (status == -EAGAIN && c->state != CONN_CLOSED) {
		/* the I/O queue was full for a step queued after the submit (a
		 * copy on write, a layered read): nothing was acknowledged, so
		 * the request goes again like one the queue had no room for */
		retry_push(c, req);
		retry_schedule(c);
		return;
	}
	if (status < 0 || c->state == CONN_CLOSED) {
		req->status = status < 0 ? status : -ESHUTDOWN;
		req_complete(req);
		return;
	}
	if ((req->r.type == NBD_CMD_TRIM || req->r.type == NBD_CMD_WRITE_ZEROES) &&
	    !req->flushing) {
		bool more;

		req->done += req->cur;
		more = req->done < req->r.len;
		if (!more && req->r.type == NBD_CMD_TRIM && (req->r.flags & NBD_CMD_FLAG_FUA)) {
			req->flushing = true; /* req_submit flushes once all is trimmed */
			more = true;
		}
		if (more) {
			ret = req_submit(req);
			if (ret == -EAGAIN) {
				retry_push(c, req);
				retry_schedule(c);
				return;
			}
			if (ret == 0)
				return;
			req->status = ret;
		}
	}
	req_complete(req);
}

/* The request finished (or failed): reply, then let it go. */
static void req_complete(struct nbd_req *req)
{
	struct nbd_conn *c = req->conn;

	if (c->state == CONN_CLOSED) {
		req_free(req);
		return;
	}
	if (req->status < 0) {
		if (req->status != -ESHUTDOWN)
			tsr_debug("nbd: %s at %llu+%u: %s", cmd_name(req->r.type),
				  (unsigned long long)req->r.offset, req->r.len,
				  strerror(-req->status));
		reply_error(c, req->r.handle, nbd_errno_to_nbd(req->status),
			    cmd_name(req->r.type));
		req_free(req);
		return;
	}
	if (req->r.type == NBD_CMD_READ) {
		reply_read(req); /* frees req once its last chunk is sent */
		return;
	}
	reply_simple(c, req->r.handle, 0);
	req_free(req);
}

/* A READ: maybe look for holes, then read. */
static void start_read(struct nbd_conn *c, struct nbd_req *req)
{
	const struct nbd_request *r = &req->r;

	if (c->tx.structured && !(r->flags & NBD_CMD_FLAG_DF) && r->len >= NBD_HOLE_PROBE_MIN) {
		size_t count = 0;

		if (tsr_vol_block_status(c->vol, r->offset, r->len, req->ext, NBD_READ_EXTENTS,
					 &count) == 0) {
			req->next_ext = count;
			if (count >= 1 && (req->ext[0].flags & TSR_EXTENT_ZERO) &&
			    req->ext[0].offset <= r->offset &&
			    req->ext[0].offset + req->ext[0].length >= r->offset + r->len) {
				req->all_hole = true;
				req_complete(req); /* no I/O: zeroes are not read */
				return;
			}
		}
	}
	req_dispatch(req);
}

/* ---- transmission input ---- */

static void conn_begin_drain(struct nbd_conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	c->state = CONN_DRAINING;
	if (c->payload_req != NULL) {
		/* A write whose payload never fully arrived: nothing to do. */
		struct nbd_req *req = c->payload_req;

		c->payload_req = NULL;
		req_free(req);
	}
	conn_schedule(c);
}

static void protocol_error(struct nbd_conn *c, const char *why)
{
	tsr_warn("nbd: protocol error from client: %s; closing the connection", why);
	nbd_server_count_protocol_error(c->srv);
	conn_close(c);
}

/* One request header just parsed (its bytes consumed). */
static void handle_request(struct nbd_conn *c, const struct nbd_request *r)
{
	struct nbd_req *req;
	uint32_t err;

	c->tx.size = tsr_vol_size(c->vol);
	err = nbd_check_request(r, &c->tx);
	if (r->type == NBD_CMD_WRITE) {
		size_t avail, n;

		if (err) {
			/* The payload follows anyway: skip it to stay in sync. */
			c->discard = r->len;
			reply_error(c, r->handle, err, "write");
			return;
		}
		if (r->len == 0) {
			reply_simple(c, r->handle, 0);
			return;
		}
		req = req_alloc(c, r, true);
		if (req == NULL) {
			c->discard = r->len;
			reply_error(c, r->handle, NBD_ENOMEM, "write");
			return;
		}
		avail = c->rlen - c->rpos;
		n = avail < r->len ? avail : r->len;
		memcpy(req->buf, c->rbuf + c->rpos, n);
		c->rpos += n;
		req->have = (uint32_t)n;
		if (req->have == r->len)
			req_dispatch(req);
		else
			c->payload_req = req; /* conn_read fills the rest */
		return;
	}
	if (err) {
		reply_error(c, r->handle, err, cmd_name(r->type));
		return;
	}
	switch (r->type) {
	case NBD_CMD_DISC:
		conn_begin_drain(c);
		return;
	case NBD_CMD_BLOCK_STATUS:
		reply_block_status(c, r);
		return;
	case NBD_CMD_READ:
	case NBD_CMD_TRIM:
	case NBD_CMD_WRITE_ZEROES:
		if (r->len == 0) {
			/* spec: unspecified but SHOULD NOT disconnect: succeed */
			if (r->type == NBD_CMD_READ && c->tx.structured) {
				struct nbd_out *o = out_new(c);

				if (o == NULL) {
					conn_close(c);
					return;
				}
				o->iov[0].iov_len = nbd_encode_chunk_hdr(o->hdr, NBD_REPLY_FLAG_DONE,
									 NBD_REPLY_TYPE_NONE,
									 r->handle, 0);
				out_push(c, o);
			} else {
				reply_simple(c, r->handle, 0);
			}
			return;
		}
		break;
	default:
		break;
	}
	req = req_alloc(c, r, r->type == NBD_CMD_READ);
	if (req == NULL) {
		reply_error(c, r->handle, NBD_ENOMEM, cmd_name(r->type));
		return;
	}
	if (r->type == NBD_CMD_READ)
		start_read(c, req);
	else
		req_dispatch(req);
}

static void enter_transmission(struct nbd_conn *c)
{
	c->vol = c->hs.export.handle;
	c->hs.export.handle = NULL;
	c->tx.tflags = c->hs.tflags;
	c->tx.structured = c->hs.structured;
	c->tx.meta = c->hs.meta;
	c->tx.size = tsr_vol_size(c->vol);
	c->state = CONN_TRANSMISSION;
	nbd_client_add(c->srv, &c->client, tsr_vol_name(c->vol), c->w);
	tsr_debug("nbd: client %s attached to '%s'%s%s", c->client.peer, tsr_vol_name(c->vol),
		  c->tx.structured ? ", structured replies" : "",
		  c->tx.meta ? ", base:allocation" : "");
	nbd_hs_fini(&c->hs);
	if (tsr_vol_home(c->vol) != NULL && tsr_vol_home(c->vol) != c->w) {
		/* The volume's coordinator runs on one worker: take no request
		 * here; the deferred step hands the connection over. */
		c->move_to = tsr_vol_home(c->vol);
		c->paused = true;
		conn_schedule(c);
	}
}

/* On the home worker: take over a connection handed by conn_move(). */
static void conn_adopt_msg(struct tsr_worker *w, void *arg)
{
	struct nbd_conn *c = arg;
	struct nbd_wctx *wctx = nbd_server_wctx(c->srv, w);
	int ret;

	c->w = w;
	c->io = tsr_worker_io(w);
	c->move_to = NULL;
	c->paused = false;
	nbd_client_moved(c->srv, &c->client, w);
	if (wctx == NULL || wctx->stopped) {
		c->wctx = NULL;
		close(c->fd);
		c->fd = -1;
		c->state = CONN_CLOSED;
		conn_put(c); /* the socket's */
		conn_put(c); /* the move's */
		return;
	}
	c->wctx = wctx;
	c->next = wctx->conns;
	if (c->next != NULL)
		c->next->prev = c;
	wctx->conns = c;
	c->events = EPOLLIN | (c->wait_out ? EPOLLOUT : 0);
	ret = tsr_worker_watch(w, c->fd, c->events, conn_on_event, c);
	if (ret < 0) {
		tsr_error("nbd: move to worker%u: watch: %s", tsr_worker_index(w), strerror(-ret));
		conn_close(c);
		conn_put(c);
		return;
	}
	conn_process(c);   /* requests pipelined behind the handshake */
	conn_read(c);
	if (c->state != CONN_CLOSED) {
		conn_flush(c);
		conn_update_events(c);
	}
	conn_put(c);
}

/*
 * Hand c over to c->move_to (end of a loop pass on the old worker, no
 * request live).  The socket leaves this loop; nothing here touches c
 * afterwards.
 */
static void conn_move(struct nbd_conn *c)
{
	struct tsr_worker *to = c->move_to;

	conn_flush(c);
	if (c->state == CONN_CLOSED)
		return;
	tsr_worker_unwatch(c->w, c->fd);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->wctx->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	conn_get(c); /* the move's */
	if (tsr_worker_send(to, conn_adopt_msg, c) < 0) {
		tsr_error("nbd: cannot move the connection to worker%u; closing it",
			  tsr_worker_index(to));
		close(c->fd);
		c->fd = -1;
		c->state = CONN_CLOSED;
		conn_put(c); /* the socket's */
		conn_put(c); /* the move's */
	}
}

/* Hand the handshake's queued bytes to the output queue. */
static bool take_hs_output(struct nbd_conn *c)
{
	struct nbd_out *o;

	if (c->hs.out.len == 0)
		return true;
	o = out_new(c);
	if (o == NULL)
		return false;
	o->heap = c->hs.out.data;
	o->iov[0].iov_base = c->hs.out.data;
	o->iov[0].iov_len = c->hs.out.len;
	c->hs.out.data = NULL;
	c->hs.out.len = c->hs.out.cap = 0;
	out_push(c, o);
	return true;
}

/* Parse everything complete in rbuf. */
static void conn_process(struct nbd_conn *c)
{
	while (!c->paused) {
		size_t avail = c->rlen - c->rpos;

		if (c->state == CONN_HANDSHAKE) {
			ssize_t n = nbd_hs_feed(&c->hs, c->rbuf + c->rpos, avail);

			if (n < 0) {
				protocol_error(c, n == -EPROTO ? c->hs.error : "out of memory");
				return;
			}
			c->rpos += (size_t)n;
			if (!take_hs_output(c)) {
				conn_close(c);
				return;
			}
			if (c->hs.state == NBD_HS_DONE) {
				enter_transmission(c);
				continue;
			}
			if (c->hs.state == NBD_HS_CLOSE) {
				conn_begin_drain(c);
				return;
			}
			return; /* needs more input, or an open is out (conn_open_done) */
		}
		if (c->state != CONN_TRANSMISSION || c->payload_req != NULL)
			return;
		if (c->discard > 0) {
			size_t n = avail < c->discard ? avail : (size_t)c->discard;

			c->rpos += n;
			c->discard -= n;
			if (c->discard > 0)
				return;
			continue;
		}
		if (avail < NBD_REQUEST_LEN)
			return;
		if (!conn_can_resume(c)) {
			c->paused = true;
			return;
		}
		{
			struct nbd_request r;

			if (nbd_parse_request(c->rbuf + c->rpos, avail, &r) < 0) {
				protocol_error(c, "bad request magic");
				return;
			}
			c->rpos += NBD_REQUEST_LEN;
			handle_request(c, &r);
		}
	}
}

/* Read what the socket has and process it. */
static void conn_read(struct nbd_conn *c)
{
	for (;;) {
		struct iovec iov[2];
		size_t want, space;
		int cnt = 0;
		ssize_t n;

		if (c->paused || (c->state != CONN_HANDSHAKE && c->state != CONN_TRANSMISSION))
			return;
		if (c->rpos == c->rlen) {
			c->rpos = c->rlen = 0;
		} else if (c->rpos > 0 && NBD_RBUF_SIZE - c->rlen < NBD_RBUF_SIZE / 2) {
			memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
			c->rlen -= c->rpos;
			c->rpos = 0;
		}
		if (c->payload_req != NULL) {
			struct nbd_req *req = c->payload_req;

			iov[cnt].iov_base = req->buf + req->have;
			iov[cnt++].iov_len = req->r.len - req->have;
		}
		space = NBD_RBUF_SIZE - c->rlen;
		if (space > 0) {
			iov[cnt].iov_base = c->rbuf + c->rlen;
			iov[cnt++].iov_len = space;
		}
		if (cnt == 0) {
			/* rbuf full of unparsed input: processing is paused (or an
			 * open is out: conn_open_done resumes) */
			if (c->opening != NULL)
				c->paused = true;
			return;
		}
		want = iov[0].iov_len + (cnt > 1 ? iov[1].iov_len : 0);
		n = readv(c->fd, iov, cnt);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			tsr_debug("nbd: read: %s; closing the connection", strerror(errno));
			conn_close(c);
			return;
		}
		if (n == 0) {
			/* Client gone, or half-closed after its last request: finish
			 * what it asked for, then close. */
			conn_begin_drain(c);
			return;
		}
		if (c->payload_req != NULL) {
			struct nbd_req *req = c->payload_req;
			size_t need = req->r.len - req->have;
			size_t m = (size_t)n < need ? (size_t)n : need;

			req->have += (uint32_t)m;
			c->rlen += (size_t)n - m;
			if (req->have == req->r.len) {
				c->payload_req = NULL;
				req_dispatch(req);
			}
		} else {
			c->rlen += (size_t)n;
		}
		conn_process(c);
		if ((size_t)n < want)
			return; /* the socket is drained */
	}
}

/* ---- scheduling, events, close ---- */

static void conn_update_events(struct nbd_conn *c)
{
	uint32_t ev = 0;

	if (c->fd < 0)
		return;
	if (!c->paused && (c->state == CONN_HANDSHAKE || c->state == CONN_TRANSMISSION))
		ev |= EPOLLIN;
	if (c->wait_out)
		ev |= EPOLLOUT;
	if (ev != c->events) {
		if (tsr_worker_modify(c->w, c->fd, ev) == 0)
			c->events = ev;
	}
}

/* End of the loop pass: resume input if a limit cleared, send replies. */
static void conn_deferred(struct tsr_worker *w, void *arg)
{
	struct nbd_conn *c = arg;

	c->flush_scheduled = false;
	if (c->state != CONN_CLOSED && c->move_to != NULL) {
		conn_move(c);
	} else if (c->state != CONN_CLOSED) {
		if (c->paused && conn_can_resume(c)) {
			c->paused = false;
			conn_process(c);
		}
		conn_flush(c);
		conn_update_events(c);
	}
	conn_put(c);
}

static void conn_schedule(struct nbd_conn *c)
{
	if (c->flush_scheduled || c->state == CONN_CLOSED)
		return;
	if (tsr_worker_defer(c->w, conn_deferred, c) < 0) {
		conn_flush(c); /* no memory for the record: do it now */
		return;
	}
	c->flush_scheduled = true;
	conn_get(c);
}

static void conn_on_event(void *arg, uint32_t events)
{
	struct nbd_conn *c = arg;

	conn_get(c);
	/* Hang-up or error while we are not reading (limits, draining): epoll
	 * reports them whatever the mask, and the peer cannot take replies. */
	if ((events & (EPOLLHUP | EPOLLERR)) &&
	    (c->paused || c->state == CONN_DRAINING)) {
		conn_close(c);
		conn_put(c);
		return;
	}
	if (events & EPOLLOUT) {
		c->wait_out = false;
		conn_flush(c);
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		conn_read(c);
	if (c->state != CONN_CLOSED)
		conn_update_events(c);
	conn_put(c);
}

/* Hard close: drop the socket now; live requests finish and free us. */
static void conn_close(struct nbd_conn *c)
{
	struct nbd_req *req;

	if (c->state == CONN_CLOSED)
		return;
	conn_get(c);
	c->state = CONN_CLOSED;
	if (c->opening != NULL)
		nbd_open_cancel(c->opening); /* its reference stays until it reports */
	if (c->fd >= 0) {
		tsr_worker_unwatch(c->w, c->fd);
		close(c->fd);
		c->fd = -1;
	}
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->wctx->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	while (c->out_head != NULL) {
		struct nbd_out *o = c->out_head;

		c->out_head = o->next;
		out_release(c, o);
	}
	c->out_tail = NULL;
	if ((req = c->payload_req) != NULL) {
		c->payload_req = NULL;
		req_free(req);
	}
	while ((req = c->retry_head) != NULL) {
		c->retry_head = req->next;
		req_free(req);
	}
	c->retry_tail = NULL;
	conn_put(c); /* the socket's reference */
	conn_put(c);
}

void nbd_conns_close_all(struct nbd_wctx *wctx)
{
	while (wctx->conns != NULL)
		conn_close(wctx->conns);
}

/*
 * Read no more requests from c: finish those in flight and send their
 * replies while the client takes them without waiting (a client that does
 * not read, stopped or hung, is closed at once), then close.  The worker's
 * stop and a detach --force (nbd_conns_disconnect).
 */
static void conn_stop_input(struct nbd_conn *c)
{
	conn_get(c);
	c->stopping = true;
	if (c->wait_out)
		conn_close(c); /* already blocked on a slow reader */
	else
		conn_begin_drain(c);
	conn_put(c); /* closing c leaves the other connections alone */
}

void nbd_conns_disconnect(struct nbd_wctx *wctx, const char *name)
{
	struct nbd_conn *c, *next;

	for (c = wctx->conns; c != NULL; c = next) {
		next = c->next;
		/* a client draining on its own (it sent NBD_CMD_DISC, half-closed)
		 * may have stopped reading too: it is not waited for either (a
		 * handshake's drain has no volume) */
		if ((c->state != CONN_TRANSMISSION && (c->state != CONN_DRAINING || c->stopping)) ||
		    c->vol == NULL || strcmp(tsr_vol_name(c->vol), name) != 0)
			continue;
		tsr_info("nbd: closing the connection of client %s to '%s' (its volume is being "
			 "detached): its requests in flight are answered first", c->client.peer, name);
		conn_stop_input(c);
	}
}

void nbd_conns_drain_all(struct nbd_wctx *wctx)
{
	struct nbd_conn *c, *next;

	for (c = wctx->conns; c != NULL; c = next) {
		next = c->next;
		conn_stop_input(c);
	}
}

/* ---- exports for the handshake: opens off the worker ---- */

/* On c's worker: the open's result (nbd_open_start's callback). */
static void conn_open_done(void *arg, int status, struct nbd_export *exp)
{
	struct nbd_conn *c = arg;
	int ret;

	c->opening = NULL;
	if (c->state == CONN_CLOSED || c->state == CONN_DRAINING) {
		/* gone meanwhile (the client, or the worker stops) */
		if (status == 0)
			nbd_server_export_ops.close(c->srv, exp->handle);
		conn_put(c); /* the open's */
		return;
	}
	c->paused = false; /* set when rbuf filled up while the open was out */
	ret = nbd_hs_open_done(&c->hs, status, exp);
	if (ret < 0) {
		protocol_error(c, ret == -EPROTO ? c->hs.error : "out of memory");
	} else if (!take_hs_output(c)) {
		conn_close(c);
	} else {
		if (c->hs.state == NBD_HS_DONE)
			enter_transmission(c);
		conn_process(c); /* what the client sent behind the option */
		conn_read(c);
		if (c->state != CONN_CLOSED)
			conn_update_events(c);
	}
	conn_put(c); /* the open's */
}

static int conn_export_open(void *arg, const char *name, struct nbd_export *out)
{
	struct nbd_conn *c = arg;

	return nbd_server_export_ops.open(c->srv, name, out);
}

static int conn_export_open_start(void *arg, const char *name)
{
	struct nbd_conn *c = arg;
	int ret = nbd_open_start(c->srv, c->w, name, conn_open_done, c, &c->opening);

	if (ret == 0)
		conn_get(c); /* the open's, until conn_open_done */
	return ret;
}

static void conn_export_close(void *arg, void *handle)
{
	struct nbd_conn *c = arg;

	nbd_server_export_ops.close(c->srv, handle);
}

static int conn_export_list(void *arg, int (*emit)(void *emit_arg, const char *name),
			    void *emit_arg)
{
	struct nbd_conn *c = arg;

	return nbd_server_export_ops.list(c->srv, emit, emit_arg);
}

/* The client's address as a detach names it: "IP:PORT" over TCP, "unix pid
 * N" over a unix socket (its peer's credentials), "unknown" otherwise. */
static void conn_peer_name(int fd, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "";

	snprintf(out, len, "unknown");
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)&ss;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(out, len, "%s:%u", host, ntohs(in->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)&ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(out, len, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else if (ss.ss_family == AF_UNIX) {
		struct ucred cred;
		socklen_t cl = sizeof(cred);

		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0)
			snprintf(out, len, "unix pid %d", (int)cred.pid);
		else
			snprintf(out, len, "unix");
	}
}

static const struct nbd_export_ops conn_export_ops = {
	.open = conn_export_open,
	.open_start = conn_export_open_start,
	.close = conn_export_close,
	.list = conn_export_list,
};

void tsr_nbd_conn_start(struct tsr_nbd_server *srv, struct tsr_worker *w, int fd)
{
	struct nbd_wctx *wctx = nbd_server_wctx(srv, w);
	struct nbd_conn *c = NULL;
	int one = 1, ret, flags;

	if (wctx == NULL || wctx->stopped)
		goto err_fd;
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		tsr_error("nbd: new connection: nonblocking: %s", strerror(errno));
		goto err_fd;
	}
	/* spec: both ends SHOULD disable Nagle on TCP (fails harmlessly on unix) */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	c = calloc(1, sizeof(*c));
	if (c == NULL)
		goto err_fd;
	conn_peer_name(fd, c->client.peer, sizeof(c->client.peer));
	c->rbuf = tsr_alloc_aligned(NBD_RBUF_SIZE);
	if (c->rbuf == NULL || nbd_hs_init(&c->hs, &conn_export_ops, c) < 0) {
		nbd_hs_fini(&c->hs);
		tsr_free_aligned(c->rbuf);
		free(c);
		goto err_fd;
	}
	c->wctx = wctx;
	c->srv = srv;
	c->w = w;
	c->io = tsr_worker_io(w);
	c->fd = fd;
	c->refs = 1;
	c->state = CONN_HANDSHAKE;
	c->events = EPOLLIN;
	nbd_server_count_conn(srv, +1);
	ret = tsr_worker_watch(w, fd, EPOLLIN, conn_on_event, c);
	if (ret < 0) {
		tsr_error("nbd: new connection: watch: %s", strerror(-ret));
		c->fd = -1;
		c->state = CONN_CLOSED;
		conn_put(c);
		goto err_fd;
	}
	c->next = wctx->conns;
	if (c->next != NULL)
		c->next->prev = c;
	wctx->conns = c;
	if (!take_hs_output(c)) /* the greeting */
		conn_close(c);
	return;
err_fd:
	close(fd);
}
