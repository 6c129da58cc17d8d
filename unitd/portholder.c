/* Which program listens on a TCP port: to name it when a unit cannot take its port.
 *
 * Best effort, from /proc: the listening socket's inode in /proc/net/tcp and tcp6, then the
 * process holding a descriptor of that socket. Processes of other users are not readable
 * without privileges: then the answer is only that a program holds the port.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unitd/unitd.h"

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
		char fddir[64], comm[64] = "?";
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
		if (found) {
			FILE *f;
			snprintf(fddir, sizeof(fddir), "/proc/%ld/comm", pid);
			if ((f = fopen(fddir, "re")) != NULL) {
				if (fgets(comm, sizeof(comm), f) != NULL)
					comm[strcspn(comm, "\n")] = '\0';
				fclose(f);
			}
			snprintf(out, n, "pid %ld (%s)", pid, comm);
		}
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
