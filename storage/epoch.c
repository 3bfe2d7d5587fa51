/*
 * epoch.c — the store's lineage: an fsynced history of (epoch, UUID, start position), kept in
 * the file EPOCHS and marked in the log by REC_EPOCH records.
 *
 *   EPOCHS = "evstore-epochs 1\n" then one line per epoch, oldest first:
 *            "<epoch> <uuid, 32 hex digits> <start log position>\n"
 *
 * A store made by this version starts in epoch 1 at position 0; a store made before EPOCHS
 * existed has no history and writes epoch 0. A new epoch begins when a restore finishes (so a
 * restored store is never mistaken for its original) and, with replication, at a promotion.
 *
 * Invariants:
 *  E1. EPOCHS is rewritten whole (temp, fsync, rename, fsync the folder) before the REC_EPOCH
 *      record of a new epoch, or any record carrying its number, is written: the history never
 *      lags the log. (It may lead it after a crash: an epoch whose start lies past the end of
 *      the recovered log then starts at that end; see epochs_reconcile.)
 *  E2. Along the history epoch numbers strictly increase and starts never decrease.
 *  E3. Every record written while epoch e is current carries e in its header (st->epoch).
 *  E4. The history is retention-proof: it lives outside the segments retention deletes.
 *  E5. EPOCHS is read as strictly as it is written: a line that epochs_format would not write
 *      (a sign, a blank more, a number past its range) makes the file malformed, never read
 *      as a neighbouring value.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "internal.h"

#define EPOCHS_MAGIC "evstore-epochs 1\n"
#define EPOCHS_MAX 100000 /* a history longer than this is not a real one */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

void evs_uuid_format(const uint8_t uuid[16], char out[33])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hx[uuid[i] >> 4];
        out[2 * i + 1] = hx[uuid[i] & 15];
    }
    out[32] = 0;
}

int evs_uuid_parse(const char *s, size_t len, uint8_t uuid[16])
{
    if (len != 32)
        return -1;
    for (int i = 0; i < 16; i++) {
        int hi = hexval((unsigned char)s[2 * i]), lo = hexval((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        uuid[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int epochs_parse(const char *buf, size_t len, evs_epoch **out, size_t *n, char *why, size_t cap)
{
    *out = NULL;
    *n = 0;
    size_t ml = strlen(EPOCHS_MAGIC);
    if (len < ml || memcmp(buf, EPOCHS_MAGIC, ml)) {
        snprintf(why, cap, "does not start with \"evstore-epochs 1\"");
        return -1;
    }
    evs_epoch *v = NULL;
    size_t nv = 0, vcap = 0, line = 1;
    for (size_t off = ml; off < len;) {
        line++;
        const char *nl = memchr(buf + off, '\n', len - off);
        if (!nl) {
            snprintf(why, cap, "line %zu is not terminated", line);
            goto bad;
        }
        const char *l = buf + off;
        size_t ll = (size_t)(nl - l);
        off += ll + 1;
        /* exactly "<epoch> <uuid> <start>\n": one space between, digits only (E5) */
        const char *s1 = memchr(l, ' ', ll);
        const char *s2 = s1 ? memchr(s1 + 1, ' ', ll - (size_t)(s1 + 1 - l)) : NULL;
        evs_epoch e = {0};
        uint64_t ep, start;
        if (!s2 || evs_parse_dec(l, (size_t)(s1 - l), &ep) || ep > UINT32_MAX ||
            s2 - s1 - 1 != 32 || evs_parse_dec(s2 + 1, (size_t)(nl - s2 - 1), &start) ||
            start % 8) {
            snprintf(why, cap, "line %zu is not \"<epoch> <32 hex digits> <position>\"", line);
            goto bad;
        }
        if (evs_uuid_parse(s1 + 1, 32, e.uuid)) {
            snprintf(why, cap, "line %zu: the UUID is not lowercase hex", line);
            goto bad;
        }
        e.epoch = (uint32_t)ep;
        e.start = start;
        if (nv && (e.epoch <= v[nv - 1].epoch || e.start < v[nv - 1].start)) {
            snprintf(why, cap, "line %zu: epochs must increase and starts never decrease", line);
            goto bad;
        }
        if (nv == EPOCHS_MAX) {
            snprintf(why, cap, "more than %d epochs", EPOCHS_MAX);
            goto bad;
        }
        if (arr_room(&v, nv, &vcap, sizeof *v, 8)) {
            snprintf(why, cap, "out of memory");
            goto bad;
        }
        v[nv++] = e;
    }
    *out = v;
    *n = nv;
    return 0;
bad:
    free(v);
    return -1;
}

char *epochs_format(const evs_epoch *v, size_t n, size_t *len)
{
    size_t cap = strlen(EPOCHS_MAGIC) + n * 64 + 1;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    size_t o = (size_t)snprintf(s, cap, "%s", EPOCHS_MAGIC);
    for (size_t i = 0; i < n; i++) {
        char u[33];
        evs_uuid_format(v[i].uuid, u);
        o += (size_t)snprintf(s + o, cap - o, "%" PRIu32 " %s %" PRIu64 "\n", v[i].epoch, u,
                              v[i].start);
    }
    *len = o;
    return s;
}

static int epochs_write(evs_store *st, const evs_epoch *v, size_t n, evs_error *err)
{
    size_t len;
    char *s = epochs_format(v, n, &len);
    if (!s)
        return evs_err_set(err, -ENOMEM, "out of memory");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/EPOCHS", st->dir);
    int rc = fio_write_file_atomic(st->io, path, s, len);
    free(s);
    if (rc)
        return evs_err_set(err, rc, "cannot write %s: %s", path, strerror(-rc));
    return 0;
}

int epochs_load(evs_store *st, bool fresh, evs_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/EPOCHS", st->dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno != ENOENT)
            return evs_err_set(err, -errno, "cannot read %s: %s", path, strerror(errno));
        st->epoch = 0;
        if (!fresh || st->opt.read_only)
            return 0; /* a store from before EPOCHS: no history, epoch 0 */
        evs_epoch e = {.epoch = 1, .start = 0};
        if (getrandom(e.uuid, sizeof e.uuid, 0) != (ssize_t)sizeof e.uuid)
            return evs_err_set(err, -EIO, "cannot read random bytes for an epoch UUID");
        int rc = epochs_write(st, &e, 1, err);
        if (rc)
            return rc;
        if (!(st->epochs = malloc(sizeof e)))
            return evs_err_set(err, -ENOMEM, "out of memory");
        st->epochs[0] = e;
        st->nepochs = 1;
        st->epoch = 1;
        return 0;
    }
    char *buf = malloc(1 << 20);
    size_t len = buf ? fread(buf, 1, 1 << 20, f) : 0;
    bool too_big = buf && len == 1 << 20;
    fclose(f);
    if (!buf)
        return evs_err_set(err, -ENOMEM, "out of memory");
    char why[160];
    evs_epoch *v;
    size_t n;
    int rc = too_big ? (snprintf(why, sizeof why, "file is over 1 MiB"), -1)
                     : epochs_parse(buf, len, &v, &n, why, sizeof why);
    free(buf);
    if (rc)
        return evs_err_set(err, EVS_ECORRUPT, "%s: %s", path, why);
    st->epochs = v;
    st->nepochs = n;
    st->epoch = n ? v[n - 1].epoch : 0;
    return 0;
}

int epochs_reconcile(evs_store *st, evs_error *err)
{
    if (!st->nepochs || st->epochs[st->nepochs - 1].start <= st->tail)
        return 0;
    evs_epoch *e = &st->epochs[st->nepochs - 1];
    evs_log(st, EVS_LOG_WARN,
            "epoch %" PRIu32 " was recorded to start at %" PRIu64
            " but the log ends at %" PRIu64 " after recovery; it starts there",
            e->epoch, e->start, st->tail);
    e->start = st->tail;
    if (st->nepochs > 1 && e->start < st->epochs[st->nepochs - 2].start)
        e->start = st->epochs[st->nepochs - 2].start; /* E2 (cannot happen: starts only grow) */
    return epochs_write(st, st->epochs, st->nepochs, err);
}

/* Add e to the history: EPOCHS rewritten durably first (E1), then the history in memory and
 * the current epoch. Writer thread. */
static int history_append(evs_store *st, const evs_epoch *e, evs_error *err)
{
    evs_epoch *v = malloc((st->nepochs + 1) * sizeof *v);
    if (!v)
        return evs_err_set(err, -ENOMEM, "out of memory");
    if (st->nepochs)
        memcpy(v, st->epochs, st->nepochs * sizeof *v);
    v[st->nepochs] = *e;
    int rc = epochs_write(st, v, st->nepochs + 1, err);
    if (rc) {
        free(v);
        return rc;
    }
    pthread_rwlock_wrlock(&st->lock);
    free(st->epochs);
    st->epochs = v;
    st->nepochs++;
    st->epoch = e->epoch;
    pthread_rwlock_unlock(&st->lock);
    return 0;
}

int epochs_begin_writer(evs_store *st, evs_epoch *out, evs_error *err)
{
    evs_epoch e = {.epoch = st->epoch + 1, .start = st->tail};
    if (st->nepochs && st->epochs[st->nepochs - 1].epoch >= e.epoch)
        e.epoch = st->epochs[st->nepochs - 1].epoch + 1;
    if (getrandom(e.uuid, sizeof e.uuid, 0) != (ssize_t)sizeof e.uuid)
        return evs_err_set(err, -EIO, "cannot read random bytes for an epoch UUID");
    int rc = history_append(st, &e, err);
    if (!rc)
        *out = e;
    return rc;
}

int epochs_follow_writer(evs_store *st, const evs_epoch *e, evs_error *err)
{
    if (st->nepochs) {
        const evs_epoch *last = &st->epochs[st->nepochs - 1];
        for (size_t i = 0; i < st->nepochs; i++)
            if (st->epochs[i].epoch == e->epoch && !memcmp(st->epochs[i].uuid, e->uuid, 16) &&
                st->epochs[i].start == e->start)
                return 0; /* known already (a replay after a restart) */
        if (e->epoch <= last->epoch || e->start < last->start)
            return evs_err_set(err, EVS_ECORRUPT,
                               "the leader's epoch %" PRIu32 " at %" PRIu64 " does not follow this "
                               "store's epoch %" PRIu32 " at %" PRIu64 ": the histories diverged",
                               e->epoch, e->start, last->epoch, last->start);
    }
    return history_append(st, e, err);
}

int evs_replica_adopt(evs_store *st, const char *store_id, const evs_epoch *epochs, size_t n,
                      evs_error *err)
{
    if (!atomic_load(&st->following))
        return evs_err_set(err, EVS_EINVAL, "the store is not a follower");
    evs_store_stats s;
    evs_store_stats_get(st, &s);
    if (s.log_end != 0)
        return evs_err_set(err, EVS_EINVAL, "only an empty store takes a leader's identity; this "
                           "one holds %" PRIu64 " bytes of log", s.log_end);
    if (!store_id_ok(store_id))
        return evs_err_set(err, EVS_EINVAL, "malformed store ID");
    int rc = epochs_write(st, epochs, n, err); /* the history first, then the identity */
    if (rc)
        return rc;
    char path[PATH_MAX], buf[128];
    snprintf(path, sizeof path, "%s/STORE", st->dir);
    int len = snprintf(buf, sizeof buf, "evstore-store 1\nid %s\n", store_id);
    if ((rc = fio_write_file_atomic(st->io, path, buf, (size_t)len)))
        return evs_err_set(err, rc, "cannot write %s: %s", path, strerror(-rc));
    evs_epoch *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return evs_err_set(err, -ENOMEM, "out of memory");
    memcpy(v, epochs, n * sizeof *v);
    pthread_rwlock_wrlock(&st->lock);
    memcpy(st->store_id, store_id, 33);
    free(st->epochs);
    st->epochs = v;
    st->nepochs = n;
    st->epoch = n ? v[n - 1].epoch : 0;
    pthread_rwlock_unlock(&st->lock);
    return 0;
}

size_t evs_epochs(evs_store *st, evs_epoch *out, size_t cap)
{
    pthread_rwlock_rdlock(&st->lock);
    size_t n = st->nepochs;
    if (out && cap)
        memcpy(out, st->epochs, (n < cap ? n : cap) * sizeof *out);
    pthread_rwlock_unlock(&st->lock);
    return n;
}

const char *evs_store_id(evs_store *st) { return st->store_id; }
