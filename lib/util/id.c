/* Identifiers and UUIDs: the rules stated in include/kyok/common.h. */
#include <string.h>

#include "kyok/common.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

static bool id_char_ok(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

bool ky_id_valid(const char *s)
{
	size_t n;

	if (s == NULL)
		return false;
	n = strnlen(s, KY_ID_MAX + 1);
	if (n < 1 || n > KY_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!id_char_ok(s[i]))
			return false;
	return true;
}

static bool uuid_dash_at(size_t i)
{
	return i == 8 || i == 13 || i == 18 || i == 23;
}

int ky_uuid_new(char out[KY_UUID_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t b[16];
	size_t o = 0;

	out[0] = '\0';
	if (ky_random(b, sizeof(b)) != 0)
		return KY_ERR_CRYPTO;
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	for (size_t i = 0; i < sizeof(b); i++) {
		if (uuid_dash_at(o))
			out[o++] = '-';
		out[o++] = hex[b[i] >> 4];
		out[o++] = hex[b[i] & 0x0f];
	}
	out[o] = '\0';
	return 0;
}

bool ky_uuid_valid(const char *s)
{
	if (s == NULL || strnlen(s, KY_UUID_LEN + 1) != KY_UUID_LEN)
		return false;
	for (size_t i = 0; i < KY_UUID_LEN; i++) {
		char c = s[i];
		if (uuid_dash_at(i)) {
			if (c != '-')
				return false;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		             (c >= 'A' && c <= 'F'))) {
			return false;
		}
	}
	return true;
}
