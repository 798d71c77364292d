/*
 * Unit tests for csi/params.c (binary csi_params_ut): volume names from
 * CO names, capacity ranges, pagination tokens, StorageClass parameters,
 * snapshot ids.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

static void test_names(void **state)
{
	char a[CSI_NAME_MAX], b[CSI_NAME_MAX];
	char long_name[100];

	assert_int_equal(csi_volume_name("pvc-0a1b2c3d-aaaa-bbbb-cccc-0123456789ab", a), 0);
	assert_string_equal(a, "pvc-0a1b2c3d-aaaa-bbbb-cccc-0123456789ab");
	/* not a Tessera name: stable hash-derived name */
	assert_int_equal(csi_volume_name("my volume/1", a), 0);
	assert_int_equal(csi_volume_name("my volume/1", b), 0);
	assert_string_equal(a, b);
	assert_int_equal(strncmp(a, "csi-", 4), 0);
	assert_int_equal(strlen(a), 44);
	assert_int_equal(csi_volume_name("my volume/2", b), 0);
	assert_string_not_equal(a, b);
	memset(long_name, 'x', 70);
	long_name[70] = '\0'; /* 70 characters: too long for Tessera */
	assert_int_equal(csi_volume_name(long_name, a), 0);
	assert_int_equal(strncmp(a, "csi-", 4), 0);
	assert_int_equal(csi_volume_name("-starts-with-dash", a), 0);
	assert_int_equal(strncmp(a, "csi-", 4), 0);
	/* empty and banned control characters */
	assert_int_equal(csi_volume_name("", a), -EINVAL);
	assert_int_equal(csi_volume_name("a\x01"
					 "b",
					 a),
			 -EINVAL);
	assert_int_equal(csi_volume_name("a\x7f", a), -EINVAL);
	assert_int_equal(csi_volume_name("a\xc2\x85", a), -EINVAL); /* U+0085 */
	assert_int_equal(csi_volume_name("tab\tok", a), 0);
}

static void test_capacity(void **state)
{
	uint64_t s;

	assert_int_equal(csi_capacity(0, 0, 1 << 30, &s), 0);
	assert_int_equal(s, 1 << 30);
	assert_int_equal(csi_capacity(1, 0, 1 << 30, &s), 0);
	assert_int_equal(s, 4096);
	assert_int_equal(csi_capacity(4096, 4096, 1 << 30, &s), 0);
	assert_int_equal(s, 4096);
	assert_int_equal(csi_capacity(4097, 0, 1 << 30, &s), 0);
	assert_int_equal(s, 8192);
	/* limit only: the default capped to it, rounded down */
	assert_int_equal(csi_capacity(0, 10000, 1 << 30, &s), 0);
	assert_int_equal(s, 8192);
	/* impossible ranges */
	assert_int_equal(csi_capacity(4097, 8000, 1 << 30, &s), -ERANGE);
	assert_int_equal(csi_capacity(0, 100, 1 << 30, &s), -ERANGE);
	assert_int_equal(csi_capacity(-1, 0, 1 << 30, &s), -EINVAL);
	assert_int_equal(csi_capacity(0, -5, 1 << 30, &s), -EINVAL);
	/* Tessera's limit: 1 PiB */
	assert_int_equal(csi_capacity((int64_t)CSI_MAX_SIZE, 0, 1 << 30, &s), 0);
	assert_int_equal(s, CSI_MAX_SIZE);
	assert_int_equal(csi_capacity((int64_t)CSI_MAX_SIZE + 1, 0, 1 << 30, &s), -EFBIG);
	assert_int_equal(csi_capacity(INT64_MAX, 0, 1 << 30, &s), -EFBIG);
}

static void test_tokens(void **state)
{
	char after[CSI_ID_MAX], buf[CSI_ID_MAX + 16];

	assert_int_equal(csi_token_parse(NULL, after, sizeof(after)), 0);
	assert_string_equal(after, "");
	assert_int_equal(csi_token_parse("", after, sizeof(after)), 0);
	assert_string_equal(after, "");
	csi_token_format("pvc-7", buf, sizeof(buf));
	assert_int_equal(csi_token_parse(buf, after, sizeof(after)), 0);
	assert_string_equal(after, "pvc-7");
	csi_token_format("vol-1@snap-2", buf, sizeof(buf));
	assert_int_equal(csi_token_parse(buf, after, sizeof(after)), 0);
	assert_string_equal(after, "vol-1@snap-2");
	/* tokens this plugin never makes */
	assert_int_equal(csi_token_parse("invalid-token", after, sizeof(after)), -EINVAL);
	assert_int_equal(csi_token_parse("3", after, sizeof(after)), -EINVAL);
	assert_int_equal(csi_token_parse("after:", after, sizeof(after)), -EINVAL);
	assert_int_equal(csi_token_parse("after:a b", after, sizeof(after)), -EINVAL);
	assert_int_equal(csi_token_parse("after:a/b", after, sizeof(after)), -EINVAL);
	memset(buf, 'x', sizeof(buf) - 1);
	memcpy(buf, "after:", 6);
	buf[sizeof(buf) - 1] = '\0';
	assert_int_equal(csi_token_parse(buf, after, sizeof(after)), -EINVAL); /* too long */
}

static int parse(struct csi_params *p, char *why, size_t n, ...)
{
	char *keys[8], *vals[8];
	va_list ap;
	size_t i;

	va_start(ap, n);
	for (i = 0; i < n; i++) {
		keys[i] = va_arg(ap, char *);
		vals[i] = va_arg(ap, char *);
	}
	va_end(ap);
	return csi_params_parse(n, keys, vals, p, why, 256);
}

static void test_params(void **state)
{
	struct csi_params p;
	char why[256];

	assert_int_equal(parse(&p, why, 0), 0);
	assert_int_equal(p.replicas, 0);
	assert_int_equal(
	    parse(&p, why, 3, "replicas", "3", "failureDomain", "zone", "minReplicas", "2"), 0);
	assert_int_equal(p.replicas, 3);
	assert_int_equal(p.min_replicas, 2);
	assert_string_equal(p.failure_domain, "zone");
	assert_int_equal(parse(&p, why, 2, "ec", "4+2", "stripeUnit", "64K"), 0);
	assert_string_equal(p.ec, "4+2");
	assert_int_equal(p.stripe_unit, 65536);
	/* the CO's own keys are ignored */
	assert_int_equal(parse(&p, why, 1, "csi.storage.k8s.io/pv/name", "pv-1"), 0);
	/* errors, each with a reason */
	assert_int_equal(parse(&p, why, 1, "bogus", "1"), -EINVAL);
	assert_non_null(strstr(why, "unknown parameter \"bogus\""));
	assert_int_equal(parse(&p, why, 1, "replicas", "0"), -EINVAL);
	assert_int_equal(parse(&p, why, 1, "replicas", "9"), -EINVAL);
	assert_int_equal(parse(&p, why, 1, "replicas", "3x"), -EINVAL);
	assert_int_equal(parse(&p, why, 1, "replicas", ""), -EINVAL);
	assert_int_equal(parse(&p, why, 1, "ec", "4"), -EINVAL);
	assert_int_equal(parse(&p, why, 1, "ec", "17+1"), -EINVAL);
	assert_int_equal(parse(&p, why, 1, "failureDomain", "rack"), -EINVAL);
	assert_int_equal(parse(&p, why, 2, "ec", "4+2", "replicas", "3"), -EINVAL);
	assert_non_null(strstr(why, "exclude"));
	assert_int_equal(parse(&p, why, 1, "stripeUnit", "64K"), -EINVAL); /* without ec */
	assert_int_equal(parse(&p, why, 2, "ec", "4+2", "stripeUnit", "3000"), -EINVAL);
	assert_int_equal(parse(&p, why, 2, "replicas", "2", "minReplicas", "3"), -EINVAL);
}

static void test_snapshot_ids(void **state)
{
	char v[CSI_NAME_MAX], s[CSI_NAME_MAX];

	assert_int_equal(csi_snapshot_id_parse("vol-1@snap-1", v, s), 0);
	assert_string_equal(v, "vol-1");
	assert_string_equal(s, "snap-1");
	assert_int_equal(csi_snapshot_id_parse("vol-1", v, s), -EINVAL);
	assert_int_equal(csi_snapshot_id_parse("@snap", v, s), -EINVAL);
	assert_int_equal(csi_snapshot_id_parse("vol@", v, s), -EINVAL);
	assert_int_equal(csi_snapshot_id_parse("vol@a@b", v, s), -EINVAL);
	assert_int_equal(csi_snapshot_id_parse("v o l@s", v, s), -EINVAL);
	assert_int_equal(csi_snapshot_id_parse(NULL, v, s), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),        cmocka_unit_test(test_capacity),
	    cmocka_unit_test(test_tokens),       cmocka_unit_test(test_params),
	    cmocka_unit_test(test_snapshot_ids),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
