/* The card's own cryptography: PIN hashes, zone certificates, the card-to-card transfer key
 * and signatures over a digest given by the host. */
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/x509.h>
#include <string.h>

#include "card/internal.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

/* scrypt N=2^14 r=8 p=1 (16 MiB): slow enough that the EEPROM file alone does not give the
 * PIN away cheaply; the try counter is what stops guessing through the card. */
#ifdef KY_TEST_KDF
#define PIN_SCRYPT_N 1024 /* the sanitized test build (meson option test_kdf) only */
#else
#define PIN_SCRYPT_N 16384
#endif
#define PIN_SCRYPT_R 8
#define PIN_SCRYPT_P 1

#define ZONE_CERT_LABEL "kyok-card zone certificate v1"

int kc_pin_hash(const uint8_t *pin, size_t n, const uint8_t salt[KC_PIN_SALT_LEN],
                uint8_t hash[KC_PIN_HASH_LEN])
{
	if (EVP_PBE_scrypt((const char *)pin, n, salt, KC_PIN_SALT_LEN, PIN_SCRYPT_N, PIN_SCRYPT_R,
	                   PIN_SCRYPT_P, 32 * 1024 * 1024, hash, KC_PIN_HASH_LEN) != 1) {
		ERR_clear_error();
		return KY_ERR_CRYPTO;
	}
	return 0;
}

int kc_pin_set(struct kc_pin *pin, const uint8_t *p, size_t n, uint8_t tries)
{
	int r = KY_ERR_INTERNAL;

	if ((r = ky_random(pin->salt, KC_PIN_SALT_LEN)) != 0)
		goto out;
	if ((r = kc_pin_hash(p, n, pin->salt, pin->hash)) != 0)
		goto out;
	pin->set = true;
	pin->tries = tries;
	r = 0;
out:
	return r;
}

int kc_pub_der(EVP_PKEY *pk, struct ky_buf *out)
{
	int r = KY_ERR_CRYPTO;
	unsigned char *der = NULL;
	int len;

	if ((len = i2d_PUBKEY(pk, &der)) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(out, der, (size_t)len)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_free(der);
	ERR_clear_error();
	return r;
}

int kc_pub_from_der(const uint8_t *p, size_t n, EVP_PKEY **out)
{
	const unsigned char *q = p;
	EVP_PKEY *pk;

	if (n == 0)
		return KY_ERR_MALFORMED;
	pk = d2i_PUBKEY(NULL, &q, (long)n);
	if (pk == NULL || q != p + n || !ky_pkey_is_p521(pk)) {
		EVP_PKEY_free(pk);
		ERR_clear_error();
		return KY_ERR_MALFORMED;
	}
	*out = pk; /* transferred */
	return 0;
}

bool kc_pub_equal(EVP_PKEY *a, EVP_PKEY *b)
{
	return a != NULL && b != NULL && EVP_PKEY_eq(a, b) == 1;
}

/* What a zone certificate's signature covers. */
static int zone_cert_tbs(uint8_t role, const struct ky_buf *zone, const struct ky_buf *device,
                         struct ky_buf *tbs)
{
	int r = KY_ERR_INTERNAL;

	if ((r = ky_buf_append(tbs, ZONE_CERT_LABEL, sizeof(ZONE_CERT_LABEL))) != 0)
		goto out;
	if ((r = kc_field_put(tbs, &role, 1)) != 0 ||
	    (r = kc_field_put(tbs, zone->data, zone->len)) != 0 ||
	    (r = kc_field_put(tbs, device->data, device->len)) != 0)
		goto out;
	r = 0;
out:
	return r;
}

int kc_zone_cert_make(EVP_PKEY *zone, uint8_t role, EVP_PKEY *device, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf zpub = {0}, dpub = {0}, tbs = {0}, sig = {0};

	if ((r = kc_pub_der(zone, &zpub)) != 0 || (r = kc_pub_der(device, &dpub)) != 0)
		goto out;
	if ((r = zone_cert_tbs(role, &zpub, &dpub, &tbs)) != 0)
		goto out;
	if ((r = ky_sign(zone, tbs.data, tbs.len, &sig)) != 0)
		goto out;
	if ((r = kc_field_put(out, &role, 1)) != 0 ||
	    (r = kc_field_put(out, zpub.data, zpub.len)) != 0 ||
	    (r = kc_field_put(out, dpub.data, dpub.len)) != 0 ||
	    (r = kc_field_put(out, sig.data, sig.len)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&zpub);
	ky_buf_free(&dpub);
	ky_buf_free(&tbs);
	ky_buf_free(&sig);
	return r;
}

int kc_zone_cert_check(const uint8_t *p, size_t n, uint8_t role, EVP_PKEY **zone, EVP_PKEY **device)
{
	int r = KY_ERR_MALFORMED;
	struct kc_field f[4];
	struct ky_buf zpub = {0}, dpub = {0}, tbs = {0};
	EVP_PKEY *z = NULL, *d = NULL;

	if (!kc_fields_parse(p, n, f, 4) || f[0].n != 1 || f[0].p[0] != role) {
		r = KY_ERR_MALFORMED;
		goto out;
	}
	if ((r = kc_pub_from_der(f[1].p, f[1].n, &z)) != 0 ||
	    (r = kc_pub_from_der(f[2].p, f[2].n, &d)) != 0)
		goto out;
	if ((r = ky_buf_append(&zpub, f[1].p, f[1].n)) != 0 ||
	    (r = ky_buf_append(&dpub, f[2].p, f[2].n)) != 0)
		goto out;
	if ((r = zone_cert_tbs(role, &zpub, &dpub, &tbs)) != 0)
		goto out;
	if ((r = ky_verify(z, tbs.data, tbs.len, f[3].p, f[3].n)) != 0)
		goto out;
	*zone = z;
	z = NULL; /* transferred */
	*device = d;
	d = NULL; /* transferred */
	r = 0;
out:
	EVP_PKEY_free(z);
	EVP_PKEY_free(d);
	ky_buf_free(&zpub);
	ky_buf_free(&dpub);
	ky_buf_free(&tbs);
	return r;
}

int kc_transfer_key(EVP_PKEY *mine, EVP_PKEY *peer, const uint8_t nonce[KC_NONCE_LEN],
                    const char *info, uint8_t key[32])
{
	int r = KY_ERR_CRYPTO;
	EVP_PKEY_CTX *dctx = NULL;
	EVP_KDF *kdf = NULL;
	EVP_KDF_CTX *kctx = NULL;
	uint8_t secret[80];
	size_t slen = sizeof(secret);
	OSSL_PARAM params[5];

	if ((dctx = EVP_PKEY_CTX_new_from_pkey(NULL, mine, NULL)) == NULL ||
	    EVP_PKEY_derive_init(dctx) != 1 || EVP_PKEY_derive_set_peer(dctx, peer) != 1 ||
	    EVP_PKEY_derive(dctx, secret, &slen) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((kdf = EVP_KDF_fetch(NULL, "HKDF", NULL)) == NULL ||
	    (kctx = EVP_KDF_CTX_new(kdf)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, secret, slen);
	params[2] =
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)nonce, KC_NONCE_LEN);
	params[3] =
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, strlen(info));
	params[4] = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(kctx, key, 32, params) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	OPENSSL_cleanse(secret, sizeof(secret));
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	EVP_PKEY_CTX_free(dctx);
	ERR_clear_error();
	return r;
}

int kc_sign_digest(EVP_PKEY *key, const uint8_t digest[KC_DIGEST_LEN], struct ky_buf *sig)
{
	int r = KY_ERR_CRYPTO;
	EVP_PKEY_CTX *ctx = NULL;
	unsigned char s[160];
	size_t len = sizeof(s);

	if ((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL)) == NULL ||
	    EVP_PKEY_sign_init(ctx) != 1 || EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha512()) != 1 ||
	    EVP_PKEY_sign(ctx, s, &len, digest, KC_DIGEST_LEN) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(sig, s, len)) != 0)
		goto out;
	r = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	ERR_clear_error();
	return r;
}
