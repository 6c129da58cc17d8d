/* The unit's domain state: creation, copies, the sealed form and the public view.
 *
 * Sealed form (secrets included; the daemon encrypts it before it touches a disk):
 *   {"kyok": "unit-state-v1", "instance", "unit", "zone", "incarnation", "next_counter",
 *    "signature_threshold", "revocation_threshold", "admins": [PEM...],
 *    "new_mk": {"state", "key": hex|null, "vp": hex|null, "part_vps": [hex...]},
 *    "current_mk": {"state", "key": hex|null, "vp": hex|null, "part_vps": [hex...]},
 *    "identity_key": b64 PKCS#8 DER, "identity_cert": PEM,
 *    "importer_key": b64 PKCS#8 DER, "importer_cert": PEM,
 *    "anchor_cert": PEM, "transfers": [{"op", "counter", "from", "from_identity", "to",
 *    "to_identity", "vp"}]}
 * The parser accepts only a state every ceremony rule could have produced: the identity
 * certificate issued by the anchor, the importer certificate by the identity. "incarnation"
 * (32 hex digits, never all zero) may be missing only in a state sealed before incarnations
 * existed: it is then all zero in the parsed state, and the daemon draws one
 * (ky_domain_has_incarnation) before it serves.
 */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kyok/ceremony.h"
#include "kyok/ceremony_mk.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

#define DOMAIN_CERT_DAYS       7300
#define DOMAIN_CN_MAX          64 /* X.509 upper bound of a common name */
#define DOMAIN_IMPORTER_SUFFIX " importer"

/* ---- life cycle ---- */

static struct ky_domain *domain_alloc(void)
{
	struct ky_domain *d = ky_secret_alloc(sizeof(*d));

	if (d == NULL)
		return NULL;
	memset(d, 0, sizeof(*d));
	if ((d->keys = ky_secret_alloc(sizeof(*d->keys))) == NULL) {
		ky_secret_free(d, sizeof(*d));
		return NULL;
	}
	memset(d->keys, 0, sizeof(*d->keys));
	return d;
}

void ky_domain_free(struct ky_domain *d)
{
	if (d == NULL)
		return;
	ky_secret_free(d->keys, sizeof(*d->keys));
	for (size_t i = 0; i < d->nadmins && i < KY_MAX_ADMINS; i++)
		X509_free(d->admins[i].cert);
	EVP_PKEY_free(d->identity_key);
	X509_free(d->identity_cert);
	EVP_PKEY_free(d->importer_key);
	X509_free(d->importer_cert);
	X509_free(d->anchor_cert);
	ky_secret_free(d, sizeof(*d));
}

/* The identity certificate belongs to this unit of this instance and is issued by anchor. */
static int domain_identity_check(const char *instance, const char *unit, EVP_PKEY *identity_key,
                                 X509 *identity_cert, X509 *anchor_cert)
{
	char cn[DOMAIN_CN_MAX + 1], ou[DOMAIN_CN_MAX + 1];
	EVP_PKEY *pub = X509_get0_pubkey(identity_cert);

	if (pub == NULL || EVP_PKEY_eq(pub, identity_key) != 1 ||
	    ky_cert_cn(identity_cert, cn, sizeof(cn)) != 0 || strcmp(cn, unit) != 0 ||
	    ky_cert_ou(identity_cert, ou, sizeof(ou)) != 0 || strcmp(ou, instance) != 0 ||
	    ky_cert_chain_verify(identity_cert, NULL, anchor_cert) != 0)
		return KY_ERR_BAD_CERT;
	return 0;
}

bool ky_domain_has_incarnation(const struct ky_domain *d)
{
	uint8_t acc = 0;

	for (size_t i = 0; i < KY_INCARNATION_LEN; i++)
		acc |= d->incarnation[i];
	return acc != 0;
}

int ky_domain_new_incarnation(struct ky_domain *d)
{
	int r = KY_ERR_INTERNAL;

	/* All zero means "none" (ky_domain_has_incarnation): draw until it is not. */
	do {
		if ((r = ky_random(d->incarnation, KY_INCARNATION_LEN)) != 0)
			return r;
	} while (!ky_domain_has_incarnation(d));
	return 0;
}

int ky_domain_new(const char *instance, const char *unit, const char *zone, struct ky_domain **out)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *anchor_key = NULL, *identity_key = NULL;
	X509 *anchor = NULL, *identity = NULL;

	*out = NULL;
	if (instance == NULL || unit == NULL || zone == NULL ||
	    !ceremony_id_valid(instance, strlen(instance), false) ||
	    !ceremony_id_valid(unit, strlen(unit), false)) {
		r = KY_ERR_USAGE;
		goto out;
	}
	if ((r = ky_ec_generate(&anchor_key)) != 0 ||
	    (r = ky_cert_anchor_self_signed(anchor_key, "kyok unit anchor", instance,
	                                    DOMAIN_CERT_DAYS, &anchor)) != 0 ||
	    (r = ky_ec_generate(&identity_key)) != 0 ||
	    (r = ky_cert_issue_identity(identity_key, unit, instance, anchor, anchor_key,
	                                DOMAIN_CERT_DAYS, &identity)) != 0)
		goto out;
	r = ky_domain_new_certified(instance, unit, zone, identity_key, identity, anchor, out);
out:
	EVP_PKEY_free(anchor_key);
	EVP_PKEY_free(identity_key);
	X509_free(anchor);
	X509_free(identity);
	return r;
}

int ky_domain_new_certified(const char *instance, const char *unit, const char *zone,
                            EVP_PKEY *identity_key, X509 *identity_cert, X509 *anchor_cert,
                            struct ky_domain **out)
{
	int r = KY_ERR_INTERNAL;
	struct ky_domain *d = NULL;
	char cn[DOMAIN_CN_MAX + 1];
	size_t ulen;

	*out = NULL;
	if (instance == NULL || unit == NULL || zone == NULL ||
	    !ceremony_id_valid(instance, strlen(instance), false) ||
	    !ceremony_id_valid(unit, strlen(unit), false) ||
	    !ceremony_id_valid(zone, strlen(zone), true) || identity_key == NULL ||
	    identity_cert == NULL || anchor_cert == NULL) {
		r = KY_ERR_USAGE;
		goto out;
	}
	if ((r = domain_identity_check(instance, unit, identity_key, identity_cert, anchor_cert)) !=
	    0)
		goto out;
	if ((d = domain_alloc()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	memcpy(d->instance, instance, strlen(instance) + 1);
	memcpy(d->unit, unit, strlen(unit) + 1);
	memcpy(d->zone, zone, strlen(zone) + 1);
	if ((r = ky_domain_new_incarnation(d)) != 0)
		goto out;
	d->new_state = KY_NEW_EMPTY;
	d->cur_state = KY_CUR_EMPTY;

	if (EVP_PKEY_up_ref(identity_key) != 1 || (d->identity_key = identity_key) == NULL ||
	    X509_up_ref(identity_cert) != 1 || (d->identity_cert = identity_cert) == NULL ||
	    X509_up_ref(anchor_cert) != 1 || (d->anchor_cert = anchor_cert) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	/* "<unit> importer", the unit id shortened when the name would pass 64 chars. */
	ulen = strlen(unit);
	if (ulen > DOMAIN_CN_MAX - strlen(DOMAIN_IMPORTER_SUFFIX))
		ulen = DOMAIN_CN_MAX - strlen(DOMAIN_IMPORTER_SUFFIX);
	memcpy(cn, unit, ulen);
	memcpy(cn + ulen, DOMAIN_IMPORTER_SUFFIX, sizeof(DOMAIN_IMPORTER_SUFFIX));
	if ((r = ky_ec_generate(&d->importer_key)) != 0 ||
	    (r = ky_cert_issue(d->importer_key, cn, instance, d->identity_cert, d->identity_key,
	                       DOMAIN_CERT_DAYS, &d->importer_cert)) != 0)
		goto out;

	*out = d;
	d = NULL; /* transferred */
	r = 0;
out:
	ky_domain_free(d);
	return r;
}

int ky_domain_dup(const struct ky_domain *d, struct ky_domain **out)
{
	struct ky_domain *c;
	struct ky_domain_keys *keys;

	*out = NULL;
	if (d == NULL || d->nadmins > KY_MAX_ADMINS)
		return KY_ERR_INTERNAL;
	if (d->keys == NULL)
		return KY_ERR_INTERNAL;
	if ((c = domain_alloc()) == NULL)
		return KY_ERR_NOMEM;
	keys = c->keys;
	memcpy(c, d, sizeof(*c));
	memcpy(keys, d->keys, sizeof(*keys));
	c->keys = keys;
	/* Certificates and keys are never changed once made: sharing them is safe. */
	for (size_t i = 0; i < c->nadmins; i++)
		X509_up_ref(c->admins[i].cert);
	if (c->identity_key != NULL)
		EVP_PKEY_up_ref(c->identity_key);
	if (c->identity_cert != NULL)
		X509_up_ref(c->identity_cert);
	if (c->importer_key != NULL)
		EVP_PKEY_up_ref(c->importer_key);
	if (c->importer_cert != NULL)
		X509_up_ref(c->importer_cert);
	if (c->anchor_cert != NULL)
		X509_up_ref(c->anchor_cert);
	*out = c;
	return 0;
}

/* ---- master key registers, for key storage ---- */

int ky_domain_mk(const struct ky_domain *d, enum ky_mk_register reg, struct ky_mk **out)
{
	*out = NULL;
	if (d->keys == NULL)
		return KY_ERR_INTERNAL;
	switch (reg) {
	case KY_MK_REGISTER_NEW:
		if (d->new_state == KY_NEW_EMPTY)
			return KY_ERR_REGISTER_STATE;
		return ky_mk_new(d->keys->new_key, out);
	case KY_MK_REGISTER_CURRENT:
		if (d->cur_state != KY_CUR_VALID)
			return KY_ERR_REGISTER_STATE;
		return ky_mk_new(d->keys->cur_key, out);
	}
	return KY_ERR_INTERNAL;
}

/* ---- serialize ---- */

/* Wipes the secret members of a sealed-form tree (register keys, private keys). */
static void domain_cleanse_tree(json_t *o)
{
	static const char *const regs[] = {"new_mk", "current_mk"};

	if (!json_is_object(o))
		return;
	for (size_t i = 0; i < 2; i++) {
		json_t *reg = json_object_get(o, regs[i]);
		if (json_is_object(reg))
			ceremony_json_cleanse(json_object_get(reg, "key"));
	}
	ceremony_json_cleanse(json_object_get(o, "identity_key"));
	ceremony_json_cleanse(json_object_get(o, "importer_key"));
}

static int domain_set(json_t *o, const char *key, json_t *v)
{
	if (v == NULL || json_object_set_new(o, key, v) != 0)
		return KY_ERR_NOMEM;
	return 0;
}

static json_t *domain_cert_json(X509 *cert)
{
	char *pem = NULL;
	json_t *v;

	if (cert == NULL || ky_cert_to_pem(cert, &pem) != 0)
		return NULL;
	v = json_string(pem);
	free(pem);
	return v;
}

static json_t *domain_incarnation_json(const struct ky_domain *d)
{
	char hex[2 * KY_INCARNATION_LEN + 1];

	if (!ky_domain_has_incarnation(d))
		return NULL;
	ky_hex_encode(d->incarnation, KY_INCARNATION_LEN, hex);
	return json_string(hex);
}

/* Hex of a 32-byte value, or null when absent. */
static json_t *domain_hex32_json(const uint8_t *p, bool present)
{
	char hex[2 * 32 + 1];
	json_t *v;

	if (!present)
		return json_null();
	ky_hex_encode(p, 32, hex);
	v = json_string(hex);
	OPENSSL_cleanse(hex, sizeof(hex));
	return v;
}

/* A private key as base64 PKCS#8 DER; every copy but jansson's own is cleansed here. */
static json_t *domain_key_json(EVP_PKEY *pk)
{
	struct ky_buf der = {0};
	char *b64 = NULL;
	json_t *v = NULL;

	if (pk == NULL || ky_pkey_to_der(pk, &der) != 0)
		goto out;
	if (ky_b64_encode(der.data, der.len, &b64) != 0)
		goto out;
	v = json_string(b64);
out:
	if (b64 != NULL) {
		OPENSSL_cleanse(b64, strlen(b64));
		free(b64);
	}
	ky_buf_free(&der);
	return v;
}

/* The VPs of the key parts a register's key was loaded from: [hex...]. */
static json_t *domain_part_vps_json(const uint8_t (*vps)[KY_VP_LEN], size_t n)
{
	json_t *a = json_array();

	if (a == NULL || n > KY_MAX_PARTS)
		goto fail;
	for (size_t i = 0; i < n; i++)
		if (json_array_append_new(a, domain_hex32_json(vps[i], true)) != 0)
			goto fail;
	return a;
fail:
	json_decref(a);
	return NULL;
}

/* {"state", "key", "vp", "part_vps"}; json_pack frees the members it was given when it
 * fails. */
static json_t *domain_register_json(const char *state, const uint8_t *key, const uint8_t *vp,
                                    bool full, const uint8_t (*part_vps)[KY_VP_LEN], size_t nparts)
{
	return json_pack("{s:s, s:o, s:o, s:o}", "state", state, "key",
	                 domain_hex32_json(key, full), "vp", domain_hex32_json(vp, full),
	                 "part_vps", domain_part_vps_json(part_vps, nparts));
}

int ky_domain_serialize(const struct ky_domain *d, struct ky_buf *out)
{
	int r = KY_ERR_NOMEM;
	json_t *o = NULL, *admins = NULL, *v = NULL;

	if (d->nadmins > KY_MAX_ADMINS || d->keys == NULL) {
		r = KY_ERR_INTERNAL;
		goto out;
	}
	if ((o = json_object()) == NULL)
		goto out;
	if ((r = domain_set(o, "kyok", json_string(CEREMONY_STATE_TAG))) != 0 ||
	    (r = domain_set(o, "instance", json_string(d->instance))) != 0 ||
	    (r = domain_set(o, "unit", json_string(d->unit))) != 0 ||
	    (r = domain_set(o, "zone", json_string(d->zone))) != 0 ||
	    (r = domain_set(o, "incarnation", domain_incarnation_json(d))) != 0 ||
	    (r = domain_set(o, "next_counter", json_integer((json_int_t)d->next_counter))) != 0 ||
	    (r = domain_set(o, "signature_threshold", json_integer(d->sig_threshold))) != 0 ||
	    (r = domain_set(o, "revocation_threshold", json_integer(d->rev_threshold))) != 0)
		goto out;

	if ((admins = json_array()) == NULL)
		goto out;
	for (size_t i = 0; i < d->nadmins; i++) {
		if ((v = domain_cert_json(d->admins[i].cert)) == NULL ||
		    json_array_append_new(admins, v) != 0) {
			r = KY_ERR_NOMEM;
			goto out;
		}
	}
	r = domain_set(o, "admins", admins);
	admins = NULL; /* transferred */
	if (r != 0)
		goto out;

	/* Secret members: wiped in place by domain_cleanse_tree before the tree is freed. */
	v = domain_register_json(ky_new_state_name(d->new_state), d->keys->new_key, d->new_vp,
	                         d->new_state != KY_NEW_EMPTY,
	                         (const uint8_t(*)[KY_VP_LEN])d->new_part_vps, d->new_nparts);
	if ((r = domain_set(o, "new_mk", v)) != 0)
		goto out;
	v = domain_register_json(ky_cur_state_name(d->cur_state), d->keys->cur_key, d->cur_vp,
	                         d->cur_state == KY_CUR_VALID,
	                         (const uint8_t(*)[KY_VP_LEN])d->cur_part_vps, d->cur_nparts);
	if ((r = domain_set(o, "current_mk", v)) != 0)
		goto out;
	if ((r = domain_set(o, "identity_key", domain_key_json(d->identity_key))) != 0 ||
	    (r = domain_set(o, "importer_key", domain_key_json(d->importer_key))) != 0 ||
	    (r = domain_set(o, "identity_cert", domain_cert_json(d->identity_cert))) != 0 ||
	    (r = domain_set(o, "importer_cert", domain_cert_json(d->importer_cert))) != 0 ||
	    (r = domain_set(o, "anchor_cert", domain_cert_json(d->anchor_cert))) != 0 ||
	    (r = domain_set(o, "transfers", ceremony_transfers_json(d))) != 0)
		goto out;

	if ((r = ceremony_json_dump(o, out)) != 0)
		goto out;
	r = 0;
out:
	domain_cleanse_tree(o);
	json_decref(admins);
	json_decref(o);
	return r;
}

/* ---- parse ---- */

static int domain_parse_id(json_t *o, const char *key, bool allow_empty, char out[KY_ID_MAX + 1])
{
	const char *s = ceremony_json_str(o, key);

	if (s == NULL || !ceremony_id_valid(s, strlen(s), allow_empty))
		return KY_ERR_STATE_CORRUPT;
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

static int domain_parse_incarnation(json_t *o, struct ky_domain *d)
{
	const char *s = ceremony_json_str(o, "incarnation");

	if (s == NULL || ky_hex_decode(s, d->incarnation, KY_INCARNATION_LEN) != 0 ||
	    !ky_domain_has_incarnation(d))
		return KY_ERR_STATE_CORRUPT;
	return 0;
}

static int domain_parse_int(json_t *o, const char *key, json_int_t max, json_int_t *out)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
		return KY_ERR_STATE_CORRUPT;
	*out = json_integer_value(v);
	return 0;
}

static int domain_parse_cert(json_t *o, const char *key, X509 **out)
{
	const char *s = ceremony_json_str(o, key);

	if (s == NULL || ky_cert_from_pem(s, out) != 0)
		return KY_ERR_STATE_CORRUPT;
	return 0;
}

static int domain_parse_key(json_t *o, const char *key, EVP_PKEY **out)
{
	int r = KY_ERR_STATE_CORRUPT;
	struct ky_buf der = {0};
	const char *s = ceremony_json_str(o, key);

	if (s == NULL || ky_b64_decode(s, &der) != 0 || der.len == 0)
		goto out;
	if (ky_pkey_from_der(der.data, der.len, out) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&der);
	return r;
}

/* Hex of a 32-byte value that must be present exactly when full. */
static int domain_parse_hex32(json_t *o, const char *key, bool full, uint8_t out[32])
{
	json_t *v = json_object_get(o, key);

	if (!full)
		return json_is_null(v) ? 0 : KY_ERR_STATE_CORRUPT;
	const char *s = ceremony_json_str(o, key);
	if (s == NULL || ky_hex_decode(s, out, 32) != 0)
		return KY_ERR_STATE_CORRUPT;
	return 0;
}

/* "part_vps": absent in states sealed before it existed (then none); else 0 or 2..8 VPs,
 * none for an empty register. */
static int domain_parse_part_vps(json_t *reg, bool full, uint8_t (*vps)[KY_VP_LEN], size_t *n)
{
	json_t *a = json_object_get(reg, "part_vps");
	size_t count;

	*n = 0;
	if (a == NULL)
		return 0;
	if (!json_is_array(a))
		return KY_ERR_STATE_CORRUPT;
	count = json_array_size(a);
	if (count > KY_MAX_PARTS || (count > 0 && (count < KY_MIN_PARTS || !full)))
		return KY_ERR_STATE_CORRUPT;
	for (size_t i = 0; i < count; i++) {
		const char *hex = json_string_value(json_array_get(a, i));
		if (hex == NULL || ky_hex_decode(hex, vps[i], KY_VP_LEN) != 0)
			return KY_ERR_STATE_CORRUPT;
	}
	*n = count;
	return 0;
}

static int domain_parse_register(json_t *o, const char *key, bool is_new, struct ky_domain *d)
{
	static const char *const keys[] = {"state", "key", "vp", "part_vps", NULL};
	int r = KY_ERR_STATE_CORRUPT;
	json_t *reg = json_object_get(o, key);
	const char *state;
	uint8_t vp[KY_VP_LEN];
	bool full = false;

	/* Only these keys, each of them checked below (a missing one fails there). */
	if (!json_is_object(reg) || !ceremony_json_only_keys(reg, keys) ||
	    (state = ceremony_json_str(reg, "state")) == NULL)
		goto out;
	if (is_new) {
		if (strcmp(state, ky_new_state_name(KY_NEW_EMPTY)) == 0)
			d->new_state = KY_NEW_EMPTY;
		else if (strcmp(state, ky_new_state_name(KY_NEW_UNCOMMITTED)) == 0)
			d->new_state = KY_NEW_UNCOMMITTED;
		else if (strcmp(state, ky_new_state_name(KY_NEW_COMMITTED)) == 0)
			d->new_state = KY_NEW_COMMITTED;
		else
			goto out;
		full = d->new_state != KY_NEW_EMPTY;
	} else {
		if (strcmp(state, ky_cur_state_name(KY_CUR_EMPTY)) == 0)
			d->cur_state = KY_CUR_EMPTY;
		else if (strcmp(state, ky_cur_state_name(KY_CUR_VALID)) == 0)
			d->cur_state = KY_CUR_VALID;
		else
			goto out;
		full = d->cur_state == KY_CUR_VALID;
	}
	uint8_t *k = is_new ? d->keys->new_key : d->keys->cur_key;
	uint8_t *kvp = is_new ? d->new_vp : d->cur_vp;
	if ((r = domain_parse_hex32(reg, "key", full, k)) != 0 ||
	    (r = domain_parse_hex32(reg, "vp", full, kvp)) != 0)
		goto out;
	if ((r = domain_parse_part_vps(reg, full, is_new ? d->new_part_vps : d->cur_part_vps,
	                               is_new ? &d->new_nparts : &d->cur_nparts)) != 0)
		goto out;
	if (full) {
		r = KY_ERR_STATE_CORRUPT;
		if (ky_vp(k, vp) != 0 || CRYPTO_memcmp(vp, kvp, KY_VP_LEN) != 0)
			goto out;
	}
	r = 0;
out:
	if (reg != NULL)
		ceremony_json_cleanse(json_object_get(reg, "key"));
	return r;
}

static int domain_parse_admins(json_t *o, struct ky_domain *d)
{
	json_t *a = json_object_get(o, "admins");

	if (!json_is_array(a) || json_array_size(a) > KY_MAX_ADMINS)
		return KY_ERR_STATE_CORRUPT;
	for (size_t i = 0; i < json_array_size(a); i++) {
		struct ky_admin *ad = &d->admins[i];
		json_t *v = json_array_get(a, i);
		const char *pem = json_string_value(v);

		if (pem == NULL || strlen(pem) != json_string_length(v) ||
		    ky_cert_from_pem(pem, &ad->cert) != 0)
			return KY_ERR_STATE_CORRUPT;
		d->nadmins = i + 1;
		if (ky_admin_cert_check(ad->cert) != 0 ||
		    ky_cert_cn(ad->cert, ad->name, sizeof(ad->name)) != 0 ||
		    ky_cert_ski(ad->cert, ad->ski) != 0)
			return KY_ERR_STATE_CORRUPT;
		for (size_t j = 0; j < i; j++)
			if (strcmp(d->admins[j].name, ad->name) == 0 ||
			    memcmp(d->admins[j].ski, ad->ski, KY_SKI_LEN) == 0)
				return KY_ERR_STATE_CORRUPT;
	}
	return 0;
}

/* Key and certificate belong together (same public key). */
static bool domain_key_matches(X509 *cert, EVP_PKEY *key)
{
	EVP_PKEY *pub = X509_get0_pubkey(cert);
	return pub != NULL && EVP_PKEY_eq(pub, key) == 1;
}

static int domain_parse_tree(json_t *o, struct ky_domain *d)
{
	static const char *const keys[] = {"kyok",
	                                   "instance",
	                                   "unit",
	                                   "zone",
	                                   "incarnation",
	                                   "next_counter",
	                                   "signature_threshold",
	                                   "revocation_threshold",
	                                   "admins",
	                                   "new_mk",
	                                   "current_mk",
	                                   "identity_key",
	                                   "identity_cert",
	                                   "importer_key",
	                                   "importer_cert",
	                                   "anchor_cert",
	                                   "transfers",
	                                   NULL};
	int r = KY_ERR_STATE_CORRUPT;
	const char *tag;
	json_int_t counter, sig, rev;
	char cn[DOMAIN_CN_MAX + 1];

	/* Every key, or every key but "incarnation" (a state sealed before it existed). */
	const size_t nkeys = sizeof(keys) / sizeof(keys[0]) - 1;
	const bool has_inc = json_object_get(o, "incarnation") != NULL;

	if (!json_is_object(o) || json_object_size(o) != (has_inc ? nkeys : nkeys - 1) ||
	    !ceremony_json_only_keys(o, keys))
		return KY_ERR_STATE_CORRUPT;
	if ((tag = ceremony_json_str(o, "kyok")) == NULL || strcmp(tag, CEREMONY_STATE_TAG) != 0)
		return KY_ERR_STATE_CORRUPT;
	if ((r = domain_parse_id(o, "instance", false, d->instance)) != 0 ||
	    (r = domain_parse_id(o, "unit", false, d->unit)) != 0 ||
	    (r = domain_parse_id(o, "zone", true, d->zone)) != 0 ||
	    (has_inc && (r = domain_parse_incarnation(o, d)) != 0) ||
	    (r = domain_parse_int(o, "next_counter", INT64_MAX, &counter)) != 0 ||
	    (r = domain_parse_int(o, "signature_threshold", KY_MAX_ADMINS, &sig)) != 0 ||
	    (r = domain_parse_int(o, "revocation_threshold", KY_MAX_ADMINS, &rev)) != 0)
		return r;
	d->next_counter = (uint64_t)counter;
	d->sig_threshold = (int)sig;
	d->rev_threshold = (int)rev;
	if ((r = domain_parse_admins(o, d)) != 0 ||
	    (r = domain_parse_register(o, "new_mk", true, d)) != 0 ||
	    (r = domain_parse_register(o, "current_mk", false, d)) != 0)
		return r;
	/* Imprint mode is both thresholds 0; outside it, neither above the admins. */
	if ((sig == 0) != (rev == 0) || (size_t)sig > d->nadmins || (size_t)rev > d->nadmins)
		return KY_ERR_STATE_CORRUPT;

	if ((r = domain_parse_key(o, "identity_key", &d->identity_key)) != 0 ||
	    (r = domain_parse_key(o, "importer_key", &d->importer_key)) != 0 ||
	    (r = domain_parse_cert(o, "identity_cert", &d->identity_cert)) != 0 ||
	    (r = domain_parse_cert(o, "importer_cert", &d->importer_cert)) != 0 ||
	    (r = domain_parse_cert(o, "anchor_cert", &d->anchor_cert)) != 0)
		return r;
	if (!domain_key_matches(d->identity_cert, d->identity_key) ||
	    !domain_key_matches(d->importer_cert, d->importer_key) ||
	    domain_identity_check(d->instance, d->unit, d->identity_key, d->identity_cert,
	                          d->anchor_cert) != 0 ||
	    ky_cert_verify_by(d->importer_cert, d->identity_key) != 0 ||
	    ky_cert_cn(d->identity_cert, cn, sizeof(cn)) != 0 || strcmp(cn, d->unit) != 0)
		return KY_ERR_STATE_CORRUPT;
	if ((r = ceremony_transfers_parse(json_object_get(o, "transfers"), d)) != 0)
		return r;
	return 0;
}

int ky_domain_parse(const uint8_t *p, size_t n, struct ky_domain **out)
{
	int r = KY_ERR_INTERNAL;
	struct ky_domain *d = NULL;
	json_t *o = NULL;
	json_error_t jerr;

	*out = NULL;
	if ((d = domain_alloc()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((o = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
		r = KY_ERR_STATE_CORRUPT;
		goto out;
	}
	if ((r = domain_parse_tree(o, d)) != 0)
		goto out;
	*out = d;
	d = NULL; /* transferred */
	r = 0;
out:
	domain_cleanse_tree(o);
	json_decref(o);
	ky_domain_free(d);
	return r;
}

/* ---- public view ---- */

/* "identity" and "anchor": SHA-256 fingerprints of the two public keys (as known_units pins
 * the identity); "transfers": the master key transfers this unit took part in. */
static int domain_public_anchor(const struct ky_domain *d, json_t *o)
{
	char id_fp[65], anchor_fp[65];

	if (ky_pubkey_fingerprint(d->identity_key, id_fp) != 0 || d->anchor_cert == NULL ||
	    ky_pubkey_fingerprint(X509_get0_pubkey(d->anchor_cert), anchor_fp) != 0)
		return KY_ERR_CRYPTO;
	if (domain_set(o, "identity", json_string(id_fp)) != 0 ||
	    domain_set(o, "anchor", json_string(anchor_fp)) != 0 ||
	    domain_set(o, "transfers", ceremony_transfers_json(d)) != 0)
		return KY_ERR_NOMEM;
	return 0;
}

json_t *ky_domain_public_json(const struct ky_domain *d)
{
	json_t *o = NULL, *admins = NULL;
	char ski[2 * KY_SKI_LEN + 1];

	if (d == NULL || d->nadmins > KY_MAX_ADMINS || (admins = json_array()) == NULL)
		goto fail;
	for (size_t i = 0; i < d->nadmins; i++) {
		json_t *a;
		ky_hex_encode(d->admins[i].ski, KY_SKI_LEN, ski);
		/* "o" with NULL fails the pack: no admin without its certificate. */
		a = json_pack("{s:s, s:s, s:o}", "name", d->admins[i].name, "ski", ski, "cert",
		              domain_cert_json(d->admins[i].cert));
		if (a == NULL || json_array_append_new(admins, a) != 0)
			goto fail;
	}
	o = json_pack(
	    "{s:s, s:s, s:s, s:o, s:b, s:I, s:i, s:i, s:o, s:{s:s, s:o, s:o}, "
	    "s:{s:s, s:o, s:o}}",
	    "instance", d->instance, "unit", d->unit, "zone", d->zone, "incarnation",
	    domain_incarnation_json(d), "imprint", d->sig_threshold == 0, "next_counter",
	    (json_int_t)d->next_counter, "signature_threshold", d->sig_threshold,
	    "revocation_threshold", d->rev_threshold, "admins", admins, "new_mk", "state",
	    ky_new_state_name(d->new_state), "vp",
	    domain_hex32_json(d->new_vp, d->new_state != KY_NEW_EMPTY), "part_vps",
	    domain_part_vps_json((const uint8_t(*)[KY_VP_LEN])d->new_part_vps, d->new_nparts),
	    "current_mk", "state", ky_cur_state_name(d->cur_state), "vp",
	    domain_hex32_json(d->cur_vp, d->cur_state == KY_CUR_VALID), "part_vps",
	    domain_part_vps_json((const uint8_t(*)[KY_VP_LEN])d->cur_part_vps, d->cur_nparts));
	/* json_pack consumed admins ("o" steals), on failure too. */
	if (o == NULL || domain_public_anchor(d, o) != 0)
		goto fail;
	return o;
fail:
	json_decref(admins);
	json_decref(o);
	return NULL;
}

/* ---- the public state, read back (ky_unit_state_parse) ---- */

static int domain_state_int(const json_t *o, const char *key, json_int_t lo, json_int_t hi,
                            json_int_t *out)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return KY_ERR_BAD_REPLY;
	*out = json_integer_value(v);
	return 0;
}

static int domain_state_vp(const json_t *reg, bool full, char out[2 * KY_VP_LEN + 1])
{
	json_t *v = json_object_get(reg, "vp");
	uint8_t tmp[KY_VP_LEN];

	out[0] = '\0';
	if (!full)
		return json_is_null(v) || v == NULL ? 0 : KY_ERR_BAD_REPLY;
	if (!json_is_string(v) || ky_hex_decode(json_string_value(v), tmp, sizeof(tmp)) != 0)
		return KY_ERR_BAD_REPLY;
	ky_hex_encode(tmp, sizeof(tmp), out);
	return 0;
}

int ky_unit_state_parse(const json_t *j, struct ky_unit_state *st)
{
	json_int_t v;
	json_t *admins, *reg;
	const char *s;

	memset(st, 0, sizeof(*st));
	if (!json_is_object(j) || !json_is_boolean(json_object_get(j, "imprint")))
		return KY_ERR_BAD_REPLY;
	st->imprint = json_is_true(json_object_get(j, "imprint"));
	if ((s = json_string_value(json_object_get(j, "incarnation"))) == NULL ||
	    ky_hex_decode(s, st->incarnation, KY_INCARNATION_LEN) != 0)
		return KY_ERR_BAD_REPLY;
	ky_hex_encode(st->incarnation, KY_INCARNATION_LEN, st->incarnation_hex);
	if (domain_state_int(j, "next_counter", 0, INT64_MAX, &v) != 0)
		return KY_ERR_BAD_REPLY;
	st->counter = (uint64_t)v;
	if (domain_state_int(j, "signature_threshold", 0, KY_MAX_ADMINS, &v) != 0)
		return KY_ERR_BAD_REPLY;
	st->sig = (int)v;
	if (domain_state_int(j, "revocation_threshold", 0, KY_MAX_ADMINS, &v) != 0)
		return KY_ERR_BAD_REPLY;
	st->rev = (int)v;
	admins = json_object_get(j, "admins");
	if (!json_is_array(admins) || json_array_size(admins) > KY_MAX_ADMINS)
		return KY_ERR_BAD_REPLY;
	for (size_t i = 0; i < json_array_size(admins); i++) {
		json_t *a = json_array_get(admins, i);
		const char *name = json_string_value(json_object_get(a, "name"));
		const char *ski = json_string_value(json_object_get(a, "ski"));
		struct ky_unit_admin *ai = &st->admins[i];

		if (name == NULL || ski == NULL || strlen(name) > KY_ADMIN_NAME_MAX ||
		    ky_hex_decode(ski, ai->ski, KY_SKI_LEN) != 0)
			return KY_ERR_BAD_REPLY;
		snprintf(ai->name, sizeof(ai->name), "%s", name);
		ky_hex_encode(ai->ski, KY_SKI_LEN, ai->ski_hex);
	}
	st->nadmins = json_array_size(admins);

	reg = json_object_get(j, "new_mk");
	if ((s = json_string_value(json_object_get(reg, "state"))) == NULL)
		return KY_ERR_BAD_REPLY;
	if (strcmp(s, ky_new_state_name(KY_NEW_EMPTY)) == 0)
		st->new_state = KY_NEW_EMPTY;
	else if (strcmp(s, ky_new_state_name(KY_NEW_UNCOMMITTED)) == 0)
		st->new_state = KY_NEW_UNCOMMITTED;
	else if (strcmp(s, ky_new_state_name(KY_NEW_COMMITTED)) == 0)
		st->new_state = KY_NEW_COMMITTED;
	else
		return KY_ERR_BAD_REPLY;
	if (domain_state_vp(reg, st->new_state != KY_NEW_EMPTY, st->new_vp) != 0)
		return KY_ERR_BAD_REPLY;

	reg = json_object_get(j, "current_mk");
	if ((s = json_string_value(json_object_get(reg, "state"))) == NULL)
		return KY_ERR_BAD_REPLY;
	if (strcmp(s, ky_cur_state_name(KY_CUR_EMPTY)) == 0)
		st->cur_state = KY_CUR_EMPTY;
	else if (strcmp(s, ky_cur_state_name(KY_CUR_VALID)) == 0)
		st->cur_state = KY_CUR_VALID;
	else
		return KY_ERR_BAD_REPLY;
	if (domain_state_vp(reg, st->cur_state == KY_CUR_VALID, st->cur_vp) != 0)
		return KY_ERR_BAD_REPLY;
	return 0;
}

int ky_unit_state_admin_by_ski(const struct ky_unit_state *st, const uint8_t ski[KY_SKI_LEN])
{
	for (size_t i = 0; i < st->nadmins; i++)
		if (memcmp(st->admins[i].ski, ski, KY_SKI_LEN) == 0)
			return (int)i;
	return -1;
}

int ky_unit_state_admin_by_name(const struct ky_unit_state *st, const char *name)
{
	for (size_t i = 0; i < st->nadmins; i++)
		if (strcmp(st->admins[i].name, name) == 0)
			return (int)i;
	return -1;
}
