/*
 * checkpoint.c — the checkpointer thread: once the index has been quiet for a second (no
 * commit since the last look), or every CKPT_BUSY_NS while it never is, if it has committed
 * transactions since the last checkpoint, make the log durable, then the index, then record
 * the index's transaction in index.ckpt. Off the writer thread so that its fsyncs never stall
 * a publish.
 *
 * Why quiet: a checkpoint earns trust only if no commit follows it (store.c K2: after a
 * reboot the index is kept only when no commit followed the checkpoint),
 * so under a steady stream of commits a power cut costs a rebuild whatever the cadence, and
 * each checkpoint's index sync writes every page the second's commits touched: with keys
 * spread over the whole index (a filter value per entry among many) nearly all of it, each
 * second. Checkpointing once a second through a follower's 2 GiB catch-up was 10 % of its
 * time (docs/benchmarks.md, replication). A store that goes quiet is checkpointed a second
 * later, as before; CKPT_BUSY_NS keeps a busy one's index synced now and then all the same.
 *
 * Order is the invariant (I3, index never leads the log): every index transaction up to T
 * was committed after the log bytes it points at were written, so an fdatasync of the log
 * taken after reading T covers them; only then is the index synced and T recorded.
 * With --fsync no nothing is synced periodically (the OS decides); close still checkpoints.
 *
 * A full disk (or a process out of file descriptors) that refuses the new index.ckpt (written
 * to a temporary file, then renamed) does not fail the store: the log and the index are durable already, the old index.ckpt still
 * holds, and all a stale one costs is trust (store.c checkpoint_ok: after a reboot the index
 * is rebuilt from the log instead). It is logged once per episode and tried again.
 */
#include "index.h"
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

int ckpt_run(evs_store *st)
{
    if (atomic_load(&st->failed))
        return EVS_EFAILED;
    uint64_t t = idx_txnid(st->idx);
    if (t == atomic_load(&st->ckpt_txnid) && !atomic_load(&st->ckpt_open))
        return 0;
    prep_rolls_settle(st); /* D3: earlier segments' seals synced, the last one named */
    segment *a = NULL;
    pthread_rwlock_rdlock(&st->lock);
    if (st->nsegs) {
        a = st->segs[st->nsegs - 1];
        store_seg_hold_fd(a);
    }
    pthread_rwlock_unlock(&st->lock);
    int rc = a ? st->io->fdatasync(a->fd) : 0;
    if (rc)
        store_fail(st, rc, "fdatasync of segment %s failed", a->name);
    store_seg_put_fd(a);
    if (!rc && (rc = idx_sync(st->idx)))
        store_fail(st, rc, "index sync failed");
    bool transient = false; /* no room for the new file: nothing written, nothing at risk */
    if (!rc && (rc = store_checkpoint_write(st, t)) &&
        !(transient = rc == -ENOSPC || rc == -EDQUOT || rc == -EMFILE || rc == -ENFILE))
        store_fail(st, rc, "cannot write index checkpoint");
    if (transient) {
        if (!st->ckpt_nospace)
            evs_log(st, EVS_LOG_WARN, "cannot record the index checkpoint (%s): the index is "
                    "durable; after a reboot it is rebuilt from the log; tried again each "
                    "second", strerror(-rc));
        st->ckpt_nospace = true;
        return 0;
    }
    if (!rc && st->ckpt_nospace) {
        evs_log(st, EVS_LOG_INFO, "index checkpoint recorded again");
        st->ckpt_nospace = false;
    }
    return rc;
}

int ckpt_parse(const char *buf, size_t len, char fboot[64], uint64_t *txn, bool *open)
{
    const char *end = buf + len, *b = buf + 5;
    if (len < 5 || memcmp(buf, "boot ", 5))
        return -1;
    const char *nl = memchr(b, '\n', (size_t)(end - b));
    if (!nl || nl == b || nl - b > 63 || memchr(b, ' ', (size_t)(nl - b)) ||
        memchr(b, '\0', (size_t)(nl - b)))
        return -1;
    const char *t = nl + 1;
    const char *tnl = (size_t)(end - t) >= 4 && !memcmp(t, "txn ", 4)
                          ? memchr(t + 4, '\n', (size_t)(end - t - 4)) : NULL;
    if (!tnl || evs_parse_dec(t + 4, (size_t)(tnl - t - 4), txn))
        return -1;
    size_t rest = (size_t)(end - tnl - 1);
    *open = rest == 5 && !memcmp(tnl + 1, "open\n", 5);
    if (rest && !*open)
        return -1;
    memcpy(fboot, b, (size_t)(nl - b));
    fboot[nl - b] = 0;
    return 0;
}

size_t ckpt_format(char *out, size_t cap, const char *boot, uint64_t txn, bool open)
{
    int n = snprintf(out, cap, "boot %s\ntxn %" PRIu64 "\n%s", boot, txn, open ? "open\n" : "");
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

#define CKPT_TICK_NS 1000000000ull
#define CKPT_BUSY_NS 10000000000ull

void *ckpt_main(void *arg)
{
    evs_store *st = arg;
    fio_thread_is_background();
    uint64_t seen = idx_txnid(st->idx), last = evs_mono_ns();
    pthread_mutex_lock(&st->ckmu);
    while (!st->ck_stop) {
        struct timespec ts = evs_deadline_ns(CKPT_TICK_NS);
        pthread_cond_timedwait(&st->ckcv, &st->ckmu, &ts);
        if (st->ck_stop)
            break;
        pthread_mutex_unlock(&st->ckmu);
        uint64_t t = idx_txnid(st->idx), now = evs_mono_ns();
        bool quiet = t == seen; /* no commit since the last look */
        seen = t;
        if (st->opt.fsync != EVS_FSYNC_NO && (quiet || now - last >= CKPT_BUSY_NS)) {
            ckpt_run(st);
            last = now;
        }
        pthread_mutex_lock(&st->ckmu);
    }
    pthread_mutex_unlock(&st->ckmu);
    return NULL;
}
