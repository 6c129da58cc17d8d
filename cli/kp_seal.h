/* The client's side of secure import (kyok kp import-token key-encrypt, nonce-encrypt): what a
 * unit opens in lib/kms/import_token.c. The key material is encrypted to the import token's
 * public key with RSAES-OAEP (SHA-256, or SHA-1, with MGF1 of the same digest, no label); the
 * token's nonce is encrypted under the key material with AES-GCM (a 12-byte IV, no associated
 * data, the 16-byte tag after the ciphertext). Pure: no I/O, no randomness (the caller gives
 * the IV). Private to cli/kp*.c.
 */
#ifndef KYOK_CLI_KP_SEAL_H
#define KYOK_CLI_KP_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "kyok/common.h"

#define KP_SEAL_NONCE_LEN  12
#define KP_SEAL_IV_LEN     12
#define KP_SEAL_TAG_LEN    16
#define KP_SEAL_RSA_MIN    2048 /* bits: a smaller public key is refused */
#define KP_SEAL_CIPHER_MAX 1024 /* bytes of RSA ciphertext at most (8192-bit keys) */

/* key (16, 24 or 32 bytes, else KY_ERR_KEY_MATERIAL) encrypted to the RSA public key in pem
 * (PEM SubjectPublicKeyInfo; anything else, or under KP_SEAL_RSA_MIN bits, is
 * KY_ERR_KP_IMPORT_PUBKEY) into out (cap bytes, KP_SEAL_CIPHER_MAX suffice); sha1 picks
 * RSAES-OAEP with SHA-1 instead of SHA-256. */
int kp_seal_key(const uint8_t *pem, size_t pemlen, const uint8_t *key, size_t keylen, int sha1,
                uint8_t *out, size_t cap, size_t *outlen) KY_WUR;

/* nonce (KP_SEAL_NONCE_LEN bytes, else KY_ERR_KP_IMPORT_NONCE) encrypted with AES-GCM under
 * key (16, 24 or 32 bytes, else KY_ERR_KEY_MATERIAL) with iv: out is the ciphertext and the
 * tag. */
int kp_seal_nonce(const uint8_t *key, size_t keylen, const uint8_t *nonce, size_t noncelen,
                  const uint8_t iv[KP_SEAL_IV_LEN],
                  uint8_t out[KP_SEAL_NONCE_LEN + KP_SEAL_TAG_LEN]) KY_WUR;

#endif
