/*
 * Unit tests of a detached snapshot's record step (engine/cluster/snapshot.c
 * snap_gen_mutate, snap_gen.h): which copies of vol/<name> are given the op
 * as missed.  The copies the op reached are matched by node id and by not
 * being a replace's new copy (rebuild set): a new copy put by a replace on a
 * node whose cut copy another replace moved away meanwhile is given it
 * (review 17a F6; matched by node id alone it was taken for the copy cut).
 * Also: the copies cut get nothing, a new copy on a node not cut gets it, one
 * whose list already ends with the create gets nothing, an IN_SYNC copy not
 * reached is named as lost, another volume of that name is left alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/internal.h"
#include "cluster/snap_gen.h"

#define UUID  "0f8e2a6c-1b3d-4c5e-8f70-9a1b2c3d4e5f"
#define UUID2 "1f8e2a6c-1b3d-4c5e-8f70-9a1b2c3d4e5f"

struct vol {
	Tessera__Cluster__VolumeRecord rec;
	Tessera__Cluster__CopyRecord copy[3];
	Tessera__Cluster__CopyRecord *copies[3];
};

/* rec of n copies on nodes[i], IN_SYNC, no missed operations, snap_gen 7. */
static void vol_init(struct vol *v, size_t n, const char *const *nodes)
{
	memset(v, 0, sizeof(*v));
	tessera__cluster__volume_record__init(&v->rec);
	v->rec.name = "v";
	v->rec.uuid = UUID;
	v->rec.snap_gen = 7;
	for (size_t i = 0; i < n; i++) {
		tessera__cluster__copy_record__init(&v->copy[i]);
		v->copy[i].node_id = (char *)nodes[i];
		v->copy[i].state = TESSERA__CLUSTER__COPY_STATE__IN_SYNC;
		v->copies[i] = &v->copy[i];
	}
	v->rec.copies = v->copies;
	v->rec.n_copies = n;
}

/* Copy i as a replace records its new copy: OUT_OF_SYNC, rebuild, missed
 * the list (malloc'd: the step grows it). */
static void new_copy(struct vol *v, size_t i, const char *const *missed, size_t n)
{
	Tessera__Cluster__CopyRecord *cr = &v->copy[i];

	cr->state = TESSERA__CLUSTER__COPY_STATE__OUT_OF_SYNC;
	cr->rebuild = true;
	cr->missed_snaps = calloc(n ? n : 1, sizeof(char *));
	assert_non_null(cr->missed_snaps);
	for (size_t k = 0; k < n; k++)
		assert_non_null(cr->missed_snaps[k] = strdup(missed[k]));
	cr->n_missed_snaps = n;
}

static void vol_fini(struct vol *v)
{
	for (size_t i = 0; i < v->rec.n_copies; i++) {
		for (size_t k = 0; k < v->copy[i].n_missed_snaps; k++)
			free(v->copy[i].missed_snaps[k]);
		free(v->copy[i].missed_snaps);
	}
}

/* copy i's missed operations joined by ',' */
static const char *missed_of(const struct vol *v, size_t i)
{
	static char out[256];

	out[0] = '\0';
	for (size_t k = 0; k < v->copy[i].n_missed_snaps; k++)
		snprintf(out + strlen(out), sizeof(out) - strlen(out), "%s%s", k ? "," : "",
			 v->copy[i].missed_snaps[k]);
	return out;
}

static void step_init(struct snap_gen_step *g, char op, const char *snap, const char *const *cut,
		      size_t n_cut)
{
	memset(g, 0, sizeof(*g));
	g->uuid = UUID;
	g->op = op;
	g->snap = snap;
	for (size_t i = 0; i < n_cut; i++)
		g->cut[g->n_cut++] = cut[i];
}

/*
 * The step OP SNAP that cut the copies on n2 and n3, applied (returns 0) to
 * v: two copies, on node0 (slot 0) and node1 (slot 1), those whose bit is set
 * in new_mask (bit i: slot i) a replace's new copies whose list reads "c s1".
 */
static void cut_n2_n3(struct vol *v, struct snap_gen_step *g, const char *node0,
		      const char *node1, unsigned new_mask, char op, const char *snap)
{
	const char *nodes[] = {node0, node1}, *cut[] = {"n2", "n3"};
	const char *list[] = {"c s1"};

	vol_init(v, 2, nodes);
	for (size_t i = 0; i < 2; i++)
		if (new_mask & (1u << i))
			new_copy(v, i, list, 1);
	step_init(g, op, snap, cut, 2);
	assert_int_equal(snap_gen_mutate(&v->rec, g), 0);
}

/*
 * F6: the create cut the copies on n2 (slot 0) and n3 (slot 1); meanwhile a
 * replace through another node moved slot 0 from n2 to n4 (n2's copy then
 * deleted), and another moved slot 1 from n3 to n2.  Both new copies (rebuild,
 * out of sync, their lists read before the cut) get "c s2"; matched by node
 * id alone, n2's was taken for the copy cut there and lacked s2 for good.
 */
static void test_new_copy_on_a_cut_node(void **state)
{
	struct snap_gen_step g;
	struct vol v;

	(void)state;
	cut_n2_n3(&v, &g, "n4", "n2", 0x3, 'c', "s2");
	assert_int_equal(v.rec.snap_gen, 8);
	assert_string_equal(missed_of(&v, 0), "c s1,c s2");
	assert_string_equal(missed_of(&v, 1), "c s1,c s2");
	assert_string_equal(g.given, "n4, n2");
	assert_string_equal(g.lost, "");
	vol_fini(&v);
}

/* The same for a delete: the new copy on n2 whose list creates s1 gets "d s1". */
static void test_new_copy_on_a_cut_node_delete(void **state)
{
	struct snap_gen_step g;
	struct vol v;

	(void)state;
	cut_n2_n3(&v, &g, "n2", "n3", 0x1, 'd', "s1");
	assert_string_equal(missed_of(&v, 0), "c s1,d s1");
	assert_string_equal(g.given, "n2");
	vol_fini(&v);
}

/* Unchanged cases: the copies cut get nothing; a new copy on a node not cut
 * gets the op; one whose list ends with the create (read after the cut)
 * does not; an IN_SYNC copy not reached is lost. */
static void test_copies_cut_and_not(void **state)
{
	const char *nodes[] = {"n2", "n3", "n4"}, *cut[] = {"n2", "n3"};
	const char *list[] = {"c s1"}, *list2[] = {"c s1", "c s2"};
	struct snap_gen_step g;
	struct vol v;

	(void)state;
	/* every copy cut, none new: only snap_gen moves */
	cut_n2_n3(&v, &g, "n2", "n3", 0, 'c', "s2");
	assert_int_equal(v.rec.snap_gen, 8);
	assert_string_equal(missed_of(&v, 0), "");
	assert_string_equal(missed_of(&v, 1), "");
	assert_string_equal(g.given, "");
	assert_string_equal(g.lost, "");
	vol_fini(&v);
	/* n4 new (not cut): given; n3 new with s2 in its list already: not */
	vol_init(&v, 3, nodes);
	new_copy(&v, 2, list, 1);
	new_copy(&v, 1, list2, 2);
	step_init(&g, 'c', "s2", cut, 2);
	assert_int_equal(snap_gen_mutate(&v.rec, &g), 0);
	assert_string_equal(missed_of(&v, 2), "c s1,c s2");
	assert_string_equal(missed_of(&v, 1), "c s1,c s2");
	assert_string_equal(g.given, "n4");
	vol_fini(&v);
	/* n4 IN_SYNC and not cut: lost, nothing written to it */
	vol_init(&v, 3, nodes);
	step_init(&g, 'c', "s2", cut, 2);
	assert_int_equal(snap_gen_mutate(&v.rec, &g), 0);
	assert_string_equal(g.lost, "n4");
	assert_string_equal(missed_of(&v, 2), "");
	vol_fini(&v);
}

/* Another volume of that name (deleted and made again): nothing written. */
static void test_other_volume(void **state)
{
	const char *nodes[] = {"n2", "n3"}, *cut[] = {"n3"};
	const char *list[] = {"c s1"};
	struct snap_gen_step g;
	struct vol v;

	(void)state;
	vol_init(&v, 2, nodes);
	v.rec.uuid = UUID2;
	new_copy(&v, 0, list, 1);
	step_init(&g, 'c', "s2", cut, 1);
	assert_int_equal(snap_gen_mutate(&v.rec, &g), 1);
	assert_int_equal(v.rec.snap_gen, 7);
	assert_string_equal(missed_of(&v, 0), "c s1");
	vol_fini(&v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_new_copy_on_a_cut_node),
	    cmocka_unit_test(test_new_copy_on_a_cut_node_delete),
	    cmocka_unit_test(test_copies_cut_and_not),
	    cmocka_unit_test(test_other_volume),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
