/*
 * tesserad's --listen port: one TCP port for three protocols, told apart by
 * the first 4 bytes a client sends (peeked, not consumed, on the "listen"
 * thread, so that peer and meta connections never wait for a busy main loop):
 *   TSR_PEER_MAGIC ("TSRP")  peer protocol -> a worker (round robin)
 *   TSR_META_MAGIC ("TSRM")  meta service  -> tsr_meta_server_adopt (meta node only)
 *   anything else            admin API over TCP, token required
 *                            (an admin frame starts with its big-endian length,
 *                            whose first byte is 0 for any frame <= 1 MiB)
 * A client that sends fewer than 4 bytes within SNIFF_TIMEOUT is closed.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster_listen.h"
#include "tessera/meta.h"
#include "tessera/peer.h"

#define SNIFF_TIMEOUT 10.0
#define MAX_SNIFFING 256

struct sniff {
	struct cluster_listener *l;
	ev_io watcher;
	ev_timer timeout;
	int fd;
	struct sniff *prev, *next;
};

static void sniff_end(struct sniff *s, bool close_fd)
{
	struct cluster_listener *l = s->l;

	ev_io_stop(l->loop, &s->watcher);
	ev_timer_stop(l->loop, &s->timeout);
	if (close_fd)
		close(s->fd);
	if (s->prev)
		s->prev->next = s->next;
	else
		l->sniffing = s->next;
	if (s->next)
		s->next->prev = s->prev;
	l->n_sniffing--;
	free(s);
}

static void sniff_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	sniff_end(t->data, true);
}

static void sniff_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sniff *s = w->data;
	struct cluster_listener *l = s->l;
	uint8_t b[4];
	uint32_t magic;
	ssize_t n;
	int fd = s->fd;

	n = recv(fd, b, sizeof(b), MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		sniff_end(s, true);
		return;
	}
	if (n < 4 && b[0] != 0) /* wait for the whole magic (admin frames start with 0) */
		return;
	sniff_end(s, false);
	magic = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
		(uint32_t)b[3] << 24;
	if (n == 4 && magic == TSR_PEER_MAGIC) {
		l->on_peer(l->arg, fd);
	} else if (n == 4 && magic == TSR_META_MAGIC) {
		if (l->on_meta)
			l->on_meta(l->arg, fd);
		else
			close(fd); /* not the meta node: its clients were told another address */
	} else {
		pthread_mutex_lock(&l->lock);
		if (l->n_admin_fds < sizeof(l->admin_fds) / sizeof(l->admin_fds[0])) {
			l->admin_fds[l->n_admin_fds++] = fd;
			fd = -1;
		}
		pthread_mutex_unlock(&l->lock);
		if (fd >= 0)
			close(fd);
		else
			ev_async_send(l->main_loop, &l->admin_wake);
	}
}

static void admin_wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct cluster_listener *l = w->data;
	int fds[64];
	unsigned n;

	pthread_mutex_lock(&l->lock);
	n = l->n_admin_fds;
	memcpy(fds, l->admin_fds, n * sizeof(int));
	l->n_admin_fds = 0;
	pthread_mutex_unlock(&l->lock);
	for (unsigned i = 0; i < n; i++)
		l->on_admin(l->arg, fds[i]);
}

static void stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

static void *listen_thread(void *arg)
{
	struct cluster_listener *l = arg;

	tsr_log_set_thread_name("listen");
	ev_run(l->loop, 0);
	return NULL;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct cluster_listener *l = w->data;
	int one = 1;

	for (;;) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct sniff *s;

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				tsr_warn("cluster: accept on %s: %s; pausing for a second", l->name,
					 strerror(errno));
				ev_io_stop(loop, &l->watcher);
				ev_timer_start(loop, &l->pause);
			}
			return;
		}
		if (l->n_sniffing >= MAX_SNIFFING || (s = calloc(1, sizeof(*s))) == NULL) {
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		s->l = l;
		s->fd = fd;
		ev_io_init(&s->watcher, sniff_cb, fd, EV_READ);
		s->watcher.data = s;
		ev_timer_init(&s->timeout, sniff_timeout_cb, SNIFF_TIMEOUT, 0.0);
		s->timeout.data = s;
		ev_io_start(loop, &s->watcher);
		ev_timer_start(loop, &s->timeout);
		s->next = l->sniffing;
		if (l->sniffing)
			l->sniffing->prev = s;
		l->sniffing = s;
		l->n_sniffing++;
	}
}

static void resume_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct cluster_listener *l = t->data;

	ev_io_start(loop, &l->watcher);
}

int cluster_listener_bind(struct cluster_listener *l, const char *hostport)
{
	l->fd = -1;
	return tsr_admin_listen_tcp(hostport, &l->fd, l->name, sizeof(l->name));
}

int cluster_listener_start(struct cluster_listener *l, struct ev_loop *main_loop)
{
	int ret;

	l->loop = ev_loop_new(EVFLAG_AUTO);
	if (l->loop == NULL)
		return -ENOMEM;
	l->main_loop = main_loop;
	pthread_mutex_init(&l->lock, NULL);
	ev_async_init(&l->admin_wake, admin_wake_cb);
	l->admin_wake.data = l;
	ev_async_start(main_loop, &l->admin_wake);
	ev_async_init(&l->stop, stop_cb);
	ev_async_start(l->loop, &l->stop);
	ev_io_init(&l->watcher, accept_cb, l->fd, EV_READ);
	l->watcher.data = l;
	ev_timer_init(&l->pause, resume_cb, 1.0, 0.0);
	l->pause.data = l;
	ev_io_start(l->loop, &l->watcher);
	ret = -pthread_create(&l->thread, NULL, listen_thread, l);
	if (ret) {
		ev_async_stop(main_loop, &l->admin_wake);
		ev_loop_destroy(l->loop);
		l->loop = NULL;
		return ret;
	}
	l->started = true;
	return 0;
}

void cluster_listener_stop(struct cluster_listener *l)
{
	if (l->started) {
		ev_async_send(l->loop, &l->stop);
		pthread_join(l->thread, NULL);
		ev_io_stop(l->loop, &l->watcher);
		ev_timer_stop(l->loop, &l->pause);
		ev_async_stop(l->loop, &l->stop);
		while (l->sniffing)
			sniff_end(l->sniffing, true);
		ev_loop_destroy(l->loop);
		ev_async_stop(l->main_loop, &l->admin_wake);
		for (unsigned i = 0; i < l->n_admin_fds; i++)
			close(l->admin_fds[i]);
		l->n_admin_fds = 0;
		pthread_mutex_destroy(&l->lock);
		l->started = false;
	}
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
}
