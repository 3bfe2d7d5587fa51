/* numtab.c — values by stream number, sparse (numtab.h N1-N3). */
#include "numtab.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int numtab_set(numtab *t, uint32_t no, void *v)
{
    size_t l = no >> NUMTAB_SHIFT;
    if (l >= t->nleaf) {
        size_t n = t->nleaf ? t->nleaf : 16;
        while (n <= l)
            n *= 2;
        numleaf **a = realloc(t->leaf, n * sizeof *a);
        if (!a)
            return -ENOMEM;
        memset(a + t->nleaf, 0, (n - t->nleaf) * sizeof *a);
        t->leaf = a;
        t->nleaf = n;
    }
    if (!t->leaf[l] && !(t->leaf[l] = calloc(1, sizeof *t->leaf[l])))
        return -ENOMEM;
    void **slot = &t->leaf[l]->v[no & (NUMTAB_LEAF - 1)];
    if (!*slot)
        t->leaf[l]->used++;
    *slot = v;
    return 0;
}

void numtab_clear(numtab *t, uint32_t no)
{
    size_t l = no >> NUMTAB_SHIFT;
    if (l >= t->nleaf || !t->leaf[l])
        return;
    void **slot = &t->leaf[l]->v[no & (NUMTAB_LEAF - 1)];
    if (!*slot)
        return;
    *slot = NULL;
    if (--t->leaf[l]->used == 0) {
        free(t->leaf[l]);
        t->leaf[l] = NULL;
    }
}

uint64_t numtab_next(const numtab *t, uint64_t from)
{
    for (size_t l = (size_t)(from >> NUMTAB_SHIFT); l < t->nleaf; l++) {
        const numleaf *f = t->leaf[l];
        if (!f)
            continue;
        uint64_t base = (uint64_t)l << NUMTAB_SHIFT;
        for (uint64_t i = from > base ? from - base : 0; i < NUMTAB_LEAF; i++)
            if (f->v[i])
                return base + i;
    }
    return NUMTAB_END;
}

void numtab_free(numtab *t)
{
    for (size_t l = 0; l < t->nleaf; l++)
        free(t->leaf[l]);
    free(t->leaf);
    t->leaf = NULL;
    t->nleaf = 0;
}
