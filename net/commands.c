/*
 * commands.c — the command table and the commands of the RESP front. Reply formats and error
 * texts are Redis 7.0's (t_stream.c, networking.c, server.c), byte for byte where a client
 * could tell the difference.
 *
 * XADD is asynchronous (answered when durable, N2); reads are answered at once from the
 * store's visible state; XREAD BLOCK parks the request until the store's visibility hook says
 * a batch landed, or its timeout fires.
 */
#include "commands.h"
#include "freelist.h"
#include "glob.h"
#include "server.h"

#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>


bool arg_is(const cmd_ctx *x, size_t i, const char *s)
{
    size_t n = strlen(s);
    return i < x->argc && x->argv[i].len == n && strncasecmp((const char *)x->argv[i].ptr, s, n) == 0;
}

/* Redis's string2ll, which reads every integer argument: "0", or an optional '-' and digits
 * without a leading zero, fewer than 21 bytes, in range; nothing else ("+1", "01", "-0", " 1"
 * are not integers). */
bool arg_ll(const resp_arg *a, long long *out)
{
    const uint8_t *p = a->ptr;
    size_t n = a->len, i = 0;
    if (n == 0 || n >= 21)
        return false;
    if (n == 1 && p[0] == '0') {
        *out = 0;
        return true;
    }
    bool neg = p[0] == '-';
    i += neg;
    if (i == n || p[i] < '1' || p[i] > '9')
        return false;
    unsigned long long v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9' || v > (ULLONG_MAX - (unsigned)(p[i] - '0')) / 10)
            return false;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (neg ? v > (unsigned long long)LLONG_MAX + 1 : v > (unsigned long long)LLONG_MAX)
        return false;
    *out = neg ? (long long)(0 - v) : (long long)v;
    return true;
}

evs_slice key_of(const resp_arg *a) { return (evs_slice){a->ptr, a->len}; }

void reply_error_done(cmd_ctx *x, const char *msg)
{
    resp_out_error(&x->r->out, "%s", msg);
    reply_done(x);
}

/* ---- IDs ---------------------------------------------------------------------------------- */

/* Redis's string2ull: a strict long long ("-"? then no leading zero), refused if negative;
 * else whatever strtoull takes whole (leading zeros, blanks, a sign: "007", "-07" too). */
static bool redis_u64(const char *s, uint64_t *out)
{
    const char *d = s + (*s == '-');
    size_t n = strspn(d, "0123456789");
    bool strict = n && !d[n] && (d[0] != '0' || n == 1) && n <= 19;
    if (strict) {
        errno = 0;
        long long v = strtoll(s, NULL, 10);
        if (errno == 0) {
            *out = (uint64_t)v;
            return v >= 0;
        }
    }
    char *end;
    errno = 0;
    *out = strtoull(s, &end, 10);
    return errno != EINVAL && errno != ERANGE && *s && !*end;
}

/* A stream ID as Redis reads one (streamGenericParseIDOrReply): at most 127 bytes, read as a
 * C string (up to a NUL), split at the first '-', each part by string2ull; no '-': the seq is
 * `missing_seq`. "-" and "+" alone are the callers' (bounds) business: refused here. */
bool parse_id(const resp_arg *a, uint64_t missing_seq, evs_id *id)
{
    char buf[128];
    if (a->len > sizeof buf - 1)
        return false;
    memcpy(buf, a->ptr, a->len);
    buf[a->len] = 0;
    if ((buf[0] == '-' || buf[0] == '+') && !buf[1])
        return false;
    char *dash = strchr(buf, '-');
    if (dash)
        *dash = 0;
    evs_id v = {0, missing_seq};
    if (!redis_u64(buf, &v.ms) || (dash && !redis_u64(dash + 1, &v.seq)))
        return false;
    *id = v;
    return true;
}

bool parse_bound(cmd_ctx *x, const resp_arg *a, bool end, evs_id *id)
{
    bool excl = false;
    resp_arg b = *a;
    if (b.len == 1 && (b.ptr[0] == '-' || b.ptr[0] == '+')) {
        *id = b.ptr[0] == '-' ? EVS_ID_MIN : EVS_ID_MAX;
    } else {
        if (b.len > 1 && b.ptr[0] == '(') {
            excl = true;
            b.ptr++;
            b.len--;
        }
        if (!parse_id(&b, end ? UINT64_MAX : 0, id)) {
            reply_error_done(x, ERR_ID);
            return false;
        }
    }
    if (excl && !(end ? evs_id_prev(id) : evs_id_next(id))) {
        reply_error_done(x, end ? "ERR invalid end ID for the interval"
                                : "ERR invalid start ID for the interval");
        return false;
    }
    return true;
}

void out_id(resp_out *o, evs_id id)
{
    char buf[EVS_ID_STRLEN];
    size_t n = evs_id_format(id, buf);
    resp_out_bulk(o, buf, n);
}

void out_entry(resp_out *o, const evs_entry *e)
{
    resp_out_array(o, 2);
    out_id(o, e->id);
    resp_out_array(o, e->nfields * 2);
    for (size_t i = 0; i < e->nfields; i++) {
        resp_out_bulk(o, e->fields[i].name.ptr, e->fields[i].name.len);
        resp_out_bulk(o, e->fields[i].value.ptr, e->fields[i].value.len);
    }
}

/* Append up to q->limit entries of stream `key` as an array into o; returns the count, or
 * < 0 after writing an error. max_bytes: commands.h. */
long out_range(resp_out *o, evs_store *st, evs_slice key, const evs_query *q, size_t max_bytes)
{
    evs_iter *it;
    evs_error err;
    int rc = evs_iter_open(st, key, q, &it, &err);
    if (rc == EVS_ENOTFOUND) {
        resp_out_array(o, 0);
        return 0;
    }
    if (rc) {
        resp_out_error(o, "ERR %s", err.msg);
        return rc;
    }
    resp_out tmp;
    resp_out_init(&tmp, o->proto);
    const evs_entry *e;
    long n = 0;
    while ((rc = evs_iter_next(it, &e, &err)) == 1) {
        size_t before = tmp.len;
        out_entry(&tmp, e);
        if (max_bytes && n && tmp.len > max_bytes && !tmp.oom && !tmp.over) {
            tmp.len = before; /* this one goes in the next reply */
            break;
        }
        n++;
    }
    evs_iter_close(it);
    if (rc < 0) {
        resp_out_release(&tmp);
        resp_out_error(o, "ERR %s", err.msg);
        return rc;
    }
    resp_out_array(o, (size_t)n);
    resp_out_cat(o, &tmp);
    resp_out_release(&tmp);
    return n;
}

/* ---- connection --------------------------------------------------------------------------- */

static void cmd_ping(cmd_ctx *x)
{
    if (x->argc > 2) {
        reply_error_done(x, "ERR wrong number of arguments for 'ping' command");
        return;
    }
    if (x->argc == 2)
        resp_out_bulk(&x->r->out, x->argv[1].ptr, x->argv[1].len);
    else
        resp_out_simple(&x->r->out, "PONG");
    reply_done(x);
}

static void cmd_echo(cmd_ctx *x)
{
    resp_out_bulk(&x->r->out, x->argv[1].ptr, x->argv[1].len);
    reply_done(x);
}

static void cmd_quit(cmd_ctx *x)
{
    resp_out_simple(&x->r->out, "OK");
    x->r->close_after = true;
    reply_done(x);
}

static void cmd_select(cmd_ctx *x)
{
    long long db;
    if (!arg_ll(&x->argv[1], &db))
        reply_error_done(x, ERR_INT);
    else if (db != 0)
        reply_error_done(x, "ERR DB index is out of range");
    else {
        resp_out_simple(&x->r->out, "OK");
        reply_done(x);
    }
}

/* Redis 7.0 with one user, "default": without --requirepass it takes any password (nopass),
 * but the one-argument AUTH says there is none to check. */
static const char *check_auth(cmd_ctx *x, const resp_arg *user, const resp_arg *pass)
{
    const char *want = server_cfg(x->srv)->requirepass;
    if (!want && !user)
        return "ERR AUTH <password> called without any password configured for the default "
               "user. Are you sure your configuration is correct?";
    bool user_ok = !user || (user->len == 7 && !memcmp(user->ptr, "default", 7));
    if ((want && !server_secret_is(want, pass->ptr, pass->len)) || !user_ok)
        return "WRONGPASS invalid username-password pair or user is disabled.";
    conn_set_authed(x->c, true);
    return NULL;
}

/* ---- the connection's name (CLIENT SETNAME / GETNAME, HELLO SETNAME) -------------------- */

typedef struct conn_name {
    size_t len;
    char name[];
} conn_name;

/* Set (or, empty, clear) the connection's name; false once answered with Redis's error. */
static bool set_conn_name(cmd_ctx *x, const resp_arg *a)
{
    for (size_t i = 0; i < a->len; i++)
        if (a->ptr[i] < '!' || a->ptr[i] > '~') {
            reply_error_done(x, "ERR Client names cannot contain spaces, newlines or special "
                                "characters.");
            return false;
        }
    void **slot = conn_cmd_state(x->c, CONN_SLOT_NAME, free);
    conn_name *n = a->len ? malloc(sizeof *n + a->len) : NULL;
    if (a->len && !n) {
        reply_error_done(x, "ERR out of memory");
        return false;
    }
    if (n) {
        n->len = a->len;
        memcpy(n->name, a->ptr, a->len);
    }
    free(*slot);
    *slot = n;
    return true;
}

static void cmd_auth(cmd_ctx *x)
{
    if (x->argc > 3) {
        reply_error_done(x, ERR_SYNTAX);
        return;
    }
    const char *e = check_auth(x, x->argc == 3 ? &x->argv[1] : NULL, &x->argv[x->argc - 1]);
    if (e)
        reply_error_done(x, e);
    else {
        resp_out_simple(&x->r->out, "OK");
        reply_done(x);
    }
}

static void cmd_hello(cmd_ctx *x)
{
    long long ver = conn_proto(x->c);
    const resp_arg *setname = NULL;
    size_t i = 1;
    if (x->argc > 1) {
        if (!arg_ll(&x->argv[1], &ver)) {
            reply_error_done(x, "ERR Protocol version is not an integer or out of range");
            return;
        }
        if (ver < 2 || ver > 3) {
            reply_error_done(x, "NOPROTO unsupported protocol version");
            return;
        }
        i = 2;
    }
    for (; i < x->argc; i++) {
        if (arg_is(x, i, "AUTH") && i + 2 < x->argc) {
            const char *e = check_auth(x, &x->argv[i + 1], &x->argv[i + 2]);
            if (e) {
                reply_error_done(x, e);
                return;
            }
            i += 2;
        } else if (arg_is(x, i, "SETNAME") && i + 1 < x->argc) {
            setname = &x->argv[++i];
        } else {
            resp_out_error(&x->r->out, "ERR Syntax error in HELLO option '%.*s'",
                           (int)x->argv[i].len, x->argv[i].ptr);
            reply_done(x);
            return;
        }
    }
    if (!conn_authed(x->c)) {
        reply_error_done(x, "NOAUTH HELLO must be called with the client already authenticated, "
                            "otherwise the HELLO AUTH <user> <pass> option can be used to "
                            "authenticate the client and select the RESP protocol version at the "
                            "same time");
        return;
    }
    if (setname && !set_conn_name(x, setname))
        return;
    conn_set_proto(x->c, (int)ver);
    resp_out *o = &x->r->out;
    o->proto = (int)ver;
    resp_out_map(o, 7);
    resp_out_cstr(o, "server");
    resp_out_cstr(o, "redis");
    resp_out_cstr(o, "version");
    resp_out_cstr(o, "7.0.0");
    resp_out_cstr(o, "proto");
    resp_out_int(o, ver);
    resp_out_cstr(o, "id");
    resp_out_int(o, conn_id(x->c));
    resp_out_cstr(o, "mode");
    resp_out_cstr(o, "standalone");
    resp_out_cstr(o, "role");
    resp_out_cstr(o, "master");
    resp_out_cstr(o, "modules");
    resp_out_array(o, 0);
    reply_done(x);
}

static void cmd_command(cmd_ctx *x);

/* Redis 7.0's subcommands we answer, with their arities; SETINFO is 7.2's (clients send it on
 * connect): accepted, ignored */
static const subcommand client_subs[] = {{"ID", 2}, {"SETNAME", 3}, {"GETNAME", 2}, {"SETINFO", 4}};
static const char *const client_help[] = {
    "GETNAME", "    Return the name of the current connection.",
    "ID", "    Return the ID of the current connection.",
    "SETINFO <option> <value>", "    Accepted and ignored (evstore).",
    "SETNAME <name>", "    Assign the name <name> to the current connection.",
};
static const subcommands client_sc = SUBCOMMANDS("client", client_subs, client_help);

static void cmd_client(cmd_ctx *x)
{
    if (subcommand_help(x, &client_sc))
        return;
    if (arg_is(x, 1, "ID")) {
        resp_out_int(&x->r->out, conn_id(x->c));
    } else if (arg_is(x, 1, "SETNAME")) {
        if (!set_conn_name(x, &x->argv[2]))
            return;
        resp_out_simple(&x->r->out, "OK");
    } else if (arg_is(x, 1, "GETNAME")) {
        conn_name *n = *conn_cmd_state(x->c, CONN_SLOT_NAME, free);
        if (n)
            resp_out_bulk(&x->r->out, n->name, n->len);
        else
            resp_out_null(&x->r->out);
    } else {
        resp_out_simple(&x->r->out, "OK");
    }
    reply_done(x);
}

/* ---- keys --------------------------------------------------------------------------------- */

static void cmd_exists(cmd_ctx *x)
{
    long long n = 0;
    for (size_t i = 1; i < x->argc; i++) {
        evs_stream_info info;
        if (evs_stream_info_get(server_store(x->srv), key_of(&x->argv[i]), &info) == 0)
            n++;
    }
    resp_out_int(&x->r->out, n);
    reply_done(x);
}

static void cmd_type(cmd_ctx *x)
{
    evs_stream_info info;
    bool is = evs_stream_info_get(server_store(x->srv), key_of(&x->argv[1]), &info) == 0;
    resp_out_simple(&x->r->out, is ? "stream" : "none");
    reply_done(x);
}

/* Drop the named streams in one writer request (one fsync) and answer how many existed. */
static void drop_and_answer(cmd_ctx *x, const evs_slice *names, size_t n, bool ok_reply)
{
    size_t dropped;
    evs_error err;
    if (evs_streams_drop(server_store(x->srv), names, n, &dropped, &err))
        resp_out_error(&x->r->out, "ERR %s", err.msg);
    else if (ok_reply)
        resp_out_simple(&x->r->out, "OK");
    else
        resp_out_int(&x->r->out, (long long)dropped);
    reply_done(x);
}

static void cmd_del(cmd_ctx *x)
{
    evs_slice *names = malloc((x->argc - 1) * sizeof *names);
    if (!names) {
        reply_error_done(x, "ERR out of memory");
        return;
    }
    for (size_t i = 1; i < x->argc; i++)
        names[i - 1] = key_of(&x->argv[i]);
    drop_and_answer(x, names, x->argc - 1, false);
    free(names);
}

struct keys_walk {
    resp_out *tmp;
    const resp_arg *pattern; /* NULL: every name */
    size_t n;
};

static int keys_one(void *arg, evs_slice name, const evs_stream_info *info)
{
    (void)info;
    struct keys_walk *w = arg;
    if (!w->pattern || glob_match(w->pattern->ptr, w->pattern->len, name.ptr, name.len, false)) {
        resp_out_bulk(w->tmp, name.ptr, name.len);
        w->n++;
    }
    return 0;
}

static void cmd_keys(cmd_ctx *x)
{
    const resp_arg *pat = &x->argv[1];
    resp_out tmp;
    resp_out_init(&tmp, conn_proto(x->c));
    struct keys_walk w = {&tmp, glob_is_all(pat->ptr, pat->len) ? NULL : pat, 0};
    evs_stream_list(server_store(x->srv), keys_one, &w);
    resp_out_array(&x->r->out, w.n);
    resp_out_cat(&x->r->out, &tmp);
    resp_out_release(&tmp);
    reply_done(x);
}

static void cmd_dbsize(cmd_ctx *x)
{
    evs_store_stats s;
    evs_store_stats_get(server_store(x->srv), &s);
    resp_out_int(&x->r->out, (long long)s.streams);
    reply_done(x);
}

/* ROLE: this server is always a leader until replication lands (issue 6); the offset is the
 * log position readers have reached, the unit a follower will resume from. */
static void role_follower(void *arg, const char *ip, int port, uint64_t received,
                          uint64_t fsynced, long lag_s)
{
    (void)received;
    (void)lag_s;
    resp_out *o = arg;
    char p[16], off[24];
    snprintf(p, sizeof p, "%d", port);
    snprintf(off, sizeof off, "%llu", (unsigned long long)fsynced);
    resp_out_array(o, 3);
    resp_out_cstr(o, ip);
    resp_out_cstr(o, p);
    resp_out_cstr(o, off);
}

/* SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT], Redis 7.0's syntax: a clean stop, as on
 * SIGTERM (stop accepting, let the writer finish what it holds, close the store, exit 0).
 * Every acknowledged write is durable already, so SAVE and NOSAVE change nothing, and the stop
 * begins at once, so ABORT never finds one to cancel. As Redis does, no reply: the connection
 * closes as the server stops. Not inside MULTI (multi_intercept). */
static void cmd_shutdown(cmd_ctx *x)
{
    bool save = false, nosave = false, abort_ = false, now_force = false, bad = false;
    for (size_t i = 1; i < x->argc && !bad; i++) {
        if (arg_is(x, i, "nosave"))
            nosave = true;
        else if (arg_is(x, i, "save"))
            save = true;
        else if (arg_is(x, i, "now") || arg_is(x, i, "force"))
            now_force = true;
        else if (arg_is(x, i, "abort"))
            abort_ = true;
        else
            bad = true;
    }
    if (bad || (abort_ && (save || nosave || now_force)) || (save && nosave)) {
        reply_error_done(x, ERR_SYNTAX);
    } else if (abort_) {
        reply_error_done(x, "ERR No shutdown in progress.");
    } else {
        server_log(x->srv, EVS_LOG_INFO, "SHUTDOWN from a client: stopping");
        x->r->close_after = true;
        reply_done(x);
        server_stop(x->srv);
    }
}

/* As Redis: ["master", offset, [[ip, port, offset]...]] or ["slave", host, port, state,
 * offset]. Offsets are log positions; a follower's is what it has fsynced. */
static void cmd_role(cmd_ctx *x)
{
    evs_store_stats s;
    evs_store_stats_get(server_store(x->srv), &s);
    resp_out *o = &x->r->out;
    if (server_is_follower(x->srv)) {
        resp_out_array(o, 5);
        resp_out_cstr(o, "slave");
        resp_out_cstr(o, repl_follower_host());
        resp_out_int(o, repl_follower_port());
        resp_out_cstr(o, repl_follower_link_up() ? "connected" : "connect");
        resp_out_int(o, (long long)s.log_end);
    } else {
        resp_out_array(o, 3);
        resp_out_cstr(o, "master");
        resp_out_int(o, (long long)s.log_end);
        resp_out_array(o, repl_leader_count());
        repl_leader_each(role_follower, o);
    }
    reply_done(x);
}

static size_t blocked_count(void);


/* Resident memory of this process, from /proc (0 if unavailable). */
static unsigned long long rss_bytes(void)
{
    unsigned long long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * 4096ull;
}

typedef struct info_acc {
    char *p;
    size_t cap, len;
    int i;
} info_acc;

static void info_follower(void *arg, const char *ip, int port, uint64_t received,
                          uint64_t fsynced, long lag_s)
{
    info_acc *a = arg;
    (void)received;
    int n = snprintf(a->p + a->len, a->cap - a->len,
                     "slave%d:ip=%s,port=%d,state=online,offset=%llu,lag=%ld\r\n", a->i++, ip,
                     port, (unsigned long long)fsynced, lag_s);
    if (n > 0 && (size_t)n < a->cap - a->len)
        a->len += (size_t)n;
}

/* The Replication section's lines (Redis's names; offsets are log positions). */
static void info_replication(server *srv, const evs_store_stats *s, char *out, size_t cap)
{
    if (server_is_follower(srv)) {
        snprintf(out, cap,
                 "role:slave\r\nmaster_host:%s\r\nmaster_port:%d\r\nmaster_link_status:%s\r\n"
                 "master_last_io_seconds_ago:%ld\r\nslave_repl_offset:%llu\r\n"
                 "slave_read_only:1\r\nconnected_slaves:0\r\nmaster_repl_offset:%llu\r\n",
                 repl_follower_host(), repl_follower_port(),
                 repl_follower_link_up() ? "up" : "down", repl_follower_last_io(),
                 (unsigned long long)s->log_end, (unsigned long long)s->log_end);
        return;
    }
    info_acc a = {out, cap, 0, 0};
    int n = snprintf(out, cap, "role:master\r\nconnected_slaves:%zu\r\n", repl_leader_count());
    a.len = n > 0 ? (size_t)n : 0;
    repl_leader_each(info_follower, &a);
    uint64_t samples;
    uint32_t p50, p99;
    repl_lag_stats(&samples, &p50, &p99);
    snprintf(out + a.len, cap - a.len,
             "master_repl_offset:%llu\r\nrepl_lag_samples:%llu\r\nrepl_lag_p50_us:%u\r\n"
             "repl_lag_p99_us:%u\r\nrepl_held_bytes:%llu\r\n",
             (unsigned long long)s->log_end, (unsigned long long)samples, p50, p99,
             (unsigned long long)(s->log_end - s->visible_end));
}

/* CONFIG RESETSTAT: INFO's counters count from here (the server's own, /metrics, stay
 * counters since start, as Prometheus wants; the peaks, fsync_max_us and batch_max_records,
 * are since start too). Loop thread only. */
static struct stat_base {
    evs_store_stats s;
    server_counts c;
} stat_base;

static void stats_now(cmd_ctx *x, evs_store_stats *s, server_counts *c)
{
    evs_store_stats_get(server_store(x->srv), s);
    server_counts_get(x->srv, c);
}

/* A counter since the last RESETSTAT (one below its base restarted with a store reopened
 * under the server, as a follower's snapshot does: then since that) */
static void since_reset(uint64_t *v, uint64_t base)
{
    if (*v >= base)
        *v -= base;
}

/* INFO's text: the sections asked for, as Redis 7 chooses them (any case; all of them with no
 * argument or with "all", "default" or "everything"; a name it does not have adds nothing),
 * each after a blank line but the first. */
typedef struct info_text {
    const cmd_ctx *x;
    char *p;
    size_t cap, len;
    int sections;
} info_text;

static bool info_wants(const cmd_ctx *x, const char *section)
{
    if (x->argc == 1)
        return true;
    for (size_t i = 1; i < x->argc; i++)
        if (arg_is(x, i, section) || arg_is(x, i, "all") || arg_is(x, i, "default") ||
            arg_is(x, i, "everything"))
            return true;
    return false;
}

__attribute__((format(printf, 3, 4)))
static void info_section(info_text *t, const char *name, const char *fmt, ...)
{
    if (!info_wants(t->x, name))
        return;
    if (t->sections++ && t->len + 2 < t->cap) {
        memcpy(t->p + t->len, "\r\n", 2);
        t->len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->len += (size_t)n < t->cap - t->len ? (size_t)n : t->cap - t->len - 1;
}

static void cmd_info(cmd_ctx *x)
{
    evs_store_stats s;
    server_counts c;
    stats_now(x, &s, &c);
    const evs_store_stats *b = &stat_base.s;
    since_reset(&s.appends, b->appends);
    since_reset(&s.batches, b->batches);
    since_reset(&s.fsyncs, b->fsyncs);
    since_reset(&s.fsyncs_overlapped, b->fsyncs_overlapped);
    since_reset(&s.fsync_ns_total, b->fsync_ns_total);
    since_reset(&s.retention_trimmed, b->retention_trimmed);
    since_reset(&s.segments_deleted, b->segments_deleted);
    since_reset(&s.bytes_deleted, b->bytes_deleted);
    since_reset(&s.streams_relocated, b->streams_relocated);
    since_reset(&s.bytes_relocated, b->bytes_relocated);
    since_reset(&c.commit_waits, stat_base.c.commit_waits);
    since_reset(&c.commit_wait_timeouts, stat_base.c.commit_wait_timeouts);
    since_reset(&c.connections, stat_base.c.connections);
    since_reset(&c.rejected, stat_base.c.rejected);
    since_reset(&c.commands, stat_base.c.commands);
    long long up = (long long)(time(NULL) - c.started);
    char repl[2048];
    info_replication(x->srv, &s, repl, sizeof repl);
    char buf[4096];
    info_text t = {x, buf, sizeof buf, 0, 0};
    info_section(&t, "server",
                 "# Server\r\nredis_version:7.0.0\r\nevstore_version:%s\r\nredis_mode:standalone\r\n"
                 "process_id:%ld\r\ntcp_port:%d\r\nuptime_in_seconds:%lld\r\n"
                 "uptime_in_days:%lld\r\n",
                 EVSTORE_VERSION, (long)getpid(), server_cfg(x->srv)->port, up, up / 86400);
    info_section(&t, "clients", "# Clients\r\nconnected_clients:%d\r\nblocked_clients:%zu\r\n"
                 "http_clients:%zu\r\n", server_nconns(x->srv), blocked_count(),
                 server_http_clients(x->srv));
    unsigned long long rss = rss_bytes();
    info_section(&t, "memory", "# Memory\r\nused_memory:%llu\r\nused_memory_rss:%llu\r\n", rss,
                 rss);
    info_section(&t, "persistence", "# Persistence\r\naof_enabled:1\r\n");
    info_section(&t, "replication", "# Replication\r\n%s", repl);
    info_section(&t, "stats",
                 "# Stats\r\ntotal_connections_received:%llu\r\ntotal_commands_processed:%llu\r\n"
                 "rejected_connections:%llu\r\nevstore_appends:%llu\r\nevstore_batches:%llu\r\n",
                 (unsigned long long)c.connections, (unsigned long long)c.commands,
                 (unsigned long long)c.rejected, (unsigned long long)s.appends,
                 (unsigned long long)s.batches);
    info_section(&t, "evstore",
                 "# evstore\r\nfsyncs:%llu\r\nfsyncs_overlapped:%llu\r\nfsync_avg_us:%.1f\r\n"
                 "fsync_max_us:%.1f\r\n"
                 "batch_max_records:%llu\r\nsegments:%llu\r\nlog_bytes:%llu\r\n"
                 "log_start:%llu\r\nretention_trimmed:%llu\r\nsegments_deleted:%llu\r\n"
                 "bytes_deleted:%llu\r\nstreams_relocated:%llu\r\nbytes_relocated:%llu\r\n"
                 "backup_snapshots:%d\r\nepoch:%u\r\n"
                 "commit_waits:%llu\r\ncommit_wait_timeouts:%llu\r\n"
                 "index_lag_bytes:%llu\r\nindex_commits_deferred:%llu\r\n"
                 "set_aside_files:%llu\r\nset_aside_bytes:%llu\r\nstreams_dropped_held:%llu\r\n",
                 (unsigned long long)s.fsyncs, (unsigned long long)s.fsyncs_overlapped,
                 s.fsyncs ? (double)s.fsync_ns_total / (double)s.fsyncs / 1000 : 0.0,
                 (double)s.fsync_ns_max / 1000, (unsigned long long)s.batch_max,
                 (unsigned long long)s.segments, (unsigned long long)s.log_bytes,
                 (unsigned long long)s.log_start, (unsigned long long)s.retention_trimmed,
                 (unsigned long long)s.segments_deleted, (unsigned long long)s.bytes_deleted,
                 (unsigned long long)s.streams_relocated, (unsigned long long)s.bytes_relocated,
                 backup_snapshots_open(), (unsigned)s.epoch, (unsigned long long)c.commit_waits,
                 (unsigned long long)c.commit_wait_timeouts,
                 (unsigned long long)(s.log_end > s.index_end ? s.log_end - s.index_end : 0),
                 (unsigned long long)s.index_deferred, (unsigned long long)s.set_aside_files,
                 (unsigned long long)s.set_aside_bytes, (unsigned long long)s.streams_dropped_held);
    if (s.streams)
        info_section(&t, "keyspace", "# Keyspace\r\ndb0:keys=%llu,expires=0,avg_ttl=0\r\n",
                     (unsigned long long)s.streams);
    else /* no db0 line for an empty keyspace, as Redis */
        info_section(&t, "keyspace", "# Keyspace\r\n");
    resp_out_verbatim(&x->r->out, buf, t.len);
    reply_done(x);
}

/* ---- streams ------------------------------------------------------------------------------ */

void xadd_result_out(resp_out *o, int rc, evs_id id, const evs_error *err)
{
    switch (rc) {
    case 0: out_id(o, id); break;
    case EVS_ENOTFOUND: resp_out_null(o); break; /* NOMKSTREAM */
    case EVS_EIDORDER:
        resp_out_error(o, "ERR The ID specified in XADD is equal or smaller than the target stream "
                          "top item");
        break;
    case EVS_EIDZERO: resp_out_error(o, "ERR The ID specified in XADD must be greater than 0-0"); break;
    case EVS_EIDEXHAUSTED:
        resp_out_error(o, "ERR The stream has exhausted the last possible ID, unable to add more "
                          "items");
        break;
    default: resp_out_error(o, "ERR %s", err && err->msg[0] ? err->msg : evs_strerror(rc));
    }
}

static bool word_is(const resp_arg *a, const char *w)
{
    size_t n = strlen(w);
    return a->len == n && !strncasecmp((const char *)a->ptr, w, n);
}

/* XADD's ID argument: "*", "<ms>-*" or an explicit ID. */
static const char *xadd_id(const resp_arg *ida, evs_append *a)
{
    if (ida->len == 1 && ida->ptr[0] == '*') {
        a->id_mode = EVS_ID_AUTO;
    } else if (ida->len > 2 && ida->ptr[ida->len - 2] == '-' && ida->ptr[ida->len - 1] == '*') {
        resp_arg ms = {ida->ptr, ida->len - 2};
        if (!parse_id(&ms, 0, &a->id) || memchr(ms.ptr, '-', ms.len))
            return ERR_ID;
        a->id_mode = EVS_ID_AUTO_SEQ;
    } else if (!parse_id(ida, 0, &a->id)) {
        return ERR_ID;
    } else {
        a->id_mode = EVS_ID_EXPLICIT;
    }
    return NULL;
}

/*
 * The options of XADD (xa set) and XTRIM (xa NULL) as Redis 7.0's
 * streamParseAddOrTrimArgsOrReply takes them: in any order, each error as soon as its word is
 * read, XADD's loop ending at the ID (parsed there: its error comes before the checks after
 * the loop). *at: the ID's index (XADD), else argc.
 */
const char *stream_opts_parse(const resp_arg *argv, size_t argc, xadd_args *xa, evs_trim *t,
                              bool *has_trim, size_t *at)
{
    memset(t, 0, sizeof *t);
    *has_trim = false;
    bool limit_given = false;
    long long limit = 0;
    size_t i = 2;
    for (; i < argc; i++) {
        bool more = i + 1 < argc, two_more = i + 2 < argc;
        bool maxlen = word_is(&argv[i], "MAXLEN"), minid = word_is(&argv[i], "MINID");
        if ((maxlen || minid) && more) {
            if (*has_trim)
                return "ERR syntax error, MAXLEN and MINID options at the same time are not "
                       "compatible";
            t->kind = maxlen ? EVS_TRIM_MAXLEN : EVS_TRIM_MINID;
            t->approx = false;
            if (two_more && (word_is(&argv[i + 1], "~") || word_is(&argv[i + 1], "="))) {
                t->approx = argv[i + 1].ptr[0] == '~';
                i++;
            }
            if (maxlen) {
                long long v;
                if (!arg_ll(&argv[i + 1], &v))
                    return ERR_INT;
                if (v < 0)
                    return "ERR The MAXLEN argument must be >= 0.";
                t->maxlen = (uint64_t)v;
            } else if (!parse_id(&argv[i + 1], 0, &t->minid)) {
                return ERR_ID;
            }
            i++;
            *has_trim = true;
        } else if (word_is(&argv[i], "LIMIT") && more) {
            if (!arg_ll(&argv[i + 1], &limit))
                return ERR_INT;
            if (limit < 0)
                return "ERR The LIMIT argument must be >= 0.";
            limit_given = true;
            i++;
        } else if (xa && word_is(&argv[i], "NOMKSTREAM")) {
            xa->a.no_create = true;
        } else if (xa) {
            const char *e = xadd_id(&argv[i], &xa->a);
            if (e)
                return e;
            break;
        } else {
            return ERR_SYNTAX;
        }
    }
    *at = i;
    if (limit && !*has_trim)
        return "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy";
    if (!xa && !*has_trim)
        return "ERR syntax error, XTRIM must be called with a trimming strategy";
    if (limit_given && !t->approx)
        return "ERR syntax error, LIMIT cannot be used without the special ~ option";
    t->limit = (uint64_t)limit;
    return NULL;
}

const char *xadd_parse(const resp_arg *argv, size_t argc, xadd_args *xa)
{
    xa->f = NULL;
    xa->a = (evs_append){key_of(&argv[1]), EVS_ID_AUTO, {0, 0}, NULL, 0, false};
    size_t i;
    const char *e = stream_opts_parse(argv, argc, xa, &xa->trim, &xa->has_trim, &i);
    if (e)
        return e;
    if (i >= argc || (argc - i - 1) < 2 || (argc - i - 1) % 2)
        return "ERR wrong number of arguments for 'xadd' command";
    size_t nf = (argc - i - 1) / 2;
    xa->f = nf <= XADD_SMALL ? xa->small : malloc(nf * sizeof *xa->f);
    if (!xa->f)
        return "ERR out of memory";
    for (size_t k = 0; k < nf; k++)
        xa->f[k] = (evs_field){key_of(&argv[i + 1 + 2 * k]), key_of(&argv[i + 2 + 2 * k])};
    xa->a.fields = xa->f;
    xa->a.nfields = nf;
    return NULL;
}

void xadd_args_release(xadd_args *xa)
{
    if (xa->f != xa->small)
        free(xa->f);
    xa->f = NULL;
}

typedef struct xadd_result {
    int rc;              /* (the first bytes: a spare's link, freelist.h L3) */
    evs_id id;
    evs_error err;
    pending_t *p;
    server *srv;
    bool replicating;   /* --ack all: written here, now waiting for the followers' fsync */
    long long got;      /* ... how many had it when the wait ended                      */
} xadd_result;

/* The loop's spare results (freelist.h): one per XADD in flight, 800 at c50/P16. */
static freelist spare_xadds = FREELIST_INIT(1024);

static void xadd_result_free(xadd_result *x)
{
    if (!freelist_put(&spare_xadds, x))
        free(x);
}

static void xadd_replicated(void *arg, long long got)
{
    xadd_result *x = arg;
    x->got = got;
    server_complete(x->p);
}

static bool xadd_fill(pending_t *p, reply *r, void *res)
{
    xadd_result *x = res;
    const server_config *cfg = server_cfg(x->srv);
    if (x->rc == 0 && cfg->ack_all && !x->replicating && !pending_orphaned(p)) {
        /* durable here; the answer waits until --min-replicas followers have fsynced it */
        evs_store_stats s;
        evs_store_stats_get(server_store(x->srv), &s);
        x->replicating = true;
        pending_t *again = server_hold_again(p, xadd_fill, x);
        if (again) {
            x->p = again;
            if (repl_wait(x->srv, s.log_end, cfg->min_replicas, cfg->ack_timeout_ms,
                          xadd_replicated, x) == 0)
                return false;
            x->got = 0;
            server_complete(again);
            return false;
        }
        x->got = 0;
    }
    if (x->replicating && x->got < server_cfg(x->srv)->min_replicas)
        resp_out_error(&r->out, "NOREPLICAS Not enough good replicas acknowledged the write "
                       "within %d ms (%lld of %d); it is durable on this leader",
                       cfg->ack_timeout_ms, x->got, cfg->min_replicas);
    else
        xadd_result_out(&r->out, x->rc, x->id, &x->err);
    xadd_result_free(x);
    return true;
}

static void xadd_done(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err)
{
    xadd_result *x = arg;
    x->rc = rc;
    if (rc == 0 && n)
        x->id = ids[0];
    if (err)
        x->err = *err;
    server_complete(x->p);
}

static void cmd_xadd(cmd_ctx *x)
{
    xadd_args xa;
    const char *e = xadd_parse(x->argv, x->argc, &xa);
    if (e) {
        xadd_args_release(&xa);
        reply_error_done(x, e);
        return;
    }
    const server_config *cfg = server_cfg(x->srv);
    if (cfg->ack_all && repl_good_followers() < cfg->min_replicas) { /* before appending */
        xadd_args_release(&xa);
        reply_error_done(x, "NOREPLICAS Not enough good replicas to write.");
        return;
    }
    xadd_result *res = freelist_take(&spare_xadds);
    if (!res)
        res = malloc(sizeof *res);
    if (res) {
        *res = (xadd_result){.srv = x->srv};
        res->p = server_hold(x, xadd_fill, res, true);
    }
    if (!res || !res->p) {
        free(res);
        xadd_args_release(&xa);
        reply_error_done(x, "ERR out of memory");
        return;
    }
    evs_store *st = server_store(x->srv);
    int rc = xa.has_trim ? evs_submit_trim(st, &xa.a, 1, &xa.trim, xadd_done, res, &res->err)
                         : evs_submit(st, &xa.a, 1, xadd_done, res, &res->err);
    xadd_args_release(&xa);
    if (rc) {
        /* not queued: the completion will never come from the store; answer through the loop */
        res->rc = rc;
        server_complete(res->p);
    }
}

static void cmd_xtrim(cmd_ctx *x)
{
    size_t i;
    evs_trim t;
    bool has_trim;
    const char *e = stream_opts_parse(x->argv, x->argc, NULL, &t, &has_trim, &i);
    if (e) {
        reply_error_done(x, e);
        return;
    }
    evs_stream_info info;
    uint64_t removed = 0;
    evs_error err;
    if (evs_stream_info_get(server_store(x->srv), key_of(&x->argv[1]), &info) == 0 &&
        evs_trim_stream(server_store(x->srv), key_of(&x->argv[1]), &t, &removed, &err)) {
        resp_out_error(&x->r->out, "ERR %s", err.msg);
        reply_done(x);
        return;
    }
    resp_out_int(&x->r->out, (long long)removed);
    reply_done(x);
}

static void cmd_xlen(cmd_ctx *x)
{
    evs_stream_info info;
    long long n = 0;
    if (evs_stream_info_get(server_store(x->srv), key_of(&x->argv[1]), &info) == 0)
        n = (long long)info.length;
    resp_out_int(&x->r->out, n);
    reply_done(x);
}

static void xrange_generic(cmd_ctx *x, bool rev)
{
    evs_query q;
    evs_query_init(&q);
    q.reverse = rev;
    const resp_arg *sa = rev ? &x->argv[3] : &x->argv[2];
    const resp_arg *ea = rev ? &x->argv[2] : &x->argv[3];
    if (!parse_bound(x, sa, false, &q.start) || !parse_bound(x, ea, true, &q.end))
        return;
    long long count = -1;
    for (size_t j = 4; j < x->argc; j++) {
        if (arg_is(x, j, "COUNT") && j + 1 < x->argc) {
            if (!arg_ll(&x->argv[j + 1], &count)) {
                reply_error_done(x, ERR_INT);
                return;
            }
            if (count < 0)
                count = 0;
            j++;
        } else {
            reply_error_done(x, ERR_SYNTAX);
            return;
        }
    }
    if (count == 0) {
        evs_stream_info info;
        if (evs_stream_info_get(server_store(x->srv), key_of(&x->argv[1]), &info) == 0)
            resp_out_null_array(&x->r->out);
        else
            resp_out_array(&x->r->out, 0);
        reply_done(x);
        return;
    }
    q.limit = count > 0 ? (uint64_t)count : 0;
    out_range(&x->r->out, server_store(x->srv), key_of(&x->argv[1]), &q, 0);
    reply_done(x);
}

static void cmd_xrange(cmd_ctx *x) { xrange_generic(x, false); }
static void cmd_xrevrange(cmd_ctx *x) { xrange_generic(x, true); }

evs_id *parse_ids(cmd_ctx *x, size_t from)
{
    size_t n = x->argc - from;
    evs_id *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        reply_error_done(x, "ERR out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!parse_id(&x->argv[from + i], 0, &ids[i])) {
            free(ids);
            reply_error_done(x, ERR_ID);
            return NULL;
        }
    }
    return ids;
}

static void cmd_xdel(cmd_ctx *x)
{
    evs_stream_info info;
    if (evs_stream_info_get(server_store(x->srv), key_of(&x->argv[1]), &info) != 0) {
        resp_out_int(&x->r->out, 0); /* no key: 0, whatever the IDs (Redis looks first) */
        reply_done(x);
        return;
    }
    size_t n = x->argc - 2;
    evs_id *ids = parse_ids(x, 2);
    if (!ids)
        return;
    size_t deleted = 0;
    evs_error err;
    int rc = evs_delete(server_store(x->srv), key_of(&x->argv[1]), ids, n, &deleted, &err);
    free(ids);
    if (rc)
        resp_out_error(&x->r->out, "ERR %s", err.msg);
    else
        resp_out_int(&x->r->out, (long long)deleted);
    reply_done(x);
}

/* ---- XSETID ------------------------------------------------------------------------------- */

/* XSETID key last-id [ENTRIESADDED n] [MAXDELETEDID id]: argument errors as Redis's; the
 * state checks are the store's (evs_stream_setid), which carry Redis's messages. */
static void cmd_xsetid(cmd_ctx *x)
{
    evs_id id, maxdel;
    long long added = -1;
    bool has_maxdel = false;
    if (!parse_id(&x->argv[2], 0, &id)) {
        reply_error_done(x, ERR_ID);
        return;
    }
    for (size_t i = 3; i < x->argc; i += 2) {
        if (arg_is(x, i, "ENTRIESADDED") && i + 1 < x->argc) {
            if (!arg_ll(&x->argv[i + 1], &added)) {
                reply_error_done(x, ERR_INT);
                return;
            }
            if (added < 0) {
                reply_error_done(x, "ERR entries_added must be positive");
                return;
            }
        } else if (arg_is(x, i, "MAXDELETEDID") && i + 1 < x->argc) {
            if (!parse_id(&x->argv[i + 1], 0, &maxdel)) {
                reply_error_done(x, ERR_ID);
                return;
            }
            has_maxdel = true;
        } else {
            reply_error_done(x, ERR_SYNTAX);
            return;
        }
    }
    uint64_t n = (uint64_t)added;
    evs_error err;
    if (evs_stream_setid(server_store(x->srv), key_of(&x->argv[1]), id, added >= 0 ? &n : NULL,
                         has_maxdel ? &maxdel : NULL, &err))
        resp_out_error(&x->r->out, "ERR %s", err.msg);
    else
        resp_out_simple(&x->r->out, "OK");
    reply_done(x);
}

/* ---- XINFO -------------------------------------------------------------------------------- */

/* The first (or last) entry as [id, [field, value, ...]], or a null. */
static void out_edge_entry(resp_out *o, evs_store *st, evs_slice key, bool last)
{
    evs_query q;
    evs_query_init(&q);
    q.reverse = last;
    q.limit = 1;
    evs_iter *it;
    evs_error err;
    const evs_entry *e;
    if (evs_iter_open(st, key, &q, &it, &err) == 0) {
        if (evs_iter_next(it, &e, &err) == 1) {
            out_entry(o, e);
            evs_iter_close(it);
            return;
        }
        evs_iter_close(it);
    }
    resp_out_null(o);
}

/* The command's name in upper case, for messages. */
static void upper_name(const char *cmd, char *out, size_t cap)
{
    size_t k = 0;
    for (; cmd[k] && k + 1 < cap; k++)
        out[k] = (char)toupper((unsigned char)cmd[k]);
    out[k] = 0;
}

static void reply_help(cmd_ctx *x, const subcommands *sc)
{
    char head[96], up[32];
    upper_name(sc->cmd, up, sizeof up);
    snprintf(head, sizeof head, "%s <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", up);
    resp_out *o = &x->r->out;
    resp_out_array(o, sc->nhelp + 3);
    resp_out_simple(o, head);
    for (size_t i = 0; i < sc->nhelp; i++)
        resp_out_simple(o, sc->help[i]);
    resp_out_simple(o, "HELP");
    resp_out_simple(o, "    Prints this help.");
    reply_done(x);
}

const char *subcommand_error(const cmd_ctx *x, const subcommands *sc, char *buf, size_t cap)
{
    static const subcommand help = {"HELP", 2};
    for (size_t i = 0; i <= sc->n; i++) {
        const subcommand *sub = i < sc->n ? &sc->subs[i] : &help;
        if (!arg_is(x, 1, sub->name))
            continue;
        int a = sub->arity;
        if ((a > 0 && (int)x->argc == a) || (a < 0 && (int)x->argc >= -a))
            return NULL;
        char lower[32];
        size_t k = 0;
        for (; sub->name[k] && k + 1 < sizeof lower; k++)
            lower[k] = (char)tolower((unsigned char)sub->name[k]);
        lower[k] = 0;
        snprintf(buf, cap, "ERR wrong number of arguments for '%s|%s' command", sc->cmd, lower);
        return buf;
    }
    char up[32];
    upper_name(sc->cmd, up, sizeof up);
    snprintf(buf, cap, "ERR unknown subcommand '%.*s'. Try %s HELP.",
             (int)(x->argv[1].len < 128 ? x->argv[1].len : 128), x->argv[1].ptr, up);
    return buf;
}

bool subcommand_help(cmd_ctx *x, const subcommands *sc)
{
    if (!arg_is(x, 1, "HELP"))
        return false;
    reply_help(x, sc);
    return true;
}

static const subcommand xinfo_subs[] = {{"CONSUMERS", 4}, {"GROUPS", 3}, {"STREAM", -3}};
static const char *const xinfo_help[] = {
    "CONSUMERS <key> <groupname>",
    "    Show consumers of <groupname>.",
    "GROUPS <key>",
    "    Show the stream consumer groups.",
    "STREAM <key> [FULL [COUNT <count>]",
    "    Show information about the stream.",
};
static const subcommands xinfo_sc = SUBCOMMANDS("xinfo", xinfo_subs, xinfo_help);

static void cmd_xinfo(cmd_ctx *x)
{
    if (subcommand_help(x, &xinfo_sc))
        return;
    if (arg_is(x, 1, "GROUPS")) {
        xinfo_groups(x);
        return;
    }
    if (arg_is(x, 1, "CONSUMERS")) {
        xinfo_consumers(x);
        return;
    }
    evs_store *st = server_store(x->srv);
    evs_slice key = key_of(&x->argv[2]);
    evs_stream_info info;
    if (evs_stream_info_get(st, key, &info)) { /* the key first, then the options (Redis) */
        reply_error_done(x, "ERR no such key");
        return;
    }
    /* [FULL [COUNT n]], checked as Redis 7.0's xinfoReplyWithStreamInfo does */
    bool full = x->argc > 3;
    long long count = 10;
    size_t optc = x->argc - 3;
    if (full && ((optc != 1 && optc != 3) || !arg_is(x, 3, "FULL") ||
                 (optc == 3 && !arg_is(x, 4, "COUNT")))) {
        resp_out_error(&x->r->out, "ERR unknown subcommand or wrong number of arguments for "
                       "'STREAM'. Try XINFO HELP.");
        reply_done(x);
        return;
    }
    if (optc == 3) {
        if (!arg_ll(&x->argv[5], &count)) {
            reply_error_done(x, ERR_INT);
            return;
        }
        if (count < 0)
            count = 10;
    }
    resp_out *o = &x->r->out;
    resp_out_map(o, full ? 9 : 10);
    resp_out_cstr(o, "length");
    resp_out_int(o, (long long)info.length);
    /* evstore keeps no radix tree: documented as 0 */
    resp_out_cstr(o, "radix-tree-keys");
    resp_out_int(o, 0);
    resp_out_cstr(o, "radix-tree-nodes");
    resp_out_int(o, 0);
    resp_out_cstr(o, "last-generated-id");
    out_id(o, info.last_id);
    resp_out_cstr(o, "max-deleted-entry-id");
    out_id(o, info.max_deleted_id);
    resp_out_cstr(o, "entries-added");
    resp_out_int(o, (long long)info.entries_added);
    resp_out_cstr(o, "recorded-first-entry-id");
    out_id(o, info.first_id);
    if (full) {
        resp_out_cstr(o, "entries");
        evs_query q;
        evs_query_init(&q);
        q.limit = (uint64_t)count; /* COUNT 0: all, as in Redis */
        out_range(o, st, key, &q, 0);
        resp_out_cstr(o, "groups");
        xinfo_full_groups(o, st, key, count);
    } else {
        resp_out_cstr(o, "groups");
        resp_out_int(o, (long long)xinfo_group_count(st, key));
        resp_out_cstr(o, "first-entry");
        out_edge_entry(o, st, key, false);
        resp_out_cstr(o, "last-entry");
        out_edge_entry(o, st, key, true);
    }
    reply_done(x);
}

/* ---- XREAD -------------------------------------------------------------------------------- */

typedef struct xread_req {
    size_t nkeys;
    evs_slice *keys; /* copies */
    evs_id *after;
    long long count;
    uint8_t *mem;
} xread_req;

static void xread_free(xread_req *q)
{
    if (!q)
        return;
    free(q->mem);
    free(q->keys);
    free(q->after);
    free(q);
}

/* Write the XREAD reply if any stream has entries after its ID; returns how many did. */
static size_t xread_try(server *srv, xread_req *q, resp_out *o)
{
    resp_out tmp;
    resp_out_init(&tmp, o->proto);
    size_t with = 0;
    for (size_t i = 0; i < q->nkeys; i++) {
        evs_query qq;
        evs_query_init(&qq);
        qq.start = q->after[i];
        qq.start_exclusive = true;
        qq.limit = q->count > 0 ? (uint64_t)q->count : 0;
        resp_out one;
        resp_out_init(&one, o->proto);
        /* fewer than COUNT is an answer XREAD may give: half the reply limit over the streams,
         * so a read of large entries returns what fits instead of an error */
        long n = out_range(&one, server_store(srv), q->keys[i], &qq,
                           resp_out_limit() / 2 / q->nkeys);
        if (n > 0) {
            if (o->proto == 2)
                resp_out_array(&tmp, 2);
            resp_out_bulk(&tmp, q->keys[i].ptr, q->keys[i].len);
            resp_out_cat(&tmp, &one);
            with++;
        }
        resp_out_release(&one);
    }
    if (with) {
        if (o->proto == 3)
            resp_out_map(o, with);
        else
            resp_out_array(o, with);
        resp_out_cat(o, &tmp);
    }
    resp_out_release(&tmp);
    return with;
}

/* A parked XREAD BLOCK. */
typedef struct blocked {
    struct blocked *next, **pprev;
    server *srv;
    xread_req *q;
    uint32_t *hash;         /* the keys' wake_hash (wake.h)                                  */
    pending_t *p;
    struct event *timer;
    bool answered;
} blocked;

static blocked *blocked_list; /* the loop's only: one server per process */
static struct event *blocked_wake;

static void blocked_unlink(blocked *b)
{
    if (b->pprev) {
        *b->pprev = b->next;
        if (b->next)
            b->next->pprev = b->pprev;
        b->pprev = NULL;
    }
    if (b->timer) {
        event_free(b->timer);
        b->timer = NULL;
    }
}

static bool blocked_fill(pending_t *p, reply *r, void *res)
{
    blocked *b = res;
    if (pending_orphaned(p) || !xread_try(b->srv, b->q, &r->out))
        resp_out_null_array(&r->out); /* timed out */
    xread_free(b->q);
    free(b->hash);
    free(b);
    return true;
}

static void blocked_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    blocked *b = arg;
    blocked_unlink(b);
    server_complete(b->p);
}

/* Retry every parked XREAD (a batch became visible, or a client left). */
void commands_on_visible(const wake_set *ws)
{
    repl_leader_on_visible();
    groups_on_visible(ws);
    blocked *b = blocked_list;
    while (b) {
        blocked *next = b->next;
        if (!wake_any(ws, b->hash, b->q->nkeys)) { /* none of its streams changed (K1) */
            b = next;
            continue;
        }
        resp_out probe;
        resp_out_init(&probe, 2);
        if (pending_orphaned(b->p) || xread_try(b->srv, b->q, &probe)) {
            blocked_unlink(b);
            server_complete(b->p);
        }
        resp_out_release(&probe);
        b = next;
    }
}

static void blocked_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    commands_on_visible(NULL);
}

void commands_init(server *srv, struct event_base *base)
{
    (void)srv;
    blocked_wake = event_new(base, -1, EV_PERSIST | EV_READ, blocked_retry, NULL);
}

void commands_conn_closed(void)
{
    if (blocked_wake)
        event_active(blocked_wake, EV_READ, 0);
}

void commands_shutdown(void)
{
    backup_shutdown();
    repl_leader_shutdown();
    groups_shutdown();
    while (blocked_list) {
        blocked *b = blocked_list;
        blocked_unlink(b);
        server_complete(b->p);
    }
    if (blocked_wake)
        event_free(blocked_wake);
    blocked_wake = NULL;
}

int read_option(cmd_ctx *x, size_t *i, long long *block, long long *count)
{
    if (*i + 1 >= x->argc)
        return 0;
    if (arg_is(x, *i, "BLOCK")) {
        if (!arg_ll(&x->argv[++*i], block)) {
            reply_error_done(x, "ERR timeout is not an integer or out of range");
            return -1;
        }
        if (*block < 0) {
            reply_error_done(x, "ERR timeout is negative");
            return -1;
        }
        return 1;
    }
    if (arg_is(x, *i, "COUNT")) {
        if (!arg_ll(&x->argv[++*i], count)) {
            reply_error_done(x, ERR_INT);
            return -1;
        }
        if (*count < 0)
            *count = 0;
        return 1;
    }
    return 0;
}

static void cmd_xread(cmd_ctx *x)
{
    long long count = 0, block = -1;
    size_t streams = 0;
    for (size_t i = 1; i < x->argc; i++) {
        bool more = i + 1 < x->argc;
        int o = read_option(x, &i, &block, &count);
        if (o < 0)
            return;
        if (o > 0) {
            continue;
        } else if (arg_is(x, i, "STREAMS") && more) {
            streams = i + 1;
            break;
        } else {
            reply_error_done(x, ERR_SYNTAX);
            return;
        }
    }
    if (!streams) {
        reply_error_done(x, ERR_SYNTAX);
        return;
    }
    if ((x->argc - streams) % 2) {
        reply_error_done(x, "ERR Unbalanced XREAD list of streams: for each stream key an ID or "
                            "'$' must be specified.");
        return;
    }
    xread_req *q = calloc(1, sizeof *q);
    size_t nk = (x->argc - streams) / 2, bytes = 0;
    for (size_t i = 0; i < nk; i++)
        bytes += x->argv[streams + i].len;
    if (q) {
        q->nkeys = nk;
        q->count = count;
        q->keys = calloc(nk, sizeof *q->keys);
        q->after = calloc(nk, sizeof *q->after);
        q->mem = malloc(bytes ? bytes : 1);
    }
    if (!q || !q->keys || !q->after || !q->mem) {
        xread_free(q);
        reply_error_done(x, "ERR out of memory");
        return;
    }
    size_t off = 0;
    for (size_t i = 0; i < nk; i++) {
        const resp_arg *k = &x->argv[streams + i], *id = &x->argv[streams + nk + i];
        memcpy(q->mem + off, k->ptr, k->len);
        q->keys[i] = (evs_slice){q->mem + off, k->len};
        off += k->len;
        if (id->len == 1 && id->ptr[0] == '$') {
            evs_stream_info info;
            q->after[i] = evs_stream_info_get(server_store(x->srv), q->keys[i], &info) == 0
                              ? info.last_id
                              : EVS_ID_MIN;
        } else if (id->len == 1 && id->ptr[0] == '>') {
            xread_free(q);
            reply_error_done(x, "ERR The > ID can be specified only when calling XREADGROUP "
                                "using the GROUP <group> <consumer> option.");
            return;
        } else if (!parse_id(id, 0, &q->after[i])) {
            xread_free(q);
            reply_error_done(x, ERR_ID);
            return;
        }
    }
    if (x->capture)
        block = -1; /* inside EXEC: BLOCK does not block, as in Redis */
    if (xread_try(x->srv, q, &x->r->out) || block < 0) {
        if (block < 0 && x->r->out.len == 0)
            resp_out_null_array(&x->r->out);
        xread_free(q);
        reply_done(x);
        return;
    }
    blocked *b = calloc(1, sizeof *b);
    if (!b) {
        xread_free(q);
        reply_error_done(x, "ERR out of memory");
        return;
    }
    b->srv = x->srv;
    b->q = q;
    b->hash = malloc((q->nkeys ? q->nkeys : 1) * sizeof *b->hash);
    b->p = b->hash ? server_hold(x, blocked_fill, b, false) : NULL;
    if (!b->p) {
        xread_free(q);
        free(b->hash);
        free(b);
        reply_error_done(x, "ERR out of memory");
        return;
    }
    for (size_t i = 0; i < q->nkeys; i++)
        b->hash[i] = wake_hash(q->keys[i].ptr, q->keys[i].len);
    b->next = blocked_list;
    if (blocked_list)
        blocked_list->pprev = &b->next;
    b->pprev = &blocked_list;
    blocked_list = b;
    if (block > 0) {
        b->timer = evtimer_new(event_get_base(blocked_wake), blocked_timeout, b);
        struct timeval tv = {(time_t)(block / 1000), (suseconds_t)((block % 1000) * 1000)};
        evtimer_add(b->timer, &tv);
    }
}

static size_t blocked_count(void)
{
    size_t n = 0;
    for (blocked *b = blocked_list; b; b = b->next)
        n++;
    return n + groups_blocked();
}

/* ---- keyspace-wide ------------------------------------------------------------------------ */

/* One SCAN step's names, those that pass MATCH and TYPE. */
struct scan_step {
    resp_out *tmp;
    const resp_arg *pat; /* NULL: every name */
    bool type_ok;
    size_t found;
};

static int scan_one(void *arg, evs_slice name, const evs_stream_info *info)
{
    (void)info;
    struct scan_step *w = arg;
    if (w->type_ok && (!w->pat || glob_match(w->pat->ptr, w->pat->len, name.ptr, name.len, false))) {
        resp_out_bulk(w->tmp, name.ptr, name.len);
        w->found++;
    }
    return 0;
}

/* SCAN's cursor as Redis 7.0 reads it (strtoul, base 10): an optional sign ("-1" is the
 * largest cursor), no leading space, nothing after the digits but a NUL byte, no overflow;
 * an empty cursor is 0. */
static bool scan_cursor(const resp_arg *a, uint64_t *out)
{
    const void *nul = memchr(a->ptr, 0, a->len);
    size_t n = nul ? (size_t)((const uint8_t *)nul - a->ptr) : a->len;
    char *buf = malloc(n + 1);
    if (!buf)
        return false;
    memcpy(buf, a->ptr, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    bool ok = !isspace((unsigned char)buf[0]) && *end == 0 && errno != ERANGE;
    free(buf);
    *out = v;
    return ok;
}

/* SCAN cursor [MATCH p] [COUNT n] [TYPE t]: the cursor is a stream number, so streams that
 * exist for the whole walk are returned exactly once, whatever is dropped meanwhile. */
static void cmd_scan(cmd_ctx *x)
{
    uint64_t cursor;
    long long count = 10;
    if (!scan_cursor(&x->argv[1], &cursor)) {
        reply_error_done(x, "ERR invalid cursor");
        return;
    }
    const resp_arg *pat = NULL;
    bool type_ok = true;
    for (size_t i = 2; i < x->argc; i += 2) {
        if (i + 1 >= x->argc) {
            reply_error_done(x, ERR_SYNTAX);
            return;
        }
        if (arg_is(x, i, "COUNT")) {
            if (!arg_ll(&x->argv[i + 1], &count)) {
                reply_error_done(x, ERR_INT);
                return;
            }
            if (count < 1) {
                reply_error_done(x, ERR_SYNTAX);
                return;
            }
        } else if (arg_is(x, i, "MATCH")) {
            pat = glob_is_all(x->argv[i + 1].ptr, x->argv[i + 1].len) ? NULL : &x->argv[i + 1];
        } else if (arg_is(x, i, "TYPE")) {
            type_ok = arg_is(x, i + 1, "stream");
        } else {
            reply_error_done(x, ERR_SYNTAX);
            return;
        }
    }
    resp_out tmp;
    resp_out_init(&tmp, conn_proto(x->c));
    struct scan_step w = {&tmp, pat, type_ok, 0};
    uint64_t next;
    evs_stream_scan(server_store(x->srv), cursor, (size_t)count, scan_one, &w, &next);
    char cur[24];
    snprintf(cur, sizeof cur, "%" PRIu64, next);
    resp_out_array(&x->r->out, 2);
    resp_out_cstr(&x->r->out, cur);
    resp_out_array(&x->r->out, w.found);
    resp_out_cat(&x->r->out, &tmp);
    resp_out_release(&tmp);
    reply_done(x);
}

/* FLUSHALL's list of every name (copies: the walk's pointers last only for its call). */
struct name_list {
    evs_slice *v;
    size_t n, cap;
};

static int collect_name(void *arg, evs_slice name, const evs_stream_info *info)
{
    (void)info;
    struct name_list *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        evs_slice *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    uint8_t *copy = malloc(name.len ? name.len : 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, name.ptr, name.len);
    l->v[l->n++] = (evs_slice){copy, name.len};
    return 0;
}

static void cmd_flushall(cmd_ctx *x)
{
    if (x->argc > 2 || (x->argc == 2 && !arg_is(x, 1, "ASYNC") && !arg_is(x, 1, "SYNC"))) {
        reply_error_done(x, ERR_SYNTAX);
        return;
    }
    struct name_list l = {0};
    if (evs_stream_list(server_store(x->srv), collect_name, &l))
        reply_error_done(x, "ERR out of memory");
    else
        drop_and_answer(x, l.v, l.n, true);
    for (size_t i = 0; i < l.n; i++)
        free((void *)l.v[i].ptr);
    free(l.v);
}

/* ---- CONFIG ------------------------------------------------------------------------------- */

static long long stream_node_max_bytes = 4096, stream_node_max_entries = 100; /* no-ops */

/* CONFIG items; the settable ones are read as Redis 7.0 reads a numeric config of that kind:
 * an integer (string2ll) or a memory value (digits and a unit: b, k, kb, m, mb, g, gb), then
 * checked against its bounds. */
enum config_kind { CFG_FIXED, CFG_INT, CFG_MEMORY };
typedef struct config_item {
    const char *name;
    enum config_kind kind;
    long long min, max;
} config_item;

static const config_item config_items[] = {
    {"appendonly", CFG_FIXED, 0, 0},         {"appendfsync", CFG_FIXED, 0, 0},
    {"save", CFG_FIXED, 0, 0},               {"databases", CFG_FIXED, 0, 0},
    {"maxclients", CFG_INT, 1, 4294967295LL}, {"port", CFG_FIXED, 0, 0},
    {"bind", CFG_FIXED, 0, 0},               {"fsync", CFG_FIXED, 0, 0},
    {"segment-bytes", CFG_FIXED, 0, 0},      {"max-entry-bytes", CFG_FIXED, 0, 0},
    {"max-request-bytes", CFG_FIXED, 0, 0},  {"max-output-bytes", CFG_MEMORY, 0, LLONG_MAX},
    {"stream-node-max-bytes", CFG_MEMORY, 0, LLONG_MAX},
    {"stream-node-max-entries", CFG_INT, 0, LLONG_MAX},
    {"timeout", CFG_INT, 0, INT_MAX},        {"retention-max-age", CFG_FIXED, 0, 0},
    {"retention-max-bytes", CFG_FIXED, 0, 0}, {"retention-max-entries", CFG_FIXED, 0, 0},
};

/* Redis's memtoll: an optional '-', digits, then a unit (any case); false if the unit is not
 * one or the value is below zero. Not evs_parse_size (the flags' sizes): Redis's "k" is 1000
 * and "kb" 1024, and it takes "" and "k" as 0; CONFIG SET must read what Redis reads. */
static bool memory_value(const resp_arg *a, long long *out)
{
    char buf[128];
    if (a->len >= sizeof buf || memchr(a->ptr, 0, a->len))
        return false;
    memcpy(buf, a->ptr, a->len);
    buf[a->len] = 0;
    const char *u = buf + (buf[0] == '-');
    while (isdigit((unsigned char)*u))
        u++;
    static const struct { const char *unit; long long mul; } units[] = {
        {"", 1}, {"b", 1}, {"k", 1000}, {"kb", 1024}, {"m", 1000000}, {"mb", 1048576},
        {"g", 1000000000LL}, {"gb", 1073741824LL}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (!strcasecmp(u, units[i].unit)) {
            char digits[128];
            memcpy(digits, buf, (size_t)(u - buf));
            digits[u - buf] = 0;
            long long v = strtoll(digits, NULL, 10);
            if (v < 0 || (v && units[i].mul > LLONG_MAX / v))
                return false;
            *out = v * units[i].mul;
            return true;
        }
    return false;
}

/* NULL if a value for `it` can be read from a (into *v), else Redis's reason. */
static const char *config_parse(const config_item *it, const resp_arg *a, long long *v,
                                char *buf, size_t cap)
{
    if (it->kind == CFG_MEMORY ? !memory_value(a, v) : !arg_ll(a, v))
        return it->kind == CFG_MEMORY ? "argument must be a memory value"
                                      : "argument couldn't be parsed into an integer";
    if (*v < it->min || *v > it->max) {
        snprintf(buf, cap, "argument must be between %lld and %lld inclusive", it->min, it->max);
        return buf;
    }
    return NULL;
}

static void config_value(server *srv, const char *name, char *buf, size_t cap)
{
    const server_config *c = server_cfg(srv);
    static const char *modes[] = {"always", "everysec", "no"};
    if (!strcmp(name, "appendonly")) snprintf(buf, cap, "yes");
    else if (!strcmp(name, "appendfsync") || !strcmp(name, "fsync")) snprintf(buf, cap, "%s", modes[c->fsync]);
    else if (!strcmp(name, "save")) buf[0] = 0;
    else if (!strcmp(name, "databases")) snprintf(buf, cap, "1");
    else if (!strcmp(name, "maxclients")) snprintf(buf, cap, "%d", c->max_clients);
    else if (!strcmp(name, "port")) snprintf(buf, cap, "%d", c->port);
    else if (!strcmp(name, "bind")) snprintf(buf, cap, "%s", c->bind);
    else if (!strcmp(name, "segment-bytes")) snprintf(buf, cap, "%llu", (unsigned long long)c->segment_bytes);
    else if (!strcmp(name, "max-entry-bytes")) snprintf(buf, cap, "%llu", (unsigned long long)c->max_entry_bytes);
    else if (!strcmp(name, "max-request-bytes")) snprintf(buf, cap, "%llu", (unsigned long long)c->max_request_bytes);
    else if (!strcmp(name, "max-output-bytes")) snprintf(buf, cap, "%llu", (unsigned long long)c->max_output_bytes);
    else if (!strcmp(name, "stream-node-max-bytes")) snprintf(buf, cap, "%lld", stream_node_max_bytes);
    else if (!strcmp(name, "timeout")) snprintf(buf, cap, "%d", c->timeout_s);
    else if (!strcmp(name, "retention-max-age")) snprintf(buf, cap, "%llu", (unsigned long long)c->retention.max_age_ms);
    else if (!strcmp(name, "retention-max-bytes")) snprintf(buf, cap, "%llu", (unsigned long long)c->retention.max_bytes);
    else if (!strcmp(name, "retention-max-entries")) snprintf(buf, cap, "%llu", (unsigned long long)c->retention.max_entries);
    else snprintf(buf, cap, "%lld", stream_node_max_entries);
}

static const subcommand config_subs[] = {{"GET", -3}, {"SET", -4}, {"RESETSTAT", 2}};
static const char *const config_help[] = {
    "GET <pattern>", "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>", "    Set the configuration <directive> to <value>.",
    "RESETSTAT", "    Reset statistics reported by the INFO command.",
};
static const subcommands config_sc = SUBCOMMANDS("config", config_subs, config_help);

static void cmd_config(cmd_ctx *x)
{
    if (subcommand_help(x, &config_sc))
        return;
    if (arg_is(x, 1, "GET")) {
        resp_out tmp;
        resp_out_init(&tmp, conn_proto(x->c));
        size_t n = 0;
        for (size_t k = 0; k < sizeof config_items / sizeof *config_items; k++) {
            /* a name without glob characters is looked up (any case) and answered as given,
             * as Redis 7.0 does; a pattern answers the item's own name */
            const char *name = config_items[k].name;
            const resp_arg *label = NULL;
            bool match = false;
            for (size_t i = 2; i < x->argc && !match; i++) {
                const resp_arg *a = &x->argv[i];
                bool plain = !memchr(a->ptr, '*', a->len) && !memchr(a->ptr, '?', a->len) &&
                             !memchr(a->ptr, '[', a->len);
                match = plain ? arg_is(x, i, name)
                              : glob_match(a->ptr, a->len, name, strlen(name), true);
                label = plain ? a : NULL;
            }
            if (!match)
                continue;
            char val[128];
            config_value(x->srv, name, val, sizeof val);
            if (label)
                resp_out_bulk(&tmp, label->ptr, label->len);
            else
                resp_out_cstr(&tmp, name);
            resp_out_cstr(&tmp, val);
            n++;
        }
        resp_out_map(&x->r->out, n);
        resp_out_cat(&x->r->out, &tmp);
        resp_out_release(&tmp);
    } else if (arg_is(x, 1, "SET") && x->argc % 2) {
        reply_error_done(x, "ERR wrong number of arguments for 'config|set' command");
        return;
    } else if (arg_is(x, 1, "SET")) {
        /* as Redis 7.0: every pair checked before any is applied (all or none) */
        size_t n = (x->argc - 2) / 2;
        const config_item **its = calloc(n, sizeof *its);
        long long *vals = calloc(n, sizeof *vals);
        const char *why = its && vals ? NULL : "out of memory";
        char buf[128];
        size_t bad = 0;
        bool unknown = false;
        for (size_t p = 0; p < n && !why && !unknown; p++) {
            const resp_arg *name = &x->argv[2 + 2 * p];
            for (size_t k = 0; k < sizeof config_items / sizeof *config_items; k++)
                if (arg_is(x, 2 + 2 * p, config_items[k].name))
                    its[p] = &config_items[k];
            bad = p;
            if (!its[p]) {
                resp_out_error(&x->r->out, "ERR Unknown option or number of arguments for "
                               "CONFIG SET - '%.*s'", (int)name->len, name->ptr);
                unknown = true;
                continue;
            }
            for (size_t q = 0; q < p && !why; q++)
                if (its[q] == its[p])
                    why = "duplicate parameter";
            if (!why && its[p]->kind == CFG_FIXED)
                why = "can't set immutable config";
            if (!why)
                why = config_parse(its[p], &x->argv[3 + 2 * p], &vals[p], buf, sizeof buf);
        }
        if (unknown) {
            /* answered */
        } else if (why) {
            resp_out_error(&x->r->out, "ERR CONFIG SET failed (possibly related to argument "
                           "'%s') - %s", its && its[bad] ? its[bad]->name : "", why);
        } else {
            for (size_t p = 0; p < n; p++) {
                long long v = vals[p];
                const char *name = its[p]->name;
                if (!strcmp(name, "maxclients"))
                    server_cfg_mut(x->srv)->max_clients = v > INT_MAX ? INT_MAX : (int)v;
                else if (!strcmp(name, "max-output-bytes")) {
                    server_cfg_mut(x->srv)->max_output_bytes = (uint64_t)v;
                    resp_out_set_limit((size_t)v);
                }
                else if (!strcmp(name, "stream-node-max-bytes"))
                    stream_node_max_bytes = v;
                else if (!strcmp(name, "timeout"))
                    server_cfg_mut(x->srv)->timeout_s = (int)v;
                else
                    stream_node_max_entries = v;
            }
            resp_out_simple(&x->r->out, "OK");
        }
        free(its);
        free(vals);
    } else { /* RESETSTAT */
        stats_now(x, &stat_base.s, &stat_base.c);
        resp_out_simple(&x->r->out, "OK");
    }
    reply_done(x);
}

/* ---- the table ---------------------------------------------------------------------------- */

static const subcommand command_subs[] = {{"COUNT", 2}, {"DOCS", -2}, {"INFO", -2},
                                  {"LIST", -2}, {"GETKEYS", -3}, {"GETKEYSANDFLAGS", -3}};
static const char *const command_help[] = {
    "COUNT", "    Return the total number of commands in this server.",
    "DOCS|INFO|LIST|GETKEYS ...", "    An empty array (evstore answers them minimally).",
};
static const subcommands command_sc = SUBCOMMANDS("command", command_subs, command_help);

static const command table[] = {
    {"multi", 1, false, cmd_multi, NULL},     {"exec", 1, false, cmd_exec, NULL},
    {"discard", 1, false, cmd_discard, NULL}, {"watch", -2, false, cmd_watch, NULL},
    {"unwatch", 1, false, cmd_unwatch, NULL},
    {"ping", -1, false, cmd_ping, NULL},      {"echo", 2, false, cmd_echo, NULL},
    {"quit", -1, true, cmd_quit, NULL},       {"select", 2, false, cmd_select, NULL},
    {"auth", -2, true, cmd_auth, NULL},       {"hello", -1, true, cmd_hello, NULL},
    {"command", -1, false, cmd_command, &command_sc}, {"client", -2, false, cmd_client, &client_sc},
    {"exists", -2, false, cmd_exists, NULL},  {"type", 2, false, cmd_type, NULL},
    {"del", -2, false, cmd_del, NULL},        {"unlink", -2, false, cmd_del, NULL},
    {"keys", 2, false, cmd_keys, NULL},       {"dbsize", 1, false, cmd_dbsize, NULL},
    {"info", -1, false, cmd_info, NULL},      {"xadd", -5, false, cmd_xadd, NULL},
    {"xlen", 2, false, cmd_xlen, NULL},       {"xrange", -4, false, cmd_xrange, NULL},
    {"xrevrange", -4, false, cmd_xrevrange, NULL}, {"xdel", -3, false, cmd_xdel, NULL},
    {"xread", -4, false, cmd_xread, NULL},    {"scan", -2, false, cmd_scan, NULL},
    {"xinfo", -2, false, cmd_xinfo, &xinfo_sc},    {"xtrim", -4, false, cmd_xtrim, NULL},
    {"flushall", -1, false, cmd_flushall, NULL}, {"flushdb", -1, false, cmd_flushall, NULL},
    {"config", -2, false, cmd_config, &config_sc}, {"xsetid", -3, false, cmd_xsetid, NULL},
    {"role", 1, false, cmd_role, NULL},
    {"xgroup", -2, false, cmd_xgroup, &xgroup_sc},  {"xreadgroup", -7, false, cmd_xreadgroup, NULL},
    {"xack", -4, false, cmd_xack, NULL},      {"xpending", -3, false, cmd_xpending, NULL},
    {"xclaim", -6, false, cmd_xclaim, NULL},  {"xautoclaim", -6, false, cmd_xautoclaim, NULL},
    {"xretention", -3, false, cmd_xretention, NULL},
    {"backup", -2, false, cmd_backup_snapshot, NULL},
    {"replsync", -4, false, cmd_replsync, NULL}, {"replconf", -2, false, cmd_replconf, NULL},
    {"wait", 3, false, cmd_wait, NULL},       {"replicaof", 3, false, cmd_replicaof, NULL},
    {"slaveof", 3, false, cmd_replicaof, NULL}, {"shutdown", -1, false, cmd_shutdown, NULL},
};


static void cmd_command(cmd_ctx *x)
{
    if (x->argc > 1 && subcommand_help(x, &command_sc))
        return;
    if (arg_is(x, 1, "COUNT"))
        resp_out_int(&x->r->out, (long long)(sizeof table / sizeof *table));
    else
        resp_out_array(&x->r->out, 0); /* COMMAND and COMMAND DOCS: minimal, documented */
    reply_done(x);
}

/* XADD and XACK: writes ordered by the writer queue whose replies hold nothing a later command
 * of the connection could need first (N4). A pipeline of them becomes one group commit. */
bool commands_pipelinable(const resp_arg *name)
{
    return name->len == 4 && (strncasecmp((const char *)name->ptr, "xadd", 4) == 0 ||
                              strncasecmp((const char *)name->ptr, "xack", 4) == 0);
}

/* Other data types' commands: on a stream key Redis answers -WRONGTYPE; elsewhere we have no
 * such type and answer as for an unknown command. */
static const char *const other_types[] = {
    "get", "getrange", "getdel", "getex", "getset", "strlen", "append", "setrange", "incr",
    "incrby", "incrbyfloat", "decr", "decrby", "hget", "hset", "hsetnx", "hmset", "hmget",
    "hgetall", "hdel", "hlen", "hexists", "hkeys", "hvals", "hincrby", "hincrbyfloat", "hstrlen",
    "lpush", "rpush", "lpushx", "rpushx", "lpop", "rpop", "llen", "lrange", "lindex", "lset",
    "lrem", "ltrim", "linsert", "sadd", "srem", "smembers", "sismember", "smismember", "scard",
    "spop", "srandmember", "zadd", "zrem", "zrange", "zrevrange", "zrangebyscore", "zscore",
    "zcard", "zincrby", "zrank", "zrevrank", "zcount", "pfadd", "pfcount", "bitcount", "getbit",
    "setbit",
};

static bool wrongtype(cmd_ctx *x)
{
    if (x->argc < 2)
        return false;
    for (size_t i = 0; i < sizeof other_types / sizeof *other_types; i++) {
        size_t n = strlen(other_types[i]);
        if (x->argv[0].len == n && !strncasecmp((const char *)x->argv[0].ptr, other_types[i], n)) {
            evs_stream_info info;
            return evs_stream_info_get(server_store(x->srv), key_of(&x->argv[1]), &info) == 0;
        }
    }
    return false;
}

/* The command table's names in an open-addressed hash of their indexes, built once: a scan of
 * the table with strlen and strncasecmp (21 names before XADD's) was 1.5 % of the loop's
 * samples at c50/P16. Names are compared in ASCII lower case, as strncasecmp did. */
#define FIND_SLOTS 128   /* a power of two, more than twice the commands */
#define FIND_NAME_MAX 32 /* longer than any command's name */
static uint8_t find_slots[FIND_SLOTS]; /* an index into table + 1; 0: empty */
static pthread_once_t find_once = PTHREAD_ONCE_INIT;
_Static_assert(sizeof table / sizeof *table * 2 <= FIND_SLOTS, "FIND_SLOTS too small");

static uint32_t find_hash(const char *low, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)low[i]) * 16777619u;
    return h & (FIND_SLOTS - 1);
}

static void find_build(void)
{
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        uint32_t h = find_hash(table[i].name, strlen(table[i].name));
        while (find_slots[h])
            h = (h + 1) & (FIND_SLOTS - 1);
        find_slots[h] = (uint8_t)(i + 1);
    }
}

const command *commands_find(const resp_arg *name)
{
    char low[FIND_NAME_MAX];
    if (name->len > sizeof low)
        return NULL;
    for (size_t i = 0; i < name->len; i++) {
        char c = (char)name->ptr[i];
        low[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    pthread_once(&find_once, find_build);
    for (uint32_t h = find_hash(low, name->len); find_slots[h]; h = (h + 1) & (FIND_SLOTS - 1)) {
        const command *cmd = &table[find_slots[h] - 1];
        if (strlen(cmd->name) == name->len && !memcmp(cmd->name, low, name->len))
            return cmd;
    }
    return NULL;
}

bool commands_arity_ok(const command *cmd, size_t argc)
{
    return cmd->arity > 0 ? argc == (size_t)cmd->arity : argc >= (size_t)-cmd->arity;
}

/* Commands that change data (a follower refuses them, as a Redis replica does), and how they
 * are answered: 1 before they return, once durable here; 2 from their completion (XADD and
 * the group commands, which wait there for what --ack all needs); 0 not a write. */
static int write_kind(const cmd_ctx *x, const command *cmd)
{
    static const struct {
        const char *name;
        int kind;
    } writes[] = {{"xadd", 2},   {"xdel", 1},     {"xtrim", 1},   {"xsetid", 1},
                  {"del", 1},    {"unlink", 1},   {"flushall", 1}, {"flushdb", 1},
                  {"xgroup", 2}, {"xreadgroup", 2}, {"xack", 2},  {"xclaim", 2},
                  {"xautoclaim", 2}};
    for (size_t i = 0; i < sizeof writes / sizeof *writes; i++)
        if (!strcmp(cmd->name, writes[i].name))
            return writes[i].kind;
    return !strcmp(cmd->name, "xretention") && arg_is(x, 2, "SET") ? 1 : 0; /* key, SET */
}

static bool is_write(const cmd_ctx *x, const command *cmd) { return write_kind(x, cmd) != 0; }

bool commands_answered_durable(const cmd_ctx *x, const command *cmd)
{
    return write_kind(x, cmd) == 1;
}

bool commands_writes(const cmd_ctx *x, const command *cmd) { return is_write(x, cmd); }

/* "POST" and "Host:" are no commands: they begin the first two lines of an HTTP request, which
 * a web page can make a browser send to this port (cross-protocol scripting) so that the RESP
 * lines of its body run — a FLUSHALL from any site its user opens. As Redis 7.0
 * (securityWarningCommand): the connection is closed at once, with no answer, before anything
 * after it is read, whether authenticated or in a MULTI; logged at most once a minute. */
static bool cross_protocol(cmd_ctx *x)
{
    const resp_arg *name = &x->argv[0];
    if (!((name->len == 4 && !strncasecmp((const char *)name->ptr, "post", 4)) ||
          (name->len == 5 && !strncasecmp((const char *)name->ptr, "host:", 5))))
        return false;
    static time_t logged;
    time_t now = time(NULL);
    if (now - logged > 60 || now < logged) {
        server_log(x->srv, EVS_LOG_WARN,
                   "Possible SECURITY ATTACK detected. It looks like somebody is sending POST or "
                   "Host: commands to evstore's RESP port. This is likely due to an attacker "
                   "attempting to use Cross Protocol Scripting to compromise your evstore "
                   "instance. Connection aborted.");
        logged = now;
    }
    conn_abort(x->c, NULL);
    return true;
}

void commands_dispatch(cmd_ctx *x)
{
    const resp_arg *name = &x->argv[0];
    if (cross_protocol(x))
        return;
    const command *cmd = commands_find(name);
    const char *why = NULL;
    char buf[400];
    if (!cmd && conn_authed(x->c) && wrongtype(x)) {
        why = "WRONGTYPE Operation against a key holding the wrong kind of value";
    } else if (!cmd) {
        char args[160] = "";
        size_t used = 0;
        for (size_t i = 1; i < x->argc && used < 128; i++) {
            int w = snprintf(args + used, sizeof args - used, "'%.*s' ",
                             (int)(x->argv[i].len < 128 - used ? x->argv[i].len : 128 - used),
                             x->argv[i].ptr);
            if (w < 0 || (size_t)w >= sizeof args - used)
                break;
            used += (size_t)w;
        }
        snprintf(buf, sizeof buf, "ERR unknown command '%.*s', with args beginning with: %s",
                 (int)(name->len < 128 ? name->len : 128), name->ptr, args);
        why = buf;
    } else if (!commands_arity_ok(cmd, x->argc)) { /* Redis 7.0's order: arity, then AUTH */
        snprintf(buf, sizeof buf, "ERR wrong number of arguments for '%s' command", cmd->name);
        why = buf;
    } else if (cmd->sub && x->argc > 1 && (why = subcommand_error(x, cmd->sub, buf, sizeof buf))) {
        /* a container's subcommand is checked as the command's arity is */
    } else if (!conn_authed(x->c) && !cmd->noauth) {
        why = "NOAUTH Authentication required.";
    } else if (server_is_follower(x->srv) && is_write(x, cmd)) {
        why = "READONLY You can't write against a read only replica.";
    }
    if (why && cmd && cmd->fn == cmd_exec) {
        multi_abort(x, why);
        return;
    }
    if (multi_intercept(x, cmd, why))
        return;
    if (why) {
        reply_error_done(x, why);
        return;
    }
    cmd->fn(x);
    server_count_command(x->srv); /* after it, as Redis: RESETSTAT counts itself */
    if (!x->capture && commands_answered_durable(x, cmd))
        repl_fence(x); /* --ack all: the next command reads this write (repl_leader.c) */
}
