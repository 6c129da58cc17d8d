/* Client timeouts and the order in which 'kyok kp' tries crypto units (cli/failover.c). */
#ifndef KYOK_CLI_FAILOVER_H
#define KYOK_CLI_FAILOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli/cli.h"

#define CLI_TIMEOUT_DEFAULT 15 /* seconds for one exchange with one unit */
#define CLI_TIMEOUT_MAX     3600
#define CLI_CONNECT_TIMEOUT 3  /* seconds to connect, at most */
#define CLI_FAILED_HOLD     60 /* seconds a failed unit is tried last */

/* A timeout in whole seconds, 1 to CLI_TIMEOUT_MAX. KY_ERR_USAGE. Pure. */
int cli_parse_timeout(const char *s, long *out) KY_WUR;
/* The connect and total timeouts: --timeout, $KYOK_TIMEOUT, the default. KY_ERR_USAGE with a
 * reason in why when $KYOK_TIMEOUT is not a timeout. */
int cli_timeouts(long *connect_s, long *total_s, char *why, size_t whylen) KY_WUR;

/* Whether a key API request changes nothing stored, so that sending it to several units is
 * harmless: GET, HEAD, and the wrap, unwrap and rewrap actions. Pure. */
bool cli_api_request_safe(const char *method, const char *path);

/* order[0..n) = unit indexes from first on, round the list, units that failed less than
 * CLI_FAILED_HOLD seconds before now moved to the end (failed_at[i] = time of unit i's last
 * failure, 0 = none; may be NULL). Pure. */
void cli_unit_order(size_t n, size_t first, const int64_t *failed_at, int64_t now, size_t *order);
/* Parses unit-failures text: failed_at[i] for each unit of inst named there (others 0).
 * KY_ERR_MALFORMED. Pure. */
int cli_failures_parse(const char *text, size_t len, const struct cli_instance *inst,
                       int64_t *failed_at) KY_WUR;
/* Reads <instance dir>/unit-failures (none: all 0). Prints nothing. */
int cli_failures_load(const struct cli_instance *inst, int64_t *failed_at) KY_WUR;
/* Notes that unit idx failed at when (0: it served), rewriting the file. Prints nothing. */
int cli_failure_note(const struct cli_instance *inst, size_t idx, int64_t when) KY_WUR;

#endif
