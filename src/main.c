/*
 * main.c — the evstore binary: one subcommand per concept, each in its own src/cli_*.c.
 */
#include "cli.h"
#include "fdlimit.h"
#include "hostport.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *usage =
    "usage: evstore COMMAND [options]\n"
    "\n"
    "Durable event-log store with a Redis Streams interface.\n"
    "\n"
    "Commands:\n"
    "  serve    serve the Redis Streams protocol and the HTTP/JSON API on a store folder\n"
    "  publish  append entries through a running server (fields, or JSON lines on stdin)\n"
    "  read     print a stream's entries from a running server as JSON lines (--follow)\n"
    "  tail     print a stream's last entries, then each new one (read --follow from the end)\n"
    "  append   append one entry to a stream of a store folder (no server)\n"
    "  dump     print a stream's entries as JSON lines\n"
    "  verify   check every record and the index of a store folder, or every file of a backup\n"
    "  backup   a consistent point-in-time backup of a running server or of a store folder\n"
    "  restore  check a backup whole, then restore it into a new store folder\n"
    "  promote  make a running follower the leader (REPLICAOF NO ONE)\n"
    "  bench    storage benchmarks (figures for docs/benchmarks.md)\n"
    "  bench-resp  XADD latency at a steady rate against a running RESP server\n"
    "  bench-groups  XREADGROUP + XACK round trips against a running RESP server\n"
    "\n"
    "`evstore COMMAND --help` documents each command's flags. Every flag has an environment\n"
    "twin: --data is EVSTORE_DATA, --fsync is EVSTORE_FSYNC, and so on.\n"
    "\n"
    "Exit codes: 0 success, 1 problems found (verify; restore: a damaged backup), 2 unusable\n"
    "arguments, 3 failure, 4 refused (a target that is not empty, a folder in use).\n";

const char *cli_env(const char *env, const char *def)
{
    const char *v = getenv(env);
    return v && *v ? v : def;
}

int cli_fsync_mode(const char *s)
{
    if (!strcmp(s, "always"))
        return EVS_FSYNC_ALWAYS;
    if (!strcmp(s, "everysec"))
        return EVS_FSYNC_EVERYSEC;
    if (!strcmp(s, "no"))
        return EVS_FSYNC_NO;
    return -1;
}

bool cli_size(const char *s, uint64_t *out) { return evs_parse_size(s, strlen(s), out) == 0; }

bool cli_number(const char *cmd, const char *flag, const char *s, long long min, long long max,
                long long *out)
{
    long long v = 0;
    bool ok = *s != '\0';
    for (const char *c = s; ok && *c; c++) {
        ok = *c >= '0' && *c <= '9' && v <= (LLONG_MAX - (*c - '0')) / 10;
        if (ok)
            v = v * 10 + (*c - '0');
    }
    if (!ok || v < min || v > max) {
        fprintf(stderr, "evstore %s: %s: not a whole number from %lld to %lld: %s\n", cmd, flag,
                min, max, s);
        return false;
    }
    *out = v;
    return true;
}

bool cli_hostport(const char *cmd, const char *flag, const char *s)
{
    char host[256];
    int port;
    const char *why;
    if (hostport_split(s, host, sizeof host, &port, &why))
        return true;
    fprintf(stderr, "evstore %s: %s: %s: %s\n", cmd, flag, why, s);
    return false;
}

int cli_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t cli_due_ns(uint64_t start, size_t i, double rate, uint64_t tick_ns)
{
    uint64_t t = (uint64_t)((double)i * 1e9 / rate);
    return start + (tick_ns ? t - t % tick_ns : t);
}

void cli_log(void *arg, int level, const char *msg)
{
    (void)arg;
    static const char *names[] = {"error", "warn", "info", "debug"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %s %s\n", when, ts.tv_nsec / 1000000,
            names[level >= 0 && level <= 3 ? level : 3], msg);
}

evs_store *cli_open_readonly(const char *cmd, const char *data, int *exit_code)
{
    evs_options o;
    evs_options_init(&o);
    o.read_only = true;
    o.log = cli_log;
    evs_store *st;
    evs_error err;
    if (evs_open(data, &o, &st, &err)) {
        fprintf(stderr, "evstore %s: %s\n", cmd, err.msg);
        *exit_code = err.code == EVS_ELOCKED ? EXIT_REFUSED : EXIT_FAILURE_;
        return NULL;
    }
    return st;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("evstore %s\n", EVSTORE_VERSION);
        return EXIT_OK;
    }
    const char *cmd = argv[1];
    argv[1] = argv[0];
    fdlimit_raise(); /* the offline tools open a store too: a descriptor per segment */
    if (!strcmp(cmd, "serve"))
        return cmd_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "publish"))
        return cmd_publish(argc - 1, argv + 1);
    if (!strcmp(cmd, "read"))
        return cmd_read(argc - 1, argv + 1);
    if (!strcmp(cmd, "tail"))
        return cmd_tail(argc - 1, argv + 1);
    if (!strcmp(cmd, "verify"))
        return cmd_verify(argc - 1, argv + 1);
    if (!strcmp(cmd, "backup"))
        return cmd_backup(argc - 1, argv + 1);
    if (!strcmp(cmd, "restore"))
        return cmd_restore(argc - 1, argv + 1);
    if (!strcmp(cmd, "promote"))
        return cmd_promote(argc - 1, argv + 1);
    if (!strcmp(cmd, "dump"))
        return cmd_dump(argc - 1, argv + 1);
    if (!strcmp(cmd, "append"))
        return cmd_append(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench-resp"))
        return cmd_bench_resp(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench-groups"))
        return cmd_bench_groups(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 1, argv + 1);
    fprintf(stderr, "evstore: unknown command '%s'\n\n%s", cmd, usage);
    return EXIT_USAGE;
}
