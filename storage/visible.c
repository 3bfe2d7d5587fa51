/*
 * visible.c — what readers see: publishing a write batch, and the visibility cap.
 *
 * Once a batch is written and synced as the fsync mode requires, the writer publishes the
 * new states of the streams it touched: under st->lock it copies each one's writer state (w)
 * to its visible state (v), and readers (iterators, evs_wait, stream lists, the visible hook's
 * listeners) see the batch. A leader whose publishers wait for followers (`--ack all`) sets a
 * cap with evs_set_visible_cap: a batch that ends past the cap is not published at once but
 * held, the states it would publish copied, until the cap reaches its end — so a consumer on
 * the leader never reads an event that a failover to those followers could lose. A follower
 * sets the cap to how far its leader's readers see (SHOWN), so its consumers never read an
 * event the leader holds back or could still lose.
 *
 * Invariants:
 *  V1. Batches become visible in log order: a batch is held while any batch before it is.
 *  V2. A held batch keeps the writer's states as they were at its end: publishing it later
 *      shows exactly that batch boundary, never part of a later batch.
 *  V3. The cap changes only when batches become visible, never what is written, synced,
 *      acknowledged to the store's callers or sent to followers (evs_log_span reads how far
 *      segments are written, which the writer moves before its sync, writer.c W8).
 *  V4. Raising the cap to or past a held batch's end (EVS_CAP_NONE lifts it) publishes the
 *      batch on the caller's thread before evs_set_visible_cap returns, then calls the hook.
 *  V5. Memory stays bounded however long the cap stands still (followers gone, while
 *      consumers ack and retention trims): past HELD_MAX held batches, a new one merges into
 *      the last (its states replace that stream's there; the last batch now ends where the
 *      new one does). Merging only makes a batch show later, never earlier (V1, V2 hold).
 *  V6. A follower's batch handed to the syncer (writer.c W10) is held the same way behind the
 *      sync cap (vscap, set by the writer to the synced end while a sync is in flight): a
 *      batch shows once both caps reach its end.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define HELD_MAX 1024

struct held {
    struct held *next;
    uint64_t start, end;           /* the batch's log positions                             */
    uint64_t gen;                  /* its number, once batches merge into it (V5)           */
    size_t n, cap;
    struct held_state {
        stream *s;                 /* a reference held (streams.c S2)                       */
        stream_state v;
        bool live;
    } *st;
};

static void publish_state(evs_store *st, stream *s, const stream_state *v, bool live)
{
    s->v = *v;
    if (live && !s->v_live) {
        if (strtab_put(&st->vtab, s, true) == 0)
            s->v_live = true;
    } else if (!live && s->v_live) {
        strtab_del(&st->vtab, s, true);
        s->v_live = false;
    }
}

void store_publish_touched(evs_store *st)
{
    for (size_t i = 0; i < st->nbtouched; i++) {
        stream *s = st->btouched[i];
        publish_state(st, s, &s->w, s->w_live);
        s->w_changes_out = s->w.changes;
        s->btouched = false;
    }
    st->nbtouched = 0;
}

/* How far batches may show: both caps (V6). */
static uint64_t cap_of(evs_store *st)
{
    uint64_t v = atomic_load(&st->vcap), s = atomic_load(&st->vscap);
    return v < s ? v : s;
}

int store_visible_prepare(evs_store *st, uint64_t start, uint64_t end, struct held **out)
{
    *out = NULL;
    if (end <= cap_of(st) && !atomic_load(&st->nheld))
        return 0;
    struct held *h = calloc(1, sizeof *h);
    if (h)
        h->st = malloc((st->nbtouched ? st->nbtouched : 1) * sizeof *h->st);
    if (!h || !h->st) {
        free(h);
        return -ENOMEM;
    }
    h->start = start;
    h->end = end;
    h->n = h->cap = st->nbtouched;
    for (size_t i = 0; i < st->nbtouched; i++) {
        stream *s = st->btouched[i];
        store_stream_hold(s);
        h->st[i] = (struct held_state){s, s->w, s->w_live};
    }
    *out = h;
    return 0;
}

/* V5: h's states into the last held batch t, which then ends where h does. False when out of
 * memory (h stays a batch of its own). */
static bool merge(evs_store *st, struct held *t, struct held *h)
{
    if (!t->gen) { /* its first merge: mark the streams it holds */
        t->gen = ++st->held_gens;
        for (size_t i = 0; i < t->n; i++) {
            t->st[i].s->held_gen = t->gen;
            t->st[i].s->held_slot = i;
        }
    }
    size_t add = 0;
    for (size_t i = 0; i < h->n; i++)
        add += h->st[i].s->held_gen != t->gen;
    if (t->n + add > t->cap) {
        size_t cap = t->cap * 2 > t->n + add ? t->cap * 2 : t->n + add;
        struct held_state *v = realloc(t->st, cap * sizeof *v);
        if (!v)
            return false;
        t->st = v;
        t->cap = cap;
    }
    for (size_t i = 0; i < h->n; i++) {
        stream *s = h->st[i].s;
        if (s->held_gen != t->gen) {
            s->held_gen = t->gen;
            s->held_slot = t->n++;
            store_stream_hold(s); /* t's own; h's goes with h */
        }
        t->st[s->held_slot] = h->st[i];
    }
    t->end = h->end;
    return true;
}

bool store_visible_publish(evs_store *st, uint64_t end, struct held *h)
{
    bool now = !st->held_head && end <= cap_of(st);
    if (now || !h) { /* !h: the cap was set lower after store_visible_prepare looked (V3) */
        store_publish_touched(st);
        store_visible_free(h);
        return true;
    }
    for (size_t i = 0; i < st->nbtouched; i++) {
        st->btouched[i]->w_changes_out = st->btouched[i]->w.changes;
        st->btouched[i]->btouched = false;
    }
    st->nbtouched = 0;
    if (atomic_load(&st->nheld) >= HELD_MAX && merge(st, st->held_tail, h)) {
        store_visible_free(h);
        return false;
    }
    if (st->held_tail)
        st->held_tail->next = h;
    else
        st->held_head = h;
    st->held_tail = h;
    atomic_fetch_add(&st->nheld, 1);
    return false;
}

void store_notify(evs_store *st, const evs_slice *names, size_t n)
{
    pthread_mutex_lock(&st->vmu);
    st->vgen++;
    pthread_cond_broadcast(&st->vcv);
    evs_visible_fn hook = st->hook;
    void *arg = st->hook_arg;
    pthread_mutex_unlock(&st->vmu);
    if (hook)
        hook(arg, names, n);
}

/* Set one of the caps (V4, V6): publish the held batches both caps now let show. */
static void set_cap(evs_store *st, _Atomic uint64_t *which, uint64_t value)
{
    pthread_rwlock_wrlock(&st->lock);
    atomic_store(which, value);
    uint64_t cap = cap_of(st);
    struct held *done = NULL, **dt = &done;
    size_t nn = 0;
    while (st->held_head && st->held_head->end <= cap) {
        struct held *h = st->held_head;
        st->held_head = h->next;
        for (size_t i = 0; i < h->n; i++)
            publish_state(st, h->st[i].s, &h->st[i].v, h->st[i].live);
        nn += h->n;
        h->next = NULL;
        *dt = h;
        dt = &h->next;
        atomic_fetch_sub(&st->nheld, 1);
    }
    if (!st->held_head)
        st->held_tail = NULL;
    pthread_rwlock_unlock(&st->lock);
    if (!done)
        return;
    evs_slice *names = malloc((nn ? nn : 1) * sizeof *names);
    size_t k = 0;
    for (struct held *h = done; h && names; h = h->next)
        for (size_t i = 0; i < h->n; i++)
            names[k++] = (evs_slice){h->st[i].s->name, h->st[i].s->name_len};
    store_notify(st, names, names ? k : 0); /* waiters wake whatever the hook is told */
    free(names);
    store_visible_free(done);
}

void evs_set_visible_cap(evs_store *st, uint64_t cap) { set_cap(st, &st->vcap, cap); }

void store_visible_sync_cap(evs_store *st, uint64_t cap)
{
    if (cap != atomic_load(&st->vscap)) /* only the writer sets it: no race with this test */
        set_cap(st, &st->vscap, cap);
}

stream *store_visible_held_stream(evs_store *st, const void *name, size_t len)
{
    stream *found = NULL;
    bool live = false;
    for (struct held *h = st->held_head; h; h = h->next) /* oldest first: the last state wins */
        for (size_t i = 0; i < h->n; i++) {
            stream *s = h->st[i].s;
            if (s->name_len == len && !memcmp(s->name, name, len)) {
                found = s;
                live = h->st[i].live;
            }
        }
    return live ? found : NULL;
}

const stream_state *store_visible_written(const evs_store *st, const stream *s)
{
    const stream_state *v = &s->v;
    for (struct held *h = st->held_head; h; h = h->next) /* oldest first: the last state wins */
        for (size_t i = 0; i < h->n; i++)
            if (h->st[i].s == s)
                v = &h->st[i].v;
    return v;
}

uint64_t store_visible_end(evs_store *st, uint64_t log_end)
{
    return st->held_head ? st->held_head->start : log_end; /* caller holds st->lock */
}

void store_visible_free(struct held *h)
{
    while (h) {
        struct held *next = h->next;
        for (size_t i = 0; i < h->n; i++)
            store_stream_put(h->st[i].s);
        free(h->st);
        free(h);
        h = next;
    }
}
