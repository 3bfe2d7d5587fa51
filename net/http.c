/*
 * http.c — the HTTP/JSON API (libevent evhttp, jansson for JSON), on the embedded API.
 *
 *   POST   /streams/{name}/events   one event {"source","type","payload",...} or an array of
 *                                   them (atomic) -> 201 {"id"} / {"ids"}, once durable
 *   GET    /streams/{name}/events   ?after=&before=&limit=&reverse=1&source=&type=
 *                                   -> 200 {"events":[...], "next": id|null}
 *   GET    /streams                 names, lengths, first/last id
 *   GET    /streams/{name}          stats
 *   DELETE /streams/{name}
 *   /streams/{name}/groups...       consumer groups (http_groups.c)
 *   GET    /healthz /readyz /metrics
 *
 * An event maps to fields: `source` and `type` (strings), `payload` (any JSON, stored as its
 * compact JSON text), and any other top-level string members, in that order. Reading maps
 * back: `payload` is parsed when it holds JSON, else returned as a string; other fields go
 * under "fields". Bytes that are not UTF-8 read as U+00XX per byte.
 *
 * Errors: {"error": "...", "code": "..."} with 400, 401, 404, 405, 503 (and libevent's own 413
 * page for a body over --max-request-bytes: libevent 2.1 has no hook to shape it).
 *
 * A publish is answered from the loop when the store completes it. If the client goes away
 * first, libevent 2.1 detaches the unanswered request from its connection instead of freeing
 * it (evhttp_connection_incoming_fail), and evhttp_send_reply frees it: answering late is
 * always safe. At shutdown every publish is answered (the store drains its queue and the
 * completions run) before evhttp is freed.
 */
#include "event_json.h"
#include "http_internal.h"
#include "server.h"
#include "fdlimit.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LIMIT 10000
#define DEFAULT_LIMIT 100
#define DEFAULT_STREAMS_LIMIT 1000
#define IDEM_WINDOW_US EVS_IDEM_WINDOW_US /* a retry within 10 minutes is answered, not applied */

#define SSE_BATCH 1000       /* entries sent per subscriber per wake-up                */
#define SSE_HEARTBEAT_S 15

typedef struct sse sse;
typedef struct publish publish;

/* What one live tail was sent in this wake's pass: the next tail of the same stream at the
 * same place is sent the same bytes without reading and formatting the entries again (a
 * stream a thousand dashboards follow costs one formatting per batch, not a thousand). */
typedef struct sse_memo {
    bool set;              /* for this pass (http_on_visible clears it)                     */
    uint8_t name[EVS_STREAM_NAME_MAX]; /* the stream                                         */
    size_t name_len;
    evs_id from, to;       /* the entries after `from`, up to and including `to`             */
    size_t n;              /* how many (SSE_BATCH: more follow)                              */
    char *text;            /* what was sent                                                  */
    size_t len, cap;
} sse_memo;

struct http_api {
    server *srv;
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    struct fdlimit_listener *guard; /* fdlimit.c F2, F3 */
    sse *subs;
    size_t nsubs;
    publish *keyed; /* keyed publishes in flight: retries of the same key wait for them */
    sse_memo memo;  /* the live tails' shared formatting (its text kept between passes) */
    http_client_table clients; /* counted toward --max-clients (http_clients.c) */
};

/* A live tail: an unfinished chunked reply fed as entries become visible. */
struct sse {
    sse *next, **pprev;
    http_api *h;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    uint8_t *name;
    size_t name_len;
    uint32_t hash;               /* wake_hash of the name (wake.h)                         */
    evs_id last;                 /* the last ID sent (the next entry must be above it)    */
    struct event *beat, *more;   /* heartbeat; another round when a batch was capped       */
};

struct waiter {
    struct waiter *next;
    struct evhttp_request *req;
};

struct publish {
    http_api *h;
    struct evhttp_request *req;
    size_t n;
    bool array;
    int rc;
    evs_error err;
    evs_id *ids;
    /* keyed publishes: in h->keyed until answered, with the retries that arrived meanwhile */
    publish *next, **pprev;
    char *key, *name;
    size_t key_len, name_len;
    struct waiter *waiters;
    bool replicating;    /* --ack all: durable here, waiting for the followers' fsync          */
    long long got;       /* ... how many had it when the wait ended                            */
};

/* ---- replies ------------------------------------------------------------------------------ */

void send_json(struct evhttp_request *req, int status, const char *reason, json_t *body)
{
    struct evbuffer *b = evbuffer_new();
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    if (b && text) {
        evbuffer_add(b, text, strlen(text));
        evbuffer_add(b, "\n", 1);
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, status, reason, b);
    free(text);
    if (b)
        evbuffer_free(b);
    json_decref(body);
}

void send_error(struct evhttp_request *req, int status, const char *code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    static const struct {
        int status;
        const char *reason;
    } reasons[] = {{400, "Bad Request"},       {401, "Unauthorized"}, {404, "Not Found"},
                   {405, "Method Not Allowed"}, {409, "Conflict"}, {413, "Payload Too Large"},
                   {500, "Internal Server Error"}, {503, "Service Unavailable"}};
    const char *reason = "Error";
    for (size_t i = 0; i < sizeof reasons / sizeof *reasons; i++)
        if (reasons[i].status == status)
            reason = reasons[i].reason;
    /* the message may quote client bytes: make it valid UTF-8 for jansson */
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    send_json(req, status, reason, json_pack("{s:s, s:s}", "error", msg, "code", code));
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* The request's bearer token matches --requirepass. A live tail (SSE) may give it as the query
 * parameter access_token instead (RFC 6750, 2.3): a browser's EventSource cannot set headers. */
static bool authorized(http_api *h, struct evhttp_request *req, const char *path,
                       enum evhttp_cmd_type m)
{
    const char *want = server_cfg(h->srv)->requirepass;
    if (!want)
        return true;
    const char *got = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (got)
        return !strncmp(got, "Bearer ", 7) && server_secret_is(want, got + 7, strlen(got + 7));
    size_t plen = strlen(path);
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq q;
    if (m != EVHTTP_REQ_GET || plen < 12 || strcmp(path + plen - 12, "/events/live") ||
        !query || evhttp_parse_query_str(query, &q))
        return false;
    const char *token = evhttp_find_header(&q, "access_token");
    bool ok = token && server_secret_is(want, token, strlen(token));
    evhttp_clear_headers(&q);
    return ok;
}

server *http_server(http_api *h) { return h->srv; }

char *body_of(struct evhttp_request *req, size_t *len)
{
    struct evbuffer *b = evhttp_request_get_input_buffer(req);
    *len = evbuffer_get_length(b);
    char *p = malloc(*len + 1);
    if (!p)
        return NULL;
    evbuffer_copyout(b, p, *len);
    p[*len] = 0;
    return p;
}

/* ---- POST /streams/{name}/events ---------------------------------------------------------- */

static void answer_one(publish *p, struct evhttp_request *req)
{
    struct evhttp_request *saved = p->req;
    p->req = req;
    {
        const server_config *cfg = server_cfg(p->h->srv);
        if (p->rc == 0 && p->replicating && p->got < cfg->min_replicas) {
            send_error(p->req, 503, "noreplicas",
                       "Not enough good replicas acknowledged the write within %d ms (%lld of "
                       "%d); it is durable on this leader, first ID %" PRIu64 "-%" PRIu64,
                       cfg->ack_timeout_ms, p->got, cfg->min_replicas, p->ids[0].ms,
                       p->ids[0].seq);
        } else if (p->rc == 0) {
            json_t *body;
            if (p->array) {
                json_t *ids = json_array();
                for (size_t i = 0; i < p->n; i++)
                    json_array_append_new(ids, json_id(p->ids[i]));
                body = json_pack("{s:o}", "ids", ids);
            } else {
                body = json_pack("{s:o}", "id", json_id(p->ids[0]));
            }
            send_json(p->req, 201, "Created", body);
        } else if (p->rc == EVS_EFAILED) {
            send_error(p->req, 503, "store_failed", "%s", p->err.msg);
        } else if (p->rc == EVS_ENOSPACE) {
            send_error(p->req, 503, "no_space", "%s", p->err.msg);
        } else if (p->rc == EVS_ETOOBIG) {
            send_error(p->req, 413, "too_big", "%s", p->err.msg);
        } else {
            send_error(p->req, 400, "rejected", "%s", p->err.msg[0] ? p->err.msg : evs_strerror(p->rc));
        }
    }
    p->req = saved;
}

/* On the loop: answer the publish and any retries that waited for it, then free. */
static void publish_answer(void *arg);

static void publish_replicated(void *arg, long long got)
{
    publish *p = arg;
    p->got = got;
    publish_answer(p);
}

static void publish_answer(void *arg)
{
    publish *p = arg;
    const server_config *cfg = server_cfg(p->h->srv);
    if (p->rc == 0 && cfg->ack_all && !p->replicating) {
        /* durable here; the answer waits until --min-replicas followers have fsynced it */
        evs_store_stats s;
        evs_store_stats_get(server_store(p->h->srv), &s);
        p->replicating = true;
        if (repl_wait(p->h->srv, s.log_end, cfg->min_replicas, cfg->ack_timeout_ms,
                      publish_replicated, p) == 0)
            return;
        p->got = 0;
    }
    answer_one(p, p->req);
    if (p->pprev) {
        *p->pprev = p->next;
        if (p->next)
            p->next->pprev = p->pprev;
    }
    while (p->waiters) {
        struct waiter *w = p->waiters;
        p->waiters = w->next;
        evhttp_add_header(evhttp_request_get_output_headers(w->req), "Idempotent-Replayed", "true");
        answer_one(p, w->req);
        free(w);
    }
    free(p->key);
    free(p->name);
    free(p->ids);
    free(p);
}

/* A retry of a key seen before: the original IDs, read back from the stream. */
static bool replay_keyed(http_api *h, struct evhttp_request *req, evs_slice name, evs_slice key,
                         bool array)
{
    evs_id first, last;
    size_t count;
    if (evs_idem_get(server_store(h->srv), name, key, IDEM_WINDOW_US, &first, &last, &count) != 1)
        return false;
    publish p = {0};
    p.h = h;
    p.n = 0;
    p.array = array;
    p.ids = calloc(count ? count : 1, sizeof *p.ids);
    evs_query q;
    evs_query_init(&q);
    q.start = first;
    q.end = last;
    q.limit = count;
    evs_iter *it;
    evs_error err;
    const evs_entry *e;
    if (p.ids && evs_iter_open(server_store(h->srv), name, &q, &it, &err) == 0) {
        while (p.n < count && evs_iter_next(it, &e, &err) == 1)
            p.ids[p.n++] = e->id;
        evs_iter_close(it);
    }
    if (p.n == 0) { /* the entries are gone (deleted): report the first ID we appended */
        p.ids[0] = first;
        p.n = 1;
    }
    if (!array)
        p.n = 1;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Idempotent-Replayed", "true");
    answer_one(&p, req);
    free(p.ids);
    return true;
}

static void publish_done(void *arg, int rc, const evs_id *ids, size_t n, const evs_error *err)
{
    publish *p = arg;
    p->rc = rc;
    if (!rc)
        memcpy(p->ids, ids, n * sizeof *ids);
    if (err)
        p->err = *err;
    server_post(p->h->srv, publish_answer, p); /* writer thread -> loop */
}

#define ID_KEY_PREFIX "\0id:"
#define ID_KEY_PREFIX_LEN 4

static void do_publish(http_api *h, struct evhttp_request *req, evs_slice name)
{
    const char *key = evhttp_find_header(evhttp_request_get_input_headers(req), "Idempotency-Key");
    size_t key_len = key ? strlen(key) : 0;
    if (key && (key_len == 0 || key_len > EVS_IDEM_KEY_MAX)) {
        send_error(req, 400, "bad_idempotency_key", "Idempotency-Key must be 1 to %d bytes",
                   EVS_IDEM_KEY_MAX);
        return;
    }
    size_t len;
    char *body = body_of(req, &len);
    if (!body) {
        send_error(req, 500, "internal", "out of memory");
        return;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    free(body);
    if (!doc) {
        send_error(req, 400, "bad_json", "malformed JSON at line %d column %d: %s", jerr.line,
                   jerr.column, jerr.text);
        return;
    }
    bool array = json_is_array(doc);
    /* Without the header, a single event's string "id" is its idempotency key, kept apart
     * from header keys by a NUL prefix (no header value holds a NUL). */
    char idkey[EVS_IDEM_KEY_MAX];
    json_t *evid = array ? NULL : json_object_get(doc, "id");
    if (!key && json_is_string(evid)) {
        size_t n = json_string_length(evid);
        if (n == 0 || n > EVS_IDEM_KEY_MAX - ID_KEY_PREFIX_LEN) {
            json_decref(doc);
            send_error(req, 400, "bad_event", "\"id\" must be 1 to %d bytes",
                       EVS_IDEM_KEY_MAX - ID_KEY_PREFIX_LEN);
            return;
        }
        memcpy(idkey, ID_KEY_PREFIX, ID_KEY_PREFIX_LEN);
        memcpy(idkey + ID_KEY_PREFIX_LEN, json_string_value(evid), n);
        key = idkey;
        key_len = ID_KEY_PREFIX_LEN + n;
    }
    if (key) {
        /* the same key in flight: wait for it and share its answer */
        for (publish *o = h->keyed; o; o = o->next) {
            if (o->key_len == key_len && !memcmp(o->key, key, key_len) && o->name_len == name.len &&
                !memcmp(o->name, name.ptr, name.len)) {
                json_decref(doc);
                struct waiter *w = calloc(1, sizeof *w);
                if (!w) {
                    send_error(req, 500, "internal", "out of memory");
                    return;
                }
                w->req = req;
                w->next = o->waiters;
                o->waiters = w;
                return;
            }
        }
    }
    if (key && replay_keyed(h, req, name, (evs_slice){key, key_len}, array)) {
        json_decref(doc);
        return;
    }
    const server_config *cfg = server_cfg(h->srv);
    if (cfg->ack_all && repl_good_followers() < cfg->min_replicas) { /* before appending */
        json_decref(doc);
        send_error(req, 503, "noreplicas", "Not enough good replicas to write.");
        return;
    }
    size_t n = array ? json_array_size(doc) : 1;
    if (n == 0 || n > MAX_LIMIT) {
        json_decref(doc);
        send_error(req, 400, "bad_request", "an array of events must hold 1 to %d events", MAX_LIMIT);
        return;
    }
    evs_append *apps = calloc(n, sizeof *apps);
    evs_field *fields = calloc(n * 64, sizeof *fields);
    char **keep = calloc(n, sizeof *keep);
    publish *p = calloc(1, sizeof *p);
    evs_id *ids = calloc(n, sizeof *ids);
    size_t nkeep = 0;
    const char *why = NULL;
    if (!apps || !fields || !keep || !p || !ids)
        why = "out of memory";
    for (size_t i = 0; i < n && !why; i++) {
        size_t nf = 0;
        why = event_fields(array ? json_array_get(doc, i) : doc, fields + 64 * i, 64, &nf, keep,
                           &nkeep);
        apps[i] = (evs_append){name, EVS_ID_AUTO, {0, 0}, fields + 64 * i, nf, false};
    }
    int rc = 0;
    evs_error err = {0};
    if (!why) {
        p->h = h;
        p->req = req;
        p->n = n;
        p->array = array;
        p->ids = ids;
        if (key) {
            p->key = malloc(key_len);
            p->name = malloc(name.len ? name.len : 1);
            if (!p->key || !p->name) {
                rc = -ENOMEM;
            } else {
                memcpy(p->key, key, key_len);
                memcpy(p->name, name.ptr, name.len);
                p->key_len = key_len;
                p->name_len = name.len;
                rc = evs_submit_keyed(server_store(h->srv), apps, n, (evs_slice){key, key_len},
                                      publish_done, p, &err);
                if (!rc) {
                    p->next = h->keyed;
                    if (h->keyed)
                        h->keyed->pprev = &p->next;
                    p->pprev = &h->keyed;
                    h->keyed = p;
                }
            }
        } else {
            rc = evs_submit(server_store(h->srv), apps, n, publish_done, p, &err); /* copies */
        }
    }
    for (size_t i = 0; i < nkeep; i++)
        free(keep[i]);
    free(keep);
    free(fields);
    free(apps);
    json_decref(doc);
    const char *msg = err.msg[0] ? err.msg : evs_strerror(rc);
    if (why || rc) {
        free(ids);
        if (p) {
            free(p->key);
            free(p->name);
        }
        free(p);
        if ((why && !strcmp(why, "out of memory")) || rc == -ENOMEM)
            send_error(req, 500, "internal", "out of memory");
        else if (why)
            send_error(req, 400, "bad_event", "%s", why);
        else if (rc == EVS_EFAILED || rc == EVS_ECLOSED)
            send_error(req, 503, "store_failed", "%s", msg);
        else if (rc == EVS_ETOOBIG)
            send_error(req, 413, "too_big", "%s", msg);
        else
            send_error(req, 400, "rejected", "%s", msg);
    }
}

/* ---- GET /streams/{name}/events ----------------------------------------------------------- */

static bool query_id(struct evkeyvalq *q, const char *k, evs_id *id, bool *present,
                     struct evhttp_request *req)
{
    const char *v = evhttp_find_header(q, k);
    *present = v != NULL;
    if (!v)
        return true;
    if (evs_id_parse(v, strlen(v), 0, id)) {
        send_error(req, 400, "bad_id", "%s: not an ID <ms>-<seq>: %s", k, v);
        return false;
    }
    return true;
}

/* `limit` of a listing: 1 to MAX_LIMIT, `dflt` when absent; false (and a 400 answered) if
 * it is anything else. */
static bool query_limit(struct evkeyvalq *q, long long dflt, long long *limit,
                        struct evhttp_request *req)
{
    const char *v = evhttp_find_header(q, "limit");
    *limit = dflt;
    if (!v)
        return true;
    char *end;
    errno = 0;
    *limit = strtoll(v, &end, 10);
    if (*end || !*v || errno || *limit < 1 || *limit > MAX_LIMIT) {
        send_error(req, 400, "bad_limit", "limit must be 1 to %d", MAX_LIMIT);
        return false;
    }
    return true;
}

/* The request's query parameters into q (free with evhttp_clear_headers); false (and a 400
 * answered) if the query string is malformed. */
static bool parse_query(struct evhttp_request *req, struct evkeyvalq *q)
{
    q->tqh_first = NULL; /* TAILQ_INIT, without <sys/queue.h> */
    q->tqh_last = &q->tqh_first;
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    if (query && evhttp_parse_query_str(query, q)) {
        send_error(req, 400, "bad_query", "malformed query string");
        return false;
    }
    return true;
}

static void do_list(http_api *h, struct evhttp_request *req, evs_slice name)
{
    struct evkeyvalq q;
    if (!parse_query(req, &q))
        return;
    evs_query qq;
    evs_query_init(&qq);
    bool has_after, has_before;
    evs_id after, before;
    if (!query_id(&q, "after", &after, &has_after, req) ||
        !query_id(&q, "before", &before, &has_before, req))
        goto out;
    if (has_after) {
        qq.start = after;
        qq.start_exclusive = true;
    }
    if (has_before) {
        qq.end = before;
        qq.end_exclusive = true;
    }
    long long limit;
    if (!query_limit(&q, DEFAULT_LIMIT, &limit, req))
        goto out;
    const char *v = evhttp_find_header(&q, "reverse");
    qq.reverse = v && (!strcmp(v, "1") || !strcmp(v, "true"));
    if ((v = evhttp_find_header(&q, "source")))
        qq.source = (evs_slice){v, strlen(v)};
    if ((v = evhttp_find_header(&q, "type")))
        qq.type = (evs_slice){v, strlen(v)};
    qq.limit = (uint64_t)limit + 1; /* one more, to know whether there is a next page */
    evs_iter *it;
    evs_error err;
    int rc = evs_iter_open(server_store(h->srv), name, &qq, &it, &err);
    if (rc == EVS_ENOTFOUND) {
        send_error(req, 404, "not_found", "no such stream");
        goto out;
    }
    if (rc) {
        send_error(req, 500, "read_failed", "%s", err.msg);
        goto out;
    }
    json_t *events = json_array();
    const evs_entry *e;
    long got = 0;
    evs_id last = EVS_ID_MIN;
    bool more = false;
    /* a page also ends before its entries pass --max-output-bytes (one entry at least):
     * `next` says where the rest begins, as it does after `limit` events */
    uint64_t bytes = 0, budget = server_cfg(h->srv)->max_output_bytes;
    while ((rc = evs_iter_next(it, &e, &err)) == 1) {
        uint64_t size = evs_entry_bytes(e);
        if (got == limit || (got && bytes + size > budget)) {
            more = true;
            break;
        }
        json_array_append_new(events, event_json(e));
        last = e->id;
        bytes += size;
        got++;
    }
    evs_iter_close(it);
    if (rc < 0) {
        json_decref(events);
        send_error(req, 500, "corrupt", "%s", err.msg);
        goto out;
    }
    send_json(req, 200, "OK",
              json_pack("{s:o, s:o}", "events", events, "next", more ? json_id(last) : json_null()));
out:
    evhttp_clear_headers(&q);
}

/* ---- GET /streams/{name}/events/live (Server-Sent Events) --------------------------------- */

static void sse_free(sse *x)
{
    if (x->pprev) {
        *x->pprev = x->next;
        if (x->next)
            x->next->pprev = x->pprev;
        x->h->nsubs--;
    }
    if (x->beat)
        event_free(x->beat);
    if (x->more)
        event_free(x->more);
    free(x->name);
    free(x);
}

/*
 * libevent is closing the connection. If the client went away, libevent 2.1 has detached our
 * unfinished request from it and leaves it to us: finishing a request without a connection
 * frees it. At shutdown (evhttp_free) the request is still attached and libevent frees it.
 */
static void sse_closed(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    sse *x = arg;
    if (!evhttp_request_get_connection(x->req))
        evhttp_send_reply_end(x->req);
    sse_free(x);
}

static bool sse_pump_memo(sse *x, sse_memo *m);

/* Send what is new since x->last; false if the subscriber was dropped. */
static bool sse_pump(sse *x) { return sse_pump_memo(x, NULL); }

/* The same, given what an earlier tail of this wake's pass was sent (m, NULL: none), and
 * keeping what this one is sent in m for the next. */
static bool sse_pump_memo(sse *x, sse_memo *m)
{
    const server_config *cfg = server_cfg(x->h->srv);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(x->evcon);
    if (bev && evbuffer_get_length(bufferevent_get_output(bev)) > cfg->max_output_bytes) {
        /* a reader this slow would hold memory without bound: drop it (closecb frees x) */
        evhttp_connection_free(x->evcon);
        return false;
    }
    if (m && m->set && m->name_len == x->name_len && !memcmp(m->name, x->name, x->name_len) &&
        !evs_id_cmp(m->from, x->last)) {
        if (m->len) {
            struct evbuffer *b = evbuffer_new();
            if (b && evbuffer_add(b, m->text, m->len) == 0) {
                evhttp_send_reply_chunk(x->req, b);
                x->last = m->to;
            }
            if (b)
                evbuffer_free(b);
        }
        if (m->n == SSE_BATCH) {
            struct timeval now = {0, 0};
            event_add(x->more, &now);
        }
        return true;
    }
    evs_query q;
    evs_query_init(&q);
    q.start = x->last;
    q.start_exclusive = true;
    q.limit = SSE_BATCH;
    evs_iter *it;
    evs_error err;
    if (evs_iter_open(server_store(x->h->srv), (evs_slice){x->name, x->name_len}, &q, &it, &err))
        return true; /* no such stream yet: wait for it */
    struct evbuffer *b = evbuffer_new();
    const evs_entry *e;
    size_t n = 0;
    int rc;
    evs_id from = x->last;
    while (b && (rc = evs_iter_next(it, &e, &err)) == 1) {
        json_t *j = event_json(e);
        char *text = json_dumps(j, JSON_COMPACT);
        char id[EVS_ID_STRLEN];
        evs_id_format(e->id, id);
        if (text)
            evbuffer_add_printf(b, "id: %s\ndata: %s\n\n", id, text);
        free(text);
        json_decref(j);
        x->last = e->id;
        n++;
    }
    evs_iter_close(it);
    if (m && b && x->name_len <= sizeof m->name) { /* for the tails after it */
        size_t len = evbuffer_get_length(b);
        m->set = false;
        if (len > m->cap) {
            char *t = realloc(m->text, len);
            if (t) {
                m->text = t;
                m->cap = len;
            }
        }
        if (len <= m->cap && evbuffer_copyout(b, m->text, len) == (ev_ssize_t)len) {
            m->set = true;
            memcpy(m->name, x->name, x->name_len);
            m->name_len = x->name_len;
            m->from = from;
            m->to = x->last;
            m->n = n;
            m->len = len;
        }
    }
    if (b && evbuffer_get_length(b))
        evhttp_send_reply_chunk(x->req, b);
    if (b)
        evbuffer_free(b);
    if (n == SSE_BATCH) {
        struct timeval now = {0, 0};
        event_add(x->more, &now); /* the rest on the next loop turn, other clients first */
    }
    return true;
}

static void sse_more(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sse_pump(arg);
}

static void sse_beat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sse *x = arg;
    struct evbuffer *b = evbuffer_new();
    if (b) {
        evbuffer_add_printf(b, ": keep-alive\n\n");
        evhttp_send_reply_chunk(x->req, b);
        evbuffer_free(b);
    }
}

void http_on_visible(http_api *h, const wake_set *ws)
{
    if (!h)
        return;
    h->memo.set = false; /* what the last pass sent may not be all there is now */
    sse *x = h->subs;
    while (x) {
        sse *next = x->next; /* x may be dropped */
        if (wake_may(ws, x->hash)) /* its stream may have changed (K1) */
            sse_pump_memo(x, &h->memo);
        x = next;
    }
    http_groups_on_visible(h, ws);
}

static void do_live(http_api *h, struct evhttp_request *req, evs_slice name)
{
    int max = server_cfg(h->srv)->max_tails;
    if (h->nsubs >= (size_t)max) {
        send_error(req, 503, "too_many_subscribers", "at most %d live tails at once "
                   "(--max-tails)", max);
        return;
    }
    struct evkeyvalq q;
    if (!parse_query(req, &q))
        return;
    /* resume after Last-Event-ID (a reconnecting browser), else ?after=, else from now */
    const char *from = evhttp_find_header(evhttp_request_get_input_headers(req), "Last-Event-ID");
    if (!from)
        from = evhttp_find_header(&q, "after");
    evs_id start = EVS_ID_MIN;
    if (from && evs_id_parse(from, strlen(from), 0, &start)) {
        send_error(req, 400, "bad_id", "not an ID <ms>-<seq>: %s", from);
        evhttp_clear_headers(&q);
        return;
    }
    evhttp_clear_headers(&q);
    if (!from) {
        evs_stream_info info;
        if (evs_stream_info_get(server_store(h->srv), name, &info) == 0)
            start = info.last_id;
    }
    sse *x = calloc(1, sizeof *x);
    if (x)
        x->name = malloc(name.len);
    if (!x || !x->name) {
        if (x)
            free(x);
        send_error(req, 500, "internal", "out of memory");
        return;
    }
    memcpy(x->name, name.ptr, name.len);
    x->name_len = name.len;
    x->hash = wake_hash(name.ptr, name.len);
    x->h = h;
    x->req = req;
    x->evcon = evhttp_request_get_connection(req);
    x->last = start;
    x->beat = event_new(server_base(h->srv), -1, EV_PERSIST, sse_beat, x);
    x->more = evtimer_new(server_base(h->srv), sse_more, x);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Content-Type", "text/event-stream");
    evhttp_add_header(out, "Cache-Control", "no-cache");
    evhttp_add_header(out, "X-Accel-Buffering", "no");
    evhttp_send_reply_start(req, 200, "OK");
    http_clients_on_close(&h->clients, x->evcon, sse_closed, x);
    x->next = h->subs;
    if (h->subs)
        h->subs->pprev = &x->next;
    x->pprev = &h->subs;
    h->subs = x;
    h->nsubs++;
    struct timeval tv = {SSE_HEARTBEAT_S, 0};
    if (x->beat)
        event_add(x->beat, &tv);
    sse_beat(-1, 0, x); /* an immediate comment: headers and the stream start now */
    sse_pump(x);
}

/* ---- streams ------------------------------------------------------------------------------ */

static json_t *info_json(evs_slice name, const evs_stream_info *i)
{
    return json_pack("{s:o, s:I, s:I, s:o, s:o, s:o, s:I, s:I}", "name", json_bytes(name.ptr, name.len),
                     "length", (json_int_t)i->length, "entries_added", (json_int_t)i->entries_added,
                     "first_id", json_id(i->first_id), "last_id", json_id(i->last_id),
                     "max_deleted_id", json_id(i->max_deleted_id), "last_append_ms",
                     (json_int_t)(i->last_time_us / 1000), "created_ms",
                     (json_int_t)(i->created_us / 1000));
}

static int list_one(void *arg, evs_slice name, const evs_stream_info *info)
{
    json_array_append_new(arg, info_json(name, info));
    return 0;
}

/* GET /streams: one page of streams in creation order (the store's stream numbers: a walk in
 * steps, evs_stream_scan), so a store of a million streams is listed a page at a time and no
 * request holds the event loop for longer than a page takes. */
static void do_streams(http_api *h, struct evhttp_request *req)
{
    struct evkeyvalq q;
    if (!parse_query(req, &q))
        return;
    long long limit;
    unsigned long long cursor = 0;
    if (!query_limit(&q, DEFAULT_STREAMS_LIMIT, &limit, req))
        goto out;
    const char *v;
    char *end;
    if ((v = evhttp_find_header(&q, "cursor"))) {
        errno = 0;
        cursor = strtoull(v, &end, 10);
        if (*end || !*v || *v == '-' || errno) {
            send_error(req, 400, "bad_cursor", "cursor must be a `next` value of an earlier page");
            goto out;
        }
    }
    json_t *a = json_array();
    uint64_t next = 0;
    if (evs_stream_scan(server_store(h->srv), cursor, (size_t)limit, list_one, a, &next)) {
        json_decref(a);
        send_error(req, 500, "out_of_memory", "out of memory");
        goto out;
    }
    char nb[24];
    snprintf(nb, sizeof nb, "%" PRIu64, next);
    send_json(req, 200, "OK", json_pack("{s:o, s:o}", "streams", a, "next",
                                        next ? json_string(nb) : json_null()));
out:
    evhttp_clear_headers(&q);
}

static void do_stream(http_api *h, struct evhttp_request *req, evs_slice name, bool del)
{
    evs_stream_info info;
    if (evs_stream_info_get(server_store(h->srv), name, &info)) {
        send_error(req, 404, "not_found", "no such stream");
        return;
    }
    if (!del) {
        send_json(req, 200, "OK", info_json(name, &info));
        return;
    }
    bool existed;
    evs_error err;
    if (evs_stream_drop(server_store(h->srv), name, &existed, &err))
        send_error(req, 503, "store_failed", "%s", err.msg);
    else
        send_json(req, 200, "OK", json_pack("{s:b}", "deleted", existed));
}

/* ---- metrics and health ------------------------------------------------------------------- */

/* A Prometheus label value: backslash, quote and newline escaped, other bytes as \\xNN. */
static void label_value(struct evbuffer *b, const void *ptr, size_t len)
{
    const unsigned char *p = ptr;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\\' || p[i] == '"')
            evbuffer_add_printf(b, "\\%c", p[i]);
        else if (p[i] == '\n')
            evbuffer_add_printf(b, "\\n");
        else if (p[i] < 0x20 || p[i] >= 0x7f)
            evbuffer_add_printf(b, "\\\\x%02x", p[i]);
        else
            evbuffer_add(b, p + i, 1);
    }
}

struct metric_walk {
    struct evbuffer *b, *groups[3]; /* stream lines; one buffer per group metric family      */
    evs_store *st;
    evs_slice stream;
    json_t *names;                  /* the streams listed                                    */
};

static int metric_group(void *arg, const evs_group_info *g)
{
    struct metric_walk *w = arg;
    static const char *const names[] = {"pending", "lag", "dead_letters_total"};
    int64_t v[3] = {(int64_t)g->pending, g->lag, (int64_t)g->dead_letters};
    for (int i = 0; i < 3; i++) {
        if (i == 1 && !g->lag_known)
            continue;
        struct evbuffer *o = w->groups[i];
        evbuffer_add_printf(o, "evstore_group_%s{stream=\"", names[i]);
        label_value(o, w->stream.ptr, w->stream.len);
        evbuffer_add_printf(o, "\",group=\"");
        label_value(o, g->name.ptr, g->name.len);
        evbuffer_add_printf(o, "\"} %" PRId64 "\n", v[i]);
    }
    return 0;
}

/* A stream's length line; its name kept for the group walk that follows (outside the stream
 * walk, which holds the store lock). */
static int metric_stream(void *arg, evs_slice name, const evs_stream_info *info)
{
    struct metric_walk *w = arg;
    evbuffer_add_printf(w->b, "evstore_stream_length{stream=\"");
    label_value(w->b, name.ptr, name.len);
    evbuffer_add_printf(w->b, "\"} %" PRIu64 "\n", info->length);
    json_array_append_new(w->names, json_stringn_nocheck(name.ptr, name.len));
    return 0;
}

/* A Prometheus histogram from per-bucket counts (not cumulative; the last is the overflow). */
static void metric_histogram(struct evbuffer *b, const char *name, const char *help,
                             const uint64_t *bounds, double scale, const uint64_t *counts,
                             size_t nbuckets, double sum)
{
    evbuffer_add_printf(b, "# HELP evstore_%s %s\n# TYPE evstore_%s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i < nbuckets; i++) {
        cum += counts[i];
        if (i + 1 < nbuckets)
            evbuffer_add_printf(b, "evstore_%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
                                (double)bounds[i] * scale, cum);
        else
            evbuffer_add_printf(b, "evstore_%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
    }
    evbuffer_add_printf(b, "evstore_%s_sum %.6f\nevstore_%s_count %" PRIu64 "\n", name, sum, name,
                        cum);
}

static void do_metrics(http_api *h, struct evhttp_request *req)
{
    evs_store_stats s;
    evs_store_stats_get(server_store(h->srv), &s);
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        send_error(req, 500, "internal", "out of memory");
        return;
    }
#define METRIC(name, type, help, fmt, val)                                                       \
    evbuffer_add_printf(b, "# HELP evstore_" name " " help "\n# TYPE evstore_" name " " type       \
                           "\nevstore_" name " " fmt "\n",                                         \
                        val)
    METRIC("appends_total", "counter", "Entries appended since start.", "%" PRIu64, s.appends);
    METRIC("batches_total", "counter", "Group commits since start.", "%" PRIu64, s.batches);
    static const uint64_t fsync_bounds[] = EVS_FSYNC_BOUNDS_US, batch_bounds[] = EVS_BATCH_BOUNDS;
    metric_histogram(b, "fsync_seconds", "fdatasync latency of the log since start.", fsync_bounds,
                     1e-6, s.fsync_hist, EVS_FSYNC_BUCKETS, (double)s.fsync_ns_total / 1e9);
    metric_histogram(b, "batch_records", "Records per group commit since start.", batch_bounds, 1,
                     s.batch_hist, EVS_BATCH_BUCKETS, (double)s.batch_records_total);
    METRIC("fsync_max_seconds", "gauge", "Longest fdatasync since start.", "%.6f",
           (double)s.fsync_ns_max / 1e9);
    METRIC("batch_max_records", "gauge", "Largest group commit since start (records).", "%" PRIu64,
           s.batch_max);
    METRIC("log_bytes", "gauge", "Bytes of records in all segments.", "%" PRIu64, s.log_bytes);
    METRIC("segments", "gauge", "Segment files.", "%" PRIu64, s.segments);
    METRIC("set_aside_bytes", "gauge",
           "Bytes cut from the log and kept in log/*.torn and *.diverged files (as of start).",
           "%" PRIu64, s.set_aside_bytes);
    METRIC("retention_trimmed_total", "counter", "Entries trimmed by retention since start.",
           "%" PRIu64, s.retention_trimmed);
    METRIC("segments_deleted_total", "counter", "Segment files deleted by retention since start.",
           "%" PRIu64, s.segments_deleted);
    METRIC("deleted_bytes_total", "counter", "Bytes freed by retention since start.", "%" PRIu64,
           s.bytes_deleted);
    METRIC("relocated_streams_total", "counter",
           "Small streams retention copied to the log's head so that old segments could go.",
           "%" PRIu64, s.streams_relocated);
    METRIC("relocated_bytes_total", "counter", "Bytes those relocations copied.", "%" PRIu64,
           s.bytes_relocated);
    METRIC("streams", "gauge", "Streams.", "%" PRIu64, s.streams);
    METRIC("streams_dropped_held", "gauge",
           "Dropped streams whose memory is not freed yet (held by a read, listing or held batch, "
           "or until the index commit after the drop).",
           "%" PRIu64, s.streams_dropped_held);
    METRIC("clients", "gauge", "Connected RESP clients.", "%d", server_nconns(h->srv));
    METRIC("http_clients", "gauge",
           "HTTP connections that sent a request, open (counted toward --max-clients).", "%zu",
           http_clients_count(&h->clients));
    METRIC("store_failed", "gauge", "1 once a write or fsync failed (appends refused).", "%d",
           evs_failed(server_store(h->srv), NULL) ? 1 : 0);
#undef METRIC
    evbuffer_add_printf(b, "# HELP evstore_stream_length Live entries per stream.\n"
                           "# TYPE evstore_stream_length gauge\n");
    /* per-stream series for the first --metrics-max-streams streams only: a store of a million
     * streams neither holds the event loop for the walk nor floods the scraper with series */
    struct metric_walk w = {b, {evbuffer_new(), evbuffer_new(), evbuffer_new()},
                            server_store(h->srv), {NULL, 0}, json_array()};
    uint64_t max = server_cfg(h->srv)->metrics_max_streams, next = 0;
    if (max)
        evs_stream_scan(w.st, 0, (size_t)max, metric_stream, &w, &next);
    json_t *names = w.names;
    size_t listed = json_array_size(names);
    evbuffer_add_printf(b, "# HELP evstore_stream_series_omitted Streams past "
                           "--metrics-max-streams, without per-stream series.\n"
                           "# TYPE evstore_stream_series_omitted gauge\n"
                           "evstore_stream_series_omitted %" PRIu64 "\n",
                        (next || !max) && s.streams > listed ? s.streams - listed : 0);
    size_t i;
    json_t *n;
    json_array_foreach(names, i, n) {
        w.stream = (evs_slice){json_string_value(n), json_string_length(n)};
        if (w.groups[0] && w.groups[1] && w.groups[2])
            evs_group_list(w.st, w.stream, 0, metric_group, &w);
    }
    json_decref(names);
    static const char *const heads[3] = {
        "# HELP evstore_group_pending Pending entries per consumer group.\n"
        "# TYPE evstore_group_pending gauge\n",
        "# HELP evstore_group_lag Entries not yet delivered to the group.\n"
        "# TYPE evstore_group_lag gauge\n",
        "# HELP evstore_group_dead_letters_total Entries the group moved to its dead-letter "
        "stream.\n# TYPE evstore_group_dead_letters_total counter\n"};
    for (int k = 0; k < 3; k++) {
        if (!w.groups[k])
            continue;
        evbuffer_add_printf(b, "%s", heads[k]);
        evbuffer_add_buffer(b, w.groups[k]);
        evbuffer_free(w.groups[k]);
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

/* ---- GET/PUT /streams/{name}/retention ---------------------------------------------------- */

static json_t *own_json(uint64_t v)
{
    return v == 0 ? json_null() : v == EVS_RET_NONE ? json_string("none") : json_integer((json_int_t)v);
}

static json_t *retention_json(const evs_retention *own, const evs_retention *eff)
{
    return json_pack("{s:{s:o, s:o, s:o}, s:{s:o, s:o, s:o}}", "own", "max_age_ms",
                     own_json(own->max_age_ms), "max_bytes", own_json(own->max_bytes),
                     "max_entries", own_json(own->max_entries), "effective", "max_age_ms",
                     eff->max_age_ms ? json_integer((json_int_t)eff->max_age_ms) : json_null(),
                     "max_bytes", eff->max_bytes ? json_integer((json_int_t)eff->max_bytes) : json_null(),
                     "max_entries",
                     eff->max_entries ? json_integer((json_int_t)eff->max_entries) : json_null());
}

/* One member of a PUT: absent keeps, null inherits, "none" lifts the limit, a positive integer
 * or (durations, sizes) a string like "7d" / "64m" sets it. */
static bool limit_member(json_t *doc, const char *key,
                         int (*parse)(const char *, size_t, uint64_t *), uint64_t *v)
{
    json_t *m = json_object_get(doc, key);
    if (!m)
        return true;
    if (json_is_null(m)) {
        *v = 0;
        return true;
    }
    if (json_is_string(m) && !strcmp(json_string_value(m), "none")) {
        *v = EVS_RET_NONE;
        return true;
    }
    if (json_is_integer(m) && json_integer_value(m) > 0) {
        *v = (uint64_t)json_integer_value(m);
        return true;
    }
    return json_is_string(m) && parse &&
           parse(json_string_value(m), json_string_length(m), v) == 0 && *v > 0 && *v != EVS_RET_NONE;
}

static void do_retention(http_api *h, struct evhttp_request *req, evs_slice name, bool put)
{
    evs_store *st = server_store(h->srv);
    evs_retention own, eff;
    if (evs_retention_get(st, name, &own, &eff)) {
        send_error(req, 404, "not_found", "no such stream");
        return;
    }
    if (put) {
        size_t len;
        char *body = body_of(req, &len);
        json_error_t jerr;
        json_t *doc = body ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
        free(body);
        if (!json_is_object(doc)) {
            json_decref(doc);
            send_error(req, 400, "bad_json", "the body must be a JSON object");
            return;
        }
        bool ok = limit_member(doc, "max_age", evs_parse_duration_ms, &own.max_age_ms) &&
                  limit_member(doc, "max_bytes", evs_parse_size, &own.max_bytes) &&
                  limit_member(doc, "max_entries", NULL, &own.max_entries);
        json_decref(doc);
        if (!ok) {
            send_error(req, 400, "bad_retention",
                       "limits are positive integers, durations (\"7d\") or sizes (\"64m\"), "
                       "\"none\" or null (the server default)");
            return;
        }
        evs_error err;
        int rc = evs_retention_set(st, name, &own, &err);
        if (rc) {
            send_error(req, rc == EVS_ENOTFOUND ? 404 : 503, rc == EVS_ENOTFOUND ? "not_found"
                                                                                : "store_failed",
                       "%s", err.msg);
            return;
        }
        evs_retention_get(st, name, &own, &eff);
    }
    send_json(req, 200, "OK", retention_json(&own, &eff));
}

/* ---- routing ------------------------------------------------------------------------------ */

static void method_not_allowed(struct evhttp_request *req, const char *allow)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    send_error(req, 405, "method_not_allowed", "method not allowed here (allowed: %s)", allow);
}

static void route(struct evhttp_request *req, void *arg)
{
    http_api *h = arg;
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    const char *raw = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!raw)
        raw = "/";
    if (!http_clients_admit(&h->clients, server_cfg(h->srv)->max_clients,
                            server_nconns(h->srv), req))
        return; /* over --max-clients */
    if (!http_cors_admit(server_cfg(h->srv), req))
        return; /* refused, or a preflight */
    bool head = m == EVHTTP_REQ_HEAD;
    if (head)
        m = EVHTTP_REQ_GET; /* answered as GET, without the body (evhttp drops it) */
    if (!strcmp(raw, "/healthz")) {
        send_json(req, 200, "OK", json_pack("{s:s}", "status", "ok"));
        return;
    }
    if (!strcmp(raw, "/readyz")) {
        evs_error err;
        if (evs_failed(server_store(h->srv), &err))
            send_error(req, 503, "store_failed", "%s", err.msg);
        else
            send_json(req, 200, "OK", json_pack("{s:s}", "status", "ready"));
        return;
    }
    if (!authorized(h, req, raw, m)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
        send_error(req, 401, "unauthorized", "missing or wrong bearer token");
        return;
    }
    if (server_is_follower(h->srv) &&
        (m == EVHTTP_REQ_POST || m == EVHTTP_REQ_PUT || m == EVHTTP_REQ_DELETE)) {
        send_error(req, 403, "readonly", "You can't write against a read only replica.");
        return;
    }
    if (!strcmp(raw, "/metrics")) {
        if (m != EVHTTP_REQ_GET)
            method_not_allowed(req, "GET");
        else
            do_metrics(h, req);
        return;
    }
    if (!strcmp(raw, "/streams") || !strcmp(raw, "/streams/")) {
        if (m != EVHTTP_REQ_GET)
            method_not_allowed(req, "GET");
        else
            do_streams(h, req);
        return;
    }
    if (strncmp(raw, "/streams/", 9) != 0) {
        send_error(req, 404, "not_found", "no such route");
        return;
    }
    /* /streams/{name}[/events]: the name is percent-decoded, binary-safe */
    const char *rest = raw + 9;
    const char *slash = strchr(rest, '/');
    size_t enc_len = slash ? (size_t)(slash - rest) : strlen(rest);
    const char *tail = slash ? slash : "";
    char *enc = strndup(rest, enc_len);
    size_t name_len = 0;
    char *name = enc ? evhttp_uridecode(enc, 0, &name_len) : NULL;
    free(enc);
    if (!name || name_len == 0) {
        free(name);
        send_error(req, 400, "bad_name", "a stream name is needed after /streams/");
        return;
    }
    evs_slice s = {name, name_len};
    if (!strcmp(tail, "/events/live")) {
        if (head) { /* the headers a tail would start with; no tail */
            evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                              "text/event-stream");
            evhttp_send_reply(req, 200, "OK", NULL);
        } else if (m == EVHTTP_REQ_GET) {
            do_live(h, req, s);
        } else {
            method_not_allowed(req, "GET");
        }
    } else if (!strcmp(tail, "/retention")) {
        if (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_PUT)
            do_retention(h, req, s, m == EVHTTP_REQ_PUT);
        else
            method_not_allowed(req, "GET, PUT");
    } else if (!strncmp(tail, "/groups", 7)) {
        http_groups_route(h, req, s, tail + 7);
    } else if (!strcmp(tail, "/events")) {
        if (m == EVHTTP_REQ_POST)
            do_publish(h, req, s);
        else if (m == EVHTTP_REQ_GET)
            do_list(h, req, s);
        else
            method_not_allowed(req, "GET, POST");
    } else if (!*tail) {
        if (m == EVHTTP_REQ_GET)
            do_stream(h, req, s, false);
        else if (m == EVHTTP_REQ_DELETE)
            do_stream(h, req, s, true);
        else
            method_not_allowed(req, "GET, DELETE");
    } else {
        send_error(req, 404, "not_found", "no such route");
    }
    free(name);
}

/* Each accepted connection's bufferevent, made as evhttp makes it by default (no fd yet, no
 * options: evhttp closes the socket itself); first, fdlimit.c F2. */
static struct bufferevent *new_connection(struct event_base *base, void *arg)
{
    http_api *h = arg;
    fdlimit_http_accepting(h->guard);
    return bufferevent_socket_new(base, -1, 0);
}

int http_start(server *srv, http_api **out)
{
    const server_config *cfg = server_cfg(srv);
    http_api *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->srv = srv;
    h->http = evhttp_new(server_base(srv));
    if (!h->http) {
        free(h);
        return -ENOMEM;
    }
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
    evhttp_set_max_body_size(h->http, (ev_ssize_t)cfg->max_request_bytes);
    evhttp_set_max_headers_size(h->http, 64 * 1024);
    evhttp_set_timeout(h->http, 60);
    evhttp_set_gencb(h->http, route, h);
    evhttp_set_bevcb(h->http, new_connection, h);
    h->sock = evhttp_bind_socket_with_handle(h->http, cfg->bind, (ev_uint16_t)cfg->http_port);
    if (!h->sock) {
        int e = errno;
        evhttp_free(h->http);
        free(h);
        return -(e ? e : EADDRINUSE);
    }
    h->guard = fdlimit_guard(srv, evhttp_bound_socket_get_listener(h->sock), "HTTP");
    *out = h;
    return 0;
}

bool http_on_close(http_api *h, struct evhttp_request *req, http_close_fn fn, void *arg)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon)
        http_clients_on_close(&h->clients, evcon, fn, arg);
    return evcon != NULL;
}

size_t http_clients(const http_api *h) { return h ? http_clients_count(&h->clients) : 0; }

void http_quiesce(http_api *h)
{
    http_groups_quiesce();
    if (h && h->sock) {
        fdlimit_unguard(h->guard);
        h->guard = NULL;
        evhttp_del_accept_socket(h->http, h->sock);
        h->sock = NULL;
    }
}

void http_stop(http_api *h)
{
    if (!h)
        return;
    http_quiesce(h);
    evhttp_free(h->http); /* closes every connection: H1's entries go */
    http_clients_free(&h->clients);
    free(h->memo.text);
    free(h);
}
