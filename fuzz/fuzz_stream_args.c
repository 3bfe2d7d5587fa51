/*
 * fuzz_stream_args.c — the readers of stream-command arguments over hostile bytes: XADD's and
 * XTRIM's options (xadd_parse, stream_opts_parse: Redis's parser, any order) and stream IDs
 * as Redis reads them (parse_id: string2ull per part). The input's lines are the arguments
 * after the key. Checks that every field handed out lies inside the input, and that an ID
 * in plain "<ms>-<seq>" digits reads as the strict parser reads it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

#define MAXARGS 64

static bool inside(const void *p, size_t n, const uint8_t *data, size_t size)
{
    const uint8_t *b = p;
    return b >= data && b + n <= data + size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    resp_arg argv[MAXARGS + 2] = {{(const uint8_t *)"XADD", 4}, {(const uint8_t *)"k", 1}};
    size_t argc = 2, start = 0;
    for (size_t i = 0; i <= size && argc < MAXARGS + 2; i++) {
        if (i == size || data[i] == '\n') {
            argv[argc++] = (resp_arg){data + start, i - start};
            start = i + 1;
        }
    }
    xadd_args xa;
    if (!xadd_parse(argv, argc, &xa)) {
        if (!xa.a.nfields)
            abort();
        for (size_t i = 0; i < xa.a.nfields; i++)
            if (!inside(xa.a.fields[i].name.ptr, xa.a.fields[i].name.len, data, size) ||
                !inside(xa.a.fields[i].value.ptr, xa.a.fields[i].value.len, data, size))
                abort();
    }
    xadd_args_release(&xa);
    argv[0] = (resp_arg){(const uint8_t *)"XTRIM", 5};
    evs_trim t;
    bool has_trim;
    size_t at;
    if (!stream_opts_parse(argv, argc, NULL, &t, &has_trim, &at) && !has_trim)
        abort(); /* XTRIM without a strategy is refused */
    for (size_t i = 2; i < argc; i++) {
        evs_id a, b;
        bool ok = parse_id(&argv[i], 0, &a);
        if (evs_id_parse(argv[i].ptr, argv[i].len, 0, &b) == 0 &&
            (!ok || evs_id_cmp(a, b) != 0) && (argv[i].len == 1 || argv[i].ptr[0] != '0'))
            abort(); /* plain digits, no leading zero: both readers agree */
    }
    return 0;
}
