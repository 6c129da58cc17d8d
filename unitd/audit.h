/* audit.c: the unit's audit trail (docs/formats.md, "Audit log").
 *
 * One process-wide log in data_dir/audit/audit-NNNNNNNN.jsonl: JSON lines, hash-chained
 * (seq, prev = SHA-256 of the line before), a checkpoint line signed by the unit identity
 * key at most every audit_checkpoint_ms, every UNITD_AUDIT_CKPT_LINES lines, before a
 * new file begins and at stop. Each start begins a new file, as does a file reaching
 * audit_max_bytes; its first line carries the identity certificate and links to the last
 * line of the file before. A line has its place in the chain and its room reserved on disk
 * before the request it records is answered, and is written within about a millisecond
 * by the log's thread; lines written with sync (intents, commands, checkpoints) are on
 * disk when the call returns. Every write fails with KY_ERR_AUDIT_UNAVAILABLE when the
 * line cannot be taken, and the caller refuses what it records. Until _open and after
 * _close every call is a no-op. */
#ifndef KYOK_UNITD_AUDIT_H
#define KYOK_UNITD_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kyok/ceremony.h"
#include "kyok/common.h"

struct unitd_config;
struct unitd_datadir;

#define UNITD_AUDIT_CKPT_LINES 10000u

enum unitd_audit_phase {
	UNITD_AUDIT_INTENT, /* about to act: in the file first (commands: on disk) */
	UNITD_AUDIT_DONE,   /* the outcome (or the refusal of what never got as far) */
};
/* Opens the log, writes the file, start and unseal lines (created: the state was made at
 * this start), starts the checkpoint thread. On error the unit must not start. */
int unitd_audit_open(const struct unitd_config *cfg, const struct unitd_datadir *dd,
                     const struct ky_domain *d, bool created, char *err, size_t errlen) KY_WUR;
/* Stop line and final checkpoint; stops the thread. */
void unitd_audit_close(void);
/* The administrators' names and SKIs, copied out of the state under its lock, so that the
 * audit line of a command refused before it verified is made without the lock. */
struct unitd_audit_admins {
	size_t n;
	struct {
		char name[KY_ADMIN_NAME_MAX + 1];
		uint8_t ski[KY_SKI_LEN];
	} a[KY_MAX_ADMINS];
};
void unitd_audit_admins_of(const struct ky_domain *d, struct unitd_audit_admins *out);
/* An admin command. v: the verified command (op, counter, signers from it: nothing is
 * decoded again; adm may be NULL); NULL when it was refused before it verified: then what
 * the CMS claims, each signer named from adm when it is an administrator. from is the
 * client address.
 * INTENT, once the command checked out on a copy and before anything acts on it: 0, or
 * KY_ERR_AUDIT_UNAVAILABLE with detail set (refuse: nothing changed).
 * DONE, with outcome (an error code, detail its reason) and acted (the new state was
 * written): returns the code to answer: outcome, or KY_ERR_AUDIT_UNAVAILABLE with detail
 * set when the line cannot be written and the command did not act. A command that acted
 * keeps its answer (its intent line is in the log). */
int unitd_audit_command(enum unitd_audit_phase phase, const struct unitd_audit_admins *adm,
                        const struct ky_verified *v, const uint8_t *cms, size_t n, const char *from,
                        int outcome, bool acted, char *detail, size_t detaillen) KY_WUR;
/* A key API request: route is the matched pattern ("-" when none), apikey the caller's API
 * key id ("" when unknown), key the key id in the path (""), status and err the answer
 * (INTENT: 0 and 0). Never pass a token, a secret or a body. */
int unitd_audit_api(enum unitd_audit_phase phase, const char *method, const char *route,
                    const char *action, const char *apikey, const char *key, unsigned status,
                    int err) KY_WUR;
/* The sealed state was written (after the write): next counter and admin count. */
void unitd_audit_seal(const struct ky_domain *d);

#endif
