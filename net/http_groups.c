/*
 * http_groups.c — consumer groups over HTTP/JSON, on the embedded API:
 *
 *   POST   /streams/{s}/groups            {"name", "start": "0"|"$"|id, "max_deliveries",
 *                                          "dead_letter", "mkstream"} -> 201 {"name"}
 *   GET    /streams/{s}/groups            -> 200 {"groups": [{name, pending, lag, consumers,
 *                                          oldest_pending_age_ms, dead_letters, ...}]}
 *   DELETE /streams/{s}/groups/{g}        -> 200 {"destroyed": true|false}
 *   POST   /streams/{s}/groups/{g}/read   {"consumer", "count", "block_ms"}
 *                                          -> 200 {"events": [...]} (events API shapes)
 *   POST   /streams/{s}/groups/{g}/ack    {"ids": [...]} -> 200 {"acked": n}
 *
 * Changes are answered once durable, like publishes. A read with block_ms and nothing new
 * parks (at most HTTP_GROUP_PARKED of them) until a batch becomes visible or the time is up;
 * it then answers {"events": []}. A parked read whose client goes away is dropped (as Redis
 * unblocks a client that disconnects): it claims nothing for a consumer nobody listens as.
 * Errors: 400 bad input, 404 no stream / no group, 409 the
 * group exists, 503 store failed.
 */
#include "event_json.h"
#include "http_internal.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HTTP_GROUP_PARKED 1000
#define HTTP_GROUP_MAX_COUNT 10000
#define HTTP_GROUP_MAX_BLOCK_MS 300000

typedef enum gkind { GK_CREATE, GK_DESTROY, GK_READ, GK_ACK } gkind;

typedef struct hgop {
    struct hgop *next, **pprev;  /* parked reads                                         */
    http_api *h;
    struct evhttp_request *req;
    gkind kind;
    char *stream, *group, *consumer;
    size_t stream_len, group_len, consumer_len;
    uint32_t hash;               /* wake_hash of the stream (wake.h)                       */
    uint64_t count;
    uint64_t deadline_ms;        /* block_ms: answer empty at this time (0: do not park)   */
    struct event *timer;
    int rc;
    evs_error err;
    evs_group_result res;
    evs_id *ids;                 /* copy of res.ids                                        */
} hgop;

static hgop *parked;
static size_t nparked;
static bool stopping; /* no more parking: completions after quiesce answer at once */

static void hgop_free(hgop *g)
{
    if (g->timer)
        event_free(g->timer);
    free(g->stream);
    free(g->group);
    free(g->consumer);
    free(g->ids);
    free(g);
}

static void unpark(hgop *g)
{
    if (g->pprev) {
        http_on_close(g->h, g->req, NULL, NULL);
        *g->pprev = g->next;
        if (g->next)
            g->next->pprev = g->pprev;
        g->pprev = NULL;
        nparked--;
    }
}

static void park(hgop *g)
{
    g->next = parked;
    if (parked)
        parked->pprev = &g->next;
    g->pprev = &parked;
    parked = g;
    nparked++;
}

static int status_of(int rc, const char **code)
{
    switch (rc) {
    case EVS_ENOTFOUND: *code = "not_found"; return 404;
    case EVS_ENOGROUP: *code = "no_group"; return 404;
    case EVS_EEXIST: *code = "group_exists"; return 409;
    case EVS_EINVAL: *code = "bad_request"; return 400;
    case EVS_EFAILED: *code = "store_failed"; return 503;
    case EVS_ENOSPACE: *code = "no_space"; return 503;
    default: *code = "internal"; return 500;
    }
}

static void send_events(hgop *g)
{
    json_t *events = json_array();
    evs_store *st = server_store(http_server(g->h));
    evs_slice s = {g->stream, g->stream_len};
    for (size_t i = 0; i < g->res.nids; i++) {
        evs_query q;
        evs_query_init(&q);
        q.start = q.end = g->ids[i];
        q.limit = 1;
        evs_iter *it;
        evs_error err;
        const evs_entry *e;
        if (evs_iter_open(st, s, &q, &it, &err) == 0) {
            if (evs_iter_next(it, &e, &err) == 1)
                json_array_append_new(events, event_json(e));
            evs_iter_close(it);
        }
    }
    send_json(g->req, 200, "OK", json_pack("{s:o}", "events", events));
}

static void submit(hgop *g);

/* A parked read's connection is closing. If its client went away, libevent 2.1 has detached
 * the unanswered request and left it to us; else (a shutdown) it frees the request itself. */
static void parked_gone(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    hgop *g = arg;
    unpark(g);
    if (!evhttp_request_get_connection(g->req))
        evhttp_request_free(g->req);
    hgop_free(g);
}

/* On the loop: answer, or park a read that found nothing and may still wait. */
static void answer(void *arg)
{
    hgop *g = arg;
    if (g->rc) {
        const char *code;
        int status = status_of(g->rc, &code);
        send_error(g->req, status, code, "%s", g->err.msg[0] ? g->err.msg : evs_strerror(g->rc));
        hgop_free(g);
        return;
    }
    switch (g->kind) {
    case GK_CREATE:
        send_json(g->req, 201, "Created", json_pack("{s:s%}", "name", g->group, g->group_len));
        break;
    case GK_DESTROY:
        send_json(g->req, 200, "OK", json_pack("{s:b}", "destroyed", g->res.count ? 1 : 0));
        break;
    case GK_ACK:
        send_json(g->req, 200, "OK", json_pack("{s:I}", "acked", (json_int_t)g->res.count));
        break;
    case GK_READ:
        if (g->res.nids == 0 && !stopping && g->deadline_ms > evs_mono_ns() / 1000000 &&
            nparked < HTTP_GROUP_PARKED && http_on_close(g->h, g->req, parked_gone, g)) {
            park(g); /* (without a connection: answered now, which frees the request) */
            return;
        }
        send_events(g);
        break;
    }
    hgop_free(g);
}

static void done(void *arg, int rc, const evs_group_result *res, size_t n, const evs_error *err)
{
    hgop *g = arg;
    g->rc = rc;
    if (err)
        g->err = *err;
    if (!rc && n) {
        g->res = res[0];
        free(g->ids); /* a parked read woken tries again: its last (empty) answer's */
        g->ids = malloc((res[0].nids ? res[0].nids : 1) * sizeof *g->ids);
        if (g->ids && res[0].nids)
            memcpy(g->ids, res[0].ids, res[0].nids * sizeof *g->ids);
        else if (!g->ids)
            g->rc = -12;
        g->res.ids = g->ids;
        g->res.deleted = NULL;
    }
    server_post(http_server(g->h), answer, g); /* writer thread -> loop */
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    hgop *g = arg;
    if (g->pprev) { /* parked: answer empty; in flight: its completion answers */
        unpark(g);
        g->deadline_ms = 0;
        send_events(g);
        hgop_free(g);
    }
}

static void submit_op(hgop *g, evs_group_op *op)
{
    op->stream = (evs_slice){g->stream, g->stream_len};
    op->group = (evs_slice){g->group, g->group_len};
    int rc = evs_group_submit(server_store(http_server(g->h)), op, 1, done, g, &g->err);
    if (rc) {
        g->rc = rc;
        answer(g);
    }
}

static void submit(hgop *g)
{
    evs_group_op op;
    evs_group_op_init(&op, EVS_GROUP_READ);
    op.consumer = (evs_slice){g->consumer, g->consumer_len};
    op.new_only = true;
    op.count = g->count;
    op.max_bytes = server_cfg(http_server(g->h))->max_output_bytes; /* a page of large ones */
    submit_op(g, &op);
}

void http_groups_on_visible(http_api *h, const wake_set *ws)
{
    (void)h;
    hgop *g = parked;
    while (g) { /* a read whose stream may have changed tries again (its answer parks it
                 * again if it finds nothing, after this walk) */
        hgop *next = g->next;
        if (wake_may(ws, g->hash)) {
            unpark(g);
            submit(g);
        }
        g = next;
    }
}

void http_groups_quiesce(void)
{
    stopping = true;
    while (parked) {
        hgop *g = parked;
        unpark(g);
        send_events(g);
        hgop_free(g);
    }
}

/* ---- request parsing ---------------------------------------------------------------------- */

static json_t *body_json(struct evhttp_request *req)
{
    size_t len;
    char *body = body_of(req, &len);
    if (!body) {
        send_error(req, 500, "internal", "out of memory");
        return NULL;
    }
    json_error_t jerr;
    json_t *doc = len ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr) : json_object();
    free(body);
    if (!doc) {
        send_error(req, 400, "bad_json", "malformed JSON at line %d column %d: %s", jerr.line,
                   jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        send_error(req, 400, "bad_json", "the body must be a JSON object");
        return NULL;
    }
    return doc;
}

static char *dup_str(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static hgop *hgop_new(http_api *h, struct evhttp_request *req, gkind kind, evs_slice stream,
                      const char *group, size_t group_len)
{
    hgop *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->h = h;
    g->req = req;
    g->kind = kind;
    g->stream = dup_str(stream.ptr, stream.len);
    g->stream_len = stream.len;
    g->hash = wake_hash(stream.ptr, stream.len);
    g->group = dup_str(group, group_len);
    g->group_len = group_len;
    if (!g->stream || !g->group) {
        hgop_free(g);
        return NULL;
    }
    return g;
}

/* An integer member from min to max, or the default; false (after answering 400) if not. */
static bool uint_member(struct evhttp_request *req, json_t *doc, const char *key, uint64_t min,
                        uint64_t max, uint64_t *out)
{
    json_t *v = json_object_get(doc, key);
    if (!v)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max) {
        send_error(req, 400, "bad_request", "\"%s\" must be an integer from %llu to %llu", key,
                   (unsigned long long)min, (unsigned long long)max);
        return false;
    }
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static const char *str_member(json_t *doc, const char *key, size_t *len)
{
    json_t *v = json_object_get(doc, key);
    if (!json_is_string(v))
        return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

static void do_create(http_api *h, struct evhttp_request *req, evs_slice stream)
{
    json_t *doc = body_json(req);
    if (!doc)
        return;
    size_t nlen = 0, slen = 0, dlen = 0;
    const char *name = str_member(doc, "name", &nlen);
    const char *start = str_member(doc, "start", &slen);
    const char *dlq = str_member(doc, "dead_letter", &dlen);
    evs_group_op op;
    evs_group_op_init(&op, EVS_GROUP_CREATE);
    op.mkstream = json_is_true(json_object_get(doc, "mkstream"));
    if (!name || nlen == 0 || nlen > EVS_GROUP_NAME_MAX) {
        send_error(req, 400, "bad_request", "\"name\" must be a string of 1 to %d bytes",
                   EVS_GROUP_NAME_MAX);
    } else if (start && strcmp(start, "$") && evs_id_parse(start, slen, 0, &op.id)) {
        send_error(req, 400, "bad_id", "\"start\" must be \"0\", \"$\" or an entry ID");
    } else if (uint_member(req, doc, "max_deliveries", 0, UINT32_MAX, &op.max_deliveries)) {
        op.id_is_last = start && !strcmp(start, "$");
        if (dlq)
            op.dlq = (evs_slice){dlq, dlen};
        hgop *g = hgop_new(h, req, GK_CREATE, stream, name, nlen);
        if (!g)
            send_error(req, 500, "internal", "out of memory");
        else
            submit_op(g, &op);
    }
    json_decref(doc);
}

static void do_read(http_api *h, struct evhttp_request *req, evs_slice stream, const char *group,
                    size_t group_len)
{
    json_t *doc = body_json(req);
    if (!doc)
        return;
    size_t clen = 0;
    const char *consumer = str_member(doc, "consumer", &clen);
    uint64_t count = 100, block = 0;
    if (!consumer || clen == 0 || clen > EVS_GROUP_NAME_MAX) {
        send_error(req, 400, "bad_request", "\"consumer\" must be a string of 1 to %d bytes",
                   EVS_GROUP_NAME_MAX);
    } else if (uint_member(req, doc, "count", 1, HTTP_GROUP_MAX_COUNT, &count) &&
               uint_member(req, doc, "block_ms", 0, HTTP_GROUP_MAX_BLOCK_MS, &block)) {
        hgop *g = hgop_new(h, req, GK_READ, stream, group, group_len);
        if (g && !(g->consumer = dup_str(consumer, clen))) {
            hgop_free(g);
            g = NULL;
        }
        if (!g) {
            send_error(req, 500, "internal", "out of memory");
        } else {
            g->consumer_len = clen;
            g->count = count;
            if (block) {
                g->deadline_ms = evs_mono_ns() / 1000000 + block;
                g->timer = evtimer_new(server_base(http_server(h)), timeout_cb, g);
                struct timeval tv = {(time_t)(block / 1000), (suseconds_t)((block % 1000) * 1000)};
                if (g->timer)
                    evtimer_add(g->timer, &tv);
            }
            submit(g);
        }
    }
    json_decref(doc);
}

static void do_ack(http_api *h, struct evhttp_request *req, evs_slice stream, const char *group,
                   size_t group_len)
{
    json_t *doc = body_json(req);
    if (!doc)
        return;
    json_t *ids = json_object_get(doc, "ids");
    size_t n = json_is_array(ids) ? json_array_size(ids) : 0;
    evs_id *v = malloc((n ? n : 1) * sizeof *v);
    bool ok = json_is_array(ids) && n > 0 && v;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *x = json_array_get(ids, i);
        ok = json_is_string(x) &&
             evs_id_parse(json_string_value(x), json_string_length(x), 0, &v[i]) == 0;
    }
    if (!ok) {
        send_error(req, 400, "bad_request", "\"ids\" must be a non-empty array of entry IDs");
    } else {
        hgop *g = hgop_new(h, req, GK_ACK, stream, group, group_len);
        evs_group_op op;
        evs_group_op_init(&op, EVS_GROUP_ACK);
        op.ids = v;
        op.nids = n;
        if (!g)
            send_error(req, 500, "internal", "out of memory");
        else
            submit_op(g, &op); /* the IDs are copied before it returns */
    }
    free(v);
    json_decref(doc);
}

struct list_ctx {
    evs_store *st;
    evs_slice stream;
    json_t *groups;
    uint64_t now;
};

static int cons_json(void *arg, const evs_consumer_info *c)
{
    json_t *a = arg;
    uint64_t now = (uint64_t)time(NULL) * 1000;
    json_array_append_new(a, json_pack("{s:o, s:I, s:I}", "name", json_bytes(c->name.ptr, c->name.len),
                                       "pending", (json_int_t)c->pending, "idle_ms",
                                       (json_int_t)(now > c->seen_ms ? now - c->seen_ms : 0)));
    return 0;
}

static int group_json(void *arg, const evs_group_info *g)
{
    struct list_ctx *l = arg;
    json_t *o = json_pack(
        "{s:o, s:I, s:o, s:o, s:o, s:I, s:o, s:I}", "name", json_bytes(g->name.ptr, g->name.len),
        "pending", (json_int_t)g->pending, "last_delivered_id", json_id(g->last_delivered),
        "entries_read",
        g->entries_read == EVS_ENTRIES_READ_NONE ? json_null() : json_integer((json_int_t)g->entries_read),
        "lag", g->lag_known ? json_integer((json_int_t)g->lag) : json_null(), "max_deliveries",
        (json_int_t)g->max_deliveries, "dead_letter_stream", /* none used: null (XINFO omits it) */
        g->max_deliveries ? json_bytes(g->dlq.ptr, g->dlq.len) : json_null(),
        "dead_letters", (json_int_t)g->dead_letters);
    json_object_set_new(o, "oldest_pending_age_ms",
                        g->pending && l->now > g->oldest_pending_ms
                            ? json_integer((json_int_t)(l->now - g->oldest_pending_ms))
                            : g->pending ? json_integer(0) : json_null());
    json_object_set_new(o, "consumers", json_array());
    json_array_append_new(l->groups, o);
    return 0;
}

static void do_list(http_api *h, struct evhttp_request *req, evs_slice stream)
{
    evs_store *st = server_store(http_server(h));
    struct list_ctx l = {st, stream, json_array(), (uint64_t)time(NULL) * 1000};
    int rc = evs_group_list(st, stream, EVS_GROUP_OLDEST, group_json, &l);
    if (rc == EVS_ENOTFOUND) {
        json_decref(l.groups);
        send_error(req, 404, "not_found", "no such stream");
        return;
    }
    /* consumers per group, outside the group walk (each walk holds the group lock) */
    size_t i;
    json_t *g;
    json_array_foreach(l.groups, i, g) {
        const char *name = json_string_value(json_object_get(g, "name"));
        evs_consumer_list(st, stream, (evs_slice){name, strlen(name)}, cons_json,
                          json_object_get(g, "consumers"));
    }
    send_json(req, 200, "OK", json_pack("{s:o}", "groups", l.groups));
}

void http_groups_route(http_api *h, struct evhttp_request *req, evs_slice stream,
                       const char *rest)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (!*rest || !strcmp(rest, "/")) {
        if (m == EVHTTP_REQ_POST)
            do_create(h, req, stream);
        else if (m == EVHTTP_REQ_GET)
            do_list(h, req, stream);
        else
            send_error(req, 405, "method_not_allowed", "method not allowed here (allowed: GET, POST)");
        return;
    }
    if (rest[0] != '/') {
        send_error(req, 404, "not_found", "no such route");
        return;
    }
    rest++;
    const char *slash = strchr(rest, '/');
    size_t enc_len = slash ? (size_t)(slash - rest) : strlen(rest);
    char *enc = strndup(rest, enc_len);
    size_t glen = 0;
    char *group = enc ? evhttp_uridecode(enc, 0, &glen) : NULL;
    free(enc);
    const char *tail = slash ? slash : "";
    if (!group || glen == 0 || glen > EVS_GROUP_NAME_MAX) {
        send_error(req, 400, "bad_name", "a group name of 1 to %d bytes is needed",
                   EVS_GROUP_NAME_MAX);
    } else if (!*tail) {
        if (m == EVHTTP_REQ_DELETE) {
            hgop *g = hgop_new(h, req, GK_DESTROY, stream, group, glen);
            evs_group_op op;
            evs_group_op_init(&op, EVS_GROUP_DESTROY);
            if (g)
                submit_op(g, &op);
            else
                send_error(req, 500, "internal", "out of memory");
        } else {
            send_error(req, 405, "method_not_allowed", "method not allowed here (allowed: DELETE)");
        }
    } else if (!strcmp(tail, "/read") || !strcmp(tail, "/ack")) {
        if (m != EVHTTP_REQ_POST)
            send_error(req, 405, "method_not_allowed", "method not allowed here (allowed: POST)");
        else if (tail[1] == 'r')
            do_read(h, req, stream, group, glen);
        else
            do_ack(h, req, stream, group, glen);
    } else {
        send_error(req, 404, "not_found", "no such route");
    }
    free(group);
}
