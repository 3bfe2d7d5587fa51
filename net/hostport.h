/*
 * hostport.h — the one reading of "HOST:PORT" (--replica-of, --server, REPLICAOF's target):
 * the host is everything before the last ':' (an IPv6 address keeps its own colons), not
 * empty, shorter than the caller's buffer; the port is 1 to 65535 in decimal digits only
 * ("7000abc" once dialled 7000, "99999" port 34463, and a service name such as "http" port 80).
 */
#ifndef EVS_HOSTPORT_H
#define EVS_HOSTPORT_H

#include <stdbool.h>
#include <stddef.h>

/* Split s into host (NUL-terminated, at most hostcap - 1 bytes) and *port. False, with *why
 * naming what is wrong ("not HOST:PORT" or "port not 1-65535"), if s is not HOST:PORT. */
bool hostport_split(const char *s, char *host, size_t hostcap, int *port, const char **why);

#endif
