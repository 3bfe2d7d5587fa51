/*
 * index.c — LMDB environment, write batches with map growth, short read transactions.
 * See index.h for the tables and invariants.
 *
 * The environment is opened MDB_NOSYNC | MDB_NOTLS: commits are visible to readers at once
 * and cost no fsync; the store calls idx_sync() at checkpoints (the writer after it has made
 * the log durable up to the watermark). After a process crash the page cache holds every
 * commit; after a power loss the index may be stale or damaged, which open detects (watermark
 * check, LMDB errors, checkpoint file) and repairs by re-scanning the log.
 */
#include "crc.h"
#include "index.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <zlib.h>

static const char *const table_names[IDX_NTABLES] = {
    "meta", "streams", "stream_no", "ids", "times", "filt", "dels", "segments", "idem",
    "groups", "consumers", "pel", "idem_time",
};

struct idx {
    MDB_env *env;
    MDB_dbi dbi[IDX_NTABLES];
    uint64_t map_bytes;
    bool rdonly;
    /* readers hold it shared for the life of a read txn; the map grows under it exclusive */
    pthread_rwlock_t maplock;
    uint64_t dropped_ns;        /* when drop_resident last ran (the one applying a batch)     */
    uint64_t puts_since;        /* ... and the keys put since                                 */
    uint64_t alloc_to;          /* data.mdb has blocks up to here (idx_keep_headroom's caller) */
    bool no_idem_time;          /* read-only, of an index made before that table: none         */
    bool no_keep_size;          /* the file system has no FALLOC_FL_KEEP_SIZE                   */
    _Atomic uint64_t growth;    /* the data file's growth in one commit: a peak, decaying       */
    _Atomic uint64_t op_growth; /* ... and per operation of its batch (x16), a peak decaying by
                                   commits only: it counts for operations that wait, so a pause
                                   (nothing waits then) must not make it forget                */
    _Atomic uint64_t growth_ns; /* ... as of this commit (evs_mono_ns)                         */
};

struct idx_rtxn {
    idx *x;
    MDB_txn *txn;
};

struct idx_cur {
    idx_rtxn *r;
    MDB_cursor *c;
};

static int mdb_to_evs(int rc)
{
    switch (rc) {
    case 0: return 0;
    case MDB_NOTFOUND: return EVS_ENOTFOUND;
    case MDB_CORRUPTED: case MDB_PAGE_NOTFOUND: case MDB_INVALID: case MDB_VERSION_MISMATCH:
        return EVS_ECORRUPT;
    case MDB_MAP_FULL: return -ENOSPC;
    case MDB_PANIC: return -EIO; /* a failed write left the environment unusable */
    case MDB_BAD_VALSIZE: return EVS_EINVAL; /* a key or value LMDB cannot hold: our bug, not
                                                 the disk's (never "corrupt") */
    default: return rc > 0 ? -rc : EVS_ECORRUPT;
    }
}

uint64_t idx_value_hash(const void *v, size_t n)
{
    uint32_t a = evs_crc32(0, v, n);
    uint32_t b = (uint32_t)adler32(1L, v, (uInt)n);
    return (uint64_t)a << 32 | b;
}

/* An index made before the idem_time table: a row in it for each idempotency key. */
static int idem_time_fill(idx *x, MDB_txn *txn)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, x->dbi[IDX_IDEM], &c);
    if (rc)
        return rc;
    MDB_val k, v;
    uint8_t tk[IDX_IDEM_TIME_KEY_MAX];
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (v.mv_size < 48 || k.mv_size > IDX_IDEM_TIME_KEY_MAX - 8)
            continue; /* not a key this version wrote: left alone */
        idx_be64(tk, idx_rd64((const uint8_t *)v.mv_data + 40));
        memcpy(tk + 8, k.mv_data, k.mv_size);
        MDB_val t = {8 + k.mv_size, tk}, empty = {0, NULL};
        if ((rc = mdb_put(txn, x->dbi[IDX_IDEM_TIME], &t, &empty, 0)))
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int idx_open(const char *path, uint64_t map_bytes, bool rdonly, idx **out, evs_error *err)
{
    idx *x = calloc(1, sizeof *x);
    if (!x)
        return evs_err_set(err, -ENOMEM, "out of memory");
    pthread_rwlock_init(&x->maplock, NULL);
    x->rdonly = rdonly;
    x->map_bytes = map_bytes;
    int rc;
    if (!rdonly && mkdir(path, 0755) && errno != EEXIST) {
        rc = evs_err_set(err, -errno, "cannot create index folder %s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    char datafile[4096];
    snprintf(datafile, sizeof datafile, "%s/data.mdb", path);
    if (stat(datafile, &sb) == 0 && (uint64_t)sb.st_size > x->map_bytes)
        x->map_bytes = (uint64_t)sb.st_size * 2;
    if ((rc = mdb_env_create(&x->env)) || (rc = mdb_env_set_maxdbs(x->env, IDX_NTABLES + 2)) ||
        (rc = mdb_env_set_maxreaders(x->env, 1024)) ||
        (rc = mdb_env_set_mapsize(x->env, x->map_bytes))) {
        rc = evs_err_set(err, mdb_to_evs(rc), "lmdb setup: %s", mdb_strerror(rc));
        goto fail;
    }
    /* Read-only: the caller holds the store's folder lock shared, so no process writes this
     * environment, and LMDB's reader table (lock.mdb, which it would create or write even
     * then, and which a user who may only read the folder cannot open) is not needed. */
    unsigned flags = MDB_NOTLS | MDB_NOSYNC | (rdonly ? MDB_RDONLY | MDB_NOLOCK : 0);
    rc = mdb_env_open(x->env, path, flags, 0644);
    if (rc) {
        rc = evs_err_set(err, mdb_to_evs(rc), "cannot open index %s: %s", path, mdb_strerror(rc));
        goto fail;
    }
    int dead = 0;
    mdb_reader_check(x->env, &dead);
    MDB_txn *txn;
    if ((rc = mdb_txn_begin(x->env, NULL, rdonly ? MDB_RDONLY : 0, &txn))) {
        rc = evs_err_set(err, mdb_to_evs(rc), "index %s: %s", path, mdb_strerror(rc));
        goto fail;
    }
    bool fill_idem_time = false;
    for (int i = 0; i < IDX_NTABLES; i++) {
        rc = mdb_dbi_open(txn, table_names[i], 0, &x->dbi[i]);
        if (rc == MDB_NOTFOUND && i == IDX_IDEM_TIME && rdonly) {
            x->no_idem_time = true; /* nothing reads it: it is for retention's expiry */
            rc = 0;
            continue;
        }
        if (rc == MDB_NOTFOUND && !rdonly) {
            fill_idem_time = fill_idem_time || i == IDX_IDEM_TIME;
            rc = mdb_dbi_open(txn, table_names[i], MDB_CREATE, &x->dbi[i]);
        }
        if (rc) {
            mdb_txn_abort(txn);
            if (rdonly && rc == MDB_NOTFOUND)
                rc = MDB_INVALID;
            rc = evs_err_set(err, mdb_to_evs(rc), "index %s: table %s: %s", path,
                             table_names[i], mdb_strerror(rc));
            goto fail;
        }
    }
    if (fill_idem_time && (rc = idem_time_fill(x, txn)))
        mdb_txn_abort(txn);
    if (rc || (rc = mdb_txn_commit(txn))) {
        rc = evs_err_set(err, mdb_to_evs(rc), "index %s: %s", path, mdb_strerror(rc));
        goto fail;
    }
    *out = x;
    return 0;
fail:
    if (x->env)
        mdb_env_close(x->env);
    pthread_rwlock_destroy(&x->maplock);
    free(x);
    return rc;
}

void idx_close(idx *x)
{
    if (!x)
        return;
    if (!x->rdonly)
        mdb_env_sync(x->env, 1);
    mdb_env_close(x->env);
    pthread_rwlock_destroy(&x->maplock);
    free(x);
}

/* Other threads (the checkpointer) hold the map lock shared around their use of the
 * environment: the writer may swap it for a read-only one under it (reopen_for_reads). */
int idx_sync(idx *x)
{
    pthread_rwlock_rdlock(&x->maplock);
    int rc = x->rdonly ? 0 : mdb_to_evs(mdb_env_sync(x->env, 1));
    pthread_rwlock_unlock(&x->maplock);
    return rc;
}

/* Bytes of the data file LMDB uses (its last page's end); 0 if it cannot say. */
static uint64_t used_bytes(idx *x)
{
    MDB_envinfo info;
    MDB_stat ms;
    if (mdb_env_info(x->env, &info) || mdb_env_stat(x->env, &ms))
        return 0;
    return ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
}

/* The peak of one commit's growth, halved for each second without a commit: writes refused
 * for want of its headroom commit nothing, and its freed pages (a trim's keys deleted) make the
 * next commits grow the file less, so a peak that only commits could lower kept a freed disk
 * refusing writes (seen: a tmpfs trimmed by XTRIM still refused them 20 s later). */
static uint64_t growth_now(idx *x)
{
    uint64_t s = (evs_mono_ns() - atomic_load(&x->growth_ns)) / 1000000000ull;
    return s >= 64 ? 0 : atomic_load(&x->growth) >> s;
}

/* A commit's growth of the data file, into the decaying peaks (1/64 off per commit): what the
 * next commits may need past the used pages, whole and per operation of the batch
 * (idx_keep_headroom). */
static void note_growth(idx *x, uint64_t before, size_t nops)
{
    uint64_t after = used_bytes(x), g = after > before ? after - before : 0;
    uint64_t peak = growth_now(x), per = atomic_load(&x->op_growth);
    uint64_t g16 = nops ? (g * 16 + nops - 1) / nops : 0;
    atomic_store(&x->growth, g > peak - peak / 64 ? g : peak - peak / 64);
    atomic_store(&x->op_growth, g16 > per - per / 64 ? g16 : per - per / 64);
    atomic_store(&x->growth_ns, evs_mono_ns());
}

void idx_growth_reset(idx *x)
{
    atomic_store(&x->growth, 0);
    atomic_store(&x->op_growth, 0);
}

int idx_keep_headroom(idx *x, uint64_t bytes, uint64_t pending_ops)
{
    int fd = -1;
    pthread_rwlock_rdlock(&x->maplock);
    uint64_t used = x->rdonly || mdb_env_get_fd(x->env, &fd) ? 0 : used_bytes(x);
    /* records already in the log and not yet in the index: the batch being applied and the
     * one being built, each at most one commit (the writer checks after each commit); and,
     * when more wait than that (the indexer slowed down: a busy machine), twice what they
     * would grow the file at the recent peak per operation */
    uint64_t need = 2 * growth_now(x), ops = 2 * atomic_load(&x->op_growth) * pending_ops / 16;
    if (need < ops)
        need = ops;
    if (need < bytes)
        need = bytes;
    int rc = 0;
    if (!used) {
        /* not a writable environment here: nothing to keep */
    } else if (x->no_keep_size) { /* the file system's free space is all there is */
        struct statvfs vs;
        if (fstatvfs(fd, &vs) == 0 && (uint64_t)vs.f_bavail * vs.f_frsize < need)
            rc = -ENOSPC;
    } else if (x->alloc_to < used + need) {
        /* blocks past the end, the file's size unchanged: LMDB sees nothing, and its writes
         * into them need no new blocks. Two allowances, so that this runs now and then; one
         * where two do not fit; short where one does not. */
        uint64_t from = x->alloc_to < used ? x->alloc_to : used;
        for (uint64_t k = 2; k >= 1; k--) {
            uint64_t to = used + k * need;
            if (fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)from, (off_t)(to - from)) == 0) {
                x->alloc_to = to;
                rc = 0;
                break;
            }
            if (errno == EOPNOTSUPP || errno == ENOSYS) {
                x->no_keep_size = true; /* judged by the free space from the next call on */
                rc = 0;
                break;
            }
            if ((rc = -errno) != -ENOSPC && rc != -EDQUOT)
                break; /* another error: the caller logs it */
        }
    }
    pthread_rwlock_unlock(&x->maplock);
    return rc;
}

uint64_t idx_txnid(idx *x)
{
    MDB_envinfo info;
    pthread_rwlock_rdlock(&x->maplock);
    mdb_env_info(x->env, &info);
    pthread_rwlock_unlock(&x->maplock);
    return (uint64_t)info.me_last_txnid;
}

int idx_copy_fd(idx *x, int fd, evs_error *err)
{
    /* LMDB's consistent copy runs in its own read transaction; holding the map lock shared
     * keeps the map from being resized under it (a writer that must grow it waits).
     * Compacted: the free pages a long-lived index carries (half its file or more,
     * measured) are neither written here nor sent, stored and restored by a backup
     * (docs/backup.md). */
    pthread_rwlock_rdlock(&x->maplock);
    int rc = mdb_env_copyfd2(x->env, fd, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&x->maplock);
    if (rc)
        return evs_err_set(err, rc > 0 ? -rc : rc, "cannot copy the index: %s", mdb_strerror(rc));
    return 0;
}

/* ---- batches ----------------------------------------------------------------------------- */

enum { OP_PUT, OP_PUT_NOOVER, OP_DEL, OP_DELPREFIX, OP_DEL_OLDER };

struct op {
    uint8_t kind, table;
    uint32_t klen, vlen;
    size_t koff, voff;
    uint64_t kpre; /* the key's first 8 bytes, big-endian, zero-padded: most compares end here */
};

struct idx_batch {
    rec_buf arena;
    struct op *ops;
    size_t n, cap;
};

idx_batch *idx_batch_new(void) { return calloc(1, sizeof(idx_batch)); }

size_t idx_batch_count(const idx_batch *b) { return b->n; }

void idx_batch_free(idx_batch *b)
{
    if (!b)
        return;
    rec_buf_release(&b->arena);
    free(b->ops);
    free(b);
}

void idx_batch_clear(idx_batch *b)
{
    b->arena.len = 0;
    b->n = 0;
}

bool idx_batch_empty(const idx_batch *b) { return b->n == 0; }

static int batch_add(idx_batch *b, int kind, enum idx_table t, const void *k, size_t kl,
                     const void *v, size_t vl)
{
    if (arr_room(&b->ops, b->n, &b->cap, sizeof *b->ops, 64))
        return -ENOMEM;
    struct op *o = &b->ops[b->n];
    o->kind = (uint8_t)kind;
    o->table = (uint8_t)t;
    o->klen = (uint32_t)kl;
    o->vlen = (uint32_t)vl;
    o->koff = b->arena.len;
    uint8_t pre[8] = {0};
    memcpy(pre, k, kl < 8 ? kl : 8);
    o->kpre = idx_rd64(pre);
    if (rec_buf_write(&b->arena, k, kl))
        return -ENOMEM;
    o->voff = b->arena.len;
    if (vl && rec_buf_write(&b->arena, v, vl))
        return -ENOMEM;
    b->n++;
    return 0;
}

int idx_batch_put(idx_batch *b, enum idx_table t, const void *k, size_t kl, const void *v,
                  size_t vl)
{
    return batch_add(b, OP_PUT, t, k, kl, v, vl);
}
int idx_batch_put_noover(idx_batch *b, enum idx_table t, const void *k, size_t kl,
                         const void *v, size_t vl)
{
    return batch_add(b, OP_PUT_NOOVER, t, k, kl, v, vl);
}
int idx_batch_del(idx_batch *b, enum idx_table t, const void *k, size_t kl)
{
    return batch_add(b, OP_DEL, t, k, kl, NULL, 0);
}
int idx_batch_del_prefix(idx_batch *b, enum idx_table t, const void *k, size_t kl)
{
    return batch_add(b, OP_DELPREFIX, t, k, kl, NULL, 0);
}

int idx_batch_del_older(idx_batch *b, enum idx_table t, const void *k, size_t kl,
                        uint64_t before)
{
    uint8_t v[8];
    idx_be64(v, before);
    return batch_add(b, OP_DEL_OLDER, t, k, kl, v, sizeof v);
}

static int del_older(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, const MDB_val *before)
{
    MDB_val v;
    int rc = mdb_get(txn, dbi, k, &v);
    if (rc == MDB_NOTFOUND || (!rc && (v.mv_size < 8 ||
        idx_rd64((const uint8_t *)v.mv_data + v.mv_size - 8) >= idx_rd64(before->mv_data))))
        return 0;
    return rc ? rc : mdb_del(txn, dbi, k, NULL);
}

static int del_prefix(MDB_txn *txn, MDB_dbi dbi, const uint8_t *p, size_t pl)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc)
        return rc;
    MDB_val k = {pl, (void *)p}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size >= pl && memcmp(k.mv_data, p, pl) == 0) {
        if ((rc = mdb_cursor_del(c, 0)))
            break;
        rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
        if (rc == MDB_NOTFOUND || rc == EINVAL) /* deleted the last key */
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Order of puts: table, key, then the order they were queued in (an op's key offset in the
 * arena grows with it): the last of two puts of one key still wins. */
static int op_cmp(const void *a, const void *b, void *arena)
{
    const struct op *x = a, *y = b;
    if (x->table != y->table)
        return x->table < y->table ? -1 : 1;
    if (x->kpre != y->kpre) /* the order memcmp gives: shorter keys pad with zeros, and sort
                               first among keys with the same first bytes */
        return x->kpre < y->kpre ? -1 : 1;
    const uint8_t *base = arena;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(base + x->koff, base + y->koff, n);
    if (c)
        return c;
    if (x->klen != y->klen)
        return x->klen < y->klen ? -1 : 1;
    return x->koff < y->koff ? -1 : x->koff > y->koff;
}

/*
 * Each run of puts between two deletes is applied in key order: a commit's puts land on
 * random leaves (a filter key per value, an ID key per stream), and in key order each leaf is
 * found and copied once, hot in the cache, instead of once per key. Deletes keep their place:
 * a put queued before a delete of its key (or of a prefix of it) stays before it.
 */
static void sort_puts(idx_batch *b)
{
    for (size_t i = 0; i < b->n;) {
        size_t j = i;
        while (j < b->n && (b->ops[j].kind == OP_PUT || b->ops[j].kind == OP_PUT_NOOVER))
            j++;
        if (j - i > 1)
            qsort_r(b->ops + i, j - i, sizeof *b->ops, op_cmp, b->arena.data);
        i = j + 1;
    }
}

/* Puts go through one cursor per table, which stays where the last put left it: LMDB looks
 * for a key within the cursor's leaf page first when it falls between that page's first and
 * last keys (sorted puts often do), instead of from the root down as mdb_put does for each. */
static int apply_once(idx *x, idx_batch *b)
{
    MDB_txn *txn;
    MDB_cursor *cur[IDX_NTABLES] = {0}; /* closed by the commit or abort (a write txn's) */
    int rc = mdb_txn_begin(x->env, NULL, 0, &txn);
    if (rc)
        return rc;
    for (size_t i = 0; i < b->n && !rc; i++) {
        struct op *o = &b->ops[i];
        MDB_val k = {o->klen, b->arena.data + o->koff};
        MDB_val v = {o->vlen, b->arena.data + o->voff};
        if ((o->kind == OP_PUT || o->kind == OP_PUT_NOOVER) && !cur[o->table] &&
            (rc = mdb_cursor_open(txn, x->dbi[o->table], &cur[o->table])))
            break;
        switch (o->kind) {
        case OP_PUT: rc = mdb_cursor_put(cur[o->table], &k, &v, 0); break;
        case OP_PUT_NOOVER:
            rc = mdb_cursor_put(cur[o->table], &k, &v, MDB_NOOVERWRITE);
            if (rc == MDB_KEYEXIST)
                rc = 0;
            break;
        case OP_DEL:
            rc = mdb_del(txn, x->dbi[o->table], &k, NULL);
            if (rc == MDB_NOTFOUND)
                rc = 0;
            break;
        case OP_DELPREFIX: rc = del_prefix(txn, x->dbi[o->table], k.mv_data, k.mv_size); break;
        case OP_DEL_OLDER: rc = del_older(txn, x->dbi[o->table], &k, &v); break;
        }
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

/*
 * After a failed commit LMDB may have marked the environment fatal (its meta-page write
 * failed): every later transaction, reads included, answers MDB_PANIC. The store writes no
 * more to the index after a failure (W3 in writer.c), so readers get a new environment on the
 * same files, read-only and without LMDB's lock file (no writer remains; the data folder's
 * LOCK keeps other processes out): it shows the last commit that reached the file, as a
 * restart would. If that open fails, reads keep answering the error.
 */
static void reopen_for_reads(idx *x)
{
    MDB_txn *t;
    int rc = mdb_txn_begin(x->env, NULL, MDB_RDONLY, &t);
    if (rc == 0)
        mdb_txn_abort(t);
    if (rc != MDB_PANIC)
        return;
    const char *p;
    char path[4096];
    if (mdb_env_get_path(x->env, &p))
        return;
    snprintf(path, sizeof path, "%s", p);
    MDB_env *e;
    MDB_dbi dbi[IDX_NTABLES];
    if (mdb_env_create(&e))
        return;
    rc = mdb_env_set_maxdbs(e, IDX_NTABLES + 2);
    if (!rc)
        rc = mdb_env_set_mapsize(e, x->map_bytes);
    if (!rc)
        rc = mdb_env_open(e, path, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0644);
    if (!rc && !(rc = mdb_txn_begin(e, NULL, MDB_RDONLY, &t))) {
        for (int i = 0; i < IDX_NTABLES && !rc; i++)
            rc = mdb_dbi_open(t, table_names[i], 0, &dbi[i]);
        rc = rc ? (mdb_txn_abort(t), rc) : mdb_txn_commit(t);
    }
    if (rc) {
        mdb_env_close(e);
        return;
    }
    pthread_rwlock_wrlock(&x->maplock); /* no read txn of the old environment is open */
    mdb_env_close(x->env);
    x->env = e;
    memcpy(x->dbi, dbi, sizeof dbi);
    x->rdonly = true;
    pthread_rwlock_unlock(&x->maplock);
}

/*
 * The environment's mapping is shared and read-only (no MDB_WRITEMAP: LMDB writes with pwrite),
 * so its pages are the page cache's. Every page a commit reads stays mapped, and the process's
 * resident size grew with the index (84 MiB of a 99 MiB peak after 10 M appends). Dropping the
 * mapping's page-table entries (MADV_DONTNEED) loses nothing — a reader touching a page again
 * maps it back from the cache — and keeps the resident size to the pages in use. Refaulting is
 * not free in this VM (dropping every 250 ms halved a follower's catch-up rate), so the
 * indexer looks after a commit, once IDX_DROP_PUTS keys were put since it last looked or
 * IDX_DROP_NS passed, and drops only when the process's resident file pages pass
 * IDX_RESIDENT_MAX; under the map lock shared (the map does not move meanwhile). By keys, not
 * only by time: LMDB writes each commit's pages anew (copy on write) and the next one reads
 * them through the mapping, so the resident size grows with what is indexed, ~0.3 MiB a
 * commit of ~1,300 keys; looking once a second let a fast fill (7 M entries/s) reach 75-90
 * MiB between looks (docs/benchmarks.md, "open"). LMDB does not tell where it mapped the file
 * (mdb_env_info's me_mapaddr is only set with MDB_FIXEDMAP), so the mapping is found in
 * /proc/self/maps by the data file's device and inode.
 */
#define IDX_DROP_NS 1000000000ull
#define IDX_DROP_PUTS 16384 /* ~4 MiB of index pages read back */
#define IDX_RESIDENT_MAX (16ull << 20)
static uint64_t resident_file_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    unsigned long size = 0, resident = 0, shared = 0;
    if (f) {
        if (fscanf(f, "%lu %lu %lu", &size, &resident, &shared) != 3)
            shared = 0;
        fclose(f);
    }
    return (uint64_t)shared * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void drop_resident(idx *x, size_t puts)
{
    uint64_t now = evs_mono_ns();
    x->puts_since += puts;
    if (now - x->dropped_ns < IDX_DROP_NS && x->puts_since < IDX_DROP_PUTS)
        return;
    x->dropped_ns = now;
    x->puts_since = 0;
    if (resident_file_bytes() < IDX_RESIDENT_MAX)
        return;
    int fd;
    struct stat sb;
    if (mdb_env_get_fd(x->env, &fd) || fstat(fd, &sb))
        return;
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return;
    char line[512];
    pthread_rwlock_rdlock(&x->maplock);
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, ino;
        unsigned maj, min;
        if (sscanf(line, "%lx-%lx %*s %*x %x:%x %lu", &lo, &hi, &maj, &min, &ino) == 5 &&
            ino == sb.st_ino && maj == major(sb.st_dev) && min == minor(sb.st_dev))
            madvise((void *)lo, hi - lo, MADV_DONTNEED);
    }
    pthread_rwlock_unlock(&x->maplock);
    fclose(f);
}

int idx_apply(idx *x, idx_batch *b, evs_error *err)
{
    if (b->n == 0)
        return 0;
    sort_puts(b);
    uint64_t before = used_bytes(x);
    for (;;) {
        int rc = apply_once(x, b);
        if (rc == 0) {
            note_growth(x, before, b->n);
            drop_resident(x, b->n);
            return 0;
        }
        if (rc != MDB_MAP_FULL) {
            evs_err_set(err, mdb_to_evs(rc), "index write failed: %s", mdb_strerror(rc));
            reopen_for_reads(x);
            return err->code;
        }
        /* Grow: no read txn may be open while the map size changes (I3). */
        pthread_rwlock_wrlock(&x->maplock);
        uint64_t grown = x->map_bytes * 2;
        rc = mdb_env_set_mapsize(x->env, grown);
        if (rc == 0)
            x->map_bytes = grown;
        pthread_rwlock_unlock(&x->maplock);
        if (rc)
            return evs_err_set(err, mdb_to_evs(rc), "index map growth to %llu bytes failed: %s",
                               (unsigned long long)grown, mdb_strerror(rc));
    }
}

int idx_clear_all(idx *x, evs_error *err)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(x->env, NULL, 0, &txn);
    for (int i = 0; i < IDX_NTABLES && !rc; i++)
        rc = mdb_drop(txn, x->dbi[i], 0);
    if (rc) {
        if (txn)
            mdb_txn_abort(txn);
        return evs_err_set(err, mdb_to_evs(rc), "index clear failed: %s", mdb_strerror(rc));
    }
    rc = mdb_txn_commit(txn);
    if (rc)
        return evs_err_set(err, mdb_to_evs(rc), "index clear failed: %s", mdb_strerror(rc));
    return 0;
}

/* ---- reads ------------------------------------------------------------------------------- */

int idx_rbegin(idx *x, idx_rtxn **out)
{
    idx_rtxn *r = malloc(sizeof *r);
    if (!r)
        return -ENOMEM;
    r->x = x;
    pthread_rwlock_rdlock(&x->maplock);
    int rc = mdb_txn_begin(x->env, NULL, MDB_RDONLY, &r->txn);
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(x->env, 0);
        rc = mdb_txn_begin(x->env, NULL, MDB_RDONLY, &r->txn);
    }
    if (rc) {
        pthread_rwlock_unlock(&x->maplock);
        free(r);
        return mdb_to_evs(rc);
    }
    *out = r;
    return 0;
}

void idx_rend(idx_rtxn *r)
{
    if (!r)
        return;
    mdb_txn_abort(r->txn);
    pthread_rwlock_unlock(&r->x->maplock);
    free(r);
}

int idx_get(idx_rtxn *r, enum idx_table t, const void *k, size_t kl, const void **v, size_t *vl)
{
    MDB_val mk = {kl, (void *)k}, mv;
    int rc = mdb_get(r->txn, r->x->dbi[t], &mk, &mv);
    if (rc)
        return mdb_to_evs(rc);
    *v = mv.mv_data;
    *vl = mv.mv_size;
    return 0;
}

int idx_cur_open(idx_rtxn *r, enum idx_table t, idx_cur **out)
{
    if (t == IDX_IDEM_TIME && r->x->no_idem_time)
        return EVS_ENOTFOUND;
    idx_cur *c = malloc(sizeof *c);
    if (!c)
        return -ENOMEM;
    c->r = r;
    int rc = mdb_cursor_open(r->txn, r->x->dbi[t], &c->c);
    if (rc) {
        free(c);
        return mdb_to_evs(rc);
    }
    *out = c;
    return 0;
}

void idx_cur_close(idx_cur *c)
{
    if (!c)
        return;
    mdb_cursor_close(c->c);
    free(c);
}

int idx_cur_get(idx_cur *c, enum idx_seek how, const void *k_in, size_t kl_in, const void **k,
                size_t *kl, const void **v, size_t *vl)
{
    MDB_val mk = {kl_in, (void *)k_in}, mv = {0, NULL};
    MDB_cursor_op op;
    switch (how) {
    case IDX_GE: op = MDB_SET_RANGE; break;
    case IDX_FIRST: op = MDB_FIRST; break;
    case IDX_LAST: op = MDB_LAST; break;
    case IDX_NEXT: op = MDB_NEXT; break;
    default: op = MDB_PREV; break;
    }
    int rc = mdb_cursor_get(c->c, &mk, &mv, op);
    if (rc)
        return mdb_to_evs(rc);
    *k = mk.mv_data;
    *kl = mk.mv_size;
    if (v) {
        *v = mv.mv_data;
        *vl = mv.mv_size;
    }
    return 0;
}
