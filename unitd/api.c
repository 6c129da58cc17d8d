/* The key-management API of a crypto unit, compatible with Key Protect v2, and its token
 * service (api_token.c). Handlers are thin: they parse (api_json.c), check the caller against
 * the role table below, and let lib/kms act.
 *
 * Size: the life cycle of a request in one file, on purpose: the route, action and role
 * tables, the matching, the caller's role, the request id and the audit line are the steps
 * every request takes, in this order, and a route is checked against its role and its audit
 * line in one place. The handlers (api_keys.c), the token service (api_token.c) and the
 * parsers (api_json.c, api_query.c, api_netpolicy.c) are apart.
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
#include "unitd/api_http.h"
#include "unitd/api_internal.h"
#include "unitd/audit.h"
#include "unitd/config.h"
#include "unitd/keystore.h"
#include "unitd/log.h"
#include "unitd/metrics.h"
#include "unitd/nice.h"

#define API_CT_JSON "application/json"
/* Request ids: the client's header, how long a reply is kept, the header on a replay. */
#define API_HDR_REQUEST_ID "Idempotency-Key"
#define API_HDR_REPLAYED   "Kyok-Replayed"
#define API_REQUEST_TTL    (24 * 3600)

/* ---- the role table: who may do what (hpcs-semantics.md, "Roles on the key API") ---- */

enum api_role {
	ROLE_READER = 1u << 0,
	ROLE_READER_PLUS = 1u << 1,
	ROLE_WRITER = 1u << 2,
	ROLE_MANAGER = 1u << 3,
	ROLE_KEY_PURGE = 1u << 4,
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
unsigned api_role_bit(const char *role)
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

bool api_allowed(unsigned role, enum api_perm perm)
{
	for (size_t i = 0; i < sizeof(api_roles) / sizeof(api_roles[0]); i++)
		if (api_roles[i].perm == perm)
			return (api_roles[i].roles & role) != 0;
	return false;
}

/* ---- routes ---- */

/* The query parameters of a registration listing. */
#define API_REG_QUERY "limit offset urlEncodedResourceCRNQuery preventKeyDeletion totalCount"

/* path: segments after /api/v2/, "{id}" matches a key id. query: the query parameters the
 * route takes (Key Protect's names, space-separated); any other is refused by name. */
const struct api_route_row api_routes[] = {
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
_Static_assert(sizeof(api_routes) / sizeof(api_routes[0]) == API_NROUTES,
               "API_NROUTES (api_internal.h) is the number of rows of api_routes");

const struct api_action_row api_actions[] = {
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
_Static_assert(sizeof(api_actions) / sizeof(api_actions[0]) == API_NACTIONS,
               "API_NACTIONS (api_internal.h) is the number of rows of api_actions");

int64_t api_now(void)
{
	return (int64_t)time(NULL);
}

void api_detail(struct api_ctx *x, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(x->detail, sizeof(x->detail), fmt, ap);
	va_end(ap);
}

const char *api_query(struct api_ctx *x, const char *k)
{
	return MHD_lookup_connection_value(x->c, MHD_GET_ARGUMENT_KIND, k);
}

const char *api_header(struct api_ctx *x, const char *k)
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

enum MHD_Result api_send_json(struct MHD_Connection *c, unsigned status, const json_t *j,
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

void api_log_failure(struct unitd_api *api, const char *method, const char *prefix,
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

/* ---- the caller's role ---- */

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

int api_check(struct api_ctx *x, enum api_perm perm)
{
	char need[64], have[80];

	if (api_allowed(x->role, perm))
		return 0;
	api_roles_allowing(perm, need, sizeof(need));
	api_role_names_of(x->role, have, sizeof(have));
	api_detail(x, "API key '%s' has %s; this needs the role %s", x->caller, have, need);
	return KY_ERR_FORBIDDEN;
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
int api_audit_plain(const char *method, const char *path, const char *apikey, int err, char *detail,
                    size_t detaillen)
{
	if (unitd_audit_api(UNITD_AUDIT_DONE, method, path, "", apikey, "",
	                    (unsigned)ky_err_http(err), err) == 0)
		return err;
	snprintf(detail, detaillen, "the crypto unit cannot write its audit log");
	return KY_ERR_AUDIT_UNAVAILABLE;
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
		int prev = UNITD_NICE_NONE;

		x.acted = !api_reads_only(&x);
		/* A creation's handler only: the audit lines and the reply, which a reader may wait
		 * for, are written at the thread's own priority (nice.h says why creations only). */
		if (api_routes[q->route].route == ROUTE_KEY_CREATE)
			prev = unitd_nice_lower();
		r = api_dispatch_once(&x);
		unitd_nice_restore(prev);
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
