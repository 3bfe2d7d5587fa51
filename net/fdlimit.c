/*
 * fdlimit.c — the server's file descriptors: the open-files limit raised at start to fit
 * --max-clients, a reserve kept for the store's own files, and listeners that pause instead
 * of spinning when descriptors run short.
 *
 * Why: under `ulimit -n 128`, 200 clients connecting and 150 idle HTTP connections (1) made
 * libevent, with no error callback, log "Error from accept() call: Too many open files" and
 * retry at once: 84 million such lines (4.4 GB) in a few seconds, a core spinning; and (2)
 * left the store no descriptor for its once-a-second index.ckpt, which failed the store for
 * good ("writes refused until restart").
 *
 * Invariants:
 *  F1. Before the store opens (one descriptor per segment: a big log under the usual soft
 *      limit of 1,024 could not open), the soft limit is raised to the hard one (at most
 *      FD_RAISE_MAX). Once it is open, the reserve is FD_RESERVE + two per segment (its file,
 *      and a backup's or a follower's sendfile of it); where the limit cannot hold
 *      --max-clients + --max-tails + the reserve, --max-clients is lowered to the limit less
 *      the reserve, and the log says so (Redis does the same at start).
 *  F2. Clients never take the reserve. Descriptors are handed out lowest first, so one
 *      numbered at or above limit − reserve means the clients are into it: a RESP connection
 *      so numbered is refused as over --max-clients (fdlimit_room, on the accepted socket);
 *      an HTTP connection (evhttp accepts them itself) is served, but its listener pauses
 *      until a probe finds room again (fdlimit_http_accepting). So HTTP can overrun the
 *      budget by one connection per loop turn's accepts, never by the reserve. (HTTP
 *      connections count toward --max-clients from their first request: http_clients.c.)
 *  F3. A listener whose accept() fails (EMFILE, ENFILE, ENOMEM...) pauses for PAUSE_MS, then
 *      listens again once there is room; the connections wait in the kernel's backlog. One
 *      log line per minute at most per listener says how many pauses there were.
 */
#include "fdlimit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#define FD_RESERVE 64 /* the store's own files (the soak: 16-27 in all), index, log, links */
#define FD_RAISE_MAX (1u << 20)
#define PAUSE_MS 100
#define LOG_EVERY_S 60

static uint64_t fd_ceiling = UINT64_MAX; /* limit − reserve: clients stay below it (F2) */
static int probe_fd = -1; /* /dev/null, duplicated to find the lowest free descriptor */

void fdlimit_raise(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur == RLIM_INFINITY)
        return;
    rlim_t to = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > FD_RAISE_MAX ? FD_RAISE_MAX
                                                                            : rl.rlim_max;
    if (rl.rlim_cur < to) {
        rl.rlim_cur = to;
        setrlimit(RLIMIT_NOFILE, &rl); /* a failure leaves the limit as it was: F1 copes */
    }
}

void fdlimit_fit(server *s)
{
    server_config *cfg = server_cfg_mut(s);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur == RLIM_INFINITY)
        return;
    evs_store_stats st;
    evs_store_stats_get(server_store(s), &st);
    uint64_t reserve = FD_RESERVE + 2 * st.segments;
    uint64_t want = (uint64_t)cfg->max_clients + (uint64_t)cfg->max_tails + reserve;
    if (probe_fd < 0) /* (stderr may be closed: never rely on it) */
        probe_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    fd_ceiling = rl.rlim_cur > reserve + 1 ? rl.rlim_cur - reserve : 1;
    if (fd_ceiling >= (uint64_t)cfg->max_clients)
        return;
    server_log(s, EVS_LOG_WARN, "the open-files limit is %llu (ulimit -n; hard limit %llu), "
               "%llu short of what --max-clients %d needs: --max-clients lowered to %llu; raise "
               "the limit for more", (unsigned long long)rl.rlim_cur,
               (unsigned long long)rl.rlim_max, (unsigned long long)(want - rl.rlim_cur),
               cfg->max_clients, (unsigned long long)fd_ceiling);
    cfg->max_clients = (int)fd_ceiling;
}

bool fdlimit_room(int fd)
{
    if (fd < 0) { /* probe: the lowest free descriptor */
        if (probe_fd < 0)
            return true; /* nothing to probe with (no /dev/null): F3 still guards */
        fd = fcntl(probe_fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            return false; /* none left at all */
        close(fd);
    }
    return (uint64_t)fd < fd_ceiling;
}

struct fdlimit_listener {
    server *s;
    struct evconnlistener *lis;
    struct event *timer;
    const char *what;
    unsigned long pauses, logged;
    time_t last_log;
    bool paused;
};

static void pause_for(fdlimit_listener *p, const char *why)
{
    if (p->paused)
        return;
    evconnlistener_disable(p->lis);
    p->paused = true;
    struct timeval tv = {0, PAUSE_MS * 1000};
    evtimer_add(p->timer, &tv);
    p->pauses++;
    time_t now = time(NULL);
    if (p->logged == 0 || now - p->last_log >= LOG_EVERY_S) {
        server_log(p->s, EVS_LOG_WARN, "not accepting %s connections for now: %s (%lu pauses so "
                   "far); raise ulimit -n, or lower --max-clients", p->what, why, p->pauses);
        p->logged++;
        p->last_log = now;
    }
}

static void resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fdlimit_listener *p = arg;
    if (!fdlimit_room(-1)) { /* still short: look again later */
        struct timeval tv = {0, PAUSE_MS * 1000};
        evtimer_add(p->timer, &tv);
        return;
    }
    p->paused = false;
    evconnlistener_enable(p->lis);
}

/* libevent hands the error callback the accept callback's argument (the server, or evhttp's
 * own state), so the guard is found by its listener: a server has two. */
#define GUARDS 4
static fdlimit_listener *guards[GUARDS];

static void on_error(struct evconnlistener *lis, void *arg)
{
    (void)arg;
    int e = EVUTIL_SOCKET_ERROR();
    for (int i = 0; i < GUARDS; i++)
        if (guards[i] && guards[i]->lis == lis) {
            char why[160];
            snprintf(why, sizeof why, "accept failed: %s", evutil_socket_error_to_string(e));
            pause_for(guards[i], why); /* F3: whatever the error, never spin on it */
        }
}

void fdlimit_http_accepting(fdlimit_listener *p)
{
    if (p && !fdlimit_room(-1))
        pause_for(p, "the descriptors left are the store's reserve");
}

fdlimit_listener *fdlimit_guard(server *s, struct evconnlistener *lis, const char *what)
{
    int slot = 0;
    while (slot < GUARDS && guards[slot])
        slot++;
    fdlimit_listener *p = slot < GUARDS ? calloc(1, sizeof *p) : NULL;
    if (!p)
        return NULL;
    p->timer = evtimer_new(evconnlistener_get_base(lis), resume, p);
    if (!p->timer) {
        free(p);
        return NULL;
    }
    p->s = s;
    p->lis = lis;
    p->what = what;
    guards[slot] = p;
    evconnlistener_set_error_cb(lis, on_error);
    return p;
}

void fdlimit_unguard(fdlimit_listener *p)
{
    if (!p)
        return;
    for (int i = 0; i < GUARDS; i++)
        if (guards[i] == p)
            guards[i] = NULL;
    evconnlistener_set_error_cb(p->lis, NULL);
    event_free(p->timer);
    free(p);
}
