/*
 * Test certificates for the site link (header only, for unit tests): a
 * temporary directory holding a CA ("ca"), another CA nobody trusts
 * ("other-ca"), and leaf certificates made on request, each with its name
 * as CN and DNS SAN plus IP SAN 127.0.0.1, valid, expired, not yet valid, or
 * signed by the other CA.  Files are <dir>/<tag>.crt and <dir>/<tag>.key (PEM), so a test
 * (or the openssl CLI) can use them, and site_certs_ctx() turns a tag into
 * a tsr_site_tls_ctx trusting "ca".  Made with the OpenSSL API (P-256).
 *
 * Usage:
 *   char dir[64];
 *   site_certs_init(dir);                             // ca + other-ca
 *   site_certs_leaf(dir, "dr", "dr.site.test", SITE_CERT_GOOD);
 *   site_certs_leaf(dir, "dr-expired", "dr.site.test", SITE_CERT_EXPIRED);
 *   struct tsr_site_tls_ctx *c = site_certs_ctx(dir, "dr", true);
 *   ...
 *   site_certs_cleanup(dir);
 * Every function returns 0 / a pointer, or -1 / NULL on failure (no cmocka
 * dependency: the caller asserts).
 */
#ifndef TSR_TEST_SITE_CERTS_H
#define TSR_TEST_SITE_CERTS_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "tessera/site.h"

#define SITE_CERTS_DAY     (24 * 3600L)
#define SITE_CERTS_DIR_MAX 64

enum site_cert_kind {
	SITE_CERT_GOOD,     /* signed by "ca", valid from a day ago for 30 days */
	SITE_CERT_EXPIRED,  /* signed by "ca", expired yesterday */
	SITE_CERT_FUTURE,   /* signed by "ca", valid from tomorrow */
	SITE_CERT_OTHER_CA, /* valid, signed by "other-ca" (not trusted) */
};

struct site_certs_id {
	EVP_PKEY *key;
	X509 *cert;
};

static inline void site_certs_free_id(struct site_certs_id *id)
{
	EVP_PKEY_free(id->key);
	X509_free(id->cert);
	id->key = NULL;
	id->cert = NULL;
}

static inline int site_certs_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (ext == NULL)
		return -1;
	ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok == 1 ? 0 : -1;
}

/* A certificate for cn valid [from, to] seconds from now, signed by issuer
 * (NULL: a self-signed CA).  0 or -1 (id freed). */
static inline int site_certs_make_id(struct site_certs_id *id, const char *cn, long from, long to,
				     const struct site_certs_id *issuer)
{
	static long serial = 1000;
	X509_NAME *name;
	char san[192];
	int bad = 0;

	id->key = EVP_EC_gen("P-256");
	id->cert = X509_new();
	if (id->key == NULL || id->cert == NULL)
		goto err;
	X509_set_version(id->cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(id->cert), serial++);
	X509_gmtime_adj(X509_getm_notBefore(id->cert), from);
	X509_gmtime_adj(X509_getm_notAfter(id->cert), to);
	X509_set_pubkey(id->cert, id->key);
	name = X509_get_subject_name(id->cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(id->cert, issuer ? X509_get_subject_name(issuer->cert) : name);
	if (issuer == NULL) {
		bad |=
		    site_certs_ext(id->cert, id->cert, NID_basic_constraints, "critical,CA:TRUE");
		bad |= site_certs_ext(id->cert, id->cert, NID_key_usage,
				      "critical,keyCertSign,cRLSign");
		bad |= site_certs_ext(id->cert, id->cert, NID_subject_key_identifier, "hash");
	} else {
		snprintf(san, sizeof(san), "DNS:%s,IP:127.0.0.1", cn);
		bad |= site_certs_ext(id->cert, issuer->cert, NID_basic_constraints, "CA:FALSE");
		bad |= site_certs_ext(id->cert, issuer->cert, NID_subject_alt_name, san);
		bad |= site_certs_ext(id->cert, issuer->cert, NID_ext_key_usage,
				      "serverAuth,clientAuth");
	}
	if (bad || X509_sign(id->cert, issuer ? issuer->key : id->key, EVP_sha256()) <= 0)
		goto err;
	return 0;
err:
	site_certs_free_id(id);
	return -1;
}

static inline void site_certs_path(char *out, size_t size, const char *dir, const char *tag,
				   const char *ext)
{
	snprintf(out, size, "%s/%s.%s", dir, tag, ext);
}

/* Write id as <dir>/<tag>.crt and <dir>/<tag>.key.  0 or -1. */
static inline int site_certs_save(const char *dir, const struct site_certs_id *id, const char *tag)
{
	char path[SITE_CERTS_DIR_MAX + 96];
	FILE *f;
	int ok;

	site_certs_path(path, sizeof(path), dir, tag, "crt");
	if ((f = fopen(path, "w")) == NULL)
		return -1;
	ok = PEM_write_X509(f, id->cert);
	if (fclose(f) != 0 || ok != 1)
		return -1;
	site_certs_path(path, sizeof(path), dir, tag, "key");
	if ((f = fopen(path, "w")) == NULL)
		return -1;
	ok = PEM_write_PrivateKey(f, id->key, NULL, NULL, 0, NULL, NULL);
	if (fclose(f) != 0 || ok != 1)
		return -1;
	return 0;
}

/* Read <dir>/<tag>.crt and .key back.  0 or -1. */
static inline int site_certs_load(const char *dir, const char *tag, struct site_certs_id *id)
{
	char path[SITE_CERTS_DIR_MAX + 96];
	FILE *f;

	id->key = NULL;
	id->cert = NULL;
	site_certs_path(path, sizeof(path), dir, tag, "crt");
	if ((f = fopen(path, "r")) != NULL) {
		id->cert = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	site_certs_path(path, sizeof(path), dir, tag, "key");
	if ((f = fopen(path, "r")) != NULL) {
		id->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (id->key == NULL || id->cert == NULL) {
		site_certs_free_id(id);
		return -1;
	}
	return 0;
}

/* Make a temporary directory (dir gets its path, SITE_CERTS_DIR_MAX bytes)
 * with "ca" and "other-ca".  0 or -1. */
static inline int site_certs_init(char dir[SITE_CERTS_DIR_MAX])
{
	struct site_certs_id ca, other;
	int ret;

	snprintf(dir, SITE_CERTS_DIR_MAX, "/tmp/tsr-site-certs-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	if (site_certs_make_id(&ca, "Tessera site test CA", -SITE_CERTS_DAY, 30 * SITE_CERTS_DAY,
			       NULL))
		return -1;
	if (site_certs_make_id(&other, "Somebody else's CA", -SITE_CERTS_DAY, 30 * SITE_CERTS_DAY,
			       NULL)) {
		site_certs_free_id(&ca);
		return -1;
	}
	ret = site_certs_save(dir, &ca, "ca") || site_certs_save(dir, &other, "other-ca") ? -1 : 0;
	site_certs_free_id(&ca);
	site_certs_free_id(&other);
	return ret;
}

/* A leaf certificate for cn (CN, DNS SAN; IP SAN 127.0.0.1) saved as tag.
 * 0 or -1. */
static inline int site_certs_leaf(const char *dir, const char *tag, const char *cn,
				  enum site_cert_kind kind)
{
	struct site_certs_id issuer, leaf;
	long from = -SITE_CERTS_DAY, to = 30 * SITE_CERTS_DAY;
	int ret;

	if (site_certs_load(dir, kind == SITE_CERT_OTHER_CA ? "other-ca" : "ca", &issuer))
		return -1;
	if (kind == SITE_CERT_EXPIRED) {
		from = -10 * SITE_CERTS_DAY;
		to = -SITE_CERTS_DAY;
	}
	if (kind == SITE_CERT_FUTURE)
		from = SITE_CERTS_DAY;
	ret = site_certs_make_id(&leaf, cn, from, to, &issuer);
	if (ret == 0) {
		ret = site_certs_save(dir, &leaf, tag);
		site_certs_free_id(&leaf);
	}
	site_certs_free_id(&issuer);
	return ret;
}

/* A TLS context presenting tag's certificate and trusting "ca" (server: an
 * accepting context).  NULL on failure (tsr_site_tls_ctx_create logged why). */
static inline struct tsr_site_tls_ctx *site_certs_ctx(const char *dir, const char *tag, bool server)
{
	char ca[SITE_CERTS_DIR_MAX + 96], crt[SITE_CERTS_DIR_MAX + 96],
	    key[SITE_CERTS_DIR_MAX + 96];
	struct tsr_site_tls_opts o = {
	    .ca_file = ca, .cert_file = crt, .key_file = key, .server = server};
	struct tsr_site_tls_ctx *ctx = NULL;

	site_certs_path(ca, sizeof(ca), dir, "ca", "crt");
	site_certs_path(crt, sizeof(crt), dir, tag, "crt");
	site_certs_path(key, sizeof(key), dir, tag, "key");
	if (tsr_site_tls_ctx_create(&o, &ctx) != 0)
		return NULL;
	return ctx;
}

/* Remove the directory and everything in it.  0 or -1. */
static inline int site_certs_cleanup(const char *dir)
{
	char cmd[SITE_CERTS_DIR_MAX + 32];

	if (dir[0] == '\0' || strncmp(dir, "/tmp/tsr-site-certs-", 20) != 0)
		return -1;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

#endif
