/* harden.c: the process made fit to hold secrets. */
#ifndef KYOK_UNITD_HARDEN_H
#define KYOK_UNITD_HARDEN_H

#include <stddef.h>

#include "kyok/common.h"

struct unitd_config;

/* No core dumps, not dumpable, umask 077, SIGPIPE ignored, OpenSSL secure heap, jansson
 * memory cleansed on free. Call first thing, before anything secret exists. */
int unitd_harden(char *err, size_t errlen) KY_WUR;
/* The OpenSSL secure heap, sized for the key cache (unitd_secure_heap_size); after the
 * configuration is read, before anything secret exists. */
int unitd_secure_heap_init(const struct unitd_config *cfg, char *err, size_t errlen) KY_WUR;

#endif
