/*
 * The copy set: what the mirror and the EC layout do alike with their
 * copies (copyset_internal.h).  Everything here runs on the layout's home
 * worker unless a comment says otherwise, and holds a reference on the
 * layout (ops->get/put) for every message or call it leaves in flight.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "layout/copyset_internal.h"

/* ---- records: copy states in the metadata store ---------------------------- */

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
	cs->ops->put(cs->layout);
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
	cs->ops->get(cs->layout);
	tsr_info("%s %s: copy %u (%s) -> %s", cs->kind, cs->name, c->idx, c->node_id,
		 tsr_copy_state_name(hc->st));
	cs->hooks->set_copy_state(cs->hooks->arg, cs->name, c->idx, hc->st, hook_done, hc);
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
	c->hook_busy = false;
	while ((w = c->hook_waiters) != NULL) {
		c->hook_waiters = w->next;
		w->fn(w->arg, -ECANCELED);
		free(w);
	}
}

