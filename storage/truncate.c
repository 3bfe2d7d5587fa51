/*
 * truncate.c — cutting a follower's divergent tail (docs/replication.md).
 *
 * A follower whose log goes past the point X where its history and its leader's part (a
 * former leader's writes that never reached the new leader) is told to cut there. It writes
 * TRUNCATE ("truncate <X>\n", atomically) and restarts; the next open, before it reads the
 * log, runs store_truncate_pending():
 *
 *   - the bytes of the segment holding X from X on are copied to
 *     log/<segment>.<offset>.diverged, then overwritten with zeros and synced;
 *   - every later segment is renamed <name>.diverged (its bytes kept, no longer part of the
 *     log);
 *   - epochs that start at or past X are dropped from EPOCHS (they were the divergent
 *     history's);
 *   - TRUNCATE is removed.
 * Normal recovery follows: the index, moved aside by the cut (T3), is rebuilt from the log;
 * the log continues at X.
 *
 * Invariants:
 *  T1. No byte is lost: everything cut is in a .diverged file, synced, before it is zeroed or
 *      renamed; a crash midway repeats the cut (TRUNCATE stays until it is complete).
 *  T2. Only what lies at or past X changes.
 *  T3. The index, which may name records past X, is moved aside (index.untrusted) before
 *      TRUNCATE is removed: the open rebuilds it from the log, as it does a missing one,
 *      with no claim of lost records and no damaged copy kept.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "evstore_backup.h"
#include "internal.h"

#define TRUNC_BUF (1 << 16) /* bytes read, kept or zeroed at a time */

int store_truncate_request(evs_store *st, uint64_t x, evs_error *err)
{
    char path[PATH_MAX], buf[64];
    snprintf(path, sizeof path, "%s/TRUNCATE", st->dir);
    int n = snprintf(buf, sizeof buf, "truncate %" PRIu64 "\n", x);
    int rc = fio_write_file_atomic(st->io, path, buf, (size_t)n);
    return rc ? evs_err_set(err, rc, "cannot write %s: %s", path, strerror(-rc)) : 0;
}

int evs_replica_truncate_request(evs_store *st, uint64_t x, evs_error *err)
{
    return store_truncate_request(st, x, err);
}

int evs_replica_snapshot_request(evs_store *st, uint64_t own, evs_error *err)
{
    char path[PATH_MAX], buf[64];
    snprintf(path, sizeof path, "%s/SNAPSHOT", st->dir);
    int n = own == UINT64_MAX ? snprintf(buf, sizeof buf, "snapshot\n")
                              : snprintf(buf, sizeof buf, "snapshot own %" PRIu64 "\n", own);
    int rc = fio_write_file_atomic(st->io, path, buf, (size_t)n);
    return rc ? evs_err_set(err, rc, "cannot write %s: %s", path, strerror(-rc)) : 0;
}

/* The number in a marker file's text as written ("<head><digits>\n", nothing else): true
 * with *v, false for anything else (a sign, spaces, no digits, overflow, bytes after). */
static bool marker_number(const char *buf, size_t n, const char *head, uint64_t *v)
{
    size_t h = strlen(head);
    return n >= h + 2 && !memcmp(buf, head, h) && buf[n - 1] == '\n' &&
           evs_parse_dec(buf + h, n - h - 1, v) == 0;
}

/* Up to cap - 1 bytes of the file at path, NUL-terminated, in buf: their count, or -1 if the
 * file cannot be opened (errno set). */
static ssize_t marker_read(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (ssize_t)n;
}

int evs_replica_snapshot_pending(const char *dir, uint64_t *own)
{
    char path[PATH_MAX], buf[64];
    *own = UINT64_MAX;
    if (snprintf(path, sizeof path, "%s/SNAPSHOT", dir) >= (int)sizeof path)
        return 0;
    ssize_t n = marker_read(path, buf, sizeof buf);
    if (n < 0)
        return 0;
    uint64_t v;
    if (marker_number(buf, (size_t)n, "snapshot own ", &v))
        *own = v; /* else unknown: never taken for 0 */
    return 1;
}

/* Copy [off, end) of fd into path, synced. */
static int keep_bytes(evs_store *st, int fd, uint64_t off, uint64_t end, const char *path,
                      evs_error *err)
{
    uint64_t start = off;
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0)
        return evs_err_set(err, -errno, "cannot create %s: %s", path, strerror(errno));
    char *buf = malloc(TRUNC_BUF); /* not static: two stores may open at once (evstore.h) */
    int rc = buf ? 0 : evs_err_set(err, -ENOMEM, "out of memory");
    while (off < end && !rc) {
        size_t want = end - off < TRUNC_BUF ? (size_t)(end - off) : TRUNC_BUF;
        ssize_t r = pread(fd, buf, want, (off_t)off);
        if (r <= 0) {
            rc = evs_err_set(err, r < 0 ? -errno : -EIO, "cannot read the divergent tail");
            break;
        }
        struct iovec v = {buf, (size_t)r};
        int wr = fio_pwritev_all(st->io, out, &v, 1, (off_t)(off - start));
        if (wr)
            rc = evs_err_set(err, wr, "cannot write %s: %s", path, strerror(-wr));
        off += (uint64_t)r;
    }
    if (!rc && fsync(out))
        rc = evs_err_set(err, -errno, "fsync of %s failed: %s", path, strerror(errno));
    close(out);
    free(buf);
    return rc;
}

/* The end of the nonzero bytes of fd (zero-filled segments end in zeros); its size if they
 * cannot be read. */
static uint64_t data_end(int fd, uint64_t size)
{
    uint8_t *buf = malloc(TRUNC_BUF);
    while (buf && size > 0) {
        uint64_t from = size > TRUNC_BUF ? size - TRUNC_BUF : 0;
        ssize_t r = pread(fd, buf, (size_t)(size - from), (off_t)from);
        if (r <= 0)
            break;
        for (ssize_t i = r; i-- > 0;)
            if (buf[i]) {
                free(buf);
                return from + (uint64_t)i + 1;
            }
        size = from;
    }
    free(buf);
    return size;
}

static int cut_segment(evs_store *st, const char *name, uint64_t base, uint64_t x,
                       uint64_t *cut, evs_error *err)
{
    char path[PATH_MAX], keep[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", st->logdir, name);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return evs_err_set(err, -errno, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    int rc = fstat(fd, &sb) ? evs_err_set(err, -errno, "cannot stat %s", path) : 0;
    uint64_t from = x - base, end = rc ? 0 : data_end(fd, (uint64_t)sb.st_size);
    if (!rc && end > from) {
        snprintf(keep, sizeof keep, "%s/%s.%" PRIu64 ".diverged", st->logdir, name, from);
        rc = keep_bytes(st, fd, from, end, keep, err); /* T1: kept before zeroed */
        static const uint8_t zero[TRUNC_BUF]; /* read only: shared safely */
        for (uint64_t o = from; !rc && o < end;) {
            struct iovec v = {(void *)zero, end - o < TRUNC_BUF ? (size_t)(end - o) : TRUNC_BUF};
            int wr = fio_pwritev_all(st->io, fd, &v, 1, (off_t)o);
            if (wr)
                rc = evs_err_set(err, wr, "cannot zero %s: %s", path, strerror(-wr));
            o += v.iov_len;
        }
        int sr = rc ? 0 : st->io->fdatasync(fd);
        if (sr)
            rc = evs_err_set(err, sr, "fsync of %s failed: %s", path, strerror(-sr));
        *cut += end - from;
    }
    close(fd);
    return rc;
}

int store_truncate_pending(evs_store *st, evs_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/TRUNCATE", st->dir);
    char text[64];
    ssize_t n = marker_read(path, text, sizeof text);
    if (n < 0)
        return errno == ENOENT ? 0 : evs_err_set(err, -errno, "cannot read %s: %s", path,
                                                 strerror(errno));
    uint64_t x = 0;
    if (!marker_number(text, (size_t)n, "truncate ", &x) || x % 8)
        return evs_err_set(err, EVS_ECORRUPT, "%s is malformed (\"truncate <position>\\n\" "
                           "expected)", path);
    DIR *d = opendir(st->logdir);
    if (!d)
        return evs_err_set(err, -errno, "cannot list %s: %s", st->logdir, strerror(errno));
    struct dirent *de;
    int rc = 0;
    uint64_t cut = 0, holder = UINT64_MAX;
    char holder_name[NAME_MAX + 1] = "";
    /* the segment holding X: the one with the largest base <= X */
    while ((de = readdir(d))) {
        uint64_t base;
        if (seg_name_parse(de->d_name, &base) && base <= x &&
            (holder == UINT64_MAX || base > holder)) {
            holder = base;
            snprintf(holder_name, sizeof holder_name, "%s", de->d_name);
        }
    }
    rewinddir(d);
    while (!rc && (de = readdir(d))) {
        uint64_t base;
        if (!seg_name_parse(de->d_name, &base) || base <= x)
            continue;
        char from[PATH_MAX], to[PATH_MAX + 16];
        snprintf(from, sizeof from, "%s/%s", st->logdir, de->d_name);
        snprintf(to, sizeof to, "%s.diverged", from);
        struct stat sb;
        if (stat(from, &sb) == 0) {
            int fd = open(from, O_RDONLY | O_CLOEXEC);
            cut += fd >= 0 ? data_end(fd, (uint64_t)sb.st_size) : 0;
            if (fd >= 0)
                close(fd);
        }
        if (st->io->rename(from, to))
            rc = evs_err_set(err, -errno, "cannot rename %s: %s", from, strerror(errno));
    }
    closedir(d);
    if (!rc && holder != UINT64_MAX)
        rc = cut_segment(st, holder_name, holder, x, &cut, err);
    if (!rc)
        rc = fio_fsync_dir(st->io, st->logdir);
    if (rc)
        return rc < 0 && !err->msg[0] ? evs_err_set(err, rc, "cutting the log failed") : rc;
    /* drop the epochs of the divergent history (they begin at or past X); this runs before
     * the store loads EPOCHS, so it edits the file */
    char ep[PATH_MAX];
    snprintf(ep, sizeof ep, "%s/EPOCHS", st->dir);
    FILE *ef = fopen(ep, "r");
    if (ef) {
        char *buf = malloc(1 << 20);
        size_t len = buf ? fread(buf, 1, 1 << 20, ef) : 0;
        fclose(ef);
        evs_epoch *v = NULL;
        size_t nv = 0;
        char why[160];
        if (buf && epochs_parse(buf, len, &v, &nv, why, sizeof why) == 0) {
            size_t keep_n = 0;
            while (keep_n < nv && v[keep_n].start < x)
                keep_n++;
            if (keep_n < nv) {
                size_t tl;
                char *txt = epochs_format(v, keep_n, &tl);
                rc = txt ? fio_write_file_atomic(st->io, ep, txt, tl) : -ENOMEM;
                free(txt);
            }
        }
        free(v);
        free(buf);
        if (rc)
            return evs_err_set(err, rc, "cannot write %s", ep);
    }
    /* T3: the index names records the cut removed. Moved aside here, before TRUNCATE goes,
     * it is rebuilt as a missing one is (index_recreate removes index.untrusted); left, the
     * open would find it ahead of the log, log the records as lost and keep it as damaged. */
    char untrusted[PATH_MAX];
    store_untrusted_index(st, untrusted);
    evs_remove_tree(untrusted);
    if (rename(st->idxdir, untrusted) && errno != ENOENT)
        return evs_err_set(err, -errno, "cannot move the index %s aside: %s", st->idxdir,
                           strerror(errno));
    evs_log(st, EVS_LOG_WARN,
            "cut %" PRIu64 " bytes of log at and past position %" PRIu64 " (the leader's history "
            "parts there); kept in log/*.diverged; the index is rebuilt from the log",
            cut, x);
    if (unlink(path) == 0)
        fio_fsync_dir(st->io, st->dir);
    return 0;
}
