/*
 * Peer protocol, coordinator side: one TCP connection from a worker thread
 * to one remote node's peer server (contract in include/tessera/peer.h).
 *
 * Requests are pipelined.  Each one is a struct peer_creq taken from a free
 * list (no malloc per request once warm), registered in a table indexed by
 * the low bits of its seq (the high bits are a generation, so a late or
 * forged reply never matches a recycled slot), queued for sending, and
 * linked in submission order on the pending list, whose head is the oldest
 * request: the periodic timer fails the connection when it is older than
 * timeout_ms.
 *
 * Output: frames are gathered as iovecs (the packed header inline in the
 * request, the caller's WRITE buffer pointed at, never copied) and sent with
 * one sendmsg per loop pass (tsr_worker_defer); when the socket is full we
 * wait for EPOLLOUT.  Input: a 256 KiB buffer parsed in place; a READ or
 * SUMS reply's payload is copied from it, and the rest of a large payload is
 * read straight into the caller's buffer.
 *
 * Failure (connect refused, reset, EOF, timeout, bad frame, refused HELLO):
 * the client is marked failed, on_fail runs once, then every request still
 * known completes with the cause; later calls return -ENOTCONN.  A reply
 * that overtakes the tail of its own request's payload (the server refused
 * it early) is held until the payload is sent: the caller's buffer is never
 * released while we may still read it.
 *
 * Lifetime: destroy may run from inside a callback; the client is freed
 * when the last reference (owner, deferred call, running event handler)
 * is dropped.  Everything belongs to the worker thread: no locks.
 */
#include <endian.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "tessera/peer.h"
#include "peer/internal.h"

#define CLI_SEQ_BITS     16u                    /* slot index in the low bits of seq */
#define CLI_MAX_SLOTS    (1u << CLI_SEQ_BITS)
#define CLI_SEND_IOV     512
#define CLI_DEFAULT_TIMEOUT_MS 5000u

enum cli_state {
	CLI_CONNECTING, /* connect() in progress; frames wait */
	CLI_UP,         /* connected: frames flow (HELLO first) */
	CLI_FAILED,     /* failed or destroyed: calls return -ENOTCONN */
};

struct peer_creq {
	struct peer_creq *next_send;          /* send queue, or free list */
	struct peer_creq *prev_pend, *next_pend; /* pending list (submission order) */
	uint64_t seq;
	uint32_t slot;
	uint8_t op;
	bool in_sendq;        /* some of its bytes are not sent yet */
	bool replied;         /* reply arrived while in_sendq: complete once sent */
	int status;           /* the reply's status, when replied */
	uint64_t reply_handle, reply_size;
	uint64_t start_ms;    /* submission time (CLOCK_MONOTONIC) */
	uint32_t length;      /* READ/SUMS: expected payload bytes */
	void *dest;           /* READ buffer / SUMS array (caller's) */
	uint32_t reply_len;   /* STAGE_LIST, SNAP_LIST: payload bytes of the reply */
	union creq_cb {
		tsr_cb data;
		tsr_peer_open_cb open;
		tsr_peer_stage_list_cb list;
		tsr_peer_snap_list_cb slist;
		tsr_peer_stats_cb stats;
	} cb;
	void *cb_arg;
	uint8_t hdr[TSR_PEER_HDR_SIZE];
	struct iovec iov[3];
	int iovcnt, iov_idx;
	char name[PEER_OPEN_MAX + 1]; /* OPEN payload */
	uint8_t snap[TSR_PEER_SNAP_MAX]; /* SNAP payload */
	uint8_t stage[TSR_PEER_STAGE_PREFIX]; /* STAGE payload prefix (data: the caller's) */
};

struct tsr_peer_client {
	struct tsr_worker *w;
	int fd;                    /* -1 once closed */
	int tfd;                   /* timerfd for timeouts, -1 once closed */
	enum cli_state state;
	int fail_err;              /* cause, once failed */
	bool destroyed;            /* the owner let go */
	unsigned refs;             /* owner + deferred call + running handler */
	unsigned timeout_ms;
	uint64_t connect_ms;       /* when connect() started */
	char address[128];         /* for logs */
	uint64_t features;         /* the replica's, from its HELLO reply (peer.h) */
	bool hello_ok;             /* its HELLO reply came (features known) */
	uint64_t direct_fallbacks; /* tsr_peer_read_direct sent as plain READs */
	void (*on_fail)(void *arg, int err);
	void *fail_arg;
	uint8_t hello[PEER_HELLO_MAX]; /* HELLO payload */
	uint32_t hello_len;
	struct peer_creq hello_req;    /* internal: never on the free list */

	struct peer_creq **slots;  /* by the low CLI_SEQ_BITS of seq; NULL when unused */
	uint32_t nslots;           /* grows by doubling up to CLI_MAX_SLOTS */
	uint32_t *free_slots;      /* stack of unused slot indexes */
	uint32_t nfree;
	uint64_t generation;       /* high bits of seq: one more per request */
	struct peer_creq *free_reqs;
	struct peer_creq *send_head, *send_tail;
	struct peer_creq *pend_head, *pend_tail;
	bool wait_out;             /* sendmsg hit EAGAIN */
	bool flush_scheduled;
	uint32_t events;

	uint8_t *rbuf;             /* unparsed input is rbuf[rpos, rlen) */
	size_t rpos, rlen;
	struct peer_creq *payload_req; /* reply payload being read into dest */
	struct tsr_peer_hdr payload_hdr;
	uint32_t payload_have;
};

static void cli_fail(struct tsr_peer_client *c, int err);
static void cli_schedule(struct tsr_peer_client *c);

/* ---- lifetime ---- */

static void cli_free(struct tsr_peer_client *c)
{
	uint32_t i;

	while (c->free_reqs != NULL) {
		struct peer_creq *r = c->free_reqs;

		c->free_reqs = r->next_send;
		free(r);
	}
	for (i = 0; i < c->nslots; i++)
		if (c->slots[i] != NULL && c->slots[i] != &c->hello_req)
			free(c->slots[i]); /* only on a failed create: the rest completed */
	free(c->slots);
	free(c->free_slots);
	tsr_free_aligned(c->rbuf);
	free(c);
}

static void cli_get(struct tsr_peer_client *c)
{
	c->refs++;
}

static void cli_put(struct tsr_peer_client *c)
{
	if (--c->refs == 0)
		cli_free(c);
}

/* ---- requests ---- */

/* Register r (a recycled or new request, or the built-in HELLO) in a free
 * slot: seq = generation << CLI_SEQ_BITS | slot.  A table that grows keeps
 * every slot index, so no seq ever moves.  false on ENOMEM or 65536 in flight. */
static bool creq_register(struct tsr_peer_client *c, struct peer_creq *r)
{
	uint32_t slot;

	if (c->nfree == 0) {
		uint32_t n = c->nslots ? c->nslots * 2 : 64, i;
		struct peer_creq **ns;
		uint32_t *nf;

		if (n > CLI_MAX_SLOTS)
			return false;
		ns = realloc(c->slots, n * sizeof(*ns));
		if (ns == NULL)
			return false;
		c->slots = ns;
		nf = realloc(c->free_slots, n * sizeof(*nf));
		if (nf == NULL)
			return false;
		c->free_slots = nf;
		for (i = n; i-- > c->nslots;) {
			ns[i] = NULL;
			nf[c->nfree++] = i;
		}
		c->nslots = n;
	}
	slot = c->free_slots[--c->nfree];
	r->slot = slot;
	r->seq = (++c->generation << CLI_SEQ_BITS) | slot;
	c->slots[slot] = r;
	return true;
}

static void creq_unregister(struct tsr_peer_client *c, struct peer_creq *r)
{
	if (r->slot < c->nslots && c->slots[r->slot] == r) {
		c->slots[r->slot] = NULL;
		c->free_slots[c->nfree++] = r->slot;
	}
}

static struct peer_creq *creq_get(struct tsr_peer_client *c)
{
	struct peer_creq *r = c->free_reqs;

	if (r != NULL)
		c->free_reqs = r->next_send;
	else
		r = malloc(sizeof(*r));
	if (r == NULL)
		return NULL;
	memset(r, 0, offsetof(struct peer_creq, hdr));
	if (!creq_register(c, r)) {
		r->next_send = c->free_reqs;
		c->free_reqs = r;
		return NULL;
	}
	return r;
}

static void creq_recycle(struct tsr_peer_client *c, struct peer_creq *r)
{
	if (r == &c->hello_req)
		return;
	if (!TSR_KEEP_FREED) {
		free(r);
		return;
	}
	r->next_send = c->free_reqs;
	c->free_reqs = r;
}

static void pend_unlink(struct tsr_peer_client *c, struct peer_creq *r)
{
	if (r->prev_pend != NULL)
		r->prev_pend->next_pend = r->next_pend;
	else
		c->pend_head = r->next_pend;
	if (r->next_pend != NULL)
		r->next_pend->prev_pend = r->prev_pend;
	else
		c->pend_tail = r->prev_pend;
	r->prev_pend = r->next_pend = NULL;
}

/* STAGE_LIST: decode the reply payload (len bytes) and hand the entries to
 * the callback; frees the payload buffer. */
static void list_finish(tsr_peer_stage_list_cb cb_fn, void *cb_arg, uint8_t *payload,
			uint32_t len, int status)
{
	struct tsr_stage_entry *e = NULL;
	size_t n = 0;

	if (status == 0) {
		e = malloc(TSR_STAGE_MAX_ENTRIES * sizeof(*e));
		status = e == NULL ? -ENOMEM
				   : tsr_peer_stage_list_parse(payload, len, e,
							       TSR_STAGE_MAX_ENTRIES, &n);
		if (status < 0) {
			if (status != -ENOMEM)
				status = -EPROTO;
			n = 0;
		}
	}
	free(payload);
	cb_fn(cb_arg, status, status == 0 ? e : NULL, n);
	free(e);
}

/* SNAP_LIST: decode the reply payload (len bytes) and hand the entries to
 * the callback; frees the payload buffer. */
static void slist_finish(tsr_peer_snap_list_cb cb_fn, void *cb_arg, uint8_t *payload,
			 uint32_t len, int status)
{
	struct tsr_peer_snap_entry *e = NULL;
	size_t n = 0;

	if (status == 0) {
		e = malloc(TSR_PEER_SNAP_LIST_MAX * sizeof(*e));
		status = e == NULL ? -ENOMEM
				   : tsr_peer_snap_list_parse(payload, len, e,
							      TSR_PEER_SNAP_LIST_MAX, &n);
		if (status < 0) {
			if (status != -ENOMEM)
				status = -EPROTO;
			n = 0;
		}
	}
	free(payload);
	cb_fn(cb_arg, status, status == 0 ? e : NULL, n);
	free(e);
}

/* STATS: decode the reply payload (len bytes) and hand the counters to the
 * callback; frees the payload buffer. */
static void stats_finish(tsr_peer_stats_cb cb_fn, void *cb_arg, uint8_t *payload, uint32_t len,
			 int status)
{
	struct tsr_peer_stats st;

	if (status == 0 && tsr_peer_stats_parse(payload, len, &st) < 0)
		status = -EPROTO;
	free(payload);
	cb_fn(cb_arg, status, status == 0 ? &st : NULL);
}

/* Recycle r and run its callback with status (r was unlinked from the table
 * and the pending list by the caller).  Everything the callback needs is
 * taken out of r first: once recycled, r is the next request's (or freed:
 * TSR_KEEP_FREED). */
static void creq_finish(struct tsr_peer_client *c, struct peer_creq *r, int status)
{
	uint8_t op = r->op;
	void *arg = r->cb_arg;
	union creq_cb cb = r->cb;
	uint8_t *payload = r->dest;
	uint32_t len = r->reply_len;
	uint64_t handle = r->reply_handle, size = r->reply_size;
	bool hello = r == &c->hello_req;

	if (op == TSR_PEER_STAGE_LIST || op == TSR_PEER_SNAP_LIST || op == TSR_PEER_STATS)
		r->dest = NULL; /* the payload is the finish's to free */
	creq_recycle(c, r);
	if (hello) {
		if (status < 0 && c->state != CLI_FAILED) {
			tsr_warn("peer: %s refused our HELLO: %s%s", c->address, strerror(-status),
				 status == -EACCES ? " (check that both nodes use the same token)"
						   : "");
			cli_fail(c, status);
		}
		return;
	}
	if (op == TSR_PEER_OPEN)
		cb.open(arg, status, status == 0 ? handle : 0, status == 0 ? size : 0);
	else if (op == TSR_PEER_STAGE_LIST)
		list_finish(cb.list, arg, payload, len, status);
	else if (op == TSR_PEER_SNAP_LIST)
		slist_finish(cb.slist, arg, payload, len, status);
	else if (op == TSR_PEER_STATS)
		stats_finish(cb.stats, arg, payload, len, status);
	else
		cb.data(arg, status);
}

/* The reply for r is here (or the connection failed): complete it, unless
 * its frame is still being sent. */
static void creq_complete(struct tsr_peer_client *c, struct peer_creq *r, int status)
{
	creq_unregister(c, r);
	pend_unlink(c, r);
	if (r->in_sendq) {
		r->replied = true;
		r->status = status;
		return;
	}
	creq_finish(c, r, status);
}

/* Queue a packed frame for sending: header, payload, then payload2 (STAGE's
 * data after its prefix). */
static void creq_queue2(struct tsr_peer_client *c, struct peer_creq *r,
			const struct tsr_peer_hdr *h, const void *payload, uint32_t plen,
			const void *payload2, uint32_t plen2)
{
	tsr_peer_hdr_pack(h, r->hdr);
	r->iov[0].iov_base = r->hdr;
	r->iov[0].iov_len = TSR_PEER_HDR_SIZE;
	r->iovcnt = 1;
	r->iov_idx = 0;
	if (plen > 0) {
		r->iov[r->iovcnt].iov_base = (void *)payload;
		r->iov[r->iovcnt++].iov_len = plen;
	}
	if (plen2 > 0) {
		r->iov[r->iovcnt].iov_base = (void *)payload2;
		r->iov[r->iovcnt++].iov_len = plen2;
	}
	r->in_sendq = true;
	r->start_ms = tsr_mono_ms();
	r->next_send = NULL;
	if (c->send_tail != NULL)
		c->send_tail->next_send = r;
	else
		c->send_head = r;
	c->send_tail = r;
	r->next_pend = NULL;
	r->prev_pend = c->pend_tail;
	if (c->pend_tail != NULL)
		c->pend_tail->next_pend = r;
	else
		c->pend_head = r;
	c->pend_tail = r;
	if (c->state == CLI_UP)
		cli_schedule(c);
}

static void creq_queue(struct tsr_peer_client *c, struct peer_creq *r, const struct tsr_peer_hdr *h,
		       const void *payload, uint32_t plen)
{
	creq_queue2(c, r, h, payload, plen, NULL, 0);
}

/* ---- failure ---- */

static void cli_close_fds(struct tsr_peer_client *c)
{
	if (c->fd >= 0) {
		tsr_worker_unwatch(c->w, c->fd);
		close(c->fd);
		c->fd = -1;
	}
	if (c->tfd >= 0) {
		tsr_worker_unwatch(c->w, c->tfd);
		close(c->tfd);
		c->tfd = -1;
	}
}

/* Complete every known request with err (callbacks may call us back). */
static void cli_complete_all(struct tsr_peer_client *c, int err)
{
	struct peer_creq *list = NULL, *r, *next;
	uint32_t i;

	/* requests whose reply came while their frame was still being sent are
	 * only on the send queue; every other one is in the table */
	for (r = c->send_head; r != NULL; r = next) {
		next = r->next_send;
		if (r->replied) {
			r->next_send = list;
			list = r;
		}
	}
	c->send_head = c->send_tail = NULL;
	c->payload_req = NULL;
	for (i = 0; i < c->nslots; i++) {
		r = c->slots[i];
		if (r == NULL)
			continue;
		creq_unregister(c, r);
		pend_unlink(c, r);
		r->next_send = list;
		list = r;
	}
	while ((r = list) != NULL) {
		list = r->next_send;
		r->in_sendq = false;
		creq_finish(c, r, r->replied ? r->status : err);
	}
}

static void cli_fail(struct tsr_peer_client *c, int err)
{
	if (c->state == CLI_FAILED)
		return;
	cli_get(c);
	c->state = CLI_FAILED;
	c->fail_err = err;
	cli_close_fds(c);
	if (err != -ECANCELED)
		tsr_warn("peer: connection to %s failed: %s", c->address, strerror(-err));
	if (c->on_fail != NULL && !c->destroyed)
		c->on_fail(c->fail_arg, err);
	cli_complete_all(c, err);
	cli_put(c);
}

/* ---- output ---- */

static void cli_flush(struct tsr_peer_client *c)
{
	while (c->send_head != NULL && !c->wait_out && c->state == CLI_UP) {
		struct iovec iov[CLI_SEND_IOV];
		struct msghdr msg = { .msg_iov = iov };
		struct peer_creq *r;
		ssize_t n;
		int cnt = 0, i;

		for (r = c->send_head; r != NULL && cnt <= CLI_SEND_IOV - 3; r = r->next_send)
			for (i = r->iov_idx; i < r->iovcnt; i++)
				iov[cnt++] = r->iov[i];
		msg.msg_iovlen = (size_t)cnt;
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				c->wait_out = true;
				break;
			}
			cli_fail(c, errno == EPIPE ? -ECONNRESET : -errno);
			return;
		}
		while (n > 0) {
			struct iovec *v;

			r = c->send_head;
			v = &r->iov[r->iov_idx];
			if ((size_t)n >= v->iov_len) {
				n -= (ssize_t)v->iov_len;
				r->iov_idx++;
			} else {
				v->iov_base = (uint8_t *)v->iov_base + n;
				v->iov_len -= (size_t)n;
				n = 0;
			}
			if (r->iov_idx == r->iovcnt) {
				c->send_head = r->next_send;
				if (c->send_head == NULL)
					c->send_tail = NULL;
				r->in_sendq = false;
				if (r->replied)
					creq_finish(c, r, r->status);
				if (c->state != CLI_UP)
					return;
				if (c->send_head == NULL)
					break;
			}
		}
	}
}

static void cli_update_events(struct tsr_peer_client *c)
{
	uint32_t ev;

	if (c->fd < 0)
		return;
	ev = c->state == CLI_CONNECTING ? EPOLLOUT : (EPOLLIN | (c->wait_out ? EPOLLOUT : 0));
	if (ev != c->events && tsr_worker_modify(c->w, c->fd, ev) == 0)
		c->events = ev;
}

static void cli_deferred(struct tsr_worker *w, void *arg)
{
	struct tsr_peer_client *c = arg;

	(void)w;
	c->flush_scheduled = false;
	if (c->state == CLI_UP) {
		cli_flush(c);
		cli_update_events(c);
	}
	cli_put(c);
}

static void cli_schedule(struct tsr_peer_client *c)
{
	if (c->flush_scheduled || c->state != CLI_UP)
		return;
	if (tsr_worker_defer(c->w, cli_deferred, c) < 0) {
		cli_flush(c);
		return;
	}
	c->flush_scheduled = true;
	cli_get(c);
}

/* ---- input ---- */

static void reply_done(struct tsr_peer_client *c, struct peer_creq *r,
		       const struct tsr_peer_hdr *h)
{
	int status = h->status;

	if (h->payload_len > 0) {
		if (tsr_crc32c(0, r->dest, h->payload_len) != h->data_crc) {
			tsr_warn("peer: %s reply from %s at %llu+%u: payload checksum mismatch",
				 peer_op_name(h->opcode), c->address,
				 (unsigned long long)h->offset, h->length);
			status = -EBADMSG;
		} else if (h->opcode == TSR_PEER_SUMS) {
			uint32_t *s = r->dest, i;

			for (i = 0; i < h->payload_len / 4; i++)
				s[i] = le32toh(s[i]);
		}
	}
	if (r == &c->hello_req && status == 0) {
		c->features = h->epoch; /* a build before feature bits: 0 */
		c->hello_ok = true;
	}
	r->reply_handle = h->handle;
	r->reply_size = h->offset;
	r->reply_len = h->payload_len;
	creq_complete(c, r, status);
}

/* One parsed reply header at rbuf[rpos]; 0 or -EPROTO. */
static int handle_reply(struct tsr_peer_client *c, const struct tsr_peer_hdr *h)
{
	uint32_t slot = (uint32_t)(h->seq & (CLI_MAX_SLOTS - 1));
	struct peer_creq *r = slot < c->nslots ? c->slots[slot] : NULL;
	size_t avail;
	uint32_t n;

	if (!(h->flags & TSR_PEER_F_REPLY) || r == NULL || r->seq != h->seq || r->replied ||
	    r->op != h->opcode)
		return -EPROTO;
	if (h->payload_len > 0 &&
	    (h->opcode == TSR_PEER_STAGE_LIST || h->opcode == TSR_PEER_SNAP_LIST ||
		     h->opcode == TSR_PEER_STATS
		 ? h->length > r->length
		 : h->length != r->length))
		return -EPROTO;
	c->rpos += TSR_PEER_HDR_SIZE;
	if (h->payload_len == 0) {
		reply_done(c, r, h);
		return 0;
	}
	avail = c->rlen - c->rpos;
	n = avail < h->payload_len ? (uint32_t)avail : h->payload_len;
	memcpy(r->dest, c->rbuf + c->rpos, n);
	c->rpos += n;
	if (n == h->payload_len) {
		reply_done(c, r, h);
		return 0;
	}
	c->payload_req = r;
	c->payload_hdr = *h;
	c->payload_have = n;
	return 0;
}

static void cli_process(struct tsr_peer_client *c)
{
	while (c->state == CLI_UP && c->payload_req == NULL) {
		struct tsr_peer_hdr h;
		int ret;

		if (c->rlen - c->rpos < TSR_PEER_HDR_SIZE)
			return;
		ret = tsr_peer_hdr_parse(c->rbuf + c->rpos, &h);
		if (ret == 0)
			ret = handle_reply(c, &h);
		if (ret < 0) {
			tsr_warn("peer: bad reply frame from %s: %s", c->address, strerror(-ret));
			cli_fail(c, -EPROTO);
			return;
		}
	}
}

static void cli_read(struct tsr_peer_client *c)
{
	while (c->state == CLI_UP) {
		struct iovec iov[2];
		size_t want;
		int cnt = 0;
		ssize_t n;

		if (c->rpos == c->rlen) {
			c->rpos = c->rlen = 0;
		} else if (c->rpos > 0 && PEER_RBUF_SIZE - c->rlen < PEER_RBUF_SIZE / 2) {
			memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
			c->rlen -= c->rpos;
			c->rpos = 0;
		}
		if (c->payload_req != NULL) {
			iov[cnt].iov_base = (uint8_t *)c->payload_req->dest + c->payload_have;
			iov[cnt++].iov_len = c->payload_hdr.payload_len - c->payload_have;
		}
		if (c->rlen < PEER_RBUF_SIZE) {
			iov[cnt].iov_base = c->rbuf + c->rlen;
			iov[cnt++].iov_len = PEER_RBUF_SIZE - c->rlen;
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
			cli_fail(c, -errno);
			return;
		}
		if (n == 0) {
			cli_fail(c, -ECONNRESET); /* the replica closed: it will not answer */
			return;
		}
		if (c->payload_req != NULL) {
			uint32_t need = c->payload_hdr.payload_len - c->payload_have;
			uint32_t m = (size_t)n < need ? (uint32_t)n : need;

			c->payload_have += m;
			c->rlen += (size_t)n - m;
			if (c->payload_have == c->payload_hdr.payload_len) {
				struct peer_creq *r = c->payload_req;

				c->payload_req = NULL;
				reply_done(c, r, &c->payload_hdr);
			}
		} else {
			c->rlen += (size_t)n;
		}
		cli_process(c);
		if ((size_t)n < want)
			return;
	}
}

static void cli_on_connected(struct tsr_peer_client *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0) {
		cli_fail(c, -err);
		return;
	}
	c->state = CLI_UP;
	tsr_debug("peer: connected to %s", c->address);
	cli_flush(c); /* HELLO and whatever was queued meanwhile */
}

static void cli_on_event(void *arg, uint32_t events)
{
	struct tsr_peer_client *c = arg;

	cli_get(c);
	if (c->state == CLI_CONNECTING) {
		if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			cli_on_connected(c);
	} else if (c->state == CLI_UP) {
		if (events & EPOLLOUT) {
			c->wait_out = false;
			cli_flush(c);
		}
		if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
			cli_read(c);
	}
	if (c->state != CLI_FAILED)
		cli_update_events(c);
	cli_put(c);
}

static void cli_on_timer(void *arg, uint32_t events)
{
	struct tsr_peer_client *c = arg;
	uint64_t ticks, now = tsr_mono_ms();

	(void)events;
	if (read(c->tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		tsr_debug("peer: timer: %s", strerror(errno));
	cli_get(c);
	if (c->state == CLI_CONNECTING && now - c->connect_ms >= c->timeout_ms)
		cli_fail(c, -ETIMEDOUT);
	else if (c->pend_head != NULL && now - c->pend_head->start_ms >= c->timeout_ms)
		cli_fail(c, -ETIMEDOUT);
	cli_put(c);
}

/* ---- create / destroy ---- */

/* "HOST:PORT" or "[V6]:PORT" into host and port. */
static int split_address(const char *addr, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon = strrchr(addr, ':');
	const char *h = addr;
	size_t n;

	if (colon == NULL || colon[1] == '\0')
		return -EINVAL;
	n = (size_t)(colon - addr);
	if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
		h = addr + 1;
		n -= 2;
	}
	if (n == 0 || n >= hlen || strlen(colon + 1) >= plen)
		return -EINVAL;
	memcpy(host, h, n);
	host[n] = '\0';
	snprintf(port, plen, "%s", colon + 1);
	return 0;
}

static void cli_fail_deferred(struct tsr_worker *w, void *arg)
{
	struct tsr_peer_client *c = arg;

	(void)w;
	cli_fail(c, c->fail_err);
	cli_put(c);
}

int tsr_peer_client_create(struct tsr_worker *w, const struct tsr_peer_client_opts *opts,
			   void (*on_fail)(void *arg, int err), void *fail_arg,
			   struct tsr_peer_client **out)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	struct tsr_peer_client *c;
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_HELLO };
	struct itimerspec its = {0};
	char host[128], port[16];
	size_t idlen;
	unsigned tick;
	int ret, one = 1;

	if (w == NULL || opts == NULL || opts->address == NULL || opts->token == NULL ||
	    strlen(opts->token) != PEER_TOKEN_LEN ||
	    (idlen = opts->node_id ? strlen(opts->node_id) : 0) > PEER_NAME_MAX ||
	    split_address(opts->address, host, sizeof(host), port, sizeof(port)) < 0)
		return -EINVAL;
	ret = getaddrinfo(host, port, &hints, &ai);
	if (ret != 0) {
		tsr_error("peer: address %s: %s", opts->address, gai_strerror(ret));
		return ret == EAI_MEMORY ? -ENOMEM : -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		freeaddrinfo(ai);
		return -ENOMEM;
	}
	c->w = w;
	c->fd = c->tfd = -1;
	c->refs = 1;
	c->state = CLI_CONNECTING;
	c->timeout_ms = opts->timeout_ms ? opts->timeout_ms : CLI_DEFAULT_TIMEOUT_MS;
	c->on_fail = on_fail;
	c->fail_arg = fail_arg;
	snprintf(c->address, sizeof(c->address), "%s", opts->address);
	c->rbuf = tsr_alloc_aligned(PEER_RBUF_SIZE);
	if (c->rbuf == NULL || !creq_register(c, &c->hello_req)) {
		ret = -ENOMEM;
		goto err;
	}

	c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	c->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (c->fd < 0 || c->tfd < 0) {
		ret = -errno;
		tsr_error("peer: socket for %s: %s", c->address, strerror(-ret));
		goto err;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* the timer checks the oldest request a few times per timeout */
	tick = c->timeout_ms / 4;
	if (tick < 5)
		tick = 5;
	if (tick > 1000)
		tick = 1000;
	its.it_interval.tv_sec = tick / 1000;
	its.it_interval.tv_nsec = (long)(tick % 1000) * 1000000;
	its.it_value = its.it_interval;
	if (timerfd_settime(c->tfd, 0, &its, NULL) < 0) {
		ret = -errno;
		goto err;
	}
	ret = tsr_worker_watch(w, c->tfd, EPOLLIN, cli_on_timer, c);
	if (ret < 0) {
		close(c->tfd);
		c->tfd = -1;
		goto err;
	}
	ret = tsr_worker_watch(w, c->fd, EPOLLOUT, cli_on_event, c);
	if (ret < 0) {
		close(c->fd);
		c->fd = -1;
		goto err;
	}
	c->events = EPOLLOUT;

	/* HELLO goes first, whatever the caller queues before the connection is up */
	memcpy(c->hello, opts->token, PEER_TOKEN_LEN);
	c->hello[PEER_TOKEN_LEN] = (uint8_t)idlen;
	if (idlen > 0)
		memcpy(c->hello + PEER_HELLO_MIN, opts->node_id, idlen);
	c->hello_len = PEER_HELLO_MIN + (uint32_t)idlen;
	c->hello_req.op = TSR_PEER_HELLO;
	h.seq = c->hello_req.seq;
	h.length = c->hello_len;
	h.data_crc = tsr_crc32c(0, c->hello, c->hello_len);
	creq_queue(c, &c->hello_req, &h, c->hello, c->hello_len);

	c->connect_ms = tsr_mono_ms();
	if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
		/* fail from the loop: no callback may run inside create */
		c->fail_err = -errno;
		if (tsr_worker_defer(w, cli_fail_deferred, c) < 0) {
			ret = -ENOMEM;
			goto err;
		}
		cli_get(c);
	}
	freeaddrinfo(ai);
	*out = c;
	return 0;
err:
	freeaddrinfo(ai);
	creq_unregister(c, &c->hello_req);
	cli_close_fds(c);
	cli_free(c);
	return ret;
}

void tsr_peer_client_destroy(struct tsr_peer_client *c)
{
	if (c == NULL)
		return;
	c->destroyed = true;
	if (c->state != CLI_FAILED)
		cli_fail(c, -ECANCELED);
	cli_put(c);
}

bool tsr_peer_client_failed(const struct tsr_peer_client *c)
{
	return c->state == CLI_FAILED;
}

/* ---- request calls ---- */

/* Common start of every request: -ENOTCONN once failed, -ENOMEM. */
static struct peer_creq *req_start(struct tsr_peer_client *c, uint8_t op, int *err)
{
	struct peer_creq *r;

	if (c->state == CLI_FAILED) {
		*err = -ENOTCONN;
		return NULL;
	}
	r = creq_get(c);
	if (r == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	r->op = op;
	return r;
}

static bool range_ok(uint64_t offset, uint32_t len, uint32_t max)
{
	return len > 0 && len <= max && len % TSR_BLOCK_SIZE == 0 &&
	       offset % TSR_BLOCK_SIZE == 0 && offset <= UINT64_MAX - len;
}

int tsr_peer_open(struct tsr_peer_client *c, const char *volume, uint64_t epoch,
		  tsr_peer_open_cb cb_fn, void *cb_arg)
{
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_OPEN, .epoch = epoch };
	struct peer_creq *r;
	size_t n;
	int err;

	if (volume == NULL || cb_fn == NULL || !peer_open_name_ok(volume) ||
	    (n = strlen(volume)) > PEER_OPEN_MAX)
		return -EINVAL;
	r = req_start(c, TSR_PEER_OPEN, &err);
	if (r == NULL)
		return err;
	memcpy(r->name, volume, n);
	r->cb.open = cb_fn;
	r->cb_arg = cb_arg;
	h.length = (uint32_t)n;
	h.seq = r->seq;
	h.data_crc = tsr_crc32c(0, r->name, n);
	creq_queue(c, r, &h, r->name, (uint32_t)n);
	return 0;
}

/* Queue a data request (payload: WRITE data; dest: READ buffer). */
static int data_req(struct tsr_peer_client *c, struct tsr_peer_hdr *h, void *dest,
		    const void *payload, tsr_cb cb_fn, void *cb_arg)
{
	struct peer_creq *r;
	int err;

	if (cb_fn == NULL)
		return -EINVAL;
	r = req_start(c, h->opcode, &err);
	if (r == NULL)
		return err;
	r->cb.data = cb_fn;
	r->cb_arg = cb_arg;
	r->dest = dest;
	r->length = dest != NULL ? h->length : 0;
	h->seq = r->seq;
	creq_queue(c, r, h, payload, payload != NULL ? h->length : 0);
	return 0;
}

int tsr_peer_read(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		  uint64_t offset, uint32_t len, void *buf, tsr_cb cb_fn, void *cb_arg)
{
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_READ, .handle = handle, .epoch = epoch,
				  .offset = offset, .length = len };

	if (buf == NULL || !range_ok(offset, len, TSR_MAX_IO))
		return -EINVAL;
	return data_req(c, &h, buf, NULL, cb_fn, cb_arg);
}

int tsr_peer_read_direct(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
			 uint64_t offset, uint32_t len, void *buf, tsr_cb cb_fn, void *cb_arg)
{
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_READ, .handle = handle, .epoch = epoch,
				  .offset = offset, .length = len };

	if (buf == NULL || !range_ok(offset, len, TSR_MAX_IO))
		return -EINVAL;
	if (c->features & TSR_PEER_FEAT_READ_DIRECT) {
		h.flags = TSR_PEER_F_DIRECT;
	} else if (!c->hello_ok) {
		/* not known yet (no session is open before HELLO's answer, so
		 * no layout gets here): the safe frame for any build */
		c->direct_fallbacks++;
		tsr_debug("peer: %s: a direct read before HELLO's answer sent as a plain READ",
			  c->address);
	} else {
		/* an earlier build closes the connection on the flag: read its
		 * cache rather than fail every request on this connection */
		if (c->direct_fallbacks++ == 0)
			tsr_warn("peer: %s does not serve direct reads (a build before "
				 "TSR_PEER_F_DIRECT): scrubs of its copies read its page cache, "
				 "not its disk, and resyncs from them fill it, until it is upgraded",
				 c->address);
	}
	return data_req(c, &h, buf, NULL, cb_fn, cb_arg);
}

uint64_t tsr_peer_client_features(const struct tsr_peer_client *c)
{
	return c->features;
}

uint64_t tsr_peer_client_direct_fallbacks(const struct tsr_peer_client *c)
{
	return c->direct_fallbacks;
}

int tsr_peer_write(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		   uint64_t offset, uint32_t len, const void *buf, unsigned flags,
		   tsr_cb cb_fn, void *cb_arg)
{
	return tsr_peer_write_sums(c, handle, epoch, offset, len, buf, NULL, flags, cb_fn, cb_arg);
}

int tsr_peer_write_sums(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch, uint64_t offset,
			uint32_t len, const void *buf, const uint32_t *sums, unsigned flags,
			tsr_cb cb_fn, void *cb_arg)
{
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_WRITE, .handle = handle, .epoch = epoch,
				  .offset = offset, .length = len };

	if (buf == NULL || !range_ok(offset, len, TSR_MAX_IO) || (flags & ~TSR_WRITE_FUA))
		return -EINVAL;
	if (c->state == CLI_FAILED)
		return -ENOTCONN;
	if (flags & TSR_WRITE_FUA)
		h.flags = TSR_PEER_F_FUA;
	h.data_crc = sums != NULL ? tsr_crc32c_join_blocks(sums, len / TSR_BLOCK_SIZE)
				  : tsr_crc32c(0, buf, len);
	return data_req(c, &h, NULL, buf, cb_fn, cb_arg);
}

int tsr_peer_flush(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		   tsr_cb cb_fn, void *cb_arg)
{
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_FLUSH, .handle = handle, .epoch = epoch };

	return data_req(c, &h, NULL, NULL, cb_fn, cb_arg);
}

int tsr_peer_trim(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		  uint64_t offset, uint32_t len, tsr_cb cb_fn, void *cb_arg)
{
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_TRIM, .handle = handle, .epoch = epoch,
				  .offset = offset, .length = len };

	if (!range_ok(offset, len, UINT32_MAX))
		return -EINVAL;
	return data_req(c, &h, NULL, NULL, cb_fn, cb_arg);
}

int tsr_peer_write_zeroes(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
			  uint64_t offset, uint32_t len, unsigned flags, tsr_cb cb_fn,
			  void *cb_arg)
{
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_WRITE_ZEROES, .handle = handle,
				  .epoch = epoch, .offset = offset, .length = len };

	if (!range_ok(offset, len, UINT32_MAX) || (flags & ~(TSR_WRITE_FUA | TSR_WRITE_NO_HOLE)))
		return -EINVAL;
	if (flags & TSR_WRITE_FUA)
		h.flags |= TSR_PEER_F_FUA;
	if (flags & TSR_WRITE_NO_HOLE)
		h.flags |= TSR_PEER_F_NO_HOLE;
	return data_req(c, &h, NULL, NULL, cb_fn, cb_arg);
}

int tsr_peer_snap_repair(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
			 uint64_t offset, uint32_t len, const void *buf, tsr_cb cb_fn,
			 void *cb_arg)
{
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_WRITE, .flags = TSR_PEER_F_REPAIR,
				  .handle = handle, .epoch = epoch, .offset = offset,
				  .length = len };

	if (buf == NULL || !range_ok(offset, len, TSR_MAX_IO))
		return -EINVAL;
	if (c->state == CLI_FAILED)
		return -ENOTCONN;
	h.data_crc = tsr_crc32c(0, buf, len);
	return data_req(c, &h, NULL, buf, cb_fn, cb_arg);
}

int tsr_peer_sums(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		  uint64_t offset, uint32_t len, uint32_t *sums, tsr_cb cb_fn, void *cb_arg)
{
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_SUMS, .handle = handle, .epoch = epoch,
				  .offset = offset, .length = len };
	struct peer_creq *r;
	int err;

	if (sums == NULL || cb_fn == NULL || !range_ok(offset, len, TSR_PEER_MAX_SUMS_RANGE))
		return -EINVAL;
	r = req_start(c, TSR_PEER_SUMS, &err);
	if (r == NULL)
		return err;
	r->cb.data = cb_fn;
	r->cb_arg = cb_arg;
	r->dest = sums;
	r->length = len;
	h.seq = r->seq;
	creq_queue(c, r, &h, NULL, 0);
	return 0;
}

int tsr_peer_snap(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		  const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg)
{
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_SNAP, .handle = handle, .epoch = epoch };
	uint8_t payload[TSR_PEER_SNAP_MAX];
	struct peer_creq *r;
	int len, err;

	if (req == NULL || cb_fn == NULL)
		return -EINVAL;
	len = tsr_peer_snap_pack(req, payload);
	if (len < 0)
		return len;
	r = req_start(c, TSR_PEER_SNAP, &err);
	if (r == NULL)
		return err;
	memcpy(r->snap, payload, (size_t)len);
	r->cb.data = cb_fn;
	r->cb_arg = cb_arg;
	h.length = (uint32_t)len;
	h.seq = r->seq;
	if (req->missing_ok && req->op == TSR_SNAP_DELETE)
		h.flags = TSR_PEER_F_MISSING_OK;
	h.data_crc = tsr_crc32c(0, r->snap, (size_t)len);
	creq_queue(c, r, &h, r->snap, (uint32_t)len);
	return 0;
}

int tsr_peer_close(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch, tsr_cb cb_fn,
		   void *cb_arg)
{
	struct tsr_peer_hdr h = { .opcode = TSR_PEER_CLOSE, .handle = handle, .epoch = epoch };

	return data_req(c, &h, NULL, NULL, cb_fn, cb_arg);
}

/* ---- staged chunk writes ---- */

int tsr_peer_stage(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		   const struct tsr_stage_entry *e, const void *buf, tsr_cb cb_fn, void *cb_arg)
{
	struct tsr_peer_hdr h = {.opcode = TSR_PEER_STAGE, .handle = handle, .epoch = epoch};
	struct peer_creq *r;
	int err;

	if (e == NULL || buf == NULL || cb_fn == NULL ||
	    !range_ok(e->offset, e->length, PEER_STAGE_MAX_LEN) || e->participants == 0 ||
	    e->participants >= 1u << PEER_STAGE_MAX_POSITIONS)
		return -EINVAL;
	r = req_start(c, TSR_PEER_STAGE, &err);
	if (r == NULL)
		return err;
	tsr_peer_stage_pack(e, r->stage);
	r->cb.data = cb_fn;
	r->cb_arg = cb_arg;
	h.offset = e->offset;
	h.length = e->length;
	h.seq = r->seq;
	h.data_crc = tsr_crc32c(tsr_crc32c(0, r->stage, TSR_PEER_STAGE_PREFIX), buf, e->length);
	creq_queue2(c, r, &h, r->stage, TSR_PEER_STAGE_PREFIX, buf, e->length);
	return 0;
}

int tsr_peer_commit(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch, uint64_t txn,
		    tsr_cb cb_fn, void *cb_arg)
{
	struct tsr_peer_hdr h = {
	    .opcode = TSR_PEER_COMMIT, .handle = handle, .epoch = epoch, .offset = txn};

	return data_req(c, &h, NULL, NULL, cb_fn, cb_arg);
}

int tsr_peer_release(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		     uint64_t txn_upto, tsr_cb cb_fn, void *cb_arg)
{
	struct tsr_peer_hdr h = {
	    .opcode = TSR_PEER_RELEASE, .handle = handle, .epoch = epoch, .offset = txn_upto};

	return data_req(c, &h, NULL, NULL, cb_fn, cb_arg);
}

/*
 * A request whose reply payload is a list of at most cap bytes (SNAP_LIST,
 * STAGE_LIST): the reply buffer and the request, queued.  The caller sets
 * its callback in the union before the request can complete (on this
 * thread, later).  NULL with *err on failure.
 */
static struct peer_creq *list_req(struct tsr_peer_client *c, uint8_t opcode, uint64_t handle,
				  uint64_t epoch, uint32_t cap, void *cb_arg, int *err)
{
	struct tsr_peer_hdr h = {.opcode = opcode, .handle = handle, .epoch = epoch};
	struct peer_creq *r;
	void *dest = malloc(cap);

	if (dest == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	r = req_start(c, opcode, err);
	if (r == NULL) {
		free(dest);
		return NULL;
	}
	r->cb_arg = cb_arg;
	r->dest = dest;
	r->length = cap;
	h.seq = r->seq;
	creq_queue(c, r, &h, NULL, 0);
	return r;
}

int tsr_peer_snap_list(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		       tsr_peer_snap_list_cb cb_fn, void *cb_arg)
{
	struct peer_creq *r;
	int err;

	if (cb_fn == NULL)
		return -EINVAL;
	r = list_req(c, TSR_PEER_SNAP_LIST, handle, epoch,
		     TSR_PEER_SNAP_ENTRY * TSR_PEER_SNAP_LIST_MAX, cb_arg, &err);
	if (r == NULL)
		return err;
	r->cb.slist = cb_fn;
	return 0;
}

int tsr_peer_stage_list(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
			tsr_peer_stage_list_cb cb_fn, void *cb_arg)
{
	struct peer_creq *r;
	int err;

	if (cb_fn == NULL)
		return -EINVAL;
	/* the reply's payload, up to every entry the journal can hold */
	r = list_req(c, TSR_PEER_STAGE_LIST, handle, epoch,
		     TSR_PEER_STAGE_ENTRY * TSR_STAGE_MAX_ENTRIES, cb_arg, &err);
	if (r == NULL)
		return err;
	r->cb.list = cb_fn;
	return 0;
}

int tsr_peer_stats(struct tsr_peer_client *c, uint64_t handle, uint64_t epoch,
		   tsr_peer_stats_cb cb_fn, void *cb_arg)
{
	struct peer_creq *r;
	int err;

	if (cb_fn == NULL)
		return -EINVAL;
	/* a build before the opcode closes the connection on it */
	if (!(c->features & TSR_PEER_FEAT_STATS))
		return -EOPNOTSUPP;
	r = list_req(c, TSR_PEER_STATS, handle, epoch, TSR_PEER_STATS_MAX, cb_arg, &err);
	if (r == NULL)
		return err;
	r->cb.stats = cb_fn;
	return 0;
}
