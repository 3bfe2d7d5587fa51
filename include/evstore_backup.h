/*
 * evstore_backup.h — backups of a store, their checking, and restoring one into a new data
 * folder. The layout of a backup folder is in docs/backup.md.
 *
 * A backup is written from a snapshot source: a store this process has open
 * (evs_backup_store), or anything that can list a snapshot's files and copy them in order —
 * the `evstore backup --server` client reads a live server's snapshot over RESP.
 */
#ifndef EVSTORE_BACKUP_H
#define EVSTORE_BACKUP_H

#include <stdbool.h>
#include <string.h>

#include "evstore.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where a long operation stands, for a progress display. The function is called one call at
 * a time, but while a backup is checked (verify, and a restore's first pass: up to four files
 * at once) from the checking threads as well as the caller's. */
typedef struct evs_progress {
    const char *what;          /* "backup", "check", "restore"                             */
    uint64_t bytes_done, bytes_total;
    size_t files_done, files_total;
} evs_progress;
typedef void (*evs_progress_fn)(void *arg, const evs_progress *p);

/* A snapshot to copy: its description, and a way to copy file i, in order, into a sink. */
typedef int (*evs_sink_fn)(void *sink_arg, const void *data, size_t len, evs_error *err);
/* A source that writes into the backup's file itself reports each piece: len bytes at off. */
typedef int (*evs_landed_fn)(void *arg, uint64_t off, size_t len, evs_error *err);
typedef struct evs_backup_source {
    const evs_snap_info *info;
    int (*copy)(void *arg, size_t file, evs_sink_fn sink, void *sink_arg, evs_error *err);
    void *arg;
    const char *describe;      /* "HOST:PORT" or the data folder, recorded in the manifest  */
    /* Optional (NULL: copy is used): for an uncompressed file, write file i in order from
     * offset 0 straight into fd (open for reading and writing) without passing the bytes
     * through user space, calling landed after every piece (the backup reads each piece back
     * for its CRC). -EOPNOTSUPP before anything was written: copy is used instead. */
    int (*copy_to_fd)(void *arg, size_t file, int fd, evs_landed_fn landed, void *landed_arg,
                      evs_error *err);
} evs_backup_source;

typedef struct evs_backup_options {
    const char *out;           /* the backup folder: created, or an existing empty one      */
    const char *parent;        /* incremental: the previous backup's folder, or NULL        */
    bool compress;             /* zlib-compress each file (<name>.z)                        */
    int level;                 /* zlib level when compressing; 0: 1 (fastest)               */
    uint64_t rate;             /* store bytes per second at most (the source waits); 0: no
                                  limit. Keeps a backup's reads and writes from crowding out
                                  the server's own fsyncs.                                  */
    evs_progress_fn progress;
    void *progress_arg;
    const volatile int *cancel; /* set non-zero (a signal handler) to stop within one piece:
                                   EVS_ECLOSED, and what was written is removed            */
} evs_backup_options;

/* The bytes a source should move between two of the --rate pauses: 5 ms of the pace (at least
 * 16 KiB, whole pages), at most `full`, the piece it moves at full speed; `full` when rate is
 * 0. A paced source asks for one such piece at a time (docs/backup.md, "Rate limit"). */
size_t evs_backup_piece(uint64_t rate, size_t full);

typedef struct evs_backup_report {
    char id[33];
    uint64_t cut;
    size_t files, files_shared;      /* files in the manifest; of them, held by an ancestor */
    uint64_t bytes, bytes_copied;    /* store bytes in the backup; bytes copied this time   */
    uint64_t bytes_stored;           /* bytes written into the backup folder                */
    size_t streams;
} evs_backup_report;

/* Write a backup of the source's snapshot. Its MANIFEST is written last (temp, fsync,
 * rename), so a folder without one is an incomplete backup; on failure what was written is
 * removed. */
int evs_backup_write(const evs_backup_source *src, const evs_backup_options *o,
                     evs_backup_report *rep, evs_error *err);
/* Snapshot the open store and back it up (the offline `evstore backup --data`). EVS_EINVAL
 * if o->out is inside the store's own folder (nothing written). */
int evs_backup_store(evs_store *st, const char *describe, const evs_backup_options *o,
                     evs_backup_report *rep, evs_error *err);

/* Check a backup without restoring it: its manifest, every file's presence, size and CRC,
 * the chain of ancestors of an incremental backup. `report` gets one line per problem (each
 * naming the file). Returns the number of problems (0: good), or < 0 if it could not run. */
long evs_backup_verify(const char *dir, void (*report)(void *arg, const char *line), void *arg,
                       evs_progress_fn progress, void *progress_arg);

typedef struct evs_restore_options {
    evs_progress_fn progress;
    void *progress_arg;
    void (*log)(void *arg, int level, const char *msg); /* the opened store's log lines   */
    void *log_arg;
    const volatile int *cancel; /* set non-zero (a signal handler) to stop: nothing is left   */
    bool follower;             /* a follower's copy of its leader: no new epoch (it continues
                                  the leader's history), opened as a follower to check it    */
    bool consume;              /* the backup is the caller's to give away: its uncompressed
                                  files are moved into the store (after the check), not
                                  copied, where one file system holds both, so the restore
                                  needs little room beyond the backup's. The backup is not
                                  usable after, whatever the outcome.                         */
} evs_restore_options;
typedef struct evs_restore_report {
    uint64_t bytes;
    size_t files, streams;
    evs_epoch epoch;           /* the epoch the restored store starts                       */
} evs_restore_report;

/* Restore backup `from` into `data` (which must not exist or be empty): check everything
 * first, build the store in a temporary sibling folder, open it (recovery), compare every
 * stream with the manifest, begin a new epoch, close it, and only then rename it into place.
 * EVS_EEXIST: data is not empty; EVS_EINVAL: data is a mount point (it cannot take the
 * rename: restore into a folder inside it); EVS_ECORRUPT: the backup failed its checks. */
int evs_restore(const char *from, const char *data, const evs_restore_options *o,
                evs_restore_report *rep, evs_error *err);

/* The staging folders of a data folder, by the start of their names: a store restored, not yet
 * in place (or an empty one made); a backup being received; an old store swapped out. A swap
 * never moves them, and a follower's start sweeps what an interrupted copy left of them. */
#define EVS_STAGED_NEW ".new-"
#define EVS_STAGED_SNAPSHOT ".snapshot-"
#define EVS_STAGED_REPLACED ".replaced-"
static inline bool evs_staged_is(const char *name, const char *kind)
{
    return !strncmp(name, kind, strlen(kind));
}

/* Put the store staged in dir/<staged> (a folder named .new-<...>: a complete store, closed;
 * a follower's copy of its leader's, restored there) in the place of the store in dir, within
 * dir (so dir may be a mount point): every entry of dir but LOCK, lost+found and staging
 * folders moves into dir/.replaced-<time> (its path in aside), the staged store's entries into
 * dir. Journaled (dir/SWAP, docs/format.md): a crash at any point leaves a folder whose next
 * writable evs_open finishes the swap first, so dir holds the old store or the new one, whole.
 * The caller holds dir's LOCK (evs_lock_folder), or no process has dir open. EVS_EEXIST: an
 * unfinished swap is there already. staged NULL: only finish an unfinished swap, if there is
 * one (aside gets its folder; "" when there was none). */
int evs_swap_in(const char *dir, const char *staged, char *aside, size_t cap, evs_error *err);

/* Take folder dir's LOCK as a writable evs_open does (exclusive, not waiting), for work on
 * the folder while no store is open on it: a descriptor (close it to let go; an evs_open of
 * dir by this process fails while it is held), or < 0: EVS_ELOCKED (another process has dir
 * open, or holds its lock), another error code. dir must exist. */
int evs_lock_folder(const char *dir, evs_error *err);

/* Remove a folder and everything in it (a temporary backup or restore folder). */
void evs_remove_tree(const char *path);

#ifdef __cplusplus
}
#endif
#endif
