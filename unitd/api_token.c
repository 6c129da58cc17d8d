/* The token service of the key API: POST /identity/token gives an access token for an API
 * key, and every /api/v2 request's bearer token is checked here (api_authenticate). Tokens
 * themselves (JWT HS256, the request form) are token.c's.
 */
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"
#include "kyok/store.h"
#include "unitd/api_internal.h"
#include "unitd/keystore.h"
#include "unitd/token.h"

/* ---- authentication ---- */

/* The last token each thread verified: a client sends the same token on every request of a
 * keep-alive connection, so the signature and claims are checked once, not per request. The
 * API key behind it is still looked up every time (revocation), and expiry re-checked. */
struct api_token_memo {
	size_t len; /* 0 = empty */
	uint64_t epoch;
	struct token_claims cl;
	char tok[TOKEN_MAX_LEN];
};
static __thread struct api_token_memo *api_memo;
static pthread_key_t api_memo_key;
static pthread_once_t api_memo_once = PTHREAD_ONCE_INIT;
static bool api_memo_key_made;

static void api_memo_free(void *p)
{
	if (p != NULL) {
		OPENSSL_cleanse(p, sizeof(struct api_token_memo));
		free(p);
	}
}

static void api_memo_init(void)
{
	api_memo_key_made = pthread_key_create(&api_memo_key, api_memo_free) == 0;
}

static bool api_memo_hit(const char *tok, size_t len, uint64_t epoch, int64_t now,
                         struct token_claims *cl)
{
	struct api_token_memo *m = api_memo;

	if (m == NULL || m->len != len || m->epoch != epoch || now >= m->cl.exp)
		return false;
	if (CRYPTO_memcmp(m->tok, tok, len) != 0)
		return false;
	*cl = m->cl;
	return true;
}

static void api_memo_put(const char *tok, size_t len, uint64_t epoch, const struct token_claims *cl)
{
	struct api_token_memo *m = api_memo;

	if (m == NULL) {
		(void)pthread_once(&api_memo_once, api_memo_init);
		/* Freed (cleansed) at thread exit through the key's destructor. */
		if (!api_memo_key_made || (m = calloc(1, sizeof(*m))) == NULL)
			return;
		if (pthread_setspecific(api_memo_key, m) != 0) {
			free(m);
			return;
		}
		api_memo = m;
	}
	memcpy(m->tok, tok, len);
	m->len = len;
	m->epoch = epoch;
	m->cl = *cl;
}

/* Why an API key record could not be used. */
static void api_apikey_detail(char *detail, size_t len, int r, const char *id)
{
	if (r == KY_ERR_RECORD_TAMPERED)
		snprintf(detail, len,
		         "the record of API key '%s' in key storage does not verify (altered, or "
		         "made without this instance's integrity key): refused",
		         id);
	else if (r == KY_ERR_RECORD_STALE)
		snprintf(detail, len,
		         "the record of API key '%s' in key storage is not the one last written "
		         "(an older copy written back): refused",
		         id);
	else if (r == KY_ERR_MK_MISMATCH)
		snprintf(detail, len, "API key integrity key: %s", API_STALE_UNIT);
}

int api_authenticate(struct api_ctx *x)
{
	struct unitd_api *api = x->api;
	const char *auth = api_header(x, MHD_HTTP_HEADER_AUTHORIZATION);
	const char *inst = api_header(x, "Bluemix-Instance");
	const char *tok;
	size_t toklen;
	uint8_t key[UNITD_TOKEN_KEY_LEN];
	struct token_claims cl;
	struct ky_store_apikey ak;
	uint64_t epoch;
	int r;

	if (token_bearer(auth, &tok, &toklen) != 0) {
		api_detail(x, "send header 'Authorization: Bearer <token>' with a token from "
		              "POST /identity/token");
		return KY_ERR_UNAUTHORIZED;
	}
	if (inst == NULL || inst[0] == '\0') {
		api_detail(x, "send header 'Bluemix-Instance: %s'", api->instance);
		return KY_ERR_INSTANCE_HEADER;
	}
	if (api->ks == NULL) {
		api_detail(x, "the key API needs key storage");
		return KY_ERR_NO_STORE;
	}
	if ((r = unitd_keystore_enter(api->ks, &x->kms)) != 0)
		return r;
	x->held = true;
	epoch = unitd_keystore_epoch(api->ks);
	if (!api_memo_hit(tok, toklen, epoch, x->now, &cl)) {
		if ((r = unitd_keystore_token_key(api->ks, &x->kms, x->now, key)) != 0) {
			api_detail(x, "%s",
			           r == KY_ERR_MK_MISMATCH ? "token signing key: " API_STALE_UNIT
			                                   : "cannot read the token signing key");
			return r;
		}
		r = token_verify(key, tok, toklen, x->now, api->instance, &cl, x->detail,
		                 sizeof(x->detail));
		OPENSSL_cleanse(key, sizeof(key));
		if (r != 0)
			return r;
		api_memo_put(tok, toklen, epoch, &cl);
	}
	memcpy(x->caller, cl.sub, sizeof(x->caller));
	if (strcmp(inst, api->instance) != 0) {
		api_detail(x, "header Bluemix-Instance names another service instance");
		return KY_ERR_UNAUTHORIZED;
	}
	r = unitd_keystore_apikey(api->ks, &x->kms, cl.sub, x->now, &ak);
	if (r == KY_ERR_NOT_FOUND || (r == 0 && ak.revoked != 0)) {
		api_detail(x, "the API key of this token was revoked");
		return KY_ERR_UNAUTHORIZED;
	}
	if (r != 0) {
		api_apikey_detail(x->detail, sizeof(x->detail), r, cl.sub);
		return r;
	}
	memcpy(x->caller, ak.id, sizeof(x->caller));
	x->role = api_role_bit(ak.role);
	return 0;
}

/* ---- the token service ---- */

static enum MHD_Result api_token_error(struct MHD_Connection *c, int err, const char *detail)
{
	json_t *j;
	enum MHD_Result ret;
	char code[64];

	/* IAM's error shape: errorCode, errorMessage (the SDK reports errorMessage). */
	if (err == KY_ERR_APIKEY_INVALID)
		snprintf(code, sizeof(code), "BXNIM0415E");
	else
		snprintf(code, sizeof(code), "KYOK-%s", ky_err_slug(err));
	j = json_pack("{s:s, s:s+++, s:s}", "errorCode", code, "errorMessage", ky_err_message(err),
	              detail && detail[0] ? ": " : "", detail ? detail : "", "", "kyokCode",
	              ky_err_slug(err));
	ret = api_send_json(c, (unsigned)ky_err_http(err), j, NULL, NULL);
	json_decref(j);
	return ret;
}

enum MHD_Result api_token(struct unitd_api *api, struct MHD_Connection *c, struct api_req *q)
{
	char apikey[TOKEN_APIKEY_MAX + 1], detail[256] = "", tok[TOKEN_MAX_LEN + 1];
	uint8_t hash[KY_APIKEY_HASH_LEN], key[UNITD_TOKEN_KEY_LEN];
	struct ky_store_apikey ak;
	struct token_claims cl = {0};
	struct ky_kms kms;
	bool held = false;
	json_t *j = NULL;
	int64_t now = api_now();
	enum MHD_Result ret;
	char who[KY_ID_MAX + 1] = "";
	int r;

	if (api->ks == NULL) {
		r = KY_ERR_NO_STORE;
		goto out;
	}
	ky_store_failure_clear(unitd_keystore_store(api->ks));
	if ((r = token_form_parse((const char *)q->body.data, q->body.len, apikey, sizeof(apikey),
	                          detail, sizeof(detail))) != 0)
		goto out;
	r = ky_apikey_hash(apikey, hash);
	OPENSSL_cleanse(apikey, sizeof(apikey));
	if (r != 0)
		goto out;
	if ((r = unitd_keystore_enter(api->ks, &kms)) != 0)
		goto out;
	held = true;
	r = unitd_keystore_apikey_find(api->ks, &kms, hash, now, &ak);
	if (r == 0)
		memcpy(who, ak.id, sizeof(who));
	if (r == KY_ERR_NOT_FOUND || (r == 0 && ak.revoked != 0)) {
		r = KY_ERR_APIKEY_INVALID;
		goto out;
	}
	if (r != 0) {
		api_apikey_detail(detail, sizeof(detail), r, ak.id);
		goto out;
	}
	if ((r = unitd_keystore_token_key(api->ks, &kms, now, key)) != 0) {
		if (r == KY_ERR_MK_MISMATCH)
			snprintf(detail, sizeof(detail), "token signing key: %s", API_STALE_UNIT);
		goto out;
	}
	memcpy(cl.sub, ak.id, sizeof(cl.sub));
	memcpy(cl.instance, api->instance, sizeof(cl.instance));
	if (strlen(ak.role) >= sizeof(cl.role)) {
		r = KY_ERR_RECORD_TAMPERED;
		goto out;
	}
	memcpy(cl.role, ak.role, strlen(ak.role) + 1);
	cl.iat = now;
	cl.exp = now + api->token_ttl;
	{
		uint8_t jti[16];
		if ((r = ky_random(jti, sizeof(jti))) != 0)
			goto out;
		ky_hex_encode(jti, sizeof(jti), cl.jti);
	}
	r = token_issue(key, &cl, tok, sizeof(tok));
	OPENSSL_cleanse(key, sizeof(key));
	if (r != 0)
		goto out;
	j = json_pack("{s:s, s:s, s:s, s:i, s:I, s:s}", "access_token", tok, "refresh_token",
	              "not_supported", "token_type", "Bearer", "expires_in", (int)api->token_ttl,
	              "expiration", (json_int_t)cl.exp, "scope", "ibm openid");
	OPENSSL_cleanse(tok, sizeof(tok));
	r = j ? 0 : KY_ERR_NOMEM;
out:
	if (held)
		unitd_keystore_leave(api->ks);
	OPENSSL_cleanse(key, sizeof(key));
	api_log_failure(api, "POST", "", API_TOKEN_PATH, "", who, r, detail);
	r = api_audit_plain("POST", API_TOKEN_PATH, who, r, detail, sizeof(detail));
	if (r != 0)
		ret = api_token_error(c, r, detail);
	else
		ret = api_send_json(c, 200, j, NULL, NULL);
	json_decref(j);
	return ret;
}
