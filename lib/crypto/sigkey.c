/* Signature key files: PEM certificate, a checksum line, then PEM PKCS#8 private key under
 * scrypt. The line "kyok-key-block-sha256: <hex>" between the blocks holds the SHA-256 of the
 * encrypted key's DER: PEM readers skip it, and it tells a damaged key block (restore the
 * file) from a wrong password, which CBC alone cannot. Files without the line still open.
 *
 * A key in a PKCS#11 token: the PEM certificate, then exactly four lines that say where the
 * key is, and no key block:
 *   kyok-token-module: <absolute path of the PKCS#11 module>
 *   kyok-token-label: <token label>
 *   kyok-token-serial: <token serial number>
 *   kyok-token-key-id: <CKA_ID of the private key, 32 hex digits> */
#include <errno.h>
#include <openssl/asn1t.h>
#include <stdbool.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <string.h>
#include <sys/stat.h>

#include "kyok/crypto.h"
#include "kyok/err.h"

#define SIGKEY_MAX_BYTES    (64 * 1024)
#define SIGKEY_MIN_PASSWORD 8
#define SIGKEY_CERT_DAYS    3650
#define SIGKEY_OU           "kyok administration"
#define SIGKEY_SCRYPT_N     KY_SIGKEY_SCRYPT_N
#define SIGKEY_SCRYPT_R     8
#define SIGKEY_SCRYPT_P     5
#define SIGKEY_SALT_LEN     16
#define SIGKEY_PBKDF2_MIN   600000
#define SIGKEY_SUM_LABEL    "kyok-key-block-sha256: "

/* The least work a file's password derivation must cost: scrypt N*r*p at least ours with
 * r >= 8 (memory hardness), or PBKDF2 with HMAC-SHA256 at 600,000 iterations or more. */
#define SIGKEY_SCRYPT_MIN_WORK ((uint64_t)SIGKEY_SCRYPT_N * SIGKEY_SCRYPT_R * SIGKEY_SCRYPT_P)

/* The two blocks of a sigkey file, as parsed structures. */
struct sigkey_blocks {
	X509 *cert;
	X509_SIG *p8;
	bool has_sum; /* the checksum line was there */
	uint8_t sum[32];
};

static void sigkey_blocks_release(struct sigkey_blocks *b)
{
	X509_free(b->cert);
	X509_SIG_free(b->p8);
	b->cert = NULL;
	b->p8 = NULL;
}

/* Reads one PEM block of the expected type from bio and returns its DER. */
static int sigkey_pem_block(BIO *bio, const char *want, unsigned char **der, long *len)
{
	char *name = NULL, *header = NULL;
	int ok = PEM_read_bio(bio, &name, &header, der, len) == 1 && strcmp(name, want) == 0 &&
	         header[0] == '\0';

	OPENSSL_free(name);
	OPENSSL_free(header);
	if (!ok) {
		OPENSSL_free(*der);
		*der = NULL;
	}
	return ok ? 0 : KY_ERR_NOT_SIGKEY;
}

/* The checksum line, when the file has one: exactly one, 64 hex digits, between the blocks. */
static int sigkey_sum_line(const struct ky_buf *file, struct sigkey_blocks *b)
{
	const char *text = (const char *)file->data, *at, *end_cert, *begin_key;
	const size_t lablen = sizeof(SIGKEY_SUM_LABEL) - 1;
	char hex[65];

	b->has_sum = false;
	at = memmem(text, file->len, "\n" SIGKEY_SUM_LABEL, lablen + 1);
	if (at == NULL)
		return 0;
	at++;
	end_cert = memmem(text, file->len, "-----END CERTIFICATE-----", 25);
	begin_key = memmem(text, file->len, "-----BEGIN " PEM_STRING_PKCS8 "-----",
	                   sizeof("-----BEGIN " PEM_STRING_PKCS8 "-----") - 1);
	if (end_cert == NULL || begin_key == NULL || at < end_cert || at > begin_key ||
	    (size_t)(begin_key - at) < lablen + 65 || at[lablen + 64] != '\n' ||
	    memmem(at + 1, file->len - (size_t)(at + 1 - text), SIGKEY_SUM_LABEL, lablen) != NULL)
		return KY_ERR_NOT_SIGKEY;
	memcpy(hex, at + lablen, 64);
	hex[64] = '\0';
	if (ky_hex_decode(hex, b->sum, sizeof(b->sum)) != 0)
		return KY_ERR_NOT_SIGKEY;
	b->has_sum = true;
	return 0;
}

/* SHA-256 of the DER of the encrypted key. */
static int sigkey_block_sum(const X509_SIG *p8, uint8_t sum[32])
{
	unsigned char *der = NULL;
	int len = i2d_X509_SIG(p8, &der);
	int ok = len > 0 && EVP_Digest(der, (size_t)len, sum, NULL, EVP_sha256(), NULL) == 1;

	OPENSSL_free(der);
	return ok ? 0 : KY_ERR_CRYPTO;
}

static int sigkey_parse(const struct ky_buf *file, struct sigkey_blocks *b)
{
	int r = KY_ERR_INTERNAL;
	BIO *bio = BIO_new_mem_buf(file->data, (int)file->len);
	unsigned char *der = NULL;
	const unsigned char *p;
	long len = 0;

	if (bio == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = sigkey_pem_block(bio, PEM_STRING_X509, &der, &len)) != 0)
		goto out;
	p = der;
	if ((b->cert = d2i_X509(NULL, &p, len)) == NULL || p != der + len) {
		r = KY_ERR_NOT_SIGKEY;
		goto out;
	}
	OPENSSL_free(der);
	der = NULL;
	if ((r = sigkey_sum_line(file, b)) != 0)
		goto out;
	if ((r = sigkey_pem_block(bio, PEM_STRING_PKCS8, &der, &len)) != 0)
		goto out;
	p = der;
	if ((b->p8 = d2i_X509_SIG(NULL, &p, len)) == NULL || p != der + len) {
		r = KY_ERR_NOT_SIGKEY;
		goto out;
	}
	r = 0;
out:
	OPENSSL_free(der);
	BIO_free(bio);
	if (r != 0)
		sigkey_blocks_release(b);
	ERR_clear_error();
	return r;
}

static int sigkey_load(const char *path, struct sigkey_blocks *b)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf file = {0};

	if ((r = ky_file_read(path, SIGKEY_MAX_BYTES, &file)) != 0)
		goto out;
	if (file.len == 0) {
		r = KY_ERR_EMPTY_FILE;
		goto out;
	}
	if ((r = sigkey_parse(&file, b)) != 0)
		goto out;
	/* A certificate that no longer passes the admin checks was edited. */
	if (ky_admin_cert_check(b->cert) != 0) {
		r = KY_ERR_TAMPERED;
		goto out;
	}
	r = 0;
out:
	if (r != 0)
		sigkey_blocks_release(b);
	ky_buf_free(&file);
	return r;
}

static int sigkey_encode(X509 *cert, EVP_PKEY *key, const char *password, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	PKCS8_PRIV_KEY_INFO *p8inf = NULL;
	X509_ALGOR *pbe = NULL;
	X509_SIG *p8 = NULL;
	BIO *bio = NULL;
	char *data = NULL, hex[65];
	uint8_t sum[32];
	long len;

	if ((bio = BIO_new(BIO_s_mem())) == NULL || (p8inf = EVP_PKEY2PKCS8(key)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	pbe = PKCS5_pbe2_set_scrypt(EVP_aes_256_cbc(), NULL, SIGKEY_SALT_LEN, NULL, SIGKEY_SCRYPT_N,
	                            SIGKEY_SCRYPT_R, SIGKEY_SCRYPT_P);
	if (pbe == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((p8 = PKCS8_set0_pbe(password, (int)strlen(password), p8inf, pbe)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	pbe = NULL; /* transferred */
	if (sigkey_block_sum(p8, sum) != 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	ky_hex_encode(sum, sizeof(sum), hex);
	if (PEM_write_bio_X509(bio, cert) != 1 ||
	    BIO_printf(bio, "%s%s\n", SIGKEY_SUM_LABEL, hex) <= 0 ||
	    PEM_write_bio_PKCS8(bio, p8) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((len = BIO_get_mem_data(bio, &data)) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(out, data, (size_t)len)) != 0)
		goto out;
	r = 0;
out:
	BIO_free(bio);
	X509_SIG_free(p8);
	X509_ALGOR_free(pbe);
	PKCS8_PRIV_KEY_INFO_free(p8inf);
	if (r != 0)
		ERR_clear_error();
	return r;
}

#define SIGKEY_TOK_MODULE "kyok-token-module: "
#define SIGKEY_TOK_LABEL  "kyok-token-label: "
#define SIGKEY_TOK_SERIAL "kyok-token-serial: "
#define SIGKEY_TOK_ID     "kyok-token-key-id: "

static bool sigkey_printable(const char *s, size_t min, size_t max)
{
	size_t n = strlen(s);

	if (n < min || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

static bool sigkey_token_ok(const struct ky_sigkey_token *tok)
{
	return sigkey_printable(tok->module, 2, KY_TOKEN_MODULE_MAX) && tok->module[0] == '/' &&
	       sigkey_printable(tok->label, 1, KY_TOKEN_LABEL_MAX) &&
	       sigkey_printable(tok->serial, 1, KY_TOKEN_SERIAL_MAX);
}

/* One "<prefix><value>\n" line at *p (before end): the value into out (at most cap-1). */
static int sigkey_token_line(const char **p, const char *end, const char *prefix, char *out,
                             size_t cap)
{
	size_t plen = strlen(prefix), vlen;
	const char *nl;

	if ((size_t)(end - *p) < plen || memcmp(*p, prefix, plen) != 0)
		return KY_ERR_NOT_SIGKEY;
	*p += plen;
	if ((nl = memchr(*p, '\n', (size_t)(end - *p))) == NULL)
		return KY_ERR_NOT_SIGKEY;
	vlen = (size_t)(nl - *p);
	if (vlen >= cap || memchr(*p, '\0', vlen) != NULL)
		return KY_ERR_NOT_SIGKEY;
	memcpy(out, *p, vlen);
	out[vlen] = '\0';
	*p = nl + 1;
	return 0;
}

/* The reference forms' head: the certificate block, its text after it in *rest. */
static int sigkey_ref_head(BIO *bio, X509 **x, const char **rest, const char **end)
{
	int r = KY_ERR_INTERNAL;
	unsigned char *der = NULL;
	const unsigned char *q;
	char *data = NULL;
	long len = 0, restlen;

	if ((r = sigkey_pem_block(bio, PEM_STRING_X509, &der, &len)) != 0)
		goto out;
	q = der;
	if ((*x = d2i_X509(NULL, &q, len)) == NULL || q != der + len) {
		r = KY_ERR_NOT_SIGKEY;
		goto out;
	}
	if ((restlen = BIO_get_mem_data(bio, &data)) <= 0) {
		r = KY_ERR_NOT_SIGKEY;
		goto out;
	}
	*rest = data;
	*end = data + restlen;
	r = 0;
out:
	OPENSSL_free(der);
	return r;
}

/* The token form: the certificate block, then the four lines, then nothing. */
static int sigkey_token_parse(const struct ky_buf *file, X509 **cert, struct ky_sigkey_token *tok)
{
	int r = KY_ERR_INTERNAL;
	BIO *bio = BIO_new_mem_buf(file->data, (int)file->len);
	const char *p = NULL, *end = NULL;
	char hex[2 * KY_TOKEN_ID_LEN + 2];
	X509 *x = NULL;

	memset(tok, 0, sizeof(*tok));
	if (bio == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = sigkey_ref_head(bio, &x, &p, &end)) != 0)
		goto out;
	if ((r = sigkey_token_line(&p, end, SIGKEY_TOK_MODULE, tok->module, sizeof(tok->module))) !=
	        0 ||
	    (r = sigkey_token_line(&p, end, SIGKEY_TOK_LABEL, tok->label, sizeof(tok->label))) !=
	        0 ||
	    (r = sigkey_token_line(&p, end, SIGKEY_TOK_SERIAL, tok->serial, sizeof(tok->serial))) !=
	        0 ||
	    (r = sigkey_token_line(&p, end, SIGKEY_TOK_ID, hex, sizeof(hex))) != 0)
		goto out;
	if (p != end || strlen(hex) != 2 * KY_TOKEN_ID_LEN ||
	    ky_hex_decode(hex, tok->id, KY_TOKEN_ID_LEN) != 0 || !sigkey_token_ok(tok)) {
		r = KY_ERR_NOT_SIGKEY;
		goto out;
	}
	*cert = x;
	x = NULL; /* transferred */
	r = 0;
out:
	X509_free(x);
	BIO_free(bio);
	ERR_clear_error();
	return r;
}

#define SIGKEY_CARD_ZONE   "kyok-card-zone: "
#define SIGKEY_CARD_DEVICE "kyok-card-device: "
#define SIGKEY_CARD_SKI    "kyok-card-key-ski: "

/* One "<prefix><64 hex digits>\n" line of the card form into out (32 bytes). */
static int sigkey_card_line(const char **p, const char *end, const char *prefix,
                            uint8_t out[KY_SIGKEY_CARD_ID_LEN])
{
	int r = KY_ERR_INTERNAL;
	char hex[2 * KY_SIGKEY_CARD_ID_LEN + 2];

	if ((r = sigkey_token_line(p, end, prefix, hex, sizeof(hex))) != 0)
		goto out;
	if (strlen(hex) != 2 * KY_SIGKEY_CARD_ID_LEN ||
	    ky_hex_decode(hex, out, KY_SIGKEY_CARD_ID_LEN) != 0) {
		r = KY_ERR_NOT_SIGKEY;
		goto out;
	}
	r = 0;
out:
	return r;
}

/* The card form: the certificate block, then the three lines, then nothing; the SKI must be
 * the certificate key's. */
static int sigkey_card_parse(const struct ky_buf *file, X509 **cert, struct ky_sigkey_card *card)
{
	int r = KY_ERR_INTERNAL;
	BIO *bio = BIO_new_mem_buf(file->data, (int)file->len);
	const char *p = NULL, *end = NULL;
	uint8_t ski[KY_SIGKEY_CARD_ID_LEN];
	X509 *x = NULL;

	memset(card, 0, sizeof(*card));
	if (bio == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = sigkey_ref_head(bio, &x, &p, &end)) != 0)
		goto out;
	if ((r = sigkey_card_line(&p, end, SIGKEY_CARD_ZONE, card->zone_id)) != 0 ||
	    (r = sigkey_card_line(&p, end, SIGKEY_CARD_DEVICE, card->device_id)) != 0 ||
	    (r = sigkey_card_line(&p, end, SIGKEY_CARD_SKI, card->ski)) != 0)
		goto out;
	if (p != end) {
		r = KY_ERR_NOT_SIGKEY;
		goto out;
	}
	if ((r = ky_sigkey_card_ski(X509_get0_pubkey(x), ski)) != 0)
		goto out;
	if (CRYPTO_memcmp(ski, card->ski, sizeof(ski)) != 0) {
		r = KY_ERR_TAMPERED;
		goto out;
	}
	*cert = x;
	x = NULL; /* transferred */
	r = 0;
out:
	X509_free(x);
	BIO_free(bio);
	ERR_clear_error();
	return r;
}

int ky_sigkey_card_ski(EVP_PKEY *pub, uint8_t ski[KY_SIGKEY_CARD_ID_LEN])
{
	int r = KY_ERR_INTERNAL;
	unsigned char *pt = NULL;
	size_t n;

	if (pub == NULL || (n = EVP_PKEY_get1_encoded_public_key(pub, &pt)) == 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (EVP_Digest(pt, n, ski, NULL, EVP_sha256(), NULL) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	OPENSSL_free(pt);
	ERR_clear_error();
	return r;
}

enum sigkey_kind { SIGKEY_IN_FILE, SIGKEY_IN_TOKEN, SIGKEY_IN_CARD };

/* Any form of sigkey file: the certificate, and the token's or the card's reference. */
static int sigkey_read_any(const char *path, X509 **cert, struct ky_sigkey_token *tok,
                           struct ky_sigkey_card *card, enum sigkey_kind *kind)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf file = {0};
	struct sigkey_blocks b = {0};
	X509 *x = NULL;

	*kind = SIGKEY_IN_FILE;
	if ((r = ky_file_read(path, SIGKEY_MAX_BYTES, &file)) != 0)
		goto out;
	if (file.len == 0) {
		r = KY_ERR_EMPTY_FILE;
		goto out;
	}
	if (memmem(file.data, file.len, "\n" SIGKEY_TOK_MODULE, sizeof(SIGKEY_TOK_MODULE)) !=
	    NULL) {
		if ((r = sigkey_token_parse(&file, &x, tok)) != 0)
			goto out;
		*kind = SIGKEY_IN_TOKEN;
	} else if (memmem(file.data, file.len, "\n" SIGKEY_CARD_ZONE, sizeof(SIGKEY_CARD_ZONE)) !=
	           NULL) {
		if ((r = sigkey_card_parse(&file, &x, card)) != 0)
			goto out;
		*kind = SIGKEY_IN_CARD;
	} else {
		if ((r = sigkey_parse(&file, &b)) != 0)
			goto out;
		x = b.cert;
		b.cert = NULL; /* transferred */
	}
	/* A certificate that no longer passes the admin checks was edited. */
	if (ky_admin_cert_check(x) != 0) {
		r = KY_ERR_TAMPERED;
		goto out;
	}
	*cert = x;
	x = NULL; /* transferred */
	r = 0;
out:
	X509_free(x);
	sigkey_blocks_release(&b);
	ky_buf_free(&file);
	return r;
}

int ky_sigkey_read(const char *path, X509 **cert, struct ky_sigkey_token *tok, bool *in_token)
{
	int r = KY_ERR_INTERNAL;
	struct ky_sigkey_card card;
	enum sigkey_kind kind = SIGKEY_IN_FILE;
	X509 *x = NULL;

	*in_token = false;
	if ((r = sigkey_read_any(path, &x, tok, &card, &kind)) != 0)
		goto out;
	if (kind == SIGKEY_IN_CARD) {
		r = KY_ERR_SIGKEY_IN_CARD;
		goto out;
	}
	*in_token = kind == SIGKEY_IN_TOKEN;
	*cert = x;
	x = NULL; /* transferred */
	r = 0;
out:
	X509_free(x);
	return r;
}

int ky_sigkey_read_card(const char *path, X509 **cert, struct ky_sigkey_card *card)
{
	int r = KY_ERR_INTERNAL;
	struct ky_sigkey_token tok;
	enum sigkey_kind kind = SIGKEY_IN_FILE;
	X509 *x = NULL;

	if ((r = sigkey_read_any(path, &x, &tok, card, &kind)) != 0)
		goto out;
	if (kind != SIGKEY_IN_CARD) {
		r = KY_ERR_NOT_SIGKEY;
		goto out;
	}
	*cert = x;
	x = NULL; /* transferred */
	r = 0;
out:
	X509_free(x);
	return r;
}

int ky_sigkey_card_create(const char *path, const char *name, const struct ky_ext_signer *s,
                          const struct ky_sigkey_card *card)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf file = {0};
	struct stat st;
	BIO *bio = NULL;
	X509 *cert = NULL;
	uint8_t ski[KY_SIGKEY_CARD_ID_LEN];
	char *data = NULL, zone[2 * KY_SIGKEY_CARD_ID_LEN + 1], dev[2 * KY_SIGKEY_CARD_ID_LEN + 1],
	     hski[2 * KY_SIGKEY_CARD_ID_LEN + 1];
	size_t namelen = name != NULL ? strlen(name) : 0;
	long len;

	if (namelen < 1 || namelen > KY_ADMIN_NAME_MAX)
		return KY_ERR_ADMIN_NAME;
	if ((r = ky_sigkey_card_ski(s->pub, ski)) != 0)
		return r;
	if (CRYPTO_memcmp(ski, card->ski, sizeof(ski)) != 0)
		return KY_ERR_USAGE;
	if (lstat(path, &st) == 0)
		return KY_ERR_EXISTS;
	if (errno != ENOENT)
		return KY_ERR_IO;
	if ((r = ky_cert_self_signed_ext(s, name, SIGKEY_OU, SIGKEY_CERT_DAYS, &cert)) != 0)
		goto out;
	if ((r = ky_admin_cert_check(cert)) != 0)
		goto out; /* KY_ERR_ADMIN_NAME for a name with unprintable characters */
	ky_hex_encode(card->zone_id, KY_SIGKEY_CARD_ID_LEN, zone);
	ky_hex_encode(card->device_id, KY_SIGKEY_CARD_ID_LEN, dev);
	ky_hex_encode(card->ski, KY_SIGKEY_CARD_ID_LEN, hski);
	if ((bio = BIO_new(BIO_s_mem())) == NULL || PEM_write_bio_X509(bio, cert) != 1 ||
	    BIO_printf(bio, "%s%s\n%s%s\n%s%s\n", SIGKEY_CARD_ZONE, zone, SIGKEY_CARD_DEVICE, dev,
	               SIGKEY_CARD_SKI, hski) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((len = BIO_get_mem_data(bio, &data)) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(&file, data, (size_t)len)) != 0)
		goto out;
	if ((r = ky_file_write_atomic(path, file.data, file.len, 0600)) != 0)
		goto out;
	r = 0;
out:
	BIO_free(bio);
	X509_free(cert);
	ky_buf_free(&file);
	ERR_clear_error();
	return r;
}

int ky_sigkey_token_create(const char *path, const char *name, const struct ky_ext_signer *s,
                           const struct ky_sigkey_token *tok)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf file = {0};
	struct stat st;
	BIO *bio = NULL;
	X509 *cert = NULL;
	char *data = NULL, hex[2 * KY_TOKEN_ID_LEN + 1];
	size_t namelen = name != NULL ? strlen(name) : 0;
	long len;

	if (namelen < 1 || namelen > KY_ADMIN_NAME_MAX)
		return KY_ERR_ADMIN_NAME;
	if (!sigkey_token_ok(tok))
		return KY_ERR_USAGE;
	if (lstat(path, &st) == 0)
		return KY_ERR_EXISTS;
	if (errno != ENOENT)
		return KY_ERR_IO;
	if ((r = ky_cert_self_signed_ext(s, name, SIGKEY_OU, SIGKEY_CERT_DAYS, &cert)) != 0)
		goto out;
	if ((r = ky_admin_cert_check(cert)) != 0)
		goto out; /* KY_ERR_ADMIN_NAME for a name with unprintable characters */
	ky_hex_encode(tok->id, KY_TOKEN_ID_LEN, hex);
	if ((bio = BIO_new(BIO_s_mem())) == NULL || PEM_write_bio_X509(bio, cert) != 1 ||
	    BIO_printf(bio, "%s%s\n%s%s\n%s%s\n%s%s\n", SIGKEY_TOK_MODULE, tok->module,
	               SIGKEY_TOK_LABEL, tok->label, SIGKEY_TOK_SERIAL, tok->serial, SIGKEY_TOK_ID,
	               hex) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((len = BIO_get_mem_data(bio, &data)) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(&file, data, (size_t)len)) != 0)
		goto out;
	if ((r = ky_file_write_atomic(path, file.data, file.len, 0600)) != 0)
		goto out;
	r = 0;
out:
	BIO_free(bio);
	X509_free(cert);
	ky_buf_free(&file);
	ERR_clear_error();
	return r;
}

int ky_sigkey_create(const char *path, const char *name, const char *password)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	struct ky_buf file = {0};
	struct stat st;
	size_t namelen = name != NULL ? strlen(name) : 0;

	if (password == NULL || strlen(password) < SIGKEY_MIN_PASSWORD)
		return KY_ERR_WEAK_PASSWORD;
	if (namelen < 1 || namelen > KY_ADMIN_NAME_MAX)
		return KY_ERR_ADMIN_NAME;
	if (lstat(path, &st) == 0)
		return KY_ERR_EXISTS;
	if (errno != ENOENT)
		return KY_ERR_IO;
	if ((r = ky_ec_generate(&key)) != 0)
		goto out;
	if ((r = ky_cert_self_signed(key, name, SIGKEY_OU, SIGKEY_CERT_DAYS, &cert)) != 0)
		goto out;
	if ((r = ky_admin_cert_check(cert)) != 0)
		goto out; /* KY_ERR_ADMIN_NAME for a name with unprintable characters */
	if ((r = sigkey_encode(cert, key, password, &file)) != 0)
		goto out;
	if ((r = ky_file_write_atomic(path, file.data, file.len, 0600)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&file);
	X509_free(cert);
	EVP_PKEY_free(key);
	return r;
}

int ky_sigkey_read_cert(const char *path, X509 **cert)
{
	struct ky_sigkey_token tok;
	struct ky_sigkey_card card;
	enum sigkey_kind kind;

	return sigkey_read_any(path, cert, &tok, &card, &kind);
}

static bool sigkey_integer(const ASN1_INTEGER *a, uint64_t *v)
{
	return a != NULL && ASN1_INTEGER_get_uint64(v, a) == 1;
}

/* Refuses a private key whose protection is weaker than the format asks: only PBES2 with
 * scrypt or PBKDF2-HMAC-SHA256 at our work factors, and an AES-256 cipher. */
static int sigkey_kdf_check(const X509_SIG *p8)
{
	int r = KY_ERR_INTERNAL;
	const X509_ALGOR *alg = NULL;
	PBE2PARAM *pbe2 = NULL;
	SCRYPT_PARAMS *sp = NULL;
	PBKDF2PARAM *kp = NULL;
	uint64_t n, rr, p, iter;
	int cipher;

	X509_SIG_get0(p8, &alg, NULL);
	if (alg == NULL || OBJ_obj2nid(alg->algorithm) != NID_pbes2) {
		r = KY_ERR_WEAK_KEY_FILE;
		goto out;
	}
	if ((pbe2 = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBE2PARAM), alg->parameter)) == NULL) {
		r = KY_ERR_WEAK_KEY_FILE;
		goto out;
	}
	cipher = OBJ_obj2nid(pbe2->encryption->algorithm);
	if (cipher != NID_aes_256_cbc && cipher != NID_aes_256_gcm) {
		r = KY_ERR_WEAK_KEY_FILE;
		goto out;
	}
	switch (OBJ_obj2nid(pbe2->keyfunc->algorithm)) {
	case NID_id_scrypt:
		sp = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(SCRYPT_PARAMS),
		                               pbe2->keyfunc->parameter);
		if (sp == NULL || !sigkey_integer(sp->costParameter, &n) ||
		    !sigkey_integer(sp->blockSize, &rr) ||
		    !sigkey_integer(sp->parallelizationParameter, &p)) {
			r = KY_ERR_WEAK_KEY_FILE;
			goto out;
		}
		if (rr < SIGKEY_SCRYPT_R || n > (1u << 24) || rr > 64 || p > 64 ||
		    n * rr * p < SIGKEY_SCRYPT_MIN_WORK) {
			r = KY_ERR_WEAK_KEY_FILE;
			goto out;
		}
		break;
	case NID_id_pbkdf2:
		kp = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBKDF2PARAM),
		                               pbe2->keyfunc->parameter);
		if (kp == NULL || !sigkey_integer(kp->iter, &iter) || iter < SIGKEY_PBKDF2_MIN) {
			r = KY_ERR_WEAK_KEY_FILE;
			goto out;
		}
		if (kp->prf == NULL || OBJ_obj2nid(kp->prf->algorithm) != NID_hmacWithSHA256) {
			r = KY_ERR_WEAK_KEY_FILE;
			goto out;
		}
		break;
	default:
		r = KY_ERR_WEAK_KEY_FILE;
		goto out;
	}
	r = 0;
out:
	PBE2PARAM_free(pbe2);
	SCRYPT_PARAMS_free(sp);
	PBKDF2PARAM_free(kp);
	ERR_clear_error();
	return r;
}

int ky_sigkey_open(const char *path, const char *password, X509 **cert, EVP_PKEY **key)
{
	int r = KY_ERR_INTERNAL;
	struct sigkey_blocks b = {0};
	PKCS8_PRIV_KEY_INFO *p8inf = NULL;
	EVP_PKEY *pk = NULL;

	if (password == NULL)
		return KY_ERR_WRONG_PASSWORD;
	if ((r = sigkey_load(path, &b)) != 0)
		goto out;
	if ((r = sigkey_kdf_check(b.p8)) != 0)
		goto out;
	/* CBC has no integrity check of its own: the checksum line tells a damaged key block
	 * from a wrong password. Without it (older files, or made with openssl alone) damage
	 * reads as a wrong password, or as a key that does not match the certificate. */
	if (b.has_sum) {
		uint8_t sum[32];
		if ((r = sigkey_block_sum(b.p8, sum)) != 0)
			goto out;
		if (CRYPTO_memcmp(sum, b.sum, sizeof(sum)) != 0) {
			r = KY_ERR_KEY_BLOCK_DAMAGED;
			goto out;
		}
	}
	if ((p8inf = PKCS8_decrypt(b.p8, password, (int)strlen(password))) == NULL) {
		r = KY_ERR_WRONG_PASSWORD;
		goto out;
	}
	if ((pk = EVP_PKCS82PKEY(p8inf)) == NULL ||
	    EVP_PKEY_eq(X509_get0_pubkey(b.cert), pk) != 1) {
		r = KY_ERR_TAMPERED;
		goto out;
	}
	*cert = b.cert;
	b.cert = NULL; /* transferred */
	*key = pk;
	pk = NULL; /* transferred */
	r = 0;
out:
	EVP_PKEY_free(pk);
	PKCS8_PRIV_KEY_INFO_free(p8inf);
	sigkey_blocks_release(&b);
	ERR_clear_error();
	return r;
}
