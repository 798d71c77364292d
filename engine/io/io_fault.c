/*
 * Fault injector: a backend that wraps a real one (io_uring or libaio) and
 * fails, shortens, delays or tears chosen operations, for tests.  The spec
 * grammar is documented in include/tessera/io.h (struct tsr_io_opts).
 *
 * Every request gets a shadow request (preallocated, one per queue slot)
 * queued into the inner backend, so the injector sees every completion:
 *   fail=E    nothing reaches the disk; completes with -E at the first reap
 *             after the submit that carried it;
 *   short=B   the inner op is cut to its first B bytes and its result passed
 *             up (the core then resumes the rest);
 *   tear=B    (writes) the inner op is cut to B bytes and completes with -EIO;
 *   delay=MS  the inner op runs normally, its completion is held until MS
 *             milliseconds after queueing.
 * Operations are counted per kind (read, write, fsync incl. fdatasync,
 * fdatasync alone, any) from creation; remainders of short transfers resumed
 * by the core are not new operations and are neither counted nor faulted.
 *
 * While completions are held (delay) the eventfd is kept readable, so an
 * epoll loop keeps polling until they are due: a busy wait, acceptable in a
 * test-only wrapper.  Not for production paths: shortened and torn requests
 * allocate their truncated iovec array.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tessera/common.h"
#include "tessera/io.h"
#include "internal.h"

#define FAULT_MAX_RULES 32
#define FAULT_MAX_SPEC 1024
#define FAULT_MAX_DELAY_MS 3600000u

/* FAULT_OP_FDATASYNC counts and matches fdatasyncs only; an fdatasync is also
 * an FAULT_OP_FSYNC (rules "fsync:" see both kinds, as they always did). */
enum fault_op {
	FAULT_OP_READ,
	FAULT_OP_WRITE,
	FAULT_OP_FSYNC,
	FAULT_OP_FDATASYNC,
	FAULT_OP_ANY,
	FAULT_OP_KINDS
};
enum fault_action { FAULT_NONE, FAULT_FAIL, FAULT_SHORT, FAULT_DELAY, FAULT_TEAR };

struct fault_rule {
	enum fault_op op;
	uint64_t nth;          /* 1-based */
	bool and_later;        /* "N+": the Nth and every later one */
	enum fault_action action;
	uint64_t arg;          /* errno (fail), bytes (short, tear), ms (delay) */
};

/* Shadow of one caller request while it is in the injector. */
struct fault_req {
	struct io_req_hook hook;   /* queued into the inner backend; must stay first */
	struct fault_ctx *fc;
	struct tsr_io_req *outer;  /* the core's request, NULL while free */
	enum fault_action action;  /* what is done to this one */
	int res;                   /* result to report (fail, held delay) */
	uint64_t deadline_ns;      /* delay: CLOCK_MONOTONIC completion time */
	struct iovec *cut_iov;     /* short/tear: truncated copy, freed at finish */
	struct fault_req *next;    /* free list or one of the lists below */
};

struct fault_list {
	struct fault_req *head, *tail;
};

struct fault_ctx {
	const struct tsr_io_backend *inner;
	void *inner_ctx;           /* NULL until the inner backend is created */
	struct fault_rule rules[FAULT_MAX_RULES];
	unsigned nrules;
	uint64_t seen[FAULT_OP_KINDS]; /* operations counted per kind */
	int injected;              /* faults injected so far */
	struct fault_req *reqs;    /* all shadows, allocated once */
	struct fault_req *free_reqs;
	struct fault_list unsubmitted; /* failed ops waiting for submit() */
	struct fault_list ready;       /* failed ops to complete in reap() */
	struct fault_list held;        /* delayed completions, not yet due */
	unsigned inner_inflight;   /* shadows queued into the inner backend */
	unsigned finished;         /* outer completions delivered (reap's count) */
};

/* ---- spec parsing ------------------------------------------------------- */

static const struct {
	const char *name;
	int value;
} g_errno_names[] = {
	{ "EPERM", EPERM },         { "ENOENT", ENOENT },       { "EINTR", EINTR },
	{ "EIO", EIO },             { "ENXIO", ENXIO },         { "EBADF", EBADF },
	{ "EAGAIN", EAGAIN },       { "ENOMEM", ENOMEM },       { "EACCES", EACCES },
	{ "EFAULT", EFAULT },       { "EBUSY", EBUSY },         { "EEXIST", EEXIST },
	{ "ENODEV", ENODEV },       { "EINVAL", EINVAL },       { "EFBIG", EFBIG },
	{ "ENOSPC", ENOSPC },       { "EROFS", EROFS },         { "EPIPE", EPIPE },
	{ "ERANGE", ERANGE },       { "ENOSYS", ENOSYS },       { "ENODATA", ENODATA },
	{ "ETIMEDOUT", ETIMEDOUT }, { "EOVERFLOW", EOVERFLOW }, { "EILSEQ", EILSEQ },
	{ "EOPNOTSUPP", EOPNOTSUPP }, { "ENOTSUP", ENOTSUP },   { "ECONNRESET", ECONNRESET },
	{ "ESHUTDOWN", ESHUTDOWN }, { "ESTALE", ESTALE },       { "EDQUOT", EDQUOT },
	{ "ENOMEDIUM", ENOMEDIUM }, { "ECANCELED", ECANCELED }, { "EREMOTEIO", EREMOTEIO },
	{ "EBADMSG", EBADMSG },
};

/* A decimal number made of digits only (no sign, no blanks). */
static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (*s == '\0')
		return -EINVAL;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (v > (max - (uint64_t)(*s - '0')) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

static int parse_errno(const char *s, uint64_t *out)
{
	for (size_t i = 0; i < sizeof(g_errno_names) / sizeof(g_errno_names[0]); i++) {
		if (strcmp(s, g_errno_names[i].name) == 0) {
			*out = (uint64_t)g_errno_names[i].value;
			return 0;
		}
	}
	if (parse_uint(s, 4095, out) < 0 || *out == 0)
		return -EINVAL;
	return 0;
}

static int parse_bytes(const char *s, uint64_t *out)
{
	if (tsr_parse_size(s, out) < 0 || *out > INT_MAX)
		return -EINVAL;
	return 0;
}

/* Parse one "OP:N:ACTION".  Sets *bad to the offending token on error. */
static int parse_rule(char *text, struct fault_rule *rule, const char **bad,
		      const char **why)
{
	char *op = text, *nth, *action, *value, *plus;

	nth = strchr(op, ':');
	action = nth != NULL ? strchr(nth + 1, ':') : NULL;
	if (action == NULL || strchr(action + 1, ':') != NULL) {
		*bad = text;
		*why = "rule (expected OP:N:ACTION)";
		return -EINVAL;
	}
	*nth++ = '\0';
	*action++ = '\0';

	if (strcmp(op, "read") == 0)
		rule->op = FAULT_OP_READ;
	else if (strcmp(op, "write") == 0)
		rule->op = FAULT_OP_WRITE;
	else if (strcmp(op, "fsync") == 0)
		rule->op = FAULT_OP_FSYNC;
	else if (strcmp(op, "fdatasync") == 0)
		rule->op = FAULT_OP_FDATASYNC;
	else if (strcmp(op, "any") == 0)
		rule->op = FAULT_OP_ANY;
	else {
		*bad = op;
		*why = "operation (expected read, write, fsync, fdatasync or any)";
		return -EINVAL;
	}

	plus = strchr(nth, '+');
	rule->and_later = plus != NULL;
	if (plus != NULL) {
		if (plus[1] != '\0') {
			*bad = nth;
			*why = "count (expected N or N+)";
			return -EINVAL;
		}
		*plus = '\0';
	}
	if (parse_uint(nth, UINT64_MAX, &rule->nth) < 0 || rule->nth == 0) {
		*bad = nth;
		*why = "count (expected N or N+, N >= 1)";
		return -EINVAL;
	}

	value = strchr(action, '=');
	if (value == NULL) {
		*bad = action;
		*why = "action (expected fail=, short=, delay= or tear=)";
		return -EINVAL;
	}
	*value++ = '\0';
	if (strcmp(action, "fail") == 0) {
		rule->action = FAULT_FAIL;
		if (parse_errno(value, &rule->arg) < 0) {
			*bad = value;
			*why = "errno (expected a name such as EIO or a number 1-4095)";
			return -EINVAL;
		}
	} else if (strcmp(action, "short") == 0 || strcmp(action, "tear") == 0) {
		rule->action = action[0] == 's' ? FAULT_SHORT : FAULT_TEAR;
		if (parse_bytes(value, &rule->arg) < 0) {
			*bad = value;
			*why = "byte count (expected a size such as 4096 or 4k)";
			return -EINVAL;
		}
		if (rule->op == FAULT_OP_FSYNC || rule->op == FAULT_OP_FDATASYNC ||
		    (rule->action == FAULT_TEAR && rule->op == FAULT_OP_READ)) {
			*bad = action;
			*why = "action for this operation (short: read/write; tear: write)";
			return -EINVAL;
		}
	} else if (strcmp(action, "delay") == 0) {
		rule->action = FAULT_DELAY;
		if (parse_uint(value, FAULT_MAX_DELAY_MS, &rule->arg) < 0) {
			*bad = value;
			*why = "delay (expected milliseconds, at most 3600000)";
			return -EINVAL;
		}
	} else {
		*bad = action;
		*why = "action (expected fail=, short=, delay= or tear=)";
		return -EINVAL;
	}
	return 0;
}

/*
 * The one parser of a fault spec: fills rules (may be NULL to only check).
 * 0 or -EINVAL, after logging which token is bad.
 */
static int fault_parse(const char *spec, struct fault_rule *rules, unsigned *nrules)
{
	char buf[FAULT_MAX_SPEC];
	struct fault_rule scratch;
	const char *bad = "", *why = "";
	char *rule, *save = NULL;
	unsigned n = 0;
	size_t len;

	len = strlen(spec);
	if (len == 0 || len >= sizeof(buf)) {
		tsr_error("io: fault spec: %s", len == 0 ? "empty" : "too long");
		return -EINVAL;
	}
	memcpy(buf, spec, len + 1);
	/* strtok_r would skip empty rules ("a,,b", trailing ","): reject them */
	if (buf[0] == ',' || buf[len - 1] == ',' || strstr(buf, ",,") != NULL) {
		tsr_error("io: fault spec \"%s\": empty rule", spec);
		return -EINVAL;
	}
	for (rule = strtok_r(buf, ",", &save); rule != NULL; rule = strtok_r(NULL, ",", &save)) {
		if (n == FAULT_MAX_RULES) {
			tsr_error("io: fault spec \"%s\": more than %d rules", spec,
				  FAULT_MAX_RULES);
			return -EINVAL;
		}
		if (parse_rule(rule, rules != NULL ? &rules[n] : &scratch, &bad, &why) < 0) {
			tsr_error("io: fault spec \"%s\": rule %u: bad %s: \"%s\"", spec, n + 1,
				  why, bad);
			return -EINVAL;
		}
		n++;
	}
	if (nrules != NULL)
		*nrules = n;
	return 0;
}

int fault_spec_validate(const char *spec)
{
	return fault_parse(spec, NULL, NULL);
}

/* ---- the backend -------------------------------------------------------- */

static void list_push(struct fault_list *l, struct fault_req *fr)
{
	fr->next = NULL;
	if (l->tail != NULL)
		l->tail->next = fr;
	else
		l->head = fr;
	l->tail = fr;
}

static struct fault_req *list_pop(struct fault_list *l)
{
	struct fault_req *fr = l->head;

	if (fr != NULL) {
		l->head = fr->next;
		if (l->head == NULL)
			l->tail = NULL;
	}
	return fr;
}

static void signal_event_fd(struct fault_ctx *fc)
{
	uint64_t one = 1;
	int efd = fc->inner->event_fd(fc->inner_ctx);

	/* EAGAIN only when the counter is saturated: it is readable anyway */
	if (write(efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		tsr_warn("fault: signal eventfd: %s", strerror(errno));
}

/* Deliver the result to the core and recycle the shadow. */
static void fault_finish(struct fault_req *fr, int res)
{
	struct fault_ctx *fc = fr->fc;
	struct tsr_io_req *outer = fr->outer;

	free(fr->cut_iov);
	fr->cut_iov = NULL;
	fr->outer = NULL;
	fr->next = fc->free_reqs;
	fc->free_reqs = fr;
	fc->finished++;
	tsr_io_req_complete(outer, res);
}

/* hook->done of shadows: the inner backend completed one. */
static void fault_inner_done(struct io_req_hook *hook, int res)
{
	struct fault_req *fr = container_of(hook, struct fault_req, hook);
	struct fault_ctx *fc = fr->fc;

	fc->inner_inflight--;
	switch (fr->action) {
	case FAULT_TEAR:
		fault_finish(fr, res < 0 ? res : -EIO);
		break;
	case FAULT_DELAY:
		if ((uint64_t)tsr_mono_ns() < fr->deadline_ns) {
			fr->res = res;
			list_push(&fc->held, fr);
			break;
		}
		fault_finish(fr, res);
		break;
	default:
		fault_finish(fr, res);
		break;
	}
}

static enum fault_op fault_op_of(enum tsr_io_op op)
{
	switch (op) {
	case TSR_IO_OP_READ:
		return FAULT_OP_READ;
	case TSR_IO_OP_WRITE:
		return FAULT_OP_WRITE;
	default:
		return FAULT_OP_FSYNC;
	}
}

/* The first rule that applies to an operation numbered seen[] (already counted). */
static const struct fault_rule *match_rule(const struct fault_ctx *fc, enum fault_op kind,
					   bool datasync, const uint64_t *seen)
{
	for (unsigned i = 0; i < fc->nrules; i++) {
		const struct fault_rule *r = &fc->rules[i];
		uint64_t nth;

		if (r->op != kind && r->op != FAULT_OP_ANY &&
		    !(r->op == FAULT_OP_FDATASYNC && datasync))
			continue;
		nth = seen[r->op];
		if (nth == r->nth || (r->and_later && nth > r->nth))
			return r;
	}
	return NULL;
}

/* Cut fr's iovec to its first bytes; 0 or -ENOMEM. */
static int cut_iov(struct fault_req *fr, size_t bytes)
{
	struct tsr_io_req *req = &fr->hook.req;
	struct iovec *iov;
	int n = 0;

	iov = malloc(sizeof(*iov) * (size_t)req->iovcnt);
	if (iov == NULL)
		return -ENOMEM;
	for (int i = 0; i < req->iovcnt && bytes > 0; i++) {
		iov[n] = req->iov[i];
		if (iov[n].iov_len > bytes)
			iov[n].iov_len = bytes;
		bytes -= iov[n].iov_len;
		n++;
	}
	fr->cut_iov = iov;
	req->iov = iov;
	req->iovcnt = n;
	return 0;
}

static int fault_queue(void *ctx, struct tsr_io_req *outer)
{
	struct fault_ctx *fc = ctx;
	struct fault_req *fr = fc->free_reqs;
	const struct fault_rule *rule = NULL;
	enum fault_op kind = fault_op_of(outer->op);
	uint64_t seen[FAULT_OP_KINDS];
	int ret;

	if (fr == NULL)
		return -EAGAIN;
	memcpy(seen, fc->seen, sizeof(seen));
	if (!io_req_hook_of(outer)->resumed) {
		seen[kind]++;
		seen[FAULT_OP_ANY]++;
		if (outer->op == TSR_IO_OP_FDATASYNC)
			seen[FAULT_OP_FDATASYNC]++;
		rule = match_rule(fc, kind, outer->op == TSR_IO_OP_FDATASYNC, seen);
	}

	fr->hook.req = *outer;
	fr->hook.req.backend_data = NULL;
	fr->hook.resumed = false;
	fr->outer = outer;
	fr->action = FAULT_NONE;
	fr->res = 0;
	if (rule != NULL) {
		size_t len = io_iov_length(outer->iov, outer->iovcnt);

		fr->action = rule->action;
		switch (rule->action) {
		case FAULT_FAIL:
			fr->res = -(int)rule->arg;
			break;
		case FAULT_SHORT:
			/* "any:N:short" hitting an fsync, or nothing to cut: no fault */
			if (kind == FAULT_OP_FSYNC || rule->arg >= len)
				fr->action = FAULT_NONE;
			else if (rule->arg == 0)
				fr->action = FAULT_FAIL; /* report 0 bytes without I/O */
			break;
		case FAULT_TEAR:
			if (kind != FAULT_OP_WRITE)
				fr->action = FAULT_NONE;
			else if (rule->arg == 0) {
				fr->action = FAULT_FAIL; /* nothing written */
				fr->res = -EIO;
			}
			break;
		case FAULT_DELAY:
			fr->deadline_ns = (uint64_t)tsr_mono_ns() + rule->arg * 1000000u;
			break;
		case FAULT_NONE:
			break;
		}
	}

	if (fr->action == FAULT_FAIL) {
		fc->free_reqs = fr->next;
		list_push(&fc->unsubmitted, fr);
		goto accepted;
	}
	if (fr->action == FAULT_SHORT || fr->action == FAULT_TEAR) {
		ret = cut_iov(fr, rule->arg);
		if (ret < 0)
			return ret;
	}
	ret = fc->inner->queue(fc->inner_ctx, &fr->hook.req);
	if (ret < 0) {
		free(fr->cut_iov);
		fr->cut_iov = NULL;
		fr->outer = NULL;
		return ret;
	}
	fc->free_reqs = fr->next;
	fc->inner_inflight++;
accepted:
	memcpy(fc->seen, seen, sizeof(seen));
	if (fr->action != FAULT_NONE) {
		fc->injected++;
		tsr_debug("fault: injecting into %s #%llu", kind == FAULT_OP_READ ? "read" :
			  kind == FAULT_OP_WRITE ? "write" : "fsync",
			  (unsigned long long)seen[kind]);
	}
	return 0;
}

static int fault_submit(void *ctx)
{
	struct fault_ctx *fc = ctx;
	struct fault_req *fr;
	int moved = 0, ret;

	while ((fr = list_pop(&fc->unsubmitted)) != NULL) {
		list_push(&fc->ready, fr);
		moved++;
	}
	if (moved > 0)
		signal_event_fd(fc);
	ret = fc->inner->submit(fc->inner_ctx);
	return ret < 0 ? ret : ret + moved;
}

/* Complete failed and due delayed requests, within budget. */
static void complete_local(struct fault_ctx *fc, unsigned start, unsigned max)
{
	struct fault_list still_held = { NULL, NULL };
	struct fault_req *fr;
	uint64_t now;

	while ((max == 0 || fc->finished - start < max) && (fr = list_pop(&fc->ready)) != NULL)
		fault_finish(fr, fr->res);
	if (fc->held.head == NULL)
		return;
	now = (uint64_t)tsr_mono_ns();
	/* Detach first: a completion may hold a new delayed request. */
	while ((fr = list_pop(&fc->held)) != NULL) {
		if (now >= fr->deadline_ns && (max == 0 || fc->finished - start < max))
			fault_finish(fr, fr->res);
		else
			list_push(&still_held, fr);
	}
	while ((fr = list_pop(&still_held)) != NULL)
		list_push(&fc->held, fr);
}

static int fault_reap(void *ctx, unsigned max, bool wait)
{
	struct fault_ctx *fc = ctx;
	unsigned start = fc->finished;
	int ret = 0;

	for (;;) {
		unsigned budget = 0;

		complete_local(fc, start, max);
		if (max > 0) {
			if (fc->finished - start >= max)
				break;
			budget = max - (fc->finished - start);
		}
		ret = fc->inner->reap(fc->inner_ctx, budget, false);
		if (ret < 0)
			break;
		if (!wait || fc->finished != start)
			break;
		/* Waiting and nothing delivered yet. */
		if (fc->held.head == NULL && fc->ready.head == NULL) {
			if (fc->inner_inflight == 0)
				break;
			ret = fc->inner->reap(fc->inner_ctx, budget, true);
			if (ret < 0)
				break;
		} else {
			/* held completions: sleep in short steps, the inner may finish too */
			struct timespec step = { 0, 200000 };

			nanosleep(&step, NULL);
		}
	}
	/* Keep the eventfd readable while completions are held or budgeted out. */
	if (fc->held.head != NULL || fc->ready.head != NULL)
		signal_event_fd(fc);
	if (ret < 0 && fc->finished == start)
		return ret;
	return (int)(fc->finished - start);
}

static int fault_event_fd(void *ctx)
{
	struct fault_ctx *fc = ctx;

	return fc->inner->event_fd(fc->inner_ctx);
}

/* The inner backend's completions (its eventfd may not be signalled for
 * them); ours on the ready and held lists signal the eventfd themselves. */
static bool fault_completions_ready(void *ctx)
{
	struct fault_ctx *fc = ctx;

	return fc->inner->completions_ready != NULL &&
	       fc->inner->completions_ready(fc->inner_ctx);
}

/* What the wrapped backend does: the injector adds delays, never blocking. */
static bool fault_buffered_reads_async(void *ctx)
{
	struct fault_ctx *fc = ctx;

	return fc->inner->buffered_reads_async != NULL &&
	       fc->inner->buffered_reads_async(fc->inner_ctx);
}

static void fault_destroy(void *ctx)
{
	struct fault_ctx *fc = ctx;

	if (fc == NULL)
		return;
	if (fc->inner_ctx != NULL)
		fc->inner->destroy(fc->inner_ctx);
	free(fc->reqs);
	free(fc);
}

/* The table's create cannot know the inner backend: use tsr_io_fault_create. */
static int fault_create_unwrapped(const struct tsr_io_opts *opts, void **ctx_out)
{
	return -EINVAL;
}

int tsr_io_fault_create(const struct tsr_io_backend *inner, const struct tsr_io_opts *opts,
			void **ctx_out)
{
	struct fault_ctx *fc;
	int ret;

	if (inner == NULL || opts == NULL || opts->fault_spec == NULL || opts->queue_depth == 0)
		return -EINVAL;
	fc = calloc(1, sizeof(*fc));
	if (fc == NULL)
		return -ENOMEM;
	fc->inner = inner;
	ret = fault_parse(opts->fault_spec, fc->rules, &fc->nrules);
	if (ret < 0)
		goto err;
	fc->reqs = calloc(opts->queue_depth, sizeof(*fc->reqs));
	if (fc->reqs == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	for (unsigned i = opts->queue_depth; i-- > 0;) {
		fc->reqs[i].fc = fc;
		fc->reqs[i].hook.done = fault_inner_done;
		fc->reqs[i].next = fc->free_reqs;
		fc->free_reqs = &fc->reqs[i];
	}
	ret = inner->create(opts, &fc->inner_ctx);
	if (ret < 0) {
		fc->inner_ctx = NULL;
		goto err;
	}
	*ctx_out = fc;
	return 0;
err:
	fault_destroy(fc);
	return ret;
}

int tsr_io_fault_count(const struct tsr_io *io)
{
	const struct fault_ctx *fc;

	if (io == NULL || io_backend_of(io) != &tsr_io_fault_backend)
		return 0;
	fc = io_backend_ctx(io);
	return fc->injected;
}

const struct tsr_io_backend tsr_io_fault_backend = {
	.name = "fault",
	.create = fault_create_unwrapped,
	.destroy = fault_destroy,
	.queue = fault_queue,
	.submit = fault_submit,
	.reap = fault_reap,
	.event_fd = fault_event_fd,
	.completions_ready = fault_completions_ready,
	.buffered_reads_async = fault_buffered_reads_async,
};
