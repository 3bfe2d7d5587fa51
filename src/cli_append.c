/*
 * cli_append.c — `evstore append --data DIR STREAM field value [field value ...]`: append one
 * entry to a store folder directly (no server), print its ID once it is durable.
 */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char *help =
    "usage: evstore append --data DIR [--id ID] [--fsync MODE] STREAM FIELD VALUE [FIELD VALUE ...]\n"
    "\n"
    "Appends one entry and prints its ID after it is durable. The folder must not be held\n"
    "by a running server, nor be a follower's (its entries come from its leader).\n"
    "\n"
    "  --data DIR      store folder (EVSTORE_DATA; default ./evstore-data)\n"
    "  --id ID         explicit ID <ms>-<seq> or <ms>-* (default: generated, like '*')\n"
    "  --fsync MODE    always|everysec|no (EVSTORE_FSYNC; default always)\n"
    "\n"
    "Exit codes: 0 appended, 2 unusable arguments (a stream name over 400 bytes too), 3 the\n"
    "append failed.\n";

int cmd_append(int argc, char **argv)
{
    const char *data = cli_env("EVSTORE_DATA", "./evstore-data");
    const char *fsync = cli_env("EVSTORE_FSYNC", "always");
    const char *idarg = NULL;
    static const struct option opts[] = {{"data", required_argument, NULL, 'd'},
                                         {"id", required_argument, NULL, 'i'},
                                         {"fsync", required_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int c;
    while ((c = getopt_long(argc, argv, "+d:i:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'i': idarg = optarg; break;
        case 'f': fsync = optarg; break;
        case 'h': fputs(help, stdout); return EXIT_OK;
        default: fputs(help, stderr); return EXIT_USAGE;
        }
    }
    int left = argc - optind;
    if (left < 3 || (left - 1) % 2) {
        fprintf(stderr, "evstore append: need STREAM then FIELD VALUE pairs\n");
        return EXIT_USAGE;
    }
    size_t nl = strlen(argv[optind]);
    if (nl > EVS_STREAM_NAME_MAX) { /* an argument no store takes: before opening one */
        fprintf(stderr, "evstore append: stream name is %zu bytes, the limit is %d\n", nl,
                EVS_STREAM_NAME_MAX);
        return EXIT_USAGE;
    }
    evs_options o;
    evs_options_init(&o);
    o.log = cli_log;
    int mode = cli_fsync_mode(fsync);
    if (mode < 0) {
        fprintf(stderr, "evstore append: --fsync must be always, everysec or no\n");
        return EXIT_USAGE;
    }
    o.fsync = (evs_fsync_mode)mode;
    evs_append a = {{argv[optind], strlen(argv[optind])}, EVS_ID_AUTO, {0, 0}, NULL, 0, false};
    if (idarg) {
        size_t l = strlen(idarg);
        if (l > 2 && !strcmp(idarg + l - 2, "-*")) {
            a.id_mode = EVS_ID_AUTO_SEQ;
            if (evs_id_parse(idarg, l - 2, 0, &a.id)) {
                fprintf(stderr, "evstore append: --id: not an ID: %s\n", idarg);
                return EXIT_USAGE;
            }
        } else if (strcmp(idarg, "*")) {
            a.id_mode = EVS_ID_EXPLICIT;
            if (evs_id_parse(idarg, l, 0, &a.id)) {
                fprintf(stderr, "evstore append: --id: not an ID: %s\n", idarg);
                return EXIT_USAGE;
            }
        }
    }
    size_t nf = (size_t)(left - 1) / 2;
    evs_field *f = calloc(nf, sizeof *f);
    if (!f)
        return EXIT_FAILURE_;
    for (size_t i = 0; i < nf; i++) {
        const char *k = argv[optind + 1 + 2 * i], *v = argv[optind + 2 + 2 * i];
        f[i] = (evs_field){{k, strlen(k)}, {v, strlen(v)}};
    }
    a.fields = f;
    a.nfields = nf;
    evs_store *st;
    evs_error err;
    /* a stopped follower's folder opens as one: an entry appended here would part its
     * history from its leader's, and be cut when it follows again (docs/replication.md) */
    o.replica = evs_store_follows(data);
    if (evs_open(data, &o, &st, &err)) {
        fprintf(stderr, "evstore append: %s\n", err.msg);
        free(f);
        return EXIT_FAILURE_;
    }
    evs_id id;
    int rc = evs_append_one(st, &a, &id, &err);
    free(f);
    int crc = evs_close(st);
    if (rc == EVS_EREADONLY) {
        fprintf(stderr, "evstore append: %s holds a follower's store: its entries come from "
                "its leader (append there; a follower started without --replica-of leads)\n",
                data);
        return EXIT_FAILURE_;
    }
    if (rc || crc) {
        fprintf(stderr, "evstore append: %s\n", rc ? err.msg : evs_strerror(crc));
        return EXIT_FAILURE_;
    }
    char buf[EVS_ID_STRLEN];
    evs_id_format(id, buf);
    puts(buf);
    return EXIT_OK;
}
