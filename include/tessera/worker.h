/*
 * Tessera worker threads: a small fixed number of threads, each with its own
 * epoll loop and its own struct tsr_io, owning the connections handed to it
 * (shared-nothing: no lock per I/O).  One loop pass: wait for fd events and
 * I/O completions, run their callbacks, then submit all queued I/O at once.
 * Other threads talk to a worker only through tsr_worker_send().
 */
#ifndef TESSERA_WORKER_H
#define TESSERA_WORKER_H

#include <stdint.h>
#include "tessera/io.h"

struct tsr_worker;

typedef void (*tsr_worker_fd_cb)(void *arg, uint32_t epoll_events);
typedef void (*tsr_worker_msg_fn)(struct tsr_worker *w, void *arg);

/* Start worker number index (its thread is named "worker<index>").
 * Errors: from tsr_io_create, -ENOMEM, -EAGAIN (thread). */
int tsr_worker_start(unsigned index, const struct tsr_io_opts *io_opts,
		     struct tsr_worker **out);
/* Ask the loop to end, join the thread, free.  NULL ok.  Messages still queued
 * are run first; fds still watched are the owners' business (they are told
 * through their stop hook, see tsr_worker_on_stop). */
void tsr_worker_stop(struct tsr_worker *w);

/* Only from the worker's own thread: */
struct tsr_io *tsr_worker_io(struct tsr_worker *w);
int tsr_worker_watch(struct tsr_worker *w, int fd, uint32_t events, tsr_worker_fd_cb cb,
		     void *arg);
int tsr_worker_modify(struct tsr_worker *w, int fd, uint32_t events);
int tsr_worker_unwatch(struct tsr_worker *w, int fd);
/* Register a function run when the worker stops (close connections).  */
int tsr_worker_on_stop(struct tsr_worker *w, tsr_worker_msg_fn fn, void *arg);
/*
 * Run fn(w, arg) once at the end of the current loop pass, after fd events,
 * completions and messages, just before the pass submits its queued I/O (so
 * work produced by many completions, such as socket replies, is batched).
 * No lock.  0 or -ENOMEM.
 */
int tsr_worker_defer(struct tsr_worker *w, tsr_worker_msg_fn fn, void *arg);
/*
 * Run fn(w, arg) once in the current loop pass after it submitted its queued
 * I/O (after every tsr_worker_defer call), for work the pass's disk I/O need
 * not wait for (the site source's TLS send); in order, including calls queued
 * by these calls; I/O they queue is submitted before the pass ends.  No lock.
 * 0 or -ENOMEM.
 */
int tsr_worker_defer_after_submit(struct tsr_worker *w, tsr_worker_msg_fn fn, void *arg);

/* From any thread: run fn(w, arg) on the worker's thread soon. 0 or -ENOMEM/-ESHUTDOWN. */
int tsr_worker_send(struct tsr_worker *w, tsr_worker_msg_fn fn, void *arg);
/*
 * From a thread of its own: tsr_worker_send, tried again on -ENOMEM every
 * 1 ms, every 10 ms after 1 s (one WARN naming what), until 0 or -ESHUTDOWN;
 * -ENOMEM when *give_up (may be NULL) reads true after a failed try.
 * fake_enomem (tests): that many first tries fail with -ENOMEM.
 */
int tsr_worker_send_retry(struct tsr_worker *w, tsr_worker_msg_fn fn, void *arg,
			  const bool *give_up, unsigned fake_enomem, const char *what);

unsigned tsr_worker_index(const struct tsr_worker *w);

#endif
