/*
 * Unit tests for csi/call.c (binary csi_call_ut): the per-call arena and
 * status, map lookups and topology replies, and the per-key locks that
 * serialize CreateVolume calls on one name.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

static pthread_mutex_t g_keys_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_keys_cond = PTHREAD_COND_INITIALIZER;
static struct csi_plugin g_plugin = {
    .keys_lock = &g_keys_lock,
    .keys_cond = &g_keys_cond,
};

static void test_arena_and_status(void **state)
{
	struct csi_call c = {.plugin = &g_plugin, .method = "Test"};
	char *s;
	int *zeros;

	s = csi_strdup(&c, "abc");
	assert_string_equal(s, "abc");
	assert_string_equal(csi_strdup(&c, NULL), "");
	assert_string_equal(csi_printf(&c, "%s-%d", "vol", 7), "vol-7");
	zeros = csi_alloc(&c, 64 * sizeof(int));
	for (int i = 0; i < 64; i++)
		assert_int_equal(zeros[i], 0);
	assert_int_equal(csi_fail(&c, GRPC_NOT_FOUND, "volume %s does not exist", "v1"),
			 GRPC_NOT_FOUND);
	assert_int_equal(c.code, GRPC_NOT_FOUND);
	assert_string_equal(c.message, "volume v1 does not exist");
	csi_call_free_arena(&c); /* ASan/LSan: everything above freed */
	assert_null(c.arena);
	csi_call_free_arena(&c); /* twice is harmless */
}

static void test_map_and_topology(void **state)
{
	struct csi_call c = {.plugin = &g_plugin, .method = "Test"};
	Csi__V1__Topology *t = csi_topology_new(&c, "z1", NULL);

	assert_int_equal(t->n_segments, 2);
	assert_string_equal(csi_map_get(t->n_segments, (void *const *)t->segments, CSI_TOPO_ZONE),
			    "z1");
	/* an empty zone or site is "default": segment values must not be empty */
	assert_string_equal(csi_map_get(t->n_segments, (void *const *)t->segments, CSI_TOPO_SITE),
			    "default");
	assert_null(csi_map_get(t->n_segments, (void *const *)t->segments, "region"));
	assert_null(csi_map_get(0, NULL, "x"));
	csi_call_free_arena(&c);
}

struct locker {
	const char *key;
	int *shared;     /* incremented twice under the key, with a pause between */
	int interleaved; /* another holder got in between our two increments */
};

static void *lock_worker(void *arg)
{
	struct locker *l = arg;
	int i;

	for (i = 0; i < 50; i++) {
		csi_key_lock(&g_plugin, l->key);
		(*l->shared)++;
		usleep(100);
		if (*l->shared % 2 == 0)
			l->interleaved = 1; /* someone else got in between */
		(*l->shared)++;
		csi_key_unlock(&g_plugin, l->key);
	}
	return NULL;
}

static void test_key_lock_serializes(void **state)
{
	int shared = 0;
	struct locker a = {"vol:same", &shared, 0}, b = {"vol:same", &shared, 0};
	pthread_t ta, tb;

	assert_int_equal(pthread_create(&ta, NULL, lock_worker, &a), 0);
	assert_int_equal(pthread_create(&tb, NULL, lock_worker, &b), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	assert_int_equal(shared, 200);
	assert_int_equal(a.interleaved, 0);
	assert_int_equal(b.interleaved, 0);
	assert_null(g_plugin.keys); /* every key released */
}

static void test_key_lock_other_keys_independent(void **state)
{
	/* holding one key does not block another */
	csi_key_lock(&g_plugin, "vol:a");
	csi_key_lock(&g_plugin, "vol:b");
	csi_key_unlock(&g_plugin, "vol:a");
	csi_key_unlock(&g_plugin, "vol:b");
	assert_null(g_plugin.keys);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_arena_and_status),
	    cmocka_unit_test(test_map_and_topology),
	    cmocka_unit_test(test_key_lock_serializes),
	    cmocka_unit_test(test_key_lock_other_keys_independent),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
