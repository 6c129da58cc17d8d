/* The card form of a key part file (docs/formats.md): the record of a master key part held
 * by an EP11 card. Lines in this order, nothing else:
 *   kyok-key-part: 1
 *   description: <1..64 printable ASCII characters>
 *   vp: <64 lowercase hex digits>
 *   held-by: ep11-card
 *   kyok-card-zone: <64 lowercase hex digits>
 *   kyok-card-device: <64 lowercase hex digits>
 *   kyok-card-part: <1..85>
 * No secret: the part stays on the card. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/card_part.h"
#include "kyok/err.h"

#define CARD_PART_FILE_MAX 1024

/* "name: value\n" at *pos: the value's bounds; *pos moves past the line. */
static int card_part_line(const char *t, size_t n, size_t *pos, const char *name, const char **v,
                          size_t *vlen)
{
	size_t nl = strlen(name);
	const char *line = t + *pos, *end;
	size_t rest = n - *pos;

	if (rest < nl + 2 || memcmp(line, name, nl) != 0 || line[nl] != ':' || line[nl + 1] != ' ')
		return KY_ERR_NOT_KEY_PART;
	if ((end = memchr(line, '\n', rest)) == NULL)
		return KY_ERR_NOT_KEY_PART;
	*v = line + nl + 2;
	*vlen = (size_t)(end - *v);
	*pos += (size_t)(end - line) + 1;
	return 0;
}

static int card_part_hex(const char *v, size_t vlen, uint8_t *out, size_t n)
{
	char hex[2 * KY_CARD_ID_LEN + 1];

	if (vlen != 2 * n || vlen >= sizeof(hex))
		return KY_ERR_NOT_KEY_PART;
	for (size_t i = 0; i < vlen; i++)
		if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f')))
			return KY_ERR_NOT_KEY_PART; /* lowercase, as written */
	memcpy(hex, v, vlen);
	hex[vlen] = '\0';
	return ky_hex_decode(hex, out, n) == 0 ? 0 : KY_ERR_NOT_KEY_PART;
}

bool cli_card_part_desc_ok(const char *s, size_t n)
{
	if (n < 1 || n > KY_CARD_DESC_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

int cli_card_part_parse(const char *t, size_t n, struct cli_card_part *cp)
{
	size_t pos = 0, vlen = 0;
	const char *v = NULL;
	unsigned slot = 0;

	memset(cp, 0, sizeof(*cp));
	if (card_part_line(t, n, &pos, "kyok-key-part", &v, &vlen) != 0 || vlen != 1 || v[0] != '1')
		return KY_ERR_NOT_KEY_PART;
	if (card_part_line(t, n, &pos, "description", &v, &vlen) != 0 ||
	    !cli_card_part_desc_ok(v, vlen))
		return KY_ERR_NOT_KEY_PART;
	memcpy(cp->description, v, vlen);
	cp->description[vlen] = '\0';
	if (card_part_line(t, n, &pos, "vp", &v, &vlen) != 0 ||
	    card_part_hex(v, vlen, cp->vp, KY_VP_LEN) != 0)
		return KY_ERR_NOT_KEY_PART;
	if (card_part_line(t, n, &pos, "held-by", &v, &vlen) != 0 || vlen != 9 ||
	    memcmp(v, "ep11-card", 9) != 0)
		return KY_ERR_NOT_KEY_PART;
	if (card_part_line(t, n, &pos, "kyok-card-zone", &v, &vlen) != 0 ||
	    card_part_hex(v, vlen, cp->zone_id, KY_CARD_ID_LEN) != 0)
		return KY_ERR_NOT_KEY_PART;
	if (card_part_line(t, n, &pos, "kyok-card-device", &v, &vlen) != 0 ||
	    card_part_hex(v, vlen, cp->device_id, KY_CARD_ID_LEN) != 0)
		return KY_ERR_NOT_KEY_PART;
	if (card_part_line(t, n, &pos, "kyok-card-part", &v, &vlen) != 0 || vlen < 1 || vlen > 2 ||
	    v[0] == '0')
		return KY_ERR_NOT_KEY_PART;
	for (size_t i = 0; i < vlen; i++) {
		if (v[i] < '0' || v[i] > '9')
			return KY_ERR_NOT_KEY_PART;
		slot = slot * 10 + (unsigned)(v[i] - '0');
	}
	if (slot > KY_CARD_PARTS_MAX || pos != n)
		return KY_ERR_NOT_KEY_PART;
	cp->slot = slot;
	return 0;
}

int cli_card_part_read(const char *path, struct cli_card_part *cp)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};

	if ((r = ky_file_read(path, CARD_PART_FILE_MAX, &b)) != 0) {
		r = r == KY_ERR_TOO_LARGE ? KY_ERR_NOT_KEY_PART : r;
		goto out;
	}
	if ((r = cli_card_part_parse((const char *)b.data, b.len, cp)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&b);
	return r;
}

int cli_card_part_info(const char *path, struct ky_keypart_info *info)
{
	int r = KY_ERR_INTERNAL;
	struct cli_card_part cp;

	if ((r = cli_card_part_read(path, &cp)) != 0)
		return r;
	memset(info, 0, sizeof(*info));
	snprintf(info->description, sizeof(info->description), "%s", cp.description);
	memcpy(info->vp, cp.vp, KY_VP_LEN);
	return 0;
}

int cli_card_part_write(const char *path, const struct cli_card_part *cp)
{
	int r = KY_ERR_INTERNAL, fd = -1;
	char text[CARD_PART_FILE_MAX], vp[2 * KY_VP_LEN + 1], zone[2 * KY_CARD_ID_LEN + 1],
	    dev[2 * KY_CARD_ID_LEN + 1];
	int len;

	ky_hex_encode(cp->vp, KY_VP_LEN, vp);
	ky_hex_encode(cp->zone_id, KY_CARD_ID_LEN, zone);
	ky_hex_encode(cp->device_id, KY_CARD_ID_LEN, dev);
	len = snprintf(text, sizeof(text),
	               "kyok-key-part: 1\ndescription: %s\nvp: %s\nheld-by: ep11-card\n"
	               "kyok-card-zone: %s\nkyok-card-device: %s\nkyok-card-part: %u\n",
	               cp->description, vp, zone, dev, cp->slot);
	if (len < 0 || (size_t)len >= sizeof(text)) {
		r = KY_ERR_INTERNAL;
		goto out;
	}
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
		r = errno == EEXIST ? KY_ERR_EXISTS : KY_ERR_IO;
		goto out;
	}
	if (write(fd, text, (size_t)len) != len || fsync(fd) != 0) {
		r = KY_ERR_IO;
		close(fd);
		fd = -1;
		if (unlink(path) != 0)
			fprintf(stderr, "warning: %s: could not remove the partial file: %s\n",
			        path, strerror(errno));
		goto out;
	}
	r = 0;
out:
	if (fd >= 0 && close(fd) != 0 && r == 0)
		r = KY_ERR_IO;
	return r;
}

int cli_part_vps_check(const json_t *vps, const struct ky_keypart_info *info, size_t n, size_t *bad)
{
	char want[2 * KY_VP_LEN + 1];

	*bad = n;
	if (!json_is_array(vps) || json_array_size(vps) != n)
		return KY_ERR_VP_MISMATCH;
	for (size_t k = 0; k < n; k++) {
		const char *got = json_string_value(json_array_get(vps, k));

		ky_hex_encode(info[k].vp, KY_VP_LEN, want);
		if (got == NULL || strcmp(got, want) != 0) {
			*bad = k;
			return KY_ERR_VP_MISMATCH;
		}
	}
	return 0;
}
