/*
 * Unit tests of the meta service (engine/meta/meta_server.c) and its client
 * backend (engine/meta/meta_remote.c): a sqlite store in a temporary
 * directory under /var/tmp, the service thread on it, a TCP listener on
 * 127.0.0.1 whose connections a small acceptor thread hands to
 * tsr_meta_server_adopt (as tesserad's --listen port does), and the remote
 * handle on the test's thread.  Covers the store's semantics through the
 * wire, authentication, reconnection after the service restarts, and
 * connections that send garbage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "meta/internal.h"

#define TOKEN "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

struct fixture {
	char dir[64];
	char path[128];
	char hostport[64];
	struct tsr_meta *store;      /* the sqlite handle the service serves */
	pthread_mutex_t lock;
	struct tsr_meta_server *srv; /* NULL while stopped: accepted sockets are closed */
	int listen_fd;
	int stop_pipe[2];
	pthread_t acceptor;
	unsigned accepted;
};

static void *acceptor_thread(void *arg)
{
	struct fixture *f = arg;

	for (;;) {
		struct pollfd pfd[2] = { { .fd = f->listen_fd, .events = POLLIN },
					 { .fd = f->stop_pipe[0], .events = POLLIN } };
		int fd;

		if (poll(pfd, 2, -1) < 0)
			continue;
		if (pfd[1].revents)
			return NULL;
		fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		pthread_mutex_lock(&f->lock);
		f->accepted++;
		if (f->srv)
			tsr_meta_server_adopt(f->srv, fd);
		else
			close(fd);
		pthread_mutex_unlock(&f->lock);
	}
}

static void server_start(struct fixture *f)
{
	struct tsr_meta_server *srv = NULL;

	assert_int_equal(tsr_meta_server_start(f->store, TOKEN, &srv), 0);
	pthread_mutex_lock(&f->lock);
	f->srv = srv;
	pthread_mutex_unlock(&f->lock);
}

static void server_stop(struct fixture *f)
{
	pthread_mutex_lock(&f->lock);
	tsr_meta_server_stop(f->srv);
	f->srv = NULL;
	pthread_mutex_unlock(&f->lock);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);

	assert_non_null(f);
	pthread_mutex_init(&f->lock, NULL);
	snprintf(f->dir, sizeof(f->dir), "/var/tmp/meta_remote_ut.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/meta.db", f->dir);
	assert_int_equal(tsr_meta_open_sqlite(f->path, &f->store), 0);
	f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->listen_fd >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(f->listen_fd, 64), 0);
	assert_int_equal(getsockname(f->listen_fd, (struct sockaddr *)&sin, &sl), 0);
	snprintf(f->hostport, sizeof(f->hostport), "127.0.0.1:%d", ntohs(sin.sin_port));
	assert_int_equal(pipe(f->stop_pipe), 0);
	server_start(f);
	assert_int_equal(pthread_create(&f->acceptor, NULL, acceptor_thread, f), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	assert_int_equal(write(f->stop_pipe[1], "x", 1), 1);
	pthread_join(f->acceptor, NULL);
	close(f->stop_pipe[0]);
	close(f->stop_pipe[1]);
	close(f->listen_fd);
	server_stop(f);
	tsr_meta_close(f->store);
	pthread_mutex_destroy(&f->lock);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", f->dir);
	free(f);
	return 0;
}

static struct tsr_meta *connect_remote(struct fixture *f)
{
	struct tsr_meta *m = NULL;

	assert_int_equal(tsr_meta_open_remote(f->hostport, TOKEN, 2000, &m), 0);
	assert_string_equal(tsr_meta_backend(m), "remote");
	return m;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void assert_value(struct tsr_meta *m, const char *key, const char *value)
{
	struct tsr_meta_kv kv;

	assert_int_equal(tsr_meta_get(m, key, &kv), 0);
	assert_string_equal(kv.key, key);
	assert_int_equal(kv.value_len, strlen(value));
	assert_memory_equal(kv.value, value, strlen(value));
	tsr_meta_kv_clear(&kv);
}

static void test_semantics(void **state)
{
	struct fixture *f = *state;
	struct tsr_meta *m = connect_remote(f);
	struct tsr_meta_kv kv, *kvs = NULL;
	uint64_t r1 = 0, r2 = 0, rev = 0, id = 0;
	uint8_t *big;
	size_t n = 0;

	assert_int_equal(tsr_meta_get(m, "vol/a", &kv), -ENOENT);
	assert_int_equal(tsr_meta_cas(m, "vol/a", 0, "one", 3, 0, &r1), 0);
	assert_int_equal(r1, 1);
	assert_int_equal(tsr_meta_cas(m, "vol/a", 0, "two", 3, 0, NULL), -ECANCELED);
	assert_int_equal(tsr_meta_cas(m, "vol/a", r1 + 1, "two", 3, 0, NULL), -ECANCELED);
	assert_int_equal(tsr_meta_cas(m, "vol/a", r1, "two", 3, 0, &r2), 0);
	assert_true(r2 > r1);
	assert_int_equal(tsr_meta_get(m, "vol/a", &kv), 0);
	assert_int_equal(kv.create_rev, r1);
	assert_int_equal(kv.mod_rev, r2);
	assert_memory_equal(kv.value, "two", 3);
	tsr_meta_kv_clear(&kv);
	assert_int_equal(tsr_meta_cas(m, "vol/a", TSR_META_ANY_REV, "three", 5, 0, NULL), 0);
	/* the same store seen locally */
	assert_value(f->store, "vol/a", "three");
	assert_int_equal(tsr_meta_cas(m, "vol/c", 0, "", 0, 0, NULL), 0);
	assert_int_equal(tsr_meta_cas(m, "vol/b", 0, "b", 1, 0, NULL), 0);
	assert_int_equal(tsr_meta_cas(m, "volx", 0, "x", 1, 0, NULL), 0);
	assert_int_equal(tsr_meta_range(m, "vol/", &kvs, &n, &rev), 0);
	assert_int_equal(n, 3);
	assert_string_equal(kvs[0].key, "vol/a");
	assert_string_equal(kvs[1].key, "vol/b");
	assert_string_equal(kvs[2].key, "vol/c");
	assert_int_equal(kvs[2].value_len, 0);
	assert_int_equal(rev, 6);
	tsr_meta_kv_free_array(kvs, n);
	/* delete with compare */
	assert_int_equal(tsr_meta_delete(m, "vol/b", 1), -ECANCELED);
	assert_int_equal(tsr_meta_delete(m, "vol/b", 5), 0);
	assert_int_equal(tsr_meta_delete(m, "vol/b", TSR_META_ANY_REV), -ENOENT);
	/* watch: puts and deletes since a revision */
	assert_int_equal(tsr_meta_watch(m, "vol/", 4, 0, &kvs, &n, &rev), 0);
	assert_int_equal(n, 2);
	assert_string_equal(kvs[0].key, "vol/b");
	assert_int_equal(kvs[0].deleted, 0);
	assert_string_equal(kvs[1].key, "vol/b");
	assert_int_equal(kvs[1].deleted, 1);
	assert_int_equal(rev, 7);
	tsr_meta_kv_free_array(kvs, n);
	/* invalid keys and values are refused before the wire */
	assert_int_equal(tsr_meta_cas(m, "", 0, "v", 1, 0, NULL), -EINVAL);
	assert_int_equal(tsr_meta_cas(m, "bad\nkey", 0, "v", 1, 0, NULL), -EINVAL);
	big = calloc(1, TSR_META_MAX_VALUE + 1);
	assert_non_null(big);
	assert_int_equal(tsr_meta_cas(m, "big", 0, big, TSR_META_MAX_VALUE + 1, 0, NULL), -EINVAL);
	assert_int_equal(tsr_meta_cas(m, "big", 0, big, TSR_META_MAX_VALUE, 0, NULL), 0);
	assert_int_equal(tsr_meta_get(m, "big", &kv), 0);
	assert_int_equal(kv.value_len, TSR_META_MAX_VALUE);
	tsr_meta_kv_clear(&kv);
	free(big);
	/* leases */
	assert_int_equal(tsr_meta_cas(m, "node/1", 0, "up", 2, 987654, NULL), -ENOENT);
	assert_int_equal(tsr_meta_lease_grant(m, 150, &id), 0);
	assert_true(id != 0);
	assert_int_equal(tsr_meta_cas(m, "node/1", 0, "up", 2, id, NULL), 0);
	for (int i = 0; i < 6; i++) {
		sleep_ms(50);
		assert_int_equal(tsr_meta_lease_keepalive(m, id), 0);
	}
	assert_value(m, "node/1", "up");
	sleep_ms(300);
	assert_int_equal(tsr_meta_get(m, "node/1", &kv), -ENOENT);
	assert_int_equal(tsr_meta_lease_keepalive(m, id), -ENOENT);
	assert_int_equal(tsr_meta_lease_grant(m, 10000, &id), 0);
	assert_int_equal(tsr_meta_cas(m, "node/2", 0, "up", 2, id, NULL), 0);
	assert_int_equal(tsr_meta_lease_revoke(m, id), 0);
	assert_int_equal(tsr_meta_get(m, "node/2", &kv), -ENOENT);
	assert_int_equal(tsr_meta_lease_revoke(m, id), -ENOENT);
	tsr_meta_close(m);
}

static void test_watch_compacted(void **state)
{
	struct fixture *f = *state;
	struct tsr_meta_kv *kvs = NULL;
	struct tsr_meta *m;
	size_t n = 0;

	/* serve a store with a short history */
	server_stop(f);
	tsr_meta_close(f->store);
	assert_int_equal(meta_sqlite_open(f->path, 3, &f->store), 0);
	server_start(f);
	m = connect_remote(f);
	for (int i = 0; i < 6; i++)
		assert_int_equal(tsr_meta_cas(m, "c", TSR_META_ANY_REV, "v", 1, 0, NULL), 0);
	assert_int_equal(tsr_meta_watch(m, "", 1, 0, &kvs, &n, NULL), -ECANCELED);
	assert_int_equal(tsr_meta_watch(m, "", 3, 0, &kvs, &n, NULL), 0);
	assert_int_equal(n, 3);
	tsr_meta_kv_free_array(kvs, n);
	tsr_meta_close(m);
}

struct delayed_put {
	struct tsr_meta *m;
	int delay_ms;
};

static void *delayed_put_thread(void *arg)
{
	struct delayed_put *d = arg;

	sleep_ms(d->delay_ms);
	tsr_meta_cas(d->m, "w/late", TSR_META_ANY_REV, "late", 4, 0, NULL);
	return NULL;
}

static void test_watch_wait(void **state)
{
	struct fixture *f = *state;
	struct tsr_meta *m = connect_remote(f);
	struct delayed_put d = { .m = f->store, .delay_ms = 150 };
	struct tsr_meta_kv *kvs = NULL;
	uint64_t rev = 0;
	int64_t t0, elapsed;
	pthread_t th;
	size_t n = 7;

	t0 = tsr_mono_ms();
	assert_int_equal(tsr_meta_watch(m, "w/", 0, 250, &kvs, &n, &rev), 0);
	elapsed = tsr_mono_ms() - t0;
	assert_int_equal(n, 0);
	assert_true(elapsed >= 240);
	assert_int_equal(rev, 0);
	/* a change made on the meta node wakes a remote watcher */
	assert_int_equal(pthread_create(&th, NULL, delayed_put_thread, &d), 0);
	t0 = tsr_mono_ms();
	assert_int_equal(tsr_meta_watch(m, "w/", rev, 5000, &kvs, &n, &rev), 0);
	elapsed = tsr_mono_ms() - t0;
	pthread_join(th, NULL);
	assert_int_equal(n, 1);
	assert_string_equal(kvs[0].key, "w/late");
	assert_true(elapsed < 4000);
	tsr_meta_kv_free_array(kvs, n);
	/* the service stayed responsive to others meanwhile (it never waits) */
	assert_value(m, "w/late", "late");
	tsr_meta_close(m);
}

static void test_wrong_token(void **state)
{
	struct fixture *f = *state;
	struct tsr_meta *m = NULL;
	char bad[] = TOKEN;

	bad[0] = 'f';
	assert_int_equal(tsr_meta_open_remote(f->hostport, bad, 2000, &m), -EACCES);
	assert_null(m);
	assert_int_equal(tsr_meta_open_remote(f->hostport, "", 2000, &m), -EACCES);
	/* the right one still works */
	m = connect_remote(f);
	assert_int_equal(tsr_meta_cas(m, "k", 0, "v", 1, 0, NULL), 0);
	tsr_meta_close(m);
}

static bool is_disconnect(int ret)
{
	return ret == -ECONNREFUSED || ret == -ECONNRESET || ret == -ENOTCONN;
}

static void test_reconnect(void **state)
{
	struct fixture *f = *state;
	struct tsr_meta *m = connect_remote(f), *m2 = NULL;
	struct tsr_meta_kv kv;
	int ret;

	assert_int_equal(tsr_meta_cas(m, "k", 0, "v1", 2, 0, NULL), 0);
	server_stop(f);
	ret = tsr_meta_get(m, "k", &kv);
	assert_true(is_disconnect(ret));
	ret = tsr_meta_get(m, "k", &kv); /* reconnects, the service is still away */
	assert_true(is_disconnect(ret));
	assert_true(is_disconnect(tsr_meta_open_remote(f->hostport, TOKEN, 2000, &m2)));
	server_start(f);
	assert_value(m, "k", "v1"); /* connected again by itself */
	assert_int_equal(tsr_meta_cas(m, "k", TSR_META_ANY_REV, "v2", 2, 0, NULL), 0);
	assert_value(f->store, "k", "v2");
	/* a restart while the client is idle costs it no failed call */
	server_stop(f);
	server_start(f);
	sleep_ms(20);
	assert_value(m, "k", "v2");
	assert_true(f->accepted >= 4);
	tsr_meta_close(m);
}

static void test_refused(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	struct tsr_meta *m = NULL;
	char hp[64];
	int fd;

	/* a port nobody listens on: bind one, never listen */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	snprintf(hp, sizeof(hp), "127.0.0.1:%d", ntohs(sin.sin_port));
	assert_int_equal(tsr_meta_open_remote(hp, TOKEN, 2000, &m), -ECONNREFUSED);
	close(fd);
	assert_int_equal(tsr_meta_open_remote("no-port", TOKEN, 2000, &m), -EINVAL);
	(void)f;
}

static int raw_connect(struct fixture *f)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int port = atoi(strchr(f->hostport, ':') + 1);

	assert_true(fd >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)port);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

/* The service closes the connection: recv sees EOF (or a reset) within 5 s. */
static void assert_closed(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	uint8_t buf[256];
	ssize_t k;

	for (;;) {
		assert_int_equal(poll(&pfd, 1, 5000), 1);
		k = recv(fd, buf, sizeof(buf), 0);
		if (k <= 0)
			break;
		/* a refusal reply may come first */
	}
	close(fd);
}

static void send_bytes(int fd, const void *buf, size_t len)
{
	assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void test_garbage(void **state)
{
	struct fixture *f = *state;
	struct tsr_meta *m = connect_remote(f);
	static const uint8_t magic[4] = { 'T', 'S', 'R', 'M' };
	static const uint8_t huge[4] = { 0x7f, 0xff, 0xff, 0xff };
	static const uint8_t junk_frame[] = { 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t empty_frame[] = { 0, 0, 0, 0 };
	int fd;

	assert_int_equal(tsr_meta_cas(m, "k", 0, "v", 1, 0, NULL), 0);
	/* not the magic */
	fd = raw_connect(f);
	send_bytes(fd, "GET / HTTP/1.0\r\n\r\n", 18);
	assert_closed(fd);
	/* the magic, then a frame over 1 MiB */
	fd = raw_connect(f);
	send_bytes(fd, magic, 4);
	send_bytes(fd, huge, 4);
	assert_closed(fd);
	/* the magic, then bytes that are not protobuf */
	fd = raw_connect(f);
	send_bytes(fd, magic, 4);
	send_bytes(fd, junk_frame, sizeof(junk_frame));
	assert_closed(fd);
	/* an empty frame: a Request with no op */
	fd = raw_connect(f);
	send_bytes(fd, magic, 4);
	send_bytes(fd, empty_frame, sizeof(empty_frame));
	assert_closed(fd);
	/* a half frame, then the client goes away */
	fd = raw_connect(f);
	send_bytes(fd, magic, 4);
	send_bytes(fd, junk_frame, 6);
	close(fd);
	/* an op before the Hello is refused */
	{
		Tessera__Meta__Request req = TESSERA__META__REQUEST__INIT;
		Tessera__Meta__Get get = TESSERA__META__GET__INIT;
		Tessera__Meta__Response *resp = NULL;
		uint8_t *frame = NULL, hdr[4], body[4096];
		size_t len = 0;
		uint32_t blen;

		get.key = (char *)"k";
		req.op_case = TESSERA__META__REQUEST__OP_GET;
		req.get = &get;
		assert_int_equal(meta_frame_pack(&req.base, &frame, &len), 0);
		fd = raw_connect(f);
		send_bytes(fd, magic, 4);
		send_bytes(fd, frame, len);
		free(frame);
		assert_int_equal(recv(fd, hdr, 4, MSG_WAITALL), 4);
		blen = meta_frame_len(hdr);
		assert_true(blen < sizeof(body));
		assert_int_equal(recv(fd, body, blen, MSG_WAITALL), (ssize_t)blen);
		assert_int_equal(meta_response_parse(body, blen, &resp, NULL), 0);
		assert_int_equal(resp->error, -EACCES);
		assert_int_equal(resp->n_kvs, 0);
		tessera__meta__response__free_unpacked(resp, NULL);
		assert_closed(fd);
	}
	/* the service still serves the good client, on its old connection */
	assert_value(m, "k", "v");
	assert_int_equal(tsr_meta_cas(m, "k", TSR_META_ANY_REV, "w", 1, 0, NULL), 0);
	tsr_meta_close(m);
}

/* A server that accepts but never answers: every call ends at its deadline. */
static void test_timeout(void **state)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	struct tsr_meta *m = NULL;
	int64_t t0, elapsed;
	char hp[64];
	int fd;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 8), 0); /* the kernel completes connects; nobody reads */
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	snprintf(hp, sizeof(hp), "127.0.0.1:%d", ntohs(sin.sin_port));
	t0 = tsr_mono_ms();
	assert_int_equal(tsr_meta_open_remote(hp, TOKEN, 300, &m), -ETIMEDOUT);
	elapsed = tsr_mono_ms() - t0;
	assert_null(m);
	assert_true(elapsed >= 290 && elapsed < 3000);
	close(fd);
	(void)state;
}

/* Past META_MAX_CONNS connections the service refuses more, and recovers. */
static void test_connection_limit(void **state)
{
	static const uint8_t magic[4] = { 'T', 'S', 'R', 'M' };
	struct fixture *f = *state;
	int fds[META_MAX_CONNS];
	struct tsr_meta *m = NULL;
	int ret;

	for (int i = 0; i < META_MAX_CONNS; i++) {
		fds[i] = raw_connect(f);
		send_bytes(fds[i], magic, 4); /* then silence: held open until the auth timeout */
	}
	sleep_ms(200); /* let the acceptor hand them all over */
	ret = tsr_meta_open_remote(f->hostport, TOKEN, 2000, &m);
	assert_true(is_disconnect(ret));
	for (int i = 0; i < 8; i++)
		close(fds[i]);
	sleep_ms(200); /* the service sees them go */
	m = connect_remote(f);
	assert_int_equal(tsr_meta_cas(m, "k", 0, "v", 1, 0, NULL), 0);
	tsr_meta_close(m);
	for (int i = 8; i < META_MAX_CONNS; i++)
		close(fds[i]);
}

/* Many clients at once, each with its own connection, all served. */
static void test_many_clients(void **state)
{
	struct fixture *f = *state;
	struct tsr_meta *ms[20];
	struct tsr_meta_kv *kvs = NULL;
	size_t n = 0;

	for (int i = 0; i < 20; i++)
		ms[i] = connect_remote(f);
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < 20; i++) {
			char key[32], val[32];

			snprintf(key, sizeof(key), "c/%02d", i);
			snprintf(val, sizeof(val), "%d", round);
			assert_int_equal(tsr_meta_cas(ms[i], key, TSR_META_ANY_REV, val,
						      strlen(val), 0, NULL), 0);
		}
	assert_int_equal(tsr_meta_range(ms[0], "c/", &kvs, &n, NULL), 0);
	assert_int_equal(n, 20);
	for (size_t i = 0; i < n; i++)
		assert_memory_equal(kvs[i].value, "2", 1);
	tsr_meta_kv_free_array(kvs, n);
	for (int i = 0; i < 20; i++)
		tsr_meta_close(ms[i]);
}

/* A range larger than one reply comes in pages that add up to everything. */
static void test_range_pages(void **state)
{
	struct fixture *f = *state;
	struct tsr_meta *m = connect_remote(f);
	struct tsr_meta_kv *kvs = NULL;
	uint8_t *val = calloc(1, TSR_META_MAX_VALUE);
	uint64_t rev = 0, last = 0;
	size_t n = 0;

	assert_non_null(val);
	for (int i = 0; i < 40; i++) {
		char key[32];

		snprintf(key, sizeof(key), "big/%02d", i);
		val[0] = (uint8_t)i;
		assert_int_equal(tsr_meta_cas(f->store, key, 0, val, TSR_META_MAX_VALUE, 0, &last),
				 0);
	}
	free(val);
	assert_int_equal(tsr_meta_cas(f->store, "bigger", 0, "x", 1, 0, &last), 0);
	assert_int_equal(tsr_meta_range(m, "big/", &kvs, &n, &rev), 0); /* 2.5 MiB */
	assert_int_equal(n, 40);
	assert_int_equal(rev, last);
	for (size_t i = 0; i < n; i++) {
		char key[32];

		snprintf(key, sizeof(key), "big/%02zu", i);
		assert_string_equal(kvs[i].key, key);
		assert_int_equal(kvs[i].value_len, TSR_META_MAX_VALUE);
		assert_int_equal(kvs[i].value[0], (uint8_t)i);
	}
	tsr_meta_kv_free_array(kvs, n);
	assert_int_equal(tsr_meta_range(m, "big", &kvs, &n, NULL), 0);
	assert_int_equal(n, 41);
	assert_string_equal(kvs[40].key, "bigger");
	tsr_meta_kv_free_array(kvs, n);
	/* watch replies come in bounded batches that add up to everything */
	{
		uint64_t since = 0;
		size_t total = 0, calls = 0;

		do {
			assert_int_equal(tsr_meta_watch(m, "big/", since, 0, &kvs, &n, &since), 0);
			total += n;
			calls++;
			tsr_meta_kv_free_array(kvs, n);
		} while (n > 0);
		assert_int_equal(total, 40);
		assert_true(calls >= 4);
		assert_int_equal(since, last);
	}
	tsr_meta_close(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_semantics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_compacted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_wait, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_token, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconnect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_clients, setup, teardown),
		cmocka_unit_test_setup_teardown(test_range_pages, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
