/*
 * Admin API commands: one function per Request command, each turning a
 * validated request into store calls and a Response.  They run on the
 * control thread (tesserad's libev loop), where blocking store calls are
 * allowed.  Error replies carry a message for a person: what failed and what
 * to do; the CLI prints it as is.
 * The store logs its own failures; nothing is logged twice here.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin/admin_internal.h"

/* "unix:PATH" -> nbd+unix:///NAME?socket=PATH; "tcp:HOST:PORT" -> nbd://HOST:PORT/NAME */
static char *nbd_uri(const char *listener, const char *name)
{
	char *uri = NULL;
	int n = -1;

	if (strncmp(listener, "unix:", 5) == 0)
		n = asprintf(&uri, "nbd+unix:///%s?socket=%s", name, listener + 5);
	else if (strncmp(listener, "tcp:", 4) == 0)
		n = asprintf(&uri, "nbd://%s/%s", listener + 4, name);
	return n < 0 ? NULL : uri;
}

static Tessera__Admin__Volume *build_volume(struct tsr_admin_server *srv,
					    const struct tsr_vol_info *info)
{
	Tessera__Admin__Volume *v = malloc(sizeof(*v));
	size_t i;

	if (v == NULL)
		return NULL;
	tessera__admin__volume__init(v);
	v->name = admin_strdup(info->name);
	v->uuid = admin_strdup(info->uuid);
	v->size = info->size;
	v->allocated = info->allocated;
	v->created = info->created;
	v->in_use = tsr_volset_in_use(srv->vols, info->name);
	v->nbd_uris = calloc(srv->n_nbd_listeners ? srv->n_nbd_listeners : 1, sizeof(char *));
	if (v->name == NULL || v->uuid == NULL || v->nbd_uris == NULL)
		goto err;
	for (i = 0; i < srv->n_nbd_listeners; i++) {
		char *uri = nbd_uri(srv->nbd_listeners[i], info->name);

		if (uri)
			v->nbd_uris[v->n_nbd_uris++] = uri;
	}
	return v;
err:
	if (v->name == NULL)
		v->name = (char *)protobuf_c_empty_string;
	if (v->uuid == NULL)
		v->uuid = (char *)protobuf_c_empty_string;
	admin_volume_free_built(v);
	return NULL;
}

/* Reply with the one volume name (after create/resize/show). */
static void reply_volume(struct tsr_admin_server *srv, const char *name,
			 Tessera__Admin__Response *resp)
{
	struct tsr_vol_info info;
	int ret;

	ret = tsr_store_vol_info(srv->store, name, &info);
	if (ret == -ENOENT) {
		admin_fail(resp, ret, "volume '%s' not found (tessera volume list shows what exists)",
			   name);
		return;
	}
	if (ret) {
		admin_fail(resp, ret, "cannot read volume '%s': %s (see tesserad's log)", name,
			   strerror(-ret));
		return;
	}
	resp->volumes = malloc(sizeof(*resp->volumes));
	if (resp->volumes == NULL || (resp->volumes[0] = build_volume(srv, &info)) == NULL) {
		admin_fail(resp, -ENOMEM, "out of memory in tesserad");
		return;
	}
	resp->n_volumes = 1;
}

static void op_volume_create(struct tsr_admin_server *srv, const Tessera__Admin__VolumeCreate *c,
			     Tessera__Admin__Response *resp)
{
	struct tsr_vol_info info;
	char sz[32];
	int ret;

	tsr_format_size(c->size, sz, sizeof(sz));
	ret = tsr_store_vol_create(srv->store, c->name, c->size, &info);
	switch (ret) {
	case 0:
		reply_volume(srv, c->name, resp);
		return;
	case -EEXIST:
		admin_fail(resp, ret, "volume '%s' already exists (tessera volume show %s describes "
			   "it; pick another name)", c->name, c->name);
		return;
	case -ENOSPC:
		admin_fail(resp, ret, "no space for volume '%s' of %s on the device (delete volumes "
			   "or use a smaller size)", c->name, sz);
		return;
	case -EINVAL:
		admin_fail(resp, ret, "cannot create volume '%s' of %s: invalid name or size "
			   "(tessera volume create --help)", c->name, sz);
		return;
	default:
		admin_fail(resp, ret, "cannot create volume '%s': %s (see tesserad's log)", c->name,
			   strerror(-ret));
		return;
	}
}

static void op_volume_list(struct tsr_admin_server *srv, Tessera__Admin__Response *resp)
{
	struct tsr_vol_info *infos = NULL;
	size_t count = 0, i;
	int ret;

	ret = tsr_store_vol_list(srv->store, &infos, &count);
	if (ret) {
		admin_fail(resp, ret, "cannot list volumes: %s (see tesserad's log)", strerror(-ret));
		return;
	}
	resp->volumes = calloc(count ? count : 1, sizeof(*resp->volumes));
	if (resp->volumes == NULL)
		goto nomem;
	for (i = 0; i < count; i++) {
		resp->volumes[i] = build_volume(srv, &infos[i]);
		if (resp->volumes[i] == NULL)
			goto nomem;
		resp->n_volumes++;
	}
	free(infos);
	return;
nomem:
	free(infos);
	admin_fail(resp, -ENOMEM, "out of memory in tesserad");
}

static void op_volume_resize(struct tsr_admin_server *srv, const Tessera__Admin__VolumeResize *r,
			     Tessera__Admin__Response *resp)
{
	struct tsr_vol_info info;
	char old_sz[32], new_sz[32];
	int ret;

	ret = tsr_store_vol_info(srv->store, r->name, &info);
	if (ret == 0 && r->size < info.size) {
		admin_fail(resp, -EINVAL, "volume '%s' can only grow: it is %s, asked for %s",
			   r->name, tsr_format_size(info.size, old_sz, sizeof(old_sz)),
			   tsr_format_size(r->size, new_sz, sizeof(new_sz)));
		return;
	}
	if (ret == 0 && r->size != info.size)
		ret = tsr_store_vol_resize(srv->store, r->name, r->size);
	switch (ret) {
	case 0:
		reply_volume(srv, r->name, resp);
		return;
	case -ENOENT:
		admin_fail(resp, ret, "volume '%s' not found (tessera volume list shows what exists)",
			   r->name);
		return;
	case -ENOSPC:
		admin_fail(resp, ret, "no space to grow volume '%s' to %s on the device", r->name,
			   tsr_format_size(r->size, new_sz, sizeof(new_sz)));
		return;
	case -EINVAL:
		admin_fail(resp, ret, "cannot resize volume '%s' to %s: sizes grow only, in "
			   "multiples of 4 KiB", r->name,
			   tsr_format_size(r->size, new_sz, sizeof(new_sz)));
		return;
	default:
		admin_fail(resp, ret, "cannot resize volume '%s': %s (see tesserad's log)", r->name,
			   strerror(-ret));
		return;
	}
}

static void op_volume_delete(struct tsr_admin_server *srv, const Tessera__Admin__VolumeDelete *d,
			     Tessera__Admin__Response *resp)
{
	int ret;

	if (tsr_volset_in_use(srv->vols, d->name))
		ret = -EBUSY;
	else
		ret = tsr_store_vol_delete(srv->store, d->name);
	switch (ret) {
	case 0:
		return;
	case -ENOENT:
		admin_fail(resp, ret, "volume '%s' not found (tessera volume list shows what exists)",
			   d->name);
		return;
	case -EBUSY:
		admin_fail(resp, ret, "volume '%s' is in use by an NBD client (disconnect it first)",
			   d->name);
		return;
	default:
		admin_fail(resp, ret, "cannot delete volume '%s': %s (see tesserad's log)", d->name,
			   strerror(-ret));
		return;
	}
}

static char **copy_strings(char *const *v, size_t n)
{
	char **out = calloc(n ? n : 1, sizeof(char *));

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		out[i] = admin_strdup(v[i]);
		if (out[i] == NULL) {
			while (i--)
				free(out[i]);
			free(out);
			return NULL;
		}
	}
	return out;
}

static void op_status(struct tsr_admin_server *srv, Tessera__Admin__Response *resp)
{
	Tessera__Admin__Status *s;
	struct tsr_vol_info *infos = NULL;
	char *admin_names[2];
	size_t count = 0, i;
	time_t now = time(NULL);
	int ret;

	s = malloc(sizeof(*s));
	if (s == NULL)
		goto nomem;
	tessera__admin__status__init(s);
	resp->status = s;
	s->version = admin_strdup(TSR_VERSION);
	s->pid = (int32_t)getpid();
	s->data_dir = admin_strdup(srv->data_dir);
	s->io_backend = admin_strdup(srv->io_backend);
	s->device = admin_strdup(srv->device);
	s->workers = srv->workers;
	s->started = srv->started;
	s->uptime_sec = now > srv->started ? (uint64_t)(now - srv->started) : 0;
	if (!s->version || !s->data_dir || !s->io_backend || !s->device)
		goto nomem;
	s->nbd_listeners = copy_strings(srv->nbd_listeners, srv->n_nbd_listeners);
	if (s->nbd_listeners == NULL)
		goto nomem;
	s->n_nbd_listeners = srv->n_nbd_listeners;
	for (i = 0; i < srv->n_listeners; i++)
		admin_names[i] = srv->listeners[i].name;
	s->admin_listeners = copy_strings(admin_names, srv->n_listeners);
	if (s->admin_listeners == NULL)
		goto nomem;
	s->n_admin_listeners = srv->n_listeners;
	if (srv->nbd) {
		struct tsr_nbd_stats st;

		tsr_nbd_server_get_stats(srv->nbd, &st);
		s->nbd_connections_open = st.connections_open;
		s->nbd_connections_total = st.connections_total;
	}
	ret = tsr_store_vol_list(srv->store, &infos, &count);
	if (ret) {
		admin_fail(resp, ret, "cannot list volumes: %s (see tesserad's log)", strerror(-ret));
		return;
	}
	free(infos);
	s->volumes = (uint32_t)count;
	s->node_id = admin_strdup(srv->node_id);
	s->cluster_address = admin_strdup(srv->cluster_address);
	if (!s->node_id || !s->cluster_address)
		goto nomem;
	return;
nomem:
	admin_fail(resp, -ENOMEM, "out of memory in tesserad");
}

void admin_handle(struct tsr_admin_server *srv, const Tessera__Admin__Request *req,
		  Tessera__Admin__Response *resp)
{
	/* cluster mode: the control plane answers what is not this node's own business */
	if (srv->cluster.handle && srv->cluster.handle(srv->cluster.arg, req, resp))
		return;
	switch (req->command_case) {
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE:
		op_volume_create(srv, req->volume_create, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_LIST:
		op_volume_list(srv, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW:
		reply_volume(srv, req->volume_show->name, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE:
		op_volume_resize(srv, req->volume_resize, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE:
		op_volume_delete(srv, req->volume_delete, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_STATUS:
		op_status(srv, resp);
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ATTACH:
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DETACH:
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_STATUS:
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SCRUB:
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_REPLACE_REPLICA:
	case TESSERA__ADMIN__REQUEST__COMMAND_NODE_LIST:
	case TESSERA__ADMIN__REQUEST__COMMAND_CLUSTER_STATUS:
		admin_fail(resp, -EOPNOTSUPP, "this tesserad is standalone: that command needs a "
			   "cluster (start tesserad with --listen and --meta or --join; tesserad "
			   "--help)");
		break;
	default:
		/* tsr_admin_request_parse lets no other case through */
		admin_fail(resp, -EINVAL, "unknown command");
		break;
	}
}
