/*
 * Unit tests of the site transport (engine/site/site_tls.c): mutual TLS 1.3
 * between two threads over a non-blocking socketpair, each side driven by
 * poll() on tsr_site_tls_want as an event loop would.  The certificates are
 * made at test time (OpenSSL API, P-256) in a temporary directory: a CA, a
 * good server and client, expired, not yet valid, signed by another CA,
 * carrying the wrong name.  Checked: the good pair's bytes round trip both
 * ways; every bad certificate is refused on the verifying side with the
 * right X509 error and a log line naming it, and no application byte
 * crosses; a client with no certificate, a clear-text client and a TLS 1.2
 * client are refused; context errors (missing file, key mismatch, not PEM).
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
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tessera/site.h"

#define DAY (24 * 3600L)

static char g_dir[64];

/* ---- certificates ---- */

struct id {
	EVP_PKEY *key;
	X509 *cert;
};

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(cert, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/* A certificate for cn (also its DNS SAN), valid [from, to] seconds from
 * now, signed by issuer (NULL: self-signed CA). */
static struct id make_id(const char *cn, long from, long to, const struct id *issuer)
{
	static long serial = 1;
	struct id id;
	X509_NAME *name;
	char san[128];

	id.key = EVP_EC_gen("P-256");
	assert_non_null(id.key);
	id.cert = X509_new();
	assert_non_null(id.cert);
	X509_set_version(id.cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(id.cert), serial++);
	X509_gmtime_adj(X509_getm_notBefore(id.cert), from);
	X509_gmtime_adj(X509_getm_notAfter(id.cert), to);
	X509_set_pubkey(id.cert, id.key);
	name = X509_get_subject_name(id.cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
				   0);
	X509_set_issuer_name(id.cert, issuer ? X509_get_subject_name(issuer->cert) : name);
	if (issuer == NULL) {
		add_ext(id.cert, id.cert, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(id.cert, id.cert, NID_key_usage, "critical,keyCertSign,cRLSign");
		add_ext(id.cert, id.cert, NID_subject_key_identifier, "hash");
	} else {
		snprintf(san, sizeof(san), "DNS:%s", cn);
		add_ext(id.cert, issuer->cert, NID_basic_constraints, "CA:FALSE");
		add_ext(id.cert, issuer->cert, NID_subject_alt_name, san);
		add_ext(id.cert, issuer->cert, NID_ext_key_usage, "serverAuth,clientAuth");
	}
	assert_true(X509_sign(id.cert, issuer ? issuer->key : id.key, EVP_sha256()) > 0);
	return id;
}

static void free_id(struct id *id)
{
	EVP_PKEY_free(id->key);
	X509_free(id->cert);
}

/* Write id as <dir>/<tag>.crt and <tag>.key. */
static void save_id(const struct id *id, const char *tag)
{
	char path[160];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s.crt", g_dir, tag);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, id->cert), 1);
	fclose(f);
	snprintf(path, sizeof(path), "%s/%s.key", g_dir, tag);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, id->key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
}

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
	struct id ca, other_ca, x;

	(void)state;
	snprintf(g_dir, sizeof(g_dir), "/tmp/tsr-site-tls-XXXXXX");
	if (mkdtemp(g_dir) == NULL)
		return -1;
	ca = make_id("Tessera test CA", -DAY, 30 * DAY, NULL);
	other_ca = make_id("Somebody else's CA", -DAY, 30 * DAY, NULL);
	save_id(&ca, "ca");
	save_id(&other_ca, "other-ca");
#define MAKE(tag, cn, from, to, iss)              \
	do {                                      \
		x = make_id(cn, from, to, iss);   \
		save_id(&x, tag);                 \
		free_id(&x);                      \
	} while (0)
	MAKE("dr", "dr.site.test", -DAY, 30 * DAY, &ca);
	MAKE("primary", "primary.site.test", -DAY, 30 * DAY, &ca);
	MAKE("dr-expired", "dr.site.test", -10 * DAY, -DAY, &ca);
	MAKE("primary-expired", "primary.site.test", -10 * DAY, -DAY, &ca);
	MAKE("dr-future", "dr.site.test", DAY, 30 * DAY, &ca);
	MAKE("dr-otherca", "dr.site.test", -DAY, 30 * DAY, &other_ca);
	MAKE("primary-otherca", "primary.site.test", -DAY, 30 * DAY, &other_ca);
	MAKE("dr-wrongname", "mallory.site.test", -DAY, 30 * DAY, &ca);
	MAKE("primary-wrongname", "mallory.site.test", -DAY, 30 * DAY, &ca);
#undef MAKE
	free_id(&ca);
	free_id(&other_ca);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
	return system(cmd) == 0 ? 0 : -1;
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

/* Run server s and client c against each other; the log they write lands
 * in log (stderr captured). */
static void run_pair(struct side *srv, struct side *cli, char *log, size_t loglen)
{
	int sv[2], saved, logfd;
	pthread_t ts, tc;
	char logpath[128];
	ssize_t n;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	srv->fd = sv[0];
	cli->fd = sv[1];
	snprintf(logpath, sizeof(logpath), "%s/log", g_dir);
	logfd = open(logpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(logfd >= 0);
	fflush(stderr);
	saved = dup(2);
	dup2(logfd, 2);
	assert_int_equal(pthread_create(&ts, NULL, side_main, srv), 0);
	assert_int_equal(pthread_create(&tc, NULL, side_main, cli), 0);
	pthread_join(ts, NULL);
	pthread_join(tc, NULL);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	n = pread(logfd, log, loglen - 1, 0);
	log[n > 0 ? n : 0] = '\0';
	close(logfd);
	close(sv[0]);
	close(sv[1]);
	fprintf(stderr, "%s", log); /* visible in the test output */
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
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
