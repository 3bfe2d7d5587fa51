/*
 * glob.c — Redis's glob-style patterns, binary safe.
 *
 * The contract is Redis 7.0's stringmatchlen, quirks included, so that a pattern selects the
 * same names here as there (tests/test_redis_diff.py checks KEYS and SCAN MATCH against a real
 * redis-server over awkward names and random patterns):
 *   *        any run of bytes; runs of stars are one star
 *   ?        any one byte
 *   [set]    one byte of the set; [^set] one byte not in it. In a set: "\x" is x (compared
 *            exactly, even under nocase), "a-z" a range (written backwards it is the same
 *            range; its ends and the byte compare as signed chars, as Redis's build does), any
 *            other byte itself. "]" closes the set (so "[]" matches nothing and "[^]" any
 *            byte); a set left open runs to the end of the pattern.
 *   \x       x itself; a backslash that ends the pattern is itself
 *   other    itself (ASCII letters folded under nocase)
 * The empty name matches only a pattern that is empty; not even "*" (callers that want a lone
 * "*" to take every name test glob_is_all first, as Redis's KEYS and SCAN do).
 *
 * Invariants: never reads outside p[0, plen) or s[0, slen); a pattern nesting more than
 * MAX_DEPTH stars matches nothing (Redis's guard against abusive patterns, which also bounds
 * our stack); the work stays polynomial: once the rest of the pattern after a star matched
 * from no position of the rest of the name, no earlier star tries a longer run (it could only
 * leave less of the name to that same rest), so the answer "no match" goes straight up.
 */
#include "glob.h"

#include <stdint.h>

#define MAX_DEPTH 1000

enum { NO = 0, YES = 1, NEVER = -1 /* no match, and no longer run of an earlier star helps */ };

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static bool same(uint8_t a, uint8_t b, bool nocase)
{
    return nocase ? lower(a) == lower(b) : a == b;
}

/* One byte c against the set that starts at *pp (past "[" and "^"); leaves *pp, *plp on the
 * set's last byte ("]"), or one before the end of an open set, as the caller steps past it. */
static bool in_set(const uint8_t **pp, size_t *plp, uint8_t c, bool nocase)
{
    const uint8_t *p = *pp;
    size_t pl = *plp;
    bool hit = false;
    for (;;) {
        if (pl >= 2 && p[0] == '\\') {
            p++, pl--;
            hit |= p[0] == c;
        } else if (pl && p[0] == ']') {
            break;
        } else if (pl == 0) {
            p--, pl++; /* an open set: the caller's step lands on the end */
            break;
        } else if (pl >= 3 && p[1] == '-') {
            int from = (signed char)p[0], to = (signed char)p[2], b = (signed char)c;
            if (from > to) {
                int t = from;
                from = to;
                to = t;
            }
            if (nocase) {
                from = lower(from);
                to = lower(to);
                b = lower(b);
            }
            p += 2, pl -= 2;
            hit |= b >= from && b <= to;
        } else {
            hit |= same(p[0], c, nocase);
        }
        p++, pl--;
    }
    *pp = p;
    *plp = pl;
    return hit;
}

static int match(const uint8_t *p, size_t pl, const uint8_t *s, size_t sl, bool nocase, int depth)
{
    if (depth > MAX_DEPTH)
        return NO;
    while (pl && sl) {
        switch (p[0]) {
        case '*':
            while (pl >= 2 && p[1] == '*')
                p++, pl--;
            if (pl == 1)
                return YES;
            for (; sl; s++, sl--) {
                int r = match(p + 1, pl - 1, s, sl, nocase, depth + 1);
                if (r != NO)
                    return r;
            }
            return NEVER;
        case '?':
            s++, sl--;
            break;
        case '[': {
            p++, pl--;
            bool negate = pl && p[0] == '^';
            if (negate)
                p++, pl--;
            if (in_set(&p, &pl, s[0], nocase) == negate)
                return NO;
            s++, sl--;
            break;
        }
        case '\\':
            if (pl >= 2)
                p++, pl--;
            /* fall through */
        default:
            if (!same(p[0], s[0], nocase))
                return NO;
            s++, sl--;
            break;
        }
        p++, pl--;
        if (sl == 0) {
            while (pl && p[0] == '*')
                p++, pl--;
            break;
        }
    }
    return pl == 0 && sl == 0 ? YES : NO;
}

bool glob_match(const void *p, size_t plen, const void *s, size_t slen, bool nocase)
{
    return match(p, plen, s, slen, nocase, 0) == YES;
}

bool glob_is_all(const void *p, size_t plen)
{
    return plen == 1 && *(const uint8_t *)p == '*';
}
