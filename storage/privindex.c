/*
 * privindex.c — the folder a read-only open rebuilds an index in, when it cannot use the
 * store's own (verify or dump after a reboot; an index deleted or damaged).
 *
 * Invariants:
 *  P1. A private index folder is $TMPDIR/evstore-index-XXXXXX (mkdtemp) and holds
 *      `owner.lock`, flock()ed by the process using the folder for as long as it does; the
 *      file only ever appears under that name already locked (made as `owner.tmp`, locked,
 *      then renamed), so an unlocked `owner.lock` means its owner is gone.
 *  P2. The folder is removed by its owner's close, or, if the owner was killed before, by the
 *      next read-only open that makes one (privindex_sweep): it removes exactly the folders
 *      whose `owner.lock` it can lock, and never one without that file (one being made).
 */
#include "evstore_backup.h" /* evs_remove_tree */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define PREFIX "evstore-index-"

static const char *tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

/* Remove the folders of owners that are gone (P2). */
static void sweep(evs_store *st, const char *tmp)
{
    DIR *d = opendir(tmp);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, PREFIX, strlen(PREFIX)) ||
            strlen(e->d_name) != strlen(PREFIX) + 6)
            continue;
        char path[PATH_MAX], lock[PATH_MAX + 16];
        if (snprintf(path, sizeof path, "%s/%s", tmp, e->d_name) >= (int)sizeof path)
            continue;
        struct stat sb;
        if (lstat(path, &sb) || !S_ISDIR(sb.st_mode) || sb.st_uid != geteuid())
            continue; /* not ours to judge */
        snprintf(lock, sizeof lock, "%s/owner.lock", path);
        int fd = open(lock, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            continue; /* being made */
        if (fstat(fd, &sb) == 0 && sb.st_uid == geteuid() && flock(fd, LOCK_EX | LOCK_NB) == 0) {
            evs_remove_tree(path);
            evs_log(st, EVS_LOG_WARN, "removed %s: the private index of a read-only open that "
                    "ended without closing", path);
        }
        close(fd);
    }
    closedir(d);
}

int privindex_make(evs_store *st, const char *why, char **path_out, int *fd_out, evs_error *err)
{
    const char *tmp = tmpdir();
    sweep(st, tmp);
    char path[PATH_MAX], part[PATH_MAX + 16], lock[PATH_MAX + 16];
    bool named = snprintf(path, sizeof path, "%s/" PREFIX "XXXXXX", tmp) < (int)sizeof path;
    if (!named || !mkdtemp(path)) {
        int e = named ? errno : ENAMETOOLONG;
        return evs_err_set(err, -e, "index %s: %s; cannot make a folder to rebuild it in for "
                           "this read-only open: %s: %s", st->idxdir, why, path, strerror(e));
    }
    snprintf(part, sizeof part, "%s/owner.tmp", path);
    snprintf(lock, sizeof lock, "%s/owner.lock", path);
    int fd = open(part, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int rc = 0;
    if (fd < 0 || flock(fd, LOCK_EX) || rename(part, lock))
        rc = -errno;
    char *dup = rc ? NULL : strdup(path);
    if (!rc && !dup)
        rc = -ENOMEM;
    if (rc) {
        if (fd >= 0)
            close(fd);
        evs_remove_tree(path);
        return evs_err_set(err, rc, "index %s: %s; cannot lock the folder made to rebuild it "
                           "in for this read-only open: %s: %s", st->idxdir, why, path,
                           evs_strerror(rc));
    }
    *path_out = dup;
    *fd_out = fd;
    return 0;
}

void privindex_remove(char *path, int fd)
{
    evs_remove_tree(path); /* while still locked: no sweep sees it half removed */
    close(fd);
    free(path);
}
