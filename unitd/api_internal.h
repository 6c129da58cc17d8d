/* What the files of the key API share (api.c, api_token.c): the API's state, one request and
 * the context a handler works in, and the helpers of api.c they call. Private to those files;
 * what the rest of the daemon calls is in unitd.h.
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
/* A record the instance keeps under its master key does not open here. */
#define API_STALE_UNIT                                                                    \
	"this unit does not hold the instance's master key (left behind by a master key " \
	"rotation?): load, commit and set it on this unit"
/* Rows of the route table (api_routes in api.c; a static assertion there checks the count). */
#define API_NROUTES 25

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

/* ---- api_token.c: the token service ---- */

/* The caller of an /api/v2 request: its bearer token verified, its API key looked up (x->caller,
 * x->role); takes the keystore hold (x->held). */
int api_authenticate(struct api_ctx *x) KY_WUR;
/* POST /identity/token: an API key for an access token. */
enum MHD_Result api_token(struct unitd_api *api, struct MHD_Connection *c, struct api_req *q);

#endif
