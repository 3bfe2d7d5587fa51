/*
 * streams.c — the in-memory stream tables (name -> stream, chained hash) and the persisted
 * form of a stream's state (the value of the index's `streams` table).
 *
 * Two tables share the stream objects: the writer's (what the next record will see) and the
 * visible one (what readers see, under st->lock).
 *
 * A stream object's life (a store with a stream per session creates and drops them without
 * end: kept until close, each dropped one cost ~0.6 KiB for the life of the process):
 *  S1. A reader finds a stream only in the visible table (or among the batches a visibility
 *      cap holds, visible.c), under st->lock; the writer role finds it in its own table or
 *      st->byno.
 *  S2. A holder that keeps the pointer past that st->lock section takes a reference in it
 *      (store_stream_hold) and puts it back when done: held batches (visible.c), the
 *      stream lists and verify's copy of the table, a trim's plan, retention's index
 *      clean-up, a lookup whose caller reads on (reader.c). Group readers (group_read.c
 *      lock_stream) instead take st->gmu before they let st->lock go and use the stream only
 *      under it. Iterators keep the stream's number, not the object.
 *  S3. A drop puts the stream on st->grave. The writer role, between requests (no request
 *      keeps a stream across turns), frees one there once it is in neither table (w_live,
 *      v_live), in no list of the writer's (btouched: the batch to publish; touched: the
 *      next index commit, which deletes its keys), and unreferenced — judged under st->lock's
 *      write side, so no reader is between finding it and taking a reference, and after
 *      taking and letting go st->gmu there, so no group reader still uses it. Once out of the
 *      visible table nobody can take a new reference, so none comes after. Its number
 *      leaves st->byno (numtab.h: a leaf goes once all its numbers have).
 *  S4. Numbers are never reused: a create names st->next_no, past every number made, and a
 *      create record naming a lower one is corrupt (store.c apply_stream). So a number gone
 *      from st->byno never comes back, and a log's creates name increasing numbers (a
 *      rebuild relies on it: store.c prescan_declares).
 */
#include "crc.h"
#include "internal.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static size_t bucket(const strtab *t, const void *name, size_t len)
{
    return evs_crc32(0, name, len) & (t->nb - 1);
}

int strtab_init(strtab *t, size_t nb)
{
    t->nb = nb;
    t->n = 0;
    t->b = calloc(nb, sizeof *t->b);
    t->byno = (numtab){NULL, 0};
    return t->b ? 0 : -ENOMEM;
}

void strtab_release(strtab *t)
{
    free(t->b);
    numtab_free(&t->byno);
    t->b = NULL;
    t->nb = t->n = 0;
}

#define NEXT(s, vis) (*((vis) ? &(s)->v_next : &(s)->w_next))

stream *strtab_get(const strtab *t, const void *name, size_t len, bool vis)
{
    for (stream *s = t->b[bucket(t, name, len)]; s; s = NEXT(s, vis))
        if (evs_slice_eq((evs_slice){s->name, s->name_len}, (evs_slice){name, len}))
            return s; /* (the empty name may come as {NULL, 0}) */
    return NULL;
}

static int grow(strtab *t, bool vis)
{
    strtab n;
    if (strtab_init(&n, t->nb * 2))
        return -ENOMEM;
    for (size_t i = 0; i < t->nb; i++) {
        stream *s = t->b[i];
        while (s) {
            stream *next = NEXT(s, vis);
            size_t b = bucket(&n, s->name, s->name_len);
            NEXT(s, vis) = n.b[b];
            n.b[b] = s;
            s = next;
        }
    }
    free(t->b);
    t->b = n.b;
    t->nb = n.nb;
    return 0;
}

int strtab_put(strtab *t, stream *s, bool vis)
{
    if ((t->n + 1 > t->nb && grow(t, vis)) || (vis && numtab_set(&t->byno, s->no, s)))
        return -ENOMEM;
    size_t b = bucket(t, s->name, s->name_len);
    NEXT(s, vis) = t->b[b];
    t->b[b] = s;
    t->n++;
    return 0;
}

void strtab_del(strtab *t, stream *s, bool vis)
{
    stream **pp = &t->b[bucket(t, s->name, s->name_len)];
    while (*pp && *pp != s)
        pp = &NEXT(*pp, vis);
    if (*pp) {
        *pp = NEXT(s, vis);
        t->n--;
        if (vis)
            numtab_clear(&t->byno, s->no);
    }
}

/* Persisted layout, little-endian: version(4) no(4) flags(4) pad(4), then 13 u64:
 * last ms/seq, first ms/seq, maxdel ms/seq, entries_added, length, ndels, first_pos,
 * last_pos, last_time_us, created_us; then sparse_bytes(4) sparse_count(4) [128 bytes:
 * version 1 ends here]; version 2 adds 5 u64: bytes, decl_pos, retention max age (ms), max
 * bytes, max entries, then moved_pos + 1 (0: never relocated; written as zeros before
 * relocation existed, so the same version reads both), then zeros to 192 bytes. */
#define STATE_V1_BYTES 128
#define STATE_VERSION 2u

void stream_state_encode(const stream_state *s, uint8_t out[STREAM_STATE_BYTES])
{
    memset(out, 0, STREAM_STATE_BYTES);
    uint32_t h[4] = {htole32(STATE_VERSION), htole32(s->no), htole32(s->flags), 0};
    memcpy(out, h, 16);
    uint64_t v[13] = {s->last_id.ms, s->last_id.seq, s->first_id.ms, s->first_id.seq,
                      s->max_deleted.ms, s->max_deleted.seq, s->entries_added, s->length,
                      s->ndels, s->first_pos, s->last_pos, s->last_time_us, s->created_us};
    for (int i = 0; i < 13; i++)
        v[i] = htole64(v[i]);
    memcpy(out + 16, v, sizeof v);
    uint32_t t[2] = {htole32((uint32_t)s->sparse_bytes), htole32((uint32_t)s->sparse_count)};
    memcpy(out + 16 + sizeof v, t, 8);
    uint64_t w[5] = {s->bytes, s->decl_pos, s->ret.max_age_ms, s->ret.max_bytes,
                     s->ret.max_entries};
    for (int i = 0; i < 5; i++)
        w[i] = htole64(w[i]);
    memcpy(out + STATE_V1_BYTES, w, sizeof w);
    /* then the latest relocation's first copy + 1 (0: never relocated, as in older values) */
    uint64_t m = htole64(s->moved_pos == REC_POS_NONE ? 0 : s->moved_pos + 1);
    memcpy(out + STATE_V1_BYTES + sizeof w, &m, 8);
}

int stream_state_decode(const void *in, size_t len, stream_state *s)
{
    const uint8_t *p = in;
    uint32_t h[4];
    if (len < 16)
        return EVS_ECORRUPT;
    memcpy(h, p, 16);
    uint32_t version = le32toh(h[0]);
    if (!((version == 1 && len == STATE_V1_BYTES) ||
          (version == STATE_VERSION && len == STREAM_STATE_BYTES)))
        return EVS_ECORRUPT;
    memset(s, 0, sizeof *s);
    s->no = le32toh(h[1]);
    s->flags = le32toh(h[2]);
    uint64_t v[13];
    memcpy(v, p + 16, sizeof v);
    for (int i = 0; i < 13; i++)
        v[i] = le64toh(v[i]);
    s->last_id = (evs_id){v[0], v[1]};
    s->first_id = (evs_id){v[2], v[3]};
    s->max_deleted = (evs_id){v[4], v[5]};
    s->entries_added = v[6];
    s->length = v[7];
    s->ndels = v[8];
    s->first_pos = v[9];
    s->last_pos = v[10];
    s->last_time_us = v[11];
    s->created_us = v[12];
    uint32_t t[2];
    memcpy(t, p + 16 + sizeof v, 8);
    s->sparse_bytes = le32toh(t[0]);
    s->sparse_count = le32toh(t[1]);
    s->moved_pos = REC_POS_NONE;
    if (version == 1)
        return 0; /* bytes unknown (0), declared at the log's start (0), default retention */
    uint64_t w[5];
    memcpy(w, p + STATE_V1_BYTES, sizeof w);
    s->bytes = le64toh(w[0]);
    s->decl_pos = le64toh(w[1]);
    s->ret.max_age_ms = le64toh(w[2]);
    s->ret.max_bytes = le64toh(w[3]);
    s->ret.max_entries = le64toh(w[4]);
    uint64_t m;
    memcpy(&m, p + STATE_V1_BYTES + sizeof w, 8);
    m = le64toh(m);
    s->moved_pos = m ? m - 1 : REC_POS_NONE;
    return 0;
}

/* S3 */
static bool reclaimable(const stream *s)
{
    return !s->w_live && !s->touched && !s->btouched && !atomic_load(&s->refs);
}

void store_streams_reclaim(evs_store *st)
{
    bool any = false;
    for (stream *s = st->grave; s && !any; s = s->grave_next)
        any = reclaimable(s);
    if (!any)
        return;
    stream *dead = NULL, **pp = &st->grave;
    pthread_rwlock_wrlock(&st->lock);
    while (*pp) {
        stream *s = *pp;
        if (reclaimable(s) && !s->v_live) {
            *pp = s->grave_next;
            s->grave_next = dead;
            dead = s;
        } else {
            pp = &s->grave_next;
        }
    }
    if (dead) { /* a group reader that found one before this lock is done with it */
        pthread_mutex_lock(&st->gmu);
        pthread_mutex_unlock(&st->gmu);
    }
    pthread_rwlock_unlock(&st->lock);
    while (dead) {
        stream *s = dead;
        dead = s->grave_next;
        numtab_clear(&st->byno, s->no);
        if (st->tcache) { /* the trim cache knows streams by address (reader.c T1) */
            trim_cache *c = &st->tcache[s->no % TRIM_CACHE_SLOTS];
            if (c->s == s)
                c->s = NULL;
        }
        store_stream_free(s);
        atomic_fetch_sub(&st->ngrave, 1);
    }
}
