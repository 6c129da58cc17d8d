/* What the files of lib/kms share and nothing outside it uses. */
#ifndef KYOK_LIB_KMS_INTERNAL_H
#define KYOK_LIB_KMS_INTERNAL_H

#include "kyok/kms.h"

/* key.c: the index of alias among k's aliases, -1 when k has no such alias (case
 * sensitive). */
int key_alias_at(const struct ky_key *k, const char *alias);

#endif
