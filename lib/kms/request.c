/* Replies of state changes kept by request id (Idempotency-Key): the request's hash, and
 * the reply body sealed under the master key like every other record.
 *
 *   hash = SHA-256(lp(method) || lp(path and query) || u32 BE body length || body)
 *   body = nonce (12) || AES-256-GCM(master key, reply body) || tag (16)
 *   AAD  = lp("kyok-request-v1") || lp(instance) || lp(API key id) || lp(request id) ||
 *          hash || u32 BE status || lp(vp)
 * (lp = u16 big-endian length, then the bytes.) The AAD binds the row's clear columns: a
 * reply cannot be moved to another request, caller or status.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/err.h"
#include "kyok/kms.h"

#define REQ_LABEL    "kyok-request-v1"
#define REQ_OVERHEAD (KY_WRAP_NONCE_LEN + KY_WRAP_TAG_LEN)
#define REQ_AAD_MAX                                                                      \
	(2 + sizeof(REQ_LABEL) + 2 + KY_ID_MAX + 2 + KY_ID_MAX + 2 + KY_REQUEST_ID_MAX + \
	 KY_REQUEST_HASH_LEN + 4 + 2 + KY_VP_LEN)

static void req_lp(uint8_t *out, size_t *off, const void *p, size_t n)
{
	out[(*off)++] = (uint8_t)(n >> 8);
	out[(*off)++] = (uint8_t)n;
	memcpy(out + *off, p, n);
	*off += n;
}

static void req_u32(uint8_t *out, size_t *off, uint32_t v)
{
	out[(*off)++] = (uint8_t)(v >> 24);
	out[(*off)++] = (uint8_t)(v >> 16);
	out[(*off)++] = (uint8_t)(v >> 8);
	out[(*off)++] = (uint8_t)v;
}

static int req_aad(const char *instance, const struct ky_store_request *req,
                   uint8_t out[REQ_AAD_MAX], size_t *len)
{
	size_t off = 0, il = instance ? strlen(instance) : 0, al = strlen(req->apikey),
	       nl = strlen(req->id);

	if (il == 0 || il > KY_ID_MAX || al == 0 || al > KY_ID_MAX || nl == 0 ||
	    nl > KY_REQUEST_ID_MAX)
		return KY_ERR_USAGE;
	req_lp(out, &off, REQ_LABEL, strlen(REQ_LABEL));
	req_lp(out, &off, instance, il);
	req_lp(out, &off, req->apikey, al);
	req_lp(out, &off, req->id, nl);
	memcpy(out + off, req->hash, KY_REQUEST_HASH_LEN);
	off += KY_REQUEST_HASH_LEN;
	req_u32(out, &off, (uint32_t)req->status);
	req_lp(out, &off, req->vp, KY_VP_LEN);
	*len = off;
	return 0;
}

int ky_kms_request_hash(const char *method, const char *path, const uint8_t *body, size_t n,
                        uint8_t out[KY_REQUEST_HASH_LEN])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t hdr[4];
	size_t ml = strlen(method), pl = strlen(path), off = 0;
	uint8_t lm[2] = {(uint8_t)(ml >> 8), (uint8_t)ml},
	        lpth[2] = {(uint8_t)(pl >> 8), (uint8_t)pl};
	unsigned int outlen = 0;
	int r = KY_ERR_CRYPTO;

	if (md == NULL)
		return KY_ERR_NOMEM;
	if (ml > 0xffff || pl > 0xffff || n > 0xffffffffu) {
		r = KY_ERR_USAGE;
		goto out;
	}
	req_u32(hdr, &off, (uint32_t)n);
	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(md, lm, 2) != 1 ||
	    EVP_DigestUpdate(md, method, ml) != 1 || EVP_DigestUpdate(md, lpth, 2) != 1 ||
	    EVP_DigestUpdate(md, path, pl) != 1 || EVP_DigestUpdate(md, hdr, 4) != 1 ||
	    (n > 0 && EVP_DigestUpdate(md, body, n) != 1) ||
	    EVP_DigestFinal_ex(md, out, &outlen) != 1 || outlen != KY_REQUEST_HASH_LEN) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	EVP_MD_CTX_free(md);
	return r;
}

int ky_kms_request_seal(const struct ky_kms *kms, struct ky_store_request *req, const uint8_t *body,
                        size_t n)
{
	const struct ky_mk *mk = kms->next ? kms->next : kms->current;
	uint8_t aad[REQ_AAD_MAX], *b = NULL;
	size_t aadlen = 0;
	int r = KY_ERR_INTERNAL;

	req->body = NULL;
	req->bodylen = 0;
	if (mk == NULL)
		return KY_ERR_NO_MASTER_KEY;
	memcpy(req->vp, mk->vp, KY_VP_LEN);
	if ((r = req_aad(kms->instance, req, aad, &aadlen)) != 0)
		return r;
	if ((b = malloc(n + REQ_OVERHEAD)) == NULL)
		return KY_ERR_NOMEM;
	if ((r = ky_gcm_nonce(b)) != 0)
		goto out;
	if ((r = ky_gcm_seal(mk->key, KY_MK_LEN, b, aad, aadlen, NULL, 0, body, n,
	                     b + KY_WRAP_NONCE_LEN, b + KY_WRAP_NONCE_LEN + n)) != 0)
		goto out;
	req->body = b;
	req->bodylen = n + REQ_OVERHEAD;
	b = NULL; /* transferred */
	r = 0;
out:
	free(b);
	return r;
}

int ky_kms_request_open(const struct ky_kms *kms, const struct ky_store_request *req,
                        uint8_t **body, size_t *n)
{
	const struct ky_mk *mk = NULL;
	uint8_t aad[REQ_AAD_MAX], *pt = NULL;
	size_t aadlen = 0, ptlen = 0;
	int r = KY_ERR_INTERNAL;

	*body = NULL;
	*n = 0;
	if (kms->current != NULL && CRYPTO_memcmp(kms->current->vp, req->vp, KY_VP_LEN) == 0)
		mk = kms->current;
	else if (kms->next != NULL && CRYPTO_memcmp(kms->next->vp, req->vp, KY_VP_LEN) == 0)
		mk = kms->next;
	if (mk == NULL)
		return KY_ERR_MK_MISMATCH;
	if (req->bodylen < REQ_OVERHEAD)
		return KY_ERR_RECORD_TAMPERED;
	if ((r = req_aad(kms->instance, req, aad, &aadlen)) != 0)
		return r;
	ptlen = req->bodylen - REQ_OVERHEAD;
	/* The reply may hold a standard key's payload. */
	if ((pt = OPENSSL_secure_malloc(ptlen + 1)) == NULL)
		return KY_ERR_NOMEM;
	r = ky_gcm_open(mk->key, KY_MK_LEN, req->body, aad, aadlen, NULL, 0,
	                req->body + KY_WRAP_NONCE_LEN, ptlen, req->body + KY_WRAP_NONCE_LEN + ptlen,
	                pt);
	if (r != 0) {
		r = r == KY_ERR_TAMPERED ? KY_ERR_RECORD_TAMPERED : r;
		goto out;
	}
	*body = pt;
	*n = ptlen;
	pt = NULL; /* transferred */
	r = 0;
out:
	if (pt != NULL)
		OPENSSL_secure_clear_free(pt, ptlen + 1);
	return r;
}
