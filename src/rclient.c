/*
 * rclient.c — see rclient.h. Replies are parsed from an input buffer that keeps the bytes of
 * the last reply until the next read, so a reply's strings stay valid that long.
 */
#include "rclient.h"

#include "hostport.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

int rclient_send(rclient *c, size_t argc, const char *const *argv, const size_t *lens)
{
    /* one send per command: small writes with TCP_NODELAY would each be a packet */
    size_t need = 32;
    for (size_t i = 0; i < argc; i++)
        need += (lens ? lens[i] : strlen(argv[i])) + 32;
    char small[1024];
    char *b = need <= sizeof small ? small : malloc(need);
    if (!b)
        return -1;
    size_t o = (size_t)snprintf(b, need, "*%zu\r\n", argc);
    for (size_t i = 0; i < argc; i++) {
        size_t l = lens ? lens[i] : strlen(argv[i]);
        o += (size_t)snprintf(b + o, need - o, "$%zu\r\n", l);
        memcpy(b + o, argv[i], l);
        o += l;
        memcpy(b + o, "\r\n", 2);
        o += 2;
    }
    int rc = write_all(c->fd, b, o);
    if (b != small)
        free(b);
    return rc;
}

/* Wait until c->fd is ready for `events`, ticking to look at c->cancel; give up after
 * limit_ms (0: no limit). 0 ready, -1 with err filled. */
static int wait_ready(rclient *c, short events, int limit_ms, const char *what, char *err,
                      size_t errcap)
{
    if (!c->cancel && !limit_ms)
        return 0; /* the call itself blocks */
    for (int waited = 0;;) {
        if (rclient_stop_asked(c->cancel)) {
            snprintf(err, errcap, "interrupted (a stop signal) while waiting for %s", what);
            return -1;
        }
        if (limit_ms && waited >= limit_ms) {
            snprintf(err, errcap, "the server sent nothing for %d s", limit_ms / 1000);
            return -1;
        }
        int tick = limit_ms && limit_ms - waited < RCLIENT_TICK_MS ? limit_ms - waited
                                                                    : RCLIENT_TICK_MS;
        struct pollfd p = {.fd = c->fd, .events = events};
        int n = poll(&p, 1, tick);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR) {
            snprintf(err, errcap, "poll: %s", strerror(errno));
            return -1;
        }
        if (!n)
            waited += tick;
    }
}

int rclient_wait_readable(rclient *c, char *err, size_t errcap)
{
    return wait_ready(c, POLLIN, c->idle_ms, "the server's reply", err, errcap);
}

int rclient_read(rclient *c, resp_value **v, char *err, size_t errcap)
{
    /* c->off: where the next reply starts (the previous one's bytes stay valid until now) */
    for (;;) {
        size_t used;
        int rc = c->len > c->off
                     ? resp_reply_parse(c->buf + c->off, c->len - c->off, v, &used, err, errcap)
                     : RESP_PARTIAL;
        if (rc == RESP_CMD) {
            c->off += used;
            return 0;
        }
        if (rc == RESP_ERROR)
            return -1;
        if (c->off && (c->off == c->len || c->cap - c->len < 65536)) {
            /* compact only when room runs out: pipelined large replies are not moved per reply */
            memmove(c->buf, c->buf + c->off, c->len - c->off);
            c->len -= c->off;
            c->off = 0;
        }
        if (c->cap - c->len < 65536) {
            size_t cap = c->cap ? c->cap * 2 : 1 << 17;
            uint8_t *b = realloc(c->buf, cap);
            if (!b) {
                snprintf(err, errcap, "out of memory");
                return -1;
            }
            c->buf = b;
            c->cap = cap;
        }
        if (rclient_wait_readable(c, err, errcap))
            return -1;
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            snprintf(err, errcap, "%s", r == 0 ? "server closed the connection" : strerror(errno));
            return -1;
        }
        c->len += (size_t)r;
    }
}

/* Connect c->fd to a, waiting in ticks when c->cancel is set. 0, or -1 with errno set. */
static int connect_to(rclient *c, const struct addrinfo *a)
{
    if (!c->cancel)
        return connect(c->fd, a->ai_addr, a->ai_addrlen);
    int fl = fcntl(c->fd, F_GETFL);
    if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK))
        return -1;
    if (connect(c->fd, a->ai_addr, a->ai_addrlen) && errno != EINPROGRESS)
        return -1;
    char ignored[8];
    if (wait_ready(c, POLLOUT, 0, "a connection", ignored, sizeof ignored)) {
        errno = EINTR;
        return -1;
    }
    int e = 0;
    socklen_t len = sizeof e;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len) || e) {
        errno = e ? e : errno;
        return -1;
    }
    return fcntl(c->fd, F_SETFL, fl);
}

int rclient_connect(rclient *c, const char *hostport, const char *password,
                    const volatile int *cancel, char *err, size_t errcap)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->cancel = cancel;
    char host[256], service[8];
    int port;
    const char *why;
    if (!hostport_split(hostport, host, sizeof host, &port, &why)) {
        snprintf(err, errcap, "--server must be HOST:PORT (%s), not '%s'", why, hostport);
        return -1;
    }
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int g = getaddrinfo(host, service, &hints, &ai);
    if (g) {
        snprintf(err, errcap, "%s: %s", hostport, gai_strerror(g));
        return -1;
    }
    for (struct addrinfo *a = ai; a && c->fd < 0; a = a->ai_next) {
        c->fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (c->fd >= 0 && connect_to(c, a) < 0) {
            close(c->fd);
            c->fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (c->fd < 0) {
        snprintf(err, errcap, "cannot connect to %s: %s", hostport,
                 rclient_stop_asked(c->cancel) ? "interrupted (a stop signal)" : strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (password) {
        const char *argv[] = {"AUTH", password};
        resp_value *v;
        if (rclient_send(c, 2, argv, NULL) || rclient_read(c, &v, err, errcap)) {
            rclient_close(c);
            return -1;
        }
        if (v->type == RESP_T_ERROR) {
            snprintf(err, errcap, "%.*s", (int)v->len, v->str);
            resp_value_free(v);
            rclient_close(c);
            return -1;
        }
        resp_value_free(v);
    }
    return 0;
}

void rclient_close(rclient *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    c->fd = -1;
    c->buf = NULL;
}
