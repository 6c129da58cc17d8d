/* The alias index rules every backend follows (alias.h). */
#include <string.h>

#include "kyok/err.h"
#include "lib/store/alias.h"

int ky_alias_index_check(const struct ky_alias_index_ops *ops, void *conn,
                         const struct ky_store_row *row)
{
	char id[KY_UUID_LEN + 1];
	int r = KY_ERR_INTERNAL;

	for (size_t i = 0; i < row->naliases; i++) {
		r = ops->owner(conn, row->aliases[i], id);
		if (r == KY_ERR_NOT_FOUND)
			continue;
		if (r != 0)
			return r;
		if (strcmp(id, row->id) != 0)
			return KY_ERR_KEY_ALIAS_EXISTS;
	}
	return 0;
}

int ky_alias_index_write(const struct ky_alias_index_ops *ops, void *conn, const char *id,
                         const struct ky_store_row *row)
{
	int r = KY_ERR_INTERNAL;

	if ((r = ops->drop(conn, id)) != 0)
		return r;
	for (size_t i = 0; row != NULL && i < row->naliases; i++) {
		/* ky_alias_index_check saw it free under the same write lock: only a writer
		 * outside kyok could have taken it since. */
		if ((r = ops->insert(conn, row->aliases[i], id)) != 0)
			return r == KY_ERR_EXISTS ? KY_ERR_CONFLICT : r;
	}
	return 0;
}
