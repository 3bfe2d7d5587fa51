/*
 * freelist.h — spare objects of one kind, kept by the event loop for its next request instead
 * of freed: a pipelined burst allocates hundreds of replies, holds and results, then frees
 * them all at once, which overflows glibc's per-thread cache (7 chunks a size) and sends each
 * free and the next burst's allocations to its bins (unlink_chunk, malloc_consolidate: about
 * a tenth of the loop's samples at c50/P16, docs/benchmarks.md "Server").
 *
 * Invariants:
 *  L1. One thread only (the loop's): no lock.
 *  L2. At most `max` objects are kept; an object put beyond that is the caller's to free
 *      (freelist_put returns false). freelist_drain frees what is kept.
 *  L3. An object taken is as the caller left it when it was put, but for its first
 *      pointer's worth of bytes (the link): the caller sets every field it reads.
 *  L4. Under AddressSanitizer nothing is kept, so that a use after "free" is still reported
 *      there; the plain build's tests run the kept path.
 */
#ifndef EVSTORE_FREELIST_H
#define EVSTORE_FREELIST_H

#include <stdbool.h>
#include <stdlib.h>

typedef struct freelist {
    void *head;
    size_t n, max;
} freelist;

#define FREELIST_INIT(max) ((freelist){NULL, 0, (max)})

static inline void *freelist_take(freelist *f)
{
    void *p = f->head;
    if (p) {
        f->head = *(void **)p;
        f->n--;
    }
    return p;
}

static inline bool freelist_put(freelist *f, void *p)
{
#ifdef __SANITIZE_ADDRESS__
    (void)f;
    (void)p;
    return false; /* L4 */
#else
    if (f->n >= f->max)
        return false;
    *(void **)p = f->head;
    f->head = p;
    f->n++;
    return true;
#endif
}

static inline void freelist_drain(freelist *f)
{
    void *p;
    while ((p = freelist_take(f)))
        free(p);
}

#endif
