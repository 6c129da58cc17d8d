/* Key rings: the instance's list of key rings, and the moves of keys between them.
 *
 * The list is one system secret (KY_KMS_SECRET_RINGS), sealed under the master key like every
 * record, so the storage digest and the change log cover it:
 *   u8 1 | u16 n | n x (str id | str created_by | i64 created)    (big-endian, str = u16 + bytes)
 * The ring 'default' is every instance's and is never stored. A key names its ring in its
 * sealed record (lib/kms/key.c). Every change of the list, and every key creation or move
 * into a ring, runs in one write transaction that reads the list first: the storage's write
 * lock orders them, so a ring is never deleted while a key is being put in it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/err.h"
#include "kyok/kms.h"

#define RING_FORMAT 1

bool ky_key_ring_valid(const char *id)
{
	size_t n = id ? strnlen(id, KY_KEY_RING_MAX + 1) : 0;

	if (n < 2 || n > KY_KEY_RING_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return false;
	}
	return true;
}

static void ring_put(uint8_t *p, size_t *off, const void *s, size_t n)
{
	if (p != NULL && n > 0)
		memcpy(p + *off, s, n);
	*off += n;
}

static void ring_u16(uint8_t *p, size_t *off, size_t v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	ring_put(p, off, b, 2);
}

static void ring_str(uint8_t *p, size_t *off, const char *s)
{
	ring_u16(p, off, strlen(s));
	ring_put(p, off, s, strlen(s));
}

static void ring_i64(uint8_t *p, size_t *off, int64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
	ring_put(p, off, b, 8);
}

static size_t ring_encode(const struct ky_key_rings *l, uint8_t *p)
{
	size_t off = 0;
	uint8_t v = RING_FORMAT;

	ring_put(p, &off, &v, 1);
	ring_u16(p, &off, l->n);
	for (size_t i = 0; i < l->n; i++) {
		ring_str(p, &off, l->rings[i].id);
		ring_str(p, &off, l->rings[i].created_by);
		ring_i64(p, &off, l->rings[i].created);
	}
	return off;
}

/* A str of at most max bytes into out; false when it does not fit or is not there. */
static bool ring_take_str(const uint8_t *p, size_t n, size_t *off, char *out, size_t max)
{
	size_t len;

	if (n - *off < 2)
		return false;
	len = (size_t)p[*off] << 8 | p[*off + 1];
	*off += 2;
	if (len > max || n - *off < len || memchr(p + *off, 0, len) != NULL)
		return false;
	memcpy(out, p + *off, len);
	out[len] = '\0';
	*off += len;
	return true;
}

int ky_kms_rings_decode(const uint8_t *p, size_t n, struct ky_key_rings *out)
{
	size_t off = 3, count;

	memset(out, 0, sizeof(*out));
	if (n < 3 || p[0] != RING_FORMAT)
		return KY_ERR_MALFORMED;
	count = (size_t)p[1] << 8 | p[2];
	if (count > KY_KEY_RINGS_MAX)
		return KY_ERR_MALFORMED;
	for (size_t i = 0; i < count; i++) {
		struct ky_key_ring *r = &out->rings[i];
		uint64_t v = 0;

		if (!ring_take_str(p, n, &off, r->id, KY_KEY_RING_MAX) ||
		    !ring_take_str(p, n, &off, r->created_by, KY_KEY_ACTOR_MAX) || n - off < 8)
			return KY_ERR_MALFORMED;
		for (int k = 0; k < 8; k++)
			v = v << 8 | p[off++];
		r->created = (int64_t)v;
		if (!ky_key_ring_valid(r->id) || strcmp(r->id, KY_KEY_RING_DEFAULT) == 0)
			return KY_ERR_MALFORMED;
		for (size_t j = 0; j < i; j++)
			if (strcmp(out->rings[j].id, r->id) == 0)
				return KY_ERR_MALFORMED;
		out->n = i + 1;
	}
	if (off != n)
		return KY_ERR_MALFORMED;
	return 0;
}

int ky_kms_rings_get(const struct ky_kms *kms, struct ky_key_rings *out)
{
	uint8_t *p = NULL;
	size_t n = 0;
	int r;

	memset(out, 0, sizeof(*out));
	r = ky_kms_secret_get(kms, KY_KMS_SECRET_RINGS, &p, &n);
	if (r == KY_ERR_NOT_FOUND)
		return 0; /* only 'default' so far */
	if (r != 0)
		return r;
	r = ky_kms_rings_decode(p, n, out);
	ky_kms_buf_free(p, n);
	/* It opened under the master key: only kyok wrote it. */
	return r == KY_ERR_MALFORMED ? KY_ERR_RECORD_TAMPERED : r;
}

static int ring_at(const struct ky_key_rings *l, const char *id)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->rings[i].id, id) == 0)
			return (int)i;
	return -1;
}

int ky_kms_ring_check(const struct ky_kms *kms, const char *id)
{
	struct ky_key_rings l;
	int r;

	if (id == NULL || strcmp(id, KY_KEY_RING_DEFAULT) == 0)
		return 0;
	if (!ky_key_ring_valid(id))
		return KY_ERR_KEY_RING_NOT_FOUND;
	if ((r = ky_kms_rings_get(kms, &l)) != 0)
		return r;
	return ring_at(&l, id) >= 0 ? 0 : KY_ERR_KEY_RING_NOT_FOUND;
}

static int ring_write(const struct ky_kms *kms, const struct ky_key_rings *l, int64_t now)
{
	size_t n = ring_encode(l, NULL);
	uint8_t *p = malloc(n);
	int r;

	if (p == NULL)
		return KY_ERR_NOMEM;
	ring_encode(l, p);
	r = ky_kms_secret_put(kms, KY_KMS_SECRET_RINGS, p, n, now);
	free(p);
	return r;
}

/* A write transaction for what follows, unless the caller holds one already (a request kept
 * by its request id runs inside one): *opened says which. */
static int ring_begin(const struct ky_kms *kms, bool *opened)
{
	int r = ky_store_begin(kms->store);

	*opened = r == 0;
	return r == KY_ERR_USAGE ? 0 : r; /* nested: the caller's transaction */
}

static int ring_end(const struct ky_kms *kms, bool opened, int r)
{
	if (!opened)
		return r;
	if (r != 0) {
		(void)ky_store_rollback(kms->store);
		return r;
	}
	return ky_store_commit(kms->store);
}

int ky_kms_ring_create(const struct ky_kms *kms, const char *id, const char *actor, int64_t now)
{
	struct ky_key_rings l;
	struct ky_key_ring *nr;
	bool opened = false;
	int r = KY_ERR_INTERNAL;

	if (!ky_key_ring_valid(id))
		return KY_ERR_KEY_RING_INVALID;
	if (strcmp(id, KY_KEY_RING_DEFAULT) == 0)
		return KY_ERR_KEY_RING_EXISTS;
	if ((r = ring_begin(kms, &opened)) != 0)
		return r;
	if ((r = ky_kms_rings_get(kms, &l)) != 0)
		goto out;
	if (ring_at(&l, id) >= 0) {
		r = KY_ERR_KEY_RING_EXISTS;
		goto out;
	}
	if (l.n >= KY_KEY_RINGS_MAX) {
		r = KY_ERR_KEY_RING_QUOTA;
		goto out;
	}
	nr = &l.rings[l.n++];
	memset(nr, 0, sizeof(*nr));
	snprintf(nr->id, sizeof(nr->id), "%s", id);
	snprintf(nr->created_by, sizeof(nr->created_by), "%.*s", KY_KEY_ACTOR_MAX,
	         actor ? actor : "");
	nr->created = now;
	if ((r = ring_write(kms, &l, now)) != 0)
		goto out;
	r = 0;
out:
	return ring_end(kms, opened, r);
}

int ky_kms_ring_delete(const struct ky_kms *kms, const char *id, bool force, int64_t now,
                       size_t *holding)
{
	struct ky_key_rings l;
	struct ky_store_filter all = {.states = 0, .extractable = -1};
	struct ky_key **keys = NULL;
	size_t nkeys = 0, held = 0;
	uint64_t total = 0;
	bool opened = false;
	int at, r = KY_ERR_INTERNAL;

	*holding = 0;
	if (id != NULL && strcmp(id, KY_KEY_RING_DEFAULT) == 0)
		return KY_ERR_KEY_RING_DEFAULT;
	if (!ky_key_ring_valid(id))
		return KY_ERR_KEY_RING_NOT_FOUND;
	if ((r = ring_begin(kms, &opened)) != 0)
		return r;
	if ((r = ky_kms_rings_get(kms, &l)) != 0)
		goto out;
	if ((at = ring_at(&l, id)) < 0) {
		r = KY_ERR_KEY_RING_NOT_FOUND;
		goto out;
	}
	/* Keys in any state (until purged); one that fails its checks fails the deletion. */
	if ((r = ky_kms_key_list(kms, &all, 0, 0, now, &keys, &nkeys, &total, NULL)) != 0)
		goto out;
	for (size_t i = 0; i < nkeys; i++)
		if (strcmp(keys[i]->ring, id) == 0 &&
		    (!force || keys[i]->state != KY_KEY_DESTROYED))
			held++;
	if (held > 0) {
		*holding = held;
		r = KY_ERR_KEY_RING_NOT_EMPTY;
		goto out;
	}
	/* force: the deleted keys go to 'default', in this transaction */
	for (size_t i = 0; force && i < nkeys; i++) {
		struct ky_key_act a = {.action = KY_KEY_SET_RING,
		                       .rotation_months = -1,
		                       .dual_auth = -1,
		                       .ring = KY_KEY_RING_DEFAULT};
		if (strcmp(keys[i]->ring, id) == 0 &&
		    (r = ky_kms_key_act(kms, keys[i]->id, &a, now, NULL)) != 0)
			goto out;
	}
	memmove(&l.rings[at], &l.rings[at + 1], (l.n - (size_t)at - 1) * sizeof(l.rings[0]));
	l.n--;
	if ((r = ring_write(kms, &l, now)) != 0)
		goto out;
	r = 0;
out:
	ky_keys_free(keys, nkeys);
	return ring_end(kms, opened, r);
}

int ky_kms_key_create_in(const struct ky_kms *kms, const struct ky_key_spec *spec, int64_t now,
                         struct ky_key **out)
{
	bool opened = false;
	int r = KY_ERR_INTERNAL;

	*out = NULL;
	if (spec->ring == NULL || strcmp(spec->ring, KY_KEY_RING_DEFAULT) == 0)
		return ky_kms_key_create(kms, spec, now, out);
	if ((r = ring_begin(kms, &opened)) != 0)
		return r;
	if ((r = ky_kms_ring_check(kms, spec->ring)) != 0)
		goto out;
	if ((r = ky_kms_key_create(kms, spec, now, out)) != 0)
		goto out;
	r = 0;
out:
	r = ring_end(kms, opened, r);
	if (r != 0) {
		ky_key_free(*out);
		*out = NULL;
	}
	return r;
}

int ky_kms_key_move(const struct ky_kms *kms, const char *id, const char *ring, const char *actor,
                    int64_t now, struct ky_key **out)
{
	struct ky_key_act a = {.action = KY_KEY_SET_RING,
	                       .actor = actor,
	                       .rotation_months = -1,
	                       .dual_auth = -1,
	                       .ring = ring};
	bool opened = false;
	int r = KY_ERR_INTERNAL;

	*out = NULL;
	if (!ky_key_ring_valid(ring))
		return KY_ERR_KEY_RING_INVALID;
	if ((r = ring_begin(kms, &opened)) != 0)
		return r;
	if ((r = ky_kms_ring_check(kms, ring)) != 0)
		goto out;
	if ((r = ky_kms_key_act(kms, id, &a, now, out)) != 0)
		goto out;
	r = 0;
out:
	r = ring_end(kms, opened, r);
	if (r != 0) {
		ky_key_free(*out);
		*out = NULL;
	}
	return r;
}
