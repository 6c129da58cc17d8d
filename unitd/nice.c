/* Key creations at a lower priority: see nice.h. */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kyok/store.h"
#include "unitd/log.h"
#include "unitd/nice.h"

static atomic_bool nice_ok;

static id_t nice_tid(void)
{
	return (id_t)syscall(SYS_gettid);
}

/* The calling thread's nice value, UNITD_NICE_NONE when it cannot be read. */
static int nice_get(void)
{
	int v;

	errno = 0;
	v = getpriority(PRIO_PROCESS, nice_tid());
	return errno != 0 ? UNITD_NICE_NONE : v;
}

/* The probe, on a thread that goes away after it: lowering then raising back. */
static void *nice_probe(void *arg)
{
	bool *ok = arg;
	int base = nice_get();

	*ok = base != UNITD_NICE_NONE && base < KY_STORE_WRITE_NICE &&
	      setpriority(PRIO_PROCESS, nice_tid(), KY_STORE_WRITE_NICE) == 0 &&
	      setpriority(PRIO_PROCESS, nice_tid(), base) == 0;
	return NULL;
}

bool unitd_nice_init(void)
{
	pthread_t t;
	bool ok = false;

	if (pthread_create(&t, NULL, nice_probe, &ok) == 0)
		pthread_join(t, NULL);
	atomic_store(&nice_ok, ok);
	return ok;
}

bool unitd_nice_available(void)
{
	return atomic_load(&nice_ok);
}

int unitd_nice_lower(void)
{
	int prev;

	if (!atomic_load(&nice_ok) || (prev = nice_get()) == UNITD_NICE_NONE ||
	    prev >= KY_STORE_WRITE_NICE)
		return UNITD_NICE_NONE;
	if (setpriority(PRIO_PROCESS, nice_tid(), KY_STORE_WRITE_NICE) != 0)
		return UNITD_NICE_NONE;
	return prev;
}

void unitd_nice_restore(int prev)
{
	if (prev == UNITD_NICE_NONE || setpriority(PRIO_PROCESS, nice_tid(), prev) == 0)
		return;
	/* The probe said it could: a limit changed under the unit. The thread keeps serving, at
	 * the lower priority; later creations are no longer lowered. */
	if (atomic_exchange(&nice_ok, false))
		unitd_log(
		    "warning: a request thread cannot raise its priority back to nice %d (%s): "
		    "creations now run at the requests' priority",
		    prev, strerror(errno));
}
