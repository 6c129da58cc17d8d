/* kyok up --tls: the instance's TLS CA and the units' HTTPS certificates (up_tls.c). */
#ifndef KYOK_CLI_UP_TLS_H
#define KYOK_CLI_UP_TLS_H

#include "kyok/common.h"

/* Makes DIR/ca.key (0600) and DIR/ca.crt. Errors printed. */
int up_tls_ca_create(const char *dir, const char *instance) KY_WUR;
/* Makes unit_dir/tls.key (0600) and tls.crt (CN = unit id, for 127.0.0.1), issued by the CA
 * of DIR. Errors printed. */
int up_tls_unit(const char *dir, const char *unit_dir, const char *unit_id) KY_WUR;

#endif
