/* test_replica.c — a follower's store fed the leader's log as frames that do not follow the
 * atomic groups (evs_replica_submit, as the replication link does): it never writes, shows
 * or keeps part of a group (writer.c do_replica R1), also when promoted halfway, and a
 * relocation reaches it whole; a power cut's hole in its last batches is a torn tail though
 * the leader's SYNCED flags follow it (store.c R2); a catch-up syncs each batch while it
 * writes the next, answers and shows nothing before its sync, and a promotion behind it
 * waits for it (writer.c W10); the leader's spans are walked where they lie in files found on
 * disk, and end at its own batches' ends (replica.c L2, L3). */
#include "internal.h"
#include "record.h"

#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <zlib.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>


static char *dir, *fdir;
static void setup(void) { dir = tmpdir_new(); fdir = tmpdir_new(); }
static void teardown(void)
{
    rm_rf(dir);
    rm_rf(fdir);
    free(dir);
    free(fdir);
}
TestSuite(replica, .init = setup, .fini = teardown);

static void fail_on_error(void *arg, int level, const char *msg)
{
    (void)arg;
    if (level <= EVS_LOG_ERROR)
        cr_assert_fail("store logged an error: %s", msg);
}

static evs_store *open_at(const char *where, bool replica)
{
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 1 << 20;
    o.retention_interval_ms = 3600 * 1000;
    o.replica = replica;
    o.log = fail_on_error;
    return open_store(where, &o);
}

static uint64_t log_end(evs_store *st)
{
    evs_store_stats s;
    evs_store_stats_get(st, &s);
    return s.log_end;
}

typedef struct rwait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
} rwait;

static void rdone(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err)
{
    (void)ids, (void)n, (void)err;
    rwait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void replica_feed(evs_store *st, uint64_t at, const uint8_t *b, size_t len)
{
    rwait w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0};
    cr_assert_eq(evs_replica_submit(st, at, b, len, rdone, &w), 0);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    cr_assert_eq(w.rc, 0);
}

/* The records of every segment of the store in `from`, in log order, as one buffer; *cut:
 * the end of the nth record flagged `flag` (a piece ending there leaves a group open). */
static uint8_t *log_bytes_of(const char *from, uint16_t flag, int nth, size_t *len, size_t *cut)
{
    uint8_t *out = log_records(from, len);
    *cut = 0;
    int seen = 0;
    rec_hdr h;
    uint64_t rs;
    for (size_t o = 0; o < *len && rec_check(out + o, *len - o, &h, &rs) == REC_OK; o += rs)
        if ((h.flags & flag) && ++seen == nth)
            *cut = o + rs;
    return out;
}

/* Three reads of `name`: forward, reverse, filtered by type b. */
static void three_reads(evs_store *st, const char *name, char *out[3])
{
    evs_query q[3];
    for (int i = 0; i < 3; i++)
        evs_query_init(&q[i]);
    q[1].reverse = true;
    q[2].type = S("b");
    for (int i = 0; i < 3; i++)
        out[i] = read_all(st, name, &q[i]);
}

static void same_reads(evs_store *st, const char *name, char *want[3], const char *when)
{
    char *got[3];
    three_reads(st, name, got);
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(got[i], want[i], "read %d %s", i, when);
        free(got[i]);
    }
}

Test(replica, a_relocation_in_two_pieces_is_applied_whole)
{
    /* the leader's side: a relocated stream */
    evs_store *st = open_at(dir, false);
    evs_error err;
    for (int i = 0; i < 300; i++)
        cr_assert_eq(add(st, "r", EVS_ID_AUTO, EVS_ID_MIN, NULL, "type", i % 2 ? "a" : "b",
                         NULL), 0);
    char *want[3];
    three_reads(st, "r", want);
    uint32_t no = state_of(st, "r").no;
    uint64_t n, moved;
    cr_assert_eq(writer_relocate(st, &no, 1, UINT64_MAX, 1 << 20, &n, &moved, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(n, 1);
    cr_assert_gt(moved, 0);
    cr_assert_eq(evs_close(st), 0);
    size_t len, cut;
    uint8_t *bytes = log_bytes_of(dir, REC_F_MOVED, 1, &len, &cut);
    cr_assert_gt(cut, 0);
    /* the follower's: the log up to the first copy, then the rest */
    evs_store *f = open_at(fdir, true);
    replica_feed(f, 0, bytes, cut);
    same_reads(f, "r", want, "with one copy received");
    cr_assert_lt(log_end(f), cut, "the first copy is not written before its group is whole");
    cr_assert_lt(state_of(f, "r").first_pos, cut);
    replica_feed(f, cut, bytes + cut, len - cut);
    same_reads(f, "r", want, "with every copy");
    cr_assert_eq(log_end(f), len);
    cr_assert_geq(state_of(f, "r").first_pos, cut - 1024, "the copies are the stream's now");
    cr_assert_eq(verify_print(f), 0);
    cr_assert_eq(evs_close(f), 0);
    for (int i = 0; i < 3; i++)
        free(want[i]);
    free(bytes);
}

Test(replica, part_of_a_group_is_never_shown_and_a_promotion_drops_it)
{
    /* the leader's side: one atomic batch of 50 entries after 20 lone ones */
    evs_store *st = open_at(dir, false);
    evs_error err;
    for (int i = 0; i < 20; i++)
        cr_assert_eq(add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, NULL, "type", "b", NULL), 0);
    evs_field f1 = {{"type", 4}, {"b", 1}};
    evs_append batch[50];
    for (int i = 0; i < 50; i++)
        batch[i] = (evs_append){{"s", 1}, EVS_ID_AUTO, EVS_ID_MIN, &f1, 1, false};
    evs_id ids[50];
    cr_assert_eq(evs_append_batch(st, batch, 50, ids, &err), 0, "%s", err.msg);
    cr_assert_eq(evs_close(st), 0);
    size_t len, cut;
    uint8_t *bytes = log_bytes_of(dir, REC_F_TXN_CONT, 2, &len, &cut);
    cr_assert_gt(cut, 0);
    /* a follower given the log up to the batch's first record (the stream's create and first
     * entry are a group of two before it) shows the 20, no more */
    evs_store *f = open_at(fdir, true);
    replica_feed(f, 0, bytes, cut);
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(f, S("s"), &info), 0);
    cr_assert_eq(info.length, 20, "a follower shows part of a group: %lu entries",
                 (unsigned long)info.length);
    char *text = read_all(f, "s", NULL);
    size_t n = 0;
    for (const char *c = text; *c; c++)
        n += *c == ';';
    free(text);
    cr_assert_eq(n, 20);
    /* promoted then: the part is dropped, never closed by the epoch record */
    evs_epoch ep;
    cr_assert_eq(evs_promote(f, &ep, &err), 0, "%s", err.msg);
    cr_assert_eq(add(f, "s", EVS_ID_AUTO, EVS_ID_MIN, NULL, "type", "b", NULL), 0);
    cr_assert_eq(evs_stream_info_get(f, S("s"), &info), 0);
    cr_assert_eq(info.length, 21);
    cr_assert_eq(evs_close(f), 0);
    rm_index(fdir); /* what the log alone says */
    f = open_at(fdir, false);
    cr_assert_eq(evs_stream_info_get(f, S("s"), &info), 0);
    cr_assert_eq(info.length, 21, "after a rebuild: %lu entries", (unsigned long)info.length);
    cr_assert_eq(verify_print(f), 0);
    cr_assert_eq(evs_close(f), 0);
    free(bytes);
}

/* The path of the only segment file of the store in `d`. */
static void only_segment(const char *d, char *out, size_t cap)
{
    char logdir[600];
    snprintf(logdir, sizeof logdir, "%s/log", d);
    DIR *dp = opendir(logdir);
    cr_assert(dp != NULL);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        size_t l = strlen(de->d_name);
        if (l > 4 && !strcmp(de->d_name + l - 4, ".seg")) {
            snprintf(out, cap, "%s/%s", logdir, de->d_name);
            n++;
        }
    }
    closedir(dp);
    cr_assert_eq(n, 1, "%d segments in %s", n, logdir);
}

/* A power cut and the reboot after it: the 4 KiB page at `page` of the follower's only
 * segment never reached the disk (zeros), and its index stopped before the batch. */
static void lose_page(uint64_t page)
{
    char seg[700];
    only_segment(fdir, seg, sizeof seg);
    static const uint8_t z[4096];
    int fd = open(seg, O_WRONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, z, sizeof z, (off_t)page), (ssize_t)sizeof z);
    close(fd);
    rm_index(fdir);
}

/* Follower f, reopened after lose_page: its log ends at `cut`, what followed kept in one .torn
 * file; the leader's bytes sent again from there make it the leader's byte for byte. Closes f. */
static void cut_then_identical(evs_store *f, uint64_t cut, const uint8_t *bytes, size_t len)
{
    cr_assert_eq(log_end(f), cut, "the log ends at %lu, not where the hole's record or group "
                 "began (%lu)", (unsigned long)log_end(f), (unsigned long)cut);
    char logdir[700];
    snprintf(logdir, sizeof logdir, "%s/log", fdir);
    cr_assert_eq(files_ending(logdir, ".torn"), 1);
    replica_feed(f, cut, bytes + cut, len - cut);
    cr_assert_eq(verify_print(f), 0);
    cr_assert_eq(evs_close(f), 0);
    size_t flen;
    uint8_t *fbytes = log_records(fdir, &flen);
    cr_assert_eq(flen, len);
    cr_assert(memcmp(fbytes, bytes, len) == 0, "the follower's log is the leader's again");
    free(fbytes);
}

/* A power cut during a follower's sync of a batch of the leader's records leaves a page of it
 * unwritten and later ones written, and those carry the leader's REC_F_SYNCED flags, which
 * say nothing of the follower's syncs (store.c R2): the open cuts a torn tail at the hole
 * (kept in a .torn file), logs no corruption, and the leader's bytes sent again from there
 * make the follower byte-identical. */
Test(replica, a_hole_in_a_followers_last_batch_is_a_torn_tail_whatever_leader_flags_follow)
{
    evs_store *st = open_at(dir, false);
    char v[301];
    memset(v, 'v', 300);
    v[300] = 0;
    for (int i = 0; i < 80; i++) /* each synced alone: every record after the first flagged */
        cr_assert_eq(add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, NULL, "v", v, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
    size_t len, first = 0;
    uint8_t *bytes = log_records(dir, &len);
    rec_hdr h;
    uint64_t rs;
    for (int i = 0; i < 10; i++, first += rs)
        cr_assert_eq(rec_check(bytes + first, len - first, &h, &rs), REC_OK);
    /* the follower: ten records in one batch, the other seventy in a second */
    evs_store *f = open_at(fdir, true);
    replica_feed(f, 0, bytes, first);
    replica_feed(f, first, bytes + first, len - first);
    cr_assert_eq(evs_close(f), 0);
    /* the power cut: a page in the middle of the second batch never reached the disk */
    uint64_t page = (first + (len - first) / 2) & ~(uint64_t)4095;
    cr_assert_gt(page, first);
    long before = 0, flagged_after = 0;
    uint64_t cut = 0;
    for (size_t o = 0; o < len; o += rs) {
        cr_assert_eq(rec_check(bytes + o, len - o, &h, &rs), REC_OK);
        if (o + rs <= page) {
            before += h.kind == REC_ENTRY;
            cut = o + rs;
        } else if (o >= page + 4096) {
            flagged_after += (h.flags & REC_F_SYNCED) != 0;
        }
    }
    cr_assert_geq(flagged_after, 5, "the leader's flags follow the hole");
    lose_page(page);
    /* reopened as the follower it was (open_at fails the test on any logged corruption) */
    f = open_at(fdir, true);
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(f, S("s"), &info), 0);
    cr_assert_eq((long)info.length, before, "%lu entries, %ld whole before the hole",
                 (unsigned long)info.length, before);
    cut_then_identical(f, cut, bytes, len);
    free(bytes);
}

/* ---- W10: a follower's batch synced while the next is written ---------------------------- */

/* `batches` batches of `per` entries of stream `name`, each one field v of vlen bytes. */
static void append_batches(evs_store *st, const char *name, size_t vlen, int per, int batches)
{
    char *v = malloc(vlen);
    evs_append *a = calloc((size_t)per, sizeof *a);
    cr_assert(v && a);
    memset(v, 'x', vlen);
    evs_field f = {S("v"), {v, vlen}};
    for (int i = 0; i < per; i++)
        a[i] = (evs_append){S(name), EVS_ID_AUTO, EVS_ID_MIN, &f, 1, false};
    evs_error err;
    for (int b = 0; b < batches; b++)
        cr_assert_eq(evs_append_batch(st, a, (size_t)per, NULL, &err), 0, "%s", err.msg);
    free(a);
    free(v);
}

/* A leader store in `dir` with about 40 MiB of log in one segment (so no seal forces a sync
 * between batches), or in segments of seg_bytes when not 0: 20,000 entries of 2 KiB. Its
 * log's records, *len bytes (log_records). */
static uint8_t *make_big_leader(size_t *len, uint64_t seg_bytes)
{
    evs_options o;
    evs_options_init(&o);
    o.fsync = EVS_FSYNC_NO;
    if (seg_bytes)
        o.segment_bytes = seg_bytes;
    evs_store *st = open_store(dir, &o);
    append_batches(st, "big", 2048, 500, 40);
    cr_assert_eq(evs_close(st), 0);
    return log_records(dir, len);
}

typedef struct frames {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok, failed, out_of_order;
    int next; /* the frame number expected next */
} frames;

typedef struct frame_arg {
    frames *f;
    int no;
} frame_arg;

static void frame_done(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err)
{
    (void)ids, (void)n, (void)err;
    frame_arg *a = arg;
    frames *f = a->f;
    pthread_mutex_lock(&f->mu);
    f->out_of_order += a->no != f->next++;
    f->done++;
    if (rc == 0)
        f->ok++;
    else if (rc == EVS_EFAILED)
        f->failed++;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    free(a);
}

/* Queue the leader's log for follower fst as frames of whole records, about 256 KiB each,
 * under a hold (no wake-up for them until evs_submit_release); the frames' count.
 * A hold only keeps a sleeping writer asleep: a writer thread that is awake takes what is
 * queued, and one not yet at its first wait (a slow start on a loaded 2-core machine; a CI
 * run failed so) would take the first frames as they came. So the role is held too while
 * they are queued: whoever takes it next finds all of them. */
static int queue_frames(evs_store *fst, const uint8_t *bytes, size_t len, frames *fr)
{
    *fr = (frames){PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0};
    int n = 0;
    evs_submit_hold(fst);
    pthread_mutex_lock(&fst->rolemu); /* lock order: rolemu, then qmu (writer_submit's) */
    for (size_t off = 0, piece; off < len; off += piece, n++) {
        rec_hdr h;
        uint64_t rs;
        for (piece = 0; off + piece < len && piece < (256u << 10); piece += rs) /* whole records */
            cr_assert_eq(rec_check(bytes + off + piece, len - off - piece, &h, &rs), REC_OK);
        frame_arg *a = malloc(sizeof *a);
        *a = (frame_arg){fr, n};
        cr_assert_eq(evs_replica_submit(fst, off, bytes + off, piece, frame_done, a), 0);
    }
    pthread_mutex_unlock(&fst->rolemu);
    return n;
}

/* Feed the leader's log to follower fst, every frame queued before the writer takes any (one
 * list: it writes batches of 16 MiB, more frames waiting after each), and wait for every
 * answer, which must come in order. */
static void feed_all_queued(evs_store *fst, const uint8_t *bytes, size_t len, frames *fr)
{
    int n = queue_frames(fst, bytes, len, fr);
    evs_submit_release(fst);
    pthread_mutex_lock(&fr->mu);
    while (fr->done < n)
        pthread_cond_wait(&fr->cv, &fr->mu);
    pthread_mutex_unlock(&fr->mu);
    cr_assert_eq(fr->out_of_order, 0, "frames answered out of order");
}

static evs_store *open_follower_seg(const struct evs_io *io, bool strict, uint64_t seg_bytes)
{
    evs_options o;
    evs_options_init(&o);
    if (seg_bytes)
        o.segment_bytes = seg_bytes;
    o.replica = true;
    o.io = io;
    o.retention_interval_ms = 3600 * 1000;
    o.max_entry_bytes = 64 << 10; /* a torn tail's reach: two batches + this + 1 MiB (R2) */
    if (strict)
        o.log = fail_on_error;
    return open_store(fdir, &o);
}

static evs_store *open_follower(const struct evs_io *io, bool strict)
{
    return open_follower_seg(io, strict, 0);
}

/* A catch-up's frames, all waiting: batches are synced by the syncer while the next is
 * written, every frame is answered in order once synced, the follower's log is the
 * leader's byte for byte, and readers see every entry. */
Test(replica, a_catch_up_syncs_each_batch_while_it_writes_the_next, .timeout = 120)
{
    size_t len;
    uint8_t *bytes = make_big_leader(&len, 0);
    cr_assert_gt(len, 40u << 20);
    evs_store *f = open_follower(NULL, true);
    frames fr;
    feed_all_queued(f, bytes, len, &fr);
    cr_assert_eq(fr.ok, fr.done);
    evs_store_stats s;
    evs_store_stats_get(f, &s);
    cr_assert_geq(s.fsyncs_overlapped, 2, "syncs overlapped: %lu",
                  (unsigned long)s.fsyncs_overlapped);
    cr_assert_eq(s.synced_end, len, "every answered frame is synced");
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(f, S("big"), &info), 0);
    cr_assert_eq(info.length, 20000);
    cr_assert_eq(evs_close(f), 0);
    size_t flen;
    uint8_t *fbytes = log_records(fdir, &flen);
    cr_assert_eq(flen, len);
    cr_assert(memcmp(fbytes, bytes, len) == 0);
    f = open_follower(NULL, true);
    cr_assert_eq(verify_print(f), 0);
    cr_assert_eq(evs_close(f), 0);
    free(fbytes);
    free(bytes);
}

/* The syncer's fdatasync fails (the first one after the open, the first batch's, handed over
 * as the second was written): no frame is answered as written, nothing of them shows, the
 * store is failed, and it reopens clean. */
Test(replica, a_failed_sync_on_the_syncer_acknowledges_none_of_its_batch, .timeout = 120)
{
    size_t len;
    uint8_t *bytes = make_big_leader(&len, 0);
    evs_store *f = open_follower(&fio_faulty, false);
    fio_fault_arm(FIO_SYNC, 1, EIO, 0);
    frames fr;
    feed_all_queued(f, bytes, len, &fr);
    fio_fault_reset();
    cr_assert_eq(fr.ok, 0, "%d frames answered as written after a failed sync", fr.ok);
    cr_assert_eq(fr.failed, fr.done);
    evs_store_stats s;
    evs_store_stats_get(f, &s);
    cr_assert_eq(s.fsyncs_overlapped, 1, "the failed sync was the syncer's");
    evs_error err;
    cr_assert_eq(evs_failed(f, &err), EVS_EFAILED);
    cr_assert(strstr(err.msg, "fdatasync") != NULL, "%s", err.msg);
    evs_stream_info info; /* and readers see nothing of a batch whose sync failed */
    int rc = evs_stream_info_get(f, S("big"), &info);
    cr_assert(rc == EVS_ENOTFOUND || (rc == 0 && info.length == 0), "rc %d, %lu entries shown", rc,
              rc ? 0ul : (unsigned long)info.length);
    evs_close(f);
    f = open_follower(NULL, true);
    cr_assert_eq(verify_print(f), 0);
    cr_assert_eq(evs_close(f), 0);
    free(bytes);
}

/* R2 with W10: a power cut while one batch synced and the next was being written can leave a
 * hole more than one batch from the end; in a follower's log that is still a torn tail (cut,
 * kept, sent again), not corruption. */
Test(replica, a_hole_two_batches_from_a_followers_end_is_a_torn_tail, .timeout = 120)
{
    size_t len;
    uint8_t *bytes = make_big_leader(&len, 0);
    evs_store *f = open_follower(NULL, true);
    frames fr;
    feed_all_queued(f, bytes, len, &fr);
    cr_assert_eq(fr.ok, fr.done);
    cr_assert_eq(evs_close(f), 0);
    /* past one batch's reach (16 MiB + 64 KiB + 1 MiB) from the end, within two; the cut
     * falls at the start of the atomic group (a batch of 500) the lost page is in */
    uint64_t page = (len - (24u << 20)) & ~(uint64_t)4095, cut = 0, group = 0;
    rec_hdr h;
    uint64_t rs;
    for (size_t o = 0; o < len; o += rs) {
        cr_assert_eq(rec_check(bytes + o, len - o, &h, &rs), REC_OK);
        if (o + rs > page) {
            cut = group;
            break;
        }
        if (!(h.flags & REC_F_TXN_CONT))
            group = o + rs;
    }
    cr_assert_gt(cut, 0);
    lose_page(page);
    f = open_follower(NULL, true); /* fails the test if the open logs corruption */
    cut_then_identical(f, cut, bytes, len);
    free(bytes);
}

/* A promotion queued behind a catch-up's frames, so that it comes while a batch's sync is in
 * flight: every frame is answered, in order, before it returns; the new epoch begins at the
 * frames' end; and the store, promoted, reopens clean with that epoch. */
Test(replica, a_promotion_behind_a_catch_up_waits_for_its_syncs, .timeout = 120)
{
    size_t len;
    uint8_t *bytes = make_big_leader(&len, 0);
    evs_store *f = open_follower(NULL, true);
    frames fr;
    int n = queue_frames(f, bytes, len, &fr);
    evs_epoch ep;
    evs_error err;
    cr_assert_eq(evs_promote(f, &ep, &err), 0, "%s", err.msg); /* wakes the writer (W6) */
    evs_submit_release(f);
    pthread_mutex_lock(&fr.mu);
    cr_assert_eq(fr.done, n, "%d of %d frames answered when the promotion returned", fr.done, n);
    pthread_mutex_unlock(&fr.mu);
    cr_assert_eq(fr.ok, n);
    cr_assert_eq(fr.out_of_order, 0);
    cr_assert_eq(ep.start, len, "the epoch begins at %lu, the frames end at %lu",
                 (unsigned long)ep.start, (unsigned long)len);
    evs_store_stats s;
    evs_store_stats_get(f, &s);
    cr_assert_geq(s.fsyncs_overlapped, 1);
    cr_assert_geq(s.synced_end, len);
    int arc = add(f, "big", EVS_ID_AUTO, EVS_ID_MIN, NULL, "v", "after", NULL);
    cr_assert_eq(arc, 0, "an append after the promotion: %s", evs_strerror(arc));
    cr_assert_eq(evs_close(f), 0);
    rm_index(fdir); /* what the log alone says */
    f = open_at(fdir, false);
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(f, S("big"), &info), 0);
    cr_assert_eq(info.length, 20001);
    evs_epoch eps[8];
    size_t ne = evs_epochs(f, eps, 8);
    cr_assert_geq(ne, 2);
    cr_assert_eq(eps[ne - 1].epoch, ep.epoch);
    cr_assert_eq(eps[ne - 1].start, len);
    cr_assert_eq(verify_print(f), 0);
    cr_assert_eq(evs_close(f), 0);
    free(bytes);
}

/* ---- preparer.c Z1: a catch-up's spares are not zero-filled ------------------------------ */

/* Wait until st's preparer has a spare ready; then whether every extent of that file is
 * unwritten (preallocated, reads as zeros) rather than written: 1 unwritten, 0 written,
 * -1 when the file system does not tell (no FIEMAP, or no extents). */
static int spare_unwritten(evs_store *st, const char *d)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&st->prep_mu);
        bool ready = st->spare_ready;
        pthread_mutex_unlock(&st->prep_mu);
        if (ready)
            break;
        usleep(10000);
    }
    char p[700];
    snprintf(p, sizeof p, "%s/log/spare.seg.tmp", d);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0, "no spare: %s", p);
    struct {
        struct fiemap m;
        struct fiemap_extent e[64];
    } q;
    memset(&q, 0, sizeof q);
    q.m.fm_length = FIEMAP_MAX_OFFSET;
    q.m.fm_flags = FIEMAP_FLAG_SYNC;
    q.m.fm_extent_count = 64;
    int rc = ioctl(fd, FS_IOC_FIEMAP, &q.m);
    close(fd);
    if (rc || q.m.fm_mapped_extents == 0)
        return -1;
    int unwritten = 0;
    for (unsigned i = 0; i < q.m.fm_mapped_extents; i++)
        unwritten += (q.e[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN) != 0;
    return unwritten == (int)q.m.fm_mapped_extents;
}

/* A follower catching up (batches of megabytes, each synced while the next is written) has
 * its spares made without zeros; a store that is not catching up zero-fills them (--fsync
 * always), which is also what shows that the file system tells the two apart. */
Test(replica, a_catch_up_makes_its_spares_without_zeros, .timeout = 120)
{
    evs_store *quiet = open_follower_seg(NULL, true, 32u << 20); /* not catching up */
    int zeros = spare_unwritten(quiet, fdir);
    cr_assert_eq(evs_close(quiet), 0);
    if (zeros < 0)
        cr_skip_test("the file system does not report extents (FIEMAP)");
    cr_assert_eq(zeros, 0, "the spare of a follower that is not catching up is not zero-filled");
    rm_rf(fdir);
    cr_assert_eq(mkdir(fdir, 0755), 0);
    size_t len;
    uint8_t *bytes = make_big_leader(&len, 32u << 20); /* two segments: a roll, a new spare */
    evs_store *f = open_follower_seg(NULL, true, 32u << 20);
    frames fr;
    feed_all_queued(f, bytes, len, &fr);
    cr_assert_eq(fr.ok, fr.done);
    cr_assert_eq(spare_unwritten(f, fdir), 1, "a catch-up's spare was zero-filled");
    cr_assert_eq(evs_close(f), 0);
    size_t flen;
    uint8_t *fbytes = log_records(fdir, &flen);
    cr_assert_eq(flen, len);
    cr_assert(memcmp(fbytes, bytes, len) == 0);
    free(fbytes);
    free(bytes);
}

Test(replica, a_snapshot_request_reads_back_as_written)
{
    uint64_t own = 7;
    cr_assert_eq(evs_replica_snapshot_pending(fdir, &own), 0, "no marker: nothing pending");
    evs_store *f = open_at(fdir, true);
    evs_error err;
    const uint64_t cases[] = {0, 77, UINT64_MAX};
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(evs_replica_snapshot_request(f, cases[i], &err), 0, "%s", err.msg);
        cr_assert_eq(evs_replica_snapshot_pending(fdir, &own), 1);
        cr_assert_eq(own, cases[i], "wrote %" PRIu64 ", read %" PRIu64, cases[i], own);
    }
    cr_assert_eq(evs_close(f), 0);
    /* a marker that does not parse is pending with its bytes unknown: never taken for 0 */
    const char *odd[] = {"snapshot own 0 \n", "snapshot own \n", "snapshot own 0", "x",
                         "snapshot own 00x\n", "", "snapshot own -1\n", "snapshot own  5\n",
                         "snapshot own 99999999999999999999999\n", "snapshot own 0\n\n"};
    char path[4200];
    snprintf(path, sizeof path, "%s/SNAPSHOT", fdir);
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        FILE *m = fopen(path, "w");
        cr_assert(m);
        fputs(odd[i], m);
        fclose(m);
        cr_assert_eq(evs_replica_snapshot_pending(fdir, &own), 1);
        cr_assert_eq(own, UINT64_MAX, "\"%s\" read as %" PRIu64, odd[i], own);
    }
}

Test(replica, a_malformed_truncate_marker_stops_the_open_and_cuts_nothing)
{
    evs_store *f = open_at(fdir, true);
    evs_error err;
    cr_assert_eq(evs_replica_truncate_request(f, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(evs_close(f), 0);
    char path[4200];
    snprintf(path, sizeof path, "%s/TRUNCATE", fdir);
    const char *odd[] = {"truncate -8\n", "truncate 8 \n", "truncate 8", "truncate \n",
                         "truncate 12\n"};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        FILE *m = fopen(path, "w");
        cr_assert(m);
        fputs(odd[i], m);
        fclose(m);
        evs_options o;
        evs_options_init(&o);
        o.replica = true;
        evs_store *st = NULL;
        memset(&err, 0, sizeof err);
        cr_assert_eq(evs_open(fdir, &o, &st, &err), EVS_ECORRUPT, "\"%s\" opened", odd[i]);
        cr_assert_null(st);
        cr_assert(strstr(err.msg, "TRUNCATE is malformed"), "%s", err.msg);
        cr_assert_eq(access(path, F_OK), 0, "the marker stays for the operator");
    }
    cr_assert_eq(unlink(path), 0);
    evs_store *again = open_at(fdir, true);
    cr_assert_eq(evs_close(again), 0);
}

Test(replica, a_log_crc_covers_the_last_bytes_of_one_segment, .timeout = 120)
{
    size_t len;
    uint8_t *bytes = make_big_leader(&len, 1u << 20); /* many segments */
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 1u << 20;
    evs_store *st = open_store(dir, &o);
    cr_assert_eq(log_end(st), len);
    evs_error err;
    uint32_t crc = 0;
    uint64_t from = UINT64_MAX; /* the leader's way: the window chosen */
    cr_assert_eq(evs_log_crc(st, &from, len, 4096, &crc, &err), 0, "%s", err.msg);
    cr_assert_eq(from, len - 4096);
    cr_assert_eq(crc, (uint32_t)crc32(0, bytes + from, 4096));
    from = UINT64_MAX; /* near the log's start: the window starts at the segment's base */
    cr_assert_eq(evs_log_crc(st, &from, 100, 4096, &crc, &err), 0, "%s", err.msg);
    cr_assert_eq(from, 0);
    cr_assert_eq(crc, (uint32_t)crc32(0, bytes, 100));
    from = len - 100; /* the follower's way: the window given */
    cr_assert_eq(evs_log_crc(st, &from, len, 0, &crc, &err), 0, "%s", err.msg);
    cr_assert_eq(crc, (uint32_t)crc32(0, bytes + len - 100, 100));
    const uint64_t bad[][2] = {{0, len}, {0, 0}, {len - 8, len + 8}, {100, 50}};
    for (size_t i = 0; i < 4; i++) { /* across segments, nothing, past the end, backwards */
        from = bad[i][0];
        cr_assert_eq(evs_log_crc(st, &from, bad[i][1], 0, &crc, &err), EVS_ENOTFOUND,
                     "[%" PRIu64 ", %" PRIu64 ")", bad[i][0], bad[i][1]);
    }
    cr_assert_eq(evs_close(st), 0);
    free(bytes);
}

Test(replica, a_cut_moves_the_index_aside_and_leaves_no_copy)
{
    for (int round = 0; round < 2; round++) { /* at 0 (nothing left to rebuild), mid-log */
        rm_rf(fdir);
        cr_assert_eq(mkdir(fdir, 0755), 0);
        evs_store *st = open_at(fdir, false);
        evs_id ids[20];
        for (int i = 0; i < 20; i++)
            cr_assert_eq(add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, &ids[i], "k", "v", NULL), 0);
        uint64_t x = round ? log_end(st) / 2 : 0;
        cr_assert_eq(evs_close(st), 0);
        /* a record boundary: the position of the 10th entry's record, from the log */
        if (round) {
            size_t len;
            uint8_t *b = log_records(fdir, &len);
            uint64_t off = 0, at = 0;
            rec_hdr h;
            uint64_t sz;
            while (off < len && rec_check(b + off, len - off, &h, &sz) == REC_OK) {
                if (off <= x)
                    at = off;
                off += sz;
            }
            free(b);
            x = at;
        }
        st = open_at(fdir, true);
        evs_error err;
        cr_assert_eq(store_truncate_request(st, x, &err), 0, "%s", err.msg);
        cr_assert_eq(evs_close(st), 0);
        st = open_at(fdir, true); /* the cut, then recovery: no error logged (open_at) */
        cr_assert_eq(log_end(st), x);
        cr_assert_eq(verify_print(st), 0);
        cr_assert_eq(evs_close(st), 0);
        cr_assert_eq(files_ending(fdir, ".untrusted"), 0, "round %d", round);
        DIR *d = opendir(fdir);
        struct dirent *e;
        while ((e = readdir(d)))
            cr_assert(strncmp(e->d_name, "index.damaged-", 14), "round %d: %s kept", round,
                      e->d_name);
        closedir(d);
    }
}

/* A span of the log as evs_log_span hands it out: its bytes read from *fd at *off. */
static long span_read(evs_store *st, uint64_t pos, size_t cap, uint64_t *at, uint8_t *buf,
                      evs_error *err)
{
    int fd;
    uint64_t off;
    void *hold;
    long n = evs_log_span(st, pos, cap, at, &fd, &off, &hold, err);
    if (n > 0) {
        cr_assert_eq(pread(fd, buf, (size_t)n, (off_t)off), n);
        evs_log_release(hold);
    }
    return n;
}

/* The n bytes of buf, the log's from pos, are whole records (rec_check), nothing between. */
static void assert_records(const uint8_t *buf, uint64_t n, uint64_t pos)
{
    rec_hdr h;
    uint64_t sz;
    for (uint64_t o = 0; o < n; o += sz)
        cr_assert_eq(rec_check(buf + o, n - o, &h, &sz), REC_OK, "record at %" PRIu64, pos + o);
}

/* replica.c L2, L3: spans end at record boundaries; bytes found on disk are walked, so a
 * damaged header in a sealed segment stops the stream where it lies; what this process's
 * writer appended goes out up to its last batch's end. */
Test(replica, a_log_span_walks_what_it_found_on_disk_and_ships_its_own_batches_whole,
     .timeout = 120)
{
    size_t len;
    uint8_t *bytes = make_big_leader(&len, 1u << 20); /* many segments, the first sealed */
    uint64_t bad = 0, sz = 0; /* the fifth record of the first segment gets a bad magic */
    rec_hdr h;
    for (int i = 0; i < 4; i++, bad += sz)
        cr_assert_eq(rec_check_hdr(bytes + bad, len - bad, &h, &sz), REC_OK);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/log/%020d.seg", dir, 0);
    int fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0, "%s", path);
    cr_assert_eq(pwrite(fd, "\xff\xff\xff\xff", 4, (off_t)bad), 4);
    close(fd);

    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 1u << 20;
    evs_store *st = open_store(dir, &o);
    uint64_t end = log_end(st);
    cr_assert_eq(end, len);
    uint8_t *buf = malloc(8u << 20); /* a cap past the segment's size: only a walk stops */
    uint64_t at;
    evs_error err;
    long n = span_read(st, 0, 8u << 20, &at, buf, &err);
    cr_assert_eq(n, (long)bad, "the records before the damaged one: %ld", n);
    cr_assert_eq(at, 0);
    cr_assert_eq(memcmp(buf, bytes, bad), 0);
    n = span_read(st, bad, 8u << 20, &at, buf, &err);
    cr_assert_eq(n, EVS_EINVAL, "%ld", n);
    cr_assert(strstr(err.msg, "is not a record") && strstr(err.msg, "00000000000000000000.seg"),
              "%s", err.msg);

    /* this process's batches: each span ends at a batch's end, records whole */
    append_batches(st, "small", 100, 50, 3);
    uint64_t now = log_end(st);
    uint64_t pos = end;
    while (pos < now) {
        n = span_read(st, pos, 1u << 20, &at, buf, &err);
        cr_assert_gt(n, 0, "%s", err.msg);
        cr_assert_eq(at, pos);
        assert_records(buf, (uint64_t)n, pos);
        pos += (uint64_t)n;
    }
    cr_assert_eq(pos, now);
    n = span_read(st, end + 8, 1u << 20, &at, buf, &err); /* not a record's start */
    cr_assert_eq(n, EVS_EINVAL, "%ld", n);
    /* a cap below a span cuts it at a record boundary (the walk) */
    n = span_read(st, end, 1000, &at, buf, &err);
    cr_assert_gt(n, 0, "%s", err.msg);
    cr_assert_leq(n, 1000);
    assert_records(buf, (uint64_t)n, end);
    cr_assert_eq(evs_close(st), 0);
    free(buf);
    free(bytes);
}
