/*
 * rclient.h — a blocking RESP client connection for the CLI tools (publish, read), on the
 * project's own reply parser (net/resp.c).
 */
#ifndef EVS_RCLIENT_H
#define EVS_RCLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "resp.h"

typedef struct rclient {
    int fd;
    uint8_t *buf;
    size_t len, cap, off;
    /* A stop flag (a signal handler sets it; NULL: none): a connect or a read waiting on the
     * server gives up within RCLIENT_TICK_MS of it being set, "interrupted". Set at connect. */
    const volatile int *cancel;
    /* A read gives up when the server sends nothing for this long, "the server sent nothing
     * for N s" (0: waits as long as the connection lives). Set after connect; the connect
     * itself waits as long as the kernel lets it. */
    int idle_ms;
} rclient;

#define RCLIENT_TICK_MS 100

/* Is the stop flag `cancel` (rclient.cancel's kind; NULL: none) set? */
static inline bool rclient_stop_asked(const volatile int *cancel)
{
    return cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED);
}

/* Connect to "host:port" (AUTH with password when not NULL), cancel as in rclient.cancel.
 * 0 or -1 with err filled. */
int rclient_connect(rclient *c, const char *hostport, const char *password,
                    const volatile int *cancel, char *err, size_t errcap);
/* Send a command (multibulk, one send) without waiting for its reply. */
int rclient_send(rclient *c, size_t argc, const char *const *argv, const size_t *lens);
/* Read one reply (blocking: up to idle_ms of silence, until cancel). 0 with *v (free with
 * resp_value_free; strings valid until the next rclient_read), or -1 with err filled. */
int rclient_read(rclient *c, resp_value **v, char *err, size_t errcap);
/* Wait until the server has bytes for c->fd (for a caller that reads the socket itself), as
 * rclient_read waits: 0, or -1 with err filled (cancelled, or idle_ms of silence). */
int rclient_wait_readable(rclient *c, char *err, size_t errcap);
void rclient_close(rclient *c);

#endif
