/*
 * units.c — sizes ("64m") and durations ("7d") as flags, commands and JSON spell them.
 */
#include <ctype.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

int evs_parse_dec(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0)
        return EVS_EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return EVS_EINVAL;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return EVS_EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* A decimal number then a unit from `units` (case-insensitive); NULL unit: none given. */
struct unit {
    const char *name;
    uint64_t mul;
};

static int parse_with(const char *s, size_t len, const struct unit *units, uint64_t none_mul,
                      uint64_t *out)
{
    size_t i = 0;
    uint64_t v;
    while (i < len && isdigit((unsigned char)s[i]))
        i++;
    if (evs_parse_dec(s, i, &v))
        return EVS_EINVAL;
    uint64_t mul = none_mul;
    if (i < len) {
        size_t ul = len - i;
        mul = 0;
        for (const struct unit *u = units; u->name; u++)
            if (strlen(u->name) == ul && !strncasecmp(s + i, u->name, ul))
                mul = u->mul;
        if (!mul)
            return EVS_EINVAL;
    }
    if (v > UINT64_MAX / mul)
        return EVS_EINVAL;
    *out = v * mul;
    return 0;
}

int evs_parse_size(const char *s, size_t len, uint64_t *out)
{
    static const struct unit units[] = {
        {"b", 1}, {"k", 1024}, {"kb", 1024}, {"kib", 1024}, {"m", 1u << 20}, {"mb", 1u << 20},
        {"mib", 1u << 20}, {"g", 1u << 30}, {"gb", 1u << 30}, {"gib", 1u << 30},
        {"t", 1ull << 40}, {"tb", 1ull << 40}, {"tib", 1ull << 40}, {NULL, 0}};
    return parse_with(s, len, units, 1, out);
}

int evs_parse_duration_ms(const char *s, size_t len, uint64_t *out)
{
    static const struct unit units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000ull},
        {"w", 7 * 86400000ull}, {NULL, 0}};
    return parse_with(s, len, units, 1000, out); /* a bare number is seconds */
}
