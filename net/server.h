/*
 * server.h — the RESP server over libevent, on the embedded API (include/evstore.h only).
 *
 * Threads: one libevent loop owns every connection; the store's writer thread completes
 * appends and hands the results back through a lock-free stack (server.c enqueue) and a
 * libevent user event (evthread_use_pthreads), so connection state is only ever touched by
 * the loop.
 *
 * Invariants:
 *  N1. Replies leave a connection in request order: each parsed command takes the next reply
 *      slot; only the ready prefix of the slot queue is written, at the end of the loop turn,
 *      straight to the socket only while nothing is queued in the connection's bufferevent;
 *      anything else written to the connection (conn_output) goes after the ready prefix.
 *  N2. An XADD is answered only after its durability mode is satisfied (store completion).
 *  N3. A connection is freed only by the loop, and only when it is closed and no store
 *      completion still refers to it (Redis: never free a client inside its own callback).
 *  N4. A connection's commands take effect in order: while it waits for an asynchronous reply,
 *      only further pipelinable writes (XADD, XACK: ordered by the writer queue) are
 *      dispatched; any other command waits until everything before it is answered (read your
 *      own writes).
 */
#ifndef EVS_SERVER_H
#define EVS_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "evstore.h"
#include "resp.h"
#include "wake.h"

typedef struct server_config {
    const char *data;
    const char *bind;
    int port;
    evs_fsync_mode fsync;
    const char *requirepass;   /* NULL: no authentication                                */
    int max_clients;
    int max_tails;             /* HTTP live tails (SSE) at once                           */
    uint64_t metrics_max_streams; /* /metrics: per-stream series for this many streams     */
    uint64_t max_entry_bytes;
    uint64_t max_request_bytes;
    uint64_t segment_bytes;
    uint64_t max_output_bytes; /* a client whose unsent replies exceed this is dropped   */
    void (*log)(void *arg, int level, const char *msg);
    int http_port;             /* 0: no HTTP API                                         */
    const char *http_cors_origin; /* web origins whose pages may use the HTTP API: a comma-
                                  separated list, or "*"; NULL: none (net/http_cors.c)    */
    const char *http_hosts;    /* Host names the HTTP API answers to beyond loopback ones
                                  (comma-separated, or "*"); NULL: none (net/http_cors.c C4) */
    int timeout_s;             /* close RESP clients idle this long; 0: never (settable) */
    evs_retention retention;   /* every stream's default limits (0: none)                */
    const char *replica_of;    /* "HOST:PORT": follow that leader (read-only); NULL: lead  */
    const char *leader_password; /* AUTH to the leader                                    */
    bool ack_all;              /* --ack all: an XADD is answered once min_replicas followers
                                  have fsynced it (--ack leader: once it is durable here)  */
    int min_replicas;          /* --min-replicas                                          */
    int ack_timeout_ms;        /* --ack all: answer NOREPLICAS after this long            */
    uint64_t full_sync_bytes;  /* a new (empty) follower of a log this long or longer copies
                                  the store whole (SNAPSHOT) instead of replaying it; 0: never */
    char *follow_next;         /* out (FOLLOW_NEXT_MAX bytes, or NULL): the "HOST:PORT" that
                                  REPLICAOF HOST PORT asked to follow; set with a restart  */
} server_config;

#define FOLLOW_NEXT_MAX 300

/* Is `list` a valid --http-cors-origin: "*" alone, or origins ("scheme://host[:port]", no
 * path; or "null") separated by commas? When not, *bad names the first wrong item (NULL: the
 * list is empty or mixes "*" with origins). net/http_cors.c. */
bool http_cors_list_ok(const char *list, const char **bad, size_t *bad_len);
/* Is `list` a valid --http-hosts: host names (no port) separated by commas, or "*" alone? *bad
 * as http_cors_list_ok's. */
bool http_hosts_list_ok(const char *list, const char **bad, size_t *bad_len);

typedef struct server server;
typedef struct conn conn;

/* Open the store, listen, run until SIGTERM/SIGINT; 0 on a clean stop, SERVER_RESTART when
 * the server stopped cleanly to be started again (a follower cutting its log). */
#define SERVER_RESTART 75
int server_run(const server_config *cfg);
/* The stop signal (SIGTERM or SIGINT) the process received since server_run first watched
 * for them, or 0: also one that came while a server stopped to restart itself. */
int server_stop_signal(void);
/* From now on SIGTERM and SIGINT are recorded (server_stop_signal) instead of ending the
 * process, and server_run stops at its loop's first turn when one came before it. */
void server_stop_signals_record(void);
/* The same as a flag, non-zero once one came: a cancel flag for long work before the server
 * runs (a follower's copy of its leader's store). */
const volatile int *server_stop_flag(void);
/* Stop cleanly, as on SIGTERM: server_run returns 0 (SHUTDOWN). */
void server_stop(server *s);
/* Stop cleanly, then have server_run return SERVER_RESTART. */
void server_restart(server *s);
/* The same, to come back following `target` ("HOST:PORT"): -1 if the caller gave no
 * follow_next buffer or target does not fit. */
int server_restart_following(server *s, const char *target);

/* ---- for the command modules ---------------------------------------------------------- */

/* A command's reply slot; fill it with resp_out_* then mark it ready. */
typedef struct reply {
    struct reply *next;
    resp_out out;
    bool ready;
    bool close_after; /* QUIT, protocol errors */
    void *file;       /* reply_attach_file: sent after `out`, then "\r\n"                     */
    uint64_t file_len;
} reply;

typedef struct cmd_ctx {
    server *srv;
    conn *c;
    reply *r;
    size_t argc;
    const resp_arg *argv;
    bool capture; /* inside EXEC: reply_done only marks r ready; nothing may block */
} cmd_ctx;

evs_store *server_store(server *s);
int server_nconns(server *s);
size_t server_http_clients(server *s); /* HTTP connections counted toward --max-clients */
server_config *server_cfg_mut(server *s);
const server_config *server_cfg(server *s);
/* Are the len bytes at got the secret (--requirepass)? In time independent of where they
 * differ (AUTH, HTTP bearer tokens). */
bool server_secret_is(const char *secret, const void *got, size_t len);
int conn_proto(conn *c);
void conn_set_proto(conn *c, int proto);
long long conn_id(conn *c);
bool conn_authed(conn *c);
void conn_set_authed(conn *c, bool yes);
/* Follow the reply's bytes with len bytes of fd from off, sent by sendfile without copying
 * them through the process, then "\r\n" (the body of a bulk string whose header is in
 * r->out). release(arg) runs once they are sent or the connection is gone; fd must stay open
 * until then. -1 if it cannot (then nothing is attached and release is not called). */
int reply_attach_file(reply *r, int fd, uint64_t off, uint64_t len, void (*release)(void *),
                      void *arg);
/* Queue len bytes of seg from its start on out, as pieces of at most OUT_FILE_PIECE bytes:
 * libevent hands a whole file chain to one sendfile() whatever its write cap, so a 4 MiB
 * chain held the loop (and every other client) for 1-5 ms; a piece is one write turn.
 * 0, or -1 if out could not take it (some pieces may be queued). */
#define OUT_FILE_PIECE (256u << 10)
struct evbuffer;
struct evbuffer_file_segment;
int out_add_file(struct evbuffer *out, struct evbuffer_file_segment *seg, uint64_t len);
/* The reply is complete: send it (and any ready replies behind it, in order). */
void reply_done(cmd_ctx *x);
/* Hold the connection for an asynchronous completion; the returned token is passed to
 * server_complete() from any thread, exactly once. On the loop, fill() writes the reply and
 * returns true, or returns false when it has started further work (a new hold) and the reply
 * is not finished yet. */
typedef struct pending pending_t;
typedef bool (*fill_fn)(pending_t *p, reply *r, void *result);
pending_t *server_hold(cmd_ctx *x, fill_fn fill, void *result, bool pipelinable);
/* A hold for the same connection and reply as an earlier one, as pipelinable as it (EXEC's
 * next batch; an XADD under --ack all waiting for its followers). */
pending_t *server_hold_again(pending_t *prev, fill_fn fill, void *result);
/* A slot for per-connection state owned by a command module (the MULTI queue, the open
 * backup snapshots); free_fn frees it with the connection. */
enum conn_slot { CONN_SLOT_MULTI, CONN_SLOT_BACKUP, CONN_SLOT_REPLICA, CONN_SLOT_NAME,
                 CONN_SLOTS };
void **conn_cmd_state(conn *c, enum conn_slot slot, void (*free_fn)(void *));
/* Called from any thread: queue the completion to the loop. */
void server_complete(pending_t *p);
/* Called from any thread: run fn(arg) on the loop (completions that belong to no RESP
 * connection, such as HTTP publishes). */
void server_post(server *s, void (*fn)(void *arg), void *arg);
struct event_base *server_base(server *s);
void *pending_result(pending_t *p);
/* Has the connection waiting for this completion gone away? */
bool pending_orphaned(pending_t *p);
conn *pending_conn(pending_t *p);
void server_log(server *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A follower's connection on the leader streams outside the reply queue: its output buffer,
 * a function called when that buffer has drained below 1 MiB, its peer's address, and a
 * way to close it (with an error line first when msg is not NULL). */
struct evbuffer *conn_output(conn *c); /* NULL once the connection is closed */
/* Write what conn_output holds now, as far as the socket takes it, rather than at the loop's
 * next write turn (replies already go out directly: what must precede them goes this way). */
void conn_write_now(conn *c);
void conn_set_drain(conn *c, void (*fn)(conn *c, void *arg), void *arg);
void conn_peer(conn *c, char *ip, size_t cap);
/* Is c's peer the socket whose own address is fd's (a connection of this process to itself)? */
bool conn_peer_is(conn *c, int fd);
void conn_abort(conn *c, const char *msg);
bool server_is_follower(server *s);
/* The loop's counters since this server started (INFO). */
typedef struct server_counts {
    uint64_t connections;    /* RESP connections accepted                                  */
    uint64_t rejected;       /* refused at --max-clients                                   */
    uint64_t commands;       /* commands run (each of an EXEC's too; not refused ones)     */
    uint64_t commit_waits;   /* batches that waited for the connections their previous
                                commit answered, and those of them that stopped waiting at
                                the bound (server.c, G2)                                   */
    uint64_t commit_wait_timeouts;
    time_t started;          /* when the process started serving                          */
} server_counts;
void server_counts_get(server *s, server_counts *out);
void server_count_command(server *s);

/* HTTP/JSON API (http.c) */
typedef struct http_api http_api;
int http_start(server *srv, http_api **out);
void http_quiesce(http_api *h); /* stop accepting (NULL: nothing)          */
void http_stop(http_api *h);    /* free everything (NULL: nothing)         */
/* HTTP connections counted toward --max-clients (http_clients.c H1; NULL: 0) */
size_t http_clients(const http_api *h);
/* Batches became visible (ws: their streams, wake.h): feed the live tails of those streams. */
void http_on_visible(http_api *h, const wake_set *ws);

/* Replication (repl_leader.c, repl_follower.c): the leader's once-a-second heartbeats and
 * checks; following the leader named by cfg.replica_of (-1 if it is not HOST:PORT). */
void repl_leader_cron(void);
/* --ack all and WAIT: fn(arg, got) on the loop once `want` followers have fsynced the log up
 * to target, or after timeout_ms (<= 0: no timeout); -1 if it cannot wait (then fn is not
 * called). The followers connected now. */
int repl_wait(server *srv, uint64_t target, long long want, long long timeout_ms,
              void (*fn)(void *arg, long long got), void *arg);
long long repl_good_followers(void);
/* --ack all on a node that leads: readers see only what --min-replicas followers hold, from
 * the log's end now on (called at start and at promotion; nothing otherwise). */
void repl_visible_cap_init(server *srv);
/* --ack all, after a write answered once durable here (XDEL, XTRIM, DEL, ...): the client's
 * next command waits until readers here see it, or --ack-timeout passes. */
void repl_fence(cmd_ctx *x);
/* --ack all on a leader: the log's end when readers here do not see all of it yet, else 0. */
uint64_t repl_unseen_end(server *srv);
/* --ack all: when readers here do not see the log's end yet, hold p's reply again (fill runs
 * once they do, or at --ack-timeout) and return the new hold; NULL: nothing to wait for (or
 * no memory), answer now. */
pending_t *repl_hold_visible(server *srv, pending_t *p, fill_fn fill, void *result);
/* An empty reply after x's, ready once the returned hold completes; the connection's next
 * command that cannot pipeline waits for it (N4). NULL when out of memory. */
pending_t *server_fence(cmd_ctx *x);
int repl_follower_start(server *srv);
void repl_follower_stop(void);
/* The socket of this follower's link to its leader (-1: none now). */
int repl_follower_link_fd(void);

/* Commands (commands.c) */
struct event_base;
void commands_init(server *srv, struct event_base *base);
void commands_dispatch(cmd_ctx *x);
/* May this command be dispatched while earlier pipelinable writes are in flight? (N4) */
bool commands_pipelinable(const resp_arg *name);
/* Answer every parked XREAD BLOCK (the server is stopping). */
void commands_shutdown(void);
/* A connection closed: release parked reads that belonged to it. */
void commands_conn_closed(void);
/* Batches became visible (ws: their streams; NULL: retry every waiter, as when a client left):
 * retry the blocked reads that wait on those streams. */
void commands_on_visible(const wake_set *ws);

#endif
