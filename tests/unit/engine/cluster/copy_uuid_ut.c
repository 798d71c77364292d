/*
 * copy_uuid_ut: what a node's answer to the uuid query (the local_copy
 * check_only VolumeResize, cluster_copy_uuid_req) says, as
 * cluster_copy_uuid_answer reads it for the deletes by uuid (volume delete,
 * a DR claim's release): a uuid; no copy (-ENOENT); no uuid from a node of
 * an earlier build (-EINVAL: 0, ""), then deleted by name as before; any
 * other error of the node is that error (review s20-revK B): the copy is
 * left to the leftover sweep, never deleted by name.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/internal.h"

static int answer(int error, const char *vol_uuid, char uuid[37])
{
	Tessera__Admin__Response resp = TESSERA__ADMIN__RESPONSE__INIT;
	Tessera__Admin__Volume vol = TESSERA__ADMIN__VOLUME__INIT;
	Tessera__Admin__Volume *vols[1] = {&vol};

	resp.error = error;
	if (vol_uuid) {
		vol.name = "v";
		vol.uuid = (char *)vol_uuid;
		resp.n_volumes = 1;
		resp.volumes = vols;
	}
	memset(uuid, 'x', 37);
	return cluster_copy_uuid_answer(&resp, uuid);
}

static void test_uuid_named(void **state)
{
	char uuid[37];

	(void)state;
	assert_int_equal(answer(0, "0b6f3f4e-7c1d-4a57-9a43-1f1d1c6b9e21", uuid), 0);
	assert_string_equal(uuid, "0b6f3f4e-7c1d-4a57-9a43-1f1d1c6b9e21");
	assert_int_equal(answer(0, NULL, uuid), 0); /* answered, no volume: no uuid */
	assert_string_equal(uuid, "");
}

static void test_no_copy(void **state)
{
	char uuid[37];

	(void)state;
	assert_int_equal(answer(-ENOENT, NULL, uuid), -ENOENT);
	assert_string_equal(uuid, "");
}

static void test_earlier_build(void **state)
{
	char uuid[37];

	(void)state;
	/* "size must not be zero" (before session 20), "can only grow" */
	assert_int_equal(answer(-EINVAL, NULL, uuid), 0);
	assert_string_equal(uuid, "");
}

static void test_node_error(void **state)
{
	char uuid[37];

	(void)state;
	assert_int_equal(answer(-EIO, NULL, uuid), -EIO);
	assert_string_equal(uuid, "");
	assert_int_equal(answer(-ESHUTDOWN, NULL, uuid), -ESHUTDOWN);
	assert_int_equal(answer(-ENOSPC, NULL, uuid), -ENOSPC);
	assert_int_equal(answer(5, NULL, uuid), -EPROTO); /* not an -errno */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_uuid_named),
	    cmocka_unit_test(test_no_copy),
	    cmocka_unit_test(test_earlier_build),
	    cmocka_unit_test(test_node_error),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
