/*
 * Admin API client: blocking request/reply calls for command-line tools (the
 * tessera CLI, tests, later the CSI plugin).  One connection, one request at
 * a time; replies are validated by tsr_admin_response_parse before use.
 * Nothing is logged here: the caller knows how to tell its user.  Secrets are
 * wiped with glibc's explicit_bzero, not OPENSSL_cleanse: this file needs no
 * libcrypto, which costs the CLI milliseconds to load on every run.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin_internal.h"

struct tsr_admin_client {
	int fd;
	char *token; /* NULL on the unix socket */
};

static int client_new(int fd, const char *token, struct tsr_admin_client **out)
{
	struct tsr_admin_client *c = calloc(1, sizeof(*c));

	if (c == NULL)
		goto nomem;
	c->fd = fd;
	if (token) {
		c->token = strdup(token);
		if (c->token == NULL)
			goto nomem;
	}
	*out = c;
	return 0;
nomem:
	free(c);
	close(fd);
	return -ENOMEM;
}

int admin_connect_tcp_timeout(const char *hostport, const char *token, int timeout_ms,
			      struct tsr_admin_client **out)
{
	int64_t deadline = tsr_mono_ms() + timeout_ms;
	struct pollfd pfd = { .events = POLLOUT };
	socklen_t len = sizeof(int);
	int fd, ret, err = 0, n;

	ret = admin_tcp_connect(hostport, true, &fd);
	if (ret)
		return ret;
	pfd.fd = fd;
	do {
		int64_t left = deadline - tsr_mono_ms();

		n = left > 0 ? poll(&pfd, 1, (int)left) : 0;
	} while (n < 0 && errno == EINTR);
	if (n <= 0)
		ret = n == 0 ? -ETIMEDOUT : -errno;
	else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		ret = -errno;
	else
		ret = -err;
	if (ret) {
		close(fd);
		return ret;
	}
	return client_new(fd, token, out);
}

int tsr_admin_connect_unix(const char *path, struct tsr_admin_client **out)
{
	int fd, ret;

	ret = tsr_admin_connect_socket(path, NULL, &fd);
	if (ret)
		return ret;
	return client_new(fd, NULL, out);
}

int tsr_admin_connect_tcp(const char *hostport, const char *token,
			  struct tsr_admin_client **out)
{
	int fd, ret;

	ret = tsr_admin_connect_socket(NULL, hostport, &fd);
	if (ret)
		return ret;
	return client_new(fd, token, out);
}

void tsr_admin_close(struct tsr_admin_client *c)
{
	if (c == NULL)
		return;
	close(c->fd);
	if (c->token) {
		explicit_bzero(c->token, strlen(c->token));
		free(c->token);
	}
	free(c);
}

/* Wait for fd to be ready for events before deadline (-1: none). */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int timeout = -1, n;

	if (deadline >= 0) {
		int64_t left = deadline - tsr_mono_ms();

		if (left <= 0)
			return -ETIMEDOUT;
		timeout = left > 1000000 ? 1000000 : (int)left;
	}
	n = poll(&pfd, 1, timeout);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	if (n == 0)
		return deadline >= 0 && tsr_mono_ms() >= deadline ? -ETIMEDOUT : 0;
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
			return errno == ECONNRESET ? -ECONNRESET : -EPIPE;
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
		if (n < 0)
			return errno == ECONNRESET ? -ECONNRESET : -EPIPE;
		if (n == 0)
			return -ECONNRESET; /* the server closed the connection */
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int tsr_admin_call(struct tsr_admin_client *c, Tessera__Admin__Request *req,
		   int timeout_ms, Tessera__Admin__Response **resp)
{
	int64_t deadline = timeout_ms > 0 ? tsr_mono_ms() + timeout_ms : -1;
	char *saved_token = req->token;
	uint8_t *frame = NULL, hdr[4], *body = NULL;
	size_t frame_len;
	uint32_t len;
	int ret;

	*resp = NULL;
	if (c->token)
		req->token = c->token;
	ret = admin_frame_pack(&req->base, &frame, &frame_len);
	req->token = saved_token;
	if (ret)
		return ret;
	ret = send_all(c->fd, frame, frame_len, deadline);
	if (ret)
		goto out;
	ret = recv_all(c->fd, hdr, 4, deadline);
	if (ret)
		goto out;
	len = admin_frame_len(hdr);
	if (len > TSR_ADMIN_MAX_FRAME) {
		ret = -EPROTO;
		goto out;
	}
	body = malloc(len ? len : 1);
	if (body == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	ret = recv_all(c->fd, body, len, deadline);
	if (ret)
		goto out;
	ret = tsr_admin_response_parse(body, len, resp, NULL);
	if (ret)
		ret = -EPROTO;
out:
	if (frame) {
		explicit_bzero(frame, frame_len); /* it carried the token */
		free(frame);
	}
	free(body);
	return ret;
}

int tsr_admin_read_token(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	size_t n;
	int ret = 0;

	if (f == NULL)
		return -errno;
	if (fgets(buf, (int)len, f) == NULL)
		ret = ferror(f) ? -EIO : -EINVAL;
	fclose(f);
	if (ret)
		return ret;
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
			 buf[n - 1] == '\t'))
		buf[--n] = '\0';
	return n ? 0 : -EINVAL;
}
