/*
 * libFuzzer harness for the meta service's reply parser
 * (engine/meta/meta_proto.c, meta_response_parse): what a node reads from
 * the metadata server.  Whatever the bytes, the parser rejects them (a
 * reason, nothing handed back, -EINVAL or -EMSGSIZE) or returns a reply
 * whose every field meta_remote.c relies on is valid: error in
 * [-4095, 0], message printable and at most META_MAX_MESSAGE bytes, at most
 * META_MAX_KVS kvs, each with a valid key and a value of at most
 * TSR_META_MAX_VALUE bytes that meta_kv_from_proto copies.  The input is
 * parsed from its own heap copy (ASan sees any overread), once with a why
 * and once without (meta_remote passes one, other callers NULL).  An
 * accepted reply packs and parses again (fuzz_pb.h says when not).
 * Built with -DTSR_FUZZ=ON and clang-14; run:
 *   fuzz_meta_response -max_total_time=60 tests/fuzz/corpus/fuzz_meta_response
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_pb.h"
#include "meta/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_text(const char *s, size_t max, bool may_be_empty)
{
	size_t n = strlen(s);

	if (n > max || (n == 0 && !may_be_empty))
		abort();
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			abort();
}

static void check(const Tessera__Meta__Response *resp)
{
	if (resp->error > 0 || resp->error < -4095)
		abort();
	check_text(resp->message, META_MAX_MESSAGE, true);
	if (resp->n_kvs > META_MAX_KVS || (resp->n_kvs && resp->kvs == NULL))
		abort();
	for (size_t i = 0; i < resp->n_kvs; i++) {
		const Tessera__Meta__KeyValue *p = resp->kvs[i];
		struct tsr_meta_kv kv = {0};

		check_text(p->key, TSR_META_MAX_KEY, false);
		if (p->value.len > TSR_META_MAX_VALUE || (p->value.len && p->value.data == NULL))
			abort();
		/* what meta_remote.c does with each kv of a get, range or watch */
		if (meta_kv_from_proto(&kv, p) != 0)
			continue; /* -ENOMEM */
		if (strcmp(kv.key, p->key) != 0 || kv.value_len != p->value.len ||
		    (kv.value_len && memcmp(kv.value, p->value.data, kv.value_len) != 0))
			abort();
		tsr_meta_kv_clear(&kv);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Tessera__Meta__Response *resp = NULL, *again = NULL;
	uint8_t *copy = malloc(size ? size : 1);
	uint8_t *frame = NULL;
	const char *why = NULL;
	size_t len = 0;
	int ret, ret2;

	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	ret = meta_response_parse(copy, size, &resp, &why);
	if (ret != 0) {
		/* a rejection says why and hands nothing back */
		if (resp != NULL || why == NULL || (ret != -EINVAL && ret != -EMSGSIZE))
			abort();
		ret2 = meta_response_parse(copy, size, &resp, NULL);
		if (ret2 != ret || resp != NULL)
			abort();
		free(copy);
		return 0;
	}
	check(resp);
	if (meta_response_parse(copy, size, &again, NULL) != 0)
		abort();
	tessera__meta__response__free_unpacked(again, NULL);
	again = NULL;
	if (pb_has_unknown(&resp->base))
		goto out;
	if (meta_frame_pack(&resp->base, &frame, &len) != 0)
		goto out; /* -ENOMEM; not -EMSGSIZE: it came in under the limit */
	if (meta_frame_len(frame) != len - 4 ||
	    meta_response_parse(frame + 4, len - 4, &again, &why) != 0 ||
	    again->error != resp->error || again->n_kvs != resp->n_kvs || again->rev != resp->rev ||
	    again->id != resp->id || again->more != resp->more ||
	    strcmp(again->message, resp->message) != 0)
		abort();
	tessera__meta__response__free_unpacked(again, NULL);
	free(frame);
out:
	tessera__meta__response__free_unpacked(resp, NULL);
	free(copy);
	return 0;
}
