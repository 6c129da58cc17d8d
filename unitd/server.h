/* server.c: the unit's HTTP server, its admin endpoints and state changes. */
#ifndef KYOK_UNITD_SERVER_H
#define KYOK_UNITD_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "kyok/common.h"

struct ky_domain;
struct unitd_config;
struct unitd_keystore;
struct unitd_datadir;

struct unitd_server;

/* Binds host:port (port 0 = a free one), starts serving. Takes ownership of *dom (set to
 * NULL) and of *ks (may be NULL: no key storage, no key API). The data directory dd must
 * outlive the server. Refuses a non-loopback address without TLS. */
int unitd_server_start(const struct unitd_config *cfg, struct unitd_datadir *dd,
                       struct ky_domain **dom, struct unitd_keystore **ks,
                       struct unitd_server **out, char *err, size_t errlen) KY_WUR;
uint16_t unitd_server_port(const struct unitd_server *srv);
/* Numeric bound address, for the start line ("127.0.0.1", "[::1]"). */
const char *unitd_server_addr(const struct unitd_server *srv);

/* Stops serving (waits for requests in flight), frees the state. NULL is a no-op. */
void unitd_server_free(struct unitd_server *srv);

#endif
