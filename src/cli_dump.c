/*
 * cli_dump.c — `evstore dump --data DIR STREAM [--after ID] [--limit N]`: a stream's entries
 * as JSON lines {"id","ts","fields":{...}} (ts: append time in ms; fields in stored order).
 */
#include "cli.h"

#include <getopt.h>
#include <limits.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char *help =
    "usage: evstore dump --data DIR STREAM [--after ID] [--limit N] [--reverse]\n"
    "\n"
    "Prints entries as JSON lines: {\"id\":\"<ms>-<seq>\",\"ts\":<append ms>,\"fields\":{...}}.\n"
    "Field names and values are JSON strings; bytes that are not UTF-8 appear as \\u00XX.\n"
    "\n"
    "  --data DIR   store folder (EVSTORE_DATA; default ./evstore-data)\n"
    "  --after ID   only entries with a greater ID\n"
    "  --limit N    at most N entries\n"
    "  --reverse    newest first\n"
    "\n"
    "Exit codes: 0 done, 2 unusable arguments, 3 cannot open or a corrupt record was met,\n"
    "4 a server holds the folder.\n";

int cmd_dump(int argc, char **argv)
{
    const char *data = cli_env("EVSTORE_DATA", "./evstore-data");
    evs_query q;
    evs_query_init(&q);
    static const struct option opts[] = {{"data", required_argument, NULL, 'd'},
                                         {"after", required_argument, NULL, 'a'},
                                         {"limit", required_argument, NULL, 'l'},
                                         {"reverse", no_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int c;
    while ((c = getopt_long(argc, argv, "d:a:l:rh", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'a':
            if (evs_id_parse(optarg, strlen(optarg), UINT64_MAX, &q.start)) {
                fprintf(stderr, "evstore dump: --after: not an ID: %s\n", optarg);
                return EXIT_USAGE;
            }
            q.start_exclusive = true;
            break;
        case 'l': {
            long long n;
            if (!cli_number("dump", "--limit", optarg, 0, LLONG_MAX, &n))
                return EXIT_USAGE;
            q.limit = (uint64_t)n;
            break;
        }
        case 'r': q.reverse = true; break;
        case 'h': fputs(help, stdout); return EXIT_OK;
        default: fputs(help, stderr); return EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fputs(help, stderr);
        return EXIT_USAGE;
    }
    const char *stream = argv[optind];
    int ec;
    evs_store *st = cli_open_readonly("dump", data, &ec);
    if (!st)
        return ec;
    evs_error err;
    evs_iter *it;
    int rc = evs_iter_open(st, (evs_slice){stream, strlen(stream)}, &q, &it, &err);
    if (rc == EVS_ENOTFOUND) {
        evs_close(st);
        return EXIT_OK; /* an absent stream is an empty one, as in Redis */
    }
    if (rc) {
        fprintf(stderr, "evstore dump: %s\n", err.msg);
        evs_close(st);
        return EXIT_FAILURE_;
    }
    const evs_entry *e;
    while ((rc = evs_iter_next(it, &e, &err)) == 1) {
        char id[EVS_ID_STRLEN];
        evs_id_format(e->id, id);
        printf("{\"id\":\"%s\",\"ts\":%" PRIu64 ",\"fields\":{", id, e->time_us / 1000);
        for (size_t i = 0; i < e->nfields; i++) {
            if (i)
                putchar(',');
            json_str(stdout, e->fields[i].name.ptr, e->fields[i].name.len);
            putchar(':');
            json_str(stdout, e->fields[i].value.ptr, e->fields[i].value.len);
        }
        fputs("}}\n", stdout);
    }
    evs_iter_close(it);
    evs_close(st);
    if (rc < 0) {
        fprintf(stderr, "evstore dump: %s\n", err.msg);
        return EXIT_FAILURE_;
    }
    return EXIT_OK;
}
