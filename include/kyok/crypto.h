/* Thin wrappers over OpenSSL 3 for everything kyok signs, seals and checks.
 *
 * Formats (docs/formats.md has the openssl commands that open each):
 *  - signature key file: PEM "CERTIFICATE" (self-signed X.509, CN = admin name,
 *    OU = "kyok administration", SKI = SHA-256 of the uncompressed point) followed by
 *    PEM "ENCRYPTED PRIVATE KEY" (PKCS#8, PBES2 with scrypt N=2^14 r=8 p=5, AES-256-CBC).
 *    Keys are ECDSA P-521, signatures ECDSA with SHA-512.
 *  - signed command: CMS SignedData, attached content, signers identified by SKI,
 *    signer certificates included (informative only: units trust their own admin table).
 *  - key part to a unit: CMS AuthEnvelopedData (AES-256-GCM), ECDH key agreement recipient
 *    (dhSinglePass-stdDH-sha256kdf, AES-256 key wrap) to the unit's importer certificate.
 *  - key part file: readable header lines, then PEM "CMS" AuthEnvelopedData (AES-256-GCM)
 *    with a KEK recipient whose key is scrypt(password; N=2^17 r=8 p=1) over the salt named
 *    in the header; the content is the header bytes followed by the 32-byte part, so every
 *    header field is authenticated.
 */
#ifndef KYOK_CRYPTO_H
#define KYOK_CRYPTO_H

/* scrypt N of the files kyok writes, and the least it reads: signature key files (r = 8,
 * p = 5) and key part files (r = 8, p = 1). The sanitized test build of make check
 * (meson option test_kdf, KY_TEST_KDF) uses a sixteenth: its tests start the kyok command
 * thousands of times, and every other build refuses the files it writes. */
#ifdef KY_TEST_KDF
#define KY_SIGKEY_SCRYPT_N  1024u
#define KY_KEYPART_SCRYPT_N 8192u
#else
#define KY_SIGKEY_SCRYPT_N  16384u
#define KY_KEYPART_SCRYPT_N 131072u
#endif

#include <openssl/cms.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>

#include "kyok/common.h"

/* Call once at start: OpenSSL secure heap (best effort), error strings. ky_crypto_init sets
 * up a 1 MiB secure heap; ky_crypto_init_heap one of heap bytes (a power of two), for a
 * process that holds more secrets at once (a unit: KY_KMS_SECURE_HEAP). */
int ky_crypto_init(void) KY_WUR;
int ky_crypto_init_heap(size_t heap) KY_WUR;

int ky_random(void *p, size_t n) KY_WUR;
/* Secret buffers: secure heap, cleansed on free; ky_secret_free(NULL, n) is a no-op. */
void *ky_secret_alloc(size_t n);
void ky_secret_free(void *p, size_t n);

/* VP = SHA-256(0x01 || key). */
int ky_vp(const uint8_t key[KY_MK_LEN], uint8_t vp[KY_VP_LEN]) KY_WUR;
/* HMAC-SHA256 of msg (n bytes) under key (keylen bytes), in one call: 0 or KY_ERR_CRYPTO
 * (mac cleansed). The one-shot MAC of the tree (access tokens, API key row tags); a MAC
 * kept keyed across many messages is lib/store's. */
#define KY_HMAC_SHA256_LEN 32
int ky_hmac_sha256(const uint8_t *key, size_t keylen, const void *msg, size_t n,
                   uint8_t mac[KY_HMAC_SHA256_LEN]) KY_WUR;

/* ---- keys and certificates ---- */

int ky_ec_generate(EVP_PKEY **out) KY_WUR; /* P-521 */
/* True when pk is an EC key on P-521: the one curve of kyok's keys and certificates. */
bool ky_pkey_is_p521(const EVP_PKEY *pk);
/* True when pk is on a curve units accept for administrator keys: P-521, or P-384 for
 * tokens that have no P-521 (a YubiKey's PIV application). */
bool ky_pkey_is_admin_curve(const EVP_PKEY *pk);
/* SKI = SHA-256 of the uncompressed EC point of pk (P-521, or P-384: an admin key). */
int ky_ski(const EVP_PKEY *pk, uint8_t ski[KY_SKI_LEN]) KY_WUR;
/* SKI extension of cert (KY_ERR_BAD_CERT when missing or not 32 bytes). */
int ky_cert_ski(const X509 *cert, uint8_t ski[KY_SKI_LEN]) KY_WUR;
/* Common name of cert into out (at most outlen-1 chars; KY_ERR_BAD_CERT if missing/longer). */
int ky_cert_cn(const X509 *cert, char *out, size_t outlen) KY_WUR;
/* Self-signed certificate: CN = cn, OU = ou, SKI/AKI = ky_ski, validity days. */
int ky_cert_self_signed(EVP_PKEY *key, const char *cn, const char *ou, int days, X509 **out) KY_WUR;
/* Self-signed certificate that may issue end-entity certificates (CA:TRUE, pathlen 0,
 * keyCertSign): the unit identity, which certifies the unit's importer key, so that
 * `openssl verify -partial_chain -CAfile identity.pem importer.pem` checks the chain. */
int ky_cert_self_signed_issuer(EVP_PKEY *key, const char *cn, const char *ou, int days,
                               X509 **out) KY_WUR;
/* Certificate for subject_key issued by issuer (cert + key): used for the importer key,
 * certified by the unit identity key. */
int ky_cert_issue(EVP_PKEY *subject_key, const char *cn, const char *ou, X509 *issuer,
                  EVP_PKEY *issuer_key, int days, X509 **out) KY_WUR;
/* The unit trust anchor of an instance: self-signed CA (CA:TRUE, pathlen 1, keyCertSign),
 * which certifies the identity key of every unit of the instance. */
int ky_cert_anchor_self_signed(EVP_PKEY *key, const char *cn, const char *ou, int days,
                               X509 **out) KY_WUR;
/* A unit identity certificate for subject_pub (only its public half is used), issued by the
 * anchor (cert + key): CN = unit id, OU = instance id, CA:TRUE pathlen 0 (it certifies the
 * unit's importer key), digitalSignature + keyCertSign. */
int ky_cert_issue_identity(EVP_PKEY *subject_pub, const char *cn, const char *ou, X509 *anchor,
                           EVP_PKEY *anchor_key, int days, X509 **out) KY_WUR;
/* Checks an admin certificate: P-521 or P-384 key, self-signature valid, SKI extension equal to
 * ky_ski of the key, CN 1..30 printable chars. KY_ERR_BAD_CERT or KY_ERR_ADMIN_NAME. */
int ky_admin_cert_check(X509 *cert) KY_WUR;
/* Checks that cert's signature verifies under issuer_pub. */
int ky_cert_verify_by(X509 *cert, EVP_PKEY *issuer_pub) KY_WUR;
/* SHA-256 of the DER SubjectPublicKeyInfo, as lowercase hex (65 bytes with NUL). */
int ky_pubkey_fingerprint(EVP_PKEY *pk, char out[65]) KY_WUR;

int ky_cert_to_pem(X509 *cert, char **out) KY_WUR;           /* malloc'd NUL-terminated */
int ky_cert_from_pem(const char *pem, X509 **out) KY_WUR;    /* KY_ERR_MALFORMED */
int ky_pkey_to_der(EVP_PKEY *pk, struct ky_buf *out) KY_WUR; /* private key, PKCS#8 DER */
int ky_pkey_from_der(const uint8_t *p, size_t n, EVP_PKEY **out) KY_WUR;

/* ECDSA-SHA512 raw signatures (DER ECDSA-Sig-Value), used for unit reply signatures. */
int ky_sign(EVP_PKEY *key, const void *msg, size_t n, struct ky_buf *sig) KY_WUR;
int ky_verify(EVP_PKEY *pub, const void *msg, size_t n, const uint8_t *sig,
              size_t siglen) KY_WUR; /* 0 or KY_ERR_BAD_SIGNATURE */

/* ---- unit trust anchor and unit chains (anchor.c) ---- */

/* The first OU of cert's subject into out (KY_ERR_BAD_CERT when missing or longer). */
int ky_cert_ou(const X509 *cert, char *out, size_t outlen) KY_WUR;
/* PEM certificate signing request for key (CN = cn, OU = ou), signed by key. malloc'd. */
int ky_csr_create(EVP_PKEY *key, const char *cn, const char *ou, char **pem) KY_WUR;
/* Reads a PEM CSR: its self-signature must verify and its key be P-521. *pub gets the
 * public key, cn and ou the subject's names. KY_ERR_MALFORMED, KY_ERR_BAD_CERT. */
int ky_csr_read(const char *pem, EVP_PKEY **pub, char cn[KY_ID_MAX + 1],
                char ou[KY_ID_MAX + 1]) KY_WUR;
/* Checks that cert (an identity certificate, or an importer certificate with identity as
 * its issuer) chains to anchor: X.509 path validation with anchor as the only trust
 * anchor (signatures, CA flags, path lengths, key usage, validity). identity may be NULL
 * when cert is itself the identity. KY_ERR_BAD_SIGNATURE when it does not. */
int ky_cert_chain_verify(X509 *cert, X509 *identity, X509 *anchor) KY_WUR;

/* ---- signature key files ---- */

/* Creates a new P-521 key and its admin certificate (CN = name), writes the sigkey file
 * (mode 0600, refuses to overwrite: KY_ERR_EXISTS). */
int ky_sigkey_create(const char *path, const char *name, const char *password) KY_WUR;
/* Reads only the certificate (no password). KY_ERR_NOT_SIGKEY when not a sigkey file. */
int ky_sigkey_read_cert(const char *path, X509 **cert) KY_WUR;
/* Reads certificate and private key. KY_ERR_WRONG_PASSWORD, KY_ERR_NOT_SIGKEY,
 * KY_ERR_TAMPERED (key does not match certificate). */
int ky_sigkey_open(const char *path, const char *password, X509 **cert, EVP_PKEY **key) KY_WUR;

/* A signature key kept in a PKCS#11 token: the file holds the certificate and where the key
 * is (module, token label and serial, CKA_ID), never the key. */
#define KY_TOKEN_MODULE_MAX 511
#define KY_TOKEN_LABEL_MAX  32
#define KY_TOKEN_SERIAL_MAX 16
#define KY_TOKEN_ID_LEN     16
struct ky_sigkey_token {
	char module[KY_TOKEN_MODULE_MAX + 1]; /* absolute path of the PKCS#11 module */
	char label[KY_TOKEN_LABEL_MAX + 1];   /* token label, trailing blanks removed */
	char serial[KY_TOKEN_SERIAL_MAX + 1]; /* token serial number, trailing blanks removed */
	uint8_t id[KY_TOKEN_ID_LEN];          /* CKA_ID of the private key */
};
struct ky_ext_signer;
/* Makes the admin certificate (CN = name) of the token key s signs with and writes the token
 * sigkey file naming tok (mode 0600, refuses to overwrite: KY_ERR_EXISTS). */
int ky_sigkey_token_create(const char *path, const char *name, const struct ky_ext_signer *s,
                           const struct ky_sigkey_token *tok) KY_WUR;
/* Reads a sigkey file's certificate and, when the key is in a token, its reference:
 * *in_token tells which form the file has. KY_ERR_NOT_SIGKEY, KY_ERR_TAMPERED;
 * KY_ERR_SIGKEY_IN_CARD for the card form (ky_sigkey_read_card reads that one). */
int ky_sigkey_read(const char *path, X509 **cert, struct ky_sigkey_token *tok,
                   bool *in_token) KY_WUR;

/* A signature key held by an EP11 smart card: the file holds the certificate and which card
 * (its zone id and device id) and key (SKI: SHA-256 of the key's uncompressed point, as the
 * card names it), never the key. */
#define KY_SIGKEY_CARD_ID_LEN 32
struct ky_sigkey_card {
	uint8_t zone_id[KY_SIGKEY_CARD_ID_LEN];
	uint8_t device_id[KY_SIGKEY_CARD_ID_LEN];
	uint8_t ski[KY_SIGKEY_CARD_ID_LEN];
};
/* The SKI of an EC public key: SHA-256 of its uncompressed point. */
int ky_sigkey_card_ski(EVP_PKEY *pub, uint8_t ski[KY_SIGKEY_CARD_ID_LEN]) KY_WUR;
/* Makes the admin certificate (CN = name) of the card key s signs with and writes the card
 * sigkey file naming card (mode 0600, refuses to overwrite: KY_ERR_EXISTS). KY_ERR_USAGE when
 * card->ski is not s->pub's. */
int ky_sigkey_card_create(const char *path, const char *name, const struct ky_ext_signer *s,
                          const struct ky_sigkey_card *card) KY_WUR;
/* Reads a card sigkey file: its certificate and the card's reference. KY_ERR_NOT_SIGKEY for
 * another form or a malformed file, KY_ERR_TAMPERED when the SKI is not the certificate's. */
int ky_sigkey_read_card(const char *path, X509 **cert, struct ky_sigkey_card *card) KY_WUR;

/* A signer whose private key is elsewhere (a token): sign receives a SHA-512 digest and
 * returns the DER ECDSA-Sig-Value over it in sig. pub is the key's public half. */
struct ky_ext_signer {
	EVP_PKEY *pub;
	int (*sign)(void *arg, const uint8_t *md, size_t mdlen, struct ky_buf *sig);
	void *arg;
};
/* ky_cert_self_signed with an external signer; the certificate is checked against pub. */
int ky_cert_self_signed_ext(const struct ky_ext_signer *s, const char *cn, const char *ou, int days,
                            X509 **out) KY_WUR;

/* ---- key part files ---- */

struct ky_keypart_info {
	char description[128];
	uint8_t vp[KY_VP_LEN];
};

/* Writes a key part file (mode 0600, refuses to overwrite). part is 32 bytes. */
int ky_keypart_write(const char *path, const uint8_t part[KY_MK_LEN], const char *description,
                     const char *password) KY_WUR;
/* Header only, no password: KY_ERR_NOT_KEY_PART when not a key part file. */
int ky_keypart_read_info(const char *path, struct ky_keypart_info *info) KY_WUR;
/* Decrypts: KY_ERR_WRONG_PASSWORD, KY_ERR_TAMPERED, KY_ERR_METADATA_ALTERED,
 * KY_ERR_NOT_KEY_PART. part receives 32 bytes (caller cleanses). */
int ky_keypart_open(const char *path, const char *password, struct ky_keypart_info *info,
                    uint8_t part[KY_MK_LEN]) KY_WUR;

/* ---- CMS: signed commands ---- */

/* New SignedData over content with no signer yet (a prepared command). DER out. */
int ky_cms_unsigned(const void *content, size_t n, struct ky_buf *der) KY_WUR;
/* Adds one signer (cert + key, SKI as signer id, SHA-512) to a SignedData, keeping every
 * existing SignerInfo valid (resign with the same content digest). der is replaced. */
int ky_cms_add_signer(struct ky_buf *der, X509 *cert, EVP_PKEY *key) KY_WUR;
/* The same with an external signer: the SignerInfo (signed attributes content type,
 * signing time, SHA-512 message digest) is built here, its signature made by s, and the
 * result verified against cert's key before der is replaced. */
int ky_cms_add_signer_ext(struct ky_buf *der, X509 *cert, const struct ky_ext_signer *s) KY_WUR;

struct ky_cms_signer {
	uint8_t ski[KY_SKI_LEN];          /* signer id */
	char name[KY_ADMIN_NAME_MAX + 1]; /* CN of the embedded certificate, "" if none */
};

/* Parses a SignedData: returns the content (malloc'd) and the signer ids, without
 * verifying anything. KY_ERR_NOT_COMMAND when not CMS SignedData with attached content;
 * KY_ERR_BAD_COMMAND when a signer is not identified by a 32-byte SKI. Bounds checked before
 * anything else, by every function here that reads a SignedData: more than KY_MAX_ADMINS
 * SignerInfos (KY_ERR_TOO_MANY_SIGNATURES), certificates (KY_ERR_TOO_MANY_CERTIFICATES) or
 * digest algorithms (KY_ERR_TOO_MANY_DIGESTS); two SignerInfos with the same signature value
 * (KY_ERR_DUPLICATE_SIGNATURE). */
int ky_cms_parse(const uint8_t *der, size_t n, struct ky_buf *content,
                 struct ky_cms_signer **signers, size_t *nsigners) KY_WUR;

/* A SignedData decoded once, for the unit: content and signer ids are read without verifying
 * anything; each signature is then checked against a key the caller trusts, on the same
 * decoded structure. Errors of _parse as ky_cms_parse. */
struct ky_cms_signed;
int ky_cms_signed_parse(const uint8_t *der, size_t n, struct ky_cms_signed **out) KY_WUR;
void ky_cms_signed_free(struct ky_cms_signed *sd);
const uint8_t *ky_cms_signed_content(const struct ky_cms_signed *sd, size_t *len);
size_t ky_cms_signed_nsigners(const struct ky_cms_signed *sd);
/* Signer i (its SKI and the CN of the embedded certificate: unverified), NULL past the end. */
const struct ky_cms_signer *ky_cms_signed_signer(const struct ky_cms_signed *sd, size_t i);
/* Verifies signer i against pub: the signer id must be pub's SKI, the digest SHA-512, the
 * signed attributes present, the signature over them and their message digest of the content
 * valid. Nothing embedded in the command is trusted. 0 or KY_ERR_BAD_SIGNATURE. */
int ky_cms_signed_verify(struct ky_cms_signed *sd, size_t i, EVP_PKEY *pub) KY_WUR;

/* ---- CMS: key parts to units ---- */

/* AuthEnvelopedData of secret (n bytes) to the recipient certificate (EC P-521 ECDH,
 * sha256 KDF, AES-256 wrap, AES-256-GCM content; the envelope also travels inside a
 * signed command). */
int ky_envelope_seal(const uint8_t *secret, size_t n, X509 *recip_cert, struct ky_buf *der) KY_WUR;
/* Decrypts with the recipient key and cert. out receives exactly n bytes or
 * KY_ERR_BAD_COMMAND. Caller cleanses out. */
int ky_envelope_open(const uint8_t *der, size_t derlen, EVP_PKEY *key, X509 *cert, uint8_t *out,
                     size_t n) KY_WUR;

/* ---- key parts to units from PKCS#11 tokens (docs/formats.md, section 5) ---- */

#define KY_TOKEN_PART_ID_LEN 32
/* The recipient field: SHA-256 of the importer certificate (DER). */
int ky_token_part_recipient(X509 *cert, uint8_t id[KY_TOKEN_PART_ID_LEN]) KY_WUR;
/* DER TokenKeyPart from its fields (orig: the originator public key). */
int ky_token_part_encode(const uint8_t id[KY_TOKEN_PART_ID_LEN], EVP_PKEY *orig,
                         const uint8_t *wrapped, size_t wlen, struct ky_buf *der) KY_WUR;
/* The same computation as a token does, in software: a fresh P-521 ephemeral key, ECDH with
 * the importer certificate's key, the KEK, the key wrap of part. */
int ky_token_part_seal(const uint8_t part[KY_MK_LEN], X509 *recip_cert, struct ky_buf *der) KY_WUR;
/* True when der is to be read as a TokenKeyPart: a SEQUENCE whose first element is an
 * INTEGER (a CMS ContentInfo starts with an OID). Well-formed or not: ky_token_part_open
 * tells. */
bool ky_token_part_is(const uint8_t *der, size_t derlen);
/* Unwraps with the importer key and certificate: out gets the 32-byte part, or one of
 * KY_ERR_TOKEN_PART_{MALFORMED,VERSION,OTHER_UNIT,CURVE,UNWRAP}. Caller cleanses out. */
int ky_token_part_open(const uint8_t *der, size_t derlen, EVP_PKEY *key, X509 *cert,
                       uint8_t out[KY_MK_LEN]) KY_WUR;

/* ---- AEAD ---- */

/* AES-256-GCM with a random 12-byte nonce: out = nonce || ciphertext || tag (16). */
int ky_aead_seal(const uint8_t key[32], const void *aad, size_t aadlen, const void *pt, size_t n,
                 struct ky_buf *out) KY_WUR;
/* KY_ERR_TAMPERED when the tag fails. out receives n - 28 bytes. */
int ky_aead_open(const uint8_t key[32], const void *aad, size_t aadlen, const uint8_t *in, size_t n,
                 struct ky_buf *out) KY_WUR;

/* AES-GCM (key of 16, 24 or 32 bytes) for the hot path (gcm.c): each thread keeps keyed
 * contexts of its last few keys (a secure-heap copy of each), so a call with a cached key
 * allocates nothing. aad = aad1 || aad2 (either may be empty). Open fails with KY_ERR_TAMPERED
 * when the tag does not verify, KY_ERR_CRYPTO when OpenSSL fails; pt is cleansed then. */
#define KY_GCM_IV_LEN  12
#define KY_GCM_TAG_LEN 16
int ky_gcm_seal(const uint8_t *key, size_t keylen, const uint8_t iv[KY_GCM_IV_LEN],
                const uint8_t *aad1, size_t n1, const uint8_t *aad2, size_t n2, const uint8_t *pt,
                size_t n, uint8_t *ct, uint8_t tag[KY_GCM_TAG_LEN]) KY_WUR;
int ky_gcm_open(const uint8_t *key, size_t keylen, const uint8_t iv[KY_GCM_IV_LEN],
                const uint8_t *aad1, size_t n1, const uint8_t *aad2, size_t n2, const uint8_t *ct,
                size_t n, const uint8_t tag[KY_GCM_TAG_LEN], uint8_t *pt) KY_WUR;
/* A fresh random 96-bit nonce (from a per-thread block of DRBG output; a fork child never
 * reuses its parent's block). */
int ky_gcm_nonce(uint8_t out[KY_GCM_IV_LEN]) KY_WUR;
/* Frees the calling thread's cached contexts and key copies (also done at thread exit). */
void ky_gcm_thread_release(void);

/* Base64 (no newlines) helpers. */
int ky_b64_encode(const uint8_t *p, size_t n, char **out) KY_WUR;
int ky_b64_decode(const char *s, struct ky_buf *out) KY_WUR; /* KY_ERR_MALFORMED */

#endif
