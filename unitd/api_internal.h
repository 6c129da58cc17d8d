/* What the files of the key API share (api.c, api_token.c, api_keys.c): the API's state, the
 * role, route and action tables' types, one request and the context a handler works in, and
 * the functions each file gives the others. Private to those files;
 * what the rest of the daemon calls is in api_http.h.
 */
#ifndef KYOK_UNITD_API_INTERNAL_H
#define KYOK_UNITD_API_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>

#include "kyok/common.h"
#include "kyok/kms.h"
#include "unitd/api.h"

#define API_PREFIX     "/api/v2/"
#define API_TOKEN_PATH "/identity/token"
/* A key listing that left out records failing their own checks says how many. */
#define API_HDR_WITHHELD "Kyok-Keys-Withheld"
/* A record the instance keeps under its master key does not open here. */
#define API_STALE_UNIT                                                                    \
	"this unit does not hold the instance's master key (left behind by a master key " \
	"rotation?): load, commit and set it on this unit"
/* The role a request needs (the role table, api_roles in api.c, says which roles have it). */
enum api_perm {
	PERM_KEYS_READ,  /* list keys, key total, key metadata, versions, wrap, unwrap, rewrap */
	PERM_PAYLOAD,    /* retrieve a key with its payload (standard keys) */
	PERM_KEYS_WRITE, /* create, import, rotate; schedule and cancel deletion */
	PERM_KEYS_ADMIN, /* enable, disable, delete, restore; key and instance policies */
	PERM_PURGE,      /* purge a deleted key */
};

/* ---- the route table (api_routes in api.c) ---- */

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

/* path: segments after /api/v2/, "{id}" matches a key id. query: the query parameters the
 * route takes (Key Protect's names, space-separated); any other is refused by name. */
struct api_route_row {
	const char *method;
	const char *path;
	enum api_route route;
	enum api_perm perm; /* actions: from api_actions instead */
	bool changes;       /* changes key storage: kept by request id (actions: api_actions) */
	const char *query;
};
/* Rows of the route table (a static assertion in api.c checks the count). */
#define API_NROUTES 25
extern const struct api_route_row api_routes[API_NROUTES];

/* The actions of POST /keys/{id}/actions/{action} and POST /keys/{id}?action= (api_actions in
 * api.c). */
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

struct api_action_row {
	const char *name;
	enum api_action action;
	enum api_perm perm;
	bool changes; /* false: wrap, unwrap, rewrap change nothing stored */
};
#define API_NACTIONS 10
extern const struct api_action_row api_actions[API_NACTIONS];

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
	/* the route serves its key from the unit's key cache (GET, wrap, unwrap, rewrap): the
	 * X-Kms-Key-Ring check takes the key from there too */
	bool key_cached;
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

/* ---- api.c ---- */

int64_t api_now(void);
/* Sets x->detail, the sentence the error reply carries. */
void api_detail(struct api_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *api_header(struct api_ctx *x, const char *k);
/* The reply j (NULL: no body) with status; key_total and withheld: headers, NULL for none. */
enum MHD_Result api_send_json(struct MHD_Connection *c, unsigned status, const json_t *j,
                              const char *key_total, const char *withheld);
/* One log line for a request that failed inside the unit or in key storage (refusals are not
 * logged), at most API_FAILURE_LOG_RATE a second. */
void api_log_failure(struct unitd_api *api, const char *method, const char *prefix,
                     const char *path, const char *id, const char *caller, int r,
                     const char *detail);
/* The audit line of a request answered outside a route handler (token, refusals before
 * routing): err, or KY_ERR_AUDIT_UNAVAILABLE (with detail) when it cannot be written. */
int api_audit_plain(const char *method, const char *path, const char *apikey, int err, char *detail,
                    size_t detaillen) KY_WUR;
/* The role bits of an API key's role list; 0 when it names a role the role table lacks. */
unsigned api_role_bit(const char *role);
bool api_allowed(unsigned role, enum api_perm perm);
/* 0 when the caller's role allows perm, else KY_ERR_FORBIDDEN naming the roles that do. */
int api_check(struct api_ctx *x, enum api_perm perm) KY_WUR;
/* A query value, NULL when absent. */
const char *api_query(struct api_ctx *x, const char *k);

/* ---- api_token.c: the token service ---- */

/* The caller of an /api/v2 request: its bearer token verified, its API key looked up (x->caller,
 * x->role); takes the keystore hold (x->held). */
int api_authenticate(struct api_ctx *x) KY_WUR;
/* POST /identity/token: an API key for an access token. */
enum MHD_Result api_token(struct unitd_api *api, struct MHD_Connection *c, struct api_req *q);

/* ---- api_keys.c: the route handlers ----
 * Each answers 0 with x->status and x->reply set, or an error code with x->detail. */

/* The key ring named by header X-Kms-Key-Ring, NULL when none. */
const char *api_ring_header(struct api_ctx *x);
/* The instance's allowedIP policy applied to the caller's address. */
int api_allowed_ip(struct api_ctx *x) KY_WUR;
/* A request that takes no body member (what names it in the refusal). */
int api_no_body(struct api_ctx *x, const char *what) KY_WUR;
/* The action a POST names (path or query "action"), as its index in api_actions. */
int api_action_by_name(struct api_ctx *x, size_t *idx) KY_WUR;
/* GET /keys, or HEAD /keys (head: the Key-Total header alone). */
int api_keys_list(struct api_ctx *x, bool head) KY_WUR;
int api_key_create(struct api_ctx *x) KY_WUR;
int api_key_get(struct api_ctx *x, bool metadata) KY_WUR;
int api_key_versions(struct api_ctx *x) KY_WUR;
/* A state change through lib/kms (delete, purge, restore, ...); 204, or the key with
 * Prefer: return=representation (status_repr; always_body: the key whatever Prefer says). */
int api_key_act(struct api_ctx *x, struct ky_key_act *a, unsigned status_repr,
                bool always_body) KY_WUR;
/* POST /keys/{id}/actions/{action} and POST /keys/{id}?action=. */
int api_key_action(struct api_ctx *x) KY_WUR;
int api_key_policies(struct api_ctx *x, bool put) KY_WUR;
int api_instance_policies(struct api_ctx *x, bool put) KY_WUR;
int api_key_alias(struct api_ctx *x, bool add) KY_WUR;
int api_key_patch(struct api_ctx *x) KY_WUR;
int api_rings_list(struct api_ctx *x) KY_WUR;
int api_ring_change(struct api_ctx *x, bool create) KY_WUR;
int api_registrations(struct api_ctx *x) KY_WUR;

#endif
