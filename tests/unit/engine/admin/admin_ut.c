/*
 * Unit tests of engine/admin/admin_msg.c and admin_sock.c helpers: framing,
 * request and response round trips through the parsers, and rejection of
 * every kind of bad input the parsers are there to stop.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "admin/admin_internal.h"

/* Pack msg into a frame, check the header, return the body (malloc'd copy). */
static uint8_t *pack_body(const ProtobufCMessage *msg, size_t *len)
{
	uint8_t *frame, *body;
	size_t frame_len;

	assert_int_equal(admin_frame_pack(msg, &frame, &frame_len), 0);
	assert_true(frame_len >= 4);
	assert_int_equal(admin_frame_len(frame), frame_len - 4);
	*len = frame_len - 4;
	body = malloc(*len ? *len : 1);
	assert_non_null(body);
	memcpy(body, frame + 4, *len);
	free(frame);
	return body;
}

static int parse_req(const ProtobufCMessage *msg, Tessera__Admin__Request **out,
		     const char **why)
{
	size_t len;
	uint8_t *body = pack_body(msg, &len);
	int ret = tsr_admin_request_parse(body, len, out, why);

	free(body);
	return ret;
}

static void test_frame_len(void **state)
{
	const uint8_t hdr[4] = { 0x00, 0x10, 0x00, 0x01 };
	const uint8_t big[4] = { 0xff, 0xff, 0xff, 0xff };

	assert_int_equal(admin_frame_len(hdr), 0x100001);
	assert_int_equal(admin_frame_len(big), 0xffffffffu);
}

static void test_request_roundtrip(void **state)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT, *out;
	Tessera__Admin__VolumeCreate create = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	Tessera__Admin__VolumeResize resize = TESSERA__ADMIN__VOLUME_RESIZE__INIT;
	Tessera__Admin__VolumeShow show = TESSERA__ADMIN__VOLUME_SHOW__INIT;
	Tessera__Admin__VolumeDelete del = TESSERA__ADMIN__VOLUME_DELETE__INIT;
	Tessera__Admin__VolumeList list = TESSERA__ADMIN__VOLUME_LIST__INIT;
	Tessera__Admin__StatusGet get = TESSERA__ADMIN__STATUS_GET__INIT;
	char token[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

	create.name = "db-1.x_y";
	create.size = 16ull << 40;
	req.token = token;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
	req.volume_create = &create;
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	assert_int_equal(out->command_case, TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE);
	assert_string_equal(out->volume_create->name, "db-1.x_y");
	assert_true(out->volume_create->size == (16ull << 40));
	assert_string_equal(out->token, token);
	tessera__admin__request__free_unpacked(out, NULL);

	req.token = (char *)protobuf_c_empty_string;
	resize.name = "v";
	resize.size = 8192;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE;
	req.volume_resize = &resize;
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	assert_string_equal(out->volume_resize->name, "v");
	assert_int_equal(out->volume_resize->size, 8192);
	assert_string_equal(out->token, "");
	tessera__admin__request__free_unpacked(out, NULL);

	show.name = "v";
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW;
	req.volume_show = &show;
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	assert_string_equal(out->volume_show->name, "v");
	tessera__admin__request__free_unpacked(out, NULL);

	del.name = "v";
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DELETE;
	req.volume_delete = &del;
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	assert_string_equal(out->volume_delete->name, "v");
	tessera__admin__request__free_unpacked(out, NULL);

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_LIST;
	req.volume_list = &list;
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	assert_int_equal(out->command_case, TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_LIST);
	assert_non_null(out->volume_list);
	tessera__admin__request__free_unpacked(out, NULL);

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_STATUS;
	req.status = &get;
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	assert_int_equal(out->command_case, TESSERA__ADMIN__REQUEST__COMMAND_STATUS);
	tessera__admin__request__free_unpacked(out, NULL);
}

static void expect_create_rejected(const char *name, uint64_t size, const char *why_part)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT, *out = (void *)1;
	Tessera__Admin__VolumeCreate create = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	const char *why = NULL;

	create.name = (char *)name;
	create.size = size;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
	req.volume_create = &create;
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	assert_null(out);
	assert_non_null(why);
	assert_non_null(strstr(why, why_part));
}

static void test_request_rejects_bad_names(void **state)
{
	char long_name[80];

	memset(long_name, 'n', 64);
	long_name[64] = '\0';
	expect_create_rejected("", 4096, "name");
	expect_create_rejected("bad/name", 4096, "name");
	expect_create_rejected(".hidden", 4096, "name");
	expect_create_rejected("-x", 4096, "name");
	expect_create_rejected("a b", 4096, "name");
	expect_create_rejected("a\nb", 4096, "name");
	expect_create_rejected(long_name, 4096, "name");
	long_name[63] = '\0'; /* 63 characters: the longest valid name */
	{
		Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT, *out;
		Tessera__Admin__VolumeShow show = TESSERA__ADMIN__VOLUME_SHOW__INIT;

		show.name = long_name;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW;
		req.volume_show = &show;
		assert_int_equal(parse_req(&req.base, &out, NULL), 0);
		assert_int_equal(strlen(out->volume_show->name), 63);
		tessera__admin__request__free_unpacked(out, NULL);
	}
}

static void test_request_rejects_bad_sizes(void **state)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT, *out = NULL;
	Tessera__Admin__VolumeResize resize = TESSERA__ADMIN__VOLUME_RESIZE__INIT;
	const char *why = NULL;

	expect_create_rejected("v", 0, "zero");
	expect_create_rejected("v", 4097, "multiple of 4 KiB");
	expect_create_rejected("v", 1000, "multiple of 4 KiB");
	expect_create_rejected("v", UINT64_MAX, "multiple of 4 KiB");

	resize.name = "v";
	resize.size = 3000000000ull;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE;
	req.volume_resize = &resize;
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	assert_null(out);
	assert_non_null(strstr(why, "4 KiB"));
}

static void test_request_rejects_no_command(void **state)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT, *out = NULL;
	const char *why = NULL;

	/* an empty message is valid protobuf, but carries no command */
	assert_int_equal(tsr_admin_request_parse((const uint8_t *)"", 0, &out, &why), -EINVAL);
	assert_null(out);
	assert_non_null(strstr(why, "no command"));
	why = NULL;
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	assert_non_null(why);
}

static void test_request_rejects_unknown_command(void **state)
{
	/* field 99 (length-delimited, empty): a command from a newer client */
	const uint8_t buf[] = { 0x9a, 0x06, 0x00 }; /* tag 99<<3|2 = 794 as a varint */
	Tessera__Admin__Request *out = NULL;
	const char *why = NULL;

	assert_int_equal(tsr_admin_request_parse(buf, sizeof(buf), &out, &why), -EINVAL);
	assert_null(out);
	assert_non_null(why);
}

static void test_request_rejects_garbage(void **state)
{
	static const uint8_t samples[][8] = {
		{ 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff }, /* endless varint */
		{ 0x52, 0x7f, 0x00 },                             /* field 10, length past the end */
		{ 0x07 },                                         /* wire type 7 */
		{ 0x0a, 0x05, 'a', 'b' },                         /* token cut short */
	};
	static const size_t lens[] = { 8, 3, 1, 4 };
	Tessera__Admin__Request *out = NULL;
	const char *why = NULL;
	uint8_t *big;

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		why = NULL;
		assert_int_equal(tsr_admin_request_parse(samples[i], lens[i], &out, &why), -EINVAL);
		assert_null(out);
		assert_non_null(why);
	}
	big = calloc(1, TSR_ADMIN_MAX_FRAME + 1);
	assert_non_null(big);
	assert_int_equal(tsr_admin_request_parse(big, TSR_ADMIN_MAX_FRAME + 1, &out, &why),
			 -EMSGSIZE);
	assert_null(out);
	free(big);
}

static void test_request_rejects_bad_token(void **state)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT, *out = NULL;
	Tessera__Admin__StatusGet get = TESSERA__ADMIN__STATUS_GET__INIT;
	char long_token[TSR_ADMIN_TOKEN_LEN + 2];
	const char *why = NULL;

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_STATUS;
	req.status = &get;
	memset(long_token, 'a', TSR_ADMIN_TOKEN_LEN + 1);
	long_token[TSR_ADMIN_TOKEN_LEN + 1] = '\0';
	req.token = long_token;
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	assert_non_null(strstr(why, "token"));
	req.token = "abc\x01" "def";
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	assert_null(out);
}

/* Every prefix of a valid request either fails or parses into a valid request. */
static void test_request_prefixes(void **state)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT, *out;
	Tessera__Admin__VolumeCreate create = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	size_t len, n, ok = 0;
	uint8_t *body;

	create.name = "prefix-test";
	create.size = 1ull << 30;
	req.token = "feedface";
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
	req.volume_create = &create;
	body = pack_body(&req.base, &len);
	for (n = 0; n < len; n++) {
		if (tsr_admin_request_parse(body, n, &out, NULL) == 0) {
			assert_true(tsr_valid_name(out->volume_create->name));
			assert_int_equal(out->volume_create->size % 4096, 0);
			tessera__admin__request__free_unpacked(out, NULL);
			ok++;
		}
	}
	/* only the complete message has both the name and the size */
	assert_int_equal(ok, 0);
	assert_int_equal(tsr_admin_request_parse(body, len, &out, NULL), 0);
	tessera__admin__request__free_unpacked(out, NULL);
	free(body);
}

static int parse_resp(const ProtobufCMessage *msg, Tessera__Admin__Response **out)
{
	size_t len;
	uint8_t *body = pack_body(msg, &len);
	int ret = tsr_admin_response_parse(body, len, out, NULL);

	free(body);
	return ret;
}

static void test_response_roundtrip(void **state)
{
	Tessera__Admin__Response resp = TESSERA__ADMIN__RESPONSE__INIT, *out;
	Tessera__Admin__Volume vol = TESSERA__ADMIN__VOLUME__INIT, *vols[1] = { &vol };
	Tessera__Admin__Status st = TESSERA__ADMIN__STATUS__INIT;
	char *uris[] = { "nbd+unix:///v?socket=/x/nbd.sock", "nbd://127.0.0.1:10809/v" };
	char *listeners[] = { "unix:/x/nbd.sock" };

	vol.name = "v";
	vol.uuid = "0b7e4c1e-3f7a-4c55-9d2b-1a2b3c4d5e6f";
	vol.size = 1 << 30;
	vol.allocated = 8192;
	vol.created = 1764111600;
	vol.nbd_uris = uris;
	vol.n_nbd_uris = 2;
	vol.in_use = 1;
	resp.volumes = vols;
	resp.n_volumes = 1;
	st.version = "0.1.0";
	st.pid = 42;
	st.data_dir = "/x";
	st.io_backend = "io_uring";
	st.workers = 2;
	st.nbd_listeners = listeners;
	st.n_nbd_listeners = 1;
	st.volumes = 1;
	resp.status = &st;
	assert_int_equal(parse_resp(&resp.base, &out), 0);
	assert_int_equal(out->error, 0);
	assert_int_equal(out->n_volumes, 1);
	assert_string_equal(out->volumes[0]->name, "v");
	assert_string_equal(out->volumes[0]->uuid, vol.uuid);
	assert_int_equal(out->volumes[0]->size, 1 << 30);
	assert_int_equal(out->volumes[0]->allocated, 8192);
	assert_int_equal(out->volumes[0]->created, 1764111600);
	assert_int_equal(out->volumes[0]->n_nbd_uris, 2);
	assert_string_equal(out->volumes[0]->nbd_uris[1], uris[1]);
	assert_true(out->volumes[0]->in_use);
	assert_non_null(out->status);
	assert_int_equal(out->status->pid, 42);
	assert_string_equal(out->status->io_backend, "io_uring");
	assert_string_equal(out->status->nbd_listeners[0], listeners[0]);
	tessera__admin__response__free_unpacked(out, NULL);

	/* an error reply */
	resp = (Tessera__Admin__Response)TESSERA__ADMIN__RESPONSE__INIT;
	resp.error = -ENOENT;
	resp.message = "volume 'x' not found (tessera volume list shows what exists)";
	assert_int_equal(parse_resp(&resp.base, &out), 0);
	assert_int_equal(out->error, -ENOENT);
	assert_string_equal(out->message, resp.message);
	assert_int_equal(out->n_volumes, 0);
	assert_null(out->status);
	tessera__admin__response__free_unpacked(out, NULL);
}

static void test_response_rejects(void **state)
{
	Tessera__Admin__Response resp = TESSERA__ADMIN__RESPONSE__INIT, *out = NULL;
	Tessera__Admin__Volume vol = TESSERA__ADMIN__VOLUME__INIT, *vols[1] = { &vol };
	const uint8_t junk[] = { 0xff, 0xff, 0xff };

	resp.error = 5; /* errors are negative */
	assert_int_equal(parse_resp(&resp.base, &out), -EINVAL);
	assert_null(out);
	resp.error = -100000;
	assert_int_equal(parse_resp(&resp.base, &out), -EINVAL);
	resp.error = -EIO;
	resp.message = "bell\a";
	assert_int_equal(parse_resp(&resp.base, &out), -EINVAL);
	resp.message = (char *)protobuf_c_empty_string;
	resp.error = 0;
	resp.volumes = vols;
	resp.n_volumes = 1;
	vol.name = "../etc";
	assert_int_equal(parse_resp(&resp.base, &out), -EINVAL);
	vol.name = "ok";
	vol.uuid = "not-a-uuid";
	assert_int_equal(parse_resp(&resp.base, &out), -EINVAL);
	vol.uuid = "0b7e4c1e-3f7a-4c55-9d2b-1a2b3c4d5e6f";
	vol.size = 4095;
	assert_int_equal(parse_resp(&resp.base, &out), -EINVAL);
	vol.size = 4096;
	assert_int_equal(parse_resp(&resp.base, &out), 0); /* and now it is fine */
	tessera__admin__response__free_unpacked(out, NULL);
	out = NULL;
	assert_int_equal(tsr_admin_response_parse(junk, sizeof(junk), &out, NULL), -EINVAL);
	assert_null(out);
}

/* Every snapshot request: names checked, "VOL@SNAP" accepted where a snapshot is named. */
static void test_snapshot_requests(void **state)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT, *out = NULL;
	Tessera__Admin__SnapshotCreate create = TESSERA__ADMIN__SNAPSHOT_CREATE__INIT;
	Tessera__Admin__SnapshotDelete del = TESSERA__ADMIN__SNAPSHOT_DELETE__INIT;
	Tessera__Admin__SnapshotList list = TESSERA__ADMIN__SNAPSHOT_LIST__INIT;
	Tessera__Admin__SnapshotShow show = TESSERA__ADMIN__SNAPSHOT_SHOW__INIT;
	Tessera__Admin__SnapshotDiff diff = TESSERA__ADMIN__SNAPSHOT_DIFF__INIT;
	Tessera__Admin__VolumeRollback rb = TESSERA__ADMIN__VOLUME_ROLLBACK__INIT;
	const char *why = NULL;

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_CREATE;
	req.snapshot_create = &create;
	create.volume = "db";
	create.name = "nightly-1";
	create.local_copy = 1;
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	assert_string_equal(out->snapshot_create->volume, "db");
	assert_string_equal(out->snapshot_create->name, "nightly-1");
	assert_true(out->snapshot_create->local_copy);
	tessera__admin__request__free_unpacked(out, NULL);
	create.volume = "db@nightly-1"; /* the export-name form */
	create.name = "";
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	tessera__admin__request__free_unpacked(out, NULL);
	out = NULL;
	create.name = "x"; /* both forms at once */
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	assert_null(out);
	create.volume = "db";
	create.name = "";
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	assert_non_null(strstr(why, "snapshot name"));
	create.name = "a/b";
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	create.volume = "@x";
	create.name = "";
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	create.volume = "db@";
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	create.volume = "db@a@b";
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DELETE;
	req.snapshot_delete = &del;
	del.volume = "db";
	del.name = "s";
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	tessera__admin__request__free_unpacked(out, NULL);
	del.name = ".hidden";
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_LIST;
	req.snapshot_list = &list;
	list.volume = "db";
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	tessera__admin__request__free_unpacked(out, NULL);
	list.volume = "db@s"; /* a volume, not a snapshot */
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_SHOW;
	req.snapshot_show = &show;
	show.volume = "db@s";
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	tessera__admin__request__free_unpacked(out, NULL);

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SNAPSHOT_DIFF;
	req.snapshot_diff = &diff;
	diff.volume = "db";
	diff.from = "a";
	assert_int_equal(parse_req(&req.base, &out, NULL), 0); /* to "" = the head */
	tessera__admin__request__free_unpacked(out, NULL);
	diff.to = "b";
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	tessera__admin__request__free_unpacked(out, NULL);
	diff.start = 1ull << 40; /* a page: from start, the asker follows diff_next */
	diff.paged = true;
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	assert_true(out->snapshot_diff->start == 1ull << 40);
	assert_true(out->snapshot_diff->paged);
	tessera__admin__request__free_unpacked(out, NULL);
	diff.start = 0;
	diff.paged = false;
	diff.to = "b c";
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	diff.to = "";
	diff.from = "";
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ROLLBACK;
	req.volume_rollback = &rb;
	rb.volume = "db";
	rb.snapshot = "s";
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	tessera__admin__request__free_unpacked(out, NULL);
	rb.snapshot = "";
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	/* a message without its body */
	req.volume_rollback = NULL;
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
}

/* VolumeCreate as a clone: size may be 0 (the source's), the source is checked. */
static void test_clone_requests(void **state)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT, *out = NULL;
	Tessera__Admin__VolumeCreate c = TESSERA__ADMIN__VOLUME_CREATE__INIT;
	const char *why = NULL;

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_CREATE;
	req.volume_create = &c;
	c.name = "copy";
	c.from_volume = "db";
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	assert_string_equal(out->volume_create->from_volume, "db");
	tessera__admin__request__free_unpacked(out, NULL);
	c.from_snapshot = "s";
	c.size = 1 << 30;
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	tessera__admin__request__free_unpacked(out, NULL);
	c.size = 4097;
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	c.size = 0;
	c.from_volume = "db@s"; /* and from_snapshot too: ambiguous */
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	c.from_snapshot = "";
	assert_int_equal(parse_req(&req.base, &out, NULL), 0);
	tessera__admin__request__free_unpacked(out, NULL);
	c.from_volume = "";
	c.from_snapshot = "s"; /* a snapshot needs its volume */
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
	c.from_snapshot = "";
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL); /* no source: size 0 */
	c.from_volume = "x/y";
	assert_int_equal(parse_req(&req.base, &out, &why), -EINVAL);
}

static void test_snapshot_responses(void **state)
{
	Tessera__Admin__Response resp = TESSERA__ADMIN__RESPONSE__INIT, *out = NULL;
	Tessera__Admin__Snapshot snap = TESSERA__ADMIN__SNAPSHOT__INIT, *snaps[1] = { &snap };
	Tessera__Admin__Extent e1 = TESSERA__ADMIN__EXTENT__INIT, e2 = TESSERA__ADMIN__EXTENT__INIT;
	Tessera__Admin__Extent *exts[2] = { &e1, &e2 };
	Tessera__Admin__Volume vol = TESSERA__ADMIN__VOLUME__INIT, *vols[1] = { &vol };
	char *uris[] = { "nbd+unix:///db@s?socket=/x/nbd.sock" };

	snap.volume = "db";
	snap.name = "s";
	snap.uuid = "0b7e4c1e-3f7a-4c55-9d2b-1a2b3c4d5e6f";
	snap.size = 1 << 20;
	snap.seq = 3;
	snap.nbd_uris = uris;
	snap.n_nbd_uris = 1;
	resp.snapshots = snaps;
	resp.n_snapshots = 1;
	e1.offset = 0;
	e1.length = 8192;
	e2.offset = 1 << 20;
	e2.length = 4096;
	e2.zero = 1;
	resp.extents = exts;
	resp.n_extents = 2;
	resp.diff_bytes = 12288;
	resp.diff_next = 3ull << 30; /* more pages: the next one starts at 3 GiB */
	vol.name = "clone";
	vol.size = 1 << 20;
	vol.parent_volume = "db";
	vol.parent_snapshot = "s";
	vol.snapshots = snaps;
	vol.n_snapshots = 1;
	resp.volumes = vols;
	resp.n_volumes = 1;
	assert_int_equal(parse_resp(&resp.base, &out), 0);
	assert_int_equal(out->n_snapshots, 1);
	assert_string_equal(out->snapshots[0]->nbd_uris[0], uris[0]);
	assert_int_equal(out->snapshots[0]->seq, 3);
	assert_int_equal(out->n_extents, 2);
	assert_true(out->extents[1]->zero);
	assert_int_equal(out->diff_bytes, 12288);
	assert_true(out->diff_next == 3ull << 30);
	assert_string_equal(out->volumes[0]->parent_snapshot, "s");
	assert_int_equal(out->volumes[0]->n_snapshots, 1);
	tessera__admin__response__free_unpacked(out, NULL);
	out = NULL;
	e2.length = 0;
	assert_int_equal(parse_resp(&resp.base, &out), -EINVAL);
	e2.length = 4096;
	e2.offset = 100;
	assert_int_equal(parse_resp(&resp.base, &out), -EINVAL);
	e2.offset = 1 << 20;
	snap.name = "s@t";
	assert_int_equal(parse_resp(&resp.base, &out), -EINVAL);
	snap.name = "s";
	vol.parent_volume = "bad\n";
	assert_int_equal(parse_resp(&resp.base, &out), -EINVAL);
	assert_null(out);
}

/* A Response the server builds is freed by admin_response_free_built, error path included. */
static void test_built_response_free(void **state)
{
	Tessera__Admin__Response resp = TESSERA__ADMIN__RESPONSE__INIT;

	admin_fail(&resp, -EBUSY, "volume '%s' is in use by an NBD client (disconnect it first)",
		   "db");
	assert_int_equal(resp.error, -EBUSY);
	assert_string_equal(resp.message,
			    "volume 'db' is in use by an NBD client (disconnect it first)");
	admin_fail(&resp, -EIO, "second %d", 2); /* replaces, does not leak */
	assert_string_equal(resp.message, "second 2");
	admin_response_free_built(&resp);
	assert_int_equal(resp.n_volumes, 0);
	assert_null(resp.status);
}

static void test_split_hostport(void **state)
{
	char host[64], port[16];

	assert_int_equal(tsr_admin_split_hostport("127.0.0.1:7070", host, sizeof(host), port,
						  sizeof(port)), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_string_equal(port, "7070");
	assert_int_equal(tsr_admin_split_hostport("[::1]:10809", host, sizeof(host), port,
						  sizeof(port)), 0);
	assert_string_equal(host, "::1");
	assert_string_equal(port, "10809");
	assert_int_equal(tsr_admin_split_hostport("localhost:1", host, sizeof(host), port,
						  sizeof(port)), 0);
	assert_string_equal(host, "localhost");
	assert_int_equal(tsr_admin_split_hostport("::1:80", host, sizeof(host), port,
						  sizeof(port)), -EINVAL);
	assert_int_equal(tsr_admin_split_hostport("host", host, sizeof(host), port,
						  sizeof(port)), -EINVAL);
	assert_int_equal(tsr_admin_split_hostport("host:", host, sizeof(host), port,
						  sizeof(port)), -EINVAL);
	assert_int_equal(tsr_admin_split_hostport(":80", host, sizeof(host), port,
						  sizeof(port)), -EINVAL);
	assert_int_equal(tsr_admin_split_hostport("h:8x", host, sizeof(host), port,
						  sizeof(port)), -EINVAL);
	assert_int_equal(tsr_admin_split_hostport("[::1]80", host, sizeof(host), port,
						  sizeof(port)), -EINVAL);
}

static void test_read_token(void **state)
{
	char path[] = "/tmp/admin_ut_token.XXXXXX", buf[128];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "  abc123 \n", 10), 10);
	close(fd);
	/* leading blanks are kept (a token has none), trailing ones and the newline go */
	assert_int_equal(tsr_admin_read_token(path, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "  abc123");
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "\n", 1), 1);
	close(fd);
	assert_int_equal(tsr_admin_read_token(path, buf, sizeof(buf)), -EINVAL);
	unlink(path);
	assert_int_equal(tsr_admin_read_token(path, buf, sizeof(buf)), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_len),
		cmocka_unit_test(test_request_roundtrip),
		cmocka_unit_test(test_request_rejects_bad_names),
		cmocka_unit_test(test_request_rejects_bad_sizes),
		cmocka_unit_test(test_request_rejects_no_command),
		cmocka_unit_test(test_request_rejects_unknown_command),
		cmocka_unit_test(test_request_rejects_garbage),
		cmocka_unit_test(test_request_rejects_bad_token),
		cmocka_unit_test(test_request_prefixes),
		cmocka_unit_test(test_response_roundtrip),
		cmocka_unit_test(test_response_rejects),
		cmocka_unit_test(test_built_response_free),
		cmocka_unit_test(test_snapshot_requests),
		cmocka_unit_test(test_clone_requests),
		cmocka_unit_test(test_snapshot_responses),
		cmocka_unit_test(test_split_hostport),
		cmocka_unit_test(test_read_token),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
