/* Key storage through the dispatch table: the SQLite backend on real files in a temp dir, or
 * the PostgreSQL backend when KYOK_TEST_PG names a database (tests/pg_run.sh; see
 * store_fixture.h). The tests that read SQLite files with SQLite itself are skipped there. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kyok/err.h"
#include "kyok/store.h"
#include "store_fixture.h"

struct fx {
	char dir[64];
	char path[TFX_URI_MAX]; /* SQLite: the file; PostgreSQL: the URI (for tfx_sql) */
	char uri[TFX_URI_MAX];
	bool pg;
	char schema[48];
	struct ky_store *s;
};

static const uint8_t vp_a[KY_VP_LEN] = {0xaa, 1};
static const uint8_t vp_b[KY_VP_LEN] = {0xbb, 2};

static void fx_paths(struct fx *f)
{
	if (tfx_pg() != NULL) {
		f->pg = true;
		tfx_pg_schema_new(f->schema, sizeof(f->schema), f->uri, sizeof(f->uri));
		memcpy(f->path, f->uri, sizeof(f->path));
		return;
	}
	snprintf(f->path, sizeof(f->path), "%s/keys.db", f->dir);
	snprintf(f->uri, sizeof(f->uri), "sqlite:%.*s", (int)sizeof(f->uri) - 8, f->path);
}

static int fx_setup_opts(void **state, const struct ky_store_opts *o)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->dir, "/tmp/kyok-store-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	fx_paths(f);
	assert_int_equal(ky_store_open(f->uri, o, &f->s), 0);
	*state = f;
	return 0;
}

static int fx_setup(void **state)
{
	return fx_setup_opts(state, NULL);
}

static int fx_setup_limit3(void **state)
{
	struct ky_store_opts o = {.key_limit = 3};
	return fx_setup_opts(state, &o);
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	char p[TFX_URI_MAX + 16];

	ky_store_close(f->s);
	if (f->pg) {
		tfx_pg_schema_drop(f->schema);
		rmdir(f->dir);
		free(f);
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
	return 0;
}

/* A row with a made-up blob; the store never looks inside. */
static void row_make(struct ky_store_row *row, int i, int state, int extractable, const uint8_t *vp)
{
	memset(row, 0, sizeof(*row));
	snprintf(row->id, sizeof(row->id), "%08x-0000-4000-8000-%012x", (unsigned)i, (unsigned)i);
	snprintf(row->name, sizeof(row->name), "key-%d", i);
	row->state = state;
	row->extractable = extractable;
	row->created = 1700000000 + i;
	row->updated = row->created;
	row->version = 1;
	memcpy(row->vp, vp, KY_VP_LEN);
	row->bloblen = 40;
	row->blob = malloc(row->bloblen);
	assert_non_null(row->blob);
	memset(row->blob, i & 0xff, row->bloblen);
}

static void insert_n(struct ky_store *s, int from, int n, const uint8_t *vp)
{
	struct ky_store_row row;

	for (int i = from; i < from + n; i++) {
		row_make(&row, i, 1 + (i % 2), i % 3 == 0, vp);
		assert_int_equal(ky_store_key_insert(s, &row), 0);
		ky_store_row_release(&row);
	}
}

static void sql(const char *path, const char *q)
{
	tfx_sql(path, q);
}

static int64_t sql_int(const char *path, const char *q)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t v;

	if (tfx_is_pg(path)) {
		PGconn *pc = PQconnectdb(path);
		PGresult *res;

		assert_int_equal(PQstatus(pc), CONNECTION_OK);
		res = PQexec(pc, q);
		assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
		assert_int_equal(PQntuples(res), 1);
		v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		PQclear(res);
		PQfinish(pc);
		return v;
	}
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* ---- opening ---- */

static void test_open_uri(void **state)
{
	struct fx *f = *state;
	struct ky_store *s = NULL;
	char uri[200];

	assert_int_equal(ky_store_open("nosuch:/tmp/x.db", NULL, &s), KY_ERR_CONFIG);
	assert_null(s);
	assert_int_equal(ky_store_open("sqlite:", NULL, &s), KY_ERR_CONFIG);
	assert_int_equal(ky_store_open("/tmp/no-scheme.db", NULL, &s), KY_ERR_CONFIG);
	assert_int_equal(ky_store_open(NULL, NULL, &s), KY_ERR_CONFIG);
	snprintf(uri, sizeof(uri), "sqlite:%s/missing-dir/keys.db", f->dir);
	assert_int_equal(ky_store_open(uri, NULL, &s), KY_ERR_IO);
	/* a second handle on the same file */
	assert_int_equal(ky_store_open(f->uri, NULL, &s), 0);
	assert_int_equal(ky_store_key_limit(s), KY_STORE_KEY_LIMIT_DEFAULT);
	ky_store_close(s);
	ky_store_close(NULL);
}

static void test_open_file_mode_wal(void **state)
{
	struct fx *f = *state;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char p[TFX_URI_MAX + 16];
	struct stat sb;

	TFX_SQLITE_ONLY(f);
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	snprintf(p, sizeof(p), "%s-wal", f->path);
	assert_int_equal(stat(p, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void test_open_schema_newer(void **state)
{
	struct fx *f = *state;
	struct ky_store *s = NULL;

	sql(f->path, "UPDATE meta SET v = '3' WHERE k = 'schema'");
	assert_int_equal(ky_store_open(f->uri, NULL, &s), KY_ERR_STORE_SCHEMA);
	assert_null(s);
	sql(f->path, "DELETE FROM meta WHERE k = 'schema'");
	assert_int_equal(ky_store_open(f->uri, NULL, &s), KY_ERR_STORE_SCHEMA);
	sql(f->path, "INSERT INTO meta VALUES ('schema', '1')");
	assert_int_equal(ky_store_open(f->uri, NULL, &s), 0);
	ky_store_close(s);
}

static void test_open_instance_binding(void **state)
{
	struct fx *f = *state;
	struct ky_store *s = NULL;
	struct ky_store_opts a = {.instance = "inst-a"}, b = {.instance = "inst-b"};
	struct ky_store_opts bad = {.instance = ""};

	assert_int_equal(ky_store_open(f->uri, &a, &s), 0); /* binds */
	ky_store_close(s);
	assert_int_equal(ky_store_open(f->uri, &a, &s), 0);
	ky_store_close(s);
	assert_int_equal(ky_store_open(f->uri, &b, &s), KY_ERR_WRONG_INSTANCE);
	assert_null(s);
	assert_int_equal(ky_store_open(f->uri, &bad, &s), KY_ERR_CONFIG);
}

/* ---- keys ---- */

static void test_key_insert_get(void **state)
{
	struct fx *f = *state;
	struct ky_store_row row, got;

	row_make(&row, 7, 1, 0, vp_a);
	row.deleted = 5;
	row.version = 3;
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	assert_int_equal(row.seq, 1);
	assert_int_equal(row.rev, 1);
	assert_int_equal(ky_store_key_get(f->s, row.id, &got), 0);
	assert_string_equal(got.id, row.id);
	assert_string_equal(got.name, "key-7");
	assert_int_equal(got.state, 1);
	assert_int_equal(got.extractable, 0);
	assert_int_equal(got.created, row.created);
	assert_int_equal(got.updated, row.updated);
	assert_int_equal(got.deleted, 5);
	assert_int_equal(got.version, 3);
	assert_int_equal(got.seq, 1);
	assert_int_equal(got.rev, 1);
	assert_memory_equal(got.vp, vp_a, KY_VP_LEN);
	assert_int_equal(got.bloblen, row.bloblen);
	assert_memory_equal(got.blob, row.blob, row.bloblen);
	ky_store_row_release(&got);

	/* duplicate id */
	assert_int_equal(ky_store_key_insert(f->s, &row), KY_ERR_EXISTS);
	ky_store_row_release(&row);
	/* seq follows creation order */
	row_make(&row, 8, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	assert_int_equal(row.seq, 2);
	ky_store_row_release(&row);

	assert_int_equal(ky_store_key_get(f->s, "00000000-0000-4000-8000-00000000ffff", &got),
	                 KY_ERR_NOT_FOUND);
	assert_int_equal(ky_store_key_get(f->s, "short", &got), KY_ERR_NOT_FOUND);
	assert_int_equal(ky_store_key_get(f->s, NULL, &got), KY_ERR_NOT_FOUND);
	/* a row without a blob is not stored */
	row_make(&row, 9, 1, 0, vp_a);
	free(row.blob);
	row.blob = NULL;
	assert_int_equal(ky_store_key_insert(f->s, &row), KY_ERR_USAGE);
}

static void test_key_update_cas(void **state)
{
	struct fx *f = *state;
	struct ky_store_row row, got;

	row_make(&row, 1, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	row.state = 2;
	row.updated += 10;
	assert_int_equal(ky_store_key_update(f->s, &row), 0);
	assert_int_equal(row.rev, 2);
	assert_int_equal(ky_store_key_get(f->s, row.id, &got), 0);
	assert_int_equal(got.state, 2);
	assert_int_equal(got.rev, 2);
	assert_int_equal(got.seq, 1);
	ky_store_row_release(&got);
	/* stale rev: refused, nothing changed */
	row.rev = 1;
	row.state = 5;
	assert_int_equal(ky_store_key_update(f->s, &row), KY_ERR_CONFLICT);
	assert_int_equal(ky_store_key_get(f->s, row.id, &got), 0);
	assert_int_equal(got.state, 2);
	ky_store_row_release(&got);
	/* delete: CAS too */
	assert_int_equal(ky_store_key_delete(f->s, row.id, 1), KY_ERR_CONFLICT);
	assert_int_equal(ky_store_key_delete(f->s, row.id, 2), 0);
	assert_int_equal(ky_store_key_delete(f->s, row.id, 2), KY_ERR_NOT_FOUND);
	row.rev = 2;
	assert_int_equal(ky_store_key_update(f->s, &row), KY_ERR_NOT_FOUND);
	ky_store_row_release(&row);
}

static void test_key_list_filters(void **state)
{
	struct fx *f = *state;
	struct ky_store_row *rows = NULL;
	struct ky_store_filter flt = {.states = 0, .extractable = -1};
	size_t n = 0;
	uint64_t total = 0;

	/* 12 rows: state 1 for even i, 2 for odd i; extractable when i % 3 == 0 */
	insert_n(f->s, 0, 12, vp_a);
	assert_int_equal(ky_store_key_count(f->s, NULL, &total), 0);
	assert_int_equal(total, 12);
	assert_int_equal(ky_store_key_list(f->s, NULL, 0, 0, &rows, &n), 0);
	assert_int_equal(n, 12);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(rows[i].seq, (int64_t)i + 1);
	ky_store_rows_free(rows, n);

	/* limit and offset */
	assert_int_equal(ky_store_key_list(f->s, &flt, 5, 10, &rows, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(rows[0].name, "key-10");
	ky_store_rows_free(rows, n);
	assert_int_equal(ky_store_key_list(f->s, &flt, 3, 2, &rows, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(rows[0].name, "key-2");
	assert_string_equal(rows[2].name, "key-4");
	ky_store_rows_free(rows, n);
	assert_int_equal(ky_store_key_list(f->s, &flt, 3, 50, &rows, &n), 0);
	assert_int_equal(n, 0);
	ky_store_rows_free(rows, n);

	/* state filter */
	flt.states = 1u << 2;
	assert_int_equal(ky_store_key_count(f->s, &flt, &total), 0);
	assert_int_equal(total, 6);
	assert_int_equal(ky_store_key_list(f->s, &flt, 0, 0, &rows, &n), 0);
	assert_int_equal(n, 6);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(rows[i].state, 2);
	ky_store_rows_free(rows, n);
	flt.states = 1u << 5;
	assert_int_equal(ky_store_key_count(f->s, &flt, &total), 0);
	assert_int_equal(total, 0);
	flt.states = (1u << 1) | (1u << 2);
	assert_int_equal(ky_store_key_count(f->s, &flt, &total), 0);
	assert_int_equal(total, 12);

	/* extractable filter: i in {0, 3, 6, 9} */
	flt.states = 0;
	flt.extractable = 1;
	assert_int_equal(ky_store_key_count(f->s, &flt, &total), 0);
	assert_int_equal(total, 4);
	flt.extractable = 0;
	assert_int_equal(ky_store_key_count(f->s, &flt, &total), 0);
	assert_int_equal(total, 8);
	/* both: state 2 (odd) and extractable: 3, 9 */
	flt.states = 1u << 2;
	flt.extractable = 1;
	assert_int_equal(ky_store_key_list(f->s, &flt, 0, 0, &rows, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(rows[0].name, "key-3");
	assert_string_equal(rows[1].name, "key-9");
	ky_store_rows_free(rows, n);

	/* after_seq: only the rows after it, with the other filters, in the list and the count */
	flt = (struct ky_store_filter){.states = 0, .extractable = -1, .after_seq = 7};
	assert_int_equal(ky_store_key_list(f->s, &flt, 3, 0, &rows, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(rows[0].seq, 8);
	assert_int_equal(rows[2].seq, 10);
	ky_store_rows_free(rows, n);
	assert_int_equal(ky_store_key_count(f->s, &flt, &total), 0);
	assert_int_equal(total, 5);
	flt.vp_a = vp_a;
	assert_int_equal(ky_store_key_count(f->s, &flt, &total), 0);
	assert_int_equal(total, 5);
	flt.states = 1u << 2; /* odd i (seq i + 1 > 7): 7, 9, 11 */
	assert_int_equal(ky_store_key_list(f->s, &flt, 0, 0, &rows, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(rows[0].name, "key-7");
	assert_string_equal(rows[2].name, "key-11");
	ky_store_rows_free(rows, n);
	flt.after_seq = 12;
	assert_int_equal(ky_store_key_list(f->s, &flt, 0, 0, &rows, &n), 0);
	assert_int_equal(n, 0);
	ky_store_rows_free(rows, n);
}

static void test_key_limit(void **state)
{
	struct fx *f = *state;
	struct ky_store_row row;
	struct ky_store_row *rows = NULL;
	size_t n = 0;

	assert_int_equal(ky_store_key_limit(f->s), 3);
	insert_n(f->s, 0, 3, vp_a);
	row_make(&row, 3, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(f->s, &row), KY_ERR_KEY_LIMIT);
	/* inside an explicit transaction too */
	assert_int_equal(ky_store_begin(f->s), 0);
	assert_int_equal(ky_store_key_insert(f->s, &row), KY_ERR_KEY_LIMIT);
	assert_int_equal(ky_store_rollback(f->s), 0);
	/* a purge frees a place */
	assert_int_equal(ky_store_key_list(f->s, NULL, 1, 0, &rows, &n), 0);
	assert_int_equal(ky_store_key_delete(f->s, rows[0].id, rows[0].rev), 0);
	ky_store_rows_free(rows, n);
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	ky_store_row_release(&row);
	row_make(&row, 4, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(f->s, &row), KY_ERR_KEY_LIMIT);
	ky_store_row_release(&row);
}

static void test_key_limit_counter_tracks_sql_delete(void **state)
{
	struct fx *f = *state;
	struct ky_store_row row;
	uint64_t total = 0;

	insert_n(f->s, 0, 3, vp_a);
	/* the counter is kept by triggers, whoever deletes */
	sql(f->path, "DELETE FROM keys WHERE name = 'key-1'");
	assert_int_equal(ky_store_key_count(f->s, NULL, &total), 0);
	assert_int_equal(total, 2);
	row_make(&row, 9, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	ky_store_row_release(&row);
}

/* The limit counts the records under the row's VP and limit_vp only: records under a
 * crypto-shredded master key are nobody's keys. */
static void test_key_limit_per_vp(void **state)
{
	struct fx *f = *state;
	static const uint8_t vp_c[KY_VP_LEN] = {0xcc, 3};
	struct ky_store_row row;
	struct ky_store_filter fl = {.extractable = -1};
	struct ky_store_vprow *vr = NULL;
	size_t nv = 0, swapped = 0;
	uint64_t cnt = 0;

	insert_n(f->s, 0, 3, vp_a); /* full under vp_a */
	row_make(&row, 10, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(f->s, &row), KY_ERR_KEY_LIMIT);
	ky_store_row_release(&row);
	/* under another master key: room again */
	insert_n(f->s, 10, 2, vp_b);
	/* a rotation from vp_b to vp_c: both count */
	row_make(&row, 20, 1, 0, vp_c);
	row.limit_vp = vp_b;
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	ky_store_row_release(&row);
	row_make(&row, 21, 1, 0, vp_c);
	row.limit_vp = vp_b;
	assert_int_equal(ky_store_key_insert(f->s, &row), KY_ERR_KEY_LIMIT);
	/* limit_vp equal to vp counts once */
	row.limit_vp = vp_c;
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	ky_store_row_release(&row);

	/* counts follow re-encipherment (vp updates), deletes, and writers outside kyok */
	fl.vp_a = vp_b;
	assert_int_equal(ky_store_key_count(f->s, &fl, &cnt), 0);
	assert_int_equal(cnt, 2);
	assert_int_equal(ky_store_vp_fetch(f->s, KY_STORE_KEYS, vp_b, NULL, 1, &vr, &nv), 0);
	assert_int_equal(nv, 1);
	assert_int_equal(ky_store_vp_swap(f->s, KY_STORE_KEYS, vp_b, vp_c, vr, nv, &swapped), 0);
	assert_int_equal(swapped, 1);
	ky_store_vprows_free(vr, nv);
	assert_int_equal(ky_store_key_count(f->s, &fl, &cnt), 0);
	assert_int_equal(cnt, 1);
	fl.vp_a = vp_c;
	assert_int_equal(ky_store_key_count(f->s, &fl, &cnt), 0);
	assert_int_equal(cnt, 3);
	fl.vp_b = vp_b;
	assert_int_equal(ky_store_key_count(f->s, &fl, &cnt), 0);
	assert_int_equal(cnt, 4);
	/* the same as counting the rows (the filtered query) */
	fl.states = (1u << 1) | (1u << 2) | (1u << 3) | (1u << 5);
	assert_int_equal(ky_store_key_count(f->s, &fl, &cnt), 0);
	assert_int_equal(cnt, 4);
	sql(f->path, "DELETE FROM keys WHERE hex(vp) LIKE 'BB02%'");
	fl.states = 0;
	assert_int_equal(ky_store_key_count(f->s, &fl, &cnt), 0);
	assert_int_equal(cnt, 3);
	assert_int_equal(ky_store_key_count(f->s, NULL, &cnt), 0);
	assert_int_equal(cnt, 6);
}

/* ---- counts by state (lib/store/count.h) ---- */

/* Dates of the rows below: expired before ST_BETWEEN, or after it, or never (0). */
#define ST_PAST    1000
#define ST_BETWEEN 1500
#define ST_FUTURE  5000
#define ST_AFTER   1000000

static void state_row(struct ky_store *s, int i, int st, int64_t expires)
{
	struct ky_store_row row;

	row_make(&row, i, st, i % 2, vp_a);
	row.expires = expires;
	assert_int_equal(ky_store_key_insert(s, &row), 0);
	ky_store_row_release(&row);
}

/* Rows in states 1, 2, 3 and 5; Active ones expired in the past, in the future and never;
 * others with dates that must not move them. Row i is key-i. */
static void state_rows(struct ky_store *s)
{
	static const struct {
		int state;
		int64_t expires;
	} rows[] = {
	    {1, 0},         {1, 0},         {1, ST_PAST},   {1, ST_PAST}, {1, ST_PAST + 100},
	    {1, ST_FUTURE}, {1, ST_FUTURE}, {2, 0},         {2, ST_PAST}, {2, ST_FUTURE},
	    {3, 0},         {3, ST_PAST},   {5, ST_FUTURE}, {5, 0},       {5, ST_PAST},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		state_row(s, (int)i, rows[i].state, rows[i].expires);
}

/* For every non-empty set of states among 0..5 and each date (none, between the expiration
 * dates, after all), the count equals the rows the listing gives for the same filter (the
 * listing reads the table: the oracle). The count of state 2 is off by `off`. */
static void state_counts_check_off(struct ky_store *s, int64_t off)
{
	static const int64_t nows[] = {0, ST_BETWEEN, ST_AFTER};

	for (unsigned m = 1; m < 64; m++)
		for (size_t t = 0; t < sizeof(nows) / sizeof(nows[0]); t++) {
			struct ky_store_filter flt = {
			    .states = m, .extractable = -1, .now = nows[t]};
			struct ky_store_row *rows = NULL;
			size_t n = 0;
			uint64_t cnt = 0;

			assert_int_equal(ky_store_key_list(s, &flt, 0, 0, &rows, &n), 0);
			ky_store_rows_free(rows, n);
			assert_int_equal(ky_store_key_count(s, &flt, &cnt), 0);
			if (cnt != (uint64_t)((int64_t)n + ((m & (1u << 2)) ? off : 0)))
				fprintf(stderr, "states 0x%x now %lld: counted %llu, listed %zu\n",
				        m, (long long)nows[t], (unsigned long long)cnt, n);
			assert_int_equal(cnt, (int64_t)n + ((m & (1u << 2)) ? off : 0));
		}
}

static void state_counts_check(struct ky_store *s)
{
	state_counts_check_off(s, 0);
}

static uint64_t state_count(struct ky_store *s, unsigned states, int64_t now)
{
	struct ky_store_filter flt = {.states = states, .extractable = -1, .now = now};
	uint64_t cnt = 0;

	assert_int_equal(ky_store_key_count(s, &flt, &cnt), 0);
	return cnt;
}

/* key-i from state `from` to `to`, through the store. */
static void state_change(struct ky_store *s, int i, int from, int to)
{
	struct ky_store_row row, got;

	row_make(&row, i, from, i % 2, vp_a);
	assert_int_equal(ky_store_key_get(s, row.id, &got), 0);
	assert_int_equal(got.state, from);
	got.state = to;
	got.updated += 10;
	assert_int_equal(ky_store_key_update(s, &got), 0);
	ky_store_row_release(&got);
	ky_store_row_release(&row);
}

static void state_delete(struct ky_store *s, int i)
{
	struct ky_store_row row, got;

	row_make(&row, i, 1, 0, vp_a);
	assert_int_equal(ky_store_key_get(s, row.id, &got), 0);
	assert_int_equal(ky_store_key_delete(s, got.id, got.rev), 0);
	ky_store_row_release(&got);
	ky_store_row_release(&row);
}

/* A count by states (and a date) answers what the scan answered, after writes through the
 * store and by another program; and it is the counters that answer it. */
static void test_key_count_by_state(void **state)
{
	struct fx *f = *state;

	state_counts_check(f->s);
	state_rows(f->s);
	state_counts_check(f->s);
	/* the figures themselves, for a reader of this test */
	assert_int_equal(state_count(f->s, 1u << 1, 0), 7);
	assert_int_equal(state_count(f->s, 1u << 1, ST_BETWEEN), 4);
	assert_int_equal(state_count(f->s, 1u << 1, ST_AFTER), 2);
	assert_int_equal(state_count(f->s, 1u << 3, ST_AFTER), 7);
	assert_int_equal(state_count(f->s, (1u << 1) | (1u << 3), ST_BETWEEN), 9);
	assert_int_equal(state_count(f->s, 1u << 2, ST_AFTER), 3);

	/* through the store: an Active key (expired) suspended, one (not expiring) deactivated
	 * and back, a destroyed key purged */
	state_change(f->s, 2, 1, 2);
	state_change(f->s, 0, 1, 3);
	state_counts_check(f->s);
	state_change(f->s, 0, 3, 1);
	state_delete(f->s, 13);
	state_counts_check(f->s);
	/* by another program */
	sql(f->path, "UPDATE keys SET state = 3 WHERE name = 'key-5'");
	sql(f->path, "UPDATE keys SET state = 1 WHERE name IN ('key-8', 'key-11')");
	state_counts_check(f->s);
	sql(f->path, "DELETE FROM keys WHERE name IN ('key-3', 'key-9')");
	sql(f->path, "UPDATE keys SET expires = 1200 WHERE name = 'key-1'");
	state_counts_check(f->s);
	assert_int_equal(state_count(f->s, 1u << 1, ST_BETWEEN), 2); /* key-0, key-6 */

	/* the counters are what is read: one put wrong by hand shows in every count of state 2 */
	sql(f->path, "UPDATE counters SET n = n + 100 WHERE k = 'state:2'");
	state_counts_check_off(f->s, 100);
	sql(f->path, "UPDATE counters SET n = n - 100 WHERE k = 'state:2'");
	state_counts_check(f->s);
	/* other filters still read the table */
	{
		struct ky_store_filter flt = {.states = 1u << 2, .extractable = 1};
		struct ky_store_row *rows = NULL;
		size_t n = 0;
		uint64_t cnt = 0;

		sql(f->path, "UPDATE counters SET n = n + 100 WHERE k = 'state:2'");
		assert_int_equal(ky_store_key_list(f->s, &flt, 0, 0, &rows, &n), 0);
		ky_store_rows_free(rows, n);
		assert_int_equal(ky_store_key_count(f->s, &flt, &cnt), 0);
		assert_int_equal(cnt, n);
		flt = (struct ky_store_filter){.states = 1u << 2, .extractable = -1, .vp_a = vp_a};
		assert_int_equal(ky_store_key_count(f->s, &flt, &cnt), 0);
		assert_int_equal(cnt, state_count(f->s, 1u << 2, 0) - 100);
		sql(f->path, "UPDATE counters SET n = n - 100 WHERE k = 'state:2'");
	}
}

/* A store made before the 'state:' counters and keys_expiring (or whose counters were put
 * wrong while a trigger was missing): opening it makes them and counts the counters from the
 * rows; later writes keep them right. */
static void test_key_count_by_state_upgrade(void **state)
{
	struct fx *f = *state;
	struct ky_store *s = NULL;

	state_rows(f->s);
	ky_store_close(f->s);
	f->s = NULL;
	if (f->pg)
		sql(f->path, "DROP TRIGGER keys_state_counters ON keys;"
		             "DROP FUNCTION kyok_keys_state_counters();");
	else
		sql(f->path, "DROP TRIGGER keys_state_ins; DROP TRIGGER keys_state_del;"
		             "DROP TRIGGER keys_state_upd;");
	sql(f->path, "DROP INDEX keys_expiring;"
	             "DELETE FROM counters WHERE k LIKE 'state:%';"
	             "INSERT INTO counters (k, n) VALUES ('state:1', 999), ('state:9', 5);");
	/* an old program's writes, made without the triggers */
	sql(f->path, "UPDATE keys SET state = 2 WHERE name = 'key-0';"
	             "DELETE FROM keys WHERE name = 'key-12'");
	assert_int_equal(ky_store_open(f->uri, NULL, &s), 0);
	f->s = s;
	state_counts_check(f->s);
	assert_int_equal(state_count(f->s, 1u << 9, 0), 0);
	/* the index is there again (its use: test_plan_uses_index; on so few rows PostgreSQL,
	 * which knows the table's size once an index was made, may rather read the table) */
	assert_int_equal(sql_int(f->path, f->pg ? "SELECT count(*) FROM pg_indexes WHERE "
	                                          "schemaname = current_schema() AND "
	                                          "indexname = 'keys_expiring'"
	                                        : "SELECT count(*) FROM sqlite_master WHERE "
	                                          "type = 'index' AND name = 'keys_expiring'"),
	                 1);
	state_change(f->s, 1, 1, 5);
	state_row(f->s, 40, 1, ST_PAST);
	state_delete(f->s, 14);
	sql(f->path, "UPDATE keys SET state = 1 WHERE name = 'key-7'");
	state_counts_check(f->s);
	/* opened again: the counters are not counted anew (one put wrong stays wrong) */
	sql(f->path, "UPDATE counters SET n = n + 100 WHERE k = 'state:2'");
	ky_store_close(f->s);
	f->s = NULL;
	assert_int_equal(ky_store_open(f->uri, NULL, &s), 0);
	f->s = s;
	state_counts_check_off(f->s, 100);
	sql(f->path, "UPDATE counters SET n = n - 100 WHERE k = 'state:2'");
	if (f->pg)
		return;
	/* SQLite: one trigger of three missing is enough to count them again */
	ky_store_close(f->s);
	f->s = NULL;
	sql(f->path, "DROP TRIGGER keys_state_upd;"
	             "UPDATE counters SET n = n + 7 WHERE k = 'state:5'");
	assert_int_equal(ky_store_open(f->uri, NULL, &s), 0);
	f->s = s;
	state_counts_check(f->s);
	state_change(f->s, 4, 1, 5);
	state_counts_check(f->s);
}

/* A store made before the per-VP counters and the api_keys tag: opening it adds both, with
 * the counters counted from the rows. */
static void test_upgrade_old_store(void **state)
{
	struct fx *f = *state;
	struct ky_store_row row, kr;
	struct ky_store_apikey got;
	struct ky_store *s = NULL;
	struct ky_store_opts o = {.key_limit = 3};

	TFX_SQLITE_ONLY(f);
	insert_n(f->s, 0, 3, vp_a);
	ky_store_close(f->s);
	f->s = NULL;
	sql(f->path, "DROP TRIGGER keys_vp_ins; DROP TRIGGER keys_vp_del; DROP TRIGGER keys_vp_upd;"
	             "DROP TRIGGER keys_state_ins; DROP TRIGGER keys_state_del;"
	             "DROP TRIGGER keys_state_upd; DROP INDEX keys_expiring;"
	             "DELETE FROM counters WHERE k LIKE 'state:%';"
	             "ALTER TABLE keys DROP COLUMN expires;"
	             "DELETE FROM counters WHERE k LIKE 'vp:%';"
	             "DROP TABLE api_keys;"
	             "CREATE TABLE api_keys (id TEXT PRIMARY KEY NOT NULL, role TEXT NOT NULL,"
	             " hash BLOB NOT NULL UNIQUE, created INTEGER NOT NULL,"
	             " revoked INTEGER NOT NULL) WITHOUT ROWID;"
	             "INSERT INTO api_keys VALUES ('old-1', 'Manager', zeroblob(32), 5, 0);");
	assert_int_equal(ky_store_open(f->uri, &o, &s), 0);
	f->s = s;
	row_make(&row, 7, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(f->s, &row), KY_ERR_KEY_LIMIT);
	ky_store_row_release(&row);
	row_make(&row, 8, 1, 0, vp_b);
	row.expires = 1234;
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	assert_int_equal(ky_store_key_get(f->s, row.id, &kr), 0);
	assert_int_equal(kr.expires, 1234);
	ky_store_row_release(&kr);
	ky_store_row_release(&row);
	row_make(&row, 0, 1, 0, vp_a); /* a row from before: expires 0 */
	assert_int_equal(ky_store_key_get(f->s, row.id, &kr), 0);
	assert_int_equal(kr.expires, 0);
	ky_store_row_release(&kr);
	ky_store_row_release(&row);
	assert_int_equal(ky_store_apikey_get(f->s, "old-1", &got), 0);
	assert_string_equal(got.name, "");
	assert_false(got.has_mac);
	/* the 'state:' counters too (insert_n: state 1 for even i, 2 for odd; row 8 Active) */
	assert_int_equal(state_count(f->s, 1u << 1, 0), 3);
	assert_int_equal(state_count(f->s, 1u << 2, 2000), 1);
	assert_int_equal(state_count(f->s, 1u << 3, 2000), 1);
}

/* Aliases: the store's index finds a key by alias and keeps an alias to one key, on insert,
 * update and delete; a refusal writes nothing. */
static void alias_row(struct ky_store_row *row, int i, const char *a, const char *b)
{
	row_make(row, i, 1, 0, vp_a);
	row->aliases[0] = a;
	row->aliases[1] = b;
	row->naliases = b != NULL ? 2 : (a != NULL ? 1 : 0);
}

static void alias_is(struct ky_store *s, const char *alias, const char *want)
{
	char id[KY_UUID_LEN + 1];

	if (want == NULL) {
		assert_int_equal(ky_store_alias_find(s, alias, id), KY_ERR_NOT_FOUND);
		assert_string_equal(id, "");
		return;
	}
	assert_int_equal(ky_store_alias_find(s, alias, id), 0);
	assert_string_equal(id, want);
}

static void test_key_aliases(void **state)
{
	struct fx *f = *state;
	struct ky_store_row a, b, got;
	int64_t rev;

	alias_row(&a, 1, "app-key", "other_name");
	assert_int_equal(ky_store_key_insert(f->s, &a), 0);
	alias_is(f->s, "app-key", a.id);
	alias_is(f->s, "other_name", a.id);
	alias_is(f->s, "APP-KEY", NULL); /* case sensitive */
	alias_is(f->s, "nobody", NULL);

	/* another key with an alias in use: refused, and not inserted */
	alias_row(&b, 2, "fresh", "app-key");
	assert_int_equal(ky_store_key_insert(f->s, &b), KY_ERR_KEY_ALIAS_EXISTS);
	assert_int_equal(ky_store_key_get(f->s, b.id, &got), KY_ERR_NOT_FOUND);
	alias_is(f->s, "fresh", NULL);
	b.aliases[1] = "APP-KEY";
	assert_int_equal(ky_store_key_insert(f->s, &b), 0);
	alias_is(f->s, "APP-KEY", b.id);
	alias_is(f->s, "fresh", b.id);

	/* an update replaces the key's aliases */
	a.aliases[0] = "other_name";
	a.aliases[1] = "third";
	assert_int_equal(ky_store_key_update(f->s, &a), 0);
	alias_is(f->s, "app-key", NULL);
	alias_is(f->s, "other_name", a.id);
	alias_is(f->s, "third", a.id);
	/* taking another key's alias: refused, nothing changed */
	rev = b.rev;
	b.aliases[1] = "third";
	assert_int_equal(ky_store_key_update(f->s, &b), KY_ERR_KEY_ALIAS_EXISTS);
	assert_int_equal(ky_store_key_get(f->s, b.id, &got), 0);
	assert_int_equal(got.rev, rev);
	ky_store_row_release(&got);
	alias_is(f->s, "APP-KEY", b.id);
	/* the alias freed by the update can be taken */
	b.aliases[1] = "app-key";
	assert_int_equal(ky_store_key_update(f->s, &b), 0);
	alias_is(f->s, "app-key", b.id);
	alias_is(f->s, "APP-KEY", NULL);

	/* a purge drops the key's aliases */
	assert_int_equal(ky_store_key_delete(f->s, a.id, a.rev), 0);
	alias_is(f->s, "other_name", NULL);
	alias_is(f->s, "third", NULL);
	b.aliases[0] = "third";
	assert_int_equal(ky_store_key_update(f->s, &b), 0);
	alias_is(f->s, "third", b.id);
	alias_is(f->s, "fresh", NULL);

	/* what the store refuses before asking the backend */
	b.naliases = KY_KEY_ALIASES_MAX + 1;
	assert_int_equal(ky_store_key_update(f->s, &b), KY_ERR_USAGE);
	b.naliases = 1;
	b.aliases[0] = "";
	assert_int_equal(ky_store_key_update(f->s, &b), KY_ERR_USAGE);
	alias_is(f->s, "", NULL);
	ky_store_row_release(&a);
	ky_store_row_release(&b);
}

/* A store of schema version 1 (no alias index) opens, becomes version 2, and takes aliases;
 * a version it does not know is still refused. */
static void test_key_aliases_upgrade(void **state)
{
	struct fx *f = *state;
	struct ky_store *s = NULL;
	struct ky_store_row a;

	insert_n(f->s, 0, 2, vp_a);
	ky_store_close(f->s);
	f->s = NULL;
	sql(f->path, "DROP TABLE key_aliases; UPDATE meta SET v = '1' WHERE k = 'schema'");
	assert_int_equal(ky_store_open(f->uri, NULL, &s), 0);
	f->s = s;
	alias_row(&a, 5, "after-upgrade", NULL);
	assert_int_equal(ky_store_key_insert(f->s, &a), 0);
	alias_is(f->s, "after-upgrade", a.id);
	ky_store_row_release(&a);
	ky_store_close(f->s);
	f->s = NULL;
	/* it is version 2 now: without that row the store is refused */
	sql(f->path, "DELETE FROM meta WHERE k = 'schema' AND v = '2'");
	assert_int_equal(ky_store_open(f->uri, NULL, &s), KY_ERR_STORE_SCHEMA);
	sql(f->path, "INSERT INTO meta VALUES ('schema', '2')");
	assert_int_equal(ky_store_open(f->uri, NULL, &s), 0);
	f->s = s;
	alias_is(f->s, "after-upgrade", a.id);
}

static void test_transactions(void **state)
{
	struct fx *f = *state;
	struct ky_store_row row, got;

	assert_int_equal(ky_store_commit(f->s), KY_ERR_USAGE);
	assert_int_equal(ky_store_rollback(f->s), 0);
	assert_int_equal(ky_store_begin(f->s), 0);
	assert_int_equal(ky_store_begin(f->s), KY_ERR_USAGE);
	insert_n(f->s, 0, 2, vp_a);
	assert_int_equal(ky_store_rollback(f->s), 0);
	row_make(&row, 0, 1, 0, vp_a);
	assert_int_equal(ky_store_key_get(f->s, row.id, &got), KY_ERR_NOT_FOUND);
	assert_int_equal(ky_store_begin(f->s), 0);
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	assert_int_equal(ky_store_commit(f->s), 0);
	assert_int_equal(ky_store_key_get(f->s, row.id, &got), 0);
	ky_store_row_release(&got);
	ky_store_row_release(&row);
}

static void test_busy_other_writer(void **state)
{
	struct fx *f = *state;
	struct ky_store *s2 = NULL;
	struct ky_store_opts o = {.busy_timeout_ms = 50};
	sqlite3 *db = NULL;
	struct ky_store_row row;

	/* another "process" holds the write lock longer than our busy timeout */
	assert_int_equal(ky_store_open(f->uri, &o, &s2), 0);
	if (f->pg) {
		PGconn *other = PQconnectdb(f->path);
		PGresult *res;
		assert_int_equal(PQstatus(other), CONNECTION_OK);
		res = PQexec(other, "BEGIN; SELECT pg_advisory_xact_lock(1803120491, "
		                    "hashtext(current_schema()))");
		assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
		PQclear(res);
		row_make(&row, 1, 1, 0, vp_a);
		assert_int_equal(ky_store_key_insert(s2, &row), KY_ERR_STORE_BUSY);
		PQclear(PQexec(other, "COMMIT"));
		PQfinish(other);
		assert_int_equal(ky_store_key_insert(s2, &row), 0);
		ky_store_row_release(&row);
		ky_store_close(s2);
		return;
	}
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	row_make(&row, 1, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(s2, &row), KY_ERR_STORE_BUSY);
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(ky_store_key_insert(s2, &row), 0);
	ky_store_row_release(&row);
	ky_store_close(s2);
}

static void test_plan_uses_index(void **state)
{
	struct fx *f = *state;
	char plan[1024];

	insert_n(f->s, 0, 50, vp_a);
	if (f->pg) {
		/* PostgreSQL's EXPLAIN: an index scan on the index named, never a Seq Scan */
		assert_int_equal(ky_store_plan(f->s, KY_STORE_PLAN_GET, plan, sizeof(plan)), 0);
		fprintf(stderr, "plan: %s\n", plan);
		assert_non_null(strstr(plan, "Index Scan using keys_pkey"));
		assert_null(strstr(plan, "Seq Scan on keys"));
		assert_int_equal(ky_store_plan(f->s, KY_STORE_PLAN_VP_FETCH, plan, sizeof(plan)),
		                 0);
		fprintf(stderr, "plan: %s\n", plan);
		assert_non_null(strstr(plan, "keys_vp"));
		assert_null(strstr(plan, "Seq Scan on keys"));
		assert_int_equal(ky_store_plan(f->s, KY_STORE_PLAN_APIKEY, plan, sizeof(plan)), 0);
		fprintf(stderr, "plan: %s\n", plan);
		assert_non_null(strstr(plan, "api_keys_hash_key"));
		assert_null(strstr(plan, "Seq Scan on api_keys"));
		assert_int_equal(ky_store_plan(f->s, KY_STORE_PLAN_STATE_COUNT, plan, sizeof(plan)),
		                 0);
		fprintf(stderr, "plan: %s\n", plan);
		assert_non_null(strstr(plan, "keys_expiring"));
		assert_null(strstr(plan, "Seq Scan on keys"));
		assert_int_equal(ky_store_plan(f->s, KY_STORE_PLAN_GET, plan, 4), KY_ERR_TOO_LARGE);
		return;
	}
	assert_int_equal(ky_store_plan(f->s, KY_STORE_PLAN_GET, plan, sizeof(plan)), 0);
	/* Lookups read one constant row (the digest's generation comes with every answer): no
	 * table may be scanned. */
	assert_true(strstr(plan, "USING PRIMARY KEY") != NULL || strstr(plan, "USING INDEX"));
	assert_null(strstr(plan, "SCAN keys"));
	assert_int_equal(ky_store_plan(f->s, KY_STORE_PLAN_VP_FETCH, plan, sizeof(plan)), 0);
	assert_non_null(strstr(plan, "keys_vp"));
	assert_null(strstr(plan, "SCAN keys"));
	assert_int_equal(ky_store_plan(f->s, KY_STORE_PLAN_APIKEY, plan, sizeof(plan)), 0);
	assert_true(strstr(plan, "USING INDEX") != NULL || strstr(plan, "PRIMARY KEY"));
	assert_null(strstr(plan, "SCAN api_keys"));
	/* a count by states as of a date: the counters, and the expired Active keys from the
	 * partial index alone */
	assert_int_equal(ky_store_plan(f->s, KY_STORE_PLAN_STATE_COUNT, plan, sizeof(plan)), 0);
	fprintf(stderr, "plan: %s\n", plan);
	assert_non_null(strstr(plan, "COVERING INDEX keys_expiring"));
	assert_null(strstr(plan, "SCAN keys"));
	assert_null(strstr(plan, "SCAN counters"));
	/* too small an output buffer */
	assert_int_equal(ky_store_plan(f->s, KY_STORE_PLAN_GET, plan, 4), KY_ERR_TOO_LARGE);
}

static void test_tampered_columns_refused(void **state)
{
	struct fx *f = *state;
	struct ky_store_row row, got;

	row_make(&row, 1, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	/* a vp of the wrong size cannot be a record of ours */
	sql(f->path, "UPDATE keys SET vp = x'00'");
	assert_int_equal(ky_store_key_get(f->s, row.id, &got), KY_ERR_RECORD_TAMPERED);
	assert_null(got.blob);
	sql(f->path, "UPDATE keys SET vp = zeroblob(32), blob = x''");
	assert_int_equal(ky_store_key_get(f->s, row.id, &got), KY_ERR_RECORD_TAMPERED);
	ky_store_row_release(&row);
}

/* ---- re-encipherment support ---- */

static void test_vp_count_fetch_swap(void **state)
{
	struct fx *f = *state;
	struct ky_store_vprow *rows = NULL;
	struct ky_store_row got;
	size_t n = 0, swapped = 0;
	uint64_t cnt = 0;

	insert_n(f->s, 0, 10, vp_a);
	insert_n(f->s, 10, 3, vp_b);
	assert_int_equal(ky_store_vp_count(f->s, KY_STORE_KEYS, vp_a, &cnt), 0);
	assert_int_equal(cnt, 10);
	assert_int_equal(ky_store_vp_fetch(f->s, KY_STORE_KEYS, vp_a, NULL, 4, &rows, &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(rows[0].seq, 1);
	assert_int_equal(rows[3].seq, 4);
	assert_int_equal(rows[0].version, 1);
	assert_string_equal(rows[0].name, "00000000-0000-4000-8000-000000000000");
	char after[KY_SECRET_NAME_MAX + 1];
	strcpy(after, rows[3].name);
	ky_store_vprows_free(rows, n);
	assert_int_equal(ky_store_vp_fetch(f->s, KY_STORE_KEYS, vp_a, after, 100, &rows, &n), 0);
	assert_int_equal(n, 6);
	assert_int_equal(rows[0].seq, 5);

	/* a concurrent writer updates row 5 between fetch and swap: its update must survive */
	assert_int_equal(ky_store_key_get(f->s, rows[0].name, &got), 0);
	got.state = 2;
	memset(got.blob, 0x77, got.bloblen);
	assert_int_equal(ky_store_key_update(f->s, &got), 0);
	ky_store_row_release(&got);

	for (size_t i = 0; i < n; i++)
		memset(rows[i].blob, 0xee, rows[i].bloblen);
	assert_int_equal(ky_store_vp_swap(f->s, KY_STORE_KEYS, vp_a, vp_b, rows, n, &swapped), 0);
	assert_int_equal(swapped, 5);
	assert_int_equal(ky_store_key_get(f->s, rows[0].name, &got), 0);
	assert_int_equal(got.state, 2);
	assert_int_equal(got.blob[0], 0x77);
	assert_memory_equal(got.vp, vp_a, KY_VP_LEN);
	ky_store_row_release(&got);
	assert_int_equal(ky_store_key_get(f->s, rows[1].name, &got), 0);
	assert_int_equal(got.blob[0], 0xee);
	assert_memory_equal(got.vp, vp_b, KY_VP_LEN);
	assert_int_equal(got.rev, 2);
	ky_store_row_release(&got);
	/* the same batch again: every row has moved on, nothing is swapped */
	assert_int_equal(ky_store_vp_swap(f->s, KY_STORE_KEYS, vp_a, vp_b, rows, n, &swapped), 0);
	assert_int_equal(swapped, 0);
	ky_store_vprows_free(rows, n);

	assert_int_equal(ky_store_vp_count(f->s, KY_STORE_KEYS, vp_a, &cnt), 0);
	assert_int_equal(cnt, 5);
	assert_int_equal(ky_store_vp_count(f->s, KY_STORE_KEYS, vp_b, &cnt), 0);
	assert_int_equal(cnt, 8);
	assert_int_equal(ky_store_vp_fetch(f->s, KY_STORE_KEYS, vp_a, "", 0, &rows, &n),
	                 KY_ERR_USAGE);
}

/* ---- secrets ---- */

static void test_secrets(void **state)
{
	struct fx *f = *state;
	struct ky_store_secret s = {0}, got;
	uint8_t blob[48];
	uint64_t cnt = 0;
	struct ky_store_vprow *rows = NULL;
	size_t n = 0, swapped = 0;

	memset(blob, 0x42, sizeof(blob));
	strcpy(s.name, "token-signing-key");
	s.created = s.updated = 100;
	memcpy(s.vp, vp_a, KY_VP_LEN);
	s.blob = blob;
	s.bloblen = sizeof(blob);
	assert_int_equal(ky_store_secret_put(f->s, &s, 0), 0);
	assert_int_equal(s.rev, 1);
	assert_int_equal(ky_store_secret_put(f->s, &s, 0), KY_ERR_EXISTS);
	assert_int_equal(ky_store_secret_get(f->s, "token-signing-key", &got), 0);
	assert_int_equal(got.bloblen, sizeof(blob));
	assert_memory_equal(got.blob, blob, sizeof(blob));
	assert_int_equal(got.created, 100);
	ky_store_secret_release(&got);
	s.updated = 200;
	assert_int_equal(ky_store_secret_put(f->s, &s, 1), 0);
	assert_int_equal(s.rev, 2);
	assert_int_equal(ky_store_secret_put(f->s, &s, 1), KY_ERR_CONFLICT);
	assert_int_equal(ky_store_secret_get(f->s, "nope", &got), KY_ERR_NOT_FOUND);
	assert_int_equal(ky_store_secret_put(f->s, &s, -1), KY_ERR_USAGE);

	assert_int_equal(ky_store_vp_count(f->s, KY_STORE_SECRETS, vp_a, &cnt), 0);
	assert_int_equal(cnt, 1);
	assert_int_equal(ky_store_vp_fetch(f->s, KY_STORE_SECRETS, vp_a, "", 10, &rows, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(rows[0].name, "token-signing-key");
	assert_int_equal(rows[0].version, 0);
	assert_int_equal(ky_store_vp_swap(f->s, KY_STORE_SECRETS, vp_a, vp_b, rows, n, &swapped),
	                 0);
	assert_int_equal(swapped, 1);
	ky_store_vprows_free(rows, n);
	assert_int_equal(ky_store_vp_count(f->s, KY_STORE_SECRETS, vp_b, &cnt), 0);
	assert_int_equal(cnt, 1);

	assert_int_equal(ky_store_secret_delete(f->s, "token-signing-key"), 0);
	assert_int_equal(ky_store_secret_delete(f->s, "token-signing-key"), KY_ERR_NOT_FOUND);
	s.name[0] = '\0';
	assert_int_equal(ky_store_secret_put(f->s, &s, 0), KY_ERR_USAGE);
}

/* ---- change detection ---- */

struct changed_arg {
	struct ky_store *s;
	int r, changed;
};

/* cmocka's asserts belong to the main thread: the result is checked there. */
static void *changed_thread(void *p)
{
	struct changed_arg *a = p;

	a->r = ky_store_changed(a->s, &a->changed);
	return NULL;
}

/* ---- storage digest ---- */

static const uint8_t lkey[KY_STORE_LEDGER_KEY_LEN] = {7, 7, 7, 1};

static struct ky_store *ledger_open(struct fx *f, const struct ky_store_ledger_pos *floor,
                                    int adopt, int want)
{
	struct ky_store *s = NULL;
	struct ky_store_ledger_pos pos;

	assert_int_equal(ky_store_open(f->uri, NULL, &s), 0);
	assert_int_equal(ky_store_ledger_attach(s, lkey, floor, adopt, &pos), want);
	return s;
}

static void ledger_attach(struct ky_store *s, struct ky_store_ledger_pos *pos)
{
	assert_int_equal(ky_store_ledger_attach(s, lkey, NULL, 0, pos), 0);
}

static int key_get_r(struct ky_store *s, int i)
{
	struct ky_store_row row, got;
	int r;

	row_make(&row, i, 1, 0, vp_a);
	r = ky_store_key_get(s, row.id, &got);
	if (r == 0) {
		r = got.stale ? KY_ERR_RECORD_STALE : 0; /* the row comes back, flagged */
		ky_store_row_release(&got);
	}
	ky_store_row_release(&row);
	return r;
}

static void key_bump(struct ky_store *s, int i)
{
	struct ky_store_row row, got;

	row_make(&row, i, 1, 0, vp_a);
	assert_int_equal(ky_store_key_get(s, row.id, &got), 0);
	got.updated++;
	assert_int_equal(ky_store_key_update(s, &got), 0);
	ky_store_row_release(&got);
	ky_store_row_release(&row);
}

/* A key row copied, changed through the store, the copy written back by hand: refused; a row
 * deleted by hand, a row copied under another id: refused; the others are served. */
static void test_ledger_record_rollback(void **state)
{
	struct fx *f = *state;
	struct ky_store_ledger_pos pos;
	struct ky_store_row *rows = NULL;
	size_t n = 0;

	ledger_attach(f->s, &pos);
	assert_int_equal(pos.gen, 1);
	insert_n(f->s, 0, 4, vp_a);
	sql(f->path, "CREATE TABLE old AS SELECT * FROM keys WHERE name = 'key-1'");
	key_bump(f->s, 1);
	assert_int_equal(key_get_r(f->s, 1), 0);
	sql(f->path, "DELETE FROM keys WHERE name = 'key-1'; INSERT INTO keys SELECT * FROM old");
	assert_int_equal(key_get_r(f->s, 1), KY_ERR_RECORD_STALE);
	assert_int_equal(ky_store_key_list(f->s, NULL, 0, 0, &rows, &n), 0);
	assert_int_equal(n, 4);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(rows[i].stale, strcmp(rows[i].name, "key-1") == 0);
	ky_store_rows_free(rows, n);
	assert_int_equal(key_get_r(f->s, 0), 0);
	/* the same row with the current rev but the old content: still refused */
	sql(f->path, "UPDATE keys SET rev = rev + 1 WHERE name = 'key-1'");
	assert_int_equal(key_get_r(f->s, 1), KY_ERR_RECORD_STALE);
	sql(f->path, "DELETE FROM keys WHERE name = 'key-2'");
	assert_int_equal(key_get_r(f->s, 2), KY_ERR_RECORD_MISSING);
	sql(f->path, "INSERT INTO keys SELECT '00000009-0000-4000-8000-000000000009', 99, rev, "
	             "name, state, extractable, created, updated, deleted, version, vp, blob, "
	             "expires FROM keys WHERE name = 'key-3'");
	assert_int_equal(key_get_r(f->s, 9), KY_ERR_RECORD_STALE);
	assert_int_equal(key_get_r(f->s, 3), 0);
	/* a new handle finds that the records do not add up to the digest */
	{
		struct ky_store *s2 = ledger_open(f, NULL, 0, KY_ERR_LEDGER_MISMATCH);
		ky_store_close(s2);
	}
}

/* Another handle (another unit) writes: this one follows through the generation. */
static void test_ledger_two_handles(void **state)
{
	struct fx *f = *state;
	struct ky_store_ledger_pos pos, pos2;
	struct ky_store *s2;
	struct ky_store_row *rows = NULL;
	size_t n = 0;

	ledger_attach(f->s, &pos);
	insert_n(f->s, 0, 3, vp_a);
	s2 = ledger_open(f, NULL, 0, 0);
	assert_int_equal(key_get_r(s2, 2), 0);
	insert_n(s2, 3, 2, vp_a);
	key_bump(s2, 0);
	assert_int_equal(key_get_r(f->s, 4), 0);
	assert_int_equal(key_get_r(f->s, 0), 0);
	key_bump(f->s, 0);
	assert_int_equal(key_get_r(s2, 0), 0);
	assert_int_equal(ky_store_key_list(s2, NULL, 0, 0, &rows, &n), 0);
	assert_int_equal(n, 5);
	ky_store_rows_free(rows, n);
	assert_int_equal(ky_store_ledger_pos(f->s, &pos), 0);
	assert_int_equal(ky_store_ledger_pos(s2, &pos2), 0);
	assert_true(pos.gen == pos2.gen && pos.gen > 5);
	/* a row written by one handle and rolled back before the other one looked: the other
	 * learns the tag it was written with from the log, and finds the row stale */
	sql(f->path, "CREATE TABLE old AS SELECT * FROM keys WHERE name = 'key-1'");
	key_bump(s2, 1);
	sql(f->path, "DELETE FROM keys WHERE name = 'key-1'; INSERT INTO keys SELECT * FROM old");
	assert_int_equal(key_get_r(f->s, 1), KY_ERR_RECORD_STALE);
	assert_int_equal(key_get_r(f->s, 2), 0);
	assert_int_equal(key_get_r(s2, 1), KY_ERR_RECORD_STALE);
	/* the log altered: the tags do not add up, every record is read and found wanting */
	key_bump(s2, 2);
	sql(f->path, "UPDATE ledger_log SET tag = zeroblob(32) WHERE tag IS NOT NULL");
	assert_int_equal(key_get_r(f->s, 2), KY_ERR_LEDGER_MISMATCH);
	ky_store_close(s2);
}

/* Secrets and API keys are in the digest too, but for the integrity key's own row. */
static void test_ledger_secrets_apikeys(void **state)
{
	struct fx *f = *state;
	struct ky_store_ledger_pos pos;
	struct ky_store_secret sec = {0}, got = {0};
	struct ky_store_apikey k = {0}, ak;
	uint8_t blob[8] = {1, 2, 3};

	ledger_attach(f->s, &pos);
	snprintf(sec.name, sizeof(sec.name), "policies");
	memcpy(sec.vp, vp_a, KY_VP_LEN);
	sec.blob = blob;
	sec.bloblen = sizeof(blob);
	assert_int_equal(ky_store_secret_put(f->s, &sec, 0), 0);
	snprintf(sec.name, sizeof(sec.name), "%s", KY_STORE_LEDGER_SECRET);
	assert_int_equal(ky_store_secret_put(f->s, &sec, 0), 0);
	snprintf(k.id, sizeof(k.id), "ak-1");
	snprintf(k.role, sizeof(k.role), "Writer");
	k.hash[0] = 1;
	k.created = 5;
	assert_int_equal(ky_store_apikey_insert(f->s, &k), 0);
	sql(f->path, "CREATE TABLE olds AS SELECT * FROM secrets; "
	             "CREATE TABLE olda AS SELECT * FROM api_keys");
	k.revoked = 9;
	k.has_mac = true;
	k.mac[0] = 1;
	assert_int_equal(ky_store_apikey_update(f->s, &k, NULL), 0);
	sec.updated = 3;
	snprintf(sec.name, sizeof(sec.name), "policies");
	assert_int_equal(ky_store_secret_put(f->s, &sec, 1), 0);
	sql(f->path, "DELETE FROM api_keys; INSERT INTO api_keys SELECT * FROM olda;"
	             "DELETE FROM secrets; INSERT INTO secrets SELECT * FROM olds");
	assert_int_equal(ky_store_apikey_get(f->s, "ak-1", &ak), 0);
	assert_true(ak.stale && ak.revoked == 0);
	assert_int_equal(ky_store_apikey_find(f->s, k.hash, &ak), 0);
	assert_true(ak.stale);
	assert_int_equal(ky_store_secret_get(f->s, "policies", &got), 0);
	assert_true(got.stale);
	ky_store_secret_release(&got);
	assert_int_equal(ky_store_secret_get(f->s, KY_STORE_LEDGER_SECRET, &got), 0);
	assert_false(got.stale);
	ky_store_secret_release(&got);
	/* written anew through the store: current again */
	k.revoked = 11;
	assert_int_equal(ky_store_apikey_update(f->s, &k, NULL), 0);
	assert_int_equal(ky_store_apikey_get(f->s, "ak-1", &ak), 0);
	assert_false(ak.stale);
	sql(f->path, "DELETE FROM api_keys");
	assert_int_equal(ky_store_apikey_get(f->s, "ak-1", &ak), KY_ERR_RECORD_MISSING);
}

/* PostgreSQL: the storage's tables copied to bk_<table> in its schema and back. */
static const char *const pg_tables[] = {"keys",   "secrets", "api_keys",   "requests",
                                        "ledger", "meta",    "ledger_log", "counters"};

static void store_copy(const char *from, const char *to)
{
	sqlite3 *a = NULL, *b = NULL;
	sqlite3_backup *bk;
	char q[256];

	if (tfx_is_pg(from) || tfx_is_pg(to)) {
		for (size_t i = 0; i < sizeof(pg_tables) / sizeof(pg_tables[0]); i++) {
			if (tfx_is_pg(from))
				snprintf(
				    q, sizeof(q),
				    "DROP TABLE IF EXISTS bk_%s; CREATE TABLE bk_%s AS SELECT * "
				    "FROM %s",
				    pg_tables[i], pg_tables[i], pg_tables[i]);
			else
				snprintf(q, sizeof(q),
				         "DELETE FROM %s; INSERT INTO %s SELECT * FROM bk_%s",
				         pg_tables[i], pg_tables[i], pg_tables[i]);
			tfx_sql(tfx_is_pg(from) ? from : to, q);
		}
		return;
	}

	assert_int_equal(sqlite3_open(from, &a), SQLITE_OK);
	assert_int_equal(sqlite3_open(to, &b), SQLITE_OK);
	sqlite3_busy_timeout(b, 5000);
	assert_non_null(bk = sqlite3_backup_init(b, "main", a, "main"));
	assert_int_equal(sqlite3_backup_step(bk, -1), SQLITE_DONE);
	assert_int_equal(sqlite3_backup_finish(bk), SQLITE_OK);
	sqlite3_close(a);
	sqlite3_close(b);
}

/* The whole storage replaced by an older copy of itself: refused by the handle that saw it
 * newer, and by a new handle given the position seen before, until adopted; a handle that did
 * not adopt refuses the new epoch. */
static void test_ledger_whole_rollback(void **state)
{
	struct fx *f = *state;
	struct ky_store_ledger_pos pos, seen, now;
	struct ky_store *s2, *s3;
	char copy[192];

	snprintf(copy, sizeof(copy), "%s/old.db", f->dir);
	ledger_attach(f->s, &pos);
	insert_n(f->s, 0, 3, vp_a);
	store_copy(f->path, copy);
	insert_n(f->s, 3, 2, vp_a);
	key_bump(f->s, 0);
	assert_int_equal(ky_store_ledger_pos(f->s, &seen), 0);
	store_copy(copy, f->path);
	assert_int_equal(key_get_r(f->s, 1), KY_ERR_STORAGE_ROLLBACK);
	insert_n(f->s, 3, 0, vp_a);
	s2 = ledger_open(f, &seen, 0, KY_ERR_STORAGE_ROLLBACK);
	ky_store_close(s2);
	s2 = ledger_open(f, &seen, 1, 0);
	assert_int_equal(ky_store_ledger_pos(s2, &now), 0);
	assert_true(now.gen > seen.gen && now.epoch == seen.epoch + 1);
	assert_int_equal(key_get_r(s2, 1), 0);
	assert_int_equal(key_get_r(s2, 4), KY_ERR_NOT_FOUND);
	insert_n(s2, 10, 1, vp_a);
	/* the first handle never adopted it */
	assert_int_equal(key_get_r(f->s, 1), KY_ERR_STORAGE_ROLLBACK);
	s3 = ledger_open(f, &seen, 0, KY_ERR_STORAGE_ROLLBACK);
	ky_store_close(s3);
	s3 = ledger_open(f, &now, 0, 0);
	assert_int_equal(key_get_r(s3, 10), 0);
	ky_store_close(s3);
	/* the first handle accepts too: it joins the epoch, and the second one reads on */
	assert_int_equal(ky_store_ledger_attach(f->s, lkey, &seen, 1, &pos), 0);
	assert_int_equal(pos.epoch, now.epoch);
	assert_int_equal(key_get_r(f->s, 10), 0);
	assert_int_equal(key_get_r(s2, 10), 0);
	ky_store_close(s2);
	unlink(copy);
}

/* The digest row changed by hand, or gone; a handle that does not hold the key may not
 * write; storage missing or empty is never made anew when it must exist. */
static void test_ledger_digest_refusals(void **state)
{
	struct fx *f = *state;
	struct ky_store_ledger_pos pos;
	struct ky_store *s2 = NULL;
	struct ky_store_opts must = {.must_exist = 1};
	struct ky_store_row row;
	FILE *fp;

	ledger_attach(f->s, &pos);
	insert_n(f->s, 0, 2, vp_a);
	assert_int_equal(ky_store_open(f->uri, NULL, &s2), 0);
	row_make(&row, 5, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(s2, &row), KY_ERR_LEDGER_KEY);
	ky_store_row_release(&row);
	assert_int_equal(key_get_r(s2, 0), 0); /* not attached: not checked */
	ky_store_close(s2);
	sql(f->path, "UPDATE ledger SET gen = gen + 5");
	assert_int_equal(key_get_r(f->s, 0), KY_ERR_LEDGER_TAMPERED);
	sql(f->path, "UPDATE ledger SET gen = gen - 5");
	assert_int_equal(key_get_r(f->s, 0), 0);
	sql(f->path, "DELETE FROM ledger");
	assert_int_equal(key_get_r(f->s, 0), KY_ERR_STORAGE_MISSING);
	assert_int_equal(key_get_r(f->s, 7), KY_ERR_STORAGE_MISSING);
	s2 = ledger_open(f, &pos, 0, KY_ERR_STORAGE_MISSING);
	ky_store_close(s2);
	/* the file gone, or empty */
	ky_store_close(f->s);
	f->s = NULL;
	if (f->pg) { /* the schema emptied */
		char q[256];
		snprintf(q, sizeof(q), "DROP SCHEMA %s CASCADE; CREATE SCHEMA %s", f->schema,
		         f->schema);
		tfx_sql(f->path, q);
		assert_int_equal(ky_store_open(f->uri, &must, &s2), KY_ERR_STORAGE_MISSING);
		assert_int_equal(ky_store_open(f->uri, NULL, &f->s), 0);
		return;
	}
	unlink(f->path);
	assert_int_equal(ky_store_open(f->uri, &must, &s2), KY_ERR_STORAGE_MISSING);
	assert_int_equal(access(f->path, F_OK), -1);
	assert_non_null(fp = fopen(f->path, "w"));
	fclose(fp);
	assert_int_equal(ky_store_open(f->uri, &must, &s2), KY_ERR_STORAGE_MISSING);
	assert_int_equal(ky_store_open(f->uri, NULL, &f->s), 0);
}

/* Re-encipherment swaps keep the digest whole. */
static void test_ledger_vp_swap(void **state)
{
	struct fx *f = *state;
	struct ky_store_ledger_pos pos;
	struct ky_store_vprow *rows = NULL;
	size_t n = 0, swapped = 0;
	struct ky_store *s2;

	ledger_attach(f->s, &pos);
	insert_n(f->s, 0, 6, vp_a);
	assert_int_equal(ky_store_vp_fetch(f->s, KY_STORE_KEYS, vp_a, NULL, 4, &rows, &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(ky_store_vp_swap(f->s, KY_STORE_KEYS, vp_a, vp_b, rows, n, &swapped), 0);
	assert_int_equal(swapped, 4);
	ky_store_vprows_free(rows, n);
	s2 = ledger_open(f, &pos, 0, 0);
	assert_int_equal(key_get_r(s2, 1), 0);
	ky_store_close(s2);
	sql(f->path, "UPDATE keys SET blob = x'00' WHERE name = 'key-5'");
	assert_int_equal(ky_store_vp_fetch(f->s, KY_STORE_KEYS, vp_a, NULL, 4, &rows, &n),
	                 KY_ERR_RECORD_STALE);
}

/* The call after one that reported a change through another handle's commit says 0. On
 * SQLite it may say 1 once more: the report came from the commit counter and left
 * data_version unread, and a call SQ_DV_INTERVAL_MS (250 ms) or more after the last read of
 * it (a stall: an fsync, a busy machine) reads it, finds it moved, and reports the same
 * change again. That read brings it up to date: the call after it says 0. */
static void assert_change_seen(struct fx *f, struct ky_store *s)
{
	int changed = -1;

	assert_int_equal(ky_store_changed(s, &changed), 0);
	if (!f->pg && changed == 1)
		assert_int_equal(ky_store_changed(s, &changed), 0);
	assert_int_equal(changed, 0);
}

static void test_changed(void **state)
{
	struct fx *f = *state;
	struct ky_store *other = NULL;
	struct ky_store_secret sec = {0};
	uint8_t blob[40] = {1};
	int changed = 0;
	pthread_t t;
	struct changed_arg a = {.s = f->s};

	/* First call on a connection: changed (nothing is known yet). */
	assert_int_equal(ky_store_changed(f->s, &changed), 0);
	assert_int_equal(changed, 1);
	assert_int_equal(ky_store_changed(f->s, &changed), 0);
	assert_int_equal(changed, 0);
	strcpy(sec.name, "s1");
	memcpy(sec.vp, vp_a, KY_VP_LEN);
	sec.blob = blob;
	sec.bloblen = sizeof(blob);
	assert_int_equal(ky_store_secret_put(f->s, &sec, 0), 0);
	assert_int_equal(ky_store_changed(f->s, &changed), 0);
	assert_int_equal(ky_store_changed(f->s, &changed), 0);
	assert_int_equal(changed, 0);
	/* Another process's (another handle's) commit is reported on the next call. */
	assert_int_equal(ky_store_open(f->uri, NULL, &other), 0);
	strcpy(sec.name, "s2");
	assert_int_equal(ky_store_secret_put(other, &sec, 0), 0);
	assert_int_equal(ky_store_changed(f->s, &changed), 0);
	assert_int_equal(changed, 1);
	assert_change_seen(f, f->s);
	ky_store_close(other);
	/* A write by another program (no commit counter) within the safety-net interval. */
	sql(f->path, "UPDATE secrets SET updated = 99 WHERE name = 's1'");
	usleep(300 * 1000);
	assert_int_equal(ky_store_changed(f->s, &changed), 0);
	assert_int_equal(changed, 1);
	/* A new thread's first call says changed. */
	assert_int_equal(pthread_create(&t, NULL, changed_thread, &a), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(a.r, 0);
	assert_int_equal(a.changed, 1);
}

/* SQLite: a group commit only inserts key rows that did not exist, so the handle's own threads
 * are not told of it (no cache can hold a record before it exists). They are told of every
 * other write of the handle, and of another handle's group commit, alone or between two of
 * the handle's own. The safety net's interval is long here: only the counter tells. */
static void quiet_insert(struct ky_store *s, int i)
{
	struct ky_store_row row;

	row_make(&row, i, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(s, &row), 0);
	ky_store_row_release(&row);
}

static void changed_is(struct ky_store *s, int want)
{
	int changed = -1;

	assert_int_equal(ky_store_changed(s, &changed), 0);
	assert_int_equal(changed, want);
}

static void test_changed_quiet_inserts(void **state)
{
	struct fx *f = *state;
	struct ky_store_opts o = {.data_version_ms = 600 * 1000};
	struct ky_store *s = NULL, *other = NULL;
	struct ky_store_row row, got;

	TFX_SQLITE_ONLY(f);
	assert_int_equal(ky_store_open(f->uri, &o, &s), 0);
	assert_int_equal(ky_store_open(f->uri, &o, &other), 0);
	changed_is(s, 1); /* the thread's first call */
	changed_is(s, 0);
	for (int i = 100; i < 103; i++)
		quiet_insert(s, i);
	changed_is(s, 0);
	/* another handle's group commit */
	quiet_insert(other, 110);
	changed_is(s, 1);
	changed_is(s, 0);
	/* ... between two of this handle's */
	quiet_insert(s, 111);
	quiet_insert(other, 112);
	quiet_insert(s, 113);
	changed_is(s, 1);
	changed_is(s, 0);
	/* an update of a key row */
	row_make(&row, 100, 1, 0, vp_a);
	assert_int_equal(ky_store_key_get(s, row.id, &got), 0);
	ky_store_row_release(&row);
	got.state = 2;
	assert_int_equal(ky_store_key_update(s, &got), 0);
	ky_store_row_release(&got);
	changed_is(s, 1);
	changed_is(s, 0);
	/* an insert in the caller's own transaction, not the group commit's */
	assert_int_equal(ky_store_begin(s), 0);
	quiet_insert(s, 120);
	assert_int_equal(ky_store_commit(s), 0);
	changed_is(s, 1);
	/* a group commit whose row was refused (the id exists) still wrote nothing else */
	row_make(&row, 120, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(s, &row), KY_ERR_EXISTS);
	ky_store_row_release(&row);
	changed_is(s, 0);
	/* a key with an alias: its index row goes with it */
	row_make(&row, 121, 1, 0, vp_a);
	row.aliases[0] = "quiet-alias";
	row.naliases = 1;
	assert_int_equal(ky_store_key_insert(s, &row), 0);
	ky_store_row_release(&row);
	changed_is(s, 0);
	ky_store_close(other);
	ky_store_close(s);
}

/* SQLite: once KY_STORE_QUIET_ROWS rows were inserted quietly since the handle last read the
 * change log, its group commits are told again, so that the log read next can still tell
 * what changed; reading the log starts the count again. */
static void test_changed_quiet_rows(void **state)
{
	struct fx *f = *state;
	struct ky_store_opts o = {.data_version_ms = 600 * 1000};
	struct ky_store *s = NULL;
	struct ky_store_change_pos pos = {0};
	struct ky_store_change *v = NULL;
	size_t n = 0;
	int all = 1;

	TFX_SQLITE_ONLY(f);
	assert_int_equal(ky_store_open(f->uri, &o, &s), 0);
	changed_is(s, 1);
	for (int i = 0; i < KY_STORE_QUIET_ROWS; i++)
		quiet_insert(s, 1000 + i);
	changed_is(s, 0);
	quiet_insert(s, 1000 + KY_STORE_QUIET_ROWS);
	changed_is(s, 1);
	assert_int_equal(ky_store_changes(s, &pos, &v, &n, &all), 0);
	assert_int_equal(all, 0);
	assert_int_equal(n, KY_STORE_QUIET_ROWS + 1);
	free(v);
	quiet_insert(s, 1001 + KY_STORE_QUIET_ROWS);
	changed_is(s, 0);
	ky_store_close(s);
}

/* SQLite: a handle without group commit reports its own inserts, as every write; and a
 * counter that wraps past 2^64 between two calls is told (the range is walked by offset, and
 * no slot holds a value it was not given). */
static void test_changed_quiet_edges(void **state)
{
	struct fx *f = *state;
	struct ky_store_opts o = {.data_version_ms = 600 * 1000}, og = o;
	struct ky_store *s = NULL, *alone = NULL;
	struct ky_store_secret sec = {0};
	uint8_t blob[40] = {3};
	char gen[TFX_URI_MAX + 16];
	int fd;

	TFX_SQLITE_ONLY(f);
	og.no_group_commit = 1;
	assert_int_equal(ky_store_open(f->uri, &og, &alone), 0);
	changed_is(alone, 1);
	changed_is(alone, 0);
	quiet_insert(alone, 200);
	changed_is(alone, 1);
	ky_store_close(alone);

	assert_int_equal(ky_store_open(f->uri, &o, &s), 0);
	assert_int_equal(ky_store_open(f->uri, &o, &alone), 0);
	snprintf(gen, sizeof(gen), "%s-kyokgen", f->path);
	memcpy(sec.vp, vp_a, KY_VP_LEN);
	sec.blob = blob;
	sec.bloblen = sizeof(blob);
	/* commits of another handle from 2^64 - 2 (two: to 2^64 - 1, then 0) and from 2^64 - 1
	 * (one: to 0, which an unset slot would hold) */
	for (int k = 2; k >= 1; k--) {
		uint64_t top = UINT64_MAX - (uint64_t)(k - 1);

		assert_true((fd = open(gen, O_WRONLY)) >= 0);
		assert_int_equal(pwrite(fd, &top, sizeof(top), 0), (ssize_t)sizeof(top));
		close(fd);
		changed_is(s, 1);
		changed_is(s, 0);
		for (int w = 0; w < k; w++) {
			snprintf(sec.name, sizeof(sec.name), "w%d-%d", k, w);
			assert_int_equal(ky_store_secret_put(alone, &sec, 0), 0);
		}
		changed_is(s, 1);
	}
	ky_store_close(alone);
	ky_store_close(s);
}

/* With a check window (PostgreSQL: one read answers the calls made within it), a write
 * through another handle returns only once the window has passed since its commit, so the
 * next call is answered by a newer read and reports it. With a window this long the call
 * right after the write would still be inside the window of the read before it. */
static void test_changed_window(void **state)
{
	struct fx *f = *state;
	struct ky_store_opts o = {.check_window_us = 400 * 1000};
	struct ky_store *a = NULL, *b = NULL;
	struct ky_store_secret sec = {0};
	uint8_t blob[40] = {2};
	int changed = 0;

	assert_int_equal(ky_store_open(f->uri, &o, &a), 0);
	assert_int_equal(ky_store_open(f->uri, &o, &b), 0);
	assert_int_equal(ky_store_changed(a, &changed), 0);
	assert_int_equal(changed, 1);
	assert_int_equal(ky_store_changed(a, &changed), 0);
	assert_int_equal(changed, 0);
	strcpy(sec.name, "w1");
	memcpy(sec.vp, vp_a, KY_VP_LEN);
	sec.blob = blob;
	sec.bloblen = sizeof(blob);
	assert_int_equal(ky_store_secret_put(b, &sec, 0), 0);
	assert_int_equal(ky_store_changed(a, &changed), 0);
	assert_int_equal(changed, 1);
	assert_change_seen(f, a);
	/* the same for a key created through the group commit */
	{
		struct ky_store_row row;
		row_make(&row, 77, 1, 0, vp_a);
		assert_int_equal(ky_store_key_insert(b, &row), 0);
		ky_store_row_release(&row);
	}
	assert_int_equal(ky_store_changed(a, &changed), 0);
	assert_int_equal(changed, 1);
	ky_store_close(b);
	ky_store_close(a);
}

/* Many threads asking at once (a unit's request threads), while others keep asking all the
 * time (so that a read of the counter is under way when a write commits): after a write by
 * another handle has returned, every thread that asks is told, and without one none is. The
 * threads start asking as soon as the write returns (they spin on the round number), while
 * a read that began before its commit is likely still under way. */
#define CT_THREADS 6
#define CT_ROUNDS  100
struct changed_round {
	struct ky_store *s;
	atomic_int round, done, stop, next;
	int r[CT_ROUNDS][CT_THREADS];
	int changed[CT_ROUNDS][CT_THREADS];
};

static void *changed_round_thread(void *p)
{
	struct changed_round *a = p;
	int me = atomic_fetch_add(&a->next, 1);

	for (int i = 0; i < CT_ROUNDS; i++) {
		while (atomic_load(&a->round) <= i)
			sched_yield();
		a->r[i][me] = ky_store_changed(a->s, &a->changed[i][me]);
		atomic_fetch_add(&a->done, 1);
	}
	return NULL;
}

static void *changed_busy_thread(void *p)
{
	struct changed_round *a = p;
	int changed;

	while (!atomic_load(&a->stop))
		if (ky_store_changed(a->s, &changed) != 0)
			break;
	return NULL;
}

static void test_changed_threads(void **state)
{
	struct fx *f = *state;
	struct changed_round *a = calloc(1, sizeof(*a));
	struct ky_store *other = NULL;
	pthread_t t[CT_THREADS], busy[2];

	assert_non_null(a);
	a->s = f->s;
	assert_int_equal(ky_store_open(f->uri, NULL, &other), 0);
	for (int k = 0; k < CT_THREADS; k++)
		assert_int_equal(pthread_create(&t[k], NULL, changed_round_thread, a), 0);
	for (int k = 0; k < 2; k++)
		assert_int_equal(pthread_create(&busy[k], NULL, changed_busy_thread, a), 0);
	for (int i = 0; i < CT_ROUNDS; i++) {
		if (i % 2 == 1)
			insert_n(other, 100 + i, 1, vp_a); /* returned: committed */
		atomic_store(&a->round, i + 1);
		while (atomic_load(&a->done) < (i + 1) * CT_THREADS)
			sched_yield();
	}
	atomic_store(&a->stop, 1);
	for (int k = 0; k < CT_THREADS; k++)
		assert_int_equal(pthread_join(t[k], NULL), 0);
	for (int k = 0; k < 2; k++)
		assert_int_equal(pthread_join(busy[k], NULL), 0);
	ky_store_close(other);
	for (int i = 0; i < CT_ROUNDS; i++) {
		for (int k = 0; k < CT_THREADS; k++) {
			assert_int_equal(a->r[i][k], 0);
			/* round 0: each thread's first call; odd rounds follow a write; even rounds
			 * follow nothing (but the SQLite backend's safety net may say 1: never 0
			 * after a write is what counts) */
			if (i == 0 || i % 2 == 1) {
				if (a->changed[i][k] != 1)
					fprintf(stderr,
					        "round %d, thread %d: a write not reported\n", i,
					        k);
				assert_int_equal(a->changed[i][k], 1);
			} else if (f->pg) {
				assert_int_equal(a->changed[i][k], 0);
			}
		}
	}
	free(a);
}

/* ---- change log ---- */

/* The changes since *pos: asserts the log could tell, returns how many name (rec, id). */
static size_t changes_of(struct ky_store *s, struct ky_store_change_pos *pos, size_t *total,
                         enum ky_store_record rec, const char *id)
{
	struct ky_store_change *v = NULL;
	size_t n = 0, hits = 0;
	int all = -1;

	assert_int_equal(ky_store_changes(s, pos, &v, &n, &all), 0);
	assert_int_equal(all, 0);
	for (size_t i = 0; i < n; i++)
		hits += v[i].rec == rec && strcmp(v[i].id, id) == 0;
	free(v);
	if (total != NULL)
		*total = n;
	return hits;
}

static int changes_all(struct ky_store *s, struct ky_store_change_pos *pos)
{
	struct ky_store_change *v = NULL;
	size_t n = 0;
	int all = -1;

	assert_int_equal(ky_store_changes(s, pos, &v, &n, &all), 0);
	if (all)
		assert_null(v);
	free(v);
	return all;
}

/* Every write path logs the records it changed; nothing else is logged. */
static void test_changes_every_write(void **state)
{
	struct fx *f = *state;
	struct ky_store_change_pos pos = {0, 0};
	struct ky_store *other = NULL;
	struct ky_store_row row, got;
	struct ky_store_secret sec = {0};
	struct ky_store_apikey k = {0};
	struct ky_store_vprow *rows = NULL;
	uint8_t blob[40] = {1};
	size_t n = 0, swapped = 0;
	uint64_t gone = 0;
	const char *id0 = "00000000-0000-4000-8000-000000000000";
	const char *id1 = "00000001-0000-4000-8000-000000000001";

	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, ""), 0);
	assert_int_equal(n, 0);
	insert_n(f->s, 0, 2, vp_a);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, id0), 1);
	assert_int_equal(n, 2);
	/* read again from the same position: nothing new */
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, id0), 0);
	assert_int_equal(n, 0);
	/* update, delete */
	assert_int_equal(ky_store_key_get(f->s, id0, &got), 0);
	got.state = 3;
	assert_int_equal(ky_store_key_update(f->s, &got), 0);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, id0), 1);
	assert_int_equal(n, 1);
	/* a refused CAS and a rolled back transaction log nothing */
	got.rev = 1;
	assert_int_equal(ky_store_key_update(f->s, &got), KY_ERR_CONFLICT);
	ky_store_row_release(&got);
	assert_int_equal(ky_store_begin(f->s), 0);
	row_make(&row, 7, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	ky_store_row_release(&row);
	assert_int_equal(ky_store_rollback(f->s), 0);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, id0), 0);
	assert_int_equal(n, 0);
	assert_int_equal(ky_store_key_get(f->s, id1, &got), 0);
	assert_int_equal(ky_store_key_delete(f->s, id1, got.rev), 0);
	ky_store_row_release(&got);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, id1), 1);
	assert_int_equal(n, 1);
	/* re-encipherment swaps */
	assert_int_equal(ky_store_vp_fetch(f->s, KY_STORE_KEYS, vp_a, NULL, 10, &rows, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ky_store_vp_swap(f->s, KY_STORE_KEYS, vp_a, vp_b, rows, n, &swapped), 0);
	assert_int_equal(swapped, 1);
	ky_store_vprows_free(rows, n);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, id0), 1);
	assert_int_equal(n, 1);
	/* secrets */
	strcpy(sec.name, "s1");
	memcpy(sec.vp, vp_a, KY_VP_LEN);
	sec.blob = blob;
	sec.bloblen = sizeof(blob);
	assert_int_equal(ky_store_secret_put(f->s, &sec, 0), 0);
	assert_int_equal(ky_store_secret_put(f->s, &sec, sec.rev), 0);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_SECRET, "s1"), 2);
	assert_int_equal(ky_store_secret_delete(f->s, "s1"), 0);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_SECRET, "s1"), 1);
	/* API keys: insert, update, purge */
	strcpy(k.id, "apikey-1");
	strcpy(k.role, "Manager");
	memset(k.hash, 0x11, sizeof(k.hash));
	assert_int_equal(ky_store_apikey_insert(f->s, &k), 0);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_APIKEY, "apikey-1"), 1);
	k.revoked = 5;
	k.has_mac = true;
	memset(k.mac, 0x5a, sizeof(k.mac));
	assert_int_equal(ky_store_apikey_update(f->s, &k, NULL), 0);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_APIKEY, "apikey-1"), 1);
	assert_int_equal(ky_store_apikey_purge(f->s, &gone), 0);
	assert_int_equal(gone, 1);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_APIKEY, "apikey-1"), 1);
	/* another handle (another process), and another program writing by hand */
	assert_int_equal(ky_store_open(f->uri, NULL, &other), 0);
	insert_n(other, 20, 1, vp_a);
	ky_store_close(other);
	assert_int_equal(
	    changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, "00000014-0000-4000-8000-000000000014"),
	    1);
	sql(f->path, "UPDATE keys SET state = 2 WHERE name = 'key-0'");
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, id0), 1);
	assert_int_equal(n, 1);
}

/* A position the log cannot answer for: everything changed, and the new position works. */
static void test_changes_too_old(void **state)
{
	struct fx *f = *state;
	struct ky_store_change_pos pos = {0, 0}, old, bad;
	size_t n = 0;

	insert_n(f->s, 0, 3, vp_a);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, ""), 0);
	assert_int_equal(n, 3);
	old = pos;
	/* more changes than an answer lists: everything */
	sql(f->path,
	    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000)"
	    " INSERT INTO changes (rec, id) SELECT 0, 'k' || x FROM c");
	assert_int_equal(changes_all(f->s, &pos), 1);
	assert_int_equal(pos.seq, old.seq + 5000);
	assert_int_equal(changes_all(f->s, &pos), 0);
	/* pruned past the position (a unit that slept too long) */
	old = pos;
	insert_n(f->s, 10, 5, vp_a);
	sql(f->path, "DELETE FROM changes WHERE seq <= (SELECT max(seq) - 2 FROM changes)");
	assert_int_equal(changes_all(f->s, &old), 1);
	/* the log keeps 16,384 changes, pruned as it goes */
	sql(f->path,
	    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 17000)"
	    " INSERT INTO changes (rec, id) SELECT 0, 'k' || x FROM c");
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM changes"), 16384);
	assert_int_equal(changes_all(f->s, &pos), 1);
	/* the log went back (an older copy of the file), or is another log */
	bad = pos;
	bad.seq = old.seq + 1000000;
	assert_int_equal(changes_all(f->s, &bad), 1);
	bad = pos;
	bad.check ^= 1;
	insert_n(f->s, 100, 1, vp_a);
	pos = bad;
	assert_int_equal(changes_all(f->s, &pos), 1);
	/* a gap */
	insert_n(f->s, 101, 3, vp_a);
	sql(f->path, "DELETE FROM changes WHERE seq = (SELECT max(seq) - 1 FROM changes)");
	assert_int_equal(changes_all(f->s, &pos), 1);
	assert_int_equal(changes_all(f->s, &pos), 0);
}

/* Two handles (two units): a write through one is named to the other, that record only. */
static void test_changes_other_handle(void **state)
{
	struct fx *f = *state;
	struct ky_store_change_pos pos = {0, 0};
	struct ky_store *other = NULL;
	struct ky_store_row got;
	size_t n = 0;
	int changed = 0;
	const char *id3 = "00000003-0000-4000-8000-000000000003";

	insert_n(f->s, 0, 8, vp_a);
	assert_int_equal(changes_all(f->s, &pos), 0);
	assert_int_equal(ky_store_changed(f->s, &changed), 0);
	assert_int_equal(ky_store_open(f->uri, NULL, &other), 0);
	assert_int_equal(ky_store_key_get(other, id3, &got), 0);
	got.state = 3;
	assert_int_equal(ky_store_key_update(other, &got), 0);
	ky_store_row_release(&got);
	/* the write is seen at once (no waiting), and only that key is named */
	assert_int_equal(ky_store_changed(f->s, &changed), 0);
	assert_int_equal(changed, 1);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, id3), 1);
	assert_int_equal(n, 1);
	assert_int_equal(ky_store_key_get(other, id3, &got), 0);
	assert_int_equal(ky_store_key_delete(other, id3, got.rev), 0);
	ky_store_row_release(&got);
	ky_store_close(other);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, id3), 1);
	assert_int_equal(n, 1);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, id3), 0);
	assert_int_equal(n, 0);
}

/* PostgreSQL: a change numbered but not yet committed holds back every later one, so a
 * reader never moves past a change that commits after it looked; TRUNCATE is "everything";
 * a store made before the log gets it on open. */
static void test_changes_pg(void **state)
{
	struct fx *f = *state;
	struct ky_store_change_pos pos = {0, 0};
	struct ky_store_opts quick = {.busy_timeout_ms = 200};
	struct ky_store *other = NULL;
	struct ky_store_row row;
	PGconn *pc;
	PGresult *res;
	size_t n = 0;

	TFX_PG_ONLY(f);
	insert_n(f->s, 0, 2, vp_a);
	assert_int_equal(changes_all(f->s, &pos), 0);
	pc = PQconnectdb(f->uri);
	assert_int_equal(PQstatus(pc), CONNECTION_OK);
	res = PQexec(pc, "BEGIN; INSERT INTO changes (rec, id) VALUES (0, 'by-hand')");
	assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	/* another writer waits for it (here: gives up after 200 ms) instead of numbering past */
	assert_int_equal(ky_store_open(f->uri, &quick, &other), 0);
	row_make(&row, 50, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(other, &row), KY_ERR_STORE_BUSY);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, ""), 0);
	assert_int_equal(n, 0);
	res = PQexec(pc, "COMMIT");
	assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	PQfinish(pc);
	assert_int_equal(ky_store_key_insert(other, &row), 0);
	ky_store_row_release(&row);
	ky_store_close(other);
	assert_int_equal(changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, "by-hand"), 1);
	assert_int_equal(n, 2);
	/* TRUNCATE names no record: everything */
	sql(f->path, "TRUNCATE secrets");
	assert_int_equal(changes_all(f->s, &pos), 1);
	assert_int_equal(changes_all(f->s, &pos), 0);
	/* a store made before the log: the log is made on open, numbered from 1 */
	ky_store_close(f->s);
	f->s = NULL;
	sql(f->path, "DROP TABLE changes; DROP FUNCTION kyok_keys_changes() CASCADE;"
	             " DROP FUNCTION kyok_secrets_changes() CASCADE;"
	             " DROP FUNCTION kyok_api_keys_changes() CASCADE;"
	             " DROP FUNCTION kyok_changes_seq(); DELETE FROM counters WHERE k = 'changes'");
	assert_int_equal(ky_store_open(f->uri, NULL, &f->s), 0);
	pos.seq = 0;
	pos.check = 0;
	assert_int_equal(changes_all(f->s, &pos), 0);
	assert_int_equal(pos.seq, 0);
	insert_n(f->s, 61, 1, vp_a);
	assert_int_equal(
	    changes_of(f->s, &pos, &n, KY_STORE_REC_KEY, "0000003d-0000-4000-8000-00000000003d"),
	    1);
	assert_int_equal(pos.seq, 1);
}

/* ---- api keys ---- */

static void test_apikeys(void **state)
{
	struct fx *f = *state;
	struct ky_store_apikey k = {0}, got;
	uint8_t mac0[KY_APIKEY_MAC_LEN], mac1[KY_APIKEY_MAC_LEN];
	uint64_t gone = 0;

	strcpy(k.id, "apikey-1");
	strcpy(k.role, "Manager");
	memset(k.hash, 0x11, sizeof(k.hash));
	k.created = 10;
	assert_int_equal(ky_store_apikey_insert(f->s, &k), 0);
	assert_int_equal(ky_store_apikey_insert(f->s, &k), KY_ERR_EXISTS);
	strcpy(k.id, "apikey-2"); /* same hash: refused */
	assert_int_equal(ky_store_apikey_insert(f->s, &k), KY_ERR_EXISTS);
	memset(k.hash, 0x22, sizeof(k.hash));
	strcpy(k.role, "Reader");
	assert_int_equal(ky_store_apikey_insert(f->s, &k), 0);

	assert_int_equal(ky_store_apikey_find(f->s, k.hash, &got), 0);
	assert_string_equal(got.id, "apikey-2");
	assert_string_equal(got.role, "Reader");
	assert_int_equal(got.revoked, 0);
	assert_int_equal(ky_store_apikey_get(f->s, "apikey-1", &got), 0);
	assert_string_equal(got.role, "Manager");
	memset(k.hash, 0x33, sizeof(k.hash));
	assert_int_equal(ky_store_apikey_find(f->s, k.hash, &got), KY_ERR_NOT_FOUND);
	assert_int_equal(ky_store_apikey_get(f->s, "apikey-3", &got), KY_ERR_NOT_FOUND);

	/* apikey-1 was stored without a tag: the store says so; an update is a CAS on the
	 * tag (NULL: none) and the hash */
	assert_int_equal(ky_store_apikey_get(f->s, "apikey-1", &got), 0);
	assert_false(got.has_mac);
	memset(mac0, 0x5a, sizeof(mac0));
	memset(mac1, 0xa5, sizeof(mac1));
	got.revoked = 500;
	got.has_mac = true;
	memcpy(got.mac, mac1, sizeof(mac1));
	assert_int_equal(ky_store_apikey_update(f->s, &got, mac0), KY_ERR_CONFLICT);
	assert_int_equal(ky_store_apikey_update(f->s, &got, NULL), 0);
	assert_int_equal(ky_store_apikey_update(f->s, &got, NULL), KY_ERR_CONFLICT);
	assert_int_equal(ky_store_apikey_get(f->s, "apikey-1", &got), 0);
	assert_int_equal(got.revoked, 500);
	assert_true(got.has_mac);
	assert_memory_equal(got.mac, mac1, sizeof(mac1));
	got.revoked = 600;
	memcpy(got.mac, mac0, sizeof(mac0));
	assert_int_equal(ky_store_apikey_update(f->s, &got, mac1), 0);
	assert_int_equal(ky_store_apikey_get(f->s, "apikey-1", &got), 0);
	assert_int_equal(got.revoked, 600);
	/* the hash is part of the condition */
	got.hash[0] ^= 1;
	assert_int_equal(ky_store_apikey_update(f->s, &got, mac0), KY_ERR_CONFLICT);
	strcpy(got.id, "apikey-9");
	assert_int_equal(ky_store_apikey_update(f->s, &got, mac0), KY_ERR_NOT_FOUND);
	got.has_mac = false;
	assert_int_equal(ky_store_apikey_update(f->s, &got, mac0), KY_ERR_USAGE);
	/* a tag of the wrong size is no tag, and is replaced like none */
	sql(f->path, "UPDATE api_keys SET mac = x'0102' WHERE id = 'apikey-2'");
	assert_int_equal(ky_store_apikey_get(f->s, "apikey-2", &got), 0);
	assert_false(got.has_mac);
	got.has_mac = true;
	memcpy(got.mac, mac1, sizeof(mac1));
	assert_int_equal(ky_store_apikey_update(f->s, &got, NULL), 0);

	/* Names and the listing (no hash leaves the store in a listing's order guarantees). */
	{
		struct ky_store_apikey *all = NULL;
		size_t n = 0;

		strcpy(k.id, "apikey-3");
		strcpy(k.name, "ci-pipeline");
		memset(k.hash, 0x44, sizeof(k.hash));
		k.created = 20;
		k.has_mac = true;
		memset(k.mac, 0x77, sizeof(k.mac));
		assert_int_equal(ky_store_apikey_insert(f->s, &k), 0);
		assert_int_equal(ky_store_apikey_get(f->s, "apikey-3", &got), 0);
		assert_string_equal(got.name, "ci-pipeline");
		assert_true(got.has_mac);
		assert_memory_equal(got.mac, k.mac, sizeof(k.mac));
		assert_int_equal(ky_store_apikey_list(f->s, &all, &n), 0);
		assert_int_equal(n, 3);
		assert_string_equal(all[0].id, "apikey-1");
		assert_int_equal(all[0].revoked, 600);
		assert_string_equal(all[2].name, "ci-pipeline");
		assert_true(all[2].has_mac);
		free(all);
	}
	memset(&k, 0, sizeof(k));
	assert_int_equal(ky_store_apikey_insert(f->s, &k), KY_ERR_USAGE);
	/* purge: every row */
	assert_int_equal(ky_store_apikey_purge(f->s, &gone), 0);
	assert_int_equal(gone, 3);
	assert_int_equal(ky_store_apikey_get(f->s, "apikey-3", &got), KY_ERR_NOT_FOUND);
	assert_int_equal(ky_store_apikey_purge(f->s, &gone), 0);
	assert_int_equal(gone, 0);
}

/* ---- concurrency ---- */

#define GC_THREADS 8
#define GC_EACH    40

struct gc_arg {
	struct ky_store *s;
	int base;
	int ok;
	int limit_hits;
	int other;
};

static void *gc_thread(void *p)
{
	struct gc_arg *a = p;
	struct ky_store_row row;

	for (int i = 0; i < GC_EACH; i++) {
		row_make(&row, a->base + i, 1, 0, vp_a);
		int r = ky_store_key_insert(a->s, &row);
		if (r == 0)
			a->ok++;
		else if (r == KY_ERR_KEY_LIMIT)
			a->limit_hits++;
		else
			a->other++;
		ky_store_row_release(&row);
	}
	return NULL;
}

static void run_threads(struct ky_store *s, struct gc_arg *args)
{
	pthread_t th[GC_THREADS];

	for (int t = 0; t < GC_THREADS; t++) {
		args[t] = (struct gc_arg){.s = s, .base = t * 1000};
		assert_int_equal(pthread_create(&th[t], NULL, gc_thread, &args[t]), 0);
	}
	for (int t = 0; t < GC_THREADS; t++)
		pthread_join(th[t], NULL);
}

static void test_group_commit_threads(void **state)
{
	struct fx *f = *state;
	struct gc_arg args[GC_THREADS];
	struct ky_store_row *rows = NULL;
	size_t n = 0;
	uint64_t total = 0;
	int ok = 0;

	run_threads(f->s, args);
	for (int t = 0; t < GC_THREADS; t++) {
		assert_int_equal(args[t].other, 0);
		assert_int_equal(args[t].limit_hits, 0);
		ok += args[t].ok;
	}
	assert_int_equal(ok, GC_THREADS * GC_EACH);
	assert_int_equal(ky_store_key_count(f->s, NULL, &total), 0);
	assert_int_equal(total, GC_THREADS * GC_EACH);
	/* seq is a strict creation order without duplicates */
	assert_int_equal(ky_store_key_list(f->s, NULL, 0, 0, &rows, &n), 0);
	assert_int_equal(n, GC_THREADS * GC_EACH);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(rows[i].seq, (int64_t)i + 1);
	ky_store_rows_free(rows, n);
}

/* Threads of this process at nice value nice (field 19 of /proc/self/task/TID/stat). */
static int threads_at_nice(int nice)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		char path[300], buf[1024], *p;
		FILE *fp;
		int field = 3, v = 0;
		size_t len;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
		if ((fp = fopen(path, "r")) == NULL)
			continue;
		len = fread(buf, 1, sizeof(buf) - 1, fp);
		fclose(fp);
		buf[len] = '\0';
		if ((p = strrchr(buf, ')')) == NULL) /* the name may hold spaces */
			continue;
		for (p += 2; *p != '\0' && field < 19; p++)
			if (*p == ' ')
				field++;
		if (field == 19 && sscanf(p, "%d", &v) == 1 && v == nice)
			n++;
	}
	closedir(d);
	return n;
}

/* SQLite: the commits of a group run on one thread of the store's, at nice
 * KY_STORE_WRITE_NICE (the requests that write nothing go first on busy CPUs), started by the
 * first insert and ended with the store; the caller's thread keeps its own priority.
 * PostgreSQL: its leaders. */
static void test_group_commit_committer(void **state)
{
	struct fx *f = *state;
	struct ky_store_row row;
	int own = getpriority(PRIO_PROCESS, 0), before;

	if (own >= KY_STORE_WRITE_NICE)
		skip(); /* run at that nice or lower already: nothing to tell apart */
	before = threads_at_nice(KY_STORE_WRITE_NICE);
	row_make(&row, 0, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	ky_store_row_release(&row);
	assert_int_equal(threads_at_nice(KY_STORE_WRITE_NICE) - before, f->pg ? 0 : 1);
	assert_int_equal(getpriority(PRIO_PROCESS, 0), own);
	ky_store_close(f->s);
	f->s = NULL;
	assert_int_equal(threads_at_nice(KY_STORE_WRITE_NICE), before);
}

static void test_group_commit_limit(void **state)
{
	struct fx *f = *state;
	struct ky_store *s = NULL;
	struct ky_store_opts o = {.key_limit = 100};
	struct gc_arg args[GC_THREADS];
	uint64_t total = 0;
	int ok = 0, hits = 0;

	assert_int_equal(ky_store_open(f->uri, &o, &s), 0);
	run_threads(s, args);
	for (int t = 0; t < GC_THREADS; t++) {
		assert_int_equal(args[t].other, 0);
		ok += args[t].ok;
		hits += args[t].limit_hits;
	}
	assert_int_equal(ok, 100);
	assert_int_equal(hits, GC_THREADS * GC_EACH - 100);
	assert_int_equal(ky_store_key_count(s, NULL, &total), 0);
	assert_int_equal(total, 100);
	ky_store_close(s);
}

/* A refused row in a group commit costs the other rows of its batch nothing: every other
 * id is taken before the threads start, so most batches hold both kinds. */
static void *gc_dup_thread(void *p)
{
	struct gc_arg *a = p;
	struct ky_store_row row;

	for (int i = 0; i < GC_EACH; i++) {
		row_make(&row, a->base + i, 1, 0, vp_a);
		int r = ky_store_key_insert(a->s, &row);
		if (r == 0 && i % 2 == 1)
			a->ok++;
		else if (r == KY_ERR_EXISTS && i % 2 == 0)
			a->limit_hits++; /* here: refused as taken, as it should be */
		else
			a->other++;
		ky_store_row_release(&row);
	}
	return NULL;
}

static void test_group_commit_refused_row(void **state)
{
	struct fx *f = *state;
	struct gc_arg args[GC_THREADS];
	pthread_t th[GC_THREADS];
	struct ky_store_row row;
	uint64_t total = 0;

	for (int t = 0; t < GC_THREADS; t++)
		for (int i = 0; i < GC_EACH; i += 2) {
			row_make(&row, t * 1000 + i, 1, 0, vp_a);
			assert_int_equal(ky_store_key_insert(f->s, &row), 0);
			ky_store_row_release(&row);
		}
	for (int t = 0; t < GC_THREADS; t++) {
		args[t] = (struct gc_arg){.s = f->s, .base = t * 1000};
		assert_int_equal(pthread_create(&th[t], NULL, gc_dup_thread, &args[t]), 0);
	}
	for (int t = 0; t < GC_THREADS; t++)
		pthread_join(th[t], NULL);
	for (int t = 0; t < GC_THREADS; t++) {
		assert_int_equal(args[t].other, 0);
		assert_int_equal(args[t].ok, GC_EACH / 2);
		assert_int_equal(args[t].limit_hits, GC_EACH / 2);
	}
	assert_int_equal(ky_store_key_count(f->s, NULL, &total), 0);
	assert_int_equal(total, GC_THREADS * GC_EACH);
}

static void test_no_group_commit_threads(void **state)
{
	struct fx *f = *state;
	struct ky_store *s = NULL;
	struct ky_store_opts o = {.no_group_commit = 1};
	struct gc_arg args[GC_THREADS];
	uint64_t total = 0;

	assert_int_equal(ky_store_open(f->uri, &o, &s), 0);
	run_threads(s, args);
	for (int t = 0; t < GC_THREADS; t++)
		assert_int_equal(args[t].ok, GC_EACH);
	assert_int_equal(ky_store_key_count(s, NULL, &total), 0);
	assert_int_equal(total, GC_THREADS * GC_EACH);
	ky_store_close(s);
}

/* One batch on purpose: a second handle holds the write lock (its open transaction) while a
 * first insert waits for it as leader of a batch of its own, so that the inserts started
 * meanwhile all queue for the next batch. */
struct held_insert {
	struct ky_store *s;
	struct ky_store_row row;
	int r;
	struct timespec back; /* CLOCK_MONOTONIC when the insert returned */
};

static void *held_insert_thread(void *p)
{
	struct held_insert *h = p;

	h->r = ky_store_key_insert(h->s, &h->row);
	clock_gettime(CLOCK_MONOTONIC, &h->back);
	return NULL;
}

/* Inserts rows (ids n[0..count-1]) on s: n[0] alone, the others in one batch after it. The
 * results go to r[], the return times to back[]; *released: when the lock was given up.
 * The pauses only shape the batches (which path a batch takes): every caller's assertions
 * hold for any order in which the threads reach the store, so a loaded machine that runs
 * them in another order makes the test cover less, never fail. */
static void held_batch(struct fx *f, struct ky_store *s, const int *n, size_t count, int *r,
                       struct timespec *back, struct timespec *released)
{
	struct ky_store *x = NULL;
	struct held_insert *h = calloc(count, sizeof(*h));
	pthread_t *th = calloc(count, sizeof(*th));

	assert_non_null(h);
	assert_non_null(th);
	assert_int_equal(ky_store_open(f->uri, NULL, &x), 0);
	assert_int_equal(ky_store_begin(x), 0);
	for (size_t i = 0; i < count; i++) {
		h[i].s = s;
		row_make(&h[i].row, n[i], 1, 0, vp_a);
		assert_int_equal(pthread_create(&th[i], NULL, held_insert_thread, &h[i]), 0);
		usleep(i == 0 ? 200 * 1000 : 20 * 1000); /* the first leads and waits alone */
	}
	usleep(200 * 1000);
	clock_gettime(CLOCK_MONOTONIC, released);
	assert_int_equal(ky_store_rollback(x), 0);
	for (size_t i = 0; i < count; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		r[i] = h[i].r;
		if (back != NULL)
			back[i] = h[i].back;
		ky_store_row_release(&h[i].row);
	}
	ky_store_close(x);
	free(th);
	free(h);
}

/* A row the server refuses for its own content (PostgreSQL: a name not valid UTF-8; SQLite
 * stores it) costs the other rows of its batch nothing, as it costs nothing to a row inserted
 * alone. */
static void test_group_commit_bad_row(void **state)
{
	struct fx *f = *state;
	struct ky_store *x = NULL;
	struct held_insert h[4];
	pthread_t th[4];
	uint64_t total = 0;

	assert_int_equal(ky_store_open(f->uri, NULL, &x), 0);
	assert_int_equal(ky_store_begin(x), 0);
	for (int i = 0; i < 4; i++) {
		memset(&h[i], 0, sizeof(h[i]));
		h[i].s = f->s;
		row_make(&h[i].row, 30 + i, 1, 0, vp_a);
		if (i == 2)
			strcpy(h[i].row.name, "bad \xff\xfe");
		assert_int_equal(pthread_create(&th[i], NULL, held_insert_thread, &h[i]), 0);
		usleep(i == 0 ? 200 * 1000 : 20 * 1000); /* the first leads and waits alone */
	}
	usleep(200 * 1000);
	assert_int_equal(ky_store_rollback(x), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		if (i == 2)
			assert_true(h[i].r == 0 || (f->pg && h[i].r == KY_ERR_STORE));
		else
			assert_int_equal(h[i].r, 0);
		ky_store_row_release(&h[i].row);
	}
	ky_store_close(x);
	assert_int_equal(ky_store_key_count(f->s, NULL, &total), 0);
	assert_int_equal(total, f->pg ? 3 : 4);
}

/* The key limit in a batch: a row refused as a duplicate takes no room, and the limit is
 * reached exactly, whether the batch is sent at once (room for all its rows) or row by row
 * (not room for all). Keys 0 and 1 exist; the batch after key 2 holds a duplicate of key 0. */
static void batch_limit(struct fx *f, uint32_t limit, int want_ok)
{
	struct ky_store *s = NULL;
	struct ky_store_opts o = {.key_limit = limit};
	static const int ids[] = {2, 0, 3, 4, 5};
	int r[5], ok = 0, full = 0;
	uint64_t total = 0;
	struct ky_store_row row;

	assert_int_equal(ky_store_open(f->uri, &o, &s), 0);
	insert_n(s, 0, 2, vp_a);
	held_batch(f, s, ids, 5, r, NULL, &(struct timespec){0});
	assert_int_equal(r[1], KY_ERR_EXISTS); /* key 0: taken, whenever it comes */
	for (int i = 0; i < 5; i++) {          /* the new keys 2 to 5, in whatever order */
		if (i == 1)
			continue;
		ok += r[i] == 0;
		full += r[i] == KY_ERR_KEY_LIMIT;
	}
	assert_int_equal(ok, want_ok + 1);
	assert_int_equal(full, 3 - want_ok);
	assert_int_equal(ky_store_key_count(s, NULL, &total), 0);
	assert_int_equal(total, 3 + (uint64_t)want_ok);
	/* one more fills the limit (when not full yet), then none */
	row_make(&row, 9, 1, 0, vp_a);
	if (total < limit) {
		assert_int_equal(ky_store_key_insert(s, &row), 0);
		ky_store_row_release(&row);
		row_make(&row, 10, 1, 0, vp_a);
	}
	assert_int_equal(ky_store_key_insert(s, &row), KY_ERR_KEY_LIMIT);
	ky_store_row_release(&row);
	assert_int_equal(ky_store_key_count(s, NULL, &total), 0);
	assert_int_equal(total, limit);
	ky_store_close(s);
}

static void test_group_commit_batch_limit(void **state)
{
	batch_limit(*state, 5, 2); /* 3 + 4 rows > 5: row by row; 2 of the 3 new ones fit */
}

static void test_group_commit_batch_limit_room(void **state)
{
	batch_limit(*state, 7, 3); /* 3 + 4 rows = 7: all at once; the duplicate takes none */
}

/* PostgreSQL, rule of ky_store_changed: every kind of write through kyok returns only once
 * the check window has passed since its commit, so a call after it on another handle never
 * takes the answer of a read sent before the commit. With a window this long a write that
 * skipped the wait would leave the next call inside the window of the read before it. */
#define CW_US (400 * 1000)

static int64_t ts_us(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000 + t->tv_nsec / 1000;
}

static void changed_ready(struct ky_store *a)
{
	int changed = 0;

	assert_int_equal(ky_store_changed(a, &changed), 0);
	assert_int_equal(ky_store_changed(a, &changed), 0);
	assert_int_equal(changed, 0);
}

static void changed_after(struct ky_store *a, const char *what)
{
	int changed = 0;

	assert_int_equal(ky_store_changed(a, &changed), 0);
	if (changed != 1)
		fprintf(stderr, "%s: a write not reported\n", what);
	assert_int_equal(changed, 1);
}

static void test_changed_window_writes(void **state)
{
	struct fx *f = *state;
	struct ky_store_opts o = {.check_window_us = CW_US};
	struct ky_store *a = NULL, *b = NULL;
	struct ky_store_row row;
	struct timespec back[4], released;
	static const int ids[] = {20, 21, 22, 23};
	int r[4];

	TFX_PG_ONLY(f);
	assert_int_equal(ky_store_open(f->uri, &o, &a), 0);
	assert_int_equal(ky_store_open(f->uri, &o, &b), 0);
	changed_ready(a);
	/* an explicit transaction */
	assert_int_equal(ky_store_begin(b), 0);
	row_make(&row, 1, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(b, &row), 0);
	assert_int_equal(ky_store_commit(b), 0);
	changed_after(a, "ky_store_commit");
	changed_ready(a);
	row.state = 2;
	assert_int_equal(ky_store_key_update(b, &row), 0);
	changed_after(a, "ky_store_key_update");
	changed_ready(a);
	assert_int_equal(ky_store_key_delete(b, row.id, row.rev), 0);
	changed_after(a, "ky_store_key_delete");
	ky_store_row_release(&row);
	/* the leader and the members of one group commit: each returns the window after it */
	changed_ready(a);
	held_batch(f, b, ids, 4, r, back, &released);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(r[i], 0);
		if (ts_us(&back[i]) - ts_us(&released) < CW_US)
			fprintf(stderr, "insert %d returned %lld us after the lock was released\n",
			        i, (long long)(ts_us(&back[i]) - ts_us(&released)));
		assert_true(ts_us(&back[i]) - ts_us(&released) >= CW_US);
	}
	changed_after(a, "group commit");
	ky_store_close(b);
	ky_store_close(a);
}

/* The storage digest over the rows of one batch (PostgreSQL: sent at once, each tag from what
 * its insert returned), a duplicate among them: another handle reads every row as written. */
static void test_ledger_group_commit_batch(void **state)
{
	struct fx *f = *state;
	struct ky_store_ledger_pos pos;
	struct ky_store *s2;
	static const int ids[] = {10, 11, 0, 12, 13};
	int r[5];

	ledger_attach(f->s, &pos);
	insert_n(f->s, 0, 1, vp_a);
	held_batch(f, f->s, ids, 5, r, NULL, &(struct timespec){0});
	for (int i = 0; i < 5; i++)
		assert_int_equal(r[i], ids[i] == 0 ? KY_ERR_EXISTS : 0);
	s2 = ledger_open(f, NULL, 0, 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(key_get_r(s2, ids[i]), 0);
	ky_store_close(s2);
}

/* Two processes (as two crypto units on one host) writing the same file. */
static void test_two_processes(void **state)
{
	struct fx *f = *state;
	uint64_t total = 0;
	int status = 0;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ky_store *s = NULL;
		struct ky_store_row row;
		int bad = 0;
		if (ky_store_open(f->uri, NULL, &s) != 0)
			_exit(2);
		for (int i = 0; i < 100; i++) {
			row_make(&row, 50000 + i, 1, 0, vp_a);
			bad |= ky_store_key_insert(s, &row) != 0;
			ky_store_row_release(&row);
		}
		ky_store_close(s);
		_exit(bad ? 1 : 0);
	}
	insert_n(f->s, 0, 100, vp_a);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(ky_store_key_count(f->s, NULL, &total), 0);
	assert_int_equal(total, 200);
}

/* A thread that exits releases its connection; the store goes on. */
static void *get_thread(void *p)
{
	struct ky_store_row got;
	struct ky_store *s = p;
	static int rc;

	rc = ky_store_key_get(s, "00000000-0000-4000-8000-000000000000", &got);
	ky_store_row_release(&got);
	return &rc;
}

static void test_thread_exit(void **state)
{
	struct fx *f = *state;
	pthread_t th;
	void *ret = NULL;

	insert_n(f->s, 0, 1, vp_a);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(pthread_create(&th, NULL, get_thread, f->s), 0);
		pthread_join(th, &ret);
		assert_int_equal(*(int *)ret, 0);
	}
}

/* ---- request ids ---- */

static void req_make(struct ky_store_request *q, const char *apikey, const char *id, int64_t t)
{
	memset(q, 0, sizeof(*q));
	snprintf(q->apikey, sizeof(q->apikey), "%s", apikey);
	snprintf(q->id, sizeof(q->id), "%s", id);
	memset(q->hash, 0x11, sizeof(q->hash));
	q->status = 201;
	q->created = t;
	memcpy(q->vp, vp_a, KY_VP_LEN);
	q->bodylen = 30;
	q->body = malloc(q->bodylen);
	assert_non_null(q->body);
	memset(q->body, 0x22, q->bodylen);
}

static void test_requests(void **state)
{
	struct fx *f = *state;
	struct ky_store_request q, got;
	struct ky_store_row row, kr;
	uint64_t n = 9;

	assert_int_equal(ky_store_request_get(f->s, "ak-1", "rid-1", &got), KY_ERR_NOT_FOUND);
	req_make(&q, "ak-1", "rid-1", 1000);
	assert_int_equal(ky_store_request_put(f->s, &q), 0);
	assert_int_equal(ky_store_request_put(f->s, &q), KY_ERR_EXISTS);
	assert_int_equal(ky_store_request_get(f->s, "ak-1", "rid-1", &got), 0);
	assert_string_equal(got.apikey, "ak-1");
	assert_string_equal(got.id, "rid-1");
	assert_memory_equal(got.hash, q.hash, KY_REQUEST_HASH_LEN);
	assert_int_equal(got.status, 201);
	assert_int_equal(got.created, 1000);
	assert_memory_equal(got.vp, vp_a, KY_VP_LEN);
	assert_int_equal(got.bodylen, q.bodylen);
	assert_memory_equal(got.body, q.body, q.bodylen);
	ky_store_request_release(&got);
	/* ids are per API key */
	assert_int_equal(ky_store_request_get(f->s, "ak-2", "rid-1", &got), KY_ERR_NOT_FOUND);
	snprintf(q.apikey, sizeof(q.apikey), "ak-2");
	q.created = 2000;
	assert_int_equal(ky_store_request_put(f->s, &q), 0);
	/* bad arguments */
	q.status = 99;
	assert_int_equal(ky_store_request_put(f->s, &q), KY_ERR_USAGE);
	q.status = 201;
	q.id[0] = '\0';
	assert_int_equal(ky_store_request_put(f->s, &q), KY_ERR_USAGE);
	assert_int_equal(ky_store_request_get(f->s, "ak-1", "", &got), KY_ERR_USAGE);
	/* expiry */
	assert_int_equal(ky_store_request_expire(f->s, 1500, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ky_store_request_get(f->s, "ak-1", "rid-1", &got), KY_ERR_NOT_FOUND);
	assert_int_equal(ky_store_request_get(f->s, "ak-2", "rid-1", &got), 0);
	ky_store_request_release(&got);
	/* in the transaction of a change: rolled back with it, committed with it */
	snprintf(q.apikey, sizeof(q.apikey), "ak-3");
	snprintf(q.id, sizeof(q.id), "rid-3");
	row_make(&row, 1, 1, 0, vp_a);
	assert_int_equal(ky_store_begin(f->s), 0);
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	assert_int_equal(ky_store_request_put(f->s, &q), 0);
	assert_int_equal(ky_store_rollback(f->s), 0);
	assert_int_equal(ky_store_request_get(f->s, "ak-3", "rid-3", &got), KY_ERR_NOT_FOUND);
	assert_int_equal(ky_store_key_get(f->s, row.id, &kr), KY_ERR_NOT_FOUND);
	assert_int_equal(ky_store_begin(f->s), 0);
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	assert_int_equal(ky_store_request_put(f->s, &q), 0);
	assert_int_equal(ky_store_commit(f->s), 0);
	assert_int_equal(ky_store_request_get(f->s, "ak-3", "rid-3", &got), 0);
	ky_store_request_release(&got);
	assert_int_equal(ky_store_key_get(f->s, row.id, &kr), 0);
	ky_store_row_release(&kr);
	ky_store_row_release(&row);
	ky_store_request_release(&q);
}

/* A store made before the requests table gets it on open. */
static void test_requests_upgrade(void **state)
{
	struct fx *f = *state;
	struct ky_store_request q, got;
	struct ky_store *s = NULL;

	TFX_SQLITE_ONLY(f);
	ky_store_close(f->s);
	f->s = NULL;
	sql(f->path, "DROP TABLE requests;");
	assert_int_equal(ky_store_open(f->uri, NULL, &s), 0);
	f->s = s;
	req_make(&q, "ak-1", "rid-1", 1000);
	assert_int_equal(ky_store_request_put(f->s, &q), 0);
	assert_int_equal(ky_store_request_get(f->s, "ak-1", "rid-1", &got), 0);
	ky_store_request_release(&got);
	ky_store_request_release(&q);
}

/* ---- PostgreSQL: the server's own failures ---- */

/* No server where the URI points: its own error, naming the storage and libpq's message; a
 * password in the URI is refused before any connection and never repeated. */
static void test_pg_unreachable_password(void **state)
{
	struct fx *f = *state;
	struct ky_store *s = NULL;
	char why[512];

	TFX_PG_ONLY(f);
	assert_int_equal(ky_store_open("postgresql://kyok@/kyok?host=/nonexistent-kyok-dir&"
	                               "connect_timeout=5",
	                               NULL, &s),
	                 KY_ERR_STORE_UNREACHABLE);
	assert_null(s);
	ky_store_open_failure(why, sizeof(why));
	assert_non_null(strstr(why, "key storage 'postgresql://kyok@/nonexistent-kyok-dir/kyok'"));
	assert_non_null(strstr(why, "PostgreSQL: "));
	assert_non_null(strstr(why, "nonexistent-kyok-dir")); /* libpq's own words */
	assert_int_equal(
	    ky_store_open("postgresql://kyok:Secret-Pw-7@/kyok?host=/nonexistent", NULL, &s),
	    KY_ERR_STORE_PASSWORD);
	assert_int_equal(
	    ky_store_open("postgres:///kyok?host=/nonexistent&password=Secret-Pw-7", NULL, &s),
	    KY_ERR_STORE_PASSWORD);
	ky_store_open_failure(why, sizeof(why));
	assert_null(strstr(why, "Secret-Pw-7"));
	assert_int_equal(ky_store_open("postgresql:kyok", NULL, &s), KY_ERR_CONFIG);
}

/* The server ends the unit's connections (a restart, a failover): a read made outside a
 * transaction is made again on a new connection; a transaction in flight fails and is never
 * retried. */
static void test_pg_reconnect(void **state)
{
	struct fx *f = *state;
	struct ky_store_row row, got;
	static const char kill[] =
	    "SELECT pg_terminate_backend(pid, 30000) FROM pg_stat_activity WHERE pid <> "
	    "pg_backend_pid() AND datname = current_database() AND backend_type = 'client backend'";
	char why[512];

	TFX_PG_ONLY(f);
	insert_n(f->s, 0, 2, vp_a);
	row_make(&row, 0, 1, 0, vp_a);
	tfx_sql(f->path, kill);
	assert_int_equal(ky_store_key_get(f->s, row.id, &got), 0);
	ky_store_row_release(&got);
	tfx_sql(f->path, kill);
	ky_store_row_release(&row);
	row_make(&row, 7, 1, 0, vp_a);
	assert_int_equal(ky_store_key_insert(f->s, &row), 0); /* BEGIN made again */
	ky_store_row_release(&row);
	assert_int_equal(ky_store_begin(f->s), 0);
	tfx_sql(f->path, kill);
	row_make(&row, 8, 1, 0, vp_a);
	ky_store_failure_clear(f->s);
	assert_int_equal(ky_store_key_insert(f->s, &row), KY_ERR_STORE_UNREACHABLE);
	ky_store_failure(f->s, why, sizeof(why));
	assert_non_null(strstr(why, "PostgreSQL: "));
	assert_int_equal(ky_store_rollback(f->s), 0);
	assert_int_equal(ky_store_key_get(f->s, row.id, &got), KY_ERR_NOT_FOUND);
	assert_int_equal(ky_store_key_insert(f->s, &row), 0);
	ky_store_row_release(&row);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_open_uri, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_open_file_mode_wal, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_open_schema_newer, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_open_instance_binding, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_key_insert_get, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_key_update_cas, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_key_list_filters, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_key_limit, fx_setup_limit3, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_key_limit_counter_tracks_sql_delete,
	                                    fx_setup_limit3, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_key_limit_per_vp, fx_setup_limit3, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_key_count_by_state, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_key_count_by_state_upgrade, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_upgrade_old_store, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_transactions, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_key_aliases, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_key_aliases_upgrade, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_busy_other_writer, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_plan_uses_index, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_tampered_columns_refused, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_vp_count_fetch_swap, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_secrets, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_apikeys, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit_threads, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit_committer, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit_limit, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit_refused_row, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_changed_window, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_no_group_commit_threads, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit_bad_row, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit_batch_limit, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit_batch_limit_room, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_changed_window_writes, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_ledger_group_commit_batch, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_two_processes, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_thread_exit, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_changed, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_changed_threads, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_changed_quiet_inserts, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_changed_quiet_rows, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_changed_quiet_edges, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_changes_every_write, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_changes_too_old, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_changes_other_handle, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_changes_pg, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_ledger_record_rollback, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_ledger_two_handles, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_ledger_secrets_apikeys, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_ledger_whole_rollback, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_ledger_digest_refusals, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_ledger_vp_swap, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_requests, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_requests_upgrade, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_pg_unreachable_password, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_pg_reconnect, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
