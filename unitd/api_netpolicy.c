/* The instance policy allowedIP: address ranges (CIDR) and whether a caller's address is in
 * one of them. Pure: no I/O, no key storage; tests/unit/test_api.c has the negative cases.
 *
 * A range is written "address/prefix", IPv4 ("10.0.0.0/8") or IPv6 ("fd00::/8"), as Key
 * Protect takes it. The parser is strict: a bare address (no prefix), a prefix out of range
 * or with leading zeros, and an address with bits set beyond its prefix ("10.1.2.3/8") are
 * refused, naming the range and what to write instead, so that what is stored is what the
 * administrator meant. A caller reaching the unit over IPv6 with an IPv4-mapped address
 * (::ffff:a.b.c.d) is matched as the IPv4 address it is; so an IPv4-mapped range
 * ("::ffff:127.0.0.1/128", "::ffff:0:0/96"), which would never match, is refused, naming
 * the IPv4 range to write.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "kyok/err.h"
#include "unitd/api.h"

/* Whether a (16 bytes) is an IPv4-mapped IPv6 address, ::ffff:a.b.c.d: the one rule both the
 * parser (which refuses such ranges) and kp_addr_of (which matches such callers as IPv4)
 * read. */
static bool kp_addr_v4mapped(const uint8_t a[16])
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	return memcmp(a, mapped, sizeof(mapped)) == 0;
}

int kp_cidr_parse(const char *s, struct kp_cidr *out, char *detail, size_t detaillen)
{
	char addr[INET6_ADDRSTRLEN];
	const char *slash = s != NULL ? strchr(s, '/') : NULL;
	size_t alen = slash != NULL ? (size_t)(slash - s) : 0;
	unsigned bits = 0, max;
	const char *p;

	memset(out, 0, sizeof(*out));
	if (s == NULL || slash == NULL || alen == 0 || alen >= sizeof(addr)) {
		kp_detail(detail, detaillen,
		          "'%.64s' is not an address range: write address/prefix, e.g. "
		          "'192.0.2.7/32' for one address or '192.0.2.0/24'",
		          s != NULL ? s : "");
		return KY_ERR_MALFORMED;
	}
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, out->addr) == 1) {
		out->family = 4;
		max = 32;
	} else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
		out->family = 6;
		max = 128;
	} else {
		kp_detail(detail, detaillen, "'%.64s': '%s' is not an IPv4 or IPv6 address", s,
		          addr);
		return KY_ERR_MALFORMED;
	}
	p = slash + 1;
	if (*p == '\0' || strlen(p) > 3 || (p[0] == '0' && p[1] != '\0')) {
		kp_detail(detail, detaillen, "'%.64s': the prefix must be 0 to %u", s, max);
		return KY_ERR_MALFORMED;
	}
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9') {
			kp_detail(detail, detaillen, "'%.64s': the prefix must be 0 to %u", s, max);
			return KY_ERR_MALFORMED;
		}
		bits = bits * 10 + (unsigned)(*p - '0');
	}
	if (bits > max) {
		kp_detail(detail, detaillen, "'%.64s': the prefix must be 0 to %u", s, max);
		return KY_ERR_MALFORMED;
	}
	out->bits = (uint8_t)bits;
	if (out->family == 6 && bits >= 96 && kp_addr_v4mapped(out->addr)) {
		/* Callers are matched as IPv4 (kp_addr_of): such a range would never match. */
		struct kp_cidr v4 = {.family = 4, .bits = (uint8_t)(bits - 96)};
		char want[KP_CIDR_TEXT_MAX + 1];
		memcpy(v4.addr, out->addr + 12, 4);
		for (unsigned j = v4.bits; j < 32; j++)
			v4.addr[j / 8] &= (uint8_t) ~(0x80u >> (j % 8));
		kp_cidr_format(&v4, want, sizeof(want));
		kp_detail(detail, detaillen,
		          "'%.64s' is an IPv4-mapped IPv6 range, which never matches: callers "
		          "are matched by their IPv4 address: write the IPv4 range '%s'",
		          s, want);
		memset(out, 0, sizeof(*out));
		return KY_ERR_MALFORMED;
	}
	for (unsigned i = bits; i < max; i++) {
		if (out->addr[i / 8] & (0x80u >> (i % 8))) {
			struct kp_cidr net = *out;
			char want[KP_CIDR_TEXT_MAX + 1];
			for (unsigned j = bits; j < max; j++)
				net.addr[j / 8] &= (uint8_t) ~(0x80u >> (j % 8));
			kp_cidr_format(&net, want, sizeof(want));
			kp_detail(detail, detaillen,
			          "'%.64s' has address bits set beyond its prefix: write '%s' "
			          "for the range, or the address with /%u for it alone",
			          s, want, max);
			memset(out, 0, sizeof(*out));
			return KY_ERR_MALFORMED;
		}
	}
	return 0;
}

void kp_cidr_format(const struct kp_cidr *c, char *out, size_t cap)
{
	char a[INET6_ADDRSTRLEN] = "?";

	if (inet_ntop(c->family == 4 ? AF_INET : AF_INET6, c->addr, a, sizeof(a)) == NULL)
		snprintf(a, sizeof(a), "?");
	snprintf(out, cap, "%s/%u", a, (unsigned)c->bits);
}

void kp_addr_format(const struct kp_cidr *c, char *out, size_t cap)
{
	if (inet_ntop(c->family == 4 ? AF_INET : AF_INET6, c->addr, out, (socklen_t)cap) == NULL)
		snprintf(out, cap, "?");
}

int kp_addr_of(const struct sockaddr *sa, struct kp_cidr *out)
{
	memset(out, 0, sizeof(*out));
	if (sa == NULL)
		return KY_ERR_USAGE;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		memcpy(out->addr, &in->sin_addr, 4);
		out->family = 4;
		out->bits = 32;
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		const uint8_t *b = in6->sin6_addr.s6_addr;
		if (kp_addr_v4mapped(b)) {
			memcpy(out->addr, b + 12, 4);
			out->family = 4;
			out->bits = 32;
		} else {
			memcpy(out->addr, b, 16);
			out->family = 6;
			out->bits = 128;
		}
		return 0;
	}
	return KY_ERR_USAGE;
}

bool kp_cidr_match(const struct kp_cidr *range, const struct kp_cidr *addr)
{
	unsigned full = range->bits / 8, rest = range->bits % 8;

	if (range->family != addr->family)
		return false;
	if (memcmp(range->addr, addr->addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((range->addr[full] ^ addr->addr[full]) & (uint8_t)(0xff00u >> rest)) == 0;
}

int kp_allowed_ip_check(const struct kp_instance_policies *p, const struct kp_cidr *addr,
                        char *detail, size_t detaillen)
{
	char a[KP_CIDR_TEXT_MAX + 1];

	if (!p->allowed_ip)
		return 0;
	for (size_t i = 0; i < p->nranges; i++)
		if (kp_cidr_match(&p->ranges[i], addr))
			return 0;
	kp_addr_format(addr, a, sizeof(a));
	kp_detail(detail, detaillen,
	          "the instance policy allowedIP does not list the address %s this request "
	          "comes from",
	          a);
	return KY_ERR_IP_NOT_ALLOWED;
}
