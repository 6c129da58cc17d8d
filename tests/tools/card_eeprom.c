/* Test tool: what a kyok-card's EEPROM holds, read with its chip key, for tests that show a
 * value never crossed a reader in the clear. Never part of a ceremony.
 *
 *   card_eeprom parts EEPROM CHIP-KEY   each key part's 32 bytes, lowercase hex, one a line
 *
 * Exit 0, or 1 with the reason on stderr. */
#include <stdio.h>
#include <string.h>

#include "card/internal.h"
#include "kyok/crypto.h"

int main(int argc, char **argv)
{
	struct kc_card *c = NULL;
	char err[512], hex[2 * KY_MK_LEN + 1];

	if (argc != 4 || strcmp(argv[1], "parts") != 0) {
		fprintf(stderr, "usage: card_eeprom parts EEPROM CHIP-KEY\n");
		return 1;
	}
	if (ky_process_harden(err, sizeof(err)) != 0 || ky_crypto_init() != 0) {
		fprintf(stderr, "card_eeprom: %s\n", err);
		return 1;
	}
	if (kc_card_open(argv[2], argv[3], &c, err, sizeof(err)) != 0) {
		fprintf(stderr, "card_eeprom: %s\n", err);
		return 1;
	}
	for (size_t i = 0; i < c->st.nparts; i++) {
		ky_hex_encode(c->st.parts[i].part, KY_MK_LEN, hex);
		printf("%s\n", hex);
	}
	kc_card_free(c);
	return 0;
}
