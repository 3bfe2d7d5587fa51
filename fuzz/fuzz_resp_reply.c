/*
 * fuzz_resp_reply.c — the RESP reply parser the CLI uses, over hostile server bytes: parse
 * replies one after another until partial or error, walking each tree; and the whole input
 * as one reply line (resp_reply_line, the backup client's bulk headers); and the input as a
 * replication LOG frame (resp_log_head, the follower's fast path), checked against the
 * general parser; and a reply parsed from a prefix window (the follower's small messages)
 * against the same reply parsed from the whole input. And the reply writer's numbers (an
 * integer, a bulk header, an ID) from the input's first 16 bytes, against snprintf's.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evstore.h"
#include "resp.h"

static size_t walk(const resp_value *v, const uint8_t *lo, const uint8_t *hi)
{
    size_t n = 1;
    if (v->str && (v->str < lo || v->str + v->len > hi))
        abort(); /* a string outside the input */
    size_t k = v->type == RESP_T_MAP ? v->n * 2 : v->n;
    for (size_t i = 0; v->elems && i < k; i++)
        n += walk(&v->elems[i], lo, hi);
    return n;
}

static void writer_check(const uint8_t *data, size_t size)
{
    int64_t v;
    uint64_t u;
    if (size < 16)
        return;
    memcpy(&v, data, 8);
    memcpy(&u, data + 8, 8);
    char want[128], id[EVS_ID_STRLEN];
    resp_out o;
    resp_out_init(&o, 2);
    resp_out_int(&o, v);
    resp_out_bulk(&o, "", 0);
    resp_out_array(&o, (size_t)u);
    int n = snprintf(want, sizeof want, ":%lld\r\n$0\r\n\r\n*%zu\r\n", (long long)v, (size_t)u);
    if (o.oom || o.len != (size_t)n || memcmp(o.data, want, (size_t)n))
        abort();
    resp_out_release(&o);
    n = snprintf(want, sizeof want, "%llu-%llu", (unsigned long long)u, (unsigned long long)v);
    if (evs_id_format((evs_id){u, (uint64_t)v}, id) != (size_t)n || strcmp(id, want))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    writer_check(data, size);
    uint64_t n;
    if (resp_reply_line(data, size, &n) == RESP_T_BULK && size < 64) {
        char text[64]; /* a bulk header's length is what strtoull makes of its digits */
        memcpy(text, data + 1, size - 1);
        text[size - 1] = 0;
        errno = 0;
        if (strtoull(text, NULL, 10) != n || errno)
            abort();
    }
    uint64_t at, bn;
    size_t hlen;
    if (resp_log_head(data, size, &at, &bn, &hlen) == 1) {
        /* the follower's fast path agrees with the general parser on a whole frame */
        if (hlen > size)
            abort();
        if (bn <= size - hlen && size - hlen - bn >= 2 && data[hlen + bn] == '\r' &&
            data[hlen + bn + 1] == '\n') {
            resp_value *v;
            size_t used;
            char m[128];
            if (resp_reply_parse(data, size, &v, &used, m, sizeof m) != RESP_CMD)
                abort();
            if (used != hlen + bn + 2 || v->type != RESP_T_ARRAY || v->n != 3 ||
                v->elems[1].type != RESP_T_INT || (uint64_t)v->elems[1].integer != at ||
                v->elems[2].type != RESP_T_BULK || v->elems[2].len != bn ||
                v->elems[2].str != data + hlen)
                abort();
            resp_value_free(v);
        }
    }
    {
        /* the follower parses a small message from a window of the input first (SHOWN, PING
         * ahead of queued frames): a reply complete within a prefix is the same reply, of
         * the same length, in the whole input */
        size_t win = size < 256 ? size / 2 : 256;
        resp_value *a, *b;
        size_t ua, ub;
        char m[128];
        int ra = resp_reply_parse(data, win, &a, &ua, m, sizeof m);
        if (ra == RESP_CMD) {
            if (resp_reply_parse(data, size, &b, &ub, m, sizeof m) != RESP_CMD || ua != ub ||
                a->type != b->type || a->n != b->n || a->len != b->len)
                abort();
            resp_value_free(b);
            resp_value_free(a);
        } else if (ra == RESP_ERROR && resp_reply_parse(data, size, &b, &ub, m, sizeof m) ==
                                           RESP_CMD) {
            abort(); /* bytes that are wrong in a prefix are wrong in the whole */
        }
    }
    size_t off = 0;
    char msg[128];
    while (off < size) {
        resp_value *v;
        size_t used;
        if (resp_reply_parse(data + off, size - off, &v, &used, msg, sizeof msg) != RESP_CMD)
            break;
        walk(v, data, data + size);
        resp_value_free(v);
        if (used == 0)
            break;
        off += used;
    }
    return 0;
}
