/*
 * cli.h — what the subcommands share: exit codes, option helpers, JSON output.
 */
#ifndef EVS_CLI_H
#define EVS_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "evstore.h"

/* Exit codes, the same for every subcommand (documented in --help and README). */
enum { EXIT_OK = 0, EXIT_PROBLEMS = 1, EXIT_USAGE = 2, EXIT_FAILURE_ = 3, EXIT_REFUSED = 4 };

int cmd_verify(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_append(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_publish(int argc, char **argv);
int cmd_read(int argc, char **argv);
int cmd_tail(int argc, char **argv);
int cmd_bench_resp(int argc, char **argv);
int cmd_bench_groups(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_promote(int argc, char **argv);
/* A backup of a running server over RESP (cli_backup.c), for `backup --server` and for a
 * follower copying its leader's store (follower_copy.c). */
struct evs_backup_options;
struct evs_backup_report;
int cli_backup_remote(const char *server, const char *password,
                      const struct evs_backup_options *o, struct evs_backup_report *rep,
                      evs_error *err);
/* Before `evstore serve` opens DATA (follower_copy.c): finish a swap of stores a crash
 * interrupted, remove what an interrupted copy left, and, for a follower whose leader asked
 * for it (SNAPSHOT), copy the leader's store (`leader`, with `password`) into DATA's place;
 * the copy stops (within one piece, nothing left) once *cancel is non-zero. 0, or -1 after
 * logging why. */
int folder_prepare(const char *data, const char *leader, const char *password,
                   const volatile int *cancel);
/* `evstore verify --backup DIR` (cli_backup.c). */
int cli_verify_backup(const char *dir, bool quiet);

/* The value of environment variable `env` if set, else def. */
const char *cli_env(const char *env, const char *def);
/* Parse "always|everysec|no"; -1 if neither. */
int cli_fsync_mode(const char *s);
/* Parse a size with an optional k/m/g suffix (powers of 1024); false if malformed. */
bool cli_size(const char *s, uint64_t *out);
/* Parse the decimal number given to `flag` of `evstore cmd` (its environment twin alike):
 * digits only (no sign, blank or unit: `--ack-timeout 5s` is refused, not read as 5), from min
 * to max; false, after printing why on stderr, if it is not one. */
bool cli_number(const char *cmd, const char *flag, const char *s, long long min, long long max,
                long long *out);
/* Check the HOST:PORT given to `flag` of `evstore cmd` (net/hostport.h: a port of digits only,
 * 1-65535); false, after printing why on stderr, if it is not one. */
bool cli_hostport(const char *cmd, const char *flag, const char *s);
/* Open a store folder read-only for an offline tool; on failure print "evstore CMD: why" and
 * set *exit_code (EXIT_REFUSED: a server holds the folder; else EXIT_FAILURE_). */
evs_store *cli_open_readonly(const char *cmd, const char *data, int *exit_code);
/* Log sink for evs_options.log: "<time> <level> <msg>" on stderr. */
void cli_log(void *arg, int level, const char *msg);

/* Benchmarks: a monotonic clock in ns, and qsort's comparison for uint64_t. */
int cli_cmp_u64(const void *a, const void *b);
/* When the i-th request of a run paced at `rate` per second from `start` is due: its own time,
 * or with tick_ns the start of its tick (the requests of each tick due together: on this VM a
 * pacer waking at 10 kHz stalls the machine, docs/benchmarks.md "Machine"). */
uint64_t cli_due_ns(uint64_t start, size_t i, double rate, uint64_t tick_ns);

/* JSON: write `len` bytes as a JSON string (invalid UTF-8 bytes become \u00XX). */
void json_str(FILE *f, const void *p, size_t len);

#endif
