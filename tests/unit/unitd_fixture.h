/* Units of one instance for the tests of the daemon's modules (test_unitd_*.c): each unit has
 * a data directory of its own (file seal backend) in a temp dir, and all of them share one
 * SQLite key storage file there, as units of an instance share their storage. The unit state
 * is a fresh one (ky_domain_new) given a random current master key, so that key storage can
 * be used without a key ceremony.
 *
 * fx_sql runs SQL on the storage file by hand: another program, which kyok's checks must
 * catch. */
#ifndef KYOK_TESTS_UNITD_FIXTURE_H
#define KYOK_TESTS_UNITD_FIXTURE_H

#include <ftw.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "kyok/ceremony.h"
#include "kyok/common.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"
#include "unitd/config.h"
#include "unitd/keystore.h"
#include "unitd/seal.h"

#define FX_INSTANCE "inst-1"
#define FX_UNITS    2

struct fx_unit {
	char data[160];
	struct unitd_config cfg;
	bool cfg_made;
	struct unitd_datadir dd;
	struct unitd_keystore *ks;
};

struct fx {
	char dir[64];
	char db[128];
	struct ky_domain *d; /* current master key: mk */
	uint8_t mk[KY_MK_LEN];
	uint8_t vp[KY_VP_LEN];
	struct fx_unit u[FX_UNITS];
	char err[512];
};

static int fx_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* A unit state with the current master key f->mk (VALID): a new state's sealed form with
 * that register filled in, parsed again (the parser checks the VP). */
static void fx_domain(struct fx *f)
{
	struct ky_domain *fresh = NULL;
	struct ky_buf b = {0};
	char key[2 * KY_MK_LEN + 1], vp[2 * KY_VP_LEN + 1], *text;
	json_t *j;

	assert_int_equal(ky_random(f->mk, sizeof(f->mk)), 0);
	assert_int_equal(ky_vp(f->mk, f->vp), 0);
	ky_hex_encode(f->mk, sizeof(f->mk), key);
	ky_hex_encode(f->vp, sizeof(f->vp), vp);
	assert_int_equal(ky_domain_new(FX_INSTANCE, "unit-1", "zone-1", &fresh), 0);
	assert_int_equal(ky_domain_serialize(fresh, &b), 0);
	ky_domain_free(fresh);
	assert_non_null(j = json_loadb((const char *)b.data, b.len, 0, NULL));
	ky_buf_free(&b);
	assert_int_equal(json_object_set_new(j, "current_mk",
	                                     json_pack("{s:s, s:s, s:s, s:[]}", "state",
	                                               ky_cur_state_name(KY_CUR_VALID), "key", key,
	                                               "vp", vp, "part_vps")),
	                 0);
	OPENSSL_cleanse(key, sizeof(key));
	assert_non_null(text = json_dumps(j, JSON_COMPACT));
	json_decref(j);
	assert_int_equal(ky_domain_parse((const uint8_t *)text, strlen(text), &f->d), 0);
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	assert_int_equal(f->d->cur_state, KY_CUR_VALID);
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/kyok-test-unitd.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->db, sizeof(f->db), "%s/keys.db", f->dir);
	for (size_t i = 0; i < FX_UNITS; i++)
		f->u[i].dd.lock_fd = -1;
	fx_domain(f);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	for (size_t i = 0; i < FX_UNITS; i++) {
		unitd_keystore_free(f->u[i].ks);
		unitd_datadir_release(&f->u[i].dd);
		if (f->u[i].cfg_made)
			unitd_config_release(&f->u[i].cfg);
	}
	ky_domain_free(f->d);
	OPENSSL_cleanse(f->mk, sizeof(f->mk));
	assert_int_equal(nftw(f->dir, fx_rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
	free(f);
	return 0;
}

/* Starts unit i (unit-<i+1>) on the shared storage: its data directory, its seal key, its
 * keystore. extra: more unit.conf lines ("" for none). registers: give it the master key. */
static void fx_unit_open(struct fx *f, size_t i, const char *extra, bool registers)
{
	struct fx_unit *u = &f->u[i];
	char text[1024], data[sizeof(u->data)];
	int n;

	/* through a buffer of its own: the compiler cannot tell u->data from f->dir apart */
	snprintf(data, sizeof(data), "%s/unit-%zu", f->dir, i + 1);
	memcpy(u->data, data, sizeof(data));
	n = snprintf(text, sizeof(text),
	             "instance = " FX_INSTANCE "\nunit = unit-%zu\nzone = zone-1\ndata_dir = %s\n"
	             "store = sqlite:%s\n%s",
	             i + 1, u->data, f->db, extra);
	assert_true(n > 0 && (size_t)n < sizeof(text));
	assert_int_equal(
	    unitd_config_parse("unit.conf", "/", text, (size_t)n, &u->cfg, f->err, sizeof(f->err)),
	    0);
	u->cfg_made = true;
	assert_int_equal(unitd_datadir_open(&u->cfg, &u->dd, f->err, sizeof(f->err)), 0);
	assert_int_equal(unitd_seal_key_first(&u->dd, f->err, sizeof(f->err)), 0);
	assert_int_equal(unitd_keystore_open(&u->cfg, &u->dd, &u->ks, f->err, sizeof(f->err)), 0);
	if (registers)
		assert_int_equal(unitd_keystore_set_registers(u->ks, f->d), 0);
}

/* A new root key made through unit i; its id into id. */
static void fx_key_create(struct fx *f, size_t i, const char *name, char id[KY_UUID_LEN + 1])
{
	struct ky_key_spec spec = {.name = name, .len = 32};
	struct ky_kms kms;
	struct ky_key *k = NULL;

	assert_int_equal(unitd_keystore_enter(f->u[i].ks, &kms), 0);
	assert_int_equal(ky_kms_key_create(&kms, &spec, (int64_t)time(NULL), &k), 0);
	unitd_keystore_leave(f->u[i].ks);
	snprintf(id, KY_UUID_LEN + 1, "%s", k->id);
	ky_key_free(k);
}

/* SQL run on the storage file by another program. */
static void fx_sql(const struct fx *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fx_sql(const struct fx *f, const char *fmt, ...)
{
	sqlite3 *db = NULL;
	char q[512], *msg = NULL;
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vsnprintf(q, sizeof(q), fmt, ap);
	va_end(ap);
	assert_true(rc > 0 && (size_t)rc < sizeof(q));
	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 10000);
	rc = sqlite3_exec(db, q, NULL, NULL, &msg);
	if (rc != SQLITE_OK)
		fprintf(stderr, "SQL failed: %s: %s\n", q, msg ? msg : "");
	sqlite3_free(msg);
	sqlite3_close(db);
	assert_int_equal(rc, SQLITE_OK);
}

#endif
