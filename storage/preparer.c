/*
 * preparer.c — the next segment file, made ahead of time: a background thread keeps one
 * zero-filled, fsynced "log/spare.seg.tmp" ready, so that a roll is a rename, never minutes
 * of zeroing on the writer's path. Its failures are not the store's: the writer, finding no
 * spare, creates the segment itself and meets (and reports) the same error.
 */
#include "internal.h"

#include <time.h>

#define SPARE "spare.seg.tmp"

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
    pthread_mutex_lock(&st->prep_mu);
    while (!st->prep_stop) {
        if (!st->spare_ready && !atomic_load(&st->failed)) {
            pthread_mutex_unlock(&st->prep_mu);
            evs_error err;
            int rc = seg_prepare(st->io, st->logdir, SPARE, st->opt.segment_bytes, pace, st, &err);
            if (rc && rc != EVS_ECLOSED)
                evs_log(st, EVS_LOG_WARN, "cannot prepare the next segment ahead: %s", err.msg);
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

int prep_new_segment(evs_store *st, uint64_t base, segment **out, evs_error *err)
{
    pthread_mutex_lock(&st->prep_mu);
    bool take = st->spare_ready;
    st->spare_ready = false;
    pthread_mutex_unlock(&st->prep_mu);
    int rc = take ? seg_install(st->io, st->logdir, SPARE, base, out, err)
                  : seg_create(st->io, st->logdir, base, st->opt.segment_bytes, out, err);
    pthread_mutex_lock(&st->prep_mu);
    pthread_cond_signal(&st->prep_cv); /* make the next one */
    pthread_mutex_unlock(&st->prep_mu);
    return rc;
}
