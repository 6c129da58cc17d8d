/* Import tokens and secure import on the key API (include/kyok/kms_import.h has the token):
 * the bodies (pure parsers and builders, negative tests in tests/unit/test_api.c) and the part
 * of the handlers that reads and writes the token in key storage.
 *
 * The token is read, changed and written back inside one write transaction of key storage: a
 * retrieval counts once however many units serve retrievals at the same time, and a secure
 * import uses its nonce up in the same transaction that stores the imported key, so either
 * both happen or neither does.
 */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"
#include "kyok/kms_import.h"
#include "kyok/store.h"
#include "unitd/api.h"

#define KP_TYPE_REGISTRATION "application/vnd.ibm.kms.registration+json"
#define KP_ALG_OAEP_SHA256   "RSAES_OAEP_SHA_256"
#define KP_ALG_OAEP_SHA1     "RSAES_OAEP_SHA_1"

/* ---- bodies ---- */

void kp_secure_release(struct kp_secure *s)
{
	if (s == NULL)
		return;
	ky_buf_free(&s->enc_nonce);
	ky_buf_free(&s->iv);
	memset(s, 0, sizeof(*s));
}

/* A base64 member of at most max decoded bytes: KY_ERR_MALFORMED naming path.k. */
static int it_b64(json_t *o, const char *k, const char *path, size_t max, struct ky_buf *out,
                  char *detail, size_t detaillen)
{
	json_t *v = json_object_get(o, k);

	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    strlen(json_string_value(v)) != json_string_length(v) ||
	    json_string_length(v) > max / 3 * 4 + 8 ||
	    ky_b64_decode(json_string_value(v), out) != 0 || out->len == 0 || out->len > max) {
		ky_buf_free(out);
		kp_detail(detail, detaillen, "member '%s%s%s' must be base64 of 1 to %zu bytes",
		          path, path[0] ? "." : "", k, max);
		return KY_ERR_MALFORMED;
	}
	return 0;
}

int kp_secure_parse(json_t *o, const char *path, bool has_payload, struct kp_secure *out,
                    char *detail, size_t detaillen)
{
	json_t *alg = json_object_get(o, "encryptionAlgorithm");
	bool nonce = json_object_get(o, "encryptedNonce") != NULL;
	bool iv = json_object_get(o, "iv") != NULL;
	const char *dot = path[0] ? "." : "";
	int r = KY_ERR_INTERNAL;

	memset(out, 0, sizeof(*out));
	if (!nonce && !iv && alg == NULL)
		return 0;
	r = KY_ERR_MALFORMED;
	if (!nonce || !iv || !has_payload) {
		kp_detail(detail, detaillen,
		          "a secure import takes '%s%spayload' (the key encrypted to the import "
		          "token), '%s%sencryptedNonce' and '%s%siv' together: %s is missing",
		          path, dot, path, dot, path, dot,
		          !has_payload ? "payload"
		          : !nonce     ? "encryptedNonce"
		                       : "iv");
		goto out;
	}
	if (alg != NULL) {
		const char *a = json_string_value(alg);
		if (a != NULL && strcmp(a, KP_ALG_OAEP_SHA1) == 0) {
			out->oaep_sha1 = 1;
		} else if (a == NULL || strcmp(a, KP_ALG_OAEP_SHA256) != 0) {
			kp_detail(detail, detaillen,
			          "member '%s%sencryptionAlgorithm' must be " KP_ALG_OAEP_SHA256
			          " (the default) or " KP_ALG_OAEP_SHA1,
			          path, dot);
			goto out;
		}
	}
	if ((r = it_b64(o, "encryptedNonce", path, KY_IMPORT_NONCE_LEN + KY_IMPORT_TAG_LEN,
	                &out->enc_nonce, detail, detaillen)) != 0 ||
	    (r = it_b64(o, "iv", path, KY_IMPORT_IV_LEN, &out->iv, detail, detaillen)) != 0)
		goto out;
	out->present = true;
	r = 0;
out:
	if (r != 0)
		kp_secure_release(out);
	return r;
}

int kp_parse_import_token(const uint8_t *body, size_t n, uint32_t *expiration,
                          uint32_t *max_retrievals, char *detail, size_t detaillen)
{
	json_t *j = NULL, *e, *m;
	json_error_t err;
	const char *k;
	json_t *v;
	int r = KY_ERR_INTERNAL;

	*expiration = KY_IMPORT_EXPIRATION_DEFAULT;
	*max_retrievals = KY_IMPORT_RETRIEVALS_DEFAULT;
	if (n == 0)
		return 0;
	if (n > KP_BODY_MAX) {
		kp_detail(detail, detaillen, "the body is over %d bytes", KP_BODY_MAX);
		return KY_ERR_TOO_LARGE;
	}
	if ((j = json_loadb((const char *)body, n, JSON_REJECT_DUPLICATES, &err)) == NULL) {
		kp_detail(detail, detaillen, "the body is not valid JSON: %s (line %d)", err.text,
		          err.line);
		return KY_ERR_MALFORMED;
	}
	r = KY_ERR_MALFORMED;
	if (!json_is_object(j)) {
		kp_detail(detail, detaillen, "the body must be a JSON object");
		goto out;
	}
	json_object_foreach(j, k, v)
	{
		if (strcmp(k, "expiration") != 0 && strcmp(k, "maxAllowedRetrievals") != 0) {
			kp_detail(detail, detaillen,
			          "member '%.60s': an import token takes only expiration "
			          "maxAllowedRetrievals",
			          k);
			r = KY_ERR_BODY_MEMBER;
			goto out;
		}
	}
	e = json_object_get(j, "expiration");
	m = json_object_get(j, "maxAllowedRetrievals");
	if (e != NULL && !json_is_null(e)) {
		if (!json_is_integer(e) || json_integer_value(e) < KY_IMPORT_EXPIRATION_MIN ||
		    json_integer_value(e) > KY_IMPORT_EXPIRATION_MAX) {
			kp_detail(detail, detaillen,
			          "member 'expiration' must be a whole number of seconds, %d to %d "
			          "(default %d)",
			          KY_IMPORT_EXPIRATION_MIN, KY_IMPORT_EXPIRATION_MAX,
			          KY_IMPORT_EXPIRATION_DEFAULT);
			goto out;
		}
		*expiration = (uint32_t)json_integer_value(e);
	}
	if (m != NULL && !json_is_null(m)) {
		if (!json_is_integer(m) || json_integer_value(m) < 1 ||
		    json_integer_value(m) > KY_IMPORT_RETRIEVALS_MAX) {
			kp_detail(detail, detaillen,
			          "member 'maxAllowedRetrievals' must be a whole number, 1 to %d "
			          "(default %d)",
			          KY_IMPORT_RETRIEVALS_MAX, KY_IMPORT_RETRIEVALS_DEFAULT);
			goto out;
		}
		*max_retrievals = (uint32_t)json_integer_value(m);
	}
	r = 0;
out:
	json_decref(j);
	return r;
}

json_t *kp_import_token_json(const struct ky_import_token *t, const char *payload_b64,
                             const char *nonce_b64)
{
	char c[KP_DATE_LEN + 1], e[KP_DATE_LEN + 1];
	json_t *o;

	kp_date(t->created, c);
	kp_date(t->expires, e);
	o = json_pack("{s:s, s:s, s:I, s:I}", "creationDate", c, "expirationDate", e,
	              "maxAllowedRetrievals", (json_int_t)t->max_retrievals, "remainingRetrievals",
	              (json_int_t)t->remaining);
	if (o == NULL || payload_b64 == NULL)
		return o;
	if (json_object_set_new(o, "payload", json_string(payload_b64)) != 0 ||
	    json_object_set_new(o, "nonce", json_string(nonce_b64)) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int kp_sync_check(const char *id, int64_t updated, int64_t now, char *detail, size_t detaillen)
{
	char at[KP_DATE_LEN + 1], from[KP_DATE_LEN + 1];

	if (now >= updated + KP_SYNC_WAIT)
		return 0;
	kp_date(updated, at);
	kp_date(updated + KP_SYNC_WAIT, from);
	kp_detail(detail, detaillen, "key %s was changed at %s: a sync can be asked from %s", id,
	          at, from);
	return KY_ERR_SYNC_TOO_EARLY;
}

json_t *kp_registrations_json(bool total_count)
{
	json_t *o = kp_collection(KP_TYPE_REGISTRATION, json_array());

	if (o != NULL && total_count &&
	    json_object_set_new(json_object_get(o, "metadata"), "totalCount", json_integer(0)) !=
	        0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* ---- the token in key storage ---- */

int kp_txn_begin(const struct ky_kms *kms, bool in_txn, bool *mine)
{
	int r;

	*mine = false;
	if (in_txn)
		return 0;
	if ((r = ky_store_begin(kms->store)) != 0)
		return r;
	*mine = true;
	return 0;
}

int kp_txn_end(const struct ky_kms *kms, bool mine, int r)
{
	if (!mine)
		return r;
	if (r != 0) {
		(void)ky_store_rollback(kms->store);
		return r;
	}
	return ky_store_commit(kms->store);
}

static int it_read(const struct ky_kms *kms, struct ky_import_token **t, char *detail,
                   size_t detaillen)
{
	uint8_t *raw = NULL;
	size_t n = 0;
	int r;

	*t = NULL;
	r = ky_kms_secret_get(kms, KY_IMPORT_TOKEN_SECRET, &raw, &n);
	if (r == KY_ERR_NOT_FOUND)
		return KY_ERR_IMPORT_TOKEN_MISSING;
	if (r == KY_ERR_MK_MISMATCH)
		kp_detail(detail, detaillen,
		          "the import token is under a master key this unit does not hold: load, "
		          "commit and set the instance's master key on this unit");
	if (r != 0)
		return r;
	r = ky_import_token_decode(raw, n, t);
	ky_kms_buf_free(raw, n);
	if (r == KY_ERR_MALFORMED) {
		kp_detail(detail, detaillen, "the stored import token does not parse");
		return KY_ERR_RECORD_TAMPERED;
	}
	return r;
}

static int it_write(const struct ky_kms *kms, const struct ky_import_token *t, int64_t now)
{
	uint8_t *raw = NULL;
	size_t n = 0;
	int r;

	if ((r = ky_import_token_encode(t, &raw, &n)) != 0)
		return r;
	r = ky_kms_secret_put(kms, KY_IMPORT_TOKEN_SECRET, raw, n, now);
	ky_kms_buf_free(raw, n);
	return r;
}

int kp_import_token_make(const uint8_t *body, size_t n, int64_t now, struct ky_import_token **out,
                         char *detail, size_t detaillen)
{
	uint32_t expiration, max;
	int r;

	*out = NULL;
	if ((r = kp_parse_import_token(body, n, &expiration, &max, detail, detaillen)) != 0)
		return r;
	return ky_import_token_new(now, expiration, max, out);
}

int kp_import_token_create(const struct ky_kms *kms, bool in_txn, const uint8_t *body, size_t n,
                           int64_t now, struct ky_import_token **made, json_t **reply, char *detail,
                           size_t detaillen)
{
	struct ky_import_token *t = NULL;
	bool mine = false;
	int r = KY_ERR_INTERNAL;

	*reply = NULL;
	if (made != NULL && *made != NULL) {
		t = *made;
		*made = NULL; /* transferred */
	} else if ((r = kp_import_token_make(body, n, now, &t, detail, detaillen)) != 0) {
		goto out;
	}
	/* The key pair was made before the transaction: it takes a while, and holds no lock. */
	if ((r = kp_txn_begin(kms, in_txn, &mine)) != 0)
		goto out;
	if ((r = it_write(kms, t, now)) == 0 &&
	    (*reply = kp_import_token_json(t, NULL, NULL)) == NULL)
		r = KY_ERR_NOMEM;
	if ((r = kp_txn_end(kms, mine, r)) != 0) {
		json_decref(*reply);
		*reply = NULL;
		goto out;
	}
	r = 0;
out:
	ky_import_token_free(t);
	return r;
}

int kp_import_token_retrieve(const struct ky_kms *kms, bool in_txn, int64_t now, json_t **reply,
                             char *detail, size_t detaillen)
{
	struct ky_import_token *t = NULL;
	char *pub = NULL, *nonce = NULL;
	bool mine = false;
	int r = KY_ERR_INTERNAL;

	*reply = NULL;
	if ((r = kp_txn_begin(kms, in_txn, &mine)) != 0)
		return r;
	if ((r = it_read(kms, &t, detail, detaillen)) != 0)
		goto out;
	if ((r = ky_import_token_retrieve(t, now)) != 0)
		goto out;
	if ((r = ky_import_token_public_b64(t, &pub)) != 0 ||
	    (r = ky_b64_encode(t->nonce, sizeof(t->nonce), &nonce)) != 0)
		goto out;
	if ((r = it_write(kms, t, now)) != 0)
		goto out;
	/* The answer is made before the commit: a retrieval counted is a retrieval answered. */
	if ((*reply = kp_import_token_json(t, pub, nonce)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	r = 0;
out:
	if ((r = kp_txn_end(kms, mine, r)) != 0) {
		json_decref(*reply);
		*reply = NULL;
	}
	if (r == KY_ERR_IMPORT_TOKEN_EXPIRED && t != NULL) {
		char d[KP_DATE_LEN + 1];
		kp_date(t->expires, d);
		kp_detail(detail, detaillen, "it expired at %s", d);
	}
	if (r == KY_ERR_IMPORT_TOKEN_USED_UP && t != NULL)
		kp_detail(detail, detaillen, "all %u retrievals were used", t->max_retrievals);
	if (nonce != NULL) {
		OPENSSL_cleanse(nonce, strlen(nonce));
		free(nonce);
	}
	free(pub);
	ky_import_token_free(t);
	return r;
}

int kp_import_token_unseal(const struct ky_kms *kms, const struct kp_secure *s,
                           const struct ky_buf *payload, int64_t now, uint8_t *key, size_t cap,
                           size_t *keylen, char *detail, size_t detaillen)
{
	struct ky_import_token *t = NULL;
	struct ky_import_sealed in = {
	    .payload = payload->data,
	    .payload_len = payload->len,
	    .enc_nonce = s->enc_nonce.data,
	    .enc_nonce_len = s->enc_nonce.len,
	    .iv = s->iv.data,
	    .iv_len = s->iv.len,
	    .oaep_sha1 = s->oaep_sha1,
	};
	int reused = 0;
	int r = KY_ERR_INTERNAL;

	*keylen = 0;
	if ((r = it_read(kms, &t, detail, detaillen)) != 0)
		goto out;
	if ((r = ky_import_token_open(t, now, &in, key, cap, keylen, &reused)) != 0)
		goto out;
	if ((r = it_write(kms, t, now)) != 0)
		goto out;
	r = 0;
out:
	if (r == KY_ERR_INCORRECT_NONCE && reused)
		kp_detail(detail, detaillen,
		          "this nonce imported a key already: a nonce imports one key");
	if (r == KY_ERR_KEY_MATERIAL)
		kp_detail(detail, detaillen, "the decrypted payload is not 16, 24 or 32 bytes");
	if (r == KY_ERR_IMPORT_TOKEN_EXPIRED && t != NULL) {
		char d[KP_DATE_LEN + 1];
		kp_date(t->expires, d);
		kp_detail(detail, detaillen, "it expired at %s", d);
	}
	if (r != 0 && *keylen > 0) {
		OPENSSL_cleanse(key, *keylen);
		*keylen = 0;
	}
	ky_import_token_free(t);
	return r;
}
