/* Master key parts held by EP11 smart cards: the card form of a key part file, mk-add --card
 * (GENERATE KEY PART on the card in reader 2) and, for cryptounit-mk-load, the envelopes the
 * card makes of its part for each unit's importer key (ENVELOPE KEY PART), so that the part
 * never appears in the clear outside the card.
 * The file form of the record is in cli/card_part_file.c. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/anchor.h"
#include "cli/card_part.h"
#include "cli/cli.h"
#include "kyok/err.h"

#define CARD_PART_ERR     512
#define CARD_PART_ENV_MAX KY_CARD_DATA_MAX
/* How long cryptounit-mk-load waits for a card to be inserted or removed: a person is
 * fetching it. The wait itself is pcscd's notification, not a poll. */
#define CARD_PART_WAIT_MS   (5L * 60 * 1000)
#define CARD_PART_WAIT_TEXT "5 minutes"

/* ---- the card ---- */

/* The EP11 card's PIN: on the reader's PIN pad when it has one, else as every card PIN
 * (cli_card_pin: the next --card-pin-file, --card-pin-fd, or the terminal without echo).
 * A wrong PIN shows the tries left. */
static int card_part_pin(struct ky_card *c, const char *subject, const char *prompt)
{
	int r = KY_ERR_INTERNAL, tries = -1;
	char err[CARD_PART_ERR], *pin = NULL;

	if (ky_card_has_pinpad(c)) {
		fprintf(stderr, "enter the PIN on the PIN pad of reader %d\n", CARD_PART_READER);
		r = ky_card_verify_pinpad(c, 0x01, &tries, err, sizeof(err));
	} else {
		if ((r = cli_card_pin(prompt, &pin)) != 0)
			goto out;
		r = ky_card_verify(c, 0x01, pin, strlen(pin), &tries, err, sizeof(err));
	}
	if (r == KY_ERR_CARD_PIN_WRONG && tries > 0) {
		cli_fail(r, subject, "EP11 card PIN wrong: %d tr%s left before the card blocks",
		         tries, tries == 1 ? "y" : "ies");
		goto out;
	}
	if (r == KY_ERR_CARD_PIN_WRONG || r == KY_ERR_CARD_BLOCKED) {
		cli_fail(r, subject,
		         "EP11 card PIN wrong: the card is now blocked: unblock it with a CA card "
		         "of its zone ('kyok scup ep11-unblock')");
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

/* The card in reader 2 must be an EP11 card, not blocked. */
static int card_part_check_ep11(const struct ky_card_info *info, const char *subject)
{
	if (info->kind != KY_CARD_EP11) {
		cli_fail(KY_ERR_CARD_WRONG_KIND, subject,
		         "key parts are held on an EP11 card in reader %d", CARD_PART_READER);
		return KY_ERR_CARD_WRONG_KIND;
	}
	if (info->blocked) {
		cli_fail(KY_ERR_CARD_BLOCKED, subject,
		         "unblock it with a CA card of its zone ('kyok scup ep11-unblock')");
		return KY_ERR_CARD_BLOCKED;
	}
	return 0;
}

static int card_part_anchor(struct ky_card *c, const char *dir, const char *subject);

int cli_card_part_add(const char *path, const char *desc, struct cli_card_part *cp)
{
	int r = KY_ERR_INTERNAL;
	struct ky_pcsc *p = NULL;
	struct ky_card *c = NULL;
	struct ky_card_info info;
	char reader[KY_CARD_READER_MAX], subject[KY_CARD_READER_MAX + 32], err[CARD_PART_ERR];
	unsigned index = 0;

	memset(cp, 0, sizeof(*cp));
	if (!cli_card_part_desc_ok(desc, strlen(desc))) {
		r = KY_ERR_USAGE;
		cli_fail(r, "--description",
		         "a key part on a card takes 1 to %d printable ASCII characters",
		         KY_CARD_DESC_MAX);
		goto out;
	}
	if ((r = ky_pcsc_open(&p, err, sizeof(err))) != 0 ||
	    (r = ky_pcsc_reader(p, CARD_PART_READER, reader, err, sizeof(err))) != 0 ||
	    (r = ky_card_open(p, reader, &c, err, sizeof(err))) != 0 ||
	    (r = ky_card_status(c, &info, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	snprintf(subject, sizeof(subject), "reader %d '%s'", CARD_PART_READER, reader);
	if ((r = card_part_check_ep11(&info, subject)) != 0)
		goto out;
	if (info.parts >= KY_CARD_PARTS_MAX) {
		r = KY_ERR_CARD_FULL;
		cli_fail(r, subject, NULL);
		goto out;
	}
	if ((r = card_part_pin(c, subject, "PIN of the EP11 card in reader 2")) != 0)
		goto out;
	/* The part is bound to the instance's anchor it is made under (the card refuses a part
	 * without one, and a new anchor once it holds parts). */
	if ((r = card_part_anchor(c, cli_instance_dir(), subject)) != 0)
		goto out;
	if ((r = ky_card_part_generate(c, desc, &index, cp->vp, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	snprintf(cp->description, sizeof(cp->description), "%s", desc);
	memcpy(cp->zone_id, info.zone_id, KY_CARD_ID_LEN);
	memcpy(cp->device_id, info.device_id, KY_CARD_ID_LEN);
	cp->slot = index + 1;
	if ((r = cli_card_part_write(path, cp)) != 0) {
		cli_fail(r, path,
		         "the key part was made on the card (slot %u) but its record could not be "
		         "written",
		         cp->slot);
		goto out;
	}
	r = 0;
out:
	ky_card_free(c);
	ky_pcsc_free(p);
	return r;
}

/* ---- envelopes for cryptounit-mk-load ---- */

static int card_part_der(X509 *x, uint8_t **der, int *n)
{
	*der = NULL;
	if ((*n = i2d_X509(x, der)) <= 0) {
		*der = NULL;
		return KY_ERR_NOMEM;
	}
	return 0;
}

/* Registers the unit trust anchor of the instance in dir on the card (its PIN verified):
 * SET ANCHOR, whose answer (the certificate's SHA-256) is compared with the file's. A card's
 * key parts are bound to the anchor they were made under, so a card holding parts refuses
 * another instance's anchor. */
static int card_part_anchor(struct ky_card *c, const char *dir, const char *subject)
{
	int r = KY_ERR_INTERNAL;
	X509 *anchor = NULL;
	uint8_t *der = NULL, fp[32], card_fp[32];
	int len = 0;
	char err[CARD_PART_ERR], fp_hex[65];

	r = cli_anchor_cert(dir, &anchor);
	if (r == KY_ERR_NOT_FOUND) {
		r = KY_ERR_NO_ANCHOR;
		cli_fail(r, dir, "nothing was sent to the card");
		goto out;
	}
	if (r != 0) {
		cli_fail(r, dir, "cannot read the instance's anchor.crt");
		goto out;
	}
	if ((r = card_part_der(anchor, &der, &len)) != 0) {
		cli_fail(r, NULL, NULL);
		goto out;
	}
	if (EVP_Digest(der, (size_t)len, fp, NULL, EVP_sha256(), NULL) != 1) {
		r = KY_ERR_INTERNAL;
		cli_fail(r, NULL, "cannot hash the anchor certificate");
		goto out;
	}
	r = ky_card_set_anchor(c, der, (size_t)len, card_fp, err, sizeof(err));
	if (r == KY_ERR_CARD_NOT_ALLOWED) {
		cli_fail(r, subject,
		         "the card's key parts are bound to the unit trust anchor of another "
		         "instance (they were made for it): they can be loaded only into that "
		         "instance; nothing was sent to any crypto unit");
		goto out;
	}
	if (r != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if (CRYPTO_memcmp(card_fp, fp, sizeof(fp)) != 0) {
		r = KY_ERR_CARD_PROTOCOL;
		cli_fail(r, subject, "SET ANCHOR answered another certificate's fingerprint");
		goto out;
	}
	ky_hex_encode(fp, sizeof(fp), fp_hex);
	if (!cli_g.json)
		tke_note("unit trust anchor registered on the card: sha256 %s (%s/anchor.crt)",
		         fp_hex, dir);
	r = 0;
out:
	X509_free(anchor);
	OPENSSL_free(der);
	return r;
}

/* Waits for the card the record names in reader 2 and opens it. A card there that is not it
 * is refused (nothing sent to it), unless it is the card this run used last, which the
 * holder is asked to take out first. */
static int card_part_wait(struct ky_pcsc *p, const char *reader, const struct cli_card_part *cp,
                          const char *subject, struct ky_card **out, unsigned *nparts,
                          uint8_t last_device[KY_CARD_ID_LEN], bool *copy,
                          char have[2 * KY_CARD_ID_LEN + 1])
{
	int r = KY_ERR_INTERNAL;
	struct ky_card *c = NULL;
	struct ky_card_info info;
	char err[CARD_PART_ERR], want[2 * KY_CARD_ID_LEN + 1], zone[2 * KY_CARD_ID_LEN + 1];

	ky_hex_encode(cp->device_id, KY_CARD_ID_LEN, want);
	ky_hex_encode(cp->zone_id, KY_CARD_ID_LEN, zone);
	fprintf(stderr,
	        "insert the EP11 card holding key part '%s' (zone %.16s..., device %.16s..., "
	        "slot %u) into reader %d\n",
	        cp->description, zone, want, cp->slot, CARD_PART_READER);
	for (;;) {
		if ((r = ky_pcsc_wait(p, reader, true, CARD_PART_WAIT_MS, err, sizeof(err))) != 0) {
			cli_fail(r, subject,
			         "no card was inserted within " CARD_PART_WAIT_TEXT
			         ": nothing was sent to any crypto unit");
			goto out;
		}
		if ((r = ky_card_open(p, reader, &c, err, sizeof(err))) == 0)
			r = ky_card_status(c, &info, err, sizeof(err));
		if (r == KY_ERR_CARD_ABSENT || r == KY_ERR_CARD_REMOVED) {
			ky_card_free(c); /* taken out while being read: wait for a card again */
			c = NULL;
			continue;
		}
		if (r != 0) {
			cli_fail(r, NULL, "%s", err);
			goto out;
		}
		ky_hex_encode(info.device_id, KY_CARD_ID_LEN, have);
		*copy = false;
		if (memcmp(info.device_id, cp->device_id, KY_CARD_ID_LEN) == 0)
			break;
		/* Another card of the part's zone, not the one just used: perhaps a copy made
		 * with card-copy (the seed's backup cards); its slots are searched for the VP. */
		if (memcmp(info.zone_id, cp->zone_id, KY_CARD_ID_LEN) == 0 &&
		    memcmp(info.device_id, last_device, KY_CARD_ID_LEN) != 0) {
			*copy = true;
			break;
		}
		if (memcmp(info.device_id, last_device, KY_CARD_ID_LEN) != 0) {
			r = KY_ERR_CARD_PART_NOT_ON_CARD;
			cli_fail(
			    r, subject,
			    "the card in it is device %s of another zone; key part '%s' is held "
			    "by device %s (or a copy of it) of zone %.16s...: nothing was sent to "
			    "any card or crypto unit",
			    have, cp->description, want, zone);
			goto out;
		}
		ky_card_free(c);
		c = NULL;
		fprintf(stderr, "remove the EP11 card from reader %d\n", CARD_PART_READER);
		if ((r = ky_pcsc_wait(p, reader, false, CARD_PART_WAIT_MS, err, sizeof(err))) !=
		    0) {
			cli_fail(r, subject,
			         "the card was not removed within " CARD_PART_WAIT_TEXT
			         ": nothing was sent to any crypto unit");
			goto out;
		}
		memset(last_device, 0, KY_CARD_ID_LEN);
	}
	if ((r = card_part_check_ep11(&info, subject)) != 0)
		goto out;
	*nparts = info.parts;
	*out = c;
	c = NULL; /* transferred */
	r = 0;
out:
	ky_card_free(c);
	return r;
}

int cli_card_part_seal(const char *path, struct tke_run *run, struct ky_buf *sealed,
                       struct ky_keypart_info *info)
{
	static uint8_t last_device[KY_CARD_ID_LEN]; /* the card this run used last in reader 2 */
	int r = KY_ERR_INTERNAL;
	struct cli_card_part cp;
	struct ky_pcsc *p = NULL;
	struct ky_card *c = NULL;
	X509 *anchor = NULL, *importer = NULL, *identity = NULL;
	uint8_t *imp_der = NULL, *id_der = NULL, *env = NULL;
	int imp_len = 0, id_len = 0;
	uint8_t vp[KY_VP_LEN];
	char reader[KY_CARD_READER_MAX], subject[700], err[CARD_PART_ERR],
	    desc[KY_CARD_DESC_MAX + 1], prompt[160];
	char have[2 * KY_CARD_ID_LEN + 1];
	size_t env_len = 0;
	unsigned nparts = 0, slot = 0;
	bool copy = false;

	if ((r = cli_card_part_read(path, &cp)) != 0) {
		cli_fail(r, path, NULL);
		goto out;
	}
	snprintf(subject, sizeof(subject), "key part '%s' (%s)", cp.description, path);
	r = cli_anchor_cert(run->inst.dir, &anchor);
	if (r == KY_ERR_NOT_FOUND) {
		r = KY_ERR_NO_ANCHOR;
		cli_fail(r, run->inst.dir, "nothing was sent to any card or crypto unit");
		goto out;
	}
	if (r != 0) {
		cli_fail(r, run->inst.dir, "cannot read the instance's anchor.crt");
		goto out;
	}
	if ((env = malloc(CARD_PART_ENV_MAX)) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	if ((r = ky_pcsc_open(&p, err, sizeof(err))) != 0 ||
	    (r = ky_pcsc_reader(p, CARD_PART_READER, reader, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = card_part_wait(p, reader, &cp, subject, &c, &nparts, last_device, &copy, have)) !=
	    0)
		goto out;
	if (ky_hex_decode(have, last_device, KY_CARD_ID_LEN) != 0) {
		r = KY_ERR_INTERNAL;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	/* The recorded slot; on a copy, whichever slot holds the part's VP. */
	for (unsigned s = copy ? 1 : cp.slot; s <= nparts && slot == 0; s++) {
		if ((r = ky_card_part_info(c, s - 1, vp, desc, err, sizeof(err))) != 0) {
			cli_fail(r, NULL, "%s", err);
			goto out;
		}
		if (CRYPTO_memcmp(vp, cp.vp, KY_VP_LEN) == 0)
			slot = s;
		else if (!copy)
			break;
	}
	if (slot == 0) {
		r = KY_ERR_CARD_PART_NOT_ON_CARD;
		if (copy)
			cli_fail(r, subject,
			         "the EP11 card in reader %d (device %s) is of the part's zone but "
			         "holds "
			         "no part with its VP: nothing was sent to any card or crypto unit",
			         CARD_PART_READER, have);
		else
			cli_fail(
			    r, subject,
			    "the card's slot %u does not hold the part the file records (its VP): "
			    "nothing was sent to any card or crypto unit",
			    cp.slot);
		goto out;
	}
	/* The record is plain text: its VP and slot could be edited to name another part of the
	 * card, whose VP KEY PART INFO tells anyone. The card's own description must match too,
	 * and the holder sees what the card holds before giving the PIN. */
	if (strcmp(desc, cp.description) != 0) {
		r = KY_ERR_CARD_PART_NOT_ON_CARD;
		cli_fail(
		    r, subject,
		    "the card's part with the recorded VP (slot %u) is described '%s' on the "
		    "card: the record is not the card's; nothing was sent to any card or crypto "
		    "unit",
		    slot, desc);
		goto out;
	}
	{
		char vp_hex[2 * KY_VP_LEN + 1];

		ky_hex_encode(vp, KY_VP_LEN, vp_hex);
		tke_note("the EP11 card in reader %d holds, in slot %u, key part '%s' with vp %s",
		         CARD_PART_READER, slot, desc, vp_hex);
	}
	if (copy)
		tke_note(
		    "the EP11 card in reader %d (device %.16s...) is a copy of the card holding "
		    "key part '%s': its slot %u holds the part",
		    CARD_PART_READER, have, cp.description, slot);
	snprintf(prompt, sizeof(prompt), "PIN of the EP11 card holding key part '%s'",
	         cp.description);
	if ((r = card_part_pin(c, subject, prompt)) != 0)
		goto out;
	if ((r = card_part_anchor(c, run->inst.dir, subject)) != 0)
		goto out;
	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		char usubj[128];

		if (!u->reachable || u->skip)
			continue;
		snprintf(usubj, sizeof(usubj), "crypto unit %d (%s)", u->u.number, u->u.zone);
		/* unit_importer checks the importer against the unit's pinned identity. */
		if ((r = unit_importer(&run->inst, &u->u, &importer)) != 0 ||
		    (r = unit_identity_cert(&run->inst, &u->u, &identity)) != 0)
			goto out;
		if ((r = card_part_der(importer, &imp_der, &imp_len)) != 0 ||
		    (r = card_part_der(identity, &id_der, &id_len)) != 0) {
			cli_fail(r, usubj, NULL);
			goto out;
		}
		if ((r = ky_card_part_envelope(c, slot - 1, imp_der, (size_t)imp_len, id_der,
		                               (size_t)id_len, env, CARD_PART_ENV_MAX, &env_len,
		                               err, sizeof(err))) != 0) {
			cli_fail(r, usubj, "%s", err);
			goto out;
		}
		if ((r = ky_buf_append(&sealed[i], env, env_len)) != 0) {
			cli_fail(r, NULL, NULL);
			goto out;
		}
		X509_free(importer);
		X509_free(identity);
		importer = identity = NULL;
		OPENSSL_free(imp_der);
		OPENSSL_free(id_der);
		imp_der = id_der = NULL;
	}
	memset(info, 0, sizeof(*info));
	snprintf(info->description, sizeof(info->description), "%s", cp.description);
	memcpy(info->vp, cp.vp, KY_VP_LEN);
	tke_note("key part '%s': sealed on its EP11 card to every selected crypto unit",
	         cp.description);
	r = 0;
out:
	ky_card_free(c);
	ky_pcsc_free(p);
	X509_free(anchor);
	X509_free(importer);
	X509_free(identity);
	OPENSSL_free(imp_der);
	OPENSSL_free(id_der);
	free(env);
	return r;
}
