/*
 * retention.c — old data leaves by policy: per-stream trims by age, bytes and count, deletion
 * of segments no stream needs, and sealing an old active segment so that it can go too.
 *
 * Invariants:
 *  R1. No reader ever reads a position below its stream's first live entry (reader.c), and a
 *      stream's first_pos only moves forward, by trim records. So once every live stream's
 *      first_pos is at or past a segment's end, nothing will read that segment again, except
 *      an iterator opened before the trim that moved past it (it reads an error) — and a batch
 *      the visibility cap holds, which no stream state shows yet: a segment is kept from the
 *      first held batch's start on (needed_from).
 *  R2. A segment is deleted only after every live stream and group whose create (or last
 *      declare / snapshot) record lies in it has been re-declared at the log's head, durably
 *      and indexed (writer_declare): an index rebuilt from the remaining log is complete.
 *  R3. Deletion order: the segment leaves the store's table (readers can no longer reach it),
 *      then its file is renamed to `.deleted`; once the last reference to it is dropped (an
 *      iterator on its records, a snapshot or a follower's frame holding it) the releaser
 *      cuts and unlinks it; a leftover `.deleted` file is removed on open. The index never
 *      points at a deleted segment for a live entry.
 *  R4. Retention only ever submits ordinary writer requests: appends are never blocked by it
 *      beyond sharing the writer (one trim record per stream that needs one, per pass).
 *  R5. Age is judged by append time clamped to now: a record stamped in the future (clock
 *      stepped back) is as young as now, so it cannot pin a segment forever.
 *  R6. Index keys that name only entries below a stream's first entry go when a pass has
 *      trimmed, and before it deletes a segment (index_gc; the index first, then the file):
 *      `ids` and `times` keys but each stream's last one below its first entry (the floor
 *      every read from there seeks), tombstones, and filter groups whose entries all lie
 *      below it (postings P4). Nothing reads there (R1; reader.c clamps every range to the
 *      first entry), so the index stops growing with all history. The keys go through the
 *      writer's index batch, GC_CHUNK at a time, each chunk committed before the next.
 *  R7. A segment kept only by small streams without an age limit is freed by relocating them
 *      first (relocate_pinning below): their live entries are copied to the head, durably
 *      and indexed, and their first positions move past the segment once readers see it.
 *  R8. An idempotency key leaves the index once it is past EVS_IDEM_WINDOW_US (idem_gc): the
 *      `idem_time` rows older than that go, each with its `idem` row if that one is as old
 *      (a key used again since has a newer row: kept). Every pass, on a follower too, in
 *      GC_CHUNK requests like R6's; the log keeps the records (they leave with their segment).
 *  R9. A pass never holds the store's lock for a walk of every stream: its walks take it a
 *      chunk of streams at a time, in number order (walk_visible), and copy only the
 *      streams it may trim.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "index.h"
#include "internal.h"
#include "postings.h"

#define RET_DEFAULT_INTERVAL_MS 1000

/* A stream's limits in force: its own where set (non-zero), else the store's default. */
static stream_ret effective(const evs_store *st, const stream_ret *own)
{
    const evs_retention *d = &st->opt.retention;
    stream_ret e = {own->max_age_ms ? own->max_age_ms : d->max_age_ms,
                    own->max_bytes ? own->max_bytes : d->max_bytes,
                    own->max_entries ? own->max_entries : d->max_entries};
    if (e.max_age_ms == RET_NONE)
        e.max_age_ms = 0;
    if (e.max_bytes == RET_NONE)
        e.max_bytes = 0;
    if (e.max_entries == RET_NONE)
        e.max_entries = 0;
    return e; /* 0: no limit */
}

int evs_retention_get(evs_store *st, evs_slice name, evs_retention *own, evs_retention *eff)
{
    pthread_rwlock_rdlock(&st->lock);
    stream *s = strtab_get(&st->vtab, name.ptr, name.len, true);
    stream_ret r = s ? s->v.ret : (stream_ret){0, 0, 0};
    pthread_rwlock_unlock(&st->lock);
    if (!s)
        return EVS_ENOTFOUND;
    if (own)
        *own = (evs_retention){r.max_age_ms, r.max_bytes, r.max_entries};
    if (eff) {
        stream_ret e = effective(st, &r);
        *eff = (evs_retention){e.max_age_ms, e.max_bytes, e.max_entries};
    }
    return 0;
}

/* ---- one pass ----------------------------------------------------------------------------- */

typedef struct snap {
    uint8_t *name;
    size_t len;
    stream_state v;
} snap;

/*
 * R9. The pass's walks of every visible stream (the streams to trim, the lowest position still
 * needed, whether to seal by age, the streams whose index keys to clean, those to relocate)
 * hold st->lock for WALK_CHUNK streams at a time, in number order, so that publishes
 * (whose visibility takes the lock to write) never wait for a walk of the whole store:
 * 500,000 streams held it ~100 ms a pass, once a second. By number a stream never moves
 * (numbers are not reused: streams.c S4); what the walk can miss is a stream made visible
 * meanwhile below the cursor, whose entries all lie in the active segment or past it (or past
 * the first held batch's start, which needed_from counts), and first positions only grow (R1):
 * the lowest position found is never above the truth, and a trim missed is made at the next
 * pass.
 */
#define WALK_CHUNK 4096

static void walk_visible(evs_store *st, bool (*visit)(evs_store *, stream *, void *), void *arg)
{
    pthread_rwlock_rdlock(&st->lock);
    size_t k = 0;
    NUMTAB_EACH(&st->vtab.byno, no) {
        if (++k % WALK_CHUNK == 0) { /* (the table may change meanwhile: the next is looked up) */
            pthread_rwlock_unlock(&st->lock);
            pthread_rwlock_rdlock(&st->lock);
        }
        stream *s = numtab_get(&st->vtab.byno, (uint32_t)no);
        if (s && !visit(st, s, arg))
            break; /* the visit has seen enough */
    }
    pthread_rwlock_unlock(&st->lock);
}

struct snap_walk {
    snap *a;
    size_t n, cap;
    uint64_t min_age_ms; /* the smallest age limit in force (0: none) */
    int rc;
};

static bool snap_visit(evs_store *st, stream *s, void *arg)
{
    struct snap_walk *w = arg;
    stream_ret e = effective(st, &s->v.ret);
    if (e.max_age_ms && (!w->min_age_ms || e.max_age_ms < w->min_age_ms))
        w->min_age_ms = e.max_age_ms;
    if (!s->v.length || !((e.max_entries && s->v.length > e.max_entries) ||
                          (e.max_bytes && s->v.bytes > e.max_bytes) || e.max_age_ms))
        return true; /* nothing to trim: no copy */
    if (arr_room(&w->a, w->n, &w->cap, sizeof *w->a, 64)) {
        w->rc = -ENOMEM;
        return false;
    }
    snap *sn = &w->a[w->n];
    if (!(sn->name = malloc(s->name_len ? s->name_len : 1))) {
        w->rc = -ENOMEM;
        return false;
    }
    memcpy(sn->name, s->name, s->name_len);
    sn->len = s->name_len;
    sn->v = s->v;
    w->n++;
    return true;
}

/* The name and state of every visible stream the pass may trim (one with entries and a limit
 * it passes, or an age limit), and the smallest age limit of all (R9's walk). */
static int snapshot_streams(evs_store *st, snap **out, size_t *n, uint64_t *min_age_ms)
{
    struct snap_walk w = {NULL, 0, 0, 0, 0};
    walk_visible(st, snap_visit, &w);
    *out = w.a;
    *n = w.n;
    *min_age_ms = w.min_age_ms;
    return w.rc;
}

static void snaps_free(snap *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(a[i].name);
    free(a);
}

/* The ID below which entries are older than cutoff_us (append time, R5), or false if none. */
static bool age_cut(evs_store *st, const snap *sn, uint64_t cutoff_us, evs_id *minid)
{
    evs_query q;
    evs_query_init(&q);
    q.limit = 1;
    evs_iter *it;
    evs_error err;
    const evs_entry *e;
    if (evs_iter_open(st, (evs_slice){sn->name, sn->len}, &q, &it, &err))
        return false;
    bool old = evs_iter_next(it, &e, &err) == 1 && e->time_us < cutoff_us;
    evs_iter_close(it);
    if (!old)
        return false;
    q.min_time_us = cutoff_us;
    if (evs_iter_open(st, (evs_slice){sn->name, sn->len}, &q, &it, &err))
        return false;
    if (evs_iter_next(it, &e, &err) == 1) {
        *minid = e->id; /* the first young entry stays */
    } else {
        *minid = sn->v.last_id; /* all are old */
        evs_id_next(minid);
    }
    evs_iter_close(it);
    return true;
}

static uint64_t trim(evs_store *st, const snap *sn, const evs_trim *t)
{
    uint64_t removed = 0;
    evs_error err;
    int rc = evs_trim_stream(st, (evs_slice){sn->name, sn->len}, t, &removed, &err);
    if (rc && rc != EVS_ENOTFOUND && rc != EVS_ECLOSED)
        evs_log(st, EVS_LOG_WARN, "retention: cannot trim a stream: %s", err.msg);
    return rc ? 0 : removed;
}

/* Trim every stream to its limits. */
static uint64_t trim_all(evs_store *st, const snap *a, size_t n)
{
    uint64_t now = evs_now_us(), trimmed = 0;
    for (size_t i = 0; i < n; i++) {
        stream_ret e = effective(st, &a[i].v.ret);
        if (!a[i].v.length)
            continue;
        if (e.max_entries && a[i].v.length > e.max_entries) {
            evs_trim t = {EVS_TRIM_MAXLEN, false, e.max_entries, EVS_ID_MIN, 0, 0};
            trimmed += trim(st, &a[i], &t);
        }
        if (e.max_bytes && a[i].v.bytes > e.max_bytes) {
            evs_trim t = {EVS_TRIM_MAXBYTES, false, 0, EVS_ID_MIN, 0, e.max_bytes};
            trimmed += trim(st, &a[i], &t);
        }
        evs_id minid;
        if (e.max_age_ms && now > e.max_age_ms * 1000 &&
            age_cut(st, &a[i], now - e.max_age_ms * 1000, &minid)) {
            evs_trim t = {EVS_TRIM_MINID, false, 0, minid, 0, 0};
            trimmed += trim(st, &a[i], &t);
        }
    }
    return trimmed;
}

/*
 * Whether to seal the active segment now so that retention by age can delete it later (R5):
 * its first record is older than the age limit of every live stream with entries in it (of
 * all streams' smallest limit, min_age_ms, if none has). A stream kept without an age limit
 * pins the segment whatever its age: sealing it then only makes new segments, one per pass
 * (measured: a backlog stream with MAXAGE 1ms beside a busy stream without a limit sealed a
 * mostly empty segment every pass, and publish p99 doubled; docs/benchmarks.md, retention).
 */
struct age_walk {
    uint64_t base; /* the active segment's */
    uint64_t age;  /* the largest age limit of the streams with entries in it */
    bool pinned;   /* one of them has none */
};

static bool age_visit(evs_store *st, stream *s, void *arg)
{
    struct age_walk *w = arg;
    if (!s->v.length || (s->v.last_pos != REC_POS_NONE && s->v.last_pos < w->base))
        return true; /* nothing of it in the active segment */
    uint64_t a = effective(st, &s->v.ret).max_age_ms;
    if (!a)
        w->pinned = true;
    if (a > w->age)
        w->age = a;
    return !w->pinned;
}

static bool age_roll_due(evs_store *st, uint64_t min_age_ms)
{
    if (!min_age_ms)
        return false;
    pthread_rwlock_rdlock(&st->lock);
    struct age_walk w = {st->nsegs ? st->segs[st->nsegs - 1]->base : 0, 0, false};
    pthread_rwlock_unlock(&st->lock);
    walk_visible(st, age_visit, &w);
    if (w.pinned)
        return false;
    uint64_t age = w.age ? w.age : min_age_ms;
    uint64_t first = atomic_load(&st->active_first_us), now = evs_now_us();
    return first && (first > now ? now : first) + age * 1000 < now;
}

/* The lowest log position a live stream, an iterator open now, or a batch the visibility cap
 * holds still needs (R1; reader.c R2). Held batches (--ack all waiting for its followers) are
 * written but seen by no reader yet, so no stream state counts them: without their start here
 * a pass deleted the segments they were in once nothing visible needed them, and they became
 * visible over deleted segments. */
static bool low_visit(evs_store *st, stream *s, void *arg)
{
    (void)st;
    uint64_t *low = arg;
    if (s->v.length) /* an untracked first entry (old trim records): keep everything */
        *low = s->v.first_pos == REC_POS_NONE ? 0 : s->v.first_pos < *low ? s->v.first_pos : *low;
    return true;
}

static uint64_t needed_from(evs_store *st)
{
    uint64_t low = reader_lowest_listed(st);
    pthread_rwlock_rdlock(&st->lock);
    uint64_t held = store_visible_end(st, UINT64_MAX); /* where held batches start, if any */
    pthread_rwlock_unlock(&st->lock);
    if (held < low)
        low = held;
    walk_visible(st, low_visit, &low); /* R9 */
    return low;
}

static int remove_first(evs_store *st, segment *s, size_t declared, evs_retention_report *rep);

/*
 * R7. Relocation: when the oldest sealed segments are kept only by streams whose live entries
 * are few (each at most RELOC_STREAM_MAX of its record bytes), their live entries are
 * re-appended at the head (writer_relocate: one atomic group of REC_F_MOVED copies per stream,
 * durable and indexed before it returns), and the segments can go. Without it a `MAXLEN 50`
 * stream written once a day kept 50 days of the whole log. A stream with more live bytes keeps
 * pinning (copying it forward at every deletion would rewrite it for ever), and so does one
 * with an age limit (its entries leave by themselves within that age); a relocated stream is
 * copied again only once the log has turned over up to its copies.
 *
 * What is copied is at most a quarter of what it frees (RELOC_TOTAL_DIV): the streams below
 * the end of the oldest segment if that holds, else those below the end of the second oldest
 * (freeing both), and so on up to RELOC_SEGS segments. Judged on the oldest segment alone, a
 * segment holding more small live streams than a quarter of it pinned the log for ever, and
 * every segment after it, however empty: relocations themselves gather the streams they move
 * into the head segments, so a store creating and dropping streams quickly stopped freeing
 * space after a few seconds (session 34: 1 MiB segments, 2,730 relocated streams in one).
 * The streams go RELOC_CHUNK to a writer request, each durable and indexed before the next;
 * the segments go only once all are copied.
 */
#define RELOC_STREAM_DIV 16 /* RELOC_STREAM_MAX: a sixteenth of a segment (4 MiB by default)  */
#define RELOC_TOTAL_DIV 4   /* the copies: at most a quarter of the bytes they free           */
#define RELOC_SEGS 64       /* the oldest segments one relocation may free                   */
#define RELOC_CHUNK 4096    /* streams a writer request relocates: the writer takes other
                               requests between (80,000 in one held publishes for ~1 s)        */

struct pinner {
    uint64_t first_pos, bytes;
    uint32_t no;
};

struct pin_walk {
    uint64_t end, stream_max;
    struct pinner *p; /* the small streams with entries below end */
    size_t n, cap;
    uint64_t big_low; /* the lowest first position of a stream that cannot move */
    bool nomem;
};

static bool pin_visit(evs_store *st, stream *s, void *arg)
{
    struct pin_walk *w = arg;
    if (!s->v.length || (s->v.first_pos != REC_POS_NONE && s->v.first_pos >= w->end))
        return true;
    if (s->v.first_pos == REC_POS_NONE) { /* an untracked first entry: none below can go */
        w->big_low = 0;
        return false;
    }
    /* v.bytes is 0 in states written before it was counted: the writer measures */
    if (s->v.bytes > w->stream_max || effective(st, &s->v.ret).max_age_ms) {
        if (s->v.first_pos < w->big_low)
            w->big_low = s->v.first_pos;
        return true;
    }
    if (arr_room(&w->p, w->n, &w->cap, sizeof *w->p, 64)) {
        w->nomem = true;
        return false;
    }
    w->p[w->n++] = (struct pinner){s->v.first_pos, s->v.bytes, s->no};
    return true;
}

static int by_first_pos(const void *a, const void *b)
{
    uint64_t x = ((const struct pinner *)a)->first_pos, y = ((const struct pinner *)b)->first_pos;
    return x < y ? -1 : x > y;
}

/* Relocate the small streams pinning the oldest segments, if copying them frees at least four
 * times their bytes (above). 1 if the streams below the end of the oldest segment were all
 * moved, 0 if not worth it or not possible now. */
static int relocate_pinning(evs_store *st, uint64_t end0, evs_retention_report *rep)
{
    uint64_t stream_max = st->opt.segment_bytes / RELOC_STREAM_DIV;
    uint64_t ends[RELOC_SEGS], base = 0;
    size_t nends = 0;
    pthread_rwlock_rdlock(&st->lock);
    if (st->nsegs > 1)
        base = st->segs[0]->base;
    for (size_t i = 0; i + 1 < st->nsegs && nends < RELOC_SEGS; i++) /* sealed ones (S3) */
        ends[nends++] = st->segs[i]->base + atomic_load(&st->segs[i]->size);
    pthread_rwlock_unlock(&st->lock);
    if (!nends || ends[0] != end0)
        return 0; /* the table moved meanwhile: the next pass looks again */
    struct pin_walk w = {ends[nends - 1], stream_max, NULL, 0, 0, UINT64_MAX, false};
    walk_visible(st, pin_visit, &w); /* R9 */
    uint64_t end = 0;
    size_t n = 0;
    if (!w.nomem && w.n) {
        qsort(w.p, w.n, sizeof *w.p, by_first_pos);
        uint64_t total = 0;
        for (size_t j = 0; j < nends && ends[j] <= w.big_low; j++) {
            while (n < w.n && w.p[n].first_pos < ends[j])
                total += w.p[n++].bytes;
            if (total <= (ends[j] - base) / RELOC_TOTAL_DIV) {
                end = ends[j];
                break;
            }
        }
    }
    int done = end != 0 && n > 0; /* (none: an open iterator holds the segment) */
    if (done) {
        uint32_t *nos = malloc(n * sizeof *nos);
        for (size_t i = 0; nos && i < n; i++)
            nos[i] = w.p[i].no;
        evs_error err;
        uint64_t t0 = evs_mono_ns(), moved = 0, bytes = 0;
        int rc = nos ? 0 : -ENOMEM;
        for (size_t i = 0; i < n && !rc; i += RELOC_CHUNK) { /* others' writes in between */
            uint64_t m = 0, b = 0;
            rc = writer_relocate(st, nos + i, n - i < RELOC_CHUNK ? n - i : RELOC_CHUNK, end,
                                 stream_max, &m, &b, &err);
            moved += m;
            bytes += b;
        }
        free(nos);
        if (rc && rc != EVS_ECLOSED && rc != EVS_ENOSPACE && rc != -ENOMEM)
            evs_log(st, EVS_LOG_WARN, "retention: cannot relocate streams: %s", err.msg);
        rep->streams_relocated += moved;
        rep->bytes_relocated += bytes;
        atomic_fetch_add(&st->n_relocated, moved);
        atomic_fetch_add(&st->n_bytes_relocated, bytes);
        if (moved) /* (also those a failed request had copied) */
            evs_log(st, EVS_LOG_INFO, "retention: relocated %" PRIu64 " small streams (%" PRIu64
                    " bytes, %.1f ms) that alone kept the log below position %" PRIu64, moved,
                    bytes, (double)(evs_mono_ns() - t0) / 1e6, end);
        done = !rc; /* the caller checks what is still needed */
    }
    free(w.p);
    return done;
}

/* Whether the first segment may go now: sealed (not the last), ending at or below `limit`
 * (a follower's leader's log start) and below every live stream's first entry. */
static bool first_deletable(evs_store *st, uint64_t limit)
{
    pthread_rwlock_rdlock(&st->lock);
    segment *s = st->nsegs > 1 ? st->segs[0] : NULL;
    uint64_t end = s ? s->base + atomic_load(&s->size) : 0;
    pthread_rwlock_unlock(&st->lock);
    return s && end <= limit && end <= needed_from(st);
}

/* Delete the oldest segment if no live entry needs it (after relocating the small streams
 * that alone need it, R7). 1 deleted, 0 nothing to do, < 0 error. */
static int delete_oldest(evs_store *st, evs_retention_report *rep, evs_error *err)
{
    pthread_rwlock_rdlock(&st->lock);
    /* never the last (active) one; one with a successor is sealed (S3) */
    segment *s = st->nsegs > 1 ? st->segs[0] : NULL;
    uint64_t end = s ? s->base + atomic_load(&s->size) : 0;
    pthread_rwlock_unlock(&st->lock);
    if (!s)
        return 0;
    if (end > needed_from(st) && (!relocate_pinning(st, end, rep) || end > needed_from(st)))
        return 0;
    size_t declared = 0;
    int rc = writer_declare(st, end, &declared, err); /* R2 */
    if (rc)
        return rc;
    if (end > needed_from(st))
        return 0; /* cannot happen (first positions only grow), but never guess */
    return remove_first(st, s, declared, rep);
}

/* Take segment s, the first, out of the log and delete its file. 1, or 0 if it is not the
 * first any more. */
static int remove_first(evs_store *st, segment *s, size_t declared, evs_retention_report *rep)
{
    pthread_rwlock_wrlock(&st->lock);
    if (st->nsegs < 2 || st->segs[0] != s) {
        pthread_rwlock_unlock(&st->lock);
        return 0;
    }
    segment *succ = st->segs[1];
    store_seg_hold_fd(succ); /* (its pending_name only) */
    pthread_rwlock_unlock(&st->lock);
    /* D3: s's successor has its segment name before s goes (only its roll job and those
     * before it: not the whole queue); a failed store deletes nothing more */
    prep_wait_named(st, succ);
    bool named = !atomic_load(&succ->pending_name);
    store_seg_put_fd(succ);
    if (!named)
        return 0;
    pthread_rwlock_wrlock(&st->lock);
    if (st->nsegs < 2 || st->segs[0] != s) {
        pthread_rwlock_unlock(&st->lock);
        return 0;
    }
    memmove(st->segs, st->segs + 1, (st->nsegs - 1) * sizeof *st->segs);
    st->nsegs--;
    atomic_store(&s->evictable, false); /* before the table lets go (segment.c M4) */
    pthread_rwlock_unlock(&st->lock);
    char from[PATH_MAX], to[PATH_MAX + 16];
    snprintf(from, sizeof from, "%s/%s", st->logdir, s->name);
    snprintf(to, sizeof to, "%s/%s.deleted", st->logdir, s->name);
    uint64_t bytes = atomic_load(&s->size);
    int mv = st->io->rename(from, to);
    if (mv == 0 && store_seg_zombie(st, s))
        rel_delete(st, to); /* no memory to wait for its readers: at once, as before */
    else if (mv != 0)
        evs_log(st, EVS_LOG_WARN, "retention: cannot rename %s: %s", from, strerror(-mv));
    evs_log(st, EVS_LOG_INFO,
            "retention: deleted segment %s (%" PRIu64 " bytes); %zu streams re-declared",
            s->name, bytes, declared);
    store_seg_put(s); /* the table's reference; readers holding one keep their mapping */
    rep->segments_deleted++;
    rep->bytes_deleted += bytes;
    atomic_fetch_add(&st->n_segs_deleted, 1);
    atomic_fetch_add(&st->n_bytes_deleted, bytes);
    return 1;
}

/*
 * A follower's retention: it writes nothing of its own (the leader's trim and declare records
 * arrive through the log), it only deletes the segments the leader has deleted: whole
 * segments ending at or below the leader's log start (evs_replica_leader_start), and only if
 * no live entry of its own state needs them (the same rule as the leader's).
 */
static int follow_deletions(evs_store *st, evs_retention_report *rep)
{
    uint64_t lstart = atomic_load(&st->leader_start);
    for (;;) {
        pthread_rwlock_rdlock(&st->lock);
        segment *s = st->nsegs > 1 ? st->segs[0] : NULL;
        uint64_t end = s ? s->base + atomic_load(&s->size) : 0;
        pthread_rwlock_unlock(&st->lock);
        if (!s || end > lstart || end > needed_from(st) || !s->sealed)
            return 0;
        if (remove_first(st, s, 0, rep) != 1)
            return 0;
    }
}

void evs_replica_leader_start(evs_store *st, uint64_t pos)
{
    uint64_t cur = atomic_load(&st->leader_start);
    if (pos > cur)
        atomic_store(&st->leader_start, pos);
}

/* ---- the index clean-up (R6) --------------------------------------------------------------- */

#define GC_CHUNK 1024 /* keys per writer request: a few milliseconds of the writer's time */

typedef struct gc {
    evs_store *st;
    uint8_t *b;
    size_t len, cap, n;
    uint64_t total;
    int rc;
    evs_error *err;
} gc;

static void gc_flush(gc *g)
{
    if (g->n && !g->rc)
        g->rc = writer_idx_del(g->st, g->b, g->len, g->err);
    g->len = g->n = 0;
}

static void gc_add_older(gc *g, enum idx_table t, const void *k, size_t kl, uint64_t before);

static void gc_add(gc *g, enum idx_table t, const void *k, size_t kl)
{
    gc_add_older(g, t, k, kl, 0);
}

/* before != 0: the key goes only if its value ends in a time below it (IDX_DEL_OLDER) */
static void gc_add_older(gc *g, enum idx_table t, const void *k, size_t kl, uint64_t before)
{
    if (g->rc)
        return;
    size_t extra = before ? 8 : 0;
    if (g->len + 3 + kl + extra > g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 64 * 1024;
        uint8_t *nb = realloc(g->b, cap);
        if (!nb) {
            g->rc = evs_err_set(g->err, -ENOMEM, "out of memory");
            return;
        }
        g->b = nb;
        g->cap = cap;
    }
    g->b[g->len] = (uint8_t)(t | (before ? IDX_DEL_OLDER : 0));
    g->b[g->len + 1] = (uint8_t)(kl >> 8);
    g->b[g->len + 2] = (uint8_t)kl;
    memcpy(g->b + g->len + 3, k, kl);
    if (before)
        idx_be64(g->b + g->len + 3 + kl, before);
    g->len += 3 + kl + extra;
    g->n++;
    g->total++;
}

static bool gc_full(const gc *g) { return g->n >= GC_CHUNK || g->rc; }

/* Keys of `t` with prefix `no` in key order, while their ID (the key's, or the value's with
 * by_value) is below `first`; all but the last when keep_floor (and no key at exactly `first`
 * follows: then that one is the floor). True if it stopped with the chunk full (the rest: a
 * later scan, once these are gone). */
static bool gc_sorted(gc *g, idx_rtxn *r, enum idx_table t, uint32_t no, evs_id first,
                      bool by_value, bool keep_floor)
{
    idx_cur *c;
    if (idx_cur_open(r, t, &c))
        return false;
    uint8_t pre[4], held[IDX_IDKEY];
    idx_be32(pre, no);
    size_t heldl = 0;
    const void *k, *v;
    size_t kl, vl;
    bool exact = false, full = false;
    for (int rc = idx_cur_get(c, IDX_GE, pre, 4, &k, &kl, &v, &vl); rc == 0;
         rc = idx_cur_get(c, IDX_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
        if (kl < 4 || memcmp(k, pre, 4) || kl > sizeof held)
            break;
        const uint8_t *src = by_value ? v : (const uint8_t *)k + 4;
        if ((by_value ? vl : kl - 4) < 16)
            break;
        evs_id id = {idx_rd64(src), idx_rd64(src + 8)};
        int cmp = evs_id_cmp(id, first);
        if (cmp >= 0) {
            exact = cmp == 0 && !by_value;
            break;
        }
        if (heldl) {
            gc_add(g, t, held, heldl);
            if (gc_full(g)) {
                full = true; /* what follows: the next scan, once these are gone */
                break;
            }
        }
        memcpy(held, k, kl);
        heldl = kl;
    }
    if (!full && heldl && (!keep_floor || exact))
        gc_add(g, t, held, heldl);
    idx_cur_close(c);
    return full;
}

/* Filter groups of stream `no` whose last entry is below `first`. True as gc_sorted. */
static bool gc_filters(gc *g, idx_rtxn *r, enum idx_table t, uint32_t no, evs_id first,
                       bool by_value, bool keep_floor)
{
    (void)by_value, (void)keep_floor;
    idx_cur *c;
    if (idx_cur_open(r, t, &c))
        return false;
    uint8_t pre[4];
    idx_be32(pre, no);
    const void *k, *v;
    size_t kl, vl;
    bool full = false;
    for (int rc = idx_cur_get(c, IDX_GE, pre, 4, &k, &kl, &v, &vl); rc == 0 && !full;
         rc = idx_cur_get(c, IDX_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
        if (kl != IDX_FILTKEY || memcmp(k, pre, 4))
            break;
        post_iter pi;
        post_iter_init(&pi, v, vl);
        evs_id id, last = EVS_ID_MAX;
        uint64_t pos;
        while (post_next(&pi, &id, &pos))
            last = id;
        if (!pi.bad && evs_id_cmp(last, first) < 0) {
            gc_add(g, t, k, kl);
            full = gc_full(g);
        }
    }
    idx_cur_close(c);
    return full;
}

struct live {
    stream *s;
    evs_id first;
};

struct moved_walk {
    struct live *l; /* the streams whose first entry moved since their last clean-up */
    size_t n, cap;
    bool nomem;
};

static bool moved_visit(evs_store *st, stream *s, void *arg)
{
    (void)st;
    struct moved_walk *w = arg;
    evs_id first = s->v.first_id;
    if (!s->v.length) { /* all gone: everything up to the last ID is below */
        first = s->v.last_id;
        evs_id_next(&first);
    }
    if (evs_id_cmp(first, s->gc_first) <= 0)
        return true;
    if (arr_room(&w->l, w->n, &w->cap, sizeof *w->l, 64)) {
        w->nomem = true;
        return false;
    }
    store_stream_hold(s); /* used after the walk (streams.c S2) */
    w->l[w->n++] = (struct live){s, first};
    return true;
}

static void live_free(struct live *l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_stream_put(l[i].s);
    free(l);
}

/* R6, for the streams whose first entry moved since their last clean-up (retention's own
 * field, stream.gc_first). Returns the keys deleted (0 on error: a later pass tries again). */
static uint64_t index_gc(evs_store *st, evs_error *err)
{
    struct moved_walk w = {NULL, 0, 0, false};
    walk_visible(st, moved_visit, &w); /* R9 */
    struct live *l = w.l;
    size_t n = w.n;
    if (w.nomem) {
        live_free(l, n);
        return 0;
    }
    static const struct scan {
        bool (*fn)(gc *, idx_rtxn *, enum idx_table, uint32_t, evs_id, bool, bool);
        enum idx_table t;
        bool by_value, keep_floor;
    } scans[] = {{gc_sorted, IDX_IDS, false, true}, {gc_sorted, IDX_TIMES, true, true},
                 {gc_sorted, IDX_DELS, false, false}, {gc_filters, IDX_FILT, false, false}};
    gc g = {st, NULL, 0, 0, 0, 0, 0, err};
    idx_rtxn *r = NULL;
    for (size_t i = 0; i < n && !g.rc; i++) {
        bool done = true;
        for (size_t j = 0; j < sizeof scans / sizeof *scans && !g.rc; j++) {
            const struct scan *sc = &scans[j];
            bool more = true;
            for (int round = 0; more && round < 4096 && !g.rc; round++) {
                if (!r && idx_rbegin(st->idx, &r)) {
                    r = NULL;
                    g.rc = EVS_EFAILED;
                    break;
                }
                more = sc->fn(&g, r, sc->t, l[i].s->no, l[i].first, sc->by_value, sc->keep_floor);
                if (gc_full(&g)) { /* the writer only once the read transaction has ended: a
                                    * reader holds the map's lock the writer takes to grow it */
                    idx_rend(r);
                    r = NULL;
                    gc_flush(&g);
                }
            }
            done = done && !more;
        }
        if (r && (i + 1) % 256 == 0) { /* a fresh snapshot now and then: old pages get reused */
            idx_rend(r);
            r = NULL;
        }
        if (done && !g.rc)
            l[i].s->gc_first = l[i].first; /* its keys still to delete are in g: flushed below */
    }
    if (r)
        idx_rend(r);
    gc_flush(&g);
    if (g.rc) /* some of those marked done may not be: judge them all again next time */
        for (size_t i = 0; i < n; i++)
            l[i].s->gc_first = EVS_ID_MIN;
    free(g.b);
    live_free(l, n);
    if (g.rc && g.rc != EVS_ECLOSED)
        evs_log(st, EVS_LOG_WARN, "retention: index clean-up stopped: %s", err->msg);
    return g.rc ? 0 : g.total;
}

/* R8: the idempotency keys past their window. Returns the index keys deleted (0 on error: a
 * later pass tries again). */
static uint64_t idem_gc(evs_store *st, evs_error *err)
{
    uint64_t now = evs_now_us();
    if (now < EVS_IDEM_WINDOW_US)
        return 0;
    uint64_t cutoff = now - EVS_IDEM_WINDOW_US; /* a key stamped below it is expired */
    gc g = {st, NULL, 0, 0, 0, 0, 0, err};
    for (bool more = true; more && !g.rc;) {
        idx_rtxn *r;
        idx_cur *c;
        if (idx_rbegin(st->idx, &r)) {
            g.rc = EVS_EFAILED;
            break;
        }
        if (idx_cur_open(r, IDX_IDEM_TIME, &c)) {
            idx_rend(r);
            break;
        }
        const void *k, *v;
        size_t kl, vl;
        more = false;
        for (int rc = idx_cur_get(c, IDX_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == 0;
             rc = idx_cur_get(c, IDX_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
            if (kl >= 8 && idx_rd64(k) >= cutoff)
                break;
            const void *iv;
            size_t ivl;
            const uint8_t *ik = (const uint8_t *)k + 8; /* (a malformed row just goes) */
            if (kl >= 12 && kl <= IDX_IDEM_TIME_KEY_MAX &&
                idx_get(r, IDX_IDEM, ik, kl - 8, &iv, &ivl) == 0 && ivl == 48 &&
                idx_rd64((const uint8_t *)iv + 40) < cutoff) /* and still, when applied: a */
                gc_add_older(&g, IDX_IDEM, ik, kl - 8, cutoff); /* key used again is kept */
            gc_add(&g, IDX_IDEM_TIME, k, kl);
            if (gc_full(&g)) {
                more = true; /* the rest once these are gone */
                break;
            }
        }
        idx_cur_close(c);
        idx_rend(r); /* before the writer: a reader holds the map's lock it grows under */
        gc_flush(&g);
    }
    free(g.b);
    if (g.rc && g.rc != EVS_ECLOSED)
        evs_log(st, EVS_LOG_WARN, "retention: expiring idempotency keys stopped: %s", err->msg);
    return g.rc ? 0 : g.total;
}

int evs_retention_run(evs_store *st, evs_retention_report *out, evs_error *err)
{
    evs_retention_report rep = {0, 0, 0, 0, 0, 0};
    if (atomic_load(&st->following) && !st->opt.read_only) {
        pthread_mutex_lock(&st->ret_mu);
        if (first_deletable(st, atomic_load(&st->leader_start))) /* R6: the index first */
            rep.index_keys_deleted = index_gc(st, err);
        rep.index_keys_deleted += idem_gc(st, err);
        follow_deletions(st, &rep);
        pthread_mutex_unlock(&st->ret_mu);
        if (out)
            *out = rep;
        return 0;
    }
    if (st->opt.read_only)
        return evs_err_set(err, EVS_EREADONLY, "store is open read-only");
    pthread_mutex_lock(&st->ret_mu);
    snap *a;
    size_t n;
    uint64_t min_age = 0;
    int rc = snapshot_streams(st, &a, &n, &min_age);
    if (!rc) {
        rep.trimmed = trim_all(st, a, n);
        atomic_fetch_add(&st->n_ret_trimmed, rep.trimmed);
    }
    snaps_free(a, n);
    if (!rc && age_roll_due(st, min_age))
        rc = writer_roll(st, err);
    /* R6, the index first: the keys below the first entries go, committed by the declare that
     * precedes the first deletion (writer_declare), before any file does */
    if (!rc && (rep.trimmed || first_deletable(st, UINT64_MAX)))
        rep.index_keys_deleted = index_gc(st, err);
    while (!rc && (rc = delete_oldest(st, &rep, err)) == 1)
        rc = 0;
    if (!rc)
        rep.index_keys_deleted += idem_gc(st, err);
    pthread_mutex_unlock(&st->ret_mu);
    if (rc == EVS_ECLOSED)
        rc = 0;
    if (out)
        *out = rep;
    return rc < 0 ? rc : 0;
}

/* ---- the thread --------------------------------------------------------------------------- */

static void *ret_main(void *arg)
{
    evs_store *st = arg;
    fio_thread_is_background();
    /* below the writer and the event loop (R4), but never starved: nice 19 still gets a
     * share of a saturated CPU, where SCHED_IDLE got none and the disk filled (CI: a 2-core
     * machine running two tests never let a retention pass run) */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19))
        evs_log(st, EVS_LOG_DEBUG, "retention: cannot lower the thread's priority");
    uint32_t ms = st->opt.retention_interval_ms ? st->opt.retention_interval_ms
                                                 : RET_DEFAULT_INTERVAL_MS;
    pthread_mutex_lock(&st->ret_mu);
    while (!st->ret_stop) {
        struct timespec ts = evs_deadline_ns((uint64_t)ms * 1000000ull);
        pthread_cond_timedwait(&st->ret_cv, &st->ret_mu, &ts);
        if (st->ret_stop)
            break;
        pthread_mutex_unlock(&st->ret_mu);
        evs_error err = {0};
        if (evs_retention_run(st, NULL, &err) && !atomic_load(&st->failed))
            evs_log(st, EVS_LOG_WARN, "retention pass failed: %s", err.msg);
        pthread_mutex_lock(&st->ret_mu);
    }
    pthread_mutex_unlock(&st->ret_mu);
    return NULL;
}

int ret_start(evs_store *st)
{
    int rc = thread_start(&st->ret_thread, ret_main, st, "evs-retention");
    if (rc)
        return -rc;
    st->ret_started = true;
    return 0;
}

void ret_stop(evs_store *st)
{
    if (!st->ret_started)
        return;
    pthread_mutex_lock(&st->ret_mu);
    st->ret_stop = true;
    pthread_cond_signal(&st->ret_cv);
    pthread_mutex_unlock(&st->ret_mu);
    pthread_join(st->ret_thread, NULL);
    st->ret_started = false;
}
