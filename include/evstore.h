/*
 * evstore.h — the embedded C API of evstore.
 *
 * A store is a folder holding one append-only log (segment files of CRC-checked records, see
 * docs/format.md) and an LMDB index. Streams are named, append-only sequences of entries with
 * Redis-style IDs <ms>-<seq>; each entry is an ordered list of binary-safe field/value pairs.
 *
 * Conventions (LMDB- and libuv-style):
 *  - Functions return 0 on success, a negative errno for a system failure, or one of the EVS_E*
 *    codes below. evs_strerror() names any of them. Where an `evs_error *` is taken (it may be
 *    NULL), it receives the code and a message naming the stream, file and offset involved.
 *  - Threads: one evs_store may be used from any number of threads at once, for appends and
 *    reads alike. An evs_iter belongs to one thread at a time.
 *  - Ownership: every pointer the store hands out says how long it stays valid. Inputs are never
 *    retained after the call returns (evs_submit copies what it needs).
 */
#ifndef EVSTORE_H
#define EVSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ------------------------------------------------------------------------------ */

enum {
    EVS_ECORRUPT = -30001,  /* bytes on disk fail validation (bad CRC, bad bounds, bad body)  */
    EVS_ENOTFOUND = -30002, /* no such stream                                                 */
    EVS_EIDORDER = -30003,  /* explicit ID is equal or smaller than the stream's last ID      */
    EVS_EINVAL = -30004,    /* an argument is malformed (bad ID, empty field list, ...)       */
    EVS_EFAILED = -30005,   /* the store hit a write/fsync error earlier: appends refused     */
    EVS_ELOCKED = -30006,   /* the data folder is held by another process                     */
    EVS_ETOOBIG = -30007,   /* entry, name or batch over a limit                              */
    EVS_ECLOSED = -30008,   /* the store is closing                                           */
    EVS_EFORMAT = -30009,   /* data folder written by an unsupported format version           */
    EVS_EIDZERO = -30010,   /* explicit ID 0-0 is not allowed                                 */
    EVS_EIDEXHAUSTED = -30011, /* the stream's ID space is exhausted (last ID is max)          */
    EVS_EREADONLY = -30012, /* the store was opened read-only                                 */
    EVS_ECHANGED = -30013,  /* a watched stream changed (evs_submit_watched): nothing appended */
    EVS_ENOGROUP = -30014,  /* no such consumer group on the stream                           */
    EVS_EEXIST = -30015,    /* already exists: a consumer group; a restore target not empty   */
    EVS_ENOSPACE = -30016,  /* the disk is full (no room for the next segment, the request's
                             * blocks, the space reserve or the index's headroom: docs/
                             * architecture.md I2a): nothing written, the store stays
                             * writable; the same request succeeds once space is freed        */
};

/* The text for any code this API returns (EVS_E*, negative errno, 0). Static storage. */
const char *evs_strerror(int code);

typedef struct evs_error {
    int code;
    char msg[512];
} evs_error;

/* CLOCK_MONOTONIC in nanoseconds: the clock of every duration the store and its tools measure. */
uint64_t evs_mono_ns(void);

/* ---- basic types ------------------------------------------------------------------------- */

/* A stream entry ID, ordered by (ms, seq). */
typedef struct evs_id {
    uint64_t ms;
    uint64_t seq;
} evs_id;

#define EVS_ID_MIN ((evs_id){0, 0})
#define EVS_ID_MAX ((evs_id){UINT64_MAX, UINT64_MAX})
#define EVS_ID_STRLEN 42 /* "<20 digits>-<20 digits>" + NUL */

int evs_id_cmp(evs_id a, evs_id b);
/* Parse "<ms>-<seq>" or "<ms>" (seq = missing_seq). Returns 0 or EVS_EINVAL. */
int evs_id_parse(const void *s, size_t len, uint64_t missing_seq, evs_id *out);
/* Write "<ms>-<seq>" into buf (at least EVS_ID_STRLEN bytes); returns the length. */
size_t evs_id_format(evs_id id, char *buf);
/* Write v in decimal into buf (at least 20 bytes), with no NUL; returns the length. */
size_t evs_u64_format(uint64_t v, char *buf);
/* Step to the next / previous possible ID; false (id unchanged) at the end of the ID space. */
bool evs_id_next(evs_id *id);
bool evs_id_prev(evs_id *id);

/* A byte range owned by someone else; never NUL-terminated by contract. */
typedef struct evs_slice {
    const void *ptr;
    size_t len;
} evs_slice;

typedef struct evs_field {
    evs_slice name;
    evs_slice value;
} evs_field;

/* ---- opening and closing ----------------------------------------------------------------- */

typedef enum evs_fsync_mode {
    EVS_FSYNC_ALWAYS = 0,   /* acknowledge after fdatasync of the batch (default)          */
    EVS_FSYNC_EVERYSEC = 1, /* acknowledge when written; fdatasync at least once a second   */
    EVS_FSYNC_NO = 2,       /* the OS decides: unsafe, for benchmarks and scratch data      */
} evs_fsync_mode;

enum { EVS_LOG_ERROR = 0, EVS_LOG_WARN = 1, EVS_LOG_INFO = 2, EVS_LOG_DEBUG = 3 };

struct evs_io; /* storage/fileio.h: the file-I/O layer, swappable by tests for fault injection */

/* Retention limits. In a stream's own limits 0 means "the store's default"; in the store's
 * default 0 means no limit. EVS_RET_NONE means no limit in both. */
#define EVS_RET_NONE UINT64_MAX
typedef struct evs_retention {
    uint64_t max_age_ms;   /* entries appended longer ago go (append time clamped to now)     */
    uint64_t max_bytes;    /* oldest entries go while the stream's entry records exceed this  */
    uint64_t max_entries;  /* oldest entries go beyond this many                              */
} evs_retention;

typedef struct evs_options {
    evs_fsync_mode fsync;
    uint64_t segment_bytes;     /* roll the active segment at this size; default 64 MiB        */
    uint64_t max_entry_bytes;   /* largest encoded entry body accepted; default 64 MiB         */
    uint64_t index_map_bytes;   /* initial LMDB map size; grows by doubling; default 256 MiB   */
    bool read_only;             /* no recovery writes, no appends (verify, dump); writes nothing
                                   to the folder: an index it cannot use (after a reboot,
                                   missing, damaged) is rebuilt for this open in a private
                                   folder under $TMPDIR, removed by evs_close (or, if the
                                   process dies first, by the next such open). Works on
                                   a folder this process may only read (format.md)        */
    /* Log sink for recovery notes and errors; NULL logs nothing. Called from any thread. */
    void (*log)(void *arg, int level, const char *msg);
    void *log_arg;
    const struct evs_io *io;    /* NULL: the real file system. Tests only.                     */
    evs_retention retention;    /* every stream's default limits (0: none)                     */
    uint32_t retention_interval_ms; /* how often the retention thread runs; 0: 1000            */
    bool replica;               /* a follower: its log is the leader's (evs_replica_submit);
                                   local writes are refused (EVS_EREADONLY), no retention     */
    const volatile int *cancel; /* set non-zero (a signal handler) to stop a long recovery:
                                   evs_open returns EVS_ECLOSED ("interrupted") within one
                                   segment scanned, the folder as a crash at that point
                                   would leave it; the next open recovers anew.
                                   NULL: never                                              */
} evs_options;

void evs_options_init(evs_options *opt);

typedef struct evs_store evs_store;

/*
 * Open (creating if needed) the store in folder `dir`. Takes an exclusive lock on the folder
 * (EVS_ELOCKED if another process holds it), recovers the log tail (a torn tail is cut and kept
 * in a `.torn` file, logged), repairs or rebuilds the index as needed, and starts the writer
 * thread. `opt` may be NULL for defaults. On success *out owns the store until evs_close().
 * A writable open marks the folder RUNNING until a clean evs_close(). Opened to lead (not
 * `replica`) after following, the store begins a new epoch before it returns; after a run
 * that did not close cleanly, before the first record it writes, so the open itself syncs
 * nothing (docs/replication.md, "Promotion and fencing"). Besides its other errors
 * (EVS_ELOCKED, EVS_ECORRUPT, -errno), EVS_ECLOSED when `opt->cancel` stopped the recovery.
 */
int evs_open(const char *dir, const evs_options *opt, evs_store **out, evs_error *err);
/* Was the store in folder dir last opened as a follower (`replica`; it has not led since)?
 * A tool that opens a folder without choosing its role (an offline backup) opens a
 * follower's as a follower, so that the open begins no epoch of its own: the follower, when
 * it runs again, would have to cut it. Needs no open store; false if dir holds none. */
bool evs_store_follows(const char *dir);

/* Finish queued appends, sync everything, stop the writer and free the store. Returns the
 * store's sticky error, or the final checkpoint's, if any (the store is freed either way);
 * RUNNING stays then, and while an unclean stop's epoch is still due. Every iterator, snapshot and lent file (evs_snapshot_release,
 * evs_log_release) must be closed or released before. */
int evs_close(evs_store *st);

/* The sticky write error (0 if none); once set, every append fails with EVS_EFAILED. */
int evs_failed(evs_store *st, evs_error *err);

/* ---- appending --------------------------------------------------------------------------- */

typedef enum evs_id_mode {
    EVS_ID_AUTO = 0,     /* "*": generated from the clock, greater than the last ID        */
    EVS_ID_EXPLICIT = 1, /* "<ms>-<seq>": must be greater than the last ID                  */
    EVS_ID_AUTO_SEQ = 2, /* "<ms>-*": ms given, seq generated                               */
} evs_id_mode;

typedef struct evs_append {
    evs_slice stream;
    evs_id_mode id_mode;
    evs_id id;               /* read for EXPLICIT (both) and AUTO_SEQ (ms only)               */
    const evs_field *fields; /* at least one field                                            */
    size_t nfields;
    bool no_create;          /* fail with EVS_ENOTFOUND instead of creating the stream        */
} evs_append;

/*
 * Completion of an asynchronous submission, called exactly once on the writer thread (or on
 * the caller of evs_submit_release_inline that ran the batch), after the batch's durability
 * mode is satisfied (or it failed). `ids` holds one ID per request,
 * valid only during the call. On failure rc < 0, `err` says why, and nothing was appended.
 * Must not call back into the store's append functions (it may read).
 */
typedef void (*evs_done_fn)(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err);

/*
 * Append `n` requests atomically (all or none, in order, contiguous in the log) and call
 * `done` when durable. The request data is copied before return. Returns 0 if queued (then
 * `done` will be called), or an error with *err saying why (then it will not): EVS_ETOOBIG
 * (a stream name above EVS_STREAM_NAME_MAX bytes, an entry above the store's max_entry_bytes
 * encoded), EVS_EINVAL, EVS_EREADONLY, EVS_EFAILED (the sticky write error), EVS_ECLOSED,
 * -ENOMEM. err may be NULL; so may it in every evs_submit_* below, which fail the same ways.
 */
#define EVS_STREAM_NAME_MAX 400 /* bytes: stream names are LMDB keys, at most 511 bytes */
int evs_submit(evs_store *st, const evs_append *reqs, size_t n, evs_done_fn done, void *arg,
               evs_error *err);

/*
 * Group several asynchronous submissions into one group commit: between evs_submit_hold and
 * evs_submit_release the writer is not woken for new requests (it still takes them if it is
 * already awake); the release wakes it once for all of them. A server holds while it runs the
 * commands of one network read (a pipeline), so they share one fdatasync, as Redis'
 * appendfsync always does. Holds nest and may come from several threads; keep them short.
 * The synchronous calls (evs_append_one, ...) wake the writer themselves.
 */
void evs_submit_hold(evs_store *st);
void evs_submit_release(evs_store *st);

/*
 * evs_submit_release, and if that ends the last hold while the writer thread is idle, do the
 * writer's work for everything queued on the calling thread instead of waking it: write,
 * sync, publish, and run the requests' callbacks, all before this returns. This saves two
 * thread hand-offs per commit (the wake-up of the writer, and of the caller by a callback):
 * it is how a server loop does what Redis does, one fdatasync per loop turn on the loop
 * itself. Only for a caller whose callbacks may run on its own thread and who can afford to
 * block for the sync; when the writer thread is busy, it wakes it as evs_submit_release does.
 */
void evs_submit_release_inline(evs_store *st);

/*
 * Wake the writer now for whatever is queued, holds or not. A thread that submits
 * asynchronously and then waits for its own completion must call it before it waits: under
 * a hold (its own or another thread's) nothing else may wake the writer, and a writer with
 * nothing due sleeps until woken. The synchronous calls do this themselves.
 */
void evs_submit_wake(evs_store *st);

/*
 * The same, under an idempotency key (1 to EVS_IDEM_KEY_MAX bytes): all requests must be for
 * one stream; a record of the key and the IDs is appended in the same atomic group, so it is
 * durable exactly when the entries are. evs_idem_get finds it, across restarts, for
 * EVS_IDEM_WINDOW_US after its publish; after that the key leaves the index (retention's
 * pass, each second), so the index does not grow with every key ever used.
 */
#define EVS_IDEM_KEY_MAX 256
#define EVS_IDEM_WINDOW_US (10ull * 60 * 1000000) /* 10 minutes */
int evs_submit_keyed(evs_store *st, const evs_append *reqs, size_t n, evs_slice key,
                     evs_done_fn done, void *arg, evs_error *err);
/* 1 with the first and last ID and the count of the entries published under key on stream
 * within the last window_us (at most EVS_IDEM_WINDOW_US: a longer one counts as that), 0 if
 * none (or expired), < 0 on error. */
int evs_idem_get(evs_store *st, evs_slice stream, evs_slice key, uint64_t window_us,
                 evs_id *first, evs_id *last, size_t *count);

/* Trimming (XTRIM, XADD MAXLEN/MINID): entries below a stream's new first ID are gone for
 * every read at once (a trim record in the log); space returns with retention. */
typedef enum evs_trim_kind {
    EVS_TRIM_MAXLEN = 1,
    EVS_TRIM_MINID = 2,
    EVS_TRIM_MAXBYTES = 3, /* oldest entries go while its live entries' record bytes exceed
                              maxbytes */
} evs_trim_kind;
typedef struct evs_trim {
    evs_trim_kind kind;
    bool approx;     /* "~": act only once at least EVS_TRIM_APPROX_STEP entries would go */
    uint64_t maxlen; /* MAXLEN: keep at most this many entries                               */
    evs_id minid;    /* MINID: drop entries below this ID                                    */
    uint64_t limit;  /* approx only: remove at most this many (0: no limit)                  */
    uint64_t maxbytes; /* MAXBYTES: keep at most this many bytes of entry records           */
} evs_trim;
#define EVS_TRIM_APPROX_STEP 100

/* Append like evs_submit (all requests for one stream) and trim that stream in the same
 * atomic group. */
int evs_submit_trim(evs_store *st, const evs_append *reqs, size_t n, const evs_trim *trim,
                    evs_done_fn done, void *arg, evs_error *err);
/* Trim a stream now (synchronous); *removed gets how many entries went. */
int evs_trim_stream(evs_store *st, evs_slice stream, const evs_trim *trim, uint64_t *removed,
                    evs_error *err);

/*
 * XSETID: set a stream's last ID (and optionally its entries-added counter and max deleted
 * ID; a zero max_deleted leaves it unchanged). EVS_ENOTFOUND if the stream does not exist;
 * EVS_EIDORDER if last_id is below the last entry; EVS_EINVAL (with Redis's reason) if
 * last_id is below max_deleted (given or current) or the trim point, or entries_added is
 * below the length. Synchronous: returns when durable.
 */
int evs_stream_setid(evs_store *st, evs_slice stream, evs_id last_id,
                     const uint64_t *entries_added, const evs_id *max_deleted, evs_error *err);

/*
 * Optimistic concurrency (Redis WATCH). A stream's version changes with every record that
 * touches it (entry, tombstone, trim, set-ID, drop, re-create); {0, 0} means "no such stream".
 * Versions compare equal only within one open of the store. evs_stream_version reads what
 * readers see. evs_submit_watched is evs_submit (trim NULL) or evs_submit_trim, refused with
 * EVS_ECHANGED, nothing appended, when the writer reaches the batch and any watched stream's
 * version (counting every write queued before this one) differs from the one given.
 */
typedef struct evs_version {
    uint64_t stream;  /* stream number + 1; 0: absent */
    uint64_t changes;
} evs_version;

typedef struct evs_watch {
    evs_slice stream;
    evs_version version;
} evs_watch;

static inline bool evs_version_eq(evs_version a, evs_version b)
{
    return a.stream == b.stream && a.changes == b.changes;
}

void evs_stream_version(evs_store *st, evs_slice stream, evs_version *out);
int evs_submit_watched(evs_store *st, const evs_append *reqs, size_t n, const evs_trim *trim,
                       const evs_watch *watch, size_t nwatch, evs_done_fn done, void *arg,
                       evs_error *err);

/*
 * As evs_submit_watched without a trim, but each request is checked on its own, as Redis runs
 * the XADDs of an EXEC: one the writer refuses for its ID or its stream (EVS_EIDORDER,
 * EVS_EIDZERO, EVS_EIDEXHAUSTED; EVS_ENOTFOUND under no_create, unless an earlier request of
 * the batch creates the stream) gets that code in rcs[i], ID 0-0, and appends nothing; the
 * others are appended as one atomic group, in order (all or none after a crash; nothing at
 * all if every one is refused). `done` gets rc 0 with rcs and ids (n of each, valid during
 * the call), or rc < 0 (EVS_ECHANGED, EVS_EFAILED, ...) when the whole batch failed.
 */
typedef void (*evs_each_fn)(void *arg, int rc, const int *rcs, const evs_id *ids, size_t n,
                            const evs_error *err);
int evs_submit_each(evs_store *st, const evs_append *reqs, size_t n, const evs_watch *watch,
                    size_t nwatch, evs_each_fn done, void *arg, evs_error *err);

/* Synchronous forms: return when durable. out_ids (n of them) may be NULL. */
int evs_append_batch(evs_store *st, const evs_append *reqs, size_t n, evs_id *out_ids,
                     evs_error *err);
int evs_append_one(evs_store *st, const evs_append *req, evs_id *out_id, evs_error *err);

/* Mark entries deleted (a tombstone record each; space returns with retention). *deleted gets
 * the number of IDs that existed and were not already deleted. Synchronous. */
int evs_delete(evs_store *st, evs_slice stream, const evs_id *ids, size_t n, size_t *deleted,
               evs_error *err);

/* Delete a whole stream (its name becomes free for a new stream). *existed is set. */
int evs_stream_drop(evs_store *st, evs_slice stream, bool *existed, evs_error *err);
/* Delete n streams in one request of the writer, so one commit (one fsync) for all; *dropped
 * gets how many existed (a name given twice counts once). Each drop is its own record: after
 * a crash before the return, some may be done and others not, as with n calls. */
int evs_streams_drop(evs_store *st, const evs_slice *streams, size_t n, size_t *dropped,
                     evs_error *err);

/* ---- reading ----------------------------------------------------------------------------- */

typedef struct evs_entry {
    evs_id id;
    uint64_t time_us;        /* append time, microseconds since the Unix epoch                */
    const evs_field *fields; /* valid until the next evs_iter_next() or evs_iter_close()      */
    size_t nfields;
} evs_entry;

typedef struct evs_query {
    evs_id start;            /* inclusive lower bound (EVS_ID_MIN)                            */
    evs_id end;              /* inclusive upper bound (EVS_ID_MAX)                            */
    bool start_exclusive;
    bool end_exclusive;
    bool reverse;            /* newest first                                                  */
    uint64_t limit;          /* 0: no limit                                                   */
    evs_slice source;        /* ptr != NULL: only entries whose `source` field equals this    */
    evs_slice type;          /* ptr != NULL: only entries whose `type` field equals this      */
    uint64_t min_time_us;    /* only entries appended at or after this time (0: any)          */
} evs_query;

void evs_query_init(evs_query *q);

typedef struct evs_iter evs_iter;

/* Open an iterator over one stream. EVS_ENOTFOUND if the stream does not exist. The iterator
 * sees the entries visible when it was opened, all of them even if a trim removes them
 * meanwhile: until it is closed, retention deletes no segment it may read (so close it
 * promptly; one left open holds disk space). */
int evs_iter_open(evs_store *st, evs_slice stream, const evs_query *q, evs_iter **out,
                  evs_error *err);
/* 1: *out is the next entry (valid until the next call or close); 0: end; < 0: error (a
 * corrupt record gives EVS_ECORRUPT with the stream, file, offset and ID in err). */
int evs_iter_next(evs_iter *it, const evs_entry **out, evs_error *err);
void evs_iter_close(evs_iter *it);

/* ---- streams ----------------------------------------------------------------------------- */

typedef struct evs_stream_info {
    uint64_t length;         /* live entries (appended, not deleted or trimmed)               */
    uint64_t entries_added;  /* all entries ever appended                                     */
    evs_id first_id;         /* first live entry (0-0 when empty)                             */
    evs_id last_id;          /* last ID ever generated (survives deletion of that entry)      */
    evs_id max_deleted_id;
    uint64_t last_time_us;
    uint64_t created_us;
    uint64_t number;         /* stable and unique in this store; a dropped stream's is never
                                reused (orders SCAN-like walks that tolerate concurrent drops) */
} evs_stream_info;

/* EVS_ENOTFOUND if the stream does not exist. */
int evs_stream_info_get(evs_store *st, evs_slice stream, evs_stream_info *out);

/* Call fn for each stream in name order (bytewise). fn's pointers are valid during the call.
 * Returning non-zero from fn stops the walk and is returned. */
int evs_stream_list(evs_store *st, int (*fn)(void *arg, evs_slice name, const evs_stream_info *),
                    void *arg);

/* A walk in steps (SCAN): fn for the (at most) `count` streams numbered `from` or above, in
 * number order; *next gets the number of the stream after them, 0 when there is none. A
 * stream that exists for the whole walk is met exactly once. Each step costs one pass over
 * the streams' table without copying it (not a sort of every name). Returns as
 * evs_stream_list. */
int evs_stream_scan(evs_store *st, uint64_t from, size_t count,
                    int (*fn)(void *arg, evs_slice name, const evs_stream_info *), void *arg,
                    uint64_t *next);

/* Histogram bounds (upper, inclusive) of evs_store_stats' fsync and batch histograms; the last
 * bucket counts everything above the last bound. */
#define EVS_FSYNC_BUCKETS 14
#define EVS_FSYNC_BOUNDS_US                                                                     \
    {50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000}
#define EVS_BATCH_BUCKETS 12
#define EVS_BATCH_BOUNDS {1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096}

typedef struct evs_store_stats {
    uint64_t streams;
    uint64_t segments;
    uint64_t log_bytes;      /* bytes of records in all segments                               */
    uint64_t log_end;        /* log position after the last record readers see (ROLE offset)   */
    uint64_t appends;        /* entries appended since open                                    */
    uint64_t batches;        /* group commits since open                                       */
    uint64_t fsyncs;
    uint64_t fsync_ns_total; /* time spent in fdatasync since open                             */
    uint64_t fsync_ns_max;
    uint64_t batch_max;      /* largest batch (records) since open                             */
    uint64_t batch_records_total; /* records in all batches since open                         */
    uint64_t recovered_records; /* records re-indexed from the tail on open                    */
    uint64_t torn_bytes;     /* bytes cut from a torn tail on open                             */
    uint64_t set_aside_files; /* files in log/ of bytes cut from the log and kept (*.torn, a
                                 follower's *.diverged), as of open: never read or removed by
                                 evstore (docs/format.md)                                      */
    uint64_t set_aside_bytes; /* their bytes                                                   */
    uint64_t records_read;   /* records read and CRC-checked by iterators since open           */
    uint64_t fsync_hist[EVS_FSYNC_BUCKETS]; /* fdatasyncs per latency bucket (not cumulative)  */
    uint64_t batch_hist[EVS_BATCH_BUCKETS]; /* group commits per size bucket (records)         */
    uint64_t retention_trimmed;  /* entries trimmed by retention since open                     */
    uint64_t segments_deleted;   /* segment files retention deleted since open                  */
    uint64_t bytes_deleted;      /* their bytes                                                 */
    uint64_t streams_relocated;  /* relocations retention made since open (evs_retention_report) */
    uint64_t bytes_relocated;    /* bytes they copied                                           */
    uint64_t log_start;          /* position of the oldest byte still on disk                   */
    uint32_t epoch;              /* the current epoch (evs_epochs)                              */
    uint64_t synced_end;         /* log position up to which the log is known durable           */
    uint64_t index_end;          /* log position up to which the index is applied (readers walk
                                    the log past it: the index lags by design, docs/architecture.md
                                    "Threads", the indexer)                                     */
    uint64_t index_deferred;     /* index commits that fell due while the indexer was busy      */
    uint64_t visible_end;        /* log position up to which readers see: log_end unless the
                                    visibility cap holds batches (evs_set_visible_cap)          */
    uint64_t fsyncs_overlapped;  /* of fsyncs: a follower's batches synced while the writer
                                    wrote the next (more frames waiting: a catch-up)            */
    uint64_t streams_dropped_held; /* dropped streams whose memory is not freed yet: until the
                                    index commit after the drop, and while an iterator's open,
                                    a listing or a batch held by the visibility cap uses them  */
} evs_store_stats;

void evs_store_stats_get(evs_store *st, evs_store_stats *out);

/* ---- waiting for new entries ------------------------------------------------------------- */

/* Block until `stream` has an entry with ID > after, or timeout_ms passes (< 0: forever).
 * Returns 1 when there is such an entry, 0 on timeout, < 0 on error (EVS_ECLOSED on close). */
int evs_wait(evs_store *st, evs_slice stream, evs_id after, int64_t timeout_ms);

/* Register a hook called after each write batch is written (and synced as the fsync mode
 * requires), with the names of the streams whose new state it made visible (valid during the
 * call; n = 0 when the visibility cap holds the batch: the log grew, readers see nothing new
 * yet), on the writer thread (or an evs_submit_release_inline caller); and on the thread of
 * an evs_set_visible_cap call that releases held batches, with their streams. One hook per
 * store; NULL removes. */
typedef void (*evs_visible_fn)(void *arg, const evs_slice *streams, size_t n);
void evs_set_visible_hook(evs_store *st, evs_visible_fn fn, void *arg);

/* Register a hook called on the writer thread once a write batch is written to the log and a
 * sync of it is to follow (under --fsync always: every batch), before that sync: the batch's
 * bytes can be read with evs_log_span from then on, so a leader ships them while it syncs
 * them. One hook per store; NULL removes. It must not block. */
typedef void (*evs_written_fn)(void *arg);
void evs_set_written_hook(evs_store *st, evs_written_fn fn, void *arg);

/* The visibility cap: a leader whose writes are acknowledged only once followers hold them
 * (evstore serve --ack all) lets readers see only what the followers hold; a follower, only
 * what its leader's readers see. With a cap set, a batch whose log end lies past it is
 * written, synced and completed (its callbacks run) as usual, and sent to followers
 * (evs_log_span), but readers — iterators, evs_wait, stream lists and lengths, the hook's
 * stream names — see it only once the cap reaches its end, in log order (later batches wait
 * behind it). Raising the cap publishes the batches it now
 * covers before the call returns, so a reply sent after it is followed by reads that see
 * them. EVS_CAP_NONE (the default at open) lifts the cap; a cap set below the log's end
 * holds only batches written after the call (what is visible stays visible). The cap lives
 * in memory: a store opens with everything it recovered visible. evs_store_stats.visible_end
 * is the log position up to which readers see. */
#define EVS_CAP_NONE UINT64_MAX
void evs_set_visible_cap(evs_store *st, uint64_t cap);

/* ---- consumer groups -------------------------------------------------------------------- */

/*
 * Redis consumer groups, durable: every change of a group's state (creation, each delivery,
 * ack, claim, dead-lettering) is a record in the log, group-committed and acknowledged with the
 * same fsync mode as entries, and checkpointed in the index (pending entries included) so an
 * open never re-reads the log for them. A group belongs to its stream: dropping the stream
 * drops its groups.
 *
 * Dead letters: a group with max_deliveries n > 0 never delivers an entry an (n+1)th time
 * (XREADGROUP of history, XCLAIM, XAUTOCLAIM); instead the entry's fields plus dlq-source-key,
 * dlq-source-id, dlq-group and dlq-deliveries are appended to its dead-letter stream and the
 * entry is acknowledged, in one atomic group: one copy, even across a crash.
 */
typedef enum evs_group_cmd {
    EVS_GROUP_CREATE = 1,         /* id / id_is_last, mkstream, entries_read, max_deliveries, dlq */
    EVS_GROUP_DESTROY = 2,        /* result.count: 1 if it existed                             */
    EVS_GROUP_SETID = 3,          /* id / id_is_last, entries_read                             */
    EVS_GROUP_SETDLQ = 4,         /* max_deliveries, dlq                                       */
    EVS_GROUP_CREATECONSUMER = 5, /* result.count: 1 if created                                */
    EVS_GROUP_DELCONSUMER = 6,    /* result.count: the pending entries it had                  */
    EVS_GROUP_READ = 7,           /* new_only (">") or history after id; count, noack          */
    EVS_GROUP_ACK = 8,            /* ids; result.count: how many were pending                  */
    EVS_GROUP_CLAIM = 9,          /* ids, min_idle_ms, idle/time, retrycount, force, lastid     */
    EVS_GROUP_AUTOCLAIM = 10,     /* id (start), count, min_idle_ms                            */
} evs_group_cmd;

#define EVS_ENTRIES_READ_NONE UINT64_MAX /* a group's entries-read counter is unknown */
#define EVS_GROUP_NAME_MAX 256            /* group and consumer names, bytes              */

typedef struct evs_group_op {
    evs_group_cmd cmd;
    evs_slice stream, group, consumer;
    evs_id id;                /* CREATE/SETID: the last-delivered ID; READ (history): entries
                                 after this; AUTOCLAIM: the start                            */
    bool id_is_last;          /* CREATE/SETID: "$", the stream's last ID                     */
    bool mkstream;            /* CREATE: create the stream if it does not exist             */
    uint64_t entries_read;    /* CREATE/SETID: EVS_ENTRIES_READ_NONE when not given          */
    uint64_t max_deliveries;  /* CREATE/SETDLQ: 0 never dead-letters                         */
    evs_slice dlq;            /* CREATE/SETDLQ: dead-letter stream; ptr NULL: "<stream>:dlq"
                                 (when that is over EVS_STREAM_NAME_MAX bytes: none, and a
                                 max_deliveries > 0 without a dlq is refused, EVS_EINVAL)   */
    bool new_only;            /* READ: ">" (never-delivered entries)                         */
    bool noack;               /* READ: deliver without adding to the pending list           */
    uint64_t count;           /* READ (0: no limit), AUTOCLAIM (at least 1)                  */
    uint64_t max_bytes;       /* READ, AUTOCLAIM: deliver no more once the entries would
                                 pass this many bytes, counting each one's names and values
                                 and EVS_ENTRY_FRAMING for its framing in a reply (a deleted
                                 entry read from the pending list: the framing alone; at
                                 least one entry is delivered; 0: no limit). Fewer than count
                                 is a valid answer: XREADGROUP's COUNT is an upper bound, and
                                 AUTOCLAIM's cursor then names the first entry not taken.
                                 CLAIM, whose IDs are the caller's: EVS_ETOOBIG, before
                                 anything is claimed. Dead-lettered and JUSTID entries are
                                 not counted                                                 */
    const evs_id *ids;        /* ACK, CLAIM                                                  */
    size_t nids;
    uint64_t min_idle_ms;     /* CLAIM, AUTOCLAIM                                            */
    int64_t set_idle_ms;      /* CLAIM IDLE (-1: not given)                                  */
    int64_t set_time_ms;      /* CLAIM TIME (-1: not given)                                  */
    int64_t retrycount;       /* CLAIM RETRYCOUNT (-1: not given)                            */
    bool force;               /* CLAIM FORCE                                                 */
    bool justid;              /* CLAIM/AUTOCLAIM JUSTID: no delivery count increment         */
    bool has_lastid;          /* CLAIM LASTID                                                */
    evs_id lastid;
} evs_group_op;

/* The bytes max_bytes counts for an entry of n fields beyond its names and values: a reply's
 * framing of it (ID, headers), so that many tiny entries are bounded too. */
#define EVS_ENTRY_FRAMING(n) (48u + 16u * (n))

/* The bytes of an entry's names and values. */
static inline uint64_t evs_entry_bytes(const evs_entry *e)
{
    uint64_t n = 0;
    for (size_t i = 0; i < e->nfields; i++)
        n += e->fields[i].name.len + e->fields[i].value.len;
    return n;
}

void evs_group_op_init(evs_group_op *op, evs_group_cmd cmd);

typedef struct evs_group_result {
    uint64_t count;       /* see evs_group_cmd                                               */
    const evs_id *ids;    /* READ/CLAIM/AUTOCLAIM: the entries delivered, in order; a history
                             read lists pending entries even if deleted since               */
    size_t nids;
    evs_id next;          /* AUTOCLAIM: the cursor for the next call (0-0: done)             */
    const evs_id *deleted; /* AUTOCLAIM (and CLAIM): pending entries found deleted, dropped  */
    size_t ndeleted;
    uint64_t dead_lettered; /* entries moved to the dead-letter stream by this operation     */
} evs_group_result;

/* Called once on the writer thread (or an evs_submit_release_inline caller) when the
 * operations are durable (or failed: rc < 0, err says why; for a refused operation nothing
 * was written). res[i] is op i's, valid during the
 * call. Must not call back into the store's write functions. */
typedef void (*evs_group_done_fn)(void *arg, int rc, const evs_group_result *res, size_t n,
                                  const evs_error *err);

/* Run n operations in order, as one atomic group. READ may name several streams (XREADGROUP);
 * the other commands run one at a time. EVS_ENOTFOUND: no stream; EVS_ENOGROUP: no group;
 * EVS_EEXIST: CREATE of an existing group (these through `done`). The op's data is copied
 * before return. Returns 0 if queued, or an error with *err saying why (err may be NULL):
 * EVS_EINVAL (a name too long: streams EVS_STREAM_NAME_MAX bytes, groups and consumers
 * EVS_GROUP_NAME_MAX, consumers may be empty as in Redis; a stream its own dead-letter stream;
 * a stream named twice), EVS_EREADONLY, EVS_EFAILED, EVS_ECLOSED, -ENOMEM. */
int evs_group_submit(evs_store *st, const evs_group_op *ops, size_t n, evs_group_done_fn done,
                     void *arg, evs_error *err);
/* Synchronous form for one operation; the result's arrays are copied into *out_ids (free()). */
int evs_group_run(evs_store *st, const evs_group_op *op, evs_group_result *res,
                  evs_id **out_ids, evs_error *err);

typedef struct evs_group_info {
    evs_slice name;
    uint64_t consumers;
    uint64_t pending;
    evs_id last_delivered;
    uint64_t entries_read;   /* EVS_ENTRIES_READ_NONE: unknown                                */
    bool lag_known;
    int64_t lag;             /* entries added minus entries read, when lag_known, as Redis
                                computes it: below 0 after XGROUP SETID ... ENTRIESREAD n
                                set n above the entries added                              */
    uint64_t max_deliveries;
    evs_slice dlq;
    uint64_t dead_letters;   /* entries this group moved to its dead-letter stream            */
    uint64_t oldest_pending_ms; /* delivery time of the least recently delivered pending entry
                                   (0: none, or not asked for: EVS_GROUP_OLDEST)            */
    evs_id pending_first, pending_last; /* smallest and largest pending ID (when pending)     */
} evs_group_info;

typedef struct evs_consumer_info {
    evs_slice name;
    uint64_t pending;
    uint64_t seen_ms;        /* last attempted interaction (read, claim)                      */
    uint64_t active_ms;      /* last successful delivery to it (0: never)                     */
} evs_consumer_info;

typedef struct evs_pending_info {
    evs_id id;
    evs_slice consumer;
    uint64_t delivered_ms;   /* last delivery time                                            */
    uint64_t deliveries;
} evs_pending_info;

/* Walks under the group lock: fn must be quick and must not call into the store. Its pointers
 * are valid during the call; non-zero from fn stops the walk and is returned. A group's info
 * costs the same however many consumers and pending entries it has, except for what `flags`
 * asks for besides: EVS_GROUP_OLDEST fills oldest_pending_ms, walking the whole pending list. */
#define EVS_GROUP_OLDEST 1u
int evs_group_list(evs_store *st, evs_slice stream, unsigned flags,
                   int (*fn)(void *arg, const evs_group_info *g), void *arg);
int evs_group_get(evs_store *st, evs_slice stream, evs_slice group, unsigned flags,
                  int (*fn)(void *arg, const evs_group_info *g), void *arg);
int evs_consumer_list(evs_store *st, evs_slice stream, evs_slice group,
                      int (*fn)(void *arg, const evs_consumer_info *c), void *arg);
/* Pending entries in [start, end] by ID, at most `count` (0: all), idle at least min_idle_ms,
 * of one consumer if consumer.ptr != NULL. */
int evs_pending_list(evs_store *st, evs_slice stream, evs_slice group, evs_id start, evs_id end,
                     uint64_t count, uint64_t min_idle_ms, evs_slice consumer,
                     int (*fn)(void *arg, const evs_pending_info *p), void *arg);

/* ---- retention --------------------------------------------------------------------------- */

/*
 * Retention trims each stream by its limits (its own, else the store's default) as trim
 * records through the log, and deletes a sealed segment once no stream has a live entry in it
 * (before that, the streams and groups whose creation is recorded there are re-declared at
 * the log's head, so a rebuild from the remaining log is complete). A background thread runs
 * a pass every retention_interval_ms; it never holds up appends (its trims and declarations
 * are ordinary writer requests). The active segment is sealed once its oldest record is
 * older than the smallest age limit in force, so that an idle stream's data can expire.
 *
 * Streams without limits keep their entries, and with them every segment from their oldest
 * live entry on (one log for all streams: docs/architecture.md).
 */
/* Set a stream's own limits (persisted: a record in the log). EVS_ENOTFOUND if no stream. */
int evs_retention_set(evs_store *st, evs_slice stream, const evs_retention *own, evs_error *err);
/* A stream's own limits and the limits in force for it. */
int evs_retention_get(evs_store *st, evs_slice stream, evs_retention *own,
                      evs_retention *effective);

typedef struct evs_retention_report {
    uint64_t trimmed;          /* entries trimmed by this pass                                  */
    uint64_t segments_deleted;
    uint64_t bytes_deleted;
    uint64_t index_keys_deleted; /* index keys naming only entries below a stream's first one */
    uint64_t streams_relocated;  /* small streams whose live entries were copied to the log's
                                    head so that the oldest segment could go (docs/architecture.md,
                                    "Retention")                                              */
    uint64_t bytes_relocated;    /* their bytes                                               */
} evs_retention_report;
/* Run one retention pass now (what the thread does), and report what it did. */
int evs_retention_run(evs_store *st, evs_retention_report *out, evs_error *err);

/* ---- units -------------------------------------------------------------------------------- */

/* "512", "64k", "64m", "1g", "2t" (powers of 1024, case-insensitive, optional b/ib): bytes.
 * 0 or EVS_EINVAL. */
int evs_parse_size(const char *s, size_t len, uint64_t *out);
/* "250ms", "2s", "5m", "12h", "7d", "1w", or a bare number of seconds: milliseconds. */
int evs_parse_duration_ms(const char *s, size_t len, uint64_t *out);

/* ---- lineage: epochs --------------------------------------------------------------------- */

/* One step of the store's history: from log position `start` on, records were written in
 * epoch `epoch`; the random `uuid` tells two epochs with the same number apart. */
typedef struct evs_epoch {
    uint32_t epoch;
    uint8_t uuid[16];
    uint64_t start;
} evs_epoch;

/* 16 bytes (an epoch's UUID, a store or backup ID) as 32 lowercase hex digits and a NUL, and
 * back: 0, or -1 unless s is exactly 32 lowercase hex digits. */
void evs_uuid_format(const uint8_t uuid[16], char out[33]);
int evs_uuid_parse(const char *s, size_t len, uint8_t uuid[16]);

/* The store's ID (32 hex digits, from its STORE file). */
const char *evs_store_id(evs_store *st);
/* Copy up to cap epochs of the history, oldest first; returns how many it has (0: a store
 * made before epochs existed, writing epoch 0). */
size_t evs_epochs(evs_store *st, evs_epoch *out, size_t cap);
/* Begin the next epoch at the end of the log: the history (EPOCHS) is written durably, then a
 * REC_EPOCH record, synced; every later record carries the new number. */
int evs_epoch_begin(evs_store *st, evs_epoch *out, evs_error *err);

/* ---- snapshots: the consistent cut a backup copies ---------------------------------------- */

/*
 * A snapshot is the store at one log position (the cut), taken while writes go on: a copy of
 * the index (LMDB's own consistent copy), then, between two write batches, the end of the log.
 * Every entry acknowledged before evs_snapshot_open was called lies below the cut; consumer-group
 * state is what the log says at the cut. The snapshot keeps every segment it lists open until
 * it is closed (retention may unlink one meanwhile; its disk space comes back at the close).
 * Its files, in order: "STORE", "EPOCHS", "index/data.mdb", then "log/<position>.seg" by
 * position (the last one, unless sealed, only up to the cut). A store open read-only has a
 * snapshot too: its cut is the log as opened (a torn tail it did not cut stays out), and the
 * index copy goes to $TMPDIR (default /tmp), not into the folder.
 */
typedef struct evs_snapshot evs_snapshot;
typedef struct evs_snap_file {
    char name[48];
    uint64_t size;      /* bytes in the snapshot                                            */
    uint64_t alloc;     /* an unsealed segment: its file's full size (restore zero-fills to it) */
    bool segment, sealed;
    bool read_once;     /* the index copy: evs_snapshot_read_once drops what it read         */
    uint32_t seal_crc;  /* a sealed segment: CRC of its seal record (its identity)           */
} evs_snap_file;
typedef struct evs_snap_stream {
    evs_slice name;
    evs_id last_id;
    uint64_t length, entries_added;
} evs_snap_stream;
typedef struct evs_snap_info {
    char store_id[33];
    uint64_t cut;        /* log position: everything below is in the snapshot               */
    uint64_t log_start;  /* position of its first segment                                   */
    const evs_epoch *epochs;
    size_t nepochs;
    const evs_snap_stream *streams;
    size_t nstreams;
    const evs_snap_file *files;
    size_t nfiles;
} evs_snap_info;

int evs_snapshot_open(evs_store *st, evs_snapshot **out, evs_error *err);
const evs_snap_info *evs_snapshot_info(const evs_snapshot *s);
/* Up to len bytes of file i from off (any thread): the count, 0 at its end, or < 0. */
long evs_snapshot_read(evs_snapshot *s, size_t i, uint64_t off, void *buf, size_t len,
                       evs_error *err);
/* evs_snapshot_read, for a reader that reads each byte once: a file marked read_once (the
 * index copy, a temporary file) then drops the whole pages read (snapshot.c P4), which read
 * as zeros afterwards. */
long evs_snapshot_read_once(evs_snapshot *s, size_t i, uint64_t off, void *buf, size_t len,
                            evs_error *err);
/* Lend the open file behind snapshot file i (the index copy or a segment; EVS_EINVAL for the
 * small files held in memory) for zero-copy sends (sendfile) of its bytes [0, size): *fd
 * stays open and unchanged until evs_snapshot_release(*hold), even after the snapshot is
 * closed. Read it with pread/sendfile at explicit offsets only. */
int evs_snapshot_file_fd(evs_snapshot *s, size_t i, int *fd, void **hold, evs_error *err);
void evs_snapshot_release(void *hold);
void evs_snapshot_close(evs_snapshot *s);

/* ---- replication: shipping the log ------------------------------------------------------ */

/*
 * A leader sends its log's bytes as they are; a follower writes them at the same positions,
 * so its segment files are the leader's byte for byte (docs/replication.md).
 */

/* The CRC-32 of the log's bytes [*from, to), which must lie in one segment's written bytes;
 * *from == UINT64_MAX: the last up to max bytes before `to` of the segment holding byte
 * to - 1, and *from says where they start. Leader and follower compare their logs' bytes
 * before the follower's end with it at connect (docs/replication.md, "CHECK"). 0, or
 * EVS_ENOTFOUND when the bytes do not lie so (below the log's start, past its end, across a
 * segment's edge, or to == 0), or -errno. */
int evs_log_crc(evs_store *st, uint64_t *from, uint64_t to, size_t max, uint32_t *crc,
                evs_error *err);
/* Leader: whole records of the log from `pos` (a record boundary), at most cap bytes (a
 * first record larger than cap comes alone), never past the last whole batch the writer
 * has written (a batch may not be synced yet: evs_set_written_hook; the visibility cap does
 * not apply), never across a segment's end. They are not copied: they lie in the file *fd
 * from offset *off (segment files hold the log's bytes as they are), for a zero-copy send
 * (sendfile); the file stays
 * open and those bytes unchanged until evs_log_release(*hold), even if retention deletes the
 * segment meanwhile (read *fd at explicit offsets only). Returns the byte count (0: nothing
 * new yet) with *at the log position of the first byte (above pos when the next segment
 * starts past a gap). EVS_ENOTFOUND: pos is below the log's start (retention deleted it);
 * EVS_EINVAL: pos is past the end or not a record boundary. */
long evs_log_span(evs_store *st, uint64_t pos, size_t cap, uint64_t *at, int *fd, uint64_t *off,
                  void **hold, evs_error *err);
void evs_log_release(void *hold);
/* Follower (evs_options.replica): queue bytes of the leader's log that start at `at` (this
 * log's end): whole records, each checked before any is written, then written and applied as
 * recovery would. done(arg, rc, NULL, len, err) once they are durable as the fsync mode says.
 * A record the store cannot apply (divergence) fails the store. */
int evs_replica_submit(evs_store *st, uint64_t at, const void *bytes, size_t len,
                       evs_done_fn done, void *arg);
/* The same with the bytes in iovcnt pieces (a network buffer's, as they are), copied once
 * before it returns. */
int evs_replica_submitv(evs_store *st, uint64_t at, const struct iovec *iov, int iovcnt,
                        evs_done_fn done, void *arg);
/* Follower → leader: once every frame submitted before is written, begin a new epoch (its
 * history fsynced first, then its record), and from then on take local writes and run
 * retention. */
int evs_promote(evs_store *st, evs_epoch *out, evs_error *err);
/* Follower whose log goes past the point x where its history and the leader's part: record
 * that the log is to be cut at x; the next evs_open keeps the bytes cut in log/ *.diverged
 * files, zeroes them, drops the epochs that began past x, and recovers (docs/replication.md). */
int evs_replica_truncate_request(evs_store *st, uint64_t x, evs_error *err);
/* Follower that lacks what the leader's retention deleted: record (file SNAPSHOT) that the
 * whole store must be copied from the leader before the next start (`evstore serve` does it,
 * docs/replication.md). own: the bytes of its log past where its history parts from the
 * leader's, as the leader counted them (0: its log is a prefix of the leader's history, so the
 * old store holds only what the leader's retention deleted), or UINT64_MAX when unknown. */
int evs_replica_snapshot_request(evs_store *st, uint64_t own, evs_error *err);
/* Does folder dir hold such a request (its file SNAPSHOT)? 1 with *own as recorded
 * (UINT64_MAX when unknown: a marker from before session 30, or one that does not parse), 0
 * if it holds none. Needs no open store: `evstore serve` asks before it opens one. */
int evs_replica_snapshot_pending(const char *dir, uint64_t *own);
/* Follower: the leader's log now starts at pos (its retention deleted what lies below); the
 * follower's retention thread deletes its own segments that end at or below it. */
void evs_replica_leader_start(evs_store *st, uint64_t pos);
/* Follower with an empty log: take the leader's identity (store ID, epoch history) before
 * its first record. */
int evs_replica_adopt(evs_store *st, const char *store_id, const evs_epoch *epochs, size_t n,
                      evs_error *err);

/* ---- checking ---------------------------------------------------------------------------- */

/* Check every record of every segment, the index against them, and that a forward and a
 * reverse read of each stream hand out as many entries as its length. Each problem is passed to
 * `report` (a line naming stream, file, byte offset and entry ID). Returns the number of
 * problems found (0: clean), or < 0 if the check itself could not run. */
long evs_verify(evs_store *st, void (*report)(void *arg, const char *line), void *arg);

#ifdef __cplusplus
}
#endif
#endif
