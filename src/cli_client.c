/*
 * cli_client.c — `evstore publish` and `evstore read`: clients of a running server over RESP.
 *
 *   publish --server H:P STREAM field value ...   one XADD, prints the ID
 *   publish --server H:P STREAM < events.jsonl    one event per line ({"source","type",
 *                                                 "payload",...} as in the HTTP API),
 *                                                 pipelined in batches; prints one line per
 *                                                 input line: the ID, or empty if refused
 *   read --server H:P STREAM [--after ID] [--limit N] [--type T] [--follow]
 *                                                 JSON lines, the HTTP API's event objects
 *                                                 ("ts" is the ID's milliseconds here)
 *   tail --server H:P STREAM [-n N] [--type T]    the last N, then each new one: read
 *                                                 --follow from N entries before the end
 */
#include "cli.h"
#include "event_json.h"
#include "rclient.h"

#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PIPELINE 256

static const char *publish_help =
    "usage: evstore publish [--server HOST:PORT] [--password P] STREAM [FIELD VALUE ...]\n"
    "\n"
    "With FIELD VALUE pairs: append one entry and print its ID. Without: read events as JSON\n"
    "lines on stdin ({\"source\",\"type\",\"payload\",...}, as the HTTP API takes them), append\n"
    "them pipelined, and print one line per input line, in order: the ID, or an empty line for\n"
    "an event that was refused (the reason on stderr) and for a blank line. If the connection\n"
    "breaks, stderr says which lines were answered, which were sent without an answer (appended\n"
    "or not: check before sending them again) and whether any were not sent.\n"
    "\n"
    "  --server HOST:PORT   EVSTORE_SERVER, default 127.0.0.1:7379\n"
    "  --password P         EVSTORE_PASSWORD (the server's --requirepass)\n"
    "\n"
    "Exit codes: 0 all appended, 2 unusable arguments, 3 a failure (each one printed).\n";

static const char *read_help =
    "usage: evstore read [--server HOST:PORT] [--password P] STREAM [--after ID] [--limit N]\n"
    "                    [--type T] [--follow]\n"
    "\n"
    "Prints entries as JSON lines (the HTTP API's event objects; \"ts\" is the ID's ms).\n"
    "--follow keeps waiting for new entries (XREAD BLOCK) until interrupted; when the\n"
    "connection is lost (a server restart) it connects again and goes on after the last\n"
    "entry printed.\n"
    "Entries are asked for 1000 at a time, fewer when a page of large entries would pass the\n"
    "server's --max-output-bytes.\n"
    "\n"
    "  --server HOST:PORT   EVSTORE_SERVER, default 127.0.0.1:7379\n"
    "  --password P         EVSTORE_PASSWORD\n"
    "  --after ID           only entries with a greater ID\n"
    "  --limit N            at most N entries\n"
    "  --type T             only entries whose type field is T\n"
    "\n"
    "Exit codes: 0 done (or interrupted while following), 2 unusable arguments, 3 failure.\n";

static const char *tail_help =
    "usage: evstore tail [--server HOST:PORT] [--password P] STREAM [-n N] [--type T]\n"
    "\n"
    "Prints the last N entries of STREAM as JSON lines (as `read` does), then each new one as\n"
    "it is appended, until interrupted (`read --follow` from N entries before the end). A\n"
    "stream that does not exist yet is waited for; a lost connection (a server restart) is\n"
    "made again, and the tail goes on after the last entry printed.\n"
    "\n"
    "  --server HOST:PORT   EVSTORE_SERVER, default 127.0.0.1:7379\n"
    "  --password P         EVSTORE_PASSWORD\n"
    "  -n, --lines N        how many of the newest entries first (default 10; 0: only new ones)\n"
    "  --type T             only entries whose type field is T (the last N of that type)\n"
    "\n"
    "Exit codes: 0 interrupted, 2 unusable arguments, 3 failure.\n";

static int connect_or_say(rclient *c, const char *cmd, const char *server, const char *password)
{
    char err[300];
    if (rclient_connect(c, server, password, NULL, err, sizeof err)) {
        fprintf(stderr, "evstore %s: %s\n", cmd, err);
        return -1;
    }
    return 0;
}

/* Lines printed on stdout by publish: one per input line, so the first `publish_printed` input
 * lines are answered. */
static size_t publish_printed;

/* Print one reply of an XADD: the ID, or the error to stderr. 0 ok, 1 refused, -1 broken. */
static int print_xadd(rclient *c, size_t line)
{
    resp_value *v;
    char err[300];
    if (rclient_read(c, &v, err, sizeof err)) {
        fprintf(stderr, "evstore publish: %s\n", err);
        return -1;
    }
    int rc = 0;
    publish_printed++;
    if (v->type == RESP_T_BULK) {
        printf("%.*s\n", (int)v->len, v->str);
    } else {
        putchar('\n'); /* one output line per input line: empty for a refused event */
        if (line)
            fprintf(stderr, "evstore publish: line %zu: %.*s\n", line, (int)v->len, v->str);
        else
            fprintf(stderr, "evstore publish: %.*s\n", (int)v->len, v->str);
        rc = 1;
    }
    resp_value_free(v);
    return rc;
}

int cmd_publish(int argc, char **argv)
{
    const char *server = cli_env("EVSTORE_SERVER", "127.0.0.1:7379");
    const char *password = getenv("EVSTORE_PASSWORD");
    static const struct option opts[] = {{"server", required_argument, NULL, 's'},
                                         {"password", required_argument, NULL, 'p'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "+s:p:h", opts, NULL)) != -1) {
        switch (ch) {
        case 's': server = optarg; break;
        case 'p': password = optarg; break;
        case 'h': fputs(publish_help, stdout); return EXIT_OK;
        default: fputs(publish_help, stderr); return EXIT_USAGE;
        }
    }
    int left = argc - optind;
    if (left < 1 || (left > 1 && (left - 1) % 2)) {
        fputs(publish_help, stderr);
        return EXIT_USAGE;
    }
    if (!cli_hostport("publish", "--server", server))
        return EXIT_USAGE;
    const char *stream = argv[optind];
    rclient c;
    if (connect_or_say(&c, "publish", server, password))
        return EXIT_FAILURE_;
    int failures = 0;
    if (left > 1) {
        size_t n = (size_t)left + 2;
        const char **a = calloc(n, sizeof *a);
        a[0] = "XADD";
        a[1] = stream;
        a[2] = "*";
        for (int i = 1; i < left; i++)
            a[2 + i] = argv[optind + i];
        int rc = rclient_send(&c, n, a, NULL) ? -1 : print_xadd(&c, 0);
        free(a);
        rclient_close(&c);
        return rc ? EXIT_FAILURE_ : EXIT_OK;
    }
    /* JSON lines: pipelined XADDs, answered in order */
    char *line = NULL;
    size_t cap = 0, lineno = 0, inflight = 0, sent = 0; /* sent: the last line sent */
    ssize_t got;
    bool broken = false;
    while (!broken && (got = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = 0;
        json_error_t je;
        json_t *ev = got ? json_loadb(line, (size_t)got, JSON_REJECT_DUPLICATES, &je) : NULL;
        evs_field f[64];
        char *keep[1];
        size_t nf = 0, nkeep = 0;
        const char *why = ev ? event_fields(ev, f, 64, &nf, keep, &nkeep) : got ? je.text : NULL;
        if (!ev || why) {
            /* answer the pipelined ones first, so that output stays in input order */
            for (; inflight && !broken; inflight--) {
                int r = print_xadd(&c, 0);
                broken = r < 0;
                failures += r != 0;
            }
            if (!broken) {
                putchar('\n'); /* a blank line too: output line n answers input line n */
                publish_printed++;
                if (got) {
                    fprintf(stderr, "evstore publish: line %zu: %s\n", lineno, why);
                    failures++;
                }
            }
        } else {
            const char *a[3 + 128];
            size_t l[3 + 128];
            a[0] = "XADD", l[0] = 4;
            a[1] = stream, l[1] = strlen(stream);
            a[2] = "*", l[2] = 1;
            for (size_t i = 0; i < nf; i++) {
                a[3 + 2 * i] = f[i].name.ptr, l[3 + 2 * i] = f[i].name.len;
                a[4 + 2 * i] = f[i].value.ptr, l[4 + 2 * i] = f[i].value.len;
            }
            if (rclient_send(&c, 3 + 2 * nf, a, l))
                broken = true;
            inflight++;
            sent = lineno;
        }
        for (size_t k = 0; k < nkeep; k++)
            free(keep[k]);
        json_decref(ev);
        if (inflight >= PIPELINE) {
            for (; inflight && !broken; inflight--) {
                int r = print_xadd(&c, 0);
                broken = r < 0;
                failures += r != 0;
            }
        }
    }
    for (; inflight && !broken; inflight--) {
        int r = print_xadd(&c, 0);
        broken = r < 0;
        failures += r != 0;
    }
    if (broken) {
        /* what a rerun needs: which lines are settled, which are unknown, which never went */
        bool rest = lineno > sent || getline(&line, &cap, stdin) >= 0;
        if (sent > publish_printed)
            fprintf(stderr, "evstore publish: lines 1-%zu are answered above; lines %zu-%zu were "
                    "sent but not answered: each may or may not have been appended (check "
                    "before sending it again)%s\n", publish_printed, publish_printed + 1, sent,
                    rest ? "; the lines after them were not sent" : "");
        else
            fprintf(stderr, "evstore publish: lines 1-%zu are answered above%s\n", publish_printed,
                    rest ? "; the lines after them were not sent" : "");
    }
    free(line);
    rclient_close(&c);
    return failures || broken ? EXIT_FAILURE_ : EXIT_OK;
}

/* ---- read --------------------------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Is e (one entry of an XRANGE-shaped array, checked) of type `type` (NULL: any)? */
static bool entry_of_type(const resp_value *e, const char *type)
{
    if (!type)
        return true;
    const resp_value *kv = e->elems[1].elems;
    for (size_t k = 0; k + 1 < e->elems[1].n; k += 2)
        if (kv[k].len == 4 && !memcmp(kv[k].str, "type", 4) && kv[k + 1].len == strlen(type) &&
            !memcmp(kv[k + 1].str, type, kv[k + 1].len))
            return true;
    return false;
}

/* Is e one entry of an XRANGE-shaped array: [id, [name, value, ...]], with its ID in *id? */
static bool entry_ok(const resp_value *e, evs_id *id)
{
    return e->type == RESP_T_ARRAY && e->n == 2 && e->elems[0].type == RESP_T_BULK &&
           e->elems[1].type == RESP_T_ARRAY && e->elems[1].n % 2 == 0 &&
           !evs_id_parse(e->elems[0].str, e->elems[0].len, 0, id);
}

/* Print the entries of an XRANGE-shaped array; returns how many were printed, -1 if the
 * reply is not entries. *last gets the last ID seen (printed or not). */
static long print_entries(const resp_value *arr, const char *type, evs_id *last, long budget)
{
    long printed = 0;
    if (arr->type != RESP_T_ARRAY)
        return arr->type == RESP_T_NULL ? 0 : -1;
    for (size_t i = 0; i < arr->n && (budget < 0 || printed < budget); i++) {
        const resp_value *e = &arr->elems[i];
        evs_entry ent;
        if (!entry_ok(e, &ent.id))
            return -1;
        *last = ent.id;
        if (!entry_of_type(e, type))
            continue;
        size_t nf = e->elems[1].n / 2;
        evs_field *f = calloc(nf ? nf : 1, sizeof *f);
        if (!f)
            return -1;
        for (size_t k = 0; k < nf; k++) {
            const resp_value *kv = &e->elems[1].elems[2 * k];
            f[k] = (evs_field){{kv[0].str, kv[0].len}, {kv[1].str, kv[1].len}};
        }
        ent.time_us = ent.id.ms * 1000;
        ent.fields = f;
        ent.nfields = nf;
        json_t *j = event_json(&ent);
        char *text = json_dumps(j, JSON_COMPACT);
        if (text)
            puts(text);
        free(text);
        json_decref(j);
        printed++;
        free(f);
    }
    fflush(stdout);
    return printed;
}

/* Following, the connection was lost (a server restarted, a link cut): connect again until it
 * works or the user interrupts, pausing 0.1 s, then twice as long each time up to 2 s. The
 * loop goes on after the last entry printed, so nothing is missed or printed twice. 0
 * reconnected, -1 interrupted. */
static int reconnect(rclient *c, const char *cmd, const char *server, const char *password,
                     const char *why)
{
    rclient_close(c);
    fprintf(stderr, "evstore %s: %s; reconnecting to %s\n", cmd, why, server);
    long delay_ms = 100;
    char said[300] = "";
    while (!interrupted) {
        struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL); /* a signal ends it early */
        char err[300];
        if (interrupted)
            break;
        if (rclient_connect(c, server, password, NULL, err, sizeof err) == 0) {
            fprintf(stderr, "evstore %s: reconnected\n", cmd);
            return 0;
        }
        if (strcmp(err, said)) { /* each new reason once, not every attempt */
            fprintf(stderr, "evstore %s: %s\n", cmd, err);
            snprintf(said, sizeof said, "%s", err);
        }
        delay_ms = delay_ms * 2 > 2000 ? 2000 : delay_ms * 2;
    }
    return -1;
}

/* `read`'s loop (and `tail`'s after its start): the entries after `last` (of `type`, at most
 * `limit`; -1: all), 1000 at a time (fewer while a page would pass the server's
 * --max-output-bytes); with `follow`, then wait for new ones (XREAD BLOCK) until interrupted,
 * connecting again when the connection is lost. An exit code. */
static int read_loop(rclient *c, const char *cmd, const char *server, const char *password,
                     const char *stream, evs_id last, long limit, const char *type, bool follow)
{
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    long printed = 0;
    int rc = EXIT_OK;
    bool caught_up = false;
    long page = 1000; /* entries asked for at once: halved while a reply would be too large */
    while (!interrupted && (limit < 0 || printed < limit)) {
        char start[EVS_ID_STRLEN + 1], count[24], err[300];
        start[0] = '(';
        evs_id_format(last, start + 1);
        /* "(0-0" excludes nothing: no entry has ID 0-0 */
        const char *xr[] = {"XRANGE", stream, start, "+", "COUNT", count};
        const char *xb[] = {"XREAD", "BLOCK", "1000", "COUNT", count, "STREAMS", stream, start + 1};
        long want = limit < 0 || limit - printed > page ? page : limit - printed;
        snprintf(count, sizeof count, "%ld", want);
        bool blocking = caught_up && follow;
        resp_value *v;
        bool sent = rclient_send(c, blocking ? 8 : 6, blocking ? xb : xr, NULL) == 0;
        if (!sent)
            snprintf(err, sizeof err, "connection lost");
        if (!sent || rclient_read(c, &v, err, sizeof err)) {
            if (interrupted)
                break;
            if (follow && reconnect(c, cmd, server, password, err) == 0)
                continue;
            if (!follow) {
                fprintf(stderr, "evstore %s: %s\n", cmd, err);
                rc = EXIT_FAILURE_;
            }
            break;
        }
        if (v->type == RESP_T_ERROR && want > 1 && memmem(v->str, v->len, "max-output-bytes", 16)) {
            page = want / 2; /* large entries: the same read in smaller pages */
            resp_value_free(v);
            continue;
        }
        if (v->type == RESP_T_ERROR) {
            fprintf(stderr, "evstore %s: %.*s\n", cmd, (int)v->len, v->str);
            resp_value_free(v);
            rc = EXIT_FAILURE_;
            break;
        }
        const resp_value *entries = v;
        if (blocking && v->type == RESP_T_ARRAY && v->n == 1 && v->elems[0].n == 2)
            entries = &v->elems[0].elems[1]; /* [[stream, entries]] */
        evs_id before = last;
        long n = print_entries(entries, type, &last, limit < 0 ? -1 : limit - printed);
        size_t got = entries->type == RESP_T_ARRAY ? entries->n : 0;
        resp_value_free(v); /* entries points into v */
        if (n < 0) {
            fprintf(stderr, "evstore %s: unexpected reply from the server\n", cmd);
            rc = EXIT_FAILURE_;
            break;
        }
        printed += n;
        if (evs_id_cmp(before, last) == 0) { /* nothing new */
            if (!follow)
                break;
            caught_up = true;
        } else if (!blocking && got < (size_t)want) {
            caught_up = true;
            if (!follow)
                break;
        }
    }
    return rc;
}

int cmd_read(int argc, char **argv)
{
    const char *server = cli_env("EVSTORE_SERVER", "127.0.0.1:7379");
    const char *password = getenv("EVSTORE_PASSWORD");
    const char *after = NULL, *type = NULL;
    long limit = -1;
    bool follow = false;
    static const struct option opts[] = {{"server", required_argument, NULL, 's'},
                                         {"password", required_argument, NULL, 'p'},
                                         {"after", required_argument, NULL, 'a'},
                                         {"limit", required_argument, NULL, 'l'},
                                         {"type", required_argument, NULL, 't'},
                                         {"follow", no_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "s:p:a:l:t:fh", opts, NULL)) != -1) {
        switch (ch) {
        case 's': server = optarg; break;
        case 'p': password = optarg; break;
        case 'a': after = optarg; break;
        case 'l': {
            long long v;
            if (!cli_number("read", "--limit", optarg, 0, LONG_MAX, &v))
                return EXIT_USAGE;
            limit = (long)v;
            break;
        }
        case 't': type = optarg; break;
        case 'f': follow = true; break;
        case 'h': fputs(read_help, stdout); return EXIT_OK;
        default: fputs(read_help, stderr); return EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fputs(read_help, stderr);
        return EXIT_USAGE;
    }
    if (!cli_hostport("read", "--server", server))
        return EXIT_USAGE;
    const char *stream = argv[optind];
    evs_id last = EVS_ID_MIN;
    if (after && evs_id_parse(after, strlen(after), 0, &last)) {
        fprintf(stderr, "evstore read: --after: not an ID: %s\n", after);
        return EXIT_USAGE;
    }
    rclient c;
    if (connect_or_say(&c, "read", server, password))
        return EXIT_FAILURE_;
    int rc = read_loop(&c, "read", server, password, stream, last, limit, type, follow);
    rclient_close(&c);
    return rc;
}

/* The ID just before id (the exclusive start that reads id first). */
static evs_id id_before(evs_id id)
{
    if (id.seq)
        return (evs_id){id.ms, id.seq - 1};
    return id.ms ? (evs_id){id.ms - 1, UINT64_MAX} : EVS_ID_MIN;
}

/* Where `tail` starts reading (exclusive): before the n-th newest entry of `type` (the oldest
 * of them if the stream holds fewer), or after the newest entry when n is 0 or none matches
 * (0-0 when the stream is empty or missing). Walks back with XREVRANGE pages. 0, or an exit
 * code (EXIT_OK when interrupted). */
static int tail_start(rclient *c, const char *stream, long n, const char *type, evs_id *from)
{
    char end[EVS_ID_STRLEN + 1] = "+", count[24], err[300] = "";
    long found = 0, page = 1000;
    bool any = false; /* the newest entry seen */
    evs_id newest = EVS_ID_MIN;
    while (n == 0 ? !any : found < n) {
        snprintf(count, sizeof count, "%ld", page);
        const char *xr[] = {"XREVRANGE", stream, end, "-", "COUNT", count};
        resp_value *v;
        if (rclient_send(c, 6, xr, NULL) || rclient_read(c, &v, err, sizeof err)) {
            if (interrupted)
                return EXIT_OK;
            fprintf(stderr, "evstore tail: %s\n", err[0] ? err : "connection lost");
            return EXIT_FAILURE_;
        }
        if (v->type == RESP_T_ERROR && page > 1 && memmem(v->str, v->len, "max-output-bytes", 16)) {
            page /= 2; /* large entries: the same walk in smaller pages */
            resp_value_free(v);
            continue;
        }
        if (v->type == RESP_T_ERROR)
            fprintf(stderr, "evstore tail: %.*s\n", (int)v->len, v->str);
        else if (v->type != RESP_T_ARRAY)
            fprintf(stderr, "evstore tail: unexpected reply from the server\n");
        if (v->type != RESP_T_ARRAY) {
            resp_value_free(v);
            return EXIT_FAILURE_;
        }
        size_t got = v->n;
        evs_id id = EVS_ID_MIN;
        for (size_t i = 0; i < v->n && (n == 0 ? !any : found < n); i++) {
            if (!entry_ok(&v->elems[i], &id)) {
                fprintf(stderr, "evstore tail: unexpected reply from the server\n");
                resp_value_free(v);
                return EXIT_FAILURE_;
            }
            if (!any)
                newest = id;
            any = true;
            if (n && entry_of_type(&v->elems[i], type)) {
                found++;
                *from = id_before(id);
            }
        }
        resp_value_free(v);
        if (got < (size_t)page)
            break; /* the stream's start */
        end[0] = '(';
        evs_id_format(id, end + 1);
    }
    if (!found)
        *from = newest; /* only new ones */
    return 0;
}

int cmd_tail(int argc, char **argv)
{
    const char *server = cli_env("EVSTORE_SERVER", "127.0.0.1:7379");
    const char *password = getenv("EVSTORE_PASSWORD");
    const char *type = NULL;
    long n = 10;
    static const struct option opts[] = {{"server", required_argument, NULL, 's'},
                                         {"password", required_argument, NULL, 'p'},
                                         {"lines", required_argument, NULL, 'n'},
                                         {"type", required_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "s:p:n:t:h", opts, NULL)) != -1) {
        switch (ch) {
        case 's': server = optarg; break;
        case 'p': password = optarg; break;
        case 'n': {
            long long v;
            if (!cli_number("tail", "-n", optarg, 0, LONG_MAX, &v))
                return EXIT_USAGE;
            n = (long)v;
            break;
        }
        case 't': type = optarg; break;
        case 'h': fputs(tail_help, stdout); return EXIT_OK;
        default: fputs(tail_help, stderr); return EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fputs(tail_help, stderr);
        return EXIT_USAGE;
    }
    if (!cli_hostport("tail", "--server", server))
        return EXIT_USAGE;
    const char *stream = argv[optind];
    rclient c;
    if (connect_or_say(&c, "tail", server, password))
        return EXIT_FAILURE_;
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    evs_id from;
    int rc = tail_start(&c, stream, n, type, &from);
    if (!rc)
        rc = read_loop(&c, "tail", server, password, stream, from, -1, type, true);
    rclient_close(&c);
    return rc;
}
