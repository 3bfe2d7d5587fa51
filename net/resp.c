/*
 * resp.c — the RESP request parser and reply writer (see resp.h). The parser is stateless:
 * it re-reads the command from its first byte on each call and returns RESP_PARTIAL with the
 * byte count it needs once that is known, so a caller never re-parses before it could succeed.
 *
 * Rules (Redis 7.0 networking.c):
 *  - "*<n>": n > 1,048,576 or not a number: "Protocol error: invalid multibulk length";
 *    n <= 0: an empty command; no newline within 64 KiB: "too big mbulk count string".
 *  - each argument "$<len>": not '$': "expected '$', got '<c>'"; len < 0 or > max:
 *    "invalid bulk length"; no newline within 64 KiB: "too big bulk count string".
 *  - anything else is an inline command: split on blanks with double/single quotes and
 *    backslash escapes in double quotes; more than 64 KiB without a newline: "too big inline
 *    request"; broken quotes: "unbalanced quotes in request".
 */
#include "resp.h"
#include "evstore.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

static const uint8_t *find_crlf(const uint8_t *p, const uint8_t *end)
{
    const uint8_t *r = memchr(p, '\r', (size_t)(end - p));
    while (r && r + 1 < end && r[1] != '\n')
        r = memchr(r + 1, '\r', (size_t)(end - r - 1));
    return r && r + 1 < end ? r : NULL;
}

/* Redis' string2ll for a length: digits with an optional '-', no spaces. */
static bool parse_ll(const uint8_t *p, size_t n, long long *out)
{
    if (n == 0 || n > 20)
        return false;
    bool neg = p[0] == '-';
    size_t i = neg;
    if (i == n)
        return false;
    unsigned long long v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        unsigned long long d = (unsigned long long)(p[i] - '0');
        if (v > (9223372036854775807ULL - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = neg ? -(long long)v : (long long)v;
    return true;
}

static int proto_error(resp_cmd *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd->msg, sizeof cmd->msg, fmt, ap);
    va_end(ap);
    return RESP_ERROR;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool is_blank(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0; }

/* One unescaped byte of an inline argument; false when the buffer is full. */
static bool put_inline(resp_cmd *cmd, size_t *out, uint8_t c)
{
    if (*out >= cmd->inline_cap)
        return false;
    cmd->inline_buf[(*out)++] = c;
    return true;
}

/* sdssplitargs semantics over [p, end), unescaping into cmd->inline_buf. */
static int parse_inline(const uint8_t *buf, size_t len, resp_cmd *cmd, size_t *used)
{
    const uint8_t *end = buf + len;
    const uint8_t *nl = memchr(buf, '\n', len);
    if (!nl) {
        if (len > RESP_MAX_INLINE)
            return proto_error(cmd, "Protocol error: too big inline request");
        *used = 0;
        return RESP_PARTIAL;
    }
    const uint8_t *line_end = nl > buf && nl[-1] == '\r' ? nl - 1 : nl;
    *used = (size_t)(nl - buf) + 1;
    (void)end;
    size_t argc = 0, out = 0;
    const uint8_t *p = buf;
    while (1) {
        while (p < line_end && is_blank(*p))
            p++;
        if (p >= line_end)
            break;
        size_t start = out;
        bool inq = false, insq = false, done = false;
        while (!done) {
            if (inq) {
                if (p >= line_end)
                    return proto_error(cmd, "Protocol error: unbalanced quotes in request");
                bool ok = true;
                if (*p == '\\' && p + 3 < line_end && p[1] == 'x' && hexval(p[2]) >= 0 &&
                    hexval(p[3]) >= 0) {
                    ok = put_inline(cmd, &out, (uint8_t)(hexval(p[2]) * 16 + hexval(p[3])));
                    p += 3;
                } else if (*p == '\\' && p + 1 < line_end) {
                    p++;
                    uint8_t c = *p;
                    c = c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : c == 'b' ? '\b'
                                                                 : c == 'a' ? '\a' : c;
                    ok = put_inline(cmd, &out, c);
                } else if (*p == '"') {
                    if (p + 1 < line_end && !is_blank(p[1]))
                        return proto_error(cmd, "Protocol error: unbalanced quotes in request");
                    done = true;
                } else {
                    ok = put_inline(cmd, &out, *p);
                }
                if (!ok)
                    return proto_error(cmd, "Protocol error: too big inline request");
            } else if (insq) {
                if (p >= line_end)
                    return proto_error(cmd, "Protocol error: unbalanced quotes in request");
                bool ok = true;
                if (*p == '\\' && p + 1 < line_end && p[1] == '\'') {
                    p++;
                    ok = put_inline(cmd, &out, '\'');
                } else if (*p == '\'') {
                    if (p + 1 < line_end && !is_blank(p[1]))
                        return proto_error(cmd, "Protocol error: unbalanced quotes in request");
                    done = true;
                } else {
                    ok = put_inline(cmd, &out, *p);
                }
                if (!ok)
                    return proto_error(cmd, "Protocol error: too big inline request");
            } else {
                if (p >= line_end || is_blank(*p)) {
                    done = true;
                    p--;
                } else if (*p == '"') {
                    inq = true;
                } else if (*p == '\'') {
                    insq = true;
                } else if (!put_inline(cmd, &out, *p)) {
                    return proto_error(cmd, "Protocol error: too big inline request");
                }
            }
            p++;
        }
        if (argc < cmd->argc_cap)
            cmd->argv[argc] = (resp_arg){cmd->inline_buf + start, out - start};
        argc++;
    }
    cmd->argc = argc;
    if (argc > cmd->argc_cap)
        return RESP_PARTIAL; /* the caller grows argv and calls again */
    return argc ? RESP_CMD : RESP_EMPTY;
}

/* The bulk header at p ("$<len>\r\n"): RESP_CMD with its payload's start and length, or
 * RESP_PARTIAL (the line has not all arrived), or RESP_ERROR. */
static int bulk_head(const uint8_t *p, const uint8_t *end, uint64_t max_bulk, resp_cmd *cmd,
                     const uint8_t **payload, uint64_t *blen)
{
    if (p >= end)
        return RESP_PARTIAL;
    if (*p != '$')
        return proto_error(cmd, "Protocol error: expected '$', got '%c'", *p);
    const uint8_t *nl = find_crlf(p, end);
    if (!nl) {
        if ((size_t)(end - p) > RESP_MAX_INLINE)
            return proto_error(cmd, "Protocol error: too big bulk count string");
        return RESP_PARTIAL;
    }
    long long bl;
    if (!parse_ll(p + 1, (size_t)(nl - p - 1), &bl) || bl < 0 || (uint64_t)bl > max_bulk)
        return proto_error(cmd, "Protocol error: invalid bulk length");
    *payload = nl + 2;
    *blen = (uint64_t)bl;
    return RESP_CMD;
}

/* Point argv[0, n) at the arguments of a multibulk command whose first n were all checked
 * (by an earlier call on the same input) starting at offset `at`. */
static void fill_checked(const uint8_t *buf, size_t len, size_t at, size_t n, resp_cmd *cmd)
{
    const uint8_t *p = buf + at, *payload = NULL;
    uint64_t bl = 0;
    for (size_t i = 0; i < n; i++) {
        bulk_head(p, buf + len, UINT64_MAX, cmd, &payload, &bl); /* checked: RESP_CMD */
        cmd->argv[i] = (resp_arg){payload, (size_t)bl};
        p = payload + bl + 2;
    }
}

int resp_parse(const uint8_t *buf, size_t len, uint64_t max_bulk, resp_cmd *cmd, size_t *used)
{
    resp_progress once = {0, 0, 0, 0};
    resp_progress *pg = cmd->progress ? cmd->progress : &once;
    *used = 0;
    cmd->argc = 0;
    if (pg->nargs && (pg->at > len || buf[0] != '*'))
        *pg = once; /* not the input it was kept for: start again */
    if (len == 0)
        return RESP_PARTIAL;
    if (buf[0] != '*') {
        if (!cmd->inline_buf) {
            static uint8_t none[1];
            cmd->inline_buf = none;
            cmd->inline_cap = 0;
        }
        return parse_inline(buf, len, cmd, used);
    }
    const uint8_t *end = buf + len;
    if (!pg->nargs) {
        const uint8_t *nl = find_crlf(buf, end);
        if (!nl) {
            if (len > RESP_MAX_INLINE)
                return proto_error(cmd, "Protocol error: too big mbulk count string");
            return RESP_PARTIAL;
        }
        long long n;
        if (!parse_ll(buf + 1, (size_t)(nl - buf - 1), &n) || n > RESP_MAX_ARGS)
            return proto_error(cmd, "Protocol error: invalid multibulk length");
        if (n <= 0) {
            *used = (size_t)(nl + 2 - buf);
            return RESP_EMPTY;
        }
        *pg = (resp_progress){(size_t)n, 0, (size_t)(nl + 2 - buf), (size_t)(nl + 2 - buf)};
    }
    size_t resumed = pg->done; /* arguments checked by earlier calls: pointed at below */
    const uint8_t *p = buf + pg->at;
    for (; pg->done < pg->nargs; pg->done++) {
        const uint8_t *payload = NULL;
        uint64_t bl = 0;
        int rc = bulk_head(p, end, max_bulk, cmd, &payload, &bl);
        if (rc == RESP_ERROR)
            *pg = once;
        if (rc != RESP_CMD)
            return rc;
        if ((uint64_t)(end - payload) < bl + 2) {
            *used = (size_t)(payload - buf) + (size_t)bl + 2; /* needed at least */
            return RESP_PARTIAL;
        }
        if (pg->done < cmd->argc_cap)
            cmd->argv[pg->done] = (resp_arg){payload, (size_t)bl};
        p = payload + bl + 2; /* Redis does not check the CRLF after the payload either */
        pg->at = (size_t)(p - buf);
    }
    cmd->argc = pg->nargs; /* (only now: argv is grown for arguments that have arrived) */
    if (pg->nargs > cmd->argc_cap)
        return RESP_PARTIAL; /* the caller grows argv and calls again (*used 0) */
    fill_checked(buf, len, pg->first, resumed, cmd);
    *used = pg->at;
    *pg = once;
    return RESP_CMD;
}

/* ---- reading replies ---------------------------------------------------------------------- */

typedef struct rparse {
    const uint8_t *buf, *end;
    char *msg;
    size_t msgcap;
} rparse;

static int rp_fail(rparse *r, const char *why)
{
    snprintf(r->msg, r->msgcap, "%s", why);
    return RESP_ERROR;
}

static void value_release(resp_value *v)
{
    if (!v->elems)
        return;
    size_t n = v->type == RESP_T_MAP ? v->n * 2 : v->n;
    for (size_t i = 0; i < n; i++)
        value_release(&v->elems[i]);
    free(v->elems);
    v->elems = NULL;
}

/* Parse one value at *p into v. */
static int rp_value(rparse *r, const uint8_t **pp, resp_value *v, int depth)
{
    const uint8_t *p = *pp;
    memset(v, 0, sizeof *v);
    if (depth > RESP_MAX_DEPTH)
        return rp_fail(r, "reply nested too deep");
    if (p >= r->end)
        return RESP_PARTIAL;
    const uint8_t *nl = find_crlf(p, r->end);
    if (!nl) {
        if ((size_t)(r->end - p) > RESP_MAX_INLINE)
            return rp_fail(r, "reply line too long");
        return RESP_PARTIAL;
    }
    const uint8_t *line = p + 1;
    size_t llen = (size_t)(nl - line);
    const uint8_t *after = nl + 2;
    long long n = 0;
    switch (*p) {
    case '+': case '-': case ',': case '(':
        v->type = *p == '+' ? RESP_T_SIMPLE : *p == '-' ? RESP_T_ERROR : *p == ',' ? RESP_T_DOUBLE : RESP_T_BIGNUM;
        v->str = line;
        v->len = llen;
        *pp = after;
        return RESP_CMD;
    case ':':
        if (!parse_ll(line, llen, &v->integer))
            return rp_fail(r, "bad integer reply");
        v->type = RESP_T_INT;
        *pp = after;
        return RESP_CMD;
    case '#':
        if (llen != 1 || (line[0] != 't' && line[0] != 'f'))
            return rp_fail(r, "bad boolean reply");
        v->type = RESP_T_BOOL;
        v->integer = line[0] == 't';
        *pp = after;
        return RESP_CMD;
    case '_':
        v->type = RESP_T_NULL;
        *pp = after;
        return RESP_CMD;
    case '$': case '=': case '!':
        if (!parse_ll(line, llen, &n) || n < -1)
            return rp_fail(r, "bad bulk length");
        if (n == -1) {
            v->type = RESP_T_NULL;
            *pp = after;
            return RESP_CMD;
        }
        if ((uint64_t)(r->end - after) < (uint64_t)n + 2)
            return RESP_PARTIAL;
        v->type = *p == '$' ? RESP_T_BULK : *p == '=' ? RESP_T_VERBATIM : RESP_T_ERROR;
        v->str = after;
        v->len = (size_t)n;
        *pp = after + n + 2;
        return RESP_CMD;
    case '*': case '%': case '~': case '>': {
        if (!parse_ll(line, llen, &n) || n < -1)
            return rp_fail(r, "bad aggregate length");
        if (n == -1) {
            v->type = RESP_T_NULL;
            *pp = after;
            return RESP_CMD;
        }
        v->type = *p == '*' ? RESP_T_ARRAY : *p == '%' ? RESP_T_MAP : *p == '~' ? RESP_T_SET : RESP_T_PUSH;
        uint64_t elems = (uint64_t)n * (v->type == RESP_T_MAP ? 2 : 1);
        /* every element takes at least 3 bytes ("_\r\n"): a larger count is not a reply yet,
         * and is never allocated for */
        if (elems > (uint64_t)(r->end - after) / 3)
            return (uint64_t)n > (uint64_t)RESP_MAX_ARGS ? rp_fail(r, "aggregate too large") : RESP_PARTIAL;
        v->n = (size_t)n;
        v->elems = elems ? calloc((size_t)elems, sizeof *v->elems) : NULL;
        if (elems && !v->elems)
            return rp_fail(r, "out of memory");
        const uint8_t *q = after;
        for (uint64_t i = 0; i < elems; i++) {
            int rc = rp_value(r, &q, &v->elems[i], depth + 1);
            if (rc != RESP_CMD) {
                value_release(v);
                return rc;
            }
        }
        *pp = q;
        return RESP_CMD;
    }
    default:
        return rp_fail(r, "not a RESP reply");
    }
}

int resp_reply_parse(const uint8_t *buf, size_t len, resp_value **out, size_t *used,
                     char *msg, size_t msgcap)
{
    rparse r = {buf, buf + len, msg, msgcap};
    resp_value *v = calloc(1, sizeof *v);
    if (!v)
        return rp_fail(&r, "out of memory");
    const uint8_t *p = buf;
    int rc = rp_value(&r, &p, v, 0);
    if (rc != RESP_CMD) {
        free(v);
        return rc;
    }
    *out = v;
    *used = (size_t)(p - buf);
    return RESP_CMD;
}

void resp_value_free(resp_value *v)
{
    if (!v)
        return;
    value_release(v);
    free(v);
}

/* ---- replies ------------------------------------------------------------------------------ */

static _Atomic size_t out_limit;

void resp_out_set_limit(size_t bytes) { atomic_store(&out_limit, bytes); }
size_t resp_out_limit(void) { return atomic_load(&out_limit); }

void resp_out_init(resp_out *o, int proto)
{
    memset(o, 0, sizeof *o);
    o->proto = proto;
}

void resp_out_reuse(resp_out *o, int proto)
{
    *o = (resp_out){.data = o->data, .cap = o->data ? o->cap : 0, .proto = proto};
}

void resp_out_release(resp_out *o)
{
    free(o->data);
    o->data = NULL;
    o->len = o->cap = 0;
}

uint8_t *resp_out_reserve(resp_out *o, size_t n)
{
    if (o->oom || o->over)
        return NULL;
    size_t limit = atomic_load(&out_limit);
    if (limit && (n > limit || o->len > limit - n)) {
        o->over = true;
        return NULL;
    }
    if (o->cap - o->len < n) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap - o->len < n)
            cap *= 2;
        uint8_t *d = realloc(o->data, cap);
        if (!d) {
            o->oom = true;
            return NULL;
        }
        o->data = d;
        o->cap = cap;
    }
    return o->data + o->len;
}

void resp_out_raw(resp_out *o, const void *p, size_t n)
{
    if (o->oom || o->over || n == 0)
        return;
    uint8_t *d = resp_out_reserve(o, n);
    if (!d)
        return;
    memcpy(d, p, n);
    o->len += n;
}

void resp_out_cat(resp_out *o, const resp_out *from)
{
    resp_out_raw(o, from->data, from->len);
    o->oom |= from->oom;
    o->over |= from->over;
}

/* "<type>[-]<v>\r\n": the header of an integer, bulk, array, map, without vsnprintf (which,
 * with evs_id_format's snprintf, was 5 % of the loop's samples at c50/P16: benchmarks.md) */
static void out_head(resp_out *o, char type, bool minus, uint64_t v)
{
    char buf[24];
    size_t n = 0;
    buf[n++] = type;
    if (minus)
        buf[n++] = '-';
    n += evs_u64_format(v, buf + n);
    buf[n++] = '\r';
    buf[n++] = '\n';
    resp_out_raw(o, buf, n);
}

void resp_out_simple(resp_out *o, const char *s)
{
    resp_out_raw(o, "+", 1);
    resp_out_raw(o, s, strlen(s));
    resp_out_raw(o, "\r\n", 2);
}

void resp_out_error(resp_out *o, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof buf)
        n = sizeof buf - 1;
    /* an error is one line: newlines would end it early (Redis replaces them too) */
    for (int i = 0; i < n; i++)
        if (buf[i] == '\r' || buf[i] == '\n')
            buf[i] = ' ';
    resp_out_raw(o, "-", 1);
    resp_out_raw(o, buf, (size_t)n);
    resp_out_raw(o, "\r\n", 2);
}

void resp_out_int(resp_out *o, long long v)
{
    out_head(o, ':', v < 0, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
}

void resp_out_bulk(resp_out *o, const void *p, size_t n)
{
    out_head(o, '$', false, n);
    resp_out_raw(o, p, n);
    resp_out_raw(o, "\r\n", 2);
}

void resp_out_cstr(resp_out *o, const char *s) { resp_out_bulk(o, s, strlen(s)); }

void resp_out_null(resp_out *o) { resp_out_raw(o, o->proto == 3 ? "_\r\n" : "$-1\r\n", o->proto == 3 ? 3 : 5); }

void resp_out_null_array(resp_out *o) { resp_out_raw(o, o->proto == 3 ? "_\r\n" : "*-1\r\n", o->proto == 3 ? 3 : 5); }

void resp_out_array(resp_out *o, size_t n) { out_head(o, '*', false, n); }

void resp_out_map(resp_out *o, size_t n)
{
    if (o->proto == 3)
        out_head(o, '%', false, n);
    else
        out_head(o, '*', false, n * 2);
}

void resp_out_double(resp_out *o, double v)
{
    char buf[64];
    int n = isinf(v) ? snprintf(buf, sizeof buf, "%sinf", v > 0 ? "" : "-")
                     : snprintf(buf, sizeof buf, "%.17g", v);
    if (o->proto == 3) {
        resp_out_raw(o, ",", 1);
        resp_out_raw(o, buf, (size_t)n);
        resp_out_raw(o, "\r\n", 2);
    } else {
        resp_out_bulk(o, buf, (size_t)n);
    }
}

void resp_out_verbatim(resp_out *o, const char *s, size_t n)
{
    if (o->proto == 3) {
        out_head(o, '=', false, n + 4);
        resp_out_raw(o, "txt:", 4);
        resp_out_raw(o, s, n);
        resp_out_raw(o, "\r\n", 2);
    } else {
        resp_out_bulk(o, s, n);
    }
}

/* A number as the general parser reads it (parse_ll), not negative, up to a CRLF at buf[*i]:
 * 1 with *v and *i past the CRLF. */
static int digits_crlf(const uint8_t *buf, size_t len, size_t *i, uint64_t *v)
{
    size_t j = *i;
    while (j < len && buf[j] >= '0' && buf[j] <= '9')
        j++;
    long long x;
    if (j + 2 > len || buf[j] != '\r' || buf[j + 1] != '\n' || !parse_ll(buf + *i, j - *i, &x))
        return 0;
    *i = j + 2;
    *v = (uint64_t)x;
    return 1;
}

int resp_log_head(const uint8_t *buf, size_t len, uint64_t *at, uint64_t *n, size_t *hlen)
{
    static const char lead[] = "*3\r\n$3\r\nLOG\r\n:";
    size_t i = sizeof lead - 1;
    if (len < i || memcmp(buf, lead, i) || !digits_crlf(buf, len, &i, at) || i >= len ||
        buf[i] != '$')
        return 0;
    i++;
    if (!digits_crlf(buf, len, &i, n))
        return 0;
    *hlen = i;
    return 1;
}

int resp_reply_line(const uint8_t *line, size_t len, uint64_t *n)
{
    if (len >= 1 && line[0] == '-')
        return RESP_T_ERROR;
    if (len < 2 || line[0] != '$')
        return -1;
    uint64_t v = 0;
    for (size_t i = 1; i < len; i++) {
        if (line[i] < '0' || line[i] > '9' || v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(line[i] - '0');
    }
    *n = v;
    return RESP_T_BULK;
}
