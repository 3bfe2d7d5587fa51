/*
 * fuzz_segment.c — hostile bytes as a whole segment file: open the store (recovery scans,
 * cuts torn tails, rebuilds the index), read every stream forward, backward and filtered,
 * run verify, close. Nothing may crash, hang or leak, whatever the file holds.
 */
#include <fcntl.h>
#include <ftw.h>
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

static int each_stream(void *arg, evs_slice name, const evs_stream_info *info)
{
    evs_store *st = arg;
    (void)info;
    for (int mode = 0; mode < 3; mode++) {
        evs_query q;
        evs_query_init(&q);
        q.reverse = mode == 1;
        if (mode == 2)
            q.type = (evs_slice){"t", 1};
        evs_iter *it;
        evs_error err;
        if (evs_iter_open(st, name, &q, &it, &err))
            continue;
        const evs_entry *e;
        int n = 0;
        while (evs_iter_next(it, &e, &err) == 1 && n++ < 100000)
            ;
        evs_iter_close(it);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dir[] = "/tmp/evs-fuzz-XXXXXX";
    if (!mkdtemp(dir))
        return 0;
    char p[256];
    snprintf(p, sizeof p, "%s/log", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/log/00000000000000000000.seg", dir);
    int fd = open(p, O_WRONLY | O_CREAT, 0644);
    if (fd >= 0) {
        if (write(fd, data, size) != (ssize_t)size) {
            /* a short write only shortens the input */
        }
        close(fd);
    }
    snprintf(p, sizeof p, "%s/STORE", dir);
    fd = open(p, O_WRONLY | O_CREAT, 0644);
    if (fd >= 0) {
        const char *id = "evstore-store 1\nid 00000000000000000000000000000000\n";
        if (write(fd, id, strlen(id)) < 0) {
        }
        close(fd);
    }
    evs_options o;
    evs_options_init(&o);
    o.fsync = EVS_FSYNC_NO;
    o.segment_bytes = 1 << 20;
    o.index_map_bytes = 1 << 20;
    evs_store *st;
    evs_error err;
    if (evs_open(dir, &o, &st, &err) == 0) {
        evs_stream_list(st, each_stream, st);
        evs_verify(st, NULL, NULL);
        evs_close(st);
    }
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
