/*
 * index.h — the LMDB index over the log. The only module that includes lmdb.h.
 *
 * Invariants (kept by the writer, checked by evs_verify):
 *  I1. The index may lag the log but never lead it: every position it stores is below the
 *      watermark's end, and the record at the watermark's last position has the stored CRC.
 *  I2. Writes go through idx_apply() of a prepared batch of operations, so a MDB_MAP_FULL can
 *      abort, grow the map and replay the whole batch.
 *  I3. Read transactions are short (one lookup burst): the map can only grow when none is open.
 *
 * Tables (all integer keys big-endian so LMDB's bytewise order is numeric order):
 *   meta       "watermark" -> wm; "next_stream" -> u32
 *   streams    name -> stream_meta (LE fixed layout, see idx_meta_*)
 *   stream_no  no(4) -> name
 *   ids        no(4) ms(8) seq(8) -> pos(8) time_us(8) ordinal(8)      sparse: 1 per 16 KiB or 64 entries
 *   times      no(4) time_us(8) -> ms(8) seq(8)                       first ID of each ids block
 *   filt       no(4) field(1) hash(8) ms(8) seq(8) -> delta-encoded group (postings.h)
 *   dels       no(4) ms(8) seq(8) -> tombstone pos(8)
 *   segments   base(8) -> end(8) first_time(8) last_time(8) records(8) sealed(8)
 *   idem       no(4) key -> first ms,seq(16) last ms,seq(16) count(8) time_us(8)   idempotency keys
 *   idem_time  time_us(8) no(4) key -> (empty)    the idem keys by age, for their expiry
 *              (retention.c R8); an index made before it had this table gets it, filled from
 *              idem, at its first read-write open; a read-only open goes without it
 *   groups, consumers, pel: consumer-group state (layout in group.h)
 */
#ifndef EVS_INDEX_H
#define EVS_INDEX_H

#include <stdbool.h>
#include <stdint.h>

#include "evstore.h"
#include "record.h"

enum idx_table { IDX_META, IDX_STREAMS, IDX_STREAM_NO, IDX_IDS, IDX_TIMES, IDX_FILT, IDX_DELS,
                 IDX_SEGMENTS, IDX_IDEM, IDX_GROUPS, IDX_CONSUMERS, IDX_PEL, IDX_IDEM_TIME,
                 IDX_NTABLES };

typedef struct idx idx;

typedef struct idx_watermark {
    uint64_t end;       /* log position just past the last indexed record                  */
    uint64_t last_pos;  /* position of the last indexed record (REC_POS_NONE: none)         */
    uint32_t last_crc;  /* that record's CRC                                                 */
} idx_watermark;

/* Open or create the environment in folder `path`. EVS_ECORRUPT if LMDB says the file is not
 * a valid environment (the caller moves it aside and creates a new one). */
int idx_open(const char *path, uint64_t map_bytes, bool rdonly, idx **out, evs_error *err);
void idx_close(idx *x);
int idx_sync(idx *x);         /* mdb_env_sync(force) */
uint64_t idx_txnid(idx *x);   /* last committed transaction id */
/* Keep blocks allocated past the data file's used pages for what the records not yet
 * indexed may need: `bytes`, or twice the recent peak of one commit's growth if more (a
 * commit of many distinct `source` values grew it by megabytes, and a fixed 1 MiB let the
 * next commit meet a full disk; the peak halves for each second without a commit), or twice
 * what `pending_ops` operations waiting for the index grow it at the recent peak per
 * operation if more still (an indexer slowed by a busy machine let more wait than one commit
 * holds, and the next commit met the full disk), so that a full disk refuses requests before
 * a commit meets it (writer.c W11). Where the file system has no FALLOC_FL_KEEP_SIZE, its
 * free space must hold that much instead. -errno (-ENOSPC) when it cannot be had. Writer
 * role only. */
int idx_keep_headroom(idx *x, uint64_t bytes, uint64_t pending_ops);
/* Forget the commits' growth so far (the end of an open: its catch-up commits are large). */
void idx_growth_reset(idx *x);
/* Write a consistent, compacted copy of the environment's data file to fd (mdb_env_copyfd2,
 * MDB_CP_COMPACT: live pages only, renumbered; the copy's transaction count starts at 1). */
int idx_copy_fd(idx *x, int fd, evs_error *err);

/* ---- write batches ----------------------------------------------------------------------- */

typedef struct idx_batch idx_batch;
idx_batch *idx_batch_new(void);
/* Operations in a batch (idx_keep_headroom's pending_ops). */
size_t idx_batch_count(const idx_batch *b);
void idx_batch_free(idx_batch *b);
void idx_batch_clear(idx_batch *b);
bool idx_batch_empty(const idx_batch *b);
/* Queue a put / a delete / a delete of every key starting with prefix. -ENOMEM on failure. */
int idx_batch_put(idx_batch *b, enum idx_table t, const void *k, size_t kl, const void *v,
                  size_t vl);
int idx_batch_put_noover(idx_batch *b, enum idx_table t, const void *k, size_t kl,
                         const void *v, size_t vl);
int idx_batch_del(idx_batch *b, enum idx_table t, const void *k, size_t kl);
int idx_batch_del_prefix(idx_batch *b, enum idx_table t, const void *k, size_t kl);
/* Delete key k if, when the batch is applied, its value's last 8 bytes (a big-endian time)
 * are below `before`: a put of a newer value queued or applied meanwhile keeps it. */
int idx_batch_del_older(idx_batch *b, enum idx_table t, const void *k, size_t kl,
                        uint64_t before);
/* Apply a batch in one write transaction, growing the map on MDB_MAP_FULL. */
int idx_apply(idx *x, idx_batch *b, evs_error *err);
/* Empty every table (index rebuild). */
int idx_clear_all(idx *x, evs_error *err);

/* ---- reads ------------------------------------------------------------------------------- */

typedef struct idx_rtxn idx_rtxn;
int idx_rbegin(idx *x, idx_rtxn **out);
void idx_rend(idx_rtxn *r);
/* 0 found, EVS_ENOTFOUND, or < 0. *v points into the map, valid until idx_rend. */
int idx_get(idx_rtxn *r, enum idx_table t, const void *k, size_t kl, const void **v,
            size_t *vl);

typedef struct idx_cur idx_cur;
int idx_cur_open(idx_rtxn *r, enum idx_table t, idx_cur **out);
void idx_cur_close(idx_cur *c);
enum idx_seek { IDX_GE, IDX_FIRST, IDX_LAST, IDX_NEXT, IDX_PREV };
/* Position the cursor; 0 with *k,*v set (valid until idx_rend), EVS_ENOTFOUND past either
 * end, or < 0. IDX_GE uses key k_in. */
int idx_cur_get(idx_cur *c, enum idx_seek how, const void *k_in, size_t kl_in, const void **k,
                size_t *kl, const void **v, size_t *vl);

/* ---- keys -------------------------------------------------------------------------------- */

static inline void idx_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void idx_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}
static inline uint32_t idx_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t idx_rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}
/* time_us(8) no(4) key(<= EVS_IDEM_KEY_MAX) */
#define IDX_IDEM_TIME_KEY_MAX (8 + 4 + EVS_IDEM_KEY_MAX)
/* no(4) ms(8) seq(8) */
#define IDX_IDKEY 20
static inline void idx_idkey(uint8_t *k, uint32_t no, evs_id id)
{
    idx_be32(k, no); idx_be64(k + 4, id.ms); idx_be64(k + 12, id.seq);
}
/* no(4) field(1) hash(8) ms(8) seq(8) */
#define IDX_FILTKEY 29
#define IDX_FIELD_SOURCE 's'
#define IDX_FIELD_TYPE 't'
uint64_t idx_value_hash(const void *v, size_t n);

#endif
