/*
 * test_fault.c — faults injected through the file-I/O layer: fdatasync EIO, short writes,
 * ENOSPC on write and on segment preallocation. After each: no false acknowledgement, the
 * error is sticky, reads keep working, and the store reopens cleanly with every acknowledged
 * entry.
 */
#include "helpers.h"

#include <errno.h>

#include "fileio.h"

static char *dir;
static void setup(void) { dir = tmpdir_new(); fio_fault_reset(); }
static void teardown(void) { fio_fault_reset(); rm_rf(dir); free(dir); }
TestSuite(fault, .init = setup, .fini = teardown);

static evs_store *open_faulty(uint64_t segment_bytes)
{
    evs_options o;
    evs_options_init(&o);
    o.io = &fio_faulty;
    o.segment_bytes = segment_bytes ? segment_bytes : 1 << 20;
    return open_store(dir, &o);
}

/* For a test that counts the log's writes or syncs to its fault. The first index commit after
 * an open rewrites index.ckpt on the writer's thread (store.c K1): one more write and sync,
 * whenever the commit falls due. It is made to come first here (on a host with slower syncs
 * it fell among the appends and the ENOSPC hit it: acked 29, not 30). */
static evs_store *open_counted(void)
{
    evs_store *st = open_faulty(0);
    cr_assert_eq(add(st, "warm", EVS_ID_AUTO, EVS_ID_MIN, NULL, "v", "x", NULL), 0);
    evs_store_stats ss;
    for (int i = 0; i < 500; i++) {
        evs_store_stats_get(st, &ss);
        if (ss.index_end >= ss.log_end)
            break;
        usleep(10000);
    }
    cr_assert_geq(ss.index_end, ss.log_end, "the first index commit did not come");
    return st;
}

/* Append until failure; returns how many were acknowledged. */
static int append_until_failure(evs_store *st, int max, int *fail_rc)
{
    for (int i = 0; i < max; i++) {
        int rc = add(st, "s", EVS_ID_EXPLICIT, (evs_id){(uint64_t)i + 1, 0}, NULL, "v",
                     "payload-payload-payload", NULL);
        if (rc) {
            *fail_rc = rc;
            return i;
        }
    }
    *fail_rc = 0;
    return max;
}

static void check_after(int acked, evs_store *failed_store)
{
    /* sticky: the next append fails too, with the reason */
    evs_id out;
    cr_assert_eq(add(failed_store, "s", EVS_ID_AUTO, EVS_ID_MIN, &out, "v", "x", NULL), EVS_EFAILED);
    evs_error err;
    cr_assert_eq(evs_failed(failed_store, &err), EVS_EFAILED);
    cr_assert(strstr(err.msg, "refused") != NULL, "%s", err.msg);
    /* reads keep working and see exactly what was acknowledged */
    evs_id ids[512];
    cr_assert_eq(read_ids(failed_store, "s", NULL, ids, 512), acked);
    cr_assert_eq(evs_close(failed_store), EVS_EFAILED);
    fio_fault_reset();
    evs_store *st = open_store(dir, NULL);
    long n = read_ids(st, "s", NULL, ids, 512);
    /* the failed batch was never acknowledged; it may or may not have reached the disk */
    cr_assert(n == acked || n == acked + 1, "reopened with %ld entries, %d acknowledged", n, acked);
    for (long i = 0; i < n; i++)
        cr_assert_eq(ids[i].ms, (uint64_t)i + 1);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, NULL, "v", "after", NULL), 0);
    cr_assert_eq(evs_close(st), 0);
}

Test(fault, fdatasync_eio_is_sticky)
{
    evs_store *st = open_counted();
    fio_fault_arm(FIO_SYNC, 21, EIO, 0); /* the 21st sync from now fails */
    int rc;
    int acked = append_until_failure(st, 200, &rc);
    cr_assert_eq(rc, EVS_EFAILED);
    cr_assert_eq(acked, 20);
    check_after(acked, st);
}

Test(fault, short_write_then_error)
{
    evs_store *st = open_counted();
    fio_fault_arm(FIO_WRITE, 11, EIO, 1);
    int rc;
    int acked = append_until_failure(st, 200, &rc);
    cr_assert_eq(rc, EVS_EFAILED);
    cr_assert_eq(acked, 10);
    check_after(acked, st);
}

Test(fault, enospc_on_write)
{
    evs_store *st = open_counted();
    fio_fault_arm(FIO_WRITE, 31, ENOSPC, 0);
    int rc;
    int acked = append_until_failure(st, 200, &rc);
    cr_assert_eq(rc, EVS_EFAILED);
    cr_assert_eq(acked, 30);
    evs_error err;
    evs_failed(st, &err);
    cr_assert(strstr(err.msg, "No space left") != NULL, "%s", err.msg);
    check_after(acked, st);
}

Test(fault, enospc_preallocating_the_next_segment_refuses_without_failing)
{
    evs_store *st = open_faulty(8 * 1024);
    fio_fault_count_background(true); /* the preparer cannot make spares either */
    fio_fault_arm(FIO_ALLOC, 1, ENOSPC, 0); /* the next segment cannot be preallocated */
    int rc;
    int acked = append_until_failure(st, 2000, &rc);
    cr_assert_eq(rc, EVS_ENOSPACE, "%s", evs_strerror(rc));
    cr_assert_gt(acked, 10);
    /* nothing written, the store is not failed, and the refusal says why */
    evs_error err;
    cr_assert_eq(evs_failed(st, &err), 0);
    evs_id ids[2048];
    cr_assert_eq(read_ids(st, "s", NULL, ids, 2048), acked);
    evs_append a = {{"s", 1}, EVS_ID_EXPLICIT, {(uint64_t)acked + 1, 0},
                    (evs_field[]){{{"v", 1}, {"again", 5}}}, 1, false};
    cr_assert_eq(evs_append_one(st, &a, NULL, &err), EVS_ENOSPACE);
    cr_assert(strstr(err.msg, "No space left on device") && strstr(err.msg, "nothing was written"),
              "%s", err.msg);
    /* space returns: the same store takes the next append at once, then keeps going */
    fio_fault_reset();
    for (int i = 0; i < 100; i++) {
        a.id = (evs_id){(uint64_t)acked + 1 + (uint64_t)i, 0};
        cr_assert_eq(evs_append_one(st, &a, NULL, &err), 0, "%s", err.msg);
    }
    cr_assert_eq(read_ids(st, "s", NULL, ids, 2048), acked + 100);
    cr_assert_eq(evs_close(st), 0);
    st = open_store(dir, NULL);
    cr_assert_eq(read_ids(st, "s", NULL, ids, 2048), acked + 100);
    for (int i = 0; i < acked + 100; i++)
        cr_assert_eq(ids[i].ms, (uint64_t)i + 1);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* The space reserve (preparer.c P2, writer.c W11): on a full disk with the active segment
 * full, a trim still rolls (into the reserve) and retention still deletes; nothing but the
 * freeing requests may take the reserve, and ordinary writes wait for it to be made again. */
/* A retention pass whose declare cannot be written (the roll before it fails the store) must
 * not delete the segment holding the stream's create record: before, the declare request was
 * acknowledged with nothing written (no records left to flush), and the segment went. */
Test(fault, a_declare_the_store_failed_to_write_deletes_nothing)
{
    evs_store *st = open_faulty(8 * 1024);
    char logdir[512];
    snprintf(logdir, sizeof logdir, "%s/log", dir);
    int n = 0;
    while (files_ending(logdir, ".seg") < 4)
        cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){(uint64_t)++n, 0}, NULL, "v",
                         "payload-payload-payload", NULL), 0);
    int segs = files_ending(logdir, ".seg");
    evs_trim t = {.kind = EVS_TRIM_MAXLEN, .maxlen = 5};
    uint64_t removed = 0;
    evs_error err;
    cr_assert_eq(evs_trim_stream(st, S("s"), &t, &removed, &err), 0, "%s", err.msg);
    for (int i = 0; i < 60; i++) /* the active segment past half full: the declare must roll */
        cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){(uint64_t)++n, 0}, NULL, "v",
                         "payload-payload-payload", NULL), 0);
    segs = files_ending(logdir, ".seg");
    fio_fault_arm(FIO_SYNC, 1, EIO, 0); /* the roll's seal cannot be synced */
    evs_retention_report rep;
    cr_assert_neq(evs_retention_run(st, &rep, &err), 0);
    cr_assert_eq(rep.segments_deleted, 0);
    cr_assert_eq(files_ending(logdir, ".seg"), segs);
    cr_assert_eq(evs_failed(st, &err), EVS_EFAILED);
    evs_close(st);
    fio_fault_reset();
    rm_index(dir); /* what the log alone says: the stream, from its create record */
    st = open_store(dir, NULL);
    evs_id ids[128];
    cr_assert_eq(read_ids(st, "s", NULL, ids, 128), 65);
    cr_assert_eq(ids[64].ms, (uint64_t)n);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
}

Test(fault, a_trim_on_a_full_disk_frees_space_through_the_reserve)
{
    evs_store *st = open_faulty(8 * 1024);
    char logdir[512], reserve[600];
    snprintf(logdir, sizeof logdir, "%s/log", dir);
    snprintf(reserve, sizeof reserve, "%s/reserve.seg.tmp", logdir);
    cr_assert_eq(access(reserve, F_OK), 0, "no space reserve made at open");
    int rc = 0, acked = 0;
    for (; acked < 4000 && !rc; acked += !rc) {
        if (acked == 300) { /* several segments in: from here no file gets new blocks */
            fio_fault_count_background(true);
            fio_fault_arm(FIO_ALLOC, 1, ENOSPC, 0);
        }
        rc = add(st, "s", EVS_ID_EXPLICIT, (evs_id){(uint64_t)acked + 1, 0}, NULL, "v",
                 "payload-payload-payload", NULL);
    }
    cr_assert_eq(rc, EVS_ENOSPACE, "%s", evs_strerror(rc));
    int segs = files_ending(logdir, ".seg");
    cr_assert_geq(segs, 4);
    /* the active segment is full: a set-ID is refused, not written past the file's blocks */
    evs_error err;
    cr_assert_eq(evs_stream_setid(st, S("s"), (evs_id){(uint64_t)acked + 10, 0}, NULL, NULL,
                                  &err), EVS_ENOSPACE, "%s", err.msg);
    cr_assert_eq(evs_failed(st, &err), 0);
    /* a trim may take the reserve; retention then deletes what the trim freed */
    evs_trim t = {.kind = EVS_TRIM_MAXLEN, .maxlen = 5};
    uint64_t removed = 0;
    cr_assert_eq(evs_trim_stream(st, S("s"), &t, &removed, &err), 0, "%s", err.msg);
    cr_assert_eq(removed, (uint64_t)acked - 5);
    cr_assert_neq(access(reserve, F_OK), 0, "the trim did not need the reserve");
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_leq(files_ending(logdir, ".seg"), 2, "%d segments left of %d",
                  files_ending(logdir, ".seg"), segs);
    /* ordinary writes wait for the reserve to be made again */
    evs_append a = {{"s", 1}, EVS_ID_EXPLICIT, {(uint64_t)acked + 1, 0},
                    (evs_field[]){{{"v", 1}, {"again", 5}}}, 1, false};
    cr_assert_eq(evs_append_one(st, &a, NULL, &err), EVS_ENOSPACE);
    cr_assert(strstr(err.msg, "space reserve"), "%s", err.msg);
    fio_fault_reset(); /* the space retention freed, seen by the file system */
    cr_assert_eq(evs_append_one(st, &a, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(access(reserve, F_OK), 0, "the reserve was not made again");
    cr_assert_eq(evs_failed(st, &err), 0);
    cr_assert_eq(evs_close(st), 0);
    st = open_store(dir, NULL);
    evs_id ids[16];
    cr_assert_eq(read_ids(st, "s", NULL, ids, 16), 6);
    cr_assert_eq(ids[0].ms, (uint64_t)acked - 4);
    cr_assert_eq(ids[5].ms, (uint64_t)acked + 1);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
}
