/*
 * commands.h — what the command modules share (commands.c, multi.c). Not for the server core.
 */
#ifndef EVS_COMMANDS_H
#define EVS_COMMANDS_H

#include "server.h"

typedef struct command {
    const char *name;
    int arity;   /* Redis style: n exact, -n at least n (the name counts) */
    bool noauth; /* allowed before AUTH */
    void (*fn)(cmd_ctx *x);
} command;

const command *commands_find(const resp_arg *name);
bool commands_arity_ok(const command *cmd, size_t argc);

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
/* Parse "<MAXLEN|MINID> [=|~] threshold [LIMIT count]" at argv[*i]; advances *i past it.
 * NULL, or Redis' error text. */
const char *trim_parse(const resp_arg *argv, size_t argc, size_t *i, evs_trim *t);
/* XADD's reply for a store result. */
void xadd_result_out(resp_out *o, int rc, evs_id id, const evs_error *err);

/* multi.c: inside MULTI, queue the command (or answer its error and doom the transaction);
 * returns true if it did. `why` is the command's error if it has one (unknown, arity, auth). */
bool multi_intercept(cmd_ctx *x, const command *cmd, const char *why);
void cmd_multi(cmd_ctx *x);
void cmd_exec(cmd_ctx *x);
void cmd_discard(cmd_ctx *x);
void cmd_watch(cmd_ctx *x);
void cmd_unwatch(cmd_ctx *x);

#endif
