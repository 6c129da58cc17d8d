/* The storage digest: record tags, their sum, the index and the MAC of the digest row (the
 * formats are at the head of ledger.h). */
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/err.h"
#include "lib/store/ledger.h"

#define LEDGER_TAG_LABEL  "kyok-ledger-tag-v1"
#define LEDGER_META_LABEL "kyok-ledger-v1"
#define LEDGER_LOG_LABEL  "kyok-ledger-log-v1"

/* ---- arithmetic mod 2^256 ---- */

void ky_ledger_sum_add(uint8_t a[KY_LEDGER_TAG_LEN], const uint8_t b[KY_LEDGER_TAG_LEN])
{
	unsigned carry = 0;

	for (int i = KY_LEDGER_TAG_LEN - 1; i >= 0; i--) {
		unsigned v = (unsigned)a[i] + b[i] + carry;
		a[i] = (uint8_t)v;
		carry = v >> 8;
	}
}

void ky_ledger_sum_sub(uint8_t a[KY_LEDGER_TAG_LEN], const uint8_t b[KY_LEDGER_TAG_LEN])
{
	int borrow = 0;

	for (int i = KY_LEDGER_TAG_LEN - 1; i >= 0; i--) {
		int v = (int)a[i] - (int)b[i] - borrow;
		borrow = v < 0;
		a[i] = (uint8_t)(v + (borrow ? 256 : 0));
	}
}

/* ---- MACs ---- */

int ky_ledger_mac_init(struct ky_ledger_mac *m, const uint8_t key[KY_STORE_LEDGER_KEY_LEN])
{
	int r = KY_ERR_CRYPTO;
	EVP_MAC *mac = NULL;
	OSSL_PARAM params[2];

	m->tmpl = NULL;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if ((mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL ||
	    (m->tmpl = EVP_MAC_CTX_new(mac)) == NULL ||
	    EVP_MAC_init(m->tmpl, key, KY_STORE_LEDGER_KEY_LEN, params) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	EVP_MAC_free(mac);
	if (r != 0) {
		EVP_MAC_CTX_free(m->tmpl);
		m->tmpl = NULL;
	}
	return r;
}

void ky_ledger_mac_release(struct ky_ledger_mac *m)
{
	if (m == NULL)
		return;
	EVP_MAC_CTX_free(m->tmpl); /* the provider cleanses the key */
	m->tmpl = NULL;
}

static int ledger_update(EVP_MAC_CTX *c, const void *p, size_t n)
{
	return n == 0 || EVP_MAC_update(c, p, n) == 1 ? 0 : KY_ERR_CRYPTO;
}

static int ledger_u64(EVP_MAC_CTX *c, uint64_t v)
{
	uint8_t b[8];

	for (int i = 7; i >= 0; i--) {
		b[i] = (uint8_t)v;
		v >>= 8;
	}
	return ledger_update(c, b, sizeof(b));
}

static int ledger_lp16(EVP_MAC_CTX *c, const char *s)
{
	size_t n = strlen(s);
	uint8_t len[2] = {(uint8_t)(n >> 8), (uint8_t)n};
	int r;

	if (n > 0xffff)
		return KY_ERR_TOO_LARGE;
	if ((r = ledger_update(c, len, 2)) != 0)
		return r;
	return ledger_update(c, s, n);
}

static int ledger_final(EVP_MAC_CTX *c, uint8_t out[KY_LEDGER_TAG_LEN])
{
	size_t outlen = 0;

	if (EVP_MAC_final(c, out, &outlen, KY_LEDGER_TAG_LEN) != 1 || outlen != KY_LEDGER_TAG_LEN)
		return KY_ERR_CRYPTO;
	return 0;
}

int ky_ledger_tag(const struct ky_ledger_mac *m, uint8_t table, const char *id,
                  const struct ky_ledger_field *f, size_t nf, uint8_t out[KY_LEDGER_TAG_LEN])
{
	int r = KY_ERR_CRYPTO;
	EVP_MAC_CTX *c = NULL;

	if (m->tmpl == NULL)
		return KY_ERR_USAGE;
	if ((c = EVP_MAC_CTX_dup(m->tmpl)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ledger_update(c, LEDGER_TAG_LABEL, sizeof(LEDGER_TAG_LABEL))) != 0 ||
	    (r = ledger_update(c, &table, 1)) != 0 || (r = ledger_lp16(c, id)) != 0)
		goto out;
	for (size_t i = 0; i < nf; i++) {
		uint8_t kind = (uint8_t)f[i].kind;
		if ((r = ledger_update(c, &kind, 1)) != 0)
			goto out;
		if (f[i].kind == 1)
			r = ledger_u64(c, (uint64_t)f[i].i);
		else if (f[i].kind == 3 || f[i].kind == 4) {
			uint8_t len[4] = {(uint8_t)(f[i].len >> 24), (uint8_t)(f[i].len >> 16),
			                  (uint8_t)(f[i].len >> 8), (uint8_t)f[i].len};
			if ((r = ledger_update(c, len, 4)) == 0)
				r = ledger_update(c, f[i].p, f[i].len);
		}
		if (r != 0)
			goto out;
	}
	if ((r = ledger_final(c, out)) != 0)
		goto out;
	r = 0;
out:
	EVP_MAC_CTX_free(c);
	return r;
}

int ky_ledger_meta_mac(const struct ky_ledger_mac *m, const char *instance, uint64_t gen,
                       uint64_t epoch, uint64_t n, const uint8_t sum[KY_LEDGER_TAG_LEN],
                       uint8_t out[KY_LEDGER_TAG_LEN])
{
	int r = KY_ERR_CRYPTO;
	EVP_MAC_CTX *c = NULL;

	if (m->tmpl == NULL)
		return KY_ERR_USAGE;
	if ((c = EVP_MAC_CTX_dup(m->tmpl)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ledger_update(c, LEDGER_META_LABEL, sizeof(LEDGER_META_LABEL))) != 0 ||
	    (r = ledger_lp16(c, instance ? instance : "")) != 0 || (r = ledger_u64(c, gen)) != 0 ||
	    (r = ledger_u64(c, epoch)) != 0 || (r = ledger_u64(c, n)) != 0 ||
	    (r = ledger_update(c, sum, KY_LEDGER_TAG_LEN)) != 0 || (r = ledger_final(c, out)) != 0)
		goto out;
	r = 0;
out:
	EVP_MAC_CTX_free(c);
	return r;
}

/* ---- index ---- */

static size_t ledger_hash(uint8_t table, const char *id)
{
	uint64_t h = 1469598103934665603ull ^ table;

	for (; *id; id++) {
		h ^= (uint8_t)*id;
		h *= 1099511628211ull;
	}
	return (size_t)h;
}

int ky_ledger_index_init(struct ky_ledger_index *ix)
{
	memset(ix, 0, sizeof(*ix));
	ix->nb = 1024;
	if ((ix->b = calloc(ix->nb, sizeof(*ix->b))) == NULL) {
		ix->nb = 0;
		return KY_ERR_NOMEM;
	}
	return 0;
}

void ky_ledger_index_release(struct ky_ledger_index *ix)
{
	if (ix == NULL)
		return;
	for (size_t i = 0; i < ix->nb; i++) {
		struct ky_ledger_entry *e = ix->b[i], *nx;
		for (; e != NULL; e = nx) {
			nx = e->next;
			free(e);
		}
	}
	free(ix->b);
	memset(ix, 0, sizeof(*ix));
}

void ky_ledger_index_move(struct ky_ledger_index *dst, struct ky_ledger_index *src)
{
	ky_ledger_index_release(dst);
	*dst = *src;
	memset(src, 0, sizeof(*src));
}

struct ky_ledger_entry *ky_ledger_index_find(const struct ky_ledger_index *ix, uint8_t table,
                                             const char *id)
{
	struct ky_ledger_entry *e;

	if (ix->nb == 0)
		return NULL;
	for (e = ix->b[ledger_hash(table, id) & (ix->nb - 1)]; e != NULL; e = e->next)
		if (e->table == table && strcmp(e->id, id) == 0)
			return e;
	return NULL;
}

static void ledger_grow(struct ky_ledger_index *ix)
{
	size_t nb = ix->nb * 2;
	struct ky_ledger_entry **b = calloc(nb, sizeof(*b));

	if (b == NULL)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < ix->nb; i++) {
		struct ky_ledger_entry *e = ix->b[i], *nx;
		for (; e != NULL; e = nx) {
			size_t h = ledger_hash(e->table, e->id) & (nb - 1);
			nx = e->next;
			e->next = b[h];
			b[h] = e;
		}
	}
	free(ix->b);
	ix->b = b;
	ix->nb = nb;
}

int ky_ledger_index_set(struct ky_ledger_index *ix, uint8_t table, const char *id,
                        const uint8_t *tag, uint64_t gen)
{
	struct ky_ledger_entry **pp, *e;
	size_t n;

	if (ix->nb == 0)
		return KY_ERR_USAGE;
	for (pp = &ix->b[ledger_hash(table, id) & (ix->nb - 1)]; (e = *pp) != NULL; pp = &e->next)
		if (e->table == table && strcmp(e->id, id) == 0)
			break;
	if (e != NULL) {
		ky_ledger_sum_sub(ix->sum, e->tag);
		if (tag == NULL) {
			*pp = e->next;
			free(e);
			ix->n--;
			return 0;
		}
		memcpy(e->tag, tag, KY_LEDGER_TAG_LEN);
		e->gen = gen;
		ky_ledger_sum_add(ix->sum, tag);
		return 0;
	}
	if (tag == NULL)
		return 0;
	n = strlen(id);
	if ((e = malloc(sizeof(*e) + n + 1)) == NULL)
		return KY_ERR_NOMEM;
	e->table = table;
	e->gen = gen;
	memcpy(e->tag, tag, KY_LEDGER_TAG_LEN);
	memcpy(e->id, id, n + 1);
	e->next = *pp;
	*pp = e;
	ix->n++;
	ky_ledger_sum_add(ix->sum, tag);
	if (ix->n > ix->nb)
		ledger_grow(ix);
	return 0;
}

int ky_ledger_log_pad(const struct ky_ledger_mac *m, uint64_t gen, uint8_t table, const char *id,
                      uint8_t out[KY_LEDGER_TAG_LEN])
{
	int r = KY_ERR_CRYPTO;
	EVP_MAC_CTX *c = NULL;

	if (m->tmpl == NULL)
		return KY_ERR_USAGE;
	if ((c = EVP_MAC_CTX_dup(m->tmpl)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ledger_update(c, LEDGER_LOG_LABEL, sizeof(LEDGER_LOG_LABEL))) != 0 ||
	    (r = ledger_u64(c, gen)) != 0 || (r = ledger_update(c, &table, 1)) != 0 ||
	    (r = ledger_lp16(c, id)) != 0 || (r = ledger_final(c, out)) != 0)
		goto out;
	r = 0;
out:
	EVP_MAC_CTX_free(c);
	return r;
}
