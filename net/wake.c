/*
 * wake.c — the filter of streams made visible (wake.h, K1-K2).
 */
#include "wake.h"

#include <zlib.h>

uint32_t wake_hash(const void *name, size_t len)
{
    return (uint32_t)crc32(0, name, (uInt)len);
}

void wake_acc_add(wake_acc *a, const evs_slice *names, size_t n)
{
    if (!names) {
        for (size_t i = 0; i < WAKE_WORDS; i++)
            atomic_store(&a->w[i], ~0ull);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t h = wake_hash(names[i].ptr, names[i].len);
        atomic_fetch_or(&a->w[(h >> 6) % WAKE_WORDS], 1ull << (h & 63));
    }
}

void wake_acc_take(wake_acc *a, wake_set *out)
{
    for (size_t i = 0; i < WAKE_WORDS; i++)
        out->w[i] = atomic_exchange(&a->w[i], 0);
}
