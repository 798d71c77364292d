/*
 * One job's thread: open the target, then keep iodepth I/Os in flight,
 * picking offsets from the workload generator, timing every I/O into the
 * latency histograms and, with --verify, sealing written blocks and checking
 * what is read.  After the timed phase a verify pass reads back every block
 * the job wrote.  Buffers, slots and the generation map are allocated once;
 * the loop itself allocates nothing.
 */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "tessera/common.h"
#include "bench.h"

#define GEN_BUSY 0x80000000u   /* an I/O on the block is in flight */
#define GEN_MASK 0x7fffffffu
#define MAX_VERIFY_BLOCKS (1ull << 28) /* 1 GiB of generation map */
#define MAX_VERIFY_MSGS 10

struct job_ctx {
	struct bench_job *job;
	struct bench_run *run;
	const struct bench_engine *eng;
	struct bench_target *t;
	const struct bench_opts *o;
	struct bench_io *ios;         /* iodepth slots */
	uint32_t *free_slots;         /* stack of free slot indexes */
	unsigned n_free;
	struct bench_io **batch;      /* queued in this pass, for submit stamps */
	unsigned n_batch;
	void *bufs;                   /* write buffers then read buffers */
	size_t buf_len;
	unsigned inflight;
	uint64_t region_off;          /* byte offset of block 0 */
	uint64_t nblocks;
	uint32_t bs;
	struct bench_workload wl;
	uint32_t *genmap;             /* verify: per block GEN_BUSY | generation */
	uint32_t next_gen;
	bool counting;                /* past the ramp: completions go into stats */
	uint64_t issued_bytes;        /* since counting started */
	uint64_t limit_bytes;         /* stop issuing here unless time_based */
	int error;                    /* first -errno; stops issuing */
	uint64_t verify_errors;
	uint64_t verified;
	unsigned verify_msgs;
	bool dir_used[BENCH_NDDIR];   /* I/O of that direction completed in the timed phase */
};

static void job_fail(struct job_ctx *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void job_fail(struct job_ctx *c, int err, const char *fmt, ...)
{
	va_list ap;

	if (c->error)
		return;
	c->error = err;
	va_start(ap, fmt);
	vsnprintf(c->job->errmsg, sizeof(c->job->errmsg), fmt, ap);
	va_end(ap);
}

static void io_complete(void *cb_arg, struct bench_io *io, int res)
{
	struct job_ctx *c = cb_arg;
	struct bench_dir_stats *s = &c->job->result.dir[io->ddir];
	uint64_t now = tsr_mono_ns();

	c->inflight--;
	if (c->genmap)
		c->genmap[io->block] &= ~GEN_BUSY;
	if (res < 0) {
		if (c->genmap && io->ddir == BENCH_WRITE)
			c->genmap[io->block] = 0; /* contents unknown now */
		job_fail(c, res, "job %s: %s at offset %" PRIu64 " length %u failed: %s",
			 c->o->name, io->ddir == BENCH_READ ? "read" : "write", io->offset, io->len,
			 res == -ENODATA ? "short transfer (past the end of the target?)" :
					   strerror(-res));
		goto out;
	}
	if (io->ddir == BENCH_READ && io->vmode) {
		char msg[256];

		c->verified++;
		if (bench_verify_check(io->buf, io->len, io->offset, io->vmode == 2 ? io->gen : 0,
				       msg, sizeof(msg))) {
			c->verify_errors++;
			if (c->verify_msgs++ < MAX_VERIFY_MSGS)
				fprintf(stderr, "tessera-bench: verify failed: job %s: %s\n",
					c->o->name, msg);
		}
	}
	if (io->counted) {
		bench_hist_add(&s->clat, now - io->submit_ns);
		bench_hist_add(&s->lat, now - io->issue_ns);
		s->ios++;
		s->bytes += io->len;
		if (!io->verify_phase)
			c->dir_used[io->ddir] = true;
		atomic_store_explicit(&c->job->live_ios[io->ddir], s->ios, memory_order_relaxed);
		atomic_store_explicit(&c->job->live_bytes[io->ddir], s->bytes,
				      memory_order_relaxed);
	}
out:
	c->free_slots[c->n_free++] = io->slot;
}

/* Queue one I/O on block of direction d.  0 or -errno (job failed). */
static int issue(struct job_ctx *c, enum bench_ddir d, uint64_t block, uint8_t vmode,
		 bool verify_phase, uint64_t now)
{
	uint32_t slot = c->free_slots[--c->n_free];
	struct bench_io *io = &c->ios[slot];
	int ret;

	io->ddir = (uint8_t)d;
	io->block = block;
	io->offset = c->region_off + block * c->bs;
	io->len = c->bs;
	io->buf = (char *)c->bufs + (d == BENCH_READ ? c->buf_len / 2 : 0) + (size_t)slot * c->bs;
	io->counted = c->counting;
	io->verify_phase = verify_phase;
	io->vmode = 0;
	io->gen = 0;
	if (c->genmap) {
		if (d == BENCH_WRITE) {
			io->gen = c->next_gen;
			c->next_gen = (c->next_gen + 1) & GEN_MASK;
			if (c->next_gen == 0)
				c->next_gen = 1;
			bench_verify_fill(io->buf, c->bs, io->offset, io->gen, c->job->seed);
			c->genmap[block] = io->gen | GEN_BUSY;
		} else {
			io->gen = c->genmap[block] & GEN_MASK;
			io->vmode = vmode ? vmode : (io->gen ? 2 : 0);
			c->genmap[block] |= GEN_BUSY;
		}
	} else {
		io->vmode = vmode;
	}
	io->issue_ns = now;
	io->submit_ns = now;
	c->inflight++;
	ret = c->eng->queue(c->t, io);
	if (ret) {
		c->inflight--;
		if (c->genmap)
			c->genmap[block] &= ~GEN_BUSY;
		c->free_slots[c->n_free++] = slot;
		job_fail(c, ret, "job %s: cannot queue %s at offset %" PRIu64 ": %s", c->o->name,
			 d == BENCH_READ ? "read" : "write", io->offset,
			 c->eng->strerror && c->eng->strerror(c->t) ? c->eng->strerror(c->t) :
								      strerror(-ret));
		return ret;
	}
	/* fio's clat starts once the I/O is handed over: after the send for
	 * engines that send in queue(), after submit() for the others */
	if (c->eng->queue_sends)
		io->submit_ns = tsr_mono_ns();
	c->batch[c->n_batch++] = io;
	return 0;
}

/* Send the pass's batch and stamp when it left. */
static int submit_batch(struct job_ctx *c)
{
	int ret = 0;

	if (c->n_batch == 0)
		return 0;
	ret = c->eng->submit(c->t);
	if (ret) {
		job_fail(c, ret, "job %s: submit failed: %s", c->o->name,
			 c->eng->strerror && c->eng->strerror(c->t) ? c->eng->strerror(c->t) :
								      strerror(-ret));
	} else if (!c->eng->queue_sends) {
		uint64_t now = tsr_mono_ns();

		for (unsigned i = 0; i < c->n_batch; i++)
			c->batch[i]->submit_ns = now;
	}
	c->n_batch = 0;
	return ret;
}

static int reap(struct job_ctx *c)
{
	int ret = c->eng->reap(c->t);

	if (ret)
		job_fail(c, ret, "job %s: waiting for completions failed: %s", c->o->name,
			 c->eng->strerror && c->eng->strerror(c->t) ? c->eng->strerror(c->t) :
								      strerror(-ret));
	return ret;
}

static bool stopping(struct job_ctx *c)
{
	return c->error || atomic_load_explicit(&c->run->stop, memory_order_relaxed);
}

/* The timed phase (ramp included).  Returns when nothing is in flight. */
static void run_main(struct job_ctx *c, uint64_t *count_start, uint64_t *count_end)
{
	const struct bench_opts *o = c->o;
	uint64_t start = tsr_mono_ns(), now = start;
	uint64_t ramp_end = start + o->ramp_ns, deadline = UINT64_MAX;
	unsigned tries;

	c->counting = o->ramp_ns == 0;
	if (c->counting) {
		*count_start = start;
		deadline = o->runtime_ns ? start + o->runtime_ns : UINT64_MAX;
		atomic_store(&c->job->count_start_ns, start);
		atomic_store(&c->job->state, BENCH_JOB_RUNNING);
	} else {
		atomic_store(&c->job->state, BENCH_JOB_RAMP);
	}
	for (;;) {
		if (!c->counting && now >= ramp_end) {
			c->counting = true;
			c->issued_bytes = 0;
			*count_start = now;
			deadline = o->runtime_ns ? now + o->runtime_ns : UINT64_MAX;
			atomic_store(&c->job->count_start_ns, now);
			atomic_store(&c->job->state, BENCH_JOB_RUNNING);
		}
		for (tries = 0; c->n_free && !stopping(c) && now < deadline &&
				(!c->counting || o->time_based || c->issued_bytes < c->limit_bytes);) {
			enum bench_ddir d;
			uint64_t block;

			bench_workload_next(&c->wl, &d, &block);
			if (c->genmap && (c->genmap[block] & GEN_BUSY)) {
				/* never overlap I/O on one block: the check could not
				 * tell which write a read saw */
				if (++tries > 8)
					break;
				continue;
			}
			if (issue(c, d, block, o->rw == BENCH_RW_READ || o->rw == BENCH_RW_RANDREAD ?
						       (o->verify ? 1 : 0) : 0,
				  false, now))
				break;
			c->issued_bytes += c->bs;
			atomic_store_explicit(&c->job->live_issued_bytes, c->issued_bytes,
					      memory_order_relaxed);
		}
		submit_batch(c);
		if (c->inflight == 0) {
			if (stopping(c) || now >= deadline ||
			    (c->counting && !o->time_based && c->issued_bytes >= c->limit_bytes))
				break;
			now = tsr_mono_ns();
			continue;
		}
		if (reap(c))
			break;
		now = tsr_mono_ns();
	}
	*count_end = tsr_mono_ns();
	if (*count_start == 0)
		*count_start = *count_end; /* stopped during the ramp */
}

/* Read back every block the job wrote and check it.  Returns the time spent. */
static uint64_t run_verify(struct job_ctx *c)
{
	uint64_t start = tsr_mono_ns(), block = 0;

	atomic_store(&c->job->state, BENCH_JOB_VERIFYING);
	c->counting = true;
	for (;;) {
		while (c->n_free && block < c->nblocks && !stopping(c)) {
			if ((c->genmap[block] & GEN_MASK) == 0) {
				block++;
				continue;
			}
			if (issue(c, BENCH_READ, block, 2, true, tsr_mono_ns()))
				break;
			block++;
		}
		submit_batch(c);
		if (c->inflight == 0 && (block >= c->nblocks || stopping(c)))
			break;
		if (c->inflight && reap(c))
			break;
	}
	return tsr_mono_ns() - start;
}

/* Work out this clone's region from the target's size.  0 or -EINVAL. */
static int plan_region(struct job_ctx *c, uint64_t tsize)
{
	const struct bench_opts *o = c->o;
	uint64_t off = o->offset, size = o->size;

	if (o->offset_pct) {
		off = tsize / 100 * o->offset_pct;
		off -= off % 4096;
	}
	if (off >= tsize) {
		job_fail(c, -EINVAL, "job %s: offset %" PRIu64 " is past the end of %s (%" PRIu64
			 " bytes)", o->name, off, o->filename, tsize);
		return -EINVAL;
	}
	if (o->size_pct)
		size = (tsize - off) / 100 * o->size_pct;
	else if (size == 0)
		size = tsize - off;
	if (off + size > tsize) {
		job_fail(c, -EINVAL, "job %s: offset+size (%" PRIu64 ") is past the end of %s (%"
			 PRIu64 " bytes); lower --size or --offset", o->name, off + size,
			 o->filename, tsize);
		return -EINVAL;
	}
	/* verify needs each block to have one writer: clones split the region */
	if (o->verify != BENCH_VERIFY_NONE && o->numjobs > 1) {
		size = size / o->numjobs / o->bs * o->bs;
		off += size * c->job->clone;
	}
	c->region_off = off;
	c->nblocks = size / o->bs;
	if (c->nblocks == 0) {
		job_fail(c, -EINVAL, "job %s: the region (%" PRIu64 " bytes) holds no block of bs=%"
			 PRIu64, o->name, size, o->bs);
		return -EINVAL;
	}
	c->limit_bytes = c->nblocks * o->bs;
	atomic_store(&c->job->live_limit_bytes, c->limit_bytes);
	return 0;
}

static int setup(struct job_ctx *c)
{
	const struct bench_opts *o = c->o;
	unsigned depth = o->iodepth;
	uint64_t tsize = 0, min_size = 0;
	char err[512];
	int ret;

	c->bs = (uint32_t)o->bs;
	c->buf_len = 2 * (size_t)depth * c->bs;
	c->bufs = tsr_alloc_aligned(c->buf_len);
	c->ios = calloc(depth, sizeof(*c->ios));
	c->free_slots = calloc(depth, sizeof(*c->free_slots));
	c->batch = calloc(depth, sizeof(*c->batch));
	if (!c->bufs || !c->ios || !c->free_slots || !c->batch) {
		job_fail(c, -ENOMEM, "job %s: out of memory for %u buffers of %u bytes", o->name,
			 depth, c->bs);
		return -ENOMEM;
	}
	/* random contents, so that nothing on the way can compress or skip zeros */
	{
		struct bench_rand r;
		uint64_t *p = c->bufs;

		bench_rand_seed(&r, c->job->seed);
		for (size_t i = 0; i < c->buf_len / 8; i++)
			p[i] = bench_rand_next(&r);
	}
	for (unsigned i = 0; i < depth; i++) {
		c->ios[i].slot = i;
		c->free_slots[c->n_free++] = depth - 1 - i;
	}
	if (!o->offset_pct && !o->size_pct && o->size)
		min_size = o->offset + o->size;
	ret = c->eng->open(&c->t, o->filename, depth, c->bufs, c->buf_len, min_size, &tsize,
			   io_complete, c, err, sizeof(err));
	if (ret) {
		job_fail(c, ret, "%s", err);
		return ret;
	}
	if (tsize == 0) {
		job_fail(c, -EINVAL, "job %s: %s is empty; give --size to create or use a size",
			 o->name, o->filename);
		return -EINVAL;
	}
	ret = plan_region(c, tsize);
	if (ret)
		return ret;
	if (o->verify != BENCH_VERIFY_NONE) {
		if (c->nblocks > MAX_VERIFY_BLOCKS) {
			job_fail(c, -E2BIG, "job %s: verify tracks at most %llu blocks per job; the "
				 "region has %" PRIu64 "; lower --size or raise --bs", o->name,
				 MAX_VERIFY_BLOCKS, c->nblocks);
			return -E2BIG;
		}
		c->genmap = calloc(c->nblocks, sizeof(*c->genmap));
		if (c->genmap == NULL) {
			job_fail(c, -ENOMEM, "job %s: out of memory for the verify map", o->name);
			return -ENOMEM;
		}
		c->next_gen = 1;
	}
	bench_workload_init(&c->wl, o->rw, o->rwmixread, c->nblocks, o->norandommap, c->job->seed);
	return 0;
}

static void cleanup(struct job_ctx *c)
{
	if (c->t)
		c->eng->close(c->t);
	free(c->genmap);
	free(c->batch);
	free(c->free_slots);
	free(c->ios);
	tsr_free_aligned(c->bufs);
}

static uint64_t tv_ns(const struct timeval *tv)
{
	return (uint64_t)tv->tv_sec * 1000000000ull + (uint64_t)tv->tv_usec * 1000ull;
}

void *bench_job_thread(void *arg)
{
	struct bench_job_arg *a = arg;
	struct bench_job *job = a->job;
	struct job_ctx c = { .job = job, .run = a->run, .eng = job->engine, .o = &job->opts };
	struct bench_result *r = &job->result;
	struct rusage ru0, ru1;
	uint64_t t0, count_start = 0, count_end = 0, verify_ns = 0;

	if (setup(&c)) {
		job->setup_failed = true;
		atomic_store(&a->run->abort, 1);
	}
	pthread_barrier_wait(a->run->start);
	if (atomic_load(&a->run->abort))
		goto out;
	getrusage(RUSAGE_THREAD, &ru0);
	t0 = tsr_mono_ns();
	run_main(&c, &count_start, &count_end);
	for (int d = 0; d < BENCH_NDDIR; d++)
		if (c.dir_used[d])
			r->dir[d].runtime_ns = count_end - count_start;
	if (c.genmap && c.o->do_verify && bench_rw_has(c.o->rw, BENCH_WRITE) && !stopping(&c)) {
		verify_ns = run_verify(&c);
		r->dir[BENCH_READ].runtime_ns += verify_ns;
	}
	getrusage(RUSAGE_THREAD, &ru1);
	r->elapsed_ns = tsr_mono_ns() - t0;
	if (r->elapsed_ns) {
		r->usr_cpu = 100.0 * (double)(tv_ns(&ru1.ru_utime) - tv_ns(&ru0.ru_utime)) /
			     (double)r->elapsed_ns;
		r->sys_cpu = 100.0 * (double)(tv_ns(&ru1.ru_stime) - tv_ns(&ru0.ru_stime)) /
			     (double)r->elapsed_ns;
	}
	r->ctx = (uint64_t)(ru1.ru_nvcsw - ru0.ru_nvcsw + ru1.ru_nivcsw - ru0.ru_nivcsw);
out:
	r->error = -c.error;
	r->verify_errors = c.verify_errors;
	r->verified_blocks = c.verified;
	atomic_store(&job->state, BENCH_JOB_DONE);
	cleanup(&c);
	return NULL;
}
