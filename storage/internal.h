/*
 * internal.h — the store's internal objects, shared by the storage modules only.
 *
 * Threads and locks:
 *  - one writer thread owns everything marked (W): it assigns IDs and log positions, writes,
 *    syncs, indexes, then publishes under st->lock;
 *  - st->lock (rwlock) guards everything marked (L): the segment array, the visible stream
 *    table and each stream's visible state. Readers take it shared for a lookup, never across
 *    a system call;
 *  - st->qmu guards the submission queue and `closing`.
 *
 * Invariants:
 *  S1. A stream's visible state (v) only ever describes records that are written, synced as
 *      the fsync mode requires, and indexed: readers never see an unacknowledgeable entry.
 *  S2. IDs are strictly increasing per stream; append times are non-decreasing in the log.
 *  S3. Records never span segments; a segment is sealed (REC_SEAL last) before the next one
 *      is created, and sealed segments never change.
 *  S4. After a write or sync error nothing more is written and nothing is acknowledged.
 */
#ifndef EVS_INTERNAL_H
#define EVS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "evstore.h"
#include "fileio.h"
#include "record.h"

struct idx;
struct idx_batch;
struct postings;
struct wop;

int evs_err_set(evs_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int evs_err_copy(evs_error *dst, const evs_error *src);

#define EVS_DEFAULT_SEGMENT_BYTES (64ull << 20)
#define EVS_DEFAULT_MAX_ENTRY (64ull << 20)
#define EVS_DEFAULT_MAP_BYTES (256ull << 20)
#define EVS_MAX_NAME 400         /* stream names: LMDB keys are at most 511 bytes          */
#define EVS_SPARSE_BYTES 4096    /* one ids key per this many bytes of a stream's records  */
#define EVS_SPARSE_COUNT 64      /* ... or this many entries, whichever comes first        */
#define EVS_MAX_BATCH_BYTES (16ull << 20) /* a write batch stops growing past this          */

/* ---- segments ---------------------------------------------------------------------------- */

struct segmap {
    struct segmap *next;
    uint8_t *ptr;
    size_t len;
};

typedef struct segment {
    uint64_t base;             /* log position of the file's byte 0                          */
    _Atomic uint64_t size;     /* bytes readers may read (written + synced as required)      */
    int fd;
    struct segmap *map;        /* newest mapping first; older ones live until close          */
    bool sealed;
    atomic_int refs;
    char name[32];             /* "<base, 20 digits>.seg"                                    */
} segment;

int seg_create(const struct evs_io *io, const char *logdir, uint64_t base, uint64_t prealloc,
               segment **out, evs_error *err);
int seg_open(const char *logdir, const char *name, bool rdonly, segment **out, evs_error *err);
void seg_free(segment *s);
/* The mapping covering at least `len` bytes (maps or remaps; caller holds no lock needed:
 * only called by the writer or at open). Returns NULL on failure. */
uint8_t *seg_map_for(segment *s, uint64_t len);
uint8_t *seg_data(segment *s); /* current mapping (covers size) */
bool seg_name_parse(const char *name, uint64_t *base);

/* ---- streams ----------------------------------------------------------------------------- */

typedef struct stream_state {
    uint32_t no;
    uint32_t flags;
    evs_id last_id, first_id, max_deleted;
    uint64_t entries_added, length, ndels;
    uint64_t first_pos, last_pos;  /* REC_POS_NONE when none                               */
    uint64_t last_time_us, created_us;
    uint64_t sparse_bytes, sparse_count; /* since the last ids key                          */
} stream_state;

#define STREAM_STATE_BYTES 128
void stream_state_encode(const stream_state *s, uint8_t out[STREAM_STATE_BYTES]);
int stream_state_decode(const void *in, size_t len, stream_state *s);

typedef struct stream {
    uint8_t *name;
    size_t name_len;
    uint32_t no;
    stream_state w;            /* (W) writer's view, may run ahead of v                     */
    stream_state v;            /* (L) what readers see                                       */
    bool w_live;               /* (W) in the writer's table                                  */
    bool v_live;               /* (L) in the visible table                                   */
    bool touched;              /* (W) in the current batch's touched list                    */
    struct stream *w_next, *v_next; /* hash chains                                          */
} stream;

typedef struct strtab {
    stream **b;
    size_t nb, n;
} strtab;

int strtab_init(strtab *t, size_t nb);
void strtab_release(strtab *t);
stream *strtab_get(const strtab *t, const void *name, size_t len, bool vis);
int strtab_put(strtab *t, stream *s, bool vis);
void strtab_del(strtab *t, stream *s, bool vis);

/* ---- the write queue --------------------------------------------------------------------- */

enum wreq_kind { WR_APPEND = 1, WR_DELETE = 2, WR_DROP = 3 };

typedef struct wop {
    size_t name_off, name_len;     /* into wreq.data                                         */
    evs_id_mode id_mode;
    evs_id id;
    size_t body_off;               /* pre-encoded msgpack body, into wreq.data               */
    uint32_t body_len;
    uint32_t body_crc;             /* crc32 of body + zero padding, computed by the caller   */
    bool has_source, has_type;
    uint64_t hsource, htype;
    bool no_create;
} wop;

typedef struct wreq {
    struct wreq *next;
    enum wreq_kind kind;
    size_t n;
    wop *ops;
    evs_id *ids;                   /* results, n of them                                     */
    rec_buf data;
    evs_done_fn done;
    void *arg;
    size_t count;                  /* WR_DELETE: deleted; WR_DROP: existed                   */
} wreq;

/* ---- the store --------------------------------------------------------------------------- */

struct evs_store {
    char *dir, *logdir, *idxdir;
    evs_options opt;
    const struct evs_io *io;
    int lockfd;
    char store_id[33];
    uint32_t epoch;
    struct idx *idx;

    pthread_rwlock_t lock;
    segment **segs;                /* (L) by base, ascending                                 */
    size_t nsegs, segcap;
    strtab vtab;                   /* (L) visible streams by name                            */
    strtab wtab;                   /* (W) writer's streams by name                           */
    stream **byno;                 /* (W) every stream ever loaded, by number                */
    size_t nbyno;
    uint32_t next_no;              /* (W)                                                    */

    /* writer (W) */
    pthread_t writer;
    bool writer_started;
    uint64_t tail;                 /* next record position                                   */
    segment *active;
    uint64_t last_rec_pos;
    uint32_t last_crc;
    uint64_t last_time_us;
    uint64_t synced_to;            /* log bytes known durable                                */
    uint64_t last_sync_ns;
    struct idx_batch *ib;
    struct postings *post;         /* filter groups of the batch being applied               */
    stream **touched;
    size_t ntouched, touchcap;
    struct iovec *iov;
    size_t niov, iovcap;
    rec_buf hdrs;                  /* headers of the batch being built                       */
    uint64_t batch_bytes, batch_records;
    uint64_t ckpt_txnid;
    uint64_t last_ckpt_ns;
    struct brec *brecs;            /* records of the batch being built                       */
    size_t nbrecs, brecap;
    uint64_t batch_start;          /* log position of the batch's first record               */

    /* queue */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    wreq *qhead, *qtail;
    bool closing;

    /* sticky failure */
    atomic_int failed;
    evs_error fail_err;            /* written once, before `failed` is set                    */

    /* visibility notification */
    pthread_mutex_t vmu;
    pthread_cond_t vcv;
    uint64_t vgen;
    evs_visible_fn hook;
    void *hook_arg;

    /* stats */
    atomic_uint_fast64_t n_reads, n_appends, n_batches, n_fsyncs, fsync_ns, fsync_ns_max, batch_max;
    uint64_t recovered_records, torn_bytes;
};

void evs_log(evs_store *st, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint64_t evs_now_us(void);
uint64_t evs_mono_ns(void);

/* Apply one valid record to the writer's stream states and queue its index operations
 * (shared by the writer and recovery: one mechanism). `pos` is its log position. */
int store_apply_record(evs_store *st, const rec_hdr *h, const uint8_t *body, uint64_t pos,
                       uint64_t size, evs_error *err);
/* The same, with the entry's source/type hashes already known (writer path). */
int store_apply_record_hint(evs_store *st, const rec_hdr *h, const uint8_t *body, uint64_t pos,
                            uint64_t size, const struct wop *hint, evs_error *err);
/* Make the index durable and record it in index.ckpt. */
int store_checkpoint_write(evs_store *st);
/* Does the entry exist (visible, not deleted)? 1 yes, 0 no, < 0 error. Reader module. */
int reader_entry_exists(evs_store *st, stream *s, evs_id id, evs_error *err);
/* Queue the end-of-batch index operations (touched streams, watermark, segment) and apply. */
int store_index_flush(evs_store *st, evs_error *err);
/* Copy writer state to visible state for touched streams (caller holds st->lock write). */
void store_publish_touched(evs_store *st);
stream *store_stream_new(evs_store *st, uint32_t no, const void *name, size_t len);

/* Segment lookup for readers: the segment holding pos, with a reference. */
segment *store_seg_get(evs_store *st, uint64_t pos);
void store_seg_put(segment *s);

/* Read and verify the record at pos. On success *h, *body (into the mapping, valid while the
 * returned segment reference is held) and *size. EVS_ECORRUPT with a message otherwise. */
int store_read_record(evs_store *st, uint64_t pos, const char *stream_name, rec_hdr *h,
                      const uint8_t **body, uint64_t *size, segment **ref, evs_error *err);
/* The same for a record this reader has already checked with store_read_record (the bytes of
 * a record never change while it is in the log): header bounds only, no CRC. */
int store_read_checked(evs_store *st, uint64_t pos, const char *stream_name, rec_hdr *h,
                       const uint8_t **body, uint64_t *size, segment **ref, evs_error *err);

/* Writer thread */
void *writer_main(void *arg);
int writer_submit(evs_store *st, wreq *r);
void wreq_free(wreq *r);
void store_fail(evs_store *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Open the active segment for appending (or create the first / next one). Writer or open. */
int store_roll(evs_store *st, evs_error *err);

#endif
