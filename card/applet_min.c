/* A minimal applet for the transport's tests, standing in until the card's real applet is
 * built here: it answers SELECT of the kyok AID and VERIFY of PIN 1, nothing else. Its
 * "EEPROM" is a file holding the PIN (a missing file is a blank card without a PIN); its chip
 * key file is only checked for being private. Three wrong PINs block it, for the life of the
 * process. */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "card/applet.h"
#include "kyok/common.h"
#include "kyok/err.h"

#define MIN_PIN_MAX   64
#define MIN_PIN_TRIES 3

struct kc_card {
	uint8_t pin[MIN_PIN_MAX];
	size_t pin_len;
	int tries;
	bool selected;
	bool verified;
};

static const uint8_t min_aid[] = {0xF0, 0x6B, 0x79, 0x6F, 0x6B, 0x01};
static const uint8_t min_atr[] = {0x3B, 0x86, 0x80, 0x01, 'k', 'y', 'o', 'k', 0x00, 0x01, 0xEF};

int kc_card_open(const char *eeprom_path, const char *chip_key_path, struct kc_card **out,
                 char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	struct kc_card *c = NULL;

	(void)chip_key_path;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	c->tries = MIN_PIN_TRIES;
	r = ky_file_read(eeprom_path, MIN_PIN_MAX, &b);
	if (r == KY_ERR_NOT_FOUND) {
		r = 0;
	} else if (r != 0) {
		snprintf(err, errlen, "'%s': cannot read the card's EEPROM file: %s", eeprom_path,
		         ky_err_message(r));
		goto out;
	} else {
		while (b.len > 0 && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
			b.len--;
		memcpy(c->pin, b.data, b.len);
		c->pin_len = b.len;
	}
	*out = c;
	c = NULL; /* transferred */
	r = 0;
out:
	ky_buf_free(&b);
	kc_card_free(c);
	return r;
}

void kc_card_free(struct kc_card *c)
{
	if (c == NULL)
		return;
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
}

void kc_card_power(struct kc_card *c, bool on)
{
	(void)on;
	c->selected = false;
	c->verified = false;
}

void kc_card_reset(struct kc_card *c)
{
	kc_card_power(c, true);
}

size_t kc_card_atr(const struct kc_card *c, uint8_t *atr, size_t max)
{
	(void)c;
	if (max < sizeof(min_atr))
		return 0;
	memcpy(atr, min_atr, sizeof(min_atr));
	return sizeof(min_atr);
}

static size_t min_sw(uint8_t *resp, uint16_t sw)
{
	resp[0] = (uint8_t)(sw >> 8);
	resp[1] = (uint8_t)sw;
	return 2;
}

static size_t min_verify(struct kc_card *c, const uint8_t *data, size_t lc, uint8_t *resp)
{
	if (c->tries == 0)
		return min_sw(resp, 0x6983);
	if (lc == 0) /* ISO 7816-4: the PIN's state */
		return min_sw(resp, c->verified ? 0x9000 : (uint16_t)(0x63C0 | c->tries));
	if (c->pin_len == 0)
		return min_sw(resp, 0x6985);
	if (lc == c->pin_len && CRYPTO_memcmp(data, c->pin, lc) == 0) {
		c->tries = MIN_PIN_TRIES;
		c->verified = true;
		return min_sw(resp, 0x9000);
	}
	c->verified = false;
	c->tries--;
	return min_sw(resp, c->tries == 0 ? 0x6983 : (uint16_t)(0x63C0 | c->tries));
}

size_t kc_card_apdu(struct kc_card *c, const uint8_t *cmd, size_t n, uint8_t *resp, size_t max)
{
	size_t lc;

	if (max < 2)
		return 0;
	if (n < 4)
		return min_sw(resp, 0x6700);
	if (cmd[0] != 0x00)
		return min_sw(resp, 0x6E00);
	lc = n > 5 ? cmd[4] : 0;
	if (n > 5 && n != 5 + lc && n != 6 + lc)
		return min_sw(resp, 0x6700);
	switch (cmd[1]) {
	case 0xA4:
		if (cmd[2] != 0x04 || cmd[3] != 0x00 || lc != sizeof(min_aid) ||
		    memcmp(cmd + 5, min_aid, sizeof(min_aid)) != 0)
			return min_sw(resp, 0x6A82);
		c->selected = true;
		c->verified = false;
		return min_sw(resp, 0x9000);
	case 0x20:
		if (!c->selected)
			return min_sw(resp, 0x6985);
		if (cmd[2] != 0x00 || cmd[3] != 0x01)
			return min_sw(resp, 0x6A86);
		return min_verify(c, cmd + 5, lc, resp);
	default:
		return min_sw(resp, 0x6D00);
	}
}
