/*
 * ownedir.c — temporary folders owned by a live process: a read-only open's private index
 * ($TMPDIR/evstore-index-XXXXXX, privindex.c) and a restore's build folder
 * (<target>.restore-XXXXXX, restore.c). Whoever makes one next removes those whose owner died
 * without cleaning up (killed), and never one whose owner lives.
 *
 * Invariants:
 *  O1. An owned folder is <prefix>XXXXXX (mkdtemp) and holds `owner.lock`, flock()ed by its
 *      owner for as long as it owns the folder. The file only ever appears under that name
 *      already locked (made as `owner.tmp`, locked, then renamed), so an `owner.lock` that can
 *      be locked means its owner is gone (the kernel drops a dead process's locks).
 *  O2. A sweep removes exactly the folders <prefix>XXXXXX of this user whose `owner.lock` it
 *      can lock; never one without that file (being made, or being handed over: O3).
 *  O3. An owner ends its ownership by removing the whole folder while still holding the lock,
 *      or (restore) by renaming the folder into place while holding it, then unlinking
 *      `owner.lock` at the new name: no sweep sees a folder half removed, and a sweep matches
 *      only <prefix>XXXXXX, so it never takes one that has its new name. An owner killed at
 *      any instant before the rename leaves a folder the next sweep removes; one killed
 *      between the rename and the unlink leaves an empty `owner.lock` in the folder.
 */
#include "evstore_backup.h" /* evs_remove_tree */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define SUFFIX_LEN 6 /* mkdtemp's XXXXXX */

void ownedir_sweep(const char *prefix, void (*removed)(void *arg, const char *path), void *arg)
{
    char p1[PATH_MAX], p2[PATH_MAX];
    if (snprintf(p1, sizeof p1, "%s", prefix) >= (int)sizeof p1)
        return;
    snprintf(p2, sizeof p2, "%s", prefix);
    const char *parent = dirname(p1), *base = basename(p2);
    size_t bl = strlen(base);
    DIR *d = opendir(parent);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, base, bl) || strlen(e->d_name) != bl + SUFFIX_LEN)
            continue;
        char path[PATH_MAX], lock[PATH_MAX + 16];
        if (snprintf(path, sizeof path, "%s/%s", parent, e->d_name) >= (int)sizeof path)
            continue;
        struct stat sb;
        if (lstat(path, &sb) || !S_ISDIR(sb.st_mode) || sb.st_uid != geteuid())
            continue; /* not ours to judge */
        snprintf(lock, sizeof lock, "%s/owner.lock", path);
        int fd = open(lock, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            continue; /* being made or handed over (O2) */
        if (fstat(fd, &sb) == 0 && sb.st_uid == geteuid() && flock(fd, LOCK_EX | LOCK_NB) == 0) {
            evs_remove_tree(path);
            if (removed)
                removed(arg, path);
        }
        close(fd);
    }
    closedir(d);
}

int ownedir_make(const char *prefix, char **path_out, int *fd_out)
{
    char path[PATH_MAX], part[PATH_MAX + 16], lock[PATH_MAX + 16];
    if (snprintf(path, sizeof path, "%sXXXXXX", prefix) >= (int)sizeof path)
        return -ENAMETOOLONG;
    if (!mkdtemp(path))
        return -errno;
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
        return rc;
    }
    *path_out = dup;
    *fd_out = fd;
    return 0;
}

void ownedir_remove(char *path, int fd)
{
    evs_remove_tree(path); /* while still locked (O3) */
    close(fd);
    free(path);
}

void ownedir_disown(const char *path, int fd)
{
    char lock[PATH_MAX + 16];
    snprintf(lock, sizeof lock, "%s/owner.lock", path);
    unlink(lock); /* while still locked (O3); if it fails, an empty file stays: nothing reads it */
    close(fd);
}
