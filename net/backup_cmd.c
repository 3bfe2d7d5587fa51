/*
 * backup_cmd.c — the RESP side of online backups (docs/resp.md, docs/backup.md):
 *
 *   BACKUP BEGIN                          take a snapshot; reply: its description (below)
 *   BACKUP READ <snap> <file> <off> <n>   up to n bytes (at most 8 MiB) of a file, as a bulk
 *                                         string; empty at its end
 *   BACKUP END <snap>                     release it (also released when the connection closes)
 *
 * BEGIN's reply, an array of name/value pairs:
 *   snapshot <n>, store <id>, cut <pos>, log-start <pos>,
 *   epochs   [[epoch, uuid hex, start] ...],
 *   streams  [[name, "<ms>-<seq>", length, entries-added] ...],
 *   files    [[name, size, alloc, segment 0|1, sealed 0|1, seal crc] ...]
 *
 * Invariants:
 *  K1. A snapshot belongs to the connection that began it: only it can read it, and it is
 *      closed when the connection goes, however it goes (a killed backup client leaves no
 *      pinned segment behind).
 *  K2. The snapshot is taken off the event loop (the index copy can take a while); a READ is
 *      bounded (8 MiB) and goes out by sendfile in pieces of OUT_FILE_PIECE, one per write
 *      turn of the loop, so a backup never holds the loop for more than one piece.
 *  K3. At most BACKUP_MAX snapshots are held by clients at once (one its client has ended
 *      or dropped is no longer counted while its own thread closes it, K5).
 *  K4. The store is closed only after every BEGIN thread has left evs_snapshot_open
 *      (backup_shutdown, from commands_shutdown).
 *  K5. A snapshot is closed off the loop, on a thread of its own (snap_close).
 *  K6. A file the snapshot reads once (read_once: the index copy, snapshot.c P4) is copied
 *      into the reply, not sent by sendfile, and the pages read are dropped; it is read
 *      forward only: a READ of it from below the end of one already answered is refused,
 *      never answered with what was dropped. A backup reads each file once, in order.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"

#define BACKUP_MAX 4
#define BACKUP_READ_MAX (8u << 20)

typedef struct snap_slot {
    struct snap_slot *next;
    long long id;
    evs_snapshot *s;
    uint64_t read_to;      /* the end of what READ answered of the read_once file (K6)   */
} snap_slot;

typedef struct conn_snaps {
    snap_slot *head;
    long long next_id;
} conn_snaps;

static _Atomic int open_snaps; /* K3 */
static _Atomic int begin_running; /* BEGIN threads inside evs_snapshot_open */

int backup_snapshots_open(void) { return open_snaps; }

/* Run fn(arg) on a detached thread of its own: 0, or -1 if none could be started. */
static int spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    pthread_attr_t at;
    if (pthread_attr_init(&at))
        return -1;
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &at, fn, arg);
    pthread_attr_destroy(&at);
    return rc ? -1 : 0;
}

static void *close_thread(void *arg)
{
    evs_snapshot_close(arg);
    return NULL;
}

/* K5: closing frees the snapshot's index copy, an unlinked file the size of the index: 5 ms
 * on the loop for a 1 GiB store (perf trace), a stall for every client. A snapshot needs
 * nothing of the store once taken (its segments are references), so it may outlive it. */
static void snap_close(evs_snapshot *s)
{
    open_snaps--; /* K3: its client is done with it (INFO's backup_snapshots says so at once) */
    if (spawn(close_thread, s))
        close_thread(s);
}

static void conn_snaps_free(void *arg)
{
    conn_snaps *cs = arg;
    while (cs->head) {
        snap_slot *sl = cs->head;
        cs->head = sl->next;
        snap_close(sl->s);
        free(sl);
    }
    free(cs);
}

static conn_snaps *snaps_of(conn *c, bool create)
{
    void **slot = conn_cmd_state(c, CONN_SLOT_BACKUP, conn_snaps_free);
    if (!*slot && create)
        *slot = calloc(1, sizeof(conn_snaps));
    return *slot;
}

static snap_slot *find(conn *c, const resp_arg *a, cmd_ctx *x)
{
    long long id;
    conn_snaps *cs = snaps_of(c, false);
    if (!arg_ll(a, &id)) {
        reply_error_done(x, ERR_INT);
        return NULL;
    }
    for (snap_slot *sl = cs ? cs->head : NULL; sl; sl = sl->next)
        if (sl->id == id)
            return sl;
    reply_error_done(x, "ERR no such backup snapshot on this connection");
    return NULL;
}

/* ---- BEGIN: on a thread ------------------------------------------------------------------- */

typedef struct begin_job {
    evs_store *st;
    evs_snapshot *s;
    int rc;
    evs_error err;
    pending_t *p;
} begin_job;

static void *begin_thread(void *arg)
{
    begin_job *j = arg;
    j->rc = evs_snapshot_open(j->st, &j->s, &j->err);
    begin_running--; /* the store is not touched after this: backup_shutdown may close it */
    server_complete(j->p);
    return NULL;
}

static void describe(resp_out *o, long long id, const evs_snap_info *in)
{
    resp_out_array(o, 14);
    resp_out_cstr(o, "snapshot");
    resp_out_int(o, id);
    resp_out_cstr(o, "store");
    resp_out_cstr(o, in->store_id);
    resp_out_cstr(o, "cut");
    resp_out_int(o, (long long)in->cut);
    resp_out_cstr(o, "log-start");
    resp_out_int(o, (long long)in->log_start);
    resp_out_cstr(o, "epochs");
    resp_out_array(o, in->nepochs);
    for (size_t i = 0; i < in->nepochs; i++) {
        resp_out_array(o, 3);
        resp_out_int(o, in->epochs[i].epoch);
        char u[33];
        evs_uuid_format(in->epochs[i].uuid, u);
        resp_out_bulk(o, u, 32);
        resp_out_int(o, (long long)in->epochs[i].start);
    }
    resp_out_cstr(o, "streams");
    resp_out_array(o, in->nstreams);
    for (size_t i = 0; i < in->nstreams; i++) {
        const evs_snap_stream *s = &in->streams[i];
        resp_out_array(o, 4);
        resp_out_bulk(o, s->name.ptr, s->name.len);
        out_id(o, s->last_id);
        resp_out_int(o, (long long)s->length);
        resp_out_int(o, (long long)s->entries_added);
    }
    resp_out_cstr(o, "files");
    resp_out_array(o, in->nfiles);
    for (size_t i = 0; i < in->nfiles; i++) {
        const evs_snap_file *f = &in->files[i];
        resp_out_array(o, 6);
        resp_out_cstr(o, f->name);
        resp_out_int(o, (long long)f->size);
        resp_out_int(o, (long long)f->alloc);
        resp_out_int(o, f->segment);
        resp_out_int(o, f->sealed);
        resp_out_int(o, f->seal_crc);
    }
}

static bool begin_fill(pending_t *p, reply *r, void *result)
{
    begin_job *j = result;
    if (j->rc) {
        resp_out_error(&r->out, "ERR backup snapshot failed: %s", j->err.msg);
        open_snaps--;
    } else if (pending_orphaned(p)) {
        snap_close(j->s); /* K1: nobody to read it */
    } else {
        conn_snaps *cs = snaps_of(pending_conn(p), true);
        snap_slot *sl = cs ? calloc(1, sizeof *sl) : NULL;
        if (!sl) {
            snap_close(j->s);
            resp_out_error(&r->out, "ERR out of memory");
        } else {
            sl->id = ++cs->next_id;
            sl->s = j->s;
            sl->next = cs->head;
            cs->head = sl;
            describe(&r->out, sl->id, evs_snapshot_info(j->s));
        }
    }
    free(j);
    return true;
}

static void backup_begin(cmd_ctx *x)
{
    if (x->argc != 2) {
        reply_error_done(x, "ERR wrong number of arguments for 'backup|begin' command");
        return;
    }
    if (x->capture) {
        reply_error_done(x, "ERR BACKUP is not allowed inside MULTI");
        return;
    }
    if (++open_snaps > BACKUP_MAX) {
        open_snaps--;
        resp_out_error(&x->r->out, "ERR %d backup snapshots are open already; try again later",
                       BACKUP_MAX);
        reply_done(x);
        return;
    }
    begin_job *j = calloc(1, sizeof *j);
    if (j) {
        j->st = server_store(x->srv);
        j->p = server_hold(x, begin_fill, j, false);
    }
    begin_running++;
    if (!j || !j->p || spawn(begin_thread, j)) {
        begin_running--;
        if (j && j->p) { /* the hold must complete: answer through the loop */
            j->rc = -1;
            snprintf(j->err.msg, sizeof j->err.msg, "cannot start a thread");
            server_complete(j->p);
            return;
        }
        free(j);
        open_snaps--;
        reply_error_done(x, "ERR out of memory");
        return;
    }
}

/* ---- READ and END -------------------------------------------------------------------------- */

static void backup_read(cmd_ctx *x)
{
    if (x->argc != 6) {
        reply_error_done(x, "ERR wrong number of arguments for 'backup|read' command");
        return;
    }
    snap_slot *sl = find(x->c, &x->argv[2], x);
    if (!sl)
        return;
    long long file, off, n;
    if (!arg_ll(&x->argv[3], &file) || !arg_ll(&x->argv[4], &off) || !arg_ll(&x->argv[5], &n) ||
        file < 0 || off < 0 || n < 0) {
        reply_error_done(x, ERR_INT);
        return;
    }
    const evs_snap_info *in = evs_snapshot_info(sl->s);
    if ((size_t)file >= in->nfiles) {
        reply_error_done(x, "ERR the snapshot has no such file");
        return;
    }
    const evs_snap_file *f = &in->files[file];
    if (f->read_once && (uint64_t)off < sl->read_to) { /* K6 */
        reply_error_done(x, "ERR bytes of this snapshot file before the end of a READ already "
                            "sent are dropped: read it forward, once");
        return;
    }
    uint64_t want = (uint64_t)n > BACKUP_READ_MAX ? BACKUP_READ_MAX : (uint64_t)n;
    if ((uint64_t)off >= f->size)
        want = 0;
    else if (want > f->size - (uint64_t)off)
        want = f->size - (uint64_t)off;
    resp_out *o = &x->r->out;
    char hdr[32];
    int hl = snprintf(hdr, sizeof hdr, "$%" PRIu64 "\r\n", want);
    /* segments go out by sendfile, from the file the snapshot holds open; the index copy is
     * copied, and its pages read dropped (K6) */
    int fd;
    void *hold;
    evs_error err = {0};
    if (want && !f->read_once && evs_snapshot_file_fd(sl->s, (size_t)file, &fd, &hold, &err) == 0) {
        if (reply_attach_file(x->r, fd, (uint64_t)off, want, evs_snapshot_release, hold) == 0) {
            resp_out_raw(o, hdr, (size_t)hl);
            reply_done(x);
            return;
        }
        evs_snapshot_release(hold);
    }
    uint8_t *dst = resp_out_reserve(o, (size_t)hl + want + 2); /* one allocation */
    if (!dst) {
        o->len = 0;
        o->oom = false;
        reply_error_done(x, "ERR out of memory");
        return;
    }
    memcpy(dst, hdr, (size_t)hl);
    dst += hl;
    long got = want ? evs_snapshot_read_once(sl->s, (size_t)file, (uint64_t)off, dst, want, &err)
                    : 0;
    if (got != (long)want) {
        resp_out_error(o, "ERR backup read failed: %s", got < 0 ? err.msg : "short read");
        reply_done(x);
        return;
    }
    if (f->read_once && want)
        sl->read_to = (uint64_t)off + want; /* K6 */
    memcpy(dst + want, "\r\n", 2);
    o->len += (size_t)hl + want + 2;
    reply_done(x);
}

static void backup_end(cmd_ctx *x)
{
    if (x->argc != 3) {
        reply_error_done(x, "ERR wrong number of arguments for 'backup|end' command");
        return;
    }
    snap_slot *sl = find(x->c, &x->argv[2], x);
    if (!sl)
        return;
    conn_snaps *cs = snaps_of(x->c, false);
    for (snap_slot **pp = &cs->head; *pp; pp = &(*pp)->next)
        if (*pp == sl) {
            *pp = sl->next;
            break;
        }
    snap_close(sl->s);
    free(sl);
    resp_out_simple(&x->r->out, "OK");
    reply_done(x);
}

void backup_shutdown(void)
{
    while (begin_running) /* a snapshot being taken reads the store: let it finish first */
        usleep(1000);
}

void cmd_backup_snapshot(cmd_ctx *x)
{
    if (arg_is(x, 1, "BEGIN"))
        backup_begin(x);
    else if (arg_is(x, 1, "READ"))
        backup_read(x);
    else if (arg_is(x, 1, "END"))
        backup_end(x);
    else
        reply_error_done(x, "ERR unknown subcommand. Try BACKUP BEGIN, BACKUP READ, BACKUP END.");
}
