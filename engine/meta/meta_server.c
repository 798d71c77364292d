/*
 * The meta service: serves a metadata handle (the meta node's sqlite store)
 * to remote clients (engine/meta/meta_remote.c) in the protocol of
 * proto/meta.proto.  One thread ("meta") runs a poll() loop over every
 * connection; tesserad's listener accepts and hands sockets over with
 * tsr_meta_server_adopt, which queues them and wakes the thread through an
 * eventfd.  The store calls block, which is fine on this thread of its own;
 * watch is always answered at once (clients poll), so no request holds the
 * loop for long.
 *
 * A connection starts with the 4 magic bytes (not consumed by tesserad's
 * peek), then a Hello with the cluster token within META_AUTH_TIMEOUT_MS.
 * It then reads one frame, runs it, writes the reply, and only then reads the
 * next.  A wrong magic, a frame over 1 MiB, a malformed request or a wrong
 * token closes that connection with a log line; nothing a client sends can
 * take the service down.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "meta/internal.h"

struct meta_conn {
	int fd;
	char peer[64];          /* "ADDR:PORT" for log lines */
	int64_t adopted;        /* tsr_mono_ms() when handed over */
	bool authenticated;     /* after a Hello with the right token */
	bool close_after_reply; /* refused: say why, then close */
	uint8_t magic[4];
	size_t magic_got;       /* < 4: still reading the magic */
	uint8_t hdr[4];
	size_t hdr_got;         /* < 4: still reading a frame header */
	uint8_t *in;            /* frame body, in_len bytes once complete */
	uint32_t in_len;
	size_t in_got;
	uint8_t *out;           /* reply being sent; NULL when none */
	size_t out_len, out_sent;
};

struct tsr_meta_server {
	struct tsr_meta *m;     /* served; not owned */
	char *token;
	int wake_fd;            /* eventfd: adopt or stop happened */
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;   /* guards pending and stopping */
	int *pending;           /* adopted sockets not yet seen by the thread */
	size_t n_pending, cap_pending;
	bool stopping;
	/* owned by the thread */
	struct meta_conn *conns[META_MAX_CONNS];
	unsigned n_conns;
};

static void conn_close(struct tsr_meta_server *srv, unsigned i)
{
	struct meta_conn *c = srv->conns[i];

	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
	srv->conns[i] = srv->conns[--srv->n_conns];
}

static void conn_add(struct tsr_meta_server *srv, int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct meta_conn *c;
	char addr[INET6_ADDRSTRLEN] = "?";
	int port = 0;

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, addr,
				  sizeof(addr));
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, addr,
				  sizeof(addr));
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		}
	}
	if (srv->n_conns == META_MAX_CONNS) {
		tsr_warn("meta: connection from %s:%d refused: %d connections already",
			 addr, port, META_MAX_CONNS);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		tsr_error("meta: connection from %s:%d: out of memory", addr, port);
		close(fd);
		return;
	}
	c->fd = fd;
	c->adopted = tsr_mono_ms();
	snprintf(c->peer, sizeof(c->peer), "%s:%d", addr, port);
	srv->conns[srv->n_conns++] = c;
}

static bool token_ok(const struct tsr_meta_server *srv, const char *token)
{
	size_t want = strlen(srv->token);

	return strlen(token) == want && CRYPTO_memcmp(token, srv->token, want) == 0;
}

/* Point a reply's kvs at kvs (no copies; freed with free_reply_kvs). */
static int reply_kvs(Tessera__Meta__Response *resp, const struct tsr_meta_kv *kvs, size_t n)
{
	Tessera__Meta__KeyValue *pb;

	if (n == 0)
		return 0;
	pb = calloc(n, sizeof(*pb));
	resp->kvs = calloc(n, sizeof(*resp->kvs));
	if (pb == NULL || resp->kvs == NULL) {
		free(pb);
		free(resp->kvs);
		resp->kvs = NULL;
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		tessera__meta__key_value__init(&pb[i]);
		pb[i].key = kvs[i].key;
		pb[i].value.data = kvs[i].value;
		pb[i].value.len = kvs[i].value_len;
		pb[i].create_rev = kvs[i].create_rev;
		pb[i].mod_rev = kvs[i].mod_rev;
		pb[i].lease = kvs[i].lease;
		pb[i].deleted = kvs[i].deleted != 0;
		resp->kvs[i] = &pb[i];
	}
	resp->n_kvs = n;
	return 0;
}

/* The page of a range after start_after ("" from the start) that fits one reply. */
static int reply_range_page(Tessera__Meta__Response *resp, const struct tsr_meta_kv *kvs,
			    size_t n, const char *start_after)
{
	size_t first = 0, count = 0, bytes = 0;

	if (start_after[0])
		while (first < n && strcmp(kvs[first].key, start_after) <= 0)
			first++;
	while (first + count < n) {
		const struct tsr_meta_kv *kv = &kvs[first + count];
		size_t size = kv->value_len + strlen(kv->key) + 64;

		if (count > 0 && bytes + size > META_REPLY_BUDGET) {
			resp->more = true;
			break;
		}
		bytes += size;
		count++;
	}
	return reply_kvs(resp, kvs + first, count);
}

static void free_reply_kvs(Tessera__Meta__Response *resp)
{
	if (resp->n_kvs)
		free(resp->kvs[0]); /* the array of KeyValues reply_kvs allocated */
	free(resp->kvs);
	resp->kvs = NULL;
	resp->n_kvs = 0;
}

/* Run an authenticated request against the store; fills resp. */
static void handle(struct tsr_meta_server *srv, const Tessera__Meta__Request *req,
		   Tessera__Meta__Response *resp, struct tsr_meta_kv **kvs, size_t *n,
		   struct tsr_meta_kv *one)
{
	struct tsr_meta *m = srv->m;
	int ret = 0;

	switch (req->op_case) {
	case TESSERA__META__REQUEST__OP_HELLO:
		break;
	case TESSERA__META__REQUEST__OP_GET:
		ret = tsr_meta_get(m, req->get->key, one);
		if (ret == 0)
			ret = reply_kvs(resp, one, 1);
		break;
	case TESSERA__META__REQUEST__OP_RANGE:
		ret = tsr_meta_range(m, req->range->prefix, kvs, n, &resp->rev);
		if (ret == 0)
			ret = reply_range_page(resp, *kvs, *n, req->range->start_after);
		break;
	case TESSERA__META__REQUEST__OP_CAS:
		ret = tsr_meta_cas(m, req->cas->key, req->cas->expect_rev, req->cas->value.data,
				   req->cas->value.len, req->cas->lease, &resp->rev);
		break;
	case TESSERA__META__REQUEST__OP_DELETE:
		ret = tsr_meta_delete(m, req->delete_->key, req->delete_->expect_rev);
		break;
	case TESSERA__META__REQUEST__OP_WATCH:
		/* never wait here: one thread serves every connection */
		ret = tsr_meta_watch(m, req->watch->prefix, req->watch->since_rev, 0, kvs, n,
				     &resp->rev);
		if (ret == 0)
			ret = reply_kvs(resp, *kvs, *n);
		break;
	case TESSERA__META__REQUEST__OP_LEASE_GRANT:
		ret = tsr_meta_lease_grant(m, req->lease_grant->ttl_ms, &resp->id);
		break;
	case TESSERA__META__REQUEST__OP_LEASE_KEEPALIVE:
		ret = tsr_meta_lease_keepalive(m, req->lease_keepalive->id);
		break;
	case TESSERA__META__REQUEST__OP_LEASE_REVOKE:
		ret = tsr_meta_lease_revoke(m, req->lease_revoke->id);
		break;
	default:
		ret = -EINVAL; /* meta_request_parse lets no other case through */
		break;
	}
	if (ret) {
		free_reply_kvs(resp);
		resp->error = ret;
		resp->message = (char *)strerror(-ret);
		resp->rev = 0;
		resp->id = 0;
		resp->more = false;
	}
}

/* The frame in c->in is complete: parse, run, queue the reply.  -1: close now. */
static int conn_process(struct tsr_meta_server *srv, struct meta_conn *c)
{
	Tessera__Meta__Response resp = TESSERA__META__RESPONSE__INIT;
	Tessera__Meta__Request *req = NULL;
	struct tsr_meta_kv *kvs = NULL, one = { 0 };
	const char *why = NULL;
	size_t n = 0;
	int ret;

	ret = meta_request_parse(c->in, c->in_len, &req, &why);
	OPENSSL_cleanse(c->in, c->in_len); /* may carry the token */
	free(c->in);
	c->in = NULL;
	c->hdr_got = 0;
	if (ret) {
		tsr_warn("meta: %s: bad request (%s); closing the connection", c->peer, why);
		return -1;
	}
	if (!c->authenticated) {
		if (req->op_case == TESSERA__META__REQUEST__OP_HELLO &&
		    token_ok(srv, req->hello->token)) {
			c->authenticated = true;
		} else {
			tsr_warn("meta: %s: authentication failed (%s)", c->peer,
				 req->op_case == TESSERA__META__REQUEST__OP_HELLO ?
					 "wrong cluster token" : "no Hello first");
			resp.error = -EACCES;
			resp.message = (char *)"authentication failed: wrong cluster token";
			c->close_after_reply = true;
		}
	}
	if (c->authenticated)
		handle(srv, req, &resp, &kvs, &n, &one);
	ret = meta_frame_pack(&resp.base, &c->out, &c->out_len);
	if (ret == -EMSGSIZE) {
		free_reply_kvs(&resp);
		resp.error = -E2BIG;
		resp.message = (char *)"reply larger than 1 MiB";
		resp.rev = 0;
		resp.more = false;
		ret = meta_frame_pack(&resp.base, &c->out, &c->out_len);
	}
	free_reply_kvs(&resp);
	tsr_meta_kv_free_array(kvs, n);
	tsr_meta_kv_clear(&one);
	tessera__meta__request__free_unpacked(req, NULL);
	if (ret) {
		tsr_error("meta: %s: reply: %s; closing the connection", c->peer, strerror(-ret));
		return -1;
	}
	c->out_sent = 0;
	return 0;
}

/* Send what is pending of the reply.  -1: close now. */
static int conn_flush(struct meta_conn *c)
{
	while (c->out_sent < c->out_len) {
		ssize_t k = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (k < 0) {
			tsr_debug("meta: %s: send: %s", c->peer, strerror(errno));
			return -1;
		}
		c->out_sent += (size_t)k;
	}
	free(c->out);
	c->out = NULL;
	return c->close_after_reply ? -1 : 0;
}

/* Read whatever is there into the current magic/header/body.  -1: close now. */
static int conn_read(struct tsr_meta_server *srv, struct meta_conn *c)
{
	for (;;) {
		uint8_t *dst;
		size_t want;
		ssize_t k;

		if (c->magic_got < 4) {
			dst = c->magic + c->magic_got;
			want = 4 - c->magic_got;
		} else if (c->hdr_got < 4) {
			dst = c->hdr + c->hdr_got;
			want = 4 - c->hdr_got;
		} else {
			dst = c->in + c->in_got;
			want = c->in_len - c->in_got;
		}
		if (want) {
			k = recv(c->fd, dst, want, MSG_DONTWAIT);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return 0;
			if (k <= 0) {
				if (k < 0)
					tsr_debug("meta: %s: recv: %s", c->peer, strerror(errno));
				return -1; /* closed by the client */
			}
		} else {
			k = 0; /* an empty frame */
		}
		if (c->magic_got < 4) {
			c->magic_got += (size_t)k;
			if (c->magic_got == 4 &&
			    ((uint32_t)c->magic[0] | (uint32_t)c->magic[1] << 8 |
			     (uint32_t)c->magic[2] << 16 | (uint32_t)c->magic[3] << 24) !=
				    TSR_META_MAGIC) {
				tsr_warn("meta: %s: not a meta client (bad magic); closing", c->peer);
				return -1;
			}
		} else if (c->hdr_got < 4) {
			c->hdr_got += (size_t)k;
			if (c->hdr_got == 4) {
				c->in_len = meta_frame_len(c->hdr);
				if (c->in_len > META_MAX_FRAME) {
					tsr_warn("meta: %s: frame of %u bytes, over the 1 MiB limit; "
						 "closing", c->peer, c->in_len);
					return -1;
				}
				c->in = malloc(c->in_len ? c->in_len : 1);
				if (c->in == NULL) {
					tsr_error("meta: %s: out of memory for a %u byte frame",
						  c->peer, c->in_len);
					return -1;
				}
				c->in_got = 0;
			}
		} else {
			c->in_got += (size_t)k;
			if (c->in_got == c->in_len) {
				/* one request at a time: reply before reading on */
				if (conn_process(srv, c))
					return -1;
				return conn_flush(c);
			}
		}
	}
}

/* Take the sockets adopt queued.  false: stop. */
static bool take_pending(struct tsr_meta_server *srv)
{
	uint64_t v;
	bool stopping;

	if (read(srv->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		tsr_debug("meta: read eventfd: %s", strerror(errno));
	pthread_mutex_lock(&srv->lock);
	stopping = srv->stopping;
	if (!stopping)
		for (size_t i = 0; i < srv->n_pending; i++)
			conn_add(srv, srv->pending[i]);
	if (!stopping)
		srv->n_pending = 0;
	pthread_mutex_unlock(&srv->lock);
	return !stopping;
}

static void *server_thread(void *arg)
{
	struct tsr_meta_server *srv = arg;
	struct pollfd pfds[1 + META_MAX_CONNS];

	tsr_log_set_thread_name("meta");
	for (;;) {
		unsigned n = srv->n_conns;
		int64_t now;

		pfds[0] = (struct pollfd){ .fd = srv->wake_fd, .events = POLLIN };
		for (unsigned i = 0; i < n; i++)
			pfds[1 + i] = (struct pollfd){ .fd = srv->conns[i]->fd,
						       .events = srv->conns[i]->out ? POLLOUT :
										      POLLIN };
		if (poll(pfds, 1 + n, 1000) < 0 && errno != EINTR) {
			tsr_error("meta: poll: %s", strerror(errno));
			continue;
		}
		now = tsr_mono_ms();
		/* backwards: conn_close moves the last connection into slot i */
		for (unsigned i = n; i-- > 0;) {
			struct meta_conn *c = srv->conns[i];
			short re = pfds[1 + i].revents;
			int ret = 0;

			if (!c->authenticated && now - c->adopted > META_AUTH_TIMEOUT_MS) {
				tsr_warn("meta: %s: no Hello within %d ms; closing", c->peer,
					 META_AUTH_TIMEOUT_MS);
				ret = -1;
			} else if (c->out && (re & (POLLOUT | POLLERR | POLLHUP))) {
				ret = conn_flush(c);
			} else if (!c->out && (re & (POLLIN | POLLERR | POLLHUP))) {
				ret = conn_read(srv, c);
			}
			if (ret)
				conn_close(srv, i);
		}
		if ((pfds[0].revents & POLLIN) && !take_pending(srv))
			break;
	}
	while (srv->n_conns)
		conn_close(srv, srv->n_conns - 1);
	return NULL;
}

void tsr_meta_server_adopt(struct tsr_meta_server *srv, int fd)
{
	uint64_t one = 1;
	int flags;

	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		tsr_error("meta: adopt socket %d: %s", fd, strerror(errno));
		close(fd);
		return;
	}
	pthread_mutex_lock(&srv->lock);
	if (srv->stopping) {
		pthread_mutex_unlock(&srv->lock);
		close(fd);
		return;
	}
	if (srv->n_pending == srv->cap_pending) {
		size_t cap = srv->cap_pending ? srv->cap_pending * 2 : 16;
		int *p = realloc(srv->pending, cap * sizeof(*p));

		if (p == NULL) {
			pthread_mutex_unlock(&srv->lock);
			tsr_error("meta: adopt socket %d: out of memory", fd);
			close(fd);
			return;
		}
		srv->pending = p;
		srv->cap_pending = cap;
	}
	srv->pending[srv->n_pending++] = fd;
	pthread_mutex_unlock(&srv->lock);
	if (write(srv->wake_fd, &one, sizeof(one)) < 0)
		tsr_debug("meta: write eventfd: %s", strerror(errno));
}

void tsr_meta_server_stop(struct tsr_meta_server *srv)
{
	uint64_t one = 1;

	if (srv == NULL)
		return;
	pthread_mutex_lock(&srv->lock);
	srv->stopping = true;
	pthread_mutex_unlock(&srv->lock);
	if (srv->thread_started) {
		if (write(srv->wake_fd, &one, sizeof(one)) < 0)
			tsr_debug("meta: write eventfd: %s", strerror(errno));
		pthread_join(srv->thread, NULL);
	}
	for (size_t i = 0; i < srv->n_pending; i++)
		close(srv->pending[i]);
	free(srv->pending);
	if (srv->wake_fd >= 0)
		close(srv->wake_fd);
	if (srv->token) {
		OPENSSL_cleanse(srv->token, strlen(srv->token));
		free(srv->token);
	}
	pthread_mutex_destroy(&srv->lock);
	free(srv);
}

int tsr_meta_server_start(struct tsr_meta *m, const char *token,
			  struct tsr_meta_server **out)
{
	struct tsr_meta_server *srv;
	int ret;

	if (m == NULL || token == NULL || out == NULL)
		return -EINVAL;
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return -ENOMEM;
	pthread_mutex_init(&srv->lock, NULL);
	srv->m = m;
	srv->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	srv->token = strdup(token);
	if (srv->wake_fd < 0 || srv->token == NULL) {
		ret = srv->token == NULL ? -ENOMEM : -errno;
		tsr_error("meta: start service: %s", strerror(-ret));
		goto err;
	}
	ret = -pthread_create(&srv->thread, NULL, server_thread, srv);
	if (ret) {
		tsr_error("meta: start service thread: %s", strerror(-ret));
		ret = -EAGAIN;
		goto err;
	}
	srv->thread_started = true;
	*out = srv;
	return 0;
err:
	tsr_meta_server_stop(srv);
	return ret;
}
