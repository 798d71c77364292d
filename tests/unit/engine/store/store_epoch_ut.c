/*
 * Unit tests of coordinator epochs in the store (tsr_store_vol_set_epoch,
 * tsr_svol_epoch; engine/store/store.c, catalog.c): raise and read back,
 * refusal of a lower epoch, durability across close and reopen, the row
 * checksum covering the epoch, and stores made before the epoch column.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "store_test.h"

static void test_set_get(void **state)
{
	struct store_env *e = *state;
	struct tsr_svol *v, *v2;

	assert_int_equal(tsr_store_vol_create(e->store, "v", 64 * BS, NULL), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	assert_int_equal(tsr_svol_epoch(v), 0);
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "v", 5), 0);
	assert_int_equal(tsr_svol_epoch(v), 5); /* an open handle sees it */
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "v", 5), 0); /* equal is fine */
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "v", 9), 0);
	assert_int_equal(tsr_svol_epoch(v), 9);
	tsr_svol_put(v);
	/* a fresh handle loads it from the catalogue */
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v2), 0);
	assert_int_equal(tsr_svol_epoch(v2), 9);
	tsr_svol_put(v2);
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "nope", 1), -ENOENT);
}

static void test_lower_is_stale(void **state)
{
	struct store_env *e = *state;
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_create(e->store, "v", 64 * BS, NULL), 0);
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "v", 7), 0);
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "v", 6), -ESTALE);
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "v", 0), -ESTALE);
	assert_int_equal(tsr_store_vol_open(e->store, "v", &v), 0);
	assert_int_equal(tsr_svol_epoch(v), 7);
	tsr_svol_put(v);
	/* resize keeps the epoch (and a valid row checksum) */
	assert_int_equal(tsr_store_vol_resize(e->store, "v", 128 * BS), 0);
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "v", 6), -ESTALE);
}

static void test_persists(void **state)
{
	struct store_env *e = *state;
	struct tsr_svol *v;

	assert_int_equal(tsr_store_vol_create(e->store, "a", 64 * BS, NULL), 0);
	assert_int_equal(tsr_store_vol_create(e->store, "b", 64 * BS, NULL), 0);
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "a", 0x123456789ull), 0);
	tsr_store_close(e->store);
	e->store = NULL;
	assert_int_equal(tsr_store_open(e->dir, &(struct tsr_store_opts){0}, &e->store), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "a", &v), 0);
	assert_int_equal(tsr_svol_epoch(v), 0x123456789ull);
	tsr_svol_put(v);
	assert_int_equal(tsr_store_vol_open(e->store, "b", &v), 0);
	assert_int_equal(tsr_svol_epoch(v), 0);
	tsr_svol_put(v);
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "a", 3), -ESTALE);
}

/* The epoch is covered by the row CRC: lowering it behind our back is caught. */
static void test_epoch_in_row_crc(void **state)
{
	struct store_env *e = *state;
	struct tsr_store *s2 = NULL;

	assert_int_equal(tsr_store_vol_create(e->store, "a", 64 * BS, NULL), 0);
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "a", 8), 0);
	tsr_store_close(e->store);
	e->store = NULL;
	assert_int_equal(store_sql(e->dir, "UPDATE volumes SET epoch = 2 WHERE name = 'a'"), 0);
	assert_int_equal(tsr_store_open(e->dir, &(struct tsr_store_opts){0}, &s2), -EUCLEAN);
	assert_int_equal(store_sql(e->dir, "UPDATE volumes SET epoch = 8 WHERE name = 'a'"), 0);
	assert_int_equal(tsr_store_open(e->dir, &(struct tsr_store_opts){0}, &e->store), 0);
}

/* A store written before the epoch column: the table is rebuilt without it
 * (rows keep their original checksums, which never covered an epoch). */
static void test_old_store_without_column(void **state)
{
	struct store_env *e = *state;
	struct tsr_svol *v;
	struct tsr_io *io = make_io(TSR_IO_AUTO, NULL);
	uint8_t *buf = tsr_alloc_aligned(BS);

	assert_non_null(io);
	assert_non_null(buf);
	assert_int_equal(tsr_store_vol_create(e->store, "old", 64 * BS, NULL), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "old", &v), 0);
	fill(buf, BS, 3, 0);
	assert_int_equal(swrite(v, io, 0, BS, buf, TSR_WRITE_FUA), 0);
	tsr_svol_put(v);
	tsr_store_close(e->store);
	e->store = NULL;
	assert_int_equal(store_sql(e->dir, "BEGIN;"
			 "CREATE TABLE v_old(name TEXT PRIMARY KEY, uuid TEXT NOT NULL,"
			 " size INTEGER NOT NULL, created INTEGER NOT NULL,"
			 " dev_offset INTEGER NOT NULL, crc INTEGER NOT NULL);"
			 "INSERT INTO v_old SELECT name, uuid, size, created, dev_offset, crc"
			 " FROM volumes;"
			 "DROP TABLE volumes; ALTER TABLE v_old RENAME TO volumes; COMMIT;"),
			 0);

	assert_int_equal(tsr_store_open(e->dir, &(struct tsr_store_opts){0}, &e->store), 0);
	assert_int_equal(tsr_store_vol_open(e->store, "old", &v), 0);
	assert_int_equal(tsr_svol_epoch(v), 0);
	memset(buf, 0, BS);
	assert_int_equal(sread(v, io, 0, BS, buf), 0);
	assert_true(is_filled(buf, BS, 3, 0));
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "old", 4), 0);
	assert_int_equal(tsr_svol_epoch(v), 4);
	tsr_svol_put(v);
	tsr_store_close(e->store);
	e->store = NULL;
	assert_int_equal(tsr_store_open(e->dir, &(struct tsr_store_opts){0}, &e->store), 0);
	assert_int_equal(tsr_store_vol_set_epoch(e->store, "old", 3), -ESTALE);
	tsr_free_aligned(buf);
	tsr_io_destroy(io);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_set_get, store_env_setup, store_env_teardown),
		cmocka_unit_test_setup_teardown(test_lower_is_stale, store_env_setup, store_env_teardown),
		cmocka_unit_test_setup_teardown(test_persists, store_env_setup, store_env_teardown),
		cmocka_unit_test_setup_teardown(test_epoch_in_row_crc, store_env_setup, store_env_teardown),
		cmocka_unit_test_setup_teardown(test_old_store_without_column, store_env_setup, store_env_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
