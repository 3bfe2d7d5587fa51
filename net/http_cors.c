/*
 * http_cors.c — which web pages may use the HTTP API through a visitor's browser: the
 * CORS protocol of the Fetch standard (--http-cors-origin), and the Host a request names
 * (--http-hosts, against DNS rebinding).
 *
 * A browser names the page that makes a request in its Origin header, on every cross-origin
 * request and on POSTs. Other clients (curl, the redis and HTTP libraries of other languages,
 * servers) send none.
 *
 * Invariants:
 *   C1 A request whose Origin is not allowed by --http-cors-origin (none is, by default) is
 *      answered 403 origin_not_allowed before it is routed or authenticated: nothing is read,
 *      written or deleted for it. CORS alone only stops a page from *reading* an answer; a
 *      "simple" cross-site POST (a text/plain body, which is parsed as JSON all the same) is
 *      sent by the browser without asking, and a server on 127.0.0.1 would take it from any
 *      web page its user opens.
 *   C2 A request without Origin is routed as before: C1 costs other clients nothing.
 *   C3 An allowed origin's answers (errors included, so that a page can read why) carry
 *      Access-Control-Allow-Origin — the origin itself with Vary: Origin, or "*" when every
 *      origin is allowed — and expose the headers the API sets. Its preflights (OPTIONS with
 *      Access-Control-Request-Method) are answered 204 here, before authentication (a browser
 *      sends no credentials in a preflight), naming the methods and request headers the API
 *      reads. Any other OPTIONS is answered 204 with Allow.
 *   C4 A server listening on a loopback address (the default) answers only requests whose Host
 *      names it as a loopback client does — localhost (or *.localhost), an IP literal — or a
 *      name given in --http-hosts; others get 403 host_not_allowed, before anything else.
 *      DNS rebinding: a page whose own name an attacker re-points at 127.0.0.1 is same-origin
 *      to the browser, so its GETs carry no Origin (C1 cannot see them), but they do carry
 *      its name as Host. A server listening elsewhere is reached by whatever names point at
 *      it: no check, unless --http-hosts lists them.
 */
#include "http_internal.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define METHODS "GET, HEAD, POST, PUT, DELETE"
#define REQUEST_HEADERS "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
#define EXPOSED_HEADERS "Idempotent-Replayed, WWW-Authenticate, Allow"

/* The next item of a comma-separated list at *p (spaces around it dropped): its length, with
 * *item set; 0 at the end. */
static size_t next_item(const char **p, const char **item)
{
    const char *s = *p;
    while (*s == ' ' || *s == ',')
        s++;
    const char *e = s;
    while (*e && *e != ',')
        e++;
    *p = e;
    while (e > s && e[-1] == ' ')
        e--;
    *item = s;
    return (size_t)(e - s);
}

/* Is every byte of it[0, n) printable ASCII, none in `not`? */
static bool printable(const char *it, size_t n, const char *not)
{
    for (const char *c = it; c < it + n; c++)
        if (*c <= ' ' || *c >= 0x7f || strchr(not, *c))
            return false;
    return true;
}

/* An origin as a browser serializes it: scheme "://" host [":" port], no path; or "null" (the
 * origin of sandboxed frames and file: pages, when wanted). */
static bool origin_item(const char *it, size_t n)
{
    if (n == 4 && !strncmp(it, "null", 4))
        return true;
    const char *sep = memmem(it, n, "://", 3);
    return sep && sep != it && sep + 3 != it + n &&
           !memchr(sep + 3, '/', (size_t)(it + n - sep - 3)) && printable(it, n, "");
}

/* A host name: no scheme, no port. */
static bool host_item(const char *it, size_t n) { return printable(it, n, "/:"); }

/* Is `list` items that item_ok takes, separated by commas, or "*" alone? *bad: the first
 * item refused (NULL: the list is empty or mixes "*" with items). */
static bool list_ok(const char *list, bool (*item_ok)(const char *, size_t), const char **bad,
                    size_t *bad_len)
{
    const char *p = list, *it;
    size_t n, items = 0;
    bool star = false;
    while ((n = next_item(&p, &it)) > 0) {
        items++;
        star |= n == 1 && *it == '*';
        if (!(n == 1 && *it == '*') && !item_ok(it, n)) {
            *bad = it;
            *bad_len = n;
            return false;
        }
    }
    *bad = NULL;
    *bad_len = 0;
    return items > 0 && (!star || items == 1);
}

bool http_cors_list_ok(const char *list, const char **bad, size_t *bad_len)
{
    return list_ok(list, origin_item, bad, bad_len);
}

bool http_hosts_list_ok(const char *list, const char **bad, size_t *bad_len)
{
    return list_ok(list, host_item, bad, bad_len);
}

bool http_origin_allowed(const char *allowed, const char *origin, bool *star)
{
    *star = false;
    if (!allowed)
        return false;
    const char *p = allowed, *it;
    size_t n, olen = strlen(origin);
    while ((n = next_item(&p, &it)) > 0) {
        if (n == 1 && *it == '*')
            return *star = true;
        if (n == olen && !strncasecmp(it, origin, n))
            return true;
    }
    return false;
}

bool http_host_allowed(const char *extra, const char *host)
{
    const char *p = extra, *it;
    size_t n, len = strlen(host);
    while (p && (n = next_item(&p, &it)) > 0)
        if (n == 1 && *it == '*')
            return true;
    if (host[0] == '[')
        return true; /* an IPv6 literal: no name an attacker could re-point */
    const char *colon = memchr(host, ':', len);
    if (colon)
        len = (size_t)(colon - host); /* the port goes */
    char name[256];
    if (len == 0 || len >= sizeof name)
        return false;
    memcpy(name, host, len);
    name[len] = 0;
    struct in_addr a;
    if (inet_pton(AF_INET, name, &a) == 1 || !strcasecmp(name, "localhost") ||
        (len > 10 && !strcasecmp(name + len - 10, ".localhost")))
        return true;
    p = extra;
    while (p && (n = next_item(&p, &it)) > 0)
        if (n == len && !strncasecmp(it, name, n))
            return true;
    return false;
}

/* Does cfg's --bind name a loopback address (127.0.0.0/8)? */
static bool loopback_bind(const server_config *cfg)
{
    struct in_addr a;
    return inet_pton(AF_INET, cfg->bind, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

bool http_cors_admit(const server_config *cfg, struct evhttp_request *req)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    const char *host = evhttp_find_header(in, "Host");
    if (host && (loopback_bind(cfg) || cfg->http_hosts) && !http_host_allowed(cfg->http_hosts, host)) {
        send_error(req, 403, "host_not_allowed",
                   "Host %.200s is not a name of this server (it listens on %s): name it in "
                   "--http-hosts", host, cfg->bind);
        return false;
    }
    const char *allowed = cfg->http_cors_origin;
    const char *origin = evhttp_find_header(in, "Origin");
    bool star;
    if (origin && !http_origin_allowed(allowed, origin, &star)) {
        send_error(req, 403, "origin_not_allowed",
                   "requests from web pages of %.200s are not allowed (--http-cors-origin)",
                   origin);
        return false;
    }
    if (origin) {
        evhttp_add_header(out, "Access-Control-Allow-Origin", star ? "*" : origin);
        if (!star)
            evhttp_add_header(out, "Vary", "Origin");
        evhttp_add_header(out, "Access-Control-Expose-Headers", EXPOSED_HEADERS);
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_OPTIONS)
        return true;
    if (origin && evhttp_find_header(in, "Access-Control-Request-Method")) {
        evhttp_add_header(out, "Access-Control-Allow-Methods", METHODS);
        evhttp_add_header(out, "Access-Control-Allow-Headers", REQUEST_HEADERS);
        evhttp_add_header(out, "Access-Control-Max-Age", "600");
    }
    evhttp_add_header(out, "Allow", METHODS ", OPTIONS");
    evhttp_send_reply(req, 204, "No Content", NULL);
    return false;
}
