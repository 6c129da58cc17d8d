/* The one way to master key bytes outside lib/ceremony.
 *
 * struct ky_domain keeps its key bytes in an opaque allocation. The daemon needs them only
 * to encrypt key storage (its key store's registers, re-encipherment): it asks for a copy of
 * one register as a struct ky_mk and frees it when done. Include this header nowhere else,
 * so that `grep ceremony_mk.h` lists every file that can read a master key.
 */
#ifndef KYOK_CEREMONY_MK_H
#define KYOK_CEREMONY_MK_H

#include "kyok/ceremony.h"
#include "kyok/kms.h"

enum ky_mk_register { KY_MK_REGISTER_NEW, KY_MK_REGISTER_CURRENT };

/* A secure-heap copy of register reg (free with ky_mk_free). KY_ERR_REGISTER_STATE when the
 * register is empty. */
int ky_domain_mk(const struct ky_domain *d, enum ky_mk_register reg, struct ky_mk **out) KY_WUR;

#endif
