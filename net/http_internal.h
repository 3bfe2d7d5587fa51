/*
 * http_internal.h — what the HTTP modules share (http.c, http_groups.c). Not for the rest.
 */
#ifndef EVS_HTTP_INTERNAL_H
#define EVS_HTTP_INTERNAL_H

#include <event2/http.h>
#include <jansson.h>

#include "server.h"

/* Send body (its reference is taken) as JSON with this status. */
void send_json(struct evhttp_request *req, int status, const char *reason, json_t *body);
/* {"error": message, "code": code} with this status. */
void send_error(struct evhttp_request *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The request body, NUL-terminated (malloc'd), or NULL. */
char *body_of(struct evhttp_request *req, size_t *len);
server *http_server(http_api *h);
/* http_cors.c: answer here what --http-hosts and --http-cors-origin refuse, and preflights;
 * set the CORS headers of an allowed origin. true: route the request. */
bool http_cors_admit(const server_config *cfg, struct evhttp_request *req);
/* Is `origin` (an Origin header) one of `allowed`'s (--http-cors-origin; case-insensitive, as
 * scheme and host are)? *star: allowed as "*". */
bool http_origin_allowed(const char *allowed, const char *origin, bool *star);
/* Is `host` (a Host header: name or IP literal, maybe ":port") one a loopback client names a
 * loopback server by — localhost, *.localhost, an IP literal — or in `extra` (--http-hosts;
 * "*": any; NULL: none)? */
bool http_host_allowed(const char *extra, const char *host);

/* http_clients.c: HTTP connections counted toward --max-clients (H1-H4). */
typedef void (*http_close_fn)(struct evhttp_connection *evcon, void *arg);
typedef struct http_client http_client;
typedef struct http_client_table {
    http_client *slots; /* by connection; cap a power of two, at most half full */
    size_t cap, n;
} http_client_table;
/* Count req's connection at its first request, unless RESP's resp_clients and the counted
 * ones are at max_clients: then answer 503 "max_clients" (Connection: close) and return
 * false. */
bool http_clients_admit(http_client_table *t, int max_clients, int resp_clients,
                        struct evhttp_request *req);
/* fn(evcon, arg) when the counted evcon closes (a live tail's or a parked group read's: H3),
 * its socket watched for the client hanging up meanwhile (H4); fn NULL clears it. libevent's
 * close callback is the table's. */
void http_clients_on_close(http_client_table *t, struct evhttp_connection *evcon, http_close_fn fn,
                           void *arg);
size_t http_clients_count(const http_client_table *t);
/* The same for req's connection (http.c): fn NULL clears it. false: req has no connection
 * any more (its client is gone), and nothing is set. */
bool http_on_close(http_api *h, struct evhttp_request *req, http_close_fn fn, void *arg);
void http_clients_free(http_client_table *t); /* after evhttp_free: its closes uncount first */

/* http_groups.c: /streams/{stream}/groups[/...]; `rest` follows "/groups". */
void http_groups_route(http_api *h, struct evhttp_request *req, evs_slice stream,
                       const char *rest);
/* A batch became visible: retry parked long-poll group reads. */
/* Retry the parked group reads whose streams may have changed (ws: wake.h). */
void http_groups_on_visible(http_api *h, const wake_set *ws);
/* Stopping: answer every parked long-poll read now. */
void http_groups_quiesce(void);

#endif
