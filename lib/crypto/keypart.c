/* Key part files: readable header lines, then a PEM CMS AuthEnvelopedData (AES-256-GCM)
 * whose KEK recipient key is scrypt(password, salt). The encrypted content is the header
 * bytes followed by the 32-byte part, so every header field is authenticated.
 *
 *   kyok-key-part: 1
 *   description: <1..127 printable ASCII characters>
 *   vp: <64 hex digits: SHA-256(0x01 || part)>
 *   kdf: scrypt
 *   kdf-salt: <32 hex digits>
 *   kdf-n: 131072
 *   kdf-r: 8
 *   kdf-p: 1
 *   -----BEGIN CMS-----
 *   ...
 *   -----END CMS-----
 */
#include <errno.h>
#include <openssl/pem.h> /* before cms.h: declares the PEM CMS functions */
#include <openssl/cms.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kyok/crypto.h"
#include "kyok/err.h"

#define KEYPART_MAX_BYTES    (64 * 1024)
#define KEYPART_MIN_PASSWORD 8
#define KEYPART_SALT_LEN     16
#define KEYPART_KEK_LEN      32
#define KEYPART_N            KY_KEYPART_SCRYPT_N
#define KEYPART_R            8u
#define KEYPART_P            1u
/* Parameters accepted on reading: never weaker than the ones written, never so strong that
 * opening the file exhausts the machine (128 * r * N bytes of memory, p rounds). */
#define KEYPART_N_MAX     (1u << 20)
#define KEYPART_R_MAX     16u
#define KEYPART_P_MAX     4u
#define KEYPART_MEM_MAX   ((uint64_t)1 << 30)
#define KEYPART_DESC_MAX  127
#define KEYPART_PEM_BEGIN "-----BEGIN CMS-----\n"

/* Identifier of the KEK recipient: "kyok". */
static const uint8_t keypart_kek_id[] = {0x6b, 0x79, 0x6f, 0x6b};

struct keypart_header {
	struct ky_keypart_info info;
	uint8_t salt[KEYPART_SALT_LEN];
	uint64_t n;
	uint32_t r, p;
	size_t len; /* bytes of header text, up to the PEM line */
};

static int keypart_desc_ok(const char *s, size_t len)
{
	if (len < 1 || len > KEYPART_DESC_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return 0;
	return 1;
}

/* Returns the value of line "name: value\n" starting at *pos, advancing *pos past it. */
static int keypart_line(const char *text, size_t textlen, size_t *pos, const char *name,
                        const char **value, size_t *vlen)
{
	size_t namelen = strlen(name);
	const char *line = text + *pos, *nl;
	size_t rest = textlen - *pos;

	if (rest < namelen + 2 || memcmp(line, name, namelen) != 0 || line[namelen] != ':' ||
	    line[namelen + 1] != ' ')
		return KY_ERR_NOT_KEY_PART;
	if ((nl = memchr(line, '\n', rest)) == NULL)
		return KY_ERR_NOT_KEY_PART;
	*value = line + namelen + 2;
	*vlen = (size_t)(nl - *value);
	*pos += (size_t)(nl - line) + 1;
	return 0;
}

static int keypart_hex(const char *v, size_t vlen, uint8_t *out, size_t n)
{
	char hex[2 * KY_VP_LEN + 1];

	if (vlen != 2 * n || vlen >= sizeof(hex))
		return KY_ERR_NOT_KEY_PART;
	for (size_t i = 0; i < vlen; i++)
		if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f')))
			return KY_ERR_NOT_KEY_PART; /* lowercase only, as written */
	memcpy(hex, v, vlen);
	hex[vlen] = '\0';
	return ky_hex_decode(hex, out, n) == 0 ? 0 : KY_ERR_NOT_KEY_PART;
}

/* Canonical decimal (no sign, no leading zero) within [min, max]. */
static int keypart_uint(const char *v, size_t vlen, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t x = 0;

	if (vlen < 1 || vlen > 10 || (v[0] == '0'))
		return KY_ERR_NOT_KEY_PART;
	for (size_t i = 0; i < vlen; i++) {
		if (v[i] < '0' || v[i] > '9')
			return KY_ERR_NOT_KEY_PART;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	if (x < min || x > max)
		return KY_ERR_NOT_KEY_PART;
	*out = x;
	return 0;
}

/* Strict parser of the header; text is the whole file. */
static int keypart_parse_header(const char *text, size_t textlen, struct keypart_header *h)
{
	int r = KY_ERR_INTERNAL;
	size_t pos = 0, vlen = 0;
	const char *v = NULL;
	uint64_t x = 0;

	memset(h, 0, sizeof(*h));
	if ((r = keypart_line(text, textlen, &pos, "kyok-key-part", &v, &vlen)) != 0)
		return r;
	if (vlen != 1 || v[0] != '1')
		return KY_ERR_NOT_KEY_PART;
	if ((r = keypart_line(text, textlen, &pos, "description", &v, &vlen)) != 0)
		return r;
	if (!keypart_desc_ok(v, vlen))
		return KY_ERR_NOT_KEY_PART;
	memcpy(h->info.description, v, vlen);
	h->info.description[vlen] = '\0';
	if ((r = keypart_line(text, textlen, &pos, "vp", &v, &vlen)) != 0 ||
	    (r = keypart_hex(v, vlen, h->info.vp, KY_VP_LEN)) != 0)
		return r;
	if ((r = keypart_line(text, textlen, &pos, "kdf", &v, &vlen)) != 0)
		return r;
	if (vlen != 6 || memcmp(v, "scrypt", 6) != 0)
		return KY_ERR_NOT_KEY_PART;
	if ((r = keypart_line(text, textlen, &pos, "kdf-salt", &v, &vlen)) != 0 ||
	    (r = keypart_hex(v, vlen, h->salt, KEYPART_SALT_LEN)) != 0)
		return r;
	if ((r = keypart_line(text, textlen, &pos, "kdf-n", &v, &vlen)) != 0 ||
	    (r = keypart_uint(v, vlen, KEYPART_N, KEYPART_N_MAX, &h->n)) != 0)
		return r;
	if ((h->n & (h->n - 1)) != 0)
		return KY_ERR_NOT_KEY_PART; /* scrypt needs a power of two */
	if ((r = keypart_line(text, textlen, &pos, "kdf-r", &v, &vlen)) != 0 ||
	    (r = keypart_uint(v, vlen, KEYPART_R, KEYPART_R_MAX, &x)) != 0)
		return r;
	h->r = (uint32_t)x;
	if ((r = keypart_line(text, textlen, &pos, "kdf-p", &v, &vlen)) != 0 ||
	    (r = keypart_uint(v, vlen, KEYPART_P, KEYPART_P_MAX, &x)) != 0)
		return r;
	h->p = (uint32_t)x;
	if ((uint64_t)128 * h->r * h->n > KEYPART_MEM_MAX)
		return KY_ERR_NOT_KEY_PART;
	if (textlen - pos < strlen(KEYPART_PEM_BEGIN) ||
	    memcmp(text + pos, KEYPART_PEM_BEGIN, strlen(KEYPART_PEM_BEGIN)) != 0)
		return KY_ERR_NOT_KEY_PART;
	h->len = pos;
	return 0;
}

static int keypart_format_header(const struct keypart_header *h, struct ky_buf *out)
{
	char vp[2 * KY_VP_LEN + 1], salt[2 * KEYPART_SALT_LEN + 1], *text = NULL;
	int len, r;

	ky_hex_encode(h->info.vp, KY_VP_LEN, vp);
	ky_hex_encode(h->salt, KEYPART_SALT_LEN, salt);
	len = asprintf(&text,
	               "kyok-key-part: 1\ndescription: %s\nvp: %s\nkdf: scrypt\nkdf-salt: %s\n"
	               "kdf-n: %llu\nkdf-r: %u\nkdf-p: %u\n",
	               h->info.description, vp, salt, (unsigned long long)h->n, h->r, h->p);
	if (len < 0)
		return KY_ERR_NOMEM;
	r = ky_buf_append(out, text, (size_t)len);
	free(text);
	return r;
}

/* KEK = scrypt(password, salt, N, r, p), 32 bytes into kek (secure heap). */
static int keypart_kek(const char *password, const struct keypart_header *h, uint8_t *kek)
{
	int r = KY_ERR_INTERNAL;
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
	EVP_KDF_CTX *ctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
	uint64_t n = h->n, maxmem = 2 * KEYPART_MEM_MAX;
	uint32_t rr = h->r, p = h->p;
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, (void *)password,
	                                      strlen(password)),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)h->salt,
	                                      KEYPART_SALT_LEN),
	    OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
	    OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &rr),
	    OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p),
	    OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem),
	    OSSL_PARAM_construct_end(),
	};

	if (ctx == NULL || EVP_KDF_derive(ctx, kek, KEYPART_KEK_LEN, params) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	if (r != 0) {
		OPENSSL_cleanse(kek, KEYPART_KEK_LEN);
		ERR_clear_error();
	}
	return r;
}

/* AuthEnvelopedData of content to the KEK; PEM appended to out. */
static int keypart_seal(const uint8_t *kek, const struct ky_buf *content, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	CMS_ContentInfo *cms = NULL;
	BIO *in = NULL, *pem = NULL;
	unsigned char *key = NULL, *id = NULL;
	char *data = NULL;
	long len;

	if ((in = BIO_new_mem_buf(content->data, (int)content->len)) == NULL ||
	    (pem = BIO_new(BIO_s_mem())) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	cms = CMS_encrypt(NULL, NULL, EVP_aes_256_gcm(), CMS_BINARY | CMS_PARTIAL);
	if (cms == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	/* The recipient takes both buffers: the key is clear-freed with the structure. */
	if ((key = OPENSSL_malloc(KEYPART_KEK_LEN)) == NULL ||
	    (id = OPENSSL_memdup(keypart_kek_id, sizeof(keypart_kek_id))) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	memcpy(key, kek, KEYPART_KEK_LEN);
	if (CMS_add0_recipient_key(cms, NID_id_aes256_wrap, key, KEYPART_KEK_LEN, id,
	                           sizeof(keypart_kek_id), NULL, NULL, NULL) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	key = NULL; /* transferred */
	id = NULL;  /* transferred */
	if (CMS_final(cms, in, NULL, CMS_BINARY) != 1 || PEM_write_bio_CMS(pem, cms) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((len = BIO_get_mem_data(pem, &data)) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(out, data, (size_t)len)) != 0)
		goto out;
	r = 0;
out:
	if (key != NULL)
		OPENSSL_clear_free(key, KEYPART_KEK_LEN);
	OPENSSL_free(id);
	CMS_ContentInfo_free(cms);
	BIO_free(in);
	BIO_free(pem);
	if (r != 0)
		ERR_clear_error();
	return r;
}

int ky_keypart_write(const char *path, const uint8_t part[KY_MK_LEN], const char *description,
                     const char *password)
{
	int r = KY_ERR_INTERNAL;
	struct keypart_header h;
	struct ky_buf content = {0}, file = {0};
	uint8_t *kek = NULL;
	struct stat st;
	size_t desclen = description != NULL ? strlen(description) : 0;

	memset(&h, 0, sizeof(h));
	if (password == NULL || strlen(password) < KEYPART_MIN_PASSWORD)
		return KY_ERR_WEAK_PASSWORD;
	if (!keypart_desc_ok(description, desclen))
		return KY_ERR_USAGE;
	if (lstat(path, &st) == 0)
		return KY_ERR_EXISTS;
	if (errno != ENOENT)
		return KY_ERR_IO;
	memcpy(h.info.description, description, desclen + 1);
	h.n = KEYPART_N;
	h.r = KEYPART_R;
	h.p = KEYPART_P;
	if ((r = ky_vp(part, h.info.vp)) != 0 || (r = ky_random(h.salt, sizeof(h.salt))) != 0)
		goto out;
	if ((r = keypart_format_header(&h, &file)) != 0)
		goto out;
	if ((r = ky_buf_append(&content, file.data, file.len)) != 0 ||
	    (r = ky_buf_append(&content, part, KY_MK_LEN)) != 0)
		goto out;
	if ((kek = ky_secret_alloc(KEYPART_KEK_LEN)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = keypart_kek(password, &h, kek)) != 0)
		goto out;
	if ((r = keypart_seal(kek, &content, &file)) != 0)
		goto out;
	if ((r = ky_file_write_atomic(path, file.data, file.len, 0600)) != 0)
		goto out;
	r = 0;
out:
	ky_secret_free(kek, KEYPART_KEK_LEN);
	ky_buf_free(&content);
	ky_buf_free(&file);
	return r;
}

static int keypart_load(const char *path, struct ky_buf *file, struct keypart_header *h)
{
	int r = KY_ERR_INTERNAL;

	if ((r = ky_file_read(path, KEYPART_MAX_BYTES, file)) != 0)
		return r == KY_ERR_TOO_LARGE ? KY_ERR_NOT_KEY_PART : r;
	if (file->len == 0)
		return KY_ERR_EMPTY_FILE;
	return keypart_parse_header((const char *)file->data, file->len, h);
}

int ky_keypart_read_info(const char *path, struct ky_keypart_info *info)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf file = {0};
	struct keypart_header h;

	if ((r = keypart_load(path, &file, &h)) != 0)
		goto out;
	*info = h.info;
	r = 0;
out:
	ky_buf_free(&file);
	return r;
}

/* Parses the PEM CMS that follows the header: an AuthEnvelopedData with exactly one KEK
 * recipient named "kyok" and nothing after the PEM block. */
static int keypart_cms(const struct ky_buf *file, size_t off, CMS_ContentInfo **out)
{
	int r = KY_ERR_INTERNAL;
	BIO *bio = BIO_new_mem_buf(file->data + off, (int)(file->len - off));
	CMS_ContentInfo *cms = NULL;
	STACK_OF(CMS_RecipientInfo) * ris;
	CMS_RecipientInfo *ri;

	if (bio == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((cms = PEM_read_bio_CMS(bio, NULL, NULL, NULL)) == NULL || BIO_pending(bio) != 0) {
		r = KY_ERR_TAMPERED;
		goto out;
	}
	if (OBJ_obj2nid(CMS_get0_type(cms)) != NID_id_smime_ct_authEnvelopedData) {
		r = KY_ERR_TAMPERED;
		goto out;
	}
	if ((ris = CMS_get0_RecipientInfos(cms)) == NULL || sk_CMS_RecipientInfo_num(ris) != 1) {
		r = KY_ERR_TAMPERED;
		goto out;
	}
	ri = sk_CMS_RecipientInfo_value(ris, 0);
	if (CMS_RecipientInfo_type(ri) != CMS_RECIPINFO_KEK ||
	    CMS_RecipientInfo_kekri_id_cmp(ri, keypart_kek_id, sizeof(keypart_kek_id)) != 0) {
		r = KY_ERR_TAMPERED;
		goto out;
	}
	*out = cms;
	cms = NULL; /* transferred */
	r = 0;
out:
	CMS_ContentInfo_free(cms);
	BIO_free(bio);
	return r;
}

/* Decrypts the CMS with kek: the KEK unwrap fails on a wrong password, the GCM tag on a
 * damaged ciphertext. The plaintext lands in a secure-heap memory BIO. */
static int keypart_decrypt(CMS_ContentInfo *cms, uint8_t *kek, BIO *plain)
{
	if (CMS_decrypt_set1_key(cms, kek, KEYPART_KEK_LEN, keypart_kek_id,
	                         sizeof(keypart_kek_id)) != 1)
		return KY_ERR_WRONG_PASSWORD;
	if (CMS_decrypt(cms, NULL, NULL, NULL, plain, CMS_BINARY) != 1)
		return KY_ERR_TAMPERED;
	return 0;
}

int ky_keypart_open(const char *path, const char *password, struct ky_keypart_info *info,
                    uint8_t part[KY_MK_LEN])
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf file = {0};
	struct keypart_header h;
	CMS_ContentInfo *cms = NULL;
	BIO *plain = NULL;
	uint8_t *kek = NULL, vp[KY_VP_LEN];
	char *data = NULL;
	long len;

	if (password == NULL)
		return KY_ERR_WRONG_PASSWORD;
	if ((r = keypart_load(path, &file, &h)) != 0)
		goto out;
	if ((r = keypart_cms(&file, h.len, &cms)) != 0)
		goto out;
	if ((kek = ky_secret_alloc(KEYPART_KEK_LEN)) == NULL ||
	    (plain = BIO_new(BIO_s_secmem())) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = keypart_kek(password, &h, kek)) != 0)
		goto out;
	if ((r = keypart_decrypt(cms, kek, plain)) != 0)
		goto out;
	/* The authenticated copy of the header must equal the readable one, byte for byte. */
	len = BIO_get_mem_data(plain, &data);
	if (len < 0 || (size_t)len != h.len + KY_MK_LEN ||
	    CRYPTO_memcmp(data, file.data, h.len) != 0) {
		r = KY_ERR_METADATA_ALTERED;
		goto out;
	}
	if ((r = ky_vp((const uint8_t *)data + h.len, vp)) != 0)
		goto out;
	if (CRYPTO_memcmp(vp, h.info.vp, KY_VP_LEN) != 0) {
		r = KY_ERR_METADATA_ALTERED;
		goto out;
	}
	memcpy(part, data + h.len, KY_MK_LEN);
	if (info != NULL)
		*info = h.info;
	r = 0;
out:
	BIO_free(plain); /* secure memory BIO: clear-freed */
	ky_secret_free(kek, KEYPART_KEK_LEN);
	CMS_ContentInfo_free(cms);
	ky_buf_free(&file);
	ERR_clear_error();
	return r;
}
