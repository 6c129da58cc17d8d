/* The unit's HTTP endpoints (include/kyok/wire.h).
 *
 * Size: the admin endpoints and the server around them in one file: every endpoint that
 * reads or changes the state does so under the one mutex below, and the state change (apply
 * to a copy, seal, write, swap) is read with the replies it signs and the readiness it
 * reports. The key API (api.c), the header timeout (header_timer.c) and the long work
 * (storage_ops.c) are apart.
 *
 * One mutex serialises commands and state reads. A command runs on a private copy of the
 * state; the copy is sealed and written, and only then replaces the live state. Every reply
 * is signed by the unit identity key over method, path, the request's nonce and the body.
 *
 * The same listening socket serves the key API (/api/v2/..., /identity/token: api.c), which
 * never takes that mutex: it sees the master key registers through the keystore, updated
 * after every state swap. MHD runs an epoll thread pool; long work (re-encipherment) has a
 * thread of its own (storage_ops.c).
 *
 * What one client can cost is bounded (unit.conf): connections in total and per client
 * address (MHD closes the extra ones as soon as they are accepted), seconds a connection may
 * stay silent (idle_timeout), seconds its request headers may take from the accept or the
 * previous request (header_timeout, header_timer.c) and seconds a request body may take
 * after its headers (body_timeout); a command body is at most KY_MAX_COMMAND_BYTES, and its
 * signer, certificate and digest counts are checked on the decoded structure before any
 * signature (lib/crypto/cms.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/wire.h"
#include "unitd/api_http.h"
#include "unitd/audit.h"
#include "unitd/config.h"
#include "unitd/header_timer.h"
#include "unitd/imprint.h"
#include "unitd/keystore.h"
#include "unitd/log.h"
#include "unitd/metrics.h"
#include "unitd/portholder.h"
#include "unitd/scheduler.h"
#include "unitd/seal.h"
#include "unitd/server.h"
#include "unitd/storage_ops.h"

static void server_mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* MHD's own messages, at most SERVER_MHD_LOG_RATE a second: a client opening connections
 * over its limit must not fill the disk with one line per refusal. */
#define SERVER_MHD_LOG_RATE 20

static void server_mhd_log(void *cls, const char *fmt, va_list ap)
{
	static struct unitd_log_rate rate = UNITD_LOG_RATE_INIT;
	char msg[512];
	unsigned report;
	bool show = unitd_log_rate_take(&rate, SERVER_MHD_LOG_RATE, &report);

	(void)cls;
	if (report > 0)
		unitd_log("http: %u more messages not logged (over %d a second)", report,
		          SERVER_MHD_LOG_RATE);
	if (!show)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	unitd_log("http: %s", msg);
}

/* ---- server ---- */

struct unitd_server {
	struct MHD_Daemon *mhd;
	pthread_mutex_t lock; /* guards dom and every state write */
	struct ky_domain *dom;
	struct unitd_datadir *dd;
	struct unitd_keystore *ks;     /* NULL without key storage */
	struct unitd_storage *storage; /* storage ops and re-encipherment */
	struct unitd_api *api;
	struct unitd_policy_pass *pass;     /* rotation policies, purge after 90 days */
	struct unitd_header_timer *headers; /* header_timeout: freed after MHD stops */
	struct unitd_imprint imprint;       /* who may command the unit in imprint mode */
	struct ky_buf tls_cert;             /* PEM, kept while MHD runs */
	struct ky_buf tls_key;              /* PEM, cleansed on free */
	uint32_t body_timeout;              /* seconds from a request's headers to its last byte */
	uint16_t port;
	char addr[INET6_ADDRSTRLEN + 3];
};

enum server_route {
	ROUTE_HEALTH,
	ROUTE_STATE,
	ROUTE_IDENTITY,
	ROUTE_IMPORTER,
	ROUTE_COMMAND,
	ROUTE_APIKEYS,
	ROUTE_LB_HEALTH,
	ROUTE_READY,
	ROUTE_METRICS,
};

static const struct {
	const char *path;
	const char *method;
	enum server_route route;
} server_routes[] = {
    {"/v1/health", "GET", ROUTE_HEALTH},
    {"/v1/admin/state", "GET", ROUTE_STATE},
    {"/v1/admin/identity", "GET", ROUTE_IDENTITY},
    {"/v1/admin/importer", "GET", ROUTE_IMPORTER},
    {"/v1/admin/command", "POST", ROUTE_COMMAND},
    {"/v1/admin/apikeys", "GET", ROUTE_APIKEYS},
    {"/health", "GET", ROUTE_LB_HEALTH},
    {"/ready", "GET", ROUTE_READY},
    {"/metrics", "GET", ROUTE_METRICS},
};

#define SERVER_NROUTES    (sizeof(server_routes) / sizeof(server_routes[0]))
#define SERVER_DRAIN_MAX  (16 * (size_t)KY_MAX_COMMAND_BYTES)
#define SERVER_CT_JSON    "application/json"
#define SERVER_CT_PEM     "application/x-pem-file"
#define SERVER_CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

/* The metrics slot of each route, and of the route's path asked with another method. */
static int server_metric[SERVER_NROUTES], server_metric_other[SERVER_NROUTES];

/* One request in progress. */
struct server_req {
	bool api; /* a key API request: api_req is its state */
	void *api_req;
	bool has_nonce;
	char nonce[KY_NONCE_HEX + 1];
	bool too_large;
	bool answered; /* a reply was queued before the body ended */
	bool get;      /* a GET endpoint: answered once the request is complete */
	enum server_route route;
	int metric;              /* metrics slot (unitd_metrics_route) */
	bool counted;            /* its reply is counted */
	size_t drained;          /* bytes thrown away after too_large */
	struct timespec started; /* headers complete (CLOCK_MONOTONIC) */
	struct ky_buf body;
};

/* True when the body of req has taken longer than the unit allows. */
static bool server_body_late(const struct unitd_server *srv, const struct server_req *req)
{
	struct timespec now;

	if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
		return false;
	return now.tv_sec - req->started.tv_sec > (time_t)srv->body_timeout;
}

static bool server_nonce_ok(const char *s)
{
	if (strlen(s) != KY_NONCE_HEX)
		return false;
	for (const char *c = s; *c; c++)
		if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
			return false;
	return true;
}

static int server_json_cb(const char *buf, size_t size, void *data)
{
	return ky_buf_append(data, buf, size) == 0 ? 0 : -1;
}

/* Compact JSON and a newline. */
static int server_json_body(const json_t *j, struct ky_buf *out)
{
	if (j == NULL)
		return KY_ERR_NOMEM;
	if (json_dump_callback(j, server_json_cb, out, JSON_COMPACT) != 0)
		return KY_ERR_NOMEM;
	return ky_buf_append(out, "\n", 1);
}

/* The identity key of the live state, with a reference of its own: replies are signed
 * outside the lock, and a command may replace the state meanwhile. */
static EVP_PKEY *server_identity_locked(struct unitd_server *srv)
{
	EVP_PKEY *k = srv->dom->identity_key;

	if (k == NULL || EVP_PKEY_up_ref(k) != 1)
		return NULL;
	return k;
}

static enum MHD_Result server_send(struct MHD_Connection *c, EVP_PKEY *identity, const char *method,
                                   const char *url, const char *nonce, unsigned status,
                                   const char *ctype, const struct ky_buf *body, const char *allow)
{
	struct MHD_Response *resp = NULL;
	char *sig = NULL;
	enum MHD_Result ret = MHD_NO;
	int r;

	r = identity ? ky_reply_sign(identity, method, url, nonce, body->data, body->len, &sig)
	             : KY_ERR_INTERNAL;
	if (r != 0) {
		/* An unsigned reply would be refused by the client anyway; say why here. */
		unitd_log("error: cannot sign reply to %.16s %.128s: %s", method, url,
		          ky_err_message(r));
		sig = NULL;
	}
	resp = MHD_create_response_from_buffer(body->len, body->data, MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		goto out;
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES ||
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
	    (sig != NULL && MHD_add_response_header(resp, KY_HDR_SIGNATURE, sig) != MHD_YES) ||
	    (allow != NULL &&
	     MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES))
		goto out;
	ret = unitd_metrics_queue(c, status, resp);
out:
	if (resp != NULL)
		MHD_destroy_response(resp);
	free(sig);
	return ret;
}

static enum MHD_Result server_send_error(struct MHD_Connection *c, EVP_PKEY *identity,
                                         const char *method, const char *url, const char *nonce,
                                         int err, const char *detail, const char *allow)
{
	struct ky_buf body = {0};
	json_t *j;
	enum MHD_Result ret;

	j = json_pack("{s:b, s:{s:s, s:s, s:s}}", "ok", 0, "error", "code", ky_err_slug(err),
	              "message", ky_err_message(err), "detail", detail ? detail : "");
	if (server_json_body(j, &body) != 0) {
		ky_buf_free(&body);
		if (ky_buf_append_str(&body, "{\"ok\":false}\n") != 0)
			ky_buf_free(&body);
	}
	json_decref(j);
	ret = server_send(c, identity, method, url, nonce, (unsigned)ky_err_http(err),
	                  SERVER_CT_JSON, &body, allow);
	ky_buf_free(&body);
	return ret;
}

/* Same, fetching the identity key itself. */
static enum MHD_Result server_fail(struct unitd_server *srv, struct MHD_Connection *c,
                                   const char *method, const char *url, const char *nonce, int err,
                                   const char *detail, const char *allow)
{
	EVP_PKEY *id;
	enum MHD_Result ret;

	pthread_mutex_lock(&srv->lock);
	id = server_identity_locked(srv);
	pthread_mutex_unlock(&srv->lock);
	ret = server_send_error(c, id, method, url, nonce, err, detail, allow);
	EVP_PKEY_free(id);
	return ret;
}

/* Adds "storage" (key storage as seen under d's registers) to a public state. */
static int server_add_storage(struct unitd_server *srv, json_t *state, bool has_cur,
                              const uint8_t cur_vp[KY_VP_LEN], bool has_new,
                              const uint8_t new_vp[KY_VP_LEN])
{
	json_t *s =
	    unitd_storage_json(srv->storage, has_cur ? cur_vp : NULL, has_new ? new_vp : NULL);

	if (state == NULL || s == NULL || json_object_set_new(state, "storage", s) != 0)
		return KY_ERR_NOMEM;
	return 0;
}

/* ---- readiness ---- */

static int server_reason(json_t *reasons, int code, const char *detail)
{
	json_t *o = json_pack("{s:s, s:s}", "code", ky_err_slug(code), "message", detail);

	return json_array_append_new(reasons, o) == 0 ? 0 : KY_ERR_NOMEM;
}

/* Why the unit cannot serve keys now, a JSON array of {code, message} ([] when it can; NULL
 * out of memory): from the state it keeps, and key storage as a key API request would find
 * it (unitd_metrics_storage_check: checked at most once a second). Nothing per key. */
static json_t *server_readiness(struct unitd_server *srv)
{
	json_t *reasons = json_array();
	bool imprint, cur;
	int r = 0, s;

	if (reasons == NULL)
		return NULL;
	pthread_mutex_lock(&srv->lock);
	imprint = srv->dom->sig_threshold == 0;
	cur = srv->dom->cur_state == KY_CUR_VALID;
	pthread_mutex_unlock(&srv->lock);
	if (imprint)
		r = server_reason(reasons, KY_ERR_IMPRINT_MODE,
		                  "the unit is in imprint mode: install its administrators and set "
		                  "its signature thresholds (kyok tke auto-init)");
	if (r == 0 && srv->ks == NULL)
		r = server_reason(reasons, KY_ERR_NO_STORE,
		                  "no key storage is configured: set 'store' in its unit.conf");
	else if (r == 0 && !cur)
		r = server_reason(reasons, KY_ERR_NO_MASTER_KEY,
		                  "no current master key is loaded: load, commit and set one "
		                  "(kyok tke auto-init, or cryptounit-mk-load, -mk-commit, "
		                  "-mk-setimm)");
	else if (r == 0 && (s = unitd_metrics_storage_check(srv->ks)) != 0)
		r = server_reason(reasons, s, ky_err_message(s));
	if (r != 0) {
		json_decref(reasons);
		return NULL;
	}
	return reasons;
}

/* Adds "ready": {"ready": bool, "reasons": [...]} to a public state. */
static int server_add_ready(struct unitd_server *srv, json_t *state)
{
	json_t *reasons = server_readiness(srv), *o;

	if (reasons == NULL)
		return KY_ERR_NOMEM;
	o = json_pack("{s:b, s:o}", "ready", json_array_size(reasons) == 0, "reasons", reasons);
	if (o == NULL || json_object_set_new(state, "ready", o) != 0)
		return KY_ERR_NOMEM;
	return 0;
}

/* GET endpoints: a snapshot of the live state under the lock. */
static enum MHD_Result server_get(struct unitd_server *srv, struct MHD_Connection *c,
                                  enum server_route route, const char *url, const char *nonce)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf body = {0};
	const char *ctype = SERVER_CT_JSON;
	json_t *j = NULL;
	char *pem = NULL;
	EVP_PKEY *id = NULL;
	enum MHD_Result ret;
	uint8_t cur_vp[KY_VP_LEN], new_vp[KY_VP_LEN];
	bool has_cur = false, has_new = false;

	pthread_mutex_lock(&srv->lock);
	id = server_identity_locked(srv);
	switch (route) {
	case ROUTE_HEALTH:
		j = json_pack("{s:s}", "status", "ok");
		r = j ? 0 : KY_ERR_NOMEM;
		break;
	case ROUTE_STATE:
		j = ky_domain_public_json(srv->dom);
		r = j ? 0 : KY_ERR_NOMEM;
		has_cur = srv->dom->cur_state == KY_CUR_VALID;
		has_new = srv->dom->new_state != KY_NEW_EMPTY;
		memcpy(cur_vp, srv->dom->cur_vp, KY_VP_LEN);
		memcpy(new_vp, srv->dom->new_vp, KY_VP_LEN);
		break;
	case ROUTE_APIKEYS:
		r = 0; /* read from the store below, outside the lock */
		break;
	case ROUTE_IDENTITY:
		r = ky_cert_to_pem(srv->dom->identity_cert, &pem);
		ctype = SERVER_CT_PEM;
		break;
	case ROUTE_IMPORTER:
		r = ky_cert_to_pem(srv->dom->importer_cert, &pem);
		ctype = SERVER_CT_PEM;
		break;
	case ROUTE_COMMAND:
	case ROUTE_LB_HEALTH:
	case ROUTE_READY:
	case ROUTE_METRICS:
		r = KY_ERR_INTERNAL;
		break;
	}
	pthread_mutex_unlock(&srv->lock);
	/* Key storage is read outside the lock: commands go on meanwhile. */
	if (r == 0 && route == ROUTE_STATE)
		r = server_add_storage(srv, j, has_cur, cur_vp, has_new, new_vp);
	if (r == 0 && route == ROUTE_STATE)
		r = server_add_ready(srv, j);
	if (r == 0 && route == ROUTE_APIKEYS)
		r = unitd_storage_apikeys_json(srv->storage, &j);
	if (r == 0)
		r = j ? server_json_body(j, &body) : ky_buf_append_str(&body, pem);
	if (r != 0)
		ret = server_send_error(c, id, "GET", url, nonce, r, "", NULL);
	else
		ret = server_send(c, id, "GET", url, nonce, MHD_HTTP_OK, ctype, &body, NULL);
	json_decref(j);
	free(pem);
	ky_buf_free(&body);
	EVP_PKEY_free(id);
	return ret;
}

/* An unsigned reply, for probes and scrapers. */
static enum MHD_Result server_send_plain(struct MHD_Connection *c, unsigned status,
                                         const char *ctype, const void *body, size_t len)
{
	struct MHD_Response *resp;
	enum MHD_Result ret = MHD_NO;

	resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) == MHD_YES &&
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") == MHD_YES)
		ret = unitd_metrics_queue(c, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* GET /health, for load balancers (liveness): unsigned, no lock, no state. */
static enum MHD_Result server_lb_health(struct MHD_Connection *c)
{
	static const char body[] = "{\"status\":\"ok\"}\n";

	return server_send_plain(c, MHD_HTTP_OK, SERVER_CT_JSON, body, sizeof(body) - 1);
}

/* GET /ready (readiness): 200 when the unit can serve keys, else 503 naming each reason.
 * Unsigned like /health: a probe reads the status. */
static enum MHD_Result server_ready(struct unitd_server *srv, struct MHD_Connection *c)
{
	static const char oom[] = "{\"status\":\"not-ready\",\"reasons\":[]}\n";
	json_t *reasons = server_readiness(srv), *j = NULL;
	struct ky_buf body = {0};
	unsigned status = MHD_HTTP_SERVICE_UNAVAILABLE;
	enum MHD_Result ret;

	if (reasons != NULL) {
		bool ready = json_array_size(reasons) == 0;

		status = ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
		j = json_pack("{s:s, s:o}", "status", ready ? "ready" : "not-ready", "reasons",
		              reasons);
	}
	if (j == NULL || server_json_body(j, &body) != 0)
		ret = server_send_plain(c, MHD_HTTP_INTERNAL_SERVER_ERROR, SERVER_CT_JSON, oom,
		                        sizeof(oom) - 1);
	else
		ret = server_send_plain(c, status, SERVER_CT_JSON, body.data, body.len);
	json_decref(j);
	ky_buf_free(&body);
	return ret;
}

/* GET /metrics: the Prometheus text exposition (metrics.c). Unsigned; nothing per key. */
static enum MHD_Result server_metrics(struct unitd_server *srv, struct MHD_Connection *c)
{
	static const char fail[] = "# the unit cannot list its metrics now\n";
	struct unitd_metrics_view v;
	json_t *reasons = server_readiness(srv);
	struct ky_buf body = {0};
	enum MHD_Result ret;
	int r;

	memset(&v, 0, sizeof(v));
	pthread_mutex_lock(&srv->lock);
	v.imprint = srv->dom->sig_threshold == 0;
	v.current = srv->dom->cur_state == KY_CUR_VALID;
	v.new_loaded = srv->dom->new_state != KY_NEW_EMPTY;
	v.new_committed = srv->dom->new_state == KY_NEW_COMMITTED;
	pthread_mutex_unlock(&srv->lock);
	v.ready = reasons != NULL && json_array_size(reasons) == 0;
	if (srv->ks != NULL) {
		v.store = unitd_keystore_store(srv->ks);
		unitd_storage_progress(srv->storage, &v.reenc_running, &v.reenc_done,
		                       &v.reenc_total);
	}
	r = reasons != NULL ? unitd_metrics_render(&v, &body) : KY_ERR_NOMEM;
	if (r != 0)
		ret = server_send_plain(c, MHD_HTTP_INTERNAL_SERVER_ERROR, SERVER_CT_METRICS, fail,
		                        sizeof(fail) - 1);
	else
		ret = server_send_plain(c, MHD_HTTP_OK, SERVER_CT_METRICS, body.data, body.len);
	json_decref(reasons);
	ky_buf_free(&body);
	return ret;
}

/* What the log says about a command: its op and counter when it parsed, else "-". */
static void server_command_label(const struct ky_command_label *label, char *op, size_t oplen,
                                 char *counter, size_t counterlen)
{
	snprintf(op, oplen, "-");
	snprintf(counter, counterlen, "-");
	if (!label->parsed)
		return;
	snprintf(op, oplen, "%s", ky_op_name(label->op));
	snprintf(counter, counterlen, "%llu", (unsigned long long)label->counter);
}

/* A zeroize replaces the seal key; the storage mark, sealed under it, follows. */
static int server_rekey(struct unitd_server *srv, const struct ky_domain *d)
{
	return srv->ks != NULL ? unitd_keystore_state_rekey(srv->ks, srv->dd, d)
	                       : unitd_state_rekey(srv->dd, d);
}

/* Verifies a command against a snapshot of the state, outside the lock: nothing that is not
 * authenticated runs under it. */
/* Verifies a command against a snapshot of the state, without the lock: the imprint claim
 * first (in imprint mode only the credential's holder gets further), then the signed
 * command. Apply re-checks under the lock that the state is still the one verified. */
static int server_command_verify(struct unitd_server *srv, const char *claim,
                                 const struct ky_buf *cms, struct ky_verified **v,
                                 struct ky_command_label *label, char *detail, size_t detaillen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_domain *snap = NULL;

	memset(label, 0, sizeof(*label));
	pthread_mutex_lock(&srv->lock);
	r = ky_domain_dup(srv->dom, &snap);
	pthread_mutex_unlock(&srv->lock);
	if (r != 0) {
		snprintf(detail, detaillen, "cannot copy the unit state");
		goto out;
	}
	if ((r = unitd_imprint_check(&srv->imprint, snap, claim, cms->data, cms->len, detail,
	                             detaillen)) != 0)
		goto out;
	if ((r = ky_ceremony_verify(snap, cms->data, cms->len, v, label, detail, detaillen)) != 0)
		goto out;
	r = 0;
out:
	ky_domain_free(snap);
	return r;
}

/* One log line per master key transfer a command made (mk-export, mk-import). */
static void server_log_transfers(const json_t *result)
{
	size_t i;
	json_t *t;

	json_array_foreach(json_object_get(result, "transfers"), i, t)
	{
		const char *f[7];
		static const char *const keys[] = {
		    "op", "from", "from_identity", "to", "to_identity", "vp", NULL};
		for (size_t k = 0; keys[k] != NULL; k++) {
			f[k] = json_string_value(json_object_get(t, keys[k]));
			if (f[k] == NULL)
				f[k] = "-";
		}
		unitd_log("master key transfer: %s vp=%.16s from unit %s (identity sha256 %s) to "
		          "unit %s (identity sha256 %s)",
		          f[0], f[5], f[1], f[2], f[3], f[4]);
	}
}

/* The client's address, numeric ("-" when MHD cannot say). */
static void server_peer(struct MHD_Connection *c, char *out, size_t outlen)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

	snprintf(out, outlen, "-");
	if (ci != NULL && ci->client_addr != NULL &&
	    getnameinfo(ci->client_addr,
	                ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	                                                       : sizeof(struct sockaddr_in),
	                out, (socklen_t)outlen, NULL, 0, NI_NUMERICHOST) != 0)
		snprintf(out, outlen, "-");
}

/* Runs one command: verified first, then applied to a copy under the lock, sealed and
 * written before it replaces the live state. */
static enum MHD_Result server_command(struct unitd_server *srv, struct MHD_Connection *c,
                                      const char *url, const char *nonce, const struct ky_buf *cms)
{
	int r = KY_ERR_INTERNAL;
	struct ky_domain *copy = NULL, *old = NULL;
	struct ky_verified *v = NULL;
	struct ky_command_label label;
	json_t *result = NULL, *state = NULL, *reply = NULL;
	char detail[512] = "", op[32], counter[24], from[INET6_ADDRSTRLEN] = "-";
	struct ky_buf body = {0};
	EVP_PKEY *id = NULL;
	enum MHD_Result ret;
	bool locked = false;

	server_peer(c, from, sizeof(from));

	if ((r = server_command_verify(
	         srv, MHD_lookup_connection_value(c, MHD_HEADER_KIND, KY_HDR_IMPRINT_CLAIM), cms,
	         &v, &label, detail, sizeof(detail))) != 0)
		goto done;

	pthread_mutex_lock(&srv->lock);
	locked = true;
	if ((r = ky_domain_dup(srv->dom, &copy)) != 0) {
		snprintf(detail, sizeof(detail), "cannot copy the unit state");
		goto done;
	}
	/* Refused when another command changed the state since it was verified. */
	if ((r = ky_ceremony_apply(copy, v, &result, detail, sizeof(detail))) != 0)
		goto done;
	/* Recorded (and synced) before anything acts on it. */
	if ((r = unitd_audit_command(UNITD_AUDIT_INTENT, NULL, v, cms->data, cms->len, from, 0,
	                             false, detail, sizeof(detail))) != 0)
		goto done;
	/* Key storage guards and writes: a refusal here discards the copy, nothing changed. */
	if ((r = unitd_storage_before_write(srv->storage, srv->dom, v, detail, sizeof(detail))) !=
	    0)
		goto done;
	/* A zeroize also replaces the seal key: no copy of an earlier state opens again. */
	if ((r = ky_verified_op(v) == KY_OP_ZEROIZE ? server_rekey(srv, copy)
	                                            : unitd_state_write(srv->dd, copy)) != 0) {
		unitd_log("error: cannot write sealed state '%s': %s", srv->dd->state_path,
		          ky_err_message(r));
		snprintf(detail, sizeof(detail),
		         "the unit cannot write its sealed state: nothing was changed");
		goto done;
	}
	old = srv->dom;
	srv->dom = copy;
	copy = NULL; /* transferred */
	if (srv->ks != NULL && (r = unitd_keystore_set_registers(srv->ks, srv->dom)) != 0) {
		/* The state is written: serve nothing rather than serve under stale registers. */
		unitd_log("error: cannot take the new master key registers: %s", ky_err_message(r));
		snprintf(detail, sizeof(detail),
		         "the command was carried out but the key API cannot follow: restart the "
		         "unit");
		goto done;
	}
	unitd_storage_after_write(srv->storage, srv->dom, v);
	state = ky_domain_public_json(srv->dom);
	if ((r = server_add_storage(srv, state, srv->dom->cur_state == KY_CUR_VALID,
	                            srv->dom->cur_vp, srv->dom->new_state != KY_NEW_EMPTY,
	                            srv->dom->new_vp)) != 0)
		goto done;
	r = 0;
done:
	if (locked) {
		/* old is set once the new state is written: the command took effect. */
		r = unitd_audit_command(UNITD_AUDIT_DONE, NULL, v, cms->data, cms->len, from, r,
		                        old != NULL, detail, sizeof(detail));
		id = server_identity_locked(srv);
		pthread_mutex_unlock(&srv->lock);
	} else {
		/* Refused before it verified: its line is made outside the lock, from what its
		 * bytes claim and a copy of the administrators' names. */
		struct unitd_audit_admins adm;

		pthread_mutex_lock(&srv->lock);
		unitd_audit_admins_of(srv->dom, &adm);
		id = server_identity_locked(srv);
		pthread_mutex_unlock(&srv->lock);
		r = unitd_audit_command(UNITD_AUDIT_DONE, &adm, v, cms->data, cms->len, from, r,
		                        false, detail, sizeof(detail));
	}
	ky_domain_free(copy);
	ky_domain_free(old);

	server_command_label(&label, op, sizeof(op), counter, sizeof(counter));
	unitd_log("command from=%s op=%s counter=%s outcome=%s", from, op, counter, ky_err_slug(r));
	if (r == 0)
		server_log_transfers(result);
	if (r != 0) {
		ret = server_send_error(c, id, "POST", url, nonce, r, detail, NULL);
		goto out;
	}
	reply = json_pack("{s:b, s:o, s:o}", "ok", 1, "result", result ? result : json_object(),
	                  "state", state);
	result = state = NULL; /* transferred, also on failure */
	if ((r = server_json_body(reply, &body)) != 0) {
		ret = server_send_error(c, id, "POST", url, nonce, r,
		                        "the command was carried out but its reply cannot be built",
		                        NULL);
		goto out;
	}
	ret = server_send(c, id, "POST", url, nonce, MHD_HTTP_OK, SERVER_CT_JSON, &body, NULL);
out:
	ky_verified_free(v);
	json_decref(result);
	json_decref(state);
	json_decref(reply);
	ky_buf_free(&body);
	EVP_PKEY_free(id);
	return ret;
}

static enum MHD_Result server_too_large(struct unitd_server *srv, struct MHD_Connection *c,
                                        const char *url, const char *nonce)
{
	char detail[96];

	snprintf(detail, sizeof(detail), "a command is at most %d bytes", KY_MAX_COMMAND_BYTES);
	return server_fail(srv, c, "POST", url, nonce, KY_ERR_TOO_LARGE, detail, NULL);
}

/* First call for a request: headers only. Answers at once unless a command body follows. */
static enum MHD_Result server_begin(struct unitd_server *srv, struct MHD_Connection *c,
                                    const char *url, const char *method, struct server_req *req)
{
	const char *nonce = MHD_lookup_connection_value(c, MHD_HEADER_KIND, KY_HDR_NONCE);
	const char *clen;
	size_t i;

	if (nonce != NULL) {
		if (!server_nonce_ok(nonce))
			return server_fail(srv, c, method, url, "", KY_ERR_MALFORMED,
			                   "header Kyok-Nonce must be 32 lowercase hex characters",
			                   NULL);
		req->has_nonce = true;
		memcpy(req->nonce, nonce, KY_NONCE_HEX + 1);
	}
	for (i = 0; i < SERVER_NROUTES; i++)
		if (strcmp(server_routes[i].path, url) == 0)
			break;
	if (i == SERVER_NROUTES)
		return server_fail(srv, c, method, url, req->nonce, KY_ERR_NOT_FOUND,
		                   "no such endpoint", NULL);
	req->metric = strcmp(server_routes[i].method, method) == 0 ? server_metric[i]
	                                                           : server_metric_other[i];
	if (strcmp(server_routes[i].method, method) != 0)
		return server_fail(srv, c, method, url, req->nonce, KY_ERR_METHOD_NOT_ALLOWED,
		                   server_routes[i].route == ROUTE_COMMAND
		                       ? "use POST with a DER CMS SignedData body"
		                       : "use GET",
		                   server_routes[i].method);
	if (server_routes[i].route != ROUTE_COMMAND) {
		/* Answered on the next call: a reply queued while MHD is still reading the request
		 * makes it close the connection (no keep-alive). */
		req->get = true;
		req->route = server_routes[i].route;
		return MHD_YES;
	}

	clen = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (clen != NULL) {
		char *end;
		errno = 0;
		unsigned long long len = strtoull(clen, &end, 10);
		if (errno != 0 || end == clen || *end != '\0' || len > KY_MAX_COMMAND_BYTES) {
			unitd_log("command refused: Content-Length over %d bytes",
			          KY_MAX_COMMAND_BYTES);
			return server_too_large(srv, c, url, req->nonce);
		}
	}
	return MHD_YES; /* the body follows */
}

static enum MHD_Result server_serve(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
	struct unitd_server *srv = cls;
	struct server_req *req = *con_cls;

	(void)version;
	if (req == NULL) {
		if ((req = calloc(1, sizeof(*req))) == NULL)
			return MHD_NO;
		*con_cls = req;
		unitd_header_timer_headers_done(srv->headers, c);
		if (clock_gettime(CLOCK_MONOTONIC, &req->started) != 0)
			return MHD_NO;
		if (unitd_api_owns(url)) {
			req->api = true;
			return unitd_api_handle(srv->api, c, url, method, upload_data,
			                        upload_data_size, &req->api_req);
		}
		return server_begin(srv, c, url, method, req);
	}
	if (*upload_data_size != 0 && server_body_late(srv, req)) {
		char from[INET6_ADDRSTRLEN];

		server_peer(c, from, sizeof(from));
		unitd_log(
		    "http: connection from %s closed: request body not complete %u s after its "
		    "headers (body_timeout)",
		    from, (unsigned)srv->body_timeout);
		return MHD_NO;
	}
	if (req->api)
		return unitd_api_handle(srv->api, c, url, method, upload_data, upload_data_size,
		                        &req->api_req);
	if (*upload_data_size != 0) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		if (req->too_large) {
			req->drained += n;
			if (req->drained <= SERVER_DRAIN_MAX)
				return MHD_YES;
			unitd_log("command upload still going after %zu bytes: connection closed",
			          SERVER_DRAIN_MAX);
			return MHD_NO;
		}
		if (n > KY_MAX_COMMAND_BYTES - req->body.len) {
			/* Stop buffering now; answer as soon as the server lets us. */
			req->too_large = true;
			ky_buf_free(&req->body);
			unitd_log("command refused: body over %d bytes", KY_MAX_COMMAND_BYTES);
			req->answered = server_too_large(srv, c, url, req->nonce) == MHD_YES;
			return MHD_YES;
		}
		return ky_buf_append(&req->body, upload_data, n) == 0 ? MHD_YES : MHD_NO;
	}
	if (req->answered)
		return MHD_YES;
	req->answered = true;
	if (req->get && req->route == ROUTE_LB_HEALTH)
		return server_lb_health(c);
	if (req->get && req->route == ROUTE_READY)
		return server_ready(srv, c);
	if (req->get && req->route == ROUTE_METRICS)
		return server_metrics(srv, c);
	if (req->get)
		return server_get(srv, c, req->route, url, req->nonce);
	if (req->too_large)
		return server_too_large(srv, c, url, req->nonce);
	return server_command(srv, c, url, req->nonce, &req->body);
}

/* Every request is counted once, when its reply was queued (unitd_metrics_queue). */
static enum MHD_Result server_handle(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
	struct unitd_server *srv = cls;
	enum MHD_Result ret =
	    server_serve(cls, c, url, method, version, upload_data, upload_data_size, con_cls);
	struct server_req *req = *con_cls;
	unsigned status = unitd_metrics_taken();

	if (req != NULL && status != 0 && !req->counted) {
		req->counted = true;
		unitd_metrics_request(req->api ? unitd_api_metric(srv->api, req->api_req)
		                               : req->metric,
		                      status, &req->started);
	}
	return ret;
}

static void server_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                             enum MHD_RequestTerminationCode toe)
{
	struct unitd_server *srv = cls;
	struct server_req *req = *con_cls;

	(void)toe;
	unitd_header_timer_request_done(srv->headers, c);
	if (req == NULL)
		return;
	unitd_api_completed(req->api_req);
	ky_buf_free(&req->body);
	free(req);
	*con_cls = NULL;
}

static bool server_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
	}
	return false;
}

/* Binds and listens on host:port; records the bound port and numeric address. Plain HTTP
 * is for loopback addresses only. */
static int server_bind(struct unitd_server *srv, const char *host, uint16_t port, bool tls,
                       int *fd_out, bool *v6, char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL;
	char portstr[8], num[INET6_ADDRSTRLEN];
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	int fd = -1, one = 1, gai, saved = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
	if ((gai = getaddrinfo(host, portstr, &hints, &res)) != 0) {
		snprintf(err, errlen, "cannot resolve listen address '%s': %s", host,
		         gai_strerror(gai));
		return KY_ERR_CONFIG;
	}
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		            ai->ai_protocol);
		if (fd < 0) {
			saved = errno;
			continue;
		}
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 512) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0 && saved == EADDRINUSE && port != 0) {
		char holder[160];
		unitd_port_holder(port, holder, sizeof(holder));
		snprintf(err, errlen,
		         "cannot listen on %s:%u: the port is in use by %s: stop that program, or "
		         "give this unit another port ('listen' in its unit.conf)",
		         host, (unsigned)port, holder);
		return KY_ERR_PORT_IN_USE;
	}
	if (fd < 0) {
		snprintf(err, errlen, "cannot listen on %s:%u: %s", host, (unsigned)port,
		         strerror(saved));
		return KY_ERR_IO;
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) != 0 ||
	    getnameinfo((struct sockaddr *)&ss, sslen, num, sizeof(num), portstr, sizeof(portstr),
	                NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(err, errlen, "cannot read the bound address: %s", strerror(errno));
		close(fd);
		return KY_ERR_IO;
	}
	*v6 = ss.ss_family == AF_INET6;
	snprintf(srv->addr, sizeof(srv->addr), *v6 ? "[%s]" : "%s", num);
	srv->port = (uint16_t)atoi(portstr);
	if (!server_is_loopback(&ss) && !tls) {
		snprintf(err, errlen,
		         "listen address %s is not a loopback address: it needs TLS (set "
		         "api_tls_cert and api_tls_key in the unit configuration); plain HTTP is "
		         "served on loopback addresses only",
		         srv->addr);
		close(fd);
		return KY_ERR_CONFIG;
	}
	*fd_out = fd;
	return 0;
}

/* Reads the TLS certificate chain and key (PEM) the HTTPS endpoint will use. */
static int server_tls_load(struct unitd_server *srv, const struct unitd_config *cfg, char *err,
                           size_t errlen)
{
	int r;

	if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
		snprintf(err, errlen,
		         "this libmicrohttpd has no TLS support: api_tls_cert and "
		         "api_tls_key cannot be used");
		return KY_ERR_CONFIG;
	}
	if ((r = ky_file_read(cfg->tls_cert, 1024 * 1024, &srv->tls_cert)) != 0 ||
	    ky_buf_append(&srv->tls_cert, "", 1) != 0) {
		snprintf(err, errlen, "cannot read api_tls_cert '%s': %s", cfg->tls_cert,
		         ky_err_message(r ? r : KY_ERR_NOMEM));
		return KY_ERR_CONFIG;
	}
	if ((r = ky_file_read(cfg->tls_key, 1024 * 1024, &srv->tls_key)) != 0 ||
	    ky_buf_append(&srv->tls_key, "", 1) != 0) {
		snprintf(err, errlen, "cannot read api_tls_key '%s': %s", cfg->tls_key,
		         ky_err_message(r ? r : KY_ERR_NOMEM));
		return KY_ERR_CONFIG;
	}
	if (strstr((const char *)srv->tls_cert.data, "-----BEGIN CERTIFICATE-----") == NULL ||
	    strstr((const char *)srv->tls_key.data, "PRIVATE KEY-----") == NULL) {
		snprintf(err, errlen,
		         "api_tls_cert must be a PEM certificate (chain) and api_tls_key a PEM "
		         "private key");
		return KY_ERR_CONFIG;
	}
	return 0;
}

/* Connections the process can hold, at most want: a few descriptors are kept for files and
 * the store. */
static unsigned server_conn_limit(unsigned want)
{
	struct rlimit rl;
	unsigned lim = want;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		if (rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			(void)setrlimit(RLIMIT_NOFILE, &rl);
			(void)getrlimit(RLIMIT_NOFILE, &rl);
		}
		if (rl.rlim_cur < 128)
			lim = 32;
		else if (rl.rlim_cur - 96 < lim)
			lim = (unsigned)(rl.rlim_cur - 96);
	}
	return lim;
}

/* Request threads: threads in unit.conf, else 8 per CPU (8 to 128). A request that waits on
 * key storage (a commit, a PostgreSQL round trip) holds its thread, so more threads than CPUs
 * keep the CPUs busy meanwhile: with one per CPU, 64 connections creating keys on PostgreSQL
 * ran at a third of the rate of 8 per CPU (docs/performance.md). */
static unsigned server_threads(const struct unitd_config *cfg)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (cfg->threads > 0)
		return cfg->threads;
	if (n < 1)
		n = 1;
	return n >= 16 ? 128 : (unsigned)(8 * n);
}

int unitd_server_start(const struct unitd_config *cfg, struct unitd_datadir *dd,
                       struct ky_domain **dom, struct unitd_keystore **ks,
                       struct unitd_server **out, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct unitd_server *srv = NULL;
	int fd = -1;
	bool v6 = false, tls = cfg->tls_cert != NULL;
	unsigned flags;

	if ((srv = calloc(1, sizeof(*srv))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return KY_ERR_NOMEM;
	}
	if (pthread_mutex_init(&srv->lock, NULL) != 0) {
		free(srv);
		snprintf(err, errlen, "cannot create a mutex");
		return KY_ERR_INTERNAL;
	}
	srv->dd = dd;
	srv->imprint = cfg->imprint;
	unitd_metrics_init(cfg->metrics != 0);
	for (size_t i = 0; i < SERVER_NROUTES; i++) {
		server_metric[i] =
		    unitd_metrics_route(server_routes[i].method, "", server_routes[i].path);
		server_metric_other[i] = unitd_metrics_route("other", "", server_routes[i].path);
	}
	srv->body_timeout = cfg->body_timeout;
	if ((r = unitd_header_timer_new(cfg->header_timeout, &srv->headers)) != 0) {
		snprintf(err, errlen, "cannot start the header timer: %s", ky_err_message(r));
		goto out;
	}
	if (tls && (r = server_tls_load(srv, cfg, err, errlen)) != 0)
		goto out;
	if ((r = server_bind(srv, cfg->host, cfg->port, tls, &fd, &v6, err, errlen)) != 0)
		goto out;
	if (*ks != NULL && (r = unitd_keystore_set_registers(*ks, *dom)) != 0) {
		snprintf(err, errlen, "cannot take the master key registers: %s",
		         ky_err_message(r));
		goto out;
	}
	if ((r = unitd_storage_new(*ks, cfg->reencipher_batch, cfg->reencipher_pause_ms,
	                           &srv->storage)) != 0 ||
	    (r = unitd_api_new(cfg, *ks, &srv->api)) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	srv->ks = *ks;
	*ks = NULL; /* transferred */
	srv->dom = *dom;
	*dom = NULL; /* transferred */
	flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
	if (v6)
		flags |= MHD_USE_IPv6;
	if (tls)
		flags |= MHD_USE_TLS;
	{
		struct MHD_OptionItem tls_opts[] = {
		    {MHD_OPTION_HTTPS_MEM_CERT, 0, tls ? srv->tls_cert.data : NULL},
		    {MHD_OPTION_HTTPS_MEM_KEY, 0, tls ? srv->tls_key.data : NULL},
		    {MHD_OPTION_END, 0, NULL},
		};
		if (!tls)
			tls_opts[0].option = MHD_OPTION_END;
		srv->mhd = MHD_start_daemon(
		    flags, 0, NULL, NULL, server_handle, srv, MHD_OPTION_EXTERNAL_LOGGER,
		    server_mhd_log, srv, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
		    MHD_OPTION_NOTIFY_COMPLETED, server_completed, srv,
		    MHD_OPTION_NOTIFY_CONNECTION, unitd_header_timer_notify, srv->headers,
		    MHD_OPTION_CONNECTION_LIMIT, server_conn_limit(cfg->max_connections),
		    MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_connections_per_client,
		    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->idle_timeout,
		    MHD_OPTION_THREAD_POOL_SIZE, server_threads(cfg), MHD_OPTION_ARRAY, tls_opts,
		    MHD_OPTION_END);
	}
	if (srv->mhd == NULL) {
		r = KY_ERR_INTERNAL;
		snprintf(err, errlen, "cannot start the HTTP%s server on %s:%u%s", tls ? "S" : "",
		         srv->addr, (unsigned)srv->port,
		         tls ? " (check that api_tls_cert and api_tls_key are a matching PEM "
		               "certificate and key)"
		             : "");
		goto out;
	}
	fd = -1; /* transferred */
	if ((r = unitd_policy_pass_start(cfg, srv->ks, &srv->pass)) != 0) {
		snprintf(err, errlen, "cannot start the policy pass: %s", ky_err_message(r));
		MHD_stop_daemon(srv->mhd);
		srv->mhd = NULL;
		goto out;
	}
	*out = srv;
	srv = NULL; /* transferred */
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	if (srv != NULL) {
		if (srv->dom != NULL) {
			*dom = srv->dom; /* given back: the caller still owns it on failure */
			srv->dom = NULL;
		}
		if (srv->ks != NULL) {
			*ks = srv->ks;
			srv->ks = NULL;
		}
		unitd_storage_free(srv->storage);
		unitd_api_free(srv->api);
		unitd_header_timer_free(srv->headers);
		ky_buf_free(&srv->tls_cert);
		ky_buf_free(&srv->tls_key);
		pthread_mutex_destroy(&srv->lock);
		free(srv);
	}
	return r;
}

uint16_t unitd_server_port(const struct unitd_server *srv)
{
	return srv->port;
}

const char *unitd_server_addr(const struct unitd_server *srv)
{
	return srv->addr;
}

void unitd_server_free(struct unitd_server *srv)
{
	if (srv == NULL)
		return;
	if (srv->mhd != NULL)
		MHD_stop_daemon(srv->mhd);
	unitd_policy_pass_stop(srv->pass);     /* joins its thread: before key storage goes */
	unitd_header_timer_free(srv->headers); /* after MHD: its connections are all closed */
	unitd_storage_free(srv->storage);      /* stops and joins the re-encipherment worker */
	unitd_api_free(srv->api);
	unitd_keystore_free(srv->ks);
	ky_domain_free(srv->dom);
	ky_buf_free(&srv->tls_cert);
	ky_buf_free(&srv->tls_key);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
}
