/* What the two sides of 'kyok host' share: host.c (the anchor's host: invite, join-accept,
 * the command table, and the helpers below) and host_join.c (the joining host:
 * join-request, join-finish). */
#ifndef KYOK_CLI_HOST_INTERNAL_H
#define KYOK_CLI_HOST_INTERNAL_H

#include <jansson.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>

#include "kyok/common.h"

#define HOST_FILE_MAX      (512 * 1024)
#define HOST_INVITE_FORMAT "kyok-host-invite-1"
#define HOST_REQ_FORMAT    "kyok-join-request-1"
#define HOST_ANSWER_FORMAT "kyok-join-answer-1"
#define HOST_REQ_FILE      "join-request.json"
#define HOST_INVITE_FILE   "join-invite.json"
#define HOST_PEM_MAX       (16 * 1024)

/* SHA-256 of data, hex. */
int host_sha256_hex(const void *data, size_t n, char out[65]) KY_WUR;
/* Reads a JSON object file; raw (may be NULL) keeps its bytes. Prints its errors. */
int host_read_json(const char *path, const char *what, json_t **out, struct ky_buf *raw) KY_WUR;
/* Writes j to path, atomically, 0644. Prints its errors. */
int host_write_json(const char *path, json_t *j) KY_WUR;
/* A string member of a JSON object, at most max bytes, or NULL. */
const char *host_str(const json_t *o, const char *key, size_t max);
/* An IPv4 address of one host that other hosts can reach. Prints its errors. */
int host_address_check(const char *subject, const char *addr) KY_WUR;
/* The fingerprint of a join file: SHA-256 of its compact JSON, sorted members, hex. */
int host_json_sha256(const json_t *j, char out[65]) KY_WUR;
/* Exactly one PEM certificate, nothing else. */
bool host_one_pem_cert(const char *pem);
/* SHA-256 of the anchor certificate's public key, hex. */
int host_anchor_sha256(X509 *anchor, char out[65]) KY_WUR;
/* What the anchor signs for each unit of a join answer (its "number_sig"): the number the
 * anchor's host gave that unit, bound to the instance, the request and the unit id:
 *   "kyok-join-number-1\n" INSTANCE "\n" REQUEST_SHA256 "\n" UNIT_ID "\n" NUMBER
 * so that a changed answer cannot renumber the joining host's units. */
int host_number_msg(const char *instance, const char *req_hex, const char *uid, int number,
                    char *out, size_t outlen) KY_WUR;

/* host_join.c */
int host_join_request_main(int argc, char **argv);
int host_join_finish_main(int argc, char **argv);

#endif
