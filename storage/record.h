/*
 * record.h — the on-disk record: a fixed 56-byte header, then a msgpack body, zero-padded to a
 * multiple of 8. Pure codec over buffers: no I/O; decoders write into caller-provided arrays
 * (and msgpack-c's zones), rec_group_decode's numbers excepted. The layout and the rules for a
 * valid record are in record.c and docs/format.md; any change here is a format change.
 */
#ifndef EVS_RECORD_H
#define EVS_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "evstore.h"

#define REC_MAGIC 0x31525645u /* "EVR1" read as little-endian bytes 45 56 52 31 */
#define REC_VERSION 1
#define REC_HDR_SIZE 56
#define REC_ALIGN 8
#define REC_MAX_BODY (256u << 20) /* a declared body over this is invalid on its face */
#define REC_POS_NONE UINT64_MAX

/* Record kinds. Numbers are on disk: never reuse one. */
enum rec_kind {
    REC_ENTRY = 1,     /* a stream entry: body = array of 2n bin (name, value, ...)            */
    REC_TOMBSTONE = 2, /* XDEL of header id in header stream: body = nil                       */
    REC_STREAM = 3,    /* stream lifecycle: body = [op, name(bin), ...] (rec_stream_op)        */
    REC_GROUP = 4,     /* consumer-group event (consumer-groups issue): body = array           */
    REC_SEAL = 5,      /* last record of a sealed segment: body = [0, segment base]          */
    REC_TRIM = 6,      /* entries below header id are gone (XTRIM, retention): body = [count]
                          or [count, bytes, first position] (the new first entry's; none:
                          2^64-1)                                                        */
    REC_EPOCH = 7,     /* start of an epoch (replication issue): body = [epoch, uuid, pos]     */
};

enum rec_stream_op {
    REC_STREAM_CREATE = 1, /* [1, name]                                                       */
    REC_STREAM_DROP = 2,   /* [2, name]                                                       */
    REC_STREAM_SETID = 3,  /* [3, name, last_ms, last_seq, entries_added, maxdel_ms, maxdel_seq] */
    REC_STREAM_IDEM = 4,   /* [4, name, key(bin), first_ms, first_seq, last_ms, last_seq, count]:
                              the entries of this atomic group were published under key     */
    REC_STREAM_RETENTION = 5, /* [5, name, max_age_ms, max_bytes, max_entries] (XRETENTION)   */
    REC_STREAM_DECLARE = 6,   /* [6, name, REC_DECLARE_N counters]: the stream's whole state,
                                 written before retention deletes the segment holding its
                                 create (or previous declare) record (retention.c)        */
};

/* Consumer-group events (REC_GROUP): body = [op, group(bin), arg(bin), [uint...]]. The numbers
 * are full new values, never deltas, so replaying a record twice is harmless. */
enum rec_group_op {
    REC_G_CREATE = 1,    /* arg dlq key; [gno, last_ms, last_seq, entries_read, max_deliveries]  */
    REC_G_DESTROY = 2,   /* []                                                                  */
    REC_G_SETID = 3,     /* [last_ms, last_seq, entries_read]                                   */
    REC_G_SETDLQ = 4,    /* arg dlq key; [max_deliveries]                                       */
    REC_G_CONSUMER = 5,  /* arg consumer; []: created (XGROUP CREATECONSUMER, first use)        */
    REC_G_DELCONS = 6,   /* arg consumer; []: deleted with its pending entries                  */
    REC_G_DELIVER = 7,   /* arg consumer; [noack, last_ms, last_seq, entries_read, (ms, seq)...]:
                            new entries delivered (">"), pending with count 1 unless noack     */
    REC_G_REDELIVER = 8, /* arg consumer; [(ms, seq)...]: pending entries delivered again
                            (count + 1, time = record time)                                    */
    REC_G_ACK = 9,       /* []; [(ms, seq)...]: no longer pending                               */
    REC_G_CLAIM = 10,    /* arg consumer; [has_lastid, last_ms, last_seq, (ms, seq, count,
                            time_ms)...]: pending entries now owned by consumer               */
    REC_G_DEAD = 11,     /* []; [ms, seq, deliveries]: dead-lettered (the copy precedes it in
                            the same atomic group): no longer pending, counted               */
    /* A group's whole state, written before retention deletes the segment holding its create
     * (or previous snapshot) record: 12, then 13 per consumer, then 14 chunks of pending. A
     * replay that knows the group ignores them (its state is already that); a rebuild whose
     * log starts after the group's creation builds the group from them. */
    REC_G_SNAP = 12,     /* arg dlq; [gno, last_ms, last_seq, entries_read, max_deliveries,
                            dead_letters, consumer slots]                                   */
    REC_G_SNAPCONS = 13, /* arg consumer; [cno, seen_ms, active_ms]                          */
    REC_G_SNAPPEL = 14,  /* []; [(cno, ms, seq, deliveries, time_ms)...]                      */
};
#define REC_G_ENTRIES_READ_NONE UINT64_MAX /* entries_read unknown (Redis: invalid) */

#define REC_DECLARE_N 17 /* created_us, last ms/seq, first ms/seq, maxdel ms/seq, entries_added,
                            length, ndels, bytes, first_pos, last_pos, last_time_us, retention
                            max age/bytes/entries                                         */

/* Header flags. */
#define REC_F_TXN_CONT 0x0001u /* more records of the same atomic group follow this one */
/* A REC_ENTRY that is a copy of a live entry, re-appended at the head so that retention can
 * delete the segment holding the original (a relocation: retention.c). It keeps the
 * original's ID, append time and body; the first copy of a relocation has prev = none, each
 * later one names the copy before it. Only inside an atomic group of one stream's copies,
 * every live entry of it once, in ID order. */
#define REC_F_MOVED 0x0002u
/* Every byte of the segment before this record was durable (fdatasynced) when this record was
 * written: set on the first record of a segment and on the first record written after a sync
 * that covered everything before it (under --fsync always, every write batch's first record)
 * or after an open (which takes what it recovered as synced: writer.c W7).
 * Recovery tells a power cut's hole in the last, unsynced batch from corruption by it: a bad
 * record that a later one with this flag follows was durable, so it is corruption (store.c). */
#define REC_F_SYNCED 0x0004u

typedef struct rec_hdr {
    uint32_t magic;
    uint32_t crc;      /* zlib crc32 of bytes [8, rec_size) : everything after this field   */
    uint32_t body_len; /* unpadded                                                           */
    uint8_t kind;
    uint8_t version;
    uint16_t flags;
    uint32_t stream;   /* stream number (0: none)                                            */
    uint32_t epoch;
    uint64_t id_ms;
    uint64_t id_seq;
    uint64_t time_us;
    uint64_t prev;     /* log position of this stream's previous REC_ENTRY, or REC_POS_NONE  */
} rec_hdr;

static inline uint64_t rec_size_for(uint32_t body_len)
{
    return REC_HDR_SIZE + (((uint64_t)body_len + REC_ALIGN - 1) & ~(uint64_t)(REC_ALIGN - 1));
}

/* Result of looking at bytes that may hold a record. */
enum rec_check {
    REC_OK = 0,
    REC_SHORT = 1,    /* fewer bytes than the header, or than the declared size            */
    REC_BADMAGIC = 2,
    REC_BADHDR = 3,   /* version, kind or declared length out of range                     */
    REC_BADCRC = 4,
    REC_BADBODY = 5,  /* CRC fine but the body is not what its kind requires               */
    REC_ZERO = 6,     /* all-zero header: preallocated space, not a record                 */
};
const char *rec_check_str(int c);

/* Encode a header (the crc field is computed by rec_seal_crc once the body is in place). */
void rec_hdr_encode(const rec_hdr *h, uint8_t out[REC_HDR_SIZE]);
/* Store crc in an encoded header (once the CRC over what follows its field is known). */
void rec_hdr_set_crc(uint8_t hdr[REC_HDR_SIZE], uint32_t crc);
void rec_hdr_decode(const uint8_t in[REC_HDR_SIZE], rec_hdr *h);

/* CRC of a record whose header (without crc) and body are given as two parts. */
uint32_t rec_crc(const uint8_t hdr[REC_HDR_SIZE], const void *body, uint32_t body_len);

/*
 * Validate the record at buf[0..avail): magic, header ranges, size, CRC, and the body's msgpack
 * structure against its kind. On REC_OK fills *h and *size (total padded record size).
 */
int rec_check(const uint8_t *buf, uint64_t avail, rec_hdr *h, uint64_t *size);
/* Header-only checks (magic, ranges); no CRC. For scanning. */
int rec_check_hdr(const uint8_t *buf, uint64_t avail, rec_hdr *h, uint64_t *size);

/*
 * Bounded msgpack check: walk one msgpack object in buf[0..len) verifying that every declared
 * length and count fits in the bytes that remain, nesting at most max_depth. Returns the bytes
 * the object spans, or -1. msgpack-c allocates declared counts before reading them, so nothing
 * from outside reaches msgpack_unpack before passing this.
 */
long rec_mp_check(const uint8_t *buf, size_t len, int max_depth);

/* ---- bodies ------------------------------------------------------------------------------ */

/* A growable byte buffer (msgpack_sbuffer-compatible write callback). */
typedef struct rec_buf {
    uint8_t *data;
    size_t len, cap;
} rec_buf;
int rec_buf_write(void *buf, const char *p, size_t n); /* msgpack_packer_write */
int rec_buf_reserve(rec_buf *b, size_t extra);
void rec_buf_release(rec_buf *b);

/* Append the msgpack body of an entry: array of 2n bin. rec_entry_bound: at most the bytes
 * it appends. */
int rec_entry_encode(rec_buf *b, const evs_field *fields, size_t n);
size_t rec_entry_bound(const evs_field *fields, size_t n);
/* Decode an entry body: its pairs, read where they lie by the walk of rule 4 (nothing
 * allocated; safe on any bytes). fields[] points into body. Returns the number of fields; if
 * more than cap, returns -2 and sets *need; -1 if malformed. */
long rec_entry_decode(const uint8_t *body, uint32_t len, evs_field *fields, size_t cap,
                      size_t *need);
/* The name/value pairs of an entry body, in order, read where they lie: the walk of rule 4
 * (entry_body_check), nothing decoded or allocated. fn gets each pair (slices into body) until
 * it returns false. Returns 0, or -1 if the body is not an entry body: safe on any bytes,
 * checked as it goes (fn may have seen the pairs before the fault). */
typedef bool (*rec_pair_fn)(void *arg, evs_slice name, evs_slice value);
int rec_entry_pairs(const uint8_t *body, uint32_t len, rec_pair_fn fn, void *arg);

/* The decoders of the other kinds' bodies (below) use msgpack-c: the body must come from a
 * record that passed rec_check() (its bounded walk is what makes msgpack-c safe on outside
 * bytes); they do not walk it again. */
int rec_stream_encode(rec_buf *b, int op, evs_slice name, const uint64_t *extra, size_t nextra);
/* Decode a REC_STREAM body: op, name (points into body), up to REC_STREAM_MAX_EXTRA extra
 * integers (extra has room for that many). */
#define REC_STREAM_MAX_EXTRA 24
int rec_stream_decode(const uint8_t *body, uint32_t len, int *op, evs_slice *name,
                      uint64_t *extra, size_t *nextra);

/* REC_STREAM_IDEM bodies. */
int rec_idem_encode(rec_buf *b, evs_slice name, evs_slice key, const uint64_t v[5]);
int rec_idem_decode(const uint8_t *body, uint32_t len, evs_slice *name, evs_slice *key,
                    uint64_t v[5]);

/* REC_GROUP bodies. Decoding allocates the numbers in `zone`-free storage: *nums points into a
 * buffer the caller frees with free(). */
int rec_group_encode(rec_buf *b, int op, evs_slice group, evs_slice arg, const uint64_t *nums,
                     size_t n);
int rec_group_decode(const uint8_t *body, uint32_t len, int *op, evs_slice *group,
                     evs_slice *arg, uint64_t **nums, size_t *n);

int rec_uints_encode(rec_buf *b, const uint64_t *v, size_t n);
int rec_uints_decode(const uint8_t *body, uint32_t len, uint64_t *v, size_t cap, size_t *n);

/* REC_EPOCH bodies: [epoch, uuid (bin 16), start position]. */
int rec_epoch_encode(rec_buf *b, const evs_epoch *e);
int rec_epoch_decode(const uint8_t *body, uint32_t len, evs_epoch *e);

#endif
