/*
 * The detach's note on the copies still open on their nodes
 * (engine/cluster/closewait.c, cluster_close_note): the nodes of one state
 * listed together, and a note that does not fit cut short with "...".
 * Review revJ F4: each copy was listed with its own state, into a 1024-byte
 * note then a 1400-byte message, which admin_fail cut at 1024: an ec 16+4
 * volume behind a cut site lost nodes, and the message's advice.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/internal.h"

#define SILENT "its node did not answer within 5000 ms: stopped or cut off?"

static void test_grouped(void **state)
{
	const char *nodes[] = {"n1", "n2", "n3", "n4"};
	const char *states[] = {SILENT, NULL, "1 session(s) open there", SILENT};
	char note[700];

	(void)state;
	cluster_close_note(note, sizeof(note), 4, nodes, states);
	assert_string_equal(note, "n1, n4 (" SILENT "), n3 (1 session(s) open there)");
	states[0] = states[2] = states[3] = NULL;
	cluster_close_note(note, sizeof(note), 4, nodes, states);
	assert_string_equal(note, "");
}

/* ec 16+4 behind a cut site: 20 nodes, one state, in one short note. */
static void test_large_layout(void **state)
{
	char ids[TSR_LAYOUT_MAX_COPIES][64], note[700], want[2048] = "";
	const char *nodes[TSR_LAYOUT_MAX_COPIES], *states[TSR_LAYOUT_MAX_COPIES];

	(void)state;
	for (unsigned i = 0; i < TSR_LAYOUT_MAX_COPIES; i++) {
		snprintf(ids[i], sizeof(ids[i]), "storage-node-%02u", i);
		nodes[i] = ids[i];
		states[i] = SILENT;
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s", i ? ", " : "",
			 ids[i]);
	}
	snprintf(want + strlen(want), sizeof(want) - strlen(want), " (%s)", SILENT);
	cluster_close_note(note, sizeof(note), TSR_LAYOUT_MAX_COPIES, nodes, states);
	assert_string_equal(note, want);
}

/* Too long for out: cut short, ending in "...". */
static void test_cut_short(void **state)
{
	const char *nodes[] = {"n1", "n2"};
	const char *states[] = {"a", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"};
	char note[24];

	(void)state;
	cluster_close_note(note, sizeof(note), 2, nodes, states);
	assert_int_equal(strlen(note), sizeof(note) - 1);
	assert_string_equal(note, "n1 (a), n2 (bbbbbbbb...");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_grouped),
	    cmocka_unit_test(test_large_layout),
	    cmocka_unit_test(test_cut_short),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
