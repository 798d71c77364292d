/*
 * tessera CLI renderings (tools/tessera/output.c): percentages without
 * overflow, rates and durations for people, the in-sync predicate that
 * `volume status --until-synced` exits on, and the JSON shapes scripts read
 * (flat proto field names; cluster fields only on cluster volumes); sizes;
 * snapshots (JSON, the table of `volume show` and `snapshot list`), a clone's
 * parent, and `snapshot diff` (the offset/length JSON and the text table).
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

/* Review F8: a counter past 2^63 is not printed negative (jansson's
 * integers are signed); below it, an exact integer. */
static void test_status_counters_unsigned(void **state)
{
	Tessera__Admin__VolumeStatus s = TESSERA__ADMIN__VOLUME_STATUS__INIT;
	struct fixture f;
	json_t *j, *cj;

	(void)state;
	make_volume(&f, "in-sync", "n1");
	s.volume = &f.v;
	s.counters_per_copy = 1;
	s.copies_counted = 1;
	s.crc_errors = 5;
	s.crc_errors_all = UINT64_C(1) << 63;
	s.cached_reads_all = UINT64_MAX;
	f.v.copies[0]->counters_known = 1;
	f.v.copies[0]->crc_errors = (UINT64_C(1) << 63) + 2048;
	j = cli_volume_status_json(&s);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "crc_errors_coordinator")), 5);
	assert_true(json_number_value(json_object_get(j, "crc_errors")) > 9.2e18);
	assert_true(json_number_value(json_object_get(j, "cached_reads_all")) > 1.8e19);
	cj = json_array_get(json_object_get(json_object_get(j, "volume"), "copies"), 0);
	assert_true(json_number_value(json_object_get(cj, "crc_errors")) > 9.2e18);
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
	assert_true(json_is_null(json_object_get(j, "target_stream"))); /* no DR target */
	json_decref(j);
	/* a DR target: its stream as 16 hex digits (a JSON integer is signed) */
	f.v.target_stream = 0xfedcba9876543210ull;
	j = cli_volume_json(&f.v);
	assert_string_equal(json_string_value(json_object_get(j, "target_stream")),
			    "fedcba9876543210");
	json_decref(j);
}

static void test_size(void **state)
{
	char buf[32];

	(void)state;
	assert_string_equal(cli_fmt_size(0, buf, sizeof(buf)), "0 B");
	assert_string_equal(cli_fmt_size(4096, buf, sizeof(buf)), "4.0 KiB");
	assert_string_equal(cli_fmt_size(1536 * 1024, buf, sizeof(buf)), "1.5 MiB");
	assert_string_equal(cli_fmt_size(1ull << 30, buf, sizeof(buf)), "1.0 GiB");
	assert_string_equal(cli_fmt_size(16ull << 40, buf, sizeof(buf)), "16.0 TiB");
}

/* Two snapshots of "db": s1 with one clone, s2 without. */
struct snap_fixture {
	Tessera__Admin__Snapshot s[2];
	Tessera__Admin__Snapshot *sp[2];
	char *uris[1];
};

static void make_snapshots(struct snap_fixture *f)
{
	static const char *const names[] = { "s1", "nightly-2026-11-26" };

	f->uris[0] = "nbd+unix:///db@s1?socket=/d/nbd.sock";
	for (int i = 0; i < 2; i++) {
		tessera__admin__snapshot__init(&f->s[i]);
		f->s[i].volume = "db";
		f->s[i].name = (char *)names[i];
		f->s[i].uuid = "u";
		f->s[i].created = 1795667686 + i; /* 2026-11-26 04:34:46 UTC */
		f->s[i].seq = (uint64_t)i + 1;
		f->s[i].size = 1 << 30;
		f->s[i].allocated = i ? 4096 : 3ull << 20;
		f->s[i].exclusive = i ? 4096 : 1ull << 20;
		f->s[i].clones = i ? 0 : 1;
		f->sp[i] = &f->s[i];
	}
	f->s[0].n_nbd_uris = 1;
	f->s[0].nbd_uris = f->uris;
}

static void test_snapshot_json(void **state)
{
	struct snap_fixture f;
	json_t *j, *snaps;

	(void)state;
	make_snapshots(&f);
	j = cli_snapshot_json(&f.s[0]);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "volume")), "db");
	assert_string_equal(json_string_value(json_object_get(j, "name")), "s1");
	assert_int_equal(json_integer_value(json_object_get(j, "allocated")), 3 << 20);
	assert_int_equal(json_integer_value(json_object_get(j, "exclusive")), 1 << 20);
	assert_int_equal(json_integer_value(json_object_get(j, "clones")), 1);
	assert_int_equal(json_integer_value(json_object_get(j, "seq")), 1);
	assert_string_equal(json_string_value(json_object_get(j, "created_iso")),
			    "2026-11-26T04:34:46Z");
	assert_string_equal(json_string_value(json_array_get(json_object_get(j, "nbd_uris"), 0)),
			    "nbd+unix:///db@s1?socket=/d/nbd.sock");
	json_decref(j);

	j = cli_snapshot_list_json("db", f.sp, 2);
	assert_string_equal(json_string_value(json_object_get(j, "volume")), "db");
	snaps = json_object_get(j, "snapshots");
	assert_int_equal(json_array_size(snaps), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(snaps, 1), "name")),
			    "nightly-2026-11-26");
	json_decref(j);
	j = cli_snapshot_list_json("db", NULL, 0); /* none: an empty array, not null */
	assert_true(json_is_array(json_object_get(j, "snapshots")));
	assert_int_equal(json_array_size(json_object_get(j, "snapshots")), 0);
	json_decref(j);
}

static void test_clone_json(void **state)
{
	Tessera__Admin__Volume v = TESSERA__ADMIN__VOLUME__INIT;
	struct snap_fixture f;
	json_t *j;

	(void)state;
	v.name = "solo";
	v.uuid = "u";
	v.size = 1 << 30;
	v.allocated = 8192;
	v.exclusive = 4096;
	/* not a clone: parent_* are null; no snapshots key outside volume show */
	j = cli_volume_json(&v);
	assert_int_equal(json_integer_value(json_object_get(j, "exclusive")), 4096);
	assert_true(json_is_null(json_object_get(j, "parent_volume")));
	assert_true(json_is_null(json_object_get(j, "parent_snapshot")));
	assert_null(json_object_get(j, "snapshots"));
	json_decref(j);
	/* a clone of db@s1, shown with its two snapshots */
	make_snapshots(&f);
	v.parent_volume = "db";
	v.parent_snapshot = "s1";
	v.n_snapshots = 2;
	v.snapshots = f.sp;
	j = cli_volume_detail_json(&v);
	assert_string_equal(json_string_value(json_object_get(j, "parent_volume")), "db");
	assert_string_equal(json_string_value(json_object_get(j, "parent_snapshot")), "s1");
	assert_int_equal(json_array_size(json_object_get(j, "snapshots")), 2);
	json_decref(j);
}

/* Run call with out writing into buf (NUL-terminated: buf zeroed first). */
#define CAPTURE(buf, call)                                                                   \
	do {                                                                                 \
		FILE *out = fmemopen(buf, sizeof(buf), "w");                                 \
		assert_non_null(out);                                                        \
		call;                                                                        \
		fclose(out);                                                                 \
	} while (0)

static void test_snapshot_table(void **state)
{
	struct snap_fixture f;
	char buf[1024];
	char *line2;

	(void)state;
	make_snapshots(&f);
	memset(buf, 0, sizeof(buf));
	CAPTURE(buf, cli_print_snapshots(out, f.sp, 2, "  "));
	/* header, then one line per snapshot, oldest first, columns aligned to the
	 * longest name */
	assert_memory_equal(buf, "  NAME                STATE     CREATED                   ALLOCATED   "
			    "EXCLUSIVE  CLONES\n", 88);
	line2 = strchr(buf, '\n') + 1;
	assert_string_equal(line2,
			    "  s1                  ready     2026-11-26 04:34:46 UTC     3.0 MiB     "
			    "1.0 MiB       1\n"
			    "  nightly-2026-11-26  ready     2026-11-26 04:34:47 UTC     4.0 KiB     "
			    "4.0 KiB       0\n");
	/* a snapshot whose delete is pending says so */
	f.s[1].deleting = 1;
	memset(buf, 0, sizeof(buf));
	CAPTURE(buf, cli_print_snapshots(out, f.sp, 2, ""));
	assert_non_null(strstr(buf, "\nnightly-2026-11-26  deleting  2026-11-26 04:34:47 UTC"));
	assert_non_null(strstr(buf, "\ns1                  ready     "));
}

/* snapshot list --json: a snapshot whose delete is pending is under
 * "deleting" with state "deleting", not under "snapshots" (scripts read and
 * clone what "snapshots" lists). */
static void test_snapshot_deleting_json(void **state)
{
	struct snap_fixture f;
	json_t *j, *snaps, *del;

	(void)state;
	make_snapshots(&f);
	f.s[0].deleting = 1;
	j = cli_snapshot_list_json("db", f.sp, 2);
	snaps = json_object_get(j, "snapshots");
	del = json_object_get(j, "deleting");
	assert_int_equal(json_array_size(snaps), 1);
	assert_int_equal(json_array_size(del), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(snaps, 0), "name")),
			    "nightly-2026-11-26");
	assert_string_equal(json_string_value(json_object_get(json_array_get(snaps, 0), "state")),
			    "ready");
	assert_string_equal(json_string_value(json_object_get(json_array_get(del, 0), "name")),
			    "s1");
	assert_string_equal(json_string_value(json_object_get(json_array_get(del, 0), "state")),
			    "deleting");
	json_decref(j);
	j = cli_snapshot_list_json("db", NULL, 0); /* none: empty arrays */
	assert_int_equal(json_array_size(json_object_get(j, "deleting")), 0);
	json_decref(j);
}

/* A data file system's figures, df's Use% and the warning past 90% or full. */
static void test_data_fs(void **state)
{
	Tessera__Admin__DataFs fs = TESSERA__ADMIN__DATA_FS__INIT;
	char warn[512];
	json_t *j;

	(void)state;
	fs.error = "";
	fs.size = 100ull << 20;
	fs.free = 50ull << 20;
	fs.avail = 50ull << 20;
	assert_int_equal(cli_fs_used_percent(&fs), 50);
	assert_null(cli_fs_warning(&fs, warn, sizeof(warn)));
	j = cli_data_fs_json(&fs);
	assert_int_equal(json_integer_value(json_object_get(j, "size")), 100 << 20);
	assert_int_equal(json_integer_value(json_object_get(j, "free")), 50 << 20);
	assert_int_equal(json_integer_value(json_object_get(j, "avail")), 50 << 20);
	assert_int_equal(json_integer_value(json_object_get(j, "used_percent")), 50);
	assert_true(json_is_null(json_object_get(j, "warning")));
	assert_true(json_is_null(json_object_get(j, "error")));
	json_decref(j);
	/* 90% used: no warning yet; 90.1%: rounded up to 91, warned */
	fs.free = fs.avail = 10ull << 20;
	assert_int_equal(cli_fs_used_percent(&fs), 90);
	assert_null(cli_fs_warning(&fs, warn, sizeof(warn)));
	fs.free = fs.avail = (10ull << 20) - 4096;
	assert_int_equal(cli_fs_used_percent(&fs), 91);
	assert_non_null(cli_fs_warning(&fs, warn, sizeof(warn)));
	assert_non_null(strstr(warn, "data file system 91% full"));
	/* df's Use% leaves out the blocks only root may use (free - avail) */
	fs.free = 20ull << 20;
	fs.avail = 10ull << 20;
	assert_int_equal(cli_fs_used_percent(&fs), 89);
	/* full: nothing available */
	fs.free = fs.avail = 0;
	assert_int_equal(cli_fs_used_percent(&fs), 100);
	assert_non_null(cli_fs_warning(&fs, warn, sizeof(warn)));
	assert_non_null(strstr(warn, "data file system FULL (0 B available of 100.0 MiB)"));
	j = cli_data_fs_json(&fs);
	assert_non_null(strstr(json_string_value(json_object_get(j, "warning")), "FULL"));
	json_decref(j);
	/* unknown figures: no warning, the reason in "error" */
	fs.error = "not alive";
	assert_null(cli_fs_warning(&fs, warn, sizeof(warn)));
	j = cli_data_fs_json(&fs);
	assert_string_equal(json_string_value(json_object_get(j, "error")), "not alive");
	assert_true(json_is_null(json_object_get(j, "used_percent")));
	json_decref(j);
	assert_true(json_is_null(cli_data_fs_json(NULL)));
}

static void test_diff_json(void **state)
{
	Tessera__Admin__Extent e[3];
	Tessera__Admin__Extent *ep[3];
	json_t *j, *ext;

	(void)state;
	for (int i = 0; i < 3; i++) {
		tessera__admin__extent__init(&e[i]);
		ep[i] = &e[i];
	}
	e[0].offset = 0;
	e[0].length = 4096;
	e[1].offset = 1ull << 20;
	e[1].length = 65536;
	e[1].zero = 1;
	e[2].offset = (16ull << 40) - 4096; /* 16 TiB: beyond 32 bits */
	e[2].length = 4096;

	/* to the head: "to" is null; changed_bytes summed when the server sent 0 */
	j = cli_diff_json("db", "s1", NULL, ep, 3, 0);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "volume")), "db");
	assert_string_equal(json_string_value(json_object_get(j, "from")), "s1");
	assert_true(json_is_null(json_object_get(j, "to")));
	assert_int_equal(json_integer_value(json_object_get(j, "changed_bytes")), 73728);
	ext = json_object_get(j, "extents");
	assert_int_equal(json_array_size(ext), 3);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(ext, 1), "offset")),
			 1 << 20);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(ext, 1), "length")),
			 65536);
	assert_true(json_is_true(json_object_get(json_array_get(ext, 1), "zero")));
	assert_true(json_is_false(json_object_get(json_array_get(ext, 0), "zero")));
	assert_int_equal(json_integer_value(json_object_get(json_array_get(ext, 2), "offset")),
			 (json_int_t)((16ull << 40) - 4096));
	json_decref(j);
	/* between snapshots, "" is the head too; the server's total wins */
	j = cli_diff_json("db", "s1", "s2", ep, 1, 8192);
	assert_string_equal(json_string_value(json_object_get(j, "to")), "s2");
	assert_int_equal(json_integer_value(json_object_get(j, "changed_bytes")), 8192);
	json_decref(j);
	j = cli_diff_json("db", "s1", "", NULL, 0, 0);
	assert_true(json_is_null(json_object_get(j, "to")));
	assert_int_equal(json_array_size(json_object_get(j, "extents")), 0);
	assert_int_equal(json_integer_value(json_object_get(j, "changed_bytes")), 0);
	json_decref(j);
}

static void test_diff_text(void **state)
{
	Tessera__Admin__Extent e[2];
	Tessera__Admin__Extent *ep[2] = { &e[0], &e[1] };
	char buf[1024];

	(void)state;
	tessera__admin__extent__init(&e[0]);
	tessera__admin__extent__init(&e[1]);
	e[0].offset = 0;
	e[0].length = 4096;
	e[1].offset = 1073737728;
	e[1].length = 1 << 20;
	e[1].zero = 1;
	memset(buf, 0, sizeof(buf));
	CAPTURE(buf, cli_print_diff(out, "db", "s1", "s2", ep, 2, 0));
	assert_string_equal(buf,
			    "    OFFSET   LENGTH        SIZE  ZERO\n"
			    "         0     4096     4.0 KiB  no\n"
			    "1073737728  1048576     1.0 MiB  yes\n"
			    "db@s1 -> db@s2: 2 extents, 1.0 MiB (1052672 bytes) changed\n");
	memset(buf, 0, sizeof(buf));
	CAPTURE(buf, cli_print_diff(out, "db", "s1", NULL, NULL, 0, 0));
	assert_string_equal(buf, "db@s1 -> head (current content): 0 extents, 0 B (0 bytes) "
			    "changed\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_percent),
		cmocka_unit_test(test_rate),
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_all_in_sync),
		cmocka_unit_test(test_volume_status_json),
		cmocka_unit_test(test_status_counters_unsigned),
		cmocka_unit_test(test_volume_json_shapes),
		cmocka_unit_test(test_size),
		cmocka_unit_test(test_snapshot_json),
		cmocka_unit_test(test_clone_json),
		cmocka_unit_test(test_snapshot_table),
		cmocka_unit_test(test_snapshot_deleting_json),
		cmocka_unit_test(test_data_fs),
		cmocka_unit_test(test_diff_json),
		cmocka_unit_test(test_diff_text),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
