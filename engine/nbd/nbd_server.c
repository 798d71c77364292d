/*
 * NBD server object: what every connection shares (the volume set, the
 * store for NBD_OPT_LIST, the default export), the per-worker connection
 * lists, and the counters.
 *
 * Sharing: the server is read-only after creation except for the counters
 * (atomic) and wctx[i], which only worker i's thread reads or writes; the
 * destructor runs after every worker stopped (pthread_join orders it).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tessera/nbd.h"
#include "nbd/internal.h"

/* Worker indexes we serve; tesserad runs a handful of workers. */
#define NBD_MAX_WORKERS 256

struct tsr_nbd_server {
	struct tsr_volset *vols;      /* borrowed; outlives the server */
	struct tsr_store *store;      /* borrowed; for NBD_OPT_LIST */
	char *default_export;         /* owned copy, or NULL */
	struct nbd_wctx *wctx[NBD_MAX_WORKERS]; /* slot i: worker i's thread only */
	uint64_t connections_total;   /* atomic */
	uint64_t connections_open;    /* atomic */
	uint64_t protocol_errors;     /* atomic */
};

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
	if (opts->default_export != NULL) {
		srv->default_export = strdup(opts->default_export);
		if (srv->default_export == NULL) {
			free(srv);
			return -ENOMEM;
		}
	}
	*out = srv;
	return 0;
}

void tsr_nbd_server_destroy(struct tsr_nbd_server *srv)
{
	unsigned i;

	if (srv == NULL)
		return;
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

static void wctx_on_stop(struct tsr_worker *w, void *arg)
{
	struct nbd_wctx *wctx = arg;

	wctx->stopped = true;
	nbd_conns_drain_all(wctx);
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
	 * Attaching may open the volume's files and read the catalogue: a
	 * blocking call on the worker, once per handshake (debt: move to the
	 * control thread with a message round trip).
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
	/* A catalogue query on the worker (same debt as export_open). */
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
