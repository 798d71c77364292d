/*
 * The transport between two sites (include/tessera/site.h, "transport"):
 * OpenSSL, TLS 1.3 only, mutual authentication.  Each side presents a
 * certificate signed by the configured CA and checks the other's chain,
 * validity dates and name (SSL_set1_host: the DNS SAN or CN must be the
 * expected site/host name, on the server side too).  Sockets are
 * non-blocking and belong to the caller; every call returns -EAGAIN with
 * the direction to wait for instead of blocking, so an event loop can
 * drive it.  A refusal is logged once, here, with its cause.
 * OpenSSL reaches the socket through our own small BIO (send with
 * MSG_NOSIGNAL, recv), so a peer that hangs up raises no SIGPIPE whatever
 * the process's signal setup, as on every other socket of the engine.  The
 * server reads through a buffer BIO in front of it (read_buffer), put there
 * once the peer is authenticated: a connection still in its handshake holds
 * no READ_BUF.
 *
 * Gathered writes (tsr_site_tls_write_gather, the source's stream): OpenSSL
 * hands the BIO one record (<= 16 KiB of data) at a time; sent one by one,
 * a 256 KiB batch cost 16 send calls, 16 passes through loopback TCP and 16
 * wake-ups of the receiver.  While a gathered write runs, the BIO appends
 * the records to the connection's queue (GATHER_MAX bytes) and sends the
 * queue in one call when it is full and when the write ends.  Bytes the
 * socket did not take then stay queued (tsr_site_tls_pending): every later
 * write, read or shutdown sends them first, in order, and
 * tsr_site_tls_flush sends them when the socket is writable again.
 * tsr_site_tls_write_gather_more leaves the queue unsent at its end, so the
 * records of several buffers (the source's run of log entries, then its
 * batch) leave in one send, by tsr_site_tls_flush or once the queue is full.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tessera/site.h"

/* A server's read buffer (after the handshake): several 16 KiB records per recv. */
#define READ_BUF (128u << 10)
/* A gathered write's queue: the source's 256 KiB batch and its records'
 * headers and tags in one send. */
#define GATHER_MAX (272u << 10)

struct tsr_site_tls_ctx {
	SSL_CTX *ssl_ctx; /* owned; TLS 1.3 only, verify peer, our cert and key loaded */
	bool server;      /* handshakes accept (true) or connect (false) */
};

/* What the BIO writes to: the fd and the queue of gathered records. */
struct sock_out {
	int fd;       /* the caller's socket */
	bool gather;  /* a gathered write runs: records join the queue */
	uint8_t *buf; /* GATHER_MAX bytes, allocated by the first gathered write */
	size_t len;   /* bytes queued in buf */
	size_t sent;  /* of which already on the socket (sent <= len) */
	uint64_t sends; /* send calls that took bytes (tsr_site_tls_sends) */
	int rx_err;     /* the socket's recv error, if one came (not EAGAIN): the
			 * buffer BIO (read_buffer) hands out the bytes it got
			 * before it and drops it, and TCP reads EOF after it */
};

struct tsr_site_tls {
	SSL *ssl;                  /* owned; on the caller's fd (not closed by us) */
	struct sock_out out;       /* the BIO's data pointer: fd and the gather queue */
	char peer[256];             /* the expected peer name (a host name), for logs */
	bool server;               /* copied from the context */
	bool established;          /* handshake done and the peer verified */
	short want;                /* POLLIN / POLLOUT: what the last -EAGAIN waits for */
};

/* ---- the socket BIO: a struct sock_out in the BIO's data pointer ---- */

static BIO_METHOD *g_sock_method;
static pthread_once_t g_sock_once = PTHREAD_ONCE_INIT;

static bool again(int err)
{
	return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/* Send the queue: 0 when empty, -1 with errno (EAGAIN: the rest stays). */
static int out_drain(struct sock_out *o)
{
	ssize_t n;

	while (o->sent < o->len) {
		n = send(o->fd, o->buf + o->sent, o->len - o->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0)
			return -1;
		o->sends++;
		o->sent += (size_t)n;
	}
	o->len = o->sent = 0;
	return 0;
}

/* One record (or the rest of one) from OpenSSL: queued during a gathered
 * write while it fits, else sent, after what is queued. */
static int sock_write(BIO *b, const char *buf, int len)
{
	struct sock_out *o = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	if (o->gather && o->len + (size_t)len <= GATHER_MAX) {
		memcpy(o->buf + o->len, buf, (size_t)len);
		o->len += (size_t)len;
		return len;
	}
	if (out_drain(o) < 0) {
		if (again(errno))
			BIO_set_retry_write(b);
		return -1;
	}
	if (o->gather && (size_t)len <= GATHER_MAX) {
		memcpy(o->buf, buf, (size_t)len);
		o->len = (size_t)len;
		return len;
	}
	n = send(o->fd, buf, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0 && again(errno))
		BIO_set_retry_write(b);
	if (n > 0)
		o->sends++;
	return (int)n;
}

static int sock_read(BIO *b, char *buf, int len)
{
	struct sock_out *o = BIO_get_data(b);
	ssize_t n = recv(o->fd, buf, (size_t)len, MSG_DONTWAIT);

	BIO_clear_retry_flags(b);
	if (n < 0 && again(errno))
		BIO_set_retry_read(b);
	else if (n < 0)
		o->rx_err = errno;
	return (int)n;
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	/* a gathered write's queue is not sent here: it goes before the next
	 * record and by tsr_site_tls_flush */
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int sock_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void sock_method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
				     "tessera site socket");

	if (m == NULL)
		return;
	if (BIO_meth_set_write(m, sock_write) != 1 || BIO_meth_set_read(m, sock_read) != 1 ||
	    BIO_meth_set_ctrl(m, sock_ctrl) != 1 || BIO_meth_set_create(m, sock_create) != 1) {
		BIO_meth_free(m);
		return;
	}
	g_sock_method = m; /* kept for the process's life */
}

/* A BIO on o's fd (not closed by the BIO), or NULL on ENOMEM. */
static BIO *sock_bio(struct sock_out *o)
{
	BIO *b;

	pthread_once(&g_sock_once, sock_method_init);
	if (g_sock_method == NULL)
		return NULL;
	b = BIO_new(g_sock_method);
	if (b)
		BIO_set_data(b, o);
	return b;
}

/* The reason of the newest queued OpenSSL error, or fallback. */
static const char *ssl_reason(unsigned long e, const char *fallback)
{
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	return r ? r : fallback;
}

/* Check that path is readable before OpenSSL's less precise errors. */
static int check_file(const char *what, const char *path)
{
	if (path == NULL || *path == '\0') {
		tsr_error("site tls: no %s file given", what);
		return -EINVAL;
	}
	if (access(path, R_OK) < 0) {
		int err = -errno;

		tsr_error("site tls: %s %s: %s", what, path, strerror(-err));
		return err;
	}
	return 0;
}

void tsr_site_tls_ctx_destroy(struct tsr_site_tls_ctx *ctx)
{
	if (ctx == NULL)
		return;
	SSL_CTX_free(ctx->ssl_ctx);
	free(ctx);
}

/* Load what our side presents and what it trusts.  -EKEYREJECTED on a bad file. */
static int load_files(struct tsr_site_tls_ctx *ctx, const struct tsr_site_tls_opts *o)
{
	const char *what;

	ERR_clear_error();
	what = "CA";
	if (SSL_CTX_load_verify_locations(ctx->ssl_ctx, o->ca_file, NULL) != 1)
		goto bad;
	what = "certificate";
	if (SSL_CTX_use_certificate_chain_file(ctx->ssl_ctx, o->cert_file) != 1)
		goto bad;
	what = "key";
	if (SSL_CTX_use_PrivateKey_file(ctx->ssl_ctx, o->key_file, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx->ssl_ctx) != 1)
		goto bad;
	if (ctx->server) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);

		if (names) /* only a hint to clients: which CA we accept */
			SSL_CTX_set_client_CA_list(ctx->ssl_ctx, names);
	}
	return 0;
bad:
	tsr_error("site tls: loading the %s (ca %s, cert %s, key %s): %s", what, o->ca_file,
		  o->cert_file, o->key_file, ssl_reason(ERR_peek_last_error(), "invalid file"));
	ERR_clear_error();
	return -EKEYREJECTED;
}

int tsr_site_tls_ctx_create(const struct tsr_site_tls_opts *opts, struct tsr_site_tls_ctx **out)
{
	struct tsr_site_tls_ctx *ctx;
	int ret;

	if (opts == NULL || out == NULL)
		return -EINVAL;
	if ((ret = check_file("CA", opts->ca_file)) < 0 ||
	    (ret = check_file("certificate", opts->cert_file)) < 0 ||
	    (ret = check_file("key", opts->key_file)) < 0)
		return ret;
	ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL)
		return -ENOMEM;
	ctx->server = opts->server;
	ctx->ssl_ctx = SSL_CTX_new(opts->server ? TLS_server_method() : TLS_client_method());
	if (ctx->ssl_ctx == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	if (SSL_CTX_set_min_proto_version(ctx->ssl_ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx->ssl_ctx, TLS1_3_VERSION) != 1) {
		ret = -ENOMEM;
		goto err;
	}
	/* No resumption: every connection shows and checks a certificate. */
	SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx->ssl_ctx, SSL_SESS_CACHE_OFF);
	if (opts->server)
		SSL_CTX_set_num_tickets(ctx->ssl_ctx, 0);
	SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_verify_depth(ctx->ssl_ctx, 4);
	SSL_CTX_set_mode(ctx->ssl_ctx,
			 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	ret = load_files(ctx, opts);
	if (ret < 0)
		goto err;
	*out = ctx;
	return 0;
err:
	tsr_site_tls_ctx_destroy(ctx);
	return ret;
}

void tsr_site_tls_free(struct tsr_site_tls *t)
{
	if (t == NULL)
		return;
	SSL_free(t->ssl);
	free(t->out.buf);
	free(t);
}

/*
 * The receiving end of a stream (the server) reads through a buffer BIO
 * (OpenSSL's BIO_f_buffer, READ_BUF bytes) in front of the socket BIO sock:
 * one recv takes every record the socket holds (up to READ_BUF), where
 * OpenSSL alone makes two per record (its header, then its body), and each
 * record is copied once from there into OpenSSL's record buffer.  Not
 * OpenSSL's own read-ahead (SSL_set_read_ahead), which did the same with
 * one copy fewer but moved every byte left in its buffer to the buffer's
 * front before each record (ssl3_read_n aligning the payload): up to 3.5
 * times the stream's bytes with 128 KiB reads, 4.4 % of a receiving DR's
 * CPU samples.  Writes go straight to sock.  Records may wait in the buffer
 * with no fd event to come: the server reads until -EAGAIN, and where it
 * stops earlier (no room) its own completions and timer call it again.
 * Put in front of ssl's socket BIO once the handshake has ended (the peer
 * authenticated), not at tsr_site_tls_new: a peer that never finishes one
 * holds no READ_BUF.  Safe then: without read-ahead OpenSSL reads a record's
 * header and then exactly its body from the socket, so no byte past the
 * client's Finished is in OpenSSL when the read BIO changes (those bytes are
 * still in the socket; site_tls_ut test_read_buffered_edges).  -ENOMEM: ssl
 * reads from the socket as before.
 */
static int read_buffer(SSL *ssl)
{
	BIO *sock = SSL_get_rbio(ssl); /* == wbio: SSL_set_bio gave ssl 2 references */
	BIO *buf = BIO_new(BIO_f_buffer());

	if (buf == NULL || BIO_set_read_buffer_size(buf, READ_BUF) != 1 || BIO_up_ref(sock) != 1) {
		BIO_free(buf);
		return -ENOMEM;
	}
	BIO_push(buf, sock);     /* the chain holds the new reference of sock */
	SSL_set0_rbio(ssl, buf); /* drops the rbio's one: ssl keeps the chain and wbio */
	return 0;
}

int tsr_site_tls_new(struct tsr_site_tls_ctx *ctx, int fd, const char *peer_name,
		     struct tsr_site_tls **out)
{
	struct tsr_site_tls *t;
	BIO *bio;

	bool any_name; /* a server may accept any peer chaining to the CA */

	if (ctx == NULL || fd < 0 || out == NULL)
		return -EINVAL;
	any_name = peer_name == NULL || *peer_name == '\0';
	if ((any_name && !ctx->server) || (!any_name && strlen(peer_name) >= sizeof(t->peer)))
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	snprintf(t->peer, sizeof(t->peer), "%s", any_name ? "a peer site" : peer_name);
	t->server = ctx->server;
	t->want = POLLIN;
	t->out.fd = fd;
	t->ssl = SSL_new(ctx->ssl_ctx);
	if (t->ssl == NULL)
		goto nomem;
	bio = sock_bio(&t->out);
	if (bio == NULL)
		goto nomem;
	SSL_set_bio(t->ssl, bio, bio); /* one reference, owned by ssl (a server's read
					* buffer comes after the handshake) */
	SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (!any_name && SSL_set1_host(t->ssl, peer_name) != 1)
		goto nomem;
	if (t->server) {
		SSL_set_accept_state(t->ssl);
	} else {
		if (SSL_set_tlsext_host_name(t->ssl, peer_name) != 1)
			goto nomem;
		SSL_set_connect_state(t->ssl);
	}
	*out = t;
	return 0;
nomem:
	ERR_clear_error();
	tsr_site_tls_free(t);
	return -ENOMEM;
}

/* An empty error queue before an SSL call (SSL_get_error needs it): the
 * usual case costs a peek, not ERR_clear_error's sweep of every slot (about
 * 2 % of a receiving DR's CPU, one per SSL_read). */
static void err_clear(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}

/* Reasons that mean the bytes we got were not a TLS record at all. */
static bool not_tls(unsigned long e)
{
	int r = ERR_GET_REASON(e);

	return ERR_GET_LIB(e) == ERR_LIB_SSL &&
	       (r == SSL_R_WRONG_VERSION_NUMBER || r == SSL_R_HTTP_REQUEST ||
		r == SSL_R_HTTPS_PROXY_REQUEST || r == SSL_R_PACKET_LENGTH_TOO_LONG ||
		r == SSL_R_RECORD_LENGTH_MISMATCH || r == SSL_R_UNEXPECTED_RECORD ||
		r == SSL_R_UNKNOWN_PROTOCOL || r == SSL_R_UNSUPPORTED_PROTOCOL);
}

/*
 * Map a failed SSL call (ret, from op) to -errno: -EAGAIN with t->want set,
 * or a dead connection, logged once with its cause.
 */
static int io_error(struct tsr_site_tls *t, int ret, const char *op)
{
	int err = SSL_get_error(t->ssl, ret);
	unsigned long e = ERR_peek_last_error();
	long vr;

	switch (err) {
	case SSL_ERROR_WANT_READ:
		t->want = POLLIN;
		return -EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		t->want = POLLOUT;
		return -EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0; /* the peer's close_notify */
	default:
		break;
	}
	vr = SSL_get_verify_result(t->ssl);
	if (!t->established && vr != X509_V_OK) {
		tsr_error("site tls: %s %s: refused its certificate: %s (X509 error %ld)", op,
			  t->peer, X509_verify_cert_error_string(vr), vr);
		ret = -EACCES;
	} else if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
		   ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
		tsr_error("site tls: %s %s: refused: it presented no certificate", op, t->peer);
		ret = -EACCES;
	} else if (err == SSL_ERROR_SSL && not_tls(e)) {
		tsr_error("site tls: %s %s: refused: not TLS 1.3 (%s); nothing is accepted in "
			  "clear text", op, t->peer, ssl_reason(e, "bad record"));
		ret = -EPROTO;
	} else if (err == SSL_ERROR_SSL) {
		tsr_error("site tls: %s %s: failed: %s", op, t->peer,
			  ssl_reason(e, "protocol error"));
		ret = -EPROTO;
	} else { /* SSL_ERROR_SYSCALL: EOF or a socket error */
		int sys = errno == 0 || errno == EAGAIN ? t->out.rx_err : errno;

		if (e == 0 && sys != 0 && sys != EAGAIN)
			tsr_error("site tls: %s %s: %s", op, t->peer, strerror(sys));
		else
			tsr_error("site tls: %s %s: connection closed by the peer", op, t->peer);
		ret = -ECONNRESET;
	}
	ERR_clear_error();
	return ret;
}

int tsr_site_tls_handshake(struct tsr_site_tls *t)
{
	int ret;

	if (t->established)
		return 0;
	ERR_clear_error();
	errno = 0;
	ret = SSL_do_handshake(t->ssl);
	if (ret == 1) {
		if (t->server && read_buffer(t->ssl) < 0) {
			tsr_error("site tls: accept from %s: no memory for its read buffer",
				  t->peer);
			ERR_clear_error();
			return -ENOMEM;
		}
		t->established = true;
		tsr_debug("site tls: %s %s: TLS 1.3 established (%s)",
			  t->server ? "accepted" : "connected to", t->peer,
			  SSL_get_cipher_name(t->ssl));
		return 0;
	}
	ret = io_error(t, ret, t->server ? "accept from" : "connect to");
	return ret == 0 ? -ECONNRESET : ret;
}

ssize_t tsr_site_tls_read(struct tsr_site_tls *t, void *buf, size_t len)
{
	size_t got = 0;
	int ret;

	if (!t->established)
		return -ENOTCONN;
	if (len == 0)
		return -EINVAL;
	err_clear();
	errno = 0;
	ret = SSL_read_ex(t->ssl, buf, len, &got);
	if (ret == 1)
		return (ssize_t)got;
	return io_error(t, 0, "read from");
}

ssize_t tsr_site_tls_write(struct tsr_site_tls *t, const void *buf, size_t len)
{
	size_t put = 0;
	int ret;

	if (!t->established)
		return -ENOTCONN;
	if (len == 0)
		return -EINVAL;
	err_clear();
	errno = 0;
	ret = SSL_write_ex(t->ssl, buf, len, &put);
	if (ret == 1)
		return (ssize_t)put;
	ret = io_error(t, 0, "write to");
	return ret == 0 ? -ECONNRESET : ret;
}

/* The queue's send failed with errno: -EAGAIN (want POLLOUT), or the
 * connection is dead (logged). */
static int drain_error(struct tsr_site_tls *t)
{
	int sys = errno;

	if (again(sys)) {
		t->want = POLLOUT;
		return -EAGAIN;
	}
	tsr_error("site tls: write to %s: %s", t->peer, strerror(sys));
	return -ECONNRESET;
}

/* tsr_site_tls_write_gather, the queue sent at the end when send_now. */
static ssize_t write_gather(struct tsr_site_tls *t, const void *buf, size_t len, bool send_now)
{
	size_t done = 0, put;
	int ret = 1;

	if (!t->established)
		return -ENOTCONN;
	if (len == 0)
		return -EINVAL;
	if (t->out.buf == NULL && (t->out.buf = malloc(GATHER_MAX)) == NULL)
		return -ENOMEM;
	err_clear();
	t->out.gather = true;
	while (done < len) { /* partial-write mode: one record a call */
		errno = 0;
		put = 0;
		ret = SSL_write_ex(t->ssl, (const uint8_t *)buf + done, len - done, &put);
		if (ret != 1)
			break;
		done += put;
	}
	t->out.gather = false;
	if (ret != 1) {
		ret = io_error(t, 0, "write to");
		if (ret != -EAGAIN || done == 0) /* -EAGAIN: its record is OpenSSL's to retry */
			return ret == 0 ? -ECONNRESET : ret;
	}
	if (send_now && out_drain(&t->out) < 0 && (ret = drain_error(t)) != -EAGAIN)
		return ret;
	return (ssize_t)done; /* the rest of the queue, if any: tsr_site_tls_flush */
}

ssize_t tsr_site_tls_write_gather(struct tsr_site_tls *t, const void *buf, size_t len)
{
	return write_gather(t, buf, len, true);
}

ssize_t tsr_site_tls_write_gather_more(struct tsr_site_tls *t, const void *buf, size_t len)
{
	return write_gather(t, buf, len, false);
}

int tsr_site_tls_flush(struct tsr_site_tls *t)
{
	if (out_drain(&t->out) < 0)
		return drain_error(t);
	return 0;
}

uint64_t tsr_site_tls_sends(const struct tsr_site_tls *t)
{
	return t->out.sends;
}

bool tsr_site_tls_pending(const struct tsr_site_tls *t)
{
	return t->out.sent < t->out.len;
}

int tsr_site_tls_shutdown(struct tsr_site_tls *t)
{
	int ret;

	if (!t->established)
		return -ENOTCONN;
	ERR_clear_error();
	errno = 0;
	ret = SSL_shutdown(t->ssl);
	if (ret >= 0) /* 0: ours is sent, the peer's not awaited; 1: both */
		return 0;
	ret = io_error(t, ret, "close");
	return ret == 0 ? 0 : ret;
}

short tsr_site_tls_want(const struct tsr_site_tls *t)
{
	return t->want;
}

long tsr_site_tls_verify_error(const struct tsr_site_tls *t)
{
	return SSL_get_verify_result(t->ssl);
}
