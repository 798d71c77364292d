/*
 * Test helper: hold a worker still.  hold_start sends the worker a message
 * that waits until hold_release; meanwhile the worker runs nothing else (no
 * loop pass, no other message).  Include after <cmocka.h>.  A zeroed struct
 * hold is ready to use (glibc's mutex and condition initializers are zeros).
 */
#ifndef TSR_TEST_WORKER_HOLD_H
#define TSR_TEST_WORKER_HOLD_H

#include <pthread.h>
#include <stdbool.h>

#include "tessera/worker.h"

struct hold {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool held, released;
};

static inline void hold_msg(struct tsr_worker *w, void *arg)
{
	struct hold *h = arg;

	(void)w;
	pthread_mutex_lock(&h->lock);
	h->held = true;
	pthread_cond_broadcast(&h->cond);
	while (!h->released)
		pthread_cond_wait(&h->cond, &h->lock);
	pthread_mutex_unlock(&h->lock);
}

/* Queue the holding message on w (behind what w has queued) and return. */
static inline void hold_queue(struct hold *h, struct tsr_worker *w)
{
	h->held = h->released = false;
	assert_int_equal(tsr_worker_send(w, hold_msg, h), 0);
}

/* Returns once the worker runs the holding message. */
static inline void hold_wait(struct hold *h)
{
	pthread_mutex_lock(&h->lock);
	while (!h->held)
		pthread_cond_wait(&h->cond, &h->lock);
	pthread_mutex_unlock(&h->lock);
}

/* Returns once w runs the holding message. */
static inline void hold_start(struct hold *h, struct tsr_worker *w)
{
	hold_queue(h, w);
	hold_wait(h);
}

static inline void hold_release(struct hold *h)
{
	pthread_mutex_lock(&h->lock);
	h->released = true;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

#endif
