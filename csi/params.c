/*
 * Mapping between CSI's world and Tessera's, without I/O: volume names from
 * the CO's names, capacity ranges to sizes, pagination tokens, StorageClass
 * parameters, snapshot ids.  Unit tests: tests/unit/csi/params_ut.c.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "internal.h"
#include "tessera/common.h"
#include "tessera/ec.h"

/* The spec's banned characters in names: C0 controls other than \t \n \r, DEL, C1 (UTF-8
 * C2 80..9F). */
static bool name_has_banned(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	for (; *p; p++) {
		if ((*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r') || *p == 0x7f)
			return true;
		if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
			return true;
	}
	return false;
}

int csi_volume_name(const char *co_name, char out[CSI_NAME_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	int i;

	if (co_name == NULL || co_name[0] == '\0' || name_has_banned(co_name))
		return -EINVAL;
	if (tsr_valid_name(co_name)) {
		snprintf(out, CSI_NAME_MAX, "%s", co_name);
		return 0;
	}
	if (!EVP_Digest(co_name, strlen(co_name), md, &md_len, EVP_sha256(), NULL) || md_len < 20)
		return -EINVAL;
	memcpy(out, "csi-", 4);
	for (i = 0; i < 20; i++)
		snprintf(out + 4 + 2 * i, 3, "%02x", md[i]);
	return 0;
}

int csi_capacity(int64_t required, int64_t limit, uint64_t def, uint64_t *out)
{
	uint64_t size;

	if (required < 0 || limit < 0)
		return -EINVAL;
	if (required > 0) {
		if ((uint64_t)required > UINT64_MAX - TSR_BLOCK_SIZE)
			return -ERANGE;
		size = ((uint64_t)required + TSR_BLOCK_SIZE - 1) / TSR_BLOCK_SIZE * TSR_BLOCK_SIZE;
	} else {
		size = def;
		if (limit > 0 && (uint64_t)limit < size)
			size = (uint64_t)limit / TSR_BLOCK_SIZE * TSR_BLOCK_SIZE;
	}
	if (size == 0 || (limit > 0 && size > (uint64_t)limit))
		return -ERANGE;
	if (size > CSI_MAX_SIZE)
		return -EFBIG;
	*out = size;
	return 0;
}

int csi_token_parse(const char *token, char *after, size_t len)
{
	const char *p;
	size_t n;

	after[0] = '\0';
	if (token == NULL || token[0] == '\0')
		return 0;
	if (strncmp(token, CSI_TOKEN_PREFIX, strlen(CSI_TOKEN_PREFIX)))
		return -EINVAL;
	token += strlen(CSI_TOKEN_PREFIX);
	n = strlen(token);
	if (n == 0 || n >= len || n >= CSI_ID_MAX)
		return -EINVAL;
	for (p = token; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("._-@", *p))
			return -EINVAL;
	memcpy(after, token, n + 1);
	return 0;
}

void csi_token_format(const char *last_id, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s", CSI_TOKEN_PREFIX, last_id);
}

static int parse_uint(const char *s, unsigned long max, unsigned *out)
{
	char *end;
	unsigned long v;

	if (s == NULL || s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

int csi_params_parse(size_t n, char *const *keys, char *const *values, struct csi_params *p,
		     char *why, size_t why_len)
{
	size_t i;
	unsigned k, m;

	memset(p, 0, sizeof(*p));
	for (i = 0; i < n; i++) {
		const char *key = keys[i], *val = values[i] ? values[i] : "";

		if (strncmp(key, "csi.storage.k8s.io/", 19) == 0)
			continue;
		if (strcmp(key, "replicas") == 0) {
			if (parse_uint(val, 8, &p->replicas) || p->replicas == 0) {
				snprintf(why, why_len,
					 "parameter replicas=\"%.32s\": expected 1..8", val);
				return -EINVAL;
			}
		} else if (strcmp(key, "minReplicas") == 0) {
			if (parse_uint(val, 8, &p->min_replicas) || p->min_replicas == 0) {
				snprintf(why, why_len,
					 "parameter minReplicas=\"%.32s\": expected 1..8", val);
				return -EINVAL;
			}
		} else if (strcmp(key, "ec") == 0) {
			if (tsr_ec_parse(val, &k, &m) || strlen(val) >= sizeof(p->ec)) {
				snprintf(why, why_len,
					 "parameter ec=\"%.32s\": expected K+M with K 1..16 "
					 "and M 1..4, e.g. \"4+2\"",
					 val);
				return -EINVAL;
			}
			snprintf(p->ec, sizeof(p->ec), "%s", val);
		} else if (strcmp(key, "failureDomain") == 0) {
			if (strcmp(val, "node") && strcmp(val, "zone") && strcmp(val, "site")) {
				snprintf(why, why_len,
					 "parameter failureDomain=\"%.32s\": expected "
					 "node, zone or site",
					 val);
				return -EINVAL;
			}
			snprintf(p->failure_domain, sizeof(p->failure_domain), "%s", val);
		} else if (strcmp(key, "stripeUnit") == 0) {
			uint64_t unit;

			if (tsr_parse_size(val, &unit) || unit > UINT32_MAX ||
			    !tsr_ec_unit_valid((uint32_t)unit)) {
				snprintf(why, why_len,
					 "parameter stripeUnit=\"%.32s\": expected a power "
					 "of 2 from 4K to 1M",
					 val);
				return -EINVAL;
			}
			p->stripe_unit = (unsigned)unit;
		} else {
			snprintf(why, why_len,
				 "unknown parameter \"%.64s\": tessera-csi knows "
				 "replicas, ec, failureDomain, minReplicas and stripeUnit",
				 key);
			return -EINVAL;
		}
	}
	if (p->ec[0] && p->replicas) {
		snprintf(why, why_len,
			 "parameters ec and replicas exclude each other: a volume is "
			 "either erasure-coded or mirrored");
		return -EINVAL;
	}
	if (p->stripe_unit && !p->ec[0]) {
		snprintf(why, why_len,
			 "parameter stripeUnit applies to erasure-coded volumes only "
			 "(set ec too)");
		return -EINVAL;
	}
	if (p->min_replicas && p->replicas && p->min_replicas > p->replicas) {
		snprintf(why, why_len, "parameter minReplicas=%u is larger than replicas=%u",
			 p->min_replicas, p->replicas);
		return -EINVAL;
	}
	return 0;
}

int csi_snapshot_id_parse(const char *id, char vol[CSI_NAME_MAX], char snap[CSI_NAME_MAX])
{
	const char *at;
	size_t vl;

	if (id == NULL)
		return -EINVAL;
	at = strchr(id, '@');
	if (at == NULL)
		return -EINVAL;
	vl = (size_t)(at - id);
	if (vl == 0 || vl >= CSI_NAME_MAX || strlen(at + 1) >= CSI_NAME_MAX)
		return -EINVAL;
	memcpy(vol, id, vl);
	vol[vl] = '\0';
	snprintf(snap, CSI_NAME_MAX, "%s", at + 1);
	if (!tsr_valid_name(vol) || !tsr_valid_name(snap))
		return -EINVAL;
	return 0;
}
