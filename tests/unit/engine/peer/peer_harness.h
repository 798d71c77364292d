/*
 * The peer unit tests' harness (peer_ut.c, peer_offload_ut.c): a replica
 * worker (sw) serving a real store through the peer server, a coordinator
 * worker (cw) for the clients, a listener on 127.0.0.1 whose connections
 * an acceptor thread hands to sw; fn run on the client worker from the
 * test's thread.  Include after <cmocka.h> and "../store/store_test.h".
 */
#ifndef TSR_TEST_PEER_HARNESS_H
#define TSR_TEST_PEER_HARNESS_H

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tessera/peer.h"
#include "tessera/worker.h"

#define TOKEN "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

struct env {
	char dir[512];
	char hold[600]; /* peer_offload_ut: the file of $TSR_TEST_PEER_SNAP_HOLD_FILE */
	struct tsr_store *store;
	struct tsr_peer_server *srv;
	struct tsr_worker *sw, *cw; /* server worker, client worker */
	int lfd;                    /* listening socket */
	int port;
	pthread_t acceptor;
};

static struct env *g_env;

static inline struct tsr_worker *start_worker(unsigned index, const char *fault)
{
	struct tsr_io_opts o = { .kind = TSR_IO_AUTO, .fault_spec = fault };
	struct tsr_worker *w = NULL;
	int ret = tsr_worker_start(index, &o, &w);

	if (ret == -ENOSYS || ret == -EPERM) {
		print_message("no I/O backend available: %s\n", strerror(-ret));
		exit(77);
	}
	assert_int_equal(ret, 0);
	return w;
}

struct conn_msg {
	struct env *e;
	int fd;
};

static inline void start_conn(struct tsr_worker *w, void *arg)
{
	struct conn_msg *m = arg;

	tsr_peer_conn_start(m->e->srv, w, m->fd);
	free(m);
}

static inline void *acceptor_main(void *arg)
{
	struct env *e = arg;

	for (;;) {
		int fd = accept(e->lfd, NULL, NULL);
		struct conn_msg *m;

		if (fd < 0)
			return NULL; /* shutdown */
		m = malloc(sizeof(*m));
		m->e = e;
		m->fd = fd;
		if (tsr_worker_send(e->sw, start_conn, m) < 0) {
			close(fd);
			free(m);
		}
	}
}

static inline int listen_any(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;

	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 64), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* e->store open, its volumes made: the peer server on it, the workers (the
 * server's with the io fault spec fault, or NULL), the listener and its
 * acceptor; g_env is e.  0, or -1. */
static inline int peer_env_start(struct env *e, const char *fault)
{
	struct tsr_peer_server_opts so = { .token = TOKEN, .node_id = "replica" };

	so.store = e->store;
	if (tsr_peer_server_create(&so, &e->srv))
		return -1;
	e->sw = start_worker(0, fault); /* every connection on this one worker */
	e->cw = start_worker(1, NULL);
	e->lfd = listen_any(&e->port);
	pthread_create(&e->acceptor, NULL, acceptor_main, e);
	g_env = e;
	return 0;
}

/* All of peer_env_start undone, the store closed, e->dir removed, e freed. */
static inline void peer_env_stop(struct env *e)
{
	shutdown(e->lfd, SHUT_RDWR);
	pthread_join(e->acceptor, NULL);
	close(e->lfd);
	tsr_worker_stop(e->cw);
	tsr_worker_stop(e->sw);
	tsr_peer_server_destroy(e->srv);
	tsr_store_close(e->store);
	rm_rf(e->dir);
	free(e);
}

/* Run fn(arg) on the client worker and wait for it to return. */
struct call {
	void (*fn)(void *);
	void *arg;
	sem_t done;
};

static inline void call_msg(struct tsr_worker *w, void *arg)
{
	struct call *c = arg;

	(void)w;
	c->fn(c->arg);
	sem_post(&c->done);
}

static inline void on_client(struct env *e, void (*fn)(void *), void *arg)
{
	struct call c = { .fn = fn, .arg = arg };

	sem_init(&c.done, 0, 0);
	assert_int_equal(tsr_worker_send(e->cw, call_msg, &c), 0);
	sem_wait(&c.done);
	sem_destroy(&c.done);
}

static inline int sem_wait_ms(sem_t *s, unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return sem_timedwait(s, &ts);
}

#endif
