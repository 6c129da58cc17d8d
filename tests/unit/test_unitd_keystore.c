/* unitd/keystore.c: the unit's view of key storage. Its cache of opened keys serves a key
 * again without reading storage, drops what another unit changed as the change log names it,
 * drops everything when the log cannot tell (a row of it missing), never serves a record
 * altered by hand, and keeps to its budget by closing the key used least recently. Two units
 * on one SQLite file (tests/unit/unitd_fixture.h), no mocks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "unitd_fixture.h"

static int key_state(const struct unitd_key_ref *ref)
{
	return unitd_key_ref_key(ref)->state;
}

/* A key opened through unit i, held (put it back with unitd_keystore_key_put). */
static struct unitd_key_ref *get(struct fx *f, size_t i, const char *id)
{
	struct ky_kms kms;
	struct unitd_key_ref *ref = NULL;

	assert_int_equal(unitd_keystore_enter(f->u[i].ks, &kms), 0);
	assert_int_equal(unitd_keystore_key_get(f->u[i].ks, &kms, id, (int64_t)time(NULL), &ref),
	                 0);
	unitd_keystore_leave(f->u[i].ks);
	assert_non_null(ref);
	assert_string_equal(unitd_key_ref_key(ref)->id, id);
	return ref;
}

/* Unit i disables key id (a change committed through kyok: every unit sees it at once). */
static void disable(struct fx *f, size_t i, const char *id)
{
	struct ky_key_act a = {
	    .action = KY_KEY_DISABLE, .actor = "test", .rotation_months = -1, .dual_auth = -1};
	struct ky_kms kms;
	struct ky_key *k = NULL;

	assert_int_equal(unitd_keystore_enter(f->u[i].ks, &kms), 0);
	assert_int_equal(ky_kms_key_act(&kms, id, &a, (int64_t)time(NULL), &k), 0);
	unitd_keystore_leave(f->u[i].ks);
	ky_key_free(k);
}

static void test_no_master_key_no_hold(void **state)
{
	struct fx *f = *state;
	struct ky_kms kms;

	fx_unit_open(f, 0, "", false);
	assert_int_equal(unitd_keystore_enter(f->u[0].ks, &kms), KY_ERR_NO_MASTER_KEY);
	/* Given the registers, the same unit holds them. */
	assert_int_equal(unitd_keystore_set_registers(f->u[0].ks, f->d), 0);
	assert_int_equal(unitd_keystore_enter(f->u[0].ks, &kms), 0);
	assert_memory_equal(kms.current->vp, f->vp, KY_VP_LEN);
	unitd_keystore_leave(f->u[0].ks);
}

static void test_cached_until_another_unit_changes_it(void **state)
{
	struct fx *f = *state;
	char id[KY_UUID_LEN + 1];
	struct unitd_key_ref *a, *b, *c;

	fx_unit_open(f, 0, "", true);
	fx_unit_open(f, 1, "", true);
	fx_key_create(f, 0, "k1", id);
	a = get(f, 0, id);
	b = get(f, 0, id);
	assert_ptr_equal(a, b); /* the second time from the cache */
	unitd_keystore_key_put(f->u[0].ks, b);
	assert_int_equal(key_state(a), KY_KEY_ACTIVE);

	/* Another unit disables it: the change log names the key, this unit reads it again. */
	disable(f, 1, id);
	c = get(f, 0, id);
	assert_ptr_not_equal(c, a);
	assert_int_equal(key_state(c), KY_KEY_SUSPENDED);
	unitd_keystore_key_put(f->u[0].ks, a);
	unitd_keystore_key_put(f->u[0].ks, c);
}

static void test_change_log_row_missing_drops_everything(void **state)
{
	struct fx *f = *state;
	char id1[KY_UUID_LEN + 1], id2[KY_UUID_LEN + 1];
	struct unitd_key_ref *a, *b, *a2, *b2;

	fx_unit_open(f, 0, "", true);
	fx_unit_open(f, 1, "", true);
	fx_key_create(f, 0, "k1", id1);
	fx_key_create(f, 0, "k2", id2);
	a = get(f, 0, id1);
	b = get(f, 0, id2);

	/* Another unit disables k1, and the log's row of that change is deleted by hand: the
	 * log cannot tell what changed, so nothing cached is trusted, k2 included. */
	disable(f, 1, id1);
	fx_sql(f, "DELETE FROM changes WHERE seq = (SELECT max(seq) FROM changes)");
	a2 = get(f, 0, id1);
	b2 = get(f, 0, id2);
	assert_ptr_not_equal(a2, a);
	assert_ptr_not_equal(b2, b);
	assert_int_equal(key_state(a2), KY_KEY_SUSPENDED);
	assert_int_equal(key_state(b2), KY_KEY_ACTIVE);
	unitd_keystore_key_put(f->u[0].ks, a);
	unitd_keystore_key_put(f->u[0].ks, b);
	unitd_keystore_key_put(f->u[0].ks, a2);
	unitd_keystore_key_put(f->u[0].ks, b2);
}

static void test_tampered_record_not_served(void **state)
{
	struct fx *f = *state;
	char id[KY_UUID_LEN + 1], other[KY_UUID_LEN + 1];
	struct unitd_key_ref *a, *ref = NULL;
	struct ky_kms kms;

	fx_unit_open(f, 0, "", true);
	fx_unit_open(f, 1, "", true);
	fx_key_create(f, 0, "k1", id);
	fx_key_create(f, 0, "k2", other);
	a = get(f, 0, id);
	unitd_keystore_key_put(f->u[0].ks, a);
	/* The other unit checks storage against its digest before the row is altered. */
	assert_int_equal(unitd_keystore_enter(f->u[1].ks, &kms), 0);
	unitd_keystore_leave(f->u[1].ks);

	/* Its row altered by hand (disabled without kyok), then a change through kyok (any but
	 * the unit's own creations, which need not tell it): the cached copy is dropped and the
	 * row read again fails its check. */
	fx_sql(f, "UPDATE keys SET state = %d WHERE id = '%s'", KY_KEY_SUSPENDED, id);
	disable(f, 1, other);
	assert_int_equal(unitd_keystore_enter(f->u[0].ks, &kms), 0);
	assert_int_equal(unitd_keystore_key_get(f->u[0].ks, &kms, id, (int64_t)time(NULL), &ref),
	                 KY_ERR_RECORD_TAMPERED);
	assert_null(ref);
	unitd_keystore_leave(f->u[0].ks);
	/* The record next to it is served. */
	a = get(f, 0, other);
	assert_int_equal(key_state(a), KY_KEY_SUSPENDED);
	unitd_keystore_key_put(f->u[0].ks, a);
}

static void test_cache_over_budget(void **state)
{
	struct fx *f = *state;
	char id1[KY_UUID_LEN + 1], id2[KY_UUID_LEN + 1], id3[KY_UUID_LEN + 1];
	struct unitd_key_ref *a, *b, *c, *a2, *b2;

	/* Room for two keys. */
	fx_unit_open(f, 0, "key_cache = 2\n", true);
	assert_int_equal(unitd_key_cache(&f->u[0].cfg), 2);
	fx_key_create(f, 0, "k1", id1);
	fx_key_create(f, 0, "k2", id2);
	fx_key_create(f, 0, "k3", id3);
	a = get(f, 0, id1);
	b = get(f, 0, id2);
	unitd_keystore_key_put(f->u[0].ks, get(f, 0, id1)); /* k1 used again, k2 not */

	/* k3 makes room: k2, used least recently, is closed; k1 stays. */
	c = get(f, 0, id3);
	a2 = get(f, 0, id1);
	assert_ptr_equal(a2, a);
	unitd_keystore_key_put(f->u[0].ks, a2);
	b2 = get(f, 0, id2);
	assert_ptr_not_equal(b2, b); /* opened again from key storage */
	assert_int_equal(key_state(b2), KY_KEY_ACTIVE);
	unitd_keystore_key_put(f->u[0].ks, a);
	unitd_keystore_key_put(f->u[0].ks, b);
	unitd_keystore_key_put(f->u[0].ks, b2);
	unitd_keystore_key_put(f->u[0].ks, c);
}

/* Dropping everything cuts the chains and the clock ring whole: keys held by requests stay
 * readable, the room of the dropped keys is given back, and eviction works on the ring built
 * again. */
static void test_drop_everything_then_evict(void **state)
{
	struct fx *f = *state;
	char id1[KY_UUID_LEN + 1], id2[KY_UUID_LEN + 1], id3[KY_UUID_LEN + 1];
	struct unitd_key_ref *a, *b, *a2, *b2, *again, *c;

	fx_unit_open(f, 0, "key_cache = 2\n", true);
	fx_key_create(f, 0, "k1", id1);
	fx_key_create(f, 0, "k2", id2);
	fx_key_create(f, 0, "k3", id3);
	a = get(f, 0, id1);
	b = get(f, 0, id2);
	unitd_keystore_flush(f->u[0].ks);
	assert_int_equal(key_state(a), KY_KEY_ACTIVE); /* still held */
	assert_string_equal(unitd_key_ref_key(b)->id, id2);

	/* Both fit again: nothing is evicted to make room for them. */
	a2 = get(f, 0, id1);
	b2 = get(f, 0, id2);
	assert_ptr_not_equal(a2, a);
	assert_ptr_not_equal(b2, b);
	again = get(f, 0, id1);
	assert_ptr_equal(again, a2);
	unitd_keystore_key_put(f->u[0].ks, again);
	again = get(f, 0, id2);
	assert_ptr_equal(again, b2);
	unitd_keystore_key_put(f->u[0].ks, again);

	/* A third key makes room on the new ring: one of the two is opened again. */
	c = get(f, 0, id3);
	assert_int_equal(key_state(c), KY_KEY_ACTIVE);
	again = get(f, 0, id1);
	if (again == a2) {
		unitd_keystore_key_put(f->u[0].ks, again);
		again = get(f, 0, id2);
		assert_ptr_not_equal(again, b2);
	}
	unitd_keystore_key_put(f->u[0].ks, again);
	unitd_keystore_key_put(f->u[0].ks, a);
	unitd_keystore_key_put(f->u[0].ks, b);
	unitd_keystore_key_put(f->u[0].ks, a2);
	unitd_keystore_key_put(f->u[0].ks, b2);
	unitd_keystore_key_put(f->u[0].ks, c);
}

/* Unit i rotates key id n times. */
static void rotate(struct fx *f, size_t i, const char *id, int n)
{
	struct ky_key_act a = {
	    .action = KY_KEY_ROTATE, .actor = "test", .rotation_months = -1, .dual_auth = -1};
	struct ky_kms kms;
	struct ky_key *k = NULL;

	for (int j = 0; j < n; j++) {
		assert_int_equal(unitd_keystore_enter(f->u[i].ks, &kms), 0);
		assert_int_equal(ky_kms_key_act(&kms, id, &a, (int64_t)time(NULL), &k), 0);
		unitd_keystore_leave(f->u[i].ks);
		ky_key_free(k);
		k = NULL;
	}
}

/* The cached key is the stored one: every version, its material. */
static void same_as_stored(struct fx *f, const struct unitd_key_ref *ref, uint32_t nversions)
{
	const struct ky_key *c = unitd_key_ref_key(ref);
	struct ky_key *k = NULL;
	struct ky_kms kms;

	assert_int_equal(unitd_keystore_enter(f->u[1].ks, &kms), 0);
	assert_int_equal(ky_kms_key_get(&kms, c->id, 0, (int64_t)time(NULL), &k), 0);
	unitd_keystore_leave(f->u[1].ks);
	assert_int_equal(c->nversions, nversions);
	assert_int_equal(k->nversions, nversions);
	for (uint32_t v = 0; v < nversions; v++) {
		assert_int_equal(c->versions[v].n, k->versions[v].n);
		assert_int_equal(c->versions[v].len, k->versions[v].len);
		assert_memory_equal(c->versions[v].material, k->versions[v].material,
		                    k->versions[v].len);
	}
	assert_string_equal(c->name, k->name);
	ky_key_free(k);
}

/* Keys of 1, 2 and 3 versions are served from the cache whole (every version's material), and
 * opened again with one more once another unit rotates them. */
static void test_cached_key_versions(void **state)
{
	struct fx *f = *state;
	char id[3][KY_UUID_LEN + 1], other[KY_UUID_LEN + 1];
	struct unitd_key_ref *r[3], *again;

	fx_unit_open(f, 0, "", true);
	fx_unit_open(f, 1, "", true);
	for (int i = 0; i < 3; i++) {
		char name[8];
		snprintf(name, sizeof(name), "v%d", i + 1);
		fx_key_create(f, 0, name, id[i]);
		rotate(f, 0, id[i], i);
	}
	for (int i = 0; i < 3; i++) {
		r[i] = get(f, 0, id[i]);
		same_as_stored(f, r[i], (uint32_t)i + 1);
		again = get(f, 0, id[i]);
		assert_ptr_equal(again, r[i]);
		unitd_keystore_key_put(f->u[0].ks, again);
	}
	/* A key opened after them leaves them whole. */
	fx_key_create(f, 0, "after", other);
	again = get(f, 0, other);
	for (int i = 0; i < 3; i++)
		same_as_stored(f, r[i], (uint32_t)i + 1);
	unitd_keystore_key_put(f->u[0].ks, again);
	/* Another unit rotates each once more: dropped, opened again with one version more. */
	for (int i = 0; i < 3; i++) {
		rotate(f, 1, id[i], 1);
		again = get(f, 0, id[i]);
		assert_ptr_not_equal(again, r[i]);
		same_as_stored(f, again, (uint32_t)i + 2);
		unitd_keystore_key_put(f->u[0].ks, again);
		unitd_keystore_key_put(f->u[0].ks, r[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_no_master_key_no_hold, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_cached_until_another_unit_changes_it, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_change_log_row_missing_drops_everything, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_tampered_record_not_served, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_cache_over_budget, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_drop_everything_then_evict, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_cached_key_versions, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
