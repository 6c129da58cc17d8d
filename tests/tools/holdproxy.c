/* holdproxy: an HTTP/1.1 relay for tests that forwards one chosen request to a crypto unit
 * and withholds the unit's reply: the unit acts, the client never hears of it.
 *
 *   holdproxy UPSTREAM_PORT PREFIX PORT_FILE HELD_FILE
 *
 * Listens on 127.0.0.1 (a free port, written to PORT_FILE once listening) and relays every
 * request to 127.0.0.1:UPSTREAM_PORT, one upstream connection per client connection. The
 * first request whose request line starts with PREFIX (e.g. "POST /api/v2/keys ") is
 * forwarded, its whole reply read and written to HELD_FILE, and nothing is sent back: the
 * client connection stays open, silent, until the client closes it. Requests after that
 * one (HELD_FILE exists) are relayed normally. Bodies are delimited by Content-Length only
 * (what kyok's units and curl send). Stops on SIGTERM.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define HP_MAX (1024 * 1024)

struct hp_msg {
	char *p;
	size_t len;
};

static int hp_write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Content-Length of the header block hdr (0 when absent). */
static size_t hp_content_length(const char *hdr, size_t n)
{
	const char *name = "\r\ncontent-length:";
	size_t k = strlen(name);

	for (size_t i = 0; i + k <= n; i++)
		if (strncasecmp(hdr + i, name, k) == 0)
			return (size_t)strtoul(hdr + i + k, NULL, 10);
	return 0;
}

/* One message (header block and Content-Length body) from fd into m. 0, or -1 at EOF or on
 * an error. *carry holds bytes read past the message (the next one's start). */
static int hp_read_msg(int fd, struct hp_msg *carry, struct hp_msg *m)
{
	char *buf = malloc(HP_MAX);
	size_t len = 0, hdr_end = 0, want = 0;

	if (buf == NULL)
		return -1;
	if (carry->len > 0) {
		memcpy(buf, carry->p, carry->len);
		len = carry->len;
		carry->len = 0;
	}
	for (;;) {
		if (hdr_end == 0) {
			for (size_t i = 0; i + 4 <= len; i++)
				if (memcmp(buf + i, "\r\n\r\n", 4) == 0) {
					hdr_end = i + 4;
					want = hdr_end + hp_content_length(buf, hdr_end);
					break;
				}
		}
		if (hdr_end != 0 && len >= want)
			break;
		if (len == HP_MAX)
			goto fail;
		ssize_t r = read(fd, buf + len, HP_MAX - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			goto fail;
		len += (size_t)r;
	}
	if (len > want) {
		memcpy(carry->p, buf + want, len - want);
		carry->len = len - want;
	}
	m->p = buf;
	m->len = want;
	return 0;
fail:
	free(buf);
	return -1;
}

static int hp_connect(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static void hp_serve(int cfd, int upstream_port, const char *prefix, const char *held_file)
{
	struct hp_msg ccarry = {malloc(HP_MAX), 0}, ucarry = {malloc(HP_MAX), 0};
	int ufd = -1;

	if (ccarry.p == NULL || ucarry.p == NULL)
		return;
	for (;;) {
		struct hp_msg req = {0}, rep = {0};
		struct stat st;
		bool hold;

		if (hp_read_msg(cfd, &ccarry, &req) != 0)
			break;
		hold = strncmp(req.p, prefix, strlen(prefix)) == 0 && stat(held_file, &st) != 0;
		if (ufd < 0 && (ufd = hp_connect(upstream_port)) < 0)
			break;
		if (hp_write_all(ufd, req.p, req.len) != 0 || hp_read_msg(ufd, &ucarry, &rep) != 0)
			break;
		free(req.p);
		if (hold) {
			char tmp[4096];
			int hfd;
			snprintf(tmp, sizeof(tmp), "%s.tmp", held_file);
			hfd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
			if (hfd < 0 || hp_write_all(hfd, rep.p, rep.len) != 0 || close(hfd) != 0 ||
			    rename(tmp, held_file) != 0)
				break;
			free(rep.p);
			/* Silent until the client gives up. */
			while (read(cfd, tmp, sizeof(tmp)) > 0)
				;
			break;
		}
		if (hp_write_all(cfd, rep.p, rep.len) != 0) {
			free(rep.p);
			break;
		}
		free(rep.p);
	}
	if (ufd >= 0)
		close(ufd);
	free(ccarry.p);
	free(ucarry.p);
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	char tmp[4096], line[32];
	int lfd, upstream_port, one = 1, pfd;

	if (argc != 5) {
		fprintf(stderr, "usage: holdproxy UPSTREAM_PORT PREFIX PORT_FILE HELD_FILE\n");
		return 2;
	}
	upstream_port = atoi(argv[1]);
	signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
	signal(SIGPIPE, SIG_IGN);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 16) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
		perror("holdproxy: listen");
		return 1;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", argv[3]);
	snprintf(line, sizeof(line), "%d\n", ntohs(a.sin_port));
	if ((pfd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0 ||
	    hp_write_all(pfd, line, strlen(line)) != 0 || close(pfd) != 0 ||
	    rename(tmp, argv[3]) != 0) {
		perror("holdproxy: port file");
		return 1;
	}
	for (;;) {
		int cfd = accept(lfd, NULL, NULL);
		pid_t pid;
		if (cfd < 0) {
			if (errno == EINTR)
				continue;
			perror("holdproxy: accept");
			return 1;
		}
		pid = fork();
		if (pid == 0) {
			close(lfd);
			hp_serve(cfd, upstream_port, argv[2], argv[4]);
			close(cfd);
			_exit(0);
		}
		close(cfd);
	}
}
