/*
 * fdlimit.h — the server's file descriptors (fdlimit.c): the open-files limit fitted to
 * --max-clients at start, and listeners that pause instead of spinning when accept() finds
 * none left.
 */
#ifndef EVS_FDLIMIT_H
#define EVS_FDLIMIT_H

#include <stdbool.h>

#include "server.h"

struct evconnlistener;

/* F1: raise the soft open-files limit to the hard one (before the store opens); then, the
 * store open and its segments counted, lower --max-clients, and log it, where the limit
 * cannot hold it beside --max-tails and the store's reserve. */
void fdlimit_raise(void);
void fdlimit_fit(server *s);

/* F2: may a client have descriptor fd (or, fd < 0, the next one) and leave the store its
 * reserve? */
bool fdlimit_room(int fd);

/* F3: make lis pause on accept errors (what: "RESP", "HTTP" for the log). NULL when it cannot
 * (no memory): the listener then keeps libevent's behaviour. Unguard before freeing lis. */
typedef struct fdlimit_listener fdlimit_listener;
fdlimit_listener *fdlimit_guard(server *s, struct evconnlistener *lis, const char *what);
void fdlimit_unguard(fdlimit_listener *p);
/* F2: an HTTP connection was just accepted (evhttp's own accept): pause p's listener if the
 * clients are into the reserve. */
void fdlimit_http_accepting(fdlimit_listener *p);

#endif
