/*
 * preparer.c — the next segment file, made ahead of time: a background thread keeps one
 * fsynced "log/spare.seg.tmp" ready — zero-filled with --fsync always, preallocated only
 * otherwise — so that a roll is a rename, never minutes of zeroing on the writer's path. Its
 * failures are not the store's: the writer, finding no spare (the log fills faster than the
 * spare is made, as in a follower's catch-up), makes the file itself, preallocated but not
 * zero-filled, and meets (and reports) the same error.
 *
 * A roll reserves the next file (prep_reserve) before it seals the active segment and
 * renames it into place (prep_install) after: a full disk is met before anything is written,
 * so the writer can refuse the request (EVS_ENOSPACE) and stay writable.
 */
#include "internal.h"

#include <time.h>

#define SPARE "spare.seg.tmp"
#define NEXT "next.seg.tmp" /* made by the writer when no spare is ready */

/*
 * Between chunks: stop if the store is closing; otherwise pause 4 ms (at most ~60 MiB/s of
 * zeros, a 64 MiB spare in about a second, and the disk mostly free for the writer's syncs)
 * unless the active segment is past half full, when the spare may soon be needed.
 */
static bool pace(void *arg)
{
    evs_store *st = arg;
    pthread_mutex_lock(&st->prep_mu);
    bool stop = st->prep_stop;
    if (!stop && atomic_load(&st->active_used) < st->opt.segment_bytes / 2) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 4000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&st->prep_cv, &st->prep_mu, &ts);
        stop = st->prep_stop;
    }
    pthread_mutex_unlock(&st->prep_mu);
    return !stop;
}

static void *prep_main(void *arg)
{
    evs_store *st = arg;
    fio_thread_is_background();
    bool warned = false; /* once per run of failures (a full disk retries every second) */
    pthread_mutex_lock(&st->prep_mu);
    while (!st->prep_stop) {
        if (!st->spare_ready && !st->spare_held && !atomic_load(&st->failed)) {
            pthread_mutex_unlock(&st->prep_mu);
            evs_error err;
            /* zeros only where every batch is synced: with --fsync no or everysec, writes into
             * preallocated (unwritten) extents cost no per-batch metadata sync, and zeroing
             * would double what goes to the disk */
            int rc = seg_prepare(st->io, st->logdir, SPARE, st->opt.segment_bytes,
                                 st->opt.fsync == EVS_FSYNC_ALWAYS, pace, st, &err);
            if (rc && rc != EVS_ECLOSED && !warned)
                evs_log(st, EVS_LOG_WARN, "cannot prepare the next segment ahead: %s", err.msg);
            warned = rc != 0;
            pthread_mutex_lock(&st->prep_mu);
            if (!rc) {
                st->spare_ready = true;
                continue;
            }
            if (st->prep_stop)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&st->prep_cv, &st->prep_mu, &ts);
            continue;
        }
        pthread_cond_wait(&st->prep_cv, &st->prep_mu);
    }
    pthread_mutex_unlock(&st->prep_mu);
    return NULL;
}

int prep_start(evs_store *st)
{
    int rc = pthread_create(&st->prep, NULL, prep_main, st);
    if (rc == 0)
        st->prep_started = true;
    return -rc;
}

void prep_stop(evs_store *st)
{
    if (!st->prep_started)
        return;
    pthread_mutex_lock(&st->prep_mu);
    st->prep_stop = true;
    pthread_cond_signal(&st->prep_cv);
    pthread_mutex_unlock(&st->prep_mu);
    pthread_join(st->prep, NULL);
    st->prep_started = false;
}

/* P1: the writer may hold the spare (taken, not yet renamed) across a seal's write and sync;
 * the preparer never makes a new one over it until prep_install releases it. */
int prep_reserve(evs_store *st, const char **tmpname, evs_error *err)
{
    pthread_mutex_lock(&st->prep_mu);
    bool take = st->spare_ready;
    st->spare_ready = false;
    st->spare_held = take;
    pthread_mutex_unlock(&st->prep_mu);
    if (take) {
        *tmpname = SPARE;
        return 0;
    }
    /* no spare (the log fills faster than the preparer zero-fills, as in a follower's
     * catch-up): preallocated only, so that the roll takes milliseconds, not the seconds of
     * writing a segment of zeros on the writer's path */
    int rc = seg_prepare(st->io, st->logdir, NEXT, st->opt.segment_bytes, false, NULL, NULL, err);
    if (!rc)
        *tmpname = NEXT;
    return rc;
}

int prep_install(evs_store *st, const char *tmpname, uint64_t base, segment **out,
                 evs_error *err)
{
    int rc = seg_install(st->io, st->logdir, tmpname, base, out, err);
    pthread_mutex_lock(&st->prep_mu);
    st->spare_held = false;
    pthread_cond_signal(&st->prep_cv); /* make the next one */
    pthread_mutex_unlock(&st->prep_mu);
    return rc;
}

int prep_new_segment(evs_store *st, uint64_t base, segment **out, evs_error *err)
{
    const char *tmp;
    int rc = prep_reserve(st, &tmp, err);
    return rc ? rc : prep_install(st, tmp, base, out, err);
}
