/*
 * A running coordinator's status of a copy slot (engine/cluster/attach.c,
 * cluster_status_copy): the layout's figures go into the record's copy of
 * that slot only when both name the same node (review F7: during a replace
 * the old node's state and counters were shown under the new node's name).
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

static void copy_init(Tessera__Admin__Copy *cp, const char *node)
{
	tessera__admin__copy__init(cp);
	cp->node = strdup(node);
	cp->state = strdup("out-of-sync");
}

static void copy_fini(Tessera__Admin__Copy *cp)
{
	free(cp->node);
	free(cp->state);
	if (cp->coordinator_has != protobuf_c_empty_string)
		free(cp->coordinator_has);
}

static void test_same_node(void **state)
{
	struct tsr_layout_copy_status lc = {.state = TSR_COPY_IN_SYNC,
					    .connected = true,
					    .counters_known = true,
					    .crc_errors = 3,
					    .cached_reads = 9,
					    .dirty_bytes = 4096};
	Tessera__Admin__Copy cp;

	(void)state;
	snprintf(lc.node_id, sizeof(lc.node_id), "n2");
	copy_init(&cp, "n2");
	cluster_status_copy(&cp, &lc);
	assert_string_equal(cp.state, "in-sync");
	assert_true(cp.connected);
	assert_true(cp.counters_known);
	assert_int_equal(cp.crc_errors, 3);
	assert_int_equal(cp.cached_reads, 9);
	assert_int_equal(cp.dirty_bytes, 4096);
	assert_string_equal(cp.coordinator_has, "");
	copy_fini(&cp);
}

/* The record lists the replace's new copy on n4, the layout still has n2's. */
static void test_other_node(void **state)
{
	struct tsr_layout_copy_status lc = {.state = TSR_COPY_IN_SYNC,
					    .connected = true,
					    .counters_known = true,
					    .crc_errors = 3,
					    .cached_reads = 9};
	Tessera__Admin__Copy cp;

	(void)state;
	snprintf(lc.node_id, sizeof(lc.node_id), "n2");
	copy_init(&cp, "n4");
	cluster_status_copy(&cp, &lc);
	assert_string_equal(cp.state, "out-of-sync"); /* the record's */
	assert_false(cp.connected);
	assert_false(cp.counters_known);
	assert_int_equal(cp.crc_errors, 0);
	assert_string_equal(cp.coordinator_has, "n2");
	copy_fini(&cp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_same_node),
	    cmocka_unit_test(test_other_node),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
