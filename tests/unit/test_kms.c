/* Key objects, records sealed under master keys, wrap formats, state rules, re-encipherment.
 * Real SQLite files in a temp dir, or a PostgreSQL schema of their own when KYOK_TEST_PG names
 * a database (store_fixture.h); real OpenSSL, keys generated here. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"
#include "kyok/store.h"
#include "store_fixture.h"

#define NOW      ((int64_t)1700000000)
#define INSTANCE "inst-0001"

struct fx {
	char dir[64];
	char path[TFX_URI_MAX]; /* SQLite: the file; PostgreSQL: the URI (for tfx_sql) */
	bool pg;
	char schema[48];
	struct ky_store *s;
	struct ky_mk *a; /* current master key */
	struct ky_mk *b; /* the next one */
	struct ky_kms kms;
};

static struct ky_mk *mk_random(void)
{
	uint8_t key[KY_MK_LEN];
	struct ky_mk *mk = NULL;

	assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
	assert_int_equal(ky_mk_new(key, &mk), 0);
	OPENSSL_cleanse(key, sizeof(key));
	return mk;
}

static int fx_setup_opts(void **state, uint32_t limit)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct ky_store_opts o = {.key_limit = limit, .instance = INSTANCE};
	char uri[TFX_URI_MAX];

	assert_non_null(f);
	strcpy(f->dir, "/tmp/kyok-kms-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	if (tfx_pg() != NULL) {
		f->pg = true;
		tfx_pg_schema_new(f->schema, sizeof(f->schema), uri, sizeof(uri));
		memcpy(f->path, uri, sizeof(f->path));
	} else {
		snprintf(f->path, sizeof(f->path), "%s/keys.db", f->dir);
		snprintf(uri, sizeof(uri), "sqlite:%.*s", (int)sizeof(uri) - 8, f->path);
	}
	assert_int_equal(ky_store_open(uri, &o, &f->s), 0);
	f->a = mk_random();
	f->b = mk_random();
	f->kms = (struct ky_kms){.store = f->s, .instance = INSTANCE, .current = f->a};
	*state = f;
	return 0;
}

static int fx_setup(void **state)
{
	return fx_setup_opts(state, 0);
}

static int fx_setup_limit3(void **state)
{
	return fx_setup_opts(state, 3);
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	char p[TFX_URI_MAX + 16];

	ky_store_close(f->s);
	ky_mk_free(f->a);
	ky_mk_free(f->b);
	if (f->pg) {
		tfx_pg_schema_drop(f->schema);
		rmdir(f->dir);
		free(f);
		ky_gcm_thread_release();
		return 0;
	}
	unlink(f->path);
	snprintf(p, sizeof(p), "%s-wal", f->path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", f->path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-kyokgen", f->path); /* the shared commit counter */
	unlink(p);
	if (rmdir(f->dir) != 0)
		fprintf(stderr, "test directory '%s' not removed: %s\n", f->dir, strerror(errno));
	free(f);
	ky_gcm_thread_release();
	return 0;
}

static void sql(const char *path, const char *q)
{
	tfx_sql(path, q);
}

__attribute__((format(printf, 2, 3))) static void sqlf(const char *path, const char *fmt, ...)
{
	char q[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(q, sizeof(q), fmt, ap);
	va_end(ap);
	sql(path, q);
}

static struct ky_key *create_root(struct fx *f, const char *name)
{
	struct ky_key_spec sp = {.name = name, .description = "a root key", .actor = "alice"};
	struct ky_key *k = NULL;

	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), 0);
	return k;
}

static struct ky_key *load(struct fx *f, const char *id)
{
	struct ky_key *k = NULL;

	assert_int_equal(ky_kms_key_get(&f->kms, id, 0, NOW, &k), 0);
	return k;
}

static int act(struct fx *f, const char *id, enum ky_key_action a, const char *actor, int64_t now)
{
	struct ky_key_act ka = {
	    .action = a, .actor = actor, .rotation_months = -1, .dual_auth = -1};
	return ky_kms_key_act(&f->kms, id, &ka, now, NULL);
}

/* ---- master keys ---- */

static void test_mk_vp(void **state)
{
	struct fx *f = *state;
	uint8_t in[1 + KY_MK_LEN], vp[KY_VP_LEN];
	unsigned int n = 0;

	(void)state;
	in[0] = 0x01;
	memcpy(in + 1, f->a->key, KY_MK_LEN);
	assert_int_equal(EVP_Digest(in, sizeof(in), vp, &n, EVP_sha256(), NULL), 1);
	assert_memory_equal(vp, f->a->vp, KY_VP_LEN);
	assert_memory_not_equal(f->a->vp, f->b->vp, KY_VP_LEN);
	ky_mk_free(NULL);
}

/* ---- creation, get, list ---- */

static void test_create_get_root(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "payments-root"), *g;

	assert_int_equal(strlen(k->id), KY_UUID_LEN);
	assert_int_equal(k->id[14], '4'); /* UUID v4 */
	assert_int_equal(k->state, KY_KEY_ACTIVE);
	assert_int_equal(k->extractable, 0);
	assert_int_equal(k->imported, 0);
	assert_int_equal(k->nversions, 1);
	assert_int_equal(k->versions[0].len, 32);
	assert_int_equal(k->seq, 1);
	assert_memory_equal(k->vp, f->a->vp, KY_VP_LEN);
	g = load(f, k->id);
	assert_string_equal(g->name, "payments-root");
	assert_string_equal(g->description, "a root key");
	assert_string_equal(g->created_by, "alice");
	assert_int_equal(g->created, NOW);
	assert_string_equal(g->versions[0].id, k->versions[0].id);
	assert_memory_equal(g->versions[0].material, k->versions[0].material, 32);
	ky_key_free(g);
	/* metadata only: no material */
	assert_int_equal(ky_kms_key_get(&f->kms, k->id, KY_KMS_METADATA_ONLY, NOW, &g), 0);
	assert_null(g->versions[0].material);
	assert_int_equal(g->versions[0].len, 32);
	ky_key_free(g);
	assert_int_equal(
	    ky_kms_key_get(&f->kms, "00000000-0000-4000-8000-000000000000", 0, NOW, &g),
	    KY_ERR_NOT_FOUND);
	assert_null(g);
	ky_key_free(k);
}

static void test_create_imported_and_refusals(void **state)
{
	struct fx *f = *state;
	uint8_t m[64];
	char longname[KY_KEY_NAME_MAX + 2];
	struct ky_key *k = NULL, *g;
	struct ky_key_spec sp = {.name = "imp"};

	memset(m, 0x5a, sizeof(m));
	sp.payload = m;
	for (size_t len = 16; len <= 32; len += 8) {
		sp.len = len;
		assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), 0);
		assert_int_equal(k->imported, 1);
		g = load(f, k->id);
		assert_int_equal(g->versions[0].len, len);
		assert_memory_equal(g->versions[0].material, m, len);
		ky_key_free(g);
		ky_key_free(k);
	}
	sp.len = 20;
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), KY_ERR_KEY_MATERIAL);
	sp.len = 64;
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), KY_ERR_KEY_MATERIAL);
	/* a standard key takes any payload size up to the maximum */
	sp.extractable = 1;
	sp.len = 20;
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), 0);
	assert_int_equal(k->extractable, 1);
	ky_key_free(k);
	sp.len = KY_KEY_PAYLOAD_MAX + 1;
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), KY_ERR_KEY_MATERIAL);
	sp.len = 0;
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), KY_ERR_KEY_MATERIAL);
	/* names */
	sp.payload = NULL;
	sp.name = "a";
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), KY_ERR_KEY_NAME);
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	sp.name = longname;
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), KY_ERR_KEY_NAME);
	sp.name = "bad\nname";
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), KY_ERR_KEY_NAME);
	sp.name = NULL;
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), KY_ERR_KEY_NAME);
	/* no master key loaded: nothing can be sealed */
	struct ky_kms empty = {.store = f->s, .instance = INSTANCE};
	sp.name = "fine";
	assert_int_equal(ky_kms_key_create(&empty, &sp, NOW, &k), KY_ERR_REGISTER_STATE);
}

static void test_list(void **state)
{
	struct fx *f = *state;
	struct ky_key_spec sp = {.name = "listed"};
	struct ky_key *k, **keys = NULL;
	struct ky_store_filter flt = {.states = 0, .extractable = -1};
	char ids[6][KY_UUID_LEN + 1];
	size_t n = 0;
	uint64_t total = 0;

	for (int i = 0; i < 6; i++) {
		sp.extractable = i % 2;
		assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), 0);
		strcpy(ids[i], k->id);
		ky_key_free(k);
	}
	assert_int_equal(act(f, ids[2], KY_KEY_DISABLE, "bob", NOW), 0);
	assert_int_equal(ky_kms_key_list(&f->kms, NULL, 0, 0, NOW, &keys, &n, &total, NULL), 0);
	assert_int_equal(n, 6);
	assert_int_equal(total, 6);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(keys[i]->id, ids[i]);
		assert_null(keys[i]->versions[0].material);
	}
	ky_keys_free(keys, n);
	assert_int_equal(ky_kms_key_list(&f->kms, &flt, 2, 3, NOW, &keys, &n, &total, NULL), 0);
	assert_int_equal(n, 2);
	assert_int_equal(total, 6);
	assert_string_equal(keys[0]->id, ids[3]);
	ky_keys_free(keys, n);
	flt.states = 1u << KY_KEY_SUSPENDED;
	assert_int_equal(ky_kms_key_list(&f->kms, &flt, 0, 0, NOW, &keys, &n, &total, NULL), 0);
	assert_int_equal(n, 1);
	assert_int_equal(total, 1);
	assert_string_equal(keys[0]->id, ids[2]);
	assert_int_equal(keys[0]->state, KY_KEY_SUSPENDED);
	ky_keys_free(keys, n);
	flt.states = 0;
	flt.extractable = 1;
	assert_int_equal(ky_kms_key_list(&f->kms, &flt, 0, 0, NOW, &keys, &n, &total, NULL), 0);
	assert_int_equal(n, 3);
	assert_int_equal(total, 3);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(keys[i]->extractable, 1);
	ky_keys_free(keys, n);
	/* one tampered row fails the whole listing rather than serving it */
	sqlf(f->path, "UPDATE keys SET state = 1 WHERE id = '%s'", ids[2]);
	assert_int_equal(ky_kms_key_list(&f->kms, NULL, 0, 0, NOW, &keys, &n, &total, NULL),
	                 KY_ERR_RECORD_TAMPERED);
	assert_null(keys);
	/* ... or, when the caller asks, leaves that row out, names it and lists the others */
	{
		struct ky_kms_withheld wh;

		assert_int_equal(ky_kms_key_list(&f->kms, NULL, 0, 0, NOW, &keys, &n, &total, &wh),
		                 0);
		assert_int_equal(n, 5);
		assert_int_equal(wh.n, 1);
		assert_string_equal(wh.ids[0], ids[2]);
		assert_int_equal(wh.errs[0], KY_ERR_RECORD_TAMPERED);
		for (size_t i = 0; i < n; i++)
			assert_string_not_equal(keys[i]->id, ids[2]);
		ky_keys_free(keys, n);
	}
}

static void test_limit(void **state)
{
	struct fx *f = *state;
	struct ky_key *k;

	for (int i = 0; i < 3; i++)
		ky_key_free(create_root(f, "limited"));
	struct ky_key_spec sp = {.name = "one-too-many"};
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), KY_ERR_KEY_LIMIT);
	assert_null(k);
	assert_string_equal(ky_err_message(KY_ERR_KEY_LIMIT), "key limit reached");

	/* During a rotation the records under both registers count. */
	struct ky_kms rot = {.store = f->s, .instance = INSTANCE, .current = f->a, .next = f->b};
	assert_int_equal(ky_kms_key_create(&rot, &sp, NOW, &k), KY_ERR_KEY_LIMIT);
	/* Under a new master key (the old one shredded) the old records count no more. */
	struct ky_kms fresh = {.store = f->s, .instance = INSTANCE, .current = f->b};
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ky_kms_key_create(&fresh, &sp, NOW, &k), 0);
		ky_key_free(k);
	}
	assert_int_equal(ky_kms_key_create(&fresh, &sp, NOW, &k), KY_ERR_KEY_LIMIT);
}

/* ---- API key row tags ---- */

static void test_apikey_mac(void **state)
{
	struct ky_store_apikey k, t;
	uint8_t key[KY_APIKEY_MAC_KEY_LEN], other[KY_APIKEY_MAC_KEY_LEN];

	(void)state;
	assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
	assert_int_equal(RAND_bytes(other, sizeof(other)), 1);
	memset(&k, 0, sizeof(k));
	strcpy(k.id, "ak-1");
	strcpy(k.name, "ci");
	strcpy(k.role, "Reader");
	assert_int_equal(RAND_bytes(k.hash, sizeof(k.hash)), 1);
	k.created = 1700000000;
	assert_int_equal(ky_kms_apikey_check(key, INSTANCE, &k), KY_ERR_RECORD_TAMPERED);
	assert_int_equal(ky_kms_apikey_mac(key, INSTANCE, &k, k.mac), 0);
	k.has_mac = true;
	assert_int_equal(ky_kms_apikey_check(key, INSTANCE, &k), 0);
	assert_int_equal(ky_kms_apikey_check(other, INSTANCE, &k), KY_ERR_RECORD_TAMPERED);
	assert_int_equal(ky_kms_apikey_check(key, "inst-0002", &k), KY_ERR_RECORD_TAMPERED);
	assert_int_equal(ky_kms_apikey_mac(key, "", &k, t.mac), KY_ERR_USAGE);
	/* every column is covered */
	t = k;
	strcpy(t.id, "ak-2");
	assert_int_equal(ky_kms_apikey_check(key, INSTANCE, &t), KY_ERR_RECORD_TAMPERED);
	t = k;
	strcpy(t.name, "cj");
	assert_int_equal(ky_kms_apikey_check(key, INSTANCE, &t), KY_ERR_RECORD_TAMPERED);
	t = k;
	strcpy(t.role, "Manager");
	assert_int_equal(ky_kms_apikey_check(key, INSTANCE, &t), KY_ERR_RECORD_TAMPERED);
	t = k;
	t.hash[31] ^= 1;
	assert_int_equal(ky_kms_apikey_check(key, INSTANCE, &t), KY_ERR_RECORD_TAMPERED);
	t = k;
	t.created++;
	assert_int_equal(ky_kms_apikey_check(key, INSTANCE, &t), KY_ERR_RECORD_TAMPERED);
	t = k;
	t.revoked = 1;
	assert_int_equal(ky_kms_apikey_check(key, INSTANCE, &t), KY_ERR_RECORD_TAMPERED);
	t = k;
	t.mac[0] ^= 0x80;
	assert_int_equal(ky_kms_apikey_check(key, INSTANCE, &t), KY_ERR_RECORD_TAMPERED);
	/* fields cannot slide into each other: id "ab" name "" differs from id "a" name "b" */
	memset(&t, 0, sizeof(t));
	strcpy(t.role, "Reader");
	strcpy(t.id, "ab");
	assert_int_equal(ky_kms_apikey_mac(key, INSTANCE, &t, t.mac), 0);
	t.has_mac = true;
	strcpy(t.id, "a");
	strcpy(t.name, "b");
	assert_int_equal(ky_kms_apikey_check(key, INSTANCE, &t), KY_ERR_RECORD_TAMPERED);
}

/* ---- tampering ---- */

/* With the storage digest attached: a record written back from an older copy opens (kyok
 * sealed it) but is refused as rolled back; an altered one is still refused as tampered;
 * re-encipherment does not move a rolled-back record. */
static void test_rolled_back_record(void **state)
{
	struct fx *f = *state;
	static const uint8_t lkey[KY_STORE_LEDGER_KEY_LEN] = {9, 9};
	struct ky_store_ledger_pos pos;
	struct ky_key_act dis = {.action = KY_KEY_DISABLE, .actor = "alice"};
	struct ky_key *k, *g = NULL;
	struct ky_kms_reenc st;

	assert_int_equal(ky_store_ledger_attach(f->s, lkey, NULL, 0, &pos), 0);
	k = create_root(f, "victim");
	sqlf(f->path, "CREATE TABLE old AS SELECT * FROM keys WHERE id = '%s'", k->id);
	assert_int_equal(ky_kms_key_act(&f->kms, k->id, &dis, NOW, NULL), 0);
	sqlf(f->path, "DELETE FROM keys WHERE id = '%s'; INSERT INTO keys SELECT * FROM old",
	     k->id);
	assert_int_equal(ky_kms_key_get(&f->kms, k->id, 0, NOW, &g), KY_ERR_RECORD_STALE);
	assert_null(g);
	sqlf(f->path, "UPDATE keys SET name = 'x' WHERE id = '%s'", k->id);
	assert_int_equal(ky_kms_key_get(&f->kms, k->id, 0, NOW, &g), KY_ERR_RECORD_TAMPERED);
	assert_int_equal(ky_kms_reencipher(f->s, INSTANCE, f->a, f->b, 0, NULL, NULL, &st),
	                 KY_ERR_RECORD_STALE);
	/* the current row back: served, and moved */
	sqlf(f->path, "DROP TABLE old");
	ky_key_free(k);
	k = create_root(f, "other");
	assert_int_equal(ky_kms_key_get(&f->kms, k->id, 0, NOW, &g), 0);
	ky_key_free(g);
	ky_key_free(k);
}

static void test_tampered_blob(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "victim"), *g = NULL;

	/* flip one byte in the middle of the ciphertext */
	sqlf(f->path,
	     "UPDATE keys SET blob = substr(blob, 1, 40) || "
	     "(CASE WHEN substr(blob, 41, 1) = x'00' THEN x'01' ELSE x'00' END) || "
	     "substr(blob, 42) WHERE id = '%s'",
	     k->id);
	assert_int_equal(ky_kms_key_get(&f->kms, k->id, 0, NOW, &g), KY_ERR_RECORD_TAMPERED);
	assert_null(g);
	ky_key_free(k);
}

/* A stored record larger than any a unit writes (here: than the whole secure heap) is refused
 * as tampered before memory is set
 * aside for it (a huge blob would exhaust the secure heap for every request), and a listing
 * withholds it; the secure heap a unit sets up holds 24 records of the largest size at once. */
static void test_record_size_bound(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "huge"), *g = NULL, *other = create_root(f, "fine");
	struct ky_key **keys = NULL;
	struct ky_kms_withheld wh;
	size_t n = 0;
	uint64_t total = 0;
	void *p[24];

	sqlf(f->path, "UPDATE keys SET blob = zeroblob(%d) WHERE id = '%s'", KY_KMS_SECURE_HEAP + 1,
	     k->id);
	assert_int_equal(ky_kms_key_get(&f->kms, k->id, 0, NOW, &g), KY_ERR_RECORD_TAMPERED);
	assert_null(g);
	assert_int_equal(ky_kms_key_list(&f->kms, NULL, 0, 0, NOW, &keys, &n, &total, &wh), 0);
	assert_int_equal(n, 1);
	assert_string_equal(keys[0]->id, other->id);
	assert_int_equal(wh.n, 1);
	assert_string_equal(wh.ids[0], k->id);
	ky_keys_free(keys, n);
	for (size_t i = 0; i < 24; i++) {
		p[i] = OPENSSL_secure_malloc(KY_KMS_RECORD_MAX);
		assert_non_null(p[i]);
		assert_true(CRYPTO_secure_allocated(p[i]));
	}
	for (size_t i = 0; i < 24; i++)
		OPENSSL_secure_clear_free(p[i], KY_KMS_RECORD_MAX);
	ky_key_free(k);
	ky_key_free(other);
}

/* A record that would be larger than a unit opens is never written: 200 versions of 7,500
 * bytes each make about 1.5 MB. */
static void test_record_size_bound_on_write(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "grows");
	struct ky_store_row row = {0};
	struct ky_key_version *v;
	const uint32_t nv = 200;

	assert_non_null(v = realloc(k->versions, nv * sizeof(*v)));
	k->versions = v;
	for (uint32_t i = k->nversions; i < nv; i++) {
		v[i] = v[0];
		v[i].n = i + 1;
		v[i].len = 7500;
		assert_non_null(v[i].material = OPENSSL_secure_zalloc(v[i].len));
	}
	k->nversions = nv;
	assert_int_equal(ky_kms_record_seal(&f->kms, k, &row), KY_ERR_TOO_LARGE);
	assert_null(row.blob);
	ky_key_free(k);
}

static void test_tampered_blob_byte_exact(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "victim"), *g = NULL;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	uint8_t *blob;
	int n;

	/* every region of the blob: nonce, ciphertext, tag */
	if (f->pg) { /* one bit flipped in place and back, by SQL */
		PGconn *pc = PQconnectdb(f->path);
		PGresult *res;
		const char *pv[1] = {k->id};
		assert_int_equal(PQstatus(pc), CONNECTION_OK);
		res = PQexecParams(pc, "SELECT length(blob) FROM keys WHERE id = $1", 1, NULL, pv,
		                   NULL, NULL, 0);
		assert_int_equal(PQntuples(res), 1);
		n = atoi(PQgetvalue(res, 0, 0));
		PQclear(res);
		PQfinish(pc);
		int at[] = {0, 11, 12, n / 2, n - 17, n - 16, n - 1};
		for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
			sqlf(f->path,
			     "UPDATE keys SET blob = set_byte(blob, %d, get_byte(blob, %d) # 1) "
			     "WHERE id = '%s'",
			     at[i], at[i], k->id);
			assert_int_equal(ky_kms_key_get(&f->kms, k->id, 0, NOW, &g),
			                 KY_ERR_RECORD_TAMPERED);
			sqlf(f->path,
			     "UPDATE keys SET blob = set_byte(blob, %d, get_byte(blob, %d) # 1) "
			     "WHERE id = '%s'",
			     at[i], at[i], k->id);
		}
		g = load(f, k->id);
		ky_key_free(g);
		ky_key_free(k);
		return;
	}
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(
	    sqlite3_prepare_v2(db, "SELECT blob FROM keys WHERE id = ?", -1, &st, NULL), SQLITE_OK);
	sqlite3_bind_text(st, 1, k->id, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	n = sqlite3_column_bytes(st, 0);
	blob = malloc((size_t)n);
	memcpy(blob, sqlite3_column_blob(st, 0), (size_t)n);
	sqlite3_finalize(st);
	int spots[] = {0, 11, 12, n / 2, n - 17, n - 16, n - 1};
	for (size_t i = 0; i < sizeof(spots) / sizeof(spots[0]); i++) {
		blob[spots[i]] ^= 0x01;
		assert_int_equal(
		    sqlite3_prepare_v2(db, "UPDATE keys SET blob = ? WHERE id = ?", -1, &st, NULL),
		    SQLITE_OK);
		sqlite3_bind_blob(st, 1, blob, n, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, k->id, -1, SQLITE_STATIC);
		assert_int_equal(sqlite3_step(st), SQLITE_DONE);
		sqlite3_finalize(st);
		assert_int_equal(ky_kms_key_get(&f->kms, k->id, 0, NOW, &g),
		                 KY_ERR_RECORD_TAMPERED);
		blob[spots[i]] ^= 0x01;
	}
	/* restored: served again */
	assert_int_equal(
	    sqlite3_prepare_v2(db, "UPDATE keys SET blob = ? WHERE id = ?", -1, &st, NULL),
	    SQLITE_OK);
	sqlite3_bind_blob(st, 1, blob, n, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, k->id, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
	sqlite3_close(db);
	free(blob);
	g = load(f, k->id);
	ky_key_free(g);
	ky_key_free(k);
}

static void test_tampered_clear_columns(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "columns"), *g = NULL;
	static const char *const edits[] = {
	    "extractable = 1",
	    "state = 2",
	    "state = 5",
	    "name = 'renamed'",
	    "created = created + 1",
	    "updated = updated + 1",
	    "deleted = 1",
	    "version = 2",
	};
	static const char *const undo[] = {
	    "extractable = 0",
	    "state = 1",
	    "state = 1",
	    "name = 'columns'",
	    "created = created - 1",
	    "updated = updated - 1",
	    "deleted = 0",
	    "version = 1",
	};

	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		sqlf(f->path, "UPDATE keys SET %s WHERE id = '%s'", edits[i], k->id);
		assert_int_equal(ky_kms_key_get(&f->kms, k->id, 0, NOW, &g),
		                 KY_ERR_RECORD_TAMPERED);
		assert_int_equal(ky_kms_key_get(&f->kms, k->id, KY_KMS_METADATA_ONLY, NOW, &g),
		                 KY_ERR_RECORD_TAMPERED);
		sqlf(f->path, "UPDATE keys SET %s WHERE id = '%s'", undo[i], k->id);
		g = load(f, k->id);
		ky_key_free(g);
	}
	ky_key_free(k);
}

static void test_swapped_blobs(void **state)
{
	struct fx *f = *state;
	struct ky_key *k1 = create_root(f, "one"), *k2 = create_root(f, "one"), *g = NULL;
	char q[512];

	/* same name, same state: only the id in the AAD tells the records apart */
	snprintf(q, sizeof(q),
	         "UPDATE keys SET blob = (SELECT blob FROM keys WHERE id = '%s') WHERE id = '%s'",
	         k2->id, k1->id);
	sql(f->path, q);
	assert_int_equal(ky_kms_key_get(&f->kms, k1->id, 0, NOW, &g), KY_ERR_RECORD_TAMPERED);
	ky_key_free(k1);
	ky_key_free(k2);
}

static void test_other_instance(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "bound"), *g = NULL;
	struct ky_kms other = f->kms;

	other.instance = "inst-0002";
	assert_int_equal(ky_kms_key_get(&other, k->id, 0, NOW, &g), KY_ERR_RECORD_TAMPERED);
	ky_key_free(k);
}

static void test_unknown_vp(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "under-a"), *g = NULL;
	struct ky_kms only_b = {.store = f->s, .instance = INSTANCE, .current = f->b};
	struct ky_kms none = {.store = f->s, .instance = INSTANCE};

	assert_int_equal(ky_kms_key_get(&only_b, k->id, 0, NOW, &g), KY_ERR_MK_MISMATCH);
	assert_null(g);
	assert_int_equal(ky_kms_key_get(&none, k->id, 0, NOW, &g), KY_ERR_MK_MISMATCH);
	/* a VP column pointed at b while the blob is under a: tag fails */
	sqlf(f->path, "UPDATE keys SET vp = (SELECT vp FROM keys WHERE id = '%s')", k->id);
	struct ky_kms both = {.store = f->s, .instance = INSTANCE, .current = f->b, .next = f->a};
	assert_int_equal(ky_kms_key_get(&both, k->id, 0, NOW, &g), 0);
	ky_key_free(g);
	ky_key_free(k);
}

static void test_rotation_in_progress_writes_under_next(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "old"), *g = NULL, *n = NULL;
	struct ky_kms rot = {.store = f->s, .instance = INSTANCE, .current = f->a, .next = f->b};
	struct ky_kms only_b = {.store = f->s, .instance = INSTANCE, .current = f->b};
	struct ky_key_spec sp = {.name = "new"};

	/* an old record opens under the current key during the rotation */
	assert_int_equal(ky_kms_key_get(&rot, k->id, 0, NOW, &g), 0);
	ky_key_free(g);
	/* a new record goes under the committed new key */
	assert_int_equal(ky_kms_key_create(&rot, &sp, NOW, &n), 0);
	assert_memory_equal(n->vp, f->b->vp, KY_VP_LEN);
	assert_int_equal(ky_kms_key_get(&only_b, n->id, 0, NOW, &g), 0);
	ky_key_free(g);
	/* an update moves the record to the new key */
	struct ky_key_act ka = {.action = KY_KEY_DISABLE, .rotation_months = -1, .dual_auth = -1};
	assert_int_equal(ky_kms_key_act(&rot, k->id, &ka, NOW, &g), 0);
	assert_memory_equal(g->vp, f->b->vp, KY_VP_LEN);
	ky_key_free(g);
	assert_int_equal(ky_kms_key_get(&only_b, k->id, 0, NOW, &g), 0);
	assert_int_equal(g->state, KY_KEY_SUSPENDED);
	ky_key_free(g);
	ky_key_free(n);
	ky_key_free(k);
}

/* ---- record encoding ---- */

static void test_record_roundtrip_and_truncation(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "enc"), *d = NULL;
	struct ky_key_act rot = {.action = KY_KEY_ROTATE, .rotation_months = -1, .dual_auth = -1};
	uint8_t *p = NULL;
	size_t n = 0;

	assert_int_equal(ky_key_apply(k, &rot, NOW + 5), 0);
	k->dual_auth = 1;
	strcpy(k->deletion_set_by, "carol");
	k->deletion_set_at = NOW + 7;
	k->rotation_months = 3;
	k->expires = NOW + 1000;
	assert_int_equal(ky_kms_record_encode(k, &p, &n), 0);
	assert_int_equal(ky_kms_record_decode(p, n, 0, &d), 0);
	assert_string_equal(d->id, k->id);
	assert_string_equal(d->deletion_set_by, "carol");
	assert_int_equal(d->deletion_set_at, NOW + 7);
	assert_int_equal(d->rotation_months, 3);
	assert_int_equal(d->expires, NOW + 1000);
	assert_int_equal(d->dual_auth, 1);
	assert_int_equal(d->nversions, 2);
	assert_int_equal(d->versions[1].n, 2);
	assert_int_equal(d->versions[1].created, NOW + 5);
	assert_memory_equal(d->versions[1].material, k->versions[1].material, 32);
	ky_key_free(d);
	/* every truncation and a trailing byte are refused */
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(ky_kms_record_decode(p, i, 0, &d), KY_ERR_MALFORMED);
		assert_null(d);
	}
	uint8_t *q = malloc(n + 1);
	memcpy(q, p, n);
	q[n] = 0;
	assert_int_equal(ky_kms_record_decode(q, n + 1, 0, &d), KY_ERR_MALFORMED);
	/* wrong format byte, bad state, bad boolean */
	q[0] = 3;
	assert_int_equal(ky_kms_record_decode(q, n, 0, &d), KY_ERR_MALFORMED);
	/* format 1 has no aliases and no key ring: they would be trailing bytes (u8 0, then
	 * str "default") */
	q[0] = 1;
	assert_int_equal(ky_kms_record_decode(q, n, 0, &d), KY_ERR_MALFORMED);
	assert_int_equal(q[n - 10], 0);
	assert_memory_equal(q + n - 9, "\0\7default", 9);
	assert_int_equal(ky_kms_record_decode(q, n - 10, 0, &d), 0);
	assert_int_equal(d->naliases, 0);
	assert_string_equal(d->ring, "default");
	ky_key_free(d);
	/* format 2 with a ring that is no ring id */
	q[0] = 2;
	q[n - 3] = '_';
	assert_int_equal(ky_kms_record_decode(q, n, 0, &d), KY_ERR_MALFORMED);
	q[n - 3] = 'u';
	q[0] = 2;
	size_t off_flags = 1 + 2 + KY_UUID_LEN + 2 + strlen(k->name) + 2 + strlen(k->description);
	q[off_flags + 2] = 4; /* state 4 does not exist */
	assert_int_equal(ky_kms_record_decode(q, n, 0, &d), KY_ERR_MALFORMED);
	q[off_flags + 2] = 1;
	q[off_flags] = 2; /* extractable must be 0 or 1 */
	assert_int_equal(ky_kms_record_decode(q, n, 0, &d), KY_ERR_MALFORMED);
	q[off_flags] = 0;
	assert_int_equal(ky_kms_record_decode(q, n, 0, &d), 0);
	ky_key_free(d);
	free(q);
	ky_kms_buf_free(p, n);
	/* a metadata-only copy is never encoded */
	assert_int_equal(ky_kms_key_get(&f->kms, k->id, KY_KMS_METADATA_ONLY, NOW, &d), 0);
	assert_int_equal(ky_kms_record_encode(d, &p, &n), KY_ERR_USAGE);
	ky_key_free(d);
	ky_key_free(k);
}

/* ---- key aliases ---- */

static int alias_act(struct fx *f, const char *id, enum ky_key_action a, const char *alias,
                     struct ky_key **out)
{
	struct ky_key_act ka = {
	    .action = a, .actor = "bob", .rotation_months = -1, .dual_auth = -1, .alias = alias};
	return ky_kms_key_act(&f->kms, id, &ka, NOW + 9, out);
}

static void test_alias_rule(void **state)
{
	static const char *const good[] = {"ab", "US-South-Test-Key", "a_b-c9", "0123456789",
	                                   "00000000-0000-0000-0000-00000000000"};
	static const char *const bad[] = {"registrations",
	                                  "",
	                                  "a",
	                                  "a b",
	                                  "a.b",
	                                  "a/b",
	                                  "é-x",
	                                  "key:1",
	                                  "00000000-0000-0000-0000-000000000000",
	                                  "ABCDEF01-2345-6789-abcd-ef0123456789"};
	char longest[KY_KEY_ALIAS_MAX + 2];

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(ky_key_alias_valid(good[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(ky_key_alias_valid(bad[i]));
	assert_false(ky_key_alias_valid(NULL));
	memset(longest, 'a', sizeof(longest) - 1);
	longest[KY_KEY_ALIAS_MAX] = '\0';
	assert_true(ky_key_alias_valid(longest));
	longest[KY_KEY_ALIAS_MAX] = 'a';
	longest[KY_KEY_ALIAS_MAX + 1] = '\0';
	assert_false(ky_key_alias_valid(longest));
}

/* Aliases given at creation and added later are in the sealed record, unique in the store,
 * at most 5 a key; resolution finds the key and checks its record. */
static void test_aliases(void **state)
{
	struct fx *f = *state;
	const char *two[] = {"billing", "billing-eu"}, *twice[] = {"same", "same"};
	const char *bad[] = {"ok-one", "not valid"}, *six[] = {"a1", "a2", "a3", "a4", "a5", "a6"};
	const char *taken[] = {"fresh", "billing"};
	struct ky_key_spec sp = {
	    .name = "with-aliases", .actor = "alice", .aliases = two, .naliases = 2};
	struct ky_key *k = NULL, *g = NULL, *o = create_root(f, "other");
	char id[KY_UUID_LEN + 1];
	uint8_t *p = NULL;
	size_t n = 0;

	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), 0);
	assert_int_equal(k->naliases, 2);
	g = load(f, k->id);
	assert_int_equal(g->naliases, 2);
	assert_string_equal(g->aliases[0].name, "billing");
	assert_string_equal(g->aliases[1].name, "billing-eu");
	assert_string_equal(g->aliases[0].created_by, "alice");
	assert_int_equal(g->aliases[1].created, NOW);
	ky_key_free(g);
	assert_int_equal(ky_kms_alias_resolve(&f->kms, "billing-eu", NOW, id), 0);
	assert_string_equal(id, k->id);
	assert_int_equal(ky_kms_alias_resolve(&f->kms, "Billing", NOW, id), KY_ERR_NOT_FOUND);

	/* refusals at creation: nothing stored */
	sp.aliases = twice;
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &g), KY_ERR_KEY_ALIAS_EXISTS);
	sp.aliases = bad;
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &g), KY_ERR_KEY_ALIAS_INVALID);
	sp.aliases = six;
	sp.naliases = 6;
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &g), KY_ERR_KEY_ALIAS_QUOTA);
	sp.aliases = taken;
	sp.naliases = 2;
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &g), KY_ERR_KEY_ALIAS_EXISTS);
	assert_null(g);
	assert_int_equal(ky_kms_alias_resolve(&f->kms, "fresh", NOW, id), KY_ERR_NOT_FOUND);

	/* added and deleted one by one */
	assert_int_equal(alias_act(f, o->id, KY_KEY_ALIAS_ADD, "billing", NULL),
	                 KY_ERR_KEY_ALIAS_EXISTS);
	assert_int_equal(alias_act(f, k->id, KY_KEY_ALIAS_ADD, "billing", NULL),
	                 KY_ERR_KEY_ALIAS_EXISTS);
	assert_int_equal(alias_act(f, k->id, KY_KEY_ALIAS_ADD, "no spaces", NULL),
	                 KY_ERR_KEY_ALIAS_INVALID);
	for (int i = 0; i < 3; i++)
		assert_int_equal(alias_act(f, k->id, KY_KEY_ALIAS_ADD, six[i], NULL), 0);
	assert_int_equal(alias_act(f, k->id, KY_KEY_ALIAS_ADD, six[3], &g), KY_ERR_KEY_ALIAS_QUOTA);
	assert_null(g);
	assert_int_equal(alias_act(f, k->id, KY_KEY_ALIAS_DELETE, "billing", &g), 0);
	assert_int_equal(g->naliases, 4);
	assert_string_equal(g->aliases[0].name, "billing-eu");
	assert_string_equal(g->aliases[3].name, "a3");
	assert_string_equal(g->aliases[3].created_by, "bob");
	ky_key_free(g);
	g = NULL;
	assert_int_equal(alias_act(f, k->id, KY_KEY_ALIAS_DELETE, "billing", NULL),
	                 KY_ERR_KEY_ALIAS_NOT_FOUND);
	assert_int_equal(ky_kms_alias_resolve(&f->kms, "billing", NOW, id), KY_ERR_NOT_FOUND);
	/* the freed alias goes to another key */
	assert_int_equal(alias_act(f, o->id, KY_KEY_ALIAS_ADD, "billing", NULL), 0);
	assert_int_equal(ky_kms_alias_resolve(&f->kms, "billing", NOW, id), 0);
	assert_string_equal(id, o->id);

	/* a destroyed key takes no new alias; it keeps its own until purged */
	assert_int_equal(act(f, o->id, KY_KEY_DELETE, "alice", NOW + 10), 0);
	assert_int_equal(alias_act(f, o->id, KY_KEY_ALIAS_ADD, "late", NULL), KY_ERR_KEY_DESTROYED);
	assert_int_equal(ky_kms_alias_resolve(&f->kms, "billing", NOW + 11, id), 0);
	assert_int_equal(act(f, o->id, KY_KEY_PURGE, "alice", NOW + 10 + KY_KMS_PURGE_DELAY), 0);
	assert_int_equal(ky_kms_alias_resolve(&f->kms, "billing", NOW, id), KY_ERR_NOT_FOUND);

	/* the index is not the authority: a row naming a key whose record does not list the
	 * alias is refused */
	tfx_sql(f->path, "INSERT INTO key_aliases (alias, id) SELECT 'planted', id FROM keys");
	assert_int_equal(ky_kms_alias_resolve(&f->kms, "planted", NOW, id), KY_ERR_RECORD_TAMPERED);
	assert_string_equal(id, "");

	/* the record round trip keeps every alias field */
	g = load(f, k->id);
	assert_int_equal(ky_kms_record_encode(g, &p, &n), 0);
	ky_key_free(g);
	assert_int_equal(ky_kms_record_decode(p, n, 0, &g), 0);
	assert_int_equal(g->naliases, 4);
	assert_string_equal(g->aliases[1].name, "a1");
	assert_int_equal(g->aliases[1].created, NOW + 9);
	ky_key_free(g);
	ky_kms_buf_free(p, n);
	ky_key_free(k);
	ky_key_free(o);
}

/* A row of the alias index deleted by hand: the alias stays with the key whose sealed record
 * lists it. Giving it to another key, on create or added, is refused as tampering, and nothing
 * is written; resolving it is not found (never another key). */
static void test_alias_index_row_deleted(void **state)
{
	struct fx *f = *state;
	const char *one[] = {"ledger-eu"}, *fresh_and_lost[] = {"fresh-one", "ledger-eu"};
	struct ky_key_spec sp = {
	    .name = "holds-alias", .actor = "alice", .aliases = one, .naliases = 1};
	struct ky_key *k = NULL, *g = NULL, *o = create_root(f, "second");
	char id[KY_UUID_LEN + 1];
	const struct ky_store_filter all = {.states = 0, .extractable = -1};
	uint64_t before = 0, after = 0;

	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), 0);
	/* untouched: the other key is refused by the index as before */
	assert_int_equal(alias_act(f, o->id, KY_KEY_ALIAS_ADD, "ledger-eu", NULL),
	                 KY_ERR_KEY_ALIAS_EXISTS);
	tfx_sql(f->path, "DELETE FROM key_aliases WHERE alias = 'ledger-eu'");
	assert_int_equal(ky_kms_alias_resolve(&f->kms, "ledger-eu", NOW, id), KY_ERR_NOT_FOUND);
	/* added to another key */
	assert_int_equal(alias_act(f, o->id, KY_KEY_ALIAS_ADD, "ledger-eu", &g),
	                 KY_ERR_RECORD_TAMPERED);
	assert_null(g);
	g = load(f, o->id);
	assert_int_equal(g->naliases, 0);
	ky_key_free(g);
	g = NULL;
	/* a new key that asks for it, with another alias that is free */
	assert_int_equal(ky_store_key_count(f->s, &all, &before), 0);
	sp.name = "third";
	sp.aliases = fresh_and_lost;
	sp.naliases = 2;
	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &g), KY_ERR_RECORD_TAMPERED);
	assert_null(g);
	assert_int_equal(ky_store_key_count(f->s, &all, &after), 0);
	assert_int_equal(after, before);
	assert_int_equal(ky_kms_alias_resolve(&f->kms, "fresh-one", NOW, id), KY_ERR_NOT_FOUND);
	assert_int_equal(ky_kms_alias_resolve(&f->kms, "ledger-eu", NOW, id), KY_ERR_NOT_FOUND);
	/* the key that holds it may still take other aliases, and the free ones go elsewhere */
	assert_int_equal(alias_act(f, k->id, KY_KEY_ALIAS_ADD, "ledger-us", NULL), 0);
	assert_int_equal(alias_act(f, o->id, KY_KEY_ALIAS_ADD, "fresh-one", NULL), 0);
	assert_int_equal(ky_kms_alias_resolve(&f->kms, "fresh-one", NOW, id), 0);
	assert_string_equal(id, o->id);
	ky_key_free(k);
	ky_key_free(o);
}

/* ---- key rings ---- */

static void test_rings(void **state)
{
	struct fx *f = *state;
	struct ky_key_spec sp = {.name = "in-ring", .actor = "alice", .ring = "team-a"};
	struct ky_key_rings l;
	struct ky_key *k = NULL, *g = NULL, *o = NULL;
	size_t holding = 9;
	uint64_t count = 1;
	char id[16];
	uint8_t bad[] = {1, 0, 1, 0, 1, 'x', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};

	assert_true(ky_key_ring_valid("team-a"));
	assert_true(ky_key_ring_valid("AB"));
	assert_false(ky_key_ring_valid("a"));
	assert_false(ky_key_ring_valid("team_a"));
	assert_false(ky_key_ring_valid("team a"));
	assert_false(ky_key_ring_valid(NULL));
	assert_int_equal(ky_kms_rings_get(&f->kms, &l), 0);
	assert_int_equal(l.n, 0);
	assert_int_equal(ky_kms_ring_check(&f->kms, "default"), 0);
	assert_int_equal(ky_kms_ring_check(&f->kms, "team-a"), KY_ERR_KEY_RING_NOT_FOUND);
	/* a key in a ring that does not exist: nothing stored */
	assert_int_equal(ky_kms_key_create_in(&f->kms, &sp, NOW, &k), KY_ERR_KEY_RING_NOT_FOUND);
	assert_null(k);
	assert_int_equal(ky_store_key_count(f->s, NULL, &count), 0);
	assert_int_equal(count, 0);

	assert_int_equal(ky_kms_ring_create(&f->kms, "team-a", "alice", NOW), 0);
	assert_int_equal(ky_kms_ring_create(&f->kms, "team-a", "bob", NOW), KY_ERR_KEY_RING_EXISTS);
	assert_int_equal(ky_kms_ring_create(&f->kms, "default", "bob", NOW),
	                 KY_ERR_KEY_RING_EXISTS);
	assert_int_equal(ky_kms_ring_create(&f->kms, "no_underscore", "bob", NOW),
	                 KY_ERR_KEY_RING_INVALID);
	assert_int_equal(ky_kms_rings_get(&f->kms, &l), 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.rings[0].id, "team-a");
	assert_string_equal(l.rings[0].created_by, "alice");
	assert_int_equal(l.rings[0].created, NOW);

	assert_int_equal(ky_kms_key_create_in(&f->kms, &sp, NOW, &k), 0);
	assert_string_equal(k->ring, "team-a");
	g = load(f, k->id);
	assert_string_equal(g->ring, "team-a");
	ky_key_free(g);
	/* not deleted while it holds a key, in any state */
	assert_int_equal(act(f, k->id, KY_KEY_DELETE, "alice", NOW + 1), 0);
	assert_int_equal(ky_kms_ring_delete(&f->kms, "team-a", false, NOW + 2, &holding),
	                 KY_ERR_KEY_RING_NOT_EMPTY);
	assert_int_equal(holding, 1);
	assert_int_equal(ky_kms_ring_delete(&f->kms, "default", false, NOW, &holding),
	                 KY_ERR_KEY_RING_DEFAULT);
	assert_int_equal(ky_kms_ring_delete(&f->kms, "team-b", false, NOW, &holding),
	                 KY_ERR_KEY_RING_NOT_FOUND);
	/* moved out: the ring can go */
	assert_int_equal(ky_kms_key_move(&f->kms, k->id, "team-b", "alice", NOW + 3, &g),
	                 KY_ERR_KEY_RING_NOT_FOUND);
	assert_null(g);
	assert_int_equal(ky_kms_key_move(&f->kms, k->id, "default", "alice", NOW + 3, &g), 0);
	assert_string_equal(g->ring, "default");
	ky_key_free(g);
	/* force: a ring holding only deleted keys goes, they move to 'default' */
	assert_int_equal(ky_kms_ring_create(&f->kms, "team-d", "alice", NOW), 0);
	assert_int_equal(ky_kms_key_move(&f->kms, k->id, "team-d", "alice", NOW + 3, &g), 0);
	ky_key_free(g);
	o = create_root(f, "live");
	assert_int_equal(ky_kms_key_move(&f->kms, o->id, "team-d", "alice", NOW + 3, &g), 0);
	ky_key_free(g);
	assert_int_equal(ky_kms_ring_delete(&f->kms, "team-d", true, NOW + 4, &holding),
	                 KY_ERR_KEY_RING_NOT_EMPTY);
	assert_int_equal(holding, 1); /* the live one */
	assert_int_equal(ky_kms_key_move(&f->kms, o->id, "default", "alice", NOW + 3, &g), 0);
	ky_key_free(g);
	assert_int_equal(ky_kms_ring_delete(&f->kms, "team-d", true, NOW + 4, &holding), 0);
	g = load(f, k->id);
	assert_string_equal(g->ring, "default");
	assert_int_equal(g->state, KY_KEY_DESTROYED);
	ky_key_free(g);
	ky_key_free(o);
	assert_int_equal(ky_kms_ring_delete(&f->kms, "team-a", false, NOW + 4, &holding), 0);
	assert_int_equal(ky_kms_rings_get(&f->kms, &l), 0);
	assert_int_equal(l.n, 0);
	/* inside the caller's transaction: rolled back with it */
	assert_int_equal(ky_store_begin(f->s), 0);
	assert_int_equal(ky_kms_ring_create(&f->kms, "team-c", "alice", NOW), 0);
	assert_int_equal(ky_store_rollback(f->s), 0);
	assert_int_equal(ky_kms_ring_check(&f->kms, "team-c"), KY_ERR_KEY_RING_NOT_FOUND);
	/* at most KY_KEY_RINGS_MAX */
	for (int i = 0; i < KY_KEY_RINGS_MAX; i++) {
		snprintf(id, sizeof(id), "r-%d", i);
		assert_int_equal(ky_kms_ring_create(&f->kms, id, "alice", NOW), 0);
	}
	assert_int_equal(ky_kms_ring_create(&f->kms, "one-more", "alice", NOW),
	                 KY_ERR_KEY_RING_QUOTA);
	/* the stored list: what kyok never writes is refused */
	assert_int_equal(ky_kms_rings_decode(bad, 2, &l), KY_ERR_MALFORMED);
	assert_int_equal(ky_kms_rings_decode(bad, sizeof(bad), &l), KY_ERR_MALFORMED); /* 'x' */
	bad[0] = 2;
	assert_int_equal(ky_kms_rings_decode(bad, 3, &l), KY_ERR_MALFORMED);
	ky_key_free(k);
}

/* ---- wrap, unwrap, rewrap ---- */

static void test_wrap_roundtrip(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "wrapper");
	uint8_t pt[32], ct[32 + KY_WRAP_OVERHEAD], out[64], dek[KY_DEK_LEN];
	const uint8_t aad[] = "tenant=7;purpose=backup";
	size_t ctlen = 0, outlen = 0;
	uint32_t ver = 0;

	assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
	/* without aad */
	assert_int_equal(ky_kms_wrap(k, pt, sizeof(pt), NULL, 0, ct, sizeof(ct), &ctlen), 0);
	assert_int_equal(ctlen, sizeof(ct));
	assert_memory_equal(ct, "KYW1\0\0\0\1", 8);
	assert_int_equal(ky_kms_unwrap(k, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, &ver), 0);
	assert_int_equal(outlen, 32);
	assert_int_equal(ver, 1);
	assert_memory_equal(out, pt, 32);
	/* aad given on unwrap but not on wrap */
	assert_int_equal(
	    ky_kms_unwrap(k, ct, ctlen, aad, sizeof(aad), out, sizeof(out), &outlen, NULL),
	    KY_ERR_UNWRAP);
	/* with aad */
	assert_int_equal(ky_kms_wrap(k, pt, sizeof(pt), aad, sizeof(aad), ct, sizeof(ct), &ctlen),
	                 0);
	assert_int_equal(
	    ky_kms_unwrap(k, ct, ctlen, aad, sizeof(aad), out, sizeof(out), &outlen, NULL), 0);
	assert_memory_equal(out, pt, 32);
	/* wrong aad, missing aad */
	assert_int_equal(
	    ky_kms_unwrap(k, ct, ctlen, aad, sizeof(aad) - 2, out, sizeof(out), &outlen, NULL),
	    KY_ERR_UNWRAP);
	assert_int_equal(ky_kms_unwrap(k, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL),
	                 KY_ERR_UNWRAP);
	/* output too small */
	assert_int_equal(ky_kms_wrap(k, pt, sizeof(pt), NULL, 0, ct, sizeof(ct) - 1, &ctlen),
	                 KY_ERR_TOO_LARGE);
	assert_int_equal(ky_kms_wrap(k, pt, sizeof(pt), NULL, 0, ct, sizeof(ct), &ctlen), 0);
	assert_int_equal(ky_kms_unwrap(k, ct, ctlen, NULL, 0, out, 31, &outlen, NULL),
	                 KY_ERR_TOO_LARGE);
	/* empty plaintext */
	assert_int_equal(ky_kms_wrap(k, pt, 0, NULL, 0, ct, sizeof(ct), &ctlen), KY_ERR_MALFORMED);
	/* wrap without plaintext: a new data key */
	assert_int_equal(ky_kms_wrap_dek(k, NULL, 0, dek, ct, sizeof(ct), &ctlen), 0);
	assert_int_equal(ky_kms_unwrap(k, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL), 0);
	assert_int_equal(outlen, KY_DEK_LEN);
	assert_memory_equal(out, dek, KY_DEK_LEN);
	ky_key_free(k);
}

static void test_wrap_imported_sizes(void **state)
{
	struct fx *f = *state;
	uint8_t m[32], pt[16], ct[16 + KY_WRAP_OVERHEAD], out[16];
	struct ky_key_spec sp = {.name = "imported", .payload = m};
	struct ky_key *k = NULL;
	size_t ctlen = 0, outlen = 0;

	assert_int_equal(RAND_bytes(m, sizeof(m)), 1);
	assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
	for (size_t len = 16; len <= 32; len += 8) {
		sp.len = len;
		assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), 0);
		assert_int_equal(ky_kms_wrap(k, pt, sizeof(pt), NULL, 0, ct, sizeof(ct), &ctlen),
		                 0);
		assert_int_equal(
		    ky_kms_unwrap(k, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL), 0);
		assert_memory_equal(out, pt, sizeof(pt));
		ky_key_free(k);
	}
}

static void test_unwrap_tampered_and_malformed(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "wrapper");
	uint8_t pt[32], ct[32 + KY_WRAP_OVERHEAD], out[64];
	size_t ctlen = 0, outlen = 0;
	uint32_t ver = 0;

	assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
	assert_int_equal(ky_kms_wrap(k, pt, sizeof(pt), NULL, 0, ct, sizeof(ct), &ctlen), 0);
	/* each byte of nonce, ciphertext and tag */
	for (size_t i = 8; i < ctlen; i++) {
		ct[i] ^= 0x80;
		assert_int_equal(
		    ky_kms_unwrap(k, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL),
		    KY_ERR_UNWRAP);
		ct[i] ^= 0x80;
	}
	/* magic */
	for (size_t i = 0; i < 4; i++) {
		ct[i] ^= 0x01;
		assert_int_equal(
		    ky_kms_unwrap(k, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL),
		    KY_ERR_WRAP_MALFORMED);
		ct[i] ^= 0x01;
	}
	/* version: 0 is malformed, 2 does not exist, a larger one neither */
	ct[7] = 0;
	assert_int_equal(ky_kms_unwrap(k, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL),
	                 KY_ERR_WRAP_MALFORMED);
	ct[7] = 2;
	assert_int_equal(ky_kms_unwrap(k, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL),
	                 KY_ERR_UNWRAP);
	ct[7] = 1;
	ct[4] = 0x80;
	assert_int_equal(ky_kms_unwrap(k, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL),
	                 KY_ERR_UNWRAP);
	ct[4] = 0;
	/* truncated: every length up to the bare overhead is malformed, longer ones fail auth */
	for (size_t n = 0; n <= KY_WRAP_OVERHEAD; n++)
		assert_int_equal(ky_kms_unwrap(k, ct, n, NULL, 0, out, sizeof(out), &outlen, NULL),
		                 KY_ERR_WRAP_MALFORMED);
	assert_int_equal(ky_kms_unwrap(k, ct, ctlen - 1, NULL, 0, out, sizeof(out), &outlen, NULL),
	                 KY_ERR_UNWRAP);
	assert_int_equal(ky_kms_unwrap(k, NULL, 0, NULL, 0, out, sizeof(out), &outlen, NULL),
	                 KY_ERR_WRAP_MALFORMED);
	assert_int_equal(ky_kms_wrap_version(ct, ctlen, &ver), 0);
	assert_int_equal(ver, 1);
	/* intact: still fine */
	assert_int_equal(ky_kms_unwrap(k, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL), 0);
	ky_key_free(k);
}

static void test_unwrap_other_key(void **state)
{
	struct fx *f = *state;
	struct ky_key *k1 = create_root(f, "one"), *k2 = create_root(f, "two");
	uint8_t pt[32], ct[32 + KY_WRAP_OVERHEAD], out[64];
	size_t ctlen = 0, outlen = 0;

	assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
	assert_int_equal(ky_kms_wrap(k1, pt, sizeof(pt), NULL, 0, ct, sizeof(ct), &ctlen), 0);
	assert_int_equal(ky_kms_unwrap(k2, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL),
	                 KY_ERR_UNWRAP);
	/* same material under another id (a copied key) still refuses: the id is in the AAD */
	memcpy(k2->versions[0].material, k1->versions[0].material, 32);
	assert_int_equal(ky_kms_unwrap(k2, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL),
	                 KY_ERR_UNWRAP);
	ky_key_free(k1);
	ky_key_free(k2);
}

static void test_rotate_unwrap_old_rewrap_new(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "rotating"), *g;
	uint8_t pt[32], ct1[32 + KY_WRAP_OVERHEAD], ct2[32 + KY_WRAP_OVERHEAD], out[64];
	size_t l1 = 0, l2 = 0, outlen = 0;
	uint32_t ver = 0;
	const uint8_t aad[] = "ctx";

	assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
	assert_int_equal(ky_kms_wrap(k, pt, sizeof(pt), aad, 3, ct1, sizeof(ct1), &l1), 0);
	assert_int_equal(act(f, k->id, KY_KEY_ROTATE, "bob", NOW + 10), 0);
	assert_int_equal(act(f, k->id, KY_KEY_ROTATE, "bob", NOW + 20), 0);
	g = load(f, k->id);
	assert_int_equal(g->nversions, 3);
	assert_memory_equal(g->versions[0].material, k->versions[0].material, 32);
	assert_memory_not_equal(g->versions[2].material, g->versions[0].material, 32);
	/* old version still unwraps */
	assert_int_equal(ky_kms_unwrap(g, ct1, l1, aad, 3, out, sizeof(out), &outlen, &ver), 0);
	assert_int_equal(ver, 1);
	assert_memory_equal(out, pt, 32);
	/* new wraps use the newest */
	assert_int_equal(ky_kms_wrap(g, pt, sizeof(pt), aad, 3, ct2, sizeof(ct2), &l2), 0);
	assert_int_equal(ky_kms_wrap_version(ct2, l2, &ver), 0);
	assert_int_equal(ver, 3);
	/* rewrap moves an old ciphertext to the newest version */
	assert_int_equal(ky_kms_rewrap(g, ct1, l1, aad, 3, ct2, sizeof(ct2), &l2), 0);
	assert_int_equal(ky_kms_wrap_version(ct2, l2, &ver), 0);
	assert_int_equal(ver, 3);
	assert_int_equal(ky_kms_unwrap(g, ct2, l2, aad, 3, out, sizeof(out), &outlen, &ver), 0);
	assert_int_equal(ver, 3);
	assert_memory_equal(out, pt, 32);
	/* the key as it was before the rotation cannot read version 3 */
	assert_int_equal(ky_kms_unwrap(k, ct2, l2, aad, 3, out, sizeof(out), &outlen, NULL),
	                 KY_ERR_UNWRAP);
	/* rewrap refuses what unwrap refuses, and leaves no output */
	assert_int_equal(ky_kms_rewrap(g, ct1, l1, NULL, 0, ct2, sizeof(ct2), &l2), KY_ERR_UNWRAP);
	assert_int_equal(l2, 0);
	ky_key_free(g);
	ky_key_free(k);
}

static void test_wrap_refusals_by_key(void **state)
{
	struct fx *f = *state;
	struct ky_key_spec sp = {.name = "standard", .extractable = 1};
	struct ky_key *std = NULL, *k = create_root(f, "root"), *g;
	uint8_t pt[32] = {1}, ct[32 + KY_WRAP_OVERHEAD], out[64], dek[KY_DEK_LEN];
	size_t ctlen = 0, outlen = 0;

	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &std), 0);
	assert_int_equal(ky_kms_wrap(std, pt, sizeof(pt), NULL, 0, ct, sizeof(ct), &ctlen),
	                 KY_ERR_KEY_NOT_ROOT);
	assert_int_equal(ky_kms_wrap_dek(std, NULL, 0, dek, ct, sizeof(ct), &ctlen),
	                 KY_ERR_KEY_NOT_ROOT);
	assert_int_equal(ky_kms_wrap(k, pt, sizeof(pt), NULL, 0, ct, sizeof(ct), &ctlen), 0);
	/* suspended: no wrap, no unwrap */
	assert_int_equal(act(f, k->id, KY_KEY_DISABLE, "m", NOW), 0);
	g = load(f, k->id);
	assert_int_equal(ky_kms_wrap(g, pt, sizeof(pt), NULL, 0, ct, sizeof(ct), &ctlen),
	                 KY_ERR_KEY_NOT_ACTIVE);
	assert_int_equal(ky_kms_wrap(k, pt, sizeof(pt), NULL, 0, ct, sizeof(ct), &ctlen), 0);
	assert_int_equal(ky_kms_unwrap(g, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL),
	                 KY_ERR_KEY_NOT_ACTIVE);
	ky_key_free(g);
	/* destroyed */
	assert_int_equal(act(f, k->id, KY_KEY_DELETE, "m", NOW), 0);
	g = load(f, k->id);
	assert_int_equal(ky_kms_unwrap(g, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL),
	                 KY_ERR_KEY_DESTROYED);
	ky_key_free(g);
	ky_key_free(std);
	ky_key_free(k);
}

static void test_deactivated_by_expiry(void **state)
{
	struct fx *f = *state;
	struct ky_key_spec ex = {.name = "expiring", .expires = NOW + 100};
	struct ky_key *e = NULL, *g = NULL;
	uint8_t pt[32] = {2}, ct[32 + KY_WRAP_OVERHEAD], ct2[32 + KY_WRAP_OVERHEAD], out[64];
	size_t ctlen = 0, l2 = 0, outlen = 0;

	assert_int_equal(ky_kms_key_create(&f->kms, &ex, NOW, &e), 0);
	assert_int_equal(ky_kms_wrap(e, pt, sizeof(pt), NULL, 0, ct, sizeof(ct), &ctlen), 0);
	assert_int_equal(ky_kms_key_get(&f->kms, e->id, 0, NOW + 100, &g), 0);
	assert_int_equal(g->state, KY_KEY_DEACTIVATED);
	assert_int_equal(ky_kms_wrap(g, pt, sizeof(pt), NULL, 0, ct2, sizeof(ct2), &l2),
	                 KY_ERR_KEY_NOT_ACTIVE);
	assert_int_equal(ky_kms_rewrap(g, ct, ctlen, NULL, 0, ct2, sizeof(ct2), &l2),
	                 KY_ERR_KEY_NOT_ACTIVE);
	assert_int_equal(ky_kms_unwrap(g, ct, ctlen, NULL, 0, out, sizeof(out), &outlen, NULL), 0);
	ky_key_free(g);
	/* a deactivated key is neither enabled, disabled nor rotated; it may be deleted */
	assert_int_equal(act(f, e->id, KY_KEY_ENABLE, "m", NOW + 100), KY_ERR_KEY_STATE);
	assert_int_equal(act(f, e->id, KY_KEY_DISABLE, "m", NOW + 100), KY_ERR_KEY_STATE);
	assert_int_equal(act(f, e->id, KY_KEY_ROTATE, "m", NOW + 100), KY_ERR_KEY_NOT_ACTIVE);
	assert_int_equal(act(f, e->id, KY_KEY_DELETE, "m", NOW + 100), 0);
	ky_key_free(e);
}

/* Listings by state see an expired key as Deactivated (3), from its expiration date on. */
static void test_list_state_of_expired(void **state)
{
	struct fx *f = *state;
	struct ky_key_spec ex = {.name = "expiring", .expires = NOW + 100};
	struct ky_key_spec plain = {.name = "plain"};
	struct ky_key *e = NULL, *p = NULL, *g = NULL, **keys = NULL;
	struct ky_store_filter active = {.states = 1u << KY_KEY_ACTIVE, .extractable = -1};
	struct ky_store_filter deact = {.states = 1u << KY_KEY_DEACTIVATED, .extractable = -1};
	size_t n = 0;
	uint64_t total = 0;

	assert_int_equal(ky_kms_key_create(&f->kms, &ex, NOW, &e), 0);
	assert_int_equal(ky_kms_key_create(&f->kms, &plain, NOW, &p), 0);
	/* before the date */
	assert_int_equal(ky_kms_key_list(&f->kms, &active, 0, 0, NOW + 99, &keys, &n, &total, NULL),
	                 0);
	assert_int_equal(total, 2);
	assert_int_equal(n, 2);
	ky_keys_free(keys, n);
	assert_int_equal(ky_kms_key_list(&f->kms, &deact, 0, 0, NOW + 99, &keys, &n, &total, NULL),
	                 0);
	assert_int_equal(total, 0);
	ky_keys_free(keys, n);
	/* from the date on */
	assert_int_equal(ky_kms_key_list(&f->kms, &deact, 0, 0, NOW + 100, &keys, &n, &total, NULL),
	                 0);
	assert_int_equal(total, 1);
	assert_int_equal(n, 1);
	assert_string_equal(keys[0]->id, e->id);
	assert_int_equal(keys[0]->state, KY_KEY_DEACTIVATED);
	ky_keys_free(keys, n);
	assert_int_equal(
	    ky_kms_key_list(&f->kms, &active, 0, 0, NOW + 100, &keys, &n, &total, NULL), 0);
	assert_int_equal(total, 1);
	assert_string_equal(keys[0]->id, p->id);
	ky_keys_free(keys, n);
	/* the clear copy of the date is checked against the record: a later date is refused
	 * (0 is a row written before the column existed, and only loses the listing by date) */
	sqlf(f->path, "UPDATE keys SET expires = expires + 1 WHERE id = '%s'", e->id);
	assert_int_equal(ky_kms_key_get(&f->kms, e->id, 0, NOW, &g), KY_ERR_RECORD_TAMPERED);
	assert_null(g);
	sqlf(f->path, "UPDATE keys SET expires = 0 WHERE id = '%s'", e->id);
	assert_int_equal(ky_kms_key_list(&f->kms, &deact, 0, 0, NOW + 100, &keys, &n, &total, NULL),
	                 0);
	assert_int_equal(total, 0);
	ky_keys_free(keys, n);
	ky_key_free(e);
	ky_key_free(p);
}

/* ---- state rules ---- */

static void test_transitions(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "lifecycle"), *g;
	const char *id = k->id;

	/* Active */
	assert_int_equal(act(f, id, KY_KEY_ENABLE, "m", NOW), KY_ERR_KEY_STATE);
	assert_int_equal(act(f, id, KY_KEY_RESTORE, "m", NOW), KY_ERR_KEY_NOT_DESTROYED);
	assert_int_equal(act(f, id, KY_KEY_PURGE, "m", NOW), KY_ERR_KEY_NOT_DESTROYED);
	assert_int_equal(act(f, id, KY_KEY_SET_DELETION, "m", NOW), KY_ERR_DUAL_AUTH_OFF);
	assert_int_equal(act(f, id, KY_KEY_UNSET_DELETION, "m", NOW), KY_ERR_DUAL_AUTH_OFF);
	/* Active -> Suspended */
	assert_int_equal(act(f, id, KY_KEY_DISABLE, "m", NOW + 1), 0);
	g = load(f, id);
	assert_int_equal(g->state, KY_KEY_SUSPENDED);
	assert_int_equal(g->updated, NOW + 1);
	ky_key_free(g);
	/* Suspended: only back to Active or on to Destroyed */
	assert_int_equal(act(f, id, KY_KEY_DISABLE, "m", NOW), KY_ERR_KEY_STATE);
	assert_int_equal(act(f, id, KY_KEY_ROTATE, "m", NOW), KY_ERR_KEY_NOT_ACTIVE);
	assert_int_equal(act(f, id, KY_KEY_RESTORE, "m", NOW), KY_ERR_KEY_NOT_DESTROYED);
	assert_int_equal(act(f, id, KY_KEY_PURGE, "m", NOW), KY_ERR_KEY_NOT_DESTROYED);
	assert_int_equal(act(f, id, KY_KEY_ENABLE, "m", NOW + 2), 0);
	assert_int_equal(act(f, id, KY_KEY_DISABLE, "m", NOW + 3), 0);
	/* Suspended -> Destroyed */
	assert_int_equal(act(f, id, KY_KEY_DELETE, "dave", NOW + 4), 0);
	g = load(f, id);
	assert_int_equal(g->state, KY_KEY_DESTROYED);
	assert_int_equal(g->deleted, NOW + 4);
	assert_string_equal(g->deleted_by, "dave");
	ky_key_free(g);
	/* Destroyed: everything but restore and purge refused */
	assert_int_equal(act(f, id, KY_KEY_ENABLE, "m", NOW + 5), KY_ERR_KEY_DESTROYED);
	assert_int_equal(act(f, id, KY_KEY_DISABLE, "m", NOW + 5), KY_ERR_KEY_DESTROYED);
	assert_int_equal(act(f, id, KY_KEY_ROTATE, "m", NOW + 5), KY_ERR_KEY_DESTROYED);
	assert_int_equal(act(f, id, KY_KEY_DELETE, "m", NOW + 5), KY_ERR_KEY_DESTROYED);
	assert_int_equal(act(f, id, KY_KEY_SET_DELETION, "m", NOW + 5), KY_ERR_KEY_DESTROYED);
	struct ky_key_act pol = {
	    .action = KY_KEY_SET_POLICY, .rotation_months = 1, .dual_auth = -1};
	assert_int_equal(ky_kms_key_act(&f->kms, id, &pol, NOW + 5, NULL), KY_ERR_KEY_DESTROYED);
	/* purge only after 4 hours */
	assert_int_equal(act(f, id, KY_KEY_PURGE, "m", NOW + 4 + KY_KMS_PURGE_DELAY - 1),
	                 KY_ERR_PURGE_TOO_EARLY);
	/* restore within 30 days -> Active */
	assert_int_equal(act(f, id, KY_KEY_RESTORE, "m", NOW + 4 + KY_KMS_RESTORE_WINDOW - 1), 0);
	g = load(f, id);
	assert_int_equal(g->state, KY_KEY_ACTIVE);
	assert_int_equal(g->deleted, 0);
	ky_key_free(g);
	/* Active -> Destroyed, not restorable after 30 days, purge after 4 h */
	assert_int_equal(act(f, id, KY_KEY_DELETE, "m", NOW + 100), 0);
	assert_int_equal(act(f, id, KY_KEY_RESTORE, "m", NOW + 100 + KY_KMS_RESTORE_WINDOW),
	                 KY_ERR_RESTORE_EXPIRED);
	assert_int_equal(act(f, id, KY_KEY_PURGE, "m", NOW + 100 + KY_KMS_PURGE_DELAY), 0);
	assert_int_equal(ky_kms_key_get(&f->kms, id, 0, NOW, &g), KY_ERR_NOT_FOUND);
	assert_int_equal(act(f, id, KY_KEY_PURGE, "m", NOW + 100 + KY_KMS_PURGE_DELAY),
	                 KY_ERR_NOT_FOUND);
	ky_key_free(k);
}

static void test_rotate_rules(void **state)
{
	struct fx *f = *state;
	uint8_t m[32] = {9}, m2[32] = {8};
	struct ky_key_spec sp = {.name = "imported", .payload = m, .len = 32};
	struct ky_key_spec std_sp = {.name = "standard", .extractable = 1};
	struct ky_key *imp = NULL, *std = NULL, *gen = create_root(f, "generated"), *g;
	struct ky_key_act rot = {.action = KY_KEY_ROTATE, .rotation_months = -1, .dual_auth = -1};

	assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &imp), 0);
	assert_int_equal(ky_kms_key_create(&f->kms, &std_sp, NOW, &std), 0);
	/* standard keys do not rotate */
	assert_int_equal(ky_kms_key_act(&f->kms, std->id, &rot, NOW, NULL), KY_ERR_KEY_NOT_ROOT);
	/* imported keys need new material of a valid size; generated keys take none */
	assert_int_equal(ky_kms_key_act(&f->kms, imp->id, &rot, NOW, NULL), KY_ERR_ROTATE_MATERIAL);
	rot.payload = m2;
	rot.len = 20;
	assert_int_equal(ky_kms_key_act(&f->kms, imp->id, &rot, NOW, NULL), KY_ERR_KEY_MATERIAL);
	assert_int_equal(ky_kms_key_act(&f->kms, gen->id, &rot, NOW, NULL), KY_ERR_ROTATE_MATERIAL);
	rot.len = 32;
	assert_int_equal(ky_kms_key_act(&f->kms, imp->id, &rot, NOW, &g), 0);
	assert_int_equal(g->nversions, 2);
	assert_memory_equal(g->versions[1].material, m2, 32);
	ky_key_free(g);
	/* policies */
	struct ky_key_act pol = {
	    .action = KY_KEY_SET_POLICY, .rotation_months = 3, .dual_auth = -1};
	assert_int_equal(ky_kms_key_act(&f->kms, gen->id, &pol, NOW, &g), 0);
	assert_int_equal(g->rotation_months, 3);
	ky_key_free(g);
	assert_int_equal(ky_kms_key_act(&f->kms, std->id, &pol, NOW, NULL), KY_ERR_KEY_NOT_ROOT);
	pol.rotation_months = 13;
	assert_int_equal(ky_kms_key_act(&f->kms, gen->id, &pol, NOW, NULL), KY_ERR_USAGE);
	ky_key_free(imp);
	ky_key_free(std);
	ky_key_free(gen);
}

static void test_dual_auth_delete(void **state)
{
	struct fx *f = *state;
	struct ky_key *k = create_root(f, "guarded"), *g;
	struct ky_key_act pol = {
	    .action = KY_KEY_SET_POLICY, .rotation_months = -1, .dual_auth = 1};
	const char *id = k->id;

	assert_int_equal(ky_kms_key_act(&f->kms, id, &pol, NOW, NULL), 0);
	/* nobody set it for deletion */
	assert_int_equal(act(f, id, KY_KEY_DELETE, "alice", NOW), KY_ERR_DUAL_AUTH_REQUIRED);
	assert_int_equal(act(f, id, KY_KEY_SET_DELETION, NULL, NOW), KY_ERR_USAGE);
	assert_int_equal(act(f, id, KY_KEY_SET_DELETION, "alice", NOW), 0);
	g = load(f, id);
	assert_string_equal(g->deletion_set_by, "alice");
	ky_key_free(g);
	/* the same user cannot delete */
	assert_int_equal(act(f, id, KY_KEY_DELETE, "alice", NOW + 1), KY_ERR_DUAL_AUTH_SAME_USER);
	assert_int_equal(act(f, id, KY_KEY_DELETE, NULL, NOW + 1), KY_ERR_USAGE);
	/* the authorization expires after 7 days */
	assert_int_equal(act(f, id, KY_KEY_DELETE, "bob", NOW + KY_KMS_DUAL_AUTH_VALID),
	                 KY_ERR_DUAL_AUTH_REQUIRED);
	/* cancelled */
	assert_int_equal(act(f, id, KY_KEY_SET_DELETION, "alice", NOW + 10), 0);
	assert_int_equal(act(f, id, KY_KEY_UNSET_DELETION, "carol", NOW + 11), 0);
	assert_int_equal(act(f, id, KY_KEY_DELETE, "bob", NOW + 12), KY_ERR_DUAL_AUTH_REQUIRED);
	/* set by one, deleted by another within 7 days */
	assert_int_equal(act(f, id, KY_KEY_SET_DELETION, "alice", NOW + 20), 0);
	assert_int_equal(act(f, id, KY_KEY_DELETE, "bob", NOW + 20 + KY_KMS_DUAL_AUTH_VALID - 1),
	                 0);
	g = load(f, id);
	assert_int_equal(g->state, KY_KEY_DESTROYED);
	assert_string_equal(g->deleted_by, "bob");
	assert_string_equal(g->deletion_set_by, "");
	ky_key_free(g);
	ky_key_free(k);
}

/* ---- secrets ---- */

static void test_secrets(void **state)
{
	struct fx *f = *state;
	uint8_t sec[48], *p = NULL;
	size_t n = 0;
	struct ky_kms only_b = {.store = f->s, .instance = INSTANCE, .current = f->b};

	assert_int_equal(RAND_bytes(sec, sizeof(sec)), 1);
	assert_int_equal(ky_kms_secret_put(&f->kms, "token-signing", sec, sizeof(sec), NOW), 0);
	assert_int_equal(ky_kms_secret_get(&f->kms, "token-signing", &p, &n), 0);
	assert_int_equal(n, sizeof(sec));
	assert_memory_equal(p, sec, n);
	ky_kms_buf_free(p, n);
	sec[0] ^= 1;
	assert_int_equal(ky_kms_secret_put(&f->kms, "token-signing", sec, sizeof(sec), NOW + 1), 0);
	assert_int_equal(ky_kms_secret_get(&f->kms, "token-signing", &p, &n), 0);
	assert_memory_equal(p, sec, n);
	ky_kms_buf_free(p, n);
	assert_int_equal(ky_kms_secret_get(&only_b, "token-signing", &p, &n), KY_ERR_MK_MISMATCH);
	assert_int_equal(ky_kms_secret_get(&f->kms, "nope", &p, &n), KY_ERR_NOT_FOUND);
	/* flip one byte, whatever it held */
	sql(f->path, "UPDATE secrets SET blob = substr(blob, 1, 20) || "
	             "(CASE WHEN substr(blob, 21, 1) = x'00' THEN x'01' ELSE x'00' END) || "
	             "substr(blob, 22)");
	assert_int_equal(ky_kms_secret_get(&f->kms, "token-signing", &p, &n),
	                 KY_ERR_RECORD_TAMPERED);
	assert_null(p);
	assert_int_equal(ky_kms_secret_put(&f->kms, "", sec, sizeof(sec), NOW), KY_ERR_USAGE);
	assert_int_equal(ky_kms_secret_put(&f->kms, "x", sec, 0, NOW), KY_ERR_USAGE);

	/* Create-if-absent never replaces what another unit made first. */
	assert_int_equal(ky_kms_secret_create(&f->kms, "signing-2", sec, sizeof(sec), NOW), 0);
	sec[1] ^= 1;
	assert_int_equal(ky_kms_secret_create(&f->kms, "signing-2", sec, sizeof(sec), NOW),
	                 KY_ERR_EXISTS);
	assert_int_equal(ky_kms_secret_get(&f->kms, "signing-2", &p, &n), 0);
	assert_int_not_equal(p[1], sec[1]);
	ky_kms_buf_free(p, n);
}

/* Two read-modify-writes from the same read: the second is refused, never written over the
 * first; read again, it applies to what the first left. */
static void test_secret_compare_and_swap(void **state)
{
	struct fx *f = *state;
	const uint8_t v1[] = "base", a[] = "base+a", b[] = "base+b", ab[] = "base+a+b";
	uint8_t *p = NULL;
	size_t n = 0;
	int64_t rev = 0, rev_a = 0, rev_b = 0;

	/* absent: rev 0, and a write expecting 0 creates it */
	assert_int_equal(ky_kms_secret_get_rev(&f->kms, "policies", &p, &n, &rev),
	                 KY_ERR_NOT_FOUND);
	assert_null(p);
	assert_int_equal(rev, 0);
	assert_int_equal(ky_kms_secret_put_rev(&f->kms, "policies", v1, sizeof(v1), NOW, 0), 0);
	/* a second creator from the same (empty) read loses */
	assert_int_equal(ky_kms_secret_put_rev(&f->kms, "policies", b, sizeof(b), NOW, 0),
	                 KY_ERR_CONFLICT);

	/* two writers read the same rev */
	assert_int_equal(ky_kms_secret_get_rev(&f->kms, "policies", &p, &n, &rev_a), 0);
	assert_memory_equal(p, v1, sizeof(v1));
	ky_kms_buf_free(p, n);
	assert_int_equal(ky_kms_secret_get_rev(&f->kms, "policies", &p, &n, &rev_b), 0);
	ky_kms_buf_free(p, n);
	assert_true(rev_a > 0);
	assert_int_equal(rev_a, rev_b);
	assert_int_equal(ky_kms_secret_put_rev(&f->kms, "policies", a, sizeof(a), NOW + 1, rev_a),
	                 0);
	assert_int_equal(ky_kms_secret_put_rev(&f->kms, "policies", b, sizeof(b), NOW + 1, rev_b),
	                 KY_ERR_CONFLICT);
	assert_int_equal(ky_kms_secret_get_rev(&f->kms, "policies", &p, &n, &rev), 0);
	assert_memory_equal(p, a, sizeof(a)); /* the first write stands */
	assert_true(rev != rev_b);
	ky_kms_buf_free(p, n);
	/* the loser re-applies its change to what is stored now */
	assert_int_equal(ky_kms_secret_put_rev(&f->kms, "policies", ab, sizeof(ab), NOW + 2, rev),
	                 0);
	assert_int_equal(ky_kms_secret_get_rev(&f->kms, "policies", &p, &n, &rev_a), 0);
	assert_memory_equal(p, ab, sizeof(ab));
	ky_kms_buf_free(p, n);
	/* ky_kms_secret_put still replaces whatever is stored */
	assert_int_equal(ky_kms_secret_put(&f->kms, "policies", v1, sizeof(v1), NOW + 3), 0);
	assert_int_equal(ky_kms_secret_put_rev(&f->kms, "policies", b, sizeof(b), NOW + 3, rev_a),
	                 KY_ERR_CONFLICT);
	/* gone since it was read: a conflict too */
	sql(f->path, "DELETE FROM secrets WHERE name = 'policies'");
	assert_int_equal(ky_kms_secret_put_rev(&f->kms, "policies", b, sizeof(b), NOW + 4, rev_a),
	                 KY_ERR_CONFLICT);
	assert_int_equal(ky_kms_secret_put_rev(&f->kms, "policies", b, sizeof(b), NOW + 4, -1),
	                 KY_ERR_USAGE);
}

/* ---- re-encipherment ---- */

static void create_many(struct fx *f, int n, char (*ids)[KY_UUID_LEN + 1])
{
	struct ky_key_spec sp = {.name = "bulk"};
	struct ky_key *k;

	assert_int_equal(ky_store_begin(f->s), 0);
	for (int i = 0; i < n; i++) {
		sp.extractable = i % 5 == 0;
		assert_int_equal(ky_kms_key_create(&f->kms, &sp, NOW, &k), 0);
		if (ids)
			strcpy(ids[i], k->id);
		ky_key_free(k);
	}
	assert_int_equal(ky_store_commit(f->s), 0);
}

struct stop_after {
	uint32_t batches;
	uint32_t calls;
};

static int stop_after_cb(const struct ky_kms_reenc *st, void *arg)
{
	struct stop_after *s = arg;

	s->calls++;
	return st->batches >= s->batches;
}

static void check_all_open(struct fx *f, const struct ky_kms *kms, int n,
                           char (*ids)[KY_UUID_LEN + 1])
{
	struct ky_key *g;

	for (int i = 0; i < n; i++) {
		assert_int_equal(ky_kms_key_get(kms, ids[i], 0, NOW, &g), 0);
		assert_memory_equal(g->vp, kms->current->vp, KY_VP_LEN);
		ky_key_free(g);
	}
	(void)f;
}

static void test_reencipher_resume(void **state)
{
	struct fx *f = *state;
	enum { N = 1100 };
	char(*ids)[KY_UUID_LEN + 1] = calloc(N, KY_UUID_LEN + 1);
	struct ky_kms_reenc st;
	struct stop_after stop = {.batches = 2};
	struct ky_kms after = {.store = f->s, .instance = INSTANCE, .current = f->b};
	struct ky_kms during = {.store = f->s, .instance = INSTANCE, .current = f->a, .next = f->b};
	uint64_t under = 0;
	uint8_t sec[40] = {7}, *p = NULL;
	size_t n = 0;
	struct ky_key *g;

	create_many(f, N, ids);
	assert_int_equal(ky_kms_secret_put(&f->kms, "token-signing", sec, sizeof(sec), NOW), 0);
	assert_int_equal(ky_kms_count_under(f->s, f->a->vp, &under), 0);
	assert_int_equal(under, N + 1);
	/* interrupted after 2 batches of 300 */
	assert_int_equal(
	    ky_kms_reencipher(f->s, INSTANCE, f->a, f->b, 300, stop_after_cb, &stop, &st),
	    KY_ERR_CANCELLED);
	assert_int_equal(st.batches, 2);
	assert_int_equal(st.done, 600);
	assert_int_equal(ky_kms_count_under(f->s, f->a->vp, &under), 0);
	assert_int_equal(under, N + 1 - 600);
	/* in the middle every key opens for a unit holding both registers */
	for (int i = 0; i < N; i += 37) {
		assert_int_equal(ky_kms_key_get(&during, ids[i], 0, NOW, &g), 0);
		ky_key_free(g);
	}
	/* resumed: works on what is left */
	stop.batches = 1000;
	assert_int_equal(
	    ky_kms_reencipher(f->s, INSTANCE, f->a, f->b, 300, stop_after_cb, &stop, &st), 0);
	assert_int_equal(st.done, N + 1 - 600);
	assert_int_equal(st.failed, 0);
	assert_int_equal(st.remaining, 0);
	assert_int_equal(ky_kms_count_under(f->s, f->a->vp, &under), 0);
	assert_int_equal(under, 0);
	assert_int_equal(ky_kms_count_under(f->s, f->b->vp, &under), 0);
	assert_int_equal(under, N + 1);
	/* every key and the secret open under the new key alone */
	check_all_open(f, &after, N, ids);
	assert_int_equal(ky_kms_secret_get(&after, "token-signing", &p, &n), 0);
	assert_memory_equal(p, sec, sizeof(sec));
	ky_kms_buf_free(p, n);
	/* a third run has nothing to do */
	assert_int_equal(ky_kms_reencipher(f->s, INSTANCE, f->a, f->b, 0, NULL, NULL, &st), 0);
	assert_int_equal(st.done, 0);
	/* same key twice is refused */
	assert_int_equal(ky_kms_reencipher(f->s, INSTANCE, f->b, f->b, 0, NULL, NULL, &st),
	                 KY_ERR_SAME_KEY);
	free(ids);
}

static void test_reencipher_cas_race(void **state)
{
	struct fx *f = *state;
	enum { N = 20 };
	char ids[N][KY_UUID_LEN + 1];
	struct ky_store_vprow *rows = NULL;
	size_t n = 0, swapped = 0;
	struct ky_kms during = {.store = f->s, .instance = INSTANCE, .current = f->a, .next = f->b};
	struct ky_kms after = {.store = f->s, .instance = INSTANCE, .current = f->b};
	struct ky_key *g;

	create_many(f, N, ids);
	/* A re-encipher batch is read... */
	assert_int_equal(ky_store_vp_fetch(f->s, KY_STORE_KEYS, f->a->vp, NULL, N, &rows, &n), 0);
	assert_int_equal(n, N);
	/* ...meanwhile a unit holding the new key rotates key 3 (written under b), and a unit
	 * that does not have it yet disables key 4 (written under a, new rev) */
	struct ky_key_act rot = {.action = KY_KEY_ROTATE, .rotation_months = -1, .dual_auth = -1};
	const char *root3 = ids[3], *root4 = ids[4];
	assert_int_equal(ky_kms_key_act(&during, root3, &rot, NOW + 1, NULL), 0);
	assert_int_equal(act(f, root4, KY_KEY_DISABLE, "m", NOW + 1), 0);
	/* ...then the batch's swap (here with the old blobs: what matters is the CAS) */
	assert_int_equal(
	    ky_store_vp_swap(f->s, KY_STORE_KEYS, f->a->vp, f->b->vp, rows, n, &swapped), 0);
	assert_int_equal(swapped, N - 2);
	ky_store_vprows_free(rows, n);
	/* the raced rows kept their updates */
	assert_int_equal(ky_kms_key_get(&after, root3, 0, NOW, &g), 0);
	assert_int_equal(g->nversions, 2);
	ky_key_free(g);
	assert_int_equal(ky_kms_key_get(&f->kms, root4, 0, NOW, &g), 0);
	assert_int_equal(g->state, KY_KEY_SUSPENDED);
	ky_key_free(g);
	/* (the swapped rows now carry blobs sealed under a but labelled b: the tag catches it) */
	assert_int_equal(ky_kms_key_get(&after, ids[0], 0, NOW, &g), KY_ERR_RECORD_TAMPERED);
}

/* Between batches (progress callback): a unit without the new key disables a key still
 * under a, a unit holding both rotates another one still under a. */
struct between {
	struct fx *f;
	char under_a[KY_UUID_LEN + 1];
	char rotated[KY_UUID_LEN + 1];
	int calls;
};

static int between_cb(const struct ky_kms_reenc *st, void *arg)
{
	struct between *b = arg;
	struct ky_kms during = {
	    .store = b->f->s, .instance = INSTANCE, .current = b->f->a, .next = b->f->b};
	struct ky_key_act rot = {.action = KY_KEY_ROTATE, .rotation_months = -1, .dual_auth = -1};
	struct ky_store_vprow *rows = NULL;
	size_t n = 0;

	(void)st;
	if (b->calls++ == 0) {
		assert_int_equal(
		    ky_store_vp_fetch(b->f->s, KY_STORE_KEYS, b->f->a->vp, NULL, 10, &rows, &n), 0);
		assert_int_equal(n, 10);
		strcpy(b->under_a, rows[0].name);
		/* only root keys rotate */
		for (size_t i = 1; i < n && b->rotated[0] == '\0'; i++) {
			struct ky_key *k = NULL;
			assert_int_equal(ky_kms_key_get(&during, rows[i].name, 0, NOW, &k), 0);
			if (!k->extractable)
				strcpy(b->rotated, rows[i].name);
			ky_key_free(k);
		}
		assert_true(b->rotated[0] != '\0');
		ky_store_vprows_free(rows, n);
		assert_int_equal(act(b->f, b->under_a, KY_KEY_DISABLE, "m", NOW + 1), 0);
		assert_int_equal(ky_kms_key_act(&during, b->rotated, &rot, NOW + 1, NULL), 0);
	}
	return 0;
}

static void test_reencipher_updates_between_batches(void **state)
{
	struct fx *f = *state;
	enum { N = 60 };
	char ids[N][KY_UUID_LEN + 1];
	struct ky_kms_reenc st;
	struct ky_kms after = {.store = f->s, .instance = INSTANCE, .current = f->b};
	struct ky_key *g;
	struct between b = {.f = f};

	create_many(f, N, ids);
	assert_int_equal(ky_kms_reencipher(f->s, INSTANCE, f->a, f->b, 20, between_cb, &b, &st), 0);
	/* the rotated key was moved by its own update, not by the run */
	assert_int_equal(st.done, N - 1);
	check_all_open(f, &after, N, ids);
	assert_int_equal(ky_kms_key_get(&after, b.under_a, 0, NOW, &g), 0);
	assert_int_equal(g->state, KY_KEY_SUSPENDED);
	ky_key_free(g);
	assert_int_equal(ky_kms_key_get(&after, b.rotated, 0, NOW, &g), 0);
	assert_int_equal(g->nversions, 2);
	ky_key_free(g);
}

/* A writer thread racing the batches: no update is lost, whichever key it writes under. */
#define RACE_N 200

struct racer {
	struct fx *f;
	char (*ids)[KY_UUID_LEN + 1];
	int expect_suspended[RACE_N];
	int writes;
	int stop;
	int errors;
};

static void *racer_thread(void *arg)
{
	struct racer *rc = arg;
	struct ky_kms during = {
	    .store = rc->f->s, .instance = INSTANCE, .current = rc->f->a, .next = rc->f->b};
	struct ky_kms old_only = {.store = rc->f->s, .instance = INSTANCE, .current = rc->f->a};

	for (int n = 0; n < 3000 && !__atomic_load_n(&rc->stop, __ATOMIC_ACQUIRE); n++) {
		int i = (n * 7) % RACE_N;
		/* every third write from a unit that has only the old key: once the record has
		 * moved it gets a master key mismatch and changes nothing; before, it writes
		 * under the old key with a new rev */
		const struct ky_kms *k = n % 3 == 2 ? &old_only : &during;
		struct ky_key_act a = {.action =
		                           rc->expect_suspended[i] ? KY_KEY_ENABLE : KY_KEY_DISABLE,
		                       .rotation_months = -1,
		                       .dual_auth = -1};
		int r = ky_kms_key_act(k, rc->ids[i], &a, NOW, NULL);
		if (r == 0)
			rc->expect_suspended[i] = !rc->expect_suspended[i];
		else if (r != KY_ERR_MK_MISMATCH)
			rc->errors++;
		__atomic_store_n(&rc->writes, n + 1, __ATOMIC_RELEASE);
	}
	ky_gcm_thread_release();
	return NULL;
}

static void test_reencipher_racing_writer(void **state)
{
	struct fx *f = *state;
	char(*ids)[KY_UUID_LEN + 1] = calloc(RACE_N, KY_UUID_LEN + 1);
	struct racer *rc = calloc(1, sizeof(*rc));
	struct ky_kms_reenc st;
	struct ky_kms after = {.store = f->s, .instance = INSTANCE, .current = f->b};
	pthread_t th;
	uint64_t under = 0, raced = 0;

	create_many(f, RACE_N, ids);
	rc->f = f;
	rc->ids = ids;
	assert_int_equal(pthread_create(&th, NULL, racer_thread, rc), 0);
	while (__atomic_load_n(&rc->writes, __ATOMIC_ACQUIRE) < 5)
		usleep(100);
	/* small batches: many fetch/swap windows for the writer to land in */
	int r = ky_kms_reencipher(f->s, INSTANCE, f->a, f->b, 2, NULL, NULL, &st);
	assert_true(r == 0 || r == KY_ERR_CONFLICT);
	raced = st.raced;
	__atomic_store_n(&rc->stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	assert_int_equal(rc->errors, 0);
	/* the writer may have written under the old key after the run: finish */
	assert_int_equal(ky_kms_reencipher(f->s, INSTANCE, f->a, f->b, 2, NULL, NULL, &st), 0);
	assert_int_equal(ky_kms_count_under(f->s, f->a->vp, &under), 0);
	assert_int_equal(under, 0);
	for (int i = 0; i < RACE_N; i++) {
		struct ky_key *g = NULL;
		assert_int_equal(ky_kms_key_get(&after, ids[i], 0, NOW, &g), 0);
		assert_int_equal(g->state,
		                 rc->expect_suspended[i] ? KY_KEY_SUSPENDED : KY_KEY_ACTIVE);
		ky_key_free(g);
	}
	if (getenv("KYOK_TEST_VERBOSE"))
		fprintf(stderr, "racing writer: %d writes, %lu rows raced\n", rc->writes,
		        (unsigned long)raced);
	free(rc);
	free(ids);
}

static void test_reencipher_tampered_row(void **state)
{
	struct fx *f = *state;
	enum { N = 30 };
	char ids[N][KY_UUID_LEN + 1];
	struct ky_kms_reenc st;
	struct ky_kms after = {.store = f->s, .instance = INSTANCE, .current = f->b};
	uint64_t under = 0;

	create_many(f, N, ids);
	sqlf(f->path, "UPDATE keys SET version = 9 WHERE id = '%s'", ids[7]);
	assert_int_equal(ky_kms_reencipher(f->s, INSTANCE, f->a, f->b, 8, NULL, NULL, &st),
	                 KY_ERR_RECORD_TAMPERED);
	assert_int_equal(st.failed, 1);
	assert_string_equal(st.failed_name, ids[7]);
	assert_int_equal(st.done, N - 1);
	assert_int_equal(st.remaining, 1);
	assert_int_equal(ky_kms_count_under(f->s, f->a->vp, &under), 0);
	assert_int_equal(under, 1);
	for (int i = 0; i < N; i++) {
		struct ky_key *g = NULL;
		int r = ky_kms_key_get(&after, ids[i], 0, NOW, &g);
		assert_int_equal(r, i == 7 ? KY_ERR_MK_MISMATCH : 0);
		ky_key_free(g);
	}
}

/* ---- replies kept by request id ---- */

static void test_request_seal(void **state)
{
	struct fx *f = *state;
	struct ky_store_request q = {0}, q2;
	struct ky_kms only_b = {.store = f->s, .instance = INSTANCE, .current = f->b};
	struct ky_kms a_next_b = {
	    .store = f->s, .instance = INSTANCE, .current = f->a, .next = f->b};
	struct ky_kms other = {.store = f->s, .instance = "another-instance", .current = f->a};
	const char *reply = "{\"resources\":[{\"id\":\"k\"}]}";
	uint8_t h1[KY_REQUEST_HASH_LEN], h2[KY_REQUEST_HASH_LEN], *p = NULL;
	size_t n = 0;

	/* the hash covers method, path and body, without ambiguity between them */
	assert_int_equal(ky_kms_request_hash("POST", "/api/v2/keys?", (const uint8_t *)"ab", 2, h1),
	                 0);
	assert_int_equal(ky_kms_request_hash("POST", "/api/v2/keys?", (const uint8_t *)"ab", 2, h2),
	                 0);
	assert_memory_equal(h1, h2, sizeof(h1));
	assert_int_equal(ky_kms_request_hash("PUT", "/api/v2/keys?", (const uint8_t *)"ab", 2, h2),
	                 0);
	assert_memory_not_equal(h1, h2, sizeof(h1));
	assert_int_equal(ky_kms_request_hash("POST", "/api/v2/keys?a", (const uint8_t *)"b", 1, h2),
	                 0);
	assert_memory_not_equal(h1, h2, sizeof(h1));
	assert_int_equal(ky_kms_request_hash("POST", "/api/v2/keys?", (const uint8_t *)"ac", 2, h2),
	                 0);
	assert_memory_not_equal(h1, h2, sizeof(h1));

	snprintf(q.apikey, sizeof(q.apikey), "ak-1");
	snprintf(q.id, sizeof(q.id), "rid-1");
	memcpy(q.hash, h1, sizeof(h1));
	q.status = 201;
	assert_int_equal(ky_kms_request_seal(&f->kms, &q, (const uint8_t *)reply, strlen(reply)),
	                 0);
	assert_memory_equal(q.vp, f->a->vp, KY_VP_LEN);
	assert_null(memmem(q.body, q.bodylen, "resources", 9)); /* never in the clear */
	assert_int_equal(ky_kms_request_open(&f->kms, &q, &p, &n), 0);
	assert_int_equal(n, strlen(reply));
	assert_memory_equal(p, reply, n);
	ky_kms_buf_free(p, n);
	/* during a rotation both registers open it */
	assert_int_equal(ky_kms_request_open(&a_next_b, &q, &p, &n), 0);
	ky_kms_buf_free(p, n);
	/* under a master key the unit does not hold */
	assert_int_equal(ky_kms_request_open(&only_b, &q, &p, &n), KY_ERR_MK_MISMATCH);
	assert_null(p);
	/* every clear column is bound */
	q2 = q;
	q2.status = 200;
	assert_int_equal(ky_kms_request_open(&f->kms, &q2, &p, &n), KY_ERR_RECORD_TAMPERED);
	q2 = q;
	q2.hash[0] ^= 1;
	assert_int_equal(ky_kms_request_open(&f->kms, &q2, &p, &n), KY_ERR_RECORD_TAMPERED);
	q2 = q;
	snprintf(q2.id, sizeof(q2.id), "rid-2");
	assert_int_equal(ky_kms_request_open(&f->kms, &q2, &p, &n), KY_ERR_RECORD_TAMPERED);
	q2 = q;
	snprintf(q2.apikey, sizeof(q2.apikey), "ak-2");
	assert_int_equal(ky_kms_request_open(&f->kms, &q2, &p, &n), KY_ERR_RECORD_TAMPERED);
	assert_int_equal(ky_kms_request_open(&other, &q, &p, &n), KY_ERR_RECORD_TAMPERED);
	q.body[q.bodylen - 1] ^= 1;
	assert_int_equal(ky_kms_request_open(&f->kms, &q, &p, &n), KY_ERR_RECORD_TAMPERED);
	q2 = q;
	q2.bodylen = 5;
	assert_int_equal(ky_kms_request_open(&f->kms, &q2, &p, &n), KY_ERR_RECORD_TAMPERED);
	ky_store_request_release(&q);
	/* an empty reply (204), sealed under the new register during a rotation */
	assert_int_equal(ky_kms_request_seal(&a_next_b, &q, NULL, 0), 0);
	assert_memory_equal(q.vp, f->b->vp, KY_VP_LEN);
	assert_int_equal(ky_kms_request_open(&only_b, &q, &p, &n), 0);
	assert_int_equal(n, 0);
	ky_kms_buf_free(p, n);
	ky_store_request_release(&q);
	{
		struct ky_kms none = {.store = f->s, .instance = INSTANCE};
		assert_int_equal(ky_kms_request_seal(&none, &q, NULL, 0), KY_ERR_NO_MASTER_KEY);
	}
}

/* ---- policies acted on over time (lib/kms/schedule.c) ---- */

static struct ky_key *key_at(int64_t created, uint32_t months)
{
	struct ky_key_spec sp = {.name = "due", .actor = "alice"};
	struct ky_key *k = NULL;

	assert_int_equal(ky_key_new(&sp, created, &k), 0);
	k->rotation_months = months;
	return k;
}

static void test_rotation_due(void **state)
{
	static const struct {
		int64_t created;
		uint32_t months;
		int64_t due;
	} cases[] = {
	    {1706695200, 1, 1709200800},  /* 2024-01-31 + 1 month: Feb 29 (leap year) */
	    {1675159200, 1, 1677578400},  /* 2023-01-31 + 1 month: Feb 28 */
	    {1734251400, 2, 1739608200},  /* 2024-12-15 + 2 months: 2025-02-15, across the year */
	    {1706695200, 12, 1738317600}, /* 2024-01-31 + 12 months */
	    {1733011199, 6, 1748649599},  /* 2024-11-30 23:59:59 + 6 months: May 30 */
	};
	struct ky_key *k;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		k = key_at(cases[i].created, cases[i].months);
		assert_int_equal(ky_kms_rotation_due(k), cases[i].due);
		assert_int_equal(ky_kms_due(k, cases[i].due - 1), KY_KMS_DUE_NONE);
		assert_int_equal(ky_kms_due(k, cases[i].due), KY_KMS_DUE_ROTATE);
		ky_key_free(k);
	}
	/* No policy; an imported, a standard, a disabled or an expired key: never rotated. */
	k = key_at(NOW, 0);
	assert_int_equal(ky_kms_rotation_due(k), 0);
	assert_int_equal(ky_kms_due(k, NOW + 400 * KY_KMS_DAY), KY_KMS_DUE_NONE);
	k->rotation_months = 1;
	assert_int_equal(ky_kms_due(k, NOW + 31 * KY_KMS_DAY), KY_KMS_DUE_ROTATE);
	assert_int_equal(ky_kms_due(k, NOW + 27 * KY_KMS_DAY), KY_KMS_DUE_NONE);
	k->imported = 1;
	assert_int_equal(ky_kms_due(k, NOW + 31 * KY_KMS_DAY), KY_KMS_DUE_NONE);
	k->imported = 0;
	k->extractable = 1;
	assert_int_equal(ky_kms_due(k, NOW + 31 * KY_KMS_DAY), KY_KMS_DUE_NONE);
	k->extractable = 0;
	k->state = KY_KEY_SUSPENDED;
	assert_int_equal(ky_kms_due(k, NOW + 31 * KY_KMS_DAY), KY_KMS_DUE_NONE);
	k->state = KY_KEY_ACTIVE;
	k->expires = NOW + 20 * KY_KMS_DAY;
	assert_int_equal(ky_kms_due(k, NOW + 31 * KY_KMS_DAY), KY_KMS_DUE_NONE);
	k->expires = 0;
	/* Purge: 90 days after the deletion, not a second before; a policy no longer counts. */
	k->state = KY_KEY_DESTROYED;
	k->deleted = NOW;
	assert_int_equal(ky_kms_due(k, NOW + 90 * KY_KMS_DAY - 1), KY_KMS_DUE_NONE);
	assert_int_equal(ky_kms_due(k, NOW + 89 * KY_KMS_DAY), KY_KMS_DUE_NONE);
	assert_int_equal(ky_kms_due(k, NOW + 90 * KY_KMS_DAY), KY_KMS_DUE_PURGE);
	ky_key_free(k);
}

static int gate_calls;

static int gate_refuse(const char *id, const struct ky_key *k, enum ky_kms_due due, void *arg)
{
	(void)arg;
	assert_non_null(id);
	assert_non_null(k);
	assert_int_not_equal(due, KY_KMS_DUE_NONE);
	gate_calls++;
	return KY_ERR_AUDIT_UNAVAILABLE;
}

static int gate_allow(const char *id, const struct ky_key *k, enum ky_kms_due due, void *arg)
{
	(void)id;
	(void)k;
	(void)due;
	(void)arg;
	gate_calls++;
	return 0;
}

static void test_policy_pass(void **state)
{
	struct fx *f = *state;
	struct ky_key *r = create_root(f, "rotates"), *d = create_root(f, "deleted"), *k = NULL;
	struct ky_key *r2 = create_root(f, "raced"), *d2 = create_root(f, "raced-purge");
	struct ky_key_act pol = {
	    .action = KY_KEY_SET_POLICY, .rotation_months = 1, .dual_auth = -1};
	struct ky_store_row ra = {0}, rb = {0};
	struct ky_kms_sched st;
	enum ky_kms_due done;

	assert_int_equal(ky_kms_key_act(&f->kms, r->id, &pol, NOW, NULL), 0);
	assert_int_equal(ky_kms_key_act(&f->kms, r2->id, &pol, NOW, NULL), 0);
	assert_int_equal(act(f, d->id, KY_KEY_DELETE, "bob", NOW), 0);
	assert_int_equal(act(f, d2->id, KY_KEY_DELETE, "bob", NOW), 0);

	/* Two units read the same due key; the first to write wins, the second is told. */
	assert_int_equal(ky_store_key_get(f->s, r2->id, &ra), 0);
	assert_int_equal(ky_store_key_get(f->s, r2->id, &rb), 0);
	assert_int_equal(ky_kms_due_apply(&f->kms, &ra, NOW + 31 * KY_KMS_DAY, &done, &k), 0);
	assert_int_equal(done, KY_KMS_DUE_ROTATE);
	assert_int_equal(k->nversions, 2);
	ky_key_free(k);
	assert_int_equal(ky_kms_due_apply(&f->kms, &rb, NOW + 31 * KY_KMS_DAY, &done, NULL),
	                 KY_ERR_CONFLICT);
	k = load(f, r2->id);
	assert_int_equal(k->nversions, 2);
	ky_key_free(k);
	ky_store_row_release(&ra);
	ky_store_row_release(&rb);
	assert_int_equal(ky_store_key_get(f->s, d2->id, &ra), 0);
	assert_int_equal(ky_store_key_get(f->s, d2->id, &rb), 0);
	assert_int_equal(ky_kms_due_apply(&f->kms, &ra, NOW + 90 * KY_KMS_DAY, &done, NULL), 0);
	assert_int_equal(done, KY_KMS_DUE_PURGE);
	assert_int_not_equal(ky_kms_due_apply(&f->kms, &rb, NOW + 90 * KY_KMS_DAY, &done, NULL), 0);
	ky_store_row_release(&ra);
	ky_store_row_release(&rb);
	/* Not due: nothing written. */
	assert_int_equal(ky_store_key_get(f->s, r->id, &ra), 0);
	assert_int_equal(ky_kms_due_apply(&f->kms, &ra, NOW + 27 * KY_KMS_DAY, &done, NULL), 0);
	assert_int_equal(done, KY_KMS_DUE_NONE);
	ky_store_row_release(&ra);

	/* Whole passes. */
	assert_int_equal(
	    ky_kms_schedule_pass(&f->kms, NOW + 27 * KY_KMS_DAY, NULL, NULL, NULL, &st), 0);
	assert_int_equal(st.keys, 3);
	assert_int_equal(st.rotated + st.purged + st.raced + st.failed, 0);
	/* A gate that refuses (the audit log does not take the intent line): the pass ends
	 * with its error, nothing rotated; one that lets it: rotated. */
	gate_calls = 0;
	assert_int_equal(
	    ky_kms_schedule_pass(&f->kms, NOW + 31 * KY_KMS_DAY, gate_refuse, NULL, NULL, &st),
	    KY_ERR_AUDIT_UNAVAILABLE);
	assert_int_equal(gate_calls, 1);
	assert_int_equal(st.rotated + st.purged, 0);
	k = load(f, r->id);
	assert_int_equal(k->nversions, 1);
	ky_key_free(k);
	gate_calls = 0;
	assert_int_equal(
	    ky_kms_schedule_pass(&f->kms, NOW + 31 * KY_KMS_DAY, gate_allow, NULL, NULL, &st), 0);
	assert_int_equal(gate_calls, 1);
	assert_int_equal(st.rotated, 1);
	assert_int_equal(st.purged, 0);
	k = load(f, r->id);
	assert_int_equal(k->nversions, 2);
	assert_int_equal(k->versions[1].created, NOW + 31 * KY_KMS_DAY);
	ky_key_free(k);
	/* Run again at the same date (another unit): rotated once. */
	assert_int_equal(
	    ky_kms_schedule_pass(&f->kms, NOW + 31 * KY_KMS_DAY, NULL, NULL, NULL, &st), 0);
	assert_int_equal(st.rotated + st.purged, 0);
	assert_int_equal(
	    ky_kms_schedule_pass(&f->kms, NOW + 89 * KY_KMS_DAY, NULL, NULL, NULL, &st), 0);
	assert_int_equal(st.purged, 0);
	k = load(f, d->id);
	ky_key_free(k);
	gate_calls = 0;
	assert_int_equal(
	    ky_kms_schedule_pass(&f->kms, NOW + 90 * KY_KMS_DAY, gate_refuse, NULL, NULL, &st),
	    KY_ERR_AUDIT_UNAVAILABLE);
	assert_int_equal(gate_calls, 1);
	assert_int_equal(st.purged, 0);
	k = load(f, d->id); /* still there */
	ky_key_free(k);
	assert_int_equal(
	    ky_kms_schedule_pass(&f->kms, NOW + 90 * KY_KMS_DAY, NULL, NULL, NULL, &st), 0);
	assert_int_equal(st.purged, 1);
	assert_int_equal(ky_kms_key_get(&f->kms, d->id, 0, NOW, &k), KY_ERR_NOT_FOUND);
	/* Without a master key there is nothing to open. */
	struct ky_kms none = {.store = f->s, .instance = INSTANCE};
	assert_int_equal(ky_kms_schedule_pass(&none, NOW, NULL, NULL, NULL, &st),
	                 KY_ERR_MK_MISMATCH);
	ky_key_free(r);
	ky_key_free(d);
	ky_key_free(r2);
	ky_key_free(d2);
}

/* A pass over more keys than one page holds (pages of 500, each resuming after the last row
 * of the one before): every key is looked at once, the keys it purges on the way included,
 * and a second pass finds what is left. */
static void test_policy_pass_pages(void **state)
{
	struct fx *f = *state;
	struct ky_kms_sched st;
	char(*ids)[KY_UUID_LEN + 1] = calloc(1203, KY_UUID_LEN + 1);
	struct ky_key *k;

	assert_non_null(ids);
	assert_int_equal(ky_store_begin(f->s), 0);
	for (int i = 0; i < 1203; i++) {
		k = create_root(f, "paged");
		memcpy(ids[i], k->id, sizeof(ids[i]));
		ky_key_free(k);
	}
	for (int i = 0; i < 1203; i += 3) /* 401 keys, across all three pages */
		assert_int_equal(act(f, ids[i], KY_KEY_DELETE, "bob", NOW), 0);
	assert_int_equal(ky_store_commit(f->s), 0);

	assert_int_equal(
	    ky_kms_schedule_pass(&f->kms, NOW + 90 * KY_KMS_DAY, NULL, NULL, NULL, &st), 0);
	assert_int_equal(st.keys, 1203);
	assert_int_equal(st.purged, 401);
	assert_int_equal(st.rotated + st.raced + st.failed, 0);
	for (int i = 0; i < 1203; i++) {
		int r = ky_kms_key_get(&f->kms, ids[i], 0, NOW, &k);
		assert_int_equal(r, i % 3 == 0 ? KY_ERR_NOT_FOUND : 0);
		if (r == 0)
			ky_key_free(k);
	}
	assert_int_equal(
	    ky_kms_schedule_pass(&f->kms, NOW + 90 * KY_KMS_DAY, NULL, NULL, NULL, &st), 0);
	assert_int_equal(st.keys, 802);
	assert_int_equal(st.purged, 0);
	free(ids);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_mk_vp, fx_setup, fx_teardown),
	    cmocka_unit_test(test_rotation_due),
	    cmocka_unit_test_setup_teardown(test_policy_pass, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_policy_pass_pages, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_create_get_root, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_create_imported_and_refusals, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_list, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_limit, fx_setup_limit3, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_tampered_blob, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_record_size_bound, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_record_size_bound_on_write, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rolled_back_record, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_tampered_blob_byte_exact, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_tampered_clear_columns, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_swapped_blobs, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_other_instance, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_vp, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rotation_in_progress_writes_under_next, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_record_roundtrip_and_truncation, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_wrap_roundtrip, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_wrap_imported_sizes, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_unwrap_tampered_and_malformed, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_unwrap_other_key, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rotate_unwrap_old_rewrap_new, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_wrap_refusals_by_key, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_deactivated_by_expiry, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_transitions, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rotate_rules, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_dual_auth_delete, fx_setup, fx_teardown),
	    cmocka_unit_test(test_alias_rule),
	    cmocka_unit_test_setup_teardown(test_aliases, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_alias_index_row_deleted, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rings, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_secrets, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_secret_compare_and_swap, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_reencipher_resume, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_reencipher_cas_race, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_reencipher_updates_between_batches, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_reencipher_racing_writer, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_reencipher_tampered_row, fx_setup, fx_teardown),
	    cmocka_unit_test(test_apikey_mac),
	    cmocka_unit_test_setup_teardown(test_request_seal, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_list_state_of_expired, fx_setup, fx_teardown),
	};
	/* The secure heap a unit sets up (unitd/harden.c). */
	if (ky_crypto_init_heap(KY_KMS_SECURE_HEAP) != 0)
		return 1;
	return cmocka_run_group_tests_name("kms", tests, NULL, NULL);
}
