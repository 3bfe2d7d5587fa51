/*
 * manifest.h — a backup's MANIFEST: what the backup holds and how to check it (docs/backup.md).
 * Pure encode/parse; the parser takes outside bytes and is fuzzed (fuzz/fuzz_manifest.c).
 */
#ifndef EVS_MANIFEST_H
#define EVS_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "evstore.h"

#define MF_NAME_MAX 48

typedef struct mf_file {
    char name[MF_NAME_MAX];  /* path in the store: STORE, EPOCHS, index/data.mdb, log/<20>.seg */
    uint64_t size;           /* bytes in the store                                            */
    uint64_t alloc;          /* an unsealed segment's full file size (zeros after `size`)     */
    uint32_t crc;            /* crc32 of the `size` bytes                                     */
    bool segment, sealed;
    uint32_t seal_crc;       /* sealed segments: the seal record's CRC (0: not shareable)     */
    bool compressed;         /* stored as <name>.z, one zlib stream                           */
    uint64_t stored_size;    /* bytes of the file in the backup                               */
    uint32_t stored_crc;     /* their crc32                                                   */
    char from[33];           /* "": in this backup; else the ID of the ancestor that holds it */
} mf_file;

typedef struct mf_stream {
    uint8_t *name;
    size_t len;
    evs_id last;
    uint64_t length, added;
} mf_stream;

typedef struct manifest {
    char id[33], store_id[33], parent_id[33]; /* parent_id "": a full backup              */
    char *parent_path;       /* where the parent was when this backup was made (absolute) */
    char *source;            /* what was backed up: "HOST:PORT" or a data folder           */
    uint64_t created_ms, cut, log_start;
    evs_epoch *epochs;
    size_t nepochs;
    mf_stream *streams;
    size_t nstreams;
    mf_file *files;
    size_t nfiles;
} manifest;

/* The stored file name of f inside its backup folder ("log/x.seg" or "log/x.seg.z"). */
void mf_stored_name(const mf_file *f, char out[MF_NAME_MAX + 4]);
/* Is `name` one a store may hold (so never a path outside the folder)? */
bool mf_name_ok(const char *name);

/* Text of the manifest, its last line a CRC of everything before it. NULL: out of memory. */
char *mf_encode(const manifest *m, size_t *len);
/* Parse and check (format, CRC, every field); 0, or -1 with `why` (naming the line). */
int mf_parse(const char *buf, size_t len, manifest *m, char *why, size_t whycap);
void mf_release(manifest *m);

#endif
