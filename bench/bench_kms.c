/* bench-kms: key storage and wrap figures, measured in one run.
 *
 *   bench-kms [DIR]     DIR for the temporary SQLite files (default $TMPDIR or /tmp)
 *
 * Baseline: raw OpenSSL AES-256-GCM on 32-byte payloads with one reused context and a fixed
 * key, next to kyok's wrap/unwrap of 32-byte data keys (header, AAD, version lookup, cached
 * keyed context). Then persisted creations, lookups by id and re-encipherment on real files.
 */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kyok/err.h"
#include "kyok/kms.h"
#include "kyok/store.h"

#define INSTANCE "bench-instance"
#define NOW      ((int64_t)1700000000)

static const char *bench_dir;
static int bench_seq;

static double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bench_die(const char *what, int r)
{
	fprintf(stderr, "error: %s: %s\n", what, ky_err_message(r));
	exit(1);
}

static void bench_row(const char *name, double ops, double secs, const char *note)
{
	printf("%-46s %10.0f %9.3f %12.0f  %s\n", name, ops, secs, secs > 0 ? ops / secs : 0.0,
	       note);
	fflush(stdout);
}

struct bench_db {
	char path[512];
	struct ky_store *s;
};

static void bench_db_open(struct bench_db *db, int group_commit)
{
	struct ky_store_opts o = {
	    .key_limit = 100000, .instance = INSTANCE, .no_group_commit = !group_commit};
	char uri[600];
	int r;

	snprintf(db->path, sizeof(db->path), "%s/bench-kms-%d-%d.db", bench_dir, (int)getpid(),
	         bench_seq++);
	snprintf(uri, sizeof(uri), "sqlite:%s", db->path);
	if ((r = ky_store_open(uri, &o, &db->s)) != 0)
		bench_die(db->path, r);
}

static void bench_db_close(struct bench_db *db)
{
	char p[600];

	ky_store_close(db->s);
	unlink(db->path);
	snprintf(p, sizeof(p), "%s-wal", db->path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", db->path);
	unlink(p);
}

/* ---- raw AES-256-GCM baseline ---- */

#define CRYPTO_SECS 1.0

static double raw_seal(int random_nonce, double *secs)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	uint8_t key[32], iv[12] = {0}, pt[32], ct[32], tag[16];
	double t0, t;
	long n = 0;
	int l;

	RAND_bytes(key, sizeof(key));
	RAND_bytes(pt, sizeof(pt));
	EVP_EncryptInit_ex(ctx, c, NULL, key, NULL);
	t0 = bench_now();
	do {
		for (int i = 0; i < 1024; i++, n++) {
			if (random_nonce)
				RAND_bytes(iv, sizeof(iv));
			else
				memcpy(iv, &n, sizeof(n));
			if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1 ||
			    EVP_EncryptUpdate(ctx, ct, &l, pt, sizeof(pt)) != 1 ||
			    EVP_EncryptFinal_ex(ctx, ct + l, &l) != 1 ||
			    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
				bench_die("raw seal", KY_ERR_CRYPTO);
		}
		t = bench_now() - t0;
	} while (t < CRYPTO_SECS);
	EVP_CIPHER_CTX_free(ctx);
	EVP_CIPHER_free(c);
	*secs = t;
	return (double)n;
}

static double raw_open(double *secs)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	uint8_t key[32], iv[12], pt[32], ct[32], tag[16], out[32];
	double t0, t;
	long n = 0;
	int l;

	RAND_bytes(key, sizeof(key));
	RAND_bytes(iv, sizeof(iv));
	RAND_bytes(pt, sizeof(pt));
	EVP_EncryptInit_ex(ctx, c, NULL, key, iv);
	EVP_EncryptUpdate(ctx, ct, &l, pt, sizeof(pt));
	EVP_EncryptFinal_ex(ctx, ct + l, &l);
	EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag);
	EVP_CIPHER_CTX_free(ctx);
	ctx = EVP_CIPHER_CTX_new();
	EVP_DecryptInit_ex(ctx, c, NULL, key, NULL);
	t0 = bench_now();
	do {
		for (int i = 0; i < 1024; i++, n++) {
			if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1 ||
			    EVP_DecryptUpdate(ctx, out, &l, ct, sizeof(ct)) != 1 ||
			    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) != 1 ||
			    EVP_DecryptFinal_ex(ctx, out + l, &l) != 1)
				bench_die("raw open", KY_ERR_CRYPTO);
		}
		t = bench_now() - t0;
	} while (t < CRYPTO_SECS);
	EVP_CIPHER_CTX_free(ctx);
	EVP_CIPHER_free(c);
	*secs = t;
	return (double)n;
}

/* ---- kyok wrap / unwrap ---- */

static double ky_wrap_ops(const struct ky_key *k, double *secs)
{
	uint8_t pt[32], ct[32 + KY_WRAP_OVERHEAD];
	size_t ctlen;
	double t0, t;
	long n = 0;
	int r;

	RAND_bytes(pt, sizeof(pt));
	t0 = bench_now();
	do {
		for (int i = 0; i < 1024; i++, n++)
			if ((r = ky_kms_wrap(k, pt, sizeof(pt), NULL, 0, ct, sizeof(ct), &ctlen)) !=
			    0)
				bench_die("wrap", r);
		t = bench_now() - t0;
	} while (t < CRYPTO_SECS);
	*secs = t;
	return (double)n;
}

static double ky_unwrap_ops(const struct ky_key *k, double *secs)
{
	uint8_t pt[32], ct[32 + KY_WRAP_OVERHEAD], out[32];
	size_t ctlen, outlen;
	double t0, t;
	long n = 0;
	int r;

	RAND_bytes(pt, sizeof(pt));
	if ((r = ky_kms_wrap(k, pt, sizeof(pt), NULL, 0, ct, sizeof(ct), &ctlen)) != 0)
		bench_die("wrap", r);
	t0 = bench_now();
	do {
		for (int i = 0; i < 1024; i++, n++)
			if ((r = ky_kms_unwrap(k, ct, ctlen, NULL, 0, out, sizeof(out), &outlen,
			                       NULL)) != 0)
				bench_die("unwrap", r);
		t = bench_now() - t0;
	} while (t < CRYPTO_SECS);
	*secs = t;
	return (double)n;
}

/* ---- persisted creations ---- */

struct create_arg {
	const struct ky_kms *kms;
	int n;
};

static void *create_thread(void *p)
{
	struct create_arg *a = p;
	struct ky_key_spec sp = {.name = "bench-key"};
	struct ky_key *k;
	int r;

	for (int i = 0; i < a->n; i++) {
		if ((r = ky_kms_key_create(a->kms, &sp, NOW, &k)) != 0)
			bench_die("create", r);
		ky_key_free(k);
	}
	ky_kms_thread_release();
	return NULL;
}

static double bench_create_once(const struct ky_mk *mk, int threads, int each, int group_commit)
{
	struct bench_db db;
	struct ky_kms kms;
	struct create_arg a;
	pthread_t th[64];
	double t0, t;

	bench_db_open(&db, group_commit);
	kms = (struct ky_kms){.store = db.s, .instance = INSTANCE, .current = mk};
	a = (struct create_arg){.kms = &kms, .n = each};
	t0 = bench_now();
	for (int i = 0; i < threads; i++)
		if (pthread_create(&th[i], NULL, create_thread, &a) != 0)
			bench_die("pthread_create", KY_ERR_INTERNAL);
	for (int i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	t = bench_now() - t0;
	bench_db_close(&db);
	return t;
}

static int bench_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Median of 3 fresh files: the disk's fsync latency varies from run to run. */
static void bench_create(const struct ky_mk *mk, int threads, int each, int group_commit)
{
	double t[3];
	char name[96], note[128];

	for (int i = 0; i < 3; i++)
		t[i] = bench_create_once(mk, threads, each, group_commit);
	qsort(t, 3, sizeof(t[0]), bench_cmp);
	snprintf(name, sizeof(name), "create key, persisted, %d thread%s", threads,
	         threads > 1 ? "s" : "");
	snprintf(note, sizeof(note), "%s; median of 3 (%.0f..%.0f/s)",
	         group_commit ? "group commit" : "1 commit each", threads * each / t[2],
	         threads * each / t[0]);
	bench_row(name, (double)threads * each, t[1], note);
}

/* Bulk creation for the lookup and rotation figures: 1,000 keys per transaction. */
static char (*bulk_create(const struct ky_kms *kms, int n))[KY_UUID_LEN + 1]
{
	char(*ids)[KY_UUID_LEN + 1] = calloc((size_t)n, KY_UUID_LEN + 1);
	struct ky_key_spec sp = {.name = "bench-key"};
	struct ky_key *k;
	int r;

	for (int i = 0; i < n; i++) {
		if (i % 1000 == 0 && (r = ky_store_begin(kms->store)) != 0)
			bench_die("begin", r);
		if ((r = ky_kms_key_create(kms, &sp, NOW, &k)) != 0)
			bench_die("create", r);
		memcpy(ids[i], k->id, sizeof(ids[i]));
		ky_key_free(k);
		if ((i % 1000 == 999 || i == n - 1) && (r = ky_store_commit(kms->store)) != 0)
			bench_die("commit", r);
	}
	return ids;
}

static void bench_lookup(const struct ky_mk *mk, int nkeys)
{
	struct bench_db db;
	struct ky_kms kms;
	char(*ids)[KY_UUID_LEN + 1];
	struct ky_store_row row;
	struct ky_key *k;
	char name[96];
	double t0, t;
	long n = 0;
	int r;

	bench_db_open(&db, 1);
	kms = (struct ky_kms){.store = db.s, .instance = INSTANCE, .current = mk};
	ids = bulk_create(&kms, nkeys);
	srand(7);
	t0 = bench_now();
	do {
		for (int i = 0; i < 256; i++, n++) {
			if ((r = ky_store_key_get(db.s, ids[rand() % nkeys], &row)) != 0)
				bench_die("get", r);
			ky_store_row_release(&row);
		}
		t = bench_now() - t0;
	} while (t < CRYPTO_SECS);
	snprintf(name, sizeof(name), "lookup by id (row), %d keys", nkeys);
	bench_row(name, (double)n, t, "store only");
	n = 0;
	t0 = bench_now();
	do {
		for (int i = 0; i < 256; i++, n++) {
			if ((r = ky_kms_key_get(&kms, ids[rand() % nkeys], 0, NOW, &k)) != 0)
				bench_die("get", r);
			ky_key_free(k);
		}
		t = bench_now() - t0;
	} while (t < CRYPTO_SECS);
	snprintf(name, sizeof(name), "lookup by id (opened key), %d keys", nkeys);
	bench_row(name, (double)n, t, "row + GCM open + checks");
	free(ids);
	bench_db_close(&db);
}

static void bench_reencipher(const struct ky_mk *a, const struct ky_mk *b, int nkeys)
{
	struct bench_db db;
	struct ky_kms kms;
	struct ky_kms_reenc st;
	char(*ids)[KY_UUID_LEN + 1];
	char name[96], note[96];
	double t0, t;
	int r;

	bench_db_open(&db, 1);
	kms = (struct ky_kms){.store = db.s, .instance = INSTANCE, .current = a};
	ids = bulk_create(&kms, nkeys);
	t0 = bench_now();
	if ((r = ky_kms_reencipher(db.s, INSTANCE, a, b, 0, NULL, NULL, &st)) != 0)
		bench_die("reencipher", r);
	t = bench_now() - t0;
	if (st.done != (uint64_t)nkeys)
		bench_die("reencipher count", KY_ERR_INTERNAL);
	snprintf(name, sizeof(name), "re-encipher %d keys", nkeys);
	snprintf(note, sizeof(note), "%u batches of %d, %.3f s total", st.batches,
	         KY_KMS_BATCH_DEFAULT, t);
	bench_row(name, (double)nkeys, t, note);
	free(ids);
	bench_db_close(&db);
}

int main(int argc, char **argv)
{
	uint8_t ka[32], kb[32];
	struct ky_mk *a = NULL, *b = NULL;
	struct ky_key_spec sp = {.name = "bench-root"};
	struct ky_key *root = NULL;
	double s1, s2, s3, s4, s5;
	double n1, n2, n3, n4, n5;
	char note[96];
	int r;

	bench_dir = argc > 1 ? argv[1] : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	RAND_bytes(ka, sizeof(ka));
	RAND_bytes(kb, sizeof(kb));
	if ((r = ky_mk_new(ka, &a)) != 0 || (r = ky_mk_new(kb, &b)) != 0)
		bench_die("master key", r);
	if ((r = ky_key_new(&sp, NOW, &root)) != 0)
		bench_die("root key", r);

	printf("kyok bench-kms: files in %s, SQLite %s, synchronous=FULL, WAL\n\n", bench_dir,
	       sqlite3_libversion());
	printf("%-46s %10s %9s %12s  %s\n", "benchmark", "ops", "seconds", "ops/s", "note");
	n1 = raw_seal(1, &s1);
	bench_row("raw AES-256-GCM seal 32 B, random nonce", n1, s1, "baseline: reused ctx");
	n2 = raw_seal(0, &s2);
	bench_row("raw AES-256-GCM seal 32 B, counter nonce", n2, s2, "no RAND_bytes per op");
	n3 = raw_open(&s3);
	bench_row("raw AES-256-GCM open 32 B", n3, s3, "baseline: reused ctx");
	n4 = ky_wrap_ops(root, &s4);
	snprintf(note, sizeof(note), "%.2f x raw (random nonce), %.2f x counter",
	         (n4 / s4) / (n1 / s1), (n4 / s4) / (n2 / s2));
	bench_row("kyok wrap 32-byte key", n4, s4, note);
	n5 = ky_unwrap_ops(root, &s5);
	snprintf(note, sizeof(note), "%.2f x raw open", (n5 / s5) / (n3 / s3));
	bench_row("kyok unwrap 32-byte key", n5, s5, note);

	bench_create(a, 1, 1000, 1);
	bench_create(a, 1, 1000, 0);
	bench_create(a, 8, 250, 1);
	bench_create(a, 8, 250, 0);
	bench_lookup(a, 50);
	bench_lookup(a, 50000);
	bench_reencipher(a, b, 5000);
	bench_reencipher(a, b, 50000);

	ky_key_free(root);
	ky_mk_free(a);
	ky_mk_free(b);
	ky_kms_thread_release();
	OPENSSL_cleanse(ka, sizeof(ka));
	OPENSSL_cleanse(kb, sizeof(kb));
	return 0;
}
