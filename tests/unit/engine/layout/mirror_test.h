/*
 * Harness for the mirror layout tests: real replicas in one process.
 *
 * A "node" is a store in a scratch directory under /var/tmp (O_DIRECT needs
 * a disk file system), a tsr_peer_server on its own worker, a 127.0.0.1:0
 * listener and an accept thread handing each connection to that worker.
 * A node can be stopped (listener closed, worker stopped: its connections
 * drop) and restarted on a new port, its store kept.
 *
 * The layout under test runs on its own home worker; data calls are made on
 * it through messages (on_home), and the hooks record every state change
 * in a shared event log, answering from a helper thread after a short delay.
 */
#ifndef TSR_MIRROR_TEST_H
#define TSR_MIRROR_TEST_H

#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/socket.h>
#include <time.h>

#include "tessera/layout.h"
#include "tessera/mirror.h"
#include "tessera/peer.h"
#include "tessera/worker.h"
#include "../store/store_test.h"

#define TOKEN     "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define MAX_NODES 4
#define VOLNAME   "vol"

struct node {
	char dir[512];
	char node_id[32];
	struct tsr_store *store;
	struct tsr_peer_server *srv;
	struct tsr_worker *w;
	int lfd;
	int port;
	char address[64];
	pthread_t acceptor;
	bool running;
};

struct conn_msg {
	struct node *n;
	int fd;
};

static UNUSED struct tsr_worker *start_worker_or_skip(unsigned index)
{
	struct tsr_io_opts o = {.kind = TSR_IO_AUTO};
	struct tsr_worker *w = NULL;
	int ret = tsr_worker_start(index, &o, &w);

	if (ret == -ENOSYS || ret == -EPERM) {
		fprintf(stderr, "no I/O backend available: %s\n", strerror(-ret));
		exit(77);
	}
	if (ret != 0)
		abort();
	return w;
}

static void node_conn_start(struct tsr_worker *w, void *arg)
{
	struct conn_msg *cm = arg;

	tsr_peer_conn_start(cm->n->srv, w, cm->fd);
	free(cm);
}

static void *node_acceptor(void *arg)
{
	struct node *n = arg;

	for (;;) {
		int fd = accept(n->lfd, NULL, NULL);
		struct conn_msg *cm;

		if (fd < 0)
			return NULL; /* listener shut down */
		cm = malloc(sizeof(*cm));
		cm->n = n;
		cm->fd = fd;
		if (tsr_worker_send(n->w, node_conn_start, cm) < 0) {
			close(fd);
			free(cm);
		}
	}
}

/* A peer that never answers: a listening socket nobody accepts on (the
 * kernel completes the handshake, HELLO waits forever): a client's request
 * times out (peer_timeout_ms).  Returns the fd (the caller closes it);
 * address filled. */
static UNUSED int peer_black_hole(char *address, size_t len)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t slen = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &slen), 0);
	snprintf(address, len, "127.0.0.1:%d", ntohs(sa.sin_port));
	return fd;
}

/* An address nothing listens on (a port bound once, then closed): the
 * connect is refused. */
static UNUSED void peer_refused_address(char *address, size_t len)
{
	close(peer_black_hole(address, len));
}

static UNUSED int node_listen(struct node *n)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int one = 1;

	n->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (n->lfd < 0)
		return -errno;
	setsockopt(n->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(n->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(n->lfd, 64) < 0 ||
	    getsockname(n->lfd, (struct sockaddr *)&sa, &len) < 0)
		return -errno;
	n->port = ntohs(sa.sin_port);
	snprintf(n->address, sizeof(n->address), "127.0.0.1:%d", n->port);
	return 0;
}

/*
 * Serve the node (again): worker, listener on a fresh port, accept thread.
 * Every run gets a worker index never used before in this process: the peer
 * server keeps a context per worker index and recognises its worker by
 * address, and a restarted worker can get the stopped one's address (then
 * its connections were refused as belonging to a stopped worker).
 */
static UNUSED void node_run(struct node *n, unsigned index)
{
	static unsigned next_index = 20;

	(void)index;
	n->w = start_worker_or_skip(next_index);
	next_index = next_index >= 250 ? 20 : next_index + 1;
	if (node_listen(n) < 0)
		abort();
	pthread_create(&n->acceptor, NULL, node_acceptor, n);
	n->running = true;
}

/* node_run with a fault-injecting I/O backend (grammar: tsr_io_opts) under
 * the node's store operations. */
static UNUSED void node_run_faulty(struct node *n, const char *fault_spec)
{
	static unsigned next_index = 251; /* above node_run's 20..250 */
	struct tsr_io_opts o = {.kind = TSR_IO_AUTO, .fault_spec = fault_spec};

	int ret = tsr_worker_start(next_index, &o, &n->w);

	if (ret == -ENOSYS || ret == -EPERM) {
		fprintf(stderr, "no I/O backend available: %s\n", strerror(-ret));
		exit(77);
	}
	if (ret != 0)
		abort();
	next_index = next_index >= 255 ? 251 : next_index + 1;
	if (node_listen(n) < 0)
		abort();
	pthread_create(&n->acceptor, NULL, node_acceptor, n);
	n->running = true;
}

/* The node goes away: no listener, every connection dropped. */
static UNUSED void node_stop(struct node *n)
{
	if (!n->running)
		return;
	shutdown(n->lfd, SHUT_RDWR);
	pthread_join(n->acceptor, NULL);
	close(n->lfd);
	n->lfd = -1;
	tsr_worker_stop(n->w);
	n->w = NULL;
	n->running = false;
}

static UNUSED int node_init(struct node *n, unsigned index, uint64_t vol_size)
{
	struct tsr_peer_server_opts so = {.token = TOKEN};
	int ret;

	memset(n, 0, sizeof(*n));
	n->lfd = -1;
	snprintf(n->node_id, sizeof(n->node_id), "node%u", index);
	ret = scratch_dir(n->dir, sizeof(n->dir));
	if (ret < 0)
		return ret;
	ret = tsr_store_open(n->dir, &(struct tsr_store_opts){0}, &n->store);
	if (ret < 0)
		return ret;
	if (vol_size) {
		ret = tsr_store_vol_create(n->store, VOLNAME, vol_size, NULL);
		if (ret < 0)
			return ret;
	}
	so.store = n->store;
	so.node_id = n->node_id;
	ret = tsr_peer_server_create(&so, &n->srv);
	if (ret < 0)
		return ret;
	node_run(n, 10 + index);
	return 0;
}

static UNUSED void node_fini(struct node *n)
{
	node_stop(n);
	tsr_peer_server_destroy(n->srv);
	tsr_store_close(n->store);
	rm_rf(n->dir);
}

/* The volume's data file of a node, read whole (holes read as zeros). */
static UNUSED int node_read_all(struct node *n, uint8_t *out, uint64_t size)
{
	struct tsr_vol_info info;
	char path[PATH_MAX];
	ssize_t got;
	int fd;

	if (tsr_store_vol_info(n->store, VOLNAME, &info) < 0)
		return -ENOENT;
	vol_file(n->dir, info.uuid, "data", path);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -errno;
	memset(out, 0, size);
	got = pread(fd, out, size, 0);
	close(fd);
	return got < 0 ? -EIO : 0;
}

/* Write behind the layout's back, straight into a node's store. */
static UNUSED int node_store_write(struct node *n, uint64_t off, uint32_t len, const void *buf)
{
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	struct tsr_svol *v = NULL;
	int ret;

	if (io == NULL)
		return -ENOMEM;
	ret = tsr_store_vol_open(n->store, VOLNAME, &v);
	if (ret == 0)
		ret = swrite(v, io, off, len, buf, TSR_WRITE_FUA);
	if (v != NULL)
		tsr_svol_put(v);
	tsr_io_destroy(io);
	return ret;
}

static UNUSED int node_store_read(struct node *n, uint64_t off, uint32_t len, void *buf)
{
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	struct tsr_svol *v = NULL;
	int ret;

	if (io == NULL)
		return -ENOMEM;
	ret = tsr_store_vol_open(n->store, VOLNAME, &v);
	if (ret == 0)
		ret = sread(v, io, off, len, buf);
	if (v != NULL)
		tsr_svol_put(v);
	tsr_io_destroy(io);
	return ret;
}

/* ---- time ---- */

static UNUSED uint64_t mono_ms(void)
{
	return (uint64_t)tsr_mono_ms();
}

static UNUSED int sem_wait_ms(sem_t *s, unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return sem_timedwait(s, &ts);
}

/* ---- event log: hook calls and acks, in order ---- */

enum ev_kind { EV_HOOK, EV_ACK };
struct ev {
	enum ev_kind kind;
	unsigned idx;           /* hook: copy */
	enum tsr_copy_state st; /* hook: state recorded */
	int status;             /* ack: status */
	uint64_t off;           /* ack: write offset */
};

static struct {
	pthread_mutex_t lock;
	struct ev ev[4096];
	unsigned n;
	int hook_status; /* what the hooks answer (0 or -errno) */
	unsigned hook_delay_ms;
	int hooks_inflight;
	enum tsr_copy_state state[TSR_MIRROR_MAX_COPIES]; /* as "recorded" */
	/* like the cluster: the hook takes this lock on the calling (home) thread */
	pthread_mutex_t caller_lock;
} g_log = {.lock = PTHREAD_MUTEX_INITIALIZER,
	   .hook_delay_ms = 10,
	   .caller_lock = PTHREAD_MUTEX_INITIALIZER};

static UNUSED void log_add(struct ev e)
{
	pthread_mutex_lock(&g_log.lock);
	if (g_log.n < 4096)
		g_log.ev[g_log.n++] = e;
	pthread_mutex_unlock(&g_log.lock);
}

static UNUSED void log_reset(void)
{
	pthread_mutex_lock(&g_log.lock);
	g_log.n = 0;
	g_log.hook_status = 0;
	g_log.hook_delay_ms = 10;
	pthread_mutex_unlock(&g_log.lock);
}

struct hook_call {
	unsigned idx;
	enum tsr_copy_state st;
	void (*done)(void *, int);
	void *done_arg;
};

static void *hook_thread(void *arg)
{
	struct hook_call *hc = arg;
	int status;

	usleep(g_log.hook_delay_ms * 1000);
	pthread_mutex_lock(&g_log.lock);
	status = g_log.hook_status;
	if (status == 0) {
		g_log.state[hc->idx] = hc->st;
		if (g_log.n < 4096)
			g_log.ev[g_log.n++] =
			    (struct ev){.kind = EV_HOOK, .idx = hc->idx, .st = hc->st};
	}
	pthread_mutex_unlock(&g_log.lock);
	hc->done(hc->done_arg, status);
	__atomic_fetch_sub(&g_log.hooks_inflight, 1, __ATOMIC_SEQ_CST);
	free(hc);
	return NULL;
}

static UNUSED void test_set_copy_state(void *arg, const char *vol, unsigned idx,
				       const char *node_id, enum tsr_copy_state st,
				       void (*done)(void *, int), void *done_arg)
{
	struct hook_call *hc = malloc(sizeof(*hc));
	pthread_t t;

	(void)arg;
	(void)vol;
	(void)node_id;
	pthread_mutex_lock(&g_log.caller_lock);
	pthread_mutex_unlock(&g_log.caller_lock);
	hc->idx = idx;
	hc->st = st;
	hc->done = done;
	hc->done_arg = done_arg;
	__atomic_fetch_add(&g_log.hooks_inflight, 1, __ATOMIC_SEQ_CST);
	pthread_create(&t, NULL, hook_thread, hc);
	pthread_detach(t);
}

/* Wait until every hook call has been answered (before a worker or the
 * layout they answer goes). */
static UNUSED void hooks_settle(void)
{
	while (__atomic_load_n(&g_log.hooks_inflight, __ATOMIC_SEQ_CST) > 0)
		usleep(1000);
}

/* ---- data calls on the home worker ---- */

enum dkind { D_READ, D_WRITE, D_FLUSH, D_TRIM, D_ZEROES, D_READ_DIRECT };

struct dcall {
	struct tsr_layout *l;
	enum dkind kind;
	uint64_t off, len;
	void *buf;
	unsigned flags;
	int ret;    /* the call's return */
	int status; /* the callback's */
	int calls;
	bool log_ack;
	sem_t done;
};

static void dcall_cb(void *arg, int status)
{
	struct dcall *d = arg;

	d->status = status;
	d->calls++;
	if (d->log_ack)
		log_add((struct ev){.kind = EV_ACK, .status = status, .off = d->off});
	sem_post(&d->done);
}

static void dcall_msg(struct tsr_worker *w, void *arg)
{
	struct dcall *d = arg;
	struct tsr_io *io = tsr_worker_io(w);
	int ret = 0;

	switch (d->kind) {
	case D_READ:
		ret = tsr_layout_read(d->l, io, d->off, (uint32_t)d->len, d->buf, dcall_cb, d);
		break;
	case D_WRITE:
		ret = tsr_layout_write(d->l, io, d->off, (uint32_t)d->len, d->buf, d->flags,
				       dcall_cb, d);
		break;
	case D_FLUSH:
		ret = tsr_layout_flush(d->l, io, dcall_cb, d);
		break;
	case D_TRIM:
		ret = tsr_layout_trim(d->l, io, d->off, d->len, dcall_cb, d);
		break;
	case D_ZEROES:
		ret = tsr_layout_write_zeroes(d->l, io, d->off, d->len, d->flags, dcall_cb, d);
		break;
	case D_READ_DIRECT:
		ret =
		    tsr_layout_read_direct(d->l, io, d->off, (uint32_t)d->len, d->buf, dcall_cb, d);
		break;
	}
	/* with 0, d belongs to dcall_cb now: it may have run already and the
	 * waiting thread returned (d is on its stack) */
	if (ret != 0) {
		d->ret = ret;
		sem_post(&d->done);
	}
}

/* Start a call on home; dcall_wait finishes it. */
static UNUSED void dcall_start(struct tsr_worker *home, struct dcall *d)
{
	sem_init(&d->done, 0, 0);
	d->calls = 0;
	d->ret = 0;
	d->status = 1;
	if (tsr_worker_send(home, dcall_msg, d) != 0)
		abort();
}

/* The call's result: its return, else its callback status; -ETIMEDOUT. */
static UNUSED int dcall_wait(struct dcall *d, unsigned ms)
{
	if (sem_wait_ms(&d->done, ms) != 0)
		return -ETIMEDOUT;
	sem_destroy(&d->done);
	return d->ret != 0 ? d->ret : d->status;
}

static UNUSED int ldo(struct tsr_worker *home, struct tsr_layout *l, enum dkind kind, uint64_t off,
		      uint64_t len, void *buf, unsigned flags)
{
	struct dcall d = {.l = l, .kind = kind, .off = off, .len = len, .buf = buf, .flags = flags};

	dcall_start(home, &d);
	return dcall_wait(&d, 20000);
}

/* ---- a batch of writes issued at once (several in flight, maybe overlapping) ---- */

struct batch {
	struct tsr_layout *l;
	unsigned n;
	uint64_t off[64];
	uint32_t len[64];
	void *buf[64];
	int ret[64], status[64];
	int done_count;
	int failed;
	sem_t done;
};

struct batch_item {
	struct batch *b;
	unsigned i;
};

static void batch_cb(void *arg, int status)
{
	struct batch_item *it = arg;
	struct batch *b = it->b;

	b->status[it->i] = status;
	if (status != 0)
		b->failed++;
	free(it);
	if (++b->done_count == (int)b->n)
		sem_post(&b->done);
}

static void batch_msg(struct tsr_worker *w, void *arg)
{
	struct batch *b = arg;
	struct tsr_io *io = tsr_worker_io(w);

	for (unsigned i = 0; i < b->n; i++) {
		struct batch_item *it = malloc(sizeof(*it));

		it->b = b;
		it->i = i;
		b->ret[i] =
		    tsr_layout_write(b->l, io, b->off[i], b->len[i], b->buf[i], 0, batch_cb, it);
		if (b->ret[i] != 0) {
			free(it);
			b->failed++;
			if (++b->done_count == (int)b->n)
				sem_post(&b->done);
		}
	}
}

/* Issue every write of b in one pass of home; 0 when all succeeded. */
static UNUSED int batch_run(struct tsr_worker *home, struct batch *b)
{
	sem_init(&b->done, 0, 0);
	b->done_count = 0;
	b->failed = 0;
	if (tsr_worker_send(home, batch_msg, b) != 0)
		abort();
	if (sem_wait_ms(&b->done, 30000) != 0)
		return -ETIMEDOUT;
	sem_destroy(&b->done);
	return b->failed ? -EIO : 0;
}

/* ---- the layout's status ---- */

/* Poll l's status (it is refreshed every 20 ms) until pred holds; false
 * after ms. */
static UNUSED bool layout_wait(struct tsr_layout *l, bool (*pred)(const struct tsr_layout_status *),
			       unsigned ms)
{
	struct tsr_layout_status s;
	uint64_t end = mono_ms() + ms;

	do {
		tsr_layout_get_status(l, &s);
		if (pred(&s))
			return true;
		usleep(10000);
	} while (mono_ms() < end);
	return false;
}

static uint64_t g_layout_want_cached;

static UNUSED bool layout_cached_published(const struct tsr_layout_status *s)
{
	return s->cached_reads >= g_layout_want_cached;
}

/* l's status once it counts n cached reads.  A read counts in `reads` when
 * it is submitted and in `cached_reads` when the store completes it, so a
 * status published while a read was in flight shows the first and not yet
 * the second: wait on the figure itself (5 s: then it was not counted). */
static UNUSED void layout_status_after_cached(struct tsr_layout *l, uint64_t n,
					      struct tsr_layout_status *s)
{
	g_layout_want_cached = n;
	if (!layout_wait(l, layout_cached_published, 5000)) {
		tsr_layout_get_status(l, s);
		fail_msg("cached_reads %llu after 5 s, want %llu",
			 (unsigned long long)s->cached_reads, (unsigned long long)n);
	}
	tsr_layout_get_status(l, s);
}

static UNUSED bool all_in_sync(const struct tsr_layout_status *s)
{
	return s->in_sync == s->n_copies && !s->resync_running;
}

static UNUSED bool scrub_finished(const struct tsr_layout_status *s)
{
	return s->scrub_done && !s->scrub_running;
}

/* ---- snapshot operations on the home worker ---- */

struct snap_call {
	struct tsr_layout *l;
	struct tsr_snap_req req;
	int ret, status;
	sem_t done;
};

static void snap_call_cb(void *arg, int status)
{
	struct snap_call *c = arg;

	c->status = status;
	sem_post(&c->done);
}

static void snap_call_msg(struct tsr_worker *w, void *arg)
{
	struct snap_call *c = arg;

	(void)w;
	int ret = tsr_layout_snap(c->l, &c->req, snap_call_cb, c);

	/* with 0, c belongs to snap_call_cb now: it may have run already and
	 * the waiting thread returned (c is on its stack) */
	if (ret != 0) {
		c->ret = ret;
		sem_post(&c->done);
	}
}

/* Run a snapshot operation through l on its home worker: its return, else
 * its callback's status; -ETIMEDOUT after 20 s. */
static UNUSED int layout_snap(struct tsr_worker *home, struct tsr_layout *l, enum tsr_snap_op op,
			      const char *snap)
{
	struct snap_call c = {.l = l, .req = {.op = op}};

	snprintf(c.req.snap, sizeof(c.req.snap), "%s", snap);
	sem_init(&c.done, 0, 0);
	if (tsr_worker_send(home, snap_call_msg, &c) != 0)
		abort();
	if (sem_wait_ms(&c.done, 20000) != 0)
		return -ETIMEDOUT;
	sem_destroy(&c.done);
	return c.ret != 0 ? c.ret : c.status;
}

#endif
