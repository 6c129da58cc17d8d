/* kyok backup, kyok restore: key storage copied while the crypto units run, and put back
 * while they are stopped.
 *
 * A backup is two files:
 *   FILE                 a copy of the SQLite key storage, made with SQLite's online backup
 *                        API from one read snapshot (writers go on meanwhile: WAL), in
 *                        rollback-journal mode so that it is one self-contained file
 *   FILE.manifest.json   what the copy holds (docs/formats.md): instance, time, SHA-256 of
 *                        FILE, schema, counts, the master key VPs its records are sealed
 *                        under (with the key part VPs the units report for them), and the
 *                        position of the storage digest
 * Both are written to a temporary name, fsync'd, and linked into place (an existing FILE is
 * never replaced), 0600. The backup holds only sealed records, as key storage does.
 *
 * Every backup made is listed in <instance>/backups.json, so that 'kyok tke mk-rm' can name
 * the backups that need a key part about to be deleted.
 *
 * kyok restore (cli/restore.c) puts a backup back; what it uses of this file is declared in
 * cli/backup.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/backup.h"
#include "cli/cli.h"
#include "cli/cmds.h"
#include "kyok/store.h"

#define BK_LIST             "backups.json"
#define BK_LIST_MAX         (4 * 1024 * 1024)
#define BK_BUSY_MS          10000
#define BK_CONF_MAX         (64 * 1024)
#define BK_INTEGRITY_SECRET KY_STORE_LEDGER_SECRET

/* ---- small helpers ---- */

static void bk_now(char out[32])
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* SHA-256 of a file, as hex. */
int bk_file_sha256(const char *path, char hex[2 * 32 + 1])
{
	int r = KY_ERR_INTERNAL, fd = -1;
	EVP_MD_CTX *ctx = NULL;
	uint8_t buf[65536], md[32];
	unsigned int mdlen = 0;
	ssize_t got;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		r = errno == ENOENT ? KY_ERR_NOT_FOUND : KY_ERR_IO;
		goto out;
	}
	if ((ctx = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	while ((got = read(fd, buf, sizeof(buf))) != 0) {
		if (got < 0) {
			if (errno == EINTR)
				continue;
			r = KY_ERR_IO;
			goto out;
		}
		if (EVP_DigestUpdate(ctx, buf, (size_t)got) != 1) {
			r = KY_ERR_CRYPTO;
			goto out;
		}
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != sizeof(md)) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	ky_hex_encode(md, sizeof(md), hex);
	r = 0;
out:
	EVP_MD_CTX_free(ctx);
	if (fd >= 0)
		close(fd);
	return r;
}

int bk_fsync_path(const char *path, bool dir)
{
	int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
	int r = KY_ERR_IO;

	if (fd < 0)
		return KY_ERR_IO;
	if (fsync(fd) == 0)
		r = 0;
	close(fd);
	return r;
}

/* The directory part of path ("." when none). */
void bk_dirname(const char *path, char *out, size_t n)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		snprintf(out, n, ".");
	else if (slash == path)
		snprintf(out, n, "/");
	else
		snprintf(out, n, "%.*s", (int)(slash - path), path);
}

bool bk_exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* ---- where the instance keeps key storage ---- */

/* The value of "store = ..." in a unit.conf text, or NULL. Pure. */
static const char *bk_conf_store(char *text)
{
	char *save = NULL;

	for (char *line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *p = line, *end;
		while (*p == ' ' || *p == '\t')
			p++;
		if (strncmp(p, "store", 5) != 0)
			continue;
		p += 5;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != '=')
			continue;
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		end = p + strlen(p);
		while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
			*--end = '\0';
		return p;
	}
	return NULL;
}

/* The SQLite file every unit.conf of the instance names (store = sqlite:PATH); an instance
 * whose unit directories hold no unit.conf: <dir>/keys.db. */
int bk_store_path(const struct cli_instance *inst, char *out, size_t n)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	char conf[700], first[700] = "";
	bool found = false;

	for (size_t i = 0; i < inst->nunits; i++) {
		const char *store;
		snprintf(conf, sizeof(conf), "%s/unit-%d/unit.conf", inst->dir,
		         inst->units[i].number);
		ky_buf_free(&b);
		if ((r = ky_file_read(conf, BK_CONF_MAX, &b)) == KY_ERR_NOT_FOUND)
			continue;
		if (r != 0) {
			cli_fail(r, conf, NULL);
			goto out;
		}
		if ((r = ky_buf_append(&b, "", 1)) != 0)
			goto out;
		store = bk_conf_store((char *)b.data);
		if (store == NULL)
			continue; /* a unit without key storage */
		if (strncmp(store, "sqlite:", 7) != 0) {
			r = KY_ERR_BACKUP_NOT_SQLITE;
			cli_fail(r, conf, "its key storage is 'store = %s'", store);
			goto out;
		}
		if (!found) {
			snprintf(first, sizeof(first), "%s", store + 7);
			snprintf(out, n, "%s", store + 7);
			found = true;
		} else if (strcmp(first, store + 7) != 0) {
			r = KY_ERR_CONFIG;
			cli_fail(r, conf,
			         "names key storage '%s', another unit of the instance '%s': the "
			         "units of an instance share one key storage",
			         store + 7, first);
			goto out;
		}
	}
	if (!found)
		snprintf(out, n, "%s/keys.db", inst->dir);
	r = 0;
out:
	ky_buf_free(&b);
	return r;
}

/* ---- reading a copy of key storage ---- */

static int bk_sq_err(sqlite3 *db, const char *path, const char *what)
{
	int r = sqlite3_errcode(db) == SQLITE_BUSY ? KY_ERR_STORE_BUSY : KY_ERR_STORE;
	cli_fail(r, path, "%s: %s", what, sqlite3_errmsg(db));
	return r;
}

static struct bk_vp *bk_vp_slot(struct bk_contents *c, const char *vp)
{
	for (size_t i = 0; i < c->nvps; i++)
		if (strcmp(c->vps[i].vp, vp) == 0)
			return &c->vps[i];
	if (c->nvps == BACKUP_MAX_VPS)
		return NULL;
	memset(&c->vps[c->nvps], 0, sizeof(c->vps[0]));
	snprintf(c->vps[c->nvps].vp, sizeof(c->vps[0].vp), "%s", vp);
	return &c->vps[c->nvps++];
}

/* Rows of table grouped by the master key VP they are sealed under. */
static int bk_count_vps(sqlite3 *db, const char *path, const char *table, struct bk_contents *c)
{
	int r = KY_ERR_INTERNAL, rc;
	sqlite3_stmt *st = NULL;
	char sql[128];

	snprintf(sql, sizeof(sql), "SELECT lower(hex(vp)), count(*) FROM %s GROUP BY vp", table);
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		r = bk_sq_err(db, path, "cannot read the master key VPs");
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *vp = (const char *)sqlite3_column_text(st, 0);
		struct bk_vp *s;
		if (vp == NULL || strlen(vp) != BACKUP_VP_HEX) {
			r = KY_ERR_BACKUP_MISMATCH;
			cli_fail(r, path, "a row of '%s' has no valid master key VP", table);
			goto out;
		}
		if ((s = bk_vp_slot(c, vp)) == NULL) {
			r = KY_ERR_BACKUP_MISMATCH;
			cli_fail(r, path, "records under more than %d master keys", BACKUP_MAX_VPS);
			goto out;
		}
		if (strcmp(table, "keys") == 0)
			s->keys = sqlite3_column_int64(st, 1);
		else
			s->secrets = sqlite3_column_int64(st, 1);
	}
	if (rc != SQLITE_DONE) {
		r = bk_sq_err(db, path, "cannot read the master key VPs");
		goto out;
	}
	r = 0;
out:
	sqlite3_finalize(st);
	return r;
}

/* One text or number value of a one-row query into out (NULL out: a number into *num).
 * KY_ERR_NOT_FOUND when the query has no row. */
static int bk_query_one(sqlite3 *db, const char *path, const char *sql, char *out, size_t n,
                        long long *num)
{
	int r = KY_ERR_INTERNAL, rc;
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		r = bk_sq_err(db, path, "cannot read key storage");
		goto out;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		r = KY_ERR_NOT_FOUND;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		r = bk_sq_err(db, path, "cannot read key storage");
		goto out;
	}
	if (out != NULL)
		snprintf(out, n, "%s",
		         sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0)
		                                    : "");
	else
		*num = sqlite3_column_int64(st, 0);
	r = 0;
out:
	sqlite3_finalize(st);
	return r;
}

static bool bk_has_table(sqlite3 *db, const char *table)
{
	sqlite3_stmt *st = NULL;
	bool has = false;

	if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
	                       -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC) == SQLITE_OK)
		has = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	return has;
}

/* What a key storage file holds (opened read-only; the units may be running on it). */
int bk_read_contents(const char *path, bool check, struct bk_contents *c)
{
	int r = KY_ERR_INTERNAL;
	sqlite3 *db = NULL;
	char ok[64] = "";
	long long v = 0;

	memset(c, 0, sizeof(*c));
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		r = KY_ERR_STORE;
		cli_fail(r, path, "cannot open key storage: %s",
		         db ? sqlite3_errmsg(db) : "out of memory");
		goto out;
	}
	sqlite3_busy_timeout(db, BK_BUSY_MS);
	if (check) {
		if ((r = bk_query_one(db, path, "PRAGMA quick_check", ok, sizeof(ok), NULL)) != 0)
			goto out;
		if (strcmp(ok, "ok") != 0) {
			r = KY_ERR_STORE_DAMAGED;
			cli_fail(r, path, "SQLite quick_check: %s", ok);
			goto out;
		}
	}
	if (!bk_has_table(db, "meta") || !bk_has_table(db, "keys") ||
	    !bk_has_table(db, "secrets")) {
		r = KY_ERR_BACKUP_MISMATCH;
		cli_fail(r, path, "not kyok key storage (no meta, keys or secrets table)");
		goto out;
	}
	if ((r = bk_query_one(db, path, "SELECT v FROM meta WHERE k = 'schema'", c->schema,
	                      sizeof(c->schema), NULL)) != 0 ||
	    (r = bk_query_one(db, path, "SELECT v FROM meta WHERE k = 'instance'", c->instance,
	                      sizeof(c->instance), NULL)) != 0) {
		if (r == KY_ERR_NOT_FOUND) {
			r = KY_ERR_BACKUP_MISMATCH;
			cli_fail(r, path,
			         "key storage names no schema or no instance (meta table)");
		}
		goto out;
	}
	if ((r = bk_query_one(db, path, "SELECT count(*) FROM keys", NULL, 0, &c->keys)) != 0)
		goto out;
	if (bk_has_table(db, "api_keys") &&
	    (r = bk_query_one(db, path, "SELECT count(*) FROM api_keys", NULL, 0, &c->api_keys)) !=
	        0)
		goto out;
	if ((r = bk_count_vps(db, path, "keys", c)) != 0 ||
	    (r = bk_count_vps(db, path, "secrets", c)) != 0)
		goto out;
	r = bk_query_one(
	    db, path, "SELECT lower(hex(vp)) FROM secrets WHERE name = '" BK_INTEGRITY_SECRET "'",
	    c->integrity_vp, sizeof(c->integrity_vp), NULL);
	if (r != 0 && r != KY_ERR_NOT_FOUND)
		goto out;
	if (bk_has_table(db, "ledger")) {
		r = bk_query_one(db, path, "SELECT gen FROM ledger WHERE k = 1", NULL, 0, &c->gen);
		if (r == 0) {
			c->has_digest = true;
			if ((r = bk_query_one(db, path, "SELECT epoch FROM ledger WHERE k = 1",
			                      NULL, 0, &c->epoch)) != 0 ||
			    (r = bk_query_one(db, path, "SELECT n FROM ledger WHERE k = 1", NULL, 0,
			                      &v)) != 0)
				goto out;
			c->digest_records = v;
		} else if (r != KY_ERR_NOT_FOUND) {
			goto out;
		}
	}
	r = 0;
out:
	sqlite3_close(db);
	return r;
}

/* ---- the online copy ---- */

/* Copies the live key storage at src into the new file dst (created 0600 here) from one read
 * snapshot, then turns the copy into a self-contained rollback-journal database. */
static int bk_copy_online(const char *src, const char *dst)
{
	int r = KY_ERR_INTERNAL, fd = -1, rc;
	sqlite3 *from = NULL, *to = NULL;
	sqlite3_backup *b = NULL;
	char *err = NULL;

	if ((fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
		r = errno == EEXIST ? KY_ERR_EXISTS : KY_ERR_IO;
		cli_fail(r, dst, "cannot create: %s", strerror(errno));
		goto out;
	}
	close(fd);
	fd = -1;
	if (sqlite3_open_v2(src, &from, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		r = KY_ERR_STORE;
		cli_fail(r, src, "cannot open key storage: %s",
		         from ? sqlite3_errmsg(from) : "out of memory");
		goto out_unlink;
	}
	sqlite3_busy_timeout(from, BK_BUSY_MS);
	if (sqlite3_open_v2(dst, &to, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		r = KY_ERR_IO;
		cli_fail(r, dst, "cannot open: %s", to ? sqlite3_errmsg(to) : "out of memory");
		goto out_unlink;
	}
	if ((b = sqlite3_backup_init(to, "main", from, "main")) == NULL) {
		r = bk_sq_err(to, src, "cannot start the copy");
		goto out_unlink;
	}
	/* All pages in one step: one read snapshot of the source (WAL: writers are not held). */
	rc = sqlite3_backup_step(b, -1);
	if (rc != SQLITE_DONE) {
		r = rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? KY_ERR_STORE_BUSY : KY_ERR_STORE;
		cli_fail(r, src, "cannot copy key storage: %s", sqlite3_errstr(rc));
		goto out_unlink;
	}
	rc = sqlite3_backup_finish(b);
	b = NULL;
	if (rc != SQLITE_OK) {
		r = KY_ERR_STORE;
		cli_fail(r, src, "cannot copy key storage: %s", sqlite3_errstr(rc));
		goto out_unlink;
	}
	if (sqlite3_exec(to, "PRAGMA journal_mode = DELETE", NULL, NULL, &err) != SQLITE_OK) {
		r = KY_ERR_STORE;
		cli_fail(r, dst, "cannot make the copy self-contained: %s", err ? err : "?");
		goto out_unlink;
	}
	if (sqlite3_close(to) != SQLITE_OK) {
		r = KY_ERR_IO;
		cli_fail(r, dst, "cannot close the copy");
		to = NULL;
		goto out_unlink;
	}
	to = NULL;
	if ((r = bk_fsync_path(dst, false)) != 0) {
		cli_fail(r, dst, "cannot write the copy to disk: %s", strerror(errno));
		goto out_unlink;
	}
	r = 0;
	goto out;
out_unlink:
	if (b != NULL)
		sqlite3_backup_finish(b);
	b = NULL;
	sqlite3_close(to);
	to = NULL;
	unlink(dst);
out:
	sqlite3_free(err);
	sqlite3_close(to);
	sqlite3_close(from);
	return r;
}

/* ---- the units' registers: which master key each VP is, and its key parts ---- */

/* The state of the first unit of the instance that answers, or NULL (then the manifest
 * records no key parts). */
static json_t *bk_unit_state(const struct cli_instance *inst, int *number)
{
	char why[256];

	for (size_t i = 0; i < inst->nunits; i++) {
		json_t *st = NULL;
		if (unit_health(&inst->units[i], why, sizeof(why)) != 0)
			continue;
		if (unit_state(inst, &inst->units[i], &st) == 0) {
			*number = inst->units[i].number;
			return st;
		}
	}
	return NULL;
}

/* {"vp", "keys", "secrets", "register", "part_vps"} for each VP of the copy. */
static json_t *bk_vps_json(const struct bk_contents *c, const json_t *state)
{
	static const char *const regs[][2] = {{"current_mk", "current"}, {"new_mk", "new"}};
	json_t *arr = json_array();

	for (size_t i = 0; arr != NULL && i < c->nvps; i++) {
		const char *reg = NULL;
		const json_t *parts = NULL;
		json_t *o;
		for (size_t k = 0; state != NULL && k < 2; k++) {
			const json_t *rj = json_object_get(state, regs[k][0]);
			const char *vp = json_string_value(json_object_get(rj, "vp"));
			if (vp != NULL && strcmp(vp, c->vps[i].vp) == 0) {
				reg = regs[k][1];
				parts = json_object_get(rj, "part_vps");
				break;
			}
		}
		o = json_pack("{s:s, s:I, s:I, s:s*, s:O*}", "vp", c->vps[i].vp, "keys",
		              (json_int_t)c->vps[i].keys, "secrets", (json_int_t)c->vps[i].secrets,
		              "register", reg, "part_vps", parts);
		if (o == NULL || json_array_append_new(arr, o) != 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

/* ---- the list of backups in the instance directory ---- */

/* Adds a backup to <dir>/backups.json: {"backups": [{"file", "manifest", "created",
 * "master_keys": [{"vp", "part_vps"?}]}]}. */
static int bk_list_add(const char *dir, const char *file, const char *manifest, const char *created,
                       const json_t *vps)
{
	int r = KY_ERR_INTERNAL;
	char path[700];
	struct ky_buf b = {0};
	json_t *list = NULL, *arr, *entry = NULL;
	json_error_t jerr;
	char *text = NULL;

	snprintf(path, sizeof(path), "%s/%s", dir, BK_LIST);
	r = ky_file_read(path, BK_LIST_MAX, &b);
	if (r == 0) {
		list = json_loadb((const char *)b.data, b.len, 0, &jerr);
		if (list == NULL || !json_is_array(json_object_get(list, "backups"))) {
			r = KY_ERR_MALFORMED;
			cli_fail(r, path,
			         "not a list of backups: move it away and run kyok backup "
			         "again");
			goto out;
		}
	} else if (r == KY_ERR_NOT_FOUND) {
		if ((list = json_pack("{s:[]}", "backups")) == NULL) {
			r = KY_ERR_NOMEM;
			goto out;
		}
	} else {
		cli_fail(r, path, NULL);
		goto out;
	}
	arr = json_object_get(list, "backups");
	entry = json_pack("{s:s, s:s, s:s, s:O}", "file", file, "manifest", manifest, "created",
	                  created, "master_keys", vps);
	if (entry == NULL || json_array_append(arr, entry) != 0) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((text = json_dumps(list, JSON_INDENT(2) | JSON_SORT_KEYS)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = ky_file_write_atomic(path, text, strlen(text), 0600)) != 0) {
		cli_fail(r, path, "cannot write the list of backups");
		goto out;
	}
	r = 0;
out:
	free(text);
	json_decref(entry);
	json_decref(list);
	ky_buf_free(&b);
	return r;
}

int backup_list_load(const char *dir, json_t **out)
{
	int r = KY_ERR_INTERNAL;
	char path[700];
	struct ky_buf b = {0};
	json_t *list = NULL;
	json_error_t jerr;

	*out = NULL;
	snprintf(path, sizeof(path), "%s/%s", dir, BK_LIST);
	if ((r = ky_file_read(path, BK_LIST_MAX, &b)) != 0) {
		if (r != KY_ERR_NOT_FOUND)
			cli_fail(r, path, NULL);
		goto out;
	}
	list = json_loadb((const char *)b.data, b.len, 0, &jerr);
	if (list == NULL || !json_is_array(json_object_get(list, "backups"))) {
		r = KY_ERR_MALFORMED;
		cli_fail(r, path, "not a list of backups (line %d: %s)", jerr.line, jerr.text);
		goto out;
	}
	*out = list;
	list = NULL; /* transferred */
	r = 0;
out:
	json_decref(list);
	ky_buf_free(&b);
	return r;
}

/* ---- kyok backup ---- */

static const char backup_usage[] =
    "usage: kyok backup --out FILE [--instance DIR]\n"
    "\n"
    "Copies the instance's key storage while its crypto units run: one consistent\n"
    "snapshot, taken with SQLite's online backup API (the units go on reading and\n"
    "writing), into FILE, and writes FILE.manifest.json beside it: the instance, the\n"
    "time, the SHA-256 of FILE, the number of keys, the master key VPs the records are\n"
    "sealed under (and, from a unit that answers, which register holds each and the VPs\n"
    "of its key parts), and the position of the storage digest. Both files are new\n"
    "(an existing FILE is not replaced), 0600, written whole or not at all.\n"
    "\n"
    "A backup holds only sealed records, as key storage does: no key is in it in the\n"
    "clear. It is worth nothing without the master key its records are sealed under:\n"
    "keep the key parts of that master key (and their passwords) as long as the backup\n"
    "may be restored, also after a rotation. Each backup is listed in the instance\n"
    "directory's backups.json; 'kyok tke mk-rm' names those that need a part it deletes.\n"
    "'kyok restore --from FILE' puts a backup back.\n"
    "\n";

int backup_main(int argc, char **argv)
{
	enum { OPT_OUT = 0x2001 };
	static const struct cli_opt opts[] = {
	    {"out", OPT_OUT, CLI_ARG_REQUIRED, "FILE",
	     "the copy to write (FILE.manifest.json is written too)"},
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, c, number = 0;
	const char *out_arg = NULL;
	char store[PATH_MAX], outp[PATH_MAX], dir[PATH_MAX], tmp[PATH_MAX + 32];
	char mpath[PATH_MAX + 32], mtmp[PATH_MAX + 64], created[32], sha[65];
	struct cli_instance inst;
	struct bk_contents ct;
	json_t *state = NULL, *vps = NULL, *manifest = NULL;
	char *text = NULL;
	bool linked_copy = false, linked_manifest = false, missing;
	struct stat st;

	tmp[0] = mtmp[0] = '\0';
	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, backup_usage, opts, cli_common_opts);
			return 0;
		}
		if (c == OPT_OUT)
			out_arg = optarg;
		else if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	if (out_arg == NULL || out_arg[0] == '\0') {
		r = KY_ERR_USAGE;
		cli_fail(r, "kyok backup", "--out FILE is needed: the file to write the copy to");
		return ky_err_exit(r);
	}
	if ((r = cli_instance_load(&inst)) != 0)
		return ky_err_exit(r);
	if ((r = bk_store_path(&inst, store, sizeof(store))) != 0)
		goto out;
	missing = stat(store, &st) != 0;
	if (missing || st.st_size == 0) {
		r = KY_ERR_STORAGE_MISSING;
		cli_fail(r, store, "no key storage to copy there%s",
		         missing ? "" : " (the file is empty)");
		goto out;
	}
	/* The output's directory, made absolute: the list of backups names it from anywhere. */
	bk_dirname(out_arg, dir, sizeof(dir));
	if (realpath(dir, outp) == NULL) {
		r = KY_ERR_IO;
		cli_fail(r, dir, "the directory of --out: %s", strerror(errno));
		goto out;
	}
	{
		const char *base = strrchr(out_arg, '/');
		base = base != NULL ? base + 1 : out_arg;
		if (base[0] == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
			r = KY_ERR_USAGE;
			cli_fail(r, out_arg, "--out names a directory: give a file name");
			goto out;
		}
		snprintf(dir, sizeof(dir), "%s", outp);
		if ((size_t)snprintf(outp, sizeof(outp), "%s/%s", dir, base) >= sizeof(outp)) {
			r = KY_ERR_USAGE;
			cli_fail(r, out_arg, "path too long");
			goto out;
		}
	}
	snprintf(mpath, sizeof(mpath), "%s%s", outp, BK_MANIFEST_SUFFIX);
	if (bk_exists(outp) || bk_exists(mpath)) {
		r = KY_ERR_EXISTS;
		cli_fail(r, bk_exists(outp) ? outp : mpath,
		         "a backup never replaces a file: choose another --out, or move this one "
		         "away");
		goto out;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", outp, (long)getpid());
	if ((r = bk_copy_online(store, tmp)) != 0) {
		tmp[0] = '\0';
		goto out;
	}
	if ((r = bk_read_contents(tmp, true, &ct)) != 0)
		goto out;
	if (strcmp(ct.instance, inst.id) != 0) {
		r = KY_ERR_BACKUP_WRONG_INSTANCE;
		cli_fail(r, store, "key storage of instance '%s', but instance.json names '%s'",
		         ct.instance, inst.id);
		goto out;
	}
	if ((r = bk_file_sha256(tmp, sha)) != 0) {
		cli_fail(r, tmp, "cannot read the copy back");
		goto out;
	}
	state = bk_unit_state(&inst, &number);
	if ((vps = bk_vps_json(&ct, state)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	bk_now(created);
	{
		const char *base = strrchr(outp, '/') + 1;
		manifest = json_pack(
		    "{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:I, s:I, s:O, s:s?, s:o, s:s}", "format",
		    BACKUP_FORMAT, "instance", ct.instance, "created", created, "file", base,
		    "sha256", sha, "size", (json_int_t)0, "schema", ct.schema, "keys",
		    (json_int_t)ct.keys, "api_keys", (json_int_t)ct.api_keys, "master_keys", vps,
		    "integrity_key_vp", ct.integrity_vp[0] ? ct.integrity_vp : NULL,
		    "storage_digest",
		    ct.has_digest
		        ? json_pack("{s:I, s:I, s:I}", "generation", (json_int_t)ct.gen, "epoch",
		                    (json_int_t)ct.epoch, "records", (json_int_t)ct.digest_records)
		        : json_null(),
		    "contents",
		    "sealed records only: every key and secret is encrypted under the "
		    "master key its VP names; no key in the clear");
	}
	if (manifest == NULL || stat(tmp, &st) != 0 ||
	    json_object_set_new(manifest, "size", json_integer((json_int_t)st.st_size)) != 0 ||
	    (state != NULL &&
	     json_object_set_new(manifest, "registers_from_unit", json_integer(number)) != 0) ||
	    (text = json_dumps(manifest, JSON_INDENT(2) | JSON_SORT_KEYS)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	snprintf(mtmp, sizeof(mtmp), "%s.tmp.%ld", mpath, (long)getpid());
	if ((r = ky_file_write_atomic(mtmp, text, strlen(text), 0600)) != 0) {
		cli_fail(r, mtmp, "cannot write the manifest");
		mtmp[0] = '\0';
		goto out;
	}
	/* link(): never replaces a file someone made meanwhile. The copy first, the manifest
	 * last: a manifest is there only for a whole copy. Both go again if the list of backups
	 * cannot name them: nothing is left half done. */
	if (link(tmp, outp) != 0) {
		r = errno == EEXIST ? KY_ERR_EXISTS : KY_ERR_IO;
		cli_fail(r, outp, "%s", strerror(errno));
		goto out;
	}
	linked_copy = true;
	if (link(mtmp, mpath) != 0) {
		r = errno == EEXIST ? KY_ERR_EXISTS : KY_ERR_IO;
		cli_fail(r, mpath, "%s", strerror(errno));
		goto out;
	}
	linked_manifest = true;
	if ((r = bk_fsync_path(dir, true)) != 0) {
		cli_fail(r, dir, "cannot write the directory to disk");
		goto out;
	}
	if ((r = bk_list_add(inst.dir, outp, mpath, created, vps)) != 0)
		goto out;
	linked_copy = linked_manifest = false; /* in place, and listed */
	if (cli_g.json) {
		cli_print_json(json_incref(manifest));
	} else {
		printf("backup of instance %s written: %s\n", ct.instance, outp);
		printf("  manifest        %s\n", mpath);
		printf("  keys            %lld (API keys %lld)\n", ct.keys, ct.api_keys);
		for (size_t i = 0; i < json_array_size(vps); i++) {
			const json_t *v = json_array_get(vps, i);
			const char *reg = json_string_value(json_object_get(v, "register"));
			printf("  master key VP   %s (%s)\n",
			       json_string_value(json_object_get(v, "vp")),
			       reg != NULL ? reg : "no register of the units holds it");
		}
		if (ct.has_digest)
			printf("  storage digest  generation %lld, epoch %lld\n", ct.gen, ct.epoch);
		printf("keep the key parts of %s as long as this backup may be restored\n",
		       json_array_size(vps) == 1 ? "this master key" : "these master keys");
	}
	if (state == NULL)
		fprintf(stderr, "note: no crypto unit answered: the manifest does not say which "
		                "register holds each master key, nor its key parts\n");
	r = 0;
out:
	if (linked_manifest)
		unlink(mpath);
	if (linked_copy)
		unlink(outp);
	if (tmp[0] != '\0')
		unlink(tmp);
	if (mtmp[0] != '\0')
		unlink(mtmp);
	free(text);
	json_decref(manifest);
	json_decref(vps);
	json_decref(state);
	return ky_err_exit(r);
}
