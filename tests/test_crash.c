/*
 * test_crash.c — a real process appends with fsync=always from several threads and reports
 * every acknowledged entry through a pipe; the parent SIGKILLs it at a random moment (30-180 ms
 * after the fork for one kill in four, after its first acknowledgement for the others), reopens
 * the store and checks that every acknowledged entry is there, byte-identical, once.
 * Small segments make kills land during segment rolls too; every stream keeps only its newest
 * RETAIN entries (retention runs every 10 ms, trimming and deleting whole segments), and a
 * sixth thread takes and drops backup snapshots (index copy + cut) in a loop, so kills also
 * land in retention and snapshots. A fifth thread appends to `crash-rare` only every 40 ms,
 * keeping 5: its entries spread over old segments, which retention frees by relocating it
 * (copying its live entries to the head), so kills land in relocations too; the parent
 * counts the moved copies it finds after each kill. An acknowledged entry may therefore be gone only by
 * retention: the missing ones of a stream must be its oldest, and the stream must still hold
 * about RETAIN entries after them. A slow machine gets more kills (up to 8 times as many) until
 * the run means something: MIN_ACKED acknowledgements, a log of MIN_LOG bytes, a segment
 * deleted by retention and a relocation met.
 *
 * The power-loss variant runs the child on an evs_io that logs, after each call returns, every
 * write (file, offset, length) and every fdatasync/fsync (file) to a log file. After the kill
 * the parent plays the power cut: each range written to a file after that file's last logged
 * sync is kept, zeroed (never reached the disk) or torn at a 512-byte sector (chosen at
 * random); only then is the store reopened. Not simulated: folder entries (renames are taken
 * as durable; the store fsyncs folders after them) and LMDB's own files (the index may be
 * rebuilt from the log, and never leads the synced log).
 *
 * The --fsync no and everysec variants: a kill -9 loses nothing the page cache holds, so every
 * acknowledged entry must be there as well. Their rolls do not wait for their seals
 * (preparer.c D1-D4): the child's fdatasync is slowed down so that kills land while segments
 * are still pending, and the parent counts the pending files it finds and checks that the
 * reopen adopted them all.
 */
#include "record.h"

#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "fileio.h"

#define THREADS 4
#define STREAMS 3
#define RARE THREADS /* the rare writer's thread number; its stream is crash-rare */
#define RARE_KEEP 5  /* crash-rare keeps its newest 5 (small: retention may relocate it)     */
#define RETAIN 100
#define SEGMENT_BYTES (64 * 1024)
#define MIN_ACKED 1000                 /* a run means something with this many acknowledgements */
#define MIN_LOG (8 * SEGMENT_BYTES)    /* and a log this long: retention must delete segments  */

struct ack {
    uint32_t thread, n;
    uint64_t ms, seq;
};

static int pipe_w;
static uint32_t n_base; /* each child numbers from iteration * 1,000,000 */
static evs_store *child_st;
static useconds_t rare_sleep_us = 40000; /* the power-loss run writes slower: longer there */
static pthread_mutex_t pipe_mu = PTHREAD_MUTEX_INITIALIZER;

static void value_of(uint32_t t, uint32_t n, char *buf, size_t cap)
{
    /* sizes vary so records straddle pages and segment ends; crash-rare's are short */
    size_t len = t == RARE ? 20 + n % 40 : 20 + (n * 37 + t * 11) % 700;
    if (len >= cap)
        len = cap - 1;
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)('a' + (t * 7 + n * 13 + i) % 26);
    buf[len] = 0;
}

static void stream_of(uint32_t t, char *s, size_t cap)
{
    if (t == RARE)
        snprintf(s, cap, "crash-rare");
    else
        snprintf(s, cap, "crash-%u", t % STREAMS);
}

static void *child_thread(void *p)
{
    uint32_t t = (uint32_t)(uintptr_t)p;
    char s[16], tn[16], nn[16], v[1024];
    stream_of(t, s, sizeof s);
    snprintf(tn, sizeof tn, "%u", t);
    for (uint32_t n = n_base;; n++) {
        snprintf(nn, sizeof nn, "%u", n);
        value_of(t, n, v, sizeof v);
        evs_field f[3] = {{S("t"), S(tn)}, {S("n"), S(nn)}, {S("v"), S(v)}};
        evs_append a = {S(s), EVS_ID_AUTO, {0, 0}, f, 3, false};
        evs_id id;
        evs_error err;
        if (evs_append_one(child_st, &a, &id, &err))
            _exit(3);
        struct ack k = {t, n, id.ms, id.seq};
        pthread_mutex_lock(&pipe_mu);
        if (write(pipe_w, &k, sizeof k) != sizeof k)
            _exit(4);
        pthread_mutex_unlock(&pipe_mu);
        if (t == RARE && n == n_base) {
            evs_retention keep = {0, 0, RARE_KEEP};
            if (evs_retention_set(child_st, S(s), &keep, &err))
                _exit(9);
        }
        if (t == RARE)
            usleep(rare_sleep_us); /* its live entries span many segments of the others */
    }
    return NULL;
}

/* ---- the power-loss io: the real calls, each logged once it returned ------------------ */

enum { PL_WRITE = 1, PL_SYNC = 2 };
struct pl_rec {
    uint32_t kind, pad;
    int64_t off, len;
    char path[240];
};
static int pl_log = -1;

static void pl_note(uint32_t kind, int fd, int64_t off, int64_t len)
{
    struct pl_rec r = {kind, 0, off, len, {0}};
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, r.path, sizeof r.path - 1);
    if (n <= 0)
        _exit(5);
    if (write(pl_log, &r, sizeof r) != sizeof r) /* O_APPEND: one record, whole */
        _exit(6);
}

static ssize_t pl_pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    ssize_t w = fio_real.pwritev(fd, iov, n, off);
    if (w > 0)
        pl_note(PL_WRITE, fd, off, w);
    return w;
}

/* A slow disk, whatever the machine: the kill lands between write and sync far more often. */
static void pl_slow(void) { usleep(500); }

static int pl_fdatasync(int fd)
{
    pl_slow();
    int rc = fio_real.fdatasync(fd);
    if (!rc)
        pl_note(PL_SYNC, fd, 0, 0);
    return rc;
}

static int pl_fsync(int fd)
{
    pl_slow();
    int rc = fio_real.fsync(fd);
    if (!rc)
        pl_note(PL_SYNC, fd, 0, 0);
    return rc;
}

static struct evs_io pl_io;

/* the --fsync no child's sync: slow, so that deferred rolls queue up (D1) */
static int slow_fdatasync(int fd)
{
    usleep(4000);
    return fio_real.fdatasync(fd);
}

/* The cut: replay the log; what a file got after its last sync is kept, lost or torn. */
static size_t power_cut(const char *log_path)
{
    FILE *f = fopen(log_path, "rb");
    cr_assert(f);
    struct pl_rec *recs = NULL;
    size_t n = 0, cap = 0;
    struct pl_rec r;
    while (fread(&r, sizeof r, 1, f) == 1) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            recs = realloc(recs, cap * sizeof *recs);
            cr_assert(recs);
        }
        recs[n++] = r;
    }
    fclose(f);
    size_t lost = 0;
    static char zeros[1 << 16];
    for (size_t i = 0; i < n; i++) {
        if (recs[i].kind != PL_WRITE)
            continue;
        bool synced = false; /* a later sync of the same file covers it */
        for (size_t j = i + 1; j < n && !synced; j++)
            synced = recs[j].kind == PL_SYNC && !strcmp(recs[j].path, recs[i].path);
        if (synced)
            continue;
        int fd = open(recs[i].path, O_WRONLY);
        if (fd < 0)
            continue; /* a temporary file renamed or removed since */
        int choice = rand() % 3;
        int64_t keep = choice == 0 ? recs[i].len
                       : choice == 1 ? 0
                                     : (int64_t)(rand() % (recs[i].len / 512 + 1)) * 512;
        for (int64_t o = keep; o < recs[i].len;) {
            size_t k = (size_t)(recs[i].len - o) < sizeof zeros ? (size_t)(recs[i].len - o) : sizeof zeros;
            cr_assert_eq(pwrite(fd, zeros, k, recs[i].off + o), (ssize_t)k);
            o += (int64_t)k;
        }
        lost += (size_t)(recs[i].len - keep);
        close(fd);
    }
    free(recs);
    return lost;
}

static void *snapshot_thread(void *p)
{
    (void)p;
    for (;;) {
        evs_snapshot *snap;
        evs_error err;
        if (evs_snapshot_open(child_st, &snap, &err))
            _exit(8);
        usleep(3000);
        evs_snapshot_close(snap);
        usleep(2000);
    }
    return NULL;
}

static void child(const char *dir, const char *log_path, int nosync)
{
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = SEGMENT_BYTES;
    o.retention.max_entries = RETAIN;
    o.retention_interval_ms = 10;
    if (nosync) {
        o.fsync = (evs_fsync_mode)nosync;
        pl_io = fio_real;
        pl_io.fdatasync = slow_fdatasync;
        o.io = &pl_io;
    }
    if (log_path) {
        rare_sleep_us = 150000;
        pl_io = fio_real;
        pl_io.pwritev = pl_pwritev;
        pl_io.fdatasync = pl_fdatasync;
        pl_io.fsync = pl_fsync;
        o.io = &pl_io;
        if ((pl_log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644)) < 0)
            _exit(7);
    }
    evs_error err;
    if (evs_open(dir, &o, &child_st, &err))
        _exit(2);
    pthread_t th[THREADS + 1], snap;
    for (uintptr_t t = 0; t <= RARE; t++)
        pthread_create(&th[t], NULL, child_thread, (void *)t);
    pthread_create(&snap, NULL, snapshot_thread, NULL);
    pthread_join(th[0], NULL);
    _exit(0);
}

/* The stream an acknowledgement is of, as a number: crash-N is N, crash-rare STREAMS. */
static uint32_t sno_of(uint32_t t) { return t == RARE ? STREAMS : t % STREAMS; }

/* How many relocation copies (REC_F_MOVED) the store's segments hold. */
static size_t moved_records(const char *store)
{
    size_t len, n = 0;
    uint8_t *b = log_records(store, &len);
    rec_hdr h;
    uint64_t rs;
    for (size_t o = 0; o < len && rec_check(b + o, len - o, &h, &rs) == REC_OK; o += rs)
        n += (h.flags & REC_F_MOVED) != 0;
    free(b);
    return n;
}

/* Acknowledgements by stream, then ID. */
static int ack_cmp(const void *a, const void *b)
{
    const struct ack *x = a, *y = b;
    uint32_t sx = sno_of(x->thread), sy = sno_of(y->thread);
    if (sx != sy)
        return sx < sy ? -1 : 1;
    if (x->ms != y->ms)
        return x->ms < y->ms ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* nosync: 0 for --fsync always, else the mode (EVS_FSYNC_NO or EVS_FSYNC_EVERYSEC) */
static void kill_and_check(int iters, bool power, int nosync)
{
    char *dir = tmpdir_new();
    char *sp = store_path(dir);
    char log_path[600];
    snprintf(log_path, sizeof log_path, "%s/io.log", dir);
    srand((unsigned)time(NULL));
    size_t cap = 1 << 20, total_acked = 0, total_lost = 0, total_retained_out = 0;
    size_t total_pending = 0; /* pending segment files found after the kills (nosync) */
    struct ack *acks = malloc(cap * sizeof *acks);
    /* at least `iters` kills, and more on a slow machine until the run means something: enough
     * acknowledged entries, a log long enough that retention must have deleted segments (and
     * has: on a loaded machine a child's first pass may not come before its kill), and a
     * relocation met */
    uint64_t log_end = 0, log_start = 0;
    size_t max_moved = 0; /* relocation copies found in the log after a kill (until some are) */
    for (int iter = 0; iter < iters || ((total_acked < MIN_ACKED || log_end < MIN_LOG ||
                                         !log_start || !max_moved ||
                                         (nosync && !total_pending)) &&
                                        iter < iters * 8);
         iter++) {
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            close(fds[0]);
            pipe_w = fds[1];
            n_base = (uint32_t)iter * 1000000u;
            child(sp, power ? log_path : NULL, nosync);
        }
        close(fds[1]);
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        long kill_after_ms = 30 + rand() % 150;
        /* The window starts at the fork for one kill in four (kills during the open and its
         * recovery), else at the child's first acknowledgement: under ASan on a loaded machine
         * a child could spend whole windows opening the store, and 240 kills met no
         * relocation. A child that acknowledges nothing in 10 s is killed anyway. */
        bool counting = rand() % 4 == 0;
        size_t nacks = 0;
        /* read acknowledgements until the deadline, then kill */
        for (;;) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long el = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
            if (!counting && nacks) {
                counting = true;
                start = now;
                el = 0;
            }
            if (el >= (counting ? kill_after_ms : 10000))
                break;
            fd_set rs;
            FD_ZERO(&rs);
            FD_SET(fds[0], &rs);
            struct timeval tv = {0, 2000};
            if (select(fds[0] + 1, &rs, NULL, NULL, &tv) > 0) {
                ssize_t r = read(fds[0], acks + nacks, (cap - nacks) * sizeof *acks);
                cr_assert_gt(r, 0, "child died on its own");
                cr_assert_eq(r % (ssize_t)sizeof *acks, 0);
                nacks += (size_t)r / sizeof *acks;
            }
        }
        kill(pid, SIGKILL);
        ssize_t r;
        while ((r = read(fds[0], acks + nacks, (cap - nacks) * sizeof *acks)) > 0)
            nacks += (size_t)r / sizeof *acks;
        close(fds[0]);
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFSIGNALED(status), "child exited with %d", WEXITSTATUS(status));
        total_acked += nacks;
        if (power)
            total_lost += power_cut(log_path);
        char logdir[700];
        snprintf(logdir, sizeof logdir, "%s/log", sp);
        total_pending += (size_t)files_ending(logdir, ".pending");

        evs_store *st = open_store(sp, NULL);
        cr_assert_eq(files_ending(logdir, ".pending.torn"), 0, "kill %d: a pending segment was "
                     "set aside after a kill -9 (its predecessor was in the page cache)", iter);
        long problems = verify_print(st);
        if (problems) { /* keep the evidence */
            char cmd[1400];
            snprintf(cmd, sizeof cmd, "cp -a %s %s-failed-kill-%d", dir, dir, iter);
            cr_log_warn("copying the store: %s (%d)", cmd, system(cmd));
        }
        cr_assert_eq(problems, 0, "verify found problems after kill %d", iter);
        /* per stream, this kill's acknowledged entries in ID order: each one present and
         * byte-identical, except the oldest ones retention may have taken */
        qsort(acks, nacks, sizeof *acks, ack_cmp);
        for (size_t i = 0; i < nacks;) {
            uint32_t sno = sno_of(acks[i].thread);
            char s[16];
            stream_of(acks[i].thread, s, sizeof s);
            size_t missing = 0, present = 0;
            for (; i < nacks && sno_of(acks[i].thread) == sno; i++) {
                struct ack *k = &acks[i];
                char v[1024];
                evs_query q;
                evs_query_init(&q);
                q.start = q.end = (evs_id){k->ms, k->seq};
                evs_iter *it;
                evs_error err;
                cr_assert_eq(evs_iter_open(st, S(s), &q, &it, &err), 0, "%s", err.msg);
                const evs_entry *e;
                int got = evs_iter_next(it, &e, &err);
                cr_assert_geq(got, 0, "%s", err.msg);
                if (!got) {
                    cr_assert_eq(present, 0, "kill %d: acknowledged %lu-%lu missing after a "
                                 "newer one of %s is present", iter, (unsigned long)k->ms,
                                 (unsigned long)k->seq, s);
                    missing++;
                    evs_iter_close(it);
                    continue;
                }
                present++;
                value_of(k->thread, k->n, v, sizeof v);
                cr_assert_eq(e->nfields, 3);
                cr_assert_eq(e->fields[2].value.len, strlen(v));
                cr_assert(memcmp(e->fields[2].value.ptr, v, strlen(v)) == 0, "bytes differ");
                char nn[16];
                snprintf(nn, sizeof nn, "%u", k->n);
                cr_assert_eq(e->fields[1].value.len, strlen(nn));
                cr_assert(memcmp(e->fields[1].value.ptr, nn, strlen(nn)) == 0);
                evs_iter_close(it);
            }
            if (missing) { /* retention took them: it keeps the newest RETAIN (RARE_KEEP) */
                evs_stream_info info;
                cr_assert_eq(evs_stream_info_get(st, S(s), &info), 0);
                cr_assert_geq(info.length, sno == STREAMS ? RARE_KEEP : RETAIN - 4 * THREADS,
                              "kill %d: %zu acknowledged "
                              "entries of %s missing, and it holds only %lu", iter, missing, s,
                              (unsigned long)info.length);
            }
            total_retained_out += missing;
        }
        /* no entry twice, none reordered: each thread appends in sequence, so within a stream
         * the n of each thread strictly increases */
        for (int sidx = 0; sidx <= STREAMS; sidx++) {
            char s[16];
            stream_of(sidx == STREAMS ? RARE : (uint32_t)sidx, s, sizeof s);
            long last[THREADS + 1];
            for (int t = 0; t <= THREADS; t++)
                last[t] = -1;
            evs_iter *it;
            evs_error err;
            if (evs_iter_open(st, S(s), NULL, &it, &err) == EVS_ENOTFOUND)
                continue;
            const evs_entry *e;
            int rc;
            while ((rc = evs_iter_next(it, &e, &err)) == 1) {
                char b[16] = {0};
                memcpy(b, e->fields[0].value.ptr, e->fields[0].value.len < 15 ? e->fields[0].value.len : 15);
                int t = atoi(b);
                memset(b, 0, sizeof b);
                memcpy(b, e->fields[1].value.ptr, e->fields[1].value.len < 15 ? e->fields[1].value.len : 15);
                long n = atol(b);
                cr_assert(t >= 0 && t <= RARE);
                cr_assert_gt(n, last[t], "kill %d: thread %d entry %ld after %ld", iter, t, n, last[t]);
                last[t] = n;
            }
            cr_assert_eq(rc, 0, "%s", err.msg);
            evs_iter_close(it);
        }
        evs_store_stats now;
        evs_store_stats_get(st, &now);
        log_end = now.log_end;
        log_start = now.log_start;
        cr_assert_eq(evs_close(st), 0);
        /* the pending ones were read as log (checked above) and named once synced: by close */
        cr_assert_eq(files_ending(logdir, ".pending"), 0, "kill %d: a pending segment was left",
                     iter);
        if (!max_moved) /* closed: retention deletes no file under the reading */
            max_moved = moved_records(sp);
    }
    cr_assert_geq(total_acked, MIN_ACKED, "too few appends to mean anything (%zu)", total_acked);
    cr_assert_geq(log_end, MIN_LOG, "the log never grew long enough to mean anything");
    cr_assert_lt(total_retained_out, total_acked, "retention took everything: the check is void");
    /* retention did act: every stream lost its oldest entries, and whole segments went */
    evs_store *st = open_store(sp, NULL);
    for (int sidx = 0; sidx < STREAMS; sidx++) {
        char s[16];
        snprintf(s, sizeof s, "crash-%d", sidx);
        evs_stream_info info;
        cr_assert_eq(evs_stream_info_get(st, S(s), &info), 0);
        cr_assert_lt(info.length, info.entries_added, "%s: retention never trimmed", s);
    }
    evs_store_stats stats;
    evs_store_stats_get(st, &stats);
    cr_assert_gt(stats.log_start, 0, "retention never deleted a segment (log end %llu, %llu "
                 "segments, %zu entries acknowledged)", (unsigned long long)stats.log_end,
                 (unsigned long long)stats.segments, total_acked);
    cr_assert_eq(evs_close(st), 0);
    if (power)
        cr_assert_gt(total_lost, 0, "no unsynced write was ever cut: the simulation did nothing");
    cr_assert_gt(max_moved, 0, "crash-rare was never relocated: the kills met no relocation");
    if (nosync) {
        cr_assert_gt(total_pending, 0, "no kill met a pending segment: the check is void");
        cr_log_info("%zu pending segment files found after the kills, all adopted", total_pending);
    }
    free(acks);
    rm_rf(dir);
    free(sp);
    free(dir);
}

Test(crash, sigkill_never_loses_an_acknowledged_entry, .timeout = 600)
{
    kill_and_check(50, false, 0);
}

Test(crash, power_loss_never_loses_an_acknowledged_entry, .timeout = 600)
{
    kill_and_check(30, true, 0);
}

Test(crash, sigkill_with_fsync_no_adopts_every_pending_segment, .timeout = 600)
{
    kill_and_check(30, false, EVS_FSYNC_NO);
}

Test(crash, sigkill_with_fsync_everysec_adopts_every_pending_segment, .timeout = 600)
{
    kill_and_check(20, false, EVS_FSYNC_EVERYSEC);
}
