/*
 * Spare snapshot layers: the slow half of a snapshot create, done ahead of
 * time by a background thread of the store, so that the cut itself (in the
 * layout's gate, on the volume's home worker) only commits the catalogue row
 * and publishes the layer.
 *
 * A volume asks for a spare with tsr_store_snap_spare(keep) (the local
 * layout does when it opens a volume).  The thread then creates the files of
 * a layer sized for the volume (layer_create_files: created O_EXCL, sized,
 * fsynced), fsyncs volumes/, opens and maps the layer, and parks it here.
 * snap_cut takes it (spare_take) instead of making the files itself, and the
 * create asks for the next one (spare_request) once it is done.
 *
 * A spare has no catalogue row: until a create commits the row that names
 * it, its files are files without a row, which the next open removes (the
 * rule a crash during create always relied on).  So a crash at any point of
 * the background work, or with a spare parked, leaves no snapshot and no
 * space behind.  A spare made for another size (the volume grew) is dropped
 * when taken; one of a deleted volume when the volume goes; every spare at
 * store close.
 *
 * The same thread removes the files of deleted layers (spare_reap) when it
 * runs: a delete inside the layout's gate then ends with its row's commit.
 * Files whose row is gone are files without a row: removed at open if a
 * crash comes first, and at store close the queue is emptied.
 *
 * Locks: spare_set.lock guards the list and the thread's state; it may be
 * taken under store->lock (snap_cut), never the other way round, and the
 * thread holds neither while it creates files.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"

/* What the store knows of one volume that wants spares. */
struct spare {
	char vol_uuid[37];   /* the volume */
	uint64_t size;       /* the volume's size to make the next spare for */
	bool wanted;         /* keep one ready (tsr_store_snap_spare) */
	bool queued;         /* the thread is to make one */
	char uuid[37];       /* the parked layer's uuid (its files' names) */
	struct layer *layer; /* parked: files durable, mapped; NULL: none */
	uint64_t layer_size; /* the size the parked layer was made for */
	struct spare *next;
};

/* Files of a deleted layer whose row is gone, to remove (spare_reap). */
struct reap {
	char uuid[37];
	uint64_t size;
	struct reap *next;
};

struct spare_set {
	pthread_mutex_t lock; /* every field below and every struct spare */
	pthread_cond_t cond;  /* work queued, stop, or the thread idle */
	pthread_t thread;
	bool stopping;        /* spare_stop: the thread ends */
	bool busy;            /* the thread is making a spare or removing files */
	unsigned made;        /* spares parked since the store opened (tests) */
	struct spare *list;
	struct reap *reaps;   /* files to remove, oldest last */
};

/* Remove the files of every queued reap, then sync volumes/ once. */
static void reap_run(struct tsr_store *store, struct reap *r)
{
	struct reap *next;

	if (r == NULL)
		return;
	store_crash_point();
	for (; r != NULL; r = next) {
		next = r->next;
		layer_remove_files(store, r->uuid, r->size);
		free(r);
	}
	store_fsync_voldir(store);
}

static void spare_discard(struct tsr_store *store, struct layer *l, const char *uuid,
			  uint64_t size)
{
	layer_close(l);
	layer_remove_files(store, uuid, size);
}

/* Files, directory sync and mapping of a new layer; the files are removed
 * again on failure.  0 or -errno (logged). */
static int spare_make(struct tsr_store *store, const char *vol_uuid, uint64_t size,
		      char uuid[37], struct layer **out)
{
	struct snap_row row;
	int ret;

	memset(&row, 0, sizeof(row));
	store_make_uuid(row.uuid);
	snprintf(row.vol_uuid, sizeof(row.vol_uuid), "%s", vol_uuid);
	snprintf(row.name, sizeof(row.name), "(spare)");
	row.size = size;
	store_crash_point();
	ret = layer_create_files(store, row.uuid, size);
	if (ret == 0) {
		store_crash_point();
		ret = store_fsync_voldir(store);
	}
	if (ret == 0) {
		store_crash_point();
		ret = layer_open(store, &row, out);
	}
	if (ret) {
		tsr_error("snapshot: volume %s: spare layer: %s (the next create makes its "
			  "files itself)",
			  vol_uuid, strerror(-ret));
		layer_remove_files(store, row.uuid, size);
		return ret;
	}
	memcpy(uuid, row.uuid, 37);
	return 0;
}

static struct spare *spare_find(struct spare_set *ss, const char *vol_uuid)
{
	struct spare *sp;

	for (sp = ss->list; sp != NULL; sp = sp->next)
		if (strcmp(sp->vol_uuid, vol_uuid) == 0)
			return sp;
	return NULL;
}

static void *spare_main(void *arg)
{
	struct tsr_store *store = arg;
	struct spare_set *ss = store->spares;

	pthread_mutex_lock(&ss->lock);
	while (!ss->stopping) {
		char vol_uuid[37], uuid[37];
		struct layer *l = NULL;
		struct spare *sp;
		uint64_t size;
		int ret;

		if (ss->reaps != NULL) {
			struct reap *r = ss->reaps;

			ss->reaps = NULL;
			ss->busy = true;
			pthread_mutex_unlock(&ss->lock);
			reap_run(store, r);
			pthread_mutex_lock(&ss->lock);
			continue;
		}
		for (sp = ss->list; sp != NULL && !sp->queued; sp = sp->next)
			;
		if (sp == NULL) {
			ss->busy = false;
			pthread_cond_broadcast(&ss->cond);
			pthread_cond_wait(&ss->cond, &ss->lock);
			continue;
		}
		ss->busy = true;
		sp->queued = false;
		memcpy(vol_uuid, sp->vol_uuid, sizeof(vol_uuid));
		size = sp->size;
		pthread_mutex_unlock(&ss->lock);
		ret = spare_make(store, vol_uuid, size, uuid, &l);
		pthread_mutex_lock(&ss->lock);
		if (ret)
			continue;
		sp = spare_find(ss, vol_uuid); /* entries live until spare_stop */
		if (ss->stopping || !sp->wanted || sp->layer != NULL || sp->size != size) {
			pthread_mutex_unlock(&ss->lock);
			spare_discard(store, l, uuid, size);
			pthread_mutex_lock(&ss->lock);
			continue;
		}
		sp->layer = l;
		sp->layer_size = size;
		memcpy(sp->uuid, uuid, sizeof(sp->uuid));
		ss->made++;
	}
	ss->busy = false;
	pthread_cond_broadcast(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
	return NULL;
}

/* The store's spare set, started on first use (store->lock held). */
static int spare_set_get(struct tsr_store *store, struct spare_set **out)
{
	struct spare_set *ss = store->spares;

	if (ss == NULL) {
		ss = calloc(1, sizeof(*ss));
		if (ss == NULL)
			return -ENOMEM;
		pthread_mutex_init(&ss->lock, NULL);
		pthread_cond_init(&ss->cond, NULL);
		store->spares = ss;
		if (pthread_create(&ss->thread, NULL, spare_main, store) != 0) {
			store->spares = NULL;
			pthread_cond_destroy(&ss->cond);
			pthread_mutex_destroy(&ss->lock);
			free(ss);
			return -EAGAIN;
		}
	}
	*out = ss;
	return 0;
}

void spare_request(struct tsr_store *store, const char *vol_uuid, uint64_t size)
{
	struct spare_set *ss = store->spares;
	struct spare *sp;

	if (ss == NULL)
		return;
	pthread_mutex_lock(&ss->lock);
	sp = spare_find(ss, vol_uuid);
	if (sp != NULL && sp->wanted && sp->layer == NULL) {
		sp->size = size;
		sp->queued = true;
		pthread_cond_broadcast(&ss->cond);
	}
	pthread_mutex_unlock(&ss->lock);
}

struct layer *spare_take(struct tsr_store *store, const char *vol_uuid, uint64_t size,
			 char uuid_out[37])
{
	struct spare_set *ss = store->spares;
	struct layer *l = NULL;
	struct spare *sp;
	char uuid[37];
	uint64_t made;

	if (ss == NULL)
		return NULL;
	pthread_mutex_lock(&ss->lock);
	sp = spare_find(ss, vol_uuid);
	if (sp != NULL && sp->layer != NULL) {
		l = sp->layer;
		made = sp->layer_size;
		memcpy(uuid, sp->uuid, sizeof(uuid));
		sp->layer = NULL;
	}
	pthread_mutex_unlock(&ss->lock);
	if (l == NULL)
		return NULL;
	if (made != size) { /* the volume grew since: useless */
		spare_discard(store, l, uuid, made);
		return NULL;
	}
	memcpy(uuid_out, uuid, 37);
	return l;
}

void spare_forget(struct tsr_store *store, const char *vol_uuid)
{
	struct spare_set *ss = store->spares;
	struct layer *l = NULL;
	struct spare *sp;
	char uuid[37];
	uint64_t size = 0;

	if (ss == NULL)
		return;
	pthread_mutex_lock(&ss->lock);
	sp = spare_find(ss, vol_uuid);
	if (sp != NULL) {
		sp->wanted = false;
		sp->queued = false;
		l = sp->layer;
		size = sp->layer_size;
		memcpy(uuid, sp->uuid, sizeof(uuid));
		sp->layer = NULL;
	}
	pthread_mutex_unlock(&ss->lock);
	if (l != NULL)
		spare_discard(store, l, uuid, size);
}

void spare_stop(struct tsr_store *store)
{
	struct spare_set *ss = store->spares;
	struct spare *sp;

	if (ss == NULL)
		return;
	pthread_mutex_lock(&ss->lock);
	ss->stopping = true;
	pthread_cond_broadcast(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
	pthread_join(ss->thread, NULL);
	reap_run(store, ss->reaps);
	ss->reaps = NULL;
	while ((sp = ss->list) != NULL) {
		ss->list = sp->next;
		if (sp->layer != NULL)
			spare_discard(store, sp->layer, sp->uuid, sp->layer_size);
		free(sp);
	}
	pthread_cond_destroy(&ss->cond);
	pthread_mutex_destroy(&ss->lock);
	free(ss);
	store->spares = NULL;
}

bool spare_reap(struct tsr_store *store, const char *uuid, uint64_t size)
{
	struct spare_set *ss = store->spares;
	struct reap *r;

	if (ss == NULL || (r = calloc(1, sizeof(*r))) == NULL)
		return false;
	snprintf(r->uuid, sizeof(r->uuid), "%s", uuid);
	r->size = size;
	pthread_mutex_lock(&ss->lock);
	r->next = ss->reaps;
	ss->reaps = r;
	pthread_cond_broadcast(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
	return true;
}

unsigned store_test_spares_idle(struct tsr_store *store)
{
	struct spare_set *ss = store->spares;
	unsigned made;

	if (ss == NULL)
		return 0;
	pthread_mutex_lock(&ss->lock);
	for (;;) {
		struct spare *sp;

		for (sp = ss->list; sp != NULL && !sp->queued; sp = sp->next)
			;
		if (sp == NULL && !ss->busy && ss->reaps == NULL)
			break;
		pthread_cond_wait(&ss->cond, &ss->lock);
	}
	made = ss->made;
	pthread_mutex_unlock(&ss->lock);
	return made;
}

int tsr_store_snap_spare(struct tsr_store *store, const char *vol, bool keep)
{
	struct spare_set *ss = NULL;
	struct spare *sp;
	struct vol_row v;
	int ret;

	if (store->dev_fd >= 0)
		return -EOPNOTSUPP;
	if (vol == NULL || !tsr_valid_name(vol))
		return -ENOENT;
	pthread_mutex_lock(&store->lock);
	ret = catalog_get(store->db, vol, &v);
	if (ret == 0 && !keep)
		spare_forget(store, v.uuid);
	if (ret == 0 && keep)
		ret = spare_set_get(store, &ss);
	if (ret || !keep)
		goto out;
	pthread_mutex_lock(&ss->lock);
	sp = spare_find(ss, v.uuid);
	if (sp == NULL && (sp = calloc(1, sizeof(*sp))) != NULL) {
		memcpy(sp->vol_uuid, v.uuid, sizeof(sp->vol_uuid));
		sp->next = ss->list;
		ss->list = sp;
	}
	if (sp != NULL)
		sp->wanted = true;
	pthread_mutex_unlock(&ss->lock);
	if (sp == NULL)
		ret = -ENOMEM;
	else
		spare_request(store, v.uuid, v.size);
out:
	pthread_mutex_unlock(&store->lock);
	return ret;
}
