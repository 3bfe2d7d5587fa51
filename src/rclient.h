/*
 * rclient.h — a blocking RESP client connection for the CLI tools (publish, read), on the
 * project's own reply parser (net/resp.c).
 */
#ifndef EVS_RCLIENT_H
#define EVS_RCLIENT_H

#include <stddef.h>

#include "resp.h"

typedef struct rclient {
    int fd;
    uint8_t *buf;
    size_t len, cap, off;
} rclient;

/* Connect to "host:port" (AUTH with password when not NULL). 0 or -1 with err filled. */
int rclient_connect(rclient *c, const char *hostport, const char *password, char *err,
                    size_t errcap);
/* Send a command (multibulk, one send) without waiting for its reply. */
int rclient_send(rclient *c, size_t argc, const char *const *argv, const size_t *lens);
/* Read one reply (blocking). 0 with *v (free with resp_value_free; strings valid until the
 * next rclient_read), or -1 with err filled. */
int rclient_read(rclient *c, resp_value **v, char *err, size_t errcap);
void rclient_close(rclient *c);

#endif
