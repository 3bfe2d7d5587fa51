/*
 * verify.c — check every record of every segment, the chains between a stream's entries,
 * and the index against the log. Reports one line per problem; never changes anything.
 *
 * Checks:
 *  V1. each segment is a sequence of valid records (record.c's rules) from byte 0 to its
 *      end; a sealed segment ends with its seal; segments are contiguous in the log;
 *  V2. per stream, entry IDs strictly increase and each entry's `prev` names the stream's
 *      previous entry;
 *  V3. every sparse key, time key and filter key points at an entry of its stream with its ID;
 *  V4. each stream's state (last entry, count) agrees with the log; the watermark is inside it.
 *  V5. a forward and a reverse read of each stream, as readers do them (reader.c, through the
 *      index), hand out as many entries as the stream's length: the checks above compare the
 *      index with the log key by key, and a stream whose first key lay above its first entry
 *      passed them all while reads skipped entries (reader.c K1).
 */
#include "index.h"
#include "internal.h"
#include "postings.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vstate {
    evs_store *st;
    void (*report)(void *, const char *);
    void *arg;
    long problems;
    numtab tracks;          /* struct track by the stream number records name               */
    uint64_t log_start;     /* retention deleted what lies below: back-pointers and index keys
                               into it name trimmed entries                                  */
    stream **vis;           /* the visible streams when the check began, in number order    */
    size_t nvis;            /* (names; each with a reference: streams.c S2)                 */
};

/* What the log has shown of one stream number so far. */
struct track {
    uint64_t last_pos;
    evs_id last_id;
    uint64_t count;
    evs_id moved_id;        /* the last moved copy's ID (a relocation's chain)               */
};

static void problem(struct vstate *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct vstate *v, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    v->problems++;
    if (v->report)
        v->report(v->arg, buf);
}

static void sname_of(const stream *s, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < s->name_len && o + 5 < cap; i++) {
        uint8_t c = s->name[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    out[o] = 0;
}

static int cmp_no(const void *key, const void *elem)
{
    uint32_t no = *(const uint32_t *)key, o = (*(stream *const *)elem)->no;
    return no < o ? -1 : no > o;
}

/* By number, from the copy of the visible table taken at the start (v->vis: the writer's
 * own table, st->byno, may change meanwhile in a store open for writes, and the lock is not
 * taken under an index read transaction); a stream not in it is "#<no>". */
static void sname(struct vstate *v, uint32_t no, char *out, size_t cap)
{
    stream **s = v->nvis ? bsearch(&no, v->vis, v->nvis, sizeof *v->vis, cmp_no) : NULL;
    if (s)
        sname_of(*s, out, cap);
    else
        snprintf(out, cap, "#%u", no);
}

/* no's track, made at its first record; NULL past the numbers a store assigns (scan reports
 * the record) or out of memory. */
static struct track *track(struct vstate *v, uint32_t no)
{
    struct track *t = numtab_get(&v->tracks, no);
    if (t || no >= EVS_STREAM_NO_MAX)
        return t;
    if (!(t = malloc(sizeof *t)))
        return NULL;
    *t = (struct track){REC_POS_NONE, EVS_ID_MIN, 0, EVS_ID_MIN};
    if (numtab_set(&v->tracks, no, t)) {
        free(t);
        return NULL;
    }
    return t;
}

static void check_entry(struct vstate *v, const segment *s, uint64_t off, const rec_hdr *h)
{
    char nm[160], idb[EVS_ID_STRLEN];
    evs_id id = {h->id_ms, h->id_seq};
    evs_id_format(id, idb);
    struct track *t = track(v, h->stream);
    if (!t)
        return;
    sname(v, h->stream, nm, sizeof nm);
    if (h->flags & REC_F_MOVED) {
        /* a relocation's copy (record.h): its IDs restart below the stream's last, in order */
        bool first = h->prev == REC_POS_NONE;
        bool known = evs_id_cmp(t->last_id, EVS_ID_MIN) != 0; /* else deleted */
        if ((known && evs_id_cmp(id, t->last_id) > 0) ||
            (!first && evs_id_cmp(id, t->moved_id) <= 0))
            problem(v, "stream %s: segment %s offset %" PRIu64 ": moved entry id %s out of "
                       "order", nm, s->name, off, idb);
        if (!first && h->prev != t->last_pos)
            problem(v, "stream %s: segment %s offset %" PRIu64 " (moved entry id %s): "
                       "back-pointer %" PRIu64 " does not name the previous copy (%" PRIu64 ")",
                    nm, s->name, off, idb, h->prev, t->last_pos);
        t->last_pos = s->base + off;
        t->moved_id = id;
        return; /* not an append: the count and the last ID stay */
    }
    if (t->count && evs_id_cmp(id, t->last_id) <= 0)
        problem(v, "stream %s: segment %s offset %" PRIu64 ": entry id %s is not above the "
                   "previous entry's", nm, s->name, off, idb);
    bool cut = t->last_pos == REC_POS_NONE && h->prev != REC_POS_NONE &&
               h->prev < v->log_start; /* its predecessor was in a deleted segment */
    if (h->prev != t->last_pos && !cut)
        problem(v, "stream %s: segment %s offset %" PRIu64 " (entry id %s): back-pointer %" PRIu64
                   " does not name the previous entry (%" PRIu64 ")",
                nm, s->name, off, idb, h->prev, t->last_pos);
    t->last_pos = s->base + off;
    t->last_id = id;
    t->count++;
}

static void scan(struct vstate *v, segment *s, bool last, uint64_t expect_base)
{
    if (s->base != expect_base)
        problem(v, "segment %s: starts at log position %" PRIu64 " but the previous one ends at %"
                   PRIu64, s->name, s->base, expect_base);
    const uint8_t *p = seg_data(s); /* (a reference held: verify's own) */
    uint64_t size = atomic_load(&s->size), off = 0;
    if (!p && size) {
        problem(v, "segment %s: cannot map it: %s", s->name, strerror(errno));
        return;
    }
    bool sealed = false;
    while (off < size) {
        rec_hdr h;
        uint64_t sz;
        int c = rec_check(p + off, size - off, &h, &sz);
        if (c == REC_ZERO) {
            /* zero-filled space: the end of the records, if nothing but zeros follows */
            static const uint8_t z[4096];
            uint64_t o = off;
            while (o < size && !memcmp(p + o, z, size - o < sizeof z ? size - o : sizeof z))
                o += sizeof z;
            if (o >= size)
                break;
        }
        if (c != REC_OK) {
            char nm[160] = "unknown", idb[EVS_ID_STRLEN] = "unknown";
            rec_hdr hh;
            if (rec_check_hdr(p + off, size - off, &hh, &sz) == REC_OK) {
                sname(v, hh.stream, nm, sizeof nm);
                evs_id_format((evs_id){hh.id_ms, hh.id_seq}, idb);
            }
            problem(v, "stream %s: segment %s offset %" PRIu64 " (entry id %s): %s", nm, s->name,
                    off, idb, rec_check_str(c));
            /* re-synchronise on the next valid record */
            uint64_t o = (off + REC_ALIGN) & ~(uint64_t)(REC_ALIGN - 1);
            for (; o + REC_HDR_SIZE <= size; o += REC_ALIGN)
                if (p[o] == 0x45 && rec_check(p + o, size - o, &hh, &sz) == REC_OK)
                    break;
            off = o + REC_HDR_SIZE <= size ? o : size;
            continue;
        }
        if (sealed)
            problem(v, "segment %s offset %" PRIu64 ": record after the seal", s->name, off);
        if (h.stream >= EVS_STREAM_NO_MAX)
            problem(v, "segment %s offset %" PRIu64 ": stream number %u, past the most a store "
                    "assigns (%u)", s->name, off, h.stream, EVS_STREAM_NO_MAX - 1);
        if (h.kind == REC_ENTRY)
            check_entry(v, s, off, &h);
        struct track *t = h.kind == REC_STREAM ? track(v, h.stream) : NULL;
        if (t) {
            int op;
            evs_slice nm;
            uint64_t extra[REC_STREAM_MAX_EXTRA];
            size_t nx = 0;
            if (h.body_len > 1 && p[off + REC_HDR_SIZE + 1] != REC_STREAM_IDEM &&
                !rec_stream_decode(p + off + REC_HDR_SIZE, h.body_len, &op, &nm, extra, &nx)) {
                if (op == REC_STREAM_SETID && nx == 5)
                    t->count = extra[2]; /* XSETID ENTRIESADDED sets the counter */
                else if (op == REC_STREAM_DECLARE && nx == REC_DECLARE_N)
                    t->count = extra[7]; /* the whole state, as retention saw it */
            }
        }
        if (h.kind == REC_SEAL)
            sealed = true;
        off += sz;
    }
    if (!last && !sealed)
        problem(v, "segment %s: not sealed but a later segment exists", s->name);
}

static void check_one(struct vstate *v, const char *what, uint32_t no, evs_id id, uint64_t pos)
{
    if (pos < v->log_start)
        return; /* a trimmed entry whose segment retention deleted */
    char nm[160], idb[EVS_ID_STRLEN];
    sname(v, no, nm, sizeof nm);
    evs_id_format(id, idb);
    rec_hdr h;
    const uint8_t *body;
    uint64_t size;
    segment *ref = NULL;
    evs_error e;
    int bad = store_read_record(v->st, pos, nm, &h, &body, &size, &ref, &e);
    store_seg_put(ref);
    if (bad) {
        problem(v, "index %s key (stream %s, entry id %s) -> log position %" PRIu64 ": %s", what,
                nm, idb, pos, e.msg);
        return;
    }
    if (h.kind != REC_ENTRY || h.stream != no || h.id_ms != id.ms || h.id_seq != id.seq)
        problem(v, "index %s key (stream %s, entry id %s) -> log position %" PRIu64
                   " holds another record", what, nm, idb, pos);
}

static void check_keys(struct vstate *v, idx_rtxn *r, enum idx_table t, const char *what)
{
    idx_cur *c;
    if (idx_cur_open(r, t, &c))
        return;
    const void *k, *val;
    size_t kl, vl;
    for (int rc = idx_cur_get(c, IDX_FIRST, NULL, 0, &k, &kl, &val, &vl); rc == 0;
         rc = idx_cur_get(c, IDX_NEXT, NULL, 0, &k, &kl, &val, &vl)) {
        const uint8_t *kk = k;
        uint32_t no = idx_rd32(kk);
        if (t == IDX_IDS && kl == IDX_IDKEY && vl >= 8) {
            check_one(v, what, no, (evs_id){idx_rd64(kk + 4), idx_rd64(kk + 12)}, idx_rd64(val));
        } else if (t == IDX_FILT && kl == IDX_FILTKEY && vl >= POST_FIRST) {
            evs_id first = {idx_rd64(kk + 13), idx_rd64(kk + 21)}, id, prev = EVS_ID_MIN;
            uint64_t pos;
            post_iter pi;
            post_iter_init(&pi, val, vl);
            for (size_t i = 0; post_next(&pi, &id, &pos); i++) {
                if (i == 0 && evs_id_cmp(id, first) != 0)
                    problem(v, "index %s key of stream #%u: first entry differs from the key", what, no);
                if (i && evs_id_cmp(id, prev) <= 0)
                    problem(v, "index %s key of stream #%u: IDs out of order", what, no);
                check_one(v, what, no, id, pos);
                prev = id;
            }
            if (pi.bad)
                problem(v, "index %s key of stream #%u: malformed value", what, no);
        } else {
            problem(v, "index %s table: malformed key of %zu bytes (value %zu bytes)", what, kl, vl);
        }
    }
    idx_cur_close(c);
}

/* V5. The streams visible when the check began (v->vis, each with a reference: streams.c
 * S2) are read without the lock, each read on its own snapshot (a stream changed
 * meanwhile is compared with its length then). */
static void check_reads(struct vstate *v)
{
    evs_store *st = v->st;
    for (size_t i = 0; i < v->nvis; i++) {
        const stream *s = v->vis[i];
        char nm[160];
        sname_of(s, nm, sizeof nm);
        for (int reverse = 0; reverse < 2; reverse++) {
            uint64_t length, found;
            evs_error err = {0};
            int rc = reader_read_count(st, (evs_slice){s->name, s->name_len}, reverse, &length,
                                       &found, &err);
            if (rc == EVS_ENOTFOUND)
                break; /* dropped since */
            if (rc)
                problem(v, "stream %s: a %s read failed: %s", nm, reverse ? "reverse" : "forward",
                        err.msg);
            else if (found != length)
                problem(v, "stream %s: a %s read hands out %" PRIu64 " entries, its length is %"
                        PRIu64, nm, reverse ? "reverse" : "forward", found, length);
        }
    }
}

long evs_verify(evs_store *st, void (*report)(void *, const char *), void *arg)
{
    struct vstate v = {st, report, arg, 0, {NULL, 0}, 0, NULL, 0};
    pthread_rwlock_rdlock(&st->lock);
    v.vis = malloc((st->vtab.n ? st->vtab.n : 1) * sizeof *v.vis);
    if (v.vis)
        NUMTAB_EACH(&st->vtab.byno, no) {
            stream *s = numtab_get(&st->vtab.byno, (uint32_t)no);
            store_stream_hold(s); /* read after the lock goes (streams.c S2) */
            v.vis[v.nvis++] = s;
        }
    size_t n = st->nsegs;
    segment **segs = malloc((n ? n : 1) * sizeof *segs);
    if (!segs || !v.vis) {
        pthread_rwlock_unlock(&st->lock);
        for (size_t i = 0; i < v.nvis; i++)
            store_stream_put(v.vis[i]);
        free(segs);
        free(v.vis);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        segs[i] = st->segs[i];
        atomic_fetch_add(&segs[i]->refs, 1);
    }
    pthread_rwlock_unlock(&st->lock);
    uint64_t expect = n ? segs[0]->base : 0, log_end = expect;
    v.log_start = expect;
    for (size_t i = 0; i < n; i++) {
        scan(&v, segs[i], i + 1 == n, expect);
        expect = segs[i]->base + atomic_load(&segs[i]->size);
        log_end = expect;
        store_seg_put(segs[i]); /* done with it: its mapping may go (segment.c M2) */
    }
    free(segs);

    idx_rtxn *r;
    if (idx_rbegin(st->idx, &r) == 0) {
        check_keys(&v, r, IDX_IDS, "ids");
        check_keys(&v, r, IDX_FILT, "filter");
        const void *val;
        size_t vl;
        if (idx_get(r, IDX_META, "watermark", 9, &val, &vl) == 0 && vl == 24 &&
            idx_rd64(val) > log_end)
            problem(&v, "index watermark %" PRIu64 " is past the end of the log (%" PRIu64 ")",
                    idx_rd64(val), log_end);
        idx_rend(r);
    } else {
        problem(&v, "index unreadable");
    }
    /* V4: stream states against the log */
    pthread_rwlock_rdlock(&st->lock);
    for (size_t b = 0; b < st->vtab.nb; b++) {
        for (stream *s = st->vtab.b[b]; s; s = s->v_next) {
            char nm[160], a[EVS_ID_STRLEN], c[EVS_ID_STRLEN];
            sname_of(s, nm, sizeof nm);
            const struct track *t = numtab_get(&v.tracks, s->no);
            uint64_t seen = t ? t->count : 0;
            uint64_t lp = t ? t->last_pos : REC_POS_NONE;
            if (seen != s->v.entries_added)
                problem(&v, "stream %s: index counts %" PRIu64 " entries added, the log holds %"
                            PRIu64, nm, s->v.entries_added, seen);
            bool gone = lp == REC_POS_NONE && s->v.last_pos != REC_POS_NONE &&
                        s->v.last_pos < v.log_start; /* every entry in deleted segments */
            if (lp != s->v.last_pos && !gone) {
                evs_id_format(s->v.last_id, a);
                evs_id_format(t ? t->last_id : EVS_ID_MIN, c);
                problem(&v, "stream %s: index says the last entry is %s, the log says %s", nm, a, c);
            }
        }
    }
    pthread_rwlock_unlock(&st->lock);
    check_reads(&v);
    for (size_t i = 0; i < v.nvis; i++)
        store_stream_put(v.vis[i]);
    free(v.vis);
    NUMTAB_EACH(&v.tracks, no)
        free(numtab_get(&v.tracks, (uint32_t)no));
    numtab_free(&v.tracks);
    return v.problems;
}
