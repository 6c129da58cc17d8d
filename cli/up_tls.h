/* kyok up --tls: the instance's TLS CA and the units' HTTPS certificates (up_tls.c). */
#ifndef KYOK_CLI_UP_TLS_H
#define KYOK_CLI_UP_TLS_H

#include "kyok/common.h"

/* Makes DIR/ca.key (0600) and DIR/ca.crt. Errors printed. */
int up_tls_ca_create(const char *dir, const char *instance) KY_WUR;
/* Makes unit_dir/tls.key (0600) and tls.crt (CN = unit id, subjectAltName IP ip), issued by
 * the CA of DIR. Errors printed. */
int up_tls_unit(const char *dir, const char *unit_dir, const char *unit_id, const char *ip) KY_WUR;
/* Makes unit_dir/tls.key (0600) and a request for it (CN = unit id), *csr_pem malloc'd. Errors
 * printed. */
int up_tls_request(const char *unit_dir, const char *unit_id, char **csr_pem) KY_WUR;
/* Issues, with the CA of DIR, a certificate for the key of csr_pem (its self-signature must
 * verify, its key be EC and its CN unit_id): CN = unit id, subjectAltName IP ip. *cert_pem
 * malloc'd. Errors printed. */
int up_tls_issue(const char *dir, const char *csr_pem, const char *unit_id, const char *ip,
                 char **cert_pem) KY_WUR;
/* 0 when cert_pem chains to the CA certificate in ca_path, is for the key in key_path and
 * names ip; else KY_ERR_BAD_CERT or KY_ERR_MALFORMED. Prints nothing. */
int up_tls_check(const char *ca_path, const char *cert_pem, const char *key_path,
                 const char *ip) KY_WUR;
/* The operator's certificate (chain, PEM) and key for a unit listening on ip: the key must be
 * the certificate's and the certificate name ip. Copied into unit_dir/tls.crt and tls.key
 * (0600); unit_dir NULL: only checked. Errors printed. */
int up_tls_own(const char *cert_path, const char *key_path, const char *unit_dir,
               const char *ip) KY_WUR;

#endif
