/*
 * fuzz_manifest.c — hostile bytes as a backup's MANIFEST, an EPOCHS file, a SWAP journal and
 * an index.ckpt: all are read from outside (a backup folder may come from anywhere; a data
 * folder's files from a disk). Whatever parses must name only files a store may hold, and
 * encode back to bytes that parse to the same manifest (a journal: to the very bytes; a
 * checkpoint: to the same fields).
 */
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "internal.h"
#include "manifest.h"

static void parse_one(const char *data, size_t size)
{
    manifest m;
    char why[256];
    if (mf_parse(data, size, &m, why, sizeof why) == 0) {
        for (size_t i = 0; i < m.nfiles; i++)
            if (!mf_name_ok(m.files[i].name))
                abort();
        size_t len;
        char *again = mf_encode(&m, &len);
        manifest m2;
        if (!again || mf_parse(again, len, &m2, why, sizeof why) != 0 || m2.nfiles != m.nfiles ||
            m2.nstreams != m.nstreams || m2.nepochs != m.nepochs || m2.cut != m.cut)
            abort();
        mf_release(&m2);
        free(again);
        mf_release(&m);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parse_one((const char *)data, size);
    /* the same bytes with a correct "end" line, so the fuzzer reaches past the CRC check */
    char *fixed = malloc(size + 16);
    if (fixed) {
        memcpy(fixed, data, size);
        uint32_t crc = (uint32_t)crc32(0L, (const Bytef *)fixed, (uInt)size);
        int n = snprintf(fixed + size, 16, "end %08x\n", crc);
        parse_one(fixed, size + (size_t)n);
        free(fixed);
    }
    char why[256];
    evs_epoch *v;
    size_t n;
    if (epochs_parse((const char *)data, size, &v, &n, why, sizeof why) == 0)
        free(v);
    /* index.ckpt: what parses formats back to text that parses to the same fields */
    char boot[64], text[160];
    uint64_t txn, txn2;
    bool open, open2;
    if (ckpt_parse((const char *)data, size, boot, &txn, &open) == 0) {
        size_t len = ckpt_format(text, sizeof text, boot, txn, open);
        char boot2[64];
        if (ckpt_parse(text, len, boot2, &txn2, &open2) || strcmp(boot, boot2) || txn != txn2 ||
            open != open2 || strchr(boot, ' ') || strchr(boot, '\n') || !boot[0])
            abort();
    }
    /* a swap journal: what parses is exactly what the writer writes for it (swap.c) */
    static swap_plan p;
    if (swap_journal_parse((const char *)data, size, &p) == 0) {
        static char again[SWAP_MAX_ENTRIES * (SWAP_NAME_MAX + 1) + 1024];
        size_t len = (size_t)snprintf(again, sizeof again, "evstore-swap 1\nnew %s\nold %s\n",
                                      p.fresh, p.aside);
        for (size_t i = 0; i < p.n; i++) {
            if (!p.names[i][0] || strchr(p.names[i], '/') || !strcmp(p.names[i], "LOCK"))
                abort();
            len += (size_t)snprintf(again + len, sizeof again - len, "%s\n", p.names[i]);
        }
        if (strncmp(p.fresh, ".new-", 5) || strncmp(p.aside, ".replaced-", 10) ||
            strchr(p.fresh, '/') || strchr(p.aside, '/') || len != size ||
            memcmp(again, data, size))
            abort();
    }
    return 0;
}
