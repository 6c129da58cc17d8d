/* nice.c: requests that change key storage run at a lower scheduling priority while they work.
 *
 * When the CPUs are all busy, a request that only reads (unwrap, a key's details) should not
 * wait behind key creations: those take ten times its CPU, most of it storage work. The
 * group commit already commits at nice KY_STORE_WRITE_NICE (lib/store/groupcommit.h); a request
 * that changes key storage runs its handler at that nice value too, and its thread goes back to
 * the priority it had before answering.
 *
 * Going back up needs CAP_SYS_NICE or an RLIMIT_NICE of 20 - base nice or more (LimitNICE=+0
 * in the service file). unitd_nice_init() probes that once, on a thread of its own; without
 * it, writes run at the requests' priority, as before.
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
