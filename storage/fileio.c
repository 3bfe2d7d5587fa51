/*
 * fileio.c — the real file-I/O table, the helpers built on it, and the fault-injecting table
 * tests use. Nothing here knows about records or segments.
 */
#include "fileio.h"
#include "evstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int r_open(const char *path, int flags, int mode)
{
    int fd = open(path, flags | O_CLOEXEC, mode);
    return fd < 0 ? -errno : fd;
}
static ssize_t r_pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    ssize_t w = pwritev(fd, iov, n, off);
    return w < 0 ? -errno : w;
}
static int r_fdatasync(int fd) { return fdatasync(fd) ? -errno : 0; }
static int r_fsync(int fd) { return fsync(fd) ? -errno : 0; }
static int r_fallocate(int fd, int mode, off_t off, off_t len)
{
    if (fallocate(fd, mode, off, len) == 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != ENOSYS)
        return -errno;
    /* A file system without fallocate (ext2, ext3 without extents, older ZFS and NFS): the
     * blocks are had by writing them, as glibc's posix_fallocate does there (a byte in each
     * block that is a hole). A sparse file instead would meet a full disk in the writer's
     * pwritev, failing the store, and leave the space reserve (preparer.c P2) reserving
     * nothing. Other modes (FALLOC_FL_KEEP_SIZE) cannot be had so: advisory, skipped. */
    if (mode != 0)
        return 0;
    int rc = posix_fallocate(fd, off, len);
    return rc == EOPNOTSUPP || rc == ENOSYS ? 0 : -rc;
}
static int r_ftruncate(int fd, off_t len) { return ftruncate(fd, len) ? -errno : 0; }
static int r_rename(const char *a, const char *b) { return rename(a, b) ? -errno : 0; }

const struct evs_io fio_real = {
    r_open, r_pwritev, r_fdatasync, r_fsync, r_fallocate, r_ftruncate, r_rename,
};

int fio_pwritev_all(const struct evs_io *io, int fd, struct iovec *iov, int n, off_t off)
{
    while (n > 0) {
        int chunk = n > IOV_MAX ? IOV_MAX : n;
        ssize_t w = io->pwritev(fd, iov, chunk, off);
        if (w < 0) {
            if (w == -EINTR)
                continue;
            return (int)w;
        }
        if (w == 0)
            return -EIO;
        off += w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0 && w > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

int fio_fsync_dir(const struct evs_io *io, const char *dir)
{
    int fd = io->open(dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return fd;
    int rc = io->fsync(fd);
    close(fd);
    return rc;
}

int fio_dir_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)))
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

int fio_shrink_paced(const struct evs_io *io, int fd, uint64_t to,
                     bool (*pace)(void *arg, uint64_t step_ns), void *arg)
{
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return -errno;
    uint64_t size = (uint64_t)sb.st_size;
    while (pace && size > to + FIO_SHRINK_STEP) {
        size -= FIO_SHRINK_STEP;
        uint64_t t0 = evs_mono_ns();
        int rc = io->ftruncate(fd, (off_t)size);
        if (rc)
            return rc;
        if (!pace(arg, evs_mono_ns() - t0))
            return 1;
    }
    if (size <= to)
        return 0;
    uint64_t t0 = evs_mono_ns();
    int rc = io->ftruncate(fd, (off_t)to);
    if (!rc && pace)
        (void)pace(arg, evs_mono_ns() - t0); /* the last step is paced too: the next job waits */
    return rc;
}

int fio_syncset_flush(fio_syncset *s, char *failed, size_t cap)
{
    int rc = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (!rc && fsync(s->fd[i])) {
            rc = -errno;
            snprintf(failed, cap, "%s", s->path[i]);
        }
        close(s->fd[i]);
        free(s->path[i]);
    }
    s->n = 0;
    return rc;
}

int fio_syncset_add(fio_syncset *s, int fd, const char *path, char *failed, size_t cap)
{
    char *copy = strdup(path);
    if (!copy) { /* no room to defer it: sync it now */
        int rc = fsync(fd) ? -errno : 0;
        if (rc)
            snprintf(failed, cap, "%s", path);
        close(fd);
        return rc;
    }
    s->fd[s->n] = fd;
    s->path[s->n++] = copy;
    return s->n == FIO_SYNCSET_MAX ? fio_syncset_flush(s, failed, cap) : 0;
}

void fio_syncset_drop(fio_syncset *s)
{
    for (size_t i = 0; i < s->n; i++) {
        close(s->fd[i]);
        free(s->path[i]);
    }
    s->n = 0;
}

int fio_write_file_atomic(const struct evs_io *io, const char *path, const void *data,
                          size_t len)
{
    char tmp[PATH_MAX], dir[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    int fd = io->open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return fd;
    struct iovec iov = {(void *)data, len};
    int rc = fio_pwritev_all(io, fd, &iov, 1, 0);
    if (!rc)
        rc = io->fsync(fd);
    close(fd);
    if (!rc)
        rc = io->rename(tmp, path);
    if (!rc)
        rc = fio_fsync_dir(io, dir);
    if (rc)
        unlink(tmp);
    return rc;
}

/* ---- fault injection --------------------------------------------------------------------- */

static _Thread_local bool background;
static atomic_bool count_background;

void fio_thread_is_background(void) { background = true; }
void fio_fault_count_background(bool yes) { atomic_store(&count_background, yes); }

static struct {
    atomic_long calls[FIO_NOPS];
    long after[FIO_NOPS]; /* fail the call whose 1-based number equals this; 0: never */
    int err[FIO_NOPS];
    int short_write;
} F;

void fio_fault_reset(void)
{
    for (int i = 0; i < FIO_NOPS; i++) {
        atomic_store(&F.calls[i], 0);
        F.after[i] = 0;
        F.err[i] = 0;
    }
    F.short_write = 0;
    atomic_store(&count_background, false);
}

void fio_fault_arm(enum fio_op op, long after, int err, int short_write)
{
    atomic_store(&F.calls[op], 0);
    F.after[op] = after;
    F.err[op] = err;
    if (op == FIO_WRITE)
        F.short_write = short_write;
}

long fio_fault_calls(enum fio_op op) { return atomic_load(&F.calls[op]); }

/* 0: pass through; else the -errno to return. Once fired, a trigger keeps firing. */
static int fault_hit(enum fio_op op)
{
    if (background && !atomic_load(&count_background))
        return 0;
    long n = atomic_fetch_add(&F.calls[op], 1) + 1;
    if (F.after[op] > 0 && n >= F.after[op])
        return -F.err[op];
    return 0;
}

static int f_open(const char *path, int flags, int mode)
{
    if ((flags & O_CREAT)) {
        int e = fault_hit(FIO_OPEN);
        if (e)
            return e;
    }
    return r_open(path, flags, mode);
}
static ssize_t f_pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    if (background && !atomic_load(&count_background))
        return r_pwritev(fd, iov, n, off);
    long calls = atomic_load(&F.calls[FIO_WRITE]) + 1;
    int e = fault_hit(FIO_WRITE);
    if (e) {
        if (F.short_write && calls == F.after[FIO_WRITE] && iov[0].iov_len > 1) {
            struct iovec half = {iov[0].iov_base, iov[0].iov_len / 2};
            return r_pwritev(fd, &half, 1, off);
        }
        return e;
    }
    return r_pwritev(fd, iov, n, off);
}
static int f_fdatasync(int fd)
{
    int e = fault_hit(FIO_SYNC);
    return e ? e : r_fdatasync(fd);
}
static int f_fsync(int fd)
{
    int e = fault_hit(FIO_SYNC);
    return e ? e : r_fsync(fd);
}
static int f_fallocate(int fd, int mode, off_t off, off_t len)
{
    int e = fault_hit(FIO_ALLOC);
    return e ? e : r_fallocate(fd, mode, off, len);
}

const struct evs_io fio_faulty = {
    f_open, f_pwritev, f_fdatasync, f_fsync, f_fallocate, r_ftruncate, r_rename,
};
