/* portholder.c: who holds a port or a lock, for the messages of a unit that cannot start. */
#ifndef KYOK_UNITD_PORTHOLDER_H
#define KYOK_UNITD_PORTHOLDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Names the program listening on TCP port ("pid N (name)"), or says it cannot be seen. */
void unitd_port_holder(uint16_t port, char *out, size_t n);
/* Names the program holding a write lock on byte `byte` of file path ("pid N (name)"): false
 * when no such lock is seen. */
bool unitd_lock_holder(const char *path, long byte, char *out, size_t n);

#endif
