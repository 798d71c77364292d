/*
 * Unit tests of a consistency group's marker numbers at the source
 * (engine/site/site_marker.c, server_internal.h "site_marker.c").  The clock
 * is a parameter of site_mark_open, so a restart with the clock stepped back
 * is one call; the numbers are fed to the target's rule (site_grp_marker:
 * strictly increasing, else -EILSEQ), which a member keeps across the
 * source's restart (its durable marker).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "site/server_internal.h"

#define T0      1795000000000000ull /* a wall clock in microseconds (2026) */
#define HOUR_US 3600000000ull

struct fixture {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/tsr-marker-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/group-app.markers", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char tmp[160];

	unlink(f->path);
	snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
	unlink(tmp);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* The target side of one member: markers n at increasing seqs, released. */
struct target {
	struct site_grp g;
	uint64_t seq;
};

static void target_init(struct target *t)
{
	site_grp_init(&t->g, "app", 1);
	t->seq = 0;
	assert_int_equal(site_grp_join(&t->g, "va", 0, 0, false), 0);
}

static int target_marker(struct target *t, uint64_t n)
{
	int ret = site_grp_marker(&t->g, 0, n, ++t->seq);

	if (ret == 0)
		site_grp_release(&t->g);
	return ret;
}

/* The source's session ends and a new one opens (its restart): the target
 * keeps the member's durable marker. */
static void target_reconnect(struct target *t)
{
	uint64_t marker = t->g.m[0].released_marker;

	site_grp_leave(&t->g, 0);
	assert_int_equal(site_grp_join(&t->g, "va", marker, t->seq, false), 0);
}

/* A restart with the clock stepped back an hour: the numbers go on above
 * the old ones and the target takes them; numbered by the clock (the code
 * before) the first one is refused. */
static void test_restart_clock_back(void **state)
{
	struct fixture *f = *state;
	struct site_mark m;
	struct target t;
	uint64_t n, last = 0;

	target_init(&t);
	assert_int_equal(site_mark_open(&m, f->path, T0), 0);
	assert_int_equal(m.writes, 1);
	for (int i = 0; i < 1000; i++) {
		assert_int_equal(site_mark_next(&m, &n), 0);
		assert_true(n > last);
		assert_int_equal(target_marker(&t, n), 0);
		last = n;
	}
	assert_true(last >= T0);       /* above what a source numbering by the clock sent */
	assert_int_equal(m.writes, 1); /* one write for the batch, not one per marker */

	/* restart (nothing closed: as after a crash), the clock an hour back */
	target_reconnect(&t);
	assert_int_equal(target_marker(&t, T0 - HOUR_US + 5000), -EILSEQ); /* the clock's number */
	assert_int_equal(site_mark_open(&m, f->path, T0 - HOUR_US), 0);
	for (int i = 0; i < 1000; i++) {
		assert_int_equal(site_mark_next(&m, &n), 0);
		assert_true(n > last);
		assert_int_equal(target_marker(&t, n), 0);
		last = n;
	}
	/* and once more, the clock back further */
	target_reconnect(&t);
	assert_int_equal(site_mark_open(&m, f->path, 1), 0);
	assert_int_equal(site_mark_next(&m, &n), 0);
	assert_true(n > last);
	assert_int_equal(target_marker(&t, n), 0);
	site_grp_fini(&t.g);
}

/* A used-up reserve is written again before the next number; numbers never
 * repeat across a restart after that either. */
static void test_batches(void **state)
{
	struct fixture *f = *state;
	struct site_mark m;
	uint64_t n, first, last = 0;

	assert_int_equal(site_mark_open(&m, f->path, 100), 0);
	assert_int_equal(site_mark_next(&m, &first), 0);
	assert_int_equal(first, 100);
	for (unsigned i = 1; i < SITE_MARK_BATCH; i++)
		assert_int_equal(site_mark_next(&m, &last), 0);
	assert_int_equal(last, 100 + SITE_MARK_BATCH - 1);
	assert_int_equal(m.writes, 1);
	assert_int_equal(site_mark_next(&m, &n), 0);
	assert_int_equal(n, last + 1);
	assert_int_equal(m.writes, 2);
	last = n;
	assert_int_equal(site_mark_open(&m, f->path, 100), 0);
	assert_int_equal(site_mark_next(&m, &n), 0);
	assert_true(n > last);
	/* a clock ahead of the reserve wins (a source numbered by the clock before) */
	assert_int_equal(site_mark_open(&m, f->path, T0), 0);
	assert_int_equal(site_mark_next(&m, &n), 0);
	assert_int_equal(n, T0);
}

/* A damaged file: numbered from the clock (logged) and rewritten; a file
 * that cannot be written: open fails; no file named: the clock, in memory. */
static void test_damaged_and_errors(void **state)
{
	struct fixture *f = *state;
	struct site_mark m;
	uint64_t n, reserved;
	char bad[200];
	int fd;

	assert_int_equal(site_mark_open(&m, f->path, 1000), 0);
	reserved = m.reserved;
	fd = open(f->path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "x", 1, 9), 1); /* the reserve's second byte */
	close(fd);
	assert_int_equal(site_mark_open(&m, f->path, 5000), 0);
	assert_int_equal(site_mark_next(&m, &n), 0);
	assert_int_equal(n, 5000);
	assert_int_equal(site_mark_open(&m, f->path, 1), 0); /* rewritten: readable again */
	assert_int_equal(site_mark_next(&m, &n), 0);
	assert_int_equal(n, 5000 + SITE_MARK_BATCH);
	assert_true(reserved < n);

	snprintf(bad, sizeof(bad), "%s/no-such-dir/group-app.markers", f->dir);
	assert_int_equal(site_mark_open(&m, bad, 1000), -ENOENT);

	assert_int_equal(site_mark_open(&m, NULL, 7), 0);
	assert_int_equal(site_mark_next(&m, &n), 0);
	assert_int_equal(n, 7);
	assert_int_equal(site_mark_next(&m, &n), 0);
	assert_int_equal(n, 8);
	assert_int_equal(m.writes, 0);
}

/* A reserve that cannot be written: no number (the group skips that marker),
 * every try fails until the file can be written, then the numbers go on. */
static void test_reserve_fails(void **state)
{
	struct fixture *f = *state;
	struct site_mark m;
	uint64_t n, last = 0;
	char moved[80];

	assert_int_equal(site_mark_open(&m, f->path, 10), 0);
	for (unsigned i = 0; i < SITE_MARK_BATCH; i++)
		assert_int_equal(site_mark_next(&m, &last), 0);
	snprintf(moved, sizeof(moved), "%s-moved", f->dir);
	assert_int_equal(rename(f->dir, moved), 0); /* the file's directory gone */
	n = 0;
	assert_int_equal(site_mark_next(&m, &n), -ENOENT);
	assert_int_equal(n, 0);
	assert_int_equal(site_mark_next(&m, &n), -ENOENT);
	assert_int_equal(m.writes, 1);
	assert_int_equal(rename(moved, f->dir), 0);
	assert_int_equal(site_mark_next(&m, &n), 0);
	assert_int_equal(n, last + 1);
	assert_int_equal(m.writes, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_restart_clock_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batches, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_and_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reserve_fails, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
