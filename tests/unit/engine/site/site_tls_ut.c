/*
 * Unit tests of the site transport (engine/site/site_tls.c): mutual TLS 1.3
 * between two threads over a non-blocking socketpair, each side driven by
 * poll() on tsr_site_tls_want as an event loop would.  The certificates are
 * made at test time by site_certs.h in a temporary directory: a CA, a good
 * server and client, expired, not yet valid, signed by another CA, carrying
 * the wrong name.  Checked: the good pair's bytes round trip both
 * ways; every bad certificate is refused on the verifying side with the
 * right X509 error and a log line naming it, and no application byte
 * crosses; a client with no certificate, a clear-text client and a TLS 1.2
 * client are refused; context errors (missing file, key mismatch, not PEM).
 * Gathered writes (one thread drives both ends): 13 records in one send
 * (send counted through -Wl,--wrap=send), and a socket that takes only part
 * of them keeps the rest queued, in order, until the reader reads.
 */
#include <errno.h>
#include <fcntl.h>
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
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "tessera/site.h"
#include "site_certs.h"
#include "log_capture.h"

static char g_dir[SITE_CERTS_DIR_MAX]; /* certificates (site_certs.h) and the log */

/* ---- certificates ---- */

static const char *path_of(const char *tag, const char *ext)
{
	static char buf[8][160];
	static int next;
	char *p = buf[next++ % 8];

	snprintf(p, 160, "%s/%s.%s", g_dir, tag, ext);
	return p;
}

static int setup(void **state)
{
	static const struct {
		const char *tag, *cn;
		enum site_cert_kind kind;
	} leaves[] = {
	    {"dr", "dr.site.test", SITE_CERT_GOOD},
	    {"primary", "primary.site.test", SITE_CERT_GOOD},
	    {"dr-expired", "dr.site.test", SITE_CERT_EXPIRED},
	    {"primary-expired", "primary.site.test", SITE_CERT_EXPIRED},
	    {"dr-future", "dr.site.test", SITE_CERT_FUTURE},
	    {"dr-otherca", "dr.site.test", SITE_CERT_OTHER_CA},
	    {"primary-otherca", "primary.site.test", SITE_CERT_OTHER_CA},
	    {"dr-wrongname", "mallory.site.test", SITE_CERT_GOOD},
	    {"primary-wrongname", "mallory.site.test", SITE_CERT_GOOD},
	};

	(void)state;
	if (site_certs_init(g_dir))
		return -1;
	for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++)
		if (site_certs_leaf(g_dir, leaves[i].tag, leaves[i].cn, leaves[i].kind))
			return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return site_certs_cleanup(g_dir);
}

/* ---- one side of a connection, on its own thread ---- */

enum mode { TLS_SIDE, PLAINTEXT, RAW_TLS };

struct side {
	struct tsr_site_tls_ctx *ctx; /* TLS_SIDE */
	SSL_CTX *raw;                 /* RAW_TLS: a client not made by tsr_site_tls */
	enum mode mode;
	int fd;
	const char *peer_name;
	const char *tx;          /* sent after the handshake */
	size_t rx_want;          /* bytes to read after sending */
	/* results */
	int hs;                  /* handshake result */
	long verify;             /* tsr_site_tls_verify_error */
	char rx[256];
	size_t rx_len;
	int rx_err;              /* 0, or the read's error / -ECONNRESET at EOF */
};

static int wait_fd(int fd, short events)
{
	struct pollfd p = {.fd = fd, .events = events};
	int n = poll(&p, 1, 10000);

	return n == 1 ? 0 : -ETIMEDOUT;
}

static void run_tls(struct side *s)
{
	struct tsr_site_tls *t;
	size_t sent = 0, len = s->tx ? strlen(s->tx) : 0;
	ssize_t n;

	assert_int_equal(tsr_site_tls_new(s->ctx, s->fd, s->peer_name, &t), 0);
	assert_int_equal(tsr_site_tls_read(t, s->rx, 1), -ENOTCONN);
	while ((s->hs = tsr_site_tls_handshake(t)) == -EAGAIN)
		if (wait_fd(s->fd, tsr_site_tls_want(t)) < 0)
			break;
	s->verify = tsr_site_tls_verify_error(t);
	if (s->hs != 0)
		goto out;
	while (sent < len) {
		n = tsr_site_tls_write(t, s->tx + sent, len - sent);
		if (n == -EAGAIN && wait_fd(s->fd, tsr_site_tls_want(t)) == 0)
			continue;
		if (n < 0) {
			s->rx_err = (int)n;
			goto out;
		}
		sent += (size_t)n;
	}
	while (s->rx_len < s->rx_want) {
		n = tsr_site_tls_read(t, s->rx + s->rx_len, s->rx_want - s->rx_len);
		if (n == -EAGAIN && wait_fd(s->fd, tsr_site_tls_want(t)) == 0)
			continue;
		if (n <= 0) {
			s->rx_err = n == 0 ? -ECONNRESET : (int)n;
			break;
		}
		s->rx_len += (size_t)n;
	}
out:
	tsr_site_tls_free(t);
	shutdown(s->fd, SHUT_RDWR); /* the other side sees EOF, never hangs */
}

/* A clear-text client: sends a site HELLO header as is, reads what comes. */
static void run_plain(struct side *s)
{
	uint8_t hdr[TSR_SITE_HDR_SIZE];
	struct tsr_site_hdr h = {.opcode = TSR_SITE_HELLO, .length = 8};
	ssize_t n;

	tsr_site_hdr_pack(&h, hdr);
	assert_int_equal(write(s->fd, hdr, sizeof(hdr)), sizeof(hdr));
	for (;;) {
		if (wait_fd(s->fd, POLLIN) < 0)
			break;
		n = read(s->fd, s->rx + s->rx_len, sizeof(s->rx) - s->rx_len);
		if (n <= 0)
			break;
		s->rx_len += (size_t)n;
	}
	s->hs = 0;
	shutdown(s->fd, SHUT_RDWR);
}

/* A client on a raw OpenSSL context (RAW_TLS): TLS 1.2 only, or no certificate. */
static void run_raw(struct side *s)
{
	SSL *ssl = SSL_new(s->raw);
	int r, e;

	assert_non_null(ssl);
	SSL_set_fd(ssl, s->fd);
	for (;;) {
		r = SSL_connect(ssl);
		if (r == 1)
			break;
		e = SSL_get_error(ssl, r);
		if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) ||
		    wait_fd(s->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT) < 0)
			break;
	}
	s->hs = r == 1 ? 0 : -EPROTO;
	SSL_free(ssl);
	shutdown(s->fd, SHUT_RDWR);
}

static void *side_main(void *arg)
{
	struct side *s = arg;

	switch (s->mode) {
	case TLS_SIDE: run_tls(s); break;
	case PLAINTEXT: run_plain(s); break;
	case RAW_TLS: run_raw(s); break;
	}
	return NULL;
}

static struct tsr_site_tls_ctx *ctx_for(const char *tag, bool server)
{
	struct tsr_site_tls_opts o = {.ca_file = path_of("ca", "crt"),
				      .cert_file = path_of(tag, "crt"),
				      .key_file = path_of(tag, "key"), .server = server};
	struct tsr_site_tls_ctx *ctx = NULL;

	assert_int_equal(tsr_site_tls_ctx_create(&o, &ctx), 0);
	return ctx;
}

/* Where the log is captured (log_capture.h). */
static const char *log_path(void)
{
	static char path[SITE_CERTS_DIR_MAX + 8];

	snprintf(path, sizeof(path), "%s/log", g_dir);
	return path;
}

/* Run server s and client c against each other; the log they write lands
 * in log (stderr captured). */
static void run_pair(struct side *srv, struct side *cli, char *log, size_t loglen)
{
	struct log_capture lc;
	pthread_t ts, tc;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	srv->fd = sv[0];
	cli->fd = sv[1];
	log_begin(&lc, log_path());
	assert_int_equal(pthread_create(&ts, NULL, side_main, srv), 0);
	assert_int_equal(pthread_create(&tc, NULL, side_main, cli), 0);
	pthread_join(ts, NULL);
	pthread_join(tc, NULL);
	log_end(&lc, log, loglen);
	close(sv[0]);
	close(sv[1]);
}

static void test_good_pair(void **state)
{
	struct side srv = {.ctx = ctx_for("dr", true), .peer_name = "primary.site.test",
			   .tx = "ACK through 41", .rx_want = 11};
	struct side cli = {.ctx = ctx_for("primary", false), .peer_name = "dr.site.test",
			   .tx = "WRITE seq 1", .rx_want = 14};
	char log[4096];

	(void)state;
	run_pair(&srv, &cli, log, sizeof(log));
	assert_int_equal(srv.hs, 0);
	assert_int_equal(cli.hs, 0);
	assert_int_equal(srv.verify, X509_V_OK);
	assert_int_equal(cli.verify, X509_V_OK);
	assert_int_equal(srv.rx_len, 11);
	assert_memory_equal(srv.rx, "WRITE seq 1", 11);
	assert_int_equal(cli.rx_len, 14);
	assert_memory_equal(cli.rx, "ACK through 41", 14);
	assert_null(strstr(log, "site tls"));
	tsr_site_tls_ctx_destroy(srv.ctx);
	tsr_site_tls_ctx_destroy(cli.ctx);
}

/*
 * srv_tag / cli_tag: the certificates; the side that must refuse
 * (server_refuses) ends its handshake with -EACCES and verify error want,
 * and logs want's text; no application byte reaches either side.
 */
static void refused(const char *srv_tag, const char *cli_tag, bool server_refuses, long want)
{
	struct side srv = {.ctx = ctx_for(srv_tag, true), .peer_name = "primary.site.test",
			   .tx = "secret from dr", .rx_want = 16};
	struct side cli = {.ctx = ctx_for(cli_tag, false), .peer_name = "dr.site.test",
			   .tx = "secret from src!", .rx_want = 14};
	struct side *judge = server_refuses ? &srv : &cli;
	struct side *judged = server_refuses ? &cli : &srv;
	char log[4096];

	run_pair(&srv, &cli, log, sizeof(log));
	assert_int_equal(judge->hs, -EACCES);
	assert_int_equal(judge->verify, want);
	assert_non_null(strstr(log, X509_verify_cert_error_string(want)));
	assert_non_null(strstr(log, "refused its certificate"));
	/* the refused side fails in its handshake, or (TLS 1.3 client: its
	 * handshake ends before the server checks it) at its first read */
	assert_true(judged->hs == -EPROTO || judged->hs == -ECONNRESET ||
		    (judged->hs == 0 && judged->rx_err < 0));
	assert_int_equal(srv.rx_len, 0);
	assert_int_equal(cli.rx_len, 0);
	tsr_site_tls_ctx_destroy(srv.ctx);
	tsr_site_tls_ctx_destroy(cli.ctx);
}

static void test_server_expired(void **state)
{
	(void)state;
	refused("dr-expired", "primary", false, X509_V_ERR_CERT_HAS_EXPIRED);
}

static void test_client_expired(void **state)
{
	(void)state;
	refused("dr", "primary-expired", true, X509_V_ERR_CERT_HAS_EXPIRED);
}

static void test_server_not_yet_valid(void **state)
{
	(void)state;
	refused("dr-future", "primary", false, X509_V_ERR_CERT_NOT_YET_VALID);
}

static void test_server_unknown_ca(void **state)
{
	(void)state;
	refused("dr-otherca", "primary", false, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
}

static void test_client_unknown_ca(void **state)
{
	(void)state;
	refused("dr", "primary-otherca", true, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
}

static void test_server_wrong_name(void **state)
{
	(void)state;
	refused("dr-wrongname", "primary", false, X509_V_ERR_HOSTNAME_MISMATCH);
}

static void test_client_wrong_name(void **state)
{
	(void)state;
	refused("dr", "primary-wrongname", true, X509_V_ERR_HOSTNAME_MISMATCH);
}

/* A client with no certificate at all (a plain TLS 1.3 client). */
static void test_client_without_cert(void **state)
{
	struct side srv = {.ctx = ctx_for("dr", true), .peer_name = "primary.site.test",
			   .tx = "secret", .rx_want = 4};
	struct side cli = {.mode = RAW_TLS, .raw = SSL_CTX_new(TLS_client_method())};
	char log[4096];

	(void)state;
	assert_non_null(cli.raw);
	SSL_CTX_set_min_proto_version(cli.raw, TLS1_3_VERSION);
	run_pair(&srv, &cli, log, sizeof(log));
	assert_int_equal(srv.hs, -EACCES);
	assert_int_equal(srv.rx_len, 0);
	assert_non_null(strstr(log, "presented no certificate"));
	SSL_CTX_free(cli.raw);
	tsr_site_tls_ctx_destroy(srv.ctx);
}

static void test_plaintext_client(void **state)
{
	struct side srv = {.ctx = ctx_for("dr", true), .peer_name = "primary.site.test",
			   .tx = "secret from dr", .rx_want = 4};
	struct side cli = {.mode = PLAINTEXT};
	char log[4096];

	(void)state;
	run_pair(&srv, &cli, log, sizeof(log));
	assert_int_equal(srv.hs, -EPROTO);
	assert_int_equal(srv.rx_len, 0);
	assert_null(memmem(cli.rx, cli.rx_len, "secret", 6));
	assert_non_null(strstr(log, "clear text"));
	tsr_site_tls_ctx_destroy(srv.ctx);
}

/* A TLS 1.2 client, even with a good certificate, is refused. */
static void test_tls12_client(void **state)
{
	struct side srv = {.ctx = ctx_for("dr", true), .peer_name = "primary.site.test",
			   .tx = "secret", .rx_want = 4};
	struct side cli = {.mode = RAW_TLS, .raw = SSL_CTX_new(TLS_client_method())};
	char log[4096];

	(void)state;
	assert_non_null(cli.raw);
	SSL_CTX_set_max_proto_version(cli.raw, TLS1_2_VERSION);
	assert_int_equal(SSL_CTX_use_certificate_file(cli.raw, path_of("primary", "crt"),
						      SSL_FILETYPE_PEM), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(cli.raw, path_of("primary", "key"),
						     SSL_FILETYPE_PEM), 1);
	run_pair(&srv, &cli, log, sizeof(log));
	assert_int_equal(srv.hs, -EPROTO);
	assert_int_equal(cli.hs, -EPROTO);
	assert_int_equal(srv.rx_len, 0);
	assert_non_null(strstr(log, "accept from primary.site.test"));
	SSL_CTX_free(cli.raw);
	tsr_site_tls_ctx_destroy(srv.ctx);
}

static void test_ctx_errors(void **state)
{
	struct tsr_site_tls_opts o = {.ca_file = path_of("ca", "crt"),
				      .cert_file = path_of("dr", "crt"),
				      .key_file = path_of("dr", "key")};
	struct tsr_site_tls_ctx *ctx = NULL;
	struct tsr_site_tls *t = NULL;

	(void)state;
	o.key_file = path_of("missing", "key");
	assert_int_equal(tsr_site_tls_ctx_create(&o, &ctx), -ENOENT);
	o.key_file = path_of("primary", "key"); /* not dr's key */
	assert_int_equal(tsr_site_tls_ctx_create(&o, &ctx), -EKEYREJECTED);
	o.key_file = path_of("dr", "key");
	o.ca_file = path_of("dr", "key"); /* a key is no CA certificate */
	assert_int_equal(tsr_site_tls_ctx_create(&o, &ctx), -EKEYREJECTED);
	o.ca_file = NULL;
	assert_int_equal(tsr_site_tls_ctx_create(&o, &ctx), -EINVAL);
	assert_null(ctx);
	o.ca_file = path_of("ca", "crt");
	assert_int_equal(tsr_site_tls_ctx_create(&o, &ctx), 0);
	assert_int_equal(tsr_site_tls_new(ctx, 0, "", &t), -EINVAL);
	assert_int_equal(tsr_site_tls_new(ctx, -1, "dr.site.test", &t), -EINVAL);
	assert_null(t);
	tsr_site_tls_ctx_destroy(ctx);
	tsr_site_tls_ctx_destroy(NULL);
	tsr_site_tls_free(NULL);
}

/* ---- gathered writes: one thread drives both ends ---- */

/* send(2) calls of the process (-Wl,--wrap=send, tests/CMakeLists.txt) */
static unsigned g_sends;
ssize_t __real_send(int fd, const void *buf, size_t len, int flags);
ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags);
ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags)
{
	g_sends++;
	return __real_send(fd, buf, len, flags);
}

/* recv(2) calls on one socket (g_recv_fd, -Wl,--wrap=recv): how many took
 * bytes, and whether every one of them filled one buffer from its start */
static int g_recv_fd = -1;
static unsigned g_recvs;
static void *g_recv_buf;
static size_t g_recv_len;
static bool g_recv_same = true;
/* g_recv_err != 0: the first recv on g_recv_fd takes at most g_recv_cap
 * bytes, the second fails with g_recv_err, the later ones read EOF */
static int g_recv_err;
static size_t g_recv_cap;
static unsigned g_recv_calls;
ssize_t __real_recv(int fd, void *buf, size_t len, int flags);
ssize_t __wrap_recv(int fd, void *buf, size_t len, int flags);
ssize_t __wrap_recv(int fd, void *buf, size_t len, int flags)
{
	ssize_t n;

	if (fd == g_recv_fd && g_recv_err) { /* a socket that dies after cap bytes */
		if (g_recv_calls++ == 0) {
			len = len < g_recv_cap ? len : g_recv_cap;
		} else if (g_recv_calls == 2) {
			errno = g_recv_err;
			return -1;
		} else {
			return 0; /* as TCP after a reported error: EOF */
		}
	}
	n = __real_recv(fd, buf, len, flags);

	if (fd == g_recv_fd && n > 0) {
		if (g_recvs++ == 0) {
			g_recv_buf = buf;
			g_recv_len = len;
		} else if (buf != g_recv_buf || len != g_recv_len) {
			g_recv_same = false;
		}
	}
	return n;
}

struct conn {
	struct tsr_site_tls_ctx *sctx, *cctx;
	struct tsr_site_tls *srv, *cli; /* cli writes, srv reads */
	int sv[2];
};

/* A verified pair over a socketpair whose client send buffer is sndbuf
 * bytes; both handshakes driven in turn. */
static void conn_open(struct conn *c, int sndbuf)
{
	int hs = -EAGAIN, hc = -EAGAIN;

	c->sctx = ctx_for("dr", true);
	c->cctx = ctx_for("primary", false);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, c->sv), 0);
	assert_int_equal(setsockopt(c->sv[1], SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)),
			 0);
	assert_int_equal(tsr_site_tls_new(c->sctx, c->sv[0], "primary.site.test", &c->srv), 0);
	assert_int_equal(tsr_site_tls_new(c->cctx, c->sv[1], "dr.site.test", &c->cli), 0);
	for (int i = 0; i < 1000 && (hs || hc); i++) {
		if (hc == -EAGAIN)
			hc = tsr_site_tls_handshake(c->cli);
		if (hs == -EAGAIN)
			hs = tsr_site_tls_handshake(c->srv);
	}
	assert_int_equal(hc, 0);
	assert_int_equal(hs, 0);
}

static void conn_close(struct conn *c)
{
	tsr_site_tls_free(c->srv);
	tsr_site_tls_free(c->cli);
	close(c->sv[0]);
	close(c->sv[1]);
	tsr_site_tls_ctx_destroy(c->sctx);
	tsr_site_tls_ctx_destroy(c->cctx);
}

/* Everything the server can read now, appended at buf + *got (cap). */
static void read_ready(struct conn *c, uint8_t *buf, size_t *got, size_t cap)
{
	ssize_t n;

	while (*got < cap && (n = tsr_site_tls_read(c->srv, buf + *got, cap - *got)) > 0)
		*got += (size_t)n;
}

#define GATHER_TEST_LEN (200u << 10) /* 13 records: 13 sends without gathering */

static uint8_t *pattern(size_t len)
{
	uint8_t *p = malloc(len);

	assert_non_null(p);
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 131 + (i >> 12));
	return p;
}

/* A gathered write of 13 records is one send; a plain one is 13. */
static void test_gather_one_send(void **state)
{
	size_t len = GATHER_TEST_LEN, got = 0, put = 0;
	uint8_t *tx = pattern(len), *rx = malloc(2 * len);
	struct conn c;
	ssize_t n;

	(void)state;
	assert_non_null(rx);
	conn_open(&c, 8 << 20);
	g_sends = 0;
	assert_int_equal(tsr_site_tls_write_gather(c.cli, tx, len), (ssize_t)len);
	assert_int_equal(g_sends, 1);
	assert_false(tsr_site_tls_pending(c.cli));
	assert_int_equal(tsr_site_tls_flush(c.cli), 0);
	g_sends = 0;
	while (put < len) { /* partial-write mode: one record a call */
		n = tsr_site_tls_write(c.cli, tx + put, len - put);
		assert_true(n > 0);
		put += (size_t)n;
	}
	assert_int_equal(g_sends, (len + 16383) / 16384);
	read_ready(&c, rx, &got, 2 * len);
	assert_int_equal(got, 2 * len);
	assert_memory_equal(rx, tx, len);
	assert_memory_equal(rx + len, tx, len);
	conn_close(&c);
	free(tx);
	free(rx);
}

/* Two gathered writes "more" and a flush: one send for both buffers,
 * which arrive whole and in order. */
static void test_gather_more_one_send(void **state)
{
	size_t len = 64u << 10, got = 0;
	uint8_t *tx = pattern(2 * len), *rx = malloc(2 * len);
	struct conn c;

	(void)state;
	assert_non_null(rx);
	conn_open(&c, 8 << 20);
	g_sends = 0;
	assert_int_equal(tsr_site_tls_write_gather_more(c.cli, tx, len), (ssize_t)len);
	assert_int_equal(tsr_site_tls_write_gather_more(c.cli, tx + len, len), (ssize_t)len);
	assert_int_equal(g_sends, 0);
	assert_true(tsr_site_tls_pending(c.cli));
	assert_int_equal(tsr_site_tls_flush(c.cli), 0);
	assert_int_equal(g_sends, 1);
	assert_false(tsr_site_tls_pending(c.cli));
	read_ready(&c, rx, &got, 2 * len);
	assert_int_equal(got, 2 * len);
	assert_memory_equal(rx, tx, 2 * len);
	conn_close(&c);
	free(tx);
	free(rx);
}

/* A socket that takes only part of a gathered write: the rest stays queued
 * (pending, flush -EAGAIN wanting POLLOUT, a later write waits behind it)
 * and arrives whole and in order once the reader reads. */
static void test_gather_queued(void **state)
{
	size_t len = GATHER_TEST_LEN, got = 0;
	uint8_t *tx = pattern(len), *rx = malloc(len + 4);
	struct conn c;
	ssize_t n = 0;
	int i;

	(void)state;
	assert_non_null(rx);
	conn_open(&c, 4096);
	assert_int_equal(tsr_site_tls_write_gather(c.cli, tx, len), (ssize_t)len);
	assert_true(tsr_site_tls_pending(c.cli));
	assert_int_equal(tsr_site_tls_flush(c.cli), -EAGAIN);
	assert_int_equal(tsr_site_tls_want(c.cli), POLLOUT);
	assert_int_equal(tsr_site_tls_write(c.cli, "tail", 4), -EAGAIN);
	read_ready(&c, rx, &got, len + 4); /* room again: flush sends more */
	assert_int_equal(tsr_site_tls_flush(c.cli), -EAGAIN);
	assert_true(got < len);
	/* room again, no flush: a plain write sends the queue first */
	for (i = 0; i < 100000 && (n = tsr_site_tls_write(c.cli, "tail", 4)) == -EAGAIN; i++)
		read_ready(&c, rx, &got, len + 4);
	assert_int_equal(n, 4);
	assert_false(tsr_site_tls_pending(c.cli));
	for (i = 0; i < 100000 && got < len + 4; i++)
		read_ready(&c, rx, &got, len + 4);
	assert_int_equal(got, len + 4);
	assert_memory_equal(rx, tx, len);
	assert_memory_equal(rx + len, "tail", 4);
	conn_close(&c);
	free(tx);
	free(rx);
}

/* The server reads 13 records queued in its socket in two recvs, each
 * into its 128 KiB read buffer from the start: the records are not read
 * into OpenSSL's record buffer, whose read-ahead moved the bytes left in it
 * to its front before each record (site_tls.c, read_buffer). */
static void test_read_buffered(void **state)
{
	size_t len = GATHER_TEST_LEN, got = 0;
	uint8_t *tx = pattern(len), *rx = malloc(len);
	struct conn c;

	(void)state;
	assert_non_null(rx);
	conn_open(&c, 8 << 20);
	assert_int_equal(tsr_site_tls_write_gather(c.cli, tx, len), (ssize_t)len);
	g_recv_fd = c.sv[0];
	g_recvs = 0;
	g_recv_same = true;
	read_ready(&c, rx, &got, len);
	g_recv_fd = -1;
	assert_int_equal(got, len);
	assert_memory_equal(rx, tx, len);
	assert_int_equal(g_recvs, 2);
	assert_true(g_recv_same);
	assert_int_equal(g_recv_len, 128u << 10);
	conn_close(&c);
	free(tx);
	free(rx);
}

/* What waits in the server's read buffer (site_tls.c, read_buffer) with no
 * fd event to come is read all the same, and its end reads as without it:
 * data the client sent with its Finished is still in the socket when the
 * handshake ends (the handshake reads up to the Finished and no further,
 * so the buffer put in front after it misses nothing) and the first read
 * gets it; a drained buffer reads
 * -EAGAIN wanting POLLIN (the socket BIO's retry flag passes through the
 * buffer BIO); records queued before an EOF are all read first, then the
 * EOF (-ECONNRESET); before a close_notify, then the close (0). */
static void test_read_buffered_edges(void **state)
{
	int hs = -EAGAIN, hc = -EAGAIN;
	struct conn c;
	uint8_t rx[64];
	ssize_t n;
	size_t got = 0;

	(void)state;
	conn_open(&c, 8 << 20); /* for its contexts and sockets: a new pair on them */
	tsr_site_tls_free(c.srv);
	tsr_site_tls_free(c.cli);
	close(c.sv[0]);
	close(c.sv[1]);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, c.sv), 0);
	assert_int_equal(tsr_site_tls_new(c.sctx, c.sv[0], "primary.site.test", &c.srv), 0);
	assert_int_equal(tsr_site_tls_new(c.cctx, c.sv[1], "dr.site.test", &c.cli), 0);
	for (int i = 0; i < 1000 && hc == -EAGAIN; i++) /* up to the client's Finished */
		if ((hc = tsr_site_tls_handshake(c.cli)) == -EAGAIN)
			hs = tsr_site_tls_handshake(c.srv);
	assert_int_equal(hc, 0);
	assert_int_equal(hs, -EAGAIN);
	assert_int_equal(tsr_site_tls_write(c.cli, "hello", 5), 5);
	assert_int_equal(tsr_site_tls_handshake(c.srv), 0);
	/* still in the socket: the read buffer came after the Finished */
	assert_int_equal(recv(c.sv[0], rx, 1, MSG_PEEK | MSG_DONTWAIT), 1);
	assert_int_equal(tsr_site_tls_read(c.srv, rx, sizeof(rx)), 5);
	assert_memory_equal(rx, "hello", 5);
	assert_int_equal(tsr_site_tls_read(c.srv, rx, sizeof(rx)), -EAGAIN);
	assert_int_equal(tsr_site_tls_want(c.srv), POLLIN);
	/* two records, then EOF without close_notify */
	assert_int_equal(tsr_site_tls_write(c.cli, "abc", 3), 3);
	assert_int_equal(tsr_site_tls_write(c.cli, "def", 3), 3);
	assert_int_equal(shutdown(c.sv[1], SHUT_WR), 0);
	while ((n = tsr_site_tls_read(c.srv, rx + got, sizeof(rx) - got)) > 0)
		got += (size_t)n;
	assert_int_equal(n, -ECONNRESET);
	assert_int_equal(got, 6);
	assert_memory_equal(rx, "abcdef", 6);
	conn_close(&c);
	/* a record, then close_notify */
	conn_open(&c, 8 << 20);
	assert_int_equal(tsr_site_tls_write(c.cli, "xyz", 3), 3);
	assert_int_equal(tsr_site_tls_shutdown(c.cli), 0);
	assert_int_equal(tsr_site_tls_read(c.srv, rx, sizeof(rx)), 3);
	assert_memory_equal(rx, "xyz", 3);
	assert_int_equal(tsr_site_tls_read(c.srv, rx, sizeof(rx)), 0);
	conn_close(&c);
}

/* The socket fails (a TCP user timeout, say) while the server's buffer
 * holds part of a record: the read fails -ECONNRESET and the log names the
 * socket's error, not "connection closed by the peer".  The buffer BIO
 * returns the bytes it got before the error and drops the error; the
 * socket then reads EOF. */
static void test_read_error_mid_record(void **state)
{
	uint8_t *tx = pattern(200), rx[256];
	struct log_capture lc;
	char log[4096];
	struct conn c;

	(void)state;
	conn_open(&c, 8 << 20);
	assert_int_equal(tsr_site_tls_write(c.cli, tx, 200), 200); /* a 222-byte record */
	g_recv_fd = c.sv[0];
	g_recv_cap = 100;
	g_recv_calls = 0;
	g_recv_err = ETIMEDOUT;
	log_begin(&lc, log_path());
	assert_int_equal(tsr_site_tls_read(c.srv, rx, sizeof(rx)), -ECONNRESET);
	log_end(&lc, log, sizeof(log));
	g_recv_err = 0;
	g_recv_fd = -1;
	assert_non_null(strstr(log, "read from primary.site.test: Connection timed out"));
	conn_close(&c);
	free(tx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_pair),
		cmocka_unit_test(test_server_expired),
		cmocka_unit_test(test_client_expired),
		cmocka_unit_test(test_server_not_yet_valid),
		cmocka_unit_test(test_server_unknown_ca),
		cmocka_unit_test(test_client_unknown_ca),
		cmocka_unit_test(test_server_wrong_name),
		cmocka_unit_test(test_client_wrong_name),
		cmocka_unit_test(test_client_without_cert),
		cmocka_unit_test(test_plaintext_client),
		cmocka_unit_test(test_tls12_client),
		cmocka_unit_test(test_ctx_errors),
		cmocka_unit_test(test_gather_one_send),
		cmocka_unit_test(test_gather_queued),
		cmocka_unit_test(test_gather_more_one_send),
		cmocka_unit_test(test_read_buffered),
		cmocka_unit_test(test_read_buffered_edges),
		cmocka_unit_test(test_read_error_mid_record),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
