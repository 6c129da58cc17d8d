/* Administrator signature keys held by an EP11 smart card in smart card reader 1 (the kyok
 * applet, docs/cards.md): the key generated on the card under its PIN, the admin certificate
 * signed by the card, and the card sigkey file naming the card and the key. */
#ifndef KYOK_CLI_CARD_SIGKEY_H
#define KYOK_CLI_CARD_SIGKEY_H

#include <stddef.h>

#include "kyok/common.h"
#include "kyok/crypto.h"

/* Generates the signature key on the EP11 card in reader 1 (its PIN asked, or read like a
 * password from --password-file or --password-fd) and writes the card sigkey file at path
 * for administrator name. The card must be an EP11 card, not blocked, without a signature
 * key yet. On success *card tells which card and key. Says what failed. */
int cli_card_sigkey_add(const char *path, const char *name, struct ky_sigkey_card *card) KY_WUR;

/* Adds the signature of card signer s (s->card set) to the SignedData der: a card holding
 * the key s->card names (that card, or a copy of it in the same zone) must be in reader 1
 * (else asked for and waited on up to --card-wait, a wrong card refused with
 * KY_ERR_CARD_WRONG_CARD), it signs the digest (its PIN asked only when it
 * wants it: cli_card_pin) and the signature is checked against s->cert. The session stays
 * open for the next signature. Says what failed. */
struct cli_signer;
struct ky_buf;
int cli_card_signer_sign(const struct cli_signer *s, struct ky_buf *der) KY_WUR;
/* Ends the signing session: the card is left powered, its PIN verified (NULL-safe). */
void cli_card_signers_release(void);

#endif
