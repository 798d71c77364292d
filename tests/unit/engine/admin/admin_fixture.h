/*
 * The admin unit tests' server (admin_server_ut.c, admin_cutfence_ut.c,
 * admin_rollfence_ut.c, admin_snapsize_ut.c): a real store in a temporary
 * directory under /var/tmp, the admin server's libev loop on a thread of
 * its own, the blocking client on the test's thread.  Include after
 * <cmocka.h>.
 *
 * admin_fixture_open fills the base options (loop, store, volumes, the unix
 * socket, data dir, io_uring, one worker); the test may add to them before
 * admin_fixture_start creates the server and runs its loop.
 * admin_fixture_setup does both for a test needing nothing more.
 * admin_fixture_call sends one request to it; admin_fixture_parse runs a
 * request through the parser alone (no server).
 */
#ifndef TSR_TEST_ADMIN_FIXTURE_H
#define TSR_TEST_ADMIN_FIXTURE_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "admin/admin_internal.h"
#include "tessera/vol.h"

struct fixture {
	char dir[64];
	char sock[128];
	char tcp_name[320]; /* admin_server_ut: its TCP listener */
	struct tsr_store *store;
	struct tsr_volset *vols;
	struct ev_loop *loop;
	ev_async stop;
	struct tsr_admin_server *srv;
	pthread_t thread;
};

static inline void admin_fixture_stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

static inline void *admin_fixture_loop(void *arg)
{
	struct fixture *f = arg;

	ev_run(f->loop, 0);
	return NULL;
}

/* The store in /var/tmp/<name>.XXXXXX, its volumes, the loop; opts zeroed
 * and filled with the base options. */
static inline struct fixture *admin_fixture_open(const char *name,
						 struct tsr_admin_server_opts *opts)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/var/tmp/%s.XXXXXX", name);
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->sock, sizeof(f->sock), "%s/admin.sock", f->dir);
	assert_int_equal(tsr_store_open(f->dir, &(struct tsr_store_opts){ 0 }, &f->store), 0);
	assert_int_equal(tsr_volset_create(f->store, &f->vols), 0);
	f->loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(f->loop);
	ev_async_init(&f->stop, admin_fixture_stop_cb);
	ev_async_start(f->loop, &f->stop);
	*opts = (struct tsr_admin_server_opts){ 0 };
	opts->loop = f->loop;
	opts->store = f->store;
	opts->vols = f->vols;
	opts->unix_path = f->sock;
	opts->node.data_dir = f->dir;
	opts->node.io_backend = "io_uring";
	opts->node.workers = 1;
	return f;
}

/* The server (opts) and its loop's thread. */
static inline void admin_fixture_start(struct fixture *f, const struct tsr_admin_server_opts *opts)
{
	assert_int_equal(tsr_admin_server_create(opts, &f->srv), 0);
	assert_int_equal(pthread_create(&f->thread, NULL, admin_fixture_loop, f), 0);
}

static inline int admin_fixture_setup(void **state, const char *name)
{
	struct tsr_admin_server_opts opts;
	struct fixture *f = admin_fixture_open(name, &opts);

	admin_fixture_start(f, &opts);
	*state = f;
	return 0;
}

/* One request to the server on a connection of its own; the reply (to
 * free). */
static inline Tessera__Admin__Response *admin_fixture_call(struct fixture *f,
							  Tessera__Admin__Request *req)
{
	Tessera__Admin__Response *resp = NULL;
	struct tsr_admin_client *c = NULL;

	assert_int_equal(tsr_admin_connect_unix(f->sock, &c), 0);
	assert_int_equal(tsr_admin_call(c, req, 10000, &resp), 0);
	assert_non_null(resp);
	tsr_admin_close(c);
	return resp;
}

/* req packed as a frame and its body parsed as a request (freed): 0, or the
 * parser's -errno with why, and no request. */
static inline int admin_fixture_parse(Tessera__Admin__Request *req, const char **why)
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

/* cmocka's teardown: the loop stopped, the server, store and directory gone. */
static inline int admin_fixture_teardown(void **state)
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

#endif
