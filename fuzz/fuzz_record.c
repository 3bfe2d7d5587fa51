/*
 * fuzz_record.c — the record codec over hostile bytes: scan a buffer as a segment would be
 * scanned (check, then decode the body by kind, else re-synchronise 8 bytes on).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "record.h"

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
        case REC_ENTRY:
            if (rec_entry_decode(body, h.body_len, &zone, fields, 16, &need) == -2) {
                evs_field *big = malloc(need * sizeof *big);
                if (big) {
                    rec_entry_decode(body, h.body_len, &zone, big, need, &need);
                    free(big);
                }
            }
            break;
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
    /* the bounded walker alone, on the raw bytes */
    rec_mp_check(data, size, 8);
    msgpack_zone_destroy(&zone);
    return 0;
}
