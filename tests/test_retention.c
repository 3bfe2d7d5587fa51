/* test_retention.c — retention through the embedded API: trims by count, bytes and age; whole
 * segments deleted once no stream needs them, never the active one's unexpired data; streams
 * and groups created in a deleted segment survive a reopen and an index rebuild; index keys
 * below a stream's first entry cleaned; sealing for age, and the releaser's paced cuts; small
 * streams that alone keep old segments relocated to the head, readers unaffected. */
#include <lmdb.h>

#include "index.h"
#include "internal.h" /* the index tables, to count what the clean-up leaves */
#include "postings.h"

#include "helpers.h"

#include <dirent.h>
#include <fcntl.h>
#include <time.h>

static char *dir;
static void setup(void) { dir = tmpdir_new(); }
static void teardown(void) { rm_rf(dir); free(dir); }
TestSuite(retention, .init = setup, .fini = teardown);

static void fail_on_error(void *arg, int level, const char *msg)
{
    (void)arg;
    if (level <= EVS_LOG_ERROR)
        cr_assert_fail("store logged an error: %s", msg);
}

/* Retention runs only when the test says so (the thread's interval is an hour). */
static evs_store *open_ret(const evs_retention *dflt)
{
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 1 << 20;
    o.retention_interval_ms = 3600 * 1000;
    o.log = fail_on_error;
    if (dflt)
        o.retention = *dflt;
    return open_store(dir, &o);
}

static void fill(evs_store *st, const char *name, int n, size_t value_bytes)
{
    char *v = malloc(value_bytes + 1);
    memset(v, 'x', value_bytes);
    v[value_bytes] = 0;
    for (int i = 0; i < n; i++)
        cr_assert_eq(add(st, name, EVS_ID_AUTO, EVS_ID_MIN, NULL, "v", v, NULL), 0);
    free(v);
}

/* n streams named by fmt (with %04d), one entry each: field "v", a value of value_bytes. */
static void one_entry_streams(evs_store *st, const char *fmt, int n, size_t value_bytes)
{
    char name[64], *v = malloc(value_bytes + 1);
    memset(v, 'v', value_bytes);
    v[value_bytes] = 0;
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, fmt, i);
        cr_assert_eq(add(st, name, EVS_ID_AUTO, EVS_ID_MIN, NULL, "v", v, NULL), 0);
    }
    free(v);
}

/* A stream "busy" whose entries expire after 1 ms: filled after it, it makes the old segments
 * that only a small stream's live entries keep (the relocation tests). */
static void busy_expiring(evs_store *st)
{
    evs_retention age = {1, 0, 0};
    evs_error err;
    fill(st, "busy", 1, 10);
    cr_assert_eq(evs_retention_set(st, S("busy"), &age, &err), 0, "%s", err.msg);
}

static int count_files(const char *suffix)
{
    char p[600];
    snprintf(p, sizeof p, "%s/log", dir);
    return files_ending(p, suffix);
}

static uint64_t len_of(evs_store *st, const char *s)
{
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(st, S(s), &info), 0);
    return info.length;
}

static long verify_quiet(evs_store *st)
{
    return verify_print(st);
}

Test(retention, count_and_bytes_trim_exactly_and_persist)
{
    evs_retention dflt = {0, 0, 50};
    evs_store *st = open_ret(&dflt);
    fill(st, "a", 120, 10);
    fill(st, "b", 120, 100);
    evs_retention own = {0, 4000, EVS_RET_NONE}; /* b: bytes only, no count limit */
    evs_error err;
    cr_assert_eq(evs_retention_set(st, S("b"), &own, &err), 0);
    cr_assert_eq(evs_retention_set(st, S("nope"), &own, &err), EVS_ENOTFOUND);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0);
    cr_assert_eq(len_of(st, "a"), 50);
    uint64_t lb = len_of(st, "b");
    cr_assert(lb > 10 && lb < 50, "b kept %lu entries for 4000 bytes", (unsigned long)lb);
    cr_assert_eq(rep.trimmed, 70 + (120 - lb));
    evs_retention got, eff;
    cr_assert_eq(evs_retention_get(st, S("b"), &got, &eff), 0);
    cr_assert_eq(got.max_bytes, 4000);
    cr_assert_eq(eff.max_entries, 0); /* EVS_RET_NONE: no limit, not the default */
    cr_assert_eq(evs_close(st), 0);
    rm_index(dir); /* the override is in the log: a rebuild finds it */
    st = open_ret(&dflt);
    cr_assert_eq(evs_retention_get(st, S("b"), &got, &eff), 0);
    cr_assert_eq(got.max_bytes, 4000);
    cr_assert_eq(len_of(st, "b"), lb);
    cr_assert_eq(verify_quiet(st), 0);
    cr_assert_eq(evs_close(st), 0);
}

struct one_pending {
    evs_pending_info pi;
    size_t n;
};

/* XGROUP CREATE stream group 0 [MKSTREAM]. */
static void group_create(evs_store *st, const char *name, const char *group, bool mkstream)
{
    evs_group_op op;
    evs_group_op_init(&op, EVS_GROUP_CREATE);
    op.stream = S(name);
    op.group = S(group);
    op.id = EVS_ID_MIN;
    op.mkstream = mkstream;
    evs_group_result res;
    evs_id *none = NULL;
    evs_error err;
    cr_assert_eq(evs_group_run(st, &op, &res, &none, &err), 0, "%s", err.msg);
    free(none);
}

static int keep_pending(void *arg, const evs_pending_info *p)
{
    struct one_pending *x = arg;
    x->pi = *p;
    x->n++;
    return 0;
}

Test(retention, age_deletes_old_segments_keeps_needed_ones_and_rebuilds)
{
    evs_store *st = open_ret(NULL);
    evs_error err;
    /* "meta" and its group are created in the first segment; it keeps only its last entry */
    fill(st, "meta", 3, 10);
    evs_retention one = {0, 0, 1};
    cr_assert_eq(evs_retention_set(st, S("meta"), &one, &err), 0);
    group_create(st, "meta", "g", false);
    evs_group_result res;
    evs_id *ids;
    evs_group_op rd;
    evs_group_op_init(&rd, EVS_GROUP_READ);
    rd.stream = S("meta");
    rd.group = S("g");
    rd.consumer = S("c");
    rd.new_only = true;
    rd.count = 1;
    cr_assert_eq(evs_group_run(st, &rd, &res, &ids, &err), 0);
    evs_id pending = ids[0];
    free(ids);
    /* "old": 3 MiB of entries, expiring by age */
    evs_retention age = {1, 0, 0}; /* 1 ms */
    fill(st, "old", 1, 10);
    cr_assert_eq(evs_retention_set(st, S("old"), &age, &err), 0);
    fill(st, "old", 3000, 1000);
    fill(st, "meta", 1, 10); /* meta's live entry moves to the head */
    evs_store_stats s0;
    evs_store_stats_get(st, &s0);
    cr_assert(s0.segments >= 4, "%lu segments", (unsigned long)s0.segments);
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0);
    cr_assert_eq(len_of(st, "old"), 0);
    cr_assert_eq(len_of(st, "meta"), 1);
    cr_assert(rep.segments_deleted >= s0.segments - 2, "deleted %lu of %lu",
              (unsigned long)rep.segments_deleted, (unsigned long)s0.segments);
    evs_store_stats s1;
    evs_store_stats_get(st, &s1);
    cr_assert_gt(s1.log_start, 0);
    /* the deleted files' space goes back in the background (releaser.c), then the files */
    for (int i = 0; i < 3000 && count_files(".deleted"); i++)
        nanosleep(&(struct timespec){0, 10 * 1000000}, NULL);
    cr_assert_eq(count_files(".deleted"), 0);
    cr_assert_eq(verify_quiet(st), 0);
    /* the group still holds its pending entry (now trimmed: XCLAIM drops it) */
    char before[256];
    evs_stream_info mi;
    cr_assert_eq(evs_stream_info_get(st, S("meta"), &mi), 0);
    snprintf(before, sizeof before, "%lu %lu %lu-%lu", (unsigned long)mi.length,
             (unsigned long)mi.entries_added, (unsigned long)mi.last_id.ms,
             (unsigned long)mi.last_id.seq);
    for (int round = 0; round < 2; round++) {
        cr_assert_eq(evs_close(st), 0);
        if (round == 1)
            rm_index(dir);
        st = open_ret(NULL);
        char after[256];
        cr_assert_eq(evs_stream_info_get(st, S("meta"), &mi), 0);
        snprintf(after, sizeof after, "%lu %lu %lu-%lu", (unsigned long)mi.length,
                 (unsigned long)mi.entries_added, (unsigned long)mi.last_id.ms,
                 (unsigned long)mi.last_id.seq);
        cr_assert_str_eq(after, before, "round %d", round);
        evs_retention got;
        cr_assert_eq(evs_retention_get(st, S("meta"), &got, NULL), 0);
        cr_assert_eq(got.max_entries, 1);
        cr_assert_eq(evs_retention_get(st, S("old"), &got, NULL), 0);
        cr_assert_eq(got.max_age_ms, 1);
        struct one_pending c = {{EVS_ID_MIN, {NULL, 0}, 0, 0}, 0};
        cr_assert_eq(evs_pending_list(st, S("meta"), S("g"), EVS_ID_MIN, EVS_ID_MAX, 0, 0,
                                      (evs_slice){NULL, 0}, keep_pending, &c),
                     0);
        cr_assert_eq(c.n, 1, "round %d", round);
        cr_assert_eq(evs_id_cmp(c.pi.id, pending), 0);
        cr_assert_eq(verify_quiet(st), 0);
    }
    /* appends go on after all this */
    fill(st, "meta", 1, 10);
    cr_assert_eq(evs_close(st), 0);
}

Test(retention, active_segment_rolls_by_age_and_unexpired_data_stays)
{
    evs_retention dflt = {200, 0, 0}; /* 200 ms */
    evs_store *st = open_ret(&dflt);
    evs_error err;
    fill(st, "s", 10, 100);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0);
    cr_assert_eq(len_of(st, "s"), 10); /* young: nothing goes, the active segment stays */
    cr_assert_eq(rep.segments_deleted, 0);
    struct timespec ts = {0, 300 * 1000000};
    nanosleep(&ts, NULL);
    fill(st, "s", 2, 100); /* young entries in the same (active) segment as the old ones */
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0);
    cr_assert_eq(len_of(st, "s"), 2);
    evs_store_stats s;
    evs_store_stats_get(st, &s);
    uint64_t segs = s.segments;
    /* the active segment was sealed for its age; it holds live entries: it stays */
    cr_assert_eq(rep.segments_deleted, 0);
    nanosleep(&ts, NULL);
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0);
    cr_assert_eq(len_of(st, "s"), 0);
    cr_assert_geq(rep.segments_deleted, 1);
    evs_store_stats_get(st, &s);
    cr_assert_leq(s.segments, segs);
    cr_assert_eq(verify_quiet(st), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* Size of the first segment file (log/<20 zeros>.seg). */
static long first_seg_size(void)
{
    char p[600];
    snprintf(p, sizeof p, "%s/log/00000000000000000000.seg", dir);
    struct stat sb;
    return stat(p, &sb) == 0 ? (long)sb.st_size : -1;
}

Test(retention, age_roll_waits_for_streams_without_an_age_limit)
{
    evs_store *st = open_ret(NULL);
    evs_error err;
    evs_retention own = {100, 0, 0}; /* "old" expires after 100 ms, "keep" never */
    fill(st, "old", 5, 100);
    fill(st, "keep", 5, 100);
    cr_assert_eq(evs_retention_set(st, S("old"), &own, &err), 0, "%s", err.msg);
    struct timespec ts = {0, 200 * 1000000};
    nanosleep(&ts, NULL);
    evs_store_stats s;
    evs_store_stats_get(st, &s);
    uint64_t segs = s.segments;
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0);
    cr_assert_eq(len_of(st, "old"), 0);
    cr_assert_eq(len_of(st, "keep"), 5);
    /* "keep" pins the active segment: sealing it would free nothing, only start another */
    evs_store_stats_get(st, &s);
    cr_assert_eq(s.segments, segs);
    cr_assert_eq(evs_close(st), 0);
}

Test(retention, a_sealed_segment_is_cut_to_its_records_off_the_writer)
{
    evs_retention dflt = {100, 0, 0};
    evs_store *st = open_ret(&dflt);
    evs_error err;
    fill(st, "s", 10, 100);
    cr_assert_eq(first_seg_size(), 1 << 20); /* preallocated */
    struct timespec ts = {0, 200 * 1000000};
    nanosleep(&ts, NULL);
    fill(st, "s", 2, 100); /* young: the sealed segment stays */
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0); /* seals the first segment for its age */
    cr_assert_eq(len_of(st, "s"), 2);
    long size = first_seg_size();
    for (int i = 0; i < 500 && size == 1 << 20; i++) { /* the preparer's thread cuts it */
        struct timespec p = {0, 10 * 1000000};
        nanosleep(&p, NULL);
        size = first_seg_size();
    }
    cr_assert(size > 0 && size < 16384, "sealed segment still %ld bytes", size);
    cr_assert_eq(verify_quiet(st), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* L3/L4 (releaser.c): a deleted segment's file whose space was not all given back when the store
 * closed stays `.deleted` (closing does not wait for a paced release); the next open gives it
 * back and removes it. */
Test(retention, a_deleted_file_left_at_close_is_released_after_the_next_open)
{
    evs_store *st = open_ret(NULL);
    fill(st, "s", 3, 10);
    cr_assert_eq(evs_close(st), 0);
    char p[600];
    snprintf(p, sizeof p, "%s/log/00000000000000999999.seg.deleted", dir);
    int fd = open(p, O_WRONLY | O_CREAT, 0644);
    cr_assert_geq(fd, 0);
    cr_assert_eq(posix_fallocate(fd, 0, 200 << 20), 0); /* 25 paced steps */
    close(fd);
    st = open_ret(NULL);
    cr_assert_eq(evs_close(st), 0); /* at once: the release had no time to finish */
    struct stat sb;
    cr_assert_eq(stat(p, &sb), 0, "the .deleted file is gone already");
    cr_assert_gt(sb.st_size, 0);
    st = open_ret(NULL);
    for (int i = 0; i < 3000 && stat(p, &sb) == 0; i++)
        nanosleep(&(struct timespec){0, 10 * 1000000}, NULL);
    cr_assert_neq(stat(p, &sb), 0, "still there after 30 s");
    cr_assert_eq(len_of(st, "s"), 3);
    cr_assert_eq(evs_close(st), 0);
}

/* Keys of table t, and how many name only entries below `first` (a filter group: all of its
 * entries; ids, tombstones: the key's ID; times: the value's ID). */
static long keys_below(evs_store *st, enum idx_table t, evs_id first, long *total)
{
    idx_rtxn *r;
    cr_assert_eq(idx_rbegin(st->idx, &r), 0);
    idx_cur *c;
    cr_assert_eq(idx_cur_open(r, t, &c), 0);
    long below = 0, n = 0;
    const void *k, *v;
    size_t kl, vl;
    for (int rc = idx_cur_get(c, IDX_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == 0;
         rc = idx_cur_get(c, IDX_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
        n++;
        evs_id id = EVS_ID_MAX;
        if (t == IDX_FILT) {
            post_iter pi;
            post_iter_init(&pi, v, vl);
            evs_id e;
            uint64_t pos;
            while (post_next(&pi, &e, &pos))
                id = e;
        } else if (t == IDX_TIMES) {
            id = (evs_id){idx_rd64(v), idx_rd64((const uint8_t *)v + 8)};
        } else {
            id = (evs_id){idx_rd64((const uint8_t *)k + 4), idx_rd64((const uint8_t *)k + 12)};
        }
        below += evs_id_cmp(id, first) < 0;
    }
    idx_cur_close(c);
    idx_rend(r);
    if (total)
        *total = n;
    return below;
}

/* The first entry's ms of the only filter key of source "early" (-1: not exactly one key). */
static long early_keys_first_ms(evs_store *st)
{
    idx_rtxn *r;
    cr_assert_eq(idx_rbegin(st->idx, &r), 0);
    idx_cur *c;
    cr_assert_eq(idx_cur_open(r, IDX_FILT, &c), 0);
    uint64_t h = idx_value_hash("early", 5);
    long n = 0, ms = -1;
    const void *k, *v;
    size_t kl, vl;
    for (int rc = idx_cur_get(c, IDX_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == 0;
         rc = idx_cur_get(c, IDX_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
        const uint8_t *kk = k;
        if (kl == IDX_FILTKEY && kk[4] == IDX_FIELD_SOURCE && idx_rd64(kk + 5) == h) {
            n++;
            ms = (long)idx_rd64(kk + 13);
        }
    }
    idx_cur_close(c);
    idx_rend(r);
    return n == 1 ? ms : -1;
}

static const char *const sources[] = {"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"};

/* Entries of "s" matching the query, checked against the expected ms values. */
static void expect_reads(evs_store *st, const evs_query *q, int from, int to, int mod, int rem)
{
    evs_id got[20000];
    long n = read_ids(st, "s", q, got, 20000);
    long k = 0;
    for (int i = from; i <= to; i++)
        if (mod == 0 || i % mod == rem) {
            cr_assert_lt(k, n, "entry %d missing", i);
            cr_assert_eq(got[k].ms, (uint64_t)i, "entry %ld: %lu, expected %d", k,
                         (unsigned long)got[k].ms, i);
            k++;
        }
    cr_assert_eq(n, k);
}

/* R6: once retention has trimmed and deleted, the index keeps no key that names only entries
 * below the stream's first one (but the floor of ids and times), and every read — full, by
 * source, by type, from a time, after a reopen and after an index rebuild — is exact. P4: an
 * open filter group whose entries all went is closed, not put back by the next commit. */
Test(retention, index_keys_below_the_first_entry_go_and_reads_stay_exact)
{
    evs_store *st = open_ret(NULL);
    evs_error err;
    char v[201];
    memset(v, 'x', 200);
    v[200] = 0;
    for (int i = 1; i <= 12000; i++)
        cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){(uint64_t)i, 0}, NULL, "source",
                         i <= 5 ? "early" : sources[i % 8], "type", i % 2 ? "a" : "b", "v", v,
                         NULL), 0);
    evs_id first = {11001, 0};
    long ids0, filt0;
    keys_below(st, IDX_IDS, first, &ids0);
    keys_below(st, IDX_FILT, first, &filt0);
    evs_retention keep = {0, 0, 1000};
    cr_assert_eq(evs_retention_set(st, S("s"), &keep, &err), 0, "%s", err.msg);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.trimmed, 11000);
    cr_assert_geq(rep.segments_deleted, 1);
    cr_assert_gt(rep.index_keys_deleted, 0);
    /* the next commit (10 ms at most): then nothing below the first entry is left */
    long ids = 0, filt = 0;
    for (int i = 0; i < 200 && keys_below(st, IDX_IDS, first, &ids) > 1; i++)
        nanosleep(&(struct timespec){0, 10 * 1000000}, NULL);
    cr_assert_leq(keys_below(st, IDX_IDS, first, &ids), 1, "ids keys below the first entry");
    cr_assert_leq(keys_below(st, IDX_TIMES, first, NULL), 1);
    cr_assert_eq(keys_below(st, IDX_FILT, first, &filt), 0);
    cr_assert_lt(ids * 5, ids0, "%ld ids keys left of %ld", ids, ids0);
    cr_assert_lt(filt, filt0, "%ld filter keys left of %ld", filt, filt0);
    /* P4: "early" was an open group of dead entries; a new one starts a new key */
    cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){12001, 0}, NULL, "source", "early",
                     "type", "a", "v", v, NULL), 0);
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0); /* trims one: another clean-up */
    nanosleep(&(struct timespec){0, 50 * 1000000}, NULL);
    first = (evs_id){11002, 0};
    cr_assert_eq(keys_below(st, IDX_FILT, first, NULL), 0);
    cr_assert_eq(early_keys_first_ms(st), 12001, "the dead group was put back with the new entry");
    for (int round = 0; round < 3; round++) {
        if (round) {
            cr_assert_eq(evs_close(st), 0);
            if (round == 2)
                rm_index(dir);
            st = open_ret(NULL);
        }
        evs_query q;
        evs_query_init(&q);
        expect_reads(st, &q, 11002, 12001, 0, 0);
        evs_query_init(&q);
        q.type = S("a");
        expect_reads(st, &q, 11002, 12001, 2, 1);
        evs_query_init(&q);
        q.source = S("s3");
        expect_reads(st, &q, 11002, 12000, 8, 3);
        evs_query_init(&q);
        q.source = S("early");
        expect_reads(st, &q, 12001, 12001, 0, 0);
        evs_query_init(&q);
        q.reverse = true;
        q.type = S("b");
        evs_id got[1000];
        long n = read_ids(st, "s", &q, got, 1000);
        cr_assert_eq(n, 500, "round %d", round);
        cr_assert_eq(got[0].ms, 12000);
        cr_assert_eq(verify_quiet(st), 0, "round %d", round);
    }
    cr_assert_eq(evs_close(st), 0);
}

/* A stream whose create record and live entries share the first segment is relocated, and
 * that segment deleted, in one pass: its declare record (written before the deletion) comes
 * after its copies in the log. An index rebuilt from that log meets the copies of a stream it
 * knows only from the declare ahead; it used to refuse them ("moved entry out of place") and
 * lose the stream's entries from the index. */
Test(retention, a_rebuild_meets_a_relocation_before_the_streams_first_declare)
{
    evs_store *st = open_ret(NULL);
    evs_error err;
    evs_retention two = {0, 0, 2};
    evs_id ids[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(add(st, "first", EVS_ID_AUTO, EVS_ID_MIN, &ids[i], "type", "t", "n",
                         i ? "1" : "0", NULL), 0);
    cr_assert_eq(evs_retention_set(st, S("first"), &two, &err), 0, "%s", err.msg);
    busy_expiring(st);
    for (int i = 0; i < 4; i++)
        fill(st, "busy", 300, 1000);
    nanosleep(&(struct timespec){0, 20 * 1000000}, NULL);
    char *before = read_all(st, "first", NULL);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.streams_relocated, 1, "relocated %lu", (unsigned long)rep.streams_relocated);
    cr_assert_geq(rep.segments_deleted, 1);
    for (int round = 0; round < 2; round++) {
        cr_assert_eq(evs_close(st), 0);
        if (round == 1)
            rm_index(dir);
        st = open_ret(NULL); /* fail_on_error: a rebuild that refuses a copy fails here */
        char *after = read_all(st, "first", NULL);
        cr_assert_str_eq(after, before, "%s", round ? "after a rebuild" : "after a reopen");
        free(after);
        cr_assert_eq(len_of(st, "first"), 2);
        cr_assert_eq(verify_quiet(st), 0);
    }
    /* appends go on after the copies */
    cr_assert_eq(add(st, "first", EVS_ID_AUTO, EVS_ID_MIN, NULL, "n", "2", NULL), 0);
    cr_assert_eq(len_of(st, "first"), 3);
    free(before);
    cr_assert_eq(evs_close(st), 0);
}

/* The reads the relocation test compares: forward, reverse, by type, by source reversed, by
 * time, and a range from the middle. */
#define NREADS 6
static void reads_of(evs_store *st, const char *name, uint64_t mid_time, evs_id mid,
                     char *out[NREADS])
{
    evs_query q[NREADS];
    for (int i = 0; i < NREADS; i++)
        evs_query_init(&q[i]);
    q[1].reverse = true;
    q[2].type = S("t1");
    q[3].source = S("s0");
    q[3].reverse = true;
    q[4].min_time_us = mid_time;
    q[5].start = mid;
    q[5].limit = 3;
    for (int i = 0; i < NREADS; i++)
        out[i] = read_all(st, name, &q[i]);
}

static void reads_same(char *a[NREADS], char *b[NREADS], const char *when)
{
    for (int i = 0; i < NREADS; i++) {
        cr_assert_str_eq(b[i], a[i], "read %d %s", i, when);
        free(b[i]);
    }
}

Test(retention, a_small_stream_pinning_old_segments_is_relocated_and_reads_stay_exact)
{
    evs_store *st = open_ret(NULL);
    evs_error err;
    /* "rare": written now and then, keeps its last 6; its entries end up in the oldest
     * segments, among a busy stream's that expire after 1 ms */
    evs_retention six = {0, 0, 6};
    busy_expiring(st);
    char t[8], src[8];
    evs_id ids[12];
    uint64_t mid_time = 0;
    for (int i = 0; i < 12; i++) {
        snprintf(t, sizeof t, "t%d", i % 3);
        snprintf(src, sizeof src, "s%d", i % 2);
        cr_assert_eq(add(st, "rare", EVS_ID_AUTO, EVS_ID_MIN, &ids[i], "source", src, "type", t,
                         "n", i % 2 ? "odd" : "even", NULL), 0);
        if (i == 8)
            mid_time = evs_now_us();
        fill(st, "busy", 300, 1000);
    }
    cr_assert_eq(evs_retention_set(st, S("rare"), &six, &err), 0);
    size_t nd = 0;
    cr_assert_eq(evs_delete(st, S("rare"), &ids[9], 1, &nd, &err), 0); /* a tombstone too */
    cr_assert_eq(nd, 1);
    /* a group with a pending entry */
    group_create(st, "rare", "g", false);
    evs_group_result res;
    evs_id *got;
    evs_trim trim = {EVS_TRIM_MAXLEN, false, 6, EVS_ID_MIN, 0, 0};
    uint64_t removed = 0;
    cr_assert_eq(evs_trim_stream(st, S("rare"), &trim, &removed, &err), 0, "%s", err.msg);
    cr_assert_eq(len_of(st, "rare"), 6); /* the last 6 live ones (the 10th is deleted) */
    char *before[NREADS], *after[NREADS];
    evs_id mid = ids[7];
    reads_of(st, "rare", mid_time, mid, before); /* before anything moved */
    cr_assert(strstr(before[0], "n=odd"), "%s", before[0]);
    cr_assert(strstr(before[2], "type=t1"), "%s", before[2]);
    size_t semis = 0; /* by time: the 11th and 12th only */
    for (const char *c = before[4]; *c; c++)
        semis += *c == ';';
    cr_assert_eq(semis, 2, "%s", before[4]);
    evs_store_stats s0;
    evs_store_stats_get(st, &s0);
    cr_assert_geq(s0.segments, 4);
    nanosleep(&(struct timespec){0, 20 * 1000000}, NULL);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    reads_of(st, "rare", mid_time, mid, after);
    reads_same(before, after, "after the relocation");
    cr_assert_eq(rep.streams_relocated, 1, "relocated %lu", (unsigned long)rep.streams_relocated);
    cr_assert_geq(rep.segments_deleted, s0.segments - 2, "deleted %lu of %lu",
                  (unsigned long)rep.segments_deleted, (unsigned long)s0.segments);
    evs_store_stats s1;
    evs_store_stats_get(st, &s1);
    cr_assert_eq(s1.streams_relocated, 1);
    cr_assert_gt(s1.bytes_relocated, 0);
    cr_assert_eq(verify_quiet(st), 0);
    /* a second pass has nothing to move: the copies are at the head */
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.streams_relocated, 0);
    /* reopen, then rebuild the index from the log: the same reads */
    for (int round = 0; round < 2; round++) {
        cr_assert_eq(evs_close(st), 0);
        if (round == 1)
            rm_index(dir);
        st = open_ret(NULL);
        reads_of(st, "rare", mid_time, mid, after);
        reads_same(before, after, round ? "after a rebuild" : "after a reopen");
        cr_assert_eq(verify_quiet(st), 0);
        struct one_pending c = {{EVS_ID_MIN, {NULL, 0}, 0, 0}, 0};
        cr_assert_eq(evs_pending_list(st, S("rare"), S("g"), EVS_ID_MIN, EVS_ID_MAX, 0, 0,
                                      (evs_slice){NULL, 0}, keep_pending, &c), 0);
        cr_assert_eq(c.n, 0);
    }
    /* appends go on from the copies; the limit still trims them */
    evs_group_op rd;
    evs_group_op_init(&rd, EVS_GROUP_READ);
    rd.stream = S("rare");
    rd.group = S("g");
    rd.consumer = S("c");
    rd.new_only = true;
    rd.count = 100;
    cr_assert_eq(evs_group_run(st, &rd, &res, &got, &err), 0, "%s", err.msg);
    cr_assert_eq(res.nids, 6);
    free(got);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(add(st, "rare", EVS_ID_AUTO, EVS_ID_MIN, NULL, "type", "t1", NULL), 0);
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(len_of(st, "rare"), 6);
    evs_query q;
    evs_query_init(&q);
    q.type = S("t1");
    char *t1 = read_all(st, "rare", &q);
    cr_assert_eq(strlen(t1) > 0 && t1[strlen(t1) - 1] == ';', 1);
    free(t1);
    cr_assert_eq(verify_quiet(st), 0);
    for (int i = 0; i < NREADS; i++)
        free(before[i]);
    cr_assert_eq(evs_close(st), 0);
}

/* Iterators opened before a relocation go on along the chain they started on: forward,
 * reverse and filtered ones, whose index keys the relocation replaced under them. */
Test(retention, iterators_opened_before_a_relocation_read_on_exactly)
{
    evs_store *st = open_ret(NULL);
    evs_error err;
    char v[101];
    memset(v, 'y', 100);
    v[100] = 0;
    for (int i = 0; i < 2000; i++) /* many ids keys, filter groups over several chunks */
        cr_assert_eq(add(st, "r", EVS_ID_AUTO, EVS_ID_MIN, NULL, "type", i % 3 ? "a" : "b", "v",
                         v, NULL), 0);
    evs_query q[4];
    for (int i = 0; i < 4; i++)
        evs_query_init(&q[i]);
    q[1].reverse = true;
    q[2].type = S("b");
    q[3].type = S("a");
    q[3].reverse = true;
    char *want[4];
    for (int i = 0; i < 4; i++)
        want[i] = read_all(st, "r", &q[i]);
    evs_iter *it[4];
    char *got[4];
    size_t n[4] = {0};
    const evs_entry *e;
    for (int i = 0; i < 4; i++) {
        got[i] = calloc(1, TEXT_CAP);
        cr_assert_eq(evs_iter_open(st, S("r"), &q[i], &it[i], &err), 0);
        for (int k = 0; k < 10; k++) { /* a little of each before the move */
            cr_assert_eq(evs_iter_next(it[i], &e, &err), 1, "%s", err.msg);
            entry_text(got[i], TEXT_CAP, &n[i], e);
        }
    }
    uint64_t moved = 0;
    uint32_t no = state_of(st, "r").no;
    evs_version v0, v1;
    evs_stream_version(st, S("r"), &v0);
    uint64_t streams;
    cr_assert_eq(writer_relocate(st, &no, 1, UINT64_MAX, 1 << 20, &streams, &moved, &err), 0,
                 "%s", err.msg);
    cr_assert_eq(streams, 1);
    cr_assert_gt(moved, 2000 * 100);
    evs_stream_version(st, S("r"), &v1);
    cr_assert(evs_version_eq(v0, v1), "a relocation is not a change (WATCH)");
    uint64_t again = 1;
    uint64_t first = state_of(st, "r").first_pos;
    cr_assert_eq(writer_relocate(st, &no, 1, first, 1 << 20, &streams, &again, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(streams + again, 0); /* its first entry is not below `first` any more: nothing to do */
    for (int i = 0; i < 4; i++) {
        int rc;
        while ((rc = evs_iter_next(it[i], &e, &err)) == 1)
            entry_text(got[i], TEXT_CAP, &n[i], e);
        cr_assert_eq(rc, 0, "%s", err.msg);
        evs_iter_close(it[i]);
        cr_assert_str_eq(got[i], want[i], "iterator %d", i);
        char *now = read_all(st, "r", &q[i]); /* and a new one reads the copies the same */
        cr_assert_str_eq(now, want[i], "new iterator %d", i);
        free(now);
        free(want[i]);
        free(got[i]);
    }
    cr_assert_eq(verify_quiet(st), 0);
    cr_assert_eq(evs_close(st), 0);
    rm_index(dir);
    st = open_ret(NULL);
    cr_assert_eq(verify_quiet(st), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* Under a visibility cap (a leader under --ack all whose followers lag) a relocation is
 * written but held from readers, and the segment it frees stays until readers see it:
 * later passes must not copy the stream again meanwhile. */
Test(retention, a_relocation_held_by_the_visibility_cap_is_made_once)
{
    evs_store *st = open_ret(NULL);
    evs_error err;
    evs_retention keep = {0, 0, 2};
    busy_expiring(st);
    fill(st, "rare", 1, 10);
    cr_assert_eq(evs_retention_set(st, S("rare"), &keep, &err), 0);
    fill(st, "busy", 1500, 1000);
    fill(st, "rare", 1, 10);
    fill(st, "busy", 1500, 1000);
    /* the trims first, visible: a cap holds them too */
    evs_trim none = {EVS_TRIM_MAXLEN, false, 0, EVS_ID_MIN, 0, 0};
    evs_trim two = {EVS_TRIM_MAXLEN, false, 2, EVS_ID_MIN, 0, 0};
    uint64_t removed;
    cr_assert_eq(evs_trim_stream(st, S("busy"), &none, &removed, &err), 0, "%s", err.msg);
    cr_assert_eq(evs_trim_stream(st, S("rare"), &two, &removed, &err), 0, "%s", err.msg);
    evs_store_stats s0;
    evs_store_stats_get(st, &s0);
    evs_set_visible_cap(st, s0.log_end);
    evs_retention_report rep;
    uint64_t relocated = 0, deleted = 0;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
        relocated += rep.streams_relocated;
        deleted += rep.segments_deleted;
    }
    cr_assert_eq(relocated, 1, "relocated %lu, deleted %lu", (unsigned long)relocated,
                 (unsigned long)deleted);
    evs_store_stats s1;
    evs_store_stats_get(st, &s1);
    cr_assert_lt(s1.log_end - s0.log_end, 4096, "copied %lu bytes",
                 (unsigned long)(s1.log_end - s0.log_end));
    evs_set_visible_cap(st, EVS_CAP_NONE);
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    deleted += rep.segments_deleted; /* (and the copies' segment, sealed by a roll, may be
                                        relocated from in turn: the log turned over) */
    cr_assert_geq(deleted, s0.segments - 1, "deleted %lu of %lu", (unsigned long)deleted,
                  (unsigned long)s0.segments);
    cr_assert_eq(len_of(st, "rare"), 2);
    cr_assert_eq(verify_quiet(st), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* Many small streams keeping the oldest segments (a stream per agent, each written once):
 * they are relocated in one writer request, one sync for all, not one each. */
Test(retention, many_small_streams_are_relocated_together)
{
    evs_store *st = open_ret(NULL);
    evs_error err;
    evs_retention keep = {0, 0, 5};
    busy_expiring(st);
    char name[32];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "agent-%03d", i);
        cr_assert_eq(add(st, name, EVS_ID_AUTO, EVS_ID_MIN, NULL, "type", "hello", "n", name,
                         NULL), 0);
        cr_assert_eq(evs_retention_set(st, S(name), &keep, &err), 0);
    }
    char *want = read_all(st, "agent-150", NULL);
    fill(st, "busy", 3000, 1000);
    nanosleep(&(struct timespec){0, 20 * 1000000}, NULL);
    evs_store_stats s0, s1;
    evs_store_stats_get(st, &s0);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    evs_store_stats_get(st, &s1);
    cr_assert_eq(rep.streams_relocated, 300);
    cr_assert_geq(rep.segments_deleted, s0.segments - 2, "deleted %lu of %lu",
                  (unsigned long)rep.segments_deleted, (unsigned long)s0.segments);
    cr_assert_lt(s1.fsyncs - s0.fsyncs, 40, "%lu fsyncs for the pass",
                 (unsigned long)(s1.fsyncs - s0.fsyncs));
    char *got = read_all(st, "agent-150", NULL);
    cr_assert_str_eq(got, want);
    free(got);
    free(want);
    cr_assert_eq(verify_quiet(st), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* R9: a pass's walks take the lock a chunk of streams at a time; every stream is still seen:
 * each past its limit is trimmed, and the last one created, alone in keeping the first
 * segment (its only entry is there; an age limit keeps it from being relocated), keeps it
 * until it is dropped. */
Test(retention, a_pass_over_more_streams_than_one_walk_chunk_sees_them_all, .timeout = 120)
{
    evs_options o; /* segments of 4 MiB: the first holds every stream's first entry */
    evs_options_init(&o);
    o.segment_bytes = 4 << 20;
    o.retention_interval_ms = 3600 * 1000;
    o.log = fail_on_error;
    o.retention = (evs_retention){0, 0, 2};
    evs_store *st = open_store(dir, &o);
    evs_error err;
    char name[32];
    for (int round = 0; round < 4; round++) {
        if (round == 2)
            fill(st, "busy", 5000, 1000); /* past the first segment */
        for (int i = 0; i < 10000; i++) {
            snprintf(name, sizeof name, "s%05d", i);
            if (round == 0 || i < 9999)
                cr_assert_eq(add(st, name, EVS_ID_AUTO, EVS_ID_MIN, NULL, "v", "x", NULL), 0);
        }
    }
    evs_retention hour = {3600 * 1000, 0, 0}; /* with an age limit: not relocated (R7) */
    cr_assert_eq(evs_retention_set(st, S("s09999"), &hour, &err), 0, "%s", err.msg);
    evs_store_stats s0;
    evs_store_stats_get(st, &s0);
    cr_assert_geq(s0.segments, 3);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.trimmed, 2 * 9999 + 4998, "trimmed %lu", (unsigned long)rep.trimmed);
    for (int i = 0; i < 10000; i += 997) {
        snprintf(name, sizeof name, "s%05d", i);
        cr_assert_eq(len_of(st, name), 2, "%s", name);
    }
    cr_assert_eq(rep.segments_deleted, 0, "the last stream's entry is in the first segment");
    cr_assert_eq(len_of(st, "s09999"), 1);
    char *one = read_all(st, "s09999", NULL);
    cr_assert(strlen(one) > 0);
    free(one);
    bool existed;
    cr_assert_eq(evs_stream_drop(st, S("s09999"), &existed, &err), 0, "%s", err.msg);
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_geq(rep.segments_deleted, 1);
    cr_assert_eq(verify_quiet(st), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* R1: entries the visibility cap holds (written, not yet seen: --ack all waiting for its
 * followers) keep their segment, though no stream readers see needs it yet. */
Test(retention, a_segment_holding_batches_not_yet_visible_is_kept)
{
    evs_store *st = open_ret(NULL);
    evs_error err;
    fill(st, "gone", 100, 1000);
    bool existed;
    cr_assert_eq(evs_stream_drop(st, S("gone"), &existed, &err), 0, "%s", err.msg);
    evs_store_stats s0;
    evs_store_stats_get(st, &s0);
    evs_set_visible_cap(st, s0.log_end); /* what follows is held */
    evs_id id;
    cr_assert_eq(add(st, "held", EVS_ID_AUTO, EVS_ID_MIN, &id, "v", "kept", NULL), 0);
    fill(st, "later", 3000, 1000); /* past the segment "held" is in: it is sealed */
    evs_store_stats s1;
    evs_store_stats_get(st, &s1);
    cr_assert_geq(s1.segments, 3);
    cr_assert_eq(s1.visible_end, s0.log_end);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.segments_deleted, 0, "deleted %lu segments under held batches",
                 (unsigned long)rep.segments_deleted);
    evs_set_visible_cap(st, EVS_CAP_NONE);
    char *got = read_all(st, "held", NULL);
    cr_assert(strstr(got, "v=kept"), "%s", got);
    free(got);
    cr_assert_eq(verify_quiet(st), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* R7: small streams holding more than a quarter of the oldest segment are relocated with
 * those of the next segment (the copies at most a quarter of the two); judged on the oldest
 * segment alone they pinned it, and every segment after it, for ever. */
Test(retention, small_streams_filling_the_oldest_segment_are_relocated_with_the_next)
{
    evs_store *st = open_ret(NULL);
    evs_error err;
    busy_expiring(st);
    char name[32];
    one_entry_streams(st, "session-%04d", 1500, 200); /* ~390 KB: over a quarter of 1 MiB */
    char *want = read_all(st, "session-0777", NULL);
    fill(st, "busy", 3000, 1000);
    nanosleep(&(struct timespec){0, 20 * 1000000}, NULL);
    evs_store_stats s0;
    evs_store_stats_get(st, &s0);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.streams_relocated, 1500, "relocated %lu",
                 (unsigned long)rep.streams_relocated);
    cr_assert_geq(rep.segments_deleted, s0.segments - 2, "deleted %lu of %lu",
                  (unsigned long)rep.segments_deleted, (unsigned long)s0.segments);
    cr_assert_leq(rep.bytes_relocated, 2 * (1 << 20) / 4);
    char *got = read_all(st, "session-0777", NULL);
    cr_assert_str_eq(got, want);
    free(got);
    for (int i = 0; i < 1500; i += 149) {
        snprintf(name, sizeof name, "session-%04d", i);
        cr_assert_eq(len_of(st, name), 1, "%s", name);
    }
    cr_assert_eq(verify_quiet(st), 0);
    cr_assert_eq(evs_close(st), 0);
    rm_index(dir);
    st = open_ret(NULL);
    got = read_all(st, "session-0777", NULL);
    cr_assert_str_eq(got, want);
    free(got);
    free(want);
    cr_assert_eq(verify_quiet(st), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* R7: a log of small live streams only is not copied forward: copying them would free less
 * than four times what it writes (here, nothing). */
Test(retention, small_streams_that_fill_the_log_are_not_relocated)
{
    evs_store *st = open_ret(NULL);
    evs_error err;
    one_entry_streams(st, "live-%04d", 4000, 300);
    evs_store_stats s0;
    evs_store_stats_get(st, &s0);
    cr_assert_geq(s0.segments, 2);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.streams_relocated, 0, "relocated %lu", (unsigned long)rep.streams_relocated);
    cr_assert_eq(rep.segments_deleted, 0);
    cr_assert_eq(evs_close(st), 0);
}

/* R7: a segment kept by one stream too big to move is not relocated at all, whatever comes
 * after that stream in the walk: the small streams beside it stay where they are (copying
 * them would free nothing). */
Test(retention, small_streams_beside_a_big_one_are_not_relocated)
{
    evs_store *st = open_ret(NULL);
    evs_error err;
    busy_expiring(st);
    fill(st, "big", 200, 1000); /* 200 KB: over a sixteenth of a 1 MiB segment */
    one_entry_streams(st, "small-%04d", 50, 1);
    fill(st, "busy", 3000, 1000);
    nanosleep(&(struct timespec){0, 20 * 1000000}, NULL);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.streams_relocated, 0, "relocated %lu", (unsigned long)rep.streams_relocated);
    cr_assert_eq(len_of(st, "big"), 200);
    cr_assert_eq(verify_quiet(st), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* More streams than one writer request relocates (RELOC_CHUNK): all are copied, over several
 * requests, before the segment goes; a filtered read finds each stream's entry after it. */
Test(retention, more_small_streams_than_one_request_takes_are_all_relocated, .timeout = 120)
{
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 4 << 20;
    o.retention_interval_ms = 3600 * 1000;
    o.log = fail_on_error;
    evs_store *st = open_store(dir, &o);
    evs_error err;
    busy_expiring(st);
    char name[32];
    for (int i = 0; i < 9000; i++) {
        snprintf(name, sizeof name, "s%04d", i);
        cr_assert_eq(add(st, name, EVS_ID_AUTO, EVS_ID_MIN, NULL, "type", i % 2 ? "odd" : "even",
                         NULL), 0);
    }
    char *want = read_all(st, "s8999", NULL);
    fill(st, "busy", 5000, 1000);
    nanosleep(&(struct timespec){0, 20 * 1000000}, NULL);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.streams_relocated, 9000, "relocated %lu",
                 (unsigned long)rep.streams_relocated);
    cr_assert_geq(rep.segments_deleted, 1);
    char *got = read_all(st, "s8999", NULL);
    cr_assert_str_eq(got, want);
    free(got);
    free(want);
    evs_query q;
    evs_query_init(&q);
    q.type = S("odd");
    for (int i = 1; i < 9000; i += 1500) {
        snprintf(name, sizeof name, "s%04d", i);
        char *odd = read_all(st, name, &q);
        cr_assert(strlen(odd) > 0, "%s: no odd entry after the relocation", name);
        free(odd);
    }
    cr_assert_eq(verify_quiet(st), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* An iterator opened before a trim that lets retention delete the segments it reads keeps
 * them (reader.c R2): it reads its snapshot whole, and the segments go once it is closed. */
Test(retention, an_iterator_reads_its_snapshot_whole_across_a_deletion)
{
    evs_store *st = open_ret(NULL);
    evs_error err;
    fill(st, "s", 3000, 1000);
    char *want = read_all(st, "s", NULL);
    evs_iter *it;
    cr_assert_eq(evs_iter_open(st, S("s"), NULL, &it, &err), 0);
    char *got = calloc(1, TEXT_CAP);
    size_t n = 0;
    const evs_entry *e;
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(evs_iter_next(it, &e, &err), 1);
        entry_text(got, TEXT_CAP, &n, e);
    }
    evs_trim t = {EVS_TRIM_MAXLEN, false, 0, EVS_ID_MIN, 0, 0};
    uint64_t removed;
    cr_assert_eq(evs_trim_stream(st, S("s"), &t, &removed, &err), 0, "%s", err.msg);
    fill(st, "t", 1500, 1000);
    evs_retention_report rep;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.segments_deleted, 0, "deleted under an open iterator");
    int rc;
    while ((rc = evs_iter_next(it, &e, &err)) == 1)
        entry_text(got, TEXT_CAP, &n, e);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_str_eq(got, want);
    evs_iter_close(it);
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_geq(rep.segments_deleted, 2);
    cr_assert_eq(verify_quiet(st), 0);
    free(got);
    free(want);
    cr_assert_eq(evs_close(st), 0);
}

/* An index commit between a forward read's start-key lookup (none yet: the stream's first key
 * not indexed) and its first block's: the first key, now below the first entry after a trim,
 * must not become the next block's start (the read returned 2-1 twice: reader.c load_block). */
static void commit_index(evs_store *st)
{
    evs_error e;
    cr_assert_eq(writer_idx_del(st, NULL, 0, &e), 0, "%s", e.msg);
}

Test(retention, a_start_key_indexed_during_the_read_is_not_taken_below_the_first_entry)
{
    char *d = tmpdir_new();
    evs_store *st = open_store(d, NULL);
    for (int round = 0; round < 20; round++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", round);
        cr_assert_eq(add(st, name, EVS_ID_EXPLICIT, (evs_id){1, 1}, NULL, "a", "1", NULL), 0);
        cr_assert_eq(add(st, name, EVS_ID_EXPLICIT, (evs_id){2, 1}, NULL, "a", "2", NULL), 0);
        evs_trim t = {.kind = EVS_TRIM_MINID, .minid = {2, 0}};
        uint64_t removed;
        evs_error err;
        cr_assert_eq(evs_trim_stream(st, S(name), &t, &removed, &err), 0, "%s", err.msg);
        cr_assert_eq(removed, 1);
        reader_start_window = commit_index; /* the index catches up inside the window */
        evs_id ids[8];
        long n = read_ids(st, name, NULL, ids, 8);
        reader_start_window = NULL;
        cr_assert_eq(n, 1, "round %d: %ld entries read", round, n);
        cr_assert_eq(ids[0].ms, 2);
    }
    cr_assert_eq(evs_close(st), 0);
    rm_rf(d);
    free(d);
}

/* ---- K1 (reader.c): a stream's first key is at or below its first entry ------------------- */

/* The first `ids` key of stream `name`: true with its ID in *id, false if it has none. */
static bool first_ids_key(evs_store *st, const char *name, evs_id *id)
{
    uint8_t pre[4];
    pthread_rwlock_rdlock(&st->lock);
    idx_be32(pre, strtab_get(&st->vtab, name, strlen(name), true)->no);
    pthread_rwlock_unlock(&st->lock);
    idx_rtxn *r;
    idx_cur *c;
    cr_assert_eq(idx_rbegin(st->idx, &r), 0);
    cr_assert_eq(idx_cur_open(r, IDX_IDS, &c), 0);
    const void *k, *v;
    size_t kl, vl;
    bool found = idx_cur_get(c, IDX_GE, pre, 4, &k, &kl, &v, &vl) == 0 && kl == IDX_IDKEY &&
                 !memcmp(k, pre, 4);
    if (found)
        *id = (evs_id){idx_rd64((const uint8_t *)k + 4), idx_rd64((const uint8_t *)k + 12)};
    idx_cur_close(c);
    idx_rend(r);
    return found;
}

/* 40 entries of 1,000 bytes (keys every 16 KiB: three blocks) into `name`, their IDs in ids;
 * then the index commits. */
static void fill_blocks(evs_store *st, const char *name, evs_id *ids)
{
    char v[1001];
    memset(v, 'y', 1000);
    v[1000] = 0;
    for (int i = 0; i < 40; i++)
        cr_assert_eq(add(st, name, EVS_ID_AUTO, EVS_ID_MIN, &ids[i], "p", v, NULL), 0);
    commit_index(st);
}

/* Forward reads, from the start and from inside the first block, and a trim to 30 (which
 * counts the entries it passes by reading them): every entry is there, the trim keeps the
 * newest 30. Reads that began at the first key skipped the entries below it, and the trim
 * then removed 16 entries it should have kept. */
static void reads_whole(evs_store *st, const char *name, const evs_id *ids)
{
    evs_id got[64];
    cr_assert_eq(read_ids(st, name, NULL, got, 64), 40);
    cr_assert_eq(memcmp(got, ids, 40 * sizeof *ids), 0);
    evs_query q;
    evs_query_init(&q);
    q.start = ids[5];
    cr_assert_eq(read_ids(st, name, &q, got, 64), 35);
    cr_assert_eq(evs_id_cmp(got[0], ids[5]), 0);
    evs_trim t = {.kind = EVS_TRIM_MAXLEN, .maxlen = 30};
    uint64_t removed;
    evs_error err;
    cr_assert_eq(evs_trim_stream(st, S(name), &t, &removed, &err), 0, "%s", err.msg);
    cr_assert_eq(removed, 10);
    cr_assert_eq(read_ids(st, name, NULL, got, 64), 30);
    cr_assert_eq(memcmp(got, ids + 10, 30 * sizeof *ids), 0);
    cr_assert_eq(verify_quiet(st), 0); /* V5: its reads whole */
}

/* A stream created empty (XGROUP CREATE ... MKSTREAM) and given an entries-added count
 * (XSETID ... ENTRIESADDED 100) keys its first entry although it is not its first ever. */
Test(retention, a_stream_filled_from_empty_keys_its_first_entry)
{
    char *d = tmpdir_new();
    evs_store *st = open_store(d, NULL);
    group_create(st, "q", "g", true);
    evs_error err;
    uint64_t added = 100;
    cr_assert_eq(evs_stream_setid(st, S("q"), (evs_id){5, 0}, &added, NULL, &err), 0, "%s",
                 err.msg);
    evs_id ids[40], key;
    fill_blocks(st, "q", ids);
    cr_assert(first_ids_key(st, "q", &key));
    cr_assert_eq(evs_id_cmp(key, ids[0]), 0, "first key %lu-%lu", (unsigned long)key.ms,
                 (unsigned long)key.seq);
    reads_whole(st, "q", ids);
    cr_assert_eq(evs_close(st), 0);
    rm_rf(d);
    free(d);
}

/* An index written before K1 may lack the key at a stream's first entry: reads start there
 * all the same (the key deleted here by hand). */
Test(retention, a_forward_read_below_the_first_key_starts_at_the_first_entry)
{
    char *d = tmpdir_new();
    evs_store *st = open_store(d, NULL);
    evs_id ids[40], key;
    fill_blocks(st, "q", ids);
    cr_assert(first_ids_key(st, "q", &key));
    cr_assert_eq(evs_id_cmp(key, ids[0]), 0);
    uint8_t req[3 + IDX_IDKEY] = {IDX_IDS, 0, IDX_IDKEY};
    pthread_rwlock_rdlock(&st->lock);
    idx_idkey(req + 3, strtab_get(&st->vtab, "q", 1, true)->no, ids[0]);
    pthread_rwlock_unlock(&st->lock);
    evs_error err;
    cr_assert_eq(writer_idx_del(st, req, sizeof req, &err), 0, "%s", err.msg);
    cr_assert(first_ids_key(st, "q", &key));
    cr_assert_gt(evs_id_cmp(key, ids[5]), 0, "the next key lies past the 6th entry");
    reads_whole(st, "q", ids);
    cr_assert_eq(evs_close(st), 0);
    rm_rf(d);
    free(d);
}

/* ---- R8: idempotency keys leave the index after their window --------------------------- */

static size_t table_rows(evs_store *st, enum idx_table t)
{
    idx_rtxn *r;
    idx_cur *c;
    cr_assert_eq(idx_rbegin(st->idx, &r), 0);
    size_t n = 0;
    if (idx_cur_open(r, t, &c) == 0) {
        const void *k, *v;
        size_t kl, vl;
        for (int rc = idx_cur_get(c, IDX_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == 0;
             rc = idx_cur_get(c, IDX_NEXT, NULL, 0, &k, &kl, &v, &vl))
            n++;
        idx_cur_close(c);
    }
    idx_rend(r);
    return n;
}

static void publish_keyed(evs_store *st, const char *name, const char *key, evs_id *id)
{
    evs_field f = {S("type"), S("t")};
    evs_append a = {S(name), EVS_ID_AUTO, {0, 0}, &f, 1, false};
    cr_assert_eq(add_keyed(st, &a, 1, key, id), 0);
}

static int idem_find(evs_store *st, const char *name, const char *key, evs_id *first)
{
    evs_id last;
    size_t n;
    return evs_idem_get(st, S(name), S(key), EVS_IDEM_WINDOW_US, first, &last, &n);
}

#define WINDOW_PAST ((int64_t)EVS_IDEM_WINDOW_US + 60 * 1000000)

/* Keys past their window leave idem and idem_time (every pass; in chunks, so 3,000 keys
 * take several writer requests); a key used again since keeps its new row; a restart and a
 * rebuild from the log do not bring expired keys back. (Mutation-checked: without idem_gc,
 * or with the IDX_DEL_OLDER condition dropped, this fails.) */
Test(retention, idempotency_keys_leave_the_index_after_their_window)
{
    evs_store *st = open_ret(NULL);
    char key[32];
    evs_id old0, id;
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof key, "key-%d", i);
        publish_keyed(st, i % 2 ? "a" : "b", key, i ? &id : &old0);
    }
    cr_assert_eq(table_rows(st, IDX_IDEM), 3000);
    cr_assert_eq(table_rows(st, IDX_IDEM_TIME), 3000);
    evs_retention_report rep;
    evs_error err;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(table_rows(st, IDX_IDEM), 3000); /* none is past its window yet */
    atomic_store(&store_test_clock_skew_us, WINDOW_PAST);
    evs_id fresh;
    publish_keyed(st, "b", "key-0", &fresh); /* a key used again, after its window */
    cr_assert_neq(evs_id_cmp(fresh, old0), 0);
    publish_keyed(st, "a", "new", &id);
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.index_keys_deleted, 2999 * 2 + 1); /* key-0's old time row, not its row */
    cr_assert_eq(table_rows(st, IDX_IDEM), 2);
    cr_assert_eq(table_rows(st, IDX_IDEM_TIME), 2);
    evs_id got;
    cr_assert_eq(idem_find(st, "b", "key-0", &got), 1);
    cr_assert_eq(evs_id_cmp(got, fresh), 0);
    cr_assert_eq(idem_find(st, "a", "key-1", &got), 0);
    cr_assert_eq(evs_close(st), 0);
    st = open_ret(NULL);
    cr_assert_eq(table_rows(st, IDX_IDEM), 2);
    cr_assert_eq(evs_close(st), 0);
    rm_index(dir); /* the log still holds all 3,002 records: the expired stay out */
    st = open_ret(NULL);
    cr_assert_eq(table_rows(st, IDX_IDEM), 2);
    cr_assert_eq(table_rows(st, IDX_IDEM_TIME), 2);
    cr_assert_eq(idem_find(st, "b", "key-0", &got), 1);
    cr_assert_eq(evs_id_cmp(got, fresh), 0);
    cr_assert_eq(verify_quiet(st), 0);
    atomic_store(&store_test_clock_skew_us, 0);
    cr_assert_eq(evs_close(st), 0);
}

/* The condition is checked when the delete is applied: a key put again after retention read
 * it (its new row queued or committed first) stays. */
Test(retention, an_idempotency_key_put_again_meanwhile_is_not_deleted)
{
    evs_store *st = open_ret(NULL);
    evs_id id;
    publish_keyed(st, "a", "k", &id);
    uint8_t k[5];
    pthread_rwlock_rdlock(&st->lock);
    idx_be32(k, strtab_get(&st->vtab, "a", 1, true)->no);
    pthread_rwlock_unlock(&st->lock);
    k[4] = 'k';
    uint8_t req[3 + 5 + 8] = {IDX_IDEM | IDX_DEL_OLDER, 0, 5};
    memcpy(req + 3, k, 5);
    uint64_t now = evs_now_us();
    idx_be64(req + 8, now - 60 * 1000000); /* "older than a minute ago": it is not */
    evs_error err;
    cr_assert_eq(writer_idx_del(st, req, sizeof req, &err), 0, "%s", err.msg);
    cr_assert_eq(table_rows(st, IDX_IDEM), 1);
    idx_be64(req + 8, now + 60 * 1000000); /* "older than a minute from now": it is */
    cr_assert_eq(writer_idx_del(st, req, sizeof req, &err), 0, "%s", err.msg);
    cr_assert_eq(table_rows(st, IDX_IDEM), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* An index made before the idem_time table gets it at its first read-write open, a row for
 * each key it holds, and those keys then expire like new ones; a read-only open of such an
 * index works without it. */
Test(retention, an_index_without_idem_time_gets_it_filled)
{
    evs_store *st = open_ret(NULL);
    evs_id id;
    publish_keyed(st, "a", "k1", &id);
    publish_keyed(st, "a", "k2", &id);
    cr_assert_eq(evs_close(st), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/index", dir);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 32);
    mdb_env_set_mapsize(env, 1ull << 30);
    cr_assert_eq(mdb_env_open(env, path, 0, 0644), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "idem_time", 0, &dbi), 0);
    cr_assert_eq(mdb_drop(txn, dbi, 1), 0); /* as an index of the version before */
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    evs_options o;
    evs_options_init(&o);
    o.read_only = true;
    o.log = fail_on_error;
    st = open_store(dir, &o);
    evs_id got;
    cr_assert_eq(idem_find(st, "a", "k1", &got), 1);
    cr_assert_eq(table_rows(st, IDX_IDEM_TIME), 0);
    cr_assert_eq(evs_close(st), 0);
    st = open_ret(NULL);
    cr_assert_eq(table_rows(st, IDX_IDEM_TIME), 2);
    atomic_store(&store_test_clock_skew_us, WINDOW_PAST);
    evs_retention_report rep;
    evs_error err;
    cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(table_rows(st, IDX_IDEM), 0);
    cr_assert_eq(table_rows(st, IDX_IDEM_TIME), 0);
    atomic_store(&store_test_clock_skew_us, 0);
    cr_assert_eq(evs_close(st), 0);
}
