/* Administrator signature keys on EP11 smart cards: sigkey-add's card form. */
#include <openssl/crypto.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

#include "cli/card_sigkey.h"
#include "cli/cli.h"
#include "kyok/card.h"
#include "kyok/err.h"

#define CARD_SIGKEY_ERR    512
#define CARD_SIGKEY_READER 1 /* the signature card's reader */

/* struct ky_ext_signer's sign: SIGN on the card (arg) of the SHA-512 digest md. */
static int card_sigkey_sign(void *arg, const uint8_t *md, size_t mdlen, struct ky_buf *sig)
{
	int r = KY_ERR_INTERNAL;
	uint8_t s[256];
	size_t n = 0;
	char err[CARD_SIGKEY_ERR];

	if (mdlen != KY_CARD_DIGEST_LEN) {
		r = KY_ERR_INTERNAL;
		goto out;
	}
	if ((r = ky_card_sign(arg, md, s, sizeof(s), &n, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = ky_buf_append(sig, s, n)) != 0)
		goto out;
	r = 0;
out:
	return r;
}

int cli_card_sigkey_add(const char *path, const char *name, struct ky_sigkey_card *card)
{
	int r = KY_ERR_INTERNAL, tries = -1;
	struct ky_pcsc *p = NULL;
	struct ky_card *c = NULL;
	struct ky_card_info info;
	struct ky_ext_signer ext = {0};
	char reader[KY_CARD_READER_MAX], subject[KY_CARD_READER_MAX + 32], err[CARD_SIGKEY_ERR];
	char *pin = NULL;
	uint8_t spki[512];
	const unsigned char *q = spki;
	size_t n = 0;
	EVP_PKEY *pub = NULL;

	if ((r = ky_pcsc_open(&p, err, sizeof(err))) != 0 ||
	    (r = ky_pcsc_reader(p, CARD_SIGKEY_READER, reader, err, sizeof(err))) != 0 ||
	    (r = ky_card_open(p, reader, &c, err, sizeof(err))) != 0 ||
	    (r = ky_card_status(c, &info, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	snprintf(subject, sizeof(subject), "reader %d '%s'", CARD_SIGKEY_READER, reader);
	if (info.kind != KY_CARD_EP11) {
		r = KY_ERR_CARD_WRONG_KIND;
		cli_fail(r, subject, "a signature key is made on an EP11 card in reader %d",
		         CARD_SIGKEY_READER);
		goto out;
	}
	if (info.blocked) {
		r = KY_ERR_CARD_BLOCKED;
		cli_fail(r, subject,
		         "unblock it with a CA card of its zone ('kyok scup ep11-unblock')");
		goto out;
	}
	if (info.sigkey) {
		r = KY_ERR_CARD_NOT_ALLOWED;
		cli_fail(r, subject,
		         "the EP11 card holds a signature key already: one key per card");
		goto out;
	}
	if ((r = cli_password("PIN of the EP11 card in reader 1", false, &pin)) != 0)
		goto out;
	r = ky_card_verify(c, 0x01, pin, strlen(pin), &tries, err, sizeof(err));
	if (r == KY_ERR_CARD_PIN_WRONG) {
		cli_fail(r, subject, "EP11 card PIN wrong: %d tr%s left before the card blocks",
		         tries, tries == 1 ? "y" : "ies");
		goto out;
	}
	if (r != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = ky_card_sigkey_generate(c, spki, sizeof(spki), &n, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((pub = d2i_PUBKEY(NULL, &q, (long)n)) == NULL || q != spki + n) {
		r = KY_ERR_CARD_PROTOCOL;
		cli_fail(r, subject, "GENERATE SIGNATURE KEY answered no public key");
		goto out;
	}
	memcpy(card->zone_id, info.zone_id, sizeof(card->zone_id));
	memcpy(card->device_id, info.device_id, sizeof(card->device_id));
	if ((r = ky_sigkey_card_ski(pub, card->ski)) != 0) {
		cli_fail(r, subject, "the card's public key");
		goto out;
	}
	ext = (struct ky_ext_signer){pub, card_sigkey_sign, c};
	if ((r = ky_sigkey_card_create(path, name, &ext, card)) != 0) {
		cli_fail(r, path, NULL);
		goto out;
	}
	r = 0;
out:
	EVP_PKEY_free(pub);
	ky_card_free_keep(c);
	ky_pcsc_free(p);
	cli_secret_free(pin);
	return r;
}
