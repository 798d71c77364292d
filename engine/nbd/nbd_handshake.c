/*
 * NBD handshake: fixed-newstyle option haggling as a state machine fed from a
 * byte buffer.  It never touches a socket: the connection (nbd_conn.c) feeds
 * it what it read and sends what it queued in hs->out, and unit tests and
 * the fuzzer drive it the same way with a table of exports.
 *
 * Options we answer: EXPORT_NAME, ABORT, LIST, STARTTLS (refused by policy:
 * no TLS yet), INFO and GO (INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION,
 * INFO_BLOCK_SIZE 4096/4096/32 MiB), STRUCTURED_REPLY, LIST_META_CONTEXT
 * and SET_META_CONTEXT (base:allocation).  Anything else: NBD_REP_ERR_UNSUP.
 * Option data over NBD_MAX_OPTION_LEN is skipped without being buffered and
 * answered NBD_REP_ERR_TOO_BIG (an EXPORT_NAME that long cannot be answered
 * with an error, so it ends the session).
 *
 * Opening an export (EXPORT_NAME, INFO, GO) may take long: with an
 * ops->open_start the option is consumed, the machine waits in
 * NBD_HS_OPENING (no input consumed: options pipelined behind it are
 * answered after it, in order) and its answer is made by nbd_hs_open_done().
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd/internal.h"

/* A client cycling options forever is a denial of service (spec: MAY hard
 * disconnect); real clients use a handful. */
#define NBD_MAX_OPTIONS 10000u

int nbd_buf_append(struct nbd_buf *b, const void *p, size_t len)
{
	if (b->cap - b->len < len) {
		size_t cap = b->cap ? b->cap : 256;
		uint8_t *d;

		while (cap - b->len < len)
			cap *= 2;
		d = realloc(b->data, cap);
		if (d == NULL)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, len);
	b->len += len;
	return 0;
}

void nbd_buf_free(struct nbd_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static int reply(struct nbd_hs *hs, uint32_t option, uint32_t type, const void *data,
		 uint32_t len)
{
	uint8_t hdr[NBD_OPT_REPLY_HDR_LEN];
	int ret;

	nbd_encode_opt_reply(hdr, option, type, len);
	ret = nbd_buf_append(&hs->out, hdr, sizeof(hdr));
	if (ret == 0 && len)
		ret = nbd_buf_append(&hs->out, data, len);
	return ret;
}

/* An error reply with a message for a human (printf format). */
static int __attribute__((format(printf, 4, 5)))
reply_err(struct nbd_hs *hs, uint32_t option, uint32_t type, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	return reply(hs, option, type, msg, (uint32_t)n);
}

/* A client-supplied name made safe to quote in a message: printable ASCII,
 * at most 64 characters shown. */
static const char *quote(char *dst, size_t dst_len, const uint8_t *s, uint32_t len)
{
	size_t i, n = len < dst_len - 4 ? len : dst_len - 4;

	for (i = 0; i < n && i < 64; i++)
		dst[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
	if (i < len) {
		memcpy(dst + i, "...", 3);
		i += 3;
	}
	dst[i] = '\0';
	return dst;
}

/* Copy a wire string into a C string; false if it holds a NUL or is too long. */
static bool wire_string(char *dst, const uint8_t *s, uint32_t len)
{
	if (len > NBD_MAX_STRING || memchr(s, '\0', len) != NULL)
		return false;
	memcpy(dst, s, len);
	dst[len] = '\0';
	return true;
}

static bool meta_applies(const struct nbd_hs *hs, const char *name)
{
	return hs->meta_allocation && hs->meta_export != NULL &&
	       strcmp(hs->meta_export, name) == 0;
}

/* The answer to EXPORT_NAME once the open gave ret (and *exp when 0). */
static int export_name_answer(struct nbd_hs *hs, const char *name, int ret,
			      struct nbd_export *exp)
{
	uint8_t rep[NBD_EXPORT_NAME_REPLY_LEN];
	size_t n;

	/* No error reply exists for this option: failures end the session. */
	if (ret < 0) {
		hs->error = ret == -ENOENT ? "NBD_OPT_EXPORT_NAME: unknown export"
					   : "NBD_OPT_EXPORT_NAME: cannot open the export (see the log)";
		return -EPROTO;
	}
	hs->export = *exp;
	hs->tflags = nbd_transmission_flags(hs->structured);
	if (hs->export.read_only)
		hs->tflags = nbd_read_only_flags(hs->tflags);
	hs->meta = meta_applies(hs, name);
	n = nbd_encode_export_name_reply(rep, hs->export.size, hs->tflags, hs->no_zeroes);
	hs->state = NBD_HS_DONE;
	return nbd_buf_append(&hs->out, rep, n);
}

/*
 * Open name for option (what INFO/GO asked is in hs->pending_want_*, set by
 * the caller): through ops->open_start when there is one (returns 1: the
 * answer waits for nbd_hs_open_done), else ops->open in place (returns 0
 * with *ret and *exp: answer now).  Or -ENOMEM.
 */
static int start_open(struct nbd_hs *hs, uint32_t option, const char *name, int *ret,
		      struct nbd_export *exp)
{
	if (hs->ops->open_start == NULL) {
		*ret = hs->ops->open(hs->ops_arg, name, exp);
		return 0;
	}
	hs->pending_name = strdup(name);
	if (hs->pending_name == NULL)
		return -ENOMEM;
	hs->pending_opt = option;
	*ret = hs->ops->open_start(hs->ops_arg, name);
	if (*ret == 0) {
		hs->state = NBD_HS_OPENING;
		return 1;
	}
	free(hs->pending_name);
	hs->pending_name = NULL;
	return 0;
}

static int opt_export_name(struct nbd_hs *hs, const uint8_t *data, uint32_t len)
{
	char name[NBD_MAX_STRING + 1];
	struct nbd_export exp = { 0 };
	int ret, started;

	/* No error reply exists for this option: failures end the session. */
	if (!wire_string(name, data, len)) {
		hs->error = "NBD_OPT_EXPORT_NAME: invalid export name";
		return -EPROTO;
	}
	started = start_open(hs, NBD_OPT_EXPORT_NAME, name, &ret, &exp);
	if (started != 0)
		return started < 0 ? started : 0;
	return export_name_answer(hs, name, ret, &exp);
}

static int list_emit(void *arg, const char *name)
{
	struct nbd_hs *hs = arg;
	uint8_t data[4 + NBD_MAX_STRING];
	size_t len = strlen(name);

	if (len > NBD_MAX_STRING)
		return 0; /* cannot be named on the wire: skip */
	nbd_put32(data, (uint32_t)len);
	memcpy(data + 4, name, len);
	return reply(hs, NBD_OPT_LIST, NBD_REP_SERVER, data, (uint32_t)(4 + len));
}

static int opt_list(struct nbd_hs *hs, uint32_t len)
{
	int ret;

	if (len != 0)
		return reply_err(hs, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
				 "NBD_OPT_LIST takes no data");
	ret = hs->ops->list(hs->ops_arg, list_emit, hs);
	if (ret == -ENOMEM)
		return ret;
	if (ret < 0)
		return reply_err(hs, NBD_OPT_LIST, NBD_REP_ERR_POLICY,
				 "cannot list exports: %s", strerror(-ret));
	return reply(hs, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

/* The answer to INFO or GO once the open gave ret (and *exp_in when 0,
 * handed over: kept by a GO that succeeds, closed otherwise). */
static int info_go_answer(struct nbd_hs *hs, uint32_t option, const char *name, bool want_name,
			  bool want_desc, int ret, const struct nbd_export *exp_in)
{
	struct nbd_export exp = ret == 0 ? *exp_in : (struct nbd_export){ 0 };
	uint32_t name_len = (uint32_t)strlen(name);
	char shown[80];
	uint8_t info[14];
	uint16_t tflags;

	if (ret == -ENOMEM)
		return ret;
	if (ret < 0 && ret != -ENOENT)
		/* it exists but cannot be opened now (out of file descriptors: EMFILE) */
		return reply_err(hs, option, NBD_REP_ERR_UNKNOWN,
				 "cannot open export '%s': %s (see the server's log)",
				 quote(shown, sizeof(shown), (const uint8_t *)name, name_len),
				 strerror(-ret));
	if (ret < 0) {
		if (name[0] == '\0')
			return reply_err(hs, option, NBD_REP_ERR_UNKNOWN,
					 "no default export: give a volume name");
		return reply_err(hs, option, NBD_REP_ERR_UNKNOWN,
				 "unknown export '%s': list them with NBD_OPT_LIST",
				 quote(shown, sizeof(shown), (const uint8_t *)name, name_len));
	}

	tflags = nbd_transmission_flags(hs->structured);
	if (exp.read_only)
		tflags = nbd_read_only_flags(tflags);
	nbd_encode_info_export(info, exp.size, tflags);
	ret = reply(hs, option, NBD_REP_INFO, info, 12);
	if (ret == 0 && want_name) {
		uint8_t buf[2 + NBD_MAX_STRING];
		size_t n = strlen(exp.name);

		if (n <= NBD_MAX_STRING) {
			nbd_put16(buf, NBD_INFO_NAME);
			memcpy(buf + 2, exp.name, n);
			ret = reply(hs, option, NBD_REP_INFO, buf, (uint32_t)(2 + n));
		}
	}
	if (ret == 0 && want_desc) {
		const char *desc = exp.read_only ? "Tessera snapshot (read-only)" : "Tessera volume";
		size_t n = strlen(desc);
		uint8_t buf[2 + 64];

		nbd_put16(buf, NBD_INFO_DESCRIPTION);
		memcpy(buf + 2, desc, n);
		ret = reply(hs, option, NBD_REP_INFO, buf, (uint32_t)(2 + n));
	}
	if (ret == 0) {
		/* Always sent: our constraints are not the defaults. */
		nbd_encode_info_block_size(info, NBD_MIN_BLOCK, NBD_PREF_BLOCK, NBD_MAX_BLOCK);
		ret = reply(hs, option, NBD_REP_INFO, info, 14);
	}
	if (ret == 0)
		ret = reply(hs, option, NBD_REP_ACK, NULL, 0);
	if (ret < 0 || option == NBD_OPT_INFO) {
		hs->ops->close(hs->ops_arg, exp.handle);
		return ret;
	}
	hs->export = exp;
	hs->tflags = tflags;
	hs->meta = meta_applies(hs, name);
	hs->state = NBD_HS_DONE;
	return 0;
}

static int opt_info_go(struct nbd_hs *hs, uint32_t option, const uint8_t *data, uint32_t len)
{
	char name[NBD_MAX_STRING + 1];
	bool want_name = false, want_desc = false;
	struct nbd_export exp = { 0 };
	struct nbd_opt_info oi;
	uint32_t i;
	int ret, started;

	if (nbd_parse_opt_info(data, len, &oi) < 0)
		return reply_err(hs, option, NBD_REP_ERR_INVALID,
				 "malformed NBD_OPT_INFO/NBD_OPT_GO request");
	if (!wire_string(name, oi.name, oi.name_len))
		return reply_err(hs, option, NBD_REP_ERR_INVALID,
				 "export name too long or contains NUL");
	for (i = 0; i < oi.nr_requests; i++) {
		switch (nbd_get16(oi.requests + 2 * i)) {
		case NBD_INFO_NAME:
			want_name = true;
			break;
		case NBD_INFO_DESCRIPTION:
			want_desc = true;
			break;
		default:
			break; /* EXPORT and BLOCK_SIZE are always sent; others ignored */
		}
	}
	hs->pending_want_name = want_name;
	hs->pending_want_desc = want_desc;
	started = start_open(hs, option, name, &ret, &exp);
	if (started != 0)
		return started < 0 ? started : 0;
	return info_go_answer(hs, option, name, want_name, want_desc, ret, &exp);
}

int nbd_hs_open_done(struct nbd_hs *hs, int status, struct nbd_export *exp)
{
	char *name = hs->pending_name;
	int ret;

	if (hs->state != NBD_HS_OPENING)
		return -EINVAL;
	hs->state = NBD_HS_OPTIONS;
	hs->pending_name = NULL;
	if (hs->pending_opt == NBD_OPT_EXPORT_NAME)
		ret = export_name_answer(hs, name, status, exp);
	else
		ret = info_go_answer(hs, hs->pending_opt, name, hs->pending_want_name,
				     hs->pending_want_desc, status, exp);
	free(name);
	return ret;
}

static int meta_context_reply(struct nbd_hs *hs, uint32_t option, uint32_t id)
{
	static const char ctx[] = NBD_META_BASE_ALLOCATION;
	uint8_t buf[4 + sizeof(ctx)];

	nbd_put32(buf, id);
	memcpy(buf + 4, ctx, sizeof(ctx) - 1);
	return reply(hs, option, NBD_REP_META_CONTEXT, buf, (uint32_t)(4 + sizeof(ctx) - 1));
}

static int opt_meta(struct nbd_hs *hs, uint32_t option, const uint8_t *data, uint32_t len)
{
	bool set = option == NBD_OPT_SET_META_CONTEXT, found = false;
	char name[NBD_MAX_STRING + 1];
	struct nbd_opt_meta m;
	const uint8_t *q;
	uint32_t pos = 0, qlen;
	int ret;

	if (set) {
		/* spec: the selection is replaced even when the option fails */
		hs->meta_allocation = false;
		free(hs->meta_export);
		hs->meta_export = NULL;
	}
	if (!hs->structured)
		return reply_err(hs, option, NBD_REP_ERR_INVALID,
				 "negotiate NBD_OPT_STRUCTURED_REPLY first");
	if (nbd_parse_opt_meta(data, len, &m) < 0)
		return reply_err(hs, option, NBD_REP_ERR_INVALID,
				 "malformed meta context request");
	if (!wire_string(name, m.name, m.name_len))
		return reply_err(hs, option, NBD_REP_ERR_INVALID,
				 "export name too long or contains NUL");
	/* Validate every query before answering any. */
	while (nbd_meta_next(&m, &pos, &q, &qlen)) {
		switch (nbd_meta_match(q, qlen)) {
		case NBD_META_INVALID:
			return reply_err(hs, option, NBD_REP_ERR_INVALID,
					 "meta context query without a namespace");
		case NBD_META_ALLOCATION:
			found = true;
			break;
		case NBD_META_BASE_WILDCARD:
			/* LIST: every base: context; SET: MUST be ignored */
			if (!set)
				found = true;
			break;
		case NBD_META_NONE:
			break;
		}
	}
	if (!set && m.nr_queries == 0)
		found = true; /* no query: list everything we have */
	if (found) {
		ret = meta_context_reply(hs, option, set ? NBD_META_ID_BASE_ALLOCATION : 0);
		if (ret < 0)
			return ret;
		if (set) {
			hs->meta_export = strdup(name);
			if (hs->meta_export == NULL)
				return -ENOMEM;
			hs->meta_allocation = true;
		}
	}
	return reply(hs, option, NBD_REP_ACK, NULL, 0);
}

static int handle_option(struct nbd_hs *hs, uint32_t option, const uint8_t *data,
			 uint32_t len)
{
	switch (option) {
	case NBD_OPT_EXPORT_NAME:
		return opt_export_name(hs, data, len);
	case NBD_OPT_ABORT:
		/* spec: reply ACK; ignore any data */
		hs->state = NBD_HS_CLOSE;
		return reply(hs, option, NBD_REP_ACK, NULL, 0);
	case NBD_OPT_LIST:
		return opt_list(hs, len);
	case NBD_OPT_STARTTLS:
		if (len != 0)
			return reply_err(hs, option, NBD_REP_ERR_INVALID,
					 "NBD_OPT_STARTTLS takes no data");
		return reply_err(hs, option, NBD_REP_ERR_POLICY,
				 "TLS is not enabled on this server");
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return opt_info_go(hs, option, data, len);
	case NBD_OPT_STRUCTURED_REPLY:
		if (len != 0)
			return reply_err(hs, option, NBD_REP_ERR_INVALID,
					 "NBD_OPT_STRUCTURED_REPLY takes no data");
		hs->structured = true;
		return reply(hs, option, NBD_REP_ACK, NULL, 0);
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		return opt_meta(hs, option, data, len);
	default:
		return reply_err(hs, option, NBD_REP_ERR_UNSUP, "option %u is not supported",
				 option);
	}
}

int nbd_hs_init(struct nbd_hs *hs, const struct nbd_export_ops *ops, void *ops_arg)
{
	uint8_t greeting[NBD_GREETING_LEN];

	memset(hs, 0, sizeof(*hs));
	hs->ops = ops;
	hs->ops_arg = ops_arg;
	hs->state = NBD_HS_CLIENT_FLAGS;
	nbd_encode_greeting(greeting);
	return nbd_buf_append(&hs->out, greeting, sizeof(greeting));
}

ssize_t nbd_hs_feed(struct nbd_hs *hs, const uint8_t *buf, size_t len)
{
	size_t used = 0;
	int ret;

	while (hs->state == NBD_HS_CLIENT_FLAGS || hs->state == NBD_HS_OPTIONS) {
		size_t avail = len - used;
		struct nbd_opt_hdr h;

		if (hs->discard > 0) {
			size_t n = avail < hs->discard ? avail : hs->discard;

			if (n == 0)
				break;
			used += n;
			hs->discard -= (uint32_t)n;
			if (hs->discard == 0) {
				ret = reply_err(hs, hs->discard_opt, NBD_REP_ERR_TOO_BIG,
						"option data longer than %u bytes",
						NBD_MAX_OPTION_LEN);
				if (ret < 0)
					return ret;
			}
			continue;
		}
		if (hs->state == NBD_HS_CLIENT_FLAGS) {
			uint32_t flags;

			if (avail < 4)
				break;
			flags = nbd_get32(buf + used);
			used += 4;
			/* spec: drop the connection on flags we did not offer */
			if (flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
				hs->error = "unknown client flags";
				return -EPROTO;
			}
			/* Fixed newstyle is honoured even without the client's bit. */
			hs->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
			hs->state = NBD_HS_OPTIONS;
			continue;
		}
		ret = nbd_parse_opt_hdr(buf + used, avail, &h);
		if (ret == 0)
			break;
		if (ret < 0) {
			hs->error = "bad option magic";
			return -EPROTO;
		}
		if (++hs->options > NBD_MAX_OPTIONS) {
			hs->error = "too many options";
			return -EPROTO;
		}
		if (h.len > NBD_MAX_OPTION_LEN) {
			if (h.option == NBD_OPT_EXPORT_NAME) {
				hs->error = "NBD_OPT_EXPORT_NAME: export name too long";
				return -EPROTO;
			}
			used += NBD_OPT_HDR_LEN;
			hs->discard = h.len;
			hs->discard_opt = h.option;
			continue;
		}
		if (avail - NBD_OPT_HDR_LEN < h.len)
			break; /* wait for the whole option */
		ret = handle_option(hs, h.option, buf + used + NBD_OPT_HDR_LEN, h.len);
		if (ret < 0)
			return ret;
		used += NBD_OPT_HDR_LEN + h.len;
	}
	return (ssize_t)used;
}

void nbd_hs_fini(struct nbd_hs *hs)
{
	if (hs->export.handle != NULL)
		hs->ops->close(hs->ops_arg, hs->export.handle);
	hs->export.handle = NULL;
	free(hs->pending_name); /* an open still out is the owner's to close */
	hs->pending_name = NULL;
	free(hs->meta_export);
	hs->meta_export = NULL;
	nbd_buf_free(&hs->out);
}
