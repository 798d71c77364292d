/*
 * tessera CLI renderings (tools/tessera/output.c): percentages without
 * overflow, rates and durations for people, the in-sync predicate that
 * `volume status --until-synced` exits on, and the JSON shapes scripts read
 * (flat proto field names; cluster fields only on cluster volumes).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tessera.h"

/* output.c reports JSON build failures through this (tessera.c in the binary). */
void cli_error(const char *fmt, ...)
{
	(void)fmt;
}

static void test_percent(void **state)
{
	(void)state;
	assert_int_equal(cli_percent(0, 0), 100);
	assert_int_equal(cli_percent(0, 100), 0);
	assert_int_equal(cli_percent(50, 100), 50);
	assert_int_equal(cli_percent(1, 3), 33);          /* floored */
	assert_int_equal(cli_percent(99, 100), 99);       /* never 100 before the end */
	assert_int_equal(cli_percent(150, 100), 150);     /* over-provisioned capacity */
	assert_int_equal(cli_percent(UINT64_MAX / 2, UINT64_MAX), 49);
	assert_int_equal(cli_percent(UINT64_MAX, UINT64_MAX), 100);
}

static void test_rate(void **state)
{
	char buf[32];

	(void)state;
	assert_string_equal(cli_fmt_rate(0, buf, sizeof(buf)), "0 B/s");
	assert_string_equal(cli_fmt_rate(-5, buf, sizeof(buf)), "0 B/s");
	assert_string_equal(cli_fmt_rate(NAN, buf, sizeof(buf)), "0 B/s");
	assert_string_equal(cli_fmt_rate(1000, buf, sizeof(buf)), "1000 B/s");
	assert_string_equal(cli_fmt_rate(1536, buf, sizeof(buf)), "1.5 KiB/s");
	assert_string_equal(cli_fmt_rate(70e6, buf, sizeof(buf)), "66.8 MiB/s");
	assert_string_equal(cli_fmt_rate(3.0 * (1ull << 50), buf, sizeof(buf)), "3072.0 TiB/s");
}

static void test_duration(void **state)
{
	char buf[32];

	(void)state;
	assert_string_equal(cli_fmt_duration(0, buf, sizeof(buf)), "0 s");
	assert_string_equal(cli_fmt_duration(59, buf, sizeof(buf)), "59 s");
	assert_string_equal(cli_fmt_duration(61, buf, sizeof(buf)), "1 min 1 s");
	assert_string_equal(cli_fmt_duration(3700, buf, sizeof(buf)), "1 h 1 min");
	assert_string_equal(cli_fmt_duration(90000, buf, sizeof(buf)), "1 d 1 h");
}

/* A 3-copy cluster volume attached on n1, copy 3 in state s3. */
struct fixture {
	Tessera__Admin__Volume v;
	Tessera__Admin__Copy c[3];
	Tessera__Admin__Copy *cp[3];
};

static void make_volume(struct fixture *f, const char *s3, const char *attached)
{
	static char *nodes[] = { "n1", "n2", "n3" };

	tessera__admin__volume__init(&f->v);
	f->v.name = "db";
	f->v.uuid = "u";
	f->v.size = 1 << 30;
	f->v.replicas = 3;
	f->v.min_replicas = 2;
	f->v.failure_domain = "zone";
	f->v.attached_node = (char *)attached;
	f->v.epoch = 7;
	for (int i = 0; i < 3; i++) {
		tessera__admin__copy__init(&f->c[i]);
		f->c[i].node = nodes[i];
		f->c[i].state = i == 2 ? (char *)s3 : "in-sync";
		f->cp[i] = &f->c[i];
	}
	f->v.n_copies = 3;
	f->v.copies = f->cp;
}

static void test_all_in_sync(void **state)
{
	struct fixture f;

	(void)state;
	assert_false(cli_all_in_sync(NULL));
	make_volume(&f, "in-sync", "n1");
	assert_true(cli_all_in_sync(&f.v));
	make_volume(&f, "resyncing", "n1");
	assert_false(cli_all_in_sync(&f.v));
	make_volume(&f, "out-of-sync", "n1");
	assert_false(cli_all_in_sync(&f.v));
	f.v.n_copies = 0; /* no copies: nothing is in sync */
	assert_false(cli_all_in_sync(&f.v));
}

static void test_volume_status_json(void **state)
{
	Tessera__Admin__VolumeStatus s = TESSERA__ADMIN__VOLUME_STATUS__INIT;
	struct fixture f;
	json_t *j, *vol, *copies;

	(void)state;
	make_volume(&f, "resyncing", "n1");
	s.volume = &f.v;
	s.ready = 1;
	s.in_sync = 2;
	s.resync_running = 1;
	s.resync_bytes_copied = 12345;
	s.scrub_mismatches = 3;
	s.resync_rate_bps = 1e6;
	j = cli_volume_status_json(&s);
	assert_non_null(j);
	/* flat, with the proto's names: what the cluster tests read */
	assert_int_equal(json_integer_value(json_object_get(j, "resync_bytes_copied")), 12345);
	assert_int_equal(json_integer_value(json_object_get(j, "scrub_mismatches")), 3);
	assert_true(json_is_true(json_object_get(j, "resync_running")));
	assert_true(json_is_false(json_object_get(j, "all_in_sync")));
	assert_true(json_real_value(json_object_get(j, "resync_rate_bps")) == 1e6);
	vol = json_object_get(j, "volume");
	assert_string_equal(json_string_value(json_object_get(vol, "attached_node")), "n1");
	assert_int_equal(json_integer_value(json_object_get(vol, "epoch")), 7);
	copies = json_object_get(vol, "copies");
	assert_int_equal(json_array_size(copies), 3);
	assert_string_equal(json_string_value(json_object_get(json_array_get(copies, 2),
							      "state")), "resyncing");
	json_decref(j);
}

static void test_volume_json_shapes(void **state)
{
	Tessera__Admin__Volume plain = TESSERA__ADMIN__VOLUME__INIT;
	struct fixture f;
	json_t *j;

	(void)state;
	/* a standalone node's volume: the fields it always had, no cluster ones */
	plain.name = "solo";
	plain.uuid = "u";
	plain.size = 4096;
	j = cli_volume_json(&plain);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "name")), "solo");
	assert_null(json_object_get(j, "replicas"));
	assert_null(json_object_get(j, "copies"));
	json_decref(j);
	/* a detached cluster volume: attached_node is null, not "" */
	make_volume(&f, "in-sync", "");
	j = cli_volume_json(&f.v);
	assert_int_equal(json_integer_value(json_object_get(j, "replicas")), 3);
	assert_true(json_is_null(json_object_get(j, "attached_node")));
	assert_string_equal(json_string_value(json_object_get(j, "failure_domain")), "zone");
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_percent),
		cmocka_unit_test(test_rate),
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_all_in_sync),
		cmocka_unit_test(test_volume_status_json),
		cmocka_unit_test(test_volume_json_shapes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
