/*
 * preparer.c — the next segment file, made ahead of time: a background thread keeps one
 * fsynced "log/spare.seg.tmp" ready — zero-filled with --fsync always, preallocated only
 * otherwise — so that a roll is a rename, never minutes of zeroing on the writer's path. Its
 * failures are not the store's: the writer, finding no spare (the log fills faster than the
 * spare is made, as in a follower's catch-up), makes the file itself, preallocated but not
 * zero-filled, and meets (and reports) the same error.
 *
 * A roll reserves the next file (prep_reserve) before it seals the active segment and
 * renames it into place (prep_install) after: a full disk is met before anything is written,
 * so the writer can refuse the request (EVS_ENOSPACE) and stay writable.
 *
 * The space reserve. Freeing space writes first: retention re-declares the streams created in
 * a segment before it deletes it (retention.c R2), and a relocation or an age roll needs a new
 * segment. On a full disk with the active segment full, those writes found no room, so
 * nothing could ever be deleted again (measured: a 16 MiB store trimmed to 100 entries kept
 * all 14 of its segments, retention failing every second). So:
 *  P2. A writable store keeps "log/reserve.seg.tmp", one preallocated segment, which only
 *      the rolls that free space may take (prep_reserve `freeing`: retention's declares,
 *      relocations and age rolls, trims and stream deletions; and a new epoch's record),
 *      and only when no spare is ready and no new file can be made. Every other write makes
 *      the reserve first when it is missing, and is refused (EVS_ENOSPACE) when it cannot:
 *      so appends stop one segment short of a full disk, and space retention frees goes to
 *      the reserve before appends.
 *  P3. The reserve survives an open (store.c load_segments keeps it when it has the segment
 *      size; any other .tmp goes). An open that fails on a file system short of a segment's
 *      room (its recovery writes: the index catching up, a torn tail's copy) deletes it and
 *      tries once more (store.c evs_open).
 *
 * Deferred rolls (--fsync no and everysec). A roll's seal is synced before the next segment
 * has a segment's name (W4): only the last segment can have a torn tail. Waiting for that sync
 * on the writer tied a `no` store to the disk's speed (append-nosync 1.0 M entries/s against
 * 2.0-2.6 M with deferred rolls, docs/benchmarks.md). So, where no write waits for a sync:
 *  D1. The writer writes the seal without syncing it and goes on in the next file, renamed to
 *      "<base>.seg.pending" (not the segment's name) and queued here as a job.
 *  D2. Jobs run in order: fdatasync the predecessor, rename the pending file to its segment
 *      name, fsync the folder. So a file with a segment's name still has a synced, sealed
 *      predecessor (W4 holds for names), and a failure is the store's (sticky, W3). With
 *      everysec they run at once; with `no`, lazily (rolls_wait_ns).
 *  D3. Anything that syncs the log, or deletes or cuts segments, first waits for the jobs
 *      (prep_rolls_settle): everysec's sync and any forced sync (timed_sync), the checkpoint
 *      (the index never leads the durable log), close; retention waits only until the
 *      successor of the segment it deletes has its name (prep_wait_named: with tiny segments
 *      and slow syncs, waiting for the whole queue at each deletion let the log outgrow it).
 *  D4. Recovery (store.c adopt_pending) takes a pending file into the log only behind a
 *      complete predecessor: every record valid up to a seal that ends where the pending file
 *      begins (after a kill -9 in the same boot the page cache had it all: trusted unread);
 *      its job is queued again, so the open syncs nothing. Otherwise its bytes are kept aside
 *      as "<name>.pending.torn".
 *
 * Zeros or not. With --fsync always each batch's fdatasync into zeros syncs no extent
 * conversion, so a spare is zero-filled: the appends' latency, a follower's acknowledgement.
 *  Z1. Except for a follower catching up: its writer overlapped the sync of a batch of at
 *      least CATCHUP_BATCH_BYTES within the last CATCHUP_RECENT_NS (writer.c W10). Its
 *      batches are megabytes, and a zero-fill there is one more copy of every byte for the
 *      CPU the catch-up is short of (measured: 615 against 549 MB/s, medians of 6
 *      interleaved 1 GiB catch-ups, faster in each; the follower's CPU 2.1-2.3 s against
 *      2.5-2.9). A follower keeping up overlaps small batches too (at 10,000 entries/s, ten
 *      of eleven spares went unfilled with no size bound; with it, none, nor at c50/P16):
 *      those keep their zeros, and their acknowledgements the faster syncs. A zero-fill
 *      under way when a catch-up begins stops at its next chunk, and the spare is made again
 *      without zeros. A spare made without zeros and used after the catch-up serves one
 *      segment's appends with preallocated blocks.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SPARE "spare.seg.tmp"
#define NEXT "next.seg.tmp" /* made by the writer when no spare is ready */
#define RESERVE PREP_RESERVE /* P2 */

/*
 * Between chunks: stop if the store is closing; otherwise pause 4 ms (at most ~60 MiB/s of
 * zeros, a 64 MiB spare in about a second, and the disk mostly free for the writer's syncs)
 * unless the active segment is past half full, when the spare may soon be needed.
 */
static bool catching_up(evs_store *st);

static bool pace(void *arg)
{
    evs_store *st = arg;
    if (catching_up(st))
        return false; /* Z1: this zero-fill stops, and the spare is made again without zeros */
    pthread_mutex_lock(&st->prep_mu);
    bool stop = st->prep_stop;
    if (!stop && atomic_load(&st->active_used) < st->opt.segment_bytes / 2) {
        struct timespec ts = evs_deadline_ns(4000000);
        pthread_cond_timedwait(&st->prep_cv, &st->prep_mu, &ts);
        stop = st->prep_stop;
    }
    pthread_mutex_unlock(&st->prep_mu);
    return !stop;
}

/* Z1: a follower whose writer overlapped a big batch's sync this recently is catching up. */
#define CATCHUP_RECENT_NS 1000000000ull
static bool catching_up(evs_store *st)
{
    uint64_t t = atomic_load(&st->catchup_ns);
    return t && atomic_load(&st->following) && evs_mono_ns() - t < CATCHUP_RECENT_NS;
}

struct roll_job {
    struct roll_job *next;
    segment *prev, *seg; /* references held by the job */
    uint64_t queued_ns;
};

/* With --fsync no ("the OS decides") the jobs wait, so that a burst is not slowed by syncs of
 * its own segments (append-nosync with every job run at once: 1.2-1.3 M entries/s against
 * 2.0-2.6 M, the syncs' writeback competing on this 2-CPU VM): until one is ROLL_LAZY_NS old,
 * ROLL_LAZY_JOBS wait, or someone needs them done (prep_rolls_settle, the writer at
 * ROLLS_MAX). With everysec they run at once. */
#define ROLL_LAZY_NS 5000000000ull
#define ROLL_LAZY_JOBS 32

/* prep_mu held. 0 if the queue's jobs are due now, else how long until the oldest is. */
static uint64_t rolls_wait_ns(evs_store *st)
{
    if (st->rolls_urgent || st->opt.fsync != EVS_FSYNC_NO ||
        st->rolls_queued - st->rolls_done >= ROLL_LAZY_JOBS)
        return 0;
    uint64_t age = evs_mono_ns() - st->roll_head->queued_ns;
    return age >= ROLL_LAZY_NS ? 0 : ROLL_LAZY_NS - age;
}

/* D2: one deferred roll, prep_mu not held. */
static void roll_run(evs_store *st, struct roll_job *j)
{
    char from[PATH_MAX + 16], to[PATH_MAX];
    snprintf(to, sizeof to, "%s/%s", st->logdir, j->seg->name);
    snprintf(from, sizeof from, "%s%s", to, SEG_PENDING);
    const char *what = "fdatasync of segment";
    const char *name = j->prev->name;
    int rc = atomic_load(&st->failed) ? EVS_EFAILED : st->io->fdatasync(j->prev->fd);
    if (!rc) {
        what = "rename into place of segment";
        name = j->seg->name;
        rc = st->io->rename(from, to);
    }
    if (!rc && (rc = fio_fsync_dir(st->io, st->logdir)))
        what = "fsync of the folder after naming segment";
    if (!rc)
        atomic_store(&j->seg->pending_name, false);
    if (rc && rc != EVS_EFAILED)
        store_fail(st, rc, "%s %s failed (a deferred roll): %s", what, name, strerror(-rc));
    store_seg_put_fd(j->prev);
    store_seg_put_fd(j->seg);
    free(j);
}

/* Run every queued roll job; prep_mu held on entry and on return. */
static void rolls_run(evs_store *st)
{
    while (st->roll_head) {
        struct roll_job *j = st->roll_head;
        st->roll_head = j->next;
        if (!st->roll_head)
            st->roll_tail = NULL;
        pthread_mutex_unlock(&st->prep_mu);
        roll_run(st, j);
        pthread_mutex_lock(&st->prep_mu);
        st->rolls_done++;
        atomic_fetch_sub(&st->rolls_open, 1);
        pthread_cond_broadcast(&st->roll_cv);
    }
    st->rolls_urgent = false;
}

/* prep_mu held: run the queued jobs now, lazy or not (someone waits for them). */
static void rolls_hurry(evs_store *st)
{
    st->rolls_urgent = true;
    pthread_cond_signal(&st->prep_cv);
}

void prep_rolls_settle(evs_store *st)
{
    if (atomic_load(&st->rolls_open) == 0)
        return;
    pthread_mutex_lock(&st->prep_mu);
    uint64_t want = st->rolls_queued;
    if (st->rolls_done < want) {
        rolls_hurry(st);
    }
    while (st->rolls_done < want)
        pthread_cond_wait(&st->roll_cv, &st->prep_mu);
    pthread_mutex_unlock(&st->prep_mu);
}

void prep_wait_named(evs_store *st, segment *s)
{
    if (!atomic_load(&s->pending_name))
        return;
    pthread_mutex_lock(&st->prep_mu);
    while (atomic_load(&s->pending_name) && !atomic_load(&st->failed) &&
           st->rolls_done < st->rolls_queued) {
        rolls_hurry(st); /* the jobs before it and its own: the first ones queued */
        pthread_cond_wait(&st->roll_cv, &st->prep_mu);
    }
    pthread_mutex_unlock(&st->prep_mu);
}

static void *prep_main(void *arg)
{
    evs_store *st = arg;
    fio_thread_is_background();
    bool warned = false; /* once per run of failures (a full disk retries every second) */
    pthread_mutex_lock(&st->prep_mu);
    while (!st->prep_stop) {
        uint64_t wait_ns = st->roll_head ? rolls_wait_ns(st) : 0;
        if (st->roll_head && !wait_ns) { /* D2: before a spare, which may take a second */
            rolls_run(st);
            continue;
        }
        if (!st->spare_ready && !st->spare_held && !atomic_load(&st->failed)) {
            pthread_mutex_unlock(&st->prep_mu);
            evs_error err;
            /* zeros only where every batch is synced: with --fsync no or everysec, writes into
             * preallocated (unwritten) extents cost no per-batch metadata sync, and zeroing
             * would double what goes to the disk */
            int rc = seg_prepare(st->io, st->logdir, SPARE, st->opt.segment_bytes,
                                 st->opt.fsync == EVS_FSYNC_ALWAYS && !catching_up(st), pace,
                                 st, &err);
            if (rc && rc != EVS_ECLOSED && !warned)
                evs_log(st, EVS_LOG_WARN, "cannot prepare the next segment ahead: %s", err.msg);
            warned = rc != 0;
            pthread_mutex_lock(&st->prep_mu);
            if (!rc) {
                st->spare_ready = true;
                continue;
            }
            if (st->prep_stop)
                break;
            if (rc == EVS_ECLOSED) /* Z1: a catch-up stopped the zero-fill (pace) */
                continue;
            struct timespec ts = evs_deadline_ns(1000000000ull);
            pthread_cond_timedwait(&st->prep_cv, &st->prep_mu, &ts);
            continue;
        }
        if (wait_ns) { /* lazy roll jobs: until the oldest is due, or a signal */
            struct timespec ts = evs_deadline_ns(wait_ns);
            pthread_cond_timedwait(&st->prep_cv, &st->prep_mu, &ts);
            continue;
        }
        pthread_cond_wait(&st->prep_cv, &st->prep_mu);
    }
    rolls_run(st); /* D3: close waits for them */
    pthread_mutex_unlock(&st->prep_mu);
    return NULL;
}

int prep_start(evs_store *st)
{
    int rc = thread_start(&st->prep, prep_main, st, "evs-preparer");
    if (rc == 0)
        st->prep_started = true;
    return -rc;
}

void prep_stop(evs_store *st)
{
    if (!st->prep_started)
        return;
    pthread_mutex_lock(&st->prep_mu);
    st->prep_stop = true;
    pthread_cond_signal(&st->prep_cv);
    pthread_mutex_unlock(&st->prep_mu);
    pthread_join(st->prep, NULL);
    st->prep_started = false;
}

int prep_make_reserve(evs_store *st, evs_error *err)
{
    if (st->reserve_ready)
        return 0;
    int rc = seg_prepare(st->io, st->logdir, RESERVE, st->opt.segment_bytes, false, NULL, NULL,
                         err);
    if (!rc)
        st->reserve_ready = true;
    return rc;
}

/* P1: the writer may hold the spare (taken, not yet renamed) across a seal's write and sync;
 * the preparer never makes a new one over it until prep_install releases it. */
int prep_reserve(evs_store *st, bool freeing, const char **tmpname, evs_error *err)
{
    int rc;
    if (!freeing && (rc = prep_make_reserve(st, err))) /* P2: the reserve first */
        return rc;
    pthread_mutex_lock(&st->prep_mu);
    bool take = st->spare_ready;
    st->spare_ready = false;
    st->spare_held = take;
    pthread_mutex_unlock(&st->prep_mu);
    if (take) {
        *tmpname = SPARE;
        return 0;
    }
    /* no spare (the log fills faster than the preparer zero-fills, as in a follower's
     * catch-up): preallocated only, so that the roll takes milliseconds, not the seconds of
     * writing a segment of zeros on the writer's path */
    rc = seg_prepare(st->io, st->logdir, NEXT, st->opt.segment_bytes, false, NULL, NULL, err);
    if (!rc) {
        *tmpname = NEXT;
    } else if (freeing && st->reserve_ready && (rc == -ENOSPC || rc == -EDQUOT)) {
        st->reserve_ready = false; /* P2 */
        evs_log(st, EVS_LOG_WARN, "disk full: the space reserve becomes the next segment, so "
                "that retention can free space (%s)", err->msg);
        *tmpname = RESERVE;
        rc = 0;
    }
    return rc;
}

/* prep_mu held: j, for seg behind prev, joins the queue (it takes a reference on both). */
static void enqueue(evs_store *st, struct roll_job *j, segment *prev, segment *seg)
{
    store_seg_hold_fd(prev); /* a sync and a rename: descriptors only */
    store_seg_hold_fd(seg);
    *j = (struct roll_job){NULL, prev, seg, evs_mono_ns()};
    if (st->roll_tail)
        st->roll_tail->next = j;
    else
        st->roll_head = j;
    st->roll_tail = j;
    st->rolls_queued++;
    atomic_fetch_add(&st->rolls_open, 1);
}

static int install(evs_store *st, const char *tmpname, uint64_t base, segment *prev,
                   segment **out, evs_error *err)
{
    int rc = seg_install(st->io, st->logdir, tmpname, base, prev != NULL, out, err);
    if (!rc && prev)
        atomic_store(&(*out)->pending_name, true);
    struct roll_job *j = NULL;
    if (!rc && prev && !(j = calloc(1, sizeof *j))) {
        seg_free(*out); /* the file stays "<name>.pending": recovery's to judge (D4) */
        rc = evs_err_set(err, -ENOMEM, "out of memory");
    }
    pthread_mutex_lock(&st->prep_mu);
    st->spare_held = false;
    if (j)
        enqueue(st, j, prev, *out);
    pthread_cond_signal(&st->prep_cv); /* make the next one; run the roll job */
    pthread_mutex_unlock(&st->prep_mu);
    return rc;
}

void prep_drop_rolls(evs_store *st)
{
    while (st->roll_head) {
        struct roll_job *j = st->roll_head;
        st->roll_head = j->next;
        store_seg_put_fd(j->prev);
        store_seg_put_fd(j->seg);
        free(j);
    }
    st->roll_tail = NULL;
}

void prep_queue_roll(evs_store *st, segment *prev, segment *seg)
{
    struct roll_job *j = calloc(1, sizeof *j);
    if (!j) { /* a later roll must not be named before it (D2): write nothing more */
        store_fail(st, -ENOMEM, "out of memory queueing the roll of segment %s", seg->name);
        return;
    }
    pthread_mutex_lock(&st->prep_mu);
    enqueue(st, j, prev, seg);
    pthread_cond_signal(&st->prep_cv);
    pthread_mutex_unlock(&st->prep_mu);
}

int prep_install(evs_store *st, const char *tmpname, uint64_t base, segment **out,
                 evs_error *err)
{
    return install(st, tmpname, base, NULL, out, err);
}

/* At most this many deferred rolls wait for the preparer; past it, the writer waits (the
 * page cache holds the unsynced segments, and the kernel would throttle the writes anyway). */
#define ROLLS_MAX 64

int prep_install_deferred(evs_store *st, const char *tmpname, uint64_t base, segment *prev,
                          segment **out, evs_error *err)
{
    if (atomic_load(&st->rolls_open) >= ROLLS_MAX) {
        pthread_mutex_lock(&st->prep_mu);
        rolls_hurry(st);
        while (st->rolls_queued - st->rolls_done >= ROLLS_MAX)
            pthread_cond_wait(&st->roll_cv, &st->prep_mu);
        pthread_mutex_unlock(&st->prep_mu);
    }
    return install(st, tmpname, base, prev, out, err);
}

int prep_new_segment(evs_store *st, uint64_t base, segment **out, evs_error *err)
{
    const char *tmp;
    int rc = prep_reserve(st, false, &tmp, err);
    return rc ? rc : prep_install(st, tmp, base, out, err);
}
