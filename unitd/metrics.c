/* The unit's counters for GET /metrics (Prometheus text exposition format 0.0.4) and the
 * storage check behind GET /ready.
 *
 * Routes are registered once at start, before the server serves: a slot per (method, route
 * template) of the route tables in server.c and api.c, one more per template for a method the
 * route does not take ("other"), and slot 0 for every path no table knows. A label is never
 * taken from the request itself: no key id, no client-chosen path or method in the output.
 *
 * On the request path everything is a relaxed C11 atomic add into fixed arrays (per route and
 * status code; per route and latency bucket): no lock, no allocation. Readers add them up
 * when /metrics is asked; a counter may move while it is read, never backwards.
 *
 * The status of a request is taken where its reply is queued (unitd_metrics_queue, on the
 * thread that handles the request) and counted by the server once the handler returns, with
 * the time from the request's headers to its reply queued.
 */
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyok/err.h"
#include "kyok/kms.h"
#include "kyok/store.h"
#include "unitd/keystore.h"
#include "unitd/log.h"
#include "unitd/metrics.h"
#include "unitd/scheduler.h"

#define METRICS_LABEL_MAX 96
#define METRICS_CODE_MIN  100
#define METRICS_CODES     500   /* status codes 100 to 599 */
#define METRICS_NBUCKETS  15    /* the bounds below and +Inf */
#define METRICS_KEYS_MS   10000 /* key counts are read again when older than this */
#define METRICS_CHECK_MS  1000  /* the storage check of /ready is run again after this */

/* Upper bounds of the latency buckets, in microseconds. */
static const uint64_t metrics_bounds_us[METRICS_NBUCKETS - 1] = {
    500,    1000,   2500,   5000,    10000,   25000,   50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
static const char *const metrics_bounds_s[METRICS_NBUCKETS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25",   "0.5",   "1",      "2.5",   "5",    "10",    "+Inf"};

struct metrics_route {
	char method[8];
	char route[METRICS_LABEL_MAX];
};

static struct metrics_route metrics_routes[UNITD_METRICS_ROUTES_MAX] = {{"other", "other"}};
static size_t metrics_nroutes = 1;
static bool metrics_counting;
static int64_t metrics_start; /* UTC seconds */
static struct timespec metrics_start_mono;

static _Atomic uint64_t metrics_requests[UNITD_METRICS_ROUTES_MAX][METRICS_CODES];
static _Atomic uint64_t metrics_latency[UNITD_METRICS_ROUTES_MAX][METRICS_NBUCKETS];
static _Atomic uint64_t metrics_latency_us[UNITD_METRICS_ROUTES_MAX];
static _Atomic uint64_t metrics_cache[UNITD_METRICS_CACHE__N];
static _Atomic uint64_t metrics_audit_lines;

/* The status queued on this thread, 0 = none since the last unitd_metrics_taken. */
static __thread unsigned metrics_status;

static int64_t metrics_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void unitd_metrics_init(bool counting)
{
	metrics_counting = counting;
	metrics_start = (int64_t)time(NULL);
	if (clock_gettime(CLOCK_MONOTONIC, &metrics_start_mono) != 0)
		memset(&metrics_start_mono, 0, sizeof(metrics_start_mono));
}

int unitd_metrics_route(const char *method, const char *prefix, const char *path)
{
	char route[METRICS_LABEL_MAX];
	size_t i;

	if ((size_t)snprintf(route, sizeof(route), "%s%s", prefix, path) >= sizeof(route) ||
	    strlen(method) >= sizeof(metrics_routes[0].method))
		return UNITD_METRICS_UNMATCHED;
	for (i = 0; i < metrics_nroutes; i++)
		if (strcmp(metrics_routes[i].method, method) == 0 &&
		    strcmp(metrics_routes[i].route, route) == 0)
			return (int)i;
	if (metrics_nroutes == UNITD_METRICS_ROUTES_MAX) {
		/* A program error, said where it shows: raise UNITD_METRICS_ROUTES_MAX. */
		unitd_log("error: metrics: no slot left for %s %s (UNITD_METRICS_ROUTES_MAX %d): "
		          "its requests are counted as unmatched",
		          method, route, UNITD_METRICS_ROUTES_MAX);
		return UNITD_METRICS_UNMATCHED;
	}
	snprintf(metrics_routes[i].method, sizeof(metrics_routes[i].method), "%s", method);
	memcpy(metrics_routes[i].route, route, sizeof(route));
	metrics_nroutes++;
	return (int)i;
}

enum MHD_Result unitd_metrics_queue(struct MHD_Connection *c, unsigned status,
                                    struct MHD_Response *resp)
{
	enum MHD_Result ret = MHD_queue_response(c, status, resp);

	if (ret == MHD_YES)
		metrics_status = status;
	return ret;
}

unsigned unitd_metrics_taken(void)
{
	unsigned s = metrics_status;

	metrics_status = 0;
	return s;
}

void unitd_metrics_request(int route, unsigned status, const struct timespec *started)
{
	struct timespec now;
	uint64_t us = 0;
	size_t b;

	if (!metrics_counting)
		return;
	if (route < 0 || (size_t)route >= UNITD_METRICS_ROUTES_MAX)
		route = UNITD_METRICS_UNMATCHED;
	if (status >= METRICS_CODE_MIN && status < METRICS_CODE_MIN + METRICS_CODES)
		atomic_fetch_add_explicit(&metrics_requests[route][status - METRICS_CODE_MIN], 1,
		                          memory_order_relaxed);
	if (clock_gettime(CLOCK_MONOTONIC, &now) == 0 && now.tv_sec >= started->tv_sec)
		us = (uint64_t)(now.tv_sec - started->tv_sec) * 1000000u +
		     (uint64_t)((now.tv_nsec - started->tv_nsec) / 1000);
	for (b = 0; b < METRICS_NBUCKETS - 1 && us > metrics_bounds_us[b]; b++)
		;
	atomic_fetch_add_explicit(&metrics_latency[route][b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&metrics_latency_us[route], us, memory_order_relaxed);
}

void unitd_metrics_cache(enum unitd_metrics_cache_event ev, uint64_t n)
{
	if (ev < UNITD_METRICS_CACHE__N)
		atomic_fetch_add_explicit(&metrics_cache[ev], n, memory_order_relaxed);
}

void unitd_metrics_audit_line(void)
{
	atomic_fetch_add_explicit(&metrics_audit_lines, 1, memory_order_relaxed);
}

/* ---- the storage check of /ready ---- */

static pthread_mutex_t metrics_check_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t metrics_check_ms; /* when the last check ran; under metrics_check_lock */
static int metrics_check_r;
static bool metrics_checked;

int unitd_metrics_storage_check(struct unitd_keystore *ks)
{
	struct ky_kms kms;
	int64_t now = metrics_ms();
	int r;

	pthread_mutex_lock(&metrics_check_lock);
	if (metrics_checked && now - metrics_check_ms < METRICS_CHECK_MS) {
		r = metrics_check_r;
		goto out;
	}
	/* The check a key API request makes when it takes the registers (the change counter,
	 * the whole storage against its digest until that passed once), and one read of a small
	 * record as every read is checked: storage rolled back or replaced under the running unit
	 * shows there. Nothing is opened: the record stays sealed. */
	r = unitd_keystore_enter(ks, &kms);
	if (r == 0) {
		struct ky_store_secret sec;

		memset(&sec, 0, sizeof(sec));
		r = ky_store_secret_get(kms.store, UNITD_SECRET_TOKEN_KEY, &sec);
		if (r == KY_ERR_NOT_FOUND)
			r = 0;
		ky_store_secret_release(&sec);
		unitd_keystore_leave(ks);
	}
	metrics_check_r = r;
	metrics_check_ms = now;
	metrics_checked = true;
out:
	pthread_mutex_unlock(&metrics_check_lock);
	return r;
}

/* ---- keys in storage by state ---- */

static const struct {
	enum ky_key_state state;
	const char *name;
} metrics_states[] = {
    {KY_KEY_ACTIVE, "active"},
    {KY_KEY_SUSPENDED, "suspended"},
    {KY_KEY_DEACTIVATED, "deactivated"},
    {KY_KEY_DESTROYED, "destroyed"},
};
#define METRICS_NSTATES (sizeof(metrics_states) / sizeof(metrics_states[0]))

static pthread_mutex_t metrics_keys_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t metrics_keys[METRICS_NSTATES]; /* under metrics_keys_lock */
static int64_t metrics_keys_ms;
static bool metrics_keys_ok;

/* Counts at most METRICS_KEYS_MS old, or false when they cannot be read now (never older
 * ones instead). */
static bool metrics_key_counts(struct ky_store *st, uint64_t out[METRICS_NSTATES])
{
	int64_t now = metrics_ms();
	bool ok = true;

	pthread_mutex_lock(&metrics_keys_lock);
	if (!metrics_keys_ok || now - metrics_keys_ms >= METRICS_KEYS_MS) {
		metrics_keys_ok = false;
		for (size_t i = 0; i < METRICS_NSTATES && ok; i++) {
			struct ky_store_filter f = {.states = 1u << metrics_states[i].state,
			                            .extractable = -1,
			                            .now = (int64_t)time(NULL)};
			ok = ky_store_key_count(st, &f, &metrics_keys[i]) == 0;
		}
		metrics_keys_ok = ok;
		metrics_keys_ms = now;
	}
	memcpy(out, metrics_keys, sizeof(metrics_keys));
	pthread_mutex_unlock(&metrics_keys_lock);
	return ok;
}

/* ---- the exposition ---- */

struct metrics_out {
	struct ky_buf *b;
	int r;
};

static void metrics_put(struct metrics_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void metrics_put(struct metrics_out *o, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	if (o->r != 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		o->r = KY_ERR_INTERNAL;
	else if (ky_buf_append(o->b, line, (size_t)n) != 0)
		o->r = KY_ERR_NOMEM;
}

static void metrics_head(struct metrics_out *o, const char *name, const char *type,
                         const char *help)
{
	metrics_put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metrics_requests_out(struct metrics_out *o)
{
	metrics_head(o, "kyok_http_requests_total", "counter",
	             "HTTP requests answered, by route template and status code.");
	for (size_t i = 0; i < metrics_nroutes; i++)
		for (unsigned c = 0; c < METRICS_CODES; c++) {
			uint64_t n =
			    atomic_load_explicit(&metrics_requests[i][c], memory_order_relaxed);
			if (n > 0)
				metrics_put(o,
				            "kyok_http_requests_total{method=\"%s\",route=\"%s\","
				            "code=\"%u\"} %llu\n",
				            metrics_routes[i].method, metrics_routes[i].route,
				            c + METRICS_CODE_MIN, (unsigned long long)n);
		}
	metrics_head(o, "kyok_http_request_duration_seconds", "histogram",
	             "Time from a request's headers to its reply queued, by route template.");
	for (size_t i = 0; i < metrics_nroutes; i++) {
		uint64_t b[METRICS_NBUCKETS], cum = 0, us;

		for (size_t k = 0; k < METRICS_NBUCKETS; k++) {
			b[k] = atomic_load_explicit(&metrics_latency[i][k], memory_order_relaxed);
			cum += b[k];
		}
		if (cum == 0)
			continue;
		us = atomic_load_explicit(&metrics_latency_us[i], memory_order_relaxed);
		cum = 0;
		for (size_t k = 0; k < METRICS_NBUCKETS; k++) {
			cum += b[k];
			metrics_put(
			    o,
			    "kyok_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\","
			    "le=\"%s\"} %llu\n",
			    metrics_routes[i].method, metrics_routes[i].route, metrics_bounds_s[k],
			    (unsigned long long)cum);
		}
		metrics_put(o,
		            "kyok_http_request_duration_seconds_sum{method=\"%s\",route=\"%s\"} "
		            "%llu.%06llu\n",
		            metrics_routes[i].method, metrics_routes[i].route,
		            (unsigned long long)(us / 1000000u),
		            (unsigned long long)(us % 1000000u));
		metrics_put(o,
		            "kyok_http_request_duration_seconds_count{method=\"%s\",route=\"%s\"} "
		            "%llu\n",
		            metrics_routes[i].method, metrics_routes[i].route,
		            (unsigned long long)cum);
	}
}

static void metrics_gauge(struct metrics_out *o, const char *name, const char *help,
                          unsigned long long v)
{
	metrics_head(o, name, "gauge", help);
	metrics_put(o, "%s %llu\n", name, v);
}

static void metrics_counter(struct metrics_out *o, const char *name, const char *help,
                            _Atomic uint64_t *v)
{
	metrics_head(o, name, "counter", help);
	metrics_put(o, "%s %llu\n", name,
	            (unsigned long long)atomic_load_explicit(v, memory_order_relaxed));
}

/* The policy pass's totals (scheduler.c). */
static void metrics_policy_pass(struct metrics_out *o)
{
	struct unitd_policy_pass_counts c;

	unitd_policy_pass_counts(&c);
	metrics_head(o, "kyok_policy_passes_total", "counter",
	             "Policy passes this unit ran (rotation policies, purge 90 days after "
	             "deletion).");
	metrics_put(o, "kyok_policy_passes_total %llu\n", (unsigned long long)c.runs);
	metrics_head(o, "kyok_policy_keys_total", "counter",
	             "Keys the policy pass of this unit acted on: rotated, purged; raced: changed "
	             "by another unit first; failed: left alone (logged).");
	metrics_put(o, "kyok_policy_keys_total{outcome=\"rotated\"} %llu\n",
	            (unsigned long long)c.rotated);
	metrics_put(o, "kyok_policy_keys_total{outcome=\"purged\"} %llu\n",
	            (unsigned long long)c.purged);
	metrics_put(o, "kyok_policy_keys_total{outcome=\"raced\"} %llu\n",
	            (unsigned long long)c.raced);
	metrics_put(o, "kyok_policy_keys_total{outcome=\"failed\"} %llu\n",
	            (unsigned long long)c.failed);
}

int unitd_metrics_render(const struct unitd_metrics_view *v, struct ky_buf *out)
{
	struct metrics_out o = {.b = out, .r = 0};
	struct timespec now;
	uint64_t keys[METRICS_NSTATES];
	unsigned long long up = 0;

	if (metrics_counting)
		metrics_requests_out(&o);
	metrics_gauge(&o, "kyok_ready", "1 when the unit can serve keys (GET /ready answers 200).",
	              v->ready);
	metrics_gauge(&o, "kyok_imprint_mode", "1 while the unit is in imprint mode.", v->imprint);
	metrics_head(&o, "kyok_master_key_loaded", "gauge",
	             "1 when the master key register holds a key (current: valid; new: loaded, "
	             "committed or not).");
	metrics_put(&o, "kyok_master_key_loaded{register=\"current\"} %d\n", v->current ? 1 : 0);
	metrics_put(&o, "kyok_master_key_loaded{register=\"new\"} %d\n", v->new_loaded ? 1 : 0);
	metrics_gauge(&o, "kyok_master_key_new_committed",
	              "1 when the new master key register is committed.", v->new_committed);
	if (v->store != NULL) {
		metrics_gauge(&o, "kyok_reencipher_running",
		              "1 while this unit moves key storage to the new master key.",
		              v->reenc_running);
		metrics_gauge(&o, "kyok_reencipher_records_done",
		              "Records moved to the new master key by this unit's last or running "
		              "re-encipherment.",
		              (unsigned long long)v->reenc_done);
		metrics_gauge(&o, "kyok_reencipher_records_total",
		              "Records to move in this unit's last or running re-encipherment.",
		              (unsigned long long)v->reenc_total);
		if (metrics_key_counts(v->store, keys)) {
			metrics_head(&o, "kyok_keys", "gauge",
			             "Keys in key storage by state (counted at most 10 s ago).");
			for (size_t i = 0; i < METRICS_NSTATES; i++)
				metrics_put(&o, "kyok_keys{state=\"%s\"} %llu\n",
				            metrics_states[i].name, (unsigned long long)keys[i]);
		}
	}
	metrics_counter(&o, "kyok_key_cache_hits_total",
	                "Key API requests that found their key opened in the unit's cache.",
	                &metrics_cache[UNITD_METRICS_CACHE_HIT]);
	metrics_counter(&o, "kyok_key_cache_misses_total",
	                "Key API requests that read and opened their key from key storage.",
	                &metrics_cache[UNITD_METRICS_CACHE_MISS]);
	metrics_counter(&o, "kyok_key_cache_evictions_total",
	                "Opened keys dropped from the unit's cache.",
	                &metrics_cache[UNITD_METRICS_CACHE_EVICT]);
	metrics_counter(&o, "kyok_audit_lines_total",
	                "Lines taken into the unit's audit log since the unit started.",
	                &metrics_audit_lines);
	if (v->store != NULL)
		metrics_policy_pass(&o);
	metrics_gauge(&o, "kyok_start_time_seconds", "When the unit started (Unix time).",
	              (unsigned long long)metrics_start);
	if (clock_gettime(CLOCK_MONOTONIC, &now) == 0 && now.tv_sec >= metrics_start_mono.tv_sec)
		up = (unsigned long long)(now.tv_sec - metrics_start_mono.tv_sec);
	metrics_gauge(&o, "kyok_uptime_seconds", "Seconds since the unit started.", up);
	return o.r;
}
