/* unitd/storage_ops.c, what the admin endpoint shows of key storage: the records under each
 * master key register (GET /v1/admin/state, "storage") and the API key rows with whether
 * each one's tag checks (GET /v1/admin/apikeys): true, false for a row altered by hand, null
 * when the unit holds no master key to tell. On one SQLite file (tests/unit/unitd_fixture.h),
 * no mocks. The ceremony commands that act on storage need signed commands: the integration
 * tests drive them (t_kp.sh: API keys, t_rotate.sh: re-encipherment).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_records_under_each_register, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_apikey_rows_verified, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
