/*
 * swap.c — putting a complete store, staged in a folder inside a data folder, in the place of
 * the store there (a follower's copy of its leader's store: docs/replication.md), within the
 * data folder itself. Nothing is renamed across the folder's edge, so it may be a mount point
 * (a volume mounted as the data folder), and the copy is made on the store's own disk.
 *
 *   DIR/<staged>/...        the complete new store (restored, closed, synced)
 *   DIR/SWAP                the journal: "evstore-swap 1\nnew <staged>\nold <aside>\n", then
 *                           each of the new store's entries, a line each
 *   DIR/<aside>/...         where the old store's entries go (.replaced-<time>)
 *
 * evs_swap_in writes the journal (temp, fsync, rename, fsync DIR), then finishes the swap:
 *   1. every entry of DIR but LOCK, SWAP, lost+found and the staging folders (names starting
 *      ".new-", ".snapshot-", ".replaced-") that the new store has no entry of that name for
 *      moves into <aside>;
 *   2. for each of the new store's entries still in <staged>: the old entry of that name, if
 *      any, moves into <aside>, then the new one into DIR;
 *   3. <aside> and DIR are fsynced, <staged> removed, SWAP removed, DIR fsynced.
 * A writable evs_open that finds SWAP finishes it the same way before it reads anything.
 *
 * Invariants:
 *  S1. The store in DIR is the old one whole until SWAP is durable, and the new one whole
 *      once any open has run: before the journal, the new store is all in <staged>; after it,
 *      every open finishes the moves before it looks at DIR (a read-only open refuses).
 *  S2. Finishing is idempotent: an entry of DIR leaves only for <aside>, and only while no
 *      entry of the new store has taken its name (step 1 skips the new store's names; step 2
 *      moves the old entry of a name out just before the new one comes in, and only while the
 *      new one is still in <staged>), so a crash at any instant, finished again, ends as one
 *      uninterrupted run would.
 *  S3. Nothing of the old store is deleted here: it is all in <aside>.
 *  S4. The caller holds DIR's LOCK (it is never moved), or no process has DIR open.
 */
#include "evstore_backup.h"
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SWAP_MAGIC "evstore-swap 1\n"
#define SWAP_FILE_MAX (SWAP_MAX_ENTRIES * (SWAP_NAME_MAX + 1) + 2 * (SWAP_NAME_MAX + 5) + 16)

/* Entries of DIR that are never part of a store's swap: the lock, the journal, the file
 * system's own folder, and staging folders. */
static bool never_moved(const char *name)
{
    return !strcmp(name, ".") || !strcmp(name, "..") || !strcmp(name, "LOCK") ||
           !strcmp(name, "SWAP") || !strcmp(name, "SWAP.tmp") || !strcmp(name, "lost+found") ||
           evs_staged_is(name, EVS_STAGED_NEW) || evs_staged_is(name, EVS_STAGED_SNAPSHOT) ||
           evs_staged_is(name, EVS_STAGED_REPLACED);
}

static bool plain_name(const char *s)
{
    return *s && strlen(s) <= SWAP_NAME_MAX && !strchr(s, '/') && !strchr(s, '\n') &&
           strcmp(s, ".") && strcmp(s, "..");
}

static bool in_plan(const swap_plan *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->names[i], name))
            return true;
    return false;
}

/* Move DIR/name into DIR/to_dir/name, which must not exist (S2 says it never does: were it
 * there, the old store's entry of that name would be overwritten). */
static int moved(const char *dir, const char *to_dir, const char *name, evs_error *err)
{
    char a[PATH_MAX], b[PATH_MAX];
    struct stat sb;
    snprintf(a, sizeof a, "%s/%s", dir, name);
    snprintf(b, sizeof b, "%s/%s/%s", dir, to_dir, name);
    if (!lstat(b, &sb))
        return evs_err_set(err, EVS_EEXIST, "cannot move %s to %s: it exists (a store opened "
                           "by another program while the swap was unfinished?)", a, b);
    if (rename(a, b))
        return evs_err_set(err, -errno, "cannot move %s to %s: %s", a, b, strerror(errno));
    return 0;
}

int swap_journal_parse(const char *text, size_t len, swap_plan *p)
{
    memset(p, 0, sizeof *p);
    size_t at = 0;
    for (int k = 0; at < len; k++) {
        const char *nl = memchr(text + at, '\n', len - at);
        if (!nl)
            return -1; /* a line without its end: not written whole */
        size_t ll = (size_t)(nl - (text + at));
        char line[SWAP_NAME_MAX + 8];
        if (ll >= sizeof line || memchr(text + at, '\0', ll))
            return -1;
        memcpy(line, text + at, ll);
        line[ll] = 0;
        at += ll + 1;
        if (k == 0) {
            if (strcmp(line, "evstore-swap 1"))
                return -1;
        } else if (k == 1) {
            if (strncmp(line, "new .new-", 9) || !plain_name(line + 4))
                return -1;
            snprintf(p->fresh, sizeof p->fresh, "%.255s", line + 4);
        } else if (k == 2) {
            if (strncmp(line, "old .replaced-", 14) || !plain_name(line + 4))
                return -1;
            snprintf(p->aside, sizeof p->aside, "%.255s", line + 4);
        } else if (p->n == SWAP_MAX_ENTRIES || !plain_name(line) || never_moved(line) ||
                   in_plan(p, line)) {
            return -1;
        } else {
            snprintf(p->names[p->n++], sizeof p->names[0], "%.255s", line);
        }
    }
    return p->aside[0] ? 0 : -1;
}

/* Read DIR/SWAP: 1 and *p filled, 0 when there is none, < 0 if it cannot be read or parsed. */
static int plan_read(const char *dir, swap_plan *p, evs_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/SWAP", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : evs_err_set(err, -errno, "cannot read %s: %s", path,
                                                 strerror(errno));
    char *text = malloc(SWAP_FILE_MAX + 1);
    ssize_t n = text ? read(fd, text, SWAP_FILE_MAX + 1) : -1;
    int e = text ? errno : ENOMEM;
    close(fd);
    int rc = 0;
    if (n < 0)
        rc = evs_err_set(err, -e, "cannot read %s: %s", path, strerror(e));
    else if (n > SWAP_FILE_MAX || swap_journal_parse(text, (size_t)n, p))
        rc = evs_err_set(err, EVS_ECORRUPT, "%s is not a swap journal evstore wrote (left as "
                         "it is: finish or undo the swap by hand, docs/format.md)", path);
    free(text);
    return rc ? rc : 1;
}

/* Steps 1-3 of the swap the plan describes (S2: from any point a crash left it at). */
static int finish(const char *dir, const swap_plan *p, evs_error *err)
{
    char aside[PATH_MAX], fresh[PATH_MAX], path[PATH_MAX + SWAP_NAME_MAX + 2];
    snprintf(aside, sizeof aside, "%s/%s", dir, p->aside);
    snprintf(fresh, sizeof fresh, "%s/%s", dir, p->fresh);
    if (mkdir(aside, 0755) && errno != EEXIST)
        return evs_err_set(err, -errno, "cannot create %s: %s", aside, strerror(errno));
    DIR *d = opendir(dir);
    if (!d)
        return evs_err_set(err, -errno, "cannot list %s: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    char **go = NULL; /* listed first, moved after: never renamed under readdir */
    size_t ngo = 0, cap = 0;
    while (!rc && (e = readdir(d))) {
        if (never_moved(e->d_name) || in_plan(p, e->d_name))
            continue;
        char *name = strdup(e->d_name);
        if (name && ngo == cap) {
            char **g = realloc(go, (cap = cap ? 2 * cap : 16) * sizeof *g);
            if (!g) {
                free(name);
                name = NULL;
            } else {
                go = g;
            }
        }
        if (!name)
            rc = evs_err_set(err, -ENOMEM, "out of memory");
        else
            go[ngo++] = name;
    }
    closedir(d);
    for (size_t i = 0; i < ngo; i++) {
        if (!rc)
            rc = moved(dir, p->aside, go[i], err);
        free(go[i]);
    }
    free(go);
    for (size_t i = 0; i < p->n && !rc; i++) {
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", fresh, p->names[i]);
        if (lstat(path, &sb))
            continue; /* in DIR already */
        char to[PATH_MAX + SWAP_NAME_MAX + 2];
        snprintf(to, sizeof to, "%s/%s", dir, p->names[i]);
        if (!lstat(to, &sb) && (rc = moved(dir, p->aside, p->names[i], err)))
            break;
        if (rename(path, to))
            rc = evs_err_set(err, -errno, "cannot move %s into %s: %s", path, dir,
                             strerror(errno));
    }
    if (!rc && ((rc = fio_fsync_dir(&fio_real, aside)) || (rc = fio_fsync_dir(&fio_real, dir))))
        rc = evs_err_set(err, rc, "cannot fsync %s: %s", dir, strerror(-rc));
    if (rc)
        return rc;
    evs_remove_tree(fresh); /* what is left of it: nothing the store needs (its LOCK, say) */
    snprintf(path, sizeof path, "%s/SWAP", dir);
    if (unlink(path) && errno != ENOENT)
        return evs_err_set(err, -errno, "cannot remove %s: %s", path, strerror(errno));
    rc = fio_fsync_dir(&fio_real, dir);
    return rc ? evs_err_set(err, rc, "cannot fsync %s: %s", dir, strerror(-rc)) : 0;
}

int store_swap_pending(const char *dir, evs_error *err)
{
    swap_plan *p = malloc(sizeof *p);
    if (!p)
        return evs_err_set(err, -ENOMEM, "out of memory");
    int rc = plan_read(dir, p, err);
    if (rc == 1)
        rc = finish(dir, p, err);
    free(p);
    return rc;
}

int evs_swap_in(const char *dir, const char *staged, char *aside, size_t cap, evs_error *err)
{
    swap_plan *p = calloc(1, sizeof *p);
    if (!p)
        return evs_err_set(err, -ENOMEM, "out of memory");
    int rc = 0;
    struct stat sb;
    char path[PATH_MAX];
    if (cap)
        aside[0] = 0;
    if (!staged) { /* finish one a crash interrupted, if any */
        if ((rc = plan_read(dir, p, err)) == 1 && !(rc = finish(dir, p, err)))
            snprintf(aside, cap, "%s/%s", dir, p->aside);
        goto out;
    }
    snprintf(path, sizeof path, "%s/SWAP", dir);
    if (!lstat(path, &sb)) {
        rc = evs_err_set(err, EVS_EEXIST, "%s holds an unfinished swap (SWAP): open the store "
                         "to finish it first", dir);
        goto out;
    }
    if (!plain_name(staged) || !evs_staged_is(staged, EVS_STAGED_NEW)) {
        rc = evs_err_set(err, EVS_EINVAL, "%s: a staged store is a folder .new-<...> of %s",
                         staged, dir);
        goto out;
    }
    snprintf(p->fresh, sizeof p->fresh, "%s", staged);
    long now = (long)time(NULL);
    for (int k = 0;; k++) { /* a name no earlier swap left */
        if (k)
            snprintf(p->aside, sizeof p->aside, EVS_STAGED_REPLACED "%ld-%d", now, k);
        else
            snprintf(p->aside, sizeof p->aside, EVS_STAGED_REPLACED "%ld", now);
        snprintf(path, sizeof path, "%s/%s", dir, p->aside);
        if (lstat(path, &sb))
            break;
    }
    snprintf(path, sizeof path, "%s/%s", dir, staged);
    DIR *d = opendir(path);
    if (!d) {
        rc = evs_err_set(err, -errno, "cannot list %s: %s", path, strerror(errno));
        goto out;
    }
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (never_moved(e->d_name))
            continue; /* its LOCK: DIR keeps its own (S4) */
        if (p->n == SWAP_MAX_ENTRIES || !plain_name(e->d_name))
            rc = evs_err_set(err, EVS_EINVAL, "%s holds more than a store does (%s)", path,
                             e->d_name);
        else
            snprintf(p->names[p->n++], sizeof p->names[0], "%s", e->d_name);
    }
    closedir(d);
    if (rc)
        goto out;
    size_t len = 0, room = sizeof SWAP_MAGIC + 2 * (SWAP_NAME_MAX + 6) +
                           p->n * (SWAP_NAME_MAX + 2);
    char *text = malloc(room);
    if (!text) {
        rc = evs_err_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    len += (size_t)snprintf(text + len, room - len, "%snew %s\nold %s\n", SWAP_MAGIC,
                            p->fresh, p->aside);
    for (size_t i = 0; i < p->n; i++)
        len += (size_t)snprintf(text + len, room - len, "%s\n", p->names[i]);
    snprintf(path, sizeof path, "%s/SWAP", dir);
    rc = fio_write_file_atomic(&fio_real, path, text, len);
    free(text);
    if (rc) {
        rc = evs_err_set(err, rc, "cannot write %s: %s", path, strerror(-rc));
        goto out;
    }
    if (!(rc = finish(dir, p, err)))
        snprintf(aside, cap, "%s/%s", dir, p->aside);
out:
    free(p);
    return rc;
}
