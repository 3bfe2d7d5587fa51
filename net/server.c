/*
 * server.c — listener, connections, in-order replies, loop turns (one submission hold and
 * one reply flush per turn), completions from the store, signals. Invariants N1-N4 in
 * server.h.
 */
#include "server.h"
#include "fdlimit.h"
#include "commands.h"
#include "freelist.h"

#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct pending {
    pending_t *next;
    conn *c;          /* NULL: a posted task (task/task_arg)                          */
    void (*task)(void *arg);
    void *task_arg;
    reply *r;
    bool pipelinable;
    fill_fn fill;
    void *result;
};

struct conn {
    server *s;
    struct bufferevent *bev; /* output and write errors; input is read by on_readable        */
    struct event *rd;        /* the socket's reads: deleted while they are held or closing   */
    long long id;
    int proto;
    bool authed;
    bool closing;   /* stop reading; close once the last reply is written              */
    bool closed;    /* the socket is gone; freed when holds reaches 0 (N3)               */
    int holds;      /* completions still to come                                       */
    int waits;      /* replies still to come from the store (N4)                       */
    int pipe_waits; /* ... of which pipelinable writes                                 */
    bool paused;    /* input waits for replies to come (N4)                            */
    size_t need;    /* the partial command needs this many bytes before re-parsing     */
    resp_progress progress; /* how far the partial command was checked                 */
    bool reading_held; /* socket reads paused while its writes are in flight (batching)  */
    time_t last_io;    /* last time bytes arrived (--timeout)                            */
    reply *head, *tail;
    resp_arg *argv;
    size_t argcap;
    uint8_t *inline_buf;
    conn *prev, *next;
    void *cmd_state[CONN_SLOTS];
    void (*cmd_state_free[CONN_SLOTS])(void *);
    void (*drain)(conn *c, void *arg); /* conn_set_drain                                    */
    void *drain_arg;
    bool flush_queued; /* on the server's flush list: its replies go out at the turn's end */
    conn *flush_next;
    unsigned exp_gen;  /* == s->gen: answered, idle, expected in the next batch (G1)     */
    bool quick;        /* its last command came soon after its replies went out (G1)   */
    bool completed;    /* a reply was completed by the store since its last flush (G1) */
    uint64_t idle_since; /* when its replies were all out with nothing in flight, or 0   */
};

struct server {
    server_config cfg;
    struct event_base *base;
    struct evconnlistener *lis;
    struct fdlimit_listener *lis_guard; /* fdlimit.c F3 */
    evs_store *st;
    struct event *wake, *sigterm, *visible, *written, *cron;
    pthread_t loop_tid;
    int stop_pipe[2];              /* the stop signals' (stop_signals_watch)                */
    wake_acc vis;          /* streams made visible since the last visible_cb (wake.h)   */
    struct http_api *http;
    /* completions, newest first: pushed by any thread, taken whole by the loop (enqueue) */
    _Atomic(pending_t *) done;
    conn *conns;
    int nconns;
    bool stopping; /* the loop has ended: completions answer, no new input is run */
    unsigned turn_reads; /* reads run in this loop turn; the first took a hold (read_cb) */
    conn *flush_head;    /* connections with replies to write at the turn's end (N3 hold) */
    bool restart;  /* server_restart: return SERVER_RESTART after the clean stop  */
    long long next_id;
    unsigned gen;          /* batches committed on the loop (G1)                        */
    unsigned expect;       /* connections with exp_gen == gen not read from since        */
    uint64_t linger_until; /* the batch waiting for them is committed by then (G2)       */
    struct event *linger;  /* wakes the loop at linger_until                              */
    uint64_t commit_ns;    /* recent duration of a batch committed on the loop (G1, G2)  */
    uint64_t commit_waits, commit_wait_timeouts; /* G2, for INFO                          */
    uint32_t linger_miss;  /* recent share of waits that ended at the bound, /65536 (G4)   */
    bool linger_timed_out; /* the wait under way ended at its bound                        */
    unsigned linger_skips; /* batches committed at once while the waits miss (G4)          */
    uint64_t rejected, commands; /* connections refused at --max-clients, commands run     */
    unsigned turn_holds;   /* replies awaited from the store since the last commit (G2)    */
    freelist spare_replies, spare_holds; /* kept for the next requests (freelist.h)        */
};

/* Spares a loop keeps (freelist.h): a c50/P16 load has 800 requests in flight. A reply keeps
 * a buffer up to SPARE_REPLY_BYTES (an XADD's answer is about 25 bytes in a 256-byte one). */
#define SPARES 1024
#define SPARE_REPLY_BYTES 1024

void server_log(server *s, int level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (s->cfg.log)
        s->cfg.log(NULL, level, buf);
}

evs_store *server_store(server *s) { return s->st; }
int server_nconns(server *s) { return s->nconns; }
size_t server_http_clients(server *s) { return http_clients(s->http); }
server_config *server_cfg_mut(server *s) { return &s->cfg; }
const server_config *server_cfg(server *s) { return &s->cfg; }

bool server_secret_is(const char *secret, const void *got, size_t len)
{
    const unsigned char *g = got;
    size_t n = strlen(secret);
    unsigned char diff = (unsigned char)(len != n);
    for (size_t i = 0; i < len; i++)
        diff |= (unsigned char)(g[i] ^ (unsigned char)secret[n ? i % n : 0]);
    return diff == 0;
}

int conn_proto(conn *c) { return c->proto; }
void conn_set_proto(conn *c, int proto) { c->proto = proto; }
long long conn_id(conn *c) { return c->id; }
bool conn_authed(conn *c) { return c->authed; }
void conn_set_authed(conn *c, bool yes) { c->authed = yes; }
void *pending_result(pending_t *p) { return p->result; }
bool pending_orphaned(pending_t *p) { return p->c->closed; }
conn *pending_conn(pending_t *p) { return p->c; }
static void flush_now(conn *c, bool direct);

/* ---- one batch for the connections a commit answered (G1-G3) -------------------------------
 * A client that waits for each answer before it asks again (a consumer's XREADGROUP then
 * XACK, redis-benchmark without pipelining) sends its next command while the batch after the
 * one that answered it is being synced: with several such clients, every other fsync carried
 * half of them (3.7 commands per fdatasync for 8 consumers, where Redis, whose fsync took
 * longer, had 8).
 * G1. A connection is quick when its last command came within one commit's time (commit_ns,
 *     the loop's recent commit duration) of its previous replies going out. A quick connection
 *     whose replies are all written, one of them completed by the store (a write, a group
 *     change; not a read answered at once), with nothing in flight, is expected: exp_gen =
 *     gen, counted in expect, until bytes come from it or it closes. Each batch committed
 *     (a turn with a reply to come from the store; reads answered at once make none) starts
 *     a new generation: an expectation lasts one batch at most.
 * G2. A batch committed on the loop (one with a reply to come from the store: not a turn of
 *     reads answered at once) waits for the expected connections, for at most one
 *     commit's time (waiting longer would cost more than a second sync), never while the
 *     server stops, and not on a leader (its batches go to the writer thread).
 * G3. A client that pauses between commands (a publisher with work to do between events) is
 *     not quick, so it never makes a batch wait.
 * G4. A wait pays only when the expected connections come within it. When more than a quarter
 *     of the recent waits (an average over about 16) ended at the bound, a batch is committed
 *     at once instead, except every LINGER_PROBE-th, which waits to measure again (rarely:
 *     each probe that misses delays its batch by the bound, and one in 16 put them in c50/P1's
 *     p99; one in 128 at 5,000 batches a second still measures every few tens of ms). Measured
 *     (docs/benchmarks.md, "Server"): 8 closed-loop clients or consumers miss about 1 wait in
 *     100 and gain 10 % from waiting; 50 closed-loop clients, whose next commands one client
 *     thread sends over about a commit's time, missed half of them, and waiting cost 12 % of
 *     throughput and a fifth of the p99. */
#define LINGER_MAX_NS 1000000ull /* G2's bound, whatever the commits take */
#define LINGER_MISS_MAX (65536u / 4) /* G4: a quarter of the recent waits */
#define LINGER_PROBE 128

static uint64_t linger_ns(const server *s)
{
    return s->commit_ns < LINGER_MAX_NS ? s->commit_ns : LINGER_MAX_NS;
}

static void expect_met(conn *c)
{
    server *s = c->s;
    if (c->exp_gen == s->gen && s->expect)
        s->expect--;
    c->exp_gen = 0;
    if (c->idle_since) {
        c->quick = evs_mono_ns() - c->idle_since <= linger_ns(s);
        c->idle_since = 0;
    }
}

static void expect_mark(conn *c)
{
    server *s = c->s;
    if (!c->completed || c->head || c->waits || c->closing || c->closed)
        return;
    c->completed = false;
    c->idle_since = evs_mono_ns();
    if (c->quick) {
        c->exp_gen = s->gen;
        s->expect++;
    }
}

/* Bytes written here go after every reply answered so far: those still waiting for the
 * turn's end (flush_replies) are handed to the bufferevent first. */
struct evbuffer *conn_output(conn *c)
{
    if (c->bev)
        flush_now(c, false);
    return c->bev ? bufferevent_get_output(c->bev) : NULL;
}

void conn_write_now(conn *c)
{
    if (c->closed)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (!evbuffer_get_length(out))
        return;
    /* as libevent's own write callback does: the bufferevent keeps its output's start frozen
     * (only it drains the buffer); an error or a full socket is the bufferevent's to meet */
    evbuffer_unfreeze(out, 1);
    (void)evbuffer_write(out, bufferevent_getfd(c->bev));
    evbuffer_freeze(out, 1);
}
bool server_is_follower(server *s) { return s->cfg.replica_of != NULL; }
static time_t process_started; /* the first server_run's start: a restart keeps it */

void server_counts_get(server *s, server_counts *out)
{
    *out = (server_counts){(uint64_t)s->next_id, s->rejected, s->commands, s->commit_waits,
                           s->commit_wait_timeouts, process_started};
}

void server_count_command(server *s) { s->commands++; }

void server_stop(server *s)
{
    event_base_loopexit(s->base, NULL);
}

void server_restart(server *s)
{
    s->restart = true;
    event_base_loopexit(s->base, NULL);
}

int server_restart_following(server *s, const char *target)
{
    if (!s->cfg.follow_next || strlen(target) >= FOLLOW_NEXT_MAX)
        return -1;
    strcpy(s->cfg.follow_next, target);
    server_restart(s);
    return 0;
}

/* Before a socket closes at shutdown: what is already answered (the completions run while
 * the store closed among it) goes out if the socket takes it now; never waits for a client. */
static void conn_flush_final(conn *c)
{
    if (!c->bev)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    evbuffer_unfreeze(out, 1); /* a socket bufferevent holds its output's front for itself */
    while (fd >= 0 && evbuffer_get_length(out) && evbuffer_write(out, fd) > 0)
        ;
}

void conn_set_drain(conn *c, void (*fn)(conn *c, void *arg), void *arg)
{
    c->drain = fn;
    c->drain_arg = arg;
    bufferevent_setwatermark(c->bev, EV_WRITE, 1u << 20, 0);
}

void conn_peer(conn *c, char *ip, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    snprintf(ip, cap, "?");
    if (getpeername(bufferevent_getfd(c->bev), (struct sockaddr *)&ss, &len) == 0)
        getnameinfo((struct sockaddr *)&ss, len, ip, (socklen_t)cap, NULL, 0, NI_NUMERICHOST);
}

/* Two socket addresses name the same end: family, port and address alike. */
static bool same_end(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr);
    }
    return false;
}

bool conn_peer_is(conn *c, int fd)
{
    struct sockaddr_storage peer, own;
    socklen_t pl = sizeof peer, ol = sizeof own;
    return fd >= 0 && c->bev &&
           !getpeername(bufferevent_getfd(c->bev), (struct sockaddr *)&peer, &pl) &&
           !getsockname(fd, (struct sockaddr *)&own, &ol) && same_end(&peer, &own);
}

static void reply_free(server *s, reply *r);

static void conn_free(conn *c)
{
    for (int i = 0; i < CONN_SLOTS; i++)
        if (c->cmd_state[i] && c->cmd_state_free[i])
            c->cmd_state_free[i](c->cmd_state[i]);
    while (c->head) {
        reply *r = c->head;
        c->head = r->next;
        reply_free(c->s, r);
    }
    free(c->argv);
    free(c->inline_buf);
    free(c);
}

static void conn_close(conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    expect_met(c);
    if (c->waits > c->pipe_waits)
        commands_conn_closed(); /* release its parked XREAD at once */
    if (c->rd)
        event_free(c->rd);
    c->rd = NULL;
    if (c->bev)
        bufferevent_free(c->bev);
    c->bev = NULL;
    server *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    if (c->holds == 0)
        conn_free(c);
}

typedef struct file_release {
    void (*fn)(void *);
    void *arg;
} file_release;

static void file_cleanup(struct evbuffer_file_segment const *seg, int flags, void *arg)
{
    (void)seg;
    (void)flags;
    file_release *f = arg;
    f->fn(f->arg);
    free(f);
}

int reply_attach_file(reply *r, int fd, uint64_t off, uint64_t len, void (*release)(void *),
                      void *arg)
{
    file_release *f = malloc(sizeof *f);
    if (!f)
        return -1;
    struct evbuffer_file_segment *seg =
        evbuffer_file_segment_new(fd, (ev_off_t)off, (ev_off_t)len, 0);
    if (!seg) {
        free(f);
        return -1;
    }
    f->fn = release;
    f->arg = arg;
    evbuffer_file_segment_add_cleanup_cb(seg, file_cleanup, f);
    r->file = seg;
    r->file_len = len;
    return 0;
}

int out_add_file(struct evbuffer *out, struct evbuffer_file_segment *seg, uint64_t len)
{
    for (uint64_t at = 0; at < len; at += OUT_FILE_PIECE) {
        uint64_t n = len - at < OUT_FILE_PIECE ? len - at : OUT_FILE_PIECE;
        if (evbuffer_add_file_segment(out, seg, (ev_off_t)at, (ev_off_t)n))
            return -1;
    }
    return 0;
}

static void reply_free(server *s, reply *r)
{
    if (r->file)
        evbuffer_file_segment_free(r->file); /* the evbuffer holds its own reference */
    if (r->out.cap > SPARE_REPLY_BYTES)
        resp_out_release(&r->out);
    if (!freelist_put(&s->spare_replies, r)) {
        resp_out_release(&r->out);
        free(r);
    }
}

/* Replies this large are handed to the output buffer instead of copied into it. */
#define REPLY_HANDOFF_BYTES (64u << 10)
static void free_reply_data(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    free(arg);
}

/* Free the reply at the head of the queue: it has been written or handed to the bufferevent. */
static void reply_pop(conn *c)
{
    reply *r = c->head;
    c->head = r->next;
    if (!c->head)
        c->tail = NULL;
    reply_free(c->s, r);
}

/*
 * Send the ready replies at the head straight to the socket, in one sendmsg, when nothing is
 * queued before them: as Redis writes to its clients before it sleeps. Handing them to the
 * bufferevent instead costs two epoll_ctl calls per reply (EPOLLOUT on, then off once written)
 * and a loop turn: with one request in flight per client that was a third of the loop's system
 * calls (strace, c50/P1). What the socket does not take (and any file, failed or closing
 * reply) goes through the bufferevent as before, so order is kept. Not for a connection with a
 * drain callback (streamed replies). Called at the end of a loop turn (flush_replies queues
 * the connection), so a pipeline's replies leave together, not one system call each.
 */
#define DIRECT_IOV 64
static void write_direct(conn *c, struct evbuffer *out)
{
    if (evbuffer_get_length(out) || c->drain || c->closing)
        return;
    struct iovec iov[DIRECT_IOV];
    int n = 0;
    for (reply *r = c->head; r && r->ready && n < DIRECT_IOV; r = r->next) {
        if (r->out.oom || r->out.over || r->file || r->close_after)
            break;
        iov[n++] = (struct iovec){r->out.data, r->out.len};
    }
    if (!n)
        return;
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t w = sendmsg(bufferevent_getfd(c->bev), &m, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w <= 0)
        return; /* full, or an error the bufferevent will meet and report */
    size_t left = (size_t)w;
    while (left && c->head) {
        reply *r = c->head;
        if (left < r->out.len) { /* the rest of this one goes through the bufferevent */
            evbuffer_add(out, r->out.data + left, r->out.len - left);
            left = r->out.len;
        }
        left -= r->out.len;
        reply_pop(c);
    }
}

/* A reply that would have passed --max-output-bytes (resp_out_set_limit) was left incomplete:
 * the client gets an error in its place, and the connection stays usable. The command itself
 * ran (an EXEC's commands are applied), and the error says so: an EXEC's error otherwise
 * reads as one that ran nothing (EXECABORT), and a client retrying it would apply it twice.
 * XREAD, XREADGROUP and XAUTOCLAIM stay within the limit instead, answering fewer than COUNT
 * (out_range's max_bytes, evs_group_op.max_bytes), and an XCLAIM that would pass it is refused
 * before it claims anything. */
static void over_limit(conn *c, reply *r)
{
    size_t limit = resp_out_limit();
    server_log(c->s, EVS_LOG_WARN,
               "client id=%lld: a reply over %zu bytes (--max-output-bytes) answered with an "
               "error", c->id, limit);
    char msg[160]; /* written whole, past the limit: the error itself must go out */
    int n = snprintf(msg, sizeof msg, "-ERR reply over the server's max-output-bytes (%zu "
                     "bytes), not sent: the command ran; ask for fewer entries (COUNT)\r\n",
                     limit);
    if (r->out.cap < (size_t)n) {
        uint8_t *d = realloc(r->out.data, (size_t)n);
        if (!d) {
            r->out.oom = true;
            return;
        }
        r->out.data = d;
        r->out.cap = (size_t)n;
    }
    memcpy(r->out.data, msg, (size_t)n);
    r->out.len = (size_t)n;
    r->out.over = false;
}

/* Write the ready prefix of the reply queue (N1); `direct`: to the socket first. */
static void flush_now(conn *c, bool direct)
{
    if (c->closed)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (direct)
        write_direct(c, out);
    while (c->head && c->head->ready) {
        reply *r = c->head;
        if (r->out.over && !r->out.oom)
            over_limit(c, r); /* an error takes the place of a reply too large to build */
        if (r->out.oom)
            c->closing = true; /* a reply we could not build completely: drop the client */
        else if (r->out.len >= REPLY_HANDOFF_BYTES &&
                 evbuffer_add_reference(out, r->out.data, r->out.len, free_reply_data,
                                        r->out.data) == 0)
            r->out.data = NULL; /* the evbuffer owns it now: no copy of a large reply */
        else
            evbuffer_add(out, r->out.data, r->out.len);
        if (r->file && !r->out.oom) {
            if (out_add_file(out, r->file, r->file_len) ||
                evbuffer_add(out, "\r\n", 2))
                c->closing = true; /* a reply we could not complete: drop the client */
        }
        if (r->close_after)
            c->closing = true;
        reply_pop(c);
    }
    if (evbuffer_get_length(out) > c->s->cfg.max_output_bytes) {
        server_log(c->s, EVS_LOG_WARN,
                   "client id=%lld closed: output buffer over %llu bytes (a slow reader)", c->id,
                   (unsigned long long)c->s->cfg.max_output_bytes);
        conn_close(c);
        return;
    }
    if (c->closing && !c->head && evbuffer_get_length(out) == 0)
        conn_close(c);
    else
        expect_mark(c);
}

/* Ready replies go out at the end of the loop turn (flush_queued), all of a connection's
 * at once; a connection whose socket is backed up, or a server that is stopping, hands them
 * to the bufferevent now. */
static void flush_replies(conn *c)
{
    if (c->closed || c->flush_queued)
        return;
    server *s = c->s;
    if (s->stopping || c->drain || evbuffer_get_length(bufferevent_get_output(c->bev))) {
        flush_now(c, false);
        return;
    }
    c->flush_queued = true;
    c->holds++; /* N3: not freed while on the list */
    c->flush_next = s->flush_head;
    s->flush_head = c;
}

static void flush_queued(server *s)
{
    while (s->flush_head) {
        conn *c = s->flush_head;
        s->flush_head = c->flush_next;
        c->flush_queued = false;
        flush_now(c, true);
        if (--c->holds == 0 && c->closed)
            conn_free(c);
    }
}

void reply_done(cmd_ctx *x)
{
    x->r->ready = true;
    if (!x->capture)
        flush_replies(x->c);
}

void **conn_cmd_state(conn *c, enum conn_slot slot, void (*free_fn)(void *))
{
    c->cmd_state_free[slot] = free_fn;
    return &c->cmd_state[slot];
}

static pending_t *hold(conn *c, reply *r, fill_fn fill, void *result, bool pipelinable)
{
    pending_t *p = freelist_take(&c->s->spare_holds);
    if (!p && !(p = malloc(sizeof *p)))
        return NULL;
    *p = (pending_t){.c = c, .r = r, .pipelinable = pipelinable, .fill = fill, .result = result};
    c->holds++;
    c->waits++;
    c->pipe_waits += pipelinable;
    c->s->turn_holds++; /* G2 */
    return p;
}

pending_t *server_hold_again(pending_t *prev, fill_fn fill, void *result)
{
    return hold(prev->c, prev->r, fill, result, prev->pipelinable);
}

pending_t *server_hold(cmd_ctx *x, fill_fn fill, void *result, bool pipelinable)
{
    return hold(x->c, x->r, fill, result, pipelinable);
}

static reply *reply_new(conn *c);

static bool fence_fill(pending_t *p, reply *r, void *res)
{
    (void)p;
    (void)r;
    (void)res;
    return true; /* nothing to say: it only held the next command back */
}

pending_t *server_fence(cmd_ctx *x)
{
    reply *r = reply_new(x->c);
    return r ? hold(x->c, r, fence_fill, NULL, true) : NULL;
}

static void read_cb(struct bufferevent *bev, void *arg);

/* A completion for the loop, from any thread. A push is one compare-and-swap, and the loop
 * takes the whole stack with one exchange (no lock: the writer thread completing a batch's
 * XADDs on one core and the loop taking them on the other passed a mutex's cache line back
 * and forth for each). Nothing is popped but all at once, so there is no ABA. */
static void enqueue(server *s, pending_t *p)
{
    pending_t *old = atomic_load_explicit(&s->done, memory_order_relaxed);
    do
        p->next = old;
    while (!atomic_compare_exchange_weak_explicit(&s->done, &old, p, memory_order_release,
                                                  memory_order_relaxed));
    /* one wake-up per burst: the loop takes the whole stack each time it runs */
    if (!old)
        event_active(s->wake, EV_READ, 0);
}

void server_post(server *s, void (*fn)(void *arg), void *arg)
{
    pending_t *p = calloc(1, sizeof *p);
    if (!p) {
        server_log(s, EVS_LOG_ERROR, "out of memory posting a completion");
        return;
    }
    p->task = fn;
    p->task_arg = arg;
    enqueue(s, p);
}

struct event_base *server_base(server *s) { return s->base; }

void server_complete(pending_t *p)
{
    enqueue(p->c->s, p);
}

static void run_completions(server *s)
{
    pending_t *p = NULL, *stack = atomic_exchange_explicit(&s->done, NULL, memory_order_acquire);
    while (stack) { /* oldest first, as they completed */
        pending_t *next = stack->next;
        stack->next = p;
        p = stack;
        stack = next;
    }
    if (p)
        repl_leader_shown_all(); /* before the replies: what they made visible (F5) */
    while (p) {
        pending_t *next = p->next;
        if (!p->c) {
            p->task(p->task_arg);
            free(p);
            p = next;
            continue;
        }
        conn *c = p->c;
        c->holds--;
        c->waits--;
        c->pipe_waits -= p->pipelinable;
        c->completed = true; /* G1 */
        if (p->fill(p, p->r, p->result))
            p->r->ready = true;
        if (c->closed) {
            if (c->holds == 0)
                conn_free(c);
        } else {
            flush_replies(c);
            if (!c->closed && !s->stopping && c->waits == 0 && (c->paused || c->reading_held)) {
                c->paused = false;
                if (c->reading_held && !c->closing) {
                    c->reading_held = false;
                    event_add(c->rd, NULL);
                }
                c->holds++; /* N3 while its input is processed */
                read_cb(c->bev, c);
                if (--c->holds == 0 && c->closed)
                    conn_free(c);
            }
        }
        if (!freelist_put(&s->spare_holds, p))
            free(p);
        p = next;
    }
}

static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg; /* the turn it ends commits the batch (turn_end) */
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    run_completions(arg);
}

static reply *reply_new(conn *c)
{
    reply *r = freelist_take(&c->s->spare_replies);
    if (r) /* a spare: its buffer kept (resp_out_reuse), every other field cleared */
        *r = (reply){.out = r->out};
    else if (!(r = calloc(1, sizeof *r)))
        return NULL;
    resp_out_reuse(&r->out, c->proto);
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    return r;
}

static void protocol_error(conn *c, const char *msg)
{
    reply *r = reply_new(c);
    if (r) {
        resp_out_error(&r->out, "ERR %s", msg);
        r->ready = true;
        r->close_after = true;
    }
    c->closing = true;
    event_del(c->rd);
    flush_replies(c);
}

static void read_input(struct bufferevent *bev, conn *c);

/* The commands of one loop turn (every connection's reads in it) are submitted under one
 * hold, released when the turn ends (server_run): they are one batch with one fdatasync. */
static void read_cb(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    expect_met(c);
    if (!c->s->turn_reads++)
        evs_submit_hold(c->s->st);
    bool in_flight = c->waits > 0 && c->waits == c->pipe_waits;
    read_input(bev, c);
    /* Bytes that arrived while this connection's writes were in flight: until they complete,
     * leave the socket alone, so that what the client sends meanwhile is read in one go when
     * they do (as Redis, busy with its fsync, reads it), not one read per request; it would
     * join the next fsync batch either way. Only once bytes have come in flight, never for a
     * client waiting for its one reply (clients/P1), for which holding cost two epoll_ctl per
     * request and found nothing to hold. Only for XADDs (always short): a client parked in
     * XREAD BLOCK keeps being read, so its disconnect is seen at once. */
    /* (in_flight: c holds a completion still to come, so read_input cannot have freed it, and
     * what it dispatched meanwhile was pipelinable writes only, so they are still in flight) */
    if (in_flight && !c->closed && !c->closing && !c->reading_held) {
        c->reading_held = true;
        event_del(c->rd);
    }
}

/* A connection's input is read here, not by its bufferevent: libevent 2.1's reads ask the
 * kernel how much is waiting first (ioctl FIONREAD before each readv: a system call per
 * request that Redis does not make) and take at most 4 KiB per callback (a 1 MiB argument took
 * 256 loop turns). One read of up to READ_CHUNK per readiness into the loop's own buffer, then
 * appended to the input (reserving READ_CHUNK in the input buffer itself allocated and freed
 * 64 KiB per request: p99 at c50/P1 rose by a third). The end of the stream or an error closes
 * the connection, as the bufferevent's event callback did. */
#define READ_CHUNK (64u << 10)
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    conn *c = arg;
    static uint8_t buf[READ_CHUNK]; /* the loop's thread only */
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            conn_close(c);
        return;
    }
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (evbuffer_add(in, buf, (size_t)n)) {
        conn_close(c);
        return;
    }
    /* Input waiting behind a command that has not answered yet (N4: a pipeline behind an
     * XREAD BLOCK) is bounded, as Redis bounds a client's query buffer: past
     * --max-request-bytes the client is disconnected, not buffered without end. */
    if (c->paused && evbuffer_get_length(in) > c->s->cfg.max_request_bytes) {
        server_log(c->s, EVS_LOG_WARN,
                   "client id=%lld closed: over %llu bytes of input waiting behind a command "
                   "that has not answered (--max-request-bytes)",
                   c->id, (unsigned long long)c->s->cfg.max_request_bytes);
        conn_close(c);
        return;
    }
    read_cb(c->bev, c);
}

/* G2: whether this turn's batch waits for the connections still expected. */
static bool lingering(server *s)
{
    if (!s->expect || !s->turn_holds || !s->linger || s->stopping ||
        (repl_leader_count() && s->cfg.ack_all) ||
        event_base_got_exit(s->base) || event_base_got_break(s->base))
        return false;
    uint64_t now = evs_mono_ns();
    if (!s->linger_until) {
        if (s->linger_miss > LINGER_MISS_MAX && ++s->linger_skips % LINGER_PROBE)
            return false; /* G4 */
        uint64_t ns = linger_ns(s);
        s->linger_until = now + ns;
        s->commit_waits++;
        struct timeval tv = {0, (suseconds_t)(ns / 1000 + 1)};
        evtimer_add(s->linger, &tv);
        return true;
    }
    if (now < s->linger_until)
        return true;
    s->commit_wait_timeouts++;
    s->linger_timed_out = true;
    return false;
}

/* The end of a loop turn. Its batch is committed on the loop itself when the writer thread is
 * idle, as Redis syncs its AOF once per loop turn (evs_submit_release_inline): no hand-off, no
 * wake-up of the writer and none back, and the next turn reads everything that came in
 * meanwhile as one batch. Handing turns that read several connections to the writer thread,
 * so that the loop could answer and read the others during the sync, was measured against this
 * (docs/benchmarks.md, "Server"): the loop had nothing to do meanwhile but wait for the
 * completions, c50/P1 0.8× and c50/P16 0.9× of this, with a worse p99. A leader with async
 * followers commits here too: the written hook writes each batch to their sockets before the
 * sync (written_hook), and their ACKs are read after it (docs/architecture.md: the leader's CPU
 * per XADD a fifth lower than through the writer thread). Under --ack all the loop does have
 * something to do meanwhile (take the ACKs the replies wait for): its turns go to the writer
 * thread (inline, --ack all fell 0.57× → 0.45× of no follower). A batch may wait for the
 * clients the last one answered (G2); the replies of a batch committed here go out at once,
 * before the next poll. */
static void turn_end(server *s)
{
    flush_queued(s); /* what is answered goes out before this turn's batch is synced */
    if (!s->turn_reads || lingering(s))
        return;
    bool batch = s->turn_holds != 0; /* G1: a turn of reads answered at once is none */
    if (batch) {
        s->gen++;
        s->expect = 0;
        s->turn_holds = 0;
    }
    if (s->linger_until) { /* a wait ends: G4's average takes its outcome */
        s->linger_miss = s->linger_miss - s->linger_miss / 16 +
                         (s->linger_timed_out ? 65536u / 16 : 0);
        s->linger_timed_out = false;
        s->linger_until = 0;
        evtimer_del(s->linger);
    }
    s->turn_reads = 0;
    if (repl_leader_count() && s->cfg.ack_all) {
        evs_submit_release(s->st);
        return;
    }
    uint64_t t0 = evs_mono_ns();
    evs_submit_release_inline(s->st);
    uint64_t d = evs_mono_ns() - t0;
    if (batch) /* G1: a recent average of batches, not of turns that committed nothing */
        s->commit_ns = s->commit_ns - s->commit_ns / 8 + d / 8;
    run_completions(s); /* its replies go out now, not after the next poll (G1) */
    flush_queued(s);
    if (s->turn_reads) /* input a completion resumed (N4) is a batch of its own: next turn */
        event_active(s->wake, EV_READ, 0);
}

static void read_input(struct bufferevent *bev, conn *c)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    c->last_io = time(NULL);
    while (!c->closing && !c->closed && !c->paused) {
        size_t len = evbuffer_get_length(in);
        if (len == 0 || len < c->need)
            break; /* a big argument is still arriving: no copy, no re-parse until it is all here */
        c->need = 0;
        const uint8_t *data = evbuffer_pullup(in, (ssize_t)len);
        if (!c->inline_buf && data[0] != '*') {
            c->inline_buf = malloc(RESP_MAX_INLINE);
            if (!c->inline_buf) {
                conn_close(c);
                return;
            }
        }
        resp_cmd cmd = {c->argv, 0, c->argcap, "", c->inline_buf,
                        c->inline_buf ? RESP_MAX_INLINE : 0, &c->progress};
        size_t used;
        int rc = resp_parse(data, len, c->s->cfg.max_request_bytes, &cmd, &used);
        if (rc == RESP_PARTIAL && cmd.argc > c->argcap) {
            size_t cap = cmd.argc;
            resp_arg *a = realloc(c->argv, cap * sizeof *a);
            if (!a) {
                conn_close(c);
                return;
            }
            c->argv = a;
            c->argcap = cap;
            continue;
        }
        if (rc == RESP_PARTIAL) {
            c->need = used; /* 0 when not known yet */
            break;
        }
        if (rc == RESP_ERROR) {
            protocol_error(c, cmd.msg);
            return;
        }
        if (rc == RESP_CMD && c->waits > 0 &&
            (c->waits != c->pipe_waits || !commands_pipelinable(&cmd.argv[0]))) {
            c->paused = true; /* N4: resumed by run_completions */
            break;
        }
        if (rc == RESP_CMD) {
            reply *r = reply_new(c);
            if (!r) {
                conn_close(c);
                return;
            }
            cmd_ctx x = {c->s, c, r, cmd.argc, cmd.argv, false};
            /* N3: the command may close the connection (QUIT); it is not freed here while
             * this callback runs, because closing only frees when no reply is pending */
            c->holds++;
            commands_dispatch(&x);
            c->holds--;
            if (c->closed) {
                if (c->holds == 0)
                    conn_free(c);
                return;
            }
        }
        evbuffer_drain(in, used);
    }
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn *c = arg;
    if (c->closing && !c->head)
        conn_close(c);
    else if (c->drain && !c->closed)
        c->drain(c, c->drain_arg);
}

void conn_abort(conn *c, const char *msg)
{
    if (c->closed)
        return;
    struct evbuffer *out = msg ? conn_output(c) : NULL;
    if (out)
        evbuffer_add_printf(out, "-ERR %s\r\n", msg);
    c->drain = NULL;
    conn_close(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    conn *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        conn_close(c);
}

static void accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)lis;
    (void)sa;
    (void)salen;
    server *s = arg;
    /* RESP and HTTP clients share --max-clients (http_clients.c H2); fdlimit.c F2 */
    if ((size_t)s->nconns + http_clients(s->http) >= (size_t)s->cfg.max_clients ||
        !fdlimit_room(fd)) {
        /* answer as Redis does; drain what the client already sent so that closing with
         * unread bytes does not reset the connection before it reads the answer */
        static const char msg[] = "-ERR max number of clients reached\r\n";
        s->rejected++;
        ssize_t w = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL);
        (void)w;
        shutdown(fd, SHUT_WR);
        char junk[4096];
        for (int i = 0; i < 16 && recv(fd, junk, sizeof junk, MSG_DONTWAIT) > 0; i++)
            ;
        evutil_closesocket(fd);
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->s = s;
    c->id = ++s->next_id;
    c->proto = 2;
    c->authed = s->cfg.requirepass == NULL;
    c->last_io = time(NULL);
    c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    /* libevent writes at most 16 KiB per loop turn by default: large replies (XRANGE, BACKUP
     * READ) went out at a loop turn per 16 KiB (a file's pieces are as large: out_add_file) */
    bufferevent_set_max_single_write(c->bev, OUT_FILE_PIECE);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    c->rd = event_new(s->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    if (!c->rd) {
        conn_close(c);
        return;
    }
    /* a socket bufferevent keeps its input's end frozen except while it reads itself; it
     * never reads here (on_readable does) */
    evbuffer_unfreeze(bufferevent_get_input(c->bev), 0);
    bufferevent_setcb(c->bev, NULL, write_cb, event_cb, c);
    bufferevent_enable(c->bev, EV_WRITE);
    event_add(c->rd, NULL);
}

/* Once a second, as Redis's clientsCron: close clients idle longer than --timeout. A client
 * waiting for a reply (an XADD in flight, a blocked XREAD) or with replies unsent is not idle. */
static void cron_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server *s = arg;
    repl_leader_cron();
    if (s->cfg.timeout_s <= 0)
        return;
    time_t now = time(NULL);
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (!c->waits && !c->head && !c->drain && now - c->last_io > s->cfg.timeout_s) {
            server_log(s, EVS_LOG_DEBUG, "client %lld idle for more than %d s: closed", c->id,
                       s->cfg.timeout_s);
            conn_close(c);
        }
    }
}

/* Writer thread: a batch became visible; note its streams and wake the loop (coalesced by
 * libevent). A batch the visibility cap holds names none: nobody can see anything new yet. */
static void visible_hook(void *arg, const evs_slice *names, size_t n)
{
    server *s = arg;
    wake_acc_add(&s->vis, names, n);
    event_active(s->visible, EV_READ, 0);
}

/* A batch is written and about to be synced; with followers connected, it is shipped first
 * (repl_leader.c F1): by the loop itself when the loop commits it (turn_end), or, from the
 * writer thread, by waking the loop to ship it meanwhile. */
static void written_hook(void *arg)
{
    server *s = arg;
    if (!repl_leader_shipping())
        return;
    if (pthread_equal(pthread_self(), s->loop_tid)) {
        repl_leader_on_written(true); /* inside the loop's own commit: before its sync */
        return;
    }
    event_active(s->written, EV_READ, 0);
}

static void written_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    repl_leader_on_written(false);
}

static void visible_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server *s = arg;
    wake_set ws;
    wake_acc_take(&s->vis, &ws);
    commands_on_visible(&ws);
    http_on_visible(s->http, &ws);
}

/* SIGTERM and SIGINT: the handler records the signal (for the whole process: one that
 * arrives while the server stops to restart itself is seen by cmd_serve, which then exits
 * instead of starting again) and wakes the loop through a pipe. libevent's own signal events
 * were used before: a signal they caught after the loop's last turn was never handled, and a
 * follower restarting itself (a snapshot copy, REPLICAOF, a cut) ignored the SIGTERM that
 * arrived then. */
static volatile int stop_signal; /* stored and loaded atomically: the handler runs on any
                                    thread, and a follower's copy reads it from others */
static volatile int stop_pipe_w = -1;

static void on_stop_signal(int sig)
{
    int e = errno;
    __atomic_store_n(&stop_signal, sig, __ATOMIC_RELAXED);
    int fd = __atomic_load_n(&stop_pipe_w, __ATOMIC_RELAXED);
    if (fd >= 0) {
        ssize_t w = write(fd, "", 1);
        (void)w;
    }
    errno = e;
}

int server_stop_signal(void) { return __atomic_load_n(&stop_signal, __ATOMIC_RELAXED); }

const volatile int *server_stop_flag(void) { return &stop_signal; }

void server_stop_signals_record(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

static void signal_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    server *s = arg;
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0)
        ;
    server_log(s, EVS_LOG_INFO, "received %s: stopping",
               server_stop_signal() == SIGINT ? "SIGINT" : "SIGTERM");
    event_base_loopexit(s->base, NULL);
}

/* The stop signals' pipe and handler (kept installed after the loop: stop_signal). */
static struct event *stop_signals_watch(server *s, int pipe_fds[2])
{
    if (pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC))
        return NULL;
    struct event *ev = event_new(s->base, pipe_fds[0], EV_READ | EV_PERSIST, signal_cb, s);
    if (!ev || event_add(ev, NULL)) {
        if (ev)
            event_free(ev);
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        return NULL;
    }
    __atomic_store_n(&stop_pipe_w, pipe_fds[1], __ATOMIC_RELAXED);
    server_stop_signals_record();
    if (server_stop_signal()) /* one came before the pipe was there: stop at the first turn */
        on_stop_signal(server_stop_signal());
    return ev;
}

int server_run(const server_config *cfg)
{
    server *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    s->spare_replies = s->spare_holds = FREELIST_INIT(SPARES);
    resp_out_set_limit((size_t)cfg->max_output_bytes); /* no one reply larger */
    if (!process_started)
        process_started = time(NULL);
    int rc = 0;
    evthread_use_pthreads();
    /* the epoll changelist folds the enable/disable of write interest within one loop turn
     * into at most one epoll_ctl: every reply otherwise costs two */
    struct event_config *ec = event_config_new();
    if (ec)
        event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    s->base = ec ? event_base_new_with_config(ec) : event_base_new();
    if (ec)
        event_config_free(ec);
    if (s->base) /* two priorities: a follower's link (0) before clients (1, the default) */
        event_base_priority_init(s->base, 2);
    if (!s->base) {
        server_log(s, EVS_LOG_ERROR, "cannot create the event loop");
        free(s);
        return -ENOMEM;
    }
    evs_options o;
    evs_options_init(&o);
    o.fsync = cfg->fsync;
    if (cfg->segment_bytes)
        o.segment_bytes = cfg->segment_bytes;
    if (cfg->max_entry_bytes)
        o.max_entry_bytes = cfg->max_entry_bytes;
    o.log = cfg->log;
    o.retention = cfg->retention;
    o.replica = cfg->replica_of != NULL;
    o.cancel = server_stop_flag(); /* a stop during a long recovery is obeyed at once */
    evs_error err;
    fdlimit_raise(); /* F1: a big log holds a descriptor per segment */
    if ((rc = evs_open(cfg->data, &o, &s->st, &err))) {
        if (rc == EVS_ECLOSED && server_stop_signal()) {
            server_log(s, EVS_LOG_INFO, "stopped cleanly while recovering %s (a stop signal "
                       "came); the next start recovers anew", cfg->data);
            rc = 0;
        } else {
            server_log(s, EVS_LOG_ERROR, "cannot open %s: %s", cfg->data, err.msg);
        }
        event_base_free(s->base);
        free(s);
        return rc;
    }
    fdlimit_fit(s); /* F1: with the store open, its segments counted */
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->bind, &sin.sin_addr) != 1) {
        server_log(s, EVS_LOG_ERROR, "--bind %s: not an IPv4 address", cfg->bind);
        rc = -EINVAL;
        goto out;
    }
    /* HTTP first: once the RESP port accepts, every port is up (tests and probes rely on it) */
    if (cfg->http_port && (rc = http_start(s, &s->http))) {
        server_log(s, EVS_LOG_ERROR, "cannot listen on %s:%d (HTTP): %s", cfg->bind,
                   cfg->http_port, strerror(-rc));
        goto out;
    }
    s->lis = evconnlistener_new_bind(s->base, accept_cb, s,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                     511, (struct sockaddr *)&sin, sizeof sin);
    if (!s->lis) {
        server_log(s, EVS_LOG_ERROR, "cannot listen on %s:%d: %s", cfg->bind, cfg->port,
                   strerror(errno));
        rc = -errno;
        goto out;
    }
    s->lis_guard = fdlimit_guard(s, s->lis, "RESP");
    if (strcmp(cfg->bind, "127.0.0.1") != 0 && !cfg->requirepass)
        server_log(s, EVS_LOG_WARN,
                   "listening on %s without --requirepass: anyone who can reach this address "
                   "can read and write every stream",
                   cfg->bind);
    s->wake = event_new(s->base, -1, EV_PERSIST | EV_READ, wake_cb, s);
    s->linger = evtimer_new(s->base, linger_cb, s); /* NULL: batches never wait (G2) */
    s->gen = 1;
    s->sigterm = stop_signals_watch(s, s->stop_pipe);
    if (!s->sigterm) {
        server_log(s, EVS_LOG_ERROR, "cannot watch for SIGTERM: %s", strerror(errno));
        rc = -errno;
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    commands_init(s, s->base);
    s->visible = event_new(s->base, -1, EV_PERSIST | EV_READ, visible_cb, s);
    s->written = event_new(s->base, -1, EV_PERSIST | EV_READ, written_cb, s);
    s->cron = event_new(s->base, -1, EV_PERSIST, cron_cb, s);
    struct timeval second = {1, 0};
    if (s->cron)
        event_add(s->cron, &second);
    evs_set_visible_hook(s->st, visible_hook, s);
    if (s->written)
        evs_set_written_hook(s->st, written_hook, s);
    repl_visible_cap_init(s);
    evs_store_stats st;
    evs_store_stats_get(s->st, &st);
    static const char *modes[] = {"always", "everysec", "no"};
    char http_on[32] = "off";
    if (cfg->http_port)
        snprintf(http_on, sizeof http_on, "port %d", cfg->http_port);
    server_log(s, EVS_LOG_INFO,
               "evstore %s serving %s on %s:%d (RESP), HTTP %s, fsync %s; %llu streams, "
               "%llu segments, %llu records recovered past the index, %llu torn bytes cut",
               EVSTORE_VERSION, cfg->data, cfg->bind, cfg->port,
               http_on, modes[cfg->fsync],
               (unsigned long long)st.streams, (unsigned long long)st.segments,
               (unsigned long long)st.recovered_records, (unsigned long long)st.torn_bytes);
    if (cfg->replica_of && repl_follower_start(s)) {
        server_log(s, EVS_LOG_ERROR, "--replica-of %s: not HOST:PORT", cfg->replica_of);
        rc = -EINVAL;
        goto out;
    }
    s->loop_tid = pthread_self();
    for (;;) { /* event_base_dispatch, with the turn's hold released between turns */
        int lr = event_base_loop(s->base, EVLOOP_ONCE);
        turn_end(s);
        if (lr || event_base_got_exit(s->base) || event_base_got_break(s->base))
            break;
    }
out:
    /* stop accepting, let the writer finish what was queued, then drop the clients */
    s->stopping = true;
    fdlimit_unguard(s->lis_guard);
    if (s->lis)
        evconnlistener_free(s->lis);
    http_quiesce(s->http);
    if (cfg->replica_of)
        repl_follower_stop();
    if (s->wake) {
        commands_shutdown();
        run_completions(s); /* the blocked readers answered now: their answers read the store */
    }
    if (s->visible)
        evs_set_visible_hook(s->st, NULL, NULL);
    if (s->written)
        evs_set_written_hook(s->st, NULL, NULL);
    int crc = evs_close(s->st);
    if (s->wake)
        run_completions(s);
    http_stop(s->http); /* after the completions: they answer HTTP requests */
    for (conn *c = s->conns; c; c = c->next)
        conn_flush_final(c);
    while (s->conns)
        conn_close(s->conns);
    if (crc)
        server_log(s, EVS_LOG_ERROR, "store closed with a write error (the store had failed, "
                   "or its final checkpoint did): %s", evs_strerror(crc));
    else if (!rc)
        server_log(s, EVS_LOG_INFO, "stopped cleanly%s", s->restart ? "; restarting" : "");
    if (!rc && !crc && s->restart)
        rc = SERVER_RESTART;
    if (s->wake)
        event_free(s->wake);
    if (s->visible)
        event_free(s->visible);
    if (s->written)
        event_free(s->written);
    if (s->cron)
        event_free(s->cron);
    if (s->linger)
        event_free(s->linger);
    if (s->sigterm) {
        /* the handler still records the signal (stop_signal), and wakes nothing */
        __atomic_store_n(&stop_pipe_w, -1, __ATOMIC_RELAXED);
        event_free(s->sigterm);
        /* the pipe stays open until the exit or the restart's exec (O_CLOEXEC): a handler
         * that read the descriptor before the line above may still write to it, and a closed
         * number could be a store file's by then */
    }
    event_base_free(s->base);
    for (reply *r; (r = freelist_take(&s->spare_replies));) {
        resp_out_release(&r->out);
        free(r);
    }
    freelist_drain(&s->spare_holds);
    free(s);
    return rc ? rc : crc;
}
