/* The card applet: APDUs as a host sends them (framing, command chaining, GET RESPONSE,
 * the fields every command parses, zone certificates, PINs, certificates). Each input is
 * a fresh blank card (the same one every time) and a sequence of APDUs, each prefixed by
 * its length in one byte; a length of 0 resets the card. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "card/applet.h"
#include "kyok/common.h"
#include "kyok/crypto.h"
#include "tests/fuzz/fuzz.h"

static char fuzz_dir[64] = "";
static char eeprom_path[128], key_path[128];
static struct ky_buf tmpl_eeprom, tmpl_key;

static void fuzz_card_cleanup(void)
{
	unlink(eeprom_path);
	unlink(key_path);
	rmdir(fuzz_dir);
}

static int put(const char *path, const struct ky_buf *b)
{
	FILE *f = fopen(path, "wb");
	int ok;

	if (f == NULL)
		return -1;
	ok = fwrite(b->data, 1, b->len, f) == b->len;
	return fclose(f) == 0 && ok ? 0 : -1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct kc_card *c = NULL;
	char err[256];

	(void)argc;
	(void)argv;
	snprintf(fuzz_dir, sizeof(fuzz_dir), "/tmp/kyok-fuzz-card-XXXXXX");
	if (ky_crypto_init() != 0 || mkdtemp(fuzz_dir) == NULL)
		abort();
	snprintf(eeprom_path, sizeof(eeprom_path), "%s/card.eeprom", fuzz_dir);
	snprintf(key_path, sizeof(key_path), "%s/card.chipkey", fuzz_dir);
	atexit(fuzz_card_cleanup);
	if (kc_card_open(eeprom_path, key_path, &c, err, sizeof(err)) != 0)
		abort();
	kc_card_free(c);
	if (ky_file_read(eeprom_path, 1 << 20, &tmpl_eeprom) != 0 ||
	    ky_file_read(key_path, 64, &tmpl_key) != 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kc_card *c = NULL;
	uint8_t resp[258];
	char err[256];
	size_t n;

	if (put(eeprom_path, &tmpl_eeprom) != 0 || put(key_path, &tmpl_key) != 0 ||
	    kc_card_open(eeprom_path, key_path, &c, err, sizeof(err)) != 0)
		abort();
	while (size > 0) {
		n = data[0];
		data++;
		size--;
		if (n == 0) {
			kc_card_reset(c);
			continue;
		}
		if (n > size)
			n = size;
		if (kc_card_apdu(c, data, n, resp, sizeof(resp)) < 2)
			abort();
		data += n;
		size -= n;
	}
	kc_card_free(c);
	return 0;
}
