/*
 * backup.c — write a backup folder from a snapshot (docs/backup.md).
 *
 * Invariants:
 *  B1. MANIFEST is written last (temp, fsync, rename, fsync the folder), after every file it
 *      names is written and fsynced (the fsyncs of up to FIO_SYNCSET_MAX files are issued
 *      together, fileio.h): a backup folder with a MANIFEST is complete, one without is
 *      visibly not a backup.
 *  B2. A file the manifest says an ancestor holds is a sealed segment with the same name, size
 *      and seal-record CRC in the parent's manifest (sealed segments never change; a sealed
 *      segment without a seal record is never shared).
 *  B3. Every file's size and CRC in the manifest are those of the bytes the source delivered,
 *      counted as they pass (or, from a source that writes into the file itself, read back
 *      from the file as each piece lands); a source that delivers a different number of
 *      bytes than its snapshot listed fails the backup.
 *  B4. On failure, everything this call created is removed.
 *  B5. A store's backup is never written inside the store's own folder (evs_backup_store):
 *      what a folder holds besides a store is moved aside by a follower's snapshot copy, and
 *      inside log/ or index/ removed with them (src/follower_copy.c C2).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "crc.h"
#include "evstore_backup.h"
#include "internal.h"
#include "manifest.h"

#define CHUNK (1u << 20)

int backup_read_manifest(const char *dir, manifest *m, evs_error *err); /* restore.c */

/* ---- writing one file ----------------------------------------------------------------------- */

typedef struct wfile {
    int fd;
    const char *path;
    bool compress;
    z_stream z;
    uint8_t *zbuf;
    uint32_t crc, scrc;            /* of the store bytes; of the stored bytes                   */
    uint64_t n, sn;
    uint8_t *rbuf;                 /* read-back buffer of a copy_to_fd source (READBACK bytes)  */
    const evs_backup_options *o;
    evs_progress *prog;
    struct pace *pace;
} wfile;

/* --rate: the file side sleeps whenever it is ahead of rate × elapsed; the ring of buffers
 * behind it fills, and the source (a socket, or reads of the snapshot) waits. The source
 * moves evs_backup_piece bytes at a time, so that a pause comes every few ms and the work
 * between two pauses (reads, sends, the copy into the file, its CRC) is a slice of a
 * millisecond or so. With 4 MiB pieces, 4 of them in flight from a server, a paced backup
 * moved 16 MiB at full speed and then slept: a stall of several ms for each publish that met
 * a burst, which is what a publish p99 shows (docs/benchmarks.md, "Backup and restore",
 * session 43: at 30 MB/s, p99 3.2-5.6 ms in 4 MiB pieces; 0.75-1.14 ms in 6 of 8 windows in
 * these, against quiet windows' 0.58-3.6 ms). */
#define PACE_SLICE_MS 5
#define PACE_PIECE_MIN (16u << 10)

size_t evs_backup_piece(uint64_t rate, size_t full)
{
    if (!rate)
        return full;
    uint64_t c = rate / (1000 / PACE_SLICE_MS);
    c = c < PACE_PIECE_MIN ? PACE_PIECE_MIN : c & ~(uint64_t)4095;
    return c < full ? (size_t)c : full;
}

struct pace {
    uint64_t rate, bytes;
    struct timespec t0;
};

static void pace_bytes(struct pace *p, size_t n)
{
    if (!p || !p->rate)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!p->bytes && !n)
        return;
    if (!p->bytes)
        p->t0 = now;
    p->bytes += n;
    double due = (double)p->bytes / (double)p->rate;
    double el = (double)(now.tv_sec - p->t0.tv_sec) + (double)(now.tv_nsec - p->t0.tv_nsec) / 1e9;
    if (due > el) {
        double d = due - el;
        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
        while (nanosleep(&ts, &ts) && errno == EINTR)
            ;
    }
}


/* Start writeback of what was written so far every WRITEBACK_BYTES, so the fsync at the end
 * of the file waits for little (measured: 45 ms per 64 MiB segment otherwise). */
#define WRITEBACK_BYTES (8u << 20)
static void file_wrote(wfile *f, size_t n)
{
    uint64_t end = f->sn + n;
    if (end / WRITEBACK_BYTES != f->sn / WRITEBACK_BYTES)
        sync_file_range(f->fd, 0, (off64_t)end, SYNC_FILE_RANGE_WRITE);
    f->sn = end;
}

static int file_out(wfile *f, const void *p, size_t n, evs_error *err)
{
    struct iovec v = {(void *)(uintptr_t)p, n};
    int rc = fio_pwritev_all(&fio_real, f->fd, &v, 1, (off_t)f->sn);
    if (rc)
        return evs_err_set(err, rc, "cannot write %s: %s", f->path, strerror(-rc));
    file_wrote(f, n);
    return 0;
}

static int stored_out(wfile *f, const void *p, size_t n, evs_error *err)
{
    f->scrc = evs_crc32(f->scrc, p, n);
    return file_out(f, p, n, err);
}

static int deflate_some(wfile *f, int flush, evs_error *err)
{
    do {
        f->z.next_out = f->zbuf;
        f->z.avail_out = CHUNK;
        int zr = deflate(&f->z, flush);
        if (zr == Z_STREAM_ERROR)
            return evs_err_set(err, -EIO, "zlib deflate failed for %s", f->path);
        size_t have = CHUNK - f->z.avail_out;
        if (have) {
            int rc = stored_out(f, f->zbuf, have, err);
            if (rc)
                return rc;
        }
    } while (f->z.avail_out == 0);
    return 0;
}

/* len more store bytes are in the file: progress, then the --rate pause. */
static void account(wfile *f, size_t len)
{
    if (f->o->progress) {
        f->prog->bytes_done += len;
        f->o->progress(f->o->progress_arg, f->prog);
    }
    pace_bytes(f->pace, len);
}

/* A piece a copy_to_fd source wrote: its CRC from the file's own pages (B3), then account it
 * as sink does. The pages are mapped, not read: a pread copied every byte once more, the
 * biggest cost after the copy into the file itself (1 GB in the page cache, CRC included:
 * pread of 256 KiB pieces 1.0 s, a mapping of each 4 MiB piece 0.44-0.69 s; in a backup to a
 * tmpfs, 2.2-2.5 s against 1.6-2.0, and pread of 64 KiB pieces no better than 256 KiB). The
 * piece was written by this process a moment ago, so the mapping is backed by pages in the
 * cache; were the file cut under it, the SIGBUS would end the backup without a MANIFEST
 * (B1: visibly not a backup). Where a mapping fails, the piece is read back in pieces. */
#define READBACK (256u << 10)
static int crc_back(wfile *f, uint64_t off, size_t len, evs_error *err)
{
    uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE), a = off & ~(pg - 1);
    size_t mlen = (size_t)(off + len - a);
    void *m = len ? mmap(NULL, mlen, PROT_READ, MAP_SHARED | MAP_POPULATE, f->fd, (off_t)a)
                  : MAP_FAILED;
    if (m != MAP_FAILED) {
        f->crc = evs_crc32(f->crc, (const uint8_t *)m + (off - a), len);
        munmap(m, mlen);
        return 0;
    }
    for (size_t done = 0; done < len;) {
        size_t k = len - done < READBACK ? len - done : READBACK;
        ssize_t r = pread(f->fd, f->rbuf, k, (off_t)(off + done));
        if (r <= 0)
            return evs_err_set(err, r < 0 ? -errno : -EIO, "cannot read back %s at %" PRIu64
                               ": %s", f->path, off + done, r < 0 ? strerror(errno) : "short");
        f->crc = evs_crc32(f->crc, f->rbuf, (size_t)r);
        done += (size_t)r;
    }
    return 0;
}

static int landed(void *arg, uint64_t off, size_t len, evs_error *err)
{
    wfile *f = arg;
    /* evs_backup_options.cancel, looked at every piece: a stop comes within one piece, and
     * the failure removes what was written (B4) */
    if (evs_cancel_check(f->o->cancel, err))
        return EVS_ECLOSED;
    if (off != f->n)
        return evs_err_set(err, -EIO, "%s: the source wrote at %" PRIu64 ", expected %" PRIu64,
                           f->path, off, f->n);
    int rc = crc_back(f, off, len, err);
    if (rc)
        return rc;
    f->n += len;
    file_wrote(f, len);
    account(f, len);
    return 0;
}

static int sink(void *arg, const void *data, size_t len, evs_error *err)
{
    wfile *f = arg;
    if (evs_cancel_check(f->o->cancel, err)) /* as landed() */
        return EVS_ECLOSED;
    f->crc = evs_crc32(f->crc, data, len);
    f->n += len;
    int rc;
    if (f->compress) {
        f->z.next_in = (Bytef *)(uintptr_t)data;
        f->z.avail_in = (uInt)len;
        rc = deflate_some(f, Z_NO_FLUSH, err);
    } else {
        rc = file_out(f, data, len, err);
    }
    if (!rc)
        account(f, len);
    return rc;
}

/* ---- a second thread for the file side ---------------------------------------------------
 * The source (network receive, or reads of the snapshot) runs on the caller's thread; the
 * CRC, compression and writes of the file run on one more, through a ring of PIPE_BUFS
 * buffers, so the two overlap (measured: the file side was more than half of a backup). */

#define PIPE_BUFS 8
#define PIPE_BUF_BYTES (1u << 20)

typedef struct wpipe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint8_t *buf[PIPE_BUFS];
    size_t len[PIPE_BUFS];
    size_t head, count;            /* the filled buffers: head .. head + count (mod PIPE_BUFS)  */
    bool done;                     /* the producer has delivered everything                     */
    int rc;                        /* the consumer's first error (then it only drains)          */
    evs_error err;
    wfile *f;
} wpipe;

static void *pipe_main(void *arg)
{
    wpipe *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->count && !w->done)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->count)
            break;
        size_t i = w->head;
        pthread_mutex_unlock(&w->mu);
        int rc = w->rc ? 0 : sink(w->f, w->buf[i], w->len[i], &w->err);
        pthread_mutex_lock(&w->mu);
        if (rc && !w->rc)
            w->rc = rc;
        w->head = (w->head + 1) % PIPE_BUFS;
        w->count--;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static int pipe_push(void *arg, const void *data, size_t len, evs_error *err)
{
    wpipe *w = arg;
    const uint8_t *p = data;
    while (len) {
        pthread_mutex_lock(&w->mu);
        while (w->count == PIPE_BUFS && !w->rc)
            pthread_cond_wait(&w->cv, &w->mu);
        int rc = w->rc;
        size_t slot = (w->head + w->count) % PIPE_BUFS;
        pthread_mutex_unlock(&w->mu);
        if (rc) {
            evs_err_copy(err, &w->err);
            return rc;
        }
        size_t n = len < PIPE_BUF_BYTES ? len : PIPE_BUF_BYTES;
        memcpy(w->buf[slot], p, n); /* the slot is the producer's until count covers it */
        pthread_mutex_lock(&w->mu);
        w->len[slot] = n;
        w->count++;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        p += n;
        len -= n;
    }
    return 0;
}

/* Run src->copy for file i with the file side on its own thread. */
static int pipe_copy(const evs_backup_source *src, size_t i, wfile *f, uint8_t **bufs,
                     evs_error *err)
{
    wpipe w = {.f = f};
    memcpy(w.buf, bufs, sizeof w.buf);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    pthread_t t;
    int rc = pthread_create(&t, NULL, pipe_main, &w);
    if (rc) {
        pthread_mutex_destroy(&w.mu);
        pthread_cond_destroy(&w.cv);
        return src->copy(src->arg, i, sink, f, err); /* no thread: one does both */
    }
    rc = src->copy(src->arg, i, pipe_push, &w, err);
    pthread_mutex_lock(&w.mu);
    w.done = true;
    pthread_cond_broadcast(&w.cv);
    pthread_mutex_unlock(&w.mu);
    pthread_join(t, NULL);
    if (!rc && w.rc)
        rc = (evs_err_copy(err, &w.err), w.rc);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}

static int fsync_path(const char *path, evs_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return evs_err_set(err, -errno, "cannot open %s: %s", path, strerror(errno));
    int rc = fsync(fd) ? -errno : 0;
    close(fd);
    if (rc)
        return evs_err_set(err, rc, "fsync of %s failed: %s", path, strerror(-rc));
    return 0;
}

/* Copy file i of the source into dir, filling mf (crc, sizes); its fsync joins ss. */
static int copy_file(const evs_backup_source *src, size_t i, const char *dir, mf_file *mf,
                     const evs_backup_options *o, evs_progress *prog, struct pace *pace,
                     uint8_t *zbuf, uint8_t **bufs, fio_syncset *ss, evs_error *err)
{
    char stored[MF_NAME_MAX + 4], path[PATH_MAX];
    mf_stored_name(mf, stored);
    snprintf(path, sizeof path, "%s/%s", dir, stored);
    wfile f = {.path = path, .compress = mf->compressed, .zbuf = zbuf, .o = o, .prog = prog,
               .pace = pace};
    f.crc = f.scrc = 0;
    f.fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f.fd < 0)
        return evs_err_set(err, -errno, "cannot create %s: %s", path, strerror(errno));
    int rc = -EOPNOTSUPP; /* until a zero-copy source has taken the file */
    if (f.compress && deflateInit(&f.z, o->level > 0 ? o->level : 1) != Z_OK) {
        close(f.fd);
        return evs_err_set(err, -ENOMEM, "zlib deflateInit failed");
    }
    if (!f.compress && src->copy_to_fd && bufs) {
        f.rbuf = bufs[0];
        rc = src->copy_to_fd(src->arg, i, f.fd, landed, &f, err);
        if (rc && rc != -EOPNOTSUPP && !strstr(err->msg, path)) { /* the file it was writing */
            char why[sizeof err->msg];
            snprintf(why, sizeof why, "%s", err->msg);
            evs_err_set(err, rc, "%s: %.*s", path, (int)(sizeof why - strlen(path) - 3), why);
        }
    }
    if (rc == -EOPNOTSUPP)
        rc = bufs ? pipe_copy(src, i, &f, bufs, err) : src->copy(src->arg, i, sink, &f, err);
    if (!rc && f.compress) {
        f.z.next_in = NULL;
        f.z.avail_in = 0;
        rc = deflate_some(&f, Z_FINISH, err);
    }
    if (f.compress)
        deflateEnd(&f.z);
    if (!rc && f.n != mf->size)
        rc = evs_err_set(err, -EIO, "%s: the source delivered %" PRIu64 " bytes, its snapshot "
                         "lists %" PRIu64, mf->name, f.n, mf->size);
    if (rc) {
        close(f.fd);
        return rc;
    }
    char failed[PATH_MAX];
    if ((rc = fio_syncset_add(ss, f.fd, path, failed, sizeof failed))) /* B1: synced by the end */
        return evs_err_set(err, rc, "fsync of %s failed: %s", failed, strerror(-rc));
    mf->crc = f.crc;
    mf->stored_size = f.compress ? f.sn : f.n;
    mf->stored_crc = f.compress ? f.scrc : f.crc;
    return 0;
}

/* ---- the backup ----------------------------------------------------------------------------- */

static void random_id(char out[33])
{
    uint8_t r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        uint64_t x = ((uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec) ^ (uint64_t)getpid();
        memcpy(r, &x, 8);
        memcpy(r + 8, &x, 8);
    }
    evs_uuid_format(r, out);
}

/* Is out usable: absent (then created) or an empty folder? */
static int prepare_out(const char *out, bool *created, evs_error *err)
{
    *created = false;
    if (mkdir(out, 0755) == 0) {
        *created = true;
        return 0;
    }
    if (errno != EEXIST)
        return evs_err_set(err, -errno, "cannot create %s: %s", out, strerror(errno));
    char probe[PATH_MAX];
    snprintf(probe, sizeof probe, "%s/MANIFEST", out);
    if (access(probe, F_OK) == 0)
        return evs_err_set(err, EVS_EEXIST, "%s already holds a backup", out);
    int empty = fio_dir_empty(out); /* empty: written into as it is (a mount point may be; a
                                       failed backup leaves it, empty, as it found it: B4) */
    if (empty < 0)
        return evs_err_set(err, empty == -ENOTDIR ? EVS_EEXIST : empty, "%s %s", out,
                           empty == -ENOTDIR ? "exists and is not a folder" : strerror(-empty));
    if (empty)
        return 0;
    return evs_err_set(err, EVS_EEXIST, "%s exists and is not an empty folder", out);
}

static const mf_file *parent_file(const manifest *p, const char *name)
{
    for (size_t i = 0; p && i < p->nfiles; i++)
        if (!strcmp(p->files[i].name, name))
            return &p->files[i];
    return NULL;
}

static void remove_written(const char *out, const manifest *m, size_t nwritten, bool created)
{
    char path[PATH_MAX], stored[MF_NAME_MAX + 4];
    for (size_t i = 0; i < nwritten; i++) {
        if (m->files[i].from[0])
            continue;
        mf_stored_name(&m->files[i], stored);
        snprintf(path, sizeof path, "%s/%s", out, stored);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/MANIFEST.tmp", out);
    unlink(path);
    snprintf(path, sizeof path, "%s/log", out);
    rmdir(path);
    snprintf(path, sizeof path, "%s/index", out);
    rmdir(path);
    if (created)
        rmdir(out);
}

int evs_backup_write(const evs_backup_source *src, const evs_backup_options *o,
                     evs_backup_report *rep, evs_error *err)
{
    const evs_snap_info *in = src->info;
    memset(rep, 0, sizeof *rep);
    manifest parent = {0}, m = {0};
    bool have_parent = false, created = false;
    int rc = 0;
    size_t nwritten = 0;
    uint8_t *zbuf = NULL, *bufs[PIPE_BUFS] = {0};
    bool have_bufs = false;
    fio_syncset ss = {.n = 0};
    char path[PATH_MAX], ppath[PATH_MAX] = "";
    if (o->parent) {
        if ((rc = backup_read_manifest(o->parent, &parent, err)))
            return rc;
        have_parent = true;
        if (strcmp(parent.store_id, in->store_id)) {
            rc = evs_err_set(err, EVS_EINVAL, "the previous backup %s is of store %s, this store "
                             "is %s", o->parent, parent.store_id, in->store_id);
            goto out;
        }
        if (parent.cut > in->cut) {
            rc = evs_err_set(err, EVS_EINVAL, "the previous backup %s was cut at %" PRIu64
                             ", past this snapshot's %" PRIu64 " (a restored or diverged store)",
                             o->parent, parent.cut, in->cut);
            goto out;
        }
        if (!realpath(o->parent, ppath)) {
            rc = evs_err_set(err, -errno, "cannot resolve %s: %s", o->parent, strerror(errno));
            goto out;
        }
    }
    if ((rc = prepare_out(o->out, &created, err)))
        goto out;
    snprintf(path, sizeof path, "%s/log", o->out);
    if (mkdir(path, 0755)) {
        rc = evs_err_set(err, -errno, "cannot create %s: %s", path, strerror(errno));
        goto out;
    }
    snprintf(path, sizeof path, "%s/index", o->out);
    if (mkdir(path, 0755)) {
        rc = evs_err_set(err, -errno, "cannot create %s: %s", path, strerror(errno));
        goto out;
    }
    random_id(m.id);
    memcpy(m.store_id, in->store_id, sizeof m.store_id);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    m.created_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    m.source = (char *)(src->describe ? src->describe : "");
    m.cut = in->cut;
    m.log_start = in->log_start;
    if (have_parent) {
        memcpy(m.parent_id, parent.id, sizeof m.parent_id);
        m.parent_path = ppath;
    }
    m.epochs = (evs_epoch *)in->epochs;
    m.nepochs = in->nepochs;
    m.streams = calloc(in->nstreams ? in->nstreams : 1, sizeof *m.streams);
    m.files = calloc(in->nfiles ? in->nfiles : 1, sizeof *m.files);
    zbuf = o->compress ? malloc(CHUNK) : NULL;
    have_bufs = true;
    for (int k = 0; k < PIPE_BUFS; k++)
        have_bufs &= (bufs[k] = malloc(PIPE_BUF_BYTES)) != NULL; /* else one thread does all */
    if (!m.streams || !m.files || (o->compress && !zbuf)) {
        rc = evs_err_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < in->nstreams; i++) {
        const evs_snap_stream *s = &in->streams[i];
        m.streams[i] = (mf_stream){(uint8_t *)s->name.ptr, s->name.len, s->last_id, s->length,
                                   s->entries_added};
    }
    m.nstreams = in->nstreams;
    evs_progress prog = {.what = "backup", .files_total = in->nfiles};
    struct pace pace = {.rate = o->rate};
    for (size_t i = 0; i < in->nfiles; i++) {
        const evs_snap_file *sf = &in->files[i];
        if (!mf_name_ok(sf->name)) {
            rc = evs_err_set(err, EVS_EINVAL, "the snapshot lists a file named \"%.60s\"",
                             sf->name);
            goto out;
        }
        mf_file *f = &m.files[i];
        snprintf(f->name, sizeof f->name, "%s", sf->name);
        f->size = sf->size;
        f->alloc = sf->alloc > sf->size ? sf->alloc : sf->size;
        f->segment = sf->segment;
        f->sealed = sf->sealed;
        f->seal_crc = sf->seal_crc;
        const mf_file *pf = parent_file(have_parent ? &parent : NULL, f->name);
        if (pf && f->sealed && pf->sealed && f->seal_crc && pf->seal_crc == f->seal_crc &&
            pf->size == f->size) {
            f->crc = pf->crc; /* B2 */
            f->compressed = pf->compressed;
            f->stored_size = pf->stored_size;
            f->stored_crc = pf->stored_crc;
            memcpy(f->from, pf->from[0] ? pf->from : parent.id, sizeof f->from);
            rep->files_shared++;
        } else {
            prog.bytes_total += f->size;
        }
    }
    m.nfiles = in->nfiles;
    for (size_t i = 0; i < m.nfiles; i++) {
        mf_file *f = &m.files[i];
        rep->bytes += f->size;
        if (f->from[0])
            continue;
        f->compressed = o->compress;
        nwritten = i + 1;
        if ((rc = copy_file(src, i, o->out, f, o, &prog, &pace, zbuf,
                             have_bufs ? bufs : NULL, &ss, err)))
            goto out;
        rep->bytes_copied += f->size;
        rep->bytes_stored += f->stored_size;
        prog.files_done++;
    }
    nwritten = m.nfiles;
    char failed[PATH_MAX];
    if ((rc = fio_syncset_flush(&ss, failed, sizeof failed))) {
        rc = evs_err_set(err, rc, "fsync of %s failed: %s", failed, strerror(-rc));
        goto out;
    }
    const char *dirs[] = {"log", "index", ""};
    for (size_t i = 0; i < 3 && !rc; i++) {
        snprintf(path, sizeof path, "%s/%s", o->out, dirs[i]);
        rc = fsync_path(path, err);
    }
    if (rc)
        goto out;
    size_t len;
    char *txt = mf_encode(&m, &len);
    if (!txt) {
        rc = evs_err_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    snprintf(path, sizeof path, "%s/MANIFEST", o->out);
    rc = fio_write_file_atomic(&fio_real, path, txt, len); /* B1 */
    free(txt);
    if (rc) {
        rc = evs_err_set(err, rc, "cannot write %s: %s", path, strerror(-rc));
        goto out;
    }
    memcpy(rep->id, m.id, sizeof rep->id);
    rep->cut = m.cut;
    rep->files = m.nfiles;
    rep->streams = m.nstreams;
out:
    fio_syncset_drop(&ss);
    if (rc && m.files)
        remove_written(o->out, &m, nwritten, created); /* B4 */
    else if (rc && created)
        rmdir(o->out);
    free(m.streams);
    free(m.files);
    free(zbuf);
    for (int k = 0; k < PIPE_BUFS; k++)
        free(bufs[k]);
    if (have_parent)
        mf_release(&parent);
    return rc;
}

/* ---- from an open store ------------------------------------------------------------------- */

typedef struct snap_src {
    evs_snapshot *s;
    uint64_t rate; /* --rate: a read or a copy moves evs_backup_piece bytes */
} snap_src;

static int snap_copy(void *arg, size_t i, evs_sink_fn fn, void *sink_arg, evs_error *err)
{
    snap_src *src = arg;
    evs_snapshot *s = src->s;
    size_t piece = evs_backup_piece(src->rate, CHUNK);
    uint8_t *buf = malloc(piece);
    if (!buf)
        return evs_err_set(err, -ENOMEM, "out of memory");
    int rc = 0;
    for (uint64_t off = 0;;) {
        long n = evs_snapshot_read(s, i, off, buf, piece, err);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        if (n == 0)
            break;
        if ((rc = fn(sink_arg, buf, (size_t)n, err)))
            break;
        off += (uint64_t)n;
    }
    free(buf);
    return rc;
}

/* Files held open by the snapshot go file -> file inside the kernel (copy_file_range). */
static int snap_copy_fd(void *arg, size_t i, int out, evs_landed_fn piece, void *piece_arg,
                        evs_error *err)
{
    snap_src *src = arg;
    evs_snapshot *s = src->s;
    int in;
    void *hold;
    evs_error e = {0};
    if (evs_snapshot_file_fd(s, i, &in, &hold, &e))
        return -EOPNOTSUPP; /* a small file held in memory: the copying path */
    uint64_t size = evs_snapshot_info(s)->files[i].size, done = 0;
    size_t step = evs_backup_piece(src->rate, CHUNK * 4);
    int rc = 0;
    while (!rc && done < size) {
        size_t want = size - done < step ? (size_t)(size - done) : step;
        loff_t from = (loff_t)done, to = (loff_t)done;
        ssize_t n = copy_file_range(in, &from, out, &to, want, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && !done && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
                               errno == EOPNOTSUPP))
            rc = -EOPNOTSUPP; /* this pair of files cannot: the copying path */
        else if (n <= 0)
            rc = evs_err_set(err, n ? -errno : -EIO, "cannot copy %s: %s",
                             evs_snapshot_info(s)->files[i].name,
                             n ? strerror(errno) : "the snapshot's file ended early");
        else if (!(rc = piece(piece_arg, done, (size_t)n, err)))
            done += (uint64_t)n;
    }
    evs_snapshot_release(hold);
    return rc;
}

/* B5: EVS_EINVAL if folder `out` (which may not exist yet) would be inside store folder `dir`.
 * A path that cannot be resolved is left to prepare_out, which names what is wrong with it. */
static int out_outside_store(const char *dir, const char *out, evs_error *err)
{
    char sd[PATH_MAX], od[PATH_MAX], parent[PATH_MAX];
    int n = snprintf(parent, sizeof parent, "%s", out);
    if (n <= 0 || n >= (int)sizeof parent || !realpath(dir, sd))
        return 0;
    while (n > 1 && parent[n - 1] == '/')
        parent[--n] = 0;
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else
        slash[slash == parent] = 0; /* "/x" -> "/" */
    if (!realpath(parent, od))
        return 0;
    size_t sl = strlen(sd);
    if (strncmp(od, sd, sl) || (od[sl] && od[sl] != '/' && sl > 1))
        return 0;
    return evs_err_set(err, EVS_EINVAL, "%s is inside the store folder %s: back up to a folder "
                       "outside it (a follower's snapshot copy moves aside or removes what the "
                       "store's folder holds besides the store)", out, dir);
}

int evs_backup_store(evs_store *st, const char *describe, const evs_backup_options *o,
                     evs_backup_report *rep, evs_error *err)
{
    evs_snapshot *s;
    int rc = out_outside_store(st->dir, o->out, err);
    if (rc)
        return rc;
    rc = evs_snapshot_open(st, &s, err);
    if (rc)
        return rc;
    snap_src ss = {s, o->rate};
    evs_backup_source src = {evs_snapshot_info(s), snap_copy, &ss, describe, snap_copy_fd};
    rc = evs_backup_write(&src, o, rep, err);
    evs_snapshot_close(s);
    return rc;
}
