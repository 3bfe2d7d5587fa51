/*
 * group_exec.c — consumer-group operations: the API that queues them, and their execution on
 * the writer thread.
 *
 * A request runs in two phases. Plan: read the group state and the stream, decide what is
 * delivered, claimed, acknowledged and dead-lettered; it may fail, and then nothing was
 * written. Emit: build the records, all with REC_F_TXN_CONT and the last one closed by
 * writer_txn_close, so the request is one atomic group in the log (W1): a dead-letter copy and
 * the acknowledgement that removes the entry from its group land together or not at all. Only
 * the writer changes group state (group.h G1), so nothing moves between plan and emit.
 *
 * Entries are read through the visible state: a request that reads a stream with records in
 * the batch being built asks the writer to flush first (NEED_FLUSH), before it plans.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "group.h"

#define CHUNK_IDS 8192 /* IDs per delivery record: bounds a record whatever COUNT says */

void evs_group_op_init(evs_group_op *op, evs_group_cmd cmd)
{
    memset(op, 0, sizeof *op);
    op->cmd = cmd;
    op->entries_read = EVS_ENTRIES_READ_NONE;
    op->set_idle_ms = op->set_time_ms = op->retrycount = -1;
}

/* ---- plans ------------------------------------------------------------------------------- */

typedef struct nums {
    uint64_t *v;
    size_t n, cap;
} nums;

static int nums_push(nums *a, uint64_t x) { return u64_push(&a->v, &a->n, &a->cap, x); }

static int nums_id(nums *a, evs_id id)
{
    return nums_push(a, id.ms) || nums_push(a, id.seq) ? -ENOMEM : 0;
}

typedef struct dead {
    evs_id id;
    uint64_t deliveries;
    rec_buf body; /* the dead-letter entry */
} dead;

typedef struct plan {
    stream *s;
    cgroup *g;
    bool new_cons;
    nums deliver;   /* READ ">": ids; per-chunk last/entries_read below                    */
    evs_id last;
    uint64_t er;
    nums redeliver; /* READ history                                                       */
    nums claim;     /* CLAIM/AUTOCLAIM quads                                              */
    nums ack;       /* ACK, and deleted entries dropped by CLAIM/AUTOCLAIM                */
    dead *dead;
    size_t ndead, deadcap;
    uint64_t count; /* result count                                                        */
    bool emit_claim;
    evs_id next;
} plan;

static void plan_free(plan *p)
{
    free(p->deliver.v);
    free(p->redeliver.v);
    free(p->claim.v);
    free(p->ack.v);
    for (size_t i = 0; i < p->ndead; i++)
        rec_buf_release(&p->dead[i].body);
    free(p->dead);
}

static int res_push(evs_id **a, size_t *n, size_t *cap, evs_id id)
{
    if (arr_room(a, *n, cap, sizeof **a, 16))
        return -ENOMEM;
    (*a)[(*n)++] = id;
    return 0;
}

static int result_id(gop *o, evs_id id) { return res_push(&o->rids, &o->nr, &o->capr, id); }
static int result_del(gop *o, evs_id id) { return res_push(&o->rdel, &o->nd, &o->capd, id); }

void group_results_free(wreq *r)
{
    for (size_t i = 0; r->gops && i < r->n; i++) {
        free(r->gops[i].rids);
        free(r->gops[i].rdel);
    }
    free(r->gops);
    free(r->gres);
}

static uint64_t idle_of(const pel_ent *p, uint64_t now_ms)
{
    return now_ms > p->time_ms ? now_ms - p->time_ms : 0;
}

/* Build the dead-letter entry for pending entry id of stream s: its fields, then the four
 * dlq-* fields. 0, or EVS_ENOTFOUND if the entry is gone. */
static int dead_body(evs_store *st, plan *pl, evs_id id, uint64_t deliveries, evs_error *err)
{
    evs_query q;
    evs_query_init(&q);
    q.start = q.end = id;
    q.limit = 1;
    evs_iter *it;
    evs_slice name = {pl->s->name, pl->s->name_len};
    int rc = evs_iter_open(st, name, &q, &it, err);
    if (rc)
        return rc;
    const evs_entry *e;
    if ((rc = evs_iter_next(it, &e, err)) != 1) {
        evs_iter_close(it);
        return rc < 0 ? rc : EVS_ENOTFOUND;
    }
    if (arr_room(&pl->dead, pl->ndead, &pl->deadcap, sizeof *pl->dead, 4)) {
        evs_iter_close(it);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    evs_field *f = malloc((e->nfields + 4) * sizeof *f);
    char idbuf[EVS_ID_STRLEN], nbuf[24];
    dead *d = &pl->dead[pl->ndead];
    memset(d, 0, sizeof *d);
    if (f) {
        memcpy(f, e->fields, e->nfields * sizeof *f);
        size_t n = e->nfields;
        f[n++] = (evs_field){{"dlq-source-key", 14}, name};
        f[n++] = (evs_field){{"dlq-source-id", 13}, {idbuf, evs_id_format(id, idbuf)}};
        f[n++] = (evs_field){{"dlq-group", 9}, {pl->g->name, pl->g->len}};
        f[n++] = (evs_field){{"dlq-deliveries", 14},
                             {nbuf, (size_t)snprintf(nbuf, sizeof nbuf, "%" PRIu64, deliveries)}};
        rc = rec_entry_encode(&d->body, f, n) ? -ENOMEM : 0;
        free(f);
    } else {
        rc = -ENOMEM;
    }
    evs_iter_close(it);
    if (rc) {
        rec_buf_release(&d->body);
        return evs_err_set(err, rc, "out of memory");
    }
    d->id = id;
    d->deliveries = deliveries;
    pl->ndead++;
    return 0;
}

/* Would one more delivery exceed the group's limit? */
static bool over_limit(const cgroup *g, uint64_t new_count)
{
    return g->max_deliveries && new_count > g->max_deliveries;
}

/* Does an entry of `size` reply bytes fit the op's byte budget (evs_group_op.max_bytes), after
 * the *used bytes of those taken so far? The first always does; one taken is counted. A read
 * stops before the first that does not, so a reply is never refused after its deliveries were
 * recorded. */
static bool budget_takes(const gop *o, uint64_t *used, uint64_t size)
{
    if (!o->op.max_bytes)
        return true;
    if (*used && *used + size > o->op.max_bytes)
        return false;
    *used += size;
    return true;
}

static int plan_read_new(evs_store *st, gop *o, plan *pl, evs_error *err)
{
    cgroup *g = pl->g;
    evs_query q;
    evs_query_init(&q);
    q.start = g->last;
    q.start_exclusive = true;
    q.limit = o->op.count;
    evs_iter *it;
    int rc = evs_iter_open(st, (evs_slice){pl->s->name, pl->s->name_len}, &q, &it, err);
    if (rc == EVS_ENOTFOUND)
        return 0; /* the writer has the stream, readers not yet (a visibility cap holds its
                   * creation: visible.c): nothing to deliver yet */
    if (rc)
        return rc;
    const evs_entry *e;
    pl->last = g->last;
    pl->er = g->entries_read;
    const stream_state *ss = &pl->s->w;
    evs_id first = ss->first_id; /* Redis's first_id: the first live entry */
    if (ss->length && evs_id_cmp(ss->max_deleted, EVS_ID_MIN)) {
        stream_state snap;
        pthread_rwlock_rdlock(&st->lock);
        snap = pl->s->v;
        pthread_rwlock_unlock(&st->lock);
        first = reader_first_live(st, pl->s, &snap);
    }
    uint64_t used = 0;
    while ((rc = evs_iter_next(it, &e, err)) == 1) {
        if (!budget_takes(o, &used, EVS_ENTRY_FRAMING(e->nfields) + evs_entry_bytes(e)))
            break;
        if (pl->er != REC_G_ENTRIES_READ_NONE && !group_range_has_tombstones(ss, first, e->id))
            pl->er++;
        else if (ss->entries_added)
            pl->er = group_estimate_read(ss, first, e->id);
        pl->last = e->id;
        if (nums_id(&pl->deliver, e->id) || result_id(o, e->id)) {
            rc = evs_err_set(err, -ENOMEM, "out of memory");
            break;
        }
    }
    evs_iter_close(it);
    return rc < 0 ? rc : 0;
}

static int plan_read_history(evs_store *st, gop *o, plan *pl, evs_error *err)
{
    cgroup *g = pl->g;
    uint32_t c = group_consumer(g, o->op.consumer.ptr, o->op.consumer.len);
    if (c == PEL_FREE)
        return 0;
    /* the walk ends at the consumer's last pending entry (npending of them, G3): a consumer
     * with few or none in a long PEL (one that caught up, asking again from 0 as clients do
     * at start) walked all of it, 1.3 ms an ask with a million pending */
    uint64_t served = 0, used = 0, size = 0, left = g->cons[c].npending;
    for (size_t i = pel_lower(g, o->op.id); i < g->npel && left; i++) {
        pel_ent *p = &g->pel[i];
        if (p->cons != c)
            continue;
        left--;
        if (evs_id_cmp(p->id, o->op.id) <= 0)
            continue;
        if (o->op.count && served >= o->op.count)
            break;
        int e = reader_entry_exists(st, pl->s, p->id, &size, err);
        if (e < 0)
            return e;
        int rc = 0;
        bool to_dlq = e && over_limit(g, p->count + 1); /* dead-lettered: not in the reply */
        if (!to_dlq && !budget_takes(o, &used, e ? size : EVS_ENTRY_FRAMING(0)))
            break; /* fewer than COUNT: the reader asks again from the last ID it got */
        if (!e) {
            rc = result_id(o, p->id); /* answered with nil fields, as Redis does */
            served++;
        } else if (to_dlq) {
            rc = dead_body(st, pl, p->id, p->count, err);
        } else {
            rc = nums_id(&pl->redeliver, p->id) || result_id(o, p->id) ? -ENOMEM : 0;
            served++;
        }
        if (rc)
            return rc == -ENOMEM ? evs_err_set(err, rc, "out of memory") : rc;
    }
    return 0;
}

static int claim_one(evs_store *st, gop *o, plan *pl, pel_ent *p, uint64_t new_count,
                     uint64_t when, evs_error *err)
{
    if (over_limit(pl->g, new_count) && new_count > p->count)
        return dead_body(st, pl, p->id, p->count, err);
    if (nums_id(&pl->claim, p->id) || nums_push(&pl->claim, new_count) ||
        nums_push(&pl->claim, when) || result_id(o, p->id))
        return evs_err_set(err, -ENOMEM, "out of memory");
    return 0;
}

static int plan_claim(evs_store *st, gop *o, plan *pl, uint64_t now_ms, evs_error *err)
{
    const evs_group_op *op = &o->op;
    cgroup *g = pl->g;
    int64_t when = op->set_time_ms >= 0 ? op->set_time_ms
                   : op->set_idle_ms >= 0 ? (int64_t)now_ms - op->set_idle_ms
                                           : (int64_t)now_ms;
    if (when < 0 || (uint64_t)when > now_ms)
        when = (int64_t)now_ms;
    pl->emit_claim = true;
    uint64_t used = 0, size = 0;
    for (size_t i = 0; i < op->nids; i++) {
        evs_id id = op->ids[i];
        /* Redis takes the IDs one by one: one given twice is claimed again, from the state
         * the first claim left (its count and time, planned in pl->claim, four per ID) */
        bool dup = false, again = false;
        pel_ent planned;
        for (size_t j = 0; j < i && !dup; j++)
            dup = evs_id_cmp(op->ids[j], id) == 0;
        for (size_t q = 0; dup && !again && q + 4 <= pl->claim.n; q += 4) {
            const uint64_t *v = pl->claim.v + q;
            if ((again = v[0] == id.ms && v[1] == id.seq))
                planned = (pel_ent){id, v[3], v[2], 0};
        }
        if (dup && !again)
            continue; /* deleted, dead-lettered or not claimed the first time: the same now */
        pel_ent *p = again ? &planned : pel_find(g, id);
        int e = reader_entry_exists(st, pl->s, id, &size, err);
        if (e < 0)
            return e;
        if (!e) {
            if (p && (nums_id(&pl->ack, id) || result_del(o, id)))
                return evs_err_set(err, -ENOMEM, "out of memory");
            continue;
        }
        pel_ent forced;
        bool made = false;
        if (!p) {
            if (!op->force)
                continue;
            forced = (pel_ent){id, now_ms, 1, 0};
            p = &forced;
            made = true; /* FORCE made it: no idle to wait for, as in Redis */
        }
        if (!made && op->min_idle_ms && idle_of(p, now_ms) < op->min_idle_ms)
            continue;
        uint64_t count = op->retrycount >= 0 ? (uint64_t)op->retrycount
                         : op->justid ? p->count : p->count + 1;
        /* the IDs are the client's: the reply cannot be cut short, so one that would pass
         * the budget is refused here, before anything is claimed */
        bool to_dlq = over_limit(g, count) && count > p->count;
        if (!op->justid && !to_dlq && !budget_takes(o, &used, size))
            return evs_err_set(err, EVS_ETOOBIG, "the claimed entries would pass %" PRIu64
                               " bytes of reply; claim fewer IDs, or with JUSTID",
                               op->max_bytes);
        int rc = claim_one(st, o, pl, p, count, (uint64_t)when, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int plan_autoclaim(evs_store *st, gop *o, plan *pl, uint64_t now_ms, evs_error *err)
{
    const evs_group_op *op = &o->op;
    cgroup *g = pl->g;
    uint64_t count = op->count ? op->count : 100;
    uint64_t attempts = count * 10;
    uint64_t used = 0, size = 0;
    pl->emit_claim = true;
    size_t i = pel_lower(g, op->id);
    for (; i < g->npel && attempts && count; i++) {
        pel_ent *p = &g->pel[i];
        if (p->cons == PEL_FREE)
            continue;
        attempts--;
        int e = reader_entry_exists(st, pl->s, p->id, &size, err);
        if (e < 0)
            return e;
        if (!e) {
            if (nums_id(&pl->ack, p->id) || result_del(o, p->id))
                return evs_err_set(err, -ENOMEM, "out of memory");
            count--; /* a deleted entry counts against COUNT too, as in Redis */
            continue;
        }
        if (idle_of(p, now_ms) < op->min_idle_ms)
            continue;
        if (!op->justid && !over_limit(g, p->count + 1) && !budget_takes(o, &used, size))
            break; /* the cursor (pl->next) names this entry: the next call starts here */
        int rc = claim_one(st, o, pl, p, op->justid ? p->count : p->count + 1, now_ms, err);
        if (rc)
            return rc;
        if (over_limit(g, p->count + 1) && !op->justid)
            continue; /* dead-lettered: not delivered, not counted */
        count--;
    }
    while (i < g->npel && g->pel[i].cons == PEL_FREE)
        i++;
    pl->next = i < g->npel ? g->pel[i].id : EVS_ID_MIN;
    return 0;
}

/* Does the stream have records in the batch being built (so readers do not see them yet)? */
static bool unpublished(const stream *s)
{
    return s && s->btouched && s->w.changes != s->w_changes_out;
}

static bool reads_entries(const evs_group_op *op)
{
    return op->cmd == EVS_GROUP_READ || op->cmd == EVS_GROUP_CLAIM ||
           op->cmd == EVS_GROUP_AUTOCLAIM;
}

static int plan_op(evs_store *st, gop *o, plan *pl, evs_error *err)
{
    const evs_group_op *op = &o->op;
    pl->s = strtab_get(&st->wtab, op->stream.ptr, op->stream.len, false);
    pl->g = group_find(pl->s, op->group.ptr, op->group.len);
    if (op->cmd == EVS_GROUP_CREATE) {
        if (!pl->s && !op->mkstream)
            return evs_err_set(err, EVS_ENOTFOUND, "no such stream");
        if (pl->g)
            return evs_err_set(err, EVS_EEXIST, "consumer group already exists");
        return 0;
    }
    if (!pl->s)
        return op->cmd == EVS_GROUP_ACK ? 0 : evs_err_set(err, EVS_ENOTFOUND, "no such stream");
    if (!pl->g) {
        if (op->cmd == EVS_GROUP_ACK || op->cmd == EVS_GROUP_DESTROY)
            return 0;
        return evs_err_set(err, EVS_ENOGROUP, "no such consumer group");
    }
    cgroup *g = pl->g;
    if (op->consumer.ptr)
        pl->new_cons = group_consumer(g, op->consumer.ptr, op->consumer.len) == PEL_FREE;
    uint64_t now_ms = evs_now_us() / 1000;
    switch (op->cmd) {
    case EVS_GROUP_DESTROY:
        pl->count = 1;
        return 0;
    case EVS_GROUP_DELCONSUMER: {
        uint32_t c = group_consumer(g, op->consumer.ptr, op->consumer.len);
        pl->count = c == PEL_FREE ? 0 : g->cons[c].npending;
        return 0;
    }
    case EVS_GROUP_CREATECONSUMER:
        pl->count = pl->new_cons;
        return 0;
    case EVS_GROUP_READ:
        return op->new_only ? plan_read_new(st, o, pl, err) : plan_read_history(st, o, pl, err);
    case EVS_GROUP_ACK:
        for (size_t i = 0; i < op->nids; i++) {
            bool dup = false;
            for (size_t j = 0; j < i && !dup && op->nids < 64; j++)
                dup = evs_id_cmp(op->ids[j], op->ids[i]) == 0;
            if (!dup && pel_find(g, op->ids[i])) {
                if (nums_id(&pl->ack, op->ids[i]))
                    return evs_err_set(err, -ENOMEM, "out of memory");
            }
        }
        pl->count = pl->ack.n / 2; /* (large lists: a repeated ID counts once in the log) */
        return 0;
    case EVS_GROUP_CLAIM:
        return plan_claim(st, o, pl, now_ms, err);
    case EVS_GROUP_AUTOCLAIM:
        return plan_autoclaim(st, o, pl, now_ms, err);
    default:
        return 0;
    }
}

/* ---- emitting ---------------------------------------------------------------------------- */

static int emit_group_flags(evs_store *st, const stream *s, int op, evs_slice group,
                            evs_slice arg, const uint64_t *v, size_t n, uint16_t flags,
                            evs_error *err)
{
    rec_buf b = {0};
    if (rec_group_encode(&b, op, group, arg, v, n)) {
        rec_buf_release(&b);
        return evs_err_set(err, -ENOMEM, "out of memory");
    }
    int rc = writer_emit_copy(st, REC_GROUP, flags, s->no, EVS_ID_MIN, REC_POS_NONE, b.data,
                              (uint32_t)b.len, err);
    rec_buf_release(&b);
    return rc;
}

static int emit_group(evs_store *st, const stream *s, int op, evs_slice group, evs_slice arg,
                      const uint64_t *v, size_t n, evs_error *err)
{
    return emit_group_flags(st, s, op, group, arg, v, n, REC_F_TXN_CONT, err);
}

static int emit_dead(evs_store *st, const plan *pl, const dead *d, evs_error *err)
{
    evs_slice dname = {pl->g->dlq, pl->g->dlq_len};
    stream *ds = strtab_get(&st->wtab, dname.ptr, dname.len, false);
    int rc = 0;
    if (!ds && (rc = writer_stream_create(st, dname, REC_F_TXN_CONT, &ds, err)))
        return rc;
    evs_id nid;
    if ((rc = writer_entry_auto(st, ds, d->body.data, (uint32_t)d->body.len, REC_F_TXN_CONT,
                                &nid, err)))
        return rc;
    uint64_t v[3] = {d->id.ms, d->id.seq, d->deliveries};
    return emit_group(st, pl->s, REC_G_DEAD, (evs_slice){pl->g->name, pl->g->len},
                      (evs_slice){"", 0}, v, 3, err);
}

/* A list of (ms, seq) pairs in records of at most CHUNK_IDS IDs, each after `head`. */
static int emit_chunks(evs_store *st, const plan *pl, int op, evs_slice arg, const uint64_t *head,
                       size_t nhead, const nums *ids, size_t width, bool always, evs_error *err)
{
    evs_slice gname = {pl->g->name, pl->g->len};
    size_t per = CHUNK_IDS * width, total = ids->n;
    if (total == 0)
        return always ? emit_group(st, pl->s, op, gname, arg, head, nhead, err) : 0;
    uint64_t *v = malloc((nhead + per) * sizeof *v);
    if (!v)
        return evs_err_set(err, -ENOMEM, "out of memory");
    int rc = 0;
    for (size_t at = 0; at < total && !rc; at += per) {
        size_t n = total - at < per ? total - at : per;
        if (nhead)
            memcpy(v, head, nhead * sizeof *v);
        memcpy(v + nhead, ids->v + at, n * sizeof *v);
        rc = emit_group(st, pl->s, op, gname, arg, v, nhead + n, err);
    }
    free(v);
    return rc;
}

static int emit_op(evs_store *st, gop *o, plan *pl, evs_error *err)
{
    const evs_group_op *op = &o->op;
    evs_slice gname = op->group;
    int rc = 0;
    switch (op->cmd) {
    case EVS_GROUP_CREATE: {
        if (!pl->s && (rc = writer_stream_create(st, op->stream, REC_F_TXN_CONT, &pl->s, err)))
            return rc;
        evs_id last = op->id_is_last ? pl->s->w.last_id : op->id;
        uint64_t v[5] = {st->next_gno, last.ms, last.seq, op->entries_read, op->max_deliveries};
        return emit_group(st, pl->s, REC_G_CREATE, gname, op->dlq, v, 5, err);
    }
    case EVS_GROUP_DESTROY:
        return pl->g ? emit_group(st, pl->s, REC_G_DESTROY, gname, (evs_slice){"", 0}, NULL, 0, err)
                     : 0;
    case EVS_GROUP_SETID: {
        evs_id last = op->id_is_last ? pl->s->w.last_id : op->id;
        uint64_t v[3] = {last.ms, last.seq, op->entries_read};
        return emit_group(st, pl->s, REC_G_SETID, gname, (evs_slice){"", 0}, v, 3, err);
    }
    case EVS_GROUP_SETDLQ: {
        uint64_t v[1] = {op->max_deliveries};
        return emit_group(st, pl->s, REC_G_SETDLQ, gname, op->dlq, v, 1, err);
    }
    case EVS_GROUP_CREATECONSUMER:
        return pl->new_cons ? emit_group(st, pl->s, REC_G_CONSUMER, gname, op->consumer, NULL, 0, err)
                            : 0;
    case EVS_GROUP_DELCONSUMER:
        return emit_group(st, pl->s, REC_G_DELCONS, gname, op->consumer, NULL, 0, err);
    case EVS_GROUP_ACK:
        return pl->g ? emit_chunks(st, pl, REC_G_ACK, (evs_slice){"", 0}, NULL, 0, &pl->ack, 2,
                                   false, err)
                     : 0;
    default:
        break;
    }
    /* READ, CLAIM, AUTOCLAIM: drop deleted entries, dead-letter, then deliver */
    if (pl->ack.n && (rc = emit_chunks(st, pl, REC_G_ACK, (evs_slice){"", 0}, NULL, 0, &pl->ack,
                                       2, false, err)))
        return rc;
    for (size_t i = 0; i < pl->ndead && !rc; i++)
        rc = emit_dead(st, pl, &pl->dead[i], err);
    if (rc)
        return rc;
    if (op->cmd == EVS_GROUP_READ && op->new_only) {
        /* each chunk carries the group's position after its last ID */
        nums *d = &pl->deliver;
        if (d->n == 0)
            return 0; /* Redis creates the consumer only when it serves it something */
        for (size_t at = 0; at < d->n && !rc; at += 2 * CHUNK_IDS) {
            size_t n = d->n - at < 2 * CHUNK_IDS ? d->n - at : 2 * CHUNK_IDS;
            bool final = at + n == d->n;
            evs_id last = final ? pl->last : (evs_id){d->v[at + n - 2], d->v[at + n - 1]};
            uint64_t er = final ? pl->er : REC_G_ENTRIES_READ_NONE;
            nums part = {d->v + at, n, n};
            uint64_t head[4] = {op->noack, last.ms, last.seq, er};
            rc = emit_chunks(st, pl, REC_G_DELIVER, op->consumer, head, 4, &part, 2, true, err);
        }
        return rc;
    }
    if (op->cmd == EVS_GROUP_READ)
        return emit_chunks(st, pl, REC_G_REDELIVER, op->consumer, NULL, 0, &pl->redeliver, 2,
                           pl->new_cons, err);
    /* Redis makes the consumer only when it claims something: a claim of nothing is written
     * only for its LASTID, and makes no consumer (group.c) */
    uint64_t head[3] = {op->has_lastid, op->lastid.ms, op->lastid.seq};
    return emit_chunks(st, pl, REC_G_CLAIM, op->consumer, head, 3, &pl->claim, 4,
                       op->has_lastid, err);
}

int group_exec(evs_store *st, wreq *r, bool *emitted, evs_error *err)
{
    *emitted = false;
    for (size_t i = 0; i < r->n; i++) {
        const evs_group_op *op = &r->gops[i].op;
        stream *s = strtab_get(&st->wtab, op->stream.ptr, op->stream.len, false);
        if (reads_entries(op) && unpublished(s))
            return NEED_FLUSH;
        if (op->dlq.ptr) {
            stream *d = strtab_get(&st->wtab, op->dlq.ptr, op->dlq.len, false);
            if (d && reads_entries(op) && unpublished(d))
                return NEED_FLUSH;
        }
    }
    plan small[4];
    plan *pl = r->n <= 4 ? small : calloc(r->n, sizeof *pl);
    if (!pl)
        return evs_err_set(err, -ENOMEM, "out of memory");
    memset(pl, 0, (r->n <= 4 ? 4 : r->n) * sizeof *pl);
    int rc = 0;
    for (size_t i = 0; i < r->n; i++) {
        gop *o = &r->gops[i];
        o->nr = o->nd = 0;
        if ((rc = plan_op(st, o, &pl[i], err)))
            break;
    }
    size_t mark = writer_mark(st);
    for (size_t i = 0; i < r->n && !rc; i++) {
        rc = emit_op(st, &r->gops[i], &pl[i], err);
        evs_group_result *res = &r->gres[i];
        gop *o = &r->gops[i];
        res->count = pl[i].count;
        res->ids = o->rids;
        res->nids = o->nr;
        res->deleted = o->rdel;
        res->ndeleted = o->nd;
        res->next = pl[i].next;
        res->dead_lettered = pl[i].ndead;
    }
    *emitted = writer_mark(st) != mark;
    writer_txn_close(st, mark);
    for (size_t i = 0; i < r->n; i++)
        plan_free(&pl[i]);
    if (pl != small)
        free(pl);
    return rc;
}

/* ---- the API ----------------------------------------------------------------------------- */

static int copy_slice(rec_buf *b, evs_slice s, size_t *off)
{
    *off = s.ptr ? b->len : SIZE_MAX;
    return s.ptr && rec_buf_write(b, s.ptr, s.len) ? -ENOMEM : 0;
}

static int check_op(const evs_group_op *op, size_t n, evs_error *err)
{
    if (op->cmd < EVS_GROUP_CREATE || op->cmd > EVS_GROUP_AUTOCLAIM)
        return evs_err_set(err, EVS_EINVAL, "unknown group operation %d", (int)op->cmd);
    if (n > 1 && op->cmd != EVS_GROUP_READ)
        return evs_err_set(err, EVS_EINVAL, "only reads run several operations at once");
    if (!op->stream.ptr || !op->group.ptr || (op->nids && !op->ids))
        return evs_err_set(err, EVS_EINVAL, "a stream, a group and the IDs given are needed");
    if (op->stream.len > EVS_STREAM_NAME_MAX)
        return evs_err_set(err, EVS_EINVAL, "stream name is %zu bytes, the limit is %d",
                           op->stream.len, EVS_STREAM_NAME_MAX);
    if (op->group.len > EVS_GROUP_NAME_MAX)
        return evs_err_set(err, EVS_EINVAL, "group name is %zu bytes, the limit is %d",
                           op->group.len, EVS_GROUP_NAME_MAX);
    if (op->consumer.len > EVS_GROUP_NAME_MAX)
        return evs_err_set(err, EVS_EINVAL, "consumer name is %zu bytes, the limit is %d",
                           op->consumer.len, EVS_GROUP_NAME_MAX);
    if (op->dlq.len > EVS_STREAM_NAME_MAX)
        return evs_err_set(err, EVS_EINVAL, "dead-letter stream name is %zu bytes, the limit "
                           "is %d", op->dlq.len, EVS_STREAM_NAME_MAX);
    bool needs_consumer = op->cmd == EVS_GROUP_READ || op->cmd == EVS_GROUP_CLAIM ||
                          op->cmd == EVS_GROUP_AUTOCLAIM ||
                          op->cmd == EVS_GROUP_CREATECONSUMER || op->cmd == EVS_GROUP_DELCONSUMER;
    if (needs_consumer && !op->consumer.ptr) /* (an empty name is a name, as in Redis) */
        return evs_err_set(err, EVS_EINVAL, "a consumer is needed");
    return 0;
}

int evs_group_submit(evs_store *st, const evs_group_op *ops, size_t n, evs_group_done_fn done,
                     void *arg, evs_error *err)
{
    int rc = writer_check(st, err);
    if (rc)
        return rc;
    if (n == 0)
        return evs_err_set(err, EVS_EINVAL, "no operation");
    for (size_t i = 0; i < n; i++) {
        if ((rc = check_op(&ops[i], n, err)))
            return rc;
        for (size_t j = 0; j < i; j++) /* XREADGROUP naming one stream twice */
            if (evs_slice_eq(ops[j].stream, ops[i].stream))
                return evs_err_set(err, EVS_EINVAL, "a read names one stream twice");
    }
    /* (wreq_new's data is never NULL, so no slice of it is, even when every name is empty:
     * NULL means "not given", and an empty consumer name is a name) */
    wreq *r = wreq_new(WR_GROUP, n);
    if (!r)
        return evs_err_set(err, -ENOMEM, "out of memory");
    r->gdone = done;
    r->arg = arg;
    r->gops = calloc(n, sizeof *r->gops);
    r->gres = calloc(n, sizeof *r->gres);
    rc = r->gops && r->gres ? 0 : evs_err_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        gop *o = &r->gops[i];
        o->op = ops[i];
        evs_slice dlq = ops[i].dlq;
        char *def = NULL;
        bool policy = ops[i].cmd == EVS_GROUP_CREATE || ops[i].cmd == EVS_GROUP_SETDLQ;
        if (policy && !dlq.ptr && ops[i].stream.len + 4 > EVS_STREAM_NAME_MAX) {
            /* no default name fits: none, and no policy that would need one */
            if (ops[i].max_deliveries) {
                rc = evs_err_set(err, EVS_EINVAL, "the default dead-letter stream "
                                 "\"<stream>:dlq\" would be %zu bytes, over the limit of %d: "
                                 "name one", ops[i].stream.len + 4, EVS_STREAM_NAME_MAX);
                break;
            }
            dlq = (evs_slice){"", 0};
        } else if (policy && !dlq.ptr) {
            /* the default dead-letter stream: "<stream>:dlq" */
            if (!(def = malloc(ops[i].stream.len + 4))) {
                rc = evs_err_set(err, -ENOMEM, "out of memory");
                break;
            }
            memcpy(def, ops[i].stream.ptr, ops[i].stream.len);
            memcpy(def + ops[i].stream.len, ":dlq", 4);
            dlq = (evs_slice){def, ops[i].stream.len + 4};
        }
        if (dlq.ptr && evs_slice_eq(dlq, ops[i].stream))
            rc = evs_err_set(err, EVS_EINVAL, "a stream cannot be its own dead-letter stream");
        static const uint8_t zeros[8];
        size_t pad = (8 - r->data.len % 8) % 8; /* the IDs go first, 8-byte aligned in data */
        if (!rc && (rec_buf_write(&r->data, (const char *)zeros, pad) ||
                    copy_slice(&r->data, (evs_slice){ops[i].ids ? (const void *)ops[i].ids : "",
                                                     ops[i].nids * sizeof(evs_id)},
                               &o->off[4]) ||
                    copy_slice(&r->data, ops[i].stream, &o->off[0]) ||
                    copy_slice(&r->data, ops[i].group, &o->off[1]) ||
                    copy_slice(&r->data, ops[i].consumer, &o->off[2]) ||
                    copy_slice(&r->data, dlq, &o->off[3])))
            rc = evs_err_set(err, -ENOMEM, "out of memory");
        o->op.dlq.len = dlq.len;
        free(def);
    }
    if (rc) {
        wreq_free(r);
        return rc;
    }
    for (size_t i = 0; i < n; i++) { /* data is complete: point the slices into it */
        gop *o = &r->gops[i];
        evs_slice *sl[4] = {&o->op.stream, &o->op.group, &o->op.consumer, &o->op.dlq};
        for (int k = 0; k < 4; k++)
            sl[k]->ptr = o->off[k] == SIZE_MAX ? NULL : r->data.data + o->off[k];
        o->op.ids = (const evs_id *)(r->data.data + o->off[4]);
    }
    return writer_submit(st, r, err);
}

typedef struct gwait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
    evs_group_result res;
    evs_id *ids;
    evs_error err;
} gwait;

static void gwait_done(void *arg, int rc, const evs_group_result *res, size_t n,
                       const evs_error *err)
{
    gwait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    if (err)
        w->err = *err;
    if (!rc && n) {
        w->res = res[0];
        size_t k = res[0].nids + res[0].ndeleted;
        if ((w->ids = malloc((k ? k : 1) * sizeof *w->ids))) {
            if (res[0].nids)
                memcpy(w->ids, res[0].ids, res[0].nids * sizeof *w->ids);
            if (res[0].ndeleted)
                memcpy(w->ids + res[0].nids, res[0].deleted, res[0].ndeleted * sizeof *w->ids);
            w->res.ids = w->ids;
            w->res.deleted = w->ids + res[0].nids;
        } else {
            w->rc = -ENOMEM;
        }
    }
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int evs_group_run(evs_store *st, const evs_group_op *op, evs_group_result *res,
                  evs_id **out_ids, evs_error *err)
{
    gwait w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    *out_ids = NULL;
    int rc = evs_group_submit(st, op, 1, gwait_done, &w, err);
    if (rc)
        return rc;
    evs_submit_wake(st); /* a hold on this thread must not leave it waiting for itself */
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    if (w.rc) {
        free(w.ids);
        if (err)
            *err = w.err;
        return w.rc;
    }
    *res = w.res;
    *out_ids = w.ids;
    return 0;
}

/* ---- snapshots (retention) ---------------------------------------------------------------- */

#define SNAP_PEL_CHUNK 4096 /* pending entries per REC_G_SNAPPEL record */

static int snapshot_one(evs_store *st, stream *s, cgroup *g, evs_error *err)
{
    evs_slice gname = {g->name, g->len};
    uint64_t v[7] = {g->gno, g->last.ms, g->last.seq, g->entries_read, g->max_deliveries,
                     g->dead_letters, g->ncons};
    int rc = emit_group_flags(st, s, REC_G_SNAP, gname, (evs_slice){g->dlq, g->dlq_len}, v, 7,
                              REC_F_TXN_CONT, err);
    for (uint32_t c = 0; c < g->ncons && !rc; c++) {
        if (!g->cons[c].name)
            continue;
        uint64_t cv[3] = {c, g->cons[c].seen_ms, g->cons[c].active_ms};
        rc = emit_group_flags(st, s, REC_G_SNAPCONS, gname,
                              (evs_slice){g->cons[c].name, g->cons[c].len}, cv, 3,
                              REC_F_TXN_CONT, err);
    }
    uint64_t *pv = malloc(SNAP_PEL_CHUNK * 5 * sizeof *pv);
    if (!pv)
        return evs_err_set(err, -ENOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i <= g->npel && !rc; i++) {
        if (i < g->npel && g->pel[i].cons != PEL_FREE) {
            const pel_ent *p = &g->pel[i];
            uint64_t *e = pv + 5 * n++;
            e[0] = p->cons;
            e[1] = p->id.ms;
            e[2] = p->id.seq;
            e[3] = p->count;
            e[4] = p->time_ms;
        }
        if (n && (n == SNAP_PEL_CHUNK || i == g->npel)) {
            rc = emit_group_flags(st, s, REC_G_SNAPPEL, gname, (evs_slice){"", 0}, pv, 5 * n,
                                  REC_F_TXN_CONT, err);
            n = 0;
        }
    }
    free(pv);
    return rc;
}

int group_snapshot_emit(evs_store *st, stream *s, uint64_t upto, evs_error *err)
{
    int rc = 0;
    for (uint32_t i = 0; i < s->ngroups && !rc; i++) {
        cgroup *g = s->groups[i];
        if (g->decl_pos >= upto)
            continue;
        size_t mark = writer_mark(st);
        rc = snapshot_one(st, s, g, err); /* one atomic group: never half a snapshot */
        writer_txn_close(st, mark);
    }
    return rc;
}
