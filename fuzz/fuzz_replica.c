/*
 * fuzz_replica.c — hostile bytes as a replication frame: what a follower's store does with
 * bytes that claim to be the leader's log (evs_replica_submit). Records that fail their check
 * must be refused before anything is written; records that pass but make no sense (entries of
 * streams never created, IDs going backwards) must fail the store cleanly. Then the store is
 * reopened and verified. Nothing may crash, hang or leak.
 */
#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evstore.h"

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

typedef struct waitd {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} waitd;

static void done(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err)
{
    (void)rc; (void)ids; (void)n; (void)err;
    waitd *w = arg;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dir[] = "/tmp/evs-fuzz-replica-XXXXXX";
    if (!mkdtemp(dir))
        return 0;
    evs_options o;
    evs_options_init(&o);
    o.fsync = EVS_FSYNC_NO;
    o.segment_bytes = 1 << 20;
    o.index_map_bytes = 1 << 20;
    o.replica = true;
    evs_store *st;
    evs_error err;
    if (evs_open(dir, &o, &st, &err) == 0) {
        waitd w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
        if (evs_replica_submit(st, 0, data, size, done, &w) == 0) {
            pthread_mutex_lock(&w.mu);
            while (!w.done)
                pthread_cond_wait(&w.cv, &w.mu);
            pthread_mutex_unlock(&w.mu);
        }
        evs_close(st);
        o.replica = false;
        if (evs_open(dir, &o, &st, &err) == 0) {
            evs_verify(st, NULL, NULL);
            evs_close(st);
        }
    }
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
