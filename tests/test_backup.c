/*
 * test_backup.c — epochs, snapshots, manifests, backup and restore through the embedded API.
 * (The real binary and a live server: tests/test_backup.py.)
 */
#include "helpers.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "internal.h"
#include "evstore_backup.h"
#include "manifest.h"

#include <lmdb.h>

static void path2(char *out, size_t cap, const char *dir, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

Test(epochs, fresh_store_starts_epoch_1_and_begin_is_durable)
{
    char *dir = tmpdir_new();
    evs_store *st = open_store(dir, NULL);
    evs_epoch e[4];
    cr_assert_eq(evs_epochs(st, e, 4), 1);
    cr_assert_eq(e[0].epoch, 1);
    cr_assert_eq(e[0].start, 0);
    evs_id id;
    cr_assert_eq(add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, &id, "a", "b", NULL), 0);
    evs_epoch n;
    evs_error err;
    cr_assert_eq(evs_epoch_begin(st, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n.epoch, 2);
    cr_assert_gt(n.start, 0);
    cr_assert_neq(memcmp(n.uuid, e[0].uuid, 16), 0);
    evs_store_stats s;
    evs_store_stats_get(st, &s);
    cr_assert_eq(s.epoch, 2);
    cr_assert_eq(s.log_end, n.start + 80); /* the REC_EPOCH record follows at once */
    evs_close(st);
    st = open_store(dir, NULL);
    cr_assert_eq(evs_epochs(st, e, 4), 2);
    cr_assert_eq(e[1].epoch, 2);
    cr_assert_eq(e[1].start, n.start);
    cr_assert_eq(memcmp(e[1].uuid, n.uuid, 16), 0);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    evs_close(st);
    rm_rf(dir);
    free(dir);
}

/* A run that ends without evs_close (a crash: the child is killed) leaves RUNNING: the next
 * open to lead begins an epoch at the recovered log's end, before its first write (not at
 * open: that stays free of syncs); a clean close leaves nothing for the next open to fence,
 * unless the epoch is still due; an open as a replica begins none. */
static int epochs_after_reopen(const char *dir, bool replica, bool write)
{
    evs_options o;
    evs_options_init(&o);
    o.replica = replica;
    evs_store *st;
    evs_error err;
    cr_assert_eq(evs_open(dir, &o, &st, &err), 0, "%s", err.msg);
    evs_store_stats s;
    evs_store_stats_get(st, &s);
    evs_epoch e[8];
    int before = evs_epochs(st, e, 8);
    if (write)
        cr_assert_eq(add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, NULL, "a", "b", NULL), 0);
    int n = evs_epochs(st, e, 8);
    if (n > before)
        cr_assert_eq(e[n - 1].start, s.log_end, "the epoch starts where the log ended");
    cr_assert_eq(evs_close(st), 0);
    return n;
}

Test(epochs, a_store_that_did_not_close_cleanly_opens_to_lead_with_a_new_epoch)
{
    char *dir = tmpdir_new();
    char running[600];
    path2(running, sizeof running, dir, "RUNNING");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        evs_store *st;
        evs_error e;
        if (evs_open(dir, NULL, &st, &e) || add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, NULL, "a", "b",
                                               NULL))
            _exit(2);
        raise(SIGKILL);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child: %d", status);
    cr_assert_eq(access(running, F_OK), 0, "a run that never closed leaves RUNNING");
    cr_assert_eq(epochs_after_reopen(dir, false, false), 1, "no epoch before a write");
    cr_assert_eq(access(running, F_OK), 0, "a close with the epoch still due leaves RUNNING");
    cr_assert_eq(epochs_after_reopen(dir, false, true), 2);
    cr_assert_eq(access(running, F_OK), -1, "a clean close removes RUNNING");
    cr_assert_eq(epochs_after_reopen(dir, false, true), 2, "a clean run before: nothing to fence");
    int fd = open(running, O_CREAT | O_WRONLY, 0644); /* as a killed run leaves it */
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(epochs_after_reopen(dir, true, false), 2, "a replica follows: no epoch of its own");
    rm_rf(dir);
    free(dir);
}

Test(epochs, parse_rejects_what_is_not_a_history)
{
    const char *bad[] = {
        "",
        "evstore-epochs 2\n",
        "evstore-epochs 1\n1 00112233445566778899aabbccddeeff 0",    /* unterminated */
        "evstore-epochs 1\n1 00112233445566778899aabbccddeef 0\n",   /* short uuid */
        "evstore-epochs 1\n1 00112233445566778899aabbccddeeFF 0\n",  /* upper case */
        "evstore-epochs 1\n1 00112233445566778899aabbccddeeff 4\n",  /* not a multiple of 8 */
        "evstore-epochs 1\n2 00112233445566778899aabbccddeeff 8\n"
        "2 00112233445566778899aabbccddeeff 16\n",                   /* not increasing */
        "evstore-epochs 1\n2 00112233445566778899aabbccddeeff 16\n"
        "3 00112233445566778899aabbccddeeff 8\n",                    /* start goes back */
        "evstore-epochs 1\n4294967296 00112233445566778899aabbccddeeff 0\n",
        "evstore-epochs 1\n1 00112233445566778899aabbccddeeff 0 extra\n",
        /* what epochs_format never writes is refused, not read as a neighbouring value (E5) */
        "evstore-epochs 1\n+1 00112233445566778899aabbccddeeff 0\n",
        "evstore-epochs 1\n 1 00112233445566778899aabbccddeeff 0\n",
        "evstore-epochs 1\n1  00112233445566778899aabbccddeeff 0\n",
        "evstore-epochs 1\n1 00112233445566778899aabbccddeeff  0\n",
        "evstore-epochs 1\n1\t00112233445566778899aabbccddeeff 0\n",
        "evstore-epochs 1\n1 00112233445566778899aabbccddeeff -8\n", /* read as 2^64 - 8 */
        "evstore-epochs 1\n1 00112233445566778899aabbccddeeff 18446744073709551616\n",
        "evstore-epochs 1\n1 00112233445566778899aabbccddeeff 0\r\n",
        "evstore-epochs 1\n1 00112233445566778899aabbccddeeff \n",
        "evstore-epochs 1\n\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        evs_epoch *v;
        size_t n;
        char why[160];
        cr_assert_eq(epochs_parse(bad[i], strlen(bad[i]), &v, &n, why, sizeof why), -1,
                     "case %zu parsed", i);
    }
    const char *good = "evstore-epochs 1\n1 00112233445566778899aabbccddeeff 0\n"
                       "7 ffeeddccbbaa99887766554433221100 4096\n";
    evs_epoch *v;
    size_t n;
    char why[160];
    cr_assert_eq(epochs_parse(good, strlen(good), &v, &n, why, sizeof why), 0, "%s", why);
    cr_assert_eq(n, 2);
    size_t len;
    char *again = epochs_format(v, n, &len);
    cr_assert_str_eq(again, good);
    free(again);
    free(v);
}

/* ---- manifests --------------------------------------------------------------------------- */

static char *sample_manifest(size_t *len)
{
    evs_epoch ep = {.epoch = 3, .start = 64};
    memset(ep.uuid, 0xab, 16);
    mf_stream s = {(uint8_t *)"a stream", 8, {5, 6}, 7, 8};
    mf_file f[2] = {{.name = "STORE", .size = 52, .alloc = 52, .crc = 1, .stored_size = 52,
                     .stored_crc = 1},
                    {.name = "log/00000000000000000000.seg", .size = 4096, .alloc = 1 << 20,
                     .crc = 2, .segment = true, .compressed = true, .stored_size = 100,
                     .stored_crc = 3}};
    manifest m = {.id = "0123456789abcdef0123456789abcdef",
                  .store_id = "fedcba9876543210fedcba9876543210",
                  .parent_id = "00000000000000000000000000000001",
                  .parent_path = "/somewhere/else",
                  .source = "127.0.0.1:7379",
                  .created_ms = 99, .cut = 4096, .log_start = 0,
                  .epochs = &ep, .nepochs = 1, .streams = &s, .nstreams = 1,
                  .files = f, .nfiles = 2};
    return mf_encode(&m, len);
}

Test(manifest, round_trip)
{
    size_t len;
    char *t = sample_manifest(&len);
    manifest m;
    char why[200];
    cr_assert_eq(mf_parse(t, len, &m, why, sizeof why), 0, "%s", why);
    cr_assert_str_eq(m.source, "127.0.0.1:7379");
    cr_assert_str_eq(m.parent_path, "/somewhere/else");
    cr_assert_eq(m.nfiles, 2);
    cr_assert(m.files[1].compressed && m.files[1].segment && !m.files[1].sealed);
    cr_assert_eq(m.files[1].alloc, 1 << 20);
    cr_assert_eq(m.nstreams, 1);
    cr_assert_eq(m.streams[0].len, 8);
    cr_assert_eq(memcmp(m.streams[0].name, "a stream", 8), 0);
    cr_assert_eq(m.streams[0].last.seq, 6);
    cr_assert_eq(m.epochs[0].epoch, 3);
    size_t len2;
    char *t2 = mf_encode(&m, &len2);
    cr_assert_eq(len2, len);
    cr_assert_eq(memcmp(t, t2, len), 0);
    free(t2);
    mf_release(&m);
    free(t);
}

Test(manifest, every_flipped_bit_or_cut_is_refused)
{
    size_t len;
    char *t = sample_manifest(&len);
    char why[200];
    for (size_t i = 0; i < len; i++) {
        for (int b = 0; b < 8; b++) {
            t[i] ^= (char)(1 << b);
            manifest m;
            cr_assert_eq(mf_parse(t, len, &m, why, sizeof why), -1, "flip byte %zu bit %d", i, b);
            t[i] ^= (char)(1 << b);
        }
        manifest m;
        cr_assert_eq(mf_parse(t, i, &m, why, sizeof why), -1, "cut at %zu", i);
    }
    free(t);
}

Test(manifest, names_stay_inside)
{
    cr_assert(mf_name_ok("STORE"));
    cr_assert(mf_name_ok("log/00000000000001048576.seg"));
    cr_assert(!mf_name_ok("log/../../../etc/passwd"));
    cr_assert(!mf_name_ok("../STORE"));
    cr_assert(!mf_name_ok("log/0000000000000104857a.seg"));
    cr_assert(!mf_name_ok("/etc/passwd"));
    cr_assert(!mf_name_ok("index/lock.mdb"));
}

/* ---- snapshot under appends, backup, restore ----------------------------------------------- */

typedef struct loader {
    evs_store *st;
    atomic_bool stop;
    atomic_size_t acked;     /* entries acknowledged so far (ids[0 .. acked))                 */
    evs_id ids[200000];
} loader;

static void *load(void *arg)
{
    loader *l = arg;
    char pad[200];
    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = 0;
    for (size_t i = 0; i < 200000 && !atomic_load(&l->stop); i++) {
        evs_id id;
        cr_assert_eq(add(l->st, i % 2 ? "odd" : "even", EVS_ID_AUTO, EVS_ID_MIN, &id, "pad", pad,
                         NULL), 0);
        l->ids[i] = id;
        atomic_store(&l->acked, i + 1);
    }
    return NULL;
}

static size_t count(evs_store *st, const char *name)
{
    evs_stream_info in;
    if (evs_stream_info_get(st, (evs_slice){name, strlen(name)}, &in))
        return 0;
    return in.length;
}

Test(backup, snapshot_under_appends_restores_every_acknowledged_entry, .timeout = 120)
{
    char *dir = tmpdir_new();
    char data[512], out[512], inc[512], rest[512];
    path2(data, sizeof data, dir, "data");
    path2(out, sizeof out, dir, "b1");
    path2(inc, sizeof inc, dir, "b2");
    path2(rest, sizeof rest, dir, "restored");
    loader *l = calloc(1, sizeof *l);
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 256 << 10;
    o.fsync = EVS_FSYNC_NO;
    l->st = open_store(data, &o);
    pthread_t t;
    pthread_create(&t, NULL, load, l);
    while (atomic_load(&l->acked) < 5000)
        usleep(1000);
    size_t before = atomic_load(&l->acked);
    evs_backup_options bo = {.out = out};
    evs_backup_report rep;
    evs_error err;
    cr_assert_eq(evs_backup_store(l->st, "test", &bo, &rep, &err), 0, "%s", err.msg);
    size_t before2 = atomic_load(&l->acked);
    evs_backup_options bo2 = {.out = inc, .parent = out, .compress = true};
    evs_backup_report rep2;
    cr_assert_eq(evs_backup_store(l->st, "test", &bo2, &rep2, &err), 0, "%s", err.msg);
    atomic_store(&l->stop, true);
    pthread_join(t, NULL);
    cr_assert_gt(rep2.files_shared, 0, "sealed segments shared with the first backup");
    cr_assert_geq(rep2.cut, rep.cut);
    cr_assert_eq(evs_backup_verify(out, NULL, NULL, NULL, NULL), 0);
    cr_assert_eq(evs_backup_verify(inc, NULL, NULL, NULL, NULL), 0);

    evs_restore_report rr;
    cr_assert_eq(evs_restore(inc, rest, NULL, &rr, &err), 0, "%s", err.msg);
    cr_assert_eq(rr.epoch.epoch, 2);
    evs_store *r = open_store(rest, &o);
    size_t n = count(r, "odd") + count(r, "even");
    cr_assert_geq(n, before2, "restored %zu entries, %zu were acknowledged before", n, before2);
    cr_assert_leq(n, atomic_load(&l->acked));
    /* every entry acknowledged before the backup, and nothing out of order: a prefix */
    for (size_t i = 0; i < before2; i++) {
        const char *s = i % 2 ? "odd" : "even";
        evs_query q;
        evs_query_init(&q);
        q.start = l->ids[i];
        q.end = l->ids[i];
        evs_iter *it;
        cr_assert_eq(evs_iter_open(r, (evs_slice){s, strlen(s)}, &q, &it, &err), 0);
        const evs_entry *e;
        cr_assert_eq(evs_iter_next(it, &e, &err), 1, "entry %zu of %zu missing", i, before2);
        evs_iter_close(it);
    }
    cr_assert_eq(evs_verify(r, NULL, NULL), 0);
    evs_close(r);
    (void)before;
    evs_close(l->st);
    free(l);
    rm_rf(dir);
    free(dir);
}

/* A closed store in folder `at` whose stream `name` holds n entries. */
static void make_store(const char *at, const char *name, int n)
{
    evs_store *st = open_store(at, NULL);
    for (int i = 0; i < n; i++)
        cr_assert_eq(add(st, name, EVS_ID_AUTO, EVS_ID_MIN, NULL, "i", "x", NULL), 0);
    evs_close(st);
}

/* A backup, in dir/b (its path in out), of a store in dir/data whose stream "s" holds n
 * entries. */
static void backup_of(const char *dir, int n, char out[512])
{
    char data[512];
    path2(data, sizeof data, dir, "data");
    path2(out, 512, dir, "b");
    make_store(data, "s", n);
    evs_store *st = open_store(data, NULL);
    evs_backup_options bo = {.out = out};
    evs_backup_report rep;
    evs_error err;
    cr_assert_eq(evs_backup_store(st, "t", &bo, &rep, &err), 0, "%s", err.msg);
    evs_close(st);
}

Test(backup, restore_refuses_a_target_that_is_not_empty)
{
    char *dir = tmpdir_new();
    char out[512], rest[512], junk[600];
    backup_of(dir, 1, out);
    path2(rest, sizeof rest, dir, "r");
    evs_error err;
    mkdir(rest, 0755);
    path2(junk, sizeof junk, rest, "junk");
    fclose(fopen(junk, "w"));
    evs_restore_report rr;
    cr_assert_eq(evs_restore(out, rest, NULL, &rr, &err), EVS_EEXIST);
    cr_assert(access(junk, F_OK) == 0);
    rm_rf(dir);
    free(dir);
}

/* A backup is never written inside the folder of the store it backs up (backup.c B5): there,
 * down in log/ or index/ or at the top, however the path is spelled; beside it, in a folder
 * whose name merely starts with the store's, it is. */
Test(backup, a_backup_inside_its_stores_folder_is_refused)
{
    char *dir = tmpdir_new();
    char data[512], path[1100];
    path2(data, sizeof data, dir, "data");
    make_store(data, "s", 3);
    evs_store *st = open_store(data, NULL);
    const char *inside[] = {"%s/data/b", "%s/data/log/b", "%s/data/index/b/", "%s/data/log/../b",
                            "%s/data/./b"};
    for (size_t i = 0; i < sizeof inside / sizeof *inside; i++) {
        snprintf(path, sizeof path, inside[i], dir);
        evs_backup_options bo = {.out = path};
        evs_backup_report rep;
        evs_error err;
        cr_assert_eq(evs_backup_store(st, "t", &bo, &rep, &err), EVS_EINVAL, "%s taken", path);
        cr_assert(strstr(err.msg, "is inside the store folder"), "%s", err.msg);
        cr_assert_neq(access(path, F_OK), 0, "%s was created", path);
    }
    snprintf(path, sizeof path, "%s/data-b", dir);
    evs_backup_options bo = {.out = path};
    evs_backup_report rep;
    evs_error err;
    cr_assert_eq(evs_backup_store(st, "t", &bo, &rep, &err), 0, "%s", err.msg);
    evs_close(st);
    rm_rf(dir);
    free(dir);
}

/* A store in dir (256 KiB segments, retention only when asked) holding n entries of 1 KiB in
 * stream "s". */
static evs_store *open_filled(const char *dir, int n)
{
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 256 << 10;
    o.fsync = EVS_FSYNC_NO;
    o.retention_interval_ms = 3600 * 1000;
    evs_store *st = open_store(dir, &o);
    char v[1001];
    memset(v, 'v', 1000);
    v[1000] = 0;
    for (int i = 0; i < n; i++)
        cr_assert_eq(add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, NULL, "v", v, NULL), 0);
    return st;
}

/* Trim "s" to nothing, write 400 more entries, run retention: the segments deleted. */
static uint64_t trim_and_delete(evs_store *st)
{
    evs_error err;
    evs_trim t = {EVS_TRIM_MAXLEN, false, 0, EVS_ID_MIN, 0, 0};
    uint64_t removed;
    cr_assert_eq(evs_trim_stream(st, S("s"), &t, &removed, &err), 0, "%s", err.msg);
    for (int i = 0; i < 400; i++) /* the log goes on past the snapshot */
        cr_assert_eq(add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, NULL, "v", "more", NULL), 0);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    return rep.segments_deleted;
}

/* A snapshot's segments stay whole while retention deletes them from the store (the snapshot
 * holds them: include/evstore.h), also once the releaser has run. */
Test(backup, retention_deleting_a_snapshots_segments_leaves_its_bytes_whole, .timeout = 120)
{
    char *dir = tmpdir_new();
    evs_store *st = open_filled(dir, 2000);
    evs_snapshot *sn;
    evs_error err;
    cr_assert_eq(evs_snapshot_open(st, &sn, &err), 0, "%s", err.msg);
    const evs_snap_info *in = evs_snapshot_info(sn);
    uint8_t *before[64] = {0};
    cr_assert_lt(in->nfiles, 64);
    for (size_t i = 0; i < in->nfiles; i++) {
        before[i] = malloc(in->files[i].size + 1);
        cr_assert_eq(evs_snapshot_read(sn, i, 0, before[i], in->files[i].size, &err),
                     (long)in->files[i].size, "%s", err.msg);
    }
    cr_assert_gt(trim_and_delete(st), 3);
    usleep(500 * 1000); /* the releaser's first steps */
    uint8_t *now = malloc(1 << 20);
    for (size_t i = 0; i < in->nfiles; i++) {
        cr_assert_leq(in->files[i].size, 1 << 20);
        long got = evs_snapshot_read(sn, i, 0, now, in->files[i].size, &err);
        cr_assert_eq(got, (long)in->files[i].size, "%s: %ld of %lu bytes (%s)",
                     in->files[i].name, got, (unsigned long)in->files[i].size, err.msg);
        cr_assert(!memcmp(now, before[i], in->files[i].size), "%s changed", in->files[i].name);
        free(before[i]);
    }
    free(now);
    char logdir[600];
    path2(logdir, sizeof logdir, dir, "log");
    cr_assert_gt(files_ending(logdir, ".deleted"), 0, "kept while the snapshot holds them");
    evs_snapshot_close(sn); /* then the releaser gives their space back */
    for (int i = 0; i < 3000 && files_ending(logdir, ".deleted"); i++)
        usleep(10 * 1000);
    cr_assert_eq(files_ending(logdir, ".deleted"), 0);
    cr_assert_eq(evs_close(st), 0);
    rm_rf(dir);
    free(dir);
}

/* A lent segment file may outlive the store (a server answers its last clients after
 * evs_close): it stays whole, its release after the close is safe, and the next open gives
 * its space back. */
Test(backup, a_lent_file_of_a_deleted_segment_outlives_the_store, .timeout = 120)
{
    char *dir = tmpdir_new();
    evs_store *st = open_filled(dir, 1000);
    evs_snapshot *sn;
    evs_error err;
    cr_assert_eq(evs_snapshot_open(st, &sn, &err), 0, "%s", err.msg);
    const evs_snap_info *in = evs_snapshot_info(sn);
    size_t seg0 = 0;
    while (!in->files[seg0].segment)
        seg0++;
    uint64_t size = in->files[seg0].size;
    uint8_t *before = malloc(size), *after = malloc(size);
    cr_assert_eq(evs_snapshot_read(sn, seg0, 0, before, size, &err), (long)size);
    int fd;
    void *hold;
    cr_assert_eq(evs_snapshot_file_fd(sn, seg0, &fd, &hold, &err), 0, "%s", err.msg);
    evs_snapshot_close(sn);
    cr_assert_gt(trim_and_delete(st), 0);
    cr_assert_eq(evs_close(st), 0);
    cr_assert_eq(pread(fd, after, size, 0), (ssize_t)size);
    cr_assert(!memcmp(before, after, size), "the lent file changed");
    evs_snapshot_release(hold); /* after the close */
    char logdir[600];
    path2(logdir, sizeof logdir, dir, "log");
    cr_assert_gt(files_ending(logdir, ".deleted"), 0, "%d: left for the next open", files_ending(logdir, ".deleted"));
    st = open_filled(dir, 0);
    for (int i = 0; i < 3000 && files_ending(logdir, ".deleted"); i++)
        usleep(10 * 1000);
    cr_assert_eq(files_ending(logdir, ".deleted"), 0);
    cr_assert_eq(evs_close(st), 0);
    free(before);
    free(after);
    rm_rf(dir);
    free(dir);
}

/* snapshot.c P4: the whole pages of the index copy that evs_snapshot_read_once read are
 * dropped from the file (never written to disk), and only those; a plain read drops nothing.
 * (Mutation-checked: without the punch, the copy keeps its blocks and its bytes.) */
Test(backup, the_index_copys_pages_read_once_are_dropped, .timeout = 120)
{
    char *dir = tmpdir_new();
    evs_store *st = open_filled(dir, 3000);
    evs_snapshot *sn;
    evs_error err;
    cr_assert_eq(evs_snapshot_open(st, &sn, &err), 0, "%s", err.msg);
    const evs_snap_info *in = evs_snapshot_info(sn);
    size_t ix = 0;
    while (strcmp(in->files[ix].name, "index/data.mdb"))
        ix++;
    cr_assert(in->files[ix].read_once);
    for (size_t i = 0; i < in->nfiles; i++)
        cr_assert(i == ix || !in->files[i].read_once, "%s", in->files[i].name);
    uint64_t size = in->files[ix].size, half = size / 2 / 4096 * 4096;
    cr_assert_gt(half, 4 * 4096, "an index of %llu bytes", (unsigned long long)size);
    uint8_t *whole = malloc(size), *again = malloc(size), *got = malloc(size);
    cr_assert_eq(evs_snapshot_read(sn, ix, 0, whole, size, &err), (long)size);
    int fd;
    void *hold;
    cr_assert_eq(evs_snapshot_file_fd(sn, ix, &fd, &hold, &err), 0, "%s", err.msg);
    struct stat sb;
    cr_assert_eq(fstat(fd, &sb), 0);
    blkcnt_t blocks = sb.st_blocks; /* the copy's pages, written or not (ext4 counts both) */
    /* a plain read drops nothing */
    cr_assert_eq(evs_snapshot_read(sn, ix, 0, again, size, &err), (long)size);
    cr_assert(!memcmp(whole, again, size), "a plain read changed the copy");
    /* the first half, less a byte, read once: its bytes as they were, then every whole page
     * of it gone, the page it ends in kept */
    cr_assert_eq(evs_snapshot_read_once(sn, ix, 0, got, half - 1, &err), (long)(half - 1));
    cr_assert(!memcmp(whole, got, half - 1), "read_once returned other bytes");
    cr_assert_eq(evs_snapshot_read(sn, ix, 0, again, size, &err), (long)size);
    for (uint64_t i = 0; i < half - 4096; i++)
        cr_assert_eq(again[i], 0, "byte %llu of a dropped page", (unsigned long long)i);
    cr_assert(!memcmp(whole + half - 4096, again + half - 4096, size - half + 4096),
              "bytes from the range's last, partial page on changed");
    cr_assert_eq(fstat(fd, &sb), 0);
    if (blocks > 0) /* a file system that punches holes gives the blocks back */
        cr_assert_lt(sb.st_blocks, blocks, "blocks %lld, before %lld", (long long)sb.st_blocks,
                     (long long)blocks);
    evs_snapshot_release(hold);
    evs_snapshot_close(sn);
    cr_assert_eq(evs_close(st), 0);
    free(whole);
    free(again);
    free(got);
    rm_rf(dir);
    free(dir);
}

/* Entries of store `a` (old, in data) and `b` (new, data/.new-1) after a swap: data opens as
 * b and the aside folder as a. */
static void assert_swapped(const char *data, const char *aside)
{
    evs_store *st = open_store(data, NULL);
    cr_assert_eq(count(st, "b"), 5);
    cr_assert_eq(count(st, "a"), 0);
    evs_close(st);
    evs_options o;
    evs_options_init(&o);
    o.read_only = true;
    st = open_store(aside, &o);
    cr_assert_eq(count(st, "a"), 3);
    cr_assert_eq(count(st, "b"), 0);
    evs_close(st);
    char p[700];
    path2(p, sizeof p, aside, "SNAPSHOT");
    cr_assert(access(p, F_OK) == 0, "the old store's own files go with it");
    path2(p, sizeof p, data, "SWAP");
    cr_assert(access(p, F_OK) != 0);
    path2(p, sizeof p, data, ".new-1");
    cr_assert(access(p, F_OK) != 0);
}

/* A swap of stores (storage/swap.c) cut by a crash after any number of its moves is finished
 * by the next writable open: the folder opens as the new store, whole, and the old one is
 * whole in .replaced-<time>; a read-only open of a folder with an unfinished swap refuses.
 * The moves are made by hand in the order finish() makes them, from a journal as evs_swap_in
 * writes it; k = -1 runs evs_swap_in itself. (Mutation-checked: with step 2 moving the new
 * entry before the old one leaves, or step 1 moving the new store's names, this fails.) */
Test(swap, a_swap_cut_after_any_move_is_finished_by_the_next_open, .timeout = 120)
{
    char *dir = tmpdir_new();
    const char *names[] = {"EPOCHS", "STORE", "index", "index.ckpt", "log"};
    const size_t nn = sizeof names / sizeof names[0];
    for (int k = -1; k <= (int)(1 + 2 * nn); k++) {
        char data[512], fresh[600], aside[600], p[700], q[700], sub[32];
        snprintf(sub, sizeof sub, "d%d", k + 1);
        path2(data, sizeof data, dir, sub);
        path2(fresh, sizeof fresh, data, ".new-1");
        make_store(data, "a", 3);
        path2(p, sizeof p, data, "SNAPSHOT"); /* an entry only the old store has */
        FILE *f = fopen(p, "w");
        fputs("snapshot own 5\n", f);
        fclose(f);
        make_store(fresh, "b", 5);
        path2(p, sizeof p, fresh, "LOCK");
        cr_assert_eq(unlink(p), 0);
        DIR *d = opendir(fresh); /* the new store is made of exactly `names` */
        struct dirent *e;
        size_t seen = 0;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.')
                seen++;
        closedir(d);
        cr_assert_eq(seen, nn);
        evs_error err;
        if (k < 0) {
            cr_assert_eq(evs_swap_in(data, ".new-1", aside, sizeof aside, &err), 0, "%s",
                         err.msg);
            assert_swapped(data, aside);
            continue;
        }
        path2(aside, sizeof aside, data, ".replaced-1");
        path2(p, sizeof p, data, "SWAP");
        f = fopen(p, "w");
        fputs("evstore-swap 1\nnew .new-1\nold .replaced-1\n", f);
        for (size_t i = 0; i < nn; i++)
            fprintf(f, "%s\n", names[i]);
        fclose(f);
        cr_assert_eq(mkdir(aside, 0755), 0);
        int moves = 0; /* step 1: the old store's entry the new one lacks; step 2: each name */
        path2(p, sizeof p, data, "SNAPSHOT");
        path2(q, sizeof q, aside, "SNAPSHOT");
        if (moves++ < k)
            cr_assert_eq(rename(p, q), 0);
        for (size_t i = 0; i < nn; i++) {
            path2(p, sizeof p, data, names[i]);
            path2(q, sizeof q, aside, names[i]);
            if (moves++ < k)
                cr_assert_eq(rename(p, q), 0);
            path2(p, sizeof p, fresh, names[i]);
            path2(q, sizeof q, data, names[i]);
            if (moves++ < k)
                cr_assert_eq(rename(p, q), 0);
        }
        evs_options ro;
        evs_options_init(&ro);
        ro.read_only = true;
        evs_store *st = NULL;
        cr_assert_eq(evs_open(data, &ro, &st, &err), EVS_EINVAL, "k=%d: %s", k, err.msg);
        assert_swapped(data, aside);
        assert_swapped(data, aside); /* and it stays so */
    }
    rm_rf(dir);
    free(dir);
}

/* A restore that consumes its backup (a follower's copy) moves the backup's files into the
 * store instead of copying them: the store is whole, the backup's segments are gone from it;
 * without consume they stay. (Mutation-checked: with consume ignored, this fails.) */
Test(backup, a_consuming_restore_moves_the_backups_files)
{
    char *dir = tmpdir_new();
    char out[512], rest[512], seg[700];
    backup_of(dir, 100, out);
    evs_error err;
    path2(seg, sizeof seg, out, "log/00000000000000000000.seg");
    cr_assert(access(seg, F_OK) == 0);
    for (int consume = 0; consume < 2; consume++) {
        path2(rest, sizeof rest, dir, consume ? "r1" : "r0");
        evs_restore_options ro = {.consume = consume};
        evs_restore_report rr;
        cr_assert_eq(evs_restore(out, rest, &ro, &rr, &err), 0, "%s", err.msg);
        evs_store *st = open_store(rest, NULL);
        cr_assert_eq(count(st, "s"), 100);
        evs_close(st);
        cr_assert_eq(access(seg, F_OK) == 0, !consume, "consume=%d", consume);
    }
    rm_rf(dir);
    free(dir);
}

/* The pages an LMDB environment's trees use (every named table's and the main table's, plus
 * the two meta pages), and the pages its file holds up to its last one (the free ones too). */
static void index_pages(const char *data, size_t *live, size_t *held, unsigned *psize)
{
    char path[600];
    path2(path, sizeof path, data, "index");
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi main;
    MDB_cursor *cur;
    MDB_val k, v;
    cr_assert_eq(mdb_env_create(&env), 0);
    cr_assert_eq(mdb_env_set_maxdbs(env, 64), 0);
    cr_assert_eq(mdb_env_open(env, path, MDB_RDONLY, 0600), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, NULL, 0, &main), 0);
    MDB_stat ms;
    mdb_stat(txn, main, &ms);
    *psize = ms.ms_psize;
    *live = 2 + ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages;
    cr_assert_eq(mdb_cursor_open(txn, main, &cur), 0);
    while (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0) {
        char name[128];
        cr_assert_lt(k.mv_size, sizeof name);
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = '\0';
        MDB_dbi t;
        cr_assert_eq(mdb_dbi_open(txn, name, 0, &t), 0, "table %s", name);
        mdb_stat(txn, t, &ms);
        *live += ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages;
    }
    mdb_cursor_close(cur);
    MDB_envinfo info;
    mdb_env_info(env, &info);
    *held = info.me_last_pgno + 1;
    mdb_txn_abort(txn);
    mdb_env_close(env);
}

/* A backup's index copy holds the pages the index's trees use, not the free ones its file
 * carries from earlier commits (LMDB's compacted copy, snapshot.c; docs/backup.md "Limits"),
 * and the store restored from it reads through that index: a filtered read finds its
 * entries. (Mutation-checked: with a plain copy, the size check fails.) */
Test(backup, the_index_copy_leaves_the_free_pages_out, .timeout = 120)
{
    char *dir = tmpdir_new();
    char data[512], out[512], rest[512], copy[700];
    path2(data, sizeof data, dir, "data");
    path2(out, sizeof out, dir, "b");
    path2(rest, sizeof rest, dir, "r");
    /* index commits at every close, each copying the pages it changes: free pages behind */
    for (int round = 0; round < 20; round++) {
        evs_store *st = open_store(data, NULL);
        for (int i = 0; i < 100; i++) {
            char name[32], src[32];
            snprintf(name, sizeof name, "s%d", i % 10);
            snprintf(src, sizeof src, "agent-%d", (round * 100 + i) % 37);
            cr_assert_eq(add(st, name, EVS_ID_AUTO, EVS_ID_MIN, NULL, "source", src, "type",
                             i % 2 ? "odd" : "even", NULL), 0);
        }
        evs_close(st);
    }
    size_t live, held;
    unsigned psize;
    index_pages(data, &live, &held, &psize);
    cr_assert_gt(held, live + 8, "the store's index holds free pages (%zu of %zu live)", live,
                 held);
    evs_store *st = open_store(data, NULL);
    evs_backup_options bo = {.out = out};
    evs_backup_report rep;
    evs_error err;
    cr_assert_eq(evs_backup_store(st, "t", &bo, &rep, &err), 0, "%s", err.msg);
    evs_close(st);
    path2(copy, sizeof copy, out, "index/data.mdb");
    struct stat sb;
    cr_assert_eq(stat(copy, &sb), 0);
    cr_assert_leq((size_t)sb.st_size, live * psize, "copy %lld bytes, live pages %zu, held %zu",
                  (long long)sb.st_size, live, held);
    cr_assert_eq(evs_backup_verify(out, NULL, NULL, NULL, NULL), 0);
    evs_restore_report rr;
    cr_assert_eq(evs_restore(out, rest, NULL, &rr, &err), 0, "%s", err.msg);
    evs_store *r = open_store(rest, NULL);
    evs_query q;
    evs_query_init(&q);
    q.source = S("agent-5");
    size_t found = 0;
    for (int s = 0; s < 10; s++) {
        char name[32];
        snprintf(name, sizeof name, "s%d", s);
        evs_iter *it;
        cr_assert_eq(evs_iter_open(r, S(name), &q, &it, &err), 0, "%s", err.msg);
        const evs_entry *e;
        int rc;
        while ((rc = evs_iter_next(it, &e, &err)) == 1)
            found++;
        cr_assert_eq(rc, 0, "%s", err.msg);
        evs_iter_close(it);
    }
    /* sources cycle through 37 over 2,000 entries: agent-5 is 54 of them */
    cr_assert_eq(found, 54, "found %zu", found);
    cr_assert_eq(evs_verify(r, NULL, NULL), 0);
    evs_close(r);
    rm_rf(dir);
    free(dir);
}

/* A follower's copy of its leader has every record checked (restore.c R4): a record that
 * went bad before the backup client computed its CRCs passes the manifest's check, and a
 * plain restore copies it as the snapshot held it, but a follower's copy is refused, naming
 * the file and the byte offset, and leaves no target. (Mutation-checked: with R4's check
 * skipped, the follower's restore succeeds.) */
Test(backup, a_followers_copy_refuses_a_bad_record_its_manifest_vouched_for, .timeout = 120)
{
    char *dir = tmpdir_new();
    char data[512], out[512], plain[512], fol[512], seg[700];
    path2(data, sizeof data, dir, "data");
    path2(out, sizeof out, dir, "b");
    path2(plain, sizeof plain, dir, "plain");
    path2(fol, sizeof fol, dir, "fol");
    evs_store *st = open_filled(data, 1000); /* 256 KiB segments: the first one sealed */
    cr_assert_eq(evs_close(st), 0);
    path2(seg, sizeof seg, data, "log/00000000000000000000.seg");
    int fd = open(seg, O_RDWR);
    cr_assert_geq(fd, 0);
    uint8_t b;
    cr_assert_eq(pread(fd, &b, 1, 100000), 1); /* inside an entry's 1,000-byte value */
    b ^= 0x10;
    cr_assert_eq(pwrite(fd, &b, 1, 100000), 1);
    close(fd);
    evs_options o;
    evs_options_init(&o);
    o.retention_interval_ms = 3600 * 1000;
    st = open_store(data, &o);
    evs_backup_options bo = {.out = out};
    evs_backup_report rep;
    evs_error err;
    cr_assert_eq(evs_backup_store(st, "t", &bo, &rep, &err), 0, "%s", err.msg);
    evs_close(st);
    cr_assert_eq(evs_backup_verify(out, NULL, NULL, NULL, NULL), 0); /* its CRCs agree */
    evs_restore_report rr;
    cr_assert_eq(evs_restore(out, plain, NULL, &rr, &err), 0, "%s", err.msg);
    evs_restore_options ro = {.follower = true};
    int rc = evs_restore(out, fol, &ro, &rr, &err);
    cr_assert_eq(rc, EVS_ECORRUPT, "%d %s", rc, err.msg);
    cr_assert(strstr(err.msg, "log/00000000000000000000.seg: byte offset "), "%s", err.msg);
    cr_assert(access(fol, F_OK) != 0, "no target folder");
    rm_rf(dir);
    free(dir);
}
