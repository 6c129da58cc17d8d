/* The client's side of secure import: RSAES-OAEP of the key material, AES-GCM of the nonce. */
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "cli/kp_seal.h"
#include "kyok/err.h"

static const EVP_CIPHER *kp_seal_gcm(size_t keylen)
{
	switch (keylen) {
	case 16:
		return EVP_aes_128_gcm();
	case 24:
		return EVP_aes_192_gcm();
	case 32:
		return EVP_aes_256_gcm();
	default:
		return NULL;
	}
}

/* The RSA public key of pem, of KP_SEAL_RSA_MIN bits or more. */
static int kp_seal_pubkey(const uint8_t *pem, size_t pemlen, EVP_PKEY **out)
{
	BIO *bio = NULL;
	EVP_PKEY *pk = NULL;
	int r = KY_ERR_INTERNAL;

	*out = NULL;
	if (pemlen == 0 || pemlen > 16384) {
		r = KY_ERR_KP_IMPORT_PUBKEY;
		goto out;
	}
	if ((bio = BIO_new_mem_buf(pem, (int)pemlen)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL)) == NULL) {
		r = KY_ERR_KP_IMPORT_PUBKEY;
		goto out;
	}
	if (!EVP_PKEY_is_a(pk, "RSA") || EVP_PKEY_get_bits(pk) < KP_SEAL_RSA_MIN ||
	    EVP_PKEY_get_size(pk) > KP_SEAL_CIPHER_MAX) {
		r = KY_ERR_KP_IMPORT_PUBKEY;
		goto out;
	}
	*out = pk;
	pk = NULL; /* transferred */
	r = 0;
out:
	EVP_PKEY_free(pk);
	BIO_free(bio);
	return r;
}

int kp_seal_key(const uint8_t *pem, size_t pemlen, const uint8_t *key, size_t keylen, int sha1,
                uint8_t *out, size_t cap, size_t *outlen)
{
	EVP_PKEY *pk = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	const char *md = sha1 ? "SHA1" : "SHA256";
	size_t n = 0;
	int r = KY_ERR_INTERNAL;

	*outlen = 0;
	if (kp_seal_gcm(keylen) == NULL) {
		r = KY_ERR_KEY_MATERIAL;
		goto out;
	}
	if ((r = kp_seal_pubkey(pem, pemlen, &pk)) != 0)
		goto out;
	if ((size_t)EVP_PKEY_get_size(pk) > cap) {
		r = KY_ERR_INTERNAL;
		goto out;
	}
	if ((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	n = cap;
	if (EVP_PKEY_encrypt_init(ctx) != 1 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
	    EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, md, NULL) != 1 ||
	    EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, md, NULL) != 1 ||
	    EVP_PKEY_encrypt(ctx, out, &n, key, keylen) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	*outlen = n;
	r = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pk);
	return r;
}

int kp_seal_nonce(const uint8_t *key, size_t keylen, const uint8_t *nonce, size_t noncelen,
                  const uint8_t iv[KP_SEAL_IV_LEN],
                  uint8_t out[KP_SEAL_NONCE_LEN + KP_SEAL_TAG_LEN])
{
	const EVP_CIPHER *c = kp_seal_gcm(keylen);
	EVP_CIPHER_CTX *ctx = NULL;
	int len = 0, fin = 0;
	int r = KY_ERR_INTERNAL;

	if (c == NULL) {
		r = KY_ERR_KEY_MATERIAL;
		goto out;
	}
	if (noncelen != KP_SEAL_NONCE_LEN) {
		r = KY_ERR_KP_IMPORT_NONCE;
		goto out;
	}
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (EVP_EncryptInit_ex2(ctx, c, NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, KP_SEAL_IV_LEN, NULL) != 1 ||
	    EVP_EncryptInit_ex2(ctx, NULL, key, iv, NULL) != 1 ||
	    EVP_EncryptUpdate(ctx, out, &len, nonce, KP_SEAL_NONCE_LEN) != 1 ||
	    len != KP_SEAL_NONCE_LEN || EVP_EncryptFinal_ex(ctx, out + len, &fin) != 1 ||
	    fin != 0 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, KP_SEAL_TAG_LEN,
	                        out + KP_SEAL_NONCE_LEN) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	if (r != 0)
		OPENSSL_cleanse(out, KP_SEAL_NONCE_LEN + KP_SEAL_TAG_LEN);
	EVP_CIPHER_CTX_free(ctx);
	return r;
}
