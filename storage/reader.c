/*
 * reader.c — iterators and stream information.
 *
 * How a stream is found in the shared log: every REC_ENTRY header holds `prev`, the position
 * of the same stream's previous entry, so each stream is a chain running backwards through
 * the log; the index's `ids` table holds a sparse set of (ID -> position) keys, at least one
 * per EVS_SPARSE_BYTES of the stream's records. A key and the next one bound a block:
 *
 *   forward:  find the key at or below the start ID; walk `prev` back from the record before
 *             the next key (or from the stream's last entry) to that key, checking each record
 *             whole as the walk reads it; emit in order, from where each body lies (the block
 *             holds the segments its records lie in until the next block is gathered, so no
 *             record is read twice); go on with the next key. Cost: the stream's own records,
 *             whatever else the log holds.
 *   reverse:  start at the key above the end ID (or the last entry) and follow `prev`.
 *   filtered: the `filt` table lists every entry with a given source/type value; each is read
 *             and its field compared (the key holds a hash).
 *
 *   K1. The writer keys every entry that starts a stream's live run (its first ever, and the
 *       first after the stream was empty: store.c apply_entry), retention keeps each stream's
 *       last key below its first entry (retention.c R6), and a relocation keys its first copy:
 *       so a stream's first key is at or below its first entry. Indexes written before
 *       2026-11-30 may lack that floor (their writer keyed only the first entry ever: a
 *       stream emptied and refilled after an index rebuild from a log whose start retention
 *       deleted, or after XSETID ENTRIESADDED, got its first key blocks later): a forward
 *       read whose start lies below the stream's first key starts at the first entry
 *       (first_pos), not at that key, so those indexes read whole too.
 *
 * An iterator sees the stream as it was when opened (its visible state then). It holds no
 * LMDB transaction between calls: each block or chunk is found in one short transaction.
 * Every record is CRC-checked before use; a bad one ends the iteration with EVS_ECORRUPT
 * naming stream, segment, offset and ID.
 */
#include "index.h"
#include "internal.h"
#include "postings.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MODE_FWD, MODE_REV, MODE_FILTER };

#define CHUNK 256

/* Filtered reads: entries below the index watermark come from postings, the rest (published,
 * not yet indexed) from a walk back from the stream's last entry: the "tail". */
enum { FP_TAIL_FIRST, FP_POSTINGS, FP_TAIL_LAST, FP_END };

/* A record a forward block's walk checked whole, kept so that it is not read again when its
 * entry is handed out: its bytes stay where they are while the block holds its segment. */
struct seen {
    const uint8_t *body;
    uint64_t time_us, size;
    uint32_t body_len;
};

struct evs_iter {
    evs_store *st;
    struct evs_iter *inext, *iprev; /* st->iters: open by evs_iter_open (R2 below)            */
    bool listed;
    uint64_t low;               /* ... the lowest log position it may read                    */
    uint32_t sno;               /* its stream's number (not the object: streams.c S2)         */
    stream_state snap;
    char pname[128];            /* printable stream name for messages                         */
    evs_query q;
    evs_id lo, hi;              /* inclusive bounds in force                                  */
    uint64_t emitted;
    uint64_t reads;             /* records read, added to the store's counter at close        */
    int mode;
    bool done;
    /* the current block (forward) or chunk (filtered), in emission order */
    uint64_t *pos;
    evs_id *ids;
    struct seen *seen;          /* forward: each record as the block's walk checked it        */
    size_t n, i, cap;
    segment **held;             /* forward: the segments the block's records lie in           */
    size_t nheld, heldcap;
    bool have_next;             /* forward: the key starting the next block                   */
    evs_id next_id;
    uint64_t next_pos;
    uint64_t cur;               /* reverse: next position to visit                            */
    uint8_t fprefix[13];        /* filtered: no(4) field(1) hash(8)                           */
    uint64_t fw;                /* filtered: index watermark; postings cover positions below  */
    int fphase;                 /* filtered: FP_* below                                        */
    bool checked;               /* the records in pos[] were CRC-checked when gathered         */
    bool fresume;               /* filtered: continue after ids[n-1]                          */
    evs_id flast;
    /* the entry handed out */
    uint64_t ent_pos, ent_size;  /* its log position and record size                          */
    segment *ref;
    evs_field *fields;
    size_t fcap;
    evs_entry ent;
};

static void printable(const uint8_t *p, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            out[o++] = (char)p[i];
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", p[i]);
    }
    out[o] = 0;
}

static int grow(evs_iter *it, size_t need)
{
    if (need <= it->cap)
        return 0;
    size_t cap = it->cap ? it->cap : 64;
    while (cap < need)
        cap *= 2;
    uint64_t *p = realloc(it->pos, cap * sizeof *p);
    if (!p)
        return -ENOMEM;
    it->pos = p;
    evs_id *d = realloc(it->ids, cap * sizeof *d);
    if (!d)
        return -ENOMEM;
    it->ids = d;
    struct seen *e = realloc(it->seen, cap * sizeof *e);
    if (!e)
        return -ENOMEM;
    it->seen = e;
    it->cap = cap;
    return 0;
}

/* Read the header at pos and check the whole record (it->ref follows the walk: the entry
 * handed out before is no longer in use once the iterator gathers the next block). */
static int peek_body(evs_iter *it, uint64_t pos, rec_hdr *h, const uint8_t **bodyp,
                     uint64_t *sizep, evs_error *err)
{
    const uint8_t *body;
    uint64_t size;
    int rc = store_read_record(it->st, pos, it->pname, h, &body, &size, &it->ref, err);
    if (rc)
        return rc;
    if (bodyp)
        *bodyp = body, *sizep = size;
    it->reads++;
    /* walks go backwards (prev pointers), where the CPU's prefetchers do not follow: the
     * 512 bytes before this record are most often the stream's previous record (replay
     * 3.0-4.6 M entries/s, 2-10 % more with this in five interleaved pairs) */
    const uint8_t *start = body - REC_HDR_SIZE; /* at pos - base in its segment's mapping */
    if (pos - it->ref->base >= 512) /* (unrolled: this runs for every record a walk reads) */
        for (int back = 64; back <= 512; back += 64)
            __builtin_prefetch(start - back);
    if (h->kind != REC_ENTRY || h->stream != it->sno)
        return evs_err_set(err, EVS_ECORRUPT,
                           "stream %s: log position %" PRIu64 " holds a record of kind %u for "
                           "stream %u, not an entry of this stream",
                           it->pname, pos, h->kind, h->stream);
    return 0;
}

static int peek(evs_iter *it, uint64_t pos, rec_hdr *h, evs_error *err)
{
    return peek_body(it, pos, h, NULL, NULL, err);
}

/* The segments a forward block's records lie in stay held until the next block is gathered
 * (the entries handed out from it are no longer in use then): before a walk leaves a segment,
 * its reference moves to it->held. */
static int hold_for(evs_iter *it, uint64_t pos)
{
    segment *s = it->ref;
    if (!s || (pos >= s->base && pos - s->base < atomic_load(&s->size)))
        return 0;
    int rc = seg_push(&it->held, &it->nheld, &it->heldcap, s);
    if (!rc)
        it->ref = NULL;
    return rc;
}

static void release_held(evs_iter *it)
{
    for (size_t i = 0; i < it->nheld; i++)
        store_seg_put(it->held[i]);
    it->nheld = 0;
}

/* Is pos below the stream's first live entry? Such records are trimmed and their segment may
 * have been deleted by retention: no walk reads them (R1). */
static bool below_first(const evs_iter *it, uint64_t pos)
{
    return it->snap.first_pos != REC_POS_NONE && pos < it->snap.first_pos;
}

static bool is_deleted(const evs_store *st, idx_rtxn *r, uint32_t no, evs_id id)
{
    uint8_t k[IDX_IDKEY];
    idx_idkey(k, no, id);
    if (store_ro_deleted(st, k))
        return true;
    const void *v;
    size_t vl;
    return idx_get(r, IDX_DELS, k, sizeof k, &v, &vl) == 0;
}

/* A sparse key of this stream visible in the snapshot? */
static bool key_ok(evs_iter *it, const void *k, size_t kl, const void *v, size_t vl,
                   evs_id *id, uint64_t *pos)
{
    if (kl != IDX_IDKEY || vl < 8 || idx_rd32(k) != it->sno)
        return false;
    const uint8_t *kk = k;
    *id = (evs_id){idx_rd64(kk + 4), idx_rd64(kk + 12)};
    *pos = idx_rd64(v);
    return *pos <= it->snap.last_pos && evs_id_cmp(*id, it->snap.last_id) <= 0;
}

/* The found positions and IDs, collected walking back-pointers, into the other order. */
static void reverse_found(evs_iter *it, bool with_seen)
{
    for (size_t a = 0, b = it->n ? it->n - 1 : 0; a < b; a++, b--) {
        uint64_t tp = it->pos[a];
        it->pos[a] = it->pos[b];
        it->pos[b] = tp;
        evs_id ti = it->ids[a];
        it->ids[a] = it->ids[b];
        it->ids[b] = ti;
        if (with_seen) { /* (only a forward block's walk fills seen[]) */
            struct seen ts = it->seen[a];
            it->seen[a] = it->seen[b];
            it->seen[b] = ts;
        }
    }
}

/*
 * Forward: load the block that starts at the key (start_id, start_pos), and find the key
 * after it. Drops deleted entries if the stream has tombstones.
 */
static int load_block(evs_iter *it, evs_id start_id, uint64_t start_pos, evs_error *err)
{
    release_held(it);
    idx_rtxn *r;
    int rc = idx_rbegin(it->st->idx, &r);
    if (rc)
        return evs_err_set(err, rc, "index read failed: %s", evs_strerror(rc));
    idx_cur *c = NULL;
    if ((rc = idx_cur_open(r, IDX_IDS, &c)))
        goto out;
    uint8_t key[IDX_IDKEY];
    idx_idkey(key, it->sno, start_id);
    const void *k, *v;
    size_t kl, vl;
    it->have_next = false;
    rc = idx_cur_get(c, IDX_GE, key, sizeof key, &k, &kl, &v, &vl);
    if (rc == 0 && kl == IDX_IDKEY && memcmp(k, key, IDX_IDKEY) == 0)
        rc = idx_cur_get(c, IDX_NEXT, NULL, 0, &k, &kl, &v, &vl);
    for (; rc == 0; rc = idx_cur_get(c, IDX_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
        evs_id nid;
        uint64_t npos;
        if (!key_ok(it, k, kl, v, vl, &nid, &npos) || npos <= start_pos)
            break;
        if (below_first(it, npos))
            continue; /* a trimmed block's key (its clean-up lags): it starts no block here —
                       * taken as the next, the walk below went from the end and the next
                       * block repeated it (seen: an XREAD that started with no key, the
                       * stream's first key indexed meanwhile, returned its entry twice) */
        it->have_next = true;
        it->next_id = nid;
        it->next_pos = npos;
        break;
    }
    if (rc && rc != EVS_ENOTFOUND)
        goto out;
    rc = 0;
    uint64_t p = it->snap.last_pos;
    if (it->have_next && !below_first(it, it->next_pos)) {
        rec_hdr h;
        if ((rc = peek(it, it->next_pos, &h, err)))
            goto out_err;
        p = h.prev;
    }
    /* walk back from p to start_pos */
    it->n = it->i = 0;
    while (p != REC_POS_NONE && p >= start_pos && !below_first(it, p)) {
        rec_hdr h;
        const uint8_t *body;
        uint64_t size;
        if ((rc = hold_for(it, p))) {
            rc = evs_err_set(err, rc, "out of memory");
            goto out_err;
        }
        if ((rc = peek_body(it, p, &h, &body, &size, err)))
            goto out_err;
        if (evs_id_cmp((evs_id){h.id_ms, h.id_seq}, it->lo) < 0)
            break; /* below the start: nothing further back is wanted (nor read) */
        if ((rc = grow(it, it->n + 1))) {
            rc = evs_err_set(err, rc, "out of memory");
            goto out_err;
        }
        it->pos[it->n] = p;
        it->ids[it->n] = (evs_id){h.id_ms, h.id_seq};
        it->seen[it->n] = (struct seen){body, h.time_us, size, h.body_len};
        it->n++;
        if (p == start_pos)
            break;
        if (h.prev != REC_POS_NONE && h.prev >= p) {
            rc = evs_err_set(err, EVS_ECORRUPT,
                             "stream %s: entry at log position %" PRIu64 " points forward", it->pname,
                             p);
            goto out_err;
        }
        p = h.prev;
    }
    /* reverse into log order, dropping deleted entries */
    reverse_found(it, true);
    if (it->snap.ndels) {
        size_t out_n = 0;
        for (size_t j = 0; j < it->n; j++) {
            if (is_deleted(it->st, r, it->sno, it->ids[j]))
                continue;
            it->pos[out_n] = it->pos[j];
            it->ids[out_n] = it->ids[j];
            it->seen[out_n] = it->seen[j];
            out_n++;
        }
        it->n = out_n;
    }
out:
    if (rc)
        evs_err_set(err, rc, "index read failed: %s", evs_strerror(rc));
out_err:
    if (rc)
        it->n = it->i = 0; /* nothing of a block that failed is handed out */
    idx_cur_close(c);
    idx_rend(r);
    return rc;
}

/* Position c at the last key <= key within the prefix, or the first key of the prefix. */
static int seek_floor(idx_cur *c, const uint8_t *key, size_t kl, size_t pl, const void **k,
                      size_t *klo, const void **v, size_t *vl)
{
    int rc = idx_cur_get(c, IDX_GE, key, kl, k, klo, v, vl);
    if (rc == 0 && *klo == kl && memcmp(*k, key, kl) == 0)
        return 0;
    int p = rc == 0 ? idx_cur_get(c, IDX_PREV, NULL, 0, k, klo, v, vl)
                    : idx_cur_get(c, IDX_LAST, NULL, 0, k, klo, v, vl);
    if (p == 0 && *klo >= pl && memcmp(*k, key, pl) == 0)
        return 0;
    return idx_cur_get(c, IDX_GE, key, kl, k, klo, v, vl);
}

/*
 * The stream's sparse key nearest id that this snapshot sees: the last at or below id (or the
 * stream's first) with `floor`, else the first at or above it. *found false when there is none.
 */
static int ids_key_near(evs_iter *it, evs_id id, bool floor, bool *found, evs_id *kid,
                        uint64_t *kpos, evs_error *err)
{
    *found = false;
    idx_rtxn *r;
    int rc = idx_rbegin(it->st->idx, &r);
    if (rc)
        return evs_err_set(err, rc, "index read failed: %s", evs_strerror(rc));
    idx_cur *c = NULL;
    if ((rc = idx_cur_open(r, IDX_IDS, &c)) == 0) {
        uint8_t key[IDX_IDKEY];
        idx_idkey(key, it->sno, id);
        const void *k, *v;
        size_t kl, vl;
        rc = floor ? seek_floor(c, key, sizeof key, 4, &k, &kl, &v, &vl)
                   : idx_cur_get(c, IDX_GE, key, sizeof key, &k, &kl, &v, &vl);
        if (rc == 0)
            *found = key_ok(it, k, kl, v, vl, kid, kpos);
        else if (rc == EVS_ENOTFOUND)
            rc = 0;
    }
    if (rc)
        evs_err_set(err, rc, "index read failed: %s", evs_strerror(rc));
    idx_cur_close(c);
    idx_rend(r);
    return rc;
}

/* Forward: the key at or below lo; with none there, the stream's first entry (K1: its first
 * key may lie above it); with no key yet, a virtual block from the stream's first entry. */
static int find_start_key(evs_iter *it, evs_id *kid, uint64_t *kpos, evs_error *err)
{
    bool found;
    int rc = ids_key_near(it, it->lo, true, &found, kid, kpos, err);
    if (rc == 0 && !found) {
        *kid = EVS_ID_MIN; /* not indexed yet: walk back from the stream's last entry */
        *kpos = 0;
    } else if (rc == 0 && evs_id_cmp(*kid, it->lo) > 0 && it->snap.first_pos != REC_POS_NONE) {
        /* no key at or below lo, which is at or past the first entry (clamped at open): the
         * block from the first entry up to that key */
        *kid = it->snap.first_id;
        *kpos = it->snap.first_pos;
    }
    return rc;
}

/* Reverse: where to start walking back for entries <= hi. */
static int find_reverse_start(evs_iter *it, evs_error *err)
{
    it->cur = it->snap.last_pos;
    if (evs_id_cmp(it->hi, it->snap.last_id) >= 0)
        return 0;
    bool found;
    evs_id kid;
    uint64_t kpos;
    int rc = ids_key_near(it, it->hi, false, &found, &kid, &kpos, err);
    if (rc || !found) /* no key above hi yet: walk back from the stream's last entry */
        return rc;
    if (evs_id_cmp(kid, it->hi) == 0) {
        it->cur = kpos;
        return 0;
    }
    rec_hdr h; /* the key's entry is above hi: start at the one before it */
    if ((rc = peek(it, kpos, &h, err)))
        return rc;
    it->cur = h.prev;
    return 0;
}

/*
 * Filtered, after a relocation since the snapshot (retention.c): the filter keys now name the
 * copies, which this snapshot does not know (the keys of its own chain are gone). Go on as an
 * unfiltered walk of the snapshot's chain from past the last entry handed out, comparing the
 * fields of each (load_entry): the `ids` keys of the copies fail key_ok the same way, so the
 * walk follows `prev` (a relocated stream is small: its live bytes fit a relocation).
 */
static int filter_fallback(evs_iter *it, evs_error *err)
{
    it->n = it->i = 0;
    it->mode = it->q.reverse ? MODE_REV : MODE_FWD;
    it->done = false;
    if (it->emitted) { /* resume past the last entry handed out */
        evs_id next = it->ent.id;
        if (it->q.reverse ? !evs_id_prev(&next) : !evs_id_next(&next))
            it->done = true;
        else if (it->q.reverse)
            it->hi = next;
        else
            it->lo = next;
    }
    if (it->done || evs_id_cmp(it->lo, it->hi) > 0) {
        it->done = true;
        it->cur = REC_POS_NONE;
        return 0;
    }
    if (it->q.reverse)
        return find_reverse_start(it, err);
    evs_id kid = EVS_ID_MIN;
    uint64_t kpos = 0;
    int rc = find_start_key(it, &kid, &kpos, err);
    return rc ? rc : load_block(it, kid, kpos, err);
}

/*
 * Filtered: load the next chunk from the filt table. Keys are groups of entries (postings.h),
 * disjoint and ordered by ID; a chunk is whole groups, at least CHUNK entries unless the
 * groups run out. `fresume`/`flast`: the first ID of the last group taken.
 */
static int load_filter_chunk(evs_iter *it, evs_error *err)
{
    idx_rtxn *r;
    int rc = idx_rbegin(it->st->idx, &r);
    if (rc)
        return evs_err_set(err, rc, "index read failed: %s", evs_strerror(rc));
    idx_cur *c = NULL;
    it->n = it->i = 0;
    it->done = true;
    it->checked = false;
    bool moved = false;
    if ((rc = idx_cur_open(r, IDX_FILT, &c)))
        goto out;
    bool rev = it->q.reverse;
    uint8_t key[IDX_FILTKEY];
    memcpy(key, it->fprefix, 13);
    evs_id from = it->fresume ? it->flast : rev ? it->hi : it->lo;
    idx_be64(key + 13, from.ms);
    idx_be64(key + 21, from.seq);
    const void *k, *v;
    size_t kl, vl;
    rc = seek_floor(c, key, sizeof key, 13, &k, &kl, &v, &vl);
    if (rc == 0 && it->fresume)
        rc = idx_cur_get(c, rev ? IDX_PREV : IDX_NEXT, NULL, 0, &k, &kl, &v, &vl);
    for (; rc == 0; rc = idx_cur_get(c, rev ? IDX_PREV : IDX_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
        if (kl != IDX_FILTKEY || memcmp(k, it->fprefix, 13) != 0 || vl < POST_FIRST)
            break;
        /* decode the group, in log order, into the arrays after the entries kept so far */
        size_t base = it->n, cnt = 0;
        post_iter pi;
        post_iter_init(&pi, v, vl);
        evs_id id;
        uint64_t p;
        while (post_next(&pi, &id, &p)) {
            if (p > it->snap.last_pos && evs_id_cmp(id, it->snap.last_id) <= 0)
                moved = true; /* a copy: relocated since the snapshot (filter_fallback) */
            if ((rc = grow(it, base + cnt + 1)))
                goto out;
            it->ids[base + cnt] = id;
            it->pos[base + cnt] = p;
            cnt++;
        }
        if (pi.bad || cnt == 0) {
            rc = EVS_ECORRUPT;
            break;
        }
        if (moved)
            break;
        evs_id first = it->ids[base], last = it->ids[base + cnt - 1];
        if ((!rev && evs_id_cmp(first, it->hi) > 0) || (rev && evs_id_cmp(last, it->lo) < 0))
            break;
        if (base >= CHUNK) {
            it->done = false; /* more groups follow: resume after flast */
            break;
        }
        /* keep those in range (compacting in place), then put them in emission order */
        size_t o = base;
        for (size_t j = base; j < base + cnt; j++) {
            id = it->ids[j];
            p = it->pos[j];
            if (evs_id_cmp(id, it->lo) < 0 || evs_id_cmp(id, it->hi) > 0 || p >= it->fw)
                continue;
            if (it->snap.ndels && is_deleted(it->st, r, it->sno, id))
                continue;
            it->ids[o] = id;
            it->pos[o] = p;
            o++;
        }
        for (size_t a = base, b = o ? o - 1 : 0; rev && o > base && a < b; a++, b--) {
            uint64_t tp = it->pos[a];
            it->pos[a] = it->pos[b];
            it->pos[b] = tp;
            evs_id ti = it->ids[a];
            it->ids[a] = it->ids[b];
            it->ids[b] = ti;
        }
        it->n = o;
        it->flast = first;
        it->fresume = true;
    }
    if (rc == EVS_ENOTFOUND)
        rc = 0;
out:
    if (rc == EVS_ECORRUPT)
        evs_err_set(err, rc, "stream %s: malformed filter index value (run verify)", it->pname);
    else if (rc)
        evs_err_set(err, rc, "index read failed: %s", evs_strerror(rc));
    idx_cur_close(c);
    idx_rend(r);
    return !rc && moved ? filter_fallback(it, err) : rc;
}

/* Filtered: the index watermark's end position (0 if none). */
static int read_watermark(evs_iter *it, uint64_t *end, evs_error *err)
{
    idx_rtxn *r;
    int rc = idx_rbegin(it->st->idx, &r);
    if (rc)
        return evs_err_set(err, rc, "index read failed: %s", evs_strerror(rc));
    const void *v;
    size_t vl;
    *end = 0;
    if (idx_get(r, IDX_META, "watermark", 9, &v, &vl) == 0 && vl >= 8)
        *end = idx_rd64(v);
    idx_rend(r);
    return 0;
}

/* Filtered: load the stream's entries at positions >= fw within [lo, hi], in emission order.
 * Their fields are compared when each is loaded. */
static int load_filter_tail(evs_iter *it, evs_error *err)
{
    it->n = it->i = 0;
    it->checked = true;
    uint64_t p = it->snap.last_pos;
    while (p != REC_POS_NONE && p >= it->fw && !below_first(it, p)) {
        rec_hdr h;
        int rc = peek(it, p, &h, err);
        if (rc)
            return rc;
        evs_id id = {h.id_ms, h.id_seq};
        if (evs_id_cmp(id, it->lo) < 0)
            break;
        if (evs_id_cmp(id, it->hi) <= 0) {
            if ((rc = grow(it, it->n + 1)))
                return evs_err_set(err, rc, "out of memory");
            it->pos[it->n] = p;
            it->ids[it->n] = id;
            it->n++;
        }
        if (h.prev != REC_POS_NONE && h.prev >= p)
            return evs_err_set(err, EVS_ECORRUPT,
                               "stream %s: entry at log position %" PRIu64 " points forward",
                               it->pname, p);
        p = h.prev;
    }
    if (!it->q.reverse)
        reverse_found(it, false);
    if (it->snap.ndels) {
        /* tombstones are always indexed before they are acknowledged */
        idx_rtxn *r;
        int rc = idx_rbegin(it->st->idx, &r);
        if (rc)
            return evs_err_set(err, rc, "index read failed: %s", evs_strerror(rc));
        size_t o = 0;
        for (size_t j = 0; j < it->n; j++)
            if (!is_deleted(it->st, r, it->sno, it->ids[j])) {
                it->pos[o] = it->pos[j];
                it->ids[o++] = it->ids[j];
            }
        it->n = o;
        idx_rend(r);
    }
    return 0;
}

static evs_iter *iter_alloc(void)
{
    return calloc(1, sizeof(evs_iter));
}

void (*reader_start_window)(evs_store *st);

/* `pre`: an iterator evs_iter_open allocated (and listed), else one is made here. */
static int iter_open_stream(evs_store *st, stream *s, const stream_state *snap,
                            const evs_query *q, evs_iter *pre, evs_iter **out, evs_error *err)
{
    evs_iter *it = pre ? pre : iter_alloc();
    if (!it)
        return evs_err_set(err, -ENOMEM, "out of memory");
    it->st = st;
    it->sno = s->no;
    it->snap = *snap;
    printable(s->name, s->name_len, it->pname, sizeof it->pname);
    if (q)
        it->q = *q;
    else
        evs_query_init(&it->q);
    it->lo = it->q.start;
    it->hi = it->q.end;
    if (it->q.start_exclusive && !evs_id_next(&it->lo))
        it->done = true;
    if (it->q.end_exclusive && !evs_id_prev(&it->hi))
        it->done = true;
    if (evs_id_cmp(it->hi, snap->last_id) > 0)
        it->hi = snap->last_id;
    if (evs_id_cmp(it->lo, snap->first_id) < 0)
        it->lo = snap->first_id;
    if (snap->length == 0 || snap->last_pos == REC_POS_NONE || evs_id_cmp(it->lo, it->hi) > 0)
        it->done = true;
    *out = it;
    if (it->done)
        return 0;
    int rc = 0;
    if (it->q.min_time_us && !it->q.reverse) {
        /* start at the block whose first entry is the last one appended before the time */
        idx_rtxn *r;
        if ((rc = idx_rbegin(st->idx, &r)) == 0) {
            idx_cur *c;
            if (idx_cur_open(r, IDX_TIMES, &c) == 0) {
                uint8_t key[12];
                idx_be32(key, s->no);
                idx_be64(key + 4, it->q.min_time_us);
                const void *k, *v;
                size_t kl, vl;
                int g = idx_cur_get(c, IDX_GE, key, sizeof key, &k, &kl, &v, &vl);
                if (g == 0 && !(kl == 12 && !memcmp(k, key, 12)))
                    g = idx_cur_get(c, IDX_PREV, NULL, 0, &k, &kl, &v, &vl);
                else if (g == EVS_ENOTFOUND)
                    g = idx_cur_get(c, IDX_LAST, NULL, 0, &k, &kl, &v, &vl);
                if (g == 0 && kl == 12 && idx_rd32(k) == s->no && vl == 16) {
                    evs_id t = {idx_rd64(v), idx_rd64((const uint8_t *)v + 8)};
                    if (evs_id_cmp(t, it->lo) > 0)
                        it->lo = t;
                }
                idx_cur_close(c);
            }
            idx_rend(r);
        }
        rc = 0;
    }
    if (it->q.source.ptr || it->q.type.ptr) {
        it->mode = MODE_FILTER;
        bool by_type = it->q.type.ptr != NULL;
        evs_slice v = by_type ? it->q.type : it->q.source;
        idx_be32(it->fprefix, s->no);
        it->fprefix[4] = by_type ? IDX_FIELD_TYPE : IDX_FIELD_SOURCE;
        idx_be64(it->fprefix + 5, idx_value_hash(v.ptr, v.len));
        rc = read_watermark(it, &it->fw, err);
        if (!rc && it->q.reverse) {
            it->fphase = FP_TAIL_FIRST;
            rc = load_filter_tail(it, err);
        } else if (!rc) {
            it->fphase = FP_POSTINGS;
            rc = load_filter_chunk(it, err);
        }
    } else if (it->q.reverse) {
        it->mode = MODE_REV;
        rc = find_reverse_start(it, err);
    } else {
        it->mode = MODE_FWD;
        evs_id kid = EVS_ID_MIN;
        uint64_t kpos = 0;
        rc = find_start_key(it, &kid, &kpos, err);
        if (!rc && reader_start_window)
            reader_start_window(st);
        if (!rc)
            rc = load_block(it, kid, kpos, err);
    }
    if (rc) {
        evs_iter_close(it);
        *out = NULL;
    }
    return rc;
}

static void iter_list(evs_store *st, evs_iter *it);

/* A copy of the state of the visible stream called `name`; `held`: the stream itself, with a
 * reference the caller puts back (streams.c S2); `list`: an iterator to take the state as its
 * snapshot and be listed with it, in the same critical section (R2). */
static int lookup(evs_store *st, evs_slice name, stream **held, stream_state *snap,
                  evs_iter *list)
{
    pthread_rwlock_rdlock(&st->lock);
    stream *found = strtab_get(&st->vtab, name.ptr, name.len, true);
    if (found)
        *snap = found->v;
    if (found && list) {
        list->snap = *snap;
        iter_list(st, list);
    }
    if (found && held)
        store_stream_hold(found);
    pthread_rwlock_unlock(&st->lock);
    if (held)
        *held = found;
    return found ? 0 : EVS_ENOTFOUND;
}

void evs_stream_version(evs_store *st, evs_slice name, evs_version *out)
{
    stream_state snap;
    *out = (evs_version){0, 0};
    if (!lookup(st, name, NULL, &snap, NULL))
        *out = (evs_version){(uint64_t)snap.no + 1, snap.changes};
}

/*
 * R2. An iterator evs_iter_open hands out is listed in st->iters, with the lowest position its
 *     snapshot may read, from the moment its snapshot is taken (in the same critical section
 *     of st->lock) until it is closed; retention deletes no segment at or above the lowest
 *     listed position (retention.c needed_from). So a reader sees its snapshot whole even
 *     when a trim and retention pass over it meanwhile, instead of an error. Iterators are
 *     short-lived (one command, one HTTP page), so they hold retention back only briefly.
 */
static void iter_list(evs_store *st, evs_iter *it)
{
    if (!it->snap.length)
        return; /* it reads nothing */
    it->low = it->snap.first_pos == REC_POS_NONE ? 0 : it->snap.first_pos;
    pthread_mutex_lock(&st->itmu);
    it->inext = st->iters;
    it->iprev = NULL;
    if (st->iters)
        st->iters->iprev = it;
    st->iters = it;
    it->listed = true;
    pthread_mutex_unlock(&st->itmu);
}

static void iter_unlist(evs_iter *it)
{
    if (!it->listed)
        return;
    evs_store *st = it->st;
    pthread_mutex_lock(&st->itmu);
    if (it->iprev)
        it->iprev->inext = it->inext;
    else
        st->iters = it->inext;
    if (it->inext)
        it->inext->iprev = it->iprev;
    pthread_mutex_unlock(&st->itmu);
    it->listed = false;
}

uint64_t reader_lowest_listed(evs_store *st)
{
    uint64_t low = UINT64_MAX;
    pthread_mutex_lock(&st->itmu);
    for (evs_iter *it = st->iters; it; it = it->inext)
        if (it->low < low)
            low = it->low;
    pthread_mutex_unlock(&st->itmu);
    return low;
}

int evs_iter_open(evs_store *st, evs_slice name, const evs_query *q, evs_iter **out,
                  evs_error *err)
{
    evs_iter *it = iter_alloc();
    if (!it)
        return evs_err_set(err, -ENOMEM, "out of memory");
    it->st = st;
    stream *s;
    stream_state snap;
    if (lookup(st, name, &s, &snap, it)) { /* R2: listed with its snapshot */
        evs_iter_close(it);
        return evs_err_set(err, EVS_ENOTFOUND, "no such stream");
    }
    int rc = iter_open_stream(st, s, &snap, q, it, out, err);
    store_stream_put(s);
    return rc;
}

int reader_read_count(evs_store *st, evs_slice name, bool reverse, uint64_t *length,
                      uint64_t *found, evs_error *err)
{
    evs_query q;
    evs_query_init(&q);
    q.reverse = reverse;
    evs_iter *it;
    int rc = evs_iter_open(st, name, &q, &it, err);
    if (rc)
        return rc;
    *length = it->snap.length;
    *found = 0;
    const evs_entry *e;
    while ((rc = evs_iter_next(it, &e, err)) == 1)
        (*found)++;
    evs_iter_close(it);
    return rc < 0 ? rc : 0;
}

static bool field_eq(const evs_entry *e, const char *name, size_t nl, evs_slice want)
{
    for (size_t i = 0; i < e->nfields; i++)
        if (e->fields[i].name.len == nl && !memcmp(e->fields[i].name.ptr, name, nl))
            return e->fields[i].value.len == want.len &&
                   (want.len == 0 || !memcmp(e->fields[i].value.ptr, want.ptr, want.len));
    return false;
}

/* Make the checked record r, the entry id at pos, the current entry. 1 ok, 0 skip (filters),
 * < 0 error. */
static int use_entry(evs_iter *it, uint64_t pos, evs_id id, const struct seen *r,
                     evs_error *err)
{
    if (it->q.min_time_us && r->time_us < it->q.min_time_us)
        return 0;
    size_t need = 0;
    long n = rec_entry_decode(r->body, r->body_len, it->fields, it->fcap, &need);
    if (n == -2) {
        evs_field *f = realloc(it->fields, need * sizeof *f);
        if (!f)
            return evs_err_set(err, -ENOMEM, "out of memory");
        it->fields = f;
        it->fcap = need;
        n = rec_entry_decode(r->body, r->body_len, it->fields, it->fcap, &need);
    }
    if (n < 0) {
        char idb[EVS_ID_STRLEN];
        evs_id_format(id, idb);
        return evs_err_set(err, EVS_ECORRUPT, "stream %s: entry %s at log position %" PRIu64
                           " has a malformed body", it->pname, idb, pos);
    }
    it->ent.id = id;
    it->ent.time_us = r->time_us;
    it->ent_pos = pos;
    it->ent_size = r->size;
    it->ent.fields = it->fields;
    it->ent.nfields = (size_t)n;
    /* (a filtered iterator walks unfiltered after a relocation: filter_fallback) */
    if (it->q.type.ptr && !field_eq(&it->ent, "type", 4, it->q.type))
        return 0;
    if (it->q.source.ptr && !field_eq(&it->ent, "source", 6, it->q.source))
        return 0;
    return 1;
}

/* Make the record at pos the current entry. 1 ok, 0 skip (filters), < 0 error. `checked`:
 * this iterator already CRC-checked it (filtered tail); else it is checked here. */
static int load_entry(evs_iter *it, uint64_t pos, bool checked, evs_error *err)
{
    rec_hdr h;
    struct seen r;
    int rc = (checked ? store_read_checked : store_read_record)(it->st, pos, it->pname, &h,
                                                               &r.body, &r.size, &it->ref, err);
    if (rc)
        return rc;
    if (!checked)
        it->reads++;
    if (h.kind != REC_ENTRY || h.stream != it->sno)
        return evs_err_set(err, EVS_ECORRUPT,
                           "stream %s: log position %" PRIu64 " is not an entry of this stream",
                           it->pname, pos);
    r.time_us = h.time_us;
    r.body_len = h.body_len;
    return use_entry(it, pos, (evs_id){h.id_ms, h.id_seq}, &r, err);
}

static int next_fwd(evs_iter *it, evs_error *err)
{
    for (;;) {
        while (it->i < it->n) {
            size_t j = it->i++;
            if (evs_id_cmp(it->ids[j], it->lo) < 0)
                continue;
            if (evs_id_cmp(it->ids[j], it->hi) > 0) {
                it->done = true;
                return 0;
            }
            int rc = use_entry(it, it->pos[j], it->ids[j], &it->seen[j], err);
            if (rc)
                return rc;
        }
        if (!it->have_next) {
            it->done = true;
            return 0;
        }
        int rc = load_block(it, it->next_id, it->next_pos, err);
        if (rc)
            return rc;
    }
}

static int next_rev(evs_iter *it, evs_error *err)
{
    while (it->cur != REC_POS_NONE && !below_first(it, it->cur)) {
        rec_hdr h;
        struct seen rec; /* (its segment stays it->ref until the next peek) */
        int rc = peek_body(it, it->cur, &h, &rec.body, &rec.size, err);
        if (rc)
            return rc;
        evs_id id = {h.id_ms, h.id_seq};
        uint64_t pos = it->cur;
        if (h.prev != REC_POS_NONE && h.prev >= pos)
            return evs_err_set(err, EVS_ECORRUPT,
                               "stream %s: entry at log position %" PRIu64 " points forward",
                               it->pname, pos);
        it->cur = h.prev;
        if (evs_id_cmp(id, it->hi) > 0)
            continue;
        if (evs_id_cmp(id, it->lo) < 0)
            break;
        if (it->q.min_time_us && h.time_us < it->q.min_time_us)
            break; /* times only decrease from here */
        if (it->snap.ndels) {
            idx_rtxn *r;
            if ((rc = idx_rbegin(it->st->idx, &r)))
                return evs_err_set(err, rc, "index read failed: %s", evs_strerror(rc));
            bool del = is_deleted(it->st, r, it->sno, id);
            idx_rend(r);
            if (del)
                continue;
        }
        rec.time_us = h.time_us;
        rec.body_len = h.body_len;
        rc = use_entry(it, pos, id, &rec, err);
        if (rc)
            return rc;
    }
    it->done = true;
    return 0;
}

static int next_filter(evs_iter *it, evs_error *err)
{
    for (;;) {
        while (it->i < it->n) {
            size_t j = it->i++;
            int rc = load_entry(it, it->pos[j], it->checked, err);
            if (rc)
                return rc;
        }
        int rc = 0;
        switch (it->fphase) {
        case FP_TAIL_FIRST: /* reverse: the tail is done, now the postings */
            it->fphase = FP_POSTINGS;
            it->fresume = false;
            rc = load_filter_chunk(it, err);
            break;
        case FP_POSTINGS:
            if (!it->done) {
                rc = load_filter_chunk(it, err);
            } else if (it->q.reverse) {
                it->fphase = FP_END;
            } else {
                it->fphase = FP_TAIL_LAST;
                rc = load_filter_tail(it, err);
            }
            break;
        default:
            it->fphase = FP_END;
            it->done = true;
            return 0;
        }
        if (rc)
            return rc;
        if (it->mode == MODE_REV) /* filter_fallback */
            return next_rev(it, err);
        if (it->mode == MODE_FWD)
            return next_fwd(it, err);
    }
}

int evs_iter_next(evs_iter *it, const evs_entry **out, evs_error *err)
{
    if (it->q.limit && it->emitted >= it->q.limit)
        return 0;
    if (it->mode == MODE_FILTER ? it->fphase == FP_END
                                : it->done && (it->mode == MODE_REV || it->i >= it->n))
        return 0;
    int rc;
    switch (it->mode) {
    case MODE_FWD: rc = next_fwd(it, err); break;
    case MODE_REV: rc = next_rev(it, err); break;
    default: rc = next_filter(it, err); break;
    }
    if (rc == 1) {
        it->emitted++;
        *out = &it->ent;
    }
    if (rc < 0)
        it->done = true;
    return rc;
}

void evs_iter_close(evs_iter *it)
{
    if (!it)
        return;
    iter_unlist(it);
    atomic_fetch_add(&it->st->n_reads, it->reads);
    release_held(it);
    store_seg_put(it->ref);
    free(it->fields);
    free(it->pos);
    free(it->ids);
    free(it->seen);
    free(it->held);
    free(it);
}

/* The first live entry of s in [start, end] (start exclusive if asked) that readers see, or
 * (`written`) that the writer has written: 1 with *id and *pos (either may be NULL), 0 none,
 * < 0 error. */
static int first_in(evs_store *st, stream *s, bool written, evs_id start, bool exclusive,
                    evs_id end, evs_id *id, uint64_t *pos, uint64_t *bytes, uint64_t *rec_size,
                    evs_error *err)
{
    stream_state snap;
    pthread_rwlock_rdlock(&st->lock);
    snap = written ? s->w : s->v; /* (written: the writer, with its batch flushed) */
    pthread_rwlock_unlock(&st->lock);
    evs_query q;
    evs_query_init(&q);
    q.start = start;
    q.start_exclusive = exclusive;
    q.end = end;
    q.limit = 1;
    evs_iter *it;
    int rc = iter_open_stream(st, s, &snap, &q, NULL, &it, err);
    if (rc)
        return rc;
    const evs_entry *e;
    rc = evs_iter_next(it, &e, err);
    if (rc == 1) {
        if (id)
            *id = e->id;
        if (pos)
            *pos = it->ent_pos;
        if (bytes)
            *bytes = EVS_ENTRY_FRAMING(e->nfields) + evs_entry_bytes(e);
        if (rec_size)
            *rec_size = it->ent_size;
    }
    evs_iter_close(it);
    return rc;
}

int reader_entry_exists(evs_store *st, stream *s, evs_id id, uint64_t *bytes, evs_error *err)
{
    return first_in(st, s, false, id, false, id, NULL, NULL, bytes, NULL, err);
}

int reader_entry_written(evs_store *st, stream *s, evs_id id, uint64_t *rec_size,
                         evs_error *err)
{
    return first_in(st, s, true, id, false, id, NULL, NULL, NULL, rec_size, err);
}

/*
 * The trim cache (the writer's: plan_trim). A trim scan reads the block of entries holding
 * the one it keeps, and the block may be long: with the index a few milliseconds behind, a
 * stream capped at 1,000 entries has no key past its first, and each `XADD ... MAXLEN 1000`
 * walked and CRC-checked all of them to drop one (measured: 113,000 XADD/s against 780,000
 * without the cap). The scan keeps the kept entry and up to TRIM_CACHE_KEEP after it; the next
 * trim of the stream starts from them.
 *  T1. A slot is used only if its stream's first entry is still ids[i] at pos[i] and no
 *      tombstone or relocation came since (ndels, moved_pos unchanged): then ids[i..n) are
 *      the stream's live entries in order from its first, as a scan would read them (entries
 *      leave a stream's front only by trims, which move the first entry; tombstones and
 *      relocations change the two counters; appends add only after them). A tombstone is
 *      flushed and indexed before any later request plans (writer.c do_delete), so the scan
 *      that fills a slot sees every tombstone the stream's ndels counts.
 *  T2. A trim the slot does not reach the end of within n entries is scanned as before.
 *  T3. Only the writer reads and writes the slots.
 */
static int scan_trim(evs_store *st, stream *s, const stream_state *snap, evs_id from,
                     const trim_goal *goal, trim_scan *out, trim_cache *keep, evs_error *err)
{
    memset(out, 0, sizeof *out);
    out->exhausted = true;
    if (!snap->length)
        return 0;
    evs_query q;
    evs_query_init(&q);
    q.start = from;
    evs_iter *it;
    int rc = iter_open_stream(st, s, snap, &q, NULL, &it, err);
    if (rc)
        return rc;
    const evs_entry *e;
    while ((rc = evs_iter_next(it, &e, err)) == 1) {
        if (trim_goal_keeps(goal, e->id, out->removed, out->bytes)) {
            out->next = e->id;
            out->next_pos = it->ent_pos;
            out->exhausted = false;
            if (keep && it->mode == MODE_FWD && it->i > 0) { /* ids[i - 1] is e (next_fwd) */
                size_t j = it->i - 1, n = it->n - j;
                if (n > TRIM_CACHE_KEEP)
                    n = TRIM_CACHE_KEEP;
                for (size_t k = 0; k < n; k++) {
                    keep->ids[k] = it->ids[j + k];
                    keep->pos[k] = it->pos[j + k];
                    keep->size[k] = it->seen[j + k].size;
                }
                keep->s = s;
                keep->ndels = s->w.ndels;
                keep->moved_pos = s->w.moved_pos;
                keep->i = 0;
                keep->n = n;
            }
            break;
        }
        out->removed++;
        out->bytes += it->ent_size;
    }
    evs_iter_close(it);
    return rc < 0 ? rc : 0;
}

int reader_trim_scan(evs_store *st, stream *s, const stream_state *snap, evs_id from,
                     const trim_goal *goal, trim_scan *out, evs_error *err)
{
    return scan_trim(st, s, snap, from, goal, out, NULL, err);
}

int reader_trim_scan_w(evs_store *st, stream *s, const stream_state *snap, const trim_goal *goal,
                       trim_scan *out, evs_error *err)
{
    if (!st->tcache)
        st->tcache = calloc(TRIM_CACHE_SLOTS, sizeof *st->tcache); /* NULL: scans as before */
    trim_cache *c = st->tcache ? &st->tcache[s->no % TRIM_CACHE_SLOTS] : NULL;
    if (c && c->s == s && c->i < c->n && c->ndels == s->w.ndels &&
        c->moved_pos == s->w.moved_pos && c->pos[c->i] == s->w.first_pos &&
        evs_id_cmp(c->ids[c->i], s->w.first_id) == 0 && snap->length) { /* T1 */
        memset(out, 0, sizeof *out);
        for (size_t j = c->i; j < c->n; j++) {
            if (trim_goal_keeps(goal, c->ids[j], out->removed, out->bytes)) {
                out->next = c->ids[j];
                out->next_pos = c->pos[j];
                c->i = j; /* the first entry once this trim applies */
                return 0;
            }
            out->removed++;
            out->bytes += c->size[j];
        }
        /* T2: past what the slot holds */
    }
    return scan_trim(st, s, snap, s->w.first_id, goal, out, c, err);
}

int reader_first_after(evs_store *st, stream *s, evs_id after, evs_id *id, uint64_t *pos,
                       evs_error *err)
{
    return first_in(st, s, true, after, true, EVS_ID_MAX, id, pos, NULL, NULL, err);
}

/* ---- stream information ------------------------------------------------------------------ */

static void info_from(const stream_state *v, evs_stream_info *o)
{
    o->length = v->length;
    o->entries_added = v->entries_added;
    o->first_id = v->length ? v->first_id : EVS_ID_MIN;
    o->last_id = v->last_id;
    o->max_deleted_id = v->max_deleted;
    o->last_time_us = v->last_time_us;
    o->created_us = v->created_us;
    o->number = v->no;
}

int evs_stream_info_get(evs_store *st, evs_slice name, evs_stream_info *out)
{
    stream *s;
    stream_state snap;
    if (lookup(st, name, &s, &snap, NULL))
        return EVS_ENOTFOUND;
    info_from(&snap, out);
    out->first_id = reader_first_live(st, s, &snap);
    store_stream_put(s);
    return 0;
}

evs_id reader_first_live(evs_store *st, stream *s, const stream_state *snap)
{
    if (!snap->length)
        return EVS_ID_MIN;
    if (!snap->ndels)
        return snap->first_id; /* a trim leaves it on the first entry it keeps */
    evs_id first = snap->first_id;
    evs_iter *it;
    evs_error e;
    evs_query q;
    evs_query_init(&q);
    q.limit = 1;
    if (iter_open_stream(st, s, snap, &q, NULL, &it, &e) == 0) {
        const evs_entry *ent;
        if (evs_iter_next(it, &ent, &e) == 1)
            first = ent->id;
        evs_iter_close(it);
    }
    return first;
}

struct listed {
    stream *s;
    stream_state v;
};

static int cmp_listed(const void *a, const void *b)
{
    const struct listed *x = a, *y = b;
    size_t n = x->s->name_len < y->s->name_len ? x->s->name_len : y->s->name_len;
    int c = memcmp(x->s->name, y->s->name, n);
    if (c)
        return c;
    return x->s->name_len < y->s->name_len ? -1 : x->s->name_len > y->s->name_len;
}

/* fn for each listed stream in turn, until one returns non-zero (returned); frees l. */
static int report_listed(struct listed *l, size_t n,
                         int (*fn)(void *arg, evs_slice name, const evs_stream_info *), void *arg)
{
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        evs_stream_info info;
        info_from(&l[i].v, &info);
        rc = fn(arg, (evs_slice){l[i].s->name, l[i].s->name_len}, &info);
    }
    for (size_t i = 0; i < n; i++)
        store_stream_put(l[i].s);
    free(l);
    return rc;
}

int evs_stream_list(evs_store *st, int (*fn)(void *arg, evs_slice name, const evs_stream_info *),
                    void *arg)
{
    pthread_rwlock_rdlock(&st->lock);
    size_t n = st->vtab.n, k = 0;
    struct listed *all = malloc((n ? n : 1) * sizeof *all);
    if (!all) {
        pthread_rwlock_unlock(&st->lock);
        return -ENOMEM;
    }
    for (size_t b = 0; b < st->vtab.nb; b++)
        for (stream *s = st->vtab.b[b]; s && k < n; s = s->v_next) {
            store_stream_hold(s); /* S2: named after the lock goes */
            all[k++] = (struct listed){s, s->v};
        }
    pthread_rwlock_unlock(&st->lock);
    qsort(all, k, sizeof *all, cmp_listed);
    return report_listed(all, k, fn, arg);
}

int evs_stream_scan(evs_store *st, uint64_t from, size_t count,
                    int (*fn)(void *arg, evs_slice name, const evs_stream_info *), void *arg,
                    uint64_t *next)
{
    *next = 0;
    if (count == 0)
        return 0;
    pthread_rwlock_rdlock(&st->lock);
    size_t cap = count < st->vtab.n ? count : st->vtab.n, n = 0;
    struct listed *l = malloc((cap ? cap : 1) * sizeof *l);
    if (!l) {
        pthread_rwlock_unlock(&st->lock);
        return -ENOMEM;
    }
    for (uint64_t no = numtab_next(&st->vtab.byno, from); no != NUMTAB_END;
         no = numtab_next(&st->vtab.byno, no + 1)) {
        stream *s = numtab_get(&st->vtab.byno, (uint32_t)no);
        if (n == cap) { /* the one after them: the next step's start */
            *next = no;
            break;
        }
        store_stream_hold(s); /* S2: named after the lock goes */
        l[n++] = (struct listed){s, s->v};
    }
    pthread_rwlock_unlock(&st->lock);
    return report_listed(l, n, fn, arg);
}

/* ---- waiting ----------------------------------------------------------------------------- */

int evs_wait(evs_store *st, evs_slice name, evs_id after, int64_t timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    if (timeout_ms > 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (timeout_ms % 1000) * 1000000;
        if (deadline.tv_nsec >= 1000000000) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000;
        }
    }
    pthread_mutex_lock(&st->vmu);
    for (;;) {
        uint64_t gen = st->vgen;
        pthread_mutex_unlock(&st->vmu);
        stream_state snap;
        if (lookup(st, name, NULL, &snap, NULL) == 0 && snap.length &&
            evs_id_cmp(snap.last_id, after) > 0)
            return 1;
        pthread_mutex_lock(&st->vmu);
        bool closing;
        pthread_mutex_lock(&st->qmu);
        closing = st->closing;
        pthread_mutex_unlock(&st->qmu);
        if (closing) {
            pthread_mutex_unlock(&st->vmu);
            return EVS_ECLOSED;
        }
        while (st->vgen == gen) {
            if (timeout_ms < 0) {
                pthread_cond_wait(&st->vcv, &st->vmu);
            } else if (timeout_ms == 0 ||
                       pthread_cond_timedwait(&st->vcv, &st->vmu, &deadline) == ETIMEDOUT) {
                pthread_mutex_unlock(&st->vmu);
                return 0;
            }
        }
    }
}

void evs_set_visible_hook(evs_store *st, evs_visible_fn fn, void *arg)
{
    pthread_mutex_lock(&st->vmu);
    st->hook = fn;
    st->hook_arg = arg;
    pthread_mutex_unlock(&st->vmu);
}

void evs_set_written_hook(evs_store *st, evs_written_fn fn, void *arg)
{
    pthread_mutex_lock(&st->vmu);
    st->whook = fn;
    st->whook_arg = arg;
    pthread_mutex_unlock(&st->vmu);
}

int reader_live_positions(evs_store *st, stream *s, const stream_state *snap, uint64_t max_bytes,
                          uint64_t **pos, size_t *n, uint64_t *bytes, evs_error *err)
{
    *pos = NULL;
    *n = 0;
    *bytes = 0;
    evs_iter *it;
    int rc = iter_open_stream(st, s, snap, NULL, NULL, &it, err);
    if (rc)
        return rc;
    size_t cap = 0;
    const evs_entry *e;
    while ((rc = evs_iter_next(it, &e, err)) == 1) {
        if (*bytes + it->ent_size > max_bytes) {
            rc = evs_err_set(err, EVS_ETOOBIG, "stream %s: its live entries take more than %"
                             PRIu64 " bytes", it->pname, max_bytes);
            break;
        }
        if (arr_room(pos, *n, &cap, sizeof **pos, 64)) {
            rc = evs_err_set(err, -ENOMEM, "out of memory");
            break;
        }
        (*pos)[(*n)++] = it->ent_pos;
        *bytes += it->ent_size;
    }
    evs_iter_close(it);
    if (rc < 0) {
        free(*pos);
        *pos = NULL;
        *n = 0;
    }
    return rc < 0 ? rc : 0;
}
