/*
 * Unit tests of erasure-coded placement (tsr_cluster_place_ec,
 * engine/cluster/placement.c): k+m chunk copies in k+m distinct failure
 * domains, capacity counted at the chunk volume size, parity rotating over
 * the chosen copies (include/tessera/ec.h geometry), and errors that say
 * what the cluster lacks.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tessera/cluster.h"
#include "tessera/ec.h"

#define GiB (1024ull * 1024 * 1024)
#define KiB 1024u

static struct tsr_place_node node(const char *id, const char *zone, uint64_t cap,
				  uint64_t prov)
{
	struct tsr_place_node n = { .id = id, .zone = zone, .site = "s1", .capacity = cap,
				    .provisioned = prov, .alive = true };
	return n;
}

/* Every chosen index distinct and in a distinct zone. */
static void assert_distinct_zones(const struct tsr_place_node *n, const unsigned *chosen,
				  unsigned count)
{
	for (unsigned i = 0; i < count; i++)
		for (unsigned j = i + 1; j < count; j++) {
			assert_int_not_equal(chosen[i], chosen[j]);
			assert_string_not_equal(n[chosen[i]].zone, n[chosen[j]].zone);
		}
}

static void test_4_2_distinct_zones(void **state)
{
	struct tsr_place_node n[] = {
		node("n1", "z1", 100 * GiB, 0),  node("n2", "z1", 100 * GiB, 50 * GiB),
		node("n3", "z2", 100 * GiB, 10 * GiB), node("n4", "z3", 100 * GiB, 0),
		node("n5", "z4", 100 * GiB, 0),  node("n6", "z5", 100 * GiB, 0),
		node("n7", "z6", 100 * GiB, 0),  node("n8", "z6", 100 * GiB, 90 * GiB),
	};
	unsigned chosen[6];
	char why[1024];

	assert_int_equal(tsr_cluster_place_ec(n, 8, TSR_FD_ZONE, 4, 2, 64 * KiB, 40 * GiB,
					      chosen, why, sizeof(why)), 0);
	assert_distinct_zones(n, chosen, 6);
	/* in z1 the emptier n1, in z6 the emptier n7 */
	for (unsigned i = 0; i < 6; i++) {
		assert_string_not_equal(n[chosen[i]].id, "n2");
		assert_string_not_equal(n[chosen[i]].id, "n8");
	}
	/* the most loaded domain's node (n3: 10 GiB used) comes last */
	assert_string_equal(n[chosen[5]].id, "n3");
}

static void test_capacity_is_the_chunk_volume(void **state)
{
	/* 100 GiB at 4+2: 25 GiB per chunk copy; every node has 30 GiB free */
	struct tsr_place_node n[] = {
		node("a", "a", 30 * GiB, 0), node("b", "b", 30 * GiB, 0),
		node("c", "c", 30 * GiB, 0), node("d", "d", 30 * GiB, 0),
		node("e", "e", 30 * GiB, 0), node("f", "f", 30 * GiB, 0),
	};
	unsigned chosen[6];
	char why[1024];

	assert_int_equal(tsr_ec_chunk_volume_size(100 * GiB, 4, 64 * KiB), 25 * GiB);
	assert_int_equal(tsr_cluster_place_ec(n, 6, TSR_FD_NODE, 4, 2, 64 * KiB, 100 * GiB,
					      chosen, why, sizeof(why)), 0);
	/* 200 GiB needs 50 GiB per copy: no room, said with the layout and the size */
	assert_int_equal(tsr_cluster_place_ec(n, 6, TSR_FD_NODE, 4, 2, 64 * KiB, 200 * GiB,
					      chosen, why, sizeof(why)), -ENOSPC);
	assert_non_null(strstr(why, "ec 4+2: "));
	assert_non_null(strstr(why, "50.0 GiB unprovisioned each"));
	/* a mirror of the same volume would not fit where the ec one does */
	assert_int_equal(tsr_cluster_place(n, 6, TSR_FD_NODE, 3, 100 * GiB, chosen, why,
					   sizeof(why)), -ENOSPC);
}

static void test_parity_rotates_over_the_copies(void **state)
{
	const unsigned k = 4, m = 2, w = k + m;
	unsigned parity[6] = { 0 }, data[6] = { 0 };

	/* over k+m stripes each copy holds every position once: m parity chunks each */
	for (uint64_t s = 0; s < 60; s++) {
		bool seen[6] = { false };

		for (unsigned p = 0; p < w; p++) {
			unsigned c = tsr_ec_copy_of(s, p, k, m);

			assert_true(c < w);
			assert_false(seen[c]);
			seen[c] = true;
			assert_int_equal(tsr_ec_position_of(s, c, k, m), p);
			if (p >= k)
				parity[c]++;
			else
				data[c]++;
		}
	}
	for (unsigned c = 0; c < w; c++) {
		assert_int_equal(parity[c], 60 * m / w);
		assert_int_equal(data[c], 60 * k / w);
	}
}

static void test_16_4_on_20_nodes(void **state)
{
	struct tsr_place_node n[21];
	char ids[21][8];
	unsigned chosen[20];
	char why[2048];

	for (int i = 0; i < 21; i++) {
		snprintf(ids[i], sizeof(ids[i]), "n%02d", i);
		n[i] = node(ids[i], ids[i], 10 * GiB, (uint64_t)i * GiB / 4);
	}
	assert_int_equal(tsr_cluster_place_ec(n, 21, TSR_FD_NODE, 16, 4, 1024 * KiB, 32 * GiB,
					      chosen, why, sizeof(why)), 0);
	for (unsigned i = 0; i < 20; i++)
		assert_int_equal(chosen[i], i); /* the most loaded one (n20) left out */
	assert_int_equal(tsr_cluster_place_ec(n, 19, TSR_FD_NODE, 16, 4, 1024 * KiB, 32 * GiB,
					      chosen, why, sizeof(why)), -ENOSPC);
	assert_non_null(strstr(why, "ec 16+4 needs 20 distinct nodes, the cluster has 19 alive"));
}

static void test_not_enough_zones(void **state)
{
	struct tsr_place_node n[] = {
		node("n1", "z1", 100 * GiB, 0), node("n2", "z2", 100 * GiB, 0),
		node("n3", "z3", 100 * GiB, 0), node("n4", "z4", 100 * GiB, 0),
		node("n5", "z4", 100 * GiB, 0), node("n6", "z5", 100 * GiB, 0),
	};
	unsigned chosen[6];
	char why[1024];

	n[5].alive = false; /* z5's only node is dead: 4 zones left */
	assert_int_equal(tsr_cluster_place_ec(n, 6, TSR_FD_ZONE, 4, 2, 64 * KiB, GiB, chosen, why,
					      sizeof(why)), -ENOSPC);
	assert_non_null(strstr(why, "ec 4+2 needs 6 nodes in distinct zones, the cluster has 4 "
			       "alive zones: z1 (n1), z2 (n2), z3 (n3), z4 (n4, n5)"));
	/* 2+1 fits in those 4 zones */
	assert_int_equal(tsr_cluster_place_ec(n, 6, TSR_FD_ZONE, 2, 1, 64 * KiB, GiB, chosen, why,
					      sizeof(why)), 0);
	assert_distinct_zones(n, chosen, 3);
}

static void test_bad_arguments(void **state)
{
	struct tsr_place_node n[] = { node("n1", "z1", 100 * GiB, 0) };
	unsigned chosen[20];
	char why[256];

	assert_int_equal(tsr_cluster_place_ec(n, 1, TSR_FD_NODE, 0, 1, 64 * KiB, GiB, chosen, why,
					      sizeof(why)), -EINVAL);
	assert_int_equal(tsr_cluster_place_ec(n, 1, TSR_FD_NODE, 17, 1, 64 * KiB, GiB, chosen,
					      why, sizeof(why)), -EINVAL);
	assert_int_equal(tsr_cluster_place_ec(n, 1, TSR_FD_NODE, 4, 0, 64 * KiB, GiB, chosen, why,
					      sizeof(why)), -EINVAL);
	assert_int_equal(tsr_cluster_place_ec(n, 1, TSR_FD_NODE, 4, 5, 64 * KiB, GiB, chosen, why,
					      sizeof(why)), -EINVAL);
	assert_int_equal(tsr_cluster_place_ec(n, 1, TSR_FD_NODE, 4, 2, 0, GiB, chosen, why,
					      sizeof(why)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_4_2_distinct_zones),
		cmocka_unit_test(test_capacity_is_the_chunk_volume),
		cmocka_unit_test(test_parity_rotates_over_the_copies),
		cmocka_unit_test(test_16_4_on_20_nodes),
		cmocka_unit_test(test_not_enough_zones),
		cmocka_unit_test(test_bad_arguments),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
