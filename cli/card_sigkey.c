/* Administrator signature keys on EP11 smart cards: sigkey-add's card form. */
#include <openssl/crypto.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/card_sigkey.h"
#include "cli/cli.h"
#include "kyok/card.h"
#include "kyok/err.h"

#define CARD_SIGKEY_ERR    512
#define CARD_SIGKEY_READER 1 /* the signature card's reader */

static void card_done(struct ky_card *c);
#define CARD_SIGKEY_ID_HEX 16 /* hex digits of a device id shown to people */

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
	if (ky_card_has_pinpad(c)) {
		fprintf(stderr, "enter the PIN of the EP11 card on the PIN pad of reader %d\n",
		        CARD_SIGKEY_READER);
		r = ky_card_verify_pinpad(c, 0x01, &tries, err, sizeof(err));
	} else {
		if ((r = cli_card_pin("PIN of the EP11 card in reader 1", &pin)) != 0)
			goto out;
		r = ky_card_verify(c, 0x01, pin, strlen(pin), &tries, err, sizeof(err));
	}
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
	card_done(c);
	ky_pcsc_free(p);
	cli_secret_free(pin);
	return r;
}

/* ---- signing with card sigkeys ----
 * One session with the card in reader 1 lasts for the whole command: a card whose PIN was
 * verified signs every command of the invocation without asking again. Another card
 * needed: the session ends leaving the card powered, the holder is asked for the next
 * card, and the reader is watched (pcscd's notification) until it is swapped. */
static struct {
	struct ky_pcsc *p;
	struct ky_card *c;
	char reader[KY_CARD_READER_MAX];
	uint8_t ski[KY_SIGKEY_CARD_ID_LEN]; /* of the key the card of c holds */
} card_slot;
static bool card_said; /* card_signer_sign printed why it failed */

static long card_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec;
}

static void card_id_hex(const uint8_t id[KY_CARD_ID_LEN], char out[CARD_SIGKEY_ID_HEX + 1])
{
	char hex[2 * KY_CARD_ID_LEN + 1];

	ky_hex_encode(id, KY_CARD_ID_LEN, hex);
	memcpy(out, hex, CARD_SIGKEY_ID_HEX);
	out[CARD_SIGKEY_ID_HEX] = '\0';
}

/* The end of a session with a card this command verified: the card is reset (its PIN
 * forgotten, so no other program finds it verified), unless a 'kyok tke card-keep' holds the
 * reader for this workspace: then it is left powered, its PIN asked once per insertion. */
static void card_done(struct ky_card *c)
{
	if (c == NULL)
		return;
	if (cli_card_keep_running(CARD_SIGKEY_READER))
		ky_card_free_keep(c);
	else
		ky_card_free(c);
}

void cli_card_signers_release(void)
{
	card_done(card_slot.c);
	ky_pcsc_free(card_slot.p);
	memset(&card_slot, 0, sizeof(card_slot));
}

/* Waits for reader 1 to be empty (present false) or to hold a card, until deadline: on
 * timeout KY_ERR_CARD_ABSENT (no card came) or KY_ERR_CARD_WRONG_CARD (the card in the
 * reader stayed). */
static int card_wait(bool present, long deadline, const char *admin)
{
	int r = KY_ERR_INTERNAL;
	char err[CARD_SIGKEY_ERR], subject[160];
	long left = deadline - card_now_s();
	long bound = cli_g.card_wait < 0 ? (long)CLI_CARD_WAIT_DEFAULT : cli_g.card_wait;

	snprintf(subject, sizeof(subject), "reader %d '%s'", CARD_SIGKEY_READER, card_slot.reader);
	if (left > 0 && (r = ky_pcsc_wait(card_slot.p, card_slot.reader, present, left * 1000, err,
	                                  sizeof(err))) == 0)
		return 0;
	if (left > 0 && r != KY_ERR_CARD_ABSENT && r != KY_ERR_CARD_REMOVED) {
		cli_fail(r, NULL, "%s", err);
		return r;
	}
	if (present) {
		r = KY_ERR_CARD_ABSENT;
		cli_fail(r, subject,
		         "the EP11 card of administrator '%s' was not inserted within the "
		         "--card-wait bound (%ld s): nothing was sent",
		         admin, bound);
	} else {
		r = KY_ERR_CARD_WRONG_CARD;
		cli_fail(
		    r, subject,
		    "the card in the reader was not taken out for the EP11 card of "
		    "administrator '%s' within the --card-wait bound (%ld s): nothing was sent",
		    admin, bound);
	}
	return r;
}

/* Waits until the card of device old_id is no longer in reader 1: the reader empty, or
 * another card in it already (a swap quicker than this watch: pcscd's notification of the
 * removal may be gone by the time it is asked for). Times out at deadline with
 * KY_ERR_CARD_WRONG_CARD. */
static int card_wait_gone(const uint8_t old_id[KY_CARD_ID_LEN], long deadline, const char *admin)
{
	int r = KY_ERR_INTERNAL;
	char err[CARD_SIGKEY_ERR];
	struct ky_card *c = NULL;
	struct ky_card_info info;

	for (;;) {
		long left = deadline - card_now_s();

		if (left <= 0) {
			r = card_wait(false, deadline, admin);
			goto out;
		}
		/* Watch in slices of a second, each followed by a look at the card. */
		r = ky_pcsc_wait(card_slot.p, card_slot.reader, false,
		                 left > 1 ? 1000 : left * 1000, err, sizeof(err));
		if (r == 0)
			goto out;
		if (r != KY_ERR_CARD_REMOVED) {
			cli_fail(r, NULL, "%s", err);
			goto out;
		}
		r = ky_card_open(card_slot.p, card_slot.reader, &c, err, sizeof(err));
		if (r == KY_ERR_CARD_ABSENT) {
			r = 0;
			goto out;
		}
		if (r == 0 && (r = ky_card_status(c, &info, err, sizeof(err))) == 0 &&
		    memcmp(info.device_id, old_id, KY_CARD_ID_LEN) != 0)
			goto out;
		ky_card_free_keep(c);
		c = NULL;
		if (r != 0 && r != KY_ERR_CARD_REMOVED) {
			cli_fail(r, NULL, "%s", err);
			goto out;
		}
	}
out:
	ky_card_free_keep(c);
	return r;
}

/* Whether the card of the open session holds the signature key ref names (its SKI), in
 * *holds. */
static int card_holds(const struct ky_sigkey_card *ref, bool *holds)
{
	int r = KY_ERR_INTERNAL;
	char err[CARD_SIGKEY_ERR];
	uint8_t spki[512], ski[KY_SIGKEY_CARD_ID_LEN];
	const unsigned char *q = spki;
	size_t n = 0;
	bool present = false;
	EVP_PKEY *pub = NULL;

	*holds = false;
	if ((r = ky_card_sigkey(card_slot.c, spki, sizeof(spki), &n, &present, err, sizeof(err))) !=
	    0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	*holds = present && (pub = d2i_PUBKEY(NULL, &q, (long)n)) != NULL && q == spki + n &&
	         ky_sigkey_card_ski(pub, ski) == 0 &&
	         CRYPTO_memcmp(ski, ref->ski, sizeof(ski)) == 0;
	r = 0;
out:
	EVP_PKEY_free(pub);
	return r;
}

/* Has the session of card_slot be with a card that holds the key ref names: the card the
 * file names, or a copy of it (an EP11 card of the same zone holding the same key,
 * 'kyok tke card-copy'). Asks for it when another card or none is in reader 1 and waits up
 * to --card-wait for it. */
static int card_get(const struct ky_sigkey_card *ref, const char *admin)
{
	int r = KY_ERR_INTERNAL;
	char err[CARD_SIGKEY_ERR], subject[160], want[CARD_SIGKEY_ID_HEX + 1],
	    have[CARD_SIGKEY_ID_HEX + 1];
	struct ky_card_info info;
	long wait = cli_g.card_wait < 0 ? CLI_CARD_WAIT_DEFAULT : cli_g.card_wait;
	long deadline = card_now_s() + wait;
	bool asked = false, holds = false;
	uint8_t old_id[KY_CARD_ID_LEN];

	if (card_slot.c != NULL && memcmp(card_slot.ski, ref->ski, sizeof(card_slot.ski)) == 0)
		return 0;
	card_done(card_slot.c);
	card_slot.c = NULL;
	if (card_slot.p == NULL &&
	    ((r = ky_pcsc_open(&card_slot.p, err, sizeof(err))) != 0 ||
	     (r = ky_pcsc_reader(card_slot.p, CARD_SIGKEY_READER, card_slot.reader, err,
	                         sizeof(err))) != 0)) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	snprintf(subject, sizeof(subject), "reader %d '%s'", CARD_SIGKEY_READER, card_slot.reader);
	card_id_hex(ref->device_id, want);
	for (;;) {
		r = ky_card_open(card_slot.p, card_slot.reader, &card_slot.c, err, sizeof(err));
		if (r == KY_ERR_CARD_ABSENT) {
			if (!asked)
				fprintf(
				    stderr,
				    "insert the EP11 card of administrator '%s' (device %s) into "
				    "reader %d\n",
				    admin, want, CARD_SIGKEY_READER);
			asked = true;
			if ((r = card_wait(true, deadline, admin)) != 0)
				goto out;
			continue;
		}
		if (r != 0 || (r = ky_card_status(card_slot.c, &info, err, sizeof(err))) != 0) {
			cli_fail(r, NULL, "%s", err);
			goto out;
		}
		card_id_hex(info.device_id, have);
		holds = false;
		if (info.kind == KY_CARD_EP11 &&
		    memcmp(info.zone_id, ref->zone_id, KY_CARD_ID_LEN) == 0 &&
		    (r = card_holds(ref, &holds)) != 0)
			goto out;
		if (holds)
			break;
		if (info.kind == KY_CARD_EP11 &&
		    memcmp(info.device_id, ref->device_id, KY_CARD_ID_LEN) == 0) {
			r = KY_ERR_CARD_WRONG_CARD;
			cli_fail(r, subject,
			         "the EP11 card (device %s) no longer holds the signature key of "
			         "administrator '%s' its sigkey file names: nothing was sent",
			         want, admin);
			goto out;
		}
		/* Another card: left as it was (powered, its PINs kept), it is not ours. */
		ky_card_free_keep(card_slot.c);
		card_slot.c = NULL;
		if (asked || wait == 0) {
			r = KY_ERR_CARD_WRONG_CARD;
			cli_fail(r, subject,
			         "it holds %s card (device %s), not the EP11 card of administrator "
			         "'%s' (device %s) that signs here: nothing was sent",
			         info.kind == KY_CARD_EP11 ? "the EP11"
			         : info.kind == KY_CARD_CA ? "a CA"
			                                   : "a blank",
			         have, admin, want);
			goto out;
		}
		fprintf(stderr,
		        "remove the card in reader %d (device %s) and insert the EP11 card of "
		        "administrator '%s' (device %s) into reader %d\n",
		        CARD_SIGKEY_READER, have, admin, want, CARD_SIGKEY_READER);
		asked = true;
		memcpy(old_id, info.device_id, KY_CARD_ID_LEN);
		if ((r = card_wait_gone(old_id, deadline, admin)) != 0)
			goto out;
	}
	if (info.blocked) {
		r = KY_ERR_CARD_BLOCKED;
		cli_fail(
		    r, subject,
		    "the EP11 card of administrator '%s' is blocked and signs nothing: unblock "
		    "it with a CA card of its zone ('kyok scup ep11-unblock'); nothing was sent",
		    admin);
		goto out;
	}
	if (memcmp(info.device_id, ref->device_id, KY_CARD_ID_LEN) != 0)
		fprintf(stderr,
		        "note: the EP11 card in reader %d (device %s) is a copy of administrator "
		        "'%s''s card (device %s): it holds the same signature key\n",
		        CARD_SIGKEY_READER, have, admin, want);
	memcpy(card_slot.ski, ref->ski, sizeof(card_slot.ski));
	r = 0;
out:
	if (r != 0) {
		card_done(card_slot.c);
		card_slot.c = NULL;
	}
	return r;
}

/* Verifies the PIN of the card in card_slot: the reader's PIN pad, else cli_card_pin. */
static int card_pin(const char *admin)
{
	int r = KY_ERR_INTERNAL, tries = -1;
	char err[CARD_SIGKEY_ERR], subject[160], prompt[160];
	char *pin = NULL;

	snprintf(subject, sizeof(subject), "reader %d '%s'", CARD_SIGKEY_READER, card_slot.reader);
	if (ky_card_has_pinpad(card_slot.c)) {
		fprintf(stderr,
		        "enter the PIN of the EP11 card of administrator '%s' on the PIN pad "
		        "of reader %d\n",
		        admin, CARD_SIGKEY_READER);
		r = ky_card_verify_pinpad(card_slot.c, 0x01, &tries, err, sizeof(err));
	} else {
		snprintf(prompt, sizeof(prompt), "PIN of the EP11 card of administrator '%s'",
		         admin);
		if ((r = cli_card_pin(prompt, &pin)) != 0)
			goto out;
		r = ky_card_verify(card_slot.c, 0x01, pin, strlen(pin), &tries, err, sizeof(err));
	}
	if (r == KY_ERR_CARD_PIN_WRONG && tries == 0) {
		r = KY_ERR_CARD_BLOCKED;
		cli_fail(
		    r, subject,
		    "EP11 card PIN wrong: the card is now blocked; unblock it with a CA card of "
		    "its zone ('kyok scup ep11-unblock'); nothing was sent");
		goto out;
	}
	if (r == KY_ERR_CARD_PIN_WRONG) {
		cli_fail(
		    r, subject,
		    "EP11 card PIN wrong: %d tr%s left before the card blocks; nothing was sent",
		    tries, tries == 1 ? "y" : "ies");
		goto out;
	}
	if (r == KY_ERR_CARD_BLOCKED) {
		cli_fail(
		    r, subject,
		    "unblock it with a CA card of its zone ('kyok scup ep11-unblock'); nothing "
		    "was sent");
		goto out;
	}
	if (r != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	r = 0;
out:
	cli_secret_free(pin);
	return r;
}

/* struct ky_ext_signer's sign for a selected card sigkey: SIGN, and when the card answers
 * that it needs its PIN (not verified since it was powered), the PIN then SIGN again. */
static int card_signer_sign(void *arg, const uint8_t *md, size_t mdlen, struct ky_buf *sig)
{
	int r = KY_ERR_INTERNAL;
	const struct cli_signer *s = arg;
	uint8_t b[256];
	size_t n = 0;
	char err[CARD_SIGKEY_ERR];

	card_said = true;
	if (mdlen != KY_CARD_DIGEST_LEN) {
		r = KY_ERR_INTERNAL;
		cli_fail(r, NULL, "a digest of %zu bytes to sign", mdlen);
		goto out;
	}
	r = ky_card_sign(card_slot.c, md, b, sizeof(b), &n, err, sizeof(err));
	if (r == KY_ERR_CARD_PIN_NEEDED) {
		if ((r = card_pin(s->name)) != 0)
			goto out;
		r = ky_card_sign(card_slot.c, md, b, sizeof(b), &n, err, sizeof(err));
	}
	if (r != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = ky_buf_append(sig, b, n)) != 0) {
		cli_fail(r, NULL, NULL);
		goto out;
	}
	card_said = false;
	r = 0;
out:
	return r;
}

int cli_card_signer_sign(const struct cli_signer *s, struct ky_buf *der)
{
	int r = KY_ERR_INTERNAL;
	struct ky_ext_signer ext = {X509_get0_pubkey(s->cert), card_signer_sign, (void *)s};
	char subject[160];

	if ((r = card_get(s->card, s->name)) != 0)
		goto out;
	card_said = false;
	if ((r = ky_cms_add_signer_ext(der, s->cert, &ext)) != 0) {
		snprintf(subject, sizeof(subject), "signature key '%s' (EP11 card)", s->name);
		if (r == KY_ERR_TOKEN_SIGNATURE) {
			r = KY_ERR_CARD_PROTOCOL;
			cli_fail(
			    r, subject,
			    "the card's signature does not verify under the certificate of the "
			    "signature key file: nothing was sent");
		} else if (!card_said) {
			cli_fail(r, subject, "nothing was sent");
		}
		if (r == KY_ERR_CARD_REMOVED) {
			/* The card went away under the session: it forgot its PIN. */
			ky_card_free(card_slot.c);
			card_slot.c = NULL;
		}
		goto out;
	}
	r = 0;
out:
	return r;
}
