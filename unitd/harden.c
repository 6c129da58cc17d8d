/* Process hardening at start, before anything secret is loaded. */
#include <errno.h>
#include <jansson.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "unitd/unitd.h"

/* jansson holds secrets now and then (a serialised domain, a decoded command): wipe every
 * block it frees. The size comes from malloc_usable_size rather than a header before the
 * block, so that a string from json_dumps() released with plain free() somewhere in the
 * library stays valid (it just is not wiped); a header would turn that into a crash. */
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

int unitd_harden(char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct rlimit rl = {0, 0};
	struct sigaction sa;

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
	umask(077);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGPIPE, &sa, NULL) != 0) {
		snprintf(err, errlen, "cannot ignore SIGPIPE: %s", strerror(errno));
		goto out;
	}
	/* Before the first jansson call: blocks must be freed by the function that made them. */
	json_set_alloc_funcs(harden_json_malloc, harden_json_free);
	if ((r = ky_crypto_init()) != 0) {
		snprintf(err, errlen, "cannot initialise cryptography: %s", ky_err_message(r));
		goto out;
	}
	r = 0;
out:
	return r;
}
