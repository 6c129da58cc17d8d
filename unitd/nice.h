/* nice.c: key creations run at a lower scheduling priority while they work.
 *
 * When the CPUs are all busy, a request that only reads (unwrap, a key's details) should not
 * wait behind key creations: those take ten times its CPU, half of it storage work. The
 * group commit already commits at nice KY_STORE_WRITE_NICE (lib/store/groupcommit.h); a key
 * creation runs its handler at that nice value too, and its thread goes back to the priority
 * it had before the audit line and the reply.
 *
 * Creations only. A lowered thread keeps its other connections waiting (the server's
 * threads each serve several), and whatever lock it holds. A creation holds nothing a reader
 * waits for that the committer, at nice 10 already, does not hold it to: the registers' read
 * lock while its row is committed. Other changes do take such locks (the key cache's mutex
 * to drop it whole, the SQLite write lock that a reader's storage check may wait for), and
 * they are rare: they keep the readers' priority.
 *
 * Going back up needs CAP_SYS_NICE or an RLIMIT_NICE of 20 - base nice or more (LimitNICE=+0
 * in the service file). unitd_nice_init() probes that once, on a thread of its own; without
 * it (or at nice KY_STORE_WRITE_NICE or more already), creations run at the requests'
 * priority, as before.
 */
#ifndef KYOK_UNITD_NICE_H
#define KYOK_UNITD_NICE_H

#include <stdbool.h>

/* Probes whether a thread of this process can lower its priority and raise it back; true when
 * it can, and unitd_nice_lower() is then in effect. */
bool unitd_nice_init(void);
/* Whether unitd_nice_init() found lowering possible. */
bool unitd_nice_available(void);
/* Lowers the calling thread's priority to the write priority. Returns its nice value before,
 * to give to unitd_nice_restore(), or UNITD_NICE_NONE when nothing was changed. */
int unitd_nice_lower(void);
/* Gives the calling thread back the nice value prev (from unitd_nice_lower()). */
void unitd_nice_restore(int prev);

#define UNITD_NICE_NONE (-100)

#endif
