/*
 * groups.c — the consumer-group commands of the RESP front: XGROUP, XREADGROUP, XACK,
 * XPENDING, XCLAIM, XAUTOCLAIM, XINFO GROUPS/CONSUMERS. Replies and error texts are Redis
 * 7.0's (t_stream.c); XGROUP CREATE's MAXDELIVERIES/DEADLETTER and XGROUP SETDLQ are ours.
 *
 * Every command that changes group state goes through evs_group_submit and is answered when
 * its records are durable (as XADD, N2); the entries a read delivers are read for the reply
 * once the delivery is durable. XREADGROUP BLOCK with ">" parks until a batch makes the stream
 * grow past the group's last-delivered ID (then it reads, and parks again if another consumer
 * got the entries first), the group is destroyed (NOGROUP) or the stream deleted (UNBLOCKED).
 */
#include "commands.h"
#include "server.h"

#include <event2/event.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ------------------------------------------------------------------------ */

static int keep_info(void *arg, const evs_group_info *g)
{
    *(evs_group_info *)arg = *g;
    ((evs_group_info *)arg)->name.ptr = NULL; /* only scalars survive the call */
    ((evs_group_info *)arg)->dlq.ptr = NULL;
    return 0;
}

/* Does the group exist (visible state)? */
static bool group_exists(evs_store *st, evs_slice key, evs_slice group, evs_group_info *info)
{
    evs_group_info tmp;
    return evs_group_get(st, key, group, 0, keep_info, info ? info : &tmp) == 0;
}

static void reply_nogroup(cmd_ctx *x, const resp_arg *key, const resp_arg *group,
                          const char *suffix)
{
    resp_out_error(&x->r->out, "NOGROUP No such key '%.*s' or consumer group '%.*s'%s",
                   (int)key->len, key->ptr, (int)group->len, group->ptr, suffix);
    reply_done(x);
}

/* The error text for a failed group operation. */
static void out_group_error(resp_out *o, int rc, const evs_error *err)
{
    resp_out_error(o, "ERR %s", err && err->msg[0] ? err->msg : evs_strerror(rc));
}

/* One entry by ID: the entry, or [id, nil] if it is gone (Redis's history reply). */
static void out_entry_or_nil(resp_out *o, evs_store *st, evs_slice key, evs_id id, bool nil_array)
{
    evs_query q;
    evs_query_init(&q);
    q.start = q.end = id;
    q.limit = 1;
    evs_iter *it;
    evs_error err;
    const evs_entry *e;
    if (evs_iter_open(st, key, &q, &it, &err) == 0) {
        int rc = evs_iter_next(it, &e, &err);
        if (rc == 1) {
            out_entry(o, e);
            evs_iter_close(it);
            return;
        }
        evs_iter_close(it);
    }
    if (nil_array) {
        resp_out_array(o, 2);
        out_id(o, id);
        resp_out_null_array(o);
    } else {
        resp_out_null(o);
    }
}

/* Entries delivered by ">" are consecutive live entries: one range read. */
static void out_delivered(resp_out *o, evs_store *st, evs_slice key, const evs_id *ids, size_t n)
{
    evs_query q;
    evs_query_init(&q);
    q.start = ids[0];
    q.end = ids[n - 1];
    q.limit = n;
    resp_out tmp;
    resp_out_init(&tmp, o->proto);
    size_t got = 0;
    evs_iter *it;
    evs_error err;
    const evs_entry *e;
    if (evs_iter_open(st, key, &q, &it, &err) == 0) {
        while (got < n && evs_iter_next(it, &e, &err) == 1) {
            while (got < n && evs_id_cmp(ids[got], e->id) < 0) { /* deleted since */
                resp_out_array(&tmp, 2);
                out_id(&tmp, ids[got++]);
                resp_out_null_array(&tmp);
            }
            if (got < n && evs_id_cmp(ids[got], e->id) == 0) {
                out_entry(&tmp, e);
                got++;
            }
        }
        evs_iter_close(it);
    }
    for (; got < n; got++) {
        resp_out_array(&tmp, 2);
        out_id(&tmp, ids[got]);
        resp_out_null_array(&tmp);
    }
    resp_out_array(o, n);
    resp_out_cat(o, &tmp);
    resp_out_release(&tmp);
}

/* Inside EXEC nothing may be held (commands.h: capture): the command waits for its own
 * completion on the loop thread. The writer never waits for the loop, so this cannot
 * deadlock as long as the waiter wakes the writer first (the loop thread holds submissions
 * while it runs a read's commands: evs_submit_wake); it costs the loop one group commit, as
 * EXEC's XADD batches do. */
typedef struct waitsync {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} waitsync;

static void sync_signal(waitsync *w)
{
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void sync_wait(server *srv, waitsync *w)
{
    evs_submit_wake(server_store(srv));
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

/* ---- one-shot operations (everything but XREADGROUP) -------------------------------------- */

enum reply_kind { RK_OK, RK_INT, RK_BUSY, RK_CLAIM, RK_AUTOCLAIM };

typedef struct gcall {
    pending_t *p;
    waitsync *sync;               /* inside EXEC: signal this instead of completing p        */
    server *srv;
    enum reply_kind kind;
    bool justid;
    uint8_t *key;
    size_t key_len;
    int rc;
    evs_error err;
    evs_group_result res;
    evs_id *ids; /* copies of res.ids then res.deleted */
    evs_id *idbuf;
    bool seen_first; /* --ack all answers once readers see what it wrote to a stream: XGROUP
                        CREATE MKSTREAM's stream, the entries it dead-lettered */
} gcall;

static void gcall_free(gcall *g)
{
    free(g->key);
    free(g->ids);
    free(g->idbuf);
    free(g);
}

static void gcall_done(void *arg, int rc, const evs_group_result *res, size_t n,
                       const evs_error *err)
{
    gcall *g = arg;
    g->rc = rc;
    if (err)
        g->err = *err;
    if (!rc && n) {
        g->res = res[0];
        g->seen_first |= res[0].dead_lettered > 0;
        size_t k = res[0].nids + res[0].ndeleted;
        g->ids = malloc((k ? k : 1) * sizeof *g->ids);
        if (g->ids) {
            if (res[0].nids)
                memcpy(g->ids, res[0].ids, res[0].nids * sizeof *g->ids);
            if (res[0].ndeleted)
                memcpy(g->ids + res[0].nids, res[0].deleted, res[0].ndeleted * sizeof *g->ids);
        } else {
            g->rc = -12;
        }
    }
    if (g->sync)
        sync_signal(g->sync);
    else
        server_complete(g->p);
}

static bool gcall_fill(pending_t *p, reply *r, void *result)
{
    gcall *g = result;
    if (p && g->rc == 0 && g->seen_first && !pending_orphaned(p)) {
        g->seen_first = false; /* once */
        pending_t *again = repl_hold_visible(g->srv, p, gcall_fill, g);
        if (again) {
            g->p = again;
            return false;
        }
    }
    resp_out *o = &r->out;
    evs_slice key = {g->key, g->key_len};
    evs_store *st = server_store(g->srv);
    if (g->rc == EVS_EEXIST) {
        resp_out_error(o, "BUSYGROUP Consumer Group name already exists");
    } else if (g->rc == EVS_ENOTFOUND) {
        resp_out_error(o, "ERR The XGROUP subcommand requires the key to exist. Note that for "
                          "CREATE you may want to use the MKSTREAM option to create an empty "
                          "stream automatically.");
    } else if (g->rc == EVS_ENOGROUP) {
        resp_out_error(o, "NOGROUP No such key '%.*s' or consumer group", (int)g->key_len,
                       (const char *)g->key);
    } else if (g->rc == EVS_ETOOBIG && g->kind == RK_CLAIM) {
        resp_out_error(o, "ERR reply over the server's max-output-bytes (%llu bytes); claim fewer "
                          "IDs, or with JUSTID", (unsigned long long)resp_out_limit());
    } else if (g->rc) {
        out_group_error(o, g->rc, &g->err);
    } else if (g->kind == RK_OK) {
        resp_out_simple(o, "OK");
    } else if (g->kind == RK_INT) {
        resp_out_int(o, (long long)g->res.count);
    } else {
        const evs_id *ids = g->ids, *del = g->ids + g->res.nids;
        if (g->kind == RK_AUTOCLAIM) {
            resp_out_array(o, 3);
            out_id(o, g->res.next);
        }
        resp_out_array(o, g->res.nids);
        for (size_t i = 0; i < g->res.nids; i++) {
            if (g->justid)
                out_id(o, ids[i]);
            else
                out_entry_or_nil(o, st, key, ids[i], false);
        }
        if (g->kind == RK_AUTOCLAIM) {
            resp_out_array(o, g->res.ndeleted);
            for (size_t i = 0; i < g->res.ndeleted; i++)
                out_id(o, del[i]);
        }
    }
    gcall_free(g);
    return true;
}

/* Queue op and answer when durable; `pipelinable`: see commands_pipelinable (XACK). */
static void run_op_hold(cmd_ctx *x, const evs_group_op *op, enum reply_kind kind,
                        bool pipelinable)
{
    waitsync ws = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
    gcall *g = calloc(1, sizeof *g);
    if (g && (g->key = malloc(op->stream.len ? op->stream.len : 1))) {
        if (x->capture)
            g->sync = &ws;
        else
            g->p = server_hold(x, gcall_fill, g, pipelinable);
    }
    if (!g || !g->key || (!g->p && !g->sync)) {
        if (g)
            gcall_free(g);
        reply_error_done(x, "ERR out of memory");
        return;
    }
    g->srv = x->srv;
    g->kind = kind;
    g->justid = op->justid;
    g->seen_first = op->cmd == EVS_GROUP_CREATE && op->mkstream;
    memcpy(g->key, op->stream.ptr, op->stream.len);
    g->key_len = op->stream.len;
    int rc = evs_group_submit(server_store(x->srv), op, 1, gcall_done, g, &g->err);
    if (rc) {
        g->rc = rc;
        if (g->sync)
            sync_signal(g->sync);
        else
            server_complete(g->p);
    }
    if (g->sync) {
        sync_wait(x->srv, &ws);
        gcall_fill(NULL, x->r, g);
        reply_done(x);
    }
}

static void run_op(cmd_ctx *x, const evs_group_op *op, enum reply_kind kind)
{
    run_op_hold(x, op, kind, false);
}

/* ---- XGROUP ------------------------------------------------------------------------------- */

static void xgroup_usage_error(cmd_ctx *x, const char *cmd)
{
    int n = x->argc > 1 ? (int)(x->argv[1].len < 128 ? x->argv[1].len : 128) : 0;
    resp_out_error(&x->r->out,
                   "ERR unknown subcommand or wrong number of arguments for '%.*s'. Try %s HELP.",
                   n, x->argc > 1 ? (const char *)x->argv[1].ptr : "", cmd);
    reply_done(x);
}

static bool entries_read_arg(cmd_ctx *x, size_t i, uint64_t *out)
{
    long long v;
    if (!arg_ll(&x->argv[i], &v)) {
        reply_error_done(x, ERR_INT);
        return false;
    }
    if (v < 0 && v != -1) {
        reply_error_done(x, "ERR value for ENTRIESREAD must be positive or -1");
        return false;
    }
    *out = v < 0 ? EVS_ENTRIES_READ_NONE : (uint64_t)v;
    return true;
}

static bool max_deliveries_arg(cmd_ctx *x, size_t i, uint64_t *out)
{
    long long v;
    if (!arg_ll(&x->argv[i], &v) || v < 0) {
        reply_error_done(x, "ERR MAXDELIVERIES must be a non-negative integer");
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

static const subcommand xgroup_subs[] = {
    {"CREATE", -5}, {"SETID", -5}, {"DESTROY", 4}, {"CREATECONSUMER", 5},
    {"DELCONSUMER", 5}, {"SETDLQ", -6}};
static const char *const xgroup_help[] = {
    "CREATE <key> <groupname> <id|$> [option]",
    "    Create a new consumer group. Options are:",
    "    * MKSTREAM",
    "      Create the empty stream if it does not exist.",
    "    * ENTRIESREAD entries_read",
    "      Set the group's entries_read counter (internal use).",
    "    * MAXDELIVERIES n",
    "      (evstore) Move entries delivered more than n times to the dead-letter stream.",
    "    * DEADLETTER <dlqkey>",
    "      (evstore) The dead-letter stream (default <key>:dlq).",
    "CREATECONSUMER <key> <groupname> <consumer>",
    "    Create a new consumer in the specified group.",
    "DELCONSUMER <key> <groupname> <consumer>",
    "    Remove the specified consumer.",
    "DESTROY <key> <groupname>",
    "    Remove the specified group.",
    "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    "    Set the current group ID and entries_read counter.",
    "SETDLQ <key> <groupname> MAXDELIVERIES <n> [DEADLETTER <dlqkey>]",
    "    (evstore) Change the group's dead-letter policy.",
};
const subcommands xgroup_sc = SUBCOMMANDS("xgroup", xgroup_subs, xgroup_help);

void cmd_xgroup(cmd_ctx *x)
{
    if (subcommand_help(x, &xgroup_sc))
        return;
    bool create = arg_is(x, 1, "CREATE") && x->argc >= 5 && x->argc <= 12;
    bool setid = arg_is(x, 1, "SETID") && (x->argc == 5 || x->argc == 7);
    bool destroy = arg_is(x, 1, "DESTROY") && x->argc == 4;
    bool mkcons = arg_is(x, 1, "CREATECONSUMER") && x->argc == 5;
    bool delcons = arg_is(x, 1, "DELCONSUMER") && x->argc == 5;
    bool setdlq = arg_is(x, 1, "SETDLQ") && (x->argc == 6 || x->argc == 8);
    if (!(create || setid || destroy || mkcons || delcons || setdlq)) {
        xgroup_usage_error(x, "XGROUP");
        return;
    }
    evs_group_op op;
    evs_group_op_init(&op, EVS_GROUP_CREATE);
    op.stream = key_of(&x->argv[2]);
    op.group = key_of(&x->argv[3]);
    if (create) {
        for (size_t i = 5; i < x->argc;) {
            if (arg_is(x, i, "MKSTREAM")) {
                op.mkstream = true;
                i++;
            } else if (arg_is(x, i, "ENTRIESREAD") && i + 1 < x->argc) {
                if (!entries_read_arg(x, i + 1, &op.entries_read))
                    return;
                i += 2;
            } else if (arg_is(x, i, "MAXDELIVERIES") && i + 1 < x->argc) {
                if (!max_deliveries_arg(x, i + 1, &op.max_deliveries))
                    return;
                i += 2;
            } else if (arg_is(x, i, "DEADLETTER") && i + 1 < x->argc) {
                op.dlq = key_of(&x->argv[i + 1]);
                i += 2;
            } else {
                xgroup_usage_error(x, "XGROUP");
                return;
            }
        }
    } else if (setid && x->argc == 7) {
        if (!arg_is(x, 5, "ENTRIESREAD")) {
            xgroup_usage_error(x, "XGROUP");
            return;
        }
        if (!entries_read_arg(x, 6, &op.entries_read))
            return;
    } else if (setdlq) {
        if (!arg_is(x, 4, "MAXDELIVERIES") || (x->argc == 8 && !arg_is(x, 6, "DEADLETTER"))) {
            xgroup_usage_error(x, "XGROUP");
            return;
        }
        if (!max_deliveries_arg(x, 5, &op.max_deliveries))
            return;
        if (x->argc == 8)
            op.dlq = key_of(&x->argv[7]);
    }
    evs_store *st = server_store(x->srv);
    evs_stream_info info;
    bool exists = evs_stream_info_get(st, op.stream, &info) == 0;
    if (!exists && !(create && op.mkstream)) {
        reply_error_done(x, "ERR The XGROUP subcommand requires the key to exist. Note that for "
                            "CREATE you may want to use the MKSTREAM option to create an empty "
                            "stream automatically.");
        return;
    }
    if ((setid || mkcons || delcons || setdlq) && !group_exists(st, op.stream, op.group, NULL)) {
        resp_out_error(&x->r->out, "NOGROUP No such consumer group '%.*s' for key name '%.*s'",
                       (int)x->argv[3].len, x->argv[3].ptr, (int)x->argv[2].len, x->argv[2].ptr);
        reply_done(x);
        return;
    }
    if (create || setid) {
        const resp_arg *id = &x->argv[4];
        if (id->len == 1 && id->ptr[0] == '$') {
            op.id_is_last = true;
        } else if (!parse_id(id, 0, &op.id)) {
            reply_error_done(x, ERR_ID);
            return;
        }
    }
    enum reply_kind kind = RK_OK;
    if (setid) {
        op.cmd = EVS_GROUP_SETID;
    } else if (setdlq) {
        op.cmd = EVS_GROUP_SETDLQ;
    } else if (destroy) {
        op.cmd = EVS_GROUP_DESTROY;
        kind = RK_INT;
    } else if (mkcons || delcons) {
        op.cmd = mkcons ? EVS_GROUP_CREATECONSUMER : EVS_GROUP_DELCONSUMER;
        op.consumer = key_of(&x->argv[4]);
        kind = RK_INT;
    }
    run_op(x, &op, kind);
}

/* ---- XACK, XCLAIM, XAUTOCLAIM ------------------------------------------------------------ */

void cmd_xack(cmd_ctx *x)
{
    evs_group_op op;
    evs_group_op_init(&op, EVS_GROUP_ACK);
    op.stream = key_of(&x->argv[1]);
    op.group = key_of(&x->argv[2]);
    if (!group_exists(server_store(x->srv), op.stream, op.group, NULL)) {
        /* no key or group: nothing to acknowledge, whatever the IDs (Redis looks first) */
        resp_out_int(&x->r->out, 0);
        reply_done(x);
        return;
    }
    evs_id *ids = parse_ids(x, 3);
    if (!ids)
        return;
    op.ids = ids;
    op.nids = x->argc - 3;
    run_op_hold(x, &op, RK_INT, true);
    free(ids);
}

static bool min_idle_arg(cmd_ctx *x, size_t i, const char *cmd, uint64_t *out)
{
    long long v;
    if (!arg_ll(&x->argv[i], &v)) {
        resp_out_error(&x->r->out, "ERR Invalid min-idle-time argument for %s", cmd);
        reply_done(x);
        return false;
    }
    *out = v < 0 ? 0 : (uint64_t)v;
    return true;
}

/* XCLAIM/XAUTOCLAIM key group consumer min-idle-time ... */
static void claim_init(cmd_ctx *x, evs_group_cmd cmd, evs_group_op *op)
{
    evs_group_op_init(op, cmd);
    op->stream = key_of(&x->argv[1]);
    op->group = key_of(&x->argv[2]);
    op->consumer = key_of(&x->argv[3]);
}

/* false once answered (NOGROUP) */
static bool claim_group_ok(cmd_ctx *x, const evs_group_op *op)
{
    if (group_exists(server_store(x->srv), op->stream, op->group, NULL))
        return true;
    reply_nogroup(x, &x->argv[1], &x->argv[2], "");
    return false;
}

void cmd_xclaim(cmd_ctx *x)
{
    evs_group_op op;
    claim_init(x, EVS_GROUP_CLAIM, &op);
    if (!claim_group_ok(x, &op) || !min_idle_arg(x, 4, "XCLAIM", &op.min_idle_ms))
        return; /* (Redis: the group first, then the arguments) */
    size_t j = 5;
    evs_id *ids = malloc((x->argc - 5) * sizeof *ids);
    if (!ids) {
        reply_error_done(x, "ERR out of memory");
        return;
    }
    while (j < x->argc && parse_id(&x->argv[j], 0, &ids[j - 5]))
        j++;
    op.ids = ids;
    op.nids = j - 5;
    for (; j < x->argc; j++) {
        bool more = j + 1 < x->argc;
        long long v;
        const char *bad = NULL;
        if (arg_is(x, j, "FORCE")) {
            op.force = true;
        } else if (arg_is(x, j, "JUSTID")) {
            op.justid = true;
        } else if (arg_is(x, j, "IDLE") && more) {
            if (!arg_ll(&x->argv[++j], &v))
                bad = "ERR Invalid IDLE option argument for XCLAIM";
            else
                op.set_idle_ms = v < 0 ? 0 : v, op.set_time_ms = -1;
        } else if (arg_is(x, j, "TIME") && more) {
            if (!arg_ll(&x->argv[++j], &v))
                bad = "ERR Invalid TIME option argument for XCLAIM";
            else
                op.set_time_ms = v, op.set_idle_ms = -1; /* < 0: now, as Redis */
        } else if (arg_is(x, j, "RETRYCOUNT") && more) {
            if (!arg_ll(&x->argv[++j], &v))
                bad = "ERR Invalid RETRYCOUNT option argument for XCLAIM";
            else
                op.retrycount = v < 0 ? -1 : v; /* < 0: not given (count + 1), as Redis */
        } else if (arg_is(x, j, "LASTID") && more) {
            if (!parse_id(&x->argv[++j], 0, &op.lastid))
                bad = ERR_ID;
            op.has_lastid = true;
        } else {
            resp_out_error(&x->r->out, "ERR Unrecognized XCLAIM option '%.*s'",
                           (int)x->argv[j].len, x->argv[j].ptr);
            reply_done(x);
            free(ids);
            return;
        }
        if (bad) {
            reply_error_done(x, bad);
            free(ids);
            return;
        }
    }
    op.max_bytes = resp_out_limit() / 2; /* over it: refused before anything is claimed */
    run_op(x, &op, RK_CLAIM);
    free(ids);
}

void cmd_xautoclaim(cmd_ctx *x)
{
    evs_group_op op; /* (Redis: every argument first, then the group) */
    claim_init(x, EVS_GROUP_AUTOCLAIM, &op);
    if (!min_idle_arg(x, 4, "XAUTOCLAIM", &op.min_idle_ms))
        return;
    if (!parse_bound(x, &x->argv[5], false, &op.id))
        return;
    op.count = 100;
    for (size_t j = 6; j < x->argc; j++) {
        long long v;
        if (arg_is(x, j, "COUNT") && j + 1 < x->argc) {
            if (!arg_ll(&x->argv[j + 1], &v) || v < 1 || v > (long long)(INT64_MAX / 10)) {
                reply_error_done(x, "ERR COUNT must be > 0");
                return;
            }
            op.count = (uint64_t)v;
            j++;
        } else if (arg_is(x, j, "JUSTID")) {
            op.justid = true;
        } else {
            reply_error_done(x, ERR_SYNTAX);
            return;
        }
    }
    op.max_bytes = resp_out_limit() / 2; /* as XREADGROUP's: fewer, never an error after */
    if (claim_group_ok(x, &op))
        run_op(x, &op, RK_AUTOCLAIM);
}

/* ---- XPENDING ------------------------------------------------------------------------------ */

struct pend_out {
    resp_out *o;
    size_t n;
    uint64_t now;
};

static int pend_one(void *arg, const evs_pending_info *p)
{
    struct pend_out *po = arg;
    resp_out_array(po->o, 4);
    out_id(po->o, p->id);
    resp_out_bulk(po->o, p->consumer.ptr, p->consumer.len);
    resp_out_int(po->o, (long long)(po->now > p->delivered_ms ? po->now - p->delivered_ms : 0));
    resp_out_int(po->o, (long long)p->deliveries);
    po->n++;
    return 0;
}

static int cons_pending(void *arg, const evs_consumer_info *c)
{
    struct pend_out *po = arg;
    if (!c->pending)
        return 0;
    char buf[24];
    resp_out_array(po->o, 2);
    resp_out_bulk(po->o, c->name.ptr, c->name.len);
    resp_out_bulk(po->o, buf, (size_t)snprintf(buf, sizeof buf, "%" PRIu64, c->pending));
    po->n++;
    return 0;
}

void cmd_xpending(cmd_ctx *x)
{
    if (x->argc != 3 && (x->argc < 6 || x->argc > 9)) {
        reply_error_done(x, ERR_SYNTAX);
        return;
    }
    long long minidle = 0, count = 0;
    evs_id start = EVS_ID_MIN, end = EVS_ID_MAX;
    evs_slice consumer = {NULL, 0};
    if (x->argc >= 6) {
        size_t si = 3;
        if (arg_is(x, 3, "IDLE")) {
            if (!arg_ll(&x->argv[4], &minidle)) {
                reply_error_done(x, ERR_INT);
                return;
            }
            if (x->argc < 8) {
                reply_error_done(x, ERR_SYNTAX);
                return;
            }
            si += 2;
        }
        if (!arg_ll(&x->argv[si + 2], &count)) {
            reply_error_done(x, ERR_INT);
            return;
        }
        if (count < 0)
            count = 0;
        if (!parse_bound(x, &x->argv[si], false, &start) ||
            !parse_bound(x, &x->argv[si + 1], true, &end))
            return;
        if (si + 3 < x->argc)
            consumer = key_of(&x->argv[si + 3]);
    }
    evs_store *st = server_store(x->srv);
    evs_slice key = key_of(&x->argv[1]), group = key_of(&x->argv[2]);
    evs_group_info gi;
    if (!group_exists(st, key, group, &gi)) {
        reply_nogroup(x, &x->argv[1], &x->argv[2], "");
        return;
    }
    resp_out *o = &x->r->out;
    struct pend_out po = {NULL, 0, (uint64_t)0};
    resp_out tmp;
    resp_out_init(&tmp, o->proto);
    po.o = &tmp;
    if (x->argc == 3) {
        resp_out_array(o, 4);
        resp_out_int(o, (long long)gi.pending);
        if (!gi.pending) {
            resp_out_null(o);
            resp_out_null(o);
            resp_out_null_array(o);
        } else {
            out_id(o, gi.pending_first);
            out_id(o, gi.pending_last);
            evs_consumer_list(st, key, group, cons_pending, &po);
            resp_out_array(o, po.n);
            resp_out_cat(o, &tmp);
        }
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        po.now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        if (count > 0)
            evs_pending_list(st, key, group, start, end, (uint64_t)count,
                             minidle > 0 ? (uint64_t)minidle : 0, consumer, pend_one, &po);
        resp_out_array(o, po.n);
        resp_out_cat(o, &tmp);
    }
    resp_out_release(&tmp);
    reply_done(x);
}

/* ---- XINFO GROUPS / CONSUMERS ------------------------------------------------------------- */

struct ginfo_out {
    resp_out *o;
    size_t n;
};

/* Redis's six fields; a group with a dead-letter policy (ours) adds three after them. */
static void out_group_info(resp_out *o, const evs_group_info *g)
{
    resp_out_map(o, g->max_deliveries ? 9 : 6);
    resp_out_cstr(o, "name");
    resp_out_bulk(o, g->name.ptr, g->name.len);
    resp_out_cstr(o, "consumers");
    resp_out_int(o, (long long)g->consumers);
    resp_out_cstr(o, "pending");
    resp_out_int(o, (long long)g->pending);
    resp_out_cstr(o, "last-delivered-id");
    out_id(o, g->last_delivered);
    resp_out_cstr(o, "entries-read");
    if (g->entries_read == EVS_ENTRIES_READ_NONE)
        resp_out_null(o);
    else
        resp_out_int(o, (long long)g->entries_read);
    resp_out_cstr(o, "lag");
    if (g->lag_known)
        resp_out_int(o, (long long)g->lag);
    else
        resp_out_null(o);
    if (g->max_deliveries) {
        resp_out_cstr(o, "max-deliveries");
        resp_out_int(o, (long long)g->max_deliveries);
        resp_out_cstr(o, "dead-letter-key");
        resp_out_bulk(o, g->dlq.ptr, g->dlq.len);
        resp_out_cstr(o, "dead-letters");
        resp_out_int(o, (long long)g->dead_letters);
    }
}

static int ginfo_one(void *arg, const evs_group_info *g)
{
    struct ginfo_out *go = arg;
    out_group_info(go->o, g);
    go->n++;
    return 0;
}

void xinfo_groups(cmd_ctx *x)
{
    resp_out tmp;
    resp_out_init(&tmp, x->r->out.proto);
    struct ginfo_out go = {&tmp, 0};
    int rc = evs_group_list(server_store(x->srv), key_of(&x->argv[2]), 0, ginfo_one, &go);
    if (rc == EVS_ENOTFOUND) {
        resp_out_release(&tmp);
        reply_error_done(x, "ERR no such key");
        return;
    }
    resp_out_array(&x->r->out, go.n);
    resp_out_cat(&x->r->out, &tmp);
    resp_out_release(&tmp);
    reply_done(x);
}

struct cinfo_out {
    resp_out *o;
    size_t n;
    uint64_t now;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int cinfo_one(void *arg, const evs_consumer_info *c)
{
    struct cinfo_out *co = arg;
    resp_out_map(co->o, 3);
    resp_out_cstr(co->o, "name");
    resp_out_bulk(co->o, c->name.ptr, c->name.len);
    resp_out_cstr(co->o, "pending");
    resp_out_int(co->o, (long long)c->pending);
    resp_out_cstr(co->o, "idle");
    resp_out_int(co->o, (long long)(co->now > c->seen_ms ? co->now - c->seen_ms : 0));
    co->n++;
    return 0;
}

void xinfo_consumers(cmd_ctx *x)
{
    resp_out tmp;
    resp_out_init(&tmp, x->r->out.proto);
    struct cinfo_out co = {&tmp, 0, now_ms()};
    int rc = evs_consumer_list(server_store(x->srv), key_of(&x->argv[2]), key_of(&x->argv[3]),
                               cinfo_one, &co);
    if (rc == EVS_ENOTFOUND || rc == EVS_ENOGROUP) {
        resp_out_release(&tmp);
        if (rc == EVS_ENOTFOUND) {
            reply_error_done(x, "ERR no such key");
        } else {
            resp_out_error(&x->r->out, "NOGROUP No such consumer group '%.*s' for key name '%.*s'",
                           (int)x->argv[3].len, x->argv[3].ptr, (int)x->argv[2].len,
                           x->argv[2].ptr);
            reply_done(x);
        }
        return;
    }
    resp_out_array(&x->r->out, co.n);
    resp_out_cat(&x->r->out, &tmp);
    resp_out_release(&tmp);
    reply_done(x);
}

static int count_one(void *arg, const evs_group_info *g)
{
    (void)g;
    (*(size_t *)arg)++;
    return 0;
}

size_t xinfo_group_count(evs_store *st, evs_slice key)
{
    size_t n = 0;
    evs_group_list(st, key, 0, count_one, &n);
    return n;
}

/* XINFO STREAM FULL's groups: each with its PEL (COUNT-limited) and consumers. */
typedef struct full_ctx {
    resp_out *o;
    evs_store *st;
    evs_slice key;
    long long count;
    uint64_t now;
    size_t n;
    resp_out *inner;
    evs_slice cons;
} full_ctx;

struct name_list {
    evs_slice *v;
    uint8_t **mem;
    size_t n, cap;
};

static int collect_group(void *arg, const evs_group_info *g)
{
    struct name_list *l = arg;
    if (l->n == l->cap) {
        size_t c = l->cap ? l->cap * 2 : 8;
        evs_slice *v = realloc(l->v, c * sizeof *v);
        uint8_t **m = realloc(l->mem, c * sizeof *m);
        if (v)
            l->v = v;
        if (m)
            l->mem = m;
        if (!v || !m)
            return -12;
        l->cap = c;
    }
    uint8_t *copy = malloc(g->name.len ? g->name.len : 1);
    if (!copy)
        return -12;
    memcpy(copy, g->name.ptr, g->name.len);
    l->mem[l->n] = copy;
    l->v[l->n++] = (evs_slice){copy, g->name.len};
    return 0;
}

static int full_pel(void *arg, const evs_pending_info *p)
{
    full_ctx *f = arg;
    resp_out_array(f->inner, f->cons.ptr ? 3 : 4);
    out_id(f->inner, p->id);
    if (!f->cons.ptr)
        resp_out_bulk(f->inner, p->consumer.ptr, p->consumer.len);
    resp_out_int(f->inner, (long long)p->delivered_ms);
    resp_out_int(f->inner, (long long)p->deliveries);
    f->n++;
    return 0;
}

static void out_pel(full_ctx *f, evs_slice group, evs_slice consumer)
{
    resp_out tmp;
    resp_out_init(&tmp, f->o->proto);
    f->inner = &tmp;
    f->n = 0;
    f->cons = consumer;
    evs_pending_list(f->st, f->key, group, EVS_ID_MIN, EVS_ID_MAX,
                     f->count > 0 ? (uint64_t)f->count : 0, 0, consumer, full_pel, f);
    resp_out_array(f->o, f->n);
    resp_out_cat(f->o, &tmp);
    resp_out_release(&tmp);
}

struct cons_list {
    struct name_list names;
    uint64_t *seen, *pending;
};

static int collect_cons(void *arg, const evs_consumer_info *c)
{
    struct cons_list *cl = arg;
    evs_group_info g = {.name = c->name};
    int rc = collect_group(&cl->names, &g);
    if (rc)
        return rc;
    uint64_t *s = realloc(cl->seen, cl->names.cap * sizeof *s);
    if (s)
        cl->seen = s;
    uint64_t *p = realloc(cl->pending, cl->names.cap * sizeof *p);
    if (p)
        cl->pending = p;
    if (!s || !p)
        return -12;
    cl->seen[cl->names.n - 1] = c->seen_ms;
    cl->pending[cl->names.n - 1] = c->pending;
    return 0;
}

static void names_free(struct name_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->mem[i]);
    free(l->mem);
    free(l->v);
}

void xinfo_full_groups(resp_out *o, evs_store *st, evs_slice key, long long count)
{
    struct name_list groups = {0};
    evs_group_list(st, key, 0, collect_group, &groups);
    full_ctx f = {o, st, key, count, now_ms(), 0, NULL, {NULL, 0}};
    resp_out_array(o, groups.n);
    for (size_t i = 0; i < groups.n; i++) {
        evs_group_info gi = {0};
        group_exists(st, key, groups.v[i], &gi);
        resp_out_map(o, 7);
        resp_out_cstr(o, "name");
        resp_out_bulk(o, groups.v[i].ptr, groups.v[i].len);
        resp_out_cstr(o, "last-delivered-id");
        out_id(o, gi.last_delivered);
        resp_out_cstr(o, "entries-read");
        if (gi.entries_read == EVS_ENTRIES_READ_NONE)
            resp_out_null(o);
        else
            resp_out_int(o, (long long)gi.entries_read);
        resp_out_cstr(o, "lag");
        if (gi.lag_known)
            resp_out_int(o, (long long)gi.lag);
        else
            resp_out_null(o);
        resp_out_cstr(o, "pel-count");
        resp_out_int(o, (long long)gi.pending);
        resp_out_cstr(o, "pending");
        out_pel(&f, groups.v[i], (evs_slice){NULL, 0});
        struct cons_list cl = {0};
        evs_consumer_list(st, key, groups.v[i], collect_cons, &cl);
        resp_out_cstr(o, "consumers");
        resp_out_array(o, cl.names.n);
        for (size_t c = 0; c < cl.names.n; c++) {
            resp_out_map(o, 4);
            resp_out_cstr(o, "name");
            resp_out_bulk(o, cl.names.v[c].ptr, cl.names.v[c].len);
            resp_out_cstr(o, "seen-time");
            resp_out_int(o, (long long)cl.seen[c]);
            resp_out_cstr(o, "pel-count");
            resp_out_int(o, (long long)cl.pending[c]);
            resp_out_cstr(o, "pending");
            out_pel(&f, groups.v[i], cl.names.v[c]);
        }
        names_free(&cl.names);
        free(cl.seen);
        free(cl.pending);
    }
    names_free(&groups);
}

/* ---- XREADGROUP --------------------------------------------------------------------------- */

typedef struct xrg {
    struct xrg *next, **pprev;    /* parked list                                            */
    server *srv;
    pending_t *p;
    waitsync *sync;               /* inside EXEC (see run_op)                                */
    struct event *timer;
    uint8_t *mem;
    evs_slice group, consumer;
    size_t nkeys;
    evs_slice *keys;
    uint32_t *hash;               /* the keys' wake_hash (wake.h)                            */
    bool *newonly;
    evs_id *after;
    long long count;
    bool noack, block, in_flight, timed_out;
    bool dead;                    /* it dead-lettered: --ack all answers once readers see it */
    /* the answer */
    int rc;
    evs_error err;
    evs_id **ids;
    size_t *nids;
} xrg;

static xrg *parked;

static void xrg_free(xrg *q)
{
    if (!q)
        return;
    if (q->timer)
        event_free(q->timer);
    for (size_t i = 0; q->ids && i < q->nkeys; i++)
        free(q->ids[i]);
    free(q->ids);
    free(q->nids);
    free(q->keys);
    free(q->hash);
    free(q->newonly);
    free(q->after);
    free(q->mem);
    free(q);
}

static void park(xrg *q)
{
    q->next = parked;
    if (parked)
        parked->pprev = &q->next;
    q->pprev = &parked;
    parked = q;
}

static void unpark(xrg *q)
{
    if (q->pprev) {
        *q->pprev = q->next;
        if (q->next)
            q->next->pprev = q->pprev;
        q->pprev = NULL;
        q->next = NULL;
    }
}

size_t groups_blocked(void)
{
    size_t n = 0;
    for (xrg *q = parked; q; q = q->next)
        n++;
    return n;
}

static void xrg_done(void *arg, int rc, const evs_group_result *res, size_t n,
                     const evs_error *err)
{
    xrg *q = arg;
    q->rc = rc;
    if (err)
        q->err = *err;
    for (size_t i = 0; !rc && i < n && i < q->nkeys; i++) {
        q->dead |= res[i].dead_lettered > 0;
        free(q->ids[i]);
        q->nids[i] = res[i].nids;
        q->ids[i] = malloc((res[i].nids ? res[i].nids : 1) * sizeof **q->ids);
        if (!q->ids[i])
            q->rc = -12, q->nids[i] = 0;
        else if (res[i].nids)
            memcpy(q->ids[i], res[i].ids, res[i].nids * sizeof **q->ids);
    }
    if (q->sync)
        sync_signal(q->sync);
    else
        server_complete(q->p);
}

/* Queue the read; its completion comes through q->p. */
static void xrg_submit(xrg *q)
{
    evs_group_op *ops = calloc(q->nkeys, sizeof *ops);
    int rc = ops ? 0 : -12;
    for (size_t i = 0; ops && i < q->nkeys; i++) {
        evs_group_op_init(&ops[i], EVS_GROUP_READ);
        ops[i].stream = q->keys[i];
        ops[i].group = q->group;
        ops[i].consumer = q->consumer;
        ops[i].new_only = q->newonly[i];
        ops[i].id = q->after[i];
        ops[i].noack = q->noack;
        ops[i].count = q->count > 0 ? (uint64_t)q->count : 0;
        /* half the reply limit over the streams: a reply of entries, new or pending, stays
         * under it (the rest is the reply's own framing) instead of being refused after the
         * deliveries were counted */
        ops[i].max_bytes = resp_out_limit() / 2 / q->nkeys;
    }
    q->in_flight = true;
    if (!rc)
        rc = evs_group_submit(server_store(q->srv), ops, q->nkeys, xrg_done, q, &q->err);
    free(ops);
    if (rc) {
        q->rc = rc;
        if (q->sync)
            sync_signal(q->sync);
        else
            server_complete(q->p);
    }
}

/* What a parked read should do now: 1 read, 0 keep waiting, < 0 answer with q->rc. */
static int xrg_probe(xrg *q)
{
    evs_store *st = server_store(q->srv);
    int ready = 0;
    for (size_t i = 0; i < q->nkeys; i++) {
        evs_stream_info info;
        evs_group_info gi;
        if (!group_exists(st, q->keys[i], q->group, &gi)) {
            q->rc = evs_stream_info_get(st, q->keys[i], &info) ? EVS_ENOTFOUND : EVS_ENOGROUP;
            return -1;
        }
        if (evs_stream_info_get(st, q->keys[i], &info))
            continue; /* created, no entry visible yet (--ack all holds it): keep waiting */
        if (info.length && evs_id_cmp(info.last_id, gi.last_delivered) > 0)
            ready = 1;
    }
    return ready;
}

static bool xrg_fill(pending_t *p, reply *r, void *result)
{
    xrg *q = result;
    if (p && pending_orphaned(p)) {
        unpark(q);
        xrg_free(q);
        return true;
    }
    if (p && q->rc == 0 && q->dead) { /* the dead-letter stream's new entries, first */
        q->dead = false;
        pending_t *again = repl_hold_visible(q->srv, p, xrg_fill, q);
        if (again) {
            q->p = again;
            return false;
        }
    }
    resp_out *o = &r->out;
    q->in_flight = false;
    if (q->rc == EVS_ENOGROUP && q->block) {
        resp_out_error(o, "NOGROUP the consumer group this client was blocked on no longer exists");
    } else if (q->rc == EVS_ENOTFOUND && q->block) {
        resp_out_error(o, "UNBLOCKED the stream key no longer exists");
    } else if (q->rc == EVS_ENOGROUP || q->rc == EVS_ENOTFOUND) {
        resp_out_error(o, "NOGROUP No such key '%.*s' or consumer group '%.*s' in XREADGROUP "
                          "with GROUP option",
                       (int)q->keys[0].len, (const char *)q->keys[0].ptr, (int)q->group.len,
                       (const char *)q->group.ptr);
    } else if (q->rc) {
        out_group_error(o, q->rc, &q->err);
    } else {
        size_t with = 0;
        for (size_t i = 0; i < q->nkeys; i++)
            with += q->nids[i] > 0 || !q->newonly[i]; /* history is always answered */
        if (with == 0 && q->block && !q->timed_out && p) {
            /* another consumer got the entries first: wait again */
            pending_t *again = server_hold_again(p, xrg_fill, q);
            if (again) {
                q->p = again;
                park(q);
                return false;
            }
        }
        if (with == 0) {
            resp_out_null_array(o);
        } else {
            evs_store *st = server_store(q->srv);
            if (o->proto == 3)
                resp_out_map(o, with);
            else
                resp_out_array(o, with);
            for (size_t i = 0; i < q->nkeys; i++) {
                if (q->nids[i] == 0 && q->newonly[i])
                    continue;
                if (o->proto == 2)
                    resp_out_array(o, 2);
                resp_out_bulk(o, q->keys[i].ptr, q->keys[i].len);
                if (q->nids[i] == 0) {
                    resp_out_array(o, 0);
                } else if (q->newonly[i]) {
                    out_delivered(o, st, q->keys[i], q->ids[i], q->nids[i]);
                } else {
                    resp_out_array(o, q->nids[i]);
                    for (size_t k = 0; k < q->nids[i]; k++)
                        out_entry_or_nil(o, st, q->keys[i], q->ids[i][k], true);
                }
            }
        }
    }
    unpark(q);
    xrg_free(q);
    return true;
}

static void xrg_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    xrg *q = arg;
    q->timed_out = true;
    if (!q->in_flight) {
        unpark(q);
        server_complete(q->p);
    }
}

void groups_on_visible(const wake_set *ws)
{
    xrg *q = parked;
    while (q) {
        xrg *next = q->next;
        if (!wake_any(ws, q->hash, q->nkeys)) { /* none of its streams changed (K1) */
            q = next;
            continue;
        }
        int r = pending_orphaned(q->p) ? -1 : xrg_probe(q);
        if (r != 0) {
            unpark(q);
            if (r > 0)
                xrg_submit(q);
            else
                server_complete(q->p);
        }
        q = next;
    }
}

void groups_shutdown(void)
{
    while (parked) {
        xrg *q = parked;
        unpark(q);
        q->timed_out = true;
        server_complete(q->p);
    }
}

void cmd_xreadgroup(cmd_ctx *x)
{
    long long count = 0, block = -1;
    size_t streams = 0;
    const resp_arg *group = NULL, *consumer = NULL;
    bool noack = false;
    for (size_t i = 1; i < x->argc; i++) {
        size_t more = x->argc - i - 1;
        int o = read_option(x, &i, &block, &count);
        if (o < 0)
            return;
        if (o > 0) {
            continue;
        } else if (arg_is(x, i, "STREAMS") && more) {
            streams = i + 1;
            if ((x->argc - streams) % 2) {
                reply_error_done(x, "ERR Unbalanced XREAD list of streams: for each stream key "
                                    "an ID or '$' must be specified."); /* Redis 7.0's words */
                return;
            }
            break;
        } else if (arg_is(x, i, "GROUP") && more >= 2) {
            group = &x->argv[i + 1];
            consumer = &x->argv[i + 2];
            i += 2;
        } else if (arg_is(x, i, "NOACK")) {
            noack = true;
        } else {
            reply_error_done(x, ERR_SYNTAX);
            return;
        }
    }
    if (!streams) {
        reply_error_done(x, ERR_SYNTAX);
        return;
    }
    if (!group) {
        reply_error_done(x, "ERR Missing GROUP option for XREADGROUP");
        return;
    }
    size_t nk = (x->argc - streams) / 2, bytes = group->len + consumer->len;
    for (size_t i = 0; i < nk; i++)
        bytes += x->argv[streams + i].len;
    xrg *q = calloc(1, sizeof *q);
    if (q) {
        q->srv = x->srv;
        q->nkeys = nk;
        q->count = count;
        q->noack = noack;
        q->keys = calloc(nk, sizeof *q->keys);
        q->hash = calloc(nk, sizeof *q->hash);
        q->newonly = calloc(nk, sizeof *q->newonly);
        q->after = calloc(nk, sizeof *q->after);
        q->ids = calloc(nk, sizeof *q->ids);
        q->nids = calloc(nk, sizeof *q->nids);
        q->mem = malloc(bytes ? bytes : 1);
    }
    if (!q || !q->keys || !q->hash || !q->newonly || !q->after || !q->ids || !q->nids ||
        !q->mem) {
        xrg_free(q);
        reply_error_done(x, "ERR out of memory");
        return;
    }
    size_t off = 0;
    memcpy(q->mem, group->ptr, group->len);
    q->group = (evs_slice){q->mem, group->len};
    off += group->len;
    memcpy(q->mem + off, consumer->ptr, consumer->len);
    q->consumer = (evs_slice){q->mem + off, consumer->len};
    off += consumer->len;
    evs_store *st = server_store(x->srv);
    bool all_new = true;
    for (size_t i = 0; i < nk; i++) {
        const resp_arg *k = &x->argv[streams + i], *id = &x->argv[streams + nk + i];
        memcpy(q->mem + off, k->ptr, k->len);
        q->keys[i] = (evs_slice){q->mem + off, k->len};
        q->hash[i] = wake_hash(k->ptr, k->len);
        off += k->len;
        if (!group_exists(st, q->keys[i], q->group, NULL)) {
            reply_nogroup(x, k, group, " in XREADGROUP with GROUP option");
            xrg_free(q);
            return;
        }
        if (id->len == 1 && id->ptr[0] == '$') {
            reply_error_done(x, "ERR The $ ID is meaningless in the context of XREADGROUP: you "
                                "want to read the history of this consumer by specifying a "
                                "proper ID, or use the > ID to get new messages. The $ ID would "
                                "just return an empty result set.");
            xrg_free(q);
            return;
        }
        if (id->len == 1 && id->ptr[0] == '>') {
            q->newonly[i] = true;
        } else if (!parse_id(id, 0, &q->after[i])) {
            reply_error_done(x, ERR_ID);
            xrg_free(q);
            return;
        } else if (evs_id_cmp(q->after[i], EVS_ID_MAX) == 0) {
            q->newonly[i] = true; /* Redis reads ">" as this very ID: the two are one */
        }
        all_new &= q->newonly[i];
    }
    q->block = block >= 0 && all_new && !x->capture;
    if (x->capture) {
        waitsync ws = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
        q->sync = &ws;
        xrg_submit(q);
        sync_wait(x->srv, &ws);
        xrg_fill(NULL, x->r, q);
        reply_done(x);
        return;
    }
    q->p = server_hold(x, xrg_fill, q, false);
    if (!q->p) {
        xrg_free(q);
        reply_error_done(x, "ERR out of memory");
        return;
    }
    if (q->block && block > 0) {
        q->timer = evtimer_new(server_base(x->srv), xrg_timeout, q);
        struct timeval tv = {(time_t)(block / 1000), (suseconds_t)((block % 1000) * 1000)};
        evtimer_add(q->timer, &tv);
    }
    /* read at once (creating the consumer, as Redis does); an empty blocking read parks */
    xrg_submit(q);
}
