/* Key records under the master keys, in key storage: a record sealed and opened (the
 * associated data below binds it to its instance, name, version and master key), keys and
 * secrets in the store, and re-encipherment under a new master key. The key objects, their
 * rules and the record's encoding: key.c.
 */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"
#include "lib/kms/internal.h"

#define KMS_LABEL_KEY     "kyok-record-v1"
#define KMS_LABEL_SECRET  "kyok-secret-v1"
#define KMS_AAD_MAX       (2 + 14 + 2 + KY_ID_MAX + 2 + KY_SECRET_NAME_MAX + 4 + 2 + KY_VP_LEN)
#define KMS_SEAL_OVERHEAD (KY_WRAP_NONCE_LEN + KY_WRAP_TAG_LEN)
#define KMS_RETRIES       16
#define KMS_SECRET_MAX    65536

/* ---- sealing ---- */

static void aad_lp(uint8_t *out, size_t *off, const void *p, size_t n)
{
	out[(*off)++] = (uint8_t)(n >> 8);
	out[(*off)++] = (uint8_t)n;
	memcpy(out + *off, p, n);
	*off += n;
}

/* lp(label) || lp(instance) || lp(name) || u32 version || lp(vp) */
static int kms_aad(uint8_t out[KMS_AAD_MAX], size_t *len, const char *label, const char *instance,
                   const char *name, uint32_t version, const uint8_t vp[KY_VP_LEN])
{
	size_t off = 0, il = instance ? strlen(instance) : 0, nl = strlen(name);

	if (il == 0 || il > KY_ID_MAX || nl > KY_SECRET_NAME_MAX)
		return KY_ERR_USAGE;
	aad_lp(out, &off, label, strlen(label));
	aad_lp(out, &off, instance, il);
	aad_lp(out, &off, name, nl);
	out[off++] = (uint8_t)(version >> 24);
	out[off++] = (uint8_t)(version >> 16);
	out[off++] = (uint8_t)(version >> 8);
	out[off++] = (uint8_t)version;
	aad_lp(out, &off, vp, KY_VP_LEN);
	*len = off;
	return 0;
}

/* blob = nonce || GCM(mk, pt) || tag, malloc'd. */
static int kms_seal(const struct ky_mk *mk, const uint8_t *aad, size_t aadlen, const uint8_t *pt,
                    size_t n, uint8_t **blob, size_t *bloblen)
{
	uint8_t *b;
	int r;

	*blob = NULL;
	*bloblen = 0;
	if ((b = malloc(n + KMS_SEAL_OVERHEAD)) == NULL)
		return KY_ERR_NOMEM;
	if ((r = ky_gcm_nonce(b)) != 0) {
		free(b);
		return r;
	}
	if ((r = ky_gcm_seal(mk->key, KY_MK_LEN, b, aad, aadlen, NULL, 0, pt, n,
	                     b + KY_WRAP_NONCE_LEN, b + KY_WRAP_NONCE_LEN + n)) != 0) {
		free(b);
		return r;
	}
	*blob = b;
	*bloblen = n + KMS_SEAL_OVERHEAD;
	return 0;
}

/* Opens blob into pt (bloblen - overhead bytes). KY_ERR_RECORD_TAMPERED on a bad tag. */
static int kms_open(const struct ky_mk *mk, const uint8_t *aad, size_t aadlen, const uint8_t *blob,
                    size_t bloblen, uint8_t *pt)
{
	size_t n;
	int r;

	if (bloblen < KMS_SEAL_OVERHEAD)
		return KY_ERR_RECORD_TAMPERED;
	n = bloblen - KMS_SEAL_OVERHEAD;
	r = ky_gcm_open(mk->key, KY_MK_LEN, blob, aad, aadlen, NULL, 0, blob + KY_WRAP_NONCE_LEN, n,
	                blob + KY_WRAP_NONCE_LEN + n, pt);
	return r == KY_ERR_TAMPERED ? KY_ERR_RECORD_TAMPERED : r;
}

/* The register that holds vp, or NULL. */
static const struct ky_mk *kms_mk_for(const struct ky_kms *kms, const uint8_t vp[KY_VP_LEN])
{
	if (kms->current && memcmp(kms->current->vp, vp, KY_VP_LEN) == 0)
		return kms->current;
	if (kms->next && memcmp(kms->next->vp, vp, KY_VP_LEN) == 0)
		return kms->next;
	return NULL;
}

/* Where new and updated records go: the committed new key during a rotation. */
static const struct ky_mk *kms_mk_write(const struct ky_kms *kms)
{
	return kms->next ? kms->next : kms->current;
}

int ky_kms_record_seal(const struct ky_kms *kms, const struct ky_key *k, struct ky_store_row *row)
{
	const struct ky_mk *mk = kms_mk_write(kms);
	uint8_t aad[KMS_AAD_MAX];
	uint8_t *pt = NULL;
	size_t aadlen = 0, ptlen = 0;
	int r = KY_ERR_INTERNAL;

	if (mk == NULL)
		return KY_ERR_REGISTER_STATE;
	if ((r = kms_aad(aad, &aadlen, KMS_LABEL_KEY, kms->instance, k->id, k->nversions,
	                 mk->vp)) != 0)
		return r;
	if ((r = ky_kms_record_encode(k, &pt, &ptlen)) != 0)
		return r;
	/* Never write what could not be opened again. */
	if (ptlen + KMS_SEAL_OVERHEAD > KY_KMS_RECORD_MAX) {
		ky_kms_buf_free(pt, ptlen);
		return KY_ERR_TOO_LARGE;
	}
	ky_store_row_release(row);
	memcpy(row->id, k->id, sizeof(row->id));
	memcpy(row->name, k->name, sizeof(row->name));
	row->state = k->state;
	row->extractable = k->extractable;
	row->created = k->created;
	row->updated = k->updated;
	row->deleted = k->deleted;
	row->version = k->nversions;
	row->expires = k->expires;
	/* The store's alias index: pointers into k, which outlives the insert or update. */
	row->naliases = k->naliases;
	for (uint32_t i = 0; i < k->naliases; i++)
		row->aliases[i] = k->aliases[i].name;
	memcpy(row->vp, mk->vp, KY_VP_LEN);
	if ((r = kms_seal(mk, aad, aadlen, pt, ptlen, &row->blob, &row->bloblen)) != 0)
		goto out;
	r = 0;
out:
	ky_kms_buf_free(pt, ptlen);
	return r;
}

int ky_kms_record_open(const struct ky_kms *kms, const struct ky_store_row *row, int flags,
                       struct ky_key **out)
{
	const struct ky_mk *mk;
	uint8_t aad[KMS_AAD_MAX];
	uint8_t *pt = NULL;
	size_t aadlen = 0, ptlen = 0;
	struct ky_key *k = NULL;
	int r = KY_ERR_INTERNAL;

	*out = NULL;
	if ((mk = kms_mk_for(kms, row->vp)) == NULL)
		return KY_ERR_MK_MISMATCH;
	if ((r = kms_aad(aad, &aadlen, KMS_LABEL_KEY, kms->instance, row->id, row->version,
	                 row->vp)) != 0)
		return r;
	if (row->bloblen < KMS_SEAL_OVERHEAD + 1 || row->blob == NULL ||
	    row->bloblen > KY_KMS_RECORD_MAX)
		return KY_ERR_RECORD_TAMPERED;
	ptlen = row->bloblen - KMS_SEAL_OVERHEAD;
	if ((pt = OPENSSL_secure_malloc(ptlen)) == NULL)
		return KY_ERR_NOMEM;
	if ((r = kms_open(mk, aad, aadlen, row->blob, row->bloblen, pt)) != 0)
		goto out;
	if ((r = ky_kms_record_decode(pt, ptlen, flags, &k)) != 0) {
		r = r == KY_ERR_NOMEM ? r : KY_ERR_RECORD_TAMPERED;
		goto out;
	}
	/* The clear columns serve queries; they must say what the authenticated copy says. */
	if (strcmp(k->id, row->id) != 0 || strcmp(k->name, row->name) != 0 ||
	    k->state != row->state || k->extractable != (row->extractable ? 1 : 0) ||
	    k->created != row->created || k->updated != row->updated ||
	    k->deleted != row->deleted || k->nversions != row->version ||
	    /* 0: a row from before the column, until it is written again (it only serves
	     * listings by state) */
	    (row->expires != 0 && k->expires != row->expires)) {
		r = KY_ERR_RECORD_TAMPERED;
		goto out;
	}
	/* Sealed by kyok, but not the copy the storage digest holds: an older one. */
	if (row->stale) {
		r = KY_ERR_RECORD_STALE;
		goto out;
	}
	k->seq = row->seq;
	k->rev = row->rev;
	memcpy(k->vp, row->vp, KY_VP_LEN);
	*out = k;
	k = NULL; /* transferred */
	r = 0;
out:
	ky_key_free(k);
	ky_kms_buf_free(pt, ptlen);
	return r;
}

/* ---- keys in the store ---- */

/* Records read per page by kms_aliases_free. */
#define KMS_ALIAS_SCAN_PAGE 512

/* Whether aliases (n of them) may be given to key id (NULL: a key not yet stored). The store's
 * alias index keeps an alias to one key, but it is not authenticated: a row deleted by hand
 * would let a second key take an alias the sealed record of a first still lists. So every
 * sealed record the unit opens is read first: one of another key that lists an alias is
 * KY_ERR_KEY_ALIAS_EXISTS when the index names that key (as the index would refuse it), and
 * KY_ERR_RECORD_TAMPERED when it does not (the index lost its row). A record that fails its
 * own checks fails this one too (its aliases cannot be known). */
static int kms_aliases_free(const struct ky_kms *kms, const char *id, const char *const *aliases,
                            size_t n, int64_t now)
{
	struct ky_key **keys = NULL;
	size_t nkeys = 0;
	uint64_t offset = 0, total = 0;
	char owner[KY_UUID_LEN + 1];
	int r = KY_ERR_INTERNAL;

	if (n == 0)
		return 0;
	do {
		ky_keys_free(keys, nkeys);
		keys = NULL;
		nkeys = 0;
		if ((r = ky_kms_key_list(kms, NULL, KMS_ALIAS_SCAN_PAGE, offset, now, &keys, &nkeys,
		                         &total, NULL)) != 0)
			goto out;
		for (size_t i = 0; i < nkeys; i++) {
			if (id != NULL && strcmp(keys[i]->id, id) == 0)
				continue;
			for (size_t j = 0; j < n; j++) {
				if (key_alias_at(keys[i], aliases[j]) < 0)
					continue;
				r = ky_store_alias_find(kms->store, aliases[j], owner);
				if (r == 0 && strcmp(owner, keys[i]->id) == 0)
					r = KY_ERR_KEY_ALIAS_EXISTS;
				else if (r == 0 || r == KY_ERR_NOT_FOUND)
					r = KY_ERR_RECORD_TAMPERED;
				goto out;
			}
		}
		offset += nkeys;
	} while (nkeys == KMS_ALIAS_SCAN_PAGE);
	r = 0;
out:
	ky_keys_free(keys, nkeys);
	return r;
}

int ky_kms_key_create(const struct ky_kms *kms, const struct ky_key_spec *spec, int64_t now,
                      struct ky_key **out)
{
	struct ky_key *k = NULL;
	struct ky_store_row row = {0};
	int r = KY_ERR_INTERNAL;

	*out = NULL;
	if ((r = ky_key_new(spec, now, &k)) != 0)
		goto out;
	if ((r = kms_aliases_free(kms, NULL, spec->aliases, spec->naliases, now)) != 0)
		goto out;
	if ((r = ky_kms_record_seal(kms, k, &row)) != 0)
		goto out;
	/* The limit counts the records this unit opens: under either register. */
	if (kms->next != NULL && kms->current != NULL)
		row.limit_vp = kms->current->vp;
	if ((r = ky_store_key_insert(kms->store, &row)) != 0)
		goto out;
	k->seq = row.seq;
	k->rev = row.rev;
	memcpy(k->vp, row.vp, KY_VP_LEN);
	*out = k;
	k = NULL; /* transferred */
	r = 0;
out:
	ky_store_row_release(&row);
	ky_key_free(k);
	return r;
}

int ky_kms_key_get(const struct ky_kms *kms, const char *id, int flags, int64_t now,
                   struct ky_key **out)
{
	struct ky_store_row row = {0};
	int r;

	*out = NULL;
	if ((r = ky_store_key_get(kms->store, id, &row)) != 0)
		return r;
	r = ky_kms_record_open(kms, &row, flags, out);
	ky_store_row_release(&row);
	if (r == 0)
		(*out)->state = ky_key_state_at(*out, now);
	return r;
}

int ky_kms_alias_resolve(const struct ky_kms *kms, const char *alias, int64_t now,
                         char id[KY_UUID_LEN + 1])
{
	struct ky_key *k = NULL;
	int r = KY_ERR_INTERNAL;

	if ((r = ky_store_alias_find(kms->store, alias, id)) != 0)
		goto out;
	if ((r = ky_kms_key_get(kms, id, KY_KMS_METADATA_ONLY, now, &k)) != 0) {
		/* The index names a key that is gone: altered, as the key's purge drops its
		 * aliases in its transaction. */
		if (r == KY_ERR_NOT_FOUND)
			r = KY_ERR_RECORD_TAMPERED;
		goto out;
	}
	/* The index only finds the record: the sealed copy says which aliases it has. */
	if (key_alias_at(k, alias) < 0) {
		r = KY_ERR_RECORD_TAMPERED;
		goto out;
	}
	r = 0;
out:
	if (r != 0)
		id[0] = '\0';
	ky_key_free(k);
	return r;
}

int ky_kms_key_list(const struct ky_kms *kms, const struct ky_store_filter *f, uint32_t limit,
                    uint64_t offset, int64_t now, struct ky_key ***keys, size_t *n, uint64_t *total,
                    struct ky_kms_withheld *wh)
{
	struct ky_store_row *rows = NULL;
	struct ky_key **v = NULL;
	size_t nrows = 0, i = 0, kept = 0;
	int r = KY_ERR_INTERNAL;

	struct ky_store_filter mine = {.states = 0, .extractable = -1};

	*keys = NULL;
	*n = 0;
	if (wh != NULL)
		memset(wh, 0, sizeof(*wh));
	/* Only records this unit's registers open: those under any other master key were
	 * crypto-shredded (zeroize, then a new master key) and are nobody's keys any more. */
	if (f != NULL)
		mine = *f;
	mine.now = now;
	mine.vp_a = kms->current ? kms->current->vp : (kms->next ? kms->next->vp : NULL);
	mine.vp_b = kms->next ? kms->next->vp : NULL;
	if (mine.vp_a == NULL)
		return KY_ERR_MK_MISMATCH;
	if ((r = ky_store_key_count(kms->store, &mine, total)) != 0)
		return r;
	if ((r = ky_store_key_list(kms->store, &mine, limit, offset, &rows, &nrows)) != 0)
		return r;
	if (nrows && (v = calloc(nrows, sizeof(*v))) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	for (i = 0; i < nrows; i++) {
		r = rows[i].fault != 0
		        ? rows[i].fault
		        : ky_kms_record_open(kms, &rows[i], KY_KMS_METADATA_ONLY, &v[kept]);
		if (r != 0 && wh != NULL &&
		    (r == KY_ERR_RECORD_TAMPERED || r == KY_ERR_RECORD_STALE)) {
			/* This record only: the others are still what was last written. */
			if (wh->n < KY_KMS_WITHHELD_IDS) {
				snprintf(wh->ids[wh->n], sizeof(wh->ids[wh->n]), "%s", rows[i].id);
				wh->errs[wh->n] = r;
			}
			wh->n++;
			continue;
		}
		if (r != 0)
			goto out;
		v[kept]->state = ky_key_state_at(v[kept], now);
		kept++;
	}
	*keys = v;
	*n = kept;
	v = NULL; /* transferred */
	r = 0;
out:
	ky_keys_free(v, kept);
	ky_store_rows_free(rows, nrows);
	return r;
}

int ky_kms_key_act(const struct ky_kms *kms, const char *id, const struct ky_key_act *a,
                   int64_t now, struct ky_key **out)
{
	struct ky_store_row row = {0};
	struct ky_key *k = NULL;
	int r = KY_ERR_INTERNAL;

	if (out)
		*out = NULL;
	if (a->action == KY_KEY_ALIAS_ADD && a->alias != NULL &&
	    (r = kms_aliases_free(kms, id, &a->alias, 1, now)) != 0)
		goto out;
	for (int attempt = 0; attempt < KMS_RETRIES; attempt++) {
		ky_key_free(k);
		k = NULL;
		ky_store_row_release(&row);
		if ((r = ky_store_key_get(kms->store, id, &row)) != 0)
			goto out;
		if ((r = ky_kms_record_open(kms, &row, 0, &k)) != 0)
			goto out;
		if ((r = ky_key_apply(k, a, now)) != 0)
			goto out;
		if (a->action == KY_KEY_PURGE) {
			r = ky_store_key_delete(kms->store, id, row.rev);
			ky_key_free(k);
			k = NULL;
		} else {
			int64_t rev = row.rev;
			if ((r = ky_kms_record_seal(kms, k, &row)) != 0)
				goto out;
			row.rev = rev;
			if ((r = ky_store_key_update(kms->store, &row)) == 0) {
				k->seq = row.seq;
				k->rev = row.rev;
				memcpy(k->vp, row.vp, KY_VP_LEN);
			}
		}
		if (r != KY_ERR_CONFLICT)
			break;
	}
	if (r != 0)
		goto out;
	if (out) {
		*out = k;
		k = NULL; /* transferred */
	}
out:
	ky_store_row_release(&row);
	ky_key_free(k);
	return r;
}

/* ---- secrets ---- */

/* create_only: KY_ERR_EXISTS when the secret is there already (never replaced). */
static int kms_secret_write(const struct ky_kms *kms, const char *name, const uint8_t *p, size_t n,
                            int64_t now, int create_only)
{
	const struct ky_mk *mk = kms_mk_write(kms);
	struct ky_store_secret sec = {0}, old = {0};
	uint8_t aad[KMS_AAD_MAX];
	size_t aadlen = 0, nl = name ? strlen(name) : 0;
	int64_t expect = 0;
	int r = KY_ERR_INTERNAL;

	if (mk == NULL)
		return KY_ERR_REGISTER_STATE;
	if (nl == 0 || nl > KY_SECRET_NAME_MAX || n == 0 || n > KMS_SECRET_MAX)
		return KY_ERR_USAGE;
	for (int attempt = 0; attempt < KMS_RETRIES; attempt++) {
		ky_store_secret_release(&old);
		ky_store_secret_release(&sec);
		memset(&sec, 0, sizeof(sec));
		r = ky_store_secret_get(kms->store, name, &old);
		if (r != 0 && r != KY_ERR_NOT_FOUND)
			goto out;
		/* A record put back from an older copy is refused when read; written over, the
		 * evidence would go without the administrators' storage-accept. */
		if (r == 0 && old.stale) {
			r = KY_ERR_RECORD_STALE;
			goto out;
		}
		if (r == 0 && create_only) {
			r = KY_ERR_EXISTS;
			goto out;
		}
		expect = r == 0 ? old.rev : 0;
		memcpy(sec.name, name, nl + 1);
		sec.created = r == 0 ? old.created : now;
		sec.updated = now;
		memcpy(sec.vp, mk->vp, KY_VP_LEN);
		if ((r = kms_aad(aad, &aadlen, KMS_LABEL_SECRET, kms->instance, name, 0, mk->vp)) !=
		        0 ||
		    (r = kms_seal(mk, aad, aadlen, p, n, &sec.blob, &sec.bloblen)) != 0)
			goto out;
		r = ky_store_secret_put(kms->store, &sec, expect);
		if (create_only || (r != KY_ERR_CONFLICT && !(r == KY_ERR_EXISTS && expect == 0)))
			break;
	}
out:
	ky_store_secret_release(&old);
	ky_store_secret_release(&sec);
	return r;
}

int ky_kms_secret_put(const struct ky_kms *kms, const char *name, const uint8_t *p, size_t n,
                      int64_t now)
{
	return kms_secret_write(kms, name, p, n, now, 0);
}

int ky_kms_secret_create(const struct ky_kms *kms, const char *name, const uint8_t *p, size_t n,
                         int64_t now)
{
	return kms_secret_write(kms, name, p, n, now, 1);
}

int ky_kms_secret_put_rev(const struct ky_kms *kms, const char *name, const uint8_t *p, size_t n,
                          int64_t now, int64_t expect_rev)
{
	const struct ky_mk *mk = kms_mk_write(kms);
	struct ky_store_secret sec = {0}, old = {0};
	uint8_t aad[KMS_AAD_MAX];
	size_t aadlen = 0, nl = name ? strlen(name) : 0;
	int r = KY_ERR_INTERNAL;

	if (mk == NULL)
		return KY_ERR_REGISTER_STATE;
	if (nl == 0 || nl > KY_SECRET_NAME_MAX || n == 0 || n > KMS_SECRET_MAX || expect_rev < 0)
		return KY_ERR_USAGE;
	/* The row as it is now, for its creation time; the store's own compare-and-swap below
	 * is what decides, this look only saves sealing for a write that would lose. */
	r = ky_store_secret_get(kms->store, name, &old);
	if (r == KY_ERR_NOT_FOUND) {
		if (expect_rev != 0) {
			r = KY_ERR_CONFLICT;
			goto out;
		}
	} else if (r != 0) {
		goto out;
	} else if (old.rev != expect_rev) {
		r = KY_ERR_CONFLICT;
		goto out;
	}
	memcpy(sec.name, name, nl + 1);
	sec.created = expect_rev != 0 ? old.created : now;
	sec.updated = now;
	memcpy(sec.vp, mk->vp, KY_VP_LEN);
	if ((r = kms_aad(aad, &aadlen, KMS_LABEL_SECRET, kms->instance, name, 0, mk->vp)) != 0 ||
	    (r = kms_seal(mk, aad, aadlen, p, n, &sec.blob, &sec.bloblen)) != 0)
		goto out;
	r = ky_store_secret_put(kms->store, &sec, expect_rev);
	if (r == KY_ERR_EXISTS || r == KY_ERR_NOT_FOUND) {
		r = KY_ERR_CONFLICT; /* made, or removed, by another writer since */
		goto out;
	}
	if (r != 0)
		goto out;
	r = 0;
out:
	ky_store_secret_release(&old);
	ky_store_secret_release(&sec);
	return r;
}

int ky_kms_secret_get_rev(const struct ky_kms *kms, const char *name, uint8_t **p, size_t *n,
                          int64_t *rev)
{
	struct ky_store_secret sec = {0};
	const struct ky_mk *mk;
	uint8_t aad[KMS_AAD_MAX];
	uint8_t *pt = NULL;
	size_t aadlen = 0, ptlen = 0;
	int r = KY_ERR_INTERNAL;

	*p = NULL;
	*n = 0;
	*rev = 0;
	if ((r = ky_store_secret_get(kms->store, name, &sec)) != 0)
		return r;
	if ((mk = kms_mk_for(kms, sec.vp)) == NULL) {
		r = KY_ERR_MK_MISMATCH;
		goto out;
	}
	if ((r = kms_aad(aad, &aadlen, KMS_LABEL_SECRET, kms->instance, sec.name, 0, sec.vp)) != 0)
		goto out;
	if (sec.bloblen <= KMS_SEAL_OVERHEAD) {
		r = KY_ERR_RECORD_TAMPERED;
		goto out;
	}
	ptlen = sec.bloblen - KMS_SEAL_OVERHEAD;
	if ((pt = OPENSSL_secure_malloc(ptlen)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = kms_open(mk, aad, aadlen, sec.blob, sec.bloblen, pt)) != 0)
		goto out;
	if (sec.stale) {
		r = KY_ERR_RECORD_STALE;
		goto out;
	}
	*p = pt;
	*n = ptlen;
	pt = NULL; /* transferred */
	*rev = sec.rev;
	r = 0;
out:
	ky_kms_buf_free(pt, ptlen);
	ky_store_secret_release(&sec);
	return r;
}

int ky_kms_secret_get(const struct ky_kms *kms, const char *name, uint8_t **p, size_t *n)
{
	int64_t rev = 0;

	return ky_kms_secret_get_rev(kms, name, p, n, &rev);
}

/* ---- re-encipherment ---- */

int ky_kms_count_under(struct ky_store *s, const uint8_t vp[KY_VP_LEN], uint64_t *n)
{
	uint64_t a = 0, b = 0;
	int r;

	*n = 0;
	if ((r = ky_store_vp_count(s, KY_STORE_KEYS, vp, &a)) != 0 ||
	    (r = ky_store_vp_count(s, KY_STORE_SECRETS, vp, &b)) != 0)
		return r;
	*n = a + b;
	return 0;
}

/* Re-seals rows[0..n) from old to new in place, dropping (and counting) rows that do not
 * open under old. Returns the number of rows kept in *kept. */
static int reenc_batch(enum ky_store_table t, const char *instance, const struct ky_mk *old,
                       const struct ky_mk *new_mk, struct ky_store_vprow *rows, size_t n,
                       uint8_t **buf, size_t *bufcap, size_t *kept, struct ky_kms_reenc *st)
{
	const char *label = t == KY_STORE_KEYS ? KMS_LABEL_KEY : KMS_LABEL_SECRET;
	uint8_t aad[KMS_AAD_MAX];
	size_t aadlen, k = 0;
	int r;

	for (size_t i = 0; i < n; i++) {
		struct ky_store_vprow *w = &rows[i];
		uint8_t *nb = NULL;
		size_t nbl = 0, ptlen;

		if (w->bloblen <= KMS_SEAL_OVERHEAD || w->bloblen > KY_KMS_RECORD_MAX) {
			r = KY_ERR_RECORD_TAMPERED;
			goto failed;
		}
		ptlen = w->bloblen - KMS_SEAL_OVERHEAD;
		if (ptlen > *bufcap) {
			ky_kms_buf_free(*buf, *bufcap);
			*bufcap = 0;
			if ((*buf = OPENSSL_secure_malloc(ptlen)) == NULL)
				return KY_ERR_NOMEM;
			*bufcap = ptlen;
		}
		if ((r = kms_aad(aad, &aadlen, label, instance, w->name, w->version, old->vp)) != 0)
			return r;
		if ((r = kms_open(old, aad, aadlen, w->blob, w->bloblen, *buf)) != 0) {
			if (r != KY_ERR_RECORD_TAMPERED)
				return r;
			goto failed;
		}
		if ((r = kms_aad(aad, &aadlen, label, instance, w->name, w->version, new_mk->vp)) !=
		        0 ||
		    (r = kms_seal(new_mk, aad, aadlen, *buf, ptlen, &nb, &nbl)) != 0) {
			OPENSSL_cleanse(*buf, ptlen);
			return r;
		}
		OPENSSL_cleanse(*buf, ptlen);
		free(w->blob);
		w->blob = nb;
		w->bloblen = nbl;
		if (k != i) {
			struct ky_store_vprow tmp = rows[k];
			rows[k] = *w;
			*w = tmp;
		}
		k++;
		continue;
	failed:
		if (st->failed++ == 0)
			memcpy(st->failed_name, w->name, sizeof(st->failed_name));
	}
	*kept = k;
	return 0;
}

int ky_kms_reencipher(struct ky_store *s, const char *instance, const struct ky_mk *old,
                      const struct ky_mk *new_mk, size_t batch, ky_kms_progress_fn fn, void *arg,
                      struct ky_kms_reenc *st)
{
	static const enum ky_store_table tables[] = {KY_STORE_KEYS, KY_STORE_SECRETS};
	struct ky_store_vprow *rows = NULL;
	uint8_t *buf = NULL;
	size_t nrows = 0, bufcap = 0;
	uint64_t start = 0, left = 0;
	int r = KY_ERR_INTERNAL;

	memset(st, 0, sizeof(*st));
	if (batch == 0)
		batch = KY_KMS_BATCH_DEFAULT;
	if (memcmp(old->vp, new_mk->vp, KY_VP_LEN) == 0)
		return KY_ERR_SAME_KEY;
	if ((r = ky_kms_count_under(s, old->vp, &start)) != 0)
		return r;
	st->remaining = start;

	/* Rounds: a row a concurrent writer re-wrote under the old key, or inserted under it,
	 * is picked up by the next round. A round that finds only failed rows ends the run. */
	for (int round = 0; round < KMS_RETRIES; round++) {
		st->failed = 0;
		for (size_t ti = 0; ti < sizeof(tables) / sizeof(tables[0]); ti++) {
			char after[KY_SECRET_NAME_MAX + 1] = "";
			for (;;) {
				size_t kept = 0, swapped = 0;
				if ((r = ky_store_vp_fetch(s, tables[ti], old->vp, after, batch,
				                           &rows, &nrows)) != 0)
					goto out;
				if (nrows == 0) {
					ky_store_vprows_free(rows, 0);
					rows = NULL;
					break;
				}
				memcpy(after, rows[nrows - 1].name, sizeof(after));
				if ((r = reenc_batch(tables[ti], instance, old, new_mk, rows, nrows,
				                     &buf, &bufcap, &kept, st)) != 0)
					goto out;
				if ((r = ky_store_vp_swap(s, tables[ti], old->vp, new_mk->vp, rows,
				                          kept, &swapped)) != 0)
					goto out;
				ky_store_vprows_free(rows, nrows);
				rows = NULL;
				nrows = 0;
				st->done += swapped;
				st->raced += kept - swapped;
				st->batches++;
				st->remaining = start > st->done ? start - st->done : 0;
				if (fn != NULL && fn(st, arg) != 0) {
					r = KY_ERR_CANCELLED;
					goto out;
				}
			}
		}
		if ((r = ky_kms_count_under(s, old->vp, &left)) != 0)
			goto out;
		st->remaining = left;
		if (left <= st->failed)
			break;
	}
	if (st->failed > 0)
		r = KY_ERR_RECORD_TAMPERED;
	else if (st->remaining > 0)
		r = KY_ERR_CONFLICT;
	else
		r = 0;
out:
	ky_store_vprows_free(rows, nrows);
	ky_kms_buf_free(buf, bufcap);
	return r;
}
