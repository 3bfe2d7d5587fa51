/*
 * wake.h — which streams the batches since the last wake made visible, as a filter of name
 * hashes, so that a wake retries only the waiters (XREAD BLOCK, XREADGROUP BLOCK, live tails,
 * HTTP group reads) whose streams may have changed instead of every waiter on every batch.
 *
 * Invariants:
 *  K1. A stream named to the visible hook since the last wake_take has its bit set; names ==
 *      NULL (the store could not say which) sets every bit. So a waiter whose streams' bits are
 *      all clear has nothing new to see: skipping it loses no wake-up. A false positive (two
 *      names on one bit) costs a retry that finds nothing, as every retry did before.
 *  K2. Bits are set on the writer's thread and taken (read and cleared word by word, atomically)
 *      on the loop's, after the event the hook activates: a batch visible after a take sets
 *      bits that the next wake takes.
 */
#ifndef EVS_WAKE_H
#define EVS_WAKE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "evstore.h"

#define WAKE_WORDS 64 /* 4,096 bits */

typedef struct wake_set {
    uint64_t w[WAKE_WORDS];
} wake_set;

typedef struct wake_acc {
    _Atomic uint64_t w[WAKE_WORDS];
} wake_acc;

/* A stream name's hash, computed once when a waiter parks. */
uint32_t wake_hash(const void *name, size_t len);

/* Writer thread (the visible hook): mark the names (NULL: all streams). */
void wake_acc_add(wake_acc *a, const evs_slice *names, size_t n);
/* Loop thread: the marks so far, cleared (K2). */
void wake_acc_take(wake_acc *a, wake_set *out);

/* May a stream of this hash have changed? A NULL set: a wake of everyone (a client left, a
 * shutdown). */
static inline bool wake_may(const wake_set *s, uint32_t h)
{
    return !s || (s->w[(h >> 6) % WAKE_WORDS] >> (h & 63)) & 1;
}

/* May any of n streams have changed? */
static inline bool wake_any(const wake_set *s, const uint32_t *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (wake_may(s, h[i]))
            return true;
    return !s;
}

#endif
