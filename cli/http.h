/* HTTP handles to crypto units and their TLS settings (http.c). */
#ifndef KYOK_CLI_HTTP_H
#define KYOK_CLI_HTTP_H

#include <curl/curl.h>

/* The CA file units' certificates must chain to: --cacert, $KYOK_CA_FILE, the instance's
 * ca.crt; NULL: the system's store. */
const char *cli_http_ca_file(void);
/* A new handle (curl initialised on first use); NULL on failure. */
CURL *cli_http_new(void);
/* Applies the TLS settings (after every curl_easy_reset); errbuf receives curl's detail. */
int cli_http_tls(CURL *h, char errbuf[CURL_ERROR_SIZE]);
/* A failed transfer: KY_ERR_TLS with what failed, the URL and the CA file for a TLS failure,
 * else KY_ERR_UNREACHABLE with curl's reason; why says it. */
int cli_http_failure(CURLcode cc, const char *url, const char *errbuf, char *why, size_t n);

#endif
