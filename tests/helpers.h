/*
 * helpers.h — shared by the Criterion tests: temporary folders, quick appends and reads.
 */
#ifndef EVS_TEST_HELPERS_H
#define EVS_TEST_HELPERS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <stdbool.h>
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

static inline void rm_rf(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* Delete a stopped store's LMDB index: the next open rebuilds it from the log. */
static inline void rm_index(const char *store)
{
    char path[600];
    snprintf(path, sizeof path, "%s/index", store);
    rm_rf(path);
}

static inline char *tmpdir_new(void)
{
    char *d = strdup("/tmp/evs-test-XXXXXX");
    cr_assert(mkdtemp(d) != NULL);
    return d;
}

static inline char *store_path(const char *dir)
{
    char *p = malloc(strlen(dir) + 8);
    sprintf(p, "%s/store", dir);
    return p;
}

static inline void verify_print_line(void *arg, const char *line)
{
    (void)arg;
    fprintf(stderr, "verify: %s\n", line);
}

/* evs_verify, each problem printed to stderr. */
static inline long verify_print(evs_store *st) { return evs_verify(st, verify_print_line, NULL); }

/* Tests default to 1 MiB segments: every segment file is zero-filled to its full size. */
static inline evs_store *open_store(const char *dir, const evs_options *o)
{
    evs_store *st = NULL;
    evs_error err = {0};
    evs_options dflt;
    if (!o) {
        evs_options_init(&dflt);
        dflt.segment_bytes = 1 << 20;
        o = &dflt;
    }
    int rc = evs_open(dir, o, &st, &err);
    cr_assert_eq(rc, 0, "evs_open(%s): %d %s", dir, rc, err.msg);
    return st;
}

/* Append one entry with fields k=v pairs from a NULL-terminated list. */
static inline int add(evs_store *st, const char *name, evs_id_mode mode, evs_id id, evs_id *out,
                      ...)
{
    evs_field f[16];
    size_t n = 0;
    va_list ap;
    va_start(ap, out);
    const char *k;
    while ((k = va_arg(ap, const char *)) && n < 16) {
        const char *v = va_arg(ap, const char *);
        f[n].name = (evs_slice){k, strlen(k)};
        f[n].value = (evs_slice){v, strlen(v)};
        n++;
    }
    va_end(ap);
    evs_append a = {{name, strlen(name)}, mode, id, f, n, false};
    evs_error err;
    return evs_append_one(st, &a, out, &err);
}

static inline evs_slice S(const char *s) { return (evs_slice){s, strlen(s)}; }

/* evs_submit_keyed, waited for: its result, and up to 4 IDs into ids. */
struct kdone {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int rc;
    bool done;
    evs_id ids[4];
};

static inline void keyed_done(void *arg, int rc, const evs_id *ids, size_t n,
                              const evs_error *err)
{
    (void)err;
    struct kdone *k = arg;
    pthread_mutex_lock(&k->mu);
    k->rc = rc;
    for (size_t i = 0; i < n && i < 4; i++)
        k->ids[i] = ids[i];
    k->done = true;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

static inline int add_keyed(evs_store *st, const evs_append *a, size_t n, const char *key,
                            evs_id *ids)
{
    struct kdone k = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, -1, false, {{0, 0}}};
    int rc = evs_submit_keyed(st, a, n, S(key), keyed_done, &k, NULL);
    if (rc)
        return rc;
    pthread_mutex_lock(&k.mu);
    while (!k.done)
        pthread_cond_wait(&k.cv, &k.mu);
    pthread_mutex_unlock(&k.mu);
    for (size_t i = 0; ids && i < n && i < 4; i++)
        ids[i] = k.ids[i];
    return k.rc;
}

/* How many files in folder d have names ending in suffix. */
static inline int files_ending(const char *d, const char *suffix)
{
    DIR *dp = opendir(d);
    cr_assert(dp != NULL, "cannot list %s", d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        size_t l = strlen(de->d_name), sl = strlen(suffix);
        n += l > sl && !strcmp(de->d_name + l - sl, suffix);
    }
    closedir(dp);
    return n;
}

/* Read a stream into an array of IDs; returns count, or a negative error. */
static inline long read_ids(evs_store *st, const char *name, const evs_query *q, evs_id *out,
                            size_t cap)
{
    evs_iter *it;
    evs_error err;
    int rc = evs_iter_open(st, S(name), q, &it, &err);
    if (rc)
        return rc;
    long n = 0;
    const evs_entry *e;
    while ((rc = evs_iter_next(it, &e, &err)) == 1) {
        if ((size_t)n < cap)
            out[n] = e->id;
        n++;
    }
    evs_iter_close(it);
    return rc < 0 ? rc : n;
}

/* One entry as text: ID, append time, fields (long values by length and first byte). */
static inline void entry_text(char *out, size_t cap, size_t *n, const evs_entry *e)
{
    *n += (size_t)snprintf(out + *n, cap - *n, "%lu-%lu@%lu", (unsigned long)e->id.ms,
                           (unsigned long)e->id.seq, (unsigned long)e->time_us);
    for (size_t i = 0; i < e->nfields; i++) {
        const evs_field *f = &e->fields[i];
        if (f->value.len <= 16)
            *n += (size_t)snprintf(out + *n, cap - *n, " %.*s=%.*s", (int)f->name.len,
                                   (const char *)f->name.ptr, (int)f->value.len,
                                   (const char *)f->value.ptr);
        else
            *n += (size_t)snprintf(out + *n, cap - *n, " %.*s=%c*%zu", (int)f->name.len,
                                   (const char *)f->name.ptr, *(const char *)f->value.ptr,
                                   f->value.len);
    }
    *n += (size_t)snprintf(out + *n, cap - *n, ";");
    cr_assert_lt(*n, cap - 1);
}

#define TEXT_CAP (1u << 18)

/* Everything a read of `name` hands out, as one string. */
static inline char *read_all(evs_store *st, const char *name, const evs_query *q)
{
    size_t n = 0;
    char *out = calloc(1, TEXT_CAP);
    evs_iter *it;
    evs_error err;
    cr_assert_eq(evs_iter_open(st, S(name), q, &it, &err), 0, "%s", err.msg);
    const evs_entry *e;
    int rc;
    while ((rc = evs_iter_next(it, &e, &err)) == 1)
        entry_text(out, TEXT_CAP, &n, e);
    cr_assert_eq(rc, 0, "%s", err.msg);
    evs_iter_close(it);
    return out;
}

#ifdef EVS_INTERNAL_H /* tests that include internal.h first */
/* A stream's visible state (its number, positions), as readers see it. */
static inline stream_state state_of(evs_store *st, const char *name)
{
    pthread_rwlock_rdlock(&st->lock);
    stream *s = strtab_get(&st->vtab, name, strlen(name), true);
    cr_assert(s != NULL);
    stream_state v = s->v;
    pthread_rwlock_unlock(&st->lock);
    return v;
}
#endif

#ifdef EVS_RECORD_H /* tests that include record.h first */
/* The records of every segment of the store in folder `store`, in log order, as one buffer of
 * *len bytes (each file up to its last valid record: no preallocated zeros). */
static inline uint8_t *log_records(const char *store, size_t *len)
{
    char p[700];
    snprintf(p, sizeof p, "%s/log", store);
    struct dirent **names;
    int n = scandir(p, &names, NULL, alphasort);
    cr_assert_gt(n, 0, "cannot list %s", p);
    uint8_t *out = NULL;
    size_t o = 0, cap = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(names[i]->d_name);
        if (l > 4 && !strcmp(names[i]->d_name + l - 4, ".seg")) {
            char f[1400];
            snprintf(f, sizeof f, "%s/%s", p, names[i]->d_name);
            FILE *fp = fopen(f, "rb");
            cr_assert(fp != NULL, "cannot open %s", f);
            fseek(fp, 0, SEEK_END);
            long sz = ftell(fp);
            fseek(fp, 0, SEEK_SET);
            if (o + (size_t)sz + 1 > cap) { /* doubling: a log of many files stays linear */
                cap = (o + (size_t)sz + 1) * 2;
                out = realloc(out, cap);
                cr_assert(out != NULL);
            }
            cr_assert_eq(fread(out + o, 1, (size_t)sz, fp), (size_t)sz);
            fclose(fp);
            size_t end = o;
            rec_hdr h;
            uint64_t rs;
            while (end < o + (size_t)sz &&
                   rec_check(out + end, o + (size_t)sz - end, &h, &rs) == REC_OK)
                end += rs;
            o = end;
        }
        free(names[i]);
    }
    free(names);
    *len = o;
    return out;
}
#endif

#endif
