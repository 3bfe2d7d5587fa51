/*
 * fileio.h — the thin file-I/O layer under the storage engine. Every write-path system call
 * goes through an evs_io table so tests can inject short writes, ENOSPC and fsync failures
 * (fio_fault_*). Functions return 0 / byte counts like the system calls, or -errno.
 */
#ifndef EVS_FILEIO_H
#define EVS_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct evs_io {
    int (*open)(const char *path, int flags, int mode);
    ssize_t (*pwritev)(int fd, const struct iovec *iov, int n, off_t off);
    int (*fdatasync)(int fd);
    int (*fsync)(int fd);
    int (*fallocate)(int fd, int mode, off_t off, off_t len);
    int (*ftruncate)(int fd, off_t len);
    int (*rename)(const char *from, const char *to);
};

/* The real system calls, returning -errno on failure. */
extern const struct evs_io fio_real;

/* Write all of iov at off (looping over short writes); -errno, or -EIO on a zero write. */
int fio_pwritev_all(const struct evs_io *io, int fd, struct iovec *iov, int n, off_t off);
/* Write a whole small file durably: path.tmp, fsync, rename, fsync the folder. */
int fio_write_file_atomic(const struct evs_io *io, const char *path, const void *data,
                          size_t len);
/* fsync a folder. */
int fio_fsync_dir(const struct evs_io *io, const char *dir);
/* Whether folder dir holds nothing: 1 empty, 0 not, -errno if it cannot be listed (-ENOENT:
 * no such folder, -ENOTDIR: not a folder). */
int fio_dir_empty(const char *dir);

/*
 * Cut the file fd down to `to` bytes FIO_SHRINK_STEP at a time, calling pace(arg, ns) after
 * each step, the last too, with the time the step took (it may sleep, or return false to stop
 * there: then 1 and the file not yet at `to`). Without pace, all in one cut.
 * Releasing a segment's 64 MiB of extents at once stalls every fdatasync on the same file
 * system for tens of milliseconds (measured: docs/architecture.md, the releaser); small steps
 * with pauses keep each stall short. 0 when done, 1 when stopped, or the failed cut's -errno.
 */
#define FIO_SHRINK_STEP (8ull << 20)
int fio_shrink_paced(const struct evs_io *io, int fd, uint64_t to,
                     bool (*pace)(void *arg, uint64_t step_ns), void *arg);

/*
 * A batch of newly written files whose fsyncs are deferred and then issued together (backup
 * and restore write many files in a row, starting each file's writeback as they go). An
 * fsync at the end of every file stalled the copy until that file's last writes, its
 * metadata and a cache flush reached the disk; deferred, the copy goes on while writeback
 * runs, and the fsyncs at the end find most of it done (on a journaling ext4 the first one's
 * commit also covers the others). Measured on 1.1 GiB: restore 2.7 -> 1.1 s, backup 2.1 -> 1.7 s.
 * fio_syncset_add takes fd (the set closes it) and its path (copied); a full set flushes
 * itself. fio_syncset_flush fsyncs and closes every file in the order added: 0, or the first
 * failure's -errno with its path copied into failed (the other files are still closed).
 * fio_syncset_drop closes every file without syncing (the caller failed and removes them).
 */
#define FIO_SYNCSET_MAX 64
typedef struct fio_syncset {
    int fd[FIO_SYNCSET_MAX];
    char *path[FIO_SYNCSET_MAX];
    size_t n;
} fio_syncset;
int fio_syncset_add(fio_syncset *s, int fd, const char *path, char *failed, size_t cap);
int fio_syncset_flush(fio_syncset *s, char *failed, size_t cap);
void fio_syncset_drop(fio_syncset *s);

/*
 * Fault injection (tests): an evs_io that passes through to fio_real until a trigger fires.
 * A trigger counts calls of one kind; when the count reaches `after`, that call fails (or for
 * FIO_SHORT, writes half and returns the short count, then fails the retry with `err`).
 */
enum fio_op { FIO_WRITE = 0, FIO_SYNC = 1, FIO_ALLOC = 2, FIO_OPEN = 3, FIO_NOPS };
/* Background threads (segment preparer, checkpointer) call this once; their calls pass
 * through uncounted unless fio_fault_count_background(true), so that a trigger counts the
 * writer's calls deterministically. */
void fio_thread_is_background(void);
void fio_fault_count_background(bool yes);
void fio_fault_reset(void);
void fio_fault_arm(enum fio_op op, long after, int err, int short_write);
long fio_fault_calls(enum fio_op op);
extern const struct evs_io fio_faulty;

#endif
