/*
 * privindex.c — the folder a read-only open rebuilds an index in, when it cannot use the
 * store's own (verify or dump after a reboot; an index deleted or damaged).
 *
 * Invariants:
 *  P1. A private index folder is $TMPDIR/evstore-index-XXXXXX, an owned folder (ownedir.c):
 *      locked by its open for as long as the open lasts.
 *  P2. The folder is removed by its owner's close, or, if the owner was killed before, by the
 *      next read-only open that makes one (ownedir_sweep, which never takes a live owner's).
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "evstore-index-"

static const char *tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

static void swept(void *arg, const char *path)
{
    evs_log(arg, EVS_LOG_WARN, "removed %s: the private index of a read-only open that ended "
            "without closing", path);
}

int privindex_make(evs_store *st, const char *why, char **path_out, int *fd_out, evs_error *err)
{
    char prefix[PATH_MAX];
    if (snprintf(prefix, sizeof prefix, "%s/" PREFIX, tmpdir()) >= (int)sizeof prefix)
        return evs_err_set(err, -ENAMETOOLONG, "index %s: %s; TMPDIR is too long a path to "
                           "rebuild it in", st->idxdir, why);
    ownedir_sweep(prefix, swept, st);
    int rc = ownedir_make(prefix, path_out, fd_out);
    if (rc)
        return evs_err_set(err, rc, "index %s: %s; cannot make a folder to rebuild it in for "
                           "this read-only open: %sXXXXXX: %s", st->idxdir, why, prefix,
                           evs_strerror(rc));
    return 0;
}
