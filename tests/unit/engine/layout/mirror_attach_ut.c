/*
 * Unit tests of the mirror layout's start-up (engine/layout/mirror.c,
 * start_finish / start_done) when copies cannot be opened: what the
 * metadata store is told (the hooks' event log, mirror_test.h; the
 * environment: mirror_env.h).  Three nodes, copy 0 local on node0,
 * min_replicas 2.
 *
 * The rule: a start-up that fails records nothing (copies whose OPEN timed
 * out or was refused missed no write of this epoch; recording them would
 * shrink the in-sync set for good); one that succeeds records every copy
 * away OUT_OF_SYNC before it is ready, and fails if it cannot.
 */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "mirror_env.h"

#define MiB (1024ull * 1024)
#define VOL (16 * MiB)

static int setup(void **state)
{
	return env_setup(state, &(struct env_sizes){.vol = VOL, .file = VOL, .buf = MiB});
}

static int teardown(void **state)
{
	return env_teardown(state);
}

static void opts_init(struct env *e, struct tsr_mirror_opts *o, uint64_t epoch)
{
	env_mirror_opts(e, o, VOL, true);
	o->epoch = epoch;
	o->peer_timeout_ms = 300;
	o->region_size = 1u << 20;
}

/* Copy idx's peer never answers (peer_black_hole); its fd closed at teardown. */
static void black_hole(struct env *e, unsigned idx, char *address, size_t len)
{
	e->holes[idx] = peer_black_hole(address, len);
}

/* Hooks answered so far (none waited for): all, or OUT_OF_SYNC of copy idx. */
static unsigned hooks_now(int idx)
{
	unsigned n = 0;

	pthread_mutex_lock(&g_log.lock);
	for (unsigned i = 0; i < g_log.n; i++)
		if (g_log.ev[i].kind == EV_HOOK &&
		    (idx < 0 ||
		     (g_log.ev[i].idx == (unsigned)idx && g_log.ev[i].st == TSR_COPY_OUT_OF_SYNC)))
			n++;
	pthread_mutex_unlock(&g_log.lock);
	return n;
}

static void write_read_back(struct env *e, uint64_t off, uint8_t byte)
{
	memset(e->buf, byte, MiB);
	assert_int_equal(ldo(e->home, e->l, D_WRITE, off, MiB, e->buf, 0), 0);
	memset(e->buf, 0, MiB);
	assert_int_equal(ldo(e->home, e->l, D_READ, off, MiB, e->buf, 0), 0);
	for (uint64_t i = 0; i < MiB; i++)
		assert_int_equal(e->buf[i], byte);
}

/*
 * Copy 1 never answers (its OPEN times out), copy 2's node is down (refused):
 * 1 of 3 open, 2 needed: -EIO, and no hook at all (before the fix both were
 * recorded OUT_OF_SYNC, and no later attach could succeed).  All back, with
 * the states as recorded: the start-up succeeds with 3 in sync, records
 * nothing, and serves.
 */
static void test_failed_attach_records_nothing(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;

	opts_init(e, &o, 1);
	black_hole(e, 1, o.copies[1].address, sizeof(o.copies[1].address));
	peer_refused_address(o.copies[2].address, sizeof(o.copies[2].address));
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), -EIO);
	e->l = NULL;
	hooks_settle();
	assert_int_equal(hooks_now(-1), 0);

	opts_init(e, &o, 2);
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	tsr_layout_get_status(e->l, &s);
	assert_int_equal(s.in_sync, 3);
	write_read_back(e, 2 * MiB, 0x5a);
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(node_read_all(&e->nodes[i], e->file, VOL), 0);
		assert_int_equal(e->file[2 * MiB], 0x5a);
		assert_int_equal(e->file[3 * MiB - 1], 0x5a);
	}
	hooks_settle();
	assert_int_equal(hooks_now(-1), 0);
}

/*
 * Copy 2 away (OPEN times out), 2 of 3 open: the start-up succeeds, and the
 * copy's OUT_OF_SYNC record is answered before tsr_layout_mirror_create
 * returns (the hooks answer after 200 ms here: before the fix the record
 * was still on its way).
 */
static void test_attach_records_away_copy_first(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;

	g_log.hook_delay_ms = 200;
	opts_init(e, &o, 1);
	black_hole(e, 2, o.copies[2].address, sizeof(o.copies[2].address));
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	assert_int_equal(hooks_now(2), 1);
	tsr_layout_get_status(e->l, &s);
	assert_int_equal(s.in_sync, 2);
	write_read_back(e, 0, 0x3c);
	hooks_settle();
	assert_int_equal(hooks_now(2), 1);
	assert_int_equal(hooks_now(-1), 1);
}

/*
 * The metadata store refuses the away copy's record: the start-up fails
 * (the copy would otherwise still be listed in sync while the others take
 * writes).
 */
static void test_attach_fails_when_record_refused(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;

	g_log.hook_status = -EIO;
	opts_init(e, &o, 1);
	black_hole(e, 2, o.copies[2].address, sizeof(o.copies[2].address));
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), -EIO);
	e->l = NULL;
	hooks_settle();
	assert_int_equal(hooks_now(-1), 0);
}

/*
 * A copy that fails during the converge scrub (after an unclean detach):
 * copy 1 never answers, copy 2 opens but its node's reads take 1 s, so its
 * SUMS time out (300 ms) in the middle of the converge: 1 of 3 left, -EIO,
 * and no hook (before the fix copy 2 was recorded OUT_OF_SYNC, leaving one
 * copy recorded in sync).  Node 2 normal again, all back: the next
 * start-up converges all three, records nothing, and the copies agree.
 */
static void test_converge_failure_records_nothing(void **state)
{
	struct env *e = *state;
	struct tsr_mirror_opts o;
	struct tsr_layout_status s;
	uint8_t *first = malloc(VOL);

	assert_non_null(first);
	memset(e->buf, 0x11, MiB);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(node_store_write(&e->nodes[i], 0, MiB, e->buf), 0);
	memset(e->buf, 0x22, 4096);
	assert_int_equal(node_store_write(&e->nodes[0], 8192, 4096, e->buf), 0);
	node_stop(&e->nodes[2]);
	node_run_faulty(&e->nodes[2], "read:1+:delay=1000");

	opts_init(e, &o, 1);
	o.converge = true;
	black_hole(e, 1, o.copies[1].address, sizeof(o.copies[1].address));
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), -EIO);
	e->l = NULL;
	hooks_settle();
	assert_int_equal(hooks_now(-1), 0);

	node_stop(&e->nodes[2]);
	node_run(&e->nodes[2], 0);
	opts_init(e, &o, 2);
	o.converge = true;
	assert_int_equal(tsr_layout_mirror_create(&o, &e->l), 0);
	tsr_layout_get_status(e->l, &s);
	assert_int_equal(s.in_sync, 3);
	hooks_settle();
	assert_int_equal(hooks_now(-1), 0);
	assert_int_equal(node_read_all(&e->nodes[0], first, VOL), 0);
	assert_int_equal(first[8192], 0x22); /* the local copy wins a converge */
	for (unsigned i = 1; i < 3; i++) {
		assert_int_equal(node_read_all(&e->nodes[i], e->file, VOL), 0);
		assert_memory_equal(e->file, first, VOL);
	}
	free(first);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_failed_attach_records_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_attach_records_away_copy_first, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_attach_fails_when_record_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_converge_failure_records_nothing, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
