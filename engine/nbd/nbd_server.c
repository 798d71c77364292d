/*
 * NBD server object: what every connection shares (the volume set, the
 * store for NBD_OPT_LIST, the default export), the per-worker connection
 * lists, the counters, and the opener threads that open exports for the
 * handshakes (nbd_open_start).
 *
 * Sharing: the server is read-only after creation except for the counters
 * (atomic), wctx[i], which only worker i's thread reads or writes, and the
 * opens (open_lock, below); the destructor runs after every worker stopped
 * (pthread_join orders it).
 *
 * Opens: a handshake's open is queued to an opener thread (started when no
 * idle one is left, up to NBD_OPENERS), which runs tsr_vol_get and sends
 * the result to the connection's worker.  A worker that stops meanwhile
 * refuses the message: its stop hook waits until no open of the server is
 * out (each is bounded: an ec snapshot's question ends within the peer
 * timeout + 1 s) and finishes the refused ones of its own on its thread, so
 * each callback runs on its worker exactly once, before the worker exits.
 * Opens beyond NBD_OPENERS at a time wait in the queue.
 *
 * Clients: the connections in transmission are listed (struct nbd_client,
 * under clients_lock: entered, moved and left by their workers, read by the
 * control thread) so that a detach can name the clients that hold its
 * volume and, with --force, close them (tsr_volset_client_ops: installed in
 * the volume set by create, removed by destroy).  A close is a message to
 * each worker serving one of them (nbd_conns_disconnect on its thread).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tessera/nbd.h"
#include "nbd/internal.h"

/* Worker indexes we serve; tesserad runs a handful of workers. */
#define NBD_MAX_WORKERS 256
/* Opener threads at most: opens waiting for other nodes at the same time
 * before the next waits in the queue. */
#define NBD_OPENERS 8

/* One export open handed to an opener thread. */
struct nbd_open {
	struct tsr_nbd_server *srv;
	struct tsr_worker *w;      /* the connection's: cb_fn runs there */
	char *name;                /* the export asked for */
	nbd_open_cb cb_fn;
	void *cb_arg;
	atomic_bool cancelled;     /* nobody waits: skip the open if not begun */
	int status;                /* the result, written by the opener thread */
	struct nbd_export exp;     /* before the message that carries it */
	struct nbd_open *next;     /* open_queue or undelivered; under open_lock */
};

struct tsr_nbd_server {
	struct tsr_volset *vols;      /* borrowed; outlives the server */
	struct tsr_store *store;      /* borrowed; for NBD_OPT_LIST */
	char *default_export;         /* owned copy, or NULL */
	struct nbd_wctx *wctx[NBD_MAX_WORKERS]; /* slot i: worker i's thread only */
	uint64_t connections_total;   /* atomic */
	uint64_t connections_open;    /* atomic */
	uint64_t protocol_errors;     /* atomic */
	/* opens: every field below under open_lock */
	pthread_mutex_t open_lock;
	pthread_cond_t open_cond;     /* a job queued, or open_stop */
	pthread_cond_t opens_idle;    /* opens_out dropped to 0 */
	struct nbd_open *open_queue, *open_queue_tail; /* not begun */
	unsigned queued;              /* in open_queue */
	unsigned opens_out;           /* started, not yet sent to (or refused by) a worker */
	struct nbd_open *undelivered; /* refused by their stopping worker */
	pthread_t openers[NBD_OPENERS];
	unsigned n_openers, idle_openers;
	bool open_stop;               /* destroy: openers exit once the queue is empty */
	/* clients: every field below under clients_lock */
	pthread_mutex_t clients_lock;
	struct nbd_client *clients;   /* connections in transmission (their struct nbd_client) */
};

static const struct tsr_volset_client_ops nbd_client_ops;

int tsr_nbd_server_create(const struct tsr_nbd_server_opts *opts,
			  struct tsr_nbd_server **out)
{
	struct tsr_nbd_server *srv;

	if (opts == NULL || opts->vols == NULL)
		return -EINVAL;
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return -ENOMEM;
	srv->vols = opts->vols;
	srv->store = opts->store;
	pthread_mutex_init(&srv->open_lock, NULL);
	pthread_cond_init(&srv->open_cond, NULL);
	pthread_cond_init(&srv->opens_idle, NULL);
	pthread_mutex_init(&srv->clients_lock, NULL);
	if (opts->default_export != NULL) {
		srv->default_export = strdup(opts->default_export);
		if (srv->default_export == NULL) {
			tsr_nbd_server_destroy(srv);
			return -ENOMEM;
		}
	}
	tsr_volset_set_client_ops(srv->vols, &nbd_client_ops, srv);
	*out = srv;
	return 0;
}

static void open_finish(struct nbd_open *op);

void tsr_nbd_server_destroy(struct tsr_nbd_server *srv)
{
	unsigned i;

	if (srv == NULL)
		return;
	tsr_volset_set_client_ops(srv->vols, NULL, NULL);
	pthread_mutex_lock(&srv->open_lock);
	srv->open_stop = true;
	pthread_cond_broadcast(&srv->open_cond);
	pthread_mutex_unlock(&srv->open_lock);
	for (i = 0; i < srv->n_openers; i++)
		pthread_join(srv->openers[i], NULL);
	/* every worker stopped: their stop hooks finished their opens */
	while (srv->undelivered != NULL) {
		struct nbd_open *op = srv->undelivered;

		srv->undelivered = op->next;
		tsr_error("nbd: open of '%s' finished after its worker%u stopped", op->name,
			  tsr_worker_index(op->w));
		op->cb_fn = NULL;
		open_finish(op);
	}
	pthread_cond_destroy(&srv->opens_idle);
	pthread_cond_destroy(&srv->open_cond);
	pthread_mutex_destroy(&srv->open_lock);
	pthread_mutex_destroy(&srv->clients_lock);
	for (i = 0; i < NBD_MAX_WORKERS; i++) {
		if (srv->wctx[i] != NULL && srv->wctx[i]->conns != NULL)
			tsr_warn("nbd: server destroyed with connections open on worker%u", i);
		free(srv->wctx[i]);
	}
	free(srv->default_export);
	free(srv);
}

void tsr_nbd_server_get_stats(struct tsr_nbd_server *srv, struct tsr_nbd_stats *out)
{
	out->connections_total = __atomic_load_n(&srv->connections_total, __ATOMIC_RELAXED);
	out->connections_open = __atomic_load_n(&srv->connections_open, __ATOMIC_RELAXED);
	out->protocol_errors = __atomic_load_n(&srv->protocol_errors, __ATOMIC_RELAXED);
}

void nbd_server_count_conn(struct tsr_nbd_server *srv, int delta_open)
{
	if (delta_open > 0)
		__atomic_add_fetch(&srv->connections_total, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&srv->connections_open, (uint64_t)(int64_t)delta_open,
			   __ATOMIC_RELAXED);
}

void nbd_server_count_protocol_error(struct tsr_nbd_server *srv)
{
	__atomic_add_fetch(&srv->protocol_errors, 1, __ATOMIC_RELAXED);
}

static void opens_finish_stopped(struct tsr_nbd_server *srv, struct tsr_worker *w);

static void wctx_on_stop(struct tsr_worker *w, void *arg)
{
	struct nbd_wctx *wctx = arg;

	wctx->stopped = true;
	nbd_conns_drain_all(wctx);
	opens_finish_stopped(wctx->srv, w);
}

struct nbd_wctx *nbd_server_wctx(struct tsr_nbd_server *srv, struct tsr_worker *w)
{
	unsigned i = tsr_worker_index(w);
	struct nbd_wctx *wctx;

	if (i >= NBD_MAX_WORKERS) {
		tsr_error("nbd: worker%u: index above %u, not served", i, NBD_MAX_WORKERS);
		return NULL;
	}
	if (srv->wctx[i] != NULL)
		return srv->wctx[i];
	wctx = calloc(1, sizeof(*wctx));
	if (wctx == NULL)
		return NULL;
	wctx->srv = srv;
	wctx->w = w;
	if (tsr_worker_on_stop(w, wctx_on_stop, wctx) < 0) {
		free(wctx);
		return NULL;
	}
	srv->wctx[i] = wctx;
	return wctx;
}

/* ---- exports for the handshake: volumes by name ---- */

static int export_open(void *arg, const char *name, struct nbd_export *out)
{
	struct tsr_nbd_server *srv = arg;
	struct tsr_vol *vol;
	int ret;

	if (name[0] == '\0') {
		if (srv->default_export == NULL)
			return -ENOENT;
		name = srv->default_export;
	}
	/*
	 * May block: the volume's files and the catalogue, an ec snapshot's
	 * question to its chunk copies (up to the peer timeout).  Connections
	 * call it on an opener thread (nbd_open_start), never on their worker.
	 */
	ret = tsr_vol_get(srv->vols, name, &vol);
	if (ret < 0)
		return ret;
	out->handle = vol;
	out->size = tsr_vol_size(vol);
	out->name = tsr_vol_name(vol);
	/* "VOL@SNAP" (vol.c): a snapshot's image, read-only */
	out->read_only = strchr(out->name, '@') != NULL;
	return 0;
}

static void export_close(void *arg, void *handle)
{
	if (handle != NULL)
		tsr_vol_put(handle);
}

static int export_list(void *arg, int (*emit)(void *emit_arg, const char *name),
		       void *emit_arg)
{
	struct tsr_nbd_server *srv = arg;
	struct tsr_vol_info *infos = NULL;
	size_t i, count = 0;
	int ret;

	if (srv->store == NULL)
		return -ENOTSUP;
	/* Debt: a catalogue query on the worker (NBD_OPT_LIST; opens moved to
	 * the opener threads, this did not: it waits for no other node). */
	ret = tsr_store_vol_list(srv->store, &infos, &count);
	if (ret < 0)
		return ret;
	for (i = 0; i < count && ret == 0; i++)
		ret = emit(emit_arg, infos[i].name);
	free(infos);
	return ret;
}

const struct nbd_export_ops nbd_server_export_ops = {
	.open = export_open,
	.close = export_close,
	.list = export_list,
};

/* ---- opens off the workers (see the file header) ---- */

/* On the connection's worker (or, abandoned, the destructor's thread). */
static void open_finish(struct nbd_open *op)
{
	if (op->cb_fn != NULL)
		op->cb_fn(op->cb_arg, op->status, &op->exp);
	else if (op->status == 0)
		export_close(op->srv, op->exp.handle);
	free(op->name);
	free(op);
}

static void open_deliver_msg(struct tsr_worker *w, void *arg)
{
	(void)w;
	open_finish(arg);
}

/* Tests only: while the file named by $TSR_TEST_NBD_OPEN_HOLD_FILE exists (at
 * most 30 s), an open's result waits on its opener thread before it goes to
 * the worker: a slow open (an ec snapshot's question to a frozen copy) held
 * open deliberately, its export already taken (nbd_conn_ut
 * test_open_off_worker). */
static void open_test_hold(void)
{
	const char *path = getenv("TSR_TEST_NBD_OPEN_HOLD_FILE");

	for (int i = 0; path != NULL && path[0] && i < 3000 && access(path, F_OK) == 0; i++)
		usleep(10000);
}

/* Opener thread: the open, then its result to the connection's worker. */
static void open_run(struct tsr_nbd_server *srv, struct nbd_open *op)
{
	int ret;

	if (atomic_load(&op->cancelled))
		op->status = -ECANCELED;
	else
		op->status = export_open(srv, op->name, &op->exp);
	open_test_hold();
	/* op belongs to w's thread from here, as soon as the message is queued;
	 * no memory for the message: try again (this thread may wait), or the
	 * client would wait for the answer until the worker stops */
	for (int i = 0; i < 1000 && (ret = tsr_worker_send(op->w, open_deliver_msg, op)) == -ENOMEM;
	     i++)
		usleep(1000);
	if (ret == 0) {
		pthread_mutex_lock(&srv->open_lock);
	} else {
		/* w is stopping: its stop hook finishes op (opens_finish_stopped);
		 * (still no memory: the same, when w stops) */
		pthread_mutex_lock(&srv->open_lock);
		op->next = srv->undelivered;
		srv->undelivered = op;
	}
	if (--srv->opens_out == 0)
		pthread_cond_broadcast(&srv->opens_idle);
	pthread_mutex_unlock(&srv->open_lock);
}

static void *opener_main(void *arg)
{
	struct tsr_nbd_server *srv = arg;

	tsr_log_set_thread_name("nbd-open");
	pthread_mutex_lock(&srv->open_lock);
	for (;;) {
		struct nbd_open *op = srv->open_queue;

		if (op == NULL) {
			if (srv->open_stop)
				break;
			srv->idle_openers++;
			pthread_cond_wait(&srv->open_cond, &srv->open_lock);
			srv->idle_openers--;
			continue;
		}
		srv->open_queue = op->next;
		if (srv->open_queue == NULL)
			srv->open_queue_tail = NULL;
		srv->queued--;
		pthread_mutex_unlock(&srv->open_lock);
		open_run(srv, op);
		pthread_mutex_lock(&srv->open_lock);
	}
	pthread_mutex_unlock(&srv->open_lock);
	return NULL;
}

int nbd_open_start(struct tsr_nbd_server *srv, struct tsr_worker *w, const char *name,
		   nbd_open_cb cb_fn, void *cb_arg, struct nbd_open **out)
{
	struct nbd_open *op = calloc(1, sizeof(*op));
	int ret = 0;

	if (op == NULL || (op->name = strdup(name)) == NULL) {
		free(op);
		return -ENOMEM;
	}
	op->srv = srv;
	op->w = w;
	op->cb_fn = cb_fn;
	op->cb_arg = cb_arg;
	atomic_init(&op->cancelled, false);
	pthread_mutex_lock(&srv->open_lock);
	if (srv->idle_openers <= srv->queued && srv->n_openers < NBD_OPENERS) {
		ret = -pthread_create(&srv->openers[srv->n_openers], NULL, opener_main, srv);
		if (ret == 0)
			srv->n_openers++;
		else if (srv->n_openers > 0)
			ret = 0; /* the running ones take it in turn */
		else
			tsr_error("nbd: cannot start an opener thread: %s", strerror(-ret));
	}
	if (ret == 0) {
		if (srv->open_queue_tail != NULL)
			srv->open_queue_tail->next = op;
		else
			srv->open_queue = op;
		srv->open_queue_tail = op;
		srv->queued++;
		srv->opens_out++;
		pthread_cond_signal(&srv->open_cond);
	}
	pthread_mutex_unlock(&srv->open_lock);
	if (ret < 0) {
		free(op->name);
		free(op);
		return ret == -ENOMEM ? ret : -EAGAIN;
	}
	*out = op;
	return 0;
}

void nbd_open_cancel(struct nbd_open *op)
{
	atomic_store(&op->cancelled, true);
}

/*
 * w's stop hook: wait until no open of the server is out (so that every
 * result either reached its worker's queue, which runs before the worker
 * exits, or was refused), then finish the refused ones of w here.
 */
static void opens_finish_stopped(struct tsr_nbd_server *srv, struct tsr_worker *w)
{
	struct nbd_open *mine = NULL, **pp;

	pthread_mutex_lock(&srv->open_lock);
	while (srv->opens_out > 0)
		pthread_cond_wait(&srv->opens_idle, &srv->open_lock);
	for (pp = &srv->undelivered; *pp != NULL;) {
		struct nbd_open *op = *pp;

		if (op->w == w) {
			*pp = op->next;
			op->next = mine;
			mine = op;
		} else {
			pp = &op->next;
		}
	}
	pthread_mutex_unlock(&srv->open_lock);
	while (mine != NULL) {
		struct nbd_open *op = mine;

		mine = op->next;
		open_finish(op);
	}
}

/* ---- clients (see the file header) ---- */

void nbd_client_add(struct tsr_nbd_server *srv, struct nbd_client *cl, const char *export,
		    struct tsr_worker *w)
{
	pthread_mutex_lock(&srv->clients_lock);
	cl->export = export;
	cl->w = w;
	cl->prev = NULL;
	cl->next = srv->clients;
	if (cl->next != NULL)
		cl->next->prev = cl;
	srv->clients = cl;
	cl->listed = true;
	pthread_mutex_unlock(&srv->clients_lock);
}

void nbd_client_moved(struct tsr_nbd_server *srv, struct nbd_client *cl, struct tsr_worker *w)
{
	pthread_mutex_lock(&srv->clients_lock);
	cl->w = w;
	pthread_mutex_unlock(&srv->clients_lock);
}

void nbd_client_remove(struct tsr_nbd_server *srv, struct nbd_client *cl)
{
	pthread_mutex_lock(&srv->clients_lock);
	if (cl->listed) {
		if (cl->prev != NULL)
			cl->prev->next = cl->next;
		else
			srv->clients = cl->next;
		if (cl->next != NULL)
			cl->next->prev = cl->prev;
		cl->prev = cl->next = NULL;
		cl->listed = false;
	}
	pthread_mutex_unlock(&srv->clients_lock);
}

static unsigned clients_list(void *arg, const char *name, char (*peers)[TSR_PEER_ADDR_MAX],
			     unsigned max)
{
	struct tsr_nbd_server *srv = arg;
	unsigned n = 0;

	pthread_mutex_lock(&srv->clients_lock);
	for (struct nbd_client *cl = srv->clients; cl != NULL; cl = cl->next) {
		if (strcmp(cl->export, name) != 0)
			continue;
		if (n < max)
			snprintf(peers[n], TSR_PEER_ADDR_MAX, "%s", cl->peer);
		n++;
	}
	pthread_mutex_unlock(&srv->clients_lock);
	return n;
}

/* A close of export name's clients, on one worker. */
struct disconnect_msg {
	struct tsr_nbd_server *srv;
	char name[];
};

static void disconnect_run(struct tsr_worker *w, void *arg)
{
	struct disconnect_msg *m = arg;
	struct nbd_wctx *wctx = nbd_server_wctx(m->srv, w);

	if (wctx != NULL && !wctx->stopped)
		nbd_conns_disconnect(wctx, m->name);
	free(m);
}

static unsigned clients_disconnect(void *arg, const char *name)
{
	struct tsr_nbd_server *srv = arg;
	struct tsr_worker *workers[NBD_MAX_WORKERS];
	unsigned n = 0, n_workers = 0, i;
	size_t len = strlen(name) + 1;

	pthread_mutex_lock(&srv->clients_lock);
	for (struct nbd_client *cl = srv->clients; cl != NULL; cl = cl->next) {
		if (strcmp(cl->export, name) != 0)
			continue;
		n++;
		for (i = 0; i < n_workers && workers[i] != cl->w; i++)
			;
		if (i == n_workers && n_workers < NBD_MAX_WORKERS)
			workers[n_workers++] = cl->w;
	}
	pthread_mutex_unlock(&srv->clients_lock);
	for (i = 0; i < n_workers; i++) {
		struct disconnect_msg *m = malloc(sizeof(*m) + len);

		if (m == NULL)
			continue; /* the detach asks again on its next poll */
		m->srv = srv;
		memcpy(m->name, name, len);
		if (tsr_worker_send(workers[i], disconnect_run, m) < 0)
			free(m); /* stopping: its connections drain anyway */
	}
	return n;
}

static const struct tsr_volset_client_ops nbd_client_ops = {
	.list = clients_list,
	.disconnect = clients_disconnect,
};
