/* Smart cards through PC/SC (libpcsclite talking to pcscd): see include/kyok/card.h. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <winscard.h>
#include <reader.h>

#include "kyok/card.h"
#include "kyok/err.h"

#define CARD_CHAIN_PIECE 255
#define CARD_APDU_MAX    (5 + CARD_CHAIN_PIECE + 1)
#define CARD_RAPDU_MAX   (256 + 2)
#define CARD_CLA_CHAIN   0x10
#define CARD_INS_VERIFY  0x20
#define CARD_INS_GETRESP 0xC0

struct ky_pcsc {
	SCARDCONTEXT ctx;
};

struct ky_card {
	SCARDHANDLE h;
	DWORD protocol;
	char reader[KY_CARD_READER_MAX];
	uint8_t atr[MAX_ATR_SIZE];
	size_t atr_len;
	DWORD verify_ioctl;  /* FEATURE_VERIFY_PIN_DIRECT, 0 when the reader has no PIN pad */
	bool gone;           /* removed or reset under this session */
	bool in_transaction; /* a session's; a card-keep handle has none */
};

/* A PC/SC return code as one of ours. In a session, losing the card, the reader or the
 * service all mean the same to the caller: the card's PIN state is gone. */
static int pcsc_err(LONG rv, bool session)
{
	switch (rv) {
	case SCARD_E_NO_SERVICE:
	case SCARD_E_SERVICE_STOPPED:
	case SCARD_E_INVALID_HANDLE:
	case SCARD_E_READER_UNAVAILABLE:
		return session ? KY_ERR_CARD_REMOVED : KY_ERR_PCSC_UNAVAILABLE;
	case SCARD_E_NO_READERS_AVAILABLE:
	case SCARD_E_UNKNOWN_READER:
		return KY_ERR_CARD_NO_READER;
	case SCARD_W_REMOVED_CARD:
	case SCARD_W_RESET_CARD:
	case SCARD_E_NO_SMARTCARD:
		return session ? KY_ERR_CARD_REMOVED : KY_ERR_CARD_ABSENT;
	case SCARD_E_SHARING_VIOLATION:
		return KY_ERR_CARD_BUSY;
	case SCARD_E_TIMEOUT:
		return KY_ERR_CARD_ABSENT;
	default:
		return KY_ERR_CARD_PROTOCOL;
	}
}

static int pcsc_fail(LONG rv, bool session, const char *what, const char *reader, char *err,
                     size_t errlen)
{
	int r = pcsc_err(rv, session);

	snprintf(err, errlen, "%s%s%s%s: %s (PC/SC: %s)", what, reader != NULL ? " '" : "",
	         reader != NULL ? reader : "", reader != NULL ? "'" : "", ky_err_message(r),
	         pcsc_stringify_error(rv));
	return r;
}

int ky_pcsc_open(struct ky_pcsc **out, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_pcsc *p = NULL;
	LONG rv;

	if ((p = calloc(1, sizeof(*p))) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &p->ctx);
	if (rv != SCARD_S_SUCCESS) {
		r = pcsc_fail(rv, false, "connecting to pcscd", NULL, err, errlen);
		free(p);
		p = NULL;
		goto out;
	}
	*out = p;
	p = NULL; /* transferred */
	r = 0;
out:
	return r;
}

void ky_pcsc_free(struct ky_pcsc *p)
{
	if (p == NULL)
		return;
	(void)SCardReleaseContext(p->ctx);
	free(p);
}

int ky_pcsc_readers(struct ky_pcsc *p, char names[][KY_CARD_READER_MAX], size_t max, size_t *n,
                    char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	char *list = NULL;
	const char *s;
	DWORD len = SCARD_AUTOALLOCATE;
	LONG rv;

	*n = 0;
	rv = SCardListReaders(p->ctx, NULL, (LPSTR)&list, &len);
	if (rv == SCARD_E_NO_READERS_AVAILABLE) {
		r = 0;
		goto out;
	}
	if (rv != SCARD_S_SUCCESS) {
		r = pcsc_fail(rv, false, "listing the card readers", NULL, err, errlen);
		list = NULL;
		goto out;
	}
	/* A multi-string: names ended by NUL, the list by an empty name. */
	for (s = list; s < list + len && *s != '\0'; s += strlen(s) + 1) {
		if (*n == max || strlen(s) >= KY_CARD_READER_MAX) {
			r = KY_ERR_TOO_LARGE;
			snprintf(err, errlen,
			         "listing the card readers: more than %zu readers, or "
			         "a name longer than %d characters",
			         max, KY_CARD_READER_MAX - 1);
			goto out;
		}
		snprintf(names[*n], KY_CARD_READER_MAX, "%s", s);
		(*n)++;
	}
	r = 0;
out:
	if (list != NULL)
		(void)SCardFreeMemory(p->ctx, list);
	return r;
}

int ky_pcsc_reader(struct ky_pcsc *p, unsigned number, char name[KY_CARD_READER_MAX], char *err,
                   size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	char(*names)[KY_CARD_READER_MAX] = NULL;
	size_t n = 0;

	if ((names = calloc(KY_CARD_READERS_MAX, sizeof(*names))) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if ((r = ky_pcsc_readers(p, names, KY_CARD_READERS_MAX, &n, err, errlen)) != 0)
		goto out;
	if (number == 0 || number > n) {
		r = KY_ERR_CARD_NO_READER;
		snprintf(err, errlen, "card reader %u: %s (%zu connected)", number,
		         ky_err_message(r), n);
		goto out;
	}
	snprintf(name, KY_CARD_READER_MAX, "%s", names[number - 1]);
	r = 0;
out:
	free(names);
	return r;
}

static long card_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ky_pcsc_wait(struct ky_pcsc *p, const char *reader, bool present, long timeout_ms, char *err,
                 size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	SCARD_READERSTATE st = {.szReader = reader, .dwCurrentState = SCARD_STATE_UNAWARE};
	long deadline = card_now_ms() + timeout_ms;
	LONG rv;

	for (;;) {
		long left = timeout_ms < 0 ? 0 : deadline - card_now_ms();
		DWORD ev;

		rv = left < 0 ? SCARD_E_TIMEOUT
		              : SCardGetStatusChange(
		                    p->ctx, timeout_ms < 0 ? INFINITE : (DWORD)left, &st, 1);
		if (rv == SCARD_E_TIMEOUT) {
			r = present ? KY_ERR_CARD_ABSENT : KY_ERR_CARD_REMOVED;
			snprintf(err, errlen, "card reader '%s': the card is still %s after %ld ms",
			         reader, present ? "absent" : "present", timeout_ms);
			goto out;
		}
		if (rv != SCARD_S_SUCCESS) {
			r = pcsc_fail(rv, false, "waiting on card reader", reader, err, errlen);
			goto out;
		}
		ev = st.dwEventState;
		if ((ev & (SCARD_STATE_UNKNOWN | SCARD_STATE_UNAVAILABLE)) != 0) {
			r = KY_ERR_CARD_NO_READER;
			snprintf(err, errlen, "card reader '%s': %s", reader, ky_err_message(r));
			goto out;
		}
		if (present && (ev & SCARD_STATE_PRESENT) != 0 && (ev & SCARD_STATE_MUTE) == 0)
			break;
		if (!present && (ev & SCARD_STATE_EMPTY) != 0)
			break;
		st.dwCurrentState = ev & ~(DWORD)SCARD_STATE_CHANGED;
	}
	r = 0;
out:
	return r;
}

uint32_t ky_card_feature(const uint8_t *list, size_t n, uint8_t tag)
{
	size_t i;

	for (i = 0; i + 6 <= n; i += 6) {
		if (list[i + 1] != 4)
			return 0;
		if (list[i] == tag)
			return (uint32_t)list[i + 2] << 24 | (uint32_t)list[i + 3] << 16 |
			       (uint32_t)list[i + 4] << 8 | list[i + 5];
	}
	return 0;
}

/* The reader's PIN pad, when it announces one. */
static DWORD card_find_pinpad(SCARDHANDLE h)
{
	uint8_t buf[256];
	DWORD len = 0;

	if (SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, buf, sizeof(buf), &len) !=
	    SCARD_S_SUCCESS)
		return 0;
	return ky_card_feature(buf, len, FEATURE_VERIFY_PIN_DIRECT);
}

int ky_card_open(struct ky_pcsc *p, const char *reader, struct ky_card **out, char *err,
                 size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_card *c = NULL;
	char name[KY_CARD_READER_MAX];
	DWORD name_len = sizeof(name), state, atr_len = MAX_ATR_SIZE;
	LONG rv;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	snprintf(c->reader, sizeof(c->reader), "%s", reader);
	/* Exclusive: no other program sends the card an APDU while the session is open. When
	 * another program holds the card shared (a 'kyok tke card-keep' keeping it powered),
	 * the session is a shared connection inside a PC/SC transaction instead, which keeps
	 * every other handle from sending, resetting or powering off the card until it ends
	 * (another kyok session then waits for this one). */
	rv = SCardConnect(p->ctx, reader, SCARD_SHARE_EXCLUSIVE,
	                  SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &c->h, &c->protocol);
	if (rv == SCARD_E_SHARING_VIOLATION) {
		rv = SCardConnect(p->ctx, reader, SCARD_SHARE_SHARED,
		                  SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &c->h, &c->protocol);
		if (rv == SCARD_S_SUCCESS) {
			c->in_transaction = true;
			if ((rv = SCardBeginTransaction(c->h)) != SCARD_S_SUCCESS) {
				r = pcsc_fail(rv, false,
				              "taking the card for this session in reader", reader,
				              err, errlen);
				(void)SCardDisconnect(c->h, SCARD_LEAVE_CARD);
				free(c);
				c = NULL;
				goto out;
			}
		}
	}
	if (rv != SCARD_S_SUCCESS) {
		r = pcsc_fail(rv, false, "opening the card in reader", reader, err, errlen);
		free(c);
		c = NULL;
		goto out;
	}
	rv = SCardStatus(c->h, name, &name_len, &state, &c->protocol, c->atr, &atr_len);
	if (rv != SCARD_S_SUCCESS) {
		r = pcsc_fail(rv, true, "reading the card's status in reader", reader, err, errlen);
		goto out;
	}
	c->atr_len = atr_len;
	c->verify_ioctl = card_find_pinpad(c->h);
	*out = c;
	c = NULL; /* transferred */
	r = 0;
out:
	ky_card_free(c);
	return r;
}

static void card_close(struct ky_card *c, DWORD disposition)
{
	if (c == NULL)
		return;
	if (c->in_transaction)
		(void)SCardEndTransaction(c->h, SCARD_LEAVE_CARD);
	(void)SCardDisconnect(c->h, disposition);
	free(c);
}

void ky_card_free(struct ky_card *c)
{
	card_close(c, SCARD_RESET_CARD);
}

void ky_card_free_keep(struct ky_card *c)
{
	card_close(c, SCARD_LEAVE_CARD);
}

int ky_card_keep(struct ky_pcsc *p, const char *reader, struct ky_card **out, char *err,
                 size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_card *c = NULL;
	LONG rv;

	*out = NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		return r;
	}
	snprintf(c->reader, sizeof(c->reader), "%s", reader);
	rv = SCardConnect(p->ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                  &c->h, &c->protocol);
	if (rv != SCARD_S_SUCCESS) {
		r = pcsc_fail(rv, false, "holding the card in reader", reader, err, errlen);
		free(c);
		return r;
	}
	*out = c;
	return 0;
}

const char *ky_card_reader(const struct ky_card *c)
{
	return c->reader;
}

size_t ky_card_atr(const struct ky_card *c, uint8_t *atr, size_t max)
{
	if (max < c->atr_len)
		return 0;
	memcpy(atr, c->atr, c->atr_len);
	return c->atr_len;
}

bool ky_card_has_pinpad(const struct ky_card *c)
{
	return c->verify_ioctl != 0;
}

/* One APDU across the reader. */
static int card_transmit(struct ky_card *c, const uint8_t *apdu, size_t n, uint8_t *rapdu,
                         size_t *rlen, char *err, size_t errlen)
{
	DWORD len = CARD_RAPDU_MAX;
	LONG rv;

	if (c->gone) {
		snprintf(err, errlen, "card in reader '%s': %s", c->reader,
		         ky_err_message(KY_ERR_CARD_REMOVED));
		return KY_ERR_CARD_REMOVED;
	}
	rv = SCardTransmit(c->h, c->protocol == SCARD_PROTOCOL_T0 ? SCARD_PCI_T0 : SCARD_PCI_T1,
	                   apdu, (DWORD)n, NULL, rapdu, &len);
	if (rv != SCARD_S_SUCCESS) {
		int r = pcsc_fail(rv, true, "sending a command to the card in reader", c->reader,
		                  err, errlen);
		if (r == KY_ERR_CARD_REMOVED)
			c->gone = true;
		return r;
	}
	if (len < 2) {
		snprintf(err, errlen, "card in reader '%s': an answer without a status word: %s",
		         c->reader, ky_err_message(KY_ERR_CARD_PROTOCOL));
		return KY_ERR_CARD_PROTOCOL;
	}
	*rlen = len;
	return 0;
}

int ky_card_command(struct ky_card *c, const uint8_t hdr[4], const uint8_t *data, size_t n,
                    uint8_t *resp, size_t max, size_t *resp_len, uint16_t *sw, char *err,
                    size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	uint8_t apdu[CARD_APDU_MAX], rapdu[CARD_RAPDU_MAX];
	size_t off = 0, rlen = 0, got = 0;
	bool asked = false; /* a GET RESPONSE was sent */

	*resp_len = 0;
	if (n > KY_CARD_DATA_MAX) {
		r = KY_ERR_TOO_LARGE;
		snprintf(err, errlen, "a card command of %zu bytes: at most %d", n,
		         KY_CARD_DATA_MAX);
		goto out;
	}
	/* The command, in pieces; every piece but the last must be accepted with 9000. */
	for (;;) {
		size_t piece = n - off > CARD_CHAIN_PIECE ? CARD_CHAIN_PIECE : n - off, len = 4;
		bool last = off + piece == n;

		memcpy(apdu, hdr, 4);
		if (!last)
			apdu[0] |= CARD_CLA_CHAIN;
		if (piece > 0) {
			apdu[len++] = (uint8_t)piece;
			memcpy(apdu + len, data + off, piece);
			len += piece;
		}
		if (last && max > 0)
			apdu[len++] = 0x00; /* Le: up to 256 bytes */
		r = card_transmit(c, apdu, len, rapdu, &rlen, err, errlen);
		OPENSSL_cleanse(apdu, sizeof(apdu));
		if (r != 0)
			goto out;
		off += piece;
		*sw = (uint16_t)(rapdu[rlen - 2] << 8 | rapdu[rlen - 1]);
		if (last || *sw != 0x9000)
			break;
	}
	/* The answer, in pieces: 61xx says xx more bytes wait (00: 256 or more). */
	for (;;) {
		size_t body = rlen - 2;

		if (got + body > max) {
			r = KY_ERR_TOO_LARGE;
			snprintf(err, errlen,
			         "card in reader '%s': an answer longer than %zu bytes", c->reader,
			         max);
			goto out;
		}
		if (body > 0) {
			memcpy(resp + got, rapdu, body);
			got += body;
		}
		if ((*sw >> 8) != 0x61)
			break;
		if (body == 0 && asked) {
			r = KY_ERR_CARD_PROTOCOL;
			snprintf(err, errlen,
			         "card in reader '%s': GET RESPONSE gave nothing and "
			         "asked for more: %s",
			         c->reader, ky_err_message(r));
			goto out;
		}
		asked = true;
		apdu[0] = 0x00; /* GET RESPONSE is interindustry, whatever the command's CLA */
		apdu[1] = CARD_INS_GETRESP;
		apdu[2] = 0x00;
		apdu[3] = 0x00;
		apdu[4] = (uint8_t)*sw;
		if ((r = card_transmit(c, apdu, 5, rapdu, &rlen, err, errlen)) != 0)
			goto out;
		*sw = (uint16_t)(rapdu[rlen - 2] << 8 | rapdu[rlen - 1]);
	}
	*resp_len = got;
	r = 0;
out:
	if (r != 0 && resp != NULL)
		OPENSSL_cleanse(resp, max);
	OPENSSL_cleanse(rapdu, sizeof(rapdu));
	return r;
}

int ky_card_select(struct ky_card *c, uint8_t *info, size_t max, size_t *info_len, char *err,
                   size_t errlen)
{
	static const uint8_t hdr[4] = {0x00, 0xA4, 0x04, 0x00};
	static const uint8_t aid[KY_CARD_AID_LEN] = KY_CARD_AID;
	int r = KY_ERR_INTERNAL;
	uint16_t sw = 0;

	if ((r = ky_card_command(c, hdr, aid, sizeof(aid), info, max, info_len, &sw, err,
	                         errlen)) != 0)
		goto out;
	if (sw != 0x9000) {
		r = KY_ERR_CARD_PROTOCOL;
		snprintf(err, errlen,
		         "card in reader '%s': no kyok applet (SELECT answered "
		         "%04X): %s",
		         c->reader, sw, ky_err_message(r));
		goto out;
	}
	r = 0;
out:
	return r;
}

/* What a VERIFY's status word means. */
static int card_verify_sw(struct ky_card *c, uint16_t sw, int *tries_left, char *err, size_t errlen)
{
	if (sw == 0x9000)
		return 0;
	if ((sw & 0xFFF0) == 0x63C0) {
		*tries_left = sw & 0x0F;
		snprintf(err, errlen, "card in reader '%s': %s; %d tries left", c->reader,
		         ky_err_message(KY_ERR_CARD_PIN_WRONG), *tries_left);
		return KY_ERR_CARD_PIN_WRONG;
	}
	if (sw == 0x6983) {
		*tries_left = 0;
		snprintf(err, errlen, "card in reader '%s': %s", c->reader,
		         ky_err_message(KY_ERR_CARD_BLOCKED));
		return KY_ERR_CARD_BLOCKED;
	}
	snprintf(err, errlen, "card in reader '%s': VERIFY answered %04X: %s", c->reader, sw,
	         ky_err_message(KY_ERR_CARD_PROTOCOL));
	return KY_ERR_CARD_PROTOCOL;
}

/* VERIFY typed on the reader's PIN pad: the reader puts the PIN (ASCII, its own length)
 * into the APDU it sends to the card; the workstation never sees it. */
static int card_verify_pinpad(struct ky_card *c, uint8_t pin_ref, uint16_t *sw, char *err,
                              size_t errlen)
{
	uint8_t buf[sizeof(PIN_VERIFY_STRUCTURE) + 5], out[CARD_RAPDU_MAX];
	PIN_VERIFY_STRUCTURE *v = (PIN_VERIFY_STRUCTURE *)buf;
	DWORD len = 0;
	LONG rv;

	if (c->gone) {
		snprintf(err, errlen, "card in reader '%s': %s", c->reader,
		         ky_err_message(KY_ERR_CARD_REMOVED));
		return KY_ERR_CARD_REMOVED;
	}
	memset(buf, 0, sizeof(buf));
	v->bmFormatString = 0x82; /* units are bytes, PIN at the start of the data, ASCII */
	v->wPINMaxExtraDigit = KY_CARD_PIN_MIN << 8 | KY_CARD_PIN_MAX; /* characters */
	v->bEntryValidationCondition = 0x02;                           /* the OK key */
	v->bNumberMessage = 0x01;
	v->wLangId = 0x0409;
	v->ulDataLength = 5;
	v->abData[0] = 0x00;
	v->abData[1] = CARD_INS_VERIFY;
	v->abData[2] = 0x00;
	v->abData[3] = pin_ref;
	v->abData[4] = 0x00; /* Lc: the reader sets it */
	rv = SCardControl(c->h, c->verify_ioctl, buf, sizeof(buf), out, sizeof(out), &len);
	if (rv != SCARD_S_SUCCESS) {
		int r = pcsc_fail(rv, true, "PIN entry on the PIN pad of reader", c->reader, err,
		                  errlen);
		if (r == KY_ERR_CARD_REMOVED)
			c->gone = true;
		return r;
	}
	if (len != 2) {
		snprintf(err, errlen, "PIN pad of reader '%s': an answer of %lu bytes: %s",
		         c->reader, (unsigned long)len, ky_err_message(KY_ERR_CARD_PROTOCOL));
		return KY_ERR_CARD_PROTOCOL;
	}
	*sw = (uint16_t)(out[0] << 8 | out[1]);
	return 0;
}

int ky_card_verify(struct ky_card *c, uint8_t pin_ref, const char *pin, size_t pin_len,
                   int *tries_left, char *err, size_t errlen)
{
	const uint8_t hdr[4] = {0x00, CARD_INS_VERIFY, 0x00, pin_ref};
	int r = KY_ERR_INTERNAL;
	uint16_t sw = 0;
	size_t none = 0;

	*tries_left = -1;
	if (pin == NULL || pin_len < KY_CARD_PIN_MIN || pin_len > KY_CARD_PIN_MAX) {
		r = KY_ERR_USAGE;
		snprintf(err, errlen, "a card PIN has %d to %d characters", KY_CARD_PIN_MIN,
		         KY_CARD_PIN_MAX);
		goto out;
	}
	if ((r = ky_card_command(c, hdr, (const uint8_t *)pin, pin_len, NULL, 0, &none, &sw, err,
	                         errlen)) != 0)
		goto out;
	if ((r = card_verify_sw(c, sw, tries_left, err, errlen)) != 0)
		goto out;
	r = 0;
out:
	return r;
}

int ky_card_verify_pinpad(struct ky_card *c, uint8_t pin_ref, int *tries_left, char *err,
                          size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	uint16_t sw = 0;

	*tries_left = -1;
	if (!ky_card_has_pinpad(c)) {
		r = KY_ERR_USAGE;
		snprintf(err, errlen, "reader '%s' has no PIN pad: ask for the PIN", c->reader);
		goto out;
	}
	if ((r = card_verify_pinpad(c, pin_ref, &sw, err, errlen)) != 0)
		goto out;
	if ((r = card_verify_sw(c, sw, tries_left, err, errlen)) != 0)
		goto out;
	r = 0;
out:
	return r;
}

int ky_card_pin_verified(struct ky_card *c, uint8_t pin_ref, bool *verified, char *err,
                         size_t errlen)
{
	const uint8_t hdr[4] = {0x00, CARD_INS_VERIFY, 0x00, pin_ref};
	int r = KY_ERR_INTERNAL, tries = -1;
	uint16_t sw = 0;
	size_t none = 0;

	*verified = false;
	if ((r = ky_card_command(c, hdr, NULL, 0, NULL, 0, &none, &sw, err, errlen)) != 0)
		goto out;
	r = card_verify_sw(c, sw, &tries, err, errlen);
	if (r == KY_ERR_CARD_PIN_WRONG) {
		r = 0; /* not verified; that is the answer, not an error */
		goto out;
	}
	if (r != 0)
		goto out;
	*verified = true;
	r = 0;
out:
	return r;
}
