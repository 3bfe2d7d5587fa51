/* test_retention.c — retention through the embedded API: trims by count, bytes and age; whole
 * segments deleted once no stream needs them, never the active one's unexpired data; streams
 * and groups created in a deleted segment survive a reopen and an index rebuild; index keys
 * below a stream's first entry cleaned; sealing for age, and the releaser's paced cuts. */
#include "helpers.h"

#include "index.h"
#include "internal.h" /* the index tables, to count what the clean-up leaves */
#include "postings.h"

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

static int count_files(const char *suffix)
{
    char p[600];
    snprintf(p, sizeof p, "%s/log", dir);
    DIR *d = opendir(p);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name), sl = strlen(suffix);
        n += l > sl && !strcmp(de->d_name + l - sl, suffix);
    }
    closedir(d);
    return n;
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
    evs_group_op op;
    evs_group_op_init(&op, EVS_GROUP_CREATE);
    op.stream = S("meta");
    op.group = S("g");
    op.id = EVS_ID_MIN;
    evs_group_result res;
    evs_id *ids;
    cr_assert_eq(evs_group_run(st, &op, &res, &ids, &err), 0);
    free(ids);
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
