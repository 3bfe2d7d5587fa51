/*
 * cli_promote.c — `evstore promote --server HOST:PORT`: make a follower the leader
 * (REPLICAOF NO ONE: it stops following, fsyncs a new epoch, then takes writes).
 */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "rclient.h"

static const char *help =
    "usage: evstore promote --server HOST:PORT [--password SECRET]\n"
    "\n"
    "Makes the follower at HOST:PORT a leader: it stops following, writes and fsyncs a new\n"
    "epoch (history first, then its record), and from then on takes writes. Promotion is the\n"
    "operator's decision: make sure the old leader is gone or will rejoin as a follower\n"
    "(docs/replication.md).\n"
    "\n"
    "  --server HOST:PORT   the follower's RESP address\n"
    "  --password SECRET    its --requirepass (EVSTORE_PASSWORD)\n"
    "\n"
    "Exit codes: 0 promoted (or a leader already), 2 unusable arguments, 3 failed.\n";

int cmd_promote(int argc, char **argv)
{
    const char *server = NULL, *password = getenv("EVSTORE_PASSWORD");
    static const struct option opts[] = {{"server", required_argument, NULL, 's'},
                                         {"password", required_argument, NULL, 'p'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 's')
            server = optarg;
        else if (c == 'p')
            password = optarg;
        else if (c == 'h') {
            fputs(help, stdout);
            return EXIT_OK;
        } else {
            fputs(help, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc || !server) {
        fprintf(stderr, "evstore promote: --server is required\n\n%s", help);
        return EXIT_USAGE;
    }
    if (!cli_hostport("promote", "--server", server))
        return EXIT_USAGE;
    rclient r;
    char err[512];
    resp_value *v = NULL;
    const char *args[] = {"REPLICAOF", "NO", "ONE"};
    if (rclient_connect(&r, server, password, NULL, err, sizeof err) ||
        rclient_send(&r, 3, args, NULL) || rclient_read(&r, &v, err, sizeof err)) {
        fprintf(stderr, "evstore promote: %s: %s\n", server, err);
        rclient_close(&r);
        return EXIT_FAILURE_;
    }
    int rc = EXIT_OK;
    if (v->type == RESP_T_ERROR) {
        fprintf(stderr, "evstore promote: %s: %.*s\n", server, (int)v->len, (const char *)v->str);
        rc = EXIT_FAILURE_;
    } else {
        printf("%s is a leader\n", server);
    }
    resp_value_free(v);
    rclient_close(&r);
    return rc;
}
