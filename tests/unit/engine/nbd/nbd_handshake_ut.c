/*
 * Unit tests for engine/nbd/nbd_handshake.c: the option haggling state
 * machine driven from byte buffers, with a table of exports standing in
 * for the volumes.  Replies are decoded and checked field by field.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nbd/internal.h"

/* ---- a table of exports ---- */

struct fake_export {
	const char *name;
	uint64_t size;
	int opens;
};

static struct fake_export g_exports[] = {
	{ "disk", 1 << 20, 0 },
	{ "big", 16ull << 40, 0 },
};

static int fake_open(void *arg, const char *name, struct nbd_export *out)
{
	size_t i;

	if (name[0] == '\0')
		name = "disk"; /* the default export */
	if (strcmp(name, "nofds") == 0)
		return -EMFILE; /* exists, but the server is out of file descriptors */
	for (i = 0; i < sizeof(g_exports) / sizeof(g_exports[0]); i++) {
		if (strcmp(g_exports[i].name, name) == 0) {
			g_exports[i].opens++;
			out->handle = &g_exports[i];
			out->size = g_exports[i].size;
			out->name = g_exports[i].name;
			return 0;
		}
	}
	return -ENOENT;
}

static void fake_close(void *arg, void *handle)
{
	struct fake_export *e = handle;

	e->opens--;
}

static int fake_list(void *arg, int (*emit)(void *, const char *), void *emit_arg)
{
	size_t i;
	int ret = 0;

	for (i = 0; i < sizeof(g_exports) / sizeof(g_exports[0]) && ret == 0; i++)
		ret = emit(emit_arg, g_exports[i].name);
	return ret;
}

static const struct nbd_export_ops fake_ops = {
	.open = fake_open,
	.close = fake_close,
	.list = fake_list,
};

/* ---- building client bytes ---- */

struct msg {
	uint8_t b[80000];
	size_t len;
};

static void put32(struct msg *m, uint32_t v)
{
	nbd_put32(m->b + m->len, v);
	m->len += 4;
}

static void put16(struct msg *m, uint16_t v)
{
	nbd_put16(m->b + m->len, v);
	m->len += 2;
}

static void put_bytes(struct msg *m, const void *p, size_t len)
{
	if (len)
		memcpy(m->b + m->len, p, len);
	m->len += len;
}

static void option(struct msg *m, uint32_t opt, const void *data, uint32_t len)
{
	nbd_put64(m->b + m->len, NBD_OPTS_MAGIC);
	m->len += 8;
	put32(m, opt);
	put32(m, len);
	put_bytes(m, data, len);
}

static void opt_go(struct msg *m, uint32_t opt, const char *name, int nreq, const uint16_t *req)
{
	struct msg d = { .len = 0 };

	put32(&d, (uint32_t)strlen(name));
	put_bytes(&d, name, strlen(name));
	put16(&d, (uint16_t)nreq);
	for (int i = 0; i < nreq; i++)
		put16(&d, req[i]);
	option(m, opt, d.b, (uint32_t)d.len);
}

static void opt_meta(struct msg *m, uint32_t opt, const char *name, int nq, const char **q)
{
	struct msg d = { .len = 0 };

	put32(&d, (uint32_t)strlen(name));
	put_bytes(&d, name, strlen(name));
	put32(&d, (uint32_t)nq);
	for (int i = 0; i < nq; i++) {
		put32(&d, (uint32_t)strlen(q[i]));
		put_bytes(&d, q[i], strlen(q[i]));
	}
	option(m, opt, d.b, (uint32_t)d.len);
}

/* ---- reading server bytes ---- */

struct reply {
	uint32_t opt, type, len;
	const uint8_t *data;
};

/* Decode the next option reply at *pos of hs->out. */
static void next_reply(struct nbd_hs *hs, size_t *pos, struct reply *r)
{
	const uint8_t *p = hs->out.data + *pos;

	assert_true(hs->out.len - *pos >= 20);
	assert_true(nbd_get64(p) == NBD_REP_MAGIC);
	r->opt = nbd_get32(p + 8);
	r->type = nbd_get32(p + 12);
	r->len = nbd_get32(p + 16);
	assert_true(hs->out.len - *pos - 20 >= r->len);
	r->data = p + 20;
	*pos += 20 + r->len;
}

/* Start a handshake and check the greeting; client flags sent. */
static void start(struct nbd_hs *hs, uint32_t client_flags, size_t *pos)
{
	uint8_t flags[4];

	assert_int_equal(nbd_hs_init(hs, &fake_ops, NULL), 0);
	assert_int_equal(hs->out.len, 18);
	assert_true(nbd_get64(hs->out.data) == NBD_MAGIC);
	assert_true(nbd_get64(hs->out.data + 8) == NBD_OPTS_MAGIC);
	assert_int_equal(nbd_get16(hs->out.data + 16), 3);
	nbd_put32(flags, client_flags);
	assert_int_equal(nbd_hs_feed(hs, flags, 4), 4);
	assert_int_equal(hs->state, NBD_HS_OPTIONS);
	*pos = 18;
}

static void feed_all(struct nbd_hs *hs, struct msg *m)
{
	assert_int_equal(nbd_hs_feed(hs, m->b, m->len), (ssize_t)m->len);
}

/* ---- tests ---- */

static void test_go_with_info(void **state)
{
	static const uint16_t reqs[] = { NBD_INFO_NAME, NBD_INFO_BLOCK_SIZE, 77 };
	struct msg m = { .len = 0 };
	struct nbd_hs hs;
	struct reply r;
	size_t pos;
	bool seen_export = false, seen_name = false, seen_bs = false;

	start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES, &pos);
	opt_go(&m, NBD_OPT_GO, "", 3, reqs); /* default export */
	feed_all(&hs, &m);
	for (;;) {
		next_reply(&hs, &pos, &r);
		assert_int_equal(r.opt, NBD_OPT_GO);
		if (r.type == NBD_REP_ACK)
			break;
		assert_int_equal(r.type, NBD_REP_INFO);
		switch (nbd_get16(r.data)) {
		case NBD_INFO_EXPORT:
			assert_int_equal(r.len, 12);
			assert_true(nbd_get64(r.data + 2) == 1 << 20);
			assert_int_equal(nbd_get16(r.data + 10), 0x096d);
			seen_export = true;
			break;
		case NBD_INFO_NAME:
			assert_int_equal(r.len, 2 + 4);
			assert_memory_equal(r.data + 2, "disk", 4);
			seen_name = true;
			break;
		case NBD_INFO_BLOCK_SIZE:
			assert_int_equal(r.len, 14);
			assert_int_equal(nbd_get32(r.data + 2), 4096);
			assert_int_equal(nbd_get32(r.data + 6), 4096);
			assert_int_equal(nbd_get32(r.data + 10), 32 << 20);
			seen_bs = true;
			break;
		default:
			fail_msg("unexpected info type %u", nbd_get16(r.data));
		}
	}
	assert_int_equal(pos, hs.out.len);
	assert_true(seen_export && seen_name && seen_bs);
	assert_int_equal(hs.state, NBD_HS_DONE);
	assert_ptr_equal(hs.export.handle, &g_exports[0]);
	assert_int_equal(hs.tflags, 0x096d);
	assert_false(hs.structured);
	assert_false(hs.meta);
	assert_int_equal(g_exports[0].opens, 1);
	nbd_hs_fini(&hs);
	assert_int_equal(g_exports[0].opens, 0);
}

static void test_info_then_unknown(void **state)
{
	struct msg m = { .len = 0 };
	struct nbd_hs hs;
	struct reply r;
	size_t pos;

	start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE, &pos);
	opt_go(&m, NBD_OPT_INFO, "big", 0, NULL);
	opt_go(&m, NBD_OPT_GO, "nope", 0, NULL);
	feed_all(&hs, &m);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_INFO);
	assert_int_equal(nbd_get16(r.data), NBD_INFO_EXPORT);
	assert_true(nbd_get64(r.data + 2) == 16ull << 40);
	next_reply(&hs, &pos, &r);
	assert_int_equal(nbd_get16(r.data), NBD_INFO_BLOCK_SIZE); /* always sent */
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_ACK);
	assert_int_equal(g_exports[1].opens, 0); /* INFO released it */
	/* unknown export: an error with a message, and we stay in haggling */
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.opt, NBD_OPT_GO);
	assert_int_equal(r.type, NBD_REP_ERR_UNKNOWN);
	assert_true(r.len > 0);
	assert_non_null(memmem(r.data, r.len, "nope", 4));
	assert_int_equal(pos, hs.out.len);
	assert_int_equal(hs.state, NBD_HS_OPTIONS);
	nbd_hs_fini(&hs);
}

/* An export that exists but cannot be opened (EMFILE) is refused with the
 * cause, not as "unknown", and the session goes on: a later GO works. */
static void test_open_failure_not_unknown(void **state)
{
	struct msg m = { .len = 0 };
	struct nbd_hs hs;
	struct reply r;
	size_t pos;

	start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE, &pos);
	opt_go(&m, NBD_OPT_GO, "nofds", 0, NULL);
	opt_go(&m, NBD_OPT_GO, "disk", 0, NULL);
	feed_all(&hs, &m);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.opt, NBD_OPT_GO);
	assert_int_equal(r.type, NBD_REP_ERR_UNKNOWN);
	assert_non_null(memmem(r.data, r.len, "nofds", 5));
	assert_non_null(memmem(r.data, r.len, "Too many open files", 19));
	assert_null(memmem(r.data, r.len, "unknown export", 14));
	do
		next_reply(&hs, &pos, &r);
	while (r.type == NBD_REP_INFO);
	assert_int_equal(r.type, NBD_REP_ACK);
	assert_int_equal(hs.state, NBD_HS_DONE);
	assert_int_equal(g_exports[0].opens, 1);
	nbd_hs_fini(&hs);
	assert_int_equal(g_exports[0].opens, 0);
}

static void test_structured_and_meta(void **state)
{
	const char *alloc[] = { "base:allocation", "x-other:thing", "base:" };
	struct msg m = { .len = 0 };
	struct nbd_hs hs;
	struct reply r;
	size_t pos;

	start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE, &pos);
	/* before STRUCTURED_REPLY: refused */
	opt_meta(&m, NBD_OPT_SET_META_CONTEXT, "disk", 1, alloc);
	option(&m, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	opt_meta(&m, NBD_OPT_LIST_META_CONTEXT, "disk", 0, NULL);
	opt_meta(&m, NBD_OPT_SET_META_CONTEXT, "disk", 3, alloc);
	opt_go(&m, NBD_OPT_GO, "disk", 0, NULL);
	feed_all(&hs, &m);

	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_ERR_INVALID);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.opt, NBD_OPT_STRUCTURED_REPLY);
	assert_int_equal(r.type, NBD_REP_ACK);
	/* LIST with no query: every context, id 0 */
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_META_CONTEXT);
	assert_int_equal(r.len, 4 + 15);
	assert_int_equal(nbd_get32(r.data), 0);
	assert_memory_equal(r.data + 4, "base:allocation", 15);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_ACK);
	/* SET: exactly one context, our id; unknown namespace and "base:" ignored */
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.opt, NBD_OPT_SET_META_CONTEXT);
	assert_int_equal(r.type, NBD_REP_META_CONTEXT);
	assert_int_equal(nbd_get32(r.data), NBD_META_ID_BASE_ALLOCATION);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_ACK);
	/* GO: DF now advertised */
	next_reply(&hs, &pos, &r);
	assert_int_equal(nbd_get16(r.data), NBD_INFO_EXPORT);
	assert_int_equal(nbd_get16(r.data + 10), 0x09ed);
	next_reply(&hs, &pos, &r);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_ACK);
	assert_int_equal(hs.state, NBD_HS_DONE);
	assert_true(hs.structured);
	assert_true(hs.meta);
	nbd_hs_fini(&hs);
}

static void test_meta_other_export(void **state)
{
	const char *alloc[] = { "base:allocation" };
	const char *bad[] = { "nonamespace" };
	struct msg m = { .len = 0 };
	struct nbd_hs hs;
	struct reply r;
	size_t pos;

	start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE, &pos);
	option(&m, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	opt_meta(&m, NBD_OPT_SET_META_CONTEXT, "big", 1, alloc);
	opt_meta(&m, NBD_OPT_LIST_META_CONTEXT, "big", 1, bad);
	opt_go(&m, NBD_OPT_GO, "disk", 0, NULL);
	feed_all(&hs, &m);
	next_reply(&hs, &pos, &r); /* structured ACK */
	next_reply(&hs, &pos, &r); /* context */
	next_reply(&hs, &pos, &r); /* ACK */
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_ERR_INVALID);
	assert_int_equal(hs.state, NBD_HS_DONE);
	/* contexts were selected for another export: none applies */
	assert_false(hs.meta);
	nbd_hs_fini(&hs);
}

static void test_list_abort_misc(void **state)
{
	struct msg m = { .len = 0 };
	struct nbd_hs hs;
	struct reply r;
	size_t pos;

	start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE, &pos);
	option(&m, NBD_OPT_LIST, NULL, 0);
	option(&m, NBD_OPT_LIST, "x", 1);
	option(&m, NBD_OPT_STARTTLS, NULL, 0);
	option(&m, 4242, "junk", 4);
	option(&m, NBD_OPT_STRUCTURED_REPLY, "x", 1);
	option(&m, NBD_OPT_ABORT, NULL, 0);
	option(&m, NBD_OPT_LIST, NULL, 0); /* after ABORT: not consumed */
	assert_int_equal(nbd_hs_feed(&hs, m.b, m.len), (ssize_t)(m.len - 16));

	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_SERVER);
	assert_int_equal(nbd_get32(r.data), 4);
	assert_memory_equal(r.data + 4, "disk", 4);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_SERVER);
	assert_memory_equal(r.data + 4, "big", 3);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_ACK);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_ERR_INVALID);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.opt, NBD_OPT_STARTTLS);
	assert_int_equal(r.type, NBD_REP_ERR_POLICY);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.opt, 4242);
	assert_int_equal(r.type, NBD_REP_ERR_UNSUP);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_ERR_INVALID);
	assert_false(hs.structured);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.opt, NBD_OPT_ABORT);
	assert_int_equal(r.type, NBD_REP_ACK);
	assert_int_equal(pos, hs.out.len);
	assert_int_equal(hs.state, NBD_HS_CLOSE);
	nbd_hs_fini(&hs);
}

static void test_export_name(void **state)
{
	struct msg m = { .len = 0 };
	struct nbd_hs hs;
	size_t pos;

	/* without NO_ZEROES: size, flags, 124 zeroes */
	start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE, &pos);
	option(&m, NBD_OPT_EXPORT_NAME, "big", 3);
	put32(&m, NBD_REQUEST_MAGIC); /* a request right behind: not consumed */
	assert_int_equal(nbd_hs_feed(&hs, m.b, m.len), (ssize_t)(m.len - 4));
	assert_int_equal(hs.out.len - pos, 134);
	assert_true(nbd_get64(hs.out.data + pos) == 16ull << 40);
	assert_int_equal(nbd_get16(hs.out.data + pos + 8), 0x096d);
	assert_int_equal(hs.state, NBD_HS_DONE);
	nbd_hs_fini(&hs);

	/* with NO_ZEROES: 10 bytes */
	m.len = 0;
	start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES, &pos);
	option(&m, NBD_OPT_EXPORT_NAME, "", 0);
	feed_all(&hs, &m);
	assert_int_equal(hs.out.len - pos, 10);
	nbd_hs_fini(&hs);

	/* unknown export: cannot be answered, hard disconnect */
	m.len = 0;
	start(&hs, 0, &pos);
	option(&m, NBD_OPT_EXPORT_NAME, "nope", 4);
	assert_int_equal(nbd_hs_feed(&hs, m.b, m.len), -EPROTO);
	assert_non_null(hs.error);
	nbd_hs_fini(&hs);
	assert_int_equal(g_exports[0].opens + g_exports[1].opens, 0);
}

static void test_rejections(void **state)
{
	struct msg m = { .len = 0 };
	uint8_t flags[4];
	struct nbd_hs hs;
	size_t pos;

	/* unknown client flag bit */
	assert_int_equal(nbd_hs_init(&hs, &fake_ops, NULL), 0);
	nbd_put32(flags, 0x4);
	assert_int_equal(nbd_hs_feed(&hs, flags, 4), -EPROTO);
	nbd_hs_fini(&hs);

	/* bad option magic */
	start(&hs, 1, &pos);
	option(&m, NBD_OPT_LIST, NULL, 0);
	m.b[0] ^= 0xff;
	assert_int_equal(nbd_hs_feed(&hs, m.b, m.len), -EPROTO);
	nbd_hs_fini(&hs);

	/* malformed GO: name length beyond the option */
	m.len = 0;
	start(&hs, 1, &pos);
	{
		uint8_t d[6] = { 0, 0, 1, 0, 0, 0 };

		option(&m, NBD_OPT_GO, d, sizeof(d));
	}
	feed_all(&hs, &m);
	{
		struct reply r;

		next_reply(&hs, &pos, &r);
		assert_int_equal(r.type, NBD_REP_ERR_INVALID);
	}
	assert_int_equal(hs.state, NBD_HS_OPTIONS);
	nbd_hs_fini(&hs);

	/* an EXPORT_NAME longer than the option limit: disconnect */
	m.len = 0;
	start(&hs, 1, &pos);
	nbd_put64(m.b, NBD_OPTS_MAGIC);
	nbd_put32(m.b + 8, NBD_OPT_EXPORT_NAME);
	nbd_put32(m.b + 12, NBD_MAX_OPTION_LEN + 1);
	assert_int_equal(nbd_hs_feed(&hs, m.b, 16), -EPROTO);
	nbd_hs_fini(&hs);
}

static void test_too_long_option_skipped(void **state)
{
	static struct msg m;
	struct nbd_hs hs;
	struct reply r;
	size_t pos, off = 0;
	uint32_t big = NBD_MAX_OPTION_LEN + 100;

	m.len = 0;
	start(&hs, 1, &pos);
	nbd_put64(m.b, NBD_OPTS_MAGIC);
	nbd_put32(m.b + 8, NBD_OPT_GO);
	nbd_put32(m.b + 12, big);
	memset(m.b + 16, 'z', big);
	m.len = 16 + big;
	option(&m, NBD_OPT_LIST, NULL, 0);
	/* fed in uneven pieces, never more than 1000 bytes at once */
	while (off < m.len) {
		size_t n = m.len - off < 997 ? m.len - off : 997;
		ssize_t used = nbd_hs_feed(&hs, m.b + off, n);

		assert_true(used >= 0);
		off += (size_t)used;
		if (used == 0) {
			/* only a partial header may stay behind: give more */
			used = nbd_hs_feed(&hs, m.b + off, m.len - off);
			assert_true(used > 0);
			off += (size_t)used;
		}
	}
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.opt, NBD_OPT_GO);
	assert_int_equal(r.type, NBD_REP_ERR_TOO_BIG);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.opt, NBD_OPT_LIST); /* still in step */
	nbd_hs_fini(&hs);
}

/* Feeding one byte at a time yields the same bytes as one buffer. */
static void test_byte_by_byte(void **state)
{
	static const uint16_t reqs[] = { NBD_INFO_DESCRIPTION, NBD_INFO_NAME };
	const char *alloc[] = { "base:allocation" };
	struct msg m = { .len = 0 };
	struct nbd_hs a, b;
	size_t pos, off = 0, pending = 0;

	option(&m, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	opt_meta(&m, NBD_OPT_SET_META_CONTEXT, "disk", 1, alloc);
	option(&m, NBD_OPT_LIST, NULL, 0);
	opt_go(&m, NBD_OPT_INFO, "big", 2, reqs);
	opt_go(&m, NBD_OPT_GO, "disk", 2, reqs);

	start(&a, 3, &pos);
	feed_all(&a, &m);
	start(&b, 3, &pos);
	/* the caller keeps unconsumed bytes and offers them again with more */
	while (off < m.len) {
		ssize_t used;

		pending++;
		used = nbd_hs_feed(&b, m.b + off, pending);
		assert_true(used >= 0);
		off += (size_t)used;
		pending -= (size_t)used;
	}
	assert_int_equal(a.out.len, b.out.len);
	assert_memory_equal(a.out.data, b.out.data, a.out.len);
	assert_int_equal(b.state, NBD_HS_DONE);
	assert_true(b.meta);
	nbd_hs_fini(&a);
	nbd_hs_fini(&b);
}

/* ---- opens that complete later (ops->open_start, nbd_hs_open_done) ---- */

static char g_started[64];  /* the name the last open_start was given */
static int g_start_result;  /* what open_start returns */
static int g_starts;

static int async_start(void *arg, const char *name)
{
	snprintf(g_started, sizeof(g_started), "%s", name);
	g_starts++;
	return g_start_result;
}

static const struct nbd_export_ops async_ops = {
	.open = NULL, /* never called: open_start is set */
	.close = fake_close,
	.list = fake_list,
	.open_start = async_start,
};

static void start_async(struct nbd_hs *hs, size_t *pos)
{
	uint8_t flags[4];

	g_starts = 0;
	g_start_result = 0;
	g_started[0] = '\0';
	assert_int_equal(nbd_hs_init(hs, &async_ops, NULL), 0);
	nbd_put32(flags, NBD_FLAG_C_FIXED_NEWSTYLE);
	assert_int_equal(nbd_hs_feed(hs, flags, 4), 4);
	*pos = 18;
}

/* The owner's side of an open that completes: fake_open's result. */
static int finish_open(struct nbd_hs *hs)
{
	struct nbd_export exp = { 0 };
	int status = fake_open(NULL, g_started, &exp);

	return nbd_hs_open_done(hs, status, &exp);
}

/* A GO waits for its open with no reply; options pipelined behind it are
 * not consumed until it is answered, then answered in order. */
static void test_go_async(void **state)
{
	struct msg m = { .len = 0 }, go = { .len = 0 };
	struct nbd_hs hs;
	struct reply r;
	size_t pos;
	ssize_t used;

	start_async(&hs, &pos);
	opt_go(&go, NBD_OPT_INFO, "big", 0, NULL);
	put_bytes(&m, go.b, go.len);
	option(&m, NBD_OPT_LIST, NULL, 0);
	opt_go(&m, NBD_OPT_GO, "", 0, NULL);
	used = nbd_hs_feed(&hs, m.b, m.len);
	assert_int_equal(used, (ssize_t)go.len); /* the INFO only */
	assert_int_equal(hs.state, NBD_HS_OPENING);
	assert_int_equal(g_starts, 1);
	assert_string_equal(g_started, "big");
	assert_int_equal(hs.out.len, pos); /* nothing answered yet */
	/* more input changes nothing while the open is out */
	assert_int_equal(nbd_hs_feed(&hs, m.b + used, m.len - (size_t)used), 0);
	assert_int_equal(finish_open(&hs), 0);
	assert_int_equal(hs.state, NBD_HS_OPTIONS);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.opt, NBD_OPT_INFO);
	assert_int_equal(r.type, NBD_REP_INFO);
	assert_true(nbd_get64(r.data + 2) == 16ull << 40);
	do
		next_reply(&hs, &pos, &r);
	while (r.type == NBD_REP_INFO);
	assert_int_equal(r.type, NBD_REP_ACK);
	assert_int_equal(g_exports[1].opens, 0); /* INFO closed what it got */
	assert_int_equal(pos, hs.out.len);
	/* the rest: LIST answered now, then the GO waits in turn */
	used = nbd_hs_feed(&hs, m.b + go.len, m.len - go.len);
	assert_int_equal(used, (ssize_t)(m.len - go.len));
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.opt, NBD_OPT_LIST);
	assert_int_equal(hs.state, NBD_HS_OPENING);
	assert_string_equal(g_started, ""); /* the default export, resolved by the owner */
	assert_int_equal(finish_open(&hs), 0);
	while (pos < hs.out.len)
		next_reply(&hs, &pos, &r);
	assert_int_equal(r.opt, NBD_OPT_GO);
	assert_int_equal(r.type, NBD_REP_ACK);
	assert_int_equal(hs.state, NBD_HS_DONE);
	assert_ptr_equal(hs.export.handle, &g_exports[0]);
	assert_int_equal(g_exports[0].opens, 1);
	/* not opening any more */
	assert_int_equal(nbd_hs_open_done(&hs, -ENOENT, NULL), -EINVAL);
	nbd_hs_fini(&hs);
	assert_int_equal(g_exports[0].opens, 0);
}

/* Results that are errors: unknown and EMFILE answered as in place; an
 * open_start that fails at once is answered at once; EXPORT_NAME that
 * fails later ends the session. */
static void test_async_errors(void **state)
{
	struct msg m = { .len = 0 };
	struct nbd_hs hs;
	struct reply r;
	size_t pos;

	start_async(&hs, &pos);
	opt_go(&m, NBD_OPT_GO, "nope", 0, NULL);
	feed_all(&hs, &m);
	assert_int_equal(hs.state, NBD_HS_OPENING);
	assert_int_equal(finish_open(&hs), 0);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_ERR_UNKNOWN);
	assert_non_null(memmem(r.data, r.len, "unknown export 'nope'", 21));
	assert_int_equal(hs.state, NBD_HS_OPTIONS);

	m.len = 0;
	opt_go(&m, NBD_OPT_GO, "nofds", 0, NULL);
	feed_all(&hs, &m);
	assert_int_equal(finish_open(&hs), 0);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_ERR_UNKNOWN);
	assert_non_null(memmem(r.data, r.len, "Too many open files", 19));

	/* open_start refuses at once (no opener thread): answered at once */
	g_start_result = -EAGAIN;
	m.len = 0;
	opt_go(&m, NBD_OPT_GO, "disk", 0, NULL);
	feed_all(&hs, &m);
	assert_int_equal(hs.state, NBD_HS_OPTIONS);
	next_reply(&hs, &pos, &r);
	assert_int_equal(r.type, NBD_REP_ERR_UNKNOWN);
	assert_non_null(memmem(r.data, r.len, "cannot open export 'disk'", 25));
	assert_int_equal(pos, hs.out.len);

	/* EXPORT_NAME has no error reply: a later failure is a hard disconnect */
	g_start_result = 0;
	m.len = 0;
	option(&m, NBD_OPT_EXPORT_NAME, "nope", 4);
	feed_all(&hs, &m);
	assert_int_equal(hs.state, NBD_HS_OPENING);
	assert_int_equal(finish_open(&hs), -EPROTO);
	assert_non_null(strstr(hs.error, "unknown export"));
	nbd_hs_fini(&hs);
}

/* EXPORT_NAME through open_start: the reply once the open is done. */
static void test_export_name_async(void **state)
{
	struct msg m = { .len = 0 };
	struct nbd_hs hs;
	size_t pos;

	start_async(&hs, &pos);
	option(&m, NBD_OPT_EXPORT_NAME, "disk", 4);
	feed_all(&hs, &m);
	assert_int_equal(hs.state, NBD_HS_OPENING);
	assert_int_equal(hs.out.len, pos);
	assert_int_equal(finish_open(&hs), 0);
	assert_int_equal(hs.state, NBD_HS_DONE);
	assert_int_equal(hs.out.len, pos + NBD_EXPORT_NAME_REPLY_LEN);
	assert_true(nbd_get64(hs.out.data + pos) == 1 << 20);
	assert_int_equal(g_exports[0].opens, 1);
	nbd_hs_fini(&hs);
	assert_int_equal(g_exports[0].opens, 0);
}

/* The owner gives up while the open is out (the client left): fini frees
 * what the handshake holds; the export, when it comes, is the owner's. */
static void test_fini_while_opening(void **state)
{
	struct msg m = { .len = 0 };
	struct nbd_hs hs;
	size_t pos;

	start_async(&hs, &pos);
	opt_go(&m, NBD_OPT_GO, "disk", 0, NULL);
	feed_all(&hs, &m);
	assert_int_equal(hs.state, NBD_HS_OPENING);
	assert_non_null(hs.pending_name);
	nbd_hs_fini(&hs); /* ASan: nothing leaks */
	assert_null(hs.pending_name);
	assert_int_equal(g_exports[0].opens, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_go_with_info),
		cmocka_unit_test(test_info_then_unknown),
		cmocka_unit_test(test_open_failure_not_unknown),
		cmocka_unit_test(test_structured_and_meta),
		cmocka_unit_test(test_meta_other_export),
		cmocka_unit_test(test_list_abort_misc),
		cmocka_unit_test(test_export_name),
		cmocka_unit_test(test_rejections),
		cmocka_unit_test(test_too_long_option_skipped),
		cmocka_unit_test(test_byte_by_byte),
		cmocka_unit_test(test_go_async),
		cmocka_unit_test(test_async_errors),
		cmocka_unit_test(test_export_name_async),
		cmocka_unit_test(test_fini_while_opening),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
