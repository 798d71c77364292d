/*
 * The copy set: what the mirror and the EC layout do alike with their
 * copies and their own lifetime (copyset_internal.h says which function
 * runs on which thread).  Every message, callback or call it leaves in
 * flight holds a reference on the layout (copyset_get/copyset_put).
 */
#include <errno.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "layout/copyset_internal.h"
#include "tessera/layout_module.h"

/* ---- lifetime ------------------------------------------------------------ */

void copyset_get(struct copyset *cs)
{
	__atomic_fetch_add(&cs->refs, 1, __ATOMIC_RELAXED);
}

void copyset_put(struct copyset *cs)
{
	if (__atomic_sub_fetch(&cs->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	if (cs->destroy_waiter)
		sem_post(&cs->sem); /* the destroying thread frees */
	else
		cs->ops->free(cs->layout);
}

void copyset_init(struct copyset *cs)
{
	cs->refs = 1;
	sem_init(&cs->sem, 0, 0);
	pthread_mutex_init(&cs->status_lock, NULL);
}

void copyset_fini(struct copyset *cs)
{
	pthread_mutex_destroy(&cs->status_lock);
	sem_destroy(&cs->sem);
}

static void teardown_msg(struct tsr_worker *w, void *arg)
{
	struct copyset *cs = arg;

	(void)w;
	cs->ops->teardown(cs->layout);
}

void copyset_destroy(struct copyset *cs, bool started, bool here)
{
	if (!started) {
		cs->ops->free(cs->layout);
		return;
	}
	if (here) {
		cs->destroy_waiter = false;
		cs->ops->teardown(cs->layout);
		return;
	}
	cs->destroy_waiter = true;
	if (tsr_worker_send(cs->home, teardown_msg, cs) < 0) {
		tsr_error("%s %s: home worker stopped before the layout: leaking it", cs->kind,
			  cs->name);
		return;
	}
	sem_wait(&cs->sem);
	cs->ops->free(cs->layout);
}

/* ---- create options ------------------------------------------------------ */

int copyset_check_copies(const struct tsr_layout_copy *copies, unsigned n,
			 const struct tsr_store *store)
{
	unsigned locals = 0;

	for (unsigned i = 0; i < n; i++) {
		const struct tsr_layout_copy *c = &copies[i];

		if (c->node_id[0] == '\0' || strchr(c->node_id, '/') != NULL)
			return -EINVAL;
		if (c->local)
			locals++;
		else if (c->address[0] == '\0')
			return -EINVAL;
	}
	if (locals > 1 || (locals == 1 && store == NULL))
		return -EINVAL;
	return 0;
}

int copyset_bitmap_path(const struct copyset *cs, const char *node_id, char out[PATH_MAX])
{
	int n = snprintf(out, PATH_MAX, "%s/%s.%s.bitmap", cs->state_dir, cs->name, node_id);

	return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

/* ---- create and start-up -------------------------------------------------- */

void copyset_copy_init(struct copyset_copy *c, struct copyset *cs, unsigned idx,
		       const struct tsr_layout_copy *oc)
{
	c->set = cs;
	c->idx = idx;
	snprintf(c->node_id, sizeof(c->node_id), "%s", oc->node_id);
	snprintf(c->address, sizeof(c->address), "%s", oc->address);
	c->local = oc->local;
	c->state = c->recorded = c->hook_want = oc->state;
}

int copyset_open_local(struct copyset_copy *c, const char *what)
{
	struct copyset *cs = c->set;
	int ret;

	ret = tsr_store_vol_open(cs->store, cs->name, &c->svol);
	if (ret < 0) {
		tsr_error("%s %s: %s: %s", cs->kind, cs->name, what, strerror(-ret));
		return ret;
	}
	/* fences any older coordinator writing through this store */
	ret = tsr_store_vol_set_epoch(cs->store, cs->name, cs->epoch);
	if (ret < 0) {
		tsr_error("%s %s: %s: epoch %llu: %s", cs->kind, cs->name, what,
			  (unsigned long long)cs->epoch, strerror(-ret));
		return ret;
	}
	ret = copyset_check_size(cs, c->svol, what);
	if (ret < 0)
		return ret;
	c->open = true;
	return 0;
}

int copyset_check_size(const struct copyset *cs, struct tsr_svol *svol, const char *what)
{
	if (tsr_svol_size(svol) < cs->copy_size) {
		tsr_error("%s %s: %s is %llu bytes, %llu needed", cs->kind, cs->name, what,
			  (unsigned long long)tsr_svol_size(svol),
			  (unsigned long long)cs->copy_size);
		return -EINVAL;
	}
	return 0;
}

int copyset_start(struct copyset *cs, void (*start_msg)(struct tsr_worker *w, void *arg),
		  const int *start_status, const struct tsr_layout_ops *layout_ops,
		  struct tsr_layout **out)
{
	int ret;

	ret = tsr_worker_send(cs->home, start_msg, cs->layout);
	if (ret < 0) {
		cs->ops->free(cs->layout);
		return ret;
	}
	sem_wait(&cs->sem);
	ret = *start_status;
	if (ret < 0) {
		layout_ops->destroy(cs->layout);
		return ret;
	}
	ret = tsr_layout_new(layout_ops, cs->layout, out);
	if (ret < 0) {
		layout_ops->destroy(cs->layout);
		return ret;
	}
	return 0;
}

int copyset_timer_start(struct copyset *cs, struct tsr_worker *w, unsigned tick_ms,
			tsr_worker_fd_cb tick, void *arg, int *fd)
{
	struct itimerspec its = {
	    .it_interval = {0, (long)tick_ms * 1000000L},
	    .it_value = {0, (long)tick_ms * 1000000L},
	};

	*fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (*fd < 0 || timerfd_settime(*fd, 0, &its, NULL) < 0 ||
	    tsr_worker_watch(w, *fd, EPOLLIN, tick, arg) < 0) {
		tsr_error("%s %s: timer: %s", cs->kind, cs->name, strerror(errno));
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return -ENOMEM;
	}
	return 0;
}

void copyset_timer_stop(struct copyset *cs, int *fd)
{
	if (*fd < 0)
		return;
	tsr_worker_unwatch(cs->home, *fd);
	close(*fd);
	*fd = -1;
}

void copyset_start_open_failed(struct copyset_copy *c, int status, int *start_status)
{
	struct copyset *cs = c->set;

	tsr_warn("%s %s: copy %u (%s at %s): open: %s", cs->kind, cs->name, c->idx, c->node_id,
		 c->address, strerror(-status));
	if (status == -ESTALE)
		*start_status = -ESTALE;
	else if (status == -ENOENT && *start_status == 0)
		*start_status = -ENOENT;
	copyset_disconnect(c);
}

void copyset_returned_open_failed(struct copyset_copy *c, int status)
{
	struct copyset *cs = c->set;

	tsr_warn("%s %s: copy %u (%s) back, but open failed: %s", cs->kind, cs->name, c->idx,
		 c->node_id, strerror(-status));
	if (status == -ESTALE)
		cs->ops->fence_now(cs->layout, "a copy has seen a newer epoch");
	copyset_disconnect(c);
}

/* ---- status -------------------------------------------------------------- */

void copyset_publish(struct copyset *cs, const struct tsr_layout_status *s)
{
	pthread_mutex_lock(&cs->status_lock);
	cs->status = *s;
	pthread_mutex_unlock(&cs->status_lock);
}

void copyset_get_status(struct copyset *cs, struct tsr_layout_status *out)
{
	pthread_mutex_lock(&cs->status_lock);
	*out = cs->status;
	pthread_mutex_unlock(&cs->status_lock);
}

/* ---- records: copy states in the metadata store -------------------------- */

struct hook_ctx {
	struct copyset_copy *c;
	unsigned gen; /* slot generation (replace) */
	enum tsr_copy_state st;
	int status;
};

static void hook_issue(struct copyset_copy *c);

/* Wake the waiters the recorded state satisfies; fail those it never will. */
static void hook_settle(struct copyset_copy *c, int status)
{
	struct waiter **pp = &c->hook_waiters, *w, *ready = NULL;

	while ((w = *pp) != NULL) {
		int st = -1;

		if (status == 0 && w->ver == c->recorded)
			st = 0;
		else if (status < 0 && w->ver == c->hook_issued)
			st = -EIO;
		else if (w->ver != c->hook_want && w->ver != c->recorded)
			st = -ECANCELED;
		if (st == -1) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		w->ver = (uint64_t)(int64_t)st;
		w->next = ready;
		ready = w;
	}
	while ((w = ready) != NULL) {
		ready = w->next;
		w->fn(w->arg, (int)(int64_t)w->ver);
		free(w);
	}
}

static void hook_done_msg(struct tsr_worker *w, void *arg)
{
	struct hook_ctx *hc = arg;
	struct copyset_copy *c = hc->c;
	struct copyset *cs = c->set;

	(void)w;
	if (hc->gen == c->slot_gen) {
		c->hook_busy = false;
		if (hc->status == 0)
			c->recorded = hc->st;
		else
			tsr_error("%s %s: cannot record copy %u (%s) %s: %s", cs->kind, cs->name,
				  c->idx, c->node_id, tsr_copy_state_name(hc->st),
				  strerror(-hc->status));
		hook_settle(c, hc->status);
		if (hc->status == 0 && c->hook_want != c->recorded && !*cs->closing)
			hook_issue(c);
	}
	free(hc);
	copyset_put(cs);
}

/* hooks.set_copy_state's done: from any thread; back to the home worker. */
static void hook_done(void *done_arg, int status)
{
	struct hook_ctx *hc = done_arg;
	struct copyset *cs = hc->c->set;

	hc->status = status;
	if (tsr_worker_send(cs->home, hook_done_msg, hc) < 0)
		tsr_error("%s %s: hook answer lost (home worker stopped)", cs->kind, cs->name);
}

static void hook_issue(struct copyset_copy *c)
{
	struct copyset *cs = c->set;
	struct hook_ctx *hc = calloc(1, sizeof(*hc));

	if (hc == NULL) {
		c->hook_issued = c->hook_want;
		hook_settle(c, -ENOMEM);
		return;
	}
	hc->c = c;
	hc->gen = c->slot_gen;
	hc->st = c->hook_want;
	c->hook_busy = true;
	c->hook_issued = c->hook_want;
	copyset_get(cs);
	tsr_info("%s %s: copy %u (%s) -> %s", cs->kind, cs->name, c->idx, c->node_id,
		 tsr_copy_state_name(hc->st));
	cs->hooks->set_copy_state(cs->hooks->arg, cs->name, c->idx, c->node_id, hc->st, hook_done,
				  hc);
}

void copyset_hook_request(struct copyset_copy *c, enum tsr_copy_state st, struct waiter *w)
{
	if (w != NULL) {
		w->ver = st;
		w->next = c->hook_waiters;
		c->hook_waiters = w;
	}
	c->hook_want = st;
	if (c->hook_busy)
		return;
	if (c->recorded == st) {
		hook_settle(c, 0);
		return;
	}
	hook_issue(c);
}

void copyset_hook_forget(struct copyset_copy *c)
{
	struct waiter *w;

	c->slot_gen++;
	copyset_stats_forget(c);
	c->hook_busy = false;
	while ((w = c->hook_waiters) != NULL) {
		c->hook_waiters = w->next;
		w->fn(w->arg, -ECANCELED);
		free(w);
	}
}

/* ---- sessions ------------------------------------------------------------ */

struct conn_ctx {
	struct copyset_copy *c;
	unsigned gen;
	tsr_cb cb_fn;
	void *cb_arg;
};

/* The peer client's on_fail: the connection is gone. */
static void copy_on_fail(void *arg, int err)
{
	struct conn_ctx *cc = arg;
	struct copyset_copy *c = cc->c;
	struct copyset *cs = c->set;

	if (cc->gen != c->gen || *cs->closing)
		return;
	tsr_warn("%s %s: copy %u (%s, %s): connection failed: %s", cs->kind, cs->name, c->idx,
		 c->node_id, c->address, strerror(-err));
	cs->ops->copy_failed(c, err < 0 ? err : -ECONNRESET);
}

static void copy_open_done(void *arg, int status, uint64_t handle, uint64_t size)
{
	struct conn_ctx *oc = arg;
	struct copyset_copy *c = oc->c;
	struct copyset *cs = c->set;

	if (oc->gen != c->gen) {
		status = -ECANCELED;
	} else if (status == 0 && size < cs->copy_size) {
		tsr_error("%s %s: copy %u on %s is %llu bytes, %llu needed", cs->kind, cs->name,
			  c->idx, c->node_id, (unsigned long long)size,
			  (unsigned long long)cs->copy_size);
		status = -EINVAL;
	}
	if (oc->gen == c->gen) {
		c->connecting = false;
		if (status == 0) {
			c->handle = handle;
			c->open = true;
		}
	}
	oc->cb_fn(oc->cb_arg, status);
	free(oc);
	copyset_put(cs);
}

struct client_ref {
	struct tsr_peer_client *client;
	struct conn_ctx *fail_ctx;
	struct copyset *cs;
};

static void client_destroy_deferred(struct tsr_worker *w, void *arg)
{
	struct client_ref *r = arg;
	struct copyset *cs = r->cs;

	(void)w;
	tsr_peer_client_destroy(r->client); /* in-flight requests: -ECANCELED */
	free(r->fail_ctx);
	free(r);
	copyset_put(cs);
}

/* Defer (not inline: we may be inside one of the client's callbacks). */
static void client_drop(struct copyset_copy *c, struct tsr_peer_client *client, struct conn_ctx *fc)
{
	struct copyset *cs = c->set;
	struct client_ref *r = calloc(1, sizeof(*r));

	if (r == NULL || tsr_worker_defer(cs->home, client_destroy_deferred, r) < 0) {
		/* out of memory: leak the client rather than free it under a callback */
		tsr_error("%s %s: cannot drop the client of copy %u", cs->kind, cs->name, c->idx);
		free(r);
		return;
	}
	r->client = client;
	r->fail_ctx = fc;
	r->cs = cs;
	copyset_get(cs);
}

void copyset_disconnect(struct copyset_copy *c)
{
	struct copyset *cs = c->set;

	c->open = c->local && c->svol != NULL && !*cs->fenced && !*cs->closing;
	c->connecting = false;
	c->gen++;
	if (c->client != NULL) {
		client_drop(c, c->client, c->fail_ctx);
		c->client = NULL;
		c->fail_ctx = NULL;
	}
}

int copyset_connect(struct copyset_copy *c, tsr_cb cb_fn, void *cb_arg)
{
	struct copyset *cs = c->set;
	struct tsr_peer_client_opts o = {
	    .address = c->address,
	    .token = cs->token,
	    .node_id = cs->node_id,
	    .timeout_ms = cs->peer_timeout_ms,
	};
	struct conn_ctx *fc, *oc;
	int ret;

	if (c->local)
		return c->open ? 1 : -ENOENT;
	copyset_disconnect(c); /* a new gen: answers to the old session are ignored */
	fc = calloc(1, sizeof(*fc));
	oc = calloc(1, sizeof(*oc));
	if (fc == NULL || oc == NULL) {
		free(fc);
		free(oc);
		return -ENOMEM;
	}
	fc->c = oc->c = c;
	fc->gen = oc->gen = c->gen;
	oc->cb_fn = cb_fn;
	oc->cb_arg = cb_arg;
	ret = tsr_peer_client_create(cs->home, &o, copy_on_fail, fc, &c->client);
	if (ret < 0) {
		tsr_error("%s %s: copy %u: peer client for %s: %s", cs->kind, cs->name, c->idx,
			  c->address, strerror(-ret));
		c->client = NULL;
		free(fc);
		free(oc);
		return ret;
	}
	c->fail_ctx = fc;
	c->connecting = true;
	copyset_get(cs);
	ret = tsr_peer_open(c->client, cs->name, cs->epoch, copy_open_done, oc);
	if (ret < 0) {
		copyset_put(cs);
		free(oc);
		c->connecting = false;
		return ret;
	}
	return 0;
}

void copyset_reopen(struct copyset_copy *c, tsr_cb cb_fn, void *cb_arg)
{
	int ret = copyset_connect(c, cb_fn, cb_arg);

	if (ret == 1)
		cb_fn(cb_arg, 0);
	else if (ret < 0)
		cb_fn(cb_arg, ret);
}

/* ---- a snapshot request on one copy -------------------------------------- */

/* The local store volume has seen a newer coordinator: writes fail -ESTALE. */
static bool local_fenced(const struct copyset_copy *c)
{
	return tsr_svol_epoch(c->svol) > c->set->epoch;
}

int copyset_snap(struct copyset_copy *c, const struct tsr_snap_req *req, tsr_cb cb_fn, void *cb_arg)
{
	struct copyset *cs = c->set;
	int ret;

	if (!c->open)
		return -ENOTCONN;
	if (!c->local)
		return tsr_peer_snap(c->client, c->handle, cs->epoch, req, cb_fn, cb_arg);
	if (local_fenced(c))
		return -ESTALE;
	switch (req->op) {
	case TSR_SNAP_CREATE:
		ret = tsr_store_snap_create_sized(cs->store, cs->name, req->snap, req->size, NULL);
		break;
	case TSR_SNAP_DELETE:
		ret = req->missing_ok ? tsr_store_snap_delete_missing_ok(cs->store, cs->name, req->snap)
				      : tsr_store_snap_delete(cs->store, cs->name, req->snap);
		break;
	case TSR_SNAP_CLONE:
		ret = tsr_store_vol_clone(cs->store, req->clone, cs->name,
					  req->snap[0] ? req->snap : NULL, NULL);
		break;
	default:
		return -EINVAL;
	}
	cb_fn(cb_arg, ret);
	return 0;
}

/* ---- a copy's store counters ----------------------------------------------- */

void copyset_stats_forget(struct copyset_copy *c)
{
	/* an answer in flight (stats_busy) is of the old copy: stats_done
	 * drops it (stats_slot_gen) */
	c->stats_known = false;
	c->stats_unsupported = false;
	c->stats_next_ns = 0;
	c->stats_crc_errors = c->stats_cached_reads = 0;
	c->stats_crc_carried = c->stats_cached_carried = 0;
}

void copyset_stats_take(struct copyset_copy *c, const struct tsr_peer_stats *st)
{
	/* lower than the last answer: the node restarted or reopened the copy
	 * and its counters began again at 0; what they had counted stays
	 * counted, so that no figure of the status ever goes down */
	if (c->stats_known &&
	    (st->crc_errors < c->stats_crc_errors || st->cached_reads < c->stats_cached_reads)) {
		c->stats_crc_carried += c->stats_crc_errors;
		c->stats_cached_carried += c->stats_cached_reads;
	}
	c->stats_known = true;
	c->stats_crc_errors = st->crc_errors;
	c->stats_cached_reads = st->cached_reads;
}

static void stats_done(void *arg, int status, const struct tsr_peer_stats *st)
{
	struct copyset_copy *c = arg;
	struct copyset *cs = c->set;

	c->stats_busy = false;
	/* an error (the session lost, a newer epoch, ...) keeps the last
	 * answer: the next tick after COPYSET_STATS_NS asks again */
	if (status == 0 && st != NULL && c->stats_slot_gen == c->slot_gen)
		copyset_stats_take(c, st);
	copyset_put(cs);
}

void copyset_stats_tick(struct copyset_copy *c, uint64_t now_ns)
{
	struct copyset *cs = c->set;
	int ret;

	if (c->stats_known && c->stats_slot_gen != c->slot_gen)
		c->stats_known = false; /* another node's copy now (replace) */
	if (c->local || !c->open || c->client == NULL || c->stats_busy || *cs->closing ||
	    *cs->fenced || now_ns < c->stats_next_ns)
		return;
	c->stats_next_ns = now_ns + COPYSET_STATS_NS;
	c->stats_unsupported = !(tsr_peer_client_features(c->client) & TSR_PEER_FEAT_STATS);
	if (c->stats_unsupported) {
		/* its node runs an earlier build now (restarted as one): the
		 * figures its former build answered are no longer its copy's */
		c->stats_known = false;
		return;
	}
	copyset_get(cs);
	c->stats_busy = true;
	c->stats_slot_gen = c->slot_gen;
	ret = tsr_peer_stats(c->client, c->handle, cs->epoch, stats_done, c);
	if (ret < 0) {
		c->stats_busy = false;
		copyset_put(cs);
	}
}

void copyset_stats_fill(const struct copyset_copy *c, struct tsr_layout_copy_status *out,
			struct tsr_layout_status *s)
{
	struct tsr_svol_stats ss;

	out->counters_known = false;
	out->counters_unsupported = false;
	if (c->local) {
		if (c->svol == NULL)
			return;
		tsr_svol_get_stats(c->svol, &ss);
		out->crc_errors = ss.crc_errors;
		out->cached_reads = ss.cached_reads;
	} else if (c->stats_known && c->stats_slot_gen == c->slot_gen) {
		out->crc_errors = c->stats_crc_carried + c->stats_crc_errors;
		out->cached_reads = c->stats_cached_carried + c->stats_cached_reads;
	} else {
		out->counters_unsupported = c->stats_unsupported;
		return;
	}
	out->counters_known = true;
	s->crc_errors_all += out->crc_errors;
	s->cached_reads_all += out->cached_reads;
	s->copies_counted++;
}

/* ---- fencing ------------------------------------------------------------- */

static void fence_msg(struct tsr_worker *w, void *arg)
{
	struct copyset *cs = arg;

	(void)w;
	cs->ops->fence_now(cs->layout, "attach lease lost");
	copyset_put(cs);
}

void copyset_fence(struct copyset *cs, bool here)
{
	__atomic_store_n(cs->fence_req, true, __ATOMIC_RELEASE);
	if (here) {
		cs->ops->fence_now(cs->layout, "attach lease lost");
		return;
	}
	copyset_get(cs);
	if (tsr_worker_send(cs->home, fence_msg, cs) < 0)
		copyset_put(cs);
}

bool copyset_fence_requested(struct copyset *cs)
{
	if (*cs->fenced)
		return true;
	if (!__atomic_load_n(cs->fence_req, __ATOMIC_ACQUIRE))
		return false;
	cs->ops->fence_now(cs->layout, "attach lease lost");
	return true;
}

/* ---- control calls ------------------------------------------------------- */

int copyset_resize_gate(struct copyset *cs, char *why, size_t why_len)
{
	if (*cs->closing || *cs->fenced) {
		snprintf(why, why_len, "the coordinator of '%s' is fenced or detaching", cs->name);
		return -EIO;
	}
	return 0;
}

struct call {
	int (*fn)(void *arg);
	void *arg;
	int result;
	sem_t done;
};

static void call_msg(struct tsr_worker *w, void *arg)
{
	struct call *call = arg;

	(void)w;
	call->result = call->fn(call->arg);
	sem_post(&call->done);
}

int copyset_call(struct copyset *cs, bool here, int (*fn)(void *arg), void *arg)
{
	struct call call = {.fn = fn, .arg = arg};
	int ret;

	if (here)
		return fn(arg);
	sem_init(&call.done, 0, 0);
	ret = tsr_worker_send(cs->home, call_msg, &call);
	if (ret == 0)
		sem_wait(&call.done);
	sem_destroy(&call.done);
	return ret < 0 ? ret : call.result;
}

struct post {
	struct copyset *cs;
	void (*fn)(void *arg);
	void *arg;
};

static void post_msg(struct tsr_worker *w, void *arg)
{
	struct post *p = arg;
	struct copyset *cs = p->cs;

	(void)w;
	p->fn(p->arg);
	free(p);
	copyset_put(cs);
}

int copyset_post(struct copyset *cs, void (*fn)(void *arg), void *arg)
{
	struct post *p = calloc(1, sizeof(*p));
	int ret;

	if (p == NULL)
		return -ENOMEM;
	p->cs = cs;
	p->fn = fn;
	p->arg = arg;
	copyset_get(cs);
	ret = tsr_worker_send(cs->home, post_msg, p);
	if (ret < 0) {
		free(p);
		copyset_put(cs);
	}
	return ret;
}

struct returned {
	struct copyset *cs;
	void (*fn)(void *layout, unsigned idx, const char *address);
	unsigned idx;
	char address[128];
};

static void returned_msg(void *arg)
{
	struct returned *r = arg;

	r->fn(r->cs->layout, r->idx, r->address);
	free(r);
}

void copyset_copy_returned(struct copyset *cs, unsigned idx, const char *address,
			   void (*fn)(void *layout, unsigned idx, const char *address))
{
	struct returned *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return;
	r->cs = cs;
	r->fn = fn;
	r->idx = idx;
	if (address != NULL)
		snprintf(r->address, sizeof(r->address), "%s", address);
	if (copyset_post(cs, returned_msg, r) < 0)
		free(r);
}
