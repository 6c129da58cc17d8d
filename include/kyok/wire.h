/* Admin endpoint wire protocol shared by kyok-unitd and the kyok CLI.
 *
 *   GET  /v1/admin/state     -> public state JSON (ky_domain_public_json)
 *   GET  /v1/admin/identity  -> PEM identity certificate (self-signed, unit identity key)
 *   GET  /v1/admin/importer  -> PEM importer certificate (issued by the identity key)
 *   POST /v1/admin/command   body: DER CMS SignedData of a command
 *        -> {"ok": true, "result": {...}, "state": {...}}
 *        or {"ok": false, "error": {"code": slug, "message": "...", "detail": "..."}}
 *
 * Every reply carries header Kyok-Signature: base64 ECDSA-SHA512 by the identity key over
 *   "kyok-reply-v1\n" || method || " " || path || "\n" || nonce || "\n" || body
 * where nonce is the request's Kyok-Nonce header (32 hex chars from the client; empty
 * when absent). The client checks the signature with the pinned identity key.
 */
#ifndef KYOK_WIRE_H
#define KYOK_WIRE_H

#include <openssl/evp.h>

#include "kyok/common.h"

#define KY_HDR_NONCE         "Kyok-Nonce"
#define KY_HDR_SIGNATURE     "Kyok-Signature"
#define KY_NONCE_HEX         32
#define KY_MAX_COMMAND_BYTES (1024 * 1024)

int ky_reply_sign(EVP_PKEY *identity, const char *method, const char *path, const char *nonce,
                  const void *body, size_t n, char **sig_b64) KY_WUR;
/* 0 or KY_ERR_BAD_REPLY. */
int ky_reply_verify(EVP_PKEY *identity_pub, const char *method, const char *path, const char *nonce,
                    const void *body, size_t n, const char *sig_b64) KY_WUR;

#endif
