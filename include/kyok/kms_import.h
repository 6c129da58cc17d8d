/* Import tokens: secure import of root key material (Key Protect's /api/v2/import_token).
 *
 * An instance has at most one import token: an RSA-4096 key pair, a 12-byte nonce, an
 * expiration date and a count of retrievals left. A client retrieves the public key and the
 * nonce, encrypts the key it imports to the public key with RSAES-OAEP (SHA-256, or SHA-1 when
 * it says so), and the nonce with AES-GCM under the key it imports; the unit decrypts both and
 * takes the key only when the nonce is the token's current one. A nonce imports one key: once
 * used, the token gets a fresh one (the next retrieval shows it).
 *
 * The token is kept as the system secret KY_IMPORT_TOKEN_SECRET (sealed under the master key
 * like every secret, re-enciphered with them). Its serialised form (docs/formats.md):
 *   "KYIT" || u8 version 1 || i64 created || i64 expires || u32 max retrievals ||
 *   u32 retrievals left || nonce (12) || u8 used || last used nonce (12) ||
 *   u32 length || PKCS#8 DER of the RSA private key
 * (integers big-endian). Everything here is pure: no I/O, no key storage.
 */
#ifndef KYOK_KMS_IMPORT_H
#define KYOK_KMS_IMPORT_H

#include <stddef.h>
#include <stdint.h>

#include "kyok/common.h"

#define KY_IMPORT_TOKEN_SECRET       "import-token"
#define KY_IMPORT_TOKEN_BITS         4096
#define KY_IMPORT_NONCE_LEN          12
#define KY_IMPORT_IV_LEN             12
#define KY_IMPORT_TAG_LEN            16
#define KY_IMPORT_EXPIRATION_MIN     300
#define KY_IMPORT_EXPIRATION_MAX     86400
#define KY_IMPORT_EXPIRATION_DEFAULT 600
#define KY_IMPORT_RETRIEVALS_MAX     500
#define KY_IMPORT_RETRIEVALS_DEFAULT 1
#define KY_IMPORT_CIPHERTEXT_MAX     (KY_IMPORT_TOKEN_BITS / 8)

struct ky_import_token {
	int64_t created;
	int64_t expires;
	uint32_t max_retrievals;
	uint32_t remaining;
	uint8_t nonce[KY_IMPORT_NONCE_LEN];
	int used; /* used_nonce holds the nonce of the last import */
	uint8_t used_nonce[KY_IMPORT_NONCE_LEN];
	uint8_t *der; /* secure heap: the private key, PKCS#8 DER */
	size_t derlen;
};

/* A new token: key pair and nonce generated. expiration in seconds
 * (KY_IMPORT_EXPIRATION_MIN..MAX), max_retrievals 1..KY_IMPORT_RETRIEVALS_MAX, else
 * KY_ERR_USAGE. */
int ky_import_token_new(int64_t now, uint32_t expiration, uint32_t max_retrievals,
                        struct ky_import_token **out) KY_WUR;
void ky_import_token_free(struct ky_import_token *t); /* cleanses; NULL ok */
/* The serialised form, in the secure heap: free with ky_kms_buf_free(*out, *n). */
int ky_import_token_encode(const struct ky_import_token *t, uint8_t **out, size_t *n) KY_WUR;
/* KY_ERR_MALFORMED for anything but a well-formed token of version 1. */
int ky_import_token_decode(const uint8_t *p, size_t n, struct ky_import_token **out) KY_WUR;
/* The public key as Key Protect gives it: base64 of its PEM (SubjectPublicKeyInfo). malloc'd,
 * NUL-terminated. */
int ky_import_token_public_b64(const struct ky_import_token *t, char **out) KY_WUR;
/* One retrieval: KY_ERR_IMPORT_TOKEN_EXPIRED past the expiration date,
 * KY_ERR_IMPORT_TOKEN_USED_UP when no retrieval is left; else counts it. */
int ky_import_token_retrieve(struct ky_import_token *t, int64_t now) KY_WUR;

/* What a secure import sends: the key encrypted to the token's public key, the token's nonce
 * encrypted under that key (AES-GCM: ciphertext || 16-byte tag) and the GCM IV. */
struct ky_import_sealed {
	const uint8_t *payload;
	size_t payload_len;
	const uint8_t *enc_nonce;
	size_t enc_nonce_len;
	const uint8_t *iv;
	size_t iv_len;
	int oaep_sha1; /* 1: RSAES-OAEP with SHA-1; 0: with SHA-256 */
};

/* Opens s with t: the key into key (cap bytes: 16, 24 or 32 come out, else
 * KY_ERR_KEY_MATERIAL), then checks the nonce and, when it matches, uses it up (a fresh
 * nonce in t: write t back in the same transaction as the key). Refusals:
 * KY_ERR_IMPORT_TOKEN_EXPIRED, KY_ERR_IMPORT_PAYLOAD (not encrypted to this token's key),
 * KY_ERR_INCORRECT_NONCE_IV (the nonce does not decrypt with this key and IV),
 * KY_ERR_INCORRECT_NONCE (another nonce; *reused set when it is the one the last import used).
 * key is written only on success; t is changed only on success. */
int ky_import_token_open(struct ky_import_token *t, int64_t now, const struct ky_import_sealed *s,
                         uint8_t *key, size_t cap, size_t *keylen, int *reused) KY_WUR;

#endif
