/*
 * releaser.c — disk space given back in the background: the unused zeros at the end of a
 * sealed segment (rel_cut, from the writer after a seal) and the files of the segments
 * retention deleted (rel_delete, after their rename to `.deleted`). One thread, one FIFO queue.
 *
 * Why here and paced: freeing blocks stalls every fdatasync on the same file system while it
 * runs, and a publish waits for one fdatasync. Measured with `perf trace` on this machine's
 * ext4 (mounted with `discard`): cutting a mostly empty 64 MiB sealed segment took 27-30 ms on
 * the writer's own thread; each 8 MiB freed from a deleted segment stalled the concurrent
 * fdatasync 2-6 ms, and a 1 GiB backlog freed at 1.6 GB/s raised the publish p99 at 10,000/s
 * by half (docs/benchmarks.md, retention). So blocks go REL_STEP at a time, at most REL_RATE
 * bytes a second — unless the file system is short of space (less free than REL_LOW_SEGMENTS
 * segments, or REL_LOW_PCT % of it), when a full disk is worse than a slow fsync and the
 * steps follow one another with only REL_URGENT_PAUSE_NS between them.
 *
 * Invariants:
 *  L1. Losing a queued job loses nothing: open accepts zeros after a seal and finishes the
 *      cut (store.c seal_found) and removes leftover `.deleted` files (R3); readers, backups
 *      and followers go by the records' end, never by a file's length.
 *  L2. A job holds what it works on: a reference on the sealed segment (its fd stays open
 *      even if retention deletes it meanwhile), or an open fd of the deleted file.
 *  L3. Stopping finishes every job at once, unpaced (rel_stop); a job that cannot be queued
 *      (no thread, no memory) is done at once by its caller.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define REL_RATE (32ull << 20)          /* bytes freed per second when space is not short */
#define REL_URGENT_PAUSE_NS 5000000ull  /* between steps when it is                        */
#define REL_LOW_SEGMENTS 4
#define REL_LOW_PCT 5

struct rel_job {
    struct rel_job *next;
    segment *seg;   /* a sealed segment to cut to `to` (a reference), or NULL: */
    int fd;         /* the deleted segment file at `path`, cut to nothing, then unlinked */
    uint64_t to;
    char path[];
};

/* Whether the log's file system has little space left. */
static bool space_short(evs_store *st)
{
    struct statvfs v;
    if (statvfs(st->logdir, &v) != 0)
        return false;
    uint64_t avail = (uint64_t)v.f_bavail * v.f_frsize, total = (uint64_t)v.f_blocks * v.f_frsize;
    return avail < REL_LOW_SEGMENTS * st->opt.segment_bytes || avail * 100 < total * REL_LOW_PCT;
}

/* fio_shrink_paced's pace: wait long enough that REL_STEP bytes a step stay within REL_RATE;
 * false once the releaser is stopping (the rest is cut at once, L3). */
static bool pace(void *arg)
{
    evs_store *st = arg;
    uint64_t ns = space_short(st) ? REL_URGENT_PAUSE_NS : FIO_SHRINK_STEP * 1000000000ull / REL_RATE;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ns += (uint64_t)ts.tv_nsec;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    pthread_mutex_lock(&st->rel_mu);
    while (!st->rel_stop && pthread_cond_timedwait(&st->rel_cv, &st->rel_mu, &ts) != ETIMEDOUT)
        ; /* woken by a new job, not by the time: wait on */
    bool go_on = !st->rel_stop;
    pthread_mutex_unlock(&st->rel_mu);
    return go_on;
}

static void run(evs_store *st, struct rel_job *j, bool paced)
{
    int fd = j->seg ? j->seg->fd : j->fd;
    int rc = fio_shrink_paced(st->io, fd, j->to, paced ? pace : NULL, st);
    if (rc)
        evs_log(st, EVS_LOG_WARN, "cannot give back the space of %s: %s",
                j->seg ? j->seg->name : j->path, strerror(-rc));
    if (j->seg) {
        store_seg_put(j->seg);
    } else {
        close(j->fd);
        if (unlink(j->path) && errno != ENOENT)
            evs_log(st, EVS_LOG_WARN, "cannot remove %s: %s", j->path, strerror(errno));
    }
    free(j);
}

/* Queue j, or (no thread: L3) run it now. */
static void submit(evs_store *st, struct rel_job *j)
{
    pthread_mutex_lock(&st->rel_mu);
    bool queued = st->rel_started && !st->rel_stop;
    if (queued) {
        if (st->rel_tail)
            st->rel_tail->next = j;
        else
            st->rel_head = j;
        st->rel_tail = j;
        pthread_cond_signal(&st->rel_cv);
    }
    pthread_mutex_unlock(&st->rel_mu);
    if (!queued)
        run(st, j, false);
}

void rel_cut(evs_store *st, segment *a, uint64_t len)
{
    struct rel_job *j = calloc(1, sizeof *j + 1);
    if (!j) {
        (void)st->io->ftruncate(a->fd, (off_t)len); /* as the job would, at once (L3) */
        return;
    }
    atomic_fetch_add(&a->refs, 1);
    j->seg = a;
    j->fd = -1;
    j->to = len;
    submit(st, j);
}

void rel_delete(evs_store *st, const char *path)
{
    size_t n = strlen(path) + 1;
    struct rel_job *j = malloc(sizeof *j + n);
    int fd = j ? st->io->open(path, O_WRONLY | O_CLOEXEC, 0) : -1;
    if (fd < 0) { /* nothing to free step by step: the unlink frees it all */
        free(j);
        unlink(path);
        return;
    }
    *j = (struct rel_job){.seg = NULL, .fd = fd, .to = 0};
    memcpy(j->path, path, n);
    submit(st, j);
}

static void *rel_main(void *arg)
{
    evs_store *st = arg;
    fio_thread_is_background();
    pthread_mutex_lock(&st->rel_mu);
    while (!st->rel_stop) {
        struct rel_job *j = st->rel_head;
        if (!j) {
            pthread_cond_wait(&st->rel_cv, &st->rel_mu);
            continue;
        }
        st->rel_head = j->next;
        if (!st->rel_head)
            st->rel_tail = NULL;
        pthread_mutex_unlock(&st->rel_mu);
        run(st, j, true);
        pthread_mutex_lock(&st->rel_mu);
    }
    pthread_mutex_unlock(&st->rel_mu);
    return NULL;
}

int rel_start(evs_store *st)
{
    int rc = pthread_create(&st->rel, NULL, rel_main, st);
    if (rc)
        return -rc;
    st->rel_started = true;
    return 0;
}

void rel_stop(evs_store *st)
{
    if (!st->rel_started)
        return;
    pthread_mutex_lock(&st->rel_mu);
    st->rel_stop = true;
    pthread_cond_broadcast(&st->rel_cv);
    pthread_mutex_unlock(&st->rel_mu);
    pthread_join(st->rel, NULL);
    st->rel_started = false;
    while (st->rel_head) { /* L3 */
        struct rel_job *j = st->rel_head;
        st->rel_head = j->next;
        run(st, j, false);
    }
    st->rel_tail = NULL;
}
