/*
 * restore.c — check a backup (verify --backup) and restore it into a new data folder.
 *
 * Invariants:
 *  R1. Nothing is written before the whole backup has been checked: its manifest (format and
 *      CRC), every ancestor of an incremental chain (same store, the ID the child names, the
 *      file the child says it holds), and every file's presence, size and CRC of its stored
 *      bytes (files checked up to CHECKERS at a time, problems reported in file order).
 *  R2. The store is built in a temporary sibling of the target, "<target>.restore-XXXXXX",
 *      owned by the restore (ownedir.c), and renamed into place only after it opened (normal
 *      recovery), every stream matched the manifest (last ID, length, entries added) and a new
 *      epoch began. On failure the temporary folder is removed; one left by a killed restore
 *      is removed by the next restore into the same target (never a live restore's). The
 *      target is never partly written.
 *  R3. Decompressed bytes are checked again (size and CRC of the store bytes) as they are
 *      written, so the bytes in the new store are the bytes the snapshot held. Uncompressed
 *      files, checked by the first pass, are copied by the kernel (copy_file_range, or
 *      sendfile between two file systems).
 *  R4. A follower's copy of its leader (evs_restore_options.follower) also has every record
 *      of every segment checked (record.c's rules: magic, header, CRC, body) from byte 0 to
 *      the size the snapshot gave it, as a follower checks every record its leader streams:
 *      the manifest's CRCs were computed by the backup client from the bytes it received, so
 *      they vouch for the copy at rest, not for what crossed the link.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "crc.h"
#include "evstore_backup.h"
#include "internal.h"
#include "manifest.h"

#define CHUNK (1u << 20)
#define CHAIN_MAX 1000
#define MANIFEST_MAX (256u << 20)

/* ---- manifests and chains ------------------------------------------------------------------- */

int backup_read_manifest(const char *dir, manifest *m, evs_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/MANIFEST", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return evs_err_set(err, errno == ENOENT ? EVS_ECORRUPT : -errno,
                           "%s: %s%s", path, strerror(errno),
                           errno == ENOENT ? " (not a backup, or an incomplete one)" : "");
    struct stat sb;
    if (fstat(fd, &sb) || sb.st_size > MANIFEST_MAX) {
        close(fd);
        return evs_err_set(err, EVS_ECORRUPT, "%s: larger than %u bytes", path, MANIFEST_MAX);
    }
    size_t len = (size_t)sb.st_size;
    char *buf = malloc(len ? len : 1);
    size_t got = 0;
    while (buf && got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (!buf)
        return evs_err_set(err, -ENOMEM, "out of memory");
    char why[200];
    int rc = got == len ? mf_parse(buf, len, m, why, sizeof why)
                        : (snprintf(why, sizeof why, "short read"), -1);
    free(buf);
    if (rc)
        return evs_err_set(err, EVS_ECORRUPT, "%s: %s", path, why);
    return 0;
}

typedef struct chain {
    char *dir[CHAIN_MAX];
    manifest m[CHAIN_MAX];
    size_t n;
} chain;

static void chain_release(chain *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->dir[i]);
        mf_release(&c->m[i]);
    }
    c->n = 0;
}

/* The backup and its ancestors, newest first. An ancestor is looked for where the child says
 * it was, then beside the child (a set of backups moved together). */
static int chain_load(const char *from, chain *c, evs_error *err)
{
    c->n = 0;
    char *dir = strdup(from);
    if (!dir)
        return evs_err_set(err, -ENOMEM, "out of memory");
    for (;;) {
        manifest *m = &c->m[c->n];
        int rc = backup_read_manifest(dir, m, err);
        if (rc) {
            free(dir);
            return rc;
        }
        c->dir[c->n++] = dir;
        if (c->n > 1) {
            const manifest *child = &c->m[c->n - 2];
            if (strcmp(m->id, child->parent_id) || strcmp(m->store_id, child->store_id))
                return evs_err_set(err, EVS_ECORRUPT,
                                   "%s/MANIFEST: is backup %s of store %s, but %s/MANIFEST "
                                   "names its parent %s of store %s",
                                   dir, m->id, m->store_id, c->dir[c->n - 2], child->parent_id,
                                   child->store_id);
        }
        if (!m->parent_id[0])
            return 0;
        if (c->n == CHAIN_MAX)
            return evs_err_set(err, EVS_ECORRUPT, "%s: a chain of more than %d backups", from,
                               CHAIN_MAX);
        char probe[PATH_MAX + 16], beside[PATH_MAX], tmp[PATH_MAX];
        snprintf(probe, sizeof probe, "%s/MANIFEST", m->parent_path);
        snprintf(tmp, sizeof tmp, "%s", dir);
        char base[PATH_MAX];
        snprintf(base, sizeof base, "%s", m->parent_path);
        snprintf(beside, sizeof beside, "%s/%s", dirname(tmp), basename(base));
        if (access(probe, F_OK) == 0)
            dir = strdup(m->parent_path);
        else {
            snprintf(probe, sizeof probe, "%s/MANIFEST", beside);
            if (access(probe, F_OK))
                return evs_err_set(err, EVS_ECORRUPT,
                                   "%s/MANIFEST: its parent backup %s is neither at %s nor at %s",
                                   c->dir[c->n - 1], m->parent_id, m->parent_path, beside);
            dir = strdup(beside);
        }
        if (!dir)
            return evs_err_set(err, -ENOMEM, "out of memory");
    }
}

/* The folder holding file f of the newest backup, and that backup's own record of it. */
static int chain_holder(const chain *c, const mf_file *f, const char **dir, evs_error *err)
{
    if (!f->from[0]) {
        *dir = c->dir[0];
        return 0;
    }
    for (size_t i = 1; i < c->n; i++) {
        if (strcmp(c->m[i].id, f->from))
            continue;
        for (size_t j = 0; j < c->m[i].nfiles; j++) {
            const mf_file *g = &c->m[i].files[j];
            if (strcmp(g->name, f->name))
                continue;
            if (g->from[0] || g->size != f->size || g->crc != f->crc ||
                g->stored_size != f->stored_size || g->stored_crc != f->stored_crc ||
                g->compressed != f->compressed)
                return evs_err_set(err, EVS_ECORRUPT,
                                   "%s/MANIFEST: %s is not the file %s/MANIFEST says backup %s "
                                   "holds", c->dir[i], f->name, c->dir[0], f->from);
            *dir = c->dir[i];
            return 0;
        }
        return evs_err_set(err, EVS_ECORRUPT, "%s/MANIFEST: has no %s, which %s/MANIFEST says "
                           "it holds", c->dir[i], f->name, c->dir[0]);
    }
    return evs_err_set(err, EVS_ECORRUPT, "%s/MANIFEST: %s is held by backup %s, which is not "
                       "in its chain", c->dir[0], f->name, f->from);
}

/* ---- reading one stored file ---------------------------------------------------------------- */

typedef struct rfile {
    const mf_file *f;
    const char *path;
    int outfd;                 /* -1: check only                                             */
    const char *outpath;
    bool inflate;              /* decompress (and check the store bytes) even without outfd  */
    evs_progress *prog;
    evs_progress_fn progress;
    void *progress_arg;
    const volatile int *cancel;
    pthread_mutex_t *mu;       /* NULL, or held around prog and the progress call (checkers) */
    uint64_t written;
} rfile;

static void progress_add(rfile *r, uint64_t n)
{
    if (!r->progress)
        return;
    if (r->mu)
        pthread_mutex_lock(r->mu);
    r->prog->bytes_done += n;
    r->progress(r->progress_arg, r->prog);
    if (r->mu)
        pthread_mutex_unlock(r->mu);
}

/* Writeback is started every 8 MiB so the fsync at the end of a file waits for little. */
static int out_write(rfile *r, const uint8_t *p, size_t n, evs_error *err)
{
    uint64_t before = r->written;
    r->written += n;
    if (before / (8u << 20) != r->written / (8u << 20))
        sync_file_range(r->outfd, 0, (off64_t)before, SYNC_FILE_RANGE_WRITE);
    struct iovec v = {(void *)(uintptr_t)p, n};
    int rc = fio_pwritev_all(&fio_real, r->outfd, &v, 1, (off_t)before);
    return rc ? evs_err_set(err, rc, "cannot write %s: %s", r->outpath, strerror(-rc)) : 0;
}

/* Read the stored file: its size and CRC must be the manifest's; decompressed (when asked or
 * when writing) its store bytes' size and CRC too (R3); written to outfd if given. */
static int read_stored(rfile *r, evs_error *err)
{
    const mf_file *f = r->f;
    int fd = open(r->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return evs_err_set(err, errno == ENOENT ? EVS_ECORRUPT : -errno, "%s: %s", r->path,
                           errno == ENOENT ? "missing" : strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || (uint64_t)sb.st_size != f->stored_size) {
        close(fd);
        return evs_err_set(err, EVS_ECORRUPT, "%s: %" PRIu64 " bytes, the manifest says %" PRIu64,
                           r->path, (uint64_t)sb.st_size, f->stored_size);
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    bool inflating = f->compressed && (r->inflate || r->outfd >= 0);
    uint8_t *buf = malloc(CHUNK), *zout = inflating ? malloc(CHUNK) : NULL;
    z_stream z = {0};
    int rc = 0;
    if (!buf || (inflating && !zout)) {
        rc = evs_err_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    if (inflating && inflateInit(&z) != Z_OK) {
        rc = evs_err_set(err, -ENOMEM, "zlib inflateInit failed");
        inflating = false;
        goto out;
    }
    uint32_t scrc = 0, crc = scrc;
    uint64_t n = 0, raw = 0;
    bool zend = false;
    for (;;) {
        if ((rc = evs_cancel_check(r->cancel, err)))
            goto out;
        ssize_t got = read(fd, buf, CHUNK);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = evs_err_set(err, -errno, "cannot read %s: %s", r->path, strerror(errno));
            goto out;
        }
        if (got == 0)
            break;
        scrc = evs_crc32(scrc, buf, got);
        n += (uint64_t)got;
        if (inflating) {
            z.next_in = buf;
            z.avail_in = (uInt)got;
            while (z.avail_in && !zend) {
                z.next_out = zout;
                z.avail_out = CHUNK;
                int zr = inflate(&z, Z_NO_FLUSH);
                if (zr != Z_OK && zr != Z_STREAM_END) {
                    rc = evs_err_set(err, EVS_ECORRUPT, "%s: not a valid zlib stream at byte %"
                                     PRIu64 " (%s)", r->path, n - z.avail_in,
                                     z.msg ? z.msg : "inflate failed");
                    goto out;
                }
                zend = zr == Z_STREAM_END;
                size_t have = CHUNK - z.avail_out;
                crc = evs_crc32(crc, zout, have);
                raw += have;
                if (raw > f->size) {
                    rc = evs_err_set(err, EVS_ECORRUPT, "%s: decompresses to more than the %"
                                     PRIu64 " bytes the manifest says", r->path, f->size);
                    goto out;
                }
                if (r->outfd >= 0 && (rc = out_write(r, zout, have, err)))
                    goto out;
            }
            if (z.avail_in) {
                rc = evs_err_set(err, EVS_ECORRUPT, "%s: bytes after the end of its zlib stream",
                                 r->path);
                goto out;
            }
        } else if (r->outfd >= 0 && (rc = out_write(r, buf, (size_t)got, err))) {
            goto out;
        }
        progress_add(r, (uint64_t)got);
    }
    if (n != f->stored_size || scrc != f->stored_crc) {
        rc = evs_err_set(err, EVS_ECORRUPT, "%s: CRC %08" PRIx32 ", the manifest says %08" PRIx32
                         " (the file is damaged)", r->path, scrc, f->stored_crc);
        goto out;
    }
    if (inflating && (!zend || raw != f->size || crc != f->crc)) {
        rc = evs_err_set(err, EVS_ECORRUPT, "%s: decompresses to %" PRIu64 " bytes with CRC %08"
                         PRIx32 ", the manifest says %" PRIu64 " bytes, %08" PRIx32 "%s", r->path,
                         raw, crc, f->size, f->crc, zend ? "" : " (stream unfinished)");
        goto out;
    }
out:
    if (inflating)
        inflateEnd(&z);
    free(buf);
    free(zout);
    close(fd);
    return rc;
}

/* An uncompressed file, already checked (size, CRC) by the pass before anything was written:
 * copied by the kernel (copy_file_range; sendfile where that cannot cross from the backup's
 * file system to the target's), its size checked again. */
static int copy_raw(rfile *r, evs_error *err)
{
    int in = open(r->path, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return evs_err_set(err, -errno, "%s: %s", r->path, strerror(errno));
    uint64_t done = 0;
    int rc = 0;
    bool range = true; /* copy_file_range, else sendfile: both leave the copying to the kernel */
    while (done < r->f->stored_size) {
        if ((rc = evs_cancel_check(r->cancel, err)))
            break;
        uint64_t left = r->f->stored_size - done;
        size_t want = left < (64u << 20) ? (size_t)left : 64u << 20;
        ssize_t n = range ? copy_file_range(in, NULL, r->outfd, NULL, want, 0)
                          : sendfile(r->outfd, in, NULL, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && range && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP ||
                               errno == ENOSYS)) {
            range = false; /* between two file systems (Linux 5.19 on: EXDEV unless both are of
                            * one type that implements it), or a file system without it */
            continue;
        }
        if (n <= 0) {
            rc = n == 0 ? evs_err_set(err, EVS_ECORRUPT, "%s: shorter than the manifest's %" PRIu64
                                      " bytes", r->path, r->f->stored_size)
                        : evs_err_set(err, -errno, "cannot copy %s to %s: %s", r->path,
                                      r->outpath, strerror(errno));
            break;
        }
        done += (uint64_t)n;
        sync_file_range(r->outfd, 0, (off64_t)done, SYNC_FILE_RANGE_WRITE);
        progress_add(r, (uint64_t)n);
    }
    close(in);
    return rc;
}

/* Check every file of the newest backup (R1), CHECKERS files at a time (each file's read and
 * CRC is one core's work; a backup has many files), its problems reported in file order. */
#define CHECKERS 4

typedef struct checking {
    const chain *c;
    bool inflate;
    evs_progress prog;
    evs_progress_fn progress;
    void *parg;
    const volatile int *cancel;
    pthread_mutex_t mu;        /* next, prog, the progress call                              */
    size_t next;               /* the next file to claim                                     */
    evs_error *errs;           /* per file; code 0: checked clean                           */
} checking;

static void *checker(void *arg)
{
    checking *k = arg;
    const manifest *m = &k->c->m[0];
    for (;;) {
        pthread_mutex_lock(&k->mu);
        size_t i = k->next < m->nfiles && !evs_cancelled(k->cancel) ? k->next++ : SIZE_MAX;
        pthread_mutex_unlock(&k->mu);
        if (i == SIZE_MAX)
            return NULL;
        const mf_file *f = &m->files[i];
        evs_error *e = &k->errs[i];
        const char *dir;
        int rc = chain_holder(k->c, f, &dir, e);
        if (!rc) {
            char stored[MF_NAME_MAX + 4], path[PATH_MAX];
            mf_stored_name(f, stored);
            snprintf(path, sizeof path, "%s/%s", dir, stored);
            rfile r = {.f = f, .path = path, .outfd = -1, .inflate = k->inflate,
                       .prog = &k->prog, .progress = k->progress, .progress_arg = k->parg,
                       .cancel = k->cancel, .mu = &k->mu};
            rc = read_stored(&r, e);
        }
        if (rc && !e->code)
            evs_err_set(e, rc, "%s: %s", f->name, evs_strerror(rc));
        pthread_mutex_lock(&k->mu);
        k->prog.files_done++;
        pthread_mutex_unlock(&k->mu);
    }
}

static long check_all(const chain *c, bool inflate, void (*report)(void *, const char *),
                      void *arg, evs_progress_fn progress, void *parg, const volatile int *cancel,
                      evs_error *first)
{
    const manifest *m = &c->m[0];
    checking k = {.c = c, .inflate = inflate, .progress = progress, .parg = parg,
                  .cancel = cancel, .prog = {.what = "check", .files_total = m->nfiles}};
    for (size_t i = 0; i < m->nfiles; i++)
        k.prog.bytes_total += m->files[i].stored_size;
    k.errs = calloc(m->nfiles ? m->nfiles : 1, sizeof *k.errs);
    if (!k.errs) {
        evs_err_set(first, -ENOMEM, "out of memory");
        return -1;
    }
    pthread_mutex_init(&k.mu, NULL);
    pthread_t t[CHECKERS];
    size_t nt = 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t want = cpus < 1 ? 1 : cpus > CHECKERS ? CHECKERS : (size_t)cpus;
    while (nt + 1 < want && nt + 1 < m->nfiles && !pthread_create(&t[nt], NULL, checker, &k))
        nt++;
    checker(&k); /* this thread is one of them */
    for (size_t i = 0; i < nt; i++)
        pthread_join(t[i], NULL);
    pthread_mutex_destroy(&k.mu);
    long problems = 0;
    bool has_store = false, has_index = false;
    for (size_t i = 0; i < m->nfiles; i++) {
        has_store |= !strcmp(m->files[i].name, "STORE");
        has_index |= !strcmp(m->files[i].name, "index/data.mdb");
        evs_error *e = &k.errs[i];
        if (!e->code && i >= k.next) /* never claimed: the checkers stopped (cancel) */
            evs_err_set(e, EVS_ECLOSED, "interrupted");
        if (!e->code)
            continue;
        if (!problems)
            evs_err_copy(first, e);
        problems++;
        if (report)
            report(arg, e->msg);
        if (e->code == EVS_ECLOSED) {
            free(k.errs);
            return -1;
        }
    }
    free(k.errs);
    if (!has_store || !has_index) {
        evs_error e;
        evs_err_set(&e, EVS_ECORRUPT, "%s/MANIFEST: lists no %s", c->dir[0],
                    has_store ? "index/data.mdb" : "STORE");
        if (!problems)
            evs_err_copy(first, &e);
        problems++;
        if (report)
            report(arg, e.msg);
    }
    return problems;
}

long evs_backup_verify(const char *dir, void (*report)(void *arg, const char *line), void *arg,
                       evs_progress_fn progress, void *progress_arg)
{
    chain *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    evs_error e = {0};
    long n;
    if (chain_load(dir, c, &e)) {
        if (report)
            report(arg, e.msg);
        n = e.code == EVS_ECORRUPT ? 1 : e.code < 0 ? e.code : -EIO;
    } else {
        n = check_all(c, true, report, arg, progress, progress_arg, NULL, &e);
    }
    chain_release(c);
    free(c);
    return n;
}

/* ---- restore -------------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void evs_remove_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int target_ok(const char *target, evs_error *err)
{
    int empty = fio_dir_empty(target);
    if (empty == -ENOENT)
        return 0;
    if (empty < 0)
        return evs_err_set(err, empty == -ENOTDIR ? EVS_EEXIST : empty, "%s: %s", target,
                           empty == -ENOTDIR ? "exists and is not a folder" : strerror(-empty));
    if (!empty)
        return evs_err_set(err, EVS_EEXIST, "%s is not empty: restore only into a new or empty "
                           "folder", target);
    /* the store is built beside the target and renamed into its place: a mount point (a
     * folder on another file system than its parent) cannot take that rename */
    char parent[PATH_MAX];
    struct stat a, b;
    snprintf(parent, sizeof parent, "%s/..", target);
    if (!stat(target, &a) && !stat(parent, &b) && a.st_dev != b.st_dev)
        return evs_err_set(err, EVS_EINVAL, "%s is a mount point: restore builds the store "
                           "beside its target and renames it into place, which a mount point "
                           "cannot take; restore into a new folder inside it (%s/evstore, say)",
                           target, target);
    return 0;
}

static int write_zeros(int fd, uint64_t from, uint64_t to, const char *path, evs_error *err)
{
    static const uint8_t zero[65536];
    while (from < to) {
        size_t n = to - from < sizeof zero ? (size_t)(to - from) : sizeof zero;
        ssize_t w = pwrite(fd, zero, n, (off_t)from);
        if (w <= 0)
            return evs_err_set(err, w < 0 ? -errno : -EIO, "cannot write %s: %s", path,
                               w < 0 ? strerror(errno) : "short write");
        from += (uint64_t)w;
    }
    return 0;
}

/* out = a "/" b. A path that does not fit is refused, never cut: a cut path names another
 * file. */
static int join(char out[PATH_MAX], const char *a, const char *b, evs_error *err)
{
    if (snprintf(out, PATH_MAX, "%s/%s", a, b) >= PATH_MAX)
        return evs_err_set(err, -ENAMETOOLONG, "path too long: %.200s/%.200s", a, b);
    return 0;
}

/* R4: the n bytes of segment file `path` are whole, valid records. */
static int check_records(const char *path, uint64_t n, const volatile int *cancel,
                         evs_error *err)
{
    if (n == 0)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return evs_err_set(err, -errno, "cannot open %s: %s", path, strerror(errno));
    uint8_t *d = mmap(NULL, (size_t)n, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (d == MAP_FAILED)
        return evs_err_set(err, -e, "cannot map %s: %s", path, strerror(e));
    madvise(d, (size_t)n, MADV_SEQUENTIAL);
    int rc = 0;
    for (uint64_t off = 0, sz = 0, due = 0; off < n && !rc; off += sz) {
        rec_hdr h;
        int c = rec_check(d + off, n - off, &h, &sz);
        if (c != REC_OK) {
            rc = evs_err_set(err, EVS_ECORRUPT, "%s: byte offset %" PRIu64 ": %s (a follower's "
                             "copy of its leader holds whole, valid records only)", path, off,
                             rec_check_str(c));
        } else if (off >= due) { /* a stop is obeyed within a MiB */
            rc = evs_cancel_check(cancel, err);
            due = off + (1u << 20);
        }
    }
    munmap(d, (size_t)n);
    return rc;
}

/* Restore file f into tmp; on success its fd joins ss (fsynced before the checkpoint). */
static int build_file(const chain *c, const mf_file *f, const char *tmp,
                      const evs_restore_options *o, const volatile int *cancel,
                      evs_progress *prog, fio_syncset *ss, evs_error *err)
{
    const char *dir;
    int rc = chain_holder(c, f, &dir, err);
    if (rc)
        return rc;
    char stored[MF_NAME_MAX + 4], src[PATH_MAX], path[PATH_MAX];
    mf_stored_name(f, stored);
    if ((rc = join(src, dir, stored, err)) ||
        (rc = join(path, tmp, f->name, err))) /* M1: a name a store may hold */
        return rc;
    /* a backup the caller gives away: its own uncompressed files move into the store (checked
     * already, R1), where one file system holds both */
    bool movable = o && o->consume && !f->compressed && dir == c->dir[0];
    bool moved = movable && !rename(src, path);
    if (movable && !moved && errno != EXDEV)
        return evs_err_set(err, -errno, "cannot move %s to %s: %s", src, path, strerror(errno));
    int fd = moved ? open(path, O_WRONLY | O_CLOEXEC)
                   : open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return evs_err_set(err, -errno, "cannot %s %s: %s", moved ? "open" : "create", path,
                           strerror(errno));
    rfile r = {.f = f, .path = src, .outfd = fd, .outpath = path, .inflate = true,
               .prog = prog, .progress = o ? o->progress : NULL,
               .progress_arg = o ? o->progress_arg : NULL, .cancel = cancel};
    if (moved)
        progress_add(&r, f->stored_size);
    else
        rc = f->compressed ? read_stored(&r, err) : copy_raw(&r, err);
    if (!rc && o && o->follower && f->segment) /* R4 */
        rc = check_records(path, f->size, cancel, err);
    if (!rc && f->alloc > f->size) /* the active segment: zero-filled to its full size */
        rc = write_zeros(fd, f->size, f->alloc, path, err);
    if (rc) {
        close(fd);
        return rc;
    }
    char failed[PATH_MAX];
    if ((rc = fio_syncset_add(ss, fd, path, failed, sizeof failed)))
        return evs_err_set(err, rc, "fsync of %s failed: %s", failed, strerror(-rc));
    return 0;
}

static int build(const chain *c, const char *tmp, const evs_restore_options *o,
                 const volatile int *cancel, evs_error *err)
{
    const manifest *m = &c->m[0];
    char path[PATH_MAX];
    const char *sub[] = {"log", "index"};
    for (int i = 0; i < 2; i++) {
        int rc = join(path, tmp, sub[i], err);
        if (rc)
            return rc;
        if (mkdir(path, 0755))
            return evs_err_set(err, -errno, "cannot create %s: %s", path, strerror(errno));
    }
    evs_progress prog = {.what = "restore", .files_total = m->nfiles};
    for (size_t i = 0; i < m->nfiles; i++)
        prog.bytes_total += m->files[i].stored_size;
    fio_syncset ss = {.n = 0}; /* every file is fsynced before the checkpoint below */
    for (size_t i = 0; i < m->nfiles; i++) {
        int rc = build_file(c, &m->files[i], tmp, o, cancel, &prog, &ss, err);
        if (rc) {
            fio_syncset_drop(&ss);
            return rc;
        }
        prog.files_done++;
    }
    char failed[PATH_MAX];
    int rc = fio_syncset_flush(&ss, failed, sizeof failed);
    if (rc)
        return evs_err_set(err, rc, "fsync of %s failed: %s", failed, strerror(-rc));
    /* the index copy is durable (fsynced above): a checkpoint of this boot says so */
    char boot[64], txt[128];
    store_boot_id(boot, sizeof boot);
    size_t n = ckpt_format(txt, sizeof txt, boot, 0, false);
    if ((rc = join(path, tmp, "index.ckpt", err)))
        return rc;
    rc = fio_write_file_atomic(&fio_real, path, txt, n);
    if (rc)
        return evs_err_set(err, rc, "cannot write %s: %s", path, strerror(-rc));
    for (int i = 0; i < 2; i++) {
        if ((rc = join(path, tmp, sub[i], err)))
            return rc;
        if ((rc = fio_fsync_dir(&fio_real, path)))
            return evs_err_set(err, rc, "fsync of %s failed: %s", path, strerror(-rc));
    }
    return 0;
}

/* Open the built store, compare it with the manifest, begin a new epoch (R2). */
static int open_check(const manifest *m, const char *tmp, const evs_restore_options *o,
                      evs_restore_report *rep, evs_error *err)
{
    evs_options opt;
    evs_options_init(&opt);
    if (o) {
        opt.log = o->log;
        opt.log_arg = o->log_arg;
        opt.replica = o->follower; /* no retention, no writes of its own */
    }
    evs_store *st;
    int rc = evs_open(tmp, &opt, &st, err);
    if (rc)
        return rc;
    if (strcmp(evs_store_id(st), m->store_id))
        rc = evs_err_set(err, EVS_ECORRUPT, "the restored store's ID %s is not the manifest's %s",
                         evs_store_id(st), m->store_id);
    for (size_t i = 0; !rc && i < m->nstreams; i++) {
        const mf_stream *s = &m->streams[i];
        evs_stream_info info;
        int r = evs_stream_info_get(st, (evs_slice){s->name, s->len}, &info);
        if (r || evs_id_cmp(info.last_id, s->last) || info.length != s->length ||
            info.entries_added != s->added)
            rc = evs_err_set(err, EVS_ECORRUPT,
                             "stream \"%.*s\" in the restored store %s: the manifest says last ID "
                             "%" PRIu64 "-%" PRIu64 ", %" PRIu64 " entries", (int)(s->len > 100 ? 100 : s->len),
                             (const char *)s->name, r ? "is missing" : "differs", s->last.ms,
                             s->last.seq, s->length);
    }
    if (!rc) {
        evs_store_stats stats;
        evs_store_stats_get(st, &stats);
        if (stats.streams != m->nstreams)
            rc = evs_err_set(err, EVS_ECORRUPT, "the restored store has %" PRIu64 " streams, the "
                             "manifest lists %zu", stats.streams, m->nstreams);
    }
    if (!rc && !(o && o->follower))
        rc = evs_epoch_begin(st, &rep->epoch, err);
    else if (!rc) { /* a follower's copy: it reports the leader's current epoch */
        size_t n = evs_epochs(st, NULL, 0);
        evs_epoch *all = calloc(n + 1, sizeof *all);
        if (all && n && evs_epochs(st, all, n) >= n)
            rep->epoch = all[n - 1];
        free(all);
    }
    int crc = evs_close(st);
    if (!rc && crc)
        rc = evs_err_set(err, crc, "closing the restored store failed: %s", evs_strerror(crc));
    rep->streams = m->nstreams;
    return rc;
}

int evs_restore(const char *from, const char *data, const evs_restore_options *o,
                evs_restore_report *rep, evs_error *err)
{
    memset(rep, 0, sizeof *rep);
    const volatile int *cancel = o ? o->cancel : NULL;
    chain *c = calloc(1, sizeof *c);
    if (!c)
        return evs_err_set(err, -ENOMEM, "out of memory");
    char *tmp = NULL, prefix[PATH_MAX];
    int tmp_fd = -1;
    int rc = target_ok(data, err);
    if (!rc)
        rc = chain_load(from, c, err);
    if (!rc) { /* R1: everything checked before anything is written */
        long bad = check_all(c, false, NULL, NULL, o ? o->progress : NULL,
                             o ? o->progress_arg : NULL, cancel, err);
        if (bad)
            rc = bad < 0 ? err->code : EVS_ECORRUPT;
    }
    if (rc)
        goto out;
    if (snprintf(prefix, sizeof prefix, "%s.restore-", data) >= (int)sizeof prefix) {
        rc = evs_err_set(err, -ENAMETOOLONG, "target path too long: %.200s", data);
        goto out;
    }
    ownedir_sweep(prefix, NULL, NULL); /* R2: those of killed restores */
    if ((rc = ownedir_make(prefix, &tmp, &tmp_fd)) || chmod(tmp, 0755)) {
        rc = rc ? rc : -errno;
        if (rc == -ENAMETOOLONG) /* (paths cut to 200 bytes: the reason must fit the message) */
            evs_err_set(err, rc, "target path too long for its build folder "
                        "<target>.restore-XXXXXX: %.200s", data);
        else
            evs_err_set(err, rc, "cannot create the build folder <target>.restore-XXXXXX: %s; "
                        "target %.200s", evs_strerror(rc), data);
        goto out;
    }
    if ((rc = build(c, tmp, o, cancel, err)) || (rc = open_check(&c->m[0], tmp, o, rep, err)))
        goto out;
    char lock[PATH_MAX];
    if ((rc = join(lock, tmp, "LOCK", err)))
        goto out;
    unlink(lock);
    if ((rc = fio_fsync_dir(&fio_real, tmp))) {
        rc = evs_err_set(err, rc, "fsync of %s failed: %s", tmp, strerror(-rc));
        goto out;
    }
    rmdir(data); /* an empty target folder (target_ok): replaced by the rename */
    if (rename(tmp, data)) {
        rc = evs_err_set(err, -errno, "cannot rename %s to %s: %s", tmp, data, strerror(errno));
        goto out;
    }
    /* owned up to the rename, so a restore killed at any instant before it leaves a folder
     * the next sweep removes; one killed between these two lines leaves an empty owner.lock
     * in the restored store, which nothing reads (O3) */
    ownedir_disown(data, tmp_fd);
    tmp_fd = -1;
    free(tmp);
    tmp = NULL;
    char t[PATH_MAX];
    snprintf(t, sizeof t, "%s", data);
    if ((rc = fio_fsync_dir(&fio_real, dirname(t))))
        rc = evs_err_set(err, rc, "fsync of the folder holding %s failed: %s", data,
                         strerror(-rc));
    for (size_t i = 0; i < c->m[0].nfiles; i++)
        rep->bytes += c->m[0].files[i].size;
    rep->files = c->m[0].nfiles;
out:
    if (tmp && tmp_fd >= 0) {
        ownedir_remove(tmp, tmp_fd);
    } else if (tmp) {
        evs_remove_tree(tmp);
        free(tmp);
    }
    chain_release(c);
    free(c);
    return rc;
}
