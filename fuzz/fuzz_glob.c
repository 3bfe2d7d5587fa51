/*
 * fuzz_glob.c — Redis's glob (net/glob.c) over hostile patterns and names: the input is the
 * pattern's length (2 bytes, big-endian; cut to what there is), the pattern, then the name. Checks what must hold
 * whatever the bytes: nothing read outside the two (ASan), the work bounded (libFuzzer's
 * timeout), and these identities of the rules: a pattern of plain bytes matches exactly
 * itself; "*" + p matches every name that p matches (below the nesting bound); outside a
 * set, case folding never loses a match (inside one it may, as in Redis: "[A-z]" holds "_",
 * folded to "[a-z]" it does not).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "glob.h"

static size_t count(const uint8_t *p, size_t n, const char *bytes)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += strchr(bytes, p[i]) && p[i];
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t plen = (size_t)data[0] << 8 | data[1];
    data += 2, size -= 2;
    if (plen > size)
        plen = size;
    const uint8_t *name = data + plen;
    size_t nlen = size - plen;
    /* exact copies, so ASan sees reads one byte past either */
    uint8_t *p = malloc(plen + 1), *s = malloc(nlen ? nlen : 1);
    if (!p || !s)
        abort();
    memcpy(p + 1, data, plen);
    memcpy(s, name, nlen);
    bool m = glob_match(p + 1, plen, s, nlen, false);
    if (!count(p + 1, plen, "*?[\\") && m != (plen == nlen && !memcmp(p + 1, s, nlen)))
        abort();
    if (m && !count(p + 1, plen, "[") && !glob_match(p + 1, plen, s, nlen, true))
        abort();
    p[0] = '*';
    if (m && nlen && count(p + 1, plen, "*") < 900 && !glob_match(p, plen + 1, s, nlen, false))
        abort();
    free(p);
    free(s);
    return 0;
}
