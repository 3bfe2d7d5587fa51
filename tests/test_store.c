/* test_store.c — the embedded API end to end: appends, IDs, reads, filters, deletes, drops,
 * reopen, many streams, big entries. */
#include "index.h"    /* the filter groups' unit test */
#include "internal.h" /* segment.c's mapping cap, for its test (the last one) */
#include "postings.h"
#include "helpers.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>

static char *dir;
static void setup(void) { dir = tmpdir_new(); }
static void teardown(void) { rm_rf(dir); free(dir); }
TestSuite(store, .init = setup, .fini = teardown);

Test(store, append_and_read_back)
{
    evs_store *st = open_store(dir, NULL);
    evs_id ids[5];
    for (int i = 0; i < 5; i++) {
        char v[16];
        sprintf(v, "v%d", i);
        cr_assert_eq(add(st, "s1", EVS_ID_AUTO, EVS_ID_MIN, &ids[i], "k", v, NULL), 0);
        if (i)
            cr_assert_gt(evs_id_cmp(ids[i], ids[i - 1]), 0);
    }
    evs_iter *it;
    evs_error err;
    cr_assert_eq(evs_iter_open(st, S("s1"), NULL, &it, &err), 0);
    const evs_entry *e;
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(evs_iter_next(it, &e, &err), 1);
        cr_assert_eq(evs_id_cmp(e->id, ids[i]), 0);
        cr_assert_eq(e->nfields, 1);
        char v[16];
        sprintf(v, "v%d", i);
        cr_assert_eq(e->fields[0].value.len, strlen(v));
        cr_assert(memcmp(e->fields[0].value.ptr, v, strlen(v)) == 0);
    }
    cr_assert_eq(evs_iter_next(it, &e, &err), 0);
    evs_iter_close(it);
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(st, S("s1"), &info), 0);
    cr_assert_eq(info.length, 5);
    cr_assert_eq(evs_id_cmp(info.first_id, ids[0]), 0);
    cr_assert_eq(evs_id_cmp(info.last_id, ids[4]), 0);
    cr_assert_eq(evs_stream_info_get(st, S("nope"), &info), EVS_ENOTFOUND);
    cr_assert_eq(evs_close(st), 0);
}

Test(store, explicit_ids_must_increase)
{
    evs_store *st = open_store(dir, NULL);
    evs_id out;
    cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){0, 0}, &out, "a", "b", NULL), EVS_EIDZERO);
    cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){5, 1}, &out, "a", "b", NULL), 0);
    cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){5, 1}, &out, "a", "b", NULL), EVS_EIDORDER);
    cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){4, 9}, &out, "a", "b", NULL), EVS_EIDORDER);
    cr_assert_eq(add(st, "s", EVS_ID_AUTO_SEQ, (evs_id){5, 0}, &out, "a", "b", NULL), 0);
    cr_assert_eq(out.ms, 5);
    cr_assert_eq(out.seq, 2);
    cr_assert_eq(add(st, "s", EVS_ID_AUTO_SEQ, (evs_id){4, 0}, &out, "a", "b", NULL), EVS_EIDORDER);
    cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){6, 0}, &out, "a", "b", NULL), 0);
    cr_assert_eq(add(st, "t", EVS_ID_AUTO_SEQ, (evs_id){0, 0}, &out, "a", "b", NULL), 0);
    cr_assert_eq(out.ms, 0);
    cr_assert_eq(out.seq, 1);
    evs_id got[8];
    cr_assert_eq(read_ids(st, "s", NULL, got, 8), 3);
    evs_close(st);
}

Test(store, atomic_batch_all_or_nothing)
{
    evs_store *st = open_store(dir, NULL);
    evs_field f = {S("k"), S("v")};
    evs_append a[3] = {
        {S("x"), EVS_ID_EXPLICIT, {10, 0}, &f, 1, false},
        {S("y"), EVS_ID_AUTO, {0, 0}, &f, 1, false},
        {S("x"), EVS_ID_EXPLICIT, {9, 0}, &f, 1, false}, /* out of order: fails the batch */
    };
    evs_error err;
    evs_id ids[3];
    cr_assert_eq(evs_append_batch(st, a, 3, ids, &err), EVS_EIDORDER);
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(st, S("x"), &info), EVS_ENOTFOUND);
    cr_assert_eq(evs_stream_info_get(st, S("y"), &info), EVS_ENOTFOUND);
    a[2].id = (evs_id){11, 0};
    cr_assert_eq(evs_append_batch(st, a, 3, ids, &err), 0);
    cr_assert_eq(evs_stream_info_get(st, S("x"), &info), 0);
    cr_assert_eq(info.length, 2);
    evs_close(st);
}

static void fill(evs_store *st, const char *s, int n, evs_id *ids)
{
    for (int i = 0; i < n; i++) {
        char v[32], t[16];
        sprintf(v, "value-%d", i);
        sprintf(t, "t%d", i % 10);
        cr_assert_eq(add(st, s, EVS_ID_EXPLICIT, (evs_id){1000 + (uint64_t)i, 0}, ids ? &ids[i] : NULL,
                         "type", t, "source", i % 2 ? "odd" : "even", "payload", v, NULL), 0);
    }
}

Test(store, ranges_forward_reverse_limits)
{
    evs_store *st = open_store(dir, NULL);
    fill(st, "s", 1000, NULL);
    fill(st, "other", 50, NULL);
    evs_id got[1000];
    evs_query q;
    evs_query_init(&q);
    cr_assert_eq(read_ids(st, "s", &q, got, 1000), 1000);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(got[i].ms, 1000 + (uint64_t)i);
    q.start = (evs_id){1500, 0};
    q.end = (evs_id){1600, 0};
    cr_assert_eq(read_ids(st, "s", &q, got, 1000), 101);
    cr_assert_eq(got[0].ms, 1500);
    q.start_exclusive = true;
    q.end_exclusive = true;
    cr_assert_eq(read_ids(st, "s", &q, got, 1000), 99);
    cr_assert_eq(got[0].ms, 1501);
    evs_query_init(&q);
    q.reverse = true;
    q.limit = 50;
    cr_assert_eq(read_ids(st, "s", &q, got, 1000), 50);
    cr_assert_eq(got[0].ms, 1999);
    cr_assert_eq(got[49].ms, 1950);
    q.end = (evs_id){1234, 0};
    q.limit = 0;
    q.start = (evs_id){1200, 5};
    cr_assert_eq(read_ids(st, "s", &q, got, 1000), 34);
    cr_assert_eq(got[0].ms, 1234);
    cr_assert_eq(got[33].ms, 1201);
    evs_query_init(&q);
    q.start = (evs_id){5000, 0};
    cr_assert_eq(read_ids(st, "s", &q, got, 1000), 0);
    evs_close(st);
}

Test(store, filters_by_type_and_source)
{
    evs_store *st = open_store(dir, NULL);
    fill(st, "s", 1000, NULL);
    evs_id got[1000];
    evs_query q;
    evs_query_init(&q);
    q.type = S("t3");
    cr_assert_eq(read_ids(st, "s", &q, got, 1000), 100);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(got[i].ms, 1003 + 10 * (uint64_t)i);
    q.source = S("odd");
    cr_assert_eq(read_ids(st, "s", &q, got, 1000), 100);
    q.source = S("even");
    cr_assert_eq(read_ids(st, "s", &q, got, 1000), 0);
    evs_query_init(&q);
    q.source = S("odd");
    q.reverse = true;
    q.limit = 3;
    cr_assert_eq(read_ids(st, "s", &q, got, 1000), 3);
    cr_assert_eq(got[0].ms, 1999);
    cr_assert_eq(got[2].ms, 1995);
    evs_query_init(&q);
    q.type = S("t7");
    q.start = (evs_id){1500, 0};
    q.end = (evs_id){1600, 0};
    cr_assert_eq(read_ids(st, "s", &q, got, 1000), 10);
    cr_assert_eq(got[0].ms, 1507);
    q.type = S("nope");
    cr_assert_eq(read_ids(st, "s", &q, got, 1000), 0);
    evs_close(st);
}

Test(store, delete_and_drop)
{
    evs_store *st = open_store(dir, NULL);
    fill(st, "s", 100, NULL);
    evs_id del[3] = {{1000, 0}, {1050, 0}, {77777, 0}};
    size_t n;
    evs_error err;
    cr_assert_eq(evs_delete(st, S("s"), del, 3, &n, &err), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(evs_delete(st, S("s"), del, 2, &n, &err), 0);
    cr_assert_eq(n, 0);
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(st, S("s"), &info), 0);
    cr_assert_eq(info.length, 98);
    cr_assert_eq(info.first_id.ms, 1001);
    cr_assert_eq(info.max_deleted_id.ms, 1050);
    evs_id got[100];
    cr_assert_eq(read_ids(st, "s", NULL, got, 100), 98);
    evs_query q;
    evs_query_init(&q);
    q.type = S("t0");
    cr_assert_eq(read_ids(st, "s", &q, got, 100), 8); /* 1000 and 1050 were t0 */
    bool existed;
    cr_assert_eq(evs_stream_drop(st, S("s"), &existed, &err), 0);
    cr_assert(existed);
    cr_assert_eq(evs_stream_info_get(st, S("s"), &info), EVS_ENOTFOUND);
    cr_assert_eq(evs_stream_drop(st, S("s"), &existed, &err), 0);
    cr_assert(!existed);
    /* the name is free again */
    fill(st, "s", 3, NULL);
    cr_assert_eq(read_ids(st, "s", NULL, got, 100), 3);
    evs_close(st);
    st = open_store(dir, NULL);
    cr_assert_eq(read_ids(st, "s", NULL, got, 100), 3);
    evs_close(st);
}

Test(store, survives_reopen_and_rolls_segments)
{
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 64 * 1024;
    evs_store *st = open_store(dir, &o);
    fill(st, "s", 3000, NULL);
    evs_store_stats stats;
    evs_store_stats_get(st, &stats);
    cr_assert_gt(stats.segments, 3);
    cr_assert_eq(evs_close(st), 0);
    st = open_store(dir, &o);
    evs_id got[3000];
    cr_assert_eq(read_ids(st, "s", NULL, got, 3000), 3000);
    for (int i = 0; i < 3000; i++)
        cr_assert_eq(got[i].ms, 1000 + (uint64_t)i);
    fill(st, "t", 10, NULL);
    long problems = evs_verify(st, NULL, NULL);
    cr_assert_eq(problems, 0);
    evs_close(st);
}

Test(store, second_opener_is_refused)
{
    evs_store *st = open_store(dir, NULL);
    evs_store *b = NULL;
    evs_error err;
    cr_assert_eq(evs_open(dir, NULL, &b, &err), EVS_ELOCKED);
    cr_assert(strstr(err.msg, "in use") != NULL);
    evs_close(st);
}

Test(store, ten_thousand_streams)
{
    evs_store *st = open_store(dir, NULL);
    evs_field f = {S("k"), S("v")};
    evs_append a[100];
    char names[100][16];
    for (int b = 0; b < 100; b++) {
        for (int i = 0; i < 100; i++) {
            sprintf(names[i], "st/%d", b * 100 + i);
            a[i] = (evs_append){S(names[i]), EVS_ID_AUTO, {0, 0}, &f, 1, false};
        }
        evs_error err;
        cr_assert_eq(evs_append_batch(st, a, 100, NULL, &err), 0, "%s", err.msg);
    }
    evs_store_stats stats;
    evs_store_stats_get(st, &stats);
    cr_assert_eq(stats.streams, 10000);
    evs_close(st);
    st = open_store(dir, NULL);
    evs_store_stats_get(st, &stats);
    cr_assert_eq(stats.streams, 10000);
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(st, S("st/9999"), &info), 0);
    cr_assert_eq(info.length, 1);
    evs_close(st);
}

Test(store, binary_names_and_big_entries)
{
    evs_store *st = open_store(dir, NULL);
    char name[] = "a/../..\0\xff/b";
    evs_slice nm = {name, sizeof name - 1};
    size_t big = 1 << 20;
    char *v = malloc(big);
    for (size_t i = 0; i < big; i++)
        v[i] = (char)(i * 31);
    evs_field f = {S("blob"), {v, big}};
    evs_append a = {nm, EVS_ID_AUTO, {0, 0}, &f, 1, false};
    evs_error err;
    evs_id id;
    cr_assert_eq(evs_append_one(st, &a, &id, &err), 0, "%s", err.msg);
    evs_close(st);
    st = open_store(dir, NULL);
    evs_iter *it;
    cr_assert_eq(evs_iter_open(st, nm, NULL, &it, &err), 0);
    const evs_entry *e;
    cr_assert_eq(evs_iter_next(it, &e, &err), 1);
    cr_assert_eq(e->fields[0].value.len, big);
    cr_assert(memcmp(e->fields[0].value.ptr, v, big) == 0);
    evs_iter_close(it);
    evs_close(st);
    free(v);
}

/* The empty name is a name (Redis allows it): its index row has a key of its own (LMDB keys
 * are not empty); it survives reopen, a rebuild from the log and a drop, beside a name of
 * EVS_STREAM_NAME_MAX zero bytes, the longest a name may be. One byte more is refused, with
 * the reason, by the asynchronous submit too. */
Test(store, the_empty_name_and_the_longest_are_streams)
{
    static const char zeros[EVS_STREAM_NAME_MAX + 1];
    evs_slice empty = {"", 0}, longest = {zeros, EVS_STREAM_NAME_MAX};
    evs_field f = {S("f"), S("v")};
    evs_append a[2] = {{empty, EVS_ID_AUTO, {0, 0}, &f, 1, false},
                       {longest, EVS_ID_AUTO, {0, 0}, &f, 1, false}};
    evs_error err;
    evs_id ids[2];
    for (int round = 0; round < 3; round++) {
        evs_store *st = open_store(dir, NULL);
        cr_assert_eq(evs_append_batch(st, a, 2, ids, &err), 0, "%s", err.msg);
        evs_store_stats stats;
        evs_store_stats_get(st, &stats);
        cr_assert_eq(stats.streams, 2);
        evs_close(st);
        if (round == 1)
            rm_index(dir);
    }
    evs_store *st = open_store(dir, NULL);
    for (int i = 0; i < 2; i++) {
        evs_iter *it;
        cr_assert_eq(evs_iter_open(st, a[i].stream, NULL, &it, &err), 0, "%s", err.msg);
        const evs_entry *e;
        int n = 0;
        while (evs_iter_next(it, &e, &err) == 1)
            n++;
        evs_iter_close(it);
        cr_assert_eq(n, 3);
    }
    bool existed;
    cr_assert_eq(evs_stream_drop(st, empty, &existed, &err), 0, "%s", err.msg);
    cr_assert(existed);
    evs_append over = {{zeros, EVS_STREAM_NAME_MAX + 1}, EVS_ID_AUTO, {0, 0}, &f, 1, false};
    cr_assert_eq(evs_submit(st, &over, 1, NULL, NULL, &err), EVS_ETOOBIG);
    cr_assert(strstr(err.msg, "stream name is 401 bytes"), "%s", err.msg);
    evs_close(st);
    st = open_store(dir, NULL);
    evs_store_stats stats;
    evs_store_stats_get(st, &stats);
    cr_assert_eq(stats.streams, 1);
    evs_close(st);
}

/* One entry in each of the streams <prefix><from> .. <prefix><to - 1>. */
static void add_numbered(evs_store *st, const char *prefix, int from, int to)
{
    for (int i = from; i < to; i++) {
        char nm[32];
        snprintf(nm, sizeof nm, "%s%d", prefix, i);
        cr_assert_eq(add(st, nm, EVS_ID_AUTO, EVS_ID_MIN, NULL, "f", "v", NULL), 0);
    }
}

/* evs_stream_scan: steps of any size meet each stream that lives through the walk exactly
 * once, in number order, whatever is dropped or made meanwhile; a reopen keeps the order. */
struct scan_seen {
    int hits[400];
    uint64_t last_no;
    size_t calls;
};

static int scan_count(void *arg, evs_slice name, const evs_stream_info *info)
{
    struct scan_seen *w = arg;
    char buf[16] = "";
    memcpy(buf, name.ptr, name.len < sizeof buf - 1 ? name.len : sizeof buf - 1);
    int i;
    cr_assert(sscanf(buf, "s%d", &i) == 1 && i >= 0 && i < 400, "%s", buf);
    cr_assert(w->calls == 0 || info->number > w->last_no, "not in number order");
    w->last_no = info->number;
    w->calls++;
    w->hits[i]++;
    return 0;
}

Test(store, stream_scan_meets_each_stream_once)
{
    evs_store *st = open_store(dir, NULL);
    char nm[16];
    add_numbered(st, "s", 0, 300);
    evs_error err;
    bool existed;
    for (int i = 0; i < 300; i += 7) {
        snprintf(nm, sizeof nm, "s%d", i);
        cr_assert_eq(evs_stream_drop(st, (evs_slice){nm, strlen(nm)}, &existed, &err), 0);
    }
    static const size_t steps[] = {1, 3, 17, 1000};
    for (int round = 0; round < 2; round++) {
        for (size_t k = 0; k < sizeof steps / sizeof *steps; k++) {
            struct scan_seen w = {0};
            uint64_t cur = 0, next;
            int made = 300;
            do {
                cr_assert_eq(evs_stream_scan(st, cur, steps[k], scan_count, &w, &next), 0);
                cur = next;
                if (made < 330 && round == 0) { /* meanwhile: one made, an earlier one dropped */
                    snprintf(nm, sizeof nm, "s%d", made++);
                    cr_assert_eq(add(st, nm, EVS_ID_AUTO, EVS_ID_MIN, NULL, "f", "v", NULL), 0);
                    if (made > 302) {
                        snprintf(nm, sizeof nm, "s%d", made - 3);
                        cr_assert_eq(evs_stream_drop(st, (evs_slice){nm, strlen(nm)}, &existed,
                                                     &err), 0);
                    }
                }
            } while (cur);
            for (int i = 0; i < 300; i++)
                cr_assert_eq(w.hits[i], i % 7 ? 1 : 0, "step %zu: s%d met %d times", steps[k], i,
                             w.hits[i]);
            if (round == 0) { /* drop what this walk made, for the next walk's count */
                for (int i = 300; i < made; i++) {
                    snprintf(nm, sizeof nm, "s%d", i);
                    cr_assert_eq(evs_stream_drop(st, (evs_slice){nm, strlen(nm)}, &existed, &err), 0);
                }
            }
        }
        evs_close(st);
        st = open_store(dir, NULL);
    }
    evs_close(st);
}

/* evs_streams_drop: one request for many names; a name given twice counts once, a missing
 * one not at all; what it dropped stays dropped after a reopen and a rebuild. */
Test(store, streams_drop_many_in_one_request)
{
    evs_store *st = open_store(dir, NULL);
    add_numbered(st, "d", 0, 50);
    cr_assert_eq(add(st, "", EVS_ID_AUTO, EVS_ID_MIN, NULL, "f", "v", NULL), 0);
    evs_slice names[] = {S("d1"), S("d1"), S("nope"), {"", 0}, S("d49")};
    size_t dropped;
    evs_error err;
    evs_store_stats stats;
    cr_assert_eq(evs_streams_drop(st, names, 5, &dropped, &err), 0, "%s", err.msg);
    cr_assert_eq(dropped, 3);
    for (int round = 0; round < 3; round++) {
        evs_store_stats_get(st, &stats);
        cr_assert_eq(stats.streams, 48);
        cr_assert_eq(evs_stream_info_get(st, S("d1"), &(evs_stream_info){0}), EVS_ENOTFOUND);
        cr_assert_eq(evs_stream_info_get(st, (evs_slice){"", 0}, &(evs_stream_info){0}),
                     EVS_ENOTFOUND);
        cr_assert_eq(evs_stream_info_get(st, S("d2"), &(evs_stream_info){0}), 0);
        evs_close(st);
        if (round == 1)
            rm_index(dir);
        st = open_store(dir, NULL);
    }
    evs_slice longer = {"x", EVS_STREAM_NAME_MAX + 1};
    char *big = calloc(1, EVS_STREAM_NAME_MAX + 1);
    longer.ptr = big;
    evs_slice two[] = {S("d2"), longer};
    cr_assert_eq(evs_streams_drop(st, two, 2, &dropped, &err), EVS_ETOOBIG);
    cr_assert_eq(dropped, 0);
    cr_assert_eq(evs_stream_info_get(st, S("d2"), &(evs_stream_info){0}), 0); /* none dropped */
    free(big);
    evs_close(st);
}

Test(store, empty_and_single_entry_streams)
{
    evs_store *st = open_store(dir, NULL);
    evs_id got[4];
    cr_assert_eq(read_ids(st, "none", NULL, got, 4), EVS_ENOTFOUND);
    evs_id id;
    cr_assert_eq(add(st, "one", EVS_ID_AUTO, EVS_ID_MIN, &id, "k", "v", NULL), 0);
    evs_query q;
    evs_query_init(&q);
    q.reverse = true;
    cr_assert_eq(read_ids(st, "one", &q, got, 4), 1);
    cr_assert_eq(read_ids(st, "one", NULL, got, 4), 1);
    size_t n;
    evs_error err;
    cr_assert_eq(evs_delete(st, S("one"), &id, 1, &n, &err), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(read_ids(st, "one", NULL, got, 4), 0);
    cr_assert_eq(read_ids(st, "one", &q, got, 4), 0);
    evs_close(st);
}

struct tharg {
    evs_store *st;
    int t;
};

static void *appender(void *p)
{
    struct tharg *a = p;
    char s[16];
    sprintf(s, "c%d", a->t % 3);
    for (int i = 0; i < 500; i++) {
        char v[32];
        sprintf(v, "%d-%d", a->t, i);
        cr_assert_eq(add(a->st, s, EVS_ID_AUTO, EVS_ID_MIN, NULL, "v", v, NULL), 0);
    }
    return NULL;
}

Test(store, concurrent_appenders_and_readers)
{
    evs_store *st = open_store(dir, NULL);
    pthread_t th[8];
    struct tharg args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (struct tharg){st, i};
        pthread_create(&th[i], NULL, appender, &args[i]);
    }
    for (int r = 0; r < 20; r++) {
        evs_id got[8];
        read_ids(st, "c0", NULL, got, 8);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    uint64_t total = 0;
    for (int c = 0; c < 3; c++) {
        char s[8];
        sprintf(s, "c%d", c);
        evs_stream_info info;
        cr_assert_eq(evs_stream_info_get(st, S(s), &info), 0);
        total += info.length;
    }
    cr_assert_eq(total, 4000);
    evs_store_stats stats;
    evs_store_stats_get(st, &stats);
    cr_assert_lt(stats.batches, 4000, "group commit never batched");
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    evs_close(st);
}

struct waitarg {
    evs_store *st;
    int rc;
};

static void *late_append(void *p)
{
    struct waitarg *w = p;
    usleep(100000);
    w->rc = add(w->st, "w", EVS_ID_AUTO, EVS_ID_MIN, NULL, "k", "late", NULL);
    return NULL;
}

static int hook_calls;
static char hook_name[32];
static void hook(void *arg, const evs_slice *names, size_t n)
{
    (void)arg;
    for (size_t i = 0; i < n; i++)
        if (names[i].len == 1 && !memcmp(names[i].ptr, "w", 1)) {
            memcpy(hook_name, names[i].ptr, 1); /* before the count that publishes it */
            __atomic_add_fetch(&hook_calls, 1, __ATOMIC_SEQ_CST);
        }
}

Test(store, wait_is_woken_by_an_append_and_times_out)
{
    evs_store *st = open_store(dir, NULL);
    evs_set_visible_hook(st, hook, NULL);
    evs_id first;
    cr_assert_eq(add(st, "w", EVS_ID_AUTO, EVS_ID_MIN, &first, "k", "v", NULL), 0);
    /* already there */
    cr_assert_eq(evs_wait(st, S("w"), EVS_ID_MIN, 0), 1);
    /* nothing newer: times out */
    cr_assert_eq(evs_wait(st, S("w"), first, 50), 0);
    /* woken by another thread's append */
    struct waitarg w = {st, -1};
    pthread_t th;
    pthread_create(&th, NULL, late_append, &w);
    cr_assert_eq(evs_wait(st, S("w"), first, 5000), 1);
    pthread_join(th, NULL);
    cr_assert_eq(w.rc, 0);
    /* waiters are woken before the hook runs (both after the batch is visible): give the
     * writer thread up to 5 s to reach the hook */
    for (int i = 0; i < 5000 && __atomic_load_n(&hook_calls, __ATOMIC_SEQ_CST) < 2; i++)
        usleep(1000);
    cr_assert_geq(__atomic_load_n(&hook_calls, __ATOMIC_SEQ_CST), 2);
    cr_assert_eq(hook_name[0], 'w');
    /* a stream that does not exist yet is waited for too */
    cr_assert_eq(evs_wait(st, S("nothing"), EVS_ID_MIN, 20), 0);
    evs_close(st);
}

struct edone {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int rc;
    bool done;
    int rcs[6];
    evs_id ids[6];
};

static void each_done(void *arg, int rc, const int *rcs, const evs_id *ids, size_t n,
                      const evs_error *err)
{
    (void)err;
    struct edone *k = arg;
    pthread_mutex_lock(&k->mu);
    k->rc = rc;
    for (size_t i = 0; i < n && i < 6; i++) {
        k->rcs[i] = rcs[i];
        k->ids[i] = ids[i];
    }
    k->done = true;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

static struct edone *submit_each_wait(evs_store *st, const evs_append *a, size_t n)
{
    static struct edone k;
    k = (struct edone){PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, -1, false, {0}, {{0, 0}}};
    cr_assert_eq(evs_submit_each(st, a, n, NULL, 0, each_done, &k, NULL), 0);
    pthread_mutex_lock(&k.mu);
    while (!k.done)
        pthread_cond_wait(&k.cv, &k.mu);
    pthread_mutex_unlock(&k.mu);
    return &k;
}

/* evs_submit_each (the XADDs of an EXEC): a request refused for its ID or its stream appends
 * nothing and says why; the others are appended, as Redis runs them one by one. */
Test(store, submit_each_refuses_requests_one_by_one)
{
    evs_store *st = open_store(dir, NULL);
    evs_field f = {S("k"), S("v")};
    evs_append a[6] = {
        {S("s"), EVS_ID_EXPLICIT, {5, 0}, &f, 1, false},
        {S("s"), EVS_ID_EXPLICIT, {3, 0}, &f, 1, false}, /* below 5-0 */
        {S("s"), EVS_ID_EXPLICIT, {0, 0}, &f, 1, false}, /* 0-0 */
        {S("new"), EVS_ID_EXPLICIT, {1, 0}, &f, 1, true}, /* NOMKSTREAM, no such stream */
        {S("s"), EVS_ID_AUTO_SEQ, {5, 0}, &f, 1, false},  /* 5-1: after 5-0, not after 3-0 */
        {S("t"), EVS_ID_EXPLICIT, {1, 0}, &f, 1, false},
    };
    struct edone *k = submit_each_wait(st, a, 6);
    cr_assert_eq(k->rc, 0);
    int want[6] = {0, EVS_EIDORDER, EVS_EIDZERO, EVS_ENOTFOUND, 0, 0};
    for (int i = 0; i < 6; i++)
        cr_assert_eq(k->rcs[i], want[i], "request %d: %d", i, k->rcs[i]);
    cr_assert_eq(evs_id_cmp(k->ids[4], (evs_id){5, 1}), 0);
    cr_assert_eq(evs_id_cmp(k->ids[1], EVS_ID_MIN), 0);
    evs_id ids[8];
    cr_assert_eq(read_ids(st, "s", NULL, ids, 8), 2);
    cr_assert_eq(evs_id_cmp(ids[0], (evs_id){5, 0}), 0);
    cr_assert_eq(evs_id_cmp(ids[1], (evs_id){5, 1}), 0);
    cr_assert_eq(read_ids(st, "t", NULL, ids, 8), 1);
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(st, S("new"), &info), EVS_ENOTFOUND);
    /* NOMKSTREAM after a request of the same batch made the stream: appended */
    evs_append b[2] = {{S("made"), EVS_ID_EXPLICIT, {1, 0}, &f, 1, false},
                       {S("made"), EVS_ID_EXPLICIT, {2, 0}, &f, 1, true}};
    k = submit_each_wait(st, b, 2);
    cr_assert_eq(k->rcs[0] | k->rcs[1], 0);
    cr_assert_eq(read_ids(st, "made", NULL, ids, 8), 2);
    /* every one refused: nothing written, the store goes on */
    evs_append c[2] = {{S("s"), EVS_ID_EXPLICIT, {1, 0}, &f, 1, false},
                       {S("none"), EVS_ID_AUTO, {0, 0}, &f, 1, true}};
    k = submit_each_wait(st, c, 2);
    cr_assert_eq(k->rc, 0);
    cr_assert_eq(k->rcs[0], EVS_EIDORDER);
    cr_assert_eq(k->rcs[1], EVS_ENOTFOUND);
    cr_assert_eq(evs_close(st), 0);
    st = open_store(dir, NULL); /* and after a reopen, exactly what was acknowledged */
    cr_assert_eq(read_ids(st, "s", NULL, ids, 8), 2);
    cr_assert_eq(read_ids(st, "made", NULL, ids, 8), 2);
    cr_assert_eq(evs_stream_info_get(st, S("none"), &info), EVS_ENOTFOUND);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
}

Test(store, idempotency_keys_survive_reopen_and_rebuild)
{
    evs_store *st = open_store(dir, NULL);
    evs_field f = {S("type"), S("t")};
    evs_append a[3] = {{S("orders"), EVS_ID_AUTO, {0, 0}, &f, 1, false},
                       {S("orders"), EVS_ID_AUTO, {0, 0}, &f, 1, false},
                       {S("orders"), EVS_ID_AUTO, {0, 0}, &f, 1, false}};
    struct kdone k = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, -1, false, {{0, 0}}};
    cr_assert_eq(add_keyed(st, a, 3, "key-1", k.ids), 0);
    evs_id first, last;
    size_t n = 0;
    /* found at once after the acknowledgement */
    cr_assert_eq(evs_idem_get(st, S("orders"), S("key-1"), 600000000ull, &first, &last, &n), 1);
    cr_assert_eq(n, 3);
    cr_assert_eq(evs_id_cmp(first, k.ids[0]), 0);
    cr_assert_eq(evs_id_cmp(last, k.ids[2]), 0);
    cr_assert_eq(evs_idem_get(st, S("orders"), S("other"), 600000000ull, &first, &last, &n), 0);
    cr_assert_eq(evs_idem_get(st, S("nope"), S("key-1"), 600000000ull, &first, &last, &n), 0);
    /* a zero window: expired */
    cr_assert_eq(evs_idem_get(st, S("orders"), S("key-1"), 0, &first, &last, &n), 0);
    /* keyed submissions span one stream only */
    evs_append mixed[2] = {a[0], {S("other"), EVS_ID_AUTO, {0, 0}, &f, 1, false}};
    cr_assert_eq(evs_submit_keyed(st, mixed, 2, S("k"), keyed_done, &k, NULL), EVS_EINVAL);
    cr_assert_eq(evs_close(st), 0);
    st = open_store(dir, NULL);
    cr_assert_eq(evs_idem_get(st, S("orders"), S("key-1"), 600000000ull, &first, &last, &n), 1);
    cr_assert_eq(n, 3);
    evs_close(st);
    /* the index is derived: rebuilt from the log, the key is still there */
    rm_index(dir);
    st = open_store(dir, NULL);
    cr_assert_eq(evs_idem_get(st, S("orders"), S("key-1"), 600000000ull, &first, &last, &n), 1);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    bool existed;
    evs_error err;
    cr_assert_eq(evs_stream_drop(st, S("orders"), &existed, &err), 0);
    cr_assert_eq(evs_idem_get(st, S("orders"), S("key-1"), 600000000ull, &first, &last, &n), 0);
    evs_close(st);
}

/* Wait for a submission's completion; it must have succeeded. */
static void kdone_wait(struct kdone *k)
{
    pthread_mutex_lock(&k->mu);
    while (!k->done)
        pthread_cond_wait(&k->cv, &k->mu);
    pthread_mutex_unlock(&k->mu);
    cr_assert_eq(k->rc, 0);
}

static void append_trimmed(evs_store *st, const char *s, uint64_t ms, const evs_trim *t)
{
    evs_field f = {S("n"), S("x")};
    evs_append a = {S(s), EVS_ID_EXPLICIT, {ms, 0}, &f, 1, false};
    struct kdone k = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, -1, false, {{0, 0}}};
    cr_assert_eq(evs_submit_trim(st, &a, 1, t, keyed_done, &k, NULL), 0);
    kdone_wait(&k);
}

/* Appends trimmed to a random exact MAXLEN, several in one batch (one hold), deletes and
 * MINID trims between them: after every round the stream reads as a model of it says. The
 * writer's trim cache (reader.c T1-T3) answers most of these trims from what an earlier scan
 * read; a deleted entry, a moved front or a trim that reaches past it must not make a trim
 * remove other entries than a scan would. */
Test(store, trims_at_every_append_agree_with_a_model, .timeout = 120)
{
    evs_store *st = open_store(dir, NULL);
    enum { CAP = 4096 };
    uint64_t *model = calloc(CAP, sizeof *model); /* live ms values, in order */
    size_t lo = 0, hi = 0;
    uint64_t next_ms = 1;
    evs_id *got = calloc(CAP, sizeof *got);
    srand(5);
    static const uint64_t caps[] = {1, 2, 3, 5, 8, 30, 200, 1000};
    /* the record bytes of one entry (they are all alike): MAXBYTES of k of them keeps k */
    evs_store_stats before, after;
    cr_assert_eq(add(st, "sz", EVS_ID_AUTO, EVS_ID_MIN, NULL, "n", "x", NULL), 0);
    evs_store_stats_get(st, &before);
    cr_assert_eq(add(st, "sz", EVS_ID_AUTO, EVS_ID_MIN, NULL, "n", "x", NULL), 0);
    evs_store_stats_get(st, &after);
    uint64_t esize = after.log_end - before.log_end;
    for (int round = 0; round < 1500; round++) {
        uint64_t k = caps[rand() % 8];
        int m = 1 + rand() % 6;
        evs_field f = {S("n"), S("x")};
        evs_append a[6];
        struct kdone d[6];
        evs_trim t = {EVS_TRIM_MAXLEN, false, k, {0, 0}, 0, 0};
        if (rand() % 3 == 0) /* the same cap in bytes: the bytes the batch's entries count too */
            t = (evs_trim){EVS_TRIM_MAXBYTES, false, 0, {0, 0}, 0, k * esize + esize / 2};
        evs_submit_hold(st);
        for (int i = 0; i < m; i++) {
            a[i] = (evs_append){S("mx"), EVS_ID_EXPLICIT, {next_ms + (uint64_t)i, 0}, &f, 1, false};
            d[i] = (struct kdone){PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, -1, false,
                                  {{0, 0}}};
            cr_assert_eq(evs_submit_trim(st, &a[i], 1, &t, keyed_done, &d[i], NULL), 0);
        }
        evs_submit_release_inline(st);
        for (int i = 0; i < m; i++) {
            kdone_wait(&d[i]);
            model[hi++] = next_ms++;
            while (hi - lo > k)
                lo++;
        }
        if (hi > CAP - 16) { /* slide the model down */
            memmove(model, model + lo, (hi - lo) * sizeof *model);
            hi -= lo;
            lo = 0;
        }
        int r = rand() % 10;
        if (r == 0 && hi > lo) { /* delete one live entry */
            size_t j = lo + (size_t)rand() % (hi - lo);
            evs_id id = {model[j], 0};
            size_t deleted;
            evs_error err;
            cr_assert_eq(evs_delete(st, S("mx"), &id, 1, &deleted, &err), 0);
            cr_assert_eq(deleted, 1);
            memmove(model + j, model + j + 1, (hi - j - 1) * sizeof *model);
            hi--;
        } else if (r == 1 && hi > lo) { /* MINID: drop what is below a live entry */
            size_t j = lo + (size_t)rand() % (hi - lo);
            evs_trim mt = {EVS_TRIM_MINID, false, 0, {model[j], 0}, 0, 0};
            uint64_t removed;
            evs_error err;
            cr_assert_eq(evs_trim_stream(st, S("mx"), &mt, &removed, &err), 0);
            cr_assert_eq(removed, j - lo);
            lo = j;
        }
        long n = read_ids(st, "mx", NULL, got, CAP);
        cr_assert_eq(n, (long)(hi - lo), "round %d: %ld entries, the model has %zu", round, n,
                     hi - lo);
        for (long i = 0; i < n; i++)
            cr_assert_eq(got[i].ms, model[lo + (size_t)i], "round %d entry %ld", round, i);
        evs_stream_info info;
        cr_assert_eq(evs_stream_info_get(st, S("mx"), &info), 0);
        cr_assert_eq(info.length, hi - lo);
    }
    free(got);
    free(model);
    cr_assert_eq(evs_close(st), 0);
}

/* The same under the visibility cap (a leader under --ack all whose followers lag): batches
 * held from readers, deletes among them (of held entries too), and exact trims in batches,
 * checked against the model whenever the cap is lifted. (With the readers' state, a trim in a
 * batch behind a held delete counted the deleted entry and kept one too many, XLEN below the
 * entries read; and a delete of a held entry found nothing to delete.) */
Test(store, trims_under_the_visibility_cap_agree_with_a_model, .timeout = 120)
{
    evs_store *st = open_store(dir, NULL);
    enum { CAP = 4096 };
    uint64_t *model = calloc(CAP, sizeof *model);
    size_t lo = 0, hi = 0;
    bool capped = false;
    uint64_t next_ms = 1;
    evs_id *got = calloc(CAP, sizeof *got);
    srand(9);
    static const uint64_t caps[] = {1, 2, 3, 5, 8, 30};
    char name[16] = "";
    for (int round = 0; round < 1500; round++) {
        if (round % 20 == 0) { /* a new stream: until its first tombstone, reads skip the check */
            snprintf(name, sizeof name, "cx%d", round / 20);
            lo = hi = 0;
        }
        if (!capped && rand() % 3 == 0) {
            evs_store_stats ss;
            evs_store_stats_get(st, &ss);
            evs_set_visible_cap(st, ss.log_end);
            capped = true;
        }
        int m = 1 + rand() % 4;
        evs_field f = {S("n"), S("x")};
        evs_append a[4];
        struct kdone d[4];
        uint64_t k[4]; /* each append its own MAXLEN (0: none) */
        evs_submit_hold(st);
        for (int i = 0; i < m; i++) {
            k[i] = rand() % 3 ? caps[rand() % 6] : 0;
            evs_trim t = {EVS_TRIM_MAXLEN, false, k[i], {0, 0}, 0, 0};
            a[i] = (evs_append){S(name), EVS_ID_EXPLICIT, {next_ms + (uint64_t)i, 0}, &f, 1, false};
            d[i] = (struct kdone){PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, -1, false,
                                  {{0, 0}}};
            cr_assert_eq(k[i] ? evs_submit_trim(st, &a[i], 1, &t, keyed_done, &d[i], NULL)
                              : evs_submit(st, &a[i], 1, keyed_done, &d[i], NULL), 0);
        }
        evs_submit_release_inline(st);
        for (int i = 0; i < m; i++) {
            kdone_wait(&d[i]);
            model[hi++] = next_ms++;
            while (k[i] && hi - lo > k[i])
                lo++;
        }
        if (rand() % 4 == 0 && hi > lo) { /* delete an entry, held from readers or not */
            size_t j = rand() % 2 ? lo : lo + (size_t)rand() % (hi - lo);
            evs_id id = {model[j], 0}; /* (the first, half the time: the next trim starts there) */
            size_t deleted;
            evs_error err;
            cr_assert_eq(evs_delete(st, S(name), &id, 1, &deleted, &err), 0);
            cr_assert_eq(deleted, 1, "round %d", round);
            memmove(model + j, model + j + 1, (hi - j - 1) * sizeof *model);
            hi--;
        }
        if (capped && rand() % 3 == 0) {
            evs_set_visible_cap(st, EVS_CAP_NONE);
            capped = false;
        }
        if (!capped) {
            long n = read_ids(st, name, NULL, got, CAP);
            cr_assert_eq(n, (long)(hi - lo), "round %d: %ld entries, the model has %zu", round,
                         n, hi - lo);
            for (long i = 0; i < n; i++)
                cr_assert_eq(got[i].ms, model[lo + (size_t)i], "round %d entry %ld", round, i);
            evs_stream_info info;
            cr_assert_eq(evs_stream_info_get(st, S(name), &info), 0);
            cr_assert_eq(info.length, hi - lo, "round %d", round);
        }
        if (hi > CAP - 16) {
            memmove(model, model + lo, (hi - lo) * sizeof *model);
            hi -= lo;
            lo = 0;
        }
    }
    evs_set_visible_cap(st, EVS_CAP_NONE);
    free(got);
    free(model);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* Batches the visibility cap holds from readers (a leader under --ack all whose followers lag)
 * are entries all the same: a trim behind them counts them and keeps the newest, as if they
 * showed. (A trim planned on what readers saw took the request's own entry as the stream's
 * first: the held entries were gone, XLEN said 2 and a read gave nothing.) */
Test(store, a_trim_behind_held_batches_keeps_them)
{
    evs_store *st = open_store(dir, NULL);
    cr_assert_eq(add(st, "h", EVS_ID_EXPLICIT, (evs_id){1, 1}, NULL, "n", "x", NULL), 0);
    evs_store_stats s;
    evs_store_stats_get(st, &s);
    evs_set_visible_cap(st, s.log_end); /* 1-1 shows, what follows is held */
    cr_assert_eq(add(st, "h", EVS_ID_EXPLICIT, (evs_id){2, 1}, NULL, "n", "x", NULL), 0);
    cr_assert_eq(add(st, "h", EVS_ID_EXPLICIT, (evs_id){3, 1}, NULL, "n", "x", NULL), 0);
    evs_trim t = {EVS_TRIM_MAXLEN, false, 2, {0, 0}, 0, 0};
    append_trimmed(st, "h", 4, &t); /* 4-0, keeping two: 3-1 and 4-0 */
    evs_set_visible_cap(st, EVS_CAP_NONE);
    evs_id got[8];
    cr_assert_eq(read_ids(st, "h", NULL, got, 8), 2);
    cr_assert_eq(evs_id_cmp(got[0], (evs_id){3, 1}), 0);
    cr_assert_eq(evs_id_cmp(got[1], (evs_id){4, 0}), 0);
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(st, S("h"), &info), 0);
    cr_assert_eq(info.length, 2);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
}

Test(store, trims_exact_approximate_minid_and_inside_appends)
{
    evs_store *st = open_store(dir, NULL);
    fill(st, "s", 100, NULL); /* ids 1000-0 .. 1099-0, types t0..t9 */
    evs_error err;
    uint64_t removed;
    evs_trim t = {EVS_TRIM_MAXLEN, false, 10, {0, 0}, 0, 0};
    cr_assert_eq(evs_trim_stream(st, S("s"), &t, &removed, &err), 0, "%s", err.msg);
    cr_assert_eq(removed, 90);
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(st, S("s"), &info), 0);
    cr_assert_eq(info.length, 10);
    cr_assert_eq(info.first_id.ms, 1090);
    evs_id got[200];
    cr_assert_eq(read_ids(st, "s", NULL, got, 200), 10);
    cr_assert_eq(got[0].ms, 1090);
    evs_query q;
    evs_query_init(&q);
    q.reverse = true;
    cr_assert_eq(read_ids(st, "s", &q, got, 200), 10);
    cr_assert_eq(got[9].ms, 1090);
    evs_query_init(&q);
    q.type = S("t3");
    cr_assert_eq(read_ids(st, "s", &q, got, 200), 1); /* only 1093 is left of t3 */
    cr_assert_eq(got[0].ms, 1093);
    /* MINID */
    evs_trim m = {EVS_TRIM_MINID, false, 0, {1095, 0}, 0, 0};
    cr_assert_eq(evs_trim_stream(st, S("s"), &m, &removed, &err), 0);
    cr_assert_eq(removed, 5);
    cr_assert_eq(read_ids(st, "s", NULL, got, 200), 5);
    cr_assert_eq(got[0].ms, 1095);
    /* approximate: nothing until 100 would go */
    evs_trim a = {EVS_TRIM_MAXLEN, true, 2, {0, 0}, 0, 0};
    cr_assert_eq(evs_trim_stream(st, S("s"), &a, &removed, &err), 0);
    cr_assert_eq(removed, 0);
    /* XADD with MAXLEN: the stream never grows past it */
    evs_trim keep3 = {EVS_TRIM_MAXLEN, false, 3, {0, 0}, 0, 0};
    for (uint64_t i = 0; i < 20; i++)
        append_trimmed(st, "s", 2000 + i, &keep3);
    cr_assert_eq(read_ids(st, "s", NULL, got, 200), 3);
    cr_assert_eq(got[0].ms, 2017);
    cr_assert_eq(got[2].ms, 2019);
    /* trimming a brand-new stream, and everything */
    evs_trim none = {EVS_TRIM_MAXLEN, false, 0, {0, 0}, 0, 0};
    append_trimmed(st, "empty", 5, &none);
    cr_assert_eq(evs_stream_info_get(st, S("empty"), &info), 0);
    cr_assert_eq(info.length, 0);
    cr_assert_eq(info.entries_added, 1);
    cr_assert_eq(read_ids(st, "empty", NULL, got, 200), 0);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
    /* durable, and rebuilt the same from the log */
    for (int pass = 0; pass < 2; pass++) {
        if (pass)
            rm_index(dir);
        st = open_store(dir, NULL);
        cr_assert_eq(read_ids(st, "s", NULL, got, 200), 3, "pass %d", pass);
        cr_assert_eq(got[0].ms, 2017);
        cr_assert_eq(evs_stream_info_get(st, S("s"), &info), 0);
        cr_assert_eq(info.length, 3);
        cr_assert_eq(read_ids(st, "empty", NULL, got, 200), 0);
        evs_close(st);
    }
}

Test(store, setid_checks_and_survives_reopen_and_rebuild)
{
    evs_store *st = open_store(dir, NULL);
    evs_error err;
    cr_assert_eq(evs_stream_setid(st, S("s"), (evs_id){5, 0}, NULL, NULL, &err), EVS_ENOTFOUND);
    fill(st, "s", 10, NULL); /* 1000-0 .. 1009-0 */
    evs_id del = {1009, 0};
    size_t n;
    cr_assert_eq(evs_delete(st, S("s"), &del, 1, &n, &err), 0);
    /* below the max deleted ID (the top entry is now 1008) */
    cr_assert_eq(evs_stream_setid(st, S("s"), (evs_id){1008, 5}, NULL, NULL, &err), EVS_EINVAL);
    cr_assert(strstr(err.msg, "max_deleted_entry_id"), "%s", err.msg);
    uint64_t few = 3, many = 500;
    cr_assert_eq(evs_stream_setid(st, S("s"), (evs_id){2000, 0}, &few, NULL, &err), EVS_EINVAL);
    evs_id maxdel = {2500, 0};
    cr_assert_eq(evs_stream_setid(st, S("s"), (evs_id){2000, 0}, NULL, &maxdel, &err), EVS_EINVAL);
    maxdel = (evs_id){1500, 0};
    cr_assert_eq(evs_stream_setid(st, S("s"), (evs_id){2000, 0}, &many, &maxdel, &err), 0, "%s",
                 err.msg);
    evs_field f = {S("n"), S("x")};
    evs_append a = {S("s"), EVS_ID_EXPLICIT, {1999, 0}, &f, 1, false};
    evs_id got[20];
    cr_assert_eq(evs_append_batch(st, &a, 1, got, &err), EVS_EIDORDER);
    /* trim everything: the trim point now bounds XSETID too */
    uint64_t removed;
    evs_trim none = {EVS_TRIM_MAXLEN, false, 0, {0, 0}, 0, 0};
    cr_assert_eq(evs_trim_stream(st, S("s"), &none, &removed, &err), 0);
    cr_assert_eq(removed, 9);
    cr_assert_eq(evs_stream_setid(st, S("s"), (evs_id){1000, 0}, NULL, NULL, &err), EVS_EINVAL);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
    for (int pass = 0; pass < 2; pass++) {
        if (pass)
            rm_index(dir);
        st = open_store(dir, NULL);
        evs_stream_info info;
        cr_assert_eq(evs_stream_info_get(st, S("s"), &info), 0);
        cr_assert_eq(info.last_id.ms, 2000, "pass %d", pass);
        cr_assert_eq(info.entries_added, 500);
        cr_assert_eq(info.max_deleted_id.ms, 1500);
        cr_assert_eq(info.length, 0);
        cr_assert_eq(evs_verify(st, NULL, NULL), 0);
        evs_close(st);
    }
}

static int submit_watched_wait(evs_store *st, const evs_append *a, const evs_watch *w, size_t nw)
{
    struct kdone k = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, -1, false, {{0, 0}}};
    cr_assert_eq(evs_submit_watched(st, a, 1, NULL, w, nw, keyed_done, &k, NULL), 0);
    pthread_mutex_lock(&k.mu);
    while (!k.done)
        pthread_cond_wait(&k.cv, &k.mu);
    pthread_mutex_unlock(&k.mu);
    return k.rc;
}

Test(store, versions_move_with_every_change_and_guard_watched_submits)
{
    evs_store *st = open_store(dir, NULL);
    evs_error err;
    evs_version v0, v;
    evs_stream_version(st, S("s"), &v0);
    cr_assert_eq(v0.stream, 0);
    cr_assert_eq(v0.changes, 0);
    fill(st, "s", 5, NULL); /* 1000-0 .. 1004-0 */
    evs_stream_version(st, S("s"), &v);
    cr_assert_neq(v.stream, 0);
    evs_field f = {S("n"), S("x")};
    evs_append a = {S("s"), EVS_ID_AUTO, {0, 0}, &f, 1, false};
    evs_watch w[2] = {{S("s"), v}, {S("other"), v0}};
    cr_assert_eq(submit_watched_wait(st, &a, w, 2), 0); /* nothing moved */
    /* each change moves the version; a submit watching the old one is refused, nothing lands */
    for (int change = 0; change < 5; change++) {
        evs_stream_version(st, S("s"), &w[0].version);
        evs_stream_version(st, S("other"), &w[1].version);
        evs_stream_info before;
        cr_assert_eq(evs_stream_info_get(st, S("s"), &before), 0);
        evs_id del = before.last_id;
        size_t n;
        uint64_t removed;
        evs_trim t = {EVS_TRIM_MAXLEN, false, 1, {0, 0}, 0, 0};
        evs_id far = {before.last_id.ms + 1000, 0};
        if (change == 0)
            cr_assert_eq(evs_append_batch(st, &a, 1, NULL, &err), 0);
        else if (change == 1)
            cr_assert_eq(evs_delete(st, S("s"), &del, 1, &n, &err), 0);
        else if (change == 2)
            cr_assert_eq(evs_trim_stream(st, S("s"), &t, &removed, &err), 0);
        else if (change == 3)
            cr_assert_eq(evs_stream_setid(st, S("s"), far, NULL, NULL, &err), 0);
        else {
            evs_append b = {S("other"), EVS_ID_AUTO, {0, 0}, &f, 1, false};
            cr_assert_eq(evs_append_batch(st, &b, 1, NULL, &err), 0);
        }
        evs_stream_info mid;
        cr_assert_eq(evs_stream_info_get(st, S("s"), &mid), 0);
        cr_assert_eq(submit_watched_wait(st, &a, w, 2), EVS_ECHANGED, "change %d", change);
        evs_stream_info after;
        cr_assert_eq(evs_stream_info_get(st, S("s"), &after), 0);
        cr_assert_eq(after.entries_added, mid.entries_added, "change %d", change);
    }
    /* dropped and re-created: a different stream */
    evs_stream_version(st, S("s"), &w[0].version);
    bool existed;
    cr_assert_eq(evs_stream_drop(st, S("s"), &existed, &err), 0);
    evs_stream_version(st, S("s"), &v);
    cr_assert_eq(v.stream, 0);
    fill(st, "s", 1, NULL);
    evs_stream_version(st, S("s"), &v);
    cr_assert_neq(v.stream, w[0].version.stream);
    cr_assert_eq(submit_watched_wait(st, &a, w, 1), EVS_ECHANGED);
    evs_close(st);
}

/* Filter-index groups stay open across index commits (postings.c P1-P3): every entry is found
 * exactly once however many commits its group spans, after a drop and re-create of a stream
 * with open groups, after reopen, and after the index is rebuilt. */
static void check_filtered(evs_store *st, const char *name, long want)
{
    evs_id got[200];
    evs_query q;
    evs_query_init(&q);
    q.type = S("t");
    cr_assert_eq(read_ids(st, name, &q, got, 200), want, "%s by type", name);
    for (long i = 1; i < want; i++)
        cr_assert_gt(evs_id_cmp(got[i], got[i - 1]), 0, "%s: in order, no repeats", name);
    evs_query_init(&q);
    q.source = S("src");
    cr_assert_eq(read_ids(st, name, &q, got, 200), want, "%s by source", name);
}

Test(store, filter_groups_span_commits)
{
    evs_store *st = open_store(dir, NULL);
    const char *names[3] = {"a", "b", "c"};
    for (int i = 0; i < 300; i++) {
        cr_assert_eq(add(st, names[i % 3], EVS_ID_AUTO, EVS_ID_MIN, NULL, "type", "t", "source",
                         "src", "n", "x", NULL),
                     0);
        if (i % 15 == 14)
            usleep(15000); /* the index commits 10 ms after a publish: ~20 commits */
    }
    for (int i = 0; i < 3; i++)
        check_filtered(st, names[i], 100);
    bool existed;
    evs_error err;
    cr_assert_eq(evs_stream_drop(st, S("b"), &existed, &err), 0);
    usleep(15000);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(add(st, "b", EVS_ID_AUTO, EVS_ID_MIN, NULL, "type", "t", "source", "src",
                         NULL),
                     0);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(add(st, "a", EVS_ID_AUTO, EVS_ID_MIN, NULL, "type", "t", "source", "src",
                         NULL),
                     0);
    usleep(15000);
    check_filtered(st, "a", 110);
    check_filtered(st, "b", 5);
    evs_close(st);
    st = open_store(dir, NULL);
    check_filtered(st, "a", 110);
    check_filtered(st, "b", 5);
    check_filtered(st, "c", 100);
    cr_assert_eq(add(st, "c", EVS_ID_AUTO, EVS_ID_MIN, NULL, "type", "t", "source", "src", NULL),
                 0);
    evs_close(st);
    rm_index(dir);
    st = open_store(dir, NULL);
    check_filtered(st, "a", 110);
    check_filtered(st, "b", 5);
    check_filtered(st, "c", 101);
    evs_close(st);
}

/* Many more (stream, source) lists than open groups (postings.c POST_OPEN_MAX): each index
 * commit closes most groups, and their buffers go to the groups the next entries open (P5).
 * Every source's entries are found exactly, forward and reverse, across the rounds of commits,
 * and after reopen. */
#define MANY_SOURCES 10000
static void check_source(evs_store *st, int j, evs_id ids[][MANY_SOURCES], int rounds)
{
    char src[16];
    snprintf(src, sizeof src, "s%d", j);
    for (int rev = 0; rev < 2; rev++) {
        evs_query q;
        evs_query_init(&q);
        q.source = S(src);
        q.reverse = rev;
        evs_id got[8];
        cr_assert_eq(read_ids(st, "m", &q, got, 8), rounds, "%s (reverse %d)", src, rev);
        for (int r = 0; r < rounds; r++) {
            evs_id want = ids[rev ? rounds - 1 - r : r][j];
            cr_assert_eq(evs_id_cmp(got[r], want), 0, "%s entry %d (reverse %d)", src, r, rev);
        }
    }
}

/* postings.c P3: a forgotten stream's groups are never put again — not the one added to before
 * the forget in the same commit, not one met later by retention — and its next entry starts a
 * new key; other streams' groups are untouched. (A forget is a note, not a walk of the table.) */
Test(store, a_forgotten_streams_filter_groups_are_never_put_again)
{
    postings *p = post_new();
    idx_batch *b = idx_batch_new();
    cr_assert(p && b);
    cr_assert_eq(post_add(p, b, 7, 1, 42, (evs_id){1, 0}, 100), 0);
    cr_assert_eq(post_add(p, b, 8, 1, 42, (evs_id){1, 1}, 200), 0);
    cr_assert_eq(post_flush(p, b), 0);
    cr_assert_eq(idx_batch_count(b), 2);
    idx_batch_clear(b);
    /* added to in this commit, then forgotten: not put */
    cr_assert_eq(post_add(p, b, 7, 1, 42, (evs_id){2, 0}, 300), 0);
    cr_assert_eq(post_add(p, b, 7, 2, 9, (evs_id){2, 0}, 300), 0);
    cr_assert_eq(post_add(p, b, 8, 1, 42, (evs_id){2, 1}, 400), 0);
    post_forget_stream(p, 7);
    /* retention meets the forgotten key: closed, nothing to keep */
    uint8_t key[IDX_FILTKEY];
    idx_be32(key, 7);
    key[4] = 1;
    idx_be64(key + 5, 42);
    idx_be64(key + 13, 1);
    idx_be64(key + 21, 0);
    cr_assert(post_close_key(p, key, (evs_id){0, 0}));
    cr_assert_eq(post_flush(p, b), 0);
    cr_assert_eq(idx_batch_count(b), 1, "%zu keys put", idx_batch_count(b)); /* stream 8's */
    idx_batch_clear(b);
    /* forgotten again, as a relocation does just before its copies: the next entry starts a
     * new key, which the entries after it join (in that commit and, the note gone, later) */
    post_forget_stream(p, 7);
    cr_assert_eq(post_add(p, b, 7, 1, 42, (evs_id){3, 0}, 500), 0);
    cr_assert_eq(post_add(p, b, 7, 1, 42, (evs_id){3, 1}, 510), 0);
    idx_be64(key + 13, 3);
    cr_assert_not(post_close_key(p, key, (evs_id){3, 1})); /* open at (3-0), holds 3-1 */
    cr_assert_eq(post_flush(p, b), 0);
    cr_assert_eq(idx_batch_count(b), 1);
    idx_batch_clear(b);
    cr_assert_eq(post_add(p, b, 7, 1, 42, (evs_id){4, 0}, 600), 0);
    cr_assert_not(post_close_key(p, key, (evs_id){4, 0}));
    /* forgetting thousands of streams in one commit, then adding to each again */
    for (uint32_t no = 100; no < 20100; no++)
        cr_assert_eq(post_add(p, b, no, 1, no, (evs_id){5, 0}, no), 0);
    for (uint32_t no = 100; no < 20100; no++)
        post_forget_stream(p, no);
    for (uint32_t no = 100; no < 20100; no += 2)
        cr_assert_eq(post_add(p, b, no, 1, no, (evs_id){6, 0}, no), 0);
    cr_assert_eq(post_flush(p, b), 0);
    cr_assert_eq(idx_batch_count(b), 1 + 10000, "%zu keys put", idx_batch_count(b));
    idx_batch_free(b);
    post_free(p);
}

Test(store, filter_groups_of_many_sources_reuse_buffers_exactly, .timeout = 120)
{
    evs_options o;
    evs_options_init(&o);
    o.fsync = EVS_FSYNC_NO;
    evs_store *st = open_store(dir, &o);
    static evs_id ids[3][MANY_SOURCES];
    char src[16];
    for (int r = 0; r < 3; r++) {
        for (int j = 0; j < MANY_SOURCES; j++) {
            snprintf(src, sizeof src, "s%d", j);
            cr_assert_eq(add(st, "m", EVS_ID_AUTO, EVS_ID_MIN, &ids[r][j], "source", src,
                             "type", "t", NULL),
                         0);
        }
        usleep(30000); /* the index commits 10 ms after a publish */
    }
    for (int j = 0; j < MANY_SOURCES; j += 499)
        check_source(st, j, ids, 3);
    check_source(st, MANY_SOURCES - 1, ids, 3);
    evs_query q;
    evs_query_init(&q);
    q.type = S("t");
    static evs_id all[3 * MANY_SOURCES];
    cr_assert_eq(read_ids(st, "m", &q, all, 3 * MANY_SOURCES), 3 * MANY_SOURCES);
    evs_close(st);
    st = open_store(dir, &o);
    for (int j = 0; j < MANY_SOURCES; j += 997)
        check_source(st, j, ids, 3);
    evs_close(st);
}

static void inline_done(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err)
{
    (void)ids;
    (void)err;
    __atomic_store_n((int *)arg, rc == 0 && n == 1 ? 1 : -1, __ATOMIC_SEQ_CST);
}

/* evs_submit_release_inline commits on the calling thread while the writer thread is idle: the
 * callback has run when it returns. Under everysec the writer thread still syncs afterwards:
 * the inline commit tells it when its timed work falls due. (Idle cannot be seen from here:
 * a writer thread descheduled for 20 ms on a loaded machine is still busy with its last
 * turn, and then takes the request itself, as documented. So most rounds, not all, must run
 * on the caller; every round's entry is acknowledged and synced.) */
Test(store, inline_release_commits_on_the_caller_and_everysec_still_syncs)
{
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 1 << 20;
    o.fsync = EVS_FSYNC_EVERYSEC;
    evs_store *st = open_store(dir, &o);
    int rounds = 5, on_caller = 0;
    for (int round = 0; round < rounds; round++) {
        usleep(20000); /* the writer thread is idle: nothing queued, index committed */
        evs_field f = {S("k"), S("v")};
        evs_append a = {S("inl"), EVS_ID_AUTO, {0, 0}, &f, 1, false};
        int done = 0;
        evs_submit_hold(st);
        cr_assert_eq(evs_submit(st, &a, 1, inline_done, &done, NULL), 0);
        evs_submit_release_inline(st);
        on_caller += __atomic_load_n(&done, __ATOMIC_SEQ_CST) == 1;
        for (int waited = 0; waited < 500 && !__atomic_load_n(&done, __ATOMIC_SEQ_CST); waited++)
            usleep(10000);
        cr_assert_eq(__atomic_load_n(&done, __ATOMIC_SEQ_CST), 1, "round %d: not acknowledged",
                     round);
        evs_store_stats s;
        for (int waited = 0; waited < 500; waited++) { /* everysec: well within 5 s */
            evs_store_stats_get(st, &s);
            if (s.synced_end == s.log_end)
                break;
            usleep(10000);
        }
        cr_assert_eq(s.synced_end, s.log_end, "round %d: the log was never synced", round);
    }
    cr_assert_geq(on_caller, 3, "%d of %d rounds ran on the caller", on_caller, rounds);
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(st, S("inl"), &info), 0);
    cr_assert_eq(info.length, (uint64_t)rounds);
    cr_assert_eq(evs_close(st), 0);
}

/* An idle store burns no CPU in any fsync mode: the writer thread sleeps until work falls due
 * (a writer that kept waking for a sync `--fsync no` never does once spun at 100 %). */
Test(store, an_idle_store_does_not_spin)
{
    const evs_fsync_mode modes[] = {EVS_FSYNC_ALWAYS, EVS_FSYNC_EVERYSEC, EVS_FSYNC_NO};
    for (size_t m = 0; m < 3; m++) {
        evs_options o;
        evs_options_init(&o);
        o.segment_bytes = 1 << 20;
        o.fsync = modes[m];
        evs_store *st = open_store(dir, &o);
        cr_assert_eq(add(st, "idle", EVS_ID_AUTO, EVS_ID_MIN, NULL, "k", "v", NULL), 0);
        usleep(1200 * 1000); /* past the index commit and the everysec sync */
        struct timespec a, b;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
        usleep(500 * 1000);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
        double cpu = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
        cr_assert_lt(cpu, 0.1, "fsync mode %d: %.3f s of CPU in 0.5 s of idleness", (int)modes[m],
                     cpu);
        cr_assert_eq(evs_close(st), 0);
    }
}

static void burst_done(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err)
{
    (void)ids;
    (void)n;
    (void)err;
    if (rc)
        __atomic_fetch_add((int *)arg, 1, __ATOMIC_RELAXED);
}

/* The index is applied by the indexer thread, off the writer's path (indexer.c): a commit that
 * falls due while it is busy waits in the writer's batch, and the indexer hands the turn back
 * when it is free (X5). After a burst that kept it busy, the index reaches the log's end with no
 * further request, and what it says is right (filtered reads, a reopen with no recovery). */
Test(store, the_index_catches_up_after_a_burst_without_new_requests)
{
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 16 << 20;
    o.fsync = EVS_FSYNC_NO;
    evs_store *st = open_store(dir, &o);
    enum { ROUNDS = 400, PER = 256 };
    static char srcs[PER][16];
    evs_field f[PER][2];
    evs_append a[PER];
    int failed = 0;
    evs_store_stats s;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < PER; i++) { /* a source per entry: one filter key per entry */
            snprintf(srcs[i], sizeof srcs[i], "s%d", r * PER + i);
            f[i][0] = (evs_field){S("source"), S(srcs[i])};
            f[i][1] = (evs_field){S("type"), S(i % 100 ? "common" : "rare")};
            a[i] = (evs_append){S(i % 2 ? "odd" : "even"), EVS_ID_AUTO, {0, 0}, f[i], 2, false};
        }
        cr_assert_eq(evs_submit(st, a, PER, burst_done, &failed, NULL), 0);
    }
    evs_id last;
    cr_assert_eq(add(st, "even", EVS_ID_AUTO, EVS_ID_MIN, &last, "source", "end", NULL), 0);
    evs_store_stats_get(st, &s);
    uint64_t deferred = s.index_deferred;
    for (int waited = 0; waited < 500; waited++) { /* 10 ms cadence: well within 5 s */
        evs_store_stats_get(st, &s);
        if (s.index_end == s.log_end)
            break;
        usleep(10000);
    }
    /* every batch completed before the last add did (in order) */
    cr_assert_eq(__atomic_load_n(&failed, __ATOMIC_RELAXED), 0);
    cr_assert_eq(s.index_end, s.log_end, "the index stopped %llu bytes short of the log",
                 (unsigned long long)(s.log_end - s.index_end));
    cr_log_info("index commits deferred during the burst: %llu", (unsigned long long)deferred);
    evs_query q;
    evs_query_init(&q);
    q.type = S("rare");
    evs_id ids[ROUNDS * 3];
    cr_assert_eq(read_ids(st, "even", &q, ids, ROUNDS * 3), ROUNDS * 3); /* i = 0, 100, 200 */
    cr_assert_eq(read_ids(st, "odd", &q, ids, ROUNDS * 3), 0);
    q.type = (evs_slice){0};
    q.source = S("s1000");
    cr_assert_eq(read_ids(st, "even", &q, ids, 2), 1);
    cr_assert_eq(evs_close(st), 0);
    st = open_store(dir, &o);
    evs_store_stats_get(st, &s);
    cr_assert_eq(s.recovered_records, 0, "the index left %llu records for recovery",
                 (unsigned long long)s.recovered_records);
    q.source = S("end");
    cr_assert_eq(read_ids(st, "even", &q, ids, 2), 1);
    cr_assert_eq(ids[0].ms, last.ms);
    cr_assert_eq(evs_close(st), 0);
}

static void count_hook(void *arg, const evs_slice *streams, size_t n)
{
    (void)streams;
    size_t *c = arg; /* [calls, names] */
    __atomic_add_fetch(&c[0], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&c[1], n, __ATOMIC_RELAXED);
}

/* The visibility cap (visible.c V1-V4): batches past it are written and completed but not
 * seen, in log order, until the cap reaches their end; lifting it publishes the rest. */
Test(store, a_visibility_cap_holds_batches_back_in_log_order)
{
    evs_store *st = open_store(dir, NULL);
    size_t calls[2] = {0, 0};
    evs_set_visible_hook(st, count_hook, calls);
    evs_id first, id[3];
    cr_assert_eq(add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, &first, "k", "0", NULL), 0);
    evs_store_stats s;
    evs_store_stats_get(st, &s);
    cr_assert_eq(s.visible_end, s.log_end);
    evs_set_visible_cap(st, s.log_end);
    uint64_t ends[3];
    for (int i = 0; i < 3; i++) { /* each add is its own batch */
        cr_assert_eq(add(st, i == 1 ? "new" : "s", EVS_ID_AUTO, EVS_ID_MIN, &id[i], "k", "1",
                         NULL), 0);
        evs_store_stats_get(st, &s);
        ends[i] = s.log_end;
    }
    evs_stream_info info;
    evs_id got[4];
    cr_assert_eq(evs_stream_info_get(st, S("s"), &info), 0);
    cr_assert_eq(info.length, 1);
    cr_assert_eq(read_ids(st, "s", NULL, got, 4), 1);
    cr_assert_eq(evs_stream_info_get(st, S("new"), &info), EVS_ENOTFOUND);
    cr_assert_eq(evs_wait(st, S("s"), first, 50), 0, "a held entry woke a waiter");
    evs_store_stats_get(st, &s);
    cr_assert_lt(s.visible_end, ends[0]);
    cr_assert_eq(s.streams, 1);
    cr_assert_eq(__atomic_load_n(&calls[1], __ATOMIC_RELAXED), 1, "held batches named streams");
    cr_assert_geq(__atomic_load_n(&calls[0], __ATOMIC_RELAXED), 4, "the log grew unannounced");
    evs_set_visible_cap(st, ends[1] - 1); /* inside the second batch: only the first shows */
    cr_assert_eq(read_ids(st, "s", NULL, got, 4), 2);
    cr_assert_eq(evs_id_cmp(got[1], id[0]), 0);
    cr_assert_eq(evs_stream_info_get(st, S("new"), &info), EVS_ENOTFOUND);
    evs_store_stats_get(st, &s);
    cr_assert_eq(s.visible_end, ends[0]);
    evs_set_visible_cap(st, ends[1]);
    cr_assert_eq(evs_stream_info_get(st, S("new"), &info), 0);
    cr_assert_eq(read_ids(st, "s", NULL, got, 4), 2, "the third batch showed before its turn");
    cr_assert_eq(__atomic_load_n(&calls[1], __ATOMIC_RELAXED), 3);
    evs_set_visible_cap(st, EVS_CAP_NONE);
    cr_assert_eq(read_ids(st, "s", NULL, got, 4), 3);
    cr_assert_eq(evs_id_cmp(got[2], id[2]), 0);
    evs_store_stats_get(st, &s);
    cr_assert_eq(s.visible_end, s.log_end);
    cr_assert_eq(s.streams, 2);
    /* a batch held at close is not lost: the log has it, the next open sees it */
    evs_set_visible_cap(st, s.log_end);
    cr_assert_eq(add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, &id[0], "k", "2", NULL), 0);
    cr_assert_eq(read_ids(st, "s", NULL, got, 4), 3);
    cr_assert_eq(evs_close(st), 0);
    st = open_store(dir, NULL);
    cr_assert_eq(read_ids(st, "s", NULL, got, 4), 4);
    cr_assert_eq(evs_close(st), 0);
}

/* visible.c V5: however long the cap stands still, held batches stay bounded — past 1,024 a
 * new one merges into the last — and a merged batch shows only once the cap passes its new
 * end, with each stream's latest state. */
Test(store, held_batches_merge_past_their_bound)
{
    evs_options o;
    evs_options_init(&o);
    o.fsync = EVS_FSYNC_NO;
    evs_store *st = open_store(dir, &o);
    evs_store_stats s;
    evs_store_stats_get(st, &s);
    evs_set_visible_cap(st, s.log_end);
    enum { N = 1500 };
    static uint64_t ends[N];
    static const char *names[3] = {"a", "b", "c"};
    for (int i = 0; i < N; i++) { /* one batch each: add waits for its own */
        evs_id id;
        cr_assert_eq(add(st, names[i % 3], EVS_ID_AUTO, EVS_ID_MIN, &id, "k", "v", NULL), 0);
        evs_store_stats_get(st, &s);
        ends[i] = s.log_end;
    }
    cr_assert_eq(s.streams, 0);
    evs_set_visible_cap(st, ends[999]); /* batches below the bound show one by one */
    evs_stream_info info;
    uint64_t total = 0;
    for (int k = 0; k < 3; k++)
        total += evs_stream_info_get(st, S(names[k]), &info) == 0 ? info.length : 0;
    cr_assert_eq(total, 1000);
    evs_set_visible_cap(st, ends[1199]); /* inside the merged last batch: it waits whole */
    total = 0;
    for (int k = 0; k < 3; k++)
        total += evs_stream_info_get(st, S(names[k]), &info) == 0 ? info.length : 0;
    cr_assert_eq(total, 1023, "held batches did not merge past the bound (%llu visible)",
                 (unsigned long long)total);
    evs_set_visible_cap(st, ends[N - 1]);
    evs_id ids[N];
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(evs_stream_info_get(st, S(names[k]), &info), 0);
        cr_assert_eq(info.length, N / 3);
        cr_assert_eq(read_ids(st, names[k], NULL, ids, N), N / 3);
    }
    evs_store_stats_get(st, &s);
    cr_assert_eq(s.visible_end, s.log_end);
    cr_assert_eq(evs_close(st), 0);
}

/*
 * Reads against a model: three streams interleaved in the log, appends with and without a
 * `source`/`type` (three values each, so filters match about a third), XDELs, exact trims and
 * reopens (recovery re-indexes the tail) in a seeded random order; after each step a random
 * query (bounds inclusive or exclusive, forward or reverse, a limit, filters) must return
 * exactly what the model says. Filtered reads take the postings below the index watermark
 * and walk the tail above it, so both paths (and their seam) are checked.
 */
#define MODEL_MAX 3000
struct mentry {
    evs_id id;
    int src, typ; /* -1: no such field */
    bool gone;    /* deleted or trimmed */
};
struct mstream {
    struct mentry e[MODEL_MAX];
    size_t n;
};

static const char *const model_vals[] = {"a", "b", "c"};

static bool model_match(const struct mentry *m, const evs_query *q, int src, int typ)
{
    if (m->gone)
        return false;
    int lo = evs_id_cmp(m->id, q->start), hi = evs_id_cmp(m->id, q->end);
    if (lo < 0 || (lo == 0 && q->start_exclusive) || hi > 0 || (hi == 0 && q->end_exclusive))
        return false;
    return (src < 0 || m->src == src) && (typ < 0 || m->typ == typ);
}

static evs_id model_id(const struct mstream *ms, unsigned *seed)
{
    if (!ms->n || rand_r(seed) % 8 == 0)
        return (evs_id){(uint64_t)(rand_r(seed) % 4000), (uint64_t)(rand_r(seed) % 3)};
    return ms->e[rand_r(seed) % ms->n].id;
}

Test(store, random_reads_match_a_model, .timeout = 120)
{
    static struct mstream model[3];
    memset(model, 0, sizeof model);
    const char *names[3] = {"m0", "", "m2"}; /* the empty name is a name like any other */
    /* EVS_MODEL_SEED: another seed, to search further by hand */
    unsigned seed = getenv("EVS_MODEL_SEED") ? (unsigned)atoi(getenv("EVS_MODEL_SEED")) : 20261129;
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 64 << 10;
    o.fsync = EVS_FSYNC_NO;
    o.retention_interval_ms = 3600 * 1000; /* passes only when the test runs one */
    evs_store *st = open_store(dir, &o);
    uint64_t next_ms = 1;
    long checked = 0;
    uint64_t relocated = 0;
    for (int step = 0; step < 4000; step++) {
        int k = rand_r(&seed) % 3, op = rand_r(&seed) % 100;
        struct mstream *ms = &model[k];
        evs_error err;
        if (op < 70 && ms->n < MODEL_MAX) {
            struct mentry m = {{next_ms, (uint64_t)(rand_r(&seed) % 2)}, -1, -1, false};
            next_ms += 1 + rand_r(&seed) % 3;
            evs_field f[3];
            size_t nf = 0;
            f[nf++] = (evs_field){S("n"), S("x")};
            if (rand_r(&seed) % 5) {
                m.src = rand_r(&seed) % 3;
                f[nf++] = (evs_field){S("source"), S(model_vals[m.src])};
            }
            if (rand_r(&seed) % 5) {
                m.typ = rand_r(&seed) % 3;
                f[nf++] = (evs_field){S("type"), S(model_vals[m.typ])};
            }
            evs_append a = {S(names[k]), EVS_ID_EXPLICIT, m.id, f, nf, false};
            cr_assert_eq(evs_append_one(st, &a, NULL, &err), 0, "%s", err.msg);
            ms->e[ms->n++] = m;
        } else if (op < 85 && ms->n) {
            evs_id id = ms->e[rand_r(&seed) % ms->n].id;
            size_t deleted = 0;
            cr_assert_eq(evs_delete(st, S(names[k]), &id, 1, &deleted, &err), 0, "%s", err.msg);
            size_t want = 0;
            for (size_t i = 0; i < ms->n; i++)
                if (!evs_id_cmp(ms->e[i].id, id) && !ms->e[i].gone) {
                    ms->e[i].gone = true;
                    want = 1;
                }
            cr_assert_eq(deleted, want);
        } else if (op < 92 && ms->n) {
            size_t live = 0;
            for (size_t i = 0; i < ms->n; i++)
                live += !ms->e[i].gone;
            evs_trim t = {0};
            t.kind = EVS_TRIM_MAXLEN;
            t.maxlen = live ? (uint64_t)(rand_r(&seed) % (live + 1)) : 0;
            uint64_t removed = 0;
            cr_assert_eq(evs_trim_stream(st, S(names[k]), &t, &removed, &err), 0, "%s", err.msg);
            uint64_t drop = live > t.maxlen ? live - t.maxlen : 0;
            cr_assert_eq(removed, drop);
            for (size_t i = 0; i < ms->n && drop; i++)
                if (!ms->e[i].gone) {
                    ms->e[i].gone = true;
                    drop--;
                }
        } else if (op < 93) {
            cr_assert_eq(evs_close(st), 0);
            st = open_store(dir, &o);
        } else if (op < 95 && k == 0 && ms->n) {
            /* retention: m0 keeps its last `keep` live entries; segments the others pin are
             * freed by relocating their live entries (reads must not change) */
            size_t live = 0;
            for (size_t i = 0; i < ms->n; i++)
                live += !ms->e[i].gone;
            uint64_t keep = 1 + (uint64_t)(rand_r(&seed) % (live + 1));
            evs_retention own = {0, 0, keep};
            cr_assert_eq(evs_retention_set(st, S(names[0]), &own, &err), 0, "%s", err.msg);
            evs_retention_report rep;
            cr_assert_eq(evs_retention_run(st, &rep, &err), 0, "%s", err.msg);
            relocated += rep.streams_relocated;
            size_t drop = live > keep ? live - keep : 0;
            cr_assert_eq(rep.trimmed, drop);
            for (size_t i = 0; i < ms->n && drop; i++)
                if (!ms->e[i].gone) {
                    ms->e[i].gone = true;
                    drop--;
                }
        }
        /* a random query against the model */
        evs_query q;
        evs_query_init(&q);
        if (rand_r(&seed) % 4)
            q.start = model_id(ms, &seed);
        if (rand_r(&seed) % 4)
            q.end = model_id(ms, &seed);
        q.start_exclusive = rand_r(&seed) % 4 == 0;
        q.end_exclusive = rand_r(&seed) % 4 == 0;
        q.reverse = rand_r(&seed) % 2;
        q.limit = rand_r(&seed) % 3 ? 0 : 1 + rand_r(&seed) % 20;
        int src = rand_r(&seed) % 3 ? -1 : rand_r(&seed) % 3;
        int typ = rand_r(&seed) % 3 ? -1 : rand_r(&seed) % 3;
        if (src >= 0)
            q.source = S(model_vals[src]);
        if (typ >= 0)
            q.type = S(model_vals[typ]);
        static const struct mentry *want[MODEL_MAX];
        size_t nw = 0;
        for (size_t j = 0; j < ms->n; j++) {
            size_t i = q.reverse ? ms->n - 1 - j : j;
            if (model_match(&ms->e[i], &q, src, typ) && (!q.limit || nw < q.limit))
                want[nw++] = &ms->e[i];
        }
        /* the entries, their IDs and their fields, as the model has them */
        evs_iter *it;
        size_t ng = 0;
        int rc = evs_iter_open(st, S(names[k]), &q, &it, &err);
        if (rc != EVS_ENOTFOUND) {
            cr_assert_eq(rc, 0, "%s", err.msg);
            const evs_entry *e;
            while ((rc = evs_iter_next(it, &e, &err)) == 1) {
                cr_assert_lt(ng, nw, "step %d stream %d: more entries than the model's %zu",
                             step, k, nw);
                const struct mentry *m = want[ng++];
                cr_assert_eq(evs_id_cmp(e->id, m->id), 0, "step %d: entry %zu differs", step,
                             ng - 1);
                int fs = -1, ft = -1;
                for (size_t f = 0; f < e->nfields; f++)
                    for (int v = 0; v < 3; v++) {
                        bool is_v = e->fields[f].value.len == 1 &&
                                    ((const char *)e->fields[f].value.ptr)[0] == model_vals[v][0];
                        if (e->fields[f].name.len == 6 && is_v &&
                            !memcmp(e->fields[f].name.ptr, "source", 6))
                            fs = v;
                        if (e->fields[f].name.len == 4 && is_v &&
                            !memcmp(e->fields[f].name.ptr, "type", 4))
                            ft = v;
                    }
                cr_assert(fs == m->src && ft == m->typ, "step %d: entry %zu's fields differ",
                          step, ng - 1);
            }
            cr_assert_eq(rc, 0, "%s", err.msg);
            evs_iter_close(it);
        }
        cr_assert_eq(ng, nw, "step %d stream %d: %zu entries, the model %zu (reverse %d limit "
                     "%llu src %d typ %d)", step, k, ng, nw, q.reverse,
                     (unsigned long long)q.limit, src, typ);
        checked += (long)ng;
    }
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
    cr_assert_gt(checked, 1000); /* (the queries were not all empty) */
    if (!getenv("EVS_MODEL_SEED"))
        cr_assert_gt(relocated, 0, "no relocation happened: the test lost its reach");
}

/* ---- segment.c M1-M4: mappings past the process's cap ----------------------------------- */

struct map_reader {
    evs_store *st;
    int n;              /* entries the stream had when the readers began (0..n-1 exist) */
    atomic_bool *stop;
    long reads, bad;
};

/* Reads random runs of the stream and checks each entry's n field is its position. */
static void *map_reader_main(void *arg)
{
    struct map_reader *r = arg;
    unsigned seed = (unsigned)(uintptr_t)r;
    while (!atomic_load(r->stop)) {
        int from = rand_r(&seed) % r->n;
        evs_query q;
        evs_query_init(&q);
        q.start = (evs_id){1, (uint64_t)from};
        q.limit = 40;
        evs_iter *it;
        evs_error err;
        if (evs_iter_open(r->st, S("m"), &q, &it, &err)) {
            r->bad++;
            continue;
        }
        const evs_entry *e;
        int rc, k = from;
        while ((rc = evs_iter_next(it, &e, &err)) == 1) {
            char want[16];
            snprintf(want, sizeof want, "%d", k++);
            if (e->nfields != 2 || e->fields[0].value.len != strlen(want) ||
                memcmp(e->fields[0].value.ptr, want, strlen(want)))
                r->bad++;
        }
        if (rc)
            r->bad++;
        evs_iter_close(it);
        r->reads++;
    }
    return NULL;
}

/* With the process's segment mappings capped at 24 and a log of ~100 segments: readers on two
 * threads read random runs across all of them while a writer appends, every entry read is
 * right, and the mappings held stay near the cap (evicted ones are mapped again when read);
 * verify passes; after a reopen the same. (Mutation-checked: without eviction the mappings
 * grow with the log; without the SEG_EVICTING check in seg_data, readers crash or misread.) */
Test(store, segment_mappings_stay_under_the_cap_and_reads_stay_exact, .timeout = 120)
{
    seg_test_map_cap = 24;
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 64 << 10;
    evs_store *st = open_store(dir, &o);
    char n[16], pad[400];
    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = 0;
    int total = 0;
    for (; total < 8000; total++) {
        snprintf(n, sizeof n, "%d", total);
        cr_assert_eq(add(st, "m", EVS_ID_EXPLICIT, (evs_id){1, (uint64_t)total}, NULL, "n", n,
                         "pad", pad, NULL), 0);
    }
    atomic_bool stop = false;
    struct map_reader r[2] = {{st, total, &stop, 0, 0}, {st, total, &stop, 0, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, map_reader_main, &r[i]), 0);
    for (; total < 12000; total++) { /* the log grows under the readers */
        snprintf(n, sizeof n, "%d", total);
        cr_assert_eq(add(st, "m", EVS_ID_EXPLICIT, (evs_id){1, (uint64_t)total}, NULL, "n", n,
                         "pad", pad, NULL), 0);
    }
    while (r[0].reads + r[1].reads < 3000)
        usleep(1000);
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(r[0].bad + r[1].bad, 0, "%ld bad reads", r[0].bad + r[1].bad);
    evs_store_stats stats;
    evs_store_stats_get(st, &stats);
    cr_assert_gt(stats.segments, 80, "only %lu segments", (unsigned long)stats.segments);
    cr_assert_leq(seg_maps_held(), 24 + 4, "%zu mappings held", seg_maps_held());
    cr_assert_eq(verify_print(st), 0);
    cr_assert_leq(seg_maps_held(), 24 + 4, "%zu mappings held", seg_maps_held());
    cr_assert_eq(evs_close(st), 0);
    cr_assert_eq(seg_maps_held(), 0);
    st = open_store(dir, &o);
    evs_id *ids = malloc(sizeof *ids * 13000);
    cr_assert_eq(read_ids(st, "m", NULL, ids, 13000), 12000);
    for (int i = 0; i < 12000; i++)
        cr_assert_eq(ids[i].seq, (uint64_t)i);
    free(ids);
    cr_assert_leq(seg_maps_held(), 24 + 4, "%zu mappings held", seg_maps_held());
    cr_assert_eq(evs_close(st), 0);
    seg_test_map_cap = 0;
}

/* M3: a reference taken on a segment while its eviction runs (between the swap and the
 * unmapping) gets a mapping that stays: seg_data waits for the eviction and maps it again,
 * instead of handing out the pointer being unmapped. The hook holds the eviction open while
 * the test takes its reference and reads. (Mutation-checked: without the SEG_EVICTING check
 * in seg_data, the pointer, unmapped, shows another segment mapped there since.) */
static segment *evicting_now;
static atomic_int evict_phase;

static void hold_eviction(segment *s)
{
    if (evicting_now)
        return;
    evicting_now = s;
    atomic_store(&evict_phase, 1);
    while (atomic_load(&evict_phase) == 1) /* until the test has taken its reference */
        usleep(1000);
    usleep(200000); /* ... and called seg_data, which waits for this eviction (M3) */
}

static void *read_everything(void *arg)
{
    evs_id *ids = malloc(sizeof *ids * 5000);
    cr_assert_eq(read_ids(arg, "m", NULL, ids, 5000), 3000);
    free(ids);
    return NULL;
}

Test(store, a_reference_taken_during_an_eviction_reads_a_live_mapping, .timeout = 60)
{
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 64 << 10;
    evs_store *st = open_store(dir, &o);
    char pad[400];
    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = 0;
    for (int i = 0; i < 3000; i++)
        cr_assert_eq(add(st, "m", EVS_ID_AUTO, EVS_ID_MIN, NULL, "pad", pad, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
    st = open_store(dir, &o); /* nothing mapped but what the open read */
    seg_test_map_cap = 4;
    seg_test_evicting = hold_eviction;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_everything, st), 0);
    while (atomic_load(&evict_phase) != 1)
        usleep(1000);
    segment *s = evicting_now;
    atomic_fetch_add(&s->refs, 1); /* as store_seg_get would, while the eviction runs */
    atomic_store(&evict_phase, 2);
    const uint8_t *p = seg_data(s);
    cr_assert(p != NULL);
    usleep(300000); /* the eviction is over: its unmapping done, others mapped since */
    uint8_t want[4096];
    cr_assert_eq(pread(s->fd, want, sizeof want, 0), (ssize_t)sizeof want);
    cr_assert_eq(memcmp(p, want, sizeof want), 0, "the pointer shows another file");
    store_seg_put(s);
    pthread_join(t, NULL);
    seg_test_evicting = NULL;
    seg_test_map_cap = 0;
    cr_assert_eq(evs_close(st), 0);
}

/* The store's threads carry their names (docs/architecture.md, Threads): an operator's
 * `top -H` or a probe's /proc/PID/task/TID/comm tells the writer from the indexer. */
static bool thread_named(const char *want)
{
    DIR *d = opendir("/proc/self/task");
    cr_assert(d);
    bool found = false;
    for (struct dirent *e; !found && (e = readdir(d));) {
        char p[300], comm[32] = "";
        snprintf(p, sizeof p, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(p, "r");
        if (f) {
            found = fgets(comm, sizeof comm, f) && strcspn(comm, "\n") == strlen(want) &&
                    !strncmp(comm, want, strlen(want));
            fclose(f);
        }
    }
    closedir(d);
    return found;
}

Test(store, its_threads_carry_their_names)
{
    evs_store *st = open_store(dir, NULL);
    const char *names[] = {"evs-writer", "evs-indexer", "evs-checkpoint", "evs-preparer"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        cr_assert(thread_named(names[i]), "no thread named %s", names[i]);
    cr_assert_eq(evs_close(st), 0);
    cr_assert(!thread_named("evs-writer"), "the writer outlived evs_close");
}

static uint64_t dropped_held(evs_store *st)
{
    evs_store_stats ss;
    evs_store_stats_get(st, &ss);
    return ss.streams_dropped_held;
}

/* Dropped streams are freed by the writer at its next turn past the index commit. */
static bool dropped_held_falls_to(evs_store *st, uint64_t want)
{
    for (int i = 0; i < 500 && dropped_held(st) != want; i++)
        usleep(10000);
    return dropped_held(st) == want;
}

/* streams.c S1-S3: a dropped stream's memory goes once nothing holds it — a store with a stream
 * per session kept ~0.6 KiB for each until close — and never while something does: an
 * iterator opened before the drop reads on (it keeps the number), a listing names it, batches a
 * visibility cap holds keep theirs until the cap lifts. Once every number of a leaf is gone,
 * the by-number tables free the leaf (numtab.h N1). A name dropped and created again is a
 * new stream; the store reopens clean. (Under ASan a use after the free is caught.) */
Test(store, a_dropped_stream_is_freed_once_nothing_holds_it)
{
    evs_store *st = open_store(dir, NULL);
    enum { N = NUMTAB_LEAF + 1000 }; /* numbers 1 to N: the first leaf and part of the next */
    char(*nm)[16] = malloc(N * sizeof *nm);
    evs_slice *names = malloc(N * sizeof *names);
    cr_assert(nm && names);
    evs_error err;
    for (int i = 0; i < N; i++) {
        snprintf(nm[i], sizeof nm[i], "s%d", i);
        names[i] = S(nm[i]);
        cr_assert_eq(add(st, nm[i], EVS_ID_AUTO, (evs_id){0, 0}, NULL, "type", "t", NULL), 0);
    }
    evs_group_op cop = {.cmd = EVS_GROUP_CREATE, .stream = S("s1"), .group = S("g"),
                        .entries_read = EVS_ENTRIES_READ_NONE};
    evs_group_result gres;
    evs_id *gids = NULL;
    cr_assert_eq(evs_group_run(st, &cop, &gres, &gids, &err), 0, "%s", err.msg);
    free(gids);
    evs_iter *it;
    cr_assert_eq(evs_iter_open(st, S("s7"), NULL, &it, &err), 0);
    size_t dropped;
    cr_assert_eq(evs_streams_drop(st, names, N / 2, &dropped, &err), 0, "%s", err.msg);
    cr_assert_eq(dropped, N / 2);
    cr_assert(dropped_held_falls_to(st, 0), "%" PRIu64 " dropped streams still held",
              dropped_held(st));
    const evs_entry *e;
    cr_assert_eq(evs_iter_next(it, &e, &err), 1, "%s", err.msg);
    cr_assert_eq(e->nfields, 1);
    cr_assert_eq(evs_iter_next(it, &e, &err), 0);
    evs_iter_close(it);
    cr_assert_eq(evs_stream_info_get(st, S("s7"), &(evs_stream_info){0}), EVS_ENOTFOUND);

    /* the other half dropped in batches a visibility cap holds: kept until it lifts and the
     * writer's next turn */
    evs_store_stats ss;
    evs_store_stats_get(st, &ss);
    evs_set_visible_cap(st, ss.log_end);
    cr_assert_eq(evs_streams_drop(st, names + N / 2, N / 2, &dropped, &err), 0, "%s", err.msg);
    for (int i = 0; i < 100; i++) { /* created and dropped behind the cap: never visible */
        char h[16];
        snprintf(h, sizeof h, "h%d", i);
        cr_assert_eq(add(st, h, EVS_ID_AUTO, (evs_id){0, 0}, NULL, "n", "1", NULL), 0);
        cr_assert_eq(evs_streams_drop(st, &(evs_slice){h, strlen(h)}, 1, &dropped, &err), 0);
    }
    cr_assert_eq(add(st, "other", EVS_ID_AUTO, (evs_id){0, 0}, NULL, "n", "1", NULL), 0);
    usleep(300000); /* index commits come and go */
    cr_assert_eq(add(st, "other", EVS_ID_AUTO, (evs_id){0, 0}, NULL, "n", "2", NULL), 0);
    cr_assert_eq(dropped_held(st), N / 2 + 100);
    evs_stream_info si;
    cr_assert_eq(evs_stream_info_get(st, names[N - 1], &si), 0); /* still visible */
    evs_set_visible_cap(st, EVS_CAP_NONE);
    cr_assert_eq(evs_stream_info_get(st, names[N - 1], &si), EVS_ENOTFOUND);
    cr_assert_eq(add(st, "other", EVS_ID_AUTO, (evs_id){0, 0}, NULL, "n", "3", NULL), 0);
    cr_assert(dropped_held_falls_to(st, 0), "%" PRIu64 " dropped streams still held",
              dropped_held(st));
    /* every number of the first leaf is gone ("other" came after the h streams: the second) */
    cr_assert_null(st->byno.leaf[0]);
    cr_assert_null(st->vtab.byno.leaf[0]);
    cr_assert_not_null(st->byno.leaf[1]);

    /* a name used again: a new stream with a new number */
    cr_assert_eq(add(st, "s7", EVS_ID_AUTO, (evs_id){0, 0}, NULL, "again", "yes", NULL), 0);
    cr_assert_eq(evs_stream_info_get(st, S("s7"), &si), 0);
    cr_assert_eq(si.length, 1);
    cr_assert_gt(si.number, N);
    cr_assert_eq(verify_print(st), 0);
    evs_close(st);
    st = open_store(dir, NULL);
    cr_assert_eq(evs_stream_info_get(st, S("s7"), &si), 0);
    cr_assert_eq(si.length, 1);
    cr_assert_eq(evs_stream_info_get(st, S("s1"), &si), EVS_ENOTFOUND);
    evs_store_stats_get(st, &ss);
    cr_assert_eq(ss.streams, 2); /* other, s7 */
    cr_assert_eq(verify_print(st), 0);
    evs_close(st);
    free(names);
    free(nm);
}

/* numtab.h N1-N2: values by number in leaves made and freed with their first and last value,
 * walked in order; the highest number costs its leaf and the leaf array, not a dense array. */
Test(store, numbers_find_values_through_a_sparse_table)
{
    numtab t = {NULL, 0};
    static int a, b, c, d;
    const uint32_t top = EVS_STREAM_NO_MAX - 1;
    cr_assert_null(numtab_get(&t, 7));
    cr_assert_eq(numtab_next(&t, 0), NUMTAB_END);
    cr_assert_eq(numtab_set(&t, 1, &a), 0);
    cr_assert_eq(numtab_set(&t, NUMTAB_LEAF - 1, &b), 0);
    cr_assert_eq(numtab_set(&t, 3 * NUMTAB_LEAF, &c), 0);
    cr_assert_eq(numtab_set(&t, top, &d), 0);
    cr_assert_eq(t.nleaf, ((size_t)top >> NUMTAB_SHIFT) + 1, "the leaf array grows to the top");
    cr_assert_eq(numtab_get(&t, 1), &a);
    cr_assert_eq(numtab_get(&t, top), &d);
    cr_assert_null(numtab_get(&t, 2));
    cr_assert_null(numtab_get(&t, NUMTAB_LEAF));
    cr_assert_null(t.leaf[1]);
    uint64_t want[] = {1, NUMTAB_LEAF - 1, 3 * NUMTAB_LEAF, top}, k = 0;
    NUMTAB_EACH(&t, no)
        cr_assert_eq(no, want[k++]);
    cr_assert_eq(k, 4);
    cr_assert_eq(numtab_next(&t, 2), NUMTAB_LEAF - 1);
    cr_assert_eq(numtab_next(&t, NUMTAB_LEAF), 3 * NUMTAB_LEAF);
    cr_assert_eq(numtab_next(&t, (uint64_t)top + 1), NUMTAB_END);
    cr_assert_eq(numtab_set(&t, 1, &c), 0); /* a value replaced: still one slot */
    numtab_clear(&t, 1);
    cr_assert_not_null(t.leaf[0]);
    numtab_clear(&t, 1); /* cleared twice: nothing */
    numtab_clear(&t, 5); /* never set */
    numtab_clear(&t, NUMTAB_LEAF - 1);
    cr_assert_null(t.leaf[0], "its last value gone, the leaf goes");
    cr_assert_eq(numtab_next(&t, 0), 3 * NUMTAB_LEAF);
    numtab_clear(&t, 3 * NUMTAB_LEAF);
    numtab_clear(&t, top);
    cr_assert_eq(numtab_next(&t, 0), NUMTAB_END);
    numtab_free(&t);
    cr_assert_eq(t.nleaf, 0);
}
