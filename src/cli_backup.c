/*
 * cli_backup.c — `evstore backup`, `evstore restore` and `evstore verify --backup`
 * (docs/backup.md). The online backup reads a live server's snapshot over RESP (BACKUP
 * BEGIN/READ/END, docs/resp.md) with a few reads in flight; the offline one opens the folder
 * itself (refused while a server holds it).
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "evstore_backup.h"
#include "rclient.h"

/* A server silent this long after BEGIN (every READ is answered at once) is given up on: a
 * dead link must not leave the client, and the snapshot it holds on the server, waiting
 * forever. BEGIN itself (the index copy) may take longer and is not timed. */
static int idle_timeout_s = 60;

/* At full speed a file is read in READ_CHUNK pieces, READ_WINDOW of them in flight; paced
 * (--rate), in evs_backup_piece pieces, one in flight (storage/backup.c, "--rate"). */
#define READ_CHUNK (4u << 20)
#define READ_WINDOW 4

/* ---- progress on a terminal ------------------------------------------------------------------ */

typedef struct progress {
    bool on;
    uint64_t start_ns, last_ns;
    const char *last_what;
} progress;

static void human(char *out, size_t cap, double b)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(out, cap, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static void show(void *arg, const evs_progress *p)
{
    progress *g = arg;
    uint64_t now = evs_mono_ns();
    if (g->last_what != p->what) {
        g->last_what = p->what;
        g->start_ns = now;
    }
    bool done = p->bytes_done >= p->bytes_total && p->files_done >= p->files_total;
    if (!g->on || (now - g->last_ns < 200000000ull && !done))
        return;
    g->last_ns = now;
    double secs = (double)(now - g->start_ns) / 1e9;
    double rate = secs > 0 ? (double)p->bytes_done / secs : 0;
    char a[32], b[32], r[32];
    human(a, sizeof a, (double)p->bytes_done);
    human(b, sizeof b, (double)p->bytes_total);
    human(r, sizeof r, rate);
    double left = rate > 0 ? (double)(p->bytes_total - p->bytes_done) / rate : 0;
    fprintf(stderr, "\r%s: %s / %s, %zu/%zu files, %s/s, %.0f s left   ", p->what, a, b,
            p->files_done, p->files_total, r, left);
    if (done)
        fputc('\n', stderr);
}

static void progress_init(progress *g, bool quiet)
{
    memset(g, 0, sizeof *g);
    g->on = !quiet && isatty(2);
}

static void progress_end(progress *g)
{
    if (g->on && g->last_ns)
        fputc('\n', stderr);
}

__attribute__((format(printf, 3, 4))) static int set_err(evs_error *e, int code,
                                                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->code = code;
    return code;
}

/* ---- a live server's snapshot over RESP ------------------------------------------------------ */

typedef struct remote {
    rclient c;
    long long snap;
    evs_snap_info info;
    evs_snap_file *files;
    evs_snap_stream *streams;
    evs_epoch *epochs;
    uint8_t **names;
    uint64_t chunk; /* bytes a READ asks for */
    int window;     /* READs in flight */
} remote;

static const resp_value *field(const resp_value *v, const char *name)
{
    for (size_t i = 0; v->type == RESP_T_ARRAY && i + 1 < v->n; i += 2)
        if (v->elems[i].len == strlen(name) && !memcmp(v->elems[i].str, name, v->elems[i].len))
            return &v->elems[i + 1];
    return NULL;
}

static bool is_int(const resp_value *v) { return v && v->type == RESP_T_INT; }
static bool is_arr(const resp_value *v, size_t n)
{
    return v && v->type == RESP_T_ARRAY && (n == 0 || v->n == n);
}
static bool is_str(const resp_value *v) { return v && v->type == RESP_T_BULK; }


/* Turn BACKUP BEGIN's reply into an evs_snap_info (owned by r). */
static int remote_parse(remote *r, const resp_value *v, char *err, size_t cap)
{
    const resp_value *snap = field(v, "snapshot"), *store = field(v, "store"),
                     *cut = field(v, "cut"), *ls = field(v, "log-start"),
                     *ep = field(v, "epochs"), *sts = field(v, "streams"),
                     *fs = field(v, "files");
    if (!is_int(snap) || !is_str(store) || store->len != 32 || !is_int(cut) || !is_int(ls) ||
        !is_arr(ep, 0) || !is_arr(sts, 0) || !is_arr(fs, 0)) {
        snprintf(err, cap, "the server's BACKUP BEGIN reply is not a snapshot description");
        return -1;
    }
    r->snap = snap->integer;
    memcpy(r->info.store_id, store->str, 32);
    r->info.cut = (uint64_t)cut->integer;
    r->info.log_start = (uint64_t)ls->integer;
    r->epochs = calloc(ep->n + 1, sizeof *r->epochs);
    r->streams = calloc(sts->n + 1, sizeof *r->streams);
    r->names = calloc(sts->n + 1, sizeof *r->names);
    r->files = calloc(fs->n + 1, sizeof *r->files);
    if (!r->epochs || !r->streams || !r->names || !r->files) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < ep->n; i++) {
        const resp_value *e = &ep->elems[i];
        if (!is_arr(e, 3) || !is_int(&e->elems[0]) || !is_str(&e->elems[1]) ||
            e->elems[1].len != 32 || !is_int(&e->elems[2]))
            goto bad;
        r->epochs[i].epoch = (uint32_t)e->elems[0].integer;
        if (evs_uuid_parse((const char *)e->elems[1].str, 32, r->epochs[i].uuid))
            goto bad;
        r->epochs[i].start = (uint64_t)e->elems[2].integer;
    }
    for (size_t i = 0; i < sts->n; i++) {
        const resp_value *s = &sts->elems[i];
        if (!is_arr(s, 4) || !is_str(&s->elems[0]) || !is_str(&s->elems[1]) ||
            !is_int(&s->elems[2]) || !is_int(&s->elems[3]))
            goto bad;
        r->names[i] = malloc(s->elems[0].len + 1);
        if (!r->names[i])
            goto bad;
        memcpy(r->names[i], s->elems[0].str, s->elems[0].len);
        evs_snap_stream *o = &r->streams[i];
        o->name = (evs_slice){r->names[i], s->elems[0].len};
        if (evs_id_parse(s->elems[1].str, s->elems[1].len, 0, &o->last_id))
            goto bad;
        o->length = (uint64_t)s->elems[2].integer;
        o->entries_added = (uint64_t)s->elems[3].integer;
    }
    for (size_t i = 0; i < fs->n; i++) {
        const resp_value *f = &fs->elems[i];
        if (!is_arr(f, 6) || !is_str(&f->elems[0]) || f->elems[0].len >= 48)
            goto bad;
        for (int k = 1; k < 6; k++)
            if (!is_int(&f->elems[k]))
                goto bad;
        evs_snap_file *o = &r->files[i];
        memcpy(o->name, f->elems[0].str, f->elems[0].len);
        o->size = (uint64_t)f->elems[1].integer;
        o->alloc = (uint64_t)f->elems[2].integer;
        o->segment = f->elems[3].integer != 0;
        o->sealed = f->elems[4].integer != 0;
        o->seal_crc = (uint32_t)f->elems[5].integer;
    }
    r->info.epochs = r->epochs;
    r->info.nepochs = ep->n;
    r->info.streams = r->streams;
    r->info.nstreams = sts->n;
    r->info.files = r->files;
    r->info.nfiles = fs->n;
    return 0;
bad:
    snprintf(err, cap, "the server's BACKUP BEGIN reply has a malformed entry");
    return -1;
}

static void remote_free(remote *r)
{
    for (size_t i = 0; r->names && i < r->info.nstreams; i++)
        free(r->names[i]);
    free(r->names);
    free(r->epochs);
    free(r->streams);
    free(r->files);
}

static int remote_begin(remote *r, const char *server, const char *password,
                        const volatile int *cancel, char *err, size_t cap)
{
    memset(r, 0, sizeof *r);
    if (rclient_connect(&r->c, server, password, cancel, err, cap))
        return -1;
    const char *argv[] = {"BACKUP", "BEGIN"};
    size_t lens[] = {6, 5};
    resp_value *v;
    if (rclient_send(&r->c, 2, argv, lens) || rclient_read(&r->c, &v, err, cap))
        return -1;
    int rc;
    if (v->type == RESP_T_ERROR) {
        snprintf(err, cap, "the server refused: %.*s", (int)v->len, (const char *)v->str);
        rc = -1;
    } else {
        rc = remote_parse(r, v, err, cap);
    }
    resp_value_free(v);
    return rc;
}

static int send_read(remote *r, size_t file, uint64_t off)
{
    char a[3][24];
    snprintf(a[0], sizeof a[0], "%lld", r->snap);
    snprintf(a[1], sizeof a[1], "%zu", file);
    snprintf(a[2], sizeof a[2], "%" PRIu64, off);
    char n[24];
    snprintf(n, sizeof n, "%" PRIu64, r->chunk);
    const char *argv[] = {"BACKUP", "READ", a[0], a[1], a[2], n};
    size_t lens[6];
    for (int i = 0; i < 6; i++)
        lens[i] = strlen(argv[i]);
    return rclient_send(&r->c, 6, argv, lens);
}

/* Keep up to r->window reads of file i (size bytes) in flight: *sent is the offset of the
 * next one to send. */
static int fill_window(remote *r, size_t i, uint64_t size, uint64_t *sent, int *inflight,
                       evs_error *err)
{
    for (; *inflight < r->window && *sent < size; (*inflight)++, *sent += r->chunk)
        if (send_read(r, i, *sent))
            return set_err(err, -EIO, "lost the server while sending a read: %s",
                           strerror(errno));
    return 0;
}

/* Copy file i with up to r->window reads in flight. */
static int remote_copy(void *arg, size_t i, evs_sink_fn sink, void *sink_arg, evs_error *err)
{
    remote *r = arg;
    uint64_t size = r->files[i].size, sent = 0, got = 0;
    int inflight = 0;
    char e[256];
    while (got < size) {
        int rc = fill_window(r, i, size, &sent, &inflight, err);
        if (rc)
            return rc;
        resp_value *v;
        if (rclient_read(&r->c, &v, e, sizeof e))
            return set_err(err, -EIO, "reading %s from the server: %s", r->files[i].name, e);
        inflight--;
        uint64_t want = size - got < r->chunk ? size - got : r->chunk;
        if (v->type == RESP_T_ERROR)
            rc = set_err(err, -EIO, "reading %s: the server says %.*s", r->files[i].name,
                             (int)v->len, (const char *)v->str);
        else if (v->type != RESP_T_BULK || v->len != want)
            rc = set_err(err, -EIO, "reading %s at %" PRIu64 ": the server sent %zu bytes, "
                             "expected %" PRIu64, r->files[i].name, got, v->len, want);
        else
            rc = sink(sink_arg, v->str, v->len, err);
        resp_value_free(v);
        if (rc)
            return rc;
        got += want;
    }
    return 0;
}

/* ---- zero-copy: replies spliced from the socket into the backup's file ---------------------
 * A BACKUP READ reply is "$<n>\r\n", n bytes, "\r\n". The header and the trailing CRLF are
 * read from the socket a byte at a time (a dozen bytes per 4 MiB), so nothing past them is
 * consumed; the n bytes go socket -> pipe -> file inside the kernel (splice), sparing the
 * copies through user space that made the file side of a backup CPU-bound. */

#define SPLICE_PIPE_BYTES (1u << 20)

/* A receive from the server that got nothing (k <= 0): why, as the backup's error. */
static int lost(ssize_t k, const char *where, evs_error *err)
{
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return set_err(err, -ETIMEDOUT, "the server sent nothing for %d s%s (--timeout)",
                       idle_timeout_s, where);
    return set_err(err, -EIO, "lost the server%s: %s", where,
                   k ? strerror(errno) : "it closed the connection");
}

/* Wait until the server has bytes for us (rclient_wait_readable: the stop flag and --timeout
 * are looked at while waiting). */
static int await(rclient *c, const char *where, evs_error *err)
{
    char e[160];
    if (!rclient_wait_readable(c, e, sizeof e))
        return 0;
    return set_err(err, rclient_stop_asked(c->cancel) ? EVS_ECLOSED : -ETIMEDOUT, "%s%s", e,
                   where);
}

/* One reply line, straight from the socket (rclient's buffer must be empty); *len excludes
 * the CRLF. */
static int line_direct(rclient *c, char *line, size_t cap, size_t *len, evs_error *err)
{
    size_t n = 0;
    for (;;) {
        char ch;
        int rc = await(c, "", err);
        if (rc)
            return rc;
        ssize_t k = recv(c->fd, &ch, 1, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return lost(k, "", err);
        if (n + 1 == cap)
            return set_err(err, -EIO, "the server sent a reply line over %zu bytes", cap - 1);
        line[n++] = ch;
        if (ch == '\n')
            break;
    }
    line[n] = 0;
    if (n < 2 || line[n - 2] != '\r')
        return set_err(err, -EIO, "the server sent a malformed reply line");
    line[n - 2] = 0;
    *len = n - 2;
    return 0;
}

/* Move exactly n bytes from the socket through the pipe into out at *off. */
static int splice_n(rclient *c, const int p[2], int out, uint64_t *off, uint64_t n,
                    evs_error *err)
{
    while (n) {
        size_t want = n < SPLICE_PIPE_BYTES ? (size_t)n : SPLICE_PIPE_BYTES;
        int rc = await(c, " mid-file", err);
        if (rc)
            return rc;
        ssize_t in = splice(c->fd, NULL, p[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_MORE);
        if (in < 0 && errno == EINTR)
            continue;
        if (in <= 0)
            return lost(in, " mid-file", err);
        for (ssize_t left = in; left;) {
            loff_t o = (loff_t)*off;
            ssize_t w = splice(p[0], NULL, out, &o, (size_t)left, SPLICE_F_MOVE);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return set_err(err, w ? -errno : -EIO, "cannot write the backup file: %s",
                               w ? strerror(errno) : "short write");
            *off += (uint64_t)w;
            left -= w;
        }
        n -= (uint64_t)in;
    }
    return 0;
}

static int remote_copy_fd(void *arg, size_t i, int out, evs_landed_fn landed, void *landed_arg,
                          evs_error *err)
{
    remote *r = arg;
    int p[2];
    if (r->c.off != r->c.len || pipe2(p, O_CLOEXEC))
        return -EOPNOTSUPP; /* bytes already buffered, or no pipe: the copying path */
    fcntl(p[1], F_SETPIPE_SZ, SPLICE_PIPE_BYTES); /* a smaller pipe only means more calls */
    uint64_t size = r->files[i].size, sent = 0, got = 0;
    int inflight = 0, rc = 0;
    while (!rc && got < size) {
        char line[512];
        size_t ll = 0;
        if ((rc = fill_window(r, i, size, &sent, &inflight, err)) ||
            (rc = line_direct(&r->c, line, sizeof line, &ll, err)))
            break;
        inflight--;
        uint64_t want = size - got < r->chunk ? size - got : r->chunk, n = 0;
        int t = resp_reply_line((const uint8_t *)line, ll, &n);
        if (t == RESP_T_ERROR) {
            rc = set_err(err, -EIO, "reading %s: the server says %s", r->files[i].name, line + 1);
        } else if (t != RESP_T_BULK || n != want) {
            rc = set_err(err, -EIO, "reading %s at %" PRIu64 ": the server sent \"%.40s\", "
                         "expected %" PRIu64 " bytes", r->files[i].name, got, line, want);
        } else {
            uint64_t at = got;
            char crlf[2];
            if (!(rc = splice_n(&r->c, p, out, &got, want, err))) {
                ssize_t k = recv(r->c.fd, crlf, 2, MSG_WAITALL);
                if (k <= 0)
                    rc = lost(k, " mid-file", err);
                else if (k != 2 || crlf[0] != '\r' || crlf[1] != '\n')
                    rc = set_err(err, -EIO, "reading %s: a reply did not end with CRLF",
                                 r->files[i].name);
                else
                    rc = landed(landed_arg, at, (size_t)want, err);
            }
        }
    }
    close(p[0]);
    close(p[1]);
    return rc;
}

static void remote_end(remote *r)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", r->snap);
    const char *argv[] = {"BACKUP", "END", id};
    size_t lens[] = {6, 3, strlen(id)};
    resp_value *v;
    char e[128];
    if (!rclient_send(&r->c, 3, argv, lens) && !rclient_read(&r->c, &v, e, sizeof e))
        resp_value_free(v);
    rclient_close(&r->c);
}

int cli_backup_remote(const char *server, const char *password, const evs_backup_options *o,
                      evs_backup_report *rep, evs_error *err)
{
    remote r;
    char e[512];
    if (remote_begin(&r, server, password, o->cancel, e, sizeof e)) {
        remote_free(&r);
        rclient_close(&r.c);
        return set_err(err, rclient_stop_asked(o->cancel) ? EVS_ECLOSED : -EIO, "%s: %s",
                       server, e);
    }
    r.chunk = evs_backup_piece(o->rate, READ_CHUNK);
    r.window = o->rate ? 1 : READ_WINDOW;
    r.c.idle_ms = idle_timeout_s * 1000; /* every wait on the server: rclient_wait_readable */
    struct timeval tv = {idle_timeout_s, 0}; /* and a read that began on a reply's first bytes */
    setsockopt(r.c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    evs_backup_source src = {&r.info, remote_copy, &r, server, remote_copy_fd};
    int rc = evs_backup_write(&src, o, rep, err);
    remote_end(&r);
    remote_free(&r);
    return rc;
}

/* ---- evstore backup -------------------------------------------------------------------------- */

/* SIGINT and SIGTERM stop a backup or a restore: it removes what it wrote and exits 3. */
static volatile int stop_flag;
static void on_signal(int sig)
{
    (void)sig;
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED); /* read by restore's threads too */
}

static void stop_on_signals(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_signal; /* no SA_RESTART: a wait on the server ends at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static const char *backup_help =
    "usage: evstore backup (--server HOST:PORT [--password SECRET] | --data DIR) --out DIR\n"
    "                      [--compress] [--incremental-from PREV_BACKUP_DIR] [--rate BYTES/S]\n"
    "                      [--quiet]\n"
    "\n"
    "Writes a consistent point-in-time backup of a store into a new (or empty) folder:\n"
    "every entry acknowledged before the backup began, each stream a prefix of the store's,\n"
    "consumer groups as they were at the cut. The MANIFEST is written last; a folder without\n"
    "one is an incomplete backup. Layout: docs/backup.md.\n"
    "\n"
    "  --server HOST:PORT        back up a running server over its RESP port (writes go on)\n"
    "  --password SECRET         the server's --requirepass (EVSTORE_PASSWORD)\n"
    "  --data DIR                back up a store folder no server holds (refused otherwise)\n"
    "  --out DIR                 the backup folder\n"
    "  --compress                zlib-compress every file (fastest level; --level N for 1-9)\n"
    "  --incremental-from DIR    share the sealed segments a previous backup holds\n"
    "  --rate N                  copy at most N store bytes a second (k, m, g suffixes), in\n"
    "                            pieces of 5 ms of that pace, so that a backup leaves the\n"
    "                            server's CPU and disk to its own writes\n"
    "  --timeout SECONDS         give up when the server sends nothing for this long once\n"
    "                            the snapshot is taken (default 60)\n"
    "  --quiet                   no progress display (none is shown unless stderr is a tty)\n"
    "\n"
    "SIGINT or SIGTERM stops it: what it wrote is removed, exit 3.\n"
    "\n"
    "Exit codes: 0 done, 2 unusable arguments, 3 failed or stopped (nothing left but a folder\n"
    "without MANIFEST is removed), 4 refused (out not empty, folder in use, previous backup of\n"
    "another store).\n";

int cmd_backup(int argc, char **argv)
{
    const char *server = NULL, *data = NULL, *out = NULL, *parent = NULL;
    const char *password = getenv("EVSTORE_PASSWORD");
    bool compress = false, quiet = false;
    int level = 0;
    uint64_t rate = 0;
    static const struct option opts[] = {
        {"server", required_argument, NULL, 's'}, {"password", required_argument, NULL, 'p'},
        {"data", required_argument, NULL, 'd'},   {"out", required_argument, NULL, 'o'},
        {"compress", no_argument, NULL, 'z'},     {"level", required_argument, NULL, 'l'},
        {"incremental-from", required_argument, NULL, 'i'},
        {"rate", required_argument, NULL, 'r'},   {"timeout", required_argument, NULL, 't'},
        {"quiet", no_argument, NULL, 'q'},        {"help", no_argument, NULL, 'h'},
        {0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': server = optarg; break;
        case 'p': password = optarg; break;
        case 'd': data = optarg; break;
        case 'o': out = optarg; break;
        case 'z': compress = true; break;
        case 'l': {
            long long v;
            if (!cli_number("backup", "--level", optarg, 1, 9, &v))
                return EXIT_USAGE;
            level = (int)v;
            break;
        }
        case 'i': parent = optarg; break;
        case 'r':
            if (!cli_size(optarg, &rate) || !rate) {
                fprintf(stderr, "evstore backup: --rate: not a positive size (50m, 200k): %s\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case 't': {
            long long t;
            if (!cli_number("backup", "--timeout (seconds)", optarg, 1, 86400, &t))
                return EXIT_USAGE;
            idle_timeout_s = (int)t;
            break;
        }
        case 'q': quiet = true; break;
        case 'h': fputs(backup_help, stdout); return EXIT_OK;
        default: fputs(backup_help, stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc || !out || (level && !compress) || !!server == !!data) {
        fprintf(stderr, "evstore backup: %s\n\n%s",
                optind != argc ? "unexpected argument"
                : !out         ? "--out is required"
                : level && !compress ? "--level is the level of --compress: give both"
                               : "give exactly one of --server and --data",
                backup_help);
        return EXIT_USAGE;
    }
    if (server && !cli_hostport("backup", "--server", server))
        return EXIT_USAGE;
    stop_on_signals();
    progress g;
    progress_init(&g, quiet);
    evs_backup_options o = {.out = out, .parent = parent, .compress = compress, .level = level,
                            .rate = rate, .progress = show, .progress_arg = &g,
                            .cancel = &stop_flag};
    evs_backup_report rep;
    evs_error err = {0};
    int rc;
    uint64_t t0 = evs_mono_ns();
    if (server) {
        rc = cli_backup_remote(server, password, &o, &rep, &err);
    } else {
        evs_options opt;
        evs_options_init(&opt);
        opt.log = cli_log;
        opt.replica = evs_store_follows(data); /* a follower's stays one: no epoch begun */
        opt.cancel = &stop_flag;               /* a stop obeyed during a long recovery too */
        evs_store *st;
        char probe[4096];
        snprintf(probe, sizeof probe, "%s/STORE", data);
        if (access(probe, F_OK)) { /* never create a store to back it up */
            fprintf(stderr, "evstore backup: %s is not an evstore data folder (no STORE file)\n",
                    data);
            return EXIT_FAILURE_;
        }
        rc = evs_open(data, &opt, &st, &err);
        if (rc == -EROFS || rc == -EACCES) {
            /* a folder this process may not write (a file system mounted read-only, as ext4
             * does after an error; a user who may only read it): backed up as it is on disk,
             * without the recovery an open for writing does (a torn tail stays out) */
            char note[4400];
            snprintf(note, sizeof note, "%s; backing up the store as it is on disk, read-only",
                     err.msg);
            cli_log(NULL, EVS_LOG_WARN, note);
            opt.read_only = true;
            rc = evs_open(data, &opt, &st, &err);
        }
        if (!rc) {
            rc = evs_backup_store(st, data, &o, &rep, &err);
            evs_close(st);
        }
    }
    progress_end(&g);
    if (rc) {
        fprintf(stderr, "evstore backup: %s\n", err.msg);
        return rc == EVS_ELOCKED || rc == EVS_EEXIST || rc == EVS_EINVAL ? EXIT_REFUSED
                                                                           : EXIT_FAILURE_;
    }
    double secs = (double)(evs_mono_ns() - t0) / 1e9;
    char a[32], b[32];
    human(a, sizeof a, (double)rep.bytes_copied);
    human(b, sizeof b, (double)rep.bytes_stored);
    printf("backup %s of %s at log position %" PRIu64 ": %zu streams, %zu files (%zu shared with "
           "earlier backups), %s copied, %s written, %.2f s\n",
           rep.id, server ? server : data, rep.cut, rep.streams, rep.files, rep.files_shared, a, b,
           secs);
    return EXIT_OK;
}

/* ---- evstore restore ------------------------------------------------------------------------- */

static const char *restore_help =
    "usage: evstore restore --from BACKUP_DIR --data NEW_DIR [--follower] [--quiet]\n"
    "\n"
    "Checks the whole backup first (manifest, every file's size and CRC, the chain of an\n"
    "incremental backup), then builds the store in NEW_DIR.restore-XXXXXX, opens it, checks\n"
    "every stream against the manifest, starts a new epoch and renames it to NEW_DIR. NEW_DIR\n"
    "must not exist or be empty, and not be a mount point (restore into a folder inside it).\n"
    "A failed or interrupted restore leaves no NEW_DIR.\n"
    "\n"
    "  --follower   seed a follower of the backed-up store's leader: no new epoch; the store\n"
    "               is marked a follower's (start it with --replica-of; started to lead, it\n"
    "               begins its epoch then) and continues from the backup's cut, nothing cut\n"
    "               or re-indexed\n"
    "\n"
    "Exit codes: 0 restored, 1 the backup is damaged (nothing written), 2 unusable arguments,\n"
    "3 failed, 4 refused (NEW_DIR not empty, or a mount point).\n";

int cmd_restore(int argc, char **argv)
{
    const char *from = NULL, *data = NULL;
    bool quiet = false, follower = false;
    static const struct option opts[] = {{"from", required_argument, NULL, 'f'},
                                         {"data", required_argument, NULL, 'd'},
                                         {"follower", no_argument, NULL, 'F'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'f': from = optarg; break;
        case 'd': data = optarg; break;
        case 'F': follower = true; break;
        case 'q': quiet = true; break;
        case 'h': fputs(restore_help, stdout); return EXIT_OK;
        default: fputs(restore_help, stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc || !from || !data) {
        fprintf(stderr, "evstore restore: --from and --data are required\n\n%s", restore_help);
        return EXIT_USAGE;
    }
    stop_on_signals();
    progress g;
    progress_init(&g, quiet);
    evs_restore_options o = {.progress = show, .progress_arg = &g, .log = cli_log,
                             .cancel = &stop_flag, .follower = follower};
    evs_restore_report rep;
    evs_error err = {0};
    uint64_t t0 = evs_mono_ns();
    int rc = evs_restore(from, data, &o, &rep, &err);
    progress_end(&g);
    if (rc) {
        fprintf(stderr, "evstore restore: %s\n", err.msg);
        return rc == EVS_ECORRUPT                      ? EXIT_PROBLEMS
               : rc == EVS_EEXIST || rc == EVS_EINVAL ? EXIT_REFUSED
                                                      : EXIT_FAILURE_;
    }
    char a[32];
    human(a, sizeof a, (double)rep.bytes);
    printf("restored %s into %s: %zu streams, %zu files, %s, %.2f s; %s %" PRIu32 "\n",
           from, data, rep.streams, rep.files, a, (double)(evs_mono_ns() - t0) / 1e9,
           follower ? "a follower's store, in its leader's epoch" : "the store starts epoch",
           rep.epoch.epoch);
    return EXIT_OK;
}

/* ---- evstore verify --backup ----------------------------------------------------------------- */

static void report(void *arg, const char *line)
{
    (void)arg;
    printf("problem: %s\n", line);
}

int cli_verify_backup(const char *dir, bool quiet)
{
    progress g;
    progress_init(&g, quiet);
    long n = evs_backup_verify(dir, report, NULL, show, &g);
    progress_end(&g);
    if (n < 0) {
        fprintf(stderr, "evstore verify: cannot check %s: %s\n", dir, evs_strerror((int)n));
        return EXIT_FAILURE_;
    }
    printf("%s: %ld problem%s\n", dir, n, n == 1 ? "" : "s");
    return n ? EXIT_PROBLEMS : EXIT_OK;
}
