/*
 * cli_verify.c — `evstore verify --data DIR`: check every record of every segment and the
 * index against them, offline. Exit 0 clean, 1 problems found, 2 unusable arguments, 3 the
 * store could not be opened.
 */
#include "cli.h"

#include <getopt.h>
#include <string.h>

static const char *help =
    "usage: evstore verify --data DIR\n"
    "       evstore verify --backup DIR [--quiet]\n"
    "\n"
    "Checks every record of every segment (magic, bounds, CRC, body), the chain of each\n"
    "stream's entries, every index key against the log, and that a forward and a reverse\n"
    "read of each stream hand out as many entries as its length. Prints one line per problem,\n"
    "naming stream, segment file, byte offset and entry ID. Changes nothing; refused while\n"
    "a server holds the folder. An index it cannot use (after a reboot, missing, damaged)\n"
    "is rebuilt for the check in a private folder under $TMPDIR, removed after (or, if\n"
    "verify is killed, by the next verify or dump that makes one).\n"
    "\n"
    "  --data DIR   store folder (EVSTORE_DATA; default ./evstore-data)\n"
    "  --backup DIR a backup folder: its manifest, every file's size and CRC (compressed\n"
    "               files decompressed and checked too), the chain of an incremental backup\n"
    "\n"
    "Exit codes: 0 clean, 1 problems found, 2 unusable arguments, 3 cannot open the store,\n"
    "4 a server holds the folder.\n";

static void report(void *arg, const char *line)
{
    (void)arg;
    printf("problem: %s\n", line);
}

int cmd_verify(int argc, char **argv)
{
    const char *data = cli_env("EVSTORE_DATA", "./evstore-data"), *backup = NULL;
    bool quiet = false;
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'}, {"backup", required_argument, NULL, 'b'},
        {"quiet", no_argument, NULL, 'q'},      {"help", no_argument, NULL, 'h'}, {0}};
    int c;
    while ((c = getopt_long(argc, argv, "d:h", opts, NULL)) != -1) {
        if (c == 'd')
            data = optarg;
        else if (c == 'b')
            backup = optarg;
        else if (c == 'q')
            quiet = true;
        else if (c == 'h') {
            fputs(help, stdout);
            return EXIT_OK;
        } else {
            fputs(help, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "evstore verify: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (backup)
        return cli_verify_backup(backup, quiet);
    int ec;
    evs_store *st = cli_open_readonly("verify", data, &ec);
    if (!st)
        return ec;
    long problems = evs_verify(st, report, NULL);
    evs_store_stats s;
    evs_store_stats_get(st, &s);
    evs_close(st);
    if (problems < 0) {
        fprintf(stderr, "evstore verify: check failed: %s\n", evs_strerror((int)problems));
        return EXIT_FAILURE_;
    }
    printf("%s: %lu streams, %lu segments, %lu bytes of log: %ld problem%s\n", data,
           (unsigned long)s.streams, (unsigned long)s.segments, (unsigned long)s.log_bytes,
           problems, problems == 1 ? "" : "s");
    return problems ? EXIT_PROBLEMS : EXIT_OK;
}
