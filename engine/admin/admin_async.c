/*
 * Admin API client on a libev loop: one request, one reply, one connection,
 * without blocking the loop (tesserad's main thread forwards commands to
 * other nodes with it: engine/cluster/snapshot.c).  Non-blocking connect,
 * the request frame written as the socket takes it, the reply read and
 * validated by tsr_admin_response_parse, one timer for the whole exchange.
 * The blocking client for command-line tools is admin_client.c.  Nothing is
 * logged here: the caller knows how to tell its user.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "admin/admin_internal.h"

struct admin_async {
	struct ev_loop *loop;      /* the caller's; every field is touched on it only */
	ev_io io;                  /* EV_WRITE while connecting and sending, then EV_READ */
	ev_timer timer;            /* the whole exchange's deadline */
	int fd;                    /* the connection (non-blocking, close-on-exec) */
	bool connected;            /* the non-blocking connect completed */
	uint8_t *out;              /* the request frame (carries the token: cleansed) */
	size_t out_len, out_sent;
	uint8_t hdr[4];            /* the reply's length prefix */
	size_t hdr_got;            /* < 4: still reading it */
	uint8_t *in;               /* the reply's body, in_len bytes once complete */
	uint32_t in_len;
	size_t in_got;
	admin_async_fn cb_fn;      /* fired once, by async_finish, which frees this first */
	void *cb_arg;
};

/* Free a and fire its callback (after: the callback may start another call). */
static void async_finish(struct admin_async *a, int status, Tessera__Admin__Response *resp)
{
	admin_async_fn cb_fn = a->cb_fn;
	void *cb_arg = a->cb_arg;

	ev_io_stop(a->loop, &a->io);
	ev_timer_stop(a->loop, &a->timer);
	close(a->fd);
	if (a->out) {
		OPENSSL_cleanse(a->out, a->out_len);
		free(a->out);
	}
	free(a->in);
	free(a);
	cb_fn(cb_arg, status, resp);
}

static void async_set_events(struct admin_async *a, int events)
{
	ev_io_stop(a->loop, &a->io);
	ev_io_set(&a->io, a->fd, events);
	ev_io_start(a->loop, &a->io);
}

/* Send what the socket takes.  0 (all sent, or wait for EV_WRITE) or -errno. */
static int async_send(struct admin_async *a)
{
	while (a->out_sent < a->out_len) {
		ssize_t n = send(a->fd, a->out + a->out_sent, a->out_len - a->out_sent,
				 MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n < 0)
			return errno == ECONNRESET || errno == ECONNREFUSED ? -errno : -EPIPE;
		a->out_sent += (size_t)n;
	}
	OPENSSL_cleanse(a->out, a->out_len);
	free(a->out);
	a->out = NULL;
	async_set_events(a, EV_READ);
	return 0;
}

/* Read what is there.  1: the reply is complete; 0: wait; -errno. */
static int async_recv(struct admin_async *a)
{
	for (;;) {
		uint8_t *dst;
		size_t want;
		ssize_t n;

		if (a->hdr_got < 4) {
			dst = a->hdr + a->hdr_got;
			want = 4 - a->hdr_got;
		} else {
			if (a->in_got == a->in_len)
				return 1;
			dst = a->in + a->in_got;
			want = a->in_len - a->in_got;
		}
		n = recv(a->fd, dst, want, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n < 0)
			return errno == ECONNRESET ? -ECONNRESET : -EPIPE;
		if (n == 0)
			return -ECONNRESET; /* the server closed before replying */
		if (a->hdr_got < 4) {
			a->hdr_got += (size_t)n;
			if (a->hdr_got < 4)
				continue;
			a->in_len = admin_frame_len(a->hdr);
			if (a->in_len > TSR_ADMIN_MAX_FRAME)
				return -EPROTO;
			a->in = malloc(a->in_len ? a->in_len : 1);
			if (a->in == NULL)
				return -ENOMEM;
		} else {
			a->in_got += (size_t)n;
		}
	}
}

static void async_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct admin_async *a = w->data;
	Tessera__Admin__Response *resp = NULL;
	int ret;

	(void)loop;
	if (!a->connected) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err == EINPROGRESS || err == EALREADY)
			return;
		if (err) {
			async_finish(a, -err, NULL);
			return;
		}
		a->connected = true;
	}
	if (revents & EV_WRITE) {
		ret = async_send(a);
		if (ret)
			async_finish(a, ret, NULL);
		return;
	}
	ret = async_recv(a);
	if (ret == 0)
		return;
	if (ret < 0) {
		async_finish(a, ret, NULL);
		return;
	}
	ret = tsr_admin_response_parse(a->in, a->in_len, &resp, NULL);
	async_finish(a, ret ? -EPROTO : 0, ret ? NULL : resp);
}

static void async_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	async_finish(w->data, -ETIMEDOUT, NULL);
}

int admin_async_call(struct ev_loop *loop, const char *hostport, const char *token,
		     const Tessera__Admin__Request *req, int timeout_ms, admin_async_fn cb_fn,
		     void *cb_arg, struct admin_async **out)
{
	Tessera__Admin__Request copy;
	struct admin_async *a;
	int ret;

	if (loop == NULL || hostport == NULL || req == NULL || cb_fn == NULL || timeout_ms <= 0)
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -ENOMEM;
	a->loop = loop;
	a->fd = -1;
	a->cb_fn = cb_fn;
	a->cb_arg = cb_arg;
	copy = *req; /* the caller's request is not written to */
	copy.token = token ? (char *)token : req->token;
	ret = admin_frame_pack(&copy.base, &a->out, &a->out_len);
	if (ret)
		goto err;
	ret = admin_tcp_connect(hostport, true, &a->fd);
	if (ret)
		goto err;
	ev_io_init(&a->io, async_io_cb, a->fd, EV_WRITE);
	a->io.data = a;
	ev_timer_init(&a->timer, async_timer_cb, timeout_ms / 1000.0, 0.0);
	a->timer.data = a;
	ev_io_start(loop, &a->io);
	ev_timer_start(loop, &a->timer);
	if (out)
		*out = a;
	return 0;
err:
	if (a->out) {
		OPENSSL_cleanse(a->out, a->out_len);
		free(a->out);
	}
	free(a);
	return ret;
}

void admin_async_cancel(struct admin_async *a)
{
	async_finish(a, -ECANCELED, NULL);
}
