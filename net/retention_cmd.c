/*
 * retention_cmd.c — XRETENTION, our RESP command for a stream's own retention limits:
 *
 *   XRETENTION key GET
 *     -> map max-age-ms, max-bytes, max-entries (the stream's own: 0 = the server default,
 *        -1 = no limit), then effective-max-age-ms, effective-max-bytes, effective-max-entries
 *        (in force: 0 = no limit)
 *   XRETENTION key SET [MAXAGE d] [MAXBYTES n] [MAXENTRIES n]
 *     each value a number (durations: 7d 12h 30m 2s 500ms or seconds; sizes: 64m 1g), NONE
 *     (no limit) or DEFAULT (the server's); unnamed limits keep their value. +OK once the
 *     change is durable (a record in the log).
 */
#include "commands.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* A limit: NONE, DEFAULT, or a value through parse. NULL, or the error text. */
static const char *limit_arg(const resp_arg *a, int (*parse)(const char *, size_t, uint64_t *),
                             uint64_t *out)
{
    if (a->len == 4 && !strncasecmp((const char *)a->ptr, "NONE", 4)) {
        *out = EVS_RET_NONE;
        return NULL;
    }
    if (a->len == 7 && !strncasecmp((const char *)a->ptr, "DEFAULT", 7)) {
        *out = 0;
        return NULL;
    }
    if (parse((const char *)a->ptr, a->len, out) || *out == 0 || *out == EVS_RET_NONE)
        return "ERR retention limits are positive numbers, NONE or DEFAULT";
    return NULL;
}

static int parse_count(const char *s, size_t len, uint64_t *out)
{
    resp_arg a = {(const uint8_t *)s, len};
    long long v;
    if (!arg_ll(&a, &v) || v < 0)
        return EVS_EINVAL;
    *out = (uint64_t)v;
    return 0;
}

static long long own_value(uint64_t v) { return v == EVS_RET_NONE ? -1 : (long long)v; }

void cmd_xretention(cmd_ctx *x)
{
    evs_store *st = server_store(x->srv);
    evs_slice key = key_of(&x->argv[1]);
    evs_retention own, eff;
    bool get = arg_is(x, 2, "GET") && x->argc == 3;
    bool set = arg_is(x, 2, "SET") && x->argc >= 5 && x->argc % 2 == 1;
    if (!get && !set) {
        reply_error_done(x, ERR_SYNTAX);
        return;
    }
    if (evs_retention_get(st, key, &own, &eff)) {
        reply_error_done(x, "ERR no such key");
        return;
    }
    if (get) {
        resp_out *o = &x->r->out;
        resp_out_map(o, 6);
        const char *names[6] = {"max-age-ms", "max-bytes", "max-entries", "effective-max-age-ms",
                                "effective-max-bytes", "effective-max-entries"};
        long long v[6] = {own_value(own.max_age_ms), own_value(own.max_bytes),
                          own_value(own.max_entries), (long long)eff.max_age_ms,
                          (long long)eff.max_bytes, (long long)eff.max_entries};
        for (int i = 0; i < 6; i++) {
            resp_out_cstr(o, names[i]);
            resp_out_int(o, v[i]);
        }
        reply_done(x);
        return;
    }
    for (size_t i = 3; i + 1 < x->argc; i += 2) {
        const char *e;
        if (arg_is(x, i, "MAXAGE"))
            e = limit_arg(&x->argv[i + 1], evs_parse_duration_ms, &own.max_age_ms);
        else if (arg_is(x, i, "MAXBYTES"))
            e = limit_arg(&x->argv[i + 1], evs_parse_size, &own.max_bytes);
        else if (arg_is(x, i, "MAXENTRIES"))
            e = limit_arg(&x->argv[i + 1], parse_count, &own.max_entries);
        else
            e = ERR_SYNTAX;
        if (e) {
            reply_error_done(x, e);
            return;
        }
    }
    evs_error err;
    int rc = evs_retention_set(st, key, &own, &err);
    if (rc == EVS_ENOTFOUND)
        reply_error_done(x, "ERR no such key");
    else if (rc)
        resp_out_error(&x->r->out, "ERR %s", err.msg), reply_done(x);
    else
        resp_out_simple(&x->r->out, "OK"), reply_done(x);
}
