/* Access tokens of the key API: JWT (RFC 7519) signed with HMAC-SHA256 under the token
 * signing key that every unit of the instance shares through key storage.
 *
 *   header  {"alg":"HS256","typ":"JWT","kid":"kyok-1"}   (only this exact header is accepted)
 *   claims  {"iss":"kyok","sub":<api key id>,"instance":<id>,"role":<role>,"iat":n,"exp":n,
 *            "jti":<32 hex>}
 *
 * Pure: no I/O, no global state. The token request form parser lives here too.
 */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "unitd/token.h"

#define TOKEN_ISS         "kyok"
#define TOKEN_MAC_LEN     KY_HMAC_SHA256_LEN
#define TOKEN_CLAIMS_MAX  1024
#define TOKEN_SIG_B64_LEN 43 /* 32 bytes, unpadded */

static void token_detail(char *d, size_t n, const char *msg)
{
	if (d != NULL && n > 0)
		snprintf(d, n, "%s", msg);
}

/* ---- base64url ---- */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int token_b64url_encode(const uint8_t *p, size_t n, char *out, size_t outcap)
{
	size_t o = 0, need = (n / 3) * 4 + (n % 3 ? n % 3 + 1 : 0);

	if (need + 1 > outcap)
		return KY_ERR_TOO_LARGE;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		size_t left = n - i;
		if (left > 1)
			v |= (uint32_t)p[i + 1] << 8;
		if (left > 2)
			v |= p[i + 2];
		out[o++] = b64url[(v >> 18) & 63];
		out[o++] = b64url[(v >> 12) & 63];
		if (left > 1)
			out[o++] = b64url[(v >> 6) & 63];
		if (left > 2)
			out[o++] = b64url[v & 63];
	}
	out[o] = '\0';
	return 0;
}

static int b64url_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

int token_b64url_decode(const char *s, size_t n, uint8_t *out, size_t outcap, size_t *outlen)
{
	size_t o = 0, need;
	uint32_t acc = 0;
	int bits = 0;

	if (n % 4 == 1)
		return KY_ERR_MALFORMED;
	need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
	if (need > outcap)
		return KY_ERR_TOO_LARGE;
	for (size_t i = 0; i < n; i++) {
		int v = b64url_value(s[i]);
		if (v < 0)
			return KY_ERR_MALFORMED;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/* Leftover bits must be zero: one encoding per value. */
	if (acc != 0)
		return KY_ERR_MALFORMED;
	*outlen = o;
	return 0;
}

/* ---- issue ---- */

int token_issue(const uint8_t key[TOKEN_KEY_LEN], const struct token_claims *c, char *out,
                size_t outcap)
{
	int r = KY_ERR_INTERNAL;
	json_t *j = NULL;
	char *claims = NULL;
	uint8_t mac[TOKEN_MAC_LEN];
	size_t hl = strlen(TOKEN_HEADER_B64), off;

	j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "iss", TOKEN_ISS, "sub", c->sub,
	              "instance", c->instance, "role", c->role, "iat", (json_int_t)c->iat, "exp",
	              (json_int_t)c->exp, "jti", c->jti);
	if (j == NULL || (claims = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (hl + 1 >= outcap) {
		r = KY_ERR_TOO_LARGE;
		goto out;
	}
	memcpy(out, TOKEN_HEADER_B64, hl);
	out[hl] = '.';
	off = hl + 1;
	if ((r = token_b64url_encode((const uint8_t *)claims, strlen(claims), out + off,
	                             outcap - off)) != 0)
		goto out;
	off += strlen(out + off);
	if ((r = ky_hmac_sha256(key, TOKEN_KEY_LEN, out, off, mac)) != 0)
		goto out;
	if (off + 1 >= outcap) {
		r = KY_ERR_TOO_LARGE;
		goto out;
	}
	out[off++] = '.';
	if ((r = token_b64url_encode(mac, sizeof(mac), out + off, outcap - off)) != 0)
		goto out;
	r = 0;
out:
	if (r != 0 && outcap > 0)
		out[0] = '\0';
	OPENSSL_cleanse(mac, sizeof(mac));
	free(claims);
	json_decref(j);
	return r;
}

/* ---- verify ---- */

static int token_claim_str(json_t *o, const char *k, char *out, size_t cap)
{
	json_t *v = json_object_get(o, k);
	const char *s = json_string_value(v);

	if (s == NULL || strlen(s) != json_string_length(v) || strlen(s) >= cap)
		return KY_ERR_UNAUTHORIZED;
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

static int token_claim_int(json_t *o, const char *k, int64_t *out)
{
	json_t *v = json_object_get(o, k);

	if (!json_is_integer(v))
		return KY_ERR_UNAUTHORIZED;
	*out = (int64_t)json_integer_value(v);
	return 0;
}

int token_verify(const uint8_t key[TOKEN_KEY_LEN], const char *tok, size_t len, int64_t now,
                 const char *instance, struct token_claims *out, char *detail, size_t detaillen)
{
	size_t hl = strlen(TOKEN_HEADER_B64), plen, dlen = 0;
	const char *payload, *dot2;
	uint8_t mac[TOKEN_MAC_LEN], got[TOKEN_MAC_LEN + 2];
	char claims[TOKEN_CLAIMS_MAX + 1], iss[8];
	json_t *j = NULL;
	int r = KY_ERR_UNAUTHORIZED;

	memset(out, 0, sizeof(*out));
	if (len > TOKEN_MAX_LEN || len < hl + 2 + TOKEN_SIG_B64_LEN ||
	    memcmp(tok, TOKEN_HEADER_B64, hl) != 0 || tok[hl] != '.') {
		token_detail(detail, detaillen, "the bearer token is not an access token of kyok");
		return KY_ERR_UNAUTHORIZED;
	}
	payload = tok + hl + 1;
	dot2 = memchr(payload, '.', len - hl - 1);
	if (dot2 == NULL || (size_t)(tok + len - (dot2 + 1)) != TOKEN_SIG_B64_LEN) {
		token_detail(detail, detaillen, "the bearer token is malformed");
		return KY_ERR_UNAUTHORIZED;
	}
	plen = (size_t)(dot2 - payload);
	if (token_b64url_decode(dot2 + 1, TOKEN_SIG_B64_LEN, got, sizeof(got), &dlen) != 0 ||
	    dlen != TOKEN_MAC_LEN) {
		token_detail(detail, detaillen, "the bearer token is malformed");
		return KY_ERR_UNAUTHORIZED;
	}
	if ((r = ky_hmac_sha256(key, TOKEN_KEY_LEN, tok, (size_t)(dot2 - tok), mac)) != 0)
		return r;
	if (CRYPTO_memcmp(mac, got, TOKEN_MAC_LEN) != 0) {
		token_detail(detail, detaillen,
		             "the bearer token's signature does not verify (issued for another "
		             "instance or before a zeroize?)");
		r = KY_ERR_UNAUTHORIZED;
		goto out;
	}
	/* Authentic from here: still checked strictly. */
	r = KY_ERR_UNAUTHORIZED;
	if (token_b64url_decode(payload, plen, (uint8_t *)claims, TOKEN_CLAIMS_MAX, &dlen) != 0) {
		token_detail(detail, detaillen, "the bearer token's claims are malformed");
		goto out;
	}
	claims[dlen] = '\0';
	if ((j = json_loadb(claims, dlen, JSON_REJECT_DUPLICATES, NULL)) == NULL ||
	    !json_is_object(j) || token_claim_str(j, "iss", iss, sizeof(iss)) != 0 ||
	    strcmp(iss, TOKEN_ISS) != 0 ||
	    token_claim_str(j, "sub", out->sub, sizeof(out->sub)) != 0 || !ky_id_valid(out->sub) ||
	    token_claim_str(j, "instance", out->instance, sizeof(out->instance)) != 0 ||
	    token_claim_str(j, "role", out->role, sizeof(out->role)) != 0 ||
	    token_claim_str(j, "jti", out->jti, sizeof(out->jti)) != 0 ||
	    token_claim_int(j, "iat", &out->iat) != 0 ||
	    token_claim_int(j, "exp", &out->exp) != 0) {
		token_detail(detail, detaillen, "the bearer token's claims are malformed");
		goto out;
	}
	if (strcmp(out->instance, instance) != 0) {
		token_detail(detail, detaillen, "the bearer token is for another service instance");
		goto out;
	}
	if (now >= out->exp) {
		token_detail(detail, detaillen, "the bearer token has expired: request a new one");
		goto out;
	}
	if (out->iat > now + TOKEN_CLOCK_SKEW || out->exp <= out->iat) {
		token_detail(detail, detaillen, "the bearer token's dates are not valid");
		goto out;
	}
	r = 0;
out:
	if (r != 0)
		memset(out, 0, sizeof(*out));
	json_decref(j);
	OPENSSL_cleanse(claims, sizeof(claims));
	return r;
}

int token_bearer(const char *header, const char **tok, size_t *len)
{
	size_t n;

	if (header == NULL || strncasecmp(header, "Bearer ", 7) != 0)
		return KY_ERR_UNAUTHORIZED;
	header += 7;
	while (*header == ' ')
		header++;
	n = strlen(header);
	while (n > 0 && header[n - 1] == ' ')
		n--;
	if (n == 0 || n > TOKEN_MAX_LEN)
		return KY_ERR_UNAUTHORIZED;
	*tok = header;
	*len = n;
	return 0;
}

/* ---- the token request form ---- */

/* Decodes one form component (+ is a space, %XX a byte) into out; no NUL or control bytes. */
static int form_decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			int hi, lo;
			if (i + 2 >= n)
				return KY_ERR_MALFORMED;
			hi = ky_hex_digit(s[i + 1]);
			lo = ky_hex_digit(s[i + 2]);
			if (hi < 0 || lo < 0)
				return KY_ERR_MALFORMED;
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		if ((unsigned char)c < 0x20 || c == 0x7f)
			return KY_ERR_MALFORMED;
		if (o + 1 >= cap)
			return KY_ERR_TOO_LARGE;
		out[o++] = c;
	}
	out[o] = '\0';
	return 0;
}

int token_form_parse(const char *body, size_t n, char *apikey, size_t apikeycap, char *detail,
                     size_t detaillen)
{
	char name[32], grant[64], rtype[32];
	bool have_grant = false, have_key = false, have_rtype = false;
	size_t pos = 0;
	int r = KY_ERR_MALFORMED;

	apikey[0] = '\0';
	if (memchr(body, '\0', n) != NULL) {
		token_detail(detail, detaillen, "the form has a NUL byte");
		return KY_ERR_MALFORMED;
	}
	while (pos < n) {
		const char *item = body + pos, *amp = memchr(item, '&', n - pos), *eq;
		size_t len = amp ? (size_t)(amp - item) : n - pos;

		pos += len + 1;
		if (len == 0)
			continue;
		eq = memchr(item, '=', len);
		if (eq == NULL) {
			token_detail(detail, detaillen, "the form has a field without '='");
			goto fail;
		}
		if (form_decode(item, (size_t)(eq - item), name, sizeof(name)) != 0) {
			token_detail(
			    detail, detaillen,
			    "a form field name is long or has control characters (the form "
			    "takes grant_type, apikey, response_type)");
			r = KY_ERR_BODY_MEMBER;
			goto fail;
		}
		if (strcmp(name, "grant_type") == 0) {
			if (have_grant) {
				token_detail(detail, detaillen, "field grant_type is given twice");
				goto fail;
			}
			have_grant = true;
			if (form_decode(eq + 1, len - (size_t)(eq + 1 - item), grant,
			                sizeof(grant)) != 0 ||
			    strcmp(grant, TOKEN_GRANT) != 0) {
				token_detail(detail, detaillen,
				             "grant_type must be " TOKEN_GRANT
				             " (API keys are the only "
				             "credential kyok accepts)");
				r = KY_ERR_UNSUPPORTED;
				goto fail;
			}
		} else if (strcmp(name, "apikey") == 0) {
			if (have_key) {
				token_detail(detail, detaillen, "field apikey is given twice");
				goto fail;
			}
			have_key = true;
			if (form_decode(eq + 1, len - (size_t)(eq + 1 - item), apikey, apikeycap) !=
			        0 ||
			    apikey[0] == '\0') {
				token_detail(
				    detail, detaillen,
				    "field apikey is empty, too long or has control characters");
				goto fail;
			}
		} else if (strcmp(name, "response_type") == 0) {
			if (have_rtype) {
				token_detail(detail, detaillen,
				             "field response_type is given twice");
				goto fail;
			}
			have_rtype = true;
			if (form_decode(eq + 1, len - (size_t)(eq + 1 - item), rtype,
			                sizeof(rtype)) != 0 ||
			    strcmp(rtype, TOKEN_RESPONSE_TYPE) != 0) {
				token_detail(detail, detaillen,
				             "response_type must be " TOKEN_RESPONSE_TYPE
				             " (the only token kyok issues)");
				r = KY_ERR_UNSUPPORTED;
				goto fail;
			}
		} else {
			if (detail != NULL && detaillen > 0)
				snprintf(detail, detaillen,
				         "field '%s' (the form takes grant_type, apikey, "
				         "response_type)",
				         name);
			r = KY_ERR_BODY_MEMBER;
			goto fail;
		}
	}
	if (!have_grant || !have_key) {
		token_detail(detail, detaillen,
		             have_grant ? "field apikey is missing"
		                        : "field grant_type is missing");
		goto fail;
	}
	return 0;
fail:
	OPENSSL_cleanse(apikey, apikeycap);
	apikey[0] = '\0';
	return r;
}
