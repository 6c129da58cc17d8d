/* Test tool: what a kyok-card's EEPROM holds, read with its chip key, for tests that show a
 * value never crossed a reader in the clear. Never part of a ceremony: it is the card's chip
 * reading its own memory, which nothing on a workstation can do.
 *
 *   card_eeprom parts EEPROM CHIP-KEY     each key part's 32 bytes, lowercase hex, one a line
 *   card_eeprom secrets EEPROM CHIP-KEY   every secret, one "KIND HEX" a line: device, zone
 *                                         (a CA card's zone key), sigkey (the private scalars,
 *                                         66 bytes each), part (32 bytes each)
 *
 * Exit 0, or 1 with the reason on stderr. */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "card/internal.h"
#include "kyok/crypto.h"

#define P521_SCALAR_LEN 66

/* "KIND HEX" of a private key's scalar; nothing for a card without that key. */
static int print_scalar(const char *kind, EVP_PKEY *pk)
{
	BIGNUM *d = NULL;
	uint8_t b[P521_SCALAR_LEN];
	char hex[2 * P521_SCALAR_LEN + 1];
	int ok;

	if (pk == NULL)
		return 0;
	ok = EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, &d) == 1 &&
	     BN_bn2binpad(d, b, sizeof(b)) == (int)sizeof(b);
	BN_clear_free(d);
	if (!ok) {
		fprintf(stderr, "card_eeprom: cannot read the %s key's private scalar\n", kind);
		return 1;
	}
	ky_hex_encode(b, sizeof(b), hex);
	printf("%s %s\n", kind, hex);
	return 0;
}

int main(int argc, char **argv)
{
	struct kc_card *c = NULL;
	struct stat sb;
	char err[512], hex[2 * KY_MK_LEN + 1];
	bool secrets;
	int rc = 1;

	if (argc != 4 || (strcmp(argv[1], "parts") != 0 && strcmp(argv[1], "secrets") != 0)) {
		fprintf(stderr, "usage: card_eeprom parts|secrets EEPROM CHIP-KEY\n");
		return 1;
	}
	secrets = strcmp(argv[1], "secrets") == 0;
	if (ky_process_harden(err, sizeof(err)) != 0 || ky_crypto_init() != 0) {
		fprintf(stderr, "card_eeprom: %s\n", err);
		return 1;
	}
	/* kc_card_open makes a blank card where there is none: only an existing card here. */
	if (stat(argv[2], &sb) != 0 || stat(argv[3], &sb) != 0) {
		fprintf(stderr, "card_eeprom: no card at '%s' with chip key '%s'\n", argv[2],
		        argv[3]);
		return 1;
	}
	if (kc_card_open(argv[2], argv[3], &c, err, sizeof(err)) != 0) {
		fprintf(stderr, "card_eeprom: %s\n", err);
		return 1;
	}
	if (secrets && (print_scalar("device", c->st.device) != 0 ||
	                (c->st.type == KC_TYPE_CA && print_scalar("zone", c->st.zone) != 0) ||
	                print_scalar("sigkey", c->st.sigkey) != 0))
		goto out;
	for (size_t i = 0; i < c->st.nparts; i++) {
		ky_hex_encode(c->st.parts[i].part, KY_MK_LEN, hex);
		printf("%s%s\n", secrets ? "part " : "", hex);
	}
	rc = 0;
out:
	kc_card_free(c);
	return rc;
}
