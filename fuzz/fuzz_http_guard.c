/*
 * fuzz_http_guard.c — the HTTP API's browser guards (net/http_cors.c) over hostile Origin and
 * Host headers and flag lists: the input is a list and a header value, split at the first NUL
 * byte. Checks what must hold whatever the bytes: nothing read outside them (ASan), the list
 * checkers and matchers never disagree with these identities: "*" allows every origin and
 * every host; a list that names a value allows it; localhost with any port, and any value
 * after "127.0.0.1:", are loopback names; a refused list names a bad item inside it.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t llen = nul ? (size_t)(nul - data) : size;
    char *list = strndup((const char *)data, llen);
    char *value = nul ? strndup((const char *)nul + 1, size - llen - 1) : strdup("");
    if (!list || !value)
        abort();
    const char *bad;
    size_t bad_len;
    /* list checkers: a refused item lies inside the list */
    for (int k = 0; k < 2; k++) {
        bool ok = k ? http_hosts_list_ok(list, &bad, &bad_len)
                    : http_cors_list_ok(list, &bad, &bad_len);
        if (!ok && bad && (bad < list || bad + bad_len > list + llen))
            abort();
    }
    bool star;
    (void)http_origin_allowed(list, value, &star);
    (void)http_host_allowed(list, value);
    (void)http_host_allowed(NULL, value);
    if (!http_origin_allowed("*", value, &star) || !star)
        abort();
    if (!http_host_allowed("*", value))
        abort();
    if (*value && !strchr(value, ',') && value[0] != ' ' && value[strlen(value) - 1] != ' ' &&
        !http_origin_allowed(value, value, &star))
        abort(); /* a list of the one origin allows it */
    char host[300];
    snprintf(host, sizeof host, "localhost:%.100s", value);
    if (!http_host_allowed(NULL, host))
        abort();
    snprintf(host, sizeof host, "127.0.0.1:%.100s", value);
    if (!http_host_allowed(NULL, host))
        abort();
    free(list);
    free(value);
    return 0;
}
