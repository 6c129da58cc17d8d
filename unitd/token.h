/* token.c: access tokens (JWT HS256) and the token request form. Pure. */
#ifndef KYOK_UNITD_TOKEN_H
#define KYOK_UNITD_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "kyok/common.h"
#include "kyok/kms.h"

#define TOKEN_MAX_LEN       2048
#define TOKEN_KEY_LEN       32
#define TOKEN_ROLE_MAX      KY_APIKEY_ROLE_MAX
#define TOKEN_GRANT         "urn:ibm:params:oauth:grant-type:apikey"
#define TOKEN_RESPONSE_TYPE "cloud_iam"
#define TOKEN_APIKEY_MAX    256
#define TOKEN_CLOCK_SKEW    60
/* base64url of {"alg":"HS256","typ":"JWT","kid":"kyok-1"}: the only header accepted. */
#define TOKEN_HEADER_B64 "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6Imt5b2stMSJ9"

struct token_claims {
	char sub[KY_ID_MAX + 1]; /* API key id */
	char instance[KY_ID_MAX + 1];
	char role[TOKEN_ROLE_MAX + 1];
	int64_t iat, exp;
	char jti[33];
};

/* base64url without padding. */
int token_b64url_encode(const uint8_t *p, size_t n, char *out, size_t outcap) KY_WUR;
int token_b64url_decode(const char *s, size_t n, uint8_t *out, size_t outcap,
                        size_t *outlen) KY_WUR;
/* The signed token, NUL-terminated in out. */
int token_issue(const uint8_t key[TOKEN_KEY_LEN], const struct token_claims *c, char *out,
                size_t outcap) KY_WUR;
/* Checks form, signature (constant time), iss, instance, exp and iat against now.
 * KY_ERR_UNAUTHORIZED with a reason in detail. */
int token_verify(const uint8_t key[TOKEN_KEY_LEN], const char *tok, size_t len, int64_t now,
                 const char *instance, struct token_claims *out, char *detail,
                 size_t detaillen) KY_WUR;
/* The token request: application/x-www-form-urlencoded with grant_type (must be
 * TOKEN_GRANT), apikey and optionally response_type (must be TOKEN_RESPONSE_TYPE); any other
 * field is KY_ERR_BODY_MEMBER naming it, duplicates are refused. apikey is written to the
 * caller's buffer (a secret: cleanse it). KY_ERR_MALFORMED, KY_ERR_UNSUPPORTED (grant_type or
 * response_type of another value). */
int token_form_parse(const char *body, size_t n, char *apikey, size_t apikeycap, char *detail,
                     size_t detaillen) KY_WUR;
/* "Bearer <token>" -> pointer and length of the token, or KY_ERR_UNAUTHORIZED. */
int token_bearer(const char *header, const char **tok, size_t *len) KY_WUR;

#endif
