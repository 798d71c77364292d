/*
 * Tessera I/O backend: the lowest layer of the data path (DESIGN.md layer 6).
 *
 * A struct tsr_io is one asynchronous I/O context (one io_uring, or one libaio
 * context) owned by exactly one thread.  Callers queue operations, submit them
 * once per loop pass with tsr_io_submit(), and reap completions with
 * tsr_io_poll(), which runs the callbacks on the owning thread.
 *
 * Async contract (every queueing function below): returns 0 and cb_fn fires
 * exactly once, later, from tsr_io_poll(); or returns -errno and cb_fn never
 * fires.  The result passed to cb_fn is the number of bytes transferred (always
 * the full length: short transfers are resumed by the core wrapper) or -errno.
 *
 * Callers use this header; backends implement include/tessera/io_backend.h.
 */
#ifndef TESSERA_IO_H
#define TESSERA_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

struct tsr_io;

/* res: bytes transferred (>= 0) or -errno. */
typedef void (*tsr_io_cb)(void *cb_arg, int res);

enum tsr_io_kind {
	TSR_IO_AUTO = 0, /* io_uring, falling back to libaio when it cannot be set up */
	TSR_IO_URING,
	TSR_IO_AIO,
};

struct tsr_io_opts {
	enum tsr_io_kind kind;
	unsigned queue_depth; /* max operations in flight; 0 = default (256) */
	/*
	 * Fault injection spec (NULL = none), wraps the chosen backend.  Grammar:
	 *   RULE[,RULE...]   RULE := OP:N:ACTION
	 *   OP     := read | write | fsync | fdatasync | any
	 *             (fsync counts fsyncs and fdatasyncs, fdatasync only these)
	 *   N      := the Nth operation of that OP (1-based) counted from creation;
	 *             "N+" means the Nth and every later one
	 *   ACTION := fail=ERRNO_NAME_OR_NUMBER (e.g. fail=EIO)
	 *           | short=BYTES   (transfer only BYTES, report it: core resumes)
	 *           | delay=MS      (complete normally after MS milliseconds)
	 *           | tear=BYTES    (write only the first BYTES, then report -EIO)
	 * Example: "write:3:fail=EIO,read:1+:delay=5".
	 */
	const char *fault_spec;
	/*
	 * The owner's epoll loop calls tsr_io_completions_ready() before every
	 * sleep, so the backend may leave its eventfd unsignalled for the
	 * completions that end the owner's sleep by themselves (io_uring: the
	 * disk completions' task work, registered async).  False (default):
	 * the eventfd is signalled for every completion.
	 */
	bool lazy_event_fd;
};

/* Flags for tsr_io_writev(). */
#define TSR_IO_FUA 0x1u /* durable before completion (RWF_DSYNC) */

/*
 * Create an I/O context for the calling thread.
 * Errors: -EINVAL bad opts or fault spec; -ENOSYS/-EPERM/-ENOMEM when the
 * requested backend cannot be set up (TSR_IO_AUTO then tries libaio).
 */
int tsr_io_create(const struct tsr_io_opts *opts, struct tsr_io **out);
void tsr_io_destroy(struct tsr_io *io); /* waits for in-flight ops; NULL ok */

/* "io_uring", "libaio", "fault(io_uring)"... for logs and status. */
const char *tsr_io_name(const struct tsr_io *io);

/*
 * Queue a vectored read/write/fsync of fd.  iov must stay valid until cb_fn.
 * For O_DIRECT fds, buffers, offsets and lengths must be 4096-aligned.
 * Errors: -EINVAL bad arguments; -EAGAIN queue full (call tsr_io_poll first).
 */
int tsr_io_readv(struct tsr_io *io, int fd, const struct iovec *iov, int iovcnt,
		 uint64_t offset, tsr_io_cb cb_fn, void *cb_arg);
int tsr_io_writev(struct tsr_io *io, int fd, const struct iovec *iov, int iovcnt,
		  uint64_t offset, unsigned flags, tsr_io_cb cb_fn, void *cb_arg);
int tsr_io_fsync(struct tsr_io *io, int fd, bool datasync, tsr_io_cb cb_fn,
		 void *cb_arg);

/*
 * Whether io reads buffered (page-cache) fds without blocking its thread: a
 * cache miss completes later from tsr_io_poll like any read.  True for
 * io_uring (and a fault injector around it), false for libaio, whose
 * io_submit reads a buffered fd synchronously.  Callers that may read a
 * buffered fd on an event loop (the store's host reads) ask first.
 */
bool tsr_io_buffered_reads_async(const struct tsr_io *io);

/* Submit everything queued since the last call.  Returns count or -errno. */
int tsr_io_submit(struct tsr_io *io);

/*
 * Reap up to max completions (0 = all ready), running their callbacks.
 * wait: block until at least one completes (if any are in flight).
 * Returns the number of callbacks run, or -errno.
 */
int tsr_io_poll(struct tsr_io *io, unsigned max, bool wait);

/* Operations queued or in flight (not yet called back). */
unsigned tsr_io_inflight(const struct tsr_io *io);
/* Operations queued since the last tsr_io_submit() (0: nothing to submit). */
unsigned tsr_io_unsubmitted(const struct tsr_io *io);

/*
 * A file descriptor that becomes readable when completions may be ready, for
 * the owner's epoll loop (an eventfd; read and discard its counter before
 * tsr_io_poll); with opts.lazy_event_fd not for every completion (see
 * tsr_io_completions_ready).  Always valid for the lifetime of io.
 */
int tsr_io_event_fd(const struct tsr_io *io);

/*
 * True when tsr_io_poll(io, 0, false) would run a callback now (checked in
 * user space; false when the backend cannot tell, then its eventfd is
 * signalled for every completion).  With opts.lazy_event_fd an epoll loop
 * must check it before it blocks: the io_uring backend then signals its
 * eventfd only for completions of io-wq workers; the others interrupt the
 * owning thread's sleep (epoll_wait returns EINTR) or are posted during any
 * of its system calls.
 */
bool tsr_io_completions_ready(const struct tsr_io *io);

/*
 * Number of faults the fault injector has injected so far (each failed,
 * shortened, delayed or torn operation counts once); 0 for a context created
 * without fault_spec.
 */
int tsr_io_fault_count(const struct tsr_io *io);

#endif
