/* Wrap, unwrap and rewrap with root keys. AES-GCM is lib/crypto's (gcm.c): cached keyed
 * contexts, no allocation on the hot path. The AAD is built on the stack.
 */
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"

/* ---- the wrapped key format ---- */

static void wrap_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* "KYW1" || lp(key id) || u32 version || u32 client aad length; the client aad follows. */
#define WRAP_HDR_MAX (4 + 2 + KY_UUID_LEN + 4 + 4)

static size_t wrap_aad(uint8_t out[WRAP_HDR_MAX], const char *id, uint32_t version, size_t aadlen)
{
	size_t n = strlen(id), off = 0;

	memcpy(out, KY_WRAP_MAGIC, 4);
	off = 4;
	out[off++] = (uint8_t)(n >> 8);
	out[off++] = (uint8_t)n;
	memcpy(out + off, id, n);
	off += n;
	wrap_be32(out + off, version);
	off += 4;
	wrap_be32(out + off, (uint32_t)aadlen);
	return off + 4;
}

static int wrap_check_key(const struct ky_key *k, int unwrap)
{
	if (k->extractable)
		return KY_ERR_KEY_NOT_ROOT;
	if (k->state == KY_KEY_DESTROYED)
		return KY_ERR_KEY_DESTROYED;
	if (k->state != KY_KEY_ACTIVE && !(unwrap && k->state == KY_KEY_DEACTIVATED))
		return KY_ERR_KEY_NOT_ACTIVE;
	if (k->nversions == 0 || k->versions == NULL || strlen(k->id) != KY_UUID_LEN)
		return KY_ERR_USAGE;
	return 0;
}

int ky_kms_wrap(const struct ky_key *k, const uint8_t *pt, size_t ptlen, const uint8_t *aad,
                size_t aadlen, uint8_t *out, size_t outcap, size_t *outlen)
{
	uint8_t hdr[WRAP_HDR_MAX];
	const struct ky_key_version *v;
	size_t hl;
	int r;

	*outlen = 0;
	if ((r = wrap_check_key(k, 0)) != 0)
		return r;
	if (ptlen == 0 || pt == NULL)
		return KY_ERR_MALFORMED;
	if (ptlen > KY_WRAP_PT_MAX || aadlen > KY_WRAP_AAD_MAX)
		return KY_ERR_TOO_LARGE;
	if (aadlen && aad == NULL)
		return KY_ERR_USAGE;
	if (outcap < ptlen + KY_WRAP_OVERHEAD)
		return KY_ERR_TOO_LARGE;
	v = &k->versions[k->nversions - 1];
	if (v->material == NULL)
		return KY_ERR_USAGE;
	memcpy(out, KY_WRAP_MAGIC, 4);
	wrap_be32(out + 4, v->n);
	if ((r = ky_gcm_nonce(out + 8)) != 0)
		return r;
	hl = wrap_aad(hdr, k->id, v->n, aadlen);
	if ((r = ky_gcm_seal(v->material, v->len, out + 8, hdr, hl, aad, aadlen, pt, ptlen,
	                     out + 8 + KY_WRAP_NONCE_LEN, out + 8 + KY_WRAP_NONCE_LEN + ptlen)) !=
	    0)
		return r;
	*outlen = ptlen + KY_WRAP_OVERHEAD;
	return 0;
}

int ky_kms_wrap_dek(const struct ky_key *k, const uint8_t *aad, size_t aadlen,
                    uint8_t dek[KY_DEK_LEN], uint8_t *out, size_t outcap, size_t *outlen)
{
	int r;

	*outlen = 0;
	if ((r = wrap_check_key(k, 0)) != 0)
		return r;
	if (RAND_bytes(dek, KY_DEK_LEN) != 1)
		return KY_ERR_CRYPTO;
	if ((r = ky_kms_wrap(k, dek, KY_DEK_LEN, aad, aadlen, out, outcap, outlen)) != 0)
		OPENSSL_cleanse(dek, KY_DEK_LEN);
	return r;
}

int ky_kms_wrap_version(const uint8_t *ct, size_t ctlen, uint32_t *version)
{
	uint32_t v;

	if (ct == NULL || ctlen <= KY_WRAP_OVERHEAD || memcmp(ct, KY_WRAP_MAGIC, 4) != 0)
		return KY_ERR_WRAP_MALFORMED;
	v = (uint32_t)ct[4] << 24 | (uint32_t)ct[5] << 16 | (uint32_t)ct[6] << 8 | ct[7];
	if (v == 0)
		return KY_ERR_WRAP_MALFORMED;
	*version = v;
	return 0;
}

int ky_kms_unwrap(const struct ky_key *k, const uint8_t *ct, size_t ctlen, const uint8_t *aad,
                  size_t aadlen, uint8_t *out, size_t outcap, size_t *outlen, uint32_t *version)
{
	uint8_t hdr[WRAP_HDR_MAX];
	const struct ky_key_version *v;
	uint32_t n;
	size_t hl, ptlen;
	int r;

	*outlen = 0;
	if ((r = wrap_check_key(k, 1)) != 0)
		return r;
	if ((r = ky_kms_wrap_version(ct, ctlen, &n)) != 0)
		return r;
	ptlen = ctlen - KY_WRAP_OVERHEAD;
	if (ptlen > KY_WRAP_PT_MAX || aadlen > KY_WRAP_AAD_MAX)
		return KY_ERR_TOO_LARGE;
	if (aadlen && aad == NULL)
		return KY_ERR_USAGE;
	if (outcap < ptlen)
		return KY_ERR_TOO_LARGE;
	/* A version this key does not have: a ciphertext of another key. */
	if (n > k->nversions)
		return KY_ERR_UNWRAP;
	v = &k->versions[n - 1];
	if (v->n != n || v->material == NULL)
		return KY_ERR_USAGE;
	hl = wrap_aad(hdr, k->id, n, aadlen);
	r = ky_gcm_open(v->material, v->len, ct + 8, hdr, hl, aad, aadlen,
	                ct + 8 + KY_WRAP_NONCE_LEN, ptlen, ct + 8 + KY_WRAP_NONCE_LEN + ptlen, out);
	if (r == KY_ERR_TAMPERED)
		return KY_ERR_UNWRAP;
	if (r != 0)
		return r;
	*outlen = ptlen;
	if (version != NULL)
		*version = n;
	return 0;
}

int ky_kms_rewrap(const struct ky_key *k, const uint8_t *ct, size_t ctlen, const uint8_t *aad,
                  size_t aadlen, uint8_t *out, size_t outcap, size_t *outlen)
{
	uint8_t pt[KY_WRAP_PT_MAX];
	size_t ptlen = 0;
	int r = KY_ERR_INTERNAL;

	*outlen = 0;
	if ((r = wrap_check_key(k, 0)) != 0)
		return r;
	if ((r = ky_kms_unwrap(k, ct, ctlen, aad, aadlen, pt, sizeof(pt), &ptlen, NULL)) != 0)
		goto out;
	if ((r = ky_kms_wrap(k, pt, ptlen, aad, aadlen, out, outcap, outlen)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_cleanse(pt, ptlen);
	return r;
}
