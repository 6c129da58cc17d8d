/* The key-management API of a crypto unit, compatible with Key Protect v2, and its token
 * service. Handlers are thin: they parse (api_json.c), check the caller against the role
 * table below, and let lib/kms act.
 *
 *   POST   /identity/token                      API key -> access token (no bearer needed)
 *   GET    /api/v2/keys                         list (limit, offset, state, extractable)
 *   HEAD   /api/v2/keys                         Key-Total header
 *   POST   /api/v2/keys                         create or import
 *   GET    /api/v2/keys/{id}                    key (payload of standard keys by role)
 *   GET    /api/v2/keys/{id}/metadata
 *   GET    /api/v2/keys/{id}/versions           (limit, offset)
 *   DELETE /api/v2/keys/{id}                    delete (dual authorization when set)
 *   DELETE /api/v2/keys/{id}/purge
 *   POST   /api/v2/keys/{id}/restore
 *   POST   /api/v2/keys/{id}/actions/{action}   wrap unwrap rewrap rotate enable disable sync
 *   POST   /api/v2/keys/{id}?action={action}      setKeyForDeletion unsetKeyForDeletion restore
 *   GET    /api/v2/keys/{id}/policies           PUT the same (rotation, dualAuthDelete)
 *   POST   /api/v2/keys/{id}/aliases/{alias}    DELETE the same: key aliases
 *   PATCH  /api/v2/keys/{id}                    {"keyRingID"}: move the key to another ring
 *   GET    /api/v2/key_rings                    POST, DELETE /api/v2/key_rings/{ring}
 * Header X-Kms-Key-Ring: the ring a key is made in, a listing is limited to, and a key that
 * a path names must be in (api_key_ring).
 * {id} is a key id or one of the key's aliases (api_key_id resolves it).
 *   GET    /api/v2/instance/policies            PUT the same
 *   POST   /api/v2/import_token                 new import token (api_importtok.c)
 *   GET    /api/v2/import_token                 its public key and nonce (one retrieval)
 *   GET    /api/v2/keys/registrations           empty: kyok keys protect no other service's
 *   GET    /api/v2/keys/{id}/registrations      resources
 *
 * Every /api/v2 request: Authorization: Bearer <token from /identity/token>, Bluemix-Instance
 * naming this instance. The caller's role comes from its API key record, looked up on every
 * request (revocation takes effect at once), never from the token alone.
 */
#include <malloc.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"
#include "kyok/kms_import.h"
#include "kyok/store.h"
#include "unitd/api.h"
#include "unitd/unitd.h"

#define API_PREFIX          "/api/v2/"
#define API_TOKEN_PATH      "/identity/token"
#define API_CT_JSON         "application/json"
#define API_SECRET_POLICIES UNITD_SECRET_POLICIES
/* Request ids: the client's header, how long a reply is kept, the header on a replay. */
#define API_HDR_REQUEST_ID "Idempotency-Key"
#define API_HDR_REPLAYED   "Kyok-Replayed"
/* A key listing that left out records failing their own checks says how many. */
#define API_HDR_WITHHELD "Kyok-Keys-Withheld"
#define API_REQUEST_TTL  (24 * 3600)
/* A record the instance keeps under its master key does not open here. */
#define API_STALE_UNIT                                                                    \
	"this unit does not hold the instance's master key (left behind by a master key " \
	"rotation?): load, commit and set it on this unit"

/* ---- the role table: who may do what (hpcs-semantics.md, "Roles on the key API") ---- */

enum api_role {
	ROLE_READER = 1u << 0,
	ROLE_READER_PLUS = 1u << 1,
	ROLE_WRITER = 1u << 2,
	ROLE_MANAGER = 1u << 3,
	ROLE_KEY_PURGE = 1u << 4,
};

enum api_perm {
	PERM_KEYS_READ,  /* list keys, key total, key metadata, versions, wrap, unwrap, rewrap */
	PERM_PAYLOAD,    /* retrieve a key with its payload (standard keys) */
	PERM_KEYS_WRITE, /* create, import, rotate; schedule and cancel deletion */
	PERM_KEYS_ADMIN, /* enable, disable, delete, restore; key and instance policies */
	PERM_PURGE,      /* purge a deleted key */
};

static const struct {
	enum api_perm perm;
	unsigned roles;
} api_roles[] = {
    {PERM_KEYS_READ, ROLE_READER | ROLE_READER_PLUS | ROLE_WRITER | ROLE_MANAGER},
    {PERM_PAYLOAD, ROLE_READER_PLUS | ROLE_WRITER | ROLE_MANAGER},
    {PERM_KEYS_WRITE, ROLE_WRITER | ROLE_MANAGER},
    {PERM_KEYS_ADMIN, ROLE_MANAGER},
    {PERM_PURGE, ROLE_KEY_PURGE},
};

static const struct {
	const char *name;
	enum api_role bit;
} api_role_names[] = {
    {"Reader", ROLE_READER},   {"ReaderPlus", ROLE_READER_PLUS}, {"Writer", ROLE_WRITER},
    {"Manager", ROLE_MANAGER}, {"KeyPurge", ROLE_KEY_PURGE},
};

/* The bits of a role list ("Manager,KeyPurge": the roles OR'd); 0 when it names a role this
 * table does not know (no role at all rather than some). */
static unsigned api_role_bit(const char *role)
{
	unsigned bits = 0;

	for (const char *p = role;;) {
		const char *e = strchr(p, ',');
		size_t n = e != NULL ? (size_t)(e - p) : strlen(p), i;

		for (i = 0; i < sizeof(api_role_names) / sizeof(api_role_names[0]); i++)
			if (strlen(api_role_names[i].name) == n &&
			    memcmp(api_role_names[i].name, p, n) == 0)
				break;
		if (i == sizeof(api_role_names) / sizeof(api_role_names[0]))
			return 0;
		bits |= api_role_names[i].bit;
		if (e == NULL)
			return bits;
		p = e + 1;
	}
}

static bool api_allowed(unsigned role, enum api_perm perm)
{
	for (size_t i = 0; i < sizeof(api_roles) / sizeof(api_roles[0]); i++)
		if (api_roles[i].perm == perm)
			return (api_roles[i].roles & role) != 0;
	return false;
}

/* ---- routes ---- */

enum api_route {
	ROUTE_TOKEN,
	ROUTE_KEYS_LIST,
	ROUTE_KEYS_HEAD,
	ROUTE_KEY_CREATE,
	ROUTE_KEY_GET,
	ROUTE_KEY_METADATA,
	ROUTE_KEY_VERSIONS,
	ROUTE_KEY_DELETE,
	ROUTE_KEY_PURGE,
	ROUTE_KEY_RESTORE,
	ROUTE_KEY_ACTION,
	ROUTE_KEY_POLICIES_GET,
	ROUTE_KEY_POLICIES_PUT,
	ROUTE_INSTANCE_POLICIES_GET,
	ROUTE_INSTANCE_POLICIES_PUT,
	ROUTE_KEY_ALIAS_CREATE,
	ROUTE_KEY_ALIAS_DELETE,
	ROUTE_KEY_PATCH,
	ROUTE_RINGS_LIST,
	ROUTE_RING_CREATE,
	ROUTE_RING_DELETE,
	ROUTE_IMPORT_TOKEN_POST,
	ROUTE_IMPORT_TOKEN_GET,
	ROUTE_REGISTRATIONS,
	ROUTE_KEY_REGISTRATIONS,
};

/* The query parameters of a registration listing. */
#define API_REG_QUERY "limit offset urlEncodedResourceCRNQuery preventKeyDeletion totalCount"

/* path: segments after /api/v2/, "{id}" matches a key id. query: the query parameters the
 * route takes (Key Protect's names, space-separated); any other is refused by name. */
static const struct {
	const char *method;
	const char *path;
	enum api_route route;
	enum api_perm perm; /* actions: from api_actions instead */
	bool changes;       /* changes key storage: kept by request id (actions: api_actions) */
	const char *query;
} api_routes[] = {
    {"GET", "keys", ROUTE_KEYS_LIST, PERM_KEYS_READ, false,
     "limit offset state extractable search sort filter"},
    {"HEAD", "keys", ROUTE_KEYS_HEAD, PERM_KEYS_READ, false, "state extractable search filter"},
    {"POST", "keys", ROUTE_KEY_CREATE, PERM_KEYS_WRITE, true, ""},
    /* before keys/{id}: "registrations" is no key id */
    {"GET", "keys/registrations", ROUTE_REGISTRATIONS, PERM_KEYS_READ, false, API_REG_QUERY},
    {"GET", "keys/{id}", ROUTE_KEY_GET, PERM_KEYS_READ, false, ""},
    {"POST", "keys/{id}", ROUTE_KEY_ACTION, PERM_KEYS_READ, false, "action"},
    {"DELETE", "keys/{id}", ROUTE_KEY_DELETE, PERM_KEYS_ADMIN, true, "force"},
    {"GET", "keys/{id}/metadata", ROUTE_KEY_METADATA, PERM_KEYS_READ, false, ""},
    {"GET", "keys/{id}/versions", ROUTE_KEY_VERSIONS, PERM_KEYS_READ, false,
     "limit offset totalCount allKeyStates"},
    {"DELETE", "keys/{id}/purge", ROUTE_KEY_PURGE, PERM_PURGE, true, ""},
    {"POST", "keys/{id}/restore", ROUTE_KEY_RESTORE, PERM_KEYS_ADMIN, true, ""},
    {"POST", "keys/{id}/actions/{action}", ROUTE_KEY_ACTION, PERM_KEYS_READ, false, ""},
    {"GET", "keys/{id}/policies", ROUTE_KEY_POLICIES_GET, PERM_KEYS_ADMIN, false, "policy"},
    {"PUT", "keys/{id}/policies", ROUTE_KEY_POLICIES_PUT, PERM_KEYS_ADMIN, true, "policy"},
    {"GET", "instance/policies", ROUTE_INSTANCE_POLICIES_GET, PERM_KEYS_ADMIN, false, "policy"},
    {"PUT", "instance/policies", ROUTE_INSTANCE_POLICIES_PUT, PERM_KEYS_ADMIN, true, "policy"},
    {"POST", "keys/{id}/aliases/{alias}", ROUTE_KEY_ALIAS_CREATE, PERM_KEYS_WRITE, true, ""},
    {"DELETE", "keys/{id}/aliases/{alias}", ROUTE_KEY_ALIAS_DELETE, PERM_KEYS_ADMIN, true, ""},
    {"PATCH", "keys/{id}", ROUTE_KEY_PATCH, PERM_KEYS_ADMIN, true, ""},
    {"GET", "key_rings", ROUTE_RINGS_LIST, PERM_KEYS_READ, false, "limit offset totalCount"},
    {"POST", "key_rings/{ring}", ROUTE_RING_CREATE, PERM_KEYS_WRITE, true, ""},
    {"DELETE", "key_rings/{ring}", ROUTE_RING_DELETE, PERM_KEYS_ADMIN, true, "force"},
    {"POST", "import_token", ROUTE_IMPORT_TOKEN_POST, PERM_KEYS_WRITE, true, ""},
    {"GET", "import_token", ROUTE_IMPORT_TOKEN_GET, PERM_KEYS_WRITE, false, ""},
    {"GET", "keys/{id}/registrations", ROUTE_KEY_REGISTRATIONS, PERM_KEYS_READ, false,
     API_REG_QUERY},
};
#define API_NROUTES (sizeof(api_routes) / sizeof(api_routes[0]))

enum api_action {
	ACT_WRAP,
	ACT_UNWRAP,
	ACT_REWRAP,
	ACT_ROTATE,
	ACT_ENABLE,
	ACT_DISABLE,
	ACT_SET_DELETION,
	ACT_UNSET_DELETION,
	ACT_RESTORE,
	ACT_SYNC,
};

static const struct {
	const char *name;
	enum api_action action;
	enum api_perm perm;
	bool changes; /* false: wrap, unwrap, rewrap change nothing stored */
} api_actions[] = {
    {"wrap", ACT_WRAP, PERM_KEYS_READ, false},
    {"unwrap", ACT_UNWRAP, PERM_KEYS_READ, false},
    {"rewrap", ACT_REWRAP, PERM_KEYS_READ, false},
    {"rotate", ACT_ROTATE, PERM_KEYS_WRITE, true},
    {"setKeyForDeletion", ACT_SET_DELETION, PERM_KEYS_WRITE, true},
    {"unsetKeyForDeletion", ACT_UNSET_DELETION, PERM_KEYS_WRITE, true},
    {"enable", ACT_ENABLE, PERM_KEYS_ADMIN, true},
    {"disable", ACT_DISABLE, PERM_KEYS_ADMIN, true},
    {"restore", ACT_RESTORE, PERM_KEYS_ADMIN, true},
    {"sync", ACT_SYNC, PERM_KEYS_WRITE, false},
};
#define API_NACTIONS (sizeof(api_actions) / sizeof(api_actions[0]))

struct unitd_api {
	struct unitd_keystore *ks; /* NULL: no key storage configured */
	char instance[KY_ID_MAX + 1];
	uint32_t token_ttl;
	/* metrics slots: each route, its path with another method; the token service */
	int metric[API_NROUTES], metric_other[API_NROUTES];
	int metric_token, metric_token_other;
};

/* One request. */
struct api_req {
	int route;  /* index into api_routes, -1 = token, -2 = not matched */
	int metric; /* metrics slot (unitd_metrics_route) */
	char method[8];
	char *url; /* malloc'd */
	/* the {id} segment: a key id or alias until api_key_id, then the key id */
	char id[KY_KEY_ALIAS_MAX + 1];
	char alias[KY_KEY_ALIAS_MAX + 1]; /* the {alias} segment */
	char ring[KY_KEY_RING_MAX + 1];   /* the {ring} segment */
	char action[32];
	bool too_large, answered;
	size_t drained;
	struct ky_buf body;
};

/* What a handler works with and answers. */
struct api_ctx {
	struct unitd_api *api;
	struct MHD_Connection *c;
	struct api_req *q;
	struct ky_kms kms;
	bool held;
	bool acted;  /* its audit intent is written: it may have changed key storage */
	bool in_txn; /* runs inside the write transaction of its request id */
	/* POST /import_token under a request id: its token, made before that transaction */
	struct ky_import_token *it_made;
	int64_t now;
	char caller[KY_ID_MAX + 1]; /* the token's API key, once the token verified */
	unsigned role;
	enum kp_prefer prefer;
	/* reply */
	unsigned status;
	json_t *reply;
	char key_total[24];
	char withheld[24]; /* a listing: records left out (API_HDR_WITHHELD) */
	char detail[512];
	/* a reply kept by request id, sent as it was stored (x->reply unused) */
	bool replayed;
	struct ky_buf stored; /* cleansed */
};

static int64_t api_now(void)
{
	return (int64_t)time(NULL);
}

static void api_detail(struct api_ctx *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void api_detail(struct api_ctx *x, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(x->detail, sizeof(x->detail), fmt, ap);
	va_end(ap);
}

static const char *api_query(struct api_ctx *x, const char *k)
{
	return MHD_lookup_connection_value(x->c, MHD_GET_ARGUMENT_KIND, k);
}

static const char *api_header(struct api_ctx *x, const char *k)
{
	return MHD_lookup_connection_value(x->c, MHD_HEADER_KIND, k);
}

/* ---- replies ---- */

static void api_free_cleansed(void *p)
{
	if (p != NULL) {
		OPENSSL_cleanse(p, malloc_usable_size(p));
		free(p);
	}
}

static bool api_correlation_ok(const char *v)
{
	size_t n = v ? strlen(v) : 0;

	if (n == 0 || n > KP_CORRELATION_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)v[i] < 0x21 || v[i] == 0x7f)
			return false;
	return true;
}

static enum MHD_Result api_send(struct MHD_Connection *c, unsigned status, const char *withheld,
                                const struct ky_buf *body, const char *key_total,
                                const char *correlation, bool replayed)
{
	struct MHD_Response *resp;
	enum MHD_Result ret = MHD_NO;
	void *copy = NULL;

	/* Bodies may hold key material: MHD frees them through the cleansing callback. */
	if (body->len > 0 && (copy = malloc(body->len)) == NULL)
		return MHD_NO;
	if (body->len > 0)
		memcpy(copy, body->data, body->len);
	resp =
	    MHD_create_response_from_buffer_with_free_callback(body->len, copy, api_free_cleansed);
	if (resp == NULL) {
		api_free_cleansed(copy);
		return MHD_NO;
	}
	if ((body->len > 0 &&
	     MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, API_CT_JSON) != MHD_YES) ||
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
	    (key_total != NULL && key_total[0] != '\0' &&
	     MHD_add_response_header(resp, "Key-Total", key_total) != MHD_YES) ||
	    (correlation != NULL && api_correlation_ok(correlation) &&
	     MHD_add_response_header(resp, "Correlation-Id", correlation) != MHD_YES) ||
	    (replayed && MHD_add_response_header(resp, API_HDR_REPLAYED, "true") != MHD_YES) ||
	    (withheld != NULL && withheld[0] != '\0' &&
	     MHD_add_response_header(resp, API_HDR_WITHHELD, withheld) != MHD_YES))
		goto out;
	ret = unitd_metrics_queue(c, status, resp);
out:
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result api_send_json(struct MHD_Connection *c, unsigned status, const json_t *j,
                                     const char *key_total, const char *withheld)
{
	struct ky_buf body = {0};
	enum MHD_Result ret;
	const char *corr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Correlation-Id");

	if (j != NULL && kp_json_dump(j, &body) != 0) {
		ky_buf_free(&body);
		if (ky_buf_append_str(&body, "{}\n") != 0)
			return MHD_NO;
		status = 500;
	}
	ret = api_send(c, status, withheld, &body, key_total, corr, false);
	ky_buf_free(&body);
	return ret;
}

static enum MHD_Result api_send_error_as(struct MHD_Connection *c, int err, const char *detail,
                                         bool log)
{
	json_t *j = kp_error_json(err, detail);
	enum MHD_Result ret;

	/* Internal failures only: refusals and "no master key" are the client's business. */
	if (log && ky_err_http(err) == 500)
		unitd_log("api: %s: %s", ky_err_slug(err), detail ? detail : "");
	ret = api_send_json(c, (unsigned)ky_err_http(err), j, NULL, NULL);
	json_decref(j);
	return ret;
}

static enum MHD_Result api_send_error(struct MHD_Connection *c, int err, const char *detail)
{
	return api_send_error_as(c, err, detail, true);
}

/* Failures of key storage itself, or of one of its records: the operator's business. */
static bool api_storage_err(int err);

/* One log line with what an operator needs when a request failed inside the unit or in key
 * storage: the request, the key, the caller, and for key storage what it answered (where it
 * is, its own message, the system's). Refusals are the client's business: not logged. */
#define API_FAILURE_LOG_RATE 20 /* lines a second: a broken storage fails every request */

static void api_log_failure(struct unitd_api *api, const char *method, const char *prefix,
                            const char *path, const char *id, const char *caller, int r,
                            const char *detail)
{
	static struct unitd_log_rate rate = UNITD_LOG_RATE_INIT;
	char why[512] = "";
	unsigned missed;

	if (r == 0 || !(api_storage_err(r) || ky_err_http(r) == 500))
		return;
	if (!unitd_log_rate_take(&rate, API_FAILURE_LOG_RATE, &missed))
		return;
	if (missed > 0)
		unitd_log("api: %u more failed requests not logged (over %d a second)", missed,
		          API_FAILURE_LOG_RATE);
	if (api_storage_err(r) && api->ks != NULL)
		ky_store_failure(unitd_keystore_store(api->ks), why, sizeof(why));
	unitd_log("api: %s %s%s%s%s%s%s: %s: %s%s%s%s%s", method, prefix, path,
	          id[0] ? " key " : "", id, caller[0] ? " API key " : "", caller, ky_err_slug(r),
	          ky_err_message(r), detail[0] ? ": " : "", detail, why[0] ? "; " : "", why);
}

static bool api_storage_err(int err)
{
	switch (err) {
	case KY_ERR_IO:
	case KY_ERR_STORE:
	case KY_ERR_STORE_BUSY:
	case KY_ERR_STORE_UNREACHABLE:
	case KY_ERR_STORE_FULL:
	case KY_ERR_STORE_DAMAGED:
	case KY_ERR_STORE_SCHEMA:
	case KY_ERR_STORAGE_ROLLBACK:
	case KY_ERR_STORAGE_MISSING:
	case KY_ERR_LEDGER_TAMPERED:
	case KY_ERR_LEDGER_MISMATCH:
	case KY_ERR_LEDGER_KEY:
	case KY_ERR_RECORD_TAMPERED:
	case KY_ERR_RECORD_STALE:
	case KY_ERR_RECORD_MISSING:
		return true;
	default:
		return false;
	}
}

/* ---- matching ---- */

/* Matches path (after /api/v2/) against pattern; fills id and action. */
static bool api_match(const char *pattern, const char *path, struct api_req *q)
{
	while (*pattern != '\0') {
		const char *pe = strchr(pattern, '/'), *se = strchr(path, '/');
		size_t pl = pe ? (size_t)(pe - pattern) : strlen(pattern);
		size_t sl = se ? (size_t)(se - path) : strlen(path);

		if (pl == 4 && memcmp(pattern, "{id}", 4) == 0) {
			/* Any other segment is a key id or alias too: one that is neither is
			 * refused as such (400), not as an unknown endpoint. */
			if (sl == 0)
				return false;
			memcpy(q->id, path, sl < KY_KEY_ALIAS_MAX ? sl : KY_KEY_ALIAS_MAX);
			q->id[sl < KY_KEY_ALIAS_MAX ? sl : KY_KEY_ALIAS_MAX] = '\0';
			if (sl > KY_KEY_ALIAS_MAX)
				q->id[0] = '?'; /* too long: refused as such later */
		} else if (pl == 6 && memcmp(pattern, "{ring}", 6) == 0) {
			if (sl == 0)
				return false;
			memcpy(q->ring, path, sl < KY_KEY_RING_MAX ? sl : KY_KEY_RING_MAX);
			q->ring[sl < KY_KEY_RING_MAX ? sl : KY_KEY_RING_MAX] = '\0';
			if (sl > KY_KEY_RING_MAX)
				q->ring[0] = '?'; /* too long: refused as such later */
		} else if (pl == 7 && memcmp(pattern, "{alias}", 7) == 0) {
			if (sl == 0)
				return false;
			memcpy(q->alias, path, sl < KY_KEY_ALIAS_MAX ? sl : KY_KEY_ALIAS_MAX);
			q->alias[sl < KY_KEY_ALIAS_MAX ? sl : KY_KEY_ALIAS_MAX] = '\0';
			if (sl > KY_KEY_ALIAS_MAX)
				q->alias[0] = '?'; /* too long: refused as such later */
		} else if (pl == 8 && memcmp(pattern, "{action}", 8) == 0) {
			if (sl == 0 || sl >= sizeof(q->action))
				return false;
			memcpy(q->action, path, sl);
			q->action[sl] = '\0';
		} else if (pl != sl || memcmp(pattern, path, pl) != 0) {
			return false;
		}
		pattern += pl + (pe ? 1 : 0);
		path += sl + (se ? 1 : 0);
		if ((pe == NULL) != (se == NULL))
			return false;
	}
	return *path == '\0';
}

bool unitd_api_owns(const char *url)
{
	return strncmp(url, API_PREFIX, strlen(API_PREFIX)) == 0 ||
	       strcmp(url, API_TOKEN_PATH) == 0;
}

/* Route of (method, url): index, -1 token; *known_path when the path exists for another
 * method. */
static int api_route_of(const char *method, const char *url, struct api_req *q, bool *known_path)
{
	const char *path = url + strlen(API_PREFIX);
	bool literal = false;

	*known_path = false;
	if (strcmp(url, API_TOKEN_PATH) == 0) {
		*known_path = true;
		return strcmp(method, "POST") == 0 ? -1 : -2;
	}
	for (size_t i = 0; i < API_NROUTES; i++) {
		bool has_id = strstr(api_routes[i].path, "{id}") != NULL;

		if (!api_match(api_routes[i].path, path, q))
			continue;
		/* A path a route names word for word (keys/registrations) is no key id for the
		 * other methods: they get 405, not a key id refused. */
		if (literal && has_id)
			continue;
		literal = literal || !has_id;
		*known_path = true;
		if (strcmp(api_routes[i].method, method) == 0)
			return (int)i;
	}
	return -2;
}

/* ---- authentication ---- */

/* The last token each thread verified: a client sends the same token on every request of a
 * keep-alive connection, so the signature and claims are checked once, not per request. The
 * API key behind it is still looked up every time (revocation), and expiry re-checked. */
struct api_token_memo {
	size_t len; /* 0 = empty */
	uint64_t epoch;
	struct token_claims cl;
	char tok[TOKEN_MAX_LEN];
};
static __thread struct api_token_memo *api_memo;
static pthread_key_t api_memo_key;
static pthread_once_t api_memo_once = PTHREAD_ONCE_INIT;
static bool api_memo_key_made;

static void api_memo_free(void *p)
{
	if (p != NULL) {
		OPENSSL_cleanse(p, sizeof(struct api_token_memo));
		free(p);
	}
}

static void api_memo_init(void)
{
	api_memo_key_made = pthread_key_create(&api_memo_key, api_memo_free) == 0;
}

static bool api_memo_hit(const char *tok, size_t len, uint64_t epoch, int64_t now,
                         struct token_claims *cl)
{
	struct api_token_memo *m = api_memo;

	if (m == NULL || m->len != len || m->epoch != epoch || now >= m->cl.exp)
		return false;
	if (CRYPTO_memcmp(m->tok, tok, len) != 0)
		return false;
	*cl = m->cl;
	return true;
}

static void api_memo_put(const char *tok, size_t len, uint64_t epoch, const struct token_claims *cl)
{
	struct api_token_memo *m = api_memo;

	if (m == NULL) {
		(void)pthread_once(&api_memo_once, api_memo_init);
		/* Freed (cleansed) at thread exit through the key's destructor. */
		if (!api_memo_key_made || (m = calloc(1, sizeof(*m))) == NULL)
			return;
		if (pthread_setspecific(api_memo_key, m) != 0) {
			free(m);
			return;
		}
		api_memo = m;
	}
	memcpy(m->tok, tok, len);
	m->len = len;
	m->epoch = epoch;
	m->cl = *cl;
}

/* Why an API key record could not be used. */
static void api_apikey_detail(char *detail, size_t len, int r, const char *id)
{
	if (r == KY_ERR_RECORD_TAMPERED)
		snprintf(detail, len,
		         "the record of API key '%s' in key storage does not verify (altered, or "
		         "made without this instance's integrity key): refused",
		         id);
	else if (r == KY_ERR_RECORD_STALE)
		snprintf(detail, len,
		         "the record of API key '%s' in key storage is not the one last written "
		         "(an older copy written back): refused",
		         id);
	else if (r == KY_ERR_MK_MISMATCH)
		snprintf(detail, len, "API key integrity key: %s", API_STALE_UNIT);
}

static int api_authenticate(struct api_ctx *x)
{
	struct unitd_api *api = x->api;
	const char *auth = api_header(x, MHD_HTTP_HEADER_AUTHORIZATION);
	const char *inst = api_header(x, "Bluemix-Instance");
	const char *tok;
	size_t toklen;
	uint8_t key[UNITD_TOKEN_KEY_LEN];
	struct token_claims cl;
	struct ky_store_apikey ak;
	uint64_t epoch;
	int r;

	if (token_bearer(auth, &tok, &toklen) != 0) {
		api_detail(x, "send header 'Authorization: Bearer <token>' with a token from "
		              "POST /identity/token");
		return KY_ERR_UNAUTHORIZED;
	}
	if (inst == NULL || inst[0] == '\0') {
		api_detail(x, "send header 'Bluemix-Instance: %s'", api->instance);
		return KY_ERR_INSTANCE_HEADER;
	}
	if (api->ks == NULL) {
		api_detail(x, "the key API needs key storage");
		return KY_ERR_NO_STORE;
	}
	if ((r = unitd_keystore_enter(api->ks, &x->kms)) != 0)
		return r;
	x->held = true;
	epoch = unitd_keystore_epoch(api->ks);
	if (!api_memo_hit(tok, toklen, epoch, x->now, &cl)) {
		if ((r = unitd_keystore_token_key(api->ks, &x->kms, x->now, key)) != 0) {
			api_detail(x, "%s",
			           r == KY_ERR_MK_MISMATCH ? "token signing key: " API_STALE_UNIT
			                                   : "cannot read the token signing key");
			return r;
		}
		r = token_verify(key, tok, toklen, x->now, api->instance, &cl, x->detail,
		                 sizeof(x->detail));
		OPENSSL_cleanse(key, sizeof(key));
		if (r != 0)
			return r;
		api_memo_put(tok, toklen, epoch, &cl);
	}
	memcpy(x->caller, cl.sub, sizeof(x->caller));
	if (strcmp(inst, api->instance) != 0) {
		api_detail(x, "header Bluemix-Instance names another service instance");
		return KY_ERR_UNAUTHORIZED;
	}
	r = unitd_keystore_apikey(api->ks, &x->kms, cl.sub, x->now, &ak);
	if (r == KY_ERR_NOT_FOUND || (r == 0 && ak.revoked != 0)) {
		api_detail(x, "the API key of this token was revoked");
		return KY_ERR_UNAUTHORIZED;
	}
	if (r != 0) {
		api_apikey_detail(x->detail, sizeof(x->detail), r, cl.sub);
		return r;
	}
	memcpy(x->caller, ak.id, sizeof(x->caller));
	x->role = api_role_bit(ak.role);
	return 0;
}

/* "Writer or Manager": the roles that allow perm, from the role table. */
static void api_roles_allowing(enum api_perm perm, char *out, size_t outlen)
{
	size_t n = 0, len = 0, count = 0;
	unsigned roles = 0;

	for (size_t i = 0; i < sizeof(api_roles) / sizeof(api_roles[0]); i++)
		if (api_roles[i].perm == perm)
			roles = api_roles[i].roles;
	for (size_t i = 0; i < sizeof(api_role_names) / sizeof(api_role_names[0]); i++)
		if (roles & api_role_names[i].bit)
			count++;
	out[0] = '\0';
	for (size_t i = 0; i < sizeof(api_role_names) / sizeof(api_role_names[0]); i++) {
		if (!(roles & api_role_names[i].bit))
			continue;
		n++;
		len += (size_t)snprintf(out + len, len < outlen ? outlen - len : 0, "%s%s",
		                        n == 1 ? "" : (n == count ? " or " : ", "),
		                        api_role_names[i].name);
		if (len >= outlen)
			return;
	}
}

/* "the role Manager", "the roles Writer, KeyPurge", "no role". */
static void api_role_names_of(unsigned role, char *out, size_t outlen)
{
	size_t len = 0, count = 0;

	for (size_t i = 0; i < sizeof(api_role_names) / sizeof(api_role_names[0]); i++)
		if (role & api_role_names[i].bit)
			count++;
	snprintf(out, outlen, "%s",
	         count == 0   ? "no role"
	         : count == 1 ? "the role "
	                      : "the roles ");
	len = strlen(out);
	for (size_t i = 0, n = 0; i < sizeof(api_role_names) / sizeof(api_role_names[0]); i++) {
		if (!(role & api_role_names[i].bit))
			continue;
		len += (size_t)snprintf(out + len, len < outlen ? outlen - len : 0, "%s%s",
		                        n++ == 0 ? "" : ", ", api_role_names[i].name);
		if (len >= outlen)
			return;
	}
}

static int api_check(struct api_ctx *x, enum api_perm perm)
{
	char need[64], have[80];

	if (api_allowed(x->role, perm))
		return 0;
	api_roles_allowing(perm, need, sizeof(need));
	api_role_names_of(x->role, have, sizeof(have));
	api_detail(x, "API key '%s' has %s; this needs the role %s", x->caller, have, need);
	return KY_ERR_FORBIDDEN;
}

/* ---- handlers ---- */

/* The key ring named by header X-Kms-Key-Ring, NULL when none. */
static const char *api_ring_header(struct api_ctx *x)
{
	const char *h = api_header(x, "X-Kms-Key-Ring");

	return h != NULL && h[0] != '\0' ? h : NULL;
}

/* With header X-Kms-Key-Ring, the key x->q->id must be in that ring: a key of another ring is
 * not found there (as Key Protect answers). */
static int api_key_ring(struct api_ctx *x)
{
	const char *ring = api_ring_header(x);
	struct ky_key *k = NULL;
	int r;

	if (ring == NULL)
		return 0;
	if ((r = ky_kms_key_get(&x->kms, x->q->id, KY_KMS_METADATA_ONLY, x->now, &k)) != 0)
		return r;
	if (strcmp(k->ring, ring) != 0) {
		api_detail(
		    x, "key %s is not in the key ring '%.100s' that header X-Kms-Key-Ring names",
		    x->q->id, ring);
		r = KY_ERR_NOT_FOUND;
	}
	ky_key_free(k);
	return r;
}

/* The key a request names in its path, by id or by alias: x->q->id becomes its key id. The one
 * resolution every route of a key goes through. */
static int api_key_id(struct api_ctx *x)
{
	char id[KY_UUID_LEN + 1];
	int r;

	if (ky_uuid_valid(x->q->id)) {
		/* Ids are stored in lower case. */
		for (char *p = x->q->id; *p; p++)
			if (*p >= 'A' && *p <= 'F')
				*p = (char)(*p - 'A' + 'a');
		return api_key_ring(x);
	}
	if (!ky_key_alias_valid(x->q->id)) {
		api_detail(
		    x,
		    "'%.40s' in the path is neither a key id nor a key alias: a key id is "
		    "36 characters, 8-4-4-4-12 hex digits (as 'kyok kp keys' lists them); an "
		    "alias is 2 to 90 letters, digits, '-' and '_'",
		    x->q->id[0] == '?' ? "(longer than 90 characters)" : x->q->id);
		return KY_ERR_MALFORMED;
	}
	r = ky_kms_alias_resolve(&x->kms, x->q->id, x->now, id);
	if (r == KY_ERR_NOT_FOUND)
		api_detail(x, "no key has the alias '%s' (aliases are case sensitive)", x->q->id);
	else if (r == KY_ERR_RECORD_TAMPERED)
		api_detail(x,
		           "key storage's alias index names a key for the alias '%s' whose record "
		           "does not list it (the index was altered): refused",
		           x->q->id);
	if (r != 0)
		return r;
	memcpy(x->q->id, id, sizeof(id));
	return api_key_ring(x);
}

static int api_reply_key(struct api_ctx *x, unsigned status, const struct ky_key *k, bool payload)
{
	json_t *a = json_array();

	if (a == NULL ||
	    json_array_append_new(a, kp_key_json(k, x->api->instance, payload, x->now)) != 0) {
		json_decref(a);
		return KY_ERR_NOMEM;
	}
	x->reply = kp_collection(KP_TYPE_KEY, a);
	x->status = status;
	return x->reply ? 0 : KY_ERR_NOMEM;
}

/* A query value, NULL when absent (an empty one was refused by api_query_check). */
static const char *api_query_opt(struct api_ctx *x, const char *k)
{
	const char *v = api_query(x, k);

	return v != NULL && v[0] != '\0' ? v : NULL;
}

static const struct kp_sort *api_sort_by;

/* A listing left out records that fail their own checks: each is named in the log (the
 * first KY_KMS_WITHHELD_IDS), the answer says how many (API_HDR_WITHHELD). A GET of one of
 * them is refused with its own error. */
static void api_report_withheld(struct api_ctx *x, const struct ky_kms_withheld *wh)
{
	if (wh->n == 0)
		return;
	for (size_t i = 0; i < wh->n && i < KY_KMS_WITHHELD_IDS; i++)
		unitd_log("api: %s %s%s: key %s withheld from the listing: %s: %s",
		          api_routes[x->q->route].method, API_PREFIX, api_routes[x->q->route].path,
		          wh->ids[i], ky_err_slug(wh->errs[i]), ky_err_message(wh->errs[i]));
	if (wh->n > KY_KMS_WITHHELD_IDS)
		unitd_log("api: %s %s%s: %zu more keys withheld from the listing",
		          api_routes[x->q->route].method, API_PREFIX, api_routes[x->q->route].path,
		          wh->n - KY_KMS_WITHHELD_IDS);
	snprintf(x->withheld, sizeof(x->withheld), "%zu", wh->n);
}

static int api_sort_cmp(const void *a, const void *b)
{
	return kp_sort_cmp(api_sort_by, *(struct ky_key *const *)a, *(struct ky_key *const *)b);
}

/* filter, search and sort over every key the store filter f matches: the page [offset,
 * offset + limit) of the result in keys[0..n), total = all that matched. */
static int api_keys_select(struct api_ctx *x, const struct ky_store_filter *f,
                           const struct kp_filter *flt, const struct kp_search *srch,
                           const struct kp_sort *sort, const char *ring, uint64_t limit,
                           uint64_t offset, struct ky_key ***keys, size_t *n, uint64_t *total)
{
	static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;
	struct ky_key **all = NULL;
	size_t nall = 0, kept = 0, i;
	uint64_t stored = 0;
	struct ky_kms_withheld wh;
	int r;

	*keys = NULL;
	*n = 0;
	*total = 0;
	/* Every key the store filter matches (an instance holds at most key_limit of them). */
	if ((r = ky_kms_key_list(&x->kms, f, 0, 0, x->now, &all, &nall, &stored, &wh)) != 0)
		return r;
	api_report_withheld(x, &wh);
	for (i = 0; i < nall; i++) {
		struct ky_key *k = all[i];

		all[i] = NULL;
		if (kp_filter_match(flt, k) && kp_search_match(srch, k) &&
		    (ring == NULL || strcmp(k->ring, ring) == 0))
			all[kept++] = k; /* kept <= i */
		else
			ky_key_free(k);
	}
	if (sort->n > 0 && kept > 1) {
		/* qsort has no context argument: one sort at a time. */
		pthread_mutex_lock(&sort_lock);
		api_sort_by = sort;
		qsort(all, kept, sizeof(*all), api_sort_cmp);
		api_sort_by = NULL;
		pthread_mutex_unlock(&sort_lock);
	}
	*total = kept;
	/* the page: free what is before and after it */
	for (i = 0; i < kept; i++) {
		struct ky_key *k = all[i];

		all[i] = NULL;
		if (i >= offset && i - offset < limit)
			all[(*n)++] = k;
		else
			ky_key_free(k);
	}
	*keys = all;
	return 0;
}

static int api_keys_list(struct api_ctx *x, bool head)
{
	struct ky_store_filter f = {.states = (1u << KY_KEY_ACTIVE) | (1u << KY_KEY_SUSPENDED) |
	                                      (1u << KY_KEY_DEACTIVATED),
	                            .extractable = -1};
	uint64_t limit = KP_LIST_DEFAULT, offset = 0, total = 0;
	bool present, b;
	unsigned mask;
	struct ky_key **keys = NULL;
	struct kp_filter flt;
	struct kp_sort sort;
	struct kp_search srch;
	size_t n = 0;
	json_t *a = NULL;
	int r;

	if (kp_query_uint(api_query(x, "limit"), KP_LIST_MAX, &present, &limit) != 0 ||
	    (present && limit == 0)) {
		api_detail(x, "query limit must be 1 to %d", KP_LIST_MAX);
		return KY_ERR_MALFORMED;
	}
	if (kp_query_uint(api_query(x, "offset"), UINT32_MAX, &present, &offset) != 0) {
		api_detail(x, "query offset must be a whole number");
		return KY_ERR_MALFORMED;
	}
	if (kp_query_states(api_query(x, "state"), &present, &mask) != 0) {
		api_detail(x, "query state must be a list like 1,2,5 (states 0 to 5)");
		return KY_ERR_MALFORMED;
	}
	if (present)
		f.states = mask;
	if (kp_query_bool(api_query(x, "extractable"), &present, &b) != 0) {
		api_detail(x, "query extractable must be true or false");
		return KY_ERR_MALFORMED;
	}
	if (present)
		f.extractable = b ? 1 : 0;
	if ((r = kp_filter_parse(api_query_opt(x, "filter"), &flt, x->detail, sizeof(x->detail))) !=
	        0 ||
	    (r = kp_search_parse(api_query_opt(x, "search"), &srch, x->detail,
	                         sizeof(x->detail))) != 0 ||
	    (r = kp_sort_parse(api_query_opt(x, "sort"), &sort, x->detail, sizeof(x->detail))) != 0)
		return r;
	/* A filter on states widens the default (Active, Suspended, Deactivated) like the state
	 * query does; both together must hold. */
	if (flt.states != 0 && api_query_opt(x, "state") == NULL)
		f.states = 0;
	/* With X-Kms-Key-Ring, the keys of that ring only. */
	if (flt.present || srch.present || sort.n > 0 || api_ring_header(x) != NULL) {
		if ((r = api_keys_select(x, &f, &flt, &srch, &sort, api_ring_header(x),
		                         head ? 0 : limit, head ? 0 : offset, &keys, &n, &total)) !=
		    0)
			goto out;
	} else if (head) {
		if ((r = ky_store_key_count(x->kms.store, &f, &total)) != 0)
			return r;
	} else {
		struct ky_kms_withheld wh;

		if ((r = ky_kms_key_list(&x->kms, &f, (uint32_t)limit, offset, x->now, &keys, &n,
		                         &total, &wh)) != 0)
			return r;
		api_report_withheld(x, &wh);
	}
	if (head) {
		snprintf(x->key_total, sizeof(x->key_total), "%llu", (unsigned long long)total);
		x->status = 200;
		r = 0;
		goto out;
	}
	if ((a = json_array()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (json_array_append_new(
		        a, kp_key_json(keys[i], x->api->instance, false, x->now)) != 0) {
			r = KY_ERR_NOMEM;
			goto out;
		}
	}
	x->reply = kp_collection(KP_TYPE_KEY, a);
	a = NULL; /* transferred */
	if (x->reply == NULL ||
	    json_object_set_new(json_object_get(x->reply, "metadata"), "totalCount",
	                        json_integer((json_int_t)total)) != 0) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	snprintf(x->key_total, sizeof(x->key_total), "%llu", (unsigned long long)total);
	x->status = 200;
	r = 0;
out:
	json_decref(a);
	ky_keys_free(keys, n);
	return r;
}

/* The stored instance policies record into *p (defaults first; r: what reading it gave). */
static int api_ipolicies_decode(struct api_ctx *x, int r, const uint8_t *raw, size_t n,
                                struct kp_instance_policies *p)
{
	kp_instance_policies_init(p);
	if (r == KY_ERR_NOT_FOUND)
		return 0;
	if (r == KY_ERR_MK_MISMATCH)
		api_detail(x, "instance policies: " API_STALE_UNIT);
	if (r != 0)
		return r;
	if (kp_instance_policies_decode(raw, n, p) != 0) {
		api_detail(x, "the stored instance policies do not parse");
		return KY_ERR_RECORD_TAMPERED;
	}
	return 0;
}

/* Instance policies: a system secret, defaults when never set. Through the keystore's cache:
 * for reads only, never for a change (api_ipolicies_read_rev). */
static int api_ipolicies_read(struct api_ctx *x, struct kp_instance_policies *p)
{
	uint8_t *raw = NULL;
	size_t n = 0;
	int r = KY_ERR_INTERNAL;

	r = unitd_keystore_policies(x->api->ks, &x->kms, &raw, &n);
	r = api_ipolicies_decode(x, r, raw, n, p);
	free(raw);
	return r;
}

/* The instance policies straight from storage, with the rev they are stored at (0 when never
 * set): what a change is applied to and compared against. */
static int api_ipolicies_read_rev(struct api_ctx *x, struct kp_instance_policies *p, int64_t *rev)
{
	uint8_t *raw = NULL;
	size_t n = 0;
	int r = KY_ERR_INTERNAL;

	r = ky_kms_secret_get_rev(&x->kms, API_SECRET_POLICIES, &raw, &n, rev);
	r = api_ipolicies_decode(x, r, raw, n, p);
	ky_kms_buf_free(raw, n);
	return r;
}

/* The caller's address, as allowedIP ranges are matched against it. */
static int api_caller_addr(struct api_ctx *x, struct kp_cidr *addr)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(x->c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

	if (ci == NULL || kp_addr_of(ci->client_addr, addr) != 0) {
		api_detail(x, "cannot tell the address this request comes from");
		return KY_ERR_INTERNAL;
	}
	return 0;
}

/* The instance policy allowedIP, on every request of the key API once its token checked. */
static int api_allowed_ip(struct api_ctx *x)
{
	struct kp_instance_policies pol;
	struct kp_cidr addr;
	int r;

	if ((r = api_ipolicies_read(x, &pol)) != 0)
		return r;
	if (!pol.allowed_ip)
		return 0;
	if ((r = api_caller_addr(x, &addr)) != 0)
		return r;
	return kp_allowed_ip_check(&pol, &addr, x->detail, sizeof(x->detail));
}

static int api_key_create(struct api_ctx *x)
{
	struct kp_create cr;
	struct kp_instance_policies pol;
	struct ky_key_spec sp = {0};
	struct ky_key *k = NULL, *k2 = NULL;
	const char *aliases[KY_KEY_ALIASES_MAX];
	uint8_t key[KY_MK_LEN];
	size_t keylen = 0;
	bool txn = false;
	int r;

	if ((r = kp_parse_create(x->q->body.data, x->q->body.len, &cr, x->detail,
	                         sizeof(x->detail))) != 0)
		return r;
	if ((r = api_ipolicies_read(x, &pol)) != 0)
		goto out;
	if ((r = kp_instance_policies_allow(&pol, cr.extractable,
	                                    !cr.has_payload     ? KP_GENERATED
	                                    : cr.secure.present ? KP_IMPORTED_TOKEN
	                                                        : KP_IMPORTED,
	                                    x->detail, sizeof(x->detail))) != 0)
		goto out;
	if (cr.expires != 0 && cr.expires <= x->now) {
		api_detail(x, "expirationDate is in the past");
		r = KY_ERR_MALFORMED;
		goto out;
	}
	sp.name = cr.name;
	sp.description = cr.description;
	sp.extractable = cr.extractable;
	sp.payload = cr.has_payload ? cr.payload.data : NULL;
	sp.len = cr.has_payload ? cr.payload.len : 0;
	/* A secure import: the key comes out of the import token, whose nonce is used up in the
	 * transaction that stores the key. */
	if (cr.secure.present) {
		if ((r = kp_txn_begin(&x->kms, x->in_txn, &txn)) != 0)
			goto out;
		if ((r = kp_import_token_unseal(&x->kms, &cr.secure, &cr.payload, x->now, key,
		                                sizeof(key), &keylen, x->detail,
		                                sizeof(x->detail))) != 0)
			goto out;
		sp.payload = key;
		sp.len = keylen;
	}
	sp.expires = cr.expires;
	sp.actor = x->caller;
	for (size_t i = 0; i < cr.naliases; i++)
		aliases[i] = cr.aliases[i];
	sp.aliases = aliases;
	sp.naliases = cr.naliases;
	sp.ring = api_ring_header(x);
	r = ky_kms_key_create_in(&x->kms, &sp, x->now, &k);
	if (r == KY_ERR_KEY_RING_NOT_FOUND)
		api_detail(x, "header X-Kms-Key-Ring '%.100s'", sp.ring);
	if (r == KY_ERR_KEY_ALIAS_EXISTS)
		api_detail(x, "one of the aliases in member 'resources[0].aliases' (each may be "
		              "given once, and none may be another key's)");
	if (r == KY_ERR_RECORD_TAMPERED && sp.naliases > 0)
		api_detail(x, "member 'resources[0].aliases': every key record was read, and "
		              "another key's sealed record lists one of them while the alias index "
		              "does not (altered by hand), or a record failed its own check");
	if (r == KY_ERR_KEY_LIMIT)
		api_detail(
		    x,
		    "the instance holds %lu keys under its master key, its limit (key_limit in "
		    "unit.conf)",
		    (unsigned long)ky_store_key_limit(x->kms.store));
	if (r != 0)
		goto out;
	/* The instance's policies apply to keys made from now on. */
	if (pol.dual_auth || (pol.rotation && !k->extractable)) {
		struct ky_key_act a = {
		    .action = KY_KEY_SET_POLICY,
		    .actor = x->caller,
		    .rotation_months = pol.rotation && !k->extractable ? pol.rotation_months : -1,
		    .dual_auth = pol.dual_auth ? 1 : -1};
		if ((r = ky_kms_key_act(&x->kms, k->id, &a, x->now, &k2)) != 0)
			goto out;
		ky_key_free(k);
		k = k2;
		k2 = NULL; /* transferred */
	}
	r = api_reply_key(
	    x, 201, k, x->prefer == KP_PREFER_REPRESENTATION && api_allowed(x->role, PERM_PAYLOAD));
out:
	if (txn)
		r = kp_txn_end(&x->kms, true, r);
	OPENSSL_cleanse(key, sizeof(key));
	ky_key_free(k);
	ky_key_free(k2);
	kp_create_release(&cr);
	return r;
}

static int api_key_get(struct api_ctx *x, bool metadata)
{
	struct ky_key *k = NULL;
	int r;

	if ((r = api_key_id(x)) != 0)
		return r;
	if ((r = ky_kms_key_get(&x->kms, x->q->id, metadata ? KY_KMS_METADATA_ONLY : 0, x->now,
	                        &k)) != 0)
		return r;
	if (!metadata && k->state == KY_KEY_DESTROYED) {
		api_detail(x, "key %s was deleted: its metadata is at /keys/%s/metadata", k->id,
		           k->id);
		r = KY_ERR_KEY_DESTROYED;
		goto out;
	}
	r = api_reply_key(x, 200, k, !metadata && api_allowed(x->role, PERM_PAYLOAD));
out:
	ky_key_free(k);
	return r;
}

static int api_key_versions(struct api_ctx *x)
{
	struct ky_key *k = NULL;
	uint64_t limit = KP_LIST_DEFAULT, offset = 0;
	bool present, b = false, all_states = false;
	int r;

	if ((r = api_key_id(x)) != 0)
		return r;
	if (kp_query_uint(api_query(x, "limit"), KP_LIST_MAX, &present, &limit) != 0 ||
	    (present && limit == 0) ||
	    kp_query_uint(api_query(x, "offset"), UINT32_MAX, &present, &offset) != 0) {
		api_detail(x, "query limit must be 1 to %d, offset a whole number", KP_LIST_MAX);
		return KY_ERR_MALFORMED;
	}
	/* totalCount=true asks for metadata.totalCount, which kyok always gives. */
	if (kp_query_bool(api_query(x, "totalCount"), &present, &b) != 0 ||
	    kp_query_bool(api_query(x, "allKeyStates"), &present, &all_states) != 0) {
		api_detail(x, "queries totalCount and allKeyStates must be true or false");
		return KY_ERR_MALFORMED;
	}
	if ((r = ky_kms_key_get(&x->kms, x->q->id, KY_KMS_METADATA_ONLY, x->now, &k)) != 0)
		return r;
	/* Without allKeyStates=true, only the versions of a key that is not destroyed. */
	if (!all_states && k->state == KY_KEY_DESTROYED) {
		api_detail(x, "key %s was deleted: ask with allKeyStates=true for its versions",
		           k->id);
		ky_key_free(k);
		return KY_ERR_KEY_DESTROYED;
	}
	x->reply = kp_versions_json(k, offset, limit);
	if (x->reply != NULL)
		json_object_set_new(json_object_get(x->reply, "metadata"), "totalCount",
		                    json_integer(k->nversions));
	x->status = 200;
	r = x->reply ? 0 : KY_ERR_NOMEM;
	ky_key_free(k);
	return r;
}

/* A state change through lib/kms; 204, or the key with Prefer: return=representation. */
static int api_key_act(struct api_ctx *x, struct ky_key_act *a, unsigned status_repr,
                       bool always_body)
{
	struct ky_key *k = NULL;
	int r;

	if ((r = api_key_id(x)) != 0)
		return r;
	a->actor = x->caller;
	r = ky_kms_key_act(&x->kms, x->q->id, a, x->now, &k);
	/* Whatever happened, this unit's cached copy is not trusted any more. */
	unitd_keystore_flush(x->api->ks);
	if (r == KY_ERR_DUAL_AUTH_REQUIRED)
		api_detail(x,
		           "set the key for deletion first (POST /keys/%s/actions/"
		           "setKeyForDeletion) as another user",
		           x->q->id);
	if (r != 0)
		goto out;
	if (k == NULL) {
		x->status = 204;
	} else if (always_body || x->prefer == KP_PREFER_REPRESENTATION) {
		r = api_reply_key(x, status_repr, k, false);
	} else {
		x->status = 204;
	}
out:
	ky_key_free(k);
	return r;
}

static const char *api_action_name(enum api_action act);

static int api_no_body(struct api_ctx *x, const char *what);

/* PATCH /keys/{id} {"keyRingID": RING}: 200 and the key in its new ring. */
static int api_key_patch(struct api_ctx *x)
{
	char ring[KY_KEY_RING_MAX + 1];
	struct ky_key *k = NULL;
	int r;

	if ((r = kp_parse_patch(x->q->body.data, x->q->body.len, ring, x->detail,
	                        sizeof(x->detail))) != 0)
		return r;
	if ((r = api_key_id(x)) != 0)
		return r;
	r = ky_kms_key_move(&x->kms, x->q->id, ring, x->caller, x->now, &k);
	unitd_keystore_flush(x->api->ks);
	if (r == KY_ERR_KEY_RING_NOT_FOUND)
		api_detail(x, "member 'keyRingID': '%s'", ring);
	if (r != 0)
		return r;
	r = api_reply_key(x, 200, k, false);
	ky_key_free(k);
	return r;
}

/* GET /key_rings (limit, offset, totalCount). */
static int api_rings_list(struct api_ctx *x)
{
	struct ky_key_rings *l = NULL;
	uint64_t limit = KP_LIST_DEFAULT, offset = 0;
	bool present, total = false;
	int r;

	if (kp_query_uint(api_query(x, "limit"), KP_LIST_MAX, &present, &limit) != 0 ||
	    (present && limit == 0) ||
	    kp_query_uint(api_query(x, "offset"), UINT32_MAX, &present, &offset) != 0 ||
	    kp_query_bool(api_query(x, "totalCount"), &present, &total) != 0) {
		api_detail(x,
		           "query limit must be 1 to %d, offset a whole number, totalCount true "
		           "or false",
		           KP_LIST_MAX);
		return KY_ERR_MALFORMED;
	}
	if ((l = malloc(sizeof(*l))) == NULL)
		return KY_ERR_NOMEM;
	if ((r = ky_kms_rings_get(&x->kms, l)) != 0)
		goto out;
	x->reply = kp_rings_json(l, offset, limit, total);
	x->status = 200;
	r = x->reply ? 0 : KY_ERR_NOMEM;
out:
	free(l);
	return r;
}

/* POST /key_rings/{ring} (201), DELETE /key_rings/{ring} (204). */
static int api_ring_change(struct api_ctx *x, bool create)
{
	const char *id = x->q->ring;
	size_t holding = 0;
	bool present, force = false;
	int r;

	if ((r = api_no_body(x, create ? "key ring creation" : "key ring deletion")) != 0)
		return r;
	if (!ky_key_ring_valid(id)) {
		api_detail(x, "'%.40s'", id[0] == '?' ? "(longer than 100 characters)" : id);
		return KY_ERR_KEY_RING_INVALID;
	}
	/* force=true: the deleted keys in the ring move to 'default' (Key Protect's meaning). */
	if (!create && kp_query_bool(api_query(x, "force"), &present, &force) != 0) {
		api_detail(x, "query force must be true or false");
		return KY_ERR_MALFORMED;
	}
	if (create)
		r = ky_kms_ring_create(&x->kms, id, x->caller, x->now);
	else
		r = ky_kms_ring_delete(&x->kms, id, force, x->now, &holding);
	if (r == KY_ERR_KEY_RING_NOT_EMPTY)
		api_detail(x, "key ring '%s' holds %zu key%s", id, holding,
		           holding == 1 ? "" : "s");
	else if (r == KY_ERR_KEY_RING_EXISTS || r == KY_ERR_KEY_RING_NOT_FOUND)
		api_detail(x, "key ring '%s'", id);
	if (r != 0)
		return r;
	x->status = create ? 201 : 204;
	return 0;
}

/* POST and DELETE /keys/{id}/aliases/{alias}: 201 with the alias, or 204. */
static int api_key_alias(struct api_ctx *x, bool add)
{
	struct ky_key_act a = {.action = add ? KY_KEY_ALIAS_ADD : KY_KEY_ALIAS_DELETE,
	                       .rotation_months = -1,
	                       .dual_auth = -1,
	                       .alias = x->q->alias};
	struct ky_key *k = NULL;
	int r;

	if ((r = api_no_body(x, add ? "alias creation" : "alias deletion")) != 0)
		return r;
	if (add && !ky_key_alias_valid(x->q->alias)) {
		api_detail(x, "'%.40s'",
		           x->q->alias[0] == '?' ? "(longer than 90 characters)" : x->q->alias);
		return KY_ERR_KEY_ALIAS_INVALID;
	}
	if ((r = api_key_id(x)) != 0)
		return r;
	a.actor = x->caller;
	r = ky_kms_key_act(&x->kms, x->q->id, &a, x->now, &k);
	/* Whatever happened, this unit's cached copy is not trusted any more. */
	unitd_keystore_flush(x->api->ks);
	if (r == KY_ERR_KEY_ALIAS_EXISTS)
		api_detail(x, "alias '%s'", x->q->alias);
	else if (r == KY_ERR_RECORD_TAMPERED && add)
		api_detail(x,
		           "alias '%s': every key record was read, and another key's sealed record "
		           "lists it while the alias index does not (altered by hand), or a record "
		           "failed its own check",
		           x->q->alias);
	else if (r == KY_ERR_KEY_ALIAS_QUOTA)
		api_detail(x, "key %s", x->q->id);
	else if (r == KY_ERR_KEY_ALIAS_NOT_FOUND)
		api_detail(x, "key %s has no alias '%.90s'", x->q->id, x->q->alias);
	if (r != 0)
		goto out;
	if (add) {
		x->reply = kp_alias_json(k, x->q->alias);
		x->status = 201;
		r = x->reply ? 0 : KY_ERR_NOMEM;
	} else {
		x->status = 204;
	}
out:
	ky_key_free(k);
	return r;
}

/* wrap, unwrap, rewrap: the hot path, through the key cache. */
static int api_key_crypt(struct api_ctx *x, enum api_action act)
{
	struct kp_action_body b;
	struct unitd_key_ref *ref = NULL;
	const struct ky_key *k;
	uint8_t *out = NULL, *out2 = NULL, dek[KY_DEK_LEN];
	size_t outlen = 0, out2len = 0, outcap = 0;
	uint32_t ver = 0;
	char *b64 = NULL, *b64b = NULL;
	const struct ky_key_version *used = NULL, *newest;
	int r;

	if ((r = api_key_id(x)) != 0)
		return r;
	if ((r = kp_parse_action(x->q->body.data, x->q->body.len, api_action_name(act),
	                         act == ACT_WRAP ? "plaintext aad" : "ciphertext aad", &b,
	                         x->detail, sizeof(x->detail))) != 0)
		return r;
	if (act != ACT_WRAP && !b.has_ciphertext) {
		api_detail(x, "member 'ciphertext' is required");
		r = KY_ERR_MALFORMED;
		goto out;
	}
	if (act == ACT_WRAP && b.has_plaintext && b.plaintext.len == 0) {
		api_detail(x,
		           "member 'plaintext' is empty: give 1 to %d bytes (base64), or leave it "
		           "out to have a new 256-bit data key made and wrapped",
		           KY_WRAP_PT_MAX);
		r = KY_ERR_MALFORMED;
		goto out;
	}
	if ((r = unitd_keystore_key_get(x->api->ks, &x->kms, x->q->id, x->now, &ref)) != 0)
		goto out;
	k = unitd_key_ref_key(ref);
	newest = &k->versions[k->nversions - 1];
	/* Room for the larger of: the plaintext wrapped, the ciphertext unwrapped (and wrapped
	 * again under the newest version). */
	outcap = (b.has_plaintext ? b.plaintext.len : KY_DEK_LEN) + KY_WRAP_OVERHEAD;
	if (b.ciphertext.len + KY_WRAP_OVERHEAD > outcap)
		outcap = b.ciphertext.len + KY_WRAP_OVERHEAD;
	if ((out = ky_secret_alloc(outcap)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	switch (act) {
	case ACT_WRAP:
		/* The cached copy keeps the state it was read with: expiry is checked here. */
		if (ky_key_state_at(k, x->now) == KY_KEY_DEACTIVATED) {
			api_detail(x, "key %s expired", k->id);
			r = KY_ERR_KEY_NOT_ACTIVE;
			goto out;
		}
		if (b.has_plaintext) {
			r = ky_kms_wrap(k, b.plaintext.data, b.plaintext.len, b.aad.data, b.aad.len,
			                out, outcap, &outlen);
		} else {
			r = ky_kms_wrap_dek(k, b.aad.data, b.aad.len, dek, out, outcap, &outlen);
			if (r == 0)
				r = ky_b64_encode(dek, sizeof(dek), &b64b);
		}
		if (r != 0 || (r = ky_b64_encode(out, outlen, &b64)) != 0)
			goto out;
		x->reply =
		    json_pack("{s:s, s:{s:s}}", "ciphertext", b64, "keyVersion", "id", newest->id);
		if (x->reply != NULL && b64b != NULL &&
		    json_object_set_new(x->reply, "plaintext", json_string(b64b)) != 0)
			r = KY_ERR_NOMEM;
		break;
	case ACT_UNWRAP:
		if ((r = ky_kms_unwrap(k, b.ciphertext.data, b.ciphertext.len, b.aad.data,
		                       b.aad.len, out, outcap, &outlen, &ver)) != 0)
			goto out;
		if (ver < 1 || ver > k->nversions) {
			r = KY_ERR_UNWRAP;
			goto out;
		}
		used = &k->versions[ver - 1];
		if ((r = ky_b64_encode(out, outlen, &b64)) != 0)
			goto out;
		x->reply =
		    json_pack("{s:s, s:{s:s}}", "plaintext", b64, "keyVersion", "id", used->id);
		/* An old version's ciphertext comes back rewrapped under the newest version. */
		if (x->reply != NULL && ver < k->nversions &&
		    ky_key_state_at(k, x->now) == KY_KEY_ACTIVE) {
			if ((out2 = ky_secret_alloc(outcap)) == NULL) {
				r = KY_ERR_NOMEM;
				goto out;
			}
			if ((r = ky_kms_wrap(k, out, outlen, b.aad.data, b.aad.len, out2, outcap,
			                     &out2len)) != 0 ||
			    (r = ky_b64_encode(out2, out2len, &b64b)) != 0)
				goto out;
			if (json_object_set_new(x->reply, "ciphertext", json_string(b64b)) != 0 ||
			    json_object_set_new(x->reply, "rewrappedKeyVersion",
			                        json_pack("{s:s}", "id", newest->id)) != 0)
				r = KY_ERR_NOMEM;
		}
		break;
	case ACT_REWRAP:
		if ((r = ky_kms_wrap_version(b.ciphertext.data, b.ciphertext.len, &ver)) != 0)
			goto out;
		if ((r = ky_kms_rewrap(k, b.ciphertext.data, b.ciphertext.len, b.aad.data,
		                       b.aad.len, out, outcap, &outlen)) != 0)
			goto out;
		if (ver < 1 || ver > k->nversions) {
			r = KY_ERR_UNWRAP;
			goto out;
		}
		if ((r = ky_b64_encode(out, outlen, &b64)) != 0)
			goto out;
		x->reply =
		    json_pack("{s:s, s:{s:s}, s:{s:s}}", "ciphertext", b64, "keyVersion", "id",
		              k->versions[ver - 1].id, "rewrappedKeyVersion", "id", newest->id);
		break;
	case ACT_ROTATE:
	case ACT_ENABLE:
	case ACT_DISABLE:
	case ACT_SET_DELETION:
	case ACT_UNSET_DELETION:
	case ACT_RESTORE:
	case ACT_SYNC:
		r = KY_ERR_INTERNAL;
		goto out;
	}
	if (r == 0 && x->reply == NULL)
		r = KY_ERR_NOMEM;
	x->status = 200;
out:
	if (r == KY_ERR_KEY_NOT_ACTIVE && x->detail[0] == '\0')
		api_detail(x, "key %s is suspended or deactivated", x->q->id);
	if (b64 != NULL) {
		OPENSSL_cleanse(b64, strlen(b64));
		free(b64);
	}
	if (b64b != NULL) {
		OPENSSL_cleanse(b64b, strlen(b64b));
		free(b64b);
	}
	OPENSSL_cleanse(dek, sizeof(dek));
	ky_secret_free(out, outcap);
	ky_secret_free(out2, outcap);
	unitd_keystore_key_put(x->api->ks, ref);
	kp_action_release(&b);
	return r;
}

static const char *api_action_name(enum api_action act)
{
	for (size_t i = 0; i < API_NACTIONS; i++)
		if (api_actions[i].action == act)
			return api_actions[i].name;
	return "?";
}

/* A request that takes no body member: an empty body or an empty object (a payload to restore
 * an imported key is refused: kyok keeps a deleted key's material until it is purged). */
static int api_no_body(struct api_ctx *x, const char *what)
{
	struct kp_action_body b;
	int r;

	if (x->q->body.len == 0)
		return 0;
	if ((r = kp_parse_action(x->q->body.data, x->q->body.len, what, "", &b, x->detail,
	                         sizeof(x->detail))) != 0)
		return r;
	kp_action_release(&b);
	return 0;
}

/* Rotation of an imported root key with material encrypted to the import token: the token's
 * nonce is used up in the transaction that stores the new version. */
static int api_key_rotate_sealed(struct api_ctx *x, struct ky_key_act *a,
                                 const struct kp_action_body *b)
{
	uint8_t key[KY_MK_LEN];
	size_t keylen = 0;
	bool txn = false;
	int r;

	if ((r = api_key_id(x)) != 0)
		return r;
	if ((r = kp_txn_begin(&x->kms, x->in_txn, &txn)) != 0)
		return r;
	if ((r = kp_import_token_unseal(&x->kms, &b->secure, &b->payload, x->now, key, sizeof(key),
	                                &keylen, x->detail, sizeof(x->detail))) != 0)
		goto out;
	a->payload = key;
	a->len = keylen;
	r = api_key_act(x, a, 200, false);
out:
	r = kp_txn_end(&x->kms, txn, r);
	a->payload = NULL;
	a->len = 0;
	OPENSSL_cleanse(key, sizeof(key));
	return r;
}

/* POST /keys/{id}/actions/sync: no other service holds kyok keys, so there is nothing to
 * notify; the answer is Key Protect's (kp_sync_check): 409 within an hour of the key's last
 * change, else 204. */
static int api_key_sync(struct api_ctx *x)
{
	struct ky_key *k = NULL;
	int r;

	if ((r = api_no_body(x, "sync")) != 0)
		return r;
	if ((r = api_key_id(x)) != 0)
		return r;
	if ((r = ky_kms_key_get(&x->kms, x->q->id, KY_KMS_METADATA_ONLY, x->now, &k)) != 0)
		return r;
	if ((r = kp_sync_check(k->id, k->updated, x->now, x->detail, sizeof(x->detail))) == 0)
		x->status = 204;
	ky_key_free(k);
	return r;
}

static int api_action_by_name(struct api_ctx *x, size_t *idx)
{
	const char *name = x->q->action[0] ? x->q->action : api_query(x, "action");

	for (size_t i = 0; name != NULL && i < API_NACTIONS; i++) {
		if (strcmp(api_actions[i].name, name) == 0) {
			*idx = i;
			return 0;
		}
	}
	if (name == NULL || name[0] == '\0') {
		api_detail(x, "no action named: POST /api/v2/keys/{id} takes ?action= one of wrap, "
		              "unwrap, rewrap, rotate, enable, disable, setKeyForDeletion, "
		              "unsetKeyForDeletion, restore, sync");
		return KY_ERR_MALFORMED;
	}
	api_detail(x,
	           "unknown action '%.32s' (wrap, unwrap, rewrap, rotate, enable, disable, "
	           "setKeyForDeletion, unsetKeyForDeletion, restore, sync)",
	           name);
	return KY_ERR_NOT_FOUND;
}

static int api_key_action(struct api_ctx *x)
{
	struct kp_action_body b;
	struct ky_key_act a = {.rotation_months = -1, .dual_auth = -1};
	size_t i;
	int r;

	if ((r = api_action_by_name(x, &i)) != 0)
		return r;
	if ((r = api_check(x, api_actions[i].perm)) != 0)
		return r;
	switch (api_actions[i].action) {
	case ACT_WRAP:
	case ACT_UNWRAP:
	case ACT_REWRAP:
		return api_key_crypt(x, api_actions[i].action);
	case ACT_ROTATE:
		if ((r = kp_parse_action(x->q->body.data, x->q->body.len, "rotate",
		                         "payload encryptedNonce iv encryptionAlgorithm", &b,
		                         x->detail, sizeof(x->detail))) != 0)
			return r;
		a.action = KY_KEY_ROTATE;
		a.payload = b.has_payload ? b.payload.data : NULL;
		a.len = b.has_payload ? b.payload.len : 0;
		/* New material given with the rotation is an import: keyCreateImportAccess
		 * applies to it as to a root key imported on create. */
		if (b.has_payload || b.secure.present) {
			struct kp_instance_policies pol;
			if ((r = api_ipolicies_read(x, &pol)) != 0 ||
			    (r = kp_instance_policies_allow(
			         &pol, 0, b.secure.present ? KP_IMPORTED_TOKEN : KP_IMPORTED,
			         x->detail, sizeof(x->detail))) != 0) {
				kp_action_release(&b);
				return r;
			}
		}
		r = b.secure.present ? api_key_rotate_sealed(x, &a, &b)
		                     : api_key_act(x, &a, 200, false);
		kp_action_release(&b);
		return r;
	case ACT_SYNC:
		return api_key_sync(x);
	case ACT_ENABLE:
		if ((r = api_no_body(x, api_actions[i].name)) != 0)
			return r;
		a.action = KY_KEY_ENABLE;
		return api_key_act(x, &a, 200, false);
	case ACT_DISABLE:
		if ((r = api_no_body(x, api_actions[i].name)) != 0)
			return r;
		a.action = KY_KEY_DISABLE;
		return api_key_act(x, &a, 200, false);
	case ACT_SET_DELETION:
		if ((r = api_no_body(x, api_actions[i].name)) != 0)
			return r;
		a.action = KY_KEY_SET_DELETION;
		return api_key_act(x, &a, 200, false);
	case ACT_UNSET_DELETION:
		if ((r = api_no_body(x, api_actions[i].name)) != 0)
			return r;
		a.action = KY_KEY_UNSET_DELETION;
		return api_key_act(x, &a, 200, false);
	case ACT_RESTORE:
		if ((r = api_no_body(x, "restore")) != 0)
			return r;
		a.action = KY_KEY_RESTORE;
		return api_key_act(x, &a, 201, true);
	}
	return KY_ERR_INTERNAL;
}

static int api_key_policies(struct api_ctx *x, bool put)
{
	const char *only = api_query(x, "policy");
	struct kp_key_policy p;
	struct ky_key *k = NULL;
	int r;

	if (only != NULL && only[0] == '\0')
		only = NULL;
	if (only != NULL && strcmp(only, "rotation") != 0 && strcmp(only, "dualAuthDelete") != 0) {
		api_detail(x, "query policy must be rotation or dualAuthDelete");
		return KY_ERR_MALFORMED;
	}
	if ((r = api_key_id(x)) != 0)
		return r;
	if (put) {
		struct ky_key_act a = {.action = KY_KEY_SET_POLICY, .actor = x->caller};
		if ((r = kp_parse_key_policies(x->q->body.data, x->q->body.len, only, &p, x->detail,
		                               sizeof(x->detail))) != 0)
			return r;
		if ((r = ky_kms_key_get(&x->kms, x->q->id, KY_KMS_METADATA_ONLY, x->now, &k)) != 0)
			return r;
		if (k->dual_auth && p.dual_auth == 0) {
			api_detail(
			    x, "a dual authorization delete policy cannot be turned off once set");
			r = KY_ERR_KEY_STATE;
			goto out;
		}
		ky_key_free(k);
		k = NULL;
		a.rotation_months = p.rotation_months;
		a.dual_auth = p.dual_auth;
		r = ky_kms_key_act(&x->kms, x->q->id, &a, x->now, &k);
		unitd_keystore_flush(x->api->ks);
		if (r != 0)
			goto out;
	} else if ((r = ky_kms_key_get(&x->kms, x->q->id, KY_KMS_METADATA_ONLY, x->now, &k)) != 0) {
		return r;
	}
	x->reply = kp_key_policies_json(k, x->api->instance, only);
	x->status = 200;
	r = x->reply ? 0 : KY_ERR_NOMEM;
out:
	ky_key_free(k);
	return r;
}

/* One PUT /instance/policies applied to what storage holds now (p: read with rev), and
 * written only if that is still what it holds (KY_ERR_CONFLICT if another writer came
 * first). */
static int api_ipolicies_apply(struct api_ctx *x, const char *only, struct kp_instance_policies *p,
                               int64_t rev)
{
	struct ky_buf enc = {0};
	int r = KY_ERR_INTERNAL;

	if ((r = kp_parse_instance_policies(x->q->body.data, x->q->body.len, only, x->caller,
	                                    x->now, p, x->detail, sizeof(x->detail))) != 0)
		goto out;
	if (p->allowed_ip) {
		/* A list that leaves out its sender's address would lock the sender out. */
		struct kp_cidr addr;
		char a[KP_CIDR_TEXT_MAX + 1];
		if ((r = api_caller_addr(x, &addr)) != 0)
			goto out;
		if (kp_allowed_ip_check(p, &addr, NULL, 0) != 0) {
			kp_addr_format(&addr, a, sizeof(a));
			api_detail(x, "this request comes from %s", a);
			r = KY_ERR_IP_POLICY_LOCKOUT;
			goto out;
		}
	}
	if ((r = kp_instance_policies_encode(p, &enc)) != 0)
		goto out;
	if ((r = ky_kms_secret_put_rev(&x->kms, API_SECRET_POLICIES, enc.data, enc.len, x->now,
	                               rev)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&enc);
	return r;
}

/* How many times a PUT is applied again to what another writer stored before it gives up. */
#define API_IPOLICIES_TRIES 5

static int api_instance_policies(struct api_ctx *x, bool put)
{
	const char *only = api_query(x, "policy");
	struct kp_instance_policies p;
	int64_t rev = 0;
	int r = KY_ERR_INTERNAL;

	if (only != NULL && only[0] == '\0')
		only = NULL;
	if (only != NULL && !kp_instance_policy_known(only)) {
		api_detail(x, "query policy must be one of " KP_IPOLICY_TYPES);
		return KY_ERR_MALFORMED;
	}
	if (!put) {
		if ((r = api_ipolicies_read(x, &p)) != 0)
			return r;
		x->reply = kp_instance_policies_json(&p, only);
		x->status = 200;
		return x->reply ? 0 : KY_ERR_NOMEM;
	}
	/* Compare-and-swap: a PUT is a function of the stored policies and its body alone, so
	 * when another unit or request wrote first it is applied again to what that left. */
	for (int attempt = 0; attempt < API_IPOLICIES_TRIES; attempt++) {
		if ((r = api_ipolicies_read_rev(x, &p, &rev)) != 0)
			break;
		if ((r = api_ipolicies_apply(x, only, &p, rev)) != KY_ERR_CONFLICT)
			break;
	}
	/* Written or not, the next read is from the store. */
	unitd_keystore_policies_drop(x->api->ks);
	if (r == KY_ERR_CONFLICT)
		api_detail(x,
		           "the instance policies were changed by other requests %d times while "
		           "this one was applied: send it again",
		           API_IPOLICIES_TRIES);
	if (r == 0)
		x->status = 204;
	return r;
}

/* GET /keys/registrations and /keys/{id}/registrations: kyok keys protect no resource of
 * another service, so the collection is empty; the key of the second must exist. The query
 * parameters are checked, and filter nothing out of nothing. */
static int api_registrations(struct api_ctx *x)
{
	struct ky_key *k = NULL;
	uint64_t v;
	bool present, b, total = false;
	int r;

	if (kp_query_uint(api_query(x, "limit"), KP_LIST_MAX, &present, &v) != 0 ||
	    (present && v == 0) ||
	    kp_query_uint(api_query(x, "offset"), UINT32_MAX, &present, &v) != 0) {
		api_detail(x, "query limit must be 1 to %d, offset a whole number", KP_LIST_MAX);
		return KY_ERR_MALFORMED;
	}
	if (kp_query_bool(api_query(x, "preventKeyDeletion"), &present, &b) != 0 ||
	    kp_query_bool(api_query(x, "totalCount"), &present, &total) != 0) {
		api_detail(x, "queries preventKeyDeletion and totalCount must be true or false");
		return KY_ERR_MALFORMED;
	}
	if (api_routes[x->q->route].route == ROUTE_KEY_REGISTRATIONS) {
		if ((r = api_key_id(x)) != 0)
			return r;
		if ((r = ky_kms_key_get(&x->kms, x->q->id, KY_KMS_METADATA_ONLY, x->now, &k)) != 0)
			return r;
		ky_key_free(k);
	}
	x->reply = kp_registrations_json(present && total);
	x->status = 200;
	return x->reply ? 0 : KY_ERR_NOMEM;
}

struct api_query_check {
	const char *allowed;
	char label[128];
	uint32_t seen;
	int r;
	char *detail;
	size_t detaillen;
};

static enum MHD_Result api_query_check_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                           const char *value)
{
	struct api_query_check *c = cls;

	(void)kind;
	c->r = kp_query_param_check(c->allowed, c->label, key, value, &c->seen, c->detail,
	                            c->detaillen);
	return c->r == 0 ? MHD_YES : MHD_NO;
}

/* Every query parameter is one the route takes, given once, with a value: the first that is
 * not is refused by name (kp_query_param_check). MHD gives every pair, repeats included. */
static int api_query_check(struct api_ctx *x)
{
	struct api_query_check c = {.allowed = api_routes[x->q->route].query,
	                            .detail = x->detail,
	                            .detaillen = sizeof(x->detail)};

	snprintf(c.label, sizeof(c.label), "%s %.100s", api_routes[x->q->route].method, x->q->url);
	MHD_get_connection_values(x->c, MHD_GET_ARGUMENT_KIND, api_query_check_one, &c);
	return c.r;
}

static int api_dispatch_route(struct api_ctx *x)
{
	struct ky_key_act a = {.rotation_months = -1, .dual_auth = -1};
	int route = x->q->route;
	const char *ring;
	int r;

	if ((r = api_query_check(x)) != 0)
		return r;
	/* The ring a request names must be one: a typo is refused, not taken as an empty ring. */
	if ((ring = api_ring_header(x)) != NULL) {
		if (!ky_key_ring_valid(ring)) {
			api_detail(x, "header X-Kms-Key-Ring '%.40s'", ring);
			return KY_ERR_KEY_RING_INVALID;
		}
		if ((r = ky_kms_ring_check(&x->kms, ring)) != 0) {
			if (r == KY_ERR_KEY_RING_NOT_FOUND)
				api_detail(x, "header X-Kms-Key-Ring '%s'", ring);
			return r;
		}
	}
	if (api_routes[route].route != ROUTE_KEY_ACTION &&
	    (r = api_check(x, api_routes[route].perm)) != 0)
		return r;
	/* A read takes no body member: one sent along is refused by name, not dropped. */
	if ((strcmp(api_routes[route].method, "GET") == 0 ||
	     strcmp(api_routes[route].method, "HEAD") == 0) &&
	    (r = api_no_body(x, api_routes[route].method)) != 0)
		return r;
	switch (api_routes[route].route) {
	case ROUTE_TOKEN:
		return KY_ERR_INTERNAL;
	case ROUTE_KEYS_LIST:
		return api_keys_list(x, false);
	case ROUTE_KEYS_HEAD:
		return api_keys_list(x, true);
	case ROUTE_KEY_CREATE:
		return api_key_create(x);
	case ROUTE_KEY_GET:
		return api_key_get(x, false);
	case ROUTE_KEY_METADATA:
		return api_key_get(x, true);
	case ROUTE_KEY_VERSIONS:
		return api_key_versions(x);
	case ROUTE_KEY_DELETE: {
		bool present, force;
		/* force=true deletes a key that protects registered resources: kyok has no
		 * registrations, so a forced delete is the same delete. */
		if (kp_query_bool(api_query(x, "force"), &present, &force) != 0) {
			api_detail(x, "query force must be true or false");
			return KY_ERR_MALFORMED;
		}
		if ((r = api_no_body(x, "delete")) != 0)
			return r;
		a.action = KY_KEY_DELETE;
		return api_key_act(x, &a, 200, false);
	}
	case ROUTE_KEY_PURGE:
		if ((r = api_no_body(x, "purge")) != 0)
			return r;
		a.action = KY_KEY_PURGE;
		return api_key_act(x, &a, 200, false);
	case ROUTE_KEY_RESTORE:
		if ((r = api_no_body(x, "restore")) != 0)
			return r;
		a.action = KY_KEY_RESTORE;
		return api_key_act(x, &a, 201, true);
	case ROUTE_KEY_ACTION:
		return api_key_action(x);
	case ROUTE_KEY_POLICIES_GET:
		return api_key_policies(x, false);
	case ROUTE_KEY_POLICIES_PUT:
		return api_key_policies(x, true);
	case ROUTE_INSTANCE_POLICIES_GET:
		return api_instance_policies(x, false);
	case ROUTE_INSTANCE_POLICIES_PUT:
		return api_instance_policies(x, true);
	case ROUTE_KEY_ALIAS_CREATE:
		return api_key_alias(x, true);
	case ROUTE_KEY_ALIAS_DELETE:
		return api_key_alias(x, false);
	case ROUTE_KEY_PATCH:
		return api_key_patch(x);
	case ROUTE_RINGS_LIST:
		return api_rings_list(x);
	case ROUTE_RING_CREATE:
	case ROUTE_RING_DELETE:
		return api_ring_change(x, api_routes[route].route == ROUTE_RING_CREATE);
	case ROUTE_IMPORT_TOKEN_POST:
		x->status = 200;
		return kp_import_token_create(&x->kms, x->in_txn, x->q->body.data, x->q->body.len,
		                              x->now, &x->it_made, &x->reply, x->detail,
		                              sizeof(x->detail));
	case ROUTE_IMPORT_TOKEN_GET:
		x->status = 200;
		return kp_import_token_retrieve(&x->kms, x->in_txn, x->now, &x->reply, x->detail,
		                                sizeof(x->detail));
	case ROUTE_REGISTRATIONS:
	case ROUTE_KEY_REGISTRATIONS:
		return api_registrations(x);
	}
	return KY_ERR_INTERNAL;
}

/* ---- request ids: a state change carried out at most once ----
 * A request that changes key storage and carries Idempotency-Key runs inside one write
 * transaction with the row that records it: the reply (sealed), its status, the hash of the
 * request. The same id from the same API key finds that row (on any unit: storage is shared)
 * and gets the same reply, without a second change; with another request it is refused
 * (KY_ERR_REQUEST_ID_REUSED). A request that fails records nothing: the transaction is
 * rolled back, nothing changed, and sending it again is safe. */

/* 1 to KY_REQUEST_ID_MAX of [A-Za-z0-9._:-]. Pure. */
static bool api_request_id_ok(const char *v)
{
	size_t n = v ? strlen(v) : 0;

	if (n == 0 || n > KY_REQUEST_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = v[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' || ch == ':'))
			return false;
	}
	return true;
}

static bool api_route_changes(struct api_ctx *x)
{
	size_t i;
	const char *name;

	if (api_routes[x->q->route].route != ROUTE_KEY_ACTION)
		return api_routes[x->q->route].changes;
	name = x->q->action[0] ? x->q->action : api_query(x, "action");
	for (i = 0; name != NULL && i < API_NACTIONS; i++)
		if (strcmp(api_actions[i].name, name) == 0)
			return api_actions[i].changes;
	return false; /* unknown action: refused by the handler */
}

static enum MHD_Result api_query_append(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value)
{
	struct ky_buf *b = cls;
	char len[24];

	(void)kind;
	if (value == NULL)
		value = "";
	snprintf(len, sizeof(len), "%zu:", strlen(key));
	if (ky_buf_append_str(b, len) != 0 || ky_buf_append_str(b, key) != 0)
		goto fail;
	snprintf(len, sizeof(len), "%zu:", strlen(value));
	if (ky_buf_append_str(b, len) != 0 || ky_buf_append_str(b, value) != 0)
		goto fail;
	return MHD_YES;
fail:
	ky_buf_free(b); /* an empty buffer tells api_request_hash */
	return MHD_NO;
}

/* The hash a request id is bound to: method, path, the query arguments as received (in
 * order, each name and value prefixed with its length), body. */
static int api_request_hash(struct api_ctx *x, uint8_t hash[KY_REQUEST_HASH_LEN])
{
	struct ky_buf path = {0};
	int r = KY_ERR_NOMEM;

	if (ky_buf_append_str(&path, x->q->url) != 0 || ky_buf_append_str(&path, "?") != 0)
		goto out;
	if (MHD_get_connection_values(x->c, MHD_GET_ARGUMENT_KIND, api_query_append, &path) < 0 ||
	    path.len == 0)
		goto out;
	if (ky_buf_append(&path, "", 1) != 0)
		goto out;
	r = ky_kms_request_hash(x->q->method, (const char *)path.data, x->q->body.data,
	                        x->q->body.len, hash);
out:
	ky_buf_free(&path);
	return r;
}

static void api_date(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, 32, "%lld", (long long)t);
}

/* The kept reply of (caller, rid), as x->stored. */
static int api_replay(struct api_ctx *x, const struct ky_store_request *req,
                      const uint8_t hash[KY_REQUEST_HASH_LEN], const char *rid)
{
	uint8_t *body = NULL;
	size_t n = 0;
	char when[32];
	int r;

	api_date(req->created, when);
	if (CRYPTO_memcmp(req->hash, hash, KY_REQUEST_HASH_LEN) != 0) {
		api_detail(x,
		           "request id '%s' was used at %s for a request with another method, "
		           "path, query or body",
		           rid, when);
		return KY_ERR_REQUEST_ID_REUSED;
	}
	r = ky_kms_request_open(&x->kms, req, &body, &n);
	if (r == KY_ERR_MK_MISMATCH) {
		api_detail(x,
		           "request id '%s' was carried out at %s; its reply is under a master key "
		           "this unit does not hold",
		           rid, when);
		return KY_ERR_REQUEST_REPLY_GONE;
	}
	if (r == KY_ERR_RECORD_TAMPERED)
		api_detail(x, "the kept reply of request id '%s' does not verify", rid);
	if (r != 0)
		return r;
	r = ky_buf_append(&x->stored, body, n) == 0 ? 0 : KY_ERR_NOMEM;
	ky_kms_buf_free(body, n);
	if (r != 0)
		return r;
	x->status = (unsigned)req->status;
	x->replayed = true;
	return 0;
}

/* Runs a state change under its request id (header Idempotency-Key), or plainly without one. */
static int api_dispatch_once(struct api_ctx *x)
{
	const char *rid = api_header(x, API_HDR_REQUEST_ID);
	struct ky_store *st = x->kms.store;
	struct ky_store_request req = {0};
	uint8_t hash[KY_REQUEST_HASH_LEN];
	bool in_txn = false;
	uint64_t expired = 0;
	int r = KY_ERR_INTERNAL;

	if (rid == NULL || !api_route_changes(x))
		return api_dispatch_route(x); /* reads change nothing: repeating them is safe */
	if (!api_request_id_ok(rid)) {
		api_detail(x, "got '%.40s'", rid);
		return KY_ERR_REQUEST_ID_INVALID;
	}
	/* The role first: a caller who may not do this (any more) gets no kept reply. */
	if (api_routes[x->q->route].route != ROUTE_KEY_ACTION) {
		if ((r = api_check(x, api_routes[x->q->route].perm)) != 0)
			return r;
	} else {
		size_t i;
		if ((r = api_action_by_name(x, &i)) != 0 ||
		    (r = api_check(x, api_actions[i].perm)) != 0)
			return r;
	}
	if ((r = api_request_hash(x, hash)) != 0)
		return r;
	/* A new import token's RSA key takes a while: made before the write lock is taken (a
	 * replay of the request id then throws it away). */
	if (api_routes[x->q->route].route == ROUTE_IMPORT_TOKEN_POST &&
	    (r = kp_import_token_make(x->q->body.data, x->q->body.len, x->now, &x->it_made,
	                              x->detail, sizeof(x->detail))) != 0)
		return r;
	if ((r = ky_store_begin(st)) != 0)
		goto out;
	in_txn = true;
	x->in_txn = true;
	if ((r = ky_store_request_expire(st, x->now - API_REQUEST_TTL, &expired)) != 0)
		goto out;
	r = ky_store_request_get(st, x->caller, rid, &req);
	if (r == 0) {
		r = api_replay(x, &req, hash, rid);
		goto out; /* rolled back: the expiry waits for the next change */
	}
	if (r != KY_ERR_NOT_FOUND)
		goto out;
	if ((r = api_dispatch_route(x)) != 0)
		goto out;
	/* The reply as it will be sent, kept with the change in the same transaction. */
	if (x->reply != NULL && (r = kp_json_dump(x->reply, &x->stored)) != 0)
		goto out;
	memcpy(req.apikey, x->caller, sizeof(req.apikey));
	snprintf(req.id, sizeof(req.id), "%s", rid);
	memcpy(req.hash, hash, sizeof(hash));
	req.status = x->status ? (int)x->status : 200;
	req.created = x->now;
	if ((r = ky_kms_request_seal(&x->kms, &req, x->stored.data, x->stored.len)) != 0)
		goto out;
	if ((r = ky_store_request_put(st, &req)) != 0)
		goto out;
	in_txn = false;
	if ((r = ky_store_commit(st)) != 0)
		goto out;
	x->status = (unsigned)req.status;
	x->replayed = false;
	r = 0;
out:
	if (in_txn)
		(void)ky_store_rollback(st);
	x->in_txn = false;
	ky_import_token_free(x->it_made);
	x->it_made = NULL;
	if (r != 0) {
		ky_buf_free(&x->stored);
		json_decref(x->reply);
		x->reply = NULL;
		x->status = 0;
	}
	ky_store_request_release(&req);
	OPENSSL_cleanse(hash, sizeof(hash));
	return r;
}

/* The audit line of a request answered outside a route handler (token, refusals before
 * routing): err, or KY_ERR_AUDIT_UNAVAILABLE (with detail) when it cannot be written. */
static int api_audit_plain(const char *method, const char *path, const char *apikey, int err,
                           char *detail, size_t detaillen)
{
	if (unitd_audit_api(UNITD_AUDIT_DONE, method, path, "", apikey, "",
	                    (unsigned)ky_err_http(err), err) == 0)
		return err;
	snprintf(detail, detaillen, "the crypto unit cannot write its audit log");
	return KY_ERR_AUDIT_UNAVAILABLE;
}

/* ---- the token service ---- */

static enum MHD_Result api_token_error(struct MHD_Connection *c, int err, const char *detail)
{
	json_t *j;
	enum MHD_Result ret;
	char code[64];

	/* IAM's error shape: errorCode, errorMessage (the SDK reports errorMessage). */
	if (err == KY_ERR_APIKEY_INVALID)
		snprintf(code, sizeof(code), "BXNIM0415E");
	else
		snprintf(code, sizeof(code), "KYOK-%s", ky_err_slug(err));
	j = json_pack("{s:s, s:s+++, s:s}", "errorCode", code, "errorMessage", ky_err_message(err),
	              detail && detail[0] ? ": " : "", detail ? detail : "", "", "kyokCode",
	              ky_err_slug(err));
	ret = api_send_json(c, (unsigned)ky_err_http(err), j, NULL, NULL);
	json_decref(j);
	return ret;
}

static enum MHD_Result api_token(struct unitd_api *api, struct MHD_Connection *c, struct api_req *q)
{
	char apikey[TOKEN_APIKEY_MAX + 1], detail[256] = "", tok[TOKEN_MAX_LEN + 1];
	uint8_t hash[KY_APIKEY_HASH_LEN], key[UNITD_TOKEN_KEY_LEN];
	struct ky_store_apikey ak;
	struct token_claims cl = {0};
	struct ky_kms kms;
	bool held = false;
	json_t *j = NULL;
	int64_t now = api_now();
	enum MHD_Result ret;
	char who[KY_ID_MAX + 1] = "";
	int r;

	if (api->ks == NULL) {
		r = KY_ERR_NO_STORE;
		goto out;
	}
	ky_store_failure_clear(unitd_keystore_store(api->ks));
	if ((r = token_form_parse((const char *)q->body.data, q->body.len, apikey, sizeof(apikey),
	                          detail, sizeof(detail))) != 0)
		goto out;
	r = ky_apikey_hash(apikey, hash);
	OPENSSL_cleanse(apikey, sizeof(apikey));
	if (r != 0)
		goto out;
	if ((r = unitd_keystore_enter(api->ks, &kms)) != 0)
		goto out;
	held = true;
	r = unitd_keystore_apikey_find(api->ks, &kms, hash, now, &ak);
	if (r == 0)
		memcpy(who, ak.id, sizeof(who));
	if (r == KY_ERR_NOT_FOUND || (r == 0 && ak.revoked != 0)) {
		r = KY_ERR_APIKEY_INVALID;
		goto out;
	}
	if (r != 0) {
		api_apikey_detail(detail, sizeof(detail), r, ak.id);
		goto out;
	}
	if ((r = unitd_keystore_token_key(api->ks, &kms, now, key)) != 0) {
		if (r == KY_ERR_MK_MISMATCH)
			snprintf(detail, sizeof(detail), "token signing key: %s", API_STALE_UNIT);
		goto out;
	}
	memcpy(cl.sub, ak.id, sizeof(cl.sub));
	memcpy(cl.instance, api->instance, sizeof(cl.instance));
	if (strlen(ak.role) >= sizeof(cl.role)) {
		r = KY_ERR_RECORD_TAMPERED;
		goto out;
	}
	memcpy(cl.role, ak.role, strlen(ak.role) + 1);
	cl.iat = now;
	cl.exp = now + api->token_ttl;
	{
		uint8_t jti[16];
		if ((r = ky_random(jti, sizeof(jti))) != 0)
			goto out;
		ky_hex_encode(jti, sizeof(jti), cl.jti);
	}
	r = token_issue(key, &cl, tok, sizeof(tok));
	OPENSSL_cleanse(key, sizeof(key));
	if (r != 0)
		goto out;
	j = json_pack("{s:s, s:s, s:s, s:i, s:I, s:s}", "access_token", tok, "refresh_token",
	              "not_supported", "token_type", "Bearer", "expires_in", (int)api->token_ttl,
	              "expiration", (json_int_t)cl.exp, "scope", "ibm openid");
	OPENSSL_cleanse(tok, sizeof(tok));
	r = j ? 0 : KY_ERR_NOMEM;
out:
	if (held)
		unitd_keystore_leave(api->ks);
	OPENSSL_cleanse(key, sizeof(key));
	api_log_failure(api, "POST", "", API_TOKEN_PATH, "", who, r, detail);
	r = api_audit_plain("POST", API_TOKEN_PATH, who, r, detail, sizeof(detail));
	if (r != 0)
		ret = api_token_error(c, r, detail);
	else
		ret = api_send_json(c, 200, j, NULL, NULL);
	json_decref(j);
	return ret;
}

/* ---- the audit line of each request ---- */

/* Reads key storage only: its audit line is written after the answer is known. */
static bool api_reads_only(const struct api_ctx *x)
{
	const char *a = x->q->action[0] ? x->q->action : api_query((struct api_ctx *)x, "action");
	const char *m = api_routes[x->q->route].method;

	/* A retrieval of the import token counts down its retrievals. */
	if (api_routes[x->q->route].route == ROUTE_IMPORT_TOKEN_GET)
		return false;
	if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0)
		return true;
	return api_routes[x->q->route].route == ROUTE_KEY_ACTION && a != NULL &&
	       (strcmp(a, "wrap") == 0 || strcmp(a, "unwrap") == 0 || strcmp(a, "rewrap") == 0);
}

/* Writes the request's audit line: for phase INTENT only for a request that may change key
 * storage (before it acts), for DONE always, once the answer is r. Returns what to answer:
 * KY_ERR_AUDIT_UNAVAILABLE when the line cannot be written and the request did not act
 * (nothing was changed; the answer it had is withheld); r otherwise. A request that acted
 * keeps its answer: its intent line is in the log. */
static int api_audit(struct api_ctx *x, enum unitd_audit_phase phase, int r)
{
	const struct api_req *q = x->q;
	const char *action = q->action[0] ? q->action : api_query(x, "action");
	unsigned status = r != 0 ? (unsigned)ky_err_http(r) : (x->status ? x->status : 200);
	int a;

	if (phase == UNITD_AUDIT_INTENT && api_reads_only(x))
		return 0;
	a = unitd_audit_api(phase, api_routes[q->route].method, api_routes[q->route].path, action,
	                    x->caller, q->id, status, r);
	if (a == 0)
		return r;
	if (phase == UNITD_AUDIT_DONE && x->acted) {
		unitd_log("error: %s %s was carried out but its audit line could not be written",
		          api_routes[q->route].method, api_routes[q->route].path);
		return r;
	}
	api_detail(x, "the crypto unit cannot write its audit log");
	return a;
}

/* ---- MHD glue ---- */

static enum MHD_Result api_run(struct unitd_api *api, struct MHD_Connection *c, struct api_req *q)
{
	struct api_ctx x;
	enum MHD_Result ret;
	int r;

	if (q->route == -1)
		return api_token(api, c, q);
	memset(&x, 0, sizeof(x));
	x.api = api;
	x.c = c;
	x.q = q;
	x.now = api_now();
	x.prefer = kp_prefer_parse(api_header(&x, "Prefer"));
	if (api->ks != NULL)
		ky_store_failure_clear(unitd_keystore_store(api->ks));
	if ((r = api_authenticate(&x)) == 0 && (r = api_allowed_ip(&x)) == 0 &&
	    (r = api_audit(&x, UNITD_AUDIT_INTENT, 0)) == 0) {
		x.acted = !api_reads_only(&x);
		r = api_dispatch_once(&x);
	}
	if (x.held)
		unitd_keystore_leave(api->ks);
	if (r == KY_ERR_NOT_FOUND && x.detail[0] == '\0' && q->id[0] != '\0')
		api_detail(&x, "no key with id %s", q->id);
	api_log_failure(api, api_routes[q->route].method, API_PREFIX, api_routes[q->route].path,
	                q->id, x.caller, r, x.detail);
	r = api_audit(&x, UNITD_AUDIT_DONE, r);
	if (r != 0)
		ret = api_send_error_as(c, r, x.detail, false);
	else if (x.stored.len > 0 || x.replayed)
		ret = api_send(c, x.status, NULL, &x.stored, NULL,
		               MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Correlation-Id"),
		               x.replayed);
	else
		ret = api_send_json(c, x.status ? x.status : 200, x.reply, x.key_total, x.withheld);
	json_decref(x.reply);
	ky_buf_free(&x.stored);
	return ret;
}

/* A request refused before it reached a handler: audited, then answered. */
static enum MHD_Result api_refuse(struct MHD_Connection *c, const char *method, const char *url,
                                  int err, const char *detail)
{
	char d[128], path[160];

	snprintf(d, sizeof(d), "%s", detail);
	snprintf(path, sizeof(path), "%s", url); /* cut: a path is the client's to choose */
	err = api_audit_plain(method, path, "", err, d, sizeof(d));
	return api_send_error(c, err, d);
}

static enum MHD_Result api_too_large(struct MHD_Connection *c, const char *method, const char *url)
{
	char d[64];

	snprintf(d, sizeof(d), "a request body is at most %d bytes", KP_BODY_MAX);
	return api_refuse(c, method, url, KY_ERR_TOO_LARGE, d);
}

/* The metrics slot of a request: its route's, or its path's under "other" when the route does
 * not take its method. */
static int api_metric_of(const struct unitd_api *api, const struct api_req *q, const char *url,
                         bool known)
{
	struct api_req scratch;

	if (q->route >= 0)
		return api->metric[q->route];
	if (q->route == -1)
		return api->metric_token;
	if (!known)
		return UNITD_METRICS_UNMATCHED;
	if (strcmp(url, API_TOKEN_PATH) == 0)
		return api->metric_token_other;
	for (size_t i = 0; i < API_NROUTES; i++) {
		memset(&scratch, 0, sizeof(scratch));
		if (api_match(api_routes[i].path, url + strlen(API_PREFIX), &scratch))
			return api->metric_other[i];
	}
	return UNITD_METRICS_UNMATCHED;
}

int unitd_api_metric(const struct unitd_api *api, const void *con_cls)
{
	const struct api_req *q = con_cls;

	(void)api;
	return q != NULL ? q->metric : UNITD_METRICS_UNMATCHED;
}

enum MHD_Result unitd_api_handle(struct unitd_api *api, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
	struct api_req *q = *con_cls;

	if (q == NULL) {
		const char *clen;
		bool known;

		if ((q = calloc(1, sizeof(*q))) == NULL)
			return MHD_NO;
		*con_cls = q;
		snprintf(q->method, sizeof(q->method), "%s", method);
		if ((q->url = strdup(url)) == NULL)
			return MHD_NO;
		q->route = api_route_of(method, url, q, &known);
		q->metric = api_metric_of(api, q, url, known);
		if (q->route == -2) {
			q->answered = true;
			if (known)
				return api_refuse(c, method, url, KY_ERR_METHOD_NOT_ALLOWED, "");
			return api_refuse(c, method, url, KY_ERR_NOT_FOUND, "no such endpoint");
		}
		clen =
		    MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (clen != NULL && (strlen(clen) > 9 || strtoul(clen, NULL, 10) > KP_BODY_MAX)) {
			q->too_large = true;
			q->answered = true;
			return api_too_large(c, method, url);
		}
		/* Answered on a later call even without a body: a reply queued while MHD is still
		 * reading the request makes it close the connection (no keep-alive). */
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		if (q->too_large || q->answered) {
			q->drained += n;
			return q->drained <= 16 * (size_t)KP_BODY_MAX ? MHD_YES : MHD_NO;
		}
		if (n > KP_BODY_MAX - q->body.len) {
			q->too_large = true;
			ky_buf_free(&q->body);
			q->answered = api_too_large(c, method, url) == MHD_YES;
			return MHD_YES;
		}
		return ky_buf_append(&q->body, upload_data, n) == 0 ? MHD_YES : MHD_NO;
	}
	if (q->answered)
		return MHD_YES;
	q->answered = true;
	if (q->too_large)
		return api_too_large(c, method, url);
	return api_run(api, c, q);
}

void unitd_api_completed(void *con_cls)
{
	struct api_req *q = con_cls;

	if (q == NULL)
		return;
	ky_buf_free(&q->body);
	free(q->url);
	free(q);
}

int unitd_api_new(const struct unitd_config *cfg, struct unitd_keystore *ks, struct unitd_api **out)
{
	struct unitd_api *api = calloc(1, sizeof(*api));

	*out = NULL;
	if (api == NULL)
		return KY_ERR_NOMEM;
	api->ks = ks;
	snprintf(api->instance, sizeof(api->instance), "%s", cfg->instance);
	api->token_ttl = cfg->token_ttl ? cfg->token_ttl : UNITD_TOKEN_TTL_DEFAULT;
	for (size_t i = 0; i < API_NROUTES; i++) {
		api->metric[i] =
		    unitd_metrics_route(api_routes[i].method, API_PREFIX, api_routes[i].path);
		api->metric_other[i] = unitd_metrics_route("other", API_PREFIX, api_routes[i].path);
	}
	api->metric_token = unitd_metrics_route("POST", "", API_TOKEN_PATH);
	api->metric_token_other = unitd_metrics_route("other", "", API_TOKEN_PATH);
	*out = api;
	return 0;
}

void unitd_api_free(struct unitd_api *api)
{
	free(api);
}
