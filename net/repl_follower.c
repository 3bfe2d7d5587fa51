/*
 * repl_follower.c — the follower's side of replication (docs/replication.md): one connection
 * to the leader's RESP port, on the server's event loop.
 *
 *   connect → [AUTH password] → REPLSYNC <store id> <log end> <port> <epochs...>
 *   ← CONTINUE (an empty store first takes the leader's identity), a CHECK of the bytes
 *     before this log's end (W8), then LOG frames, SHOWN positions and PINGs
 *   → REPLCONF ACK <received> <fsynced> after each frame is written and synced, after a
 *     CHECK that matched (W8), and once a second
 *
 * Invariants:
 *  W1. Frames are submitted to the store in order and only if each starts where the previous
 *      ended (`next`): a frame out of place drops the link, it is never written.
 *  W2. A new link is made only when nothing is in flight, so REPLSYNC names the log's true
 *      end.
 *  W3. A link silent for LINK_TIMEOUT_S (the leader PINGs every second) is dropped and made
 *      again, with backoff from 100 ms up to 5 s.
 *  W4. A store failure (a record that cannot be applied, a write or sync error, a full disk
 *      at a roll) stops following for good, whether a frame's completion or the next submit
 *      reports it: the log line says why; the operator decides (a restart tries again).
 *  W5. The link's input is read by on_readable in pieces of up to 1 MiB, not by the
 *      bufferevent (4 KiB a callback in libevent 2.1); the bufferevent keeps connect, output
 *      and errors. Reading pauses while INFLIGHT_MAX bytes wait for the writer.
 *  W6. Readers here see no further than the leader's did: the store's visibility cap is set
 *      by the first SHOWN (the leader sends one before its first frame, F5; what the store
 *      recovered stays shown, as every store shows it), and raised by each later one, never
 *      lowered. A frame the leader shipped before its sync (repl_leader.c F1) is written,
 *      synced and acknowledged here, and shown once the leader's readers see it too. A leader
 *      that sends no SHOWN (a build from before them, which ships only what its readers
 *      see) sets no cap. Promotion lifts the cap: what the store holds then is the history
 *      it leads with.
 *  W7. The link's input is read at a higher priority than clients' requests: a SHOWN the
 *      leader wrote before answering a client (repl_leader.c F5) is taken before that client's
 *      next request here, when both are ready in one turn of the loop.
 *  W8. A CHECK (repl_leader.c F6), which comes before any frame, is compared with this log's
 *      own bytes: if they differ, the two logs are not one history whatever their epochs say,
 *      and the follower records SNAPSHOT (its own bytes unknown: its store is kept aside) and
 *      restarts to copy the leader's store, before any frame is submitted. If they match,
 *      the follower acknowledges its log's end at once: only then, not before the CHECK, is
 *      its log known to be the leader's.
 *  W9. The frames of a read that emptied the socket (a follower keeping up) are submitted
 *      under one evs_submit_hold and committed on this loop when the writer thread is idle
 *      (evs_submit_release_inline), as a leader commits a loop turn: one group commit, no
 *      hand-off per batch (the follower's CPU at c50/P16 a fourth lower, docs/replication.md).
 *      A read that filled READ_CHUNK (a catch-up: more is waiting), and input taken again
 *      after a pause, go to the writer thread, whose syncer overlaps the next batch with
 *      this one's sync (writer.c W10). Completions come back through server_post either way
 *      (on_done_loop), never inside the submit.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "commands.h"
#include "hostport.h"

#define LINK_TIMEOUT_S 5
/* three write batches: one syncing, one being written (writer.c W10), one arriving */
#define INFLIGHT_MAX (48u << 20)
#define SMALL_MSG 256 /* bytes a SHOWN or PING fits in, with room */

enum link_state { L_IDLE, L_CONNECTING, L_AUTH, L_SYNC, L_STREAMING, L_FAILED };

static struct {
    server *srv;
    struct bufferevent *bev;     /* the link: connect, output, events                       */
    struct event *rd;            /* ... its input, read here in large pieces (W5)           */
    struct event *timer;
    enum link_state state;
    char host[256];
    int port;
    uint64_t next;               /* log position the next frame must start at (W1)          */
    uint64_t received;           /* written by the store                                    */
    uint64_t shown;              /* the visibility cap: the leader's last SHOWN (W6)        */
    bool capped;                 /* ... set: a SHOWN came since start                       */
    size_t inflight;             /* bytes submitted, not yet completed                      */
    int gen;                     /* link generation: completions of an old link are ignored */
    time_t last_rx;
    size_t need;                 /* the next frame is this long: no parse before it is in   */
    int backoff_ms;
    bool want_reconnect;
    bool stopping;
} F;

static void link_drop(const char *why);
static void link_try(void);
static void take_truncate(uint64_t x, const resp_value *why);
static void take_snapshot(const resp_value *why, uint64_t own);
static void take_input(void);

/* Close the link's socket and its read event. */
static void link_close(void)
{
    if (F.rd)
        event_free(F.rd);
    F.rd = NULL;
    if (F.bev)
        bufferevent_free(F.bev);
    F.bev = NULL;
}

static void rd_pause(void)
{
    if (F.rd)
        event_del(F.rd);
}

static void rd_resume(void)
{
    if (F.rd)
        event_add(F.rd, NULL);
}

/* W5: libevent 2.1 reads at most 4 KiB per bufferevent callback (EVBUFFER_MAX_READ; 2.2 makes
 * it settable): three system calls per 4 KiB held a catch-up to ~75 MB/s. The link's input
 * is read here instead, up to READ_CHUNK at a time straight into the bufferevent's input
 * buffer (evbuffer_reserve_space / commit), then parsed by take_input. */
#define READ_CHUNK (1u << 20)
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    if (!F.bev)
        return;
    struct evbuffer *in = bufferevent_get_input(F.bev);
    struct evbuffer_iovec v[2];
    int nv = evbuffer_reserve_space(in, READ_CHUNK, v, 2);
    if (nv <= 0) {
        link_drop("out of memory for the leader's bytes");
        return;
    }
    struct iovec io[2];
    size_t room = 0;
    for (int i = 0; i < nv; i++) {
        io[i] = (struct iovec){v[i].iov_base, v[i].iov_len};
        room += v[i].iov_len;
    }
    ssize_t n = readv(fd, io, nv);
    if (n <= 0) {
        evbuffer_commit_space(in, v, 0);
        if (n == 0)
            link_drop("the leader closed the connection");
        else if (errno != EAGAIN && errno != EINTR)
            link_drop(strerror(errno));
        return;
    }
    size_t left = (size_t)n;
    int used = 0;
    for (; used < nv && left; used++) {
        if (v[used].iov_len > left)
            v[used].iov_len = left;
        left -= v[used].iov_len;
    }
    evbuffer_commit_space(in, v, used);
    bool drained = (size_t)n < room; /* W9 */
    evs_store *st = server_store(F.srv);
    if (drained)
        evs_submit_hold(st);
    take_input();
    if (drained)
        evs_submit_release_inline(st);
}

/* ---- completions ---------------------------------------------------------------------------- */

typedef struct done_msg {
    int rc;
    size_t len;
    uint64_t end;
    int gen;
    evs_error err;
} done_msg;

/* REPLCONF ACK <received> <fsynced>: after each frame is written, and once a second. The
 * fsynced position is never past what the store has completed (published: its readers see
 * it once the leader's SHOWN covers it): the store's synced end moves before it publishes,
 * and a leader under --ack all answers its client on this acknowledgement, after which the
 * client may read here. */
static void send_ack(void)
{
    evs_store_stats s;
    evs_store_stats_get(server_store(F.srv), &s);
    uint64_t fs = s.synced_end < F.received ? s.synced_end : F.received;
    evbuffer_add_printf(bufferevent_get_output(F.bev),
                        "*4\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$%d\r\n%" PRIu64 "\r\n"
                        "$%d\r\n%" PRIu64 "\r\n",
                        snprintf(NULL, 0, "%" PRIu64, F.received), F.received,
                        snprintf(NULL, 0, "%" PRIu64, fs), fs);
}

static void on_done_loop(void *arg)
{
    done_msg *m = arg;
    F.inflight -= m->len;
    if (m->rc) {
        if (F.state != L_FAILED)
            server_log(F.srv, EVS_LOG_ERROR, "replication stopped: %s", m->err.msg);
        F.state = L_FAILED; /* W4 */
        link_close();
    } else {
        if (m->end > F.received)
            F.received = m->end;
        if (m->gen == F.gen && F.bev && F.state == L_STREAMING)
            send_ack();
    }
    if (F.bev && F.state == L_STREAMING && F.inflight < INFLIGHT_MAX / 2) {
        rd_resume(); /* and what is already buffered goes on at once */
        if (evbuffer_get_length(bufferevent_get_input(F.bev)))
            take_input();
    }
    if (F.want_reconnect && F.inflight == 0)
        link_try();
    free(m);
}

static void on_done(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err)
{
    (void)ids;
    done_msg *m = arg;
    m->rc = rc;
    if (rc && err)
        m->err = *err;
    else if (rc)
        snprintf(m->err.msg, sizeof m->err.msg, "%s", evs_strerror(rc));
    (void)n;
    server_post(F.srv, on_done_loop, m); /* from the writer thread to the loop */
}

/* ---- the link ------------------------------------------------------------------------------- */

static void send_cmd(size_t argc, const char **argv)
{
    struct evbuffer *out = bufferevent_get_output(F.bev);
    evbuffer_add_printf(out, "*%zu\r\n", argc);
    for (size_t i = 0; i < argc; i++)
        evbuffer_add_printf(out, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
}

static void send_sync(void)
{
    evs_store *st = server_store(F.srv);
    evs_store_stats s;
    evs_store_stats_get(st, &s);
    size_t n = evs_epochs(st, NULL, 0);
    evs_epoch *e = calloc(n + 1, sizeof *e);
    n = e ? evs_epochs(st, e, n) : 0;
    struct evbuffer *out = bufferevent_get_output(F.bev);
    char pos[24], port[24];
    snprintf(pos, sizeof pos, "%" PRIu64, s.log_end);
    snprintf(port, sizeof port, "%d", server_cfg(F.srv)->port);
    evbuffer_add_printf(out, "*%zu\r\n$8\r\nREPLSYNC\r\n$32\r\n%s\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n",
                        4 + 3 * n, evs_store_id(st), strlen(pos), pos, strlen(port), port);
    for (size_t i = 0; i < n; i++) {
        char num[24], u[33], start[24];
        snprintf(num, sizeof num, "%" PRIu32, e[i].epoch);
        evs_uuid_format(e[i].uuid, u);
        snprintf(start, sizeof start, "%" PRIu64, e[i].start);
        evbuffer_add_printf(out, "$%zu\r\n%s\r\n$32\r\n%s\r\n$%zu\r\n%s\r\n", strlen(num), num, u,
                            strlen(start), start);
    }
    free(e);
    F.next = s.log_end;
    F.received = s.log_end;
}

/* CONTINUE <pos> <store id> [[epoch, uuid, start]...] */
static bool take_continue(const resp_value *v)
{
    if (v->type != RESP_T_ARRAY || v->n != 4 || v->elems[0].type != RESP_T_BULK)
        return false;
    const resp_value *pos = &v->elems[1], *id = &v->elems[2], *ep = &v->elems[3];
    if (pos->type != RESP_T_INT || (uint64_t)pos->integer != F.next || id->type != RESP_T_BULK ||
        id->len != 32 || ep->type != RESP_T_ARRAY)
        return false;
    evs_store *st = server_store(F.srv);
    if (memcmp(id->str, evs_store_id(st), 32)) { /* an empty follower: the leader's identity */
        evs_epoch *e = calloc(ep->n + 1, sizeof *e);
        if (!e)
            return false;
        for (size_t i = 0; i < ep->n; i++) {
            const resp_value *t = &ep->elems[i];
            if (t->type != RESP_T_ARRAY || t->n != 3 || t->elems[1].type != RESP_T_BULK ||
                evs_uuid_parse((const char *)t->elems[1].str, t->elems[1].len, e[i].uuid)) {
                free(e);
                return false;
            }
            e[i].epoch = (uint32_t)t->elems[0].integer;
            e[i].start = (uint64_t)t->elems[2].integer;
        }
        char sid[33];
        memcpy(sid, id->str, 32);
        sid[32] = 0;
        evs_error err;
        int rc = evs_replica_adopt(st, sid, e, ep->n, &err);
        free(e);
        if (rc) {
            server_log(F.srv, EVS_LOG_ERROR, "cannot follow: %s", err.msg);
            return false;
        }
        server_log(F.srv, EVS_LOG_INFO, "this empty store takes the leader's identity, store %s",
                   sid);
    }
    return true;
}

/* TRUNCATE <x> <why>: the log goes past where the leader's history parts from it. Record the
 * cut (done by the next open, bytes kept in .diverged files) and restart the process. */
static void take_truncate(uint64_t x, const resp_value *why)
{
    evs_error err;
    if (x >= F.next || x % 8) {
        link_drop("the leader asked for a cut that is not inside this log");
        return;
    }
    if (evs_replica_truncate_request(server_store(F.srv), x, &err)) {
        server_log(F.srv, EVS_LOG_ERROR, "cannot follow: %s", err.msg);
        F.state = L_FAILED;
        link_drop("cannot record the cut");
        return;
    }
    server_log(F.srv, EVS_LOG_WARN, "the leader says: %.*s; cutting %" PRIu64 " bytes at log "
               "position %" PRIu64 " (kept in log/*.diverged) and restarting",
               (int)(why->type == RESP_T_BULK ? why->len : 0), (const char *)why->str,
               F.next - x, x);
    F.state = L_FAILED;
    link_close();
    server_restart(F.srv);
}

/* SNAPSHOT <why> [<own bytes>]: what this follower lacks is gone from the leader
 * (retention). Record it, with the bytes of its own the leader counted (unknown from a leader
 * that sends none), and restart: `evstore serve` copies the leader's whole store before it
 * opens this one, and keeps the old one unless it held nothing of its own. */
static void copy_store_for(const char *why, uint64_t own)
{
    evs_error err;
    if (evs_replica_snapshot_request(server_store(F.srv), own, &err)) {
        server_log(F.srv, EVS_LOG_ERROR, "cannot follow: %s", err.msg);
        F.state = L_FAILED;
        link_drop("cannot record the snapshot request");
        return;
    }
    server_log(F.srv, EVS_LOG_WARN, "%s; restarting to copy its store", why);
    F.state = L_FAILED;
    link_close();
    server_restart(F.srv);
}

static void take_snapshot(const resp_value *why, uint64_t own)
{
    char msg[600];
    snprintf(msg, sizeof msg, "the leader says: %.*s",
             (int)(why->type == RESP_T_BULK ? why->len : 0), (const char *)why->str);
    copy_store_for(msg, own);
}

/* CHECK <from> <to> <crc> (W8): the leader's log bytes before this log's end, compared. */
static void take_check(uint64_t from, uint64_t to, uint64_t crc)
{
    if (to != F.next)
        return; /* not this link's start: nothing to compare */
    uint32_t mine;
    evs_error err;
    int rc = evs_log_crc(server_store(F.srv), &from, to, (size_t)(to - from), &mine, &err);
    if (!rc && mine == crc) {
        /* the log here is the leader's up to its end: say so at once, not at the next
         * heartbeat (a follower that comes back with all of it, or with a copy of the
         * leader's store, counts for WAIT and shows as caught up without a second's delay) */
        send_ack();
        return;
    }
    char msg[400];
    snprintf(msg, sizeof msg, "this store's log bytes [%" PRIu64 ", %" PRIu64 ") are not the "
             "leader's, though the two share a store ID and every epoch (one store copied and "
             "led in two places?): nothing of the leader's is appended to it", from, to);
    copy_store_for(msg, UINT64_MAX); /* own bytes unknown: the old store is kept aside */
}

/* Submit a LOG frame's n-byte body at `at` (in nv pieces) to the store. False with `why` set:
 * the link is dropped. */
static bool log_submit(uint64_t at, const struct iovec *io, int nv, size_t n, char *why,
                       size_t cap)
{
    if (at != F.next) { /* W1 */
        snprintf(why, cap, "a frame at log position %" PRIu64 ", expected %" PRIu64, at, F.next);
        return false;
    }
    done_msg *m = calloc(1, sizeof *m);
    if (m) {
        m->len = n;
        m->end = at + n;
        m->gen = F.gen;
    }
    int src = m ? evs_replica_submitv(server_store(F.srv), at, io, nv, on_done, m) : -ENOMEM;
    if (src) {
        free(m);
        snprintf(why, cap, "cannot write the leader's log: %s", evs_strerror(src));
        if (src == EVS_EFAILED && F.state != L_FAILED) { /* W4: nothing more until a restart */
            evs_error e;
            evs_failed(server_store(F.srv), &e);
            server_log(F.srv, EVS_LOG_ERROR, "replication stopped: %s", e.msg);
            F.state = L_FAILED;
        }
        return false;
    }
    F.inflight += n;
    F.next = at + n; /* (m is the completion's now) */
    if (F.inflight >= INFLIGHT_MAX)
        rd_pause(); /* the writer catches up first */
    return true;
}

/* A LOG frame whose n-byte body starts hlen bytes into the input: submitted from the input
 * buffer's own pieces (evbuffer_peek), never first made one contiguous piece: a frame of up
 * to 1 MiB spans two reads' pieces, and that pullup was half of this loop's copying in a
 * catch-up (measured). 1: submitted; 0: the link is to be dropped (`why`); -1: the body is in
 * more than LOG_PIECES pieces (many short reads): the caller takes the general path. */
#define LOG_PIECES 8
static int take_log(struct evbuffer *in, size_t hlen, size_t n, uint64_t at, char *why,
                    size_t cap)
{
    struct evbuffer_ptr body;
    struct evbuffer_iovec ev[LOG_PIECES];
    struct iovec io[LOG_PIECES];
    if (evbuffer_ptr_set(in, &body, hlen, EVBUFFER_PTR_SET))
        return -1;
    int nv = evbuffer_peek(in, (ssize_t)n, &body, ev, LOG_PIECES);
    if (nv < 0 || nv > LOG_PIECES)
        return -1;
    size_t left = n;
    for (int i = 0; i < nv; i++) { /* the last piece may run past the body */
        size_t l = ev[i].iov_len < left ? ev[i].iov_len : left;
        io[i] = (struct iovec){ev[i].iov_base, l};
        left -= l;
    }
    return log_submit(at, io, nv, n, why, cap);
}

/* Parse and act on every whole frame in the link's input buffer (filled by on_readable). */
static void take_input(void)
{
    struct evbuffer *in = bufferevent_get_input(F.bev);
    F.last_rx = time(NULL);
    while (F.bev && evbuffer_get_length(in)) {
        size_t len = evbuffer_get_length(in);
        if (len < F.need)
            return; /* a frame still arriving: no copy, no parse until it is all here */
        F.need = 0;
        size_t frame = 0;
        if (F.state == L_STREAMING) {
            /* the common frame: its body is never pulled up (take_log) */
            uint8_t head[96];
            size_t peek = len < sizeof head ? len : sizeof head, hlen;
            uint64_t at, n;
            evbuffer_copyout(in, head, peek);
            if (resp_log_head(head, peek, &at, &n, &hlen)) { /* n < 2^63: no overflow below */
                size_t total = hlen + (size_t)n + 2;
                if (len < total) {
                    F.need = total; /* no copy, no parse until it is all here */
                    return;
                }
                char crlf[2];
                struct evbuffer_ptr t;
                if (!evbuffer_ptr_set(in, &t, hlen + n, EVBUFFER_PTR_SET) &&
                    evbuffer_copyout_from(in, &t, crlf, 2) == 2 && crlf[0] == '\r' &&
                    crlf[1] == '\n') {
                    char why[300];
                    int tk = take_log(in, hlen, (size_t)n, at, why, sizeof why);
                    if (tk == 0) {
                        link_drop(why);
                        return;
                    }
                    if (tk == 1) {
                        evbuffer_drain(in, total);
                        if (F.inflight >= INFLIGHT_MAX)
                            return; /* paused (log_submit) */
                        continue;
                    }
                }
                frame = total; /* the parser below takes it whole, or says what is wrong */
            }
        }
        if (frame && frame < len)
            len = frame;
        /* a small message (SHOWN, PING) is parsed from the first bytes, not from a pull-up
         * of the frames queued behind it; a longer one (CONTINUE) from all that is here */
        size_t win = frame || len < SMALL_MSG ? len : SMALL_MSG;
        const uint8_t *data = evbuffer_pullup(in, (ssize_t)win);
        resp_value *v;
        size_t used;
        char err[160];
        int rc = resp_reply_parse(data, win, &v, &used, err, sizeof err);
        if (rc == RESP_PARTIAL && win < len) {
            data = evbuffer_pullup(in, (ssize_t)len);
            rc = resp_reply_parse(data, len, &v, &used, err, sizeof err);
        }
        if (rc == RESP_PARTIAL)
            return;
        if (rc == RESP_ERROR) {
            link_drop(err);
            return;
        }
        bool ok = true;
        char why[300] = "";
        if (v->type == RESP_T_ERROR) {
            snprintf(why, sizeof why, "the leader says: %.*s", (int)v->len, (const char *)v->str);
            ok = false;
        } else if (F.state == L_AUTH) {
            F.state = L_SYNC;
        } else if (F.state == L_SYNC && v->type == RESP_T_ARRAY && v->n == 3 &&
                   v->elems[0].len == 8 && !memcmp(v->elems[0].str, "TRUNCATE", 8) &&
                   v->elems[1].type == RESP_T_INT) {
            take_truncate((uint64_t)v->elems[1].integer, &v->elems[2]);
            resp_value_free(v);
            return;
        } else if (F.state == L_SYNC && v->type == RESP_T_ARRAY && (v->n == 2 || v->n == 3) &&
                   v->elems[0].len == 8 && !memcmp(v->elems[0].str, "SNAPSHOT", 8) &&
                   (v->n == 2 || (v->elems[2].type == RESP_T_INT && v->elems[2].integer >= 0))) {
            take_snapshot(&v->elems[1], v->n == 3 ? (uint64_t)v->elems[2].integer : UINT64_MAX);
            resp_value_free(v);
            return;
        } else if (F.state == L_SYNC) {
            ok = take_continue(v);
            if (ok) {
                F.state = L_STREAMING;
                F.backoff_ms = 0;
                server_log(F.srv, EVS_LOG_INFO, "following %s:%d from log position %" PRIu64,
                           F.host, F.port, F.next);
            } else if (!why[0]) {
                snprintf(why, sizeof why, "unexpected answer to REPLSYNC");
            }
        } else if (v->type == RESP_T_ARRAY && v->n == 3 && v->elems[0].len == 3 &&
                   !memcmp(v->elems[0].str, "LOG", 3) && v->elems[1].type == RESP_T_INT &&
                   v->elems[2].type == RESP_T_BULK) {
            struct iovec io = {(void *)v->elems[2].str, v->elems[2].len};
            ok = log_submit((uint64_t)v->elems[1].integer, &io, 1, v->elems[2].len, why,
                            sizeof why);
        } else if (F.state == L_STREAMING && v->type == RESP_T_ARRAY && v->n == 4 &&
                   v->elems[0].len == 5 && !memcmp(v->elems[0].str, "CHECK", 5) &&
                   v->elems[1].type == RESP_T_INT && v->elems[2].type == RESP_T_INT &&
                   v->elems[3].type == RESP_T_INT && v->elems[1].integer >= 0 &&
                   v->elems[1].integer <= v->elems[2].integer) {
            take_check((uint64_t)v->elems[1].integer, (uint64_t)v->elems[2].integer,
                       (uint64_t)v->elems[3].integer);
            if (F.state == L_FAILED) { /* restarting to copy: nothing more is read */
                resp_value_free(v);
                return;
            }
        } else if (v->type == RESP_T_ARRAY && v->n == 2 && v->elems[0].len == 5 &&
                   !memcmp(v->elems[0].str, "SHOWN", 5) && v->elems[1].type == RESP_T_INT) {
            if (!F.capped || (uint64_t)v->elems[1].integer > F.shown) { /* W6 */
                F.capped = true;
                F.shown = (uint64_t)v->elems[1].integer;
                evs_set_visible_cap(server_store(F.srv), F.shown);
            }
        } else if (v->type == RESP_T_ARRAY && v->n == 2 && v->elems[0].len == 4 &&
                   !memcmp(v->elems[0].str, "PING", 4) && v->elems[1].type == RESP_T_INT) {
            /* the leader's log start: segments below it go here too (retention thread) */
            evs_replica_leader_start(server_store(F.srv), (uint64_t)v->elems[1].integer);
        } /* anything else: the link is alive */
        resp_value_free(v);
        evbuffer_drain(in, used);
        if (!ok) {
            link_drop(why);
            return;
        }
        if (F.state == L_STREAMING && F.inflight >= INFLIGHT_MAX)
            return;
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)arg;
    if (what & BEV_EVENT_CONNECTED) {
        F.last_rx = time(NULL);
        F.rd = event_new(server_base(F.srv), bufferevent_getfd(F.bev), EV_READ | EV_PERSIST,
                         on_readable, NULL);
        if (!F.rd) {
            link_drop("out of memory");
            return;
        }
        event_priority_set(F.rd, 0); /* W7: the leader's SHOWN before a reader's request */
        rd_resume();
        const char *pw = server_cfg(F.srv)->leader_password;
        if (pw) {
            const char *argv[] = {"AUTH", pw};
            send_cmd(2, argv);
        }
        send_sync(); /* pipelined behind AUTH: answers come in order */
        F.state = pw ? L_AUTH : L_SYNC;
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        link_drop(what & BEV_EVENT_EOF ? "the leader closed the connection"
                                       : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void link_try(void)
{
    if (F.stopping || F.state == L_FAILED)
        return;
    F.want_reconnect = false;
    if (F.inflight) { /* W2 */
        F.want_reconnect = true;
        return;
    }
    F.gen++;
    F.bev = bufferevent_socket_new(server_base(F.srv), -1, BEV_OPT_CLOSE_ON_FREE);
    if (!F.bev)
        return;
    bufferevent_setcb(F.bev, NULL, NULL, on_event, NULL);
    F.need = 0;
    bufferevent_enable(F.bev, EV_WRITE); /* input: on_readable, once connected (W5) */
    F.state = L_CONNECTING;
    F.last_rx = time(NULL);
    char port[16];
    snprintf(port, sizeof port, "%d", F.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(F.host, port, &hints, &ai) || !ai ||
        bufferevent_socket_connect(F.bev, ai->ai_addr, (int)ai->ai_addrlen)) {
        if (ai)
            freeaddrinfo(ai);
        link_drop("cannot connect");
        return;
    }
    freeaddrinfo(ai);
}

static void link_drop(const char *why)
{
    link_close();
    if (F.state == L_FAILED)
        return;
    F.state = L_IDLE;
    F.backoff_ms = F.backoff_ms ? (F.backoff_ms * 2 > 5000 ? 5000 : F.backoff_ms * 2) : 100;
    server_log(F.srv, EVS_LOG_WARN, "replication link to %s:%d down: %s; retrying in %d ms",
               F.host, F.port, why, F.backoff_ms);
    struct timeval tv = {F.backoff_ms / 1000, (F.backoff_ms % 1000) * 1000};
    event_add(F.timer, &tv);
}

/* The timer: a retry after backoff, and once a second the link's heartbeat check (W3). */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (F.state == L_IDLE)
        link_try();
    else if (F.bev && time(NULL) - F.last_rx > LINK_TIMEOUT_S)
        link_drop("no data or heartbeat from the leader for 5 s");
    else if (F.bev && F.state == L_STREAMING)
        send_ack(); /* the leader's heartbeat the other way */
    struct timeval sec = {1, 0};
    if (F.state != L_IDLE && F.state != L_FAILED)
        event_add(F.timer, &sec);
}

int repl_follower_link_fd(void)
{
    return F.bev ? (int)bufferevent_getfd(F.bev) : -1;
}

int repl_follower_start(server *srv)
{
    char host[sizeof F.host];
    int port;
    const char *why;
    if (!hostport_split(server_cfg(srv)->replica_of, host, sizeof host, &port, &why))
        return -1; /* (cli_serve checked it first) */
    memset(&F, 0, sizeof F);
    F.srv = srv;
    memcpy(F.host, host, sizeof host);
    F.port = port;
    F.timer = event_new(server_base(srv), -1, 0, on_timer, NULL);
    if (!F.timer)
        return -1;
    link_try();
    struct timeval sec = {1, 0};
    if (F.state != L_IDLE)
        event_add(F.timer, &sec);
    return 0;
}

void repl_follower_stop(void)
{
    F.stopping = true;
    F.state = L_IDLE;
    link_close();
    if (F.timer)
        event_free(F.timer);
    F.timer = NULL;
}

bool repl_follower_link_up(void) { return F.state == L_STREAMING; }
const char *repl_follower_host(void) { return F.host; }
int repl_follower_port(void) { return F.port; }
uint64_t repl_follower_offset(void) { return F.received; }
long repl_follower_last_io(void) { return F.last_rx ? (long)(time(NULL) - F.last_rx) : -1; }

/* REPLICAOF HOST PORT: follow that leader. The store opens differently as a follower
 * (replica log, no local writes, no retention), so the node answers +OK, stops cleanly (every
 * queued write finished and answered, clients disconnected) and starts again following it:
 * cli_serve re-runs the same command with --replica-of HOST:PORT. The lineage check then
 * continues, truncates or copies, as for a node started that way. */
static void replicaof_host(cmd_ctx *x)
{
    const resp_arg *h = &x->argv[1], *p = &x->argv[2];
    char host[256], target[FOLLOW_NEXT_MAX];
    bool ok = h->len > 0 && h->len < sizeof host;
    for (size_t i = 0; ok && i < h->len; i++)
        ok = h->ptr[i] > ' ' && h->ptr[i] < 0x7f; /* IPv6 too: the last ':' ends the host */
    if (!ok) {
        reply_error_done(x, "ERR Invalid master address");
        return;
    }
    long long port;
    if (!arg_ll(p, &port) || port < 1 || port > 65535) {
        reply_error_done(x, "ERR value is not an integer or out of range");
        return;
    }
    memcpy(host, h->ptr, h->len);
    host[h->len] = 0;
    snprintf(target, sizeof target, "%s:%lld", host, port);
    const char *now = server_cfg(x->srv)->replica_of;
    if (now && !strcmp(now, target)) {
        resp_out_simple(&x->r->out, "OK Already connected to specified master");
        reply_done(x);
        return;
    }
    if (server_restart_following(x->srv, target)) {
        reply_error_done(x, "ERR REPLICAOF HOST PORT needs `evstore serve` (it restarts the "
                            "node to follow)");
        return;
    }
    server_log(x->srv, EVS_LOG_WARN, "REPLICAOF %s: stopping to start again as its follower "
               "(was %s%s)", target, now ? "following " : "leading", now ? now : "");
    resp_out_simple(&x->r->out, "OK");
    reply_done(x);
}

/* REPLICAOF NO ONE: stop following and lead (promotion, fenced by a new epoch). */
void cmd_replicaof(cmd_ctx *x)
{
    if (x->capture) {
        reply_error_done(x, "ERR REPLICAOF is not allowed inside MULTI");
        return;
    }
    if (!(arg_is(x, 1, "NO") && arg_is(x, 2, "ONE"))) {
        replicaof_host(x);
        return;
    }
    if (!server_is_follower(x->srv)) {
        resp_out_simple(&x->r->out, "OK"); /* a leader already, as Redis answers */
        reply_done(x);
        return;
    }
    repl_follower_stop();
    evs_set_visible_cap(server_store(x->srv), EVS_CAP_NONE); /* W6: its history is all it holds */
    evs_epoch e;
    evs_error err;
    if (evs_promote(server_store(x->srv), &e, &err)) {
        resp_out_error(&x->r->out, "ERR promotion failed: %s", err.msg);
        reply_done(x);
        return;
    }
    server_cfg_mut(x->srv)->replica_of = NULL;
    repl_visible_cap_init(x->srv);
    server_log(x->srv, EVS_LOG_INFO, "promoted to leader: epoch %" PRIu32 " starts at log "
               "position %" PRIu64 " (was following %s:%d)", e.epoch, e.start, F.host, F.port);
    resp_out_simple(&x->r->out, "OK");
    reply_done(x);
}
