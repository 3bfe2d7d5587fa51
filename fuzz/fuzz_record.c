/*
 * fuzz_record.c — the record codec over hostile bytes: scan a buffer as a segment would be
 * scanned (check, then decode the body by kind, else re-synchronise 8 bytes on). An entry's
 * pairs read in place (rec_entry_decode and rec_entry_pairs, both the walk of rule 4) must be
 * exactly the fields msgpack-c decodes from the same bytes; the in-place walk also runs on the
 * raw bytes, where it must only stay in bounds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "record.h"

struct pairs {
    const evs_field *want;
    long n, seen;
};

static bool same_pair(void *arg, evs_slice name, evs_slice value)
{
    struct pairs *p = arg;
    if (p->seen >= p->n)
        abort();
    const evs_field *f = &p->want[p->seen++];
    if (f->name.ptr != name.ptr || f->name.len != name.len || f->value.ptr != value.ptr ||
        f->value.len != value.len)
        abort();
    return true;
}

static bool any_pair(void *arg, evs_slice name, evs_slice value)
{
    (void)arg;
    volatile uint8_t sink = 0;
    if (name.len)
        sink ^= ((const uint8_t *)name.ptr)[name.len - 1];
    if (value.len)
        sink ^= ((const uint8_t *)value.ptr)[value.len - 1];
    (void)sink;
    return true;
}

static bool obj_is(const msgpack_object *o, evs_slice s)
{
    if (o->type == MSGPACK_OBJECT_BIN)
        return o->via.bin.ptr == s.ptr && o->via.bin.size == s.len;
    if (o->type == MSGPACK_OBJECT_STR)
        return o->via.str.ptr == s.ptr && o->via.str.size == s.len;
    return false;
}

/* An entry that passed rec_check: the fields decoded in place (n of them) are msgpack-c's
 * array of name/value objects, in order, and rec_entry_pairs hands out the same pairs. */
static void entry_pairs_agree(const uint8_t *body, uint32_t len, const evs_field *f, long n,
                              msgpack_zone *zone)
{
    msgpack_zone_clear(zone);
    msgpack_object obj;
    size_t used = 0;
    if (n < 0 || msgpack_unpack((const char *)body, len, &used, zone, &obj) !=
                     MSGPACK_UNPACK_SUCCESS ||
        used != len || obj.type != MSGPACK_OBJECT_ARRAY || obj.via.array.size != 2 * (uint64_t)n)
        abort();
    for (long i = 0; i < n; i++)
        if (!obj_is(&obj.via.array.ptr[2 * i], f[i].name) ||
            !obj_is(&obj.via.array.ptr[2 * i + 1], f[i].value))
            abort();
    struct pairs p = {f, n, 0};
    if (rec_entry_pairs(body, len, same_pair, &p) != 0 || p.seen != n)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, 1024))
        return 0;
    evs_field fields[16];
    size_t off = 0;
    while (off < size) {
        rec_hdr h;
        uint64_t sz;
        int c = rec_check(data + off, size - off, &h, &sz);
        if (c != REC_OK) {
            off += REC_ALIGN;
            continue;
        }
        const uint8_t *body = data + off + REC_HDR_SIZE;
        size_t need = 0;
        int op;
        evs_slice name;
        uint64_t extra[REC_STREAM_MAX_EXTRA];
        size_t n;
        switch (h.kind) {
        case REC_ENTRY: {
            long k = rec_entry_decode(body, h.body_len, fields, 16, &need);
            if (k == -2) {
                evs_field *big = malloc(need * sizeof *big);
                if (big) {
                    k = rec_entry_decode(body, h.body_len, big, need, &need);
                    entry_pairs_agree(body, h.body_len, big, k, &zone);
                    free(big);
                }
            } else {
                entry_pairs_agree(body, h.body_len, fields, k, &zone);
            }
            break;
        }
        case REC_STREAM: rec_stream_decode(body, h.body_len, &op, &name, extra, &n); break;
        case REC_GROUP: {
            evs_slice arg;
            uint64_t *nums = NULL;
            if (rec_group_decode(body, h.body_len, &op, &name, &arg, &nums, &n) == 0)
                free(nums);
            break;
        }
        case REC_EPOCH: {
            evs_epoch e;
            rec_epoch_decode(body, h.body_len, &e);
            break;
        }
        default: rec_uints_decode(body, h.body_len, extra, 8, &n); break;
        }
        off += sz;
    }
    /* the bounded walker and the in-place pairs alone, on the raw bytes */
    rec_mp_check(data, size, 8);
    rec_entry_pairs(data, (uint32_t)(size < UINT32_MAX ? size : UINT32_MAX), any_pair, NULL);
    msgpack_zone_destroy(&zone);
    return 0;
}
