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

#endif
