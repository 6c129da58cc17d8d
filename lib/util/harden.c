/* Process hardening shared by kyok-unitd and the kyok CLI: no core dumps, not dumpable,
 * jansson's memory wiped when freed. */
#include <errno.h>
#include <jansson.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "kyok/common.h"
#include "kyok/err.h"

/* jansson holds secrets now and then (a serialised domain, a decoded command, an API key
 * file): wipe every block it frees. The size comes from malloc_usable_size rather than a
 * header before the block, so that a string from json_dumps() released with plain free()
 * somewhere stays valid (it just is not wiped); a header would turn that into a crash. */
static void *harden_json_malloc(size_t n)
{
	return malloc(n);
}

static void harden_json_free(void *p)
{
	if (p == NULL)
		return;
	OPENSSL_cleanse(p, malloc_usable_size(p));
	free(p);
}

#ifdef KY_SANITIZED
/* LeakSanitizer reads the process through ptrace-like means at exit and refuses to work
 * on a non-dumpable process: give it back for the leak check of sanitizer builds only. */
static void harden_dumpable_at_exit(void)
{
	(void)prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}
#endif

int ky_process_harden(char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct rlimit rl = {0, 0};

	if (setrlimit(RLIMIT_CORE, &rl) != 0) {
		snprintf(err, errlen, "cannot disable core dumps: %s", strerror(errno));
		goto out;
	}
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
		snprintf(err, errlen, "cannot make the process non-dumpable: %s", strerror(errno));
		goto out;
	}
#ifdef KY_SANITIZED
	if (atexit(harden_dumpable_at_exit) != 0) {
		snprintf(err, errlen, "cannot register exit handler");
		goto out;
	}
#endif
	/* Before the first jansson call: blocks must be freed by the function that made them. */
	json_set_alloc_funcs(harden_json_malloc, harden_json_free);
	r = 0;
out:
	return r;
}
