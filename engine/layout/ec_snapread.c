/*
 * Snapshots of erasure-coded volumes, read side (include/tessera/ec.h,
 * "snapshots of an ec volume"):
 *
 *  - a read-only layout over the chunk copies' snapshots: stripe s's data
 *    chunk d is read from the snapshot of the copy holding it (this node's
 *    store, or a peer session on "VOL@SNAP", which the peer protocol serves
 *    read-only); when that copy cannot be read (no session, the snapshot
 *    missing there, a read error) the same column range is read from other
 *    copies' snapshots until k are present and decoded (ISA-L through the
 *    codec).  Every copy cut the snapshot at one point of the write order,
 *    so any k of them decode to the image at the cut.  Writes, trims and
 *    write-zeroes fail with -EROFS; block status is left to the generic
 *    code (everything reported allocated);
 *  - the diff mapping: each copy's chunk-volume diff (store.h
 *    tsr_store_snap_diff), mapped back to volume offsets by the stripe
 *    geometry and merged (tsr_ec_diff_map), metadata only.
 *
 * The layout lives on the home worker of the volume's coordinator layout it
 * was made from (tsr_layout_ec_snap_create): its peer clients are that
 * worker's.  Create (any thread) takes a reference on the coordinator's
 * struct ec; the start, on the home worker (a message sent at create, or the
 * first read, whichever runs first), copies the copies' node ids and
 * addresses from it, drops the reference and opens a session per remote
 * copy.  Reads that arrive while sessions are opening wait for them.
 *
 * An export (tsr_layout_ec_snap_create) whose snapshot this node's chunk copy
 * lacks (or holds while it is no source: not IN_SYNC, or missed operations
 * pending), or made on a node holding no copy, first asks the other copies
 * whether they hold it (snap_exists, below): fewer than k holding it is
 * -ENOENT (or -EHOSTUNREACH when enough copies could not be asked), so a
 * name no copy has is refused at the NBD handshake instead of opened.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "layout/ec_internal.h"
#include "tessera/layout_module.h"

enum snc_state { SNC_OPENING, SNC_OPEN, SNC_FAILED };

struct snread;

/* One copy's snapshot (home worker only). */
struct sncopy {
	struct ecsnap *s;
	unsigned idx;                   /* copy index: tsr_ec_copy_of */
	char node_id[64];
	char address[128];
	bool local;
	bool stale;                     /* not a source: its snapshot may be an old one */
	enum snc_state state;           /* FAILED: not read any more (logged once) */
	struct tsr_svol *svol;          /* local: the snapshot image, our reference */
	struct tsr_peer_client *client; /* remote: our client on the home worker */
	uint64_t handle;                /* remote: the snapshot session */
};

struct ecsnap {
	/* immutable after create */
	char vol[64], snap[64];
	uint64_t size;       /* volume bytes at the cut */
	unsigned k, m, n;
	uint32_t unit;
	uint64_t width;      /* k * unit */
	uint64_t epoch;      /* sent with every peer op (snapshot sessions record none) */
	char node_id[64];
	char token[128];
	unsigned timeout_ms;
	struct tsr_store *store;
	struct tsr_worker *home;
	pthread_t home_thread;
	struct tsr_ec_codec *codec;

	/* home worker */
	unsigned refs;       /* the layout's + 1 while the start message is queued */
	bool dead;           /* destroyed: a late start message does nothing */
	struct ec *src;      /* the coordinator's layout until started (our reference) */
	bool started;
	unsigned opening;    /* sessions whose OPEN has not answered */
	struct snread *waiting, *waiting_tail; /* reads waiting for the opens */
	/* pieces whose local read met a full io queue (-EAGAIN): issued again at
	 * the next completion of one of our reads, or by the timer when none is
	 * in flight (retrying from tsr_worker_defer would spin: see ec.h) */
	struct snpiece *retry, *retry_tail;
	unsigned inflight; /* our reads in flight */
	int timer_fd;      /* one-shot retry timer, -1 until the start */
	bool timer_armed;
	struct sncopy copies[TSR_LAYOUT_MAX_COPIES];
	uint64_t degraded_reads;
};

/* One (stripe, data chunk) piece of a host read. */
struct snpiece {
	struct snread *r;
	uint64_t stripe;
	unsigned pos;      /* data position d */
	uint32_t col, len; /* column range in the chunk */
	uint8_t *dst;      /* in the host's buffer */
	/* degraded: positions tried / present, reads in flight, n*len bytes */
	uint8_t *bufs;
	uint32_t tried, present;
	unsigned inflight;
	bool degraded;     /* retry: degraded_issue, else the direct read */
	struct snpiece *next_retry;
};

struct snread {
	struct ecsnap *s;
	uint64_t offset;
	uint32_t len;
	uint8_t *buf;
	tsr_cb cb_fn;
	void *cb_arg;
	unsigned pending; /* pieces not finished */
	int status;       /* first error */
	size_t npieces;
	struct snread *next_wait;
	struct snpiece pieces[]; /* npieces */
};

static bool on_home(const struct ecsnap *s)
{
	return pthread_equal(pthread_self(), s->home_thread);
}

/* ---- sessions ------------------------------------------------------------- */

static void run_waiting(struct ecsnap *s);
static void timer_cb(void *arg, uint32_t events);

static void copy_fail(struct sncopy *c, int err, const char *what)
{
	if (c->state == SNC_FAILED)
		return;
	c->state = SNC_FAILED;
	if (c->s->dead) /* our own teardown cancelled it */
		return;
	tsr_warn("ec snapshot %s@%s: copy %u (%s) %s: %s; its chunks are decoded from the others",
		 c->s->vol, c->s->snap, c->idx, c->node_id, what, strerror(-err));
}

static void open_done(void *arg, int status, uint64_t handle, uint64_t size)
{
	struct sncopy *c = arg;
	struct ecsnap *s = c->s;

	if (status == 0 && size < tsr_ec_chunk_volume_size(s->size, s->k, s->unit))
		status = -EINVAL; /* smaller than the image needs: not this cut */
	if (status == 0 && c->state == SNC_OPENING) {
		c->handle = handle;
		c->state = SNC_OPEN;
	} else {
		copy_fail(c, status ? status : -ECANCELED, "cannot open its snapshot");
	}
	if (--s->opening == 0)
		run_waiting(s);
}

static void client_failed(void *arg, int err)
{
	copy_fail(arg, err, "lost its connection");
}

/* On the home worker, once: the copies' places from the coordinator's layout,
 * then a session per remote copy. */
static void start(struct ecsnap *s)
{
	struct ec *e = s->src;

	if (s->started)
		return;
	s->started = true;
	for (unsigned i = 0; i < s->n; i++) {
		struct sncopy *c = &s->copies[i];

		c->s = s;
		c->idx = i;
		memcpy(c->node_id, e->copies[i].node_id, sizeof(c->node_id));
		memcpy(c->address, e->copies[i].address, sizeof(c->address));
		c->local = e->copies[i].local;
		/* a copy not IN_SYNC, or with snapshot names it missed still to
		 * delete, may hold an old snapshot of this name (ec_snap.c) */
		c->stale = e->copies[i].state != TSR_COPY_IN_SYNC ||
			   ec_missed_pending(e, &e->copies[i]);
	}
	s->src = NULL;
	ec_put(e);
	s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (s->timer_fd >= 0 && tsr_worker_watch(s->home, s->timer_fd, EPOLLIN, timer_cb, s) < 0) {
		close(s->timer_fd);
		s->timer_fd = -1;
	}
	if (s->timer_fd < 0) /* still correct: retries wait for a completion */
		tsr_warn("ec snapshot %s@%s: no retry timer", s->vol, s->snap);
	s->opening = 1; /* held while the opens are sent */
	for (unsigned i = 0; i < s->n; i++) {
		struct sncopy *c = &s->copies[i];
		struct tsr_peer_client_opts po = { .address = c->address, .token = s->token,
						   .node_id = s->node_id,
						   .timeout_ms = s->timeout_ms };
		char name[2 * 64 + 2];
		int ret;

		if (c->stale) {
			copy_fail(c, -ESTALE, "is not in sync or missed snapshot operations");
			continue;
		}
		if (c->local) {
			c->state = c->svol != NULL ? SNC_OPEN : SNC_FAILED;
			continue;
		}
		snprintf(name, sizeof(name), "%s@%s", s->vol, s->snap);
		c->state = SNC_OPENING;
		ret = tsr_peer_client_create(s->home, &po, client_failed, c, &c->client);
		if (ret == 0) {
			s->opening++;
			ret = tsr_peer_open(c->client, name, s->epoch, open_done, c);
			if (ret)
				s->opening--;
		}
		if (ret)
			copy_fail(c, ret, "cannot be reached");
	}
	if (--s->opening == 0)
		run_waiting(s);
}

static void snap_unref(struct ecsnap *s);

static void start_msg(struct tsr_worker *w, void *arg)
{
	struct ecsnap *s = arg;

	(void)w;
	if (!s->dead)
		start(s);
	snap_unref(s);
}

/* ---- reads ------------------------------------------------------------------ */

static int copy_read(struct sncopy *c, uint64_t off, uint32_t len, void *buf, tsr_cb cb,
		     void *arg)
{
	if (c->state != SNC_OPEN)
		return -ENOTCONN;
	if (c->local)
		return tsr_svol_read(c->svol, tsr_worker_io(c->s->home), off, len, buf, cb, arg);
	return tsr_peer_read(c->client, c->handle, c->s->epoch, off, len, buf, cb, arg);
}

static void retry_push(struct ecsnap *s, struct snpiece *p, bool degraded)
{
	p->degraded = degraded;
	p->next_retry = NULL;
	if (s->retry_tail)
		s->retry_tail->next_retry = p;
	else
		s->retry = p;
	s->retry_tail = p;
	if (s->inflight == 0 && !s->timer_armed && s->timer_fd >= 0) {
		struct itimerspec its = { .it_value = { .tv_nsec = 2 * 1000 * 1000 } };

		s->timer_armed = timerfd_settime(s->timer_fd, 0, &its, NULL) == 0;
	}
}

static void direct_issue(struct snpiece *p);
static void degraded_issue(struct snpiece *p);

/* Issue the pieces that waited for io queue room (each may queue again). */
static void retry_run(struct ecsnap *s)
{
	struct snpiece *p = s->retry;

	s->retry = s->retry_tail = NULL;
	while (p != NULL) {
		struct snpiece *next = p->next_retry;

		if (p->degraded)
			degraded_issue(p);
		else
			direct_issue(p);
		p = next;
	}
}

static void timer_cb(void *arg, uint32_t events)
{
	struct ecsnap *s = arg;
	uint64_t v;

	(void)events;
	if (read(s->timer_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		tsr_warn("ec snapshot %s@%s: retry timer: %s", s->vol, s->snap, strerror(errno));
	s->timer_armed = false;
	retry_run(s);
}

/* One of our reads completed: room in the io queue, maybe. */
static void read_completed(struct ecsnap *s)
{
	s->inflight--;
	if (s->retry != NULL)
		retry_run(s);
}

static void piece_finish(struct snpiece *p, int status)
{
	struct snread *r = p->r;

	free(p->bufs);
	p->bufs = NULL;
	if (status && r->status == 0)
		r->status = status;
	if (--r->pending > 0)
		return;
	r->cb_fn(r->cb_arg, r->status);
	free(r);
}

static void degraded_read_done(struct snpiece *p, unsigned pos, int status)
{
	struct ecsnap *s = p->r->s;

	p->inflight--;
	if (status == 0) {
		p->present |= 1u << pos;
	} else {
		struct sncopy *c = &s->copies[tsr_ec_copy_of(p->stripe, pos, s->k, s->m)];

		if (status != -EIO) /* -EIO: a bad block; the copy stays usable */
			copy_fail(c, status, "failed a read");
	}
	degraded_issue(p);
}

/* A degraded read's completion names its piece and position. */
struct snsub {
	struct snpiece *p;
	unsigned pos;
};

static void sub_done(void *arg, int status)
{
	struct snsub *sub = arg;
	struct snpiece *p = sub->p;
	unsigned pos = sub->pos;
	struct ecsnap *s = p->r->s;

	free(sub);
	degraded_read_done(p, pos, status);
	read_completed(s);
}

/* Read more positions until k are present (or none is left), then decode. */
static void degraded_issue(struct snpiece *p)
{
	struct ecsnap *s = p->r->s;
	unsigned have = (unsigned)__builtin_popcount(p->present);
	bool full = false;

	for (unsigned pos = 0; pos < s->n && have + p->inflight < s->k; pos++) {
		struct sncopy *c = &s->copies[tsr_ec_copy_of(p->stripe, pos, s->k, s->m)];
		struct snsub *sub;
		int ret;

		if (pos == p->pos || (p->tried & (1u << pos)) || c->state != SNC_OPEN)
			continue;
		p->tried |= 1u << pos;
		sub = malloc(sizeof(*sub));
		if (sub == NULL)
			continue;
		*sub = (struct snsub){ .p = p, .pos = pos };
		ret = copy_read(c, p->stripe * s->unit + p->col, p->len,
				p->bufs + (size_t)pos * p->len, sub_done, sub);
		if (ret) {
			free(sub);
			if (ret == -EAGAIN) {
				/* the io queue is full: this position again later */
				p->tried &= ~(1u << pos);
				full = true;
				break;
			}
			if (ret != -ENOMEM)
				copy_fail(c, ret, "refused a read");
			continue;
		}
		p->inflight++;
		s->inflight++;
	}
	if (full && p->inflight == 0) {
		retry_push(s, p, true);
		return;
	}
	if (p->inflight > 0)
		return;
	if (have < s->k) {
		if (p->r->status == 0) /* once per host read */
			tsr_warn("ec snapshot %s@%s: stripe %llu: only %u of the %u chunks needed could "
				 "be read", s->vol, s->snap, (unsigned long long)p->stripe, have,
				 s->k);
		piece_finish(p, -EIO);
		return;
	}
	{
		uint8_t *chunks[TSR_LAYOUT_MAX_COPIES];
		int ret;

		for (unsigned i = 0; i < s->n; i++)
			chunks[i] = p->bufs + (size_t)i * p->len;
		ret = tsr_ec_decode(s->codec, p->len, chunks, p->present, 1u << p->pos);
		if (ret == 0) {
			memcpy(p->dst, chunks[p->pos], p->len);
			s->degraded_reads++;
		}
		piece_finish(p, ret);
	}
}

static void degraded_start(struct snpiece *p)
{
	struct ecsnap *s = p->r->s;

	p->bufs = aligned_alloc(TSR_BLOCK_SIZE, (size_t)s->n * p->len);
	if (p->bufs == NULL) {
		piece_finish(p, -ENOMEM);
		return;
	}
	p->tried = 1u << p->pos;
	p->present = 0;
	p->inflight = 0;
	degraded_issue(p);
}

static void direct_done(void *arg, int status)
{
	struct snpiece *p = arg;
	struct ecsnap *s = p->r->s;

	if (status == 0) {
		piece_finish(p, 0);
	} else {
		if (status != -EIO)
			copy_fail(&s->copies[tsr_ec_copy_of(p->stripe, p->pos, s->k, s->m)],
				  status, "failed a read");
		degraded_start(p);
	}
	read_completed(s);
}

/* The piece from its own copy; decoded from others when that cannot be. */
static void direct_issue(struct snpiece *p)
{
	struct ecsnap *s = p->r->s;
	struct sncopy *c = &s->copies[tsr_ec_copy_of(p->stripe, p->pos, s->k, s->m)];
	int ret = copy_read(c, p->stripe * s->unit + p->col, p->len, p->dst, direct_done, p);

	if (ret == 0)
		s->inflight++;
	else if (ret == -EAGAIN)
		retry_push(s, p, false);
	else
		degraded_start(p);
}

static void read_issue(struct snread *r)
{
	/* pending counts an extra reference while issuing: no piece can
	 * complete the read before every piece was issued */
	r->pending = (unsigned)r->npieces + 1;
	for (size_t i = 0; i < r->npieces; i++)
		direct_issue(&r->pieces[i]);
	if (--r->pending == 0) {
		r->cb_fn(r->cb_arg, r->status);
		free(r);
	}
}

static void run_waiting(struct ecsnap *s)
{
	while (s->waiting != NULL) {
		struct snread *r = s->waiting;

		s->waiting = r->next_wait;
		if (s->waiting == NULL)
			s->waiting_tail = NULL;
		read_issue(r);
	}
}

static int snap_read(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len, void *buf,
		     tsr_cb cb_fn, void *cb_arg)
{
	struct ecsnap *s = ctx;
	uint64_t first = offset / s->unit, last = (offset + len - 1) / s->unit;
	size_t npieces = (size_t)(last - first + 1);
	struct snread *r;
	uint64_t off = offset;

	(void)io;
	if (!on_home(s))
		return -EXDEV; /* vol.c runs a snapshot of an ec volume on its home */
	r = calloc(1, sizeof(*r) + npieces * sizeof(r->pieces[0]));
	if (r == NULL)
		return -ENOMEM;
	*r = (struct snread){ .s = s, .offset = offset, .len = len, .buf = buf, .cb_fn = cb_fn,
			      .cb_arg = cb_arg, .npieces = npieces };
	/* a data unit of the volume: stripe = u / k, position = u % k */
	for (size_t i = 0; i < npieces; i++) {
		struct snpiece *p = &r->pieces[i];
		uint64_t u = first + i;
		uint64_t end = (u + 1) * s->unit;

		if (end > offset + len)
			end = offset + len;
		p->r = r;
		p->stripe = u / s->k;
		p->pos = (unsigned)(u % s->k);
		p->col = (uint32_t)(off - u * s->unit);
		p->len = (uint32_t)(end - off);
		p->dst = (uint8_t *)buf + (off - offset);
		off = end;
	}
	start(s);
	if (s->opening > 0) {
		if (s->waiting_tail)
			s->waiting_tail->next_wait = r;
		else
			s->waiting = r;
		s->waiting_tail = r;
		return 0;
	}
	read_issue(r);
	return 0;
}

static uint64_t snap_size(void *ctx)
{
	struct ecsnap *s = ctx;

	return s->size;
}

static int snap_write(void *ctx, struct tsr_io *io, uint64_t offset, uint32_t len,
		      const void *buf, unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	(void)ctx, (void)io, (void)offset, (void)len, (void)buf, (void)flags;
	(void)cb_fn, (void)cb_arg;
	return -EROFS;
}

static int snap_flush(void *ctx, struct tsr_io *io, tsr_cb cb_fn, void *cb_arg)
{
	(void)ctx, (void)io;
	cb_fn(cb_arg, 0); /* nothing is ever written */
	return 0;
}

static int snap_trim(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len, tsr_cb cb_fn,
		     void *cb_arg)
{
	(void)ctx, (void)io, (void)offset, (void)len, (void)cb_fn, (void)cb_arg;
	return -EROFS;
}

static int snap_write_zeroes(void *ctx, struct tsr_io *io, uint64_t offset, uint64_t len,
			     unsigned flags, tsr_cb cb_fn, void *cb_arg)
{
	(void)ctx, (void)io, (void)offset, (void)len, (void)flags, (void)cb_fn, (void)cb_arg;
	return -EROFS;
}

static int snap_snap(void *ctx, const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg)
{
	(void)ctx, (void)req, (void)cb_fn, (void)cb_arg;
	return -EROFS;
}

/* ---- create / destroy ---------------------------------------------------------- */

static void snap_free(struct ecsnap *s)
{
	for (unsigned i = 0; i < s->n; i++)
		tsr_svol_put(s->copies[i].svol);
	tsr_ec_codec_destroy(s->codec);
	free(s);
}

static void snap_unref(struct ecsnap *s)
{
	if (--s->refs == 0)
		snap_free(s);
}

/* On the home worker: clients (their requests in flight end -ECANCELED),
 * the reference on the coordinator's layout if never started, then ours. */
static void destroy_on_home(struct ecsnap *s)
{
	s->dead = true;
	if (s->src != NULL) {
		ec_put(s->src);
		s->src = NULL;
	}
	if (s->timer_fd >= 0) {
		tsr_worker_unwatch(s->home, s->timer_fd);
		close(s->timer_fd);
		s->timer_fd = -1;
	}
	for (unsigned i = 0; i < s->n; i++) {
		tsr_peer_client_destroy(s->copies[i].client);
		s->copies[i].client = NULL;
	}
	snap_unref(s);
}

static void destroy_msg(struct tsr_worker *w, void *arg)
{
	(void)w;
	destroy_on_home(arg);
}

/* Any thread; the clients go on the home worker (now, or by a message:
 * nothing waits for it, the layout is already unreachable). */
static void snap_destroy(void *ctx)
{
	struct ecsnap *s = ctx;

	if (s == NULL)
		return;
	if (on_home(s))
		destroy_on_home(s);
	else if (tsr_worker_send(s->home, destroy_msg, s) < 0)
		tsr_error("ec snapshot %s@%s: home worker stopped first: leaking its sessions",
			  s->vol, s->snap);
}

static const struct tsr_layout_ops ec_snap_layout_ops = {
	.name = "ec-snapshot",
	.size = snap_size,
	.read = snap_read,
	.write = snap_write,
	.flush = snap_flush,
	.trim = snap_trim,
	.write_zeroes = snap_write_zeroes,
	.block_status = NULL, /* everything allocated (see the file comment) */
	.snap = snap_snap,
	.destroy = snap_destroy,
};

bool tsr_layout_is_ec_snapshot(const struct tsr_layout *l)
{
	return l != NULL && tsr_layout_ops_of(l) == &ec_snap_layout_ops;
}

/* ---- does the snapshot exist? (an export whose own chunk lacks it) --------- */

/*
 * When this node's chunk copy lacks the snapshot (it was away at the cut and
 * the coordinator that could make it up was elsewhere, it was rebuilt, or
 * no copy has that name) or this node holds no copy, the export asks the
 * other copies before it is opened, so that a name no copy has is refused
 * (-ENOENT: "unknown export", as a mirror or local volume answers) rather
 * than opened to fail every read, and a snapshot k copies hold is served.
 *
 * The caller waits (tsr_vol_get is synchronous), so the asking runs on a
 * worker of its own, started for it and stopped after: a peer session on
 * VOL@SNAP at every copy that would be a source (IN_SYNC, no missed
 * operations pending; the places published by ec_publish), the caller
 * waiting at most the peer timeout + 1 s.  Only on this path: an export
 * whose chunk is here costs nothing more.  The caller is no event loop: the
 * NBD handshake opens exports on the NBD server's opener threads
 * (nbd_server.c nbd_open_start), and vol.c makes this layout without the
 * volume set's lock (the coordinator pinned), so a frozen copy delays only
 * the opens of that snapshot (test-ec-snap-probe-stall).  A copy asked
 * about a name it lacks logs nothing above DEBUG (store snap.c).
 */
#define EC_PROBE_WORKER 900 /* the asking worker's index: its thread's name */

struct probe;

struct probe_copy {
	struct probe *p;
	char address[128];
	char node_id[64];
	struct tsr_peer_client *client;
	int status;    /* -EINPROGRESS until the OPEN answers (under p->lock) */
	uint64_t size; /* the chunk volume's snapshot size, status 0 */
};

struct probe {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned pending; /* OPENs not answered (under lock) */
	char name[2 * 64 + 2];
	const char *token, *node_id;
	unsigned timeout_ms;
	uint64_t epoch;
	unsigned n;
	struct probe_copy c[TSR_LAYOUT_MAX_COPIES];
};

static void probe_answered(struct probe_copy *pc, int status, uint64_t size)
{
	struct probe *p = pc->p;

	pthread_mutex_lock(&p->lock);
	if (pc->status == -EINPROGRESS) {
		pc->status = status;
		pc->size = size;
		if (--p->pending == 0)
			pthread_cond_signal(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
}

static void probe_open_done(void *arg, int status, uint64_t handle, uint64_t size)
{
	(void)handle; /* the session ends with the client */
	probe_answered(arg, status, size);
}

static void probe_start_msg(struct tsr_worker *w, void *arg)
{
	struct probe *p = arg;

	for (unsigned i = 0; i < p->n; i++) {
		struct probe_copy *pc = &p->c[i];
		struct tsr_peer_client_opts po = {.address = pc->address,
						  .token = p->token,
						  .node_id = p->node_id,
						  .timeout_ms = p->timeout_ms};
		int ret = tsr_peer_client_create(w, &po, NULL, NULL, &pc->client);

		if (ret == 0)
			ret = tsr_peer_open(pc->client, p->name, p->epoch, probe_open_done, pc);
		if (ret)
			probe_answered(pc, ret, 0);
	}
}

static void probe_end_msg(struct tsr_worker *w, void *arg)
{
	struct probe *p = arg;

	(void)w;
	for (unsigned i = 0; i < p->n; i++) {
		tsr_peer_client_destroy(p->c[i].client); /* OPENs still out: -ECANCELED */
		p->c[i].client = NULL;
	}
}

/*
 * Any thread.  0: at least k copies hold snap (*chunk_size: the size of
 * their chunk-volume snapshots); -ENOENT: fewer than k hold it and every
 * other copy said it lacks it (or was asked nothing and could not make up
 * the difference); -EHOSTUNREACH: fewer than k answered that they hold it,
 * enough others could not be asked (logged); -ENOMEM, a worker's errors.
 */
static int snap_exists(struct ec *e, const char *snap, uint64_t *chunk_size)
{
	struct tsr_layout_status st;
	struct tsr_worker *w = NULL;
	struct probe *p;
	struct timespec until;
	unsigned have = 0, unknown = 0, deadline_ms;
	struct tsr_io_opts io = {.kind = TSR_IO_AUTO, .queue_depth = 4};
	pthread_condattr_t ca;
	int local = -1, ret;

	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	snprintf(p->name, sizeof(p->name), "%s@%s", e->name, snap);
	p->token = e->token;
	p->node_id = e->node_id;
	p->timeout_ms = e->peer_timeout_ms;
	p->epoch = e->epoch;
	pthread_mutex_lock(&e->cs.status_lock);
	st = e->cs.status;
	for (unsigned i = 0; i < e->n_copies && i < st.n_copies; i++) {
		const struct ec_place *pl = &e->places[i];

		if (pl->local) {
			local = (int)i;
			continue;
		}
		if (st.copies[i].state != TSR_COPY_IN_SYNC || pl->address[0] == '\0') {
			unknown++;
			continue;
		}
		p->c[p->n] = (struct probe_copy){.p = p, .status = -EINPROGRESS};
		memcpy(p->c[p->n].address, pl->address, sizeof(pl->address));
		memcpy(p->c[p->n].node_id, st.copies[i].node_id, sizeof(p->c[p->n].node_id));
		p->n++;
	}
	pthread_mutex_unlock(&e->cs.status_lock);
	/* this node's copy was asked already: it lacks snap, or it is no source
	 * (its snap may be an old one: not counted, cannot say) */
	if (local >= 0 && (st.copies[local].state != TSR_COPY_IN_SYNC ||
			   ec_missed_pending_node(e, st.copies[local].node_id)))
		unknown++;
	for (unsigned j = 0; j < p->n; j++) {
		/* missed operations pending: it may hold an old snap, no source */
		if (ec_missed_pending_node(e, p->c[j].node_id))
			p->c[j].status = -ESTALE;
		else
			p->pending++;
	}
	ret = 0;
	if (p->pending > 0) {
		ret = tsr_worker_start(EC_PROBE_WORKER, &io, &w);
		if (ret == 0)
			ret = tsr_worker_send(w, probe_start_msg, p);
		if (ret < 0) {
			tsr_warn(
			    "ec snapshot %s: cannot ask the other copies whether they hold it: %s",
			    p->name, strerror(-ret));
			tsr_worker_stop(w);
			goto out;
		}
		/* each OPEN ends within the peer timeout (its connection fails) */
		deadline_ms = (p->timeout_ms ? p->timeout_ms : 5000) + 1000;
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += deadline_ms / 1000;
		until.tv_nsec += (long)(deadline_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_mutex_lock(&p->lock);
		while (p->pending > 0 && pthread_cond_timedwait(&p->cond, &p->lock, &until) == 0)
			;
		pthread_mutex_unlock(&p->lock);
		if (tsr_worker_send(w, probe_end_msg, p) < 0)
			tsr_error("ec snapshot %s: the asking worker stopped first", p->name);
		tsr_worker_stop(w); /* runs probe_end_msg first: no answer comes after */
	}
	for (unsigned j = 0; j < p->n; j++) {
		int status = p->c[j].status;

		if (status == 0 && have++ == 0)
			*chunk_size = p->c[j].size;
		else if (status != 0 && status != -ENOENT)
			unknown++; /* down, stale, timed out: cannot say */
	}
	if (have >= e->k)
		ret = 0;
	else if (have + unknown < e->k)
		ret = -ENOENT;
	else {
		tsr_warn("ec snapshot %s: cannot be read: %u of its copies hold it, %u needed; %u "
			 "more cannot be asked now (out of sync, missed operations pending, or not "
			 "answering)",
			 p->name, have, e->k, unknown);
		ret = -EHOSTUNREACH;
	}
out:
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
	return ret;
}

/* Any thread: this node's chunk copy is IN_SYNC with no missed operations
 * pending (published status), so its snapshot of a name is the real one. */
static bool local_source(struct ec *e)
{
	struct tsr_layout_status st;
	int local = -1;

	pthread_mutex_lock(&e->cs.status_lock);
	st = e->cs.status;
	for (unsigned i = 0; i < e->n_copies && i < st.n_copies; i++)
		if (e->places[i].local)
			local = (int)i;
	pthread_mutex_unlock(&e->cs.status_lock);
	return local >= 0 && st.copies[local].state == TSR_COPY_IN_SYNC &&
	       !ec_missed_pending_node(e, st.copies[local].node_id);
}

static int ec_snap_image_on(struct ec *e, const char *snap, bool check, struct tsr_layout **out,
			    struct tsr_worker **home);

int tsr_layout_ec_snap_create(struct tsr_layout *coord, const char *snap,
			      struct tsr_layout **out, struct tsr_worker **home)
{
	if (!tsr_layout_is_ec(coord) || snap == NULL || !tsr_valid_name(snap))
		return -EINVAL;
	return ec_snap_image_on(tsr_layout_ctx(coord), snap, true, out, home);
}

/* The make-up's image (ec_snap.c) needs no check: a snapshot that cannot be
 * read is skipped there.  On the home worker, which must not wait. */
int ec_snap_image(struct ec *e, const char *snap, struct tsr_layout **out)
{
	struct tsr_worker *home;

	if (snap == NULL || !tsr_valid_name(snap))
		return -EINVAL;
	return ec_snap_image_on(e, snap, false, out, &home);
}

static int ec_snap_image_on(struct ec *e, const char *snap, bool check, struct tsr_layout **out,
			    struct tsr_worker **home)
{
	struct ecsnap *s;
	uint64_t chunk_size;
	bool have_local = false;
	int ret;

	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->refs = 1;
	s->timer_fd = -1;
	memcpy(s->vol, e->name, sizeof(s->vol));
	snprintf(s->snap, sizeof(s->snap), "%s", snap);
	s->k = e->k;
	s->m = e->m;
	s->n = e->n;
	s->unit = e->unit;
	s->width = e->width;
	s->epoch = e->epoch;
	memcpy(s->node_id, e->node_id, sizeof(s->node_id));
	memcpy(s->token, e->token, sizeof(s->token));
	s->timeout_ms = e->peer_timeout_ms;
	s->store = e->store;
	s->home = e->home;
	s->home_thread = e->home_thread;
	s->size = e->size;
	ret = tsr_ec_codec_create(s->k, s->m, &s->codec);
	if (ret)
		goto err;
	/*
	 * This node's chunk copy (when it holds one): the snapshot's size, and
	 * -ENOENT for a snapshot it lacks while it holds the volume (every
	 * copy in sync at the cut has it; a copy away then may not, and the
	 * others still decode: only an error other than -ENOENT fails).
	 */
	for (unsigned i = 0; i < e->n_copies; i++) {
		if (!e->copies[i].local)
			continue;
		ret = tsr_store_snap_open(e->store, e->name, snap, &s->copies[i].svol);
		if (ret == -ENOENT)
			break;
		if (ret)
			goto err;
		have_local = true;
		break;
	}
	/* not here, or here but maybe an old one (this copy is no source): the
	 * export exists if k other copies hold it */
	if (check && (!have_local || !local_source(e))) {
		ret = snap_exists(e, snap, &chunk_size);
		if (ret)
			goto err;
	} else if (have_local) {
		chunk_size = 0;
		for (unsigned i = 0; i < e->n_copies; i++)
			if (s->copies[i].svol != NULL)
				chunk_size = tsr_svol_size(s->copies[i].svol);
	} else {
		chunk_size = tsr_ec_chunk_volume_size(e->size, e->k, e->unit);
	}
	/* the volume was grown after the cut: its size then (whole stripes) */
	if (chunk_size != tsr_ec_chunk_volume_size(e->size, e->k, e->unit))
		s->size = chunk_size / s->unit * s->width;
	ret = tsr_layout_new(&ec_snap_layout_ops, s, out);
	if (ret)
		goto err;
	ec_get(e);
	s->src = e;
	/* the message holds a reference: the layout may be destroyed first */
	s->refs++;
	if (tsr_worker_send(s->home, start_msg, s) < 0) {
		s->refs--;
		tsr_warn("ec snapshot %s@%s: start deferred to the first read", s->vol, snap);
	}
	*home = s->home;
	return 0;
err:
	snap_free(s);
	return ret;
}

/* ---- diff mapping ------------------------------------------------------------ */

static int ext_push(struct tsr_extent **v, size_t *n, size_t *cap, uint64_t off, uint64_t len,
		    uint32_t flags)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		struct tsr_extent *nv = realloc(*v, ncap * sizeof(**v));

		if (nv == NULL)
			return -ENOMEM;
		*v = nv;
		*cap = ncap;
	}
	(*v)[(*n)++] = (struct tsr_extent){ .offset = off, .length = len, .flags = flags };
	return 0;
}

static int ext_cmp(const void *a, const void *b)
{
	const struct tsr_extent *x = a, *y = b;

	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return x->length < y->length ? -1 : x->length > y->length;
}

/* Volume extent of (stripe, data position, column range), clipped to size. */
static int emit(struct tsr_extent **v, size_t *n, size_t *cap, uint64_t size, unsigned k,
		uint32_t unit, uint64_t stripe, unsigned pos, uint64_t col, uint64_t len,
		uint32_t flags)
{
	uint64_t off = stripe * k * unit + (uint64_t)pos * unit + col;

	if (off >= size)
		return 0;
	if (len > size - off)
		len = size - off;
	return ext_push(v, n, cap, off, len, flags);
}

int tsr_ec_diff_map(unsigned k, unsigned m, uint32_t unit, uint64_t size,
		    const struct tsr_ec_chunk_diff *diffs, struct tsr_extent **out, size_t *count)
{
	unsigned n = k + m, missing = 0;
	uint32_t missing_mask = 0;
	struct tsr_extent *v = NULL;
	size_t nv = 0, cap = 0, w;
	int ret = 0;

	if (k < 1 || k > TSR_EC_MAX_K || m < 1 || m > TSR_EC_MAX_M || !tsr_ec_unit_valid(unit) ||
	    diffs == NULL || out == NULL || count == NULL)
		return -EINVAL;
	for (unsigned c = 0; c < n; c++)
		if (!diffs[c].have) {
			missing++;
			missing_mask |= 1u << c;
		}
	if (missing > m)
		return -EHOSTUNREACH;
	for (unsigned c = 0; c < n && ret == 0; c++) {
		for (size_t i = 0; diffs[c].have && i < diffs[c].n && ret == 0; i++) {
			const struct tsr_extent *x = &diffs[c].ext[i];
			uint64_t off = x->offset, end = x->offset + x->length;
			uint32_t flags = x->flags & (TSR_EXTENT_HOLE | TSR_EXTENT_ZERO);

			/* one piece per stripe (a chunk is unit bytes of the chunk volume) */
			while (off < end && ret == 0) {
				uint64_t stripe = off / unit, col = off % unit;
				uint64_t len = unit - col < end - off ? unit - col : end - off;
				unsigned pos = tsr_ec_position_of(stripe, c, k, m);

				if (pos < k) {
					ret = emit(&v, &nv, &cap, size, k, unit, stripe, pos, col,
						   len, flags);
				} else if (missing_mask) {
					/* a parity change: some data chunk of this column
					 * changed; where that chunk's own copy cannot say,
					 * count it changed (flags unknown: data) */
					for (unsigned d = 0; d < k && ret == 0; d++)
						if (missing_mask &
						    (1u << tsr_ec_copy_of(stripe, d, k, m)))
							ret = emit(&v, &nv, &cap, size, k, unit,
								   stripe, d, col, len, 0);
				}
				off += len;
			}
		}
	}
	if (ret) {
		free(v);
		return ret;
	}
	if (nv > 1)
		qsort(v, nv, sizeof(*v), ext_cmp);
	/* merge overlapping or adjacent extents; overlapping ones of different
	 * kinds become data (only a parity-implied extent can overlap another) */
	w = 0;
	for (size_t i = 0; i < nv; i++) {
		struct tsr_extent *last = w ? &v[w - 1] : NULL;

		if (last && v[i].offset <= last->offset + last->length &&
		    (v[i].flags == last->flags || v[i].offset < last->offset + last->length)) {
			uint64_t end = v[i].offset + v[i].length;

			if (v[i].flags != last->flags)
				last->flags = 0;
			if (end > last->offset + last->length)
				last->length = end - last->offset;
			continue;
		}
		v[w++] = v[i];
	}
	*out = v;
	*count = w;
	return 0;
}
