/* card_probe: the card tests' window on PC/SC, through lib/card (libpcsclite and pcscd).
 *
 *   card_probe readers                        the readers, one a line
 *   card_probe wait N present|absent MS       waits on pcscd's state of reader N (1-based)
 *   card_probe session N                      a session with the card in reader N, driven
 *                                             by lines on stdin, one answer line each:
 *     open            (re)opens the session       select          SELECT of the kyok applet
 *     leave           ends the session, the card left powered (its PIN state kept)
 *     verify FILE     VERIFY of PIN 1 with the PIN in FILE (never on argv)
 *     verify-pinpad   VERIFY of PIN 1 typed on the reader's PIN pad
 *     verified        whether PIN 1 is verified   pinpad          whether the reader has one
 *     apdu HEX        one command: 4 header bytes, then data (chained when long)
 *     gensig          GENERATE SIGNATURE KEY: its SubjectPublicKeyInfo in hex
 *     sign HEX        SIGN of a SHA-512 digest (64 bytes in hex): the signature in hex
 *   Answers: "ok [DETAIL]" or "err SLUG: MESSAGE". */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/card.h"
#include "kyok/err.h"

static int probe_fail(int r, const char *err)
{
	printf("err %s: %s\n", ky_err_slug(r), err);
	return r;
}

static int probe_reader(struct ky_pcsc *p, const char *num, char name[KY_CARD_READER_MAX],
                        char *err, size_t errlen)
{
	long n = strtol(num, NULL, 10);

	return ky_pcsc_reader(p, n > 0 && n < 100 ? (unsigned)n : 0, name, err, errlen);
}

static void probe_hex(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02X", p[i]);
}

static int probe_unhex(const char *s, uint8_t *out, size_t max, size_t *n)
{
	size_t len = strlen(s);

	if (len % 2 != 0 || len / 2 > max)
		return KY_ERR_MALFORMED;
	*n = len / 2;
	return ky_hex_decode(s, out, *n);
}

static int probe_verify(struct ky_card *c, const char *file, char *err, size_t errlen)
{
	struct ky_buf pin = {0};
	int r, tries = -1;

	if ((r = ky_file_read(file, KY_CARD_PIN_MAX + 2, &pin)) != 0) {
		snprintf(err, errlen, "'%s': %s", file, ky_err_message(r));
		return r;
	}
	while (pin.len > 0 && pin.data[pin.len - 1] == '\n')
		pin.len--;
	r = ky_card_verify(c, 0x01, (const char *)pin.data, pin.len, &tries, err, errlen);
	ky_buf_free(&pin);
	return r;
}

static int probe_apdu(struct ky_card *c, const char *hex, char *err, size_t errlen)
{
	/* Room for a command longer than the library takes: it must refuse it. */
	static uint8_t cmd[KY_CARD_DATA_MAX + 64], resp[KY_CARD_DATA_MAX];
	size_t n = 0, got = 0;
	uint16_t sw = 0;
	int r;

	if (probe_unhex(hex, cmd, sizeof(cmd), &n) != 0 || n < 4) {
		snprintf(err, errlen, "'%.64s': give the command in hex, header first", hex);
		return KY_ERR_USAGE;
	}
	if ((r = ky_card_command(c, cmd, cmd + 4, n - 4, resp, sizeof(resp), &got, &sw, err,
	                         errlen)) != 0)
		return r;
	printf("ok %04X ", sw);
	probe_hex(resp, got);
	printf("\n");
	return 0;
}

static int probe_sign(struct ky_card *c, const char *hex, char *err, size_t errlen)
{
	uint8_t digest[KY_CARD_DIGEST_LEN], sig[256];
	size_t n = 0, got = 0;
	int r;

	if (probe_unhex(hex, digest, sizeof(digest), &n) != 0 || n != sizeof(digest)) {
		snprintf(err, errlen, "'%.64s': give a SHA-512 digest in hex", hex);
		return KY_ERR_USAGE;
	}
	if ((r = ky_card_sign(c, digest, sig, sizeof(sig), &got, err, errlen)) != 0)
		return r;
	printf("ok ");
	probe_hex(sig, got);
	printf("\n");
	return 0;
}

static int probe_session(struct ky_pcsc *p, const char *num)
{
	char line[2 * KY_CARD_DATA_MAX + 64], name[KY_CARD_READER_MAX], err[512];
	struct ky_card *c = NULL;
	int r = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin) != NULL) {
		char *arg;
		bool yes = false;

		line[strcspn(line, "\r\n")] = '\0';
		arg = strchr(line, ' ');
		if (arg != NULL)
			*arg++ = '\0';
		err[0] = '\0';
		if (strcmp(line, "open") == 0) {
			ky_card_free(c);
			c = NULL;
			if ((r = probe_reader(p, num, name, err, sizeof(err))) == 0 &&
			    (r = ky_card_open(p, name, &c, err, sizeof(err))) == 0)
				printf("ok %s\n", name);
		} else if (strcmp(line, "leave") == 0) {
			ky_card_free_keep(c);
			c = NULL;
			r = 0;
			printf("ok\n");
		} else if (c == NULL) {
			r = KY_ERR_USAGE;
			snprintf(err, sizeof(err), "no session: send 'open' first");
		} else if (strcmp(line, "select") == 0) {
			uint8_t info[256];
			size_t n = 0;

			if ((r = ky_card_select(c, info, sizeof(info), &n, err, sizeof(err))) ==
			    0) {
				printf("ok ");
				probe_hex(info, n);
				printf("\n");
			}
		} else if (strcmp(line, "verify") == 0 && arg != NULL) {
			if ((r = probe_verify(c, arg, err, sizeof(err))) == 0)
				printf("ok\n");
		} else if (strcmp(line, "verified") == 0) {
			if ((r = ky_card_pin_verified(c, 0x01, &yes, err, sizeof(err))) == 0)
				printf("ok %s\n", yes ? "yes" : "no");
		} else if (strcmp(line, "verify-pinpad") == 0) {
			int tries = -1;

			if ((r = ky_card_verify_pinpad(c, 0x01, &tries, err, sizeof(err))) == 0)
				printf("ok\n");
		} else if (strcmp(line, "pinpad") == 0) {
			r = 0;
			printf("ok %s\n", ky_card_has_pinpad(c) ? "yes" : "no");
		} else if (strcmp(line, "gensig") == 0) {
			uint8_t spki[512];
			size_t n = 0;

			if ((r = ky_card_sigkey_generate(c, spki, sizeof(spki), &n, err,
			                                 sizeof(err))) == 0) {
				printf("ok ");
				probe_hex(spki, n);
				printf("\n");
			}
		} else if (strcmp(line, "sign") == 0 && arg != NULL) {
			r = probe_sign(c, arg, err, sizeof(err));
		} else if (strcmp(line, "apdu") == 0 && arg != NULL) {
			r = probe_apdu(c, arg, err, sizeof(err));
		} else {
			r = KY_ERR_USAGE;
			snprintf(err, sizeof(err), "'%.64s': not a card_probe session command",
			         line);
		}
		if (r != 0)
			probe_fail(r, err);
		OPENSSL_cleanse(line, sizeof(line));
	}
	ky_card_free(c);
	return 0;
}

int main(int argc, char **argv)
{
	char err[512] = "", name[KY_CARD_READER_MAX];
	struct ky_pcsc *p = NULL;
	int r = KY_ERR_USAGE;

	if (argc < 2) {
		fprintf(stderr,
		        "usage: card_probe readers | wait N present|absent MS | session N\n");
		return 2;
	}
	if ((r = ky_pcsc_open(&p, err, sizeof(err))) != 0)
		goto out;
	if (strcmp(argv[1], "readers") == 0 && argc == 2) {
		char(*names)[KY_CARD_READER_MAX] = calloc(KY_CARD_READERS_MAX, sizeof(*names));
		size_t n = 0;

		if (names == NULL) {
			r = KY_ERR_NOMEM;
			snprintf(err, sizeof(err), "out of memory");
			goto out;
		}
		r = ky_pcsc_readers(p, names, KY_CARD_READERS_MAX, &n, err, sizeof(err));
		for (size_t i = 0; r == 0 && i < n; i++)
			printf("%s\n", names[i]);
		free(names);
	} else if (strcmp(argv[1], "wait") == 0 && argc == 5) {
		if ((r = probe_reader(p, argv[2], name, err, sizeof(err))) != 0)
			goto out;
		r = ky_pcsc_wait(p, name, strcmp(argv[3], "present") == 0,
		                 strtol(argv[4], NULL, 10), err, sizeof(err));
	} else if (strcmp(argv[1], "session") == 0 && argc == 3) {
		r = probe_session(p, argv[2]);
	} else {
		r = KY_ERR_USAGE;
		snprintf(err, sizeof(err), "'%s': not a card_probe command", argv[1]);
	}
out:
	ky_pcsc_free(p);
	if (r != 0) {
		fprintf(stderr, "card_probe: error %s: %s\n", ky_err_slug(r), err);
		return ky_err_exit(r);
	}
	return 0;
}
