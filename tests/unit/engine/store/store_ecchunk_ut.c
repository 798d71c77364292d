/*
 * Unit tests of the ec chunk flag of the store catalogue
 * (tsr_store_vol_create_flags, tsr_store_vol_ec_chunk; engine/store/store.c,
 * catalog.c): set at create only, survives close and reopen, covered by the
 * row checksum, kept through delete-hidden and rollback, inherited by clones
 * (of a snapshot, of the volume now, of a clone) through their parent
 * snapshot's volume; plain volumes and their clones say false.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "store_test.h"

/* tsr_store_vol_ec_chunk as a value: 1, 0, or the -errno it returned */
static int ec_chunk(struct tsr_store *store, const char *name)
{
	bool chunk = true;
	int ret = tsr_store_vol_ec_chunk(store, name, &chunk);

	return ret ? ret : chunk;
}

static int reopen(struct store_env *e)
{
	tsr_store_close(e->store);
	e->store = NULL;
	return tsr_store_open(e->dir, &(struct tsr_store_opts){0}, &e->store);
}

static void test_create_and_reopen(void **state)
{
	struct store_env *e = *state;
	struct tsr_vol_info info;
	struct tsr_svol *v;

	assert_int_equal(
	    tsr_store_vol_create_flags(e->store, "c", 64 * BS, TSR_VOL_EC_CHUNK, 0, &info), 0);
	assert_string_equal(info.name, "c");
	assert_int_equal(info.size, 64 * BS);
	assert_int_equal(tsr_store_vol_create(e->store, "m", 64 * BS, NULL), 0);
	assert_int_equal(tsr_store_vol_create_flags(e->store, "z", 64 * BS, 0, 0, NULL), 0);
	assert_int_equal(ec_chunk(e->store, "c"), 1);
	assert_int_equal(ec_chunk(e->store, "m"), 0);
	assert_int_equal(ec_chunk(e->store, "z"), 0);
	assert_int_equal(ec_chunk(e->store, "nope"), -ENOENT);
	/* bad input: unknown flags, and a name that exists already */
	assert_int_equal(tsr_store_vol_create_flags(e->store, "x", 64 * BS, 0x80, 0, NULL),
			 -EINVAL);
	assert_int_equal(ec_chunk(e->store, "x"), -ENOENT);
	assert_int_equal(
	    tsr_store_vol_create_flags(e->store, "m", 64 * BS, TSR_VOL_EC_CHUNK, 0, NULL), -EEXIST);
	assert_int_equal(ec_chunk(e->store, "m"), 0);
	/* an ordinary volume for I/O and resize otherwise */
	assert_int_equal(tsr_store_vol_open(e->store, "c", &v), 0);
	tsr_svol_put(v);
	assert_int_equal(tsr_store_vol_resize(e->store, "c", 128 * BS), 0);
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "c", 3), 0);
	assert_int_equal(reopen(e), 0);
	assert_int_equal(ec_chunk(e->store, "c"), 1);
	assert_int_equal(ec_chunk(e->store, "m"), 0);
}

/* Clearing the flag behind the store's back breaks the row checksum. */
static void test_flag_in_row_crc(void **state)
{
	struct store_env *e = *state;
	struct tsr_store *s2 = NULL;

	assert_int_equal(
	    tsr_store_vol_create_flags(e->store, "c", 64 * BS, TSR_VOL_EC_CHUNK, 0, NULL), 0);
	tsr_store_close(e->store);
	e->store = NULL;
	assert_int_equal(store_sql(e->dir, "UPDATE volumes SET flags = 0 WHERE name = 'c'"), 0);
	assert_int_equal(tsr_store_open(e->dir, &(struct tsr_store_opts){0}, &s2), -EUCLEAN);
	assert_null(s2);
	assert_int_equal(store_sql(e->dir, "UPDATE volumes SET flags = 4 WHERE name = 'c'"), 0);
	assert_int_equal(tsr_store_open(e->dir, &(struct tsr_store_opts){0}, &e->store), 0);
	assert_int_equal(ec_chunk(e->store, "c"), 1);
}

static void test_clones_inherit(void **state)
{
	struct store_env *e = *state;

	assert_int_equal(
	    tsr_store_vol_create_flags(e->store, "c", 64 * BS, TSR_VOL_EC_CHUNK, 0, NULL), 0);
	assert_int_equal(tsr_store_vol_create(e->store, "m", 64 * BS, NULL), 0);
	assert_int_equal(tsr_store_snap_create(e->store, "c", "s1", NULL), 0);
	assert_int_equal(tsr_store_snap_create(e->store, "m", "s1", NULL), 0);
	assert_int_equal(tsr_store_vol_clone(e->store, "c1", "c", "s1", NULL), 0);
	assert_int_equal(tsr_store_vol_clone(e->store, "c2", "c", NULL, NULL), 0);
	assert_int_equal(tsr_store_vol_clone(e->store, "m1", "m", "s1", NULL), 0);
	assert_int_equal(ec_chunk(e->store, "c1"), 1);
	assert_int_equal(ec_chunk(e->store, "c2"), 1);
	assert_int_equal(ec_chunk(e->store, "m1"), 0);
	/* a clone of a clone */
	assert_int_equal(tsr_store_snap_create(e->store, "c1", "t", NULL), 0);
	assert_int_equal(tsr_store_vol_clone(e->store, "c11", "c1", "t", NULL), 0);
	assert_int_equal(ec_chunk(e->store, "c11"), 1);
	assert_int_equal(tsr_store_snap_create(e->store, "m1", "t", NULL), 0);
	assert_int_equal(tsr_store_vol_clone(e->store, "m11", "m1", "t", NULL), 0);
	assert_int_equal(ec_chunk(e->store, "m11"), 0);
	/* the source deleted: kept hidden for its clones, flag and all */
	assert_int_equal(tsr_store_vol_delete(e->store, "c"), 0);
	assert_int_equal(ec_chunk(e->store, "c"), -ENOENT);
	assert_int_equal(ec_chunk(e->store, "c1"), 1);
	assert_int_equal(ec_chunk(e->store, "c2"), 1);
	assert_int_equal(reopen(e), 0);
	assert_int_equal(ec_chunk(e->store, "c1"), 1);
	assert_int_equal(ec_chunk(e->store, "c11"), 1);
	assert_int_equal(ec_chunk(e->store, "m11"), 0);
}

/* A rollback marks the row while it runs and clears only its own bit. */
static void test_rollback_keeps_flag(void **state)
{
	struct store_env *e = *state;

	assert_int_equal(
	    tsr_store_vol_create_flags(e->store, "c", 64 * BS, TSR_VOL_EC_CHUNK, 0, NULL), 0);
	assert_int_equal(tsr_store_snap_create(e->store, "c", "s1", NULL), 0);
	assert_int_equal(tsr_store_vol_rollback(e->store, "c", "s1"), 0);
	assert_int_equal(ec_chunk(e->store, "c"), 1);
	assert_int_equal(reopen(e), 0);
	assert_int_equal(ec_chunk(e->store, "c"), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_and_reopen, store_env_setup, store_env_teardown),
		cmocka_unit_test_setup_teardown(test_flag_in_row_crc, store_env_setup, store_env_teardown),
		cmocka_unit_test_setup_teardown(test_clones_inherit, store_env_setup, store_env_teardown),
		cmocka_unit_test_setup_teardown(test_rollback_keeps_flag, store_env_setup, store_env_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
