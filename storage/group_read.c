/*
 * group_read.c — reading consumer-group state (XINFO GROUPS/CONSUMERS, XPENDING, the HTTP
 * group listing). Walks hold st->gmu (group.h G2) and call back under it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "group.h"

/* The visible stream named so, or one whose creation a visibility cap holds (its groups are
 * there already; vs then shows no entries), with st->gmu held on success (st->lock
 * released). */
static int lock_stream(evs_store *st, evs_slice name, stream **out, stream_state *vs)
{
    pthread_rwlock_rdlock(&st->lock);
    stream *s = strtab_get(&st->vtab, name.ptr, name.len, true);
    if (!s)
        s = store_visible_held_stream(st, name.ptr, name.len);
    if (!s) {
        pthread_rwlock_unlock(&st->lock);
        return EVS_ENOTFOUND;
    }
    if (vs)
        *vs = s->v;
    pthread_mutex_lock(&st->gmu);
    pthread_rwlock_unlock(&st->lock);
    *out = s;
    return 0;
}

/* The group of the visible stream, with st->gmu held on success. */
static int lock_group(evs_store *st, evs_slice name, evs_slice group, cgroup **out,
                      stream_state *vs)
{
    stream *s;
    int rc = lock_stream(st, name, &s, vs);
    if (rc)
        return rc;
    if (!(*out = group_find(s, group.ptr, group.len))) {
        pthread_mutex_unlock(&st->gmu);
        return EVS_ENOGROUP;
    }
    return 0;
}

/* The stream's first live entry, read before st->gmu is taken (a read under it would take
 * st->lock after gmu, the other order than lock_stream's) */
static evs_id first_live(evs_store *st, evs_slice name)
{
    evs_stream_info si;
    return evs_stream_info_get(st, name, &si) == 0 ? si.first_id : EVS_ID_MIN;
}

/* `first`: the stream's first live entry (first_live), for Redis's lag arithmetic */
static void info_of(const cgroup *g, const stream_state *vs, evs_id first_id, unsigned flags,
                    evs_group_info *i)
{
    memset(i, 0, sizeof *i);
    i->name = (evs_slice){g->name, g->len};
    i->consumers = g->nnamed;
    i->pending = g->nlive;
    i->last_delivered = g->last;
    i->entries_read = g->entries_read;
    /* Redis's streamReplyWithCGLag */
    if (!vs->entries_added) {
        i->lag_known = true;
    } else if (g->entries_read != REC_G_ENTRIES_READ_NONE &&
               !group_range_has_tombstones(vs, first_id, g->last)) {
        i->lag_known = true;
        i->lag = (int64_t)(vs->entries_added - g->entries_read);
    } else {
        uint64_t er = group_estimate_read(vs, first_id, g->last);
        if (er != REC_G_ENTRIES_READ_NONE) {
            i->lag_known = true;
            i->lag = (int64_t)(vs->entries_added - er);
        }
    }
    i->max_deliveries = g->max_deliveries;
    i->dlq = (evs_slice){g->dlq, g->dlq_len};
    i->dead_letters = g->dead_letters;
    if (g->nlive) { /* G3: the first live slot is pel_lo, the last one is live */
        i->pending_first = g->pel[g->pel_lo].id;
        i->pending_last = g->pel[g->npel - 1].id;
    }
    for (size_t k = g->pel_lo; k < g->npel && (flags & EVS_GROUP_OLDEST); k++) {
        const pel_ent *p = &g->pel[k];
        if (p->cons != PEL_FREE && (!i->oldest_pending_ms || p->time_ms < i->oldest_pending_ms))
            i->oldest_pending_ms = p->time_ms;
    }
}

int evs_group_list(evs_store *st, evs_slice stream_name, unsigned flags,
                   int (*fn)(void *arg, const evs_group_info *g), void *arg)
{
    stream *s;
    stream_state vs;
    evs_id first = first_live(st, stream_name);
    int rc = lock_stream(st, stream_name, &s, &vs);
    if (rc)
        return rc;
    for (uint32_t gi = 0; gi < s->ngroups && !rc; gi++) {
        const cgroup *g = s->groups[gi];
        evs_group_info info;
        info_of(g, &vs, first, flags, &info);
        rc = fn(arg, &info);
    }
    pthread_mutex_unlock(&st->gmu);
    return rc;
}

int evs_group_get(evs_store *st, evs_slice stream_name, evs_slice group, unsigned flags,
                  int (*fn)(void *arg, const evs_group_info *g), void *arg)
{
    cgroup *g;
    stream_state vs;
    evs_id first = first_live(st, stream_name);
    int rc = lock_group(st, stream_name, group, &g, &vs);
    if (rc)
        return rc;
    evs_group_info info;
    info_of(g, &vs, first, flags, &info);
    rc = fn(arg, &info);
    pthread_mutex_unlock(&st->gmu);
    return rc;
}

int evs_consumer_list(evs_store *st, evs_slice stream_name, evs_slice group,
                      int (*fn)(void *arg, const evs_consumer_info *c), void *arg)
{
    cgroup *g;
    int rc = lock_group(st, stream_name, group, &g, NULL);
    if (rc)
        return rc;
    /* by name, as Redis lists them (a radix tree) */
    uint32_t *order = malloc((g->ncons ? g->ncons : 1) * sizeof *order);
    uint32_t n = 0;
    if (!order) {
        pthread_mutex_unlock(&st->gmu);
        return -ENOMEM;
    }
    for (uint32_t c = 0; c < g->ncons; c++) {
        if (!g->cons[c].name)
            continue;
        uint32_t j = n++;
        while (j > 0) {
            const gcons *a = &g->cons[order[j - 1]], *b = &g->cons[c];
            int cmp = memcmp(a->name, b->name, a->len < b->len ? a->len : b->len);
            if (cmp < 0 || (cmp == 0 && a->len <= b->len))
                break;
            order[j] = order[j - 1];
            j--;
        }
        order[j] = c;
    }
    for (uint32_t k = 0; k < n && !rc; k++) {
        const gcons *c = &g->cons[order[k]];
        evs_consumer_info ci = {{c->name, c->len}, c->npending, c->seen_ms, c->active_ms};
        rc = fn(arg, &ci);
    }
    free(order);
    pthread_mutex_unlock(&st->gmu);
    return rc;
}

int evs_pending_list(evs_store *st, evs_slice stream_name, evs_slice group, evs_id start,
                     evs_id end, uint64_t count, uint64_t min_idle_ms, evs_slice consumer,
                     int (*fn)(void *arg, const evs_pending_info *p), void *arg)
{
    cgroup *g;
    int rc = lock_group(st, stream_name, group, &g, NULL);
    if (rc)
        return rc;
    uint32_t only = PEL_FREE;
    if (consumer.ptr && (only = group_consumer(g, consumer.ptr, consumer.len)) == PEL_FREE) {
        pthread_mutex_unlock(&st->gmu);
        return 0; /* an unknown consumer has nothing pending */
    }
    /* the walk ends at the last live slot that can match: the consumer's last pending entry
     * when one is named (npending of them, G3), as a history read's does */
    uint64_t now = evs_now_us() / 1000, n = 0;
    uint64_t left = only != PEL_FREE ? g->cons[only].npending : g->nlive;
    for (size_t i = pel_lower(g, start); i < g->npel && !rc && left; i++) {
        const pel_ent *p = &g->pel[i];
        if (evs_id_cmp(p->id, end) > 0 || (count && n >= count))
            break;
        if (p->cons == PEL_FREE || (only != PEL_FREE && p->cons != only))
            continue;
        left--;
        if (min_idle_ms && (now > p->time_ms ? now - p->time_ms : 0) < min_idle_ms)
            continue;
        const gcons *c = &g->cons[p->cons];
        evs_pending_info pi = {p->id, {c->name, c->len}, p->time_ms, p->count};
        rc = fn(arg, &pi);
        n++;
    }
    pthread_mutex_unlock(&st->gmu);
    return rc;
}
