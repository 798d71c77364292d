/*
 * File and block device targets through io_uring, O_DIRECT.  One ring per
 * job thread; queue() only fills SQEs, submit() enters the kernel once for
 * the whole batch, reap() waits for one completion and then drains every
 * CQE that is ready.  The job's buffers and the file are registered with
 * the ring when the kernel allows, so no I/O pins pages or looks up the fd.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <liburing.h>

#include "bench.h"

struct bench_target {
	struct io_uring ring;
	bool ring_ready;
	int fd;
	bool fixed_file;          /* fd registered: sqe uses index 0 */
	bool fixed_bufs;          /* buffers registered as index 0 */
	void *bufs;               /* registered region */
	size_t buf_len;
	unsigned queued;          /* SQEs prepared and not yet submitted */
	unsigned inflight;        /* submitted, completion not yet run */
	bench_complete_fn cb_fn;
	void *cb_arg;
	char errbuf[256];
};

static void uring_close(struct bench_target *t)
{
	if (t == NULL)
		return;
	if (t->ring_ready)
		io_uring_queue_exit(&t->ring);
	if (t->fd >= 0)
		close(t->fd);
	free(t);
}

static int uring_setup(struct bench_target *t, unsigned depth)
{
	struct io_uring_params p;
	int ret;

	/* the ring is used by one thread only: let the kernel skip its locking
	 * and run completions when we wait (6.1+); plain ring otherwise */
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	ret = io_uring_queue_init_params(depth, &t->ring, &p);
	if (ret == -EINVAL) {
		memset(&p, 0, sizeof(p));
		ret = io_uring_queue_init_params(depth, &t->ring, &p);
	}
	return ret;
}

static int uring_open(struct bench_target **tp, const char *filename, unsigned depth, void *bufs,
		      size_t buf_len, uint64_t min_size, uint64_t *size, bench_complete_fn cb_fn,
		      void *cb_arg, char *err, size_t errlen)
{
	struct bench_target *t = calloc(1, sizeof(*t));
	struct stat st;
	struct iovec iov;
	int ret;

	if (t == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	t->fd = -1;
	t->cb_fn = cb_fn;
	t->cb_arg = cb_arg;
	t->bufs = bufs;
	t->buf_len = buf_len;
	t->fd = open(filename, O_RDWR | O_DIRECT | O_CREAT, 0644);
	if (t->fd < 0) {
		ret = -errno;
		if (ret == -EINVAL)
			snprintf(err, errlen,
				 "cannot open %s with O_DIRECT: the filesystem does not support "
				 "it (tmpfs does not); use a file on a disk filesystem", filename);
		else
			snprintf(err, errlen, "cannot open %s: %s", filename, strerror(-ret));
		goto err;
	}
	if (fstat(t->fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot stat %s: %s", filename, strerror(-ret));
		goto err;
	}
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(t->fd, BLKGETSIZE64, size) < 0) {
			ret = -errno;
			snprintf(err, errlen, "cannot get the size of %s: %s", filename,
				 strerror(-ret));
			goto err;
		}
	} else if (S_ISREG(st.st_mode)) {
		*size = (uint64_t)st.st_size;
		if (*size < min_size) {
			/* as fio does, lay out a missing or short file before the run */
			ret = posix_fallocate(t->fd, 0, (off_t)min_size);
			if (ret == EOPNOTSUPP || ret == EINVAL)
				ret = ftruncate(t->fd, (off_t)min_size) < 0 ? errno : 0;
			if (ret) {
				snprintf(err, errlen, "cannot extend %s to %llu bytes: %s", filename,
					 (unsigned long long)min_size, strerror(ret));
				ret = -ret;
				goto err;
			}
			*size = min_size;
		}
	} else {
		ret = -EINVAL;
		snprintf(err, errlen, "%s is neither a regular file nor a block device", filename);
		goto err;
	}
	ret = uring_setup(t, depth);
	if (ret) {
		snprintf(err, errlen,
			 "cannot set up io_uring (%s): the kernel, a seccomp profile or "
			 "kernel.io_uring_disabled blocks it", strerror(-ret));
		goto err;
	}
	t->ring_ready = true;
	if (io_uring_register_files(&t->ring, &t->fd, 1) == 0)
		t->fixed_file = true;
	iov.iov_base = bufs;
	iov.iov_len = buf_len;
	if (buf_len <= 1024u * 1024 * 1024 && io_uring_register_buffers(&t->ring, &iov, 1) == 0)
		t->fixed_bufs = true;
	*tp = t;
	return 0;
err:
	uring_close(t);
	return ret;
}

static int uring_queue(struct bench_target *t, struct bench_io *io)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);
	int fd = t->fixed_file ? 0 : t->fd;

	if (sqe == NULL)
		return -EBUSY;
	if (io->ddir == BENCH_READ) {
		if (t->fixed_bufs)
			io_uring_prep_read_fixed(sqe, fd, io->buf, io->len, io->offset, 0);
		else
			io_uring_prep_read(sqe, fd, io->buf, io->len, io->offset);
	} else {
		if (t->fixed_bufs)
			io_uring_prep_write_fixed(sqe, fd, io->buf, io->len, io->offset, 0);
		else
			io_uring_prep_write(sqe, fd, io->buf, io->len, io->offset);
	}
	if (t->fixed_file)
		sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, io);
	t->queued++;
	return 0;
}

static int uring_submit(struct bench_target *t)
{
	int ret;

	while (t->queued) {
		ret = io_uring_submit(&t->ring);
		if (ret == -EINTR || ret == -EAGAIN)
			continue;
		if (ret < 0) {
			snprintf(t->errbuf, sizeof(t->errbuf), "io_uring_submit: %s", strerror(-ret));
			return ret;
		}
		t->queued -= (unsigned)ret;
		t->inflight += (unsigned)ret;
	}
	return 0;
}

static int uring_reap(struct bench_target *t)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int ret;

	if (t->inflight == 0)
		return 0;
	do {
		ret = io_uring_wait_cqe(&t->ring, &cqe);
	} while (ret == -EINTR);
	if (ret < 0) {
		snprintf(t->errbuf, sizeof(t->errbuf), "io_uring_wait_cqe: %s", strerror(-ret));
		return ret;
	}
	io_uring_for_each_cqe(&t->ring, head, cqe) {
		struct bench_io *io = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		n++;
		if (res >= 0 && (uint32_t)res != io->len)
			res = -ENODATA; /* short transfer: past the end of the file */
		else if (res > 0)
			res = 0;
		t->cb_fn(t->cb_arg, io, res);
	}
	io_uring_cq_advance(&t->ring, n);
	t->inflight -= n;
	return 0;
}

static const char *uring_strerror(struct bench_target *t)
{
	return t->errbuf[0] ? t->errbuf : NULL;
}

const struct bench_engine bench_engine_uring = {
	.name = "io_uring",
	.open = uring_open,
	.queue = uring_queue,
	.submit = uring_submit,
	.reap = uring_reap,
	.strerror = uring_strerror,
	.close = uring_close,
};
