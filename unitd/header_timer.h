/* header_timer.c: the header timeout of the HTTP server.
 *
 * A connection has timeout_s seconds from its accept, and from the end of each request,
 * until the access handler sees the next request's headers; past that a sweeper thread
 * shuts it down and logs one line. Give unitd_header_timer_notify to MHD as
 * MHD_OPTION_NOTIFY_CONNECTION with the timer as its closure; free the timer after
 * MHD_stop_daemon. */
#ifndef KYOK_UNITD_HEADER_TIMER_H
#define KYOK_UNITD_HEADER_TIMER_H

#include <stdint.h>

#include <microhttpd.h>

#include "kyok/common.h"

struct unitd_header_timer;

int unitd_header_timer_new(uint32_t timeout_s, struct unitd_header_timer **out) KY_WUR;
/* Stops and joins the sweeper; NULL is a no-op. */
void unitd_header_timer_free(struct unitd_header_timer *ht);
void unitd_header_timer_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                               enum MHD_ConnectionNotificationCode code);
/* The access handler's first call for a request: its headers are complete. */
void unitd_header_timer_headers_done(struct unitd_header_timer *ht, struct MHD_Connection *c);
/* A request ended (MHD_OPTION_NOTIFY_COMPLETED): the connection waits for headers again. */
void unitd_header_timer_request_done(struct unitd_header_timer *ht, struct MHD_Connection *c);

#endif
