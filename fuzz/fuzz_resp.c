/*
 * fuzz_resp.c — the RESP request parser over hostile bytes, as a connection feeds it: parse
 * commands one after another, growing argv when asked, until partial or error. Also checks
 * that every argument slice lies inside the input (or the inline buffer).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t inl[RESP_MAX_INLINE];
    resp_arg small[4];
    resp_arg *argv = small;
    size_t cap = 4, off = 0;
    while (off < size) {
        resp_cmd cmd = {argv, 0, cap, "", inl, sizeof inl};
        size_t used;
        int rc = resp_parse(data + off, size - off, 1 << 20, &cmd, &used);
        if (rc == RESP_PARTIAL && cmd.argc > cap) {
            if (cmd.argc > 4096)
                break; /* bound the fuzzer's own memory */
            resp_arg *a = malloc(cmd.argc * sizeof *a);
            if (!a)
                break;
            if (argv != small)
                free(argv);
            argv = a;
            cap = cmd.argc;
            continue;
        }
        if (rc == RESP_CMD) {
            for (size_t i = 0; i < cmd.argc; i++) {
                const uint8_t *p = argv[i].ptr;
                int in_data = p >= data + off && p + argv[i].len <= data + size;
                int in_inl = p >= inl && p + argv[i].len <= inl + sizeof inl;
                if (!in_data && !in_inl)
                    abort();
            }
        }
        if (rc == RESP_PARTIAL || rc == RESP_ERROR || used == 0)
            break;
        off += used;
    }
    if (argv != small)
        free(argv);
    return 0;
}
