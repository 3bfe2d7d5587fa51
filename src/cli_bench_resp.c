/*
 * cli_bench_resp.c — `evstore bench-resp --server HOST:PORT [--rate N] [--seconds S]
 * [--tick-us T]`: XADD at a steady rate over one RESP connection; a sender thread paced to the
 * rate (sleeping to each due time, never spinning), a reader matching replies in order.
 * Latency counts from each request's due time, so a late send counts against the server.
 * Works against any RESP server (Redis too: the same-run reference in docs/benchmarks.md).
 *
 * --tick-us T: the requests due within each T microseconds are due together at the start of
 * it and sent back to back (the same rate, arriving in small bursts). On this machine's VM, a
 * sender waking 10,000 times a second gets the whole VM stalled 10-15 ms every 100 ms: the
 * same stall a bare fdatasync loop shows beside any thread waking at 5-10 kHz, and none at
 * 1-2 kHz (docs/benchmarks.md, "Machine"). A tick of 1,000 us measures the server without it.
 */
#include "cli.h"
#include "rclient.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


struct job {
    rclient c;
    size_t total;
    double rate;
    uint64_t start, tick_ns;
    uint64_t *lat;
    int failed;
};

static void *sender(void *arg)
{
    struct job *j = arg;
    static const char *argv[] = {"XADD", "bench-resp", "*", "payload",
                                 "0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < j->total; i++) {
        uint64_t due = cli_due_ns(j->start, i, j->rate, j->tick_ns);
        struct timespec ts = {(time_t)(due / 1000000000ull), (long)(due % 1000000000ull)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        if (rclient_send(&j->c, 5, argv, NULL)) {
            j->failed = 1;
            return NULL;
        }
    }
    return NULL;
}

int cmd_bench_resp(int argc, char **argv)
{
    const char *server = cli_env("EVSTORE_SERVER", "127.0.0.1:7379");
    double rate = 10000, secs = 5, tick_us = 0;
    static const struct option opts[] = {{"server", required_argument, NULL, 's'},
                                         {"rate", required_argument, NULL, 'r'},
                                         {"seconds", required_argument, NULL, 't'},
                                         {"tick-us", required_argument, NULL, 'k'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "s:r:t:k:h", opts, NULL)) != -1) {
        switch (ch) {
        case 's': server = optarg; break;
        case 'r': rate = atof(optarg); break;
        case 't': secs = atof(optarg); break;
        case 'k': tick_us = atof(optarg); break;
        case 'h':
            puts("usage: evstore bench-resp [--server HOST:PORT] [--rate N] [--seconds S] [--tick-us T]\n"
                 "XADD at a steady rate over one connection; prints p50/p99/p99.9 latency and one\n"
                 "line bench=resp-latency key=value. Latency counts from each request's due time.\n"
                 "--tick-us T: the requests due within each T us are due together at its start\n"
                 "and sent back to back (default 0: each at its own time).");
            return EXIT_OK;
        default: return EXIT_USAGE;
        }
    }
    if (rate <= 0 || secs <= 0 || tick_us < 0 || !cli_hostport("bench-resp", "--server", server))
        return EXIT_USAGE;
    struct job j = {0};
    char err[300];
    if (rclient_connect(&j.c, server, getenv("EVSTORE_PASSWORD"), NULL, err, sizeof err)) {
        fprintf(stderr, "evstore bench-resp: %s\n", err);
        return EXIT_FAILURE_;
    }
    j.total = (size_t)(rate * secs);
    j.rate = rate;
    j.tick_ns = (uint64_t)(tick_us * 1000);
    j.lat = calloc(j.total, sizeof *j.lat);
    j.start = evs_mono_ns() + 10000000ull;
    pthread_t th;
    pthread_create(&th, NULL, sender, &j);
    size_t got = 0, errors = 0;
    for (; got < j.total; got++) {
        resp_value *v;
        if (rclient_read(&j.c, &v, err, sizeof err)) {
            fprintf(stderr, "evstore bench-resp: %s\n", err);
            break;
        }
        j.lat[got] = evs_mono_ns() - cli_due_ns(j.start, got, j.rate, j.tick_ns);
        errors += v->type == RESP_T_ERROR;
        resp_value_free(v);
    }
    pthread_join(th, NULL);
    rclient_close(&j.c);
    qsort(j.lat, got, sizeof *j.lat, cli_cmp_u64);
    double p50 = got ? (double)j.lat[got / 2] / 1e6 : 0, p99 = got ? (double)j.lat[got * 99 / 100] / 1e6 : 0,
           p999 = got ? (double)j.lat[got * 999 / 1000] / 1e6 : 0;
    printf("resp-latency: %zu XADDs at %.0f/s to %s: p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, %zu errors\n",
           got, rate, server, p50, p99, p999, errors);
    printf("bench=resp-latency rate=%.0f tick_us=%.0f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f errors=%zu\n",
           rate, tick_us, p50, p99, p999, errors);
    free(j.lat);
    return got == j.total && !errors && !j.failed ? EXIT_OK : EXIT_FAILURE_;
}
