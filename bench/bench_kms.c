/* bench-kms: key storage and wrap figures, measured in one run.
 *
 *   bench-kms [--results FILE] [--only PART] [DIR]
 *       DIR      for the temporary SQLite files (default $TMPDIR or /tmp)
 *       FILE     also writes "name value..." lines there, for bench/run.sh
 *       PART     crypto, create, lookup (50 and 50,000 keys, alternating rounds; lookup-big
 *                the same), lookup-1m or reencipher alone (for profiling)
 *
 * Baseline: raw OpenSSL AES-256-GCM on 32-byte payloads with one reused context and a fixed
 * key, next to kyok's wrap/unwrap of 32-byte data keys (header, AAD, version lookup, cached
 * keyed context). The seal baseline draws a fresh random 96-bit nonce per seal from the
 * DRBG in blocks (as kyok does: one RAND_bytes call per nonce costs more than the seal);
 * one RAND_bytes per seal and a counter nonce are shown too. Then persisted creations,
 * lookups by id and re-encipherment on real files.
 */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
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
static FILE *bench_results; /* --results, NULL without */

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

/* One line of the results file: an id and its numbers. */
static void bench_result(const char *id, int n, const double *v)
{
	if (bench_results == NULL)
		return;
	fprintf(bench_results, "%s", id);
	for (int i = 0; i < n; i++)
		fprintf(bench_results, " %.6f", v[i]);
	fprintf(bench_results, "\n");
	fflush(bench_results);
}

static void bench_result_rate(const char *id, double ops, double secs)
{
	double v[2] = {secs > 0 ? ops / secs : 0.0, secs};

	bench_result(id, 2, v);
}

struct bench_db {
	char path[512];
	struct ky_store *s;
};

static void bench_db_open(struct bench_db *db, int group_commit)
{
	struct ky_store_opts o = {
	    .key_limit = 2000000, .instance = INSTANCE, .no_group_commit = !group_commit};
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

	static const char *const side[] = {"-wal", "-shm", "-kyokgen"}; /* SQLite's, the store's */

	ky_store_close(db->s);
	unlink(db->path);
	for (size_t i = 0; i < sizeof(side) / sizeof(side[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", db->path, side[i]);
		unlink(p);
	}
}

/* ---- raw AES-256-GCM baseline and kyok wrap/unwrap ----
 *
 * Each state does n operations per call. A kyok figure and its baseline are measured in
 * alternating slices (PAIR_ROUNDS of PAIR_SLICE seconds each), so that load from elsewhere
 * on the machine weighs on both alike; the ratio is the median of the slice pairs' ratios.
 */

#define CRYPTO_SECS 1.0
#define PAIR_ROUNDS 15
#define PAIR_SLICE  0.2
#define RAW_POOL    170 /* nonces per RAND_bytes call in the pooled baseline */

enum raw_nonce {
	RAW_NONCE_RAND_EACH, /* one RAND_bytes call per seal */
	RAW_NONCE_RAND_POOL, /* random nonces drawn RAW_POOL at a time */
	RAW_NONCE_COUNTER,   /* 64-bit counter */
};

struct raw_gcm {
	EVP_CIPHER_CTX *ctx;
	EVP_CIPHER *c;
	enum raw_nonce mode;
	uint8_t key[32], iv[12], pt[32], ct[32], tag[16], out[32], pool[12 * RAW_POOL];
	size_t pool_off;
	uint64_t counter;
};

static void raw_init(struct raw_gcm *g, enum raw_nonce mode, int enc)
{
	int l;

	memset(g, 0, sizeof(*g));
	g->mode = mode;
	g->pool_off = sizeof(g->pool);
	g->c = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	if (g->c == NULL || RAND_bytes(g->key, sizeof(g->key)) != 1 ||
	    RAND_bytes(g->iv, sizeof(g->iv)) != 1 || RAND_bytes(g->pt, sizeof(g->pt)) != 1)
		bench_die("raw setup", KY_ERR_CRYPTO);
	if (!enc) { /* one ciphertext to open again and again */
		g->ctx = EVP_CIPHER_CTX_new();
		if (g->ctx == NULL || EVP_EncryptInit_ex(g->ctx, g->c, NULL, g->key, g->iv) != 1 ||
		    EVP_EncryptUpdate(g->ctx, g->ct, &l, g->pt, sizeof(g->pt)) != 1 ||
		    EVP_EncryptFinal_ex(g->ctx, g->ct + l, &l) != 1 ||
		    EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_GET_TAG, 16, g->tag) != 1)
			bench_die("raw setup", KY_ERR_CRYPTO);
		EVP_CIPHER_CTX_free(g->ctx);
	}
	g->ctx = EVP_CIPHER_CTX_new();
	if (g->ctx == NULL || (enc ? EVP_EncryptInit_ex(g->ctx, g->c, NULL, g->key, NULL)
	                           : EVP_DecryptInit_ex(g->ctx, g->c, NULL, g->key, NULL)) != 1)
		bench_die("raw setup", KY_ERR_CRYPTO);
}

static void raw_fini(struct raw_gcm *g)
{
	EVP_CIPHER_CTX_free(g->ctx);
	EVP_CIPHER_free(g->c);
	OPENSSL_cleanse(g->key, sizeof(g->key));
}

/* What a careful caller writes: reused keyed context, a fresh 96-bit nonce per seal. */
static void raw_seal_n(void *p, int n)
{
	struct raw_gcm *g = p;
	int l;

	for (int i = 0; i < n; i++) {
		switch (g->mode) {
		case RAW_NONCE_RAND_EACH:
			if (RAND_bytes(g->iv, sizeof(g->iv)) != 1)
				bench_die("RAND_bytes", KY_ERR_CRYPTO);
			break;
		case RAW_NONCE_RAND_POOL:
			if (g->pool_off == sizeof(g->pool)) {
				if (RAND_bytes(g->pool, sizeof(g->pool)) != 1)
					bench_die("RAND_bytes", KY_ERR_CRYPTO);
				g->pool_off = 0;
			}
			memcpy(g->iv, g->pool + g->pool_off, sizeof(g->iv));
			g->pool_off += sizeof(g->iv);
			break;
		case RAW_NONCE_COUNTER:
			g->counter++;
			memcpy(g->iv, &g->counter, sizeof(g->counter));
			break;
		}
		if (EVP_EncryptInit_ex(g->ctx, NULL, NULL, NULL, g->iv) != 1 ||
		    EVP_EncryptUpdate(g->ctx, g->ct, &l, g->pt, sizeof(g->pt)) != 1 ||
		    EVP_EncryptFinal_ex(g->ctx, g->ct + l, &l) != 1 ||
		    EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_GET_TAG, 16, g->tag) != 1)
			bench_die("raw seal", KY_ERR_CRYPTO);
	}
}

static void raw_open_n(void *p, int n)
{
	struct raw_gcm *g = p;
	int l;

	for (int i = 0; i < n; i++)
		if (EVP_DecryptInit_ex(g->ctx, NULL, NULL, NULL, g->iv) != 1 ||
		    EVP_DecryptUpdate(g->ctx, g->out, &l, g->ct, sizeof(g->ct)) != 1 ||
		    EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_SET_TAG, 16, g->tag) != 1 ||
		    EVP_DecryptFinal_ex(g->ctx, g->out + l, &l) != 1)
			bench_die("raw open", KY_ERR_CRYPTO);
}

struct ky_wrapst {
	const struct ky_key *k;
	uint8_t pt[32], ct[32 + KY_WRAP_OVERHEAD], out[32];
	size_t ctlen;
};

static void ky_wrapst_init(struct ky_wrapst *w, const struct ky_key *k)
{
	int r;

	memset(w, 0, sizeof(*w));
	w->k = k;
	if (RAND_bytes(w->pt, sizeof(w->pt)) != 1)
		bench_die("RAND_bytes", KY_ERR_CRYPTO);
	if ((r = ky_kms_wrap(k, w->pt, sizeof(w->pt), NULL, 0, w->ct, sizeof(w->ct), &w->ctlen)) !=
	    0)
		bench_die("wrap", r);
}

static void ky_wrap_n(void *p, int n)
{
	struct ky_wrapst *w = p;
	size_t ctlen;
	uint8_t ct[32 + KY_WRAP_OVERHEAD];
	int r;

	for (int i = 0; i < n; i++)
		if ((r = ky_kms_wrap(w->k, w->pt, sizeof(w->pt), NULL, 0, ct, sizeof(ct),
		                     &ctlen)) != 0)
			bench_die("wrap", r);
}

static void ky_unwrap_n(void *p, int n)
{
	struct ky_wrapst *w = p;
	size_t outlen;
	int r;

	for (int i = 0; i < n; i++)
		if ((r = ky_kms_unwrap(w->k, w->ct, w->ctlen, NULL, 0, w->out, sizeof(w->out),
		                       &outlen, NULL)) != 0)
			bench_die("unwrap", r);
}

typedef void (*bench_ops_fn)(void *st, int n);

/* Operations per second of f over at least secs seconds. */
static double bench_rate(bench_ops_fn f, void *st, double secs, double *took)
{
	double t0 = bench_now(), t;
	long n = 0;

	do {
		f(st, 256);
		n += 256;
		t = bench_now() - t0;
	} while (t < secs);
	if (took != NULL)
		*took = t;
	return (double)n / t;
}

static int bench_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* kyok's f against the baseline's g, in alternating slices; prints both, records
 * "<id> rate ratio ratio_min ratio_max" and "<base_id> rate" (rate: all slices' operations
 * over their time; ratio: median of the slices' ratios). */
static void bench_pair(const char *base_name, const char *base_id, bench_ops_fn g, void *gst,
                       const char *name, const char *id, bench_ops_fn f, void *fst)
{
	double a[PAIR_ROUNDS], b[PAIR_ROUNDS], q[PAIR_ROUNDS], ta = 0, tb = 0, na = 0, nb = 0, t;
	char note[128];

	(void)bench_rate(g, gst, 0.1, NULL); /* warm caches and the DRBG */
	(void)bench_rate(f, fst, 0.1, NULL);
	for (int i = 0; i < PAIR_ROUNDS; i++) {
		a[i] = bench_rate(g, gst, PAIR_SLICE, &t);
		ta += t;
		na += a[i] * t;
		b[i] = bench_rate(f, fst, PAIR_SLICE, &t);
		tb += t;
		nb += b[i] * t;
		q[i] = b[i] / a[i];
	}
	qsort(q, PAIR_ROUNDS, sizeof(q[0]), bench_cmp);
	snprintf(note, sizeof(note), "baseline, in %d slices of %.1f s", PAIR_ROUNDS, PAIR_SLICE);
	bench_row(base_name, na, ta, note);
	snprintf(note, sizeof(note), "%.2f x baseline (median; slices %.2f..%.2f)",
	         q[PAIR_ROUNDS / 2], q[0], q[PAIR_ROUNDS - 1]);
	bench_row(name, nb, tb, note);
	bench_result(base_id, 1, (double[]){na / ta});
	bench_result(id, 4, (double[]){nb / tb, q[PAIR_ROUNDS / 2], q[0], q[PAIR_ROUNDS - 1]});
}

/* A single run of one baseline variant, for context. */
static void bench_single(const char *name, const char *id, bench_ops_fn f, void *st,
                         const char *note)
{
	double t, rate = bench_rate(f, st, CRYPTO_SECS, &t);

	bench_row(name, rate * t, t, note);
	bench_result_rate(id, rate * t, t);
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
	ky_gcm_thread_release();
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
	snprintf(name, sizeof(name), "create_%d_%s", threads, group_commit ? "group" : "each");
	bench_result(
	    name, 3,
	    (double[]){threads * each / t[1], threads * each / t[2], threads * each / t[0]});
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

static double bench_cpu(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Lookups by random id for secs: how many, the time, and this thread's CPU time (what other
 * work on the machine leaves alone). */
static void bench_lookup_round(double secs, int nkeys, bool open, const struct ky_kms *kms,
                               char (*ids)[KY_UUID_LEN + 1], double out[3])
{
	struct ky_store_row row;
	struct ky_key *k;
	double t0, c0, t;
	long n = 0;
	int r;

	t0 = bench_now();
	c0 = bench_cpu();
	do {
		for (int i = 0; i < 256; i++, n++) {
			const char *kid = ids[rand() % nkeys];
			if (open) {
				if ((r = ky_kms_key_get(kms, kid, 0, NOW, &k)) != 0)
					bench_die("get", r);
				ky_key_free(k);
			} else {
				if ((r = ky_store_key_get(kms->store, kid, &row)) != 0)
					bench_die("get", r);
				ky_store_row_release(&row);
			}
		}
		t = bench_now() - t0;
	} while (t < secs);
	out[0] = (double)n;
	out[1] = t;
	out[2] = bench_cpu() - c0;
}

static double bench_median(double *v, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
			double x = v[j];
			v[j] = v[j - 1];
			v[j - 1] = x;
		}
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define LOOKUP_ROUNDS 5

/* Lookups in stores of each size of nkeys[0..nsizes), in LOOKUP_ROUNDS rounds of CRYPTO_SECS
 * / LOOKUP_ROUNDS per store and kind, the stores alternating (load from elsewhere weighs on
 * all alike). Per store and kind: the rate over all rounds and the median CPU per lookup. */
static void bench_lookup(const struct ky_mk *mk, const int *nkeys, int nsizes)
{
	struct bench_db db[2];
	struct ky_kms kms[2];
	char(*ids[2])[KY_UUID_LEN + 1];
	double got[2][2][LOOKUP_ROUNDS][3];

	for (int z = 0; z < nsizes; z++) {
		bench_db_open(&db[z], 1);
		kms[z] = (struct ky_kms){.store = db[z].s, .instance = INSTANCE, .current = mk};
		ids[z] = bulk_create(&kms[z], nkeys[z]);
	}
	srand(7);
	for (int r = 0; r < LOOKUP_ROUNDS; r++)
		for (int open = 0; open < 2; open++)
			for (int z = 0; z < nsizes; z++)
				bench_lookup_round(CRYPTO_SECS / LOOKUP_ROUNDS, nkeys[z], open,
				                   &kms[z], ids[z], got[z][open][r]);
	for (int open = 0; open < 2; open++)
		for (int z = 0; z < nsizes; z++) {
			double n = 0, t = 0, us[LOOKUP_ROUNDS], cpu;
			char name[96], note[96];

			for (int r = 0; r < LOOKUP_ROUNDS; r++) {
				n += got[z][open][r][0];
				t += got[z][open][r][1];
				us[r] = got[z][open][r][2] / got[z][open][r][0] * 1e6;
			}
			cpu = bench_median(us, LOOKUP_ROUNDS);
			snprintf(name, sizeof(name), "lookup by id (%s), %d keys",
			         open ? "opened key" : "row", nkeys[z]);
			snprintf(note, sizeof(note), "%.2f us CPU each (median of %d); %s", cpu,
			         LOOKUP_ROUNDS, open ? "row + GCM open + checks" : "store only");
			bench_row(name, n, t, note);
			snprintf(name, sizeof(name), "lookup_%s_%d", open ? "key" : "row",
			         nkeys[z]);
			bench_result(name, 3, (double[]){n / t, t, cpu});
		}
	for (int z = 0; z < nsizes; z++) {
		free(ids[z]);
		bench_db_close(&db[z]);
	}
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
	snprintf(name, sizeof(name), "reencipher_%d", nkeys);
	bench_result_rate(name, (double)nkeys, t);
	free(ids);
	bench_db_close(&db);
}

int main(int argc, char **argv)
{
	uint8_t ka[32], kb[32];
	struct ky_mk *a = NULL, *b = NULL;
	struct ky_key_spec sp = {.name = "bench-root"};
	struct ky_key *root = NULL;
	struct raw_gcm g;
	struct ky_wrapst w;
	const char *only = NULL;
	int r, argi = 1;

	for (; argi + 1 < argc && argv[argi][0] == '-'; argi += 2) {
		if (strcmp(argv[argi], "--only") == 0) {
			only = argv[argi + 1];
		} else if (strcmp(argv[argi], "--results") == 0) {
			if ((bench_results = fopen(argv[argi + 1], "w")) == NULL) {
				fprintf(stderr, "error: cannot write '%s'\n", argv[argi + 1]);
				return 1;
			}
		} else {
			break;
		}
	}
	if (argc > argi + 1 || (argc == argi + 1 && argv[argi][0] == '-')) {
		fprintf(stderr, "usage: bench-kms [--results FILE] [--only PART] [DIR]\n");
		return 2;
	}
	bench_dir = argc > argi ? argv[argi] : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	RAND_bytes(ka, sizeof(ka));
	RAND_bytes(kb, sizeof(kb));
	if ((r = ky_mk_new(ka, &a)) != 0 || (r = ky_mk_new(kb, &b)) != 0)
		bench_die("master key", r);
	if ((r = ky_key_new(&sp, NOW, &root)) != 0)
		bench_die("root key", r);

	printf("kyok bench-kms: files in %s, SQLite %s, synchronous=FULL, WAL\n\n", bench_dir,
	       sqlite3_libversion());
	printf("%-46s %10s %9s %12s  %s\n", "benchmark", "ops", "seconds", "ops/s", "note");
#define PART(p) (only == NULL || strcmp(only, p) == 0)
	ky_wrapst_init(&w, root);
	if (!PART("crypto"))
		goto create;
	raw_init(&g, RAW_NONCE_RAND_POOL, 1);
	bench_pair("raw AES-256-GCM seal 32 B, random nonce", "raw_seal", raw_seal_n, &g,
	           "kyok wrap 32-byte key", "wrap", ky_wrap_n, &w);
	raw_fini(&g);
	raw_init(&g, RAW_NONCE_RAND_EACH, 1);
	bench_single("raw seal, RAND_bytes per nonce", "raw_seal_rand_each", raw_seal_n, &g,
	             "context: a DRBG call per seal");
	raw_fini(&g);
	raw_init(&g, RAW_NONCE_COUNTER, 1);
	bench_single("raw seal, counter nonce", "raw_seal_counter", raw_seal_n, &g,
	             "context: no randomness at all");
	raw_fini(&g);
	raw_init(&g, RAW_NONCE_COUNTER, 0);
	bench_pair("raw AES-256-GCM open 32 B", "raw_open", raw_open_n, &g,
	           "kyok unwrap 32-byte key", "unwrap", ky_unwrap_n, &w);
	raw_fini(&g);
create:
	if (PART("create")) {
		bench_create(a, 1, 1000, 1);
		bench_create(a, 1, 1000, 0);
		bench_create(a, 8, 250, 1);
		bench_create(a, 8, 250, 0);
	}
	if (PART("lookup") || PART("lookup-big"))
		bench_lookup(a, (const int[]){50, 50000}, 2);
	if (only != NULL && strcmp(only, "lookup-1m") == 0) /* minutes: only when asked */
		bench_lookup(a, (const int[]){1000000}, 1);
	if (PART("reencipher")) {
		bench_reencipher(a, b, 5000);
		bench_reencipher(a, b, 50000);
	}
#undef PART

	ky_key_free(root);
	ky_mk_free(a);
	ky_mk_free(b);
	ky_gcm_thread_release();
	OPENSSL_cleanse(ka, sizeof(ka));
	OPENSSL_cleanse(kb, sizeof(kb));
	if (bench_results != NULL && fclose(bench_results) != 0) {
		fprintf(stderr, "error: cannot write the results file\n");
		return 1;
	}
	return 0;
}
