/* hostport.c — see hostport.h. */
#include "hostport.h"

#include <string.h>

bool hostport_split(const char *s, char *host, size_t hostcap, int *port, const char **why)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= hostcap) {
        *why = "not HOST:PORT";
        return false;
    }
    long p = 0;
    const char *d = colon + 1;
    for (; *d >= '0' && *d <= '9' && p <= 65535; d++)
        p = p * 10 + (*d - '0');
    if (d == colon + 1 || *d || p < 1 || p > 65535) {
        *why = "port not 1-65535";
        return false;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    *port = (int)p;
    return true;
}
