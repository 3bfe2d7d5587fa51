/*
 * record.c — encode and validate records. Pure functions over buffers.
 *
 * Layout (all integers little-endian; a record starts at a log position that is a multiple of 8):
 *
 *   off size field
 *     0    4 magic     45 56 52 31 ("EVR1")
 *     4    4 crc       zlib crc32 of bytes [8, size): everything after this field, length,
 *                      header, body and padding included
 *     8    4 body_len  msgpack body length, unpadded (<= REC_MAX_BODY)
 *    12    1 kind      enum rec_kind
 *    13    1 version   1
 *    14    2 flags     REC_F_TXN_CONT: more records of the same atomic group follow;
 *                      REC_F_MOVED: an entry copied forward by retention; REC_F_SYNCED:
 *                      the segment before it was durable when it was written (record.h)
 *    16    4 stream    stream number, 0 for none
 *    20    4 epoch
 *    24    8 id_ms     entry ID (entries, tombstones, trims), else 0
 *    32    8 id_seq
 *    40    8 time_us   append time, microseconds since the Unix epoch, non-decreasing in the log
 *                      except in moved copies, which keep their original's
 *    48    8 prev      log position of the same stream's previous REC_ENTRY, or all ones
 *    56    n body      msgpack, then zero bytes up to the next multiple of 8
 *
 * A record is valid when, in order: (1) the magic matches; (2) version == 1, kind is known,
 * body_len <= REC_MAX_BODY, and the padded size fits in the bytes available; (3) the CRC
 * matches; (4) the body is one msgpack object spanning exactly body_len bytes whose declared
 * lengths and counts all fit (rec_mp_check; for an entry, whose shape is fixed, the same rule
 * by entry_body_check), of the shape its kind requires. Anything else is not a record. An
 * all-zero header is reported apart (REC_ZERO): it is preallocated space.
 */
#include "record.h"

#include "crc.h"

#include <endian.h>
#include <stdlib.h>
#include <string.h>

static inline void put32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static inline void put16(uint8_t *p, uint16_t v) { v = htole16(v); memcpy(p, &v, 2); }
static inline void put64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }
static inline uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static inline uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return le16toh(v); }
static inline uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }
/* msgpack lengths and counts are big-endian */
static inline uint64_t be16at(const uint8_t *p) { return (uint64_t)p[0] << 8 | p[1]; }
static inline uint64_t be32at(const uint8_t *p)
{
    return (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
}

const char *rec_check_str(int c)
{
    switch (c) {
    case REC_OK: return "ok";
    case REC_SHORT: return "record extends past the end of the file";
    case REC_BADMAGIC: return "bad magic";
    case REC_BADHDR: return "bad header (version, kind or length out of range)";
    case REC_BADCRC: return "CRC mismatch";
    case REC_BADBODY: return "malformed msgpack body";
    case REC_ZERO: return "zero bytes (no record)";
    }
    return "?";
}

void rec_hdr_encode(const rec_hdr *h, uint8_t out[REC_HDR_SIZE])
{
    put32(out + 0, h->magic);
    put32(out + 4, h->crc);
    put32(out + 8, h->body_len);
    out[12] = h->kind;
    out[13] = h->version;
    put16(out + 14, h->flags);
    put32(out + 16, h->stream);
    put32(out + 20, h->epoch);
    put64(out + 24, h->id_ms);
    put64(out + 32, h->id_seq);
    put64(out + 40, h->time_us);
    put64(out + 48, h->prev);
}

void rec_hdr_set_crc(uint8_t hdr[REC_HDR_SIZE], uint32_t crc) { put32(hdr + 4, crc); }

void rec_hdr_decode(const uint8_t in[REC_HDR_SIZE], rec_hdr *h)
{
    h->magic = get32(in + 0);
    h->crc = get32(in + 4);
    h->body_len = get32(in + 8);
    h->kind = in[12];
    h->version = in[13];
    h->flags = get16(in + 14);
    h->stream = get32(in + 16);
    h->epoch = get32(in + 20);
    h->id_ms = get64(in + 24);
    h->id_seq = get64(in + 32);
    h->time_us = get64(in + 40);
    h->prev = get64(in + 48);
}

static const uint8_t zeros[REC_ALIGN];

uint32_t rec_crc(const uint8_t hdr[REC_HDR_SIZE], const void *body, uint32_t body_len)
{
    uint32_t c = evs_crc32(0, hdr + 8, REC_HDR_SIZE - 8);
    c = evs_crc32(c, body, body_len);
    return evs_crc32(c, zeros, rec_size_for(body_len) - REC_HDR_SIZE - body_len);
}

static bool kind_known(uint8_t k) { return k >= REC_ENTRY && k <= REC_EPOCH; }

int rec_check_hdr(const uint8_t *buf, uint64_t avail, rec_hdr *h, uint64_t *size)
{
    if (avail < REC_HDR_SIZE)
        return REC_SHORT;
    if (get32(buf) != REC_MAGIC) {
        for (int i = 0; i < REC_HDR_SIZE; i++)
            if (buf[i])
                return REC_BADMAGIC;
        return REC_ZERO;
    }
    rec_hdr_decode(buf, h);
    if (h->version != REC_VERSION || !kind_known(h->kind) || h->body_len > REC_MAX_BODY)
        return REC_BADHDR;
    uint64_t sz = rec_size_for(h->body_len);
    if (sz > avail)
        return REC_SHORT;
    *size = sz;
    return REC_OK;
}

/* Body shape per kind, checked after the CRC (so only crafted records fail here). */
static bool body_shape_ok(const rec_hdr *h, const uint8_t *body)
{
    if (h->body_len == 0)
        return h->kind == REC_TOMBSTONE;
    uint8_t t = body[0];
    bool is_array = (t >= 0x90 && t <= 0x9f) || t == 0xdc || t == 0xdd;
    switch (h->kind) {
    case REC_TOMBSTONE: return t == 0xc0 || is_array; /* nil (before session 28), [bytes] */
    default: return is_array;
    }
}

/*
 * Rule 4 for an entry, whose shape is fixed: an array of 2k (k >= 1) bin or str objects (names
 * and values), each length fitting in the bytes that remain. One flat loop, since every reader
 * runs it on every entry it reads (the general walker took 330 instructions an entry of two
 * fields, a sixth of a forward read's). Returns the bytes spanned, or -1. With `visit`, each
 * name/value pair is handed to it as soon as both are checked, in order; visit returning
 * false ends the walk (the return is then 0).
 */
/* always inlined: the check, every reader's, gets its own copy with visit NULL */
static inline __attribute__((always_inline)) long entry_body_walk(const uint8_t *p, size_t len,
                                                                  rec_pair_fn visit, void *arg)
{
    uint64_t n;
    size_t off;
    if (len >= 1 && p[0] >= 0x90 && p[0] <= 0x9f)
        n = p[0] & 0x0f, off = 1;
    else if (len >= 3 && p[0] == 0xdc)
        n = be16at(p + 1), off = 3;
    else if (len >= 5 && p[0] == 0xdd)
        n = be32at(p + 1), off = 5;
    else
        return -1;
    if (n == 0 || n % 2 || n > len - off)
        return -1;
    evs_slice name = {0};
    for (uint64_t i = 0; i < n; i++) {
        if (off >= len)
            return -1;
        const uint8_t *q = p + off;
        size_t rem = len - off, hl;
        uint64_t sl;
        uint8_t t = q[0];
        if (t >= 0xa0 && t <= 0xbf) {
            sl = t & 0x1f, hl = 1;
        } else if ((t == 0xc4 || t == 0xd9) && rem >= 2) {
            sl = q[1], hl = 2;
        } else if ((t == 0xc5 || t == 0xda) && rem >= 3) {
            sl = be16at(q + 1), hl = 3;
        } else if ((t == 0xc6 || t == 0xdb) && rem >= 5) {
            sl = be32at(q + 1), hl = 5;
        } else {
            return -1;
        }
        if (sl > rem - hl)
            return -1;
        if (visit) {
            evs_slice item = {q + hl, (size_t)sl};
            if (i % 2 == 0)
                name = item;
            else if (!visit(arg, name, item))
                return 0;
        }
        off += hl + (size_t)sl;
    }
    return (long)off;
}

static long entry_body_check(const uint8_t *p, size_t len)
{
    return entry_body_walk(p, len, NULL, NULL);
}

int rec_entry_pairs(const uint8_t *body, uint32_t len, rec_pair_fn fn, void *arg)
{
    long n = entry_body_walk(body, len, fn, arg);
    return n == 0 || n == (long)len ? 0 : -1;
}

int rec_check(const uint8_t *buf, uint64_t avail, rec_hdr *h, uint64_t *size)
{
    int rc = rec_check_hdr(buf, avail, h, size);
    if (rc != REC_OK)
        return rc;
    /* one pass over the record as it lies (padding included): a CRC call has a fixed cost */
    if (evs_crc32(0, buf + 8, *size - 8) != h->crc)
        return REC_BADCRC;
    const uint8_t *body = buf + REC_HDR_SIZE;
    if (h->body_len) {
        long n = h->kind == REC_ENTRY ? entry_body_check(body, h->body_len)
                                      : rec_mp_check(body, h->body_len, 8);
        if (n != (long)h->body_len)
            return REC_BADBODY;
    }
    if (!body_shape_ok(h, body))
        return REC_BADBODY;
    uint64_t pad = *size - REC_HDR_SIZE - h->body_len; /* 0-7 bytes, ending the last word */
    if (pad && get64(buf + *size - 8) >> (8 * (8 - pad)))
        return REC_BADBODY;
    return REC_OK;
}

/*
 * The bounded walker. Every object takes at least one byte, so a container declaring more
 * elements than bytes remain is rejected before anything allocates for it.
 */
static long mp_walk(const uint8_t *p, size_t len, int depth)
{
    if (len < 1 || depth < 0)
        return -1;
    uint8_t t = p[0];
    uint64_t n = 0;   /* payload bytes (str/bin/ext) or element count (array/map) */
    size_t hl = 1;    /* header length */
    int kind = 0;     /* 0 scalar payload, 1 array, 2 map */
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
        return 1;
    if (t >= 0x80 && t <= 0x8f) { n = t & 0x0f; kind = 2; }
    else if (t >= 0x90 && t <= 0x9f) { n = t & 0x0f; kind = 1; }
    else if (t >= 0xa0 && t <= 0xbf) { n = t & 0x1f; }
    else {
        switch (t) {
        case 0xcc: case 0xd0: return len >= 2 ? 2 : -1;
        case 0xcd: case 0xd1: return len >= 3 ? 3 : -1;
        case 0xce: case 0xd2: case 0xca: return len >= 5 ? 5 : -1;
        case 0xcf: case 0xd3: case 0xcb: return len >= 9 ? 9 : -1;
        case 0xd4: return len >= 3 ? 3 : -1;   /* fixext 1 */
        case 0xd5: return len >= 4 ? 4 : -1;
        case 0xd6: return len >= 6 ? 6 : -1;
        case 0xd7: return len >= 10 ? 10 : -1;
        case 0xd8: return len >= 18 ? 18 : -1;
        case 0xc4: case 0xd9: hl = 2; if (len < hl) return -1; n = p[1]; break;
        case 0xc5: case 0xda: hl = 3; if (len < hl) return -1; n = be16at(p + 1); break;
        case 0xc6: case 0xdb: hl = 5; if (len < hl) return -1; n = be32at(p + 1); break;
        case 0xc7: hl = 3; if (len < hl) return -1; n = p[1]; break; /* ext: hl counts the type byte */
        case 0xc8: hl = 4; if (len < hl) return -1; n = be16at(p + 1); break;
        case 0xc9: hl = 6; if (len < hl) return -1; n = be32at(p + 1); break;
        case 0xdc: kind = 1; hl = 3; if (len < hl) return -1; n = be16at(p + 1); break;
        case 0xdd: kind = 1; hl = 5; if (len < hl) return -1; n = be32at(p + 1); break;
        case 0xde: kind = 2; hl = 3; if (len < hl) return -1; n = be16at(p + 1); break;
        case 0xdf: kind = 2; hl = 5; if (len < hl) return -1; n = be32at(p + 1); break;
        default: return -1; /* 0xc1 never used */
        }
    }
    if (kind == 0) {
        if (n > len - hl)
            return -1;
        return (long)(hl + n);
    }
    uint64_t elems = kind == 2 ? n * 2 : n;
    if (elems > len - hl)
        return -1;
    size_t off = hl;
    for (uint64_t i = 0; i < elems; i++) {
        long c = mp_walk(p + off, len - off, depth - 1);
        if (c < 0)
            return -1;
        off += (size_t)c;
    }
    return (long)off;
}

long rec_mp_check(const uint8_t *buf, size_t len, int max_depth)
{
    if (len > (size_t)REC_MAX_BODY)
        return -1;
    return mp_walk(buf, len, max_depth);
}

/* ---- buffers and bodies ------------------------------------------------------------------ */

int rec_buf_reserve(rec_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d)
        return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

int rec_buf_write(void *buf, const char *p, size_t n)
{
    rec_buf *b = buf;
    if (n == 0)
        return 0;
    if (rec_buf_reserve(b, n))
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void rec_buf_release(rec_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

size_t rec_entry_bound(const evs_field *fields, size_t n)
{
    size_t need = 5; /* array32 header */
    for (size_t i = 0; i < n; i++)
        need += 10 + fields[i].name.len + fields[i].value.len; /* two bin32 headers */
    return need;
}

/* The packer's writer for an entry body, whose room rec_entry_encode reserved first: a copy
 * and no growth (msgpack-c calls it for every header and every name and value). */
static int rec_buf_put(void *buf, const char *p, size_t n)
{
    rec_buf *b = buf;
    if (b->cap - b->len < n)
        return -1; /* not reached: the bound covers every byte */
    uint8_t *d = b->data + b->len;
    b->len += n;
    if (n <= 8) {
        switch (n) {
        case 8: d[7] = (uint8_t)p[7]; /* fall through */
        case 7: d[6] = (uint8_t)p[6]; /* fall through */
        case 6: d[5] = (uint8_t)p[5]; /* fall through */
        case 5: d[4] = (uint8_t)p[4]; /* fall through */
        case 4: d[3] = (uint8_t)p[3]; /* fall through */
        case 3: d[2] = (uint8_t)p[2]; /* fall through */
        case 2: d[1] = (uint8_t)p[1]; /* fall through */
        case 1: d[0] = (uint8_t)p[0]; /* fall through */
        default: break;
        }
    } else {
        memcpy(d, p, n);
    }
    return 0;
}

int rec_entry_encode(rec_buf *b, const evs_field *fields, size_t n)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, rec_buf_put);
    if (rec_buf_reserve(b, rec_entry_bound(fields, n)))
        return -1;
    if (msgpack_pack_array(&pk, n * 2))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (msgpack_pack_bin(&pk, fields[i].name.len) ||
            msgpack_pack_bin_body(&pk, fields[i].name.ptr, fields[i].name.len) ||
            msgpack_pack_bin(&pk, fields[i].value.len) ||
            msgpack_pack_bin_body(&pk, fields[i].value.ptr, fields[i].value.len))
            return -1;
    }
    return 0;
}

static bool obj_bytes(const msgpack_object *o, evs_slice *s)
{
    if (o->type == MSGPACK_OBJECT_BIN) {
        s->ptr = o->via.bin.ptr;
        s->len = o->via.bin.size;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_STR) {
        s->ptr = o->via.str.ptr;
        s->len = o->via.str.size;
        return true;
    }
    return false;
}

/* Precondition for every decoder: the record passed rec_check(), whose bounded walk (rule 4)
 * is what makes msgpack-c safe on these bytes. */
static int unpack_array(const uint8_t *body, uint32_t len, msgpack_zone *zone,
                        msgpack_object *obj)
{
    msgpack_zone_clear(zone);
    size_t off = 0;
    if (msgpack_unpack((const char *)body, len, &off, zone, obj) != MSGPACK_UNPACK_SUCCESS)
        return -1;
    if (off != len || obj->type != MSGPACK_OBJECT_ARRAY)
        return -1;
    return 0;
}

/* rec_entry_decode's visitor: store the pairs while they fit, count them all. */
struct decoded {
    evs_field *fields;
    size_t cap, n;
};

static bool decode_pair(void *arg, evs_slice name, evs_slice value)
{
    struct decoded *d = arg;
    if (d->n < d->cap)
        d->fields[d->n] = (evs_field){name, value};
    d->n++;
    return true;
}

long rec_entry_decode(const uint8_t *body, uint32_t len, evs_field *fields, size_t cap,
                      size_t *need)
{
    struct decoded d = {fields, cap, 0};
    if (entry_body_walk(body, len, decode_pair, &d) != (long)len)
        return -1;
    if (d.n > cap) {
        *need = d.n;
        return -2;
    }
    return (long)d.n;
}

int rec_stream_encode(rec_buf *b, int op, evs_slice name, const uint64_t *extra, size_t nextra)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, rec_buf_write);
    if (msgpack_pack_array(&pk, 2 + nextra) || msgpack_pack_uint32(&pk, (uint32_t)op) ||
        msgpack_pack_bin(&pk, name.len) || msgpack_pack_bin_body(&pk, name.ptr, name.len))
        return -1;
    for (size_t i = 0; i < nextra; i++)
        if (msgpack_pack_uint64(&pk, extra[i]))
            return -1;
    return 0;
}

int rec_stream_decode(const uint8_t *body, uint32_t len, int *op, evs_slice *name,
                      uint64_t *extra, size_t *nextra)
{
    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, 256))
        return -1;
    msgpack_object obj;
    int rc = -1;
    if (unpack_array(body, len, &zone, &obj))
        goto out;
    uint32_t n = obj.via.array.size;
    if (n < 2 || n > 2 + REC_STREAM_MAX_EXTRA || obj.via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        !obj_bytes(&obj.via.array.ptr[1], name))
        goto out;
    *op = (int)obj.via.array.ptr[0].via.u64;
    *nextra = n - 2;
    for (uint32_t i = 2; i < n; i++) {
        if (obj.via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            goto out;
        extra[i - 2] = obj.via.array.ptr[i].via.u64;
    }
    rc = 0;
out:
    msgpack_zone_destroy(&zone);
    return rc;
}

int rec_idem_encode(rec_buf *b, evs_slice name, evs_slice key, const uint64_t v[5])
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, rec_buf_write);
    if (msgpack_pack_array(&pk, 8) || msgpack_pack_uint32(&pk, REC_STREAM_IDEM) ||
        msgpack_pack_bin(&pk, name.len) || msgpack_pack_bin_body(&pk, name.ptr, name.len) ||
        msgpack_pack_bin(&pk, key.len) || msgpack_pack_bin_body(&pk, key.ptr, key.len))
        return -1;
    for (int i = 0; i < 5; i++)
        if (msgpack_pack_uint64(&pk, v[i]))
            return -1;
    return 0;
}

int rec_idem_decode(const uint8_t *body, uint32_t len, evs_slice *name, evs_slice *key,
                    uint64_t v[5])
{
    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, 256))
        return -1;
    msgpack_object obj;
    int rc = -1;
    if (unpack_array(body, len, &zone, &obj) || obj.via.array.size != 8)
        goto out;
    const msgpack_object *a = obj.via.array.ptr;
    if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 != REC_STREAM_IDEM ||
        !obj_bytes(&a[1], name) || !obj_bytes(&a[2], key))
        goto out;
    for (int i = 0; i < 5; i++) {
        if (a[3 + i].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            goto out;
        v[i] = a[3 + i].via.u64;
    }
    rc = 0;
out:
    msgpack_zone_destroy(&zone);
    return rc;
}

int rec_group_encode(rec_buf *b, int op, evs_slice group, evs_slice arg, const uint64_t *nums,
                     size_t n)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, rec_buf_write);
    if (rec_buf_reserve(b, 32 + group.len + arg.len + 9 * n) || msgpack_pack_array(&pk, 4) ||
        msgpack_pack_uint32(&pk, (uint32_t)op) || msgpack_pack_bin(&pk, group.len) ||
        msgpack_pack_bin_body(&pk, group.ptr, group.len) || msgpack_pack_bin(&pk, arg.len) ||
        msgpack_pack_bin_body(&pk, arg.ptr, arg.len) || msgpack_pack_array(&pk, n))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (msgpack_pack_uint64(&pk, nums[i]))
            return -1;
    return 0;
}

int rec_group_decode(const uint8_t *body, uint32_t len, int *op, evs_slice *group,
                     evs_slice *arg, uint64_t **nums, size_t *n)
{
    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, 1024))
        return -1;
    msgpack_object obj;
    int rc = -1;
    *nums = NULL;
    if (unpack_array(body, len, &zone, &obj) || obj.via.array.size != 4)
        goto out;
    const msgpack_object *a = obj.via.array.ptr;
    if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 > 255 ||
        !obj_bytes(&a[1], group) || !obj_bytes(&a[2], arg) || a[3].type != MSGPACK_OBJECT_ARRAY)
        goto out;
    *op = (int)a[0].via.u64;
    *n = a[3].via.array.size;
    if (!(*nums = malloc((*n ? *n : 1) * sizeof **nums)))
        goto out;
    for (size_t i = 0; i < *n; i++) {
        const msgpack_object *o = &a[3].via.array.ptr[i];
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            free(*nums);
            *nums = NULL;
            goto out;
        }
        (*nums)[i] = o->via.u64;
    }
    rc = 0;
out:
    msgpack_zone_destroy(&zone);
    return rc;
}

int rec_uints_encode(rec_buf *b, const uint64_t *v, size_t n)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, rec_buf_write);
    if (msgpack_pack_array(&pk, n))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (msgpack_pack_uint64(&pk, v[i]))
            return -1;
    return 0;
}

int rec_uints_decode(const uint8_t *body, uint32_t len, uint64_t *v, size_t cap, size_t *n)
{
    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, 256))
        return -1;
    msgpack_object obj;
    int rc = -1;
    if (unpack_array(body, len, &zone, &obj) || obj.via.array.size > cap)
        goto out;
    for (uint32_t i = 0; i < obj.via.array.size; i++) {
        if (obj.via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            goto out;
        v[i] = obj.via.array.ptr[i].via.u64;
    }
    *n = obj.via.array.size;
    rc = 0;
out:
    msgpack_zone_destroy(&zone);
    return rc;
}

int rec_epoch_encode(rec_buf *b, const evs_epoch *e)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, rec_buf_write);
    if (msgpack_pack_array(&pk, 3) || msgpack_pack_uint64(&pk, e->epoch) ||
        msgpack_pack_bin(&pk, sizeof e->uuid) ||
        msgpack_pack_bin_body(&pk, e->uuid, sizeof e->uuid) || msgpack_pack_uint64(&pk, e->start))
        return -1;
    return 0;
}

int rec_epoch_decode(const uint8_t *body, uint32_t len, evs_epoch *e)
{
    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, 256))
        return -1;
    msgpack_object obj;
    evs_slice u;
    int rc = -1;
    if (unpack_array(body, len, &zone, &obj) || obj.via.array.size != 3)
        goto out;
    const msgpack_object *a = obj.via.array.ptr;
    if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 > UINT32_MAX ||
        !obj_bytes(&a[1], &u) || u.len != sizeof e->uuid ||
        a[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        goto out;
    e->epoch = (uint32_t)a[0].via.u64;
    memcpy(e->uuid, u.ptr, sizeof e->uuid);
    e->start = a[2].via.u64;
    rc = 0;
out:
    msgpack_zone_destroy(&zone);
    return rc;
}
