/* The kyok card applet: one card's chip (its EEPROM file and chip key) and the applet that
 * runs on it. Pure: no sockets; the transport (card/main.c, the vpcd protocol) feeds it.
 * docs/cards.md describes every command, the EEPROM file and the rules the card enforces.
 * The process calls ky_process_harden() and ky_crypto_init() (kyok/crypto.h) before
 * kc_card_open, so that the card's secrets live in the secure heap and never in a core. */
#ifndef KYOK_CARD_APPLET_H
#define KYOK_CARD_APPLET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kc_card;
/* Opens (creating when missing: a blank card) the card whose EEPROM is eeprom_path and
 * whose chip key is chip_key_path (both 0600). */
int kc_card_open(const char *eeprom_path, const char *chip_key_path, struct kc_card **out,
                 char *err, size_t errlen);
void kc_card_free(struct kc_card *c);
/* Power off, on, or reset: every PIN verified so far is forgotten, any command chain or
 * pending response dropped. */
void kc_card_power(struct kc_card *c, bool on);
void kc_card_reset(struct kc_card *c);
/* The ATR this card answers with. Returns its length (at most 33). */
size_t kc_card_atr(const struct kc_card *c, uint8_t *atr, size_t max);
/* One command APDU (ISO 7816-4, short form; longer data by command chaining, CLA bit 0x10,
 * and longer responses by 61xx + GET RESPONSE) in, its response APDU (data, SW1, SW2) out.
 * Returns the response length (at least 2); max is at least 258. */
size_t kc_card_apdu(struct kc_card *c, const uint8_t *cmd, size_t n, uint8_t *resp, size_t max);

#endif
