/*
 * follower_copy.c — what `evstore serve` does to its data folder DATA before it opens the
 * store: a follower whose leader answered SNAPSHOT (what it lacks was deleted by the leader's
 * retention, or it is new and the leader's log is long: repl_leader.c F7) left the file
 * SNAPSHOT and restarted; here it copies the leader's store and puts it in place
 * (docs/replication.md, "snapshot-required").
 *
 *   1. Take DATA's LOCK (the store's own: no server runs on DATA meanwhile; one that does
 *      makes this step a no-op, and the open after it says the folder is in use).
 *   2. Finish a swap a crash interrupted (evs_swap_in, storage/swap.c).
 *   3. Remove what an interrupted copy left: DATA/.snapshot-<pid> (a backup being received),
 *      DATA/.new-<pid> (a copy restored, not yet in place; with its restore's build folder
 *      .new-<pid>.restore-XXXXXX), and an old store moved aside by 4. but not yet removed
 *      (or its aside, left empty). Under the lock they are nobody's.
 *   4. A follower with SNAPSHOT: if its store held nothing of its own (SNAPSHOT says
 *      "snapshot own 0": it was empty, a new follower, or its log was a prefix of the
 *      leader's, below the leader's start, so all it held is what the leader's retention
 *      deleted), swap it out for nothing and remove it first, to make room. Copy the
 *      leader's store as a backup into DATA/.snapshot-<pid>, restore it as a follower's copy
 *      (checked, every record too: restore.c R4; no new epoch) into DATA/.new-<pid>, and
 *      swap it in: what was in DATA goes to DATA/.replaced-<time>.
 *   5. That folder is kept when it holds an old store with writes of its own, or anything
 *      that is not a store's; removed when it holds no store (empty, or a marker alone).
 *
 * Everything happens inside DATA, on its file system: DATA may be a mount point (a volume
 * mounted as the data folder), and the copy lands on the store's own disk, not its parent's.
 * A stop signal during the copy ends it within one piece (the backup's and the restore's
 * cancel flag), or at once while it waits on the leader (rclient's ticks), and removes what
 * it wrote; `serve` then exits 0 (cli_serve.c).
 * Room needed: the leader's store once and a little (the restore moves the backup's files
 * into the copy: evs_restore_options.consume), plus the old store when it is kept.
 *
 * Invariants:
 *  C1. DATA holds one store whole (the old one, none, or the copy) at every instant and after
 *      a crash at any (storage/swap.c S1).
 *  C2. Nothing is removed from DATA but staging folders and, of an old store that held
 *      nothing of its own, the entries a store is made of (STORE, EPOCHS, log, index...,
 *      docs/format.md), and markers (SNAPSHOT, FOLLOWING...) in an aside that holds no store.
 *      A store with writes of its own is never removed.
 *  C3. A copy that fails (the leader down or silent, the link cut, a restore that fails) is
 *      tried again with backoff until it succeeds or a stop signal comes; DATA holds its old
 *      store (or, after make_room, none) meanwhile, and nothing of the failed attempt.
 */
#include "cli.h"
#include "evstore_backup.h"
#include "rclient.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>

/* dir/name into out (PATH_MAX): false if it does not fit. */
static bool path_of(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    return n > 0 && n < PATH_MAX;
}

/* Whether the old store in folder dir held nothing of its own: its SNAPSHOT marker says the
 * leader counted no bytes past where the two histories part ("snapshot own 0"). A marker from
 * an older follower ("snapshot"), or one with bytes of its own, is not. */
static bool held_nothing_of_its_own(const char *dir)
{
    uint64_t own;
    return evs_replica_snapshot_pending(dir, &own) == 1 && own == 0;
}

/* An entry a store folder is made of (docs/format.md): its files (and their temporary
 * names), log/, index/ and what an index leaves beside it. */
static bool store_entry(const char *name)
{
    static const char *const whole[] = {"LOCK",  "STORE", "EPOCHS", "TRUNCATE",
                                        "FOLLOWING", "RUNNING", "SNAPSHOT", "log",
                                        "index", "index.ckpt", "index.untrusted"};
    size_t len = strlen(name);
    for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++) {
        size_t w = strlen(whole[i]);
        if (!strncmp(name, whole[i], w) && (len == w || !strcmp(name + w, ".tmp")))
            return true;
    }
    return !strncmp(name, "index.damaged-", 14) || !strncmp(name, ".snapshot-index-", 16);
}

static void say(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(int level, const char *fmt, ...)
{
    char msg[9000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_log(NULL, level, msg);
}

/* Whether folder dir holds (part of) a store: any of the entries a store's data lives in. One
 * with none of them holds at most markers (SNAPSHOT, FOLLOWING...), which mean nothing
 * without a store: an aside a crash left empty, or one that was given only a marker. */
static bool holds_a_store(const char *dir)
{
    static const char *const data[] = {"STORE", "EPOCHS", "log", "index"};
    for (size_t i = 0; i < sizeof data / sizeof data[0]; i++) {
        char p[PATH_MAX];
        struct stat sb;
        if (!path_of(p, dir, data[i]) || !lstat(p, &sb))
            return true;
    }
    return false;
}

/* 5.: remove the store entries of the old store in `aside`, SNAPSHOT last (a crash midway
 * leaves it, and the next sweep finishes); the folder goes too if that empties it. Returns
 * how many entries it removed, its own LOCK (a sweep's) not counted. */
static int discard_old(const char *aside)
{
    DIR *d = opendir(aside);
    if (!d)
        return 0;
    struct dirent *e;
    bool kept = false;
    int removed = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
            !strcmp(e->d_name, "SNAPSHOT"))
            continue;
        char p[PATH_MAX];
        if (!path_of(p, aside, e->d_name) || !store_entry(e->d_name)) {
            kept = true;
            continue;
        }
        evs_remove_tree(p);
        removed += strcmp(e->d_name, "LOCK") != 0;
    }
    closedir(d);
    char marker[PATH_MAX];
    if (path_of(marker, aside, "SNAPSHOT") && !unlink(marker))
        removed++;
    if (!kept)
        rmdir(aside);
    else if (removed)
        say(EVS_LOG_WARN, "%s keeps what was in the data folder besides the old store", aside);
    return removed;
}

/* The name of this process's staging folder in DATA of the given kind (".new-" a copy restored
 * or an empty store made, ".snapshot-" a backup received): step 3 sweeps both. */
static void staging_name(char out[64], const char *kind)
{
    snprintf(out, 64, "%s%d", kind, (int)getpid());
}

/* C3: a failed copy is tried again, after 1 s, then twice as long each time up to 30 s, until
 * it succeeds or a stop signal comes, as the follower's link retries its leader: the leader
 * may be down, restarting or unreachable for a while, and a follower that exited at the first
 * failure stayed down until someone started it again. */
#define COPY_RETRY_FIRST_MS 1000u
#define COPY_RETRY_MAX_MS 30000u
static unsigned next_wait(unsigned ms)
{
    return ms >= COPY_RETRY_MAX_MS / 2 ? COPY_RETRY_MAX_MS : ms * 2;
}

/* Sleep ms in 100 ms ticks; true if *cancel became non-zero meanwhile. */
static bool pause_ms(unsigned ms, const volatile int *cancel)
{
    for (unsigned t = 0; t < ms && !rclient_stop_asked(cancel); t += RCLIENT_TICK_MS)
        nanosleep(&(struct timespec){0, RCLIENT_TICK_MS * 1000 * 1000}, NULL);
    return rclient_stop_asked(cancel);
}

/* 4.: copy the leader's store into data's place; the old store's folder in aside. */
static int copy_leader(const char *data, const char *leader, const char *password, char *aside,
                       size_t cap, const volatile int *cancel)
{
    char bk[PATH_MAX], fresh[PATH_MAX], staged[64], snap[64], journal[PATH_MAX];
    staging_name(staged, EVS_STAGED_NEW);
    staging_name(snap, EVS_STAGED_SNAPSHOT);
    if (!path_of(bk, data, snap) || !path_of(fresh, data, staged) ||
        !path_of(journal, data, "SWAP")) {
        say(EVS_LOG_ERROR, "the path of %s is too long to copy the leader's store into", data);
        return -1;
    }
    cli_log(NULL, EVS_LOG_WARN, "copying the leader's store (it answered SNAPSHOT: this "
                                "follower is new, or lacks what its retention deleted)");
    evs_backup_report br;
    evs_error err = {0};
    int rc;
    for (unsigned wait_ms = COPY_RETRY_FIRST_MS;; wait_ms = next_wait(wait_ms)) { /* C3 */
        evs_backup_options bo = {.out = bk, .cancel = cancel};
        memset(&err, 0, sizeof err);
        rc = cli_backup_remote(leader, password, &bo, &br, &err);
        if (!rc) {
            evs_restore_options ro = {.log = cli_log, .follower = true, .consume = true,
                                      .cancel = cancel};
            evs_restore_report rr;
            rc = evs_restore(bk, fresh, &ro, &rr, &err);
        }
        evs_remove_tree(bk); /* the copy is in `fresh` now, or nothing is */
        if (!rc || rclient_stop_asked(cancel))
            break;
        evs_remove_tree(fresh); /* a failed restore leaves none (backup.md); in case */
        say(EVS_LOG_ERROR, "copying the leader's store failed: %s; trying again in %u s",
            err.msg, wait_ms / 1000);
        if (pause_ms(wait_ms, cancel))
            break;
    }
    if (!rc)
        rc = evs_swap_in(data, staged, aside, cap, &err);
    if (rc) {
        say(EVS_LOG_ERROR, "copying the leader's store failed: %s", err.msg);
        if (access(journal, F_OK))
            evs_remove_tree(fresh); /* never swapped in (with a journal, the next open
                                       finishes the swap from it: C1) */
        return -1;
    }
    say(EVS_LOG_WARN, "the leader's store is copied (cut at log position %llu, %zu streams) "
        "and in place", (unsigned long long)br.cut, br.streams);
    return 0;
}

/* 5.: the old store, in aside: removed if it held nothing of its own, else kept; an aside
 * that holds no store (markers at most: C2 has nothing to keep) goes too. */
static void settle_old(const char *aside)
{
    if (held_nothing_of_its_own(aside)) {
        discard_old(aside);
        say(EVS_LOG_WARN, "the old store held nothing of its own (it was empty, or all it held "
            "the leader's retention had deleted): removed from %s", aside);
    } else if (!holds_a_store(aside)) {
        if (discard_old(aside))
            say(EVS_LOG_WARN, "%s held no store, only markers: removed", aside);
    } else {
        say(EVS_LOG_WARN, "the old store is kept in %s", aside);
    }
}

/* An old store that held nothing of its own is swapped out (for an empty staged folder) and
 * removed before the copy: the copy then needs room for the leader's store alone, not for
 * both. A crash after the swap leaves no store and no SNAPSHOT: the next start opens an
 * empty follower, which its leader sends to take a snapshot again. */
static int make_room(const char *data, char *aside, size_t cap)
{
    char staged[64], empty[PATH_MAX];
    evs_error err = {0};
    staging_name(staged, EVS_STAGED_NEW);
    if (!path_of(empty, data, staged) || mkdir(empty, 0755) ||
        evs_swap_in(data, staged, aside, cap, &err)) {
        say(EVS_LOG_ERROR, "cannot move the old store aside: %s",
            err.msg[0] ? err.msg : strerror(errno));
        return -1;
    }
    settle_old(aside);
    return 0;
}

/* 3.: under the lock, every staging folder in data is a leftover, and so is a .replaced-<time>
 * folder a crash left before settle_old ran on it (unless a server has that folder open): an
 * old store that held nothing of its own (a crash between make_room's swap and its removal),
 * or one that holds no store at all (a crash between a swap's end and the removal of its
 * empty aside). */
static void sweep_leftovers(const char *data)
{
    DIR *d = opendir(data);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        bool staging = evs_staged_is(e->d_name, EVS_STAGED_NEW) ||
                       evs_staged_is(e->d_name, EVS_STAGED_SNAPSHOT);
        char p[PATH_MAX];
        if ((!staging && !evs_staged_is(e->d_name, EVS_STAGED_REPLACED)) ||
            !path_of(p, data, e->d_name))
            continue;
        if (staging) {
            evs_remove_tree(p);
            say(EVS_LOG_WARN, "removed %s, left by an interrupted copy of the leader's store", p);
            continue;
        }
        evs_error err;
        int fd = held_nothing_of_its_own(p) || !holds_a_store(p) ? evs_lock_folder(p, &err) : -1;
        if (fd >= 0) {
            settle_old(p);
            close(fd);
        }
    }
    closedir(d);
}

int folder_prepare(const char *data, const char *leader, const char *password,
                   const volatile int *cancel)
{
    struct stat sb;
    if (stat(data, &sb) || !S_ISDIR(sb.st_mode))
        return 0; /* a new store, or not a folder: the open says what is wrong */
    evs_error err = {0};
    int fd = evs_lock_folder(data, &err);
    if (fd < 0)
        return 0; /* in use (the open says so), or no LOCK to be had: the open tries again */
    char aside[PATH_MAX];
    int rc = evs_swap_in(data, NULL, aside, sizeof aside, &err);
    if (rc) {
        say(EVS_LOG_ERROR, "cannot finish the swap of stores in %s: %s", data, err.msg);
    } else {
        if (aside[0]) {
            say(EVS_LOG_WARN, "finished a swap of stores a crash had interrupted");
            settle_old(aside);
        }
        sweep_leftovers(data);
        uint64_t own;
        if (leader && evs_replica_snapshot_pending(data, &own) == 1) {
            if (own == 0) /* held nothing of its own */
                rc = make_room(data, aside, sizeof aside);
            if (!rc && !(rc = copy_leader(data, leader, password, aside, sizeof aside, cancel)))
                settle_old(aside);
        }
    }
    close(fd);
    return rc ? -1 : 0;
}
