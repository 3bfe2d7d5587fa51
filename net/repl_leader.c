/*
 * repl_leader.c — the leader's side of replication (docs/replication.md).
 *
 *   REPLSYNC <store id> <position> <listening port> [<epoch> <uuid hex> <start>]...
 *
 * A follower names its store, the end of its log and its epoch history. The leader answers
 * `*3 TRUNCATE <position> <why>` when the follower's log goes past the point where the two
 * histories part (it cuts there and asks again), `*3 SNAPSHOT <why> :<own bytes>` when what
 * it lacks is below the leader's retention (it copies the whole store, as a backup, and asks
 * again; own bytes, those past where the histories part, are 0 when its log is a prefix of the
 * leader's: then its old store holds nothing the leader's retention did not delete), or
 * `*4 CONTINUE <position> <store id> [[epoch, uuid, start]...]` and from then on the
 * connection carries the leader's log to it, as frames
 *
 *   *3 $3 LOG :<log position> $<n> <n bytes: whole records>
 *   *4 $5 CHECK :<from> :<to> :<crc> once, first: the CRC of the log's bytes [from, to) (F6)
 *   *2 $5 SHOWN :<log position>      the leader's readers see the log up to here (F5)
 *   *2 $4 PING :<the leader's log start>                          once a second
 *
 * while the follower sends `REPLCONF ACK <received> <fsynced>` (no reply). Or it answers an
 * error and closes: a different store, a follower behind the leader's retention, histories
 * that diverged.
 *
 * Invariants:
 *  F1. A follower is sent bytes from exactly the position its log ends at, in log order,
 *      whole records, each write batch as soon as it is written, before the leader syncs it
 *      (evs_log_span, L1; the store's written hook: repl_leader_on_written(true) writes it
 *      to the sockets when the loop commits the batch itself, before its sync; from the
 *      writer thread, under --ack all, the hook wakes the loop to ship it while that thread
 *      syncs).
 *  F2. Continue only when the follower's history is a prefix of the leader's: every epoch of
 *      its history is the leader's (same number, UUID and start) and its log does not reach
 *      past where the leader's next epoch began. A follower past the point where the two
 *      histories part is told to cut there (TRUNCATE); one that shares no epoch is refused.
 *      Nothing is ever streamed over a history that is not the leader's.
 *  F3. A follower's state goes with its connection (slot free function): no stream to a
 *      closed socket. A follower dropped while it is pumped (its next bytes are gone, say) is
 *      freed there and then: a pass over the followers takes the next one first, and touches
 *      a follower no more once pump says it was dropped.
 *  F4. A frame's log bytes are never staged in a buffer between the segment file and the
 *      connection: a large frame (catch-up) goes from the segment file to the socket by
 *      sendfile (evs_log_span), the segment held open until the output buffer is done with it
 *      (a follower behind retention still gets the bytes it was promised); a small one (live
 *      streaming) is read from the file straight into the output buffer.
 *  F5. A follower is sent SHOWN <p> after CONTINUE, before any frame, and whenever the
 *      leader's readers come to see further (evs_store_stats.visible_end: after the sync,
 *      and under --ack all after the followers' acknowledgements), after the frames the loop
 *      had for it then, and before the loop answers anything a batch's visibility completed
 *      (run_completions, an acknowledgement's waiters): a client that reads a follower after
 *      its answer finds its writes shown there (the follower has read SHOWN first, short of
 *      a stall), as it did when followers showed what they had. The
 *      follower's readers see nothing past the last p (repl_follower.c W6): never a record
 *      a leader's power cut could take back, nor one --ack all holds here.
 *  F6. A follower continuing at `to` > 0 is sent CHECK with the CRC of the leader's last bytes
 *      before `to` (up to CHECK_BYTES, within one segment) before any frame: equal histories
 *      (F2) whose logs differ there — a store copied while stopped and led in two places —
 *      are told apart by the follower, which then copies the leader's store instead of
 *      appending to a log that is not the leader's (repl_follower.c W8).
 *  F7. A new follower (an empty log, no history of its own) of a log holding at least
 *      --full-sync-bytes is answered SNAPSHOT with no bytes of its own, as Redis gives a new
 *      replica a full resynchronization: it copies the store (segments byte for byte, the
 *      index compacted) as a backup would and continues from the copy's cut, instead of
 *      replaying the log and building its index entry by entry (docs/replication.md,
 *      "Lineage check"). Below that, or with 0, it replays the log from its start.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "commands.h"

#define FRAME_MAX (1u << 20)     /* bytes of log per frame (a larger record goes alone)    */
#define OUT_HIGH (4u << 20)      /* refill the socket's buffer up to this                  */
#define SENDFILE_MIN (64u << 10) /* frames from this size go by sendfile (F4)              */
#define ACK_TIMEOUT_S 30         /* a follower silent this long is dropped                 */
#define CHECK_BYTES 4096         /* log bytes before a follower's end compared at connect  */

/* Replication lag: the time from a batch becoming visible on the leader (its writes are
 * acknowledged then) to a follower's acknowledgement that it has fsynced it — measured on the
 * leader, so it includes the acknowledgement's trip back. Visible batches are sampled (end
 * position, time) into a ring; an ACK turns the samples it covers into lag values, kept in a
 * window of the last LAG_WINDOW for INFO (repl_lag_p50_us, repl_lag_p99_us). */
#define LAG_RING 8192
#define LAG_WINDOW 65536
static struct { uint64_t end, ns; } lag_ring[LAG_RING];
static uint64_t lag_head; /* samples pushed so far */
static uint32_t lag_vals[LAG_WINDOW];
static uint64_t lag_count;

typedef struct follower {
    struct follower *next;
    conn *c;
    server *srv;
    uint64_t pos;                /* next log position to send                              */
    uint64_t received, fsynced;  /* its last ACK                                           */
    time_t last_ack, last_send;
    int port;                    /* its own RESP port, for ROLE                            */
    char ip[64];
    uint64_t lag_next;           /* the next lag sample this follower has not covered yet   */
    uint64_t shown;              /* the last SHOWN position sent (F5)                       */
    bool shown_sent;             /* ... one was                                             */
} follower;

static follower *followers;
static size_t nfollowers;
static atomic_bool shipping; /* followers are connected: the written hook wakes the loop */
static void waiters_check(void);
static void visible_cap_update(server *srv);

static void follower_free(void *arg)
{
    follower *f = arg;
    for (follower **pp = &followers; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            nfollowers--;
            atomic_store(&shipping, nfollowers > 0);
            break;
        }
    free(f);
}

static void span_release(struct evbuffer_file_segment const *seg, int flags, void *hold)
{
    (void)seg;
    (void)flags;
    evs_log_release(hold);
}

/* The bytes of a small frame (n of fd from off) and its closing CRLF, put in one reservation
 * of the output buffer's space: one copy, and the frame goes out in one write with its
 * neighbours (F4). */
static int add_read_crlf(struct evbuffer *out, size_t n, int fd, uint64_t off)
{
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)(n + 2), &v, 1) != 1)
        return -1;
    for (size_t got = 0; got < n;) {
        ssize_t r = pread(fd, (char *)v.iov_base + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1; /* nothing committed */
        got += (size_t)r;
    }
    memcpy((char *)v.iov_base + n, "\r\n", 2);
    v.iov_len = n + 2;
    return evbuffer_commit_space(out, &v, 1);
}

/* A LOG frame (F4): from SENDFILE_MIN bytes up its log bytes go from the segment file to the
 * socket by sendfile, the segment held until they are sent; a smaller one is read into the
 * output buffer (a sendfile and two more writes per small frame cost more than the copy). */
static int send_frame(follower *f, struct evbuffer *out, uint64_t at, size_t n, int fd,
                      uint64_t off, void *hold)
{
    int rc = evbuffer_add_printf(out, "*3\r\n$3\r\nLOG\r\n:%" PRIu64 "\r\n$%zu\r\n", at, n) < 0;
    if (n < SENDFILE_MIN) {
        rc = rc || add_read_crlf(out, n, fd, off);
        evs_log_release(hold);
    } else {
        struct evbuffer_file_segment *seg =
            evbuffer_file_segment_new(fd, (ev_off_t)off, (ev_off_t)n, 0);
        if (!seg) {
            evs_log_release(hold);
            return -1;
        }
        evbuffer_file_segment_add_cleanup_cb(seg, span_release, hold);
        rc = rc || out_add_file(out, seg, n) || evbuffer_add(out, "\r\n", 2);
        evbuffer_file_segment_free(seg); /* the evbuffer holds its own reference */
    }
    f->last_send = time(NULL);
    return rc ? -1 : 0;
}

/* Send what the log has past f->pos, up to OUT_HIGH unsent bytes (F1). False: f's connection
 * was dropped, and f may be freed with it (F3): its caller must not touch f again. */
static bool pump(follower *f)
{
    evs_store *st = server_store(f->srv);
    struct evbuffer *out = conn_output(f->c);
    while (out && evbuffer_get_length(out) < OUT_HIGH) {
        uint64_t at = 0, off = 0;
        int fd = -1;
        void *hold = NULL;
        evs_error err;
        long n = evs_log_span(st, f->pos, FRAME_MAX, &at, &fd, &off, &hold, &err);
        if (n < 0) {
            server_log(f->srv, EVS_LOG_WARN, "follower %s:%d: stopped streaming: %s", f->ip,
                       f->port, err.msg);
            conn_abort(f->c, NULL);
            return false;
        }
        if (n == 0)
            return true;
        if (send_frame(f, out, at, (size_t)n, fd, off, hold)) {
            /* out of memory, or the segment file could not be read: a frame half queued */
            conn_abort(f->c, "cannot queue a frame of the log");
            return false;
        }
        f->pos = at + (uint64_t)n;
    }
    return true;
}

static void on_drain(conn *c, void *arg)
{
    (void)c;
    pump(arg);
}

/* The lag samples follower f's last ACK covers become lag values (0 for one it covered
 * before the batch became visible here: it was shipped before the sync, F1). */
static void lag_take(follower *f)
{
    uint64_t now = evs_mono_ns();
    if (lag_head - f->lag_next > LAG_RING)
        f->lag_next = lag_head - LAG_RING; /* samples overwritten: skip them */
    while (f->lag_next < lag_head && lag_ring[f->lag_next % LAG_RING].end <= f->fsynced) {
        uint64_t us = (now - lag_ring[f->lag_next % LAG_RING].ns) / 1000;
        lag_vals[lag_count++ % LAG_WINDOW] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
        f->lag_next++;
    }
}

/* How far readers here see (evs_store_stats.visible_end). */
static uint64_t visible_end(server *srv)
{
    evs_store_stats s;
    evs_store_stats_get(server_store(srv), &s);
    return s.visible_end;
}

/* SHOWN <p>: how far the leader's readers see (p, read once by the caller for all its
 * followers), when that moved (F5). True when queued. */
static bool send_shown(follower *f, uint64_t p)
{
    struct evbuffer *out = conn_output(f->c);
    if (!out || (f->shown_sent && p <= f->shown))
        return false;
    f->shown = p;
    f->shown_sent = true;
    evbuffer_add_printf(out, "*2\r\n$5\r\nSHOWN\r\n:%" PRIu64 "\r\n", p);
    return true;
}

/* F6: CHECK <from> <to> <crc>, before the first frame: the CRC of this log's last bytes
 * before the follower's end `to` (up to CHECK_BYTES, in one segment). The lineage check
 * compares histories; a store copied while stopped and led in two places has one history
 * and two logs, which these bytes tell apart: the follower compares its own and, if they
 * differ, copies this store (its own kept aside). A follower from before CHECK ignores it. */
static void send_check(follower *f, evs_store *st, uint64_t to)
{
    struct evbuffer *out = conn_output(f->c);
    uint64_t from = UINT64_MAX;
    uint32_t crc;
    evs_error err;
    if (out && to && !evs_log_crc(st, &from, to, CHECK_BYTES, &crc, &err))
        evbuffer_add_printf(out, "*4\r\n$5\r\nCHECK\r\n:%" PRIu64 "\r\n:%" PRIu64 "\r\n:%" PRIu32
                            "\r\n", from, to, crc);
}

bool repl_leader_shipping(void) { return atomic_load(&shipping); }

void repl_leader_shown_all(void)
{
    if (!followers)
        return; /* (run at every completion: no store read without followers) */
    uint64_t p = visible_end(followers->srv);
    /* written now: the replies that follow go out directly, not at the loop's next turn */
    for (follower *f = followers; f; f = f->next)
        if (send_shown(f, p))
            conn_write_now(f->c);
}

void repl_leader_on_written(bool write_now)
{
    for (follower *f = followers, *next; f; f = next) {
        next = f->next; /* (pump may free f) */
        if (pump(f) && write_now)
            conn_write_now(f->c);
    }
}

void repl_leader_on_visible(void)
{
    if (!followers)
        return;
    evs_store_stats s; /* a lag sample: this end became visible now */
    evs_store_stats_get(server_store(followers->srv), &s);
    lag_ring[lag_head % LAG_RING].end = s.log_end;
    lag_ring[lag_head % LAG_RING].ns = evs_mono_ns();
    lag_head++;
    for (follower *f = followers, *next; f; f = next) {
        next = f->next;
        if (!pump(f))
            continue; /* dropped, maybe freed */
        lag_take(f); /* one that has fsynced it already */
        send_shown(f, s.visible_end);
    }
}

void repl_leader_cron(void)
{
    time_t now = time(NULL);
    for (follower *f = followers, *next; f; f = next) {
        next = f->next;
        if (now - f->last_ack > ACK_TIMEOUT_S) {
            server_log(f->srv, EVS_LOG_WARN, "follower %s:%d: no acknowledgement for %d s: "
                       "dropped", f->ip, f->port, ACK_TIMEOUT_S);
            conn_abort(f->c, NULL);
            continue;
        }
        /* heartbeat, with the log's start: the follower deletes what retention deleted here */
        evs_store_stats s;
        evs_store_stats_get(server_store(f->srv), &s);
        if (conn_output(f->c))
            evbuffer_add_printf(conn_output(f->c), "*2\r\n$4\r\nPING\r\n:%llu\r\n",
                                (unsigned long long)s.log_start);
        f->last_send = now;
    }
}

size_t repl_leader_count(void) { return nfollowers; }

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void repl_lag_stats(uint64_t *n, uint32_t *p50_us, uint32_t *p99_us)
{
    size_t k = lag_count < LAG_WINDOW ? (size_t)lag_count : LAG_WINDOW;
    *n = lag_count;
    *p50_us = *p99_us = 0;
    if (!k)
        return;
    uint32_t *v = malloc(k * sizeof *v);
    if (!v)
        return;
    memcpy(v, lag_vals, k * sizeof *v);
    qsort(v, k, sizeof *v, cmp_u32);
    *p50_us = v[k / 2];
    *p99_us = v[(k * 99) / 100 < k ? (k * 99) / 100 : k - 1];
    free(v);
}

void repl_leader_each(void (*fn)(void *arg, const char *ip, int port, uint64_t received,
                                 uint64_t fsynced, long lag_s),
                      void *arg)
{
    time_t now = time(NULL);
    for (follower *f = followers; f; f = f->next)
        fn(arg, f->ip, f->port, f->received, f->fsynced, (long)(now - f->last_ack));
}

/* ---- REPLSYNC ----------------------------------------------------------------------------- */

static bool parse_u64(const resp_arg *a, uint64_t *v)
{
    long long x;
    if (!arg_ll(a, &x) || x < 0)
        return false;
    *v = (uint64_t)x;
    return true;
}


/* F2: where may a follower with this history and log end continue? NULL if it may (at pos),
 * else the reason. */
static bool same_epoch(const evs_epoch *a, const evs_epoch *b)
{
    return a->epoch == b->epoch && a->start == b->start && !memcmp(a->uuid, b->uuid, 16);
}

/*
 * F2. The two histories agree on their first k epochs. Within one epoch there was one writer,
 * so both logs hold the same bytes up to `part`: where the first epoch they do not share
 * begins (the leader's, or the follower's own — two nodes promoted independently to the same
 * epoch number have different UUIDs), or where the leader's log ends. A follower whose log
 * and history stop there continues; one past it is told to cut at `part`.
 */
static const char *lineage_check(const evs_epoch *mine, size_t nm, const evs_epoch *theirs,
                                 size_t nt, uint64_t pos, uint64_t end, char *buf, size_t cap,
                                 uint64_t *cut_at)
{
    *cut_at = UINT64_MAX;
    if (nt == 0 || nm == 0) {
        if (pos <= end && (nt == 0) == (nm == 0))
            return NULL; /* stores from before epochs: positions are all there is */
        snprintf(buf, cap, "the %s has no epoch history", nt == 0 ? "follower" : "leader");
        return buf;
    }
    size_t k = 0;
    while (k < nm && k < nt && same_epoch(&mine[k], &theirs[k]))
        k++;
    if (k == 0) {
        snprintf(buf, cap, "the follower's epoch %" PRIu32 " is not in the leader's history: "
                 "the histories share no epoch", theirs[0].epoch);
        return buf;
    }
    uint64_t part = end;
    if (k < nm && mine[k].start < part)
        part = mine[k].start;
    if (k < nt && theirs[k].start < part)
        part = theirs[k].start;
    if (k == nt && pos <= part)
        return NULL; /* the follower's log is a prefix of the leader's history */
    if (pos <= part) { /* an epoch of its own begun exactly where its log ends: nothing to cut */
        snprintf(buf, cap, "the follower's epoch %" PRIu32 " (from log position %" PRIu64
                 ") is not the leader's, and its log ends there: remove its folder's EPOCHS "
                 "entry or copy the leader's store", theirs[k].epoch, theirs[k].start);
        return buf;
    }
    *cut_at = part;
    if (k < nt && part == theirs[k].start)
        snprintf(buf, cap, "the follower's epoch %" PRIu32 " began at log position %" PRIu64
                 " and is not the leader's (%s): its %" PRIu64 " bytes from there were never "
                 "the leader's, it must cut them first", theirs[k].epoch, part,
                 k < nm && mine[k].epoch == theirs[k].epoch
                     ? "the leader's epoch of that number has another UUID: two promotions"
                     : "the leader has no such epoch",
                 pos - part);
    else if (k < nm && part == mine[k].start)
        snprintf(buf, cap, "the follower's log goes %" PRIu64 " bytes past log position %"
                 PRIu64 ", where the leader's epoch %" PRIu32 " began: those bytes were "
                 "never the leader's, it must cut them first", pos - part, part, mine[k].epoch);
    else
        snprintf(buf, cap, "the follower's log ends at %" PRIu64 ", past the leader's %" PRIu64
                 " in the same epoch %" PRIu32 ": the histories diverged", pos, end,
                 theirs[k - 1].epoch);
    return buf;
}

void cmd_replsync(cmd_ctx *x)
{
    evs_store *st = server_store(x->srv);
    uint64_t pos, port;
    if (x->argc < 4 || (x->argc - 4) % 3 || !parse_u64(&x->argv[2], &pos) ||
        !parse_u64(&x->argv[3], &port) || x->argv[1].len != 32) {
        reply_error_done(x, "ERR syntax: REPLSYNC <store id> <position> <port> [<epoch> <uuid> "
                            "<start>]...");
        return;
    }
    if (server_cfg(x->srv)->replica_of) {
        reply_error_done(x, conn_peer_is(x->c, repl_follower_link_fd())
                                ? "ERR this is the follower's own address: a node cannot "
                                  "replicate from itself (REPLICAOF NO ONE, or name its leader)"
                                : "ERR this node is a follower: replicate from its leader");
        return;
    }
    size_t nt = (x->argc - 4) / 3;
    evs_epoch *theirs = calloc(nt + 1, sizeof *theirs);
    size_t nm = evs_epochs(st, NULL, 0);
    evs_epoch *mine = calloc(nm + 1, sizeof *mine);
    if (!theirs || !mine) {
        free(theirs);
        free(mine);
        reply_error_done(x, "ERR out of memory");
        return;
    }
    nm = evs_epochs(st, mine, nm);
    for (size_t i = 0; i < nt; i++) {
        uint64_t e, start;
        const resp_arg *a = &x->argv[4 + 3 * i];
        if (!parse_u64(&a[0], &e) || e > UINT32_MAX || evs_uuid_parse((const char *)a[1].ptr, a[1].len, theirs[i].uuid) ||
            !parse_u64(&a[2], &start)) {
            free(theirs);
            free(mine);
            reply_error_done(x, "ERR malformed epoch in REPLSYNC");
            return;
        }
        theirs[i].epoch = (uint32_t)e;
        theirs[i].start = start;
    }
    evs_store_stats s;
    evs_store_stats_get(st, &s);
    const char *id = evs_store_id(st);
    bool fresh = pos == 0 && nt <= 1; /* an empty follower takes this store's identity */
    char why[400];
    const char *bad = NULL;
    uint64_t cut_at = UINT64_MAX;
    if (!fresh && memcmp(x->argv[1].ptr, id, 32))
        bad = "the follower holds a different store (its ID is not the leader's)";
    else if (!fresh)
        bad = lineage_check(mine, nm, theirs, nt, pos, s.log_end, why, sizeof why, &cut_at);
    uint64_t full = server_cfg(x->srv)->full_sync_bytes;
    bool whole = fresh && full && s.log_end - s.log_start >= full; /* F7 */
    if ((bad && cut_at != UINT64_MAX && cut_at < s.log_start) || (!bad && pos < s.log_start) ||
        whole) {
        /* what the follower lacks is gone here (retention): it needs the whole store; or it
         * is new, and copying the store is faster than replaying (and indexing) the log */
        if (whole)
            snprintf(why, sizeof why, "a new follower, and the leader's log holds %" PRIu64
                     " bytes (--full-sync-bytes %" PRIu64 "): it copies the store whole",
                     s.log_end - s.log_start, full);
        else
            snprintf(why, sizeof why, "the follower's log %s %" PRIu64 ", below the leader's "
                     "start %" PRIu64 " (retention deleted the rest): it needs a snapshot",
                     bad ? "parts from the leader's at" : "ends at", bad ? cut_at : pos,
                     s.log_start);
        server_log(x->srv, whole ? EVS_LOG_INFO : EVS_LOG_WARN,
                   "follower sent to take a snapshot: %s", why);
        resp_out_array(&x->r->out, 3);
        resp_out_cstr(&x->r->out, "SNAPSHOT");
        resp_out_cstr(&x->r->out, why);
        resp_out_int(&x->r->out, bad ? (long long)(pos - cut_at) : 0); /* bytes never here */
        x->r->close_after = true;
        reply_done(x);
        free(theirs);
        free(mine);
        return;
    }
    if (bad && cut_at != UINT64_MAX) {
        /* the follower must cut its log at cut_at, then continue from there */
        server_log(x->srv, EVS_LOG_WARN, "follower told to cut its log at %" PRIu64 ": %s",
                   cut_at, bad);
        resp_out_array(&x->r->out, 3);
        resp_out_cstr(&x->r->out, "TRUNCATE");
        resp_out_int(&x->r->out, (long long)cut_at);
        resp_out_cstr(&x->r->out, bad);
        x->r->close_after = true;
        reply_done(x);
        free(theirs);
        free(mine);
        return;
    }
    if (bad) {
        server_log(x->srv, EVS_LOG_WARN, "replication refused: %s", bad);
        resp_out_error(&x->r->out, "ERR replication refused: %s", bad);
        x->r->close_after = true;
        reply_done(x);
        free(theirs);
        free(mine);
        return;
    }
    follower *f = calloc(1, sizeof *f);
    void **slot = conn_cmd_state(x->c, CONN_SLOT_REPLICA, follower_free);
    if (!f || *slot) {
        free(f);
        free(theirs);
        free(mine);
        reply_error_done(x, *slot ? "ERR this connection replicates already" : "ERR out of memory");
        return;
    }
    *slot = f;
    f->c = x->c;
    f->srv = x->srv;
    f->pos = pos;
    f->port = (int)port;
    f->last_ack = f->last_send = time(NULL);
    f->lag_next = lag_head;
    conn_peer(x->c, f->ip, sizeof f->ip);
    f->next = followers;
    followers = f;
    nfollowers++;
    atomic_store(&shipping, true);
    resp_out *o = &x->r->out;
    resp_out_array(o, 4);
    resp_out_cstr(o, "CONTINUE");
    resp_out_int(o, (long long)pos);
    resp_out_bulk(o, id, 32);
    resp_out_array(o, nm);
    for (size_t i = 0; i < nm; i++) {
        char u[33];
        evs_uuid_format(mine[i].uuid, u);
        resp_out_array(o, 3);
        resp_out_int(o, mine[i].epoch);
        resp_out_bulk(o, u, 32);
        resp_out_int(o, (long long)mine[i].start);
    }
    reply_done(x);
    server_log(x->srv, EVS_LOG_INFO, "follower %s:%d replicates from log position %" PRIu64,
               f->ip, f->port, pos);
    free(theirs);
    free(mine);
    conn_set_drain(x->c, on_drain, f);
    send_shown(f, visible_end(x->srv)); /* before the first frame (F5) */
    send_check(f, st, pos);
    pump(f);
}

/* REPLCONF ACK <received> <fsynced>: no reply, as Redis. REPLCONF anything else: +OK. */
void cmd_replconf(cmd_ctx *x)
{
    void **slot = conn_cmd_state(x->c, CONN_SLOT_REPLICA, follower_free);
    follower *f = *slot;
    if (arg_is(x, 1, "ACK") && f && x->argc >= 3) {
        uint64_t rcv = 0, fs = 0;
        parse_u64(&x->argv[2], &rcv);
        if (x->argc >= 4)
            parse_u64(&x->argv[3], &fs);
        f->received = rcv;
        f->fsynced = fs;
        f->last_ack = time(NULL);
        lag_take(f);
        visible_cap_update(x->srv); /* before the waits it releases are answered */
        repl_leader_shown_all(); /* so are the followers' readers told (F5) */
        waiters_check();
        reply_done(x); /* an empty reply: nothing is sent */
        return;
    }
    resp_out_simple(&x->r->out, "OK");
    reply_done(x);
}

/* ---- WAIT numreplicas timeout ------------------------------------------------------------- */

/* Waiting for followers: fn(arg, got) runs on the loop once `want` followers have fsynced the
 * log up to `target`, or when the timeout passes (got: how many had by then). WAIT waits for
 * the log's end as it was when WAIT arrived: everything the client wrote before lies below;
 * an XADD under --ack all waits for the end of the log after its batch was written. */
typedef struct waiter {
    struct waiter *next;
    uint64_t target;
    long long want;
    struct event *timer;
    void (*fn)(void *arg, long long got);
    void *arg;
} waiter;

static waiter *waiters;

static long long count_at(uint64_t target)
{
    long long n = 0;
    for (follower *f = followers; f; f = f->next)
        n += f->fsynced >= target;
    return n;
}

/* --ack all: readers here see only what --min-replicas followers have fsynced (the store's
 * visibility cap, docs/replication.md "Consistency"): the highest position that many hold.
 * The cap only rises; it starts at the log's end when the node begins to lead. */
static uint64_t cap_now;

void repl_visible_cap_init(server *srv)
{
    if (!server_cfg(srv)->ack_all || server_is_follower(srv))
        return;
    evs_store_stats s;
    evs_store_stats_get(server_store(srv), &s);
    cap_now = s.log_end;
    evs_set_visible_cap(server_store(srv), cap_now);
}

uint64_t repl_unseen_end(server *srv)
{
    if (!server_cfg(srv)->ack_all || server_is_follower(srv))
        return 0;
    evs_store_stats s;
    evs_store_stats_get(server_store(srv), &s);
    return s.visible_end < s.log_end ? s.log_end : 0;
}

static void visible_done(void *arg, long long got)
{
    (void)got; /* a timeout: the client goes on, as it would without followers */
    server_complete(arg);
}

/* Complete p once readers here see the log up to target, or at --ack-timeout. */
static void complete_when_visible(server *srv, pending_t *p, uint64_t target)
{
    const server_config *cfg = server_cfg(srv);
    if (repl_wait(srv, target, cfg->min_replicas, cfg->ack_timeout_ms, visible_done, p))
        server_complete(p);
}

void repl_fence(cmd_ctx *x)
{
    uint64_t end = repl_unseen_end(x->srv);
    pending_t *p = end ? server_fence(x) : NULL;
    if (p)
        complete_when_visible(x->srv, p, end);
}

pending_t *repl_hold_visible(server *srv, pending_t *p, fill_fn fill, void *result)
{
    uint64_t end = repl_unseen_end(srv);
    pending_t *again = end ? server_hold_again(p, fill, result) : NULL;
    if (again)
        complete_when_visible(srv, again, end);
    return again;
}

static void visible_cap_update(server *srv)
{
    if (!server_cfg(srv)->ack_all || server_is_follower(srv))
        return;
    uint64_t cap = cap_now;
    for (follower *f = followers; f; f = f->next)
        if (f->fsynced > cap && count_at(f->fsynced) >= server_cfg(srv)->min_replicas)
            cap = f->fsynced;
    if (cap > cap_now) {
        cap_now = cap;
        evs_set_visible_cap(server_store(srv), cap);
    }
}

static void wait_finish(waiter *w)
{
    for (waiter **pp = &waiters; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    if (w->timer)
        event_free(w->timer);
    w->fn(w->arg, count_at(w->target));
    free(w);
}

static void wait_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wait_finish(arg);
}

/* After an acknowledgement: release the waits it satisfies. */
static void waiters_check(void)
{
    for (waiter *w = waiters, *next; w; w = next) {
        next = w->next;
        if (count_at(w->target) >= w->want)
            wait_finish(w);
    }
}

int repl_wait(server *srv, uint64_t target, long long want, long long timeout_ms,
              void (*fn)(void *arg, long long got), void *arg)
{
    if (count_at(target) >= want) {
        fn(arg, count_at(target));
        return 0;
    }
    waiter *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    w->target = target;
    w->want = want;
    w->fn = fn;
    w->arg = arg;
    if (timeout_ms > 0) {
        w->timer = evtimer_new(server_base(srv), wait_timeout, w);
        struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
        if (!w->timer || evtimer_add(w->timer, &tv)) {
            if (w->timer)
                event_free(w->timer);
            free(w);
            return -1;
        }
    }
    w->next = waiters;
    waiters = w;
    return 0;
}

long long repl_good_followers(void) { return (long long)nfollowers; }

/* ---- WAIT numreplicas timeout -------------------------------------------------------------- */

typedef struct wait_cmd {
    pending_t *p;
    long long got;
} wait_cmd;

static bool wait_fill(pending_t *p, reply *r, void *result)
{
    (void)p;
    wait_cmd *w = result;
    resp_out_int(&r->out, w->got);
    free(w);
    return true;
}

static void wait_done(void *arg, long long got)
{
    wait_cmd *w = arg;
    w->got = got;
    server_complete(w->p);
}

void cmd_wait(cmd_ctx *x)
{
    long long want, timeout;
    const char *why = NULL; /* Redis 7.0's order: the role, the count, the timeout */
    if (server_cfg(x->srv)->replica_of)
        why = "ERR WAIT cannot be used with replica instances. Please also note that since Redis "
              "4.0 if a replica is configured to be writable (which is not the default) writes to "
              "replicas are just local and are not propagated.";
    else if (!arg_ll(&x->argv[1], &want))
        why = ERR_INT;
    else if (!arg_ll(&x->argv[2], &timeout))
        why = "ERR timeout is not an integer or out of range";
    else if (timeout < 0)
        why = "ERR timeout is negative";
    if (why) {
        reply_error_done(x, why);
        return;
    }
    evs_store_stats s;
    evs_store_stats_get(server_store(x->srv), &s);
    if (count_at(s.log_end) >= want || x->capture) {
        resp_out_int(&x->r->out, count_at(s.log_end));
        reply_done(x);
        return;
    }
    wait_cmd *w = calloc(1, sizeof *w);
    if (w)
        w->p = server_hold(x, wait_fill, w, false);
    if (!w || !w->p) {
        free(w);
        reply_error_done(x, "ERR out of memory");
        return;
    }
    if (repl_wait(x->srv, s.log_end, want, timeout, wait_done, w)) {
        w->got = count_at(s.log_end);
        server_complete(w->p);
    }
}

/* The server is stopping: answer every wait with what it has. */
void repl_leader_shutdown(void)
{
    while (waiters)
        wait_finish(waiters);
}
