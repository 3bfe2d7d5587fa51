/*
 * internal.h — the store's internal objects, shared by the storage modules only.
 *
 * Threads and locks:
 *  - the writer's role owns everything marked (W): whoever holds st->rolemu assigns IDs and
 *    log positions, writes, syncs, indexes, then publishes under st->lock. That is the writer
 *    thread, or a thread that runs the queue itself while the writer thread is idle
 *    (evs_submit_release_inline). Lock order: rolemu, then qmu;
 *  - st->lock (rwlock) guards everything marked (L): the segment array, the visible stream
 *    table and each stream's visible state. Readers take it shared for a lookup, never across
 *    a system call;
 *  - st->qmu guards the submission queue and `closing`.
 *
 * Invariants:
 *  S1. A stream's visible state (v) only ever describes records that are written, synced as
 *      the fsync mode requires, indexed, and below the visibility cap when one is set
 *      (visible.c): readers never see an unacknowledgeable entry.
 *  S2. IDs are strictly increasing per stream; append times are non-decreasing in the log.
 *      Except: a relocation (REC_F_MOVED) re-appends a stream's live entries with their own
 *      IDs and times; its copies then are the stream's chain, the originals are dead.
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
#include <string.h>

#include "evstore.h"
#include "fileio.h"
#include "numtab.h"
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
#define EVS_SPARSE_BYTES 16384   /* one ids key per this many bytes of a stream's records */
#define EVS_SPARSE_COUNT 64      /* ... or this many entries, whichever comes first        */
#define EVS_MAX_BATCH_BYTES (16ull << 20) /* a write batch stops growing past this          */
#define EVS_INLINE_BODY 4096              /* bodies up to this are copied into the batch      */
#define EVS_INDEX_COMMIT_NS 10000000ull   /* commit the index at most this long after a publish */
#define EVS_INDEX_COMMIT_RECORDS 32768    /* ... or once this many records wait               */
#define EVS_INDEX_DEFER_RECORDS 65536     /* a due commit waits for a busy indexer past this  */

/* ---- segments ---------------------------------------------------------------------------- */

struct segmap {
    struct segmap *next;
    uint8_t *ptr;
    size_t len;
};

typedef struct segment {
    uint64_t base;             /* log position of the file's byte 0                          */
    _Atomic uint64_t size;     /* bytes readers may read (written + synced as required)      */
    _Atomic uint64_t written;  /* bytes of whole batches written (>= size): what replication
                                  may ship before the sync (evs_log_span, writer.c W8)      */
    _Atomic uint64_t whole_from; /* from here to `written`, whole records this process's
                                  writer wrote: shipped with only their first header checked
                                  (replica.c L3); UINT64_MAX: none (a file found on disk)   */
    int fd;
    _Atomic(struct segmap *) map; /* newest mapping first; older ones live until it is
                                  unmapped whole (segment.c M1-M4) or freed                 */
    atomic_bool sealed;
    atomic_bool evictable;     /* in its store's table: its mapping may go while nobody else
                                  holds it (segment.c M2)                                   */
    _Atomic uint64_t last_use; /* the mapping clock when it was last read (M2)               */
    size_t map_slot;           /* its place among the mapped segments (segment.c), or SIZE_MAX */
    atomic_bool pending_name;  /* still "<name>.pending": its predecessor's seal not synced
                                  yet (preparer.c D1-D4); cleared by its roll job           */
    _Atomic int64_t refs;      /* references: its readers' (and its table's) in the low half,
                                  those that only use its descriptor in the high half
                                  (SEG_FD_REF each); SEG_EVICTING set while its mapping is
                                  being taken (segment.c M2)                                */
    struct evs_store *deleted_in; /* set once retention renamed it `.deleted`: the last
                                  reference hands the file to the releaser (R3)             */
    char name[32];             /* "<base, 20 digits>.seg"                                    */
} segment;

/* Create logdir/tmpname: `bytes` preallocated and fsynced; with `zero`, also zero-filled (the
 * preparer's spare: the writer's later fdatasyncs then have no block conversion to journal).
 * With `pace`, each SEG_ZERO_CHUNK is synced and pace() called after it: it may sleep, or
 * return false to stop (then EVS_ECLOSED and no file). */
#define SEG_ZERO_CHUNK (256u << 10)
int seg_prepare(const struct evs_io *io, const char *logdir, const char *tmpname, uint64_t bytes,
                bool zero, bool (*pace)(void *arg), void *pace_arg, evs_error *err);
/* Rename a prepared file into place as the segment at `base`, fsync the folder, open it.
 * `pending`: renamed to "<name>.pending" instead, without the folder's fsync (a deferred
 * roll, preparer.c D1): the preparer gives it its name once its predecessor is synced. */
int seg_install(const struct evs_io *io, const char *logdir, const char *tmpname, uint64_t base,
                bool pending, segment **out, evs_error *err);
#define SEG_PENDING ".pending"
int seg_open(const char *logdir, const char *name, bool rdonly, segment **out, evs_error *err);
/* The same, for the segment at `base` found in the file `fname` (a pending one, D4). */
int seg_open_file(const char *logdir, const char *fname, uint64_t base, bool rdonly,
                  segment **out, evs_error *err);
void seg_free(segment *s);
/* The mapping covering at least `len` bytes (maps or remaps; caller holds no lock needed:
 * only called by the writer or at open). Returns NULL on failure. */
uint8_t *seg_map_for(segment *s, uint64_t len);
/* The segment's bytes (covering size), mapped now if they are not (segment.c M1-M4): the
 * caller holds a reference on s besides its table's. NULL with errno when it cannot be. */
uint8_t *seg_data(segment *s);
#define SEG_EVICTING ((int64_t)1 << 30)
#define SEG_FD_REF ((int64_t)1 << 32)
/* Tests only (0 otherwise): the most segment mappings the process keeps (M2); called with
 * a segment being evicted, between its swap to SEG_EVICTING and its unmapping (NULL). */
extern size_t seg_test_map_cap;
extern void (*seg_test_evicting)(segment *s);
/* s is being read (a reference was taken for it): its clock for the eviction order (M2). */
void seg_touch(segment *s);
/* Mappings the process holds for segments now (M2). */
size_t seg_maps_held(void);
/* The last reference on s is gone (store.c): free it, or hand a deleted one's file on. */
void store_seg_release(segment *s);
/* A reference for a holder that uses only the segment's descriptor (a sync, a cut, a
 * sendfile, a roll job), never its mapping: it does not keep the mapping (segment.c M2). */
void store_seg_hold_fd(segment *s);
void store_seg_put_fd(segment *s);
bool seg_name_parse(const char *name, uint64_t *base);

/* ---- streams ----------------------------------------------------------------------------- */

/* Stream numbers are never reused (streams.c S4): a store creates at most this many streams
 * over its life, numbers 1 to 2^32 - 2 (creating one more is refused, EVS_ETOOBIG; next_no
 * stays a uint32_t), and a record naming 2^32 - 1 is corrupt. Numbers find streams through
 * sparse tables (numtab.h): a record naming any number costs a reader at most 8 MiB. Until
 * session 37 they indexed dense arrays, and the limit was 2^26 (a record naming a number
 * near 2^32 had made an open allocate 32 GiB: fuzz_segment). */
#define EVS_STREAM_NO_MAX UINT32_MAX
#define EVS_STREAM_NO_MSG "this store has created 4,294,967,294 streams over its life, the " \
                          "most it can (stream numbers are never reused)"

/* A stream's own retention limits (XRETENTION): 0 inherits the store's default, RET_NONE
 * means no limit. */
#define RET_NONE UINT64_MAX
typedef struct stream_ret {
    uint64_t max_age_ms, max_bytes, max_entries;
} stream_ret;

typedef struct stream_state {
    uint32_t no;
    uint32_t flags;
    evs_id last_id, first_id, max_deleted;
    uint64_t entries_added, length, ndels;
    uint64_t first_pos, last_pos;  /* REC_POS_NONE when none                               */
    uint64_t last_time_us, created_us;
    uint64_t sparse_bytes, sparse_count; /* since the last ids key                          */
    uint64_t changes;              /* records applied since open (not stored): evs_version   */
    uint64_t bytes;                /* record bytes of its live entries (retention)           */
    uint64_t decl_pos;             /* position of its create or latest declare record        */
    uint64_t moved_pos;            /* first copy of its latest relocation, or REC_POS_NONE   */
    stream_ret ret;
} stream_state;

#define STREAM_STATE_BYTES 192
void stream_state_encode(const stream_state *s, uint8_t out[STREAM_STATE_BYTES]);
/* Version 1 (128 bytes, before retention) and 2 (192) decode; encode writes version 2. */
int stream_state_decode(const void *in, size_t len, stream_state *s);

/* One entry of a stream in the write batch being built (writer.c B1-B2). */
typedef struct batch_ent {
    evs_id id;
    uint64_t pos, size;        /* log position, record bytes                                  */
} batch_ent;

typedef struct stream {
    uint8_t *name;
    size_t name_len;
    uint32_t no;
    stream_state w;            /* (W) writer's view, may run ahead of v                     */
    stream_state v;            /* (L) what readers see                                       */
    bool w_live;               /* (W) in the writer's table                                  */
    bool v_live;               /* (L) in the visible table                                   */
    bool touched;              /* (W) in the list of streams to write at the next index commit */
    bool btouched;             /* (W) in the list of streams to publish after this write batch */
    batch_ent *bents;          /* (W) its entries in that batch, in order (writer.c B1-B2)     */
    uint32_t nbents, bentcap;
    uint64_t w_changes_out;    /* (W) w.changes when its last batch was published or held: the
                                  writer never reads v, which the cap's releases write (visible.c) */
    struct stream *w_next, *v_next; /* hash chains                                          */
    struct cgroup **groups;    /* (G) consumer groups, sorted by name (group.h G6)            */
    uint32_t ngroups, groupcap;
    bool gtouched;             /* (W) one of its groups has rows to write (group_flush)       */
    uint64_t held_gen;         /* (L) its state's slot in the held batch numbered held_gen   */
    size_t held_slot;          /*     (visible.c V5)                                          */
    evs_id gc_first;           /* (R) the first entry the last index clean-up judged by      */
    _Atomic uint32_t refs;     /* holders outside the st->lock section that found it (S2)    */
    struct stream *grave_next; /* (W) the store's dropped streams not freed yet (S3)         */
    evs_id mv_last;            /* (W) applying a relocation (store.c apply_moved): the last */
    uint64_t mv_count;         /*     copy's ID, how many so far, the first's and the last's  */
    uint64_t mv_first_pos, mv_last_pos, mv_bytes; /* positions, their bytes                 */
} stream;

/* S2: a reference on s for a holder that keeps it past the st->lock section it found s in
 * (taken in that section, or while holding another reference). */
static inline void store_stream_hold(stream *s) { atomic_fetch_add(&s->refs, 1); }
static inline void store_stream_put(stream *s) { atomic_fetch_sub(&s->refs, 1); }
/* S3: free the dropped streams nothing holds any more. Writer role, between requests. */
void store_streams_reclaim(evs_store *st);

typedef struct strtab {
    stream **b;
    size_t nb, n;
    numtab byno;               /* the visible table's streams by number too (its walks in
                                  number order: retention, SCAN, verify); the writer's has none */
} strtab;

int strtab_init(strtab *t, size_t nb);
void strtab_release(strtab *t);
stream *strtab_get(const strtab *t, const void *name, size_t len, bool vis);
int strtab_put(strtab *t, stream *s, bool vis);
void strtab_del(strtab *t, stream *s, bool vis);

/* What a trim removes from the oldest live entries: at most max_remove, only below stop_at
 * (by_id: MINID; no ID bounds the others, not even the largest), and (keep_bytes !=
 * UINT64_MAX) only while the live bytes left exceed keep_bytes. */
typedef struct trim_goal {
    uint64_t max_remove;
    evs_id stop_at;
    uint64_t keep_bytes, live_bytes;
    bool by_id;
} trim_goal;

/* Does goal g keep entry `id` (and all after it), once `removed` entries of `bytes` went? */
static inline bool trim_goal_keeps(const trim_goal *g, evs_id id, uint64_t removed,
                                   uint64_t bytes)
{
    return removed >= g->max_remove || (g->by_id && evs_id_cmp(id, g->stop_at) >= 0) ||
           (g->keep_bytes != UINT64_MAX && g->live_bytes - bytes <= g->keep_bytes);
}
typedef struct trim_scan {
    uint64_t removed, bytes;       /* entries and their record bytes                          */
    evs_id next;                   /* the first entry kept ...                                */
    uint64_t next_pos;             /* ... and its position, unless exhausted                   */
    bool exhausted;                /* no visible entry is kept                                 */
} trim_scan;

/* What a writer's trim scan read past the entry it kept: the next entries of the stream from
 * there, to answer the next trims without reading them again (reader.c T1-T3). */
#define TRIM_CACHE_SLOTS 64  /* streams, by number                                      */
#define TRIM_CACHE_KEEP 256  /* entries each                                            */
typedef struct trim_cache {
    const stream *s;
    uint64_t ndels, moved_pos;     /* the stream's, when filled                              */
    size_t i, n;                   /* ids[i] is the stream's first entry if still valid      */
    evs_id ids[TRIM_CACHE_KEEP];
    uint64_t pos[TRIM_CACHE_KEEP], size[TRIM_CACHE_KEEP];
} trim_cache;

/* ---- the write queue --------------------------------------------------------------------- */

enum wreq_kind { WR_APPEND = 1, WR_DELETE = 2, WR_DROP = 3, WR_TRIM = 4, WR_SETID = 5,
                 WR_GROUP = 6,
                 WR_RETENTION = 7, /* set a stream's own limits (ops[0].id packs nothing; ret)  */
                 WR_DECLARE = 8,   /* declare streams and snapshot groups below `upto`          */
                 WR_ROLL = 9,      /* seal the active segment if it holds anything              */
                 WR_EPOCH = 10,    /* begin a new epoch (epoch.c)                               */
                 WR_CUT = 11,      /* a consistent cut of the log for a snapshot (snapshot.c)   */
                 WR_REPLICA = 12,  /* a follower: the leader's records at their positions      */
                 WR_IDX_DEL = 13,  /* index keys retention found dead (data: table, length, key)*/
                 WR_RELOCATE = 14 };/* copy a stream's live entries to the head (retention.c)  */

/* What WR_CUT takes on the writer, between write batches: the log's end, every segment up to
 * it (with a reference), every live stream's counters and the epoch history. */
typedef struct snap_cut {
    uint64_t cut;
    segment **segs;
    uint64_t *sizes;               /* readable bytes of each segment at the cut              */
    bool *sealed;                  /* ... and whether it was sealed then                     */
    size_t nsegs;
    evs_snap_stream *streams;      /* names point into `names`                               */
    size_t nstreams;
    uint8_t *names;
    evs_epoch *epochs;
    size_t nepochs;
} snap_cut;

/* One consumer-group operation of a WR_GROUP request: the caller's op with its slices and ID
 * array copied into wreq.data (offsets until the request is complete), and its result. */
typedef struct gop {
    evs_group_op op;
    size_t off[5];                 /* stream, group, consumer, dlq, ids: offsets into data   */
    evs_id *rids, *rdel;           /* result arrays (owned)                                  */
    size_t nr, nd, capr, capd;
} gop;

static inline bool evs_slice_eq(evs_slice a, evs_slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

typedef struct wop {
    size_t name_off, name_len;     /* into wreq.data                                         */
    size_t first;                  /* index of the request's first op naming this stream     */
    evs_id_mode id_mode;
    evs_id id;
    size_t body_off;               /* pre-encoded msgpack body, into wreq.data               */
    uint32_t body_len;
    bool has_source, has_type;
    uint64_t hsource, htype;
    bool no_create;
} wop;

typedef struct wreq {
    struct wreq *next;
    enum wreq_kind kind;
    size_t n;
    struct evs_store *pool;        /* WR_APPEND, WR_REPLICA: back to this pool when finished */
    struct wreq *done_next;        /* finished, on the role's way back to the pool (P2)       */
    size_t opcap;                  /* room in ops and ids                                    */
    wop *ops;
    size_t idem_off, idem_len;     /* idempotency key in data (len 0: none)                  */
    bool has_trim;                 /* trim the stream in the same group (evs_submit_trim)    */
    evs_trim trim;
    bool has_plan;                 /* WR_TRIM: planned by the caller on a snapshot (evs_trim_stream) */
    uint32_t plan_no;
    uint64_t plan_ndels, plan_moved;
    evs_id plan_from, plan_last;   /* the snapshot's first and last IDs                      */
    trim_scan plan;
    size_t nwatch;                 /* evs_submit_watched: names in data at watch[i].off      */
    struct wwatch { size_t off, len; evs_version v; } *watch;
    bool has_added, has_maxdel;    /* WR_SETID: ops[0].id is the new last ID                 */
    uint64_t added;
    evs_id maxdel;
    evs_id *ids;                   /* results, n of them                                     */
    bool each;                     /* evs_submit_each: each op refused on its own, in rcs[i] */
    int *rcs;
    evs_each_fn edone;
    rec_buf data;
    rec_buf carry;                 /* WR_REPLICA: the records a former frame left open (R1)   */
    evs_done_fn done;
    void *arg;
    size_t count;                  /* WR_DELETE: deleted; WR_DROP: existed                   */
    stream_ret ret;                /* WR_RETENTION                                            */
    uint64_t upto;                 /* WR_DECLARE; WR_RELOCATE: the most bytes to copy        */
    uint64_t below;                /* WR_RELOCATE: only streams whose first entry is below    */
    uint64_t *out;                 /* WR_RELOCATE: the caller's streams and bytes copied      */
    snap_cut *cut;                 /* WR_CUT: filled by the writer                           */
    evs_epoch *epoch;              /* WR_EPOCH: the caller's, filled with the new epoch      */
    bool promote;                  /* WR_EPOCH: stop following once the epoch is durable     */
    gop *gops;                     /* WR_GROUP: n operations, and their results              */
    evs_group_result *gres;
    evs_group_done_fn gdone;
} wreq;

/* ---- the store --------------------------------------------------------------------------- */

struct evs_store {
    char *dir, *logdir, *idxdir;
    char *idx_private;  /* a read-only open's own rebuilt index (index_private), or NULL */
    int idx_private_fd; /* ... its owner.lock, flock()ed while in use (privindex.c)         */
    uint8_t *ro_dels;   /* a read-only open's tombstones past the index watermark: their
                           IDX_IDKEY keys, in order (store_ro_deleted) */
    size_t nro_dels, ro_dels_cap;
    evs_options opt;
    const struct evs_io *io;
    int lockfd;
    char store_id[33];
    uint32_t epoch;                /* (W) current epoch, in every record's header (E3)       */
    evs_epoch *epochs;             /* (L) the epoch history, oldest first (epoch.c)          */
    atomic_bool following;         /* a follower: its log is the leader's (until evs_promote) */
    bool running_marked;           /* RUNNING is ours to remove at a clean close (store.c)   */
    atomic_bool epoch_due;         /* an unclean stop's epoch, begun before the next record
                                      written (store.c open_marks, writer.c W9)              */
    _Atomic uint64_t leader_start; /* a follower: the leader's log start (segments below go) */
    size_t nepochs;
    struct idx *idx;

    pthread_rwlock_t lock;
    segment **segs;                /* (L) by base, ascending                                 */
    size_t nsegs, segcap;
    strtab vtab;                   /* (L) visible streams by name                            */
    strtab wtab;                   /* (W) writer's streams by name                           */
    numtab byno;                   /* (W) every stream loaded and not freed (streams.c S3),
                                      by number                                              */
    uint32_t next_no;              /* (W) past every number made: a create names it (S4)     */
    stream *grave;                 /* (W) dropped streams waiting to be freed (S3)           */
    _Atomic uint64_t ngrave;       /*     how many (evs_store_stats.streams_dropped_held)    */

    /* writer (W) */
    pthread_t writer;
    bool writer_started;
    uint64_t tail;                 /* next record position                                   */
    segment *active;
    uint64_t last_rec_pos;
    uint32_t last_crc;
    uint64_t last_time_us;
    uint64_t synced_to;            /* log bytes known durable                                */
    uint64_t wb_from;              /* log bytes before this have had writeback started      */
    _Atomic uint64_t synced_pub;   /* the same, for other threads (stats, replication acks)  */
    uint64_t last_sync_ns;
    struct idx_batch *ib;
    struct postings *post;         /* filter groups of the batch being applied               */
    stream **touched;              /* streams changed since the last index commit            */
    size_t ntouched, touchcap;
    stream **btouched;             /* streams changed by the write batch being built          */
    size_t nbtouched, btouchcap;
    uint64_t idx_records;          /* records applied since the last index commit            */
    bool idx_force;                /* a record readers need in the index at once (tombstone) */
    uint64_t idx_first_ns;         /* when the oldest uncommitted record was published       */
    struct iovec *iov;
    size_t niov, iovcap;
    rec_buf hdrs;                  /* headers of the batch being built                       */
    rec_buf rcarry;                /* a follower: records of a group its leader's frames left
                                      open, not written yet (writer.c do_replica R1)          */
    uint64_t batch_bytes, batch_records, batch_entries;
    _Atomic uint64_t ckpt_txnid;   /* index transaction recorded in index.ckpt               */
    _Atomic bool ckpt_open;        /* index.ckpt says "open": commits may follow its txn (K1) */
    bool ckpt_open_failed;         /* ... marking it failed (logged once; ckfile_mu)          */
    pthread_mutex_t ckfile_mu;     /* index.ckpt's writers: the checkpoint and the mark (K1)  */

    /* preparer (preparer.c): a zero-filled spare segment file made ahead */
    pthread_t prep;
    bool prep_started, prep_stop, spare_ready, spare_held;
    bool nospace; /* writer: the last roll was refused for want of space (W5) */
    bool reserve_ready; /* writer (open before it): log/reserve.seg.tmp exists (P2) */
    bool ckpt_nospace;  /* checkpointer (close after it): index.ckpt refused for space */
    uint64_t alloc_end; /* (W) log position where the active file's blocks end (W11)   */
    bool idx_room_short; /* (W) the index's headroom could not be kept (W11)          */
    _Atomic uint64_t active_used;  /* bytes in the active segment, for the preparer's pace  */
    _Atomic uint64_t catchup_ns;   /* when a follower's big batch last overlapped its sync
                                      (W10): the preparer's cue to skip the zero-fill (Z1)  */
    pthread_mutex_t prep_mu;
    pthread_cond_t prep_cv;
    /* deferred rolls (--fsync no/everysec, preparer.c D1-D4): segments whose predecessor's
     * seal is not yet synced, named "<base>.seg.pending" until the preparer has synced it */
    struct roll_job *roll_head, *roll_tail;
    uint64_t rolls_queued, rolls_done; /* under prep_mu */
    bool rolls_urgent;                 /* under prep_mu: someone waits for the roll jobs */
    uint64_t *pend_open;               /* open: pending segments taken into the log (D4)   */
    size_t npend_open, pend_cap;
    _Atomic uint64_t rolls_open;       /* queued - done, for a lock-free "none pending" */
    pthread_cond_t roll_cv;

    /* releaser (releaser.c): disk space given back in the background, paced */
    pthread_t rel;
    bool rel_started, rel_stop;
    pthread_mutex_t rel_mu;
    pthread_cond_t rel_cv;
    struct rel_job *rel_head, *rel_tail;

    /* indexer (indexer.c): the index batch in its hands, applied off the writer's path */
    pthread_t ixr;
    bool ixr_started, ix_stop;
    atomic_bool ix_busy;           /* (ixmu to set) a batch is in the indexer's hands         */
    atomic_bool ix_deferred;       /* the writer left a due commit for when it is not        */
    struct idx_batch *ix_batch;    /* being applied while ix_busy; else an empty one to swap */
    uint64_t ib_end, ix_end;       /* log end the writer's / the indexer's batch covers      */
    uint64_t ix_ops;               /* operations in the indexer's batch (while ix_busy)      */
    _Atomic uint64_t idx_end;      /* ... and the last applied one (stats)                   */
    _Atomic uint64_t n_ix_deferred;
    pthread_mutex_t ixmu;
    pthread_cond_t ixcv;

    /* checkpointer (checkpoint.c) */
    pthread_t ckpt;
    bool ckpt_started, ck_stop;
    pthread_mutex_t ckmu;
    pthread_cond_t ckcv;
    struct brec *brecs;            /* records of the batch being built                       */
    size_t nbrecs, brecap;
    uint64_t batch_start;          /* log position of the batch's first record               */

    uint64_t req_now_us;           /* writer: clock reading of the request being built (0: none) */
    /* finished append and replicated-frame requests kept for reuse (writer.c, "request pool") */
    pthread_mutex_t poolmu;
    wreq *pool;
    size_t pool_bytes;
    wreq *done_reqs; /* the role's finished ones, given back together at the turn's end (P2) */

    /* the writer's role (W) and its acknowledgements waiting for the batch's end */
    pthread_mutex_t rolemu;
    struct pending { wreq **r; size_t n, cap; } pend;
    bool wmore;                    /* (W) a follower's frame is next in the list being
                                      processed, or the rest of one (W10)                    */

    /* syncer (syncer.c): a follower's batch synced while the writer writes the next (W10) */
    pthread_t sy_thread;
    bool sy_started;               /* (W)                                                    */
    pthread_mutex_t sy_mu;
    pthread_cond_t sy_cv;
    segment *sy_seg;               /* (sy_mu) the job: the segment to sync; NULL: none       */
    bool sy_done, sy_stop;         /* (sy_mu)                                                */
    int sy_rc;                     /* (sy_mu) the job's result                               */
    uint64_t sy_end;               /* (W) end of the batch in flight; 0: none                */
    segment *sy_ref;               /* (W) its segment, referenced until collected (Y2)       */
    struct pending spend;          /* (W) its requests, acknowledged once it is synced       */

    /* queue */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    wreq *qhead, *qtail;
    bool closing;
    unsigned holds;                /* evs_submit_hold: new requests do not wake the writer   */
    bool wkick;                    /* the indexer is free for a deferred commit (X5)         */
    uint64_t wdue_ns;              /* when timed writer work falls due (monotonic; 0: none),
                                    * set by the role's holder: the writer thread sleeps until */

    /* sticky failure */
    atomic_int failed;
    evs_error fail_err;            /* written once, before `failed` is set                    */
    pthread_mutex_t failmu;

    /* consumer groups (group.h) */
    pthread_mutex_t gmu;           /* guards every stream's groups (G2)                      */
    trim_cache *tcache;            /* (W) TRIM_CACHE_SLOTS, made at the first trim scan      */
    uint32_t next_gno;             /* (W) next group number                                   */
    bool history_cut;              /* rebuilding an index from a log whose start retention
                                      deleted: records of streams and groups created before
                                      it are skipped until their declare/snapshot record    */
    bool tail_followed;            /* FOLLOWING found at open: the log's tail was written
                                      by a follower, its REC_F_SYNCED flags the leader's, not
                                      this store's syncs (store.c R2, open_marks)            */

    /* retention (retention.c) */
    pthread_t ret_thread;
    bool ret_started, ret_stop;
    pthread_mutex_t ret_mu;        /* one pass at a time; guards ret_stop                     */
    pthread_cond_t ret_cv;
    _Atomic uint64_t active_first_us; /* append time of the active segment's first record    */
    atomic_uint_fast64_t n_ret_trimmed, n_segs_deleted, n_bytes_deleted;
    atomic_uint_fast64_t n_relocated, n_bytes_relocated;
    pthread_mutex_t itmu;          /* guards iters                                           */
    struct evs_iter *iters;        /* open by evs_iter_open (reader.c R2)                    */
    segment **zombies;             /* deleted by retention, still referenced (store.c)       */
    size_t nzombies, zombiecap;

    /* visibility (visible.c): the cap, and the batches it holds, oldest first */
    _Atomic uint64_t vcap;         /* (L) for writes; EVS_CAP_NONE: no cap                   */
    _Atomic uint64_t vscap;        /* (L) for writes: the sync cap (W10); EVS_CAP_NONE: none */
    atomic_size_t nheld;           /* (L) for writes: batches held                           */
    struct held *held_head, *held_tail; /* (L)                                               */
    uint64_t held_gens;            /* (L) numbers given to held batches that others merged into */
    /* visibility notification */
    pthread_mutex_t vmu;
    pthread_cond_t vcv;
    uint64_t vgen;
    evs_visible_fn hook;
    void *hook_arg;
    evs_written_fn whook;          /* (vmu) a batch written, its sync to follow (W8)        */
    void *whook_arg;

    /* stats */
    atomic_uint_fast64_t n_reads, n_appends, n_batches, n_fsyncs, fsync_ns, fsync_ns_max, batch_max;
    atomic_uint_fast64_t n_fsyncs_overlapped; /* syncs handed to the syncer (W10)           */
    atomic_uint_fast64_t n_batch_records;
    atomic_uint_fast64_t fsync_hist[EVS_FSYNC_BUCKETS], batch_hist[EVS_BATCH_BUCKETS];
    uint64_t recovered_records, torn_bytes;
    uint64_t set_aside_files, set_aside_bytes; /* log/ *.torn, *.diverged at open (count_set_aside) */
};

void evs_log(evs_store *st, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint64_t evs_now_us(void);
/* Tests only (0 otherwise): added to evs_now_us, a clock moved on without waiting. */
extern _Atomic int64_t store_test_clock_skew_us;
/* The CLOCK_REALTIME time ns from now, as pthread_cond_timedwait takes its deadline (ns up
 * to about 584 years). */
struct timespec evs_deadline_ns(uint64_t ns);

/* Apply one valid record to the writer's stream states and queue its index operations
 * (shared by the writer and recovery: one mechanism). `pos` is its log position. */
int store_apply_record(evs_store *st, const rec_hdr *h, const uint8_t *body, uint64_t pos,
                       uint64_t size, evs_error *err);
/* The same, with the entry's source/type hashes already known (writer path). */
/* A filter field (`source`, `type`) into hint: the first of each name counts. Returns
 * whether either is still missing (a rec_pair_fn, with hint a wop *). */
bool store_filter_field(void *hint, evs_slice name, evs_slice value);
int store_apply_record_hint(evs_store *st, const rec_hdr *h, const uint8_t *body, uint64_t pos,
                            uint64_t size, const struct wop *hint, evs_error *err);
/* Record in index.ckpt that index transaction `txn` is durable (after idx_sync), unless the
 * index has committed since (K1: the file then stays open). */
int store_checkpoint_write(evs_store *st, uint64_t txn);
/* index.ckpt's text, read as strictly as ckpt_format writes it: "boot <id>\ntxn <n>\n", then
 * "open\n" while index commits may follow txn (store.c K1). 0 with the fields, -1 if
 * malformed. */
int ckpt_parse(const char *buf, size_t len, char fboot[64], uint64_t *txn, bool *open);
size_t ckpt_format(char *out, size_t cap, const char *boot, uint64_t txn, bool open);
/* Before an index commit: make index.ckpt say "open" durably, once after each checkpoint
 * (K1). Never fails the commit: a failure is logged. */
void store_checkpoint_open(evs_store *st);
/* A decimal number as the store's own files and IDs spell it: 1 or more digits, nothing else
 * (no sign, blank or unit), at most UINT64_MAX; EVS_EINVAL otherwise (units.c). */
int evs_parse_dec(const char *s, size_t len, uint64_t *out);
/* A store ID as STORE, EPOCHS and replication carry it: 32 lowercase hex digits. */
static inline bool store_id_ok(const char *s)
{
    return strlen(s) == 32 && strspn(s, "0123456789abcdef") == 32;
}
/* Checkpointer: sync log, then index, then record the checkpoint; its thread. */
int ckpt_run(evs_store *st);
void *ckpt_main(void *arg);
/* Walk the live entries of snapshot `snap` of stream s from `from` (inclusive) in order.
 * Reader module. */
int reader_trim_scan(evs_store *st, stream *s, const stream_state *snap, evs_id from,
                     const trim_goal *goal, trim_scan *out, evs_error *err);
/* The writer's trim scan of s from its first entry (s->w.first_id), through the trim cache
 * (reader.c T1-T3): a stream trimmed at every append walks its entries once per block, not
 * once per append. Writer only. */
int reader_trim_scan_w(evs_store *st, stream *s, const stream_state *snap, const trim_goal *goal,
                       trim_scan *out, evs_error *err);


/* The first live entry above `after` that the writer has written (held from readers by the
 * visibility cap or not; writer, its batch flushed): 1 with *id and *pos, 0 none, < 0 error. */
int reader_first_after(evs_store *st, stream *s, evs_id after, evs_id *id, uint64_t *pos,
                       evs_error *err);
/* The ID of snapshot snap's first live entry (0-0 when empty): its trim point, unless entries
 * were deleted since, then found by a read (an error reads as the trim point). Reader module. */
evs_id reader_first_live(evs_store *st, stream *s, const stream_state *snap);
/* Does the entry exist (visible, not deleted)? 1 yes (with *bytes, when not NULL, its size as
 * evs_group_op.max_bytes counts it), 0 no, < 0 error. Reader module. */
int reader_entry_exists(evs_store *st, stream *s, evs_id id, uint64_t *bytes, evs_error *err);
/* Has the writer written the entry (held from readers by the visibility cap or not), not
 * deleted? Writer, its batch flushed. 1 yes (with *rec_size, when not NULL, its record's
 * bytes), 0 no, < 0 error. */
int reader_entry_written(evs_store *st, stream *s, evs_id id, uint64_t *rec_size,
                         evs_error *err);
/* The lowest log position an iterator open now may read (UINT64_MAX: none; reader.c R2). */
uint64_t reader_lowest_listed(evs_store *st);
/* verify.c V5: read stream `name` whole (forward, or reverse), as a reader would: *found
 * gets the entries the read handed out, *length the stream's length in the snapshot the read
 * was opened on. */
int reader_read_count(evs_store *st, evs_slice name, bool reverse, uint64_t *length,
                      uint64_t *found, evs_error *err);
/* The positions of the live entries of snap's chain in ID order (*pos malloc'd, n of them)
 * and their record bytes; EVS_ETOOBIG once they pass max_bytes. */
int reader_live_positions(evs_store *st, stream *s, const stream_state *snap, uint64_t max_bytes,
                          uint64_t **pos, size_t *n, uint64_t *bytes, evs_error *err);
/* Commit the index: queue the touched streams' states and the watermark into st->ib
 * (store_index_build), then apply the batch (store_index_flush: at once, on this thread; the
 * writer hands it to the indexer instead, indexer_put). The index lags what readers see by
 * at most EVS_INDEX_COMMIT_NS and one transaction (tombstones: not at all); readers find
 * unindexed entries by walking back from a stream's last entry. */
int store_index_build(evs_store *st, evs_error *err);
int store_index_flush(evs_store *st, evs_error *err);
/* Append s to the segment table (caller holds st->lock for writing once readers exist);
 * -ENOMEM leaves the table as it was. */
int store_add_segment(evs_store *st, segment *s);
/* A tombstone a read-only open met past the index watermark (whose index batch it dropped)? */
bool store_ro_deleted(const evs_store *st, const uint8_t *key); /* an IDX_IDKEY key */
/* Append x to the growing array *v (*n used of *cap); -ENOMEM leaves it as it was. */
int u64_push(uint64_t **v, size_t *n, size_t *cap, uint64_t x);
/* Room for one more element of elem bytes in the growing array *(void **)pv (n used of
 * *cap): first elements at first, then doubling; -ENOMEM leaves it as it was. */
int arr_room(void *pv, size_t n, size_t *cap, size_t elem, size_t first);
int seg_push(segment ***v, size_t *n, size_t *cap, segment *s);

/* ownedir.c: a temporary folder owned by a live process. ownedir_make makes <prefix>XXXXXX
 * with its owner.lock held (fd); ownedir_sweep removes those of <prefix> whose owner is gone
 * (removed() told of each); ownedir_remove removes one and frees path; ownedir_disown drops
 * the lock file (and fd) of one already renamed into place (path: its new name). Negative
 * errno on failure. */
int ownedir_make(const char *prefix, char **path, int *fd);
void ownedir_sweep(const char *prefix, void (*removed)(void *arg, const char *path), void *arg);
void ownedir_remove(char *path, int fd);
void ownedir_disown(const char *path, int fd);
/* privindex.c: the folder of a read-only open's private index, $TMPDIR/evstore-index-XXXXXX,
 * owned while in use (ownedir_remove at close); making one first removes those whose owner
 * died without closing.
 * `why` (the index is unusable because...) goes into error messages. */
int privindex_make(evs_store *st, const char *why, char **path, int *lock_fd, evs_error *err);
/* Indexer: start/stop its thread (stop: after the writer; the batch in its hands is applied
 * first). indexer_put applies st->ib after the batch in the indexer's hands (X1): on this
 * thread if sync (visible on return) or without the thread, else handed over with st->ib
 * replaced by an empty batch. Writer role only (or open, before the threads start). */
int indexer_start(evs_store *st);
void indexer_stop(evs_store *st);
int indexer_put(evs_store *st, bool sync, evs_error *err);
/* Wait until the batch in the indexer's hands (if any) is applied. Writer role only. */
void indexer_wait(evs_store *st);
/* Visibility (visible.c). The writer, once a batch is written and synced: prepare (before
 * taking st->lock: copies the touched streams' states when the batch may be held), then
 * publish under st->lock (true: published now; false: held until the cap reaches `end`),
 * then notify (outside the lock; always, so listeners see the log grow). */
struct held;
int store_visible_prepare(evs_store *st, uint64_t start, uint64_t end, struct held **out);
bool store_visible_publish(evs_store *st, uint64_t end, struct held *h);
void store_notify(evs_store *st, const evs_slice *names, size_t n);
uint64_t store_visible_end(evs_store *st, uint64_t log_end); /* caller holds st->lock */
/* A stream the writer created (or re-created) in a batch the cap holds, by name, or NULL: its
 * consumer groups exist already (they live in the writer's state: group.h). Caller holds
 * st->lock. */
stream *store_visible_held_stream(evs_store *st, const void *name, size_t len);
/* The state of s as of the end of the last batch written: its state in the newest batch the
 * cap holds that touched it, else what readers see (writer; caller holds st->lock). */
const stream_state *store_visible_written(const evs_store *st, const stream *s);
void store_visible_free(struct held *h);

/* Copy writer state to visible state for the streams of the write batch (caller holds st->lock
 * for writing). */
void store_publish_touched(evs_store *st);
stream *store_stream_new(evs_store *st, uint32_t no, const void *name, size_t len);
/* Frees s with its groups, batch list and name (at close, or once reclaimed: S3). */
void store_stream_free(stream *s);
/* The REC_DECLARE_N numbers of a stream-declare record for this state. */
void store_declare_encode(const stream_state *w, uint64_t *v);

/* Segment lookup for readers: the segment holding pos, with a reference. */
segment *store_seg_get(evs_store *st, uint64_t pos);
void store_seg_put(segment *s);
/* Retention deleted s (renamed `.deleted`): its last reference hands the file to the
 * releaser. -ENOMEM: not recorded (the caller releases it at once). */
int store_seg_zombie(evs_store *st, segment *s);

/* Read and verify the record at pos. *ref is a segment reference the caller holds, or NULL:
 * kept when pos lies in that segment, else dropped and replaced by the one holding pos (so a
 * walk takes the segment table's lock once per segment, not per record). Whatever the result,
 * the caller puts *ref when done with it. On success *h, *body (into the mapping, valid while
 * *ref is held) and *size; EVS_ECORRUPT with a message otherwise. */
int store_read_record(evs_store *st, uint64_t pos, const char *stream_name, rec_hdr *h,
                      const uint8_t **body, uint64_t *size, segment **ref, evs_error *err);
/* The same for a record this reader has already checked with store_read_record (the bytes of
 * a record never change while it is in the log): header bounds only, no CRC. */
int store_read_checked(evs_store *st, uint64_t pos, const char *stream_name, rec_hdr *h,
                       const uint8_t **body, uint64_t *size, segment **ref, evs_error *err);

/* Writer primitives for group_exec.c (writer thread only). Records are built with copied
 * bodies; writer_txn_close clears REC_F_TXN_CONT on the batch's last record if it was emitted
 * after `mark` (a request that emits with TXN_CONT throughout closes its group this way). */
#define NEED_FLUSH 1 /* a request must see the batch so far published: flush, then retry */
int writer_emit_copy(evs_store *st, uint8_t kind, uint16_t flags, uint32_t no, evs_id id,
                     uint64_t prev, const uint8_t *body, uint32_t len, evs_error *err);
int writer_stream_create(evs_store *st, evs_slice name, uint16_t flags, stream **out,
                         evs_error *err);
int writer_entry_auto(evs_store *st, stream *s, const uint8_t *body, uint32_t len,
                      uint16_t flags, evs_id *id, evs_error *err);
size_t writer_mark(evs_store *st);
void writer_txn_close(evs_store *st, size_t mark);
/* group_exec.c: run a WR_GROUP request's operations (0, NEED_FLUSH before anything was
 * emitted, or an error; *emitted says whether records were built). */
int group_exec(evs_store *st, wreq *r, bool *emitted, evs_error *err);
void group_results_free(wreq *r);

/* Writer thread */
void *writer_main(void *arg);
/* A new request of n operations; its data buffer is allocated (never NULL). NULL: no memory. */
wreq *wreq_new(enum wreq_kind kind, size_t n);
/* Queue r for the writer, or free it and say why not (the store is closing). */
int writer_submit(evs_store *st, wreq *r, evs_error *err);
/* Whether the store takes writes now: EVS_EREADONLY (opened read-only) or the sticky error. */
int writer_check(evs_store *st, evs_error *err);
void wreq_free(wreq *r);
/* Free the pooled requests (evs_close). */
void wreq_pool_drain(struct evs_store *st);
void store_fail(evs_store *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Retention's writer requests: declare what lies below upto (synchronous, durable, indexed);
 * seal the active segment. */
int writer_declare(evs_store *st, uint64_t upto, size_t *declared, evs_error *err);
int writer_roll(evs_store *st, evs_error *err);
/* Retention: re-append at the log's head the live entries of each stream numbered in nos[]
 * whose first live entry lies below `below` and whose live entries take at most max_bytes
 * of log (one atomic group of REC_F_MOVED copies per stream), all synced and indexed before
 * it returns. *moved: streams copied, *bytes: their bytes. A stream gone, moved already
 * (perhaps not visible yet under a visibility cap) or too big is skipped. */
int writer_relocate(evs_store *st, const uint32_t *nos, size_t n, uint64_t below,
                    uint64_t max_bytes, uint64_t *moved, uint64_t *bytes, evs_error *err);
/* Retention's index clean-up: delete the index keys packed in buf (table u8, key length u16
 * big-endian, key) and commit; a filter group among them still open is closed first, or kept
 * if it holds an entry at or past its stream's first (postings P4). A table byte with
 * IDX_DEL_OLDER set is followed, after the key, by a time (u64 big-endian): that key goes
 * only if its value, when the delete is applied, ends in an older time (idx_batch_del_older). */
#define IDX_DEL_OLDER 0x80
int writer_idx_del(evs_store *st, const uint8_t *buf, size_t len, evs_error *err);

/* Tests only (NULL otherwise): run between a forward read's start-key lookup and its first
 * block's, which use two index read transactions: an index commit can fall between them
 * (reader.c load_block). */
extern void (*reader_start_window)(evs_store *st);

/* Lineage (epoch.c): parse/format EPOCHS; load it at open (a fresh store starts epoch 1);
 * after recovery, move an epoch that starts past the log's end to it; on the writer, begin
 * the next epoch (history written durably first, E1). */
int epochs_parse(const char *buf, size_t len, evs_epoch **out, size_t *n, char *why, size_t cap);
char *epochs_format(const evs_epoch *v, size_t n, size_t *len);
int epochs_load(evs_store *st, bool fresh, evs_error *err);
int epochs_reconcile(evs_store *st, evs_error *err);
int epochs_begin_writer(evs_store *st, evs_epoch *out, evs_error *err);
/* A follower met the leader's REC_EPOCH record: add it to the history (durably, before the
 * record is written: E1); the same epoch again is accepted, a different one with the same or
 * a lower number is divergence (EVS_ECORRUPT). */
int epochs_follow_writer(evs_store *st, const evs_epoch *e, evs_error *err);
/* The writer's cut for a snapshot (synchronous). */
int writer_cut(evs_store *st, snap_cut *out, evs_error *err);
void snap_cut_release(snap_cut *c);
/* A follower told to cut its log at x: request it (TRUNCATE, for the next open), and carry
 * it out at open before the log is read (truncate.c). */
int store_truncate_request(evs_store *st, uint64_t x, evs_error *err);
int store_truncate_pending(evs_store *st, evs_error *err);
/* Where an index the store stops trusting is moved before it is removed (index_recreate) or
 * rebuilt (a cut, truncate.c T3): "<index folder>.untrusted", PATH_MAX bytes. */
static inline void store_untrusted_index(const evs_store *st, char *out)
{
    snprintf(out, PATH_MAX, "%s.untrusted", st->idxdir);
}
/* A swap of staged store into dir that a crash interrupted (SWAP): finish it (swap.c). 0
 * also when there is none. The caller holds dir's LOCK. */
int store_swap_pending(const char *dir, evs_error *err);
/* A cancel flag (evs_backup_options.cancel, evs_restore_options.cancel, evs_options.cancel)
 * is set by a signal handler and read by other threads too (restore's checkers): an atomic
 * load, which the handler's side matches with an atomic store. */
static inline bool evs_cancelled(const volatile int *cancel)
{
    return cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED);
}
/* 0, or EVS_ECLOSED "interrupted" once the flag is set: a backup's or a restore's stop. */
static inline int evs_cancel_check(const volatile int *cancel, evs_error *err)
{
    return evs_cancelled(cancel) ? evs_err_set(err, EVS_ECLOSED, "interrupted") : 0;
}
/* A follower's batch this big whose sync its writer overlaps (writer.c W10) marks a catch-up:
 * the preparer's spares skip the zero-fill meanwhile (preparer.c Z1). */
#define CATCHUP_BATCH_BYTES (1u << 20)
/* Start one of the store's threads under its name (at most 15 characters: docs/architecture.md,
 * Threads), named before this returns; pthread_create's result (0 or an errno). */
static inline int thread_start(pthread_t *t, void *(*fn)(void *), void *arg, const char *name)
{
    int rc = pthread_create(t, NULL, fn, arg);
    if (!rc)
        pthread_setname_np(*t, name); /* only a name: a failure changes nothing else */
    return rc;
}
/* A swap's journal (dir/SWAP, docs/format.md), parsed: the staged folder, the folder the old
 * store goes to, and the new store's entries. */
#define SWAP_MAX_ENTRIES 64
#define SWAP_NAME_MAX 255
typedef struct swap_plan {
    char fresh[SWAP_NAME_MAX + 1], aside[SWAP_NAME_MAX + 1];
    size_t n;
    char names[SWAP_MAX_ENTRIES][SWAP_NAME_MAX + 1];
} swap_plan;
/* 0, or -1 if text is not a whole journal evstore writes (exact lines, plain names). */
int swap_journal_parse(const char *text, size_t len, swap_plan *p);
/* Promotion: the store leads from now on (removes FOLLOWING, store.c). */
int store_following_unmark(evs_store *st);
/* The machine's boot ID (checkpoint rule). */
int store_boot_id(char *out, size_t cap);

/* Retention: start/stop its thread (retention.c). */
int ret_start(evs_store *st);
void ret_stop(evs_store *st);

/* Preparer: start/stop its thread. The next segment's space, reserved (the spare, or a file
 * made now) and named by *tmpname; then installed at `base`; or both at once. */
int prep_start(evs_store *st);
void prep_stop(evs_store *st);
int prep_reserve(evs_store *st, bool freeing, const char **tmpname, evs_error *err);
/* The space reserve (preparer.c P2, P3): "log/reserve.seg.tmp", made when missing (writer, or
 * open before the writer starts). */
#define PREP_RESERVE "reserve.seg.tmp"
int prep_make_reserve(evs_store *st, evs_error *err);
int prep_install(evs_store *st, const char *tmpname, uint64_t base, segment **out,
                 evs_error *err);
int prep_new_segment(evs_store *st, uint64_t base, segment **out, evs_error *err);
/* A deferred roll (D1): install the reserved file as the pending segment at `base` after
 * `prev`, whose seal is written but not synced; the preparer syncs prev, then names the new
 * one. prep_rolls_settle waits until every deferred roll is done (or the store failed). */
int prep_install_deferred(evs_store *st, const char *tmpname, uint64_t base, segment *prev,
                          segment **out, evs_error *err);
void prep_rolls_settle(evs_store *st);
/* Wait until segment s has its segment name (its roll job done), or the store failed. */
void prep_wait_named(evs_store *st, segment *s);
/* Queue the roll job of segment seg (named "<name>.pending") behind prev (D2); at open. */
void prep_queue_roll(evs_store *st, segment *prev, segment *seg);
/* Free roll jobs no preparer will run (an open that failed before starting it). */
void prep_drop_rolls(evs_store *st);

/* Syncer (syncer.c, writer.c W10): start its thread on first use (0, or -errno: the writer
 * then syncs itself); hand it the sync of segment s, whose batch ends at log position `end`;
 * wait for that sync (its result; a failure has failed the store already); stop it. */
int syncer_ensure(evs_store *st);
void syncer_submit(evs_store *st, segment *s, uint64_t end);
int syncer_wait(evs_store *st);
void syncer_stop(evs_store *st);
/* fdatasync fd, counted in the store's fsync statistics (any thread). */
int store_fdatasync_timed(evs_store *st, int fd);
/* visible.c: the sync cap (W10): batches ending past it are held like those past the
 * visibility cap; EVS_CAP_NONE lifts it. Writer only. */
void store_visible_sync_cap(evs_store *st, uint64_t cap);

/* Releaser: start/stop its thread (stop drops the queued jobs: their files wait for the next
 * open, releaser.c L3, L4). Queue the cut of sealed
 * segment a's file to len bytes (writer, after a seal), or the deletion of a segment file
 * retention renamed to `path` (R3). Done at once, unpaced, when the thread is not running. */
int rel_start(evs_store *st);
void rel_stop(evs_store *st);
void rel_cut(evs_store *st, segment *a, uint64_t len);
void rel_delete(evs_store *st, const char *path);

#define EVS_SEAL_RESERVE 128 /* room kept at a segment's end for its seal record */

/* Open the active segment for appending (or create the first / next one). Writer or open.
 * `freeing`: the roll of a request that frees space, which may take the reserve (P2). */
int store_roll(evs_store *st, bool freeing, evs_error *err);

#endif
