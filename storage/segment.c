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
 * mapping is made and the old one is kept (readers may hold pointers into it) until the
 * segment is unmapped whole or freed. Nothing past `size` is ever read, so no reader touches
 * a page beyond the end of file.
 *
 * Every segment of a store stayed mapped while it was open, so a log of N segments held N
 * mappings, and Linux's vm.max_map_count (65,530 by default) capped a store near 65,000
 * segments; past it a roll failed the store ("cannot map segment: Cannot allocate memory")
 * and the store would not open again. Now a sealed segment is mapped when first read and
 * unmapped when the process holds too many:
 *  M1. A pointer into a segment's mapping is used only while holding a reference on the
 *      segment besides its store's table's (store_seg_get, an iterator's, a snapshot's, the
 *      open's scans: see store.c seg_hold), or on one never evicted (not sealed: the active
 *      segment, which its writer maps and remaps itself).
 *  M2. The process counts its segment mappings. Past the cap (half of vm.max_map_count, so
 *      that LMDB, the libraries and the heap keep theirs), whoever maps one more unmaps the
 *      least recently read segments (the clock store_seg_get sets: seg_touch), down to 7/8
 *      of the cap: only sealed ones, in a store's table (`evictable`), read by nobody (the
 *      low half of refs exactly 1, the table's; the high half counts holders of the
 *      descriptor only: a sync, a cut, a sendfile, a roll job), taken to refs|SEG_EVICTING
 *      by compare-and-swap so that no reference is taken meanwhile unseen.
 *  M3. seg_data reads `refs` (the caller's reference already counted) before the mapping
 *      pointer: with SEG_EVICTING set it waits for the eviction (maps_mu) and maps again;
 *      without it, no eviction can start while the caller holds its reference (low half
 *      >= 2).
 *  M4. An eviction that finds `evictable` cleared after its swap (the table let go of the
 *      segment meanwhile) undoes it, unmapping nothing; the last reference dropped while
 *      SEG_EVICTING is set (store_seg_put leaves it) is released by the evictor.
 * The descriptors stay open: one per segment (net/fdlimit.c raises the limit for them).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
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
    s->map_slot = SIZE_MAX;
    atomic_init(&s->whole_from, UINT64_MAX);
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
    atomic_init(&s->whole_from, 0); /* new: everything in it is the writer's */
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
    *out = s; /* mapped when first read (seg_data) */
    return 0;
}

/* ---- the process's segment mappings (M1-M4) ---------------------------------------------- */

size_t seg_test_map_cap;
void (*seg_test_evicting)(segment *s);
static pthread_mutex_t maps_mu = PTHREAD_MUTEX_INITIALIZER;
static segment **mapped;         /* segments holding a mapping, each at its map_slot      */
static size_t nmapped, mappedcap;
static size_t nmaps;             /* their mappings (a segment may hold several: see above) */
static _Atomic uint64_t map_clock; /* advances with each segment mapped: the reads' clock    */

size_t seg_maps_held(void)
{
    pthread_mutex_lock(&maps_mu);
    size_t n = nmaps;
    pthread_mutex_unlock(&maps_mu);
    return n;
}

static size_t map_cap(void)
{
    static size_t cap;
    if (seg_test_map_cap)
        return seg_test_map_cap;
    if (!cap) {
        long max = 65530;
        FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
        if (f) {
            if (fscanf(f, "%ld", &max) != 1 || max < 256)
                max = 65530;
            fclose(f);
        }
        cap = (size_t)max / 2;
        /* EVSTORE_SEGMENT_MAPS: fewer (a process with many stores, or a test of M2) */
        const char *e = getenv("EVSTORE_SEGMENT_MAPS");
        char *end;
        long v = e ? strtol(e, &end, 10) : 0;
        if (e && !*end && v >= 8 && (size_t)v < cap)
            cap = (size_t)v;
    }
    return cap;
}

/* maps_mu held: s holds one more mapping, m (its newest). */
static bool maps_add(segment *s, struct segmap *m)
{
    if (s->map_slot == SIZE_MAX) {
        if (arr_room(&mapped, nmapped, &mappedcap, sizeof *mapped, 256))
            return false;
        s->map_slot = nmapped;
        mapped[nmapped++] = s;
    }
    m->next = atomic_load(&s->map);
    atomic_store_explicit(&s->map, m, memory_order_release);
    nmaps++;
    atomic_store_explicit(&s->last_use, atomic_fetch_add(&map_clock, 1) + 1,
                          memory_order_relaxed);
    return true;
}

/* maps_mu held: s's mappings go (it is freed, or evicted: M2). */
static void maps_drop(segment *s)
{
    struct segmap *m = atomic_exchange(&s->map, NULL);
    while (m) {
        struct segmap *next = m->next;
        munmap(m->ptr, m->len);
        free(m);
        nmaps--;
        m = next;
    }
    if (s->map_slot != SIZE_MAX) {
        segment *last = mapped[--nmapped];
        mapped[s->map_slot] = last;
        last->map_slot = s->map_slot;
        s->map_slot = SIZE_MAX;
    }
}

void seg_touch(segment *s)
{
    uint64_t now = atomic_load_explicit(&map_clock, memory_order_relaxed);
    if (atomic_load_explicit(&s->last_use, memory_order_relaxed) != now)
        atomic_store_explicit(&s->last_use, now, memory_order_relaxed);
}

static int by_last_use(const void *a, const void *b)
{
    uint64_t x = atomic_load_explicit(&(*(segment *const *)a)->last_use, memory_order_relaxed);
    uint64_t y = atomic_load_explicit(&(*(segment *const *)b)->last_use, memory_order_relaxed);
    return x < y ? -1 : x > y;
}

/* maps_mu held, past the cap: M2 and M4. Segments whose last reference went meanwhile are
 * put into *released (the caller releases them once maps_mu is let go). */
static size_t evict(segment *keep, segment ***released)
{
    size_t cap = map_cap(), target = cap - cap / 8, n = 0, nrel = 0;
    segment **c = malloc(nmapped * sizeof *c);
    *released = malloc(nmapped * sizeof **released);
    if (!c || !*released) {
        free(c);
        free(*released);
        *released = NULL;
        return 0;
    }
    for (size_t i = 0; i < nmapped; i++)
        if (mapped[i] != keep && atomic_load(&mapped[i]->sealed) &&
            atomic_load(&mapped[i]->evictable))
            c[n++] = mapped[i];
    qsort(c, n, sizeof *c, by_last_use);
    for (size_t i = 0; i < n && nmaps > target; i++) {
        segment *s = c[i];
        int64_t v = atomic_load(&s->refs); /* readers' half 1: the table's alone */
        if ((v & 0xffffffff) != 1 ||
            !atomic_compare_exchange_strong(&s->refs, &v, v | SEG_EVICTING))
            continue; /* read by someone */
        if (seg_test_evicting)
            seg_test_evicting(s);
        if (atomic_load(&s->evictable)) /* M4: else the table let it go meanwhile */
            maps_drop(s);
        if ((atomic_fetch_and(&s->refs, ~SEG_EVICTING) & ~SEG_EVICTING) == 0)
            (*released)[nrel++] = s; /* M4: its last reference went meanwhile */
    }
    free(c);
    return nrel;
}

/* What evict gave, once maps_mu is let go. */
static void release_all(segment **released, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_seg_release(released[i]);
    free(released);
}

/* maps_mu held: map s's first len bytes as its newest mapping; past the cap, evict (the
 * segments to release go to *released, *nrel). NULL with errno on failure. */
static uint8_t *map_locked(segment *s, uint64_t len, segment ***released, size_t *nrel)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t mlen = (len + page - 1) / page * page;
    if (mlen == 0)
        mlen = page;
    void *p = mmap(NULL, mlen, PROT_READ, MAP_SHARED, s->fd, 0);
    if (p == MAP_FAILED)
        return NULL;
    struct segmap *m = malloc(sizeof *m);
    if (!m || (m->ptr = p, m->len = mlen, !maps_add(s, m))) {
        munmap(p, mlen);
        free(m);
        errno = ENOMEM;
        return NULL;
    }
    if (nmaps > map_cap())
        *nrel = evict(s, released);
    return p;
}

/* A mapping of s covering len bytes (0: any mapping, else its whole file), made if there is
 * none; past the cap, others are evicted (M2). NULL with errno on failure. */
static uint8_t *map_covering(segment *s, uint64_t len)
{
    segment **released = NULL;
    size_t nrel = 0;
    struct stat sb;
    pthread_mutex_lock(&maps_mu); /* (an eviction of s in progress ends first: M3) */
    struct segmap *cur = atomic_load(&s->map);
    uint8_t *p = cur && cur->len >= len ? cur->ptr : NULL;
    if (!p && (len || fstat(s->fd, &sb) == 0)) {
        if (!len) /* as its file is, past its records too (a sealed one's cut may be pending) */
            len = (uint64_t)sb.st_size > atomic_load(&s->size) ? (uint64_t)sb.st_size
                                                               : atomic_load(&s->size);
        p = map_locked(s, len ? len : 1, &released, &nrel);
    }
    int e = errno;
    pthread_mutex_unlock(&maps_mu);
    if (released)
        release_all(released, nrel);
    errno = e;
    return p;
}

uint8_t *seg_map_for(segment *s, uint64_t len)
{
    struct segmap *cur = atomic_load(&s->map);
    if (cur && cur->len >= len) /* (the writer's, or the open's: never being evicted) */
        return cur->ptr;
    return map_covering(s, len ? len : 1);
}

uint8_t *seg_data(segment *s)
{
    if (!(atomic_load(&s->refs) & SEG_EVICTING)) { /* M3: before the pointer */
        struct segmap *m = atomic_load_explicit(&s->map, memory_order_acquire);
        if (m)
            return m->ptr; /* (its clock is set where its reference was taken: seg_touch) */
    }
    return map_covering(s, 0); /* not mapped (not read yet, or evicted), or being evicted */
}

void seg_free(segment *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&maps_mu);
    maps_drop(s);
    pthread_mutex_unlock(&maps_mu);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}
