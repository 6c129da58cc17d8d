/* metrics.c: counters for GET /metrics, the storage check of GET /ready. */
#ifndef KYOK_UNITD_METRICS_H
#define KYOK_UNITD_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <microhttpd.h>

#include "kyok/common.h"

struct ky_store;
struct unitd_keystore;

#define UNITD_METRICS_ROUTES_MAX 192
#define UNITD_METRICS_UNMATCHED  0 /* the slot of a path no route table knows */

/* At start, before the server serves: the start time, and whether requests are counted
 * (unit.conf 'metrics'). */
void unitd_metrics_init(bool counting);
/* At start only: the slot of (method, prefix path), made on first use ("other" as method:
 * a method the route does not take). UNITD_METRICS_UNMATCHED when the table is full. */
int unitd_metrics_route(const char *method, const char *prefix, const char *path);
/* MHD_queue_response, the status noted for the request this thread is handling. */
enum MHD_Result unitd_metrics_queue(struct MHD_Connection *c, unsigned status,
                                    struct MHD_Response *resp);
/* The status queued on this thread since the last call (0 = none); clears it. */
unsigned unitd_metrics_taken(void);
/* One request of route slot answered with status, its headers complete at started
 * (CLOCK_MONOTONIC). Lock-free. */
void unitd_metrics_request(int route, unsigned status, const struct timespec *started);
enum unitd_metrics_cache_event {
	UNITD_METRICS_CACHE_HIT,
	UNITD_METRICS_CACHE_MISS,
	UNITD_METRICS_CACHE_EVICT,
	UNITD_METRICS_CACHE__N,
};
void unitd_metrics_cache(enum unitd_metrics_cache_event ev, uint64_t n);
void unitd_metrics_audit_line(void);
/* Key storage as a key API request would find it (0, or why not), checked at most once a
 * second: the result of the last check otherwise. */
int unitd_metrics_storage_check(struct unitd_keystore *ks) KY_WUR;
/* What the server knows of the unit when /metrics is asked. */
struct unitd_metrics_view {
	bool ready, imprint, current, new_loaded, new_committed;
	struct ky_store *store; /* NULL: no key storage */
	bool reenc_running;
	uint64_t reenc_done, reenc_total;
};
/* The exposition text (format 0.0.4) appended to out. */
int unitd_metrics_render(const struct unitd_metrics_view *v, struct ky_buf *out) KY_WUR;

#endif
