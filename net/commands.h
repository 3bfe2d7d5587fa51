/*
 * commands.h — what the command modules share (commands.c, multi.c). Not for the server core.
 */
#ifndef EVS_COMMANDS_H
#define EVS_COMMANDS_H

#include "server.h"

typedef struct subcommands subcommands;
typedef struct command {
    const char *name;
    int arity;   /* Redis style: n exact, -n at least n (the name counts) */
    bool noauth; /* allowed before AUTH */
    void (*fn)(cmd_ctx *x);
    const subcommands *sub; /* a container's subcommands: checked with the arity, before AUTH */
} command;

const command *commands_find(const resp_arg *name);
bool commands_arity_ok(const command *cmd, size_t argc);
/* A write answered once durable here, before it returns (XDEL, XTRIM, DEL, ...): under --ack
 * all, readers see it only once the followers hold it, so the client's next read waits. */
bool commands_answered_durable(const cmd_ctx *x, const command *cmd);
/* Does it write to the log (every command a follower refuses)? */
bool commands_writes(const cmd_ctx *x, const command *cmd);

#define ERR_ID "ERR Invalid stream ID specified as stream command argument"
#define ERR_INT "ERR value is not an integer or out of range"
#define ERR_SYNTAX "ERR syntax error"

/* A command's subcommands, Redis style: each name and arity (the command and the subcommand
 * count), and the lines of its HELP. */
typedef struct subcommand {
    const char *name;
    int arity;
} subcommand;
struct subcommands {
    const char *cmd;               /* lower case: "xinfo"                                      */
    const subcommand *subs;
    size_t n;
    const char *const *help;       /* HELP's lines after the first (HELP itself is added)      */
    size_t nhelp;
};
#define SUBCOMMANDS(cmd, subs, help) \
    { cmd, subs, sizeof subs / sizeof *subs, help, sizeof help / sizeof *help }
/* As Redis 7 before the command runs: NULL when argv[1] is one of sc's subcommands (HELP too)
 * with its arity, else Redis's error ("unknown subcommand 'x'. Try CMD HELP.", "wrong number of
 * arguments for 'cmd|sub'"), written in buf. The dispatcher runs it for command.sub, with the
 * arity and before AUTH and MULTI's queueing, so a container command's function meets only
 * valid subcommands. */
const char *subcommand_error(const cmd_ctx *x, const subcommands *sc, char *buf, size_t cap);
/* HELP, answered in Redis's frame: true if argv[1] was HELP (then answered). */
bool subcommand_help(cmd_ctx *x, const subcommands *sc);
extern const subcommands xgroup_sc; /* groups.c */

/* Shared argument and reply helpers (commands.c). */
bool arg_is(const cmd_ctx *x, size_t i, const char *s); /* argv[i] equals s, any case */
bool arg_ll(const resp_arg *a, long long *out);
evs_slice key_of(const resp_arg *a);
void reply_error_done(cmd_ctx *x, const char *msg);
/* A strict "<ms>-<seq>" or "<ms>" (seq = missing_seq). */
bool parse_id(const resp_arg *a, uint64_t missing_seq, evs_id *id);
void out_id(resp_out *o, evs_id id);
void out_entry(resp_out *o, const evs_entry *e);
/* An interval bound of XRANGE, XPENDING, XAUTOCLAIM: "-", "+", an ID (incomplete: seq 0 for a
 * start, max for an end), "(" exclusive, made inclusive here. false after answering Redis's
 * error (an unparsable ID, or an exclusive bound with nothing beyond it). */
bool parse_bound(cmd_ctx *x, const resp_arg *a, bool end, evs_id *id);
/* The strict IDs argv[from..argc) (malloc'd), or NULL after answering the error (XDEL, XACK). */
evs_id *parse_ids(cmd_ctx *x, size_t from);
/* XREAD/XREADGROUP's BLOCK ms and COUNT n at argv[*i]: 1 taken (*i advanced), 0 not one of
 * them, -1 answered with Redis's error. */
int read_option(cmd_ctx *x, size_t *i, long long *block, long long *count);
/* Up to q->limit entries of stream key as an array; the count, or < 0 after an error. With
 * max_bytes (0: none), the array ends before the entry that would take its encoding past
 * max_bytes (at least one entry): for replies where fewer than COUNT is a valid answer. */
long out_range(resp_out *o, evs_store *st, evs_slice key, const evs_query *q, size_t max_bytes);

/* groups.c: the consumer-group commands and their parked XREADGROUP BLOCKs. */
void cmd_xgroup(cmd_ctx *x);
void cmd_xreadgroup(cmd_ctx *x);
void cmd_xack(cmd_ctx *x);
void cmd_xpending(cmd_ctx *x);
void cmd_xclaim(cmd_ctx *x);
void cmd_xautoclaim(cmd_ctx *x);
/* XINFO GROUPS / CONSUMERS, and the groups part of XINFO STREAM FULL. */
void xinfo_groups(cmd_ctx *x);
void xinfo_consumers(cmd_ctx *x);
size_t xinfo_group_count(evs_store *st, evs_slice key);
void xinfo_full_groups(resp_out *o, evs_store *st, evs_slice key, long long count);
/* Retry the parked XREADGROUP BLOCKs whose streams may have changed (ws NULL: all). */
void groups_on_visible(const wake_set *ws);
/* backup_cmd.c: BACKUP BEGIN / READ / END, the online backup's snapshot over RESP */
void cmd_backup_snapshot(cmd_ctx *x);
int backup_snapshots_open(void);
void backup_shutdown(void); /* wait for snapshots being taken (before the store closes) */
/* repl_leader.c: REPLSYNC, REPLCONF; followers of this leader */
void cmd_replsync(cmd_ctx *x);
void cmd_replconf(cmd_ctx *x);
void cmd_wait(cmd_ctx *x);
void repl_leader_shutdown(void);

/* Lag samples (leader visible → follower fsync ACK) since start, and the p50/p99 of the last
 * 65,536 of them. */
void repl_lag_stats(uint64_t *n, uint32_t *p50_us, uint32_t *p99_us);
void repl_leader_on_visible(void);
/* Writer thread: are followers connected (is a written batch to be shipped at once)? */
bool repl_leader_shipping(void);
/* A batch was written, its sync to follow: ship it (on the loop). write_now: to the sockets
 * at once, the loop being inside its own commit, about to sync (F1). */
void repl_leader_on_written(bool write_now);
/* Tell every follower how far readers here see, if that moved (before answering writes). */
void repl_leader_shown_all(void);
size_t repl_leader_count(void);
void repl_leader_each(void (*fn)(void *arg, const char *ip, int port, uint64_t received,
                                 uint64_t fsynced, long lag_s),
                      void *arg);
/* repl_follower.c: this node following a leader (--replica-of) */
bool repl_follower_link_up(void);
const char *repl_follower_host(void);
int repl_follower_port(void);
uint64_t repl_follower_offset(void);
long repl_follower_last_io(void);
void cmd_replicaof(cmd_ctx *x);
/* retention_cmd.c */
void cmd_xretention(cmd_ctx *x);
void groups_shutdown(void);
size_t groups_blocked(void);

/* XADD's arguments as an append request; a.fields point into the argv and f. */
#define XADD_SMALL 16
typedef struct xadd_args {
    evs_append a;
    evs_field *f;
    evs_field small[XADD_SMALL];
    bool has_trim;  /* MAXLEN / MINID given */
    evs_trim trim;
} xadd_args;
/* NULL, or Redis' error text; release the args either way. */
const char *xadd_parse(const resp_arg *argv, size_t argc, xadd_args *xa);
void xadd_args_release(xadd_args *xa);
/* XADD's (xa set) or XTRIM's (xa NULL) options, as Redis parses them; for XADD also the ID,
 * at argv[*at]. NULL, or Redis' error text. */
const char *stream_opts_parse(const resp_arg *argv, size_t argc, xadd_args *xa, evs_trim *t,
                              bool *has_trim, size_t *at);
/* XADD's reply for a store result. */
void xadd_result_out(resp_out *o, int rc, evs_id id, const evs_error *err);

/* multi.c: inside MULTI, queue the command (or answer its error and doom the transaction);
 * returns true if it did. `why` is the command's error if it has one (unknown, arity, auth). */
bool multi_intercept(cmd_ctx *x, const command *cmd, const char *why);
/* An EXEC refused before it runs (its arity, AUTH): as Redis, the transaction (if any) is
 * discarded, keys unwatched, and the answer is -EXECABORT with the reason. */
void multi_abort(cmd_ctx *x, const char *why);
void cmd_multi(cmd_ctx *x);
void cmd_exec(cmd_ctx *x);
void cmd_discard(cmd_ctx *x);
void cmd_watch(cmd_ctx *x);
void cmd_unwatch(cmd_ctx *x);

#endif
