/* Process hardening at start, before anything secret is loaded. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"
#include "unitd/config.h"
#include "unitd/harden.h"
#include "unitd/keystore.h"

int unitd_harden(char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct sigaction sa;

	if ((r = ky_process_harden(err, errlen)) != 0)
		goto out;
	r = KY_ERR_INTERNAL;
	umask(077);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGPIPE, &sa, NULL) != 0) {
		snprintf(err, errlen, "cannot ignore SIGPIPE: %s", strerror(errno));
		goto out;
	}
	r = 0;
out:
	return r;
}

int unitd_secure_heap_init(const struct unitd_config *cfg, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;

	/* Key records are opened in the secure heap, several at once, and the key cache keeps
	 * the material of key_cache keys there. */
	if ((r = ky_crypto_init_heap(unitd_secure_heap_size(cfg))) != 0)
		snprintf(err, errlen, "cannot initialise cryptography: %s", ky_err_message(r));
	return r;
}
