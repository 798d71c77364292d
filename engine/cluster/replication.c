/*
 * Geo-replication in the cluster (include/tessera/site.h, DESIGN.md
 * "Geo-replication"): the records, who ships what, and the admin commands.
 *
 * Records (proto/cluster.proto):
 *   site/<name>   SiteRecord: a remote site's listener and the TLS files this
 *                 cluster's nodes use to reach it (site add / remove / list);
 *   repl/<vol>    ReplicationRecord: vol ships to a site (replication enable /
 *                 disable), or, demoted = true, must take no host write;
 *   cluster/id    this cluster's id in HELLO (random, made by the first node);
 *   target/<vol>  vol was created here as a replication target: the stream
 *                 (16 hex digits), and every attach fences it; "promoted"
 *                 once promoted (no fence; status still finds it).
 *   tcreate/<vol> a create of target vol runs ("NODE pid PID"), on the
 *                 creating node's lease: gone when that node is (tc_lock);
 *                 or a claim's release of vol runs ("NODE pid PID claim
 *                 release", claim_lock), on the releasing node's lease.
 *
 * Source side: the node coordinating a volume with repl/<vol> runs its
 * tsr_site_source (started by attach once the layout is registered, stopped
 * before detach; the in-memory log does not survive, so every start is an
 * initial copy).  TLS client contexts are cached per site.  A source that
 * the target refuses as stale calls on_demoted on its worker: the call is
 * queued under c->lock and an ev_async brings it to the main thread, which
 * records demoted = true in repl/<vol> (a CAS loop); every later attach of
 * the volume fences it (-EROFS) instead of shipping.
 *
 * Target side: tesserad's site server (--site-listen) calls open_volume
 * (site_open_volume below) on the main thread: the target volume is created
 * in this cluster with the requested layout (target_create: its calls to
 * other nodes asynchronous, "being created: retry" answered meanwhile),
 * attached on this node and fenced against host writes.  Promote and the target half of status ask
 * the server.  Consistency groups: every member of a group is given one
 * home worker when it is attached (repl_home_hint: the group name hashed
 * over the workers), at the source (repl/<vol>.group) and at the target
 * (the group VOLUME_OPEN names, held in target_hint while site_open_volume
 * attaches the volume); the site server holds the members to one marker and
 * promote --group promotes them at it.
 *
 * Failback (repl_resync, failback_done, site_may_replace): at the demoted
 * original site `replication resync VOL --from SITE` sets resync_from in
 * repl/<vol>; the promoted copy's stream back (enabled at SITE) is then
 * accepted into the fenced volume and ships only regions whose digests
 * differ; `promote` there clears demoted and resync_from, picks a new stream
 * and starts the source.  The copy's stream back is refused stale, which
 * demotes it; a demoted copy whose target/<vol> says "promoted" accepts the
 * new primary's stream on its own (resync_from set at demotion) and drops
 * its repl/<vol>.
 *
 * Resize: an attached source's target grows first (repl_grow_target_async:
 * the source's worker answers grow_answered, queued like a demotion, and
 * the resize goes on from its callback on the main loop); a target grows
 * when a VOLUME_OPEN announces more (target_grow: the cluster's resize runs
 * on the main loop, "growing: retry" answered meanwhile).
 *
 * Everything here runs on the main thread, except source_demoted and
 * grow_answered (a source's worker).  The target's attach opens its layout
 * in a thread (cluster_attach_target: "being attached: retry" meanwhile).
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin_internal.h"
#include "cluster/internal.h"
#include "tessera/ec.h"
#include "tessera/site.h"
#include "tessera/test_hook.h"

#define REPL_TEXT_MAX 4096 /* a path or address in a record */
#define REPL_GROW_TIMEOUT_MS 30000 /* tsr_site_source_grow: the DR's own resize included */

/* REPL_GROW_TIMEOUT_MS; tests only: $TSR_TEST_REPL_GROW_TIMEOUT_MS
 * (1000..REPL_GROW_TIMEOUT_MS; test-site-resize-nonblocking waits it out
 * with the DR frozen). */
static int repl_grow_timeout_ms(void)
{
	return tsr_test_env_ms("TSR_TEST_REPL_GROW_TIMEOUT_MS", 1000, REPL_GROW_TIMEOUT_MS,
			       REPL_GROW_TIMEOUT_MS);
}

/* One running source: an attached volume shipping to its site. */
struct repl_source {
	struct tsr_cluster *c;         /* owner (read by source_demoted on the worker) */
	/* copied from repl/<volume> at start; immutable afterwards (the
	 * worker reads volume and stream in source_demoted) */
	char volume[64];               /* source volume */
	char site[64];                 /* SiteRecord name */
	char target_volume[64];
	char target_layout[32];
	char group[64];                /* "" = none */
	char group_broken[256];        /* "" or why it ships outside its group (status) */
	uint64_t stream;
	uint64_t epoch;
	struct tsr_site_source *src;   /* owned; stopped before detach */
	struct repl_source *next;      /* c->sources */
};

/* A cached client TLS context for one site. */
struct repl_tls {
	char site[64];
	char *ca, *cert, *key;         /* the files it was built from (malloc'd) */
	struct tsr_site_tls_ctx *ctx;  /* owned; outlives the sources using it */
	struct repl_tls *next;         /* c->site_tls */
};

/*
 * A grow of a source's target (repl_grow_target_async): the source's worker
 * fills status and why and queues it for the main thread (c->grows, under
 * c->lock, then repl_async), which calls cb_fn and frees it.
 */
struct repl_grow {
	struct tsr_cluster *c;
	repl_grow_fn cb_fn;            /* main thread; NULL: abandoned (repl_grow_abandon) */
	void *cb_arg;
	char volume[64], site[64];     /* for the answer's sentence */
	int status;                    /* the worker's, before it queues g */
	char why[TSR_SITE_ERRMSG_MAX + 1];
	struct repl_grow *next;        /* c->grows, under c->lock */
};

/* A growing DR target (target_grow: the cluster's resize runs meanwhile). */
struct target_grow {
	struct tsr_cluster *c;
	char volume[64];
	char from[160];                /* the source's site/cluster, for the log */
	uint64_t have, size;           /* from, to */
	bool running;                  /* the resize has not answered yet */
	int status;                    /* its answer (running == false: a refusal kept for
					* the next VOLUME_OPEN, ended_ms ago) */
	int64_t ended_ms;
	char why[TSR_SITE_ERRMSG_MAX + 1];
	struct target_grow *next;      /* c->target_grows (main thread) */
};

/* A demotion reported by a source on its worker, for the main thread. */
struct repl_demote {
	char volume[64];
	uint64_t stream;
	char why[256];
	struct repl_demote *next;      /* c->demotes, under c->lock */
};

/* ---- records ------------------------------------------------------------ */

static bool rtext_ok(const char *s, bool allow_empty)
{
	size_t n;

	if (s == NULL)
		return false;
	for (n = 0; s[n]; n++)
		if (n >= REPL_TEXT_MAX || (unsigned char)s[n] < 0x20 || s[n] == 0x7f)
			return false;
	return n > 0 || allow_empty;
}

Tessera__Cluster__SiteRecord *repl_site_decode(const struct tsr_meta_kv *kv)
{
	Tessera__Cluster__SiteRecord *r;

	r = tessera__cluster__site_record__unpack(NULL, kv->value_len, kv->value);
	if (r && tsr_valid_name(r->name) && rtext_ok(r->address, false) && rtext_ok(r->ca, false) &&
	    rtext_ok(r->cert, false) && rtext_ok(r->key, false) && rtext_ok(r->peer_name, false))
		return r;
	tsr_warn("cluster: malformed record %s: ignored", kv->key);
	if (r)
		tessera__cluster__site_record__free_unpacked(r, NULL);
	return NULL;
}

Tessera__Cluster__ReplicationRecord *repl_record_decode(const struct tsr_meta_kv *kv)
{
	Tessera__Cluster__ReplicationRecord *r;
	struct tsr_site_layout lay;

	r = tessera__cluster__replication_record__unpack(NULL, kv->value_len, kv->value);
	if (r && tsr_valid_name(r->volume) && tsr_valid_name(r->site) &&
	    tsr_valid_name(r->target_volume) && strlen(r->target_layout) <= TSR_SITE_LAYOUT_MAX &&
	    tsr_site_layout_parse(r->target_layout, &lay) == 0 &&
	    (r->group[0] == '\0' || tsr_valid_name(r->group)) && r->stream != 0 &&
	    rtext_ok(r->demoted_why, true) &&
	    (r->resync_from[0] == '\0' || tsr_valid_name(r->resync_from)) &&
	    rtext_ok(r->compress, true)) /* an algorithm this build lacks: refused at start */
		return r;
	tsr_warn("cluster: malformed record %s: ignored", kv->key);
	if (r)
		tessera__cluster__replication_record__free_unpacked(r, NULL);
	return NULL;
}

/* -ENOENT absent, -EUCLEAN malformed. */
static int site_get(struct tsr_cluster *c, const char *name, Tessera__Cluster__SiteRecord **out)
{
	struct tsr_meta_kv kv = { 0 };
	char key[80];
	int ret;

	snprintf(key, sizeof(key), "site/%s", name);
	ret = tsr_meta_get(c->meta, key, &kv);
	if (ret)
		return ret;
	*out = repl_site_decode(&kv);
	tsr_meta_kv_clear(&kv);
	return *out ? 0 : -EUCLEAN;
}

static int repl_get(struct tsr_cluster *c, const char *vol,
		    Tessera__Cluster__ReplicationRecord **out, uint64_t *rev)
{
	struct tsr_meta_kv kv = { 0 };
	char key[80];
	int ret;

	snprintf(key, sizeof(key), "repl/%s", vol);
	ret = tsr_meta_get(c->meta, key, &kv);
	if (ret)
		return ret;
	if (rev)
		*rev = kv.mod_rev;
	*out = repl_record_decode(&kv);
	tsr_meta_kv_clear(&kv);
	return *out ? 0 : -EUCLEAN;
}

/* Every valid repl/ record; *n of them in *out (free with repl_free_all). */
static int repl_list(struct tsr_cluster *c, Tessera__Cluster__ReplicationRecord ***out,
		     size_t *n)
{
	struct tsr_meta_kv *kvs = NULL;
	size_t nkv = 0;
	int ret;

	*out = NULL;
	*n = 0;
	ret = tsr_meta_range(c->meta, "repl/", &kvs, &nkv, NULL);
	if (ret)
		return ret;
	*out = calloc(nkv + 1, sizeof(**out));
	if (*out == NULL) {
		tsr_meta_kv_free_array(kvs, nkv);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nkv; i++)
		if (((*out)[*n] = repl_record_decode(&kvs[i])) != NULL)
			(*n)++;
	tsr_meta_kv_free_array(kvs, nkv);
	return 0;
}

static void repl_free_all(Tessera__Cluster__ReplicationRecord **r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		tessera__cluster__replication_record__free_unpacked(r[i], NULL);
	free(r);
}

/* ---- replies -------------------------------------------------------------- */

/* Append m to resp (freed on ENOMEM).  0 or -ENOMEM. */
static int add_repl(Tessera__Admin__Response *resp, Tessera__Admin__Replication *m)
{
	Tessera__Admin__Replication **grown;

	grown = realloc(resp->replications, (resp->n_replications + 1) * sizeof(*grown));
	if (grown == NULL) {
		admin_replication_free_built(m);
		return -ENOMEM;
	}
	grown[resp->n_replications++] = m;
	resp->replications = grown;
	return 0;
}

static int add_site(Tessera__Admin__Response *resp, Tessera__Admin__Site *m)
{
	Tessera__Admin__Site **grown;

	grown = realloc(resp->sites, (resp->n_sites + 1) * sizeof(*grown));
	if (grown == NULL) {
		admin_site_free_built(m);
		return -ENOMEM;
	}
	grown[resp->n_sites++] = m;
	resp->sites = grown;
	return 0;
}

/* A Replication with every string set (""), or NULL. */
static Tessera__Admin__Replication *repl_msg(const char *volume, const char *role,
					     const char *state, const char *node)
{
	Tessera__Admin__Replication *m = malloc(sizeof(*m));

	if (m == NULL)
		return NULL;
	tessera__admin__replication__init(m);
	m->volume = admin_strdup(volume);
	m->role = admin_strdup(role);
	m->state = admin_strdup(state);
	m->node = admin_strdup(node);
	m->site = admin_strdup("");
	m->target_volume = admin_strdup("");
	m->target_layout = admin_strdup("");
	m->group = admin_strdup("");
	m->last_error = admin_strdup("");
	if (!m->volume || !m->role || !m->state || !m->node || !m->site || !m->target_volume ||
	    !m->target_layout || !m->group || !m->last_error) {
		admin_replication_free_built(m);
		return NULL;
	}
	return m;
}

/* Replace a string field of a built message (kept on ENOMEM). */
static void set_text(char **field, const char *v)
{
	char *d = admin_strdup(v);

	if (d == NULL)
		return;
	if (*field != protobuf_c_empty_string)
		free(*field);
	*field = d;
}

/* A source's message from its record and, when running here, its counters. */
static Tessera__Admin__Replication *source_msg(struct tsr_cluster *c,
					       const Tessera__Cluster__ReplicationRecord *r,
					       struct repl_source *s, const char *state)
{
	Tessera__Admin__Replication *m;
	struct tsr_site_source_stats st;

	if (s) {
		tsr_site_source_stats(s->src, &st);
		state = tsr_site_state_name(st.state);
	}
	m = repl_msg(r->volume, "source", state, s ? c->node_id : "");
	if (m == NULL)
		return NULL;
	set_text(&m->site, r->site);
	set_text(&m->target_volume, r->target_volume);
	set_text(&m->target_layout, r->target_layout);
	set_text(&m->group, r->group);
	m->stream = r->stream;
	m->epoch = r->epoch;
	m->demoted = r->demoted;
	if (r->demoted)
		set_text(&m->last_error, r->demoted_why);
	set_text(&m->resync_from, r->resync_from);
	set_text(&m->compression, r->compress[0] ? r->compress : "none");
	if (s == NULL)
		return m;
	m->acked_seq = st.acked_seq;
	m->next_seq = st.next_seq;
	m->lag_sec = st.lag_sec;
	m->lag_bytes = st.lag_bytes;
	m->dirty_bytes = st.dirty_bytes;
	m->sync_total_bytes = st.sync_total_bytes;
	m->sync_done_bytes = st.sync_done_bytes;
	m->bytes_shipped = st.bytes_shipped;
	m->region_bytes_shipped = st.region_bytes_shipped;
	m->region_bytes_same = st.region_bytes_same;
	m->regions_compared = st.last_sync_compared;
	m->compress_in_bytes = st.compress_in_bytes;
	m->compress_out_bytes = st.compress_out_bytes;
	m->frames_compressed = st.frames_compressed;
	m->group_marker = st.last_marker;
	m->overflows = st.overflows;
	m->reconnects = st.reconnects;
	m->rate_bps = st.rate_bps;
	m->eta_sec = st.eta_sec;
	m->log_slab_bytes = st.slab_bytes;
	m->log_pool_bytes = st.pool_bytes;
	if (st.state == TSR_SITE_SPLIT)
		m->demoted = true;
	if (!r->demoted)
		set_text(&m->last_error, st.last_error[0] || !s->group_broken[0] ? st.last_error :
			 s->group_broken);
	return m;
}

static Tessera__Admin__Site *site_msg(const Tessera__Cluster__SiteRecord *r, uint32_t volumes)
{
	Tessera__Admin__Site *m = malloc(sizeof(*m));

	if (m == NULL)
		return NULL;
	tessera__admin__site__init(m);
	m->name = admin_strdup(r->name);
	m->address = admin_strdup(r->address);
	m->ca = admin_strdup(r->ca);
	m->cert = admin_strdup(r->cert);
	m->key = admin_strdup(r->key);
	m->peer_name = admin_strdup(r->peer_name);
	m->volumes = volumes;
	if (!m->name || !m->address || !m->ca || !m->cert || !m->key || !m->peer_name) {
		admin_site_free_built(m);
		return NULL;
	}
	return m;
}

/* Send req to node_id and move its answer (message, replications) into resp. */
static void repl_forward(struct tsr_cluster *c, const char *node_id,
			 const Tessera__Admin__Request *req, Tessera__Admin__Response *resp)
{
	Tessera__Cluster__NodeRecord *n = NULL;
	Tessera__Admin__Response *r = NULL;
	int ret;

	ret = rec_node_get(c->meta, node_id, &n);
	if (ret) {
		admin_fail(resp, ret, "node %s cannot be looked up: %s (tessera node list)", node_id,
			   strerror(-ret));
		return;
	}
	ret = cluster_call_node(c, n->address, (Tessera__Admin__Request *)req,
				CLUSTER_FORWARD_TIMEOUT_MS, &r);
	if (ret) {
		admin_fail(resp, ret, "cannot reach node %s at %s: %s (is it alive? tessera node "
			   "list)", node_id, n->address, strerror(-ret));
		tessera__cluster__node_record__free_unpacked(n, NULL);
		return;
	}
	tessera__cluster__node_record__free_unpacked(n, NULL);
	resp->error = r->error;
	if (r->message && r->message[0])
		admin_fail(resp, r->error, "%s", r->message);
	/* protobuf-c's default allocator is malloc, as ours: move the arrays over */
	for (size_t i = 0; i < r->n_replications; i++) {
		if (add_repl(resp, r->replications[i]) == 0)
			r->replications[i] = NULL;
	}
	free(r->replications);
	r->replications = NULL;
	r->n_replications = 0;
	tessera__admin__response__free_unpacked(r, NULL);
}

/* ---- TLS contexts per site ----------------------------------------------- */

static bool same(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

static bool tls_in_use(struct tsr_cluster *c, const char *site)
{
	for (struct repl_source *s = c->sources; s; s = s->next)
		if (strcmp(s->site, site) == 0)
			return true;
	return false;
}

static void tls_free(struct repl_tls *t)
{
	if (t == NULL)
		return;
	tsr_site_tls_ctx_destroy(t->ctx);
	free(t->ca);
	free(t->cert);
	free(t->key);
	free(t);
}

/* Forget site's context (no source may use it). */
static void tls_drop(struct tsr_cluster *c, const char *site)
{
	for (struct repl_tls **pp = &c->site_tls; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->site, site) == 0) {
			struct repl_tls *t = *pp;

			*pp = t->next;
			tls_free(t);
			return;
		}
	}
}

/* Build a client context from the files (errors as tsr_site_tls_ctx_create). */
static int tls_build(const char *site, const char *ca, const char *cert, const char *key,
		     struct repl_tls **out)
{
	struct tsr_site_tls_opts o = { .ca_file = ca, .cert_file = cert, .key_file = key };
	struct repl_tls *t = calloc(1, sizeof(*t));
	int ret;

	if (t == NULL)
		return -ENOMEM;
	snprintf(t->site, sizeof(t->site), "%s", site);
	t->ca = strdup(ca);
	t->cert = strdup(cert);
	t->key = strdup(key);
	if (!t->ca || !t->cert || !t->key) {
		tls_free(t);
		return -ENOMEM;
	}
	ret = tsr_site_tls_ctx_create(&o, &t->ctx);
	if (ret) {
		tls_free(t);
		return ret;
	}
	*out = t;
	return 0;
}

/* The cached context of site r, (re)built when its files changed. */
static int tls_for_site(struct tsr_cluster *c, const Tessera__Cluster__SiteRecord *r,
			struct tsr_site_tls_ctx **out)
{
	struct repl_tls *t;
	int ret;

	for (t = c->site_tls; t; t = t->next)
		if (strcmp(t->site, r->name) == 0)
			break;
	if (t && (same(t->ca, r->ca) && same(t->cert, r->cert) && same(t->key, r->key))) {
		*out = t->ctx;
		return 0;
	}
	if (t && tls_in_use(c, r->name)) { /* cannot happen: site remove waits for no user */
		*out = t->ctx;
		return 0;
	}
	if (t)
		tls_drop(c, r->name);
	ret = tls_build(r->name, r->ca, r->cert, r->key, &t);
	if (ret)
		return ret;
	t->next = c->site_tls;
	c->site_tls = t;
	*out = t->ctx;
	return 0;
}

/* ---- sources --------------------------------------------------------------- */

static struct repl_source *source_find(struct tsr_cluster *c, const char *vol)
{
	for (struct repl_source *s = c->sources; s; s = s->next)
		if (strcmp(s->volume, vol) == 0)
			return s;
	return NULL;
}

/* On the source's worker: hand the demotion to the main thread. */
static void source_demoted(void *arg, const char *why)
{
	struct repl_source *s = arg;
	struct tsr_cluster *c = s->c;
	struct repl_demote *d = calloc(1, sizeof(*d));

	if (d == NULL) {
		tsr_error("cluster: volume %s demoted (%s) but out of memory to record it: the "
			  "volume stays fenced until tesserad restarts", s->volume, why);
		return;
	}
	snprintf(d->volume, sizeof(d->volume), "%s", s->volume);
	snprintf(d->why, sizeof(d->why), "%s", why ? why : "the target site was promoted");
	d->stream = s->stream;
	pthread_mutex_lock(&c->lock);
	d->next = c->demotes;
	c->demotes = d;
	pthread_mutex_unlock(&c->lock);
	ev_async_send(c->o.loop, &c->repl_async);
}

static int target_claim_get(struct tsr_cluster *c, const char *vol, uint64_t *stream,
			    uint64_t *rev, bool *promoted);

/* target/<vol> says "promoted": vol was a DR copy promoted here (false on
 * a failed read). */
static bool target_promoted(struct tsr_cluster *c, const char *vol)
{
	uint64_t stream, rev;
	bool yes;

	return target_claim_get(c, vol, &stream, &rev, &yes) == 0 && yes;
}

/* The site server's state of vol on this node (tsr_site_server_list's
 * entry): true when it has one (and memory to list), *out filled. */
static bool server_state_of(struct tsr_cluster *c, const char *vol,
			    struct tsr_site_target_info *out)
{
	struct tsr_site_target_info *infos;
	size_t n, got;
	bool found = false;

	if (c->site_server == NULL)
		return false;
	n = tsr_site_server_list(c->site_server, NULL, 0);
	infos = n ? calloc(n, sizeof(*infos)) : NULL;
	got = infos ? tsr_site_server_list(c->site_server, infos, n) : 0;
	for (size_t i = 0; i < got && i < n && !found; i++)
		if (strcmp(infos[i].volume, vol) == 0) {
			*out = infos[i];
			found = true;
		}
	free(infos);
	return found;
}

bool repl_target_promoted(struct tsr_cluster *c, const char *vol)
{
	struct tsr_site_target_info info;

	if (target_promoted(c, vol))
		return true;
	return server_state_of(c, vol, &info) && info.promoted;
}

/* r is demoted and takes the stream of site (failback). */
static bool failback_from(const Tessera__Cluster__ReplicationRecord *r, const char *site)
{
	return r->demoted && r->resync_from[0] && strcmp(r->resync_from, site) == 0;
}

static ProtobufCMessage *repl_decode_msg(const struct tsr_meta_kv *kv)
{
	Tessera__Cluster__ReplicationRecord *r = repl_record_decode(kv);

	return r ? &r->base : NULL;
}

/* record_demoted's mutator (rec_update): demoted, unless the record is
 * another stream's now (disabled and enabled again since: left alone). */
struct demote_update {
	struct tsr_cluster *c;
	const struct repl_demote *d;
};

static int demote_mutate(ProtobufCMessage *msg, void *arg)
{
	Tessera__Cluster__ReplicationRecord *r = (Tessera__Cluster__ReplicationRecord *)msg;
	const struct demote_update *u = arg;

	if (r->stream != u->d->stream)
		return 1;
	r->demoted = true;
	/* a promoted copy (target/<vol> "promoted") that the original site
	 * demoted back: the original is the primary again and its stream may
	 * come in (failback's second half) */
	if (target_promoted(u->c, u->d->volume) && r->resync_from[0] == '\0') {
		if (r->resync_from != protobuf_c_empty_string)
			free(r->resync_from);
		r->resync_from = strdup(r->site);
		if (r->resync_from == NULL)
			r->resync_from = (char *)protobuf_c_empty_string;
	}
	if (r->demoted_why != protobuf_c_empty_string)
		free(r->demoted_why);
	r->demoted_why = strdup(u->d->why);
	if (r->demoted_why == NULL)
		r->demoted_why = (char *)protobuf_c_empty_string;
	return 0;
}

/* repl/<vol>.demoted = true (when the record is still this stream's). */
static void record_demoted(struct tsr_cluster *c, const struct repl_demote *d)
{
	struct demote_update u = { .c = c, .d = d };
	char key[80];
	int ret;

	snprintf(key, sizeof(key), "repl/%s", d->volume);
	ret = rec_update(c->meta, key, repl_decode_msg, demote_mutate, &u);
	if (ret)
		tsr_error("cluster: volume %s was demoted (%s) but %s cannot record it: %s (its "
			  "writes stay fenced while attached here; a later attach may take writes "
			  "again)", d->volume, d->why, key, strerror(-ret));
	else
		tsr_warn("cluster: volume %s demoted: %s; host writes are refused (-EROFS) from "
			 "now on, at every attach", d->volume, d->why);
}

static void drain_demotes(struct tsr_cluster *c)
{
	struct repl_demote *d;

	pthread_mutex_lock(&c->lock);
	d = c->demotes;
	c->demotes = NULL;
	pthread_mutex_unlock(&c->lock);
	while (d) {
		struct repl_demote *next = d->next;

		record_demoted(c, d);
		free(d);
		d = next;
	}
}

static void drain_grows(struct tsr_cluster *c);

static void demote_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	(void)loop;
	(void)revents;
	drain_demotes(w->data);
	drain_grows(w->data);
}

/* Fence (err -EROFS) or open (0) host writes of vol attached here. */
static int fence_volume(struct tsr_cluster *c, const char *vol, int err)
{
	struct tsr_vol *v;
	int ret = tsr_vol_get(c->o.vols, vol, &v);

	if (ret)
		return ret;
	tsr_vol_set_write_fence(v, err);
	tsr_vol_put(v);
	return 0;
}

/* Members of group (repl/ records naming it), or -errno. */
static int group_members(struct tsr_cluster *c, const char *group)
{
	Tessera__Cluster__ReplicationRecord **rs;
	size_t n;
	int ret = repl_list(c, &rs, &n), count = 0;

	if (ret)
		return ret;
	for (size_t i = 0; i < n; i++)
		count += strcmp(rs[i]->group, group) == 0;
	repl_free_all(rs, n);
	return count;
}

/* The group of the target volume site_open_volume is attaching (control
 * thread only; set and cleared around its cluster_attach_local). */
static struct {
	struct tsr_cluster *c;
	char volume[TSR_SITE_NAME_MAX + 1];
	char group[TSR_SITE_NAME_MAX + 1];
} target_hint;

static struct tsr_worker *group_worker(struct tsr_cluster *c, const char *group)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (const char *p = group; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return c->o.workers[h % c->o.n_workers];
}

/* Where a source's pump runs with --site-pump-worker
 * (tsr_site_source_opts.pump_worker): the worker after its volume's home, so
 * the TLS work of the stream is off the thread that serves the volume's I/O
 * (issue 7); home itself with one worker. */
static struct tsr_worker *pump_worker(struct tsr_cluster *c, struct tsr_worker *home)
{
	for (unsigned i = 0; i < c->o.n_workers; i++)
		if (c->o.workers[i] == home)
			return c->o.workers[(i + 1) % c->o.n_workers];
	return home;
}

struct tsr_worker *repl_home_hint(struct tsr_cluster *c, const char *name)
{
	Tessera__Cluster__ReplicationRecord *r = NULL;
	struct tsr_worker *w = NULL;

	if (c->o.n_workers == 0)
		return NULL;
	if (target_hint.c == c && strcmp(target_hint.volume, name) == 0)
		return target_hint.group[0] ? group_worker(c, target_hint.group) : NULL;
	if (repl_get(c, name, &r, NULL))
		return NULL;
	if (r->group[0])
		w = group_worker(c, r->group);
	tessera__cluster__replication_record__free_unpacked(r, NULL);
	return w;
}

/* Start r's source (vol attached here).  0 or -errno with msg. */
static int source_start(struct tsr_cluster *c, const Tessera__Cluster__ReplicationRecord *r,
			char *msg, size_t msg_len)
{
	struct tsr_site_source_opts o;
	char marker_file[4096];
	Tessera__Cluster__SiteRecord *site = NULL;
	struct tsr_site_tls_ctx *tls;
	struct repl_source *s = NULL;
	struct tsr_vol *vol = NULL;
	int ret;

	if (source_find(c, r->volume))
		return 0;
	ret = site_get(c, r->site, &site);
	if (ret) {
		snprintf(msg, msg_len, "volume %s replicates to site '%s', which %s", r->volume,
			 r->site, ret == -ENOENT ? "does not exist (tessera site add)" :
			 "cannot be read from the metadata store");
		return ret;
	}
	ret = tls_for_site(c, site, &tls);
	if (ret) {
		snprintf(msg, msg_len, "site '%s': the TLS files (%s, %s, %s) do not load on node "
			 "%s: %s", site->name, site->ca, site->cert, site->key, c->node_id,
			 strerror(-ret));
		goto out;
	}
	ret = tsr_vol_get(c->o.vols, r->volume, &vol);
	if (ret) {
		snprintf(msg, msg_len, "volume %s is not attached here: %s", r->volume,
			 strerror(-ret));
		goto out;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		ret = -ENOMEM;
		snprintf(msg, msg_len, "out of memory in tesserad");
		goto out;
	}
	s->c = c;
	snprintf(s->volume, sizeof(s->volume), "%s", r->volume);
	snprintf(s->site, sizeof(s->site), "%s", r->site);
	snprintf(s->target_volume, sizeof(s->target_volume), "%s", r->target_volume);
	snprintf(s->target_layout, sizeof(s->target_layout), "%s", r->target_layout);
	snprintf(s->group, sizeof(s->group), "%s", r->group);
	s->stream = r->stream;
	s->epoch = r->epoch;
	memset(&o, 0, sizeof(o));
	o.vol = vol;
	o.worker = tsr_vol_home(vol);
	o.pump_worker = c->o.site_pump_worker ? pump_worker(c, o.worker) : NULL;
	o.tls = tls;
	o.address = site->address;
	o.peer_name = site->peer_name;
	o.site = c->repl_site;
	o.cluster = c->cluster_id;
	o.target_volume = s->target_volume;
	o.target_layout = s->target_layout;
	o.stream = s->stream;
	o.epoch = s->epoch ? s->epoch : 1;
	o.initial_copy = true; /* the log does not survive a detach or a restart */
	o.compare_digests = true; /* ...but only regions that differ at the target go */
	o.log_max_bytes = r->log_max_bytes;
	o.max_bps = r->max_bps;
	if (tsr_site_compress_parse(r->compress[0] ? r->compress : "none", &o.compress)) {
		ret = -EINVAL;
		snprintf(msg, msg_len, "volume %s: replication record names compression '%s', "
			 "which this build does not know (none, lz4, zstd)", r->volume, r->compress);
		goto out;
	}
	if (r->group[0]) {
		int members = group_members(c, r->group);

		if (members < 0) {
			ret = members;
			snprintf(msg, msg_len, "volume %s: cannot count the members of group %s: %s",
				 r->volume, r->group, strerror(-ret));
			goto out;
		}
		o.group = r->group;
		o.group_members = members ? (unsigned)members : 1;
		/* the group's marker counter, per node (the members run on one) */
		snprintf(marker_file, sizeof(marker_file), "%s/group-%s.markers", c->dir, r->group);
		o.marker_file = marker_file;
	}
	o.on_demoted = source_demoted;
	o.cb_arg = s;
	if (o.worker == NULL) {
		ret = -EINVAL;
		snprintf(msg, msg_len, "volume %s has no home worker", r->volume);
		goto out;
	}
	ret = tsr_site_source_start(&o, &s->src);
	if (ret == -EXDEV) {
		/* its home is not the group's worker (attached before replication
		 * enable --group, or the others are on another node): it ships on
		 * its own, and says so; the group's target waits for it */
		snprintf(s->group_broken, sizeof(s->group_broken), "group %s broken: this member "
			 "runs on another worker than the group's other members, so it ships on "
			 "its own (NOT consistent with the group, whose target waits for it); "
			 "attach every member on one node after replication enable --group "
			 "(detach and attach %s)", r->group, r->volume);
		tsr_warn("cluster: volume %s: %s", r->volume, s->group_broken);
		o.group = NULL;
		o.group_members = 0;
		ret = tsr_site_source_start(&o, &s->src);
	}
	if (ret) {
		snprintf(msg, msg_len, "volume %s: cannot start shipping to site %s: %s%s", r->volume,
			 r->site, strerror(-ret), ret == -EBUSY ? " (the volume has replication "
			 "hooks already)" : ret == -EXDEV ? " (consistency group members must run "
			 "on one worker of one node: attach every member of the group on this "
			 "node, after replication enable --group; detach and attach this one)" :
			 ret == -EINVAL && r->group[0] ? " (the group's other members were started "
			 "with another member count: detach and attach every member)" : "");
		goto out;
	}
	s->next = c->sources;
	c->sources = s;
	tsr_info("cluster: volume %s ships to site %s (%s) as %s (%s), stream %016llx, "
		 "compression %s, initial copy of the regions that differ there", r->volume,
		 r->site, site->address, r->target_volume, r->target_layout,
		 (unsigned long long)r->stream, tsr_site_compress_name(o.compress));
	s = NULL;
out:
	free(s);
	tsr_vol_put(vol);
	tessera__cluster__site_record__free_unpacked(site, NULL);
	return ret;
}

static void source_stop(struct tsr_cluster *c, const char *vol)
{
	for (struct repl_source **pp = &c->sources; *pp; pp = &(*pp)->next) {
		struct repl_source *s = *pp;

		if (strcmp(s->volume, vol) == 0) {
			*pp = s->next;
			tsr_site_source_stop(s->src); /* waits for the worker: no callback after */
			tsr_info("cluster: volume %s stopped shipping to site %s", s->volume, s->site);
			free(s);
			return;
		}
	}
}

/* target/<vol>: *stream, the stream vol receives (0: "promoted" or not a
 * stream id), *rev, the key's mod_rev, and *promoted (may be NULL): it says
 * "promoted".  0, or -errno (-ENOENT: no key; all three zero then). */
static int target_claim_get(struct tsr_cluster *c, const char *vol, uint64_t *stream,
			    uint64_t *rev, bool *promoted)
{
	struct tsr_meta_kv kv = { 0 };
	char key[80], text[20];
	int ret;

	*stream = 0;
	*rev = 0;
	if (promoted)
		*promoted = false;
	snprintf(key, sizeof(key), "target/%s", vol);
	ret = tsr_meta_get(c->meta, key, &kv);
	if (ret)
		return ret;
	if (promoted)
		*promoted = kv.value_len == 8 && memcmp(kv.value, "promoted", 8) == 0;
	if (kv.value_len == 16) {
		memcpy(text, kv.value, 16);
		text[16] = '\0';
		*stream = strtoull(text, NULL, 16);
	}
	*rev = kv.mod_rev;
	tsr_meta_kv_clear(&kv);
	return 0;
}

/* target/<vol>: the stream vol receives (0 when it is no target, promoted, or on error). */
static uint64_t target_stream(struct tsr_cluster *c, const char *vol)
{
	uint64_t stream, rev;

	return target_claim_get(c, vol, &stream, &rev, NULL) == 0 ? stream : 0;
}

static bool failback_done(struct tsr_cluster *c, const char *vol, Tessera__Admin__Response *resp);

/*
 * r (demoted, taking resync_from's stream back) was promoted here and the
 * process died before failback_done rewrote repl/<vol> (the failback crash
 * table, ARCHITECTURE.md): the site server's state of vol says promoted, for
 * the stream target/<vol> names (written when the failback stream was
 * accepted), from resync_from.  A promoted state left from an earlier period
 * (vol was a DR copy promoted here, target/<vol> "promoted") does not match.
 */
static bool failback_unfinished(struct tsr_cluster *c, const Tessera__Cluster__ReplicationRecord *r)
{
	struct tsr_site_target_info info;
	uint64_t stream;

	if (!r->demoted || r->resync_from[0] == '\0' || c->site_server == NULL)
		return false;
	stream = target_stream(c, r->volume);
	if (stream == 0)
		return false;
	return server_state_of(c, r->volume, &info) && info.promoted && info.stream == stream &&
	       strcmp(info.source_site, r->resync_from) == 0;
}

/* Tests only: while the file named by $TSR_TEST_PROMOTE_CRASH_FILE exists,
 * the process dies (SIGKILL) right after a promote's state write, before
 * failback_done or target/<vol> "promoted" (vol: the volume, or the group of
 * promote --group) (test-site-failback-crash.sh, test-site-promote-crash.sh). */
static void promote_test_crash(const char *vol)
{
	const char *path = getenv("TSR_TEST_PROMOTE_CRASH_FILE");

	if (path == NULL || path[0] == '\0' || access(path, F_OK) != 0)
		return;
	tsr_warn("cluster: volume %s: test: %s exists: killed after the promote's state write",
		 vol, path);
	raise(SIGKILL);
}

void repl_on_attach(struct tsr_cluster *c, const char *name)
{
	Tessera__Cluster__ReplicationRecord *r = NULL;
	char msg[1024];
	int ret;

	ret = repl_get(c, name, &r, NULL);
	if (ret == -ENOENT) {
		if (target_stream(c, name) && fence_volume(c, name, -EROFS) == 0)
			tsr_info("cluster: volume %s is a replication target here: host writes "
				 "fenced until it is promoted", name);
		return;
	}
	if (ret) {
		tsr_error("cluster: volume %s: cannot read repl/%s: %s; it does NOT ship to its "
			  "site until it is attached again", name, name, strerror(-ret));
		return;
	}
	if (failback_unfinished(c, r)) {
		Tessera__Admin__Response resp = TESSERA__ADMIN__RESPONSE__INIT;

		/* what a second promote would do (its EALREADY case), done here */
		tsr_warn("cluster: volume %s was promoted here (failback from site %s) but its "
			 "record was not updated: finishing the failback", name, r->resync_from);
		failback_done(c, name, &resp);
		if (resp.error)
			tsr_error("cluster: volume %s: %s", name, resp.message);
		admin_response_free_built(&resp);
	} else if (r->demoted) {
		ret = fence_volume(c, name, -EROFS);
		tsr_warn("cluster: volume %s is demoted (%s): host writes are refused%s", name,
			 r->demoted_why, ret ? " (fence failed!)" : "");
	} else if (source_start(c, r, msg, sizeof(msg))) {
		tsr_error("cluster: %s; it does NOT ship until attached again", msg);
	}
	tessera__cluster__replication_record__free_unpacked(r, NULL);
}

void repl_on_detach(struct tsr_cluster *c, const char *name)
{
	source_stop(c, name);
}

bool repl_unshipped(struct tsr_cluster *c, const char *name, int64_t since_ns,
		    struct repl_unshipped *out)
{
	struct repl_source *s = source_find(c, name);
	struct tsr_site_source_stats st;

	memset(out, 0, sizeof(*out));
	if (s == NULL)
		return false;
	tsr_site_source_stats(s->src, &st);
	if (st.state == TSR_SITE_SPLIT)
		return false; /* demoted: it ships nothing any more */
	snprintf(out->site, sizeof(out->site), "%s", s->site);
	out->writes = st.log_entries + st.handover_ranges;
	out->bytes = st.lag_bytes;
	/* counters older than since_ns may miss the last writes: not known yet */
	return st.counted_ns <= since_ns || st.log_entries || st.lag_bytes || st.dirty_bytes ||
	       st.handover_ranges;
}

int repl_volume_busy(struct tsr_cluster *c, const char *name, char *msg, size_t msg_len)
{
	Tessera__Cluster__ReplicationRecord *r = NULL;

	if (repl_get(c, name, &r, NULL))
		return 0;
	snprintf(msg, msg_len, "volume '%s' replicates to site '%s': tessera replication disable "
		 "%s first", name, r->site, name);
	tessera__cluster__replication_record__free_unpacked(r, NULL);
	return -EBUSY;
}

/*
 * volume create (and clone) of name: -EEXIST with msg when target/<name>
 * claims it for a DR stream and vol/<name> is not recorded (a target being
 * created here, or a claim left by a create that did not finish: its
 * stream's next VOLUME_OPEN creates it), else 0 (a recorded name: the
 * create's own "already exists").  An operator's volume of a claimed name
 * was found by that stream's next VOLUME_OPEN (the record, and the claim
 * naming the stream), attached as its target and overwritten (review 17c
 * D2).  The check and the create's record are two writes apart: a claim
 * written between them is caught at the DR's side (target_adopt_refused:
 * the record does not say it was created for the stream).
 */
int repl_name_claimed(struct tsr_cluster *c, const char *name, char *msg, size_t msg_len)
{
	Tessera__Cluster__VolumeRecord *rec = NULL;
	uint64_t stream, rev;
	int ret;

	ret = target_claim_get(c, name, &stream, &rev, NULL);
	if (ret == -ENOENT || (ret == 0 && stream == 0))
		return 0; /* no claim, or "promoted" */
	if (ret) {
		snprintf(msg, msg_len, "cannot read target/%s (is the name claimed by a DR "
			 "stream?): %s; nothing was created", name, strerror(-ret));
		return ret;
	}
	ret = rec_volume_get(c->meta, name, &rec, NULL);
	if (ret == 0) {
		tessera__cluster__volume_record__free_unpacked(rec, NULL);
		return 0;
	}
	snprintf(msg, msg_len, "volume name '%s' is claimed by DR replication stream %016llx, "
		 "received from another site (target/%s: its target is being created here, or "
		 "a create of it did not finish and its stream's next open makes it); nothing "
		 "was created: pick another name, or, if no site ships a volume '%s' here any "
		 "more, release the name with tessera volume delete %s", name,
		 (unsigned long long)stream, name, name, name);
	return -EEXIST;
}

static bool tc_running_here(struct tsr_cluster *c, const char *name);

/* tc_lock's value of tcreate/<vol>: "NODE pid PID", this process. */
static void tc_lock_text(const struct tsr_cluster *c, char *text, size_t len)
{
	snprintf(text, len, "%s pid %ld", c->node_id, (long)getpid());
}

/* claim_lock's value of tcreate/<vol>: tc_lock_text and this suffix, so
 * that whoever meets the lock tells a release from a create (review s20-revK
 * D: a delete on another node said "is being created" of a release). */
#define CLAIM_LOCK_SUFFIX " claim release"

static void claim_lock_text(const struct tsr_cluster *c, char *text, size_t len)
{
	snprintf(text, len, "%s pid %ld" CLAIM_LOCK_SUFFIX, c->node_id, (long)getpid());
}

/* kv, tcreate/<vol>, is a claim's release's lock (claim_lock_text), any node's. */
static bool tc_lock_is_release(const struct tsr_meta_kv *kv)
{
	size_t n = strlen(CLAIM_LOCK_SUFFIX);

	return kv->value_len > n &&
	       memcmp(kv->value + kv->value_len - n, CLAIM_LOCK_SUFFIX, n) == 0;
}

/* kv, tcreate/<vol>, was written by this process (tc_lock_text or
 * claim_lock_text).  With no create of vol running here and no claim's
 * release of it waiting here (claim_release_find), it is one an earlier
 * create or release here left: its delete failed (tc_unlock, claim_unlock),
 * and on this live node's lease it would stay until the node stops. */
static bool tc_lock_is_mine(const struct tsr_cluster *c, const struct tsr_meta_kv *kv)
{
	char text[128];

	if (tc_lock_is_release(kv))
		claim_lock_text(c, text, sizeof(text));
	else
		tc_lock_text(c, text, sizeof(text));
	return kv->value_len == strlen(text) && memcmp(kv->value, text, kv->value_len) == 0;
}

/*
 * repl_claim_release's lock: tcreate/<name> taken as a create takes it
 * (tc_lock: from revision 0 on this node's lease; its own text,
 * claim_lock_text: "NODE pid PID claim release"), so that
 * no create of name begins while the release deletes its leftovers.  0 with
 * *rev (0: no lease, not taken), -ECANCELED held (a create began since the
 * release looked), others: not taken (*rev 0; logged).
 */
static int claim_lock(struct tsr_cluster *c, const char *name, uint64_t *rev)
{
	uint64_t lease = cluster_lease(c);
	char key[80], text[128];
	int ret;

	*rev = 0;
	if (lease == 0)
		return 0;
	snprintf(key, sizeof(key), "tcreate/%s", name);
	claim_lock_text(c, text, sizeof(text));
	ret = tsr_meta_cas(c->meta, key, 0, text, strlen(text), lease, rev);
	if (ret && ret != -ECANCELED) {
		tsr_warn("cluster: volume delete %s: cannot record %s: %s (the copies a create of "
			 "it left are not deleted)", name, key, strerror(-ret));
		ret = 0;
	}
	if (ret)
		*rev = 0;
	return ret;
}

static void claim_unlock(struct tsr_cluster *c, const char *name, uint64_t rev)
{
	char key[80];
	int ret;

	if (rev == 0)
		return;
	snprintf(key, sizeof(key), "tcreate/%s", name);
	ret = tsr_meta_delete(c->meta, key, rev);
	if (ret && ret != -ECANCELED && ret != -ENOENT)
		tsr_warn("cluster: volume delete %s: cannot delete %s: %s (the next create of it "
			 "here takes it over)", name, key, strerror(-ret));
}

/*
 * A claim's release (repl_claim_release) while it deletes the store copies
 * a create of the claimed name left (a create that did not finish: no record
 * lists them; their node's leftover sweep removes them only after
 * --leftover-grace, 900 s by default, and until then every create of the
 * name placed there fails "exists"), on every live node.  It holds
 * tcreate/<name> (no create of name runs or begins: creates take it first)
 * with target/<name> still claiming the name (an operator's create of it is
 * refused, repl_name_claimed), and vol/<name> was read absent once more: a
 * store copy of that name is then such a leftover, whoever made it.
 *
 * Each node is first asked for its copy's uuid (whatever its size: the
 * size-0 check_only VolumeResize, cluster_copy_uuid_req), then that copy is
 * deleted by its uuid: a delete that reaches its node late (its sender timed
 * out; the node ran it after the lock's release and after a new create made
 * its copy of the name there, before that create's record) is refused
 * (-ESTALE) instead of removing the new copy (session-19 revE M1,
 * test-cluster-claim-late).  A node with no copy gets no delete; one that
 * does not answer the ask gets none either (its copy stays: "left"); one of
 * an earlier build names no uuid and is deleted by name, as before.  Each
 * call is bounded by the peer timeout.
 *
 * The nodes are called in turn by a copy walk (copy_walk_run: ask, then
 * delete, per node; shared with the volume delete): inside a client's admin
 * request the other nodes are called with the loop's async client
 * (admin_async_call) and the reply comes later (admin_later), so the control
 * loop goes on meanwhile; else (no request to answer later) each call
 * blocks, bounded the same.  The end
 * (claim_release_end): target/<name> deleted at the revision read, the lock
 * dropped, the answer built.  repl_stop cancels a release waiting for a node
 * (claim_release_stop): the claim is then kept, the answer says so.
 */
struct claim_release {
	struct tsr_cluster *c;
	char name[80];
	uint64_t stream, rev;         /* target/<name>'s stream and revision read */
	uint64_t lock_rev;            /* tcreate/<name>'s, 0: not taken (no deletes) */
	struct copy_walk walk;        /* nodes: the view's, in its order (call: alive, or
				       * this one); stopped: by repl_stop, the claim kept */
	char skipped[128];            /* why no copy was deleted at all, or "" */
	char left[256];               /* the nodes whose copy stays, ", " between */
	struct admin_later *later;    /* the client's reply, when it comes later */
	Tessera__Admin__Response answer; /* built by claim_release_end */
};

static void claim_release_done(void *arg);

/* The release of name running here (its walk listed: its answer comes
 * later), or NULL. */
static struct claim_release *claim_release_find(struct tsr_cluster *c, const char *name)
{
	struct copy_walk *w = copy_walk_find(c, name, claim_release_done);

	return w ? w->done_arg : NULL;
}

static void claim_release_free(struct claim_release *cr)
{
	copy_walk_unlist(&cr->walk);
	admin_response_free_built(&cr->answer);
	free(cr->walk.nodes);
	free(cr);
}

/* Node id's copy stays (msg: why): logged, named in the answer. */
static void claim_node_left(struct claim_release *cr, const char *id, const char *msg)
{
	size_t pos = strlen(cr->left);

	tsr_warn("cluster: volume delete %s (the claim alone): a copy of it left on %s is not "
		 "deleted: %s",
		 cr->name, id, msg);
	if (pos < sizeof(cr->left) - 1)
		snprintf(cr->left + pos, sizeof(cr->left) - pos, "%s%s", pos ? ", " : "", id);
}

/* The walk's nodes whose copy stays (down; named no uuid when asked: not
 * deleted by name; its delete failed): noted.  Stopped (the claim kept):
 * only the nodes called before the stop, the one whose delete was in
 * flight included (s20-revN: their lines were lost). */
static void claim_release_left(struct claim_release *cr)
{
	size_t end = cr->walk.n_nodes;

	if (cr->walk.stopped && cr->walk.next < end)
		end = cr->walk.next + (cr->walk.step == WALK_DELETE);
	for (size_t i = 0; i < end; i++) {
		const struct copy_walk_node *n = &cr->walk.nodes[i];
		char msg[512];

		if (!n->call)
			snprintf(msg, sizeof(msg), "node %s is down", n->id);
		else if (n->asked == -ENOENT || (n->asked == 0 && n->deleted == 0))
			continue; /* no copy there, or deleted */
		else if (n->asked)
			snprintf(msg, sizeof(msg),
				 "%s did not name its copy's uuid when asked (%s): not deleted by "
				 "name, which could reach it late and remove a copy of a new '%s'",
				 n->id, strerror(-n->asked), cr->name);
		else
			snprintf(msg, sizeof(msg), "%s", n->msg);
		claim_node_left(cr, n->id, msg);
		if (!cr->walk.stopped) /* released: --json "left", as a volume delete's */
			copy_left_add(&cr->answer, n->id, msg);
	}
}

/* The view's nodes, copied into cr; cr->skipped says why when vol/<name>
 * was recorded meanwhile or the metadata cannot be read (no deletes). */
static void claim_release_nodes(struct claim_release *cr)
{
	Tessera__Cluster__VolumeRecord *rec = NULL;
	struct cluster_view v;
	int ret;

	ret = rec_volume_get(cr->c->meta, cr->name, &rec, NULL);
	if (ret == 0)
		tessera__cluster__volume_record__free_unpacked(rec, NULL);
	if (ret != -ENOENT || view_load(cr->c->meta, &v) != 0) {
		snprintf(cr->skipped, sizeof(cr->skipped), "%s", ret == 0 ?
			 "vol/ recorded meanwhile" : ret != -ENOENT ? "vol/ unreadable" :
			 "the nodes unreadable");
		return;
	}
	cr->walk.nodes = calloc(v.n_nodes ? v.n_nodes : 1, sizeof(*cr->walk.nodes));
	if (cr->walk.nodes == NULL) {
		snprintf(cr->skipped, sizeof(cr->skipped), "out of memory");
		view_free(&v);
		return;
	}
	for (size_t i = 0; i < v.n_nodes; i++) {
		struct copy_walk_node *n = &cr->walk.nodes[i];

		snprintf(n->id, sizeof(n->id), "%s", v.nodes[i]->id);
		snprintf(n->address, sizeof(n->address), "%s", v.nodes[i]->address);
		n->call = strcmp(n->id, cr->c->node_id) == 0 || view_alive(&v, n->id);
	}
	cr->walk.n_nodes = v.n_nodes;
	view_free(&v);
}

/*
 * The release's end: target/<name> deleted at the revision read (kept when
 * stopped), tcreate/<name> dropped, cr->answer built (error 0 with what
 * stays, or -errno).
 */
static void claim_release_end(struct claim_release *cr)
{
	Tessera__Admin__Response *resp = &cr->answer;
	unsigned long long stream = (unsigned long long)cr->stream;
	char key[96], left[1024] = "";
	int ret;

	if (cr->walk.stopped) {
		claim_release_left(cr); /* logged; the answer unchanged */
		claim_unlock(cr->c, cr->name, cr->lock_rev);
		admin_fail(resp, -ESHUTDOWN, "volume '%s': tesserad is shutting down while it "
			   "deletes the copies a create of it left: the claim of DR stream %016llx "
			   "is kept (retry volume delete %s)", cr->name, stream, cr->name);
		return;
	}
	claim_release_left(cr);
	snprintf(key, sizeof(key), "target/%s", cr->name);
	ret = tsr_meta_delete(cr->c->meta, key, cr->rev);
	claim_unlock(cr->c, cr->name, cr->lock_rev);
	if (ret) {
		admin_fail(resp, ret, "volume '%s' is not recorded; cannot release target/%s (the "
			   "claim of DR stream %016llx): %s%s", cr->name, cr->name, stream,
			   strerror(-ret), ret == -ECANCELED ? " (it changed meanwhile: retry)" : "");
		return;
	}
	if (cr->lock_rev == 0)
		snprintf(left, sizeof(left), "; a copy its create left on a node is not deleted "
			 "(tcreate/%s could not be taken): the leftover sweep of that node removes "
			 "it once unlisted for --leftover-grace (900 s by default), and until then "
			 "a create of '%s' placed there answers it exists", cr->name, cr->name);
	else if (cr->skipped[0])
		snprintf(left, sizeof(left), "; the copies its create left are not deleted (%s): "
			 "the leftover sweep of their nodes removes them once unlisted for "
			 "--leftover-grace (900 s by default)", cr->skipped);
	else if (cr->left[0])
		snprintf(left, sizeof(left), "; a copy it may have left on %s is not deleted (see "
			 "tesserad's log): the leftover sweep there removes it once unlisted for "
			 "--leftover-grace (900 s by default), and until then a create of '%s' "
			 "placed there answers it exists", cr->left, cr->name);
	tsr_info("cluster: target/%s, the claim of DR stream %016llx on a volume not recorded, "
		 "released (volume delete)%s", cr->name, stream,
		 left[0] ? left : "; the copies its create left are deleted");
	admin_fail(resp, 0, "volume '%s' was not recorded: its name's claim by DR stream %016llx "
		   "is released%s", cr->name, stream,
		   left[0] ? left : ", and the copies its create left are deleted");
}

/* The client's reply (admin_later): cr's answer; cr freed. */
static void claim_release_reply(struct tsr_admin_server *srv, void *arg,
				Tessera__Admin__Response *resp)
{
	struct claim_release *cr = arg;

	(void)srv;
	admin_fail(resp, cr->answer.error, "%s", cr->answer.message ? cr->answer.message : "");
	copies_left_move(resp, &cr->answer);
	claim_release_free(cr);
}

/* The walk's end (async): the release's end, and the reply. */
static void claim_release_done(void *arg)
{
	struct claim_release *cr = arg;

	claim_release_end(cr);
	copy_walk_unlist(&cr->walk);
	admin_later_done(cr->later);
}

/* repl_stop: each release of c waiting for a node ends now, its claim kept. */
static void claim_release_stop(struct tsr_cluster *c)
{
	copy_walks_stop(c, claim_release_done); /* claim_release_done unlists each */
}

/* One node of the view other than this one is asked: the reply can wait. */
static bool claim_release_remote(const struct claim_release *cr)
{
	for (size_t i = 0; i < cr->walk.n_nodes; i++)
		if (cr->walk.nodes[i].call && strcmp(cr->walk.nodes[i].id, cr->c->node_id) != 0)
			return true;
	return false;
}

/* The copies of cr->name deleted (cr->lock_rev held) and the release ended,
 * its answer in resp now, or later (cr taken). */
static void claim_release_run(struct claim_release *cr, Tessera__Admin__Response *resp)
{
	struct tsr_admin_server *srv = admin_handling_server();

	if (cr->lock_rev)
		claim_release_nodes(cr);
	if (cr->lock_rev && !cr->skipped[0] && srv && cr->c->o.loop &&
	    claim_release_remote(cr))
		cr->later = admin_later_begin(srv, claim_release_reply, cr);
	cr->walk.async = cr->later != NULL;
	if (cr->later) {
		copy_walk_list(&cr->walk);
		if (copy_walk_run(&cr->walk, true, true))
			return; /* claim_release_done ends it */
		copy_walk_unlist(&cr->walk);
		admin_later_cancel(cr->later); /* no call started: answered now */
		cr->later = NULL;
	} else if (cr->lock_rev && !cr->skipped[0]) {
		copy_walk_run(&cr->walk, true, true);
	}
	claim_release_end(cr);
	admin_fail(resp, cr->answer.error, "%s", cr->answer.message ? cr->answer.message : "");
	copies_left_move(resp, &cr->answer);
	claim_release_free(cr);
}

/*
 * Test hook (test-cluster-claim-late): when the file $TSR_TEST_CLAIM_FILE
 * exists and its first line is name, target/<name> is written claiming name
 * for DR stream 00000000000000d1 (what a create of a DR target that did not
 * finish leaves), and the file removed: the volume delete of name that got
 * here then releases that claim, in a cluster with no site.  A first line
 * "NAME promoted" writes "promoted" instead (what a promote or failback
 * racing the volume's delete leaves: test-cluster-delete-promoted).
 */
static void claim_test_write(struct tsr_cluster *c, const char *name)
{
	const char *f = getenv("TSR_TEST_CLAIM_FILE");
	char line[80] = "", key[80];
	bool promoted;
	FILE *fp;
	int ret;

	if (f == NULL || f[0] == '\0' || (fp = fopen(f, "r")) == NULL)
		return;
	if (fgets(line, sizeof(line), fp) == NULL)
		line[0] = '\0';
	fclose(fp);
	line[strcspn(line, "\n")] = '\0';
	promoted = strcmp(line + strcspn(line, " "), " promoted") == 0;
	line[strcspn(line, " ")] = '\0';
	if (strcmp(line, name) != 0 || unlink(f) != 0)
		return;
	snprintf(key, sizeof(key), "target/%s", name);
	ret = tsr_meta_cas(c->meta, key, TSR_META_ANY_REV,
			   promoted ? "promoted" : "00000000000000d1", promoted ? 8 : 16, 0, NULL);
	tsr_info("cluster: test hook (%s): %s written claiming '%s' %s: %s", f, key, name,
		 promoted ? "\"promoted\"" : "for DR stream 00000000000000d1",
		 ret ? strerror(-ret) : "ok");
}

/*
 * volume delete of name answered -ENOENT, and target/<name> says "promoted"
 * at rev: a mark a promote or failback (which write it at any revision) left
 * by writing it between a volume delete's read of target/<name> and that
 * delete's compare (repl_volume_deleted keeps what changed since its read;
 * review s22-revV).  With vol/<name> still absent once the mark was read, it
 * marks no volume: deleted at rev, and resp says so (error 0).  Left, it
 * made a new DR target of the name pass for a promoted copy
 * (repl_target_promoted, attach.c dr_was_promoted).  A promote writing it
 * again meanwhile changes its revision: kept, and the answer says retry.  A
 * DR create of the name that read the mark just before this delete fails
 * its claim's compare (tc_claim) and its stream's next open creates it.
 */
static void promoted_release(struct tsr_cluster *c, const char *name, uint64_t rev,
			     Tessera__Admin__Response *resp)
{
	Tessera__Cluster__VolumeRecord *rec = NULL;
	char key[80];
	int ret;

	ret = rec_volume_get(c->meta, name, &rec, NULL);
	if (ret == 0) { /* recorded since the delete's read: the mark is not ours to judge */
		tessera__cluster__volume_record__free_unpacked(rec, NULL);
		return;
	}
	snprintf(key, sizeof(key), "target/%s", name);
	if (ret != -ENOENT) {
		admin_fail(resp, ret,
			   "volume '%s' is not recorded, but %s says \"promoted\" (a "
			   "mark a promote or failback left when the volume was deleted), kept: "
			   "cannot read vol/%s: %s (retry volume delete %s)",
			   name, key, name, strerror(-ret), name);
		return;
	}
	ret = tsr_meta_delete(c->meta, key, rev);
	if (ret == -ENOENT)
		return; /* deleted meanwhile (another delete of it): "not found" stands */
	if (ret) {
		admin_fail(resp, ret,
			   "volume '%s' is not recorded, but %s says \"promoted\" (a "
			   "mark a promote or failback left when the volume was deleted), kept: "
			   "cannot delete it: %s (retry volume delete %s)",
			   name, key, ret == -ECANCELED ? "it changed meanwhile" : strerror(-ret),
			   name);
		return;
	}
	tsr_info("cluster: %s \"promoted\" on a volume not recorded (left by a promote or "
		 "failback that ran while the volume was deleted): deleted (volume delete)",
		 key);
	admin_fail(resp, 0,
		   "volume '%s' was not recorded: the \"promoted\" mark a promote or "
		   "failback left on %s when the volume was deleted is deleted (a new DR target "
		   "'%s' is no longer taken for a promoted copy)",
		   name, key, name);
}

/*
 * volume delete of name answered -ENOENT (resp): a "promoted" mark on
 * target/<name> is deleted (promoted_release); when target/<name> claims
 * it for a DR stream and no create of it runs (here, or anywhere: no
 * tcreate/<name>, tc_lock, but one this process left with no create of it
 * running here, deleted) and no release of it runs here, the copies a create
 * of it left are deleted and the claim (at the revision read) too, and resp
 * says so instead (error 0; given later when other nodes are asked: struct
 * claim_release): how an operator releases a name a create that did not
 * finish left claimed.
 */
void repl_claim_release(struct tsr_cluster *c, const char *name, Tessera__Admin__Response *resp)
{
	struct tsr_meta_kv kv = { 0 };
	struct claim_release *cr;
	uint64_t stream, rev, lock_rev = 0;
	char key[80], held[128] = "";
	bool running, promoted, release = false;
	int ret;

	if (resp->error == -ENOENT)
		claim_test_write(c, name);
	if (resp->error != -ENOENT || target_claim_get(c, name, &stream, &rev, &promoted))
		return;
	if (stream == 0) {
		if (promoted)
			promoted_release(c, name, rev, resp);
		return;
	}
	if (claim_release_find(c, name)) {
		admin_fail(resp, -EBUSY, "volume '%s': its claim by DR stream %016llx is being "
			   "released here (another volume delete %s, waiting for a node): retry "
			   "once it has answered", name, (unsigned long long)stream, name);
		return;
	}
	snprintf(key, sizeof(key), "tcreate/%s", name);
	running = tc_running_here(c, name);
	ret = running ? 0 : tsr_meta_get(c->meta, key, &kv);
	release = ret == 0 && !running && tc_lock_is_release(&kv);
	if (ret == 0 && !running && tc_lock_is_mine(c, &kv)) {
		ret = tsr_meta_delete(c->meta, key, kv.mod_rev);
		tsr_warn("cluster: %s is this process's, left by an earlier %s of %s here (no "
			 "%s of it runs here): deleted (volume delete): %s", key,
			 release ? "claim release" : "create", name, release ? "release" : "create",
			 ret ? strerror(-ret) : "ok");
		if (ret == 0 || ret == -ECANCELED)
			ret = ret ? 0 : -ENOENT; /* gone, or written again since: held */
	}
	if (ret == 0 && !running)
		snprintf(held, sizeof(held), ": %.*s", (int)(kv.value_len < 100 ? kv.value_len : 100),
			 (const char *)kv.value);
	tsr_meta_kv_clear(&kv);
	if (ret == 0 && release) {
		admin_fail(resp, -EBUSY, "a claim release of '%s' is running (%s%s: a volume delete "
			   "of it on that node releases the claim by DR stream %016llx and deletes "
			   "the copies a create of it left): retry once it has answered", name, key,
			   held, (unsigned long long)stream);
		return;
	}
	if (ret == 0) {
		admin_fail(resp, -EBUSY, "volume '%s' is being created as the target of DR stream "
			   "%016llx (%s%s): retry once it is created (then delete the volume) or has "
			   "failed", name, (unsigned long long)stream, key, held);
		return;
	}
	if (ret != -ENOENT) {
		admin_fail(resp, ret, "volume '%s' is not recorded; cannot read or clear %s to tell whether "
			   "a create of it runs (the claim of DR stream %016llx is kept): %s", name,
			   key, (unsigned long long)stream, strerror(-ret));
		return;
	}
	/* no create of it runs: take its lock, so that none begins while the
	 * copies its creates left are deleted (the claim, kept until then,
	 * refuses an operator's create of the name) */
	ret = claim_lock(c, name, &lock_rev);
	if (ret == -ECANCELED) {
		admin_fail(resp, -EBUSY, "volume '%s': a create of it as the target of DR stream "
			   "%016llx began just now (tcreate/%s): retry once it is created (then "
			   "delete the volume) or has failed", name, (unsigned long long)stream, name);
		return;
	}
	cr = calloc(1, sizeof(*cr));
	if (cr == NULL) {
		claim_unlock(c, name, lock_rev);
		admin_fail(resp, -ENOMEM, "volume '%s': out of memory in tesserad (the claim of DR "
			   "stream %016llx is kept)", name, (unsigned long long)stream);
		return;
	}
	cr->c = c;
	snprintf(cr->name, sizeof(cr->name), "%s", name);
	cr->stream = stream;
	cr->rev = rev;
	cr->lock_rev = lock_rev;
	cr->answer = (Tessera__Admin__Response)TESSERA__ADMIN__RESPONSE__INIT;
	copy_walk_init(&cr->walk, c, cr->name, cluster_peer_call_ms(c), claim_release_done, cr);
	claim_release_run(cr, resp);
}

/* The answer of a grow of name's target as the resize gives it (ret != 0). */
static void grow_refusal(const char *name, const char *site, int ret, const char *why,
			 char *msg, size_t msg_len)
{
	if (ret == -ENOTCONN)
		snprintf(msg, msg_len, "volume '%s' replicates to site '%s': the DR site must "
			 "grow first; the link is down (%s): retry once tessera replication "
			 "status %s shows it streaming", name, site, why, name);
	else
		snprintf(msg, msg_len, "volume '%s' replicates to site '%s', whose target did "
			 "not grow: %s", name, site, why);
}

/* name's running source, or -errno with msg (or 1: nothing to grow). */
static int grow_source(struct tsr_cluster *c, const char *name, struct repl_source **out,
		       char *site, size_t site_len, char *msg, size_t msg_len)
{
	Tessera__Cluster__ReplicationRecord *r = NULL;
	struct repl_source *rs;
	int ret = 0;

	if (repl_get(c, name, &r, NULL))
		return 1;
	snprintf(site, site_len, "%s", r->site);
	rs = source_find(c, name);
	if (r->demoted) { /* its stream has ended: nothing ships */
		ret = 1;
	} else if (rs == NULL || rs->src == NULL) {
		snprintf(msg, msg_len, "volume '%s' replicates to site '%s', whose target must "
			 "grow first, but its source does not run here (see tessera replication "
			 "status %s)", name, r->site, name);
		ret = -ENOTCONN;
	}
	tessera__cluster__replication_record__free_unpacked(r, NULL);
	*out = rs;
	return ret;
}

/*
 * vol (attached here, its coordinator) is about to grow to size: when it
 * replicates, its site target grows first (tsr_site_source_grow: the stream
 * is reopened announcing size; the DR grows its volume before it accepts).
 * 0 (nothing to do, or the target took it), or -errno with msg: the link is
 * down (-ENOTCONN), the target refused (its sentence), ...  Nothing here has
 * changed then; a target that grew before a later step failed is larger
 * than its source, which is harmless.  Blocks the control loop up to
 * REPL_GROW_TIMEOUT_MS: only for a resize with no admin connection
 * (repl_grow_target_async otherwise).
 */
int repl_grow_target(struct tsr_cluster *c, const char *name, uint64_t size, char *msg,
		     size_t msg_len)
{
	struct repl_source *rs;
	char why[300], site[64];
	int ret = grow_source(c, name, &rs, site, sizeof(site), msg, msg_len);

	if (ret)
		return ret > 0 ? 0 : ret;
	ret = tsr_site_source_grow(rs->src, size, repl_grow_timeout_ms(), why, sizeof(why));
	if (ret)
		grow_refusal(name, site, ret, why, msg, msg_len);
	return ret;
}

/* On the source's worker: the grow's answer, queued for the main thread. */
static void grow_answered(void *arg, int status, const char *why)
{
	struct repl_grow *g = arg;
	struct tsr_cluster *c = g->c;

	g->status = status;
	snprintf(g->why, sizeof(g->why), "%s", why);
	pthread_mutex_lock(&c->lock);
	g->next = c->grows;
	c->grows = g;
	pthread_mutex_unlock(&c->lock);
	ev_async_send(c->o.loop, &c->repl_async);
}

static void drain_grows(struct tsr_cluster *c)
{
	struct repl_grow *g;
	char msg[1024];

	pthread_mutex_lock(&c->lock);
	g = c->grows;
	c->grows = NULL;
	pthread_mutex_unlock(&c->lock);
	while (g) {
		struct repl_grow *next = g->next;

		if (g->cb_fn) {
			msg[0] = '\0';
			if (g->status)
				grow_refusal(g->volume, g->site, g->status, g->why, msg,
					     sizeof(msg));
			g->cb_fn(g->cb_arg, g->status, msg);
		}
		free(g);
		g = next;
	}
}

int repl_grow_target_async(struct tsr_cluster *c, const char *name, uint64_t size,
			   repl_grow_fn cb_fn, void *cb_arg, struct repl_grow **out, char *msg,
			   size_t msg_len)
{
	struct repl_source *rs;
	struct repl_grow *g;
	char why[TSR_SITE_ERRMSG_MAX + 1], site[64];
	int ret = grow_source(c, name, &rs, site, sizeof(site), msg, msg_len);

	if (ret)
		return ret;
	g = calloc(1, sizeof(*g));
	if (g == NULL) {
		snprintf(msg, msg_len, "out of memory");
		return -ENOMEM;
	}
	g->c = c;
	g->cb_fn = cb_fn;
	g->cb_arg = cb_arg;
	snprintf(g->volume, sizeof(g->volume), "%s", name);
	snprintf(g->site, sizeof(g->site), "%s", site);
	/* the worker may answer before this returns: g is queued, not run */
	*out = g;
	ret = tsr_site_source_grow_async(rs->src, size, repl_grow_timeout_ms(), grow_answered, g,
					 why, sizeof(why));
	if (ret) {
		*out = NULL;
		free(g);
		if (ret < 0)
			grow_refusal(name, site, ret, why, msg, msg_len);
	}
	return ret;
}

void repl_grow_abandon(struct repl_grow *g)
{
	if (g)
		g->cb_fn = NULL;
}

int repl_target_rev(struct tsr_cluster *c, const char *name, uint64_t *rev)
{
	uint64_t stream;
	int ret = target_claim_get(c, name, &stream, rev, NULL);

	if (ret && ret != -ENOENT)
		tsr_warn("cluster: volume delete %s: cannot read target/%s: %s (it is kept if "
			 "there: a volume delete %s once the volume is gone releases it)",
			 name, name, strerror(-ret), name);
	return ret == -ENOENT ? 0 : ret;
}

int repl_volume_deleted(struct tsr_cluster *c, const char *name, uint64_t rev)
{
	char key[80];
	int ret;

	if (rev == 0) /* it was no target, or unreadable (kept) */
		return 0;
	snprintf(key, sizeof(key), "target/%s", name);
	ret = tsr_meta_delete(c->meta, key, rev);
	if (ret == -ECANCELED || ret == -ENOENT)
		/* since the read, before the record's delete: a DR create of
		 * the name (its claim) or a claim release (through another
		 * node) changed it; that claim is theirs */
		tsr_info("cluster: volume delete %s: target/%s %s since it was read (revision "
			 "%llu): the claim moved on, left to it",
			 name, name, ret == -ENOENT ? "was deleted" : "was written again",
			 (unsigned long long)rev);
	else if (ret)
		tsr_warn("cluster: volume delete %s: cannot delete target/%s: %s (the volume is "
			 "deleted; a volume delete %s releases that claim)",
			 name, name, strerror(-ret), name);
	return ret == -ECANCELED || ret == -ENOENT ? 0 : ret;
}

/* ---- site add / remove / list ----------------------------------------------- */

static void site_add(struct tsr_cluster *c, const Tessera__Admin__SiteAdd *a,
		     Tessera__Admin__Response *resp)
{
	Tessera__Cluster__SiteRecord rec = TESSERA__CLUSTER__SITE_RECORD__INIT;
	const char *files[3] = { a->ca, a->cert, a->key };
	static const char *const what[3] = { "CA", "certificate", "key" };
	struct repl_tls *t = NULL;
	Tessera__Admin__Site *m;
	char host[260], port[16], key[80];
	int ret;

	for (int i = 0; i < 3; i++) {
		if (access(files[i], R_OK) != 0) {
			ret = -errno;
			admin_fail(resp, ret, "site '%s': cannot read the %s file %s on node %s: %s "
				   "(the files must be readable by tesserad on every node that "
				   "coordinates a replicated volume)", a->name, what[i], files[i],
				   c->node_id, strerror(-ret));
			return;
		}
	}
	ret = tls_build(a->name, a->ca, a->cert, a->key, &t);
	if (ret) {
		admin_fail(resp, ret, "site '%s': the TLS files do not load on node %s: %s%s",
			   a->name, c->node_id, strerror(-ret), ret == -EKEYREJECTED ?
			   " (is each file PEM, and is the key the certificate's?)" : "");
		return;
	}
	if (tsr_admin_split_hostport(a->address, host, sizeof(host), port, sizeof(port))) {
		tls_free(t);
		admin_fail(resp, -EINVAL, "site '%s': address %s is not HOST:PORT", a->name,
			   a->address);
		return;
	}
	rec.name = a->name;
	rec.address = a->address;
	rec.ca = a->ca;
	rec.cert = a->cert;
	rec.key = a->key;
	rec.peer_name = a->peer_name[0] ? a->peer_name : host;
	snprintf(key, sizeof(key), "site/%s", a->name);
	ret = rec_put(c->meta, key, &rec.base, 0, 0, NULL);
	if (ret) {
		tls_free(t);
		if (ret == -ECANCELED)
			admin_fail(resp, -EEXIST, "site '%s' exists already (tessera site list; remove "
				   "it first to change it)", a->name);
		else
			admin_fail(resp, ret, "cannot record site '%s': %s", a->name, strerror(-ret));
		return;
	}
	tls_drop(c, a->name); /* a stale context of a removed site of that name */
	t->next = c->site_tls;
	c->site_tls = t;
	tsr_info("cluster: site %s added (%s, peer name %s)", a->name, a->address, rec.peer_name);
	m = site_msg(&rec, 0);
	if (m == NULL || add_site(resp, m))
		admin_fail(resp, -ENOMEM, "out of memory in tesserad (site %s was added)", a->name);
}

static void site_remove(struct tsr_cluster *c, const char *name, Tessera__Admin__Response *resp)
{
	Tessera__Cluster__ReplicationRecord **rs;
	char key[80], users[512] = "";
	size_t n, pos = 0;
	int ret;

	ret = repl_list(c, &rs, &n);
	if (ret) {
		admin_fail(resp, ret, "cannot read the metadata store: %s", strerror(-ret));
		return;
	}
	for (size_t i = 0; i < n; i++)
		if (strcmp(rs[i]->site, name) == 0 && pos < sizeof(users))
			pos += (size_t)snprintf(users + pos, sizeof(users) - pos, "%s%s",
						pos ? ", " : "", rs[i]->volume);
	repl_free_all(rs, n);
	if (pos) {
		admin_fail(resp, -EBUSY, "site '%s' is in use by %s: tessera replication disable "
			   "those volumes first", name, users);
		return;
	}
	snprintf(key, sizeof(key), "site/%s", name);
	ret = tsr_meta_delete(c->meta, key, TSR_META_ANY_REV);
	if (ret) {
		admin_fail(resp, ret, ret == -ENOENT ? "site '%s' not found (tessera site list)" :
			   "cannot delete site '%s' from the metadata store", name);
		return;
	}
	if (!tls_in_use(c, name))
		tls_drop(c, name);
	tsr_info("cluster: site %s removed", name);
}

static void site_list(struct tsr_cluster *c, Tessera__Admin__Response *resp)
{
	Tessera__Cluster__ReplicationRecord **rs = NULL;
	struct tsr_meta_kv *kvs = NULL;
	size_t nkv = 0, nr = 0;
	int ret;

	ret = tsr_meta_range(c->meta, "site/", &kvs, &nkv, NULL);
	if (ret == 0)
		ret = repl_list(c, &rs, &nr);
	if (ret) {
		admin_fail(resp, ret, "cannot read the metadata store: %s", strerror(-ret));
		goto out;
	}
	for (size_t i = 0; i < nkv; i++) {
		Tessera__Cluster__SiteRecord *r = repl_site_decode(&kvs[i]);
		Tessera__Admin__Site *m;
		uint32_t users = 0;

		if (r == NULL)
			continue;
		for (size_t k = 0; k < nr; k++)
			users += strcmp(rs[k]->site, r->name) == 0;
		m = site_msg(r, users);
		tessera__cluster__site_record__free_unpacked(r, NULL);
		if (m == NULL || add_site(resp, m)) {
			admin_fail(resp, -ENOMEM, "out of memory in tesserad");
			goto out;
		}
	}
out:
	repl_free_all(rs, nr);
	tsr_meta_kv_free_array(kvs, nkv);
}

/* ---- replication enable / disable ------------------------------------------ */

static uint64_t random_stream(void)
{
	uint64_t v = 0;

	while (v == 0)
		if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
			v = ((uint64_t)rand() << 32) ^ (uint64_t)rand() ^ (uint64_t)time(NULL);
	return v;
}

/*
 * The volume's coordinator is another node: forward req there (true).
 * False: attached here, or detached (*attached_here says which).
 */
static bool route_to_coordinator(struct tsr_cluster *c, const char *vol,
				 const Tessera__Admin__Request *req, Tessera__Admin__Response *resp,
				 bool *attached_here)
{
	struct attachment *a = cluster_find_attachment(c, vol);
	char holder[64];

	*attached_here = a && a->layout && !a->fenced;
	if (*attached_here)
		return false;
	if (cluster_get_attach(c, vol, holder, sizeof(holder), NULL, NULL) == 0 &&
	    strcmp(holder, c->node_id) != 0) {
		repl_forward(c, holder, req, resp);
		return true;
	}
	return false;
}

static void repl_enable(struct tsr_cluster *c, const Tessera__Admin__Request *req,
			Tessera__Admin__Response *resp)
{
	const Tessera__Admin__ReplicationEnable *e = req->replication_enable;
	Tessera__Cluster__ReplicationRecord rec = TESSERA__CLUSTER__REPLICATION_RECORD__INIT;
	Tessera__Cluster__ReplicationRecord *old = NULL;
	Tessera__Cluster__VolumeRecord *vol = NULL;
	Tessera__Cluster__SiteRecord *site = NULL;
	Tessera__Admin__Replication *m;
	struct tsr_site_layout lay;
	char layout[40], key[80], msg[1024];
	uint8_t algo;
	bool here;
	int ret;

	if (route_to_coordinator(c, e->volume, req, resp, &here))
		return;
	ret = rec_volume_get(c->meta, e->volume, &vol, NULL);
	if (ret) {
		admin_fail(resp, ret, ret == -ENOENT ? "volume '%s' not found (tessera volume list)"
			   : "cannot read volume '%s' from the metadata store", e->volume);
		goto out;
	}
	ret = site_get(c, e->site, &site);
	if (ret) {
		admin_fail(resp, ret, ret == -ENOENT ? "site '%s' not found (tessera site add %s "
			   "--address HOST:PORT --ca F --cert F --key F first)" : "cannot read site "
			   "'%s' from the metadata store", e->site, e->site);
		goto out;
	}
	if (repl_get(c, e->volume, &old, NULL) == 0) {
		admin_fail(resp, -EEXIST, "volume '%s' replicates to site '%s' already (tessera "
			   "replication status %s; disable it first to change it)", e->volume,
			   old->site, e->volume);
		goto out;
	}
	if (e->compress[0] && tsr_site_compress_parse(e->compress, &algo)) {
		admin_fail(resp, -EINVAL, "compression '%s' is not one of none, lz4, zstd",
			   e->compress);
		goto out;
	}
	if (e->target_layout[0])
		snprintf(layout, sizeof(layout), "%s", e->target_layout);
	else if (vol->ec_k)
		snprintf(layout, sizeof(layout), "ec:%u+%u", vol->ec_k, vol->ec_m);
	else
		snprintf(layout, sizeof(layout), "replicas:%u", (unsigned)vol->n_copies);
	if (tsr_site_layout_parse(layout, &lay)) {
		admin_fail(resp, -EINVAL, "target layout '%s' is not replicas:R (1..8) or ec:K+M "
			   "(K 1..16, M 1..4)", layout);
		goto out;
	}
	rec.volume = e->volume;
	rec.site = e->site;
	rec.target_volume = e->target_volume[0] ? e->target_volume : e->volume;
	rec.target_layout = layout;
	rec.group = e->group;
	rec.stream = random_stream();
	rec.epoch = 1;
	rec.max_bps = e->max_bps;
	rec.log_max_bytes = e->log_max_bytes;
	rec.compress = e->compress[0] ? e->compress : "none";
	rec.created = cluster_now();
	snprintf(key, sizeof(key), "repl/%s", e->volume);
	ret = rec_put(c->meta, key, &rec.base, 0, 0, NULL);
	if (ret) {
		admin_fail(resp, ret == -ECANCELED ? -EEXIST : ret, ret == -ECANCELED ?
			   "volume '%s' was just set to replicate by someone else (tessera "
			   "replication status %s)" : "cannot record the replication of '%s'",
			   e->volume, e->volume);
		goto out;
	}
	tsr_info("cluster: volume %s replication to site %s enabled (target %s, %s, stream "
		 "%016llx%s%s)", e->volume, e->site, rec.target_volume, layout,
		 (unsigned long long)rec.stream, rec.group[0] ? ", group " : "", rec.group);
	if (here) {
		ret = source_start(c, &rec, msg, sizeof(msg));
		if (ret) {
			tsr_meta_delete(c->meta, key, TSR_META_ANY_REV);
			admin_fail(resp, ret, "%s (replication not enabled)", msg);
			goto out;
		}
	}
	m = source_msg(c, &rec, source_find(c, e->volume), "detached");
	if (m == NULL || add_repl(resp, m))
		admin_fail(resp, -ENOMEM, "out of memory in tesserad (replication enabled)");
out:
	if (vol)
		tessera__cluster__volume_record__free_unpacked(vol, NULL);
	if (site)
		tessera__cluster__site_record__free_unpacked(site, NULL);
	if (old)
		tessera__cluster__replication_record__free_unpacked(old, NULL);
}

static void repl_disable(struct tsr_cluster *c, const Tessera__Admin__Request *req,
			 Tessera__Admin__Response *resp)
{
	const char *name = req->replication_disable->volume;
	Tessera__Cluster__ReplicationRecord *r = NULL;
	Tessera__Admin__Replication *m;
	char key[80];
	bool here;
	int ret;

	if (route_to_coordinator(c, name, req, resp, &here))
		return;
	ret = repl_get(c, name, &r, NULL);
	if (ret) {
		admin_fail(resp, ret, ret == -ENOENT ? "volume '%s' does not replicate (tessera "
			   "replication status)" : "cannot read repl/%s", name);
		return;
	}
	source_stop(c, name);
	snprintf(key, sizeof(key), "repl/%s", name);
	ret = tsr_meta_delete(c->meta, key, TSR_META_ANY_REV);
	if (ret && ret != -ENOENT) {
		admin_fail(resp, ret, "cannot delete %s: %s (shipping is stopped until the next "
			   "attach)", key, strerror(-ret));
		goto out;
	}
	if (here && r->demoted && fence_volume(c, name, 0) == 0)
		tsr_warn("cluster: volume %s: demotion cleared by replication disable: host writes "
			 "allowed again", name);
	tsr_info("cluster: volume %s replication to site %s disabled", name, r->site);
	m = source_msg(c, r, NULL, "disabled");
	if (m == NULL || add_repl(resp, m))
		admin_fail(resp, -ENOMEM, "out of memory in tesserad (replication disabled)");
out:
	tessera__cluster__replication_record__free_unpacked(r, NULL);
}

/* ---- status, promote, resync ------------------------------------------------- */

static const char *target_state(const struct tsr_site_target_info *t)
{
	return t->promoted ? "promoted" : t->connected ? "receiving" : "idle";
}

static Tessera__Admin__Replication *target_msg(struct tsr_cluster *c,
					       const struct tsr_site_target_info *t)
{
	Tessera__Admin__Replication *m = repl_msg(t->volume, "target", target_state(t),
						  c->node_id);

	if (m == NULL)
		return NULL;
	set_text(&m->site, t->source_site);
	set_text(&m->target_volume, t->volume);
	m->stream = t->stream;
	m->epoch = t->epoch;
	m->applied_seq = t->applied;
	m->consistent = t->consistent;
	m->bytes_shipped = t->bytes_applied;
	set_text(&m->group, t->group);
	m->group_marker = t->marker;
	m->group_members = t->group_members;
	if (t->group[0] && t->connected && t->group_blocker[0])
		set_text(&m->group_held_by, t->group_blocker);
	return m;
}

/* This node's target volumes (all, or the one named). */
static int targets_add(struct tsr_cluster *c, const char *only, const char *group,
		       Tessera__Admin__Response *resp, bool *found)
{
	struct tsr_site_target_info *infos;
	size_t n, got;
	int ret = 0;

	if (c->site_server == NULL)
		return 0;
	n = tsr_site_server_list(c->site_server, NULL, 0);
	if (n == 0)
		return 0;
	infos = calloc(n, sizeof(*infos));
	if (infos == NULL)
		return -ENOMEM;
	got = tsr_site_server_list(c->site_server, infos, n);
	for (size_t i = 0; i < got && i < n && ret == 0; i++) {
		Tessera__Admin__Replication *m;

		if ((only && strcmp(only, infos[i].volume)) ||
		    (group && strcmp(group, infos[i].group)))
			continue;
		*found = true;
		m = target_msg(c, &infos[i]);
		ret = m ? add_repl(resp, m) : -ENOMEM;
	}
	free(infos);
	return ret;
}

/* resp holds a target entry for vol already. */
static bool has_target(const Tessera__Admin__Response *resp, const char *vol)
{
	for (size_t i = 0; i < resp->n_replications; i++)
		if (strcmp(resp->replications[i]->role, "target") == 0 &&
		    strcmp(resp->replications[i]->volume, vol) == 0)
			return true;
	return false;
}

/*
 * Target volumes of this cluster (target/<vol>) attached on another node (the
 * one with the site listener that receives them): ask that node.  Not
 * attached anywhere: nothing to say (the state file is on the listener node).
 */
static int targets_remote(struct tsr_cluster *c, const char *only,
			  Tessera__Admin__Response *resp, bool *found)
{
	struct tsr_meta_kv *kvs = NULL;
	size_t nkv = 0;
	int ret;

	ret = tsr_meta_range(c->meta, "target/", &kvs, &nkv, NULL);
	if (ret)
		return 0; /* the local part stands; sources read the store already */
	for (size_t i = 0; i < nkv && ret == 0; i++) {
		Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
		Tessera__Admin__ReplicationStatusGet get = TESSERA__ADMIN__REPLICATION_STATUS_GET__INIT;
		Tessera__Admin__Response sub = TESSERA__ADMIN__RESPONSE__INIT;
		char *vol = kvs[i].key + strlen("target/"), holder[64];

		if (!tsr_valid_name(vol) || (only && strcmp(only, vol)) || has_target(resp, vol) ||
		    cluster_get_attach(c, vol, holder, sizeof(holder), NULL, NULL) ||
		    strcmp(holder, c->node_id) == 0)
			continue;
		get.volume = vol;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_STATUS;
		req.replication_status = &get;
		repl_forward(c, holder, &req, &sub);
		for (size_t k = 0; k < sub.n_replications && ret == 0; k++) {
			if (strcmp(sub.replications[k]->role, "target") ||
			    strcmp(sub.replications[k]->volume, vol))
				continue;
			ret = add_repl(resp, sub.replications[k]);
			sub.replications[k] = NULL;
			*found = true;
		}
		admin_response_free_built(&sub);
	}
	tsr_meta_kv_free_array(kvs, nkv);
	return ret;
}

/* A source attached on another node: ask it for this one volume. */
static void status_remote(struct tsr_cluster *c, const char *holder,
			  const Tessera__Cluster__ReplicationRecord *r,
			  Tessera__Admin__Response *resp)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__ReplicationStatusGet get = TESSERA__ADMIN__REPLICATION_STATUS_GET__INIT;
	Tessera__Admin__Response sub = TESSERA__ADMIN__RESPONSE__INIT;
	Tessera__Admin__Replication *m;
	bool got = false;

	get.volume = r->volume;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_STATUS;
	req.replication_status = &get;
	repl_forward(c, holder, &req, &sub);
	for (size_t i = 0; i < sub.n_replications; i++) {
		if (strcmp(sub.replications[i]->role, "source") == 0 &&
		    strcmp(sub.replications[i]->volume, r->volume) == 0 &&
		    add_repl(resp, sub.replications[i]) == 0) {
			sub.replications[i] = NULL;
			got = true;
		}
	}
	if (!got) { /* what the record says, and why there is no more */
		m = source_msg(c, r, NULL, r->demoted ? "split" : "unknown");
		if (m) {
			char why[300];

			snprintf(why, sizeof(why), "coordinator %s did not answer: %s", holder,
				 sub.message ? sub.message : "");
			set_text(&m->node, holder);
			if (!r->demoted)
				set_text(&m->last_error, why);
			add_repl(resp, m);
		}
	}
	admin_response_free_built(&sub);
}

static void repl_status(struct tsr_cluster *c, const Tessera__Admin__ReplicationStatusGet *g,
			Tessera__Admin__Response *resp)
{
	Tessera__Cluster__ReplicationRecord **rs;
	const char *only = g->volume[0] ? g->volume : NULL;
	bool found = false;
	size_t n;
	int ret;

	ret = repl_list(c, &rs, &n);
	if (ret) {
		admin_fail(resp, ret, "cannot read the metadata store: %s", strerror(-ret));
		return;
	}
	for (size_t i = 0; i < n && ret == 0; i++) {
		const Tessera__Cluster__ReplicationRecord *r = rs[i];
		struct repl_source *s = source_find(c, r->volume);
		struct attachment *a;
		Tessera__Admin__Replication *m;
		char holder[64];

		if ((only && strcmp(only, r->volume)) || (g->group[0] && strcmp(g->group, r->group)))
			continue;
		found = true;
		if (s) {
			m = source_msg(c, r, s, NULL);
		} else if ((a = cluster_find_attachment(c, r->volume)) != NULL && a->layout) {
			/* attached here and not shipping: demoted, or its start failed (logged) */
			m = source_msg(c, r, NULL, r->demoted ? "split" : "stopped");
			if (m)
				set_text(&m->node, c->node_id);
			if (m && !r->demoted)
				set_text(&m->last_error, "not shipping: see tesserad's log on this node "
					 "(attach it again to retry)");
		} else if (cluster_get_attach(c, r->volume, holder, sizeof(holder), NULL,
					      NULL) == 0 &&
			   strcmp(holder, c->node_id) != 0) {
			status_remote(c, holder, r, resp);
			continue;
		} else {
			m = source_msg(c, r, NULL, r->demoted ? "split" : "detached");
		}
		ret = m ? add_repl(resp, m) : -ENOMEM;
	}
	repl_free_all(rs, n);
	/* a group's targets: the ones this node's site server receives */
	if (ret == 0)
		ret = targets_add(c, only, g->group[0] ? g->group : NULL, resp, &found);
	if (ret == 0 && g->group[0] == '\0')
		ret = targets_remote(c, only, resp, &found);
	if (ret)
		admin_fail(resp, ret, "out of memory in tesserad");
	else if (only && !found)
		admin_fail(resp, -ENOENT, "volume '%s' is not replicated: no repl/%s record in this "
			   "cluster and no target state on node %s%s", only, only, c->node_id,
			   c->site_server ? "" : " (it has no site listener)");
}

static void text_clear(char **field)
{
	if (*field != protobuf_c_empty_string)
		free(*field);
	*field = (char *)protobuf_c_empty_string;
}

/*
 * After promote: when vol is an original primary that took its promoted
 * copy's stream back (repl/<vol> demoted with resync_from), it is the
 * primary again: repl/<vol> loses demoted and resync_from and gets a new
 * stream (the copy's state file names the old one, promoted), target/<vol>
 * goes, and the source starts (its initial copy sends only the regions
 * whose digests differ there: none when nobody wrote since).  The copy's
 * stream back is refused ESTALE at its next VOLUME_OPEN, which demotes it;
 * it then takes the new stream (site_may_replace).  true when handled
 * (resp filled).
 */
static bool failback_done(struct tsr_cluster *c, const char *vol, Tessera__Admin__Response *resp)
{
	Tessera__Cluster__ReplicationRecord *r = NULL;
	Tessera__Admin__Replication *m;
	char key[80], msg[1024];
	uint64_t rev;
	int ret = -ECANCELED;

	snprintf(key, sizeof(key), "repl/%s", vol);
	for (int tries = 0; tries < 20 && ret == -ECANCELED; tries++) {
		if (r)
			tessera__cluster__replication_record__free_unpacked(r, NULL);
		r = NULL;
		if (repl_get(c, vol, &r, &rev) || !r->demoted || r->resync_from[0] == '\0') {
			if (r)
				tessera__cluster__replication_record__free_unpacked(r, NULL);
			return false;
		}
		r->demoted = false;
		text_clear(&r->demoted_why);
		text_clear(&r->resync_from);
		r->stream = random_stream();
		r->epoch++;
		ret = rec_put(c->meta, key, &r->base, rev, 0, NULL);
	}
	if (ret) {
		admin_fail(resp, ret, "volume '%s' was promoted but %s cannot be updated: %s; it "
			   "takes host writes here and does not ship (tessera replication disable "
			   "%s, then enable)", vol, key, strerror(-ret), vol);
		goto out;
	}
	snprintf(key, sizeof(key), "target/%s", vol);
	tsr_meta_delete(c->meta, key, TSR_META_ANY_REV); /* the primary again, no target */
	tsr_warn("cluster: volume %s failed back: the primary again, shipping to site %s as "
		 "stream %016llx", vol, r->site, (unsigned long long)r->stream);
	source_stop(c, vol); /* the one demoted at its last attach, if any (dead) */
	if (cluster_find_attachment(c, vol) && source_start(c, r, msg, sizeof(msg)))
		tsr_error("cluster: %s; it does NOT ship until attached again", msg);
	m = source_msg(c, r, source_find(c, vol), "detached");
	if (m == NULL || add_repl(resp, m))
		admin_fail(resp, -ENOMEM, "out of memory in tesserad (volume %s failed back)", vol);
out:
	tessera__cluster__replication_record__free_unpacked(r, NULL);
	return true;
}

/* Failback, first half, at the original site: the demoted vol accepts the
 * stream of its promoted copy at from_site (site_open_volume). */
static void repl_resync(struct tsr_cluster *c, const Tessera__Admin__ReplicationResync *rs,
			Tessera__Admin__Response *resp)
{
	Tessera__Cluster__ReplicationRecord *r = NULL;
	Tessera__Admin__Replication *m;
	char key[80];
	uint64_t rev;
	bool found = false;
	int ret = -ECANCELED;

	snprintf(key, sizeof(key), "repl/%s", rs->volume);
	if (c->site_server == NULL) {
		admin_fail(resp, -EOPNOTSUPP, "node %s runs no site listener (tesserad --site-listen "
			   "...): site %s ships the volume back to a listener; run resync on the "
			   "node that has one", c->node_id, rs->from_site);
		return;
	}
	for (int tries = 0; tries < 20 && ret == -ECANCELED; tries++) {
		if (r)
			tessera__cluster__replication_record__free_unpacked(r, NULL);
		r = NULL;
		ret = repl_get(c, rs->volume, &r, &rev);
		if (ret == -ENOENT) {
			admin_fail(resp, ret, "volume '%s' is no replication source here: resync runs "
				   "at the original site of a volume that failed over", rs->volume);
			goto out;
		}
		if (ret) {
			admin_fail(resp, ret, "cannot read %s: %s", key, strerror(-ret));
			goto out;
		}
		if (!r->demoted) {
			admin_fail(resp, -EINVAL, "volume '%s' is not demoted: it is the primary "
				   "(tessera replication status %s); nothing to fail back",
				   rs->volume, rs->volume);
			goto out;
		}
		if (strcmp(r->site, rs->from_site) != 0) {
			admin_fail(resp, -EINVAL, "volume '%s' replicated to site '%s', not '%s'",
				   rs->volume, r->site, rs->from_site);
			goto out;
		}
		if (strcmp(r->resync_from, rs->from_site) == 0)
			break; /* again: nothing to change */
		text_clear(&r->resync_from);
		r->resync_from = strdup(rs->from_site);
		if (r->resync_from == NULL) {
			r->resync_from = (char *)protobuf_c_empty_string;
			ret = -ENOMEM;
			break;
		}
		ret = rec_put(c->meta, key, &r->base, rev, 0, NULL);
	}
	if (ret) {
		admin_fail(resp, ret, "cannot record the resync of '%s': %s", rs->volume,
			   strerror(-ret));
		goto out;
	}
	tsr_warn("cluster: volume %s takes the stream of site %s (failback): its regions that "
		 "differ there will be overwritten; then promote it here", rs->volume,
		 rs->from_site);
	m = source_msg(c, r, NULL, "resync");
	if (m == NULL || add_repl(resp, m) || targets_add(c, rs->volume, NULL, resp, &found))
		admin_fail(resp, -ENOMEM, "out of memory in tesserad");
out:
	if (r)
		tessera__cluster__replication_record__free_unpacked(r, NULL);
}

/*
 * The site server's state of vol says promoted (its promote answered
 * -EALREADY) and failback_done had nothing to do: true when the promote's
 * second half (below: fence lifted, target/<vol> "promoted") is missing,
 * i.e. target/<vol> still names a stream, the stream of that promoted state
 * (state_stream), and vol is no source here.  Another stream there means
 * this node's promoted state is older than target/<vol>: a failback made vol
 * a target of the primary's new stream since, received on another DR node;
 * finishing would lift the fence of a target that stream is shipping to and
 * demote its primary, without any check of that stream's state (review
 * revI): false, "promoted already".  The
 * process died between the two (or the CAS failed): the attach after the
 * restart fenced the volume by target/<vol>, which also let a DR node with
 * another state file of vol adopt it for the old stream (review revG).  A
 * promoted copy that is a source now (repl/<vol>: it ships back, perhaps
 * demoted) is not: false, as is a failed read.
 */
static bool promote_unrecorded(struct tsr_cluster *c, const char *vol, uint64_t state_stream)
{
	Tessera__Cluster__ReplicationRecord *r = NULL;
	uint64_t stream = target_stream(c, vol);

	if (stream == 0 || stream != state_stream)
		return false;
	if (repl_get(c, vol, &r, NULL) != -ENOENT) {
		if (r)
			tessera__cluster__replication_record__free_unpacked(r, NULL);
		return false;
	}
	return true;
}

/*
 * promote --group G at the target site: the site server ends every member's
 * session, checks they all sit at one marker (consistent), and promotes
 * each; then, as for one volume, the fences go and target/<vol> says
 * promoted.  The reply lists the members (their group_marker is that
 * marker).  A group failback (resync) is not built: one volume at a time.
 */
static void repl_promote_group(struct tsr_cluster *c, const Tessera__Admin__ReplicationPromote *p,
			       Tessera__Admin__Response *resp)
{
	struct tsr_site_target_info *infos = NULL;
	char msg[512], key[80];
	uint64_t marker = 0;
	unsigned finished = 0;
	bool found = false, already;
	size_t n, got;
	int ret;

	if (c->site_server == NULL) {
		admin_fail(resp, -EOPNOTSUPP, "node %s runs no site listener (tesserad "
			   "--site-listen): promote a group on the node that receives it",
			   c->node_id);
		return;
	}
	n = tsr_site_server_list(c->site_server, NULL, 0);
	infos = n ? calloc(n, sizeof(*infos)) : NULL;
	got = infos ? tsr_site_server_list(c->site_server, infos, n) : 0;
	if (n && infos == NULL) {
		admin_fail(resp, -ENOMEM, "out of memory in tesserad: nothing was promoted");
		return;
	}
	/* as for one volume: a member whose attach runs here is fenced by it */
	for (size_t i = 0; i < got && i < n; i++)
		if (strcmp(infos[i].group, p->group) == 0 &&
		    cluster_attach_running(c, infos[i].volume)) {
			admin_fail(resp, -EBUSY, "target %s (group %s) is being attached here (its "
				   "copies are being opened): retry the promote in a moment",
				   infos[i].volume, p->group);
			free(infos);
			return;
		}
	ret = tsr_site_server_promote_group(c->site_server, p->group, p->force, &marker, msg,
					    sizeof(msg));
	if (ret == 0)
		promote_test_crash(p->group);
	already = ret == -EALREADY;
	if (ret && !already) {
		admin_fail(resp, ret, "%s", msg);
		free(infos);
		return;
	}
	/* read again: a member whose state is of a target deleted since was
	 * left out (--force) and is not promoted: its volume stays fenced.
	 * Every member promoted already (-EALREADY): only those whose
	 * target/<vol> the promote did not mark (promote_unrecorded: it was
	 * killed after the server's state writes) are finished */
	got = tsr_site_server_list(c->site_server, infos, n);
	for (size_t i = 0; i < got && i < n; i++) {
		const char *vol = infos[i].volume;

		if (strcmp(infos[i].group, p->group) != 0 || !infos[i].promoted)
			continue;
		if (already && !promote_unrecorded(c, vol, infos[i].stream))
			continue;
		finished++;
		if (cluster_find_attachment(c, vol))
			fence_volume(c, vol, 0);
		snprintf(key, sizeof(key), "target/%s", vol);
		ret = tsr_meta_cas(c->meta, key, TSR_META_ANY_REV, "promoted", 8, 0, NULL);
		if (ret)
			tsr_warn("cluster: volume %s: cannot mark %s promoted: %s (a later attach "
				 "fences it again)", vol, key, strerror(-ret));
	}
	free(infos);
	if (already) {
		if (finished == 0) {
			admin_fail(resp, -EALREADY, "%s", msg);
			return;
		}
		snprintf(msg, sizeof(msg), "group %s: promoted here already, but target/<vol> of "
			 "%u members was not marked promoted (a crash of the promote, or its write "
			 "failed): the promote is finished", p->group, finished);
	}
	tsr_warn("cluster: %s: they take host writes here; their source site is demoted when "
		 "it connects again", msg);
	if (targets_add(c, NULL, p->group, resp, &found))
		admin_fail(resp, -ENOMEM, "out of memory in tesserad (%s)", msg);
}

static void repl_promote(struct tsr_cluster *c, const Tessera__Admin__Request *req,
			 Tessera__Admin__Response *resp)
{
	const Tessera__Admin__ReplicationPromote *p = req->replication_promote;
	struct tsr_site_target_info info;
	char key[80], holder[64];
	uint64_t now;
	bool found = false;
	int ret;

	if (p->volume[0] == '\0') {
		repl_promote_group(c, p, resp);
		return;
	}
	/* a target attached on another node is received there: promote there */
	if (target_stream(c, p->volume) &&
	    cluster_get_attach(c, p->volume, holder, sizeof(holder), NULL, NULL) == 0 &&
	    strcmp(holder, c->node_id) != 0) {
		repl_forward(c, holder, req, resp);
		return;
	}
	/* its layout opens in a thread and attach_apply fences it -EROFS: a
	 * promote now would find nothing to unfence and be undone by that */
	if (cluster_attach_running(c, p->volume)) {
		admin_fail(resp, -EBUSY, "target %s is being attached here (its copies are being "
			   "opened): retry the promote in a moment", p->volume);
		return;
	}
	if (c->site_server == NULL) {
		admin_fail(resp, -EOPNOTSUPP, "node %s runs no site listener (tesserad "
			   "--site-listen): promote on the node that receives the volume", c->node_id);
		return;
	}
	ret = tsr_site_server_promote(c->site_server, p->volume, p->force);
	switch (ret) {
	case 0:
		promote_test_crash(p->volume);
		break;
	case -ENOENT:
		admin_fail(resp, ret, "volume '%s' is not a replication target on node %s "
			   "(tessera replication status)", p->volume, c->node_id);
		return;
	case -EBUSY:
		admin_fail(resp, ret, "volume '%s' is not consistent (a sync from the source was "
			   "open): promote with --force to take it as the sync left it", p->volume);
		return;
	case -EIDRM:
		admin_fail(resp, ret, "volume '%s' is not the target its replication state on node "
			   "%s describes: that target was deleted since, and '%s' is another volume "
			   "now, or none; nothing was promoted.  If its source still ships it, the "
			   "next connection copies it whole into the volume of that name here "
			   "(tessera replication status shows when it is consistent)", p->volume,
			   c->node_id, p->volume);
		return;
	case -EALREADY:
		/* a crash between the state write and failback_done: finish it */
		if (failback_done(c, p->volume, resp)) {
			if (cluster_find_attachment(c, p->volume))
				fence_volume(c, p->volume, 0);
			return;
		}
		/* a crash (or a failed CAS) between the state write and
		 * target/<vol> "promoted" below: finish it */
		if (server_state_of(c, p->volume, &info) &&
		    promote_unrecorded(c, p->volume, info.stream)) {
			tsr_warn("cluster: volume %s was promoted here but target/%s was not "
				 "marked promoted (a crash of the promote, or its write failed): "
				 "finishing the promote", p->volume, p->volume);
			break;
		}
		now = target_stream(c, p->volume);
		if (now && server_state_of(c, p->volume, &info) && now != info.stream) {
			admin_fail(resp, ret, "volume '%s': its replication state on node %s says "
				   "promoted (stream %016llx from site %s), but it receives stream "
				   "%016llx now (target/%s, since a failback): that state is older; "
				   "promote it where it is received (tessera replication status %s)",
				   p->volume, c->node_id, (unsigned long long)info.stream,
				   info.source_site, (unsigned long long)now, p->volume, p->volume);
			return;
		}
		admin_fail(resp, ret, "volume '%s' is promoted already", p->volume);
		return;
	case -EUCLEAN:
		admin_fail(resp, ret, "volume '%s': its replication state file at this node is "
			   "damaged (see tesserad's log); nothing was promoted", p->volume);
		return;
	default:
		admin_fail(resp, ret, "cannot promote '%s': %s", p->volume, strerror(-ret));
		return;
	}
	/* the server lifts the fence of the handle it holds while a session
	 * streams; with none (the handle is put when a session ends) the volume
	 * may be attached here fenced by target/<vol> or its last session: lift it */
	if (cluster_find_attachment(c, p->volume))
		fence_volume(c, p->volume, 0);
	if (failback_done(c, p->volume, resp))
		return;
	tsr_warn("cluster: volume %s promoted%s: it takes host writes here; its source site is "
		 "demoted when it connects again", p->volume, p->force ? " (forced)" : "");
	snprintf(key, sizeof(key), "target/%s", p->volume);
	ret = tsr_meta_cas(c->meta, key, TSR_META_ANY_REV, "promoted", 8, 0, NULL);
	if (ret)
		tsr_warn("cluster: volume %s: cannot mark %s promoted: %s (a later attach fences "
			 "it again)", p->volume, key, strerror(-ret));
	if (targets_add(c, p->volume, NULL, resp, &found))
		admin_fail(resp, -ENOMEM, "out of memory in tesserad (volume %s was promoted)",
			   p->volume);
}

bool repl_admin_handle(struct tsr_cluster *c, const Tessera__Admin__Request *req,
		       Tessera__Admin__Response *resp)
{
	switch (req->command_case) {
	case TESSERA__ADMIN__REQUEST__COMMAND_SITE_ADD:
		site_add(c, req->site_add, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_SITE_REMOVE:
		site_remove(c, req->site_remove->name, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_SITE_LIST:
		site_list(c, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_ENABLE:
		repl_enable(c, req, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_DISABLE:
		repl_disable(c, req, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_STATUS:
		repl_status(c, req->replication_status, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_PROMOTE:
		repl_promote(c, req, resp);
		return true;
	case TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_RESYNC:
		repl_resync(c, req->replication_resync, resp);
		return true;
	default:
		return false;
	}
}

/* ---- the site server's open_volume ------------------------------------------ */

/*
 * The source of target volume name grew (detached, or online: its resize
 * reopens the stream announcing the new size, tsr_site_source_grow_async):
 * grow the target through this cluster's own resize (every copy's node asked
 * first, the copies, vol/<name>, and the layout when the target is attached
 * here), before the stream is accepted.  The resize runs on this loop with
 * asynchronous node calls (cluster_volume_resize_async): until it answers,
 * each VOLUME_OPEN is refused -EINPROGRESS ("growing: retry"), which the
 * source retries 100 ms apart within its grow's time (a detached source at
 * its retry_ms); its answer is then the next VOLUME_OPEN's of that size:
 * accepted (the record has the size), or its refusal (kept
 * TARGET_GROW_KEEP_MS, given once), which the source shows (an online resize
 * there is refused with it; the record may have the size while the layout
 * did not grow, so site_open_volume asks here first).  A resize
 * that needs no other node answers at once, inside this call.  A crash in
 * between: copies larger than the record (harmless) or the record grown (the
 * next VOLUME_OPEN finds it large enough, the attach uses the record's size):
 * cluster_volume_resize.
 */
#define TARGET_GROW_KEEP_MS 10000

static struct target_grow *target_grow_find(struct tsr_cluster *c, const char *name)
{
	for (struct target_grow *t = c->target_grows; t; t = t->next)
		if (strcmp(t->volume, name) == 0)
			return t;
	return NULL;
}

static void target_grow_free(struct tsr_cluster *c, struct target_grow *t)
{
	for (struct target_grow **pp = &c->target_grows; *pp; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	free(t);
}

/*
 * why (TSR_SITE_ERRMSG_MAX + 1 bytes: the ERROR frame's message, all the
 * source shows) = head + msg.  The resize's message ends with its advice,
 * "(...)" (volume.c: "(retry the same resize; until then ...)", "(delete
 * volumes or snapshots, ...)"): when the whole does not fit, the middle of msg
 * is cut ("...") and that advice is kept whole (georesize3).
 */
static void target_why(char *why, size_t why_len, const char *head, const char *msg)
{
	size_t hl = strlen(head), ml = strlen(msg), room, tl = 0;
	const char *tail = "";

	if (hl >= why_len) /* not with the names' limits */
		hl = why_len - 1;
	memcpy(why, head, hl);
	if (hl + ml < why_len) {
		memcpy(why + hl, msg, ml + 1);
		return;
	}
	if (ml && msg[ml - 1] == ')') {
		const char *p = strrchr(msg, '(');

		if (p && p > msg && p[-1] == ' ') {
			tail = p - 1;
			tl = strlen(tail);
		}
	}
	if (hl + tl + 3 >= why_len) { /* no room for the advice: the end is cut */
		tail = "";
		tl = 0;
	}
	if (hl + tl + 3 >= why_len) { /* nor for "..." */
		why[hl] = '\0';
		return;
	}
	room = why_len - 1 - hl - tl - 3;
	memcpy(why + hl, msg, room);
	memcpy(why + hl + room, "...", 3);
	memcpy(why + hl + room + 3, tail, tl + 1);
}

/* The resize's answer: log it, keep a refusal for the next VOLUME_OPEN. */
static void target_grow_answer(struct target_grow *t, const Tessera__Admin__Response *resp)
{
	struct tsr_cluster *c = t->c;
	char a[32], b[32], head[128];

	t->running = false;
	t->ended_ms = tsr_mono_ms();
	t->status = resp->error;
	if (t->status) {
		const char *m = resp->message ? resp->message : strerror(-t->status);

		/* the source shows at most TSR_SITE_ERRMSG_MAX bytes: the resize's
		 * message names the volume, the sizes and the node where it matters
		 * ("'sv' is recorded at 16.0 MiB ..., but its coordinator on dr-n1
		 * did not grow: ... (retry the same resize; ...)"), so the head is
		 * the site alone; our log has the whole */
		snprintf(head, sizeof(head), "site %s: ", c->repl_site);
		target_why(t->why, sizeof(t->why), head, m);
		tsr_warn("site: node %s: target %s cannot grow from %s to %s: %s (stream from %s "
			 "refused)", c->node_id, t->volume, tsr_format_size(t->have, a, sizeof(a)),
			 tsr_format_size(t->size, b, sizeof(b)), m, t->from);
	} else {
		tsr_info("site: target volume %s grown from %llu to %llu bytes: its source at "
			 "%s grew", t->volume, (unsigned long long)t->have,
			 (unsigned long long)t->size, t->from);
	}
}

static void target_grow_done(void *arg, const Tessera__Admin__Response *resp)
{
	struct target_grow *t = arg;

	target_grow_answer(t, resp);
	if (t->status == 0)
		target_grow_free(t->c, t);
}

static int target_grow(struct tsr_cluster *c, const struct tsr_site_hello *from,
		       const char *name, uint64_t have, uint64_t lsize, uint64_t size, char *why,
		       size_t why_len)
{
	Tessera__Admin__Response resp = TESSERA__ADMIN__RESPONSE__INIT;
	struct target_grow *t = target_grow_find(c, name);
	uint64_t want = size > have ? size : have; /* the record's size, or the source's */
	char b[32];
	int ret;

	if (t && t->running) {
		snprintf(why, why_len, "site %s: target %s is growing to %s for its source: retry",
			 c->repl_site, name, tsr_format_size(t->size, b, sizeof(b)));
		return -EINPROGRESS;
	}
	if (t && t->size == want && tsr_mono_ms() - t->ended_ms < TARGET_GROW_KEEP_MS) {
		/* the last grow's refusal, once */
		ret = t->status;
		snprintf(why, why_len, "%s", t->why);
		target_grow_free(c, t);
		tsr_warn("site: %s (stream from %s/%s refused)", why, from->site, from->cluster);
		return ret;
	}
	if (t)
		target_grow_free(c, t);
	if (have >= size && lsize >= want)
		return 0;
	t = calloc(1, sizeof(*t));
	if (t == NULL) {
		snprintf(why, why_len, "site %s: target %s cannot grow: out of memory",
			 c->repl_site, name);
		return -ENOMEM;
	}
	t->c = c;
	snprintf(t->volume, sizeof(t->volume), "%s", name);
	snprintf(t->from, sizeof(t->from), "%s/%s", from->site, from->cluster);
	t->have = lsize < have ? lsize : have;
	t->size = want;
	t->running = true;
	t->next = c->target_grows;
	c->target_grows = t;
	/* the record has want already (a step (e) that failed): the resize runs
	 * (e) alone (resize_begin) */
	if (have >= want)
		tsr_info("site: target volume %s is recorded at %llu bytes but its layout has "
			 "%llu: growing the layout before the stream from %s is accepted", name,
			 (unsigned long long)have, (unsigned long long)lsize, t->from);
	if (cluster_volume_resize_async(c, name, want, target_grow_done, t, &resp) == 0) {
		snprintf(why, why_len, "site %s: target %s is growing to %s for its source: retry",
			 c->repl_site, name, tsr_format_size(want, b, sizeof(b)));
		return -EINPROGRESS;
	}
	target_grow_answer(t, &resp); /* it needed no other node */
	admin_response_free_built(&resp);
	ret = t->status;
	snprintf(why, why_len, "%s", t->why);
	target_grow_free(c, t);
	return ret;
}

/*
 * The first VOLUME_OPEN of a volume this cluster does not have creates it.
 * cluster_volume_create (volume.c) calls the other nodes blocking, up to
 * CLUSTER_COPY_TIMEOUT_MS each when one is frozen, and the site server's
 * open_volume runs on the main loop: target_create makes the same volume
 * with the node calls asynchronous (admin_async_call), on this loop:
 *  (0) tcreate/<vol> taken, create-only, on this node's lease (tc_lock): held
 *      by another live create of the volume, nothing is done and the answer
 *      is "being created: retry" as for a lost claim below; a create that
 *      finds it free meets only a dead create's leftovers; it goes when the
 *      create ends (recorded, or its undo done), or with the lease;
 *  (1) target/<vol> claimed for the stream, before any copy, by
 *      compare-and-set at the revision read (absent: create-only); a create
 *      whose claim loses that compare (another create of the volume wrote
 *      it since the read: another DR node the source reached) does nothing
 *      and answers "being created: retry" (tc_claim), and so does every
 *      VOLUME_OPEN of it for TARGET_CREATE_KEEP_MS (lost_claim): the record
 *      of the create that won is attached meanwhile (site_open_volume reads
 *      vol/<vol> first), else a create begins here again, resumed;
 *  (2) placement over the view, as the admin create with the layout the
 *      VOLUME_OPEN names (failure domain node, the default stripe unit and
 *      min-replicas, the default region size);
 *  (3) each copy in placement order: ours through the store, another node's
 *      by VolumeCreate local_copy;
 *  (4) vol/<vol> by compare-and-set from revision 0 (never two records).
 * Until it answers, a VOLUME_OPEN of that volume is refused -EINPROGRESS
 * ("being created: retry"), which the source retries every retry_ms (its
 * session_fail); a second VOLUME_OPEN starts no second create; one of
 * another stream is refused -EEXIST.  Success drops the entry: the next
 * VOLUME_OPEN finds the record and attaches.  A failure deletes the copies
 * made (by uuid) and the claim, then its refusal is kept
 * TARGET_CREATE_KEEP_MS and given once, with its reason (the copy's node,
 * the transport's error).  A create needing no other node (every copy here)
 * answers inside the call and the same VOLUME_OPEN goes on to the attach.
 * Crash of this node between (1) and (4): target/<vol> names the stream,
 * vol/<vol> is absent, copies may exist.  The next VOLUME_OPEN of that
 * stream creates again ("resumed"): a copy it meets (EEXIST) is deleted by
 * its uuid and made again; no record ever listed it, so it was never
 * attached and holds nothing written.  That vol/<vol> is read again just
 * before each such delete (tc_leftover): a record found means another
 * create of the stream finished meanwhile, and this one fails -EEXIST
 * without deleting the copy met nor any on a node the record lists; the
 * copies it made itself in this run on the nodes the record does not list
 * are deleted by uuid (tc_keep_listed; so too when the record's CAS finds
 * one, tc_record).  The placement input and the record
 * are cluster_volume_create's (cluster_place_input, cluster_fresh_record).
 */
#define TARGET_CREATE_KEEP_MS 10000

/* How long a create whose claim lost (lost_claim) answers "being created:
 * retry" before a create here begins again: TARGET_CREATE_KEEP_MS; tests
 * only: $TSR_TEST_TC_LOST_CLAIM_MS (100..TARGET_CREATE_KEEP_MS). */
static int64_t tc_lost_claim_ms(void)
{
	const char *e = getenv("TSR_TEST_TC_LOST_CLAIM_MS");
	long ms = e ? strtol(e, NULL, 10) : 0;

	return ms >= 100 && ms < TARGET_CREATE_KEEP_MS ? ms : TARGET_CREATE_KEEP_MS;
}

enum tc_call { TC_CREATE, TC_LEFTOVER, TC_UNDO };

struct target_create {
	struct tsr_cluster *c;
	char volume[64];
	char layout[TSR_SITE_LAYOUT_MAX + 1]; /* as VOLUME_OPEN named it */
	char from[160];                /* the source's site/cluster, for the log */
	uint64_t stream, size, copy_size;
	unsigned k, m, n_copies, min_in_sync;
	uint32_t unit;                 /* ec only */
	struct {
		char id[64], address[128];
		char uuid[37];         /* made: its uuid; a leftover met: the one to delete */
		bool keep;             /* made, on a node that a record written meanwhile
					* lists: the copy of that name there is the
					* record's, never deleted (tc_keep_listed) */
	} node[TSR_PLACE_MAX];         /* placement order */
	unsigned made;                 /* copies [0, made) exist */
	unsigned undo;                 /* undoing: copies [0, undo) still to delete */
	bool resumed;                  /* target/<vol> named this stream before: copies met
					* are a crashed create's leftovers */
	bool redo;                     /* node[made] met a leftover, deleted: made again once */
	bool undoing, stopping;
	bool unsure;                   /* a create call lost: that copy may exist (kept claim) */
	bool other_record;             /* failed because vol/<vol> is someone else's record */
	bool lost_claim;               /* its claim lost to another create (tc_claim
					* -ECANCELED), nothing done: each VOLUME_OPEN is
					* answered "being created: retry" until the entry
					* goes, tc_lost_claim_ms() after (running false) */
	char msg[1024];                /* failed: what failed (tc_fail), for why */
	char undo_left[256];           /* "node: cause, ..." of the copies the undo could
					* not delete (told in why once it ended) */
	uint64_t claim_rev;            /* target/<vol> as we wrote it (0: not written) */
	uint64_t lock_rev;             /* tcreate/<vol> as we wrote it, on our lease (0:
					* not held: none written, or no lease) */
	enum tc_call call_kind;
	struct admin_async *call;      /* in flight; NULL once its callback ran */
	bool running;                  /* not answered yet (copies, record or undo) */
	int status;                    /* the answer (running == false: a refusal kept
					* for the next VOLUME_OPEN, ended_ms ago) */
	int64_t ended_ms;
	char why[TSR_SITE_ERRMSG_MAX + 1];
	struct target_create *next;    /* target_creates */
};

static struct target_create *target_creates; /* main thread */

static struct target_create *target_create_find(struct tsr_cluster *c, const char *name)
{
	for (struct target_create *t = target_creates; t; t = t->next)
		if (t->c == c && strcmp(t->volume, name) == 0)
			return t;
	return NULL;
}

/* A create of name runs on this node (copies, record or undo). */
static bool tc_running_here(struct tsr_cluster *c, const char *name)
{
	const struct target_create *t = target_create_find(c, name);

	return t && t->running;
}

static void target_create_free(struct target_create *t)
{
	for (struct target_create **pp = &target_creates; *pp; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	free(t);
}

static bool tc_local(const struct target_create *t, unsigned i)
{
	return strcmp(t->node[i].id, t->c->node_id) == 0;
}

static void tc_next(struct target_create *t);
static void tc_undo_next(struct target_create *t);

/* why = "site S: cannot create target V (L, Z): msg", and once the undo
 * ended, " (not deleted ...: undo_left)" when it could not delete a copy. */
static void tc_set_why(struct target_create *t)
{
	char head[256], sz[32], msg[sizeof(t->msg) + sizeof(t->undo_left) + 64];

	snprintf(head, sizeof(head), "site %s: cannot create target %s (%s, %s): ",
		 t->c->repl_site, t->volume, t->layout, tsr_format_size(t->size, sz, sizeof(sz)));
	snprintf(msg, sizeof(msg), "%s%s%s%s", t->msg, t->undo_left[0] ? " (not deleted, "
		 "left to the leftover sweep: " : "", t->undo_left, t->undo_left[0] ? ")" : "");
	target_why(t->why, sizeof(t->why), head, msg);
}

/* Copies made whose uuid the create never learnt (never deleted by name). */
static unsigned tc_made_without_uuid(const struct target_create *t)
{
	unsigned n = 0;

	for (unsigned i = 0; i < t->made; i++)
		n += t->node[i].uuid[0] == '\0';
	return n;
}

/* The create failed: why = "site S: cannot create target V (L, Z): msg";
 * the copies made are deleted (tc_undo_next), then it answers. */
static void tc_fail(struct target_create *t, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void tc_fail(struct target_create *t, int err, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->msg, sizeof(t->msg), fmt, ap);
	va_end(ap);
	/* ESTALE to VOLUME_OPEN says "promoted" (the source demotes itself):
	 * never the answer of a create */
	t->status = err < 0 && err != -ESTALE ? err : -EIO;
	tc_set_why(t);
	/* what this create leaves (the undo, tc_undo_next, logs what it
	 * cannot delete) */
	if (t->other_record)
		snprintf(what, sizeof(what), "vol/%s is someone else's record: it and the copies "
			 "it lists are kept", t->volume);
	else if (t->made)
		snprintf(what, sizeof(what), "the %u cop%s it made %s deleted%s", t->made,
			 t->made == 1 ? "y" : "ies", t->made == 1 ? "is" : "are",
			 tc_made_without_uuid(t) ? " (but a copy whose uuid it never learnt is "
			 "left)" : "");
	else
		snprintf(what, sizeof(what), "it made no copy");
	if (!t->other_record && t->unsure && t->made < t->n_copies)
		snprintf(what + strlen(what), sizeof(what) - strlen(what), "; one may be left over "
			 "on %s, which did not answer", t->node[t->made].id);
	tsr_warn("site: node %s: target volume %s (%s, from %s): %s; %s", t->c->node_id,
		 t->volume, t->layout, t->from, t->msg, what);
	t->undoing = true;
	t->undo = t->made;
	tc_undo_next(t);
}

/* The undo could not delete copy i (cause): told in why once it ended. */
static void tc_undo_left(struct target_create *t, unsigned i, const char *cause)
{
	size_t pos = strlen(t->undo_left);

	if (pos < sizeof(t->undo_left) - 1)
		snprintf(t->undo_left + pos, sizeof(t->undo_left) - pos, "%s%s: %s",
			 pos ? ", " : "", t->node[i].id, cause);
}

static void tc_call_done(void *arg, int status, Tessera__Admin__Response *r);

/* Send the local_copy VolumeCreate or VolumeDelete of copy i; its answer
 * comes to tc_call_done.  0, or the call's -errno (no callback). */
static int tc_call(struct target_create *t, unsigned i, enum tc_call kind)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeCreate vc = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	Tessera__Admin__VolumeDelete vd = TESSERA__ADMIN__VOLUME_DELETE__INIT;
	char ec[16] = "";

	if (kind == TC_CREATE) {
		if (t->k)
			snprintf(ec, sizeof(ec), "%u+%u", t->k, t->m);
		vc.name = t->volume;
		vc.size = t->copy_size;
		vc.local_copy = true;
		vc.ec = ec;
		vc.stripe_unit = t->unit;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
		req.volume_create = &vc;
	} else {
		vd.name = t->volume;
		vd.local_copy = true;
		vd.uuid = t->node[i].uuid;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE;
		req.volume_delete = &vd;
	}
	t->call_kind = kind;
	/* a delete (a leftover's, the undo's) is a short call: the peer
	 * timeout, not the 30 s of a create, bounds how long a node that does
	 * not answer holds the refusal back */
	return admin_async_call(t->c->o.loop, t->node[i].address, t->c->token, &req,
				kind == TC_CREATE ? CLUSTER_COPY_TIMEOUT_MS :
				cluster_peer_call_ms(t->c), tc_call_done, t, &t->call);
}

/* Our own copy i: made (0, uuid kept), or -errno with msg (-EEXIST: the
 * uuid of the copy met). */
static int tc_local_create(struct target_create *t, unsigned i, char *msg, size_t msg_len)
{
	struct tsr_vol_info info;
	int ret;

	ret = tsr_store_vol_create_flags(
	    t->c->o.store, t->volume, t->copy_size, t->k ? TSR_VOL_EC_CHUNK : 0,
	    t->k ? (t->unit ? t->unit : TSR_EC_DEFAULT_UNIT) : 0, &info);
	if (ret == -EEXIST && tsr_store_vol_info(t->c->o.store, t->volume, &info) != 0)
		info.uuid[0] = '\0';
	if (ret == 0 || ret == -EEXIST)
		snprintf(t->node[i].uuid, sizeof(t->node[i].uuid), "%s", info.uuid);
	if (ret)
		snprintf(msg, msg_len, "cannot create the copy of '%s' on %s (this node): %s%s",
			 t->volume, t->node[i].id, strerror(-ret), ret == -EEXIST ?
			 " (a store copy of that name is there: if no record lists it, it is left "
			 "over and goes by the leftover sweep (--leftover-grace), or delete it with "
			 "local_copy)" : "");
	return ret;
}

/* Our own copy i deleted by its uuid: 0 or -errno with msg. */
static int tc_local_delete(struct target_create *t, unsigned i, char *msg, size_t msg_len)
{
	Tessera__Cluster__NodeRecord node = TESSERA__CLUSTER__NODE_RECORD__INIT;

	node.id = t->node[i].id;
	node.address = t->node[i].address;
	return cluster_copy_delete_uuid(t->c, &node, t->volume, t->node[i].uuid, msg, msg_len);
}

/*
 * vol/<vol> was recorded by another create while this one ran (rec, read
 * again after it): of the copies this create made in this run, [0, made),
 * the one on a node rec lists is kept (a store holds one copy per name, so
 * the copy there is the record's: had ours been there first, the other
 * create met it and replaced it by uuid, or failed), the others, on nodes
 * rec does not list, are nobody's:
 * tc_fail's undo deletes them by their uuid (tc_undo_next: ours at once,
 * another node's by an async call bounded like the create's), instead of
 * leaving them to the leftover sweep (--leftover-grace, 900 s).  A copy
 * whose uuid we do not have is kept (a delete by name is not ours to send).
 * gone names the ones deleted, for the refusal.
 */
static void tc_keep_listed(struct target_create *t, const Tessera__Cluster__VolumeRecord *rec,
			   char *gone, size_t gone_len)
{
	size_t pos = 0;

	gone[0] = '\0';
	for (unsigned j = 0; j < t->made; j++) {
		bool keep = t->node[j].uuid[0] == '\0';

		for (size_t k = 0; k < rec->n_copies && !keep; k++)
			keep = rec->copies[k]->node_id &&
			       strcmp(rec->copies[k]->node_id, t->node[j].id) == 0;
		t->node[j].keep = keep;
		if (!keep && pos < gone_len)
			pos += (size_t)snprintf(gone + pos, gone_len - pos, "%s%s (uuid %s)",
						pos ? ", " : "", t->node[j].id, t->node[j].uuid);
	}
}

/*
 * vol/<vol> was recorded by someone else while a resumed create ran:
 * target/<vol> named this stream before it began (a crashed create's claim,
 * or the claim of the other create of this stream, which this one only
 * wrote again), and the record's attach needs it (site_open_volume: a
 * volume that target/<vol> does not name for the stream is refused).  So
 * the undo leaves it as it was found; a create that was not resumed wrote
 * the claim itself and deletes it, as before.
 */
static void tc_keep_claim(struct target_create *t)
{
	if (!t->resumed || t->claim_rev == 0)
		return;
	t->claim_rev = 0;
	tsr_info("site: target volume %s: target/%s kept for stream %016llx (it named the "
		 "stream before this create, and vol/%s is recorded now)", t->volume, t->volume,
		 (unsigned long long)t->stream, t->volume);
}

/*
 * Test hook: when the file $TSR_TEST_TC_RECORD_FIRST_FILE exists, a resumed
 * mirror create that met a leftover on node i after making a copy of its
 * own writes vol/<vol> listing node i alone (replicas 1) just before its
 * re-read, as a second create of the same stream that recorded first would
 * (test-site-create-dr-race); the file is removed: once.
 */
static void tc_test_record_first(struct target_create *t, unsigned i)
{
	const char *f = getenv("TSR_TEST_TC_RECORD_FIRST_FILE");
	struct cluster_fresh_record fresh;
	const char *node_ids[1] = { t->node[i].id };
	char key[80];
	int ret;

	if (f == NULL || t->k || t->made == 0 || access(f, F_OK) != 0 || unlink(f) != 0)
		return;
	cluster_fresh_record(&fresh, t->volume, t->size, 1, 1, TSR_FD_NODE, 0, 0, 0, 0,
			     node_ids);
	fresh.rec.target_stream = t->stream;
	snprintf(key, sizeof(key), "vol/%s", t->volume);
	ret = rec_put(t->c->meta, key, &fresh.rec.base, 0, 0, NULL);
	tsr_info("site: target volume %s: test hook (%s): vol/%s written listing %s alone: %s",
		 t->volume, f, t->volume, t->node[i].id, ret ? strerror(-ret) : "ok");
}

/*
 * A copy met where this create puts one: a crashed create's leftover
 * (resumed, once per copy) is deleted before the copy is made again: 1.
 * 0: not a leftover (the caller fails the create with the EEXIST).  -1: the
 * create failed here (tc_fail ran): vol/<vol> exists now, or cannot be read.
 * "Resumed" only says that target/<vol> named this stream when the create
 * started; another create of the same stream (a second DR node the source
 * reached, through an address that moved) may have recorded the volume
 * since, the copy met being one its record lists.  A delete by uuid skips
 * the record check (copy_delete_check) and only an open copy is refused,
 * so vol/<vol> is read again first: present, nothing met is deleted.
 * (A record written between this read and the delete is not seen: the
 * window is one call to the node.)
 */
static int tc_lock_still(struct target_create *t, const char *not_done, char *msg,
			 size_t msg_len);
static void tc_test_takeover(struct target_create *t);

static int tc_leftover(struct target_create *t, unsigned i)
{
	Tessera__Cluster__VolumeRecord *rec = NULL;
	char gone[512], not_done[160], msg[512];
	bool listed = false;
	int ret;

	if (!t->resumed || t->redo || t->node[i].uuid[0] == '\0')
		return 0;
	tc_test_record_first(t, i);
	ret = rec_volume_get(t->c->meta, t->volume, &rec, NULL);
	if (ret == 0) {
		for (size_t j = 0; j < rec->n_copies && !listed; j++)
			listed = rec->copies[j]->node_id &&
				 strcmp(rec->copies[j]->node_id, t->node[i].id) == 0;
		/* as tc_record's ECANCELED: the copies of that name on the nodes
		 * the record lists are its own, the met one is not deleted; ours
		 * on the others are */
		tc_keep_listed(t, rec, gone, sizeof(gone));
		tessera__cluster__volume_record__free_unpacked(rec, NULL);
		tc_keep_claim(t);
		t->other_record = true;
		tc_fail(t, -EEXIST, "volume '%s' was recorded meanwhile (another create of this "
			"stream?): the copy met on %s (uuid %s%s) is not deleted%s%s%s", t->volume,
			t->node[i].id, t->node[i].uuid, listed ? ", a copy the record lists" : "",
			gone[0] ? "; to be deleted: its own copy on " : "", gone,
			gone[0] ? ", which the record does not list" : "");
		return -1;
	}
	if (ret != -ENOENT) {
		tc_fail(t, ret, "cannot read vol/%s to check that the copy met on %s (uuid %s) is "
			"left over: %s; not deleted", t->volume, t->node[i].id, t->node[i].uuid,
			strerror(-ret));
		return -1;
	}
	/* "left over" holds while no other create of the volume lives: one
	 * that took the lock while this node was frozen past its lease may be
	 * making that very copy (tc_record's check, earlier) */
	tc_test_takeover(t);
	snprintf(not_done, sizeof(not_done), "the copy met on %s (uuid %s) is not deleted",
		 t->node[i].id, t->node[i].uuid);
	ret = tc_lock_still(t, not_done, msg, sizeof(msg));
	if (ret) {
		t->claim_rev = 0; /* the stream's, as in tc_record */
		tc_fail(t, ret == -ECANCELED ? -EAGAIN : ret, "%s", msg);
		return -1;
	}
	tsr_warn("site: target volume %s: the copy on %s (uuid %s) is left over by a create "
		 "of stream %016llx that did not finish: deleted, made again", t->volume,
		 t->node[i].id, t->node[i].uuid, (unsigned long long)t->stream);
	t->redo = true;
	return 1;
}

/* The test hooks' file $TSR_TEST_TC_CLAIM_RACE_FILE (a mirror create's
 * only), its first line in mode; NULL: none. */
static const char *tc_test_hook_mode(const struct target_create *t, char *mode, size_t len)
{
	const char *f = getenv("TSR_TEST_TC_CLAIM_RACE_FILE");
	FILE *fp;

	if (f == NULL || t->k || (fp = fopen(f, "r")) == NULL)
		return NULL;
	if (fgets(mode, (int)len, fp) == NULL)
		mode[0] = '\0';
	fclose(fp);
	return f;
}

/*
 * Test hook: when the file $TSR_TEST_TC_CLAIM_RACE_FILE exists, a mirror
 * create, between its read of target/<vol> and its claim, does what another
 * create of the same stream (on another DR node: the source reached both)
 * that read target/<vol> just as early and finished meanwhile would have
 * done: target/<vol> written naming the stream, the copy made here, vol/<vol>
 * recorded listing this node alone (replicas 1) (test-site-create-dr-claim);
 * a file that reads "claim" stops after target/<vol> (the other create has
 * not recorded yet), and "claimleak" does so and forgets this create's
 * lock (lock_rev), as if tc_unlock's delete failed: tcreate/<vol> stays on
 * this node's lease with no create of the volume running, and "claimcopy"
 * also makes the copy here (what a create that died after its first copy
 * left: repl_claim_release deletes it); one that reads "operator" records vol/<vol> without
 * the stream, as an operator's `volume create` that checked the name just
 * before the claim and recorded just after it.  One that reads "live" acts
 * earlier (early: before the create's lock, tc_lock): target/<vol> naming
 * the stream, the copy here and tcreate/<vol> "dr-other pid 1" on a lease
 * of its own of 1500 ms never renewed: a live create of the stream on
 * another node, not recorded yet, that dies 1.5 s later.  One that reads
 * "leak" (early too) writes only tcreate/<vol> as tc_lock does, on this
 * node's lease: the lock an earlier create here left when its tc_unlock's
 * delete (or tc_lock_still's read) failed.  The file is removed: once.
 */
static void tc_test_claim_race(struct target_create *t, bool early)
{
	char mode[16];
	const char *f = tc_test_hook_mode(t, mode, sizeof(mode));
	struct cluster_fresh_record fresh;
	const char *node_ids[1] = { t->c->node_id };
	struct tsr_vol_info info;
	char key[80], text[20];
	bool claim_only, by_operator, live, leak, lock_left, copy_left;
	uint64_t lease;
	int ret;

	if (f == NULL)
		return;
	claim_only = strncmp(mode, "claim", 5) == 0;
	lock_left = strncmp(mode, "claimleak", 9) == 0;
	copy_left = strncmp(mode, "claimcopy", 9) == 0;
	by_operator = strncmp(mode, "operator", 8) == 0;
	live = strncmp(mode, "live", 4) == 0;
	leak = strncmp(mode, "leak", 4) == 0;
	if (strncmp(mode, "takeover", 8) == 0) {
		if (!early)
			return;
		/* a dead create's claim and copy; the file stays for
		 * tc_test_takeover */
		snprintf(key, sizeof(key), "target/%s", t->volume);
		snprintf(text, sizeof(text), "%016llx", (unsigned long long)t->stream);
		ret = tsr_meta_cas(t->c->meta, key, TSR_META_ANY_REV, text, 16, 0, NULL);
		if (ret == 0)
			ret = tsr_store_vol_create_flags(t->c->o.store, t->volume, t->size, 0, 0,
							 &info);
		tsr_info("site: target volume %s: test hook (%s): target/%s and a copy here (uuid "
			 "%s) left by a dead create: %s", t->volume, f, t->volume,
			 ret ? "-" : info.uuid, ret ? strerror(-ret) : "ok");
		return;
	}
	if ((live || leak) != early || strncmp(mode, "lapse", 5) == 0 ||
	    strncmp(mode, "record", 6) == 0 || unlink(f) != 0)
		return; /* "lapse", "record": tc_test_at_record's */
	if (leak) {
		char lock[128];

		snprintf(key, sizeof(key), "tcreate/%s", t->volume);
		tc_lock_text(t->c, lock, sizeof(lock));
		ret = tsr_meta_cas(t->c->meta, key, 0, lock, strlen(lock), cluster_lease(t->c),
				   NULL);
		tsr_info("site: target volume %s: test hook (%s): %s \"%s\" left on this node's "
			 "lease: %s", t->volume, f, key, lock, ret ? strerror(-ret) : "ok");
		return;
	}
	snprintf(key, sizeof(key), "target/%s", t->volume);
	snprintf(text, sizeof(text), "%016llx", (unsigned long long)t->stream);
	ret = tsr_meta_cas(t->c->meta, key, TSR_META_ANY_REV, text, 16, 0, NULL);
	if (live) {
		if (ret == 0)
			ret = tsr_store_vol_create_flags(t->c->o.store, t->volume, t->size, 0, 0,
							 &info);
		if (ret == 0)
			ret = tsr_meta_lease_grant(t->c->meta, 1500, &lease);
		snprintf(key, sizeof(key), "tcreate/%s", t->volume);
		if (ret == 0)
			ret = tsr_meta_cas(t->c->meta, key, 0, "dr-other pid 1", 14, lease, NULL);
		tsr_info("site: target volume %s: test hook (%s): target/%s, a copy here (uuid %s) "
			 "and %s on a 1500 ms lease written by a live create on dr-other: %s",
			 t->volume, f, t->volume, ret ? "-" : info.uuid, key,
			 ret ? strerror(-ret) : "ok");
		return;
	}
	if (claim_only) {
		if (lock_left)
			t->lock_rev = 0;
		if (copy_left && ret == 0) /* and the copy a create that died left */
			ret = tsr_store_vol_create_flags(t->c->o.store, t->volume, t->size, 0, 0,
							 &info);
		tsr_info("site: target volume %s: test hook (%s): target/%s written by another "
			 "create%s: %s", t->volume, f, t->volume, lock_left ?
			 ", this create's lock forgotten" : copy_left ? ", with a copy here" : "",
			 ret ? strerror(-ret) : "ok");
		return;
	}
	if (ret == 0)
		ret = tsr_store_vol_create_flags(t->c->o.store, t->volume, t->size, 0, 0, &info);
	if (ret == 0) {
		cluster_fresh_record(&fresh, t->volume, t->size, 1, 1, TSR_FD_NODE, 0, 0, 0, 0,
				     node_ids);
		fresh.rec.target_stream = by_operator ? 0 : t->stream;
		snprintf(key, sizeof(key), "vol/%s", t->volume);
		ret = rec_put(t->c->meta, key, &fresh.rec.base, 0, 0, NULL);
	}
	tsr_info("site: target volume %s: test hook (%s): target/%s, a copy here and vol/%s "
		 "listing %s alone written by %s: %s", t->volume, f, t->volume, t->volume,
		 t->c->node_id, by_operator ? "an operator's volume create" : "another create",
		 ret ? strerror(-ret) : "ok");
}

/*
 * (0): tcreate/<vol> = "NODE pid PID", create-only, on this node's lease:
 * the mark of a live create.  target/<vol> names the stream both while a
 * create runs and after one died, so "resumed" (the claim names the stream)
 * could not tell a live create's fresh copies, not recorded yet, from a
 * dead one's leftovers, and a second create of the stream (one that read
 * the claim after the first wrote it, or one whose lost-claim wait ended
 * while a slow first still ran) replaced them.  Held: another create of the
 * volume lives (msg names its node): -ECANCELED, nothing done (the caller
 * waits as for a lost claim).  The lock goes with its holder's lease
 * (TSR_CLUSTER_LEASE_TTL_MS after a crash or freeze), so a create that
 * finds it free and the claim naming the stream meets only a dead one's
 * leftovers.  No lease (0): not taken.  0 or -errno with msg.
 * Held by this process (its text): no create of the volume runs here
 * (target_create keeps one entry per volume and comes here with none), so
 * it is an earlier create's whose delete failed (tc_unlock, a metadata
 * error): left on a live node's lease it would hold every create of the
 * volume back, and its claim's release (repl_claim_release), until this
 * node stops; it is deleted at its revision and taken again, unless a
 * claim's release of the volume waits for a node here (struct
 * claim_release, which wrote it: held).
 */
static int tc_lock(struct target_create *t, char *msg, size_t msg_len)
{
	uint64_t lease = cluster_lease(t->c);
	struct tsr_meta_kv kv = { 0 };
	char key[80], text[128], held[128];
	bool release = false;
	int ret;

	t->lock_rev = 0;
	if (lease == 0)
		return 0;
	snprintf(key, sizeof(key), "tcreate/%s", t->volume);
	tc_lock_text(t->c, text, sizeof(text));
	for (int tries = 0; tries < 2; tries++) {
		ret = tsr_meta_cas(t->c->meta, key, 0, text, strlen(text), lease, &t->lock_rev);
		if (ret == 0)
			return 0;
		t->lock_rev = 0;
		if (ret != -ECANCELED) {
			snprintf(msg, msg_len, "cannot record %s: %s", key, strerror(-ret));
			return ret;
		}
		release = false;
		if (tsr_meta_get(t->c->meta, key, &kv) != 0) {
			snprintf(held, sizeof(held), "gone since");
			break;
		}
		snprintf(held, sizeof(held), "%.*s",
			 (int)(kv.value_len < 100 ? kv.value_len : 100), (const char *)kv.value);
		release = tc_lock_is_release(&kv);
		/* this process's lock of a claim's release waiting for a node
		 * here (claim_lock, struct claim_release): held, not one an
		 * earlier release or create left (review s20-revK A) */
		if (tc_lock_is_mine(t->c, &kv) && claim_release_find(t->c, t->volume)) {
			tsr_meta_kv_clear(&kv);
			snprintf(msg, msg_len,
				 "%s is held by a volume delete of it here, which "
				 "releases its claim and deletes the copies a create of it left",
				 key);
			return -ECANCELED;
		}
		if (tries > 0 || !tc_lock_is_mine(t->c, &kv)) {
			tsr_meta_kv_clear(&kv);
			break;
		}
		ret = tsr_meta_delete(t->c->meta, key, kv.mod_rev);
		tsr_warn("site: target volume %s: %s (%s) is this process's, left by an earlier "
			 "%s of it here (no %s of it runs here): deleted, taken again: %s",
			 t->volume, key, held, release ? "claim release" : "create",
			 release ? "release" : "create", ret ? strerror(-ret) : "ok");
		tsr_meta_kv_clear(&kv);
		if (ret && ret != -ECANCELED && ret != -ENOENT)
			break;
	}
	snprintf(msg, msg_len, "%s (%s: %s)", release ? "a claim release of it is running "
		 "(a volume delete of it on that node, deleting the copies a create of it left)" :
		 "another create of it is live", key, held);
	return -ECANCELED;
}

/* The lock is still ours (tc_record, before its write; tc_leftover, before
 * a delete): 0, or -errno with msg, ending with not_done (-ECANCELED: our
 * lease lapsed meanwhile, a frozen node, and another create may have taken
 * over the volume's copies). */
static int tc_lock_still(struct target_create *t, const char *not_done, char *msg,
			 size_t msg_len)
{
	struct tsr_meta_kv kv = { 0 };
	char key[80];
	int ret;

	if (t->lock_rev == 0)
		return 0;
	snprintf(key, sizeof(key), "tcreate/%s", t->volume);
	ret = tsr_meta_get(t->c->meta, key, &kv);
	if (ret == 0 && kv.mod_rev != t->lock_rev)
		ret = -ECANCELED;
	tsr_meta_kv_clear(&kv);
	if (ret == -ENOENT)
		ret = -ECANCELED;
	if (ret)
		snprintf(msg, msg_len, "%s is no longer this create's (%s: this node's lease "
			 "lapsed meanwhile, and another create of the stream may have replaced "
			 "its copies): %s", key, strerror(-ret), not_done);
	return ret;
}

/*
 * Test hook: when the file $TSR_TEST_TC_CLAIM_RACE_FILE reads "lapse", a
 * mirror create about to record (tc_record) forgets the uuids of the copies
 * it made, as if their nodes had answered as an earlier build (no uuid),
 * and deletes tcreate/<vol>, as if this node's lease had lapsed meanwhile:
 * the record is not written and the undo meets copies with no uuid
 * (test-site-create-dr-claim).  One that reads "record" writes vol/<vol>
 * there instead, listing this node, without the stream: an operator's
 * create recorded first (tc_record's -ECANCELED).  The file is removed: once.
 */
static void tc_test_at_record(struct target_create *t)
{
	char key[80], mode[16];
	const char *f = tc_test_hook_mode(t, mode, sizeof(mode));
	bool record = f && strncmp(mode, "record", 6) == 0;
	int ret;

	if (f == NULL || (strncmp(mode, "lapse", 5) != 0 && !record) || unlink(f) != 0)
		return;
	if (record) {
		struct cluster_fresh_record fresh;
		const char *node_ids[1] = { t->c->node_id };

		cluster_fresh_record(&fresh, t->volume, t->size, 1, 1, TSR_FD_NODE, 0, 0, 0, 0,
				     node_ids);
		snprintf(key, sizeof(key), "vol/%s", t->volume);
		ret = rec_put(t->c->meta, key, &fresh.rec.base, 0, 0, NULL);
		tsr_info("site: target volume %s: test hook (%s): %s listing %s written by an "
			 "operator's volume create: %s", t->volume, f, key, t->c->node_id,
			 ret ? strerror(-ret) : "ok");
		return;
	}
	for (unsigned i = 0; i < t->made; i++)
		t->node[i].uuid[0] = '\0';
	snprintf(key, sizeof(key), "tcreate/%s", t->volume);
	ret = tsr_meta_delete(t->c->meta, key, TSR_META_ANY_REV);
	tsr_info("site: target volume %s: test hook (%s): the uuids of its %u cop%s forgotten, "
		 "%s deleted: %s", t->volume, f, t->made, t->made == 1 ? "y" : "ies", key,
		 ret ? strerror(-ret) : "ok");
}

/*
 * Test hook: when the file $TSR_TEST_TC_CLAIM_RACE_FILE reads "takeover"
 * (tc_test_claim_race left a dead create's claim and copy), a resumed
 * mirror create about to delete the copy it met (tc_leftover) finds
 * tcreate/<vol> taken by "dr-other pid 2" on a lease of its own of 1500 ms:
 * this node was frozen past its lease and another create of the stream
 * took over (test-site-create-dr-claim).  The file is removed: once.
 */
static void tc_test_takeover(struct target_create *t)
{
	char key[80], mode[16];
	const char *f = tc_test_hook_mode(t, mode, sizeof(mode));
	uint64_t lease = 0;
	int ret;

	if (f == NULL || strncmp(mode, "takeover", 8) != 0 || unlink(f) != 0)
		return;
	snprintf(key, sizeof(key), "tcreate/%s", t->volume);
	ret = tsr_meta_delete(t->c->meta, key, TSR_META_ANY_REV);
	if (ret == 0)
		ret = tsr_meta_lease_grant(t->c->meta, 1500, &lease);
	if (ret == 0)
		ret = tsr_meta_cas(t->c->meta, key, 0, "dr-other pid 2", 14, lease, NULL);
	tsr_info("site: target volume %s: test hook (%s): %s taken by dr-other on a 1500 ms "
		 "lease: %s", t->volume, f, key, ret ? strerror(-ret) : "ok");
}

/* The create ended (recorded, or its undo done): the lock goes. */
static void tc_unlock(struct target_create *t)
{
	char key[80];
	int ret;

	if (t->lock_rev == 0)
		return;
	snprintf(key, sizeof(key), "tcreate/%s", t->volume);
	ret = tsr_meta_delete(t->c->meta, key, t->lock_rev);
	if (ret && ret != -ECANCELED && ret != -ENOENT) /* those two: lapsed */
		tsr_warn("site: target volume %s: cannot delete %s: %s (the next create of it "
			 "here takes it over)", t->volume, key, strerror(-ret));
	t->lock_rev = 0;
}

/*
 * (1): target/<vol> written naming the stream, at the revision read
 * (absent: create-only); t->resumed when it named the stream already,
 * t->claim_rev the revision written.  0; -ECANCELED: the key changed
 * between the read and the write (msg says so): another create of the
 * volume claimed it meanwhile, and nothing is written; other -errno: the
 * store failed (msg).
 * Two creates of the stream on two DR nodes may both read the key before
 * either writes it.  Written with no compare, the second write made its
 * revision the last one, and when the first create then recorded vol/<vol>
 * first, the second's undo (not resumed: it deletes the claim it wrote, at
 * its claim_rev) deleted the winner's claim: the recorded volume was
 * refused "no replication target" for good (review 17c D1).  Now only one
 * of the two writes succeeds, and the undo deletes a claim only at the
 * revision its own create wrote, which is the last one unless someone
 * wrote after it.
 */
static int tc_claim(struct target_create *t, char *msg, size_t msg_len)
{
	uint64_t stream, rev;
	char key[80], text[20];
	int ret;

	snprintf(key, sizeof(key), "target/%s", t->volume);
	ret = target_claim_get(t->c, t->volume, &stream, &rev, NULL);
	if (ret && ret != -ENOENT) {
		snprintf(msg, msg_len, "cannot read %s: %s", key, strerror(-ret));
		return ret;
	}
	t->resumed = ret == 0 && stream == t->stream;
	tc_test_claim_race(t, false);
	snprintf(text, sizeof(text), "%016llx", (unsigned long long)t->stream);
	ret = tsr_meta_cas(t->c->meta, key, rev, text, 16, 0, &t->claim_rev);
	if (ret == -ECANCELED)
		snprintf(msg, msg_len, "%s was written by another create of it since this one "
			 "read it (%s)", key, rev ? "at another revision" : "absent");
	else if (ret)
		snprintf(msg, msg_len, "cannot record %s: %s", key, strerror(-ret));
	if (ret)
		t->claim_rev = 0;
	return ret;
}

/* (4): the record; the answer. */
static void tc_record(struct target_create *t)
{
	struct cluster_fresh_record fresh;
	const char *node_ids[TSR_PLACE_MAX];
	char key[80], msg[512];
	int ret;

	for (unsigned i = 0; i < t->n_copies; i++)
		node_ids[i] = t->node[i].id;
	cluster_fresh_record(&fresh, t->volume, t->size, t->n_copies, t->min_in_sync, TSR_FD_NODE,
			     t->k, t->m, t->unit, 0, node_ids);
	fresh.rec.target_stream = t->stream; /* site_open_volume adopts it (target_adopt_refused) */
	tc_test_at_record(t);
	ret = tc_lock_still(t, "not recorded", msg, sizeof(msg));
	if (ret) {
		/* another create may have made its copies where ours were (ours
		 * go by uuid only: a replaced one answers ESTALE, left alone);
		 * the claim is the stream's, kept for it; the lock is deleted
		 * at its revision (tc_unlock), a no-op when it is not ours: a
		 * read that failed must not leave it on this live node's lease */
		t->claim_rev = 0;
		tc_fail(t, ret == -ECANCELED ? -EAGAIN : ret, "%s", msg);
		return;
	}
	snprintf(key, sizeof(key), "vol/%s", t->volume);
	ret = rec_put(t->c->meta, key, &fresh.rec.base, 0, 0, NULL);
	if (ret == -ECANCELED) {
		/* someone else's: the copies of that name on the nodes it lists
		 * are its own, so none of them is deleted; ours on the others are
		 * (tc_keep_listed); its record unreadable, none is */
		Tessera__Cluster__VolumeRecord *rec = NULL;
		char gone[512] = "";
		int gret = rec_volume_get(t->c->meta, t->volume, &rec, NULL);

		if (gret == 0) {
			tc_keep_listed(t, rec, gone, sizeof(gone));
			tessera__cluster__volume_record__free_unpacked(rec, NULL);
		} else {
			t->made = 0;
		}
		tc_keep_claim(t);
		t->other_record = true;
		tc_fail(t, -EEXIST, "volume '%s' was just created by someone else in this "
			"cluster%s%s%s", t->volume, gone[0] ? "; to be deleted: its own copy on " : "",
			gone,
			gone[0] ? ", which the record does not list" : gret ?
			" (its record unreadable: no copy deleted)" : "");
		return;
	}
	if (ret) {
		tc_fail(t, ret, "cannot record volume '%s' in the metadata store: %s", t->volume,
			strerror(-ret));
		return;
	}
	tsr_info("site: target volume %s created (%s) for %s stream %016llx", t->volume, t->layout,
		 t->from, (unsigned long long)t->stream);
	tc_unlock(t);
	t->status = 0;
	t->running = false;
	t->ended_ms = tsr_mono_ms();
}

/* (3) from copy t->made on: ours at once, another node's by an async call. */
static void tc_next(struct target_create *t)
{
	char msg[1024];
	int ret;

	while (t->made < t->n_copies) {
		unsigned i = t->made;

		if (!tc_local(t, i)) {
			ret = tc_call(t, i, TC_CREATE);
			if (ret == 0)
				return; /* tc_call_done goes on */
			tc_fail(t, ret, "cannot reach node %s at %s to create the copy of '%s': %s",
				t->node[i].id, t->node[i].address, t->volume, strerror(-ret));
			return;
		}
		ret = tc_local_create(t, i, msg, sizeof(msg));
		if (ret == -EEXIST) {
			int left = tc_leftover(t, i);

			if (left < 0)
				return; /* failed */
			if (left > 0) {
				ret = tc_local_delete(t, i, msg, sizeof(msg));
				if (ret == 0)
					continue; /* made again */
			}
		}
		if (ret) {
			tc_fail(t, ret, "%s", msg);
			return;
		}
		t->redo = false;
		t->made++;
	}
	tc_record(t);
}

/*
 * The undo's delete of copy i answered err (status: the call's own): our
 * copy is gone (0, -ENOENT; -ESTALE: the copy there is another one, so ours
 * was replaced: left alone, and no sweep is told of it, since a record
 * lists it or its own create deletes it), or it stays, unlisted, until the
 * leftover sweep (--leftover-grace) removes it.
 */
static void tc_undo_answer(struct target_create *t, unsigned i, int err, bool status,
			   const char *msg)
{
	if (err == 0 || err == -ENOENT)
		return;
	if (err == -ESTALE && !status) {
		tsr_info("site: undo create of target %s: %s (this create's copy there is gone)",
			 t->volume, msg);
		return;
	}
	tsr_warn("site: undo create of target %s: the copy on %s: %s (%s: unlisted, the leftover "
		 "sweep removes it)", t->volume, t->node[i].id, msg, status ? "it may be left" :
		 "left");
	tc_undo_left(t, i, status ? "no answer" : strerror(-err));
}

/* Undo: the copies made, last first, then the claim; then the refusal is
 * kept for the next VOLUME_OPEN. */
static void tc_undo_next(struct target_create *t)
{
	char msg[512], key[80];
	int ret;

	while (t->undo > 0) {
		unsigned i = --t->undo;

		if (t->node[i].keep)
			continue; /* the record's (tc_keep_listed) */
		if (t->node[i].uuid[0] == '\0') {
			/* its node answered the create without a uuid (an earlier
			 * build): a delete by name could remove a copy that is not
			 * ours (one a create of the name made since); left */
			tsr_warn("site: undo create of target %s: the copy on %s is left (its "
				 "create answered no uuid, and a delete by name could remove "
				 "another one): if no record lists it, the leftover sweep "
				 "removes it", t->volume, t->node[i].id);
			tc_undo_left(t, i, "no uuid known");
			continue;
		}
		if (!tc_local(t, i)) {
			ret = tc_call(t, i, TC_UNDO);
			if (ret == 0)
				return; /* tc_call_done goes on */
			snprintf(msg, sizeof(msg), "cannot reach node %s to delete it: %s",
				 t->node[i].id, strerror(-ret));
			tc_undo_answer(t, i, ret, true, msg);
			continue;
		}
		ret = tc_local_delete(t, i, msg, sizeof(msg));
		tc_undo_answer(t, i, ret, false, msg);
	}
	if (t->claim_rev && t->unsure) {
		/* a copy may exist that we did not hear of: the next create of
		 * this stream is "resumed" and replaces it */
		tsr_info("site: target volume %s: target/%s kept for stream %016llx (a copy may "
			 "be left over on a node that did not answer)", t->volume, t->volume,
			 (unsigned long long)t->stream);
	} else if (t->claim_rev) {
		snprintf(key, sizeof(key), "target/%s", t->volume);
		ret = tsr_meta_delete(t->c->meta, key, t->claim_rev);
		if (ret && ret != -ENOENT && ret != -ECANCELED)
			tsr_warn("site: undo create of target %s: cannot delete %s: %s", t->volume,
				 key, strerror(-ret));
		t->claim_rev = 0;
	}
	tc_unlock(t);
	if (t->undo_left[0])
		tc_set_why(t);
	t->undoing = false;
	t->running = false;
	t->ended_ms = tsr_mono_ms();
}

/* The answer to tc_call (main loop): the create goes on, replaces a
 * leftover or fails; the undo goes on. */
static void tc_call_done(void *arg, int status, Tessera__Admin__Response *r)
{
	struct target_create *t = arg;
	unsigned i = t->undoing ? t->undo : t->made;
	int err = status ? status : r->error, left;

	t->call = NULL;
	if (t->stopping) { /* repl_stop frees t */
		if (r)
			tessera__admin__response__free_unpacked(r, NULL);
		return;
	}
	switch (t->call_kind) {
	case TC_CREATE:
		/* the copy's uuid, or on EEXIST the one met */
		if (status == 0 && (err == 0 || err == -EEXIST) && r->n_volumes == 1 &&
		    r->volumes[0]->uuid && strlen(r->volumes[0]->uuid) < 37)
			snprintf(t->node[i].uuid, sizeof(t->node[i].uuid), "%s", r->volumes[0]->uuid);
		else
			t->node[i].uuid[0] = '\0';
		if (err == 0) {
			t->redo = false;
			t->made++;
			tc_next(t);
		} else if (status == 0 && err == -EEXIST && (left = tc_leftover(t, i)) != 0) {
			if (left > 0 && tc_call(t, i, TC_LEFTOVER))
				tc_fail(t, -EEXIST, "node %s: cannot delete the copy of '%s' left over "
					"there", t->node[i].id, t->volume);
		} else if (status) {
			t->unsure = true; /* the node may have made it: a leftover */
			tc_fail(t, status, "cannot reach node %s at %s to create the copy of '%s': %s",
				t->node[i].id, t->node[i].address, t->volume, strerror(-status));
		} else {
			tc_fail(t, err, "node %s: %s", t->node[i].id,
				r->message && r->message[0] ? r->message : strerror(-err));
		}
		break;
	case TC_LEFTOVER:
		if (err == 0 || err == -ENOENT)
			tc_next(t); /* node[made] made again */
		else
			tc_fail(t, err, "node %s: cannot delete the copy of '%s' left over there: %s",
				t->node[i].id, t->volume, status || !r->message ? strerror(-err) :
				r->message);
		break;
	case TC_UNDO:
		tc_undo_answer(t, i, err, status != 0, status || !r->message || !r->message[0] ?
			       strerror(-err) : r->message);
		tc_undo_next(t);
		break;
	}
	if (r)
		tessera__admin__response__free_unpacked(r, NULL);
	if (!t->running && t->status == 0)
		target_create_free(t); /* created: the next VOLUME_OPEN attaches */
}

/*
 * site_open_volume's create of name (vol/<name> absent): 0 created (the
 * open goes on to the attach), -EINPROGRESS running, or its refusal; why
 * says it for the source.
 */
static int target_create(struct tsr_cluster *c, const struct tsr_site_hello *from,
			 const struct tsr_site_open *o, uint64_t size, uint64_t stream, char *why,
			 size_t why_len)
{
	struct target_create *t;
	struct tsr_place_node pn[256];
	unsigned chosen[TSR_PLACE_MAX];
	struct cluster_view v;
	char sz[32], place_why[512], msg[512];
	size_t n = 0;
	int ret;

	for (struct target_create *u = target_creates, *nx; u; u = nx) {
		nx = u->next; /* refusals nobody came back for */
		if (u->c == c && !u->running && tsr_mono_ms() - u->ended_ms >=
		    (u->lost_claim ? tc_lost_claim_ms() : TARGET_CREATE_KEEP_MS))
			target_create_free(u);
	}
	t = target_create_find(c, o->volume);
	if (t && t->stream != stream) {
		snprintf(why, why_len, "site %s: target %s is being created for another stream "
			 "(from %s)", c->repl_site, o->volume, t->from);
		return -EEXIST;
	}
	if (t && t->running) {
		snprintf(why, why_len, "site %s: target %s is being created (%s, %s) for its "
			 "source: retry", c->repl_site, t->volume, t->layout,
			 tsr_format_size(t->size, sz, sizeof(sz)));
		return -EINPROGRESS;
	}
	if (t && t->lost_claim) {
		/* the create that won (another DR node's) is given that long to
		 * record the volume, which site_open_volume then attaches
		 * without asking here: no second create meets its copies
		 * before its record meanwhile */
		snprintf(why, why_len, "site %s: target %s is being created (by another create "
			 "of it): retry", c->repl_site, t->volume);
		return -EINPROGRESS;
	}
	if (t) { /* answered (a success dropped the entry): its refusal, once */
		ret = t->status;
		snprintf(why, why_len, "%s", t->why);
		target_create_free(t);
		tsr_warn("site: %s (stream from %s/%s refused)", why, from->site, from->cluster);
		return ret;
	}
	t = calloc(1, sizeof(*t));
	if (t == NULL) {
		snprintf(why, why_len, "site %s: target %s cannot be created: out of memory",
			 c->repl_site, o->volume);
		return -ENOMEM;
	}
	t->c = c;
	snprintf(t->volume, sizeof(t->volume), "%s", o->volume);
	snprintf(t->layout, sizeof(t->layout), "%s", o->layout);
	snprintf(t->from, sizeof(t->from), "%s/%s", from->site, from->cluster);
	t->stream = stream;
	t->size = size;
	t->k = o->parsed.ec_k;
	t->m = o->parsed.ec_m;
	if (t->k) {
		t->unit = TSR_EC_DEFAULT_UNIT;
		t->n_copies = t->k + t->m;
		t->min_in_sync = t->k;
		t->copy_size = tsr_ec_chunk_volume_size(size, t->k, t->unit);
	} else {
		t->n_copies = o->parsed.replicas;
		t->min_in_sync = t->n_copies < 2 ? t->n_copies : 2;
		t->copy_size = size;
	}
	t->running = true;
	t->next = target_creates;
	target_creates = t;
	if (t->n_copies == 0 || t->n_copies > TSR_PLACE_MAX ||
	    (!t->k && t->n_copies > TSR_MIRROR_MAX_COPIES)) {
		tc_fail(t, -EINVAL, "layout %s not supported here", t->layout);
		goto answered;
	}
	/* (0) the lock, (1) the claim: a crash from here leaves target/<vol>
	 * naming the stream (the lock goes with this node's lease) */
	tc_test_claim_race(t, true);
	ret = tc_lock(t, msg, sizeof(msg));
	if (ret == 0)
		ret = tc_claim(t, msg, sizeof(msg));
	if (ret == -ECANCELED) {
		/* nothing done: the source's retries find that create's record
		 * (attached), or after TARGET_CREATE_KEEP_MS a create begins
		 * here again, resumed once the other one's lock is gone (it
		 * crashed) */
		tc_unlock(t);
		tsr_info("site: target volume %s (from %s): %s: nothing done here, the source "
			 "retries (a create here again in %lld ms unless vol/%s is recorded)",
			 t->volume, t->from, msg, (long long)tc_lost_claim_ms(), t->volume);
		t->lost_claim = true;
		t->status = -EINPROGRESS;
		t->running = false;
		t->ended_ms = tsr_mono_ms();
		snprintf(why, why_len, "site %s: target %s is being created (by another create "
			 "of it): retry", c->repl_site, t->volume);
		return -EINPROGRESS;
	}
	if (ret) {
		tc_fail(t, ret, "%s", msg);
		goto answered;
	}
	/* (2) placement, as cluster_volume_create's */
	ret = view_load(c->meta, &v);
	if (ret) {
		tc_fail(t, ret, "cannot read the metadata store: %s", strerror(-ret));
		goto answered;
	}
	n = cluster_place_input(&v, pn, 256);
	if (t->k)
		ret = tsr_cluster_place_ec(pn, n, TSR_FD_NODE, t->k, t->m, t->unit, size, chosen,
					   place_why, sizeof(place_why));
	else
		ret = tsr_cluster_place(pn, n, TSR_FD_NODE, t->n_copies, size, chosen, place_why,
					sizeof(place_why));
	for (unsigned i = 0; ret == 0 && i < t->n_copies; i++) {
		const Tessera__Cluster__NodeRecord *nr = view_node(&v, pn[chosen[i]].id);

		snprintf(t->node[i].id, sizeof(t->node[i].id), "%s", nr->id);
		snprintf(t->node[i].address, sizeof(t->node[i].address), "%s", nr->address);
	}
	view_free(&v);
	if (ret) {
		tc_fail(t, ret, "cannot place it: %s", place_why);
		goto answered;
	}
	{
		char line[512];
		size_t pos = 0;

		for (unsigned i = 0; i < t->n_copies && pos < sizeof(line); i++)
			pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "%s%s", i ? " " : "",
						t->node[i].id);
		tsr_info("site: creating target volume %s (%s, %s, on %s) for %s stream %016llx%s",
			 t->volume, t->layout, tsr_format_size(size, sz, sizeof(sz)), line, t->from,
			 (unsigned long long)stream, t->resumed ? " (again: an earlier create of "
			 "this stream did not finish)" : "");
	}
	/* (3), (4) */
	tc_next(t);
answered:
	if (t->running) {
		snprintf(why, why_len, "site %s: target %s is being created (%s, %s) for its "
			 "source: retry", c->repl_site, t->volume, t->layout,
			 tsr_format_size(t->size, sz, sizeof(sz)));
		return -EINPROGRESS;
	}
	/* it needed no other node: the answer now */
	ret = t->status;
	snprintf(why, why_len, "%s", t->why);
	target_create_free(t);
	return ret;
}

/*
 * site_open_volume: may the stream adopt the recorded volume name (no
 * failback; has_state: the site server's state file of it here, path)?
 * With the state file, when target/<name> names the stream or the record
 * says it was created for it (below).  Without, only when target/<name> names
 * the stream and the record says it was created for it (made_for, the
 * record's target_stream, written by target_create's record).  A record
 * without it is an operator's `volume create` (or a target recorded by a
 * build before the field): adopting it let the stream overwrite a volume it
 * did not create when target/<name> named the stream, a claim left by a
 * create that did not finish (review 17c D2).  claim: target/<name>'s
 * stream as target_stream gives it (the caller read the key once, for its
 * "promoted" check too).  true: refused (logged, and said in why for the
 * source, whose operator may have to act).
 */
static bool target_adopt_refused(struct tsr_cluster *c, const struct tsr_site_hello *from,
				 const char *name, uint64_t stream, uint64_t claim,
				 uint64_t made_for, const char *path, bool has_state, char *why,
				 size_t why_len)
{
	char text[6144]; /* path is up to 4200 */

	if (claim == stream && made_for == stream)
		return false;
	/* the state file says the site server served a target of this name
	 * here, not that this record is it: `volume delete` of a target leaves
	 * the file (and deletes target/<name>), and an operator's volume made
	 * after it, with target/<name> naming no stream and no target_stream,
	 * was attached and overwritten.  With it, target/<name> naming the
	 * stream (a target of a build before the record's field, stamped by
	 * target_stream_record) or the record does. */
	if (has_state && (claim == stream || made_for == stream))
		return false;
	if (has_state) {
		snprintf(text, sizeof(text), "%s/%s asks for volume %s, stream %016llx: vol/%s "
			 "exists here but is not that stream's target (target/%s does not name it "
			 "and the record was not created for it; %s is left from an earlier "
			 "target of that name, deleted since): refused.  If it is someone's "
			 "volume, disable the replication of %s at %s or rename one of them; if it "
			 "is the stream's, delete it (tessera volume delete %s) and restart its "
			 "source at %s (tessera volume detach %s, then attach it, there), which "
			 "copies the volume whole to the new target (this build's DR and source "
			 "do so by themselves; the restart also covers an earlier build's state "
			 "file or source)", from->site,
			 from->cluster, name, (unsigned long long)stream, name, name, path, name,
			 from->site, name, from->site, name);
	} else if (claim != stream) {
		snprintf(text, sizeof(text), "%s/%s asks for volume %s, which exists here and is "
			 "no replication target (no %s): refused", from->site, from->cluster, name,
			 path);
	} else if (made_for == 0) {
		snprintf(text, sizeof(text), "%s/%s asks for volume %s, stream %016llx: vol/%s "
			 "exists here but "
			 "was not created for that stream (made by `tessera volume create`, or as a "
			 "target by a build before the record said so; no %s): refused; target/%s "
			 "names the stream (a create of it that did not finish, or a target an "
			 "earlier build made and no node of this build opened).  If it is this "
			 "stream's target, delete it (tessera volume delete %s) and restart its "
			 "source at %s (tessera volume detach %s, then attach it, there), which "
			 "copies the volume whole to the new target (this build's DR and source "
			 "do so by themselves; the restart also covers an earlier build's state "
			 "file or source); if it is someone's volume, disable the replication of %s at %s or rename one of "
			 "them", from->site, from->cluster, name, (unsigned long long)stream, name,
			 path, name, name, from->site, name, name, from->site);
	} else {
		snprintf(text, sizeof(text), "%s/%s asks for volume %s, stream %016llx: vol/%s "
			 "exists here but was created for stream %016llx (no %s): refused",
			 from->site, from->cluster, name, (unsigned long long)stream, name,
			 (unsigned long long)made_for, path);
	}
	tsr_warn("site: %s", text);
	snprintf(why, why_len, "site %s: %s", c->repl_site, text);
	return true;
}

/*
 * site_open_volume of name, recorded, target/<name> "promoted" (a promote at
 * this site), no failback: refused whatever this node's state file says.
 * The PROMOTED flag lives in the state file of the node that ran the promote;
 * the stream may reach another DR node (the listener moved) whose file is
 * older and not promoted, or is of a target deleted since (the site server
 * drops it), and target_adopt_refused adopted the volume the record says was
 * created for the stream: its host writes were fenced and the old primary,
 * never demoted, shipped over the writes the DR acknowledged after the
 * promote (review revE).  The stream the volume was created for gets
 * -EKEYREVOKED (the server answers it as a promoted state file: ESTALE, the
 * source demotes itself); another one -EEXIST (a name taken here).
 */
static int target_promoted_refusal(struct tsr_cluster *c, const struct tsr_site_hello *from,
				   const char *name, uint64_t stream, uint64_t made_for, char *why,
				   size_t why_len)
{
	if (made_for == stream) {
		tsr_warn("site: %s/%s asks for volume %s, stream %016llx: it was promoted at this "
			 "site (target/%s), whatever this node's state file of it says: refused, "
			 "the source is told it is demoted", from->site, from->cluster, name,
			 (unsigned long long)stream, name);
		snprintf(why, why_len, "site %s: volume %s was promoted at this site: this stream "
			 "has ended; the source is demoted", c->repl_site, name);
		return -EKEYREVOKED;
	}
	snprintf(why, why_len, "site %s: %s/%s asks for volume %s, stream %016llx: vol/%s exists "
		 "here, promoted at this site (target/%s) and not created for that stream: "
		 "refused.  If it is someone's volume, disable the replication of %s at %s or "
		 "rename one of them", c->repl_site, from->site, from->cluster, name,
		 (unsigned long long)stream, name, name, name, from->site);
	tsr_warn("site: %s", why);
	return -EEXIST;
}

/* rec_volume_update's mutator: the record's target_stream = *arg. */
static int target_stream_mutate(Tessera__Cluster__VolumeRecord *rec, void *arg)
{
	const uint64_t *stream = arg;

	if (rec->target_stream == *stream)
		return 1;
	rec->target_stream = *stream;
	return 0;
}

/*
 * site_open_volume adopted the recorded volume name for stream through a
 * failback or this node's state file, not through its record (made_for,
 * the record's target_stream, is another stream or 0): once target/<name>
 * names the stream, the record is made to say so too, or the stream is
 * refused "was created for stream ..." wherever the state file is not (the
 * stream reaching another DR node): a failback gives the volume a new
 * stream (failback_done), and a target recorded by a build before the
 * field has none.  A failure is logged, the open goes on.
 */
static void target_stream_record(struct tsr_cluster *c, const char *name, uint64_t stream,
				 uint64_t made_for)
{
	int ret;

	if (made_for == stream || target_stream(c, name) != stream)
		return;
	ret = rec_volume_update(c->meta, name, target_stream_mutate, &stream);
	if (ret)
		tsr_warn("site: target volume %s: cannot record stream %016llx in vol/%s: %s (a "
			 "DR node without its state file refuses the stream)", name,
			 (unsigned long long)stream, name, strerror(-ret));
	else
		tsr_info("site: target volume %s: vol/%s says stream %016llx now (was %016llx)",
			 name, name, (unsigned long long)stream, (unsigned long long)made_for);
}

/*
 * Find or create the target volume, attach it here, fence host writes.
 * A volume that exists already must be this stream's target (target/<vol>)
 * or one the site server has a state file for (DIR/site/<name>.state), and
 * must not be attached elsewhere or serving hosts here.  A volume that does
 * not exist is created by target_create (-EINPROGRESS while it calls other
 * nodes; the source's retry attaches it).
 */
static int site_open_volume(void *arg, const struct tsr_site_hello *from,
			    const struct tsr_site_open *o, uint64_t size, uint64_t stream,
			    struct tsr_vol **out, char id[TSR_SITE_NAME_MAX + 1], char *why,
			    size_t why_len)
{
	struct tsr_cluster *c = arg;
	Tessera__Cluster__ReplicationRecord *src = NULL;
	Tessera__Cluster__VolumeRecord *rec = NULL;
	struct attachment *a;
	struct tsr_vol *vol = NULL;
	char holder[64], msg[1024], path[4200], key[80], text[20];
	const char *name = o->volume;
	bool failback = false, drop_repl = false, recorded = false;
	uint64_t made_for = 0; /* recorded: the record's target_stream */
	int ret;

	if (repl_get(c, name, &src, NULL) == 0) {
		failback = failback_from(src, from->site);
		/* the original primary keeps repl/<vol> for promote; a promoted copy
		 * taken back as a target drops its stream back */
		drop_repl = failback && target_promoted(c, name);
		tessera__cluster__replication_record__free_unpacked(src, NULL);
		if (!failback) {
			tsr_warn("site: %s/%s asks for volume %s, which is a replication source in "
				 "this cluster: refused (after a failover: tessera replication "
				 "resync %s --from %s)", from->site, from->cluster, name, name,
				 from->site);
			return -EEXIST;
		}
		tsr_info("site: volume %s: failback from site %s, stream %016llx: it becomes a "
			 "target", name, from->site, (unsigned long long)stream);
	}
	ret = rec_volume_get(c->meta, name, &rec, NULL);
	if (ret == -ENOENT) {
		/* created without blocking this loop: -EINPROGRESS meanwhile */
		ret = target_create(c, from, o, size, stream, why, why_len);
		if (ret)
			return ret;
	} else if (ret) {
		tsr_warn("site: target volume %s: cannot read vol/%s: %s", name, name, strerror(-ret));
		return ret;
	} else {
		uint64_t have = rec->size, lsize = have;
		struct tsr_layout *layout;

		recorded = true;
		made_for = rec->target_stream;
		snprintf(id, TSR_SITE_NAME_MAX + 1, "%s", rec->uuid);

		tessera__cluster__volume_record__free_unpacked(rec, NULL);
		snprintf(path, sizeof(path), "%s/site/%s.state", c->dir, name);
		if (!failback) {
			/* one read of target/<name> for both.  A failed one is no
			 * answer: read as "not promoted", a state file here (an
			 * older one, the listener moved) and the record let the
			 * stream adopt a volume promoted at this site (review
			 * revG): -EIO, the source retries (never ESTALE) */
			uint64_t claim, rev;
			bool promoted;

			ret = target_claim_get(c, name, &claim, &rev, &promoted);
			if (ret && ret != -ENOENT) {
				snprintf(why, why_len, "site %s: target volume %s: cannot read "
					 "target/%s: %s; retry", c->repl_site, name, name,
					 strerror(-ret));
				tsr_warn("site: %s", why);
				return -EIO;
			}
			if (promoted)
				return target_promoted_refusal(c, from, name, stream, made_for,
							       why, why_len);
			if (target_adopt_refused(c, from, name, stream, claim, made_for, path,
						 access(path, F_OK) == 0, why, why_len))
				return -EEXIST;
		}
		/* a grow of it running or just refused: its answer first.  Attached
		 * here, the layout may be smaller than the record (the resize's step
		 * (e) failed after (d)): it grows first, or nothing past its end
		 * could land; not attached, the attach below takes the record's size */
		layout = tsr_volset_layout(c->o.vols, name);
		if (layout)
			lsize = tsr_layout_size(layout);
		if (have < size || lsize < have || target_grow_find(c, name)) {
			ret = target_grow(c, from, name, have, lsize, size, why, why_len);
			if (ret)
				return ret;
		}
	}
	a = cluster_find_attachment(c, name);
	if (a == NULL || a->layout == NULL || a->fenced) {
		if (cluster_get_attach(c, name, holder, sizeof(holder), NULL, NULL) == 0 &&
		    strcmp(holder, c->node_id) != 0) {
			tsr_warn("site: target volume %s is attached on node %s: refused (detach it "
				 "there; a target is attached on the node with the site listener)",
				 name, holder);
			return -EEXIST;
		}
		target_hint.c = c; /* a group's members share one home worker */
		snprintf(target_hint.volume, sizeof(target_hint.volume), "%s", name);
		snprintf(target_hint.group, sizeof(target_hint.group), "%s", o->group);
		/* its layout opens in a thread: -EINPROGRESS ("being attached:
		 * retry") meanwhile, retried by the source (attach.c) */
		ret = cluster_attach_target(c, name, msg, sizeof(msg));
		target_hint.c = NULL;
		if (ret == -EINPROGRESS) {
			snprintf(why, why_len, "site %s: target %s is %s", c->repl_site, name, msg);
			return ret;
		}
		if (ret) {
			tsr_warn("site: target volume %s: %s", name, msg);
			/* told to the source with the reason; -ESTALE (a copy saw a
			 * newer coordinator) would read "promoted" there and demote
			 * the primary: any failure but a busy one is -EIO */
			snprintf(why, why_len, "site %s: cannot attach target %s: %s", c->repl_site,
				 name, msg);
			return ret == -EBUSY ? ret : -EIO;
		}
		ret = tsr_vol_get(c->o.vols, name, &vol);
		if (ret)
			return ret;
		tsr_vol_set_write_fence(vol, -EROFS);
	} else {
		ret = tsr_vol_get(c->o.vols, name, &vol);
		if (ret)
			return ret;
		if (tsr_vol_write_fence(vol) != -EROFS) {
			tsr_vol_put(vol);
			tsr_warn("site: target volume %s is attached here for hosts (not fenced): "
				 "refused", name);
			return -EEXIST;
		}
	}
	if (failback) {
		snprintf(key, sizeof(key), "target/%s", name);
		snprintf(text, sizeof(text), "%016llx", (unsigned long long)stream);
		ret = tsr_meta_cas(c->meta, key, TSR_META_ANY_REV, text, 16, 0, NULL);
		if (ret) {
			tsr_warn("site: volume %s: cannot record %s: %s", name, key, strerror(-ret));
			tsr_vol_put(vol);
			return ret;
		}
	}
	if (recorded) {
		target_stream_record(c, name, stream, made_for);
	} else if (rec_volume_get(c->meta, name, &rec, NULL) == 0) { /* created just now */
		snprintf(id, TSR_SITE_NAME_MAX + 1, "%s", rec->uuid);
		tessera__cluster__volume_record__free_unpacked(rec, NULL);
	}
	if (drop_repl) {
		source_stop(c, name);
		snprintf(key, sizeof(key), "repl/%s", name);
		ret = tsr_meta_delete(c->meta, key, TSR_META_ANY_REV);
		if (ret && ret != -ENOENT)
			tsr_warn("site: volume %s: cannot delete %s: %s (its stream back stays "
				 "recorded, demoted)", name, key, strerror(-ret));
		else
			tsr_info("site: volume %s: its stream back to site %s ended; it is a target "
				 "of site %s again", name, from->site, from->site);
	}
	*out = vol;
	return 0;
}

/* The site server's may_replace: 1 when vol's demoted source accepts from
 * (failback), -EAGAIN when vol is a promoted copy still shipping back to
 * from (its source learns of the promote at from within a retry), else 0. */
static int site_may_replace(void *arg, const struct tsr_site_hello *from, const char *vol,
			    uint64_t stream)
{
	struct tsr_cluster *c = arg;
	Tessera__Cluster__ReplicationRecord *r = NULL;
	int ret = 0;

	(void)stream;
	if (repl_get(c, vol, &r, NULL))
		return 0;
	if (failback_from(r, from->site))
		ret = 1;
	else if (!r->demoted && strcmp(r->site, from->site) == 0 && target_promoted(c, vol))
		ret = -EAGAIN;
	tessera__cluster__replication_record__free_unpacked(r, NULL);
	return ret;
}

/* The site server's volume_id: vol/<vol>'s uuid, as site_open_volume gives
 * it (-ENOENT: no record). */
static int site_volume_id(void *arg, const char *vol, char id[TSR_SITE_NAME_MAX + 1])
{
	struct tsr_cluster *c = arg;
	Tessera__Cluster__VolumeRecord *rec = NULL;
	int ret = rec_volume_get(c->meta, vol, &rec, NULL);

	if (ret)
		return ret;
	snprintf(id, TSR_SITE_NAME_MAX + 1, "%s", rec->uuid);
	tessera__cluster__volume_record__free_unpacked(rec, NULL);
	return 0;
}

/* ---- public, start and stop ---------------------------------------------------- */

void tsr_cluster_site_ops(struct tsr_cluster *c, struct tsr_site_server_ops *ops)
{
	ops->open_volume = site_open_volume;
	ops->may_replace = site_may_replace;
	ops->volume_id = site_volume_id;
	ops->arg = c;
}

void tsr_cluster_set_site_server(struct tsr_cluster *c, struct tsr_site_server *srv)
{
	c->site_server = srv;
}

const char *tsr_cluster_repl_site(const struct tsr_cluster *c)
{
	return c->repl_site;
}

const char *tsr_cluster_id(const struct tsr_cluster *c)
{
	return c->cluster_id;
}

/* cluster/id: read it, or make it (the first node of the cluster). */
static int load_cluster_id(struct tsr_cluster *c)
{
	struct tsr_meta_kv kv = { 0 };
	char fresh[32];
	int ret;

	for (int tries = 0; tries < 5; tries++) {
		ret = tsr_meta_get(c->meta, "cluster/id", &kv);
		if (ret == 0) {
			if (kv.value_len == 0 || kv.value_len >= sizeof(c->cluster_id)) {
				ret = -EUCLEAN;
			} else {
				memcpy(c->cluster_id, kv.value, kv.value_len);
				c->cluster_id[kv.value_len] = '\0';
				ret = tsr_valid_name(c->cluster_id) ? 0 : -EUCLEAN;
			}
			tsr_meta_kv_clear(&kv);
			return ret;
		}
		if (ret != -ENOENT)
			return ret;
		snprintf(fresh, sizeof(fresh), "c%016llx", (unsigned long long)random_stream());
		ret = tsr_meta_cas(c->meta, "cluster/id", 0, fresh, strlen(fresh), 0, NULL);
		if (ret == 0) {
			snprintf(c->cluster_id, sizeof(c->cluster_id), "%s", fresh);
			return 0;
		}
		if (ret != -ECANCELED)
			return ret;
	}
	return -EAGAIN;
}

int repl_start(struct tsr_cluster *c)
{
	int ret;

	if (c->o.repl_site)
		snprintf(c->repl_site, sizeof(c->repl_site), "%s", c->o.repl_site);
	else
		snprintf(c->repl_site, sizeof(c->repl_site), "site-%.58s", c->node_id);
	if (!tsr_valid_name(c->repl_site)) {
		tsr_error("cluster: site name '%s' is not valid (use 1 to 63 of A-Z a-z 0-9 . _ -)",
			  c->repl_site);
		return -EINVAL;
	}
	ret = load_cluster_id(c);
	if (ret) {
		tsr_error("cluster: cannot read or make cluster/id: %s", strerror(-ret));
		return ret;
	}
	ev_async_init(&c->repl_async, demote_async_cb);
	c->repl_async.data = c;
	ev_async_start(c->o.loop, &c->repl_async);
	c->repl_async_started = true;
	return 0;
}

void repl_stop(struct tsr_cluster *c)
{
	claim_release_stop(c); /* releases waiting for a node: their claim kept */
	while (c->sources)
		source_stop(c, c->sources->volume);
	if (c->repl_async_started) {
		drain_demotes(c); /* the sources are stopped: nothing queues any more */
		drain_grows(c);   /* a stopped source answered its grow (-ESHUTDOWN) */
		ev_async_stop(c->o.loop, &c->repl_async);
		c->repl_async_started = false;
	}
	/* creates waiting for a node: the call cancelled (its copies are left
	 * over; target/<vol> names the stream, so the next create replaces them) */
	for (struct target_create *t = target_creates, *nx; t; t = nx) {
		nx = t->next;
		if (t->c != c)
			continue;
		t->stopping = true;
		if (t->call)
			admin_async_cancel(t->call); /* its callback, now, leaves t alone */
		target_create_free(t);
	}
	/* resize_stop ended every target resize (-ECANCELED): none runs */
	while (c->target_grows)
		target_grow_free(c, c->target_grows);
	while (c->site_tls) {
		struct repl_tls *t = c->site_tls;

		c->site_tls = t->next;
		tls_free(t);
	}
}
