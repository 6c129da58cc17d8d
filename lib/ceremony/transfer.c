/* Master key transfers between the units of one instance, and their records.
 *
 * A master key leaves a unit (mk-export) only to a recipient chain
 *   importer certificate -> identity certificate -> this unit's own unit trust anchor
 * whose identity names this instance (OU) and is not this unit. The exporting unit signs, with
 * its identity key, a transfer statement per envelope:
 *   "kyok-mk-transfer-v1" 0x00 instance 0x00 from-unit 0x00 to-unit 0x00 vp(32)
 *   SHA-256(envelope DER)(32)
 * and mk-import accepts an envelope only with that signature by a sender whose identity chains
 * to the same anchor. Both units record the transfer with both identities (state "transfers").
 */
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

#define TRANSFER_TAG "kyok-mk-transfer-v1"

static int transfer_fp(X509 *cert, char fp[65])
{
	EVP_PKEY *pk = X509_get0_pubkey(cert);

	if (pk == NULL)
		return KY_ERR_BAD_CERT;
	return ky_pubkey_fingerprint(pk, fp);
}

/* True when cert carries the public key of one of d's administrators. */
static bool transfer_is_admin_key(const struct ky_domain *d, X509 *cert)
{
	EVP_PKEY *pk = X509_get0_pubkey(cert);

	for (size_t i = 0; pk != NULL && i < d->nadmins; i++)
		if (EVP_PKEY_eq(X509_get0_pubkey(d->admins[i].cert), pk) == 1)
			return true;
	return false;
}

/* An identity certificate of a unit of d's instance, issued by d's anchor: its unit id. */
static int transfer_identity_check(const struct ky_domain *d, X509 *identity, X509 *leaf,
                                   char unit[KY_ID_MAX + 1])
{
	char ou[KY_ID_MAX + 1];

	/* A certificate without an OU names no instance at all: it is no unit's. */
	if (ky_cert_ou(identity, ou, sizeof(ou)) != 0)
		return KY_ERR_RECIPIENT_NOT_UNIT;
	if (strcmp(ou, d->instance) != 0)
		return KY_ERR_RECIPIENT_INSTANCE;
	if (d->anchor_cert == NULL ||
	    ky_cert_chain_verify(leaf != NULL ? leaf : identity, leaf != NULL ? identity : NULL,
	                         d->anchor_cert) != 0)
		return KY_ERR_RECIPIENT_NOT_UNIT;
	if (ky_cert_cn(identity, unit, KY_ID_MAX + 1) != 0 ||
	    !ceremony_id_valid(unit, strlen(unit), false))
		return KY_ERR_RECIPIENT_NOT_UNIT;
	if (leaf != NULL && (ky_cert_ou(leaf, ou, sizeof(ou)) != 0 || strcmp(ou, d->instance) != 0))
		return KY_ERR_RECIPIENT_NOT_UNIT; /* the anchor's unit made it: not an importer */
	return 0;
}

int ceremony_recipient_check(const struct ky_domain *d, X509 *importer, X509 *identity, size_t i,
                             char to[KY_ID_MAX + 1], char to_fp[65], char *detail, size_t len)
{
	int r = KY_ERR_INTERNAL;
	char ou[KY_ID_MAX + 1] = "";

	if (importer == NULL || identity == NULL) {
		ceremony_detail(detail, len, "recipient %zu is not an importer and identity chain",
		                i + 1);
		return KY_ERR_BAD_COMMAND;
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(identity), d->identity_key) == 1 ||
	    EVP_PKEY_eq(X509_get0_pubkey(importer), d->importer_key) == 1) {
		ceremony_detail(detail, len, "recipient %zu is unit %s itself", i + 1, d->unit);
		return KY_ERR_RECIPIENT_SELF;
	}
	if (transfer_is_admin_key(d, importer) || transfer_is_admin_key(d, identity)) {
		ceremony_detail(detail, len,
		                "recipient %zu carries the signature key of an administrator of "
		                "unit %s",
		                i + 1, d->unit);
		return KY_ERR_RECIPIENT_ADMIN;
	}
	r = transfer_identity_check(d, identity, importer, to);
	if (r == KY_ERR_RECIPIENT_INSTANCE) {
		if (ky_cert_ou(identity, ou, sizeof(ou)) != 0)
			ou[0] = '\0';
		ceremony_detail(detail, len,
		                "recipient %zu names instance '%s', unit %s belongs to '%s'", i + 1,
		                ou, d->unit, d->instance);
		return r;
	}
	if (r != 0) {
		ceremony_detail(detail, len,
		                "recipient %zu: the importer certificate is not issued by its "
		                "identity, or the identity is not issued by the unit trust anchor "
		                "of instance '%s'",
		                i + 1, d->instance);
		return r;
	}
	if (strcmp(to, d->unit) == 0) {
		ceremony_detail(detail, len, "recipient %zu is named unit %s, this unit", i + 1,
		                d->unit);
		return KY_ERR_RECIPIENT_SELF;
	}
	if ((r = transfer_fp(identity, to_fp)) != 0)
		return r;
	return 0;
}

/* The statement the exporting unit signs for one envelope. */
static int transfer_statement(const char *instance, const char *from, const char *to,
                              const uint8_t vp[KY_VP_LEN], const struct ky_buf *env,
                              struct ky_buf *out)
{
	uint8_t md[32];
	static const uint8_t zero = 0;

	if (EVP_Digest(env->data, env->len, md, NULL, EVP_sha256(), NULL) != 1)
		return KY_ERR_CRYPTO;
	if (ky_buf_append(out, TRANSFER_TAG, sizeof(TRANSFER_TAG)) != 0 ||
	    ky_buf_append(out, instance, strlen(instance)) != 0 ||
	    ky_buf_append(out, &zero, 1) != 0 || ky_buf_append(out, from, strlen(from)) != 0 ||
	    ky_buf_append(out, &zero, 1) != 0 || ky_buf_append(out, to, strlen(to)) != 0 ||
	    ky_buf_append(out, &zero, 1) != 0 || ky_buf_append(out, vp, KY_VP_LEN) != 0 ||
	    ky_buf_append(out, md, sizeof(md)) != 0)
		return KY_ERR_NOMEM;
	return 0;
}

int ceremony_transfer_sign(const struct ky_domain *d, const char *to, const uint8_t vp[KY_VP_LEN],
                           const struct ky_buf *env, char **sig_b64)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf msg = {0}, sig = {0};

	*sig_b64 = NULL;
	if ((r = transfer_statement(d->instance, d->unit, to, vp, env, &msg)) != 0 ||
	    (r = ky_sign(d->identity_key, msg.data, msg.len, &sig)) != 0 ||
	    (r = ky_b64_encode(sig.data, sig.len, sig_b64)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&msg);
	ky_buf_free(&sig);
	return r;
}

int ceremony_source_check(const struct ky_domain *d, const struct ky_command *c,
                          char from[KY_ID_MAX + 1], char from_fp[65], char *detail, size_t len)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf msg = {0};

	if (c->source == NULL || c->source_sig.len == 0) {
		ceremony_detail(detail, len, "the command names no sending unit");
		r = KY_ERR_BAD_COMMAND;
		goto out;
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(c->source), d->identity_key) == 1) {
		ceremony_detail(detail, len, "the sending unit named is unit %s itself", d->unit);
		r = KY_ERR_SOURCE_NOT_UNIT;
		goto out;
	}
	if (transfer_identity_check(d, c->source, NULL, from) != 0 || strcmp(from, d->unit) == 0) {
		ceremony_detail(
		    detail, len,
		    "the sending unit's identity is not issued by the unit trust anchor "
		    "of instance '%s'",
		    d->instance);
		r = KY_ERR_SOURCE_NOT_UNIT;
		goto out;
	}
	if ((r = transfer_statement(d->instance, from, d->unit, c->vp, &c->envelope, &msg)) != 0)
		goto out;
	if (ky_verify(X509_get0_pubkey(c->source), msg.data, msg.len, c->source_sig.data,
	              c->source_sig.len) != 0) {
		ceremony_detail(
		    detail, len,
		    "the transfer signature of unit %s does not verify for this envelope, "
		    "this unit and this verification pattern",
		    from);
		r = KY_ERR_SOURCE_NOT_UNIT;
		goto out;
	}
	if ((r = transfer_fp(c->source, from_fp)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&msg);
	return r;
}

static const char *transfer_kind_name(enum ky_transfer_kind k)
{
	return k == KY_TRANSFER_EXPORT ? "mk-export" : "mk-import";
}

static json_t *transfer_json(const struct ky_transfer *t)
{
	char vp[2 * KY_VP_LEN + 1];

	ky_hex_encode(t->vp, KY_VP_LEN, vp);
	return json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:s}", "op", transfer_kind_name(t->kind),
	                 "counter", (json_int_t)t->counter, "from", t->from, "from_identity",
	                 t->from_fp, "to", t->to, "to_identity", t->to_fp, "vp", vp);
}

int ceremony_transfer_record(struct ky_domain *d, const struct ky_transfer *t, json_t *res)
{
	json_t *list = json_object_get(res, "transfers");

	if (list == NULL) {
		if ((list = json_array()) == NULL ||
		    json_object_set_new(res, "transfers", list) != 0)
			return KY_ERR_NOMEM;
	}
	if (json_array_append_new(list, transfer_json(t)) != 0)
		return KY_ERR_NOMEM;
	if (d->ntransfers == KY_MAX_TRANSFERS) {
		memmove(&d->transfers[0], &d->transfers[1],
		        (KY_MAX_TRANSFERS - 1) * sizeof(d->transfers[0]));
		d->ntransfers--;
	}
	d->transfers[d->ntransfers++] = *t;
	return 0;
}

json_t *ceremony_transfers_json(const struct ky_domain *d)
{
	json_t *a = json_array();

	for (size_t i = 0; a != NULL && i < d->ntransfers && i < KY_MAX_TRANSFERS; i++) {
		if (json_array_append_new(a, transfer_json(&d->transfers[i])) != 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static bool transfer_fp_valid(const char *s)
{
	if (strlen(s) != 64)
		return false;
	for (size_t i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

int ceremony_transfers_parse(json_t *a, struct ky_domain *d)
{
	static const char *const keys[] = {"op", "counter",     "from", "from_identity",
	                                   "to", "to_identity", "vp",   NULL};

	if (!json_is_array(a) || json_array_size(a) > KY_MAX_TRANSFERS)
		return KY_ERR_STATE_CORRUPT;
	for (size_t i = 0; i < json_array_size(a); i++) {
		json_t *o = json_array_get(a, i), *counter;
		struct ky_transfer *t = &d->transfers[i];
		const char *op, *from, *to, *ffp, *tfp, *vp;

		if (!json_is_object(o) || json_object_size(o) != 7 ||
		    !ceremony_json_only_keys(o, keys))
			return KY_ERR_STATE_CORRUPT;
		op = ceremony_json_str(o, "op");
		from = ceremony_json_str(o, "from");
		to = ceremony_json_str(o, "to");
		ffp = ceremony_json_str(o, "from_identity");
		tfp = ceremony_json_str(o, "to_identity");
		vp = ceremony_json_str(o, "vp");
		counter = json_object_get(o, "counter");
		if (op == NULL || from == NULL || to == NULL || ffp == NULL || tfp == NULL ||
		    vp == NULL || !json_is_integer(counter) || json_integer_value(counter) < 0 ||
		    !ceremony_id_valid(from, strlen(from), false) ||
		    !ceremony_id_valid(to, strlen(to), false) || !transfer_fp_valid(ffp) ||
		    !transfer_fp_valid(tfp) || ky_hex_decode(vp, t->vp, KY_VP_LEN) != 0)
			return KY_ERR_STATE_CORRUPT;
		if (strcmp(op, transfer_kind_name(KY_TRANSFER_EXPORT)) == 0)
			t->kind = KY_TRANSFER_EXPORT;
		else if (strcmp(op, transfer_kind_name(KY_TRANSFER_IMPORT)) == 0)
			t->kind = KY_TRANSFER_IMPORT;
		else
			return KY_ERR_STATE_CORRUPT;
		/* A unit records only transfers it took part in. */
		if (strcmp(t->kind == KY_TRANSFER_EXPORT ? from : to, d->unit) != 0)
			return KY_ERR_STATE_CORRUPT;
		t->counter = (uint64_t)json_integer_value(counter);
		memcpy(t->from, from, strlen(from) + 1);
		memcpy(t->to, to, strlen(to) + 1);
		memcpy(t->from_fp, ffp, 65);
		memcpy(t->to_fp, tfp, 65);
		d->ntransfers = i + 1;
	}
	return 0;
}
