/* kyok restore: a key storage backup (cli/backup.c) put back while the crypto units are
 * stopped.
 *
 * kyok restore checks the manifest (instance, digest, contents) and refuses while a unit of
 * the instance runs. It keeps the storage in place beside it (renamed, with its WAL) and puts
 * the copy in its place. It does not go around the units' rollback protection: they refuse
 * the older storage until the administrators sign 'kyok tke storage-accept'.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/backup.h"
#include "cli/cli.h"
#include "cli/cmds.h"

/* Every unit of the instance stopped: no kyok-unitd runs on a unit.conf of the instance
 * directory, and no unit that instance.json lists answers. */
static int bk_units_stopped(const struct cli_instance *inst)
{
	int r = KY_ERR_INTERNAL, numbers[16];
	long pids[16];
	size_t n = 0, len = 0;
	char list[512] = "", why[256];

	if ((r = up_running_units(inst->dir, numbers, pids, 16, &n)) != 0) {
		cli_fail(r, inst->dir, "cannot look for running crypto units");
		return r;
	}
	for (size_t i = 0; i < n && len < sizeof(list); i++)
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%d (pid %ld)",
		                        i > 0 ? ", " : "", numbers[i], pids[i]);
	for (size_t i = 0; i < inst->nunits && len < sizeof(list); i++) {
		bool listed = false;
		for (size_t k = 0; k < n; k++)
			listed = listed || numbers[k] == inst->units[i].number;
		if (listed || unit_health(&inst->units[i], why, sizeof(why)) != 0)
			continue;
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%d (answers at %s)",
		                        len > 0 ? ", " : "", inst->units[i].number,
		                        inst->units[i].url);
		n++;
	}
	if (n == 0)
		return 0;
	r = KY_ERR_UNITS_RUNNING;
	cli_fail(r, inst->dir,
	         "crypto unit %s: stop them with 'kyok down' (units that systemd runs: "
	         "'systemctl stop kyok-unitd@N'), then run kyok restore again; nothing was changed",
	         list);
	return r;
}

/* Moves path (and its -wal and -shm) to aside (and aside-wal, aside-shm). On failure moves
 * back what was moved. */
static int bk_move_aside(const char *path, const char *aside)
{
	static const char *const sfx[] = {"", "-wal", "-shm"};
	char from[PATH_MAX + 8], to[PATH_MAX + 80];
	size_t moved = 0;
	int r = KY_ERR_IO;

	for (; moved < 3; moved++) {
		snprintf(from, sizeof(from), "%s%s", path, sfx[moved]);
		snprintf(to, sizeof(to), "%s%s", aside, sfx[moved]);
		if (!bk_exists(from))
			continue;
		if (rename(from, to) != 0) {
			cli_fail(r, from, "cannot move it aside to '%s': %s", to, strerror(errno));
			goto undo;
		}
	}
	return 0;
undo:
	while (moved-- > 0) {
		snprintf(from, sizeof(from), "%s%s", path, sfx[moved]);
		snprintf(to, sizeof(to), "%s%s", aside, sfx[moved]);
		if (bk_exists(to))
			(void)rename(to, from);
	}
	return r;
}

/* A plain copy of src into the new file dst (0600), fsync'd. */
static int bk_copy_file(const char *src, const char *dst)
{
	int r = KY_ERR_IO, in = -1, outfd = -1;
	uint8_t buf[65536];
	ssize_t got;

	if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0) {
		cli_fail(r, src, "%s", strerror(errno));
		goto out;
	}
	if ((outfd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
		cli_fail(r, dst, "cannot create: %s", strerror(errno));
		goto out;
	}
	while ((got = read(in, buf, sizeof(buf))) != 0) {
		ssize_t off = 0;
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			cli_fail(r, src, "%s", strerror(errno));
			goto out_unlink;
		}
		while (off < got) {
			ssize_t w = write(outfd, buf + off, (size_t)(got - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				cli_fail(r, dst, "%s", strerror(errno));
				goto out_unlink;
			}
			off += w;
		}
	}
	if (fsync(outfd) != 0 || close(outfd) != 0) {
		outfd = -1;
		cli_fail(r, dst, "cannot write it to disk: %s", strerror(errno));
		goto out_unlink;
	}
	outfd = -1;
	r = 0;
	goto out;
out_unlink:
	unlink(dst);
out:
	if (outfd >= 0)
		close(outfd);
	if (in >= 0)
		close(in);
	return r;
}

/* The workspace's key part numbers whose VPs are vps, as "1,2" (empty when one is not in
 * the workspace). */
static void bk_part_numbers(const char (*vps)[BACKUP_VP_HEX + 1], size_t nvps, char *out, size_t n)
{
	struct cli_keypart *parts = NULL;
	size_t np = 0, len = 0;

	out[0] = '\0';
	if (nvps == 0 || cli_keyparts_list(&parts, &np) != 0)
		return;
	for (size_t i = 0; i < nvps; i++) {
		size_t k;
		for (k = 0; k < np && strcmp(parts[k].vp_hex, vps[i]) != 0; k++)
			;
		if (k == np) {
			out[0] = '\0';
			break;
		}
		len +=
		    (size_t)snprintf(out + len, n - len, "%s%d", i > 0 ? "," : "", parts[k].number);
		if (len >= n) {
			out[0] = '\0';
			break;
		}
	}
	free(parts);
}

/* The way back to the backup's master key old_vp (entry which of the manifest). */
static void bk_way_back(FILE *f, const struct backup_manifest *m, size_t which, const char *old_vp)
{
	char nums[64];

	bk_part_numbers(m->vps[which].parts, m->vps[which].nparts, nums, sizeof(nums));
	if (nums[0] != '\0') {
		fprintf(
		    f,
		    "     kyok tke cryptounit-mk-load --parts %s   (the backup's key parts, into "
		    "the new register)\n",
		    nums);
	} else {
		fprintf(
		    f,
		    "     kyok tke cryptounit-mk-load --parts N,N,...   (the key parts of VP %.16s",
		    old_vp);
		for (size_t k = 0; k < m->vps[which].nparts; k++)
			fprintf(f, "%s%.16s", k == 0 ? ": part VPs " : " ", m->vps[which].parts[k]);
		fprintf(f, "; not all in this workspace: 'kyok tke mks' lists it)\n");
	}
	fprintf(f,
	        "     kyok tke cryptounit-mk-commit\n"
	        "     kyok tke storage-accept\n"
	        "     kyok tke cryptounit-mk-rotate   (makes the backup's master key current)\n"
	        "   cryptounit-mk-load prints the VP of the key it loaded: it must be %.16s....\n"
	        "   Keep the key parts of both master keys until no backup needs them.\n",
	        old_vp);
}

/* What follows a restore: storage-accept, and the way back to the backup's master key when
 * it is not the one of the storage that was in place (or when that storage could not be
 * read: then the units' current master key decides). */
static void bk_restore_next(FILE *f, const struct backup_manifest *m,
                            const struct bk_contents *before, bool had_before)
{
	const char *old_vp = NULL;
	size_t which = 0;
	bool known = had_before && before->integrity_vp[0] != '\0';

	/* A master key the backup's records are under that the storage in place was not. */
	for (size_t i = 0; i < m->nvps; i++) {
		if (m->vps[i].records == 0 ||
		    (known && strcmp(m->vps[i].vp, before->integrity_vp) == 0))
			continue;
		old_vp = m->vps[i].vp;
		which = i;
		break;
	}
	fprintf(f, "\nwhat follows:\n");
	fprintf(f, "1. start the units: 'kyok up' (or 'systemctl start kyok-unitd@N' on each "
	           "host).\n");
	if (old_vp == NULL) {
		fprintf(f,
		        "2. they refuse the restored storage as older than what they have seen "
		        "(storage-rolled-back) until\n"
		        "   the administrators accept it, signed as the signature threshold asks:\n"
		        "     kyok tke storage-accept\n"
		        "   (if nothing was written since the backup, they serve it at once).\n");
		return;
	}
	if (known)
		fprintf(
		    f,
		    "2. the backup's records are sealed under master key VP %s,\n"
		    "   the storage that was in place under VP %s (the units' current master "
		    "key):\n"
		    "   the units answer master-key-mismatch until the backup's master key is "
		    "back,\n"
		    "   then storage-rolled-back (older storage) until the administrators accept "
		    "it.\n"
		    "   The way back, in this order:\n",
		    old_vp, before->integrity_vp);
	else
		fprintf(
		    f,
		    "2. the backup's records are sealed under master key VP %s; no storage was "
		    "in place to compare.\n"
		    "   If 'kyok status' shows that VP as the units' current master key, accept "
		    "the storage:\n"
		    "     kyok tke storage-accept\n"
		    "   If it shows another, the units answer master-key-mismatch: the way back, "
		    "in this order:\n",
		    old_vp);
	bk_way_back(f, m, which, old_vp);
}

static const char restore_usage[] =
    "usage: kyok restore --from FILE [--instance DIR]\n"
    "\n"
    "Puts a backup made by 'kyok backup' back as the instance's key storage. Refuses\n"
    "while a crypto unit of the instance runs (stop them with 'kyok down'), and checks\n"
    "FILE against FILE.manifest.json: the instance, the SHA-256 and what the copy holds.\n"
    "The key storage in place is kept beside it, renamed to\n"
    "<keys.db>.before-restore-<time> (with its WAL), not deleted.\n"
    "\n"
    "The units do not serve the restored storage at once: it is older than what they\n"
    "have seen, and they refuse it until the administrators accept it with 'kyok tke\n"
    "storage-accept'. When the backup's records are under another master key than the\n"
    "storage that was in place (a rotation since the backup), restore says so with both\n"
    "VPs and prints the way back: load the backup's key parts into the new register\n"
    "(cryptounit-mk-load), commit, storage-accept, cryptounit-mk-rotate.\n"
    "\n";

int restore_main(int argc, char **argv)
{
	enum { OPT_FROM = 0x2001 };
	static const struct cli_opt opts[] = {
	    {"from", OPT_FROM, CLI_ARG_REQUIRED, "FILE",
	     "the backup to restore (FILE.manifest.json beside it)"},
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, c;
	const char *from = NULL;
	char mpath[PATH_MAX + 32], why[256], sha[65], store[PATH_MAX], tmp[PATH_MAX + 32];
	char aside[PATH_MAX + 64], stamp[32], dir[PATH_MAX];
	struct cli_instance inst;
	struct backup_manifest m;
	struct bk_contents ct, before;
	struct ky_buf b = {0};
	bool had_before = false, moved = false;
	time_t t;
	struct tm tm;

	tmp[0] = '\0';
	memset(&before, 0, sizeof(before));
	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, restore_usage, opts, cli_common_opts);
			return 0;
		}
		if (c == OPT_FROM)
			from = optarg;
		else if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	if (from == NULL || from[0] == '\0') {
		r = KY_ERR_USAGE;
		cli_fail(r, "kyok restore", "--from FILE is needed: the backup to restore");
		return ky_err_exit(r);
	}
	if ((r = cli_instance_load(&inst)) != 0)
		return ky_err_exit(r);
	if (!bk_exists(from)) {
		r = KY_ERR_NOT_FOUND;
		cli_fail(r, from, "no such backup");
		goto out;
	}
	snprintf(mpath, sizeof(mpath), "%s%s", from, BK_MANIFEST_SUFFIX);
	if ((r = ky_file_read(mpath, BK_MANIFEST_MAX, &b)) != 0) {
		if (r == KY_ERR_NOT_FOUND)
			r = KY_ERR_BACKUP_NO_MANIFEST;
		cli_fail(r, mpath, NULL);
		goto out;
	}
	if ((r = backup_manifest_parse((const char *)b.data, b.len, &m, why, sizeof(why))) != 0) {
		cli_fail(r, mpath, "%s", why);
		goto out;
	}
	if (strcmp(m.instance, inst.id) != 0) {
		r = KY_ERR_BACKUP_WRONG_INSTANCE;
		cli_fail(r, from, "a backup of instance '%s'; this instance (%s) is '%s'",
		         m.instance, inst.dir, inst.id);
		goto out;
	}
	if ((r = bk_file_sha256(from, sha)) != 0) {
		cli_fail(r, from, "cannot read the backup");
		goto out;
	}
	if (CRYPTO_memcmp(sha, m.sha256, 64) != 0) {
		r = KY_ERR_BACKUP_MISMATCH;
		cli_fail(r, from, "its SHA-256 is %s, the manifest says %s", sha, m.sha256);
		goto out;
	}
	if ((r = bk_read_contents(from, true, &ct)) != 0)
		goto out;
	if (strcmp(ct.instance, m.instance) != 0 || ct.keys != m.keys) {
		r = KY_ERR_BACKUP_MISMATCH;
		cli_fail(r, from,
		         "it holds %lld keys of instance '%s', the manifest says %lld of '%s'",
		         ct.keys, ct.instance, m.keys, m.instance);
		goto out;
	}
	if ((r = bk_store_path(&inst, store, sizeof(store))) != 0)
		goto out;
	if ((r = bk_units_stopped(&inst)) != 0)
		goto out;
	if (bk_exists(store)) {
		struct stat st;
		had_before = stat(store, &st) == 0 && st.st_size > 0 &&
		             bk_read_contents(store, false, &before) == 0;
	}
	bk_dirname(store, dir, sizeof(dir));
	snprintf(tmp, sizeof(tmp), "%s.restore.%ld", store, (long)getpid());
	if ((r = bk_copy_file(from, tmp)) != 0) {
		tmp[0] = '\0';
		goto out;
	}
	if ((r = bk_file_sha256(tmp, sha)) != 0 || CRYPTO_memcmp(sha, m.sha256, 64) != 0) {
		r = r != 0 ? r : KY_ERR_BACKUP_MISMATCH;
		cli_fail(r, tmp, "the copy of the backup does not read back as written");
		goto out;
	}
	t = time(NULL);
	gmtime_r(&t, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(aside, sizeof(aside), "%s.before-restore-%s", store, stamp);
	if (bk_exists(aside))
		snprintf(aside, sizeof(aside), "%s.before-restore-%s.%ld", store, stamp,
		         (long)getpid());
	if ((r = bk_move_aside(store, aside)) != 0)
		goto out;
	moved = true;
	if (rename(tmp, store) != 0) {
		r = KY_ERR_IO;
		cli_fail(r, store, "cannot put the backup in place: %s", strerror(errno));
		goto out;
	}
	tmp[0] = '\0';
	moved = false;
	if ((r = bk_fsync_path(dir, true)) != 0) {
		cli_fail(r, dir, "cannot write the directory to disk");
		goto out;
	}
	if (cli_g.json) {
		cli_print_json(json_pack(
		    "{s:s, s:s, s:s?, s:s, s:I, s:s?, s:s?}", "restored", from, "store", store,
		    "kept", had_before ? aside : NULL, "created", m.created, "keys",
		    (json_int_t)m.keys, "backup_vp", m.nvps > 0 ? m.vps[0].vp : NULL, "storage_vp",
		    had_before && before.integrity_vp[0] ? before.integrity_vp : NULL));
	} else {
		printf("restored key storage %s from the backup %s (made %s, %lld keys)\n", store,
		       from, m.created, m.keys);
		if (had_before || bk_exists(aside))
			printf("the storage that was in place is kept as %s\n", aside);
	}
	bk_restore_next(cli_g.json ? stderr : stdout, &m, &before, had_before);
	r = 0;
out:
	if (moved)
		(void)bk_move_aside(aside, store);
	if (tmp[0] != '\0')
		unlink(tmp);
	ky_buf_free(&b);
	return ky_err_exit(r);
}
