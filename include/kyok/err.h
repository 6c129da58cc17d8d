/* kyok error codes: written once, as an X-macro.
 *
 * Each row: X(NAME, slug, exit code, HTTP status, message)
 *   slug     stable name used on the wire and in JSON output
 *   exit     process exit status the CLI uses for it
 *   http     status a unit answers with
 *   message  lowercase, says what was wrong (callers add the subject)
 */
#ifndef KYOK_ERR_H
#define KYOK_ERR_H

#define KY_EXIT_INTERNAL 1
#define KY_EXIT_USAGE    2
#define KY_EXIT_INPUT    3
#define KY_EXIT_REFUSED  4
#define KY_EXIT_STATE    5
#define KY_EXIT_UNIT     6

#define KY_ERRORS(X)                                                                               \
	X(OK, "ok", 0, 200, "success")                                                             \
	X(INTERNAL, "internal", KY_EXIT_INTERNAL, 500, "internal error")                           \
	X(NOMEM, "out-of-memory", KY_EXIT_INTERNAL, 500, "out of memory")                          \
	X(CRYPTO, "crypto-failure", KY_EXIT_INTERNAL, 500, "cryptographic operation failed")       \
	X(USAGE, "usage", KY_EXIT_USAGE, 400, "wrong usage")                                       \
	X(CANCELLED, "cancelled", KY_EXIT_USAGE, 400, "cancelled")                                 \
	X(IO, "io", KY_EXIT_INPUT, 500, "cannot read or write file")                               \
	X(NOT_FOUND, "not-found", KY_EXIT_INPUT, 404, "not found")                                 \
	X(EXISTS, "exists", KY_EXIT_INPUT, 409, "already exists")                                  \
	X(MALFORMED, "malformed", KY_EXIT_INPUT, 400, "malformed input")                           \
	X(TOO_LARGE, "too-large", KY_EXIT_INPUT, 413, "input too large")                           \
	X(CONFIG, "config", KY_EXIT_INPUT, 500, "invalid configuration")                           \
	X(PORT_IN_USE, "port-in-use", KY_EXIT_UNIT, 500,                                           \
	  "the port is in use by another program: stop that program, or give the crypto unit "     \
	  "another port ('listen' in its unit.conf)")                                              \
	X(WRONG_PASSWORD, "wrong-password", KY_EXIT_INPUT, 400, "wrong password")                  \
	X(NOT_PRIVATE, "not-private", KY_EXIT_INPUT, 400,                                          \
	  "open to other users: a secret must be readable and writable by its owner only")         \
	X(WEAK_PASSWORD, "weak-password", KY_EXIT_INPUT, 400,                                      \
	  "password too short: use at least 8 characters")                                         \
	X(TAMPERED, "tampered", KY_EXIT_INPUT, 400, "file is damaged or was tampered with")        \
	X(KEY_BLOCK_DAMAGED, "key-block-damaged", KY_EXIT_INPUT, 400,                              \
	  "the encrypted private key in the file is damaged (its checksum does not match): "       \
	  "restore the file from a backup")                                                        \
	X(METADATA_ALTERED, "metadata-altered", KY_EXIT_INPUT, 400,                                \
	  "readable metadata does not match the encrypted copy: file was altered")                 \
	X(NOT_KEY_PART, "not-a-key-part-file", KY_EXIT_INPUT, 400, "not a kyok key part file")     \
	X(NOT_SIGKEY, "not-a-signature-key-file", KY_EXIT_INPUT, 400,                              \
	  "not a kyok signature key file")                                                         \
	X(SIGKEY_IN_CARD, "signature-key-in-card", KY_EXIT_INPUT, 400,                             \
	  "this signature key is held by an EP11 smart card: this command signs only with key "    \
	  "files and tokens")                                                                      \
	X(EMPTY_FILE, "empty-file", KY_EXIT_INPUT, 400,                                            \
	  "the file is empty: it was truncated or never written; restore it from a backup")        \
	X(NOT_COMMAND, "not-a-command-file", KY_EXIT_INPUT, 400, "not a kyok signed command file") \
	X(STATE_CORRUPT, "state-corrupt", KY_EXIT_INTERNAL, 500,                                   \
	  "sealed unit state cannot be opened: wrong seal key or damaged file")                    \
	X(SEAL_KEY_REPLACED, "seal-key-replaced", KY_EXIT_STATE, 500,                              \
	  "sealed unit state was sealed under a seal key that no longer exists: it is older than " \
	  "the unit's last zeroize (restored from a backup?) and can never be opened")             \
	X(SEAL_BACKEND_MISMATCH, "seal-backend-mismatch", KY_EXIT_INPUT, 500,                      \
	  "sealed unit state was sealed by another sealing backend than unit.conf's 'seal'")       \
	X(SEAL_TPM_KEY_MISSING, "seal-key-not-in-tpm", KY_EXIT_STATE, 500,                         \
	  "this TPM does not hold the unit's seal key: the data directory was sealed by another "  \
	  "TPM (copied from another host?)")                                                       \
	X(SEAL_TOKEN_KEY_MISSING, "seal-key-not-in-token", KY_EXIT_STATE, 500,                     \
	  "this PKCS#11 token does not hold the unit's seal key: the data directory was sealed "   \
	  "with another token (copied from another host?)")                                        \
	X(SEAL_DEVICE, "seal-device-failure", KY_EXIT_UNIT, 500,                                   \
	  "the TPM or PKCS#11 token that seals the unit state failed or cannot be reached")        \
	X(SEAL_TOKEN_PIN, "seal-token-pin", KY_EXIT_INPUT, 500,                                    \
	  "the PKCS#11 token refused the PIN in the PIN file")                                     \
	X(UNREACHABLE, "unit-unreachable", KY_EXIT_UNIT, 503, "crypto unit cannot be reached")     \
	X(IDENTITY_CHANGED, "unit-identity-changed", KY_EXIT_UNIT, 502,                            \
	  "crypto unit identity differs from the one pinned on first contact")                     \
	X(BAD_REPLY, "bad-reply", KY_EXIT_UNIT, 502,                                               \
	  "crypto unit reply is malformed or not signed by "                                       \
	  "the unit")                                                                              \
	X(INSTANCE_DOWN, "instance-not-running", KY_EXIT_UNIT, 503, "instance is not running")     \
	X(NO_UNITS, "no-units-selected", KY_EXIT_USAGE, 400,                                       \
	  "no crypto units selected: run 'kyok tke cryptounit-add'")                               \
	X(NO_SIGNERS, "no-signers-selected", KY_EXIT_USAGE, 400,                                   \
	  "no signature keys selected: run 'kyok tke sigkey-sel'")                                 \
	X(NOT_COMMAND_OP, "unknown-command", KY_EXIT_INPUT, 400, "unknown command operation")      \
	X(BAD_COMMAND, "bad-command", KY_EXIT_INPUT, 400, "malformed signed command")              \
	X(TOO_MANY_SIGNATURES, "too-many-signatures", KY_EXIT_INPUT, 400,                          \
	  "signed command carries more than 8 signatures: one per administrator at most")          \
	X(TOO_MANY_CERTIFICATES, "too-many-certificates", KY_EXIT_INPUT, 400,                      \
	  "signed command carries more than 8 certificates: one per administrator at most")        \
	X(TOO_MANY_DIGESTS, "too-many-digest-algorithms", KY_EXIT_INPUT, 400,                      \
	  "signed command names more than 8 digest algorithms: kyok signs with SHA-512 only")      \
	X(DUPLICATE_SIGNATURE, "duplicate-signature", KY_EXIT_INPUT, 400,                          \
	  "signed command carries the same signature twice: remove the copy")                      \
	X(WRONG_INSTANCE, "wrong-instance", KY_EXIT_REFUSED, 403,                                  \
	  "command is for another service instance")                                               \
	X(WRONG_UNIT, "wrong-unit", KY_EXIT_REFUSED, 403, "command is for another crypto unit")    \
	X(WRONG_INCARNATION, "wrong-incarnation", KY_EXIT_REFUSED, 409,                            \
	  "command is for another incarnation of the crypto unit: its state was created again "    \
	  "since the command was prepared; prepare the command again")                             \
	X(WRONG_COUNTER, "wrong-transaction-counter", KY_EXIT_REFUSED, 409,                        \
	  "wrong transaction counter: command replayed or out of date")                            \
	X(STATE_CHANGED, "state-changed", KY_EXIT_REFUSED, 409,                                    \
	  "another command changed the crypto unit while this one was being verified: prepare "    \
	  "it again")                                                                              \
	X(IMPRINT_CLAIM_REQUIRED, "imprint-claim-required", KY_EXIT_REFUSED, 403,                  \
	  "the crypto unit is in imprint mode and accepts commands only with the instance's "      \
	  "imprint credential: the operator who created the instance holds the file "              \
	  "(imprint-credential.pem in the instance directory) and hands it to the "                \
	  "administrator, who gives it with --imprint-credential FILE")                            \
	X(CREDENTIAL_EXPOSED, "credential-exposed", KY_EXIT_INPUT, 400,                            \
	  "secret file may be read or written by others than its owner: make it yours, mode "      \
	  "0600")                                                                                  \
	X(IMPRINT_CLAIM_INVALID, "imprint-claim-invalid", KY_EXIT_REFUSED, 403,                    \
	  "the imprint claim does not verify: the credential is not this instance's imprint "      \
	  "credential, or the command was changed after it was claimed")                           \
	X(BAD_SIGNATURE, "bad-signature", KY_EXIT_REFUSED, 403,                                    \
	  "a signature on the command does not verify")                                            \
	X(WRONG_DIGEST, "wrong-digest", KY_EXIT_REFUSED, 403,                                      \
	  "a signature on the command uses another digest than SHA-512: sign it with SHA-512 "     \
	  "(openssl cms -sign -md sha512)")                                                        \
	X(SIGNER_NOT_ADMIN, "signer-not-admin", KY_EXIT_REFUSED, 403,                              \
	  "command signed by a key that is not an installed administrator")                        \
	X(DUPLICATE_SIGNER, "duplicate-signer", KY_EXIT_REFUSED, 403,                              \
	  "the same administrator signed more than once: it counts once, not enough signatures")   \
	X(NOT_ENOUGH_SIGNATURES, "not-enough-signatures", KY_EXIT_REFUSED, 403,                    \
	  "not enough administrator signatures")                                                   \
	X(DUPLICATE_ADMIN, "duplicate-admin", KY_EXIT_STATE, 409,                                  \
	  "administrator already installed (same key or same name)")                               \
	X(ADMIN_TABLE_FULL, "admin-table-full", KY_EXIT_STATE, 409,                                \
	  "administrator table full: at most 8 administrators")                                    \
	X(ADMIN_NAME, "admin-name-invalid", KY_EXIT_INPUT, 400,                                    \
	  "administrator name must be 1 to 30 printable characters")                               \
	X(ADMIN_NOT_FOUND, "admin-not-found", KY_EXIT_STATE, 404,                                  \
	  "no such administrator installed")                                                       \
	X(BAD_CERT, "bad-admin-certificate", KY_EXIT_INPUT, 400,                                   \
	  "administrator certificate invalid: must be a self-signed P-521 (or P-384) certificate " \
	  "with a subject key identifier")                                                         \
	X(IMPRINT_MODE, "imprint-mode", KY_EXIT_STATE, 409,                                        \
	  "not allowed in imprint mode: set thresholds first (cryptounit-thrhld-set)")             \
	X(NOT_IMPRINT_MODE, "not-imprint-mode", KY_EXIT_STATE, 409,                                \
	  "allowed only in imprint mode: the crypto unit has left imprint mode")                   \
	X(THRESHOLD_RANGE, "threshold-range", KY_EXIT_INPUT, 400, "thresholds must be 1 to 8")     \
	X(THRESHOLD_ABOVE_ADMINS, "threshold-above-admins", KY_EXIT_STATE, 409,                    \
	  "threshold above the number of installed administrators")                                \
	X(BELOW_THRESHOLD, "removal-below-threshold", KY_EXIT_STATE, 409,                          \
	  "removal would leave fewer administrators than a threshold")                             \
	X(REGISTER_STATE, "wrong-register-state", KY_EXIT_STATE, 409,                              \
	  "master key register is in the wrong state for this command")                            \
	X(VP_MISMATCH, "vp-mismatch", KY_EXIT_STATE, 409,                                          \
	  "verification pattern does not match the master key register")                           \
	X(SAME_KEY, "same-as-current", KY_EXIT_STATE, 409,                                         \
	  "new master key equals the current master key")                                          \
	X(KEY_PARTS, "key-parts", KY_EXIT_INPUT, 400, "a master key needs 2 to 8 key parts")       \
	X(PART_ZERO, "key-part-zero", KY_EXIT_INPUT, 400,                                          \
	  "a key part is all zero: it adds nothing to the master key; make parts with "            \
	  "mk-add --random")                                                                       \
	X(PART_DUPLICATE, "key-part-duplicate", KY_EXIT_INPUT, 400,                                \
	  "two key parts are the same: they cancel out, and whoever holds one knows the "          \
	  "other; load independently made parts")                                                  \
	X(PART_VALUE_WEAK, "key-part-value-weak", KY_EXIT_INPUT, 400,                              \
	  "key part value is one byte repeated (all zero included): use --random, or a value "     \
	  "from a good random source")                                                             \
	X(MK_ZERO, "master-key-zero", KY_EXIT_INPUT, 400,                                          \
	  "the key parts combine to an all-zero master key: load independently made parts")        \
	X(MK_EQUALS_PART, "master-key-equals-part", KY_EXIT_INPUT, 400,                            \
	  "the master key equals one key part (the others cancel out): that part's owner alone "   \
	  "would know it; load independently made parts")                                          \
	X(METHOD_NOT_ALLOWED, "method-not-allowed", KY_EXIT_USAGE, 405,                            \
	  "method not allowed for this path")                                                      \
	X(RECORD_TAMPERED, "record-tampered", KY_EXIT_STATE, 500,                                  \
	  "stored record failed authentication: not served")                                       \
	X(MK_MISMATCH, "master-key-mismatch", KY_EXIT_STATE, 503,                                  \
	  "master key mismatch: this crypto unit does not hold the master key this record is "     \
	  "under")                                                                                 \
	X(KEY_LIMIT, "key-limit", KY_EXIT_STATE, 409, "key limit reached")                         \
	X(STORE, "store-failure", KY_EXIT_INTERNAL, 500, "key storage operation failed")           \
	X(STORE_FULL, "storage-full", KY_EXIT_UNIT, 503,                                           \
	  "no space left on the device that holds key storage: nothing was written; free space "   \
	  "there, then retry")                                                                     \
	X(STORE_BUSY, "store-busy", KY_EXIT_UNIT, 503,                                             \
	  "key storage is locked by another writer: retry")                                        \
	X(TLS, "tls-failure", KY_EXIT_UNIT, 502,                                                   \
	  "the TLS connection to the crypto unit failed: its certificate is not trusted by the "   \
	  "CA file (--cacert, $KYOK_CA_FILE), names another host, or the handshake failed")        \
	X(STORE_LOCKED_AT_START, "store-locked-at-start", KY_EXIT_UNIT, 503,                       \
	  "key storage stayed locked by another writer for as long as the crypto unit waits at "   \
	  "start: end the other program's write transaction, or raise store_lock_wait_ms in the "  \
	  "unit.conf")                                                                             \
	X(STORE_PASSWORD, "storage-uri-password", KY_EXIT_USAGE, 400,                              \
	  "the key storage URI holds a password: take it out and put it in a password file "       \
	  "(PGPASSFILE or ~/.pgpass of the user the unit runs as), or use a client certificate")   \
	X(STORE_UNREACHABLE, "storage-unreachable", KY_EXIT_UNIT, 503,                             \
	  "key storage server cannot be reached or refused the connection (the unit log names "    \
	  "the server and its answer): a change in flight may or may not have been made; check "   \
	  "the server, then read before you retry")                                                \
	X(STORE_SCHEMA, "store-schema", KY_EXIT_INTERNAL, 500,                                     \
	  "key storage has an unknown schema version: written by a newer kyok?")                   \
	X(STORAGE_ROLLBACK, "storage-rolled-back", KY_EXIT_STATE, 503,                             \
	  "key storage is older than this crypto unit has seen it (restored from a backup or "     \
	  "replaced): not served; if the restore was meant, the administrators accept it with "    \
	  "kyok tke storage-accept")                                                               \
	X(STORAGE_MISSING, "storage-missing", KY_EXIT_STATE, 503,                                  \
	  "key storage is missing or empty, but this crypto unit has held records in it: not "     \
	  "served as new storage; restore the file from a backup")                                 \
	X(STORE_DAMAGED, "storage-damaged", KY_EXIT_STATE, 503,                                    \
	  "key storage file is damaged or was truncated (not a whole database any more): not "     \
	  "served; stop the units and restore the file from a backup")                             \
	X(BACKUP_NO_MANIFEST, "backup-manifest-missing", KY_EXIT_INPUT, 400,                       \
	  "the backup has no manifest beside it (FILE.manifest.json, written by kyok backup): "    \
	  "restore a backup together with its manifest")                                           \
	X(BACKUP_MISMATCH, "backup-does-not-match-manifest", KY_EXIT_INPUT, 400,                   \
	  "the backup file does not match its manifest (digest or contents differ): it was "       \
	  "changed or truncated after kyok backup wrote it; use another backup")                   \
	X(BACKUP_WRONG_INSTANCE, "backup-of-another-instance", KY_EXIT_INPUT, 400,                 \
	  "the backup is of another service instance: restore only a backup of this instance")     \
	X(UNITS_RUNNING, "units-running", KY_EXIT_STATE, 409,                                      \
	  "crypto units of the instance are running: stop them before key storage is replaced")    \
	X(BACKUP_NOT_SQLITE, "backup-needs-sqlite-storage", KY_EXIT_USAGE, 400,                    \
	  "kyok backup and kyok restore copy SQLite key storage (store = sqlite:PATH) only")       \
	X(LEDGER_TAMPERED, "storage-digest-tampered", KY_EXIT_STATE, 503,                          \
	  "key storage digest failed authentication (altered by hand, or made under another "      \
	  "integrity key): not served")                                                            \
	X(LEDGER_MISMATCH, "storage-digest-mismatch", KY_EXIT_STATE, 503,                          \
	  "key storage does not match its digest: a record was rolled back, deleted or copied "    \
	  "by hand; not served")                                                                   \
	X(LEDGER_KEY, "storage-digest-key", KY_EXIT_INTERNAL, 500,                                 \
	  "key storage has a digest but no integrity key was given: write refused")                \
	X(RECORD_STALE, "record-rolled-back", KY_EXIT_STATE, 500,                                  \
	  "stored record is not the one last written (an older copy, or a copy made by hand): "    \
	  "not served")                                                                            \
	X(RECORD_MISSING, "record-deleted", KY_EXIT_STATE, 500,                                    \
	  "stored record was deleted by hand: key storage no longer holds what was last written")  \
	X(CONFLICT, "conflict", KY_EXIT_STATE, 409, "record was changed concurrently: retry")      \
	X(KEY_STATE, "key-state", KY_EXIT_STATE, 409, "key state does not allow this action")      \
	X(KEY_NOT_ACTIVE, "key-not-active", KY_EXIT_STATE, 409, "key is not active")               \
	X(KEY_DESTROYED, "key-destroyed", KY_EXIT_STATE, 410, "key is destroyed")                  \
	X(KEY_NOT_DESTROYED, "key-not-destroyed", KY_EXIT_STATE, 409,                              \
	  "key is not destroyed: only destroyed keys can be restored or purged")                   \
	X(KEY_NOT_ROOT, "key-not-root", KY_EXIT_INPUT, 400,                                        \
	  "action needs a root key: standard keys do not wrap or rotate")                          \
	X(KEY_MATERIAL, "key-material", KY_EXIT_INPUT, 400,                                        \
	  "key material has the wrong length: root keys take 16, 24 or 32 bytes")                  \
	X(KEY_NAME, "key-name", KY_EXIT_INPUT, 400,                                                \
	  "key name must be 2 to 90 printable characters, description at most 240")                \
	X(ROTATE_MATERIAL, "rotate-material", KY_EXIT_INPUT, 400,                                  \
	  "rotation of an imported key needs new key material; a generated key takes none")        \
	X(DUAL_AUTH_OFF, "dual-auth-not-enabled", KY_EXIT_STATE, 409,                              \
	  "dual authorization delete policy is not enabled on this key")                           \
	X(DUAL_AUTH_REQUIRED, "dual-auth-required", KY_EXIT_STATE, 409,                            \
	  "key needs dual authorization: another user must set it for deletion first (valid 7 "    \
	  "days)")                                                                                 \
	X(DUAL_AUTH_SAME_USER, "dual-auth-same-user", KY_EXIT_REFUSED, 403,                        \
	  "the user who set the key for deletion cannot also delete it")                           \
	X(RESTORE_EXPIRED, "restore-expired", KY_EXIT_STATE, 409,                                  \
	  "key was destroyed more than 30 days ago: it can no longer be restored")                 \
	X(PURGE_TOO_EARLY, "purge-too-early", KY_EXIT_STATE, 409,                                  \
	  "key can be purged only 4 hours after it was destroyed")                                 \
	X(WRAP_MALFORMED, "ciphertext-malformed", KY_EXIT_INPUT, 400,                              \
	  "ciphertext is malformed: not a kyok wrapped key")                                       \
	X(UNWRAP, "unwrap-failed", KY_EXIT_INPUT, 422,                                             \
	  "ciphertext cannot be unwrapped with this key")                                          \
	X(WEAK_KEY_FILE, "weak-key-file", KY_EXIT_INPUT, 400,                                      \
	  "private key protected by a weak password key derivation: re-encrypt it with scrypt "    \
	  "(N >= 16384, r >= 8, p >= 5) or PBKDF2-SHA256 (>= 600,000 iterations) and AES-256")     \
	X(NO_MASTER_KEY, "no-master-key", KY_EXIT_STATE, 503,                                      \
	  "this crypto unit has no master key: the instance is not initialised or was zeroized")   \
	X(NOT_REENCIPHERED, "not-reenciphered", KY_EXIT_STATE, 409,                                \
	  "key storage still has records under the current master key: run 'kyok tke "             \
	  "cryptounit-mk-rotate' to re-encipher them first")                                       \
	X(RECORDS_UNDER_NEW, "records-under-new-mk", KY_EXIT_STATE, 409,                           \
	  "key storage has records under the new master key: clearing the new register would "     \
	  "lose them")                                                                             \
	X(RECORDS_UNDER_CURRENT, "records-under-current-mk", KY_EXIT_STATE, 409,                   \
	  "key storage has records under the current master key: clearing the current register "   \
	  "would make them unreadable (cryptounit-zeroize crypto-shreds on purpose)")              \
	X(REENCIPHER_RUNNING, "reencipher-running", KY_EXIT_STATE, 409,                            \
	  "key storage re-encipherment is running on this crypto unit: wait for it to finish")     \
	X(NO_STORE, "no-key-storage", KY_EXIT_STATE, 409,                                          \
	  "this crypto unit has no key storage configured: set 'store' in its unit.conf")          \
	X(AUDIT_UNAVAILABLE, "audit-unavailable", KY_EXIT_UNIT, 503,                               \
	  "the crypto unit cannot write its audit log, so it refuses the request and changes "     \
	  "nothing: free disk space or fix the audit directory's permissions")                     \
	X(AUDIT_LINE, "audit-line-malformed", KY_EXIT_STATE, 400,                                  \
	  "audit log line is not a kyok audit line (cut, or not from a kyok unit)")                \
	X(AUDIT_CHAIN, "audit-chain-broken", KY_EXIT_STATE, 400,                                   \
	  "audit log chain is broken: a line was removed, inserted, moved or edited")              \
	X(AUDIT_SIGNATURE, "audit-signature-bad", KY_EXIT_STATE, 400,                              \
	  "audit checkpoint signature does not verify under the unit's identity key")              \
	X(AUDIT_UNSIGNED, "audit-unsigned", KY_EXIT_STATE, 400,                                    \
	  "audit lines are not covered by a signed checkpoint (the unit is running or crashed): "  \
	  "verify again after its next checkpoint")                                                \
	X(UNAUTHORIZED, "unauthorized", KY_EXIT_REFUSED, 401,                                      \
	  "missing, invalid or expired bearer token")                                              \
	X(FORBIDDEN, "forbidden", KY_EXIT_REFUSED, 403,                                            \
	  "not allowed: the API key's role or an instance policy forbids this action")             \
	X(APIKEY_INVALID, "apikey-invalid", KY_EXIT_REFUSED, 400,                                  \
	  "the API key is unknown or was revoked")                                                 \
	X(INSTANCE_HEADER, "instance-header", KY_EXIT_USAGE, 400,                                  \
	  "header Bluemix-Instance is missing or malformed: it must name the service instance")    \
	X(UNSUPPORTED, "unsupported", KY_EXIT_USAGE, 400, "not supported by kyok")                 \
	X(QUERY_PARAM, "query-parameter-unsupported", KY_EXIT_USAGE, 400,                          \
	  "query parameter not taken by this request")                                             \
	X(BODY_MEMBER, "body-member-unsupported", KY_EXIT_USAGE, 400,                              \
	  "body member not taken by this request")                                                 \
	X(REQUEST_ID_INVALID, "request-id-invalid", KY_EXIT_USAGE, 400,                            \
	  "header Idempotency-Key is malformed: use 1 to 128 letters, digits, '-', '_', '.', ':'") \
	X(REQUEST_ID_REUSED, "request-id-reused", KY_EXIT_INPUT, 422,                              \
	  "this request id was used for another request: send a new id with a new request")        \
	X(REQUEST_REPLY_GONE, "request-reply-unavailable", KY_EXIT_STATE, 409,                     \
	  "the request with this id was carried out already, but its reply can no longer be "      \
	  "read: read the current state instead of sending it again")                              \
	X(RECIPIENT_SELF, "recipient-is-self", KY_EXIT_REFUSED, 403,                               \
	  "mk-export recipient is the exporting crypto unit itself: name another unit")            \
	X(RECIPIENT_ADMIN, "recipient-is-admin", KY_EXIT_REFUSED, 403,                             \
	  "mk-export recipient is an administrator's certificate: the master key goes only to "    \
	  "the importer key of a crypto unit")                                                     \
	X(RECIPIENT_INSTANCE, "recipient-other-instance", KY_EXIT_REFUSED, 403,                    \
	  "mk-export recipient is a crypto unit of another service instance")                      \
	X(RECIPIENT_NOT_UNIT, "recipient-not-certified", KY_EXIT_REFUSED, 403,                     \
	  "mk-export recipient does not chain importer -> identity -> this instance's unit "       \
	  "trust anchor: not a genuine crypto unit of the instance")                               \
	X(SOURCE_NOT_UNIT, "source-not-certified", KY_EXIT_REFUSED, 403,                           \
	  "mk-import envelope does not come from a crypto unit of this instance: its sender "      \
	  "does not chain to the unit trust anchor or its transfer signature does not verify")     \
	X(ANCHOR_MISMATCH, "anchor-mismatch", KY_EXIT_INPUT, 500,                                  \
	  "the unit trust anchor named in the configuration is not the one sealed in the unit "    \
	  "state")                                                                                 \
	X(CARD_EEPROM_DAMAGED, "card-eeprom-damaged", KY_EXIT_INPUT, 500,                          \
	  "the card's EEPROM file is damaged, was altered, or belongs to another chip key: the "   \
	  "card cannot be used; restore the file and its chip key together from a backup")         \
	X(CARD_CHIP_KEY_MISSING, "card-chip-key-missing", KY_EXIT_INPUT, 500,                      \
	  "the card's EEPROM file exists but its chip key file does not: restore the chip key "    \
	  "file, or remove both files to start a blank card")                                      \
	X(CARD_EEPROM_MISSING, "card-eeprom-missing", KY_EXIT_INPUT, 500,                          \
	  "the card's chip key file exists but its EEPROM file does not: restore the EEPROM "      \
	  "file, or remove both files to start a blank card")                                      \
	X(CARD_READER_UNREACHABLE, "card-reader-unreachable", KY_EXIT_UNIT, 503,                   \
	  "the virtual card reader does not accept the card: start pcscd with a vpcd reader on "   \
	  "this host and port, or name the right --host and --port")                               \
	X(PCSC_UNAVAILABLE, "pcsc-unavailable", KY_EXIT_UNIT, 503,                                 \
	  "the PC/SC service does not answer: start pcscd")                                        \
	X(CARD_NO_READER, "card-reader-missing", KY_EXIT_INPUT, 404,                               \
	  "no such card reader: list the readers and name one that is connected")                  \
	X(CARD_ABSENT, "card-absent", KY_EXIT_STATE, 409,                                          \
	  "no card in the reader: insert the card")                                                \
	X(CARD_REMOVED, "card-removed", KY_EXIT_STATE, 409,                                        \
	  "the card was removed or reset since it was opened: open it again and enter its PIN "    \
	  "again")                                                                                 \
	X(CARD_BUSY, "card-in-use", KY_EXIT_STATE, 409,                                            \
	  "another program holds the card: close it and try again")                                \
	X(CARD_PROTOCOL, "card-protocol", KY_EXIT_UNIT, 502,                                       \
	  "the card or its reader answered outside the protocol: check the reader and the card")   \
	X(CARD_PIN_WRONG, "card-pin-wrong", KY_EXIT_REFUSED, 403,                                  \
	  "wrong card PIN: the card counts every wrong PIN and blocks itself at its limit")        \
	X(CARD_BLOCKED, "card-blocked", KY_EXIT_REFUSED, 403,                                      \
	  "the card is blocked after too many wrong PINs: an EP11 card is unblocked by a CA "      \
	  "card of its zone, a CA card never")                                                     \
	X(TOKEN_MODULE, "token-module", KY_EXIT_INPUT, 400,                                        \
	  "the PKCS#11 module cannot be loaded: give the absolute path of the token's module "     \
	  "(e.g. /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so)")                                     \
	X(TOKEN_NOT_FOUND, "token-not-found", KY_EXIT_INPUT, 404,                                  \
	  "no token with that label is present: insert it, or check the label with "               \
	  "'pkcs11-tool --module MODULE --list-token-slots'")                                      \
	X(TOKEN_OTHER, "token-other-serial", KY_EXIT_INPUT, 400,                                   \
	  "the token with that label has another serial number than the one the signature key "    \
	  "file names: it is another token; insert the right one")                                 \
	X(TOKEN_PIN, "token-wrong-pin", KY_EXIT_INPUT, 400, "wrong token PIN")                     \
	X(TOKEN_PIN_LOCKED, "token-pin-locked", KY_EXIT_INPUT, 400,                                \
	  "the token's user PIN is locked: unblock it with the token's own tools (SO PIN or PUK)") \
	X(TOKEN_KEY_MISSING, "token-key-missing", KY_EXIT_INPUT, 404,                              \
	  "the token holds no private key with the id the signature key file names: wrong token, " \
	  "or the key was deleted")                                                                \
	X(TOKEN_KEY_EXTRACTABLE, "token-key-extractable", KY_EXIT_REFUSED, 403,                    \
	  "the private key in the token can be, or once could be, read out of it (it is not "      \
	  "sensitive, is extractable, or was not always so): only a key generated in the token "   \
	  "as sensitive and never extractable signs; make a new one with 'kyok tke sigkey-add "    \
	  "--token-module'")                                                                       \
	X(TOKEN_MECHANISM, "token-mechanism", KY_EXIT_INPUT, 400,                                  \
	  "the token cannot do what is asked (ECDSA P-521 key generation and signing): use "       \
	  "another token or a signature key file")                                                 \
	X(TOKEN_DEVICE, "token-failure", KY_EXIT_INPUT, 500,                                       \
	  "the token failed: check that it is inserted and works ('pkcs11-tool --module MODULE "   \
	  "--list-token-slots')")                                                                  \
	X(TOKEN_SIGNATURE, "token-bad-signature", KY_EXIT_INPUT, 500,                              \
	  "the token's signature does not verify under the certificate of the signature key "      \
	  "file: the key in the token is not the one the file was made with")                      \
	X(CARD_PIN_NEEDED, "card-pin-needed", KY_EXIT_REFUSED, 403,                                \
	  "the card needs its PIN verified first: enter the PIN (a CA card: both PINs)")           \
	X(CARD_NOT_ALLOWED, "card-not-allowed", KY_EXIT_REFUSED, 403,                              \
	  "the card refuses the command now: it is the wrong kind of card, or of another zone, "   \
	  "or not blank where a blank card is needed")                                             \
	X(CARD_BAD_DATA, "card-bad-data", KY_EXIT_REFUSED, 403,                                    \
	  "the card refuses what it was given: a certificate or signature that does not verify, "  \
	  "or one made for another card")                                                          \
	X(CARD_WRITE, "card-write-failed", KY_EXIT_UNIT, 503,                                      \
	  "the card could not store the change: nothing changed on it; check the card")            \
	X(CARD_WRONG_KIND, "card-wrong-kind", KY_EXIT_INPUT, 409,                                  \
	  "the card in the reader is not the kind of card the command needs: insert the right "    \
	  "card ('kyok scup show' tells which card is where)")                                     \
	X(CARD_OTHER_ZONE, "card-other-zone", KY_EXIT_REFUSED, 403,                                \
	  "the two cards are of different smart card zones: use the CA card of the EP11 "          \
	  "card's own zone")                                                                       \
	X(CARD_PIN_MISMATCH, "card-pin-mismatch", KY_EXIT_USAGE, 400,                              \
	  "the two entries of the new PIN differ: nothing was changed; enter it again")            \
	X(TOKEN_PART_MALFORMED, "token-part-malformed", KY_EXIT_INPUT, 400,                        \
	  "token key part is not a well-formed TokenKeyPart (DER: version, 32-byte recipient, "    \
	  "originator key, 40-byte wrapped part): make it again with the token")                   \
	X(TOKEN_PART_VERSION, "token-part-version", KY_EXIT_INPUT, 400,                            \
	  "token key part has a version this unit does not know (only 1): make it again with "     \
	  "this kyok")                                                                             \
	X(TOKEN_PART_OTHER_UNIT, "token-part-other-unit", KY_EXIT_INPUT, 400,                      \
	  "token key part was made for another unit's importer certificate: make it again for "    \
	  "this unit's importer certificate")                                                      \
	X(TOKEN_PART_CURVE, "token-part-curve", KY_EXIT_INPUT, 400,                                \
	  "token key part's originator key is not a valid EC P-521 key written as the format "     \
	  "says (namedCurve secp521r1, uncompressed point): make it again with a P-521 "           \
	  "ephemeral key")                                                                         \
	X(TOKEN_PART_UNWRAP, "token-part-unwrap", KY_EXIT_INPUT, 400,                              \
	  "token key part does not unwrap with this unit's importer key (integrity check "         \
	  "failed): it was altered or made with another key; make it again")                       \
	X(TOKEN_PART_KEY_MISSING, "token-part-key-missing", KY_EXIT_INPUT, 404,                    \
	  "the token holds no key part with the id the key part file names: wrong token, or the "  \
	  "key was deleted from it")                                                               \
	X(TOKEN_PART_EXPOSED, "token-part-exposed", KY_EXIT_REFUSED, 403,                          \
	  "the key part in the token is not sensitive, was once readable, or was not generated "   \
	  "in the token: its value may have been seen; make a new part with 'kyok tke mk-add "     \
	  "--token-module'")                                                                       \
	X(TOKEN_PART_VP, "token-part-vp-mismatch", KY_EXIT_INPUT, 400,                             \
	  "the key in the token has another verification pattern than the key part file "          \
	  "records: it is not the part the file was made with")                                    \
	X(TOKEN_PART_MECHANISM, "token-part-mechanism", KY_EXIT_INPUT, 400,                        \
	  "the token cannot do what a key part in a token needs (AES-256 key generation, "         \
	  "SHA-256 of a key, ECDH on P-521, AES-ECB key derivation, AES key wrap): use another "   \
	  "token or a key part file")                                                              \
	X(CARD_WRONG_CARD, "card-wrong-card", KY_EXIT_STATE, 409,                                  \
	  "the card in the reader is not the one the signature key names: insert that "            \
	  "administrator's EP11 card ('kyok tke sigkeys' and 'kyok scup show' tell which)")        \
	X(CARD_FULL, "card-full", KY_EXIT_REFUSED, 403,                                            \
	  "the EP11 card holds 85 key parts, all it can: use another EP11 card of the zone")       \
	X(CARD_PART_NOT_ON_CARD, "key-part-not-on-card", KY_EXIT_INPUT, 409,                       \
	  "the card in the reader is not the one holding this key part, or no longer holds it "    \
	  "as recorded: insert the EP11 card the key part file names")                             \
	X(NO_ANCHOR, "instance-without-anchor", KY_EXIT_INPUT, 409,                                \
	  "the instance directory has no unit trust anchor certificate (anchor.crt), and an EP11 " \
	  "card makes key parts bound to one and envelopes them only to units it certified: "      \
	  "create the instance first ('kyok up'), or copy the instance's anchor.crt (public) "     \
	  "there, or use file key parts")                                                          \
	X(APIKEY_ROLES, "apikey-roles", KY_EXIT_USAGE, 400,                                        \
	  "not a list of API key roles (one or more of Reader, ReaderPlus, Writer, Manager, "      \
	  "KeyPurge, each once, separated by commas)")                                             \
	X(IP_NOT_ALLOWED, "ip-not-allowed", KY_EXIT_REFUSED, 401,                                  \
	  "the instance accepts requests only from the addresses its allowedIP policy lists: "     \
	  "send from one of them, or have a Manager change the policy from one of them")           \
	X(IP_POLICY_LOCKOUT, "ip-policy-lockout", KY_EXIT_INPUT, 400,                              \
	  "the allowedIP policy would refuse the address this request comes from, and so lock "    \
	  "its sender out: list that address (or its range) too")                                  \
	X(KP_INSTANCE_MISMATCH, "kp-instance-mismatch", KY_EXIT_INPUT, 400,                        \
	  "the instance ID given is not this instance's: give the one in the instance "            \
	  "directory's instance.json, or leave -i and $KP_INSTANCE_ID out")                        \
	X(KP_OPTION_NOT_OFFERED, "kp-option-not-offered", KY_EXIT_USAGE, 400,                      \
	  "this ibmcloud kp option is not offered by kyok kp")                                     \
	X(KP_NOT_OFFERED, "kp-not-offered", KY_EXIT_INPUT, 404,                                    \
	  "the instance's crypto units do not offer this Key Protect feature: their "              \
	  "kyok-unitd has no such endpoint")                                                       \
	X(IMPORT_TOKEN_MISSING, "import-token-missing", KY_EXIT_STATE, 404,                        \
	  "this instance has no import token: create one (POST /api/v2/import_token)")             \
	X(IMPORT_TOKEN_EXPIRED, "import-token-expired", KY_EXIT_STATE, 409,                        \
	  "the import token has expired: create a new one (POST /api/v2/import_token)")            \
	X(IMPORT_TOKEN_USED_UP, "import-token-retrievals-used-up", KY_EXIT_STATE, 409,             \
	  "the import token was retrieved as many times as it allows (maxAllowedRetrievals): "     \
	  "create a new one (POST /api/v2/import_token)")                                          \
	X(IMPORT_PAYLOAD, "import-payload-undecryptable", KY_EXIT_INPUT, 400,                      \
	  "the payload does not decrypt with the import token's private key: encrypt the key "     \
	  "with RSAES-OAEP to the public key of the current import token (SHA-256, or SHA-1 with " \
	  "encryptionAlgorithm RSAES_OAEP_SHA_1)")                                                 \
	X(INCORRECT_NONCE_IV, "incorrect-nonce-iv", KY_EXIT_INPUT, 400,                            \
	  "the encrypted nonce does not decrypt with the imported key and the given iv: encrypt "  \
	  "the import token's nonce with AES-GCM under the key being imported, and send that iv")  \
	X(INCORRECT_NONCE, "incorrect-nonce", KY_EXIT_INPUT, 400,                                  \
	  "the encrypted nonce is not the import token's current nonce: retrieve the import "      \
	  "token (GET /api/v2/import_token) and encrypt the nonce it gives")                       \
	X(SYNC_TOO_EARLY, "sync-too-early", KY_EXIT_STATE, 409,                                    \
	  "a sync of associated resources can be asked only an hour after the key's last change")  \
	X(KEY_ALIAS_INVALID, "key-alias-invalid", KY_EXIT_INPUT, 400,                              \
	  "a key alias is 2 to 90 characters, letters, digits, '-' and '_', and not a UUID "       \
	  "(aliases are case sensitive)")                                                          \
	X(KEY_ALIAS_EXISTS, "key-alias-not-unique", KY_EXIT_STATE, 409,                            \
	  "the alias is in use by a key of this instance (an alias names one key): choose "        \
	  "another alias, or delete it from the key that has it first")                            \
	X(KEY_ALIAS_QUOTA, "key-alias-quota", KY_EXIT_REFUSED, 400,                                \
	  "the key has 5 aliases, as many as a key may have: delete one of them first")            \
	X(KEY_ALIAS_NOT_FOUND, "key-alias-not-found", KY_EXIT_INPUT, 404,                          \
	  "the key has no such alias: its aliases are in its metadata ('aliases')")                \
	X(KEY_RING_INVALID, "key-ring-invalid", KY_EXIT_INPUT, 400,                                \
	  "a key ring id is 2 to 100 characters: letters, digits and '-'")                         \
	X(KEY_RING_EXISTS, "key-ring-exists", KY_EXIT_STATE, 409,                                  \
	  "the instance has a key ring with this id already: choose another id")                   \
	X(KEY_RING_NOT_FOUND, "key-ring-not-found", KY_EXIT_INPUT, 404,                            \
	  "the instance has no key ring with this id: 'GET /api/v2/key_rings' lists them")         \
	X(KEY_RING_NOT_EMPTY, "key-ring-not-empty", KY_EXIT_STATE, 409,                            \
	  "the key ring holds keys (in any state, until purged): move them to another key ring "   \
	  "(PATCH /api/v2/keys/{id}) or purge them first")                                         \
	X(KEY_RING_DEFAULT, "key-ring-default", KY_EXIT_REFUSED, 400,                              \
	  "the key ring 'default' is every instance's own: it is never deleted")                   \
	X(KEY_RING_QUOTA, "key-ring-quota", KY_EXIT_REFUSED, 400,                                  \
	  "the instance has 50 key rings besides 'default', as many as it may have: delete one "   \
	  "first")                                                                                 \
	X(APIKEY_ROW_ALTERED, "apikey-row-altered", KY_EXIT_STATE, 409,                            \
	  "the stored row of this API key does not verify (altered, or without a tag), and is "    \
	  "never written again: make a new API key under another name, and revoke this one")       \
	X(LISTEN_NEEDS_TLS, "listen-needs-tls", KY_EXIT_USAGE, 400,                                \
	  "a crypto unit listening on an address other than loopback serves HTTPS only: add "      \
	  "--tls (the instance's own CA) or --tls-cert FILE and --tls-key FILE")                   \
	X(JOIN_OTHER_INSTANCE, "join-other-instance", KY_EXIT_INPUT, 400,                          \
	  "the join file is for another instance: make the request from this instance's "          \
	  "invitation ('kyok host invite' on the host holding its anchor)")                        \
	X(JOIN_UNIT_EXISTS, "join-unit-exists", KY_EXIT_INPUT, 409,                                \
	  "a crypto unit of the join request is in the instance already: a request is accepted "   \
	  "once; make a new one for new units ('kyok host join-request')")                         \
	X(JOIN_ANSWER_MISMATCH, "join-answer-mismatch", KY_EXIT_INPUT, 400,                        \
	  "the join answer does not verify against this host's request, the instance's anchor "    \
	  "and TLS CA (altered, or the answer to another request): nothing was installed; ask "    \
	  "the anchor's holder for the answer to this request")                                    \
	X(JOIN_LOOPBACK, "join-address-loopback", KY_EXIT_USAGE, 400,                              \
	  "units on another host must listen on an address the other hosts reach: give that "      \
	  "host's own IPv4 address, not loopback, 0.0.0.0, multicast or broadcast")                \
	X(KP_IMPORT_PUBKEY, "kp-import-pubkey", KY_EXIT_INPUT, 400,                                \
	  "this is not an import token's public key: give the 'payload' that 'kyok kp "            \
	  "import-token show' prints (base64 of a PEM RSA public key of 2048 bits or more)")       \
	X(KP_IMPORT_NONCE, "kp-import-nonce", KY_EXIT_INPUT, 400,                                  \
	  "this is not an import token's nonce: give the 'nonce' that 'kyok kp import-token "      \
	  "show' prints (base64 of 12 bytes)")                                                     \
	X(QUERY_PARAM_REPEATED, "query-parameter-repeated", KY_EXIT_USAGE, 400,                    \
	  "a query parameter is given more than once: give each once")                             \
	X(QUERY_PARAM_EMPTY, "query-parameter-empty", KY_EXIT_USAGE, 400,                          \
	  "a query parameter is given without a value: give it a value, or leave it out")          \
	X(JOIN_INVITE_ALTERED, "join-invite-altered", KY_EXIT_INPUT, 400,                          \
	  "the invitation is not the one the anchor's host made (its fingerprint differs): "       \
	  "altered on the way, or another instance's; ask that host's operator for the "           \
	  "invitation and its fingerprint again ('kyok host invite')")                             \
	X(JOIN_ADDRESS_IN_USE, "join-address-in-use", KY_EXIT_INPUT, 409,                          \
	  "the request's address is the address of crypto units of the instance already: a "       \
	  "certificate for it would let its holder pass for them; give the joining host's own "    \
	  "address")                                                                               \
	X(CERT_MISMATCH, "certificate-mismatch", KY_EXIT_INPUT, 400,                               \
	  "the certificate (or certificate request) is not the one wanted: its key, its name or "  \
	  "its address is not what was given")

enum ky_err {
#define KY_ERR_ENUM(name, slug, exitc, http, msg) KY_ERR_##name,
	KY_ERRORS(KY_ERR_ENUM)
#undef KY_ERR_ENUM
	    KY_ERR__COUNT
};

const char *ky_err_message(int err);
const char *ky_err_slug(int err);
int ky_err_exit(int err);
int ky_err_http(int err);
/* Returns the code whose slug is s, or KY_ERR_INTERNAL when unknown. */
int ky_err_from_slug(const char *s);

#endif
