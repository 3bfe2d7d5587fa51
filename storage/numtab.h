/*
 * numtab.h — values by stream number, sparse: what a stream number finds in memory (the
 * store's and the visible table's streams, verify's per-stream tracks).
 *
 * N1. A number splits into a leaf (no >> NUMTAB_SHIFT) and a slot in it. A leaf exists only
 *     while one of its slots holds a value: the numbers of freed streams (streams.c S3) cost
 *     nothing once their whole leaf is empty. The leaf array costs 8 bytes per 4,096 numbers
 *     up to the highest leaf in use (8 MiB for a number near 2^32: what a record naming any
 *     number can make a reader allocate).
 * N2. numtab_next walks in number order and skips absent leaves whole.
 * N3. No lock of its own: each table is guarded by its owner (the visible table by st->lock,
 *     the store's by the writer role, verify's by its one thread).
 */
#ifndef EVSTORE_NUMTAB_H
#define EVSTORE_NUMTAB_H

#include <stddef.h>
#include <stdint.h>

#define NUMTAB_SHIFT 12
#define NUMTAB_LEAF (1u << NUMTAB_SHIFT)
#define NUMTAB_END UINT64_MAX

typedef struct numleaf {
    uint32_t used; /* slots holding a value */
    void *v[NUMTAB_LEAF];
} numleaf;

typedef struct numtab {
    numleaf **leaf; /* NULL where no slot of the leaf holds a value */
    size_t nleaf;
} numtab;

static inline void *numtab_get(const numtab *t, uint32_t no)
{
    size_t l = no >> NUMTAB_SHIFT;
    return l < t->nleaf && t->leaf[l] ? t->leaf[l]->v[no & (NUMTAB_LEAF - 1)] : NULL;
}

/* Sets no's value (v not NULL). 0, or -ENOMEM with the table as it was. */
int numtab_set(numtab *t, uint32_t no, void *v);
/* Clears no's value, if any; frees its leaf once empty. */
void numtab_clear(numtab *t, uint32_t no);
/* The first number at or after `from` that holds a value, or NUMTAB_END. */
uint64_t numtab_next(const numtab *t, uint64_t from);
/* Every number holding a value, in order (the loop's body may clear the current one). */
#define NUMTAB_EACH(t, no)                                                                     \
    for (uint64_t no = numtab_next((t), 0); no != NUMTAB_END; no = numtab_next((t), no + 1))
/* Frees the leaves (not the values). The table is empty after. */
void numtab_free(numtab *t);

#endif
