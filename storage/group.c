/*
 * group.c — consumer-group state in memory: applying group records, checkpointing the state in
 * the index and loading it back. The invariants (G1-G4) are in group.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "crc.h"
#include "group.h"
#include "index.h"

/* ---- lookups ----------------------------------------------------------------------------- */

static int name_cmp(const uint8_t *a, size_t al, const void *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0; /* (an empty name may come as {NULL, 0}) */
    return c ? c : (al > bl) - (al < bl);
}

/* The first group of s whose name is not below `name` (ngroups if none). */
static uint32_t group_lower(const stream *s, const void *name, size_t len)
{
    uint32_t lo = 0, hi = s->ngroups;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (name_cmp(s->groups[mid]->name, s->groups[mid]->len, name, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

cgroup *group_find(const stream *s, const void *name, size_t len)
{
    if (!s)
        return NULL;
    uint32_t i = group_lower(s, name, len);
    if (i < s->ngroups && !name_cmp(s->groups[i]->name, s->groups[i]->len, name, len))
        return s->groups[i];
    return NULL;
}

static uint32_t cons_bucket(const cgroup *g, const void *name, size_t len)
{
    return evs_crc32(0, name, len) & (g->ncbucket - 1);
}

uint32_t group_consumer(const cgroup *g, const void *name, size_t len)
{
    if (!g->ncbucket)
        return PEL_FREE;
    for (uint32_t i = g->cbucket[cons_bucket(g, name, len)]; i != PEL_FREE; i = g->cons[i].hnext)
        if (evs_slice_eq((evs_slice){g->cons[i].name, g->cons[i].len}, (evs_slice){name, len}))
            return i;
    return PEL_FREE;
}

size_t pel_lower(const cgroup *g, evs_id id)
{
    size_t lo = 0, hi = g->npel;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (evs_id_cmp(g->pel[mid].id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

pel_ent *pel_find(cgroup *g, evs_id id)
{
    size_t i = pel_lower(g, id);
    if (i < g->npel && evs_id_cmp(g->pel[i].id, id) == 0 && g->pel[i].cons != PEL_FREE)
        return &g->pel[i];
    return NULL;
}

/* ---- Redis's entries-read arithmetic ----------------------------------------------------- */

bool group_range_has_tombstones(const stream_state *s, evs_id first, evs_id start)
{
    if (!s->length || evs_id_cmp(s->max_deleted, EVS_ID_MIN) == 0)
        return false;
    if (evs_id_cmp(first, s->max_deleted) > 0)
        return false;
    return evs_id_cmp(start, s->max_deleted) <= 0;
}

uint64_t group_estimate_read(const stream_state *s, evs_id first, evs_id id)
{
    if (!s->entries_added)
        return 0;
    if (!s->length && evs_id_cmp(id, s->last_id) < 1)
        return s->entries_added;
    int cmp_last = evs_id_cmp(id, s->last_id);
    if (cmp_last == 0)
        return s->entries_added;
    if (cmp_last > 0)
        return REC_G_ENTRIES_READ_NONE;
    int cmp_first = evs_id_cmp(id, first);
    if (evs_id_cmp(s->max_deleted, EVS_ID_MIN) == 0 || evs_id_cmp(s->max_deleted, first) < 0) {
        if (cmp_first < 0)
            return s->entries_added - s->length;
        if (cmp_first == 0)
            return s->entries_added - s->length + 1;
    }
    return REC_G_ENTRIES_READ_NONE;
}

/* ---- building blocks --------------------------------------------------------------------- */

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

static void group_free(cgroup *g)
{
    if (!g)
        return;
    for (uint32_t i = 0; i < g->ncons; i++)
        free(g->cons[i].name);
    free(g->cons);
    free(g->cbucket);
    free(g->dirty);
    free(g->pel);
    free(g->dlq);
    free(g->name);
    free(g);
}

void group_free_all(stream *s)
{
    for (uint32_t i = 0; i < s->ngroups; i++)
        group_free(s->groups[i]);
    free(s->groups);
    s->groups = NULL;
    s->ngroups = s->groupcap = 0;
}

/* The group's rows are written at the next index commit (G4). */
static void group_touch(stream *s, cgroup *g)
{
    g->touched = true;
    s->gtouched = true;
}

/* A new group joins its stream (G6); group numbers stay unique (the next one is above it).
 * On failure (-ENOMEM) the caller still owns g. */
static int group_adopt(evs_store *st, stream *s, cgroup *g)
{
    if (s->ngroups == s->groupcap) {
        uint32_t n = s->groupcap ? s->groupcap * 2 : 4;
        cgroup **a = realloc(s->groups, n * sizeof *a);
        if (!a)
            return -ENOMEM;
        s->groups = a;
        s->groupcap = n;
    }
    uint32_t i = s->ngroups; /* a load brings them in name order: each lands at the end */
    if (i && name_cmp(s->groups[i - 1]->name, s->groups[i - 1]->len, g->name, g->len) > 0)
        i = group_lower(s, g->name, g->len);
    memmove(&s->groups[i + 1], &s->groups[i], (s->ngroups - i) * sizeof *s->groups);
    s->groups[i] = g;
    s->ngroups++;
    if (g->gno >= st->next_gno)
        st->next_gno = g->gno + 1;
    return 0;
}

static cgroup *group_new(const void *name, size_t len, uint32_t gno)
{
    cgroup *g = calloc(1, sizeof *g);
    if (!g || !(g->name = dup_bytes(name, len))) {
        free(g);
        return NULL;
    }
    g->len = len;
    g->gno = gno;
    g->entries_read = REC_G_ENTRIES_READ_NONE;
    return g;
}

static int set_dlq(cgroup *g, const void *p, size_t n)
{
    uint8_t *d = dup_bytes(p, n);
    if (!d)
        return -ENOMEM;
    free(g->dlq);
    g->dlq = d;
    g->dlq_len = n;
    return 0;
}

/* Slots 0 .. n-1 exist (unnamed ones are deleted consumers). */
static int cons_reserve(cgroup *g, uint32_t n)
{
    if (n > g->conscap) {
        uint32_t cap = g->conscap ? g->conscap : 8;
        while (cap < n)
            cap *= 2;
        gcons *c = realloc(g->cons, cap * sizeof *c);
        if (!c)
            return -ENOMEM;
        memset(c + g->conscap, 0, (cap - g->conscap) * sizeof *c);
        g->cons = c;
        g->conscap = cap;
    }
    if (n > g->ncons)
        g->ncons = n;
    return 0;
}

/* Put the named slot cno on its chain (G5), doubling the chain heads when they are fewer. */
static int cons_link(cgroup *g, uint32_t cno)
{
    if (g->nnamed + 1 > g->ncbucket) {
        uint32_t n = g->ncbucket ? g->ncbucket * 2 : 8;
        uint32_t *b = malloc(n * sizeof *b);
        if (!b)
            return -ENOMEM;
        memset(b, 0xff, n * sizeof *b); /* PEL_FREE */
        free(g->cbucket);
        g->cbucket = b;
        g->ncbucket = n;
        for (uint32_t i = 0; i < g->ncons; i++) {
            if (!g->cons[i].name || i == cno)
                continue;
            uint32_t h = cons_bucket(g, g->cons[i].name, g->cons[i].len);
            g->cons[i].hnext = b[h];
            b[h] = i;
        }
    }
    uint32_t h = cons_bucket(g, g->cons[cno].name, g->cons[cno].len);
    g->cons[cno].hnext = g->cbucket[h];
    g->cbucket[h] = cno;
    g->nnamed++;
    return 0;
}

/* Take the named slot cno off its chain (G5); the caller frees the name. */
static void cons_unlink(cgroup *g, uint32_t cno)
{
    uint32_t *pp = &g->cbucket[cons_bucket(g, g->cons[cno].name, g->cons[cno].len)];
    while (*pp != cno)
        pp = &g->cons[*pp].hnext;
    *pp = g->cons[cno].hnext;
    g->nnamed--;
}

/* The consumer slot `cno` (growing the table); name given for a new one. */
static int cons_put(cgroup *g, uint32_t cno, const void *name, size_t len, uint64_t seen_ms)
{
    if (cons_reserve(g, cno + 1))
        return -ENOMEM;
    gcons *c = &g->cons[cno];
    if (!c->name) {
        if (!(c->name = dup_bytes(name, len)))
            return -ENOMEM;
        c->len = len;
        if (cons_link(g, cno)) {
            free(c->name);
            c->name = NULL;
            return -ENOMEM;
        }
        c->npending = 0;
        c->active_ms = 0;
        c->seen_ms = seen_ms;
    }
    return 0;
}

/* The consumer's row is rewritten at the next index commit (G4). */
static int cons_touch(cgroup *g, uint32_t cno)
{
    if (g->cons[cno].dirty)
        return 0;
    if (g->ndirty == g->dirtycap) {
        uint32_t n = g->dirtycap ? g->dirtycap * 2 : 8;
        uint32_t *d = realloc(g->dirty, n * sizeof *d);
        if (!d)
            return -ENOMEM;
        g->dirty = d;
        g->dirtycap = n;
    }
    g->dirty[g->ndirty++] = cno;
    g->cons[cno].dirty = true;
    return 0;
}

/* The consumer named so, created if needed; PEL_FREE when out of memory. */
static uint32_t cons_get(cgroup *g, const void *name, size_t len, uint64_t ms)
{
    uint32_t c = group_consumer(g, name, len);
    if (c != PEL_FREE)
        return c;
    return cons_put(g, g->ncons, name, len, ms) ? PEL_FREE : g->ncons - 1;
}

#define PEL_KEY 20 /* gno(4) ms(8) seq(8) */
static void pel_key(uint8_t k[PEL_KEY], uint32_t gno, evs_id id)
{
    idx_be32(k, gno);
    idx_be64(k + 4, id.ms);
    idx_be64(k + 12, id.seq);
}

static int pel_row(evs_store *st, const cgroup *g, const pel_ent *p)
{
    uint8_t k[PEL_KEY], v[20];
    pel_key(k, g->gno, p->id);
    idx_be32(v, p->cons);
    idx_be64(v + 4, p->count);
    idx_be64(v + 12, p->time_ms);
    return idx_batch_put(st->ib, IDX_PEL, k, sizeof k, v, sizeof v);
}

static void pel_compact(cgroup *g)
{
    size_t j = 0;
    for (size_t i = 0; i < g->npel; i++)
        if (g->pel[i].cons != PEL_FREE)
            g->pel[j++] = g->pel[i];
    g->npel = j;
    g->pel_lo = 0;
}

/* Insert or update id's slot (G3); `st` NULL: no index row (loading). */
static int pel_set(evs_store *st, cgroup *g, evs_id id, uint32_t cons, uint64_t count,
                   uint64_t time_ms)
{
    size_t i = pel_lower(g, id);
    pel_ent *p;
    if (i < g->npel && evs_id_cmp(g->pel[i].id, id) == 0) {
        p = &g->pel[i];
        if (p->cons != PEL_FREE)
            g->cons[p->cons].npending--;
        else
            g->nlive++;
    } else if (i > 0 && g->pel[i - 1].cons == PEL_FREE) {
        p = &g->pel[--i]; /* reuse the hole just below: order holds */
        g->nlive++;
    } else {
        if (arr_room(&g->pel, g->npel, &g->pelcap, sizeof *g->pel, 16))
            return -ENOMEM;
        memmove(&g->pel[i + 1], &g->pel[i], (g->npel - i) * sizeof *g->pel);
        g->npel++;
        g->nlive++;
        p = &g->pel[i];
    }
    if (i < g->pel_lo)
        g->pel_lo = i; /* (an insert at pel_lo leaves it right: the new slot is live) */
    p->id = id;
    p->cons = cons;
    p->count = count;
    p->time_ms = time_ms;
    g->cons[cons].npending++;
    return st ? pel_row(st, g, p) : 0;
}

static int pel_remove(evs_store *st, cgroup *g, pel_ent *p)
{
    g->cons[p->cons].npending--;
    p->cons = PEL_FREE;
    g->nlive--;
    uint8_t k[PEL_KEY];
    pel_key(k, g->gno, p->id);
    size_t at = (size_t)(p - g->pel);
    while (g->npel && g->pel[g->npel - 1].cons == PEL_FREE)
        g->npel--; /* the last slot stays live (G3) */
    if (g->pel_lo >= g->npel)
        g->pel_lo = g->npel;
    else if (at == g->pel_lo)
        while (g->pel[g->pel_lo].cons == PEL_FREE)
            g->pel_lo++; /* stops at the last slot at the latest: it is live */
    if (g->npel > 64 && g->npel - g->nlive > g->nlive)
        pel_compact(g);
    return idx_batch_del(st->ib, IDX_PEL, k, sizeof k);
}

static int group_rows_delete(evs_store *st, uint32_t no, const cgroup *g)
{
    uint8_t k[4 + EVS_GROUP_NAME_MAX], p[4];
    idx_be32(k, no);
    memcpy(k + 4, g->name, g->len);
    idx_be32(p, g->gno);
    if (idx_batch_del(st->ib, IDX_GROUPS, k, 4 + g->len) ||
        idx_batch_del_prefix(st->ib, IDX_CONSUMERS, p, 4) ||
        idx_batch_del_prefix(st->ib, IDX_PEL, p, 4))
        return -ENOMEM;
    return 0;
}

/* ---- applying records -------------------------------------------------------------------- */

/* Snapshot records (REC_G_SNAP...): see record.h. */
static int apply_snapshot(evs_store *st, stream *s, cgroup *g, int op, evs_slice gname,
                          evs_slice arg, const uint64_t *v, size_t n, uint64_t pos,
                          evs_error *err)
{
    if (op == REC_G_SNAP) {
        if (n != 7 || gname.len > EVS_GROUP_NAME_MAX || arg.len > EVS_STREAM_NAME_MAX ||
            v[0] > UINT32_MAX - 1 || v[6] > UINT32_MAX - 1)
            return evs_err_set(err, EVS_ECORRUPT, "malformed group snapshot");
        if (g) { /* known: its state is already this one */
            g->decl_pos = pos;
            g->restoring = false;
            group_touch(s, g);
            return 0;
        }
        if (!(g = group_new(gname.ptr, gname.len, (uint32_t)v[0])) || set_dlq(g, arg.ptr, arg.len)) {
            group_free(g);
            return evs_err_set(err, -ENOMEM, "out of memory");
        }
        g->last = (evs_id){v[1], v[2]};
        g->entries_read = v[3];
        g->max_deliveries = v[4];
        g->dead_letters = v[5];
        g->decl_pos = pos;
        g->restoring = true;
        if (group_adopt(st, s, g)) {
            group_free(g);
            return evs_err_set(err, -ENOMEM, "out of memory");
        }
        group_touch(s, g);
        return 0;
    }
    if (!g || !g->restoring)
        return 0; /* the group is known from its own records: nothing to take */
    int rc = 0;
    if (op == REC_G_SNAPCONS) {
        if (n != 3 || v[0] > UINT32_MAX - 2 || arg.len > EVS_GROUP_NAME_MAX)
            return evs_err_set(err, EVS_ECORRUPT, "malformed group snapshot consumer");
        if (cons_put(g, (uint32_t)v[0], arg.ptr, arg.len, v[1]) || cons_touch(g, (uint32_t)v[0]))
            return evs_err_set(err, -ENOMEM, "out of memory");
        g->cons[v[0]].active_ms = v[2];
        return 0;
    }
    if (n % 5)
        return evs_err_set(err, EVS_ECORRUPT, "malformed group snapshot pending list");
    for (size_t i = 0; i < n && !rc; i += 5) {
        if (v[i] >= g->ncons || !g->cons[v[i]].name)
            return evs_err_set(err, EVS_ECORRUPT, "group snapshot names an unknown consumer");
        rc = pel_set(st, g, (evs_id){v[i + 1], v[i + 2]}, (uint32_t)v[i], v[i + 3], v[i + 4]);
    }
    return rc ? evs_err_set(err, rc, "out of memory") : 0;
}

static int apply_locked(evs_store *st, stream *s, const rec_hdr *h, int op, evs_slice gname,
                        evs_slice arg, const uint64_t *v, size_t n, uint64_t pos,
                        evs_error *err)
{
    uint64_t ms = h->time_us / 1000;
    cgroup *g = group_find(s, gname.ptr, gname.len);
    if (op >= REC_G_SNAP && op <= REC_G_SNAPPEL)
        return apply_snapshot(st, s, g, op, gname, arg, v, n, pos, err);
    if (g)
        g->restoring = false;
    if (!g && op != REC_G_CREATE && st->history_cut)
        return 0; /* a group created before the log's first segment: its snapshot follows */
    if (op == REC_G_CREATE) {
        if (g || n != 5 || gname.len > EVS_GROUP_NAME_MAX || arg.len > EVS_STREAM_NAME_MAX ||
            v[0] > UINT32_MAX - 1)
            return evs_err_set(err, EVS_ECORRUPT, "malformed or repeated group creation");
        if (!(g = group_new(gname.ptr, gname.len, (uint32_t)v[0])) || set_dlq(g, arg.ptr, arg.len)) {
            group_free(g);
            return evs_err_set(err, -ENOMEM, "out of memory");
        }
        g->last = (evs_id){v[1], v[2]};
        g->entries_read = v[3];
        g->max_deliveries = v[4];
        g->decl_pos = pos;
        if (group_adopt(st, s, g)) {
            group_free(g);
            return evs_err_set(err, -ENOMEM, "out of memory");
        }
        group_touch(s, g);
        return 0;
    }
    if (!g)
        return evs_err_set(err, EVS_ECORRUPT, "event of unknown group");
    group_touch(s, g);
    uint32_t c = PEL_FREE;
    /* a claim of nothing (its LASTID alone) makes no consumer, as in Redis */
    if (op == REC_G_CONSUMER || op == REC_G_DELIVER || op == REC_G_REDELIVER ||
        (op == REC_G_CLAIM && n > 3)) {
        if (arg.len > EVS_GROUP_NAME_MAX)
            return evs_err_set(err, EVS_ECORRUPT, "group consumer name over %d bytes",
                               EVS_GROUP_NAME_MAX);
        if ((c = cons_get(g, arg.ptr, arg.len, ms)) == PEL_FREE || cons_touch(g, c))
            return evs_err_set(err, -ENOMEM, "out of memory");
        g->cons[c].seen_ms = ms;
    }
    int rc = 0;
    switch (op) {
    case REC_G_DESTROY: {
        uint32_t i = group_lower(s, g->name, g->len);
        memmove(&s->groups[i], &s->groups[i + 1], (s->ngroups - i - 1) * sizeof *s->groups);
        s->ngroups--;
        rc = group_rows_delete(st, s->no, g);
        group_free(g);
        return rc ? evs_err_set(err, rc, "out of memory") : 0;
    }
    case REC_G_SETID:
        if (n != 3)
            break;
        g->last = (evs_id){v[0], v[1]};
        g->entries_read = v[2];
        return 0;
    case REC_G_SETDLQ:
        if (n != 1 || arg.len > EVS_STREAM_NAME_MAX)
            break;
        g->max_deliveries = v[0];
        return set_dlq(g, arg.ptr, arg.len) ? evs_err_set(err, -ENOMEM, "out of memory") : 0;
    case REC_G_CONSUMER:
        return 0;
    case REC_G_DELCONS:
        if ((c = group_consumer(g, arg.ptr, arg.len)) == PEL_FREE)
            return 0;
        for (size_t i = 0; i < g->npel && !rc && g->cons[c].npending; i++)
            if (g->pel[i].cons == c)
                rc = pel_remove(st, g, &g->pel[i]);
        if (g->cons[c].npending) /* a compaction moved the slots: finish from the start */
            for (size_t i = 0; i < g->npel && !rc; i++)
                if (g->pel[i].cons == c)
                    rc = pel_remove(st, g, &g->pel[i]);
        cons_unlink(g, c);
        free(g->cons[c].name);
        g->cons[c].name = NULL;
        uint8_t k[8];
        idx_be32(k, g->gno);
        idx_be32(k + 4, c);
        if (!rc)
            rc = idx_batch_del(st->ib, IDX_CONSUMERS, k, sizeof k);
        return rc ? evs_err_set(err, rc, "out of memory") : 0;
    case REC_G_DELIVER:
        if (n < 4 || (n - 4) % 2)
            break;
        g->last = (evs_id){v[1], v[2]};
        g->entries_read = v[3];
        if (n > 4)
            g->cons[c].active_ms = ms;
        for (size_t i = 4; i < n && !rc && !v[0]; i += 2)
            rc = pel_set(st, g, (evs_id){v[i], v[i + 1]}, c, 1, ms);
        return rc ? evs_err_set(err, rc, "out of memory") : 0;
    case REC_G_REDELIVER:
        if (n % 2)
            break;
        if (n)
            g->cons[c].active_ms = ms;
        for (size_t i = 0; i < n && !rc; i += 2) {
            pel_ent *p = pel_find(g, (evs_id){v[i], v[i + 1]});
            if (p)
                rc = pel_set(st, g, p->id, c, p->count + 1, ms);
        }
        return rc ? evs_err_set(err, rc, "out of memory") : 0;
    case REC_G_ACK:
        if (n % 2)
            break;
        for (size_t i = 0; i < n && !rc; i += 2) {
            pel_ent *p = pel_find(g, (evs_id){v[i], v[i + 1]});
            if (p)
                rc = pel_remove(st, g, p);
        }
        return rc ? evs_err_set(err, rc, "out of memory") : 0;
    case REC_G_CLAIM:
        if (n < 3 || (n - 3) % 4)
            break;
        if (v[0] && evs_id_cmp((evs_id){v[1], v[2]}, g->last) > 0)
            g->last = (evs_id){v[1], v[2]};
        if (n > 3)
            g->cons[c].active_ms = ms;
        for (size_t i = 3; i < n && !rc; i += 4)
            rc = pel_set(st, g, (evs_id){v[i], v[i + 1]}, c, v[i + 2], v[i + 3]);
        return rc ? evs_err_set(err, rc, "out of memory") : 0;
    case REC_G_DEAD: {
        if (n != 3)
            break;
        pel_ent *p = pel_find(g, (evs_id){v[0], v[1]});
        g->dead_letters++;
        if (p && (rc = pel_remove(st, g, p)))
            return evs_err_set(err, rc, "out of memory");
        return 0;
    }
    default:
        return evs_err_set(err, EVS_ECORRUPT, "unknown group operation %d", op);
    }
    return evs_err_set(err, EVS_ECORRUPT, "malformed group operation %d", op);
}

int group_apply(evs_store *st, stream *s, const rec_hdr *h, const uint8_t *body, uint64_t pos,
                evs_error *err)
{
    int op;
    evs_slice gname, arg;
    uint64_t *v;
    size_t n;
    if (rec_group_decode(body, h->body_len, &op, &gname, &arg, &v, &n))
        return evs_err_set(err, EVS_ECORRUPT, "malformed consumer-group record");
    pthread_mutex_lock(&st->gmu);
    int rc = apply_locked(st, s, h, op, gname, arg, v, n, pos, err);
    pthread_mutex_unlock(&st->gmu);
    free(v);
    return rc;
}

int group_drop_all(evs_store *st, stream *s)
{
    int rc = 0;
    pthread_mutex_lock(&st->gmu);
    for (uint32_t i = 0; i < s->ngroups && !rc; i++)
        rc = group_rows_delete(st, s->no, s->groups[i]);
    group_free_all(s);
    pthread_mutex_unlock(&st->gmu);
    return rc;
}

/* ---- the index --------------------------------------------------------------------------- */

#define GROUP_ROW 56 /* fixed part of a groups row */

int group_flush(evs_store *st, stream *s)
{
    uint8_t k[4 + EVS_GROUP_NAME_MAX], v[GROUP_ROW + EVS_STREAM_NAME_MAX];
    int rc = 0;
    pthread_mutex_lock(&st->gmu);
    for (uint32_t gi = 0; gi < s->ngroups && s->gtouched && !rc; gi++) {
        cgroup *g = s->groups[gi];
        if (!g->touched)
            continue;
        g->touched = false;
        idx_be32(k, s->no);
        memcpy(k + 4, g->name, g->len);
        idx_be32(v, g->gno);
        idx_be64(v + 4, g->last.ms);
        idx_be64(v + 12, g->last.seq);
        idx_be64(v + 20, g->entries_read);
        idx_be64(v + 28, g->max_deliveries);
        idx_be64(v + 36, g->dead_letters);
        idx_be32(v + 44, g->ncons);
        idx_be64(v + 48, g->decl_pos);
        memcpy(v + GROUP_ROW, g->dlq, g->dlq_len);
        rc = idx_batch_put(st->ib, IDX_GROUPS, k, 4 + g->len, v, GROUP_ROW + g->dlq_len);
        for (uint32_t i = 0; i < g->ndirty && !rc; i++) {
            uint32_t c = g->dirty[i];
            g->cons[c].dirty = false;
            if (!g->cons[c].name)
                continue; /* deleted since: its row went with it */
            uint8_t ck[8], cv[16 + EVS_GROUP_NAME_MAX];
            idx_be32(ck, g->gno);
            idx_be32(ck + 4, c);
            idx_be64(cv, g->cons[c].seen_ms);
            idx_be64(cv + 8, g->cons[c].active_ms);
            memcpy(cv + 16, g->cons[c].name, g->cons[c].len);
            rc = idx_batch_put(st->ib, IDX_CONSUMERS, ck, 8, cv, 16 + g->cons[c].len);
        }
        g->ndirty = 0;
    }
    s->gtouched = false;
    pthread_mutex_unlock(&st->gmu);
    return rc;
}

typedef struct gref {
    uint32_t gno;
    cgroup *g;
} gref;

static int gref_cmp(const void *a, const void *b)
{
    const gref *x = a, *y = b;
    return x->gno < y->gno ? -1 : x->gno > y->gno;
}

static cgroup *gref_find(const gref *refs, size_t n, uint32_t gno)
{
    gref key = {gno, NULL};
    const gref *r = n ? bsearch(&key, refs, n, sizeof *refs, gref_cmp) : NULL;
    return r ? r->g : NULL;
}

/* Walk one table: fn(k, kl, v, vl) for every row. */
static int walk(idx_rtxn *r, enum idx_table t,
                int (*fn)(void *arg, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl),
                void *arg)
{
    idx_cur *c;
    int rc = idx_cur_open(r, t, &c);
    if (rc)
        return rc;
    const void *k, *v;
    size_t kl, vl;
    for (rc = idx_cur_get(c, IDX_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == 0;
         rc = idx_cur_get(c, IDX_NEXT, NULL, 0, &k, &kl, &v, &vl))
        if ((rc = fn(arg, k, kl, v, vl)))
            break;
    idx_cur_close(c);
    return rc == EVS_ENOTFOUND ? 0 : rc;
}

struct load {
    evs_store *st;
    gref *refs;
    size_t n, cap;
};

static int load_group(void *arg, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    struct load *l = arg;
    if (kl < 4 || kl > 4 + EVS_GROUP_NAME_MAX || vl < GROUP_ROW)
        return EVS_ECORRUPT;
    uint32_t no = idx_rd32(k);
    stream *s = numtab_get(&l->st->byno, no);
    if (!s)
        return EVS_ECORRUPT;
    cgroup *g = group_new(k + 4, kl - 4, idx_rd32(v));
    if (!g || set_dlq(g, v + GROUP_ROW, vl - GROUP_ROW)) {
        group_free(g);
        return -ENOMEM;
    }
    g->last = (evs_id){idx_rd64(v + 4), idx_rd64(v + 12)};
    g->entries_read = idx_rd64(v + 20);
    g->max_deliveries = idx_rd64(v + 28);
    g->dead_letters = idx_rd64(v + 36);
    g->decl_pos = idx_rd64(v + 48);
    uint32_t ncons = idx_rd32(v + 44);
    if (cons_reserve(g, ncons) || group_adopt(l->st, s, g)) { /* slots load_consumer fills */
        group_free(g);
        return -ENOMEM;
    }
    if (arr_room(&l->refs, l->n, &l->cap, sizeof *l->refs, 16))
        return -ENOMEM;
    l->refs[l->n++] = (gref){g->gno, g};
    return 0;
}

static int load_consumer(void *arg, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    struct load *l = arg;
    if (kl != 8 || vl < 16 || vl > 16 + EVS_GROUP_NAME_MAX)
        return EVS_ECORRUPT;
    cgroup *g = gref_find(l->refs, l->n, idx_rd32(k));
    if (!g)
        return EVS_ECORRUPT;
    uint32_t c = idx_rd32(k + 4);
    if (c >= UINT32_MAX - 1 || cons_put(g, c, v + 16, vl - 16, idx_rd64(v)))
        return -ENOMEM;
    g->cons[c].active_ms = idx_rd64(v + 8);
    return 0;
}

static int load_pel(void *arg, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    struct load *l = arg;
    if (kl != PEL_KEY || vl != 20)
        return EVS_ECORRUPT;
    cgroup *g = gref_find(l->refs, l->n, idx_rd32(k));
    uint32_t c = idx_rd32(v);
    if (!g || c >= g->ncons || !g->cons[c].name)
        return EVS_ECORRUPT;
    /* rows come in ID order: each lands at the end */
    return pel_set(NULL, g, (evs_id){idx_rd64(k + 4), idx_rd64(k + 12)}, c, idx_rd64(v + 4),
                   idx_rd64(v + 12));
}

int group_load(evs_store *st, evs_error *err)
{
    idx_rtxn *r;
    int rc = idx_rbegin(st->idx, &r);
    if (rc)
        return evs_err_set(err, rc, "index read failed: %s", evs_strerror(rc));
    struct load l = {st, NULL, 0, 0};
    rc = walk(r, IDX_GROUPS, load_group, &l);
    if (!rc) {
        if (l.n)
            qsort(l.refs, l.n, sizeof *l.refs, gref_cmp);
        rc = walk(r, IDX_CONSUMERS, load_consumer, &l);
    }
    if (!rc)
        rc = walk(r, IDX_PEL, load_pel, &l);
    idx_rend(r);
    free(l.refs);
    if (rc)
        return evs_err_set(err, rc, "index consumer-group tables unreadable: %s",
                           evs_strerror(rc));
    return 0;
}
