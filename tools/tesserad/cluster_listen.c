/*
 * tesserad's --listen port: one TCP port for three protocols, told apart by
 * the first 4 bytes a client sends (peeked, not consumed, on the main loop):
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
		l->on_admin(l->arg, fd);
	}
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

void cluster_listener_start(struct cluster_listener *l, struct ev_loop *loop)
{
	l->loop = loop;
	ev_io_init(&l->watcher, accept_cb, l->fd, EV_READ);
	l->watcher.data = l;
	ev_timer_init(&l->pause, resume_cb, 1.0, 0.0);
	l->pause.data = l;
	ev_io_start(loop, &l->watcher);
	l->started = true;
}

void cluster_listener_stop(struct cluster_listener *l)
{
	if (l->started) {
		ev_io_stop(l->loop, &l->watcher);
		ev_timer_stop(l->loop, &l->pause);
		while (l->sniffing)
			sniff_end(l->sniffing, true);
		l->started = false;
	}
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
}
