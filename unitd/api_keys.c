/* The handlers of the key API's routes (the route table is api.c's): keys, their versions,
 * actions, policies, aliases and rings, instance policies, registrations. Each parses
 * (api_json.c), checks the caller's role, lets lib/kms act and sets the reply in its
 * struct api_ctx.
 *
 * Size: every route handler in one file: they share one shape (parse, check the role, let
 * lib/kms act, reply) and the helpers at the top (a key named by id or alias, its ring, the
 * reply of a key, the instance policies read), and are read side by side.
 */
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"
#include "kyok/kms_import.h"
#include "kyok/store.h"
#include "unitd/api.h"
#include "unitd/api_internal.h"
#include "unitd/keystore.h"
#include "unitd/log.h"

#define API_SECRET_POLICIES UNITD_SECRET_POLICIES

/* The key ring named by header X-Kms-Key-Ring, NULL when none. */
const char *api_ring_header(struct api_ctx *x)
{
	const char *h = api_header(x, "X-Kms-Key-Ring");

	return h != NULL && h[0] != '\0' ? h : NULL;
}

/* With header X-Kms-Key-Ring, the key x->q->id must be in that ring: a key of another ring is
 * not found there (as Key Protect answers). A route that serves the key from the unit's key
 * cache (x->key_cached, outside a write transaction) checks the ring of that same cached key,
 * so such requests read no key row from storage for the check. Every other route reads the
 * key's metadata from storage, inside its transaction when it has one: the check and the
 * change then see the same row. A key the cache does not give is read too. */
static int api_key_ring(struct api_ctx *x)
{
	const char *ring = api_ring_header(x);
	struct unitd_key_ref *ref = NULL;
	struct ky_key *read = NULL;
	const struct ky_key *k;
	int r;

	if (ring == NULL)
		return 0;
	if (x->key_cached && !x->in_txn &&
	    unitd_keystore_key_get(x->api->ks, &x->kms, x->q->id, x->now, &ref) == 0) {
		k = unitd_key_ref_key(ref);
	} else {
		if ((r = ky_kms_key_get(&x->kms, x->q->id, KY_KMS_METADATA_ONLY, x->now, &read)) !=
		    0)
			return r;
		k = read;
	}
	r = 0;
	if (strcmp(k->ring, ring) != 0) {
		api_detail(
		    x, "key %s is not in the key ring '%.100s' that header X-Kms-Key-Ring names",
		    x->q->id, ring);
		r = KY_ERR_NOT_FOUND;
	}
	unitd_keystore_key_put(x->api->ks, ref);
	ky_key_free(read);
	return r;
}

/* The key a request names in its path, by id or by alias: x->q->id becomes its key id. The one
 * resolution every route of a key goes through. */
static int api_key_id(struct api_ctx *x)
{
	char id[KY_UUID_LEN + 1];
	int r;

	if (ky_uuid_valid(x->q->id)) {
		/* Ids are stored in lower case. */
		for (char *p = x->q->id; *p; p++)
			if (*p >= 'A' && *p <= 'F')
				*p = (char)(*p - 'A' + 'a');
		return api_key_ring(x);
	}
	if (!ky_key_alias_valid(x->q->id)) {
		api_detail(
		    x,
		    "'%.40s' in the path is neither a key id nor a key alias: a key id is "
		    "36 characters, 8-4-4-4-12 hex digits (as 'kyok kp keys' lists them); an "
		    "alias is 2 to 90 letters, digits, '-' and '_'",
		    x->q->id[0] == '?' ? "(longer than 90 characters)" : x->q->id);
		return KY_ERR_MALFORMED;
	}
	r = ky_kms_alias_resolve(&x->kms, x->q->id, x->now, id);
	if (r == KY_ERR_NOT_FOUND)
		api_detail(x, "no key has the alias '%s' (aliases are case sensitive)", x->q->id);
	else if (r == KY_ERR_RECORD_TAMPERED)
		api_detail(x,
		           "key storage's alias index names a key for the alias '%s' whose record "
		           "does not list it (the index was altered): refused",
		           x->q->id);
	if (r != 0)
		return r;
	memcpy(x->q->id, id, sizeof(id));
	return api_key_ring(x);
}

static int api_reply_key(struct api_ctx *x, unsigned status, const struct ky_key *k, bool payload)
{
	json_t *a = json_array();

	if (a == NULL ||
	    json_array_append_new(a, kp_key_json(k, x->api->instance, payload, x->now)) != 0) {
		json_decref(a);
		return KY_ERR_NOMEM;
	}
	x->reply = kp_collection(KP_TYPE_KEY, a);
	x->status = status;
	return x->reply ? 0 : KY_ERR_NOMEM;
}

/* A query value, NULL when absent (an empty one was refused by api_query_check). */
static const char *api_query_opt(struct api_ctx *x, const char *k)
{
	const char *v = api_query(x, k);

	return v != NULL && v[0] != '\0' ? v : NULL;
}

static const struct kp_sort *api_sort_by;

/* A listing left out records that fail their own checks: each is named in the log (the
 * first KY_KMS_WITHHELD_IDS), the answer says how many (API_HDR_WITHHELD). A GET of one of
 * them is refused with its own error. */
static void api_report_withheld(struct api_ctx *x, const struct ky_kms_withheld *wh)
{
	if (wh->n == 0)
		return;
	for (size_t i = 0; i < wh->n && i < KY_KMS_WITHHELD_IDS; i++)
		unitd_log("api: %s %s%s: key %s withheld from the listing: %s: %s",
		          api_routes[x->q->route].method, API_PREFIX, api_routes[x->q->route].path,
		          wh->ids[i], ky_err_slug(wh->errs[i]), ky_err_message(wh->errs[i]));
	if (wh->n > KY_KMS_WITHHELD_IDS)
		unitd_log("api: %s %s%s: %zu more keys withheld from the listing",
		          api_routes[x->q->route].method, API_PREFIX, api_routes[x->q->route].path,
		          wh->n - KY_KMS_WITHHELD_IDS);
	snprintf(x->withheld, sizeof(x->withheld), "%zu", wh->n);
}

static int api_sort_cmp(const void *a, const void *b)
{
	return kp_sort_cmp(api_sort_by, *(struct ky_key *const *)a, *(struct ky_key *const *)b);
}

/* filter, search and sort over every key the store filter f matches: the page [offset,
 * offset + limit) of the result in keys[0..n), total = all that matched. */
static int api_keys_select(struct api_ctx *x, const struct ky_store_filter *f,
                           const struct kp_filter *flt, const struct kp_search *srch,
                           const struct kp_sort *sort, const char *ring, uint64_t limit,
                           uint64_t offset, struct ky_key ***keys, size_t *n, uint64_t *total)
{
	static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;
	struct ky_key **all = NULL;
	size_t nall = 0, kept = 0, i;
	uint64_t stored = 0;
	struct ky_kms_withheld wh;
	int r;

	*keys = NULL;
	*n = 0;
	*total = 0;
	/* Every key the store filter matches (an instance holds at most key_limit of them). */
	if ((r = ky_kms_key_list(&x->kms, f, 0, 0, x->now, &all, &nall, &stored, &wh)) != 0)
		return r;
	api_report_withheld(x, &wh);
	for (i = 0; i < nall; i++) {
		struct ky_key *k = all[i];

		all[i] = NULL;
		if (kp_filter_match(flt, k) && kp_search_match(srch, k) &&
		    (ring == NULL || strcmp(k->ring, ring) == 0))
			all[kept++] = k; /* kept <= i */
		else
			ky_key_free(k);
	}
	if (sort->n > 0 && kept > 1) {
		/* qsort has no context argument: one sort at a time. */
		pthread_mutex_lock(&sort_lock);
		api_sort_by = sort;
		qsort(all, kept, sizeof(*all), api_sort_cmp);
		api_sort_by = NULL;
		pthread_mutex_unlock(&sort_lock);
	}
	*total = kept;
	/* the page: free what is before and after it */
	for (i = 0; i < kept; i++) {
		struct ky_key *k = all[i];

		all[i] = NULL;
		if (i >= offset && i - offset < limit)
			all[(*n)++] = k;
		else
			ky_key_free(k);
	}
	*keys = all;
	return 0;
}

int api_keys_list(struct api_ctx *x, bool head)
{
	struct ky_store_filter f = {.states = (1u << KY_KEY_ACTIVE) | (1u << KY_KEY_SUSPENDED) |
	                                      (1u << KY_KEY_DEACTIVATED),
	                            .extractable = -1};
	uint64_t limit = KP_LIST_DEFAULT, offset = 0, total = 0;
	bool present, b;
	unsigned mask;
	struct ky_key **keys = NULL;
	struct kp_filter flt;
	struct kp_sort sort;
	struct kp_search srch;
	size_t n = 0;
	json_t *a = NULL;
	int r;

	if (kp_query_uint(api_query(x, "limit"), KP_LIST_MAX, &present, &limit) != 0 ||
	    (present && limit == 0)) {
		api_detail(x, "query limit must be 1 to %d", KP_LIST_MAX);
		return KY_ERR_MALFORMED;
	}
	if (kp_query_uint(api_query(x, "offset"), UINT32_MAX, &present, &offset) != 0) {
		api_detail(x, "query offset must be a whole number");
		return KY_ERR_MALFORMED;
	}
	if (kp_query_states(api_query(x, "state"), &present, &mask) != 0) {
		api_detail(x, "query state must be a list like 1,2,5 (states 0 to 5)");
		return KY_ERR_MALFORMED;
	}
	if (present)
		f.states = mask;
	if (kp_query_bool(api_query(x, "extractable"), &present, &b) != 0) {
		api_detail(x, "query extractable must be true or false");
		return KY_ERR_MALFORMED;
	}
	if (present)
		f.extractable = b ? 1 : 0;
	if ((r = kp_filter_parse(api_query_opt(x, "filter"), &flt, x->detail, sizeof(x->detail))) !=
	        0 ||
	    (r = kp_search_parse(api_query_opt(x, "search"), &srch, x->detail,
	                         sizeof(x->detail))) != 0 ||
	    (r = kp_sort_parse(api_query_opt(x, "sort"), &sort, x->detail, sizeof(x->detail))) != 0)
		return r;
	/* A filter on states widens the default (Active, Suspended, Deactivated) like the state
	 * query does; both together must hold. */
	if (flt.states != 0 && api_query_opt(x, "state") == NULL)
		f.states = 0;
	/* With X-Kms-Key-Ring, the keys of that ring only. */
	if (flt.present || srch.present || sort.n > 0 || api_ring_header(x) != NULL) {
		if ((r = api_keys_select(x, &f, &flt, &srch, &sort, api_ring_header(x),
		                         head ? 0 : limit, head ? 0 : offset, &keys, &n, &total)) !=
		    0)
			goto out;
	} else if (head) {
		if ((r = ky_store_key_count(x->kms.store, &f, &total)) != 0)
			return r;
	} else {
		struct ky_kms_withheld wh;

		if ((r = ky_kms_key_list(&x->kms, &f, (uint32_t)limit, offset, x->now, &keys, &n,
		                         &total, &wh)) != 0)
			return r;
		api_report_withheld(x, &wh);
	}
	if (head) {
		snprintf(x->key_total, sizeof(x->key_total), "%llu", (unsigned long long)total);
		x->status = 200;
		r = 0;
		goto out;
	}
	if ((a = json_array()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (json_array_append_new(
		        a, kp_key_json(keys[i], x->api->instance, false, x->now)) != 0) {
			r = KY_ERR_NOMEM;
			goto out;
		}
	}
	x->reply = kp_collection(KP_TYPE_KEY, a);
	a = NULL; /* transferred */
	if (x->reply == NULL ||
	    json_object_set_new(json_object_get(x->reply, "metadata"), "totalCount",
	                        json_integer((json_int_t)total)) != 0) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	snprintf(x->key_total, sizeof(x->key_total), "%llu", (unsigned long long)total);
	x->status = 200;
	r = 0;
out:
	json_decref(a);
	ky_keys_free(keys, n);
	return r;
}

/* The stored instance policies record into *p (defaults first; r: what reading it gave). */
static int api_ipolicies_decode(struct api_ctx *x, int r, const uint8_t *raw, size_t n,
                                struct kp_instance_policies *p)
{
	kp_instance_policies_init(p);
	if (r == KY_ERR_NOT_FOUND)
		return 0;
	if (r == KY_ERR_MK_MISMATCH)
		api_detail(x, "instance policies: " API_STALE_UNIT);
	if (r != 0)
		return r;
	if (kp_instance_policies_decode(raw, n, p) != 0) {
		api_detail(x, "the stored instance policies do not parse");
		return KY_ERR_RECORD_TAMPERED;
	}
	return 0;
}

/* Instance policies: a system secret, defaults when never set. Through the keystore's cache:
 * for reads only, never for a change (api_ipolicies_read_rev). */
static int api_ipolicies_read(struct api_ctx *x, struct kp_instance_policies *p)
{
	uint8_t *raw = NULL;
	size_t n = 0;
	int r = KY_ERR_INTERNAL;

	r = unitd_keystore_policies(x->api->ks, &x->kms, &raw, &n);
	r = api_ipolicies_decode(x, r, raw, n, p);
	free(raw);
	return r;
}

/* The instance policies straight from storage, with the rev they are stored at (0 when never
 * set): what a change is applied to and compared against. */
static int api_ipolicies_read_rev(struct api_ctx *x, struct kp_instance_policies *p, int64_t *rev)
{
	uint8_t *raw = NULL;
	size_t n = 0;
	int r = KY_ERR_INTERNAL;

	r = ky_kms_secret_get_rev(&x->kms, API_SECRET_POLICIES, &raw, &n, rev);
	r = api_ipolicies_decode(x, r, raw, n, p);
	ky_kms_buf_free(raw, n);
	return r;
}

/* The caller's address, as allowedIP ranges are matched against it. */
static int api_caller_addr(struct api_ctx *x, struct kp_cidr *addr)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(x->c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

	if (ci == NULL || kp_addr_of(ci->client_addr, addr) != 0) {
		api_detail(x, "cannot tell the address this request comes from");
		return KY_ERR_INTERNAL;
	}
	return 0;
}

/* The instance policy allowedIP, on every request of the key API once its token checked. */
int api_allowed_ip(struct api_ctx *x)
{
	struct kp_instance_policies pol;
	struct kp_cidr addr;
	int r;

	if ((r = api_ipolicies_read(x, &pol)) != 0)
		return r;
	if (!pol.allowed_ip)
		return 0;
	if ((r = api_caller_addr(x, &addr)) != 0)
		return r;
	return kp_allowed_ip_check(&pol, &addr, x->detail, sizeof(x->detail));
}

int api_key_create(struct api_ctx *x)
{
	struct kp_create cr;
	struct kp_instance_policies pol;
	struct ky_key_spec sp = {0};
	struct ky_key *k = NULL, *k2 = NULL;
	const char *aliases[KY_KEY_ALIASES_MAX];
	uint8_t key[KY_MK_LEN];
	size_t keylen = 0;
	bool txn = false;
	int r;

	if ((r = kp_parse_create(x->q->body.data, x->q->body.len, &cr, x->detail,
	                         sizeof(x->detail))) != 0)
		return r;
	if ((r = api_ipolicies_read(x, &pol)) != 0)
		goto out;
	if ((r = kp_instance_policies_allow(&pol, cr.extractable,
	                                    !cr.has_payload     ? KP_GENERATED
	                                    : cr.secure.present ? KP_IMPORTED_TOKEN
	                                                        : KP_IMPORTED,
	                                    x->detail, sizeof(x->detail))) != 0)
		goto out;
	if (cr.expires != 0 && cr.expires <= x->now) {
		api_detail(x, "expirationDate is in the past");
		r = KY_ERR_MALFORMED;
		goto out;
	}
	sp.name = cr.name;
	sp.description = cr.description;
	sp.extractable = cr.extractable;
	sp.payload = cr.has_payload ? cr.payload.data : NULL;
	sp.len = cr.has_payload ? cr.payload.len : 0;
	/* A secure import: the key comes out of the import token, whose nonce is used up in the
	 * transaction that stores the key. */
	if (cr.secure.present) {
		if ((r = kp_txn_begin(&x->kms, x->in_txn, &txn)) != 0)
			goto out;
		if ((r = kp_import_token_unseal(&x->kms, &cr.secure, &cr.payload, x->now, key,
		                                sizeof(key), &keylen, x->detail,
		                                sizeof(x->detail))) != 0)
			goto out;
		sp.payload = key;
		sp.len = keylen;
	}
	sp.expires = cr.expires;
	sp.actor = x->caller;
	for (size_t i = 0; i < cr.naliases; i++)
		aliases[i] = cr.aliases[i];
	sp.aliases = aliases;
	sp.naliases = cr.naliases;
	sp.ring = api_ring_header(x);
	r = ky_kms_key_create_in(&x->kms, &sp, x->now, &k);
	if (r == KY_ERR_KEY_RING_NOT_FOUND)
		api_detail(x, "header X-Kms-Key-Ring '%.100s'", sp.ring);
	if (r == KY_ERR_KEY_ALIAS_EXISTS)
		api_detail(x, "one of the aliases in member 'resources[0].aliases' (each may be "
		              "given once, and none may be another key's)");
	if (r == KY_ERR_RECORD_TAMPERED && sp.naliases > 0)
		api_detail(x, "member 'resources[0].aliases': every key record was read, and "
		              "another key's sealed record lists one of them while the alias index "
		              "does not (altered by hand), or a record failed its own check");
	if (r == KY_ERR_KEY_LIMIT)
		api_detail(
		    x,
		    "the instance holds %lu keys under its master key, its limit (key_limit in "
		    "unit.conf)",
		    (unsigned long)ky_store_key_limit(x->kms.store));
	if (r != 0)
		goto out;
	/* The instance's policies apply to keys made from now on. */
	if (pol.dual_auth || (pol.rotation && !k->extractable)) {
		struct ky_key_act a = {
		    .action = KY_KEY_SET_POLICY,
		    .actor = x->caller,
		    .rotation_months = pol.rotation && !k->extractable ? pol.rotation_months : -1,
		    .dual_auth = pol.dual_auth ? 1 : -1};
		if ((r = ky_kms_key_act(&x->kms, k->id, &a, x->now, &k2)) != 0)
			goto out;
		ky_key_free(k);
		k = k2;
		k2 = NULL; /* transferred */
	}
	r = api_reply_key(
	    x, 201, k, x->prefer == KP_PREFER_REPRESENTATION && api_allowed(x->role, PERM_PAYLOAD));
out:
	if (txn)
		r = kp_txn_end(&x->kms, true, r);
	OPENSSL_cleanse(key, sizeof(key));
	ky_key_free(k);
	ky_key_free(k2);
	kp_create_release(&cr);
	return r;
}

/* GET /keys/ID and /keys/ID/metadata. The key comes from the unit's key cache, as for the
 * key actions (kept fresh by the change log: keystore.c), so a lookup costs the same with 50 or
 * with millions of keys in storage; key storage is read (and the key opened into the cache)
 * on a miss only. A key the cache does not give (a destroyed key, a key that cannot be
 * opened, no such key) is read from key storage as before, with that path's own errors. */
int api_key_get(struct api_ctx *x, bool metadata)
{
	struct unitd_key_ref *ref = NULL;
	struct ky_key *read = NULL;
	const struct ky_key *k;
	int r;

	x->key_cached = true;
	if ((r = api_key_id(x)) != 0)
		return r;
	if (unitd_keystore_key_get(x->api->ks, &x->kms, x->q->id, x->now, &ref) == 0) {
		k = unitd_key_ref_key(ref);
	} else {
		if ((r = ky_kms_key_get(&x->kms, x->q->id, metadata ? KY_KMS_METADATA_ONLY : 0,
		                        x->now, &read)) != 0)
			return r;
		k = read;
	}
	/* A cached key keeps the state it was read with: the state at this request's time. */
	if (!metadata && ky_key_state_at(k, x->now) == KY_KEY_DESTROYED) {
		api_detail(x, "key %s was deleted: its metadata is at /keys/%s/metadata", k->id,
		           k->id);
		r = KY_ERR_KEY_DESTROYED;
		goto out;
	}
	r = api_reply_key(x, 200, k, !metadata && api_allowed(x->role, PERM_PAYLOAD));
out:
	unitd_keystore_key_put(x->api->ks, ref);
	ky_key_free(read);
	return r;
}

int api_key_versions(struct api_ctx *x)
{
	struct ky_key *k = NULL;
	uint64_t limit = KP_LIST_DEFAULT, offset = 0;
	bool present, b = false, all_states = false;
	int r;

	if ((r = api_key_id(x)) != 0)
		return r;
	if (kp_query_uint(api_query(x, "limit"), KP_LIST_MAX, &present, &limit) != 0 ||
	    (present && limit == 0) ||
	    kp_query_uint(api_query(x, "offset"), UINT32_MAX, &present, &offset) != 0) {
		api_detail(x, "query limit must be 1 to %d, offset a whole number", KP_LIST_MAX);
		return KY_ERR_MALFORMED;
	}
	/* totalCount=true asks for metadata.totalCount, which kyok always gives. */
	if (kp_query_bool(api_query(x, "totalCount"), &present, &b) != 0 ||
	    kp_query_bool(api_query(x, "allKeyStates"), &present, &all_states) != 0) {
		api_detail(x, "queries totalCount and allKeyStates must be true or false");
		return KY_ERR_MALFORMED;
	}
	if ((r = ky_kms_key_get(&x->kms, x->q->id, KY_KMS_METADATA_ONLY, x->now, &k)) != 0)
		return r;
	/* Without allKeyStates=true, only the versions of a key that is not destroyed. */
	if (!all_states && k->state == KY_KEY_DESTROYED) {
		api_detail(x, "key %s was deleted: ask with allKeyStates=true for its versions",
		           k->id);
		ky_key_free(k);
		return KY_ERR_KEY_DESTROYED;
	}
	x->reply = kp_versions_json(k, offset, limit);
	if (x->reply != NULL)
		json_object_set_new(json_object_get(x->reply, "metadata"), "totalCount",
		                    json_integer(k->nversions));
	x->status = 200;
	r = x->reply ? 0 : KY_ERR_NOMEM;
	ky_key_free(k);
	return r;
}

/* A state change through lib/kms; 204, or the key with Prefer: return=representation. */
int api_key_act(struct api_ctx *x, struct ky_key_act *a, unsigned status_repr, bool always_body)
{
	struct ky_key *k = NULL;
	int r;

	if ((r = api_key_id(x)) != 0)
		return r;
	a->actor = x->caller;
	r = ky_kms_key_act(&x->kms, x->q->id, a, x->now, &k);
	/* Whatever happened, this unit's cached copy is not trusted any more. */
	unitd_keystore_flush(x->api->ks);
	if (r == KY_ERR_DUAL_AUTH_REQUIRED)
		api_detail(x,
		           "set the key for deletion first (POST /keys/%s/actions/"
		           "setKeyForDeletion) as another user",
		           x->q->id);
	if (r != 0)
		goto out;
	if (k == NULL) {
		x->status = 204;
	} else if (always_body || x->prefer == KP_PREFER_REPRESENTATION) {
		r = api_reply_key(x, status_repr, k, false);
	} else {
		x->status = 204;
	}
out:
	ky_key_free(k);
	return r;
}

static const char *api_action_name(enum api_action act);

/* PATCH /keys/{id} {"keyRingID": RING}: 200 and the key in its new ring. */
int api_key_patch(struct api_ctx *x)
{
	char ring[KY_KEY_RING_MAX + 1];
	struct ky_key *k = NULL;
	int r;

	if ((r = kp_parse_patch(x->q->body.data, x->q->body.len, ring, x->detail,
	                        sizeof(x->detail))) != 0)
		return r;
	if ((r = api_key_id(x)) != 0)
		return r;
	r = ky_kms_key_move(&x->kms, x->q->id, ring, x->caller, x->now, &k);
	unitd_keystore_flush(x->api->ks);
	if (r == KY_ERR_KEY_RING_NOT_FOUND)
		api_detail(x, "member 'keyRingID': '%s'", ring);
	if (r != 0)
		return r;
	r = api_reply_key(x, 200, k, false);
	ky_key_free(k);
	return r;
}

/* GET /key_rings (limit, offset, totalCount). */
int api_rings_list(struct api_ctx *x)
{
	struct ky_key_rings *l = NULL;
	uint64_t limit = KP_LIST_DEFAULT, offset = 0;
	bool present, total = false;
	int r;

	if (kp_query_uint(api_query(x, "limit"), KP_LIST_MAX, &present, &limit) != 0 ||
	    (present && limit == 0) ||
	    kp_query_uint(api_query(x, "offset"), UINT32_MAX, &present, &offset) != 0 ||
	    kp_query_bool(api_query(x, "totalCount"), &present, &total) != 0) {
		api_detail(x,
		           "query limit must be 1 to %d, offset a whole number, totalCount true "
		           "or false",
		           KP_LIST_MAX);
		return KY_ERR_MALFORMED;
	}
	if ((l = malloc(sizeof(*l))) == NULL)
		return KY_ERR_NOMEM;
	if ((r = ky_kms_rings_get(&x->kms, l)) != 0)
		goto out;
	x->reply = kp_rings_json(l, offset, limit, total);
	x->status = 200;
	r = x->reply ? 0 : KY_ERR_NOMEM;
out:
	free(l);
	return r;
}

/* POST /key_rings/{ring} (201), DELETE /key_rings/{ring} (204). */
int api_ring_change(struct api_ctx *x, bool create)
{
	const char *id = x->q->ring;
	size_t holding = 0;
	bool present, force = false;
	int r;

	if ((r = api_no_body(x, create ? "key ring creation" : "key ring deletion")) != 0)
		return r;
	if (!ky_key_ring_valid(id)) {
		api_detail(x, "'%.40s'", id[0] == '?' ? "(longer than 100 characters)" : id);
		return KY_ERR_KEY_RING_INVALID;
	}
	/* force=true: the deleted keys in the ring move to 'default' (Key Protect's meaning). */
	if (!create && kp_query_bool(api_query(x, "force"), &present, &force) != 0) {
		api_detail(x, "query force must be true or false");
		return KY_ERR_MALFORMED;
	}
	if (create)
		r = ky_kms_ring_create(&x->kms, id, x->caller, x->now);
	else
		r = ky_kms_ring_delete(&x->kms, id, force, x->now, &holding);
	if (r == KY_ERR_KEY_RING_NOT_EMPTY)
		api_detail(x, "key ring '%s' holds %zu key%s", id, holding,
		           holding == 1 ? "" : "s");
	else if (r == KY_ERR_KEY_RING_EXISTS || r == KY_ERR_KEY_RING_NOT_FOUND)
		api_detail(x, "key ring '%s'", id);
	if (r != 0)
		return r;
	x->status = create ? 201 : 204;
	return 0;
}

/* POST and DELETE /keys/{id}/aliases/{alias}: 201 with the alias, or 204. */
int api_key_alias(struct api_ctx *x, bool add)
{
	struct ky_key_act a = {.action = add ? KY_KEY_ALIAS_ADD : KY_KEY_ALIAS_DELETE,
	                       .rotation_months = -1,
	                       .dual_auth = -1,
	                       .alias = x->q->alias};
	struct ky_key *k = NULL;
	int r;

	if ((r = api_no_body(x, add ? "alias creation" : "alias deletion")) != 0)
		return r;
	if (add && !ky_key_alias_valid(x->q->alias)) {
		api_detail(x, "'%.40s'",
		           x->q->alias[0] == '?' ? "(longer than 90 characters)" : x->q->alias);
		return KY_ERR_KEY_ALIAS_INVALID;
	}
	if ((r = api_key_id(x)) != 0)
		return r;
	a.actor = x->caller;
	r = ky_kms_key_act(&x->kms, x->q->id, &a, x->now, &k);
	/* Whatever happened, this unit's cached copy is not trusted any more. */
	unitd_keystore_flush(x->api->ks);
	if (r == KY_ERR_KEY_ALIAS_EXISTS)
		api_detail(x, "alias '%s'", x->q->alias);
	else if (r == KY_ERR_RECORD_TAMPERED && add)
		api_detail(x,
		           "alias '%s': every key record was read, and another key's sealed record "
		           "lists it while the alias index does not (altered by hand), or a record "
		           "failed its own check",
		           x->q->alias);
	else if (r == KY_ERR_KEY_ALIAS_QUOTA)
		api_detail(x, "key %s", x->q->id);
	else if (r == KY_ERR_KEY_ALIAS_NOT_FOUND)
		api_detail(x, "key %s has no alias '%.90s'", x->q->id, x->q->alias);
	if (r != 0)
		goto out;
	if (add) {
		x->reply = kp_alias_json(k, x->q->alias);
		x->status = 201;
		r = x->reply ? 0 : KY_ERR_NOMEM;
	} else {
		x->status = 204;
	}
out:
	ky_key_free(k);
	return r;
}

/* wrap, unwrap, rewrap: the hot path, through the key cache. */
static int api_key_crypt(struct api_ctx *x, enum api_action act)
{
	struct kp_action_body b;
	struct unitd_key_ref *ref = NULL;
	const struct ky_key *k;
	uint8_t *out = NULL, *out2 = NULL, dek[KY_DEK_LEN];
	size_t outlen = 0, out2len = 0, outcap = 0;
	uint32_t ver = 0;
	char *b64 = NULL, *b64b = NULL;
	const struct ky_key_version *used = NULL, *newest;
	int r;

	x->key_cached = true;
	if ((r = api_key_id(x)) != 0)
		return r;
	if ((r = kp_parse_action(x->q->body.data, x->q->body.len, api_action_name(act),
	                         act == ACT_WRAP ? "plaintext aad" : "ciphertext aad", &b,
	                         x->detail, sizeof(x->detail))) != 0)
		return r;
	if (act != ACT_WRAP && !b.has_ciphertext) {
		api_detail(x, "member 'ciphertext' is required");
		r = KY_ERR_MALFORMED;
		goto out;
	}
	if (act == ACT_WRAP && b.has_plaintext && b.plaintext.len == 0) {
		api_detail(x,
		           "member 'plaintext' is empty: give 1 to %d bytes (base64), or leave it "
		           "out to have a new 256-bit data key made and wrapped",
		           KY_WRAP_PT_MAX);
		r = KY_ERR_MALFORMED;
		goto out;
	}
	if ((r = unitd_keystore_key_get(x->api->ks, &x->kms, x->q->id, x->now, &ref)) != 0)
		goto out;
	k = unitd_key_ref_key(ref);
	newest = &k->versions[k->nversions - 1];
	/* Room for the larger of: the plaintext wrapped, the ciphertext unwrapped (and wrapped
	 * again under the newest version). */
	outcap = (b.has_plaintext ? b.plaintext.len : KY_DEK_LEN) + KY_WRAP_OVERHEAD;
	if (b.ciphertext.len + KY_WRAP_OVERHEAD > outcap)
		outcap = b.ciphertext.len + KY_WRAP_OVERHEAD;
	if ((out = ky_secret_alloc(outcap)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	switch (act) {
	case ACT_WRAP:
		/* The cached copy keeps the state it was read with: expiry is checked here. */
		if (ky_key_state_at(k, x->now) == KY_KEY_DEACTIVATED) {
			api_detail(x, "key %s expired", k->id);
			r = KY_ERR_KEY_NOT_ACTIVE;
			goto out;
		}
		if (b.has_plaintext) {
			r = ky_kms_wrap(k, b.plaintext.data, b.plaintext.len, b.aad.data, b.aad.len,
			                out, outcap, &outlen);
		} else {
			r = ky_kms_wrap_dek(k, b.aad.data, b.aad.len, dek, out, outcap, &outlen);
			if (r == 0)
				r = ky_b64_encode(dek, sizeof(dek), &b64b);
		}
		if (r != 0 || (r = ky_b64_encode(out, outlen, &b64)) != 0)
			goto out;
		x->reply =
		    json_pack("{s:s, s:{s:s}}", "ciphertext", b64, "keyVersion", "id", newest->id);
		if (x->reply != NULL && b64b != NULL &&
		    json_object_set_new(x->reply, "plaintext", json_string(b64b)) != 0)
			r = KY_ERR_NOMEM;
		break;
	case ACT_UNWRAP:
		if ((r = ky_kms_unwrap(k, b.ciphertext.data, b.ciphertext.len, b.aad.data,
		                       b.aad.len, out, outcap, &outlen, &ver)) != 0)
			goto out;
		if (ver < 1 || ver > k->nversions) {
			r = KY_ERR_UNWRAP;
			goto out;
		}
		used = &k->versions[ver - 1];
		if ((r = ky_b64_encode(out, outlen, &b64)) != 0)
			goto out;
		x->reply =
		    json_pack("{s:s, s:{s:s}}", "plaintext", b64, "keyVersion", "id", used->id);
		/* An old version's ciphertext comes back rewrapped under the newest version. */
		if (x->reply != NULL && ver < k->nversions &&
		    ky_key_state_at(k, x->now) == KY_KEY_ACTIVE) {
			if ((out2 = ky_secret_alloc(outcap)) == NULL) {
				r = KY_ERR_NOMEM;
				goto out;
			}
			if ((r = ky_kms_wrap(k, out, outlen, b.aad.data, b.aad.len, out2, outcap,
			                     &out2len)) != 0 ||
			    (r = ky_b64_encode(out2, out2len, &b64b)) != 0)
				goto out;
			if (json_object_set_new(x->reply, "ciphertext", json_string(b64b)) != 0 ||
			    json_object_set_new(x->reply, "rewrappedKeyVersion",
			                        json_pack("{s:s}", "id", newest->id)) != 0)
				r = KY_ERR_NOMEM;
		}
		break;
	case ACT_REWRAP:
		if ((r = ky_kms_wrap_version(b.ciphertext.data, b.ciphertext.len, &ver)) != 0)
			goto out;
		if ((r = ky_kms_rewrap(k, b.ciphertext.data, b.ciphertext.len, b.aad.data,
		                       b.aad.len, out, outcap, &outlen)) != 0)
			goto out;
		if (ver < 1 || ver > k->nversions) {
			r = KY_ERR_UNWRAP;
			goto out;
		}
		if ((r = ky_b64_encode(out, outlen, &b64)) != 0)
			goto out;
		x->reply =
		    json_pack("{s:s, s:{s:s}, s:{s:s}}", "ciphertext", b64, "keyVersion", "id",
		              k->versions[ver - 1].id, "rewrappedKeyVersion", "id", newest->id);
		break;
	case ACT_ROTATE:
	case ACT_ENABLE:
	case ACT_DISABLE:
	case ACT_SET_DELETION:
	case ACT_UNSET_DELETION:
	case ACT_RESTORE:
	case ACT_SYNC:
		r = KY_ERR_INTERNAL;
		goto out;
	}
	if (r == 0 && x->reply == NULL)
		r = KY_ERR_NOMEM;
	x->status = 200;
out:
	if (r == KY_ERR_KEY_NOT_ACTIVE && x->detail[0] == '\0')
		api_detail(x, "key %s is suspended or deactivated", x->q->id);
	if (b64 != NULL) {
		OPENSSL_cleanse(b64, strlen(b64));
		free(b64);
	}
	if (b64b != NULL) {
		OPENSSL_cleanse(b64b, strlen(b64b));
		free(b64b);
	}
	OPENSSL_cleanse(dek, sizeof(dek));
	ky_secret_free(out, outcap);
	ky_secret_free(out2, outcap);
	unitd_keystore_key_put(x->api->ks, ref);
	kp_action_release(&b);
	return r;
}

static const char *api_action_name(enum api_action act)
{
	for (size_t i = 0; i < API_NACTIONS; i++)
		if (api_actions[i].action == act)
			return api_actions[i].name;
	return "?";
}

/* A request that takes no body member: an empty body or an empty object (a payload to restore
 * an imported key is refused: kyok keeps a deleted key's material until it is purged). */
int api_no_body(struct api_ctx *x, const char *what)
{
	struct kp_action_body b;
	int r;

	if (x->q->body.len == 0)
		return 0;
	if ((r = kp_parse_action(x->q->body.data, x->q->body.len, what, "", &b, x->detail,
	                         sizeof(x->detail))) != 0)
		return r;
	kp_action_release(&b);
	return 0;
}

/* Rotation of an imported root key with material encrypted to the import token: the token's
 * nonce is used up in the transaction that stores the new version. */
static int api_key_rotate_sealed(struct api_ctx *x, struct ky_key_act *a,
                                 const struct kp_action_body *b)
{
	uint8_t key[KY_MK_LEN];
	size_t keylen = 0;
	bool txn = false;
	int r;

	if ((r = api_key_id(x)) != 0)
		return r;
	if ((r = kp_txn_begin(&x->kms, x->in_txn, &txn)) != 0)
		return r;
	if ((r = kp_import_token_unseal(&x->kms, &b->secure, &b->payload, x->now, key, sizeof(key),
	                                &keylen, x->detail, sizeof(x->detail))) != 0)
		goto out;
	a->payload = key;
	a->len = keylen;
	r = api_key_act(x, a, 200, false);
out:
	r = kp_txn_end(&x->kms, txn, r);
	a->payload = NULL;
	a->len = 0;
	OPENSSL_cleanse(key, sizeof(key));
	return r;
}

/* POST /keys/{id}/actions/sync: no other service holds kyok keys, so there is nothing to
 * notify; the answer is Key Protect's (kp_sync_check): 409 within an hour of the key's last
 * change, else 204. */
static int api_key_sync(struct api_ctx *x)
{
	struct ky_key *k = NULL;
	int r;

	if ((r = api_no_body(x, "sync")) != 0)
		return r;
	if ((r = api_key_id(x)) != 0)
		return r;
	if ((r = ky_kms_key_get(&x->kms, x->q->id, KY_KMS_METADATA_ONLY, x->now, &k)) != 0)
		return r;
	if ((r = kp_sync_check(k->id, k->updated, x->now, x->detail, sizeof(x->detail))) == 0)
		x->status = 204;
	ky_key_free(k);
	return r;
}

int api_action_by_name(struct api_ctx *x, size_t *idx)
{
	const char *name = x->q->action[0] ? x->q->action : api_query(x, "action");

	for (size_t i = 0; name != NULL && i < API_NACTIONS; i++) {
		if (strcmp(api_actions[i].name, name) == 0) {
			*idx = i;
			return 0;
		}
	}
	if (name == NULL || name[0] == '\0') {
		api_detail(x, "no action named: POST /api/v2/keys/{id} takes ?action= one of wrap, "
		              "unwrap, rewrap, rotate, enable, disable, setKeyForDeletion, "
		              "unsetKeyForDeletion, restore, sync");
		return KY_ERR_MALFORMED;
	}
	api_detail(x,
	           "unknown action '%.32s' (wrap, unwrap, rewrap, rotate, enable, disable, "
	           "setKeyForDeletion, unsetKeyForDeletion, restore, sync)",
	           name);
	return KY_ERR_NOT_FOUND;
}

int api_key_action(struct api_ctx *x)
{
	struct kp_action_body b;
	struct ky_key_act a = {.rotation_months = -1, .dual_auth = -1};
	size_t i;
	int r;

	if ((r = api_action_by_name(x, &i)) != 0)
		return r;
	if ((r = api_check(x, api_actions[i].perm)) != 0)
		return r;
	switch (api_actions[i].action) {
	case ACT_WRAP:
	case ACT_UNWRAP:
	case ACT_REWRAP:
		return api_key_crypt(x, api_actions[i].action);
	case ACT_ROTATE:
		if ((r = kp_parse_action(x->q->body.data, x->q->body.len, "rotate",
		                         "payload encryptedNonce iv encryptionAlgorithm", &b,
		                         x->detail, sizeof(x->detail))) != 0)
			return r;
		a.action = KY_KEY_ROTATE;
		a.payload = b.has_payload ? b.payload.data : NULL;
		a.len = b.has_payload ? b.payload.len : 0;
		/* New material given with the rotation is an import: keyCreateImportAccess
		 * applies to it as to a root key imported on create. */
		if (b.has_payload || b.secure.present) {
			struct kp_instance_policies pol;
			if ((r = api_ipolicies_read(x, &pol)) != 0 ||
			    (r = kp_instance_policies_allow(
			         &pol, 0, b.secure.present ? KP_IMPORTED_TOKEN : KP_IMPORTED,
			         x->detail, sizeof(x->detail))) != 0) {
				kp_action_release(&b);
				return r;
			}
		}
		r = b.secure.present ? api_key_rotate_sealed(x, &a, &b)
		                     : api_key_act(x, &a, 200, false);
		kp_action_release(&b);
		return r;
	case ACT_SYNC:
		return api_key_sync(x);
	case ACT_ENABLE:
		if ((r = api_no_body(x, api_actions[i].name)) != 0)
			return r;
		a.action = KY_KEY_ENABLE;
		return api_key_act(x, &a, 200, false);
	case ACT_DISABLE:
		if ((r = api_no_body(x, api_actions[i].name)) != 0)
			return r;
		a.action = KY_KEY_DISABLE;
		return api_key_act(x, &a, 200, false);
	case ACT_SET_DELETION:
		if ((r = api_no_body(x, api_actions[i].name)) != 0)
			return r;
		a.action = KY_KEY_SET_DELETION;
		return api_key_act(x, &a, 200, false);
	case ACT_UNSET_DELETION:
		if ((r = api_no_body(x, api_actions[i].name)) != 0)
			return r;
		a.action = KY_KEY_UNSET_DELETION;
		return api_key_act(x, &a, 200, false);
	case ACT_RESTORE:
		if ((r = api_no_body(x, "restore")) != 0)
			return r;
		a.action = KY_KEY_RESTORE;
		return api_key_act(x, &a, 201, true);
	}
	return KY_ERR_INTERNAL;
}

int api_key_policies(struct api_ctx *x, bool put)
{
	const char *only = api_query(x, "policy");
	struct kp_key_policy p;
	struct ky_key *k = NULL;
	int r;

	if (only != NULL && only[0] == '\0')
		only = NULL;
	if (only != NULL && strcmp(only, "rotation") != 0 && strcmp(only, "dualAuthDelete") != 0) {
		api_detail(x, "query policy must be rotation or dualAuthDelete");
		return KY_ERR_MALFORMED;
	}
	if ((r = api_key_id(x)) != 0)
		return r;
	if (put) {
		struct ky_key_act a = {.action = KY_KEY_SET_POLICY, .actor = x->caller};
		if ((r = kp_parse_key_policies(x->q->body.data, x->q->body.len, only, &p, x->detail,
		                               sizeof(x->detail))) != 0)
			return r;
		if ((r = ky_kms_key_get(&x->kms, x->q->id, KY_KMS_METADATA_ONLY, x->now, &k)) != 0)
			return r;
		if (k->dual_auth && p.dual_auth == 0) {
			api_detail(
			    x, "a dual authorization delete policy cannot be turned off once set");
			r = KY_ERR_KEY_STATE;
			goto out;
		}
		ky_key_free(k);
		k = NULL;
		a.rotation_months = p.rotation_months;
		a.dual_auth = p.dual_auth;
		r = ky_kms_key_act(&x->kms, x->q->id, &a, x->now, &k);
		unitd_keystore_flush(x->api->ks);
		if (r != 0)
			goto out;
	} else if ((r = ky_kms_key_get(&x->kms, x->q->id, KY_KMS_METADATA_ONLY, x->now, &k)) != 0) {
		return r;
	}
	x->reply = kp_key_policies_json(k, x->api->instance, only);
	x->status = 200;
	r = x->reply ? 0 : KY_ERR_NOMEM;
out:
	ky_key_free(k);
	return r;
}

/* One PUT /instance/policies applied to what storage holds now (p: read with rev), and
 * written only if that is still what it holds (KY_ERR_CONFLICT if another writer came
 * first). */
static int api_ipolicies_apply(struct api_ctx *x, const char *only, struct kp_instance_policies *p,
                               int64_t rev)
{
	struct ky_buf enc = {0};
	int r = KY_ERR_INTERNAL;

	if ((r = kp_parse_instance_policies(x->q->body.data, x->q->body.len, only, x->caller,
	                                    x->now, p, x->detail, sizeof(x->detail))) != 0)
		goto out;
	if (p->allowed_ip) {
		/* A list that leaves out its sender's address would lock the sender out. */
		struct kp_cidr addr;
		char a[KP_CIDR_TEXT_MAX + 1];
		if ((r = api_caller_addr(x, &addr)) != 0)
			goto out;
		if (kp_allowed_ip_check(p, &addr, NULL, 0) != 0) {
			kp_addr_format(&addr, a, sizeof(a));
			api_detail(x, "this request comes from %s", a);
			r = KY_ERR_IP_POLICY_LOCKOUT;
			goto out;
		}
	}
	if ((r = kp_instance_policies_encode(p, &enc)) != 0)
		goto out;
	if ((r = ky_kms_secret_put_rev(&x->kms, API_SECRET_POLICIES, enc.data, enc.len, x->now,
	                               rev)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&enc);
	return r;
}

/* How many times a PUT is applied again to what another writer stored before it gives up. */
#define API_IPOLICIES_TRIES 5

int api_instance_policies(struct api_ctx *x, bool put)
{
	const char *only = api_query(x, "policy");
	struct kp_instance_policies p;
	int64_t rev = 0;
	int r = KY_ERR_INTERNAL;

	if (only != NULL && only[0] == '\0')
		only = NULL;
	if (only != NULL && !kp_instance_policy_known(only)) {
		api_detail(x, "query policy must be one of " KP_IPOLICY_TYPES);
		return KY_ERR_MALFORMED;
	}
	if (!put) {
		if ((r = api_ipolicies_read(x, &p)) != 0)
			return r;
		x->reply = kp_instance_policies_json(&p, only);
		x->status = 200;
		return x->reply ? 0 : KY_ERR_NOMEM;
	}
	/* Compare-and-swap: a PUT is a function of the stored policies and its body alone, so
	 * when another unit or request wrote first it is applied again to what that left. */
	for (int attempt = 0; attempt < API_IPOLICIES_TRIES; attempt++) {
		if ((r = api_ipolicies_read_rev(x, &p, &rev)) != 0)
			break;
		if ((r = api_ipolicies_apply(x, only, &p, rev)) != KY_ERR_CONFLICT)
			break;
	}
	/* Written or not, the next read is from the store. */
	unitd_keystore_policies_drop(x->api->ks);
	if (r == KY_ERR_CONFLICT)
		api_detail(x,
		           "the instance policies were changed by other requests %d times while "
		           "this one was applied: send it again",
		           API_IPOLICIES_TRIES);
	if (r == 0)
		x->status = 204;
	return r;
}

/* GET /keys/registrations and /keys/{id}/registrations: kyok keys protect no resource of
 * another service, so the collection is empty; the key of the second must exist. The query
 * parameters are checked, and filter nothing out of nothing. */
int api_registrations(struct api_ctx *x)
{
	struct ky_key *k = NULL;
	uint64_t v;
	bool present, b, total = false;
	int r;

	if (kp_query_uint(api_query(x, "limit"), KP_LIST_MAX, &present, &v) != 0 ||
	    (present && v == 0) ||
	    kp_query_uint(api_query(x, "offset"), UINT32_MAX, &present, &v) != 0) {
		api_detail(x, "query limit must be 1 to %d, offset a whole number", KP_LIST_MAX);
		return KY_ERR_MALFORMED;
	}
	if (kp_query_bool(api_query(x, "preventKeyDeletion"), &present, &b) != 0 ||
	    kp_query_bool(api_query(x, "totalCount"), &present, &total) != 0) {
		api_detail(x, "queries preventKeyDeletion and totalCount must be true or false");
		return KY_ERR_MALFORMED;
	}
	if (api_routes[x->q->route].route == ROUTE_KEY_REGISTRATIONS) {
		if ((r = api_key_id(x)) != 0)
			return r;
		if ((r = ky_kms_key_get(&x->kms, x->q->id, KY_KMS_METADATA_ONLY, x->now, &k)) != 0)
			return r;
		ky_key_free(k);
	}
	x->reply = kp_registrations_json(present && total);
	x->status = 200;
	return x->reply ? 0 : KY_ERR_NOMEM;
}
