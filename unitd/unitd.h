/* What every module of kyok-unitd shares. Each module has a header of its own (config.h,
 * log.h, seal.h, keystore.h, ...: docs/DEVELOPMENT.md lists them); this one holds only the
 * conventions that belong to none of them. */
#ifndef KYOK_UNITD_H
#define KYOK_UNITD_H

#define UNITD_ERR_MAX 512 /* room for one error sentence */

#endif
