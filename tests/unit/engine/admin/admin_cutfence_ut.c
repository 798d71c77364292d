/*
 * Unit tests of SnapshotCreate.epoch/epoch_set and SnapshotDelete.epoch/
 * epoch_set (proto/admin.proto): a detached volume's cut (or delete) on one
 * store copy fenced by the volume record's epoch at the request's start
 * (cluster/snapshot.c).  The parser (admin_msg.c) takes an epoch with
 * local_copy only; the server (admin_ops.c) refuses -ESTALE, with a message
 * saying the volume was attached meanwhile, when the copy's epoch (raised
 * by an attach's OPEN) is past it, cuts nothing then, and cuts as before at
 * an epoch not below the copy's or without epoch_set (what a handling node
 * of an earlier build sends).
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

static int parse(Tessera__Admin__Request *req, const char **why)
{
	Tessera__Admin__Request *out = NULL;
	uint8_t *frame;
	size_t len;
	int ret;

	assert_int_equal(admin_frame_pack(&req->base, &frame, &len), 0);
	ret = tsr_admin_request_parse(frame + 4, len - 4, &out, why);
	free(frame);
	if (ret == 0)
		tessera__admin__request__free_unpacked(out, NULL);
	else
		assert_null(out);
	return ret;
}

static void test_parse_epoch(void **state)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	Tessera__Admin__SnapshotDelete sd = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;
	const char *why = NULL;

	(void)state;
	sc.volume = "v";
	sc.name = "s1";
	sc.local_copy = true;
	sc.epoch_set = true;
	sc.epoch = 0; /* a real epoch: a volume never attached */
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
	req.snapshot_create = &sc;
	assert_int_equal(parse(&req, &why), 0);
	sc.local_copy = false; /* a client's create: no epoch */
	assert_int_equal(parse(&req, &why), -EINVAL);
	assert_non_null(strstr(why, "internal"));
	sd.volume = "v";
	sd.name = "s1";
	sd.local_copy = true;
	sd.epoch_set = true;
	sd.epoch = 7;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE;
	req.snapshot_delete = &sd;
	assert_int_equal(parse(&req, &why), 0);
	sd.local_copy = false;
	assert_int_equal(parse(&req, &why), -EINVAL);
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
	snprintf(f->dir, sizeof(f->dir), "/var/tmp/admin_cutfence_ut.XXXXXX");
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

/* The local_copy create (or delete) of v@snap, fenced at epoch when set;
 * the reply (to free). */
static Tessera__Admin__Response *call(struct fixture *f, bool create, const char *snap,
				      bool epoch_set, uint64_t epoch)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SnapshotCreate sc = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	Tessera__Admin__SnapshotDelete sd = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;
	Tessera__Admin__Response *resp = NULL;
	struct tsr_admin_client *c = NULL;

	if (create) {
		sc.volume = "v";
		sc.name = (char *)snap;
		sc.local_copy = true;
		sc.epoch_set = epoch_set;
		sc.epoch = epoch;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
		req.snapshot_create = &sc;
	} else {
		sd.volume = "v";
		sd.name = (char *)snap;
		sd.local_copy = true;
		sd.epoch_set = epoch_set;
		sd.epoch = epoch;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE;
		req.snapshot_delete = &sd;
	}
	assert_int_equal(tsr_admin_connect_unix(f->sock, &c), 0);
	assert_int_equal(tsr_admin_call(c, &req, 10000, &resp), 0);
	assert_non_null(resp);
	tsr_admin_close(c);
	return resp;
}

/* A copy opened at epoch 12 (an attach meanwhile): a create or delete
 * fenced below it is refused, nothing changed; at 12 or above, or unfenced,
 * it acts. */
static void test_fence(void **state)
{
	struct fixture *f = *state;
	struct tsr_snap_info si;
	Tessera__Admin__Response *r;

	assert_int_equal(tsr_store_vol_create(f->store, "v", 8 * MIB, NULL), 0);
	/* never opened: epoch 0 passes */
	r = call(f, true, "s0", true, 0);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s0", &si), 0);

	assert_int_equal(tsr_store_vol_set_epoch(f->store, "v", 12), 0);
	r = call(f, true, "s1", true, 11);
	assert_int_equal(r->error, -ESTALE);
	assert_non_null(strstr(r->message, "attached meanwhile"));
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s1", &si), -ENOENT);
	r = call(f, true, "s1", true, 12);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s1", &si), 0);
	r = call(f, true, "s2", false, 0); /* no epoch_set: not checked (an earlier build) */
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s2", &si), 0);

	r = call(f, false, "s0", true, 11);
	assert_int_equal(r->error, -ESTALE);
	assert_non_null(strstr(r->message, "attached meanwhile"));
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s0", &si), 0);
	r = call(f, false, "s0", true, 13);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s0", &si), -ENOENT);
	r = call(f, false, "s1", false, 0);
	assert_int_equal(r->error, 0);
	tessera__admin__response__free_unpacked(r, NULL);
	assert_int_equal(tsr_store_snap_info(f->store, "v", "s1", &si), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_epoch),
	    cmocka_unit_test_setup_teardown(test_fence, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
