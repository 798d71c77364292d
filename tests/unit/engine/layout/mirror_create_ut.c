/*
 * Unit test of a refused mirror create (engine/layout/mirror.c,
 * tsr_layout_mirror_create): a local copy smaller than the volume is refused
 * with -EINVAL and a log line that says why (the local copy's size and the
 * size needed), worded as the EC layout's refusal of a small chunk volume.
 * The log goes to stderr: it is caught in a temporary file around the call.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tessera/layout.h"
#include "tessera/mirror.h"
#include "tessera/worker.h"
#include "../store/store_test.h"

#define MiB (1024ull * 1024)

static void set_copy_state(void *arg, const char *vol, unsigned idx, const char *node_id,
			   enum tsr_copy_state st, void (*done)(void *done_arg, int status),
			   void *done_arg)
{
	(void)arg;
	(void)vol;
	(void)idx;
	(void)node_id;
	(void)st;
	done(done_arg, 0);
}

/* Run tsr_layout_mirror_create(o) with stderr caught into log (len bytes,
 * NUL terminated); its return value. */
static int create_logged(const struct tsr_mirror_opts *o, struct tsr_layout **l, char *log,
			 size_t len)
{
	FILE *f = tmpfile();
	int saved, ret;
	size_t n;

	assert_non_null(f);
	fflush(stderr);
	saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fileno(f), STDERR_FILENO) >= 0);
	ret = tsr_layout_mirror_create(o, l);
	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	rewind(f);
	n = fread(log, 1, len - 1, f);
	log[n] = '\0';
	fclose(f);
	fputs(log, stderr); /* shown in the test's output as well */
	return ret;
}

static void test_local_copy_too_small(void **state)
{
	struct tsr_io_opts io = {.kind = TSR_IO_AUTO};
	struct tsr_mirror_opts o = {0};
	struct tsr_layout *l = NULL;
	struct tsr_worker *home = NULL;
	struct tsr_store *store;
	char dir[512], state_dir[512], log[8192];
	int ret;

	(void)state;
	assert_int_equal(scratch_dir(dir, sizeof(dir)), 0);
	assert_int_equal(scratch_dir(state_dir, sizeof(state_dir)), 0);
	assert_int_equal(tsr_store_open(dir, &(struct tsr_store_opts){0}, &store), 0);
	assert_int_equal(tsr_store_vol_create(store, "vol", 4 * MiB, NULL), 0);
	ret = tsr_worker_start(0, &io, &home);
	if (ret == -ENOSYS || ret == -EPERM) {
		print_message("no I/O backend available: %s\n", strerror(-ret));
		exit(77);
	}
	assert_int_equal(ret, 0);

	o.name = "vol";
	o.size = 8 * MiB; /* the local volume has 4 */
	o.epoch = 1;
	o.store = store;
	o.state_dir = state_dir;
	o.home = home;
	o.node_id = "node0";
	o.n_copies = 1;
	o.min_replicas = 1;
	o.hooks.set_copy_state = set_copy_state;
	snprintf(o.copies[0].node_id, sizeof(o.copies[0].node_id), "node0");
	o.copies[0].local = true;
	o.copies[0].state = TSR_COPY_IN_SYNC;
	assert_int_equal(create_logged(&o, &l, log, sizeof(log)), -EINVAL);
	assert_null(l);
	/* before: nothing logged at all */
	assert_non_null(strstr(log, "mirror vol: local copy is 4194304 bytes, 8388608 needed"));

	/* the same volume at its own size is fine */
	o.size = 4 * MiB;
	assert_int_equal(create_logged(&o, &l, log, sizeof(log)), 0);
	assert_non_null(l);
	assert_null(strstr(log, "needed"));
	tsr_layout_destroy(l);

	tsr_worker_stop(home);
	tsr_store_close(store);
	rm_rf(dir);
	rm_rf(state_dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_local_copy_too_small),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
