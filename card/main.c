/* kyok-card: a software smart card in a virtual reader. It connects to a vpcd reader of
 * pcscd (the vsmartcard driver) as the card and answers the reader's messages: each is a
 * 2-byte big-endian length, then either one control byte (0 power off, 1 power on, 2 reset,
 * 4 send the ATR) or a command APDU. The ATR and every APDU are answered with a
 * length-prefixed response; power and reset get no answer. Connected = card inserted;
 * closed or SIGTERM = card removed. The applet (card/applet.h) does the rest. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "card/applet.h"
#include "kyok/common.h"
#include "kyok/err.h"

#define CARD_WAIT_DEFAULT 30  /* seconds to wait for the reader to accept the card */
#define CARD_RETRY_MS     100 /* between two connection attempts */
#define CARD_MSG_MAX      65535
#define CARD_RESP_MAX     (65536 + 2)

enum vpcd_ctrl {
	VPCD_OFF = 0,
	VPCD_ON = 1,
	VPCD_RESET = 2,
	VPCD_ATR = 4,
};

static const char card_usage[] =
    "usage: kyok-card --eeprom FILE --chip-key FILE --port N [--host ADDR] [--wait SECONDS]\n"
    "\n"
    "A software smart card (the kyok applet) in a virtual card reader: it connects to the\n"
    "vpcd reader of pcscd listening on ADDR:N as the card in that reader. Running = inserted;\n"
    "stopped (SIGTERM, SIGINT) = removed. When the reader closes the connection (pcscd\n"
    "stopped or restarted) the card is powered off and connects again, as a card left in\n"
    "its reader.\n"
    "\n"
    "  --eeprom FILE    the card's memory (created as a blank card when missing); mode 0600\n"
    "  --chip-key FILE  the key that encrypts the EEPROM file (created when missing); 0600\n"
    "  --port N         the reader's TCP port (the vpcd reader.conf CHANNELID for its first\n"
    "                   reader, that plus 1 for its second)\n"
    "  --host ADDR      the reader's address (default 127.0.0.1)\n"
    "  --wait SECONDS   how long to try to reach the reader, at start and after it closed\n"
    "                   the connection, before giving up (default 30)\n"
    "  --help           this text\n"
    "\n"
    "A kyok-card is a software card: it is as safe as the machine it runs on.\n"
    "Exit status: 0 when removed, 1 internal error, 2 wrong usage, 3 a bad EEPROM or chip\n"
    "key file, 6 the reader unreachable or breaking the vpcd protocol.\n";

/* SIGTERM and SIGINT stay blocked except inside ppoll: they can only arrive there. */
static volatile sig_atomic_t card_removed;

static void card_on_signal(int sig)
{
	(void)sig;
	card_removed = 1;
}

static long card_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready for events, or ms milliseconds when fd < 0 (-1: forever).
 * 1 ready, 0 timeout, -1 removed (a signal), -2 error. */
static int card_wait(int fd, short events, int ms, const sigset_t *open)
{
	struct pollfd p = {.fd = fd, .events = events};
	struct timespec ts, *tsp = NULL;
	int n;

	if (ms >= 0) {
		ts.tv_sec = ms / 1000;
		ts.tv_nsec = (long)(ms % 1000) * 1000000;
		tsp = &ts;
	}
	n = ppoll(&p, fd >= 0 ? 1 : 0, tsp, open);
	if (card_removed)
		return -1;
	if (n < 0)
		return errno == EINTR ? 0 : -2;
	return n > 0 ? 1 : 0;
}

/* Reads exactly n bytes. 0, 1 when the reader closed the connection, -1 removed, -2 error. */
static int card_read(int fd, uint8_t *p, size_t n, const sigset_t *open)
{
	while (n > 0) {
		ssize_t got;
		int w = card_wait(fd, POLLIN, -1, open);

		if (w < 0)
			return w;
		if (w == 0)
			continue;
		got = read(fd, p, n);
		if (got < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (got < 0)
			return errno == ECONNRESET ? 1 : -2;
		if (got == 0)
			return 1;
		p += got;
		n -= (size_t)got;
	}
	return 0;
}

static int card_write(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return errno == EPIPE || errno == ECONNRESET ? 1 : -2;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Connects to the reader, retrying until wait_s seconds have passed. The socket, or -1 with
 * err set (-2 when removed meanwhile). */
static int card_connect(const char *host, const char *port, int wait_s, const sigset_t *open,
                        char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai = NULL;
	long deadline = card_now_ms() + (long)wait_s * 1000;
	int fd = -1, e, last = 0;

	if ((e = getaddrinfo(host, port, &hints, &ai)) != 0) {
		snprintf(err, errlen, "reader address '%s' port %s: %s", host, port,
		         gai_strerror(e));
		return -1;
	}
	for (;;) {
		struct addrinfo *a;

		for (a = ai; a != NULL; a = a->ai_next) {
			fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
			if (fd < 0) {
				last = errno;
				continue;
			}
			if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
				goto done;
			last = errno;
			close(fd);
			fd = -1;
		}
		if (card_now_ms() >= deadline)
			break;
		if (card_wait(-1, 0, CARD_RETRY_MS, open) < 0) {
			fd = -2;
			goto done;
		}
	}
	snprintf(err, errlen, "reader %s:%s did not accept the card within %d s: %s", host, port,
	         wait_s, strerror(last));
done:
	freeaddrinfo(ai);
	return fd;
}

/* Serves the reader on fd until it closes the connection (1), the card is removed (-1), or
 * the reader breaks the protocol (-2, err set). */
static int card_serve(struct kc_card *c, int fd, uint8_t *msg, uint8_t *resp, const sigset_t *open,
                      char *err, size_t errlen)
{
	for (;;) {
		uint8_t hdr[2];
		size_t len, rlen = 0;
		int r;

		if ((r = card_read(fd, hdr, sizeof(hdr), open)) != 0)
			goto io;
		len = (size_t)hdr[0] << 8 | hdr[1];
		if (len == 0) {
			snprintf(err, errlen,
			         "the reader sent an empty message: not the vpcd "
			         "protocol");
			return -2;
		}
		if ((r = card_read(fd, msg, len, open)) != 0)
			goto io;
		if (len == 1) {
			switch ((enum vpcd_ctrl)msg[0]) {
			/* Logged: when a card forgot its PINs is what its holder needs to know. */
			case VPCD_OFF:
				kc_card_power(c, false);
				fprintf(stderr, "kyok-card: powered off\n");
				continue;
			case VPCD_ON:
				kc_card_power(c, true);
				fprintf(stderr, "kyok-card: powered on\n");
				continue;
			case VPCD_RESET:
				kc_card_reset(c);
				fprintf(stderr, "kyok-card: reset\n");
				continue;
			case VPCD_ATR:
				rlen = kc_card_atr(c, resp + 2, 33);
				break;
			}
			if (rlen == 0) {
				snprintf(err, errlen,
				         "the reader sent control code %u, which is not "
				         "in the vpcd protocol (0, 1, 2, 4)",
				         msg[0]);
				return -2;
			}
		} else {
			rlen = kc_card_apdu(c, msg, len, resp + 2, CARD_RESP_MAX - 2);
			OPENSSL_cleanse(msg, len);
			if (rlen < 2 || rlen > CARD_MSG_MAX) {
				snprintf(err, errlen, "the applet gave no answer to an APDU");
				return -2;
			}
		}
		resp[0] = (uint8_t)(rlen >> 8);
		resp[1] = (uint8_t)rlen;
		r = card_write(fd, resp, rlen + 2);
		OPENSSL_cleanse(resp, rlen + 2);
		if (r != 0)
			goto io;
		continue;
	io:
		if (r == -2)
			snprintf(err, errlen, "reading from or writing to the reader: %s",
			         strerror(errno));
		return r;
	}
}

static int card_parse_int(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return KY_ERR_USAGE;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"eeprom", required_argument, NULL, 'e'},
	    {"chip-key", required_argument, NULL, 'k'},
	    {"port", required_argument, NULL, 'p'},
	    {"host", required_argument, NULL, 'H'},
	    {"wait", required_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int r = KY_ERR_INTERNAL, o, fd = -1;
	const char *eeprom = NULL, *chip = NULL, *host = "127.0.0.1";
	long port = 0, wait_s = CARD_WAIT_DEFAULT;
	char portstr[16], err[512] = "";
	struct kc_card *c = NULL;
	uint8_t *msg = NULL, *resp = NULL;
	struct sigaction sa = {.sa_handler = card_on_signal};
	sigset_t block, open;

	if ((r = ky_process_harden(err, sizeof(err))) != 0) {
		fprintf(stderr, "kyok-card: error: %s\n", err);
		return ky_err_exit(r);
	}
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'e':
			eeprom = optarg;
			break;
		case 'k':
			chip = optarg;
			break;
		case 'H':
			host = optarg;
			break;
		case 'p':
			if (card_parse_int(optarg, 1, 65535, &port) != 0) {
				fprintf(stderr,
				        "kyok-card: error: --port '%s': give a TCP port, 1 "
				        "to 65535\n",
				        optarg);
				return KY_EXIT_USAGE;
			}
			break;
		case 'w':
			if (card_parse_int(optarg, 0, 86400, &wait_s) != 0) {
				fprintf(stderr,
				        "kyok-card: error: --wait '%s': give whole seconds, "
				        "0 to 86400\n",
				        optarg);
				return KY_EXIT_USAGE;
			}
			break;
		case 'h':
			fputs(card_usage, stdout);
			return 0;
		default:
			fputs(card_usage, stderr);
			return KY_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr,
		        "kyok-card: error: unexpected argument '%s': see 'kyok-card --help'\n",
		        argv[optind]);
		return KY_EXIT_USAGE;
	}
	if (eeprom == NULL || chip == NULL || port == 0) {
		fprintf(stderr, "kyok-card: error: %s is missing: see 'kyok-card --help'\n",
		        eeprom == NULL ? "--eeprom"
		        : chip == NULL ? "--chip-key"
		                       : "--port");
		return KY_EXIT_USAGE;
	}
	/* The applet refuses EEPROM and chip key files that others can read or write. */
	if ((r = kc_card_open(eeprom, chip, &c, err, sizeof(err))) != 0) {
		fprintf(stderr, "kyok-card: error: %s\n", err);
		goto out;
	}
	msg = malloc(CARD_MSG_MAX);
	resp = malloc(CARD_RESP_MAX);
	if (msg == NULL || resp == NULL) {
		r = KY_ERR_NOMEM;
		fprintf(stderr, "kyok-card: error: out of memory\n");
		goto out;
	}
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	if (sigprocmask(SIG_BLOCK, &block, &open) != 0 || sigaction(SIGTERM, &sa, NULL) != 0 ||
	    sigaction(SIGINT, &sa, NULL) != 0) {
		r = KY_ERR_INTERNAL;
		fprintf(stderr, "kyok-card: error: cannot set up signals: %s\n", strerror(errno));
		goto out;
	}
	sigdelset(&open, SIGTERM);
	sigdelset(&open, SIGINT);
	snprintf(portstr, sizeof(portstr), "%ld", port);
	for (;;) {
		int s;

		fd = card_connect(host, portstr, (int)wait_s, &open, err, sizeof(err));
		if (fd == -2)
			break;
		if (fd < 0) {
			r = KY_ERR_CARD_READER_UNREACHABLE;
			fprintf(stderr, "kyok-card: error: %s: %s\n", err, ky_err_message(r));
			goto out;
		}
		fprintf(stderr, "kyok-card: inserted in the reader at %s:%s\n", host, portstr);
		s = card_serve(c, fd, msg, resp, &open, err, sizeof(err));
		close(fd);
		fd = -1;
		kc_card_power(c, false);
		if (s == -1)
			break;
		if (s == -2) {
			r = KY_ERR_CARD_PROTOCOL;
			fprintf(stderr, "kyok-card: error: %s\n", err);
			goto out;
		}
		fprintf(stderr,
		        "kyok-card: the reader at %s:%s closed the connection: card "
		        "powered off, connecting again\n",
		        host, portstr);
	}
	fprintf(stderr, "kyok-card: removed\n");
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	if (msg != NULL)
		OPENSSL_cleanse(msg, CARD_MSG_MAX);
	if (resp != NULL)
		OPENSSL_cleanse(resp, CARD_RESP_MAX);
	free(msg);
	free(resp);
	kc_card_free(c);
	return r == 0 ? 0 : ky_err_exit(r);
}
