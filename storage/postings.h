/*
 * postings.h — the filter index's write side: while records are applied, entries with a
 * `source` or `type` field are gathered per (stream, field, value hash); at each index commit
 * each group's `filt` key is put with the group's entries so far; a group stays open, its key
 * put again at later commits, until its value is full (postings.c P1).
 *
 *   key   = no(4) field(1) hash(8) ms(8) seq(8)          the group's first entry
 *   value = ms(8) seq(8) pos(8)                          the first entry, big-endian
 *           then per further entry, LEB128 varints:
 *             dms                                        ms - previous ms
 *             seq if dms > 0, else seq - previous seq - 1
 *             pos - previous pos
 *
 * IDs and positions only grow within a group, so the deltas are small: about 5 bytes an
 * entry. A group is closed before its value passes POST_MAX_BYTES so that it stays inside an
 * LMDB leaf page (a larger value takes overflow pages of its own, mostly empty).
 */
#ifndef EVS_POSTINGS_H
#define EVS_POSTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "evstore.h"

#define POST_MAX_BYTES 1200
#define POST_OPEN_MAX 4096   /* open groups kept across commits (about 8 MiB of buffers at most) */
#define POST_IDLE_COMMITS 16 /* ... past that, those idle for this many commits are closed       */
#define POST_FIRST 24

struct idx_batch;
typedef struct postings postings;

postings *post_new(void);
void post_free(postings *p);
/* Add one entry; may emit a full group into b. -ENOMEM on failure. */
int post_add(postings *p, struct idx_batch *b, uint32_t no, uint8_t field, uint64_t hash,
             evs_id id, uint64_t pos);
/* Put the key of every open group with new entries into b (P1: groups stay open until full;
 * past POST_OPEN_MAX open groups the idle ones are closed after this put). */
int post_flush(postings *p, struct idx_batch *b);
/* Retention is about to delete the LMDB key `key` (IDX_FILTKEY bytes): its group, if still
 * open, is closed (never put again, P4) and true returned; false if the open group now holds
 * an entry at or past `first`, its stream's first entry (the key must stay). */
bool post_close_key(postings *p, const uint8_t *key, evs_id first);
/* A stream was dropped: its groups are never put again (P3). */
void post_forget_stream(postings *p, uint32_t no);
/* Forget pending groups (a failed batch). */
void post_clear(postings *p);

/* Reading a value in order: post_iter_init, then post_next until it returns false. A
 * malformed value ends the walk early and sets bad. */
typedef struct post_iter {
    const uint8_t *p, *end;
    evs_id id;
    uint64_t pos;
    bool started, bad;
} post_iter;
void post_iter_init(post_iter *it, const void *v, size_t vl);
bool post_next(post_iter *it, evs_id *id, uint64_t *pos);

#endif
