/*
 * snapshot.c — a consistent cut of a live store, for backups (and, later, for a follower that
 * is behind the leader's retention).
 *
 * Order of taking it, under the retention mutex (no segment is deleted in between):
 *   1. the index: LMDB's consistent copy into an unlinked temporary file, at some committed
 *      transaction whose watermark W names a record already in the log;
 *   2. the cut: a writer request (WR_CUT) that runs between two write batches and takes the
 *      log's end C, a reference on every segment below it, each live stream's counters and
 *      the epoch history.
 *
 * Invariants:
 *  P1. W <= C: the index copy never leads the copied log (the index lags the log, and the cut
 *      is taken after the copy). Opening the copy runs normal recovery from W to C.
 *  P2. C is a record boundary and an atomic-group boundary (the writer publishes whole
 *      batches), and every entry acknowledged before evs_snapshot_open began lies below it.
 *  (A store open read-only has no writer and writes nothing: its cut is the log as opened,
 *  taken at once, and the index copy goes to $TMPDIR, since the folder may not be writable.)
 *
 *  P3. The bytes below C never change while the snapshot lives: sealed segments are
 *      immutable, the active one is only appended to above C, and the references keep every
 *      listed file open even if retention unlinks it.
 *  P4. The index copy's whole pages that evs_snapshot_read_once has read (a BACKUP READ's,
 *      copied into its reply) are punched out of the file there and then: the copy is an
 *      unlinked temporary file, written at full speed when the snapshot is taken, and its
 *      dirty pages would otherwise go to the disk in one burst when they expire
 *      (vm.dirty_expire_centisecs, 30 s), which in a paced backup stalled the server's own
 *      fsyncs (publish p99 10 ms in that window, 0.5-0.7 ms in every other; docs/
 *      benchmarks.md). Dropped, they are never written. Only bytes already copied out are
 *      punched: a page still on its way by sendfile may be referenced by the socket's
 *      buffers, and punching it zeroed what the client received (a first version; the RESP
 *      test caught it). A file system without hole punching keeps the pages.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index.h"
#include "internal.h"

enum { F_STORE, F_EPOCHS, F_INDEX, F_SEGS };

struct evs_snapshot {
    evs_store *st;
    snap_cut cut;
    evs_snap_info info;
    evs_snap_file *files;
    int idx_fd;
    char *store_txt, *epochs_txt;
    size_t store_len, epochs_len;
};

/* The CRC of the seal record that ends a sealed segment's `size` bytes (its identity for an
 * incremental backup), found by stepping back from the end; 0 if there is none. */
static uint32_t seal_crc(segment *g, uint64_t size)
{
    const uint8_t *d = seg_data(g);
    if (!d || size < REC_HDR_SIZE)
        return 0;
    uint64_t low = size > 512 ? size - 512 : 0;
    for (uint64_t off = size - REC_HDR_SIZE; ; off -= 8) {
        rec_hdr h;
        uint64_t sz;
        if (rec_check(d + off, size - off, &h, &sz) == REC_OK && h.kind == REC_SEAL &&
            off + sz == size)
            return h.crc;
        if (off < low + 8)
            break;
    }
    return 0;
}

static int index_copy(evs_store *st, int *fd_out, uint64_t *size, evs_error *err)
{
    char path[PATH_MAX];
    const char *tmp = getenv("TMPDIR");
    if (st->opt.read_only) /* the folder may be on a read-only file system */
        snprintf(path, sizeof path, "%s/evstore-snapshot-index-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    else
        snprintf(path, sizeof path, "%s/.snapshot-index-XXXXXX", st->dir);
    /* nameless from birth where the file system can (O_TMPFILE): nothing to clean up after
     * a crash; elsewhere named for the instant before its unlink */
    char *slash = strrchr(path, '/');
    *slash = '\0';
    int fd = open(path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    *slash = '/';
    if (fd < 0) {
        fd = mkostemp(path, O_CLOEXEC);
        if (fd < 0)
            return evs_err_set(err, -errno, "cannot create %s: %s", path, strerror(errno));
        unlink(path);
    }
    int rc = idx_copy_fd(st->idx, fd, err);
    struct stat sb;
    if (!rc && fstat(fd, &sb) < 0)
        rc = evs_err_set(err, -errno, "cannot stat the index copy: %s", strerror(errno));
    if (rc) {
        close(fd);
        return rc;
    }
    *fd_out = fd;
    *size = (uint64_t)sb.st_size;
    return 0;
}

int evs_snapshot_open(evs_store *st, evs_snapshot **out, evs_error *err)
{
    evs_snapshot *s = calloc(1, sizeof *s);
    if (!s)
        return evs_err_set(err, -ENOMEM, "out of memory");
    s->st = st;
    s->idx_fd = -1;
    uint64_t idx_size = 0;
    pthread_mutex_lock(&st->ret_mu); /* no retention pass between the copy and the cut */
    int rc = index_copy(st, &s->idx_fd, &idx_size, err);
    if (!rc)
        rc = writer_cut(st, &s->cut, err);
    pthread_mutex_unlock(&st->ret_mu);
    if (rc)
        goto fail;
    snap_cut *c = &s->cut;
    char sbuf[128];
    int n = snprintf(sbuf, sizeof sbuf, "evstore-store 1\nid %s\n", st->store_id);
    s->store_txt = strdup(sbuf);
    s->store_len = (size_t)n;
    s->epochs_txt = epochs_format(c->epochs, c->nepochs, &s->epochs_len);
    s->files = calloc(F_SEGS + c->nsegs, sizeof *s->files);
    if (!s->store_txt || !s->epochs_txt || !s->files) {
        rc = evs_err_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    s->files[F_STORE] = (evs_snap_file){.name = "STORE", .size = s->store_len,
                                        .alloc = s->store_len};
    s->files[F_EPOCHS] = (evs_snap_file){.name = "EPOCHS", .size = s->epochs_len,
                                         .alloc = s->epochs_len};
    s->files[F_INDEX] = (evs_snap_file){.name = "index/data.mdb", .size = idx_size,
                                        .alloc = idx_size, .read_once = true};
    for (size_t i = 0; i < c->nsegs; i++) {
        evs_snap_file *f = &s->files[F_SEGS + i];
        segment *g = c->segs[i];
        snprintf(f->name, sizeof f->name, "log/%s", g->name);
        f->size = c->sizes[i];
        f->segment = true;
        f->sealed = c->sealed[i];
        struct stat sb;
        f->alloc = f->size;
        if (!f->sealed && fstat(g->fd, &sb) == 0 && (uint64_t)sb.st_size > f->size)
            f->alloc = (uint64_t)sb.st_size;
        if (f->sealed) { /* 0 when it ends without a seal (closed after corruption): not shared */
            atomic_fetch_add(&g->refs, 1); /* a reader's: its mapping (segment.c M1) */
            f->seal_crc = seal_crc(g, f->size);
            store_seg_put(g);
        }
    }
    evs_snap_info *in = &s->info;
    memcpy(in->store_id, st->store_id, sizeof in->store_id);
    in->cut = c->cut;
    in->log_start = c->nsegs ? c->segs[0]->base : c->cut;
    in->epochs = c->epochs;
    in->nepochs = c->nepochs;
    in->streams = c->streams;
    in->nstreams = c->nstreams;
    in->files = s->files;
    in->nfiles = F_SEGS + c->nsegs;
    *out = s;
    return 0;
fail:
    evs_snapshot_close(s);
    return rc;
}

const evs_snap_info *evs_snapshot_info(const evs_snapshot *s) { return &s->info; }

long evs_snapshot_read(evs_snapshot *s, size_t i, uint64_t off, void *buf, size_t len,
                       evs_error *err)
{
    if (i >= s->info.nfiles)
        return evs_err_set(err, EVS_EINVAL, "the snapshot has no file %zu", i);
    const evs_snap_file *f = &s->files[i];
    if (off >= f->size)
        return 0;
    if (len > f->size - off)
        len = (size_t)(f->size - off);
    if (i == F_STORE || i == F_EPOCHS) {
        memcpy(buf, (i == F_STORE ? s->store_txt : s->epochs_txt) + off, len);
        return (long)len;
    }
    int fd = i == F_INDEX ? s->idx_fd : s->cut.segs[i - F_SEGS]->fd;
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return evs_err_set(err, r < 0 ? -errno : -EIO, "cannot read %s at offset %" PRIu64
                               ": %s", f->name, off + done, r < 0 ? strerror(errno) : "end of file");
        done += (size_t)r;
    }
    return (long)len;
}

long evs_snapshot_read_once(evs_snapshot *s, size_t i, uint64_t off, void *buf, size_t len,
                            evs_error *err)
{
    long n = evs_snapshot_read(s, i, off, buf, len, err);
    if (n > 0 && s->files[i].read_once) { /* P4: whole pages only, the bytes are in buf */
        uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE), a = (off + pg - 1) / pg * pg,
                 b = (off + (uint64_t)n) / pg * pg;
        if (b > a)
            (void)fallocate(s->idx_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)a,
                            (off_t)(b - a));
    }
    return n;
}

typedef struct snap_hold {
    segment *seg; /* a reference on the segment whose fd was lent, or NULL                  */
    int fd;       /* a dup of the index copy's fd, or -1                                    */
} snap_hold;

int evs_snapshot_file_fd(evs_snapshot *s, size_t i, int *fd, void **hold, evs_error *err)
{
    if (i >= s->info.nfiles || i < F_INDEX)
        return evs_err_set(err, EVS_EINVAL, "snapshot file %zu has no file descriptor", i);
    snap_hold *h = malloc(sizeof *h);
    if (!h)
        return evs_err_set(err, -ENOMEM, "out of memory");
    h->seg = NULL;
    h->fd = -1;
    if (i == F_INDEX) {
        if ((h->fd = fcntl(s->idx_fd, F_DUPFD_CLOEXEC, 0)) < 0) {
            free(h);
            return evs_err_set(err, -errno, "cannot dup the index copy: %s", strerror(errno));
        }
        *fd = h->fd;
    } else {
        h->seg = s->cut.segs[i - F_SEGS];
        store_seg_hold_fd(h->seg); /* P3 holds for as long as the fd is lent */
        *fd = h->seg->fd;
    }
    *hold = h;
    return 0;
}

void evs_snapshot_release(void *hold)
{
    snap_hold *h = hold;
    if (!h)
        return;
    if (h->seg)
        store_seg_put_fd(h->seg);
    if (h->fd >= 0)
        close(h->fd);
    free(h);
}

void evs_snapshot_close(evs_snapshot *s)
{
    if (!s)
        return;
    snap_cut_release(&s->cut);
    if (s->idx_fd >= 0)
        close(s->idx_fd);
    free(s->store_txt);
    free(s->epochs_txt);
    free(s->files);
    free(s);
}
