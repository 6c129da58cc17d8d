/* Signature keys in PKCS#11 tokens (YubiKey, Nitrokey HSM, OpenSC tokens, SoftHSM2): the
 * module is loaded with dlopen, the token found by label (and serial), the user logged in
 * with a PIN that never goes on a command line. The key is generated in the token as
 * sensitive and never extractable; signing is C_Sign (CKM_ECDSA) over a SHA-512 digest.
 *
 * Every function returns a KY_ERR_* code and, on failure, says what went wrong (with the
 * PKCS#11 return value) in the token's why text, or in why for cli_token_open. */
#ifndef KYOK_CLI_TOKEN_H
#define KYOK_CLI_TOKEN_H

#include <openssl/evp.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "kyok/common.h"
#include "kyok/crypto.h"

#define CLI_TOKEN_WHY_MAX 320

struct cli_token;

/* Loads module, finds the one token labelled label (with that serial when serial is not
 * NULL) and logs in. KY_ERR_TOKEN_MODULE, KY_ERR_TOKEN_NOT_FOUND, KY_ERR_TOKEN_OTHER,
 * KY_ERR_TOKEN_PIN, KY_ERR_TOKEN_PIN_LOCKED, KY_ERR_TOKEN_DEVICE. */
int cli_token_open(const char *module, const char *label, const char *serial, const char *pin,
                   struct cli_token **out, char why[CLI_TOKEN_WHY_MAX]) KY_WUR;
void cli_token_free(struct cli_token *t);
const char *cli_token_why(const struct cli_token *t);
/* The token's serial number, trailing blanks removed. */
const char *cli_token_serial(const struct cli_token *t);
/* The label the token was opened by. */
const char *cli_token_label(const struct cli_token *t);
/* The module's functions and the logged-in session, for the objects other files work with
 * (key parts: cli/token_part.c). Valid until cli_token_free. */
CK_FUNCTION_LIST_PTR cli_token_p11(const struct cli_token *t, CK_SESSION_HANDLE *session);
/* A PKCS#11 return value by name ("CKR_PIN_INCORRECT"), or in hex; a static buffer. */
const char *cli_token_rv(unsigned long rv);
/* Generates an ECDSA key pair on P-521 (bits 521) or P-384 (bits 384) in the token under
 * a new random CKA_ID (private key: sensitive, not extractable, sign only), checks what the
 * token made, and attaches it. KY_ERR_TOKEN_MECHANISM when the token cannot. */
int cli_token_ec_generate(struct cli_token *t, const char *label, int bits,
                          uint8_t id[KY_TOKEN_ID_LEN], EVP_PKEY **pub) KY_WUR;
/* Destroys the key pair cli_token_ec_generate made (when a later step fails). */
void cli_token_ec_destroy(struct cli_token *t);
/* Finds the private key with CKA_ID id and checks it: an EC key, sensitive, not extractable,
 * and, where the token says, always sensitive, never extractable and generated in the token.
 * KY_ERR_TOKEN_KEY_MISSING, KY_ERR_TOKEN_KEY_EXTRACTABLE. */
int cli_token_key_attach(struct cli_token *t, const uint8_t id[KY_TOKEN_ID_LEN]) KY_WUR;
/* struct ky_ext_signer's sign with arg a struct cli_token * whose key is attached: C_Sign
 * with CKM_ECDSA over md, the raw r || s turned into an ECDSA-Sig-Value. */
int cli_token_sign(void *arg, const uint8_t *md, size_t mdlen, struct ky_buf *sig) KY_WUR;

/* For a token sigkey file whose certificate is in s->cert: opens the token tok names with
 * pin, attaches the key, and proves with one signature over a fixed probe that it is the
 * certificate's key (KY_ERR_TOKEN_SIGNATURE otherwise), so a wrong token is found before
 * anything is signed. s->token is set on success; why says what failed. */
struct cli_signer;
int cli_signer_open_token(struct cli_signer *s, const struct ky_sigkey_token *tok, const char *pin,
                          char why[CLI_TOKEN_WHY_MAX]) KY_WUR;

#endif
