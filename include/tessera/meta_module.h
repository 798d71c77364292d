/*
 * Tessera metadata store implementer interface.  A backend fills one static
 * const struct tsr_meta_ops; engine/meta/meta.c wraps every call (key, value
 * and argument checks, result checks, the wait loop of watch) so backends
 * receive only valid requests: keys of 1..TSR_META_MAX_KEY printable
 * characters, prefixes of 0..TSR_META_MAX_KEY, values of at most
 * TSR_META_MAX_VALUE bytes, non-NULL out pointers.
 *
 * Every op returns 0 or -errno as include/tessera/meta.h documents for the
 * public call of the same name.
 */
#ifndef TESSERA_META_MODULE_H
#define TESSERA_META_MODULE_H

#include "tessera/meta.h"

struct tsr_meta_ops {
	const char *name; /* "sqlite", "remote": what tsr_meta_backend returns */
	int (*get)(void *ctx, const char *key, struct tsr_meta_kv *out);
	int (*range)(void *ctx, const char *prefix, struct tsr_meta_kv **out, size_t *n,
		     uint64_t *rev);
	int (*cas)(void *ctx, const char *key, uint64_t expect_rev, const void *value,
		   size_t value_len, uint64_t lease, uint64_t *new_rev);
	int (*del)(void *ctx, const char *key, uint64_t expect_rev);
	/*
	 * Never waits: the changes under prefix after since_rev that are there
	 * now (possibly none), oldest first; *rev the revision to continue from.
	 * A backend may return fewer events than there are (a bounded batch);
	 * *rev then is the revision of the last one returned.
	 */
	int (*watch)(void *ctx, const char *prefix, uint64_t since_rev,
		     struct tsr_meta_kv **events, size_t *n, uint64_t *rev);
	/*
	 * May be NULL (the wrapper then sleeps 50 ms between watch polls).
	 * Return once the store's revision may have moved past rev, or after
	 * timeout_ms (> 0); spurious returns are fine.  0 or -errno.
	 */
	int (*wait)(void *ctx, uint64_t rev, int timeout_ms);
	int (*lease_grant)(void *ctx, uint32_t ttl_ms, uint64_t *id);
	int (*lease_keepalive)(void *ctx, uint64_t id);
	int (*lease_revoke)(void *ctx, uint64_t id);
	void (*close)(void *ctx);
};

/*
 * For backends' constructors: wrap ctx into a struct tsr_meta.  On -ENOMEM
 * ops->close(ctx) has been called.
 */
int tsr_meta_new(const struct tsr_meta_ops *ops, void *ctx, struct tsr_meta **out);

#endif
