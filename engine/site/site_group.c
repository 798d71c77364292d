/*
 * The target's release rule for one consistency group (server_internal.h,
 * "site_group.c"; ARCHITECTURE.md "Consistency groups").  Pure bookkeeping,
 * no I/O and no locks: the caller (site_server.c) owns the struct and calls
 * it from one thread at a time.
 *
 * Each member's stream carries MARKER frames; marker n went into every
 * member's stream at one moment of the source group's worker, so "each
 * member applied exactly the frames before its marker n" is a prefix of the
 * group's merged history.  A member *held* by the rule hands its frames to
 * the volume only through its release point: the seq of the newest marker m
 * it received with m <= R, where R is the smallest "newest marker received"
 * over the held members.  So every held member stops at the same marker
 * whenever a link or a session is cut.  A member inside a region sync (or a
 * replay after an unclean target restart) is not a prefix anyway: it runs
 * *free* (every frame released as received) and does not count in R until
 * its SYNC_END; the group is consistent again at the first marker every
 * member has reached after that.  A member that was never seen, or whose
 * session is down, keeps its last released marker as its newest one: it
 * holds the group back (and the status names it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "site/server_internal.h"

void site_grp_init(struct site_grp *g, const char *name, unsigned members)
{
	memset(g, 0, sizeof(*g));
	strncpy(g->name, name, sizeof(g->name) - 1);
	g->members = members;
}

void site_grp_fini(struct site_grp *g)
{
	for (unsigned i = 0; i < g->n; i++)
		free(g->m[i].pend);
	memset(g, 0, sizeof(*g));
}

int site_grp_join(struct site_grp *g, const char *volume, uint64_t marker, uint64_t applied,
		  bool free_run)
{
	struct site_grp_member *m = NULL;
	unsigned i;

	for (i = 0; i < g->n; i++)
		if (strcmp(g->m[i].volume, volume) == 0) {
			m = &g->m[i];
			break;
		}
	if (m == NULL) {
		if (g->n >= g->members || g->n >= TSR_SITE_GROUP_MAX)
			return -ENOSPC;
		m = &g->m[g->n];
		memset(m, 0, sizeof(*m));
		strncpy(m->volume, volume, sizeof(m->volume) - 1);
		i = g->n++;
	}
	if (m->connected)
		return -EBUSY;
	m->connected = true;
	m->free_run = free_run;
	m->released_marker = marker;
	m->high = marker;
	m->release_seq = applied;
	m->received_seq = applied;
	m->npend = 0;
	return (int)i;
}

void site_grp_leave(struct site_grp *g, unsigned i)
{
	struct site_grp_member *m = &g->m[i];

	/* what was held is dropped (the source sends it again): the member
	 * stays where it was released, and holds the group there */
	m->connected = false;
	m->free_run = false;
	m->npend = 0;
	m->high = m->released_marker;
	if (m->release_seq > m->received_seq)
		m->release_seq = m->received_seq;
}

void site_grp_settle(struct site_grp *g, unsigned i, uint64_t marker, uint64_t seq)
{
	struct site_grp_member *m = &g->m[i];

	/* a member without a session is where its state file says */
	m->released_marker = m->high = marker;
	m->release_seq = m->received_seq = seq;
	m->npend = 0;
}

void site_grp_received(struct site_grp *g, unsigned i, uint64_t seq)
{
	struct site_grp_member *m = &g->m[i];

	if (seq > m->received_seq)
		m->received_seq = seq;
	if (m->free_run)
		m->release_seq = m->received_seq;
}

void site_grp_set_free(struct site_grp *g, unsigned i, bool on)
{
	struct site_grp_member *m = &g->m[i];

	if (m->free_run == on)
		return;
	m->free_run = on;
	/* leaving a free run: everything received so far went through already */
	m->release_seq = m->received_seq;
	m->npend = 0;
	if (!on)
		m->high = m->released_marker;
}

int site_grp_marker(struct site_grp *g, unsigned i, uint64_t n, uint64_t seq)
{
	struct site_grp_member *m = &g->m[i];

	if (n <= m->high || seq <= m->release_seq)
		return -EILSEQ;
	if (seq > m->received_seq)
		m->received_seq = seq;
	m->high = n;
	if (m->free_run) { /* released as it came: it is where the member is */
		m->released_marker = n;
		m->release_seq = m->received_seq;
		return 0;
	}
	if (m->npend == m->cap) {
		unsigned cap = m->cap ? 2 * m->cap : 8;
		struct site_grp_mark *p = realloc(m->pend, cap * sizeof(*p));

		if (p == NULL)
			return -ENOMEM;
		m->pend = p;
		m->cap = cap;
	}
	m->pend[m->npend++] = (struct site_grp_mark){.n = n, .seq = seq};
	return 0;
}

/* R: the newest marker every held member has received (0: none yet, or a
 * member is missing). */
static uint64_t group_reach(const struct site_grp *g)
{
	uint64_t r = UINT64_MAX;
	bool any = false;

	if (g->n < g->members)
		return 0;
	for (unsigned i = 0; i < g->n; i++) {
		if (g->m[i].free_run)
			continue;
		any = true;
		if (g->m[i].high < r)
			r = g->m[i].high;
	}
	return any ? r : 0;
}

bool site_grp_release(struct site_grp *g)
{
	uint64_t r = group_reach(g);
	bool moved = false;

	g->reach = r;
	for (unsigned i = 0; i < g->n; i++) {
		struct site_grp_member *m = &g->m[i];
		unsigned k = 0, drop = 0;

		if (m->free_run)
			continue;
		for (k = 0; k < m->npend && m->pend[k].n <= r; k++)
			drop = k + 1;
		if (drop == 0)
			continue;
		m->released_marker = m->pend[drop - 1].n;
		m->release_seq = m->pend[drop - 1].seq;
		memmove(m->pend, m->pend + drop, (m->npend - drop) * sizeof(*m->pend));
		m->npend -= drop;
		moved = true;
	}
	return moved;
}

uint64_t site_grp_release_seq(const struct site_grp *g, unsigned i)
{
	return g->m[i].free_run ? UINT64_MAX : g->m[i].release_seq;
}

const char *site_grp_blocker(const struct site_grp *g, char *buf, size_t len)
{
	const struct site_grp_member *low = NULL;

	if (g->n < g->members) {
		snprintf(buf, len, "%u of %u members have not connected yet", g->members - g->n,
			 g->members);
		return buf;
	}
	for (unsigned i = 0; i < g->n; i++) {
		const struct site_grp_member *m = &g->m[i];

		if (m->free_run)
			continue;
		/* the lowest newest marker; on a tie a member without a session */
		if (low == NULL || m->high < low->high ||
		    (m->high == low->high && !m->connected && low->connected))
			low = m;
	}
	if (low == NULL) {
		snprintf(buf, len, "every member is in a resync");
		return buf;
	}
	snprintf(buf, len, "%s (%s, newest marker %llu)", low->volume,
		 low->connected ? "connected" : "no session", (unsigned long long)low->high);
	return buf;
}
