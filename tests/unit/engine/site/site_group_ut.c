/*
 * Unit tests of the consistency group release rule at the target
 * (engine/site/site_group.c, server_internal.h "site_group.c").  Each test
 * feeds the rule what member sessions receive (markers with their seqs,
 * SYNC_BEGIN / SYNC_END, session ends) and checks each member's release
 * point: the seq through which its frames may reach its volume.  The
 * property defended: whenever the held members stop, they stop at ONE
 * marker number.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "site/server_internal.h"

/* The marker number member i is released to, found from its release seq. */
static uint64_t released_marker(const struct site_grp *g, unsigned i)
{
	return g->m[i].released_marker;
}

/* Two members: frames are held until both have the marker. */
static void test_two_members_hold(void **state)
{
	struct site_grp g;
	int a, b;

	(void)state;
	site_grp_init(&g, "app", 2);
	a = site_grp_join(&g, "va", 0, 0, false);
	assert_int_equal(a, 0);
	/* one member alone: nothing released, whatever it receives */
	assert_int_equal(site_grp_marker(&g, 0, 100, 5), 0);
	assert_false(site_grp_release(&g));
	assert_int_equal(site_grp_release_seq(&g, 0), 0);
	b = site_grp_join(&g, "vb", 0, 0, false);
	assert_int_equal(b, 1);
	assert_false(site_grp_release(&g)); /* vb has no marker yet */
	assert_int_equal(site_grp_release_seq(&g, 0), 0);
	assert_int_equal(site_grp_marker(&g, 1, 100, 2), 0);
	assert_true(site_grp_release(&g));
	assert_int_equal(site_grp_release_seq(&g, 0), 5);
	assert_int_equal(site_grp_release_seq(&g, 1), 2);
	assert_int_equal(released_marker(&g, 0), 100);
	assert_int_equal(released_marker(&g, 1), 100);
	/* va runs ahead by three markers: released only as far as vb */
	assert_int_equal(site_grp_marker(&g, 0, 200, 9), 0);
	assert_int_equal(site_grp_marker(&g, 0, 300, 12), 0);
	assert_int_equal(site_grp_marker(&g, 0, 400, 20), 0);
	assert_false(site_grp_release(&g));
	assert_int_equal(site_grp_release_seq(&g, 0), 5);
	assert_int_equal(site_grp_marker(&g, 1, 200, 3), 0);
	assert_true(site_grp_release(&g));
	assert_int_equal(site_grp_release_seq(&g, 0), 9);
	assert_int_equal(site_grp_release_seq(&g, 1), 3);
	assert_int_equal(g.reach, 200);
	/* vb skips past: both go to the newest marker both have (400) */
	assert_int_equal(site_grp_marker(&g, 1, 400, 7), 0);
	assert_true(site_grp_release(&g));
	assert_int_equal(site_grp_release_seq(&g, 0), 20);
	assert_int_equal(site_grp_release_seq(&g, 1), 7);
	assert_int_equal(released_marker(&g, 0), released_marker(&g, 1));
	site_grp_fini(&g);
}

/* A member whose session ends holds the others where it stopped, and a
 * rejoin resumes from its durable marker. */
static void test_session_down_blocks(void **state)
{
	struct site_grp g;
	char why[160];

	(void)state;
	site_grp_init(&g, "app", 3);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(site_grp_join(&g, i == 0 ? "v0" : i == 1 ? "v1" : "v2", 0, 0,
					       false), (int)i);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(site_grp_marker(&g, i, 10, 1 + i), 0);
	assert_true(site_grp_release(&g));
	/* v2's link is cut: v0 and v1 go on receiving */
	site_grp_leave(&g, 2);
	assert_string_equal(site_grp_blocker(&g, why, sizeof(why)),
			    "v2 (no session, newest marker 10)");
	for (unsigned i = 0; i < 2; i++) {
		assert_int_equal(site_grp_marker(&g, i, 20, 10 + i), 0);
		assert_int_equal(site_grp_marker(&g, i, 30, 20 + i), 0);
	}
	assert_false(site_grp_release(&g));
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(released_marker(&g, i), 10);
	assert_int_equal(site_grp_release_seq(&g, 0), 1);
	assert_int_equal(site_grp_release_seq(&g, 1), 2);
	/* v2 back (its state: marker 10 at seq 3); a second session is -EBUSY */
	assert_int_equal(site_grp_join(&g, "v2", 10, 3, false), 2);
	assert_int_equal(site_grp_join(&g, "v2", 10, 3, false), -EBUSY);
	assert_int_equal(site_grp_release_seq(&g, 2), 3);
	/* a marker not after its newest, or at a seq already released: -EILSEQ */
	assert_int_equal(site_grp_marker(&g, 2, 10, 9), -EILSEQ);
	assert_int_equal(site_grp_marker(&g, 2, 20, 3), -EILSEQ);
	assert_int_equal(site_grp_marker(&g, 2, 20, 8), 0);
	assert_true(site_grp_release(&g));
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(released_marker(&g, i), 20);
	assert_int_equal(site_grp_release_seq(&g, 0), 10);
	assert_int_equal(site_grp_release_seq(&g, 2), 8);
	/* v1's session ends after a store error: released to 20, durable at 10
	 * (seq 2): settled there, it holds the others at 10 until it rejoins */
	site_grp_leave(&g, 1);
	site_grp_settle(&g, 1, 10, 2);
	assert_int_equal(site_grp_marker(&g, 0, 40, 30), 0);
	assert_int_equal(site_grp_marker(&g, 2, 40, 30), 0);
	assert_false(site_grp_release(&g));
	assert_int_equal(g.reach, 10);
	assert_string_equal(site_grp_blocker(&g, why, sizeof(why)),
			    "v1 (no session, newest marker 10)");
	assert_int_equal(site_grp_join(&g, "v1", 10, 2, false), 1);
	assert_int_equal(site_grp_marker(&g, 1, 40, 12), 0);
	assert_true(site_grp_release(&g));
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(released_marker(&g, i), 40);
	assert_int_equal(site_grp_release_seq(&g, 1), 12);
	/* a fourth member than announced */
	assert_int_equal(site_grp_join(&g, "v3", 0, 0, false), -ENOSPC);
	site_grp_fini(&g);
}

/* A member in a sync runs free and does not hold the group; after its
 * SYNC_END the group meets again at the first marker all have. */
static void test_sync_runs_free(void **state)
{
	struct site_grp g;
	char why[160];

	(void)state;
	site_grp_init(&g, "db", 2);
	/* va new (initial copy: not consistent), vb consistent */
	assert_int_equal(site_grp_join(&g, "va", 0, 0, true), 0);
	assert_int_equal(site_grp_join(&g, "vb", 5, 40, false), 1);
	assert_int_equal(site_grp_release_seq(&g, 0), UINT64_MAX);
	assert_int_equal(site_grp_marker(&g, 0, 7, 3), 0);   /* logged during its sync */
	assert_int_equal(site_grp_marker(&g, 1, 7, 45), 0);
	assert_true(site_grp_release(&g));                    /* vb alone is held */
	assert_int_equal(site_grp_release_seq(&g, 1), 45);
	/* va's SYNC_END at seq 10: held from here, at marker 7 */
	site_grp_received(&g, 0, 10);
	site_grp_set_free(&g, 0, false);
	assert_int_equal(site_grp_release_seq(&g, 0), 10);
	assert_int_equal(site_grp_marker(&g, 1, 8, 50), 0);
	assert_int_equal(site_grp_marker(&g, 1, 9, 55), 0);
	assert_false(site_grp_release(&g));
	assert_string_equal(site_grp_blocker(&g, why, sizeof(why)),
			    "va (connected, newest marker 7)");
	assert_int_equal(site_grp_marker(&g, 0, 9, 14), 0);
	assert_true(site_grp_release(&g));
	assert_int_equal(site_grp_release_seq(&g, 0), 14);
	assert_int_equal(site_grp_release_seq(&g, 1), 55);
	assert_int_equal(released_marker(&g, 0), 9);
	assert_int_equal(released_marker(&g, 1), 9);
	/* vb starts a sync (SYNC_BEGIN received): free, va goes alone */
	site_grp_received(&g, 1, 60);
	site_grp_set_free(&g, 1, true);
	assert_int_equal(site_grp_release_seq(&g, 1), UINT64_MAX);
	assert_int_equal(site_grp_marker(&g, 0, 11, 20), 0);
	assert_true(site_grp_release(&g));
	assert_int_equal(site_grp_release_seq(&g, 0), 20);
	site_grp_fini(&g);
}

/*
 * Random schedule: three members receive the same marker sequence at
 * random speeds, sessions drop and come back; after every step the held
 * members' released markers are all equal (or a member is free / has not
 * reached the group's first common marker).  Without the rule (each
 * member released to its own newest marker) the same check fails, which
 * the second half shows.
 */
static void test_random_one_marker(void **state)
{
	struct site_grp g;
	uint64_t got[3] = {0}, seq[3] = {0};
	unsigned rnd = 12345, mismatches_without = 0;

	(void)state;
	site_grp_init(&g, "rnd", 3);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(site_grp_join(&g, i == 0 ? "a" : i == 1 ? "b" : "c", 0, 0, false),
				 (int)i);
	for (unsigned step = 0; step < 5000; step++) {
		unsigned i;

		rnd = rnd * 1103515245u + 12345u;
		i = (rnd >> 16) % 3;
		if (((rnd >> 8) & 63) == 0 && g.m[i].connected) {
			site_grp_leave(&g, i);
			got[i] = g.m[i].released_marker;
			seq[i] = g.m[i].release_seq;
		} else if (!g.m[i].connected) {
			assert_int_equal(site_grp_join(&g, g.m[i].volume, g.m[i].released_marker,
						       g.m[i].release_seq, false), (int)i);
		} else if (got[i] < 1000) {
			seq[i] += 1 + ((rnd >> 4) & 7); /* some frames, then the marker */
			got[i]++;
			assert_int_equal(site_grp_marker(&g, i, got[i], seq[i]), 0);
		}
		site_grp_release(&g);
		for (unsigned k = 1; k < 3; k++)
			assert_int_equal(g.m[k].released_marker, g.m[0].released_marker);
		/* what each member would have applied without the rule */
		if (got[0] != got[1] || got[1] != got[2])
			mismatches_without++;
	}
	assert_true(mismatches_without > 0);
	assert_true(g.m[0].released_marker > 100);
	site_grp_fini(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_two_members_hold),
		cmocka_unit_test(test_session_down_blocks),
		cmocka_unit_test(test_sync_runs_free),
		cmocka_unit_test(test_random_one_marker),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
