/*
 * postings.c — gathering filter-index groups (see postings.h). An open-addressing table keyed
 * by (stream, field, hash) finds a group's list; lists keep their memory from one batch to the
 * next.
 *
 * P1. A group stays open across index commits until its value is full: each commit puts its
 *     key again with everything so far, so a key holds up to POST_MAX_BYTES of entries however
 *     few of them each commit brings. (Closing every group at every commit made one key per
 *     group per commit: with 1,000 streams at 20 k entries/s, 1.6 keys an entry and an index
 *     a fifth the size of the log.)
 * P2. Only entries the commit covers are in a group when it is put: the groups are filled by
 *     the records applied before the commit and put by it (post_flush), in the same batch.
 * P3. A forgotten stream's groups (dropped, or relocated: post_forget_stream) are never put
 *     again: their keys are deleted in the batch that records it, stream numbers are not
 *     reused, and a relocated stream's next entry starts a new key. A forget costs no walk of
 *     the table (a relocation forgets thousands of streams at once, and a walk each made it
 *     quadratic: 40,000 streams took 11 s of the writer's time): the stream is noted with a
 *     stamp, and a group whose key began before that stamp counts as closed wherever it is
 *     met (forgotten()) until the next commit's put closes every such group for good.
 * P4. A key retention deletes (its entries all in deleted segments) is never put again: if its
 *     group is still open, post_close_key closes it in the same batch as the delete, and the
 *     group's next entry starts a new key — unless the open group has gained an entry at or
 *     past the stream's first entry since retention read the key: then the key stays.
 * P5. The buffers of groups closed at a compaction are kept (those of the size a new group's
 *     starts with) and given to the next new groups: with many more lists than open groups
 *     (1,000 streams x 1,000 sources) every entry opens a group, and a malloc and a free per
 *     entry, the frees all at once at each compaction, were 5 % of a catching-up follower's
 *     samples. After each commit no more are kept than that commit opened groups (the next
 *     one is likely to open as many), nor POST_SPARE_MAX: once such a load ends, so does
 *     the memory it kept.
 */
#define POST_BUF_FIRST 256
#define POST_SPARE_MAX 65536 /* 16 MiB at most, what the open groups held at that load's peak */
#include "postings.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "index.h"

struct group {
    uint32_t no;
    uint8_t field;
    bool used;
    uint64_t hash;
    uint8_t *val; /* the encoded value so far (n bytes) */
    uint32_t n, cap;
    evs_id last;
    uint64_t last_pos;
    uint64_t seen; /* the commit that last added to it: its key is put at that commit */
    uint64_t born; /* the forget stamp when its key began (P3) */
};

/* P3: the streams forgotten since the last commit, each with its latest stamp. */
struct forgot {
    uint32_t no;
    bool used;
    uint64_t stamp;
};

struct postings {
    struct group *g;
    uint8_t **spare; /* P5: buffers of closed groups (POST_BUF_FIRST bytes), for new groups */
    size_t nspare;
    size_t opened; /* groups opened since the last commit (P5) */
    size_t cap, used;
    size_t peak;     /* groups at the last compactions, halved at each: the recent inflow  */
    uint64_t commit; /* commits so far (post_flush calls) */
    struct forgot *fg; /* P3: open addressing by stream number, fg_cap a power of two */
    size_t fg_cap, fg_used;
    uint64_t stamp; /* forgets so far */
};

postings *post_new(void)
{
    postings *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->cap = 64;
    p->g = calloc(p->cap, sizeof *p->g);
    if (!p->g) {
        free(p);
        return NULL;
    }
    return p;
}

void post_free(postings *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->cap; i++)
        free(p->g[i].val);
    for (size_t i = 0; i < p->nspare; i++)
        free(p->spare[i]);
    free(p->spare);
    free(p->g);
    free(p->fg);
    free(p);
}

/* A closed group's buffer: kept for a new group (P5), or freed. */
static void spare_put(postings *p, struct group *g)
{
    if (g->val && g->cap == POST_BUF_FIRST && p->nspare < POST_SPARE_MAX) {
        if (!p->spare && !(p->spare = malloc(POST_SPARE_MAX * sizeof *p->spare))) {
            free(g->val);
            return;
        }
        p->spare[p->nspare++] = g->val;
    } else {
        free(g->val);
    }
}

static size_t slot_of(const postings *p, uint32_t no, uint8_t field, uint64_t hash)
{
    uint64_t h = hash ^ ((uint64_t)no * 0x9e3779b97f4a7c15ull) ^ field;
    h ^= h >> 29;
    return (size_t)h & (p->cap - 1);
}

static struct group *find(postings *p, uint32_t no, uint8_t field, uint64_t hash)
{
    for (size_t i = slot_of(p, no, field, hash);; i = (i + 1) & (p->cap - 1)) {
        struct group *g = &p->g[i];
        if (!g->used || (g->no == no && g->field == field && g->hash == hash))
            return g;
    }
}

static struct forgot *fg_find(const postings *p, uint32_t no)
{
    for (size_t i = (no * 0x9e3779b1u) & (p->fg_cap - 1);; i = (i + 1) & (p->fg_cap - 1))
        if (!p->fg[i].used || p->fg[i].no == no)
            return &p->fg[i];
}

/* P3: whether g holds a key its stream's forget closed; closes it (n = 0) if so. */
static bool forgotten(postings *p, struct group *g)
{
    if (!p->fg_used || !g->used || !g->n)
        return false;
    struct forgot *f = fg_find(p, g->no);
    if (!f->used || f->stamp <= g->born)
        return false;
    g->n = 0;
    return true;
}

/* The next commit's put has closed every forgotten group: the notes go. */
static void fg_clear(postings *p)
{
    if (p->fg_cap > 4096) { /* a burst of forgets leaves no large table behind */
        free(p->fg);
        p->fg = NULL;
        p->fg_cap = 0;
    } else if (p->fg) {
        memset(p->fg, 0, p->fg_cap * sizeof *p->fg);
    }
    p->fg_used = 0;
}

static bool kept(const struct group *g, uint64_t since)
{
    return g->used && g->n && g->seen >= since;
}

static size_t count_kept(const postings *p, uint64_t since)
{
    size_t n = 0;
    for (size_t i = 0; i < p->cap; i++)
        n += kept(&p->g[i], since);
    return n;
}

/* Keep the n open groups last added to at commit `since` or later (count_kept), in a table of
 * cap slots (the same table, cleared, when cap is its size: no fresh pages to fault in); the
 * others are closed and their buffers freed. */
static int rehash(postings *p, size_t cap, uint64_t since, size_t n)
{
    struct group *keep = n ? malloc(n * sizeof *keep) : NULL;
    struct group *t = cap == p->cap ? p->g : calloc(cap, sizeof *t);
    if ((n && !keep) || !t) {
        free(keep);
        if (t != p->g)
            free(t);
        return -ENOMEM;
    }
    n = 0;
    for (size_t i = 0; i < p->cap; i++) {
        struct group *o = &p->g[i];
        if (kept(o, since))
            keep[n++] = *o;
        else
            spare_put(p, o);
    }
    if (t == p->g)
        memset(t, 0, cap * sizeof *t);
    else
        free(p->g);
    p->g = t;
    p->cap = cap;
    p->used = n;
    for (size_t i = 0; i < n; i++)
        *find(p, keep[i].no, keep[i].field, keep[i].hash) = keep[i];
    free(keep);
    return 0;
}

static int grow(postings *p) { return rehash(p, p->cap * 2, 0, count_kept(p, 0)); }

/* Past POST_OPEN_MAX open groups, close the idle ones (none added to in the last
 * POST_IDLE_COMMITS commits), then if need be all but this commit's, then all. The table
 * keeps room for the groups it held at recent compactions (`peak`): the next commit brings
 * about as many new groups as this one, and a table cut back at every commit grew again by
 * doubling at every commit (a follower catching up on 1,000 streams x 1,000 sources: 9-14 %
 * of its writer's time went to rehashing and faulting in fresh tables, measured). */
static int compact(postings *p)
{
    p->peak = p->used > p->peak / 2 ? p->used : p->peak / 2;
    uint64_t last = p->commit - 1; /* the commit just put (post_flush counted it) */
    uint64_t tries[3] = {last > POST_IDLE_COMMITS ? last - POST_IDLE_COMMITS : 0, last,
                         UINT64_MAX};
    for (int t = 0; t < 3; t++) {
        size_t keep = count_kept(p, tries[t]);
        if (keep > POST_OPEN_MAX)
            continue;
        size_t need = 64;
        while (need < keep * 4 || need < p->peak * 2)
            need *= 2;
        return rehash(p, p->cap >= need * 4 ? need : p->cap, tries[t], keep);
    }
    return 0;
}

/* Put the group's key with its entries so far (a later put of the same key overwrites it). */
static int put_group(const struct group *g, struct idx_batch *b)
{
    if (g->n == 0)
        return 0;
    uint8_t k[IDX_FILTKEY];
    idx_be32(k, g->no);
    k[4] = g->field;
    idx_be64(k + 5, g->hash);
    memcpy(k + 13, g->val, 16); /* the first entry's ms, seq */
    return idx_batch_put(b, IDX_FILT, k, sizeof k, g->val, g->n);
}

/* A full group: its key is final; the group's next entry starts a new key. */
static int emit(struct group *g, struct idx_batch *b)
{
    int rc = put_group(g, b);
    g->n = 0;
    return rc;
}

static size_t put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

int post_add(postings *p, struct idx_batch *b, uint32_t no, uint8_t field, uint64_t hash,
             evs_id id, uint64_t pos)
{
    if ((p->used + 1) * 2 > p->cap && grow(p))
        return -ENOMEM;
    struct group *g = find(p, no, field, hash);
    forgotten(p, g); /* P3: then its next entry starts a new key */
    if (!g->used) {
        g->used = true;
        g->no = no;
        g->field = field;
        g->hash = hash;
        g->n = 0;
        p->used++;
        p->opened++;
    }
    if (!g->val && p->nspare) {
        g->val = p->spare[--p->nspare];
        g->cap = POST_BUF_FIRST;
    }
    if (g->cap - g->n < 32) {
        size_t cap = g->cap ? g->cap * 2 : POST_BUF_FIRST;
        uint8_t *v = realloc(g->val, cap);
        if (!v)
            return -ENOMEM;
        g->val = v;
        g->cap = cap;
    }
    uint8_t *t = g->val + g->n;
    if (g->n == 0) {
        g->born = p->stamp;
        idx_be64(t, id.ms);
        idx_be64(t + 8, id.seq);
        idx_be64(t + 16, pos);
        g->n = POST_FIRST;
    } else {
        uint64_t dms = id.ms - g->last.ms;
        size_t n = put_varint(t, dms);
        n += put_varint(t + n, dms ? id.seq : id.seq - g->last.seq - 1);
        n += put_varint(t + n, pos - g->last_pos);
        g->n += n;
    }
    g->last = id;
    g->last_pos = pos;
    g->seen = p->commit;
    return g->n >= POST_MAX_BYTES ? emit(g, b) : 0;
}

void post_clear(postings *p)
{
    for (size_t i = 0; i < p->cap; i++) {
        p->g[i].used = false;
        p->g[i].n = 0;
    }
    p->used = 0;
    fg_clear(p);
}

int post_flush(postings *p, struct idx_batch *b)
{
    int rc = 0;
    bool forgets = p->fg_used;
    for (size_t i = 0; i < p->cap && !rc; i++)
        if (!forgotten(p, &p->g[i]) && p->g[i].used && p->g[i].seen == p->commit)
            rc = put_group(&p->g[i], b); /* nothing if it was emitted full */
    if (forgets && !rc) /* P3: every forgotten group is closed now */
        fg_clear(p);
    p->commit++;
    if (!rc && p->used > POST_OPEN_MAX && compact(p))
        post_clear(p); /* out of memory for a smaller table: close them all */
    while (p->nspare > p->opened) /* P5 */
        free(p->spare[--p->nspare]);
    p->opened = 0;
    return rc;
}

bool post_close_key(postings *p, const uint8_t *key, evs_id first)
{
    uint32_t no = idx_rd32(key);
    uint64_t hash = idx_rd64(key + 5);
    struct group *g = find(p, no, key[4], hash);
    forgotten(p, g);
    if (!g->used || g->n < 16 || memcmp(g->val, key + 13, 16))
        return true; /* not open: never put again */
    if (evs_id_cmp(g->last, first) >= 0)
        return false; /* a live entry joined it after retention read the key */
    g->n = 0; /* P4: stays in the table, its next entry starts a new key */
    return true;
}

void post_forget_stream(postings *p, uint32_t no)
{
    if ((p->fg_used + 1) * 2 > p->fg_cap) {
        size_t cap = p->fg_cap ? p->fg_cap * 2 : 64;
        struct forgot *old = p->fg, *t = calloc(cap, sizeof *t);
        if (!t) { /* no room for the note: close its groups now, the slow way */
            for (size_t i = 0; i < p->cap; i++)
                if (p->g[i].used && p->g[i].no == no)
                    p->g[i].n = 0; /* stays in the table (a probe chain may pass it) */
            return;
        }
        size_t ocap = p->fg_cap;
        p->fg = t;
        p->fg_cap = cap;
        for (size_t i = 0; i < ocap; i++)
            if (old[i].used)
                *fg_find(p, old[i].no) = old[i];
        free(old);
    }
    struct forgot *f = fg_find(p, no);
    p->fg_used += !f->used;
    *f = (struct forgot){no, true, ++p->stamp};
}

void post_iter_init(post_iter *it, const void *v, size_t vl)
{
    it->p = v;
    it->end = it->p + vl;
    it->started = false;
    it->bad = vl < POST_FIRST;
}

static bool get_varint(post_iter *it, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && it->p < it->end; shift += 7) {
        uint8_t c = *it->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return true;
        }
    }
    it->bad = true;
    return false;
}

bool post_next(post_iter *it, evs_id *id, uint64_t *pos)
{
    if (it->bad || it->p >= it->end)
        return false;
    if (!it->started) {
        it->id = (evs_id){idx_rd64(it->p), idx_rd64(it->p + 8)};
        it->pos = idx_rd64(it->p + 16);
        it->p += POST_FIRST;
        it->started = true;
    } else {
        uint64_t dms, s, dpos;
        if (!get_varint(it, &dms) || !get_varint(it, &s) || !get_varint(it, &dpos))
            return false;
        if (dms) {
            it->id.ms += dms;
            it->id.seq = s;
        } else {
            it->id.seq += s + 1;
        }
        it->pos += dpos;
    }
    *id = it->id;
    *pos = it->pos;
    return true;
}
