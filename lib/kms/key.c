/* Key objects: creation, the state rules, and the authoritative record's encoding (encode,
 * decode). The record sealed under a master key, keys and secrets in the store, and
 * re-encipherment under a new master key: key_store.c.
 *
 * Record plaintext, version 2 (integers big-endian, str = u16 length + bytes):
 *   u8 2 | str id | str name | str description | u8 extractable | u8 imported | u8 state |
 *   u8 dual_auth | u32 rotation_months | i64 created | i64 updated | i64 expires |
 *   i64 deleted | str created_by | str deleted_by | str deletion_set_by |
 *   i64 deletion_set_at | u32 nversions | nversions x (u32 n | str id | i64 created |
 *   u16 len | material) | u8 naliases | naliases x (str alias | str created_by | i64 created) |
 *   str key_ring
 * Version 1 is version 2 without the aliases and the key ring (records written before them):
 * read as a key without aliases in the ring 'default', and written as version 2 the next time
 * the key changes.
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

#define KMS_RECORD_FORMAT    2
#define KMS_RECORD_FORMAT_V1 1 /* no aliases */

/* ---- master keys ---- */

int ky_mk_new(const uint8_t key[KY_MK_LEN], struct ky_mk **out)
{
	struct ky_mk *mk = NULL;
	int r = KY_ERR_INTERNAL;

	*out = NULL;
	if ((mk = OPENSSL_secure_zalloc(sizeof(*mk))) == NULL)
		return KY_ERR_NOMEM;
	memcpy(mk->key, key, KY_MK_LEN);
	if ((r = ky_vp(mk->key, mk->vp)) != 0)
		goto out;
	*out = mk;
	mk = NULL; /* transferred */
	r = 0;
out:
	ky_mk_free(mk);
	return r;
}

void ky_mk_free(struct ky_mk *mk)
{
	OPENSSL_secure_clear_free(mk, sizeof(*mk));
}

/* ---- key objects ---- */

void ky_key_free(struct ky_key *k)
{
	if (k == NULL)
		return;
	for (uint32_t i = 0; i < k->nversions && k->versions; i++)
		if (k->versions[i].material)
			OPENSSL_secure_clear_free(k->versions[i].material, k->versions[i].len);
	free(k->versions);
	OPENSSL_cleanse(k, sizeof(*k));
	free(k);
}

void ky_keys_free(struct ky_key **keys, size_t n)
{
	if (keys == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		ky_key_free(keys[i]);
	free(keys);
}

static int key_text_ok(const char *s, size_t min, size_t max)
{
	size_t n = s ? strlen(s) : 0;

	if (n < min || n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

static int key_material_ok(int extractable, size_t len)
{
	if (extractable)
		return len >= 1 && len <= KY_KEY_PAYLOAD_MAX;
	return len == 16 || len == 24 || len == 32;
}

bool ky_key_alias_valid(const char *alias)
{
	size_t n = alias ? strnlen(alias, KY_KEY_ALIAS_MAX + 1) : 0;

	/* "registrations": /keys/registrations is a Key Protect endpoint, not a key */
	if (n < 2 || n > KY_KEY_ALIAS_MAX || ky_uuid_valid(alias) ||
	    strcmp(alias, "registrations") == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = alias[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return false;
	}
	return true;
}

/* The index of alias among k's aliases, -1 when k has no such alias (case sensitive). */
int key_alias_at(const struct ky_key *k, const char *alias)
{
	for (uint32_t i = 0; i < k->naliases; i++)
		if (strcmp(k->aliases[i].name, alias) == 0)
			return (int)i;
	return -1;
}

/* The rules for adding alias to k. */
static int key_alias_add_check(const struct ky_key *k, const char *alias)
{
	if (!ky_key_alias_valid(alias))
		return KY_ERR_KEY_ALIAS_INVALID;
	if (key_alias_at(k, alias) >= 0)
		return KY_ERR_KEY_ALIAS_EXISTS;
	if (k->naliases >= KY_KEY_ALIASES_MAX)
		return KY_ERR_KEY_ALIAS_QUOTA;
	return 0;
}

static void key_alias_add(struct ky_key *k, const char *alias, const char *actor, int64_t now)
{
	struct ky_key_alias *a = &k->aliases[k->naliases++];

	snprintf(a->name, sizeof(a->name), "%s", alias);
	snprintf(a->created_by, sizeof(a->created_by), "%s", actor ? actor : "");
	a->created = now;
}

/* Appends a version: payload copied, or 32 random bytes. */
static int key_add_version(struct ky_key *k, const uint8_t *payload, size_t len, int64_t now)
{
	struct ky_key_version *nv, *v;
	int r;

	if (k->nversions >= KY_KEY_VERSIONS_MAX)
		return KY_ERR_TOO_LARGE;
	if ((nv = realloc(k->versions, (k->nversions + 1) * sizeof(*nv))) == NULL)
		return KY_ERR_NOMEM;
	k->versions = nv;
	v = &nv[k->nversions];
	memset(v, 0, sizeof(*v));
	v->n = k->nversions + 1;
	v->created = now;
	v->len = payload ? len : 32;
	if ((r = ky_uuid_new(v->id)) != 0)
		return r;
	if ((v->material = OPENSSL_secure_malloc(v->len)) == NULL)
		return KY_ERR_NOMEM;
	if (payload)
		memcpy(v->material, payload, len);
	else if (RAND_bytes(v->material, (int)v->len) != 1) {
		OPENSSL_secure_clear_free(v->material, v->len);
		v->material = NULL;
		return KY_ERR_CRYPTO;
	}
	k->nversions++;
	return 0;
}

int ky_key_new(const struct ky_key_spec *spec, int64_t now, struct ky_key **out)
{
	struct ky_key *k = NULL;
	int r = KY_ERR_INTERNAL;

	*out = NULL;
	if (!key_text_ok(spec->name, 2, KY_KEY_NAME_MAX) ||
	    (spec->description && !key_text_ok(spec->description, 0, KY_KEY_DESC_MAX)) ||
	    (spec->actor && !key_text_ok(spec->actor, 0, KY_KEY_ACTOR_MAX)))
		return KY_ERR_KEY_NAME;
	if (spec->payload && !key_material_ok(spec->extractable, spec->len))
		return KY_ERR_KEY_MATERIAL;
	if (spec->expires < 0)
		return KY_ERR_USAGE;
	if ((spec->naliases > 0 && spec->aliases == NULL) ||
	    (spec->ring != NULL && !ky_key_ring_valid(spec->ring)))
		return KY_ERR_USAGE;
	if ((k = calloc(1, sizeof(*k))) == NULL)
		return KY_ERR_NOMEM;
	for (size_t i = 0; i < spec->naliases; i++) {
		if ((r = key_alias_add_check(k, spec->aliases[i])) != 0)
			goto out;
		key_alias_add(k, spec->aliases[i], spec->actor, now);
	}
	if ((r = ky_uuid_new(k->id)) != 0)
		goto out;
	strcpy(k->name, spec->name);
	if (spec->description)
		strcpy(k->description, spec->description);
	if (spec->actor)
		strcpy(k->created_by, spec->actor);
	k->extractable = spec->extractable ? 1 : 0;
	k->imported = spec->payload != NULL;
	snprintf(k->ring, sizeof(k->ring), "%s", spec->ring ? spec->ring : KY_KEY_RING_DEFAULT);
	k->state = KY_KEY_ACTIVE;
	k->created = k->updated = now;
	k->expires = spec->expires;
	if ((r = key_add_version(k, spec->payload, spec->len, now)) != 0)
		goto out;
	*out = k;
	k = NULL; /* transferred */
	r = 0;
out:
	ky_key_free(k);
	return r;
}

int ky_key_state_at(const struct ky_key *k, int64_t now)
{
	if (k->state == KY_KEY_ACTIVE && k->expires > 0 && now >= k->expires)
		return KY_KEY_DEACTIVATED;
	return k->state;
}

int ky_key_check(const struct ky_key *k, const struct ky_key_act *a, int64_t now)
{
	int st = ky_key_state_at(k, now);
	int destroyed = st == KY_KEY_DESTROYED;

	switch (a->action) {
	case KY_KEY_ENABLE:
		if (destroyed)
			return KY_ERR_KEY_DESTROYED;
		return st == KY_KEY_SUSPENDED ? 0 : KY_ERR_KEY_STATE;
	case KY_KEY_DISABLE:
		if (destroyed)
			return KY_ERR_KEY_DESTROYED;
		return st == KY_KEY_ACTIVE ? 0 : KY_ERR_KEY_STATE;
	case KY_KEY_ROTATE:
		if (k->extractable)
			return KY_ERR_KEY_NOT_ROOT;
		if (destroyed)
			return KY_ERR_KEY_DESTROYED;
		if (st != KY_KEY_ACTIVE)
			return KY_ERR_KEY_NOT_ACTIVE;
		if (k->imported != (a->payload != NULL))
			return KY_ERR_ROTATE_MATERIAL;
		if (a->payload && !key_material_ok(0, a->len))
			return KY_ERR_KEY_MATERIAL;
		if (k->nversions >= KY_KEY_VERSIONS_MAX)
			return KY_ERR_TOO_LARGE;
		return 0;
	case KY_KEY_SET_DELETION:
	case KY_KEY_UNSET_DELETION:
		if (destroyed)
			return KY_ERR_KEY_DESTROYED;
		if (!k->dual_auth)
			return KY_ERR_DUAL_AUTH_OFF;
		if (!key_text_ok(a->actor, 1, KY_KEY_ACTOR_MAX))
			return KY_ERR_USAGE;
		return 0;
	case KY_KEY_DELETE:
		if (destroyed)
			return KY_ERR_KEY_DESTROYED;
		if (a->actor && !key_text_ok(a->actor, 0, KY_KEY_ACTOR_MAX))
			return KY_ERR_USAGE;
		if (k->dual_auth) {
			if (k->deletion_set_by[0] == '\0' ||
			    now >= k->deletion_set_at + KY_KMS_DUAL_AUTH_VALID)
				return KY_ERR_DUAL_AUTH_REQUIRED;
			if (a->actor == NULL || a->actor[0] == '\0')
				return KY_ERR_USAGE;
			if (strcmp(a->actor, k->deletion_set_by) == 0)
				return KY_ERR_DUAL_AUTH_SAME_USER;
		}
		return 0;
	case KY_KEY_RESTORE:
		if (!destroyed)
			return KY_ERR_KEY_NOT_DESTROYED;
		if (now >= k->deleted + KY_KMS_RESTORE_WINDOW)
			return KY_ERR_RESTORE_EXPIRED;
		return 0;
	case KY_KEY_PURGE:
		if (!destroyed)
			return KY_ERR_KEY_NOT_DESTROYED;
		if (now < k->deleted + KY_KMS_PURGE_DELAY)
			return KY_ERR_PURGE_TOO_EARLY;
		return 0;
	case KY_KEY_SET_POLICY:
		if (destroyed)
			return KY_ERR_KEY_DESTROYED;
		if (a->rotation_months < -1 || a->rotation_months > 12 || a->dual_auth < -1 ||
		    a->dual_auth > 1)
			return KY_ERR_USAGE;
		if (a->rotation_months > 0 && k->extractable)
			return KY_ERR_KEY_NOT_ROOT;
		return 0;
	case KY_KEY_ALIAS_ADD:
		if (destroyed)
			return KY_ERR_KEY_DESTROYED;
		if (a->actor && !key_text_ok(a->actor, 0, KY_KEY_ACTOR_MAX))
			return KY_ERR_USAGE;
		return key_alias_add_check(k, a->alias);
	case KY_KEY_ALIAS_DELETE:
		if (a->alias == NULL || key_alias_at(k, a->alias) < 0)
			return KY_ERR_KEY_ALIAS_NOT_FOUND;
		return 0;
	case KY_KEY_SET_RING:
		if (!ky_key_ring_valid(a->ring))
			return KY_ERR_KEY_RING_INVALID;
		return 0;
	}
	return KY_ERR_USAGE;
}

int ky_key_apply(struct ky_key *k, const struct ky_key_act *a, int64_t now)
{
	int r;

	if ((r = ky_key_check(k, a, now)) != 0)
		return r;
	switch (a->action) {
	case KY_KEY_ENABLE:
		k->state = KY_KEY_ACTIVE;
		break;
	case KY_KEY_DISABLE:
		k->state = KY_KEY_SUSPENDED;
		break;
	case KY_KEY_ROTATE:
		if ((r = key_add_version(k, a->payload, a->len, now)) != 0)
			return r;
		break;
	case KY_KEY_SET_DELETION:
		strcpy(k->deletion_set_by, a->actor);
		k->deletion_set_at = now;
		break;
	case KY_KEY_UNSET_DELETION:
		k->deletion_set_by[0] = '\0';
		k->deletion_set_at = 0;
		break;
	case KY_KEY_DELETE:
		k->state = KY_KEY_DESTROYED;
		k->deleted = now;
		strcpy(k->deleted_by, a->actor ? a->actor : "");
		k->deletion_set_by[0] = '\0';
		k->deletion_set_at = 0;
		break;
	case KY_KEY_RESTORE:
		k->state = KY_KEY_ACTIVE;
		k->deleted = 0;
		k->deleted_by[0] = '\0';
		break;
	case KY_KEY_PURGE:
		return 0;
	case KY_KEY_SET_POLICY:
		if (a->rotation_months >= 0)
			k->rotation_months = (uint32_t)a->rotation_months;
		if (a->dual_auth >= 0) {
			k->dual_auth = a->dual_auth;
			if (!k->dual_auth) {
				k->deletion_set_by[0] = '\0';
				k->deletion_set_at = 0;
			}
		}
		break;
	case KY_KEY_ALIAS_ADD:
		key_alias_add(k, a->alias, a->actor, now);
		break;
	case KY_KEY_ALIAS_DELETE: {
		int at = key_alias_at(k, a->alias);
		memmove(&k->aliases[at], &k->aliases[at + 1],
		        (k->naliases - (uint32_t)at - 1) * sizeof(k->aliases[0]));
		k->naliases--;
		memset(&k->aliases[k->naliases], 0, sizeof(k->aliases[0]));
		break;
	}
	case KY_KEY_SET_RING:
		snprintf(k->ring, sizeof(k->ring), "%s", a->ring);
		break;
	}
	k->updated = now;
	return 0;
}

/* ---- record encoding ---- */

struct enc {
	uint8_t *p; /* NULL: measuring pass */
	size_t len;
};

static void enc_put(struct enc *e, const void *p, size_t n)
{
	if (e->p && n)
		memcpy(e->p + e->len, p, n);
	e->len += n;
}

static void enc_u8(struct enc *e, uint8_t v)
{
	enc_put(e, &v, 1);
}

static void enc_u16(struct enc *e, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	enc_put(e, b, 2);
}

static void enc_u32(struct enc *e, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	enc_put(e, b, 4);
}

static void enc_i64(struct enc *e, int64_t v)
{
	enc_u32(e, (uint32_t)((uint64_t)v >> 32));
	enc_u32(e, (uint32_t)(uint64_t)v);
}

static void enc_str(struct enc *e, const char *s)
{
	size_t n = strlen(s);
	enc_u16(e, (uint16_t)n);
	enc_put(e, s, n);
}

static void key_encode(struct enc *e, const struct ky_key *k)
{
	enc_u8(e, KMS_RECORD_FORMAT);
	enc_str(e, k->id);
	enc_str(e, k->name);
	enc_str(e, k->description);
	enc_u8(e, (uint8_t)(k->extractable ? 1 : 0));
	enc_u8(e, (uint8_t)(k->imported ? 1 : 0));
	enc_u8(e, (uint8_t)k->state);
	enc_u8(e, (uint8_t)(k->dual_auth ? 1 : 0));
	enc_u32(e, k->rotation_months);
	enc_i64(e, k->created);
	enc_i64(e, k->updated);
	enc_i64(e, k->expires);
	enc_i64(e, k->deleted);
	enc_str(e, k->created_by);
	enc_str(e, k->deleted_by);
	enc_str(e, k->deletion_set_by);
	enc_i64(e, k->deletion_set_at);
	enc_u32(e, k->nversions);
	for (uint32_t i = 0; i < k->nversions; i++) {
		const struct ky_key_version *v = &k->versions[i];
		enc_u32(e, v->n);
		enc_str(e, v->id);
		enc_i64(e, v->created);
		enc_u16(e, (uint16_t)v->len);
		enc_put(e, v->material, v->len);
	}
	enc_u8(e, (uint8_t)k->naliases);
	for (uint32_t i = 0; i < k->naliases; i++) {
		enc_str(e, k->aliases[i].name);
		enc_str(e, k->aliases[i].created_by);
		enc_i64(e, k->aliases[i].created);
	}
	enc_str(e, k->ring[0] ? k->ring : KY_KEY_RING_DEFAULT);
}

int ky_kms_record_encode(const struct ky_key *k, uint8_t **out, size_t *len)
{
	struct enc e = {0};

	*out = NULL;
	*len = 0;
	if (k->nversions == 0 || k->nversions > KY_KEY_VERSIONS_MAX ||
	    k->naliases > KY_KEY_ALIASES_MAX)
		return KY_ERR_USAGE;
	for (uint32_t i = 0; i < k->nversions; i++)
		if (k->versions[i].material == NULL || k->versions[i].len > UINT16_MAX)
			return KY_ERR_USAGE; /* a metadata-only copy is never stored */
	key_encode(&e, k);
	if ((e.p = OPENSSL_secure_malloc(e.len)) == NULL)
		return KY_ERR_NOMEM;
	size_t n = e.len;
	e.len = 0;
	key_encode(&e, k);
	if (e.len != n) {
		OPENSSL_secure_clear_free(e.p, n);
		return KY_ERR_INTERNAL;
	}
	*out = e.p;
	*len = n;
	return 0;
}

void ky_kms_buf_free(uint8_t *p, size_t n)
{
	if (p != NULL)
		OPENSSL_secure_clear_free(p, n);
}

struct dec {
	const uint8_t *p;
	size_t n;
	size_t off;
	int bad;
};

static const uint8_t *dec_take(struct dec *d, size_t n)
{
	const uint8_t *q;

	if (d->bad || d->n - d->off < n) {
		d->bad = 1;
		return NULL;
	}
	q = d->p + d->off;
	d->off += n;
	return q;
}

static uint8_t dec_u8(struct dec *d)
{
	const uint8_t *q = dec_take(d, 1);
	return q ? q[0] : 0;
}

static uint16_t dec_u16(struct dec *d)
{
	const uint8_t *q = dec_take(d, 2);
	return q ? (uint16_t)(q[0] << 8 | q[1]) : 0;
}

static uint32_t dec_u32(struct dec *d)
{
	const uint8_t *q = dec_take(d, 4);
	return q ? (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3] : 0;
}

static int64_t dec_i64(struct dec *d)
{
	uint64_t hi = dec_u32(d);
	uint64_t lo = dec_u32(d);
	return (int64_t)(hi << 32 | lo);
}

/* A string of at most max bytes, no NUL inside. */
static void dec_str(struct dec *d, char *out, size_t max)
{
	uint16_t n = dec_u16(d);
	const uint8_t *q;

	out[0] = '\0';
	if (n > max) {
		d->bad = 1;
		return;
	}
	if ((q = dec_take(d, n)) == NULL)
		return;
	if (memchr(q, 0, n) != NULL) {
		d->bad = 1;
		return;
	}
	memcpy(out, q, n);
	out[n] = '\0';
}

static int dec_state_ok(int st)
{
	return st == KY_KEY_ACTIVE || st == KY_KEY_SUSPENDED || st == KY_KEY_DEACTIVATED ||
	       st == KY_KEY_DESTROYED;
}

int ky_kms_record_decode(const uint8_t *p, size_t n, int flags, struct ky_key **out)
{
	struct dec d = {.p = p, .n = n};
	struct ky_key *k = NULL;
	uint8_t b, format;
	int r = KY_ERR_MALFORMED;

	*out = NULL;
	if ((k = calloc(1, sizeof(*k))) == NULL)
		return KY_ERR_NOMEM;
	format = dec_u8(&d);
	if (format != KMS_RECORD_FORMAT && format != KMS_RECORD_FORMAT_V1)
		goto out;
	dec_str(&d, k->id, KY_UUID_LEN);
	dec_str(&d, k->name, KY_KEY_NAME_MAX);
	dec_str(&d, k->description, KY_KEY_DESC_MAX);
	if ((b = dec_u8(&d)) > 1)
		goto out;
	k->extractable = b;
	if ((b = dec_u8(&d)) > 1)
		goto out;
	k->imported = b;
	k->state = dec_u8(&d);
	if ((b = dec_u8(&d)) > 1)
		goto out;
	k->dual_auth = b;
	k->rotation_months = dec_u32(&d);
	k->created = dec_i64(&d);
	k->updated = dec_i64(&d);
	k->expires = dec_i64(&d);
	k->deleted = dec_i64(&d);
	dec_str(&d, k->created_by, KY_KEY_ACTOR_MAX);
	dec_str(&d, k->deleted_by, KY_KEY_ACTOR_MAX);
	dec_str(&d, k->deletion_set_by, KY_KEY_ACTOR_MAX);
	k->deletion_set_at = dec_i64(&d);
	uint32_t nv = dec_u32(&d);
	if (d.bad || strlen(k->id) != KY_UUID_LEN || !dec_state_ok(k->state) || nv == 0 ||
	    nv > KY_KEY_VERSIONS_MAX || k->rotation_months > 12)
		goto out;
	/* Each version takes at least 4 + 2 + 36 + 8 + 2 + 1 bytes: bound nv before allocating. */
	if (nv > (n - d.off) / 53)
		goto out;
	if ((k->versions = calloc(nv, sizeof(*k->versions))) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < nv; i++) {
		struct ky_key_version *v = &k->versions[i];
		const uint8_t *m;
		v->n = dec_u32(&d);
		dec_str(&d, v->id, KY_UUID_LEN);
		v->created = dec_i64(&d);
		v->len = dec_u16(&d);
		if ((m = dec_take(&d, v->len)) == NULL || v->n != i + 1 ||
		    strlen(v->id) != KY_UUID_LEN || !key_material_ok(k->extractable, v->len))
			goto out;
		k->nversions = i + 1; /* from here on ky_key_free owns v */
		if (flags & KY_KMS_METADATA_ONLY)
			continue;
		if ((v->material = OPENSSL_secure_malloc(v->len)) == NULL) {
			r = KY_ERR_NOMEM;
			goto out;
		}
		memcpy(v->material, m, v->len);
	}
	if (format == KMS_RECORD_FORMAT) {
		uint8_t na = dec_u8(&d);
		if (na > KY_KEY_ALIASES_MAX)
			goto out;
		for (uint8_t i = 0; i < na && !d.bad; i++) {
			struct ky_key_alias *a = &k->aliases[i];
			dec_str(&d, a->name, KY_KEY_ALIAS_MAX);
			dec_str(&d, a->created_by, KY_KEY_ACTOR_MAX);
			a->created = dec_i64(&d);
			/* valid, and no alias twice */
			if (d.bad || !ky_key_alias_valid(a->name) || key_alias_at(k, a->name) >= 0)
				goto out;
			k->naliases = (uint32_t)i + 1;
		}
		dec_str(&d, k->ring, KY_KEY_RING_MAX);
		if (!d.bad && !ky_key_ring_valid(k->ring))
			goto out;
	} else {
		snprintf(k->ring, sizeof(k->ring), "%s", KY_KEY_RING_DEFAULT);
	}
	if (d.bad || d.off != d.n || (k->extractable && nv != 1))
		goto out;
	*out = k;
	k = NULL; /* transferred */
	r = 0;
out:
	ky_key_free(k);
	return r;
}
