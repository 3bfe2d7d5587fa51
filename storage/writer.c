/*
 * writer.c — the writer's role and group commit, and the append API on top of it.
 *
 * The role's loop: take everything queued; turn each request into records (assigning IDs, log
 * positions and back-pointers, validating first so that a request is all or nothing); write
 * the batch with one pwritev; fdatasync it (fsync=always); index it in one LMDB transaction;
 * publish the new stream states to readers; acknowledge every request of the batch. The next
 * batch starts only after that, so at most one batch is ever in flight and a torn tail can
 * only be (part of) the last batch. Batches grow with load by themselves: no timer.
 *
 * Invariants:
 *  W1. A request's records are contiguous; all but its last carry REC_F_TXN_CONT, so recovery
 *      can drop a group whose end never reached the disk.
 *  W2. No acknowledgement before the batch is written, synced as the mode requires, indexed
 *      and published.
 *  W3. After any write, sync or index error the store is failed for good (store_fail):
 *      queued and future requests get EVS_EFAILED, nothing more is written.
 *  W4. A segment is rolled only between requests, after its seal record is written; a file
 *      gets a segment's name only after its predecessor's seal is synced (at once with
 *      --fsync always; by the preparer, in order, otherwise: preparer.c D1-D4).
 *  W5. A roll reserves the next file's space before it writes the seal: a full disk refuses
 *      the request that needed the roll (EVS_ENOSPACE), writes nothing, and the store stays
 *      writable; the next request tries again.
 *  W6. Everything the loop touches is (W) state, touched only by the holder of st->rolemu:
 *      the writer thread, or a caller of evs_submit_release_inline that found it free. A
 *      holder takes the queue whole and processes it before it lets go, so requests are
 *      batched in submission order whoever runs them; whoever lets go publishes when the
 *      timed work falls due (wdue_ns), so the writer thread never sleeps past it.
 *  W7. A record carries REC_F_SYNCED when it is emitted at synced_to (moved by each completed
 *      fdatasync, and set at open to the recovered end) or at its segment's start. Under
 *      --fsync always that is every write batch's first record. The first record written
 *      after any sync of ours has it, so bytes a sync made durable are followed by a flagged
 *      record as soon as anything follows them at all: recovery never cuts them as a torn
 *      tail when something was written after them. Set where they were not (an open after a
 *      kill -9 during a sync finds that batch whole in the page cache), it only makes
 *      recovery report a power cut's hole as corruption, the safe side (store.c R1).
 *  W8. A segment's `written` moves to a batch's end once the whole batch is written (and
 *      mapped), before its sync; `size` follows once the batch is published. The written
 *      hook runs then, when a sync is to follow: replication ships the batch while this
 *      thread syncs it (replica.c L1). Nothing but shipping reads `written`.
 *  W9. An epoch an unclean stop left due (store.c open_marks) is begun before the first
 *      request that may write a record is processed: its history durably first (E1), then
 *      its REC_EPOCH record in a batch of its own, synced as the fsync mode says (a lost
 *      record only moves the epoch's start to the recovered end, epochs_reconcile). An
 *      explicit epoch (WR_EPOCH) settles it instead.
 *  W10. A follower's batch due for a sync goes to the syncer thread (syncer.c) when more of
 *      the leader's frames wait to be written (a catch-up): this thread writes and indexes the
 *      next batch meanwhile. At most one is in flight (Y1), so at most two unsynced batches lie
 *      at the log's end (store.c R2 allows for two). Its streams are held behind the sync cap
 *      (visible.c V6) and its requests acknowledged only once its sync is collected, in
 *      order, here (sync_collect): before the next batch's sync, before any request that is
 *      not a frame, and whenever the role is let go with nothing queued. Everywhere else, and
 *      with nothing waiting (a follower keeping up), the writer syncs as it always did.
 *  W11. Every request that writes records first makes room for the most it writes (room_for:
 *      a roll, or blocks added with fallocate when one request alone outgrows a fresh
 *      segment), so a full disk refuses that request (EVS_ENOSPACE, nothing written) instead
 *      of failing a write, and the store, past the file's blocks. The most is exact for
 *      appends and bounded for stream operations (op_room); a consumer-group operation counts
 *      GROUP_ROOM and retention's group snapshots 64 bytes per pending entry, which a very
 *      large one can exceed (it then grows the file as before). Only the requests that free
 *      space (trims, stream deletions, retention's) and a new epoch may roll into the space
 *      reserve (preparer.c P2); ordinary ones are refused while the reserve or the index's
 *      headroom (keep_index_headroom) cannot be had.
 */
#include "crc.h"
#include "group.h"
#include "index.h"
#include "internal.h"
#include "postings.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct brec {
    size_t hdr_off;          /* into st->hdrs: header (and, for small records, the body)      */
    size_t hdr_len;          /* bytes at hdr_off                                              */
    const uint8_t *body;     /* external body (entries), or NULL                              */
    uint32_t body_len, pad;
};

static const uint8_t zero_pad[REC_ALIGN];

void store_fail(evs_store *st, int code, const char *fmt, ...)
{
    pthread_mutex_lock(&st->failmu);
    if (atomic_load(&st->failed)) {
        pthread_mutex_unlock(&st->failmu);
        return;
    }
    st->fail_err.code = EVS_EFAILED;
    va_list ap;
    va_start(ap, fmt);
    char buf[400];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    snprintf(st->fail_err.msg, sizeof st->fail_err.msg, "%s (%s); writes refused until restart",
             buf, evs_strerror(code));
    atomic_store(&st->failed, EVS_EFAILED);
    pthread_mutex_unlock(&st->failmu);
    evs_log(st, EVS_LOG_ERROR, "%s", st->fail_err.msg);
}

void wreq_free(wreq *r)
{
    if (!r)
        return;
    rec_buf_release(&r->data);
    rec_buf_release(&r->carry);
    free(r->ops);
    free(r->ids);
    free(r->rcs);
    free(r->watch);
    if (r->kind == WR_GROUP)
        group_results_free(r);
    free(r);
}

/*
 * Request pool. An append request's buffers are allocated by the submitting thread and freed
 * by the writer; with glibc that cross-thread churn trimmed the heap on nearly every free
 * and faulted fresh pages back in on the next request (a third of a one-thread append's time
 * in brk, page faults and TLB shootdowns, measured). Finished append and replicated-frame
 * requests are kept, up to EVS_POOL_BYTES of buffers, and reused with their capacity.
 * P1: a pooled request is on no queue and referenced by nobody; everything but its buffers
 *     is cleared before reuse, and each of its ops is set whole by the one who takes it.
 * P2: the role gives finished requests back once per turn (recycle_done, at run_role's end),
 *     under one lock, not one lock each: with the writer thread on one core taking the pool's
 *     lock per request and the server's loop on the other taking it per XADD, the lock's
 *     cache line went back and forth twice an XADD (the writer's mutex calls were a quarter
 *     of its samples with a follower connected: docs/benchmarks.md, "Replication").
 */
#define EVS_POOL_BYTES (8u << 20)
static size_t wreq_bytes(const wreq *r)
{
    return r->data.cap + r->opcap * (sizeof *r->ops + sizeof *r->ids) + sizeof *r;
}

/* P2: the role's finished requests back to the pool, as many as its bytes allow; the rest
 * freed. The role's thread only. */
static void recycle_done(evs_store *st)
{
    wreq *list = st->done_reqs, *drop = NULL;
    st->done_reqs = NULL;
    if (!list)
        return;
    for (wreq *r = list; r; r = r->done_next) { /* what no reuse keeps: outside the lock */
        free(r->watch);
        r->watch = NULL;
        free(r->rcs);
        r->rcs = NULL;
        rec_buf_release(&r->carry);
    }
    pthread_mutex_lock(&st->poolmu);
    while (list) {
        wreq *r = list;
        list = r->done_next;
        size_t b = wreq_bytes(r);
        if (st->pool_bytes + b <= EVS_POOL_BYTES) {
            r->next = st->pool;
            st->pool = r;
            st->pool_bytes += b;
        } else {
            r->done_next = drop;
            drop = r;
        }
    }
    pthread_mutex_unlock(&st->poolmu);
    while (drop) {
        wreq *r = drop;
        drop = r->done_next;
        wreq_free(r);
    }
}

/* An append request with room for n operations, from the pool if it has one: cleared but
 * for its ops, which the caller sets (a memset of them all was 8 % of a submission). */
static wreq *wreq_pooled(evs_store *st, size_t n)
{
    pthread_mutex_lock(&st->poolmu);
    wreq *r = st->pool;
    if (r) {
        st->pool = r->next;
        st->pool_bytes -= wreq_bytes(r);
    }
    pthread_mutex_unlock(&st->poolmu);
    if (!r)
        return NULL;
    wreq keep = {.opcap = r->opcap, .ops = r->ops, .ids = r->ids, .data = r->data};
    *r = keep;
    r->data.len = 0;
    if (r->opcap < n) {
        wop *o = realloc(r->ops, n * sizeof *o);
        if (o)
            r->ops = o;
        evs_id *i = o ? realloc(r->ids, n * sizeof *i) : NULL;
        if (i)
            r->ids = i;
        if (!o || !i) {
            wreq_free(r);
            return NULL;
        }
        r->opcap = n;
    }
    r->kind = WR_APPEND;
    r->n = n;
    return r;
}

void wreq_pool_drain(evs_store *st)
{
    recycle_done(st); /* (none: every turn gives its own back) */
    while (st->pool) {
        wreq *r = st->pool;
        st->pool = r->next;
        wreq_free(r);
    }
    st->pool_bytes = 0;
}

/* Appends report their IDs; deletes and drops report their count as n (with ids NULL). */
static void finish(wreq *r, int rc, const evs_error *err)
{
    if (r->kind == WR_GROUP) {
        if (r->gdone)
            r->gdone(r->arg, rc, rc ? NULL : r->gres, rc ? 0 : r->n, err);
    } else if (r->edone) {
        r->edone(r->arg, rc, rc ? NULL : r->rcs, rc ? NULL : r->ids, rc ? 0 : r->n, err);
    } else if (r->done) {
        if (r->kind == WR_APPEND)
            r->done(r->arg, rc, rc ? NULL : r->ids, rc ? 0 : r->n, err);
        else
            r->done(r->arg, rc, NULL, rc ? 0 : r->count, err);
    }
    if (r->pool) { /* P2: at the role's turn's end */
        r->done_next = r->pool->done_reqs;
        r->pool->done_reqs = r;
    } else {
        wreq_free(r);
    }
}

static void finish_failed(evs_store *st, wreq *r)
{
    finish(r, EVS_EFAILED, &st->fail_err);
}

/* ---- building records -------------------------------------------------------------------- */

static struct brec *brec_add(evs_store *st)
{
    if (arr_room(&st->brecs, st->nbrecs, &st->brecap, sizeof *st->brecs, 256))
        return NULL;
    return &st->brecs[st->nbrecs++];
}

/*
 * Add one record to the batch and apply it. `body` is either external (kept alive by the
 * request until the batch is acknowledged; only bodies over EVS_INLINE_BODY stay external) or
 * copied into the batch's header buffer.
 */
static int emit_at(evs_store *st, uint8_t kind, uint16_t flags, uint32_t stream_no, evs_id id,
                   uint64_t prev, const uint8_t *body, uint32_t body_len, bool external,
                   const wop *hint, uint64_t time_us, evs_error *err);

/* B1. s->bents lists the entries the batch being built appends to s, in order: every entry
 *     record emit_at() writes (a relocation's copies aside) is added once applied, and the
 *     list starts empty at the stream's first record of a batch (store.c touch_state). A list
 *     that could not grow is marked incomplete (UINT32_MAX) until the next batch.
 * B2. A trim that removes every written entry continues over that list (plan_trim) instead
 *     of flushing the batch to read them back, and only when the list is whole: as many
 *     entries as the stream's entries_added grew by since its last written state (else it
 *     flushes, as before). */
static void batch_ent_add(stream *s, evs_id id, uint64_t pos, uint64_t size)
{
    if (!s || s->nbents == UINT32_MAX)
        return;
    if (s->nbents == s->bentcap) {
        uint32_t cap = s->bentcap ? s->bentcap * 2 : 2; /* most streams get one or two */
        batch_ent *b = cap > s->bentcap ? realloc(s->bents, cap * sizeof *b) : NULL;
        if (!b) {
            s->nbents = UINT32_MAX; /* incomplete: trims flush (B2) */
            return;
        }
        s->bents = b;
        s->bentcap = cap;
    }
    s->bents[s->nbents++] = (batch_ent){id, pos, size};
}

static int emit(evs_store *st, uint8_t kind, uint16_t flags, uint32_t stream_no, evs_id id,
                uint64_t prev, const uint8_t *body, uint32_t body_len, bool external,
                const wop *hint, evs_error *err)
{
    return emit_at(st, kind, flags, stream_no, id, prev, body, body_len, external, hint, 0, err);
}

/* emit() with the append time given (a moved copy keeps its original's, S2); 0: now. */
static int emit_at(evs_store *st, uint8_t kind, uint16_t flags, uint32_t stream_no, evs_id id,
                   uint64_t prev, const uint8_t *body, uint32_t body_len, bool external,
                   const wop *hint, uint64_t time_us, evs_error *err)
{
    if (st->nbrecs == 0)
        st->batch_start = st->tail;
    if (external && body_len <= EVS_INLINE_BODY)
        external = false; /* copied next to its header: one CRC pass, one iovec */
    uint64_t now = st->req_now_us ? st->req_now_us : evs_now_us();
    if (now < st->last_time_us)
        now = st->last_time_us;
    if (st->tail == st->synced_to || (st->active && st->tail == st->active->base))
        flags |= REC_F_SYNCED; /* W7 */
    rec_hdr h = {REC_MAGIC, 0, body_len, kind, REC_VERSION, flags, stream_no, st->epoch,
                 id.ms, id.seq, time_us ? time_us : now, prev};
    if (st->active && st->tail == st->active->base)
        atomic_store(&st->active_first_us, now); /* retention's roll-by-age clock */
    uint64_t size = rec_size_for(body_len);
    uint32_t pad = (uint32_t)(size - REC_HDR_SIZE - body_len);
    size_t inline_len = external ? REC_HDR_SIZE : (size_t)size;
    struct brec *b = brec_add(st);
    if (!b || rec_buf_reserve(&st->hdrs, inline_len))
        return evs_err_set(err, -ENOMEM, "out of memory");
    uint8_t *hp = st->hdrs.data + st->hdrs.len;
    rec_hdr_encode(&h, hp);
    if (!external) {
        if (pad) /* body and padding end on a word: zero that word, then the body over it */
            memset(hp + size - 8, 0, 8);
        memcpy(hp + REC_HDR_SIZE, body, body_len);
        h.crc = evs_crc32(0, hp + 8, size - 8);
    } else {
        h.crc = rec_crc(hp, body, body_len);
    }
    rec_hdr_set_crc(hp, h.crc);
    b->hdr_off = st->hdrs.len;
    b->hdr_len = inline_len;
    b->body = external ? body : NULL;
    b->body_len = body_len;
    b->pad = pad;
    st->hdrs.len += inline_len;
    st->batch_bytes += size;
    st->batch_records++;
    st->batch_entries += kind == REC_ENTRY;
    uint64_t pos = st->tail;
    int rc = store_apply_record_hint(st, &h, external ? body : hp + REC_HDR_SIZE, pos, size,
                                     hint, err);
    if (!rc && kind == REC_ENTRY && !(flags & REC_F_MOVED))
        batch_ent_add(numtab_get(&st->byno, stream_no), id, pos, size);
    return rc;
}

static int emit_stream_op(evs_store *st, uint16_t flags, int op, uint32_t no, evs_slice name,
                          const uint64_t *extra, size_t nextra, evs_error *err)
{
    rec_buf b = {0};
    if (rec_stream_encode(&b, op, name, extra, nextra)) {
        rec_buf_release(&b);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    int rc = emit(st, REC_STREAM, flags, no, EVS_ID_MIN, REC_POS_NONE, b.data, (uint32_t)b.len,
                  false, NULL, err);
    rec_buf_release(&b);
    return rc;
}

/* ---- IDs --------------------------------------------------------------------------------- */

/* Redis's order: an explicit 0-0 is refused first, then any ID once the stream's last ID is
 * the largest there is, then an ID not above the last. */
static int next_id(evs_id last, const wop *op, uint64_t now_ms, evs_id *out)
{
    if (op->id_mode == EVS_ID_EXPLICIT && op->id.ms == 0 && op->id.seq == 0)
        return EVS_EIDZERO;
    if (last.ms == UINT64_MAX && last.seq == UINT64_MAX)
        return EVS_EIDEXHAUSTED;
    switch (op->id_mode) {
    case EVS_ID_EXPLICIT:
        if (evs_id_cmp(op->id, last) <= 0)
            return EVS_EIDORDER;
        *out = op->id;
        return 0;
    case EVS_ID_AUTO_SEQ:
        if (op->id.ms < last.ms)
            return EVS_EIDORDER;
        if (op->id.ms == last.ms) {
            if (last.seq == UINT64_MAX)
                return EVS_EIDORDER; /* (Redis 7.0: its reply here depends on a stale errno) */
            *out = (evs_id){last.ms, last.seq + 1};
        } else {
            *out = (evs_id){op->id.ms, op->id.ms == 0 ? 1 : 0};
        }
        return 0;
    default:
        if (now_ms > last.ms) {
            *out = (evs_id){now_ms, 0};
        } else if (last.seq < UINT64_MAX) {
            *out = (evs_id){last.ms, last.seq + 1};
        } else {
            *out = (evs_id){last.ms + 1, 0}; /* (last.ms < UINT64_MAX: not exhausted) */
        }
        return 0;
    }
}

/* ---- primitives for group_exec.c --------------------------------------------------------- */

int writer_emit_copy(evs_store *st, uint8_t kind, uint16_t flags, uint32_t no, evs_id id,
                     uint64_t prev, const uint8_t *body, uint32_t len, evs_error *err)
{
    return emit(st, kind, flags, no, id, prev, body, len, false, NULL, err);
}

int writer_stream_create(evs_store *st, evs_slice name, uint16_t flags, stream **out,
                         evs_error *err)
{
    uint32_t no = st->next_no;
    if (no >= EVS_STREAM_NO_MAX) {
        *out = NULL;
        return evs_err_set(err, EVS_ETOOBIG, EVS_STREAM_NO_MSG);
    }
    int rc = emit_stream_op(st, flags, REC_STREAM_CREATE, no, name, NULL, 0, err);
    *out = rc ? NULL : numtab_get(&st->byno, no);
    return rc;
}


int writer_entry_auto(evs_store *st, stream *s, const uint8_t *body, uint32_t len,
                      uint16_t flags, evs_id *id, evs_error *err)
{
    wop op = {.id_mode = EVS_ID_AUTO};
    int rc = next_id(s->w.last_id, &op, evs_now_us() / 1000, id);
    if (rc)
        return evs_err_set(err, rc, "%s", evs_strerror(rc));
    return emit(st, REC_ENTRY, flags, s->no, *id, s->w.last_pos, body, len, false, NULL, err);
}

size_t writer_mark(evs_store *st) { return st->nbrecs; }

void writer_txn_close(evs_store *st, size_t mark)
{
    if (st->nbrecs <= mark)
        return;
    struct brec *b = &st->brecs[st->nbrecs - 1];
    uint8_t *hp = st->hdrs.data + b->hdr_off;
    rec_hdr h;
    rec_hdr_decode(hp, &h);
    if (!(h.flags & REC_F_TXN_CONT) || b->body) /* external bodies are never left open */
        return;
    h.flags &= (uint16_t)~REC_F_TXN_CONT;
    rec_hdr_encode(&h, hp);
    h.crc = rec_crc(hp, hp + REC_HDR_SIZE, h.body_len);
    rec_hdr_encode(&h, hp);
    st->last_crc = h.crc; /* the watermark names this record */
}

/* ---- flushing a batch -------------------------------------------------------------------- */

typedef struct pending pending; /* internal.h: st->pend */

/* Room for n more requests in p (its capacity doubles as it grows). */
static int pending_room(pending *p, size_t n)
{
    if (p->n + n <= p->cap)
        return 0;
    size_t cap = p->cap ? p->cap * 2 : 64;
    while (cap < p->n + n)
        cap *= 2;
    wreq **a = realloc(p->r, cap * sizeof *a);
    if (!a)
        return -ENOMEM;
    p->r = a;
    p->cap = cap;
    return 0;
}

static int pending_add(pending *p, wreq *r)
{
    if (pending_room(p, 1))
        return -ENOMEM;
    p->r[p->n++] = r;
    return 0;
}

/* The bucket of v: the first bound >= v, or the overflow bucket. */
static size_t bucket(const uint64_t *bounds, size_t nbounds, uint64_t v)
{
    size_t i = 0;
    while (i < nbounds && v > bounds[i])
        i++;
    return i;
}

/* D1: where no write waits for a sync, neither does a roll (preparer.c); a follower's rolls
 * sync their seals, and an open's first roll comes before the preparer runs. */
static bool rolls_defer(evs_store *st)
{
    return st->opt.fsync != EVS_FSYNC_ALWAYS && st->prep_started && !atomic_load(&st->following);
}

int store_fdatasync_timed(evs_store *st, int fd)
{
    static const uint64_t bounds[] = EVS_FSYNC_BOUNDS_US;
    uint64_t t0 = evs_mono_ns();
    int rc = st->io->fdatasync(fd);
    uint64_t dt = evs_mono_ns() - t0;
    atomic_fetch_add(&st->n_fsyncs, 1);
    atomic_fetch_add(&st->fsync_ns, dt);
    if (dt > atomic_load(&st->fsync_ns_max))
        atomic_store(&st->fsync_ns_max, dt);
    atomic_fetch_add(&st->fsync_hist[bucket(bounds, EVS_FSYNC_BUCKETS - 1, dt / 1000)], 1);
    return rc;
}

static int timed_sync(evs_store *st, int fd)
{
    prep_rolls_settle(st); /* D3: what is synced has a synced, named predecessor */
    int rc = store_fdatasync_timed(st, fd);
    st->last_sync_ns = evs_mono_ns();
    return rc;
}

/*
 * W10: wait for the batch the syncer has in flight, if any, and acknowledge it: synced_to
 * moves to its end, the sync cap to `cap` (the next batch's start when another goes to the
 * syncer now, else none), which shows it as far as the visibility cap lets, and its requests
 * finish. If its sync failed (the store is failed: Y3), they fail, and the cap stays below
 * the batch for good.
 */
static void sync_collect(evs_store *st, uint64_t cap)
{
    if (st->sy_end) {
        uint64_t end = st->sy_end;
        int rc = syncer_wait(st);
        st->last_sync_ns = evs_mono_ns();
        if (!rc) { /* (failed: the cap stays, and nothing of the batch ever shows) */
            st->synced_to = end;
            atomic_store(&st->synced_pub, end);
            store_visible_sync_cap(st, cap);
        }
        for (size_t i = 0; i < st->spend.n; i++)
            if (rc)
                finish_failed(st, st->spend.r[i]);
            else
                finish(st->spend.r[i], 0, NULL);
        st->spend.n = 0;
        return;
    }
    if (!atomic_load(&st->failed))
        store_visible_sync_cap(st, cap);
}

/* W10: does more of the leader's log wait to be written after this batch? */
static bool more_frames(evs_store *st)
{
    if (!atomic_load(&st->following))
        return false;
    if (st->wmore)
        return true;
    pthread_mutex_lock(&st->qmu);
    bool more = st->qhead && st->qhead->kind == WR_REPLICA;
    pthread_mutex_unlock(&st->qmu);
    return more;
}

/* W11: blocks kept ahead of the index's data file, a quarter segment (1-16 MiB), so that its
 * commits do not meet a full disk first. 0, or -errno: ENOSPC marks the store short of room
 * (ordinary requests are refused until it is had); any other error is only logged. */
static uint64_t index_headroom(const evs_store *st)
{
    uint64_t h = st->opt.segment_bytes / 4;
    return h < (1u << 20) ? 1u << 20 : h > (16u << 20) ? 16u << 20 : h;
}

static int keep_index_headroom(evs_store *st)
{
    uint64_t waiting = idx_batch_count(st->ib) + (atomic_load(&st->ix_busy) ? st->ix_ops : 0);
    int rc = idx_keep_headroom(st->idx, index_headroom(st), waiting);
    bool short_now = rc == -ENOSPC || rc == -EDQUOT;
    if (rc && !short_now && !st->idx_room_short)
        evs_log(st, EVS_LOG_WARN, "cannot keep blocks ahead of the index: %s", strerror(-rc));
    st->idx_room_short = short_now;
    return short_now ? rc : 0;
}

/* Commit the index if it is due: a record readers need there (tombstone), many records, or
 * the oldest uncommitted record published EVS_INDEX_COMMIT_NS ago; `force` commits anything. */
static void index_commit(evs_store *st, bool force)
{
    if ((st->idx_records || st->idx_force) && !atomic_load(&st->failed))
        keep_index_headroom(st); /* each batch: what waits for the index may have grown */
    if (st->idx_records == 0 && !st->idx_force) {
        if (force)
            indexer_wait(st); /* X3: what was handed over is visible on return too */
        return;
    }
    if (!force && !st->idx_force && st->idx_records < EVS_INDEX_COMMIT_RECORDS &&
        evs_mono_ns() - st->idx_first_ns < EVS_INDEX_COMMIT_NS)
        return;
    evs_error err = {0};
    if (atomic_load(&st->failed))
        return;
    bool sync = force || st->idx_force; /* readers must see it on return (X3) */
    if (!sync && atomic_load(&st->ix_busy) && st->idx_records < EVS_INDEX_DEFER_RECORDS) {
        if (!atomic_exchange(&st->ix_deferred, true)) /* X5 */
            atomic_fetch_add(&st->n_ix_deferred, 1);
        if (atomic_load(&st->ix_busy))
            return;
        atomic_store(&st->ix_deferred, false); /* it has just finished: go on */
    }
    int rc = store_index_build(st, &err);
    if (!rc)
        rc = indexer_put(st, sync, &err);
    if (rc)
        store_fail(st, rc, "index update failed: %s", err.msg);
    st->idx_first_ns = 0;
}

/*
 * Batches not synced as they are written (everysec between syncs): start the writeback of
 * every WB_CHUNK written, without waiting for it, so that the sync that does come (everysec's
 * once a second) finds little left to write. (It was for --fsync no's rolls too, whose
 * fdatasync wrote the whole 64 MiB segment while the writer waited: 0.64 s of a 1.5-2.8 s
 * append-nosync run of 768 MB, strace; those syncs are the preparer's now, D1, and the
 * writeback's own waits for a full disk queue held the writer to the disk's speed.)
 * Advisory: an error is the next fdatasync's to report.
 */
#define WB_CHUNK (4u << 20)
static void start_writeback(evs_store *st, segment *a)
{
    if (st->wb_from < a->base || st->wb_from > st->tail) /* a roll; a cut tail (follower) */
        st->wb_from = a->base;
    if (st->tail - st->wb_from < WB_CHUNK)
        return;
    (void)sync_file_range(a->fd, (off_t)(st->wb_from - a->base), (off_t)(st->tail - st->wb_from),
                          SYNC_FILE_RANGE_WRITE);
    st->wb_from = st->tail;
}

/* Write, sync, publish and acknowledge everything built so far; commit the index when due.
 * force_sync: fdatasync whatever the mode (a segment's seal). */
static void flush_sync(evs_store *st, pending *p, bool force_sync);
static void flush(evs_store *st, pending *p) { flush_sync(st, p, false); }

static void flush_sync(evs_store *st, pending *p, bool force_sync)
{
    if (st->nbrecs == 0) {
        sync_collect(st, EVS_CAP_NONE); /* its requests are acknowledged first (W10) */
        /* nothing left to write: but a request whose work the store failed in the middle of
         * (a roll refused by an I/O error after its earlier records went out) is not done */
        bool failed = atomic_load(&st->failed);
        for (size_t i = 0; i < p->n; i++)
            finish(p->r[i], failed ? EVS_EFAILED : 0, failed ? &st->fail_err : NULL);
        p->n = 0;
        return;
    }
    int rc = 0;
    if (atomic_load(&st->failed)) {
        rc = EVS_EFAILED;
        goto fail;
    }
    size_t niov = 0;
    if (st->iovcap < st->nbrecs * 3) {
        struct iovec *v = realloc(st->iov, st->nbrecs * 3 * sizeof *v);
        if (!v) {
            store_fail(st, -ENOMEM, "out of memory building a write batch");
            goto fail;
        }
        st->iov = v;
        st->iovcap = st->nbrecs * 3;
    }
    for (size_t i = 0; i < st->nbrecs; i++) {
        struct brec *b = &st->brecs[i];
        if (b->hdr_len) /* a replicated record has none: all of it is in body */
            st->iov[niov++] = (struct iovec){st->hdrs.data + b->hdr_off, b->hdr_len};
        if (b->body) {
            st->iov[niov++] = (struct iovec){(void *)b->body, b->body_len};
            if (b->pad)
                st->iov[niov++] = (struct iovec){(void *)zero_pad, b->pad};
        }
    }
    segment *a = st->active;
    rc = fio_pwritev_all(st->io, a->fd, st->iov, (int)niov, (off_t)(st->batch_start - a->base));
    if (rc) {
        store_fail(st, rc, "write to segment %s at offset %" PRIu64 " failed", a->name,
                   st->batch_start - a->base);
        goto fail;
    }
    if (!seg_map_for(a, st->tail - a->base)) {
        store_fail(st, -errno, "cannot map segment %s", a->name);
        goto fail;
    }
    atomic_store(&a->written, st->tail - a->base); /* W8 */
    bool sync = force_sync || st->opt.fsync == EVS_FSYNC_ALWAYS ||
                (st->opt.fsync == EVS_FSYNC_EVERYSEC &&
                 evs_mono_ns() - st->last_sync_ns >= 1000000000ull);
    if (sync) {
        pthread_mutex_lock(&st->vmu);
        evs_written_fn whook = st->whook;
        void *warg = st->whook_arg;
        pthread_mutex_unlock(&st->vmu);
        if (whook)
            whook(warg);
    }
    /* everysec's once-a-second sync finds little left; with `no` (and deferred rolls) no sync
     * of this thread's is due, and waiting in sync_file_range for a full disk queue would
     * tie the writer to the disk again (D1) */
    if (!sync && !(st->opt.fsync == EVS_FSYNC_NO && rolls_defer(st)))
        start_writeback(st, a);
    bool overlap = sync && !force_sync && more_frames(st) && syncer_ensure(st) == 0 &&
                   pending_room(&st->spend, p->n) == 0; /* W10 */
    sync_collect(st, overlap ? st->batch_start : EVS_CAP_NONE); /* the batch before first */
    if (atomic_load(&st->failed))
        goto fail;
    if (overlap) {
        if (st->tail - st->batch_start >= CATCHUP_BATCH_BYTES) /* the preparer's cue (Z1) */
            atomic_store(&st->catchup_ns, evs_mono_ns());
        prep_rolls_settle(st); /* D3, as timed_sync */
        syncer_submit(st, a, st->tail);
    } else if (sync) {
        if ((rc = timed_sync(st, a->fd))) {
            store_fail(st, rc, "fdatasync of segment %s failed", a->name);
            goto fail;
        }
        st->synced_to = st->tail;
        atomic_store(&st->synced_pub, st->synced_to);
    }
    if (st->idx_force) {
        index_commit(st, true); /* a tombstone is acknowledged only once readers see it */
        if (atomic_load(&st->failed))
            goto fail;
    }
    /* a batch the visibility cap may hold: its states copied first (visible.c) */
    struct held *held;
    if (store_visible_prepare(st, st->batch_start, st->tail, &held)) {
        store_fail(st, -ENOMEM, "out of memory holding a write batch for the visibility cap");
        goto fail;
    }
    /* names of the batch's streams, for the hook, before publishing clears the list */
    size_t nt = st->nbtouched;
    evs_slice names_small[32];
    evs_slice *names = nt <= 32 ? names_small : malloc(nt * sizeof *names);
    if (!names)
        nt = 0;
    for (size_t i = 0; i < nt; i++)
        names[i] = (evs_slice){st->btouched[i]->name, st->btouched[i]->name_len};
    atomic_store(&st->active_used, st->tail - a->base);
    pthread_rwlock_wrlock(&st->lock);
    atomic_store(&a->size, st->tail - a->base);
    if (!store_visible_publish(st, st->tail, held))
        nt = 0; /* held: its streams are named when the cap releases it */
    pthread_rwlock_unlock(&st->lock);
    static const uint64_t bounds[] = EVS_BATCH_BOUNDS;
    atomic_fetch_add(&st->n_batches, 1);
    atomic_fetch_add(&st->batch_hist[bucket(bounds, EVS_BATCH_BUCKETS - 1, st->batch_records)], 1);
    atomic_fetch_add(&st->n_appends, st->batch_entries);
    atomic_fetch_add(&st->n_batch_records, st->batch_records);
    if (st->batch_records > atomic_load(&st->batch_max))
        atomic_store(&st->batch_max, st->batch_records);
    if (st->idx_records && !st->idx_first_ns)
        st->idx_first_ns = evs_mono_ns();
    st->nbrecs = 0;
    st->hdrs.len = 0;
    st->batch_bytes = st->batch_records = st->batch_entries = 0;
    if (overlap) { /* acknowledged when its sync is collected (W10); room made before */
        for (size_t i = 0; i < p->n; i++)
            st->spend.r[st->spend.n++] = p->r[i];
    } else {
        for (size_t i = 0; i < p->n; i++)
            finish(p->r[i], 0, NULL);
    }
    p->n = 0;
    store_notify(st, names, nt);
    if (names != names_small)
        free(names);
    index_commit(st, false);
    return;
fail:
    /* nothing of this batch becomes visible; the writer's stream states are abandoned with
     * the store (W3), and what the index had not committed is rebuilt from the log on open */
    sync_collect(st, EVS_CAP_NONE); /* the batch before: acknowledged if its sync completed */
    st->nbrecs = 0;
    st->hdrs.len = 0;
    st->batch_bytes = st->batch_records = st->batch_entries = 0;
    for (size_t i = 0; i < st->nbtouched; i++)
        st->btouched[i]->btouched = false;
    st->nbtouched = 0;
    for (size_t i = 0; i < p->n; i++)
        finish_failed(st, p->r[i]);
    p->n = 0;
}

/* ---- segments ---------------------------------------------------------------------------- */

/* Create the segment at `base` (from the reserved file `next`, else from the spare or made
 * now) and make it the active one: the log continues at base. With `prev` (whose seal is not
 * synced), a deferred roll: the file is pending until the preparer has synced prev (D1). */
static int segment_start(evs_store *st, const char *next, uint64_t base, segment *prev,
                         evs_error *err)
{
    segment *s;
    int rc = next && prev ? prep_install_deferred(st, next, base, prev, &s, err)
             : next       ? prep_install(st, next, base, &s, err)
                          : prep_new_segment(st, base, &s, err);
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&st->lock);
    rc = store_add_segment(st, s);
    pthread_rwlock_unlock(&st->lock);
    if (rc) {
        seg_free(s);
        return evs_err_set(err, rc, "out of memory");
    }
    st->active = s;
    st->tail = base;
    struct stat sb; /* the file's blocks reach this far (room_for W11) */
    st->alloc_end = base + (fstat(s->fd, &sb) == 0 ? (uint64_t)sb.st_size : 0);
    if (next && !strcmp(next, PREP_RESERVE))
        return 0; /* P2: room for what frees space, not for writes refused for want of it */
    if (st->nospace)
        evs_log(st, EVS_LOG_INFO, "space found for segment %s: writes accepted again", s->name);
    st->nospace = false;
    return 0;
}

/* W5: a file that could not be made for want of space (rc, err saying why) refuses only the
 * request (EVS_ENOSPACE, nothing written); any other failure is returned as it is. */
static int no_space(int rc, const char *what, evs_error *err)
{
    if (rc != -ENOSPC && rc != -EDQUOT)
        return rc;
    char why[sizeof err->msg - 100];
    snprintf(why, sizeof why, "%.*s", (int)sizeof why - 1, err->msg);
    return evs_err_set(err, EVS_ENOSPACE, "no space for %s (%s): nothing was written; retry "
                       "when space is freed", what, why);
}

int store_roll(evs_store *st, bool freeing, evs_error *err)
{
    segment *a = st->active;
    /* the table's last segment: retention removes first ones meanwhile, under the lock */
    pthread_rwlock_rdlock(&st->lock);
    segment *last = st->nsegs > 0 ? st->segs[st->nsegs - 1] : NULL;
    pthread_rwlock_unlock(&st->lock);
    if (!a && last && !last->sealed) {
        /* open: continue the last segment, whose data ends where recovery found zeros */
        a = last;
        uint64_t size = atomic_load(&a->size);
        struct stat sb;
        uint64_t flen = fstat(a->fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
        uint8_t *map = seg_map_for(a, flen > size ? flen : size);
        if (!map)
            return evs_err_set(err, -errno, "cannot map segment %s", a->name);
        rec_hdr h;
        uint64_t sz;
        if (size && rec_check_hdr(map, size, &h, &sz) == REC_OK)
            atomic_store(&st->active_first_us, h.time_us);
        st->active = a;
        st->tail = a->base + size;
        st->alloc_end = a->base + (flen > size ? flen : size);
        return 0;
    }
    const char *next = NULL;
    bool defer = a && rolls_defer(st);
    if (a) {
        /* W5: the next file's space first; a full disk is met before anything is written */
        int rc = prep_reserve(st, freeing, &next, err);
        if (rc)
            return no_space(rc, "the next segment", err);
        /* seal: a record saying how the segment ends, synced before the next file exists */
        uint64_t v[2] = {0, a->base};
        rec_buf b = {0};
        if (rec_uints_encode(&b, v, 2)) {
            rec_buf_release(&b);
            return evs_err_set(err, -ENOMEM, "out of memory");
        }
        pending none = {0};
        rc = emit(st, REC_SEAL, 0, 0, EVS_ID_MIN, REC_POS_NONE, b.data, (uint32_t)b.len, false,
                  NULL, err);
        rec_buf_release(&b);
        if (rc)
            return rc;
        /* the seal is durable before the next file has a segment's name (W4; D2) */
        flush_sync(st, &none, !defer);
        free(none.r);
        if (atomic_load(&st->failed))
            return evs_err_set(err, EVS_EFAILED, "%s", st->fail_err.msg);
        a->sealed = true;
        rel_cut(st, a, st->tail - a->base); /* the unused zeros, off this thread, paced */
    }
    uint64_t base = st->tail;
    if (last) { /* (a roll appends to the table on this thread only: still the last) */
        uint64_t end = last->base + atomic_load(&last->size);
        if (end > base)
            base = end;
    }
    return segment_start(st, next, base, defer ? a : NULL, err);
}

/* A roll failed: a full disk met while reserving the next file refuses only `r` (nothing was
 * written; W5); anything else fails the store (W3). */
static void roll_refused(evs_store *st, wreq *r, evs_error *err)
{
    if (err->code == EVS_ENOSPACE) {
        if (!st->nospace) /* once per full-disk episode; segment_start logs its end */
            evs_log(st, EVS_LOG_WARN, "refusing writes for want of space: %s", err->msg);
        st->nospace = true;
        finish(r, EVS_ENOSPACE, err);
        return;
    }
    store_fail(st, err->code, "%s", err->msg);
    finish_failed(st, r);
}

/* Bytes a request will add to the log, at most (stream-create records counted generously). */
static uint64_t request_bytes(const wreq *r)
{
    uint64_t n = r->idem_len ? rec_size_for((uint32_t)(r->idem_len + r->ops[0].name_len + 64)) : 0;
    for (size_t i = 0; i < r->n; i++)
        n += rec_size_for(r->ops[i].body_len) + rec_size_for((uint32_t)r->ops[i].name_len + 16);
    return n;
}

/* Must the active segment be sealed before `more` bytes are appended? (S3: records never
 * span segments; the zero-filled file is not grown unless one request alone exceeds it.) */
static bool roll_needed(evs_store *st, uint64_t more)
{
    uint64_t used = st->tail - st->active->base;
    return used > 0 && used + more + EVS_SEAL_RESERVE > st->opt.segment_bytes;
}

/*
 * W11: room in the active segment for `more` bytes of records: a roll when they do not fit
 * (after writing out the batch so far), else, past the file's blocks (one request larger than
 * a segment, or a file made smaller than --segment-bytes), blocks added to it. 0, or the
 * request is to be refused with `err` (roll_refused: EVS_ENOSPACE leaves the store writable).
 */
#define ROOM_STEP (1ull << 20)
static int room_for(evs_store *st, pending *p, uint64_t more, bool freeing, evs_error *err)
{
    int rc;
    if (!freeing && (rc = prep_make_reserve(st, err))) /* P2: the reserve is not for these */
        return no_space(rc, "the space reserve", err);
    if (!freeing && st->idx_room_short && (rc = keep_index_headroom(st)))
        return evs_err_set(err, EVS_ENOSPACE, "no space for the index to grow (%s): nothing was "
                           "written; retry when space is freed", strerror(-rc));
    if (roll_needed(st, more)) {
        flush(st, p);
        if ((rc = store_roll(st, freeing, err)))
            return rc;
    }
    uint64_t end = st->tail + more + EVS_SEAL_RESERVE;
    if (end <= st->alloc_end)
        return 0;
    segment *a = st->active;
    uint64_t from = st->alloc_end - a->base;
    uint64_t to = (end - a->base + ROOM_STEP - 1) / ROOM_STEP * ROOM_STEP;
    rc = st->io->fallocate(a->fd, 0, (off_t)from, (off_t)(to - from));
    if (rc == -ENOSPC || rc == -EDQUOT)
        return evs_err_set(err, EVS_ENOSPACE, "no space for %" PRIu64 " more bytes in segment "
                           "%s (%s): nothing was written; retry when space is freed", more,
                           a->name, strerror(-rc));
    if (rc)
        return evs_err_set(err, rc, "cannot extend segment %s to %" PRIu64 " bytes: %s", a->name,
                           to, strerror(-rc));
    st->alloc_end = a->base + to;
    return 0;
}

/* ---- requests ---------------------------------------------------------------------------- */

/* The most bytes of records a request other than an append writes (W11): one small record per
 * stream it names, or a tombstone per ID; 0 for those that make room themselves or write none. */
static uint64_t op_room(const wreq *r)
{
    switch (r->kind) {
    case WR_DELETE: case WR_DROP: case WR_TRIM: case WR_SETID: case WR_RETENTION: case WR_EPOCH:
        return 4096 + r->data.len + rec_size_for(64) * (uint64_t)r->n;
    default:
        return 0;
    }
}

/*
 * The streams of an append request. The submitting thread numbers them (wop.first: the index
 * of the first op naming the same stream), so the writer looks each stream up once per
 * request, not three times per entry (no throughput change measured on one stream; the
 * writer's path is shorter).
 */
struct sim {
    stream *s;      /* NULL: created by this request                                        */
    bool created;   /* ... by one of its ops that passed (before the op at hand)            */
    evs_id last;    /* the stream's last ID as the request's IDs are assigned              */
};

/* Does request r append its op i? (evs_submit_each refuses ops one by one) */
static bool op_passes(const wreq *r, size_t i) { return !r->each || !r->rcs[i]; }

/* Validate a whole append request against the writer's state; fill r->ids and sims[] (valid
 * at each op's `first` index). Each mode: a refused op's code goes to r->rcs[i], the others
 * go on as if it were not there. */
static int prepass(evs_store *st, wreq *r, struct sim *sims, uint64_t now_ms, evs_error *err)
{
    uint64_t fresh = 0; /* streams this request creates so far */
    for (size_t i = 0; i < r->n; i++) {
        wop *op = &r->ops[i];
        struct sim *sm = &sims[op->first];
        if (op->first == i) {
            sm->s = strtab_get(&st->wtab, r->data.data + op->name_off, op->name_len, false);
            sm->created = false;
            sm->last = sm->s ? sm->s->w.last_id : EVS_ID_MIN;
        }
        int rc = next_id(sm->last, op, now_ms, &r->ids[i]); /* (an explicit 0-0 comes first) */
        if (!rc && !sm->s && !sm->created && op->no_create)
            rc = EVS_ENOTFOUND;
        if (!rc && !sm->s && !sm->created && st->next_no + fresh >= EVS_STREAM_NO_MAX)
            rc = EVS_ETOOBIG;
        if (rc && !r->each)
            return evs_err_set(err, rc, "%s", rc == EVS_ENOTFOUND ? "no such stream"
                                              : rc == EVS_ETOOBIG ? EVS_STREAM_NO_MSG
                                                                  : evs_strerror(rc));
        if (r->each && (r->rcs[i] = rc)) {
            r->ids[i] = EVS_ID_MIN;
            continue;
        }
        fresh += !sm->s && !sm->created;
        sm->created |= !sm->s;
        sm->last = r->ids[i];
    }
    return 0;
}

/* Count the records a request will emit (for W1's flags). */
static size_t count_records(const wreq *r, const struct sim *sims)
{
    size_t n = r->idem_len ? 1 : 0;
    for (size_t i = 0; i < r->n; i++) {
        n += op_passes(r, i);
        n += r->ops[i].first == i && sims[i].created; /* a stream this request creates */
    }
    return n;
}

typedef struct trim_plan {
    bool on;
    uint64_t removed, bytes;
    evs_id first;       /* the stream's new first ID: everything below goes                  */
    uint64_t first_pos; /* its position (REC_POS_NONE: all gone, or one of this request's)   */
    size_t first_new;   /* SIZE_MAX, or the index of the request's entry that becomes first  */
} trim_plan;

/* The log bytes of request r's entry i. */
static uint64_t entry_bytes(const wreq *r, size_t i) { return rec_size_for(r->ops[i].body_len); }

/* The goal of trim t on a stream with `live` entries of `live_bytes`; false: nothing to do. */
static bool trim_goal_for(const evs_trim *t, uint64_t live, uint64_t live_bytes, trim_goal *goal)
{
    *goal = (trim_goal){UINT64_MAX, EVS_ID_MAX, UINT64_MAX, live_bytes, false};
    if (t->kind == EVS_TRIM_MAXLEN) {
        if (live <= t->maxlen)
            return false;
        goal->max_remove = live - t->maxlen;
        if (t->approx && goal->max_remove < EVS_TRIM_APPROX_STEP)
            return false;
    } else if (t->kind == EVS_TRIM_MAXBYTES) {
        if (live_bytes <= t->maxbytes)
            return false;
        goal->keep_bytes = t->maxbytes;
    } else {
        goal->stop_at = t->minid;
        goal->by_id = true;
    }
    if (t->approx && t->limit && goal->max_remove > t->limit)
        goal->max_remove = t->limit;
    return true;
}

/* Is removing `removed` entries worth a record ("~" MINID acts only from a node's worth)? */
static bool trim_worth(const evs_trim *t, uint64_t removed)
{
    return removed && !(t->approx && t->kind == EVS_TRIM_MINID && removed < EVS_TRIM_APPROX_STEP);
}

/*
 * Which of stream s's oldest live entries a trim removes, given the entries request r appends
 * to it (r NULL: none). The oldest entries are read from the written state, from the writer's
 * first ID on (an earlier trim in this batch may have moved it), then from the batch's own
 * entries of s (B2), then from r's.
 */
static int plan_trim(evs_store *st, stream *s, const evs_trim *t, const wreq *r,
                     trim_plan *plan, evs_error *err)
{
    memset(plan, 0, sizeof *plan);
    plan->first_new = SIZE_MAX;
    size_t nnew = r ? r->n : 0;
    const evs_id *new_ids = r ? r->ids : NULL;
    uint64_t live = (s ? s->w.length : 0) + nnew, new_bytes = 0;
    for (size_t i = 0; i < nnew; i++)
        new_bytes += entry_bytes(r, i);
    trim_goal goal;
    if (!trim_goal_for(t, live, (s ? s->w.bytes : 0) + new_bytes, &goal))
        return 0;
    trim_scan sc = {0, 0, EVS_ID_MIN, REC_POS_NONE, true};
    stream_state snap = {0};
    if (s && s->w.length) {
        /* The entries to scan are the written ones (I7): with none of s in the batch being
         * built, the writer's state; else its state at the end of the last batch written,
         * held from readers by the visibility cap or not, and a trim that reaches past it
         * goes on over the batch's own entries (below, B2). With the readers' state, a trim
         * behind held batches (a leader under --ack all whose followers lag) took the
         * request's own entry as the first and lost the held ones, or counted an entry a held
         * tombstone had deleted and left XLEN below the entries it kept. */
        pthread_rwlock_rdlock(&st->lock);
        snap = s->btouched ? *store_visible_written(st, s) : s->w;
        pthread_rwlock_unlock(&st->lock);
        int rc = reader_trim_scan_w(st, s, &snap, &goal, &sc, err);
        if (rc)
            return rc;
    }
    if (sc.exhausted && s && s->btouched && s->w.length) {
        /* every written entry from the first on goes: the next one kept is the first the
         * batch being built holds for s, an earlier request's (B2), or else this request's
         * own. (Passing over the earlier requests' entries once dropped them when the trim
         * ended exactly at the written end: a pipeline of `XADD s MAXLEN 3 3-1` and `XADD s
         * MAXLEN 2 4-1` after 1-1 and 2-1 kept 4-1 alone, the acknowledged 3-1 below the new
         * first entry, gone, and XLEN 2.) */
        if (s->nbents == UINT32_MAX || s->nbents != s->w.entries_added - snap.entries_added)
            return NEED_FLUSH; /* the list is not whole (B1): read them back once written */
        uint32_t lo = 0, hi = s->nbents; /* past those an earlier trim of it removed */
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (evs_id_cmp(s->bents[mid].id, s->w.first_id) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (uint32_t j = lo; j < s->nbents && sc.exhausted; j++) {
            const batch_ent *b = &s->bents[j];
            if (trim_goal_keeps(&goal, b->id, sc.removed, sc.bytes)) {
                sc.next = b->id;
                sc.next_pos = b->pos;
                sc.exhausted = false;
            } else {
                sc.removed++;
                sc.bytes += b->size;
            }
        }
    }
    if (sc.exhausted) {
        /* every entry so far goes: the next one kept is one of this request's */
        size_t k = 0;
        while (k < nnew && !trim_goal_keeps(&goal, new_ids[k], sc.removed, sc.bytes)) {
            sc.removed++;
            sc.bytes += entry_bytes(r, k);
            k++;
        }
        sc.next_pos = REC_POS_NONE;
        if (k < nnew) {
            sc.next = new_ids[k];
            plan->first_new = k;
        } else {
            sc.next = nnew ? new_ids[nnew - 1] : s ? s->w.last_id : EVS_ID_MIN; /* all gone */
            evs_id_next(&sc.next);
        }
    }
    if (!trim_worth(t, sc.removed))
        return 0;
    plan->on = true;
    plan->removed = sc.removed;
    plan->bytes = sc.bytes;
    plan->first = sc.next;
    plan->first_pos = sc.next_pos;
    return 0;
}

static int emit_trim(evs_store *st, uint32_t no, const trim_plan *plan, evs_error *err)
{
    uint64_t v[3] = {plan->removed, plan->bytes, plan->first_pos};
    rec_buf b = {0};
    if (rec_uints_encode(&b, v, 3)) {
        rec_buf_release(&b);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    int rc = emit(st, REC_TRIM, 0, no, plan->first, REC_POS_NONE, b.data, (uint32_t)b.len, false,
                  NULL, err);
    rec_buf_release(&b);
    return rc;
}

/* evs_submit_watched: the writer's view counts every record emitted before this request. */
static int check_watch(evs_store *st, const wreq *r, evs_error *err)
{
    for (size_t i = 0; i < r->nwatch; i++) {
        const struct wwatch *w = &r->watch[i];
        stream *s = strtab_get(&st->wtab, r->data.data + w->off, w->len, false);
        evs_version now = {0, 0};
        if (s && s->w_live)
            now = (evs_version){(uint64_t)s->no + 1, s->w.changes};
        if (!evs_version_eq(now, w->v))
            return evs_err_set(err, EVS_ECHANGED, "a watched stream changed");
    }
    return 0;
}

static int do_append_at(evs_store *st, wreq *r, uint64_t now_us, evs_error *err);

/* One clock reading per request: its IDs and its records' append time (a clock read costs
 * ~50 ns in this VM, once per record it was a tenth of the writer's time). */
static int do_append(evs_store *st, wreq *r, evs_error *err)
{
    st->req_now_us = evs_now_us();
    int rc = do_append_at(st, r, st->req_now_us, err);
    st->req_now_us = 0;
    return rc;
}

static int append_streams(evs_store *st, wreq *r, struct sim *sims, uint64_t now_us,
                          evs_error *err);

static int do_append_at(evs_store *st, wreq *r, uint64_t now_us, evs_error *err)
{
    struct sim small[8];
    struct sim *sims = r->n <= 8 ? small : malloc(r->n * sizeof *sims);
    if (!sims)
        return evs_err_set(err, -ENOMEM, "out of memory");
    int rc = append_streams(st, r, sims, now_us, err);
    if (sims != small)
        free(sims);
    return rc;
}

static int append_streams(evs_store *st, wreq *r, struct sim *sims, uint64_t now_us,
                          evs_error *err)
{
    int rc = check_watch(st, r, err);
    if (rc)
        return rc;
    rc = prepass(st, r, sims, now_us / 1000, err);
    if (rc)
        return rc;
    trim_plan plan = {0};
    if (r->has_trim) {
        stream *ts = strtab_get(&st->wtab, r->data.data + r->ops[0].name_off, r->ops[0].name_len,
                                false);
        if ((rc = plan_trim(st, ts, &r->trim, r, &plan, err)))
            return rc; /* NEED_FLUSH: the caller flushes and comes back */
    }
    size_t left = count_records(r, sims) + (plan.on ? 1 : 0);
    for (size_t i = 0; i < r->n; i++) {
        wop *op = &r->ops[i];
        if (!op_passes(r, i))
            continue;
        stream *s = sims[op->first].s;
        if (!s) {
            evs_slice name = {r->data.data + op->name_off, op->name_len};
            uint32_t no = st->next_no;
            left--;
            if ((rc = emit_stream_op(st, left ? REC_F_TXN_CONT : 0, REC_STREAM_CREATE, no, name,
                                     NULL, 0, err)))
                return rc;
            s = sims[op->first].s = numtab_get(&st->byno, no);
        }
        left--;
        rc = emit(st, REC_ENTRY, left ? REC_F_TXN_CONT : 0, s->no, r->ids[i], s->w.last_pos,
                  r->data.data + op->body_off, op->body_len, true, op, err);
        if (rc)
            return rc;
        if (plan.on && i == plan.first_new)
            plan.first_pos = s->w.last_pos; /* the entry that becomes the stream's first */
    }
    if (r->idem_len) {
        /* the key closes the group: durable exactly when the entries are */
        evs_slice name = {r->data.data + r->ops[0].name_off, r->ops[0].name_len};
        stream *s = strtab_get(&st->wtab, name.ptr, name.len, false);
        uint64_t v[5] = {r->ids[0].ms, r->ids[0].seq, r->ids[r->n - 1].ms, r->ids[r->n - 1].seq,
                         r->n};
        rec_buf b = {0};
        if (rec_idem_encode(&b, name, (evs_slice){r->data.data + r->idem_off, r->idem_len}, v)) {
            rec_buf_release(&b);
            return evs_err_set(err, -ENOMEM, "out of memory");
        }
        left--;
        rc = emit(st, REC_STREAM, left ? REC_F_TXN_CONT : 0, s->no, EVS_ID_MIN, REC_POS_NONE,
                  b.data, (uint32_t)b.len, false, NULL, err);
        rec_buf_release(&b);
    }
    if (!rc && plan.on) {
        stream *s = strtab_get(&st->wtab, r->data.data + r->ops[0].name_off, r->ops[0].name_len,
                               false);
        rc = emit_trim(st, s->no, &plan, err); /* the group's last record */
    }
    return rc;
}

static void do_delete(evs_store *st, wreq *r, pending *p)
{
    evs_error err = {0};
    stream *s = strtab_get(&st->wtab, r->data.data, r->ops[0].name_len, false);
    r->count = 0;
    if (!s) {
        finish(r, 0, NULL);
        return;
    }
    /* everything earlier is flushed: what the writer has written is all there is (readers may
     * not see all of it yet, under the visibility cap: an XDEL of a held entry deletes it) */
    evs_id *del = r->ids;
    uint64_t *size = malloc((r->n ? r->n : 1) * sizeof *size);
    if (!size) {
        finish(r, -ENOMEM, NULL);
        return;
    }
    size_t nd = 0;
    for (size_t i = 0; i < r->n; i++) {
        bool dup = false;
        for (size_t j = 0; j < nd && !dup; j++)
            dup = evs_id_cmp(del[j], r->ops[i].id) == 0;
        if (dup)
            continue;
        int e = reader_entry_written(st, s, r->ops[i].id, &size[nd], &err);
        if (e < 0) {
            free(size);
            finish(r, e, &err);
            return;
        }
        if (e)
            del[nd++] = r->ops[i].id;
    }
    for (size_t i = 0; i < nd; i++) {
        /* the deleted entry's record bytes: the stream's live bytes drop by them (store.c) */
        rec_buf b = {0};
        int rc = rec_uints_encode(&b, &size[i], 1)
                     ? evs_err_set(&err, -ENOMEM, "out of memory")
                     : emit(st, REC_TOMBSTONE, i + 1 < nd ? REC_F_TXN_CONT : 0, s->no, del[i],
                            REC_POS_NONE, b.data, (uint32_t)b.len, false, NULL, &err);
        rec_buf_release(&b);
        if (rc) {
            store_fail(st, rc, "cannot build tombstone: %s", err.msg);
            break;
        }
    }
    free(size);
    r->count = nd;
    pending_add(p, r);
    flush(st, p);
}

static void do_drop(evs_store *st, wreq *r, pending *p)
{
    evs_error err = {0};
    r->count = 0;
    for (size_t i = 0; i < r->n && !err.code; i++) {
        evs_slice name = {r->data.data + r->ops[i].name_off, r->ops[i].name_len};
        stream *s = strtab_get(&st->wtab, name.ptr, name.len, false);
        r->count += s != NULL;
        if (s && emit_stream_op(st, 0, REC_STREAM_DROP, s->no, name, NULL, 0, &err))
            store_fail(st, err.code, "cannot build stream drop: %s", err.msg);
    }
    if (pending_add(p, r)) {
        finish(r, -ENOMEM, NULL);
        return;
    }
    flush(st, p);
}

/* A plan made by the caller on a snapshot (evs_trim_stream) holds if the stream's front has
 * not moved since: same stream, same first ID, no tombstone, no relocation since. Then the trim costs the
 * writer O(1) instead of a walk over everything it removes. */
static bool take_plan(evs_store *st, stream *s, const wreq *r, trim_plan *plan, evs_error *err)
{
    if (!r->has_plan || !s || s->no != r->plan_no || evs_id_cmp(s->w.first_id, r->plan_from) ||
        s->w.ndels != r->plan_ndels || s->w.moved_pos != r->plan_moved)
        return false;
    memset(plan, 0, sizeof *plan);
    plan->first_new = SIZE_MAX;
    const trim_scan *sc = &r->plan;
    if (!trim_worth(&r->trim, sc->removed))
        return true; /* nothing to do */
    plan->on = true;
    plan->removed = sc->removed;
    plan->bytes = sc->bytes;
    plan->first = sc->next;
    plan->first_pos = sc->next_pos;
    if (sc->exhausted) {
        /* everything the snapshot had goes; entries appended since stay */
        plan->first = r->plan_last;
        evs_id_next(&plan->first);
        plan->first_pos = REC_POS_NONE;
        evs_id id;
        uint64_t pos;
        if (evs_id_cmp(s->w.last_id, r->plan_last) != 0 &&
            reader_first_after(st, s, r->plan_last, &id, &pos, err) == 1)
            plan->first_pos = pos; /* everything earlier is flushed: all of it written */
    }
    return true;
}

static void do_trim(evs_store *st, wreq *r, pending *p)
{
    evs_error err = {0};
    stream *s = strtab_get(&st->wtab, r->data.data, r->ops[0].name_len, false);
    trim_plan plan = {0};
    r->count = 0;
    int rc = 0;
    if (s && !take_plan(st, s, r, &plan, &err))
        rc = plan_trim(st, s, &r->trim, NULL, &plan, &err);
    if (rc) {
        finish(r, rc == NEED_FLUSH ? EVS_EINVAL : rc, &err); /* flushed before: cannot happen */
        return;
    }
    if (plan.on && (rc = emit_trim(st, s->no, &plan, &err))) {
        store_fail(st, rc, "cannot build trim record: %s", err.msg);
    } else if (plan.on) {
        r->count = plan.removed;
    }
    if (pending_add(p, r)) {
        finish(r, -ENOMEM, NULL);
        return;
    }
    flush(st, p);
}

/* The checks, order and messages of Redis 7.0's xsetidCommand, then two of ours (below). */
static void do_setid(evs_store *st, wreq *r, pending *p)
{
    evs_error err = {0};
    evs_slice name = {r->data.data, r->ops[0].name_len};
    evs_id id = r->ops[0].id;
    const char *why = NULL;
    int code = EVS_EINVAL;
    stream *s = strtab_get(&st->wtab, name.ptr, name.len, false);
    if (r->has_maxdel && evs_id_cmp(id, r->maxdel) < 0)
        why = "The ID specified in XSETID is smaller than the provided max_deleted_entry_id";
    else if (!s)
        why = "no such key", code = EVS_ENOTFOUND;
    if (!why && s->w.length) {
        /* everything earlier is flushed: the visible top entry is the writer's */
        evs_id top = EVS_ID_MIN;
        evs_iter *it;
        evs_query q;
        evs_query_init(&q);
        q.reverse = true;
        q.limit = 1;
        const evs_entry *e;
        int rc = evs_iter_open(st, name, &q, &it, &err);
        if (!rc) {
            if ((rc = evs_iter_next(it, &e, &err)) == 1)
                top = e->id;
            evs_iter_close(it);
        }
        if (rc < 0) {
            finish(r, rc, &err);
            return;
        }
        if (evs_id_cmp(id, top) < 0)
            why = "The ID specified in XSETID is smaller than the target stream top item",
            code = EVS_EIDORDER;
        else if (r->has_added && r->added < s->w.length)
            why = "The entries_added specified in XSETID is smaller than the target stream length";
    }
    /* ours, after Redis's own: a later XADD may not reuse the ID of a deleted entry (its
     * tombstone would hide it) nor fall below the trim point (hidden from reads) */
    if (!why && evs_id_cmp(id, s->w.max_deleted) < 0)
        why = "The ID specified in XSETID is smaller than current max_deleted_entry_id";
    else if (!why && evs_id_cmp(id, s->w.first_id) < 0)
        why = "The ID specified in XSETID is smaller than the stream's trim point";
    if (why) {
        finish(r, evs_err_set(&err, code, "%s", why), &err);
        return;
    }
    evs_id maxdel = r->has_maxdel && evs_id_cmp(r->maxdel, EVS_ID_MIN) ? r->maxdel : s->w.max_deleted;
    uint64_t v[5] = {id.ms, id.seq, r->has_added ? r->added : s->w.entries_added, maxdel.ms,
                     maxdel.seq};
    if (emit_stream_op(st, 0, REC_STREAM_SETID, s->no, name, v, 5, &err))
        store_fail(st, err.code, "cannot build set-ID record: %s", err.msg);
    if (pending_add(p, r)) {
        finish(r, -ENOMEM, NULL);
        return;
    }
    flush(st, p);
}

/* Group operations batch with appends; one that must read entries of this batch flushes
 * first (NEED_FLUSH). A segment is rolled ahead of them when little room is left. */
#define GROUP_ROOM (64u << 10) /* a request that writes more grows the segment (as a big entry) */
static void do_group(evs_store *st, wreq *r, pending *p)
{
    if (st->batch_bytes >= EVS_MAX_BATCH_BYTES)
        flush(st, p);
    evs_error rerr;
    if (room_for(st, p, GROUP_ROOM, false, &rerr)) {
        roll_refused(st, r, &rerr);
        return;
    }
    evs_error err = {0};
    bool emitted = false;
    int rc = group_exec(st, r, &emitted, &err);
    if (rc == NEED_FLUSH) {
        flush(st, p);
        rc = atomic_load(&st->failed) ? EVS_EFAILED : group_exec(st, r, &emitted, &err);
        if (rc == NEED_FLUSH)
            rc = evs_err_set(&err, EVS_EINVAL, "group operation could not be planned");
    }
    if (rc && !emitted) {
        finish(r, rc, &err);
        return;
    }
    if (rc) /* after emitting: out of memory, or a record unreadable mid-way */
        store_fail(st, rc, "consumer-group operation failed half-way: %s", err.msg);
    if (pending_add(p, r)) {
        store_fail(st, -ENOMEM, "out of memory");
        flush(st, p);
        finish_failed(st, r);
    }
}

static void do_retention(evs_store *st, wreq *r, pending *p)
{
    evs_error err = {0};
    evs_slice name = {r->data.data, r->ops[0].name_len};
    stream *s = strtab_get(&st->wtab, name.ptr, name.len, false);
    if (!s) {
        finish(r, evs_err_set(&err, EVS_ENOTFOUND, "no such stream"), &err);
        return;
    }
    uint64_t v[3] = {r->ret.max_age_ms, r->ret.max_bytes, r->ret.max_entries};
    if (emit_stream_op(st, 0, REC_STREAM_RETENTION, s->no, name, v, 3, &err))
        store_fail(st, err.code, "cannot build retention record: %s", err.msg);
    if (pending_add(p, r)) {
        finish(r, -ENOMEM, NULL);
        return;
    }
    flush(st, p);
}

/* Retention is about to delete the log below r->upto: re-declare every live stream and
 * snapshot every group whose declaration lies there, durably and indexed before returning. */
static void do_declare(evs_store *st, wreq *r, pending *p)
{
    evs_error err = {0};
    int rc = 0;
    r->count = 0;
    NUMTAB_EACH(&st->byno, no) {
        stream *s = numtab_get(&st->byno, (uint32_t)no);
        if (rc)
            break;
        if (!s->w_live)
            continue;
        size_t pel = 0;
        for (uint32_t i = 0; i < s->ngroups; i++)
            pel += s->groups[i]->nlive;
        if ((rc = room_for(st, p, 4096 + 64 * pel, true, &err)))
            break;
        if (s->w.decl_pos < r->upto || s->w.decl_pos == REC_POS_NONE) {
            uint64_t v[REC_DECLARE_N];
            store_declare_encode(&s->w, v);
            rc = emit_stream_op(st, 0, REC_STREAM_DECLARE, s->no,
                                (evs_slice){s->name, s->name_len}, v, REC_DECLARE_N, &err);
            r->count++;
        }
        if (!rc && s->ngroups)
            rc = group_snapshot_emit(st, s, r->upto, &err);
        if (!rc && st->batch_bytes >= EVS_MAX_BATCH_BYTES)
            flush(st, p);
    }
    if (rc == EVS_ENOSPACE) {
        finish(r, rc, &err); /* what was declared goes out with the next batch: harmless */
        return;
    }
    if (rc)
        store_fail(st, rc, "cannot declare streams for retention: %s", err.msg);
    if (pending_add(p, r)) {
        finish(r, -ENOMEM, NULL);
        return;
    }
    flush_sync(st, p, true); /* durable whatever the fsync mode: the segment goes next */
    index_commit(st, true);
}

/*
 * Retention's relocation of one stream: its live entries, read through its chain (all of it
 * is written: the dispatcher flushed first, and no other request runs meanwhile),
 * re-appended as one atomic group of moved copies (record.h REC_F_MOVED) in one segment.
 * Everything store_apply_record checks is checked here first (the live count), so a copy is
 * never refused there (that would fail the store). 0 with *bytes = 0: skipped (gone, empty,
 * moved already — held by a visibility cap — or over max_bytes).
 */
static int relocate_one(evs_store *st, pending *p, uint32_t no, uint64_t below,
                        uint64_t max_bytes, uint64_t *bytes, evs_error *err)
{
    stream *s = numtab_get(&st->byno, no);
    *bytes = 0;
    if (!s || !s->w_live || !s->w.length || s->w.last_pos == REC_POS_NONE ||
        s->w.first_pos >= below)
        return 0;
    uint64_t *pos, total;
    size_t n;
    evs_error e;
    int rc = reader_live_positions(st, s, &s->w, max_bytes, &pos, &n, &total, &e);
    if (rc == EVS_ETOOBIG)
        return 0;
    if (!rc && n != s->w.length) {
        evs_log(st, EVS_LOG_WARN, "retention: stream %u: %zu live entries found, %" PRIu64
                " counted: not relocated", s->no, n, s->w.length);
        free(pos);
        return 0;
    }
    if (rc) {
        free(pos);
        return evs_err_set(err, rc, "%s", e.msg);
    }
    if ((rc = room_for(st, p, total, true, err))) { /* the streams before this one first */
        free(pos);
        return rc;
    }
    segment *ref = NULL;
    for (size_t i = 0; i < n && !rc; i++) {
        rec_hdr h;
        const uint8_t *body;
        uint64_t size;
        if ((rc = store_read_record(st, pos[i], "(relocation)", &h, &body, &size, &ref, err)))
            break;
        uint16_t flags = REC_F_MOVED | (i + 1 < n ? REC_F_TXN_CONT : 0);
        rc = emit_at(st, REC_ENTRY, flags, s->no, (evs_id){h.id_ms, h.id_seq},
                     i ? s->mv_last_pos : REC_POS_NONE, body, h.body_len, false, NULL, h.time_us,
                     err);
    }
    store_seg_put(ref);
    free(pos);
    if (rc)
        store_fail(st, rc, "cannot relocate a stream: %s", err->msg);
    else
        *bytes = total;
    return rc;
}

/* Retention's relocation of the streams numbered in r->data (relocate_one each), all synced
 * whatever the fsync mode and indexed before the request completes: the caller deletes the
 * segment holding the originals next. r->out: streams copied and their bytes. */
static void do_relocate(evs_store *st, wreq *r, pending *p)
{
    evs_error err = {0};
    size_t n = r->data.len / sizeof(uint32_t);
    uint64_t moved = 0, bytes = 0;
    int rc = 0;
    for (size_t k = 0; k < n && !rc; k++) {
        uint32_t no;
        memcpy(&no, r->data.data + k * sizeof no, sizeof no);
        uint64_t b = 0;
        rc = relocate_one(st, p, no, r->below, r->upto, &b, &err);
        moved += b > 0;
        bytes += b;
        if (!rc && st->batch_bytes >= EVS_MAX_BATCH_BYTES)
            flush(st, p); /* between groups */
    }
    r->out[0] = moved; /* also when a later stream failed: these were copied */
    r->out[1] = bytes;
    if (rc && !atomic_load(&st->failed)) { /* a roll refused (no room): what was copied goes */
        flush_sync(st, p, true);
        index_commit(st, true);
        finish(r, rc, &err);
        return;
    }
    if (pending_add(p, r)) {
        finish(r, -ENOMEM, NULL);
        return;
    }
    flush_sync(st, p, true); /* durable whatever the fsync mode: the originals go next */
    index_commit(st, true);
}

/* The writer's view of the first entry of the stream whose number starts `key` (past the
 * last one if it has none; EVS_ID_MAX if it is gone). */
static evs_id first_of(evs_store *st, const uint8_t *key)
{
    uint32_t no = idx_rd32(key);
    stream *s = numtab_get(&st->byno, no);
    if (!s || !s->w_live)
        return EVS_ID_MAX;
    if (s->w.length)
        return s->w.first_id;
    evs_id f = s->w.last_id;
    evs_id_next(&f);
    return f;
}

/* Retention's index clean-up (WR_IDX_DEL): the keys go
 * into the index batch after everything built so far; an open filter group among them is
 * closed so that no later commit puts it back, or kept if a live entry joined it (postings
 * P4). Committed before the request completes: retention deletes files only after (R6). */
static void do_idx_del(evs_store *st, wreq *r)
{
    const uint8_t *b = r->data.data, *end = b + r->data.len;
    int rc = 0;
    while (!rc && end - b >= 3) {
        uint8_t t = b[0] & ~IDX_DEL_OLDER;
        bool older = b[0] & IDX_DEL_OLDER;
        size_t kl = (size_t)b[1] << 8 | b[2];
        b += 3;
        if (t >= IDX_NTABLES || (size_t)(end - b) < kl + (older ? 8 : 0)) {
            rc = EVS_EINVAL;
            break;
        }
        if (older)
            rc = idx_batch_del_older(st->ib, (enum idx_table)t, b, kl, idx_rd64(b + kl));
        else if (t != IDX_FILT || kl != IDX_FILTKEY ||
                 post_close_key(st->post, b, first_of(st, b)))
            rc = idx_batch_del(st->ib, (enum idx_table)t, b, kl);
        b += kl + (older ? 8 : 0);
        st->idx_records++;
    }
    if (!rc)
        index_commit(st, true); /* committed before the caller deletes any file (R6) */
    finish(r, rc, NULL);
}

static void do_roll(evs_store *st, wreq *r, pending *p)
{
    evs_error err = {0};
    flush(st, p);
    if (st->tail > st->active->base && store_roll(st, true, &err)) {
        roll_refused(st, r, &err);
        return;
    }
    finish(r, atomic_load(&st->failed) ? EVS_EFAILED : 0, atomic_load(&st->failed) ? &st->fail_err : NULL);
}

/* A new epoch: its history durably first (E1), then its REC_EPOCH record, synced whatever
 * the fsync mode. */
/* The REC_EPOCH record of epoch e, begun (its history durable, E1) just before: emitted into
 * the batch; a failure fails the store (EPOCHS names an epoch the log does not). */
static void emit_epoch_record(evs_store *st, const evs_epoch *e)
{
    evs_error err = {0};
    rec_buf b = {0};
    int rc = rec_epoch_encode(&b, e)
                 ? evs_err_set(&err, -ENOMEM, "out of memory writing the record of epoch %" PRIu32,
                               e->epoch)
                 : emit(st, REC_EPOCH, 0, 0, EVS_ID_MIN, REC_POS_NONE, b.data, (uint32_t)b.len,
                        false, NULL, &err);
    rec_buf_release(&b);
    if (rc)
        store_fail(st, rc, "%s", err.msg);
    /* the index watermark moves past it now: a store holding nothing else (a new one) would
     * otherwise open next time to an empty index beside a non-empty log, and rebuild it */
    st->idx_force = true;
}

static void do_epoch(evs_store *st, wreq *r, pending *p)
{
    evs_error err = {0};
    flush(st, p);
    if (r->promote)
        st->rcarry.len = 0; /* part of a group its leader never finished sending (R1) */
    int rc = epochs_begin_writer(st, r->epoch, &err);
    if (rc) {
        finish(r, rc, &err);
        return;
    }
    emit_epoch_record(st, r->epoch);
    flush_sync(st, p, true); /* (p is empty: flushed above) */
    if (atomic_load(&st->failed)) {
        finish_failed(st, r);
        return;
    }
    /* the new epoch is durable: writes may come, from before the caller hears of it (it was
     * answered first, and a write right after its promotion could be refused as a follower's) */
    if (r->promote)
        atomic_store(&st->following, false);
    finish(r, 0, NULL);
}

void snap_cut_release(snap_cut *c)
{
    for (size_t i = 0; i < c->nsegs; i++)
        store_seg_put_fd(c->segs[i]);
    free(c->segs);
    free(c->sizes);
    free(c->sealed);
    free(c->streams);
    free(c->names);
    free(c->epochs);
    memset(c, 0, sizeof *c);
}

/* Between two write batches: everything below st->tail is written and published (or held by
 * the visibility cap, visible.c), so the cut is a record boundary and an atomic-group
 * boundary. */
static int take_cut(evs_store *st, snap_cut *c)
{
    c->cut = st->tail;
    size_t nl = 0, names = 0;
    NUMTAB_EACH(&st->byno, no) {
        const stream *s = numtab_get(&st->byno, (uint32_t)no);
        if (s->w_live) {
            nl++;
            names += s->name_len;
        }
    }
    c->streams = calloc(nl ? nl : 1, sizeof *c->streams);
    c->names = malloc(names ? names : 1);
    pthread_rwlock_rdlock(&st->lock);
    c->segs = calloc(st->nsegs ? st->nsegs : 1, sizeof *c->segs);
    c->sizes = calloc(st->nsegs ? st->nsegs : 1, sizeof *c->sizes);
    c->sealed = calloc(st->nsegs ? st->nsegs : 1, sizeof *c->sealed);
    c->epochs = malloc((st->nepochs ? st->nepochs : 1) * sizeof *c->epochs);
    bool ok = c->streams && c->names && c->segs && c->sizes && c->sealed && c->epochs;
    for (size_t i = 0; ok && i < st->nsegs; i++) {
        segment *g = st->segs[i];
        if (g->base >= c->cut)
            break;
        store_seg_hold_fd(g); /* a snapshot reads by descriptor (snapshot.c) */
        c->segs[c->nsegs] = g;
        c->sealed[c->nsegs] = g->sealed;
        c->sizes[c->nsegs++] = g == st->active ? c->cut - g->base : atomic_load(&g->size);
    }
    if (ok) {
        memcpy(c->epochs, st->epochs, st->nepochs * sizeof *c->epochs);
        c->nepochs = st->nepochs;
    }
    pthread_rwlock_unlock(&st->lock);
    if (!ok)
        return -ENOMEM;
    size_t off = 0;
    NUMTAB_EACH(&st->byno, no) {
        stream *s = numtab_get(&st->byno, (uint32_t)no);
        if (!s->w_live)
            continue;
        memcpy(c->names + off, s->name, s->name_len);
        c->streams[c->nstreams++] = (evs_snap_stream){
            {c->names + off, s->name_len}, s->w.last_id, s->w.length, s->w.entries_added};
        off += s->name_len;
    }
    return 0;
}

static void do_cut(evs_store *st, wreq *r, pending *p)
{
    flush(st, p);
    if (atomic_load(&st->failed)) {
        finish_failed(st, r);
        return;
    }
    int rc = take_cut(st, r->cut);
    if (rc)
        snap_cut_release(r->cut);
    finish(r, rc, NULL);
}

/* ---- following a leader ------------------------------------------------------------------- */

/* Add a record of the leader's, bytes as they are, to the batch and apply it. The bytes stay
 * in the request's buffer (alive until the batch is acknowledged): written from there. */
static int emit_raw(evs_store *st, const uint8_t *rec, uint64_t size, const rec_hdr *h,
                    evs_error *err)
{
    if (st->nbrecs == 0)
        st->batch_start = st->tail;
    struct brec *b = brec_add(st);
    if (!b)
        return evs_err_set(err, -ENOMEM, "out of memory");
    if (st->active && st->tail == st->active->base)
        atomic_store(&st->active_first_us, h->time_us);
    b->hdr_off = st->hdrs.len;
    b->hdr_len = 0;
    b->body = rec;
    b->body_len = (uint32_t)size;
    b->pad = 0;
    st->batch_bytes += size;
    st->batch_records++;
    st->batch_entries += h->kind == REC_ENTRY;
    return store_apply_record(st, h, rec + REC_HDR_SIZE, st->tail, size, err);
}

/* Write and apply the whole records in b[0, len) at log position `at` (do_replica). */
static int replica_records(evs_store *st, pending *p, const uint8_t *b, size_t len, uint64_t at,
                           bool *open_group, evs_error *err)
{
    int rc = 0;
    for (size_t off = 0; off < len && !rc;) {
        rec_hdr h;
        uint64_t sz;
        rec_check_hdr(b + off, len - off, &h, &sz);
        if (h.kind == REC_EPOCH) {
            evs_epoch e;
            if (rec_epoch_decode(b + off + REC_HDR_SIZE, h.body_len, &e))
                rc = evs_err_set(err, EVS_ECORRUPT, "malformed epoch record at %" PRIu64,
                                 at + off);
            else
                rc = epochs_follow_writer(st, &e, err); /* E1: the history first */
            if (rc)
                break;
        }
        if (st->batch_bytes >= EVS_MAX_BATCH_BYTES && !*open_group) {
            bool more = st->wmore;
            st->wmore = true; /* the rest of this frame follows (W10) */
            flush(st, p);     /* only between groups: readers never see part of one */
            st->wmore = more;
        }
        if ((rc = emit_raw(st, b + off, sz, &h, err))) {
            if (rc == EVS_ECORRUPT) { /* whole and checked: it is this log it does not fit */
                char why[sizeof err->msg];
                snprintf(why, sizeof why, "%s", err->msg);
                evs_err_set(err, rc, "the leader's record at log position %" PRIu64 " does not "
                            "continue this store's log (%s): the two histories parted with no "
                            "epoch to tell them apart (one store copied and led in two places?); "
                            "copy the leader's store afresh", at + off, why);
            }
            break;
        }
        *open_group = h.flags & REC_F_TXN_CONT;
        off += (size_t)sz;
        if (h.kind == REC_SEAL) {
            flush_sync(st, p, true); /* the seal is durable before the next file exists */
            if (atomic_load(&st->failed))
                return EVS_EFAILED;
            segment *a = st->active;
            a->sealed = true;
            rel_cut(st, a, st->tail - a->base);
            /* the leader's next segment, as its roll went: it may have taken its own reserve
             * to free space (P2), and a follower's space only returns by following that */
            const char *next = NULL;
            evs_error rerr; /* its own reserve again first where there is room: not needed */
            prep_make_reserve(st, &rerr);
            rc = prep_reserve(st, true, &next, err);
            if (!rc)
                rc = segment_start(st, next, st->tail, NULL, err);
        }
    }
    return rc;
}

/*
 * A follower's request: bytes of the leader's log at position r->upto. Every record is checked
 * before any is written; they go to the same positions as on the leader, and a seal record
 * ends the segment there (the next one starts right after it, as on the leader), so the
 * follower's segment files are the leader's byte for byte.
 *
 * R1. A follower never writes part of an atomic group: the leader's frames do not follow
 *     groups, so the records of a group a frame leaves open wait in st->rcarry (whole records,
 *     never written, never acknowledged as synced) until a later frame closes it. A batch is
 *     flushed, and so published, only between groups. So a follower's readers never see part
 *     of a group, and a promotion (which drops the carry) never closes one with its epoch
 *     record. A new link sends from the log's end again: the carry is dropped then too.
 */
static void do_replica(evs_store *st, wreq *r, pending *p)
{
    evs_error err = {0};
    const uint8_t *b = r->data.data;
    size_t len = r->data.len;
    uint64_t at = r->upto;
    r->count = len;
    if (at == st->tail && st->rcarry.len)
        st->rcarry.len = 0; /* the group is sent again from its start (a new link) */
    if (at != st->tail + st->rcarry.len) {
        evs_err_set(&err, EVS_EINVAL, "the leader's bytes start at log position %" PRIu64
                    ", this log ends at %" PRIu64, at, st->tail + st->rcarry.len);
        finish(r, err.code, &err);
        return;
    }
    size_t closed = 0; /* the end of the frame's last record that closes a group */
    for (size_t off = 0; off < len;) {
        rec_hdr h;
        uint64_t sz;
        int c = rec_check(b + off, len - off, &h, &sz);
        if (c != REC_OK) {
            evs_err_set(&err, EVS_ECORRUPT, "the leader's record at log position %" PRIu64
                        " fails its check: %s", at + off, rec_check_str(c));
            finish(r, err.code, &err);
            return;
        }
        off += (size_t)sz;
        if (!(h.flags & REC_F_TXN_CONT))
            closed = off;
    }
    int rc = 0;
    if (closed) {
        /* the carried records first: the request keeps their bytes until they are written */
        uint64_t from = st->tail;
        bool open_group = false;
        r->carry = st->rcarry;
        st->rcarry = (rec_buf){0};
        if (r->carry.len)
            rc = replica_records(st, p, r->carry.data, r->carry.len, from, &open_group, &err);
        if (!rc)
            rc = replica_records(st, p, b, closed, from + r->carry.len, &open_group, &err);
    }
    if (!rc && closed < len && rec_buf_write(&st->rcarry, (const char *)b + closed, len - closed))
        rc = evs_err_set(&err, -ENOMEM, "out of memory keeping a group's first records");
    if (rc && !atomic_load(&st->failed))
        store_fail(st, rc, "following the leader failed at log position %" PRIu64 ": %s",
                   st->tail, err.msg);
    if (rc) { /* never acknowledged: records of it past a seal may not be written at all */
        finish_failed(st, r);
        return;
    }
    if (pending_add(p, r)) {
        finish(r, -ENOMEM, NULL);
        return;
    }
}

/* The epoch an unclean stop left due (W9). */
static void begin_due_epoch(evs_store *st, pending *p)
{
    atomic_store(&st->epoch_due, false);
    flush(st, p);
    evs_epoch e;
    evs_error err = {0};
    int rc = epochs_begin_writer(st, &e, &err);
    if (rc) {
        store_fail(st, rc, "beginning the epoch an unclean stop left due: %s", err.msg);
        return;
    }
    emit_epoch_record(st, &e);
    flush(st, p);
    if (atomic_load(&st->failed))
        return;
    evs_log(st, EVS_LOG_WARN, "epoch %" PRIu32 " begins at log position %" PRIu64 " (the last "
            "run did not close cleanly)", e.epoch, e.start);
}

static void process(evs_store *st, wreq *list, pending *p)
{
    while (list) {
        wreq *r = list;
        list = r->next;
        st->wmore = list && list->kind == WR_REPLICA; /* W10 */
        if (r->kind != WR_REPLICA)
            sync_collect(st, EVS_CAP_NONE); /* W10: nothing else runs beside a sync */
        if (atomic_load(&st->failed)) {
            flush(st, p);
            finish_failed(st, r);
            continue;
        }
        if (atomic_load(&st->epoch_due) && r->kind != WR_IDX_DEL) {
            if (r->kind == WR_EPOCH)
                atomic_store(&st->epoch_due, false); /* it fences as well (W9) */
            else
                begin_due_epoch(st, p);
            if (atomic_load(&st->failed)) {
                finish_failed(st, r);
                continue;
            }
        }
        if (r->kind == WR_GROUP) {
            do_group(st, r, p);
            continue;
        }
        if (r->kind == WR_REPLICA) { /* consecutive frames share a batch and its fsync */
            do_replica(st, r, p);
            continue;
        }
        if (r->kind != WR_APPEND) {
            flush(st, p);
            evs_error rerr;
            uint64_t more = op_room(r);
            /* W11: trims and deletions may take the reserve; so may a new epoch (a restore's,
             * a promotion's: a few bytes, and no store should stay unfenced for want of a
             * segment's room) */
            bool reserve_ok = r->kind == WR_TRIM || r->kind == WR_DROP || r->kind == WR_EPOCH;
            if (more && room_for(st, p, more, reserve_ok, &rerr)) {
                roll_refused(st, r, &rerr);
                continue;
            }
            if (r->kind == WR_DELETE)
                do_delete(st, r, p);
            else if (r->kind == WR_TRIM)
                do_trim(st, r, p);
            else if (r->kind == WR_SETID)
                do_setid(st, r, p);
            else if (r->kind == WR_RETENTION)
                do_retention(st, r, p);
            else if (r->kind == WR_DECLARE)
                do_declare(st, r, p);
            else if (r->kind == WR_ROLL)
                do_roll(st, r, p);
            else if (r->kind == WR_EPOCH)
                do_epoch(st, r, p);
            else if (r->kind == WR_CUT)
                do_cut(st, r, p);
            else if (r->kind == WR_IDX_DEL)
                do_idx_del(st, r);
            else if (r->kind == WR_RELOCATE)
                do_relocate(st, r, p);
            else if (r->kind == WR_REPLICA)
                do_replica(st, r, p);
            else
                do_drop(st, r, p);
            continue;
        }
        if (st->batch_bytes >= EVS_MAX_BATCH_BYTES)
            flush(st, p);
        evs_error rerr;
        if (room_for(st, p, request_bytes(r), false, &rerr)) {
            roll_refused(st, r, &rerr);
            continue;
        }
        evs_error err = {0};
        size_t mark_recs = st->nbrecs, mark_hdrs = st->hdrs.len;
        int rc = do_append(st, r, &err);
        if (rc == NEED_FLUSH) {
            flush(st, p); /* the trim reaches this batch: make it visible, then plan again */
            mark_recs = st->nbrecs;
            mark_hdrs = st->hdrs.len;
            rc = atomic_load(&st->failed) ? EVS_EFAILED : do_append(st, r, &err);
            if (rc == NEED_FLUSH)
                rc = evs_err_set(&err, EVS_EINVAL, "trim could not be planned");
        }
        if (rc) {
            if (st->nbrecs != mark_recs || st->hdrs.len != mark_hdrs) {
                /* failed after emitting: only out-of-memory gets here */
                store_fail(st, rc, "%s", err.msg);
                pending_add(p, r);
                flush(st, p);
                continue;
            }
            finish(r, rc, &err);
            continue;
        }
        if (pending_add(p, r)) {
            store_fail(st, -ENOMEM, "out of memory");
            flush(st, p);
            finish_failed(st, r);
        }
    }
    st->wmore = false;
    flush(st, p);
}

/* When the writer's timed work falls due (monotonic ns; 0: nothing): an index commit, or an
 * everysec sync of a log written past its last sync. (W) */
static uint64_t work_due(evs_store *st)
{
    if (atomic_load(&st->failed))
        return 0;
    if (st->idx_records && !atomic_load(&st->ix_deferred)) /* else the indexer wakes it (X5) */
        return st->idx_first_ns + EVS_INDEX_COMMIT_NS;
    if (st->opt.fsync == EVS_FSYNC_EVERYSEC && st->synced_to != st->tail)
        return st->last_sync_ns + 1000000000ull;
    return 0; /* (with --fsync no the log is never synced by time: no deadline, or it spins) */
}

/* Holding the role: process what is queued, then the timed work that is due; publish the
 * next due time for the writer thread (and wake it if it sleeps without one). Returns
 * whether the store was closing with nothing queued (the writer thread's cue to end). */
static bool run_role(evs_store *st, bool timed)
{
    pthread_mutex_lock(&st->qmu);
    wreq *list = st->qhead;
    st->qhead = st->qtail = NULL;
    st->wkick = false; /* this turn's timed work takes the deferred commit (X5) */
    bool closing = st->closing;
    pthread_mutex_unlock(&st->qmu);
    if (list)
        process(st, list, &st->pend);
    if (st->sy_end && !more_frames(st))
        sync_collect(st, EVS_CAP_NONE); /* W10: never left in flight with nothing queued */
    if (timed) {
        /* everysec: sync the log when idle or once a second */
        if (!atomic_load(&st->failed) && st->opt.fsync == EVS_FSYNC_EVERYSEC &&
            st->synced_to != st->tail &&
            (closing || !list || evs_mono_ns() - st->last_sync_ns >= 1000000000ull)) {
            int rc = timed_sync(st, st->active->fd);
            if (rc)
                store_fail(st, rc, "fdatasync of segment %s failed", st->active->name);
            else {
                st->synced_to = st->tail;
                atomic_store(&st->synced_pub, st->synced_to);
            }
        }
        index_commit(st, closing && !list);
    }
    store_streams_reclaim(st); /* between requests (streams.c S3) */
    recycle_done(st);          /* P2 */
    uint64_t due = work_due(st);
    pthread_mutex_lock(&st->qmu);
    /* the writer thread sleeps without a deadline, or with a later one */
    bool wake = !timed && due && (!st->wdue_ns || due < st->wdue_ns);
    st->wdue_ns = due;
    if (wake)
        pthread_cond_signal(&st->qcv);
    pthread_mutex_unlock(&st->qmu);
    return closing && !list;
}

void *writer_main(void *arg)
{
    evs_store *st = arg;
    pthread_mutex_lock(&st->rolemu);
    st->last_sync_ns = evs_mono_ns();
    pthread_mutex_unlock(&st->rolemu);
    for (;;) {
        pthread_mutex_lock(&st->qmu);
        while (!st->qhead && !st->closing && !st->wkick) {
            if (!st->wdue_ns) {
                pthread_cond_wait(&st->qcv, &st->qmu);
                continue;
            }
            uint64_t now = evs_mono_ns();
            if (now >= st->wdue_ns)
                break;
            struct timespec ts = evs_deadline_ns(st->wdue_ns - now);
            pthread_cond_timedwait(&st->qcv, &st->qmu, &ts);
        }
        pthread_mutex_unlock(&st->qmu);
        pthread_mutex_lock(&st->rolemu);
        bool end = run_role(st, true);
        pthread_mutex_unlock(&st->rolemu);
        if (end)
            break;
    }
    return NULL;
}

int writer_submit(evs_store *st, wreq *r, evs_error *err)
{
    pthread_mutex_lock(&st->qmu);
    if (st->closing) {
        pthread_mutex_unlock(&st->qmu);
        wreq_free(r);
        return evs_err_set(err, EVS_ECLOSED, "%s", evs_strerror(EVS_ECLOSED));
    }
    r->next = NULL;
    if (st->qtail)
        st->qtail->next = r;
    else
        st->qhead = r;
    st->qtail = r;
    if (!st->holds)
        pthread_cond_signal(&st->qcv);
    pthread_mutex_unlock(&st->qmu);
    return 0;
}

void evs_submit_wake(evs_store *st)
{
    pthread_mutex_lock(&st->qmu);
    if (st->qhead)
        pthread_cond_signal(&st->qcv);
    pthread_mutex_unlock(&st->qmu);
}

void evs_submit_hold(evs_store *st)
{
    pthread_mutex_lock(&st->qmu);
    st->holds++;
    pthread_mutex_unlock(&st->qmu);
}

void evs_submit_release(evs_store *st)
{
    pthread_mutex_lock(&st->qmu);
    if (st->holds && !--st->holds && st->qhead)
        pthread_cond_signal(&st->qcv);
    pthread_mutex_unlock(&st->qmu);
}

void evs_submit_release_inline(evs_store *st)
{
    pthread_mutex_lock(&st->qmu);
    bool run = st->holds && !--st->holds && st->qhead && !st->closing;
    pthread_mutex_unlock(&st->qmu);
    if (!run)
        return;
    if (pthread_mutex_trylock(&st->rolemu) == 0) {
        /* the writer thread is idle: no hand-off, no wake-up, as Redis syncs on its loop */
        run_role(st, false);
        pthread_mutex_unlock(&st->rolemu);
        return;
    }
    evs_submit_wake(st); /* the role is busy: its holder or the writer thread takes them */
}

/* ---- the append API ---------------------------------------------------------------------- */

wreq *wreq_new(enum wreq_kind kind, size_t n)
{
    wreq *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kind = kind;
    r->n = n;
    r->opcap = n ? n : 1;
    r->ops = calloc(n ? n : 1, sizeof *r->ops);
    r->ids = calloc(n ? n : 1, sizeof *r->ids);
    /* data is never NULL, so a name in it is never {NULL, 0}, even the empty one */
    if (!r->ops || !r->ids || rec_buf_reserve(&r->data, 64)) {
        wreq_free(r);
        return NULL;
    }
    return r;
}

static int check_name(evs_slice name, evs_error *err)
{
    if (name.len > EVS_STREAM_NAME_MAX)
        return evs_err_set(err, EVS_ETOOBIG, "stream name is %zu bytes, the limit is %d",
                           name.len, EVS_STREAM_NAME_MAX);
    if (name.len && !name.ptr)
        return evs_err_set(err, EVS_EINVAL, "stream name pointer is NULL");
    return 0;
}

int writer_check(evs_store *st, evs_error *err)
{
    if (st->opt.read_only)
        return evs_err_set(err, EVS_EREADONLY, "store is open read-only");
    if (atomic_load(&st->failed))
        return evs_err_copy(err, &st->fail_err);
    return 0;
}

/* Changes of this store's own: none on a follower (its log is the leader's). */
static int submit_check_local(evs_store *st, evs_error *err)
{
    if (atomic_load(&st->following))
        return evs_err_set(err, EVS_EREADONLY, "this store follows a leader: it takes writes "
                           "only through replication");
    return writer_check(st, err);
}

static int build_append(evs_store *st, const evs_append *reqs, size_t n, wreq **out,
                        evs_error *err)
{
    int rc = submit_check_local(st, err);
    if (rc)
        return rc;
    if (n == 0)
        return evs_err_set(err, EVS_EINVAL, "empty batch");
    wreq *r = wreq_pooled(st, n);
    if (!r)
        r = wreq_new(WR_APPEND, n);
    if (!r)
        return evs_err_set(err, -ENOMEM, "out of memory");
    r->pool = st;
    size_t need = 0; /* the names and bodies below, sized once: no growth by copying */
    for (size_t i = 0; i < n; i++)
        need += reqs[i].stream.len + (reqs[i].fields ? rec_entry_bound(reqs[i].fields,
                                                                       reqs[i].nfields) : 0);
    if (rec_buf_reserve(&r->data, need)) {
        rc = evs_err_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const evs_append *a = &reqs[i];
        wop *op = &r->ops[i];
        *op = (wop){.first = i}; /* every other field zero */
        if ((rc = check_name(a->stream, err)))
            goto fail;
        if (a->nfields == 0 || !a->fields) {
            rc = evs_err_set(err, EVS_EINVAL, "an entry needs at least one field");
            goto fail;
        }
        for (size_t j = 0; j < i; j++) /* the previous op first: requests are mostly one stream */
            if (evs_slice_eq(reqs[i - 1 - j].stream, a->stream)) {
                op->first = r->ops[i - 1 - j].first;
                break;
            }
        op->name_off = r->data.len;
        op->name_len = a->stream.len;
        if (rec_buf_write(&r->data, a->stream.ptr, a->stream.len)) {
            rc = evs_err_set(err, -ENOMEM, "out of memory");
            goto fail;
        }
        op->id_mode = a->id_mode;
        op->id = a->id;
        op->no_create = a->no_create;
        op->body_off = r->data.len;
        if (rec_entry_encode(&r->data, a->fields, a->nfields)) {
            rc = evs_err_set(err, -ENOMEM, "out of memory");
            goto fail;
        }
        size_t blen = r->data.len - op->body_off;
        if (blen > st->opt.max_entry_bytes || blen > REC_MAX_BODY) {
            rc = evs_err_set(err, EVS_ETOOBIG, "entry is %zu bytes encoded, the limit is %" PRIu64,
                             blen, st->opt.max_entry_bytes);
            goto fail;
        }
        op->body_len = (uint32_t)blen;
        for (size_t f = 0; f < a->nfields; f++)
            if (!store_filter_field(op, a->fields[f].name, a->fields[f].value))
                break;
    }
    *out = r;
    return 0;
fail:
    wreq_free(r);
    return rc;
}

static bool one_stream(const evs_append *reqs, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (!evs_slice_eq(reqs[i].stream, reqs[0].stream))
            return false;
    return true;
}

static bool trim_ok(const evs_trim *t)
{
    return t && (t->kind == EVS_TRIM_MAXLEN || t->kind == EVS_TRIM_MINID ||
                 t->kind == EVS_TRIM_MAXBYTES);
}

int evs_submit_keyed(evs_store *st, const evs_append *reqs, size_t n, evs_slice key,
                     evs_done_fn done, void *arg, evs_error *err)
{
    if (key.len == 0 || key.len > EVS_IDEM_KEY_MAX)
        return evs_err_set(err, EVS_EINVAL, "an idempotency key is 1 to %d bytes",
                           EVS_IDEM_KEY_MAX);
    if (!one_stream(reqs, n))
        return evs_err_set(err, EVS_EINVAL, "keyed requests must all be for one stream");
    wreq *r;
    int rc = build_append(st, reqs, n, &r, err);
    if (rc)
        return rc;
    r->idem_off = r->data.len;
    r->idem_len = key.len;
    if (rec_buf_write(&r->data, key.ptr, key.len)) {
        wreq_free(r);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    r->done = done;
    r->arg = arg;
    return writer_submit(st, r, err);
}

/* The WATCHed streams' names go into the request's data, their versions beside them. */
static int add_watch(wreq *r, const evs_watch *watch, size_t nwatch)
{
    if (nwatch && !(r->watch = calloc(nwatch, sizeof *r->watch)))
        return -ENOMEM;
    r->nwatch = nwatch;
    for (size_t i = 0; i < nwatch; i++) {
        r->watch[i] = (struct wwatch){r->data.len, watch[i].stream.len, watch[i].version};
        if (rec_buf_write(&r->data, watch[i].stream.ptr, watch[i].stream.len))
            return -ENOMEM;
    }
    return 0;
}

int evs_submit_watched(evs_store *st, const evs_append *reqs, size_t n, const evs_trim *trim,
                       const evs_watch *watch, size_t nwatch, evs_done_fn done, void *arg,
                       evs_error *err)
{
    if (trim && !trim_ok(trim))
        return evs_err_set(err, EVS_EINVAL, "unknown trim kind %d", (int)trim->kind);
    if (trim && !one_stream(reqs, n))
        return evs_err_set(err, EVS_EINVAL, "a trimming batch must be for one stream");
    wreq *r;
    int rc = build_append(st, reqs, n, &r, err);
    if (rc)
        return rc;
    if (add_watch(r, watch, nwatch)) {
        wreq_free(r);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    if (trim) {
        r->has_trim = true;
        r->trim = *trim;
    }
    r->done = done;
    r->arg = arg;
    return writer_submit(st, r, err);
}

int evs_submit_each(evs_store *st, const evs_append *reqs, size_t n, const evs_watch *watch,
                    size_t nwatch, evs_each_fn done, void *arg, evs_error *err)
{
    wreq *r;
    int rc = build_append(st, reqs, n, &r, err);
    if (rc)
        return rc;
    if (!(r->rcs = calloc(n ? n : 1, sizeof *r->rcs)) || add_watch(r, watch, nwatch)) {
        wreq_free(r);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    r->each = true;
    r->edone = done;
    r->arg = arg;
    return writer_submit(st, r, err);
}

int evs_submit_trim(evs_store *st, const evs_append *reqs, size_t n, const evs_trim *trim,
                    evs_done_fn done, void *arg, evs_error *err)
{
    return evs_submit_watched(st, reqs, n, trim, NULL, 0, done, arg, err);
}

int evs_submit(evs_store *st, const evs_append *reqs, size_t n, evs_done_fn done, void *arg,
               evs_error *err)
{
    return evs_submit_watched(st, reqs, n, NULL, NULL, 0, done, arg, err);
}

/* A synchronous call: submit, then wait on a condition variable for the writer's answer. */
typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
    evs_id *ids;
    size_t count;
    evs_error err;
} waiter;

static void waiter_init(waiter *w, evs_id *ids)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->done = false;
    w->rc = 0;
    w->ids = ids;
    w->count = 0;
    w->err.code = 0;
    w->err.msg[0] = 0;
}

static void waiter_done(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err)
{
    waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    if (!rc && w->ids && ids)
        memcpy(w->ids, ids, n * sizeof *ids);
    w->count = n;
    if (err)
        w->err = *err;
    else if (rc)
        evs_err_set(&w->err, rc, "%s", evs_strerror(rc));
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Wait for a request this thread submitted. The writer is woken first: a hold on this thread
 * (evs_submit_hold) must not leave it waiting for itself. */
static int waiter_wait(evs_store *st, waiter *w, evs_error *err)
{
    evs_submit_wake(st);
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    if (w->rc)
        evs_err_copy(err, &w->err);
    return w->rc;
}

int evs_append_batch(evs_store *st, const evs_append *reqs, size_t n, evs_id *out_ids,
                     evs_error *err)
{
    wreq *r;
    int rc = build_append(st, reqs, n, &r, err);
    if (rc)
        return rc;
    waiter w;
    waiter_init(&w, out_ids);
    r->done = waiter_done;
    r->arg = &w;
    if ((rc = writer_submit(st, r, err)))
        return rc;
    return waiter_wait(st, &w, err);
}

int evs_append_one(evs_store *st, const evs_append *req, evs_id *out_id, evs_error *err)
{
    return evs_append_batch(st, req, 1, out_id, err);
}

static int run_counted(evs_store *st, wreq *r, size_t *count, evs_error *err)
{
    waiter w;
    waiter_init(&w, NULL);
    r->done = waiter_done;
    r->arg = &w;
    int rc = writer_submit(st, r, err);
    if (rc)
        return rc;
    rc = waiter_wait(st, &w, err);
    if (count)
        *count = rc ? 0 : w.count;
    return rc;
}

int evs_delete(evs_store *st, evs_slice name, const evs_id *ids, size_t n, size_t *deleted,
               evs_error *err)
{
    int rc = submit_check_local(st, err);
    if (rc || (rc = check_name(name, err)))
        return rc;
    if (n == 0) {
        if (deleted)
            *deleted = 0;
        return 0;
    }
    wreq *r = wreq_new(WR_DELETE, n);
    if (!r || rec_buf_write(&r->data, name.ptr, name.len)) {
        wreq_free(r);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        r->ops[i].name_len = name.len;
        r->ops[i].id = ids[i];
    }
    return run_counted(st, r, deleted, err);
}

int evs_streams_drop(evs_store *st, const evs_slice *names, size_t n, size_t *dropped,
                     evs_error *err)
{
    if (dropped)
        *dropped = 0;
    int rc = submit_check_local(st, err);
    for (size_t i = 0; i < n && !rc; i++)
        rc = check_name(names[i], err);
    if (rc || n == 0)
        return rc;
    wreq *r = wreq_new(WR_DROP, n);
    if (!r) {
        wreq_free(r);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        r->ops[i].name_off = r->data.len;
        r->ops[i].name_len = names[i].len;
        if (rec_buf_write(&r->data, names[i].ptr, names[i].len)) {
            wreq_free(r);
            return evs_err_set(err, -ENOMEM, "out of memory");
        }
    }
    return run_counted(st, r, dropped, err);
}

int evs_stream_drop(evs_store *st, evs_slice name, bool *existed, evs_error *err)
{
    size_t c = 0;
    int rc = evs_streams_drop(st, &name, 1, &c, err);
    if (existed)
        *existed = c > 0;
    return rc;
}

int evs_trim_stream(evs_store *st, evs_slice name, const evs_trim *trim, uint64_t *removed,
                    evs_error *err)
{
    int rc = submit_check_local(st, err);
    if (rc || (rc = check_name(name, err)))
        return rc;
    if (!trim_ok(trim))
        return evs_err_set(err, EVS_EINVAL, "no trim given");
    wreq *r = wreq_new(WR_TRIM, 1);
    if (!r || rec_buf_write(&r->data, name.ptr, name.len)) {
        wreq_free(r);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    r->ops[0].name_len = name.len;
    r->has_trim = true;
    r->trim = *trim;
    /* plan here, on a snapshot, so that the writer does not walk what the trim removes */
    pthread_rwlock_rdlock(&st->lock);
    stream *s = strtab_get(&st->vtab, name.ptr, name.len, true);
    stream_state snap;
    if (s) {
        snap = s->v;
        store_stream_hold(s); /* streams.c S2 */
    }
    pthread_rwlock_unlock(&st->lock);
    trim_goal goal;
    if (s && snap.length && trim_goal_for(trim, snap.length, snap.bytes, &goal) &&
        reader_trim_scan(st, s, &snap, snap.first_id, &goal, &r->plan, err) == 0) {
        r->has_plan = true;
        r->plan_no = s->no;
        r->plan_ndels = snap.ndels;
        r->plan_moved = snap.moved_pos;
        r->plan_from = snap.first_id;
        r->plan_last = snap.last_id;
    }
    if (s)
        store_stream_put(s);
    size_t c = 0;
    rc = run_counted(st, r, &c, err);
    if (removed)
        *removed = c;
    return rc;
}

int evs_stream_setid(evs_store *st, evs_slice name, evs_id last_id,
                     const uint64_t *entries_added, const evs_id *max_deleted, evs_error *err)
{
    int rc = submit_check_local(st, err);
    if (rc || (rc = check_name(name, err)))
        return rc;
    wreq *r = wreq_new(WR_SETID, 1);
    if (!r || rec_buf_write(&r->data, name.ptr, name.len)) {
        wreq_free(r);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    r->ops[0].name_len = name.len;
    r->ops[0].id = last_id;
    if (entries_added) {
        r->has_added = true;
        r->added = *entries_added;
    }
    if (max_deleted) {
        r->has_maxdel = true;
        r->maxdel = *max_deleted;
    }
    return run_counted(st, r, NULL, err);
}

/* ---- retention's writer requests (retention.c) -------------------------------------------- */

int evs_retention_set(evs_store *st, evs_slice name, const evs_retention *own, evs_error *err)
{
    int rc = submit_check_local(st, err);
    if (rc || (rc = check_name(name, err)))
        return rc;
    wreq *r = wreq_new(WR_RETENTION, 1);
    if (!r || rec_buf_write(&r->data, name.ptr, name.len)) {
        wreq_free(r);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    r->ops[0].name_len = name.len;
    r->ret = (stream_ret){own->max_age_ms, own->max_bytes, own->max_entries};
    size_t unused;
    return run_counted(st, r, &unused, err);
}

int writer_declare(evs_store *st, uint64_t upto, size_t *declared, evs_error *err)
{
    wreq *r = wreq_new(WR_DECLARE, 1);
    if (!r)
        return evs_err_set(err, -ENOMEM, "out of memory");
    r->upto = upto;
    return run_counted(st, r, declared, err);
}

int writer_relocate(evs_store *st, const uint32_t *nos, size_t n, uint64_t below,
                    uint64_t max_bytes, uint64_t *moved, uint64_t *bytes, evs_error *err)
{
    if (max_bytes > st->opt.segment_bytes / 2)
        max_bytes = st->opt.segment_bytes / 2; /* the copies fit in one segment (S3) */
    *moved = *bytes = 0;
    wreq *r = wreq_new(WR_RELOCATE, 1);
    if (!r || rec_buf_write(&r->data, (const char *)nos, n * sizeof *nos)) {
        wreq_free(r);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    uint64_t out[2] = {0, 0};
    r->below = below;
    r->upto = max_bytes;
    r->out = out; /* written by the writer before the request completes */
    int rc = run_counted(st, r, NULL, err);
    *moved = out[0];
    *bytes = out[1];
    return rc;
}

int writer_roll(evs_store *st, evs_error *err)
{
    wreq *r = wreq_new(WR_ROLL, 1);
    if (!r)
        return evs_err_set(err, -ENOMEM, "out of memory");
    size_t unused;
    return run_counted(st, r, &unused, err);
}

int writer_idx_del(evs_store *st, const uint8_t *buf, size_t len, evs_error *err)
{
    wreq *r = wreq_new(WR_IDX_DEL, 1);
    if (!r || rec_buf_reserve(&r->data, len)) {
        wreq_free(r);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    if (len) /* none: only the commit (a test's way to make the index catch up) */
        memcpy(r->data.data, buf, len);
    r->data.len = len;
    size_t unused;
    return run_counted(st, r, &unused, err);
}

int writer_cut(evs_store *st, snap_cut *out, evs_error *err)
{
    memset(out, 0, sizeof *out);
    if (st->opt.read_only) /* no writer, nothing written: the cut is the log as opened */
        return take_cut(st, out) ? evs_err_set(err, -ENOMEM, "out of memory") : 0;
    int rc = writer_check(st, err); /* a follower can be backed up too */
    if (rc)
        return rc;
    wreq *r = wreq_new(WR_CUT, 1);
    if (!r)
        return evs_err_set(err, -ENOMEM, "out of memory");
    r->cut = out;
    size_t unused;
    return run_counted(st, r, &unused, err);
}

int evs_epoch_begin(evs_store *st, evs_epoch *out, evs_error *err)
{
    int rc = submit_check_local(st, err);
    if (rc)
        return rc;
    wreq *r = wreq_new(WR_EPOCH, 1);
    if (!r)
        return evs_err_set(err, -ENOMEM, "out of memory");
    r->epoch = out; /* written by the writer before the request completes */
    size_t unused;
    return run_counted(st, r, &unused, err);
}

int evs_promote(evs_store *st, evs_epoch *out, evs_error *err)
{
    if (!atomic_load(&st->following))
        return evs_err_set(err, EVS_EINVAL, "the store is not a follower");
    int rc = writer_check(st, err);
    if (rc)
        return rc;
    wreq *r = wreq_new(WR_EPOCH, 1);
    if (!r)
        return evs_err_set(err, -ENOMEM, "out of memory");
    r->epoch = out;
    r->promote = true; /* after every frame queued before it: the writer's queue is FIFO */
    size_t unused;
    if ((rc = run_counted(st, r, &unused, err)))
        return rc;
    if ((rc = store_following_unmark(st)))
        evs_log(st, EVS_LOG_WARN, "promoted, but FOLLOWING could not be removed (%s): the next "
                "open begins one more epoch", strerror(-rc));
    return 0; /* the retention thread runs already: from now on it trims as a leader's */
}

int evs_replica_submitv(evs_store *st, uint64_t at, const struct iovec *iov, int iovcnt,
                        evs_done_fn done, void *arg)
{
    evs_error err;
    if (!atomic_load(&st->following))
        return EVS_EINVAL;
    int rc = writer_check(st, &err);
    if (rc)
        return rc;
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    wreq *r = wreq_pooled(st, 1); /* a frame is up to 1 MiB: reuse, not mmap and munmap */
    if (r) {
        r->kind = WR_REPLICA;
        r->ops[0] = (wop){0};
    }
    else
        r = wreq_new(WR_REPLICA, 1);
    if (!r || rec_buf_reserve(&r->data, len)) {
        wreq_free(r);
        return -ENOMEM;
    }
    r->pool = st;
    for (int i = 0; i < iovcnt; i++)
        if (iov[i].iov_len) {
            memcpy(r->data.data + r->data.len, iov[i].iov_base, iov[i].iov_len);
            r->data.len += iov[i].iov_len;
        }
    r->upto = at;
    r->done = done;
    r->arg = arg;
    return writer_submit(st, r, NULL);
}

int evs_replica_submit(evs_store *st, uint64_t at, const void *bytes, size_t len,
                       evs_done_fn done, void *arg)
{
    struct iovec v = {(void *)bytes, len};
    return evs_replica_submitv(st, at, &v, 1, done, arg);
}
