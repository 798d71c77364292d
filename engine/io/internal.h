/*
 * Private header of the I/O backend layer (engine/io/).  Only files in this
 * folder include it; callers use include/tessera/io.h, backends fill the
 * table of include/tessera/io_backend.h.
 */
#ifndef TSR_IO_INTERNAL_H
#define TSR_IO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tessera/io_backend.h"

#ifndef container_of
#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))
#endif

/* Largest queue depth a context accepts (io_uring's IORING_MAX_ENTRIES). */
#define IO_MAX_QUEUE_DEPTH 32768u
#define IO_DEFAULT_QUEUE_DEPTH 256u

/*
 * Every struct tsr_io_req handed to a backend is the first part of an
 * io_req_hook: tsr_io_req_complete() calls hook->done, so that whoever
 * queued the request (the core, or the fault injector queueing into its inner
 * backend) receives its completion.
 */
struct io_req_hook {
	struct tsr_io_req req;  /* what the backend sees; must stay first */
	/* Receives the completion; called from the backend's reap(). */
	void (*done)(struct io_req_hook *hook, int res);
	/*
	 * True when this queue() carries the remainder of a short transfer
	 * the core is resuming, not a new operation (the fault injector does
	 * not count or fault it).
	 */
	bool resumed;
};

static inline struct io_req_hook *io_req_hook_of(struct tsr_io_req *req)
{
	return container_of(req, struct io_req_hook, req);
}

/* Bytes described by an iovec array (the caller has bounded iovcnt). */
static inline size_t io_iov_length(const struct iovec *iov, int iovcnt)
{
	size_t len = 0;

	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	return len;
}

/* ---- io.c: the core wrapper ---------------------------------------------- */

/* The backend table and context behind io (for tsr_io_fault_count). */
const struct tsr_io_backend *io_backend_of(const struct tsr_io *io);
void *io_backend_ctx(const struct tsr_io *io);

/* ---- io_fault.c: the fault injector -------------------------------------- */

/* Check a fault spec (io.h grammar): 0 or -EINVAL, logging the bad token. */
int fault_spec_validate(const char *spec);

#endif
