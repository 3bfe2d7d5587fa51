/*
 * glob.h — Redis's glob-style patterns (KEYS, SCAN MATCH, CONFIG GET), binary safe.
 */
#ifndef EVS_GLOB_H
#define EVS_GLOB_H

#include <stdbool.h>
#include <stddef.h>

/* Does the name s[0, slen) match the pattern p[0, plen), as Redis 7.0's stringmatchlen
 * decides (glob.c lists the rules)? nocase folds ASCII letters (CONFIG GET). Reads nothing
 * outside the two ranges; either may hold any bytes, NUL included. */
bool glob_match(const void *p, size_t plen, const void *s, size_t slen, bool nocase);

/* The pattern is a lone "*": Redis's KEYS and SCAN then take every name, the empty one too,
 * without matching (glob_match("*", "") is false, as stringmatchlen's is). */
bool glob_is_all(const void *p, size_t plen);

#endif
