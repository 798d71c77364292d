/*
 * Admin API server: listening sockets and connections on a libev loop
 * (tesserad's main thread).  A connection reads one frame (proto/admin.proto),
 * parses it with tsr_admin_request_parse, runs it (admin_ops.c, blocking store
 * calls are allowed on this thread), then writes the reply before reading the
 * next frame.  A command may reply later (admin_later_begin): the connection
 * then waits, reading nothing, until the command's work is done elsewhere
 * (an ev_async wakes the loop) and its reply is sent.  TCP connections must present the token in their first request;
 * a wrong one gets "authentication failed" and the connection is closed.
 * Frames over 1 MiB, malformed protobuf framing or stalled peers close the
 * connection; nothing a client sends can take the daemon down.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "admin/admin_internal.h"

struct admin_later {
	struct tsr_admin_server *srv;
	struct admin_conn *conn;   /* waiting for the reply; NULL once it closed (loop only) */
	admin_later_fn fn;         /* fills the reply on the loop */
	void *arg;
	struct admin_later *next;  /* srv->later_done (later_lock) */
};

/* The server whose admin_handle runs on this thread right now, or NULL
 * (admin_handling_server: the cluster layer's hook is not given it). */
static __thread struct tsr_admin_server *handling_srv;

static void conn_close(struct admin_conn *c)
{
	struct tsr_admin_server *srv = c->srv;

	if (c->later)
		c->later->conn = NULL; /* its fn still runs, the reply is dropped */
	ev_io_stop(srv->loop, &c->watcher);
	ev_timer_stop(srv->loop, &c->idle);
	close(c->fd);
	free(c->in);
	free(c->out);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->n_conns--;
	free(c);
}

static void conn_set_events(struct admin_conn *c, int events)
{
	ev_io_stop(c->srv->loop, &c->watcher);
	ev_io_set(&c->watcher, c->fd, events);
	ev_io_start(c->srv->loop, &c->watcher);
}

static bool token_ok(const struct tsr_admin_server *srv, const char *token)
{
	size_t want = strlen(srv->token);

	/* lengths are not secret (always TSR_ADMIN_TOKEN_LEN); the bytes are */
	return token && strlen(token) == want && CRYPTO_memcmp(token, srv->token, want) == 0;
}

static int conn_pack(struct admin_conn *c, Tessera__Admin__Response *resp);

/* Build the reply for the frame in c->in; sets c->out.  0, 1 when the reply
 * comes later (c->later), or -errno (close). */
static int conn_process(struct admin_conn *c)
{
	struct tsr_admin_server *srv = c->srv;
	Tessera__Admin__Response resp = TESSERA__ADMIN__RESPONSE__INIT;
	Tessera__Admin__Request *req = NULL;
	const char *why = NULL;
	int ret;

	ret = tsr_admin_request_parse(c->in, c->in_len, &req, &why);
	if (c->tcp && !c->authenticated) {
		if (ret == 0 && token_ok(srv, req->token)) {
			c->authenticated = true;
		} else {
			tsr_warn("admin: authentication failed for a TCP client");
			admin_fail(&resp, -EACCES, "authentication failed (give the token from "
				   "DIR/admin.token on the node with --token-file or $TESSERA_TOKEN)");
			c->close_after_reply = true;
			goto reply;
		}
	}
	if (ret) {
		tsr_debug("admin: bad request: %s", why);
		admin_fail(&resp, ret, "bad request: %s", why);
		goto reply;
	}
	srv->handling = c;
	handling_srv = srv;
	admin_handle(srv, req, &resp);
	handling_srv = NULL;
	srv->handling = NULL;
	if (c->later) { /* the command replies later (admin_later_begin) */
		admin_response_free_built(&resp);
		tessera__admin__request__free_unpacked(req, NULL);
		free(c->in);
		c->in = NULL;
		return 1;
	}
reply:
	tessera__admin__request__free_unpacked(req, NULL);
	free(c->in);
	c->in = NULL;
	return conn_pack(c, &resp);
}

/* Pack resp (then freed) into c->out.  0 or -errno (close). */
static int conn_pack(struct admin_conn *c, Tessera__Admin__Response *resp)
{
	int ret;

	ret = admin_frame_pack(&resp->base, &c->out, &c->out_len);
	if (ret == -EMSGSIZE) {
		/* e.g. a list of too many volumes: say so instead of going silent */
		admin_response_free_built(resp);
		admin_fail(resp, -EMSGSIZE, "reply larger than 1 MiB");
		ret = admin_frame_pack(&resp->base, &c->out, &c->out_len);
	}
	admin_response_free_built(resp);
	c->out_sent = 0;
	return ret;
}

/* Returns false when the connection was closed. */
static bool conn_write(struct admin_conn *c)
{
	while (c->out_sent < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent,
				 MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			conn_set_events(c, EV_WRITE);
			return true;
		}
		if (n <= 0) {
			conn_close(c);
			return false;
		}
		c->out_sent += (size_t)n;
	}
	free(c->out);
	c->out = NULL;
	if (c->close_after_reply) {
		conn_close(c);
		return false;
	}
	c->hdr_got = 0;
	c->in_got = 0;
	conn_set_events(c, EV_READ);
	return true;
}

/* Read what is available; on a complete frame, process it and start the reply. */
static void conn_read(struct admin_conn *c)
{
	int ret;

	for (;;) {
		uint8_t *dst;
		size_t want;
		ssize_t n;

		if (c->hdr_got < 4) {
			dst = c->hdr + c->hdr_got;
			want = 4 - c->hdr_got;
		} else {
			dst = c->in + c->in_got;
			want = c->in_len - c->in_got;
		}
		if (want > 0) {
			n = recv(c->fd, dst, want, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			if (n <= 0) { /* peer closed or error */
				conn_close(c);
				return;
			}
			if (c->hdr_got < 4) {
				c->hdr_got += (size_t)n;
				if (c->hdr_got < 4)
					continue;
				c->in_len = admin_frame_len(c->hdr);
				if (c->in_len > TSR_ADMIN_MAX_FRAME) {
					tsr_debug("admin: frame of %u bytes: closing", c->in_len);
					conn_close(c);
					return;
				}
				c->in_got = 0;
				c->in = malloc(c->in_len ? c->in_len : 1);
				if (c->in == NULL) {
					conn_close(c);
					return;
				}
			} else {
				c->in_got += (size_t)n;
			}
			if (c->hdr_got < 4 || c->in_got < c->in_len)
				continue;
		}
		/* a complete frame */
		ev_timer_again(c->srv->loop, &c->idle);
		ret = conn_process(c);
		if (ret < 0) {
			conn_close(c);
			return;
		}
		if (ret > 0) { /* nothing to read or send until the reply is done */
			ev_io_stop(c->srv->loop, &c->watcher);
			ev_timer_stop(c->srv->loop, &c->idle);
			return;
		}
		conn_write(c);
		return; /* the next frame is read once the reply is out */
	}
}

/* ---- replies that come later ---- */

struct tsr_admin_server *admin_handling_server(void)
{
	return handling_srv;
}

struct admin_later *admin_later_begin(struct tsr_admin_server *srv, admin_later_fn fn,
				      void *arg)
{
	struct admin_conn *c = srv->handling;
	struct admin_later *l;

	if (c == NULL || c->later != NULL || !srv->later_ready)
		return NULL;
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return NULL;
	l->srv = srv;
	l->conn = c;
	l->fn = fn;
	l->arg = arg;
	c->later = l;
	pthread_mutex_lock(&srv->later_lock);
	srv->later_out++;
	pthread_mutex_unlock(&srv->later_lock);
	return l;
}

void admin_later_cancel(struct admin_later *l)
{
	struct tsr_admin_server *srv = l->srv;

	if (l->conn)
		l->conn->later = NULL;
	pthread_mutex_lock(&srv->later_lock);
	srv->later_out--;
	pthread_cond_broadcast(&srv->later_cond);
	pthread_mutex_unlock(&srv->later_lock);
	free(l);
}

void admin_later_done(struct admin_later *l)
{
	struct tsr_admin_server *srv = l->srv;

	pthread_mutex_lock(&srv->later_lock);
	l->next = srv->later_done;
	srv->later_done = l;
	srv->later_out--;
	/* under the lock: once destroy sees later_out 0, nobody touches srv */
	ev_async_send(srv->loop, &srv->later_wake);
	pthread_cond_broadcast(&srv->later_cond);
	pthread_mutex_unlock(&srv->later_lock);
}

/* On the loop: run l's fn and send its reply (if the connection is still there). */
static void later_finish(struct admin_later *l)
{
	Tessera__Admin__Response resp = TESSERA__ADMIN__RESPONSE__INIT;
	struct admin_conn *c = l->conn;

	l->fn(l->srv, l->arg, &resp);
	if (c == NULL) {
		admin_response_free_built(&resp);
		free(l);
		return;
	}
	c->later = NULL;
	free(l);
	if (conn_pack(c, &resp)) {
		conn_close(c);
		return;
	}
	ev_timer_again(c->srv->loop, &c->idle);
	conn_write(c);
}

/* Run every done handle's fn, oldest first. */
static void later_run(struct tsr_admin_server *srv)
{
	struct admin_later *l, *next, *oldest = NULL;

	pthread_mutex_lock(&srv->later_lock);
	l = srv->later_done;
	srv->later_done = NULL;
	pthread_mutex_unlock(&srv->later_lock);
	for (; l; l = next) { /* reverse: the list is newest first */
		next = l->next;
		l->next = oldest;
		oldest = l;
	}
	for (l = oldest; l; l = next) {
		next = l->next;
		later_finish(l);
	}
}

static void later_wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	(void)loop;
	(void)revents;
	later_run(w->data);
}

static void conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct admin_conn *c = w->data;

	if (revents & EV_WRITE)
		conn_write(c);
	else if (revents & EV_READ)
		conn_read(c);
}

static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct admin_conn *c = w->data;

	tsr_debug("admin: closing an idle connection");
	conn_close(c);
}

static void resume_accept_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct admin_listener *l = t->data;

	ev_io_start(loop, &l->watcher);
}

/* Serve accepted socket fd (non-blocking).  0 or -ENOMEM (fd left to the caller). */
static int conn_new(struct tsr_admin_server *srv, int fd, bool tcp)
{
	struct admin_conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return -ENOMEM;
	c->srv = srv;
	c->fd = fd;
	c->tcp = tcp;
	c->authenticated = !tcp;
	ev_io_init(&c->watcher, conn_cb, fd, EV_READ);
	c->watcher.data = c;
	ev_init(&c->idle, idle_cb);
	c->idle.repeat = tcp ? ADMIN_AUTH_TIMEOUT : ADMIN_IDLE_TIMEOUT;
	c->idle.data = c;
	ev_timer_again(srv->loop, &c->idle);
	if (tcp) /* after authentication, the ordinary idle limit */
		c->idle.repeat = ADMIN_IDLE_TIMEOUT;
	ev_io_start(srv->loop, &c->watcher);
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->n_conns++;
	return 0;
}

int tsr_admin_server_adopt(struct tsr_admin_server *srv, int fd)
{
	int ret = 0;

	if (srv->token == NULL)
		ret = -EINVAL;
	else if (srv->n_conns >= ADMIN_MAX_CONNS)
		ret = -EMFILE;
	else
		ret = conn_new(srv, fd, true);
	if (ret) {
		tsr_warn("admin: cannot take a connection from the cluster port: %s",
			 strerror(-ret));
		close(fd);
	}
	return ret;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct admin_listener *l = w->data;
	struct tsr_admin_server *srv = l->srv;
	int fd;

	for (;;) {
		fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			       errno == ENOMEM)) {
			/* the pending client stays queued; a level-triggered retry would spin */
			tsr_warn("admin: accept on %s: %s; pausing for a second", l->name,
				 strerror(errno));
			ev_io_stop(loop, &l->watcher);
			ev_timer_start(loop, &l->pause);
			return;
		}
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				tsr_warn("admin: accept on %s: %s", l->name, strerror(errno));
			return;
		}
		if (srv->n_conns >= ADMIN_MAX_CONNS) {
			tsr_warn("admin: %u connections open, refusing another", srv->n_conns);
			close(fd);
			continue;
		}
		if (conn_new(srv, fd, l->tcp))
			close(fd);
	}
}

static void listener_start(struct tsr_admin_server *srv, struct admin_listener *l)
{
	l->srv = srv;
	ev_io_init(&l->watcher, accept_cb, l->fd, EV_READ);
	l->watcher.data = l;
	ev_timer_init(&l->pause, resume_accept_cb, 1.0, 0.0);
	l->pause.data = l;
	ev_io_start(srv->loop, &l->watcher);
}

static char *dup_or_null(const char *s, bool *failed)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*failed = true;
	return d;
}

int tsr_admin_server_create(const struct tsr_admin_server_opts *opts,
			    struct tsr_admin_server **out)
{
	struct tsr_admin_server *srv;
	bool nomem = false;
	size_t i;
	int ret;

	if (opts->loop == NULL || opts->store == NULL || opts->vols == NULL ||
	    opts->unix_path == NULL)
		return -EINVAL;
	if ((opts->tcp_listen || opts->cluster) && (opts->token == NULL || strlen(opts->token) < 32)) {
		tsr_error("admin: a TCP listener needs a token");
		return -EINVAL;
	}
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return -ENOMEM;
	for (i = 0; i < 2; i++)
		srv->listeners[i].fd = -1;
	srv->loop = opts->loop;
	pthread_mutex_init(&srv->later_lock, NULL);
	pthread_cond_init(&srv->later_cond, NULL);
	ev_async_init(&srv->later_wake, later_wake_cb);
	srv->later_wake.data = srv;
	ev_async_start(srv->loop, &srv->later_wake);
	srv->later_ready = true;
	srv->store = opts->store;
	srv->vols = opts->vols;
	srv->nbd = opts->nbd;
	/* a cluster node takes TCP connections from its --listen port too */
	srv->token = dup_or_null(opts->tcp_listen || opts->cluster ? opts->token : NULL, &nomem);
	if (opts->cluster) {
		srv->cluster = *opts->cluster;
		srv->node_id = dup_or_null(opts->cluster->node_id, &nomem);
		srv->cluster_address = dup_or_null(opts->cluster->address, &nomem);
		srv->cluster.node_id = srv->node_id;
		srv->cluster.address = srv->cluster_address;
	}
	srv->data_dir = dup_or_null(opts->node.data_dir, &nomem);
	srv->device = dup_or_null(opts->node.device, &nomem);
	srv->io_backend = dup_or_null(opts->node.io_backend, &nomem);
	srv->workers = opts->node.workers;
	srv->started = opts->node.started;
	srv->nbd_listeners = calloc(opts->node.n_nbd_listeners + 1, sizeof(char *));
	if (srv->nbd_listeners == NULL)
		nomem = true;
	for (i = 0; !nomem && i < opts->node.n_nbd_listeners; i++) {
		srv->nbd_listeners[i] = dup_or_null(opts->node.nbd_listeners[i], &nomem);
		srv->n_nbd_listeners = i + 1;
	}
	if (nomem) {
		ret = -ENOMEM;
		goto err;
	}

	ret = tsr_admin_listen_unix(opts->unix_path, &srv->listeners[0].fd);
	if (ret)
		goto err;
	srv->unix_path = strdup(opts->unix_path);
	if (srv->unix_path == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	snprintf(srv->listeners[0].name, sizeof(srv->listeners[0].name), "unix:%s",
		 opts->unix_path);
	srv->n_listeners = 1;
	if (opts->tcp_listen) {
		struct admin_listener *l = &srv->listeners[1];

		ret = tsr_admin_listen_tcp(opts->tcp_listen, &l->fd, l->name, sizeof(l->name));
		if (ret)
			goto err;
		l->tcp = true;
		srv->n_listeners = 2;
		tsr_warn("admin: listening on %s: token-protected but not encrypted (TLS comes "
			 "with replication); keep it on a trusted network", l->name);
	}
	for (i = 0; i < srv->n_listeners; i++)
		listener_start(srv, &srv->listeners[i]);
	*out = srv;
	return 0;
err:
	tsr_admin_server_destroy(srv);
	return ret;
}

const char *tsr_admin_server_listener(const struct tsr_admin_server *srv, size_t i)
{
	return i < srv->n_listeners ? srv->listeners[i].name : NULL;
}

void tsr_admin_server_destroy(struct tsr_admin_server *srv)
{
	size_t i;

	if (srv == NULL)
		return;
	/* replies finished by the stop before us (tsr_cluster_stop: a resize's
	 * -ECANCELED) are sent while their connections are still open */
	if (srv->later_ready)
		later_run(srv);
	while (srv->conns)
		conn_close(srv->conns);
	if (srv->later_ready) {
		/* commands still waiting for a worker: their fn frees their state
		 * (the workers still run; the wait is the rest of a snapshot cut) */
		pthread_mutex_lock(&srv->later_lock);
		while (srv->later_out > 0)
			pthread_cond_wait(&srv->later_cond, &srv->later_lock);
		pthread_mutex_unlock(&srv->later_lock);
		later_run(srv);
		ev_async_stop(srv->loop, &srv->later_wake);
		pthread_cond_destroy(&srv->later_cond);
		pthread_mutex_destroy(&srv->later_lock);
	}
	for (i = 0; i < 2; i++) {
		struct admin_listener *l = &srv->listeners[i];

		if (l->fd < 0)
			continue;
		if (l->srv) {
			ev_io_stop(srv->loop, &l->watcher);
			ev_timer_stop(srv->loop, &l->pause);
		}
		close(l->fd);
	}
	if (srv->unix_path)
		unlink(srv->unix_path);
	free(srv->unix_path);
	if (srv->token) {
		OPENSSL_cleanse(srv->token, strlen(srv->token));
		free(srv->token);
	}
	free(srv->node_id);
	free(srv->cluster_address);
	free(srv->data_dir);
	free(srv->device);
	free(srv->io_backend);
	for (i = 0; i < srv->n_nbd_listeners; i++)
		free(srv->nbd_listeners[i]);
	free(srv->nbd_listeners);
	free(srv);
}
