/* test_record.c — the record codec: round trips, truncation at every byte, bit flips,
 * hostile msgpack counts. */
#include "helpers.h"

#include "crc.h"
#include "record.h"

#include <endian.h>
#include <zlib.h>

static size_t build(uint8_t *out, const evs_field *f, size_t n, uint8_t kind)
{
    rec_buf b = {0};
    cr_assert_eq(rec_entry_encode(&b, f, n), 0);
    rec_hdr h = {REC_MAGIC, 0, (uint32_t)b.len, kind, REC_VERSION, 0, 7, 1, 1700000000000ull, 3,
                 1700000000000123ull, REC_POS_NONE};
    rec_hdr_encode(&h, out);
    memcpy(out + REC_HDR_SIZE, b.data, b.len);
    size_t size = rec_size_for((uint32_t)b.len);
    memset(out + REC_HDR_SIZE + b.len, 0, size - REC_HDR_SIZE - b.len);
    h.crc = rec_crc(out, out + REC_HDR_SIZE, (uint32_t)b.len);
    rec_hdr_encode(&h, out);
    rec_buf_release(&b);
    return size;
}

Test(record, round_trip)
{
    uint8_t buf[4096];
    evs_field f[3] = {{S("source"), S("agent-1")}, {S("type"), S("task.done")},
                      {S("payload"), {"\0\1\2bin", 6}}};
    size_t size = build(buf, f, 3, REC_ENTRY);
    cr_assert_eq(size % 8, 0);
    rec_hdr h;
    uint64_t sz;
    cr_assert_eq(rec_check(buf, size, &h, &sz), REC_OK);
    cr_assert_eq(sz, size);
    cr_assert_eq(h.stream, 7);
    cr_assert_eq(h.id_ms, 1700000000000ull);
    cr_assert_eq(h.id_seq, 3);
    cr_assert_eq(h.prev, REC_POS_NONE);
    evs_field out[8];
    size_t need;
    long n = rec_entry_decode(buf + REC_HDR_SIZE, h.body_len, out, 8, &need);
    cr_assert_eq(n, 3);
    cr_assert_eq(out[2].value.len, 6);
    cr_assert(memcmp(out[2].value.ptr, "\0\1\2bin", 6) == 0);
    cr_assert(memcmp(out[1].name.ptr, "type", 4) == 0);
    cr_assert_eq(rec_entry_decode(buf + REC_HDR_SIZE, h.body_len, out, 2, &need), -2);
    cr_assert_eq(need, 3);
}

/* An entry body is exactly what msgpack-c's own buffer makes of the same fields: every header
 * width and every piece length the encoder copies by hand (up to 8 bytes) or by memcpy. */
Test(record, an_entry_body_is_msgpack_cs_own_encoding)
{
    static char bytes[70000];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (char)('a' + i % 26);
    const size_t lens[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 31, 32, 255, 256, 65535, 65536};
    const size_t nlens = sizeof lens / sizeof lens[0];
    for (size_t a = 0; a < nlens; a++)
        for (size_t b = 0; b < nlens; b++) {
            evs_field f[2] = {{{bytes, lens[a]}, {bytes + 1, lens[b]}},
                              {{"type", 4}, {bytes + 2, lens[(a + b) % nlens]}}};
            rec_buf got = {0};
            cr_assert_eq(rec_entry_encode(&got, f, 2), 0);
            msgpack_sbuffer want;
            msgpack_sbuffer_init(&want);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &want, msgpack_sbuffer_write);
            msgpack_pack_array(&pk, 4);
            for (size_t i = 0; i < 2; i++) {
                msgpack_pack_bin(&pk, f[i].name.len);
                msgpack_pack_bin_body(&pk, f[i].name.ptr, f[i].name.len);
                msgpack_pack_bin(&pk, f[i].value.len);
                msgpack_pack_bin_body(&pk, f[i].value.ptr, f[i].value.len);
            }
            cr_assert_eq(got.len, want.size, "lengths %zu/%zu", lens[a], lens[b]);
            cr_assert(!memcmp(got.data, want.data, want.size), "lengths %zu/%zu", lens[a], lens[b]);
            cr_assert_leq(got.len, rec_entry_bound(f, 2));
            msgpack_sbuffer_destroy(&want);
            rec_buf_release(&got);
        }
}

Test(record, truncated_at_every_byte_is_rejected)
{
    uint8_t buf[4096];
    evs_field f[2] = {{S("k"), S("some value here")}, {S("k2"), S("v2")}};
    size_t size = build(buf, f, 2, REC_ENTRY);
    for (size_t cut = 0; cut < size; cut++) {
        rec_hdr h;
        uint64_t sz;
        int c = rec_check(buf, cut, &h, &sz);
        cr_assert_neq(c, REC_OK, "truncated to %zu accepted", cut);
    }
}

Test(record, every_single_bit_flip_is_detected)
{
    uint8_t buf[4096];
    evs_field f[1] = {{S("payload"), S("{\"a\":1,\"b\":[1,2,3]}")}};
    size_t size = build(buf, f, 1, REC_ENTRY);
    for (size_t bit = 0; bit < size * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        rec_hdr h;
        uint64_t sz;
        int c = rec_check(buf, size, &h, &sz);
        cr_assert_neq(c, REC_OK, "flip of bit %zu not detected", bit);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
}

Test(record, zeros_are_not_a_record)
{
    uint8_t buf[128] = {0};
    rec_hdr h;
    uint64_t sz;
    cr_assert_eq(rec_check(buf, sizeof buf, &h, &sz), REC_ZERO);
}

Test(record, hostile_msgpack_counts_rejected_before_allocation)
{
    /* the design brief's example: map32 claiming 1.35 billion pairs */
    const uint8_t evil[] = {0x23, 0x56, 0x56, 0xdf, 0x50, 0x7a, 0x56, 0x0a};
    cr_assert_lt(rec_mp_check(evil + 3, 5, 8), 0);
    const uint8_t arr[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0};
    cr_assert_lt(rec_mp_check(arr, sizeof arr, 8), 0);
    const uint8_t bin[] = {0xc6, 0x7f, 0xff, 0xff, 0xff, 0x00};
    cr_assert_lt(rec_mp_check(bin, sizeof bin, 8), 0);
    const uint8_t deep[] = {0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0xc0};
    cr_assert_lt(rec_mp_check(deep, sizeof deep, 8), 0);
    const uint8_t ok[] = {0x92, 0xc4, 0x01, 'a', 0xa1, 'b'};
    cr_assert_eq(rec_mp_check(ok, sizeof ok, 8), (long)sizeof ok);
}

/* An entry record around a hand-made body, padding as given, its CRC made to match: only
 * rule 4 (the body's shape, the padding) can refuse it. */
static size_t raw_entry(uint8_t *out, const uint8_t *body, uint32_t len, uint8_t padbyte)
{
    rec_hdr h = {REC_MAGIC, 0, len, REC_ENTRY, REC_VERSION, 0, 7, 1, 1, 0, 1, REC_POS_NONE};
    rec_hdr_encode(&h, out);
    memcpy(out + REC_HDR_SIZE, body, len);
    size_t size = rec_size_for(len);
    memset(out + REC_HDR_SIZE + len, padbyte, size - REC_HDR_SIZE - len);
    uint32_t crc = htole32(evs_crc32(0, out + 8, size - 8));
    memcpy(out + 4, &crc, 4);
    return size;
}

static int check_entry_body(const uint8_t *body, uint32_t len)
{
    uint8_t buf[512];
    size_t size = raw_entry(buf, body, len, 0);
    rec_hdr h;
    uint64_t sz;
    return rec_check(buf, size, &h, &sz);
}

Test(record, an_entry_body_is_pairs_of_bytes_and_padding_is_zero)
{
    /* shapes an entry may have: array of 2n bin/str, n >= 1, each header width */
    const uint8_t fix[] = {0x92, 0xa1, 'k', 0xa0};
    const uint8_t wide[] = {0xdc, 0x00, 0x02, 0xd9, 0x01, 'k', 0xc5, 0x00, 0x01, 'v'};
    const uint8_t wider[] = {0xdd, 0x00, 0x00, 0x00, 0x02, 0xdb, 0x00, 0x00, 0x00, 0x00,
                             0xc6, 0x00, 0x00, 0x00, 0x01, 'v'};
    cr_assert_eq(check_entry_body(fix, sizeof fix), REC_OK);
    cr_assert_eq(check_entry_body(wide, sizeof wide), REC_OK);
    cr_assert_eq(check_entry_body(wider, sizeof wider), REC_OK);
    /* and shapes it may not: no pairs, an odd count, a value of another type, a nested
     * value, a length past the end, bytes after the array, not an array */
    const uint8_t *bad[] = {
        (const uint8_t[]){0x90},
        (const uint8_t[]){0x91, 0xa1, 'k'},
        (const uint8_t[]){0x92, 0xa1, 'k', 0x01},
        (const uint8_t[]){0x92, 0xa1, 'k', 0x91, 0xa0},
        (const uint8_t[]){0x92, 0xa1, 'k', 0xc4, 0x05, 'v'},
        (const uint8_t[]){0x92, 0xa1, 'k', 0xa0, 0xa0},
        (const uint8_t[]){0x82, 0xa1, 'k', 0xa0},
        (const uint8_t[]){0xdd, 0xff, 0xff, 0xff, 0xfe, 0xa0},
    };
    const uint32_t badlen[] = {1, 3, 4, 5, 6, 5, 4, 6};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(check_entry_body(bad[i], badlen[i]), REC_BADBODY, "shape %zu accepted", i);
    /* a non-zero byte at any place of the padding, the CRC made to match */
    const uint8_t body[] = {0x92, 0xa1, 'k', 0xa1, 'v'}; /* 5 bytes: 3 of padding */
    for (size_t at = 0; at < 3; at++) {
        uint8_t buf[128];
        size_t size = raw_entry(buf, body, sizeof body, 0);
        buf[REC_HDR_SIZE + sizeof body + at] = 0x40;
        uint32_t crc = htole32(evs_crc32(0, buf + 8, size - 8));
        memcpy(buf + 4, &crc, 4);
        rec_hdr h;
        uint64_t sz;
        cr_assert_eq(rec_check(buf, size, &h, &sz), REC_BADBODY, "padding byte %zu", at);
    }
    cr_assert_eq(check_entry_body(body, sizeof body), REC_OK);
}

struct seen_pairs {
    evs_slice v[8];
    size_t n, stop_at;
};

static bool keep_pair(void *arg, evs_slice name, evs_slice value)
{
    struct seen_pairs *s = arg;
    s->v[s->n++] = name;
    s->v[s->n++] = value;
    return s->n / 2 != s->stop_at;
}

Test(record, an_entry_bodys_pairs_are_read_where_they_lie)
{
    /* the pairs in order, as slices into the body, whatever each header's width */
    const uint8_t wide[] = {0xdc, 0x00, 0x04, 0xd9, 0x01, 'k', 0xc5, 0x00, 0x01, 'v',
                            0xa4, 't', 'y', 'p', 'e', 0xc4, 0x00};
    struct seen_pairs s = {0};
    cr_assert_eq(rec_entry_pairs(wide, sizeof wide, keep_pair, &s), 0);
    cr_assert_eq(s.n, 4);
    cr_assert(s.v[0].ptr == wide + 5 && s.v[0].len == 1);
    cr_assert(s.v[1].ptr == wide + 9 && s.v[1].len == 1);
    cr_assert(s.v[2].ptr == wide + 11 && s.v[2].len == 4);
    cr_assert(s.v[3].len == 0);
    /* the callback ends the walk: one pair seen, and that is a success */
    struct seen_pairs one = {.stop_at = 1};
    cr_assert_eq(rec_entry_pairs(wide, sizeof wide, keep_pair, &one), 0);
    cr_assert_eq(one.n, 2);
    /* what rule 4 refuses, the walk refuses: a value past the end, a nested value, bytes
     * after the array, an odd count */
    const uint8_t past[] = {0x92, 0xa1, 'k', 0xc4, 0x05, 'v'};
    const uint8_t nested[] = {0x92, 0xa1, 'k', 0x91, 0xa0};
    const uint8_t after[] = {0x92, 0xa1, 'k', 0xa0, 0xa0};
    const uint8_t odd[] = {0x91, 0xa1, 'k'};
    struct seen_pairs x = {0};
    cr_assert_eq(rec_entry_pairs(past, sizeof past, keep_pair, &x), -1);
    cr_assert_eq(rec_entry_pairs(nested, sizeof nested, keep_pair, &x), -1);
    cr_assert_eq(rec_entry_pairs(after, sizeof after, keep_pair, &x), -1);
    cr_assert_eq(rec_entry_pairs(odd, sizeof odd, keep_pair, &x), -1);
    cr_assert_eq(x.n, 2, "only the one whole pair before the bytes after the array was seen");
}

Test(record, crc_covers_length_field)
{
    uint8_t buf[4096];
    evs_field f[1] = {{S("k"), S("v")}};
    size_t size = build(buf, f, 1, REC_ENTRY);
    /* grow the declared length by 8 and keep the old CRC: must be rejected */
    uint32_t len;
    memcpy(&len, buf + 8, 4);
    len += 8;
    memcpy(buf + 8, &len, 4);
    memset(buf + size, 0, 8);
    rec_hdr h;
    uint64_t sz;
    cr_assert_neq(rec_check(buf, size + 8, &h, &sz), REC_OK);
}

/* The format's checksum is zlib's crc32 (docs/format.md); crc.h computes it with libdeflate.
 * Same values for every length, alignment and split into continued calls. */
Test(record, crc_is_zlib_crc32)
{
    uint8_t buf[700];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n + off <= sizeof buf; n += 1 + n / 16) {
            uint32_t want = (uint32_t)crc32(0L, buf + off, (uInt)n);
            cr_assert_eq(evs_crc32(0, buf + off, n), want, "off %zu len %zu", off, n);
            size_t cut = n / 3;
            cr_assert_eq(evs_crc32(evs_crc32(0, buf + off, cut), buf + off + cut, n - cut), want);
        }
    cr_assert_eq(evs_crc32(0, "123456789", 9), 0xcbf43926u); /* the CRC-32 check value */
}
