/*
 * indexer.c — the indexer thread: applies the writer's index batches to LMDB off the writer's
 * path, so that the next batch of the log is written and synced while the last one's index
 * transaction runs (a follower catching up on 1,000 streams with random sources spent 46 % of
 * its writer's time in LMDB puts and commits, measured).
 *
 * Invariants:
 *  X1. Index transactions are applied in the order the writer built them: at most one batch is
 *      in the indexer's hands, and the next is handed over, or applied by the writer role
 *      itself, only once it is applied (indexer_put waits).
 *  X2. A batch is handed over after the log bytes it points at were written (the writer
 *      builds it after the batch's pwritev): the index never leads the log (I3), and the
 *      checkpointer's "fdatasync the log after reading the transaction id" still covers them.
 *  X3. A commit that readers must see before a request completes (a tombstone, an idempotency
 *      key, retention's deletes before its files go, close) is applied by the caller, after
 *      the batch in the indexer's hands: indexer_put(sync = true) returns once it is visible.
 *  X4. A failed apply fails the store (sticky, W3); no batch is applied after it.
 *  X5. A commit that falls due while the indexer is busy waits in the writer's batch (up to
 *      EVS_INDEX_DEFER_RECORDS records, then the writer waits): the indexer, once free, wakes
 *      the writer thread to hand it over. So the log is never held up by the index unless
 *      the index falls that far behind, and a later commit carries more records per
 *      transaction (fewer page copies per key in LMDB).
 * Readers are unaffected: each read transaction sees a watermark and the entries below it
 * together, and walks the log past it, as before.
 */
#include "index.h"
#include "internal.h"

#include <errno.h>

/* Commit batch b to LMDB, index.ckpt marked open first (store.c K1; an empty batch commits
 * nothing, so it marks nothing). */
static int commit(evs_store *st, struct idx_batch *b, evs_error *err)
{
    if (!idx_batch_empty(b))
        store_checkpoint_open(st);
    return idx_apply(st->idx, b, err);
}

static void *ixr_main(void *arg)
{
    evs_store *st = arg;
    pthread_mutex_lock(&st->ixmu);
    for (;;) {
        while (!st->ix_busy && !st->ix_stop)
            pthread_cond_wait(&st->ixcv, &st->ixmu);
        if (!st->ix_busy)
            break;
        struct idx_batch *b = st->ix_batch;
        uint64_t end = st->ix_end;
        pthread_mutex_unlock(&st->ixmu);
        evs_error err = {0};
        int rc = atomic_load(&st->failed) ? EVS_EFAILED : commit(st, b, &err); /* X4 */
        if (rc == 0)
            atomic_store(&st->idx_end, end);
        else if (rc != EVS_EFAILED)
            store_fail(st, rc, "index update failed: %s", err.msg);
        idx_batch_clear(b);
        pthread_mutex_lock(&st->ixmu);
        atomic_store(&st->ix_busy, false);
        pthread_cond_broadcast(&st->ixcv);
        if (atomic_exchange(&st->ix_deferred, false)) { /* X5: the writer's turn now */
            pthread_mutex_lock(&st->qmu);
            st->wkick = true;
            pthread_cond_signal(&st->qcv);
            pthread_mutex_unlock(&st->qmu);
        }
    }
    pthread_mutex_unlock(&st->ixmu);
    return NULL;
}

int indexer_start(evs_store *st)
{
    st->ix_batch = idx_batch_new();
    if (!st->ix_batch)
        return -ENOMEM;
    int rc = thread_start(&st->ixr, ixr_main, st, "evs-indexer");
    if (rc)
        return -rc;
    st->ixr_started = true;
    return 0;
}

void indexer_stop(evs_store *st)
{
    if (st->ixr_started) {
        pthread_mutex_lock(&st->ixmu);
        st->ix_stop = true;
        pthread_cond_broadcast(&st->ixcv);
        pthread_mutex_unlock(&st->ixmu);
        pthread_join(st->ixr, NULL); /* it finishes the batch in its hands first */
        st->ixr_started = false;
    }
    idx_batch_free(st->ix_batch);
    st->ix_batch = NULL;
}

void indexer_wait(evs_store *st)
{
    if (!st->ixr_started)
        return;
    pthread_mutex_lock(&st->ixmu);
    while (st->ix_busy)
        pthread_cond_wait(&st->ixcv, &st->ixmu);
    pthread_mutex_unlock(&st->ixmu);
}

int indexer_put(evs_store *st, bool sync, evs_error *err)
{
    if (st->ixr_started) {
        pthread_mutex_lock(&st->ixmu);
        while (st->ix_busy) /* X1 */
            pthread_cond_wait(&st->ixcv, &st->ixmu);
        if (!sync) { /* hand it over: the writer goes on with the emptied batch */
            struct idx_batch *b = st->ix_batch;
            st->ix_batch = st->ib;
            st->ix_ops = idx_batch_count(st->ib);
            st->ix_end = st->ib_end;
            st->ib = b;
            atomic_store(&st->ix_busy, true);
            pthread_cond_broadcast(&st->ixcv);
        }
        pthread_mutex_unlock(&st->ixmu);
        if (!sync)
            return 0;
    }
    if (atomic_load(&st->failed)) { /* X4: the indexer's failure, met after the wait */
        idx_batch_clear(st->ib);
        return EVS_EFAILED;
    }
    int rc = commit(st, st->ib, err); /* X3 */
    if (rc == 0)
        atomic_store(&st->idx_end, st->ib_end);
    idx_batch_clear(st->ib);
    return rc;
}
