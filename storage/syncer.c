/*
 * syncer.c — the syncer thread: one fdatasync at a time, off the writer thread, so that a
 * follower catching up writes (and indexes) its next write batch while the last one syncs
 * (writer.c W10). Before it, a follower's writer spent about half a catch-up waiting in its
 * own fdatasyncs, one after each batch, with the CPU idle (docs/benchmarks.md).
 *
 * Invariants:
 *  Y1. At most one job: the writer hands one (syncer_submit) only when none is in flight, and
 *      collects its result (syncer_wait) before it writes or syncs anything else in that
 *      segment's place (a roll, a forced sync, any other request) or lets go of its role
 *      with nothing queued.
 *  Y2. The job holds a reference to its segment until the writer collects it.
 *  Y3. A failed sync fails the store here (store_fail, W3) before the writer learns of it: the
 *      writer then acknowledges none of the batch's requests.
 */
#include "internal.h"

static void *syncer_main(void *arg)
{
    evs_store *st = arg;
    pthread_mutex_lock(&st->sy_mu);
    for (;;) {
        while (!st->sy_seg && !st->sy_stop)
            pthread_cond_wait(&st->sy_cv, &st->sy_mu);
        if (!st->sy_seg)
            break;
        segment *s = st->sy_seg;
        pthread_mutex_unlock(&st->sy_mu);
        int rc = store_fdatasync_timed(st, s->fd);
        if (rc) /* Y3 */
            store_fail(st, rc, "fdatasync of segment %s failed", s->name);
        pthread_mutex_lock(&st->sy_mu);
        st->sy_rc = rc;
        st->sy_seg = NULL;
        st->sy_done = true;
        pthread_cond_broadcast(&st->sy_cv);
    }
    pthread_mutex_unlock(&st->sy_mu);
    return NULL;
}

int syncer_ensure(evs_store *st)
{
    if (st->sy_started)
        return 0;
    int rc = thread_start(&st->sy_thread, syncer_main, st, "evs-syncer");
    if (rc)
        return -rc;
    st->sy_started = true;
    return 0;
}

void syncer_submit(evs_store *st, segment *s, uint64_t end)
{
    store_seg_hold_fd(s); /* Y2 */
    pthread_mutex_lock(&st->sy_mu);
    st->sy_seg = s;
    st->sy_done = false;
    pthread_cond_signal(&st->sy_cv);
    pthread_mutex_unlock(&st->sy_mu);
    st->sy_end = end;
    st->sy_ref = s;
    atomic_fetch_add(&st->n_fsyncs_overlapped, 1);
}

int syncer_wait(evs_store *st)
{
    pthread_mutex_lock(&st->sy_mu);
    while (!st->sy_done)
        pthread_cond_wait(&st->sy_cv, &st->sy_mu);
    int rc = st->sy_rc;
    pthread_mutex_unlock(&st->sy_mu);
    store_seg_put_fd(st->sy_ref);
    st->sy_ref = NULL;
    st->sy_end = 0;
    return rc;
}

void syncer_stop(evs_store *st)
{
    if (!st->sy_started)
        return;
    pthread_mutex_lock(&st->sy_mu);
    st->sy_stop = true;
    pthread_cond_signal(&st->sy_cv);
    pthread_mutex_unlock(&st->sy_mu);
    pthread_join(st->sy_thread, NULL);
    st->sy_started = false;
}
