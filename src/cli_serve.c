/*
 * cli_serve.c — `evstore serve`: flags (each with an EVSTORE_* twin), then server_run().
 */
#include "cli.h"
#include "server.h"

#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>

static const char *help =
    "usage: evstore serve [options]\n"
    "\n"
    "Serves the Redis Streams protocol (RESP2, RESP3 via HELLO 3) on a store folder. Every\n"
    "XADD is answered only once durable under --fsync. Stops cleanly on SIGTERM,\n"
    "SIGINT or the SHUTDOWN command.\n"
    "\n"
    "  --data DIR              store folder              EVSTORE_DATA     ./evstore-data\n"
    "  --bind ADDR             IPv4 address to listen on EVSTORE_BIND     127.0.0.1\n"
    "  --port P                RESP port                 EVSTORE_PORT     7379\n"
    "  --http-port H           HTTP/JSON API port, 0 off EVSTORE_HTTP_PORT 7380\n"
    "  --http-cors-origin L    web origins whose pages   EVSTORE_HTTP_CORS_ORIGIN (none)\n"
    "                          may call the HTTP API: 'https://app.example.com,...' or '*';\n"
    "                          a request from any other page (Origin header) gets 403\n"
    "  --http-hosts L          Host names the HTTP API  EVSTORE_HTTP_HOSTS (none)\n"
    "                          answers to besides localhost and IP literals, when it listens\n"
    "                          on 127.x (DNS-rebinding guard): 'evstore.internal,...' or '*'\n"
    "  --fsync MODE            always|everysec|no        EVSTORE_FSYNC    always\n"
    "  --requirepass SECRET    clients must AUTH         EVSTORE_REQUIREPASS (none)\n"
    "  --max-clients N         RESP + HTTP clients       EVSTORE_MAX_CLIENTS 10000\n"
    "  --max-tails N           HTTP live tails at once   EVSTORE_MAX_TAILS 1000\n"
    "  --metrics-max-streams N per-stream series on      EVSTORE_METRICS_MAX_STREAMS 1000\n"
    "                          /metrics for the first N streams (creation order); 0: none\n"
    "  --max-entry-bytes N     largest entry (encoded)   EVSTORE_MAX_ENTRY_BYTES 64m\n"
    "  --max-request-bytes N   largest bulk argument     EVSTORE_MAX_REQUEST_BYTES 512m\n"
    "  --max-output-bytes N    unsent replies before a   EVSTORE_MAX_OUTPUT_BYTES 256m\n"
    "                          slow client is dropped; one reply larger is an error\n"
    "  --segment-bytes N       segment size              EVSTORE_SEGMENT_BYTES 64m\n"
    "  --timeout S             close RESP clients idle   EVSTORE_TIMEOUT  0 (never)\n"
    "                          S seconds (not while a reply is pending: XREAD BLOCK)\n"
    "  --retention-max-age D   default: entries older    EVSTORE_RETENTION_MAX_AGE (none)\n"
    "                          than D go (7d, 12h, 30m, 2s, 500ms)\n"
    "  --retention-max-bytes N default: a stream's       EVSTORE_RETENTION_MAX_BYTES (none)\n"
    "                          oldest entries go beyond N bytes of records\n"
    "  --retention-max-entries N  default: keep at most  EVSTORE_RETENTION_MAX_ENTRIES (none)\n"
    "                          N entries per stream\n"
    "  --replica-of HOST:PORT  follow that leader: a     EVSTORE_REPLICA_OF (none: lead)\n"
    "                          read-only, byte-identical copy of its log (docs/replication.md)\n"
    "  --leader-password S     AUTH to the leader        EVSTORE_LEADER_PASSWORD (none)\n"
    "  --ack leader|all        when an XADD is answered: EVSTORE_ACK leader\n"
    "                          durable here, or also fsynced by --min-replicas followers\n"
    "                          (all: readers here also see only what they hold)\n"
    "  --min-replicas N        followers --ack all needs EVSTORE_MIN_REPLICAS 1\n"
    "  --ack-timeout MS        --ack all gives up        EVSTORE_ACK_TIMEOUT 10000\n"
    "                          (NOREPLICAS) after MS\n"
    "  --full-sync-bytes N     a new follower copies     EVSTORE_FULL_SYNC_BYTES 256m\n"
    "                          the store whole, as a backup, when its log holds N bytes or\n"
    "                          more, instead of replaying the log; 0: it always replays\n"
    "\n"
    "Sizes take k, m, g, t suffixes (powers of 1024). Streams override the retention defaults\n"
    "with XRETENTION or PUT /streams/{name}/retention (docs/resp.md, docs/http.md); space\n"
    "returns when whole segments fall out. A follower refuses writes (RESP: -READONLY, as a\n"
    "Redis replica; HTTP: 403). With --requirepass, HTTP requests need\n"
    "'Authorization: Bearer SECRET' (all but /healthz and /readyz); a live tail also takes\n"
    "?access_token=SECRET (a browser's EventSource cannot send headers).\n"
    "\n"
    "Exit codes: 0 stopped cleanly, 2 unusable arguments, 3 failure (folder in use, port taken,\n"
    "store error).\n";

static bool size_opt(const char *name, const char *v, uint64_t *out)
{
    if (cli_size(v, out))
        return true;
    fprintf(stderr, "evstore serve: %s: not a size: %s\n", name, v);
    return false;
}

/* A list flag (--http-cors-origin, --http-hosts): empty is none; else `ok` must take it, or
 * why not is printed (an item is not `what`). */
static bool list_opt(const char *flag, const char **v,
                     bool (*ok)(const char *, const char **, size_t *), const char *what)
{
    if (*v && !**v)
        *v = NULL;
    const char *bad;
    size_t bad_len;
    if (!*v || ok(*v, &bad, &bad_len))
        return true;
    if (bad)
        fprintf(stderr, "evstore serve: %s: not %s: %.*s\n", flag, what, (int)bad_len, bad);
    else
        fprintf(stderr, "evstore serve: %s: give items separated by commas, or '*' alone\n",
                flag);
    return false;
}

int cmd_serve(int argc, char **argv)
{
    sigset_t stop, pending; /* blocked by an image that restarted itself into this one (below):
                               one that came during its exec is obeyed here, the store closed */
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    if (!sigpending(&pending) && (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT))) {
        cli_log(NULL, EVS_LOG_INFO, "stopped: a stop signal came while it restarted itself");
        return EXIT_OK;
    }
    server_stop_signals_record(); /* a stop from here on is clean: recorded, then obeyed */
    sigprocmask(SIG_UNBLOCK, &stop, NULL);
    server_config c = {0};
    c.data = cli_env("EVSTORE_DATA", "./evstore-data");
    c.bind = cli_env("EVSTORE_BIND", "127.0.0.1");
    const char *port = cli_env("EVSTORE_PORT", "7379");
    const char *hport = cli_env("EVSTORE_HTTP_PORT", "7380");
    c.http_cors_origin = cli_env("EVSTORE_HTTP_CORS_ORIGIN", NULL);
    c.http_hosts = cli_env("EVSTORE_HTTP_HOSTS", NULL);
    const char *fsync = cli_env("EVSTORE_FSYNC", "always");
    c.requirepass = getenv("EVSTORE_REQUIREPASS");
    const char *maxc = cli_env("EVSTORE_MAX_CLIENTS", "10000");
    const char *maxt = cli_env("EVSTORE_MAX_TAILS", "1000");
    const char *mms = cli_env("EVSTORE_METRICS_MAX_STREAMS", "1000");
    const char *entry = cli_env("EVSTORE_MAX_ENTRY_BYTES", "64m");
    const char *req = cli_env("EVSTORE_MAX_REQUEST_BYTES", "512m");
    const char *outb = cli_env("EVSTORE_MAX_OUTPUT_BYTES", "256m");
    const char *seg = cli_env("EVSTORE_SEGMENT_BYTES", "64m");
    const char *tmo = cli_env("EVSTORE_TIMEOUT", "0");
    const char *rage = cli_env("EVSTORE_RETENTION_MAX_AGE", NULL);
    const char *rbytes = cli_env("EVSTORE_RETENTION_MAX_BYTES", NULL);
    const char *rents = cli_env("EVSTORE_RETENTION_MAX_ENTRIES", NULL);
    c.replica_of = cli_env("EVSTORE_REPLICA_OF", NULL);
    c.leader_password = cli_env("EVSTORE_LEADER_PASSWORD", NULL);
    const char *ack = cli_env("EVSTORE_ACK", "leader");
    const char *minr = cli_env("EVSTORE_MIN_REPLICAS", "1");
    const char *ackto = cli_env("EVSTORE_ACK_TIMEOUT", "10000");
    const char *fullsync = cli_env("EVSTORE_FULL_SYNC_BYTES", "256m");
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},           {"bind", required_argument, NULL, 'b'},
        {"http-port", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},           {"fsync", required_argument, NULL, 'f'},
        {"requirepass", required_argument, NULL, 'a'},    {"max-clients", required_argument, NULL, 'c'},
        {"max-entry-bytes", required_argument, NULL, 'e'}, {"max-request-bytes", required_argument, NULL, 'r'},
        {"max-output-bytes", required_argument, NULL, 'o'}, {"segment-bytes", required_argument, NULL, 's'},
        {"timeout", required_argument, NULL, 't'},
        {"retention-max-age", required_argument, NULL, 'A'},
        {"retention-max-bytes", required_argument, NULL, 'B'},
        {"retention-max-entries", required_argument, NULL, 'N'},
        {"replica-of", required_argument, NULL, 'R'},
        {"leader-password", required_argument, NULL, 'L'},
        {"ack", required_argument, NULL, 'K'},
        {"min-replicas", required_argument, NULL, 'M'},
        {"ack-timeout", required_argument, NULL, 'T'},
        {"max-tails", required_argument, NULL, 'X'},
        {"metrics-max-streams", required_argument, NULL, 'm'},
        {"http-cors-origin", required_argument, NULL, 'O'},
        {"http-hosts", required_argument, NULL, 'W'},
        {"full-sync-bytes", required_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},                 {0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "d:b:p:H:f:a:c:e:r:o:s:t:A:B:N:R:L:K:M:T:X:m:O:W:F:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'H': hport = optarg; break;
        case 'd': c.data = optarg; break;
        case 'b': c.bind = optarg; break;
        case 'p': port = optarg; break;
        case 'f': fsync = optarg; break;
        case 'a': c.requirepass = optarg; break;
        case 'c': maxc = optarg; break;
        case 'e': entry = optarg; break;
        case 'r': req = optarg; break;
        case 'o': outb = optarg; break;
        case 's': seg = optarg; break;
        case 't': tmo = optarg; break;
        case 'A': rage = optarg; break;
        case 'B': rbytes = optarg; break;
        case 'N': rents = optarg; break;
        case 'R': c.replica_of = optarg; break;
        case 'L': c.leader_password = optarg; break;
        case 'K': ack = optarg; break;
        case 'M': minr = optarg; break;
        case 'T': ackto = optarg; break;
        case 'X': maxt = optarg; break;
        case 'm': mms = optarg; break;
        case 'O': c.http_cors_origin = optarg; break;
        case 'W': c.http_hosts = optarg; break;
        case 'F': fullsync = optarg; break;
        case 'h': fputs(help, stdout); return EXIT_OK;
        default: fputs(help, stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "evstore serve: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (strcmp(ack, "leader") && strcmp(ack, "all")) {
        fprintf(stderr, "evstore serve: --ack is leader or all, not %s\n", ack);
        return EXIT_USAGE;
    }
    c.ack_all = !strcmp(ack, "all");
    long long minr_n, ackto_n, port_n, hport_n, maxc_n, maxt_n, mms_n, tmo_n, rents_n = 0;
    if (!cli_number("serve", "--min-replicas", minr, 1, INT_MAX, &minr_n) ||
        !cli_number("serve", "--ack-timeout (milliseconds)", ackto, 1, INT_MAX, &ackto_n) ||
        !cli_number("serve", "--port", port, 1, 65535, &port_n) ||
        !cli_number("serve", "--http-port (0 disables HTTP)", hport, 0, 65535, &hport_n) ||
        !cli_number("serve", "--max-clients", maxc, 1, INT_MAX, &maxc_n) ||
        !cli_number("serve", "--max-tails", maxt, 1, 1000000, &maxt_n) ||
        !cli_number("serve", "--metrics-max-streams (0: none)", mms, 0, 100000000, &mms_n) ||
        !cli_number("serve", "--timeout (seconds, 0: never)", tmo, 0, 100000000, &tmo_n) ||
        (rents && !cli_number("serve", "--retention-max-entries", rents, 0, LLONG_MAX, &rents_n)))
        return EXIT_USAGE;
    c.min_replicas = (int)minr_n;
    c.ack_timeout_ms = (int)ackto_n;
    c.port = (int)port_n;
    c.http_port = (int)hport_n;
    c.max_clients = (int)maxc_n;
    c.max_tails = (int)maxt_n;
    c.metrics_max_streams = (uint64_t)mms_n;
    c.timeout_s = (int)tmo_n;
    if (rents)
        c.retention.max_entries = (uint64_t)rents_n;
    if (c.replica_of && !cli_hostport("serve", "--replica-of", c.replica_of))
        return EXIT_USAGE;
    int mode = cli_fsync_mode(fsync);
    if (mode < 0) {
        fprintf(stderr, "evstore serve: --fsync must be always, everysec or no\n");
        return EXIT_USAGE;
    }
    c.fsync = (evs_fsync_mode)mode;
    if (!size_opt("--max-entry-bytes", entry, &c.max_entry_bytes) ||
        !size_opt("--max-request-bytes", req, &c.max_request_bytes) ||
        !size_opt("--max-output-bytes", outb, &c.max_output_bytes) ||
        !size_opt("--segment-bytes", seg, &c.segment_bytes) ||
        !size_opt("--full-sync-bytes", fullsync, &c.full_sync_bytes))
        return EXIT_USAGE;
    if (rage && evs_parse_duration_ms(rage, strlen(rage), &c.retention.max_age_ms)) {
        fprintf(stderr, "evstore serve: --retention-max-age: not a duration (7d, 12h, 30m, 2s, "
                        "500ms): %s\n", rage);
        return EXIT_USAGE;
    }
    if (rbytes && !size_opt("--retention-max-bytes", rbytes, &c.retention.max_bytes))
        return EXIT_USAGE;
    if (c.requirepass && !*c.requirepass)
        c.requirepass = NULL;
    if (!list_opt("--http-cors-origin", &c.http_cors_origin, http_cors_list_ok,
                  "an origin (scheme://host[:port], no path)") ||
        !list_opt("--http-hosts", &c.http_hosts, http_hosts_list_ok,
                  "a host name (no scheme, no port)"))
        return EXIT_USAGE;
    c.log = cli_log;
    static char data[4096]; /* "DIR/" names the same folder as "DIR", and DIR.new-<pid> */
    snprintf(data, sizeof data, "%s", c.data);
    for (size_t n = strlen(data); n > 1 && data[n - 1] == '/'; n--)
        data[n - 1] = 0;
    c.data = data;
    int prep = folder_prepare(c.data, c.replica_of, c.leader_password, server_stop_flag());
    if (server_stop_signal()) { /* before or during a copy: the next start copies anew */
        cli_log(NULL, EVS_LOG_INFO, "stopped cleanly before serving (a stop signal came)");
        return EXIT_OK;
    }
    if (prep)
        return EXIT_FAILURE_;
    static char follow_next[FOLLOW_NEXT_MAX];
    c.follow_next = follow_next;
    int rc = server_run(&c);
    if (rc == SERVER_RESTART) {
        /* a stop signal from here on stays pending across the exec (the new image unblocks
         * it first thing, and it ends the process there); one that came already is obeyed */
        sigprocmask(SIG_BLOCK, &stop, NULL);
        if (server_stop_signal()) {
            cli_log(NULL, EVS_LOG_INFO, "stopped cleanly (a stop signal came while it stopped "
                                        "to restart itself)");
            return EXIT_OK;
        }
        /* a follower cut its log, or REPLICAOF HOST PORT (docs/replication.md): the same
         * command again, same pid, its --replica-of replaced by the new leader's */
        char **again = calloc((size_t)argc + 4, sizeof *again);
        if (again) {
            int n = 0;
            again[n++] = argv[0];
            again[n++] = (char *)"serve";
            for (int i = 1; i < argc; i++) {
                if (follow_next[0] && !strcmp(argv[i], "--replica-of") && i + 1 < argc) {
                    i++; /* replaced below: a node told REPLICAOF again and again keeps one */
                    continue;
                }
                if (follow_next[0] && !strncmp(argv[i], "--replica-of=", 13))
                    continue;
                again[n++] = argv[i];
            }
            if (follow_next[0]) {
                again[n++] = (char *)"--replica-of";
                again[n++] = follow_next;
            }
            execv("/proc/self/exe", again);
        }
        fprintf(stderr, "evstore serve: cannot restart itself: %s\n", strerror(errno));
        return EXIT_FAILURE_;
    }
    return rc ? EXIT_FAILURE_ : EXIT_OK;
}
