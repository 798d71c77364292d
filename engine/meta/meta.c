/*
 * The metadata store's public calls (include/tessera/meta.h): one wrapper per
 * operation that checks keys, values and arguments, calls the backend through
 * its ops table (include/tessera/meta_module.h) and checks what comes back.
 * The waiting part of watch lives here too, so backends only answer "what
 * changed since": the wrapper polls, sleeping in the backend's wait op.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meta/internal.h"

struct tsr_meta {
	const struct tsr_meta_ops *ops; /* the backend; never NULL */
	void *ctx;                      /* the backend's handle, closed by ops->close */
};

#define WAIT_POLL_MS 50 /* between watch polls when the backend has no wait op */

static bool valid_chars(const char *s, size_t min)
{
	size_t n;

	if (s == NULL)
		return false;
	for (n = 0; s[n]; n++)
		if (n >= TSR_META_MAX_KEY || s[n] < 0x20 || s[n] > 0x7e)
			return false;
	return n >= min;
}

bool meta_key_valid(const char *key)
{
	return valid_chars(key, 1);
}

bool meta_prefix_valid(const char *prefix)
{
	return valid_chars(prefix, 0);
}

void tsr_meta_kv_clear(struct tsr_meta_kv *kv)
{
	if (kv == NULL)
		return;
	free(kv->key);
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

void tsr_meta_kv_free_array(struct tsr_meta_kv *kvs, size_t n)
{
	if (kvs == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		tsr_meta_kv_clear(&kvs[i]);
	free(kvs);
}

int meta_kv_set(struct tsr_meta_kv *kv, const char *key, const void *value, size_t value_len,
		uint64_t create_rev, uint64_t mod_rev, uint64_t lease, int deleted)
{
	memset(kv, 0, sizeof(*kv));
	kv->key = strdup(key);
	if (kv->key == NULL)
		return -ENOMEM;
	if (value_len) {
		kv->value = malloc(value_len);
		if (kv->value == NULL) {
			tsr_meta_kv_clear(kv);
			return -ENOMEM;
		}
		memcpy(kv->value, value, value_len);
	}
	kv->value_len = value_len;
	kv->create_rev = create_rev;
	kv->mod_rev = mod_rev;
	kv->lease = lease;
	kv->deleted = deleted;
	return 0;
}

int tsr_meta_new(const struct tsr_meta_ops *ops, void *ctx, struct tsr_meta **out)
{
	struct tsr_meta *m = calloc(1, sizeof(*m));

	if (m == NULL) {
		ops->close(ctx);
		return -ENOMEM;
	}
	m->ops = ops;
	m->ctx = ctx;
	*out = m;
	return 0;
}

void tsr_meta_close(struct tsr_meta *m)
{
	if (m == NULL)
		return;
	m->ops->close(m->ctx);
	free(m);
}

const char *tsr_meta_backend(const struct tsr_meta *m)
{
	return m->ops->name;
}

/* A backend answer outside the contract is a bug there; keep it from callers. */
static int check_ret(const struct tsr_meta *m, const char *op, int ret)
{
	if (ret > 0 || ret < -4095) {
		tsr_error("meta %s: %s: backend returned %d, outside the contract", m->ops->name,
			  op, ret);
		return -EIO;
	}
	return ret;
}

int tsr_meta_get(struct tsr_meta *m, const char *key, struct tsr_meta_kv *out)
{
	int ret;

	if (out == NULL || !meta_key_valid(key))
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	ret = check_ret(m, "get", m->ops->get(m->ctx, key, out));
	if (ret)
		tsr_meta_kv_clear(out);
	return ret;
}

int tsr_meta_range(struct tsr_meta *m, const char *prefix, struct tsr_meta_kv **out,
		   size_t *n, uint64_t *rev)
{
	uint64_t dummy;
	int ret;

	if (out == NULL || n == NULL || !meta_prefix_valid(prefix))
		return -EINVAL;
	*out = NULL;
	*n = 0;
	ret = check_ret(m, "range", m->ops->range(m->ctx, prefix, out, n, rev ? rev : &dummy));
	if (ret) {
		tsr_meta_kv_free_array(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return ret;
}

int tsr_meta_cas(struct tsr_meta *m, const char *key, uint64_t expect_rev,
		 const void *value, size_t value_len, uint64_t lease, uint64_t *new_rev)
{
	uint64_t dummy;

	if (!meta_key_valid(key) || value_len > TSR_META_MAX_VALUE ||
	    (value == NULL && value_len > 0))
		return -EINVAL;
	return check_ret(m, "cas", m->ops->cas(m->ctx, key, expect_rev, value, value_len, lease,
					       new_rev ? new_rev : &dummy));
}

int tsr_meta_delete(struct tsr_meta *m, const char *key, uint64_t expect_rev)
{
	if (!meta_key_valid(key))
		return -EINVAL;
	return check_ret(m, "delete", m->ops->del(m->ctx, key, expect_rev));
}

int tsr_meta_watch(struct tsr_meta *m, const char *prefix, uint64_t since_rev,
		   int timeout_ms, struct tsr_meta_kv **events, size_t *n, uint64_t *rev)
{
	int64_t deadline = tsr_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	uint64_t dummy;
	int ret;

	if (events == NULL || n == NULL || !meta_prefix_valid(prefix))
		return -EINVAL;
	if (rev == NULL)
		rev = &dummy;
	for (;;) {
		int64_t left;

		*events = NULL;
		*n = 0;
		ret = check_ret(m, "watch",
				m->ops->watch(m->ctx, prefix, since_rev, events, n, rev));
		if (ret) {
			tsr_meta_kv_free_array(*events, *n);
			*events = NULL;
			*n = 0;
			return ret;
		}
		if (*n > 0)
			return 0;
		left = deadline - tsr_mono_ms();
		if (left <= 0)
			return 0;
		if (m->ops->wait) {
			ret = check_ret(m, "watch", m->ops->wait(m->ctx, *rev, (int)left));
			if (ret)
				return ret;
		} else {
			int64_t ms = left < WAIT_POLL_MS ? left : WAIT_POLL_MS;
			struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };

			nanosleep(&ts, NULL);
		}
		/* only changes after the last answer matter now */
		if (*rev > since_rev)
			since_rev = *rev;
	}
}

int tsr_meta_lease_grant(struct tsr_meta *m, uint32_t ttl_ms, uint64_t *id)
{
	int ret;

	if (ttl_ms < 100 || id == NULL)
		return -EINVAL;
	ret = check_ret(m, "lease_grant", m->ops->lease_grant(m->ctx, ttl_ms, id));
	if (ret == 0 && *id == 0) {
		tsr_error("meta %s: lease_grant: backend returned lease 0", m->ops->name);
		return -EIO;
	}
	return ret;
}

int tsr_meta_lease_keepalive(struct tsr_meta *m, uint64_t id)
{
	if (id == 0)
		return -ENOENT;
	return check_ret(m, "lease_keepalive", m->ops->lease_keepalive(m->ctx, id));
}

int tsr_meta_lease_revoke(struct tsr_meta *m, uint64_t id)
{
	if (id == 0)
		return -ENOENT;
	return check_ret(m, "lease_revoke", m->ops->lease_revoke(m->ctx, id));
}
