/*
 * Peer protocol, replica side: serves this node's store volumes to the
 * coordinators of other nodes (rules in include/tessera/peer.h).
 *
 * A connection belongs to the worker tesserad handed it to, for its whole
 * life, and runs on that worker's epoll loop like an NBD connection
 * (engine/nbd/nbd_conn.c): the socket is nonblocking; each read takes what
 * is available into a 256 KiB buffer and every complete frame in it is
 * parsed in place; the rest of a large WRITE payload (STAGE: the data after
 * its 32-byte prefix, which is parsed from the input buffer) is read straight
 * into the request's 4 KiB-aligned buffer.  Staged-write frames (STAGE,
 * COMMIT, RELEASE, STAGE_LIST) run the store's journal calls on the
 * session's volume after the epoch check of a data op; STAGE_LIST is
 * answered at once from a copy of the journal's index.  Replies are queued as iovecs (the
 * header inline in the request, READ data and SUMS values pointing into its
 * buffers) and sent with one sendmsg per loop pass (tsr_worker_defer),
 * MSG_NOSIGNAL; on EAGAIN we wait for EPOLLOUT.
 *
 * Back-pressure: input stops while PEER_SRV_MAX_INFLIGHT requests or
 * PEER_SRV_MAX_BYTES of buffers are live, or requests wait for room in the
 * worker's I/O queue.
 *
 * Lifetime: a connection is reference counted: one reference while its
 * socket is open, one per live request, one per pending deferred call or
 * retry message, one across each fd callback.  Closing the socket lets the
 * in-flight I/O finish into its buffers; the last reference puts the svols
 * and frees everything.
 *
 * Handles: OPEN puts an svol into a small per-connection table; the handle
 * is its index + 1.  CLOSE retires the slot; its svol is put once no
 * request of the connection uses it.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tessera/peer.h"
#include "tessera/test_hook.h"
#include "peer/internal.h"

#define PEER_SRV_MAX_WORKERS  256
#define PEER_SRV_MAX_INFLIGHT 64u
#define PEER_SRV_MAX_BYTES    (64u * 1024 * 1024)
#define PEER_SRV_MAX_HANDLES  1024u
#define PEER_SRV_SEND_IOV     256
#define PEER_POOL_CLASSES     14   /* 4 KiB << 0..13 = 4 KiB..32 MiB */
#define PEER_POOL_PER_CLASS   32
#define PEER_POOL_MAX_BYTES   (16u * 1024 * 1024)
#define PEER_LINGER_MAX       (4u * 1024 * 1024) /* input discarded before a hard close */

struct peer_off;

struct peer_wctx {
	struct tsr_peer_server *srv;
	struct tsr_worker *w;
	struct peer_conn *conns;  /* open connections (doubly linked) */
	bool stopped;             /* the worker's stop hook ran */
	/* store calls of this worker's requests running in threads of their
	 * own (off_main): how many, and those whose answer found the worker
	 * stopping (its stop hook waits for them, then answers them) */
	pthread_mutex_t off_lock;
	pthread_cond_t off_idle;
	unsigned off_out;
	struct peer_off *off_undelivered;
	bool off_draining; /* off_drain began: a thread stops retrying its answer */
};

struct tsr_peer_server {
	struct tsr_store *store;  /* borrowed; outlives the server */
	char token[PEER_TOKEN_LEN];
	char node_id[PEER_NAME_MAX + 1];
	struct peer_wctx *wctx[PEER_SRV_MAX_WORKERS]; /* slot i: worker i's thread only */
	struct tsr_peer_server_stats stats;           /* relaxed atomics */
};

enum conn_state {
	CONN_HELLO,     /* waiting for HELLO */
	CONN_READY,     /* authenticated */
	CONN_DRAINING,  /* no more frames: send what is queued, then linger */
	CONN_LINGER,    /* replies sent, write side shut: discard input until EOF */
	CONN_CLOSED,    /* socket closed; waiting for the last reference */
};

struct peer_slot {
	struct tsr_svol *svol;    /* NULL: free slot */
	char name[PEER_OPEN_MAX + 1]; /* the volume's name (SNAP runs store calls by name) */
	unsigned users;           /* live requests using it */
	bool closed;              /* CLOSE received: no new requests */
};

struct peer_sreq {
	struct peer_sreq *next;   /* free list, retry list or output queue */
	struct peer_conn *conn;
	struct tsr_peer_hdr h;    /* the request; the reply reuses it */
	uint32_t slot;            /* index into conn->slots, or UINT32_MAX */
	uint8_t *buf;             /* READ/WRITE data, SUMS read piece; 4 KiB aligned */
	unsigned buf_class;
	uint8_t *sums; /* SUMS values (little endian u32); WRITE: see wsums */
	unsigned sums_class;
	/* WRITE: its blocks' CRC32Cs, joined and found equal to data_crc
	 * (write_ready), for the store's entries: sum1 for one block, else
	 * req->sums; NULL: the store computes them */
	const uint32_t *wsums;
	uint32_t sum1;
	uint32_t have;            /* WRITE payload bytes received */
	uint32_t done;            /* SUMS bytes summed; TRIM: 1 once trimmed (FUA flush next) */
	uint32_t cur;             /* SUMS piece in flight */
	size_t bytes;             /* buffer bytes counted in conn->inflight_bytes */
	struct tsr_stage_entry stage; /* STAGE: the entry, from the header and prefix */
	uint8_t stage_prefix[TSR_PEER_STAGE_PREFIX]; /* STAGE: as received (data_crc) */
	int status;
	/* the reply */
	uint8_t hdr[TSR_PEER_HDR_SIZE];
	struct iovec iov[2];
	int iovcnt, iov_idx;
};

struct peer_conn {
	struct peer_conn *prev, *next; /* wctx->conns, while the socket is open */
	struct peer_wctx *wctx;
	struct tsr_peer_server *srv;
	struct tsr_worker *w;
	struct tsr_io *io;
	int fd;                   /* -1 once closed */
	unsigned refs;            /* see the file header */
	enum conn_state state;
	char peer_id[PEER_NAME_MAX + 1]; /* from HELLO, for logs */

	uint8_t *rbuf;            /* unparsed input is rbuf[rpos, rlen) */
	size_t rpos, rlen;
	struct peer_sreq *payload_req; /* WRITE whose payload is being read */
	uint32_t discard;         /* payload bytes of a refused WRITE to skip */

	struct peer_sreq *out_head, *out_tail;
	bool wait_out;            /* sendmsg hit EAGAIN: waiting for EPOLLOUT */
	uint32_t events;          /* epoll mask in place */
	bool flush_scheduled;     /* a deferred call is pending */
	bool paused;              /* input stopped by a limit */
	bool peer_eof;            /* the coordinator closed its side */
	size_t discarded;         /* input thrown away while lingering */

	struct peer_sreq *retry_head, *retry_tail; /* waiting for I/O queue room */
	bool retry_scheduled;
	unsigned inflight;        /* live requests */
	unsigned inflight_io;     /* store operations submitted, not completed */
	size_t inflight_bytes;

	struct peer_slot *slots;
	uint32_t nslots;

	/* a SNAP or SNAP_LIST whose store call runs in a thread (off_start):
	 * until its answer, a frame on its volume (a session on "off_vol" or
	 * "off_vol@..."), OPEN, SNAP or SNAP_LIST waits, and the input after
	 * it with it (off_held, paused): frames of other volumes before it
	 * go on.  So a SNAP is ordered after the frames before it (the
	 * coordinator's writes acknowledged before it: they completed in the
	 * store) and before those after it, as on the loop; one at a time. */
	bool off_busy;
	bool off_held;
	char off_vol[PEER_OPEN_MAX + 1];

	struct peer_sreq *free_reqs;
	void *pool[PEER_POOL_CLASSES][PEER_POOL_PER_CLASS];
	unsigned pool_n[PEER_POOL_CLASSES];
	size_t pool_bytes;
};

static void conn_close(struct peer_conn *c);
static void conn_process(struct peer_conn *c);
static void conn_schedule(struct peer_conn *c);
static void req_complete(struct peer_sreq *req);
static int req_submit(struct peer_sreq *req);

static void count(uint64_t *ctr, uint64_t n)
{
	__atomic_add_fetch(ctr, n, __ATOMIC_RELAXED);
}

/* ---- references ---- */

/* Tests only ($TSR_TEST_PEER_CLOSE_HOLD_FILE): a gone connection's svols,
 * put by a thread of their own once the hold file goes (FILE.held made). */
struct close_hold {
	unsigned n;
	struct tsr_svol *svols[];
};

static void *close_hold_main(void *arg)
{
	struct close_hold *ch = arg;

	tsr_log_set_thread_name("peer-close-hold");
	tsr_test_hold_file("TSR_TEST_PEER_CLOSE_HOLD_FILE", true);
	for (unsigned i = 0; i < ch->n; i++)
		tsr_svol_put(ch->svols[i]);
	free(ch);
	return NULL;
}

/* Tests only: while the file named by $TSR_TEST_PEER_CLOSE_HOLD_FILE exists,
 * the copies a closed session had open stay open (their puts wait in a
 * thread, not on the worker): a coordinator's session whose close is late
 * past its detach.  true: c's svols taken over. */
static bool conn_test_close_hold(struct peer_conn *c)
{
	const char *path = getenv("TSR_TEST_PEER_CLOSE_HOLD_FILE");
	struct close_hold *ch;
	pthread_attr_t attr;
	pthread_t t;
	unsigned i;
	int ret;

	if (path == NULL || path[0] == '\0' || access(path, F_OK) != 0)
		return false;
	ch = calloc(1, sizeof(*ch) + c->nslots * sizeof(ch->svols[0]));
	if (ch == NULL)
		return false;
	for (i = 0; i < c->nslots; i++)
		if (c->slots[i].svol != NULL)
			ch->svols[ch->n++] = c->slots[i].svol;
	ret = ch->n > 0 ? pthread_attr_init(&attr) : -1;
	if (ret == 0) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		ret = pthread_create(&t, &attr, close_hold_main, ch);
		pthread_attr_destroy(&attr);
	}
	if (ret != 0) {
		free(ch);
		return false;
	}
	return true;
}

static void conn_free(struct peer_conn *c)
{
	unsigned i, j;

	while (c->free_reqs != NULL) {
		struct peer_sreq *r = c->free_reqs;

		c->free_reqs = r->next;
		free(r);
	}
	for (i = 0; i < PEER_POOL_CLASSES; i++)
		for (j = 0; j < c->pool_n[i]; j++)
			tsr_free_aligned(c->pool[i][j]);
	if (!conn_test_close_hold(c))
		for (i = 0; i < c->nslots; i++)
			tsr_svol_put(c->slots[i].svol);
	free(c->slots);
	tsr_free_aligned(c->rbuf);
	__atomic_sub_fetch(&c->srv->stats.connections_open, 1, __ATOMIC_RELAXED);
	free(c);
}

static void conn_get(struct peer_conn *c)
{
	c->refs++;
}

static void conn_put(struct peer_conn *c)
{
	if (--c->refs == 0)
		conn_free(c);
}

/* ---- buffers: a small pool per connection ---- */

static unsigned buf_class(size_t len)
{
	unsigned cls = 0;

	while (((size_t)TSR_BLOCK_SIZE << cls) < len)
		cls++;
	return cls;
}

static void *buf_get(struct peer_conn *c, unsigned cls)
{
	if (c->pool_n[cls] > 0) {
		c->pool_bytes -= (size_t)TSR_BLOCK_SIZE << cls;
		return c->pool[cls][--c->pool_n[cls]];
	}
	return tsr_alloc_aligned((size_t)TSR_BLOCK_SIZE << cls);
}

static void buf_put(struct peer_conn *c, void *p, unsigned cls)
{
	size_t size = (size_t)TSR_BLOCK_SIZE << cls;

	if (p == NULL)
		return;
	if (c->state != CONN_CLOSED && c->pool_n[cls] < PEER_POOL_PER_CLASS &&
	    c->pool_bytes + size <= PEER_POOL_MAX_BYTES) {
		c->pool[cls][c->pool_n[cls]++] = p;
		c->pool_bytes += size;
		return;
	}
	tsr_free_aligned(p);
}

/* ---- handles ---- */

static void slot_release(struct peer_conn *c, uint32_t i)
{
	struct peer_slot *s = &c->slots[i];

	if (--s->users == 0 && s->closed) {
		tsr_svol_put(s->svol);
		s->svol = NULL;
		s->closed = false;
	}
}

/* A slot for svol (taken over); -EMFILE when the table is full. */
static int slot_add(struct peer_conn *c, struct tsr_svol *svol, const char *name,
		    uint64_t *handle)
{
	struct peer_slot *ns;
	uint32_t i;

	for (i = 0; i < c->nslots; i++)
		if (c->slots[i].svol == NULL)
			break;
	if (i == c->nslots) {
		uint32_t n = c->nslots ? c->nslots * 2 : 8;

		if (c->nslots >= PEER_SRV_MAX_HANDLES)
			return -EMFILE;
		ns = realloc(c->slots, n * sizeof(*ns));
		if (ns == NULL)
			return -ENOMEM;
		memset(ns + c->nslots, 0, (n - c->nslots) * sizeof(*ns));
		c->slots = ns;
		c->nslots = n;
	}
	c->slots[i].svol = svol;
	snprintf(c->slots[i].name, sizeof(c->slots[i].name), "%s", name);
	c->slots[i].users = 0;
	c->slots[i].closed = false;
	*handle = (uint64_t)i + 1;
	return 0;
}

/* The live slot of a handle, or NULL. */
static struct peer_slot *slot_find(struct peer_conn *c, uint64_t handle, uint32_t *index)
{
	struct peer_slot *s;

	if (handle == 0 || handle > c->nslots)
		return NULL;
	s = &c->slots[handle - 1];
	if (s->svol == NULL || s->closed)
		return NULL;
	*index = (uint32_t)(handle - 1);
	return s;
}

/* ---- requests ---- */

static bool conn_can_resume(const struct peer_conn *c)
{
	return c->inflight < PEER_SRV_MAX_INFLIGHT && c->inflight_bytes < PEER_SRV_MAX_BYTES &&
	       c->retry_head == NULL && !c->off_held;
}

static struct peer_sreq *req_alloc(struct peer_conn *c, const struct tsr_peer_hdr *h)
{
	struct peer_sreq *req = c->free_reqs;

	if (req != NULL)
		c->free_reqs = req->next;
	else
		req = malloc(sizeof(*req));
	if (req == NULL)
		return NULL;
	memset(req, 0, offsetof(struct peer_sreq, hdr));
	req->conn = c;
	req->h = *h;
	req->slot = UINT32_MAX;
	c->inflight++;
	conn_get(c);
	return req;
}

/* A data buffer of len bytes for req (counted against the byte limit). */
static int req_buf(struct peer_sreq *req, size_t len)
{
	struct peer_conn *c = req->conn;

	req->buf_class = buf_class(len);
	req->buf = buf_get(c, req->buf_class);
	if (req->buf == NULL)
		return -ENOMEM;
	req->bytes += (size_t)TSR_BLOCK_SIZE << req->buf_class;
	c->inflight_bytes += (size_t)TSR_BLOCK_SIZE << req->buf_class;
	return 0;
}

static void req_free(struct peer_sreq *req)
{
	struct peer_conn *c = req->conn;

	buf_put(c, req->buf, req->buf_class);
	buf_put(c, req->sums, req->sums_class);
	c->inflight_bytes -= req->bytes;
	if (req->slot != UINT32_MAX)
		slot_release(c, req->slot);
	c->inflight--;
	if (c->state == CONN_CLOSED) {
		free(req);
	} else {
		if (TSR_KEEP_FREED) {
			req->next = c->free_reqs;
			c->free_reqs = req;
		} else {
			free(req); /* see TSR_KEEP_FREED */
		}
		if (c->paused && conn_can_resume(c))
			conn_schedule(c);
	}
	conn_put(c);
}

/* ---- output ---- */

static void conn_flush(struct peer_conn *c)
{
	while (c->out_head != NULL && !c->wait_out && c->fd >= 0) {
		struct iovec iov[PEER_SRV_SEND_IOV];
		struct msghdr msg = { .msg_iov = iov };
		struct peer_sreq *o;
		ssize_t n;
		int cnt = 0, i;

		for (o = c->out_head; o != NULL && cnt <= PEER_SRV_SEND_IOV - 2; o = o->next)
			for (i = o->iov_idx; i < o->iovcnt; i++)
				iov[cnt++] = o->iov[i];
		msg.msg_iovlen = (size_t)cnt;
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				c->wait_out = true;
				break;
			}
			tsr_debug("peer: send to %s: %s; closing the connection", c->peer_id,
				  strerror(errno));
			conn_close(c);
			return;
		}
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
				req_free(o);
				if (c->out_head == NULL)
					break;
			}
		}
	}
	if (c->state == CONN_DRAINING && c->out_head == NULL) {
		/*
		 * Closing now with unread input would send a reset, which may
		 * destroy our last reply (-EACCES) in the peer's receive queue:
		 * shut the write side and read until the peer closes.
		 */
		if (c->peer_eof || shutdown(c->fd, SHUT_WR) < 0) {
			conn_close(c);
			return;
		}
		c->state = CONN_LINGER;
	}
}

/* Queue req's reply (header from req->h and req->status); frees req once sent. */
static void reply(struct peer_sreq *req)
{
	struct peer_conn *c = req->conn;
	struct tsr_peer_hdr *h = &req->h;
	uint32_t plen = 0;

	if (c->state == CONN_CLOSED) {
		req_free(req);
		return;
	}
	h->flags = TSR_PEER_F_REPLY;
	h->status = req->status;
	h->data_crc = 0;
	if (h->opcode == TSR_PEER_HELLO || h->opcode == TSR_PEER_OPEN ||
	    h->opcode == TSR_PEER_SNAP || h->opcode == TSR_PEER_STAGE ||
	    ((h->opcode == TSR_PEER_STAGE_LIST || h->opcode == TSR_PEER_SNAP_LIST ||
	      h->opcode == TSR_PEER_STATS) &&
	     req->status != 0))
		h->length = 0;
	req->iov[0].iov_base = req->hdr;
	req->iov[0].iov_len = TSR_PEER_HDR_SIZE;
	req->iovcnt = 1;
	req->iov_idx = 0;
	if (req->status == 0 && h->opcode == TSR_PEER_READ) {
		plen = h->length;
		req->iov[1].iov_base = req->buf;
		count(&c->srv->stats.bytes_read, plen);
	} else if (req->status == 0 && h->opcode == TSR_PEER_SUMS) {
		plen = h->length / TSR_BLOCK_SIZE * 4;
		req->iov[1].iov_base = req->sums;
	} else if (req->status == 0 &&
		   (h->opcode == TSR_PEER_STAGE_LIST || h->opcode == TSR_PEER_SNAP_LIST ||
		    h->opcode == TSR_PEER_STATS)) {
		plen = h->length; /* 40 (72) bytes per entry, the counters: packed into buf */
		req->iov[1].iov_base = req->buf;
	}
	if (plen > 0) {
		req->iov[1].iov_len = plen;
		req->iovcnt = 2;
		h->data_crc = tsr_crc32c(0, req->iov[1].iov_base, plen);
	}
	tsr_peer_hdr_pack(h, req->hdr);
	req->next = NULL;
	if (c->out_tail != NULL)
		c->out_tail->next = req;
	else
		c->out_head = req;
	c->out_tail = req;
	conn_schedule(c);
}

static void reply_status(struct peer_sreq *req, int status)
{
	req->status = status;
	reply(req);
}

/* ---- store operations ---- */

static void retry_msg(struct tsr_worker *w, void *arg);

static void retry_schedule(struct peer_conn *c)
{
	if (c->retry_scheduled || c->state == CONN_CLOSED)
		return;
	if (tsr_worker_send(c->w, retry_msg, c) < 0) {
		/* the worker is stopping: answer what waits */
		while (c->retry_head != NULL) {
			struct peer_sreq *req = c->retry_head;

			c->retry_head = req->next;
			if (c->retry_head == NULL)
				c->retry_tail = NULL;
			reply_status(req, -ESHUTDOWN);
		}
		return;
	}
	c->retry_scheduled = true;
	conn_get(c);
}

static void retry_push(struct peer_conn *c, struct peer_sreq *req)
{
	req->next = NULL;
	if (c->retry_tail != NULL)
		c->retry_tail->next = req;
	else
		c->retry_head = req;
	c->retry_tail = req;
}

static void retry_run(struct peer_conn *c)
{
	while (c->retry_head != NULL && c->state != CONN_CLOSED) {
		struct peer_sreq *req = c->retry_head;
		int ret = req_submit(req);

		if (ret == -EAGAIN) {
			if (c->inflight_io == 0)
				retry_schedule(c);
			return;
		}
		c->retry_head = req->next;
		if (c->retry_head == NULL)
			c->retry_tail = NULL;
		if (ret < 0)
			reply_status(req, ret);
	}
	if (c->paused && conn_can_resume(c))
		conn_schedule(c);
}

static void retry_msg(struct tsr_worker *w, void *arg)
{
	struct peer_conn *c = arg;

	(void)w;
	c->retry_scheduled = false;
	retry_run(c);
	conn_put(c);
}

/* Submit (or resubmit) the next store operation of req: 0, -EAGAIN or -errno. */
static void req_io_done(void *arg, int status);

static int req_submit(struct peer_sreq *req)
{
	struct peer_conn *c = req->conn;
	struct tsr_svol *svol = c->slots[req->slot].svol;
	const struct tsr_peer_hdr *h = &req->h;
	int ret;

	switch (h->opcode) {
	case TSR_PEER_READ:
		if (h->flags & TSR_PEER_F_DIRECT) /* a scrub's check: the disk */
			ret = tsr_svol_read_direct(svol, c->io, h->offset, h->length, req->buf,
						   req_io_done, req);
		else
			ret = tsr_svol_read(svol, c->io, h->offset, h->length, req->buf,
					    req_io_done, req);
		break;
	case TSR_PEER_WRITE:
		ret = tsr_svol_write_sums(svol, c->io, h->offset, h->length, req->buf, req->wsums,
					  (h->flags & TSR_PEER_F_FUA) ? TSR_WRITE_FUA : 0,
					  req_io_done, req);
		break;
	case TSR_PEER_FLUSH:
		ret = tsr_svol_flush(svol, c->io, req_io_done, req);
		break;
	case TSR_PEER_TRIM:
		if (req->done) /* trimmed; FUA: make it durable */
			ret = tsr_svol_flush(svol, c->io, req_io_done, req);
		else
			ret = tsr_svol_trim(svol, c->io, h->offset, h->length, req_io_done, req);
		break;
	case TSR_PEER_WRITE_ZEROES:
		ret = tsr_svol_write_zeroes(svol, c->io, h->offset, h->length,
					    ((h->flags & TSR_PEER_F_FUA) ? TSR_WRITE_FUA : 0) |
						    ((h->flags & TSR_PEER_F_NO_HOLE) ?
							     TSR_WRITE_NO_HOLE : 0),
					    req_io_done, req);
		break;
	case TSR_PEER_STAGE:
		ret = tsr_svol_stage(svol, c->io, &req->stage, req->buf, req_io_done, req);
		break;
	case TSR_PEER_COMMIT:
		ret = tsr_svol_stage_commit(svol, c->io, h->offset, req_io_done, req);
		break;
	case TSR_PEER_RELEASE:
		ret = tsr_svol_stage_release(svol, c->io, h->offset, req_io_done, req);
		break;
	case TSR_PEER_SUMS:
		req->cur = h->length - req->done;
		if (req->cur > PEER_SUMS_PIECE)
			req->cur = PEER_SUMS_PIECE;
		/* sums check what is stored (scrub, resync): the disk, not the cache */
		ret = tsr_svol_read_direct(svol, c->io, h->offset + req->done, req->cur, req->buf,
					   req_io_done, req);
		break;
	default:
		ret = -EPROTO;
	}
	if (ret == 0)
		c->inflight_io++;
	return ret;
}

static void req_dispatch(struct peer_sreq *req)
{
	struct peer_conn *c = req->conn;
	int ret;

	if (c->retry_head != NULL) {
		retry_push(c, req);
		return;
	}
	ret = req_submit(req);
	if (ret == -EAGAIN) {
		retry_push(c, req);
		retry_schedule(c);
	} else if (ret < 0) {
		reply_status(req, ret);
	}
}

/* Operations that may simply run again after a late -EAGAIN: the plain
 * block operations (a SUMS goes on from the pieces it has, a TRIM with FUA
 * from its trim or its flush), and the staged writes, because of where the
 * store's journal (engine/store/stage.c) can meet a full queue late:
 *   STAGE    after waiting for a generation header, queueing its record
 *            (or the header, or the next wait) failed: nothing was reserved
 *            or indexed, so the STAGE goes again and appends once.  Its
 *            record's own write failing marks the journal failed before the
 *            callback, so the STAGE run again answers -EIO, appending nothing;
 *   COMMIT   its record is durable and the in-place write met the full queue
 *            (a copy on write): run again it finds the txn COMMITTED, reads
 *            the staged bytes back from the journal and writes them in place;
 *            its second COMMIT record replays as the first (the later seq
 *            sets the commit order, which is the order of the in-place
 *            writes).  The coordinator has no answer yet, so it releases
 *            nothing of the txn meanwhile;
 *   RELEASE  its data flush met the full queue: no record written, nothing
 *            forgotten; a release is idempotent anyway. */
static bool late_eagain_retries(uint8_t opcode)
{
	switch (opcode) {
	case TSR_PEER_READ:
	case TSR_PEER_WRITE:
	case TSR_PEER_FLUSH:
	case TSR_PEER_TRIM:
	case TSR_PEER_WRITE_ZEROES:
	case TSR_PEER_SUMS:
	case TSR_PEER_STAGE:
	case TSR_PEER_COMMIT:
	case TSR_PEER_RELEASE:
		return true;
	default:
		return false;
	}
}

static void req_io_done(void *arg, int status)
{
	struct peer_sreq *req = arg;
	struct peer_conn *c = req->conn;
	const struct tsr_peer_hdr *h = &req->h;
	int ret;

	c->inflight_io--;
	if (c->retry_head != NULL)
		retry_schedule(c);
	if (status == -EAGAIN && c->state != CONN_CLOSED && late_eagain_retries(h->opcode)) {
		/* the io queue was full for a step the store queued after the
		 * submit (a copy on write): nothing of it was answered, so it goes
		 * again like one that met the full queue at submit (else the
		 * coordinator would put this copy out of sync for it) */
		retry_push(c, req);
		retry_schedule(c);
		return;
	}
	if (status < 0 || c->state == CONN_CLOSED) {
		req->status = status < 0 ? status : -ESHUTDOWN;
		req_complete(req);
		return;
	}
	if (h->opcode == TSR_PEER_SUMS) {
		uint32_t i, n = req->cur / TSR_BLOCK_SIZE;
		uint32_t *out = (uint32_t *)req->sums + req->done / TSR_BLOCK_SIZE;

		for (i = 0; i < n; i++)
			out[i] = htole32(tsr_crc32c(0, req->buf + (size_t)i * TSR_BLOCK_SIZE,
						    TSR_BLOCK_SIZE));
		req->done += req->cur;
		if (req->done == h->length) {
			req_complete(req);
			return;
		}
	} else if (h->opcode == TSR_PEER_TRIM && (h->flags & TSR_PEER_F_FUA) && !req->done) {
		req->done = 1;
	} else {
		if (h->opcode == TSR_PEER_WRITE || h->opcode == TSR_PEER_STAGE)
			count(&c->srv->stats.bytes_written, h->length);
		req_complete(req);
		return;
	}
	ret = req_submit(req);
	if (ret == -EAGAIN) {
		retry_push(c, req);
		retry_schedule(c);
	} else if (ret < 0) {
		req->status = ret;
		req_complete(req);
	}
}

static void req_complete(struct peer_sreq *req)
{
	if (req->status < 0 && req->status != -ESHUTDOWN)
		tsr_debug("peer: %s at %llu+%u from %s: %s", peer_op_name(req->h.opcode),
			  (unsigned long long)req->h.offset, req->h.length, req->conn->peer_id,
			  strerror(-req->status));
	reply(req);
}

/* ---- frames ---- */

static void conn_begin_drain(struct peer_conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	c->state = CONN_DRAINING;
	if (c->payload_req != NULL) {
		struct peer_sreq *req = c->payload_req;

		c->payload_req = NULL;
		req_free(req);
	}
	conn_schedule(c);
}

/* Constant-time comparison: the time taken says nothing about the token. */
static bool token_equal(const uint8_t *a, const char *b)
{
	uint8_t diff = 0;
	unsigned i;

	for (i = 0; i < PEER_TOKEN_LEN; i++)
		diff |= a[i] ^ (uint8_t)b[i];
	return diff == 0;
}

static void handle_hello(struct peer_conn *c, struct peer_sreq *req, const uint8_t *p)
{
	uint32_t n = p[PEER_TOKEN_LEN], i;

	if (c->state != CONN_HELLO) {
		reply_status(req, -EINVAL);
		return;
	}
	if (tsr_crc32c(0, p, req->h.length) != req->h.data_crc ||
	    n != req->h.length - PEER_HELLO_MIN) {
		reply_status(req, -EBADMSG);
		conn_begin_drain(c);
		return;
	}
	if (!token_equal(p, c->srv->token)) {
		tsr_warn("peer: a node sent a wrong cluster token; closing the connection "
			 "(check --token on both nodes)");
		reply_status(req, -EACCES);
		conn_begin_drain(c);
		return;
	}
	for (i = 0; i < n; i++) { /* for logs: printable only */
		uint8_t ch = p[PEER_HELLO_MIN + i];

		c->peer_id[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	c->peer_id[n] = '\0';
	c->state = CONN_READY;
	tsr_debug("peer: node %s connected", c->peer_id[0] ? c->peer_id : "(unnamed)");
	/* peer.h: the HELLO reply's feature bits; test hook: answer as a build
	 * before them (a coordinator then sends no TSR_PEER_F_DIRECT) */
	req->h.epoch = getenv("TSR_TEST_PEER_NO_FEATURES") != NULL ? 0 : TSR_PEER_FEATURES;
	reply_status(req, 0);
}

static void handle_open(struct peer_conn *c, struct peer_sreq *req, const uint8_t *p)
{
	struct tsr_svol *svol = NULL;
	char name[PEER_OPEN_MAX + 1];
	char *at;
	uint64_t handle = 0;
	int ret;

	if (tsr_crc32c(0, p, req->h.length) != req->h.data_crc) {
		reply_status(req, -EBADMSG);
		return;
	}
	memcpy(name, p, req->h.length);
	name[req->h.length] = '\0';
	if (strlen(name) != req->h.length || !peer_open_name_ok(name)) {
		reply_status(req, -EINVAL);
		return;
	}
	at = strchr(name, '@');
	if (at != NULL) {
		/* a snapshot, read-only: nothing to fence, no epoch recorded */
		*at = '\0';
		ret = tsr_store_snap_open(c->srv->store, name, at + 1, &svol);
		*at = '@';
		if (ret == 0)
			ret = slot_add(c, svol, name, &handle);
		if (ret < 0) {
			if (ret != -ENOENT)
				tsr_warn("peer: open %s for %s: %s", name, c->peer_id,
					 strerror(-ret));
			tsr_svol_put(svol);
			reply_status(req, ret);
			return;
		}
		req->h.handle = handle;
		req->h.offset = tsr_svol_size(svol);
		reply_status(req, 0);
		return;
	}
	/*
	 * Debt: opening a volume and raising its epoch are blocking catalogue
	 * calls (SQLite, fsync) on the event loop.  OPEN is rare (once per
	 * volume attach and worker); move it to a control thread with
	 * tsr_worker_send back if it ever shows in latency.
	 */
	ret = tsr_store_vol_open(c->srv->store, name, &svol);
	if (ret == 0)
		ret = tsr_store_vol_set_epoch(c->srv->store, name, req->h.epoch);
	if (ret == -ESTALE)
		count(&c->srv->stats.stale_epoch, 1);
	if (ret == 0)
		ret = slot_add(c, svol, name, &handle);
	if (ret < 0) {
		if (ret != -ENOENT && ret != -ESTALE)
			tsr_warn("peer: open %s for %s: %s", name, c->peer_id, strerror(-ret));
		tsr_svol_put(svol);
		reply_status(req, ret);
		return;
	}
	req->h.handle = handle;
	req->h.offset = tsr_svol_size(svol);
	reply_status(req, 0);
}

/* A data op's checks before any payload handling: -EBADF, -ESTALE or 0. */
static int check_data_op(struct peer_conn *c, struct peer_sreq *req)
{
	struct peer_slot *s;
	uint32_t idx;

	s = slot_find(c, req->h.handle, &idx);
	if (s == NULL)
		return -EBADF;
	if (req->h.epoch < tsr_svol_epoch(s->svol)) {
		count(&c->srv->stats.stale_epoch, 1);
		return -ESTALE;
	}
	req->slot = idx;
	s->users++;
	return 0;
}

/*
 * Store calls off the event loop.  A REPAIR (WRITE with TSR_PEER_F_REPAIR
 * on a snapshot session: pread, pwrite, three fdatasyncs per block, six
 * with a pin, under the store's lock: measured 3-7 ms median, 20-30 ms p90,
 * 226 ms at worst on a loaded 2-core host), a SNAP (create, delete, clone:
 * catalogue transactions, layer files, fsync) and a SNAP_LIST (a catalogue
 * read) would stall every other connection of the worker, so each runs in a
 * thread of its own (rare: one per snapshot operation and copy, per block a
 * scrub found differing), and the answer comes back to the worker as a
 * message (off_deliver).  The request keeps its connection, buffer and slot
 * (so the svol) meanwhile, as a store I/O in flight does; the thread reads
 * only what off_start copied into the peer_off (and a REPAIR's header and
 * buffer, which nothing else touches until the answer).  The store calls
 * are safe from any thread (store->lock; the chain of an open volume is
 * published for lock-free readers).  A SNAP or SNAP_LIST also holds its
 * connection's later frames on that volume (conn->off_busy).
 */
enum off_kind {
	OFF_REPAIR,
	OFF_SNAP,
	OFF_SNAP_LIST,
};

struct peer_off {
	struct peer_sreq *req;
	struct peer_wctx *wctx;
	enum off_kind kind;
	struct tsr_svol *svol;            /* REPAIR: the snapshot session's */
	struct tsr_store *store;          /* SNAP, SNAP_LIST */
	char vol[PEER_OPEN_MAX + 1];      /* SNAP, SNAP_LIST: the session's volume */
	struct tsr_snap_req sr;           /* SNAP, parsed */
	uint64_t epoch;                   /* SNAP: the coordinator's, checked again at the call */
	bool missing_ok;                  /* SNAP DELETE: TSR_PEER_F_MISSING_OK */
	struct tsr_snap_info *si;         /* SNAP_LIST's answer (n entries) */
	size_t n;
	int status;
	struct peer_off *next;            /* wctx->off_undelivered */
};

static const char *snap_op_name(enum tsr_snap_op op)
{
	return op == TSR_SNAP_CREATE ? "create" : op == TSR_SNAP_DELETE ? "delete" : "clone";
}

/* Tests only: while the file named by $name exists (30 s at most), an
 * offloaded store call waits before it runs ($TSR_TEST_PEER_REPAIR_HOLD_FILE:
 * a REPAIR; $TSR_TEST_PEER_SNAP_HOLD_FILE: a SNAP or SNAP_LIST). */
static void off_test_hold(const char *name)
{
	tsr_test_hold_file(name, false);
}

/* The store call of o (in its thread, or on the loop when no thread). */
static void off_run(struct peer_off *o)
{
	const struct tsr_peer_hdr *h = &o->req->h;

	switch (o->kind) {
	case OFF_REPAIR:
		off_test_hold("TSR_TEST_PEER_REPAIR_HOLD_FILE");
		o->status = tsr_svol_snap_repair(o->svol, h->epoch, h->offset, h->length,
						 o->req->buf);
		break;
	case OFF_SNAP:
		off_test_hold("TSR_TEST_PEER_SNAP_HOLD_FILE");
		/* the epoch again, under the store's lock: checked on the loop
		 * (check_data_op), a newer coordinator may have opened the
		 * volume on another connection since (review 14, finding 5) */
		switch (o->sr.op) {
		case TSR_SNAP_CREATE:
			o->status = tsr_store_snap_create_epoch(o->store, o->vol, o->sr.snap,
								o->sr.size, o->epoch);
			break;
		case TSR_SNAP_DELETE:
			o->status = tsr_store_snap_delete_epoch(o->store, o->vol, o->sr.snap,
								o->missing_ok, o->epoch);
			break;
		case TSR_SNAP_CLONE:
			o->status =
			    tsr_store_vol_clone_epoch(o->store, o->sr.clone, o->vol,
						      o->sr.snap[0] ? o->sr.snap : NULL, o->epoch);
			break;
		default:
			o->status = -EINVAL;
		}
		break;
	case OFF_SNAP_LIST:
		off_test_hold("TSR_TEST_PEER_SNAP_HOLD_FILE");
		o->status = tsr_store_snap_list(o->store, o->vol, &o->si, &o->n);
		break;
	}
}

/* SNAP_LIST's entries packed into req->buf as the reply's payload. */
static int snap_list_pack(struct peer_sreq *req, const struct tsr_snap_info *si, size_t n)
{
	struct tsr_peer_snap_entry *e;
	int ret;

	if (n > TSR_PEER_SNAP_LIST_MAX)
		return -EOVERFLOW;
	if (n == 0)
		return 0;
	e = calloc(n, sizeof(*e));
	if (e == NULL)
		return -ENOMEM;
	ret = req_buf(req, (uint32_t)(n * TSR_PEER_SNAP_ENTRY));
	if (ret == 0) {
		for (size_t i = 0; i < n; i++) {
			snprintf(e[i].name, sizeof(e[i].name), "%s", si[i].name);
			e[i].size = si[i].size;
		}
		tsr_peer_snap_list_pack(e, n, req->buf);
	}
	free(e);
	return ret;
}

/* On the worker: the offloaded call's answer (a closed connection: freed). */
static void off_deliver(struct tsr_worker *w, void *arg)
{
	struct peer_off *o = arg;
	struct peer_sreq *req = o->req;
	struct peer_conn *c = req->conn;
	int ret = o->status;

	(void)w;
	switch (o->kind) {
	case OFF_REPAIR:
		if (ret == -ESTALE)
			count(&c->srv->stats.stale_epoch, 1);
		else if (ret == 0)
			count(&c->srv->stats.bytes_written, req->h.length);
		break;
	case OFF_SNAP:
		if (ret == -ESTALE)
			count(&c->srv->stats.stale_epoch, 1);
		if (ret < 0 && ret != -EEXIST && ret != -ENOENT)
			tsr_warn("peer: snap %s of %s@%s%s%s for %s: %s", snap_op_name(o->sr.op),
				 o->vol, o->sr.snap, o->sr.clone[0] ? " to " : "", o->sr.clone,
				 c->peer_id, strerror(-ret));
		break;
	case OFF_SNAP_LIST:
		if (ret == 0 && c->state != CONN_CLOSED)
			ret = snap_list_pack(req, o->si, o->n);
		req->h.length = ret == 0 ? (uint32_t)(o->n * TSR_PEER_SNAP_ENTRY) : 0;
		free(o->si);
		break;
	}
	if (o->kind != OFF_REPAIR) { /* the frames held behind it go on */
		c->off_busy = false;
		if (c->off_held) {
			c->off_held = false;
			if (c->paused)
				conn_schedule(c);
		}
	}
	free(o);
	reply_status(req, ret);
}

/* Tests only: $TSR_TEST_PEER_OFF_SEND_ENOMEM=N: an offloaded call's first
 * N sends of its answer count as -ENOMEM (tsr_worker_send out of memory). */
static unsigned off_test_enomem(void)
{
	const char *v = getenv("TSR_TEST_PEER_OFF_SEND_ENOMEM");

	return v != NULL ? (unsigned)strtoul(v, NULL, 10) : 0;
}

/* The thread: the store call, then the answer to the worker; o belongs to
 * the worker as soon as the message is queued.  Out of memory for the
 * message (-ENOMEM), it tries again (every ms, then every 10 ms after 1 s)
 * as long as the worker runs: its answer must not wait for the worker's
 * stop (review 13b, finding 4: after 1 s it was parked until then, and the
 * client waited out its timeout).  Once the worker stops (-ESHUTDOWN) or
 * its stop hook drains (off_draining), the answer is parked for off_drain. */
static void *off_main(void *arg)
{
	struct peer_off *o = arg;
	struct peer_wctx *wctx = o->wctx;
	unsigned fake_enomem = off_test_enomem();
	int ret;

	tsr_log_set_thread_name(o->kind == OFF_REPAIR ? "peer-repair" : "peer-snap");
	off_run(o);
	ret = tsr_worker_send_retry(wctx->w, off_deliver, o, &wctx->off_draining, fake_enomem,
				    "peer: the answer of a store call");
	if (ret == 0 && fake_enomem > 0)
		tsr_info("peer: test: an answer sent after %u failed tries", fake_enomem);
	pthread_mutex_lock(&wctx->off_lock);
	if (ret < 0) { /* the worker is stopping: its stop hook answers it */
		o->next = wctx->off_undelivered;
		wctx->off_undelivered = o;
	}
	if (--wctx->off_out == 0)
		pthread_cond_broadcast(&wctx->off_idle);
	pthread_mutex_unlock(&wctx->off_lock);
	return NULL;
}

/* From the worker's stop hook (connections closed) or the server's
 * destroy: wait for the offloaded calls, answer those not delivered. */
static void off_drain(struct peer_wctx *wctx)
{
	struct peer_off *o;

	pthread_mutex_lock(&wctx->off_lock);
	__atomic_store_n(&wctx->off_draining, true, __ATOMIC_RELEASE);
	while (wctx->off_out > 0)
		pthread_cond_wait(&wctx->off_idle, &wctx->off_lock);
	o = wctx->off_undelivered;
	wctx->off_undelivered = NULL;
	pthread_mutex_unlock(&wctx->off_lock);
	while (o != NULL) {
		struct peer_off *next = o->next;

		off_deliver(wctx->w, o);
		o = next;
	}
}

/* o's store call in a thread of its own: 0, or -errno (no thread; nothing
 * started, o still the caller's). */
static int off_start(struct peer_off *o)
{
	struct peer_wctx *wctx = o->wctx;
	pthread_attr_t attr;
	pthread_t t;
	int ret;

	pthread_mutex_lock(&wctx->off_lock);
	wctx->off_out++;
	pthread_mutex_unlock(&wctx->off_lock);
	ret = pthread_attr_init(&attr);
	if (ret == 0) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		ret = pthread_create(&t, &attr, off_main, o);
		pthread_attr_destroy(&attr);
	}
	if (ret != 0) {
		pthread_mutex_lock(&wctx->off_lock);
		if (--wctx->off_out == 0)
			pthread_cond_broadcast(&wctx->off_idle);
		pthread_mutex_unlock(&wctx->off_lock);
		return -ret;
	}
	return 0;
}

static struct peer_off *off_new(struct peer_sreq *req, enum off_kind kind)
{
	struct peer_off *o = calloc(1, sizeof(*o));

	if (o == NULL)
		return NULL;
	o->req = req;
	o->wctx = req->conn->wctx;
	o->kind = kind;
	o->store = req->conn->srv->store;
	return o;
}

/* Tests only: $TSR_TEST_PEER_SNAP_INLINE set: SNAP and SNAP_LIST run on the
 * event loop, as before session 14 (the A/B of peer_offload_ut). */
static bool off_test_inline(void)
{
	const char *v = getenv("TSR_TEST_PEER_SNAP_INLINE");

	return v != NULL && v[0] != '\0' && v[0] != '0';
}

/* A SNAP or SNAP_LIST o of the connection's volume vol: in a thread, the
 * connection's later frames on vol held until the answer; without a
 * thread, on the loop as before (a few ms stall rather than a failure that
 * puts the copy out of sync). */
static void off_catalog_call(struct peer_conn *c, struct peer_off *o)
{
	snprintf(o->vol, sizeof(o->vol), "%s", c->slots[o->req->slot].name);
	c->off_busy = true;
	snprintf(c->off_vol, sizeof(c->off_vol), "%s", o->vol);
	if (off_test_inline() || off_start(o) < 0) {
		off_run(o);
		off_deliver(c->w, o);
	}
}

/*
 * SNAP (payload p, all buffered): the store call on the session's volume,
 * after the epoch check of a data op, in a thread (off_catalog_call), which
 * checks the epoch again under the store's lock (a newer coordinator's OPEN
 * on another connection may come in between: -ESTALE, nothing done).  The
 * coordinator drained its writes to this copy before sending it (the gate;
 * make-ups wait for their writes' answers), so the store's -EBUSY check
 * holds, and it sends that volume nothing more before the answer; were a
 * frame on the volume to follow, it waits for the answer (conn->off_busy).
 */
static void handle_snap(struct peer_conn *c, struct peer_sreq *req, const uint8_t *p)
{
	struct tsr_snap_req sr;
	struct peer_off *o;
	const char *test;
	int ret;

	ret = check_data_op(c, req);
	if (ret < 0) {
		reply_status(req, ret);
		return;
	}
	if (tsr_crc32c(0, p, req->h.length) != req->h.data_crc) {
		reply_status(req, -EBADMSG);
		return;
	}
	ret = tsr_peer_snap_parse(p, req->h.length, &sr);
	/* tests only: answer a sized CREATE as a build before the size field
	 * (f7e535e) did: its parser refused the longer payload */
	test = getenv("TSR_TEST_PEER_SNAP_UNSIZED");
	if (ret == 0 && sr.size != 0 && test != NULL && test[0] != '\0' && test[0] != '0')
		ret = -EPROTO;
	if (ret == 0 && sr.op != TSR_SNAP_CREATE && sr.op != TSR_SNAP_DELETE &&
	    sr.op != TSR_SNAP_CLONE)
		ret = -EINVAL;
	if (ret < 0) {
		reply_status(req, ret);
		return;
	}
	o = off_new(req, OFF_SNAP);
	if (o == NULL) {
		reply_status(req, -ENOMEM);
		return;
	}
	o->sr = sr;
	o->epoch = req->h.epoch;
	o->missing_ok = (req->h.flags & TSR_PEER_F_MISSING_OK) != 0;
	off_catalog_call(c, o);
}

static void handle_repair(struct peer_sreq *req)
{
	struct peer_conn *c = req->conn;
	struct tsr_svol *svol = c->slots[req->slot].svol;
	struct peer_off *o;

	if (!tsr_svol_readonly(svol)) { /* a head session: written with plain WRITEs */
		reply_status(req, -EINVAL);
		return;
	}
	o = off_new(req, OFF_REPAIR);
	if (o == NULL) {
		reply_status(req, -ENOMEM);
		return;
	}
	o->svol = svol;
	if (off_start(o) < 0) { /* no thread: answer -EAGAIN, the scrub counts it unrepaired */
		free(o);
		reply_status(req, -EAGAIN);
	}
}

/*
 * The payload's CRC of a plain WRITE, in the same one pass as its blocks'
 * own CRCs, which the store then takes for its entries instead of reading
 * the data a second time (tsr_svol_write_sums): they are exactly what was
 * checked against data_crc.  Without a buffer for them (more than one
 * block, no memory), the plain check and the store computes its own.
 */
static uint32_t write_payload_crc(struct peer_sreq *req)
{
	uint32_t n = req->h.length / TSR_BLOCK_SIZE, *sums = &req->sum1;

	if (n > 1) {
		req->sums_class = buf_class((size_t)n * 4);
		req->sums = buf_get(req->conn, req->sums_class);
		if (req->sums == NULL)
			return tsr_crc32c(0, req->buf, req->h.length);
		sums = (uint32_t *)req->sums;
	}
	tsr_crc32c_blocks(req->buf, n, sums);
	req->wsums = sums;
	return tsr_crc32c_join_blocks(sums, n);
}

/* A complete WRITE payload (STAGE: its data after the prefix) is in req->buf. */
static void write_ready(struct peer_sreq *req)
{
	uint32_t seed = 0, crc;

	if (req->h.opcode == TSR_PEER_STAGE) /* data_crc covers prefix and data */
		seed = tsr_crc32c(0, req->stage_prefix, TSR_PEER_STAGE_PREFIX);
	if (req->h.opcode == TSR_PEER_WRITE && !(req->h.flags & TSR_PEER_F_REPAIR))
		crc = write_payload_crc(req);
	else
		crc = tsr_crc32c(seed, req->buf, req->h.length);
	if (crc != req->h.data_crc) {
		tsr_warn("peer: %s at %llu+%u from %s: payload checksum mismatch",
			 peer_op_name(req->h.opcode), (unsigned long long)req->h.offset,
			 req->h.length, req->conn->peer_id);
		reply_status(req, -EBADMSG);
		return;
	}
	if (req->h.opcode == TSR_PEER_WRITE && (req->h.flags & TSR_PEER_F_REPAIR)) {
		handle_repair(req);
		return;
	}
	req_dispatch(req);
}

/* STAGE_LIST on the session's volume (epoch checked): the live entries,
 * packed into req->buf as the reply's payload.  Synchronous: a copy of the
 * journal's index under its lock. */
static void handle_stage_list(struct peer_conn *c, struct peer_sreq *req)
{
	struct tsr_stage_entry *v = NULL;
	size_t n = 0;
	int ret;

	ret = tsr_svol_stage_list(c->slots[req->slot].svol, &v, &n);
	if (ret == 0 && n > TSR_STAGE_MAX_ENTRIES)
		ret = -EOVERFLOW; /* cannot be: the journal holds no more */
	if (ret == 0 && n > 0)
		ret = req_buf(req, n * TSR_PEER_STAGE_ENTRY);
	if (ret == 0 && n > 0)
		tsr_peer_stage_list_pack(v, n, req->buf);
	free(v);
	req->h.length = ret == 0 ? (uint32_t)(n * TSR_PEER_STAGE_ENTRY) : 0;
	reply_status(req, ret);
}

/*
 * SNAP_LIST on a head session (epoch checked): the volume's snapshots,
 * packed into req->buf as the reply's payload (off_deliver).  The
 * catalogue read runs in a thread, as SNAP (off_catalog_call); rare (a
 * scrub of a volume whose coordinator holds no copy asks once).
 */
static void handle_snap_list(struct peer_conn *c, struct peer_sreq *req)
{
	struct peer_off *o;

	if (tsr_svol_readonly(c->slots[req->slot].svol)) { /* a snapshot session */
		req->h.length = 0;
		reply_status(req, -EINVAL);
		return;
	}
	o = off_new(req, OFF_SNAP_LIST);
	if (o == NULL) {
		req->h.length = 0;
		reply_status(req, -ENOMEM);
		return;
	}
	off_catalog_call(c, o);
}

/* STATS on a session (epoch checked): the store counters of its volume,
 * packed into req->buf as the reply's payload (peer.h).  Synchronous: a
 * few atomic loads. */
static void handle_stats(struct peer_sreq *req)
{
	struct tsr_svol_stats ss;
	struct tsr_peer_stats st;
	int ret;

	ret = req_buf(req, TSR_PEER_STATS_MAX);
	if (ret == 0) {
		tsr_svol_get_stats(req->conn->slots[req->slot].svol, &ss);
		st.crc_errors = ss.crc_errors;
		st.cached_reads = ss.cached_reads;
		req->h.length = tsr_peer_stats_pack(&st, req->buf);
	}
	reply_status(req, ret);
}

/*
 * One parsed header at rbuf[rpos]; its payload (if any) is not consumed.
 * Returns false when the frame cannot be handled yet (HELLO/OPEN payload not
 * all buffered), true once it consumed the header (and what it could).
 */
static bool handle_frame(struct peer_conn *c, const struct tsr_peer_hdr *h)
{
	size_t avail = c->rlen - c->rpos - TSR_PEER_HDR_SIZE;
	const uint8_t *payload = c->rbuf + c->rpos + TSR_PEER_HDR_SIZE;
	struct peer_sreq *req;
	int ret;

	if ((h->opcode == TSR_PEER_HELLO || h->opcode == TSR_PEER_OPEN ||
	     h->opcode == TSR_PEER_SNAP) && avail < h->length)
		return false; /* small payloads: wait until all of it is here */
	if (h->opcode == TSR_PEER_STAGE && !(h->flags & TSR_PEER_F_REPLY) &&
	    avail < TSR_PEER_STAGE_PREFIX)
		return false; /* STAGE: its prefix buffered, the data may stream */
	count(&c->srv->stats.frames, 1);
	c->rpos += TSR_PEER_HDR_SIZE;
	req = req_alloc(c, h);
	if (req == NULL) {
		conn_close(c); /* a missing reply would hang the client */
		return true;
	}
	if (h->flags & TSR_PEER_F_REPLY) {
		/* we never send requests: a reply is a confused peer */
		count(&c->srv->stats.bad_frames, 1);
		tsr_warn("peer: unexpected reply frame from %s; closing the connection",
			 c->peer_id);
		req_free(req);
		conn_close(c);
		return true;
	}
	if (h->opcode == TSR_PEER_HELLO) {
		c->rpos += h->length;
		handle_hello(c, req, payload);
		return true;
	}
	if (c->state == CONN_HELLO) {
		tsr_warn("peer: %s before HELLO; closing the connection", peer_op_name(h->opcode));
		c->discard = h->payload_len;
		reply_status(req, -EACCES);
		conn_begin_drain(c);
		return true;
	}
	switch (h->opcode) {
	case TSR_PEER_OPEN:
		c->rpos += h->length;
		handle_open(c, req, payload);
		return true;
	case TSR_PEER_PING:
		reply_status(req, 0);
		return true;
	case TSR_PEER_SNAP:
		c->rpos += h->length;
		handle_snap(c, req, payload);
		return true;
	case TSR_PEER_CLOSE: {
		uint32_t idx;
		struct peer_slot *s = slot_find(c, h->handle, &idx);

		if (s == NULL) {
			reply_status(req, -EBADF);
			return true;
		}
		s->closed = true;
		s->users++; /* released with this request: puts the svol when idle */
		req->slot = idx;
		reply_status(req, 0);
		return true;
	}
	default:
		break;
	}
	ret = check_data_op(c, req);
	if (ret == 0 && h->opcode >= TSR_PEER_STAGE && h->opcode <= TSR_PEER_STAGE_LIST &&
	    tsr_svol_readonly(c->slots[req->slot].svol))
		ret = -EROFS; /* a snapshot session: no staged writes */
	if (ret == 0 && h->opcode == TSR_PEER_STAGE_LIST) {
		handle_stage_list(c, req);
		return true;
	}
	if (ret == 0 && h->opcode == TSR_PEER_SNAP_LIST) {
		handle_snap_list(c, req);
		return true;
	}
	if (ret == 0 && h->opcode == TSR_PEER_STATS) {
		handle_stats(req);
		return true;
	}
	if (ret == 0 && h->opcode == TSR_PEER_STAGE) {
		memcpy(req->stage_prefix, payload, TSR_PEER_STAGE_PREFIX);
		c->rpos += TSR_PEER_STAGE_PREFIX;
		payload += TSR_PEER_STAGE_PREFIX;
		avail -= TSR_PEER_STAGE_PREFIX;
		ret = tsr_peer_stage_parse(h, req->stage_prefix, &req->stage);
		if (ret == 0)
			ret = req_buf(req, h->length);
		if (ret < 0) {
			c->discard = h->length; /* the prefix is consumed */
			reply_status(req, ret);
			return true;
		}
	} else if (ret == 0 && h->opcode == TSR_PEER_SUMS) {
		uint32_t piece = h->length < PEER_SUMS_PIECE ? h->length : PEER_SUMS_PIECE;

		ret = req_buf(req, piece);
		if (ret == 0) {
			req->sums_class = buf_class(h->length / TSR_BLOCK_SIZE * 4);
			req->sums = buf_get(c, req->sums_class);
			if (req->sums == NULL)
				ret = -ENOMEM;
		}
	} else if (ret == 0 && (h->opcode == TSR_PEER_READ || h->opcode == TSR_PEER_WRITE)) {
		ret = req_buf(req, h->length);
	}
	if (ret < 0) {
		c->discard = h->payload_len; /* keep the stream in sync */
		reply_status(req, ret);
		return true;
	}
	if (h->opcode == TSR_PEER_WRITE || h->opcode == TSR_PEER_STAGE) {
		uint32_t n = avail < h->length ? (uint32_t)avail : h->length;

		memcpy(req->buf, payload, n);
		c->rpos += n;
		req->have = n;
		if (req->have == h->length)
			write_ready(req);
		else
			c->payload_req = req; /* conn_read fills the rest */
		return true;
	}
	req_dispatch(req);
	return true;
}

/* Whether frame h waits for the connection's offloaded SNAP or SNAP_LIST
 * (conn->off_busy): one on its volume (a head or snapshot session of it),
 * another SNAP or SNAP_LIST (one at a time), or an OPEN (a session on what
 * the SNAP makes).  HELLO, PING, a reply (refused) and an unknown handle
 * (refused) pass. */
static bool off_waits(struct peer_conn *c, const struct tsr_peer_hdr *h)
{
	struct peer_slot *s;
	uint32_t idx;
	size_t n;

	if (!c->off_busy || (h->flags & TSR_PEER_F_REPLY))
		return false;
	switch (h->opcode) {
	case TSR_PEER_HELLO:
	case TSR_PEER_PING:
		return false;
	case TSR_PEER_OPEN:
	case TSR_PEER_SNAP:
	case TSR_PEER_SNAP_LIST:
		return true;
	default:
		break;
	}
	s = slot_find(c, h->handle, &idx);
	if (s == NULL)
		return false;
	n = strlen(c->off_vol);
	return strncmp(s->name, c->off_vol, n) == 0 && (s->name[n] == '\0' || s->name[n] == '@');
}

static void bad_frame(struct peer_conn *c, int err)
{
	count(&c->srv->stats.bad_frames, 1);
	tsr_warn("peer: bad frame header from %s: %s; closing the connection",
		 c->peer_id[0] ? c->peer_id : "a node", strerror(-err));
	conn_close(c);
}

/* Parse everything complete in rbuf. */
static void conn_process(struct peer_conn *c)
{
	while (!c->paused && c->state != CONN_CLOSED) {
		size_t avail = c->rlen - c->rpos;
		struct tsr_peer_hdr h;
		int ret;

		if (c->discard > 0) {
			size_t n = avail < c->discard ? avail : c->discard;

			c->rpos += n;
			c->discard -= (uint32_t)n;
			if (c->discard > 0)
				return;
			continue;
		}
		if (c->payload_req != NULL || c->state == CONN_DRAINING)
			return;
		if (avail < TSR_PEER_HDR_SIZE)
			return;
		if (!conn_can_resume(c)) {
			c->paused = true;
			return;
		}
		ret = tsr_peer_hdr_parse(c->rbuf + c->rpos, &h);
		if (ret < 0) {
			bad_frame(c, ret);
			return;
		}
		if (off_waits(c, &h)) { /* resumed by the SNAP's answer (off_deliver) */
			c->off_held = true;
			c->paused = true;
			return;
		}
		if (!handle_frame(c, &h))
			return;
	}
}

/* Draining or lingering: input is thrown away, within a bound. */
static void conn_discard_input(struct peer_conn *c)
{
	for (;;) {
		ssize_t n = read(c->fd, c->rbuf, PEER_RBUF_SIZE);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0 || (c->discarded += (size_t)n) > PEER_LINGER_MAX) {
			if (n == 0)
				c->peer_eof = true;
			if (c->state == CONN_LINGER || n < 0 || c->discarded > PEER_LINGER_MAX)
				conn_close(c);
			return;
		}
	}
}

static void conn_read(struct peer_conn *c)
{
	for (;;) {
		struct iovec iov[2];
		size_t want, space;
		int cnt = 0;
		ssize_t n;

		if (c->state == CONN_DRAINING || c->state == CONN_LINGER) {
			conn_discard_input(c);
			return;
		}
		if (c->paused || (c->state != CONN_HELLO && c->state != CONN_READY))
			return;
		if (c->rpos == c->rlen) {
			c->rpos = c->rlen = 0;
		} else if (c->rpos > 0 && PEER_RBUF_SIZE - c->rlen < PEER_RBUF_SIZE / 2) {
			memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
			c->rlen -= c->rpos;
			c->rpos = 0;
		}
		if (c->payload_req != NULL) {
			struct peer_sreq *req = c->payload_req;

			iov[cnt].iov_base = req->buf + req->have;
			iov[cnt++].iov_len = req->h.length - req->have;
		}
		space = PEER_RBUF_SIZE - c->rlen;
		if (space > 0) {
			iov[cnt].iov_base = c->rbuf + c->rlen;
			iov[cnt++].iov_len = space;
		}
		if (cnt == 0)
			return;
		want = iov[0].iov_len + (cnt > 1 ? iov[1].iov_len : 0);
		n = readv(c->fd, iov, cnt);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			tsr_debug("peer: read from %s: %s; closing the connection", c->peer_id,
				  strerror(errno));
			conn_close(c);
			return;
		}
		if (n == 0) {
			/* the coordinator is gone: finish, send what it may still read */
			c->peer_eof = true;
			conn_begin_drain(c);
			return;
		}
		if (c->payload_req != NULL) {
			struct peer_sreq *req = c->payload_req;
			size_t need = req->h.length - req->have;
			size_t m = (size_t)n < need ? (size_t)n : need;

			req->have += (uint32_t)m;
			c->rlen += (size_t)n - m;
			if (req->have == req->h.length) {
				c->payload_req = NULL;
				write_ready(req);
			}
		} else {
			c->rlen += (size_t)n;
		}
		conn_process(c);
		if ((size_t)n < want)
			return;
	}
}

/* ---- scheduling, events, close ---- */

static void conn_update_events(struct peer_conn *c)
{
	uint32_t ev = 0;

	if (c->fd < 0)
		return;
	if ((!c->paused && (c->state == CONN_HELLO || c->state == CONN_READY)) ||
	    ((c->state == CONN_DRAINING || c->state == CONN_LINGER) && !c->peer_eof))
		ev |= EPOLLIN;
	if (c->wait_out)
		ev |= EPOLLOUT;
	if (ev != c->events && tsr_worker_modify(c->w, c->fd, ev) == 0)
		c->events = ev;
}

static void conn_deferred(struct tsr_worker *w, void *arg)
{
	struct peer_conn *c = arg;

	(void)w;
	c->flush_scheduled = false;
	if (c->state != CONN_CLOSED) {
		if (c->paused && conn_can_resume(c)) {
			c->paused = false;
			conn_process(c);
			if (!c->paused && c->state != CONN_CLOSED)
				conn_read(c); /* what arrived while paused */
		}
		conn_flush(c);
		conn_update_events(c);
	}
	conn_put(c);
}

static void conn_schedule(struct peer_conn *c)
{
	if (c->flush_scheduled || c->state == CONN_CLOSED)
		return;
	if (tsr_worker_defer(c->w, conn_deferred, c) < 0) {
		conn_flush(c);
		return;
	}
	c->flush_scheduled = true;
	conn_get(c);
}

static void conn_on_event(void *arg, uint32_t events)
{
	struct peer_conn *c = arg;

	conn_get(c);
	if ((events & (EPOLLHUP | EPOLLERR)) && c->paused) {
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

static void conn_close(struct peer_conn *c)
{
	struct peer_sreq *req;

	if (c->state == CONN_CLOSED)
		return;
	conn_get(c);
	c->state = CONN_CLOSED;
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
	while ((req = c->out_head) != NULL) {
		c->out_head = req->next;
		req_free(req);
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

/* ---- the server ---- */

static void wctx_on_stop(struct tsr_worker *w, void *arg)
{
	struct peer_wctx *wctx = arg;

	(void)w;
	wctx->stopped = true;
	while (wctx->conns != NULL)
		conn_close(wctx->conns);
	off_drain(wctx);
}

static void wctx_free(struct peer_wctx *wctx)
{
	if (wctx == NULL)
		return;
	off_drain(wctx); /* none left once its worker stopped */
	pthread_mutex_destroy(&wctx->off_lock);
	pthread_cond_destroy(&wctx->off_idle);
	free(wctx);
}

static struct peer_wctx *server_wctx(struct tsr_peer_server *srv, struct tsr_worker *w)
{
	unsigned i = tsr_worker_index(w);
	struct peer_wctx *wctx;

	if (i >= PEER_SRV_MAX_WORKERS) {
		tsr_error("peer: worker%u: index above %u, not served", i, PEER_SRV_MAX_WORKERS);
		return NULL;
	}
	/* a restarted worker may reuse a stopped one's address: never its context */
	if (srv->wctx[i] != NULL && srv->wctx[i]->w == w && !srv->wctx[i]->stopped)
		return srv->wctx[i];
	if (srv->wctx[i] != NULL && !srv->wctx[i]->stopped)
		return NULL; /* two live workers with one index: not ours to serve */
	wctx_free(srv->wctx[i]); /* a stopped worker of the same index */
	wctx = calloc(1, sizeof(*wctx));
	srv->wctx[i] = wctx;
	if (wctx == NULL)
		return NULL;
	wctx->srv = srv;
	wctx->w = w;
	pthread_mutex_init(&wctx->off_lock, NULL);
	pthread_cond_init(&wctx->off_idle, NULL);
	if (tsr_worker_on_stop(w, wctx_on_stop, wctx) < 0) {
		wctx_free(wctx);
		srv->wctx[i] = NULL;
		return NULL;
	}
	return wctx;
}

int tsr_peer_server_create(const struct tsr_peer_server_opts *opts,
			   struct tsr_peer_server **out)
{
	struct tsr_peer_server *srv;

	if (opts == NULL || opts->store == NULL || opts->token == NULL ||
	    strlen(opts->token) != PEER_TOKEN_LEN)
		return -EINVAL;
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return -ENOMEM;
	srv->store = opts->store;
	memcpy(srv->token, opts->token, PEER_TOKEN_LEN);
	snprintf(srv->node_id, sizeof(srv->node_id), "%s", opts->node_id ? opts->node_id : "");
	*out = srv;
	return 0;
}

void tsr_peer_server_destroy(struct tsr_peer_server *srv)
{
	unsigned i;

	if (srv == NULL)
		return;
	for (i = 0; i < PEER_SRV_MAX_WORKERS; i++) {
		if (srv->wctx[i] != NULL && srv->wctx[i]->conns != NULL)
			tsr_warn("peer: server destroyed with connections open on worker%u", i);
		wctx_free(srv->wctx[i]);
	}
	free(srv);
}

void tsr_peer_server_get_stats(struct tsr_peer_server *srv, struct tsr_peer_server_stats *out)
{
	out->connections_open = __atomic_load_n(&srv->stats.connections_open, __ATOMIC_RELAXED);
	out->frames = __atomic_load_n(&srv->stats.frames, __ATOMIC_RELAXED);
	out->bytes_written = __atomic_load_n(&srv->stats.bytes_written, __ATOMIC_RELAXED);
	out->bytes_read = __atomic_load_n(&srv->stats.bytes_read, __ATOMIC_RELAXED);
	out->stale_epoch = __atomic_load_n(&srv->stats.stale_epoch, __ATOMIC_RELAXED);
	out->bad_frames = __atomic_load_n(&srv->stats.bad_frames, __ATOMIC_RELAXED);
}

void tsr_peer_conn_start(struct tsr_peer_server *srv, struct tsr_worker *w, int fd)
{
	struct peer_wctx *wctx = server_wctx(srv, w);
	struct peer_conn *c;
	int one = 1, ret, flags;

	if (wctx == NULL || wctx->stopped)
		goto err_fd;
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		tsr_error("peer: new connection: nonblocking: %s", strerror(errno));
		goto err_fd;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		goto err_fd;
	c->rbuf = tsr_alloc_aligned(PEER_RBUF_SIZE);
	if (c->rbuf == NULL) {
		free(c);
		goto err_fd;
	}
	c->wctx = wctx;
	c->srv = srv;
	c->w = w;
	c->io = tsr_worker_io(w);
	c->fd = fd;
	c->refs = 1;
	c->state = CONN_HELLO;
	c->events = EPOLLIN;
	count(&srv->stats.connections_open, 1);
	ret = tsr_worker_watch(w, fd, EPOLLIN, conn_on_event, c);
	if (ret < 0) {
		tsr_error("peer: new connection: watch: %s", strerror(-ret));
		c->fd = -1;
		c->state = CONN_CLOSED;
		conn_put(c);
		goto err_fd;
	}
	c->next = wctx->conns;
	if (c->next != NULL)
		c->next->prev = c;
	wctx->conns = c;
	/* tesserad peeked at the magic: the first frame may be complete already
	 * (and may be bad: reading can close c; our reference keeps it) */
	conn_get(c);
	conn_read(c);
	if (c->state != CONN_CLOSED)
		conn_update_events(c);
	conn_put(c);
	return;
err_fd:
	close(fd);
}
