/*
 * cli_bench.c — `evstore bench`: the storage benchmarks of docs/benchmarks.md. Each prints
 * human-readable lines, then one machine-readable line "bench=<name> key=value ...". Every
 * run starts with the machine's own reference (4 KiB append+fdatasync rate and latency, 64 KiB
 * durable bandwidth) measured in the same invocation, because this machine is shared and noisy:
 * figures are compared to that reference, not to numbers from another day.
 */
#include "cli.h"
#include "evstore_backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libdeflate.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *help =
    "usage: evstore bench [--dir DIR] [--quick] [--entries N] [NAME ...]\n"
    "\n"
    "Storage benchmarks. NAME is one or more of:\n"
    "  reference      4 KiB append+fdatasync rate and latency, 64 KiB durable bandwidth\n"
    "  append-nosync  200-byte entries, --fsync no, one thread (async batches of 256)\n"
    "                 (median of 3 runs, each beside the same bytes written into a new\n"
    "                 file: the page-cache floor)\n"
    "  append-always  --fsync always, 1,024 in flight: 64 threads x batches of 16, then\n"
    "                 one thread with 64 async requests of 16 (as the server submits);\n"
    "                 3 runs of each, each beside its own 64 KiB durable-bandwidth\n"
    "                 reference: the median run's share is reported\n"
    "  latency        --fsync always at a steady 10,000 entries/s for 5 s (after 3 s idle,\n"
    "                 once the first spare segment is made): ack latency p50/p99, beside\n"
    "                 the disk's floor at that load (a bare paced pwrite+fdatasync loop);\n"
    "                 then again with the entries of each millisecond due together\n"
    "  replay         forward read of the append-nosync stream from page cache, interleaved\n"
    "                 with its floor: every record of the log CRC-checked (libdeflate) and\n"
    "                 unpacked (msgpack-c) by the libraries alone\n"
    "  filter         read by type at 1% selectivity vs a full read\n"
    "  open           open + first read of a store of --entries entries, after a clean\n"
    "                 shutdown and after SIGKILL; peak RSS while appending them\n"
    "Default: all of them (the reference always runs first).\n"
    "\n"
    "  --dir DIR      scratch folder (default: a new folder under ./bench-tmp, removed after)\n"
    "  --entries N    entries for the open benchmark (default 10,000,000; --quick: 1,000,000)\n"
    "  --quick        smaller runs, for a smoke test\n";


static double pct(uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)v[i];
}

static char scratch[4096];
static bool quick;
static double ref_p99_us, ref_rate, ref_bw;

static void die(const char *what, const evs_error *err)
{
    fprintf(stderr, "evstore bench: %s: %s\n", what, err ? err->msg : strerror(errno));
    exit(EXIT_FAILURE_);
}

static evs_store *scratch_store(const char *name, evs_fsync_mode mode)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", scratch, name);
    evs_options o;
    evs_options_init(&o);
    o.fsync = mode;
    o.log = cli_log;
    evs_store *st;
    evs_error err;
    if (evs_open(p, &o, &st, &err))
        die("open", &err);
    return st;
}

/* ---- reference --------------------------------------------------------------------------- */

/* 64 KiB appends, each followed by fdatasync, into a new file: the disk's durable bandwidth
 * now (it swings 2x within minutes on this VM, so append-always measures it again beside
 * each of its runs). MB/s. */
static double durable_bw_mb_s(void)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/ref64k.dat", scratch);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die("reference file", NULL);
    static char buf[65536];
    memset(buf, 'r', sizeof buf);
    size_t nb = quick ? 200 : 800;
    uint64_t t0 = evs_mono_ns();
    for (size_t i = 0; i < nb; i++)
        if (pwrite(fd, buf, sizeof buf, (off_t)(i * sizeof buf)) != (ssize_t)sizeof buf ||
            fdatasync(fd))
            die("reference write", NULL);
    double bw = (double)nb * sizeof buf / ((double)(evs_mono_ns() - t0) / 1e9) / 1e6;
    close(fd);
    unlink(p);
    return bw;
}

static void bench_reference(void)
{
    sync();
    char p[4200];
    snprintf(p, sizeof p, "%s/ref.dat", scratch);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die("reference file", NULL);
    size_t n = quick ? 500 : 2000;
    uint64_t *lat = malloc(n * sizeof *lat);
    static char buf[65536];
    memset(buf, 'r', sizeof buf);
    uint64_t t0 = evs_mono_ns();
    for (size_t i = 0; i < n; i++) {
        uint64_t a = evs_mono_ns();
        if (pwrite(fd, buf, 4096, (off_t)(i * 4096)) != 4096 || fdatasync(fd))
            die("reference write", NULL);
        lat[i] = evs_mono_ns() - a;
    }
    double secs = (double)(evs_mono_ns() - t0) / 1e9;
    qsort(lat, n, sizeof *lat, cli_cmp_u64);
    ref_rate = (double)n / secs;
    ref_p99_us = pct(lat, n, 0.99) / 1000;
    close(fd);
    unlink(p);
    ref_bw = durable_bw_mb_s();
    printf("reference: 4 KiB append+fdatasync %.0f/s, p50 %.3f ms, p99 %.3f ms; 64 KiB durable "
           "appends %.0f MB/s\n",
           ref_rate, pct(lat, n, 0.5) / 1e6, ref_p99_us / 1000, ref_bw);
    printf("bench=reference fsync_per_s=%.0f fsync_p50_ms=%.3f fsync_p99_ms=%.3f "
           "durable_64k_mb_s=%.0f\n",
           ref_rate, pct(lat, n, 0.5) / 1e6, ref_p99_us / 1000, ref_bw);
    free(lat);
}

/* ---- appends ----------------------------------------------------------------------------- */

static char payload[171];

static void entry_fields(evs_field *f, uint64_t i, char *tbuf)
{
    /* type + payload: about 200 bytes of msgpack body. The type is "t00".."t99", spelled
     * without snprintf: formatting it was 6 % of the appending thread's profile, the
     * benchmark's own cost rather than the store's. */
    unsigned k = (unsigned)(i % 100);
    tbuf[0] = 't';
    tbuf[1] = (char)('0' + k / 10);
    tbuf[2] = (char)('0' + k % 10);
    tbuf[3] = 0;
    f[0] = (evs_field){{"type", 4}, {tbuf, 3}};
    f[1] = (evs_field){{"payload", 7}, {payload, sizeof payload - 1}};
}

typedef struct inflight {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    uint64_t done;
    int failed;
} inflight;

static void inflight_done(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err)
{
    (void)ids;
    (void)err;
    inflight *f = arg;
    pthread_mutex_lock(&f->mu);
    f->n--;
    f->done += n;
    if (rc)
        f->failed = rc;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* Append `total` entries to `stream` from this thread in async batches of `batch`, at most
 * `window` batches outstanding. Returns seconds taken. */
static double fill(evs_store *st, const char *stream, uint64_t total, size_t batch, int window,
                   const char *rare_every_100)
{
    evs_append *a = calloc(batch, sizeof *a);
    evs_field *f = calloc(batch * 2, sizeof *f);
    char (*t)[16] = calloc(batch, 16);
    inflight fl = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};
    uint64_t t0 = evs_mono_ns();
    for (uint64_t i = 0; i < total; i += batch) {
        size_t n = total - i < batch ? (size_t)(total - i) : batch;
        for (size_t j = 0; j < n; j++) {
            entry_fields(&f[2 * j], i + j, t[j]);
            if (rare_every_100)
                snprintf(t[j], 16, "%s", (i + j) % 100 == 0 ? "rare" : "common"),
                    f[2 * j].value.len = strlen(t[j]);
            a[j] = (evs_append){{stream, strlen(stream)}, EVS_ID_AUTO, {0, 0}, &f[2 * j], 2, false};
        }
        pthread_mutex_lock(&fl.mu);
        while (fl.n >= window)
            pthread_cond_wait(&fl.cv, &fl.mu);
        fl.n++;
        pthread_mutex_unlock(&fl.mu);
        int rc = evs_submit(st, a, n, inflight_done, &fl, NULL);
        if (rc) {
            evs_error e;
            snprintf(e.msg, sizeof e.msg, "%s", evs_strerror(rc));
            die("submit", &e);
        }
    }
    pthread_mutex_lock(&fl.mu);
    while (fl.n > 0)
        pthread_cond_wait(&fl.cv, &fl.mu);
    pthread_mutex_unlock(&fl.mu);
    if (fl.failed) {
        evs_error e;
        snprintf(e.msg, sizeof e.msg, "%s", evs_strerror(fl.failed));
        die("append", &e);
    }
    double secs = (double)(evs_mono_ns() - t0) / 1e9;
    free(a);
    free(f);
    free(t);
    return secs;
}

static evs_store *nosync_store; /* kept for replay */
static char nosync_name[32];     /* its folder under scratch */

/* The floor under append-nosync: `bytes` written into a new, preallocated file in 64 KiB
 * pwrites, no sync — what putting that much log into the page cache costs on this machine at
 * this moment (in this VM it swings several-fold with the host's mood). Returns MB/s. */
static double page_cache_mb_s(uint64_t bytes)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/pagecache.dat", scratch);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die("page-cache reference file", NULL);
    (void)fallocate(fd, 0, 0, (off_t)bytes); /* as the store's segments; advisory, as there */
    static char buf[65536];
    memset(buf, 'p', sizeof buf);
    uint64_t t0 = evs_mono_ns();
    for (uint64_t off = 0; off < bytes; off += sizeof buf)
        if (pwrite(fd, buf, sizeof buf, (off_t)off) != (ssize_t)sizeof buf)
            die("page-cache reference write", NULL);
    double secs = (double)(evs_mono_ns() - t0) / 1e9;
    close(fd);
    unlink(p);
    return (double)bytes / secs / 1e6;
}

/* Three runs, each into a fresh store and followed by the page-cache floor for the same bytes;
 * the median run is reported (single runs swung 1.4-3.2 M entries/s on this VM). */
static void bench_append_nosync(void)
{
    uint64_t total = quick ? 500000 : 3000000;
    enum { RUNS = 3 };
    struct run {
        double rate, log_mb_s, floor_mb_s;
        uint64_t batches;
    } runs[RUNS];
    for (int r = 0; r < RUNS; r++) {
        char name[32];
        snprintf(name, sizeof name, "nosync%d", r);
        evs_store *st = scratch_store(name, EVS_FSYNC_NO);
        double secs = fill(st, "bench", total, 256, 16, NULL);
        evs_store_stats s;
        evs_store_stats_get(st, &s);
        runs[r] = (struct run){(double)total / secs, (double)s.log_bytes / secs / 1e6,
                               page_cache_mb_s(s.log_bytes), s.batches};
        printf("append-nosync run %d: %" PRIu64 " entries of ~200 bytes in %.2f s: %.0f entries/s, "
               "%.0f MB/s of log, %" PRIu64 " batches; the same bytes into a new file: %.0f MB/s\n",
               r + 1, total, secs, runs[r].rate, runs[r].log_mb_s, s.batches, runs[r].floor_mb_s);
        if (r < RUNS - 1) {
            evs_close(st);
            char p[4200];
            snprintf(p, sizeof p, "%s/%s", scratch, name);
            evs_remove_tree(p);
        } else {
            nosync_store = st; /* the replay benchmark reads it */
            snprintf(nosync_name, sizeof nosync_name, "%s", name);
        }
    }
    double fmin = runs[0].floor_mb_s, fmax = fmin;
    for (int i = 1; i < RUNS; i++) {
        fmin = runs[i].floor_mb_s < fmin ? runs[i].floor_mb_s : fmin;
        fmax = runs[i].floor_mb_s > fmax ? runs[i].floor_mb_s : fmax;
    }
    for (int i = 1; i < RUNS; i++) /* by rate */
        for (int j = i; j > 0 && runs[j].rate < runs[j - 1].rate; j--) {
            struct run t = runs[j];
            runs[j] = runs[j - 1];
            runs[j - 1] = t;
        }
    /* the floor itself swings with the host (388 to 8,156 MB/s within one run): its range is
     * reported, not a ratio to one of its values */
    struct run *m = &runs[RUNS / 2];
    printf("append-nosync: median of %d runs %.0f entries/s, %.0f MB/s of log; the same bytes into "
           "a new file %.0f-%.0f MB/s in the same runs\n",
           RUNS, m->rate, m->log_mb_s, fmin, fmax);
    printf("bench=append-nosync entries=%" PRIu64 " entries_per_s=%.0f log_mb_s=%.0f "
           "floor_mb_s=%.0f-%.0f\n",
           total, m->rate, m->log_mb_s, fmin, fmax);
}

struct athread {
    evs_store *st;
    uint64_t per_thread;
    int t;
};

static void *always_thread(void *p)
{
    struct athread *a = p;
    evs_append req[16];
    evs_field f[32];
    char t[16][16];
    char stream[16];
    snprintf(stream, sizeof stream, "s%d", a->t % 8);
    for (uint64_t i = 0; i < a->per_thread; i += 16) {
        for (int j = 0; j < 16; j++) {
            entry_fields(&f[2 * j], i + (uint64_t)j, t[j]);
            req[j] = (evs_append){{stream, strlen(stream)}, EVS_ID_AUTO, {0, 0}, &f[2 * j], 2, false};
        }
        evs_error err;
        if (evs_append_batch(a->st, req, 16, NULL, &err))
            die("append", &err);
    }
    return NULL;
}

/* One append-always run: a store that took `total` entries in `secs`, beside the durable
 * bandwidth `bw` measured just before it. */
struct always_run {
    double rate, mbs, bw, pct, fsync_ms, fsync_share, mean_batch;
    uint64_t fsyncs;
};

static struct always_run always_measure(evs_store *st, uint64_t total, double secs, double bw)
{
    evs_store_stats s;
    evs_store_stats_get(st, &s);
    struct always_run r = {(double)total / secs, (double)s.log_bytes / secs / 1e6, bw, 0,
                           s.fsyncs ? (double)s.fsync_ns_total / (double)s.fsyncs / 1e6 : 0,
                           (double)s.fsync_ns_total / 1e9 / secs,
                           (double)s.appends / (double)s.batches, s.fsyncs};
    r.pct = 100 * r.mbs / bw;
    return r;
}

/* A line for people per run, then the run of median share of the durable bandwidth as one
 * line for people and one bench= line. */
static void always_report(const char *name, const char *shape, uint64_t total,
                          struct always_run *runs, int n)
{
    for (int i = 0; i < n; i++)
        printf("%s run %d: %" PRIu64 " entries, %s: %.0f entries/s, %.0f MB/s (%.0f%% of the "
               "64 KiB durable bandwidth measured just before: %.0f MB/s), %" PRIu64 " fsyncs "
               "(mean %.2f ms, %.0f%% of the time), mean batch %.0f records\n",
               name, i + 1, total, shape, runs[i].rate, runs[i].mbs, runs[i].pct, runs[i].bw,
               runs[i].fsyncs, runs[i].fsync_ms, 100 * runs[i].fsync_share, runs[i].mean_batch);
    for (int i = 1; i < n; i++) /* by share of the durable bandwidth */
        for (int j = i; j > 0 && runs[j].pct < runs[j - 1].pct; j--) {
            struct always_run t = runs[j];
            runs[j] = runs[j - 1];
            runs[j - 1] = t;
        }
    const struct always_run *m = &runs[n / 2];
    printf("%s: median of %d runs (each beside its own reference) %.0f%% of the durable "
           "bandwidth: %.0f entries/s, %.0f MB/s against %.0f MB/s (runs: %.0f-%.0f%%)\n",
           name, n, m->pct, m->rate, m->mbs, m->bw, runs[0].pct, runs[n - 1].pct);
    printf("bench=%s entries=%" PRIu64 " entries_per_s=%.0f log_mb_s=%.0f durable_64k_mb_s=%.0f "
           "pct_of_durable_bw=%.0f pct_runs=%.0f-%.0f fsyncs=%" PRIu64 " fsync_mean_ms=%.2f\n",
           name, total, m->rate, m->mbs, m->bw, m->pct, runs[0].pct, runs[n - 1].pct, m->fsyncs,
           m->fsync_ms);
}

/* 1,024 appends in flight, two ways: 64 threads each waiting for its batch of 16 (every
 * commit wakes 64 threads on this 2-core machine), and one thread keeping 64 asynchronous
 * requests of 16 in flight, as the server's event loop submits. Three runs of each, in turn,
 * each on a fresh store beside a reference of its own (the disk's durable bandwidth swung
 * 91-158 MB/s between runs minutes apart, and one reference made the share swing 59-86 %). */
static void bench_append_always(void)
{
    enum { RUNS = 3, THREADS = 64 };
    uint64_t per = quick ? 4096 : 32768, total = per * (uint64_t)THREADS;
    struct always_run threads_runs[RUNS], async_runs[RUNS];
    for (int r = 0; r < RUNS; r++) {
        char name[32], p[4200];
        snprintf(name, sizeof name, "always%d", r);
        evs_store *st = scratch_store(name, EVS_FSYNC_ALWAYS);
        pthread_t th[THREADS];
        struct athread args[THREADS];
        double bw = durable_bw_mb_s();
        uint64_t t0 = evs_mono_ns();
        for (int i = 0; i < THREADS; i++) {
            args[i] = (struct athread){st, per, i};
            pthread_create(&th[i], NULL, always_thread, &args[i]);
        }
        for (int i = 0; i < THREADS; i++)
            pthread_join(th[i], NULL);
        threads_runs[r] = always_measure(st, total, (double)(evs_mono_ns() - t0) / 1e9, bw);
        evs_close(st);
        snprintf(p, sizeof p, "%s/%s", scratch, name);
        evs_remove_tree(p);
        snprintf(name, sizeof name, "always-async%d", r);
        st = scratch_store(name, EVS_FSYNC_ALWAYS);
        bw = durable_bw_mb_s();
        double secs = fill(st, "bench", total, 16, 64, NULL);
        async_runs[r] = always_measure(st, total, secs, bw);
        evs_close(st);
        snprintf(p, sizeof p, "%s/%s", scratch, name);
        evs_remove_tree(p);
    }
    always_report("append-always", "64 threads x batches of 16", total, threads_runs, RUNS);
    always_report("append-always-async", "one thread, 64 async requests of 16", total,
                  async_runs, RUNS);
}

/* ---- latency at a steady offered load ---------------------------------------------------- */

typedef struct lat_slot {
    uint64_t sent;
    uint64_t *out;
    atomic_size_t *n;
} lat_slot;

static void lat_done(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err)
{
    (void)ids;
    (void)n;
    (void)err;
    lat_slot *s = arg;
    if (rc == 0) {
        size_t i = atomic_fetch_add(s->n, 1);
        s->out[i] = evs_mono_ns() - s->sent;
    }
    free(s);
}

/*
 * The disk's own floor at the offered load: the least any write-ahead log can do — a thread
 * that writes whatever was queued (256 bytes an entry) with pwrite and fdatasyncs it, fed by
 * a pacer at the same rate into a zero-filled, preallocated file. No store, no index, no
 * encoding. The closed-loop reference (one 4 KiB append+fdatasync at a time) is the latency of
 * an fsync on an idle disk; this one is what back-to-back fsyncs cost on this disk.
 */
struct floor_q {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t *due, *done;
    size_t head, tail, total;
    int fd;
};

static void *floor_writer(void *p)
{
    struct floor_q *q = p;
    static char buf[256 * 64];
    memset(buf, 'f', sizeof buf);
    off_t off = 0;
    while (q->tail < q->total) {
        pthread_mutex_lock(&q->mu);
        while (q->head == q->tail)
            pthread_cond_wait(&q->cv, &q->mu);
        size_t k = q->head - q->tail;
        pthread_mutex_unlock(&q->mu);
        if (k > 64)
            k = 64;
        if (pwrite(q->fd, buf, 256 * k, off) != (ssize_t)(256 * k) || fdatasync(q->fd))
            die("floor reference write", NULL);
        off += (off_t)(256 * k);
        uint64_t t = evs_mono_ns();
        for (size_t i = 0; i < k; i++)
            q->done[q->tail + i] = t;
        pthread_mutex_lock(&q->mu);
        q->tail += k;
        pthread_mutex_unlock(&q->mu);
    }
    return NULL;
}

static double floor_p99_ms(double rate, double secs, uint64_t tick_ns)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/floor.dat", scratch);
    struct floor_q q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0,
                        (size_t)(rate * secs), -1};
    q.fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    q.due = calloc(q.total, sizeof *q.due);
    q.done = calloc(q.total, sizeof *q.done);
    if (q.fd < 0 || !q.due || !q.done)
        die("floor reference", NULL);
    static char zero[1 << 20];
    for (size_t i = 0; i < 64; i++) /* zero-filled and synced, as a prepared segment */
        if (write(q.fd, zero, sizeof zero) != (ssize_t)sizeof zero)
            die("floor reference write", NULL);
    if (fsync(q.fd))
        die("floor reference fsync", NULL);
    pthread_t w;
    pthread_create(&w, NULL, floor_writer, &q);
    uint64_t start = evs_mono_ns();
    for (size_t i = 0; i < q.total; i++) {
        uint64_t due = cli_due_ns(start, i, rate, tick_ns);
        struct timespec ts = {(time_t)(due / 1000000000ull), (long)(due % 1000000000ull)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        pthread_mutex_lock(&q.mu);
        q.due[q.head++] = due;
        pthread_cond_signal(&q.cv);
        pthread_mutex_unlock(&q.mu);
    }
    pthread_join(w, NULL);
    for (size_t i = 0; i < q.total; i++)
        q.done[i] -= q.due[i];
    qsort(q.done, q.total, sizeof *q.done, cli_cmp_u64);
    double p50 = pct(q.done, q.total, 0.5) / 1e6, p99 = pct(q.done, q.total, 0.99) / 1e6;
    printf("latency floor: a bare pwrite+fdatasync loop paced at %.0f entries/s (tick %.0f us): "
           "p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms\n",
           rate, (double)tick_ns / 1000, p50, p99, pct(q.done, q.total, 0.999) / 1e6);
    close(q.fd);
    unlink(p);
    free(q.due);
    free(q.done);
    return p99;
}

/* One paced run: the floor, then the store, each at `rate` for `secs`, entries due on their own
 * (tick_ns 0) or by ticks; prints one bench=<name> line. */
static void latency_run(const char *name, double rate, double secs, uint64_t tick_ns)
{
    sync(); /* start from a quiet disk: earlier benchmarks leave dirty pages behind */
    sleep(1);
    double floor99 = floor_p99_ms(rate, secs, tick_ns);
    sync();
    sleep(1);
    evs_store *st = scratch_store(name, EVS_FSYNC_ALWAYS);
    /* steady state: let the segment preparer finish the spare it starts at open (a one-time
     * 64 MiB zero-fill; docs/benchmarks.md reports the startup effect separately) */
    sleep(3);
    size_t total = (size_t)(rate * secs);
    uint64_t *lat = calloc(total, sizeof *lat);
    atomic_size_t n = 0;
    evs_field f[2];
    char t[16];
    uint64_t start = evs_mono_ns();
    for (size_t i = 0; i < total; i++) {
        uint64_t due = cli_due_ns(start, i, rate, tick_ns);
        /* sleep to the due time (never spin: this machine has two cores and the writer needs one) */
        struct timespec ts = {(time_t)(due / 1000000000ull), (long)(due % 1000000000ull)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        entry_fields(f, i, t);
        evs_append a = {{"lat", 3}, EVS_ID_AUTO, {0, 0}, f, 2, false};
        lat_slot *s = malloc(sizeof *s);
        s->sent = due; /* from when it was due: a late send counts against us */
        s->out = lat;
        s->n = &n;
        if (evs_submit(st, &a, 1, lat_done, s, NULL))
            die("submit", NULL);
    }
    evs_close(st); /* waits for the queue */
    size_t got = atomic_load(&n);
    qsort(lat, got, sizeof *lat, cli_cmp_u64);
    double p50 = pct(lat, got, 0.5) / 1e6, p99 = pct(lat, got, 0.99) / 1e6,
           p999 = pct(lat, got, 0.999) / 1e6;
    printf("%s: %zu entries at %.0f/s (tick %.0f us) with fsync always: p50 %.3f ms, p99 %.3f ms, "
           "p99.9 %.3f ms; p99 is %.2fx the reference 4 KiB append+fdatasync p99 (%.3f ms) and "
           "%.2fx the paced floor's p99\n",
           name, got, rate, (double)tick_ns / 1000, p50, p99, p999, p99 / (ref_p99_us / 1000),
           ref_p99_us / 1000, p99 / floor99);
    printf("bench=%s rate=%.0f tick_us=%.0f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f p99_vs_fsync_p99=%.2f "
           "floor_p99_ms=%.3f p99_vs_floor_p99=%.2f\n",
           name, rate, (double)tick_ns / 1000, p50, p99, p999, p99 / (ref_p99_us / 1000), floor99,
           p99 / floor99);
    free(lat);
}

static void bench_latency(void)
{
    double secs = quick ? 2 : 5;
    latency_run("latency", 10000, secs, 0);
    latency_run("latency-tick", 10000, secs, 1000000);
}

/* ---- reads ------------------------------------------------------------------------------- */

static uint64_t read_all(evs_store *st, const char *stream, const evs_query *q)
{
    evs_iter *it;
    evs_error err;
    if (evs_iter_open(st, (evs_slice){stream, strlen(stream)}, q, &it, &err))
        die("iter", &err);
    const evs_entry *e;
    uint64_t n = 0, bytes = 0;
    int rc;
    while ((rc = evs_iter_next(it, &e, &err)) == 1) {
        n++;
        bytes += e->fields[0].value.len;
    }
    if (rc < 0)
        die("read", &err);
    evs_iter_close(it);
    return n + (bytes & 0); /* bytes touched so the fields are really decoded */
}

/* One segment file's records, the least any verified reader of them does, with the libraries
 * alone: libdeflate's crc32 over each record after its crc field, msgpack-c's unpack of its
 * body. The layout from docs/format.md (56-byte header, magic at 0, crc at 4, body length at 8,
 * zero-padded to 8), not from the store's code. Returns the records seen, or -1 on a bad one. */
static long floor_segment(const char *path, msgpack_zone *zone)
{
    int fd = open(path, O_RDONLY);
    char named[4600];
    size_t pl = strlen(path);
    if (fd < 0 && errno == ENOENT && pl > 8 && !strcmp(path + pl - 8, ".pending")) {
        snprintf(named, sizeof named, "%.*s", (int)(pl - 8), path); /* named meanwhile */
        fd = open(path = named, O_RDONLY);
    }
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0)
        die(path, NULL);
    size_t size = (size_t)sb.st_size;
    const uint8_t *p = size ? mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0) : NULL;
    close(fd);
    if (size && p == MAP_FAILED)
        die(path, NULL);
    long n = 0;
    size_t off = 0;
    while (off + 56 <= size) {
        uint32_t magic, crc, blen;
        memcpy(&magic, p + off, 4);
        memcpy(&crc, p + off + 4, 4);
        memcpy(&blen, p + off + 8, 4);
        size_t rsize = 56 + (((size_t)blen + 7) & ~(size_t)7);
        if (magic == 0)
            break;
        if (magic != 0x31525645u || rsize > size - off ||
            (uint32_t)libdeflate_crc32(0, p + off + 8, rsize - 8) != crc) {
            n = -1;
            break;
        }
        msgpack_object obj;
        size_t used = 0;
        if (blen && msgpack_unpack((const char *)p + off + 56, blen, &used, zone, &obj) !=
                        MSGPACK_UNPACK_SUCCESS) {
            n = -1;
            break;
        }
        msgpack_zone_clear(zone);
        n++;
        off += rsize;
    }
    if (size)
        munmap((void *)p, size);
    return n;
}

/* The floor under replay: every segment of the store checked and decoded as above. Records/s;
 * *records gets their count. */
static double replay_floor(const char *store_dir, uint64_t *records)
{
    char logdir[4300], path[4600];
    snprintf(logdir, sizeof logdir, "%s/log", store_dir);
    struct dirent **list;
    int nf = scandir(logdir, &list, NULL, alphasort);
    if (nf < 0)
        die(logdir, NULL);
    msgpack_zone *zone = msgpack_zone_new(8192);
    uint64_t t0 = evs_mono_ns(), n = 0;
    for (int i = 0; i < nf; i++) {
        size_t l = strlen(list[i]->d_name);
        const char *nm = list[i]->d_name;
        if ((l > 4 && !strcmp(nm + l - 4, ".seg")) || /* and those not yet named (format.md) */
            (l > 12 && !strcmp(nm + l - 12, ".seg.pending"))) {
            snprintf(path, sizeof path, "%s/%s", logdir, list[i]->d_name);
            long c = floor_segment(path, zone);
            if (c < 0)
                die("replay floor: a record failed its check", NULL);
            n += (uint64_t)c;
        }
        free(list[i]);
    }
    double secs = (double)(evs_mono_ns() - t0) / 1e9;
    free(list);
    msgpack_zone_free(zone);
    *records = n;
    return (double)n / secs;
}

static void bench_replay(void)
{
    if (!nosync_store) {
        nosync_store = scratch_store("nosync", EVS_FSYNC_NO);
        snprintf(nosync_name, sizeof nosync_name, "nosync");
        fill(nosync_store, "bench", quick ? 500000 : 3000000, 256, 16, NULL);
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/%s", scratch, nosync_name);
    read_all(nosync_store, "bench", NULL); /* warm the page cache */
    double best = 0, fbest = 0;
    uint64_t n = 0, records = 0;
    for (int r = 0; r < 3; r++) { /* interleaved with the floor: the VM's speed drifts */
        uint64_t t0 = evs_mono_ns();
        n = read_all(nosync_store, "bench", NULL);
        double rate = (double)n / ((double)(evs_mono_ns() - t0) / 1e9);
        if (rate > best)
            best = rate;
        double f = replay_floor(dir, &records);
        if (f > fbest)
            fbest = f;
    }
    printf("replay: forward read of %" PRIu64 " entries from page cache: %.0f entries/s (best of 3); "
           "floor (every record of the log CRC-checked and unpacked, libraries alone, no store): "
           "%.0f records/s over %" PRIu64 " records; %.2f of the floor\n",
           n, best, fbest, records, best / fbest);
    printf("bench=replay entries=%" PRIu64 " entries_per_s=%.0f floor_records_per_s=%.0f "
           "of_floor=%.2f\n", n, best, fbest, best / fbest);
    evs_close(nosync_store);
    nosync_store = NULL;
}

static void bench_filter(void)
{
    evs_store *st = scratch_store("filter", EVS_FSYNC_NO);
    uint64_t total = quick ? 200000 : 1000000;
    fill(st, "f", total, 256, 16, "rare");
    read_all(st, "f", NULL);
    evs_store_stats s0, s1, s2;
    evs_store_stats_get(st, &s0);
    uint64_t t0 = evs_mono_ns();
    uint64_t all = read_all(st, "f", NULL);
    double t_all = (double)(evs_mono_ns() - t0) / 1e9;
    evs_store_stats_get(st, &s1);
    evs_query q;
    evs_query_init(&q);
    q.type = (evs_slice){"rare", 4};
    t0 = evs_mono_ns();
    uint64_t rare = read_all(st, "f", &q);
    double t_rare = (double)(evs_mono_ns() - t0) / 1e9;
    evs_store_stats_get(st, &s2);
    uint64_t r_all = s1.records_read - s0.records_read, r_rare = s2.records_read - s1.records_read;
    printf("filter: %" PRIu64 " of %" PRIu64 " entries have type=rare; full read %.1f ms reading %" PRIu64
           " records, filtered read %.1f ms reading %" PRIu64 " records (%.2f%% of the records, "
           "%.2f%% of the time)\n",
           rare, all, t_all * 1e3, r_all, t_rare * 1e3, r_rare, 100.0 * (double)r_rare / (double)r_all,
           100 * t_rare / t_all);
    printf("bench=filter entries=%" PRIu64 " matches=%" PRIu64 " records_read_pct=%.2f time_pct=%.2f\n",
           all, rare, 100.0 * (double)r_rare / (double)r_all, 100 * t_rare / t_all);
    evs_close(st);
}

/* ---- open time and memory ---------------------------------------------------------------- */

static double open_and_first_read(const char *path, const char *stream)
{
    uint64_t t0 = evs_mono_ns();
    evs_options o;
    evs_options_init(&o);
    evs_store *st;
    evs_error err;
    if (evs_open(path, &o, &st, &err))
        die("open", &err);
    evs_query q;
    evs_query_init(&q);
    q.reverse = true;
    q.limit = 1;
    if (read_all(st, stream, &q) != 1)
        die("first read", NULL);
    double ms = (double)(evs_mono_ns() - t0) / 1e6;
    evs_close(st);
    return ms;
}

static void bench_open(uint64_t entries)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/open", scratch);
    /* fill in a fresh child so that its peak RSS is this benchmark's alone */
    int fds[2];
    if (pipe(fds))
        die("pipe", NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        evs_store *st = scratch_store("open", EVS_FSYNC_NO);
        struct rusage ru0, ru;
        getrusage(RUSAGE_SELF, &ru0);
        double secs = fill(st, "big", entries, 1024, 8, NULL);
        getrusage(RUSAGE_SELF, &ru);
        evs_store_stats s;
        evs_store_stats_get(st, &s);
        /* anonymous memory (the store's own) as opposed to file pages of the index mapping */
        double anon_kb = 0;
        FILE *f = fopen("/proc/self/smaps_rollup", "r");
        char line[256];
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "Anonymous:", 10))
                anon_kb = atof(line + 10);
        if (f)
            fclose(f);
        evs_close(st);
        double out[5] = {secs, (double)s.log_bytes, (double)ru0.ru_maxrss, (double)ru.ru_maxrss,
                         anon_kb};
        if (write(fds[1], out, sizeof out) != (ssize_t)sizeof out)
            _exit(3);
        _exit(0);
    }
    close(fds[1]);
    double got[5] = {0};
    if (read(fds[0], got, sizeof got) != (ssize_t)sizeof got)
        die("fill child", NULL);
    close(fds[0]);
    waitpid(pid, NULL, 0);
    double clean = open_and_first_read(path, "big");
    /* SIGKILL during appends, then open */
    pid = fork();
    if (pid == 0) {
        evs_options o;
        evs_options_init(&o);
        o.fsync = EVS_FSYNC_NO;
        evs_store *c;
        evs_error err;
        if (evs_open(path, &o, &c, &err))
            _exit(2);
        fill(c, "big", UINT64_MAX / 2, 256, 16, NULL);
        _exit(0);
    }
    usleep(1500000);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    double killed = open_and_first_read(path, "big");
    printf("open: store of %" PRIu64 " entries (%.1f GB of log, appended at %.0f entries/s): open + "
           "first read %.1f ms after clean shutdown, %.1f ms after SIGKILL; peak RSS of the "
           "appending process %.1f MiB (%.1f MiB before it appended), of which anonymous "
           "memory %.1f MiB at the end (the rest: file pages of the index mapping)\n",
           entries, got[1] / 1e9, (double)entries / got[0], clean, killed, got[3] / 1024,
           got[2] / 1024, got[4] / 1024);
    printf("bench=open entries=%" PRIu64 " clean_ms=%.1f sigkill_ms=%.1f peak_rss_mib=%.1f "
           "anon_mib=%.1f\n",
           entries, clean, killed, got[3] / 1024, got[4] / 1024);
}

static int rm_tree(const char *p)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    return system(cmd);
}

int cmd_bench(int argc, char **argv)
{
    const char *dir = NULL;
    uint64_t entries = 0;
    static const struct option opts[] = {{"dir", required_argument, NULL, 'd'},
                                         {"entries", required_argument, NULL, 'n'},
                                         {"quick", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int c;
    while ((c = getopt_long(argc, argv, "d:n:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'n': entries = strtoull(optarg, NULL, 10); break;
        case 'q': quick = true; break;
        case 'h': fputs(help, stdout); return EXIT_OK;
        default: fputs(help, stderr); return EXIT_USAGE;
        }
    }
    if (!entries)
        entries = quick ? 1000000 : 10000000;
    bool own = !dir;
    if (own) {
        mkdir("bench-tmp", 0755);
        snprintf(scratch, sizeof scratch, "bench-tmp/run-%d", (int)getpid());
    } else {
        snprintf(scratch, sizeof scratch, "%s", dir);
    }
    if (mkdir(scratch, 0755) && errno != EEXIST)
        die(scratch, NULL);
    memset(payload, 'p', sizeof payload - 1);
    const char *all[] = {"append-nosync", "replay", "append-always", "latency", "filter", "open"};
    const char **names = optind < argc ? (const char **)argv + optind : all;
    int n = optind < argc ? argc - optind : (int)(sizeof all / sizeof *all);
    setvbuf(stdout, NULL, _IOLBF, 0);
    bench_reference();
    for (int i = 0; i < n; i++) {
        const char *b = names[i];
        if (!strcmp(b, "reference"))
            continue;
        else if (!strcmp(b, "append-nosync"))
            bench_append_nosync();
        else if (!strcmp(b, "append-always"))
            bench_append_always();
        else if (!strcmp(b, "latency"))
            bench_latency();
        else if (!strcmp(b, "replay"))
            bench_replay();
        else if (!strcmp(b, "filter"))
            bench_filter();
        else if (!strcmp(b, "open"))
            bench_open(entries);
        else {
            fprintf(stderr, "evstore bench: unknown benchmark '%s'\n", b);
            return EXIT_USAGE;
        }
    }
    if (nosync_store)
        evs_close(nosync_store);
    if (own)
        rm_tree(scratch);
    return EXIT_OK;
}
