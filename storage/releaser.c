/*
 * releaser.c — disk space given back in the background: the unused zeros at the end of a
 * sealed segment (rel_cut, from the writer after a seal) and the files of the segments
 * retention deleted (rel_delete, after their rename to `.deleted`, once the last reference to
 * the segment is gone: store.c store_seg_put). One thread, one FIFO queue.
 *
 * Why here and paced: freeing blocks stalls every fdatasync on the same file system while it
 * runs, and a publish waits for one fdatasync. Measured with `perf trace` on this machine's
 * ext4 (mounted with `discard`): cutting a mostly empty 64 MiB sealed segment took 27-30 ms on
 * the writer's own thread; each 8 MiB freed from a deleted segment stalled the concurrent
 * fdatasync 2-6 ms (about 0.5 s of stalls per GiB freed, in steps of 1, 8 or 64 MiB alike).
 * Freed at 1.6 GB/s, a 1 GiB backlog raised the publish p99 at 10,000/s by half; at a fixed
 * 32 MiB/s, for the 35 s it took, it doubled it (docs/benchmarks.md, retention). So the pace
 * is set by the steps' own cost: after a step that took d, the releaser waits REL_DUTY × d, so
 * that freeing blocks occupies at most 1/(1 + REL_DUTY) of the time (0.5 %: below the 1 % of
 * publishes a p99 is made of) whatever the disk — on this one about 8 MiB/s, on a disk whose
 * frees cost nothing as fast as REL_MIN_PAUSE_NS allows, and never slower than a step a second.
 * Unless the file system is short of space (less free than REL_LOW_SEGMENTS segments, or
 * REL_LOW_PCT % of it): then a full disk is worse than a slow fsync, and the steps follow one
 * another REL_MIN_PAUSE_NS apart.
 *
 * Invariants:
 *  L1. Losing a queued job loses nothing: readers, backups and followers go by the records'
 *      end, never by a file's length, and a `.deleted` file holds no live byte (R3).
 *  L2. A job holds what it works on: a reference on the sealed segment (its fd stays open
 *      even if retention deletes it meanwhile), or an open fd of the deleted file.
 *  L3. Stopping drops the queued jobs (closing never waits for a paced release): their files
 *      stay as they are, `.deleted` or with zeros after a seal. A job that cannot be queued
 *      (no thread, no memory) is done at once, unpaced, by its caller.
 *  L4. Open hands what a stop or a crash left to the releaser again, which runs from before
 *      the log is listed: leftover `.deleted` files (store.c load_segments), zeros after a
 *      seal (seal_found).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define REL_DUTY 200                    /* pause after a step: this many times its duration */
#define REL_MIN_PAUSE_NS 5000000ull     /* ... at least this; only this when space is short */
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

/* fio_shrink_paced's pace: wait REL_DUTY times the step's own duration (at least
 * REL_MIN_PAUSE_NS, at most a second; only the least when space is short); false once the
 * releaser is stopping (the job stops where it is, L3). */
static bool pace(void *arg, uint64_t step_ns)
{
    evs_store *st = arg;
    uint64_t ns = step_ns > UINT64_MAX / REL_DUTY ? UINT64_MAX / 2 : step_ns * REL_DUTY;
    if (ns > 1000000000ull)
        ns = 1000000000ull; /* a slow disk: still 8 MiB a second at least */
    if (ns < REL_MIN_PAUSE_NS || space_short(st))
        ns = REL_MIN_PAUSE_NS;
    struct timespec ts = evs_deadline_ns(ns);
    pthread_mutex_lock(&st->rel_mu);
    while (!st->rel_stop && pthread_cond_timedwait(&st->rel_cv, &st->rel_mu, &ts) != ETIMEDOUT)
        ; /* woken by a new job, not by the time: wait on */
    bool go_on = !st->rel_stop;
    pthread_mutex_unlock(&st->rel_mu);
    return go_on; /* false: the job stops where it is, then the thread ends (L3) */
}

static void run(evs_store *st, struct rel_job *j, bool paced)
{
    int fd = j->seg ? j->seg->fd : j->fd;
    int rc = fio_shrink_paced(st->io, fd, j->to, paced ? pace : NULL, st);
    if (rc < 0)
        evs_log(st, EVS_LOG_WARN, "cannot give back the space of %s: %s",
                j->seg ? j->seg->name : j->path, strerror(-rc));
    if (j->seg) {
        store_seg_put_fd(j->seg);
    } else {
        close(j->fd);
        if (rc != 1 && unlink(j->path) && errno != ENOENT) /* 1: stopped, the next open's (L3) */
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
    store_seg_hold_fd(a); /* a cut: its descriptor only */
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
    int rc = thread_start(&st->rel, rel_main, st, "evs-releaser");
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
    while (st->rel_head) { /* L3: left for the next open (L4) */
        struct rel_job *j = st->rel_head;
        st->rel_head = j->next;
        if (j->seg)
            store_seg_put_fd(j->seg);
        else
            close(j->fd);
        free(j);
    }
    st->rel_tail = NULL;
}
