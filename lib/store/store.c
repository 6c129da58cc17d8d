/* Key storage dispatch: picks the backend by URI scheme and forwards every call to its table. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/err.h"
#include "kyok/store.h"

struct ky_store {
	const struct ky_store_ops *ops;
	void *be;
	uint32_t key_limit;
};

static const struct ky_store_ops *const store_backends[] = {
    &ky_store_sqlite_ops,
    &ky_store_pg_ops,
    &ky_store_pg_short_ops,
};

static const struct ky_store_ops *store_find_backend(const char *uri, const char **location)
{
	const char *colon = strchr(uri, ':');

	if (colon == NULL || colon == uri)
		return NULL;
	for (size_t i = 0; i < sizeof(store_backends) / sizeof(store_backends[0]); i++) {
		const char *scheme = store_backends[i]->scheme;
		size_t n = strlen(scheme);
		if ((size_t)(colon - uri) == n && memcmp(uri, scheme, n) == 0) {
			*location = colon + 1;
			return store_backends[i];
		}
	}
	return NULL;
}

/* The backend of the last open that failed on this thread (ky_store_open_failure). */
static _Thread_local const struct ky_store_ops *store_open_failed;

int ky_store_open(const char *uri, const struct ky_store_opts *opts, struct ky_store **out)
{
	int r = KY_ERR_INTERNAL;
	struct ky_store_opts o = {0};
	struct ky_store *s = NULL;
	const char *location = NULL;
	const struct ky_store_ops *ops;

	*out = NULL;
	if (uri == NULL)
		return KY_ERR_CONFIG;
	if (opts != NULL)
		o = *opts;
	if (o.key_limit == 0)
		o.key_limit = KY_STORE_KEY_LIMIT_DEFAULT;
	if (o.busy_timeout_ms <= 0)
		o.busy_timeout_ms = KY_STORE_BUSY_MS_DEFAULT;
	if ((ops = store_find_backend(uri, &location)) == NULL || *location == '\0') {
		r = KY_ERR_CONFIG;
		goto out;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	s->ops = ops;
	s->key_limit = o.key_limit;
	if ((r = ops->open(location, &o, &s->be)) != 0) {
		store_open_failed = ops;
		goto out;
	}
	*out = s;
	s = NULL; /* transferred */
	r = 0;
out:
	free(s);
	return r;
}

void ky_store_close(struct ky_store *s)
{
	if (s == NULL)
		return;
	s->ops->close(s->be);
	free(s);
}

uint32_t ky_store_key_limit(const struct ky_store *s)
{
	return s->key_limit;
}

int ky_store_begin(struct ky_store *s)
{
	return s->ops->begin(s->be);
}

int ky_store_commit(struct ky_store *s)
{
	return s->ops->commit(s->be);
}

int ky_store_rollback(struct ky_store *s)
{
	return s->ops->rollback(s->be);
}

static int store_check_row(const struct ky_store_row *row)
{
	if (row->blob == NULL || row->bloblen == 0 || strlen(row->id) != KY_UUID_LEN ||
	    row->naliases > KY_KEY_ALIASES_MAX)
		return KY_ERR_USAGE;
	for (size_t i = 0; i < row->naliases; i++)
		if (row->aliases[i] == NULL || row->aliases[i][0] == '\0' ||
		    strlen(row->aliases[i]) > KY_KEY_ALIAS_MAX)
			return KY_ERR_USAGE;
	return 0;
}

int ky_store_key_insert(struct ky_store *s, struct ky_store_row *row)
{
	int r;

	if ((r = store_check_row(row)) != 0)
		return r;
	return s->ops->key_insert(s->be, row);
}

int ky_store_key_update(struct ky_store *s, struct ky_store_row *row)
{
	int r;

	if ((r = store_check_row(row)) != 0)
		return r;
	return s->ops->key_update(s->be, row);
}

int ky_store_key_get(struct ky_store *s, const char *id, struct ky_store_row *row)
{
	memset(row, 0, sizeof(*row));
	if (id == NULL || strlen(id) != KY_UUID_LEN)
		return KY_ERR_NOT_FOUND;
	return s->ops->key_get(s->be, id, row);
}

int ky_store_key_delete(struct ky_store *s, const char *id, int64_t rev)
{
	if (id == NULL || strlen(id) != KY_UUID_LEN)
		return KY_ERR_NOT_FOUND;
	return s->ops->key_delete(s->be, id, rev);
}

int ky_store_alias_find(struct ky_store *s, const char *alias, char id[KY_UUID_LEN + 1])
{
	id[0] = '\0';
	if (alias == NULL || alias[0] == '\0' || strlen(alias) > KY_KEY_ALIAS_MAX)
		return KY_ERR_NOT_FOUND;
	return s->ops->alias_find(s->be, alias, id);
}

int ky_store_key_list(struct ky_store *s, const struct ky_store_filter *f, uint32_t limit,
                      uint64_t offset, struct ky_store_row **rows, size_t *n)
{
	const struct ky_store_filter all = {.states = 0, .extractable = -1};

	*rows = NULL;
	*n = 0;
	return s->ops->key_list(s->be, f ? f : &all, limit, offset, rows, n);
}

int ky_store_key_count(struct ky_store *s, const struct ky_store_filter *f, uint64_t *n)
{
	*n = 0;
	return s->ops->key_count(s->be, f, n);
}

void ky_store_row_release(struct ky_store_row *row)
{
	if (row == NULL)
		return;
	free(row->blob);
	row->blob = NULL;
	row->bloblen = 0;
}

void ky_store_rows_free(struct ky_store_row *rows, size_t n)
{
	if (rows == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		ky_store_row_release(&rows[i]);
	free(rows);
}

int ky_store_secret_put(struct ky_store *s, struct ky_store_secret *sec, int64_t expect_rev)
{
	size_t n = strlen(sec->name);

	if (n == 0 || n > KY_SECRET_NAME_MAX || sec->blob == NULL || sec->bloblen == 0 ||
	    expect_rev < 0)
		return KY_ERR_USAGE;
	return s->ops->secret_put(s->be, sec, expect_rev);
}

int ky_store_secret_get(struct ky_store *s, const char *name, struct ky_store_secret *sec)
{
	memset(sec, 0, sizeof(*sec));
	if (name == NULL || strlen(name) > KY_SECRET_NAME_MAX)
		return KY_ERR_NOT_FOUND;
	return s->ops->secret_get(s->be, name, sec);
}

int ky_store_secret_delete(struct ky_store *s, const char *name)
{
	if (name == NULL || strlen(name) > KY_SECRET_NAME_MAX)
		return KY_ERR_NOT_FOUND;
	return s->ops->secret_delete(s->be, name);
}

void ky_store_secret_release(struct ky_store_secret *sec)
{
	if (sec == NULL)
		return;
	free(sec->blob);
	sec->blob = NULL;
	sec->bloblen = 0;
}

int ky_store_vp_count(struct ky_store *s, enum ky_store_table t, const uint8_t vp[KY_VP_LEN],
                      uint64_t *n)
{
	*n = 0;
	return s->ops->vp_count(s->be, t, vp, n);
}

int ky_store_vp_fetch(struct ky_store *s, enum ky_store_table t, const uint8_t vp[KY_VP_LEN],
                      const char *after, size_t max, struct ky_store_vprow **rows, size_t *n)
{
	*rows = NULL;
	*n = 0;
	if (max == 0)
		return KY_ERR_USAGE;
	return s->ops->vp_fetch(s->be, t, vp, after, max, rows, n);
}

int ky_store_vp_swap(struct ky_store *s, enum ky_store_table t, const uint8_t old_vp[KY_VP_LEN],
                     const uint8_t new_vp[KY_VP_LEN], const struct ky_store_vprow *rows, size_t n,
                     size_t *swapped)
{
	*swapped = 0;
	if (n == 0)
		return 0;
	return s->ops->vp_swap(s->be, t, old_vp, new_vp, rows, n, swapped);
}

void ky_store_vprows_free(struct ky_store_vprow *rows, size_t n)
{
	if (rows == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(rows[i].blob);
	free(rows);
}

int ky_store_apikey_insert(struct ky_store *s, const struct ky_store_apikey *k)
{
	if (k->id[0] == '\0' || k->role[0] == '\0')
		return KY_ERR_USAGE;
	return s->ops->apikey_insert(s->be, k);
}

int ky_store_apikey_get(struct ky_store *s, const char *id, struct ky_store_apikey *k)
{
	memset(k, 0, sizeof(*k));
	return s->ops->apikey_get(s->be, id, k);
}

int ky_store_apikey_find(struct ky_store *s, const uint8_t hash[KY_APIKEY_HASH_LEN],
                         struct ky_store_apikey *k)
{
	memset(k, 0, sizeof(*k));
	return s->ops->apikey_find(s->be, hash, k);
}

int ky_store_apikey_list(struct ky_store *s, struct ky_store_apikey **keys, size_t *n)
{
	return s->ops->apikey_list(s->be, keys, n);
}

int ky_store_apikey_update(struct ky_store *s, const struct ky_store_apikey *k,
                           const uint8_t *old_mac)
{
	if (k->id[0] == '\0' || k->role[0] == '\0' || !k->has_mac)
		return KY_ERR_USAGE;
	return s->ops->apikey_update(s->be, k, old_mac);
}

int ky_store_apikey_purge(struct ky_store *s, uint64_t *n)
{
	*n = 0;
	return s->ops->apikey_purge(s->be, n);
}

static bool store_request_key_ok(const char *apikey, const char *id)
{
	size_t a = apikey ? strlen(apikey) : 0, n = id ? strlen(id) : 0;

	return a > 0 && a <= KY_ID_MAX && n > 0 && n <= KY_REQUEST_ID_MAX;
}

int ky_store_request_get(struct ky_store *s, const char *apikey, const char *id,
                         struct ky_store_request *req)
{
	memset(req, 0, sizeof(*req));
	if (!store_request_key_ok(apikey, id))
		return KY_ERR_USAGE;
	return s->ops->request_get(s->be, apikey, id, req);
}

int ky_store_request_put(struct ky_store *s, const struct ky_store_request *req)
{
	if (!store_request_key_ok(req->apikey, req->id) || req->body == NULL || req->bodylen == 0 ||
	    req->status < 100 || req->status > 599)
		return KY_ERR_USAGE;
	return s->ops->request_put(s->be, req);
}

int ky_store_request_expire(struct ky_store *s, int64_t before, uint64_t *n)
{
	*n = 0;
	return s->ops->request_expire(s->be, before, n);
}

void ky_store_request_release(struct ky_store_request *req)
{
	if (req == NULL)
		return;
	free(req->body);
	req->body = NULL;
	req->bodylen = 0;
}

int ky_store_changed(struct ky_store *s, int *changed)
{
	return s->ops->changed(s->be, changed);
}

int ky_store_changes(struct ky_store *s, struct ky_store_change_pos *pos,
                     struct ky_store_change **out, size_t *n, int *all)
{
	*out = NULL;
	*n = 0;
	*all = 1;
	/* A backend without a change log cannot tell what changed: everything
	 * is taken as changed, which is always safe. */
	if (s->ops->changes == NULL)
		return 0;
	return s->ops->changes(s->be, pos, out, n, all);
}

int ky_store_ledger_attach(struct ky_store *s, const uint8_t key[KY_STORE_LEDGER_KEY_LEN],
                           const struct ky_store_ledger_pos *floor, int adopt,
                           struct ky_store_ledger_pos *pos)
{
	static const struct ky_store_ledger_pos none = {0, 0};

	return s->ops->ledger_attach(s->be, key, floor ? floor : &none, adopt, pos);
}

int ky_store_ledger_pos(struct ky_store *s, struct ky_store_ledger_pos *pos)
{
	return s->ops->ledger_pos(s->be, pos);
}

int ky_store_plan(struct ky_store *s, enum ky_store_plan what, char *out, size_t outlen)
{
	if (outlen == 0)
		return KY_ERR_USAGE;
	out[0] = '\0';
	return s->ops->plan(s->be, what, out, outlen);
}

void ky_store_failure(struct ky_store *s, char *out, size_t outlen)
{
	if (outlen == 0)
		return;
	out[0] = '\0';
	if (s != NULL)
		s->ops->failure(s->be, out, outlen);
}

void ky_store_open_failure(char *out, size_t outlen)
{
	if (outlen == 0)
		return;
	out[0] = '\0';
	if (store_open_failed != NULL && store_open_failed->open_failure != NULL)
		store_open_failed->open_failure(out, outlen);
}

void ky_store_failure_clear(struct ky_store *s)
{
	if (s != NULL)
		s->ops->failure_clear(s->be);
}
