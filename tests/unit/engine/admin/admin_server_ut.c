/*
 * Unit tests of the admin server (engine/admin/admin_server.c, admin_ops.c)
 * through the client library: a real store in a temporary directory under
 * /var/tmp, the server's libev loop on a thread of its own, the blocking
 * client on the test's thread.  Covers every command and its error replies,
 * TCP authentication, connections that send garbage or oversized frames, and
 * a snapshot create whose reply comes later (the cut waits for a worker),
 * also when a cluster hook answers it (as engine/cluster/snapshot.c does on
 * the coordinator: admin_handling_server, admin_later_*).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "admin_fixture.h"

#include "admin/admin_internal.h"
#include "tessera/vol.h"
#include "tessera/worker.h"
#include "../worker/worker_hold.h"

#define TOKEN "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

/* setup_cluster: the cluster hooks the next setup gives the server */
static const struct tsr_admin_cluster *setup_hooks;

static int setup(void **state)
{
	static const char *const nbd[] = { "unix:/x/nbd.sock", "tcp:127.0.0.1:10809" };
	struct tsr_admin_server_opts opts;
	struct fixture *f = admin_fixture_open("admin_server_ut", &opts);

	opts.tcp_listen = "127.0.0.1:0";
	opts.token = TOKEN;
	opts.node.workers = 3;
	opts.node.nbd_listeners = nbd;
	opts.node.n_nbd_listeners = 2;
	opts.node.started = time(NULL) - 5;
	opts.cluster = setup_hooks;
	assert_int_equal(tsr_admin_server_create(&opts, &f->srv), 0);
	snprintf(f->tcp_name, sizeof(f->tcp_name), "unix:%s", f->sock);
	assert_string_equal(tsr_admin_server_listener(f->srv, 0), f->tcp_name);
	snprintf(f->tcp_name, sizeof(f->tcp_name), "%s", tsr_admin_server_listener(f->srv, 1));
	assert_null(tsr_admin_server_listener(f->srv, 2));
	assert_int_equal(strncmp(f->tcp_name, "tcp:127.0.0.1:", 14), 0);
	assert_true(strcmp(f->tcp_name, "tcp:127.0.0.1:0") != 0); /* the actual port */
	assert_int_equal(pthread_create(&f->thread, NULL, admin_fixture_loop, f), 0);
	*state = f;
	return 0;
}

static struct tsr_admin_client *connect_unix(struct fixture *f)
{
	struct tsr_admin_client *c = NULL;

	assert_int_equal(tsr_admin_connect_unix(f->sock, &c), 0);
	return c;
}

/* Send one request; returns the reply (to free). */
static Tessera__Admin__Response *call(struct tsr_admin_client *c, Tessera__Admin__Request *req)
{
	Tessera__Admin__Response *resp = NULL;

	assert_int_equal(tsr_admin_call(c, req, 10000, &resp), 0);
	assert_non_null(resp);
	return resp;
}

static Tessera__Admin__Response *create(struct tsr_admin_client *c, const char *name,
					uint64_t size)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeCreate cr = TESSERA__ADMIN__VOLUME_CREATE__INIT;

	cr.name = (char *)name;
	cr.size = size;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
	req.volume_create = &cr;
	return call(c, &req);
}

static Tessera__Admin__Response *simple(struct tsr_admin_client *c, int cmd, const char *name,
					uint64_t size)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeShow show = TESSERA__ADMIN__VOLUME_SHOW__INIT;
	Tessera__Admin__VolumeResize resize = TESSERA__ADMIN__VOLUME_RESIZE__INIT;
	Tessera__Admin__VolumeDelete del = TESSERA__ADMIN__VOLUME_DELETE__INIT;
	Tessera__Admin__VolumeList list = TESSERA__ADMIN__VOLUME_LIST__INIT;
	Tessera__Admin__StatusGet get = TESSERA__ADMIN__STATUS_GET__INIT;

	req.command_case = cmd;
	switch (cmd) {
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW:
		show.name = (char *)name;
		req.volume_show = &show;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE:
		resize.name = (char *)name;
		resize.size = size;
		req.volume_resize = &resize;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE:
		del.name = (char *)name;
		req.volume_delete = &del;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_LIST:
		req.volume_list = &list;
		break;
	default:
		req.status = &get;
		break;
	}
	return call(c, &req);
}

#define SHOW TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW
#define RESIZE TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE
#define DELETE TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE
#define LIST TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_LIST
#define STATUS TESSERA__ADMIN__REQUEST__COMMAND_STATUS

static void test_volume_lifecycle(void **state)
{
	struct fixture *f = *state;
	struct tsr_admin_client *c = connect_unix(f);
	Tessera__Admin__Response *r;
	char uri[160];

	r = create(c, "alpha", 1ull << 30);
	assert_int_equal(r->error, 0);
	assert_int_equal(r->n_volumes, 1);
	assert_string_equal(r->volumes[0]->name, "alpha");
	assert_int_equal(r->volumes[0]->size, 1ull << 30);
	assert_int_equal(strlen(r->volumes[0]->uuid), 36);
	assert_false(r->volumes[0]->in_use);
	assert_int_equal(r->volumes[0]->n_nbd_uris, 2);
	assert_string_equal(r->volumes[0]->nbd_uris[0], "nbd+unix:///alpha?socket=/x/nbd.sock");
	assert_string_equal(r->volumes[0]->nbd_uris[1], "nbd://127.0.0.1:10809/alpha");
	tessera__admin__response__free_unpacked(r, NULL);

	r = create(c, "alpha", 4096);
	assert_int_equal(r->error, -EEXIST);
	assert_non_null(strstr(r->message, "already exists"));
	tessera__admin__response__free_unpacked(r, NULL);

	r = create(c, "beta", 64 << 20);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);

	r = simple(c, LIST, NULL, 0);
	assert_int_equal(r->error, 0);
	assert_int_equal(r->n_volumes, 2);
	assert_string_equal(r->volumes[0]->name, "alpha");
	assert_string_equal(r->volumes[1]->name, "beta");
	tessera__admin__response__free_unpacked(r, NULL);

	r = simple(c, RESIZE, "alpha", 2ull << 30);
	assert_int_equal(r->error, 0);
	assert_int_equal(r->volumes[0]->size, 2ull << 30);
	tessera__admin__response__free_unpacked(r, NULL);
	r = simple(c, RESIZE, "alpha", 2ull << 30); /* same size: no-op */
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	r = simple(c, RESIZE, "alpha", 1ull << 30);
	assert_int_equal(r->error, -EINVAL);
	assert_non_null(strstr(r->message, "can only grow"));
	tessera__admin__response__free_unpacked(r, NULL);
	r = simple(c, SHOW, "alpha", 0);
	assert_int_equal(r->volumes[0]->size, 2ull << 30);
	tessera__admin__response__free_unpacked(r, NULL);

	r = simple(c, SHOW, "nosuch", 0);
	assert_int_equal(r->error, -ENOENT);
	assert_non_null(strstr(r->message, "not found"));
	tessera__admin__response__free_unpacked(r, NULL);
	r = simple(c, RESIZE, "nosuch", 8192);
	assert_int_equal(r->error, -ENOENT);
	tessera__admin__response__free_unpacked(r, NULL);
	r = simple(c, DELETE, "nosuch", 0);
	assert_int_equal(r->error, -ENOENT);
	tessera__admin__response__free_unpacked(r, NULL);

	r = simple(c, STATUS, NULL, 0);
	assert_int_equal(r->error, 0);
	assert_non_null(r->status);
	assert_int_equal(r->status->volumes, 2);
	assert_int_equal(r->status->workers, 3);
	assert_int_equal(r->status->pid, getpid());
	assert_string_equal(r->status->io_backend, "io_uring");
	assert_string_equal(r->status->data_dir, f->dir);
	assert_true(r->status->uptime_sec >= 5);
	assert_int_equal(r->status->n_admin_listeners, 2);
	snprintf(uri, sizeof(uri), "unix:%s", f->sock);
	assert_string_equal(r->status->admin_listeners[0], uri);
	assert_string_equal(r->status->admin_listeners[1], f->tcp_name);
	tessera__admin__response__free_unpacked(r, NULL);

	r = simple(c, DELETE, "beta", 0);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	r = simple(c, LIST, NULL, 0);
	assert_int_equal(r->n_volumes, 1);
	tessera__admin__response__free_unpacked(r, NULL);
	tsr_admin_close(c);
}

/* The local_copy VolumeResize with check_only that a detach polls until its
 * copies are closed (cluster/closewait.c): sz the size asked. */
static Tessera__Admin__Response *copy_query(struct tsr_admin_client *c, const char *name,
					    uint64_t sz)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeResize resize = TESSERA__ADMIN__VOLUME_RESIZE__INIT;

	resize.name = (char *)name;
	resize.size = sz;
	resize.local_copy = true;
	resize.check_only = true;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE;
	req.volume_resize = &resize;
	return call(c, &req);
}

/* The copy query of "grown" (8 MiB) at sz answers err with the copy, which
 * has sessions open. */
static void expect_copy(struct tsr_admin_client *c, uint64_t sz, int err, uint32_t sessions)
{
	Tessera__Admin__Response *r = copy_query(c, "grown", sz);

	assert_int_equal(r->error, err);
	if (err)
		assert_non_null(strstr(r->message, "can only grow"));
	assert_int_equal(r->n_volumes, 1);
	assert_int_equal(r->volumes[0]->size, 8 << 20);
	assert_int_equal(r->volumes[0]->copy_sessions, sessions);
	tessera__admin__response__free_unpacked(r, NULL);
}

/*
 * The copy query answers the copy's open sessions (Volume.copy_sessions), at
 * its own size and also at a smaller one (a copy grown past the record by a
 * resize stopped after its grow step): "can only grow", with the copy all
 * the same.  Before (review revJ F2) that answer had no copy: a detach
 * waited its whole bound for such a copy, naming it as open.
 */
static void test_copy_query_sessions(void **state)
{
	struct fixture *f = *state;
	struct tsr_admin_client *c = connect_unix(f);
	Tessera__Admin__Response *r;
	struct tsr_svol *svol = NULL;

	r = create(c, "grown", 8 << 20);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_vol_open(f->store, "grown", &svol), 0);
	expect_copy(c, 8 << 20, 0, 1);
	expect_copy(c, 4 << 20, -EINVAL, 1);
	tsr_svol_put(svol);
	expect_copy(c, 4 << 20, -EINVAL, 0);
	tsr_admin_close(c);
}

static void test_delete_in_use(void **state)
{
	struct fixture *f = *state;
	struct tsr_admin_client *c = connect_unix(f);
	Tessera__Admin__Response *r;
	struct tsr_vol *vol = NULL;

	r = create(c, "held", 1 << 20);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_vol_get(f->vols, "held", &vol), 0);
	r = simple(c, SHOW, "held", 0);
	assert_true(r->volumes[0]->in_use);
	tessera__admin__response__free_unpacked(r, NULL);
	r = simple(c, DELETE, "held", 0);
	assert_int_equal(r->error, -EBUSY);
	assert_string_equal(r->message,
			    "volume 'held' is in use by an NBD client (disconnect it first)");
	tessera__admin__response__free_unpacked(r, NULL);
	tsr_vol_put(vol);
	r = simple(c, DELETE, "held", 0);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	tsr_admin_close(c);
}

/* A local_copy VolumeDelete of name naming uuid (a cluster's delete of one copy). */
static Tessera__Admin__Response *copy_delete(struct tsr_admin_client *c, const char *name,
					     const char *uuid)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeDelete del = TESSERA__ADMIN__VOLUME_DELETE__INIT;

	del.name = (char *)name;
	del.local_copy = true;
	del.uuid = (char *)uuid;
	req.command_case = DELETE;
	req.volume_delete = &del;
	return call(c, &req);
}

/* The local_copy VolumeResize, check_only, size 0: a cluster asking for the
 * copy's uuid whatever its size. */
static Tessera__Admin__Response *copy_uuid(struct tsr_admin_client *c, const char *name)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeResize vr = TESSERA__ADMIN__VOLUME_RESIZE__INIT;

	vr.name = (char *)name;
	vr.local_copy = true;
	vr.check_only = true;
	req.command_case = RESIZE;
	req.volume_resize = &vr;
	return call(c, &req);
}

/*
 * A cluster's delete of one copy by its uuid (session-19 revE M1): a delete
 * naming another uuid than the copy's (a late delete of an older copy of the
 * name) is refused -ESTALE and the copy stays; naming its own, it goes.  The
 * uuid is asked for with a size-0 check_only resize, which changes nothing.
 */
static void test_delete_copy_by_uuid(void **state)
{
	struct fixture *f = *state;
	struct tsr_admin_client *c = connect_unix(f);
	Tessera__Admin__Response *r;
	char uuid[37], msg[256];

	r = create(c, "cp", 1 << 20);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	r = copy_uuid(c, "cp");
	assert_int_equal(r->error, 0);
	assert_int_equal(r->n_volumes, 1);
	assert_int_equal(r->volumes[0]->size, 1 << 20);
	assert_int_equal(strlen(r->volumes[0]->uuid), 36);
	snprintf(uuid, sizeof(uuid), "%s", r->volumes[0]->uuid);
	tessera__admin__response__free_unpacked(r, NULL);

	r = copy_delete(c, "cp", "00000000-0000-0000-0000-000000000000");
	assert_int_equal(r->error, -ESTALE);
	snprintf(msg, sizeof(msg), "the store copy of 'cp' here is another one (uuid %s, not "
		 "00000000-0000-0000-0000-000000000000): left alone", uuid);
	assert_string_equal(r->message, msg);
	tessera__admin__response__free_unpacked(r, NULL);
	r = simple(c, SHOW, "cp", 0);
	assert_int_equal(r->error, 0);
	assert_string_equal(r->volumes[0]->uuid, uuid);
	tessera__admin__response__free_unpacked(r, NULL);

	r = copy_delete(c, "cp", uuid);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	r = copy_uuid(c, "cp");
	assert_int_equal(r->error, -ENOENT);
	tessera__admin__response__free_unpacked(r, NULL);
	/* size 0 stays refused outside that query */
	r = simple(c, RESIZE, "cp", 0);
	assert_int_equal(r->error, -EINVAL);
	tessera__admin__response__free_unpacked(r, NULL);
	tsr_admin_close(c);
}

static Tessera__Admin__Response *snap_call(struct tsr_admin_client *c,
					   Tessera__Admin__Request__CommandCase cmd,
					   const char *volume, const char *name)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotCreate create = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	Tessera__Admin__SnapshotDelete del = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;
	Tessera__Admin__SnapshotList list = TESSERA__ADMIN__SNAPSHOT_LIST__INIT;
	Tessera__Admin__SnapshotShow show = TESSERA__ADMIN__SNAPSHOT_SHOW__INIT;
	Tessera__Admin__SnapshotDiff diff = TESSERA__ADMIN__SNAPSHOT_DIFF__INIT;
	Tessera__Admin__VolumeRollback rb = TESSERA__ADMIN__VOLUME_ROLLBACK__INIT;

	req.command_case = cmd;
	switch (cmd) {
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE:
		create.volume = (char *)volume;
		create.name = (char *)name;
		req.snapshot_create = &create;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE:
		del.volume = (char *)volume;
		del.name = (char *)name;
		req.snapshot_delete = &del;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST:
		list.volume = (char *)volume;
		req.snapshot_list = &list;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_SHOW:
		show.volume = (char *)volume;
		show.name = (char *)name;
		req.snapshot_show = &show;
		break;
	case TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DIFF:
		diff.volume = (char *)volume;
		diff.from = (char *)name;
		req.snapshot_diff = &diff;
		break;
	default:
		rb.volume = (char *)volume;
		rb.snapshot = (char *)name;
		req.volume_rollback = &rb;
		break;
	}
	return call(c, &req);
}

/* Snapshots, clones and rollback through the admin API on a standalone node. */
static void test_snapshots(void **state)
{
	struct fixture *f = *state;
	struct tsr_admin_client *c = connect_unix(f);
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeCreate clone = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	Tessera__Admin__Response *r;
	struct tsr_vol *vol = NULL;

	r = create(c, "sv", 1 << 20);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	r = snap_call(c, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE, "sv", "s1");
	if (r->error == -EOPNOTSUPP) {
		tessera__admin__response__free_unpacked(r, NULL);
		tsr_admin_close(c);
		skip(); /* the store's snapshots are not in this build */
	}
	assert_int_equal(r->error, 0);
	assert_int_equal(r->n_snapshots, 1);
	assert_string_equal(r->snapshots[0]->volume, "sv");
	assert_string_equal(r->snapshots[0]->name, "s1");
	assert_int_equal(r->snapshots[0]->size, 1 << 20);
	assert_int_equal(r->snapshots[0]->n_nbd_uris, 2);
	assert_string_equal(r->snapshots[0]->nbd_uris[0], "nbd+unix:///sv@s1?socket=/x/nbd.sock");
	assert_string_equal(r->snapshots[0]->nbd_uris[1], "nbd://127.0.0.1:10809/sv@s1");
	tessera__admin__response__free_unpacked(r, NULL);

	/* the same name again; an unknown volume; an unknown snapshot */
	r = snap_call(c, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE, "sv@s1", "");
	assert_int_equal(r->error, -EEXIST);
	assert_non_null(strstr(r->message, "already exists"));
	tessera__admin__response__free_unpacked(r, NULL);
	r = snap_call(c, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE, "nosuch", "s1");
	assert_int_equal(r->error, -ENOENT);
	assert_non_null(strstr(r->message, "volume 'nosuch' not found"));
	tessera__admin__response__free_unpacked(r, NULL);
	r = snap_call(c, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_SHOW, "sv", "nosuch");
	assert_int_equal(r->error, -ENOENT);
	assert_non_null(strstr(r->message, "snapshot 'sv@nosuch' not found"));
	tessera__admin__response__free_unpacked(r, NULL);

	/* a second one while the volume is open here: through its gate (no home: this thread) */
	assert_int_equal(tsr_vol_get(f->vols, "sv", &vol), 0);
	r = snap_call(c, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE, "sv", "s2");
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	r = snap_call(c, TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ROLLBACK, "sv", "s1");
	assert_int_equal(r->error, -EBUSY);
	assert_string_equal(r->message,
			    "volume 'sv' is in use by an NBD client; disconnect it first");
	tessera__admin__response__free_unpacked(r, NULL);
	tsr_vol_put(vol);

	r = snap_call(c, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST, "sv", "");
	assert_int_equal(r->error, 0);
	assert_int_equal(r->n_snapshots, 2);
	assert_string_equal(r->snapshots[0]->name, "s1");
	assert_string_equal(r->snapshots[1]->name, "s2");
	tessera__admin__response__free_unpacked(r, NULL);
	r = simple(c, SHOW, "sv", 0);
	assert_int_equal(r->volumes[0]->n_snapshots, 2);
	tessera__admin__response__free_unpacked(r, NULL);
	r = snap_call(c, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DIFF, "sv", "s1");
	assert_int_equal(r->error, 0);
	assert_int_equal(r->diff_bytes, 0); /* nothing written */
	tessera__admin__response__free_unpacked(r, NULL);

	/* a clone of s1, larger than its source; its parent is reported */
	clone.name = "sc";
	clone.from_volume = "sv@s1";
	clone.size = 2 << 20;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
	req.volume_create = &clone;
	r = call(c, &req);
	assert_int_equal(r->error, 0);
	assert_int_equal(r->volumes[0]->size, 2 << 20);
	assert_string_equal(r->volumes[0]->parent_volume, "sv");
	assert_string_equal(r->volumes[0]->parent_snapshot, "s1");
	tessera__admin__response__free_unpacked(r, NULL);
	clone.name = "sd";
	clone.size = 4096; /* smaller than the source */
	r = call(c, &req);
	assert_int_equal(r->error, -EINVAL);
	assert_non_null(strstr(r->message, "as large as its source"));
	tessera__admin__response__free_unpacked(r, NULL);

	/* an exported snapshot cannot be deleted, nor its volume */
	assert_int_equal(tsr_vol_get(f->vols, "sv@s2", &vol), 0);
	r = snap_call(c, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE, "sv", "s2");
	assert_int_equal(r->error, -EBUSY);
	assert_string_equal(r->message, "snapshot 'sv@s2' is exported to an NBD client; "
			    "disconnect it first");
	tessera__admin__response__free_unpacked(r, NULL);
	tsr_vol_put(vol);
	r = snap_call(c, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE, "sv", "s2");
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	r = snap_call(c, TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ROLLBACK, "sv", "s1");
	assert_int_equal(r->error, 0);
	assert_int_equal(r->n_volumes, 1);
	tessera__admin__response__free_unpacked(r, NULL);
	tsr_admin_close(c);
}

/* ---- snapshot create of an open volume: the reply comes later ---- */

/* A create sent from a thread of its own (no cmocka asserts there). */
struct create_call {
	struct tsr_admin_client *c;
	int ret;
	Tessera__Admin__Response *r;
};

static void *create_thread(void *arg)
{
	struct create_call *cc = arg;
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotCreate create = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;

	create.volume = "lv";
	create.name = "l1";
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
	req.snapshot_create = &create;
	cc->ret = tsr_admin_call(cc->c, &req, 10000, &cc->r);
	return NULL;
}

static unsigned later_out(struct fixture *f)
{
	unsigned n;

	pthread_mutex_lock(&f->srv->later_lock);
	n = f->srv->later_out;
	pthread_mutex_unlock(&f->srv->later_lock);
	return n;
}

/*
 * The volume's home worker is busy, so its cut waits: the create's reply
 * waits too, while the loop answers other clients (it does not block on the
 * cut).  Once the worker is free the cut is made and the reply sent.
 */
static void test_snapshot_create_later(void **state)
{
	struct fixture *f = *state;
	struct tsr_io_opts o = { .kind = TSR_IO_AUTO };
	struct hold h = { .held = false };
	struct create_call cc = { 0 };
	struct tsr_admin_client *c2;
	struct tsr_worker *w = NULL;
	struct tsr_vol *vol = NULL;
	Tessera__Admin__Response *r;
	pthread_t t;
	int i;

	assert_int_equal(tsr_worker_start(0, &o, &w), 0);
	tsr_volset_set_workers(f->vols, &w, 1);
	cc.c = connect_unix(f);
	c2 = connect_unix(f);
	r = create(c2, "lv", 1 << 20);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_vol_get(f->vols, "lv", &vol), 0);
	assert_ptr_equal(tsr_vol_home(vol), w);

	pthread_mutex_init(&h.lock, NULL);
	pthread_cond_init(&h.cond, NULL);
	assert_int_equal(tsr_worker_send(w, hold_msg, &h), 0);
	pthread_mutex_lock(&h.lock);
	while (!h.held)
		pthread_cond_wait(&h.cond, &h.lock);
	pthread_mutex_unlock(&h.lock);

	assert_int_equal(pthread_create(&t, NULL, create_thread, &cc), 0);
	for (i = 0; i < 10000 && later_out(f) == 0; i++)
		usleep(1000);
	assert_int_equal(later_out(f), 1); /* the create waits for the worker */
	/* meanwhile the loop serves another client: no snapshot cut yet */
	r = snap_call(c2, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST, "lv", "");
	assert_int_equal(r->error, 0);
	assert_int_equal(r->n_snapshots, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_null(cc.r);

	pthread_mutex_lock(&h.lock);
	h.released = true;
	pthread_cond_broadcast(&h.cond);
	pthread_mutex_unlock(&h.lock);
	pthread_join(t, NULL);
	assert_int_equal(cc.ret, 0);
	assert_non_null(cc.r);
	assert_int_equal(cc.r->error, 0);
	assert_int_equal(cc.r->n_snapshots, 1);
	assert_string_equal(cc.r->snapshots[0]->name, "l1");
	assert_int_equal(cc.r->snapshots[0]->size, 1 << 20);
	tessera__admin__response__free_unpacked(cc.r, NULL);
	assert_int_equal(later_out(f), 0);

	/* the same connection goes on; a duplicate name through the gate fails */
	r = snap_call(cc.c, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE, "lv", "l1");
	assert_int_equal(r->error, -EEXIST);
	assert_non_null(strstr(r->message, "already exists"));
	tessera__admin__response__free_unpacked(r, NULL);
	r = snap_call(c2, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST, "lv", "");
	assert_int_equal(r->n_snapshots, 1);
	tessera__admin__response__free_unpacked(r, NULL);

	tsr_vol_put(vol);
	tsr_admin_close(cc.c);
	tsr_admin_close(c2);
	tsr_worker_stop(w);
	tsr_volset_set_workers(f->vols, NULL, 0);
	pthread_cond_destroy(&h.cond);
	pthread_mutex_destroy(&h.lock);
}

/* A request sent from a thread of its own (no cmocka asserts there). */
struct req_call {
	struct tsr_admin_client *c;
	Tessera__Admin__Request *req;
	int ret;
	Tessera__Admin__Response *r;
};

static void *req_thread(void *arg)
{
	struct req_call *rc = arg;

	rc->ret = tsr_admin_call(rc->c, rc->req, 10000, &rc->r);
	return NULL;
}

/* Send rc->req from a thread while the worker is held; returns once the
 * server has taken a later handle for it (the request waits for the gate). */
static void req_held(struct fixture *f, struct req_call *rc, pthread_t *t)
{
	int i;

	assert_int_equal(pthread_create(t, NULL, req_thread, rc), 0);
	for (i = 0; i < 10000 && later_out(f) == 0; i++)
		usleep(1000);
	assert_int_equal(later_out(f), 1);
}

/*
 * A standalone node's snapshot delete and clone of an open volume wait for
 * its gate without blocking the loop: while the home worker is held, the
 * loop answers other clients (the snapshot still listed, the clone not there
 * yet); released, the replies come (nothing listed; the clone, grown to the
 * size asked).  A delete of a missing snapshot through the gate: -ENOENT
 * with the message, nothing pending.
 */
static void test_snapshot_delete_clone_later(void **state)
{
	struct fixture *f = *state;
	struct tsr_io_opts o = { .kind = TSR_IO_AUTO };
	struct hold h = { .held = false };
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotDelete del = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;
	Tessera__Admin__VolumeCreate cr = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	struct req_call rc = { 0 };
	struct tsr_admin_client *c2;
	struct tsr_worker *w = NULL;
	struct tsr_vol *vol = NULL;
	Tessera__Admin__Response *r;
	pthread_t t;

	assert_int_equal(tsr_worker_start(0, &o, &w), 0);
	tsr_volset_set_workers(f->vols, &w, 1);
	rc.c = connect_unix(f);
	c2 = connect_unix(f);
	r = create(c2, "lv", 1 << 20);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_create(f->store, "lv", "d1", NULL), 0);
	assert_int_equal(tsr_vol_get(f->vols, "lv", &vol), 0);
	assert_ptr_equal(tsr_vol_home(vol), w);
	pthread_mutex_init(&h.lock, NULL);
	pthread_cond_init(&h.cond, NULL);

	/* delete through the held gate */
	del.volume = "lv";
	del.name = "d1";
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE;
	req.snapshot_delete = &del;
	rc.req = &req;
	hold_start(&h, w);
	req_held(f, &rc, &t);
	r = snap_call(c2, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST, "lv", "");
	assert_int_equal(r->error, 0);
	assert_int_equal(r->n_snapshots, 1); /* not deleted yet */
	tessera__admin__response__free_unpacked(r, NULL);
	assert_null(rc.r);
	hold_release(&h);
	pthread_join(t, NULL);
	assert_int_equal(rc.ret, 0);
	assert_non_null(rc.r);
	assert_int_equal(rc.r->error, 0);
	tessera__admin__response__free_unpacked(rc.r, NULL);
	rc.r = NULL;
	assert_int_equal(later_out(f), 0);
	r = snap_call(c2, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST, "lv", "");
	assert_int_equal(r->n_snapshots, 0);
	tessera__admin__response__free_unpacked(r, NULL);

	/* a clone of the open volume's content, grown: through the held gate */
	cr.name = "cl";
	cr.size = 2 << 20;
	cr.from_volume = "lv";
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
	req.volume_create = &cr;
	hold_start(&h, w);
	req_held(f, &rc, &t);
	r = simple(c2, SHOW, "cl", 0);
	assert_int_equal(r->error, -ENOENT); /* not made yet, and the loop answers */
	tessera__admin__response__free_unpacked(r, NULL);
	hold_release(&h);
	pthread_join(t, NULL);
	assert_int_equal(rc.ret, 0);
	assert_non_null(rc.r);
	assert_int_equal(rc.r->error, 0);
	assert_int_equal(rc.r->n_volumes, 1);
	assert_string_equal(rc.r->volumes[0]->name, "cl");
	assert_int_equal(rc.r->volumes[0]->size, 2 << 20);
	assert_string_equal(rc.r->volumes[0]->parent_volume, "lv");
	tessera__admin__response__free_unpacked(rc.r, NULL);
	rc.r = NULL;
	assert_int_equal(later_out(f), 0);

	/* the same clone name again, through the gate: -EEXIST, said */
	r = call(c2, &req);
	assert_int_equal(r->error, -EEXIST);
	assert_non_null(strstr(r->message, "already exists"));
	tessera__admin__response__free_unpacked(r, NULL);
	/* a missing snapshot through the gate: -ENOENT, nothing pending */
	r = snap_call(c2, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE, "lv", "nosuch");
	assert_int_equal(r->error, -ENOENT);
	assert_non_null(strstr(r->message, "not found"));
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(later_out(f), 0);

	tsr_vol_put(vol);
	tsr_admin_close(rc.c);
	tsr_admin_close(c2);
	tsr_worker_stop(w);
	tsr_volset_set_workers(f->vols, NULL, 0);
	pthread_cond_destroy(&h.cond);
	pthread_mutex_destroy(&h.lock);
}

/* ---- the same through a cluster hook (engine/cluster/snapshot.c's way) ---- */

/* A stand-in for the cluster layer: SnapshotCreate through the gate, the
 * reply later; everything else answered by the node. */
struct fake_cluster {
	struct tsr_volset *vols;   /* set by the test before the request */
	bool had_server;           /* admin_handling_server() inside the hook */
	char vol[64];
	struct tsr_snap_req req;
	int status;                /* the cut's result (home worker) */
	struct admin_later *later;
	unsigned replies;          /* fake_reply runs (loop) */
};

static struct fake_cluster fake;

static void fake_cut(void *arg, int status)
{
	struct fake_cluster *fc = arg;

	fc->status = status;
	admin_later_done(fc->later);
}

static void fake_reply(struct tsr_admin_server *srv, void *arg, Tessera__Admin__Response *resp)
{
	struct fake_cluster *fc = arg;
	Tessera__Admin__Snapshot *sn;

	(void)srv;
	fc->replies++;
	if (fc->status) {
		admin_fail(resp, fc->status, "cut failed");
		return;
	}
	resp->snapshots = calloc(1, sizeof(*resp->snapshots));
	sn = calloc(1, sizeof(*sn));
	if (resp->snapshots == NULL || sn == NULL) {
		free(sn);
		admin_fail(resp, -ENOMEM, "out of memory");
		return;
	}
	tessera__admin__snapshot__init(sn);
	sn->volume = admin_strdup(fc->vol);
	sn->name = admin_strdup(fc->req.snap);
	resp->snapshots[0] = sn;
	resp->n_snapshots = 1;
}

static bool fake_handle(void *arg, const Tessera__Admin__Request *req,
			Tessera__Admin__Response *resp)
{
	struct fake_cluster *fc = arg;
	struct tsr_admin_server *srv = admin_handling_server();
	int ret;

	if (req->command_case != TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE)
		return false;
	fc->had_server = srv != NULL;
	snprintf(fc->vol, sizeof(fc->vol), "%s", req->snapshot_create->volume);
	fc->req = (struct tsr_snap_req){ .op = TSR_SNAP_CREATE };
	snprintf(fc->req.snap, sizeof(fc->req.snap), "%s", req->snapshot_create->name);
	fc->later = srv ? admin_later_begin(srv, fake_reply, fc) : NULL;
	if (fc->later == NULL) {
		admin_fail(resp, -EPROTO, "no later reply");
		return true;
	}
	ret = tsr_volset_snap_async(fc->vols, fc->vol, &fc->req, fake_cut, fc);
	if (ret) {
		admin_later_cancel(fc->later);
		admin_fail(resp, ret, "not open");
	}
	return true;
}

static const struct tsr_admin_cluster fake_hooks = {
	.handle = fake_handle, .arg = &fake, .node_id = "n1", .address = "127.0.0.1:1",
};

static int setup_cluster(void **state)
{
	int ret;

	memset(&fake, 0, sizeof(fake));
	setup_hooks = &fake_hooks;
	ret = setup(state);
	setup_hooks = NULL;
	return ret;
}

/*
 * A cluster hook's SnapshotCreate of a volume whose home worker is busy: the
 * hook finds the server (admin_handling_server, NULL outside a request),
 * replies later, and the loop answers status meanwhile; a volume not open
 * here: the hook's error at once, nothing left pending.
 */
static void test_cluster_hook_create_later(void **state)
{
	struct fixture *f = *state;
	struct tsr_io_opts o = { .kind = TSR_IO_AUTO };
	struct hold h = { .held = false };
	struct create_call cc = { 0 };
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__StatusGet get = TESSERA__ADMIN__STATUS_GET__INIT;
	struct tsr_admin_client *c2;
	struct tsr_worker *w = NULL;
	struct tsr_vol *vol = NULL;
	Tessera__Admin__Response *r;
	pthread_t t;
	int i;

	assert_null(admin_handling_server()); /* not inside a request */
	fake.vols = f->vols;
	assert_int_equal(tsr_worker_start(0, &o, &w), 0);
	tsr_volset_set_workers(f->vols, &w, 1);
	assert_int_equal(tsr_store_vol_create(f->store, "lv", 1 << 20, NULL), 0);
	assert_int_equal(tsr_vol_get(f->vols, "lv", &vol), 0);
	cc.c = connect_unix(f);
	c2 = connect_unix(f);

	pthread_mutex_init(&h.lock, NULL);
	pthread_cond_init(&h.cond, NULL);
	assert_int_equal(tsr_worker_send(w, hold_msg, &h), 0);
	pthread_mutex_lock(&h.lock);
	while (!h.held)
		pthread_cond_wait(&h.cond, &h.lock);
	pthread_mutex_unlock(&h.lock);

	assert_int_equal(pthread_create(&t, NULL, create_thread, &cc), 0);
	for (i = 0; i < 10000 && later_out(f) == 0; i++)
		usleep(1000);
	assert_int_equal(later_out(f), 1);
	assert_true(fake.had_server);
	req.command_case = STATUS; /* the loop answers while the cut waits */
	req.status = &get;
	r = call(c2, &req);
	assert_int_equal(r->error, 0);
	assert_non_null(r->status);
	assert_string_equal(r->status->node_id, "n1");
	tessera__admin__response__free_unpacked(r, NULL);
	assert_null(cc.r);
	assert_int_equal(fake.replies, 0);

	pthread_mutex_lock(&h.lock);
	h.released = true;
	pthread_cond_broadcast(&h.cond);
	pthread_mutex_unlock(&h.lock);
	pthread_join(t, NULL);
	assert_int_equal(cc.ret, 0);
	assert_non_null(cc.r);
	assert_int_equal(cc.r->error, 0);
	assert_int_equal(cc.r->n_snapshots, 1);
	assert_string_equal(cc.r->snapshots[0]->volume, "lv");
	assert_string_equal(cc.r->snapshots[0]->name, "l1");
	tessera__admin__response__free_unpacked(cc.r, NULL);
	assert_int_equal(fake.replies, 1);
	assert_int_equal(later_out(f), 0);
	r = snap_call(c2, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST, "lv", "");
	assert_int_equal(r->error, 0);
	assert_int_equal(r->n_snapshots, 1); /* the cut was made */
	tessera__admin__response__free_unpacked(r, NULL);

	/* not open here: the hook cancels, the error comes at once */
	r = snap_call(cc.c, TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE, "nosuch", "x");
	assert_int_equal(r->error, -ENOENT);
	assert_string_equal(r->message, "not open");
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(later_out(f), 0);
	assert_int_equal(fake.replies, 1);

	tsr_vol_put(vol);
	tsr_admin_close(cc.c);
	tsr_admin_close(c2);
	tsr_worker_stop(w);
	tsr_volset_set_workers(f->vols, NULL, 0);
	pthread_cond_destroy(&h.cond);
	pthread_mutex_destroy(&h.lock);
}

/* ---- the client on a libev loop (admin_async.c) ---- */

/* One async call's outcome, filled by its callback. */
struct async_res {
	unsigned fired;            /* callback runs: must end at exactly 1 */
	int status;
	Tessera__Admin__Response *resp;
};

static void async_res_cb(void *arg, int status, Tessera__Admin__Response *resp)
{
	struct async_res *ar = arg;

	ar->fired++;
	ar->status = status;
	ar->resp = resp;
}

/* Run loop until ar's callback fired (or 20 s). */
static void async_wait(struct ev_loop *loop, struct async_res *ar)
{
	for (int i = 0; i < 20000 && ar->fired == 0; i++)
		ev_run(loop, EVRUN_NOWAIT | EVRUN_ONCE), usleep(1000);
	assert_int_equal(ar->fired, 1);
}

/* A TCP listener on 127.0.0.1 that nobody accepts from: "127.0.0.1:PORT". */
static int silent_listener(char *hostport, size_t len)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	snprintf(hostport, len, "127.0.0.1:%u", ntohs(sin.sin_port));
	return fd;
}

/*
 * admin_async_call from a loop of the test's own: a status through the
 * server's TCP listener with the token (and a wrong one: the server's
 * refusal); nobody listening: -ECONNREFUSED (at once or through the
 * callback); a peer that never answers: -ETIMEDOUT; a cancel: -ECANCELED;
 * a reply frame over 1 MiB: -EPROTO; a bad address: -EINVAL and the
 * callback never fires.  Each callback fires exactly once.
 */
static void test_async_client(void **state)
{
	struct fixture *f = *state;
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__StatusGet get = TESSERA__ADMIN__STATUS_GET__INIT;
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct async_res ar = { 0 };
	struct admin_async *a = NULL;
	char hostport[64];
	int lfd, cfd, ret;

	assert_non_null(loop);
	req.command_case = STATUS;
	req.status = &get;

	/* through the server's TCP listener */
	assert_int_equal(admin_async_call(loop, f->tcp_name + 4, TOKEN, &req, 10000,
					  async_res_cb, &ar, &a), 0);
	assert_int_equal(ar.fired, 0); /* never before the call returns */
	async_wait(loop, &ar);
	assert_int_equal(ar.status, 0);
	assert_non_null(ar.resp);
	assert_int_equal(ar.resp->error, 0);
	assert_non_null(ar.resp->status);
	tessera__admin__response__free_unpacked(ar.resp, NULL);
	assert_string_equal(req.token, ""); /* the caller's request is not written to */

	memset(&ar, 0, sizeof(ar));
	assert_int_equal(admin_async_call(loop, f->tcp_name + 4, "00", &req, 10000,
					  async_res_cb, &ar, NULL), 0);
	async_wait(loop, &ar);
	assert_int_equal(ar.status, 0);
	assert_int_equal(ar.resp->error, -EACCES);
	assert_non_null(strstr(ar.resp->message, "authentication failed"));
	tessera__admin__response__free_unpacked(ar.resp, NULL);

	/* nobody listens there any more */
	lfd = silent_listener(hostport, sizeof(hostport));
	close(lfd);
	memset(&ar, 0, sizeof(ar));
	ret = admin_async_call(loop, hostport, TOKEN, &req, 10000, async_res_cb, &ar, NULL);
	if (ret == 0) {
		async_wait(loop, &ar);
		assert_int_equal(ar.status, -ECONNREFUSED);
		assert_null(ar.resp);
	} else {
		assert_int_equal(ret, -ECONNREFUSED);
		assert_int_equal(ar.fired, 0);
	}

	/* a peer that takes the connection and never answers */
	lfd = silent_listener(hostport, sizeof(hostport));
	memset(&ar, 0, sizeof(ar));
	assert_int_equal(admin_async_call(loop, hostport, TOKEN, &req, 300, async_res_cb, &ar,
					  NULL), 0);
	async_wait(loop, &ar);
	assert_int_equal(ar.status, -ETIMEDOUT);
	assert_null(ar.resp);

	/* cancelled while it waits */
	memset(&ar, 0, sizeof(ar));
	assert_int_equal(admin_async_call(loop, hostport, TOKEN, &req, 10000, async_res_cb, &ar,
					  &a), 0);
	ev_run(loop, EVRUN_NOWAIT);
	assert_int_equal(ar.fired, 0);
	admin_async_cancel(a);
	assert_int_equal(ar.fired, 1);
	assert_int_equal(ar.status, -ECANCELED);
	for (int i = 0; i < 20; i++)
		ev_run(loop, EVRUN_NOWAIT);
	assert_int_equal(ar.fired, 1);

	/* a reply announcing more than 1 MiB */
	memset(&ar, 0, sizeof(ar));
	assert_int_equal(admin_async_call(loop, hostport, TOKEN, &req, 10000, async_res_cb, &ar,
					  NULL), 0);
	for (int i = 0; i < 100; i++) /* connected (the listener's backlog took it) */
		ev_run(loop, EVRUN_NOWAIT);
	/* the backlog holds the earlier, closed connections first: answer each */
	while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
		static const uint8_t big[4] = { 0x7f, 0xff, 0xff, 0xff };

		(void)!send(cfd, big, sizeof(big), MSG_NOSIGNAL);
		close(cfd);
	}
	async_wait(loop, &ar);
	assert_int_equal(ar.status, -EPROTO);
	assert_null(ar.resp);
	close(lfd);

	/* bad input: no callback */
	memset(&ar, 0, sizeof(ar));
	assert_int_equal(admin_async_call(loop, "no-port", TOKEN, &req, 1000, async_res_cb, &ar,
					  NULL), -EINVAL);
	assert_int_equal(admin_async_call(loop, hostport, TOKEN, &req, 0, async_res_cb, &ar,
					  NULL), -EINVAL);
	ev_run(loop, EVRUN_NOWAIT);
	assert_int_equal(ar.fired, 0);
	ev_loop_destroy(loop);
}

static void test_tcp_token(void **state)
{
	struct fixture *f = *state;
	struct tsr_admin_client *c = NULL;
	Tessera__Admin__Response *r = NULL;
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__StatusGet get = TESSERA__ADMIN__STATUS_GET__INIT;
	const char *hostport = f->tcp_name + 4; /* "tcp:" */
	char off_by_one[TSR_ADMIN_TOKEN_LEN + 1];

	req.command_case = STATUS;
	req.status = &get;
	/* wrong token: an error reply, then the connection is closed */
	assert_int_equal(tsr_admin_connect_tcp(hostport, TOKEN "x", &c), 0);
	assert_int_equal(tsr_admin_call(c, &req, 10000, &r), 0);
	assert_int_equal(r->error, -EACCES);
	assert_non_null(strstr(r->message, "authentication failed"));
	tessera__admin__response__free_unpacked(r, NULL);
	assert_true(tsr_admin_call(c, &req, 10000, &r) < 0);
	tsr_admin_close(c);
	/* same length, one character off */
	snprintf(off_by_one, sizeof(off_by_one), "%s", TOKEN);
	off_by_one[TSR_ADMIN_TOKEN_LEN - 1] ^= 1;
	assert_int_equal(tsr_admin_connect_tcp(hostport, off_by_one, &c), 0);
	assert_int_equal(tsr_admin_call(c, &req, 10000, &r), 0);
	assert_int_equal(r->error, -EACCES);
	tessera__admin__response__free_unpacked(r, NULL);
	tsr_admin_close(c);
	/* the right token: served, several requests on one connection */
	assert_int_equal(tsr_admin_connect_tcp(hostport, TOKEN, &c), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(tsr_admin_call(c, &req, 10000, &r), 0);
		assert_int_equal(r->error, 0);
		assert_non_null(r->status);
		tessera__admin__response__free_unpacked(r, NULL);
	}
	tsr_admin_close(c);
}

static void test_bad_frames(void **state)
{
	struct fixture *f = *state;
	struct tsr_admin_client *c;
	Tessera__Admin__Response *r = NULL;
	const uint8_t big[4] = { 0x00, 0x10, 0x00, 0x01 };      /* 1 MiB + 1 */
	const uint8_t junk[7] = { 0, 0, 0, 3, 0xff, 0xff, 0xff }; /* invalid protobuf */
	uint8_t hdr[4], *body;
	uint32_t len;
	int fd;

	/* oversized frame: the server closes the connection */
	assert_int_equal(tsr_admin_connect_socket(f->sock, NULL, &fd), 0);
	assert_int_equal(send(fd, big, 4, MSG_NOSIGNAL), 4);
	assert_int_equal(recv(fd, hdr, 4, MSG_WAITALL), 0);
	close(fd);
	/* junk protobuf: an error reply, and the connection stays usable */
	assert_int_equal(tsr_admin_connect_socket(f->sock, NULL, &fd), 0);
	assert_int_equal(send(fd, junk, sizeof(junk), MSG_NOSIGNAL), sizeof(junk));
	assert_int_equal(recv(fd, hdr, 4, MSG_WAITALL), 4);
	len = admin_frame_len(hdr);
	assert_true(len > 0 && len < 4096);
	body = malloc(len);
	assert_non_null(body);
	assert_int_equal(recv(fd, body, len, MSG_WAITALL), (ssize_t)len);
	assert_int_equal(tsr_admin_response_parse(body, len, &r, NULL), 0);
	assert_int_equal(r->error, -EINVAL);
	assert_non_null(strstr(r->message, "bad request"));
	tessera__admin__response__free_unpacked(r, NULL);
	free(body);
	close(fd);
	/* the server still answers */
	c = connect_unix(f);
	r = simple(c, STATUS, NULL, 0);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	tsr_admin_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_volume_lifecycle, setup, admin_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_delete_in_use, setup, admin_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_delete_copy_by_uuid, setup, admin_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_copy_query_sessions, setup,
						admin_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_snapshots, setup, admin_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_create_later, setup, admin_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_delete_clone_later, setup, admin_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_cluster_hook_create_later, setup_cluster,
						admin_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_async_client, setup, admin_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_tcp_token, setup, admin_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_bad_frames, setup, admin_fixture_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
