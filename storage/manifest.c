/*
 * manifest.c — encode and parse a backup's MANIFEST (format in docs/backup.md).
 *
 *   evstore-backup 1
 *   id <32 hex>                      this backup
 *   store <32 hex>                   the store's ID
 *   created-ms <n>
 *   source <hex of the text>
 *   cut <n>                          log position of the snapshot
 *   log-start <n>                    position of its first segment
 *   parent <32 hex> <hex of path>    incremental backups only
 *   epoch <n> <32 hex uuid> <start>  the epoch history at the cut, oldest first
 *   stream <hex name> <ms>-<seq> <length> <entries-added>
 *   file <name> <size> <alloc> <crc> <meta|sealed|active> <seal crc> <raw|z> <stored size>
 *        <stored crc> <-|ancestor id>          (one line)
 *   end <crc>                        crc32 of every byte before this line
 *
 * Invariants:
 *  M1. A manifest that parses names only files a store may hold (mf_name_ok): no path from a
 *      backup can reach outside the folder being restored.
 *  M2. Every byte of it is covered by the CRC on its last line; a truncated or edited
 *      manifest never parses.
 */
#include "crc.h"
#include "manifest.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MF_MAGIC "evstore-backup 1\n"

/* ---- a growable text buffer ---------------------------------------------------------------- */

typedef struct tbuf {
    char *p;
    size_t len, cap;
    bool oom;
} tbuf;

static void tb_grow(tbuf *b, size_t more)
{
    if (b->oom || b->len + more + 1 <= b->cap)
        return;
    size_t c = b->cap ? b->cap : 4096;
    while (c < b->len + more + 1)
        c *= 2;
    char *n = realloc(b->p, c);
    if (!n) {
        b->oom = true;
        return;
    }
    b->p = n;
    b->cap = c;
}

__attribute__((format(printf, 2, 3))) static void tb_printf(tbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    tb_grow(b, (size_t)n);
    if (b->oom)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void tb_hex(tbuf *b, const uint8_t *p, size_t n)
{
    tb_grow(b, 2 * n + 1);
    if (b->oom)
        return;
    static const char hx[] = "0123456789abcdef";
    if (n == 0)
        b->p[b->len++] = '-'; /* the empty string */
    for (size_t i = 0; i < n; i++) {
        b->p[b->len++] = hx[p[i] >> 4];
        b->p[b->len++] = hx[p[i] & 15];
    }
    b->p[b->len] = 0;
}

/* ---- names ---------------------------------------------------------------------------------- */

bool mf_name_ok(const char *name)
{
    if (!strcmp(name, "STORE") || !strcmp(name, "EPOCHS") || !strcmp(name, "index/data.mdb"))
        return true;
    if (strlen(name) != 4 + 20 + 4 || strncmp(name, "log/", 4) || strcmp(name + 24, ".seg"))
        return false;
    for (int i = 4; i < 24; i++)
        if (name[i] < '0' || name[i] > '9')
            return false;
    return true;
}

void mf_stored_name(const mf_file *f, char out[MF_NAME_MAX + 4])
{
    snprintf(out, MF_NAME_MAX + 4, "%s%s", f->name, f->compressed ? ".z" : "");
}

/* ---- encode --------------------------------------------------------------------------------- */

char *mf_encode(const manifest *m, size_t *len)
{
    tbuf b = {0};
    tb_printf(&b, MF_MAGIC "id %s\nstore %s\ncreated-ms %" PRIu64 "\nsource ", m->id, m->store_id,
              m->created_ms);
    tb_hex(&b, (const uint8_t *)(m->source ? m->source : ""), m->source ? strlen(m->source) : 0);
    tb_printf(&b, "\ncut %" PRIu64 "\nlog-start %" PRIu64 "\n", m->cut, m->log_start);
    if (m->parent_id[0]) {
        tb_printf(&b, "parent %s ", m->parent_id);
        tb_hex(&b, (const uint8_t *)m->parent_path, strlen(m->parent_path));
        tb_printf(&b, "\n");
    }
    for (size_t i = 0; i < m->nepochs; i++) {
        char u[33];
        evs_uuid_format(m->epochs[i].uuid, u);
        tb_printf(&b, "epoch %" PRIu32 " %s %" PRIu64 "\n", m->epochs[i].epoch, u,
                  m->epochs[i].start);
    }
    for (size_t i = 0; i < m->nstreams; i++) {
        const mf_stream *s = &m->streams[i];
        tb_printf(&b, "stream ");
        tb_hex(&b, s->name, s->len);
        tb_printf(&b, " %" PRIu64 "-%" PRIu64 " %" PRIu64 " %" PRIu64 "\n", s->last.ms,
                  s->last.seq, s->length, s->added);
    }
    for (size_t i = 0; i < m->nfiles; i++) {
        const mf_file *f = &m->files[i];
        tb_printf(&b,
                  "file %s %" PRIu64 " %" PRIu64 " %08" PRIx32 " %s %08" PRIx32 " %s %" PRIu64
                  " %08" PRIx32 " %s\n",
                  f->name, f->size, f->alloc, f->crc,
                  !f->segment ? "meta" : f->sealed ? "sealed" : "active", f->seal_crc,
                  f->compressed ? "z" : "raw", f->stored_size, f->stored_crc,
                  f->from[0] ? f->from : "-");
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    uint32_t crc = evs_crc32(0, b.p, b.len);
    tb_printf(&b, "end %08" PRIx32 "\n", crc);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* ---- parse ---------------------------------------------------------------------------------- */

static int hexv(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decode lowercase hex ("-": empty) into a new buffer. */
static uint8_t *unhex(const char *s, size_t *n)
{
    size_t l = strlen(s);
    if (!strcmp(s, "-")) {
        *n = 0;
        return calloc(1, 1);
    }
    if (l == 0 || l % 2)
        return NULL;
    uint8_t *o = malloc(l / 2 + 1);
    if (!o)
        return NULL;
    for (size_t i = 0; i < l / 2; i++) {
        int hi = hexv(s[2 * i]), lo = hexv(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(o);
            return NULL;
        }
        o[i] = (uint8_t)(hi << 4 | lo);
    }
    o[l / 2] = 0;
    *n = l / 2;
    return o;
}

static bool id32(const char *s)
{
    if (strlen(s) != 32)
        return false;
    for (int i = 0; i < 32; i++)
        if (hexv(s[i]) < 0)
            return false;
    return true;
}

static bool u64(const char *s, uint64_t *v)
{
    if (!*s || strlen(s) > 20)
        return false;
    uint64_t x = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        uint64_t d = (uint64_t)(*p - '0');
        if (x > (UINT64_MAX - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *v = x;
    return true;
}

static bool x32(const char *s, uint32_t *v)
{
    if (strlen(s) != 8)
        return false;
    uint32_t x = 0;
    for (int i = 0; i < 8; i++) {
        int d = hexv(s[i]);
        if (d < 0)
            return false;
        x = x << 4 | (uint32_t)d;
    }
    *v = x;
    return true;
}

#define MF_MAX_WORDS 12

/* Split a line (NUL-terminated, modified) at single spaces. */
static size_t split(char *line, char **w)
{
    size_t n = 0;
    char *p = line;
    while (n < MF_MAX_WORDS) {
        w[n++] = p;
        char *sp = strchr(p, ' ');
        if (!sp)
            return n;
        *sp = 0;
        p = sp + 1;
    }
    return MF_MAX_WORDS + 1; /* too many */
}

#define GROW(arr, n, cap)                                                                       \
    do {                                                                                       \
        if ((n) == (cap)) {                                                                    \
            size_t c_ = (cap) ? (cap) * 2 : 16;                                                \
            void *a_ = realloc((arr), c_ * sizeof *(arr));                                     \
            if (!a_) {                                                                         \
                snprintf(why, whycap, "out of memory");                                        \
                goto bad;                                                                      \
            }                                                                                  \
            (arr) = a_;                                                                        \
            (cap) = c_;                                                                        \
        }                                                                                      \
    } while (0)

int mf_parse(const char *buf, size_t len, manifest *m, char *why, size_t whycap)
{
    memset(m, 0, sizeof *m);
    size_t ml = strlen(MF_MAGIC);
    if (len < ml || memcmp(buf, MF_MAGIC, ml)) {
        snprintf(why, whycap, "does not start with \"evstore-backup 1\"");
        return -1;
    }
    /* the last line is "end <crc>" over everything before it (M2) */
    if (len < ml + 13 || buf[len - 1] != '\n' || memcmp(buf + len - 13, "end ", 4)) {
        snprintf(why, whycap, "has no \"end <crc>\" last line (truncated?)");
        return -1;
    }
    char crctxt[9];
    memcpy(crctxt, buf + len - 9, 8);
    crctxt[8] = 0;
    uint32_t want;
    if (!x32(crctxt, &want) || (len - 13 > 0 && buf[len - 14] != '\n')) {
        snprintf(why, whycap, "last line is not \"end <8 hex digits>\"");
        return -1;
    }
    uint32_t got = evs_crc32(0, buf, len - 13);
    if (got != want) {
        snprintf(why, whycap, "CRC mismatch: the end line says %08" PRIx32 ", the content has %08"
                 PRIx32, want, got);
        return -1;
    }
    size_t ecap = 0, scap = 0, fcap = 0, lineno = 1;
    bool seen[7] = {false};
    for (size_t off = ml; off < len - 13;) {
        lineno++;
        const char *nl = memchr(buf + off, '\n', len - 13 - off);
        size_t ll = (size_t)(nl - (buf + off));
        if (ll > 4096) {
            snprintf(why, whycap, "line %zu is too long", lineno);
            goto bad;
        }
        char line[4097];
        memcpy(line, buf + off, ll);
        line[ll] = 0;
        off += ll + 1;
        if (memchr(line, 0, ll)) {
            snprintf(why, whycap, "line %zu holds a NUL byte", lineno);
            goto bad;
        }
        char *w[MF_MAX_WORDS + 1] = {0}; /* split fills w[0..nw); gcc -O3 cannot tell */
        size_t nw = split(line, w);
        const char *k = w[0];
        bool ok = false;
        if (!strcmp(k, "id") && nw == 2 && !seen[0]) {
            ok = id32(w[1]) && (memcpy(m->id, w[1], 33), seen[0] = true);
        } else if (!strcmp(k, "store") && nw == 2 && !seen[1]) {
            ok = id32(w[1]) && (memcpy(m->store_id, w[1], 33), seen[1] = true);
        } else if (!strcmp(k, "created-ms") && nw == 2 && !seen[2]) {
            ok = u64(w[1], &m->created_ms) && (seen[2] = true);
        } else if (!strcmp(k, "source") && nw == 2 && !seen[3]) {
            size_t n;
            ok = (m->source = (char *)unhex(w[1], &n)) && strlen(m->source) == n &&
                 (seen[3] = true);
        } else if (!strcmp(k, "cut") && nw == 2 && !seen[4]) {
            ok = u64(w[1], &m->cut) && m->cut % 8 == 0 && (seen[4] = true);
        } else if (!strcmp(k, "log-start") && nw == 2 && !seen[5]) {
            ok = u64(w[1], &m->log_start) && m->log_start % 8 == 0 && (seen[5] = true);
        } else if (!strcmp(k, "parent") && nw == 3 && !seen[6]) {
            size_t n;
            ok = id32(w[1]) && (m->parent_path = (char *)unhex(w[2], &n)) && n > 0 &&
                 strlen(m->parent_path) == n && (memcpy(m->parent_id, w[1], 33), seen[6] = true);
        } else if (!strcmp(k, "epoch") && nw == 4) {
            GROW(m->epochs, m->nepochs, ecap);
            evs_epoch *e = &m->epochs[m->nepochs];
            uint64_t ep;
            ok = !evs_uuid_parse(w[2], strlen(w[2]), e->uuid) && u64(w[1], &ep) &&
                 ep <= UINT32_MAX && u64(w[3], &e->start);
            if (ok) {
                e->epoch = (uint32_t)ep;
                ok = m->nepochs == 0 || (e->epoch > e[-1].epoch && e->start >= e[-1].start);
                m->nepochs += ok;
            }
        } else if (!strcmp(k, "stream") && nw == 5) {
            GROW(m->streams, m->nstreams, scap);
            mf_stream *s = &m->streams[m->nstreams];
            memset(s, 0, sizeof *s);
            char *dash = strchr(w[2], '-');
            if (dash) {
                *dash = 0;
                ok = (s->name = unhex(w[1], &s->len)) && s->len <= 400 &&
                     u64(w[2], &s->last.ms) && u64(dash + 1, &s->last.seq) &&
                     u64(w[3], &s->length) && u64(w[4], &s->added);
            }
            if (ok)
                m->nstreams++;
            else
                free(s->name);
        } else if (!strcmp(k, "file") && nw == 11) {
            GROW(m->files, m->nfiles, fcap);
            mf_file *f = &m->files[m->nfiles];
            memset(f, 0, sizeof *f);
            bool kind_ok = true;
            if (!strcmp(w[5], "meta"))
                f->segment = false;
            else if (!strcmp(w[5], "sealed"))
                f->segment = f->sealed = true;
            else if (!strcmp(w[5], "active"))
                f->segment = true;
            else
                kind_ok = false;
            bool z = !strcmp(w[7], "z");
            ok = kind_ok && strlen(w[1]) < MF_NAME_MAX && mf_name_ok(w[1]) &&
                 (f->segment == !strncmp(w[1], "log/", 4)) && u64(w[2], &f->size) &&
                 u64(w[3], &f->alloc) && f->alloc >= f->size && x32(w[4], &f->crc) &&
                 x32(w[6], &f->seal_crc) && (z || !strcmp(w[7], "raw")) &&
                 u64(w[8], &f->stored_size) && x32(w[9], &f->stored_crc) &&
                 (!strcmp(w[10], "-") || id32(w[10]));
            if (ok) {
                snprintf(f->name, sizeof f->name, "%s", w[1]);
                f->compressed = z;
                if (strcmp(w[10], "-"))
                    memcpy(f->from, w[10], 33);
                for (size_t j = 0; j < m->nfiles && ok; j++)
                    ok = strcmp(m->files[j].name, f->name) != 0; /* each file once */
                m->nfiles += ok;
            }
        }
        if (!ok) {
            snprintf(why, whycap, "line %zu (\"%.40s\") is not valid here", lineno, k);
            goto bad;
        }
    }
    for (int i = 0; i < 6; i++)
        if (!seen[i]) {
            static const char *const need[] = {"id", "store", "created-ms", "source", "cut",
                                               "log-start"};
            snprintf(why, whycap, "has no \"%s\" line", need[i]);
            goto bad;
        }
    return 0;
bad:
    mf_release(m);
    return -1;
}

void mf_release(manifest *m)
{
    for (size_t i = 0; i < m->nstreams; i++)
        free(m->streams[i].name);
    free(m->streams);
    free(m->epochs);
    free(m->files);
    free(m->parent_path);
    free(m->source);
    memset(m, 0, sizeof *m);
}
