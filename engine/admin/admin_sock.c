/*
 * Socket helpers shared by the admin server, the admin client and tesserad's
 * NBD listeners: "HOST:PORT" parsing, listening on TCP or a unix socket,
 * connecting.  Every socket is close-on-exec; listening ones are non-blocking.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin/admin_internal.h"

int tsr_admin_split_hostport(const char *hostport, char *host, size_t host_len, char *port,
			     size_t port_len)
{
	const char *colon, *h = hostport;
	size_t hl;

	if (hostport == NULL)
		return -EINVAL;
	if (hostport[0] == '[') {
		const char *close = strchr(hostport, ']');

		if (close == NULL || close[1] != ':')
			return -EINVAL;
		h = hostport + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(hostport, ':');
		if (colon == NULL || memchr(hostport, ':', (size_t)(colon - hostport)))
			return -EINVAL; /* no port, or an IPv6 address without brackets */
		hl = (size_t)(colon - hostport);
	}
	if (hl == 0 || hl >= host_len || strlen(colon + 1) == 0 || strlen(colon + 1) >= port_len)
		return -EINVAL;
	for (const char *p = colon + 1; *p; p++)
		if (*p < '0' || *p > '9')
			return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

static void format_name(const char *host, int port, char *name, size_t name_len)
{
	if (strchr(host, ':'))
		snprintf(name, name_len, "tcp:[%s]:%d", host, port);
	else
		snprintf(name, name_len, "tcp:%s:%d", host, port);
}

int tsr_admin_listen_tcp(const char *hostport, int *fd_out, char *name, size_t name_len)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res = NULL, *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[256], port[16];
	int fd = -1, one = 1, ret, gai;

	ret = tsr_admin_split_hostport(hostport, host, sizeof(host), port, sizeof(port));
	if (ret)
		return ret;
	gai = getaddrinfo(host, port, &hints, &res);
	if (gai) {
		tsr_error("listen: %s: %s", hostport, gai_strerror(gai));
		return -EINVAL;
	}
	ret = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0) {
			ret = -errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0)
			break;
		ret = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		tsr_error("listen: tcp:%s: %s", hostport, strerror(-ret));
		return ret;
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
		int actual = ss.ss_family == AF_INET6 ?
			ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) :
			ntohs(((struct sockaddr_in *)&ss)->sin_port);
		format_name(host, actual, name, name_len);
	} else {
		snprintf(name, name_len, "tcp:%s", hostport);
	}
	*fd_out = fd;
	return 0;
}

int tsr_admin_listen_unix(const char *path, int *fd_out)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old_mask;
	int fd, ret;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		tsr_error("listen: unix:%s: path longer than %zu bytes", path,
			  sizeof(sun.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(sun.sun_path, path);
	/* a socket left by a process that died; the store lock says we own DIR */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		ret = -errno;
		tsr_error("listen: unix:%s: socket: %s", path, strerror(-ret));
		return ret;
	}
	/* created 0600 from the start: no window where others could connect */
	old_mask = umask(0177);
	ret = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old_mask);
	if (ret == 0)
		ret = listen(fd, 128);
	if (ret) {
		ret = -errno;
		tsr_error("listen: unix:%s: %s", path, strerror(-ret));
		close(fd);
		return ret;
	}
	*fd_out = fd;
	return 0;
}

/* HOST:PORT's addresses into *res (freeaddrinfo): a numeric host without a
 * resolver round trip, a name resolved (blocking).  0, -EINVAL (not
 * HOST:PORT) or -EHOSTUNREACH (the name does not resolve: why, if not NULL,
 * says why; for EAI_SYSTEM from errno, read as getaddrinfo left it). */
static int addr_lookup(const char *hostport, struct addrinfo **res, char *why, size_t why_len)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV | AI_NUMERICHOST };
	char host[256], port[16];
	int ret;

	ret = tsr_admin_split_hostport(hostport, host, sizeof(host), port, sizeof(port));
	if (ret) {
		if (why)
			snprintf(why, why_len, "not HOST:PORT");
		return ret;
	}
	*res = NULL;
	if (getaddrinfo(host, port, &hints, res)) {
		hints.ai_flags &= ~AI_NUMERICHOST;
		*res = NULL;
		ret = getaddrinfo(host, port, &hints, res);
		if (ret) {
			int err = errno;

			if (why)
				snprintf(why, why_len, "%s",
					 ret == EAI_SYSTEM ? strerror(err) : gai_strerror(ret));
			return -EHOSTUNREACH;
		}
	}
	return 0;
}

int admin_resolve(const char *hostport, char (*out)[ADMIN_ADDR_MAX], unsigned max, char *why,
		  size_t why_len)
{
	struct addrinfo *res, *ai;
	unsigned n = 0;
	int ret = addr_lookup(hostport, &res, why, why_len);

	if (ret)
		return ret;
	for (ai = res; ai && n < max; ai = ai->ai_next) {
		char host[NI_MAXHOST], port[NI_MAXSERV];

		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), port,
				sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV))
			continue;
		if (strchr(host, ':'))
			ret = snprintf(out[n], ADMIN_ADDR_MAX, "[%s]:%s", host, port);
		else
			ret = snprintf(out[n], ADMIN_ADDR_MAX, "%s:%s", host, port);
		if (ret > 0 && ret < ADMIN_ADDR_MAX)
			n++;
	}
	freeaddrinfo(res);
	if (n == 0)
		snprintf(why, why_len, "none of its addresses prints as a numeric address");
	return n ? (int)n : -EHOSTUNREACH;
}

/*
 * A TCP connection to "HOST:PORT" (numeric hosts are tried without a resolver
 * round trip first), TCP_NODELAY set.  nonblock: the socket is non-blocking
 * and the connect may still be in progress (EINPROGRESS) when this returns.
 * 0 or -errno (-EHOSTUNREACH when the name does not resolve).
 */
int admin_tcp_connect(const char *hostport, bool nonblock, int *fd_out)
{
	struct addrinfo *res = NULL, *ai;
	int fd = -1, ret, one = 1;

	ret = addr_lookup(hostport, &res, NULL, 0);
	if (ret)
		return ret;
	ret = -ECONNREFUSED;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family,
			    ai->ai_socktype | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0),
			    ai->ai_protocol);
		if (fd < 0) {
			ret = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
		    (nonblock && errno == EINPROGRESS))
			break;
		ret = -errno;
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

int tsr_admin_connect_socket(const char *unix_path, const char *hostport, int *fd_out)
{
	int fd = -1, ret;

	if (unix_path) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };

		if (strlen(unix_path) >= sizeof(sun.sun_path))
			return -ENAMETOOLONG;
		strcpy(sun.sun_path, unix_path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun))) {
			ret = -errno;
			close(fd);
			return ret;
		}
	} else {
		ret = admin_tcp_connect(hostport, false, &fd);
		if (ret)
			return ret;
	}
	*fd_out = fd;
	return 0;
}
