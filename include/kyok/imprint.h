/* The imprint claim: who may send commands to a crypto unit in imprint mode.
 *
 * A unit in imprint mode has no administrator yet, so no signature can say who may install
 * the first ones. The instance's imprint credential does: an Ed25519 private key that the
 * operator makes when creating the instance ('kyok up' writes it, PKCS#8 PEM, mode 0600, as
 * imprint-credential.pem in the instance directory; 'openssl genpkey -algorithm ed25519'
 * makes the same). Each unit is configured with its public key only (unit.conf
 * imprint_verifier = 64 hex digits), so nothing on a unit's host can make a claim.
 *
 * The client sends, with POST /v1/admin/command, the header
 *   Kyok-Imprint-Claim: base64 Ed25519 signature by the credential over
 *                       "kyok-imprint-claim-v1\n" || the request body (DER SignedData)
 * The body is the command, which names instance, unit, incarnation and counter: a claim
 * fits that one command on that one unit state, once.
 */
#ifndef KYOK_IMPRINT_H
#define KYOK_IMPRINT_H

#include <openssl/evp.h>

#include "kyok/common.h"

#define KY_HDR_IMPRINT_CLAIM       "Kyok-Imprint-Claim"
#define KY_IMPRINT_CREDENTIAL_FILE "imprint-credential.pem"
#define KY_IMPRINT_PUB_LEN         32 /* raw Ed25519 public key */
#define KY_IMPRINT_CREDENTIAL_MAX  4096

/* A new credential: its PEM text (PKCS#8, a secret: ky_buf_free cleanses) and public key. */
int ky_imprint_credential_new(struct ky_buf *pem, uint8_t pub[KY_IMPRINT_PUB_LEN]) KY_WUR;
/* PEM text of a credential: KY_ERR_MALFORMED unless an unencrypted Ed25519 private key. */
int ky_imprint_credential_parse(const uint8_t *pem, size_t n, EVP_PKEY **out) KY_WUR;
/* The raw public key of a credential (for unit.conf). */
int ky_imprint_public(EVP_PKEY *cred, uint8_t pub[KY_IMPRINT_PUB_LEN]) KY_WUR;
/* The header value for body, malloc'd base64. */
int ky_imprint_claim(EVP_PKEY *cred, const uint8_t *body, size_t n, char **claim_b64) KY_WUR;
/* 0, or KY_ERR_IMPRINT_CLAIM_INVALID when claim_b64 is not a signature over body by the
 * key pub. */
int ky_imprint_claim_verify(const uint8_t pub[KY_IMPRINT_PUB_LEN], const char *claim_b64,
                            const uint8_t *body, size_t n) KY_WUR;

#endif
