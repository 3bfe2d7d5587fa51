/*
 * store.c — opening a store folder (lock, identity, segments, index, tail recovery), closing
 * it, and store_apply_record(): the one function that turns a record into stream state and
 * index operations, used by the writer for new records and by recovery for old ones.
 *
 * Folder layout:
 *   LOCK             flock()ed by the process that has the store open (holds its pid)
 *   STORE            "evstore-store 1\nid <32 hex>\n" written once, atomically
 *   log/<pos>.seg    segments, named by the log position of their first byte
 *   log/<seg>.<off>.torn  bytes cut from a torn tail, kept for inspection
 *   index/           LMDB environment (data.mdb, lock.mdb)
 *   index.ckpt       "boot <boot id>\ntxn <n>\n": the index up to transaction n is durable
 *                    with the log, and every later transaction was committed in that boot
 *                    (checkpoint_claim keeps the second promise from the open on)
 *
 * Recovery on open (docs/format.md has the full rules):
 *  1. Trust the index watermark only if the record it names is on disk with the stored CRC,
 *     and the checkpoint rule holds (after a reboot, an index not checkpointed at its last
 *     transaction may hold pages that never reached the disk); otherwise rebuild.
 *  2. Scan forward from the watermark to the end of the log, applying each valid record.
 *     A watermark that names a seal seals its segment: the scan, starting past it, cannot.
 *  3. A bad record in the last segment with nothing valid after it, within the size of one
 *     write batch of the end, is a torn tail: the bytes go to a .torn file and are cut.
 *     An incomplete atomic group at the end is cut the same way. Anything else is
 *     corruption: logged, never cut, skipped by re-synchronising on the next valid record;
 *     reads that reach it fail with EVS_ECORRUPT. Except (R1):
 *
 * R1. A hole in the last write batch is a torn tail too. A power cut during a batch's
 *     fdatasync may leave any of its pages unwritten (zeros: the segment was zero-filled) and
 *     later ones written, so valid records can follow the bad one. The writer flags the first
 *     record after each completed sync (REC_F_SYNCED, writer.c W7), so: a bad record in the
 *     last segment, within one write batch of the end, that no valid flagged record follows —
 *     nothing after it was written after a sync that made it durable — is cut as a torn tail
 *     with everything after it, once a flagged record before it in the segment shows that the
 *     segment's writer flags (a segment written before the flag existed keeps the old rule).
 *     A flagged record after it proves it was durable: corruption, as before.
 * R2. Except in a follower's log. A follower writes the leader's records byte for byte, flags
 *     included: their REC_F_SYNCED marks the leader's syncs, not the follower's, and one of
 *     its write batches (up to EVS_MAX_BATCH_BYTES of frames) holds many. So when the store was
 *     last opened as a follower (FOLLOWING present), a bad record in the last segment within
 *     two write batches of the end (one may be syncing while the next is written, writer.c
 *     W10) is cut as a torn tail with everything after it, whatever flags follow: a power
 *     cut during the follower's syncs leaves exactly that. What it cuts, the leader sends
 *     again. (The flag rule would have called it corruption, kept the hole and continued
 *     after it: a follower no longer byte-identical, acknowledging as fsynced positions past
 *     records it does not hold.)
 */
#include "evstore_backup.h" /* evs_remove_tree */
#include "group.h"
#include "index.h"
#include "internal.h"
#include "postings.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* ---- small helpers ----------------------------------------------------------------------- */

_Atomic int64_t store_test_clock_skew_us;

uint64_t evs_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u +
           (uint64_t)atomic_load_explicit(&store_test_clock_skew_us, memory_order_relaxed);
}

struct timespec evs_deadline_ns(uint64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ns += (uint64_t)ts.tv_nsec;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    return ts;
}

uint64_t evs_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void evs_log(evs_store *st, int level, const char *fmt, ...)
{
    if (!st->opt.log)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    st->opt.log(st->opt.log_arg, level, buf);
}

int evs_id_cmp(evs_id a, evs_id b)
{
    if (a.ms != b.ms)
        return a.ms < b.ms ? -1 : 1;
    if (a.seq != b.seq)
        return a.seq < b.seq ? -1 : 1;
    return 0;
}

bool evs_id_next(evs_id *id)
{
    if (id->seq < UINT64_MAX) {
        id->seq++;
        return true;
    }
    if (id->ms < UINT64_MAX) {
        id->ms++;
        id->seq = 0;
        return true;
    }
    return false;
}

bool evs_id_prev(evs_id *id)
{
    if (id->seq > 0) {
        id->seq--;
        return true;
    }
    if (id->ms > 0) {
        id->ms--;
        id->seq = UINT64_MAX;
        return true;
    }
    return false;
}

/* One part of an ID: at most 20 digits, UINT64_MAX's count (a long run of leading zeros is
 * refused: Redis reads at most 127 bytes of an ID, and fuzz_stream_args holds net/'s reader
 * of IDs as Redis reads them and this one to agree on plain digits). */
static int id_part(const char *s, size_t len, uint64_t *out)
{
    return len > 20 ? EVS_EINVAL : evs_parse_dec(s, len, out);
}

int evs_id_parse(const void *p, size_t len, uint64_t missing_seq, evs_id *out)
{
    const char *s = p;
    const char *dash = memchr(s, '-', len);
    evs_id id;
    if (!dash) {
        if (id_part(s, len, &id.ms))
            return EVS_EINVAL;
        id.seq = missing_seq;
    } else if (id_part(s, (size_t)(dash - s), &id.ms) ||
               id_part(dash + 1, len - (size_t)(dash - s) - 1, &id.seq)) {
        return EVS_EINVAL;
    }
    *out = id;
    return 0;
}

/* Digits without snprintf: an ID per XADD answer, and the server's reply headers (net/resp.c) */
size_t evs_u64_format(uint64_t v, char *buf)
{
    char rev[20];
    size_t n = 0;
    do
        rev[n++] = (char)('0' + v % 10);
    while ((v /= 10));
    for (size_t i = 0; i < n; i++)
        buf[i] = rev[n - 1 - i];
    return n;
}

size_t evs_id_format(evs_id id, char *buf)
{
    size_t n = evs_u64_format(id.ms, buf);
    buf[n++] = '-';
    n += evs_u64_format(id.seq, buf + n);
    buf[n] = '\0';
    return n;
}

void evs_options_init(evs_options *o)
{
    memset(o, 0, sizeof *o);
    o->fsync = EVS_FSYNC_ALWAYS;
    o->segment_bytes = EVS_DEFAULT_SEGMENT_BYTES;
    o->max_entry_bytes = EVS_DEFAULT_MAX_ENTRY;
    o->index_map_bytes = EVS_DEFAULT_MAP_BYTES;
}

void evs_query_init(evs_query *q)
{
    memset(q, 0, sizeof *q);
    q->start = EVS_ID_MIN;
    q->end = EVS_ID_MAX;
}

/* ---- segments, for readers --------------------------------------------------------------- */

segment *store_seg_get(evs_store *st, uint64_t pos)
{
    segment *found = NULL;
    pthread_rwlock_rdlock(&st->lock);
    size_t lo = 0, hi = st->nsegs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (st->segs[mid]->base <= pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo > 0) {
        found = st->segs[lo - 1];
        atomic_fetch_add(&found->refs, 1);
        seg_touch(found);
    }
    pthread_rwlock_unlock(&st->lock);
    return found;
}

/*
 * Segments retention deleted while something still held them ("zombies"): the last reference
 * gives the file to the releaser, not before, since cutting a file that a reader maps
 * (SIGBUS), a snapshot copies or a follower's frame sends (short reads) breaks them
 * (retention.c R3). A reference may outlive the store (a server answers its last clients
 * after evs_close): evs_close detaches the zombies first, under zombie_mu, and their files
 * are left `.deleted` for the next open (releaser.c L4).
 */
static pthread_mutex_t zombie_mu = PTHREAD_MUTEX_INITIALIZER;

int store_seg_zombie(evs_store *st, segment *s)
{
    pthread_mutex_lock(&zombie_mu);
    int rc = arr_room(&st->zombies, st->nzombies, &st->zombiecap, sizeof *st->zombies, 8);
    if (!rc) {
        st->zombies[st->nzombies++] = s;
        s->deleted_in = st;
    }
    pthread_mutex_unlock(&zombie_mu);
    return rc;
}

static void zombies_detach(evs_store *st)
{
    pthread_mutex_lock(&zombie_mu);
    for (size_t i = 0; i < st->nzombies; i++)
        st->zombies[i]->deleted_in = NULL;
    st->nzombies = 0;
    pthread_mutex_unlock(&zombie_mu);
}

void store_seg_put(segment *s)
{
    /* the last reference; with SEG_EVICTING set, the evictor releases it (segment.c M4) */
    if (s && atomic_fetch_sub(&s->refs, 1) == 1)
        store_seg_release(s);
}

void store_seg_hold_fd(segment *s) { atomic_fetch_add(&s->refs, SEG_FD_REF); }

void store_seg_put_fd(segment *s)
{
    if (s && atomic_fetch_sub(&s->refs, SEG_FD_REF) == SEG_FD_REF)
        store_seg_release(s);
}

void store_seg_release(segment *s)
{
    pthread_mutex_lock(&zombie_mu);
    evs_store *st = s->deleted_in;
    char path[PATH_MAX + 48];
    if (st) {
        snprintf(path, sizeof path, "%s/%s.deleted", st->logdir, s->name);
        for (size_t i = 0; i < st->nzombies; i++)
            if (st->zombies[i] == s) {
                st->zombies[i] = st->zombies[--st->nzombies];
                break;
            }
    }
    seg_free(s);
    if (st)
        rel_delete(st, path); /* under the mutex: the store cannot close meanwhile */
    pthread_mutex_unlock(&zombie_mu);
}

static void id_str(const rec_hdr *h, char *buf)
{
    evs_id_format((evs_id){h->id_ms, h->id_seq}, buf);
}

static int read_record(evs_store *st, uint64_t pos, const char *stream_name, rec_hdr *h,
                       const uint8_t **body, uint64_t *size, segment **ref, bool verify,
                       evs_error *err)
{
    segment *s = *ref;
    if (!s || pos < s->base || pos - s->base >= atomic_load(&s->size)) {
        store_seg_put(s);
        *ref = s = store_seg_get(st, pos);
        if (!s)
            return evs_err_set(err, EVS_ECORRUPT,
                               "stream %s: no segment holds log position %" PRIu64, stream_name,
                               pos);
    }
    uint64_t avail = atomic_load(&s->size);
    uint64_t off = pos - s->base;
    const uint8_t *d = seg_data(s);
    if (!d)
        return evs_err_set(err, -errno, "stream %s: cannot map segment %s: %s", stream_name,
                           s->name, strerror(errno));
    if (off >= avail && s->sealed)
        return evs_err_set(err, EVS_ECORRUPT, "stream %s: log position %" PRIu64 " is in no "
                           "segment file: it lies past the end of %s (%" PRIu64 " bytes), and "
                           "the segment file that held it is missing", stream_name, pos,
                           s->name, avail);
    int rc = REC_SHORT;
    if (off < avail)
        rc = verify ? rec_check(d + off, avail - off, h, size)
                    : rec_check_hdr(d + off, avail - off, h, size);
    if (rc != REC_OK) {
        char idbuf[EVS_ID_STRLEN] = "unknown";
        rec_hdr hh;
        uint64_t sz;
        if (off < avail && rec_check_hdr(d + off, avail - off, &hh, &sz) == REC_OK)
            id_str(&hh, idbuf);
        return evs_err_set(err, EVS_ECORRUPT,
                           "stream %s: corrupt record in segment %s at offset %" PRIu64
                           " (entry id %s): %s",
                           stream_name, s->name, off, idbuf, rec_check_str(rc));
    }
    *body = d + off + REC_HDR_SIZE;
    return 0;
}

int store_read_record(evs_store *st, uint64_t pos, const char *stream_name, rec_hdr *h,
                      const uint8_t **body, uint64_t *size, segment **ref, evs_error *err)
{
    return read_record(st, pos, stream_name, h, body, size, ref, true, err);
}

int store_read_checked(evs_store *st, uint64_t pos, const char *stream_name, rec_hdr *h,
                       const uint8_t **body, uint64_t *size, segment **ref, evs_error *err)
{
    return read_record(st, pos, stream_name, h, body, size, ref, false, err);
}

/* ---- streams ----------------------------------------------------------------------------- */

stream *store_stream_new(evs_store *st, uint32_t no, const void *name, size_t len)
{
    if (no >= EVS_STREAM_NO_MAX || numtab_get(&st->byno, no))
        return NULL; /* corrupt: never assigned (writer.c prepass), or a number in use */
    stream *s = calloc(1, sizeof *s);
    if (!s || !(s->name = malloc(len ? len : 1))) {
        free(s);
        return NULL;
    }
    memcpy(s->name, name, len);
    s->name_len = len;
    s->no = no;
    s->w.no = no;
    s->w.first_pos = s->w.last_pos = s->w.moved_pos = REC_POS_NONE;
    if (numtab_set(&st->byno, no, s)) {
        free(s->name);
        free(s);
        return NULL;
    }
    return s;
}

void store_stream_free(stream *s)
{
    group_free_all(s);
    free(s->bents);
    free(s->name);
    free(s);
}

static bool list_add(stream ***list, size_t *n, size_t *cap, stream *s)
{
    if (arr_room(list, *n, cap, sizeof **list, 64))
        return false;
    (*list)[(*n)++] = s;
    return true;
}

/* Remember that s changed: publish it after this write batch, write it at the next index
 * commit; `version`: move its evs_version. -ENOMEM if a list cannot grow. */
static int touch_state(evs_store *st, stream *s, bool version)
{
    if (version)
        s->w.changes++; /* every applied record of the stream passes here: evs_version */
    if (!s->touched) {
        if (!list_add(&st->touched, &st->ntouched, &st->touchcap, s))
            return -ENOMEM;
        s->touched = true;
    }
    if (!s->btouched) {
        if (!list_add(&st->btouched, &st->nbtouched, &st->btouchcap, s))
            return -ENOMEM;
        s->btouched = true;
        s->nbents = 0; /* a new batch: its entries so far, none (writer.c B1) */
        if (s->bentcap > 4096) {
            free(s->bents);
            s->bents = NULL;
            s->bentcap = 0;
        }
    }
    return 0;
}

static int touch(evs_store *st, stream *s) { return touch_state(st, s, true); }

bool store_filter_field(void *arg, evs_slice name, evs_slice value)
{
    wop *hint = arg;
    if (!hint->has_source && name.len == 6 && !memcmp(name.ptr, "source", 6)) {
        hint->has_source = true;
        hint->hsource = idx_value_hash(value.ptr, value.len);
    } else if (!hint->has_type && name.len == 4 && !memcmp(name.ptr, "type", 4)) {
        hint->has_type = true;
        hint->htype = idx_value_hash(value.ptr, value.len);
    }
    return !(hint->has_source && hint->has_type);
}

/* Find the `source` and `type` fields of an entry body, for records the writer did not build
 * from a caller's fields (recovery, an index rebuild, a follower's replicated records): read
 * in place by the walk of rule 4, not decoded. Decoding with msgpack-c into a zone was 1,080
 * of the 2,300 instructions an entry of an index rebuild (callgrind, 1 M entries). */
static void entry_filter_fields(const uint8_t *body, uint32_t len, wop *hint)
{
    wop found = {0};
    if (rec_entry_pairs(body, len, store_filter_field, &found) == 0)
        *hint = found;
    else
        *hint = (wop){0}; /* a bad body: no filter keys */
}

/* Index an entry at pos: its sparse `ids` key when due (`key_due`, or enough bytes or entries
 * since the last; `ordinal` in its value), with a `times` key if asked (not for a moved copy:
 * those map times to IDs, which stay), then its filter postings. */
static int index_entry(evs_store *st, stream *s, const rec_hdr *h, const uint8_t *body,
                       uint64_t pos, uint64_t size, const wop *hint, bool key_due,
                       uint64_t ordinal, bool times)
{
    stream_state *w = &s->w;
    evs_id id = {h->id_ms, h->id_seq};
    int rc = 0;
    if (key_due || w->sparse_bytes >= EVS_SPARSE_BYTES || w->sparse_count >= EVS_SPARSE_COUNT) {
        uint8_t k[IDX_IDKEY], v[24];
        idx_idkey(k, s->no, id);
        idx_be64(v, pos);
        idx_be64(v + 8, h->time_us);
        idx_be64(v + 16, ordinal);
        rc = idx_batch_put(st->ib, IDX_IDS, k, sizeof k, v, sizeof v);
        uint8_t tk[12], tv[16];
        idx_be32(tk, s->no);
        idx_be64(tk + 4, h->time_us);
        idx_be64(tv, id.ms);
        idx_be64(tv + 8, id.seq);
        if (!rc && times)
            rc = idx_batch_put_noover(st->ib, IDX_TIMES, tk, sizeof tk, tv, sizeof tv);
        w->sparse_bytes = w->sparse_count = 0;
    }
    w->sparse_bytes += size;
    w->sparse_count++;
    wop local; /* set whole by entry_filter_fields: not cleared on the writer's path */
    if (!hint) {
        entry_filter_fields(body, h->body_len, &local);
        hint = &local;
    }
    if (!rc && hint->has_source)
        rc = post_add(st->post, st->ib, s->no, IDX_FIELD_SOURCE, hint->hsource, id, pos);
    if (!rc && hint->has_type)
        rc = post_add(st->post, st->ib, s->no, IDX_FIELD_TYPE, hint->htype, id, pos);
    return rc;
}

static int apply_entry(evs_store *st, stream *s, const rec_hdr *h, const uint8_t *body,
                       uint64_t pos, uint64_t size, const wop *hint)
{
    stream_state *w = &s->w;
    evs_id id = {h->id_ms, h->id_seq};
    if (w->entries_added > 0 && evs_id_cmp(id, w->last_id) <= 0)
        return EVS_ECORRUPT;
    bool was_empty = w->length == 0;
    if (was_empty) {
        w->first_id = id;
        w->first_pos = pos;
    }
    w->last_id = id;
    w->last_pos = pos;
    w->last_time_us = h->time_us;
    w->entries_added++;
    w->length++;
    w->bytes += size;
    /* a stream's first entry always gets a key (reader.c K1): not only its first ever, also
     * the first after it was emptied, after XSETID ENTRIESADDED on an empty stream, and after
     * an index rebuild from a log whose start retention deleted; keying only entries_added
     * == 1 left those without one below the next key, and forward reads skipped them */
    int rc = index_entry(st, s, h, body, pos, size, hint, was_empty, w->entries_added, true);
    if (!rc)
        rc = touch(st, s);
    return rc;
}

/*
 * A moved copy (REC_F_MOVED, retention.c's relocation): the copies of one stream come as one
 * atomic group, every live entry once, in ID order, the first with no `prev`. The first drops
 * the stream's `ids` and `filt` keys (they name the old chain); each copy is then indexed as
 * an entry at its new position (no `times` key: those map times to IDs, which stay). The
 * counters of appends (entries_added, length) do not move. The stream's positions and bytes
 * change only with the group's last copy (until then they are gathered in mv_*): a follower
 * may publish a batch that ends inside the group (its leader's frames do not follow groups),
 * and its readers and its retention must meet the old chain whole until the new one is. The
 * index commit is forced, so readers never meet the new state without the new keys; a
 * reader with the old state refuses the new keys (reader.c's key_ok: past its snapshot).
 */
static int apply_moved(evs_store *st, stream *s, const rec_hdr *h, uint64_t pos, uint64_t size,
                       const uint8_t *body, const wop *hint)
{
    stream_state *w = &s->w;
    evs_id id = {h->id_ms, h->id_seq};
    bool first = h->prev == REC_POS_NONE;
    /* a rebuild from a log whose start retention deleted, meeting a stream it pre-created
     * (prescan_declares) before that stream's declare record: its state is not known yet
     * (the declare brings it all), so the copies are checked as a chain only, and they are
     * its live entries until then */
    bool undeclared = st->history_cut && w->decl_pos == REC_POS_NONE;
    if ((!undeclared && (evs_id_cmp(id, w->last_id) > 0 || evs_id_cmp(id, w->first_id) < 0 ||
                         !w->length || (!first && s->mv_count >= w->length))) ||
        (!first && (h->prev != s->mv_last_pos || evs_id_cmp(id, s->mv_last) <= 0)))
        return EVS_ECORRUPT;
    int rc = 0;
    if (first) {
        uint8_t k[4];
        idx_be32(k, s->no);
        post_forget_stream(st->post, s->no);
        rc = idx_batch_del_prefix(st->ib, IDX_IDS, k, 4);
        if (!rc)
            rc = idx_batch_del_prefix(st->ib, IDX_FILT, k, 4);
        s->mv_first_pos = pos;
        s->mv_bytes = 0;
        s->mv_count = 0;
        if (undeclared)
            w->first_id = id;
    }
    if (!rc)
        rc = index_entry(st, s, h, body, pos, size, hint, first, s->mv_count + 1, false);
    s->mv_last_pos = pos;
    s->mv_bytes += size;
    s->mv_last = id;
    s->mv_count++;
    if (!(h->flags & REC_F_TXN_CONT)) { /* the group's last copy: the new chain takes over */
        if (undeclared) {
            w->length = s->mv_count;
            if (evs_id_cmp(id, w->last_id) > 0)
                w->last_id = id;
        } else if (s->mv_count != w->length) {
            return EVS_ECORRUPT; /* it ended short of the live entries */
        }
        w->first_pos = w->moved_pos = s->mv_first_pos;
        w->last_pos = pos;
        w->bytes = s->mv_bytes;
    }
    st->idx_force = true;
    if (!rc)
        rc = touch_state(st, s, false); /* not a change a client sees (WATCH, evs_version) */
    return rc;
}

/* An idempotency key: (no, key) -> first, last, count, time, and (time, no, key) for its
 * expiry (retention.c R8). Readers need it at once. One already past its window (the log
 * read again at open, or to rebuild the index) is not put back. */
static int apply_idem(evs_store *st, stream *s, const rec_hdr *h, const uint8_t *body,
                      evs_error *err)
{
    evs_slice name, key;
    uint64_t v[5];
    if (rec_idem_decode(body, h->body_len, &name, &key, v) || key.len > EVS_IDEM_KEY_MAX)
        return evs_err_set(err, EVS_ECORRUPT, "malformed idempotency record");
    if (!s || !s->w_live)
        return evs_err_set(err, EVS_ECORRUPT, "idempotency key of unknown stream %u", h->stream);
    uint8_t k[4 + EVS_IDEM_KEY_MAX], val[48];
    idx_be32(k, s->no);
    memcpy(k + 4, key.ptr, key.len);
    for (int i = 0; i < 5; i++)
        idx_be64(val + 8 * i, v[i]);
    idx_be64(val + 40, h->time_us);
    if (h->time_us + EVS_IDEM_WINDOW_US < evs_now_us())
        return 0;
    st->idx_force = true; /* a retry right after the acknowledgement must find it */
    uint8_t tk[IDX_IDEM_TIME_KEY_MAX];
    idx_be64(tk, h->time_us);
    memcpy(tk + 8, k, 4 + key.len);
    if (idx_batch_put(st->ib, IDX_IDEM, k, 4 + key.len, val, sizeof val) ||
        idx_batch_put(st->ib, IDX_IDEM_TIME, tk, 8 + 4 + key.len, NULL, 0))
        return evs_err_set(err, -ENOMEM, "out of memory");
    return 0;
}

/* The whole state a declare record carries (REC_DECLARE_N numbers). */
void store_declare_encode(const stream_state *w, uint64_t *v)
{
    uint64_t d[REC_DECLARE_N] = {w->created_us, w->last_id.ms, w->last_id.seq, w->first_id.ms,
                                 w->first_id.seq, w->max_deleted.ms, w->max_deleted.seq,
                                 w->entries_added, w->length, w->ndels, w->bytes, w->first_pos,
                                 w->last_pos, w->last_time_us, w->ret.max_age_ms,
                                 w->ret.max_bytes, w->ret.max_entries};
    memcpy(v, d, sizeof d);
}

static void declare_apply(stream_state *w, const uint64_t *v)
{
    w->created_us = v[0];
    w->last_id = (evs_id){v[1], v[2]};
    w->first_id = (evs_id){v[3], v[4]};
    w->max_deleted = (evs_id){v[5], v[6]};
    w->entries_added = v[7];
    w->length = v[8];
    w->ndels = v[9];
    w->bytes = v[10];
    w->first_pos = v[11];
    w->last_pos = v[12];
    w->last_time_us = v[13];
    w->ret = (stream_ret){v[14], v[15], v[16]};
}

static int apply_stream(evs_store *st, const rec_hdr *h, const uint8_t *body, uint64_t pos,
                        evs_error *err)
{
    int op;
    evs_slice name;
    uint64_t extra[REC_STREAM_MAX_EXTRA];
    size_t nextra = 0;
    stream *s = numtab_get(&st->byno, h->stream);
    if (h->body_len > 1 && body[1] == REC_STREAM_IDEM) /* [4, ...]: fixarray then the op */
        return apply_idem(st, s, h, body, err);
    if (rec_stream_decode(body, h->body_len, &op, &name, extra, &nextra))
        return evs_err_set(err, EVS_ECORRUPT, "malformed stream record");
    switch (op) {
    case REC_STREAM_CREATE:
        if (strtab_get(&st->wtab, name.ptr, name.len, false))
            return evs_err_set(err, EVS_ECORRUPT, "stream created twice");
        if (h->stream < st->next_no) /* S4: creates name increasing numbers */
            return evs_err_set(err, EVS_ECORRUPT, "stream number %u created after %u: numbers "
                               "are never reused", h->stream, st->next_no - 1);
        s = store_stream_new(st, h->stream, name.ptr, name.len);
        if (!s)
            return evs_err_set(err, EVS_ECORRUPT, "stream number %u past the most a store "
                               "assigns (%u), or out of memory", h->stream,
                               EVS_STREAM_NO_MAX - 1);
        s->w.created_us = h->time_us;
        s->w.decl_pos = pos;
        s->w_live = true;
        if (strtab_put(&st->wtab, s, false))
            return evs_err_set(err, -ENOMEM, "out of memory");
        if (h->stream >= st->next_no)
            st->next_no = h->stream + 1;
        uint8_t k[4];
        idx_be32(k, s->no);
        if (idx_batch_put(st->ib, IDX_STREAM_NO, k, 4, name.ptr, name.len) || touch(st, s))
            return evs_err_set(err, -ENOMEM, "out of memory");
        return 0;
    case REC_STREAM_SETID:
        if (!s || !s->w_live || nextra != 5)
            return evs_err_set(err, EVS_ECORRUPT, "set-ID of unknown stream %u", h->stream);
        s->w.last_id = (evs_id){extra[0], extra[1]};
        s->w.entries_added = extra[2];
        s->w.max_deleted = (evs_id){extra[3], extra[4]};
        if (touch(st, s))
            return evs_err_set(err, -ENOMEM, "out of memory");
        return 0;
    case REC_STREAM_RETENTION:
        if (!s || !s->w_live || nextra != 3)
            return evs_err_set(err, EVS_ECORRUPT, "retention of unknown stream %u", h->stream);
        s->w.ret = (stream_ret){extra[0], extra[1], extra[2]};
        if (touch(st, s))
            return evs_err_set(err, -ENOMEM, "out of memory");
        return 0;
    case REC_STREAM_DECLARE:
        /* Normally the stream's state already equals the record's (the writer made it from
         * that state): only decl_pos moves. A rebuild whose log starts after the stream's
         * create record met the stream first here (pre-created by recover()): take it all. */
        if (!s || !s->w_live || nextra != REC_DECLARE_N || s->name_len != name.len ||
            memcmp(s->name, name.ptr, name.len))
            return evs_err_set(err, EVS_ECORRUPT, "declare of unknown stream %u", h->stream);
        declare_apply(&s->w, extra);
        s->w.decl_pos = pos;
        if (touch_state(st, s, false))
            return evs_err_set(err, -ENOMEM, "out of memory");
        return 0;
    case REC_STREAM_DROP:
        if (!s || !s->w_live)
            return evs_err_set(err, EVS_ECORRUPT, "drop of unknown stream %u", h->stream);
        strtab_del(&st->wtab, s, false);
        s->w_live = false;
        if (group_drop_all(st, s) || touch(st, s))
            return evs_err_set(err, -ENOMEM, "out of memory");
        free(s->bents); /* no entry joins a dropped stream (B1): its list goes now */
        s->bents = NULL;
        s->bentcap = 0;
        s->nbents = UINT32_MAX;
        s->grave_next = st->grave; /* freed once nothing holds it (streams.c S3) */
        st->grave = s;
        atomic_fetch_add(&st->ngrave, 1);
        return 0;
    default:
        return evs_err_set(err, EVS_ECORRUPT, "unknown stream operation %d", op);
    }
}

/* A read-only open writes no index, so the tombstones it meets past the watermark are kept
 * here for readers (store_ro_deleted), in key order; without them an entry whose tombstone the
 * index had not taken yet (an XDEL never acknowledged: acknowledged ones are indexed first)
 * showed in dump while the stream's length left it out. */
static size_t ro_del_find(const evs_store *st, const uint8_t *k, bool *found)
{
    size_t lo = 0, hi = st->nro_dels;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(st->ro_dels + mid * IDX_IDKEY, k, IDX_IDKEY);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int ro_del_add(evs_store *st, const uint8_t k[IDX_IDKEY])
{
    bool found;
    size_t at = ro_del_find(st, k, &found);
    if (found)
        return 0;
    if (arr_room(&st->ro_dels, st->nro_dels, &st->ro_dels_cap, IDX_IDKEY, 64))
        return -ENOMEM;
    memmove(st->ro_dels + (at + 1) * IDX_IDKEY, st->ro_dels + at * IDX_IDKEY,
            (st->nro_dels - at) * IDX_IDKEY);
    memcpy(st->ro_dels + at * IDX_IDKEY, k, IDX_IDKEY);
    st->nro_dels++;
    return 0;
}

bool store_ro_deleted(const evs_store *st, const uint8_t *key)
{
    bool found = false;
    if (st->nro_dels)
        ro_del_find(st, key, &found);
    return found;
}


int store_apply_record(evs_store *st, const rec_hdr *h, const uint8_t *body, uint64_t pos,
                       uint64_t size, evs_error *err)
{
    return store_apply_record_hint(st, h, body, pos, size, NULL, err);
}

/* A rebuild from a log whose start retention deleted (history_cut): is this a record of a
 * stream created before the log's first segment and not declared yet? Such records are
 * skipped: their effect is in the declare record that follows (retention wrote it before it
 * deleted the segment holding the create). */
static bool before_history(evs_store *st, const rec_hdr *h, const uint8_t *body)
{
    stream *s = numtab_get(&st->byno, h->stream);
    if (h->kind == REC_SEAL || h->kind == REC_EPOCH || (s && s->w_live))
        return false;
    if (h->kind == REC_STREAM) {
        int op;
        evs_slice name;
        uint64_t extra[REC_STREAM_MAX_EXTRA];
        size_t n;
        if (h->body_len > 1 && body[1] == REC_STREAM_IDEM)
            return true;
        if (rec_stream_decode(body, h->body_len, &op, &name, extra, &n))
            return false; /* malformed: let the apply report it */
        return op != REC_STREAM_CREATE;
    }
    return true;
}

int store_apply_record_hint(evs_store *st, const rec_hdr *h, const uint8_t *body, uint64_t pos,
                            uint64_t size, const wop *hint, evs_error *err)
{
    int rc = 0;
    stream *s = numtab_get(&st->byno, h->stream);
    if (st->history_cut && before_history(st, h, body))
        goto done;
    switch (h->kind) {
    case REC_ENTRY:
        if (!s || !s->w_live)
            return evs_err_set(err, EVS_ECORRUPT, "entry of unknown stream %u", h->stream);
        if (h->flags & REC_F_MOVED) {
            rc = apply_moved(st, s, h, pos, size, body, hint);
            if (rc == EVS_ECORRUPT)
                return evs_err_set(err, rc, "moved entry out of place (not the next live "
                                            "entry of its relocation)");
            break;
        }
        rc = apply_entry(st, s, h, body, pos, size, hint);
        if (rc == EVS_ECORRUPT)
            return evs_err_set(err, rc, "entry ID not above the stream's last ID");
        break;
    case REC_TOMBSTONE: {
        if (!s || !s->w_live)
            return evs_err_set(err, EVS_ECORRUPT, "tombstone of unknown stream %u", h->stream);
        evs_id id = {h->id_ms, h->id_seq};
        uint8_t k[IDX_IDKEY], v[8];
        idx_idkey(k, s->no, id);
        idx_be64(v, pos);
        rc = idx_batch_put(st->ib, IDX_DELS, k, sizeof k, v, sizeof v);
        if (!rc && st->opt.read_only && !st->idx_private)
            rc = ro_del_add(st, k);
        if (s->w.length)
            s->w.length--;
        /* the deleted entry's bytes leave the stream's live bytes (a body of [bytes]; `nil`
         * in logs before session 28, which left them counted until the stream was empty) */
        uint64_t gone = 0;
        size_t ng = 0;
        if (h->body_len && body[0] != 0xc0 &&
            (rec_uints_decode(body, h->body_len, &gone, 1, &ng) || ng != 1))
            return evs_err_set(err, EVS_ECORRUPT, "malformed tombstone record");
        s->w.bytes = gone < s->w.bytes && s->w.length ? s->w.bytes - gone : 0;
        s->w.ndels++;
        if (evs_id_cmp(id, s->w.max_deleted) > 0)
            s->w.max_deleted = id;
        st->idx_force = true; /* readers look tombstones up in the index */
        if (!rc)
            rc = touch(st, s);
        break;
    }
    case REC_STREAM:
        rc = apply_stream(st, h, body, pos, err);
        if (rc)
            return rc;
        break;
    case REC_TRIM: {
        if (!s || !s->w_live)
            return evs_err_set(err, EVS_ECORRUPT, "trim of unknown stream %u", h->stream);
        uint64_t v[3];
        size_t nv = 0;
        if (rec_uints_decode(body, h->body_len, v, 3, &nv) || (nv != 1 && nv != 3))
            return evs_err_set(err, EVS_ECORRUPT, "malformed trim record");
        evs_id first = {h->id_ms, h->id_seq};
        if (evs_id_cmp(first, s->w.first_id) > 0)
            s->w.first_id = first; /* readers start here: everything below is gone */
        s->w.length = v[0] < s->w.length ? s->w.length - v[0] : 0;
        if (!s->w.length)
            s->w.bytes = 0; /* none live: none counted (heals logs whose tombstones were nil) */
        if (nv == 3) { /* bytes and the new first entry's position (retention) */
            s->w.bytes = v[1] < s->w.bytes ? s->w.bytes - v[1] : 0;
            s->w.first_pos = s->w.length ? v[2] : REC_POS_NONE;
            /* planned on the chain a relocation replaced (a snapshot from before it): the
             * new chain's start is a safe floor (reads clamp to first_id anyway) */
            if (s->w.length && s->w.moved_pos != REC_POS_NONE && v[2] < s->w.moved_pos)
                s->w.first_pos = s->w.moved_pos;
        }
        rc = touch(st, s);
        break;
    }
    case REC_GROUP:
        if (!s || !s->w_live)
            return evs_err_set(err, EVS_ECORRUPT, "group event of unknown stream %u", h->stream);
        if ((rc = group_apply(st, s, h, body, pos, err)))
            return rc;
        rc = touch_state(st, s, false); /* group state is not the stream's version */
        break;
    case REC_SEAL:
    case REC_EPOCH:
        break; /* SEAL handled by the scanner; EPOCH by the replication module */
    }
    if (rc)
        return evs_err_set(err, rc, "index batch: %s", evs_strerror(rc));
done:
    st->tail = pos + size;
    st->last_rec_pos = pos;
    st->last_crc = h->crc;
    st->idx_records++;
    if (h->time_us > st->last_time_us)
        st->last_time_us = h->time_us;
    return 0;
}

/* The streams table's key for a stream name: the name itself, but for the empty name (an
 * LMDB key is at least one byte), whose key is one no name can be: EVS_STREAM_NAME_MAX + 1
 * zero bytes (docs/format.md). */
static const uint8_t empty_name_key[EVS_STREAM_NAME_MAX + 1];

static evs_slice streams_key(const stream *s)
{
    return s->name_len ? (evs_slice){s->name, s->name_len}
                       : (evs_slice){empty_name_key, sizeof empty_name_key};
}

/* The name a streams-table key stands for; false for a key no name can have. */
static bool streams_key_name(const void *k, size_t kl, evs_slice *name)
{
    if (kl == sizeof empty_name_key && !memcmp(k, empty_name_key, kl)) {
        *name = (evs_slice){empty_name_key, 0};
        return true;
    }
    *name = (evs_slice){k, kl};
    return kl >= 1 && kl <= EVS_STREAM_NAME_MAX;
}

int store_index_build(evs_store *st, evs_error *err)
{
    uint8_t k[EVS_STREAM_NAME_MAX + 8], v[STREAM_STATE_BYTES + 64];
    if (post_flush(st->post, st->ib))
        return evs_err_set(err, -ENOMEM, "index batch: out of memory");
    for (size_t i = 0; i < st->ntouched; i++) {
        stream *s = st->touched[i];
        int rc;
        if (s->w_live) {
            stream_state_encode(&s->w, v);
            evs_slice key = streams_key(s);
            rc = idx_batch_put(st->ib, IDX_STREAMS, key.ptr, key.len, v, STREAM_STATE_BYTES);
            if (!rc && s->gtouched)
                rc = group_flush(st, s);
        } else {
            post_forget_stream(st->post, s->no);
            evs_slice key = streams_key(s);
            rc = idx_batch_del(st->ib, IDX_STREAMS, key.ptr, key.len);
            idx_be32(k, s->no);
            for (int t = IDX_IDS; !rc && t <= IDX_DELS; t++)
                rc = idx_batch_del_prefix(st->ib, (enum idx_table)t, k, 4);
            if (!rc)
                rc = idx_batch_del_prefix(st->ib, IDX_IDEM, k, 4);
        }
        if (rc)
            return evs_err_set(err, rc, "index batch: out of memory");
    }
    if (st->last_rec_pos != REC_POS_NONE) {
        idx_be64(v, st->tail);
        idx_be64(v + 8, st->last_rec_pos);
        idx_be32(v + 16, st->last_crc);
        idx_be32(v + 20, st->next_no);
        if (idx_batch_put(st->ib, IDX_META, "watermark", 9, v, 24))
            return evs_err_set(err, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < st->ntouched; i++)
        st->touched[i]->touched = false;
    st->ntouched = 0;
    st->idx_records = 0;
    st->idx_force = false;
    st->ib_end = st->tail;
    return 0;
}

int store_index_flush(evs_store *st, evs_error *err)
{
    int rc = store_index_build(st, err);
    if (rc) {
        idx_batch_clear(st->ib);
        return rc;
    }
    return indexer_put(st, true, err); /* applied here, as the writer's forced commits are */
}

/* ---- opening ----------------------------------------------------------------------------- */

static int cmp_seg(const void *a, const void *b)
{
    const segment *x = *(segment *const *)a, *y = *(segment *const *)b;
    return x->base < y->base ? -1 : x->base > y->base;
}

int seg_push(segment ***v, size_t *n, size_t *cap, segment *s)
{
    if (arr_room(v, *n, cap, sizeof **v, 16))
        return -ENOMEM;
    (*v)[(*n)++] = s;
    return 0;
}

int store_add_segment(evs_store *st, segment *s)
{
    int rc = seg_push(&st->segs, &st->nsegs, &st->segcap, s);
    if (!rc) /* its mapping may go while nobody but the table holds it (segment.c M2) */
        atomic_store(&s->evictable, true);
    return rc;
}

/* The space reserve left by the last run (preparer.c P3): kept when it has this run's segment
 * size, else deleted with the other .tmp files (and made again). */
static bool keep_reserve(evs_store *st)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", st->logdir, PREP_RESERVE);
    struct stat sb;
    st->reserve_ready = stat(p, &sb) == 0 && (uint64_t)sb.st_size == st->opt.segment_bytes;
    return st->reserve_ready;
}

/* Bytes cut from the log and kept beside it for inspection (a torn tail's, *.torn; a
 * follower's divergent tail, *.diverged): evstore never reads or removes them, so an open
 * counts them and says so, for an operator to look at and remove. */
static void count_set_aside(evs_store *st)
{
    DIR *d = opendir(st->logdir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (!(len > 5 && !strcmp(de->d_name + len - 5, ".torn")) &&
            !(len > 9 && !strcmp(de->d_name + len - 9, ".diverged")))
            continue;
        char p[PATH_MAX];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", st->logdir, de->d_name);
        if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
            st->set_aside_files++;
            st->set_aside_bytes += (uint64_t)sb.st_size;
        }
    }
    closedir(d);
    if (st->set_aside_files)
        evs_log(st, EVS_LOG_INFO, "%s keeps %" PRIu64 " files (%" PRIu64 " bytes) cut from the "
                "log (*.torn, *.diverged): never read or removed by evstore, there to inspect",
                st->logdir, st->set_aside_files, st->set_aside_bytes);
}

static int load_segments(evs_store *st, evs_error *err)
{
    DIR *d = opendir(st->logdir);
    if (!d)
        return evs_err_set(err, -errno, "cannot list %s: %s", st->logdir, strerror(errno));
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) && !rc) {
        size_t len = strlen(de->d_name);
        if (!strcmp(de->d_name, PREP_RESERVE) && !st->opt.read_only && keep_reserve(st))
            continue;
        if ((len > 4 && !strcmp(de->d_name + len - 4, ".tmp")) ||
            (len > 8 && !strcmp(de->d_name + len - 8, ".deleted"))) {
            if (!st->opt.read_only) {
                char p[PATH_MAX];
                snprintf(p, sizeof p, "%s/%s", st->logdir, de->d_name);
                if (de->d_name[len - 1] == 'p')
                    unlink(p); /* never renamed into place: no live byte */
                else
                    rel_delete(st, p); /* retention's, its space not all given back (L4) */
            }
            continue;
        }
        uint64_t base;
        if (!seg_name_parse(de->d_name, &base))
            continue;
        segment *s;
        if ((rc = seg_open(st->logdir, de->d_name, st->opt.read_only, &s, err)))
            break;
        if ((rc = store_add_segment(st, s))) {
            seg_free(s);
            evs_err_set(err, rc, "out of memory");
        }
    }
    closedir(d);
    for (size_t i = 0; !rc && i < st->npend_open; i++) { /* adopt_pending's (D4) */
        char name[48];
        snprintf(name, sizeof name, "%020" PRIu64 ".seg%s", st->pend_open[i], SEG_PENDING);
        segment *s;
        if ((rc = seg_open_file(st->logdir, name, st->pend_open[i], st->opt.read_only, &s,
                                err)))
            break;
        atomic_store(&s->pending_name, true);
        if ((rc = store_add_segment(st, s))) {
            seg_free(s);
            evs_err_set(err, rc, "out of memory");
        }
    }
    if (!rc && st->nsegs > 1)
        qsort(st->segs, st->nsegs, sizeof *st->segs, cmp_seg);
    return rc;
}

/* ---- deferred rolls a crash left pending (preparer.c D4) ----------------------------------- */

/* Whether the segment file at `path`, at log position `base`, holds valid records up to a
 * seal that ends exactly at position `end`. */
static bool seg_complete(const char *path, uint64_t base, uint64_t end)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat sb;
    bool ok = false;
    uint64_t len = end - base;
    if (end > base && fstat(fd, &sb) == 0 && (uint64_t)sb.st_size >= len) {
        uint8_t *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) {
            for (uint64_t off = 0; off < len;) {
                rec_hdr h;
                uint64_t sz;
                if (rec_check(p + off, len - off, &h, &sz) != REC_OK)
                    break;
                off += sz;
                if (h.kind == REC_SEAL) {
                    ok = off == len;
                    break;
                }
            }
            munmap(p, len);
        }
    }
    close(fd);
    return ok;
}

int arr_room(void *pv, size_t n, size_t *cap, size_t elem, size_t first)
{
    if (n < *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : first;
    void *a = realloc(*(void **)pv, c * elem);
    if (!a)
        return -ENOMEM;
    *(void **)pv = a;
    *cap = c;
    return 0;
}

int u64_push(uint64_t **v, size_t *n, size_t *cap, uint64_t x)
{
    if (arr_room(v, *n, cap, sizeof **v, 8))
        return -ENOMEM;
    (*v)[(*n)++] = x;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void ckpt_path(const evs_store *st, char path[PATH_MAX])
{
    snprintf(path, PATH_MAX, "%s/index.ckpt", st->dir);
}

/* index.ckpt (ckpt_parse): 2 with its fields, -1 if there is no such file, 0 if it is
 * malformed. */
static int ckpt_read(evs_store *st, char fboot[64], uint64_t *txn, bool *open)
{
    char path[PATH_MAX], buf[256];
    ckpt_path(st, path);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return ckpt_parse(buf, len, fboot, txn, open) ? 0 : 2;
}

/* The index checkpoint was written in this boot: the machine has not restarted since, so
 * the page cache holds every byte any process wrote to the log meanwhile. */
static bool same_boot(evs_store *st)
{
    char boot[64], fboot[64] = "";
    uint64_t txn;
    bool open;
    if (ckpt_read(st, fboot, &txn, &open) != 2)
        return false;
    return store_boot_id(boot, sizeof boot) == 0 && strcmp(boot, fboot) == 0;
}

/* D4: each "<base>.seg.pending" file, in order, is part of the log if the segment before it
 * is complete and sealed where it begins — known without reading it when the machine has
 * not restarted since (a kill -9: the page cache had every byte), else checked record by
 * record. Such files are opened under their pending names (load_segments) and their roll
 * jobs queued again (store_requeue_rolls), so an open syncs nothing for them; only when a
 * follower's cut is due (TRUNCATE, which lists segment names) are they synced and named
 * here. From the first one that does not qualify (a power cut lost part of its predecessor)
 * they are renamed "<name>.pending.torn" and are no longer part of the log. A read-only open
 * reads the qualifying ones and changes nothing. Runs before a follower's cut. */
static int adopt_pending(evs_store *st, evs_error *err)
{
    DIR *d = opendir(st->logdir);
    if (!d)
        return 0; /* load_segments says why */
    uint64_t *pend = NULL, last = 0;
    size_t np = 0, cap = 0;
    bool have_last = false;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) && !rc) {
        uint64_t base;
        char nm[32];
        if (strlen(de->d_name) == 24 + strlen(SEG_PENDING) &&
            !strcmp(de->d_name + 24, SEG_PENDING)) {
            memcpy(nm, de->d_name, 24);
            nm[24] = 0;
            if (!seg_name_parse(nm, &base))
                continue;
            if (u64_push(&pend, &np, &cap, base)) {
                rc = evs_err_set(err, -ENOMEM, "out of memory");
                break;
            }
        } else if (seg_name_parse(de->d_name, &base) && (!have_last || base > last)) {
            last = base;
            have_last = true;
        }
    }
    closedir(d);
    if (np > 1)
        qsort(pend, np, sizeof *pend, cmp_u64);
    char trunc[PATH_MAX];
    snprintf(trunc, sizeof trunc, "%s/TRUNCATE", st->dir);
    bool name_now = !st->opt.read_only && access(trunc, F_OK) == 0;
    bool trusted = np && same_boot(st);
    bool chain = have_last;
    char prev[PATH_MAX + 16];
    snprintf(prev, sizeof prev, "%s/%020" PRIu64 ".seg", st->logdir, last);
    for (size_t i = 0; i < np && !rc; i++) {
        char named[PATH_MAX], path[PATH_MAX + 16], aside[PATH_MAX + 32];
        snprintf(named, sizeof named, "%s/%020" PRIu64 ".seg", st->logdir, pend[i]);
        snprintf(path, sizeof path, "%s%s", named, SEG_PENDING);
        chain = chain && pend[i] > last && (trusted || seg_complete(prev, last, pend[i]));
        if (!chain) {
            if (st->opt.read_only) {
                evs_log(st, EVS_LOG_WARN,
                        "pending segment %020" PRIu64 ".seg does not follow a complete, sealed "
                        "segment: not read (read-only; a writable open sets it aside)",
                        pend[i]);
                continue;
            }
            snprintf(aside, sizeof aside, "%s.torn", path);
            int mv = st->io->rename(path, aside);
            if (mv)
                rc = evs_err_set(err, mv, "cannot rename %s: %s", path, strerror(-mv));
            else
                evs_log(st, EVS_LOG_WARN,
                        "pending segment %020" PRIu64 ".seg does not follow a complete, sealed "
                        "segment (a power cut before its predecessor was synced): its bytes are "
                        "kept in %s and are not part of the log",
                        pend[i], aside);
            continue;
        }
        if (name_now) {
            int fd = open(prev, O_RDONLY | O_CLOEXEC);
            if (fd < 0 || (rc = st->io->fdatasync(fd)) || (rc = st->io->rename(path, named)) ||
                (rc = fio_fsync_dir(st->io, st->logdir)))
                rc = evs_err_set(err, rc ? rc : -errno, "cannot name pending segment %s: %s",
                                 path, strerror(rc ? -rc : errno));
            if (fd >= 0)
                close(fd);
            snprintf(prev, sizeof prev, "%s", named);
        } else {
            if (u64_push(&st->pend_open, &st->npend_open, &st->pend_cap, pend[i])) {
                rc = evs_err_set(err, -ENOMEM, "out of memory");
                break;
            }
            snprintf(prev, sizeof prev, "%s", path);
        }
        evs_log(st, EVS_LOG_INFO,
                "pending segment %020" PRIu64 ".seg follows a complete, sealed segment%s: part "
                "of the log%s",
                pend[i], trusted ? " (same boot)" : "",
                name_now ? ", named now" : st->opt.read_only ? "" : "; named once synced");
        last = pend[i];
    }
    free(pend);
    return rc;
}

/* D4: queue again the roll jobs of the pending segments the open took in (prev is the segment
 * before each); before the preparer and the writer start. */
static void store_requeue_rolls(evs_store *st)
{
    for (size_t i = 1; i < st->nsegs; i++)
        if (atomic_load(&st->segs[i]->pending_name))
            prep_queue_roll(st, st->segs[i - 1], st->segs[i]);
}

int store_boot_id(char *out, size_t cap)
{
    const char *fake = getenv("EVSTORE_TEST_BOOT_ID"); /* power-loss simulation in tests */
    if (fake) {
        snprintf(out, cap, "%s", fake);
        return 0;
    }
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f || !fgets(out, (int)cap, f)) {
        if (f)
            fclose(f);
        snprintf(out, cap, "unknown");
        return -1;
    }
    fclose(f);
    out[strcspn(out, "\n")] = 0;
    return 0;
}

static int ckpt_write(evs_store *st, uint64_t txn, bool open)
{
    char boot[64], path[PATH_MAX], buf[160];
    store_boot_id(boot, sizeof boot);
    size_t n = ckpt_format(buf, sizeof buf, boot, txn, open);
    ckpt_path(st, path);
    return fio_write_file_atomic(st->io, path, buf, n);
}

/* index.ckpt says txn is durable and nothing follows it (not open), and the store knows it. */
static int ckpt_record(evs_store *st, uint64_t txn)
{
    int rc = ckpt_write(st, txn, false);
    if (!rc) {
        atomic_store(&st->ckpt_txnid, txn);
        atomic_store(&st->ckpt_open, false);
    }
    return rc;
}

int store_checkpoint_write(evs_store *st, uint64_t txn)
{
    pthread_mutex_lock(&st->ckfile_mu);
    /* K1: else the file stays open; the next checkpoint records it */
    int rc = idx_txnid(st->idx) == txn ? ckpt_record(st, txn) : 0;
    pthread_mutex_unlock(&st->ckfile_mu);
    return rc;
}

void store_checkpoint_open(evs_store *st)
{
    if (st->opt.read_only || atomic_load(&st->ckpt_open))
        return; /* (a read-only open's rebuilt index is a private one: nothing of the folder's) */
    pthread_mutex_lock(&st->ckfile_mu);
    if (!atomic_load(&st->ckpt_open)) {
        char path[PATH_MAX];
        ckpt_path(st, path);
        int rc = ckpt_write(st, atomic_load(&st->ckpt_txnid), true);
        if (rc) /* no file at all: not trusted after a reboot either (nor after a kill) */
            rc = unlink(path) && errno != ENOENT ? -errno : fio_fsync_dir(st->io, st->dir);
        if (rc && !st->ckpt_open_failed)
            evs_log(st, EVS_LOG_ERROR, "cannot mark %s as open before an index commit (%s): "
                    "after a power cut the index might be trusted as of its last checkpoint",
                    path, strerror(-rc));
        st->ckpt_open_failed = rc != 0;
        atomic_store(&st->ckpt_open, rc == 0);
    }
    pthread_mutex_unlock(&st->ckfile_mu);
}

/*
 * index.ckpt (docs/format.md): "boot <id>\ntxn <n>\n", and "open\n" while commits may follow.
 *  K1. Before the first index commit after a checkpoint (or after an open), the file says
 *      "open", durably (store_checkpoint_open); a checkpoint clears it only if the index has
 *      not committed since the transaction it synced (store_checkpoint_write), so a cleared
 *      file is followed by at most the one commit in flight when the checkpoint looked, and
 *      the next commit marks it again first. LMDB reuses the pages a commit frees two
 *      transactions later at the earliest, so that one commit cannot overwrite the
 *      checkpointed tree.
 *  K2. After a reboot the index is trusted only if the file is not open and names its last
 *      transaction: LMDB writes without syncs between checkpoints, and a power cut can leave
 *      later commits' pages under the checkpoint's meta pages; the number alone matched then.
 */

/* True when the index can be trusted as far as the machine's memory goes: same boot as the
 * last checkpoint (page cache intact), or no transaction since it (K2). */
static bool checkpoint_ok(evs_store *st)
{
    char boot[64], fboot[64] = "";
    uint64_t txn = 0;
    bool open = false;
    int n = ckpt_read(st, fboot, &txn, &open);
    if (n < 0)
        return idx_txnid(st->idx) == 0;
    if (n != 2)
        return false;
    atomic_store(&st->ckpt_txnid, txn);
    return (store_boot_id(boot, sizeof boot) == 0 && strcmp(boot, fboot) == 0) ||
           (!open && idx_txnid(st->idx) == txn); /* K2 */
}

/* Keeps index.ckpt's second promise from the open on: every index transaction after its txn
 * is committed in the boot it names. A read-write open whose file names another boot (a
 * reboot since; the index was trusted by its txn) or none (a fresh index) writes one naming
 * this boot, with the same txn, before the index's first commit — so a kill -9 later in this
 * boot finds the index trusted. Without it a store that had never checkpointed (--fsync no,
 * or killed in its first second) rebuilt its index on every open after a kill, and read-only
 * tools (verify, dump) refused it until then. Writing it needs no sync for safety: only the
 * boot that wrote it can match it. */
static int checkpoint_claim(evs_store *st, evs_error *err)
{
    char boot[64], fboot[64] = "";
    uint64_t txn = 0;
    bool open = false;
    int n = ckpt_read(st, fboot, &txn, &open);
    if (store_boot_id(boot, sizeof boot) || (n == 2 && strcmp(boot, fboot) == 0))
        return 0;
    int rc = ckpt_record(st, n == 2 ? txn : 0);
    return rc ? evs_err_set(err, rc, "cannot write %s/index.ckpt: %s", st->dir, evs_strerror(rc))
              : 0;
}

static int load_streams(evs_store *st, evs_error *err)
{
    idx_rtxn *r;
    int rc = idx_rbegin(st->idx, &r);
    if (rc)
        return evs_err_set(err, rc, "index read failed: %s", evs_strerror(rc));
    idx_cur *c;
    if ((rc = idx_cur_open(r, IDX_STREAMS, &c))) {
        idx_rend(r);
        return evs_err_set(err, rc, "index read failed: %s", evs_strerror(rc));
    }
    const void *k, *v;
    size_t kl, vl;
    for (rc = idx_cur_get(c, IDX_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == 0;
         rc = idx_cur_get(c, IDX_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
        stream_state ss;
        evs_slice name;
        if (stream_state_decode(v, vl, &ss) || !streams_key_name(k, kl, &name)) {
            rc = EVS_ECORRUPT;
            break;
        }
        stream *s = store_stream_new(st, ss.no, name.ptr, name.len);
        if (!s) {
            rc = EVS_ECORRUPT;
            break;
        }
        s->w = s->v = ss;
        s->w_changes_out = ss.changes;
        s->w_live = s->v_live = true;
        if (strtab_put(&st->wtab, s, false) || strtab_put(&st->vtab, s, true)) {
            rc = -ENOMEM;
            break;
        }
    }
    idx_cur_close(c);
    idx_rend(r);
    if (rc == EVS_ENOTFOUND)
        rc = 0;
    if (rc)
        return evs_err_set(err, rc, "index stream table unreadable: %s", evs_strerror(rc));
    return 0;
}

/* The watermark, if the index has one and the log agrees with it. */
static int watermark_check(evs_store *st, idx_watermark *wm, uint32_t *next_no, bool *present,
                           uint8_t *last_kind)
{
    *present = false;
    idx_rtxn *r;
    int rc = idx_rbegin(st->idx, &r);
    if (rc)
        return rc;
    const void *v;
    size_t vl;
    rc = idx_get(r, IDX_META, "watermark", 9, &v, &vl);
    if (rc == 0 && vl == 24) {
        const uint8_t *p = v;
        wm->end = idx_rd64(p);
        wm->last_pos = idx_rd64(p + 8);
        wm->last_crc = idx_rd32(p + 16);
        *next_no = idx_rd32(p + 20);
        *present = true;
    } else if (rc == 0) {
        rc = EVS_ECORRUPT;
    }
    idx_rend(r);
    if (rc == EVS_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    rec_hdr h;
    const uint8_t *body;
    uint64_t size;
    segment *ref = NULL;
    evs_error e;
    int bad = store_read_record(st, wm->last_pos, "(watermark)", &h, &body, &size, &ref, &e);
    store_seg_put(ref);
    if (bad || h.crc != wm->last_crc || wm->last_pos + size != wm->end)
        return EVS_ECORRUPT;
    *last_kind = h.kind;
    return 0;
}

/* Remove every index.damaged-* in the store's folder but `keep` (a name in it). */
static void remove_old_asides(evs_store *st, const char *keep)
{
    DIR *d = opendir(st->dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "index.damaged-", 14) || !strcmp(de->d_name, keep))
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", st->dir, de->d_name);
        evs_remove_tree(path);
        evs_log(st, EVS_LOG_INFO, "removed %s (an older index moved aside: one is kept)", path);
    }
    closedir(d);
}

/* Start an empty index in place of one open cannot use, to be rebuilt from the log. A damaged
 * one (LMDB refuses it, its watermark cannot be read or names a record the log does not hold)
 * is moved aside as index.damaged-<time> for whoever looks into it; only the newest is kept,
 * so repeated damage cannot fill the disk. One with nothing wrong but trust (empty, or not
 * checkpointed since a reboot: the normal aftermath of a power cut) is removed: kept, every
 * power cut left a copy of the whole index behind. */
static int index_recreate(evs_store *st, const char *why, bool damaged, evs_error *err)
{
    if (st->idx) {
        idx_close(st->idx);
        st->idx = NULL;
    }
    /* renamed first either way: a removal that stopped half-way (a crash, a file it may not
     * remove) must not leave old rows under the rebuild */
    char old[PATH_MAX], aside[PATH_MAX];
    store_untrusted_index(st, old);
    snprintf(aside, sizeof aside, "%s.damaged-%" PRIu64, st->idxdir, evs_now_us());
    evs_remove_tree(old); /* one whose removal (below) a crash stopped */
    if (rename(st->idxdir, damaged ? aside : old) && errno != ENOENT)
        return evs_err_set(err, -errno, "cannot move index %s aside: %s", st->idxdir,
                           strerror(errno));
    if (damaged) {
        evs_log(st, EVS_LOG_WARN, "index %s: %s; moved to %s, rebuilding from the log",
                st->idxdir, why, aside);
        remove_old_asides(st, strrchr(aside, '/') + 1);
    } else {
        evs_remove_tree(old);
        evs_log(st, EVS_LOG_WARN, "index %s: %s; removed, rebuilding from the log", st->idxdir,
                why);
    }
    /* before the new environment's first commit: the old file's txn numbers another
     * environment's transactions, which the new one's would come to match */
    int rc = ckpt_record(st, 0); /* its first commit marks it open (K1) */
    if (rc)
        return evs_err_set(err, rc, "cannot write %s/index.ckpt: %s", st->dir, evs_strerror(rc));
    return idx_open(st->idxdir, st->opt.index_map_bytes, false, &st->idx, err);
}

/* A read-only open that cannot trust the store's index (verify or dump after a reboot, an
 * index deleted or damaged) builds one of its own from the log, in a private folder under
 * $TMPDIR that close removes: the store's folder is not touched, and its own index is rebuilt
 * by the next read-write open. */
static int index_private(evs_store *st, const char *why, evs_error *err)
{
    if (st->idx_private)
        return 0; /* made when the store's own would not open: empty, as a rebuild wants */
    if (st->idx) {
        idx_close(st->idx);
        st->idx = NULL;
    }
    int rc = privindex_make(st, why, &st->idx_private, &st->idx_private_fd, err);
    if (rc)
        return rc;
    const char *path = st->idx_private;
    evs_log(st, EVS_LOG_WARN, "index %s: %s; read-only: rebuilding a private copy in %s for "
            "this open (removed at close; the next read-write open rebuilds the store's own)",
            st->idxdir, why, path);
    return idx_open(path, st->opt.index_map_bytes, false, &st->idx, err);
}

/* The first valid record after `from` that starts before `end` (the last nonzero byte: the
 * records end there, but the last one's padding and any zero bytes its body ends with lie
 * after it, up to `size`, the file's). */
static bool any_valid_after(const uint8_t *p, uint64_t from, uint64_t end, uint64_t size,
                            uint64_t *at)
{
    for (uint64_t o = (from + REC_ALIGN) & ~(uint64_t)(REC_ALIGN - 1);
         o + REC_HDR_SIZE <= size && o < end; o += REC_ALIGN) {
        rec_hdr h;
        uint64_t sz;
        if (p[o] == 0x45 && rec_check(p + o, size - o, &h, &sz) == REC_OK) {
            *at = o;
            return true;
        }
    }
    return false;
}

/* Does a valid record with REC_F_SYNCED start in p[from, end)? At `from`, a valid record;
 * end, size: as any_valid_after's. */
static bool synced_after(const uint8_t *p, uint64_t from, uint64_t end, uint64_t size)
{
    uint64_t o = from;
    while (o < end) {
        rec_hdr h;
        uint64_t sz;
        if (rec_check(p + o, size - o, &h, &sz) == REC_OK) {
            if (h.flags & REC_F_SYNCED)
                return true;
            o += sz;
        } else if (!any_valid_after(p, o, end, size, &o)) {
            return false;
        }
    }
    return false;
}

/* Just past the last nonzero byte of p[from, end), or `from` if they are all zero. */
static uint64_t nonzero_end(const uint8_t *p, uint64_t from, uint64_t end)
{
    static const uint8_t z[4096];
    while (end > from) {
        uint64_t lo = end - from > sizeof z ? end - sizeof z : from;
        if (memcmp(p + lo, z, end - lo) != 0) {
            while (end > lo && p[end - 1] == 0)
                end--;
            return end;
        }
        end = lo;
    }
    return from;
}

/* A torn tail: keep bytes [off, nz) of segment s in "<segment>.<off>.torn", then overwrite them
 * with zeros (the file keeps its zero-filled size) and sync. */
static int cut_tail(evs_store *st, segment *s, uint64_t off, uint64_t nz, const char *why,
                    evs_error *err)
{
    char path[PATH_MAX], seg[PATH_MAX];
    snprintf(seg, sizeof seg, "%s/%s", st->logdir, s->name);
    snprintf(path, sizeof path, "%s/%s.%" PRIu64 ".torn", st->logdir, s->name, off);
    int rc = fio_write_file_atomic(st->io, path, seg_data(s) + off, nz - off);
    static const uint8_t zeros[1 << 16];
    for (uint64_t o = off; !rc && o < nz; o += sizeof zeros) {
        struct iovec iov = {(void *)zeros, (size_t)(nz - o < sizeof zeros ? nz - o : sizeof zeros)};
        rc = fio_pwritev_all(st->io, s->fd, &iov, 1, (off_t)o);
    }
    if (!rc)
        rc = st->io->fdatasync(s->fd);
    if (rc)
        return evs_err_set(err, rc, "cannot cut torn tail of %s at offset %" PRIu64 ": %s", seg,
                           off, strerror(-rc));
    st->torn_bytes += nz - off;
    evs_log(st, EVS_LOG_WARN,
            "torn tail: cut %" PRIu64 " bytes from segment %s at offset %" PRIu64
            " (%s); kept in %s",
            nz - off, s->name, off, why, path);
    return 0;
}

/* The end of segment s's records is `end`: readers and verify stop there, and what the writer
 * appends from there is its own (replica.c L3). */
static void set_end(segment *s, uint64_t end)
{
    atomic_store(&s->written, end);
    atomic_store(&s->size, end);
    atomic_store(&s->whole_from, end);
}

/* Segment s's records end with its seal, just before `off`: it is sealed for good. Anything
 * but zeros after the seal is reported; a file longer than its records is cut back (the
 * seal's own cut, which a kill may have interrupted). */
static const uint8_t *seg_hold(segment *s, evs_error *err);

static void seal_found(evs_store *st, segment *s, uint64_t off)
{
    evs_error e;
    const uint8_t *p = seg_hold(s, &e);
    uint64_t size = atomic_load(&s->size);
    s->sealed = true;
    if (!p) { /* its end stays the file's: reads past the seal meet zeros, as verify says */
        evs_log(st, EVS_LOG_ERROR, "%s", e.msg);
        return;
    }
    uint64_t nz = nonzero_end(p, off, size);
    store_seg_put(s);
    if (nz > off)
        evs_log(st, EVS_LOG_ERROR, "corruption: segment %s has %" PRIu64 " bytes after its seal",
                s->name, nz - off);
    else if (size > off && !st->opt.read_only)
        rel_cut(st, s, off); /* finish the seal's cut (releaser.c L4) */
    set_end(s, nz > off ? nz : off);
}

/* A read-only open writes no index: what recovery queued for it is dropped (every 65,536
 * records and at the end, so the batch never holds a whole log), and readers find the
 * recovered records through the stream states, published by the caller, walking back from
 * each stream's last entry. Flushing instead wrote to a read-only environment: verify and dump
 * refused any store whose index lagged by more than 65,536 records ("index write failed"). */
static void drop_index_batch(evs_store *st)
{
    idx_batch_clear(st->ib);
    post_clear(st->post);
    for (size_t i = 0; i < st->ntouched; i++)
        st->touched[i]->touched = false;
    st->ntouched = 0;
}

/* Recovery's index flush: into the store's index (read-write), into a read-only open's private
 * one (index_private; its failures name the folder, which may sit on a small $TMPDIR), or
 * nowhere (read-only over the store's own index: drop_index_batch). */
static int recovery_flush(evs_store *st, evs_error *err)
{
    if (!st->opt.read_only)
        return store_index_flush(st, err);
    if (!st->idx_private) {
        drop_index_batch(st);
        return 0;
    }
    int rc = store_index_flush(st, err);
    if (rc && err) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        evs_err_set(err, rc, "private index %s ($TMPDIR): %s", st->idx_private, why);
    }
    return rc;
}

/*
 * Scan segment i from `off`, applying records to the index (flushed every so often so that a
 * long rebuild keeps memory flat). Sets the segment's end. See the file comment for what is
 * a torn tail and what is corruption.
 */
static int scan_held(evs_store *st, size_t i, uint64_t off, const uint8_t *p, evs_error *err);

/* A reference on segment s for the open's own reads of it (segment.c M1: its mapping stays
 * while held), and its bytes; NULL, the reference let go, with err set if it cannot be mapped. */
static const uint8_t *seg_hold(segment *s, evs_error *err)
{
    atomic_fetch_add(&s->refs, 1);
    const uint8_t *p = seg_data(s);
    if (!p) {
        evs_err_set(err, -errno, "cannot map segment %s: %s", s->name, strerror(errno));
        store_seg_put(s);
    }
    return p;
}

static int scan_segment(evs_store *st, size_t i, uint64_t off, evs_error *err)
{
    const uint8_t *p = seg_hold(st->segs[i], err);
    if (!p)
        return err->code;
    int rc = scan_held(st, i, off, p, err);
    store_seg_put(st->segs[i]);
    return rc;
}

/* Whether the opener asked a long recovery to stop (evs_options.cancel), looked at before each
 * segment scanned (a 64 MiB one takes a fraction of a second): a stop leaves the folder as a
 * crash at this point would, and the next open recovers anew. */
static int recovery_cancelled(const evs_store *st, evs_error *err)
{
    if (evs_cancelled(st->opt.cancel))
        return evs_err_set(err, EVS_ECLOSED, "interrupted during recovery; the next open "
                           "recovers anew");
    return 0;
}

static int scan_held(evs_store *st, size_t i, uint64_t off, const uint8_t *p, evs_error *err)
{
    segment *s = st->segs[i];
    bool last = i + 1 == st->nsegs;
    uint64_t size = atomic_load(&s->size); /* the file's size: records, then zeros */
    uint64_t group_start = REC_POS_NONE;   /* offset of an open atomic group's first record */
    /* one write batch; a follower's two (writer.c W10: one syncing while the next is written) */
    uint64_t torn_limit = (st->tail_followed ? 2 : 1) * EVS_MAX_BATCH_BYTES +
                          st->opt.max_entry_bytes + (1u << 20);
    uint64_t pending = 0;
    /* R1: a record before `off` in this segment has REC_F_SYNCED (a scan from the index
     * watermark has not passed the segment's first record, which has it if any has) */
    bool flags_synced = false;
    rec_hdr h0;
    uint64_t sz0;
    if (off > 0 && rec_check(p, size, &h0, &sz0) == REC_OK)
        flags_synced = (h0.flags & REC_F_SYNCED) != 0;
    while (off < size) {
        rec_hdr h;
        uint64_t sz;
        int c = rec_check(p + off, size - off, &h, &sz);
        if (c == REC_OK) {
            flags_synced |= (h.flags & REC_F_SYNCED) != 0;
            if (h.flags & REC_F_TXN_CONT) {
                if (group_start == REC_POS_NONE)
                    group_start = off;
                off += sz;
                continue;
            }
            /* apply the group (or the lone record) now that it is complete */
            uint64_t o = group_start == REC_POS_NONE ? off : group_start;
            group_start = REC_POS_NONE;
            for (;;) {
                /* each record was checked whole as the scan passed it (its CRC is the cost of
                 * a recovery: not twice); the group's earlier ones are read again by header */
                rec_hdr g = h;
                uint64_t gsz = sz;
                if (o != off && rec_check_hdr(p + o, size - o, &g, &gsz) != REC_OK)
                    return evs_err_set(err, EVS_ECORRUPT, "segment %s changed during recovery",
                                       s->name);
                evs_error e;
                int rc = store_apply_record(st, &g, p + o + REC_HDR_SIZE, s->base + o, gsz, &e);
                if (rc == -ENOMEM)
                    return evs_err_set(err, rc, "out of memory");
                if (rc) {
                    char idb[EVS_ID_STRLEN];
                    id_str(&g, idb);
                    evs_log(st, EVS_LOG_ERROR,
                            "corruption: segment %s offset %" PRIu64 " (entry id %s): %s",
                            s->name, o, idb, e.msg);
                    st->tail = s->base + o + gsz;
                }
                st->recovered_records++;
                pending++;
                if (o == off)
                    break;
                o += gsz;
            }
            off += sz;
            if (h.kind == REC_SEAL) {
                seal_found(st, s, off);
                return 0;
            }
            if (pending >= 65536) {
                int rc = recovery_flush(st, err);
                if (rc)
                    return rc;
                pthread_rwlock_wrlock(&st->lock);
                store_publish_touched(st);
                pthread_rwlock_unlock(&st->lock);
                pending = 0;
            }
            continue;
        }
        uint64_t next, end = nonzero_end(p, off, size);
        bool valid_after = any_valid_after(p, off, end, size, &next);
        uint64_t from = group_start != REC_POS_NONE ? group_start : off;
        bool hole = valid_after && last && end - from <= torn_limit &&
                    (st->tail_followed /* R2 */ ||
                     (flags_synced && !synced_after(p, next, end, size))); /* R1 */
        if (valid_after && !hole) {
            evs_log(st, EVS_LOG_ERROR,
                    "corruption: segment %s offset %" PRIu64 ": %s; resuming at the next valid "
                    "record (offset %" PRIu64 ")",
                    s->name, off, rec_check_str(c), next);
            if (group_start != REC_POS_NONE) {
                /* the group's end is lost in the corruption: its records are not applied */
                evs_log(st, EVS_LOG_ERROR,
                        "corruption: atomic group at segment %s offset %" PRIu64
                        " has no end; skipped",
                        s->name, group_start);
                group_start = REC_POS_NONE;
            }
            off = next;
            continue;
        }
        /* nothing valid follows, or only the rest of the last batch (R1): the end of the
         * records */
        uint64_t cut = from;
        uint64_t nz = nonzero_end(p, cut, size);
        if (nz == cut) {
            set_end(s, cut); /* zeros: the clean end */
        } else if (!last || nz - cut > torn_limit) {
            /* not a torn tail: keep the bytes, report them, never append after them */
            evs_log(st, EVS_LOG_ERROR,
                    "corruption: segment %s offset %" PRIu64 ": %s, %" PRIu64
                    " unreadable bytes to offset %" PRIu64 "%s",
                    s->name, cut, rec_check_str(c), nz - cut, nz,
                    last ? "; a new segment starts after them" : "");
            set_end(s, (nz + REC_ALIGN - 1) & ~(uint64_t)(REC_ALIGN - 1));
            s->sealed = true;
        } else if (st->opt.read_only) {
            evs_log(st, EVS_LOG_WARN,
                    "torn tail of %" PRIu64 " bytes in segment %s at offset %" PRIu64
                    " (read-only: not cut)",
                    nz - cut, s->name, cut);
            set_end(s, cut);
        } else {
            char why[200];
            snprintf(why, sizeof why, "%s%s",
                     group_start != REC_POS_NONE && c == REC_ZERO ? "incomplete atomic group"
                                                                  : rec_check_str(c),
                     hole ? ", with records of the same unsynced write batch after it: a "
                            "power cut wrote part of the batch" : "");
            int rc = cut_tail(st, s, cut, nz, why, err);
            if (rc)
                return rc;
            set_end(s, cut);
        }
        if (!last)
            s->sealed = true; /* a later segment exists: this one is never written again */
        return 0;
    }
    set_end(s, off);
    if (!last)
        s->sealed = true;
    return 0;
}

/*
 * Before rebuilding an index from a log whose first segments retention deleted: create the
 * streams that the log meets first through a declare record (their create record is gone),
 * so that their entries, which precede the declare, have a stream to land in.
 */
static int prescan_declares(evs_store *st, evs_error *err)
{
    /* Creates name increasing numbers (S4), so a stream's create is in the log if and only
     * if its number is at or past the first create the log holds */
    uint64_t first_create = UINT64_MAX;
    int rc = 0;
    size_t declared = 0;
    for (size_t i = 0; i < st->nsegs && !rc; i++) {
        segment *sg = st->segs[i];
        const uint8_t *p = seg_hold(sg, err);
        if (!p) {
            rc = err->code;
            break;
        }
        uint64_t size = atomic_load(&sg->size), off = 0;
        while (off + REC_HDR_SIZE <= size && !rc) {
            rec_hdr h;
            uint64_t sz;
            if (rec_check(p + off, size - off, &h, &sz) != REC_OK) {
                off += REC_ALIGN;
                continue;
            }
            const uint8_t *body = p + off + REC_HDR_SIZE;
            off += sz;
            int op;
            evs_slice name;
            uint64_t extra[REC_STREAM_MAX_EXTRA];
            size_t n;
            if (h.kind != REC_STREAM || (h.body_len > 1 && body[1] == REC_STREAM_IDEM) ||
                rec_stream_decode(body, h.body_len, &op, &name, extra, &n) ||
                (op != REC_STREAM_CREATE && op != REC_STREAM_DECLARE))
                continue;
            if (h.stream >= EVS_STREAM_NO_MAX) {
                rc = evs_err_set(err, EVS_ECORRUPT, "a stream record names stream number %u, "
                                 "past the most a store assigns (%u)", h.stream,
                                 EVS_STREAM_NO_MAX - 1);
                break;
            }
            if (op == REC_STREAM_CREATE) {
                if (first_create == UINT64_MAX)
                    first_create = h.stream;
                continue;
            }
            if (h.stream >= first_create || numtab_get(&st->byno, h.stream))
                continue; /* created in the log, or declared before */
            stream *s = store_stream_new(st, h.stream, name.ptr, name.len);
            if (!s || strtab_put(&st->wtab, s, false)) {
                rc = evs_err_set(err, EVS_ECORRUPT, "stream %u declared twice, or out of memory",
                                 h.stream);
                break;
            }
            s->w_live = true;
            s->w.decl_pos = REC_POS_NONE; /* set by the declare record itself */
            if (h.stream >= st->next_no)
                st->next_no = h.stream + 1;
            declared++;
        }
        store_seg_put(sg);
    }
    if (!rc)
        evs_log(st, EVS_LOG_INFO,
                "the log starts at position %" PRIu64 " (retention): %zu streams created before "
                "it are rebuilt from their declare records",
                st->segs[0]->base, declared);
    return rc;
}

/* Does the log hold a record? Before recovery a segment's size is its file's size, and a
 * new store's first segment is all preallocated zeros: look at its first header. */
static bool log_has_records(evs_store *st)
{
    if (st->nsegs != 1)
        return st->nsegs > 1;
    segment *s = st->segs[0];
    uint64_t size = atomic_load(&s->size);
    if (!size)
        return false;
    evs_error err;
    const uint8_t *map = seg_hold(s, &err);
    if (!map)
        return true; /* (unreadable: taken as holding records; the scan says why) */
    rec_hdr h;
    uint64_t sz;
    bool has = rec_check_hdr(map, size, &h, &sz) != REC_ZERO;
    store_seg_put(s);
    return has;
}

/* A segment followed by another whose file is longer than the distance to the next one's
 * start: a sealed segment whose cut the releaser had not made yet (releaser.c L4). Its records
 * end where the next file starts (records never span segments, and the next segment starts
 * right after the seal); the rest must be the preallocated zeros: its first header is checked
 * here (a full check is verify's), and the cut is queued again. */
static void uncut_seal(evs_store *st, segment *s, uint64_t next_base)
{
    uint64_t size = atomic_load(&s->size);
    if (next_base <= s->base || next_base - s->base >= size)
        return;
    uint64_t end = next_base - s->base;
    evs_error err;
    const uint8_t *p = seg_hold(s, &err);
    static const uint8_t zero[REC_HDR_SIZE];
    bool junk = p && memcmp(p + end, zero, size - end < REC_HDR_SIZE ? size - end : REC_HDR_SIZE);
    if (p)
        store_seg_put(s);
    if (junk) {
        evs_log(st, EVS_LOG_ERROR, "corruption: segment %s has bytes after offset %" PRIu64
                ", where its records end (the next segment starts there)", s->name, end);
        return; /* the gap is reported below, as before */
    }
    set_end(s, end);
    if (!st->opt.read_only)
        rel_cut(st, s, end);
}

/* Does the next segment start where s ends? If not, a file was lost or deleted (records never
 * span segments, and a new one starts right after its predecessor's seal): said at every
 * open, below the index watermark too, since reads of entries there fail (read_record). */
static void gap_check(evs_store *st, const segment *s, const segment *next)
{
    uint64_t end = s->base + atomic_load(&s->size);
    if (next->base > end)
        evs_log(st, EVS_LOG_ERROR, "corruption: log positions %" PRIu64 " to %" PRIu64 " are in "
                "no segment file (%s ends there, %s starts after: a segment file is missing); "
                "reads of entries there fail", end, next->base, s->name, next->name);
    else if (next->base < end)
        evs_log(st, EVS_LOG_ERROR, "corruption: segment %s starts at log position %" PRIu64
                ", inside %s (which ends at %" PRIu64 ")", next->name, next->base, s->name, end);
}

static int recover(evs_store *st, evs_error *err)
{
    char fpath[PATH_MAX];
    snprintf(fpath, sizeof fpath, "%s/FOLLOWING", st->dir);
    st->tail_followed = access(fpath, F_OK) == 0; /* R2 */
    idx_watermark wm = {0, REC_POS_NONE, 0};
    uint32_t next_no = 1;
    bool present = false;
    uint8_t wm_kind = 0;
    int rc = watermark_check(st, &wm, &next_no, &present, &wm_kind);
    bool rebuild = false, damaged = false;
    const char *why = NULL;
    if (rc == EVS_ECORRUPT) {
        rebuild = damaged = true;
        why = "its watermark names a record the log does not hold (index ahead of the log)";
        if (present)
            evs_log(st, EVS_LOG_ERROR, "the index was written up to log position %" PRIu64
                    " (its last record at %" PRIu64 "), which the log no longer holds: the log "
                    "lost records it had (a power cut under --fsync everysec or no, or a segment "
                    "file lost, cut or replaced); entries in them are gone, the rest is rebuilt "
                    "from the log", wm.end, wm.last_pos);
    } else if (rc) {
        rebuild = damaged = true;
        why = "unreadable";
    } else if (!present && log_has_records(st)) {
        rebuild = true;
        why = "empty or missing while the log has records";
    } else if (present && !checkpoint_ok(st)) {
        rebuild = true;
        why = "not checkpointed (no checkpoint yet, or the machine restarted since)";
    }
    if (rebuild) {
        if ((rc = st->opt.read_only ? index_private(st, why, err)
                                    : index_recreate(st, why, damaged, err)))
            return rc;
        present = false;
        next_no = 1;
    } else if (!st->opt.read_only) { /* an index a cut moved aside (truncate.c T3) where the
                                        log kept no record to rebuild from */
        char untrusted[PATH_MAX];
        store_untrusted_index(st, untrusted);
        evs_remove_tree(untrusted);
    }
    if (!st->opt.read_only && (rc = checkpoint_claim(st, err)))
        return rc;
    st->next_no = next_no;
    if ((rc = load_streams(st, err)) || (rc = group_load(st, err)))
        return rc;
    if (!present && st->nsegs && st->segs[0]->base > 0) {
        st->history_cut = true;
        if ((rc = prescan_declares(st, err)))
            return rc;
    }
    uint64_t from = present ? wm.end : (st->nsegs ? st->segs[0]->base : 0);
    st->tail = from;
    st->last_rec_pos = present ? wm.last_pos : REC_POS_NONE;
    st->last_crc = present ? wm.last_crc : 0;
    for (size_t i = 0; i < st->nsegs; i++) {
        segment *s = st->segs[i];
        if (i + 1 < st->nsegs)
            uncut_seal(st, s, st->segs[i + 1]->base);
        uint64_t end = s->base + atomic_load(&s->size);
        if (end <= from && i + 1 < st->nsegs) {
            s->sealed = true;
            gap_check(st, s, st->segs[i + 1]);
            continue;
        }
        uint64_t off = from > s->base ? from - s->base : 0;
        if ((rc = recovery_cancelled(st, err)))
            return rc;
        if (present && wm_kind == REC_SEAL && wm.last_pos >= s->base && wm.last_pos < end) {
            /* the scan starts past the seal and would never see it: without this, the last
             * segment of a store killed between its seal's index commit and the next file's
             * creation was continued after its seal (found by test_crash's power cut) */
            seal_found(st, s, off);
        } else if ((rc = scan_segment(st, i, off, err))) {
            return rc;
        }
        if (i + 1 < st->nsegs)
            gap_check(st, s, st->segs[i + 1]);
    }
    st->history_cut = false;
    if ((rc = recovery_flush(st, err)))
        return rc;
    pthread_rwlock_wrlock(&st->lock);
    store_publish_touched(st);
    pthread_rwlock_unlock(&st->lock);
    if (st->recovered_records && !st->opt.read_only)
        evs_log(st, EVS_LOG_INFO, "recovered %" PRIu64 " records past the index watermark",
                st->recovered_records);
    return 0;
}

/* flock the open LOCK file of folder dir (shared or exclusive, not waiting): 0, or
 * EVS_ELOCKED naming the process that holds it (the pid it wrote). */
static int lock_taken(int fd, const char *dir, bool shared, evs_error *err)
{
    if (flock(fd, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0)
        return 0;
    char pid[32] = "";
    ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
    pid[n > 0 ? n : 0] = 0;
    pid[strcspn(pid, "\n")] = 0;
    return evs_err_set(err, EVS_ELOCKED, "data folder %s is in use by another process%s%s%s",
                       dir, *pid ? " (pid " : "", pid, *pid ? ")" : "");
}

int evs_lock_folder(const char *dir, evs_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return evs_err_set(err, -errno, "cannot open %s: %s", path, strerror(errno));
    int rc = lock_taken(fd, dir, false, err);
    if (rc) {
        close(fd);
        return rc;
    }
    return fd;
}

static int lock_folder(evs_store *st, evs_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/LOCK", st->dir);
    st->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (st->lockfd < 0 && st->opt.read_only && (errno == EROFS || errno == EACCES)) {
        /* a read-only open (verify, dump, an offline backup) of a folder on a file system
         * mounted read-only (as ext4 does after an error), or by a user who may only read it:
         * a shared lock on a descriptor for reading is a lock all the same. No LOCK at all
         * on a read-only file system: no server ever opened the folder, none can now. */
        int why = errno;
        st->lockfd = open(path, O_RDONLY | O_CLOEXEC);
        if (st->lockfd < 0 && errno == ENOENT && why == EROFS)
            return 0;
    }
    if (st->lockfd < 0)
        return evs_err_set(err, -errno, "cannot open %s: %s", path, strerror(errno));
    int rc = lock_taken(st->lockfd, st->dir, st->opt.read_only, err);
    if (rc)
        return rc;
    if (!st->opt.read_only) {
        char pid[32];
        int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
        if (ftruncate(st->lockfd, 0) == 0 && pwrite(st->lockfd, pid, (size_t)n, 0) < 0)
            evs_log(st, EVS_LOG_WARN, "cannot write pid to %s", path);
    }
    return 0;
}

static int load_identity(evs_store *st, evs_error *err)
{
    char path[PATH_MAX], buf[256];
    snprintf(path, sizeof path, "%s/STORE", st->dir);
    FILE *f = fopen(path, "r");
    if (f) {
        int ver = 0;
        char id[64] = "";
        int n = fscanf(f, "evstore-store %d\nid %63s", &ver, id);
        fclose(f);
        if (n != 2 || !store_id_ok(id)) /* (seen: "id 0123" opened, and led with that id) */
            return evs_err_set(err, EVS_ECORRUPT, "%s is malformed", path);
        memcpy(st->store_id, id, sizeof st->store_id);
        if (ver != 1)
            return evs_err_set(err, EVS_EFORMAT, "%s: format version %d is not supported (1 is)",
                               path, ver);
        return 0;
    }
    if (st->nsegs > 0)
        return evs_err_set(err, EVS_ECORRUPT, "%s is missing but the log has segments", path);
    if (st->opt.read_only)
        return evs_err_set(err, EVS_ENOTFOUND, "%s is not an evstore data folder", st->dir);
    uint8_t raw[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, raw, sizeof raw) != (ssize_t)sizeof raw) {
        if (fd >= 0)
            close(fd);
        return evs_err_set(err, -EIO, "cannot read /dev/urandom");
    }
    close(fd);
    evs_uuid_format(raw, st->store_id);
    int n = snprintf(buf, sizeof buf, "evstore-store 1\nid %s\n", st->store_id);
    int rc = fio_write_file_atomic(st->io, path, buf, (size_t)n);
    if (rc)
        return evs_err_set(err, rc, "cannot write %s: %s", path, strerror(-rc));
    return 0;
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

static void store_free(evs_store *st)
{
    rel_stop(st); /* a failed open started it */
    indexer_stop(st); /* likewise */
    prep_drop_rolls(st); /* roll jobs an open queued before failing (its files stay pending) */
    if (st->idx)
        idx_close(st->idx);
    if (st->idx_private)
        ownedir_remove(st->idx_private, st->idx_private_fd);
    free(st->ro_dels);
    for (size_t i = 0; i < st->nsegs; i++) {
        atomic_store(&st->segs[i]->evictable, false); /* before the table lets go (M4) */
        store_seg_put(st->segs[i]);
    }
    free(st->segs);
    zombies_detach(st); /* (evs_close did already; a failed open has none) */
    free(st->zombies);
    store_visible_free(st->held_head); /* (its references first: S2) */
    st->held_head = NULL;
    NUMTAB_EACH(&st->byno, no)
        store_stream_free(numtab_get(&st->byno, (uint32_t)no));
    numtab_free(&st->byno);
    free(st->tcache);
    free(st->epochs);
    strtab_release(&st->vtab);
    strtab_release(&st->wtab);
    idx_batch_free(st->ib);
    post_free(st->post);
    free(st->touched);
    free(st->btouched);
    free(st->iov);
    free(st->brecs);
    rec_buf_release(&st->hdrs);
    rec_buf_release(&st->rcarry);
    if (st->lockfd >= 0)
        close(st->lockfd);
    pthread_rwlock_destroy(&st->lock);
    wreq_pool_drain(st);
    pthread_mutex_destroy(&st->poolmu);
    pthread_mutex_destroy(&st->qmu);
    pthread_cond_destroy(&st->qcv);
    pthread_mutex_destroy(&st->rolemu);
    free(st->pend.r);
    free(st->spend.r);
    pthread_mutex_destroy(&st->sy_mu);
    pthread_cond_destroy(&st->sy_cv);
    pthread_mutex_destroy(&st->vmu);
    pthread_mutex_destroy(&st->itmu);
    pthread_cond_destroy(&st->vcv);
    pthread_mutex_destroy(&st->ckmu);
    pthread_mutex_destroy(&st->ckfile_mu);
    pthread_cond_destroy(&st->ckcv);
    pthread_mutex_destroy(&st->ixmu);
    pthread_cond_destroy(&st->ixcv);
    pthread_mutex_destroy(&st->prep_mu);
    pthread_cond_destroy(&st->prep_cv);
    pthread_cond_destroy(&st->roll_cv);
    pthread_mutex_destroy(&st->rel_mu);
    pthread_cond_destroy(&st->rel_cv);
    pthread_mutex_destroy(&st->failmu);
    pthread_mutex_destroy(&st->gmu);
    pthread_mutex_destroy(&st->ret_mu);
    pthread_cond_destroy(&st->ret_cv);
    free(st->dir);
    free(st->pend_open);
    free(st->logdir);
    free(st->idxdir);
    free(st);
}

/*
 * Two markers in the data folder make a store that opens to lead begin a new epoch (start:
 * its log's end) before any write, as a promotion does, so that its history can never be
 * confused with records some other node holds for the same positions of the same epoch:
 *  - FOLLOWING: the store was last opened as a follower (its log is the old leader's); removed
 *    by promotion once its epoch is durable, or here once the new epoch is.
 *  - RUNNING: written, durably, when a writable store opens; removed by a clean close after
 *    its final checkpoint. Found at open, the last run ended in a crash or a power cut. A
 *    follower may hold records this log lost in a power cut (a leader ships each batch
 *    before its sync, replica.c L1), and the next records would take their positions in the
 *    same epoch: a history the lineage check could not tell from the follower's, a follower
 *    stuck or silently diverged. With the epoch, a follower holding bytes past its start is
 *    told to cut them (docs/replication.md, "Promotion and fencing"). This epoch is begun by
 *    the writer before the next record it writes (epoch_due, writer.c W9), not here: the open
 *    stays free of syncs (a crashed `--fsync no` run leaves its rolls to sync, D4), and a
 *    follower that connects before then is measured against the log's end, which is enough
 *    (the lineage check cuts a follower past the leader's end). A close with the epoch still
 *    due leaves RUNNING, so the next open owes it too.
 */
static int open_marks(evs_store *st, evs_error *err)
{
    char fpath[PATH_MAX], rpath[PATH_MAX];
    snprintf(fpath, sizeof fpath, "%s/FOLLOWING", st->dir);
    snprintf(rpath, sizeof rpath, "%s/RUNNING", st->dir);
    bool followed = st->tail_followed, crashed = access(rpath, F_OK) == 0; /* (recover) */
    int rc = crashed ? 0 : fio_write_file_atomic(st->io, rpath, "running\n", 8);
    if (rc)
        return evs_err_set(err, rc, "cannot write %s: %s", rpath, strerror(-rc));
    if (atomic_load(&st->following)) {
        rc = followed ? 0 : fio_write_file_atomic(st->io, fpath, "following\n", 10);
        if (rc)
            return evs_err_set(err, rc, "cannot write %s: %s", fpath, strerror(-rc));
    } else if (followed) {
        evs_epoch e;
        if ((rc = evs_epoch_begin(st, &e, err)))
            return rc;
        evs_log(st, EVS_LOG_WARN, "this store was a follower and opens to lead: epoch %" PRIu32
                " begins at log position %" PRIu64, e.epoch, e.start);
        if (unlink(fpath) == 0)
            fio_fsync_dir(st->io, st->dir);
    } else if (crashed) {
        evs_log(st, EVS_LOG_WARN, "this store did not close cleanly (a crash or a power cut) and "
                "opens to lead: it begins a new epoch before its next write");
        atomic_store(&st->epoch_due, true);
    }
    st->running_marked = true; /* only now: a failed open leaves RUNNING for the next one */
    return 0;
}

bool evs_store_follows(const char *dir)
{
    char path[PATH_MAX];
    return snprintf(path, sizeof path, "%s/FOLLOWING", dir) < (int)sizeof path &&
           access(path, F_OK) == 0;
}

int store_following_unmark(evs_store *st)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/FOLLOWING", st->dir);
    if (unlink(path) && errno != ENOENT)
        return -errno;
    return fio_fsync_dir(st->io, st->dir);
}

/* Is the file system holding dir's log short of room for one segment? */
static bool space_short(const char *dir, const evs_options *opt)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/log", dir);
    struct statvfs v;
    uint64_t seg = opt && opt->segment_bytes ? opt->segment_bytes : EVS_DEFAULT_SEGMENT_BYTES;
    return statvfs(p, &v) == 0 && (uint64_t)v.f_bavail * v.f_frsize < seg;
}

/* Delete the space reserve of the store in dir, its blocks first (preparer.c P3). */
static bool release_reserve(const char *dir, const evs_options *opt)
{
    const struct evs_io *io = opt && opt->io ? opt->io : &fio_real;
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/log/%s", dir, PREP_RESERVE);
    int fd = io->open(p, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return false;
    io->ftruncate(fd, 0);
    close(fd);
    return unlink(p) == 0;
}

/* `release`: a second attempt (evs_open): the space reserve goes once the folder is ours. */
static int open_once(const char *dir, const evs_options *opt, bool release, evs_store **out,
                     evs_error *err)
{
    evs_store *st = calloc(1, sizeof *st);
    if (!st)
        return evs_err_set(err, -ENOMEM, "out of memory");
    st->lockfd = -1;
    if (opt)
        st->opt = *opt;
    else
        evs_options_init(&st->opt);
    if (!st->opt.segment_bytes)
        st->opt.segment_bytes = EVS_DEFAULT_SEGMENT_BYTES;
    if (!st->opt.max_entry_bytes)
        st->opt.max_entry_bytes = EVS_DEFAULT_MAX_ENTRY;
    if (!st->opt.index_map_bytes)
        st->opt.index_map_bytes = EVS_DEFAULT_MAP_BYTES;
    st->io = st->opt.io ? st->opt.io : &fio_real;
    atomic_init(&st->following, st->opt.replica);
    atomic_init(&st->vcap, EVS_CAP_NONE);
    pthread_rwlock_init(&st->lock, NULL);
    pthread_mutex_init(&st->poolmu, NULL);
    pthread_mutex_init(&st->qmu, NULL);
    pthread_cond_init(&st->qcv, NULL);
    pthread_mutex_init(&st->sy_mu, NULL);
    pthread_cond_init(&st->sy_cv, NULL);
    atomic_init(&st->vscap, EVS_CAP_NONE);
    pthread_mutex_init(&st->rolemu, NULL);
    pthread_mutex_init(&st->vmu, NULL);
    pthread_mutex_init(&st->itmu, NULL);
    pthread_cond_init(&st->vcv, NULL);
    pthread_mutex_init(&st->ckmu, NULL);
    pthread_mutex_init(&st->ckfile_mu, NULL);
    pthread_cond_init(&st->ckcv, NULL);
    pthread_mutex_init(&st->ixmu, NULL);
    pthread_cond_init(&st->ixcv, NULL);
    pthread_mutex_init(&st->prep_mu, NULL);
    pthread_cond_init(&st->prep_cv, NULL);
    pthread_cond_init(&st->roll_cv, NULL);
    pthread_mutex_init(&st->rel_mu, NULL);
    pthread_cond_init(&st->rel_cv, NULL);
    pthread_mutex_init(&st->failmu, NULL);
    pthread_mutex_init(&st->gmu, NULL);
    pthread_mutex_init(&st->ret_mu, NULL);
    pthread_cond_init(&st->ret_cv, NULL);
    st->last_rec_pos = REC_POS_NONE;
    int rc;
    st->dir = strdup(dir);
    st->logdir = path_join(dir, "log");
    st->idxdir = path_join(dir, "index");
    st->ib = idx_batch_new();
    st->post = post_new();
    if (!st->dir || !st->logdir || !st->idxdir || !st->ib || !st->post || strtab_init(&st->vtab, 64) ||
        strtab_init(&st->wtab, 64)) {
        rc = evs_err_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    if (!st->opt.read_only) {
        if (mkdir(dir, 0755) && errno != EEXIST) {
            rc = evs_err_set(err, -errno, "cannot create data folder %s: %s", dir, strerror(errno));
            goto fail;
        }
        /* a swap a crash interrupted is finished first, before log/ is made (swap.c S1) */
        if ((rc = lock_folder(st, err)) || (rc = store_swap_pending(dir, err)))
            goto fail;
        if (mkdir(st->logdir, 0755) && errno != EEXIST) {
            rc = evs_err_set(err, -errno, "cannot create %s: %s", st->logdir, strerror(errno));
            goto fail;
        }
    } else {
        struct stat sb;
        char swap[PATH_MAX];
        snprintf(swap, sizeof swap, "%s/SWAP", dir);
        if (!access(swap, F_OK)) {
            rc = evs_err_set(err, EVS_EINVAL, "%s holds an unfinished swap of stores (SWAP): a "
                             "writable open (evstore serve) finishes it", dir);
            goto fail;
        }
        if (stat(st->logdir, &sb) < 0) {
            rc = evs_err_set(err, EVS_ENOTFOUND, "%s is not an evstore data folder (no log/)", dir);
            goto fail;
        }
        if ((rc = lock_folder(st, err)))
            goto fail;
    }
    if (release && !st->opt.read_only && release_reserve(dir, opt))
        evs_log(st, EVS_LOG_WARN, "released the space reserve (%s/%s) to open on a full disk; it "
                "is made again before the next write that finds room", st->logdir, PREP_RESERVE);
    if (!st->opt.read_only && (rc = rel_start(st))) { /* before the log is listed: L4 */
        rc = evs_err_set(err, rc, "cannot start space releaser thread");
        goto fail;
    }
    if ((rc = adopt_pending(st, err)) ||
        (!st->opt.read_only && (rc = store_truncate_pending(st, err))) ||
        (rc = load_segments(st, err)) ||
        (rc = load_identity(st, err)) || (rc = epochs_load(st, st->nsegs == 0, err)))
        goto fail;
    rc = idx_open(st->idxdir, st->opt.index_map_bytes, st->opt.read_only, &st->idx, err);
    if (rc == EVS_ECORRUPT && !st->opt.read_only)
        rc = index_recreate(st, "not a valid LMDB environment", true, err);
    else if (rc && rc != -ENOMEM && st->opt.read_only)
        rc = index_private(st, "missing or not a valid LMDB environment", err);
    if (rc)
        goto fail;
    if ((rc = recover(st, err)))
        goto fail;
    count_set_aside(st);
    if (!st->opt.read_only) {
        store_requeue_rolls(st); /* D4: the preparer names them once it has synced */
        if ((rc = store_roll(st, false, err)) || (rc = epochs_reconcile(st, err)))
            goto fail;
        evs_error rerr; /* P2; on a full disk the open goes on, and appends meet it */
        idx_growth_reset(st->idx); /* the catch-up's commits say nothing of the next ones */
        if (prep_make_reserve(st, &rerr))
            evs_log(st, EVS_LOG_WARN, "no space reserve: %s", rerr.msg);
        st->synced_to = st->tail;
        atomic_store(&st->synced_pub, st->synced_to);
        if ((rc = indexer_start(st))) {
            rc = evs_err_set(err, rc, "cannot start indexer thread");
            goto fail;
        }
        /* before the writer: its rolls defer only with the preparer running (D1), and the
         * jobs queued above are its */
        if ((rc = prep_start(st))) {
            evs_close(st);
            return evs_err_set(err, rc, "cannot start segment preparer thread");
        }
        if ((rc = thread_start(&st->writer, writer_main, st, "evs-writer"))) {
            evs_close(st);
            return evs_err_set(err, -rc, "cannot start writer thread");
        }
        st->writer_started = true;
        if ((rc = thread_start(&st->ckpt, ckpt_main, st, "evs-checkpoint"))) {
            evs_close(st);
            return evs_err_set(err, -rc, "cannot start checkpointer thread");
        }
        st->ckpt_started = true;
        if ((rc = ret_start(st))) { /* a follower's only deletes what its leader deleted */
            evs_close(st);
            return evs_err_set(err, rc, "cannot start retention thread");
        }
        if ((rc = open_marks(st, err))) {
            evs_close(st);
            return rc;
        }
    }
    *out = st;
    return 0;
fail:
    store_free(st);
    return rc;
}

/* preparer.c P3: an open that failed on a full disk (recovery writes: the index catching up
 * with the log, a torn tail's copy, a new boot's index.ckpt) is tried once more with the space
 * reserve's room. A failed open leaves what a crash in it would: the next one recovers. */
int evs_open(const char *dir, const evs_options *opt, evs_store **out, evs_error *err)
{
    int rc = open_once(dir, opt, false, out, err);
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/log/%s", dir, PREP_RESERVE);
    if (!rc || (opt && opt->read_only) || !space_short(dir, opt) || access(p, F_OK))
        return rc;
    evs_error first = {0};
    evs_err_copy(&first, err);
    if ((rc = open_once(dir, opt, true, out, err)) == 0)
        evs_log(*out, EVS_LOG_WARN, "the open needed the space reserve's room: its first attempt "
                "failed (%s)", first.msg);
    return rc;
}

int evs_close(evs_store *st)
{
    if (!st)
        return 0;
    ret_stop(st); /* its passes submit to the writer: stop it first */
    if (st->writer_started) {
        pthread_mutex_lock(&st->qmu);
        st->closing = true;
        pthread_cond_broadcast(&st->qcv);
        pthread_mutex_unlock(&st->qmu);
        pthread_join(st->writer, NULL);
    }
    syncer_stop(st); /* idle: the writer collected its last job (Y1) */
    indexer_stop(st); /* after the writer: nothing hands it a batch any more */
    prep_stop(st);
    zombies_detach(st); /* retention has stopped: no new ones */
    rel_stop(st); /* after the writer and retention: nothing queues jobs any more */
    if (st->ckpt_started) {
        pthread_mutex_lock(&st->ckmu);
        st->ck_stop = true;
        pthread_cond_signal(&st->ckcv);
        pthread_mutex_unlock(&st->ckmu);
        pthread_join(st->ckpt, NULL);
    }
    pthread_mutex_lock(&st->vmu);
    st->vgen++;
    pthread_cond_broadcast(&st->vcv);
    pthread_mutex_unlock(&st->vmu);
    int rc = atomic_load(&st->failed);
    if (!st->opt.read_only && !rc)
        rc = ckpt_run(st); /* clean shutdown: log, then index, durable and checkpointed */
    if (st->running_marked && !rc && !atomic_load(&st->epoch_due)) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/RUNNING", st->dir);
        if (unlink(path) == 0)
            fio_fsync_dir(st->io, st->dir);
    }
    store_free(st);
    return rc;
}

int evs_idem_get(evs_store *st, evs_slice name, evs_slice key, uint64_t window_us,
                 evs_id *first, evs_id *last, size_t *count)
{
    if (key.len == 0 || key.len > EVS_IDEM_KEY_MAX)
        return EVS_EINVAL;
    if (window_us > EVS_IDEM_WINDOW_US) /* retention removes a key past it (R8) */
        window_us = EVS_IDEM_WINDOW_US;
    pthread_rwlock_rdlock(&st->lock);
    stream *s = strtab_get(&st->vtab, name.ptr, name.len, true);
    uint32_t no = s ? s->no : 0;
    pthread_rwlock_unlock(&st->lock);
    if (!s)
        return 0;
    uint8_t k[4 + EVS_IDEM_KEY_MAX];
    idx_be32(k, no);
    memcpy(k + 4, key.ptr, key.len);
    idx_rtxn *r;
    int rc = idx_rbegin(st->idx, &r);
    if (rc)
        return rc;
    const void *v;
    size_t vl;
    rc = idx_get(r, IDX_IDEM, k, 4 + key.len, &v, &vl);
    if (rc == 0 && vl == 48) {
        const uint8_t *p = v;
        uint64_t t = idx_rd64(p + 40), now = evs_now_us();
        rc = t + window_us >= now ? 1 : 0; /* an older one is expired: not a duplicate */
        if (rc) {
            *first = (evs_id){idx_rd64(p), idx_rd64(p + 8)};
            *last = (evs_id){idx_rd64(p + 16), idx_rd64(p + 24)};
            *count = (size_t)idx_rd64(p + 32);
        }
    } else if (rc == EVS_ENOTFOUND) {
        rc = 0;
    } else if (rc == 0) {
        rc = EVS_ECORRUPT;
    }
    idx_rend(r);
    return rc;
}

int evs_failed(evs_store *st, evs_error *err)
{
    int rc = atomic_load(&st->failed);
    if (rc && err)
        *err = st->fail_err;
    return rc;
}

void evs_store_stats_get(evs_store *st, evs_store_stats *o)
{
    memset(o, 0, sizeof *o);
    pthread_rwlock_rdlock(&st->lock);
    o->streams = st->vtab.n;
    o->segments = st->nsegs;
    for (size_t i = 0; i < st->nsegs; i++)
        o->log_bytes += atomic_load(&st->segs[i]->size);
    if (st->nsegs) {
        o->log_end = st->segs[st->nsegs - 1]->base + atomic_load(&st->segs[st->nsegs - 1]->size);
        o->log_start = st->segs[0]->base;
    }
    o->epoch = st->nepochs ? st->epochs[st->nepochs - 1].epoch : 0;
    o->visible_end = store_visible_end(st, o->log_end);
    pthread_rwlock_unlock(&st->lock);
    o->synced_end = atomic_load(&st->synced_pub);
    o->index_end = atomic_load(&st->idx_end);
    o->index_deferred = atomic_load(&st->n_ix_deferred);
    o->retention_trimmed = atomic_load(&st->n_ret_trimmed);
    o->segments_deleted = atomic_load(&st->n_segs_deleted);
    o->bytes_deleted = atomic_load(&st->n_bytes_deleted);
    o->streams_relocated = atomic_load(&st->n_relocated);
    o->bytes_relocated = atomic_load(&st->n_bytes_relocated);
    o->appends = atomic_load(&st->n_appends);
    o->batches = atomic_load(&st->n_batches);
    o->fsyncs = atomic_load(&st->n_fsyncs);
    o->fsyncs_overlapped = atomic_load(&st->n_fsyncs_overlapped);
    o->streams_dropped_held = atomic_load(&st->ngrave);
    o->fsync_ns_total = atomic_load(&st->fsync_ns);
    o->fsync_ns_max = atomic_load(&st->fsync_ns_max);
    o->batch_max = atomic_load(&st->batch_max);
    o->batch_records_total = atomic_load(&st->n_batch_records);
    o->recovered_records = st->recovered_records;
    o->torn_bytes = st->torn_bytes;
    o->set_aside_files = st->set_aside_files;
    o->set_aside_bytes = st->set_aside_bytes;
    o->records_read = atomic_load(&st->n_reads);
    for (size_t i = 0; i < EVS_FSYNC_BUCKETS; i++)
        o->fsync_hist[i] = atomic_load(&st->fsync_hist[i]);
    for (size_t i = 0; i < EVS_BATCH_BUCKETS; i++)
        o->batch_hist[i] = atomic_load(&st->batch_hist[i]);
}
