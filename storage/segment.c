/*
 * segment.c — one segment file of the log: created durably, mapped read-only for readers.
 *
 * A segment is named by the log position of its first byte, "%020llu.seg", so the folder
 * listing alone orders the log. Creation: a ".tmp" file is preallocated (a full disk shows up
 * here, before any record is half written), filled with zeros to the full segment size,
 * fsynced, then renamed into place and the folder fsynced. Zero-filled, full-size files are
 * what make an append a pure data overwrite: fdatasync then writes data pages only, never the
 * inode (no size change) nor extent metadata (no unwritten extents), which on this machine's
 * journal-less ext4 stalled syncs behind the inode-table writeback (docs/architecture.md).
 * The log in a segment ends at the first all-zero record header; a sealed segment is cut to
 * its last record.
 *
 * Mappings: readers read records straight from a shared read-only mapping. The active
 * segment is mapped at its preallocated size; if a record takes it past that, a larger
 * mapping is made and the old one is kept (readers may hold pointers into it) until close.
 * Nothing past `size` is ever read, so no reader touches a page beyond the end of file.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

bool seg_name_parse(const char *name, uint64_t *base)
{
    if (strlen(name) != 24 || strcmp(name + 20, ".seg") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *base = v;
    return true;
}

static segment *seg_alloc(uint64_t base)
{
    segment *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->base = base;
    s->fd = -1;
    snprintf(s->name, sizeof s->name, "%020" PRIu64 ".seg", base);
    atomic_init(&s->refs, 1);
    return s;
}

int seg_prepare(const struct evs_io *io, const char *logdir, const char *tmpname, uint64_t bytes,
                bool zero, bool (*pace)(void *arg), void *pace_arg, evs_error *err)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/%s", logdir, tmpname);
    int fd = io->open(tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    int rc = fd < 0 ? fd : 0;
    const char *what = "create";
    /* reserve the blocks first, so a full disk fails here and not in a half-zeroed file */
    if (!rc && bytes && (rc = io->fallocate(fd, 0, 0, (off_t)bytes)))
        what = "preallocate";
    /* zeros in chunks, each synced so that no burst of dirty pages lands in front of the
     * writer's fdatasync; `pace` may sleep between chunks, or stop the work (returns false) */
    static const uint8_t zeros[SEG_ZERO_CHUNK];
    for (uint64_t off = 0; !rc && zero && off < bytes; off += sizeof zeros) {
        uint64_t n = bytes - off < sizeof zeros ? bytes - off : sizeof zeros;
        struct iovec iov = {(void *)zeros, (size_t)n};
        if ((rc = fio_pwritev_all(io, fd, &iov, 1, (off_t)off)))
            what = "zero-fill";
        else if (pace && (rc = io->fdatasync(fd)))
            what = "fsync";
        else if (pace && !pace(pace_arg)) {
            rc = EVS_ECLOSED;
            what = "finish (stopped)";
        }
    }
    if (!rc && (rc = io->fsync(fd)))
        what = "fsync";
    if (fd >= 0)
        close(fd);
    if (rc) {
        unlink(tmp);
        return evs_err_set(err, rc, "cannot %s segment %s: %s", what, tmp, evs_strerror(rc));
    }
    return 0;
}

int seg_install(const struct evs_io *io, const char *logdir, const char *tmpname, uint64_t base,
                bool pending, segment **out, evs_error *err)
{
    segment *s = seg_alloc(base);
    if (!s)
        return evs_err_set(err, -ENOMEM, "out of memory");
    char path[PATH_MAX], tmp[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s%s", logdir, s->name, pending ? SEG_PENDING : "");
    snprintf(tmp, sizeof tmp, "%s/%s", logdir, tmpname);
    int rc = io->rename(tmp, path);
    const char *what = "rename";
    if (!rc && !pending && (rc = fio_fsync_dir(io, logdir)))
        what = "fsync folder of";
    struct stat sb;
    if (!rc && ((s->fd = open(path, O_RDWR | O_CLOEXEC)) < 0 || fstat(s->fd, &sb) < 0)) {
        rc = -errno;
        what = "open";
    }
    if (!rc && !seg_map_for(s, sb.st_size > 0 ? (uint64_t)sb.st_size : 1 << 20)) {
        rc = -errno;
        what = "map";
    }
    if (rc) {
        seg_free(s);
        return evs_err_set(err, rc, "cannot %s segment %s: %s", what, path, strerror(-rc));
    }
    atomic_init(&s->size, 0);
    atomic_init(&s->written, 0);
    *out = s;
    return 0;
}

int seg_open(const char *logdir, const char *name, bool rdonly, segment **out, evs_error *err)
{
    uint64_t base;
    if (!seg_name_parse(name, &base))
        return evs_err_set(err, EVS_EINVAL, "not a segment name: %s", name);
    return seg_open_file(logdir, name, base, rdonly, out, err);
}

int seg_open_file(const char *logdir, const char *name, uint64_t base, bool rdonly,
                  segment **out, evs_error *err)
{
    segment *s = seg_alloc(base);
    if (!s)
        return evs_err_set(err, -ENOMEM, "out of memory");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", logdir, name);
    s->fd = open(path, (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    struct stat sb;
    if (s->fd < 0 || fstat(s->fd, &sb) < 0) {
        int e = errno;
        seg_free(s);
        return evs_err_set(err, -e, "cannot open segment %s: %s", path, strerror(e));
    }
    atomic_init(&s->size, (uint64_t)sb.st_size);
    atomic_init(&s->written, (uint64_t)sb.st_size);
    if (sb.st_size > 0 && !seg_map_for(s, (uint64_t)sb.st_size)) {
        int e = errno;
        seg_free(s);
        return evs_err_set(err, -e, "cannot map segment %s: %s", path, strerror(e));
    }
    *out = s;
    return 0;
}

uint8_t *seg_map_for(segment *s, uint64_t len)
{
    if (s->map && s->map->len >= len)
        return s->map->ptr;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t mlen = (len + page - 1) / page * page;
    if (mlen == 0)
        mlen = page;
    void *p = mmap(NULL, mlen, PROT_READ, MAP_SHARED, s->fd, 0);
    if (p == MAP_FAILED)
        return NULL;
    struct segmap *m = malloc(sizeof *m);
    if (!m) {
        munmap(p, mlen);
        errno = ENOMEM;
        return NULL;
    }
    m->ptr = p;
    m->len = mlen;
    m->next = s->map;
    s->map = m;
    return m->ptr;
}

uint8_t *seg_data(segment *s) { return s->map ? s->map->ptr : NULL; }

void seg_free(segment *s)
{
    if (!s)
        return;
    while (s->map) {
        struct segmap *m = s->map;
        s->map = m->next;
        munmap(m->ptr, m->len);
        free(m);
    }
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}
