/*
 * The client backend ("remote"): the metadata calls sent to the meta node's
 * meta service (engine/meta/meta_server.c) over one blocking TCP connection,
 * in the protocol of proto/meta.proto.  Each call has a deadline (the handle's
 * timeout) covering connect, handshake, request and reply.  A connection the
 * server closed while the handle was idle is noticed before sending, and
 * replaced.  A call that loses the connection fails with
 * -ECONNRESET/-ETIMEDOUT/-ECONNREFUSED and leaves the handle disconnected;
 * the next call connects again and presents the token anew.  Calls are never
 * retried here: a cas whose reply was lost may or may not have happened, and
 * only the caller can check.  A range larger than one reply is fetched in
 * pages, started over if the store changed in between.  Every reply goes
 * through meta_response_parse before use.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "meta/internal.h"
#include "tessera/admin.h"

struct remote_meta {
	char *hostport;   /* "HOST:PORT" of the meta node */
	char *token;      /* cluster token, presented on every (re)connect */
	int timeout_ms;   /* bound of every call */
	int fd;           /* connected and authenticated; -1 when not */
};

/* Wait for fd to be ready for events before deadline. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int64_t left = deadline - tsr_mono_ms();
	int n;

	if (left <= 0)
		return -ETIMEDOUT;
	n = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	return 0;
}

static int send_all(int fd, const uint8_t *buf, size_t len, int64_t deadline)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			int ret = wait_fd(fd, POLLOUT, deadline);

			if (ret)
				return ret;
			continue;
		}
		if (n < 0)
			return -ECONNRESET;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int recv_all(int fd, uint8_t *buf, size_t len, int64_t deadline)
{
	while (len > 0) {
		ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			int ret = wait_fd(fd, POLLIN, deadline);

			if (ret)
				return ret;
			continue;
		}
		if (n <= 0)
			return -ECONNRESET; /* error, or the server closed the connection */
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int connect_tcp(const char *hostport, int64_t deadline, int *fd_out)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL, *ai;
	char host[256], port[16];
	int fd = -1, one = 1, ret;

	ret = tsr_admin_split_hostport(hostport, host, sizeof(host), port, sizeof(port));
	if (ret)
		return ret;
	if (getaddrinfo(host, port, &hints, &res))
		return -EHOSTUNREACH;
	ret = -ECONNREFUSED;
	for (ai = res; ai; ai = ai->ai_next) {
		int err = 0;
		socklen_t el = sizeof(err);

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0) {
			ret = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };
			int64_t left;

			while ((left = deadline - tsr_mono_ms()) > 0 &&
			       poll(&pfd, 1, (int)left) < 0 && errno == EINTR)
				;
			if (left <= 0 || !(pfd.revents & (POLLOUT | POLLERR | POLLHUP)))
				err = ETIMEDOUT;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el))
				err = errno;
			if (err == 0)
				break;
		} else {
			err = errno;
		}
		ret = -err;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return ret;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	*fd_out = fd;
	return 0;
}

static void disconnect(struct remote_meta *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
}

/* Send req, read and validate the reply; on a transport error, disconnect. */
static int exchange(struct remote_meta *r, const Tessera__Meta__Request *req, int64_t deadline,
		    Tessera__Meta__Response **resp)
{
	uint8_t *frame = NULL, hdr[4], *body = NULL;
	const char *why = NULL;
	size_t frame_len;
	uint32_t len;
	int ret;

	ret = meta_frame_pack(&req->base, &frame, &frame_len);
	if (ret)
		return ret;
	ret = send_all(r->fd, frame, frame_len, deadline);
	if (req->op_case == TESSERA__META__REQUEST__OP_HELLO)
		OPENSSL_cleanse(frame, frame_len); /* it carried the token */
	free(frame);
	if (ret == 0)
		ret = recv_all(r->fd, hdr, 4, deadline);
	if (ret)
		goto err;
	len = meta_frame_len(hdr);
	if (len > META_MAX_FRAME) {
		tsr_error("meta: %s: reply of %u bytes, over the 1 MiB limit", r->hostport, len);
		ret = -EPROTO;
		goto err;
	}
	body = malloc(len ? len : 1);
	if (body == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	ret = recv_all(r->fd, body, len, deadline);
	if (ret)
		goto err;
	ret = meta_response_parse(body, len, resp, &why);
	free(body);
	if (ret) {
		tsr_error("meta: %s: bad reply: %s", r->hostport, why);
		ret = -EPROTO;
		goto err_nofree;
	}
	return 0;
err:
	free(body);
err_nofree:
	/* the stream is out of step (or gone): start over on the next call */
	disconnect(r);
	return ret;
}

/* Connect, send the magic and the token.  0, or -errno with r->fd -1. */
static int reconnect(struct remote_meta *r, int64_t deadline)
{
	Tessera__Meta__Request req = TESSERA__META__REQUEST__INIT;
	Tessera__Meta__Hello hello = TESSERA__META__HELLO__INIT;
	Tessera__Meta__Response *resp = NULL;
	uint8_t magic[4] = { TSR_META_MAGIC & 0xff, (TSR_META_MAGIC >> 8) & 0xff,
			     (TSR_META_MAGIC >> 16) & 0xff, TSR_META_MAGIC >> 24 };
	int ret;

	ret = connect_tcp(r->hostport, deadline, &r->fd);
	if (ret) {
		r->fd = -1;
		return ret;
	}
	ret = send_all(r->fd, magic, 4, deadline);
	if (ret) {
		disconnect(r);
		return ret;
	}
	hello.token = r->token;
	req.op_case = TESSERA__META__REQUEST__OP_HELLO;
	req.hello = &hello;
	ret = exchange(r, &req, deadline, &resp);
	if (ret)
		return ret;
	ret = resp->error;
	tessera__meta__response__free_unpacked(resp, NULL);
	if (ret)
		disconnect(r); /* -EACCES: the server closes too */
	return ret;
}

/* One request, connecting first when needed.  *resp->error is the op's outcome. */
static int call(struct remote_meta *r, Tessera__Meta__Request *req,
		Tessera__Meta__Response **resp)
{
	int64_t deadline = tsr_mono_ms() + r->timeout_ms;
	int ret;

	*resp = NULL;
	if (r->fd >= 0) {
		struct pollfd pfd = { .fd = r->fd, .events = POLLIN };

		/*
		 * Nothing is due from the server between calls: readable means it
		 * closed the connection (restarted, or dropped us).  Reconnect
		 * before sending, when no request can have been half done.
		 */
		if (poll(&pfd, 1, 0) > 0)
			disconnect(r);
	}
	if (r->fd < 0) {
		ret = reconnect(r, deadline);
		if (ret)
			return ret;
	}
	ret = exchange(r, req, deadline, resp);
	if (ret)
		return ret;
	ret = (*resp)->error;
	if (ret) {
		tessera__meta__response__free_unpacked(*resp, NULL);
		*resp = NULL;
	}
	return ret;
}

/* Copy a reply's kvs, which must all start with prefix, into a malloc'd array. */
static int kvs_from_resp(const Tessera__Meta__Response *resp, const char *prefix,
			 struct tsr_meta_kv **out, size_t *n)
{
	size_t plen = strlen(prefix);
	struct tsr_meta_kv *kvs;
	int ret;

	*out = NULL;
	*n = 0;
	if (resp->n_kvs == 0)
		return 0;
	for (size_t i = 0; i < resp->n_kvs; i++)
		if (strncmp(resp->kvs[i]->key, prefix, plen) != 0)
			return -EPROTO;
	kvs = calloc(resp->n_kvs, sizeof(*kvs));
	if (kvs == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < resp->n_kvs; i++) {
		ret = meta_kv_from_proto(&kvs[i], resp->kvs[i]);
		if (ret) {
			tsr_meta_kv_free_array(kvs, i);
			return ret;
		}
	}
	*out = kvs;
	*n = resp->n_kvs;
	return 0;
}

static int remote_get(void *ctx, const char *key, struct tsr_meta_kv *out)
{
	Tessera__Meta__Request req = TESSERA__META__REQUEST__INIT;
	Tessera__Meta__Get get = TESSERA__META__GET__INIT;
	Tessera__Meta__Response *resp;
	int ret;

	get.key = (char *)key;
	req.op_case = TESSERA__META__REQUEST__OP_GET;
	req.get = &get;
	ret = call(ctx, &req, &resp);
	if (ret)
		return ret;
	if (resp->n_kvs != 1 || strcmp(resp->kvs[0]->key, key) != 0)
		ret = -EPROTO;
	else
		ret = meta_kv_from_proto(out, resp->kvs[0]);
	tessera__meta__response__free_unpacked(resp, NULL);
	return ret;
}

static int remote_range(void *ctx, const char *prefix, struct tsr_meta_kv **out, size_t *n,
			uint64_t *rev)
{
	struct remote_meta *r = ctx;
	int64_t deadline = tsr_mono_ms() + r->timeout_ms;
	Tessera__Meta__Request req = TESSERA__META__REQUEST__INIT;
	Tessera__Meta__Range range = TESSERA__META__RANGE__INIT;
	Tessera__Meta__Response *resp;
	struct tsr_meta_kv *all = NULL, *page = NULL;
	size_t n_all = 0, n_page = 0;
	char last[TSR_META_MAX_KEY + 1] = "";
	bool more;
	int ret;

	range.prefix = (char *)prefix;
	range.start_after = last;
	req.op_case = TESSERA__META__REQUEST__OP_RANGE;
	req.range = &range;
	do {
		struct tsr_meta_kv *tmp;

		ret = call(r, &req, &resp);
		if (ret)
			goto err;
		more = resp->more;
		ret = kvs_from_resp(resp, prefix, &page, &n_page);
		if (ret == 0 && n_all > 0 && resp->rev != *rev) {
			/* changed between pages: start over for one consistent snapshot */
			tsr_meta_kv_free_array(all, n_all);
			tsr_meta_kv_free_array(page, n_page);
			all = page = NULL;
			n_all = n_page = 0;
			last[0] = '\0';
			more = true;
			tessera__meta__response__free_unpacked(resp, NULL);
			if (tsr_mono_ms() >= deadline) {
				ret = -ETIMEDOUT;
				goto err;
			}
			continue;
		}
		*rev = resp->rev;
		tessera__meta__response__free_unpacked(resp, NULL);
		if (ret)
			goto err;
		if (more && (n_page == 0 ||
			     (n_all > 0 && strcmp(page[0].key, all[n_all - 1].key) <= 0))) {
			tsr_error("meta: %s: range %s: page out of order", r->hostport, prefix);
			tsr_meta_kv_free_array(page, n_page);
			ret = -EPROTO;
			goto err;
		}
		if (n_page) {
			tmp = realloc(all, (n_all + n_page) * sizeof(*all));
			if (tmp == NULL) {
				tsr_meta_kv_free_array(page, n_page);
				ret = -ENOMEM;
				goto err;
			}
			all = tmp;
			memcpy(all + n_all, page, n_page * sizeof(*page));
			n_all += n_page;
			free(page); /* its contents now belong to all */
			page = NULL;
			snprintf(last, sizeof(last), "%s", all[n_all - 1].key);
		}
	} while (more);
	*out = all;
	*n = n_all;
	return 0;
err:
	tsr_meta_kv_free_array(all, n_all);
	return ret;
}

static int remote_cas(void *ctx, const char *key, uint64_t expect_rev, const void *value,
		      size_t value_len, uint64_t lease, uint64_t *new_rev)
{
	Tessera__Meta__Request req = TESSERA__META__REQUEST__INIT;
	Tessera__Meta__Cas cas = TESSERA__META__CAS__INIT;
	Tessera__Meta__Response *resp;
	int ret;

	cas.key = (char *)key;
	cas.expect_rev = expect_rev;
	cas.value.data = (uint8_t *)value;
	cas.value.len = value_len;
	cas.lease = lease;
	req.op_case = TESSERA__META__REQUEST__OP_CAS;
	req.cas = &cas;
	ret = call(ctx, &req, &resp);
	if (ret)
		return ret;
	*new_rev = resp->rev;
	tessera__meta__response__free_unpacked(resp, NULL);
	return 0;
}

static int remote_del(void *ctx, const char *key, uint64_t expect_rev)
{
	Tessera__Meta__Request req = TESSERA__META__REQUEST__INIT;
	Tessera__Meta__Delete del = TESSERA__META__DELETE__INIT;
	Tessera__Meta__Response *resp;
	int ret;

	del.key = (char *)key;
	del.expect_rev = expect_rev;
	req.op_case = TESSERA__META__REQUEST__OP_DELETE;
	req.delete_ = &del;
	ret = call(ctx, &req, &resp);
	if (ret)
		return ret;
	tessera__meta__response__free_unpacked(resp, NULL);
	return 0;
}

static int remote_watch(void *ctx, const char *prefix, uint64_t since_rev,
			struct tsr_meta_kv **events, size_t *n, uint64_t *rev)
{
	Tessera__Meta__Request req = TESSERA__META__REQUEST__INIT;
	Tessera__Meta__Watch watch = TESSERA__META__WATCH__INIT;
	Tessera__Meta__Response *resp;
	int ret;

	watch.prefix = (char *)prefix;
	watch.since_rev = since_rev;
	req.op_case = TESSERA__META__REQUEST__OP_WATCH;
	req.watch = &watch;
	ret = call(ctx, &req, &resp);
	if (ret)
		return ret;
	ret = kvs_from_resp(resp, prefix, events, n);
	*rev = resp->rev;
	tessera__meta__response__free_unpacked(resp, NULL);
	return ret;
}

static int remote_lease_grant(void *ctx, uint32_t ttl_ms, uint64_t *id)
{
	Tessera__Meta__Request req = TESSERA__META__REQUEST__INIT;
	Tessera__Meta__LeaseGrant grant = TESSERA__META__LEASE_GRANT__INIT;
	Tessera__Meta__Response *resp;
	int ret;

	grant.ttl_ms = ttl_ms;
	req.op_case = TESSERA__META__REQUEST__OP_LEASE_GRANT;
	req.lease_grant = &grant;
	ret = call(ctx, &req, &resp);
	if (ret)
		return ret;
	*id = resp->id;
	tessera__meta__response__free_unpacked(resp, NULL);
	return 0;
}

static int remote_lease_keepalive(void *ctx, uint64_t id)
{
	Tessera__Meta__Request req = TESSERA__META__REQUEST__INIT;
	Tessera__Meta__LeaseKeepalive ka = TESSERA__META__LEASE_KEEPALIVE__INIT;
	Tessera__Meta__Response *resp;
	int ret;

	ka.id = id;
	req.op_case = TESSERA__META__REQUEST__OP_LEASE_KEEPALIVE;
	req.lease_keepalive = &ka;
	ret = call(ctx, &req, &resp);
	if (ret)
		return ret;
	tessera__meta__response__free_unpacked(resp, NULL);
	return 0;
}

static int remote_lease_revoke(void *ctx, uint64_t id)
{
	Tessera__Meta__Request req = TESSERA__META__REQUEST__INIT;
	Tessera__Meta__LeaseRevoke rv = TESSERA__META__LEASE_REVOKE__INIT;
	Tessera__Meta__Response *resp;
	int ret;

	rv.id = id;
	req.op_case = TESSERA__META__REQUEST__OP_LEASE_REVOKE;
	req.lease_revoke = &rv;
	ret = call(ctx, &req, &resp);
	if (ret)
		return ret;
	tessera__meta__response__free_unpacked(resp, NULL);
	return 0;
}

static void remote_close(void *ctx)
{
	struct remote_meta *r = ctx;

	if (r == NULL)
		return;
	disconnect(r);
	if (r->token) {
		OPENSSL_cleanse(r->token, strlen(r->token));
		free(r->token);
	}
	free(r->hostport);
	free(r);
}

static const struct tsr_meta_ops remote_ops = {
	.name = "remote",
	.get = remote_get,
	.range = remote_range,
	.cas = remote_cas,
	.del = remote_del,
	.watch = remote_watch,
	.wait = NULL, /* the wrapper polls the server every 50 ms */
	.lease_grant = remote_lease_grant,
	.lease_keepalive = remote_lease_keepalive,
	.lease_revoke = remote_lease_revoke,
	.close = remote_close,
};

int tsr_meta_open_remote(const char *hostport, const char *token, int timeout_ms,
			 struct tsr_meta **out)
{
	struct remote_meta *r;
	int ret;

	if (hostport == NULL || token == NULL || out == NULL || timeout_ms < 0 ||
	    strlen(token) > META_MAX_TOKEN)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->fd = -1;
	r->timeout_ms = timeout_ms ? timeout_ms : META_DEFAULT_TIMEOUT_MS;
	r->hostport = strdup(hostport);
	r->token = strdup(token);
	if (r->hostport == NULL || r->token == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	ret = reconnect(r, tsr_mono_ms() + r->timeout_ms);
	if (ret)
		goto err;
	return tsr_meta_new(&remote_ops, r, out);
err:
	remote_close(r);
	return ret;
}
