/* The ceremony rules: how many signatures each command needs, and what it does.
 *
 * Size: every command's checks and effects in one file, on purpose: a rule is read against
 * the others (thresholds, modes, registers), and the verification order below is one path.
 *
 * ky_ceremony_verify checks, in this order, each with its own error:
 *   1. the command's form (CMS SignedData holding a kyok command), decoded once;
 *   2. instance, unit, incarnation of the unit's state, transaction counter;
 *   3. every signature: its signer must be an installed admin and it must verify;
 *   4. the unit's mode (imprint or not) allows the command;
 *   5. enough distinct admins signed (two signatures by one admin count once).
 * ky_ceremony_apply then checks
 *   6. the state is still the one verified against (same counter, admins, registers);
 *   7. the command's own rules (admin table, thresholds, master key registers).
 */
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

#define EXECUTE_SKI_SHOWN 8 /* bytes of an unknown signer's key id shown in messages */
#define EXECUTE_VP_SHOWN  8 /* bytes of a key part's VP shown in messages */

static bool ceremony_imprint(const struct ky_domain *d)
{
	return d->sig_threshold == 0;
}

static bool ceremony_threshold_valid(int t)
{
	return t >= 1 && t <= KY_MAX_ADMINS;
}

int ky_ceremony_required(const struct ky_domain *d, const struct ky_command *c, int *required)
{
	const bool imprint = ceremony_imprint(d);

	*required = 0;
	switch (c->op) {
	case KY_OP_ADMIN_ADD:
		*required = imprint ? 0 : d->sig_threshold;
		return 0;
	case KY_OP_ADMIN_RM:
		*required = imprint ? 0 : d->rev_threshold;
		return 0;
	case KY_OP_THRESHOLDS_SET:
		if (!imprint) {
			*required = d->sig_threshold;
			return 0;
		}
		/* Leaving imprint mode: the new threshold is the count, so it must be one. */
		if (!ceremony_threshold_valid(c->sig) || !ceremony_threshold_valid(c->rev))
			return KY_ERR_THRESHOLD_RANGE;
		if ((size_t)c->sig > d->nadmins || (size_t)c->rev > d->nadmins)
			return KY_ERR_THRESHOLD_ABOVE_ADMINS;
		*required = c->sig;
		return 0;
	case KY_OP_EXIT_IMPRINT:
		if (!imprint)
			return KY_ERR_NOT_IMPRINT_MODE;
		if (d->nadmins < 1)
			return KY_ERR_THRESHOLD_ABOVE_ADMINS;
		*required = 1;
		return 0;
	case KY_OP_ZEROIZE:
		*required = imprint ? 0 : 1;
		return 0;
	case KY_OP_MK_LOAD:
		if (imprint)
			return KY_ERR_IMPRINT_MODE;
		if (c->nparts < KY_MIN_PARTS || c->nparts > KY_MAX_PARTS)
			return KY_ERR_KEY_PARTS;
		*required = (int)c->nparts;
		return 0;
	case KY_OP_MK_COMMIT:
	case KY_OP_MK_GENERATE:
	case KY_OP_MK_EXPORT:
	case KY_OP_MK_IMPORT:
	case KY_OP_APIKEY_CREATE:
	case KY_OP_STORAGE_ACCEPT:
		if (imprint)
			return KY_ERR_IMPRINT_MODE;
		*required = d->sig_threshold;
		return 0;
	case KY_OP_MK_SETIMM:
	case KY_OP_MK_CLRNEW:
	case KY_OP_MK_CLRCUR:
	case KY_OP_MK_REENCIPHER:
	case KY_OP_APIKEY_REVOKE:
		if (imprint)
			return KY_ERR_IMPRINT_MODE;
		*required = 1;
		return 0;
	}
	return KY_ERR_INTERNAL;
}

/* ---- helpers ---- */

static int ceremony_find_admin(const struct ky_domain *d, const uint8_t ski[KY_SKI_LEN])
{
	for (size_t i = 0; i < d->nadmins; i++)
		if (memcmp(d->admins[i].ski, ski, KY_SKI_LEN) == 0)
			return (int)i;
	return -1;
}

/* A name taken from an untrusted certificate, made safe to print. */
static void ceremony_safe_name(const char *in, char out[KY_ADMIN_NAME_MAX + 1])
{
	size_t i;

	for (i = 0; i < KY_ADMIN_NAME_MAX && in[i] != '\0'; i++)
		out[i] = (in[i] >= 0x20 && in[i] < 0x7f && in[i] != '\'') ? in[i] : '?';
	out[i] = '\0';
}

static int ceremony_result_set(json_t *res, const char *key, json_t *v)
{
	if (v == NULL || json_object_set_new(res, key, v) != 0)
		return KY_ERR_NOMEM;
	return 0;
}

static int ceremony_result_hex(json_t *res, const char *key, const uint8_t *p, size_t n)
{
	char hex[2 * KY_SKI_LEN + 1];

	if (n > KY_SKI_LEN)
		return KY_ERR_INTERNAL;
	ky_hex_encode(p, n, hex);
	return ceremony_result_set(res, key, json_string(hex));
}

static int ceremony_register_refused(char *detail, size_t len, const char *reg, const char *state,
                                     const char *expected)
{
	ceremony_detail(detail, len, "%s master key register is %s, expected %s", reg, state,
	                expected);
	return KY_ERR_REGISTER_STATE;
}

static int ceremony_new_refused(const struct ky_domain *d, const char *expected, char *detail,
                                size_t len)
{
	return ceremony_register_refused(detail, len, "new", ky_new_state_name(d->new_state),
	                                 expected);
}

/* Constant time: the value is secret. */
static bool ceremony_all_zero(const uint8_t v[KY_MK_LEN])
{
	uint8_t acc = 0;

	for (size_t i = 0; i < KY_MK_LEN; i++)
		acc |= v[i];
	return acc == 0;
}

/* The new key register receives key (UNCOMMITTED) unless vp or the current key forbid. */
static int ceremony_new_fill(struct ky_domain *d, const uint8_t key[KY_MK_LEN], bool has_vp,
                             const uint8_t *vp, char *detail, size_t len)
{
	int r = KY_ERR_INTERNAL;
	uint8_t kvp[KY_VP_LEN];

	if ((r = ky_vp(key, kvp)) != 0)
		goto out;
	if (has_vp && CRYPTO_memcmp(kvp, vp, KY_VP_LEN) != 0) {
		ceremony_detail(detail, len,
		                "the key received does not have the verification pattern the "
		                "command names");
		r = KY_ERR_VP_MISMATCH;
		goto out;
	}
	if (d->cur_state == KY_CUR_VALID && CRYPTO_memcmp(key, d->keys->cur_key, KY_MK_LEN) == 0) {
		ceremony_detail(detail, len,
		                "the new master key is the one already in the current register");
		r = KY_ERR_SAME_KEY;
		goto out;
	}
	if (ceremony_all_zero(key)) {
		ceremony_detail(detail, len, "the new master key would be all zero");
		r = KY_ERR_MK_ZERO;
		goto out;
	}
	memcpy(d->keys->new_key, key, KY_MK_LEN);
	memcpy(d->new_vp, kvp, KY_VP_LEN);
	d->new_nparts = 0; /* a loaded key's parts are recorded by mk-load */
	d->new_state = KY_NEW_UNCOMMITTED;
	r = 0;
out:
	OPENSSL_cleanse(kvp, sizeof(kvp));
	return r;
}

static void ceremony_new_clear(struct ky_domain *d)
{
	OPENSSL_cleanse(d->keys->new_key, KY_MK_LEN);
	OPENSSL_cleanse(d->new_vp, KY_VP_LEN);
	OPENSSL_cleanse(d->new_part_vps, sizeof(d->new_part_vps));
	d->new_nparts = 0;
	d->new_state = KY_NEW_EMPTY;
}

static void ceremony_cur_clear(struct ky_domain *d)
{
	OPENSSL_cleanse(d->keys->cur_key, KY_MK_LEN);
	OPENSSL_cleanse(d->cur_vp, KY_VP_LEN);
	OPENSSL_cleanse(d->cur_part_vps, sizeof(d->cur_part_vps));
	d->cur_nparts = 0;
	d->cur_state = KY_CUR_EMPTY;
}

/* ---- the ops ---- */

static int ceremony_admin_add(struct ky_domain *d, const struct ky_command *c, json_t *res,
                              char *detail, size_t len)
{
	int r = KY_ERR_INTERNAL;
	struct ky_admin a;

	memset(&a, 0, sizeof(a));
	if ((r = ky_admin_cert_check(c->cert)) != 0) {
		ceremony_detail(detail, len, "%s",
		                r == KY_ERR_ADMIN_NAME
		                    ? "the certificate's common name is not 1 to 30 "
		                      "printable characters"
		                    : "the certificate is not a valid administrator "
		                      "certificate");
		return r;
	}
	if ((r = ky_cert_cn(c->cert, a.name, sizeof(a.name))) != 0 ||
	    (r = ky_cert_ski(c->cert, a.ski)) != 0)
		return r;
	for (size_t i = 0; i < d->nadmins; i++) {
		if (strcmp(d->admins[i].name, a.name) == 0) {
			ceremony_detail(detail, len, "an administrator named '%s' is installed",
			                a.name);
			return KY_ERR_DUPLICATE_ADMIN;
		}
		if (memcmp(d->admins[i].ski, a.ski, KY_SKI_LEN) == 0) {
			ceremony_detail(detail, len,
			                "the key of '%s' is already installed as administrator "
			                "'%s'",
			                a.name, d->admins[i].name);
			return KY_ERR_DUPLICATE_ADMIN;
		}
	}
	if (d->nadmins >= KY_MAX_ADMINS) {
		ceremony_detail(detail, len, "unit %s has %d administrators; remove one first",
		                d->unit, KY_MAX_ADMINS);
		return KY_ERR_ADMIN_TABLE_FULL;
	}
	if ((r = ceremony_result_set(res, "name", json_string(a.name))) != 0 ||
	    (r = ceremony_result_hex(res, "ski", a.ski, KY_SKI_LEN)) != 0)
		return r;
	if (X509_up_ref(c->cert) != 1)
		return KY_ERR_CRYPTO;
	a.cert = c->cert; /* shared with the verified command: certificates never change */
	d->admins[d->nadmins++] = a;
	return 0;
}

static int ceremony_admin_rm(struct ky_domain *d, const struct ky_command *c, json_t *res,
                             char *detail, size_t len)
{
	int r = KY_ERR_INTERNAL;
	int i = ceremony_find_admin(d, c->ski);
	int most = d->sig_threshold > d->rev_threshold ? d->sig_threshold : d->rev_threshold;

	if (i < 0) {
		char hex[2 * KY_SKI_LEN + 1];
		ky_hex_encode(c->ski, KY_SKI_LEN, hex);
		ceremony_detail(detail, len, "no administrator with key id %s on unit %s", hex,
		                d->unit);
		return KY_ERR_ADMIN_NOT_FOUND;
	}
	if (!ceremony_imprint(d) && d->nadmins - 1 < (size_t)most) {
		if (d->nadmins <= 1)
			ceremony_detail(detail, len,
			                "'%s' is the last administrator of unit %s, and a unit out "
			                "of imprint mode keeps at least one: zeroize the unit to "
			                "remove every administrator",
			                d->admins[i].name, d->unit);
		else
			ceremony_detail(detail, len,
			                "removing '%s' would leave %zu administrators; thresholds "
			                "are %d (signature) and %d (revocation): lower both to %zu "
			                "or less first",
			                d->admins[i].name, d->nadmins - 1, d->sig_threshold,
			                d->rev_threshold, d->nadmins - 1);
		return KY_ERR_BELOW_THRESHOLD;
	}
	if ((r = ceremony_result_set(res, "name", json_string(d->admins[i].name))) != 0 ||
	    (r = ceremony_result_hex(res, "ski", d->admins[i].ski, KY_SKI_LEN)) != 0)
		return r;
	X509_free(d->admins[i].cert);
	memmove(&d->admins[i], &d->admins[i + 1],
	        (d->nadmins - (size_t)i - 1) * sizeof(struct ky_admin));
	d->nadmins--;
	memset(&d->admins[d->nadmins], 0, sizeof(struct ky_admin));
	return 0;
}

static int ceremony_thresholds_set(struct ky_domain *d, const struct ky_command *c, json_t *res,
                                   char *detail, size_t len)
{
	int r = KY_ERR_INTERNAL;

	if (!ceremony_threshold_valid(c->sig) || !ceremony_threshold_valid(c->rev)) {
		ceremony_detail(detail, len, "signature %d, revocation %d: each must be 1 to %d",
		                c->sig, c->rev, KY_MAX_ADMINS);
		return KY_ERR_THRESHOLD_RANGE;
	}
	if ((size_t)c->sig > d->nadmins || (size_t)c->rev > d->nadmins) {
		ceremony_detail(detail, len,
		                "signature %d, revocation %d, but unit %s has %zu "
		                "administrators",
		                c->sig, c->rev, d->unit, d->nadmins);
		return KY_ERR_THRESHOLD_ABOVE_ADMINS;
	}
	d->sig_threshold = c->sig;
	d->rev_threshold = c->rev;
	if ((r = ceremony_result_set(res, "signature", json_integer(c->sig))) != 0 ||
	    (r = ceremony_result_set(res, "revocation", json_integer(c->rev))) != 0)
		return r;
	return 0;
}

/* First 8 bytes of a part's VP in hex, to name the part in a message. */
static void ceremony_part_vp_short(const uint8_t vp[KY_VP_LEN], char out[2 * EXECUTE_VP_SHOWN + 1])
{
	ky_hex_encode(vp, EXECUTE_VP_SHOWN, out);
}

/* Split knowledge: no part may be all zero or equal to another, the key they form must not be
 * all zero or equal to any one of them. Each part is checked by value, after decryption:
 * envelopes of the same part differ byte for byte. */
static int ceremony_parts_check(const uint8_t (*parts)[KY_MK_LEN], const uint8_t (*vps)[KY_VP_LEN],
                                size_t nparts, const uint8_t key[KY_MK_LEN], char *detail,
                                size_t len)
{
	char a[2 * EXECUTE_VP_SHOWN + 1];

	for (size_t i = 0; i < nparts; i++) {
		if (ceremony_all_zero(parts[i])) {
			ceremony_detail(detail, len, "key part %zu of %zu is all zero", i + 1,
			                nparts);
			return KY_ERR_PART_ZERO;
		}
	}
	for (size_t i = 0; i < nparts; i++) {
		for (size_t j = i + 1; j < nparts; j++) {
			if (CRYPTO_memcmp(parts[i], parts[j], KY_MK_LEN) != 0)
				continue;
			ceremony_part_vp_short(vps[i], a);
			ceremony_detail(detail, len,
			                "key parts %zu and %zu of %zu are the same part (VP %s...)",
			                i + 1, j + 1, nparts, a);
			return KY_ERR_PART_DUPLICATE;
		}
	}
	if (ceremony_all_zero(key)) {
		ceremony_detail(detail, len,
		                "the %zu key parts cancel out: together they give an all-zero key",
		                nparts);
		return KY_ERR_MK_ZERO;
	}
	for (size_t i = 0; i < nparts; i++) {
		if (CRYPTO_memcmp(parts[i], key, KY_MK_LEN) != 0)
			continue;
		ceremony_part_vp_short(vps[i], a);
		ceremony_detail(detail, len,
		                "the master key would equal key part %zu (VP %s...): the other %zu "
		                "parts cancel out",
		                i + 1, a, nparts - 1);
		return KY_ERR_MK_EQUALS_PART;
	}
	return 0;
}

static int ceremony_mk_load(struct ky_domain *d, const struct ky_command *c, json_t *res,
                            char *detail, size_t len)
{
	int r = KY_ERR_INTERNAL;
	uint8_t key[KY_MK_LEN];
	uint8_t(*parts)[KY_MK_LEN] = NULL;
	uint8_t vps[KY_MAX_PARTS][KY_VP_LEN];
	json_t *jvps = NULL;

	memset(key, 0, sizeof(key));
	if (d->new_state != KY_NEW_EMPTY) {
		r = ceremony_new_refused(d, "EMPTY", detail, len);
		goto out;
	}
	if (c->nparts < KY_MIN_PARTS || c->nparts > KY_MAX_PARTS) {
		ceremony_detail(detail, len, "%zu key part%s given; a master key has %d to %d",
		                c->nparts, c->nparts == 1 ? "" : "s", KY_MIN_PARTS, KY_MAX_PARTS);
		r = KY_ERR_KEY_PARTS;
		goto out;
	}
	if ((parts = ky_secret_alloc(KY_MAX_PARTS * KY_MK_LEN)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < c->nparts; i++) {
		if (ky_token_part_is(c->parts[i].data, c->parts[i].len)) {
			/* The form a PKCS#11 token makes (docs/formats.md, section 5). */
			if ((r = ky_token_part_open(c->parts[i].data, c->parts[i].len,
			                            d->importer_key, d->importer_cert, parts[i])) !=
			    0) {
				ceremony_detail(detail, len, "key part %zu (token form) to unit %s",
				                i + 1, d->unit);
				goto out;
			}
		} else if (ky_envelope_open(c->parts[i].data, c->parts[i].len, d->importer_key,
		                            d->importer_cert, parts[i], KY_MK_LEN) != 0) {
			ceremony_detail(detail, len,
			                "key part %zu cannot be opened with the importer key of "
			                "unit %s",
			                i + 1, d->unit);
			r = KY_ERR_BAD_COMMAND;
			goto out;
		}
		if ((r = ky_vp(parts[i], vps[i])) != 0)
			goto out;
		for (size_t j = 0; j < KY_MK_LEN; j++)
			key[j] ^= parts[i][j];
	}
	if ((r = ceremony_parts_check((const uint8_t(*)[KY_MK_LEN])parts,
	                              (const uint8_t(*)[KY_VP_LEN])vps, c->nparts, key, detail,
	                              len)) != 0)
		goto out;
	if ((r = ceremony_new_fill(d, key, c->has_vp, c->vp, detail, len)) != 0)
		goto out;
	memcpy(d->new_part_vps, vps, c->nparts * KY_VP_LEN);
	d->new_nparts = c->nparts;
	if ((r = ceremony_result_hex(res, "vp", d->new_vp, KY_VP_LEN)) != 0)
		goto out;
	if ((jvps = json_array()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < d->new_nparts; i++) {
		char hex[2 * KY_VP_LEN + 1];
		ky_hex_encode(d->new_part_vps[i], KY_VP_LEN, hex);
		if (json_array_append_new(jvps, json_string(hex)) != 0) {
			r = KY_ERR_NOMEM;
			goto out;
		}
	}
	r = ceremony_result_set(res, "part_vps", jvps);
	jvps = NULL; /* transferred */
	if (r != 0)
		goto out;
	r = 0;
out:
	json_decref(jvps);
	OPENSSL_cleanse(key, sizeof(key));
	ky_secret_free(parts, KY_MAX_PARTS * KY_MK_LEN);
	return r;
}

static int ceremony_mk_commit(struct ky_domain *d, const struct ky_command *c, json_t *res,
                              char *detail, size_t len)
{
	if (d->new_state != KY_NEW_UNCOMMITTED)
		return ceremony_new_refused(d, "FULL UNCOMMITTED", detail, len);
	if (!c->has_vp || CRYPTO_memcmp(c->vp, d->new_vp, KY_VP_LEN) != 0) {
		ceremony_detail(detail, len,
		                "the command's verification pattern is not the one of the key "
		                "in the new register");
		return KY_ERR_VP_MISMATCH;
	}
	d->new_state = KY_NEW_COMMITTED;
	return ceremony_result_hex(res, "vp", d->new_vp, KY_VP_LEN);
}

static int ceremony_mk_setimm(struct ky_domain *d, const struct ky_command *c, json_t *res,
                              char *detail, size_t len)
{
	if (d->new_state != KY_NEW_COMMITTED)
		return ceremony_new_refused(d, "FULL COMMITTED", detail, len);
	if (c->has_vp && CRYPTO_memcmp(c->vp, d->new_vp, KY_VP_LEN) != 0) {
		ceremony_detail(detail, len,
		                "the command's verification pattern is not the one of the key "
		                "in the new register");
		return KY_ERR_VP_MISMATCH;
	}
	memcpy(d->keys->cur_key, d->keys->new_key, KY_MK_LEN);
	memcpy(d->cur_vp, d->new_vp, KY_VP_LEN);
	memcpy(d->cur_part_vps, d->new_part_vps, sizeof(d->cur_part_vps));
	d->cur_nparts = d->new_nparts;
	d->cur_state = KY_CUR_VALID;
	ceremony_new_clear(d);
	return ceremony_result_hex(res, "vp", d->cur_vp, KY_VP_LEN);
}

static void ceremony_zeroize(struct ky_domain *d)
{
	ceremony_new_clear(d);
	ceremony_cur_clear(d);
	for (size_t i = 0; i < d->nadmins; i++)
		X509_free(d->admins[i].cert);
	memset(d->admins, 0, sizeof(d->admins));
	d->nadmins = 0;
	d->sig_threshold = 0;
	d->rev_threshold = 0;
	/* next_counter goes on: commands signed before the zeroize stay dead. */
}

static int ceremony_mk_generate(struct ky_domain *d, json_t *res, char *detail, size_t len)
{
	int r = KY_ERR_INTERNAL;
	uint8_t key[KY_MK_LEN];

	if (d->new_state != KY_NEW_EMPTY) {
		r = ceremony_new_refused(d, "EMPTY", detail, len);
		goto out;
	}
	if ((r = ky_random(key, sizeof(key))) != 0)
		goto out;
	if ((r = ceremony_new_fill(d, key, false, NULL, detail, len)) != 0)
		goto out;
	if ((r = ceremony_result_hex(res, "vp", d->new_vp, KY_VP_LEN)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_cleanse(key, sizeof(key));
	return r;
}

/* The master key of one register leaves, one envelope per recipient, only to genuine units
 * of this instance (ceremony_recipient_check); each envelope comes with this unit's transfer
 * signature, and each transfer is recorded. */
static int ceremony_mk_export(struct ky_domain *d, const struct ky_command *c, json_t *res,
                              char *detail, size_t len)
{
	int r = KY_ERR_INTERNAL;
	json_t *envs = NULL, *sigs = NULL;
	struct ky_buf der = {0};
	char *b64 = NULL, *sig = NULL, my_fp[65];
	struct ky_transfer t;
	const uint8_t *key = c->export_current ? d->keys->cur_key : d->keys->new_key;
	const uint8_t *vp = c->export_current ? d->cur_vp : d->new_vp;

	memset(&t, 0, sizeof(t));
	if (c->export_current && d->cur_state != KY_CUR_VALID) {
		r = ceremony_register_refused(detail, len, "current",
		                              ky_cur_state_name(d->cur_state), "VALID");
		goto out;
	}
	if (!c->export_current && d->new_state == KY_NEW_EMPTY) {
		r = ceremony_new_refused(d, "FULL UNCOMMITTED or FULL COMMITTED", detail, len);
		goto out;
	}
	if ((envs = json_array()) == NULL || (sigs = json_array()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = ky_pubkey_fingerprint(d->identity_key, my_fp)) != 0)
		goto out;
	for (size_t i = 0; i < c->nrecips; i++) {
		if (!ky_pkey_is_p521(X509_get0_pubkey(c->recips[i]))) {
			ceremony_detail(detail, len, "recipient %zu is not a P-521 EC certificate",
			                i + 1);
			r = KY_ERR_BAD_COMMAND;
			goto out;
		}
		t.kind = KY_TRANSFER_EXPORT;
		t.counter = d->next_counter;
		memcpy(t.from, d->unit, sizeof(t.from));
		memcpy(t.from_fp, my_fp, sizeof(t.from_fp));
		memcpy(t.vp, vp, KY_VP_LEN);
		if ((r = ceremony_recipient_check(d, c->recips[i], c->recip_ids[i], i, t.to,
		                                  t.to_fp, detail, len)) != 0)
			goto out;
		if ((r = ky_envelope_seal(key, KY_MK_LEN, c->recips[i], &der)) != 0 ||
		    (r = ky_b64_encode(der.data, der.len, &b64)) != 0 ||
		    (r = ceremony_transfer_sign(d, t.to, vp, &der, &sig)) != 0)
			goto out;
		if (json_array_append_new(envs, json_string(b64)) != 0 ||
		    json_array_append_new(sigs, json_string(sig)) != 0) {
			r = KY_ERR_NOMEM;
			goto out;
		}
		if ((r = ceremony_transfer_record(d, &t, res)) != 0)
			goto out;
		free(b64);
		b64 = NULL;
		free(sig);
		sig = NULL;
		ky_buf_free(&der);
	}
	if ((r = ceremony_result_hex(res, "vp", vp, KY_VP_LEN)) != 0)
		goto out;
	r = ceremony_result_set(res, "envelopes", envs);
	envs = NULL; /* transferred */
	if (r != 0)
		goto out;
	r = ceremony_result_set(res, "signatures", sigs);
	sigs = NULL; /* transferred */
	if (r != 0)
		goto out;
	r = 0;
out:
	free(b64);
	free(sig);
	ky_buf_free(&der);
	json_decref(envs);
	json_decref(sigs);
	OPENSSL_cleanse(&t, sizeof(t));
	return r;
}

static int ceremony_mk_import(struct ky_domain *d, const struct ky_command *c, json_t *res,
                              char *detail, size_t len)
{
	int r = KY_ERR_INTERNAL;
	uint8_t key[KY_MK_LEN];
	struct ky_transfer t;

	memset(key, 0, sizeof(key));
	memset(&t, 0, sizeof(t));
	if (d->new_state != KY_NEW_EMPTY) {
		r = ceremony_new_refused(d, "EMPTY", detail, len);
		goto out;
	}
	if (!c->has_vp) { /* the parser demands it; the rule does not rest on that alone */
		r = KY_ERR_BAD_COMMAND;
		goto out;
	}
	t.kind = KY_TRANSFER_IMPORT;
	t.counter = d->next_counter;
	memcpy(t.to, d->unit, sizeof(t.to));
	memcpy(t.vp, c->vp, KY_VP_LEN);
	if ((r = ky_pubkey_fingerprint(d->identity_key, t.to_fp)) != 0 ||
	    (r = ceremony_source_check(d, c, t.from, t.from_fp, detail, len)) != 0)
		goto out;
	if (ky_envelope_open(c->envelope.data, c->envelope.len, d->importer_key, d->importer_cert,
	                     key, KY_MK_LEN) != 0) {
		ceremony_detail(detail, len,
		                "the envelope cannot be opened with the importer key of unit %s",
		                d->unit);
		r = KY_ERR_BAD_COMMAND;
		goto out;
	}
	if ((r = ceremony_new_fill(d, key, true, c->vp, detail, len)) != 0)
		goto out;
	if ((r = ceremony_result_hex(res, "vp", d->new_vp, KY_VP_LEN)) != 0 ||
	    (r = ceremony_transfer_record(d, &t, res)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_cleanse(key, sizeof(key));
	return r;
}

/* Checks that storage can move from the current to the committed new key; the daemon does
 * the moving once the command is accepted. */
static int ceremony_mk_reencipher(struct ky_domain *d, const struct ky_command *c, json_t *res,
                                  char *detail, size_t len)
{
	int r = KY_ERR_INTERNAL;

	if (d->cur_state != KY_CUR_VALID)
		return ceremony_register_refused(detail, len, "current",
		                                 ky_cur_state_name(d->cur_state), "VALID");
	if (d->new_state != KY_NEW_COMMITTED)
		return ceremony_new_refused(d, "FULL COMMITTED", detail, len);
	if (CRYPTO_memcmp(c->vp, d->new_vp, KY_VP_LEN) != 0) {
		ceremony_detail(detail, len,
		                "the command names another key than the committed new master key");
		return KY_ERR_VP_MISMATCH;
	}
	if ((r = ceremony_result_hex(res, "from_vp", d->cur_vp, KY_VP_LEN)) != 0 ||
	    (r = ceremony_result_hex(res, "to_vp", d->new_vp, KY_VP_LEN)) != 0)
		return r;
	return 0;
}

static int ceremony_run_op(struct ky_domain *d, const struct ky_command *c, json_t *res,
                           char *detail, size_t len)
{
	int r = KY_ERR_INTERNAL;

	switch (c->op) {
	case KY_OP_ADMIN_ADD:
		return ceremony_admin_add(d, c, res, detail, len);
	case KY_OP_ADMIN_RM:
		return ceremony_admin_rm(d, c, res, detail, len);
	case KY_OP_THRESHOLDS_SET:
		return ceremony_thresholds_set(d, c, res, detail, len);
	case KY_OP_EXIT_IMPRINT:
		d->sig_threshold = 1;
		d->rev_threshold = 1;
		if ((r = ceremony_result_set(res, "signature", json_integer(1))) != 0 ||
		    (r = ceremony_result_set(res, "revocation", json_integer(1))) != 0)
			return r;
		return 0;
	case KY_OP_MK_LOAD:
		return ceremony_mk_load(d, c, res, detail, len);
	case KY_OP_MK_COMMIT:
		return ceremony_mk_commit(d, c, res, detail, len);
	case KY_OP_MK_SETIMM:
		return ceremony_mk_setimm(d, c, res, detail, len);
	case KY_OP_MK_CLRNEW:
		if (d->new_state == KY_NEW_EMPTY)
			return ceremony_new_refused(d, "FULL UNCOMMITTED or FULL COMMITTED", detail,
			                            len);
		ceremony_new_clear(d);
		return 0;
	case KY_OP_MK_CLRCUR:
		if (d->cur_state != KY_CUR_VALID)
			return ceremony_register_refused(detail, len, "current",
			                                 ky_cur_state_name(d->cur_state), "VALID");
		ceremony_cur_clear(d);
		return 0;
	case KY_OP_ZEROIZE:
		ceremony_zeroize(d);
		return 0;
	case KY_OP_MK_GENERATE:
		return ceremony_mk_generate(d, res, detail, len);
	case KY_OP_MK_EXPORT:
		return ceremony_mk_export(d, c, res, detail, len);
	case KY_OP_MK_IMPORT:
		return ceremony_mk_import(d, c, res, detail, len);
	case KY_OP_MK_REENCIPHER:
		return ceremony_mk_reencipher(d, c, res, detail, len);
	case KY_OP_APIKEY_CREATE:
		if ((r = ceremony_result_set(res, "apikey_id", json_string(c->apikey_id))) != 0 ||
		    (r = ceremony_result_set(res, "name", json_string(c->apikey_name))) != 0 ||
		    (r = ceremony_result_set(res, "role", json_string(c->role))) != 0)
			return r;
		return 0;
	case KY_OP_APIKEY_REVOKE:
		return ceremony_result_set(res, "apikey_id", json_string(c->apikey_id));
	case KY_OP_STORAGE_ACCEPT:
		return 0; /* the unit's key storage is the daemon's (unitd/storage_ops.c) */
	}
	return KY_ERR_INTERNAL;
}

/* ---- addressee ---- */

/* The command was prepared for this state of the unit, not for one it had before its state
 * was created again (the counter restarts at 0 then, so it alone cannot tell). */
static int ceremony_check_incarnation(const struct ky_domain *d, const struct ky_command *c,
                                      char *detail, size_t len)
{
	char want[2 * KY_INCARNATION_LEN + 1], got[2 * KY_INCARNATION_LEN + 1];

	if (ky_domain_has_incarnation(d) &&
	    memcmp(c->incarnation, d->incarnation, KY_INCARNATION_LEN) == 0)
		return 0;
	ky_hex_encode(c->incarnation, KY_INCARNATION_LEN, got);
	ky_hex_encode(d->incarnation, KY_INCARNATION_LEN, want);
	ceremony_detail(detail, len,
	                "command is for incarnation %s of unit %s, the unit's state is "
	                "incarnation %s: the unit was re-created (its state made anew) after the "
	                "command was prepared; prepare the command again",
	                got, d->unit, want);
	return KY_ERR_WRONG_INCARNATION;
}

/* ---- verify ---- */

/* What a command was verified against: apply refuses a state where any of it differs. */
struct ceremony_binding {
	char instance[KY_ID_MAX + 1];
	char unit[KY_ID_MAX + 1];
	uint64_t counter;
	int sig_threshold, rev_threshold;
	size_t nadmins;
	uint8_t skis[KY_MAX_ADMINS][KY_SKI_LEN];
	enum ky_new_state new_state;
	uint8_t new_vp[KY_VP_LEN];
	enum ky_cur_state cur_state;
	uint8_t cur_vp[KY_VP_LEN];
};

struct ky_verified {
	struct ky_command *cmd;
	size_t nsigners;
	char names[KY_MAX_ADMINS][KY_ADMIN_NAME_MAX + 1];
	uint8_t skis[KY_MAX_ADMINS][KY_SKI_LEN];
	struct ceremony_binding bound;
};

static void ceremony_bind(const struct ky_domain *d, struct ceremony_binding *b)
{
	memset(b, 0, sizeof(*b));
	snprintf(b->instance, sizeof(b->instance), "%s", d->instance);
	snprintf(b->unit, sizeof(b->unit), "%s", d->unit);
	b->counter = d->next_counter;
	b->sig_threshold = d->sig_threshold;
	b->rev_threshold = d->rev_threshold;
	b->nadmins = d->nadmins <= KY_MAX_ADMINS ? d->nadmins : KY_MAX_ADMINS;
	for (size_t i = 0; i < b->nadmins; i++)
		memcpy(b->skis[i], d->admins[i].ski, KY_SKI_LEN);
	b->new_state = d->new_state;
	if (d->new_state != KY_NEW_EMPTY)
		memcpy(b->new_vp, d->new_vp, KY_VP_LEN);
	b->cur_state = d->cur_state;
	if (d->cur_state == KY_CUR_VALID)
		memcpy(b->cur_vp, d->cur_vp, KY_VP_LEN);
}

void ky_verified_free(struct ky_verified *v)
{
	if (v == NULL)
		return;
	ky_command_free(v->cmd);
	free(v);
}

const struct ky_command *ky_verified_command(const struct ky_verified *v)
{
	return v->cmd;
}

enum ky_op ky_verified_op(const struct ky_verified *v)
{
	return v->cmd->op;
}

uint64_t ky_verified_counter(const struct ky_verified *v)
{
	return v->cmd->counter;
}

size_t ky_verified_nsigners(const struct ky_verified *v)
{
	return v->nsigners;
}

const char *ky_verified_signer_name(const struct ky_verified *v, size_t i)
{
	return i < v->nsigners ? v->names[i] : NULL;
}

const uint8_t *ky_verified_signer_ski(const struct ky_verified *v, size_t i)
{
	return i < v->nsigners ? v->skis[i] : NULL;
}

/* Step 3: every SignerInfo names an installed admin and verifies under that admin's key
 * (one verification each, on the structure decoded once). Admins who signed are recorded in
 * v once each; *twice is an admin who signed more than once (-1: none). */
static int ceremony_check_signers(const struct ky_domain *d, struct ky_cms_signed *sd,
                                  struct ky_verified *v, int *twice, char *detail, size_t len)
{
	bool seen[KY_MAX_ADMINS] = {false};
	char name[KY_ADMIN_NAME_MAX + 1];
	const size_t n = ky_cms_signed_nsigners(sd);
	int r = KY_ERR_INTERNAL;

	*twice = -1;
	v->nsigners = 0;
	for (size_t i = 0; i < n; i++) {
		const struct ky_cms_signer *s = ky_cms_signed_signer(sd, i);
		int a = ceremony_find_admin(d, s->ski);
		if (a < 0) {
			ceremony_safe_name(s->name, name);
			if (name[0] != '\0') {
				ceremony_detail(detail, len,
				                "signer '%s' is not an administrator of unit %s",
				                name, d->unit);
			} else {
				char hex[2 * EXECUTE_SKI_SHOWN + 1];
				ky_hex_encode(s->ski, EXECUTE_SKI_SHOWN, hex);
				ceremony_detail(detail, len,
				                "signer with key id %s... is not an administrator "
				                "of unit %s",
				                hex, d->unit);
			}
			return KY_ERR_SIGNER_NOT_ADMIN;
		}
		r = ky_cms_signed_verify(sd, i, X509_get0_pubkey(d->admins[a].cert));
		if (r == KY_ERR_WRONG_DIGEST) {
			ceremony_detail(detail, len,
			                "admin '%s' signed with another digest than SHA-512",
			                d->admins[a].name);
			return r;
		}
		if (r != 0) {
			ceremony_detail(detail, len, "the signature of admin '%s' does not verify",
			                d->admins[a].name);
			return KY_ERR_BAD_SIGNATURE;
		}
		if (seen[a]) {
			if (*twice < 0)
				*twice = a;
			continue;
		}
		seen[a] = true;
		memcpy(v->names[v->nsigners], d->admins[a].name, sizeof(v->names[0]));
		memcpy(v->skis[v->nsigners], d->admins[a].ski, KY_SKI_LEN);
		v->nsigners++;
	}
	return 0;
}

/* Step 4's refusal, said for this unit and command. */
static void ceremony_required_detail(const struct ky_domain *d, const struct ky_command *c, int r,
                                     char *detail, size_t len)
{
	switch (r) {
	case KY_ERR_IMPRINT_MODE:
		ceremony_detail(detail, len, "%s is refused: unit %s is in imprint mode",
		                ky_op_name(c->op), d->unit);
		break;
	case KY_ERR_NOT_IMPRINT_MODE:
		ceremony_detail(detail, len, "unit %s has left imprint mode", d->unit);
		break;
	case KY_ERR_KEY_PARTS:
		ceremony_detail(detail, len, "%zu key part%s given; a master key has %d to %d",
		                c->nparts, c->nparts == 1 ? "" : "s", KY_MIN_PARTS, KY_MAX_PARTS);
		break;
	case KY_ERR_THRESHOLD_RANGE:
		ceremony_detail(detail, len, "signature %d, revocation %d: each must be 1 to %d",
		                c->sig, c->rev, KY_MAX_ADMINS);
		break;
	case KY_ERR_THRESHOLD_ABOVE_ADMINS:
		ceremony_detail(detail, len,
		                "unit %s has %zu administrators, fewer than the threshold", d->unit,
		                d->nadmins);
		break;
	default:
		break;
	}
}

int ky_ceremony_verify(const struct ky_domain *d, const uint8_t *cms, size_t n,
                       struct ky_verified **out, struct ky_command_label *label, char *detail,
                       size_t detaillen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_cms_signed *sd = NULL;
	struct ky_verified *v = NULL;
	const uint8_t *content;
	size_t clen = 0;
	int required = 0, twice = -1;

	*out = NULL;
	if (label != NULL)
		memset(label, 0, sizeof(*label));
	ceremony_detail(detail, detaillen, "%s", "");
	if ((v = calloc(1, sizeof(*v))) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	ceremony_bind(d, &v->bound);

	/* 1. form: decoded here, once */
	if ((r = ky_cms_signed_parse(cms, n, &sd)) != 0) {
		if (r == KY_ERR_BAD_COMMAND)
			ceremony_detail(detail, detaillen, "%s",
			                "a signer of the command is not identified by a 32-byte "
			                "key id");
		else if (r == KY_ERR_NOT_COMMAND)
			ceremony_detail(detail, detaillen, "%s",
			                "the command is not a CMS SignedData with its content");
		goto out;
	}
	content = ky_cms_signed_content(sd, &clen);
	if ((r = ceremony_command_parse(content, clen, &v->cmd, detail, detaillen)) != 0)
		goto out;
	if (label != NULL) {
		label->parsed = true;
		label->op = v->cmd->op;
		label->counter = v->cmd->counter;
	}

	/* 2. addressee and counter */
	if (strcmp(v->cmd->instance, d->instance) != 0) {
		ceremony_detail(detail, detaillen,
		                "command is for instance '%s', this unit belongs to '%s'",
		                v->cmd->instance, d->instance);
		r = KY_ERR_WRONG_INSTANCE;
		goto out;
	}
	if (strcmp(v->cmd->unit, d->unit) != 0) {
		ceremony_detail(detail, detaillen, "command is for unit '%s', this is unit '%s'",
		                v->cmd->unit, d->unit);
		r = KY_ERR_WRONG_UNIT;
		goto out;
	}
	if ((r = ceremony_check_incarnation(d, v->cmd, detail, detaillen)) != 0)
		goto out;
	if (v->cmd->counter != d->next_counter) {
		ceremony_detail(detail, detaillen,
		                "command counter %llu, unit %s expected %llu: prepare the "
		                "command again",
		                (unsigned long long)v->cmd->counter, d->unit,
		                (unsigned long long)d->next_counter);
		r = KY_ERR_WRONG_COUNTER;
		goto out;
	}

	/* 3. signatures */
	if ((r = ceremony_check_signers(d, sd, v, &twice, detail, detaillen)) != 0)
		goto out;

	/* 4. mode */
	if ((r = ky_ceremony_required(d, v->cmd, &required)) != 0) {
		ceremony_required_detail(d, v->cmd, r, detail, detaillen);
		goto out;
	}

	/* 5. enough distinct admins */
	if ((int)v->nsigners < required) {
		if (twice >= 0) {
			ceremony_detail(detail, detaillen,
			                "admin '%s' signed twice; it counts once: %zu of %d "
			                "required signatures",
			                d->admins[twice].name, v->nsigners, required);
			r = KY_ERR_DUPLICATE_SIGNER;
		} else {
			ceremony_detail(detail, detaillen, "%zu of %d required signatures",
			                v->nsigners, required);
			r = KY_ERR_NOT_ENOUGH_SIGNATURES;
		}
		goto out;
	}
	*out = v;
	v = NULL; /* transferred */
	r = 0;
out:
	ky_verified_free(v);
	ky_cms_signed_free(sd);
	return r;
}

/* ---- apply ---- */

int ky_ceremony_apply(struct ky_domain *d, const struct ky_verified *v, json_t **result,
                      char *detail, size_t detaillen)
{
	int r = KY_ERR_INTERNAL;
	struct ceremony_binding now;
	json_t *res = NULL;

	*result = NULL;
	ceremony_detail(detail, detaillen, "%s", "");
	if (d->keys == NULL) {
		r = KY_ERR_INTERNAL;
		goto out;
	}
	/* 6. the state is still the one every check above was made against */
	ceremony_bind(d, &now);
	if (now.counter != v->bound.counter) {
		ceremony_detail(detail, detaillen,
		                "command counter %llu: another command reached unit %s while this "
		                "one was being verified (now at %llu): prepare the command again",
		                (unsigned long long)v->cmd->counter, d->unit,
		                (unsigned long long)d->next_counter);
		r = KY_ERR_WRONG_COUNTER;
		goto out;
	}
	if (memcmp(&now, &v->bound, sizeof(now)) != 0) {
		ceremony_detail(detail, detaillen,
		                "the state of unit %s is not the one the command was verified "
		                "against",
		                d->unit);
		r = KY_ERR_STATE_CHANGED;
		goto out;
	}

	/* 7. the op itself */
	if ((res = json_pack("{s:s}", "op", ky_op_name(v->cmd->op))) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = ceremony_run_op(d, v->cmd, res, detail, detaillen)) != 0)
		goto out;
	d->next_counter++;
	if ((r = ceremony_result_set(res, "next_counter",
	                             json_integer((json_int_t)d->next_counter))) != 0)
		goto out;
	*result = res;
	res = NULL; /* transferred */
	ceremony_detail(detail, detaillen, "%s", "");
	r = 0;
out:
	json_decref(res);
	return r;
}

int ky_ceremony_execute(struct ky_domain *d, const uint8_t *cms, size_t n, json_t **result,
                        char *detail, size_t detaillen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_verified *v = NULL;

	*result = NULL;
	if ((r = ky_ceremony_verify(d, cms, n, &v, NULL, detail, detaillen)) != 0)
		goto out;
	if ((r = ky_ceremony_apply(d, v, result, detail, detaillen)) != 0)
		goto out;
	r = 0;
out:
	ky_verified_free(v);
	return r;
}
