/*
 * cli_bench_groups.c — `evstore bench-groups --server HOST:PORT [--consumers N] [--seconds S]`:
 * consumer-group round trips against any RESP server (Redis too: the same-run reference in
 * docs/benchmarks.md). Preloads a stream, creates a group, then N consumers, each on its own
 * connection, loop XREADGROUP COUNT 1 > then XACK of what they got, for S seconds. Prints the
 * entries consumed and acknowledged per second and the round trip's p50/p99.
 */
#include "cli.h"
#include "rclient.h"

#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CONSUMERS 64

struct consumer {
    const char *server;
    int no;
    uint64_t deadline;
    uint64_t *lat;
    size_t n, cap;
    int failed;
    char err[300];
};

/* Send one command and read its reply (caller frees). */
static resp_value *call(rclient *c, size_t argc, const char *const *argv, const size_t *lens,
                        char *err, size_t errcap)
{
    resp_value *v = NULL;
    if (rclient_send(c, argc, argv, lens) || rclient_read(c, &v, err, errcap))
        return NULL;
    return v;
}

/* The first entry ID of an XREADGROUP reply: [[key, [[id, fields]...]]] (RESP2). */
static const resp_value *first_id(const resp_value *v)
{
    if (v->type != RESP_T_ARRAY || v->n < 1 || v->elems[0].type != RESP_T_ARRAY ||
        v->elems[0].n != 2)
        return NULL;
    const resp_value *entries = &v->elems[0].elems[1];
    if (entries->type != RESP_T_ARRAY || entries->n < 1 || entries->elems[0].type != RESP_T_ARRAY ||
        entries->elems[0].n < 1 || entries->elems[0].elems[0].type != RESP_T_BULK)
        return NULL;
    return &entries->elems[0].elems[0];
}

static void *consume(void *arg)
{
    struct consumer *k = arg;
    rclient c;
    if (rclient_connect(&c, k->server, getenv("EVSTORE_PASSWORD"), NULL, k->err, sizeof k->err)) {
        k->failed = 1;
        return NULL;
    }
    char name[32];
    snprintf(name, sizeof name, "c%d", k->no);
    const char *rd[] = {"XREADGROUP", "GROUP", "g", name, "COUNT", "1", "STREAMS", "bench-groups",
                        ">"};
    while (evs_mono_ns() < k->deadline) {
        uint64_t t0 = evs_mono_ns();
        resp_value *v = call(&c, 9, rd, NULL, k->err, sizeof k->err);
        if (!v) {
            k->failed = 1;
            break;
        }
        const resp_value *id = first_id(v);
        if (!id) { /* the preload ran out, or an error */
            if (v->type == RESP_T_ERROR) {
                snprintf(k->err, sizeof k->err, "%.*s", (int)v->len, (const char *)v->str);
                k->failed = 1;
            }
            resp_value_free(v);
            break;
        }
        char idbuf[64];
        size_t idl = id->len < sizeof idbuf ? id->len : sizeof idbuf - 1;
        memcpy(idbuf, id->str, idl);
        resp_value_free(v);
        const char *ack[] = {"XACK", "bench-groups", "g", idbuf};
        size_t lens[] = {4, 12, 1, idl};
        v = call(&c, 4, ack, lens, k->err, sizeof k->err);
        if (!v || v->type != RESP_T_INT || v->integer != 1) {
            if (v)
                resp_value_free(v);
            k->failed = 1;
            break;
        }
        resp_value_free(v);
        if (k->n == k->cap) {
            k->cap = k->cap ? k->cap * 2 : 4096;
            k->lat = realloc(k->lat, k->cap * sizeof *k->lat);
        }
        k->lat[k->n++] = evs_mono_ns() - t0;
    }
    rclient_close(&c);
    return NULL;
}

/* DEL the stream, append `total` entries (pipelined), create the group at 0. */
static int preload(const char *server, size_t total, char *err, size_t errcap)
{
    rclient c;
    if (rclient_connect(&c, server, getenv("EVSTORE_PASSWORD"), NULL, err, errcap))
        return -1;
    const char *del[] = {"DEL", "bench-groups"};
    resp_value *v = call(&c, 2, del, NULL, err, errcap);
    if (!v)
        return -1;
    resp_value_free(v);
    const char *add[] = {"XADD", "bench-groups", "*", "payload",
                         "0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t done = 0; done < total;) {
        size_t burst = total - done < 1000 ? total - done : 1000;
        for (size_t i = 0; i < burst; i++)
            if (rclient_send(&c, 5, add, NULL))
                return -1;
        for (size_t i = 0; i < burst; i++) {
            if (rclient_read(&c, &v, err, errcap))
                return -1;
            resp_value_free(v);
        }
        done += burst;
    }
    const char *grp[] = {"XGROUP", "CREATE", "bench-groups", "g", "0"};
    v = call(&c, 5, grp, NULL, err, errcap);
    if (!v)
        return -1;
    int rc = v->type == RESP_T_ERROR ? -1 : 0;
    if (rc)
        snprintf(err, errcap, "XGROUP CREATE: %.*s", (int)v->len, (const char *)v->str);
    resp_value_free(v);
    rclient_close(&c);
    return rc;
}

int cmd_bench_groups(int argc, char **argv)
{
    const char *server = cli_env("EVSTORE_SERVER", "127.0.0.1:7379");
    int consumers = 1;
    double secs = 5;
    long preload_n = 0;
    static const struct option opts[] = {{"server", required_argument, NULL, 's'},
                                         {"consumers", required_argument, NULL, 'c'},
                                         {"seconds", required_argument, NULL, 't'},
                                         {"preload", required_argument, NULL, 'p'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "s:c:t:p:h", opts, NULL)) != -1) {
        switch (ch) {
        case 's': server = optarg; break;
        case 'c': consumers = atoi(optarg); break;
        case 't': secs = atof(optarg); break;
        case 'p': preload_n = atol(optarg); break;
        case 'h':
            puts("usage: evstore bench-groups [--server HOST:PORT] [--consumers N] [--seconds S]\n"
                 "                            [--preload ENTRIES]\n"
                 "N consumers loop XREADGROUP COUNT 1 > then XACK on stream bench-groups (deleted\n"
                 "and refilled first); prints round trips/s, p50/p99 and one line bench=groups.");
            return EXIT_OK;
        default: return EXIT_USAGE;
        }
    }
    if (consumers < 1 || consumers > MAX_CONSUMERS || secs <= 0 ||
        !cli_hostport("bench-groups", "--server", server))
        return EXIT_USAGE;
    if (preload_n <= 0)
        preload_n = (long)(secs * 20000) + 10000;
    char err[300];
    if (preload(server, (size_t)preload_n, err, sizeof err)) {
        fprintf(stderr, "evstore bench-groups: preload: %s\n", err);
        return EXIT_FAILURE_;
    }
    struct consumer k[MAX_CONSUMERS];
    memset(k, 0, sizeof k);
    pthread_t th[MAX_CONSUMERS];
    uint64_t start = evs_mono_ns(), deadline = start + (uint64_t)(secs * 1e9);
    for (int i = 0; i < consumers; i++) {
        k[i].server = server;
        k[i].no = i;
        k[i].deadline = deadline;
        pthread_create(&th[i], NULL, consume, &k[i]);
    }
    size_t total = 0;
    int failed = 0;
    for (int i = 0; i < consumers; i++) {
        pthread_join(th[i], NULL);
        total += k[i].n;
        if (k[i].failed) {
            fprintf(stderr, "evstore bench-groups: consumer %d: %s\n", i, k[i].err);
            failed = 1;
        }
    }
    double elapsed = (double)(evs_mono_ns() - start) / 1e9;
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t at = 0;
    for (int i = 0; i < consumers; i++) {
        memcpy(all + at, k[i].lat, k[i].n * sizeof *all);
        at += k[i].n;
        free(k[i].lat);
    }
    qsort(all, total, sizeof *all, cli_cmp_u64);
    double p50 = total ? (double)all[total / 2] / 1e6 : 0,
           p99 = total ? (double)all[total * 99 / 100] / 1e6 : 0;
    free(all);
    printf("groups: %d consumers, %zu XREADGROUP+XACK round trips in %.1f s to %s: %.0f/s, "
           "p50 %.3f ms, p99 %.3f ms\n",
           consumers, total, elapsed, server, (double)total / elapsed, p50, p99);
    printf("bench=groups consumers=%d rps=%.0f p50_ms=%.3f p99_ms=%.3f\n", consumers,
           (double)total / elapsed, p50, p99);
    return failed ? EXIT_FAILURE_ : EXIT_OK;
}
