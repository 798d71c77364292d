/*
 * Placement: which nodes get the copies of a volume.  A pure function over
 * the node list (built by the caller from node/, alive/ and vol/ records),
 * so that its rules are tested without a cluster
 * (tests/unit/engine/cluster/placement_ut.c):
 *  - one copy per failure domain (node id, zone or site), and none in a
 *    domain that already holds a copy of the volume (replace-replica);
 *  - only alive nodes with room for the copy (capacity - provisioned >= size);
 *  - the domains whose best node has the most unprovisioned capacity first,
 *    and in each domain that best node (ties broken by node id, so the
 *    choice is deterministic);
 *  - an erasure-coded k+m volume is k+m copies of its chunk volume size
 *    (include/tessera/ec.h), placed by the same rules: the chunks of one
 *    stripe never share a domain, so losing a domain loses one chunk of
 *    every stripe, and capacity is balanced on what each copy really holds.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cluster/internal.h"
#include "tessera/ec.h"

int tsr_failure_domain_parse(const char *s, enum tsr_failure_domain *out)
{
	if (s == NULL || s[0] == '\0' || strcmp(s, "node") == 0)
		*out = TSR_FD_NODE;
	else if (strcmp(s, "zone") == 0)
		*out = TSR_FD_ZONE;
	else if (strcmp(s, "site") == 0)
		*out = TSR_FD_SITE;
	else
		return -EINVAL;
	return 0;
}

const char *tsr_failure_domain_name(enum tsr_failure_domain fd)
{
	switch (fd) {
	case TSR_FD_ZONE:
		return "zone";
	case TSR_FD_SITE:
		return "site";
	default:
		return "node";
	}
}

static const char *domain_of(const struct tsr_place_node *n, enum tsr_failure_domain fd)
{
	const char *d = fd == TSR_FD_ZONE ? n->zone : fd == TSR_FD_SITE ? n->site : n->id;

	return d ? d : "";
}

static uint64_t free_of(const struct tsr_place_node *n)
{
	return n->capacity > n->provisioned ? n->capacity - n->provisioned : 0;
}

/* Is a better than b as a place for a copy? */
static bool better(const struct tsr_place_node *a, const struct tsr_place_node *b)
{
	if (free_of(a) != free_of(b))
		return free_of(a) > free_of(b);
	return strcmp(a->id, b->id) < 0;
}

/* Append to why, keeping it NUL-terminated however small it is. */
static void add(char *why, size_t len, size_t *pos, const char *fmt, const char *a,
		const char *b)
{
	int n;

	if (*pos >= len)
		return;
	n = snprintf(why + *pos, len - *pos, fmt, a, b);
	if (n > 0)
		*pos += (size_t)n;
}

/*
 * Describe the candidate domains: "a (n1), b (n2: 3 GiB free, n3: ...)".
 * with_free: show each node's unprovisioned capacity.
 */
static void describe(const struct tsr_place_node *nodes, size_t n, enum tsr_failure_domain fd,
		     const bool *cand, bool with_free, char *why, size_t len, size_t *pos)
{
	bool listed[256] = { false };
	bool first_dom = true;
	char sz[32];

	for (size_t i = 0; i < n && i < 256; i++) {
		const char *dom;
		bool first_node = true;

		if (!cand[i] || listed[i])
			continue;
		dom = domain_of(&nodes[i], fd);
		if (fd == TSR_FD_NODE) { /* the domain is the node: no list of members */
			listed[i] = true;
			add(why, len, pos, "%s%s", first_dom ? "" : ", ", dom);
			if (with_free)
				add(why, len, pos, ": %s%s free", tsr_format_size(free_of(&nodes[i]),
						sz, sizeof(sz)), "");
			first_dom = false;
			continue;
		}
		add(why, len, pos, "%s%s (", first_dom ? "" : ", ", dom);
		first_dom = false;
		for (size_t j = i; j < n && j < 256; j++) {
			if (!cand[j] || listed[j] || strcmp(domain_of(&nodes[j], fd), dom))
				continue;
			listed[j] = true;
			add(why, len, pos, "%s%s", first_node ? "" : ", ", nodes[j].id);
			if (with_free)
				add(why, len, pos, ": %s%s free", tsr_format_size(free_of(&nodes[j]),
						sz, sizeof(sz)), "");
			first_node = false;
		}
		add(why, len, pos, ")%s%s", "", "");
	}
	if (first_dom)
		add(why, len, pos, "none%s%s", "", "");
}

int tsr_cluster_place(const struct tsr_place_node *nodes, size_t n, enum tsr_failure_domain fd,
		      unsigned count, uint64_t size, unsigned *chosen, char *why, size_t why_len)
{
	bool cand[256] = { false }, fits[256] = { false }, taken_dom[256] = { false };
	unsigned best[256]; /* per candidate domain: its best fitting node */
	size_t n_dom = 0, n_cand_dom = 0, pos = 0;
	const char *dname = tsr_failure_domain_name(fd);
	char sz[32], num[16];

	if (why_len)
		why[0] = '\0';
	if (count == 0 || count > TSR_PLACE_MAX || n > 256)
		return -EINVAL;
	/* candidates: alive, in a domain that holds no copy yet */
	for (size_t i = 0; i < n; i++) {
		cand[i] = nodes[i].alive && !nodes[i].holds_copy;
		for (size_t j = 0; cand[i] && j < n; j++)
			if (nodes[j].holds_copy &&
			    strcmp(domain_of(&nodes[i], fd), domain_of(&nodes[j], fd)) == 0)
				cand[i] = false;
		fits[i] = cand[i] && free_of(&nodes[i]) >= size;
	}
	/* one entry per candidate domain (first node seen stands for it) */
	for (size_t i = 0; i < n; i++) {
		bool seen = false;

		if (!cand[i])
			continue;
		for (size_t j = 0; j < i && !seen; j++)
			seen = cand[j] && strcmp(domain_of(&nodes[i], fd), domain_of(&nodes[j], fd)) == 0;
		if (seen)
			continue;
		n_cand_dom++;
		/* the best node of this domain with room for the copy */
		long b = -1;
		for (size_t j = i; j < n; j++)
			if (fits[j] && strcmp(domain_of(&nodes[i], fd), domain_of(&nodes[j], fd)) == 0 &&
			    (b < 0 || better(&nodes[j], &nodes[b])))
				b = (long)j;
		if (b >= 0)
			best[n_dom++] = (unsigned)b;
	}
	snprintf(num, sizeof(num), "%u", count);
	if (n_cand_dom < count) {
		add(why, why_len, &pos, "needs %s distinct %ss", num, dname);
		for (size_t i = 0; i < n; i++)
			taken_dom[i] = nodes[i].holds_copy;
		if (pos < why_len && memchr(taken_dom, true, n) != NULL) {
			add(why, why_len, &pos, " besides the ones holding copies (", "", "");
			describe(nodes, n, fd, taken_dom, false, why, why_len, &pos);
			add(why, why_len, &pos, ")%s%s", "", "");
		}
		snprintf(num, sizeof(num), "%zu", n_cand_dom);
		add(why, why_len, &pos, "; alive nodes cover %s: %s", num, "");
		describe(nodes, n, fd, cand, false, why, why_len, &pos);
		add(why, why_len, &pos, " (start more nodes with --%s labels, or ask for fewer "
		    "replicas or a smaller failure domain)", fd == TSR_FD_NODE ? "node-id" : dname, "");
		return -ENOSPC;
	}
	if (n_dom < count) {
		add(why, why_len, &pos, "needs %s distinct %ss with ", num, dname);
		add(why, why_len, &pos, "%s unprovisioned each; ", tsr_format_size(size, sz,
		    sizeof(sz)), "");
		snprintf(num, sizeof(num), "%zu", n_dom);
		add(why, why_len, &pos, "only %s have it: ", num, "");
		describe(nodes, n, fd, cand, true, why, why_len, &pos);
		add(why, why_len, &pos, " (use a smaller size, delete volumes, or add nodes)%s%s",
		    "", "");
		return -ENOSPC;
	}
	/* selection sort of the domains by their best node */
	for (unsigned k = 0; k < count; k++) {
		size_t m = k;

		for (size_t j = k + 1; j < n_dom; j++)
			if (better(&nodes[best[j]], &nodes[best[m]]))
				m = j;
		unsigned t = best[k];
		best[k] = best[m];
		best[m] = t;
		chosen[k] = best[k];
	}
	return 0;
}

/* Distinct failure domains among the nodes that may take a copy. */
static size_t candidate_domains(const struct tsr_place_node *nodes, size_t n,
				enum tsr_failure_domain fd, bool *cand)
{
	size_t count = 0;

	for (size_t i = 0; i < n; i++) {
		cand[i] = nodes[i].alive && !nodes[i].holds_copy;
		for (size_t j = 0; cand[i] && j < n; j++)
			if (nodes[j].holds_copy &&
			    strcmp(domain_of(&nodes[i], fd), domain_of(&nodes[j], fd)) == 0)
				cand[i] = false;
	}
	for (size_t i = 0; i < n; i++) {
		bool seen = false;

		for (size_t j = 0; j < i && cand[i] && !seen; j++)
			seen = cand[j] &&
			       strcmp(domain_of(&nodes[i], fd), domain_of(&nodes[j], fd)) == 0;
		count += cand[i] && !seen;
	}
	return count;
}

int tsr_cluster_place_ec(const struct tsr_place_node *nodes, size_t n,
			 enum tsr_failure_domain fd, unsigned k, unsigned m, uint32_t unit,
			 uint64_t size, unsigned *chosen, char *why, size_t why_len)
{
	bool cand[256] = { false };
	char geo[32], num[16];
	size_t pos = 0, have;
	int ret;

	if (why_len)
		why[0] = '\0';
	if (k < 1 || k > TSR_EC_MAX_K || m < 1 || m > TSR_EC_MAX_M || unit == 0 || n > 256)
		return -EINVAL;
	snprintf(geo, sizeof(geo), "%u+%u", k, m);
	ret = tsr_cluster_place(nodes, n, fd, k + m, tsr_ec_chunk_volume_size(size, k, unit),
				chosen, why, why_len);
	if (ret != -ENOSPC)
		return ret;
	have = candidate_domains(nodes, n, fd, cand);
	if (have >= k + m) {
		/* enough domains, not enough room: keep the sentence, name the layout */
		char tail[1024];

		snprintf(tail, sizeof(tail), "%s", why);
		pos = 0;
		add(why, why_len, &pos, "ec %s: %s", geo, tail);
		return ret;
	}
	snprintf(num, sizeof(num), "%u", k + m);
	pos = 0;
	add(why, why_len, &pos, "ec %s needs %s ", geo, num);
	add(why, why_len, &pos, fd == TSR_FD_NODE ? "distinct nodes%s%s" : "nodes in distinct "
	    "%ss", fd == TSR_FD_NODE ? "" : tsr_failure_domain_name(fd), "");
	snprintf(num, sizeof(num), "%zu", have);
	add(why, why_len, &pos, ", the cluster has %s alive%s: ", num,
	    fd == TSR_FD_NODE ? "" : fd == TSR_FD_ZONE ? " zones" : " sites");
	describe(nodes, n, fd, cand, false, why, why_len, &pos);
	add(why, why_len, &pos, " (start more nodes%s%s, ask for a smaller k+m, or a smaller "
	    "failure domain)", fd == TSR_FD_NODE ? "" : " with --", fd == TSR_FD_NODE ? "" :
	    tsr_failure_domain_name(fd));
	return ret;
}
