/*
 * resp.h — the Redis protocol, as a pure codec: no I/O, no allocation in the parser.
 *
 * Requests: resp_parse() looks at the bytes received so far and returns one of
 *   RESP_CMD      a whole command: argv slices point into the caller's buffer; *used bytes
 *   RESP_EMPTY    nothing to run (an empty line, "*0", "*-1"): skip *used bytes
 *   RESP_PARTIAL  not enough bytes yet; *used, when not 0, is how many are needed at least
 *   RESP_ERROR    a protocol error: msg holds Redis' text ("Protocol error: ..."); the
 *                 connection answers it and closes, as Redis does
 * Both forms Redis accepts are parsed: multibulk ("*<n>\r\n$<len>\r\n<bytes>\r\n...") and
 * inline ("PING\r\n", with Redis' quoting rules).
 *
 * Replies: resp_out_* append to a growable buffer, in RESP2 or RESP3 (proto 2 or 3).
 */
#ifndef EVS_RESP_H
#define EVS_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RESP_MAX_ARGS (1024 * 1024)   /* multibulk count above this is refused (Redis 6's bound;
                                         7.0 allows INT_MAX: docs/resp.md) */
#define RESP_MAX_INLINE (64 * 1024)   /* Redis: PROTO_INLINE_MAX_SIZE                   */

enum { RESP_CMD = 0, RESP_EMPTY = 1, RESP_PARTIAL = 2, RESP_ERROR = 3 };

typedef struct resp_arg {
    const uint8_t *ptr;
    size_t len;
} resp_arg;

/*
 * Where a multibulk command that has not all arrived stands, so that the next call on the same
 * input (the same bytes at its front, more after them; it may have moved) checks only what is
 * new: a command arriving in k reads costs its length once, not k times. The caller zeroes it
 * once; resp_parse resets it whenever it returns anything but RESP_PARTIAL, so the caller only
 * has to zero it again if it drops the input it was kept for.
 */
typedef struct resp_progress {
    size_t nargs; /* the command's argument count, 0: no command begun              */
    size_t done;  /* arguments checked whole                                         */
    size_t at;    /* offset of the next argument's header                            */
    size_t first; /* offset of the first argument's header                           */
} resp_progress;

typedef struct resp_cmd {
    resp_arg *argv;        /* caller-provided, argc_cap entries                         */
    size_t argc, argc_cap; /* on RESP_PARTIAL with argc > argc_cap (all arguments have  */
                           /* arrived): grow argv and call again; else argc is 0         */
    char msg[128];         /* RESP_ERROR: Redis' wording                                 */
    uint8_t *inline_buf;   /* inline commands with escapes are unescaped here (caller's,  */
    size_t inline_cap;     /* at least RESP_MAX_INLINE bytes, or NULL to refuse escapes)  */
    resp_progress *progress; /* the caller's, kept between calls; NULL: parse from the start */
} resp_cmd;

/* max_bulk: the largest bulk string accepted (--max-request-bytes). */
int resp_parse(const uint8_t *buf, size_t len, uint64_t max_bulk, resp_cmd *cmd, size_t *used);

/* ---- reading replies (clients: the CLI) --------------------------------------------------- */

enum resp_type {
    RESP_T_SIMPLE = 1, RESP_T_ERROR, RESP_T_INT, RESP_T_BULK, RESP_T_NULL, RESP_T_ARRAY,
    RESP_T_MAP, RESP_T_SET, RESP_T_PUSH, RESP_T_DOUBLE, RESP_T_BOOL, RESP_T_VERBATIM,
    RESP_T_BIGNUM
};

typedef struct resp_value {
    enum resp_type type;
    long long integer;           /* INT, BOOL                                              */
    const uint8_t *str;          /* SIMPLE ERROR BULK DOUBLE VERBATIM BIGNUM: into the buffer */
    size_t len;
    struct resp_value *elems;    /* ARRAY SET PUSH: n; MAP: 2n (key, value, ...)           */
    size_t n;
} resp_value;

#define RESP_MAX_DEPTH 32

/*
 * Parse one reply (RESP2 or RESP3) from buf. RESP_CMD: *out is a tree to free with
 * resp_value_free (strings point into buf), *used bytes; RESP_PARTIAL: call again with more;
 * RESP_ERROR: not a reply (msg says why). Declared counts are checked against the bytes that
 * remain before anything is allocated for them; nesting is bounded by RESP_MAX_DEPTH.
 */
int resp_reply_parse(const uint8_t *buf, size_t len, resp_value **out, size_t *used,
                     char *msg, size_t msgcap);
void resp_value_free(resp_value *v);
/*
 * The first line of a reply read on its own (CRLF removed), for a client that moves a bulk
 * string's bytes itself (the backup client splices them into a file): RESP_T_BULK with the
 * length in *n for "$<n>" (digits only, fitting 64 bits), RESP_T_ERROR for "-...", or -1.
 */
int resp_reply_line(const uint8_t *line, size_t len, uint64_t *n);
/*
 * The head of a replication LOG frame, "*3\r\n$3\r\nLOG\r\n:<at>\r\n$<n>\r\n" (numbers as
 * the general parser takes them, digits only), at the start of buf: 1 with *at, *n and the
 * head's length *hlen (the n bytes and a CRLF follow it); 0 if buf does not start with such a
 * head whole (another reply, or too short: the general parser decides). Reads nothing past
 * len.
 */
int resp_log_head(const uint8_t *buf, size_t len, uint64_t *at, uint64_t *n, size_t *hlen);

/* ---- replies ------------------------------------------------------------------------------ */

typedef struct resp_out {
    uint8_t *data;
    size_t len, cap;
    int proto;   /* 2 or 3 */
    bool oom;    /* an append failed: the reply is incomplete */
    bool over;   /* an append would have taken it past the reply limit: incomplete, and the
                    server answers the command with an error instead (resp_out_set_limit) */
} resp_out;

/* The most bytes any one reply buffer may hold (0: no limit), for every resp_out of the
 * process: the server's --max-output-bytes, so that one command cannot build a reply larger
 * than the output a client may have unsent (an XRANGE of large entries without COUNT). */
void resp_out_set_limit(size_t bytes);
size_t resp_out_limit(void);
void resp_out_init(resp_out *o, int proto);
/* Empty o for a new reply, keeping its buffer (a spare reply's: server.c). For an o that
 * resp_out_init made, or one whose buffer was released, or taken (data NULL). */
void resp_out_reuse(resp_out *o, int proto);
void resp_out_release(resp_out *o);
void resp_out_raw(resp_out *o, const void *p, size_t n);
/* Append a reply built apart (from's bytes), and its oom/over: what is incomplete there is
 * incomplete here. */
void resp_out_cat(resp_out *o, const resp_out *from);
/* Room for n more bytes at data + len (the caller fills them and adds to len); NULL (and oom,
 * or over) on failure. */
uint8_t *resp_out_reserve(resp_out *o, size_t n);
void resp_out_simple(resp_out *o, const char *s);            /* +OK                        */
void resp_out_error(resp_out *o, const char *fmt, ...)       /* -ERR ... (prefix included)  */
    __attribute__((format(printf, 2, 3)));
void resp_out_int(resp_out *o, long long v);                 /* :1                         */
void resp_out_bulk(resp_out *o, const void *p, size_t n);    /* $3\r\nabc                  */
void resp_out_cstr(resp_out *o, const char *s);              /* bulk of a C string         */
void resp_out_null(resp_out *o);                             /* $-1 / _                    */
void resp_out_null_array(resp_out *o);                       /* *-1 / _                    */
void resp_out_array(resp_out *o, size_t n);                  /* *n                         */
void resp_out_map(resp_out *o, size_t n);                    /* %n / *2n                   */
void resp_out_double(resp_out *o, double v);                 /* ,v / bulk                  */
void resp_out_verbatim(resp_out *o, const char *s, size_t n); /* =n\r\ntxt:... / bulk      */

#endif
