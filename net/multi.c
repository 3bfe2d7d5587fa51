/*
 * multi.c — MULTI / EXEC / DISCARD.
 *
 * Inside MULTI, commands are checked (known, arity, auth) and queued as copies; an error doom
 * the transaction (EXEC answers -EXECABORT), as in Redis. EXEC runs the queue in order:
 *
 *  - each run of consecutive XADDs becomes ONE evs_submit_each batch: one contiguous group of
 *    records in the log, written and fsynced together, all or none after a crash; an XADD the
 *    writer refuses (its ID, NOMKSTREAM on a missing stream) answers its own error or null and
 *    appends nothing, the others go on, as Redis runs them one by one;
 *  - any other queued command runs when everything before it is durable and visible, so it
 *    reads the transaction's own writes (with --ack all, visible means held by --min-replicas
 *    followers: the EXEC waits for them first; if they do not confirm in --ack-timeout it
 *    runs the rest anyway and answers -NOREPLICAS, as below);
 *  - the EXEC reply (an array with one element per queued command) is sent when the last part
 *    is done, and with --ack all once readers see what it wrote (exec_finish), so that the
 *    connection's next command reads it. Arguments an XADD cannot parse answer their own
 *    error and stay out of the batch, like Redis' per-command errors inside EXEC.
 *
 * WATCH records each key's evs_version (what readers see). EXEC answers a null array, running
 * nothing, when a watched key's version has moved by then; and the transaction's first XADD
 * batch carries the versions to the writer (evs_submit_watched), which refuses it, again
 * answered as a null array, when a write already queued by another client lands first. That
 * second check covers writes in flight at EXEC; it is made only when no other write command
 * (XDEL, XTRIM, DEL, XSETID, FLUSHALL, XRETENTION SET, a group command, ...) precedes the
 * first XADD in the queue, as those may change the version themselves (docs/resp.md).
 */
#include "commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct qcmd {
    size_t argc;
    resp_arg *argv;
    uint8_t *mem;
} qcmd;

typedef struct multi_state {
    bool active, dirty;
    qcmd *q;
    size_t n, cap;
    evs_watch *w;    /* WATCHed keys (names owned), kept across MULTI until EXEC/DISCARD/UNWATCH */
    size_t nw;
} multi_state;

/* Forget a list of watched keys (and free their names). */
static void unwatch(evs_watch **w, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((void *)(*w)[i].stream.ptr);
    free(*w);
    *w = NULL;
    *n = 0;
}

static void queue_release(qcmd *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(q[i].argv);
        free(q[i].mem);
    }
    free(q);
}

static void state_free(void *p)
{
    multi_state *m = p;
    queue_release(m->q, m->n);
    unwatch(&m->w, &m->nw);
    free(m);
}

static multi_state *state(conn *c, bool create)
{
    void **slot = conn_cmd_state(c, CONN_SLOT_MULTI, state_free);
    if (!*slot && create)
        *slot = calloc(1, sizeof(multi_state));
    return *slot;
}

static void state_reset(multi_state *m)
{
    queue_release(m->q, m->n);
    m->q = NULL;
    m->n = m->cap = 0;
    m->active = m->dirty = false;
}

static bool is_cmd(const resp_arg *a, const char *name)
{
    size_t n = strlen(name);
    return a->len == n && strncasecmp((const char *)a->ptr, name, n) == 0;
}

bool multi_intercept(cmd_ctx *x, const command *cmd, const char *why)
{
    multi_state *m = state(x->c, false);
    if (!m || !m->active)
        return false;
    const resp_arg *name = &x->argv[0];
    if (cmd && (is_cmd(name, "exec") || is_cmd(name, "discard") || is_cmd(name, "multi") ||
                is_cmd(name, "quit") || is_cmd(name, "watch"))) {
        if (why) /* refused (its arity): as any refused command, EXEC then aborts */
            m->dirty = true;
        return false; /* run now (or answered with why by the caller) */
    }
    if (!why && cmd && is_cmd(name, "shutdown"))
        why = "ERR Command not allowed inside a transaction"; /* Redis' NO_MULTI */
    if (why) {
        m->dirty = true;
        resp_out_error(&x->r->out, "%s", why);
        reply_done(x);
        return true;
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        qcmd *q = realloc(m->q, cap * sizeof *q);
        if (!q)
            goto oom;
        m->q = q;
        m->cap = cap;
    }
    size_t bytes = 0;
    for (size_t i = 0; i < x->argc; i++)
        bytes += x->argv[i].len;
    qcmd *q = &m->q[m->n];
    q->argc = x->argc;
    q->argv = malloc(x->argc * sizeof *q->argv);
    q->mem = malloc(bytes ? bytes : 1);
    if (!q->argv || !q->mem) {
        free(q->argv);
        free(q->mem);
        goto oom;
    }
    size_t off = 0;
    for (size_t i = 0; i < x->argc; i++) {
        memcpy(q->mem + off, x->argv[i].ptr, x->argv[i].len);
        q->argv[i] = (resp_arg){q->mem + off, x->argv[i].len};
        off += x->argv[i].len;
    }
    m->n++;
    resp_out_simple(&x->r->out, "QUEUED");
    reply_done(x);
    return true;
oom:
    m->dirty = true;
    resp_out_error(&x->r->out, "ERR out of memory");
    reply_done(x);
    return true;
}

void cmd_multi(cmd_ctx *x)
{
    multi_state *m = state(x->c, true);
    if (!m) {
        resp_out_error(&x->r->out, "ERR out of memory");
    } else if (m->active) {
        resp_out_error(&x->r->out, "ERR MULTI calls can not be nested");
    } else {
        m->active = true;
        resp_out_simple(&x->r->out, "OK");
    }
    reply_done(x);
}

void multi_abort(cmd_ctx *x, const char *why)
{
    multi_state *m = state(x->c, false);
    if (m) {
        state_reset(m);
        unwatch(&m->w, &m->nw);
    }
    if (!strncmp(why, "ERR ", 4))
        why += 4;
    resp_out_error(&x->r->out, "EXECABORT Transaction discarded because of: %s", why);
    reply_done(x);
}

void cmd_discard(cmd_ctx *x)
{
    multi_state *m = state(x->c, false);
    if (!m || !m->active) {
        resp_out_error(&x->r->out, "ERR DISCARD without MULTI");
    } else {
        state_reset(m);
        unwatch(&m->w, &m->nw);
        resp_out_simple(&x->r->out, "OK");
    }
    reply_done(x);
}

void cmd_watch(cmd_ctx *x)
{
    multi_state *m = state(x->c, true);
    if (m && m->active) {
        resp_out_error(&x->r->out, "ERR WATCH inside MULTI is not allowed");
        reply_done(x);
        return;
    }
    evs_watch *w = m ? realloc(m->w, (m->nw + x->argc - 1) * sizeof *w) : NULL;
    if (!w) {
        resp_out_error(&x->r->out, "ERR out of memory");
        reply_done(x);
        return;
    }
    m->w = w;
    for (size_t i = 1; i < x->argc; i++) {
        uint8_t *name = malloc(x->argv[i].len ? x->argv[i].len : 1);
        if (!name) {
            resp_out_error(&x->r->out, "ERR out of memory");
            reply_done(x);
            return;
        }
        memcpy(name, x->argv[i].ptr, x->argv[i].len);
        w[m->nw].stream = (evs_slice){name, x->argv[i].len};
        evs_stream_version(server_store(x->srv), w[m->nw].stream, &w[m->nw].version);
        m->nw++;
    }
    resp_out_simple(&x->r->out, "OK");
    reply_done(x);
}

void cmd_unwatch(cmd_ctx *x)
{
    multi_state *m = state(x->c, false);
    if (m)
        unwatch(&m->w, &m->nw);
    resp_out_simple(&x->r->out, "OK");
    reply_done(x);
}

/* ---- EXEC --------------------------------------------------------------------------------- */

typedef struct exec_job {
    server *srv;
    conn *c;
    qcmd *q;
    size_t n, i;
    resp_out results;
    /* the batch in flight: queued commands [b0, b1) */
    size_t b0, b1;
    const char **perr;  /* per command of the batch: parse error, or NULL (in the batch) */
    evs_id *ids;        /* ids of the batch's appends, in order                          */
    int *rcs;           /* ... and each one's result (evs_submit_each)                   */
    size_t nids;
    int rc;
    evs_error err;
    pending_t *p;
    evs_watch *watch;   /* WATCHed keys, until the first XADD batch carries them */
    size_t nwatch;
    bool appended;      /* an XADD batch of this EXEC was written                        */
    bool wrote;         /* another write ran (XDEL, XTRIM, DEL, XGROUP, XACK, ...)        */
    bool replicating;   /* --ack all: all done here, waiting for the followers' fsync     */
    bool midwait;       /* --ack all: waiting for them before a command that reads          */
    bool short_;        /* ... and such a wait timed out: EXEC answers -NOREPLICAS        */
    long long got;      /* ... how many had it when the wait ended                       */
} exec_job;

/* Has any WATCHed key moved since WATCH (as readers see it)? */
static bool watch_broken(server *srv, const evs_watch *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        evs_version now;
        evs_stream_version(server_store(srv), w[i].stream, &now);
        if (!evs_version_eq(now, w[i].version))
            return true;
    }
    return false;
}

static void job_free(exec_job *j)
{
    queue_release(j->q, j->n);
    resp_out_release(&j->results);
    free(j->perr);
    free(j->ids);
    free(j->rcs);
    unwatch(&j->watch, &j->nwatch);
    free(j);
}

/* A lone XADD that trims (evs_submit_watched): rc is its own result. */
static void batch_done(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err)
{
    exec_job *j = arg;
    j->rc = rc;
    if (!rc)
        memcpy(j->ids, ids, n * sizeof *ids);
    if (err)
        j->err = *err;
    server_complete(j->p);
}

/* A run of XADDs (evs_submit_each): each one's result, as Redis runs them one by one. */
static void batch_each_done(void *arg, int rc, const int *rcs, const evs_id *ids, size_t n,
                            const evs_error *err)
{
    exec_job *j = arg;
    j->rc = rc;
    if (!rc) {
        memcpy(j->ids, ids, n * sizeof *ids);
        memcpy(j->rcs, rcs, n * sizeof *rcs);
    }
    if (err)
        j->err = *err;
    server_complete(j->p);
}

static bool exec_fill(pending_t *p, reply *r, void *res);

static void exec_replicated(void *arg, long long got);

/* --ack all, after a write (a batch of XADDs, or XDEL, XTRIM, DEL, XGROUP, ...): a command
 * other than XADD comes next, and it must read the transaction's writes, which readers here
 * see once the followers hold them (the store's visibility cap). True when a wait for them
 * started (exec_fill continues). */
static bool exec_wait_visible(exec_job *j, cmd_ctx *first, pending_t *prev)
{
    if (j->i >= j->n || is_cmd(&j->q[j->i].argv[0], "xadd"))
        return false;
    uint64_t end = repl_unseen_end(j->srv);
    if (!end)
        return false;
    const server_config *cfg = server_cfg(j->srv);
    j->midwait = true;
    j->got = 0;
    j->p = first ? server_hold(first, exec_fill, j, false) : server_hold_again(prev, exec_fill, j);
    if (!j->p) {
        j->midwait = false;
        return false;
    }
    if (repl_wait(j->srv, end, cfg->min_replicas, cfg->ack_timeout_ms, exec_replicated, j))
        server_complete(j->p); /* no wait possible: answered as a timeout */
    return true;
}

/* Run from j->i; true when the whole queue is done (the reply is written into r), false when a
 * batch was submitted and its completion will continue the run. */
static bool exec_step(exec_job *j, reply *r, cmd_ctx *first, pending_t *prev)
{
    while (j->i < j->n) {
        qcmd *q = &j->q[j->i];
        if (!is_cmd(&q->argv[0], "xadd")) {
            const command *cmd = commands_find(&q->argv[0]);
            reply tr;
            memset(&tr, 0, sizeof tr);
            resp_out_init(&tr.out, j->results.proto);
            cmd_ctx y = {j->srv, j->c, &tr, q->argc, q->argv, true};
            cmd->fn(&y);
            server_count_command(j->srv);
            resp_out_cat(&j->results, &tr.out);
            resp_out_release(&tr.out);
            j->i++;
            /* a group command may write to a stream too (XGROUP CREATE ... MKSTREAM, a dead
             * letter), and its own wait for readers to see that is the lone command's only */
            bool wrote = commands_writes(&y, cmd);
            j->wrote |= wrote;
            if (wrote) /* it may move the versions itself: no second check (its own list of */
                unwatch(&j->watch, &j->nwatch); /* writes missed XRETENTION SET and MKSTREAM) */
            if (wrote && exec_wait_visible(j, first, prev))
                return false;
            continue;
        }
        /* a run of XADDs; one that trims goes alone (its trim is part of its own group) */
        size_t b1 = j->i;
        while (b1 < j->n && is_cmd(&j->q[b1].argv[0], "xadd")) {
            xadd_args probe;
            bool trims = !xadd_parse(j->q[b1].argv, j->q[b1].argc, &probe) && probe.has_trim;
            xadd_args_release(&probe);
            if (trims && b1 > j->i)
                break;
            b1++;
            if (trims)
                break;
        }
        size_t cnt = b1 - j->i;
        xadd_args *xa = calloc(cnt, sizeof *xa);
        evs_append *apps = calloc(cnt, sizeof *apps);
        free(j->perr);
        free(j->ids);
        free(j->rcs);
        j->perr = calloc(cnt, sizeof *j->perr);
        j->ids = calloc(cnt, sizeof *j->ids);
        j->rcs = calloc(cnt, sizeof *j->rcs);
        if (!xa || !apps || !j->perr || !j->ids || !j->rcs) {
            free(xa);
            free(apps);
            for (size_t k = j->i; k < b1; k++)
                resp_out_error(&j->results, "ERR out of memory");
            j->i = b1;
            continue;
        }
        size_t napps = 0;
        for (size_t k = 0; k < cnt; k++) {
            qcmd *qq = &j->q[j->i + k];
            j->perr[k] = xadd_parse(qq->argv, qq->argc, &xa[k]);
            if (!j->perr[k])
                apps[napps++] = xa[k].a;
        }
        j->b0 = j->i;
        j->b1 = b1;
        j->nids = napps;
        int rc = 0;
        if (napps) {
            j->p = first ? server_hold(first, exec_fill, j, false)
                         : server_hold_again(prev, exec_fill, j);
            bool trimmed = cnt == 1 && xa[0].has_trim;
            evs_store *st = server_store(j->srv);
            rc = !j->p   ? -1
                 : trimmed ? evs_submit_watched(st, apps, napps, &xa[0].trim, j->watch, j->nwatch,
                                                batch_done, j, &j->err)
                           : evs_submit_each(st, apps, napps, j->watch, j->nwatch,
                                             batch_each_done, j, &j->err);
            unwatch(&j->watch, &j->nwatch); /* the first batch only */
            if (rc && j->p) {
                j->rc = rc;
                server_complete(j->p); /* answered through the loop, like any completion */
            }
        }
        for (size_t k = 0; k < cnt; k++)
            xadd_args_release(&xa[k]);
        free(xa);
        free(apps);
        if (napps && j->p)
            return false;
        if (napps) { /* could not even hold: answer the batch with the error */
            j->rc = -1;
            snprintf(j->err.msg, sizeof j->err.msg, "out of memory");
        }
        /* nothing to append (all parse errors): answer them now */
        for (size_t k = 0; k < cnt; k++) {
            if (j->perr[k])
                resp_out_error(&j->results, "%s", j->perr[k]);
            else
                xadd_result_out(&j->results, j->rc, EVS_ID_MIN, &j->err);
        }
        j->i = b1;
    }
    return true;
}

static void exec_replicated(void *arg, long long got)
{
    exec_job *j = arg;
    j->got = got;
    server_complete(j->p);
}

/* Every queued command has run: answer the EXEC. With --ack all, an EXEC that wrote waits
 * first until --min-replicas followers have fsynced the log to its end (everything it wrote),
 * so that the connection's next command reads it, as readers here see only what they hold;
 * one that appended answers -NOREPLICAS if they do not in --ack-timeout (it is durable here),
 * as an XADD alone would; one that did not answers as its commands would have (a lone XDEL
 * answers at once and holds the next command back as long: repl_fence; docs/replication.md
 * has what went wrong before). True when the reply is written; false when a wait continues
 * in exec_fill.
 * p: the EXEC's pending reply, or NULL and first its command (nothing held yet). */
static bool exec_finish(exec_job *j, reply *r, pending_t *p, cmd_ctx *first)
{
    const server_config *cfg = server_cfg(j->srv);
    if (cfg->ack_all && (j->appended || (j->wrote && repl_unseen_end(j->srv))) &&
        !j->replicating && (p || first)) {
        evs_store_stats s;
        evs_store_stats_get(server_store(j->srv), &s);
        j->replicating = true;
        j->got = 0;
        j->p = p ? server_hold_again(p, exec_fill, j) : server_hold(first, exec_fill, j, false);
        if (j->p) {
            if (repl_wait(j->srv, s.log_end, cfg->min_replicas, cfg->ack_timeout_ms,
                          exec_replicated, j))
                server_complete(j->p); /* no wait possible: answered as a timeout */
            return false;
        }
    }
    if (j->short_ || (j->appended && j->replicating && j->got < cfg->min_replicas))
        resp_out_error(&r->out, "NOREPLICAS Not enough good replicas acknowledged the "
                       "transaction within %d ms (%lld of %d); it is durable on this leader",
                       cfg->ack_timeout_ms, j->got, cfg->min_replicas);
    else {
        resp_out_array(&r->out, j->n);
        resp_out_cat(&r->out, &j->results);
    }
    return true;
}

static bool exec_fill(pending_t *p, reply *r, void *res)
{
    exec_job *j = res;
    if (pending_orphaned(p)) {
        job_free(j);
        return true;
    }
    if (j->replicating) {
        exec_finish(j, r, p, NULL);
        job_free(j);
        return true;
    }
    if (j->midwait) { /* the followers hold what the next command reads, or the wait ended */
        j->midwait = false;
        /* a timeout: the rest runs; an EXEC that appended answers -NOREPLICAS (as a lone
         * XADD), one that did not answers as a lone XDEL would (repl_fence) */
        j->short_ |= j->appended && j->got < server_cfg(j->srv)->min_replicas;
        if (!exec_step(j, r, NULL, p) || !exec_finish(j, r, p, NULL))
            return false;
        job_free(j);
        return true;
    }
    if (j->rc == EVS_ECHANGED) { /* a WATCHed key changed before the first batch: nothing ran */
        resp_out_null_array(&r->out);
        job_free(j);
        return true;
    }
    size_t next = 0;
    for (size_t k = 0; k < j->b1 - j->b0; k++) {
        if (j->perr[k]) {
            resp_out_error(&j->results, "%s", j->perr[k]);
            continue;
        }
        int rc = j->rc ? j->rc : j->rcs[next]; /* (a lone trimming XADD: rcs stay 0) */
        xadd_result_out(&j->results, rc, rc ? EVS_ID_MIN : j->ids[next], &j->err);
        j->appended |= rc == 0;
        next++;
    }
    j->i = j->b1;
    if (exec_wait_visible(j, NULL, p)) /* a refused batch too: an earlier write may be unseen */
        return false;
    if (!exec_step(j, r, NULL, p) || !exec_finish(j, r, p, NULL))
        return false;
    job_free(j);
    return true;
}

void cmd_exec(cmd_ctx *x)
{
    multi_state *m = state(x->c, false);
    if (!m || !m->active) {
        resp_out_error(&x->r->out, "ERR EXEC without MULTI");
        reply_done(x);
        return;
    }
    evs_watch *watch = m->w;
    size_t nwatch = m->nw;
    m->w = NULL; /* EXEC always unwatches */
    m->nw = 0;
    if (m->dirty) {
        state_reset(m);
        unwatch(&watch, &nwatch);
        resp_out_error(&x->r->out, "EXECABORT Transaction discarded because of previous errors.");
        reply_done(x);
        return;
    }
    if (watch_broken(x->srv, watch, nwatch)) {
        state_reset(m);
        unwatch(&watch, &nwatch);
        resp_out_null_array(&x->r->out);
        reply_done(x);
        return;
    }
    const server_config *cfg = server_cfg(x->srv);
    bool appends = false;
    for (size_t i = 0; i < m->n && !appends; i++)
        appends = is_cmd(&m->q[i].argv[0], "xadd");
    if (appends && cfg->ack_all && repl_good_followers() < cfg->min_replicas) {
        state_reset(m); /* before anything runs, as an XADD alone */
        unwatch(&watch, &nwatch);
        resp_out_error(&x->r->out, "NOREPLICAS Not enough good replicas to write.");
        reply_done(x);
        return;
    }
    exec_job *j = calloc(1, sizeof *j);
    if (!j) {
        state_reset(m);
        unwatch(&watch, &nwatch);
        resp_out_error(&x->r->out, "ERR out of memory");
        reply_done(x);
        return;
    }
    j->watch = watch;
    j->nwatch = nwatch;
    j->srv = x->srv;
    j->c = x->c;
    j->q = m->q;
    j->n = m->n;
    m->q = NULL; /* the job owns the queue now */
    m->n = m->cap = 0;
    state_reset(m);
    resp_out_init(&j->results, conn_proto(x->c));
    if (exec_step(j, x->r, x, NULL) && exec_finish(j, x->r, NULL, x)) {
        job_free(j); /* nothing waits: no batch, and no write the followers lack */
        reply_done(x);
    }
}
