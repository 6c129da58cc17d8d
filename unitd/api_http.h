/* api.c: the key API and its token service as the HTTP server (server.c) calls them; api.h
 * has the pure pieces they are made of, api_internal.h what the files of the key API share. */
#ifndef KYOK_UNITD_API_HTTP_H
#define KYOK_UNITD_API_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <microhttpd.h>

#include "kyok/common.h"

struct unitd_config;
struct unitd_keystore;

struct unitd_api;
/* ks may be NULL: every request is then answered "no key storage". */
int unitd_api_new(const struct unitd_config *cfg, struct unitd_keystore *ks,
                  struct unitd_api **out) KY_WUR;
void unitd_api_free(struct unitd_api *api);
/* True for /api/v2/... and /identity/token. */
bool unitd_api_owns(const char *url);
/* The MHD access handler for those URLs; *con_cls is the request's own state. */
enum MHD_Result unitd_api_handle(struct unitd_api *api, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls);
void unitd_api_completed(void *con_cls);
/* The metrics slot (unitd_metrics_route) of the request whose state is con_cls. */
int unitd_api_metric(const struct unitd_api *api, const void *con_cls);

#endif
