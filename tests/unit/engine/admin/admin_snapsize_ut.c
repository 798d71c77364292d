/*
 * Unit tests of SnapshotCreate.size (proto/admin.proto): the node-to-node
 * (local_copy) cut of one store copy at the volume record's size, which
 * engine/cluster/snapshot.c sends every copy of a detached volume, so that a
 * copy grown past the record still cuts that size.  The parser
 * (admin_msg.c) takes a size with local_copy only, in whole 4 KiB blocks;
 * the server (admin_ops.c) cuts the store copy at that size, refuses a size
 * larger than the copy with a message naming the copy's size, and cuts at
 * the copy's size when the size is 0 (what a coordinator of an earlier
 * build sends).  A real store in a temporary directory under /var/tmp, the
 * server's libev loop on a thread of its own, the blocking client here.
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

#include <cmocka.h>

#include "admin/admin_internal.h"
#include "tessera/vol.h"

#define MIB (1024ull * 1024)

/* ---- the parser ---------------------------------------------------------- */

static int parse_create(const Tessera__Admin__SnapshotCreate *sc, uint64_t *size_out,
			const char **why)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT, *out = NULL;
	uint8_t *frame;
	size_t len;
	int ret;

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
	req.snapshot_create = (Tessera__Admin__SnapshotCreate *)sc;
	assert_int_equal(admin_frame_pack(&req.base, &frame, &len), 0);
	ret = tsr_admin_request_parse(frame + 4, len - 4, &out, why);
	free(frame);
	if (ret == 0) {
		*size_out = out->snapshot_create->size;
		tessera__admin__request__free_unpacked(out, NULL);
	} else {
		assert_null(out);
	}
	return ret;
}

static void test_parse_size(void **state)
{
	Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	const char *why = NULL;
	uint64_t size = 1;

	(void)state;
	sc.volume = "v";
	sc.name = "s1";
	sc.local_copy = true;
	sc.size = 8 * MIB;
	assert_int_equal(parse_create(&sc, &size, &why), 0);
	assert_int_equal(size, 8 * MIB);
	sc.size = 0; /* the copy's own size, as before the field */
	assert_int_equal(parse_create(&sc, &size, &why), 0);
	assert_int_equal(size, 0);
	sc.size = 8 * MIB + 512; /* not whole blocks */
	assert_int_equal(parse_create(&sc, &size, &why), -EINVAL);
	assert_non_null(strstr(why, "multiple of 4 KiB"));
	sc.local_copy = false; /* a client's create: a snapshot has its volume's size */
	sc.size = 8 * MIB;
	assert_int_equal(parse_create(&sc, &size, &why), -EINVAL);
	assert_non_null(strstr(why, "internal"));
}

/* ---- the server ---------------------------------------------------------- */

struct fixture {
	char dir[64];
	char sock[128];
	struct tsr_store *store;
	struct tsr_volset *vols;
	struct ev_loop *loop;
	ev_async stop;
	struct tsr_admin_server *srv;
	pthread_t thread;
};

static void stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

static void *loop_thread(void *arg)
{
	struct fixture *f = arg;

	ev_run(f->loop, 0);
	return NULL;
}

static int setup(void **state)
{
	struct tsr_admin_server_opts opts = {0};
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/var/tmp/admin_snapsize_ut.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->sock, sizeof(f->sock), "%s/admin.sock", f->dir);
	assert_int_equal(tsr_store_open(f->dir, &(struct tsr_store_opts){0}, &f->store), 0);
	assert_int_equal(tsr_volset_create(f->store, &f->vols), 0);
	f->loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(f->loop);
	ev_async_init(&f->stop, stop_cb);
	ev_async_start(f->loop, &f->stop);
	opts.loop = f->loop;
	opts.store = f->store;
	opts.vols = f->vols;
	opts.unix_path = f->sock;
	opts.node.data_dir = f->dir;
	opts.node.io_backend = "io_uring";
	opts.node.workers = 1;
	assert_int_equal(tsr_admin_server_create(&opts, &f->srv), 0);
	assert_int_equal(pthread_create(&f->thread, NULL, loop_thread, f), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	ev_async_send(f->loop, &f->stop);
	pthread_join(f->thread, NULL);
	tsr_admin_server_destroy(f->srv);
	ev_loop_destroy(f->loop);
	tsr_volset_destroy(f->vols);
	tsr_store_close(f->store);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", f->dir);
	free(f);
	return 0;
}

/* The local_copy SnapshotCreate of v@snap at size; the reply (to free). */
static Tessera__Admin__Response *cut(struct fixture *f, const char *snap, uint64_t size)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	Tessera__Admin__Response *resp = NULL;
	struct tsr_admin_client *c = NULL;

	sc.volume = "v";
	sc.name = (char *)snap;
	sc.local_copy = true;
	sc.size = size;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
	req.snapshot_create = &sc;
	assert_int_equal(tsr_admin_connect_unix(f->sock, &c), 0);
	assert_int_equal(tsr_admin_call(c, &req, 10000, &resp), 0);
	assert_non_null(resp);
	tsr_admin_close(c);
	return resp;
}

/* A copy of 16 MiB whose record says 8 MiB: the cut has 8 MiB. */
static void test_cut_sized(void **state)
{
	struct fixture *f = *state;
	struct tsr_snap_info si;
	Tessera__Admin__Response *r;

	assert_int_equal(tsr_store_vol_create(f->store, "v", 16 * MIB, NULL), 0);
	r = cut(f, "s1", 8 * MIB);
	assert_int_equal(r->error, 0);
	assert_int_equal(r->n_snapshots, 1);
	assert_int_equal(r->snapshots[0]->size, 8 * MIB);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s1", &si), 0);
	assert_int_equal(si.size, 8 * MIB);

	/* 0: the copy's own size (a coordinator of an earlier build) */
	r = cut(f, "s2", 0);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s2", &si), 0);
	assert_int_equal(si.size, 16 * MIB);

	/* the copy's size exactly */
	r = cut(f, "s3", 16 * MIB);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s3", &si), 0);
	assert_int_equal(si.size, 16 * MIB);
}

/* A size larger than the copy: refused, the message says the copy's size,
 * nothing cut. */
static void test_cut_larger_than_copy(void **state)
{
	struct fixture *f = *state;
	struct tsr_snap_info si;
	Tessera__Admin__Response *r;

	assert_int_equal(tsr_store_vol_create(f->store, "v", 8 * MIB, NULL), 0);
	r = cut(f, "big", 16 * MIB);
	assert_int_equal(r->error, -EINVAL);
	assert_non_null(strstr(r->message, "this node's copy is 8.0 MiB"));
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "big", &si), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_size),
	    cmocka_unit_test_setup_teardown(test_cut_sized, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cut_larger_than_copy, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
