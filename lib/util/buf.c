/* Byte buffers and hex. */
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/common.h"
#include "kyok/err.h"

int ky_buf_append(struct ky_buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	/* Bounded so that doubling the capacity below cannot overflow. */
	if (b->len + n < b->len || b->len + n > SIZE_MAX / 2)
		return KY_ERR_TOO_LARGE;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->len + n)
			cap *= 2;
		/* Grow by copy so that the old block can be cleansed: buffers may hold secrets. */
		uint8_t *d = malloc(cap);
		if (d == NULL)
			return KY_ERR_NOMEM;
		if (b->len)
			memcpy(d, b->data, b->len);
		if (b->data) {
			OPENSSL_cleanse(b->data, b->cap);
			free(b->data);
		}
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int ky_buf_append_str(struct ky_buf *b, const char *s)
{
	return ky_buf_append(b, s, strlen(s));
}

void ky_buf_free(struct ky_buf *b)
{
	if (b == NULL)
		return;
	if (b->data) {
		OPENSSL_cleanse(b->data, b->cap);
		free(b->data);
	}
	b->data = NULL;
	b->len = b->cap = 0;
}

void ky_hex_encode(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 0xf];
	}
	out[2 * n] = '\0';
}

int ky_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int ky_hex_decode(const char *hex, uint8_t *out, size_t n)
{
	if (hex == NULL || strlen(hex) != 2 * n)
		return KY_ERR_MALFORMED;
	for (size_t i = 0; i < n; i++) {
		int hi = ky_hex_digit(hex[2 * i]), lo = ky_hex_digit(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return KY_ERR_MALFORMED;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}
