/*
 * fuzz_resp.c — the RESP request parser over hostile bytes, as a connection feeds it: parse
 * commands one after another, growing argv when asked, until partial or error. Checks that
 * every argument slice lies inside the input (or the inline buffer), and that a command fed in
 * pieces, with its progress kept between calls and the input moved each time (as a
 * connection's buffer grows), parses exactly as when it came whole.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resp.h"

#define MAX_ARGS 4096 /* bound the fuzzer's own memory */

typedef struct outcome {
    int rc;
    size_t used, argc;
    size_t off[MAX_ARGS], len[MAX_ARGS]; /* arguments as offsets into the input */
} outcome;

static uint8_t inl[RESP_MAX_INLINE];

/* One command from data[0, size), fed in pieces: the first `step` bytes, then `step` more at a
 * time (all of it at once when step is 0). Grows argv when asked, as the server does. */
static void parse_one(const uint8_t *data, size_t size, size_t step, outcome *o)
{
    resp_arg *argv = NULL;
    size_t cap = 0, have = step && step < size ? step : size;
    resp_progress pg = {0, 0, 0, 0};
    memset(o, 0, sizeof *o);
    for (;;) {
        uint8_t *copy = malloc(have ? have : 1); /* a new place each call: the input moves */
        if (!copy)
            abort();
        memcpy(copy, data, have);
        resp_cmd cmd = {argv, 0, cap, "", inl, sizeof inl, step ? &pg : NULL};
        size_t used;
        int rc = resp_parse(copy, have, 1 << 20, &cmd, &used);
        if (rc == RESP_PARTIAL && cmd.argc > cap) {
            free(copy);
            if (cmd.argc > MAX_ARGS) {
                o->rc = -1;
                break;
            }
            free(argv);
            argv = malloc(cmd.argc * sizeof *argv);
            if (!argv)
                abort();
            cap = cmd.argc;
            continue;
        }
        if (rc == RESP_PARTIAL && have < size) {
            free(copy);
            have = have + step < size ? have + step : size;
            continue;
        }
        o->rc = rc;
        o->argc = cmd.argc;
        if (rc == RESP_CMD || rc == RESP_EMPTY)
            o->used = used;
        for (size_t i = 0; rc == RESP_CMD && i < cmd.argc; i++) {
            const uint8_t *p = argv[i].ptr;
            if (p >= copy && p + argv[i].len <= copy + have)
                o->off[i] = (size_t)(p - copy);
            else if (p >= inl && p + argv[i].len <= inl + sizeof inl)
                o->off[i] = SIZE_MAX; /* unescaped inline (inline commands are not fed in
                                       * pieces: their bounds are what is checked) */
            else
                abort();
            o->len[i] = argv[i].len;
        }
        free(copy);
        break;
    }
    free(argv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static outcome whole, pieces;
    size_t off = 0, step = size % 13 + 1 + size / 64; /* the pieces: about 64 at most */
    while (off < size) {
        parse_one(data + off, size - off, 0, &whole);
        if (whole.rc < 0)
            break;
        if (data[off] == '*') { /* multibulk: the same command in pieces */
            parse_one(data + off, size - off, step, &pieces);
            /* (an error's text may differ: a count line past RESP_MAX_INLINE is refused as
             * too long when it has not ended yet, as invalid when it has, as in Redis) */
            if (pieces.rc != whole.rc || pieces.used != whole.used ||
                (whole.rc != RESP_ERROR && pieces.argc != whole.argc))
                abort();
            for (size_t i = 0; whole.rc == RESP_CMD && i < whole.argc; i++)
                if (pieces.off[i] != whole.off[i] || pieces.len[i] != whole.len[i])
                    abort();
        }
        if (whole.rc == RESP_PARTIAL || whole.rc == RESP_ERROR || whole.used == 0)
            break;
        off += whole.used;
    }
    return 0;
}
