/*
 * The store's merge thread: finishes the snapshot deletes of open volumes
 * outside the caller (and so outside the local layout's gate).
 *
 * tsr_store_snap_delete of a layer of an open volume marks the row deleting
 * (committed), flags the layer deleting (copies on write go to the newest
 * layer that is not: cow.c) and queues a job here; the call then returns.
 * The thread runs the jobs in order (snap_merge_job in snap.c: wait for the
 * layer's copies on write to drain, merge it into its older neighbour
 * without store->lock, then, under it, delete the row and drop the layer).
 * A job holds a reference on the volume, so the head and its chain stay
 * loaded until the job is done; jobs of one store run one at a time, so a
 * merge target is never dropped by another merge while it is written.
 *
 * Store close (merge_stop) runs what is still queued, then joins the
 * thread.  A crash leaves the rows marked: the next open finishes them
 * (snap_recover), as for any interrupted delete.
 *
 * Locks: merge_set.lock guards the queue and the thread's state; it is taken
 * under store->lock (merge_queue) and never the other way round: the thread
 * drops it before a job takes store->lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"

void (*store_test_merge_hook)(void *arg);
void *store_test_merge_arg;

/* One queued delete. */
struct merge_job {
	struct tsr_svol *svol;  /* the volume (a reference taken at queue time) */
	char snap_uuid[37];     /* the layer being deleted */
	struct merge_job *next; /* queue order */
};

struct merge_set {
	pthread_mutex_t lock;    /* every field below */
	pthread_cond_t cond;     /* work queued, stop, or a job done */
	pthread_t thread;
	bool stopping;           /* merge_stop: run the queue empty, then end */
	bool running;            /* the thread is running a job */
	unsigned done;           /* jobs finished since the store opened (tests) */
	struct merge_job *first; /* queued, oldest first */
	struct merge_job **last; /* where the next job goes */
};

static void *merge_thread(void *arg)
{
	struct tsr_store *store = arg;
	struct merge_set *m = store->merges;
	struct merge_job *j;

	tsr_log_set_thread_name("merge");
	pthread_mutex_lock(&m->lock);
	for (;;) {
		j = m->first;
		if (j == NULL) {
			if (m->stopping)
				break;
			pthread_cond_wait(&m->cond, &m->lock);
			continue;
		}
		m->first = j->next;
		if (m->first == NULL)
			m->last = &m->first;
		m->running = true;
		pthread_mutex_unlock(&m->lock);
		snap_merge_job(store, j->svol, j->snap_uuid);
		free(j);
		pthread_mutex_lock(&m->lock);
		m->running = false;
		m->done++;
		pthread_cond_broadcast(&m->cond);
	}
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

/* The set and its thread (store->lock held); NULL when they cannot be made. */
static struct merge_set *merge_set_get(struct tsr_store *store)
{
	struct merge_set *m = store->merges;
	int ret;

	if (m)
		return m;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	m->last = &m->first;
	store->merges = m;
	ret = pthread_create(&m->thread, NULL, merge_thread, store);
	if (ret) {
		tsr_error("snapshot delete: cannot start the merge thread: %s; deletes finish "
			  "in the caller",
			  strerror(ret));
		store->merges = NULL;
		pthread_cond_destroy(&m->cond);
		pthread_mutex_destroy(&m->lock);
		free(m);
		return NULL;
	}
	return m;
}

int merge_queue(struct tsr_store *store, struct tsr_svol *svol, const char *snap_uuid)
{
	struct merge_set *m = merge_set_get(store);
	struct merge_job *j;

	if (m == NULL)
		return -ENOMEM;
	j = calloc(1, sizeof(*j));
	if (j == NULL)
		return -ENOMEM;
	j->svol = svol;
	svol->refs++; /* store->lock held */
	snprintf(j->snap_uuid, sizeof(j->snap_uuid), "%s", snap_uuid);
	pthread_mutex_lock(&m->lock);
	*m->last = j;
	m->last = &j->next;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

void merge_stop(struct tsr_store *store)
{
	struct merge_set *m;

	pthread_mutex_lock(&store->lock);
	m = store->merges;
	pthread_mutex_unlock(&store->lock);
	if (m == NULL)
		return;
	pthread_mutex_lock(&m->lock);
	m->stopping = true;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	pthread_join(m->thread, NULL); /* the queue is empty when it ends */
	pthread_mutex_lock(&store->lock);
	store->merges = NULL;
	pthread_mutex_unlock(&store->lock);
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

unsigned store_test_merges_idle(struct tsr_store *store)
{
	struct merge_set *m;
	unsigned done;

	pthread_mutex_lock(&store->lock);
	m = store->merges;
	pthread_mutex_unlock(&store->lock);
	if (m == NULL)
		return 0;
	pthread_mutex_lock(&m->lock);
	while (m->first != NULL || m->running)
		pthread_cond_wait(&m->cond, &m->lock);
	done = m->done;
	pthread_mutex_unlock(&m->lock);
	return done;
}
