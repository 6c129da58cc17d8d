/* A hostile client for tests/integration/t_bounds.sh.
 *
 *   conn_hold hold HOST PORT SOURCE N LIMIT
 *     Opens N TCP connections to HOST:PORT from address SOURCE and sends nothing. Waits until
 *     every connect has finished and at most LIMIT connections are still open (the server
 *     closed the others), then prints "ready open=O closed=C failed=F" and keeps them open.
 *     Each line read on stdin prints "open=O" again; end of input ends the program.
 *     Exit 1 with the counts when that state is not reached within 120 s.
 *
 *   conn_hold drip HOST PORT PATH
 *     Sends a POST to PATH announcing a 1,000,000-byte body, then one byte every 100 ms.
 *     Exit 0 with "closed after B bytes" when the server closes the connection, 1 when the
 *     whole body went through.
 *
 *   conn_hold trickle HOST PORT PATH FIRST
 *     Sends FIRST (0 or 1) whole GET requests for PATH on one connection, reading each
 *     reply, then the request line of another and one header byte a second, never ending
 *     the headers. Exit 0 with "closed after B header bytes" when the server closes the
 *     connection, 1 when it is still open after TRICKLE_DEADLINE_S or a reply went wrong.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HOLD_DEADLINE_S    120
#define DRIP_BODY          1000000L
#define TRICKLE_DEADLINE_S 60

enum conn_state { CONN_CONNECTING, CONN_OPEN, CONN_CLOSED, CONN_FAILED };

static int addr_of(const char *host, const char *port, struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)atoi(port));
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Moves connections on: connect finished, or closed by the peer. */
static void hold_poll(struct pollfd *pf, enum conn_state *st, int n, int timeout_ms)
{
	char b[64];

	for (int i = 0; i < n; i++) {
		pf[i].events = st[i] == CONN_CONNECTING ? POLLOUT : POLLIN;
		if (st[i] != CONN_CONNECTING && st[i] != CONN_OPEN)
			pf[i].fd = -1;
	}
	if (poll(pf, (nfds_t)n, timeout_ms) <= 0)
		return;
	for (int i = 0; i < n; i++) {
		if (pf[i].fd < 0 || pf[i].revents == 0)
			continue;
		if (st[i] == CONN_CONNECTING) {
			int e = 0;
			socklen_t el = sizeof(e);
			getsockopt(pf[i].fd, SOL_SOCKET, SO_ERROR, &e, &el);
			st[i] = e == 0 ? CONN_OPEN : CONN_FAILED;
		} else if (read(pf[i].fd, b, sizeof(b)) <= 0) {
			st[i] = CONN_CLOSED;
		}
		if (st[i] == CONN_CLOSED || st[i] == CONN_FAILED) {
			close(pf[i].fd);
			pf[i].fd = -1;
		}
	}
}

static void hold_count(const enum conn_state *st, int n, int c[4])
{
	memset(c, 0, 4 * sizeof(int));
	for (int i = 0; i < n; i++)
		c[st[i]]++;
}

static int hold_main(char **argv)
{
	struct sockaddr_in dst, src;
	int n = atoi(argv[3]), limit = atoi(argv[4]), c[4];
	struct pollfd *pf;
	enum conn_state *st;
	struct rlimit rl;
	char line[64];
	double end;

	if (addr_of(argv[0], argv[1], &dst) != 0 || addr_of(argv[2], "0", &src) != 0 || n <= 0) {
		fprintf(stderr, "conn_hold: bad address or count\n");
		return 2;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	pf = calloc((size_t)n, sizeof(*pf));
	st = calloc((size_t)n, sizeof(*st));
	if (pf == NULL || st == NULL)
		return 2;
	for (int i = 0; i < n; i++) {
		pf[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (pf[i].fd < 0 || bind(pf[i].fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
			fprintf(stderr, "conn_hold: socket %d: %s\n", i, strerror(errno));
			return 2;
		}
		if (connect(pf[i].fd, (struct sockaddr *)&dst, sizeof(dst)) == 0)
			st[i] = CONN_OPEN;
		else if (errno != EINPROGRESS)
			st[i] = CONN_FAILED;
		if (i % 64 == 63)
			hold_poll(pf, st, i + 1, 0);
	}
	end = now_s() + HOLD_DEADLINE_S;
	for (;;) {
		hold_count(st, n, c);
		if (c[CONN_CONNECTING] == 0 && c[CONN_OPEN] <= limit)
			break;
		if (now_s() > end) {
			printf("timeout connecting=%d open=%d closed=%d failed=%d\n",
			       c[CONN_CONNECTING], c[CONN_OPEN], c[CONN_CLOSED], c[CONN_FAILED]);
			return 1;
		}
		hold_poll(pf, st, n, 200);
	}
	printf("ready open=%d closed=%d failed=%d\n", c[CONN_OPEN], c[CONN_CLOSED], c[CONN_FAILED]);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin) != NULL) {
		hold_poll(pf, st, n, 0);
		hold_count(st, n, c);
		printf("open=%d\n", c[CONN_OPEN]);
		fflush(stdout);
	}
	return 0;
}

static int drip_main(char **argv)
{
	struct sockaddr_in dst;
	char head[256], b[256];
	long sent = 0;
	int fd, hl;
	struct pollfd pf;

	if (addr_of(argv[0], argv[1], &dst) != 0)
		return 2;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
		fprintf(stderr, "conn_hold: connect: %s\n", strerror(errno));
		return 2;
	}
	hl = snprintf(head, sizeof(head),
	              "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"
	              "Content-Length: %ld\r\n\r\n",
	              argv[2], argv[0], DRIP_BODY);
	if (write(fd, head, (size_t)hl) != hl)
		return 2;
	while (sent < DRIP_BODY) {
		pf.fd = fd;
		pf.events = POLLIN;
		/* Pacing of this client, not a wait for the server: it sends its next byte. */
		if (poll(&pf, 1, 100) > 0 && read(fd, b, sizeof(b)) <= 0)
			break;
		if (send(fd, "x", 1, MSG_NOSIGNAL) != 1)
			break;
		sent++;
	}
	close(fd);
	if (sent >= DRIP_BODY) {
		printf("whole body of %ld bytes went through\n", sent);
		return 1;
	}
	printf("closed after %ld bytes\n", sent);
	return 0;
}

/* Reads one HTTP reply (headers and a Content-Length body) from fd; 0 when it was a 200. */
static int trickle_reply(int fd)
{
	char buf[8192], *end, *cl;
	size_t have = 0;
	long body = 0;
	ssize_t n;
	bool ok;

	for (;;) {
		if (have == sizeof(buf) - 1)
			return -1;
		if ((n = read(fd, buf + have, sizeof(buf) - 1 - have)) <= 0)
			return -1;
		have += (size_t)n;
		buf[have] = '\0';
		if ((end = strstr(buf, "\r\n\r\n")) != NULL)
			break;
	}
	ok = strncmp(buf, "HTTP/1.1 200", 12) == 0;
	if ((cl = strstr(buf, "\r\nContent-Length:")) != NULL && cl < end)
		body = atol(cl + 17);
	body -= (long)(have - (size_t)(end + 4 - buf));
	while (body > 0) {
		if ((n = read(fd, buf, sizeof(buf))) <= 0)
			return -1;
		body -= n;
	}
	return ok ? 0 : -1;
}

static int trickle_main(char **argv)
{
	struct sockaddr_in dst;
	char req[256], b[256];
	int fd, first = atoi(argv[3]), n;
	long sent = 0;
	struct pollfd pf;
	bool closed = false;
	double end;

	if (addr_of(argv[0], argv[1], &dst) != 0 || first < 0 || first > 1)
		return 2;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
		fprintf(stderr, "conn_hold: connect: %s\n", strerror(errno));
		return 2;
	}
	for (int i = 0; i < first; i++) {
		n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", argv[2],
		             argv[0]);
		if (write(fd, req, (size_t)n) != n || trickle_reply(fd) != 0) {
			printf("the whole request before the trickle got no reply\n");
			return 1;
		}
	}
	n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\nX-Trickle: ", argv[2],
	             argv[0]);
	if (write(fd, req, (size_t)n) != n)
		return 2;
	end = now_s() + TRICKLE_DEADLINE_S;
	while (now_s() < end) {
		pf.fd = fd;
		pf.events = POLLIN;
		/* Pacing of this client, not a wait for the server: it sends its next byte. */
		if (poll(&pf, 1, 1000) > 0) {
			ssize_t r = read(fd, b, sizeof(b));
			if (r <= 0) {
				closed = true;
				break;
			}
			printf("the server answered headers that never ended: %.*s\n", (int)r, b);
			return 1;
		}
		if (send(fd, "x", 1, MSG_NOSIGNAL) != 1) {
			closed = true;
			break;
		}
		sent++;
	}
	close(fd);
	if (!closed) {
		printf("still open after %d s and %ld header bytes\n", TRICKLE_DEADLINE_S, sent);
		return 1;
	}
	printf("closed after %ld header bytes\n", sent);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 7 && strcmp(argv[1], "hold") == 0)
		return hold_main(argv + 2);
	if (argc == 5 && strcmp(argv[1], "drip") == 0)
		return drip_main(argv + 2);
	if (argc == 6 && strcmp(argv[1], "trickle") == 0)
		return trickle_main(argv + 2);
	fprintf(stderr, "usage: conn_hold hold HOST PORT SOURCE N LIMIT | drip HOST PORT PATH | "
	                "trickle HOST PORT PATH FIRST\n");
	return 2;
}
