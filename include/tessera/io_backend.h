/*
 * Tessera I/O backend implementer interface.  io_uring (engine/io/io_uring.c),
 * libaio (engine/io/io_aio.c) and the fault injector (engine/io/io_fault.c)
 * each fill one static const struct tsr_io_backend.  Only engine/io/io.c
 * calls through the table; everything else uses include/tessera/io.h.
 */
#ifndef TESSERA_IO_BACKEND_H
#define TESSERA_IO_BACKEND_H

#include "tessera/io.h"

enum tsr_io_op { TSR_IO_OP_READ, TSR_IO_OP_WRITE, TSR_IO_OP_FSYNC, TSR_IO_OP_FDATASYNC };

/*
 * One operation as the backend sees it.  Owned by the core (io.c); the
 * backend must call tsr_io_req_complete() exactly once for every request its
 * queue() accepted (returned 0), from inside its reap().
 */
struct tsr_io_req {
	enum tsr_io_op op;
	int fd;
	unsigned flags;          /* TSR_IO_FUA */
	const struct iovec *iov; /* the part still to transfer */
	int iovcnt;
	uint64_t offset;
	void *backend_data;      /* free for the backend's use */
	/* core-private fields follow in io.c's wrapper struct */
};

struct tsr_io_backend {
	const char *name;
	/* Set up a context; *ctx_out is passed to every other op. */
	int (*create)(const struct tsr_io_opts *opts, void **ctx_out);
	/* Tear down; in-flight requests have been reaped by the core first. */
	void (*destroy)(void *ctx);
	/* Queue one request (not yet submitted).  0 or -errno (then never completes). */
	int (*queue)(void *ctx, struct tsr_io_req *req);
	/* Submit queued requests.  Count or -errno. */
	int (*submit)(void *ctx);
	/* Reap up to max (0 = all ready) completions; wait: block for at least one. */
	int (*reap)(void *ctx, unsigned max, bool wait);
	/* eventfd signalled on completion (see completions_ready). */
	int (*event_fd)(void *ctx);
	/*
	 * May be NULL (= false).  True when a read of a buffered (not O_DIRECT)
	 * fd that misses the page cache still leaves queue() and submit() at
	 * once and completes later from reap(): io_uring (the kernel waits for
	 * the page in its own context).  libaio leaves it NULL: io_submit of a
	 * buffered fd reads synchronously, blocking the caller's loop.
	 */
	bool (*buffered_reads_async)(void *ctx);
	/*
	 * May be NULL (= false: the eventfd is signalled for every
	 * completion).  True when reap() would complete something now, a
	 * check in user space.  A backend whose eventfd is not signalled for
	 * some completions sets it: io_uring when its completions interrupt
	 * the owner's sleep instead (task work, see io_uring.c); they may also
	 * be posted during any system call of the owner, so its loop checks
	 * this before it blocks.
	 */
	bool (*completions_ready)(void *ctx);
};

/* Called by a backend from reap(): res is bytes transferred or -errno. */
void tsr_io_req_complete(struct tsr_io_req *req, int res);

extern const struct tsr_io_backend tsr_io_uring_backend;
extern const struct tsr_io_backend tsr_io_aio_backend;

/*
 * The fault injector wraps another backend: create() receives the inner
 * backend through this helper instead of the table's create.
 */
int tsr_io_fault_create(const struct tsr_io_backend *inner,
			const struct tsr_io_opts *opts, void **ctx_out);
extern const struct tsr_io_backend tsr_io_fault_backend;

#endif
