/*
 * A detach's reply held until its copies are closed on their nodes.
 *
 * A detach is done on this node once its coordinator is gone: the layout's
 * peer clients close their sockets (copyset.c client_drop), and each copy's
 * node closes its copy a moment later, when its peer server has read the
 * end of the stream and the session's last request ended (peer_server.c
 * conn_free).  An operation right after the detach that needs a copy closed
 * met it open: a rollback waited for it in the store (snap.c
 * rollback_wait_closed), but `volume delete` left the copy behind (its
 * node's store delete answered -EBUSY; cluster_volume_delete only warns).
 * So the detach's admin reply now waits for every copy its coordinator had
 * open to be closed: this node's copy looked at in the store, another
 * node's asked with the local_copy VolumeResize with check_only at the
 * copy's size (nothing changes; the answer's Volume.copy_sessions, from
 * admin_ops.c build_volume; a copy larger than that, left by a resize
 * stopped after its grow step, answers "can only grow" with its Volume
 * all the same), every CLOSE_POLL_MS, with admin_async_call:
 * the loop serves other calls meanwhile.  Each node's address is resolved
 * at the start (admin_resolve: no resolver for a numeric address, a
 * blocking one for a name), and every look connects to its numeric
 * addresses in the resolver's order, the next one when a connect fails at
 * once (as admin_tcp_connect does for a name) or is refused late (a real
 * network: in progress, then refused; the next look asks the next one, and
 * only every address refusing counts the copy closed): a name no longer
 * costs a blocking getaddrinfo on the loop every CLOSE_POLL_MS.  It is
 * looked up again (close_resolve), at most every CLOSE_RESOLVE_MS, while it
 * does not resolve or after a look that could not ask the node (its name
 * may have moved to another address meanwhile), unless a lookup took
 * longer than CLOSE_RESOLVE_SLOW_MS (a resolver that times out would hold
 * the loop that long each time): then the addresses it had stay for the
 * rest of the wait.  While a name does not resolve its copy counts as
 * open, the note saying which address and why.  The copies waited for are
 * those the coordinator had a session with at the detach (attach.c
 * detach_copy_nodes).  A copy that is gone (-ENOENT), or on a node whose
 * tesserad is not running (-ECONNREFUSED: nothing there holds it), counts
 * as closed; a node of an earlier build answers 0 sessions: no wait.
 *
 * Bound: the peer timeout (cluster_peer_call_ms) from the start.  A node
 * that does not answer (stopped, cut off) or whose copy stays open (a
 * session's close that hangs, attached again meanwhile) costs the detach
 * that bound; the reply (a note on success: the detach itself is done) and
 * the log then say which node's copy is still open and what it answered.
 * An attach of the volume meanwhile (on any node) ends the wait at once, no
 * note: its coordinator holds the copies now (seen in attach/<name> every
 * CLOSE_ATTACH_CHECK_MS once that long has passed; before, the wait lasted
 * its bound and named every copy still open).
 * Main thread only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_internal.h"
#include "cluster/internal.h"

#define CLOSE_POLL_MS 10
/* A copy still open this long after the start may be the copy of a new
 * attach (on any node): attach/<name> is looked at then, and every as long
 * after (a metadata read: not at each poll). */
#define CLOSE_ATTACH_CHECK_MS 100
/* The detach's note on the copies still open, at most (the reply's message
 * around it stays within admin_fail's 1024 bytes). */
#define CLOSE_NOTE_MAX 700
/* A node's resolved addresses tried per look, at most (IPv6 and IPv4 of a
 * name, and a little more). */
#define CLOSE_ADDRS 4
/* A node's address looked up again (it did not resolve, or a look could
 * not ask the node) at most this often: a blocking lookup on the loop. */
#define CLOSE_RESOLVE_MS 500
/* A lookup longer than this is not made again in the same wait. */
#define CLOSE_RESOLVE_SLOW_MS 100

struct close_wait;

/* One copy of the volume, on one node. */
struct close_copy {
	struct close_wait *w;
	char node_id[64];
	char address[256];        /* its admin address; "" for this node (the store) */
	/* address resolved at the start and again by close_resolve; 0: this
	 * node's copy, or a name that does not resolve (not asked: cc->state
	 * says so) */
	char addrs[CLOSE_ADDRS][ADMIN_ADDR_MAX];
	unsigned n_addrs;
	unsigned addr_next;       /* the next look starts at this address: the ones
				   * before it refused in this round */
	unsigned addr_cur;        /* the address of the query in flight */
	bool stale;               /* the last look could not ask the node: look its
				   * address up again before the next (close_resolve) */
	double resolve_at;        /* ev_now from which it may be looked up again; 0:
				   * not again (a lookup was slow) */
	bool resolve_logged;      /* its failure to resolve is in the log */
	bool closed;              /* seen closed, or without a copy */
	struct admin_async *call; /* a query in flight, else NULL */
	char state[512];          /* while not closed: what we last know, for the note */
};

struct close_wait {
	struct tsr_cluster *c;
	char name[64];
	uint64_t epoch;           /* the detached coordinator's (attach/<name>'s mod_rev) */
	uint64_t copy_size;       /* the query's size: the copy's own (rec_copy_size) */
	int bound_ms;             /* cluster_peer_call_ms at the start */
	double start, deadline;   /* ev_now at the start; after which the wait ends */
	ev_timer poll;            /* every CLOSE_POLL_MS on c->o.loop */
	bool ending;              /* close_end runs: late answers are ignored */
	double attach_check;      /* ev_now of the next look at attach/<name>; 0: no
				   * more looks (the metadata store failed) */
	char attached_on[64];     /* the node of a new attach found meanwhile (its
				   * coordinator holds the copies now), else "" */
	close_wait_fn cb_fn;
	void *cb_arg;
	unsigned n;
	struct close_copy copies[TSR_LAYOUT_MAX_COPIES];
	struct close_wait *next;  /* c->close_waits */
};

static bool all_closed(const struct close_wait *w)
{
	for (unsigned i = 0; i < w->n; i++)
		if (!w->copies[i].closed)
			return false;
	return true;
}

void cluster_close_note(char *out, size_t len, unsigned n, const char *const *nodes,
			const char *const *states)
{
	char *buf = NULL;
	size_t blen = 0;
	FILE *f = open_memstream(&buf, &blen);

	if (f == NULL) {
		snprintf(out, len, "(out of memory)");
		return;
	}
	for (unsigned i = 0; i < n; i++) {
		bool listed = false;

		if (states[i] == NULL)
			continue;
		for (unsigned j = 0; j < i && !listed; j++)
			listed = states[j] && strcmp(states[j], states[i]) == 0;
		if (listed) /* with the first copy of its state */
			continue;
		fprintf(f, "%s%s", ftell(f) ? ", " : "", nodes[i]);
		for (unsigned j = i + 1; j < n; j++)
			if (states[j] && strcmp(states[j], states[i]) == 0)
				fprintf(f, ", %s", nodes[j]);
		fprintf(f, " (%s)", states[i]);
	}
	if (fclose(f) != 0 || buf == NULL) {
		free(buf);
		snprintf(out, len, "(out of memory)");
		return;
	}
	if (blen < len)
		memcpy(out, buf, blen + 1);
	else if (len > 3)
		snprintf(out, len, "%.*s...", (int)(len - 4), buf);
	else
		out[0] = '\0';
	free(buf);
}

/* End w: unlist it, cancel its queries, tell its caller (which copies are
 * still open, "" none), free it.  why: the note's reason; past_bound: a
 * query still out had the whole bound to answer (else it was cut short:
 * tesserad stopping). */
static void close_end(struct close_wait *w, const char *why, bool past_bound)
{
	const char *nodes[TSR_LAYOUT_MAX_COPIES], *states[TSR_LAYOUT_MAX_COPIES];
	struct tsr_cluster *c = w->c;
	char note[CLOSE_NOTE_MAX];

	w->ending = true;
	ev_timer_stop(c->o.loop, &w->poll);
	for (struct close_wait **pp = &c->close_waits; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	for (unsigned i = 0; i < w->n; i++) {
		struct close_copy *cc = &w->copies[i];

		if (cc->call && past_bound)
			snprintf(cc->state, sizeof(cc->state), "its node did not answer within "
				 "%d ms: stopped or cut off?", w->bound_ms);
		else if (cc->call)
			snprintf(cc->state, sizeof(cc->state), "its node had not answered yet");
		if (cc->call)
			admin_async_cancel(cc->call); /* its callback runs now: ignored */
		nodes[i] = cc->node_id;
		states[i] = cc->closed || w->attached_on[0] ? NULL : cc->state;
	}
	cluster_close_note(note, sizeof(note), w->n, nodes, states);
	if (w->attached_on[0]) {
		ev_now_update(c->o.loop);
		tsr_info("cluster: detach %s: attached again on %s (after %.0f ms): its copies "
			 "are that coordinator's now, not waited for", w->name, w->attached_on,
			 (ev_now(c->o.loop) - w->start) * 1000);
		w->cb_fn(w->cb_arg, "");
	} else if (note[0]) {
		char msg[1024]; /* admin_fail's bound: the note fits with the rest */

		snprintf(msg, sizeof(msg), "volume '%s' is detached, but %s: its copy is still "
			 "open on %s; a rollback or volume delete right now may find it busy (see "
			 "that node's log; retry in a moment)", w->name, why, note);
		tsr_warn("cluster: detach %s: %s", w->name, msg);
		w->cb_fn(w->cb_arg, msg);
	} else {
		ev_now_update(c->o.loop);
		tsr_info("cluster: detach %s: every copy is closed on its node (after %.0f ms)",
			 w->name, (ev_now(c->o.loop) - w->start) * 1000);
		w->cb_fn(w->cb_arg, "");
	}
	free(w);
}

/* admin_async_fn: a copy's node answered the query (or did not). */
static void close_query_done(void *cb_arg, int status, Tessera__Admin__Response *resp)
{
	struct close_copy *cc = cb_arg;
	struct close_wait *w = cc->w;

	cc->call = NULL;
	if (w->ending) {
		if (resp)
			tessera__admin__response__free_unpacked(resp, NULL);
		return;
	}
	if (status == -ETIMEDOUT)
		snprintf(cc->state, sizeof(cc->state), "its node did not answer within %d ms: "
			 "stopped or cut off?", w->bound_ms);
	else if (status == -ECONNREFUSED && cc->addr_cur + 1 < cc->n_addrs)
		cc->addr_next = cc->addr_cur + 1; /* the next look asks its next address */
	else if (status == -ECONNREFUSED)
		cc->closed = true; /* its tesserad is not running: nothing holds the copy */
	else if (status) {
		snprintf(cc->state, sizeof(cc->state), "cannot ask it: %s", strerror(-status));
		cc->stale = true;
	} else if (resp->error == -ENOENT)
		cc->closed = true;
	else if (resp->error && resp->n_volumes != 1)
		snprintf(cc->state, sizeof(cc->state), "it answered: %s", resp->message);
	else if (resp->n_volumes != 1)
		snprintf(cc->state, sizeof(cc->state), "its answer has no copy");
	/* with an error: a copy larger than the record ("can only grow") comes
	 * with its answer all the same (admin_ops.c op_volume_resize) */
	else if (resp->volumes[0]->copy_sessions == 0)
		cc->closed = true;
	else
		snprintf(cc->state, sizeof(cc->state), "%u session(s) open there",
			 resp->volumes[0]->copy_sessions);
	if (resp)
		tessera__admin__response__free_unpacked(resp, NULL);
	if (all_closed(w))
		close_end(w, "", false);
}

/*
 * cc's node's address into cc->addrs (admin_resolve: a blocking lookup for
 * a name).  A name that does not resolve leaves the addresses it had (none
 * at the start: cc->state says why, logged once).  The next lookup no
 * sooner than CLOSE_RESOLVE_MS, and none after a slow one.
 */
static void close_resolve(struct close_copy *cc)
{
	struct close_wait *w = cc->w;
	struct ev_loop *loop = w->c->o.loop;
	char addrs[CLOSE_ADDRS][ADMIN_ADDR_MAX], why[128];
	int64_t t0 = tsr_mono_ms(), took;
	int ret = admin_resolve(cc->address, addrs, CLOSE_ADDRS, why, sizeof(why));

	took = tsr_mono_ms() - t0;
	ev_now_update(loop);
	cc->stale = false;
	cc->resolve_at = took > CLOSE_RESOLVE_SLOW_MS ? 0 : ev_now(loop) + CLOSE_RESOLVE_MS / 1000.0;
	if (ret > 0) {
		memcpy(cc->addrs, addrs, sizeof(addrs));
		cc->n_addrs = (unsigned)ret;
		cc->addr_next = 0;
		return;
	}
	if (cc->n_addrs)
		return; /* looks go on with the addresses it had */
	snprintf(cc->state, sizeof(cc->state), "cannot ask it: its address %s does not "
		 "resolve: %s", cc->address, why);
	if (!cc->resolve_logged)
		tsr_warn("cluster: detach %s: node %s: its address %s does not resolve (%s): "
			 "its copy's close is not seen until it does%s", w->name, cc->node_id,
			 cc->address, why, cc->resolve_at > 0 ? "" : " (the lookup took "
			 "too long to be made again in this wait)");
	cc->resolve_logged = true;
}

/* Look at cc once: this node's store now, another node's by a query. */
static void close_look(struct close_copy *cc, int timeout_ms)
{
	struct close_wait *w = cc->w;
	struct tsr_cluster *c = w->c;
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeResize vr = TESSERA__ADMIN__VOLUME_RESIZE__INIT;
	struct tsr_vol_info info;
	int ret;

	if (cc->address[0] == '\0') {
		ret = tsr_store_vol_info(c->o.store, w->name, &info);
		if (ret == -ENOENT || (ret == 0 && info.sessions == 0))
			cc->closed = true;
		else if (ret)
			snprintf(cc->state, sizeof(cc->state), "its store: %s", strerror(-ret));
		else
			snprintf(cc->state, sizeof(cc->state), "%u session(s) open here",
				 info.sessions);
		return;
	}
	if ((cc->stale || cc->n_addrs == 0) && cc->resolve_at > 0 &&
	    ev_now(c->o.loop) >= cc->resolve_at)
		close_resolve(cc);
	if (cc->n_addrs == 0) /* its name does not resolve (cc->state) */
		return;
	cluster_copy_uuid_req(w->name, w->copy_size, &req, &vr);
	ret = -EHOSTUNREACH;
	/* the next one if one fails at once; all refused (at once here, or
	 * late: close_query_done) says nothing holds the copy */
	for (unsigned i = cc->addr_next; i < cc->n_addrs && ret; i++) {
		cc->addr_cur = i;
		ret = admin_async_call(c->o.loop, cc->addrs[i], c->token, &req, timeout_ms,
				       close_query_done, cc, &cc->call);
	}
	cc->addr_next = 0; /* a new round unless a late refusal says otherwise */
	if (ret == -ECONNREFUSED) /* refused at once (loopback): as close_query_done */
		cc->closed = true;
	else if (ret)
		snprintf(cc->state, sizeof(cc->state), "cannot ask it: %s", strerror(-ret));
	if (ret)
		cc->call = NULL;
	cc->stale = ret && ret != -ECONNREFUSED;
}

/*
 * Whether name is attached again (on any node: attach/<name>, which the
 * detach deleted, is created first by an attach): its copies are then the
 * new coordinator's, whose close nobody waits for.  A metadata store that
 * fails stops these looks (each would block the loop as long again).
 */
static bool attached_again(struct close_wait *w)
{
	uint64_t epoch = 0;
	int ret = cluster_get_attach(w->c, w->name, w->attached_on, sizeof(w->attached_on),
				     &epoch, NULL);

	if (ret == 0 && epoch > w->epoch)
		return true;
	w->attached_on[0] = '\0';
	if (ret == 0) /* the detached coordinator's own key, left by a failed delete */
		ret = -ENOENT;
	if (ret != -ENOENT) {
		tsr_warn("cluster: detach %s: cannot read attach/%s: %s (an attach elsewhere "
			 "meanwhile is not seen: the wait may last its bound)", w->name, w->name,
			 strerror(-ret));
		w->attach_check = 0;
	} else {
		w->attach_check += CLOSE_ATTACH_CHECK_MS / 1000.0;
	}
	return false;
}

static void close_poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct close_wait *w = t->data;
	double left = w->deadline - ev_now(loop);

	(void)revents;
	if (left <= 0) {
		close_end(w, "the wait for its copies' close ended", true);
		return;
	}
	if (w->attach_check > 0 && ev_now(loop) >= w->attach_check && attached_again(w)) {
		close_end(w, "", false);
		return;
	}
	for (unsigned i = 0; i < w->n; i++)
		if (!w->copies[i].closed && w->copies[i].call == NULL)
			close_look(&w->copies[i], (int)(left * 1000) + 1);
	if (all_closed(w))
		close_end(w, "", false);
}

int cluster_close_wait_start(struct tsr_cluster *c, const char *name, uint64_t epoch,
			     const char (*nodes)[64], unsigned n, close_wait_fn cb_fn,
			     void *cb_arg)
{
	Tessera__Cluster__VolumeRecord *rec = NULL;
	struct close_wait *w;
	uint64_t rev;
	int ret;

	if (n == 0 || n > TSR_LAYOUT_MAX_COPIES)
		return -EINVAL;
	ret = rec_volume_get(c->meta, name, &rec, &rev);
	if (ret)
		return ret;
	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		tessera__cluster__volume_record__free_unpacked(rec, NULL);
		return -ENOMEM;
	}
	w->c = c;
	snprintf(w->name, sizeof(w->name), "%s", name);
	w->epoch = epoch;
	w->copy_size = rec_copy_size(rec);
	tessera__cluster__volume_record__free_unpacked(rec, NULL);
	for (unsigned i = 0; i < n; i++) {
		struct close_copy *cc = &w->copies[w->n];
		Tessera__Cluster__NodeRecord *node = NULL;

		cc->w = w;
		snprintf(cc->node_id, sizeof(cc->node_id), "%s", nodes[i]);
		snprintf(cc->state, sizeof(cc->state), "not looked at yet");
		if (strcmp(nodes[i], c->node_id) != 0) {
			if (rec_node_get(c->meta, nodes[i], &node) != 0)
				continue; /* no longer in the cluster: nothing to ask */
			snprintf(cc->address, sizeof(cc->address), "%s", node->address);
			tessera__cluster__node_record__free_unpacked(node, NULL);
			close_resolve(cc);
		}
		w->n++;
	}
	w->bound_ms = cluster_peer_call_ms(c);
	w->cb_fn = cb_fn;
	w->cb_arg = cb_arg;
	ev_now_update(c->o.loop); /* the loop time of this pass may be old */
	w->start = ev_now(c->o.loop);
	w->deadline = w->start + w->bound_ms / 1000.0;
	w->attach_check = w->start + CLOSE_ATTACH_CHECK_MS / 1000.0;
	/* the first look after one poll: the coordinator's layout goes on its
	 * home worker, the peer sessions' ends travel meanwhile */
	ev_timer_init(&w->poll, close_poll_cb, CLOSE_POLL_MS / 1000.0, CLOSE_POLL_MS / 1000.0);
	w->poll.data = w;
	ev_timer_start(c->o.loop, &w->poll);
	w->next = c->close_waits;
	c->close_waits = w;
	tsr_info("cluster: detach %s: waiting up to %d ms for its %u copies to be closed on "
		 "their nodes (the reply comes then)", w->name, w->bound_ms, w->n);
	return 0;
}

void cluster_close_wait_stop(struct tsr_cluster *c)
{
	while (c->close_waits)
		close_end(c->close_waits, "tesserad is stopping", false);
}
