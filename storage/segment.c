/*
 * segment.c — one segment file of the log: created durably, mapped read-only for readers.
 *
 * A segment is named by the log position of its first byte, "%020llu.seg", so the folder
 * listing alone orders the log. Creation: write "<name>.tmp", preallocate with
 * FALLOC_FL_KEEP_SIZE (a full disk shows up here, before any record is half written), fsync,
 * rename, fsync the folder. The file size is always the end of the last written byte; the
 * preallocated space beyond it is invisible to scans.
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

int seg_create(const struct evs_io *io, const char *logdir, uint64_t base, uint64_t prealloc,
               segment **out, evs_error *err)
{
    segment *s = seg_alloc(base);
    if (!s)
        return evs_err_set(err, -ENOMEM, "out of memory");
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/%s", logdir, s->name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = io->open(tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    int rc = fd < 0 ? fd : 0;
    const char *what = "create";
    if (!rc && prealloc && (rc = io->fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)prealloc)))
        what = "preallocate";
    if (!rc && (rc = io->fsync(fd)))
        what = "fsync";
    if (!rc && (rc = io->rename(tmp, path)))
        what = "rename";
    if (!rc && (rc = fio_fsync_dir(io, logdir)))
        what = "fsync folder of";
    if (rc) {
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        free(s);
        return evs_err_set(err, rc, "cannot %s segment %s: %s", what, path, strerror(-rc));
    }
    s->fd = fd;
    atomic_init(&s->size, 0);
    if (!seg_map_for(s, prealloc ? prealloc : 1 << 20)) {
        rc = -errno;
        seg_free(s);
        return evs_err_set(err, rc, "cannot map segment %s: %s", path, strerror(-rc));
    }
    *out = s;
    return 0;
}

int seg_open(const char *logdir, const char *name, bool rdonly, segment **out, evs_error *err)
{
    uint64_t base;
    if (!seg_name_parse(name, &base))
        return evs_err_set(err, EVS_EINVAL, "not a segment name: %s", name);
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
