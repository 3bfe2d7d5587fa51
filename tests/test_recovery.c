/*
 * test_recovery.c — what open does with damaged files: torn tails of every shape, a segment
 * truncated at every byte, a bit flip inside a sealed segment, and an index that lags, leads,
 * is missing or is garbage, plus LMDB map growth.
 */
#include "helpers.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "crc.h"
#include "internal.h" /* writer_roll: seal the active segment on demand */

static char *dir;
static void setup(void) { dir = tmpdir_new(); }
static void teardown(void) { rm_rf(dir); free(dir); }
TestSuite(recovery, .init = setup, .fini = teardown);

/* Path of the n-th segment (0 = first, -1 = last) into buf. */
static void seg_path(const char *d, int which, char *buf, size_t cap)
{
    char logdir[512];
    snprintf(logdir, sizeof logdir, "%s/log", d);
    struct dirent **list;
    int n = scandir(logdir, &list, NULL, alphasort);
    cr_assert_gt(n, 0);
    int segs = 0;
    char names[256][64];
    for (int i = 0; i < n; i++) {
        size_t l = strlen(list[i]->d_name);
        if (l == 24 && !strcmp(list[i]->d_name + 20, ".seg") && segs < 256)
            memcpy(names[segs++], list[i]->d_name, l + 1); /* l == 24 */
        free(list[i]);
    }
    free(list);
    cr_assert_gt(segs, 0);
    int idx = which < 0 ? segs + which : which;
    snprintf(buf, cap, "%s/%s", logdir, names[idx]);
}

/* How many names in folder d contain part. */
static int files_with(const char *d, const char *part)
{
    DIR *dd = opendir(d);
    cr_assert_not_null(dd, "cannot list %s", d);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(dd)))
        n += strstr(de->d_name, part) != NULL;
    closedir(dd);
    return n;
}

static bool dir_has(const char *d, const char *part) { return files_with(d, part) > 0; }

static int count_torn(const char *d)
{
    char logdir[512];
    snprintf(logdir, sizeof logdir, "%s/log", d);
    return files_with(logdir, ".torn");
}

static off_t file_size(const char *p)
{
    struct stat sb;
    cr_assert_eq(stat(p, &sb), 0);
    return sb.st_size;
}

/* Segments are zero-filled files: the records end at the first zero header. Records are
 * 8-aligned and padded with zeros, so the end is the last nonzero byte rounded up to 8. */
static off_t data_end(const char *p)
{
    int fd = open(p, O_RDONLY);
    off_t size = file_size(p), end = 0;
    uint8_t buf[65536];
    for (off_t o = 0; o < size; o += (off_t)sizeof buf) {
        ssize_t r = pread(fd, buf, sizeof buf, o);
        for (ssize_t i = 0; i < r; i++)
            if (buf[i])
                end = o + i + 1;
    }
    close(fd);
    return (end + 7) & ~(off_t)7;
}

static void write_at(const char *p, off_t at, const void *data, size_t n)
{
    int fd = open(p, O_WRONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, data, n, at), (ssize_t)n);
    close(fd);
}

/* What a torn write leaves in a zero-filled file: the last `n` bytes of the records never
 * written, zeros instead. */
static void zero_last(const char *p, off_t n)
{
    static const uint8_t z[1 << 16];
    off_t end = data_end(p);
    cr_assert_leq(n, (off_t)sizeof z);
    write_at(p, end - n, z, (size_t)n);
}

static void append_bytes(const char *p, const void *data, size_t n)
{
    write_at(p, data_end(p), data, n);
}

static void make_store(int n, size_t value_len)
{
    evs_store *st = open_store(dir, NULL);
    char *v = malloc(value_len + 1);
    memset(v, 'x', value_len);
    v[value_len] = 0;
    for (int i = 0; i < n; i++)
        cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){(uint64_t)i + 1, 0}, NULL, "v", v, NULL), 0);
    free(v);
    cr_assert_eq(evs_close(st), 0);
}

/* The ms part of the newest entry of stream "s", read newest first. */
static uint64_t newest_ms(evs_store *st)
{
    evs_query q;
    evs_query_init(&q);
    q.reverse = true;
    q.limit = 1;
    evs_id id = {0, 0};
    cr_assert_eq(read_ids(st, "s", &q, &id, 1), 1);
    return id.ms;
}

static long count_entries(void)
{
    evs_store *st = open_store(dir, NULL);
    evs_id ids[4096];
    long n = read_ids(st, "s", NULL, ids, 4096);
    if (n == EVS_ENOTFOUND)
        n = 0;
    for (long i = 0; i < n && i < 4096; i++)
        cr_assert_eq(ids[i].ms, (uint64_t)i + 1);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
    return n;
}

Test(recovery, torn_partial_header)
{
    make_store(10, 50);
    char p[600];
    seg_path(dir, -1, p, sizeof p);
    uint8_t hdr[20] = {0x45, 0x56, 0x52, 0x31, 1, 2, 3, 4, 5};
    append_bytes(p, hdr, sizeof hdr);
    cr_assert_eq(count_entries(), 10);
    cr_assert_eq(count_torn(dir), 1);
}

Test(recovery, torn_partial_body)
{
    make_store(10, 300);
    char p[600];
    seg_path(dir, -1, p, sizeof p);
    zero_last(p, 100);
    cr_assert_eq(count_entries(), 9);
    cr_assert_eq(count_torn(dir), 1);
}

Test(recovery, torn_zeroed_last_512_bytes)
{
    make_store(10, 2000);
    char p[600];
    seg_path(dir, -1, p, sizeof p);
    zero_last(p, 512);
    cr_assert_eq(count_entries(), 9);
    cr_assert_eq(count_torn(dir), 1);
}

Test(recovery, garbage_after_the_end)
{
    make_store(10, 50);
    char p[600];
    seg_path(dir, -1, p, sizeof p);
    uint8_t junk[3000];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)(i * 7 + 3);
    append_bytes(p, junk, sizeof junk);
    cr_assert_eq(count_entries(), 10);
    cr_assert_eq(count_torn(dir), 1);
}

/* ---- R1: a power cut's hole in the last write batch ------------------------------------- */

typedef struct { uint64_t off, size; uint16_t flags; uint8_t kind; } seg_rec;

/* The records of segment file p, in order, up to the first that is not valid. */
static int seg_records(const char *p, seg_rec *out, int cap)
{
    off_t size = file_size(p);
    uint8_t *b = malloc((size_t)size);
    int fd = open(p, O_RDONLY);
    cr_assert_eq(pread(fd, b, (size_t)size, 0), size);
    close(fd);
    int n = 0;
    uint64_t off = 0;
    rec_hdr h;
    uint64_t sz;
    while (n < cap && rec_check(b + off, (uint64_t)size - off, &h, &sz) == REC_OK) {
        out[n++] = (seg_rec){off, sz, h.flags, h.kind};
        off += sz;
    }
    free(b);
    return n;
}

static void batch_done(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err)
{
    (void)ids;
    (void)n;
    cr_assert_eq(rc, 0, "%s", err ? err->msg : "");
    (*(int *)arg)++;
}

/* Give record r of segment file p the header flags `flags` (and the CRC that goes with them). */
static void set_flags(const char *p, const seg_rec *r, uint16_t flags)
{
    int fd = open(p, O_RDWR);
    uint8_t *b = malloc(r->size);
    cr_assert_eq(pread(fd, b, r->size, (off_t)r->off), (ssize_t)r->size);
    b[14] = (uint8_t)flags;
    b[15] = (uint8_t)(flags >> 8);
    rec_hdr_set_crc(b, evs_crc32(0, b + 8, r->size - 8));
    cr_assert_eq(pwrite(fd, b, r->size, (off_t)r->off), (ssize_t)r->size);
    free(b);
    close(fd);
}

/* Entries 1..10 appended one by one (each synced before the next), then entries 11..10+n
 * submitted as n requests in one write batch (one fdatasync, its first record flagged). A
 * writer thread awake meanwhile may take the requests in pieces, each a batch whose first
 * record is flagged: those later flags are taken off, so that the segment holds exactly what
 * one batch would have written. */
static void make_batch_store(int n)
{
    make_store(10, 50);
    evs_store *st = open_store(dir, NULL);
    char v[300];
    memset(v, 'b', sizeof v);
    evs_field f = {S("v"), {v, sizeof v}};
    int done = 0;
    evs_error err;
    evs_submit_hold(st);
    for (int i = 0; i < n; i++) {
        evs_append a = {S("s"), EVS_ID_EXPLICIT, {(uint64_t)i + 11, 0}, &f, 1, false};
        cr_assert_eq(evs_submit(st, &a, 1, batch_done, &done, &err), 0, "%s", err.msg);
    }
    evs_submit_release_inline(st);
    evs_submit_wake(st);
    while (__atomic_load_n(&done, __ATOMIC_SEQ_CST) < n)
        usleep(1000);
    cr_assert_eq(evs_close(st), 0);
    char p[600];
    seg_path(dir, -1, p, sizeof p);
    static seg_rec r[4096];
    int k = seg_records(p, r, 4096), entries = 0, i = 0;
    while (i < k && entries < 11)
        entries += r[i++].kind == REC_ENTRY; /* i: just past entry 11, the batch's first */
    cr_assert(r[i - 1].flags & REC_F_SYNCED, "the batch's first record follows a sync");
    for (; i < k; i++)
        if (r[i].flags & REC_F_SYNCED)
            set_flags(p, &r[i], r[i].flags & (uint16_t)~REC_F_SYNCED);
}

/* Zero the 4 KiB page in the middle of what follows the segment's last flagged record, as a
 * power cut that wrote the batch's later pages but not that one leaves it; the number of
 * entries wholly before the page. */
static long zero_page_after_last_flag(const char *p)
{
    static seg_rec r[4096];
    int n = seg_records(p, r, 4096), last = -1;
    for (int i = 0; i < n; i++)
        if (r[i].flags & REC_F_SYNCED)
            last = i;
    cr_assert_geq(last, 0, "the writer flags the first record after a sync");
    int mid = last + (n - last) / 2;
    uint64_t page = r[mid].off & ~(uint64_t)4095;
    cr_assert_gt(page, r[last].off, "a hole after the flagged record (n=%d last=%d)", n, last);
    cr_assert_lt(page + 4096, r[n - 1].off, "valid records after the hole");
    long before = 0;
    for (int i = 0; i < n && r[i].off + r[i].size <= page; i++)
        before += r[i].kind == REC_ENTRY;
    static const uint8_t z[4096];
    write_at(p, (off_t)page, z, sizeof z);
    rm_index(dir); /* as after the power cut's reboot: the index stopped before the batch */
    return before;
}

Test(recovery, a_hole_in_the_last_write_batch_is_a_torn_tail)
{
    make_batch_store(200);
    char p[600];
    seg_path(dir, -1, p, sizeof p);
    static seg_rec r[4096];
    int n = seg_records(p, r, 4096), flagged = 0;
    for (int i = 0; i < n; i++)
        flagged += (r[i].flags & REC_F_SYNCED) != 0;
    cr_assert_geq(flagged, 10, "each entry added alone follows a sync: %d", flagged);
    long before = zero_page_after_last_flag(p);
    cr_assert_gt(before, 10);
    cr_assert_eq(count_entries(), before); /* exactly the whole records before the hole */
    cr_assert_eq(count_torn(dir), 1);
    cr_assert_eq(count_entries(), before); /* and again: the cut is durable */
}

/* make_batch_store(n), then entry 11+n appended alone (after the batch's sync); the last
 * segment's path into p and its records into r (cap of them): how many. */
static int batch_then_one(int n, char p[600], seg_rec *r, int cap)
{
    make_batch_store(n);
    evs_store *st = open_store(dir, NULL);
    cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){(uint64_t)n + 11, 0}, NULL, "v", "after",
                     NULL), 0);
    cr_assert_eq(evs_close(st), 0);
    seg_path(dir, -1, p, 600);
    int k = seg_records(p, r, cap);
    cr_assert(r[k - 1].flags & REC_F_SYNCED, "the lone entry's record follows the batch's sync");
    return k;
}

/* Zero the 4 KiB page in the middle of segment p's n records r, drop the index (recovery
 * scans the whole log), open: the store, in which verify must find the damage. */
static evs_store *open_with_middle_page_lost(const char *p, const seg_rec *r, int n)
{
    uint64_t page = r[n / 2].off & ~(uint64_t)4095;
    static const uint8_t z[4096];
    write_at(p, (off_t)page, z, sizeof z);
    rm_index(dir);
    evs_store *st = open_store(dir, NULL);
    cr_assert_geq(evs_verify(st, NULL, NULL), 1);
    return st;
}

Test(recovery, a_hole_that_a_later_synced_batch_follows_is_corruption)
{
    char p[600];
    static seg_rec r[4096];
    int n = batch_then_one(200, p, r, 4096);
    /* the hole: in the middle of the batch, which that sync made durable */
    evs_store *st = open_with_middle_page_lost(p, r, n);
    evs_id ids[512];
    cr_assert_eq(read_ids(st, "s", NULL, ids, 512), EVS_ECORRUPT);
    cr_assert_eq(newest_ms(st), 211, "nothing after the hole is cut");
    cr_assert_eq(evs_close(st), 0);
    cr_assert_eq(count_torn(dir), 0);
}

/* A power cut during the last batch's sync, as the disk may leave it: any subset of the
 * batch's 512-byte sectors never written (zeros; the part of the first sector before the
 * batch was synced earlier and stays). Every time: the store opens, keeps exactly the whole
 * records before the first lost byte (everything synced before the batch among them), cuts
 * the rest into .torn, and verifies clean. */
Test(recovery, power_cuts_in_the_last_batch_keep_exactly_what_preceded_the_first_loss,
     .timeout = 240)
{
    srand(20261130);
    for (int round = 0; round < 25; round++) {
        rm_rf(dir);
        cr_assert_eq(mkdir(dir, 0755), 0);
        make_batch_store(120);
        char p[600];
        seg_path(dir, -1, p, sizeof p);
        static seg_rec r[4096];
        int n = seg_records(p, r, 4096), first = -1;
        for (int i = 0; i < n; i++)
            if (r[i].flags & REC_F_SYNCED)
                first = i; /* the batch's first record: the last flagged one */
        cr_assert_gt(first, 10);
        uint64_t b = r[first].off, e = r[n - 1].off + r[n - 1].size, lost = e;
        static const uint8_t z[512];
        int nlost = 0;
        for (uint64_t sec = b & ~(uint64_t)511; sec < e; sec += 512) {
            if (rand() % 4) /* a quarter of the sectors lost, at random */
                continue;
            uint64_t from = sec < b ? b : sec, to = sec + 512 < e ? sec + 512 : e;
            write_at(p, (off_t)from, z, to - from);
            lost = from < lost ? from : lost;
            nlost++;
        }
        if (!nlost)
            continue;
        long want = 0;
        for (int i = 0; i < n && r[i].off + r[i].size <= lost; i++)
            want += r[i].kind == REC_ENTRY;
        rm_index(dir); /* the reboot's index stopped before the batch */
        cr_assert_eq(count_entries(), want, "round %d: first loss at %" PRIu64, round, lost);
        cr_assert_geq(want, 10, "round %d: every entry synced before the batch kept", round);
        cr_assert_eq(count_torn(dir), lost < e ? 1 : 0, "round %d", round);
    }
}

/* The same losses in a batch that a later synced one follows (so they can only be the
 * medium's): reported and fenced, never cut; the later entry is kept and served. */
Test(recovery, losses_in_a_batch_that_a_synced_one_follows_are_never_cut, .timeout = 240)
{
    srand(20261201);
    for (int round = 0; round < 10; round++) {
        rm_rf(dir);
        cr_assert_eq(mkdir(dir, 0755), 0);
        char p[600];
        static seg_rec r[4096];
        int n = batch_then_one(120, p, r, 4096), first = -1;
        for (int i = 0; i < n - 1; i++)
            if (r[i].flags & REC_F_SYNCED)
                first = i; /* the batch's first record */
        uint64_t b = r[first].off, e = r[n - 2].off + r[n - 2].size; /* the batch */
        static const uint8_t z[512];
        int nlost = 0;
        for (uint64_t sec = (b + 511) & ~(uint64_t)511; sec + 512 <= e; sec += 512)
            if (rand() % 4 == 0 || (nlost == 0 && sec + 1024 > e)) {
                write_at(p, (off_t)sec, z, sizeof z);
                nlost++;
            }
        rm_index(dir);
        evs_store *st = open_store(dir, NULL);
        cr_assert_geq(evs_verify(st, NULL, NULL), 1, "round %d", round);
        cr_assert_eq(newest_ms(st), 131, "round %d", round);
        cr_assert_eq(evs_close(st), 0);
        cr_assert_eq(count_torn(dir), 0, "round %d", round);
    }
}

Test(recovery, a_hole_in_a_segment_written_without_the_flag_is_corruption)
{
    /* a store from before REC_F_SYNCED: the same hole keeps the old rule */
    make_batch_store(200);
    char p[600];
    seg_path(dir, -1, p, sizeof p);
    static seg_rec r[4096];
    int n = seg_records(p, r, 4096);
    for (int i = 0; i < n; i++)
        set_flags(p, &r[i], r[i].flags & (uint16_t)~REC_F_SYNCED);
    evs_store *st = open_with_middle_page_lost(p, r, n);
    cr_assert_eq(newest_ms(st), 210);
    cr_assert_eq(evs_close(st), 0);
    cr_assert_eq(count_torn(dir), 0);
}

Test(recovery, a_bad_record_before_one_ending_in_zero_bytes_is_corruption)
{
    /* the valid record after the bad one ends in zero bytes (a value of NULs): it is still
     * found, so the bad one is corruption, not a torn tail that would take it along */
    make_store(10, 50);
    evs_store *st = open_store(dir, NULL);
    char nul[100] = {0};
    evs_field f = {S("v"), {nul, sizeof nul}};
    evs_append a = {S("s"), EVS_ID_EXPLICIT, {11, 0}, &f, 1, false};
    evs_id id;
    evs_error err;
    cr_assert_eq(evs_append_one(st, &a, &id, &err), 0, "%s", err.msg);
    cr_assert_eq(evs_close(st), 0);
    char p[600];
    seg_path(dir, -1, p, sizeof p);
    static seg_rec r[64];
    int n = seg_records(p, r, 64);
    uint8_t b;
    off_t at = (off_t)(r[n - 2].off + r[n - 2].size / 2); /* entry 10's body */
    int fd = open(p, O_RDWR);
    cr_assert_eq(pread(fd, &b, 1, at), 1);
    b ^= 0x40;
    cr_assert_eq(pwrite(fd, &b, 1, at), 1);
    close(fd);
    rm_index(dir); /* recovery scans the whole log */
    st = open_store(dir, NULL);
    cr_assert_geq(evs_verify(st, NULL, NULL), 1);
    cr_assert_eq(newest_ms(st), 11);
    cr_assert_eq(evs_close(st), 0);
    cr_assert_eq(count_torn(dir), 0);
}

Test(recovery, truncated_at_every_byte_keeps_exactly_the_whole_records, .timeout = 300)
{
    make_store(6, 40);
    char p[600];
    seg_path(dir, -1, p, sizeof p);
    off_t full = data_end(p);
    uint8_t *orig = malloc((size_t)full);
    int fd = open(p, O_RDONLY);
    cr_assert_eq(read(fd, orig, (size_t)full), full);
    close(fd);
    /* ends[r]: record r's end; need[r]: just past its last nonzero byte. Losing only zero
     * padding leaves a zero-filled segment byte-identical, so a record is whole once the
     * bytes up to need[r] survive. */
    off_t ends[64], need[64];
    int nrec = 0;
    for (off_t o = 0; o < full;) {
        uint32_t len;
        memcpy(&len, orig + o + 8, 4);
        off_t e = o + 56 + ((len + 7) & ~7u), nz = o;
        for (off_t b = o; b < e; b++)
            if (orig[b])
                nz = b + 1;
        ends[nrec] = e;
        need[nrec++] = nz;
        o = e;
    }
    cr_assert_eq(nrec, 7); /* create + 6 entries */
    const off_t fsz = full + 4096; /* a zero-filled segment: the records, then zeros */
    uint8_t *img = calloc(1, (size_t)fsz);
    for (off_t cut = 0; cut <= full; cut++) {
        rm_rf(dir);
        cr_assert_eq(mkdir(dir, 0755), 0);
        char logdir[600];
        snprintf(logdir, sizeof logdir, "%s/log", dir);
        mkdir(logdir, 0755);
        /* a folder whose log lost everything from `cut` on, and no index: the worst case */
        char sp[700], id[700];
        snprintf(sp, sizeof sp, "%s/00000000000000000000.seg", logdir);
        snprintf(id, sizeof id, "%s/STORE", dir);
        memset(img, 0, (size_t)fsz);
        memcpy(img, orig, (size_t)cut);
        fd = open(sp, O_WRONLY | O_CREAT, 0644);
        cr_assert_eq(write(fd, img, (size_t)fsz), fsz);
        close(fd);
        fd = open(id, O_WRONLY | O_CREAT, 0644);
        const char *ident = "evstore-store 1\nid 0123456789abcdef0123456789abcdef\n";
        cr_assert_eq(write(fd, ident, strlen(ident)), (ssize_t)strlen(ident));
        close(fd);
        long whole = 0;
        for (int r = 1; r < nrec; r++)
            if (need[r] <= cut)
                whole++;
        long got = count_entries();
        cr_assert_eq(got, whole, "cut at %ld: %ld entries, expected %ld", (long)cut, got, whole);
        /* the stream-create record and the first entry are one atomic group (W1): the
         * create survives only with the entry */
        off_t expect_len = 0;
        for (int r = 1; r < nrec; r++)
            if (need[r] <= cut)
                expect_len = ends[r];
        off_t after = data_end(sp);
        cr_assert_eq(after, expect_len, "cut at %ld: records end at %ld after recovery, expected %ld",
                     (long)cut, (long)after, (long)expect_len);
        bool torn = false; /* nonzero bytes past the whole records were cut and kept */
        for (off_t b = expect_len; b < cut; b++)
            torn |= orig[b] != 0;
        cr_assert_eq(count_torn(dir), torn ? 1 : 0, "cut at %ld", (long)cut);
    }
    free(img);
    free(orig);
}

/* A closed store of 400 entries (IDs 1..400, types a and b) in segments of 16 KiB; *o is the
 * options to reopen it with. */
static void make_small_segments(evs_options *o)
{
    evs_options_init(o);
    o->segment_bytes = 16 * 1024;
    evs_store *st = open_store(dir, o);
    for (int i = 0; i < 400; i++)
        cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){(uint64_t)i + 1, 0}, NULL, "v",
                         "0123456789012345678901234567890123456789", "type", i % 2 ? "a" : "b", NULL), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* A forward read of the whole stream: how many entries came before it failed with
 * EVS_ECORRUPT (*err says why). */
static long entries_before_error(evs_store *st, const char *name, evs_error *err)
{
    evs_iter *it;
    cr_assert_eq(evs_iter_open(st, S(name), NULL, &it, err), 0);
    const evs_entry *e;
    int rc;
    long before = 0;
    while ((rc = evs_iter_next(it, &e, err)) == 1)
        before++;
    evs_iter_close(it);
    cr_assert_eq(rc, EVS_ECORRUPT);
    return before;
}

Test(recovery, bit_flip_in_sealed_segment_is_reported_and_fenced)
{
    evs_options o;
    make_small_segments(&o);
    /* flip one bit in the middle of the second (sealed) segment */
    char p[600];
    seg_path(dir, 1, p, sizeof p);
    off_t sz = file_size(p);
    int fd = open(p, O_RDWR);
    uint8_t b;
    off_t at = sz / 2;
    cr_assert_eq(pread(fd, &b, 1, at), 1);
    b ^= 0x10;
    cr_assert_eq(pwrite(fd, &b, 1, at), 1);
    close(fd);

    evs_store *st = open_store(dir, &o);
    char lines[8][1024];
    int nl = 0;
    struct cap { char (*l)[1024]; int *n; } c = {lines, &nl};
    void report(void *arg, const char *line);
    long problems = evs_verify(st, report, &c);
    cr_assert_geq(problems, 1);
    cr_assert(strstr(lines[0], "segment ") && strstr(lines[0], "offset "), "%s", lines[0]);
    cr_assert(strstr(lines[0], "stream s") && strstr(lines[0], "entry id "), "%s", lines[0]);
    /* the full range hits the corrupt record: an error, never wrong bytes */
    evs_id ids[512];
    long n = read_ids(st, "s", NULL, ids, 512);
    cr_assert_eq(n, EVS_ECORRUPT);
    evs_error err;
    long before = entries_before_error(st, "s", &err);
    cr_assert(strstr(err.msg, "segment") && strstr(err.msg, "offset"), "%s", err.msg);
    cr_assert_gt(before, 10, "entries before the corruption must still be served");
    /* entries after it: a read that starts past it works, and so does a reverse read */
    evs_query q;
    evs_query_init(&q);
    q.start = (evs_id){350, 0};
    cr_assert_eq(read_ids(st, "s", &q, ids, 512), 51);
    evs_query_init(&q);
    q.reverse = true;
    q.limit = 20;
    cr_assert_eq(read_ids(st, "s", &q, ids, 512), 20);
    evs_close(st);
}

static void keep_errors(void *arg, int level, const char *msg)
{
    if (level <= EVS_LOG_ERROR && !*(char *)arg)
        snprintf(arg, 1024, "%s", msg);
}

/* A sealed segment's file deleted below the index watermark (an operator's mistake, a lost
 * file): the open says which log positions no file holds, and a read of entries there fails
 * naming the missing file's place instead of a wrong offset in its predecessor. */
Test(recovery, a_missing_segment_file_is_reported_at_open_and_on_read)
{
    evs_options o;
    make_small_segments(&o);
    char p[600];
    seg_path(dir, 1, p, sizeof p); /* of three */
    cr_assert_eq(unlink(p), 0);
    char logged[1024] = "";
    o.log = keep_errors;
    o.log_arg = logged;
    evs_store *st = open_store(dir, &o);
    cr_assert(strstr(logged, "are in no segment file") && strstr(logged, "a segment file is "
              "missing"), "%s", logged);
    evs_error err;
    long before = entries_before_error(st, "s", &err);
    cr_assert(strstr(err.msg, "is in no segment file") && strstr(err.msg, "missing"), "%s",
              err.msg);
    cr_assert_gt(before, 10, "entries before the gap must still be served");
    evs_query q;
    evs_query_init(&q);
    q.reverse = true;
    q.limit = 20;
    evs_id ids[32];
    cr_assert_eq(read_ids(st, "s", &q, ids, 32), 20); /* and the newest ones after it */
    evs_close(st);
}

/* streams.c S4: numbers are never reused. A create record past the watermark that names the
 * number of a stream dropped before it (not loaded: the open loads live streams only) is
 * corruption, reported with its place; it makes no stream. (The open took it as a new stream
 * numbered as the dropped one until session 37.) */
Test(recovery, a_create_naming_a_dropped_streams_number_is_corruption)
{
    evs_store *st = open_store(dir, NULL);
    cr_assert_eq(add(st, "a", EVS_ID_AUTO, (evs_id){0, 0}, NULL, "k", "v", NULL), 0);
    size_t dropped;
    evs_error err;
    cr_assert_eq(evs_streams_drop(st, &(evs_slice){"a", 1}, 1, &dropped, &err), 0, "%s", err.msg);
    cr_assert_eq(add(st, "b", EVS_ID_AUTO, (evs_id){0, 0}, NULL, "k", "v", NULL), 0);
    evs_close(st); /* the index covers it all: a, number 1, dropped; next number 3 */

    char p[600];
    seg_path(dir, -1, p, sizeof p);
    off_t size = file_size(p);
    uint8_t *b = malloc((size_t)size);
    int fd = open(p, O_RDONLY);
    cr_assert_eq(pread(fd, b, (size_t)size, 0), size);
    close(fd);
    rec_hdr h;
    uint64_t sz, off = 0;
    bool found = false;
    for (; rec_check(b + off, (uint64_t)size - off, &h, &sz) == REC_OK; off += sz)
        if (h.kind == REC_STREAM && h.stream == 1) {
            found = true; /* a's create: the first record of stream 1 */
            break;
        }
    cr_assert(found);
    h.flags = 0; /* a lone record, not the head of a's first XADD's atomic group */
    uint8_t *rec = malloc(sz);
    memcpy(rec, b + off, sz);
    rec_hdr_encode(&h, rec);
    rec_hdr_set_crc(rec, rec_crc(rec, rec + REC_HDR_SIZE, h.body_len));
    append_bytes(p, rec, sz);
    free(rec);
    free(b);

    evs_options o;
    evs_options_init(&o);
    char logged[1024] = "";
    o.log = keep_errors;
    o.log_arg = logged;
    st = open_store(dir, &o);
    cr_assert(strstr(logged, "corruption: segment ") &&
              strstr(logged, "stream number 1 created after 2: numbers are never reused"),
              "%s", logged);
    cr_assert_eq(evs_stream_info_get(st, S("a"), &(evs_stream_info){0}), EVS_ENOTFOUND);
    evs_stream_info bi;
    cr_assert_eq(evs_stream_info_get(st, S("b"), &bi), 0);
    cr_assert_eq(bi.length, 1);
    evs_close(st);
}

void report(void *arg, const char *line)
{
    struct cap { char (*l)[1024]; int *n; } *c = arg;
    if (*c->n < 8)
        snprintf(c->l[(*c->n)++], 1024, "%s", line);
}

static void copy_file(const char *from, const char *to)
{
    int a = open(from, O_RDONLY), b = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(a >= 0 && b >= 0);
    char buf[65536];
    ssize_t r;
    while ((r = read(a, buf, sizeof buf)) > 0)
        cr_assert_eq(write(b, buf, (size_t)r), r);
    close(a);
    close(b);
}

/* The index's data file as it is now, copied to saved, to be put back later (copy_file(saved,
 * idx)) so that the index lags what is appended meanwhile. */
static void index_keep(char idx[600], char saved[600])
{
    snprintf(idx, 600, "%s/index/data.mdb", dir);
    snprintf(saved, 600, "%s/saved.mdb", dir);
    copy_file(idx, saved);
}

Test(recovery, lagging_index_catches_up)
{
    make_store(100, 30);
    char idx[600], saved[600];
    index_keep(idx, saved);
    evs_store *st = open_store(dir, NULL);
    for (int i = 100; i < 250; i++)
        cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){(uint64_t)i + 1, 0}, NULL, "v", "x", NULL), 0);
    evs_close(st);
    copy_file(saved, idx); /* the index now lags the log by 150 entries */
    cr_assert_eq(count_entries(), 250);
}

Test(recovery, a_hole_at_the_start_of_the_last_batch_past_the_index_watermark_is_a_torn_tail)
{
    /* the scan starts at the watermark, after entry 10, and the hole takes the batch's first
     * (flagged) record: the segment's first record shows that its writer flags. The batch is
     * one request (entries 11..110), so it is one write batch whatever the writer thread does */
    make_store(10, 50);
    char idx[600], saved[600];
    index_keep(idx, saved);
    evs_store *st = open_store(dir, NULL);
    static evs_append a[100];
    static evs_id ids[100];
    evs_field f = {S("v"), S("a value of the last batch")};
    for (int i = 0; i < 100; i++)
        a[i] = (evs_append){S("s"), EVS_ID_EXPLICIT, {(uint64_t)i + 11, 0}, &f, 1, false};
    evs_error err;
    cr_assert_eq(evs_append_batch(st, a, 100, ids, &err), 0, "%s", err.msg);
    cr_assert_eq(evs_close(st), 0);
    copy_file(saved, idx); /* the index stops before the batch, as a power cut leaves it */
    char p[600];
    seg_path(dir, -1, p, sizeof p);
    static seg_rec r[4096];
    int n = seg_records(p, r, 4096), first = n - 100;
    cr_assert(r[first].flags & REC_F_SYNCED, "the batch's first record follows a sync");
    for (int i = first + 1; i < n; i++)
        cr_assert_not(r[i].flags & REC_F_SYNCED, "one write batch");
    uint64_t page_end = (r[first].off + 4096) & ~(uint64_t)4095;
    static const uint8_t z[4096];
    write_at(p, (off_t)r[first].off, z, page_end - r[first].off);
    cr_assert_eq(count_entries(), 10);
    cr_assert_eq(count_torn(dir), 1);
}

Test(recovery, index_ahead_of_truncated_log_is_rebuilt)
{
    make_store(100, 30);
    char p[600];
    seg_path(dir, -1, p, sizeof p);
    /* lose 10 whole records (each entry record here is 56 + 40 = 96 bytes) */
    zero_last(p, 10 * 96);
    /* said as the loss it is, with the positions */
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 1 << 20;
    char logged[1024] = "";
    o.log = keep_errors;
    o.log_arg = logged;
    evs_close(open_store(dir, &o));
    cr_assert(strstr(logged, "the index was written up to log position ") &&
              strstr(logged, "which the log no longer holds"), "%s", logged);
    cr_assert_eq(count_entries(), 90);
}

Test(recovery, deleted_index_is_rebuilt)
{
    make_store(100, 30);
    rm_index(dir);
    cr_assert_eq(count_entries(), 100);
    cr_assert_not(dir_has(dir, "damaged"), "an empty index was kept aside");
    evs_store *st = open_store(dir, NULL);
    cr_assert_eq(newest_ms(st), 100);
    evs_close(st);
}

/* A damaged index is kept aside for whoever looks into it, but only the newest: damaged again
 * and again, the copies never pile up. */
Test(recovery, garbage_index_is_moved_aside_and_rebuilt)
{
    make_store(100, 30);
    for (int round = 0; round < 3; round++) {
        char idx[600];
        snprintf(idx, sizeof idx, "%s/index/data.mdb", dir);
        int fd = open(idx, O_WRONLY);
        char junk[8192];
        memset(junk, 0x5a, sizeof junk);
        cr_assert_eq(pwrite(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk);
        close(fd);
        cr_assert_eq(count_entries(), 100);
        cr_assert_eq(files_with(dir, "index.damaged-"), 1, "round %d", round);
    }
}

Test(recovery, index_after_reboot_without_checkpoint_is_rebuilt)
{
    make_store(50, 30);
    /* a checkpoint from another boot and an older transaction: the page cache may have lost
     * index pages, so open must not trust it */
    char p[600];
    snprintf(p, sizeof p, "%s/index.ckpt", dir);
    FILE *f = fopen(p, "w");
    fprintf(f, "boot other-boot\ntxn 1\n");
    fclose(f);
    setenv("EVSTORE_TEST_BOOT_ID", "this-boot", 1);
    cr_assert_eq(count_entries(), 50);
    unsetenv("EVSTORE_TEST_BOOT_ID");
    /* nothing wrong with it but trust: not kept (every power cut left a copy of it behind) */
    cr_assert_not(dir_has(dir, "damaged") || dir_has(dir, "untrusted"),
                  "an untrusted index was kept aside");
}

Test(recovery, lmdb_map_growth)
{
    evs_options o;
    evs_options_init(&o);
    o.index_map_bytes = 128 * 1024;
    o.segment_bytes = 1 << 20;
    evs_store *st = open_store(dir, &o);
    for (int i = 0; i < 3000; i++) {
        char t[32];
        sprintf(t, "type-%d", i);
        cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){(uint64_t)i + 1, 0}, NULL, "type", t,
                         "source", t, "v", "x", NULL), 0);
    }
    evs_query q;
    evs_query_init(&q);
    q.type = S("type-2999");
    evs_id ids[4];
    cr_assert_eq(read_ids(st, "s", &q, ids, 4), 1);
    cr_assert_eq(evs_close(st), 0);
    cr_assert_eq(count_entries(), 3000);
}

/* A new store holds no record (its first segment is preallocated zeros): closed and opened
 * again, its index is taken as it is, never moved aside as if it had lost the log's records. */
Test(recovery, empty_store_reopens_without_rebuilding_its_index)
{
    for (int i = 0; i < 3; i++)
        cr_assert_eq(evs_close(open_store(dir, NULL)), 0);
    cr_assert_not(dir_has(dir, "damaged"), "index moved aside");
}

/* A kill between the seal's index commit and the next segment file's creation leaves a log
 * whose last segment ends with its seal while the index's watermark is that seal. Open must
 * see the segment as sealed (the scan starts past the seal) and start a new one: appending
 * after a seal would leave records verify rejects (found by test_crash's power cut). */
Test(recovery, seal_indexed_before_the_next_file_exists)
{
    evs_store *st = open_store(dir, NULL);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){(uint64_t)i + 1, 0}, NULL, "v", "x", NULL), 0);
    evs_error err;
    cr_assert_eq(writer_roll(st, &err), 0, "%s", err.msg);
    cr_assert_eq(evs_close(st), 0); /* the index is committed up to the seal */
    char last[600];
    seg_path(dir, -1, last, sizeof last);
    cr_assert_eq(unlink(last), 0); /* the next file never got its name */
    st = open_store(dir, NULL);
    for (int i = 10; i < 15; i++)
        cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){(uint64_t)i + 1, 0}, NULL, "v", "x", NULL), 0);
    cr_assert_eq(verify_print(st), 0);
    cr_assert_eq(evs_close(st), 0);
    cr_assert_eq(count_entries(), 15);
}

/* A kill before the releaser cut a sealed segment to its records leaves the file at its
 * preallocated length, zeros after the seal (releaser.c L4): open takes the records' end from
 * where the next segment starts, serves every entry, verifies clean, and cuts it again. */
Test(recovery, sealed_segment_left_uncut_by_a_kill)
{
    evs_options o;
    make_small_segments(&o);
    char p[600];
    seg_path(dir, 1, p, sizeof p);
    off_t records = data_end(p);
    cr_assert_lt(records, 16 * 1024);
    cr_assert_eq(truncate(p, 16 * 1024), 0); /* as preallocated: zeros after the seal */
    evs_store *st = open_store(dir, &o);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    evs_id ids[512];
    cr_assert_eq(read_ids(st, "s", NULL, ids, 512), 400);
    for (int i = 0; i < 300 && file_size(p) != records; i++)
        nanosleep(&(struct timespec){0, 10 * 1000000}, NULL);
    cr_assert_eq(file_size(p), records);
    cr_assert_eq(evs_close(st), 0);
}

/* Deferred rolls (preparer.c D4). A kill -9 can leave the last segments named
 * "<name>.pending": open takes one in behind a complete, sealed predecessor (trusted without
 * reading it in the same boot), so every entry stays, and names it once synced. After a power
 * cut (a new boot ID) that lost the predecessor's seal, the pending file's bytes are set
 * aside ("<name>.pending.torn"), not read as log, and the store opens and verifies clean on
 * what precedes them. */
Test(recovery, pending_segments_are_adopted_behind_a_sealed_one_and_set_aside_otherwise)
{
    evs_options o;
    make_small_segments(&o);
    char last[600], pend[640], prev[600], logdir[600];
    snprintf(logdir, sizeof logdir, "%s/log", dir);
    seg_path(dir, -1, last, sizeof last);
    seg_path(dir, -2, prev, sizeof prev);
    snprintf(pend, sizeof pend, "%s.pending", last);
    cr_assert_eq(rename(last, pend), 0); /* the preparer had not named it yet */
    evs_store *st = open_store(dir, &o);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    evs_id ids[512];
    cr_assert_eq(read_ids(st, "s", NULL, ids, 512), 400);
    cr_assert_eq(evs_close(st), 0);
    cr_assert_eq(files_ending(logdir, ".pending"), 0, "not named by close");
    cr_assert_eq(file_size(last) > 0, 1, "not adopted");

    /* a power cut: the predecessor's seal never reached the disk */
    seg_path(dir, -1, last, sizeof last);
    seg_path(dir, -2, prev, sizeof prev);
    snprintf(pend, sizeof pend, "%s.pending", last);
    cr_assert_eq(rename(last, pend), 0);
    zero_last(prev, 64); /* the seal record (the last one) gone: zeros */
    setenv("EVSTORE_TEST_BOOT_ID", "after-a-power-cut", 1); /* the machine restarted */
    st = open_store(dir, &o);
    unsetenv("EVSTORE_TEST_BOOT_ID");
    cr_assert_eq(files_ending(logdir, ".pending"), 0);
    cr_assert_eq(files_ending(logdir, ".pending.torn"), 1, "the pending bytes not set aside");
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    long n = read_ids(st, "s", NULL, ids, 512);
    cr_assert_gt(n, 0);
    cr_assert_lt(n, 400, "the set-aside segment's entries are not part of the log");
    for (long i = 0; i < n; i++) /* a prefix: 1..n, none missing before the cut */
        cr_assert_eq(ids[i].ms, (uint64_t)i + 1);
    /* and the log goes on from there */
    cr_assert_eq(add(st, "s", EVS_ID_EXPLICIT, (evs_id){1000, 0}, NULL, "v", "after", NULL), 0);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
    st = open_store(dir, &o);
    cr_assert_eq(read_ids(st, "s", NULL, ids, 512), n + 1);
    cr_assert_eq(evs_close(st), 0);
}

static void keep_rebuilds(void *arg, int level, const char *msg)
{
    (void)level;
    if (strstr(msg, "rebuild") && !*(char *)arg)
        snprintf(arg, 1024, "%s", msg);
}

/* The checkpointer syncs the index once it has been quiet for a second (checkpoint.c): a
 * store that took writes without a pause, then went quiet and was killed a few seconds
 * later, keeps its index after a reboot (its last transaction is the one checkpointed); one
 * killed while its writes were still coming does not (it never did: a commit followed the
 * last checkpoint). */
static void write_then_kill(int quiet_ms)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        evs_options o;
        evs_options_init(&o);
        o.segment_bytes = 1 << 20;
        evs_store *st;
        evs_error e;
        if (evs_open(dir, &o, &st, &e))
            _exit(2);
        for (int i = 0; i < 100; i++) { /* ~2 s of commits, never a second apart */
            if (add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, NULL, "v", "x", NULL))
                _exit(3);
            usleep(20000);
        }
        usleep((useconds_t)quiet_ms * 1000);
        raise(SIGKILL);
        _exit(4);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child: %d", status);
}

Test(recovery, an_index_checkpointed_once_quiet_is_kept_after_a_reboot, .timeout = 60)
{
    write_then_kill(3500);
    char logged[1024] = "";
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 1 << 20;
    o.log = keep_rebuilds;
    o.log_arg = logged;
    setenv("EVSTORE_TEST_BOOT_ID", "after-a-reboot", 1);
    evs_store *st = open_store(dir, &o);
    unsetenv("EVSTORE_TEST_BOOT_ID");
    cr_assert_str_empty(logged, "rebuilt: %s", logged);
    evs_id ids[256];
    cr_assert_eq(read_ids(st, "s", NULL, ids, 256), 100);
    cr_assert_eq(evs_close(st), 0);

    write_then_kill(0); /* 100 more, killed at once */
    setenv("EVSTORE_TEST_BOOT_ID", "after-another-reboot", 1);
    st = open_store(dir, &o);
    unsetenv("EVSTORE_TEST_BOOT_ID");
    cr_assert(strstr(logged, "not checkpointed"), "kept: %s", logged);
    cr_assert_eq(read_ids(st, "s", NULL, ids, 256), 200);
    cr_assert_eq(evs_close(st), 0);
}

/* K1-K2 (store.c): LMDB runs without syncs between checkpoints, and a commit may reuse pages
 * of the checkpointed tree two transactions later; after a power cut the disk can then hold
 * later commits' pages under the checkpoint's meta pages (their own meta writes lost). Such an
 * index looks checkpointed (its transaction is the file's) but need not be whole: index.ckpt
 * says "open" from before the first commit after a checkpoint, and an open after a reboot
 * rebuilds the index. Made here by hand, after a kill: (a) the whole checkpointed index put
 * back (every later write lost: the decision alone, as the file's number matches), then (b)
 * the checkpointed meta pages over the later pages. */
static char *read_bytes(const char *path, long off, size_t *len)
{
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0, "%s", path);
    struct stat sb;
    cr_assert_eq(fstat(fd, &sb), 0);
    *len = (size_t)sb.st_size - (size_t)off;
    char *b = malloc(*len);
    cr_assert_eq(pread(fd, b, *len, off), (ssize_t)*len);
    close(fd);
    return b;
}

static void put_bytes(const char *path, const char *b, size_t len)
{
    int fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0, "%s", path);
    cr_assert_eq(pwrite(fd, b, len, 0), (ssize_t)len);
    close(fd);
}

static void reboot_and_open(evs_options *o, char logged[1024], long want)
{
    logged[0] = 0;
    o->log = keep_rebuilds;
    o->log_arg = logged;
    setenv("EVSTORE_TEST_BOOT_ID", want == 200 ? "after-a-power-cut" : "after-another", 1);
    evs_store *st = open_store(dir, o);
    unsetenv("EVSTORE_TEST_BOOT_ID");
    evs_id ids[512];
    cr_assert_eq(read_ids(st, "s", NULL, ids, 512), want);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
}

Test(recovery, an_index_written_after_its_checkpoint_is_not_trusted_after_a_reboot,
     .timeout = 60)
{
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 1 << 20;
    evs_store *st = open_store(dir, &o);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, NULL, "v", "x", NULL), 0);
    cr_assert_eq(evs_close(st), 0); /* checkpointed: no commit after it */
    char mdb[600], ckpt[600], logged[1024];
    snprintf(mdb, sizeof mdb, "%s/index/data.mdb", dir);
    snprintf(ckpt, sizeof ckpt, "%s/index.ckpt", dir);
    size_t len, tl;
    char *whole = read_bytes(mdb, 0, &len);
    write_then_kill(0); /* 100 more entries, ~2 s of commits, killed */
    char *text = read_bytes(ckpt, 0, &tl);
    cr_assert(tl > 5 && !memcmp(text + tl - 5, "open\n", 5), "index.ckpt: %.*s", (int)tl, text);
    free(text);
    put_bytes(mdb, whole, len); /* (a) */
    free(whole);
    reboot_and_open(&o, logged, 200);
    cr_assert(strstr(logged, "not checkpointed"), "kept: %s", logged);
    text = read_bytes(ckpt, 0, &tl);
    cr_assert(tl > 5 && memcmp(text + tl - 5, "open\n", 5), "after close: %.*s", (int)tl, text);
    free(text);

    long page = sysconf(_SC_PAGESIZE);
    char *metas = read_bytes(mdb, 0, &len);
    write_then_kill(0);
    put_bytes(mdb, metas, 2 * (size_t)page); /* (b) */
    free(metas);
    reboot_and_open(&o, logged, 300);
    cr_assert(strstr(logged, "rebuilding"), "kept: %s", logged);
}

/* A store killed before it ever made a checkpoint (--fsync no makes none until close; any
 * mode killed in its first second): the next open in the same boot takes its index as it is
 * (a read-only open such as verify's or dump's reads it; a read-write one keeps it), and an
 * open after a reboot does not trust it. Before index.ckpt named the boot from the open on,
 * read-only opens refused such a store and read-write ones rebuilt its index. */
Test(recovery, an_index_never_checkpointed_is_kept_after_a_kill_in_the_same_boot)
{
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 1 << 20;
    o.fsync = EVS_FSYNC_NO;
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        evs_store *st;
        evs_error e;
        if (evs_open(dir, &o, &st, &e))
            _exit(2);
        for (int i = 0; i < 300; i++)
            if (add(st, "s", EVS_ID_EXPLICIT, (evs_id){(uint64_t)i + 1, 0}, NULL, "v", "x", NULL))
                _exit(3);
        evs_store_stats s;
        for (int t = 0; t < 10000; t++) { /* the indexer commits within 10 ms */
            evs_store_stats_get(st, &s);
            if (s.index_end == s.log_end)
                raise(SIGKILL);
            usleep(1000);
        }
        _exit(4);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child: %d", status);

    evs_options ro = o;
    ro.read_only = true;
    evs_store *st = open_store(dir, &ro);
    evs_id ids[512];
    cr_assert_eq(read_ids(st, "s", NULL, ids, 512), 300);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);

    /* after a reboot its index may have lost pages: a read-only open rebuilds a private one */
    setenv("EVSTORE_TEST_BOOT_ID", "after-a-reboot", 1);
    st = open_store(dir, &ro);
    unsetenv("EVSTORE_TEST_BOOT_ID");
    cr_assert_eq(read_ids(st, "s", NULL, ids, 512), 300);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);

    st = open_store(dir, &o);
    cr_assert_not(dir_has(dir, "damaged"), "the index was rebuilt");
    cr_assert_eq(read_ids(st, "s", NULL, ids, 512), 300);
    cr_assert_eq(evs_close(st), 0);
}

/* A rebuilt index is a new LMDB environment whose transaction numbers start again: the
 * checkpoint file must not keep the old one's number, which the new one's would come to
 * match (and then be trusted after a reboot without ever having been made durable). */
Test(recovery, a_rebuilt_index_starts_its_checkpoint_at_transaction_zero)
{
    make_store(100, 30);
    rm_index(dir);
    evs_options o;
    evs_options_init(&o);
    o.segment_bytes = 1 << 20;
    o.fsync = EVS_FSYNC_NO; /* no checkpoint thread to write a newer one meanwhile */
    evs_store *st = open_store(dir, &o);
    char p[600], boot[64], fboot[64] = "";
    unsigned long long txn = 99;
    snprintf(p, sizeof p, "%s/index.ckpt", dir);
    FILE *f = fopen(p, "r");
    cr_assert_not_null(f);
    cr_assert_eq(fscanf(f, "boot %63s\ntxn %llu", fboot, &txn), 2);
    fclose(f);
    f = fopen("/proc/sys/kernel/random/boot_id", "r");
    cr_assert_not_null(fgets(boot, sizeof boot, f));
    fclose(f);
    boot[strcspn(boot, "\n")] = 0;
    cr_assert_str_eq(fboot, boot);
    cr_assert_eq(txn, 0);
    cr_assert_eq(evs_close(st), 0);
    cr_assert_eq(count_entries(), 100);
}

/* verify and dump open read-only, and must work on a store whose index cannot be used —
 * deleted here, or after a reboot (above) — without writing to its folder: they rebuild a
 * private index under $TMPDIR, which close removes. Entries deleted (XDEL) stay deleted. */
Test(recovery, a_read_only_open_rebuilds_a_missing_index_privately)
{
    make_store(100, 30);
    evs_store *st = open_store(dir, NULL);
    evs_id gone = {7, 0};
    size_t deleted = 0;
    evs_error e;
    cr_assert_eq(evs_delete(st, S("s"), &gone, 1, &deleted, &e), 0);
    cr_assert_eq(deleted, 1);
    cr_assert_eq(evs_close(st), 0);
    rm_index(dir);
    char tmp[600], idx[600];
    snprintf(tmp, sizeof tmp, "%s/tmp", dir);
    snprintf(idx, sizeof idx, "%s/index", dir);
    cr_assert_eq(mkdir(tmp, 0755), 0);
    setenv("TMPDIR", tmp, 1);
    evs_options ro;
    evs_options_init(&ro);
    ro.read_only = true;
    st = open_store(dir, &ro);
    cr_assert(dir_has(tmp, "evstore-index-"), "no private index under $TMPDIR");
    evs_id ids[128];
    cr_assert_eq(read_ids(st, "s", NULL, ids, 128), 99);
    for (long i = 0; i < 99; i++)
        cr_assert_neq(ids[i].ms, 7, "a deleted entry came back");
    cr_assert_eq(newest_ms(st), 100);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
    unsetenv("TMPDIR");
    cr_assert_not(dir_has(tmp, "evstore-index-"), "the private index was left behind");
    struct stat sb;
    cr_assert_neq(stat(idx, &sb), 0, "the read-only open wrote the store's index");
    st = open_store(dir, NULL); /* and the next read-write open rebuilds the store's own */
    cr_assert_eq(read_ids(st, "s", NULL, ids, 128), 99);
    cr_assert_eq(evs_close(st), 0);
    cr_assert_eq(stat(idx, &sb), 0);
}

/* A read-only open killed before its close leaves its private index behind: the next one that
 * makes a private index removes it — only folders whose owner.lock nobody holds (a live
 * owner's is flock()ed), never one without that file (being made). */
Test(recovery, a_private_index_left_by_a_killed_open_is_removed_by_the_next)
{
    make_store(10, 30);
    rm_index(dir);
    char tmp[600], dead[700], live[700], young[700], lock[800];
    snprintf(tmp, sizeof tmp, "%s/tmp", dir);
    cr_assert_eq(mkdir(tmp, 0755), 0);
    snprintf(dead, sizeof dead, "%s/evstore-index-AAAAAA", tmp);
    snprintf(live, sizeof live, "%s/evstore-index-BBBBBB", tmp);
    snprintf(young, sizeof young, "%s/evstore-index-CCCCCC", tmp);
    int held = -1;
    const char *folders[] = {dead, live, young};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(mkdir(folders[i], 0700), 0);
        if (i == 2)
            break; /* no owner.lock yet */
        snprintf(lock, sizeof lock, "%s/owner.lock", folders[i]);
        int fd = open(lock, O_RDWR | O_CREAT, 0600);
        cr_assert_geq(fd, 0);
        snprintf(lock, sizeof lock, "%s/data.mdb", folders[i]);
        FILE *f = fopen(lock, "w");
        cr_assert_not_null(f);
        fclose(f);
        if (i == 1) {
            cr_assert_eq(flock(fd, LOCK_EX), 0); /* a live owner */
            held = fd;
        } else {
            close(fd); /* its owner was killed: nothing holds the lock */
        }
    }
    setenv("TMPDIR", tmp, 1);
    evs_options ro;
    evs_options_init(&ro);
    ro.read_only = true;
    evs_store *st = open_store(dir, &ro);
    struct stat sb;
    cr_assert_neq(stat(dead, &sb), 0, "a dead owner's private index was not removed");
    cr_assert_eq(stat(live, &sb), 0, "a live owner's private index was removed");
    cr_assert_eq(stat(young, &sb), 0, "a private index being made was removed");
    cr_assert_eq(files_with(tmp, "evstore-index-"), 3); /* live, young and this open's */
    evs_id ids[16];
    cr_assert_eq(read_ids(st, "s", NULL, ids, 16), 10);
    cr_assert_eq(evs_close(st), 0);
    unsetenv("TMPDIR");
    cr_assert_eq(files_with(tmp, "evstore-index-"), 2);
    close(held);
}

/* The index lags the log by more than one recovery flush (65,536 records): a read-only open
 * (verify, dump) still reads every entry, and writes nothing. It used to try to flush its
 * re-indexed batch into the read-only environment and fail ("index write failed"). */
Test(recovery, a_read_only_open_reads_a_long_unindexed_tail, .timeout = 120)
{
    make_store(10, 30);
    char idx[600], saved[600];
    index_keep(idx, saved);
    evs_options o;
    evs_options_init(&o); /* 64 MiB segments: recovery flushes within one segment's scan */
    o.fsync = EVS_FSYNC_NO;
    evs_store *st = open_store(dir, &o);
    enum { N = 70000, B = 1000 };
    static evs_append reqs[B];
    evs_field f = {S("v"), S("x")};
    for (int i = 0; i < N; i += B) {
        for (int j = 0; j < B; j++)
            reqs[j] = (evs_append){S("s"), EVS_ID_EXPLICIT, {(uint64_t)(11 + i + j), 0}, &f, 1, false};
        evs_error e;
        cr_assert_eq(evs_append_batch(st, reqs, B, NULL, &e), 0, "%s", e.msg);
    }
    cr_assert_eq(evs_close(st), 0);
    copy_file(saved, idx); /* the index now lags the log by 70,000 entries */
    struct stat before;
    cr_assert_eq(stat(idx, &before), 0);

    evs_options ro = o;
    ro.read_only = true;
    st = open_store(dir, &ro);
    cr_assert_eq(read_ids(st, "s", NULL, NULL, 0), N + 10);
    cr_assert_eq(newest_ms(st), (uint64_t)N + 10);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
    struct stat after;
    cr_assert_eq(stat(idx, &after), 0);
    cr_assert(after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
              after.st_mtim.tv_nsec == before.st_mtim.tv_nsec, "the read-only open wrote the index");
    cr_assert_eq(count_entries(), N + 10); /* and a read-write open indexes them */
}

/* A tombstone past the index watermark (the index had not taken it: an XDEL never
 * acknowledged, simulated here with an older copy of the index): a read-only open, which
 * writes no index, still hides the deleted entry — as its stream length and a read-write open
 * do. */
Test(recovery, a_read_only_open_hides_entries_deleted_past_the_index)
{
    make_store(100, 30);
    char idx[600], saved[600];
    index_keep(idx, saved);
    evs_store *st = open_store(dir, NULL);
    evs_id gone[2] = {{70, 0}, {30, 0}};
    size_t deleted = 0;
    evs_error e;
    cr_assert_eq(evs_delete(st, S("s"), gone, 2, &deleted, &e), 0);
    cr_assert_eq(deleted, 2);
    cr_assert_eq(evs_close(st), 0);
    copy_file(saved, idx); /* the tombstones are past the index's watermark now */

    evs_options ro;
    evs_options_init(&ro);
    ro.read_only = true;
    st = open_store(dir, &ro);
    evs_id ids[128];
    cr_assert_eq(read_ids(st, "s", NULL, ids, 128), 98);
    for (int i = 0; i < 98; i++)
        cr_assert(ids[i].ms != 70 && ids[i].ms != 30, "deleted entry %llu read",
                  (unsigned long long)ids[i].ms);
    evs_query q;
    evs_query_init(&q);
    q.reverse = true;
    cr_assert_eq(read_ids(st, "s", &q, ids, 128), 98);
    evs_stream_info info;
    cr_assert_eq(evs_stream_info_get(st, S("s"), &info), 0);
    cr_assert_eq(info.length, 98);
    cr_assert_eq(evs_verify(st, NULL, NULL), 0);
    cr_assert_eq(evs_close(st), 0);
}

/* STORE must name a store ID of 32 lowercase hex digits: one of four digits opened, and the
 * store then led replication and backups with it. */
Test(recovery, a_malformed_store_id_is_refused)
{
    evs_store *st = open_store(dir, NULL);
    cr_assert_eq(add(st, "s", EVS_ID_AUTO, EVS_ID_MIN, NULL, "a", "b", NULL), 0);
    cr_assert_eq(evs_close(st), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/STORE", dir);
    const char *bad[] = {"evstore-store 1\nid 0123\n",
                         "evstore-store 1\nid 0123456789abcdef0123456789abcdeX\n",
                         "evstore-store 1\nid 0123456789ABCDEF0123456789abcdef\n",
                         "evstore-store 1\nid 0123456789abcdef0123456789abcdef0\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        FILE *f = fopen(path, "w");
        fputs(bad[i], f);
        fclose(f);
        evs_error err = {0};
        evs_options o;
        evs_options_init(&o);
        o.segment_bytes = 1 << 20;
        cr_assert_eq(evs_open(dir, &o, &st, &err), EVS_ECORRUPT, "case %zu opened", i);
        cr_assert(strstr(err.msg, "STORE is malformed"), "%s", err.msg);
    }
    FILE *f = fopen(path, "w");
    fputs("evstore-store 1\nid 0123456789abcdef0123456789abcdef\n", f);
    fclose(f);
    st = open_store(dir, NULL);
    cr_assert_eq(evs_close(st), 0);
}

/* A stop asked for during a long recovery (evs_options.cancel, set by the server's SIGTERM
 * handler) ends the open with EVS_ECLOSED and leaves the folder as a crash there would: the
 * next open recovers everything. */
Test(recovery, a_cancelled_recovery_stops_and_the_next_open_recovers_all)
{
    make_store(3000, 2000);
    rm_index(dir); /* the whole log to scan again */
    evs_options o;
    evs_options_init(&o);
    volatile int stop = 1;
    o.cancel = &stop;
    evs_store *st = NULL;
    evs_error e;
    cr_assert_eq(evs_open(dir, &o, &st, &e), EVS_ECLOSED);
    cr_assert(strstr(e.msg, "interrupted"), "%s", e.msg);
    cr_assert_null(st);
    stop = 0; /* a flag left clear changes nothing */
    st = open_store(dir, &o);
    cr_assert_eq(evs_close(st), 0);
    cr_assert_eq(count_entries(), 3000);
}
