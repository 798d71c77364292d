/*
 * Worker threads: one pthread per worker, each running an epoll loop that
 * owns one struct tsr_io and the connections handed to it (DESIGN.md
 * "Threads": shared-nothing on the hot path).
 *
 * One loop pass:
 *   1. epoll_wait: socket fds, the io's eventfd and our wake eventfd; it
 *      does not block when completions are ready (tsr_io_completions_ready:
 *      io_uring posts most of them without signalling its eventfd, they end
 *      the sleep with EINTR instead, io.h), and blocks at most
 *      WORKER_INFLIGHT_TIMEOUT_MS while I/O is in flight;
 *   2. run the fd callbacks of the ready fds;
 *   3. when the io's eventfd fired, read it; when it fired, epoll_wait ended
 *      without events (EINTR, timeout) with I/O in flight or completions
 *      were ready: tsr_io_poll(io, 0, false), completion callbacks run here;
 *   4. run the messages other threads queued with tsr_worker_send();
 *   5. run the callbacks deferred to the end of this pass (tsr_worker_defer:
 *      one batched socket write per connection and pass);
 *   6. tsr_io_submit() once, for everything queued during the pass;
 *   7. run the callbacks deferred to after the submit
 *      (tsr_worker_defer_after_submit: the site source's TLS pump, which the
 *      pass's disk I/O need not wait for), then submit again only when they
 *      queued I/O.
 *
 * Locking policy (the only lock of the worker): msg_lock guards the message
 * queue and the stopping flag.  It is taken by tsr_worker_send() and
 * tsr_worker_stop() from other threads and once per pass by the loop when the
 * wake eventfd fired: control path only, never per I/O.  Everything else in
 * struct tsr_worker belongs to the worker's own thread.
 *
 * Stop: tsr_worker_stop() sets the flag and wakes the loop; the loop runs the
 * messages still queued, then the on_stop hooks (owners close their
 * connections), then keeps passing until no I/O is in flight and nothing is
 * queued, destroys its io and exits; the caller joins the thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "tessera/common.h"
#include "tessera/worker.h"

#define WORKER_MAX_EVENTS 128
/* While I/O is in flight, never sleep longer than this without polling: a
 * safety net should a backend complete an operation without signalling its
 * eventfd (the eventfd is the normal wake-up). */
#define WORKER_INFLIGHT_TIMEOUT_MS 10

/* A function and its argument: messages, stop hooks, deferred calls. */
struct call {
	tsr_worker_msg_fn fn;
	void *arg;
	struct call *next;
};

/* One watched fd; epoll's data.ptr points here. */
struct watch {
	int fd;
	tsr_worker_fd_cb cb;
	void *arg;
	bool dead;          /* unwatched during this pass; freed at its end */
	struct watch *next; /* dead list */
};

struct tsr_worker {
	unsigned index;            /* immutable */
	pthread_t thread;          /* immutable after start */
	struct tsr_io_opts io_opts;/* copy for the thread; fault_spec is owned */
	int epfd;                  /* owned by the thread after start */
	int wake_fd;               /* eventfd: messages and stop; any thread writes */
	struct tsr_io *io;         /* created and destroyed on the thread */

	/* Start handshake: the thread reports tsr_io_create's result. */
	pthread_mutex_t start_lock;
	pthread_cond_t start_cond;
	bool started;
	int start_status;

	/* Guarded by msg_lock (see the locking policy above). */
	pthread_mutex_t msg_lock;
	struct call *msg_head, *msg_tail;
	bool stopping;

	/* Worker thread only. */
	struct watch **watches;    /* indexed by fd, NULL when not watched */
	size_t nwatches;           /* length of watches[] */
	struct watch *dead;        /* unwatched this pass, freed at its end */
	struct call *stop_hooks;   /* run once, in registration order reversed */
	struct call *defer_head, *defer_tail;
	struct call *after_head, *after_tail; /* deferred to after the pass's submit */
	struct call *free_calls;   /* recycled deferred-call records */
	bool stop_seen;            /* the loop noticed stopping */
};

/* epoll tags for the two internal fds (compared by address). */
static char g_tag_io, g_tag_wake;

/* ---- fd registry (worker thread only) ---- */

int tsr_worker_watch(struct tsr_worker *w, int fd, uint32_t events, tsr_worker_fd_cb cb,
		     void *arg)
{
	struct epoll_event ev = { .events = events };
	struct watch *wt;

	if (fd < 0 || cb == NULL)
		return -EINVAL;
	if ((size_t)fd >= w->nwatches) {
		size_t n = w->nwatches ? w->nwatches : 64;
		struct watch **nw;

		while (n <= (size_t)fd)
			n *= 2;
		nw = realloc(w->watches, n * sizeof(*nw));
		if (nw == NULL)
			return -ENOMEM;
		memset(nw + w->nwatches, 0, (n - w->nwatches) * sizeof(*nw));
		w->watches = nw;
		w->nwatches = n;
	}
	if (w->watches[fd] != NULL)
		return -EEXIST;
	wt = calloc(1, sizeof(*wt));
	if (wt == NULL)
		return -ENOMEM;
	wt->fd = fd;
	wt->cb = cb;
	wt->arg = arg;
	ev.data.ptr = wt;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int ret = -errno;

		free(wt);
		return ret;
	}
	w->watches[fd] = wt;
	return 0;
}

int tsr_worker_modify(struct tsr_worker *w, int fd, uint32_t events)
{
	struct epoll_event ev = { .events = events };

	if (fd < 0 || (size_t)fd >= w->nwatches || w->watches[fd] == NULL)
		return -ENOENT;
	ev.data.ptr = w->watches[fd];
	if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
		return -errno;
	return 0;
}

int tsr_worker_unwatch(struct tsr_worker *w, int fd)
{
	struct watch *wt;

	if (fd < 0 || (size_t)fd >= w->nwatches || w->watches[fd] == NULL)
		return -ENOENT;
	wt = w->watches[fd];
	w->watches[fd] = NULL;
	/* The fd may already be closed by its owner: then epoll dropped it. */
	epoll_ctl(w->epfd, EPOLL_CTL_DEL, fd, NULL);
	/* Events of this pass may still point at wt: free it at the pass end. */
	wt->dead = true;
	wt->next = w->dead;
	w->dead = wt;
	return 0;
}

static void free_dead_watches(struct tsr_worker *w)
{
	while (w->dead != NULL) {
		struct watch *wt = w->dead;

		w->dead = wt->next;
		free(wt);
	}
}

struct tsr_io *tsr_worker_io(struct tsr_worker *w)
{
	return w->io;
}

unsigned tsr_worker_index(const struct tsr_worker *w)
{
	return w->index;
}

/* ---- hooks and deferred calls (worker thread only) ---- */

static struct call *call_new(struct tsr_worker *w, tsr_worker_msg_fn fn, void *arg)
{
	struct call *c = w->free_calls;

	if (c != NULL)
		w->free_calls = c->next;
	else
		c = malloc(sizeof(*c));
	if (c == NULL)
		return NULL;
	c->fn = fn;
	c->arg = arg;
	c->next = NULL;
	return c;
}

int tsr_worker_on_stop(struct tsr_worker *w, tsr_worker_msg_fn fn, void *arg)
{
	struct call *c = call_new(w, fn, arg);

	if (c == NULL)
		return -ENOMEM;
	c->next = w->stop_hooks;
	w->stop_hooks = c;
	return 0;
}

/* fn(w, arg) at the tail of the list *head .. *tail. */
static int call_queue(struct tsr_worker *w, struct call **head, struct call **tail,
		      tsr_worker_msg_fn fn, void *arg)
{
	struct call *c = call_new(w, fn, arg);

	if (c == NULL)
		return -ENOMEM;
	if (*tail != NULL)
		(*tail)->next = c;
	else
		*head = c;
	*tail = c;
	return 0;
}

int tsr_worker_defer(struct tsr_worker *w, tsr_worker_msg_fn fn, void *arg)
{
	return call_queue(w, &w->defer_head, &w->defer_tail, fn, arg);
}

int tsr_worker_defer_after_submit(struct tsr_worker *w, tsr_worker_msg_fn fn, void *arg)
{
	return call_queue(w, &w->after_head, &w->after_tail, fn, arg);
}

/* Run the calls of a list, including those queued by the calls themselves. */
static void run_calls(struct tsr_worker *w, struct call **head, struct call **tail)
{
	while (*head != NULL) {
		struct call *c = *head;

		*head = c->next;
		if (*head == NULL)
			*tail = NULL;
		c->fn(w, c->arg);
		c->next = w->free_calls;
		w->free_calls = c;
	}
}

/* ---- messages (any thread -> worker) ---- */

static void wake(struct tsr_worker *w)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is already nonzero: the loop will wake. */
	if (write(w->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		tsr_error("worker%u: wake: %s", w->index, strerror(errno));
}

int tsr_worker_send(struct tsr_worker *w, tsr_worker_msg_fn fn, void *arg)
{
	struct call *c = malloc(sizeof(*c));

	if (c == NULL)
		return -ENOMEM;
	c->fn = fn;
	c->arg = arg;
	c->next = NULL;
	pthread_mutex_lock(&w->msg_lock);
	if (w->stopping) {
		pthread_mutex_unlock(&w->msg_lock);
		free(c);
		return -ESHUTDOWN;
	}
	if (w->msg_tail != NULL)
		w->msg_tail->next = c;
	else
		w->msg_head = c;
	w->msg_tail = c;
	pthread_mutex_unlock(&w->msg_lock);
	wake(w);
	return 0;
}

/*
 * From a thread of its own (never a worker's: it sleeps): tsr_worker_send,
 * tried again while the message finds no memory (-ENOMEM), every 1 ms, then
 * every 10 ms after 1 s (one WARN then: "<what> waits for memory ..."), so
 * that an answer does not wait for the worker's stop.  Returns 0 (queued),
 * -ESHUTDOWN (the worker stops: not queued), or -ENOMEM when *give_up (if
 * not NULL) reads true after a failed try.  Tests: the first fake_enomem
 * tries count as -ENOMEM without calling tsr_worker_send.
 */
int tsr_worker_send_retry(struct tsr_worker *w, tsr_worker_msg_fn fn, void *arg,
			  const bool *give_up, unsigned fake_enomem, const char *what)
{
	int ret;

	for (unsigned i = 0;; i++) {
		ret = i < fake_enomem ? -ENOMEM : tsr_worker_send(w, fn, arg);
		if (ret != -ENOMEM ||
		    (give_up != NULL && __atomic_load_n(give_up, __ATOMIC_ACQUIRE)))
			return ret;
		if (i == 1000)
			tsr_warn("%s waits for memory (tsr_worker_send: out of memory for 1 s); "
				 "still trying", what);
		usleep(i < 1000 ? 1000 : 10000);
	}
}

/* Take the queued messages and run them outside the lock.  Returns whether
 * stop was requested. */
static bool run_messages(struct tsr_worker *w)
{
	struct call *c;
	bool stopping;

	pthread_mutex_lock(&w->msg_lock);
	c = w->msg_head;
	w->msg_head = w->msg_tail = NULL;
	stopping = w->stopping;
	pthread_mutex_unlock(&w->msg_lock);
	while (c != NULL) {
		struct call *next = c->next;

		c->fn(w, c->arg);
		free(c);
		c = next;
	}
	return stopping;
}

static bool messages_pending(struct tsr_worker *w)
{
	bool pending;

	pthread_mutex_lock(&w->msg_lock);
	pending = w->msg_head != NULL;
	pthread_mutex_unlock(&w->msg_lock);
	return pending;
}

/* ---- the loop ---- */

static void drain_eventfd(int fd)
{
	uint64_t v;

	/* Both eventfds are nonblocking; one read resets the counter. */
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		tsr_warn("worker: eventfd read: %s", strerror(errno));
}

/* One pass (see the file header).  Returns whether a stop was requested. */
static bool loop_pass(struct tsr_worker *w)
{
	struct epoll_event events[WORKER_MAX_EVENTS];
	bool io_ready = false, io_fd_ready = false, wake_ready = false, stopping = false;
	int timeout, n, i, ret;

	if (tsr_io_inflight(w->io) > 0 && tsr_io_completions_ready(w->io))
		io_ready = true;
	if (w->defer_head != NULL || w->after_head != NULL || io_ready)
		timeout = 0; /* calls queued outside a pass (a stop hook) run now */
	else if (tsr_io_inflight(w->io) > 0)
		timeout = WORKER_INFLIGHT_TIMEOUT_MS;
	else
		timeout = -1;
	n = epoll_wait(w->epfd, events, WORKER_MAX_EVENTS, timeout);
	if (n < 0) {
		if (errno != EINTR)
			tsr_error("worker%u: epoll_wait: %s", w->index, strerror(errno));
		n = 0;
	}
	if (n == 0 && tsr_io_inflight(w->io) > 0)
		io_ready = true; /* timed out with I/O in flight: poll anyway */

	for (i = 0; i < n; i++) {
		void *p = events[i].data.ptr;
		struct watch *wt;

		if (p == &g_tag_io) {
			io_ready = io_fd_ready = true;
			continue;
		}
		if (p == &g_tag_wake) {
			wake_ready = true;
			continue;
		}
		wt = p;
		if (!wt->dead)
			wt->cb(wt->arg, events[i].events);
	}

	if (io_ready) {
		if (io_fd_ready)
			drain_eventfd(tsr_io_event_fd(w->io));
		ret = tsr_io_poll(w->io, 0, false);
		if (ret < 0)
			tsr_error("worker%u: io poll: %s", w->index, strerror(-ret));
	}
	if (wake_ready || w->stop_seen) {
		drain_eventfd(w->wake_fd);
		stopping = run_messages(w);
	}
	run_calls(w, &w->defer_head, &w->defer_tail);
	ret = tsr_io_submit(w->io);
	if (ret < 0)
		tsr_error("worker%u: io submit: %s", w->index, strerror(-ret));
	if (w->after_head != NULL) {
		run_calls(w, &w->after_head, &w->after_tail);
		if (tsr_io_unsubmitted(w->io) > 0 && (ret = tsr_io_submit(w->io)) < 0)
			tsr_error("worker%u: io submit: %s", w->index, strerror(-ret));
	}
	free_dead_watches(w);
	return stopping;
}

static void run_stop_hooks(struct tsr_worker *w)
{
	while (w->stop_hooks != NULL) {
		struct call *c = w->stop_hooks;

		w->stop_hooks = c->next;
		c->fn(w, c->arg);
		free(c);
	}
}

static int setup_thread(struct tsr_worker *w)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int ret;

	w->io_opts.lazy_event_fd = true; /* loop_pass checks completions_ready */
	ret = tsr_io_create(&w->io_opts, &w->io);
	if (ret < 0) {
		tsr_error("worker%u: cannot create its I/O context: %s", w->index,
			  strerror(-ret));
		return ret;
	}
	ev.data.ptr = &g_tag_io;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, tsr_io_event_fd(w->io), &ev) < 0)
		return -errno;
	ev.data.ptr = &g_tag_wake;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wake_fd, &ev) < 0)
		return -errno;
	return 0;
}

static void *worker_main(void *arg)
{
	struct tsr_worker *w = arg;
	char name[16];
	int ret;

	snprintf(name, sizeof(name), "worker%u", w->index);
	pthread_setname_np(pthread_self(), name);
	tsr_log_set_thread_name(name);

	ret = setup_thread(w);
	pthread_mutex_lock(&w->start_lock);
	w->started = true;
	w->start_status = ret;
	pthread_cond_signal(&w->start_cond);
	pthread_mutex_unlock(&w->start_lock);
	if (ret < 0) {
		tsr_io_destroy(w->io);
		w->io = NULL;
		return NULL;
	}

	tsr_debug("worker%u: running on %s", w->index, tsr_io_name(w->io));
	while (!loop_pass(w))
		;
	/* Stopping: messages queued before the stop have run in that pass. */
	w->stop_seen = true;
	run_stop_hooks(w);
	/* Let the owners' in-flight I/O complete and their last calls run
	 * (both lists: a stop hook may queue on either). */
	while (tsr_io_inflight(w->io) > 0 || w->defer_head != NULL || w->after_head != NULL ||
	       messages_pending(w)) {
		loop_pass(w);
		run_stop_hooks(w); /* hooks registered by late messages */
	}
	tsr_io_destroy(w->io);
	w->io = NULL;
	return NULL;
}

/* ---- start / stop (control thread) ---- */

static void worker_free(struct tsr_worker *w)
{
	struct call *c;

	if (w == NULL)
		return;
	if (w->epfd >= 0)
		close(w->epfd);
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	while ((c = w->msg_head) != NULL) {
		w->msg_head = c->next;
		free(c);
	}
	while ((c = w->free_calls) != NULL) {
		w->free_calls = c->next;
		free(c);
	}
	while ((c = w->stop_hooks) != NULL) {
		w->stop_hooks = c->next;
		free(c);
	}
	free_dead_watches(w);
	free(w->watches);
	free((char *)w->io_opts.fault_spec);
	pthread_mutex_destroy(&w->msg_lock);
	pthread_mutex_destroy(&w->start_lock);
	pthread_cond_destroy(&w->start_cond);
	free(w);
}

int tsr_worker_start(unsigned index, const struct tsr_io_opts *io_opts,
		     struct tsr_worker **out)
{
	struct tsr_worker *w;
	int ret;

	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	w->index = index;
	w->epfd = -1;
	w->wake_fd = -1;
	pthread_mutex_init(&w->msg_lock, NULL);
	pthread_mutex_init(&w->start_lock, NULL);
	pthread_cond_init(&w->start_cond, NULL);
	if (io_opts != NULL)
		w->io_opts = *io_opts;
	if (w->io_opts.fault_spec != NULL) {
		w->io_opts.fault_spec = strdup(w->io_opts.fault_spec);
		if (w->io_opts.fault_spec == NULL) {
			ret = -ENOMEM;
			goto err;
		}
	}
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->epfd < 0 || w->wake_fd < 0) {
		ret = -errno;
		tsr_error("worker%u: epoll/eventfd: %s", index, strerror(-ret));
		goto err;
	}
	ret = pthread_create(&w->thread, NULL, worker_main, w);
	if (ret != 0) {
		ret = -ret;
		tsr_error("worker%u: cannot start thread: %s", index, strerror(-ret));
		goto err;
	}
	pthread_mutex_lock(&w->start_lock);
	while (!w->started)
		pthread_cond_wait(&w->start_cond, &w->start_lock);
	ret = w->start_status;
	pthread_mutex_unlock(&w->start_lock);
	if (ret < 0) {
		pthread_join(w->thread, NULL);
		goto err;
	}
	*out = w;
	return 0;
err:
	worker_free(w);
	return ret;
}

void tsr_worker_stop(struct tsr_worker *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->msg_lock);
	w->stopping = true;
	pthread_mutex_unlock(&w->msg_lock);
	wake(w);
	pthread_join(w->thread, NULL);
	worker_free(w);
}
