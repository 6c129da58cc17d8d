/* The unit trust anchor of a local instance (cli/anchor.c). */
#ifndef KYOK_CLI_ANCHOR_H
#define KYOK_CLI_ANCHOR_H

#include <openssl/x509.h>
#include <stddef.h>

#include "kyok/common.h"

/* <dir>/anchor.key and <dir>/anchor.crt. */
void cli_anchor_paths(const char *dir, char *key, size_t keylen, char *crt, size_t crtlen);
/* Makes the anchor key (0600) and its self-signed CA certificate (OU = instance). Prints. */
int cli_anchor_create(const char *dir, const char *instance) KY_WUR;
/* Has kyok-unitd (conf) make its identity request (csr), checks it names unit of instance,
 * issues the identity certificate with the anchor of dir into crt. Prints its errors. */
int cli_anchor_certify(const char *dir, const char *unitd, const char *conf, const char *log,
                       const char *csr, const char *crt, const char *instance,
                       const char *unit) KY_WUR;
/* Runs kyok-unitd --config conf --identity-request csr: the unit makes its identity key (kept
 * sealed in its data_dir) and writes the request. Prints its errors. */
int cli_anchor_request(const char *unitd, const char *conf, const char *csr,
                       const char *log) KY_WUR;
/* Issues with the anchor of dir the identity certificate of the request csr_pem, which must
 * name unit of instance (what names it in errors). *cert_pem malloc'd. Prints its errors. */
int cli_anchor_issue(const char *dir, const char *csr_pem, const char *what, const char *instance,
                     const char *unit, char **cert_pem) KY_WUR;
/* Signs msg with the anchor key of dir (ky_sign), *sig_b64 malloc'd base64. Prints its
 * errors. */
int cli_anchor_sign(const char *dir, const void *msg, size_t n, char **sig_b64) KY_WUR;
/* The anchor certificate of instance dir: KY_ERR_NOT_FOUND when it has none. Prints nothing. */
int cli_anchor_cert(const char *dir, X509 **cert) KY_WUR;

#endif
