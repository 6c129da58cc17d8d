/* The alias index, the backend-independent part: which key an alias belongs to. The sealed
 * key record holds a key's aliases; the index (key_aliases: alias primary key, id) finds
 * the key by an alias and keeps each alias to one key. A backend gives its own SQL as the
 * three operations below and calls these in the transaction that writes the key row (see
 * the head of sqlite.c). The rules:
 *   - before a key row is written, an alias of it that the index gives to another key is
 *     KY_ERR_KEY_ALIAS_EXISTS, and nothing is written;
 *   - a key's index rows are then replaced as a whole by its row's aliases (none when the
 *     key is deleted);
 *   - an alias found taken by that write was free at the check, under the backend's write
 *     lock: only a writer outside kyok took it, KY_ERR_CONFLICT.
 */
#ifndef KYOK_STORE_ALIAS_H
#define KYOK_STORE_ALIAS_H

#include "kyok/common.h"
#include "kyok/store.h"

struct ky_alias_index_ops {
	/* The key the index names for alias: 0 with id, KY_ERR_NOT_FOUND when none. */
	int (*owner)(void *conn, const char *alias, char id[KY_UUID_LEN + 1]);
	/* Removes every index row of key id. */
	int (*drop)(void *conn, const char *id);
	/* Adds the row alias -> id: KY_ERR_EXISTS when the alias has one already. */
	int (*insert)(void *conn, const char *alias, const char *id);
};

/* Before row is written: KY_ERR_KEY_ALIAS_EXISTS when another key has one of its aliases.
 * Writes nothing. */
int ky_alias_index_check(const struct ky_alias_index_ops *ops, void *conn,
                         const struct ky_store_row *row) KY_WUR;
/* The index rows of key id: dropped, then row's aliases (row NULL: none). */
int ky_alias_index_write(const struct ky_alias_index_ops *ops, void *conn, const char *id,
                         const struct ky_store_row *row) KY_WUR;

#endif
