/*
 * test_crash.c — a real process appends with fsync=always from several threads and reports
 * every acknowledged entry through a pipe; the parent SIGKILLs it at a random moment, reopens
 * the store and checks that every acknowledged entry is there, byte-identical, once.
 * Small segments make kills land during segment rolls too.
 */
#include "helpers.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define THREADS 4
#define STREAMS 3

struct ack {
    uint32_t thread, n;
    uint64_t ms, seq;
};

static int pipe_w;
static uint32_t n_base; /* each child numbers from iteration * 1,000,000 */
static evs_store *child_st;
static pthread_mutex_t pipe_mu = PTHREAD_MUTEX_INITIALIZER;

static void value_of(uint32_t t, uint32_t n, char *buf, size_t cap)
{
    /* sizes vary so records straddle pages and segment ends */
    size_t len = 20 + (n * 37 + t * 11) % 700;
    if (len >= cap)
        len = cap - 1;
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)('a' + (t * 7 + n * 13 + i) % 26);
    buf[len] = 0;
}

static void *child_thread(void *p)
{
    uint32_t t = (uint32_t)(uintptr_t)p;
    char s[16], tn[16], nn[16], v[1024];
    snprintf(s, sizeof s, "crash-%u", t % STREAMS);
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
    }
    return NULL;
}

static void child(const char *dir)
{
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 128 * 1024;
    evs_error err;
    if (evs_open(dir, &o, &child_st, &err))
        _exit(2);
    pthread_t th[THREADS];
    for (uintptr_t t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, child_thread, (void *)t);
    pthread_join(th[0], NULL);
    _exit(0);
}

Test(crash, sigkill_never_loses_an_acknowledged_entry, .timeout = 600)
{
    char *dir = tmpdir_new();
    char *sp = store_path(dir);
    srand((unsigned)time(NULL));
    size_t cap = 1 << 20, total_acked = 0;
    struct ack *acks = malloc(cap * sizeof *acks);
    for (int iter = 0; iter < 50; iter++) {
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            close(fds[0]);
            pipe_w = fds[1];
            n_base = (uint32_t)iter * 1000000u;
            child(sp);
        }
        close(fds[1]);
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        long kill_after_ms = 30 + rand() % 150;
        size_t nacks = 0;
        /* read acknowledgements until the deadline, then kill */
        for (;;) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long el = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
            if (el >= kill_after_ms)
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

        evs_store *st = open_store(sp, NULL);
        cr_assert_eq(evs_verify(st, NULL, NULL), 0, "verify found problems after kill %d", iter);
        for (size_t i = 0; i < nacks; i++) {
            struct ack *k = &acks[i];
            char s[16], v[1024];
            snprintf(s, sizeof s, "crash-%u", k->thread % STREAMS);
            evs_query q;
            evs_query_init(&q);
            q.start = q.end = (evs_id){k->ms, k->seq};
            evs_iter *it;
            evs_error err;
            cr_assert_eq(evs_iter_open(st, S(s), &q, &it, &err), 0, "%s", err.msg);
            const evs_entry *e;
            cr_assert_eq(evs_iter_next(it, &e, &err), 1, "kill %d: acknowledged %lu-%lu missing",
                         iter, (unsigned long)k->ms, (unsigned long)k->seq);
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
        /* no entry twice, none reordered: each thread appends in sequence, so within a stream
         * the n of each thread strictly increases */
        for (int sidx = 0; sidx < STREAMS; sidx++) {
            char s[16];
            snprintf(s, sizeof s, "crash-%d", sidx);
            long last[THREADS];
            for (int t = 0; t < THREADS; t++)
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
                cr_assert(t >= 0 && t < THREADS);
                cr_assert_gt(n, last[t], "kill %d: thread %d entry %ld after %ld", iter, t, n, last[t]);
                last[t] = n;
            }
            cr_assert_eq(rc, 0, "%s", err.msg);
            evs_iter_close(it);
        }
        cr_assert_eq(evs_close(st), 0);
    }
    cr_assert_gt(total_acked, 500, "too few appends to mean anything (%zu)", total_acked);
    free(acks);
    rm_rf(dir);
    free(sp);
    free(dir);
}
