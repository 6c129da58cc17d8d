/* log.c: the unit's log. */
#ifndef KYOK_UNITD_LOG_H
#define KYOK_UNITD_LOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "kyok/common.h"

/* Opens the log (path NULL = stderr). */
int unitd_log_open(const char *path, char *err, size_t errlen) KY_WUR;
/* Reopens the log file after rotation (SIGHUP); keeps the old one on failure. */
void unitd_log_reopen(void);
/* True when the log lines already land on stderr (no log file, or stderr is that file). */
bool unitd_log_reaches_stderr(void);
void unitd_log_close(void);
/* One line, prefixed with the UTC time. Never pass secrets. */
void unitd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* At most per_second lines a second from one source of lines, so that no client can fill the
 * disk: unitd_log_rate_take says whether this line may be written, and sets *missed to the
 * lines held back in the second before when that one is over (write them as one line). */
struct unitd_log_rate {
	pthread_mutex_t lock;
	time_t window;
	unsigned in_window, dropped;
};
#define UNITD_LOG_RATE_INIT                        \
	{                                          \
		PTHREAD_MUTEX_INITIALIZER, 0, 0, 0 \
	}
bool unitd_log_rate_take(struct unitd_log_rate *rl, unsigned per_second, unsigned *missed);

#endif
