/*
 * One RPC in progress: its arena (every piece of a reply is allocated here
 * and freed at once after packing, so handlers never free by hand), its
 * status, and the per-key locks that serialize calls on one volume name.
 *
 * Out of memory in csi_alloc aborts the process (Redis' zmalloc policy): the
 * CO retries against a restarted plugin, which is better than a handler
 * half-way through a multi-step operation with no way to report it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tessera/common.h"

struct csi_alloc_chunk {
	struct csi_alloc_chunk *next; /* older allocations of the same call */
	max_align_t data[];           /* the caller's bytes */
};

struct csi_key_lock {
	struct csi_key_lock *next; /* other held keys */
	char key[CSI_ID_MAX + 16];
};

void *csi_alloc(struct csi_call *call, size_t len)
{
	struct csi_alloc_chunk *c = calloc(1, sizeof(*c) + len);

	if (c == NULL) {
		tsr_error("%s: out of memory (%zu bytes); exiting", call->method, len);
		abort();
	}
	c->next = call->arena;
	call->arena = c;
	return c->data;
}

char *csi_strdup(struct csi_call *call, const char *s)
{
	size_t n = strlen(s ? s : "");
	char *d = csi_alloc(call, n + 1);

	memcpy(d, s ? s : "", n);
	return d;
}

char *csi_printf(struct csi_call *call, const char *fmt, ...)
{
	va_list ap;
	int n;
	char *d;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	d = csi_alloc(call, (size_t)(n < 0 ? 0 : n) + 1);
	va_start(ap, fmt);
	vsnprintf(d, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return d;
}

int csi_fail(struct csi_call *call, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(call->message, sizeof(call->message), fmt, ap);
	va_end(ap);
	call->code = code;
	return code;
}

void csi_call_free_arena(struct csi_call *call)
{
	while (call->arena) {
		struct csi_alloc_chunk *c = call->arena;

		call->arena = c->next;
		free(c);
	}
}

/* protobuf-c lays every map<string,string> entry out like this. */
struct csi_map_entry {
	ProtobufCMessage base;
	char *key;
	char *value;
};

const char *csi_map_get(size_t n, void *const *entries, const char *key)
{
	size_t i;

	for (i = 0; i < n; i++) {
		const struct csi_map_entry *e = entries[i];

		if (e->key && strcmp(e->key, key) == 0)
			return e->value ? e->value : "";
	}
	return NULL;
}

Csi__V1__Topology *csi_topology_new(struct csi_call *call, const char *zone, const char *site)
{
	Csi__V1__Topology *t = csi_alloc(call, sizeof(*t));
	Csi__V1__Topology__SegmentsEntry *e = csi_alloc(call, 2 * sizeof(*e));

	csi__v1__topology__init(t);
	csi__v1__topology__segments_entry__init(&e[0]);
	csi__v1__topology__segments_entry__init(&e[1]);
	e[0].key = (char *)CSI_TOPO_ZONE;
	e[0].value = csi_strdup(call, zone && zone[0] ? zone : "default");
	e[1].key = (char *)CSI_TOPO_SITE;
	e[1].value = csi_strdup(call, site && site[0] ? site : "default");
	t->segments = csi_alloc(call, 2 * sizeof(*t->segments));
	t->segments[0] = &e[0];
	t->segments[1] = &e[1];
	t->n_segments = 2;
	return t;
}

static struct csi_key_lock *key_find(struct csi_plugin *p, const char *key)
{
	struct csi_key_lock *k;

	for (k = p->keys; k; k = k->next)
		if (strcmp(k->key, key) == 0)
			return k;
	return NULL;
}

void csi_key_lock(struct csi_plugin *p, const char *key)
{
	pthread_mutex_t *mu = p->keys_lock;
	pthread_cond_t *cv = p->keys_cond;
	struct csi_key_lock *k;

	pthread_mutex_lock(mu);
	while (key_find(p, key) != NULL)
		pthread_cond_wait(cv, mu); /* the holder broadcasts on unlock */
	k = calloc(1, sizeof(*k));
	if (k == NULL) {
		tsr_error("key lock %s: out of memory; exiting", key);
		abort();
	}
	snprintf(k->key, sizeof(k->key), "%s", key);
	k->next = p->keys;
	p->keys = k;
	pthread_mutex_unlock(mu);
}

void csi_key_unlock(struct csi_plugin *p, const char *key)
{
	pthread_mutex_t *mu = p->keys_lock;
	pthread_cond_t *cv = p->keys_cond;
	struct csi_key_lock **pp, *k;

	pthread_mutex_lock(mu);
	for (pp = &p->keys; (k = *pp) != NULL; pp = &k->next) {
		if (strcmp(k->key, key) == 0) {
			*pp = k->next;
			free(k);
			break;
		}
	}
	pthread_cond_broadcast(cv);
	pthread_mutex_unlock(mu);
}
