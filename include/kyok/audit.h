/* The audit log's line format and its check (docs/formats.md, "Audit log").
 *
 * One JSON object per line, members in this order, no blanks:
 *   {"seq":N,"prev":"<64 hex>","time":"YYYY-MM-DDTHH:MM:SS.mmmZ","event":"<name>",...}
 * seq counts from 1 over the unit's whole log (across files); prev is the lowercase hex
 * SHA-256 of the previous line's bytes without its newline (64 zeros before seq 1).
 * A "checkpoint" line ends with ,"sig":"<base64>"}: an ECDSA P-521 / SHA-512 signature
 * (DER) by the unit identity key over the line's bytes with that last member taken out
 * (the line up to ,"sig": then "}"). Through prev it covers every line before it.
 * A "file" line begins every file and carries the identity certificate ("cert": base64
 * DER), so each file can be checked on its own.
 *
 * Pure: no I/O. The daemon writes with it (unitd/audit.c), 'kyok audit verify' checks.
 */
#ifndef KYOK_AUDIT_H
#define KYOK_AUDIT_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>

#include "kyok/common.h"

#define KY_AUDIT_HASH_LEN   32
#define KY_AUDIT_LINE_MAX   8192 /* bytes of one line, newline excluded */
#define KY_AUDIT_SIG_MEMBER ",\"sig\":\""

/* A line being built, on the stack: members are appended in order; once one does not fit
 * every later call fails (KY_ERR_TOO_LARGE). */
struct ky_audit_line {
	size_t len;
	bool over;
	char s[KY_AUDIT_LINE_MAX + 2]; /* room for "}\n" */
};

/* Starts an empty list of members (no braces), to be put into a line later with
 * ky_audit_add_members. */
void ky_audit_members(struct ky_audit_line *l);
/* Starts the line: {"seq":..,"prev":..,"time":..,"event":".." (no closing brace). */
void ky_audit_begin(struct ky_audit_line *l, uint64_t seq, const uint8_t prev[KY_AUDIT_HASH_LEN],
                    const char *time, const char *event);
/* The same line in two parts, so that the part that does not depend on the line before can
 * be made first (the daemon makes it outside its lock): the head {"seq":..,"prev":".."
 * (returns its length, under KY_AUDIT_HEAD_MAX), and the body ,"time":..,"event":".."
 * that members and ky_audit_end complete. A line is its head and body, in that order. */
#define KY_AUDIT_HEAD_MAX 112
size_t ky_audit_head(char out[KY_AUDIT_HEAD_MAX], uint64_t seq,
                     const uint8_t prev[KY_AUDIT_HASH_LEN]);
void ky_audit_body(struct ky_audit_line *l, const char *time, const char *event);
/* ,"name":"value": the value escaped for JSON; bytes outside printable ASCII become '?'. */
void ky_audit_add_str(struct ky_audit_line *l, const char *name, const char *value);
void ky_audit_add_uint(struct ky_audit_line *l, const char *name, uint64_t value);
void ky_audit_add_bool(struct ky_audit_line *l, const char *name, bool value);
/* value JSON-escaped as above, without quotes or name (inside an array or object). */
void ky_audit_add_escaped(struct ky_audit_line *l, const char *value);
/* ,"name":<json> with json already encoded (an array or object). */
void ky_audit_add_json(struct ky_audit_line *l, const char *name, const char *json);
/* Appends members already encoded (",\"a\":1,..." or ""). */
void ky_audit_add_members(struct ky_audit_line *l, const char *members, size_t n);
/* Closes the object. KY_ERR_TOO_LARGE when anything did not fit. */
int ky_audit_end(struct ky_audit_line *l) KY_WUR;
/* Closed line -> signed checkpoint line: signs the bytes as they are, then replaces the
 * closing brace by ,"sig":"<base64 DER>"}. */
int ky_audit_sign(struct ky_audit_line *l, EVP_PKEY *key) KY_WUR;

int ky_audit_hash(const char *line, size_t n, uint8_t out[KY_AUDIT_HASH_LEN]) KY_WUR;
/* The same with a context kept by the caller (no allocation per line). */
int ky_audit_hash_in(EVP_MD_CTX *ctx, const char *line, size_t n,
                     uint8_t out[KY_AUDIT_HASH_LEN]) KY_WUR;
/* Time as the lines carry it, from a CLOCK_REALTIME reading. out: at least 32 bytes. */
void ky_audit_time(int64_t sec, long nsec, char *out, size_t outlen);

/* ---- the check ---- */

/* Decides whether a certificate found in the log (its "file" line) is the identity of
 * that unit: 0, or an error with why filled. */
typedef int (*ky_audit_trust_fn)(void *arg, const char *instance, const char *unit, X509 *cert,
                                 char *why, size_t whylen);

struct ky_audit_verifier;
/* pub: the identity key to check against (the log's certificates must hold it), or NULL
 * to take each "file" line's certificate once trust accepts it. from_start: the chain must
 * begin at seq 1 (a whole log), else it may begin anywhere (some files of it). */
int ky_audit_verifier_new(EVP_PKEY *pub, ky_audit_trust_fn trust, void *arg, bool from_start,
                          struct ky_audit_verifier **out) KY_WUR;
void ky_audit_verifier_free(struct ky_audit_verifier *v);
/* One line (without its newline). where names it in messages ("audit-00000002.jsonl:7");
 * first_in_file: the line begins a file. On failure: KY_ERR_AUDIT_LINE, _CHAIN or
 * _SIGNATURE (or a trust error) and why says what is wrong with which line. */
int ky_audit_verify_line(struct ky_audit_verifier *v, const char *where, bool first_in_file,
                         const char *line, size_t n, char *why, size_t whylen) KY_WUR;
/* After the last line: KY_ERR_AUDIT_UNSIGNED when lines follow the last checkpoint,
 * KY_ERR_AUDIT_LINE when there was no line. */
int ky_audit_verify_finish(struct ky_audit_verifier *v, char *why, size_t whylen) KY_WUR;

struct ky_audit_summary {
	uint64_t lines, checkpoints, first_seq, last_seq;
	bool clean_stop; /* the log ends with a stop line and the checkpoint after it */
};
void ky_audit_verifier_summary(const struct ky_audit_verifier *v, struct ky_audit_summary *s);

#endif
