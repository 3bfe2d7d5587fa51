/* test_groups.c — consumer groups through the embedded API: deliveries, acks, claims, dead
 * letters; the whole group state identical after a clean reopen, after an index rebuild from
 * the log, and with a large pending list. */
#include "helpers.h"

static char *dir;
static void setup(void) { dir = tmpdir_new(); }
static void teardown(void) { if (!getenv("EVS_KEEP")) rm_rf(dir); free(dir); }
TestSuite(groups, .init = setup, .fini = teardown);

/* ---- helpers ------------------------------------------------------------------------------ */

static int run(evs_store *st, evs_group_op *op, evs_group_result *res, evs_id **ids)
{
    evs_error err = {0};
    evs_group_result local;
    evs_id *tmp = NULL;
    int rc = evs_group_run(st, op, res ? res : &local, ids ? ids : &tmp, &err);
    free(tmp);
    return rc;
}

static evs_group_op gop(evs_group_cmd cmd, const char *stream, const char *group,
                        const char *consumer)
{
    evs_group_op op;
    evs_group_op_init(&op, cmd);
    op.stream = S(stream);
    op.group = S(group);
    if (consumer)
        op.consumer = S(consumer);
    return op;
}

/* Everything observable about a stream's groups, as text (times left out). */
typedef struct dump {
    char *buf;
    size_t len, cap;
    evs_store *st;
    const char *stream;
} dump;

static void put(dump *d, const char *fmt, ...)
{
    char tmp[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (d->len + (size_t)n + 1 > d->cap) {
        d->cap = (d->cap + (size_t)n + 1) * 2;
        d->buf = realloc(d->buf, d->cap);
    }
    memcpy(d->buf + d->len, tmp, (size_t)n + 1);
    d->len += (size_t)n;
}

static int dump_pel(void *arg, const evs_pending_info *p)
{
    put(arg, "  pel %lu-%lu %.*s x%lu @%lu\n", (unsigned long)p->id.ms, (unsigned long)p->id.seq,
        (int)p->consumer.len, (const char *)p->consumer.ptr, (unsigned long)p->deliveries,
        (unsigned long)p->delivered_ms);
    return 0;
}

static int dump_cons(void *arg, const evs_consumer_info *c)
{
    put(arg, "  consumer %.*s pending %lu seen %lu\n", (int)c->name.len, (const char *)c->name.ptr,
        (unsigned long)c->pending, (unsigned long)c->seen_ms);
    return 0;
}

static int dump_group(void *arg, const evs_group_info *g)
{
    dump *d = arg;
    put(d, "group %.*s consumers %lu pending %lu [%lu-%lu %lu-%lu oldest %lu] last %lu-%lu read %ld "
           "lag %ld max %lu dlq %.*s dead %lu\n",
        (int)g->name.len, (const char *)g->name.ptr, (unsigned long)g->consumers,
        (unsigned long)g->pending, (unsigned long)g->pending_first.ms,
        (unsigned long)g->pending_first.seq, (unsigned long)g->pending_last.ms,
        (unsigned long)g->pending_last.seq, (unsigned long)g->oldest_pending_ms,
        (unsigned long)g->last_delivered.ms,
        (unsigned long)g->last_delivered.seq,
        g->entries_read == EVS_ENTRIES_READ_NONE ? -1L : (long)g->entries_read,
        g->lag_known ? (long)g->lag : -1L, (unsigned long)g->max_deliveries, (int)g->dlq.len,
        (const char *)g->dlq.ptr, (unsigned long)g->dead_letters);
    return 0;
}

/* The pending list's smallest and largest IDs and oldest delivery, by walking it. */
typedef struct pel_summary {
    uint64_t n, oldest;
    evs_id first, last;
} pel_summary;

static int summarize(void *arg, const evs_pending_info *p)
{
    pel_summary *m = arg;
    if (!m->n++)
        m->first = p->id;
    m->last = p->id;
    if (!m->oldest || p->delivered_ms < m->oldest)
        m->oldest = p->delivered_ms;
    return 0;
}

static int count_cons(void *arg, const evs_consumer_info *c)
{
    (void)c;
    ++*(uint64_t *)arg;
    return 0;
}

/* A group's info (its dump line) gives what walks of its consumers and pending list give. */
static void check_summary(evs_store *st, const char *stream, const char *name, const char *line)
{
    uint64_t ncons = 0;
    cr_assert_eq(evs_consumer_list(st, S(stream), S(name), count_cons, &ncons), 0);
    char want[200];
    snprintf(want, sizeof want, " consumers %lu ", (unsigned long)ncons);
    cr_assert(strstr(line, want), "group %s: %s\nthe consumer list says %s", name, line, want);
    pel_summary m = {0};
    cr_assert_eq(evs_pending_list(st, S(stream), S(name), EVS_ID_MIN, EVS_ID_MAX, 0, 0,
                                  (evs_slice){NULL, 0}, summarize, &m), 0);
    snprintf(want, sizeof want, "pending %lu [%lu-%lu %lu-%lu oldest %lu]", (unsigned long)m.n,
             (unsigned long)m.first.ms, (unsigned long)m.first.seq, (unsigned long)m.last.ms,
             (unsigned long)m.last.seq, (unsigned long)m.oldest);
    cr_assert(strstr(line, want), "group %s: %s\nthe pending list says %s", name, line, want);
}

static char *dump_groups(evs_store *st, const char *stream)
{
    dump d = {NULL, 0, 0, st, stream};
    put(&d, "%s:\n", stream);
    cr_assert_eq(evs_group_list(st, S(stream), EVS_GROUP_OLDEST, dump_group, &d), 0);
    /* a second walk per group for its consumers and pending entries */
    char *groups = strdup(d.buf);
    for (char *line = strtok(groups, "\n"); line; line = strtok(NULL, "\n")) {
        char name[300];
        if (sscanf(line, "group %299s", name) != 1)
            continue;
        check_summary(st, stream, name, line);
        cr_assert_eq(evs_consumer_list(st, S(stream), S(name), dump_cons, &d), 0);
        cr_assert_eq(evs_pending_list(st, S(stream), S(name), EVS_ID_MIN, EVS_ID_MAX, 0, 0,
                                      (evs_slice){NULL, 0}, dump_pel, &d),
                     0);
    }
    free(groups);
    return d.buf;
}

/* Recovery reports what it could not apply through the log: any report fails the test. */
static void fail_on_log(void *arg, int level, const char *msg)
{
    (void)arg;
    if (level <= EVS_LOG_ERROR)
        cr_assert_fail("store logged an error: %s", msg);
}

/* The store as these tests open it: small segments, any error logged fails the test. */
static evs_store *open_checked(void)
{
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 1 << 20;
    o.log = fail_on_log;
    return open_store(dir, &o);
}

static evs_store *reopen(evs_store *st, bool rebuild)
{
    cr_assert_eq(evs_close(st), 0);
    if (rebuild)
        rm_index(dir);
    return open_checked();
}

/* The groups of `stream` dump as `before` after a reopen and after a rebuild of the index;
 * frees `before`, returns the store as reopened. */
static evs_store *same_after_reopen_and_rebuild(evs_store *st, const char *stream, char *before)
{
    for (int rebuild = 0; rebuild < 2; rebuild++) {
        st = reopen(st, rebuild);
        char *after = dump_groups(st, stream);
        cr_assert_str_eq(after, before, "after a %s", rebuild ? "rebuild" : "reopen");
        free(after);
    }
    free(before);
    return st;
}

/* ---- tests -------------------------------------------------------------------------------- */

Test(groups, deliver_ack_claim_and_errors)
{
    evs_store *st = open_store(dir, NULL);
    evs_group_op op = gop(EVS_GROUP_CREATE, "s", "g", NULL);
    cr_assert_eq(run(st, &op, NULL, NULL), EVS_ENOTFOUND);
    op.mkstream = true;
    cr_assert_eq(run(st, &op, NULL, NULL), 0);
    cr_assert_eq(run(st, &op, NULL, NULL), EVS_EEXIST);
    evs_id ids[10];
    for (int i = 0; i < 10; i++)
        cr_assert_eq(add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, &ids[i], "n", "v", NULL), 0);

    evs_group_op rd = gop(EVS_GROUP_READ, "s", "g", "alice");
    rd.new_only = true;
    rd.count = 4;
    evs_group_result res;
    evs_id *got;
    cr_assert_eq(run(st, &rd, &res, &got), 0);
    cr_assert_eq(res.nids, 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(evs_id_cmp(got[i], ids[i]), 0);
    free(got);
    rd.consumer = S("bob");
    rd.count = 0;
    cr_assert_eq(run(st, &rd, &res, &got), 0);
    cr_assert_eq(res.nids, 6);
    free(got);
    cr_assert_eq(run(st, &rd, &res, &got), 0); /* nothing new */
    cr_assert_eq(res.nids, 0);
    free(got);

    evs_group_op ack = gop(EVS_GROUP_ACK, "s", "g", NULL);
    evs_id a[3] = {ids[0], ids[0], ids[9]};
    ack.ids = a;
    ack.nids = 3;
    cr_assert_eq(run(st, &ack, &res, NULL), 0);
    cr_assert_eq(res.count, 2);
    cr_assert_eq(run(st, &ack, &res, NULL), 0);
    cr_assert_eq(res.count, 0);

    /* alice's history: 3 left, each delivered again */
    evs_group_op hist = gop(EVS_GROUP_READ, "s", "g", "alice");
    cr_assert_eq(run(st, &hist, &res, &got), 0);
    cr_assert_eq(res.nids, 3);
    cr_assert_eq(evs_id_cmp(got[0], ids[1]), 0);
    free(got);

    /* claim two of bob's for carol; a deleted one is dropped from the pending list */
    size_t deleted;
    evs_error err;
    cr_assert_eq(evs_delete(st, S("s"), &ids[5], 1, &deleted, &err), 0);
    evs_group_op cl = gop(EVS_GROUP_CLAIM, "s", "g", "carol");
    evs_id c[3] = {ids[4], ids[5], ids[6]};
    cl.ids = c;
    cl.nids = 3;
    cr_assert_eq(run(st, &cl, &res, &got), 0);
    cr_assert_eq(res.nids, 2);
    cr_assert_eq(evs_id_cmp(got[0], ids[4]), 0);
    cr_assert_eq(evs_id_cmp(got[1], ids[6]), 0);
    free(got);

    char *before = dump_groups(st, "s");
    cr_assert(strstr(before, "consumer carol pending 2"), "%s", before);
    cr_assert(strstr(before, "consumer alice pending 3"), "%s", before);
    cr_assert(strstr(before, "consumer bob pending 2"), "%s", before); /* 6 - acked - deleted - 2 claimed */
    cr_assert(strstr(before, "pending 7 ["), "%s", before);
    st = same_after_reopen_and_rebuild(st, "s", before);

    /* NOGROUP; DESTROY; a dropped stream takes its groups along */
    evs_group_op none = gop(EVS_GROUP_READ, "s", "nope", "x");
    none.new_only = true;
    cr_assert_eq(run(st, &none, NULL, NULL), EVS_ENOGROUP);
    evs_group_op des = gop(EVS_GROUP_DESTROY, "s", "g", NULL);
    cr_assert_eq(run(st, &des, &res, NULL), 0);
    cr_assert_eq(res.count, 1);
    cr_assert_eq(run(st, &des, &res, NULL), 0);
    cr_assert_eq(res.count, 0);
    op.stream = S("s");
    cr_assert_eq(run(st, &op, NULL, NULL), 0);
    bool existed;
    cr_assert_eq(evs_stream_drop(st, S("s"), &existed, &err), 0);
    cr_assert_eq(run(st, &rd, NULL, NULL), EVS_ENOTFOUND);
    st = reopen(st, true);
    cr_assert_eq(run(st, &rd, NULL, NULL), EVS_ENOTFOUND);
    cr_assert_eq(evs_close(st), 0);
}

static int first_fields(evs_store *st, const char *stream, char *out, size_t cap)
{
    evs_iter *it;
    evs_error err;
    const evs_entry *e;
    cr_assert_eq(evs_iter_open(st, S(stream), NULL, &it, &err), 0);
    int n = 0;
    out[0] = 0;
    while (evs_iter_next(it, &e, &err) == 1) {
        for (size_t i = 0; i < e->nfields; i++) {
            size_t l = strlen(out);
            snprintf(out + l, cap - l, "%.*s=%.*s ", (int)e->fields[i].name.len,
                     (const char *)e->fields[i].name.ptr, (int)e->fields[i].value.len,
                     (const char *)e->fields[i].value.ptr);
        }
        n++;
    }
    evs_iter_close(it);
    return n;
}

Test(groups, dead_letters_once_and_survive_rebuild)
{
    evs_store *st = open_store(dir, NULL);
    evs_id id;
    cr_assert_eq(add(st, "jobs", EVS_ID_EXPLICIT, (evs_id){5, 0}, &id, "type", "poison", NULL), 0);
    evs_group_op op = gop(EVS_GROUP_CREATE, "jobs", "w", NULL);
    op.max_deliveries = 2;
    cr_assert_eq(run(st, &op, NULL, NULL), 0);
    evs_group_op rd = gop(EVS_GROUP_READ, "jobs", "w", "c1");
    rd.new_only = true;
    evs_group_result res;
    evs_id *got;
    cr_assert_eq(run(st, &rd, &res, &got), 0); /* delivery 1 */
    cr_assert_eq(res.nids, 1);
    free(got);
    evs_group_op hist = gop(EVS_GROUP_READ, "jobs", "w", "c1");
    cr_assert_eq(run(st, &hist, &res, &got), 0); /* delivery 2 */
    cr_assert_eq(res.nids, 1);
    free(got);
    evs_group_op cl = gop(EVS_GROUP_CLAIM, "jobs", "w", "c2");
    cl.ids = &id;
    cl.nids = 1;
    cr_assert_eq(run(st, &cl, &res, &got), 0); /* delivery 3: dead-lettered instead */
    cr_assert_eq(res.nids, 0);
    cr_assert_eq(res.dead_lettered, 1);
    free(got);
    cr_assert_eq(run(st, &cl, &res, &got), 0); /* no longer pending: nothing happens */
    cr_assert_eq(res.dead_lettered, 0);
    free(got);
    char fields[512];
    cr_assert_eq(first_fields(st, "jobs:dlq", fields, sizeof fields), 1);
    cr_assert_str_eq(fields, "type=poison dlq-source-key=jobs dlq-source-id=5-0 dlq-group=w "
                             "dlq-deliveries=2 ");
    char *before = dump_groups(st, "jobs");
    cr_assert(strstr(before, "pending 0") && strstr(before, "dead 1"), "%s", before);
    st = reopen(st, true);
    char *after = dump_groups(st, "jobs");
    cr_assert_str_eq(after, before);
    cr_assert_eq(first_fields(st, "jobs:dlq", fields, sizeof fields), 1);
    free(before);
    free(after);
    cr_assert_eq(evs_close(st), 0);
}

Test(groups, large_pending_list_survives_reopen)
{
    evs_store *st = open_store(dir, NULL);
    enum { N = 20000 };
    evs_append *a = calloc(N, sizeof *a);
    evs_field f = {S("k"), S("v")};
    for (int i = 0; i < N; i++)
        a[i] = (evs_append){S("big"), EVS_ID_AUTO, EVS_ID_MIN, &f, 1, false};
    evs_id *ids = calloc(N, sizeof *ids);
    evs_error err;
    cr_assert_eq(evs_append_batch(st, a, N, ids, &err), 0);
    evs_group_op op = gop(EVS_GROUP_CREATE, "big", "g", NULL);
    cr_assert_eq(run(st, &op, NULL, NULL), 0);
    evs_group_op rd = gop(EVS_GROUP_READ, "big", "g", "c");
    rd.new_only = true;
    evs_group_result res;
    evs_id *got;
    cr_assert_eq(run(st, &rd, &res, &got), 0); /* several delivery records (CHUNK_IDS) */
    cr_assert_eq(res.nids, N);
    free(got);
    evs_id *odd = calloc(N / 2, sizeof *odd);
    for (int i = 0; i < N / 2; i++)
        odd[i] = ids[2 * i + 1];
    evs_group_op ack = gop(EVS_GROUP_ACK, "big", "g", NULL);
    ack.ids = odd;
    ack.nids = N / 2;
    cr_assert_eq(run(st, &ack, &res, NULL), 0);
    cr_assert_eq(res.count, N / 2);
    st = same_after_reopen_and_rebuild(st, "big", dump_groups(st, "big"));
    free(odd);
    free(ids);
    free(a);
    cr_assert_eq(evs_close(st), 0);
}

/* The pending list walked whole, then cut as a history read or a filtered XPENDING cuts it:
 * the entries of consumer `cname` above `after`, at most `count` (0: all). */
typedef struct pel_cut {
    const char *cname;
    evs_id after;
    uint64_t count;
    evs_id out[64];
    size_t n;
} pel_cut;

static int cut_pel(void *arg, const evs_pending_info *p)
{
    pel_cut *c = arg;
    if (p->consumer.len == strlen(c->cname) && !memcmp(p->consumer.ptr, c->cname, p->consumer.len) &&
        evs_id_cmp(p->id, c->after) > 0 && (!c->count || c->n < c->count) && c->n < 64)
        c->out[c->n++] = p->id;
    return 0;
}

static int list_ids(void *arg, const evs_pending_info *p)
{
    pel_cut *c = arg;
    if (c->n < 64)
        c->out[c->n++] = p->id;
    return 0;
}

/* A history read and XPENDING of one consumer from `after` list what the whole pending list,
 * cut by consumer and ID, does (their walks stop at the consumer's last entry). */
static void check_consumer_walks(evs_store *st, const char *cname, evs_id after, uint64_t count)
{
    pel_cut want = {cname, after, count, {{0, 0}}, 0}, xp = {cname, after, count, {{0, 0}}, 0};
    cr_assert_eq(evs_pending_list(st, S("r"), S("g"), EVS_ID_MIN, EVS_ID_MAX, 0, 0,
                                  (evs_slice){NULL, 0}, cut_pel, &want), 0);
    evs_id from = after;
    if (evs_id_next(&from))
        cr_assert_eq(evs_pending_list(st, S("r"), S("g"), from, EVS_ID_MAX, count, 0,
                                      S(cname), list_ids, &xp), 0);
    cr_assert_eq(xp.n, want.n, "XPENDING of %s after %lu-%lu", cname, (unsigned long)after.ms,
                 (unsigned long)after.seq);
    cr_assert_arr_eq(xp.out, want.out, want.n * sizeof(evs_id));
    evs_group_op o = gop(EVS_GROUP_READ, "r", "g", cname);
    o.id = after;
    o.count = count;
    evs_group_result res;
    evs_id *ids = NULL;
    evs_error err = {0};
    cr_assert_eq(evs_group_run(st, &o, &res, &ids, &err), 0);
    cr_assert_eq(res.nids, want.n, "history read of %s after %lu-%lu: %zu, want %zu", cname,
                 (unsigned long)after.ms, (unsigned long)after.seq, res.nids, want.n);
    cr_assert_arr_eq(res.ids, want.out, want.n * sizeof(evs_id));
    free(ids);
}

/* Random reads, acks (oldest, newest and any), forced claims, consumer creations and
 * deletions over a couple of hundred consumers: the group's summary (consumer count, smallest
 * and largest pending ID, oldest delivery) always agrees with walks of its lists, consumers
 * are found by name across hash-table growth and deletions, and the state is the same after
 * a reopen (only the consumer rows that changed are written at each commit) and a rebuild. */
Test(groups, random_operations_keep_summaries_and_rows)
{
    evs_store *st = open_checked();
    enum { N = 600, NCONS = 200 };
    evs_id ids[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(add(st, "r", EVS_ID_AUTO, EVS_ID_MIN, &ids[i], "n", "v", NULL), 0);
    evs_group_op op = gop(EVS_GROUP_CREATE, "r", "g", NULL);
    cr_assert_eq(run(st, &op, NULL, NULL), 0);
    srand(7);
    char cname[16];
    for (int step = 0; step < 1500; step++) {
        snprintf(cname, sizeof cname, "c%d", rand() % NCONS);
        int kind = rand() % 10;
        evs_group_op o;
        evs_id some[6];
        if (kind < 4) {
            o = gop(EVS_GROUP_READ, "r", "g", cname);
            o.new_only = true;
            o.count = 1 + (uint64_t)(rand() % 8);
            if (kind == 0 && rand() % 8 == 0) { /* now and then, deliver everything again */
                evs_group_op set = gop(EVS_GROUP_SETID, "r", "g", NULL);
                set.id = ids[rand() % N];
                cr_assert_eq(run(st, &set, NULL, NULL), 0);
            }
        } else if (kind < 7) {
            o = gop(EVS_GROUP_ACK, "r", "g", NULL);
            pel_summary m = {0};
            cr_assert_eq(evs_pending_list(st, S("r"), S("g"), EVS_ID_MIN, EVS_ID_MAX, 0, 0,
                                          (evs_slice){NULL, 0}, summarize, &m), 0);
            o.nids = 0;
            if (m.n)
                some[o.nids++] = kind == 4 ? m.first : m.last;
            for (int i = 0; i < 3; i++)
                some[o.nids++] = ids[rand() % N];
            o.ids = some;
        } else if (kind < 9) {
            o = gop(EVS_GROUP_CLAIM, "r", "g", cname);
            o.force = true;
            o.nids = 1 + (size_t)(rand() % 3);
            for (size_t i = 0; i < o.nids; i++)
                some[i] = ids[rand() % N];
            o.ids = some;
        } else {
            o = gop(rand() % 2 ? EVS_GROUP_DELCONSUMER : EVS_GROUP_CREATECONSUMER, "r", "g", cname);
        }
        cr_assert_eq(run(st, &o, NULL, NULL), 0, "step %d", step);
        if (step % 50 == 0)
            free(dump_groups(st, "r")); /* checks the summary */
        if (step % 7 == 0)
            check_consumer_walks(st, cname, rand() % 3 ? EVS_ID_MIN : ids[rand() % N],
                                 (uint64_t)(rand() % 5) * 3);
    }
    char *before = dump_groups(st, "r");
    cr_assert(strstr(before, "consumers 1"), "%s", before); /* (100-199: many of them) */
    st = same_after_reopen_and_rebuild(st, "r", before);
    cr_assert_eq(evs_close(st), 0);
}

static int list_name(void *arg, const evs_group_info *g)
{
    dump *d = arg;
    put(d, "%.*s\n", (int)g->name.len, (const char *)g->name.ptr);
    return 0;
}

static int found(void *arg, const evs_group_info *g)
{
    (void)g;
    ++*(int *)arg;
    return 0;
}

/* Hundreds of groups on one stream (one per subscriber), made in random order and some
 * destroyed: each is found by name, they are listed in bytewise name order (as Redis's
 * XINFO GROUPS), and the same after a reopen and a rebuild. */
Test(groups, many_groups_on_one_stream)
{
    evs_store *st = open_checked();
    enum { N = 300 };
    static char names[N][8];
    int order[N];
    for (int i = 0; i < N; i++) {
        /* prefixes of each other too: "1", "10", "100" */
        snprintf(names[i], sizeof names[i], "%d", i);
        order[i] = i;
    }
    srand(11);
    for (int i = N - 1; i > 0; i--) {
        int j = rand() % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    evs_id id;
    cr_assert_eq(add(st, "fan", EVS_ID_AUTO, EVS_ID_MIN, &id, "n", "v", NULL), 0);
    for (int i = 0; i < N; i++) {
        evs_group_op op = gop(EVS_GROUP_CREATE, "fan", names[order[i]], NULL);
        cr_assert_eq(run(st, &op, NULL, NULL), 0);
    }
    for (int i = 0; i < N; i += 7) {
        evs_group_op op = gop(EVS_GROUP_DESTROY, "fan", names[i], NULL);
        evs_group_result res;
        cr_assert_eq(run(st, &op, &res, NULL), 0);
        cr_assert_eq(res.count, 1);
    }
    for (int i = 1; i < N; i += 5) {
        if (i % 7 == 0)
            continue; /* destroyed */
        evs_group_op op = gop(EVS_GROUP_READ, "fan", names[i], "c");
        op.new_only = true;
        cr_assert_eq(run(st, &op, NULL, NULL), 0, "group %s", names[i]);
    }
    for (int round = 0; round < 3; round++) {
        dump d = {NULL, 0, 0, st, "fan"};
        cr_assert_eq(evs_group_list(st, S("fan"), 0, list_name, &d), 0);
        char *prev = NULL;
        int listed = 0;
        for (char *line = strtok(d.buf, "\n"); line; line = strtok(NULL, "\n"), listed++) {
            cr_assert(!prev || strcmp(prev, line) < 0, "%s listed before %s", prev, line);
            prev = line;
        }
        cr_assert_eq(listed, N - (N + 6) / 7);
        free(d.buf);
        for (int i = 0; i < N; i++) {
            int n = 0;
            int rc = evs_group_get(st, S("fan"), S(names[i]), 0, found, &n);
            cr_assert_eq(rc, i % 7 ? 0 : EVS_ENOGROUP, "round %d group %s: %d", round, names[i], rc);
            cr_assert_eq(n, i % 7 ? 1 : 0);
        }
        char *before = dump_groups(st, "fan");
        cr_assert(strstr(before, "group 6 consumers 1 pending 1"), "%s", before);
        st = reopen(st, round == 1);
        char *after = dump_groups(st, "fan");
        cr_assert_str_eq(after, before);
        free(before);
        free(after);
    }
    cr_assert_eq(evs_close(st), 0);
}

/* Empty names are names, as in Redis: a consumer "" of group "" on stream "" (every slice of
 * the operation empty, which once left them all NULL: "no consumer") is made, delivered to,
 * and survives reopen and rebuild. */
Test(groups, empty_names_are_names)
{
    evs_store *st = open_checked();
    evs_id id;
    cr_assert_eq(add(st, "", EVS_ID_AUTO, EVS_ID_MIN, &id, "f", "v", NULL), 0);
    evs_group_op op = gop(EVS_GROUP_CREATE, "", "", NULL);
    cr_assert_eq(run(st, &op, NULL, NULL), 0);
    op = gop(EVS_GROUP_CREATECONSUMER, "", "", "");
    evs_group_result res;
    cr_assert_eq(run(st, &op, &res, NULL), 0);
    cr_assert_eq(res.count, 1, "the consumer \"\" was not made");
    cr_assert_eq(run(st, &op, &res, NULL), 0);
    cr_assert_eq(res.count, 0);
    op = gop(EVS_GROUP_READ, "", "", "");
    op.new_only = true;
    evs_id *ids = NULL;
    cr_assert_eq(run(st, &op, &res, &ids), 0);
    cr_assert_eq(res.nids, 1);
    free(ids);
    for (int round = 0; round < 3; round++) {
        dump d = {NULL, 0, 0, st, ""};
        cr_assert_eq(evs_group_list(st, S(""), EVS_GROUP_OLDEST, dump_group, &d), 0);
        cr_assert_eq(evs_consumer_list(st, S(""), S(""), dump_cons, &d), 0);
        char want[200];
        snprintf(want, sizeof want, "group  consumers 1 pending 1 [%lu-%lu %lu-%lu oldest ",
                 (unsigned long)id.ms, (unsigned long)id.seq, (unsigned long)id.ms,
                 (unsigned long)id.seq);
        cr_assert(d.buf && !strncmp(d.buf, want, strlen(want)), "round %d:\n%s\nwant:\n%s",
                  round, d.buf, want);
        snprintf(want, sizeof want, "] last %lu-%lu read 1 lag 0 max 0 dlq :dlq dead 0\n  "
                 "consumer  pending 1 seen ", (unsigned long)id.ms, (unsigned long)id.seq);
        cr_assert(strstr(d.buf, want), "round %d:\n%s\nwant:\n%s", round, d.buf, want);
        free(d.buf);
        st = reopen(st, round == 1);
    }
    evs_close(st);
}
