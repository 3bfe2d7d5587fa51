/*
 * replica.c — the leader's side of log shipping: reading the log's bytes as they are, whole
 * records at a time, for a follower (the follower's side is the writer's WR_REPLICA request).
 *
 * Invariants:
 *  L1. Only whole batches the writer has written are shipped (a segment's `written`, set after
 *      the batch's pwritev and before its sync, writer.c W8), so a follower's fsync runs
 *      alongside the leader's. A follower may then hold records a power cut takes from the
 *      leader: the leader's next open begins a new epoch (store.c, RUNNING) and the follower
 *      is told to cut them; its readers never see them before the leader's do (the leader's
 *      SHOWN messages cap them, docs/replication.md). The visibility cap (visible.c) does
 *      not apply here: followers get what readers here wait for (V3).
 *  L2. Shipped bytes begin at a record boundary and end at one, inside one segment.
 *  L3. Bytes the writer of this process appended (a segment's `whole_from` on, up to
 *      `written`) are whole records by construction, and end at a batch's end (W8): a span
 *      of them that fits the cap goes out once its first header says `pos` starts a record.
 *      Anything else is walked header by header — the span must be cut at a record
 *      boundary, or it lies in a file found on disk, where a damaged header stops the stream
 *      with the leader's own message instead of failing the follower's check. (The walk of
 *      every shipped header ran on the loop thread: 3 % of its samples at c50/P16 XADD with
 *      one follower, docs/benchmarks.md.)
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "crc.h"
#include "internal.h"

int evs_log_crc(evs_store *st, uint64_t *from, uint64_t to, size_t max, uint32_t *crc,
                evs_error *err)
{
    pthread_rwlock_rdlock(&st->lock);
    segment *g = NULL;
    for (size_t i = st->nsegs; to && i-- > 0;) {
        segment *c = st->segs[i];
        if (to > c->base && to <= c->base + atomic_load(&c->written)) {
            g = c;
            break;
        }
    }
    if (g && *from == UINT64_MAX)
        *from = to - g->base > max ? to - max : g->base;
    if (!g || *from < g->base || *from > to) {
        pthread_rwlock_unlock(&st->lock);
        return evs_err_set(err, EVS_ENOTFOUND, "log bytes [%" PRIu64 ", %" PRIu64 ") are not "
                           "in one segment here", *from, to);
    }
    atomic_fetch_add(&g->refs, 1);
    pthread_rwlock_unlock(&st->lock);
    const uint8_t *d = seg_data(g);
    int rc = 0;
    if (!d)
        rc = evs_err_set(err, -errno, "cannot map segment %s: %s", g->name, strerror(errno));
    else
        *crc = evs_crc32(0, d + (*from - g->base), (size_t)(to - *from));
    store_seg_put(g);
    return rc;
}

long evs_log_span(evs_store *st, uint64_t pos, size_t cap, uint64_t *at, int *fd, uint64_t *off,
                  void **hold, evs_error *err)
{
    pthread_rwlock_rdlock(&st->lock);
    if (st->nsegs == 0 || pos < st->segs[0]->base) {
        uint64_t start = st->nsegs ? st->segs[0]->base : 0;
        pthread_rwlock_unlock(&st->lock);
        return evs_err_set(err, EVS_ENOTFOUND, "log position %" PRIu64 " is below the log's "
                           "start %" PRIu64 " (retention deleted it)", pos, start);
    }
    segment *g = NULL;
    uint64_t size = 0;
    for (size_t i = st->nsegs; i-- > 0;) {
        segment *c = st->segs[i];
        uint64_t sz = atomic_load(&c->written);
        if (pos >= c->base && pos < c->base + sz) {
            g = c;
            size = sz;
            break;
        }
        if (pos >= c->base + sz && pos >= c->base) { /* at or past this segment's end */
            if (i + 1 < st->nsegs) {
                /* the next segment; it may start past a gap (a segment closed after corruption):
                 * the bytes go out from where they are, and a follower that cannot place them
                 * says so (WR_REPLICA: not contiguous) instead of waiting forever */
                g = st->segs[i + 1];
                size = atomic_load(&g->written);
                pos = g->base;
                if (!size)
                    g = NULL;
            } else if (i + 1 == st->nsegs && pos > c->base + sz) {
                pthread_rwlock_unlock(&st->lock);
                return evs_err_set(err, EVS_EINVAL, "log position %" PRIu64 " is past the log's "
                                   "end %" PRIu64, pos, c->base + sz);
            }
            break;
        }
    }
    if (!g) {
        pthread_rwlock_unlock(&st->lock);
        return 0; /* nothing new */
    }
    atomic_fetch_add(&g->refs, 1);
    pthread_rwlock_unlock(&st->lock);
    uint64_t avail = size - (pos - g->base), len = 0;
    long rc = 0;
    bool own = pos - g->base >= atomic_load(&g->whole_from) && avail <= cap; /* L3 */
    const uint8_t *d = seg_data(g);
    if (!d) {
        long e = evs_err_set(err, -errno, "cannot map segment %s: %s", g->name, strerror(errno));
        store_seg_put(g);
        return e;
    }
    d += pos - g->base;
    while (len < avail) {
        rec_hdr h;
        uint64_t sz;
        int c = rec_check_hdr(d + len, avail - len, &h, &sz);
        if (c != REC_OK) {
            rc = evs_err_set(err, len ? EVS_ECORRUPT : EVS_EINVAL,
                             "log position %" PRIu64 " in %s is not a record: %s", pos + len,
                             g->name, rec_check_str(c));
            break;
        }
        if (own) { /* pos is a record's start: the rest is the writer's own batches (L3) */
            len = avail;
            break;
        }
        if (len + sz > cap && len > 0) /* a larger first record goes alone */
            break;
        len += sz;
    }
    if (!len) {
        store_seg_put(g);
        return rc;
    }
    *at = pos; /* the records before a bad one go first; the next call reports it */
    *fd = g->fd;
    *off = pos - g->base;
    *hold = g;
    store_seg_hold_fd(g); /* from here on, its descriptor only (segment.c M2) */
    store_seg_put(g);
    return (long)len;
}

void evs_log_release(void *hold) { store_seg_put_fd(hold); }
