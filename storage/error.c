/*
 * error.c — one table behind evs_strerror(), and the helper that fills an evs_error.
 */
#include "evstore.h"
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *evs_strerror(int code)
{
    switch (code) {
    case 0: return "success";
    case EVS_ECORRUPT: return "corrupt record on disk";
    case EVS_ENOTFOUND: return "no such stream";
    case EVS_EIDORDER: return "the ID specified is equal or smaller than the target stream top item";
    case EVS_EINVAL: return "invalid argument";
    case EVS_EFAILED: return "store refused writes after an earlier write or fsync error";
    case EVS_ELOCKED: return "data folder is in use by another process";
    case EVS_ETOOBIG: return "over a size limit";
    case EVS_ECLOSED: return "store is closing";
    case EVS_EFORMAT: return "unsupported data format version";
    case EVS_EIDZERO: return "the ID specified must be greater than 0-0";
    case EVS_EIDEXHAUSTED: return "the stream has exhausted the last possible ID";
    case EVS_EREADONLY: return "store is open read-only";
    case EVS_ECHANGED: return "a watched stream changed";
    case EVS_ENOGROUP: return "no such consumer group";
    case EVS_EEXIST: return "already exists";
    case EVS_ENOSPACE: return "no space left for the store (nothing written; retry when space is freed)";
    default:
        if (code < 0 && code > -4096)
            return strerror(-code);
        return "unknown error";
    }
}

int evs_err_set(evs_error *err, int code, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int evs_err_copy(evs_error *dst, const evs_error *src)
{
    if (dst && src && dst != src)
        *dst = *src;
    return src ? src->code : 0;
}
