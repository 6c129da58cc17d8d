/* unitd/storage_ops.c: what the admin endpoint shows of key storage, the records under each
 * master key register (GET /v1/admin/state, "storage") and the API key rows with whether
 * each one's tag checks (GET /v1/admin/apikeys): true, false for a row altered by hand, null
 * when the unit holds no master key to tell; and the guards of the commands that would lose
 * records (mk-clrcur, mk-setimm), for commands signed and verified here. On one SQLite file
 * (tests/unit/unitd_fixture.h), no mocks. apikey-create and -revoke and re-encipherment are
 * the integration tests' (t_kp.sh, t_rotate.sh).
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

/* Command op for f->d, signed by a and verified as the admin endpoint verifies it. */
static struct ky_verified *verified(struct fx *f, const struct admin *a, enum ky_op op)
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_records_under_each_register, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_apikey_rows_verified, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_register_guards, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
