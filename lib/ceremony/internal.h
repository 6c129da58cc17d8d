/* Helpers shared by the ceremony sources; not part of the public API. */
#ifndef KYOK_CEREMONY_INTERNAL_H
#define KYOK_CEREMONY_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "kyok/ceremony.h"

/* The master key registers' bytes (struct ky_domain's keys), in the secure heap. */
struct ky_domain_keys {
	uint8_t new_key[KY_MK_LEN];
	uint8_t cur_key[KY_MK_LEN];
};

#define CEREMONY_COMMAND_TAG "admin-command-v1"
#define CEREMONY_STATE_TAG   "unit-state-v1"

/* Instance, unit and zone ids: printable ASCII, 1..KY_ID_MAX chars (0 allowed when
 * allow_empty). */
bool ceremony_id_valid(const char *s, size_t len, bool allow_empty);

/* A JSON string member of o as a C string: present, a string, no NUL inside. */
const char *ceremony_json_str(json_t *o, const char *key);

/* Every key of o is one of the NULL-terminated list keys. */
bool ceremony_json_only_keys(json_t *o, const char *const *keys);

/* Overwrites the bytes of a JSON string value in place (it held a secret), so that the
 * copy jansson made is cleansed before json_decref frees it. No-op unless a string. */
void ceremony_json_cleanse(json_t *s);

/* json_dumpb into a freshly sized buffer appended to out, with no intermediate copy. */
int ceremony_json_dump(json_t *j, struct ky_buf *out) KY_WUR;

/* ky_command_parse that also says what was wrong (detail may be NULL). */
int ceremony_command_parse(const uint8_t *json, size_t n, struct ky_command **out, char *detail,
                           size_t detaillen) KY_WUR;

void ceremony_detail(char *detail, size_t detaillen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
