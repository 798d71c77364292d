/*
 * Unit tests of placement (engine/cluster/placement.c): a pure function over
 * node lists.  Distinct failure domains for node, zone and site; capacity
 * balancing; the domains of copies already placed are taken; dead and full
 * nodes are skipped; errors name what exists.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tessera/cluster.h"

#define GiB (1024ull * 1024 * 1024)

static struct tsr_place_node node(const char *id, const char *zone, const char *site,
				  uint64_t cap, uint64_t prov)
{
	struct tsr_place_node n = { .id = id, .zone = zone, .site = site, .capacity = cap,
				    .provisioned = prov, .alive = true };
	return n;
}

static void test_node_domain_prefers_free_space(void **state)
{
	struct tsr_place_node n[] = {
		node("n1", "a", "s", 100 * GiB, 90 * GiB),
		node("n2", "a", "s", 100 * GiB, 10 * GiB),
		node("n3", "b", "s", 100 * GiB, 50 * GiB),
		node("n4", "b", "s", 100 * GiB, 0),
	};
	unsigned chosen[3];
	char why[512];

	assert_int_equal(tsr_cluster_place(n, 4, TSR_FD_NODE, 3, 5 * GiB, chosen, why,
					   sizeof(why)), 0);
	/* most free first: n4 (100), n2 (90), n3 (50); n1 (10) left out */
	assert_int_equal(chosen[0], 3);
	assert_int_equal(chosen[1], 1);
	assert_int_equal(chosen[2], 2);
}

static void test_zone_one_copy_per_zone(void **state)
{
	struct tsr_place_node n[] = {
		node("n1", "a", "s", 100 * GiB, 0),
		node("n2", "a", "s", 100 * GiB, 0),
		node("n3", "b", "s", 100 * GiB, 20 * GiB),
		node("n4", "c", "s", 100 * GiB, 30 * GiB),
		node("n5", "c", "s", 100 * GiB, 10 * GiB),
	};
	unsigned chosen[3];
	char why[512];

	assert_int_equal(tsr_cluster_place(n, 5, TSR_FD_ZONE, 3, GiB, chosen, why,
					   sizeof(why)), 0);
	/* zone a: n1 (tie with n2, by id), zone c: n5, zone b: n3 */
	assert_int_equal(chosen[0], 0);
	assert_int_equal(chosen[1], 4);
	assert_int_equal(chosen[2], 2);
}

static void test_not_enough_zones_names_them(void **state)
{
	struct tsr_place_node n[] = {
		node("n1", "a", "s", 100 * GiB, 0),
		node("n2", "b", "s", 100 * GiB, 0),
		node("n3", "b", "s", 100 * GiB, 0),
	};
	unsigned chosen[3];
	char why[512];

	assert_int_equal(tsr_cluster_place(n, 3, TSR_FD_ZONE, 3, GiB, chosen, why, sizeof(why)),
			 -ENOSPC);
	assert_non_null(strstr(why, "needs 3 distinct zones; alive nodes cover 2: a (n1), "
				    "b (n2, n3)"));
}

static void test_site_domain(void **state)
{
	struct tsr_place_node n[] = {
		node("n1", "a", "s1", 100 * GiB, 0),
		node("n2", "b", "s1", 100 * GiB, 0),
		node("n3", "c", "s2", 100 * GiB, 0),
	};
	unsigned chosen[3];
	char why[512];

	assert_int_equal(tsr_cluster_place(n, 3, TSR_FD_SITE, 2, GiB, chosen, why, sizeof(why)),
			 0);
	assert_true((chosen[0] == 2) != (chosen[1] == 2)); /* one in s2, one in s1 */
	assert_int_equal(tsr_cluster_place(n, 3, TSR_FD_SITE, 3, GiB, chosen, why, sizeof(why)),
			 -ENOSPC);
	assert_non_null(strstr(why, "needs 3 distinct sites; alive nodes cover 2"));
}

static void test_dead_and_full_nodes_skipped(void **state)
{
	struct tsr_place_node n[] = {
		node("n1", "a", "s", 100 * GiB, 0),
		node("n2", "b", "s", 100 * GiB, 0),
		node("n3", "c", "s", 10 * GiB, 8 * GiB),
		node("n4", "d", "s", 100 * GiB, 0),
	};
	unsigned chosen[3];
	char why[512];

	n[3].alive = false;
	/* n3 has 2 GiB free: 5 GiB does not fit; n4 is dead */
	assert_int_equal(tsr_cluster_place(n, 4, TSR_FD_NODE, 3, 5 * GiB, chosen, why,
					   sizeof(why)), -ENOSPC);
	assert_non_null(strstr(why, "needs 3 distinct nodes with 5.0 GiB unprovisioned each; "
				    "only 2 have it: n1: 100.0 GiB free, n2: 100.0 GiB free, n3: 2.0 GiB free"));
	assert_non_null(strstr(why, "n3: 2.0 GiB free"));
	assert_null(strstr(why, "n4"));
	assert_int_equal(tsr_cluster_place(n, 4, TSR_FD_NODE, 3, GiB, chosen, why, sizeof(why)),
			 0);
	assert_int_equal(chosen[2], 2);
}

static void test_replace_avoids_domains_holding_copies(void **state)
{
	struct tsr_place_node n[] = {
		node("n1", "a", "s", 100 * GiB, 0),
		node("n2", "b", "s", 100 * GiB, 0),
		node("n3", "a", "s", 100 * GiB, 0),  /* same zone as n1 */
		node("n4", "c", "s", 100 * GiB, 50 * GiB),
	};
	unsigned chosen[1];
	char why[512];

	n[0].holds_copy = true;
	n[1].holds_copy = true;
	assert_int_equal(tsr_cluster_place(n, 4, TSR_FD_ZONE, 1, GiB, chosen, why, sizeof(why)),
			 0);
	assert_int_equal(chosen[0], 3); /* n3 has more room but zone a holds a copy */
	n[3].alive = false;
	assert_int_equal(tsr_cluster_place(n, 4, TSR_FD_ZONE, 1, GiB, chosen, why, sizeof(why)),
			 -ENOSPC);
	assert_non_null(strstr(why, "besides the ones holding copies"));
}

static void test_bad_arguments(void **state)
{
	struct tsr_place_node n[] = { node("n1", "a", "s", GiB, 0) };
	unsigned chosen[TSR_PLACE_MAX + 1];
	char why[8]; /* tiny: must stay terminated */

	assert_int_equal(tsr_cluster_place(n, 1, TSR_FD_NODE, 0, GiB, chosen, why, sizeof(why)),
			 -EINVAL);
	assert_int_equal(tsr_cluster_place(n, 1, TSR_FD_NODE, TSR_PLACE_MAX + 1, GiB, chosen, why,
					   sizeof(why)), -EINVAL);
	assert_int_equal(tsr_cluster_place(n, 1, TSR_FD_NODE, 2, GiB, chosen, why, sizeof(why)),
			 -ENOSPC);
	assert_true(strlen(why) < sizeof(why));
	assert_int_equal(tsr_cluster_place(NULL, 0, TSR_FD_NODE, 1, GiB, chosen, why,
					   sizeof(why)), -ENOSPC);
}

static void test_failure_domain_names(void **state)
{
	enum tsr_failure_domain fd;

	assert_int_equal(tsr_failure_domain_parse("", &fd), 0);
	assert_int_equal(fd, TSR_FD_NODE);
	assert_int_equal(tsr_failure_domain_parse("zone", &fd), 0);
	assert_int_equal(fd, TSR_FD_ZONE);
	assert_int_equal(tsr_failure_domain_parse("site", &fd), 0);
	assert_string_equal(tsr_failure_domain_name(fd), "site");
	assert_int_equal(tsr_failure_domain_parse("rack", &fd), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_node_domain_prefers_free_space),
		cmocka_unit_test(test_zone_one_copy_per_zone),
		cmocka_unit_test(test_not_enough_zones_names_them),
		cmocka_unit_test(test_site_domain),
		cmocka_unit_test(test_dead_and_full_nodes_skipped),
		cmocka_unit_test(test_replace_avoids_domains_holding_copies),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_failure_domain_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
