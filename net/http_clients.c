/*
 * http_clients.c — HTTP connections counted toward --max-clients, as RESP ones are.
 *
 * evhttp accepts HTTP connections itself and libevent 2.1 tells nobody when it frees one but
 * the connection's close callback, which can only be set once the connection has a request.
 * So a connection is counted from its first routed request, and its close callback (ours)
 * uncounts it.
 *
 * Invariants:
 *  H1. A connection is in the table from its first routed request until its close callback
 *      runs, and only then: the table's count is the HTTP clients --max-clients counts.
 *  H2. RESP and HTTP share --max-clients: a connection whose first request finds them at the
 *      limit is answered 503 "max_clients" and closed, uncounted; a RESP accept counts the
 *      HTTP ones (server.c accept_cb). A connection that never sends a request is not
 *      counted: its descriptor is still guarded (fdlimit.c F2) and evhttp's timeout closes it.
 *  H3. libevent keeps one close callback per connection: ours. A live tail's or a parked
 *      group read's handler (one at a time: a connection's next request is read only once
 *      the last one is answered) is kept in the connection's entry and called from ours,
 *      after the entry goes (H1).
 *  H4. While a handler is set, the connection's socket is watched for its client hanging up:
 *      evhttp reads nothing while a request waits for its answer, so it would learn of it
 *      only when the answer is written — a parked group read would first claim entries for a
 *      consumer nobody listens as, a live tail would wait for its next heartbeat. At the end
 *      of the client's stream (or an error) the watch frees the connection, and its close
 *      calls the handler. Bytes from the client (a pipelined request) end the watch instead:
 *      evhttp reads them once the answer is out. The watch goes with the handler, and always
 *      before the socket is closed (libevent calls the close callback first).
 * The loop's thread only.
 */
#include "http_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

typedef struct hup_watch { /* H4 */
    struct evhttp_connection *evcon;
    struct event *ev;
} hup_watch;

struct http_client {
    struct evhttp_connection *evcon; /* NULL: a free slot                          */
    http_close_fn on_close;          /* a live tail's or a parked read's (H3), or NULL */
    void *arg;
    hup_watch *hup;                  /* while on_close is set (H4), if it could be made */
};

/* Slots are found by the connection's address (linear probing, at most half full). */
static size_t slot_of(const http_client_table *t, const struct evhttp_connection *evcon)
{
    uint64_t k = (uint64_t)(uintptr_t)evcon * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(k >> 32) & (t->cap - 1);
    while (t->slots[i].evcon && t->slots[i].evcon != evcon)
        i = (i + 1) & (t->cap - 1);
    return i;
}

static bool grow(http_client_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 64;
    http_client *old = t->slots;
    size_t oldcap = t->cap;
    http_client *s = calloc(cap, sizeof *s);
    if (!s)
        return false;
    t->slots = s;
    t->cap = cap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].evcon)
            t->slots[slot_of(t, old[i].evcon)] = old[i];
    free(old);
    return true;
}

/* Take slot i out, moving later entries of its run back so that every lookup still finds
 * its entry (no tombstones). */
static void remove_at(http_client_table *t, size_t i)
{
    size_t mask = t->cap - 1;
    t->slots[i] = (http_client){0};
    for (size_t j = (i + 1) & mask; t->slots[j].evcon; j = (j + 1) & mask) {
        http_client e = t->slots[j];
        t->slots[j] = (http_client){0};
        t->slots[slot_of(t, e.evcon)] = e;
    }
    t->n--;
}

static void unwatch(http_client *e)
{
    if (e->hup) {
        event_free(e->hup->ev);
        free(e->hup);
        e->hup = NULL;
    }
}

/* H4: the socket is readable while a request waits: the client's end, an error, or bytes. */
static void hup_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    hup_watch *w = arg;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        event_add(w->ev, NULL);
        return;
    }
    if (n > 0)
        return; /* a pipelined request: evhttp reads it after the answer (the watch stays
                   unarmed until its handler is cleared, which frees it) */
    evhttp_connection_free(w->evcon); /* its close (ours) frees w and calls the handler */
}

static void watch(http_client *e)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(e->evcon);
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    hup_watch *w = fd < 0 ? NULL : malloc(sizeof *w);
    if (!w)
        return; /* unwatched: the close is learnt when the answer is written, as before H4 */
    w->evcon = e->evcon;
    w->ev = event_new(evhttp_connection_get_base(e->evcon), fd, EV_READ, hup_cb, w);
    if (!w->ev || event_add(w->ev, NULL)) {
        if (w->ev)
            event_free(w->ev);
        free(w);
        return;
    }
    e->hup = w;
}

/* libevent is closing a counted connection (H1, H3, H4). */
static void closed(struct evhttp_connection *evcon, void *arg)
{
    http_client_table *t = arg;
    size_t i = slot_of(t, evcon);
    if (!t->slots[i].evcon)
        return; /* not counted: cannot be, ours is set only with the entry */
    http_client e = t->slots[i];
    remove_at(t, i);
    unwatch(&e);
    if (e.on_close)
        e.on_close(evcon, e.arg);
}

bool http_clients_admit(http_client_table *t, int max_clients, int resp_clients,
                        struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (!evcon)
        return true; /* the client is gone already: its answer goes nowhere */
    if (t->cap && t->slots[slot_of(t, evcon)].evcon) {
        /* counted at an earlier request; set again all the same, so that an entry a missed
         * close left behind is still uncounted by the connection now at its address */
        evhttp_connection_set_closecb(evcon, closed, t);
        return true;
    }
    if ((int64_t)t->n + resp_clients >= max_clients) { /* H2 */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        send_error(req, 503, "max_clients", "max number of clients reached (--max-clients %d)",
                   max_clients);
        return false;
    }
    if ((t->n + 1) * 2 > t->cap && !grow(t)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        send_error(req, 500, "internal", "out of memory");
        return false;
    }
    t->slots[slot_of(t, evcon)] = (http_client){.evcon = evcon};
    t->n++;
    evhttp_connection_set_closecb(evcon, closed, t);
    return true;
}

void http_clients_on_close(http_client_table *t, struct evhttp_connection *evcon, http_close_fn fn,
                           void *arg)
{
    size_t i = t->cap ? slot_of(t, evcon) : 0;
    if (t->cap && t->slots[i].evcon) {
        http_client *e = &t->slots[i];
        unwatch(e);
        e->on_close = fn;
        e->arg = arg;
        if (fn)
            watch(e);
    } else {
        evhttp_connection_set_closecb(evcon, fn, arg); /* uncounted (cannot be after admit) */
    }
}

size_t http_clients_count(const http_client_table *t) { return t->n; }

void http_clients_free(http_client_table *t)
{
    for (size_t i = 0; i < t->cap; i++)
        unwatch(&t->slots[i]);
    free(t->slots);
    *t = (http_client_table){0};
}
