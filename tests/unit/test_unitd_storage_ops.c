/* unitd/storage_ops.c: what the admin endpoint shows of key storage, the records under each
 * master key register (GET /v1/admin/state, "storage") and the API key rows with whether
 * each one's tag checks (GET /v1/admin/apikeys): true, false for a row altered by hand, null
 * when the unit holds no master key to tell; and the guards of the commands that would lose
 * records (mk-clrcur, mk-setimm), for commands signed and verified here. On one SQLite file
 * (tests/unit/unitd_fixture.h), no mocks. apikey-create, apikey-revoke and storage-accept as
 * the unit carries them out between the signature check and the state write: what they
 * store, what is done already, and each refusal. Re-encipherment is the integration tests'
 * (t_rotate.sh).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "kyok/store.h"
#include "unitd/storage_ops.h"
#include "unitd_fixture.h"

/* A tagged API key row written through unit i, as apikey-create writes it. */
static void apikey_add(struct fx *f, size_t i, const char *id, const char *role)
{
	struct ky_store_apikey k = {0};
	struct ky_kms kms;
	int64_t now = (int64_t)time(NULL);

	snprintf(k.id, sizeof(k.id), "%s", id);
	snprintf(k.name, sizeof(k.name), "name-%s", id);
	snprintf(k.role, sizeof(k.role), "%s", role);
	assert_int_equal(ky_random(k.hash, sizeof(k.hash)), 0);
	k.created = now;
	assert_int_equal(unitd_keystore_enter(f->u[i].ks, &kms), 0);
	assert_int_equal(unitd_keystore_apikey_seal(f->u[i].ks, &kms, now, &k), 0);
	assert_true(k.has_mac);
	assert_int_equal(ky_store_apikey_insert(unitd_keystore_store(f->u[i].ks), &k), 0);
	unitd_keystore_leave(f->u[i].ks);
}

/* The "verified" member of API key id in a GET /v1/admin/apikeys listing. */
static json_t *verified_of(json_t *listing, const char *id)
{
	json_t *a = json_object_get(listing, "apikeys"), *e;
	size_t i;

	assert_true(json_is_array(a));
	json_array_foreach(a, i, e)
	{
		if (strcmp(json_string_value(json_object_get(e, "id")), id) == 0)
			return json_object_get(e, "verified");
	}
	fail_msg("API key '%s' is not listed", id);
	return NULL;
}

/* An administrator, installed in f->d (thresholds 1/1: out of imprint mode) through the
 * state's sealed form, so that commands it signs verify. */
struct admin {
	EVP_PKEY *key;
	X509 *cert;
};

static void admin_install(struct fx *f, struct admin *a)
{
	struct ky_buf b = {0};
	char *pem = NULL, *text;
	json_t *j;

	assert_int_equal(ky_ec_generate(&a->key), 0);
	assert_int_equal(ky_cert_self_signed(a->key, "alice", "kyok administration", 30, &a->cert),
	                 0);
	assert_int_equal(ky_cert_to_pem(a->cert, &pem), 0);
	assert_int_equal(ky_domain_serialize(f->d, &b), 0);
	assert_non_null(j = json_loadb((const char *)b.data, b.len, 0, NULL));
	ky_buf_free(&b);
	assert_int_equal(json_object_set_new(j, "admins", json_pack("[s]", pem)), 0);
	assert_int_equal(json_object_set_new(j, "signature_threshold", json_integer(1)), 0);
	assert_int_equal(json_object_set_new(j, "revocation_threshold", json_integer(1)), 0);
	free(pem);
	assert_non_null(text = json_dumps(j, JSON_COMPACT));
	json_decref(j);
	ky_domain_free(f->d);
	f->d = NULL;
	assert_int_equal(ky_domain_parse((const uint8_t *)text, strlen(text), &f->d), 0);
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	assert_int_equal(f->d->nadmins, 1);
}

static void admin_release(struct admin *a)
{
	EVP_PKEY_free(a->key);
	X509_free(a->cert);
}

/* An API key for apikey-create and -revoke commands. */
struct apikey {
	char id[KY_UUID_LEN + 1];
	const char *role;
	uint8_t hash[KY_APIKEY_HASH_LEN];
};

static void apikey_new(struct apikey *k, const char *role)
{
	assert_int_equal(ky_uuid_new(k->id), 0);
	k->role = role;
	assert_int_equal(ky_random(k->hash, sizeof(k->hash)), 0);
}

/* Command op for f->d (for API key k when not NULL), signed by a and verified as the admin
 * endpoint verifies it. */
static struct ky_verified *verified_apikey(struct fx *f, const struct admin *a, enum ky_op op,
                                           const struct apikey *k)
{
	struct ky_command *c = ky_command_new();
	struct ky_buf json = {0}, der = {0};
	struct ky_verified *v = NULL;

	assert_non_null(c);
	snprintf(c->instance, sizeof(c->instance), "%s", f->d->instance);
	snprintf(c->unit, sizeof(c->unit), "%s", f->d->unit);
	memcpy(c->incarnation, f->d->incarnation, KY_INCARNATION_LEN);
	c->counter = f->d->next_counter;
	c->op = op;
	if (k != NULL) {
		snprintf(c->apikey_id, sizeof(c->apikey_id), "%s", k->id);
		snprintf(c->apikey_name, sizeof(c->apikey_name), "app");
		snprintf(c->role, sizeof(c->role), "%s", k->role);
		memcpy(c->hash, k->hash, sizeof(c->hash));
	}
	assert_int_equal(ky_command_encode(c, &json), 0);
	ky_command_free(c);
	assert_int_equal(ky_cms_unsigned(json.data, json.len, &der), 0);
	assert_int_equal(ky_cms_add_signer(&der, a->cert, a->key), 0);
	assert_int_equal(
	    ky_ceremony_verify(f->d, der.data, der.len, &v, NULL, f->err, sizeof(f->err)), 0);
	ky_buf_free(&json);
	ky_buf_free(&der);
	return v;
}

static struct ky_verified *verified(struct fx *f, const struct admin *a, enum ky_op op)
{
	return verified_apikey(f, a, op, NULL);
}

static json_int_t member_int(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

static void test_records_under_each_register(void **state)
{
	struct fx *f = *state;
	struct unitd_storage *so = NULL, *none = NULL;
	uint8_t other[KY_VP_LEN];
	char id[KY_UUID_LEN + 1];
	json_int_t before;
	json_t *j, *re;

	fx_unit_open(f, 0, "", true);
	assert_int_equal(unitd_storage_new(f->u[0].ks, 0, 0, &so), 0);
	/* The first key brings the unit's own secrets along (the storage integrity key). */
	fx_key_create(f, 0, "k1", id);
	j = unitd_storage_json(so, f->vp, NULL);
	assert_non_null(j);
	before = member_int(j, "records_under_current");
	assert_true(before >= 1);
	json_decref(j);

	fx_key_create(f, 0, "k2", id);
	fx_key_create(f, 0, "k3", id);
	/* A VP no record is under: none counted there. */
	assert_int_equal(ky_random(other, sizeof(other)), 0);
	j = unitd_storage_json(so, f->vp, other);
	assert_non_null(j);
	assert_int_equal(member_int(j, "records_under_current"), before + 2);
	assert_int_equal(member_int(j, "records_under_new"), 0);
	assert_null(json_object_get(j, "store_error"));
	re = json_object_get(j, "reencipher");
	assert_true(json_is_false(json_object_get(re, "running")));
	assert_true(json_is_null(json_object_get(re, "error")));
	json_decref(j);
	{
		bool running = true;
		uint64_t done = 1, total = 1;

		unitd_storage_progress(so, &running, &done, &total);
		assert_false(running);
		assert_int_equal(done, 0);
		assert_int_equal(total, 0);
	}
	unitd_storage_free(so);

	/* Without key storage: null, and no API key listing. */
	assert_int_equal(unitd_storage_new(NULL, 0, 0, &none), 0);
	j = unitd_storage_json(none, f->vp, NULL);
	assert_true(json_is_null(j));
	json_decref(j);
	assert_int_equal(unitd_storage_apikeys_json(none, &j), KY_ERR_NO_STORE);
	assert_null(j);
	unitd_storage_free(none);
}

static void test_apikey_rows_verified(void **state)
{
	struct fx *f = *state;
	struct unitd_storage *so = NULL, *blind = NULL;
	json_t *j = NULL;

	fx_unit_open(f, 0, "", true);
	assert_int_equal(unitd_storage_new(f->u[0].ks, 0, 0, &so), 0);
	apikey_add(f, 0, "ak-reader", "Reader");
	apikey_add(f, 0, "ak-writer", "Writer");
	assert_int_equal(unitd_storage_apikeys_json(so, &j), 0);
	assert_int_equal(json_array_size(json_object_get(j, "apikeys")), 2);
	assert_true(json_is_true(verified_of(j, "ak-reader")));
	assert_true(json_is_true(verified_of(j, "ak-writer")));
	json_decref(j);

	/* A role raised by hand: that row does not verify, the other still does. */
	fx_sql(f, "UPDATE api_keys SET role = 'Manager' WHERE id = 'ak-reader'");
	assert_int_equal(unitd_storage_apikeys_json(so, &j), 0);
	assert_true(json_is_false(verified_of(j, "ak-reader")));
	assert_true(json_is_true(verified_of(j, "ak-writer")));
	json_decref(j);

	/* A unit without a master key lists the rows but cannot tell: null. */
	fx_unit_open(f, 1, "", false);
	assert_int_equal(unitd_storage_new(f->u[1].ks, 0, 0, &blind), 0);
	assert_int_equal(unitd_storage_apikeys_json(blind, &j), 0);
	assert_true(json_is_null(verified_of(j, "ak-reader")));
	assert_true(json_is_null(verified_of(j, "ak-writer")));
	json_decref(j);
	unitd_storage_free(blind);
	unitd_storage_free(so);
}

/* Clearing or replacing the current master key is refused while any record is under it:
 * those records would be lost with it. */
static void test_register_guards(void **state)
{
	struct fx *f = *state;
	struct unitd_storage *so = NULL, *none = NULL;
	struct admin a = {0};
	struct ky_verified *clrcur, *setimm, *clrnew;
	char id[KY_UUID_LEN + 1], detail[512];

	admin_install(f, &a);
	fx_unit_open(f, 0, "", true);
	assert_int_equal(unitd_storage_new(f->u[0].ks, 0, 0, &so), 0);
	clrcur = verified(f, &a, KY_OP_MK_CLRCUR);
	setimm = verified(f, &a, KY_OP_MK_SETIMM);
	clrnew = verified(f, &a, KY_OP_MK_CLRNEW);

	/* Nothing in key storage yet: allowed. */
	assert_int_equal(unitd_storage_before_write(so, f->d, clrcur, detail, sizeof(detail)), 0);

	fx_key_create(f, 0, "k1", id);
	assert_int_equal(unitd_storage_before_write(so, f->d, clrcur, detail, sizeof(detail)),
	                 KY_ERR_RECORDS_UNDER_CURRENT);
	assert_non_null(strstr(detail, "in key storage are under the current master key"));
	assert_int_equal(unitd_storage_before_write(so, f->d, setimm, detail, sizeof(detail)),
	                 KY_ERR_NOT_REENCIPHERED);
	/* The new register is empty: clearing it guards nothing. */
	assert_int_equal(unitd_storage_before_write(so, f->d, clrnew, detail, sizeof(detail)), 0);

	/* A unit without key storage has no records to guard. */
	assert_int_equal(unitd_storage_new(NULL, 0, 0, &none), 0);
	assert_int_equal(unitd_storage_before_write(none, f->d, clrcur, detail, sizeof(detail)), 0);
	unitd_storage_free(none);

	ky_verified_free(clrcur);
	ky_verified_free(setimm);
	ky_verified_free(clrnew);
	unitd_storage_free(so);
	admin_release(&a);
}

/* unitd_storage_before_write with a fresh detail; the detail in f->err. */
static int before_write(struct fx *f, struct unitd_storage *so, const struct ky_verified *v)
{
	f->err[0] = '\0';
	return unitd_storage_before_write(so, f->d, v, f->err, sizeof(f->err));
}

/* Command op for API key k, signed by a, carried out through so: before_write's result. */
static int apikey_op(struct fx *f, const struct admin *a, struct unitd_storage *so, enum ky_op op,
                     const struct apikey *k)
{
	struct ky_verified *v = verified_apikey(f, a, op, k);
	int r = before_write(f, so, v);

	ky_verified_free(v);
	return r;
}

static void detail_has(const struct fx *f, const char *want)
{
	if (strstr(f->err, want) == NULL)
		fail_msg("detail '%s' does not say '%s'", f->err, want);
}

/* The stored row of API key id, through unit i's store. */
static void apikey_row(struct fx *f, size_t i, const char *id, struct ky_store_apikey *k)
{
	assert_int_equal(ky_store_apikey_get(unitd_keystore_store(f->u[i].ks), id, k), 0);
}

/* A unit state like f->d but with another current master key. */
static struct ky_domain *other_domain(struct fx *f)
{
	struct ky_domain *keep = f->d, *other;
	uint8_t mk[KY_MK_LEN], vp[KY_VP_LEN];

	memcpy(mk, f->mk, sizeof(mk));
	memcpy(vp, f->vp, sizeof(vp));
	f->d = NULL;
	fx_domain(f);
	other = f->d;
	f->d = keep;
	memcpy(f->mk, mk, sizeof(mk));
	memcpy(f->vp, vp, sizeof(vp));
	OPENSSL_cleanse(mk, sizeof(mk));
	return other;
}

/* apikey-create stores the hash, tagged; the same key again is done already; what would
 * give an id or a secret to a second key, or write a revoked key again, is refused. */
static void test_apikey_create(void **state)
{
	struct fx *f = *state;
	struct unitd_storage *so = NULL;
	struct admin a = {0};
	struct apikey k1, k2, same_hash, other_hash, other_role;
	struct ky_verified *v;
	struct ky_store_apikey row;
	json_t *j = NULL;

	admin_install(f, &a);
	fx_unit_open(f, 0, "", true);
	assert_int_equal(unitd_storage_new(f->u[0].ks, 0, 0, &so), 0);
	apikey_new(&k1, "Reader");
	apikey_new(&k2, "Writer");

	v = verified_apikey(f, &a, KY_OP_APIKEY_CREATE, &k1);
	assert_int_equal(before_write(f, so, v), 0);
	apikey_row(f, 0, k1.id, &row);
	assert_memory_equal(row.hash, k1.hash, KY_APIKEY_HASH_LEN);
	assert_string_equal(row.role, "Reader");
	assert_string_equal(row.name, "app");
	assert_true(row.has_mac);
	assert_int_equal(row.revoked, 0);
	/* Sent to every unit, and again after an interruption: the same key is done. */
	assert_int_equal(before_write(f, so, v), 0);
	ky_verified_free(v);
	assert_int_equal(unitd_storage_apikeys_json(so, &j), 0);
	assert_int_equal(json_array_size(json_object_get(j, "apikeys")), 1);
	assert_true(json_is_true(verified_of(j, k1.id)));
	json_decref(j);

	/* The same secret under another id. */
	same_hash = k2;
	memcpy(same_hash.hash, k1.hash, KY_APIKEY_HASH_LEN);
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &same_hash), KY_ERR_EXISTS);
	detail_has(f, "the same API key secret is registered under another id");

	/* The id of a stored key with another secret, or another role. */
	other_hash = k1;
	other_hash.hash[0] ^= 1;
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &other_hash), KY_ERR_EXISTS);
	detail_has(f, "exists already");
	other_role = k1;
	other_role.role = "Manager";
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &other_role), KY_ERR_EXISTS);
	detail_has(f, "exists already");
	apikey_row(f, 0, k1.id, &row);
	assert_string_equal(row.role, "Reader");

	/* Revoked: never created again, whatever the command says. */
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_REVOKE, &k1), 0);
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &k1), KY_ERR_EXISTS);
	detail_has(f, "exists already (revoked)");
	apikey_row(f, 0, k1.id, &row);
	assert_true(row.revoked != 0);

	/* Another key alongside. */
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &k2), 0);
	apikey_row(f, 0, k2.id, &row);
	assert_string_equal(row.role, "Writer");

	unitd_storage_free(so);
	admin_release(&a);
}

/* A stored row of the key that does not verify, or that was deleted by hand, is not written
 * again from the command: a new key under another name is the way. */
static void test_apikey_create_row_altered(void **state)
{
	struct fx *f = *state;
	struct unitd_storage *so = NULL;
	struct admin a = {0};
	struct apikey undone, untagged, deleted, other;

	admin_install(f, &a);
	fx_unit_open(f, 0, "", true);
	assert_int_equal(unitd_storage_new(f->u[0].ks, 0, 0, &so), 0);
	apikey_new(&undone, "Reader");
	apikey_new(&untagged, "Reader");
	apikey_new(&deleted, "Reader");
	apikey_new(&other, "Reader");
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &undone), 0);
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &untagged), 0);
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &deleted), 0);
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_REVOKE, &undone), 0);

	/* A revocation undone by hand. */
	fx_sql(f, "UPDATE api_keys SET revoked = 0 WHERE id = '%s'", undone.id);
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &undone),
	                 KY_ERR_APIKEY_ROW_ALTERED);
	detail_has(f, "its stored row does not verify (altered)");

	/* A tag removed by hand. */
	fx_sql(f, "UPDATE api_keys SET mac = NULL WHERE id = '%s'", untagged.id);
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &untagged),
	                 KY_ERR_APIKEY_ROW_ALTERED);
	detail_has(f, "(it has no tag)");

	/* Deleted by hand: the storage digest still holds it. */
	fx_sql(f, "DELETE FROM api_keys WHERE id = '%s'", deleted.id);
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &deleted),
	                 KY_ERR_APIKEY_ROW_ALTERED);
	detail_has(f, "deleted from key storage by hand");

	/* A row of another key that does not verify, with that key's id and another secret. */
	other = untagged;
	other.hash[0] ^= 1;
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &other), KY_ERR_EXISTS);
	detail_has(f, "exists already (its row does not verify)");

	unitd_storage_free(so);
	admin_release(&a);
}

/* apikey-revoke marks the row revoked, tagged again; again is done already; an unknown id is
 * refused; a row that does not verify is revoked all the same. */
static void test_apikey_revoke(void **state)
{
	struct fx *f = *state;
	struct unitd_storage *so = NULL;
	struct admin a = {0};
	struct apikey k, altered, unknown;
	struct ky_verified *v;
	struct ky_store_apikey row;
	int64_t revoked;
	json_t *j = NULL;

	admin_install(f, &a);
	fx_unit_open(f, 0, "", true);
	assert_int_equal(unitd_storage_new(f->u[0].ks, 0, 0, &so), 0);
	apikey_new(&k, "Writer");
	apikey_new(&altered, "Reader");
	apikey_new(&unknown, "Reader");
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &k), 0);
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &altered), 0);

	v = verified_apikey(f, &a, KY_OP_APIKEY_REVOKE, &k);
	assert_int_equal(before_write(f, so, v), 0);
	apikey_row(f, 0, k.id, &row);
	assert_true(row.revoked > 0);
	revoked = row.revoked;
	/* Re-sent: done already, the revocation date kept. */
	assert_int_equal(before_write(f, so, v), 0);
	apikey_row(f, 0, k.id, &row);
	assert_int_equal(row.revoked, revoked);
	ky_verified_free(v);

	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_REVOKE, &unknown), KY_ERR_NOT_FOUND);
	detail_has(f, "no API key with id");

	/* A role raised by hand: revoked all the same, and tagged again as it stands. */
	fx_sql(f, "UPDATE api_keys SET role = 'Manager' WHERE id = '%s'", altered.id);
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_REVOKE, &altered), 0);
	apikey_row(f, 0, altered.id, &row);
	assert_true(row.revoked > 0);
	assert_int_equal(unitd_storage_apikeys_json(so, &j), 0);
	assert_true(json_is_true(verified_of(j, k.id)));
	assert_true(json_is_true(verified_of(j, altered.id)));
	json_decref(j);

	unitd_storage_free(so);
	admin_release(&a);
}

/* storage-accept takes key storage as it is: a unit that refuses key storage changed by hand
 * (no API key is written through it) serves it after the command. */
static void test_storage_accept(void **state)
{
	struct fx *f = *state;
	struct unitd_storage *so = NULL;
	struct admin a = {0};
	struct apikey k;
	struct ky_verified *v;
	struct ky_kms kms;
	char id[KY_UUID_LEN + 1];

	admin_install(f, &a);
	fx_unit_open(f, 0, "", true);
	fx_key_create(f, 0, "k1", id);
	fx_key_create(f, 0, "k2", id);
	fx_sql(f, "DELETE FROM keys WHERE id = '%s'", id);
	fx_unit_open(f, 1, "", true);
	assert_int_not_equal(unitd_keystore_enter(f->u[1].ks, &kms), 0);
	assert_int_equal(unitd_storage_new(f->u[1].ks, 0, 0, &so), 0);
	/* Until then no API key is written through it. */
	apikey_new(&k, "Reader");
	assert_int_not_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &k), 0);
	detail_has(f, "cannot read key storage: key storage does not match its digest");
	v = verified(f, &a, KY_OP_STORAGE_ACCEPT);
	assert_int_equal(before_write(f, so, v), 0);
	ky_verified_free(v);
	assert_int_equal(unitd_keystore_enter(f->u[1].ks, &kms), 0);
	unitd_keystore_leave(f->u[1].ks);
	assert_int_equal(apikey_op(f, &a, so, KY_OP_APIKEY_CREATE, &k), 0);
	unitd_storage_free(so);
	admin_release(&a);
}

/* The refusals before any row is read: no key storage, no master key, a master key other
 * than the one key storage is under. */
static void test_storage_ops_refused(void **state)
{
	struct fx *f = *state;
	struct unitd_storage *none = NULL, *blind = NULL, *so = NULL;
	struct admin a = {0};
	struct apikey k;
	struct ky_verified *create, *revoke, *accept;
	struct ky_domain *other;
	char id[KY_UUID_LEN + 1];

	admin_install(f, &a);
	apikey_new(&k, "Reader");
	create = verified_apikey(f, &a, KY_OP_APIKEY_CREATE, &k);
	revoke = verified_apikey(f, &a, KY_OP_APIKEY_REVOKE, &k);
	accept = verified(f, &a, KY_OP_STORAGE_ACCEPT);

	assert_int_equal(unitd_storage_new(NULL, 0, 0, &none), 0);
	assert_int_equal(before_write(f, none, create), KY_ERR_NO_STORE);
	detail_has(f, "has no 'store' in its unit.conf");
	assert_int_equal(before_write(f, none, revoke), KY_ERR_NO_STORE);
	detail_has(f, "has no 'store' in its unit.conf");
	assert_int_equal(before_write(f, none, accept), KY_ERR_NO_STORE);
	detail_has(f, "has no 'store' in its unit.conf");
	unitd_storage_free(none);

	/* Key storage in use under the master key of unit 1... */
	fx_unit_open(f, 0, "", true);
	fx_key_create(f, 0, "k1", id);
	/* ...and a unit without a master key. */
	fx_unit_open(f, 1, "", false);
	assert_int_equal(unitd_storage_new(f->u[1].ks, 0, 0, &blind), 0);
	assert_int_equal(before_write(f, blind, create), KY_ERR_NO_MASTER_KEY);
	detail_has(f, "holds no master key: API keys are tagged under a key");
	assert_int_equal(before_write(f, blind, revoke), KY_ERR_NO_MASTER_KEY);
	detail_has(f, "holds no master key: API keys are tagged under a key");
	assert_int_equal(before_write(f, blind, accept), KY_ERR_NO_MASTER_KEY);
	detail_has(f, "holds no master key: key storage is checked under a key");

	/* Another master key than the one key storage is under. */
	other = other_domain(f);
	assert_int_equal(unitd_keystore_set_registers(f->u[1].ks, other), 0);
	assert_int_equal(before_write(f, blind, create), KY_ERR_MK_MISMATCH);
	detail_has(f, "the storage integrity key is under a master key this unit does not hold");
	assert_int_equal(before_write(f, blind, revoke), KY_ERR_MK_MISMATCH);
	assert_int_equal(before_write(f, blind, accept), KY_ERR_MK_MISMATCH);
	detail_has(f, "key storage not accepted");
	ky_domain_free(other);
	unitd_storage_free(blind);

	/* Nothing was stored by the refusals. */
	assert_int_equal(unitd_storage_new(f->u[0].ks, 0, 0, &so), 0);
	assert_int_equal(before_write(f, so, revoke), KY_ERR_NOT_FOUND);
	unitd_storage_free(so);

	ky_verified_free(create);
	ky_verified_free(revoke);
	ky_verified_free(accept);
	admin_release(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_records_under_each_register, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_apikey_rows_verified, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_register_guards, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_apikey_create, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_apikey_create_row_altered, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_apikey_revoke, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_storage_accept, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_storage_ops_refused, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
