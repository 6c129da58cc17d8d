/* The unit's log: one line per event, "<UTC time> <text>", to the log file unit.conf names
 * (reopened on SIGHUP, for log rotation) or to stderr. A line never holds a control
 * character: nothing a client sends may start a line of its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kyok/err.h"
#include "unitd/log.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_fp;   /* NULL = stderr */
static char *log_path; /* NULL = stderr */

static FILE *log_file_open(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	FILE *fp;

	if (fd < 0)
		return NULL;
	if ((fp = fdopen(fd, "a")) == NULL) {
		close(fd);
		return NULL;
	}
	setvbuf(fp, NULL, _IOLBF, 0);
	return fp;
}

int unitd_log_open(const char *path, char *err, size_t errlen)
{
	FILE *fp;

	if (path == NULL)
		return 0;
	if ((fp = log_file_open(path)) == NULL) {
		snprintf(err, errlen, "cannot open log file '%s': %s", path, strerror(errno));
		return KY_ERR_IO;
	}
	if ((log_path = strdup(path)) == NULL) {
		fclose(fp);
		snprintf(err, errlen, "out of memory");
		return KY_ERR_NOMEM;
	}
	pthread_mutex_lock(&log_lock);
	log_fp = fp;
	pthread_mutex_unlock(&log_lock);
	return 0;
}

void unitd_log_reopen(void)
{
	FILE *fp;

	if (log_path == NULL || (fp = log_file_open(log_path)) == NULL)
		return;
	pthread_mutex_lock(&log_lock);
	if (log_fp != NULL)
		fclose(log_fp);
	log_fp = fp;
	pthread_mutex_unlock(&log_lock);
}

bool unitd_log_reaches_stderr(void)
{
	struct stat a, b;
	bool same = true;

	pthread_mutex_lock(&log_lock);
	if (log_fp != NULL)
		same = fstat(fileno(log_fp), &a) == 0 && fstat(STDERR_FILENO, &b) == 0 &&
		       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
	pthread_mutex_unlock(&log_lock);
	return same;
}

void unitd_log_close(void)
{
	pthread_mutex_lock(&log_lock);
	if (log_fp != NULL)
		fclose(log_fp);
	log_fp = NULL;
	pthread_mutex_unlock(&log_lock);
	free(log_path);
	log_path = NULL;
}

static void log_vline(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

static void log_vline(const char *fmt, va_list ap)
{
	char ts[32] = "-", line[1024];
	struct timespec now;
	struct tm tm;
	size_t n;

	if (clock_gettime(CLOCK_REALTIME, &now) == 0 && gmtime_r(&now.tv_sec, &tm) != NULL)
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	/* One event, one line: nothing a client sends may start a line of its own. */
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	pthread_mutex_lock(&log_lock);
	fprintf(log_fp ? log_fp : stderr, "%s %s\n", ts, line);
	fflush(log_fp ? log_fp : stderr);
	pthread_mutex_unlock(&log_lock);
}

void unitd_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vline(fmt, ap);
	va_end(ap);
}

bool unitd_log_rate_take(struct unitd_log_rate *rl, unsigned per_second, unsigned *missed)
{
	time_t now = time(NULL);
	bool take;

	*missed = 0;
	pthread_mutex_lock(&rl->lock);
	if (now != rl->window) {
		*missed = rl->dropped;
		rl->window = now;
		rl->in_window = 0;
		rl->dropped = 0;
	}
	take = rl->in_window < per_second;
	if (take)
		rl->in_window++;
	else
		rl->dropped++;
	pthread_mutex_unlock(&rl->lock);
	return take;
}
