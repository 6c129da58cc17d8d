/* Master key parts held in PKCS#11 tokens (docs/formats.md, sections 2 and 5).
 *
 * The part is an AES-256 key generated in the token (sensitive, on the token, never read in
 * clear). The workspace keeps a token form of key part file: where the part is (module,
 * token label and serial, key label and CKA_ID), its description and its verification
 * pattern, which the token computes (C_DigestKey of SHA-256 over 0x01 || part). No secret.
 *
 * For cryptounit-mk-load the token seals the part for each unit in the TokenKeyPart form:
 * an ephemeral P-521 key pair, CKM_ECDH1_DERIVE (CKD_NULL) with the unit's importer key,
 * CKM_AES_ECB_ENCRYPT_DATA of SHA-256(label || recipient || point) to the KEK, and
 * C_WrapKey (CKM_AES_KEY_WRAP) of the part. Every intermediate key is a session object,
 * sensitive and not extractable. */
#ifndef KYOK_CLI_TOKEN_PART_H
#define KYOK_CLI_TOKEN_PART_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "cli/token.h"
#include "kyok/common.h"
#include "kyok/crypto.h"

#define CLI_TOKEN_PART_DESC_MAX 127
#define CLI_TOKEN_PART_FILE_MAX 4096
#define CLI_TOKEN_PART_TOKENS   8 /* tokens open at once in one mk-load */
#define CLI_TOKEN_PART_FORMAT   "kyok-token-keypart-1"

/* A token form of key part file. */
struct cli_token_keypart {
	char description[CLI_TOKEN_PART_DESC_MAX + 1];
	uint8_t vp[KY_VP_LEN];
	struct ky_sigkey_token where; /* module, token label and serial, CKA_ID of the part */
	char key_label[KY_TOKEN_LABEL_MAX + 1];
};

/* Pure parser of a token form of key part file's text: one JSON object with exactly the
 * members "format", "description", "vp", "module", "token_label", "token_serial",
 * "key_label" and "key_id", each a string of its own syntax. KY_ERR_NOT_KEY_PART when the
 * text is not one: why says what is wrong, or is "" when the text is not JSON at all. */
int cli_token_keypart_parse(const char *text, size_t n, struct cli_token_keypart *tp, char *why,
                            size_t whylen) KY_WUR;
/* Reads and parses path (at most CLI_TOKEN_PART_FILE_MAX bytes). KY_ERR_IO,
 * KY_ERR_NOT_KEY_PART. */
int cli_token_keypart_read(const char *path, struct cli_token_keypart *tp, char *why,
                           size_t whylen) KY_WUR;
/* Writes tp to path (mode 0600, never over an existing file: KY_ERR_EXISTS). */
int cli_token_keypart_write(const char *path, const struct cli_token_keypart *tp) KY_WUR;

/* Generates a new part in the open token t under a new random CKA_ID with CKA_LABEL
 * key_label, checks what the token made (AES, 32 bytes, sensitive, value unreadable) and
 * fills tp->where.id, tp->where.serial and tp->vp from the token. On failure nothing stays
 * in the token. KY_ERR_TOKEN_PART_MECHANISM, KY_ERR_TOKEN_PART_EXPOSED,
 * KY_ERR_TOKEN_DEVICE; why says what failed. */
int cli_token_keypart_generate(struct cli_token *t, struct cli_token_keypart *tp, char *why,
                               size_t whylen) KY_WUR;
/* Destroys the part tp names in t (when the file naming it cannot be written). */
void cli_token_keypart_destroy(struct cli_token *t, const struct cli_token_keypart *tp);

/* The tokens of one mk-load: each opened once, its PIN asked once. */
struct cli_token_set {
	size_t n;
	struct cli_token *tokens[CLI_TOKEN_PART_TOKENS];
	char module[CLI_TOKEN_PART_TOKENS][KY_TOKEN_MODULE_MAX + 1];
};
void cli_token_set_release(struct cli_token_set *s);

/* A part ready to be sealed: its token (owned by the set) and object handle. */
struct cli_token_part_ref {
	struct cli_token *token;
	CK_OBJECT_HANDLE obj;
};
/* Opens the token tp names (asking its PIN unless the set has it open), finds the part by
 * its CKA_ID, checks it is sensitive, always was and was generated in the token, and that
 * the token's VP of it is tp->vp. Prints what failed with subject. KY_ERR_TOKEN_*,
 * KY_ERR_TOKEN_PART_KEY_MISSING, KY_ERR_TOKEN_PART_EXPOSED, KY_ERR_TOKEN_PART_VP. */
int cli_token_keypart_take(struct cli_token_set *s, const struct cli_token_keypart *tp,
                           const char *subject, struct cli_token_part_ref *ref) KY_WUR;
/* The TokenKeyPart of the part ref names for the importer certificate (already checked by
 * the caller against the unit's pinned identity), made inside the token, in der.
 * KY_ERR_TOKEN_PART_MECHANISM, KY_ERR_TOKEN_DEVICE; why says what failed. */
int cli_token_keypart_seal(const struct cli_token_part_ref *ref, X509 *importer, struct ky_buf *der,
                           char *why, size_t whylen) KY_WUR;

/* mk-add --token-module: asks the token's PIN, generates the part in the token labelled
 * label (CKA_LABEL key_label) and writes the token form of key part file at path; prints
 * what failed. When the file cannot be written the part is destroyed in the token again. */
int cli_token_keypart_add(const char *path, const char *description, const char *module,
                          const char *label, const char *key_label) KY_WUR;

#endif
