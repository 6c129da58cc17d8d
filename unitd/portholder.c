/* Which program holds what a unit needs at start: to name it in the unit's error.
 *
 * Best effort, from /proc. A TCP port: the listening socket's inode in /proc/net/tcp and
 * tcp6, then the process holding a descriptor of that socket. A file lock: the POSIX lock's
 * line in /proc/locks. Processes of other users are not readable without privileges: then the
 * answer is only that a program holds the port.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unitd/portholder.h"

#define PORTHOLDER_LISTEN_STATE 0x0a /* TCP_LISTEN in /proc/net/tcp */

/* Inode of a socket listening on port (any address), 0 when none is found. */
static unsigned long portholder_inode(const char *table, uint16_t port)
{
	FILE *f = fopen(table, "re");
	char line[512];
	unsigned long inode = 0;

	if (f == NULL)
		return 0;
	if (fgets(line, sizeof(line), f) == NULL) { /* header */
		fclose(f);
		return 0;
	}
	while (inode == 0 && fgets(line, sizeof(line), f) != NULL) {
		char local[64];
		unsigned int lport, state;
		unsigned long ino;
		const char *colon;

		if (sscanf(line, " %*d: %63s %*s %x %*s %*s %*s %*d %*d %lu", local, &state,
		           &ino) != 3 ||
		    (colon = strrchr(local, ':')) == NULL || sscanf(colon + 1, "%x", &lport) != 1)
			continue;
		if (lport == port && state == PORTHOLDER_LISTEN_STATE && ino != 0)
			inode = ino;
	}
	fclose(f);
	return inode;
}

/* "pid N (name)" of process pid. */
static void portholder_name(long pid, char *out, size_t n)
{
	char path[64], comm[64] = "?";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
	if ((f = fopen(path, "re")) != NULL) {
		if (fgets(comm, sizeof(comm), f) != NULL)
			comm[strcspn(comm, "\n")] = '\0';
		fclose(f);
	}
	snprintf(out, n, "pid %ld (%s)", pid, comm);
}

/* "pid N (name)" of a process with a descriptor on socket inode, false when none is seen. */
static bool portholder_process(unsigned long inode, char *out, size_t n)
{
	DIR *proc = opendir("/proc");
	struct dirent *e;
	char want[64];
	bool found = false;

	if (proc == NULL)
		return false;
	snprintf(want, sizeof(want), "socket:[%lu]", inode);
	while (!found && (e = readdir(proc)) != NULL) {
		char fddir[64];
		DIR *fds;
		struct dirent *fe;
		long pid = strtol(e->d_name, NULL, 10);

		if (pid <= 0 || (long)getpid() == pid)
			continue;
		snprintf(fddir, sizeof(fddir), "/proc/%ld/fd", pid);
		if ((fds = opendir(fddir)) == NULL)
			continue;
		while (!found && (fe = readdir(fds)) != NULL) {
			char link[PATH_MAX], target[128];
			ssize_t len;

			if (fe->d_name[0] == '.' || snprintf(link, sizeof(link), "%s/%s", fddir,
			                                     fe->d_name) >= (int)sizeof(link))
				continue;
			len = readlink(link, target, sizeof(target) - 1);
			if (len <= 0)
				continue;
			target[len] = '\0';
			found = strcmp(target, want) == 0;
		}
		closedir(fds);
		if (found)
			portholder_name(pid, out, n);
	}
	closedir(proc);
	return found;
}

void unitd_port_holder(uint16_t port, char *out, size_t n)
{
	unsigned long inode = portholder_inode("/proc/net/tcp", port);

	if (inode == 0)
		inode = portholder_inode("/proc/net/tcp6", port);
	if (inode != 0 && portholder_process(inode, out, n))
		return;
	snprintf(out, n, "a program this user cannot see; 'ss -ltnp sport = :%u' as root names it",
	         (unsigned)port);
}

bool unitd_lock_holder(const char *path, long byte, char *out, size_t n)
{
	FILE *f;
	char line[256];
	struct stat sb;
	bool found = false;

	if (stat(path, &sb) != 0 || (f = fopen("/proc/locks", "re")) == NULL)
		return false;
	/* "1: POSIX  ADVISORY  WRITE 1234 08:02:5678 120 120" */
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		char kind[16], mode[16], end[24];
		long pid, start;
		unsigned long inode;

		if (sscanf(line, "%*s %15s %*s %15s %ld %*x:%*x:%lu %ld %23s", kind, mode, &pid,
		           &inode, &start, end) != 6)
			continue;
		if (strcmp(kind, "POSIX") != 0 || strcmp(mode, "WRITE") != 0 ||
		    inode != (unsigned long)sb.st_ino || start > byte ||
		    (strcmp(end, "EOF") != 0 && strtol(end, NULL, 10) < byte) || pid <= 0)
			continue;
		portholder_name(pid, out, n);
		found = true;
	}
	fclose(f);
	return found;
}
